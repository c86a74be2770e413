/*
 * fused_distill_loss.cu: the AlignDistil fused distill loss on the GPU (ad_fdl_cuda and
 * ad_fdl_cuda_workspace_bytes of native/include/aligndistil.h).
 *
 * What it computes. For every selected token row (b, t) of the [B, T, V] student, DPO and second-teacher
 * logits: p = softmax(zs / Ts), the token weight alpha (TVD of the two teachers for aligndistil / adaptive,
 * a constant otherwise), the teacher q = softmax(z* / T), K = KL(p || q), token_loss = coef * K, the three
 * metrics, and the gradient row d loss / d zs = (c / Ts) p (log p - log q - K); the batch loss
 * (1/N) sum_b (1/n_b) sum_t coef K lands in the caller's device double.
 *
 * How. Four kernels on the caller's stream, fully asynchronous (no host synchronisation, no allocation):
 *   1. aligndistil_fdl_mask_count_kernel   (1 CTA) resets the status words and counts n_b, the number of
 *                                           sequences with a selected row and the selected rows.
 *   2. aligndistil_fdl_row_kernel<...>      one CTA per token row (grid-stride over rows): pass 0 (maxima and
 *                                           input validation), pass A (student / teacher partition sums and
 *                                           student-weighted logit sums), pass B (TVD), pass C (online
 *                                           log-sum-exp of the combined teacher), pass D (gradient). Each
 *                                           pass re-reads the rows from global memory (L2 when it can).
 *   3. aligndistil_fdl_finalize_kernel     (1 CTA) fixed-order (deterministic) sum of the per-row loss terms.
 *   4. aligndistil_fdl_error_zero_kernel   exits at once unless a row reported an error; then it zeroes the
 *                                           separate gradient buffer and the optional per-row outputs.
 *
 * Exps per element (the MUFU-bound part on H100/H200): pass A 3 (2 for gkd), pass B 2 (aligndistil / adaptive
 * only), pass C 1 + 1/8 (one rescale per chunk of 8), pass D 1: 7.125 for aligndistil / adaptive, 5.125 for
 * contrast / theorem1, 4.125 for gkd. Each exp is exp_fast (fused_distill_loss_common.cuh): one FMUL by log2 e and
 * one ex2.approx.ftz (MUFU.EX2) instead of expf's range reduction; the error bound is in that helper's comment.
 *
 * Which kernel runs. ad_fdl_cuda picks this kernel or the Hopper cluster kernel of fused_distill_loss_hopper.cu
 * (choose_kernel below; AD_CUDA_KERNEL / ad_cuda_set_kernel); this one is the portable default and the fallback.
 *
 * What it never materialises. No [tokens x V] buffer besides the caller's gradient: the rows are streamed
 * through registers and only per-row scalars (one double per row, n_b per sequence, a few counters) live in
 * the caller's workspace (ad_fdl_cuda_workspace_bytes = 64 + 8 B + 8 B T bytes).
 *
 * What it overwrites. The gradient rows (all of them: rows that are not selected get zeros; with
 * grad == student, in place, the student logits), weight / token_loss / metrics when given, *d_loss,
 * d_status[0..3] and the workspace. The three logit inputs are only read (except in place).
 *
 * gkd. The second teacher row is never read (problem->second may be NULL); metrics [0] and [2], which need
 * it, are written as 0.
 *
 * Precision. f32 arithmetic per element on logits centred on their row maxima; every row sum is gathered
 * in f32 over chunks of 8 columns and folded into f64 per thread, block reductions are f64, and the row
 * scalars (K, LSE, alpha, coefficients) are computed in f64.
 */
#include "aligndistil.h"
#include "ad_cuda_internal.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <atomic>
#include <climits>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fused_distill_loss_common.cuh"


/* ------------------------------------------------------------------------------------------------ */
/* Kernel 1: status reset and mask counts                                                            */
/* ------------------------------------------------------------------------------------------------ */

__global__ void __launch_bounds__(kSmallThreads)
aligndistil_fdl_mask_count_kernel(FdlParams p) {
    __shared__ double sh[2 * 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    long long seqs = 0, rows = 0; /* per warp (lane 0 holds the truth) */
    for (int64_t b = warp; b < p.B; b += nwarps) {
        long long n = 0;
        if (p.mask == nullptr) {
            n = p.T;
        } else {
            for (int64_t t = lane; t < p.T; t += 32) n += p.mask[b * p.m_sb + t * p.m_st] != 0;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
        }
        if (lane == 0) p.nb[b] = n;
        seqs += n > 0;
        rows += n;
    }
    /* counts are exact in f64 far beyond any realistic B*T (< 2^53) */
    double v[2] = {lane == 0 ? static_cast<double>(seqs) : 0.0, lane == 0 ? static_cast<double>(rows) : 0.0};
    block_sum<2>(v, sh);
    if (threadIdx.x == 0) {
        p.header[0] = static_cast<int64_t>(v[0]);
        p.header[1] = static_cast<int64_t>(v[1]);
        p.status[0] = AD_OK;
        p.status[1] = -1;
        p.status[2] = -1;
        p.status[3] = static_cast<int64_t>(v[1]);
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Kernel 2: the rows                                                                                 */
/* ------------------------------------------------------------------------------------------------ */

/* DS: student dtype, DT: both teacher dtypes, DG: gradient dtype; kAny = read from the problem at run time. */
template <int DS, int DT, int DG>
__global__ void __launch_bounds__(kRowThreads, 2) /* <= 64 registers, no spills (sm_80, sm_90a) */
aligndistil_fdl_row_kernel(FdlParams p) {
    __shared__ double sh_d[6 * 32];
    __shared__ float sh_f[3 * 32];
    __shared__ long long sh_ll[32];
    __shared__ int sh_flag;

    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t V = p.V, rows = p.B * p.T;
    const int64_t nchunks = (V + kChunk - 1) / kChunk;
    const bool has_r = p.has_second != 0;
    const bool adaptive_weight = p.variant == AD_VARIANT_ALIGNDISTIL || p.variant == AD_VARIANT_ADAPTIVE;
    const float inv_ts = static_cast<float>(1.0 / p.student_temperature);
    const double T_teacher = p.variant == AD_VARIANT_GKD ? 1.0 : p.temperature;
    const float inv_t = static_cast<float>(1.0 / T_teacher);
    const int64_t nseq = p.header[0];
    const double N = p.seq_divisor > 0.0 ? p.seq_divisor : static_cast<double>(nseq);

    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t b = row / p.T, t = row - b * p.T;
        /* Once any row has failed, the outputs will be zeroed anyway: stop working. */
        if (tid == 0) sh_flag = *reinterpret_cast<volatile int64_t*>(p.status) != AD_OK;
        __syncthreads();
        const bool failed = sh_flag != 0;
        __syncthreads();
        if (failed) break;

        void* grow = static_cast<char*>(p.g) + (b * p.g_sb + t * p.g_st) * (p.g_dt == AD_F32 ? 4 : 2);
        const bool selected = p.mask == nullptr || p.mask[b * p.m_sb + t * p.m_st] != 0;
        if (!selected) {
            zero_row(grow, p.g_dt, V, tid, nt);
            if (tid == 0) {
                p.contrib[row] = 0.0;
                if (p.weight) p.weight[row] = 0.0f;
                if (p.token_loss) p.token_loss[row] = 0.0f;
                if (p.metrics) {
                    p.metrics[row * AD_FDL_METRICS + 0] = 0.0f;
                    p.metrics[row * AD_FDL_METRICS + 1] = 0.0f;
                    p.metrics[row * AD_FDL_METRICS + 2] = 0.0f;
                }
            }
            continue;
        }

        const void* srow = row_ptr(p.s, p.s_dt, b, t, p.s_sb, p.s_st);
        const void* drow = row_ptr(p.d, p.d_dt, b, t, p.d_sb, p.d_st);
        const void* rrow = has_r ? row_ptr(p.r, p.r_dt, b, t, p.r_sb, p.r_st) : drow;
        const bool s_al = is_aligned16(srow), d_al = is_aligned16(drow), r_al = is_aligned16(rrow);
        const bool g_al = is_aligned16(grow);
        float xs[kChunk], xd[kChunk], xr[kChunk];

        /* ---- Pass 0: row maxima and validation ------------------------------------------------- */
        float mx[3] = {-INFINITY, -INFINITY, -INFINITY};
        long long bad = LLONG_MAX;
        for (int64_t k = tid; k < nchunks; k += nt) {
            load_chunk<DS>(srow, p.s_dt, s_al, k, V, xs);
            load_chunk<DT>(drow, p.d_dt, d_al, k, V, xd);
            if (has_r) load_chunk<DT>(rrow, p.r_dt, r_al, k, V, xr);
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                const float r = has_r ? xr[j] : xd[j];
                mx[0] = fmaxf(mx[0], xs[j]);
                mx[1] = fmaxf(mx[1], xd[j]);
                mx[2] = fmaxf(mx[2], r);
                /* a column is fine when all its values are finite, or all are -inf (outside the vocabulary) */
                const bool finite = isfinite(xs[j]) && isfinite(xd[j]) && isfinite(r);
                const bool outside = xs[j] == -INFINITY && xd[j] == -INFINITY && r == -INFINITY;
                if (!finite && !outside && bad == LLONG_MAX) bad = k * kChunk + j;
            }
        }
        block_max<3>(mx, sh_f);
        bad = block_min_ll(bad, sh_ll);
        if (bad != LLONG_MAX) {
            if (tid == 0) report_error(p.status, AD_ERR_NONFINITE, row, bad);
            continue; /* never write this row; the zeroing kernel cleans up */
        }
        if (mx[0] == -INFINITY) { /* no column inside the vocabulary */
            if (tid == 0) report_error(p.status, AD_ERR_EMPTY_ROW, row, -1);
            continue;
        }
        const float ms = mx[0], md = mx[1], mr = mx[2];

        /* ---- Pass A: Z_s, Z_d, Z_r, U_s = sum e^s' s', U_d = sum e^s' d', U_r = sum e^s' r' ----- */
        /* Columns outside the vocabulary are exactly those with d == -inf once validation passed. */
        double acc[6] = {0, 0, 0, 0, 0, 0};
        for (int64_t k = tid; k < nchunks; k += nt) {
            load_chunk<DS>(srow, p.s_dt, s_al, k, V, xs);
            load_chunk<DT>(drow, p.d_dt, d_al, k, V, xd);
            if (has_r) load_chunk<DT>(rrow, p.r_dt, r_al, k, V, xr);
            float c[6] = {0, 0, 0, 0, 0, 0};
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                if (xd[j] != -INFINITY) {
                    const float sp = (xs[j] - ms) * inv_ts;
                    const float dp = xd[j] - md;
                    const float es = exp_fast(sp);
                    c[0] += es;
                    c[1] += exp_fast(dp);
                    c[3] = fmaf(es, sp, c[3]);
                    c[4] = fmaf(es, dp, c[4]);
                    if (has_r) {
                        const float rp = xr[j] - mr;
                        c[2] += exp_fast(rp);
                        c[5] = fmaf(es, rp, c[5]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < 6; ++i) acc[i] += static_cast<double>(c[i]);
        }
        block_sum<6>(acc, sh_d);
        const double Zs = acc[0], Zd = acc[1], Zr = acc[2], Us = acc[3], Ud = acc[4], Ur = acc[5];

        /* ---- Pass B: tvd = sum |pd - pr| -> alpha ------------------------------------------------ */
        double alpha;
        if (adaptive_weight) {
            const float izd = static_cast<float>(1.0 / Zd), izr = static_cast<float>(1.0 / Zr);
            double tv[1] = {0.0};
            for (int64_t k = tid; k < nchunks; k += nt) {
                load_chunk<DT>(drow, p.d_dt, d_al, k, V, xd);
                load_chunk<DT>(rrow, p.r_dt, r_al, k, V, xr);
                float c = 0.0f;
#pragma unroll
                for (int j = 0; j < kChunk; ++j)
                    if (xd[j] != -INFINITY) c += fabsf(exp_fast(xd[j] - md) * izd - exp_fast(xr[j] - mr) * izr);
                tv[0] += static_cast<double>(c);
            }
            block_sum<1>(tv, sh_d);
            alpha = p.beta2 * tv[0] + p.epsilon;
        } else if (p.variant == AD_VARIANT_GKD) {
            alpha = 1.0;
        } else {
            alpha = p.beta / p.beta2;
        }

        /* Teacher (centred): z' = a d' + b r'. a, b are rounded to f32 once and used the same way in the
         * element passes and in K, so the K identity stays consistent. */
        double a, bcoef;
        switch (p.variant) {
            case AD_VARIANT_ALIGNDISTIL:
            case AD_VARIANT_CONTRAST: a = 1.0 + alpha; bcoef = -alpha; break;
            case AD_VARIANT_ADAPTIVE:
            case AD_VARIANT_THEOREM1: a = alpha; bcoef = 1.0 - alpha; break;
            default: a = 1.0; bcoef = 0.0; break;
        }
        const float af = static_cast<float>(a), bf = has_r ? static_cast<float>(bcoef) : 0.0f;

        /* ---- Pass C: LSE* = log sum exp(z'/T), online (max, sum) per thread ---------------------- */
        float tm = -INFINITY;  /* thread max of z'/T */
        double tsum = 0.0;     /* sum of exp(z'/T - tm) */
        for (int64_t k = tid; k < nchunks; k += nt) {
            load_chunk<DT>(drow, p.d_dt, d_al, k, V, xd);
            if (has_r) load_chunk<DT>(rrow, p.r_dt, r_al, k, V, xr);
            float x[kChunk];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                const float zp = has_r ? fmaf(af, xd[j] - md, bf * (xr[j] - mr)) : af * (xd[j] - md);
                x[j] = xd[j] != -INFINITY ? zp * inv_t : -INFINITY;
                cm = fmaxf(cm, x[j]);
            }
            if (cm == -INFINITY) continue;
            float cs = 0.0f;
#pragma unroll
            for (int j = 0; j < kChunk; ++j) cs += x[j] != -INFINITY ? exp_fast(x[j] - cm) : 0.0f;
            if (cm > tm) {
                tsum = tsum * static_cast<double>(exp_fast(tm - cm)) + static_cast<double>(cs);
                tm = cm;
            } else {
                tsum += static_cast<double>(cs) * static_cast<double>(exp_fast(cm - tm));
            }
        }
        float bm[1] = {tm};
        block_max<1>(bm, sh_f);
        const float M = bm[0]; /* finite: the row has an in-vocabulary column */
        double ssum[1] = {tm == -INFINITY ? 0.0 : tsum * static_cast<double>(exp_fast(tm - M))};
        block_sum<1>(ssum, sh_d);
        const double log_s = log(ssum[0]);            /* LSE* - M */
        const double lse_star = static_cast<double>(M) + log_s;

        /* ---- Row scalars (f64) -------------------------------------------------------------------- */
        const double logZs = log(Zs), logZd = log(Zd), logZr = has_r ? log(Zr) : 0.0;
        const double Ep_logp = Us / Zs - logZs;                                 /* sum p log p */
        const double Ep_zt = (static_cast<double>(af) * Ud + static_cast<double>(bf) * Ur) / Zs *
                             static_cast<double>(inv_t);                        /* sum p z'/T */
        const double K = Ep_logp - (Ep_zt - lse_star);
        double coef;
        switch (p.variant) {
            case AD_VARIANT_ALIGNDISTIL:
            case AD_VARIANT_ADAPTIVE: coef = p.beta / alpha; break;
            case AD_VARIANT_CONTRAST:
            case AD_VARIANT_THEOREM1: coef = p.beta2; break;
            default: coef = 1.0; break;
        }
        const double nb = static_cast<double>(p.nb[b]);
        const double c = coef * (p.length_norm ? 1.0 / nb : 1.0) / N;
        if (tid == 0) {
            p.contrib[row] = c * K;
            if (p.weight) p.weight[row] = static_cast<float>(alpha);
            if (p.token_loss) p.token_loss[row] = static_cast<float>(coef * K);
            if (p.metrics) {
                float* m = p.metrics + row * AD_FDL_METRICS;
                m[0] = has_r ? static_cast<float>(p.beta * ((Ud - Ur) / Zs - logZd + logZr)) : 0.0f;
                m[1] = static_cast<float>(Ep_logp - (Ud / Zs - logZd));
                m[2] = has_r ? static_cast<float>(Ep_logp - (Ur / Zs - logZr)) : 0.0f;
            }
        }

        /* ---- Pass D: g = (c/Ts) p (log p - log q - K) --------------------------------------------- */
        /* log p - log q - K = s' - (z'/T - M) + (log_s - logZs - K) */
        const float cg = static_cast<float>(c / p.student_temperature);
        const float izs = static_cast<float>(1.0 / Zs);
        const float shift = static_cast<float>(log_s - logZs - K);
        for (int64_t k = tid; k < nchunks; k += nt) {
            /* in place: every element of this chunk is read here before it is written below */
            load_chunk<DS>(srow, p.s_dt, s_al, k, V, xs);
            load_chunk<DT>(drow, p.d_dt, d_al, k, V, xd);
            if (has_r) load_chunk<DT>(rrow, p.r_dt, r_al, k, V, xr);
            float g[kChunk];
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                if (xd[j] != -INFINITY) {
                    const float sp = (xs[j] - ms) * inv_ts;
                    const float zp = has_r ? fmaf(af, xd[j] - md, bf * (xr[j] - mr)) : af * (xd[j] - md);
                    const float diff = sp - (zp * inv_t - M) + shift;
                    g[j] = cg * (exp_fast(sp) * izs) * diff;
                } else {
                    g[j] = 0.0f;
                }
            }
            store_chunk<DG>(grow, p.g_dt, g_al, k, V, g);
        }
        /* the next row's first __syncthreads orders the shared-memory reuse */
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Kernel 3: deterministic loss sum                                                                  */
/* ------------------------------------------------------------------------------------------------ */

__global__ void __launch_bounds__(kSmallThreads)
aligndistil_fdl_finalize_kernel(FdlParams p) {
    __shared__ double sh[32];
    const int64_t rows = p.B * p.T;
    double v[1] = {0.0};
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) v[0] += p.contrib[i];
    block_sum<1>(v, sh);
    if (threadIdx.x == 0) {
        const bool ok = *reinterpret_cast<volatile int64_t*>(p.status) == AD_OK;
        *p.loss = ok ? v[0] : 0.0;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Kernel 4: zero the outputs after an error (no-op otherwise)                                       */
/* ------------------------------------------------------------------------------------------------ */

__global__ void __launch_bounds__(kZeroThreads)
aligndistil_fdl_error_zero_kernel(FdlParams p) {
    if (*reinterpret_cast<volatile int64_t*>(p.status) == AD_OK) return;
    const int64_t rows = p.B * p.T;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const int64_t b = row / p.T, t = row - b * p.T;
        if (!p.in_place) {
            void* grow = static_cast<char*>(p.g) + (b * p.g_sb + t * p.g_st) * (p.g_dt == AD_F32 ? 4 : 2);
            zero_row(grow, p.g_dt, p.V, threadIdx.x, blockDim.x);
        }
        if (threadIdx.x == 0) {
            if (p.weight) p.weight[row] = 0.0f;
            if (p.token_loss) p.token_loss[row] = 0.0f;
            if (p.metrics) {
                p.metrics[row * AD_FDL_METRICS + 0] = 0.0f;
                p.metrics[row * AD_FDL_METRICS + 1] = 0.0f;
                p.metrics[row * AD_FDL_METRICS + 2] = 0.0f;
            }
        }
    }
}

namespace {

/* ------------------------------------------------------------------------------------------------ */
/* Host side                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

struct NvtxRange {
    explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
    ~NvtxRange() { nvtxRangePop(); }
    NvtxRange(const NvtxRange&) = delete;
    NvtxRange& operator=(const NvtxRange&) = delete;
};

int invalid(const char* msg) {
    char buf[256];
    snprintf(buf, sizeof buf, "ad_fdl_cuda: invalid argument: %s", msg);
    return ad_cuda_record_message(AD_ERR_INVALID_ARGUMENT, buf);
}

bool valid_dtype(int64_t dt) { return dt == AD_F32 || dt == AD_BF16 || dt == AD_F16; }
bool positive_finite(double x) { return isfinite(x) && x > 0.0; }

/* |b_max * sb| + |t_max * st| + V stays well inside int64 (so every element offset does). */
bool strides_ok(int64_t B, int64_t T, int64_t V, int64_t sb, int64_t st) {
    const int64_t lim = INT64_C(1) << 60;
    if (sb < -lim || sb > lim || st < -lim || st > lim) return false;
    int64_t x, y;
    if (__builtin_mul_overflow(B - 1, sb < 0 ? -sb : sb, &x)) return false;
    if (__builtin_mul_overflow(T - 1, st < 0 ? -st : st, &y)) return false;
    if (x > lim || y > lim || V > lim) return false;
    return x + y + V <= lim;
}

int workspace_bytes(int64_t B, int64_t T, int64_t* bytes) {
    int64_t bt, w;
    if (B < 1 || T < 1) return AD_ERR_INVALID_ARGUMENT;
    if (__builtin_mul_overflow(B, T, &bt)) return AD_ERR_INVALID_ARGUMENT;
    if (__builtin_add_overflow(bt, B + kHeaderWords, &w)) return AD_ERR_INVALID_ARGUMENT;
    if (__builtin_mul_overflow(w, INT64_C(8), &w)) return AD_ERR_INVALID_ARGUMENT;
    *bytes = w;
    return AD_OK;
}

using RowKernel = void (*)(FdlParams);

struct RowKernelChoice {
    RowKernel fn;
    int index; /* for the occupancy cache */
};

RowKernelChoice choose_row_kernel(const FdlParams& p) {
    const bool same = p.s_dt == p.d_dt && (!p.has_second || p.r_dt == p.d_dt);
    if (same) {
        const bool gf = p.g_dt == AD_F32;
        switch (p.s_dt) {
            case AD_F32: return {aligndistil_fdl_row_kernel<AD_F32, AD_F32, AD_F32>, 0};
            case AD_BF16: return gf ? RowKernelChoice{aligndistil_fdl_row_kernel<AD_BF16, AD_BF16, AD_F32>, 1}
                                    : RowKernelChoice{aligndistil_fdl_row_kernel<AD_BF16, AD_BF16, AD_BF16>, 2};
            default: return gf ? RowKernelChoice{aligndistil_fdl_row_kernel<AD_F16, AD_F16, AD_F32>, 3}
                               : RowKernelChoice{aligndistil_fdl_row_kernel<AD_F16, AD_F16, AD_F16>, 4};
        }
    }
    /* mixed input dtypes: one generic instance that picks each row's dtype at run time */
    return {aligndistil_fdl_row_kernel<kAny, kAny, kAny>, 5};
}

constexpr int kMaxDevices = 64;
constexpr int kRowKernels = 6;
std::atomic<int> g_row_blocks_per_sm[kMaxDevices][kRowKernels];

/* Validates a problem (everything but the workspace and the output pointers) and fills the kernel parameters,
 * workspace pointers left NULL. AD_OK or AD_ERR_INVALID_ARGUMENT (message recorded). */
int validate_problem(const ad_fdl_problem* pr, FdlParams* out) {
    if (pr == nullptr) return invalid("problem is NULL");
    const int64_t B = pr->batch, T = pr->seq, V = pr->vocab;
    if (B < 1 || T < 1 || V < 1) return invalid("batch, seq and vocab must be >= 1");
    int64_t need = 0;
    if (workspace_bytes(B, T, &need) != AD_OK) return invalid("batch * seq too large");
    if (pr->variant < AD_VARIANT_ALIGNDISTIL || pr->variant > AD_VARIANT_GKD) return invalid("unknown variant");
    const bool gkd = pr->variant == AD_VARIANT_GKD;
    if (pr->length_norm != 0 && pr->length_norm != 1) return invalid("length_norm must be 0 or 1");
    if (!valid_dtype(pr->student_dtype) || !valid_dtype(pr->dpo_dtype) || (!gkd && !valid_dtype(pr->second_dtype)))
        return invalid("unknown input dtype");
    if (pr->grad_dtype != AD_F32 && pr->grad_dtype != pr->student_dtype)
        return invalid("grad dtype must be F32 or the student's dtype");
    if (pr->student == nullptr || pr->dpo == nullptr || pr->grad == nullptr || (!gkd && pr->second == nullptr))
        return invalid("NULL logits or grad pointer");
    if (!positive_finite(pr->beta) || !positive_finite(pr->beta2) || !positive_finite(pr->epsilon) ||
        !positive_finite(pr->temperature) || !positive_finite(pr->student_temperature))
        return invalid("beta, beta2, epsilon, temperature and student_temperature must be finite and > 0");
    if (!isfinite(pr->seq_divisor)) return invalid("seq_divisor must be finite");
    const bool in_place = pr->grad == pr->student;
    if (in_place && (pr->grad_dtype != pr->student_dtype || pr->grad_stride_b != pr->student_stride_b ||
                     pr->grad_stride_t != pr->student_stride_t))
        return invalid("in place (grad == student) needs the student's dtype and strides");
    if (!strides_ok(B, T, V, pr->student_stride_b, pr->student_stride_t) ||
        !strides_ok(B, T, V, pr->dpo_stride_b, pr->dpo_stride_t) ||
        (!gkd && !strides_ok(B, T, V, pr->second_stride_b, pr->second_stride_t)) ||
        !strides_ok(B, T, V, pr->grad_stride_b, pr->grad_stride_t) ||
        (pr->mask && !strides_ok(B, T, 1, pr->mask_stride_b, pr->mask_stride_t)))
        return invalid("strides out of range");
    if (((reinterpret_cast<uintptr_t>(pr->weight) | reinterpret_cast<uintptr_t>(pr->token_loss) |
          reinterpret_cast<uintptr_t>(pr->metrics)) & 3u) != 0)
        return invalid("weight / token_loss / metrics not 4-byte aligned");

    FdlParams& p = *out;
    p = FdlParams{};
    p.B = B; p.T = T; p.V = V;
    p.s = pr->student; p.s_sb = pr->student_stride_b; p.s_st = pr->student_stride_t; p.s_dt = static_cast<int>(pr->student_dtype);
    p.d = pr->dpo; p.d_sb = pr->dpo_stride_b; p.d_st = pr->dpo_stride_t; p.d_dt = static_cast<int>(pr->dpo_dtype);
    p.has_second = gkd ? 0 : 1;
    p.r = gkd ? nullptr : pr->second;
    p.r_sb = pr->second_stride_b; p.r_st = pr->second_stride_t;
    p.r_dt = gkd ? p.d_dt : static_cast<int>(pr->second_dtype);
    p.mask = pr->mask; p.m_sb = pr->mask_stride_b; p.m_st = pr->mask_stride_t;
    p.g = pr->grad; p.g_sb = pr->grad_stride_b; p.g_st = pr->grad_stride_t; p.g_dt = static_cast<int>(pr->grad_dtype);
    p.weight = pr->weight; p.token_loss = pr->token_loss; p.metrics = pr->metrics;
    p.variant = static_cast<int>(pr->variant);
    p.length_norm = static_cast<int>(pr->length_norm);
    p.in_place = in_place ? 1 : 0;
    p.beta = pr->beta; p.beta2 = pr->beta2; p.epsilon = pr->epsilon;
    p.temperature = pr->temperature; p.student_temperature = pr->student_temperature;
    p.seq_divisor = pr->seq_divisor;
    return AD_OK;
}

/* Process-wide row kernel choice: AD_CUDA_KERNEL_* or -1 = not yet read from the AD_CUDA_KERNEL environment
 * variable (auto | multipass | cluster; anything else means auto). */
std::atomic<int> g_kernel_mode{-1};

int kernel_mode() {
    int m = g_kernel_mode.load(std::memory_order_relaxed);
    if (m < 0) {
        const char* e = getenv("AD_CUDA_KERNEL");
        m = AD_CUDA_KERNEL_AUTO;
        if (e != nullptr && strcmp(e, "multipass") == 0) m = AD_CUDA_KERNEL_MULTIPASS;
        if (e != nullptr && strcmp(e, "cluster") == 0) m = AD_CUDA_KERNEL_CLUSTER;
        int expected = -1;
        if (!g_kernel_mode.compare_exchange_strong(expected, m, std::memory_order_relaxed)) m = expected;
    }
    return m;
}

/* Which row kernel runs `p` on the current device `dev`. "auto" takes the cluster kernel only in a library built
 * with -DAD_CUDA_CLUSTER_AUTO=ON (it has not been verified on a GPU yet); "cluster" takes it whenever the plan
 * allows; otherwise, and whenever the plan says no, the multi-pass kernel runs. */
int choose_kernel(const FdlParams& p, int dev, FdlClusterPlan* plan, int* kernel) {
    *kernel = AD_CUDA_KERNEL_MULTIPASS;
    *plan = FdlClusterPlan{};
    const int mode = kernel_mode();
#if defined(AD_CUDA_CLUSTER_AUTO) && AD_CUDA_CLUSTER_AUTO
    const bool want = mode != AD_CUDA_KERNEL_MULTIPASS;
#else
    const bool want = mode == AD_CUDA_KERNEL_CLUSTER;
#endif
    if (!want) return AD_OK;
    const int rc = ad_fdl_cluster_plan(p, dev, plan);
    if (rc != AD_OK) return rc;
    if (plan->ok) *kernel = AD_CUDA_KERNEL_CLUSTER;
    return AD_OK;
}

#define AD_LAUNCH_CHECK(what)                                          \
    do {                                                               \
        cudaError_t e_ = cudaGetLastError();                           \
        if (e_ != cudaSuccess) return ad_cuda_record_error(what, e_);  \
    } while (0)

#define AD_CALL(call)                                                  \
    do {                                                               \
        cudaError_t e_ = (call);                                       \
        if (e_ != cudaSuccess) return ad_cuda_record_error(#call, e_); \
    } while (0)

}  // namespace

extern "C" {

AD_EXPORT int32_t ad_fdl_cuda_workspace_bytes(const ad_fdl_problem* problem, int64_t* bytes) {
    if (problem == nullptr || bytes == nullptr) return invalid("problem or bytes is NULL");
    *bytes = 0;
    if (workspace_bytes(problem->batch, problem->seq, bytes) != AD_OK) return invalid("batch or seq out of range");
    return AD_OK;
}

AD_EXPORT int32_t ad_fdl_cuda(const ad_fdl_problem* pr, void* workspace, int64_t workspace_bytes_given,
                              double* d_loss, int64_t* d_status, void* stream) {
    NvtxRange range("ad_fdl_cuda");

    /* ---- validation (before any launch) ---- */
    if (pr == nullptr) return invalid("problem is NULL");
    if (d_loss == nullptr || d_status == nullptr) return invalid("d_loss or d_status is NULL");
    if ((reinterpret_cast<uintptr_t>(d_loss) & 7u) || (reinterpret_cast<uintptr_t>(d_status) & 7u))
        return invalid("d_loss / d_status not 8-byte aligned");
    FdlParams p;
    const int vrc = validate_problem(pr, &p);
    if (vrc != AD_OK) return vrc;
    const int64_t B = p.B, T = p.T;
    int64_t need = 0;
    if (workspace_bytes(B, T, &need) != AD_OK) return invalid("batch * seq too large");
    if (workspace == nullptr || workspace_bytes_given < need) return invalid("workspace missing or too small");
    if (reinterpret_cast<uintptr_t>(workspace) & 7u) return invalid("workspace not 8-byte aligned");
    p.header = static_cast<int64_t*>(workspace);
    p.nb = p.header + kHeaderWords;
    p.contrib = reinterpret_cast<double*>(p.nb + B);
    p.status = d_status;
    p.loss = d_loss;

    /* ---- launch configuration ---- */
    (void)cudaGetLastError(); /* drop a stale, non-sticky error of an unrelated earlier call */
    int dev = 0, sms = 0;
    AD_CALL(cudaGetDevice(&dev));
    AD_CALL(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    FdlClusterPlan plan;
    int kernel = AD_CUDA_KERNEL_MULTIPASS;
    const int crc = choose_kernel(p, dev, &plan, &kernel);
    if (crc != AD_OK) return crc;
    const RowKernelChoice rk = choose_row_kernel(p);
    int per_sm = (dev >= 0 && dev < kMaxDevices) ? g_row_blocks_per_sm[dev][rk.index].load(std::memory_order_relaxed) : 0;
    if (per_sm <= 0 && kernel == AD_CUDA_KERNEL_MULTIPASS) {
        AD_CALL(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, rk.fn, kRowThreads, 0));
        if (per_sm < 1) per_sm = 1;
        if (dev >= 0 && dev < kMaxDevices) g_row_blocks_per_sm[dev][rk.index].store(per_sm, std::memory_order_relaxed);
    }
    const int64_t rows = B * T;
    const int64_t row_cap = static_cast<int64_t>(sms > 0 ? sms : 1) * per_sm;
    const unsigned int row_grid = static_cast<unsigned int>(rows < row_cap ? rows : row_cap);
    const int64_t zero_cap = static_cast<int64_t>(sms > 0 ? sms : 1) * 8;
    const unsigned int zero_grid = static_cast<unsigned int>(rows < zero_cap ? rows : zero_cap);
    cudaStream_t s = static_cast<cudaStream_t>(stream);

    aligndistil_fdl_mask_count_kernel<<<1, kSmallThreads, 0, s>>>(p);
    AD_LAUNCH_CHECK("aligndistil_fdl_mask_count_kernel launch");
    if (kernel == AD_CUDA_KERNEL_CLUSTER) {
        const int lrc = ad_fdl_cluster_launch(p, plan, s);
        if (lrc != AD_OK) return lrc;
    } else {
        rk.fn<<<row_grid, kRowThreads, 0, s>>>(p);
        AD_LAUNCH_CHECK("aligndistil_fdl_row_kernel launch");
    }
    aligndistil_fdl_finalize_kernel<<<1, kSmallThreads, 0, s>>>(p);
    AD_LAUNCH_CHECK("aligndistil_fdl_finalize_kernel launch");
    aligndistil_fdl_error_zero_kernel<<<zero_grid, kZeroThreads, 0, s>>>(p);
    AD_LAUNCH_CHECK("aligndistil_fdl_error_zero_kernel launch");
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_set_kernel(int32_t kernel) {
    if (kernel != AD_CUDA_KERNEL_AUTO && kernel != AD_CUDA_KERNEL_MULTIPASS && kernel != AD_CUDA_KERNEL_CLUSTER)
        return ad_cuda_record_message(AD_ERR_INVALID_ARGUMENT, "ad_cuda_set_kernel: kernel must be 0 (auto), 1 (multipass) or 2 (cluster)");
    g_kernel_mode.store(kernel, std::memory_order_relaxed);
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_get_kernel(int32_t* kernel) {
    if (kernel == nullptr) return ad_cuda_record_message(AD_ERR_INVALID_ARGUMENT, "ad_cuda_get_kernel: kernel is NULL");
    *kernel = kernel_mode();
    return AD_OK;
}

AD_EXPORT int32_t ad_cuda_kernel_for(const ad_fdl_problem* problem, int32_t device, int32_t* kernel) {
    if (kernel == nullptr) return invalid("kernel is NULL");
    *kernel = AD_CUDA_KERNEL_MULTIPASS;
    FdlParams p;
    const int vrc = validate_problem(problem, &p);
    if (vrc != AD_OK) return vrc;
    (void)cudaGetLastError();
    int cur = 0;
    AD_CALL(cudaGetDevice(&cur));
    const int dev = device < 0 ? cur : device;
    if (dev != cur) AD_CALL(cudaSetDevice(dev));
    FdlClusterPlan plan;
    int k = AD_CUDA_KERNEL_MULTIPASS;
    const int rc = choose_kernel(p, dev, &plan, &k);
    if (dev != cur) AD_CALL(cudaSetDevice(cur));
    if (rc != AD_OK) return rc;
    *kernel = k;
    return AD_OK;
}

}  // extern "C"
