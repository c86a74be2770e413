#!/usr/bin/env python3
"""GPU checks and baselines for benchmarks/gpu/verify.sh, on the GPU box (PyTorch; no JDK).

  torch_bench.py check LIB OUT.json    fresh random inputs (seed from os.urandom, printed) through ad_fdl_cuda of
                                       LIB (ctypes) against a float64 PyTorch reference of the header's maths:
                                       every variant, f32/bf16/f16, odd B, T and V (1 .. 151936), random masks
                                       with an empty sequence, -inf vocabulary tails, gradient in f32 or the input
                                       dtype; every output poisoned with NaN first. The row kernel is the library's
                                       choice: run once per AD_CUDA_KERNEL value. Exit 1 on any failure.
  torch_bench.py check-cpu LIBCPU OUT.json   the same cases through ad_fdl_cpu on the CPU (tests the checker itself
                                       on a machine without a GPU; libaligndistil_cpu.so)
  torch_bench.py check-fll LIB OUT.json   the fused-linear loss ad_fll_cuda (when LIB has it; exit 3 otherwise) on
                                       fresh random hidden states and heads against a float64 reference (logits
                                       rounded to the hidden dtype as the kernel keeps them, the row loss, dXs =
                                       G Ws, dWs += G^T Xs from a nonzero start): odd N, H, V, several chunks,
                                       teachers as hidden + head or strided logits, f32 and bf16
  torch_bench.py check-stream LIB OUT.json   the Java training path's use of the kernel (issue 13), from Python: on a
                                       non-default stream made current (torch.cuda.stream), the student's logits
                                       come from a matmul with a trainable head (read in place), the
                                       teachers' from matmuls under inference mode, ad_fdl_cuda runs on
                                       torch.cuda.current_stream().cuda_stream with data_ptr() pointers, and the
                                       backward of its gradient reaches the head; all of it under
                                       torch.cuda.set_sync_debug_mode("error") (any host copy or synchronising call
                                       raises). Then, and only then, the loss, gradient and head gradient are
                                       compared with a float64 reference (bounds of check). f32 and bf16.
  torch_bench.py baselines OUT.json    PyTorch eager and torch.compile, forward + backward, bf16 inputs with f32
                                       softmaxes (the official code path), at 4096 tokens: the row loss on logits
                                       and the fused-linear loss (H=1536, V=151936, student hidden + lm_head
                                       trainable, teachers' logits from their own hidden states and heads); the
                                       five bf16 GEMMs of the fused-linear loss at 16384 tokens (its floor); eager
                                       peak memory. Each part is independent: a failure is recorded and the rest runs.

Bounds (check), as native/tests/fdl_cuda_selftest.cu: tol = 1e-5 when every input is f32, 1e-4 (10x) when one is
bf16/f16 (their rounding of the inputs is the same on both sides, so it is the f32 arithmetic that is bounded).
Scalars (loss, weight, token_loss, metrics): |x - ref| <= tol * max(1, |ref|). Gradient rows:
||g - ref||_2 <= (10 tol + u_out) ||ref||_2 + 1e-30, u_out = unit roundoff of the gradient dtype (0 f32, 2^-8 bf16,
2^-11 f16). Rows not selected: exactly 0.
"""
import ctypes
import json
import os
import sys
import time

import torch

F32, BF16, F16 = 0, 1, 2
VARIANTS = ["aligndistil", "contrast", "adaptive", "theorem1", "gkd"]
TORCH_DT = {F32: torch.float32, BF16: torch.bfloat16, F16: torch.float16}
DT_NAME = {F32: "f32", BF16: "bf16", F16: "f16"}
U_OUT = {F32: 0.0, BF16: 2.0 ** -8, F16: 2.0 ** -11}


class Problem(ctypes.Structure):
    """ad_fdl_problem of native/include/aligndistil.h (every field 8 bytes)."""
    _fields_ = [("batch", ctypes.c_int64), ("seq", ctypes.c_int64), ("vocab", ctypes.c_int64)] + [
        f for name in ("student", "dpo", "second") for f in (
            (name, ctypes.c_void_p), (name + "_dtype", ctypes.c_int64), (name + "_stride_b", ctypes.c_int64), (name + "_stride_t", ctypes.c_int64))
    ] + [("mask", ctypes.c_void_p), ("mask_stride_b", ctypes.c_int64), ("mask_stride_t", ctypes.c_int64),
         ("grad", ctypes.c_void_p), ("grad_dtype", ctypes.c_int64), ("grad_stride_b", ctypes.c_int64), ("grad_stride_t", ctypes.c_int64),
         ("weight", ctypes.c_void_p), ("token_loss", ctypes.c_void_p), ("metrics", ctypes.c_void_p),
         ("variant", ctypes.c_int64), ("length_norm", ctypes.c_int64),
         ("beta", ctypes.c_double), ("beta2", ctypes.c_double), ("epsilon", ctypes.c_double),
         ("temperature", ctypes.c_double), ("student_temperature", ctypes.c_double), ("seq_divisor", ctypes.c_double)]


def load(lib):
    L = ctypes.CDLL(lib)
    L.ad_fdl_cuda.argtypes = [ctypes.POINTER(Problem), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    L.ad_fdl_cuda_workspace_bytes.argtypes = [ctypes.POINTER(Problem), ctypes.POINTER(ctypes.c_int64)]
    L.ad_cuda_last_error.restype = ctypes.c_char_p
    return L


def load_cpu(lib):
    L = ctypes.CDLL(lib)
    L.ad_fdl_cpu.argtypes = [ctypes.POINTER(Problem), ctypes.POINTER(Status), ctypes.c_int32]
    return L


def reference(zs, zd, z2, mask, variant, beta, beta2, eps, T, Ts, length_norm, seq_divisor):
    """The header's maths in float64, per row; columns that are -inf in all three inputs are outside the vocabulary."""
    gkd = variant == "gkd"
    zs, zd = zs.double(), zd.double()
    z2 = zd if gkd else z2.double()  # gkd never reads a second teacher: its metrics [0] and [2] are 0
    valid = ~(torch.isinf(zs) & torch.isinf(zd) & torch.isinf(z2))
    ninf = torch.tensor(float("-inf"), dtype=torch.float64, device=zs.device)
    def lsm(z):
        return torch.log_softmax(torch.where(valid, z, ninf), -1)
    logp, logd, log2 = lsm(zs / Ts), lsm(zd), lsm(z2)
    p, pd, p2 = logp.exp(), logd.exp(), log2.exp()
    tvd = (pd - p2).abs().sum(-1)
    if variant in ("aligndistil", "adaptive"):
        alpha = beta2 * tvd + eps
    elif variant in ("contrast", "theorem1"):
        alpha = torch.full_like(tvd, beta / beta2)
    else:
        alpha = torch.ones_like(tvd)
    a = alpha.unsqueeze(-1)
    zd0, z20 = torch.where(valid, zd, 0.0), torch.where(valid, z2, 0.0)
    if variant in ("aligndistil", "contrast"):
        zstar = zd0 + a * (zd0 - z20)
    elif variant in ("adaptive", "theorem1"):
        zstar = a * zd0 + (1 - a) * z20
    else:
        zstar = zd0
    logq = lsm(zstar / (1.0 if variant == "gkd" else T))
    def kl(lp_, lq_):
        return torch.where(valid, p * (lp_ - lq_), 0.0).sum(-1)
    K = kl(logp, logq)
    coef = beta / alpha if variant in ("aligndistil", "adaptive") else (torch.full_like(K, beta2) if variant in ("contrast", "theorem1") else torch.ones_like(K))
    sel = mask.bool()
    n_b = sel.sum(-1).double()
    keep = n_b > 0
    N = seq_divisor if seq_divisor > 0 else float(keep.sum().item())
    token = torch.where(sel, coef * K, 0.0)
    per_seq = token.sum(-1) / (n_b.clamp(min=1) if length_norm else 1.0)
    loss = per_seq[keep].sum() / N if N > 0 else torch.zeros((), dtype=torch.float64, device=zs.device)
    c = coef * ((1.0 / n_b.clamp(min=1)).unsqueeze(-1) if length_norm else 1.0) / (N if N > 0 else 1.0)
    grad = torch.where(valid & sel.unsqueeze(-1), (c / Ts).unsqueeze(-1) * p * (logp - logq - K.unsqueeze(-1)), 0.0)
    metrics = torch.stack([torch.where(valid, p * beta * (logd - log2), 0.0).sum(-1), kl(logp, logd), kl(logp, log2)], -1)
    if gkd:
        metrics[..., 0] = 0
        metrics[..., 2] = 0
    w = torch.where(sel, alpha, 0.0)
    return loss, w, token, torch.where(sel.unsqueeze(-1), metrics, 0.0), grad


def cases():
    """Odd shapes: every variant x dtype once, then the large-V cases."""
    out = []
    vs = [1, 7, 129, 4099, 50257]
    for vi, v in enumerate(VARIANTS):
        for di, dt in enumerate((F32, BF16, F16)):
            out.append(dict(variant=v, dt=dt, gdt=dt if (vi + di) % 2 else F32, B=3, T=5, V=vs[(vi + di) % 5],
                            length_norm=(vi + di) % 2 == 0, seq_divisor=0.0 if (vi + di) % 3 else 7.0))
    out.append(dict(variant="aligndistil", dt=BF16, gdt=BF16, B=2, T=3, V=151936, length_norm=True, seq_divisor=0.0))
    out.append(dict(variant="aligndistil", dt=F32, gdt=F32, B=1, T=5, V=151936, length_norm=True, seq_divisor=0.0))
    out.append(dict(variant="contrast", dt=BF16, gdt=F32, B=3, T=1, V=151935, length_norm=False, seq_divisor=128.0))
    return out


def unravel(k, shape):
    """torch.unravel_index for any torch version: the index tuple of flat index k."""
    out = []
    for n in reversed(shape):
        out.append(int(k % n))
        k = k // n
    return tuple(reversed(out))


class Status(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int64), ("token", ctypes.c_int64), ("column", ctypes.c_int64), ("loss", ctypes.c_double),
                ("selected_rows", ctypes.c_int64), ("sequences", ctypes.c_int64)]


def run_case(L, c, gen, dev):
    B, T, V, dt, gdt = c["B"], c["T"], c["V"], c["dt"], c["gdt"]
    base = 3 * torch.randn(B, T, V, generator=gen, device=dev)
    zs = (base + 0.7 * torch.randn(B, T, V, generator=gen, device=dev)).to(TORCH_DT[dt])
    zd = (base + 0.5 * torch.randn(B, T, V, generator=gen, device=dev)).to(TORCH_DT[dt])
    z2 = (base + 0.5 * torch.randn(B, T, V, generator=gen, device=dev)).to(TORCH_DT[dt])
    tail = V // 10 if V > 7 else 0
    if tail:  # a -inf vocabulary tail in all three inputs (padding columns of a real lm_head)
        for z in (zs, zd, z2):
            z[..., V - tail:] = float("-inf")
    mask = (torch.rand(B, T, generator=gen, device=dev) < 0.7).to(torch.uint8)
    if B > 1:
        mask[1] = 0  # an empty sequence: skipped, not counted
    mask[0, 0] = 1
    grad = torch.full((B, T, V), float("nan"), dtype=TORCH_DT[gdt], device=dev)
    weight = torch.full((B, T), float("nan"), dtype=torch.float32, device=dev)
    token = torch.full((B, T), float("nan"), dtype=torch.float32, device=dev)
    metrics = torch.full((B, T, 3), float("nan"), dtype=torch.float32, device=dev)
    beta, beta2, eps = 0.1, 10.0, 1e-3
    p = Problem()
    p.batch, p.seq, p.vocab = B, T, V
    for name, z in (("student", zs), ("dpo", zd), ("second", z2)):
        setattr(p, name, z.data_ptr()); setattr(p, name + "_dtype", dt)
        setattr(p, name + "_stride_b", T * V); setattr(p, name + "_stride_t", V)
    if c["variant"] == "gkd":
        p.second = None  # "unused by gkd (may be NULL)"
    p.mask, p.mask_stride_b, p.mask_stride_t = mask.data_ptr(), T, 1
    p.grad, p.grad_dtype, p.grad_stride_b, p.grad_stride_t = grad.data_ptr(), gdt, T * V, V
    p.weight, p.token_loss, p.metrics = weight.data_ptr(), token.data_ptr(), metrics.data_ptr()
    p.variant, p.length_norm = VARIANTS.index(c["variant"]), int(c["length_norm"])
    p.beta, p.beta2, p.epsilon, p.temperature, p.student_temperature, p.seq_divisor = beta, beta2, eps, 1.0, 1.0, c["seq_divisor"]
    problems = []
    if dev == "cpu":  # the checker's own test on the build machine: the same cases through ad_fdl_cpu
        stt = Status()
        rc = L.ad_fdl_cpu(ctypes.byref(p), ctypes.byref(stt), 1)
        if rc != 0:
            return [f"ad_fdl_cpu returned {rc}, status code {stt.code}"]
        dloss = torch.tensor([stt.loss], dtype=torch.float64)
    else:
        wsb = ctypes.c_int64(0)
        assert L.ad_fdl_cuda_workspace_bytes(ctypes.byref(p), ctypes.byref(wsb)) == 0, L.ad_cuda_last_error()
        ws = torch.empty(max(wsb.value, 256), dtype=torch.uint8, device=dev)
        dloss = torch.full((1,), float("nan"), dtype=torch.float64, device=dev)
        dstatus = torch.full((4,), -7, dtype=torch.int64, device=dev)
        torch.cuda.synchronize()
        rc = L.ad_fdl_cuda(ctypes.byref(p), ws.data_ptr(), ws.numel(), dloss.data_ptr(), dstatus.data_ptr(), None)
        torch.cuda.synchronize()
        if rc != 0 or dstatus[0].item() != 0:
            return [f"returned {rc}, status {dstatus.tolist()}: {L.ad_cuda_last_error().decode()}"]
    loss, w_ref, tl_ref, m_ref, g_ref = reference(zs, zd, z2, mask, c["variant"], beta, beta2, eps, 1.0, 1.0, c["length_norm"], c["seq_divisor"])
    tol = 1e-5 if dt == F32 else 1e-4
    def scal(name, got, ref):
        got, ref = got.double(), ref.double()
        err = (got - ref).abs() / ref.abs().clamp(min=1.0)
        err = torch.where(torch.isnan(got), torch.full_like(err, float("inf")), err)
        if err.numel() and err.max().item() > tol:
            worst = torch.topk(err.flatten(), min(3, err.numel())).indices
            idx = [unravel(int(k), tuple(err.shape)) for k in worst]
            problems.append(f"{name}: max error {err.max().item():.3g} > {tol:g}; worst at " +
                            ", ".join(f"{i} got {got[i].item():.9g} ref {ref[i].item():.9g}" for i in idx))
    scal("loss", dloss, loss.reshape(1))
    scal("weight", weight, w_ref)
    scal("token_loss", token, tl_ref)
    scal("metrics", metrics, m_ref)
    g, gr = grad.double(), g_ref
    sel = mask.bool()
    if torch.isnan(g).any():
        k = torch.nonzero(torch.isnan(g))[0].tolist()
        problems.append(f"grad: NaN left from the poison at {k} ({int(torch.isnan(g).sum())} elements)")
    unsel = g[~sel]
    if unsel.numel() and (unsel != 0).any():
        problems.append(f"grad: {(unsel != 0).sum().item()} nonzero elements in rows not selected")
    bound_f = 10 * tol + U_OUT[gdt]
    num = (g - gr).norm(dim=-1)
    den = gr.norm(dim=-1)
    ratio = torch.where(sel, num / (bound_f * den + 1e-30), 0.0)
    if ratio.max().item() > 1:
        b, t = unravel(int(torch.argmax(ratio)), tuple(ratio.shape))
        row = (g[b, t] - gr[b, t]).abs()
        v = int(torch.argmax(row))
        problems.append(f"grad row ({int(b)},{int(t)}): ||g-ref||/||ref|| = {(num[b, t] / den[b, t]).item():.3g} > {bound_f:.3g}; "
                        f"worst column {v}: got {g[b, t, v].item():.9g} ref {gr[b, t, v].item():.9g}")
    return problems


def check(lib, out, dev="cuda"):
    L = load(lib) if dev == "cuda" else load_cpu(lib)
    seed = int(os.environ["AD_CHECK_SEED"]) if "AD_CHECK_SEED" in os.environ else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    kernel = os.environ.get("AD_CUDA_KERNEL", "(library default)")
    print(f"torch_bench check: kernel {kernel}, seed {seed} (rerun with the same inputs: AD_CHECK_SEED={seed})", flush=True)
    results, fails = [], 0
    for c in cases():
        name = f"{c['variant']} {DT_NAME[c['dt']]} B={c['B']} T={c['T']} V={c['V']} grad {DT_NAME[c['gdt']]}"
        try:
            probs = run_case(L, c, gen, dev)
        except Exception as e:  # noqa: BLE001 - report and go on
            probs = [f"exception {type(e).__name__}: {e}"]
        fails += bool(probs)
        results.append({"case": name, "ok": not probs, "problems": probs})
        print(("  ok    " if not probs else "  FAIL  ") + name + ("" if not probs else "\n        " + "\n        ".join(probs)), flush=True)
    res = {"kernel": kernel, "seed": seed, "cases": len(results), "failures": fails, "results": results,
           "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (ad_fdl_cpu)"}
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"torch_bench check: {len(results) - fails}/{len(results)} cases passed (kernel {kernel})")
    sys.exit(1 if fails else 0)


def official_loss(zs, zd, zr, beta=0.1, beta2=10.0):
    """The official code path (spec 2.4 + 3.3), every row selected, length-normalised, in the dtype of zs."""
    pd, pr = torch.softmax(zd, -1), torch.softmax(zr, -1)
    alpha = beta2 * (pd - pr).abs().sum(-1) + 1e-3
    zstar = alpha.unsqueeze(-1) * (zd - zr) + zd
    logq = torch.log_softmax(zstar, -1)
    logp = torch.log_softmax(zs, -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (beta / alpha * kl).mean(-1).mean()


def row_step(zs, zd, zr):
    return official_loss(zs.float(), zd.float(), zr.float())


def linear_step(hs, ws, hd, wd, hr, wr):
    zs = hs @ ws.t()
    with torch.no_grad():
        zd, zr = hd @ wd.t(), hr @ wr.t()
    return official_loss(zs.float().unsqueeze(0), zd.float().unsqueeze(0), zr.float().unsqueeze(0))


def timed(fn, reps=10, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


def baselines(out):
    res = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "errors": {}}
    def save():
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
    V, H = 151936, 1536
    torch.manual_seed(1)

    def part(name, fn):
        t0 = time.time()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one part failing must not stop the others
            res["errors"][name] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"torch_bench baselines: {name} failed: {res['errors'][name]}", flush=True)
        torch.cuda.empty_cache()
        print(f"torch_bench baselines: {name} done in {time.time() - t0:.1f} s", flush=True)
        save()

    def row():
        n = 4096
        zs = torch.randn(1, n, V, device="cuda").bfloat16().requires_grad_(True)
        zd, zr = torch.randn(1, n, V, device="cuda").bfloat16(), torch.randn(1, n, V, device="cuda").bfloat16()
        for name, f in (("eager", row_step), ("compile", torch.compile(row_step))):
            def step():
                zs.grad = None
                f(zs, zd, zr).backward()
            res[f"row_{name}_ms"] = timed(step)
        res["row_tokens"] = n

    def linear():
        n = 4096
        hs = (torch.randn(n, H, device="cuda") * 0.5).bfloat16().requires_grad_(True)
        ws = (torch.randn(V, H, device="cuda") * 0.05).bfloat16().requires_grad_(True)
        hd, hr = (torch.randn(n, H, device="cuda") * 0.5).bfloat16(), (torch.randn(n, H, device="cuda") * 0.5).bfloat16()
        wd, wr = (torch.randn(V, H, device="cuda") * 0.05).bfloat16(), (torch.randn(V, H, device="cuda") * 0.05).bfloat16()
        for name, f in (("eager", linear_step), ("compile", torch.compile(linear_step))):
            def step():
                hs.grad = ws.grad = None
                f(hs, ws, hd, wd, hr, wr).backward()
            res[f"linear_{name}_ms"] = timed(step, reps=5, warm=2)
            if name == "eager":
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                step()
                torch.cuda.synchronize()
                res["linear_eager_peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
        res["linear_tokens"] = n

    def gemms():
        n = 16384
        a = torch.randn(n, H, device="cuda").bfloat16()      # hidden states
        w = torch.randn(V, H, device="cuda").bfloat16()      # lm_head
        g = torch.randn(n, V, device="cuda").bfloat16()      # d loss / d logits
        shapes = [("logits (x3)", lambda: a @ w.t()), ("grad hidden", lambda: g @ w), ("grad weight", lambda: g.t() @ a)]
        tot = 0.0
        for name, f in shapes:
            ms = timed(f, reps=10, warm=3)
            res[f"gemm_{name}_ms"] = ms
            tot += ms * (3 if name.startswith("logits") else 1)
        res["five_gemm_ms"] = tot
        res["five_gemm_tflops"] = 5 * 2.0 * n * H * V / (tot * 1e-3) / 1e12
        res["gemm_tokens"] = n

    part("row", row)
    part("linear", linear)
    part("gemms", gemms)
    res.update({"vocab": V, "hidden": H, "dtype": "bf16"})
    save()
    print("torch_bench baselines: " + json.dumps({k: v for k, v in res.items() if k != "errors"}))


# ---------------------------------------------------------------------------------------------------------------
# The fused-linear loss (ad_fll_cuda, native/include/aligndistil.h), when the library has it


class FllProblem(ctypes.Structure):
    """ad_fll_problem of native/include/aligndistil.h (every field 8 bytes)."""
    _fields_ = [(n, ctypes.c_int64) for n in ("batch", "seq", "hidden", "vocab", "dtype")] + [
        ("student_hidden", ctypes.c_void_p), ("student_head", ctypes.c_void_p)] + [
        f for t in ("dpo", "second") for f in (
            (t + "_hidden", ctypes.c_void_p), (t + "_head", ctypes.c_void_p), (t + "_logits", ctypes.c_void_p),
            (t + "_logits_dtype", ctypes.c_int64), (t + "_logits_stride", ctypes.c_int64))] + [
        ("mask", ctypes.c_void_p), ("mask_stride_b", ctypes.c_int64), ("mask_stride_t", ctypes.c_int64),
        ("d_student_hidden", ctypes.c_void_p), ("d_student_head", ctypes.c_void_p),
        ("weight", ctypes.c_void_p), ("token_loss", ctypes.c_void_p),
        ("variant", ctypes.c_int64), ("length_norm", ctypes.c_int64)] + [
        (n, ctypes.c_double) for n in ("beta", "beta2", "epsilon", "temperature", "student_temperature", "seq_divisor")] + [
        ("chunk_tokens", ctypes.c_int64)]


def fll_reference(xs, ws, zd, z2, mask, variant, length_norm, seq_divisor, dt):
    """float64: logits zs = Xs Ws^T rounded to the hidden dtype (the kernel keeps chunk logits in it), the row
    loss of `reference`, then dXs = G Ws and dWs = G^T Xs from the float64 G."""
    B, T = mask.shape
    zs = (xs.double() @ ws.double().t()).to(TORCH_DT[dt]).double()
    V = ws.shape[0]
    loss, w, tl, _, g = reference(zs.reshape(B, T, V), zd.reshape(B, T, V), z2.reshape(B, T, V), mask, variant,
                                  0.1, 10.0, 1e-3, 1.0, 1.0, length_norm, seq_divisor)
    G = g.reshape(B * T, V)
    return loss, w.reshape(-1), tl.reshape(-1), G @ ws.double(), G.t() @ xs.double()


def fll_cases():
    """Odd N, H and V; chunks smaller than N (several chunks, a partial last one); teachers as hidden + head or as
    strided logits; f32 (tight bounds) and bf16 (loose bounds: logit rounding flips, G in bf16)."""
    return [dict(dt=F32, B=3, T=7, H=97, V=1031, chunk=8, variant="aligndistil", teachers="hidden", length_norm=True, seq_divisor=0.0),
            dict(dt=F32, B=2, T=5, H=64, V=4099, chunk=3, variant="contrast", teachers="logits", length_norm=False, seq_divisor=4.0),
            dict(dt=F32, B=1, T=9, H=33, V=7, chunk=0, variant="gkd", teachers="hidden", length_norm=True, seq_divisor=0.0),
            dict(dt=BF16, B=4, T=33, H=256, V=50257, chunk=40, variant="aligndistil", teachers="hidden", length_norm=True, seq_divisor=0.0),
            dict(dt=BF16, B=2, T=16, H=1536, V=151936, chunk=0, variant="aligndistil", teachers="hidden", length_norm=True, seq_divisor=0.0)]


def run_fll_case(L, c, gen, dev):
    B, T, H, V, dt = c["B"], c["T"], c["H"], c["V"], c["dt"]
    N, td = B * T, TORCH_DT[c["dt"]]
    gkd = c["variant"] == "gkd"
    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, device=dev)).to(td)
    # logits of a few units, as a trained model's: |z| ~ sqrt(H) * 0.5 * (2 / sqrt(H))
    xs, xd, x2 = rnd(N, H, scale=0.5), rnd(N, H, scale=0.5), rnd(N, H, scale=0.5)
    ws = rnd(V, H, scale=2 / H ** 0.5)
    wd = (ws.float() + rnd(V, H, scale=0.5 / H ** 0.5).float()).to(td)
    w2 = (ws.float() + rnd(V, H, scale=0.5 / H ** 0.5).float()).to(td)
    mask = (torch.rand(B, T, generator=gen, device=dev) < 0.75).to(torch.uint8)
    if B > 1:
        mask[1] = 0
    mask[0, 0] = 1
    p = FllProblem()
    p.batch, p.seq, p.hidden, p.vocab, p.dtype = B, T, H, V, dt
    p.student_hidden, p.student_head = xs.data_ptr(), ws.data_ptr()
    keep = []
    if c["teachers"] == "hidden":
        zd = (xd.double() @ wd.double().t()).to(td).double()
        z2 = (x2.double() @ w2.double().t()).to(td).double()
        p.dpo_hidden, p.dpo_head = xd.data_ptr(), wd.data_ptr()
        if not gkd:
            p.second_hidden, p.second_head = x2.data_ptr(), w2.data_ptr()
    else:  # strided bf16 logits, V + 5 apart
        zdl = torch.full((N, V + 5), float("nan"), dtype=torch.bfloat16, device=dev)
        z2l = torch.full((N, V + 5), float("nan"), dtype=torch.bfloat16, device=dev)
        zdl[:, :V] = (xd.double() @ wd.double().t()).bfloat16()
        z2l[:, :V] = (x2.double() @ w2.double().t()).bfloat16()
        keep += [zdl, z2l]
        zd, z2 = zdl[:, :V].double(), z2l[:, :V].double()
        p.dpo_logits, p.dpo_logits_dtype, p.dpo_logits_stride = zdl.data_ptr(), BF16, V + 5
        if not gkd:
            p.second_logits, p.second_logits_dtype, p.second_logits_stride = z2l.data_ptr(), BF16, V + 5
    p.mask, p.mask_stride_b, p.mask_stride_t = mask.data_ptr(), T, 1
    dxs = torch.full((N, H), float("nan"), dtype=td, device=dev)
    dws0 = torch.randn(V, H, generator=gen, device=dev) * 1e-3  # dWs accumulates: start from nonzero values
    dws = dws0.clone()
    weight = torch.full((N,), float("nan"), dtype=torch.float32, device=dev)
    token = torch.full((N,), float("nan"), dtype=torch.float32, device=dev)
    p.d_student_hidden, p.d_student_head, p.weight, p.token_loss = dxs.data_ptr(), dws.data_ptr(), weight.data_ptr(), token.data_ptr()
    p.variant, p.length_norm = VARIANTS.index(c["variant"]), int(c["length_norm"])
    p.beta, p.beta2, p.epsilon, p.temperature, p.student_temperature, p.seq_divisor = 0.1, 10.0, 1e-3, 1.0, 1.0, c["seq_divisor"]
    p.chunk_tokens = c["chunk"]
    wsb = ctypes.c_int64(0)
    rc = L.ad_fll_cuda_workspace_bytes(ctypes.byref(p), ctypes.byref(wsb))
    if rc != 0:
        return [f"ad_fll_cuda_workspace_bytes returned {rc}: {L.ad_cuda_last_error().decode()}"]
    ws_buf = torch.empty(max(wsb.value, 256), dtype=torch.uint8, device=dev)
    dloss = torch.full((1,), float("nan"), dtype=torch.float64, device=dev)
    dstatus = torch.full((4,), -7, dtype=torch.int64, device=dev)
    torch.cuda.synchronize()
    rc = L.ad_fll_cuda(ctypes.byref(p), ws_buf.data_ptr(), ws_buf.numel(), dloss.data_ptr(), dstatus.data_ptr(), None)
    torch.cuda.synchronize()
    if rc != 0 or dstatus[0].item() != 0:
        return [f"ad_fll_cuda returned {rc}, status {dstatus.tolist()}: {L.ad_cuda_last_error().decode()}"]
    loss, w_ref, tl_ref, dx_ref, dw_ref = fll_reference(xs, ws, zd, z2, mask, c["variant"], c["length_norm"], c["seq_divisor"], dt)
    # Bounds. f32: the GEMMs accumulate H (logits, dXs) or N (dWs) f32 products, about sqrt(K) 2^-24 relative
    # each, and z* amplifies logit errors by up to 1 + alpha <= 21: 1e-4 on scalars is the fused loss's f32 bound
    # x10, 1e-3 relative L2 on dXs and dWs x10 again. bf16: the kernel rounds each f32-accumulated logit to bf16
    # where the reference rounds the exact one, so a logit near a rounding boundary can differ by one bf16 ulp
    # (2^-7 relative); G is stored in bf16 (2^-8): 2e-2 on scalars and 3 x 2^-8 = 1.2e-2 relative L2 on the
    # gradients still catch any indexing or chunking error (those are O(1)).
    tol_s, tol_g = (1e-4, 1e-3) if dt == F32 else (2e-2, 3 * 2.0 ** -8)
    problems = []
    def scal(name, got, ref):
        got, ref = got.double(), ref.double()
        err = (got - ref).abs() / ref.abs().clamp(min=1.0)
        err = torch.where(torch.isnan(got), torch.full_like(err, float("inf")), err)
        if err.max().item() > tol_s:
            k = int(torch.argmax(err))
            problems.append(f"{name}: max error {err.max().item():.3g} > {tol_s:g} at {k}: got {got.flatten()[k].item():.9g} ref {ref.flatten()[k].item():.9g}")
    scal("loss", dloss, loss.reshape(1))
    scal("weight", weight, w_ref)
    scal("token_loss", token, tl_ref)
    dx = dxs.double()
    sel = mask.reshape(-1).bool()
    if torch.isnan(dx).any():
        problems.append(f"dXs: NaN left from the poison in row {int(torch.nonzero(torch.isnan(dx))[0, 0])}")
    if (~sel).any() and (dx[~sel] != 0).any():
        problems.append("dXs: rows not selected are not 0")
    rel = ((dx - dx_ref)[sel].norm() / (dx_ref[sel].norm() + 1e-30)).item()
    if not rel <= tol_g:
        r = int(torch.argmax((dx - dx_ref).abs().amax(-1)))
        problems.append(f"dXs: relative L2 {rel:.3g} > {tol_g:.3g}; worst row {r}")
    dwd = dws.double() - dws0.double()
    relw = ((dwd - dw_ref).norm() / (dw_ref.norm() + 1e-30)).item()
    if not relw <= tol_g:
        v = int(torch.argmax((dwd - dw_ref).abs().amax(-1)))
        problems.append(f"dWs (accumulated minus its initial value): relative L2 {relw:.3g} > {tol_g:.3g}; worst vocabulary row {v}")
    return problems


def check_fll(lib, out):
    dev = "cuda"
    L = ctypes.CDLL(lib)
    res = {"gpu": torch.cuda.get_device_name(0)}
    if not hasattr(L, "ad_fll_cuda"):
        res["skipped"] = "this libaligndistil_cuda has no ad_fll_cuda (not built yet)"
        print("torch_bench check-fll: " + res["skipped"])
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
        sys.exit(3)
    L.ad_fll_cuda.argtypes = [ctypes.POINTER(FllProblem), ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    L.ad_fll_cuda_workspace_bytes.argtypes = [ctypes.POINTER(FllProblem), ctypes.POINTER(ctypes.c_int64)]
    L.ad_cuda_last_error.restype = ctypes.c_char_p
    seed = int(os.environ["AD_CHECK_SEED"]) if "AD_CHECK_SEED" in os.environ else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    print(f"torch_bench check-fll: seed {seed} (rerun with the same inputs: AD_CHECK_SEED={seed})", flush=True)
    results, fails = [], 0
    for c in fll_cases():
        name = f"{c['variant']} {DT_NAME[c['dt']]} N={c['B'] * c['T']} H={c['H']} V={c['V']} chunk={c['chunk'] or 'auto'} teachers as {c['teachers']}"
        try:
            probs = run_fll_case(L, c, gen, dev)
        except Exception as e:  # noqa: BLE001 - report and go on
            probs = [f"exception {type(e).__name__}: {e}"]
        fails += bool(probs)
        results.append({"case": name, "ok": not probs, "problems": probs})
        print(("  ok    " if not probs else "  FAIL  ") + name + ("" if not probs else "\n        " + "\n        ".join(probs)), flush=True)
    res.update({"seed": seed, "cases": len(results), "failures": fails, "results": results})
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"torch_bench check-fll: {len(results) - fails}/{len(results)} cases passed")
    sys.exit(1 if fails else 0)


def stream_case(L, dt, gen, N=2, T=384, H=1024, V=32000, variant="aligndistil"):
    """One case of check-stream: see the module doc. Returns the list of problems."""
    dev = "cuda"
    tdt = TORCH_DT[dt]
    # inputs made on the default stream, then the work on a side stream that is current (as libtorch's current stream is
    # for the Java thread): nothing below may leave that stream or touch the host
    xs = torch.randn(N * T, H, generator=gen, device=dev).to(tdt)
    wd = torch.randn(V, H, generator=gen, device=dev).to(tdt) / H ** 0.5
    w2 = (wd.float() + 0.3 * torch.randn(V, H, generator=gen, device=dev) / H ** 0.5).to(tdt)
    ws = (wd.float() + 0.3 * torch.randn(V, H, generator=gen, device=dev) / H ** 0.5).to(tdt).requires_grad_(True)
    mask = (torch.rand(N, T, generator=gen, device=dev) < 0.8).to(torch.uint8)
    mask[0, 0] = 1
    problems = []
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    p = Problem()
    with torch.cuda.stream(side):
        wsb = ctypes.c_int64(0)
        p.batch, p.seq, p.vocab = N, T, V
        for name in ("student", "dpo", "second"):
            setattr(p, name + "_dtype", dt); setattr(p, name + "_stride_b", T * V); setattr(p, name + "_stride_t", V)
        p.grad_dtype, p.grad_stride_b, p.grad_stride_t = dt, T * V, V
        p.mask_stride_b, p.mask_stride_t = T, 1
        p.variant, p.length_norm = VARIANTS.index(variant), 1
        p.beta, p.beta2, p.epsilon, p.temperature, p.student_temperature, p.seq_divisor = 0.1, 10.0, 1e-3, 1.0, 1.0, 0.0
        torch.cuda.set_sync_debug_mode("error")
        try:
            zs = torch.mm(xs, ws.t()).view(N, T, V)                                  # the student's logits, with a graph
            with torch.inference_mode():
                zd = torch.mm(xs, wd.t()).view(N, T, V)
                z2 = torch.mm(xs, w2.t()).view(N, T, V)
            grad = torch.zeros(N, T, V, dtype=tdt, device=dev)
            dloss = torch.full((1,), float("nan"), dtype=torch.float64, device=dev)
            dstatus = torch.full((4,), -7, dtype=torch.int64, device=dev)
            weight = torch.empty(N, T, dtype=torch.float32, device=dev)
            token = torch.empty(N, T, dtype=torch.float32, device=dev)
            metrics = torch.empty(N, T, 3, dtype=torch.float32, device=dev)
            p.student, p.dpo, p.second = zs.data_ptr(), zd.data_ptr(), z2.data_ptr()   # read in place, as Tensors.deviceSegment
            p.mask, p.grad = mask.data_ptr(), grad.data_ptr()
            p.weight, p.token_loss, p.metrics = weight.data_ptr(), token.data_ptr(), metrics.data_ptr()
            assert L.ad_fdl_cuda_workspace_bytes(ctypes.byref(p), ctypes.byref(wsb)) == 0, L.ad_cuda_last_error()
            ws_buf = torch.empty(max(wsb.value, 256), dtype=torch.uint8, device=dev)
            stream = torch.cuda.current_stream().cuda_stream
            assert stream == side.cuda_stream and stream != 0, "the side stream is current"
            rc = L.ad_fdl_cuda(ctypes.byref(p), ws_buf.data_ptr(), ws_buf.numel(), dloss.data_ptr(), dstatus.data_ptr(), ctypes.c_void_p(stream))
            zs.backward(grad)                                                        # queued after the kernel, same stream
        finally:
            torch.cuda.set_sync_debug_mode(0)
        side.synchronize()                                                           # = FusedDistillLoss.Batch.synchronize(stream)
    if rc != 0 or dstatus[0].item() != 0:
        return [f"ad_fdl_cuda returned {rc}, status {dstatus.tolist()}: {L.ad_cuda_last_error().decode()}"]
    with torch.no_grad():
        loss, w_ref, tl_ref, m_ref, g_ref = reference(zs.detach(), zd, z2, mask, variant, 0.1, 10.0, 1e-3, 1.0, 1.0, True, 0.0)
    tol = 1e-5 if dt == F32 else 1e-4
    err = abs(dloss.item() - loss.item()) / max(1.0, abs(loss.item()))
    if not err <= tol:
        problems.append(f"loss {dloss.item():.12g} vs float64 {loss.item():.12g}: relative {err:.3g} > {tol:g}")
    sel = mask.bool()
    g = grad.double()
    num, den = (g - g_ref).norm(dim=-1), g_ref.norm(dim=-1)
    ratio = torch.where(sel, num / ((10 * tol + U_OUT[dt]) * den + 1e-30), 0.0)
    if ratio.max().item() > 1:
        b, t = unravel(int(torch.argmax(ratio)), tuple(ratio.shape))
        problems.append(f"grad row ({b},{t}): ||g-ref||/||ref|| = {(num[b, t] / den[b, t]).item():.3g} > {10 * tol + U_OUT[dt]:.3g}")
    # the head's gradient from the backward on the stream, against float64 G^T X from the reference gradient
    with torch.no_grad():
        dw_ref = g_ref.reshape(N * T, V).t() @ xs.double()
    e = ((ws.grad.double() - dw_ref).norm() / dw_ref.norm()).item()
    bound = 10 * tol + 2 * U_OUT[dt]
    if not e <= bound:
        problems.append(f"head gradient: ||dW - ref|| / ||ref|| = {e:.3g} > {bound:.3g}")
    return problems


def check_stream(lib, out):
    L = load(lib)
    seed = int(os.environ["AD_CHECK_SEED"]) if "AD_CHECK_SEED" in os.environ else int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(seed)
    print(f"torch_bench check-stream: seed {seed} (rerun with the same inputs: AD_CHECK_SEED={seed})", flush=True)
    results, fails = [], 0
    for dt in (F32, BF16):
        name = f"aligndistil {DT_NAME[dt]} on torch.cuda.current_stream() (a side stream), sync debug mode error"
        try:
            probs = stream_case(L, dt, gen)
        except Exception as e:  # noqa: BLE001 - report and go on
            probs = [f"exception {type(e).__name__}: {e}"]
        fails += bool(probs)
        results.append({"case": name, "ok": not probs, "problems": probs})
        print(("  ok    " if not probs else "  FAIL  ") + name + ("" if not probs else "\n        " + "\n        ".join(probs)), flush=True)
    with open(out, "w") as f:
        json.dump({"seed": seed, "cases": len(results), "failures": fails, "results": results, "gpu": torch.cuda.get_device_name(0)}, f, indent=1)
    print(f"torch_bench check-stream: {len(results) - fails}/{len(results)} cases passed")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check-cpu":  # the checker tested on a machine without a GPU
        check(sys.argv[2], sys.argv[3], dev="cpu")
    elif len(sys.argv) == 4 and sys.argv[1] == "check-fll":
        check_fll(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check-stream":
        check_stream(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "baselines":
        baselines(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
