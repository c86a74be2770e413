#!/usr/bin/env bash
# Soak: is memory flat over long training runs? Runs off-policy AlignDistil for 1,000 optimiser steps and on-policy
# AlignDistil (rollouts every step) for 200 steps on the built-in task (demo sizes: hidden 64, 2 layers, 1,024 pairs,
# batch 32), each in its own JVM, with a checkpoint every 100 steps and the training curve every 8 (both paths
# included), and records the resident memory (VmRSS, the rss_mb column of metrics.jsonl) every 50 steps. The bound:
# growth after warm-up under 2 %, growth = (max RSS at steps >= warm-up - RSS at warm-up) / RSS at warm-up, warm-up
# = the first 10 % of the steps (at least one sample interval).
#
#   benchmarks/soak.sh                         1,000 off-policy + 200 on-policy steps (~20 min on the 2-core VM)
#   benchmarks/soak.sh --off 100 --on 40 --every 10    a short run
#   options: --no-build (use target/ as it is), --keep (keep the run folder under target/bench-runs)
#   environment: SOAK_JAVA_OPTS (extra JVM flags, e.g. -XX:TrimNativeHeapInterval=5000; recorded in the result)
#
# The JVMs run with a fixed heap (-Xms = -Xmx = 512m, pre-touched), so RSS after warm-up moves only with native
# memory (libtorch tensors, our kernels' buffers) and the JVM's own non-heap: a leak there is what this looks for.
# Writes benchmarks/results/soak-<date>-<cpu>-<commit>.json (+ .png chart, .md table); exit 1 when a run breaks the bound.
BENCH_COMMAND="benchmarks/soak.sh $*"
OFF=1000
ON=200
EVERY=50
KEEP=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --off) OFF="$2"; shift ;;
    --on) ON="$2"; shift ;;
    --every) EVERY="$2"; shift ;;
    --no-build) export BENCH_NO_BUILD=1 ;;
    --keep) KEEP=1 ;;
    *) echo "usage: benchmarks/soak.sh [--off STEPS] [--on STEPS] [--every N] [--no-build] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
source "$(dirname "$0")/lib.sh"
bench_build
bench_names
run="$RUNS/soak-$$"
rm -rf "$run"
mkdir -p "$run"
JVM_OPTS="--enable-native-access=ALL-UNNAMED -XX:+UseParallelGC -Xms512m -Xmx512m -XX:+AlwaysPreTouch -Djava.awt.headless=true ${SOAK_JAVA_OPTS:-}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
ad() {
  # shellcheck disable=SC2086
  "$JAVA" $JVM_OPTS -Daligndistil.native.dir="$ROOT/target/native" -cp "$CP" ai.aligndistil.cli.Main "$@"
}
warmup() { local w=$(( ($1 / 10 + EVERY - 1) / EVERY * EVERY )); (( w < EVERY )) && w=$EVERY; echo "$w"; }

task="$run/task"
echo "soak: task and teachers in $run" >&2
ad task --out "$task" --seed 1 >/dev/null
ad task-pairs --task "$task" --policy "$task/base" --seed 1 >&2
common=(--config "$task/pipeline.json" --quiet)
ad dpo "${common[@]}" --model "$task/base" --out "$run/dpo" --epochs 1 --batch 128 --eval-every 0 >/dev/null
ad dpo "${common[@]}" --model "$task/base" --out "$run/rev" --reverse --epochs 1 --batch 128 --eval-every 0 >/dev/null
distill=("${common[@]}" --model "$task/base" --dpo "$run/dpo" --reverse-dpo "$run/rev" --variant aligndistil --save-steps 100 --eval-every 8)
# 1,024 pairs / batch 32 = 32 steps an epoch: enough epochs for the step counts asked.
epochs_off=$(( (OFF + 31) / 32 ))
epochs_on=$(( (ON + 31) / 32 ))
echo "soak: off-policy, $OFF steps" >&2
ad distill "${distill[@]}" --mode off-policy --epochs "$epochs_off" --max-steps "$OFF" --out "$run/off" >/dev/null
echo "soak: on-policy, $ON steps" >&2
ad distill "${distill[@]}" --mode on-policy --data "$task/train_prefs.jsonl" --epochs "$epochs_on" --max-steps "$ON" --out "$run/on" >/dev/null

base="$RESULTS/soak-$DATE-$CPU_SLUG-$COMMIT${SOAK_TAG:+-$SOAK_TAG}"
[[ "$OFF" == 1000 && "$ON" == 200 && "$EVERY" == 50 ]] || base="$RESULTS/soak-short-$DATE-$CPU_SLUG-$COMMIT"
set +e
"$JAVA" -Djava.awt.headless=true -cp "$CP" ai.aligndistil.bench.Soak report --out "$base.json" --every "$EVERY" --bound-pct 2 \
  --commit "$COMMIT$([[ $DIRTY == true ]] && echo -dirty)" --machine "$CPU_SLUG" --command "$BENCH_COMMAND" --jvm "$JVM_OPTS" \
  "off-policy=$run/off/metrics.jsonl:$(warmup "$OFF")" "on-policy=$run/on/metrics.jsonl:$(warmup "$ON")"
rc=$?
set -e
[[ $KEEP == 1 ]] || rm -rf "$run"
echo "soak: wrote $base.json, .png, .md" >&2
exit $rc
