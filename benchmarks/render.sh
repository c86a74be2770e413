#!/usr/bin/env bash
# Renders result files into Markdown tables (.md) and PNG charts (.png) next to them.
#   benchmarks/render.sh                      every benchmarks/results/*.json
#   benchmarks/render.sh FILE.json...         just these
source "$(dirname "$0")/lib.sh"
export BENCH_NO_BUILD="${BENCH_NO_BUILD:-1}"
if [[ ! -f target/test-classes/ai/aligndistil/bench/Report.class ]]; then BENCH_NO_BUILD=0; fi
bench_build
if [[ $# -eq 0 ]]; then
  shopt -s nullglob
  set -- "$RESULTS"/*.json
  files=()
  for f in "$@"; do
    # JMH files only: not metadata, the C loop harness's own JSON (its .md is written by cpu.sh), nor the soak,
    # data-parallel and step-bench results (their own programs write their tables and charts)
    case "$f" in *.meta.json|*.cloop.*.json|*/cloop-*.json|*/soak-*|*/data-parallel-*|*/step-bench-*) ;; *) files+=("$f") ;; esac
  done
  set -- "${files[@]}"
fi
[[ $# -gt 0 ]] || { echo "render: no result files" >&2; exit 1; }
render "$@"
