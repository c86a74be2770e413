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
#   AD_CPU_ISA=avx512|avx2|portable forces the kernel's code path (default: what the library picks on this CPU)
#
# Both modes then build the C loop of issue 15 (benchmarks/cloop/cloop.c) for the same path and time it against the
# fused kernel in one process, alternating (quick: V=151936, 64 tokens, 1 thread; full: 64 and 512 tokens, 1 and 2
# threads; f32, and the fused kernel also bf16): <name>.cloop.md and .cloop.<i>.json next to the JMH files.
#
# Writes benchmarks/results/cpu[-quick]-<date>-<cpu>-<isa>-<commit>.json (+ .meta.json, .md table, .png chart).
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
ISA="$(bench_isa)"
CPU_SLUG="$CPU_SLUG-$ISA"   # the file names name the machine and the kernel's code path
CLOOP="$(cloop_build "$ISA")"
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
# The C loop of issue 15 (benchmarks/cloop/cloop.c: the design's time bound, not a correct kernel: see its precision
# note) and the fused kernel on the same inputs, alternating call by call in one process, same code path.
cl_base="${out%.json}.cloop"
if [[ $QUICK == 1 ]]; then
  cl_runs=("64|1|f32 bf16")
else
  cl_runs=("64|1 2|f32 bf16" "512|1 2|f32 bf16")
fi
{
  echo "# C loop vs fused kernel, same run ($ISA path, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores)"
  echo
  echo "\`$BENCH_COMMAND\` on commit $COMMIT (dirty: $DIRTY), $(date -u +%Y-%m-%dT%H:%MZ), load average at start $LOAD_START."
  echo "benchmarks/cloop/cloop.c built for the $ISA path; the C loop (f32) and ad_fdl_cpu (f32, bf16) alternate call by"
  echo "call on the same inputs; medians. ns/element = time per call / (tokens x V). The C loop is an optimistic bound"
  echo "(f32 sums, the cancelling KL identity, -ffast-math, no checks): see its precision note."
  echo
  echo '```'
} > "$cl_base.md"
i=0
for spec in "${cl_runs[@]}"; do
  IFS='|' read -r tok thr dts <<< "$spec"
  OMP_WAIT_POLICY=PASSIVE "$CLOOP" --vocab 151936 --tokens "$tok" --threads "$thr" --dtypes "$dts" --reps 5 \
    --label "$ISA" --json "$cl_base.$i.json" | tee -a "$cl_base.md" >&2
  i=$((i + 1))
done
echo '```' >> "$cl_base.md"
echo "bench: C loop comparison in $cl_base.md (+ $cl_base.*.json)" >&2
# fused (JMH, this run) over the C loop (harness, this run), V=151936 64 tokens f32 1 thread
cl_ms="$(grep -o '"threads": 1, "cloop_f32_ms": [0-9.]*' "$cl_base.0.json" | sed 's/.*: //')"
jmh_ms="$(python3 - "$out" <<'PYEOF'
import json, sys
for r in json.load(open(sys.argv[1])):
    p = r.get("params", {})
    if r["benchmark"].endswith("FusedLossBench.fused") and p.get("vocab") == "151936" and p.get("tokens") == "64" \
            and p.get("dtype") == "f32" and p.get("threads") == "1":
        m = r["primaryMetric"]
        v = m.get("scorePercentiles", {}).get("50.0", m["score"])
        print("%.3f" % (v * {"ms/op": 1, "s/op": 1e3, "us/op": 1e-3}.get(m["scoreUnit"], 1)))
        break
PYEOF
)"
{
  echo "fused/C-loop V=151936 f32 1-thread ($ISA path): harness, alternating in one process: $(grep -o '"fused_over_cloop": [0-9.]*' "$cl_base.0.json" | head -1 | sed 's/.*: //')x; JMH fused p50 ${jmh_ms:-n/a} ms over the harness C loop $cl_ms ms: $(python3 -c "print('%.3f' % (float('${jmh_ms:-nan}') / float('$cl_ms')))")x"
} | tee -a "$cl_base.md"
"$JAVA" -cp "$CP" ai.aligndistil.bench.Report speedup "$out"
