/*
 * fused_linear_loss.cu: the chunked fused-linear AlignDistil loss on the GPU (ad_fll_cuda,
 * ad_fll_cuda_workspace_bytes and ad_fll_cuda_chunk_tokens of native/include/aligndistil.h).
 * Compile-checked only: it has not run on a GPU yet.
 *
 * What it computes. From the final hidden states Xs, Xd, X2 [N, H] and LM heads Ws, Wd, W2 [V, H] (or a
 * teacher's own logits [N, V]): the ad_fdl loss of the logits zs = Xs Ws^T, zd = Xd Wd^T, z2 = X2 W2^T,
 * dXs = G Ws and dWs += G^T Xs with G = d loss / d zs, plus the optional per-row weight and token_loss.
 *
 * How. On the caller's stream, fully asynchronous (no host synchronisation, no allocation):
 *   aligndistil_fll_prepare_kernel       (1 CTA) counts n_b over the whole mask once and writes the row
 *                                         scale s_n = (1/n_b if length_norm) / N_div (0 on rows not selected),
 *                                         a contiguous copy of the mask, max_n s_n and the status words.
 *   then per chunk of C token rows [c0, c0 + C):
 *     cublasGemmEx x (1..3)              zs_c = Xs_c Ws^T (and zd_c, z2_c) into the [C, V] workspace, hidden dtype
 *     ad_fdl_cuda on a [1, C, V] problem with length_norm = 0 and seq_divisor = 1, in place over zs_c:
 *                                         it leaves G'_n = coef_n d K_n / d zs_n (the 1/Ts included) and
 *                                         token_loss_n = coef_n K_n; by the chain rule the true gradient row is
 *                                         G_n = s_n G'_n and loss = sum_n s_n token_loss_n.
 *     aligndistil_fll_chunk_check_kernel  merges the chunk's status into the caller's (token + c0) and, only
 *                                         after an error, zeroes G' so that the chunk adds exactly nothing.
 *     cublasGemmEx                        dX'_c = G'_c Ws into an f32 [C, H] scratch
 *     aligndistil_fll_chunk_post_kernel   dXs_c = s * dX'_c (rounded once to the hidden dtype) and the scaled
 *                                         rows Xsc_c = (s / s_max) * Xs_c (hidden dtype, exact when all s agree)
 *     cublasGemmEx                        dWs += s_max * G'_c^T Xsc_c (f32 accumulate, beta = 1)
 *   aligndistil_fll_finalize_kernel      (1 CTA) loss = sum_n s_n token_loss_n in f64, fixed order.
 *   aligndistil_fll_error_zero_kernel    exits at once unless a chunk failed; then zeroes dXs, weight, token_loss.
 *
 * What it never materialises. No [N, V] tensor: the logits of at most C rows per head and G (in place over
 * the student logits) live in the workspace; everything else is O(N + B) scalars and two [C, H] scratches.
 *
 * What it overwrites. dXs (every row), dWs (+=), weight / token_loss when given, *d_loss, d_status[0..3]
 * and the workspace. Hidden states, heads, teacher logits and the mask are only read.
 *
 * cuBLAS. The build machine has no cuBLAS headers or library: it is opened with dlopen at the first call
 * and the six entry points used are declared below. Row-major / column-major mapping: a row-major [R, K]
 * matrix with row stride ld is, to cuBLAS, the column-major K x R matrix with leading dimension ld (its
 * transpose). Hence, with every buffer row-major:
 *   Z[C,V] = X[C,H] W[V,H]^T      ->  Z^T (V x C, ld ldz) = op_T(W: H x V, ld H) * op_N(X^T: H x C, ld H)
 *   dX[C,H] = G[C,V] W[V,H]       ->  dX^T (H x C, ld H)  = op_N(W^T: H x V, ld H) * op_N(G^T: V x C, ld ldz)
 *   dW[V,H] += G^T[V,C] X[C,H]    ->  dW^T (H x V, ld H) += op_N(X^T: H x C, ld H) * op_T(G^T: V x C, ld ldz)
 * Pointer mode: host scalars (1, 0) for the four beta = 0 GEMMs, so cuBLAS never reads their uninitialised C;
 * device scalars for the dW GEMM (alpha = s_max, computed on the device from the mask; beta = 1).
 */
#include "aligndistil.h"
#include "ad_cuda_internal.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <dlfcn.h>
#include <climits>
#include <cstddef>
#include <math.h>
#include <mutex>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* ai.aligndistil.kernel.CudaFusedLinearLoss.Layout describes this struct by byte offsets. */
static_assert(sizeof(ad_fll_problem) == 264 && offsetof(ad_fll_problem, d_student_hidden) == 160 &&
                  offsetof(ad_fll_problem, variant) == 192 && offsetof(ad_fll_problem, chunk_tokens) == 256,
              "ad_fll_problem layout changed: update CudaFusedLinearLoss.Layout");

/* ------------------------------------------------------------------------------------------------ */
/* The part of the cuBLAS API used here, declared by hand (values from cublas_api.h / library_types.h) */
/* ------------------------------------------------------------------------------------------------ */

namespace {

typedef void* cublas_handle_t;           /* cublasHandle_t (an opaque struct pointer) */
typedef int cublas_status_t;             /* cublasStatus_t */

constexpr int kCublasStatusSuccess = 0;  /* CUBLAS_STATUS_SUCCESS */
constexpr int kCublasOpN = 0;            /* CUBLAS_OP_N */
constexpr int kCublasOpT = 1;            /* CUBLAS_OP_T */
constexpr int kCublasDefaultMath = 0;    /* CUBLAS_DEFAULT_MATH: no TF32 for f32 GEMMs */
constexpr int kCublasPointerModeHost = 0;   /* CUBLAS_POINTER_MODE_HOST */
constexpr int kCublasPointerModeDevice = 1; /* CUBLAS_POINTER_MODE_DEVICE */
constexpr int kCudaR32F = 0;             /* CUDA_R_32F  (cudaDataType) */
constexpr int kCudaR16F = 2;             /* CUDA_R_16F */
constexpr int kCudaR16BF = 14;           /* CUDA_R_16BF */
constexpr int kCublasCompute32F = 68;    /* CUBLAS_COMPUTE_32F (cublasComputeType_t) */
constexpr int kCublasGemmDefault = -1;   /* CUBLAS_GEMM_DEFAULT (cublasGemmAlgo_t) */

typedef cublas_status_t (*cublas_create_fn)(cublas_handle_t*);                 /* cublasCreate_v2 */
typedef cublas_status_t (*cublas_destroy_fn)(cublas_handle_t);                 /* cublasDestroy_v2 */
typedef cublas_status_t (*cublas_set_stream_fn)(cublas_handle_t, cudaStream_t); /* cublasSetStream_v2 */
typedef cublas_status_t (*cublas_set_math_mode_fn)(cublas_handle_t, int);      /* cublasSetMathMode */
typedef cublas_status_t (*cublas_set_pointer_mode_fn)(cublas_handle_t, int);   /* cublasSetPointerMode_v2 */
/* cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
 *              computeType, algo); the enums are C ints. */
typedef cublas_status_t (*cublas_gemm_ex_fn)(cublas_handle_t, int, int, int, int, int, const void*, const void*, int,
                                             int, const void*, int, int, const void*, void*, int, int, int, int);

struct Cublas {
    bool tried = false;
    bool ok = false;
    char why[640] = "";
    void* lib = nullptr;
    cublas_create_fn create = nullptr;
    cublas_destroy_fn destroy = nullptr;
    cublas_set_stream_fn set_stream = nullptr;
    cublas_set_math_mode_fn set_math_mode = nullptr;
    cublas_set_pointer_mode_fn set_pointer_mode = nullptr;
    cublas_gemm_ex_fn gemm_ex = nullptr;
};

Cublas g_cublas;
std::mutex g_cublas_load_mutex;

constexpr int kMaxDevices = 64;
cublas_handle_t g_handles[kMaxDevices];
int g_pointer_mode[kMaxDevices]; /* the handle's current pointer mode (guarded by g_device_mutex) */
std::mutex g_device_mutex[kMaxDevices];

/* Opens cuBLAS once per process. Returns nullptr (and the reason in g_cublas.why) when it is missing. */
const Cublas* load_cublas() {
    std::lock_guard<std::mutex> lock(g_cublas_load_mutex);
    if (g_cublas.tried) return g_cublas.ok ? &g_cublas : nullptr;
    g_cublas.tried = true;
    const char* forced = getenv("AD_CUBLAS_LIBRARY");
    const char* names[3] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    void* lib = nullptr;
    const char* err = "";
    if (forced != nullptr && forced[0] != '\0') {
        lib = dlopen(forced, RTLD_NOW | RTLD_LOCAL);
        if (lib == nullptr) {
            err = dlerror();
            snprintf(g_cublas.why, sizeof g_cublas.why, "cuBLAS not loaded: AD_CUBLAS_LIBRARY=%s: %s", forced,
                     err ? err : "?");
            return nullptr;
        }
    } else {
        for (const char* n : names) {
            lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
            if (lib != nullptr) break;
            err = dlerror();
        }
        if (lib == nullptr) {
            snprintf(g_cublas.why, sizeof g_cublas.why,
                     "cuBLAS not found (tried libcublas.so.13, libcublas.so.12, libcublas.so; set AD_CUBLAS_LIBRARY "
                     "to its path): %s", err ? err : "?");
            return nullptr;
        }
    }
    g_cublas.create = reinterpret_cast<cublas_create_fn>(dlsym(lib, "cublasCreate_v2"));
    g_cublas.destroy = reinterpret_cast<cublas_destroy_fn>(dlsym(lib, "cublasDestroy_v2"));
    g_cublas.set_stream = reinterpret_cast<cublas_set_stream_fn>(dlsym(lib, "cublasSetStream_v2"));
    g_cublas.set_math_mode = reinterpret_cast<cublas_set_math_mode_fn>(dlsym(lib, "cublasSetMathMode"));
    g_cublas.set_pointer_mode = reinterpret_cast<cublas_set_pointer_mode_fn>(dlsym(lib, "cublasSetPointerMode_v2"));
    g_cublas.gemm_ex = reinterpret_cast<cublas_gemm_ex_fn>(dlsym(lib, "cublasGemmEx"));
    if (!g_cublas.create || !g_cublas.destroy || !g_cublas.set_stream || !g_cublas.set_math_mode ||
        !g_cublas.set_pointer_mode || !g_cublas.gemm_ex) {
        snprintf(g_cublas.why, sizeof g_cublas.why,
                 "cuBLAS library opened but a symbol is missing (cublasCreate_v2, cublasDestroy_v2, cublasSetStream_v2, "
                 "cublasSetMathMode, cublasSetPointerMode_v2, cublasGemmEx)");
        dlclose(lib);
        return nullptr;
    }
    g_cublas.lib = lib;
    g_cublas.ok = true;
    return &g_cublas;
}

int record(int code, const char* what) {
    char buf[768];
    snprintf(buf, sizeof buf, "ad_fll_cuda: %s", what);
    return ad_cuda_record_message(code, buf);
}

int cublas_failed(const char* what, cublas_status_t st) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s failed with cublasStatus_t %d", what, st);
    return record(AD_ERR_CUDA, buf);
}

/* The device's handle, created on first use (caller holds g_device_mutex[dev]). */
int device_handle(const Cublas* cb, int dev, cublas_handle_t* out) {
    if (g_handles[dev] == nullptr) {
        cublas_handle_t h = nullptr;
        cublas_status_t st = cb->create(&h);
        if (st != kCublasStatusSuccess) return cublas_failed("cublasCreate_v2", st);
        st = cb->set_math_mode(h, kCublasDefaultMath);
        if (st == kCublasStatusSuccess) st = cb->set_pointer_mode(h, kCublasPointerModeHost);
        if (st != kCublasStatusSuccess) {
            (void)cb->destroy(h);
            return cublas_failed("cublasSetMathMode / cublasSetPointerMode_v2", st);
        }
        g_handles[dev] = h;
        g_pointer_mode[dev] = kCublasPointerModeHost;
    }
    *out = g_handles[dev];
    return AD_OK;
}

}  // namespace

/* ------------------------------------------------------------------------------------------------ */
/* Kernels (global scope: profilers show plain aligndistil_fll_* names)                               */
/* ------------------------------------------------------------------------------------------------ */

namespace {

constexpr int kSmallThreads = 1024;
constexpr int kEltThreads = 256;
constexpr int64_t kHeaderWords = 32;
/* header words: [0..3] the chunk's ad_fdl status, [4] the chunk's ad_fdl loss (unused), [5] selected rows,
 * [6] sequences with a selected row, [7] s_max (f64), [8..9] f32 constants {1, 0, s_max, 0} */
constexpr int kHdrChunkStatus = 0, kHdrChunkLoss = 4, kHdrSelected = 5, kHdrSequences = 6, kHdrSmax = 7, kHdrConsts = 8;

__device__ __forceinline__ float load_elt(const void* p, int dt, int64_t i) {
    if (dt == AD_F32) return static_cast<const float*>(p)[i];
    const unsigned short u = static_cast<const unsigned short*>(p)[i];
    if (dt == AD_BF16) return __uint_as_float(static_cast<unsigned int>(u) << 16);
    return __half2float(__ushort_as_half(u));
}

__device__ __forceinline__ void store_elt(void* p, int dt, int64_t i, float v) {
    if (dt == AD_F32) static_cast<float*>(p)[i] = v;
    else if (dt == AD_BF16) static_cast<unsigned short*>(p)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    else static_cast<unsigned short*>(p)[i] = __half_as_ushort(__float2half_rn(v));
}

__device__ double block_sum_d(double v, double* sh /* [32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double acc = 0.0;
    for (int w = 0; w < nwarps; ++w) acc += sh[w];
    __syncthreads();
    return acc;
}

__device__ double block_max_d(double v, double* sh /* [32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double acc = sh[0];
    for (int w = 1; w < nwarps; ++w) acc = fmax(acc, sh[w]);
    __syncthreads();
    return acc;
}

}  // namespace

struct FllParams {
    int64_t B, T, N, H, V, ldz;
    int dt;                       /* hidden dtype */
    int length_norm;
    double seq_divisor;
    const uint8_t* mask; int64_t m_sb, m_st;
    const void* xs;               /* [N, H] */
    void* dxs;                    /* [N, H] */
    float* weight;                /* caller, optional */
    float* token_loss;            /* caller, optional */
    const float* tl;              /* token_loss actually written (caller's or the workspace's) */
    int64_t* hdr;                 /* workspace */
    int64_t* nb;                  /* workspace [B] */
    double* s;                    /* workspace [N] */
    uint8_t* maskf;               /* workspace [N], or NULL when every row is selected */
    void* zs;                     /* workspace [C, ldz]: chunk logits, then G' in place */
    void* xsc;                    /* workspace [C, H] */
    float* dxf;                   /* workspace [C, H] */
    int64_t* status;              /* caller, 4 words */
    double* loss;                 /* caller */
};

__global__ void __launch_bounds__(kSmallThreads)
aligndistil_fll_prepare_kernel(FllParams p) {
    __shared__ double sh[32];
    __shared__ double sh_div;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    long long seqs = 0, rows = 0;
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
    const double nseq = block_sum_d(lane == 0 ? static_cast<double>(seqs) : 0.0, sh);
    const double nrows = block_sum_d(lane == 0 ? static_cast<double>(rows) : 0.0, sh);
    if (threadIdx.x == 0) sh_div = p.seq_divisor > 0.0 ? p.seq_divisor : nseq;
    __syncthreads(); /* also orders the nb[] writes above before the reads below */
    const double div = sh_div;
    double smax = 0.0;
    for (int64_t n = threadIdx.x; n < p.N; n += blockDim.x) {
        const int64_t b = n / p.T, t = n - b * p.T;
        const bool sel = p.mask == nullptr || p.mask[b * p.m_sb + t * p.m_st] != 0;
        double s = 0.0;
        if (sel && div > 0.0) s = (p.length_norm ? 1.0 / static_cast<double>(p.nb[b]) : 1.0) / div;
        p.s[n] = s;
        if (p.maskf) p.maskf[n] = sel ? 1 : 0;
        smax = fmax(smax, s);
    }
    smax = block_max_d(smax, sh);
    if (threadIdx.x == 0) {
        p.hdr[kHdrSelected] = static_cast<int64_t>(nrows);
        p.hdr[kHdrSequences] = static_cast<int64_t>(nseq);
        reinterpret_cast<double*>(p.hdr)[kHdrSmax] = smax;
        float* c = reinterpret_cast<float*>(p.hdr + kHdrConsts);
        c[0] = 1.0f;
        c[1] = 0.0f;
        c[2] = static_cast<float>(smax);
        c[3] = 0.0f;
        p.status[0] = AD_OK;
        p.status[1] = -1;
        p.status[2] = -1;
        p.status[3] = static_cast<int64_t>(nrows);
    }
}

/* Merges the chunk's status into the caller's and, only after an error (this chunk or an earlier one),
 * zeroes the chunk's G' (rows * ldz elements, a multiple of 8, so whole 16-byte words). */
__global__ void __launch_bounds__(kEltThreads)
aligndistil_fll_chunk_check_kernel(FllParams p, int64_t c0, int64_t rows) {
    const volatile int64_t* cs = p.hdr + kHdrChunkStatus;
    const int64_t chunk_code = cs[0];
    if (blockIdx.x == 0 && threadIdx.x == 0 && chunk_code != AD_OK && p.status[0] == AD_OK) {
        p.status[1] = cs[1] >= 0 ? c0 + cs[1] : -1;
        p.status[2] = cs[2];
        p.status[0] = chunk_code;
    }
    const bool err = chunk_code != AD_OK || *reinterpret_cast<volatile int64_t*>(p.status) != AD_OK;
    if (!err) return;
    const int64_t words = rows * p.ldz * (p.dt == AD_F32 ? 4 : 2) / 16;
    uint4* z = static_cast<uint4*>(p.zs);
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < words;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        z[i] = make_uint4(0u, 0u, 0u, 0u);
}

/* dXs rows = s * dX' (one rounding), Xsc = (s / s_max) * Xs rows; zeros on rows with s = 0 or after an error. */
__global__ void __launch_bounds__(kEltThreads)
aligndistil_fll_chunk_post_kernel(FllParams p, int64_t c0, int64_t rows) {
    const bool err = *reinterpret_cast<volatile int64_t*>(p.status) != AD_OK;
    const double smax = reinterpret_cast<const double*>(p.hdr)[kHdrSmax];
    const int64_t total = rows * p.H;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t r = i / p.H;
        const int64_t g = c0 * p.H + i; /* element of the [N, H] tensors */
        const double s = p.s[c0 + r];
        float dx = 0.0f, xs = 0.0f;
        if (!err && s > 0.0) {
            dx = static_cast<float>(s * static_cast<double>(p.dxf[i]));
            xs = static_cast<float>((s / smax) * static_cast<double>(load_elt(p.xs, p.dt, g)));
        }
        store_elt(p.dxs, p.dt, g, dx);
        store_elt(p.xsc, p.dt, i, xs);
    }
}

__global__ void __launch_bounds__(kSmallThreads)
aligndistil_fll_finalize_kernel(FllParams p) {
    __shared__ double sh[32];
    double v = 0.0;
    for (int64_t n = threadIdx.x; n < p.N; n += blockDim.x) v += p.s[n] * static_cast<double>(p.tl[n]);
    v = block_sum_d(v, sh);
    if (threadIdx.x == 0) *p.loss = *reinterpret_cast<volatile int64_t*>(p.status) == AD_OK ? v : 0.0;
}

__global__ void __launch_bounds__(kEltThreads)
aligndistil_fll_error_zero_kernel(FllParams p) {
    if (*reinterpret_cast<volatile int64_t*>(p.status) == AD_OK) return;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t i = first; i < p.N * p.H; i += stride) store_elt(p.dxs, p.dt, i, 0.0f);
    for (int64_t i = first; i < p.N; i += stride) {
        if (p.weight) p.weight[i] = 0.0f;
        if (p.token_loss) p.token_loss[i] = 0.0f;
    }
}

/* ------------------------------------------------------------------------------------------------ */
/* Host side                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

namespace {

struct NvtxRange {
    explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
    ~NvtxRange() { nvtxRangePop(); }
    NvtxRange(const NvtxRange&) = delete;
    NvtxRange& operator=(const NvtxRange&) = delete;
};

int invalid(const char* msg) {
    char buf[256];
    snprintf(buf, sizeof buf, "invalid argument: %s", msg);
    return record(AD_ERR_INVALID_ARGUMENT, buf);
}

bool valid_dtype(int64_t dt) { return dt == AD_F32 || dt == AD_BF16 || dt == AD_F16; }
int64_t dsize(int64_t dt) { return dt == AD_F32 ? 4 : 2; }
bool positive_finite(double x) { return isfinite(x) && x > 0.0; }
bool aligned_to(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }
int cuda_type(int64_t dt) { return dt == AD_F32 ? kCudaR32F : dt == AD_BF16 ? kCudaR16BF : kCudaR16F; }

/* Byte offsets of the workspace regions (-1 = absent). */
struct Layout {
    int64_t chunk, ldz;
    int64_t hdr, nb, s, maskf, tl, fdl, fdl_bytes, zs, zd, zr, xsc, dxf, total;
};

bool teacher_has_hidden(const void* hidden, const void* head) { return hidden != nullptr && head != nullptr; }

/* Adds a region of `bytes` at the current end (256-byte aligned); false on overflow. */
bool region(int64_t* end, int64_t bytes, int64_t* at) {
    const int64_t lim = INT64_C(1) << 62;
    if (bytes < 0 || bytes > lim || *end > lim) return false;
    *at = *end;
    *end = (*end + bytes + 255) / 256 * 256;
    return true;
}

bool mul3(int64_t a, int64_t b, int64_t c, int64_t* out) {
    int64_t x;
    return !__builtin_mul_overflow(a, b, &x) && !__builtin_mul_overflow(x, c, out);
}

/* Validation of the shapes the chunk and layout depend on; returns a message or nullptr. */
const char* check_shapes(const ad_fll_problem* pr, int64_t* N) {
    if (pr->batch < 1 || pr->seq < 1 || pr->hidden < 1 || pr->vocab < 1) return "batch, seq, hidden and vocab must be >= 1";
    if (__builtin_mul_overflow(pr->batch, pr->seq, N) || *N > (INT64_C(1) << 40)) return "batch * seq too large";
    if (pr->hidden > INT_MAX || pr->vocab > INT_MAX - 8) return "hidden and vocab must fit a cuBLAS int";
    int64_t x;
    if (!mul3(*N, pr->hidden, 4, &x) || !mul3(pr->vocab, pr->hidden, 4, &x)) return "N * H or V * H too large";
    if (!valid_dtype(pr->dtype)) return "unknown dtype";
    if (pr->chunk_tokens < 0) return "chunk_tokens must be >= 0";
    return nullptr;
}

int64_t resolve_chunk(const ad_fll_problem* pr, int64_t N) {
    const bool gkd = pr->variant == AD_VARIANT_GKD;
    int64_t c = pr->chunk_tokens;
    if (c == 0) {
        const int64_t es = dsize(pr->dtype), ldz = (pr->vocab + 7) / 8 * 8;
        const int64_t heads = 1 + (teacher_has_hidden(pr->dpo_hidden, pr->dpo_head) ? 1 : 0) +
                              (!gkd && teacher_has_hidden(pr->second_hidden, pr->second_head) ? 1 : 0);
        const int64_t per_token = heads * ldz * es + pr->hidden * (es + 4) + 8;
        c = AD_FLL_AUTO_WORKSPACE_BYTES / per_token / 256 * 256;
        if (c < 256) c = 256;
    }
    return c < N ? c : N;
}

/* Requires check_shapes to have passed. */
bool layout_for(const ad_fll_problem* pr, int64_t N, Layout* L) {
    const bool gkd = pr->variant == AD_VARIANT_GKD;
    const int64_t es = dsize(pr->dtype), H = pr->hidden, C = resolve_chunk(pr, N);
    L->chunk = C;
    L->ldz = (pr->vocab + 7) / 8 * 8;
    if (C > INT_MAX) return false;
    ad_fdl_problem fp{};
    fp.batch = 1;
    fp.seq = C;
    if (ad_fdl_cuda_workspace_bytes(&fp, &L->fdl_bytes) != AD_OK) return false;
    int64_t zbytes, hbytes, hfbytes;
    if (!mul3(C, L->ldz, es, &zbytes) || !mul3(C, H, es, &hbytes) || !mul3(C, H, 4, &hfbytes)) return false;
    int64_t end = 0;
    bool ok = region(&end, kHeaderWords * 8, &L->hdr) && region(&end, pr->batch * 8, &L->nb) &&
              region(&end, N * 8, &L->s);
    L->maskf = L->tl = L->zd = L->zr = -1;
    if (pr->mask != nullptr) ok = ok && region(&end, N, &L->maskf);
    if (pr->token_loss == nullptr) ok = ok && region(&end, N * 4, &L->tl);
    ok = ok && region(&end, L->fdl_bytes, &L->fdl) && region(&end, zbytes, &L->zs);
    if (teacher_has_hidden(pr->dpo_hidden, pr->dpo_head)) ok = ok && region(&end, zbytes, &L->zd);
    if (!gkd && teacher_has_hidden(pr->second_hidden, pr->second_head)) ok = ok && region(&end, zbytes, &L->zr);
    ok = ok && region(&end, hbytes, &L->xsc) && region(&end, hfbytes, &L->dxf);
    L->total = end;
    return ok;
}

/* One teacher: either hidden + head (logits NULL) or logits (hidden and head NULL). */
const char* check_teacher(const void* hidden, const void* head, const void* logits, int64_t ldt, int64_t stride,
                          int64_t N, int64_t V, int64_t es) {
    const bool has_h = hidden != nullptr || head != nullptr;
    if (has_h && logits != nullptr) return "a teacher has both hidden/head and logits";
    if (has_h) {
        if (hidden == nullptr || head == nullptr) return "a teacher's hidden and head must both be given";
        if (!aligned_to(hidden, es) || !aligned_to(head, es)) return "teacher hidden / head not aligned to the element size";
        return nullptr;
    }
    if (logits == nullptr) return "a teacher needs hidden + head or logits";
    if (!valid_dtype(ldt)) return "unknown teacher logits dtype";
    if (stride < V || stride > (INT64_C(1) << 40)) return "teacher logits stride must be >= vocab (and sane)";
    int64_t span;
    if (!mul3(N, stride, dsize(ldt), &span) || span > (INT64_C(1) << 60)) return "teacher logits span (N * stride) too large";
    if (!aligned_to(logits, dsize(ldt))) return "teacher logits not aligned to their element size";
    return nullptr;
}

bool mask_strides_ok(int64_t B, int64_t T, int64_t sb, int64_t st) {
    const int64_t lim = INT64_C(1) << 60;
    if (sb < -lim || sb > lim || st < -lim || st > lim) return false;
    int64_t x, y;
    if (__builtin_mul_overflow(B - 1, sb < 0 ? -sb : sb, &x)) return false;
    if (__builtin_mul_overflow(T - 1, st < 0 ? -st : st, &y)) return false;
    return x <= lim && y <= lim;
}

#define FLL_LAUNCH_CHECK(what)                                         \
    do {                                                               \
        cudaError_t e_ = cudaGetLastError();                           \
        if (e_ != cudaSuccess) return ad_cuda_record_error(what, e_);  \
    } while (0)

#define FLL_CALL(call)                                                 \
    do {                                                               \
        cudaError_t e_ = (call);                                       \
        if (e_ != cudaSuccess) return ad_cuda_record_error(#call, e_); \
    } while (0)

/* One cublasGemmEx. `device_scalars`: alpha and beta are device pointers (the dW GEMM); otherwise host
 * pointers, so that beta = 0 is seen by cuBLAS on the host and C (uninitialised workspace) is never read. */
struct Gemm {
    const Cublas* cb;
    cublas_handle_t h;
    int* mode; /* g_pointer_mode[dev] */
    int run(const char* what, bool device_scalars, int ta, int tb, int64_t m, int64_t n, int64_t k, const float* alpha,
            const void* A, int at, int64_t lda, const void* Bm, int bt, int64_t ldb, const float* beta, void* Cm, int ct,
            int64_t ldc) const {
        const int want = device_scalars ? kCublasPointerModeDevice : kCublasPointerModeHost;
        if (*mode != want) {
            cublas_status_t pm = cb->set_pointer_mode(h, want);
            if (pm != kCublasStatusSuccess) return cublas_failed("cublasSetPointerMode_v2", pm);
            *mode = want;
        }
        cublas_status_t st = cb->gemm_ex(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha,
                                         A, at, static_cast<int>(lda), Bm, bt, static_cast<int>(ldb), beta, Cm, ct,
                                         static_cast<int>(ldc), kCublasCompute32F, kCublasGemmDefault);
        if (st != kCublasStatusSuccess) return cublas_failed(what, st);
        return AD_OK;
    }
};

}  // namespace

extern "C" {

AD_EXPORT int32_t ad_fll_cuda_chunk_tokens(const ad_fll_problem* pr, int64_t* chunk) {
    if (pr == nullptr || chunk == nullptr) return invalid("problem or chunk is NULL");
    *chunk = 0;
    int64_t N = 0;
    if (const char* m = check_shapes(pr, &N)) return invalid(m);
    *chunk = resolve_chunk(pr, N);
    return AD_OK;
}

AD_EXPORT int32_t ad_fll_cuda_workspace_bytes(const ad_fll_problem* pr, int64_t* bytes) {
    if (pr == nullptr || bytes == nullptr) return invalid("problem or bytes is NULL");
    *bytes = 0;
    int64_t N = 0;
    if (const char* m = check_shapes(pr, &N)) return invalid(m);
    Layout L{};
    if (!layout_for(pr, N, &L)) return invalid("workspace size overflows");
    *bytes = L.total;
    return AD_OK;
}

AD_EXPORT int32_t ad_fll_cuda(const ad_fll_problem* pr, void* workspace, int64_t workspace_bytes_given,
                              double* d_loss, int64_t* d_status, void* stream) {
    NvtxRange range("ad_fll_cuda");

    /* ---- validation (before anything is launched or loaded) ---- */
    if (pr == nullptr) return invalid("problem is NULL");
    if (d_loss == nullptr || d_status == nullptr) return invalid("d_loss or d_status is NULL");
    if (!aligned_to(d_loss, 8) || !aligned_to(d_status, 8)) return invalid("d_loss / d_status not 8-byte aligned");
    int64_t N = 0;
    if (const char* m = check_shapes(pr, &N)) return invalid(m);
    if (pr->variant < AD_VARIANT_ALIGNDISTIL || pr->variant > AD_VARIANT_GKD) return invalid("unknown variant");
    const bool gkd = pr->variant == AD_VARIANT_GKD;
    if (pr->length_norm != 0 && pr->length_norm != 1) return invalid("length_norm must be 0 or 1");
    if (!positive_finite(pr->beta) || !positive_finite(pr->beta2) || !positive_finite(pr->epsilon) ||
        !positive_finite(pr->temperature) || !positive_finite(pr->student_temperature))
        return invalid("beta, beta2, epsilon, temperature and student_temperature must be finite and > 0");
    if (!isfinite(pr->seq_divisor)) return invalid("seq_divisor must be finite");
    const int64_t es = dsize(pr->dtype), H = pr->hidden, V = pr->vocab, B = pr->batch, T = pr->seq;
    if (pr->student_hidden == nullptr || pr->student_head == nullptr) return invalid("student hidden or head is NULL");
    if (pr->d_student_hidden == nullptr || pr->d_student_head == nullptr) return invalid("dXs or dWs is NULL");
    if (!aligned_to(pr->student_hidden, es) || !aligned_to(pr->student_head, es) || !aligned_to(pr->d_student_hidden, es) ||
        !aligned_to(pr->d_student_head, 4))
        return invalid("student hidden / head / dXs / dWs not aligned to the element size");
    if (const char* m = check_teacher(pr->dpo_hidden, pr->dpo_head, pr->dpo_logits, pr->dpo_logits_dtype,
                                      pr->dpo_logits_stride, N, V, es))
        return invalid(m);
    if (!gkd) {
        if (const char* m = check_teacher(pr->second_hidden, pr->second_head, pr->second_logits, pr->second_logits_dtype,
                                          pr->second_logits_stride, N, V, es))
            return invalid(m);
    }
    if (pr->mask != nullptr && !mask_strides_ok(B, T, pr->mask_stride_b, pr->mask_stride_t))
        return invalid("mask strides out of range");
    if (!aligned_to(pr->weight, 4) || !aligned_to(pr->token_loss, 4)) return invalid("weight / token_loss not 4-byte aligned");
    Layout L{};
    if (!layout_for(pr, N, &L)) return invalid("workspace size overflows");
    if (workspace == nullptr || workspace_bytes_given < L.total)
        return invalid("workspace missing or smaller than ad_fll_cuda_workspace_bytes");
    if (!aligned_to(workspace, 256)) return invalid("workspace not 256-byte aligned");

    const Cublas* cb = load_cublas();
    if (cb == nullptr) {
        std::lock_guard<std::mutex> lock(g_cublas_load_mutex);
        return record(AD_ERR_UNSUPPORTED, g_cublas.why);
    }

    (void)cudaGetLastError(); /* drop a stale, non-sticky error of an unrelated earlier call */
    int dev = 0, sms = 0;
    FLL_CALL(cudaGetDevice(&dev));
    if (dev < 0 || dev >= kMaxDevices) return record(AD_ERR_UNSUPPORTED, "device index beyond 63");
    FLL_CALL(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    if (sms < 1) sms = 1;

    std::lock_guard<std::mutex> device_lock(g_device_mutex[dev]);
    cublas_handle_t handle = nullptr;
    if (int rc = device_handle(cb, dev, &handle); rc != AD_OK) return rc;
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (cublas_status_t st = cb->set_stream(handle, s); st != kCublasStatusSuccess)
        return cublas_failed("cublasSetStream_v2", st);
    const Gemm gemm{cb, handle, &g_pointer_mode[dev]};

    char* ws = static_cast<char*>(workspace);
    FllParams p{};
    p.B = B; p.T = T; p.N = N; p.H = H; p.V = V; p.ldz = L.ldz;
    p.dt = static_cast<int>(pr->dtype);
    p.length_norm = static_cast<int>(pr->length_norm);
    p.seq_divisor = pr->seq_divisor;
    p.mask = pr->mask; p.m_sb = pr->mask_stride_b; p.m_st = pr->mask_stride_t;
    p.xs = pr->student_hidden;
    p.dxs = pr->d_student_hidden;
    p.weight = pr->weight;
    p.token_loss = pr->token_loss;
    p.hdr = reinterpret_cast<int64_t*>(ws + L.hdr);
    p.nb = reinterpret_cast<int64_t*>(ws + L.nb);
    p.s = reinterpret_cast<double*>(ws + L.s);
    p.maskf = L.maskf >= 0 ? reinterpret_cast<uint8_t*>(ws + L.maskf) : nullptr;
    float* tl = pr->token_loss != nullptr ? pr->token_loss : reinterpret_cast<float*>(ws + L.tl);
    p.tl = tl;
    p.zs = ws + L.zs;
    p.xsc = ws + L.xsc;
    p.dxf = reinterpret_cast<float*>(ws + L.dxf);
    p.status = d_status;
    p.loss = d_loss;
    void* zd = L.zd >= 0 ? ws + L.zd : nullptr;
    void* zr = L.zr >= 0 ? ws + L.zr : nullptr;
    static const float h_one = 1.0f, h_zero = 0.0f; /* host scalars (read by cuBLAS before it returns) */
    const float* one = &h_one;
    const float* zero = &h_zero;
    const float* d_one = reinterpret_cast<const float*>(p.hdr + kHdrConsts); /* device scalars of the dW GEMM */
    const float* d_smax = d_one + 2;
    const int ht = cuda_type(pr->dtype);

    aligndistil_fll_prepare_kernel<<<1, kSmallThreads, 0, s>>>(p);
    FLL_LAUNCH_CHECK("aligndistil_fll_prepare_kernel launch");

    const int64_t C = L.chunk;
    for (int64_t c0 = 0; c0 < N; c0 += C) {
        const int64_t rows = C < N - c0 ? C : N - c0;
        const char* xs_c = static_cast<const char*>(pr->student_hidden) + c0 * H * es;
        int rc;
        /* logits of the chunk: Z^T (V x rows) = op_T(W) * op_N(X_c^T) */
        rc = gemm.run("cublasGemmEx (student logits)", false, kCublasOpT, kCublasOpN, V, rows, H, one, pr->student_head, ht, H,
                      xs_c, ht, H, zero, p.zs, ht, L.ldz);
        if (rc != AD_OK) return rc;
        if (zd != nullptr) {
            rc = gemm.run("cublasGemmEx (dpo logits)", false, kCublasOpT, kCublasOpN, V, rows, H, one, pr->dpo_head, ht, H,
                          static_cast<const char*>(pr->dpo_hidden) + c0 * H * es, ht, H, zero, zd, ht, L.ldz);
            if (rc != AD_OK) return rc;
        }
        if (zr != nullptr) {
            rc = gemm.run("cublasGemmEx (second logits)", false, kCublasOpT, kCublasOpN, V, rows, H, one, pr->second_head, ht, H,
                          static_cast<const char*>(pr->second_hidden) + c0 * H * es, ht, H, zero, zr, ht, L.ldz);
            if (rc != AD_OK) return rc;
        }

        /* the row kernel on [1, rows, V], unnormalised (length_norm 0, N = 1), G' in place over zs */
        ad_fdl_problem fp{};
        fp.batch = 1; fp.seq = rows; fp.vocab = V;
        fp.student = p.zs; fp.student_dtype = pr->dtype; fp.student_stride_b = rows * L.ldz; fp.student_stride_t = L.ldz;
        if (zd != nullptr) {
            fp.dpo = zd; fp.dpo_dtype = pr->dtype; fp.dpo_stride_t = L.ldz;
        } else {
            fp.dpo = static_cast<const char*>(pr->dpo_logits) + c0 * pr->dpo_logits_stride * dsize(pr->dpo_logits_dtype);
            fp.dpo_dtype = pr->dpo_logits_dtype; fp.dpo_stride_t = pr->dpo_logits_stride;
        }
        fp.dpo_stride_b = rows * fp.dpo_stride_t;
        if (gkd) {
            fp.second = nullptr; fp.second_dtype = fp.dpo_dtype; fp.second_stride_t = 0;
        } else if (zr != nullptr) {
            fp.second = zr; fp.second_dtype = pr->dtype; fp.second_stride_t = L.ldz;
        } else {
            fp.second = static_cast<const char*>(pr->second_logits) +
                        c0 * pr->second_logits_stride * dsize(pr->second_logits_dtype);
            fp.second_dtype = pr->second_logits_dtype; fp.second_stride_t = pr->second_logits_stride;
        }
        fp.second_stride_b = rows * fp.second_stride_t;
        fp.mask = p.maskf != nullptr ? p.maskf + c0 : nullptr;
        fp.mask_stride_b = rows; fp.mask_stride_t = 1;
        fp.grad = p.zs; fp.grad_dtype = pr->dtype; fp.grad_stride_b = fp.student_stride_b; fp.grad_stride_t = L.ldz;
        fp.weight = pr->weight != nullptr ? pr->weight + c0 : nullptr;
        fp.token_loss = tl + c0;
        fp.metrics = nullptr;
        fp.variant = pr->variant; fp.length_norm = 0;
        fp.beta = pr->beta; fp.beta2 = pr->beta2; fp.epsilon = pr->epsilon;
        fp.temperature = pr->temperature; fp.student_temperature = pr->student_temperature;
        fp.seq_divisor = 1.0;
        rc = ad_fdl_cuda(&fp, ws + L.fdl, L.fdl_bytes, reinterpret_cast<double*>(p.hdr + kHdrChunkLoss),
                         p.hdr + kHdrChunkStatus, stream);
        if (rc != AD_OK) return rc; /* its message is already in ad_cuda_last_error */

        const int64_t zwords = rows * L.ldz * es / 16;
        const int64_t check_cap = static_cast<int64_t>(sms) * 4;
        const int64_t check_need = (zwords + kEltThreads - 1) / kEltThreads;
        aligndistil_fll_chunk_check_kernel<<<static_cast<unsigned int>(check_need < check_cap ? check_need : check_cap),
                                             kEltThreads, 0, s>>>(p, c0, rows);
        FLL_LAUNCH_CHECK("aligndistil_fll_chunk_check_kernel launch");

        /* dX'^T (H x rows) = op_N(W^T) * op_N(G'^T), f32 */
        rc = gemm.run("cublasGemmEx (dX)", false, kCublasOpN, kCublasOpN, H, rows, V, one, pr->student_head, ht, H, p.zs, ht,
                      L.ldz, zero, p.dxf, kCudaR32F, H);
        if (rc != AD_OK) return rc;

        const int64_t post_need = (rows * H + kEltThreads - 1) / kEltThreads;
        const int64_t post_cap = static_cast<int64_t>(sms) * 8;
        aligndistil_fll_chunk_post_kernel<<<static_cast<unsigned int>(post_need < post_cap ? post_need : post_cap),
                                            kEltThreads, 0, s>>>(p, c0, rows);
        FLL_LAUNCH_CHECK("aligndistil_fll_chunk_post_kernel launch");

        /* dW^T (H x V) += s_max * op_N(Xsc^T) * op_T(G'^T), f32 accumulator */
        rc = gemm.run("cublasGemmEx (dW)", true, kCublasOpN, kCublasOpT, H, V, rows, d_smax, p.xsc, ht, H, p.zs, ht,
                      L.ldz, d_one, pr->d_student_head, kCudaR32F, H);
        if (rc != AD_OK) return rc;
    }

    aligndistil_fll_finalize_kernel<<<1, kSmallThreads, 0, s>>>(p);
    FLL_LAUNCH_CHECK("aligndistil_fll_finalize_kernel launch");
    const int64_t zero_cap = static_cast<int64_t>(sms) * 8;
    const int64_t zero_need = (N * H + kEltThreads - 1) / kEltThreads;
    aligndistil_fll_error_zero_kernel<<<static_cast<unsigned int>(zero_need < zero_cap ? zero_need : zero_cap),
                                        kEltThreads, 0, s>>>(p);
    FLL_LAUNCH_CHECK("aligndistil_fll_error_zero_kernel launch");
    return AD_OK;
}

}  // extern "C"
