#!/usr/bin/env bash
# The GPU build on a user's GPU machine (issue 13): not for the lent GPU box, whose call carries 64 MiB (the GPU natives
# alone are 458 MB) and whose PyTorch does not match the presets' libtorch 2.10; verify.sh is that box's check.
#
#   benchmarks/gpu/gpu-train.sh [--check-libs] [--no-tests] [--no-run] [--no-bench]
#
#   --check-libs  only list the system libraries the GPU build needs and where the loader finds them (exit 1 if any is missing)
#   steps, in order: the library check; `ALIGNDISTIL_GPU=1 ./aligndistil test` of the gpu-tagged training tests
#   (GpuTrainingTest: 20-step SFT/DPO/distill curves CUDA vs CPU and bf16 vs f32, no host copy of logits) and the
#   device tests; a short training run (the tiny demo, every stage on --device cuda, bf16 teachers and student);
#   the step benchmark (StepBench, a Qwen2.5-0.5B-shaped random model, one AlignDistil step split into phases).
# Needs: JDK 25, Maven, a CUDA 13 driver (580+), and on the loader path (LD_LIBRARY_PATH or ldconfig) cuBLAS 13,
# cuSPARSE 12, cuSOLVER 12, cuDNN 9 (for CUDA 13) and NCCL 2; cudart, cupti, curand, cufft, nvrtc, nvJitLink and cufile
# come with the build (cuda-redist). The first build downloads about 850 MB (GPU natives + cuda-redist) into ~/.m2.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
CHECK_ONLY=0 TESTS=1 RUN=1 BENCH=1
for a in "$@"; do
  case "$a" in
    --check-libs) CHECK_ONLY=1 ;; --no-tests) TESTS=0 ;; --no-run) RUN=0 ;; --no-bench) BENCH=0 ;;
    *) echo "usage: benchmarks/gpu/gpu-train.sh [--check-libs] [--no-tests] [--no-run] [--no-bench]" >&2; exit 2 ;;
  esac
done

# The sonames the presets' GPU build loads that are not in its jars (NEEDED of libtorch_cuda.so / libtorch_cuda_linalg.so).
SYSTEM_LIBS=(libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcusparse.so.12 libcusolver.so.12 libcudnn.so.9 libnccl.so.2)
check_libs() {
  local missing=0 lib hit d
  for lib in "${SYSTEM_LIBS[@]}"; do
    hit=""
    IFS=: read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
    for d in "${dirs[@]}"; do [[ -n "$d" && -e "$d/$lib" ]] && { hit="$d/$lib"; break; }; done
    [[ -z "$hit" ]] && hit="$(ldconfig -p 2>/dev/null | awk -v l="$lib" '$1 == l { print $NF; exit }')"
    if [[ -n "$hit" ]]; then printf '  found    %-20s %s\n' "$lib" "$hit"; else printf '  MISSING  %-20s (not in LD_LIBRARY_PATH nor ldconfig -p)\n' "$lib"; missing=1; fi
  done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/  GPU      /'
  return $missing
}

echo "gpu-train: system libraries the GPU build needs:"
check_libs; libs_rc=$?
[[ $CHECK_ONLY == 1 ]] && exit $libs_rc
(( libs_rc == 0 )) || echo "gpu-train: some libraries are missing: --device cuda will say which one libtorch_cuda.so lacks" >&2
export ALIGNDISTIL_GPU=1
rc=0
if [[ $TESTS == 1 ]]; then
  ./aligndistil test -Dtest='GpuTrainingTest,DeviceOptionTest,DevicesTest,CheckpointingTest' -Dsurefire.excludedGroups=none -Dsurefire.failIfNoSpecifiedTests=false || rc=1
fi
if [[ $RUN == 1 ]]; then
  out=target-gpu/gpu-train-demo
  rm -rf "$out"
  ./aligndistil demo --tiny --device cuda --out "$out" || rc=1
  [[ -f "$out/models/aligndistil-off/metrics.jsonl" ]] && head -n 2 "$out/models/aligndistil-off/metrics.jsonl"
fi
if [[ $BENCH == 1 ]]; then
  java="${JAVA_HOME:+$JAVA_HOME/bin/}java"
  "$java" --enable-native-access=ALL-UNNAMED -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp "target-gpu/aligndistil.jar:target-gpu/lib/*" \
    ai.aligndistil.tools.StepBench --preset qwen2.5-0.5b --device cuda --dtype bf16 --tokens 2048 --steps 5 \
    --out "benchmarks/results/step-bench-$(date +%F)-cuda-qwen2.5-0.5b.json" || rc=1
fi
exit $rc
