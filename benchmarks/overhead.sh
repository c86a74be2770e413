#!/usr/bin/env bash
# Suite 2: the cost of crossing into native code. The fused kernel at V=8 (1 and 16 tokens) and a bare FFM downcall,
# with JMH's gc profiler: the per-call host overhead (upper bound) and the allocation per call (must be ~0 B/op).
#   benchmarks/overhead.sh [--no-build] [-- JMH args]          (~1 min)
# Writes benchmarks/results/overhead-<date>-<cpu>-<commit>.json (+ .meta.json, .md).
BENCH_COMMAND="benchmarks/overhead.sh $*"
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) export BENCH_NO_BUILD=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "usage: benchmarks/overhead.sh [--no-build] [-- JMH args]" >&2; exit 2 ;;
  esac
  shift
done
source "$(dirname "$0")/lib.sh"
bench_build
bench_names
run="$RUNS/overhead-$$"
mkdir -p "$run"
jmh "$run/overhead.json" 1 'CallOverheadBench\.' -prof gc "${EXTRA[@]}"
out="$RESULTS/overhead-$DATE-$CPU_SLUG-$COMMIT.json"
merge overhead "$out" "$run/overhead.json"
render "$out"
cat "${out%.json}.md"
