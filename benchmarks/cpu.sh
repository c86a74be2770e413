#!/usr/bin/env bash
# Suite 1: the fused loss (forward + gradient) on the CPU against the same loss composed from libtorch ops with
# autograd, plus the Java reference (small shapes), every variant at one size, and the CUDA kernel when a GPU answers.
#
#   benchmarks/cpu.sh            full suite: V in {32000, 128256, 151936} x {64, 512} tokens x {f32, bf16}, fused and
#                                libtorch at 1 and 2 threads (~25 min on the 2-core VM)
#   benchmarks/cpu.sh --quick    fused vs libtorch at V=151936, 64 tokens, f32, 1 thread (~1.5 min); last line:
#                                "fused/libtorch speedup V=151936 f32 1-thread: <X>x", X against the faster of the
#                                two libtorch runs (glibc malloc as installed / tuned not to unmap large blocks)
#   options: --no-build (use target/ as it is), -- <extra JMH args> (e.g. -- -f 2 -i 10)
#
# Writes benchmarks/results/cpu[-quick]-<date>-<cpu>-<commit>.json (+ .meta.json, .md table, .png chart).
# Thread counts: each part runs with OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = the benchmark's thread parameter.
BENCH_COMMAND="benchmarks/cpu.sh $*"
QUICK=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "usage: benchmarks/cpu.sh [--quick] [--no-build] [-- JMH args]" >&2; exit 2 ;;
  esac
  shift
done
source "$(dirname "$0")/lib.sh"
bench_build
bench_names
run="$RUNS/cpu-$$"
mkdir -p "$run"

# libtorch runs twice: with glibc's allocator as installed (malloc=default), and tuned not to unmap large blocks
# (malloc=no-mmap, GLIBC_TUNABLES below: no mmap/trim of big blocks, one arena): without it every call page-faults
# its >32 MiB intermediates back in.
NO_MMAP="glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295:glibc.malloc.arena_max=1"
if [[ $QUICK == 1 ]]; then
  suite=cpu-quick
  q=(-p vocab=151936 -p tokens=64 -p dtype=f32 -p threads=1)
  jmh "$run/t1.json" 1 'FusedLossBench\.(fused|libtorch)$' "${q[@]}" -p malloc=default "${EXTRA[@]}"
  GLIBC_TUNABLES="$NO_MMAP" jmh "$run/t1-nommap.json" 1 'FusedLossBench\.libtorch$' "${q[@]}" -p malloc=no-mmap "${EXTRA[@]}"
  parts=("$run/t1.json" "$run/t1-nommap.json")
else
  suite=cpu
  jmh "$run/t1.json" 1 'FusedLossBench\.' -p threads=1 -p malloc=default "${EXTRA[@]}"
  GLIBC_TUNABLES="$NO_MMAP" jmh "$run/t1-nommap.json" 1 'FusedLossBench\.libtorch$' -p threads=1 -p malloc=no-mmap "${EXTRA[@]}"
  jmh "$run/t2.json" 2 'FusedLossBench\.(fused|libtorch)$' -p threads=2 -p malloc=default "${EXTRA[@]}"
  GLIBC_TUNABLES="$NO_MMAP" jmh "$run/t2-nommap.json" 2 'FusedLossBench\.libtorch$' -p threads=2 -p malloc=no-mmap "${EXTRA[@]}"
  parts=("$run/t1.json" "$run/t1-nommap.json" "$run/t2.json" "$run/t2-nommap.json")
  if "$JAVA" --enable-native-access=ALL-UNNAMED -Daligndistil.native.dir="$ROOT/target/native" -cp "$CP" ai.aligndistil.bench.Results gpu >&2; then
    jmh "$run/cuda.json" 1 'FusedLossCudaBench\.' "${EXTRA[@]}"
    parts+=("$run/cuda.json")
  else
    echo "bench: no GPU: the CUDA kernel is not part of this run" >&2
  fi
fi
out="$RESULTS/$suite-$DATE-$CPU_SLUG-$COMMIT.json"
merge "$suite" "$out" "${parts[@]}"
render "$out"
"$JAVA" -cp "$CP" ai.aligndistil.bench.Report speedup "$out"
