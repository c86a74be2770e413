/*
 * aligndistil.h: the one C ABI of the aligndistil native libraries.
 *
 * Two shared libraries implement it:
 *   libaligndistil_cpu.so   always built; ad_fdl_cpu and the ad_cpu_* helpers.
 *   libaligndistil_cuda.so  built when nvcc is found; ad_fdl_cuda and the ad_cuda_* / ad_nvtx_* helpers.
 * Java reaches both through java.lang.foreign (FFM). There is no JNI and no generated binding.
 *
 * Conventions
 *  - Every function returns an int32 status: AD_OK (0) or one of the AD_ERR_* codes below. No function
 *    ever calls exit(), abort() or prints to stdout.
 *  - Every struct shared with Java is made of 8-byte fields only (int64, double, pointers), so its layout
 *    is the same on every x86-64 / aarch64 ABI and the Java side can describe it with a flat layout.
 *  - Tensors are row-major [B, T, V] with the vocabulary dimension contiguous (stride 1); the B and T
 *    strides are given in ELEMENTS and may be anything (padding, views, a transposed batch).
 *
 * The operation (ad_fdl = "fused distill loss"), one token row at a time, for the selected rows only:
 *   zs = student logits row, zd = DPO logits row, z2 = second teacher row (reverse DPO or reference)
 *   p      = softmax(zs / Ts)                         Ts = student_temperature (1 unless asked)
 *   pd, p2 = softmax(zd), softmax(z2)                 (never tempered)
 *   tvd    = sum_v |pd_v - p2_v|                      (no 1/2: the official code)
 *   weight = alpha = beta2 * tvd + epsilon            (aligndistil, adaptive)
 *          = beta / beta2                             (contrast, theorem1)
 *          = 1                                        (gkd)
 *   teacher logits z* = zd + alpha (zd - z2)          (aligndistil, contrast)
 *                     = alpha zd + (1 - alpha) z2     (adaptive, theorem1)
 *                     = zd                            (gkd)
 *   q      = softmax(z* / T)                          T = temperature; gkd uses T = 1 whatever is passed
 *   K      = KL(p || q) = sum_v p_v (log p_v - log q_v)
 *   coef   = beta / alpha (aligndistil, adaptive), beta2 (contrast, theorem1), 1 (gkd)
 *   token_loss = coef * K
 *   loss   = (1/N) sum_b [ (1/n_b if length_norm) sum_{t selected in b} coef_bt K_bt ]
 *            n_b = number of selected rows of sequence b; sequences with n_b = 0 are skipped;
 *            N = seq_divisor if > 0, else the number of sequences with n_b > 0 (0 sequences: loss 0).
 *   grad[b,t,v] = d loss / d zs[b,t,v] = (c_bt / Ts) p_v (log p_v - log q_v - K)
 *            with c_bt = coef_bt * (1/n_b if length_norm) / N; rows not selected get 0.
 *   metrics (optional, per selected row, 3 floats):
 *     [0] expected token reward  sum_v p_v * beta * (log pd_v - log p2_v)
 *     [1] KL(p || pd)
 *     [2] KL(p || p2)
 *
 * Non-finite inputs. A column that is -inf in all three rows is outside the vocabulary: probability 0,
 * gradient 0, excluded from every sum. A NaN or +inf anywhere in a selected row, or a -inf in only some of
 * the three rows of a column, is AD_ERR_NONFINITE with status->token = b*T + t and status->column = v
 * (the first such column in the row that was found first). A selected row whose every column is -inf is
 * AD_ERR_EMPTY_ROW. Rows not selected are never read.
 * On any error the separate gradient buffer is left all zero for the selected rows (never half written),
 * weight / token_loss / metrics are zero and the loss is 0. When grad aliases the student logits (in place),
 * the student rows' contents are unspecified after an error.
 *
 * Precision. Inputs f32, bf16 or f16; all arithmetic f32 or better; row sums accumulated in f64 (or f32
 * blocks folded into f64), logits centred on their row max before any product, so K keeps its digits
 * when p and q nearly agree.
 */
#ifndef ALIGNDISTIL_H
#define ALIGNDISTIL_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define AD_EXPORT __declspec(dllexport)
#else
#define AD_EXPORT __attribute__((visibility("default")))
#endif

#define AD_ABI_VERSION 1

/* status codes */
#define AD_OK                   0
#define AD_ERR_INVALID_ARGUMENT 1   /* a field of the problem is out of range (checked again natively) */
#define AD_ERR_NONFINITE        2   /* NaN, +inf, or a partial -inf in a selected row; see token/column */
#define AD_ERR_EMPTY_ROW        3   /* a selected row is -inf in every column; see token */
#define AD_ERR_UNSUPPORTED      4   /* dtype / variant / feature not built into this library */
#define AD_ERR_CUDA             5   /* a CUDA runtime call failed; ad_cuda_last_error() says which */
#define AD_ERR_OUT_OF_MEMORY    6

/* dtypes */
#define AD_F32  0
#define AD_BF16 1
#define AD_F16  2

/* variants */
#define AD_VARIANT_ALIGNDISTIL 0
#define AD_VARIANT_CONTRAST    1
#define AD_VARIANT_ADAPTIVE    2
#define AD_VARIANT_THEOREM1    3
#define AD_VARIANT_GKD         4

/* Number of float metrics written per row when ad_fdl_problem.metrics is not NULL. */
#define AD_FDL_METRICS 3

/*
 * The problem: shapes, pointers, strides, dtypes and parameters of one call. All fields are 8 bytes.
 * For ad_fdl_cpu the pointers are host pointers; for ad_fdl_cuda they are device pointers (the struct
 * itself lives in host memory and is read before the launch returns).
 */
typedef struct ad_fdl_problem {
    int64_t batch;               /* B >= 1 */
    int64_t seq;                 /* T >= 1 */
    int64_t vocab;               /* V >= 1 */

    const void* student;         /* [B,T,V] */
    int64_t student_dtype;       /* AD_F32 | AD_BF16 | AD_F16 */
    int64_t student_stride_b;    /* elements */
    int64_t student_stride_t;    /* elements */

    const void* dpo;             /* [B,T,V] */
    int64_t dpo_dtype;
    int64_t dpo_stride_b;
    int64_t dpo_stride_t;

    const void* second;          /* [B,T,V]: reverse DPO (aligndistil, contrast) or reference (adaptive, theorem1); unused by gkd (may be NULL) */
    int64_t second_dtype;
    int64_t second_stride_b;
    int64_t second_stride_t;

    const uint8_t* mask;         /* [B,T] u8, nonzero = selected; NULL = every row selected */
    int64_t mask_stride_b;       /* elements (bytes) */
    int64_t mask_stride_t;

    void* grad;                  /* [B,T,V] output; may equal student (same dtype and strides) for in place */
    int64_t grad_dtype;          /* AD_F32, or the student's own dtype */
    int64_t grad_stride_b;
    int64_t grad_stride_t;

    float* weight;               /* [B*T] contiguous, optional (NULL): alpha_t, 0 on rows not selected */
    float* token_loss;           /* [B*T] contiguous, optional: coef * K, 0 on rows not selected */
    float* metrics;              /* [B*T*AD_FDL_METRICS] contiguous, optional: see the header comment */

    int64_t variant;             /* AD_VARIANT_* */
    int64_t length_norm;         /* 0 or 1 */
    double beta;                 /* > 0, finite (0.1) */
    double beta2;                /* > 0, finite (10) */
    double epsilon;              /* > 0, finite (1e-3) */
    double temperature;          /* teacher temperature T > 0, finite (1) */
    double student_temperature;  /* Ts > 0, finite (1); the official on-policy trainer uses Ts = T */
    double seq_divisor;          /* > 0: N; <= 0: N = number of sequences with a selected row */
} ad_fdl_problem;

/* What a call reports back (host memory). */
typedef struct ad_fdl_status {
    int64_t code;                /* AD_OK or AD_ERR_* (same as the return value) */
    int64_t token;               /* on AD_ERR_NONFINITE / AD_ERR_EMPTY_ROW: b*T + t, else -1 */
    int64_t column;              /* on AD_ERR_NONFINITE: v, else -1 */
    double  loss;                /* the batch loss (CPU only; CUDA writes it to device memory) */
    int64_t selected_rows;       /* number of selected rows */
    int64_t sequences;           /* number of sequences with a selected row */
} ad_fdl_status;

/* ------------------------------------------------------------------------------------------------ */
/* CPU library (libaligndistil_cpu.so)                                                               */
/* ------------------------------------------------------------------------------------------------ */

AD_EXPORT int32_t ad_abi_version(void);

/* Fused loss + gradient on the host. threads <= 0: the library default (ad_cpu_set_threads, initially
 * the number of online CPUs, read once). Safe to call from several threads at once: a call that finds the worker
 * pool busy runs on its caller's thread alone. Each thread that runs rows (pool workers, callers) keeps a row scratch
 * of about 8 * vocab bytes, allocated on its first call and again only when a call has a larger vocabulary (freed at
 * thread exit); AD_ERR_OUT_OF_MEMORY when that allocation fails. Nothing else is allocated after the pool started. */
AD_EXPORT int32_t ad_fdl_cpu(const ad_fdl_problem* problem, ad_fdl_status* status, int32_t threads);

/* Which vector code path ad_fdl_cpu runs on this machine: "avx512", "avx2" or "portable". */
AD_EXPORT const char* ad_cpu_isa(void);

/* Forces a code path ("avx512", "avx2", "portable") for tests; returns AD_ERR_UNSUPPORTED when the CPU
 * cannot run it. NULL or "auto" restores the automatic choice. Not thread-safe against running calls. */
AD_EXPORT int32_t ad_cpu_force_isa(const char* isa);

/* Size of the worker pool (including the calling thread); n <= 0 means the number of online CPUs. */
AD_EXPORT int32_t ad_cpu_set_threads(int32_t n);
AD_EXPORT int32_t ad_cpu_get_threads(void);

/* ------------------------------------------------------------------------------------------------ */
/* CUDA library (libaligndistil_cuda.so)                                                             */
/* ------------------------------------------------------------------------------------------------ */

/* Device workspace ad_fdl_cuda needs for this problem, in bytes (depends on B and T only). */
AD_EXPORT int32_t ad_fdl_cuda_workspace_bytes(const ad_fdl_problem* problem, int64_t* bytes);

/* Fused loss + gradient on the GPU, asynchronous on `stream` (a cudaStream_t; NULL = legacy default
 * stream). All pointers in `problem` are device pointers. `d_loss` (device, one double) receives the
 * batch loss; `d_status` (device, 4 int64: code, token, column, selected_rows) receives the row-level
 * outcome once the stream reaches it. `workspace` is device memory of at least
 * ad_fdl_cuda_workspace_bytes. Returns AD_ERR_INVALID_ARGUMENT / AD_ERR_CUDA for launch-time failures;
 * data-dependent errors (non-finite rows) arrive in d_status. When d_status reports an error the kernel
 * has already zeroed a separate gradient buffer, the loss and the optional outputs. */
AD_EXPORT int32_t ad_fdl_cuda(const ad_fdl_problem* problem, void* workspace, int64_t workspace_bytes,
                              double* d_loss, int64_t* d_status, void* stream);

/* Runtime helpers, so Java can drive the GPU without any other binding. Each returns AD_OK or AD_ERR_CUDA. */
AD_EXPORT int32_t ad_cuda_device_count(int32_t* count);              /* 0 devices (no driver) is AD_OK */
AD_EXPORT int32_t ad_cuda_device_name(int32_t device, char* buf, int64_t len);
AD_EXPORT int32_t ad_cuda_device_info(int32_t device, int64_t* info); /* [0]=cc major [1]=cc minor [2]=SMs [3]=global mem bytes [4]=L2 bytes [5]=driver version [6]=runtime version */
AD_EXPORT int32_t ad_cuda_set_device(int32_t device);
AD_EXPORT int32_t ad_cuda_malloc(void** ptr, int64_t bytes);
AD_EXPORT int32_t ad_cuda_free(void* ptr);
AD_EXPORT int32_t ad_cuda_memcpy_htod(void* dst, const void* src, int64_t bytes, void* stream); /* synchronous w.r.t. the host */
AD_EXPORT int32_t ad_cuda_memcpy_dtoh(void* dst, const void* src, int64_t bytes, void* stream); /* synchronous w.r.t. the host */
AD_EXPORT int32_t ad_cuda_memcpy_dtod(void* dst, const void* src, int64_t bytes, void* stream); /* asynchronous */
AD_EXPORT int32_t ad_cuda_memset(void* dst, int32_t value, int64_t bytes, void* stream);          /* asynchronous */
AD_EXPORT int32_t ad_cuda_stream_create(void** stream);
AD_EXPORT int32_t ad_cuda_stream_destroy(void* stream);
AD_EXPORT int32_t ad_cuda_stream_synchronize(void* stream);
AD_EXPORT int32_t ad_cuda_event_create(void** event);
AD_EXPORT int32_t ad_cuda_event_destroy(void* event);
AD_EXPORT int32_t ad_cuda_event_record(void* event, void* stream);
AD_EXPORT int32_t ad_cuda_event_elapsed_ms(void* start, void* end, float* ms); /* synchronises on `end` */
/* The last CUDA error seen by this thread, as text ("" when none). */
AD_EXPORT const char* ad_cuda_last_error(void);

/* NVTX ranges and profiler control (no-ops when no tool is attached). */
AD_EXPORT int32_t ad_nvtx_push(const char* name);
AD_EXPORT int32_t ad_nvtx_pop(void);
AD_EXPORT int32_t ad_cuda_profiler_start(void);
AD_EXPORT int32_t ad_cuda_profiler_stop(void);

#ifdef __cplusplus
}
#endif

#endif /* ALIGNDISTIL_H */
