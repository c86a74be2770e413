/*
 * fused_distill_loss_common.cuh: what the two row kernels of the fused distill loss share: the kernel
 * parameter struct, element loads and stores, fixed-order block reductions, the error report and the fast exp.
 *   fused_distill_loss.cu          the portable multi-pass kernel, the host entry points and the kernel choice
 *   fused_distill_loss_hopper.cu   the Hopper (sm_90) thread-block-cluster kernel
 * Internal to libaligndistil_cuda.so; the public contract is native/include/aligndistil.h.
 */
#ifndef AD_FUSED_DISTILL_LOSS_COMMON_CUH
#define AD_FUSED_DISTILL_LOSS_COMMON_CUH

#include "aligndistil.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int kAny = -1;           /* template dtype: chosen at run time from the problem */
constexpr int kChunk = 8;          /* columns per thread per step: 16 bytes of bf16/f16, 32 bytes of f32 */
constexpr int kRowThreads = 512;   /* threads per row CTA */
constexpr int kSmallThreads = 1024;
constexpr int kZeroThreads = 256;

/* Workspace layout (all 8-byte words). */
constexpr int64_t kHeaderWords = 8; /* [0] sequences with a selected row, [1] selected rows, rest unused */


/* ------------------------------------------------------------------------------------------------ */
/* Element loads and stores                                                                          */
/* ------------------------------------------------------------------------------------------------ */

__device__ __forceinline__ float bf16_bits_to_float(unsigned int bits16) {
    return __uint_as_float(bits16 << 16);
}

template <int DT>
__device__ __forceinline__ float load_one(const void* row, int64_t v) {
    if constexpr (DT == AD_F32) {
        return static_cast<const float*>(row)[v];
    } else if constexpr (DT == AD_BF16) {
        return bf16_bits_to_float(static_cast<const unsigned short*>(row)[v]);
    } else {
        return __half2float(__ushort_as_half(static_cast<const unsigned short*>(row)[v]));
    }
}

/* Loads columns [8k, 8k+8) of a row as floats; columns >= V read as -inf (outside the vocabulary).
 * `aligned`: the row pointer is 16-byte aligned, so a full chunk is one (16-bit) or two (f32) 16-byte loads. */
template <int DT>
__device__ __forceinline__ void load_chunk_t(const void* row, bool aligned, int64_t k, int64_t V, float (&x)[kChunk]) {
    const int64_t v0 = k * kChunk;
    if (aligned && v0 + kChunk <= V) {
        if constexpr (DT == AD_F32) {
            const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(row) + v0);
            float4 a = p[0], b = p[1];
            x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
            x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
        } else {
            uint4 w = *reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(row) + v0);
            unsigned int u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if constexpr (DT == AD_BF16) {
                    x[2 * i] = __uint_as_float(u[i] << 16);
                    x[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
                } else {
                    x[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[i] & 0xffffu)));
                    x[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(u[i] >> 16)));
                }
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < kChunk; ++j) x[j] = (v0 + j < V) ? load_one<DT>(row, v0 + j) : -INFINITY;
    }
}

template <int DT>
__device__ __forceinline__ void load_chunk(const void* row, int dt_rt, bool aligned, int64_t k, int64_t V, float (&x)[kChunk]) {
    if constexpr (DT == kAny) {
        if (dt_rt == AD_F32) load_chunk_t<AD_F32>(row, aligned, k, V, x);
        else if (dt_rt == AD_BF16) load_chunk_t<AD_BF16>(row, aligned, k, V, x);
        else load_chunk_t<AD_F16>(row, aligned, k, V, x);
    } else {
        load_chunk_t<DT>(row, aligned, k, V, x);
    }
}

template <int DT>
__device__ __forceinline__ unsigned short to_bits16(float f) {
    if constexpr (DT == AD_BF16) return __bfloat16_as_ushort(__float2bfloat16_rn(f));
    else return __half_as_ushort(__float2half_rn(f));
}

/* Stores columns [8k, 8k+8) of a gradient row (only columns < V), round-to-nearest for 16-bit types. */
template <int DT>
__device__ __forceinline__ void store_chunk_t(void* row, bool aligned, int64_t k, int64_t V, const float (&g)[kChunk]) {
    const int64_t v0 = k * kChunk;
    if (aligned && v0 + kChunk <= V) {
        if constexpr (DT == AD_F32) {
            float4* p = reinterpret_cast<float4*>(static_cast<float*>(row) + v0);
            p[0] = make_float4(g[0], g[1], g[2], g[3]);
            p[1] = make_float4(g[4], g[5], g[6], g[7]);
        } else {
            unsigned int u[4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
                u[i] = static_cast<unsigned int>(to_bits16<DT>(g[2 * i])) |
                       (static_cast<unsigned int>(to_bits16<DT>(g[2 * i + 1])) << 16);
            *reinterpret_cast<uint4*>(static_cast<unsigned short*>(row) + v0) = make_uint4(u[0], u[1], u[2], u[3]);
        }
    } else {
#pragma unroll
        for (int j = 0; j < kChunk; ++j) {
            if (v0 + j < V) {
                if constexpr (DT == AD_F32) static_cast<float*>(row)[v0 + j] = g[j];
                else static_cast<unsigned short*>(row)[v0 + j] = to_bits16<DT>(g[j]);
            }
        }
    }
}

template <int DT>
__device__ __forceinline__ void store_chunk(void* row, int dt_rt, bool aligned, int64_t k, int64_t V, const float (&g)[kChunk]) {
    if constexpr (DT == kAny) {
        if (dt_rt == AD_F32) store_chunk_t<AD_F32>(row, aligned, k, V, g);
        else if (dt_rt == AD_BF16) store_chunk_t<AD_BF16>(row, aligned, k, V, g);
        else store_chunk_t<AD_F16>(row, aligned, k, V, g);
    } else {
        store_chunk_t<DT>(row, aligned, k, V, g);
    }
}

__device__ __forceinline__ int dtype_size(int dt) { return dt == AD_F32 ? 4 : 2; }

__device__ __forceinline__ const void* row_ptr(const void* base, int dt, int64_t b, int64_t t, int64_t sb, int64_t st) {
    return static_cast<const char*>(base) + (b * sb + t * st) * dtype_size(dt);
}

__device__ __forceinline__ bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

/* Zeroes one gradient row (any dtype), chunk-strided over the block's threads. */
__device__ void zero_row(void* row, int dt, int64_t V, int tid, int nthreads) {
    const bool aligned = is_aligned16(row);
    const int64_t nchunks = (V + kChunk - 1) / kChunk;
    float z[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j) z[j] = 0.0f;
    for (int64_t k = tid; k < nchunks; k += nthreads) store_chunk<kAny>(row, dt, aligned, k, V, z);
}

/* ------------------------------------------------------------------------------------------------ */
/* Block reductions (fixed order: deterministic)                                                     */
/* ------------------------------------------------------------------------------------------------ */

template <int N>
__device__ __forceinline__ void block_sum(double (&v)[N], double* sh /* [N * 32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < N; ++i) sh[i * 32 + warp] = v[i];
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; ++i) {
        double acc = 0.0;
        for (int w = 0; w < nwarps; ++w) acc += sh[i * 32 + w];
        v[i] = acc;
    }
    __syncthreads();
}

template <int N>
__device__ __forceinline__ void block_max(float (&v)[N], float* sh /* [N * 32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v[i] = fmaxf(v[i], __shfl_xor_sync(0xffffffffu, v[i], o));
    if (lane == 0)
#pragma unroll
        for (int i = 0; i < N; ++i) sh[i * 32 + warp] = v[i];
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; ++i) {
        float acc = -INFINITY;
        for (int w = 0; w < nwarps; ++w) acc = fmaxf(acc, sh[i * 32 + w]);
        v[i] = acc;
    }
    __syncthreads();
}

__device__ __forceinline__ long long block_min_ll(long long v, long long* sh /* [32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        long long u = __shfl_xor_sync(0xffffffffu, v, o);
        v = u < v ? u : v;
    }
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    long long acc = sh[0];
    for (int w = 1; w < nwarps; ++w) acc = sh[w] < acc ? sh[w] : acc;
    __syncthreads();
    return acc;
}

/* The first error wins: only the thread whose compare-and-swap moves the code off AD_OK writes token/column. */
__device__ void report_error(int64_t* status, int64_t code, int64_t token, int64_t column) {
    unsigned long long* c = reinterpret_cast<unsigned long long*>(status);
    if (atomicCAS(c, 0ull, static_cast<unsigned long long>(code)) == 0ull) {
        status[1] = token;
        status[2] = column;
        __threadfence();
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Fast exp                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

/* 2^x with the MUFU.EX2 instruction (PTX ex2.approx.ftz.f32: at most 2 ulp of relative error, subnormal results
 * flushed to 0, 2^-inf = 0). Callers pass logits that are centred on their row maximum and already scaled by
 * log2(e), so the whole exp is one multiply (often folded into an existing one) plus one MUFU op instead of
 * expf's range reduction. The f32 rounding of x*log2(e) adds |x| * 2^-24 * ln 2 of relative error to the result,
 * below 3e-6 for |x| <= 60 and only on terms at most e^-60 of the row's largest: invisible next to the f32 chunk
 * sums (the self-test's 1e-5 / 1e-4 tolerances hold it). */
__device__ __forceinline__ float ex2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* e^x through ex2_approx (one FMUL + one MUFU op). */
__device__ __forceinline__ float exp_fast(float x) { return ex2_approx(x * kLog2e); }

}  // namespace

/* Kernel parameters (by value). Kernels and this struct live at global scope so profilers show plain
 * aligndistil_fdl_* names; the library exports only the extern "C" entry points (hidden visibility). */
struct FdlParams {
    int64_t B, T, V;
    const void* s; int64_t s_sb, s_st;
    const void* d; int64_t d_sb, d_st;
    const void* r; int64_t r_sb, r_st;
    const uint8_t* mask; int64_t m_sb, m_st;
    void* g; int64_t g_sb, g_st;
    float* weight; float* token_loss; float* metrics;
    int s_dt, d_dt, r_dt, g_dt;
    int variant, length_norm, in_place, has_second;
    double beta, beta2, epsilon, temperature, student_temperature, seq_divisor;
    int64_t* header;     /* workspace */
    int64_t* nb;         /* workspace, [B] */
    double* contrib;     /* workspace, [B*T] */
    int64_t* status;     /* caller, 4 words */
    double* loss;        /* caller */
};

/* ------------------------------------------------------------------------------------------------ */
/* The Hopper cluster kernel (fused_distill_loss_hopper.cu), seen from the dispatcher                 */
/* ------------------------------------------------------------------------------------------------ */

/* How a problem would run on the cluster kernel, or why it cannot. */
struct FdlClusterPlan {
    int ok;              /* 1: the cluster kernel can run this problem on this device */
    const char* why;     /* when ok == 0: the reason (static string) */
    int cluster;         /* CTAs per token (1, 2, 4, 8 or 16) */
    int stages;          /* tokens in flight per CTA (1 or 2) */
    int64_t slice;       /* vocabulary columns per CTA (multiple of 8) */
    int smem_bytes;      /* dynamic shared memory per CTA */
    int clusters;        /* persistent grid: clusters launched (<= rows) */
    int instance;        /* which template instance */
};

/* Fills `plan` for problem `p` on device `dev` (which must be the current device). Returns AD_OK (plan->ok says
 * whether the cluster kernel applies) or AD_ERR_CUDA when a device query failed. */
int ad_fdl_cluster_plan(const FdlParams& p, int dev, FdlClusterPlan* plan);

/* Launches the cluster row kernel on `stream` for a plan with ok == 1. AD_OK or AD_ERR_CUDA. */
int ad_fdl_cluster_launch(const FdlParams& p, const FdlClusterPlan& plan, cudaStream_t stream);

#endif /* AD_FUSED_DISTILL_LOSS_COMMON_CUH */
