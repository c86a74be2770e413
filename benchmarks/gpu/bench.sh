#!/usr/bin/env bash
# The CUDA benchmark suites, on a GPU machine, with the bundle made by benchmarks/gpu/prepare.sh (no Maven, no JDK
# needed there). Without a CUDA device it says so and exits 0 (nothing to measure).
#
#   benchmarks/gpu/bench.sh                  suite 3 (CudaEventBench: CUDA events, rotated input sets, D2D copy in the
#                                            same run) + suite 1's GPU part (FusedLossCudaBench: launch + synchronize)
#   benchmarks/gpu/bench.sh --events-only    suite 3 only (~3 min)
#   benchmarks/gpu/bench.sh -- <JMH args>    e.g. -- -p vocab=151936 -p tokens=16384
#                                            or  -- -p rowKernel=multipass,cluster (CudaEventBench: both row kernels)
#
# Results go to ${OUT:-benchmarks/results}: gpu-<date>-<gpu>-<commit>.json (+ .meta.json, .events.jsonl with the
# per-launch device-time medians, .presets.json with what CudaPresetsProbe found). Render them on the build machine: benchmarks/render.sh FILE.json
set -euo pipefail
cd "$(dirname "$0")/../.."
b=target/gpu-bundle
benchmarks/gpu/unpack-jdk.sh "$b"
[[ -x "$b/jdk/bin/java" ]] || { echo "gpu bench: no bundle at $b: run benchmarks/gpu/prepare.sh on the build machine and carry target/gpu-bundle" >&2; exit 1; }
J="$b/jdk/bin/java"
CP="$b/test-classes:$b/lib/*"
EVENTS_ONLY=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --events-only) EVENTS_ONLY=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "usage: benchmarks/gpu/bench.sh [--events-only] [-- JMH args]" >&2; exit 2 ;;
  esac
  shift
done
if ! gpu="$("$J" --enable-native-access=ALL-UNNAMED -cp "$CP" ai.aligndistil.bench.Results gpu)"; then
  echo "gpu bench: $gpu; skipped (nothing measured)"
  exit 0
fi
echo "gpu bench: $gpu"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true
res="${OUT:-benchmarks/results}"
mkdir -p "$res"
slug="$("$J" --enable-native-access=ALL-UNNAMED -cp "$CP" ai.aligndistil.bench.Results slug gpu)"
commit="$(cat "$b/COMMIT" 2>/dev/null || echo unknown)"
name="$res/gpu-$(date +%Y-%m-%d)-$slug-${commit%-dirty}"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
t0=$(date +%s)
tmp="$(mktemp -d)"
# The JavaCPP CUDA presets (built against CUDA 13.1): do they load on this box's CUDA, and can they drive and time our
# kernel? In its own JVM (a binding this CUDA lacks would end the process), never fatal; finding in $name.presets.json.
if compgen -G "$b/lib/cuda-*.jar" >/dev/null; then
  LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}${CUDA_HOME:-/usr/local/cuda}/lib64" \
    "$J" --enable-native-access=ALL-UNNAMED -cp "$CP" ai.aligndistil.bench.CudaPresetsProbe --out "$name.presets.json" \
    || echo "gpu bench: the CUDA presets probe ended with rc=$? (see its output above)"
fi
rm -f "$name.events.jsonl"
run_jmh() {
  local out="$1"
  shift
  "$J" --enable-native-access=ALL-UNNAMED -Daligndistil.bench.events="$name.events.jsonl" -cp "$CP" \
    org.openjdk.jmh.Main "$@" -rf json -rff "$out"
}
run_jmh "$tmp/events.json" 'CudaEventBench\.' "${EXTRA[@]}"
parts=("$tmp/events.json")
if [[ $EVENTS_ONLY == 0 ]]; then
  run_jmh "$tmp/host.json" 'FusedLossCudaBench\.' "${EXTRA[@]}"
  parts+=("$tmp/host.json")
fi
dirty=false
[[ "$commit" == *-dirty ]] && dirty=true
"$J" -cp "$CP" ai.aligndistil.bench.Results merge --suite gpu --out "$name.json" --commit "${commit%-dirty}" --dirty "$dirty" \
  --load-start "$load" --elapsed-s "$(( $(date +%s) - t0 ))" --command "benchmarks/gpu/bench.sh $*" "${parts[@]}"
echo "gpu bench: wrote $name.json; render it on the build machine with benchmarks/render.sh"
