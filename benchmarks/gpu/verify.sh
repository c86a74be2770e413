#!/usr/bin/env bash
# The GPU check, in one command on a GPU machine without a JDK or network (the project's H100/H200 boxes), with the
# bundle made here by benchmarks/gpu/prepare.sh (carry target/gpu-bundle). Budget: under 8 minutes.
#   1. the native CUDA self-test (double-precision host reference, odd shapes, every variant and dtype, error cases),
#      with the multi-pass and the Hopper cluster row kernels (--kernel all), then its --bench for both kernels
#   2. the gpu-tagged Java contract tests (CUDA backend against the float64 Java reference, poisoned outputs)
#   3. replay --backend cuda on a batch made by PyTorch, compared with PyTorch's float64 loss and gradient
#   4. compute-sanitizer memcheck on the self-test (slow: it may be cut by its timeout), where the tool works on the box
#   5. timing: the CUDA-event suite (rotated inputs, D2D copy in the same run) and PyTorch eager / torch.compile
# and prints a short table last. Everything it measures goes to ${OUT:-benchmarks/results}.
set -uo pipefail
cd "$(dirname "$0")/../.."
b=target/gpu-bundle
res="${OUT:-benchmarks/results}"
mkdir -p "$res"
[[ -x "$b/jdk/bin/java" ]] || { echo "verify: no bundle at $b (run benchmarks/gpu/prepare.sh on the build machine)"; exit 1; }
J="$b/jdk/bin/java --enable-native-access=ALL-UNNAMED"
declare -A status
step() { local name=$1; shift; echo "=== $name"; local t0=$(date +%s); "$@"; local rc=$?; status[$name]="rc=$rc, $(( $(date +%s) - t0 )) s"; return 0; }

step selftest bash -c "cd $b/native && LD_LIBRARY_PATH=. timeout 300 ./fdl_cuda_selftest 2>&1 | tee $PWD/$res/verify-selftest.txt | tail -15"
step selftest-bench bash -c "cd $b/native && LD_LIBRARY_PATH=. timeout 120 ./fdl_cuda_selftest --bench --kernel all 2>&1 | tee $PWD/$res/verify-selftest-bench.txt | tail -12"
step java-tests bash -c "OUT=$res/verify-junit timeout 300 benchmarks/gpu/run-gpu-tests.sh 2>&1 | tail -20"
tmp=$(mktemp -d)
step torch-replay bash -c "python3 benchmarks/gpu/torch_check.py make $tmp && $J -cp $b/lib/aligndistil.jar ai.aligndistil.cli.Main replay --backend cuda --in $tmp/batch.safetensors --out $tmp/result.safetensors && python3 benchmarks/gpu/torch_check.py compare $tmp | tee $res/verify-torch-compare.txt"
if command -v compute-sanitizer >/dev/null; then
  step memcheck bash -c "cd $b/native && LD_LIBRARY_PATH=. timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 ./fdl_cuda_selftest 2>&1 | tail -8"
else
  echo "=== memcheck: compute-sanitizer not on this box"; status[memcheck]="not available"
fi
step torch-time bash -c "timeout 240 python3 benchmarks/gpu/torch_check.py time $tmp && cp $tmp/torch_time.json $res/verify-torch-time.json"
if [[ -x benchmarks/gpu/bench.sh ]]; then
  step events bash -c "OUT=$res timeout 240 benchmarks/gpu/bench.sh --events-only 2>&1 | tail -25"
fi
echo
echo "verify summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))"
for k in selftest selftest-bench java-tests torch-replay memcheck torch-time events; do
  [[ -n "${status[$k]:-}" ]] && printf '  %-15s %s\n' "$k" "${status[$k]}"
done
