#!/usr/bin/env bash
# Fused-linear loss on the CPU (issue 6): ChunkedFusedLinearLoss (chunked head matmuls + native row kernel) against the
# unfused head path (full [N, V] logits + FusedDistillLoss + autograd), wall time and peak extra memory.
#
#   benchmarks/fused-linear-cpu.sh                 N=256, H=896, V=151936 (Qwen2.5-0.5B head), f32, chunks 64 and 256,
#                                                  1 and 2 threads, 2 rounds (~8 min on the 2-core VM)
#   options: --no-build, --tokens N, --chunks "64 256", --threads "1 2", --rounds R, --reps R (timed calls per fork)
#
# Every (variant, chunk, threads) runs in a fresh JVM (ai.aligndistil.bench.FusedLinearLossBench run), so its peak
# resident memory can be read from /proc (VmHWM after resetting it with clear_refs); the variants are interleaved
# round by round so a noisy neighbour hits all of them alike. glibc runs with mmap_threshold=1 MiB (fixed) so freed big
# buffers leave the resident set and VmHWM measures live buffers, not the allocator's cache (same for every variant).
# OpenMP runs with OMP_WAIT_POLICY=PASSIVE unless the caller sets it: libtorch's OpenMP threads and the native kernel's
# pool take turns once per chunk, and spinning OpenMP workers starve the pool on 2 cores (erratic 2-thread times).
# Time: median of all timed calls per configuration.
# Writes benchmarks/results/fused-linear-cpu-<date>-<cpu>-<commit>.{json,md,png}.
BENCH_COMMAND="benchmarks/fused-linear-cpu.sh $*"
TOKENS=256 CHUNKS="64 256" THREADS="1 2" ROUNDS=2 REPS=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) export BENCH_NO_BUILD=1 ;;
    --tokens) TOKENS="$2"; shift ;;
    --chunks) CHUNKS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    *) echo "usage: benchmarks/fused-linear-cpu.sh [--no-build] [--tokens N] [--chunks \"C...\"] [--threads \"T...\"] [--rounds R] [--reps R]" >&2; exit 2 ;;
  esac
  shift
done
source "$(dirname "$0")/lib.sh"
bench_build
bench_names
run="$RUNS/fused-linear-cpu-$$"
mkdir -p "$run"
samples="$run/samples.jsonl"
: > "$samples"
one() { # threads variant chunk
  echo "bench: fused-linear $2 C=$3 threads=$1 N=$TOKENS" >&2
  OMP_NUM_THREADS="$1" OPENBLAS_NUM_THREADS="$1" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}" GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 \
    "$JAVA" --enable-native-access=ALL-UNNAMED -Daligndistil.native.dir="$ROOT/target/native" -Daligndistil.threads="$1" -Daligndistil.cpu.threads="$1" \
      -Dorg.bytedeco.javacpp.maxPhysicalBytes=0 -cp "$CP" ai.aligndistil.bench.FusedLinearLossBench run \
      --variant "$2" --chunk "$3" --tokens "$TOKENS" --reps "$REPS" --warmup 1 2>>"$run/stderr.log" | tee -a "$samples" >&2
}
for ((r = 1; r <= ROUNDS; r++)); do
  for t in $THREADS; do
    one "$t" unfused 0
    for c in $CHUNKS; do one "$t" fused "$c"; done
  done
done
out="$RESULTS/fused-linear-cpu-$DATE-$CPU_SLUG-$COMMIT"
"$JAVA" -Djava.awt.headless=true -cp "$CP" ai.aligndistil.bench.FusedLinearLossBench report --out "$out" \
  --meta "commit=$COMMIT,dirty=$DIRTY,date=$DATE,cpu=$CPU_SLUG,load_start=${LOAD_START// /\/},elapsed_s=$(( $(date +%s) - T_START )),rounds=$ROUNDS,omp_wait_policy=${OMP_WAIT_POLICY:-PASSIVE},command=${BENCH_COMMAND//,/;}" \
  "$samples"
echo "bench: wrote $out.{json,md,png}" >&2
