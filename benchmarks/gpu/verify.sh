#!/usr/bin/env bash
# The GPU check of issue 6, in one command of under 5 minutes on an H100/H200 box without a JDK or network.
#
#   benchmarks/gpu/verify.sh [--dry-run] [--budget S] [--no-java] [--with-jmh]
#
#   --dry-run   print the plan (every step, its command and its timeout) and exit; needs no GPU
#   --budget S  whole-run budget in seconds (default 285, or $VERIFY_BUDGET_S); every step's timeout is cut to fit
#   --no-java   skip the Java steps even when the bundle has its JDK (they are skipped anyway without a bundle)
#   --with-jmh  also run the JMH CUDA-event suite (benchmarks/gpu/bench.sh --events-only, ~3 min: over the budget)
#
# Inputs: the repository (sources travel with it) and, when present, target/gpu-bundle from benchmarks/gpu/prepare.sh
# (its native/ holds libaligndistil_cuda.so, fdl_cuda_selftest, fdl_cuda_probe and the fll_* programs, built here;
# its jdk.tar.xz, unpacked on the box by unpack-jdk.sh, runs the Java steps). Without a bundle the CUDA library and the programs are built on the box with nvcc
# (sm_90a; adds about a minute). Steps, each with its own timeout; a failure is recorded and the rest still runs:
#   build    (only what the bundle lacks) libaligndistil_cuda.so, fdl_cuda_selftest, fdl_cuda_probe, fll_cuda_selftest,
#            fll_cuda_bench (native/tests/fll_*.cu, when those sources exist: "not built yet" otherwise)
#   A. correctness, in parallel: for each row kernel K (AD_CUDA_KERNEL=multipass and =cluster when the library has
#      the switch, else the one it has): fdl_cuda_selftest (double host reference, odd shapes, every variant and
#      dtype, error cases), torch_bench.py check (fresh random inputs, float64 PyTorch reference, poisoned outputs,
#      odd shapes), compute-sanitizer memcheck and racecheck on one small launch (fdl_cuda_probe launch 50257 6 bf16);
#      for the fused-linear loss: torch_bench.py check-fll (fresh random inputs, float64 reference, poisoned outputs,
#      odd shapes, several chunks), fll_cuda_selftest and its memcheck; torch_bench.py check-stream (issue 13: the
#      kernel on torch.cuda.current_stream(), data_ptr() pointers, sync debug mode "error", float64 reference, the head
#      gradient through the backward on the same stream); the gpu-tagged Java tests and replay
#      --backend cuda vs PyTorch (bundle only)
#   B. timing, one at a time: D2D copy bandwidth (4 GiB, CUDA events, through our library); the row kernel at
#      V=151936 x 16384 tokens and x 4096 tokens, bf16 in / bf16 gradient, rotated input sets; fll_cuda_bench
#      (defaults: H=1536, V=151936, 16384 tokens, bf16; its JSON lines: ad_fll_cuda ms_median, the same five GEMMs
#      through cuBLAS, memory peak_extra_bytes vs unfused_bytes);
#      ncu on one launch of the row kernel (SpeedOfLight, MemoryWorkloadAnalysis; --clock-control none);
#      torch_bench.py baselines (eager and torch.compile at 4096 tokens, the five GEMMs at 16384 tokens);
#      CudaPresetsProbe (bundle only): do the JavaCPP CUDA presets load here, and drive and time our kernel
#   report   verify_report.py: JSON + Markdown into ${OUT:-benchmarks/results} named verify-<date>-<card>-<commit>,
#            the step logs as verify-logs-<card>.tar.gz, and a table printed LAST, one line per goal of issue 6.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
DRY=0
JAVA=1
JMH=0
BUDGET="${VERIFY_BUDGET_S:-285}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-java) JAVA=0 ;;
    --with-jmh) JMH=1 ;;
    --budget) shift; BUDGET="${1:?--budget needs seconds}" ;;
    *) echo "usage: benchmarks/gpu/verify.sh [--dry-run] [--budget S] [--no-java] [--with-jmh]" >&2; exit 2 ;;
  esac
  shift
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] || { echo "verify: --budget must be whole seconds, got '$BUDGET'" >&2; exit 2; }

T0=$(date +%s)
b=target/gpu-bundle
[[ $DRY == 1 ]] || benchmarks/gpu/unpack-jdk.sh "$b" || echo "verify: the bundle's JDK did not unpack; Java steps are skipped"
res="${OUT:-benchmarks/results}"
W="$(mktemp -d /tmp/verify.XXXXXX)"
mkdir -p "$W/logs" "$W/bin"
[[ $DRY == 1 ]] || mkdir -p "$res"
: >"$W/steps.tsv"
NV_ARCH="${VERIFY_NVCC_ARCH:--gencode=arch=compute_90a,code=sm_90a}"

left() { echo $(( T0 + BUDGET - $(date +%s) )); }
# cap SECONDS: the step's own timeout, cut so that the run ends inside the budget (10 s kept for the report)
cap() { local c=$1 l; l=$(( $(left) - 10 )); (( l < c )) && c=$l; (( c < 1 )) && c=1; echo "$c"; }

# run_step NAME TIMEOUT CMD: runs CMD under `timeout`, its output in logs/NAME.log; records rc and seconds.
run_step() {
  local name=$1 t=$2; shift 2
  local c; c=$(cap "$t")
  if [[ $DRY == 1 ]]; then
    printf '[plan] %-22s timeout %3ss: %s\n' "$name" "$t" "$*"
    printf '%s\tplanned\t0\t%s\t\n' "$name" "$t" >>"$W/steps.tsv"
    return 0
  fi
  if (( $(left) < 15 )); then
    printf '%s\tskipped\t0\t%s\tbudget spent\n' "$name" "$c" >>"$W/steps.tsv"
    echo "=== $name: skipped (budget spent)"
    return 0
  fi
  local s0; s0=$(date +%s)
  timeout --kill-after=5 "$c" bash -o pipefail -c "$*" >"$W/logs/$name.log" 2>&1
  local rc=$?
  local note=""
  (( rc == 124 || rc == 137 )) && note="timed out after ${c}s"
  grep -q -E 'Device not supported|LibraryNotLoaded|ERR_NVGPUCTRPERM|Failed to initialize the profiler' "$W/logs/$name.log" 2>/dev/null && note="tool refused on this box"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s0 ))" "$c" "$note" >>"$W/steps.tsv"
  echo "=== $name: rc=$rc, $(( $(date +%s) - s0 )) s${note:+ ($note)}"
  tail -4 "$W/logs/$name.log" | sed 's/^/    /'
}
# bg_step: the same, in the background (phase A); wait_all waits for every one of them.
BG=()
bg_step() {
  if [[ $DRY == 1 ]]; then run_step "$@"; return 0; fi
  run_step "$@" >"$W/logs/$1.step" 2>&1 &
  BG+=($!)
}
wait_all() { local p; for p in "${BG[@]}"; do wait "$p"; done; BG=(); cat "$W"/logs/*.step 2>/dev/null; rm -f "$W"/logs/*.step; }
not_built() { printf '%s\tnot built yet\t0\t0\t%s\n' "$1" "$2" >>"$W/steps.tsv"; echo "=== $1: not built yet ($2)"; }

echo "verify: budget ${BUDGET}s, work folder $W, results into $res"
command -v nvidia-smi >/dev/null && [[ $DRY == 0 ]] && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv | tee "$W/logs/nvidia-smi.log"

# ---------------------------------------------------------------------------------------------------------------
# build: take what the bundle has, build the rest with nvcc (in parallel)
LIB=""
[[ -f "$b/native/libaligndistil_cuda.so" ]] && LIB="$PWD/$b/native"
have() { [[ -x "$b/native/$1" ]] && echo "$PWD/$b/native/$1"; }
SELFTEST="$(have fdl_cuda_selftest)"; PROBE="$(have fdl_cuda_probe)"; FLL_TEST="$(have fll_cuda_selftest)"; FLL_BENCH="$(have fll_cuda_bench)"
if [[ -z "$LIB" ]]; then
  # the project's own CMake build (CMake and ninja are on the box), Hopper machine code only, the self-test with it
  LIB="$W/bin"
  run_step build-lib 150 "cmake -S native -B $W/build -DCMAKE_BUILD_TYPE=Release -DAD_CPU=OFF -DAD_BUILD_TESTS=ON -DAD_CUDA_ARCHS=${VERIFY_CUDA_ARCHS:-90a-real} -DAD_OUTPUT_DIR=$W/bin && cmake --build $W/build -j \$(nproc) --target aligndistil_cuda fdl_cuda_selftest"
  [[ -z "$SELFTEST" ]] && SELFTEST="$W/bin/fdl_cuda_selftest"
fi
LINK="-Inative/include -L$LIB -laligndistil_cuda -Xlinker -rpath=$LIB -ldl"
[[ -z "$PROBE" ]] && { PROBE="$W/bin/fdl_cuda_probe"; bg_step build-probe 90 "nvcc -O2 -std=c++17 $NV_ARCH benchmarks/gpu/fdl_cuda_probe.cu $LINK -o $PROBE"; }
for p in fll_cuda_selftest fll_cuda_bench; do
  v=FLL_TEST; [[ $p == fll_cuda_bench ]] && v=FLL_BENCH
  if [[ -z "${!v}" && -f native/tests/$p.cu ]]; then
    printf -v "$v" '%s' "$W/bin/$p"
    if [[ -d "$W/build" ]] && grep -q "$p" native/CMakeLists.txt; then # CMake's target (same flags as CI), copied next to the library
      bg_step "build-$p" 150 "cmake --build $W/build -j \$(nproc) --target $p && { [[ -x $W/bin/$p ]] || cp \$(find $W/build -name $p -type f | head -1) $W/bin/$p; }"
    else # linked against the library first; if the program needs the sources themselves, compiled with them
      bg_step "build-$p" 150 "nvcc -O2 -std=c++17 $NV_ARCH native/tests/$p.cu $LINK -o $W/bin/$p || nvcc -O2 -std=c++17 $NV_ARCH -Inative/include -Isrc/main/cuda native/tests/$p.cu src/main/cuda/*.cu -o $W/bin/$p -ldl"
    fi
  fi
done
wait_all
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# the row kernels this library offers: the AD_CUDA_KERNEL switch (multipass / cluster), else the one it has
if grep -q AD_CUDA_KERNEL src/main/cuda/*.cu 2>/dev/null; then KERNELS=(multipass cluster); else KERNELS=(default); fi
SELFTEST_KOPT=0
grep -q -- '--kernel' native/tests/fdl_cuda_selftest.cu 2>/dev/null && SELFTEST_KOPT=1
kenv() { [[ $1 == default ]] && echo "" || echo "AD_CUDA_KERNEL=$1"; }
SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
NCU="$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)"
if [[ $DRY == 1 ]]; then SAN="${SAN:-compute-sanitizer}"; NCU="${NCU:-ncu}"; fi # the plan shows the steps a GPU box runs

# ---------------------------------------------------------------------------------------------------------------
# A. correctness, in parallel
for k in "${KERNELS[@]}"; do
  e="$(kenv "$k")"
  if [[ $SELFTEST_KOPT == 1 && $k != default ]]; then st="$SELFTEST --kernel $k"; else st="env $e $SELFTEST"; fi
  bg_step "selftest-$k" 75 "$st"
  bg_step "check-$k" 75 "env $e python3 benchmarks/gpu/torch_bench.py check $LIB/libaligndistil_cuda.so $W/check-$k.json"
  if [[ -n "$SAN" ]]; then
    bg_step "memcheck-$k" 75 "env $e $SAN --tool memcheck --error-exitcode 9 $PROBE launch 50257 6 bf16"
    bg_step "racecheck-$k" 75 "env $e $SAN --tool racecheck --error-exitcode 9 $PROBE launch 50257 6 bf16"
  else
    printf 'memcheck-%s\tno tool\t0\t0\tcompute-sanitizer not on this box\n' "$k" >>"$W/steps.tsv"
  fi
done
# issue 13: our kernel on PyTorch's current stream (a side stream), device pointers, no host copy or synchronisation
# (torch.cuda.set_sync_debug_mode("error")), against a float64 reference: what the Java training path does through the presets
bg_step check-stream 75 "python3 benchmarks/gpu/torch_bench.py check-stream $LIB/libaligndistil_cuda.so $W/check-stream.json"
if grep -q ad_fll_cuda native/include/aligndistil.h; then
  bg_step check-fll 75 "python3 benchmarks/gpu/torch_bench.py check-fll $LIB/libaligndistil_cuda.so $W/check-fll.json"
else
  not_built check-fll "no ad_fll_cuda in native/include/aligndistil.h"
fi
if [[ -n "$FLL_TEST" ]]; then
  bg_step fll-selftest 75 "$FLL_TEST"
  [[ -n "$SAN" ]] && bg_step fll-memcheck 75 "$SAN --tool memcheck --error-exitcode 9 $FLL_TEST"
else
  not_built fll-selftest "native/tests/fll_cuda_selftest.cu is not in this tree"
fi
if [[ $JAVA == 1 && ( -x "$b/jdk/bin/java" || $DRY == 1 ) ]]; then
  J="$b/jdk/bin/java --enable-native-access=ALL-UNNAMED"
  bg_step java-tests 75 "OUT=$W/junit benchmarks/gpu/run-gpu-tests.sh"
  bg_step torch-replay 75 "python3 benchmarks/gpu/torch_check.py make $W && $J -cp $b/lib/aligndistil.jar:$b/lib/picocli.jar:$b/lib/slf4j-api.jar:$b/lib/slf4j-simple.jar:$b/lib/slf4j-jdk-platform-logging.jar ai.aligndistil.cli.Main replay --backend cuda --in $W/batch.safetensors --out $W/result.safetensors && python3 benchmarks/gpu/torch_check.py compare $W"
else
  printf 'java-tests\tskipped\t0\t0\t%s\n' "$([[ $JAVA == 0 ]] && echo '--no-java' || echo 'no bundle JDK (benchmarks/gpu/prepare.sh)')" >>"$W/steps.tsv"
fi
wait_all

# ---------------------------------------------------------------------------------------------------------------
# B. timing, one step at a time (nothing else on the GPU)
run_step copy 30 "$PROBE copy 4 | tee $W/copy.json"
for k in "${KERNELS[@]}"; do
  e="$(kenv "$k")"
  run_step "time-$k-16384" 40 "env $e $PROBE time 151936 16384 bf16 | tee $W/time-$k-16384.json"
  run_step "time-$k-4096" 30 "env $e $PROBE time 151936 4096 bf16 | tee $W/time-$k-4096.json"
done
if [[ -n "$FLL_BENCH" ]]; then
  run_step fll-bench 60 "$FLL_BENCH | tee $W/fll-bench.log"
else
  not_built fll-bench "native/tests/fll_cuda_bench.cu is not in this tree"
fi
if [[ -n "$NCU" ]]; then
  for k in "${KERNELS[@]}"; do
    e="$(kenv "$k")"
    run_step "ncu-$k" 45 "env $e $NCU --clock-control none -k regex:'aligndistil_fdl_.*row' --launch-skip 0 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis -o $W/logs/ncu-$k -f $PROBE launch 151936 1024 bf16 && $NCU --import $W/logs/ncu-$k.ncu-rep --print-units base"
  done
else
  printf 'ncu\tno tool\t0\t0\tncu not on this box\n' >>"$W/steps.tsv"
fi
run_step torch-baselines 150 "PYTHONUNBUFFERED=1 python3 benchmarks/gpu/torch_bench.py baselines $W/baselines.json"
if [[ $JAVA == 1 ]] && { [[ $DRY == 1 ]] || { [[ -x "$b/jdk/bin/java" ]] && compgen -G "$b/lib/cuda-*.jar" >/dev/null; }; }; then
  # issue 4: do the JavaCPP CUDA presets (built for CUDA 13.1) load on this box's CUDA, and drive our kernel? Own JVM.
  run_step presets-probe 45 "LD_LIBRARY_PATH=\$LD_LIBRARY_PATH:${CUDA_HOME:-/usr/local/cuda}/lib64 $b/jdk/bin/java --enable-native-access=ALL-UNNAMED -cp '$b/test-classes:$b/lib/*' ai.aligndistil.bench.CudaPresetsProbe --out $W/presets.json --tokens 1024 --reps 10"
fi
if [[ $JMH == 1 && -x "$b/jdk/bin/java" ]]; then
  run_step jmh-events 240 "OUT=$res benchmarks/gpu/bench.sh --events-only"
fi

# ---------------------------------------------------------------------------------------------------------------
if [[ $DRY == 1 ]]; then
  echo "[plan] report: python3 benchmarks/gpu/verify_report.py $W $res (kernels: ${KERNELS[*]}; bundle: $([[ -d $b ]] && echo yes || echo no))"
  python3 benchmarks/gpu/verify_report.py --dry-run "$W" "$W"
  rm -rf "$W"
  exit 0
fi
commit="$(cat "$b/COMMIT" 2>/dev/null)"
if [[ -z "$commit" ]]; then
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [[ $commit != unknown ]] && ! git diff --quiet HEAD 2>/dev/null && commit+="-dirty"
fi
python3 benchmarks/gpu/verify_report.py --commit "$commit" --elapsed "$(( $(date +%s) - T0 ))" "$W" "$res"
