#!/usr/bin/env bash
# Exact instruction counts of the AVX2 row kernel, per pass, per element: deterministic, so unlike timings they do
# not depend on what else the (shared) machine runs. Builds native/tests/fdl_cpu_profile.c with -g into
# target/prof-counts, runs its kernel part under valgrind's callgrind (instruction-level), and attributes every
# executed instruction of the row kernel to the pass it belongs to (the "/* ------ name */" section comments of
# native/cpu/fused_distill_loss_rows.c, as benchmarks/profile-cpu.sh does for perf samples).
#   benchmarks/profile-cpu-counts.sh [V] [tokens] [dtype]     default 151936 4 f32   (~1 min)
# Needs valgrind, addr2line (binutils) and gcc; llvm-mca (optional) adds the pipe model's cycles per element by pass.
# x86-64 with AVX2 only.
set -euo pipefail
V="${1:-151936}" TOK="${2:-4}" DT="${3:-f32}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
P="$ROOT/target/prof-counts"
mkdir -p "$P"
command -v valgrind >/dev/null || { echo "profile-cpu-counts: valgrind not found" >&2; exit 1; }
N="$ROOT/native"
# the flags of the library's avx2 object (native/CMakeLists.txt, AD_CPU_COMMON_FLAGS) plus -g
gcc -g -O3 -fno-math-errno -fno-trapping-math -ffp-contract=off -mavx2 -mfma -mf16c -I"$N/include" -I"$N/cpu" \
  -o "$P/fdl_cpu_profile" "$N/tests/fdl_cpu_profile.c" -lm
valgrind --tool=callgrind --dump-instr=yes --toggle-collect=ad_fdl_row_prof --callgrind-out-file="$P/cg.out" \
  "$P/fdl_cpu_profile" --kernel-only --vocab "$V" --tokens "$TOK" --reps 1 --dtype "$DT" >/dev/null 2>"$P/valgrind.log"
SRC="$N/cpu/fused_distill_loss_rows.c"
awk '/\/\* ----------+ /{sub(/^.*-+ /,""); sub(/ *\*\/.*/,""); print NR "\t" $0}' "$SRC" > "$P/sections.tsv"
python3 - "$P" "$P/fdl_cpu_profile" "$(( V * TOK * 2 + 16384 * 64 * 2 ))" <<'PY'
import subprocess, sys
P, exe, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# self cost per instruction address from callgrind's compressed format ("positions: instr line"); the cost line
# that follows a "calls=" line is the inclusive cost of a call and is skipped
cost, addr, skip, inside, names = {}, 0, False, False, {}
for ln in open(P + "/cg.out"):
    t = ln.split()
    if not t: continue
    if ln.startswith(("fn=", "cfn=")):  # "fn=(id) name" (or cfn=) the first time, "fn=(id)" after that
        fid = t[0].split("=", 1)[1]
        if len(t) > 1: names[fid] = t[1]
        if ln.startswith("fn="): inside = names.get(fid) == "ad_fdl_row_prof"
        continue
    if ln.startswith("calls="): skip = True; continue
    if not inside or not (t[0][0] in "0123456789+-*" and len(t) >= 3): continue
    a = t[0]
    addr = int(a, 16) if a.startswith("0x") else addr + int(a[1:]) if a[0] == "+" else addr - int(a[1:]) if a[0] == "-" else addr
    if skip: skip = False; continue
    cost[addr] = cost.get(addr, 0) + int(t[2])
addrs = sorted(cost)
out = subprocess.run(["addr2line", "-a", "-i", "-e", exe] + [hex(x) for x in addrs], capture_output=True, text=True).stdout
line_of, cur = {}, None
for l in out.splitlines():
    if l.startswith("0x"): cur = int(l, 16); continue
    if cur is not None and cur not in line_of and "fused_distill_loss_rows.c" in l:
        line_of[cur] = int(l.split(":")[-1].split()[0])
secs = [l.rstrip("\n").split("\t") for l in open(P + "/sections.tsv")]
tot, by = 0, {}
for x in addrs:
    ln = line_of.get(x, 0)
    name = "(outside the passes)"
    for L, nm in secs:
        if ln >= int(L): name = nm
    by[name] = by.get(name, 0) + cost[x]; tot += cost[x]
with open(P + "/counts.txt", "w") as f:
    for L, nm in secs:
        if nm in by: f.write("%7.2f  %s\n" % (by[nm] / n, nm))
    if "(outside the passes)" in by: f.write("%7.2f  %s\n" % (by["(outside the passes)"] / n, "(outside the passes)"))
    f.write("%7.2f  total instructions per element (%d elements)\n" % (tot / n, n))
# The executed loops, through llvm-mca's model of a Zen 3 core (the closest model LLVM 14 has to this Zen 4): cycles
# per iteration of each loop times the times its first instruction ran, summed per pass. A model of the core's
# pipes with every load an L1 hit: what the instruction mix alone costs.
import re, shutil
if shutil.which("llvm-mca"):
    txt = subprocess.run(["objdump", "-d", "--no-show-raw-insn", exe], capture_output=True, text=True).stdout
    body = re.search(r'<ad_fdl_row_prof>:\n(.*?)\n\n', txt, re.S).group(1)
    ins = [(int(m.group(1), 16), m.group(2)) for m in (re.match(r'\s+([0-9a-f]+):\s+(\S.*)$', l) for l in body.splitlines()) if m]
    at = {a: i for i, (a, _) in enumerate(ins)}
    model, fp01 = {}, {}
    for i, (a, t) in enumerate(ins):
        m = re.match(r'j\w+\s+([0-9a-f]+) <', t)
        if not m or int(m.group(1), 16) >= a or int(m.group(1), 16) not in at: continue
        head = int(m.group(1), 16)
        loop = [x for _, x in ins[at[head]:i]]
        iters = cost.get(head, 0)
        if iters < 1000 or any(x.startswith("call") for x in loop): continue
        open(P + "/loop.s", "w").write("\n".join(re.sub(r'<[^>]*>', '', re.sub(r'#.*', '', x)) for x in loop) + "\n")
        o = subprocess.run(["llvm-mca", "-mcpu=znver3", "-iterations=300", P + "/loop.s"], capture_output=True, text=True).stdout
        cyc = int(re.search(r'Total Cycles:\s+(\d+)', o).group(1)) / 300
        ln = line_of.get(head, 0)
        name = "(outside the passes)"
        for L, nm in secs:
            if ln >= int(L): name = nm
        model[name] = model.get(name, 0) + cyc * iters
    with open(P + "/model.txt", "w") as f:
        t = 0
        for L, nm in secs:
            if nm in model: f.write("%7.2f  %s\n" % (model[nm] / n, nm)); t += model[nm]
        f.write("%7.2f  total model cycles per element (loops only)\n" % (t / n))
PY
echo "== instructions per element of the avx2 row kernel, by pass (V=$V and V=16384, $DT, aligndistil; callgrind)"
cat "$P/counts.txt"
if [[ -f "$P/model.txt" ]]; then
  echo "== llvm-mca (-mcpu=znver3) cycles per element of the executed loops, by pass (pipes only, every load an L1 hit)"
  cat "$P/model.txt"
fi
