/*
 * fused_distill_loss_hopper.cu: the fused distill loss (ad_fdl_cuda), Hopper variant: one token's three logit
 * rows resident in the shared memory of a thread-block cluster. COMPILE-CHECKED ONLY: it has never run on a GPU.
 *
 * What it computes. Exactly what aligndistil_fdl_row_kernel (fused_distill_loss.cu) computes, with the same
 * contract, for every selected row: p = softmax(zs/Ts), the weight alpha (TVD of the teachers for aligndistil /
 * adaptive), q = softmax(z* / T), K = KL(p||q), token_loss, the three metrics, the per-row loss term and the
 * gradient row (c/Ts) p (log p - log q - K). The mask-count, finalize (deterministic loss) and error-zero kernels
 * of fused_distill_loss.cu run around it unchanged.
 *
 * How. A cluster of n CTAs (n = 1, 2, 4, 8 or 16, chosen on the host from V, the dtype and the shared memory per
 * CTA) owns one token at a time; CTA rank r holds columns [r*L, r*L + L) of the student, DPO and second rows
 * (L = ceil(V/n) rounded up to 8). A persistent grid of clusters walks the rows (cluster c takes rows c, c + C,
 * c + 2C, ...). Each CTA keeps `stages` (1 or 2) tokens in flight: its slices arrive by bulk asynchronous copies
 * (cp.async.bulk global->shared, completion counted in bytes on one mbarrier per stage; the last < 16 bytes of a
 * row by cp.async with zero fill on the same mbarrier), so the next token streams in while this one is computed.
 * Four passes over shared memory, each ending in a cluster exchange of a few scalars through distributed shared
 * memory (each CTA publishes its block-reduced partials in its own shared memory, barrier.cluster arrive/wait,
 * thread 0 of every CTA reads all n partials with cluster.map_shared_rank in rank order, so every CTA holds
 * bit-identical row scalars):
 *   1. row maxima + validation (first bad column: min over the cluster)          0 exp / element
 *   2. Z_s, Z_d, Z_r and the student-weighted logit sums U_s, U_d, U_r          3 exp (2 for gkd)
 *   3. tvd = sum |p_d - p_r| -> alpha (aligndistil, adaptive only)               2 exp
 *   4. log-sum-exp of z* / T, online per thread in chunks of 8                     1 + 1/8 exp
 *   then the gradient, written once straight from registers to global memory    1 exp
 * = 7.125 exp per element for aligndistil / adaptive, 5.125 for contrast / theorem1, 4.125 for gkd (the
 * multi-pass kernel's count is the same; both now use ex2.approx on log2(e)-prescaled logits, see ex2_approx in
 * fused_distill_loss_common.cuh, instead of expf: one MUFU op and at most one FMUL per exp). Pass 4 cannot reuse
 * pass 2's exps (z* depends on alpha) and the gradient cannot keep pass 2's e^s (shared memory is full of rows).
 *
 * What it never materialises. No [tokens x V] buffer besides the caller's gradient and no probability row: the
 * rows live only in shared memory (n * stages * 3 * L * bytes per cluster) and registers; per-row scalars go to
 * the same workspace as the multi-pass kernel (ad_fdl_cuda_workspace_bytes covers both).
 *
 * What it overwrites. The gradient rows (zeros for rows not selected; in place over the student logits when
 * grad == student: a CTA writes only its own slice, after its last read of it), weight / token_loss / metrics,
 * the workspace's per-row terms and d_status on errors (first error wins, as in the multi-pass kernel).
 *
 * Stream. The caller's stream, between the mask-count and finalize kernels; no host synchronisation.
 *
 * When it runs (host side, ad_fdl_cluster_plan): compute capability >= 9.0 with cluster launch, the three input
 * rows of one dtype, every input row 16-byte aligned (base pointers and strides in bytes multiples of 16, which
 * bulk copies need), V small enough for n <= 16 CTAs, cudaOccupancyMaxActiveClusters > 0. Otherwise
 * ad_fdl_cuda runs the multi-pass kernel: the choice never fails a call.
 *
 * Precision. As the multi-pass kernel: f32 element arithmetic on centred logits (here also scaled by log2 e),
 * f32 chunk sums folded into f64 per thread, f64 block and cluster combinations in a fixed order, f64 row scalars.
 *
 * Architecture guard. Clusters, distributed shared memory, mbarrier transaction counts and cp.async.bulk need
 * sm_90: the kernel body is compiled only for __CUDA_ARCH__ >= 900 (sm_90a SASS and the compute_90 PTX); the
 * sm_80 image holds an empty stub that the host never launches (it checks the compute capability first). Nothing
 * here needs the sm_90a-only feature set (wgmma, setmaxnreg), so no __CUDA_ARCH_FEAT_SM90_ALL block exists.
 */
#include "aligndistil.h"
#include "ad_cuda_internal.h"
#include "fused_distill_loss_common.cuh"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

namespace cg = cooperative_groups;

namespace {

constexpr int kClusterThreads = 512;  /* threads per CTA: one CTA per SM (the rows fill its shared memory) */
constexpr int kMaxStages = 2;
static_assert(kMaxStages == 2, "the plan chooses 1 or 2 stages");

/* One CTA's published partials for one exchange. Written by its thread 0, read by thread 0 of every CTA of the
 * cluster after a cluster barrier. Double-buffered by the parity of the exchange count (see the kernel). */
struct ClusterXch {
    float mx[3];        /* phase 1: slice maxima of s, d, r */
    int failed;         /* phase 1: the status word said "failed" when this CTA looked */
    long long bad;      /* phase 1: first bad column of the slice (LLONG_MAX: none) */
    double sums[6];     /* phase 2: Z_s, Z_d, Z_r, U2_s, U2_d, U2_r (U2: log2 units) */
    double tvd;         /* phase 3 */
    double tsum;        /* phase 4: sum 2^(x - tmax) over the slice */
    float tmax;         /* phase 4: slice max of x = (z* / T) log2 e */
    int pad;
};

/* Shape of the launch, by value. */
struct ClusterShape {
    int64_t slice;      /* L: columns per CTA (multiple of 8) */
    int64_t row_bytes;  /* L * element size: one row slot in shared memory (multiple of 16) */
    int64_t stage_bytes;
    int stages;
    int nrows;          /* rows loaded per token: 3, or 2 for gkd */
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
/* ---- PTX wrappers (sm_90) ---- */

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n\t.reg .pred p;\n\t"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
            "selp.u32 %0, 1, 0, p;\n\t}"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(parity)
            : "memory");
    } while (!done);
}

/* Bulk copy global -> this CTA's shared memory; `bytes` multiple of 16, both addresses 16-byte aligned. */
__device__ __forceinline__ void bulk_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(smem_addr(bar))
                 : "memory");
}

/* 16-byte cp.async reading only `src_bytes` (< 16) from global, zero-filling the rest. */
__device__ __forceinline__ void cp_async_16_zfill(void* dst, const void* src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(src_bytes)
                 : "memory");
}

/* The mbarrier's current phase also waits for this thread's earlier cp.async copies (pending count +1 now,
 * -1 when they land). */
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t* bar) {
    asm volatile("cp.async.mbarrier.arrive.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }

/* Orders this thread's earlier generic-proxy shared-memory accesses before later async-proxy (bulk copy) ones. */
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

/* Chunk c (columns [8c, 8c+8)) of a row slot in shared memory as floats; columns >= len read as -inf. */
template <int D>
__device__ __forceinline__ void lds_chunk(const unsigned char* slot, int64_t c, int64_t len, float (&x)[kChunk]) {
    if constexpr (D == AD_F32) {
        const float4* q = reinterpret_cast<const float4*>(slot) + 2 * c;
        const float4 a = q[0], b = q[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
        x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
        const uint4 w = reinterpret_cast<const uint4*>(slot)[c];
        const unsigned int u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            if constexpr (D == AD_BF16) {
                x[2 * i] = __uint_as_float(u[i] << 16);
                x[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
            } else {
                const __half2 h = *reinterpret_cast<const __half2*>(&u[i]);
                const float2 f = __half22float2(h);
                x[2 * i] = f.x;
                x[2 * i + 1] = f.y;
            }
        }
    }
    if (c * kChunk + kChunk > len) {
#pragma unroll
        for (int j = 0; j < kChunk; ++j)
            if (c * kChunk + j >= len) x[j] = -INFINITY;
    }
}
#endif  // __CUDA_ARCH__ >= 900

}  // namespace

/* DIN: the dtype of all three inputs, DG: the gradient dtype (F32 or DIN). */
template <int DIN, int DG>
__global__ void __launch_bounds__(kClusterThreads, 1)
aligndistil_fdl_cluster_row_kernel(FdlParams p, ClusterShape cs) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) unsigned char dsm[];
    __shared__ __align__(8) uint64_t bar[kMaxStages];
    __shared__ ClusterXch xch[2];
    __shared__ double sh_d[6 * 32];
    __shared__ long long sh_ll[32];
    __shared__ double bc_d[8];   /* row scalars broadcast by thread 0 */
    __shared__ float bc_f[4];
    __shared__ long long bc_ll;
    __shared__ int bc_i;
    __shared__ int sel_stage[kMaxStages];
    float* sh_f = reinterpret_cast<float*>(sh_d); /* block_max scratch (never live at the same time as a sum) */

    cg::cluster_group cluster = cg::this_cluster();
    const unsigned int rank = cluster.block_rank(), ncta = cluster.num_blocks();
    const int64_t cid = blockIdx.x / ncta, ncl = gridDim.x / ncta;
    const int tid = threadIdx.x, nt = blockDim.x;
    constexpr int ES = DIN == AD_F32 ? 4 : 2;
    constexpr int GES = DG == AD_F32 ? 4 : 2;
    const int64_t V = p.V, T = p.T, rows = p.B * p.T;
    const int S = cs.stages;
    const int64_t v0 = static_cast<int64_t>(rank) * cs.slice < V ? static_cast<int64_t>(rank) * cs.slice : V;
    const int64_t len = V - v0 < cs.slice ? V - v0 : cs.slice;          /* columns of this CTA, may be 0 */
    const uint32_t bulk_bytes = static_cast<uint32_t>((len * ES) & ~int64_t(15));
    const uint32_t tail_bytes = static_cast<uint32_t>(len * ES) - bulk_bytes; /* < 16 */
    const int64_t nch = (len + kChunk - 1) / kChunk;
    const bool has_r = p.has_second != 0;
    const bool adaptive_weight = p.variant == AD_VARIANT_ALIGNDISTIL || p.variant == AD_VARIANT_ADAPTIVE;
    const double Ts = p.student_temperature;
    const double T_teacher = p.variant == AD_VARIANT_GKD ? 1.0 : p.temperature;
    const float inv_t = static_cast<float>(1.0 / T_teacher);
    const float ks = static_cast<float>(1.0 / Ts) * kLog2e; /* student logit -> log2 units of s' = (s - ms)/Ts */
    const int64_t nseq = p.header[0];
    const double N = p.seq_divisor > 0.0 ? p.seq_divisor : static_cast<double>(nseq);
    constexpr double kLn2d = 0.69314718055994530942;

    if (tid == 0) {
        for (int i = 0; i < S; ++i) mbar_init(&bar[i], 1);
        fence_mbar_init();
    }
    __syncthreads();

    /* Thread 0 only: start loading the slices of this cluster's k-th row into stage k % S. */
    auto issue = [&](int64_t k, bool selected) {
        const int64_t row = cid + k * ncl;
        if (row >= rows) return;
        const int st = static_cast<int>(k % S);
        sel_stage[st] = selected ? 1 : 0;
        if (!selected || len == 0) {
            mbar_arrive(&bar[st]); /* nothing to load: the phase completes at once */
            return;
        }
        const int64_t b = row / T, t = row - b * T;
        unsigned char* base = dsm + st * cs.stage_bytes;
        const unsigned char* src_s = static_cast<const unsigned char*>(p.s) + ((b * p.s_sb + t * p.s_st) + v0) * ES;
        const unsigned char* src_d = static_cast<const unsigned char*>(p.d) + ((b * p.d_sb + t * p.d_st) + v0) * ES;
        const unsigned char* src_r =
            has_r ? static_cast<const unsigned char*>(p.r) + ((b * p.r_sb + t * p.r_st) + v0) * ES : src_d;
        fence_proxy_async(); /* the generic reads of this stage's previous token happen-before (block barrier) */
        if (tail_bytes) {
            cp_async_16_zfill(base + bulk_bytes, src_s + bulk_bytes, tail_bytes);
            cp_async_16_zfill(base + cs.row_bytes + bulk_bytes, src_d + bulk_bytes, tail_bytes);
            if (has_r) cp_async_16_zfill(base + 2 * cs.row_bytes + bulk_bytes, src_r + bulk_bytes, tail_bytes);
            cp_async_mbar_arrive(&bar[st]);
        }
        mbar_arrive_expect_tx(&bar[st], bulk_bytes * (has_r ? 3u : 2u));
        if (bulk_bytes) {
            bulk_g2s(base, src_s, bulk_bytes, &bar[st]);
            bulk_g2s(base + cs.row_bytes, src_d, bulk_bytes, &bar[st]);
            if (has_r) bulk_g2s(base + 2 * cs.row_bytes, src_r, bulk_bytes, &bar[st]);
        }
    };
    auto row_selected = [&](int64_t k) -> bool {
        const int64_t row = cid + k * ncl;
        if (row >= rows || p.mask == nullptr) return true;
        const int64_t b = row / T, t = row - b * T;
        return p.mask[b * p.m_sb + t * p.m_st] != 0;
    };

    if (tid == 0)
        for (int k = 0; k < S; ++k) issue(k, row_selected(k));

    int64_t xcount = 0; /* cluster exchanges so far: xch[xcount & 1] is this one's buffer */
    int64_t k = 0;
    bool stopped = false;
    for (;; ++k) {
        const int64_t row = cid + k * ncl;
        if (row >= rows) break;
        const int st = static_cast<int>(k % S);
        const uint32_t parity = static_cast<uint32_t>((k / S) & 1);
        /* thread 0 fetches the mask byte of the row this stage loads next; it is only used after the passes */
        const bool next_sel = tid == 0 ? row_selected(k + S) : true;
        /* ... and the status word (has any row failed?), read now so its latency hides behind the wait and phase 1 */
        const int failed_now = tid == 0 ? (*reinterpret_cast<volatile int64_t*>(p.status) != AD_OK) : 0;
        mbar_wait(&bar[st], parity);
        const bool selected = sel_stage[st] != 0;
        const int64_t b = row / T, t = row - b * T;
        unsigned char* grow = static_cast<unsigned char*>(p.g) + ((b * p.g_sb + t * p.g_st) + v0) * GES;
        const bool g_al = is_aligned16(grow);

        if (!selected) {
            zero_row(grow, DG, len, tid, nt);
            if (rank == 0 && tid == 0) {
                p.contrib[row] = 0.0;
                if (p.weight) p.weight[row] = 0.0f;
                if (p.token_loss) p.token_loss[row] = 0.0f;
                if (p.metrics) {
                    p.metrics[row * AD_FDL_METRICS + 0] = 0.0f;
                    p.metrics[row * AD_FDL_METRICS + 1] = 0.0f;
                    p.metrics[row * AD_FDL_METRICS + 2] = 0.0f;
                }
            }
            __syncthreads(); /* every thread has read sel_stage[st] */
            if (tid == 0) issue(k + S, next_sel);
            continue;
        }

        const unsigned char* sl_s = dsm + st * cs.stage_bytes;
        const unsigned char* sl_d = sl_s + cs.row_bytes;
        const unsigned char* sl_r = has_r ? sl_s + 2 * cs.row_bytes : sl_d;
        ClusterXch& mine = xch[xcount & 1];
        const int xb = static_cast<int>(xcount & 1);
        ++xcount;
        float xs[kChunk], xd[kChunk], xr[kChunk];

        /* ---- Phase 1: maxima and validation ---------------------------------------------------------- */
        float mx[3] = {-INFINITY, -INFINITY, -INFINITY};
        long long bad = LLONG_MAX;
        for (int64_t c = tid; c < nch; c += nt) {
            lds_chunk<DIN>(sl_s, c, len, xs);
            lds_chunk<DIN>(sl_d, c, len, xd);
            if (has_r) lds_chunk<DIN>(sl_r, c, len, xr);
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                const float r = has_r ? xr[j] : xd[j];
                mx[0] = fmaxf(mx[0], xs[j]);
                mx[1] = fmaxf(mx[1], xd[j]);
                mx[2] = fmaxf(mx[2], r);
                const bool finite = isfinite(xs[j]) && isfinite(xd[j]) && isfinite(r);
                const bool outside = xs[j] == -INFINITY && xd[j] == -INFINITY && r == -INFINITY;
                if (!finite && !outside && bad == LLONG_MAX) bad = v0 + c * kChunk + j;
            }
        }
        block_max<3>(mx, sh_f);
        bad = block_min_ll(bad, sh_ll);
        if (tid == 0) {
            mine.mx[0] = mx[0]; mine.mx[1] = mx[1]; mine.mx[2] = mx[2];
            mine.bad = bad;
            mine.failed = failed_now;
        }
        cluster.sync();
        if (tid == 0) {
            float m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY;
            long long bb = LLONG_MAX;
            int failed = 0;
            for (unsigned int q = 0; q < ncta; ++q) {
                const ClusterXch* x = cluster.map_shared_rank(&xch[xb], q);
                m0 = fmaxf(m0, x->mx[0]); m1 = fmaxf(m1, x->mx[1]); m2 = fmaxf(m2, x->mx[2]);
                bb = x->bad < bb ? x->bad : bb;
                failed |= x->failed;
            }
            bc_f[0] = m0; bc_f[1] = m1; bc_f[2] = m2;
            bc_ll = bb;
            bc_i = failed;
        }
        __syncthreads();
        if (bc_i) { /* another row failed already: the outputs will be zeroed, stop (the whole cluster agrees) */
            stopped = true;
            break;
        }
        const float ms = bc_f[0], md = bc_f[1], mr = bc_f[2];
        const long long bad_all = bc_ll;
        if (bad_all != LLONG_MAX || ms == -INFINITY) {
            if (rank == 0 && tid == 0) {
                if (bad_all != LLONG_MAX) report_error(p.status, AD_ERR_NONFINITE, row, bad_all);
                else report_error(p.status, AD_ERR_EMPTY_ROW, row, -1);
            }
            __syncthreads();
            if (tid == 0) issue(k + S, next_sel);
            continue;
        }

        /* ---- Phase 2: Z_s, Z_d, Z_r and U2_x = sum e^s' x2 (x2 = centred logit in log2 units) -------- */
        double acc[6] = {0, 0, 0, 0, 0, 0};
        for (int64_t c = tid; c < nch; c += nt) {
            lds_chunk<DIN>(sl_s, c, len, xs);
            lds_chunk<DIN>(sl_d, c, len, xd);
            if (has_r) lds_chunk<DIN>(sl_r, c, len, xr);
            float cc[6] = {0, 0, 0, 0, 0, 0};
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                if (xd[j] != -INFINITY) {
                    const float s2 = (xs[j] - ms) * ks;
                    const float d2 = (xd[j] - md) * kLog2e;
                    const float es = ex2_approx(s2);
                    cc[0] += es;
                    cc[1] += ex2_approx(d2);
                    cc[3] = fmaf(es, s2, cc[3]);
                    cc[4] = fmaf(es, d2, cc[4]);
                    if (has_r) {
                        const float r2 = (xr[j] - mr) * kLog2e;
                        cc[2] += ex2_approx(r2);
                        cc[5] = fmaf(es, r2, cc[5]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < 6; ++i) acc[i] += static_cast<double>(cc[i]);
        }
        block_sum<6>(acc, sh_d);
        if (tid == 0)
            for (int i = 0; i < 6; ++i) mine.sums[i] = acc[i];
        cluster.sync();
        if (tid == 0) {
            double z[6] = {0, 0, 0, 0, 0, 0};
            for (unsigned int q = 0; q < ncta; ++q) {
                const ClusterXch* x = cluster.map_shared_rank(&xch[xb], q);
                for (int i = 0; i < 6; ++i) z[i] += x->sums[i];
            }
            for (int i = 0; i < 6; ++i) bc_d[i] = z[i];
        }
        __syncthreads();
        const double Zs = bc_d[0], Zd = bc_d[1], Zr = bc_d[2];
        /* natural-log units: s' = s2 ln 2 etc. */
        const double Us = bc_d[3] * kLn2d, Ud = bc_d[4] * kLn2d, Ur = bc_d[5] * kLn2d;

        /* ---- Phase 3: tvd -> alpha ------------------------------------------------------------------- */
        double alpha;
        if (adaptive_weight) {
            const float izd = static_cast<float>(1.0 / Zd), izr = static_cast<float>(1.0 / Zr);
            double tv[1] = {0.0};
            for (int64_t c = tid; c < nch; c += nt) {
                lds_chunk<DIN>(sl_d, c, len, xd);
                lds_chunk<DIN>(sl_r, c, len, xr);
                float cc = 0.0f;
#pragma unroll
                for (int j = 0; j < kChunk; ++j)
                    if (xd[j] != -INFINITY)
                        cc += fabsf(ex2_approx((xd[j] - md) * kLog2e) * izd - ex2_approx((xr[j] - mr) * kLog2e) * izr);
                tv[0] += static_cast<double>(cc);
            }
            block_sum<1>(tv, sh_d);
            __syncthreads(); /* all threads have read bc_d (phase 2) before thread 0 rewrites it */
            if (tid == 0) mine.tvd = tv[0];
            cluster.sync();
            if (tid == 0) {
                double tvd = 0.0;
                for (unsigned int q = 0; q < ncta; ++q) tvd += cluster.map_shared_rank(&xch[xb], q)->tvd;
                bc_d[6] = tvd;
            }
            __syncthreads();
            alpha = p.beta2 * bc_d[6] + p.epsilon;
        } else if (p.variant == AD_VARIANT_GKD) {
            alpha = 1.0;
        } else {
            alpha = p.beta / p.beta2;
        }
        double a, bcoef;
        switch (p.variant) {
            case AD_VARIANT_ALIGNDISTIL:
            case AD_VARIANT_CONTRAST: a = 1.0 + alpha; bcoef = -alpha; break;
            case AD_VARIANT_ADAPTIVE:
            case AD_VARIANT_THEOREM1: a = alpha; bcoef = 1.0 - alpha; break;
            default: a = 1.0; bcoef = 0.0; break;
        }
        const float af = static_cast<float>(a), bf = has_r ? static_cast<float>(bcoef) : 0.0f;
        const float afl = af * kLog2e * inv_t, bfl = bf * kLog2e * inv_t; /* x = (z'/T) log2 e = afl d' + bfl r' */

        /* ---- Phase 4: log2-sum-exp2 of x, online per thread ------------------------------------------ */
        float tm = -INFINITY;
        double tsum = 0.0;
        for (int64_t c = tid; c < nch; c += nt) {
            lds_chunk<DIN>(sl_d, c, len, xd);
            if (has_r) lds_chunk<DIN>(sl_r, c, len, xr);
            float x[kChunk];
            float cm = -INFINITY;
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                const float zp = has_r ? fmaf(afl, xd[j] - md, bfl * (xr[j] - mr)) : afl * (xd[j] - md);
                x[j] = xd[j] != -INFINITY ? zp : -INFINITY;
                cm = fmaxf(cm, x[j]);
            }
            if (cm == -INFINITY) continue;
            float csum = 0.0f;
#pragma unroll
            for (int j = 0; j < kChunk; ++j) csum += ex2_approx(x[j] - cm); /* 2^-inf = 0 */
            if (cm > tm) {
                tsum = tsum * static_cast<double>(ex2_approx(tm - cm)) + static_cast<double>(csum);
                tm = cm;
            } else {
                tsum += static_cast<double>(csum) * static_cast<double>(ex2_approx(cm - tm));
            }
        }
        float bm[1] = {tm};
        block_max<1>(bm, sh_f);
        const float Mc = bm[0]; /* -inf when this CTA's slice has no column inside the vocabulary */
        double ssum[1] = {tm == -INFINITY ? 0.0 : tsum * exp2(static_cast<double>(tm) - static_cast<double>(Mc))};
        block_sum<1>(ssum, sh_d);
        if (tid == 0) {
            mine.tmax = Mc;
            mine.tsum = ssum[0];
        }
        cluster.sync();
        if (tid == 0) {
            float M2 = -INFINITY;
            for (unsigned int q = 0; q < ncta; ++q) M2 = fmaxf(M2, cluster.map_shared_rank(&xch[xb], q)->tmax);
            double sum = 0.0;
            for (unsigned int q = 0; q < ncta; ++q) {
                const ClusterXch* x = cluster.map_shared_rank(&xch[xb], q);
                if (x->tmax != -INFINITY) sum += x->tsum * exp2(static_cast<double>(x->tmax) - static_cast<double>(M2));
            }
            bc_f[3] = M2; /* finite: phase 1 found a column inside the vocabulary */
            bc_d[7] = sum;
        }
        __syncthreads();
        const float M2 = bc_f[3];
        const double log_s = log(bc_d[7]);                         /* LSE* - M, natural units */
        const double lse_star = static_cast<double>(M2) * kLn2d + log_s;

        /* ---- Row scalars (f64), identical in every CTA of the cluster ----------------------------------- */
        const double logZs = log(Zs), logZd = log(Zd), logZr = has_r ? log(Zr) : 0.0;
        const double Ep_logp = Us / Zs - logZs;
        const double Ep_zt = (static_cast<double>(af) * Ud + static_cast<double>(bf) * Ur) / Zs *
                             static_cast<double>(inv_t);
        const double K = Ep_logp - (Ep_zt - lse_star);
        double coef;
        switch (p.variant) {
            case AD_VARIANT_ALIGNDISTIL:
            case AD_VARIANT_ADAPTIVE: coef = p.beta / alpha; break;
            case AD_VARIANT_CONTRAST:
            case AD_VARIANT_THEOREM1: coef = p.beta2; break;
            default: coef = 1.0; break;
        }
        const double nbv = static_cast<double>(p.nb[b]);
        const double cfac = coef * (p.length_norm ? 1.0 / nbv : 1.0) / N;
        if (rank == 0 && tid == 0) {
            p.contrib[row] = cfac * K;
            if (p.weight) p.weight[row] = static_cast<float>(alpha);
            if (p.token_loss) p.token_loss[row] = static_cast<float>(coef * K);
            if (p.metrics) {
                float* m = p.metrics + row * AD_FDL_METRICS;
                m[0] = has_r ? static_cast<float>(p.beta * ((Ud - Ur) / Zs - logZd + logZr)) : 0.0f;
                m[1] = static_cast<float>(Ep_logp - (Ud / Zs - logZd));
                m[2] = has_r ? static_cast<float>(Ep_logp - (Ur / Zs - logZr)) : 0.0f;
            }
        }

        /* ---- Gradient: g = (c/Ts) p (log p - log q - K), written once ---------------------------------- */
        /* log p - log q - K = ln2 (s2 - (x - M2)) + (log_s - logZs - K) */
        const float cg_ = static_cast<float>(cfac / Ts);
        const float izs = static_cast<float>(1.0 / Zs);
        const float shift = static_cast<float>(log_s - logZs - K);
        for (int64_t c = tid; c < nch; c += nt) {
            lds_chunk<DIN>(sl_s, c, len, xs);
            lds_chunk<DIN>(sl_d, c, len, xd);
            if (has_r) lds_chunk<DIN>(sl_r, c, len, xr);
            float g[kChunk];
#pragma unroll
            for (int j = 0; j < kChunk; ++j) {
                if (xd[j] != -INFINITY) {
                    const float s2 = (xs[j] - ms) * ks;
                    const float x2 = has_r ? fmaf(afl, xd[j] - md, bfl * (xr[j] - mr)) : afl * (xd[j] - md);
                    const float diff = fmaf(kLn2, s2 - (x2 - M2), shift);
                    g[j] = cg_ * (ex2_approx(s2) * izs) * diff;
                } else {
                    g[j] = 0.0f;
                }
            }
            store_chunk_t<DG>(grow, g_al, c, len, g);
        }
        __syncthreads(); /* every read of this stage (and of bc_*) is done */
        if (tid == 0) issue(k + S, next_sel);
    }

    if (stopped) {
        /* drain: wait for the stages still loading, so no bulk copy lands in the shared memory of a finished CTA */
        for (int64_t j = k + 1; j < k + S; ++j)
            if (cid + j * ncl < rows) mbar_wait(&bar[j % S], static_cast<uint32_t>((j / S) & 1));
    }
    /* no CTA may leave while another can still read its exchange buffers */
    cluster.sync();
#else
    (void)p;
    (void)cs;
#endif
}

namespace {

using ClusterKernel = void (*)(FdlParams, ClusterShape);

constexpr int kInstances = 5;
constexpr int kClusterSizes[5] = {1, 2, 4, 8, 16};

ClusterKernel cluster_kernel(int instance) {
    switch (instance) {
        case 0: return aligndistil_fdl_cluster_row_kernel<AD_F32, AD_F32>;
        case 1: return aligndistil_fdl_cluster_row_kernel<AD_BF16, AD_F32>;
        case 2: return aligndistil_fdl_cluster_row_kernel<AD_BF16, AD_BF16>;
        case 3: return aligndistil_fdl_cluster_row_kernel<AD_F16, AD_F32>;
        default: return aligndistil_fdl_cluster_row_kernel<AD_F16, AD_F16>;
    }
}

constexpr int kMaxDevicesC = 64;
/* cached cudaOccupancyMaxActiveClusters per (device, instance, cluster size, stages); 0 = not yet asked, -1 = none */
std::atomic<int> g_max_clusters[kMaxDevicesC][kInstances][5][2];
/* largest dynamic shared memory size already granted with cudaFuncSetAttribute per (device, instance) */
std::atomic<int> g_smem_set[kMaxDevicesC][kInstances];
std::atomic<int> g_nonportable_set[kMaxDevicesC][kInstances];

bool rows_aligned16(const void* base, int es, int64_t B, int64_t T, int64_t sb, int64_t st) {
    if (reinterpret_cast<uintptr_t>(base) & 15u) return false;
    if (B > 1 && ((sb * es) % 16) != 0) return false;
    if (T > 1 && ((st * es) % 16) != 0) return false;
    return true;
}

ClusterShape shape_for(int64_t V, int n, int stages, int es, int nrows) {
    ClusterShape cs{};
    const int64_t per = (V + n - 1) / n;
    cs.slice = (per + kChunk - 1) / kChunk * kChunk;
    cs.row_bytes = cs.slice * es;
    cs.stage_bytes = cs.row_bytes * nrows;
    cs.stages = stages;
    cs.nrows = nrows;
    return cs;
}

#define AD_CCALL(call)                                                 \
    do {                                                               \
        cudaError_t e_ = (call);                                       \
        if (e_ != cudaSuccess) return ad_cuda_record_error(#call, e_); \
    } while (0)

/* Grants `bytes` of dynamic shared memory (and non-portable cluster sizes) to an instance, once per device. */
int prepare_function(ClusterKernel fn, int dev, int instance, int bytes, int n) {
    const bool cache = dev >= 0 && dev < kMaxDevicesC;
    if (!cache || g_smem_set[dev][instance].load(std::memory_order_relaxed) < bytes) {
        AD_CCALL(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        if (cache) g_smem_set[dev][instance].store(bytes, std::memory_order_relaxed);
    }
    if (n > 8 && (!cache || g_nonportable_set[dev][instance].load(std::memory_order_relaxed) == 0)) {
        AD_CCALL(cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
        if (cache) g_nonportable_set[dev][instance].store(1, std::memory_order_relaxed);
    }
    return AD_OK;
}

}  // namespace

int ad_fdl_cluster_plan(const FdlParams& p, int dev, FdlClusterPlan* plan) {
    *plan = FdlClusterPlan{};
    plan->why = "not eligible";
    const bool same = p.s_dt == p.d_dt && (!p.has_second || p.r_dt == p.d_dt);
    if (!same) { plan->why = "mixed input dtypes"; return AD_OK; }
    const int es = p.s_dt == AD_F32 ? 4 : 2;
    if (!rows_aligned16(p.s, es, p.B, p.T, p.s_sb, p.s_st) || !rows_aligned16(p.d, es, p.B, p.T, p.d_sb, p.d_st) ||
        (p.has_second && !rows_aligned16(p.r, es, p.B, p.T, p.r_sb, p.r_st))) {
        plan->why = "input rows not 16-byte aligned (bulk copies need it)";
        return AD_OK;
    }
    int major = 0, cluster_ok = 0, optin = 0;
    AD_CCALL(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major < 9) { plan->why = "compute capability below 9.0"; return AD_OK; }
    AD_CCALL(cudaDeviceGetAttribute(&cluster_ok, cudaDevAttrClusterLaunch, dev));
    if (!cluster_ok) { plan->why = "device does not support cluster launch"; return AD_OK; }
    AD_CCALL(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));

    int instance;
    if (p.s_dt == AD_F32) instance = 0;
    else if (p.s_dt == AD_BF16) instance = p.g_dt == AD_F32 ? 1 : 2;
    else instance = p.g_dt == AD_F32 ? 3 : 4;
    ClusterKernel fn = cluster_kernel(instance);
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, fn) != cudaSuccess) {
        (void)cudaGetLastError();
        plan->why = "no loadable cluster kernel image for this device";
        return AD_OK;
    }
    const int64_t budget = static_cast<int64_t>(optin) - static_cast<int64_t>(attr.sharedSizeBytes);
    const int nrows = p.has_second ? 3 : 2;
    const int64_t rows = p.B * p.T;

    /* AD_CUDA_CLUSTER_SIZE = 1, 2, 4, 8 or 16 restricts the plan to that cluster size (tests use it to run the
     * cluster exchanges on small vocabularies); unset, 0 or anything else: the size is chosen below. */
    int forced = 0;
    if (const char* e = getenv("AD_CUDA_CLUSTER_SIZE")) {
        const int v = atoi(e);
        if (v == 1 || v == 2 || v == 4 || v == 8 || v == 16) forced = v;
    }
    /* Preference: two tokens in flight with a portable cluster (<= 8), then one token (<= 8), then 16 CTAs. */
    const int order[4][2] = {{2, 0}, {1, 0}, {2, 1}, {1, 1}}; /* {stages, 16-CTA pass} */
    for (const auto& o : order) {
        const int stages = o[0];
        for (int ni = 0; ni < 5; ++ni) {
            const int n = kClusterSizes[ni];
            if ((n == 16) != (o[1] == 1)) continue;
            if (forced != 0 && n != forced) continue;
            const ClusterShape cs = shape_for(p.V, n, stages, es, nrows);
            const int64_t bytes = cs.stage_bytes * stages;
            if (bytes > budget) continue;
            const bool cache = dev >= 0 && dev < kMaxDevicesC;
            int maxc = cache ? g_max_clusters[dev][instance][ni][stages - 1].load(std::memory_order_relaxed) : 0;
            if (maxc == 0 && prepare_function(fn, dev, instance, static_cast<int>(bytes), n) != AD_OK) {
                (void)cudaGetLastError(); /* the device refused this size: not an error of the call, try the next */
                maxc = -1;
                if (cache) g_max_clusters[dev][instance][ni][stages - 1].store(maxc, std::memory_order_relaxed);
            }
            if (maxc == 0) {
                cudaLaunchConfig_t cfg = {};
                cfg.gridDim = dim3(static_cast<unsigned int>(n), 1, 1);
                cfg.blockDim = dim3(kClusterThreads, 1, 1);
                cfg.dynamicSmemBytes = static_cast<size_t>(bytes);
                cudaLaunchAttribute at[1];
                at[0].id = cudaLaunchAttributeClusterDimension;
                at[0].val.clusterDim.x = static_cast<unsigned int>(n);
                at[0].val.clusterDim.y = 1;
                at[0].val.clusterDim.z = 1;
                cfg.attrs = at;
                cfg.numAttrs = 1;
                int num = 0;
                cudaError_t e = cudaOccupancyMaxActiveClusters(&num, fn, &cfg);
                if (e != cudaSuccess) {
                    (void)cudaGetLastError(); /* not sticky: this configuration is simply not available */
                    num = 0;
                }
                maxc = num > 0 ? num : -1;
                if (cache) g_max_clusters[dev][instance][ni][stages - 1].store(maxc, std::memory_order_relaxed);
            }
            if (maxc <= 0) continue;
            plan->ok = 1;
            plan->why = "";
            plan->cluster = n;
            plan->stages = stages;
            plan->slice = cs.slice;
            plan->smem_bytes = static_cast<int>(bytes);
            plan->clusters = static_cast<int>(rows < maxc ? rows : maxc);
            plan->instance = instance;
            return AD_OK;
        }
    }
    plan->why = "vocabulary too large for 16 CTAs' shared memory, or no cluster configuration fits on this device";
    return AD_OK;
}

int ad_fdl_cluster_launch(const FdlParams& p, const FdlClusterPlan& plan, cudaStream_t stream) {
    ClusterKernel fn = cluster_kernel(plan.instance);
    int dev = 0;
    AD_CCALL(cudaGetDevice(&dev));
    if (prepare_function(fn, dev, plan.instance, plan.smem_bytes, plan.cluster) != AD_OK) return AD_ERR_CUDA;
    const int es = p.s_dt == AD_F32 ? 4 : 2;
    const ClusterShape cs = shape_for(p.V, plan.cluster, plan.stages, es, p.has_second ? 3 : 2);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned int>(plan.clusters * plan.cluster), 1, 1);
    cfg.blockDim = dim3(kClusterThreads, 1, 1);
    cfg.dynamicSmemBytes = static_cast<size_t>(plan.smem_bytes);
    cfg.stream = stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = static_cast<unsigned int>(plan.cluster);
    at[0].val.clusterDim.y = 1;
    at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    AD_CCALL(cudaLaunchKernelEx(&cfg, fn, p, cs));
    return AD_OK;
}
