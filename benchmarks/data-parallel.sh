#!/usr/bin/env bash
# Data-parallel scaling (issue 14): DPO, off- and on-policy AlignDistil on the built-in task (demo sizes) at 1 and 2
# processes with the same global batch, through --nproc-per-node (Gloo over loopback). Reports the median optimiser
# step, the time in collectives, speedup T1/TN and efficiency T1/(N TN); one libtorch/kernel thread per process.
#
#   benchmarks/data-parallel.sh [--no-build] [--steps 14] [--batch 16] [--micro-batch 4] [--procs 1,2]     (~5 min on the 2-core VM)
#
# Writes benchmarks/results/data-parallel-<date>-<cpu>-<commit>.{json,md}.
BENCH_COMMAND="benchmarks/data-parallel.sh $*"
STEPS=14 BATCH=16 MICRO=4 PROCS=1,2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) export BENCH_NO_BUILD=1 ;;
    --steps) STEPS="$2"; shift ;;
    --batch) BATCH="$2"; shift ;;
    --micro-batch) MICRO="$2"; shift ;;
    --procs) PROCS="$2"; shift ;;
    *) echo "usage: benchmarks/data-parallel.sh [--no-build] [--steps N] [--batch B] [--micro-batch M] [--procs 1,2]" >&2; exit 2 ;;
  esac
  shift
done
source "$(dirname "$0")/lib.sh"
bench_build
bench_names
out="$RESULTS/data-parallel-$DATE-$CPU_SLUG-$COMMIT"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$JAVA" --enable-native-access=ALL-UNNAMED -Daligndistil.native.dir="$ROOT/target/native" \
  -Daligndistil.threads=1 -Daligndistil.cpu.threads=1 -Xmx4g -cp "$CP" ai.aligndistil.bench.DataParallelBench --out "$out" \
  --steps "$STEPS" --batch "$BATCH" --micro-batch "$MICRO" --procs "$PROCS" \
  --meta "commit=$COMMIT,dirty=$DIRTY,date=$DATE,cpu=$CPU_SLUG,load_start=${LOAD_START// /\/},command=${BENCH_COMMAND//,/;}"
echo "bench: load at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
