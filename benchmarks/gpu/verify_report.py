#!/usr/bin/env python3
"""The report of benchmarks/gpu/verify.sh (standard library only, so it runs anywhere).

  verify_report.py [--commit C] [--elapsed S] WORK RESULTS   reads WORK (steps.tsv, the steps' JSON, logs/), writes
        RESULTS/verify-<date>-<card>-<commit>.json and .md and .logs.tar.gz, prints the step table and then, LAST,
        one line per goal of issue 6
  verify_report.py --dry-run WORK RESULTS                    prints the goal table with every value missing

Goals (issue 6), each evaluated from this one run. Verdicts: PASS / MISS (measured, on a kernel whose checks passed),
FAIL (measured, but no such kernel passed its checks), n/a (not measured: the line says why).
  row kernel       effective bandwidth (3 bf16 inputs read + 1 bf16 gradient written, V=151936, 16384 tokens)
                   >= 85 % of the card's measured device-to-device copy bandwidth (read + written)
  vs torch.compile torch.compile's forward + backward of the same loss (bf16 inputs, f32 softmaxes, 4096 tokens)
                   over the row kernel's time at 4096 tokens >= 3
  fused-linear     fll_cuda_bench's ad_fll_cuda time (H=1536, V=151936, 16384 tokens, bf16) <= 1.3 x the five bf16
                   GEMMs of that loss at full size timed through PyTorch (3 logits products, grad hidden, grad
                   weight); the bench's own chunked cuBLAS GEMMs are shown too (and used when PyTorch's are missing)
  fll memory       fll_cuda_bench's peak_extra_bytes (workspace + first-call growth) < 5 % of its unfused_bytes: the
                   four bf16 [tokens, V] tensors the unfused path holds (student, DPO, reverse logits, d loss / d
                   logits), 4 x 16384 x 151936 x 2 bytes = 19.9 GB (eager PyTorch holds more: its peak is reported)
"""
import datetime
import glob
import json
import os
import re
import sys
import tarfile

TOKENS, VOCAB, HIDDEN = 16384, 151936, 1536
UNFUSED_BYTES = 4 * TOKENS * VOCAB * 2


def last_json(path, keys=()):
    """The last line of a file that parses as a JSON object having all of `keys` (None if none)."""
    if not os.path.exists(path):
        return None
    if path.endswith(".json") and not keys:
        try:
            with open(path) as f:
                return json.load(f)
        except (ValueError, OSError):
            pass
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                try:
                    o = json.loads(line)
                except ValueError:
                    continue
                if all(k in o for k in keys):
                    found = o
    return found


def fll_lines(path):
    """fll_cuda_bench's JSON lines by their "what" field (the last of each)."""
    out = {}
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{") and line.endswith("}"):
                    try:
                        o = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(o, dict) and "what" in o:
                        out[o["what"]] = o
    return out


def steps(work):
    out = []
    p = os.path.join(work, "steps.tsv")
    if os.path.exists(p):
        with open(p) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4:
                    name, rc, secs, limit = parts[:4]
                    out.append({"step": name, "rc": rc, "seconds": int(secs or 0), "timeout_s": int(limit or 0),
                                "note": parts[4] if len(parts) > 4 else ""})
    return out


def card_name(work):
    p = os.path.join(work, "logs", "nvidia-smi.log")
    if os.path.exists(p):
        with open(p) as f:
            rows = [r for r in f.read().splitlines()[1:] if r.strip()]
        if rows:
            return rows[0].split(",")[0].strip()
    for j in glob.glob(os.path.join(work, "*.json")):
        o = last_json(j)
        if isinstance(o, dict) and o.get("gpu"):
            return o["gpu"]
    return "unknown-gpu"


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "unknown"


def fmt_bw(x):
    return "-" if x is None else f"{x / 1000:.2f} TB/s"


def goals(work, st):
    """The four goal lines: (goal, value text, verdict)."""
    status = {s["step"]: s for s in st}
    def ok(name):
        s = status.get(name)
        return s is not None and s["rc"] == "0"
    copy = last_json(os.path.join(work, "copy.json"), ("gb_per_s",))
    kernels = sorted({m.group(1) for p in glob.glob(os.path.join(work, "time-*-16384.json"))
                      for m in [re.match(r"time-(.+)-16384\.json", os.path.basename(p))] if m}) or ["default"]
    rows = []

    def failed(name):
        """A check that ran and said no (or a self-test cut by its timeout). Not: absent tools, refusals, skips, and
        a sanitizer cut by its timeout (that proves nothing either way; the step table shows it)."""
        s = status.get(name)
        fine = ("0", "no tool", "skipped", "planned", "not built yet") + (("124", "137") if name.startswith(("memcheck", "racecheck", "fll-memcheck")) else ())
        return s is not None and s["rc"] not in fine and s["note"] != "tool refused on this box"

    def clean(k):
        return not any(failed(n) for n in (f"selftest-{k}", f"check-{k}", f"memcheck-{k}", f"racecheck-{k}"))

    def correctness(k):
        bad = [n for n in (f"selftest-{k}", f"check-{k}", f"memcheck-{k}", f"racecheck-{k}") if failed(n)]
        return "" if not bad else " [FAILED " + ", ".join(bad) + ": not counted]"

    # 1. row kernel vs copy bandwidth
    parts, best = [], None
    for k in kernels:
        t = last_json(os.path.join(work, f"time-{k}-16384.json"), ("gb_per_s",))
        if t and copy and t.get("status") == 0:
            r = t["gb_per_s"] / copy["gb_per_s"]
            if clean(k):
                best = r if best is None else max(best, r)
            parts.append(f"{k} {r * 100:.0f}% ({t['median_ms']:.2f} ms, {fmt_bw(t['gb_per_s'])}){correctness(k)}")
        else:
            parts.append(f"{k} not measured")
    measured = any("%" in x for x in parts)
    rows.append(("row kernel >= 85% of copy bandwidth", "; ".join(parts) + f"; copy {fmt_bw(copy['gb_per_s']) if copy else 'not measured'}",
                 ("FAIL" if measured else "n/a") if best is None else ("PASS" if best >= 0.85 else "MISS")))

    # 2. vs torch.compile
    base = last_json(os.path.join(work, "baselines.json")) or {}
    parts, best = [], None
    for k in kernels:
        t = last_json(os.path.join(work, f"time-{k}-4096.json"), ("median_ms",))
        if t and base.get("row_compile_ms") and t.get("status") == 0:
            r = base["row_compile_ms"] / t["median_ms"]
            if clean(k):
                best = r if best is None else max(best, r)
            parts.append(f"{k} {r:.1f}x ({t['median_ms']:.2f} ms){correctness(k)}")
        else:
            parts.append(f"{k} not measured")
    tc = f"torch.compile {base['row_compile_ms']:.2f} ms, eager {base.get('row_eager_ms', float('nan')):.2f} ms" if base.get("row_compile_ms") else "torch.compile not measured"
    measured = any("x (" in x for x in parts)
    rows.append((">= 3x torch.compile (4096 tokens)", "; ".join(parts) + "; " + tc,
                 ("FAIL" if measured else "n/a") if best is None else ("PASS" if best >= 3 else "MISS")))

    # 3. fused-linear vs its five GEMMs. fll_cuda_bench prints JSON lines: "what": "ad_fll_cuda" (ms_median),
    # "gemm5_chunked_cublas" (the same five GEMMs on its chunks), "memory" (peak_extra_bytes, unfused_bytes).
    fl = fll_lines(os.path.join(work, "fll-bench.log"))
    fll = fl.get("ad_fll_cuda")
    gemm_chunked = next((v for k, v in fl.items() if k.startswith("gemm")), None)
    mem = fl.get("memory")
    fll_state = status.get("fll-bench", {}).get("rc", "not run")
    fll_check_failed = failed("check-fll") and status["check-fll"]["rc"] != "3"  # 3: the library has no ad_fll_cuda
    fll_clean = ok("fll-selftest") and not failed("fll-memcheck") and not fll_check_failed
    fll_note = "" if fll_clean else (" [fll-selftest rc " + status.get("fll-selftest", {}).get("rc", "not run") + (", fll-memcheck failed" if failed("fll-memcheck") else "")
                                     + (", check-fll failed" if fll_check_failed else "") + ": not counted]")
    # the floor: the five full-size GEMMs through PyTorch (anchors 2.2), else the bench's own chunked cuBLAS GEMMs
    floor_ms, floor_txt = None, ""
    if base.get("five_gemm_ms"):
        floor_ms = base["five_gemm_ms"]
        floor_txt = f"five GEMMs {floor_ms:.2f} ms through PyTorch ({base.get('five_gemm_tflops', 0):.0f} TFLOP/s)"
    if gemm_chunked:
        floor_txt += ("; " if floor_txt else "") + f"its chunked cuBLAS GEMMs {gemm_chunked['ms_median']:.2f} ms"
        if floor_ms is None:
            floor_ms = gemm_chunked["ms_median"]
    if fll and floor_ms:
        r = fll["ms_median"] / floor_ms
        rows.append(("fused-linear within 1.3x of its five matmuls", f"{r:.2f}x ({fll['ms_median']:.2f} ms vs {floor_txt}){fll_note}",
                     ("PASS" if r <= 1.3 else "MISS") if fll_clean else "FAIL"))
    else:
        why = "fll_cuda_bench " + (fll_state if fll_state != "0" else "printed no ad_fll_cuda line")
        rows.append(("fused-linear within 1.3x of its five matmuls", why + "; " + (floor_txt or "five GEMMs not measured"), "n/a"))

    # 4. fused-linear peak working memory
    peak = mem.get("peak_extra_bytes") if mem else None
    unfused = mem.get("unfused_bytes", UNFUSED_BYTES) if mem else UNFUSED_BYTES
    eager = base.get("linear_eager_peak_extra_bytes")
    eager_txt = f"; eager PyTorch peak {eager * TOKENS / base.get('linear_tokens', 4096) / 1e9:.1f} GB scaled to {TOKENS} tokens" if eager else ""
    if peak is not None:
        r = peak / unfused
        rows.append(("fused-linear peak memory < 5% of unfused", f"{r * 100:.2f}% ({peak / 1e9:.3f} GB of {unfused / 1e9:.1f} GB){eager_txt}{fll_note}",
                     ("PASS" if r < 0.05 else "MISS") if fll_clean else "FAIL"))
    else:
        rows.append(("fused-linear peak memory < 5% of unfused", f"no memory line from fll_cuda_bench (unfused {unfused / 1e9:.1f} GB){eager_txt}", "n/a"))
    return rows, {"copy": copy, "baselines": base, "fll_bench": fl, "kernels": kernels,
                  "row": {k: {n: last_json(os.path.join(work, f"time-{k}-{n}.json")) for n in (16384, 4096)} for k in kernels},
                  "checks": {k: last_json(os.path.join(work, f"check-{k}.json")) for k in kernels}}


def table(rows):
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {r[2]:<5} {r[0]:<{w}}  {r[1]}" for r in rows)


def main(argv):
    dry = "--dry-run" in argv
    argv = [a for a in argv if a != "--dry-run"]
    commit, elapsed = "unknown", None
    if "--commit" in argv:
        i = argv.index("--commit"); commit = argv[i + 1]; del argv[i:i + 2]
    if "--elapsed" in argv:
        i = argv.index("--elapsed"); elapsed = int(argv[i + 1]); del argv[i:i + 2]
    if len(argv) != 2:
        print(__doc__)
        return 2
    work, results = argv
    st = steps(work)
    rows, meas = goals(work, st)
    if dry:
        print("[plan] goal table (values come from the run):")
        print(table(rows))
        return 0
    card = card_name(work)
    date = datetime.date.today().isoformat()
    base = os.path.join(results, f"verify-{date}-{slug(card)}-{commit.replace('-dirty', '')}")
    os.makedirs(results, exist_ok=True)
    doc = {"suite": "gpu-verify", "card": card, "date": date, "commit": commit, "elapsed_s": elapsed, "steps": st,
           "goals": [{"goal": g, "value": v, "verdict": r} for g, v, r in rows], "measurements": meas}
    presets = last_json(os.path.join(work, "presets.json"), ("summary",))  # CudaPresetsProbe (issue 4), bundle only
    if presets:
        doc["cudaPresets"] = presets
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    md = [f"# GPU verify on {card}", "", f"{date}, commit {commit}, {elapsed if elapsed is not None else '?'} s, `benchmarks/gpu/verify.sh`.", "",
          "| step | rc | s | timeout s | note |", "|---|---|---:|---:|---|"]
    md += [f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['timeout_s']} | {s['note']} |" for s in st]
    md += ["", "| goal | verdict | measured |", "|---|---|---|"] + [f"| {g} | {r} | {v} |" for g, v, r in rows]
    if presets:
        md += ["", f"JavaCPP CUDA presets ({presets.get('presets', '?')}, CudaPresetsProbe): {presets['summary']}"]
    md += ["", "Definitions: benchmarks/gpu/verify_report.py (docstring); how to read them: docs/profiling.md."]
    with open(base + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    with tarfile.open(base + ".logs.tar.gz", "w:gz") as t:
        for p in sorted(glob.glob(os.path.join(work, "logs", "*")) + glob.glob(os.path.join(work, "*.json")) + [os.path.join(work, "steps.tsv")]):
            if os.path.isfile(p) and os.path.getsize(p) < 50 << 20:
                t.add(p, arcname=os.path.relpath(p, work))
    print(f"\nverify: wrote {base}.json, .md, .logs.tar.gz")
    print("\nsteps:")
    for s in st:
        print(f"  {s['step']:<24} rc={s['rc']:<13} {s['seconds']:>4} s / {s['timeout_s']:>3} s  {s['note']}")
    if presets:
        print(f"\nJavaCPP CUDA presets ({presets.get('presets', '?')}): {presets['summary']}")
    print(f"\nissue 6 goals on {card} (commit {commit}):")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
