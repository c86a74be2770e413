/*
 * fll_cuda_selftest.cu: checks ad_fll_cuda (the chunked fused-linear loss of libaligndistil_cuda) against an
 * independent double-precision host reference of the UNFUSED computation: full logits zs = Xs Ws^T (and the
 * teachers'), the ad_fdl loss with its own normalisation (1/n_b, 1/N), G = d loss / d zs, dXs = G Ws,
 * dWs = dWs0 + G^T Xs. So it also verifies the normalisation identity the library relies on (row kernel run
 * with length_norm = 0, seq_divisor = 1, then rows scaled by s_n = (1/n_b) / N).
 *
 * Build on a GPU box without CMake (cuBLAS is opened at run time, so it is not linked):
 *   nvcc -arch=sm_90a -std=c++17 -O2 -Inative/include -Isrc/main/cuda native/tests/fll_cuda_selftest.cu src/main/cuda/fused_linear_loss.cu src/main/cuda/fused_distill_loss.cu src/main/cuda/cuda_runtime_api.cu -ldl -o fll_cuda_selftest
 * or with CMake: -DAD_BUILD_TESTS=ON, target fll_cuda_selftest.
 *   fll_cuda_selftest     exit 0 = all passed, 1 = a failure, 77 = no GPU (the host-side checks still ran)
 *
 * Inputs. Hidden states and heads are drawn from the grid {-2..2}/4, so every logit is a multiple of 1/16 with
 * |z| <= H/4 < 16: exact in f32, bf16 and f16 and exact through cuBLAS's f32 accumulation. The reference and
 * the GPU therefore see the same logits and the tolerances only cover the row kernel and the two backward GEMMs.
 *
 * Tolerances (formulas):
 *   tol = 1e-5 for f32, 1e-4 for bf16 / f16 (the ad_fdl row kernel's own contract, fdl_cuda_selftest);
 *   u = unit roundoff of the hidden dtype (2^-24 f32, 2^-8 bf16, 2^-11 f16); e32 = 2^-24.
 *   loss, weight, token_loss: |x - ref| <= tol * max(1, |ref|).
 *   G'_n (stored in the hidden dtype) has ||G'_n - ref_n||_2 <= (10 tol + u) ||ref_n||_2 (the row kernel
 *   contract plus one rounding), so by Cauchy-Schwarz
 *   dXs[n,h]: |dX - ref| <= (10 tol + u) ||G_n||_2 ||W_:h||_2 + u |ref| + V e32 sum_v |G_nv W_vh| + 1e-30
 *             (row error, the final rounding to the hidden dtype, f32 accumulation over V terms);
 *   dWs[v,h]: |dW - ref| <= sum_n ((10 tol + u) ||G_n||_2 + 2u |G_nv|) |X_nh| + N e32 (|dW0| + sum_n |G_nv X_nh|)
 *             + 1e-30 (row error, rounding of the scaled X rows and of G, f32 accumulation over N terms).
 *   Rows not selected: dXs exactly 0.
 * Needs a GPU and cuBLAS to run the numeric cases; it only compiles on a machine without them.
 */
#include "aligndistil.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <sys/wait.h>
#include <unistd.h>

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

static int dsize(int dt) { return dt == AD_F32 ? 4 : 2; }
static const char* dname(int dt) { return dt == AD_F32 ? "f32" : dt == AD_BF16 ? "bf16" : "f16"; }
static double unit_roundoff(int dt) { return dt == AD_F32 ? std::ldexp(1.0, -24) : dt == AD_BF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11); }

static void put(std::vector<unsigned char>& buf, int64_t idx, double xd, int dt) {
    const float x = (float)xd;
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

static double get(const std::vector<unsigned char>& buf, int64_t idx, int dt) {
    if (dt == AD_F32) {
        float x;
        memcpy(&x, &buf[idx * 4], 4);
        return x;
    } else if (dt == AD_BF16) {
        __nv_bfloat16 h;
        memcpy(&h, &buf[idx * 2], 2);
        return __bfloat162float(h);
    }
    __half h;
    memcpy(&h, &buf[idx * 2], 2);
    return __half2float(h);
}

static std::vector<unsigned char> encode(const std::vector<double>& x, int dt) {
    std::vector<unsigned char> b(x.size() * dsize(dt));
    for (size_t i = 0; i < x.size(); ++i) put(b, (int64_t)i, x[i], dt);
    return b;
}

/* ------------------------------------------------------------------------------------------------ */
/* Reference: unfused, double                                                                        */
/* ------------------------------------------------------------------------------------------------ */

struct Params {
    int variant = AD_VARIANT_ALIGNDISTIL, length_norm = 1;
    double beta = 0.1, beta2 = 10.0, epsilon = 1e-3, T = 1.0, Ts = 1.0, seq_divisor = 0.0;
};

struct Ref {
    int64_t code = AD_OK, token = -1, column = -1, selected = 0;
    double loss = 0.0;
    std::vector<double> weight, token_loss, G; /* [N], [N], [N*V] */
};

/* z*: [N*V] logits (second unused for gkd); mask: [N] (empty = all selected). The ad_fdl formula, straight. */
static Ref reference_loss(int64_t B, int64_t T, int64_t V, const std::vector<double>& zs, const std::vector<double>& zd,
                          const std::vector<double>& z2, const std::vector<unsigned char>& mask, const Params& P) {
    Ref o;
    const int64_t N = B * T;
    const bool gkd = P.variant == AD_VARIANT_GKD;
    o.weight.assign(N, 0.0);
    o.token_loss.assign(N, 0.0);
    o.G.assign(N * V, 0.0);
    std::vector<int64_t> nb(B, 0);
    int64_t nseq = 0;
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) nb[b] += mask.empty() ? 1 : (mask[b * T + t] != 0);
        nseq += nb[b] > 0;
        o.selected += nb[b];
    }
    const double Nd = P.seq_divisor > 0 ? P.seq_divisor : (double)nseq;
    const double Tq = gkd ? 1.0 : P.T;
    std::vector<double> logp(V), logpd(V), logpr(V), logq(V), zt(V);
    std::vector<char> inside(V);
    for (int64_t row = 0; row < N && o.code == AD_OK; ++row) {
        if (!mask.empty() && !mask[row]) continue;
        const double* S = &zs[row * V];
        const double* D = &zd[row * V];
        const double* R = gkd ? D : &z2[row * V];
        bool any = false;
        for (int64_t v = 0; v < V; ++v) {
            const bool fin = std::isfinite(S[v]) && std::isfinite(D[v]) && std::isfinite(R[v]);
            const bool out = S[v] == -kInf && D[v] == -kInf && R[v] == -kInf;
            if (!fin && !out) { o.code = AD_ERR_NONFINITE; o.token = row; o.column = v; break; }
            inside[v] = fin;
            any |= fin;
        }
        if (o.code != AD_OK) break;
        if (!any) { o.code = AD_ERR_EMPTY_ROW; o.token = row; break; }
        auto log_softmax = [&](const double* x, double scale, std::vector<double>& out) {
            double m = -kInf, z = 0.0;
            for (int64_t v = 0; v < V; ++v) if (inside[v]) m = std::max(m, x[v] * scale);
            for (int64_t v = 0; v < V; ++v) if (inside[v]) z += std::exp(x[v] * scale - m);
            for (int64_t v = 0; v < V; ++v) out[v] = inside[v] ? x[v] * scale - m - std::log(z) : -kInf;
        };
        log_softmax(S, 1.0 / P.Ts, logp);
        log_softmax(D, 1.0, logpd);
        log_softmax(R, 1.0, logpr);
        double alpha;
        if (P.variant == AD_VARIANT_ALIGNDISTIL || P.variant == AD_VARIANT_ADAPTIVE) {
            double tvd = 0.0;
            for (int64_t v = 0; v < V; ++v) if (inside[v]) tvd += std::fabs(std::exp(logpd[v]) - std::exp(logpr[v]));
            alpha = P.beta2 * tvd + P.epsilon;
        } else {
            alpha = gkd ? 1.0 : P.beta / P.beta2;
        }
        for (int64_t v = 0; v < V; ++v) {
            if (!inside[v]) { zt[v] = -kInf; continue; }
            switch (P.variant) {
                case AD_VARIANT_ALIGNDISTIL:
                case AD_VARIANT_CONTRAST: zt[v] = D[v] + alpha * (D[v] - R[v]); break;
                case AD_VARIANT_ADAPTIVE:
                case AD_VARIANT_THEOREM1: zt[v] = alpha * D[v] + (1.0 - alpha) * R[v]; break;
                default: zt[v] = D[v]; break;
            }
        }
        log_softmax(zt.data(), 1.0 / Tq, logq);
        double K = 0.0;
        for (int64_t v = 0; v < V; ++v) if (inside[v]) K += std::exp(logp[v]) * (logp[v] - logq[v]);
        const double coef = (P.variant == AD_VARIANT_ALIGNDISTIL || P.variant == AD_VARIANT_ADAPTIVE) ? P.beta / alpha
                            : gkd ? 1.0 : P.beta2;
        const double c = coef * (P.length_norm ? 1.0 / (double)nb[row / T] : 1.0) / Nd;
        o.loss += c * K;
        o.weight[row] = alpha;
        o.token_loss[row] = coef * K;
        for (int64_t v = 0; v < V; ++v)
            if (inside[v]) o.G[row * V + v] = c / P.Ts * std::exp(logp[v]) * (logp[v] - logq[v] - K);
    }
    if (o.code != AD_OK) {
        o.loss = 0.0;
        std::fill(o.weight.begin(), o.weight.end(), 0.0);
        std::fill(o.token_loss.begin(), o.token_loss.end(), 0.0);
        std::fill(o.G.begin(), o.G.end(), 0.0);
    }
    return o;
}

/* Z[N,V] = X[N,H] W[V,H]^T */
static std::vector<double> matmul_t(const std::vector<double>& X, const std::vector<double>& W, int64_t N, int64_t H, int64_t V) {
    std::vector<double> Z(N * V, 0.0);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t v = 0; v < V; ++v) {
            double a = 0.0;
            for (int64_t h = 0; h < H; ++h) a += X[n * H + h] * W[v * H + h];
            Z[n * V + v] = a;
        }
    return Z;
}

/* ------------------------------------------------------------------------------------------------ */
/* Cases                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

struct Case {
    std::string name;
    int64_t B = 3, T = 5, H = 24, V = 37, chunk = 4;
    int dt = AD_BF16;
    Params P;
    int mask_mode = 1;          /* 0: NULL, 1: random, 2: random with one empty sequence */
    bool dpo_logits = false;    /* DPO teacher given as logits instead of hidden + head */
    bool second_logits = false;
    int logits_dt = AD_F32;     /* dtype of teacher logits when given */
    int64_t logits_pad = 3;     /* row stride = V + pad */
    bool outputs = true;        /* weight / token_loss given */
    int inject = 0;             /* 1: NaN in a student hidden row of the first chunk, 2: -inf in a DPO logit of the last chunk */
};

static uint64_t g_seed = 777;

struct Dev {
    void* p = nullptr;
    explicit Dev(size_t bytes) { CK(cudaMalloc(&p, bytes ? bytes : 16)); }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
};

static void up(Dev& d, const std::vector<unsigned char>& h) { CK(cudaMemcpy(d.p, h.data(), h.size(), cudaMemcpyHostToDevice)); }

static std::vector<double> grid(std::mt19937_64& rng, int64_t n) {
    std::uniform_int_distribution<int> u(-2, 2);
    std::vector<double> x(n);
    for (auto& v : x) v = u(rng) / 4.0;
    return x;
}

static int run_case(const Case& c) {
    std::mt19937_64 rng(g_seed++);
    const int64_t B = c.B, T = c.T, N = B * T, H = c.H, V = c.V;
    const bool gkd = c.P.variant == AD_VARIANT_GKD;
    std::vector<double> Xs = grid(rng, N * H), Ws = grid(rng, V * H), Xd = grid(rng, N * H), Wd = grid(rng, V * H),
                        X2 = grid(rng, N * H), W2 = grid(rng, V * H);
    std::vector<unsigned char> mask;
    if (c.mask_mode > 0) {
        mask.assign(N, 1);
        std::bernoulli_distribution keep(0.7);
        for (auto& m : mask) m = keep(rng) ? 1 : 0;
        mask[0] = 1;
        if (c.mask_mode == 2) for (int64_t t = 0; t < T; ++t) mask[1 * T + t] = 0;
    }
    int64_t bad_row = -1, bad_col = -1;
    if (c.inject == 1) {
        bad_row = 0; /* selected (mask[0] = 1), in the first chunk */
        Xs[bad_row * H + 1] = NAN;
    }
    std::vector<double> zs = matmul_t(Xs, Ws, N, H, V), zd = matmul_t(Xd, Wd, N, H, V), z2 = matmul_t(X2, W2, N, H, V);
    if (c.inject == 2) {
        bad_row = N - 1;
        if (!mask.empty()) mask[bad_row] = 1;
        bad_col = V / 2;
        zd[bad_row * V + bad_col] = -kInf; /* -inf in one teacher only: AD_ERR_NONFINITE at this column */
    }
    const Ref ref = reference_loss(B, T, V, zs, zd, z2, mask, c.P);
    std::vector<double> dW0(V * H);
    for (auto& w : dW0) w = std::uniform_real_distribution<double>(-1, 1)(rng);

    /* device buffers; outputs poisoned (NaN bytes) so anything left unwritten shows */
    const int dt = c.dt, es = dsize(dt);
    Dev dXs(N * H * es), dWs(V * H * es), dXd(N * H * es), dWd(V * H * es), dX2(N * H * es), dW2(V * H * es);
    up(dXs, encode(Xs, dt)); up(dWs, encode(Ws, dt)); up(dXd, encode(Xd, dt)); up(dWd, encode(Wd, dt));
    up(dX2, encode(X2, dt)); up(dW2, encode(W2, dt));
    const int64_t ls = V + c.logits_pad;
    auto logits_buf = [&](const std::vector<double>& z) {
        std::vector<double> pad(N * ls, 0.0);
        for (int64_t n = 0; n < N; ++n) for (int64_t v = 0; v < V; ++v) pad[n * ls + v] = z[n * V + v];
        return encode(pad, c.logits_dt);
    };
    Dev dZd(N * ls * dsize(c.logits_dt)), dZ2(N * ls * dsize(c.logits_dt));
    if (c.dpo_logits) up(dZd, logits_buf(zd));
    if (c.second_logits) up(dZ2, logits_buf(z2));
    Dev dMask(N);
    if (!mask.empty()) up(dMask, mask);
    Dev dGradX(N * H * es), dGradW(V * H * 4), dWeight(N * 4), dTl(N * 4), dLoss(8), dStatus(32);
    CK(cudaMemset(dGradX.p, 0xff, N * H * es));
    CK(cudaMemset(dWeight.p, 0xff, N * 4));
    CK(cudaMemset(dTl.p, 0xff, N * 4));
    std::vector<float> dW0f(V * H);
    for (int64_t i = 0; i < V * H; ++i) dW0f[i] = (float)dW0[i];
    CK(cudaMemcpy(dGradW.p, dW0f.data(), V * H * 4, cudaMemcpyHostToDevice));
    for (int64_t i = 0; i < V * H; ++i) dW0[i] = dW0f[i]; /* the exact start value */
    /* the unfused backward: dXs = G Ws, dWs = dWs0 + G^T Xs */
    std::vector<double> dXref(N * H, 0.0), dWref = dW0;
    for (int64_t n = 0; n < N; ++n)
        for (int64_t v = 0; v < V; ++v) {
            const double g = ref.G[n * V + v];
            if (g == 0.0) continue;
            for (int64_t h = 0; h < H; ++h) {
                dXref[n * H + h] += g * Ws[v * H + h];
                dWref[v * H + h] += g * Xs[n * H + h];
            }
        }

    ad_fll_problem p{};
    p.batch = B; p.seq = T; p.hidden = H; p.vocab = V; p.dtype = dt;
    p.student_hidden = dXs.p; p.student_head = dWs.p;
    if (c.dpo_logits) { p.dpo_logits = dZd.p; p.dpo_logits_dtype = c.logits_dt; p.dpo_logits_stride = ls; }
    else { p.dpo_hidden = dXd.p; p.dpo_head = dWd.p; }
    if (!gkd) {
        if (c.second_logits) { p.second_logits = dZ2.p; p.second_logits_dtype = c.logits_dt; p.second_logits_stride = ls; }
        else { p.second_hidden = dX2.p; p.second_head = dW2.p; }
    }
    p.mask = mask.empty() ? nullptr : static_cast<const uint8_t*>(dMask.p);
    p.mask_stride_b = T; p.mask_stride_t = 1;
    p.d_student_hidden = dGradX.p; p.d_student_head = static_cast<float*>(dGradW.p);
    p.weight = c.outputs ? static_cast<float*>(dWeight.p) : nullptr;
    p.token_loss = c.outputs ? static_cast<float*>(dTl.p) : nullptr;
    p.variant = c.P.variant; p.length_norm = c.P.length_norm;
    p.beta = c.P.beta; p.beta2 = c.P.beta2; p.epsilon = c.P.epsilon; p.temperature = c.P.T;
    p.student_temperature = c.P.Ts; p.seq_divisor = c.P.seq_divisor;
    p.chunk_tokens = c.chunk;
    int64_t wsb = 0;
    if (ad_fll_cuda_workspace_bytes(&p, &wsb) != AD_OK) { printf("FAIL %s: workspace_bytes: %s\n", c.name.c_str(), ad_cuda_last_error()); return 1; }
    Dev ws(wsb);
    CK(cudaMemset(ws.p, 0xff, wsb)); /* stale workspace must not matter */
    int rc = ad_fll_cuda(&p, ws.p, wsb, static_cast<double*>(dLoss.p), static_cast<int64_t*>(dStatus.p), nullptr);
    if (rc != AD_OK) { printf("FAIL %s: ad_fll_cuda returned %d: %s\n", c.name.c_str(), rc, ad_cuda_last_error()); return 1; }
    CK(cudaDeviceSynchronize());
    int64_t st[4];
    double loss;
    CK(cudaMemcpy(st, dStatus.p, 32, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&loss, dLoss.p, 8, cudaMemcpyDeviceToHost));
    std::vector<unsigned char> gx(N * H * es);
    std::vector<float> gw(V * H), wt(N), tl(N);
    CK(cudaMemcpy(gx.data(), dGradX.p, gx.size(), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(gw.data(), dGradW.p, V * H * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(wt.data(), dWeight.p, N * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(tl.data(), dTl.p, N * 4, cudaMemcpyDeviceToHost));

    int fails = 0;
    auto fail = [&](const char* what, int64_t i, int64_t j, double x, double r, double bound) {
        if (fails < 8) printf("  %s: %s[%lld,%lld] = %.10g, reference %.10g, bound %.3g\n", c.name.c_str(), what,
                              (long long)i, (long long)j, x, r, bound);
        ++fails;
    };
    const double tol = dt == AD_F32 && c.logits_dt == AD_F32 ? 1e-5 : 1e-4;
    const double u = unit_roundoff(dt), e32 = std::ldexp(1.0, -24);

    if (st[0] != ref.code) fail("status code", 0, 0, (double)st[0], (double)ref.code, 0);
    if (ref.code != AD_OK) {
        if (st[1] != ref.token) fail("status token", 0, 0, (double)st[1], (double)ref.token, 0);
        if (c.inject == 2 && st[2] != bad_col) fail("status column", 0, 0, (double)st[2], (double)bad_col, 0);
        if (loss != 0.0) fail("loss after error", 0, 0, loss, 0, 0);
        for (int64_t i = 0; i < N * H; ++i) if (get(gx, i, dt) != 0.0) { fail("dXs after error", i / H, i % H, get(gx, i, dt), 0, 0); break; }
        if (c.outputs) for (int64_t i = 0; i < N; ++i) if (wt[i] != 0.0f || tl[i] != 0.0f) { fail("weight/token_loss after error", i, 0, wt[i], 0, 0); break; }
        for (int64_t i = 0; i < V * H; ++i) {
            /* the failing row is in the first chunk (inject 1): dWs must be untouched; otherwise finite */
            if (c.inject == 1 ? gw[i] != (float)dW0[i] : !std::isfinite(gw[i])) { fail("dWs after error", i / H, i % H, gw[i], dW0[i], 0); break; }
        }
    } else {
        if (st[3] != ref.selected) fail("selected rows", 0, 0, (double)st[3], (double)ref.selected, 0);
        if (!(std::fabs(loss - ref.loss) <= tol * std::max(1.0, std::fabs(ref.loss)))) fail("loss", 0, 0, loss, ref.loss, tol);
        if (c.outputs)
            for (int64_t n = 0; n < N; ++n) {
                if (!(std::fabs(wt[n] - ref.weight[n]) <= tol * std::max(1.0, std::fabs(ref.weight[n])))) fail("weight", n, 0, wt[n], ref.weight[n], tol);
                if (!(std::fabs(tl[n] - ref.token_loss[n]) <= tol * std::max(1.0, std::fabs(ref.token_loss[n])))) fail("token_loss", n, 0, tl[n], ref.token_loss[n], tol);
            }
        std::vector<double> gnorm(N, 0.0), wnorm(H, 0.0);
        for (int64_t n = 0; n < N; ++n) for (int64_t v = 0; v < V; ++v) gnorm[n] += ref.G[n * V + v] * ref.G[n * V + v];
        for (auto& g : gnorm) g = std::sqrt(g);
        for (int64_t v = 0; v < V; ++v) for (int64_t h = 0; h < H; ++h) wnorm[h] += Ws[v * H + h] * Ws[v * H + h];
        for (auto& w : wnorm) w = std::sqrt(w);
        for (int64_t n = 0; n < N; ++n) {
            const bool sel = mask.empty() || mask[n];
            for (int64_t h = 0; h < H; ++h) {
                const double x = get(gx, n * H + h, dt), r = dXref[n * H + h];
                if (!sel) { if (x != 0.0) fail("dXs (row not selected)", n, h, x, 0.0, 0.0); continue; }
                double abs_sum = 0.0;
                for (int64_t v = 0; v < V; ++v) abs_sum += std::fabs(ref.G[n * V + v] * Ws[v * H + h]);
                const double bound = (10 * tol + u) * gnorm[n] * wnorm[h] + u * std::fabs(r) + V * e32 * abs_sum + 1e-30;
                if (!(std::fabs(x - r) <= bound)) fail("dXs", n, h, x, r, bound);
            }
        }
        for (int64_t v = 0; v < V; ++v)
            for (int64_t h = 0; h < H; ++h) {
                double b1 = 0.0, abs_sum = 0.0;
                for (int64_t n = 0; n < N; ++n) {
                    const double gx_ = std::fabs(ref.G[n * V + v] * Xs[n * H + h]);
                    b1 += ((10 * tol + u) * gnorm[n] + 2 * u * std::fabs(ref.G[n * V + v])) * std::fabs(Xs[n * H + h]);
                    abs_sum += gx_;
                }
                const double bound = b1 + N * e32 * (std::fabs(dW0[v * H + h]) + abs_sum) + 1e-30;
                const double x = gw[v * H + h], r = dWref[v * H + h];
                if (!(std::fabs(x - r) <= bound)) fail("dWs", v, h, x, r, bound);
            }
    }
    printf("%s %s (N=%lld H=%lld V=%lld C=%lld %s)\n", fails ? "FAIL" : "ok  ", c.name.c_str(), (long long)N,
           (long long)H, (long long)V, (long long)c.chunk, dname(dt));
    return fails ? 1 : 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Argument checks (host only: validation happens before any CUDA call)                              */
/* ------------------------------------------------------------------------------------------------ */

static ad_fll_problem fake_problem() {
    /* never dereferenced: validation only looks at the values */
    static double dummy[64];
    static float dummyf[64];
    ad_fll_problem p{};
    p.batch = 2; p.seq = 3; p.hidden = 8; p.vocab = 16; p.dtype = AD_BF16;
    p.student_hidden = dummy; p.student_head = dummy;
    p.dpo_hidden = dummy; p.dpo_head = dummy;
    p.second_hidden = dummy; p.second_head = dummy;
    p.d_student_hidden = dummy; p.d_student_head = dummyf;
    p.variant = AD_VARIANT_ALIGNDISTIL; p.length_norm = 1;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
    return p;
}

alignas(256) static unsigned char g_host_ws[1 << 16];

static int argument_checks() {
    int fails = 0;
    unsigned char* ws = g_host_ws;
    static double loss;
    static int64_t status[4];
    auto expect = [&](const char* name, ad_fll_problem p, int code, int64_t wsb = -1, void* w = g_host_ws) {
        int64_t need = 0;
        (void)ad_fll_cuda_workspace_bytes(&p, &need);
        const int rc = ad_fll_cuda(&p, w, wsb >= 0 ? wsb : need, &loss, status, nullptr);
        const bool ok = rc == code && (code == AD_OK || ad_cuda_last_error()[0] != '\0');
        printf("%s arg %s: rc %d (want %d): %s\n", ok ? "ok  " : "FAIL", name, rc, code, ad_cuda_last_error());
        fails += !ok;
    };
    ad_fll_problem p = fake_problem();
    { auto q = p; q.batch = 0; expect("batch 0", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.dtype = 7; expect("dtype", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.variant = 9; expect("variant", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.length_norm = 2; expect("length_norm", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.beta = 0; expect("beta 0", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.temperature = NAN; expect("temperature NaN", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.seq_divisor = INFINITY; expect("seq_divisor inf", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.chunk_tokens = -1; expect("chunk -1", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.student_head = nullptr; expect("student head NULL", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.d_student_head = nullptr; expect("dWs NULL", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.dpo_logits = q.dpo_hidden; q.dpo_logits_stride = 16; expect("dpo hidden and logits", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.dpo_head = nullptr; expect("dpo head missing", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.second_hidden = nullptr; q.second_head = nullptr; expect("second missing", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.dpo_hidden = nullptr; q.dpo_head = nullptr; q.dpo_logits = ws; q.dpo_logits_dtype = AD_F32; q.dpo_logits_stride = 15;
      expect("logits stride < V", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.student_hidden = reinterpret_cast<const char*>(q.student_hidden) + 1; expect("misaligned hidden", q, AD_ERR_INVALID_ARGUMENT); }
    { auto q = p; q.hidden = (int64_t)1 << 32; expect("hidden > INT_MAX", q, AD_ERR_INVALID_ARGUMENT); }
    expect("workspace too small", p, AD_ERR_INVALID_ARGUMENT, 8);
    expect("workspace misaligned", p, AD_ERR_INVALID_ARGUMENT, -1, ws + 8);
    expect("workspace NULL", p, AD_ERR_INVALID_ARGUMENT, -1, nullptr);
    {
        const int rc = ad_fll_cuda(nullptr, ws, sizeof g_host_ws, &loss, status, nullptr);
        printf("%s arg NULL problem: rc %d\n", rc == AD_ERR_INVALID_ARGUMENT ? "ok  " : "FAIL", rc);
        fails += rc != AD_ERR_INVALID_ARGUMENT;
    }
    { auto q = p; q.variant = AD_VARIANT_GKD; q.second_hidden = nullptr; q.second_head = nullptr;
      int64_t a = 0, b = 0; ad_fll_cuda_workspace_bytes(&p, &a); ad_fll_cuda_workspace_bytes(&q, &b);
      const bool ok = b < a; printf("%s gkd needs no second-teacher workspace (%lld < %lld)\n", ok ? "ok  " : "FAIL", (long long)b, (long long)a); fails += !ok; }
    { auto q = p; q.batch = 8; q.seq = 2048; q.hidden = 1536; q.vocab = 151936; q.chunk_tokens = 0;
      int64_t C = 0; ad_fll_cuda_chunk_tokens(&q, &C);
      const bool ok = C == 1024; printf("%s auto chunk bf16 H=1536 V=151936: %lld (want 1024)\n", ok ? "ok  " : "FAIL", (long long)C); fails += !ok; }
    return fails;
}

/* In a child process (no CUDA initialised): AD_CUBLAS_LIBRARY pointing nowhere must give AD_ERR_UNSUPPORTED
 * with a message naming the variable, never a crash. */
static int missing_cublas_check() {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
        setenv("AD_CUBLAS_LIBRARY", "/nonexistent/libcublas.so.99", 1);
        alignas(256) static unsigned char ws[1 << 16];
        static double loss;
        static int64_t status[4];
        ad_fll_problem p = fake_problem();
        const int rc = ad_fll_cuda(&p, ws, sizeof ws, &loss, status, nullptr);
        const bool ok = rc == AD_ERR_UNSUPPORTED && strstr(ad_cuda_last_error(), "AD_CUBLAS_LIBRARY") != nullptr;
        printf("%s missing cuBLAS: rc %d: %s\n", ok ? "ok  " : "FAIL", rc, ad_cuda_last_error());
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    int wst = 0;
    if (waitpid(pid, &wst, 0) < 0) return 1;
    return WIFEXITED(wst) && WEXITSTATUS(wst) == 0 ? 0 : 1;
}

int main() {
    int fails = missing_cublas_check();
    fails += argument_checks();
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("no GPU: only the host-side checks ran (%d failures)\n", fails);
        return fails ? 1 : 77;
    }
    std::vector<Case> cases;
    const int variants[5] = {AD_VARIANT_ALIGNDISTIL, AD_VARIANT_CONTRAST, AD_VARIANT_ADAPTIVE, AD_VARIANT_THEOREM1, AD_VARIANT_GKD};
    const char* vnames[5] = {"aligndistil", "contrast", "adaptive", "theorem1", "gkd"};
    for (int dt : {AD_F32, AD_BF16, AD_F16})
        for (int vi = 0; vi < 5; ++vi)
            for (int ln = 0; ln < 2; ++ln) {
                Case c;
                c.name = std::string(vnames[vi]) + "/" + dname(dt) + (ln ? "/len_norm" : "/no_len_norm");
                c.dt = dt;
                c.P.variant = variants[vi];
                c.P.length_norm = ln;
                c.mask_mode = 1 + ln; /* with length_norm: one empty sequence too */
                cases.push_back(c);
            }
    { Case c; c.name = "no mask, C=1"; c.mask_mode = 0; c.chunk = 1; cases.push_back(c); }
    { Case c; c.name = "C=N"; c.chunk = 15; cases.push_back(c); }
    { Case c; c.name = "C auto (N < 256)"; c.chunk = 0; cases.push_back(c); }
    { Case c; c.name = "C > N"; c.chunk = 100; cases.push_back(c); }
    { Case c; c.name = "seq_divisor 7, T 2, Ts 1.5"; c.P.seq_divisor = 7; c.P.T = 2.0; c.P.Ts = 1.5; cases.push_back(c); }
    { Case c; c.name = "no weight/token_loss"; c.outputs = false; cases.push_back(c); }
    { Case c; c.name = "dpo as f32 logits"; c.dpo_logits = true; cases.push_back(c); }
    { Case c; c.name = "both teachers as bf16 logits"; c.dpo_logits = true; c.second_logits = true; c.logits_dt = AD_BF16; cases.push_back(c); }
    { Case c; c.name = "second as logits, adaptive, f16"; c.second_logits = true; c.dt = AD_F16; c.logits_dt = AD_F16; c.P.variant = AD_VARIANT_ADAPTIVE; cases.push_back(c); }
    { Case c; c.name = "gkd, dpo as logits"; c.dpo_logits = true; c.P.variant = AD_VARIANT_GKD; cases.push_back(c); }
    { Case c; c.name = "larger odd shape"; c.B = 5; c.T = 13; c.H = 40; c.V = 203; c.chunk = 16; cases.push_back(c); }
    { Case c; c.name = "error: NaN hidden in chunk 0"; c.inject = 1; cases.push_back(c); }
    { Case c; c.name = "error: -inf DPO logit in last chunk"; c.inject = 2; c.dpo_logits = true; cases.push_back(c); }
    for (const Case& c : cases) fails += run_case(c);
    printf("%s: %d failure(s)\n", fails ? "FAILED" : "PASSED", fails);
    return fails ? 1 : 0;
}
