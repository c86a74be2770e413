/*
 * fdl_cuda_selftest.cu: checks ad_fdl_cuda (libaligndistil_cuda.so) against an independent double-precision
 * host reference written with plain loops, and (--bench) times the kernel against a device-to-device copy.
 *
 *   fdl_cuda_selftest [--kernel multipass|cluster|all]
 *                                run the checks with each row kernel (default all: the multi-pass kernel, then the
 *                                Hopper cluster kernel, which is skipped with a message below compute capability
 *                                9.0); exit 0 = all passed, 1 = a failure, 77 = no GPU (only the host-side argument
 *                                checks ran)
 *   fdl_cuda_selftest --bench [--kernel ...]
 *                                V = 151936, 4096 tokens, bf16 and f32, CUDA-event timing, per kernel
 *
 * With the cluster kernel every case whose layout allows it is laid out with 16-byte aligned rows (row stride
 * rounded up to 8 elements) so that the cluster kernel really runs it (checked with ad_cuda_kernel_for: a case
 * marked for it FAILS if the library falls back); misaligned and mixed-dtype cases keep their layout and check the
 * fallback. Cluster-specific shapes: V not a multiple of the cluster split, V at and just above the largest
 * vocabulary the cluster kernel takes (found with ad_cuda_kernel_for), two tokens per CTA with an odd number of
 * rows, masked rows inside a persistent cluster's range, 8-CTA clusters at V = 151936.
 *
 * Tolerances (formulas, not tuned numbers): tol = 1e-5 for f32 inputs, 1e-4 (10x) when an input is bf16 / f16
 * or |logits| >= 1e4. Scalars (loss, weight, token_loss, metrics): |x - ref| <= tol * max(1, |ref|).
 * Gradient rows: ||g - ref||_2 <= (10 tol + u_out) ||ref||_2 + 1e-30, u_out = the unit roundoff of the
 * gradient dtype (0 for f32, 2^-8 bf16, 2^-11 f16); rows that are not selected must be exactly 0.
 * Needs a GPU to run; it only compiles on a machine without one.
 */
#include "aligndistil.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static const double kInf = INFINITY;

/* ------------------------------------------------------------------------------------------------ */
/* dtype helpers                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

static int dsize(int dt) { return dt == AD_F32 ? 4 : 2; }
static const char* dname(int dt) { return dt == AD_F32 ? "f32" : dt == AD_BF16 ? "bf16" : "f16"; }

/* Rounds x to dtype dt and returns the value the GPU will see. */
static float quantize(float x, int dt) {
    if (dt == AD_BF16) return __bfloat162float(__float2bfloat16_rn(x));
    if (dt == AD_F16) return __half2float(__float2half_rn(x));
    return x;
}

static void put(std::vector<unsigned char>& buf, int64_t idx, float x, int dt) {
    if (dt == AD_F32) {
        memcpy(&buf[idx * 4], &x, 4);
    } else if (dt == AD_BF16) {
        __nv_bfloat16 h = __float2bfloat16_rn(x);
        memcpy(&buf[idx * 2], &h, 2);
    } else {
        __half h = __float2half_rn(x);
        memcpy(&buf[idx * 2], &h, 2);
    }
}

static float get(const std::vector<unsigned char>& buf, int64_t idx, int dt) {
    if (dt == AD_F32) {
        float x;
        memcpy(&x, &buf[idx * 4], 4);
        return x;
    } else if (dt == AD_BF16) {
        __nv_bfloat16 h;
        memcpy(&h, &buf[idx * 2], 2);
        return __bfloat162float(h);
    } else {
        __half h;
        memcpy(&h, &buf[idx * 2], 2);
        return __half2float(h);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Reference (double, straightforward loops)                                                         */
/* ------------------------------------------------------------------------------------------------ */

struct RefParams {
    int variant, length_norm;
    double beta, beta2, epsilon, T, Ts, seq_divisor;
};

struct RefOut {
    int64_t code = AD_OK, token = -1, column = -1, selected = 0;
    double loss = 0.0;
    std::vector<double> weight, token_loss, metrics; /* [B*T], [B*T], [B*T*3] */
    std::vector<double> grad;                        /* [B*T*V] dense */
};

/* s, d, r: dense [B*T*V] doubles (r unused for gkd); mask: [B*T] (empty = all selected). */
static RefOut reference(int64_t B, int64_t T, int64_t V, const std::vector<double>& s, const std::vector<double>& d,
                        const std::vector<double>& r, const std::vector<unsigned char>& mask, const RefParams& P) {
    RefOut o;
    const int64_t rows = B * T;
    const bool gkd = P.variant == AD_VARIANT_GKD;
    o.weight.assign(rows, 0.0);
    o.token_loss.assign(rows, 0.0);
    o.metrics.assign(rows * 3, 0.0);
    o.grad.assign(rows * V, 0.0);
    std::vector<int64_t> nb(B, 0);
    int64_t nseq = 0;
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) nb[b] += mask.empty() ? 1 : (mask[b * T + t] != 0);
        nseq += nb[b] > 0;
        o.selected += nb[b];
    }
    const double N = P.seq_divisor > 0 ? P.seq_divisor : (double)nseq;
    const double Tq = gkd ? 1.0 : P.T;
    std::vector<double> logp(V), logpd(V), logpr(V), logq(V), zs(V);
    std::vector<char> inside(V);
    double loss = 0.0;
    for (int64_t row = 0; row < rows && o.code == AD_OK; ++row) {
        const int64_t b = row / T;
        if (!mask.empty() && !mask[row]) continue;
        const double* S = &s[row * V];
        const double* D = &d[row * V];
        const double* R = gkd ? D : &r[row * V];
        bool any = false;
        for (int64_t v = 0; v < V; ++v) {
            const bool fin = std::isfinite(S[v]) && std::isfinite(D[v]) && std::isfinite(R[v]);
            const bool out = S[v] == -kInf && D[v] == -kInf && R[v] == -kInf;
            if (!fin && !out) {
                o.code = AD_ERR_NONFINITE; o.token = row; o.column = v;
                break;
            }
            inside[v] = fin;
            any |= fin;
        }
        if (o.code != AD_OK) break;
        if (!any) { o.code = AD_ERR_EMPTY_ROW; o.token = row; break; }
        auto log_softmax = [&](const double* x, double scale, std::vector<double>& out) {
            double m = -kInf;
            for (int64_t v = 0; v < V; ++v) if (inside[v]) m = std::max(m, x[v] * scale);
            double z = 0.0;
            for (int64_t v = 0; v < V; ++v) if (inside[v]) z += std::exp(x[v] * scale - m);
            const double lse = m + std::log(z);
            for (int64_t v = 0; v < V; ++v) out[v] = inside[v] ? x[v] * scale - lse : -kInf;
        };
        log_softmax(S, 1.0 / P.Ts, logp);
        log_softmax(D, 1.0, logpd);
        log_softmax(R, 1.0, logpr);
        double alpha;
        if (P.variant == AD_VARIANT_ALIGNDISTIL || P.variant == AD_VARIANT_ADAPTIVE) {
            double tvd = 0.0;
            for (int64_t v = 0; v < V; ++v) if (inside[v]) tvd += std::fabs(std::exp(logpd[v]) - std::exp(logpr[v]));
            alpha = P.beta2 * tvd + P.epsilon;
        } else if (gkd) {
            alpha = 1.0;
        } else {
            alpha = P.beta / P.beta2;
        }
        for (int64_t v = 0; v < V; ++v) {
            if (!inside[v]) { zs[v] = -kInf; continue; }
            switch (P.variant) {
                case AD_VARIANT_ALIGNDISTIL:
                case AD_VARIANT_CONTRAST: zs[v] = D[v] + alpha * (D[v] - R[v]); break;
                case AD_VARIANT_ADAPTIVE:
                case AD_VARIANT_THEOREM1: zs[v] = alpha * D[v] + (1.0 - alpha) * R[v]; break;
                default: zs[v] = D[v]; break;
            }
        }
        log_softmax(zs.data(), 1.0 / Tq, logq);
        double K = 0.0, m0 = 0.0, m1 = 0.0, m2 = 0.0;
        for (int64_t v = 0; v < V; ++v) {
            if (!inside[v]) continue;
            const double p = std::exp(logp[v]);
            K += p * (logp[v] - logq[v]);
            m0 += p * P.beta * (logpd[v] - logpr[v]);
            m1 += p * (logp[v] - logpd[v]);
            m2 += p * (logp[v] - logpr[v]);
        }
        const double coef = (P.variant == AD_VARIANT_ALIGNDISTIL || P.variant == AD_VARIANT_ADAPTIVE) ? P.beta / alpha
                            : gkd ? 1.0 : P.beta2;
        const double c = coef * (P.length_norm ? 1.0 / (double)nb[b] : 1.0) / N;
        loss += c * K;
        o.weight[row] = alpha;
        o.token_loss[row] = coef * K;
        o.metrics[row * 3 + 0] = gkd ? 0.0 : m0;
        o.metrics[row * 3 + 1] = m1;
        o.metrics[row * 3 + 2] = gkd ? 0.0 : m2;
        for (int64_t v = 0; v < V; ++v)
            if (inside[v]) o.grad[row * V + v] = c / P.Ts * std::exp(logp[v]) * (logp[v] - logq[v] - K);
    }
    if (o.code != AD_OK) {
        o.loss = 0.0;
        std::fill(o.weight.begin(), o.weight.end(), 0.0);
        std::fill(o.token_loss.begin(), o.token_loss.end(), 0.0);
        std::fill(o.metrics.begin(), o.metrics.end(), 0.0);
        std::fill(o.grad.begin(), o.grad.end(), 0.0);
    } else {
        o.loss = loss;
    }
    return o;
}

/* ------------------------------------------------------------------------------------------------ */
/* One test case                                                                                     */
/* ------------------------------------------------------------------------------------------------ */

struct Case {
    std::string name;
    int64_t B = 2, T = 3, V = 7;
    int sdt = AD_F32, ddt = AD_F32, rdt = AD_F32, gdt = AD_F32;
    int variant = AD_VARIANT_ALIGNDISTIL;
    int length_norm = 1;
    int mask_mode = 1;          /* 0: NULL, 1: random, 2: random with one empty sequence */
    int64_t inf_tail = 0;       /* last columns -inf in all rows (padded vocabulary) */
    int inf_interior = 0;       /* a few random interior columns -inf in all rows */
    bool in_place = false;
    bool outputs = true;        /* weight / token_loss / metrics given */
    double scale = 3.0, offset = 0.0;
    double agree = -1.0;        /* >= 0: student = dpo + agree * noise, second = dpo + agree * noise */
    int misalign = 0;           /* base offset in elements (scalar path when not 16-byte aligned) */
    int64_t pad_t = 0;          /* row padding in elements */
    double seq_divisor = 0.0, T_teacher = 1.0, Ts = 1.0;
    int inject = 0;             /* 1: NaN in one selected row, 2: +inf, 3: partial -inf, 4: all -inf row */
    bool row_align = false;     /* row stride rounded up to a multiple of 8 elements (16-byte aligned rows) */
    bool keep_layout = false;   /* never row-aligned (checks the cluster kernel's fallback) */
    int expect_kernel = 0;      /* nonzero: ad_cuda_kernel_for must report this AD_CUDA_KERNEL_* */
    int force_cluster = 0;      /* nonzero: AD_CUDA_CLUSTER_SIZE for this case (cluster kernel only) */
};

/* Sets AD_CUDA_CLUSTER_SIZE for one case and restores "unset" afterwards. */
struct ClusterSizeScope {
    explicit ClusterSizeScope(int n) : set(n != 0) { if (set) setenv("AD_CUDA_CLUSTER_SIZE", std::to_string(n).c_str(), 1); }
    ~ClusterSizeScope() { if (set) unsetenv("AD_CUDA_CLUSTER_SIZE"); }
    bool set;
};

static uint64_t g_seed = 12345;

struct DevBuf {
    void* base = nullptr;
    void* ptr = nullptr; /* base + misalign */
    ~DevBuf() { if (base) cudaFree(base); }
};

static void upload(DevBuf& db, const std::vector<unsigned char>& host, size_t offset_bytes) {
    CK(cudaMalloc(&db.base, host.size() + offset_bytes + 16));
    db.ptr = static_cast<char*>(db.base) + offset_bytes;
    CK(cudaMemcpy(db.ptr, host.data(), host.size(), cudaMemcpyHostToDevice));
}

static bool close_scalar(double x, double ref, double tol) { return std::fabs(x - ref) <= tol * std::max(1.0, std::fabs(ref)); }

static int run_case(const Case& c) {
    ClusterSizeScope cluster_size(c.force_cluster);
    std::mt19937_64 rng(g_seed++);
    std::normal_distribution<double> nd(0.0, 1.0);
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    const int64_t B = c.B, T = c.T, V = c.V, rows = B * T;
    const bool gkd = c.variant == AD_VARIANT_GKD;
    int64_t st = V + c.pad_t, sb = T * st + 3 * c.pad_t;
    if (c.row_align) { st = (V + c.pad_t + 7) / 8 * 8; sb = T * st; }
    const int64_t elems = B * sb;

    /* columns outside the vocabulary */
    std::vector<char> out_col(V, 0);
    for (int64_t v = std::max<int64_t>(0, V - c.inf_tail); v < V; ++v) out_col[v] = 1;
    for (int i = 0; i < c.inf_interior && V > 2; ++i) out_col[1 + (int64_t)(ud(rng) * (V - 2))] = 1;
    out_col[0] = 0; /* keep at least one column inside */

    std::vector<unsigned char> mask;
    if (c.mask_mode) {
        mask.assign(rows, 0);
        for (int64_t i = 0; i < rows; ++i) mask[i] = ud(rng) < 0.7;
        mask[0] = 1;
        if (c.mask_mode == 2 && B > 1) for (int64_t t = 0; t < T; ++t) mask[(B - 1) * T + t] = 0;
    }

    /* logits: dense doubles for the reference (after quantisation), strided bytes for the device */
    std::vector<double> S(rows * V), D(rows * V), R(rows * V);
    std::vector<unsigned char> hs(elems * dsize(c.sdt), 0), hd(elems * dsize(c.ddt), 0), hr(elems * dsize(c.rdt), 0);
    for (int64_t row = 0; row < rows; ++row) {
        for (int64_t v = 0; v < V; ++v) {
            float fs, fd, fr;
            if (out_col[v]) {
                fs = fd = fr = -INFINITY;
            } else if (c.agree >= 0) {
                const double x = c.scale * nd(rng);
                fd = (float)(c.offset + x);
                fs = (float)(c.offset + x + c.agree * nd(rng));
                fr = (float)(c.offset + x + c.agree * nd(rng));
            } else {
                fs = (float)(c.offset + c.scale * nd(rng));
                fd = (float)(c.offset + c.scale * nd(rng));
                fr = (float)(c.offset + c.scale * nd(rng));
            }
            fs = quantize(fs, c.sdt); fd = quantize(fd, c.ddt); fr = quantize(fr, c.rdt);
            S[row * V + v] = fs; D[row * V + v] = fd; R[row * V + v] = fr;
        }
    }
    /* error injection in the last selected row */
    int64_t bad_row = -1;
    if (c.inject) {
        for (int64_t row = rows - 1; row >= 0; --row) if (mask.empty() || mask[row]) { bad_row = row; break; }
        const int64_t v = V / 2;
        if (c.inject == 1) S[bad_row * V + v] = NAN;
        if (c.inject == 2) D[bad_row * V + v] = INFINITY;
        if (c.inject == 3 && !gkd) { S[bad_row * V + v] = -kInf; D[bad_row * V + v] = -kInf; R[bad_row * V + v] = 1.0; }
        if (c.inject == 3 && gkd) S[bad_row * V + v] = -kInf;
        if (c.inject == 4) for (int64_t u = 0; u < V; ++u) S[bad_row * V + u] = D[bad_row * V + u] = R[bad_row * V + u] = -kInf;
    }
    for (int64_t row = 0; row < rows; ++row) {
        const int64_t b = row / T, t = row % T, base = b * sb + t * st;
        for (int64_t v = 0; v < V; ++v) {
            put(hs, base + v, (float)S[row * V + v], c.sdt);
            put(hd, base + v, (float)D[row * V + v], c.ddt);
            put(hr, base + v, (float)R[row * V + v], c.rdt);
        }
    }

    RefParams P{c.variant, c.length_norm, 0.1, 10.0, 1e-3, c.T_teacher, c.Ts, c.seq_divisor};
    RefOut ref = reference(B, T, V, S, D, gkd ? std::vector<double>() : R, mask, P);

    /* device buffers */
    DevBuf ds, ddp, dr, dg, dm, dw, dtl, dmet, dws, dloss, dstat;
    upload(ds, hs, (size_t)c.misalign * dsize(c.sdt));
    upload(ddp, hd, (size_t)c.misalign * dsize(c.ddt));
    if (!gkd) upload(dr, hr, (size_t)c.misalign * dsize(c.rdt));
    const int64_t g_st = c.in_place ? st : V, g_sb = c.in_place ? sb : T * V;
    if (!c.in_place) {
        std::vector<unsigned char> garbage((size_t)(B * g_sb) * dsize(c.gdt), 0x7f); /* must all be overwritten */
        upload(dg, garbage, 0);
    }
    if (!mask.empty()) upload(dm, mask, 0);
    if (c.outputs) {
        std::vector<unsigned char> junk(rows * 4 * 3, 0x7f);
        upload(dw, std::vector<unsigned char>(junk.begin(), junk.begin() + rows * 4), 0);
        upload(dtl, std::vector<unsigned char>(junk.begin(), junk.begin() + rows * 4), 0);
        upload(dmet, junk, 0);
    }

    ad_fdl_problem pr;
    memset(&pr, 0, sizeof pr);
    pr.batch = B; pr.seq = T; pr.vocab = V;
    pr.student = ds.ptr; pr.student_dtype = c.sdt; pr.student_stride_b = sb; pr.student_stride_t = st;
    pr.dpo = ddp.ptr; pr.dpo_dtype = c.ddt; pr.dpo_stride_b = sb; pr.dpo_stride_t = st;
    pr.second = gkd ? nullptr : dr.ptr; pr.second_dtype = c.rdt; pr.second_stride_b = sb; pr.second_stride_t = st;
    pr.mask = mask.empty() ? nullptr : static_cast<const uint8_t*>(dm.ptr); pr.mask_stride_b = T; pr.mask_stride_t = 1;
    pr.grad = c.in_place ? ds.ptr : dg.ptr; pr.grad_dtype = c.in_place ? c.sdt : c.gdt;
    pr.grad_stride_b = g_sb; pr.grad_stride_t = g_st;
    pr.weight = static_cast<float*>(dw.ptr); pr.token_loss = static_cast<float*>(dtl.ptr); pr.metrics = static_cast<float*>(dmet.ptr);
    pr.variant = c.variant; pr.length_norm = c.length_norm;
    pr.beta = P.beta; pr.beta2 = P.beta2; pr.epsilon = P.epsilon; pr.temperature = c.T_teacher;
    pr.student_temperature = c.Ts; pr.seq_divisor = c.seq_divisor;
    const int gdt = (int)pr.grad_dtype;

    int32_t used = -1;
    if (ad_cuda_kernel_for(&pr, -1, &used) != AD_OK) { printf("FAIL %s: ad_cuda_kernel_for: %s\n", c.name.c_str(), ad_cuda_last_error()); return 1; }
    const char* used_name = used == AD_CUDA_KERNEL_CLUSTER ? "cluster" : "multipass";
    if (c.expect_kernel != 0 && used != c.expect_kernel) {
        printf("FAIL %s: ran on the %s kernel, expected the %s kernel\n", c.name.c_str(), used_name,
               c.expect_kernel == AD_CUDA_KERNEL_CLUSTER ? "cluster" : "multipass");
        return 1;
    }
    int64_t wsb = 0;
    if (ad_fdl_cuda_workspace_bytes(&pr, &wsb) != AD_OK) { printf("FAIL %s: workspace_bytes\n", c.name.c_str()); return 1; }
    CK(cudaMalloc(&dws.base, wsb)); dws.ptr = dws.base;
    CK(cudaMalloc(&dloss.base, 8)); CK(cudaMalloc(&dstat.base, 32));
    cudaStream_t stream;
    CK(cudaStreamCreate(&stream));
    int rc = ad_fdl_cuda(&pr, dws.base, wsb, static_cast<double*>(dloss.base), static_cast<int64_t*>(dstat.base), stream);
    CK(cudaStreamSynchronize(stream));
    CK(cudaStreamDestroy(stream));
    if (rc != AD_OK) { printf("FAIL %s: ad_fdl_cuda returned %d (%s)\n", c.name.c_str(), rc, ad_cuda_last_error()); return 1; }

    double loss;
    int64_t stat[4];
    CK(cudaMemcpy(&loss, dloss.base, 8, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(stat, dstat.base, 32, cudaMemcpyDeviceToHost));
    std::vector<unsigned char> hg((size_t)(B * g_sb) * dsize(gdt));
    CK(cudaMemcpy(hg.data(), pr.grad, hg.size(), cudaMemcpyDeviceToHost));
    std::vector<float> w(rows), tl(rows), met(rows * 3);
    if (c.outputs) {
        CK(cudaMemcpy(w.data(), dw.ptr, rows * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(tl.data(), dtl.ptr, rows * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(met.data(), dmet.ptr, rows * 12, cudaMemcpyDeviceToHost));
    }

    const bool loose = c.sdt != AD_F32 || c.ddt != AD_F32 || (!gkd && c.rdt != AD_F32) || std::fabs(c.offset) + 6 * c.scale >= 1e4;
    const double tol = loose ? 1e-4 : 1e-5;
    const double u_out = gdt == AD_F32 ? 0.0 : gdt == AD_BF16 ? 1.0 / 256 : 1.0 / 2048;
    const double gtol = 10 * tol + u_out;
    int fails = 0;
    auto fail = [&](const char* what, double got, double want, int64_t where) {
        if (fails < 8) printf("FAIL %s: %s at %lld: got %.9g want %.9g\n", c.name.c_str(), what, (long long)where, got, want);
        ++fails;
    };
    if (stat[0] != ref.code) fail("status code", (double)stat[0], (double)ref.code, 0);
    if (stat[1] != ref.token) fail("status token", (double)stat[1], (double)ref.token, 0);
    if (stat[2] != ref.column) fail("status column", (double)stat[2], (double)ref.column, 0);
    if (stat[3] != ref.selected) fail("selected rows", (double)stat[3], (double)ref.selected, 0);
    if (!close_scalar(loss, ref.loss, tol)) fail("loss", loss, ref.loss, 0);
    if (c.outputs) {
        for (int64_t i = 0; i < rows; ++i) {
            if (!close_scalar(w[i], ref.weight[i], tol)) fail("weight", w[i], ref.weight[i], i);
            if (!close_scalar(tl[i], ref.token_loss[i], tol)) fail("token_loss", tl[i], ref.token_loss[i], i);
            for (int j = 0; j < 3; ++j)
                if (!close_scalar(met[i * 3 + j], ref.metrics[i * 3 + j], tol)) fail("metric", met[i * 3 + j], ref.metrics[i * 3 + j], i * 3 + j);
        }
    }
    double worst = 0.0;
    const bool check_grad = !(c.in_place && ref.code != AD_OK); /* in place after an error: unspecified */
    for (int64_t row = 0; row < rows && check_grad; ++row) {
        const int64_t b = row / T, t = row % T, base = b * g_sb + t * g_st;
        double e2 = 0.0, r2 = 0.0;
        bool nonzero = false;
        for (int64_t v = 0; v < V; ++v) {
            const double g = get(hg, base + v, gdt), rr = ref.grad[row * V + v];
            if (!std::isfinite(g)) { e2 = INFINITY; }
            e2 += (g - rr) * (g - rr);
            r2 += rr * rr;
            nonzero |= g != 0.0;
        }
        const bool selected = mask.empty() || mask[row];
        if (!selected || ref.code != AD_OK) {
            if (nonzero) fail("gradient row not zero", std::sqrt(e2), 0.0, row);
            continue;
        }
        const double rel = std::sqrt(e2) / (std::sqrt(r2) + 1e-30);
        worst = std::max(worst, rel);
        if (!(std::sqrt(e2) <= gtol * std::sqrt(r2) + 1e-30)) fail("gradient rel L2", rel, gtol, row);
    }
    printf("%s [%-9s] %-48s loss %.10g (ref %.10g) worst grad rel L2 %.2e (tol %.1e)\n", fails ? "FAIL" : "ok  ",
           used_name, c.name.c_str(), loss, ref.loss, worst, gtol);
    (void)bad_row;
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Host-side argument checks (no GPU needed: validation runs before any CUDA call)                   */
/* ------------------------------------------------------------------------------------------------ */

static int argument_checks() {
    int fails = 0;
    alignas(16) static char fake[64];
    ad_fdl_problem p;
    memset(&p, 0, sizeof p);
    p.batch = 2; p.seq = 3; p.vocab = 5;
    p.student = p.dpo = p.second = fake; p.grad = fake + 16;
    p.student_stride_b = p.dpo_stride_b = p.second_stride_b = p.grad_stride_b = 15;
    p.student_stride_t = p.dpo_stride_t = p.second_stride_t = p.grad_stride_t = 5;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
    int64_t wsb = 0;
    if (ad_fdl_cuda_workspace_bytes(&p, &wsb) != AD_OK || wsb != 8 * (8 + 2 + 6)) { printf("FAIL workspace formula: %lld\n", (long long)wsb); ++fails; }
    double* dl = reinterpret_cast<double*>(fake);
    int64_t* dsx = reinterpret_cast<int64_t*>(fake + 32);
    auto expect_invalid = [&](const char* what, ad_fdl_problem q, int64_t ws) {
        int rc = ad_fdl_cuda(&q, fake, ws, dl, dsx, nullptr);
        if (rc != AD_ERR_INVALID_ARGUMENT) { printf("FAIL argument check %s: rc %d\n", what, rc); ++fails; }
    };
    ad_fdl_problem q;
    q = p; q.vocab = 0; expect_invalid("vocab 0", q, wsb);
    q = p; q.batch = -1; expect_invalid("batch -1", q, wsb);
    q = p; q.student_dtype = 3; expect_invalid("dtype 3", q, wsb);
    q = p; q.variant = 5; expect_invalid("variant 5", q, wsb);
    q = p; q.student_dtype = AD_BF16; q.grad_dtype = AD_F16; expect_invalid("grad dtype", q, wsb);
    q = p; q.grad = fake; q.grad_stride_t = 6; expect_invalid("in place strides", q, wsb);
    q = p; q.grad = fake; q.student_dtype = AD_BF16; q.grad_dtype = AD_F32; expect_invalid("in place dtype", q, wsb);
    q = p; q.beta = NAN; expect_invalid("beta NaN", q, wsb);
    q = p; q.temperature = 0; expect_invalid("temperature 0", q, wsb);
    q = p; q.second = nullptr; expect_invalid("second NULL", q, wsb);
    q = p; expect_invalid("workspace small", q, wsb - 8);
    q = p; q.length_norm = 2; expect_invalid("length_norm 2", q, wsb);
    if (ad_fdl_cuda(nullptr, fake, wsb, dl, dsx, nullptr) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL NULL problem\n"); ++fails; }
    int32_t kern = -1, before = -1;
    if (ad_cuda_get_kernel(&before) != AD_OK) { printf("FAIL ad_cuda_get_kernel\n"); ++fails; }
    if (ad_cuda_set_kernel(3) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL ad_cuda_set_kernel(3) accepted\n"); ++fails; }
    if (ad_cuda_set_kernel(-1) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL ad_cuda_set_kernel(-1) accepted\n"); ++fails; }
    if (ad_cuda_get_kernel(&kern) != AD_OK || kern != before) { printf("FAIL a rejected ad_cuda_set_kernel changed the setting\n"); ++fails; }
    if (ad_cuda_kernel_for(nullptr, -1, &kern) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL ad_cuda_kernel_for(NULL)\n"); ++fails; }
    q = p; q.vocab = 0;
    if (ad_cuda_kernel_for(&q, -1, &kern) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL ad_cuda_kernel_for(vocab 0)\n"); ++fails; }
    if (ad_cuda_kernel_for(&p, -1, nullptr) != AD_ERR_INVALID_ARGUMENT) { printf("FAIL ad_cuda_kernel_for(kernel NULL)\n"); ++fails; }
    printf("%s host-side argument checks\n", fails ? "FAIL" : "ok  ");
    return fails;
}

/* ------------------------------------------------------------------------------------------------ */
/* Benchmark                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

/* Pseudo-random logits (about N(0, 3^2): a sum of four hashed uniforms) generated on the device, so setting up
 * several GB of benchmark input takes milliseconds. */
__device__ __forceinline__ float hash_uniform(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return (float)(x >> 40) * (1.0f / 16777216.0f);
}

__global__ void selftest_fill_logits_kernel(void* p, size_t n, int dt, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t k = (seed << 40) ^ (i * 4);
        const float x = 3.0f * 1.7320508f * (hash_uniform(k) + hash_uniform(k + 1) + hash_uniform(k + 2) + hash_uniform(k + 3) - 2.0f);
        if (dt == AD_F32) static_cast<float*>(p)[i] = x;
        else if (dt == AD_BF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x);
        else static_cast<__half*>(p)[i] = __float2half_rn(x);
    }
}

static void fill_random(void* p, size_t bytes, int dt, uint64_t seed) {
    selftest_fill_logits_kernel<<<1024, 256>>>(p, bytes / dsize(dt), dt, seed);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
}

static int bench() {
    const int64_t B = 4, T = 1024, V = 151936, rows = B * T;
    int dev = 0;
    CK(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("bench on %s (L2 %d MB): V = %lld, tokens = %lld, variant aligndistil, grad in the student dtype\n", prop.name,
           prop.l2CacheSize >> 20, (long long)V, (long long)rows);
    const int dts[2] = {AD_BF16, AD_F32};
    for (int dt : dts) {
        const size_t row_bytes = (size_t)V * dsize(dt), arr = row_bytes * rows;
        const size_t set_bytes = 4 * arr;
        const int sets = (int)std::max<size_t>(2, (2 * (size_t)prop.l2CacheSize + set_bytes - 1) / set_bytes);
        std::vector<void*> bufs;
        for (int i = 0; i < 4 * sets; ++i) {
            void* q;
            CK(cudaMalloc(&q, arr));
            bufs.push_back(q);
            if (i % 4 != 3) fill_random(q, arr, dt, 1000 + i);
        }
        int64_t wsb = 0;
        ad_fdl_problem p;
        memset(&p, 0, sizeof p);
        p.batch = B; p.seq = T; p.vocab = V;
        p.student_dtype = p.dpo_dtype = p.second_dtype = p.grad_dtype = dt;
        p.student_stride_b = p.dpo_stride_b = p.second_stride_b = p.grad_stride_b = T * V;
        p.student_stride_t = p.dpo_stride_t = p.second_stride_t = p.grad_stride_t = V;
        p.variant = AD_VARIANT_ALIGNDISTIL; p.length_norm = 1;
        p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
        ad_fdl_cuda_workspace_bytes(&p, &wsb);
        p.student = p.dpo = p.second = p.grad = bufs[0]; /* for ad_cuda_kernel_for (alignment only) */
        int32_t used = -1;
        if (ad_cuda_kernel_for(&p, -1, &used) != AD_OK) { fprintf(stderr, "ad_cuda_kernel_for: %s\n", ad_cuda_last_error()); exit(1); }
        printf("%s kernel: %s\n", dname(dt), used == AD_CUDA_KERNEL_CLUSTER ? "cluster" : "multipass");
        void *ws, *dl, *dsx;
        CK(cudaMalloc(&ws, wsb)); CK(cudaMalloc(&dl, 8)); CK(cudaMalloc(&dsx, 32));
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
        auto launch = [&](int i) {
            const int k = i % sets;
            p.student = bufs[4 * k]; p.dpo = bufs[4 * k + 1]; p.second = bufs[4 * k + 2]; p.grad = bufs[4 * k + 3];
            if (ad_fdl_cuda(&p, ws, wsb, (double*)dl, (int64_t*)dsx, nullptr) != AD_OK) {
                fprintf(stderr, "ad_fdl_cuda failed: %s\n", ad_cuda_last_error());
                exit(1);
            }
        };
        for (int i = 0; i < 2; ++i) launch(i);
        const int iters = 10;
        CK(cudaEventRecord(e0));
        for (int i = 0; i < iters; ++i) launch(i);
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        const double t_kernel = ms / iters;
        const double bytes = 4.0 * (double)arr; /* 3 input rows read + 1 gradient row written */
        int64_t st[4];
        CK(cudaMemcpy(st, dsx, 32, cudaMemcpyDeviceToHost));
        /* device-to-device copy moving the same number of bytes (bytes/2 read + bytes/2 written) */
        const size_t half = (size_t)(bytes / 2);
        void *src = bufs[0], *dst = bufs[3];
        void *big_src = nullptr, *big_dst = nullptr;
        if (half > arr) { CK(cudaMalloc(&big_src, half)); CK(cudaMalloc(&big_dst, half)); src = big_src; dst = big_dst; }
        CK(cudaMemcpy(dst, src, half, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e0));
        for (int i = 0; i < iters; ++i) CK(cudaMemcpyAsync(dst, src, half, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&ms, e0, e1));
        const double t_copy = ms / iters;
        printf("%-5s kernel %8.3f ms  %7.1f GB/s effective | D2D copy of the same traffic %8.3f ms  %7.1f GB/s | "
               "kernel/copy %.2fx | status %lld | %d rotated sets of %.2f GB\n",
               dname(dt), t_kernel, bytes / t_kernel * 1e-6, t_copy, bytes / t_copy * 1e-6, t_kernel / t_copy,
               (long long)st[0], sets, set_bytes / 1e9);
        if (big_src) { cudaFree(big_src); cudaFree(big_dst); }
        for (void* q : bufs) cudaFree(q);
        cudaFree(ws); cudaFree(dl); cudaFree(dsx);
        cudaEventDestroy(e0); cudaEventDestroy(e1);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */

/* Largest V (row-aligned, one dtype, this variant) that the cluster kernel takes under the current setting, by
 * bisection over ad_cuda_kernel_for (which only inspects pointer alignment); 0 when it takes none. */
static int64_t cluster_vocab_cap(int dt, int variant) {
    alignas(256) static char fake[256];
    ad_fdl_problem p;
    memset(&p, 0, sizeof p);
    p.batch = 1; p.seq = 3;
    p.student = p.dpo = p.second = p.grad = fake;
    p.student_dtype = p.dpo_dtype = p.second_dtype = p.grad_dtype = dt;
    p.variant = variant;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
    auto takes = [&](int64_t V) {
        const int64_t st = (V + 7) / 8 * 8;
        p.vocab = V;
        p.student_stride_t = p.dpo_stride_t = p.second_stride_t = p.grad_stride_t = st;
        p.student_stride_b = p.dpo_stride_b = p.second_stride_b = p.grad_stride_b = 3 * st;
        int32_t k = -1;
        if (ad_cuda_kernel_for(&p, -1, &k) != AD_OK) return false;
        return k == AD_CUDA_KERNEL_CLUSTER;
    };
    if (!takes(1)) return 0;
    int64_t lo = 1, hi = INT64_C(1) << 24; /* takes(lo), !takes(hi): 16 CTAs x 227 KB hold < 2^24 columns */
    if (takes(hi)) return hi;
    while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        (takes(mid) ? lo : hi) = mid;
    }
    return lo;
}

/* The checks for one kernel setting. */
static int run_checks(int kernel) {
    const bool cl = kernel == AD_CUDA_KERNEL_CLUSTER;
    std::vector<Case> cases;
    const int64_t Vs[5] = {1, 7, 129, 4099, 50257};
    const int dts[3] = {AD_F32, AD_BF16, AD_F16};
    const char* vnames[5] = {"aligndistil", "contrast", "adaptive", "theorem1", "gkd"};
    /* every variant x every dtype, odd V, random masks, -inf tails, student-dtype or f32 gradients */
    for (int v = 0; v < 5; ++v) {
        for (int di = 0; di < 3; ++di) {
            Case c;
            c.variant = v;
            c.sdt = c.ddt = c.rdt = dts[di];
            c.gdt = ((v + di) % 2) ? dts[di] : AD_F32;
            c.V = Vs[(v + di) % 5];
            c.B = 2; c.T = 4;
            c.inf_tail = c.V > 7 ? c.V / 10 : 0;
            c.inf_interior = c.V > 7 ? 3 : 0;
            c.length_norm = (v + di) % 2;
            c.mask_mode = (v + di) % 3;
            c.outputs = (v + di) % 4 != 3;
            c.name = std::string(vnames[v]) + " " + dname(dts[di]) + " V=" + std::to_string(c.V) + " grad " + dname(c.gdt);
            cases.push_back(c);
        }
    }
    { Case c; c.name = "aligndistil bf16 V=151936 -inf tail, in place"; c.sdt = c.ddt = c.rdt = AD_BF16; c.V = 151936;
      c.inf_tail = 151936 - 151665; c.in_place = true; c.T = 3; cases.push_back(c); }
    { Case c; c.name = "aligndistil f32 V=151936 grad f32, Ts=T=2"; c.V = 151936; c.T = 2; c.Ts = 2; c.T_teacher = 2; cases.push_back(c); }
    { Case c; c.name = "adaptive f16 V=151936 grad f16 misaligned"; c.sdt = c.ddt = c.rdt = c.gdt = AD_F16; c.variant = AD_VARIANT_ADAPTIVE;
      c.V = 151936; c.T = 2; c.misalign = 1; cases.push_back(c); }
    { Case c; c.name = "contrast f32 V=151936 near agreement (small K)"; c.variant = AD_VARIANT_CONTRAST; c.V = 151936;
      c.agree = 0.02; c.T = 2; cases.push_back(c); }
    { Case c; c.name = "aligndistil f32 V=50257 near agreement"; c.V = 50257; c.agree = 0.01; c.T = 2; cases.push_back(c); }
    { Case c; c.name = "aligndistil f32 |logits| ~ 1e4"; c.V = 4099; c.offset = 1e4; c.scale = 5; cases.push_back(c); }
    { Case c; c.name = "theorem1 bf16 |logits| ~ 1e4, grad f32"; c.variant = AD_VARIANT_THEOREM1; c.sdt = c.ddt = c.rdt = AD_BF16;
      c.V = 4099; c.offset = -1e4; c.scale = 20; cases.push_back(c); }
    { Case c; c.name = "mixed dtypes s=bf16 d=f32 r=f16, grad f32"; c.sdt = AD_BF16; c.ddt = AD_F32; c.rdt = AD_F16; c.V = 4099; cases.push_back(c); }
    { Case c; c.name = "mixed dtypes misaligned, padded rows, in place"; c.sdt = AD_F16; c.ddt = AD_BF16; c.rdt = AD_F32;
      c.V = 129; c.misalign = 3; c.pad_t = 5; c.in_place = true; cases.push_back(c); }
    { Case c; c.name = "f32 V=4099 padded rows misaligned"; c.V = 4099; c.pad_t = 3; c.misalign = 1; cases.push_back(c); }
    { Case c; c.name = "empty sequence, seq_divisor 128"; c.B = 3; c.mask_mode = 2; c.seq_divisor = 128; c.V = 129; cases.push_back(c); }
    { Case c; c.name = "many rows (grid stride) bf16 V=7"; c.B = 16; c.T = 200; c.sdt = c.ddt = c.rdt = AD_BF16; cases.push_back(c); }
    { Case c; c.name = "V=1"; c.V = 1; c.mask_mode = 0; cases.push_back(c); }
    { Case c; c.name = "error NaN, separate grad"; c.V = 4099; c.inject = 1; c.inf_tail = 10; cases.push_back(c); }
    { Case c; c.name = "error +inf bf16, separate grad f32"; c.V = 129; c.inject = 2; c.sdt = c.ddt = c.rdt = AD_BF16; cases.push_back(c); }
    { Case c; c.name = "error partial -inf"; c.V = 50257; c.inject = 3; cases.push_back(c); }
    { Case c; c.name = "error partial -inf gkd"; c.V = 129; c.inject = 3; c.variant = AD_VARIANT_GKD; cases.push_back(c); }
    { Case c; c.name = "error all -inf row (empty)"; c.V = 129; c.inject = 4; cases.push_back(c); }
    { Case c; c.name = "error NaN in place (status only)"; c.V = 4099; c.inject = 1; c.in_place = true; cases.push_back(c); }

    /* cluster-specific shapes (run with both kernels; the expectations about which kernel runs apply to cluster) */
    { Case c; c.name = "cl: bf16 V=50257 (not a multiple of the split), tail"; c.sdt = c.ddt = c.rdt = AD_BF16; c.V = 50257;
      c.row_align = true; c.T = 5; cases.push_back(c); }
    { Case c; c.name = "cl: f16 V=151937 grad f16, 2 ranks past V"; c.sdt = c.ddt = c.rdt = c.gdt = AD_F16; c.V = 151937;
      c.row_align = true; c.T = 3; c.variant = AD_VARIANT_ADAPTIVE; cases.push_back(c); }
    { Case c; c.name = "cl: bf16 V=151936, 8-CTA clusters, 51 rows, masks"; c.sdt = c.ddt = c.rdt = AD_BF16; c.V = 151936;
      c.B = 3; c.T = 17; c.mask_mode = 1; c.row_align = true; cases.push_back(c); }
    { Case c; c.name = "cl: bf16 V=4099, 2005 rows (2 tokens/CTA, odd), masks"; c.sdt = c.ddt = c.rdt = AD_BF16; c.V = 4099;
      c.B = 5; c.T = 401; c.mask_mode = 1; c.row_align = true; c.inf_tail = 9; cases.push_back(c); }
    { Case c; c.name = "cl: f32 V=3 gkd in place (one partial chunk)"; c.V = 3; c.variant = AD_VARIANT_GKD; c.in_place = true;
      c.row_align = true; c.T = 9; cases.push_back(c); }
    /* every cluster size on small vocabularies (AD_CUDA_CLUSTER_SIZE), including CTAs that own no column */
    const int sizes[5] = {1, 2, 4, 8, 16};
    for (int si = 0; si < 5 && cl; ++si) {
        const int n = sizes[si];
        { Case c; c.name = "cl: n=" + std::to_string(n) + " bf16 V=4099 aligndistil, 301 rows, masks"; c.sdt = c.ddt = c.rdt = AD_BF16;
          c.V = 4099; c.B = 7; c.T = 43; c.row_align = true; c.inf_interior = 3; c.force_cluster = n; cases.push_back(c); }
        { Case c; c.name = "cl: n=" + std::to_string(n) + " f32 V=129 adaptive grad f32 (empty ranks)"; c.V = 129;
          c.variant = AD_VARIANT_ADAPTIVE; c.row_align = true; c.force_cluster = n; cases.push_back(c); }
        { Case c; c.name = "cl: n=" + std::to_string(n) + " f16 V=2053 gkd, error NaN"; c.sdt = c.ddt = c.rdt = AD_F16; c.V = 2053;
          c.variant = AD_VARIANT_GKD; c.inject = 1; c.B = 3; c.T = 31; c.row_align = true; c.force_cluster = n; cases.push_back(c); }
    }
    { Case c; c.name = "cl: error NaN after many rows (stop + drain)"; c.sdt = c.ddt = c.rdt = AD_BF16; c.V = 4099; c.B = 5; c.T = 401;
      c.inject = 1; c.row_align = true; cases.push_back(c); }
    { Case c; c.name = "cl: empty row, contrast f16"; c.sdt = c.ddt = c.rdt = AD_F16; c.V = 129; c.inject = 4; c.variant = AD_VARIANT_CONTRAST;
      c.row_align = true; cases.push_back(c); }
    if (cl) {
        const int64_t cap = cluster_vocab_cap(AD_F32, AD_VARIANT_ALIGNDISTIL);
        printf("cluster kernel: largest f32 aligndistil vocabulary it takes here: %lld\n", (long long)cap);
        if (cap >= 16) {
            { Case c; c.name = "cl: f32 V = cap (just fits)"; c.V = cap; c.B = 1; c.T = 3; c.row_align = true;
              c.expect_kernel = AD_CUDA_KERNEL_CLUSTER; cases.push_back(c); }
            { Case c; c.name = "cl: f32 V = cap - 5"; c.V = cap - 5; c.B = 1; c.T = 2; c.row_align = true; c.variant = AD_VARIANT_THEOREM1;
              c.expect_kernel = AD_CUDA_KERNEL_CLUSTER; cases.push_back(c); }
            { Case c; c.name = "cl: f32 V = cap + 1 (falls back)"; c.V = cap + 1; c.B = 1; c.T = 2; c.row_align = true;
              c.expect_kernel = AD_CUDA_KERNEL_MULTIPASS; cases.push_back(c); }
        } else {
            printf("FAIL cluster kernel: takes no vocabulary at all on this device\n");
            return 1;
        }
    }
    for (Case& c : cases) {
        if (!cl) { if (c.expect_kernel == AD_CUDA_KERNEL_CLUSTER) c.expect_kernel = 0; continue; }
        if (c.misalign == 0 && !c.keep_layout) c.row_align = true;
        if (c.force_cluster == 16) { c.expect_kernel = 0; continue; } /* 16-CTA clusters are non-portable: may be refused */
        const bool same = c.sdt == c.ddt && (c.variant == AD_VARIANT_GKD || c.rdt == c.ddt);
        if (c.row_align && same && c.expect_kernel == 0) c.expect_kernel = AD_CUDA_KERNEL_CLUSTER;
        if (!c.row_align || !same) c.expect_kernel = AD_CUDA_KERNEL_MULTIPASS;
    }
    int fails = 0;
    for (const Case& c : cases) fails += run_case(c);
    return fails;
}

int main(int argc, char** argv) {
    bool do_bench = false;
    std::vector<int> kernels = {AD_CUDA_KERNEL_MULTIPASS, AD_CUDA_KERNEL_CLUSTER};
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--bench") == 0) {
            do_bench = true;
        } else if (strcmp(argv[i], "--kernel") == 0 && i + 1 < argc) {
            const char* k = argv[++i];
            if (strcmp(k, "multipass") == 0) kernels = {AD_CUDA_KERNEL_MULTIPASS};
            else if (strcmp(k, "cluster") == 0) kernels = {AD_CUDA_KERNEL_CLUSTER};
            else if (strcmp(k, "all") == 0) kernels = {AD_CUDA_KERNEL_MULTIPASS, AD_CUDA_KERNEL_CLUSTER};
            else { fprintf(stderr, "--kernel multipass|cluster|all, not %s\n", k); return 2; }
        } else {
            fprintf(stderr, "usage: %s [--bench] [--kernel multipass|cluster|all]\n", argv[0]);
            return 2;
        }
    }
    int fails = argument_checks();
    int32_t ndev = 0;
    const int rc_count = ad_cuda_device_count(&ndev);
    if (rc_count != AD_OK || ndev == 0) {
        printf("no CUDA device%s%s: only the host-side checks ran\n", rc_count != AD_OK ? ": " : "",
               rc_count != AD_OK ? ad_cuda_last_error() : "");
        return fails ? 1 : 77;
    }
    int64_t info[8] = {0};
    if (ad_cuda_device_info(0, info) != AD_OK) { printf("FAIL ad_cuda_device_info: %s\n", ad_cuda_last_error()); return 1; }
    for (int k : kernels) {
        const char* kname = k == AD_CUDA_KERNEL_CLUSTER ? "cluster" : "multipass";
        if (k == AD_CUDA_KERNEL_CLUSTER && info[0] < 9) {
            printf("skipping the cluster kernel: compute capability %lld.%lld < 9.0 (it needs Hopper or newer)\n",
                   (long long)info[0], (long long)info[1]);
            continue;
        }
        if (ad_cuda_set_kernel(k) != AD_OK) { printf("FAIL ad_cuda_set_kernel(%d)\n", k); return 1; }
        printf("=== row kernel setting: %s ===\n", kname);
        if (do_bench) {
            bench();
            continue;
        }
        const int f = run_checks(k);
        printf("%s kernel: %d failure(s)\n", kname, f);
        fails += f;
    }
    ad_cuda_set_kernel(AD_CUDA_KERNEL_AUTO);
    if (do_bench) return 0;
    printf("%s: %d failure(s)\n", fails ? "FAILED" : "PASSED", fails);
    return fails ? 1 : 0;
}
