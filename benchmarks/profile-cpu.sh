#!/usr/bin/env bash
# Where the fused CPU kernel spends its time, by pass of the row kernel (perf sampling; works in a VM without
# hardware counters). Builds a copy of the CPU library with debug info (same flags plus -g) into target/prof,
# runs the JMH fused benchmark under `perf record`, and attributes the row kernel's samples to the passes named in
# native/cpu/fused_distill_loss_rows.c (its "/* ------ pass 0: ..." section comment lines).
#   benchmarks/profile-cpu.sh [V] [tokens] [dtype] [threads]      default 151936 64 f32 1   (~1 min)
# Needs perf (Debian: linux-perf) and addr2line (binutils). Writes target/prof/passes.txt and prints it.
set -euo pipefail
V="${1:-151936}" TOK="${2:-64}" DT="${3:-f32}" TH="${4:-1}"
export BENCH_NO_BUILD="${BENCH_NO_BUILD:-1}"
source "$(dirname "$0")/lib.sh"
bench_build
command -v perf >/dev/null || { echo "profile: perf not found (apt-get install linux-perf)" >&2; exit 1; }
P="$ROOT/target/prof"
mkdir -p "$P"
cmake -S native -B "$P/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS=-g -DAD_CUDA=OFF -DAD_OUTPUT_DIR="$P/lib" >/dev/null
cmake --build "$P/build" -j 2 >/dev/null
LIB="$P/lib/libaligndistil_cpu.so"
OMP_NUM_THREADS="$TH" OPENBLAS_NUM_THREADS="$TH" perf record -F 1999 -o "$P/perf.data" -- \
  "$JAVA" --enable-native-access=ALL-UNNAMED -Daligndistil.native.dir="$P/lib" -cp "$CP" org.openjdk.jmh.Main \
  'FusedLossBench\.fused$' -p vocab="$V" -p tokens="$TOK" -p dtype="$DT" -p threads="$TH" -wi 1 -i 4 2>&1 | grep -E '^FusedLossBench' || true
echo "== top symbols (all processes of the run)"
perf report -i "$P/perf.data" --sort dso,symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
# row kernel entry actually used (avx512 / avx2 / portable): the hottest ad_fdl_row_* symbol
sym="$(perf report -i "$P/perf.data" --sort symbol --stdio 2>/dev/null | grep -o 'ad_fdl_row_[a-z0-9]*' | head -1)"
base=$((16#$(nm "$LIB" | awk -v s="$sym" '$3==s{print $1}')))
# section boundaries: the "/* ------ name */" comment lines of the row kernel source
SRC=native/cpu/fused_distill_loss_rows.c
awk '/\/\* ----------+ /{sub(/^.*-+ /,""); sub(/ *\*\/.*/,""); print NR "\t" $0}' "$SRC" > "$P/sections.tsv"
perf script -i "$P/perf.data" -F ip,sym,symoff 2>/dev/null | grep -o "$sym+0x[0-9a-f]*" | sed "s/$sym+//" | sort | uniq -c |
while read -r n off; do
  addr=$(printf '0x%x' $((base + 16#${off#0x})))
  line=$(addr2line -i -e "$LIB" "$addr" | grep -m1 'fused_distill_loss_rows.c' | sed 's/.*://; s/ .*//')
  echo "$n ${line:-0}"
done | awk -v sec="$P/sections.tsv" 'BEGIN{while((getline l < sec)>0){split(l,a,"\t"); k++; L[k]=a[1]; N[k]=a[2]}}
  {name="(outside the passes)"; for(i=1;i<=k;i++) if($2>=L[i]) name=N[i]; c[name]+=$1; t+=$1}
  END{for(x in c) printf "%6.1f%%  %s\n", 100*c[x]/t, x; printf "(%d samples in %s)\n", t, "'"$sym"'"}' | sort -rn > "$P/passes.txt"
echo "== $sym samples by section of the row kernel (V=$V tokens=$TOK $DT threads=$TH)"
cat "$P/passes.txt"
