/*
 * aligndistil.h: the one C ABI of the aligndistil native libraries.
 *
 * Two shared libraries implement it:
 *   libaligndistil_cpu.so   always built; ad_fdl_cpu and the ad_cpu_* helpers.
 *   libaligndistil_cuda.so  built when nvcc is found; ad_fdl_cuda, ad_fll_cuda and the ad_cuda_* / ad_nvtx_* helpers.
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

/* Compile-time checks (C11 _Static_assert, C++ static_assert: the header is also compiled by nvcc). */
#ifdef __cplusplus
#define AD_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define AD_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

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

/* The offsets the Java mirror uses (ai.aligndistil.kernel.ProblemStruct), checked here by the compiler; StructLayoutTest
 * reads these lines and compares each number with the Java constant named in its message. */
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, batch) == 0, "Java: ProblemStruct.BATCH");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, seq) == 8, "Java: ProblemStruct.SEQ");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, vocab) == 16, "Java: ProblemStruct.VOCAB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, student) == 24, "Java: ProblemStruct.STUDENT");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, student_dtype) == 32, "Java: ProblemStruct.STUDENT_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, student_stride_b) == 40, "Java: ProblemStruct.STUDENT_SB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, student_stride_t) == 48, "Java: ProblemStruct.STUDENT_ST");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, dpo) == 56, "Java: ProblemStruct.DPO");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, dpo_dtype) == 64, "Java: ProblemStruct.DPO_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, dpo_stride_b) == 72, "Java: ProblemStruct.DPO_SB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, dpo_stride_t) == 80, "Java: ProblemStruct.DPO_ST");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, second) == 88, "Java: ProblemStruct.SECOND");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, second_dtype) == 96, "Java: ProblemStruct.SECOND_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, second_stride_b) == 104, "Java: ProblemStruct.SECOND_SB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, second_stride_t) == 112, "Java: ProblemStruct.SECOND_ST");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, mask) == 120, "Java: ProblemStruct.MASK");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, mask_stride_b) == 128, "Java: ProblemStruct.MASK_SB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, mask_stride_t) == 136, "Java: ProblemStruct.MASK_ST");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, grad) == 144, "Java: ProblemStruct.GRAD");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, grad_dtype) == 152, "Java: ProblemStruct.GRAD_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, grad_stride_b) == 160, "Java: ProblemStruct.GRAD_SB");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, grad_stride_t) == 168, "Java: ProblemStruct.GRAD_ST");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, weight) == 176, "Java: ProblemStruct.WEIGHT");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, token_loss) == 184, "Java: ProblemStruct.TOKEN_LOSS");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, metrics) == 192, "Java: ProblemStruct.METRICS");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, variant) == 200, "Java: ProblemStruct.VARIANT");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, length_norm) == 208, "Java: ProblemStruct.LENGTH_NORM");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, beta) == 216, "Java: ProblemStruct.BETA");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, beta2) == 224, "Java: ProblemStruct.BETA2");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, epsilon) == 232, "Java: ProblemStruct.EPSILON");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, temperature) == 240, "Java: ProblemStruct.TEMPERATURE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, student_temperature) == 248, "Java: ProblemStruct.STUDENT_TEMPERATURE");
AD_STATIC_ASSERT(offsetof(ad_fdl_problem, seq_divisor) == 256, "Java: ProblemStruct.SEQ_DIVISOR");
AD_STATIC_ASSERT(sizeof(ad_fdl_problem) == 264, "Java: ProblemStruct.SIZE");

/* What a call reports back (host memory). */
typedef struct ad_fdl_status {
    int64_t code;                /* AD_OK or AD_ERR_* (same as the return value) */
    int64_t token;               /* on AD_ERR_NONFINITE / AD_ERR_EMPTY_ROW: b*T + t, else -1 */
    int64_t column;              /* on AD_ERR_NONFINITE: v, else -1 */
    double  loss;                /* the batch loss (CPU only; CUDA writes it to device memory) */
    int64_t selected_rows;       /* number of selected rows */
    int64_t sequences;           /* number of sequences with a selected row */
} ad_fdl_status;

/* The offsets the Java mirror uses (ai.aligndistil.kernel.ProblemStruct), checked here by the compiler; StructLayoutTest
 * reads these lines and compares each number with the Java constant named in its message. */
AD_STATIC_ASSERT(offsetof(ad_fdl_status, code) == 0, "Java: ProblemStruct.ST_CODE");
AD_STATIC_ASSERT(offsetof(ad_fdl_status, token) == 8, "Java: ProblemStruct.ST_TOKEN");
AD_STATIC_ASSERT(offsetof(ad_fdl_status, column) == 16, "Java: ProblemStruct.ST_COLUMN");
AD_STATIC_ASSERT(offsetof(ad_fdl_status, loss) == 24, "Java: ProblemStruct.ST_LOSS");
AD_STATIC_ASSERT(offsetof(ad_fdl_status, selected_rows) == 32, "Java: ProblemStruct.ST_SELECTED");
AD_STATIC_ASSERT(offsetof(ad_fdl_status, sequences) == 40, "Java: ProblemStruct.ST_SEQUENCES");
AD_STATIC_ASSERT(sizeof(ad_fdl_status) == 48, "Java: ProblemStruct.STATUS_SIZE");

/* ------------------------------------------------------------------------------------------------ */
/* CPU library (libaligndistil_cpu.so)                                                               */
/* ------------------------------------------------------------------------------------------------ */

AD_EXPORT int32_t ad_abi_version(void);

/* Fused loss + gradient on the host. threads <= 0: the library default (ad_cpu_set_threads, initially
 * the number of online CPUs, read once). Safe to call from several threads at once: a call that finds the worker
 * pool busy runs on its caller's thread alone. Each thread that runs rows (pool workers, callers) keeps a row scratch
 * of about 12 * vocab bytes, allocated on its first call and again only when a call has a larger vocabulary (freed at
 * thread exit); AD_ERR_OUT_OF_MEMORY when that allocation fails. Nothing else is allocated after the pool started.
 * The threads claim tiles of consecutive rows as they go (at most 1024 tiles per call), and the loss is summed tile by
 * tile in row order: status->loss and every output are bit-identical for every thread count. When several rows are
 * bad, the first of them in flat row order is the one reported. */
AD_EXPORT int32_t ad_fdl_cpu(const ad_fdl_problem* problem, ad_fdl_status* status, int32_t threads);

/* Which vector code path ad_fdl_cpu runs on this machine: "avx512", "avx2" or "portable". */
AD_EXPORT const char* ad_cpu_isa(void);

/* Forces a code path ("avx512", "avx2", "portable") for tests; returns AD_ERR_UNSUPPORTED when the CPU
 * cannot run it. NULL or "auto" restores the automatic choice. Not thread-safe against running calls. */
AD_EXPORT int32_t ad_cpu_force_isa(const char* isa);

/* Forces the row design of the CPU kernel, for tests and benchmarks: "caching" (four exps per element; three rows of
 * per-thread scratch), "recomputing" (seven exps, no scratch traffic) on every ISA path; NULL or "auto" restores the
 * automatic choice (recomputing for f32 rows of at least 16,384 columns on the AVX-512 path, caching elsewhere; the
 * results of the two designs agree within the kernel's error bounds, not bit for bit). The environment variable
 * AD_CPU_ROW_DESIGN sets the initial value. Returns AD_ERR_INVALID_ARGUMENT for another name. Not thread-safe against
 * running calls. ad_cpu_row_design() names the forced design ("auto" when none is). */
AD_EXPORT int32_t ad_cpu_force_row_design(const char* design);
AD_EXPORT const char* ad_cpu_row_design(void);

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
 * has already zeroed a separate gradient buffer, the loss and the optional outputs.
 * Stream: the training stages pass libtorch's current CUDA stream of the tensors' device (the Java side:
 * torch_cuda.getCurrentCUDAStream().stream().address(); Python: torch.cuda.current_stream().cuda_stream), so the
 * launch is ordered after the forwards that wrote the logits and before the backward that reads the gradient,
 * with no synchronisation in between; the caller then waits for that stream only to read d_loss
 * (benchmarks/gpu/torch_bench.py check-stream drives exactly this from PyTorch). */
AD_EXPORT int32_t ad_fdl_cuda(const ad_fdl_problem* problem, void* workspace, int64_t workspace_bytes,
                              double* d_loss, int64_t* d_status, void* stream);

/* ---- Row kernel choice (Hopper cluster kernel) ------------------------------------------------------------
 * ad_fdl_cuda has two row kernels with the same contract and results (within the self-test's tolerances):
 *   AD_CUDA_KERNEL_MULTIPASS  portable: one CTA per token, five passes over the rows in global memory / L2.
 *   AD_CUDA_KERNEL_CLUSTER    Hopper (compute capability >= 9.0): a thread-block cluster holds each token's rows
 *                             in shared memory (one HBM read, one gradient write); needs the three inputs in one
 *                             dtype, 16-byte aligned rows (base pointers, strides * element size), a vocabulary
 *                             that fits 16 CTAs' shared memory, and a cluster configuration the device can run.
 *                             Compile-checked only so far (never run on a GPU).
 * The process-wide choice starts from the environment variable AD_CUDA_KERNEL = auto | multipass | cluster
 * (read once, at the first call that needs it; unset or unknown = auto) and can be changed with
 * ad_cuda_set_kernel. "cluster" uses the cluster kernel wherever it applies and silently falls back to the
 * multi-pass kernel elsewhere (a call never fails for that reason); "auto" does the same only in a library built
 * with -DAD_CUDA_CLUSTER_AUTO=ON and otherwise means multipass. Not thread-safe against calls in flight on other
 * threads in the sense that a concurrent call may still use the previous choice.
 * AD_CUDA_CLUSTER_SIZE = 1 | 2 | 4 | 8 | 16 (environment, read at every call; default unset = chosen from V, the
 * dtype and the shared memory per CTA) restricts the cluster kernel to that many CTAs per token, for tests. */
#define AD_CUDA_KERNEL_AUTO      0
#define AD_CUDA_KERNEL_MULTIPASS 1
#define AD_CUDA_KERNEL_CLUSTER   2
AD_EXPORT int32_t ad_cuda_set_kernel(int32_t kernel);        /* AD_ERR_INVALID_ARGUMENT for other values */
AD_EXPORT int32_t ad_cuda_get_kernel(int32_t* kernel);       /* the current setting (after reading the env) */
/* Which kernel ad_fdl_cuda would run for `problem` on `device` (< 0: the current device) under the current
 * setting: *kernel = AD_CUDA_KERNEL_MULTIPASS or AD_CUDA_KERNEL_CLUSTER. Validates the problem like ad_fdl_cuda
 * (the pointers are only inspected for alignment, never dereferenced). AD_ERR_CUDA if a device query fails. */
AD_EXPORT int32_t ad_cuda_kernel_for(const ad_fdl_problem* problem, int32_t device, int32_t* kernel);
/* ---- end of the row kernel choice ------------------------------------------------------------------------ */

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

/* ------------------------------------------------------------------------------------------------ */
/* Chunked fused-linear loss, CUDA library (ad_fll = "fused linear loss")                            */
/* ------------------------------------------------------------------------------------------------ */
/*
 * The same loss as ad_fdl, but from the final hidden states and LM heads instead of logits, so that no
 * [N, V] logits or gradient tensor ever exists. N = B*T token rows; row n = b*T + t of every [N, *] tensor.
 *   zs = Xs Ws^T, zd = Xd Wd^T (or the caller's DPO logits), z2 = X2 W2^T (or the caller's logits)
 *   loss, weight, token_loss: exactly as ad_fdl on (zs, zd, z2) with the same mask and configuration
 *   dXs = G Ws        (written, the hidden dtype)        G = d loss / d zs   [N, V], never materialised
 *   dWs += G^T Xs     (accumulated into the caller's f32 [V, H] buffer; the teacher heads get nothing)
 * The tokens are processed in chunks of C rows: three head GEMMs (cuBLAS, f32 accumulation) write the
 * chunk's logits into a reused [C, V] workspace, the ad_fdl row kernel overwrites the student logits with
 * G in place, and two GEMMs produce dXs rows and the dWs contribution. Extra device memory is O(C x V)
 * (ad_fll_cuda_workspace_bytes), never O(N x V).
 *
 * cuBLAS is opened at run time with dlopen: $AD_CUBLAS_LIBRARY when set, else libcublas.so.13, then
 * libcublas.so.12, then libcublas.so. Without it ad_fll_cuda returns AD_ERR_UNSUPPORTED and
 * ad_cuda_last_error() says what was tried. One cuBLAS handle per device, created on first use and kept
 * for the life of the process; calls on the same device are serialised around their cuBLAS section.
 *
 * Precision. GEMM inputs in the hidden dtype (f32, bf16, f16), f32 accumulation (CUBLAS_COMPUTE_32F, no
 * TF32); the chunk logits are stored in the hidden dtype (as an unfused bf16 model would); G in the hidden
 * dtype; dXs rounded once from f32; dWs accumulated in f32. The loss is summed in f64 from the per-row
 * coef*K values, which pass through f32 (relative error <= 2^-24 per row, and every term is >= 0).
 *
 * Errors. A data error (non-finite or empty row of a chunk) is reported in d_status like ad_fdl (token =
 * global row n, column = v); then the loss is 0, dXs, weight and token_loss are all zero, and dWs holds the
 * contributions of the chunks before the failing one (a partial sum the caller must discard; chunks from
 * the failing one on add exactly 0).
 */

/* Auto chunk (chunk_tokens = 0): the largest C whose per-chunk buffers (logits, G, two C x H scratches)
 * stay under this many bytes, rounded down to a multiple of 256, at least 256, at most N.
 * bf16, V = 151936, H = 1536, both teachers as hidden + head: C = 1024 (0.94 GB of chunk buffers, 4.7 % of the
 * 19.9 GB that the unfused loss holds at N = 16384: three bf16 logit tensors and the gradient; the goal is
 * under 5 %). Larger chunks cost fewer passes over the f32 dW accumulator (each chunk reads and writes it once,
 * about 0.4 ms on an H200 at this size): callers with memory to spare can pass chunk_tokens = 4096 (3.7 GB). */
#define AD_FLL_AUTO_WORKSPACE_BYTES (INT64_C(1) << 30)

typedef struct ad_fll_problem {
    int64_t batch;                /* B >= 1 */
    int64_t seq;                  /* T >= 1; N = B*T */
    int64_t hidden;               /* H >= 1 */
    int64_t vocab;                /* V >= 1 */
    int64_t dtype;                /* AD_F32 | AD_BF16 | AD_F16: every hidden state, every head and dXs */

    const void* student_hidden;   /* Xs [N, H] row-major, contiguous */
    const void* student_head;     /* Ws [V, H] row-major, contiguous */

    /* Each teacher is given either as hidden + head (both non-NULL, logits NULL) or as logits (hidden and
     * head NULL). Teacher logits are [N, V] rows `*_logits_stride` elements apart (>= V), in any dtype. */
    const void* dpo_hidden;       /* Xd [N, H] */
    const void* dpo_head;         /* Wd [V, H] */
    const void* dpo_logits;       /* [N, V] */
    int64_t dpo_logits_dtype;
    int64_t dpo_logits_stride;

    const void* second_hidden;    /* X2 [N, H]: reverse DPO or reference; the whole teacher is unused by gkd */
    const void* second_head;      /* W2 [V, H] */
    const void* second_logits;    /* [N, V] */
    int64_t second_logits_dtype;
    int64_t second_logits_stride;

    const uint8_t* mask;          /* [B, T] u8, nonzero = selected; NULL = every row selected */
    int64_t mask_stride_b;        /* elements (bytes) */
    int64_t mask_stride_t;

    void* d_student_hidden;       /* dXs [N, H] output, dtype; every row written (0 where not selected) */
    float* d_student_head;        /* dWs [V, H] f32, accumulated: dWs += G^T Xs */

    float* weight;                /* [N] optional: alpha, 0 on rows not selected */
    float* token_loss;            /* [N] optional: coef * K (not normalised), 0 on rows not selected */

    int64_t variant;              /* AD_VARIANT_* */
    int64_t length_norm;          /* 0 or 1 */
    double beta;                  /* as ad_fdl_problem */
    double beta2;
    double epsilon;
    double temperature;
    double student_temperature;
    double seq_divisor;           /* > 0: N; <= 0: the number of sequences with a selected row */

    int64_t chunk_tokens;         /* C >= 1 tokens per chunk; 0 = auto (AD_FLL_AUTO_WORKSPACE_BYTES) */
} ad_fll_problem;

/* The offsets the Java mirror uses (ai.aligndistil.kernel.CudaFusedLinearLoss.Layout), checked here by the compiler; StructLayoutTest
 * reads these lines and compares each number with the Java constant named in its message. */
AD_STATIC_ASSERT(offsetof(ad_fll_problem, batch) == 0, "Java: CudaFusedLinearLoss.Layout.BATCH");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, seq) == 8, "Java: CudaFusedLinearLoss.Layout.SEQ");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, hidden) == 16, "Java: CudaFusedLinearLoss.Layout.HIDDEN");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, vocab) == 24, "Java: CudaFusedLinearLoss.Layout.VOCAB");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dtype) == 32, "Java: CudaFusedLinearLoss.Layout.DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, student_hidden) == 40, "Java: CudaFusedLinearLoss.Layout.STUDENT_HIDDEN");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, student_head) == 48, "Java: CudaFusedLinearLoss.Layout.STUDENT_HEAD");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dpo_hidden) == 56, "Java: CudaFusedLinearLoss.Layout.DPO_HIDDEN");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dpo_head) == 64, "Java: CudaFusedLinearLoss.Layout.DPO_HEAD");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dpo_logits) == 72, "Java: CudaFusedLinearLoss.Layout.DPO_LOGITS");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dpo_logits_dtype) == 80, "Java: CudaFusedLinearLoss.Layout.DPO_LOGITS_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, dpo_logits_stride) == 88, "Java: CudaFusedLinearLoss.Layout.DPO_LOGITS_STRIDE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, second_hidden) == 96, "Java: CudaFusedLinearLoss.Layout.SECOND_HIDDEN");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, second_head) == 104, "Java: CudaFusedLinearLoss.Layout.SECOND_HEAD");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, second_logits) == 112, "Java: CudaFusedLinearLoss.Layout.SECOND_LOGITS");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, second_logits_dtype) == 120, "Java: CudaFusedLinearLoss.Layout.SECOND_LOGITS_DTYPE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, second_logits_stride) == 128, "Java: CudaFusedLinearLoss.Layout.SECOND_LOGITS_STRIDE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, mask) == 136, "Java: CudaFusedLinearLoss.Layout.MASK");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, mask_stride_b) == 144, "Java: CudaFusedLinearLoss.Layout.MASK_SB");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, mask_stride_t) == 152, "Java: CudaFusedLinearLoss.Layout.MASK_ST");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, d_student_hidden) == 160, "Java: CudaFusedLinearLoss.Layout.D_STUDENT_HIDDEN");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, d_student_head) == 168, "Java: CudaFusedLinearLoss.Layout.D_STUDENT_HEAD");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, weight) == 176, "Java: CudaFusedLinearLoss.Layout.WEIGHT");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, token_loss) == 184, "Java: CudaFusedLinearLoss.Layout.TOKEN_LOSS");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, variant) == 192, "Java: CudaFusedLinearLoss.Layout.VARIANT");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, length_norm) == 200, "Java: CudaFusedLinearLoss.Layout.LENGTH_NORM");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, beta) == 208, "Java: CudaFusedLinearLoss.Layout.BETA");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, beta2) == 216, "Java: CudaFusedLinearLoss.Layout.BETA2");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, epsilon) == 224, "Java: CudaFusedLinearLoss.Layout.EPSILON");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, temperature) == 232, "Java: CudaFusedLinearLoss.Layout.TEMPERATURE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, student_temperature) == 240, "Java: CudaFusedLinearLoss.Layout.STUDENT_TEMPERATURE");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, seq_divisor) == 248, "Java: CudaFusedLinearLoss.Layout.SEQ_DIVISOR");
AD_STATIC_ASSERT(offsetof(ad_fll_problem, chunk_tokens) == 256, "Java: CudaFusedLinearLoss.Layout.CHUNK_TOKENS");
AD_STATIC_ASSERT(sizeof(ad_fll_problem) == 264, "Java: CudaFusedLinearLoss.Layout.SIZE");

/* Device workspace ad_fll_cuda needs, in bytes: O(C x V + C x H + N + B). It depends on N, B, H, V, dtype,
 * the chunk, which teachers are given as hidden states, and whether mask and token_loss are NULL; query it
 * with the problem you will pass. */
AD_EXPORT int32_t ad_fll_cuda_workspace_bytes(const ad_fll_problem* problem, int64_t* bytes);

/* The chunk size C ad_fll_cuda will use for this problem (chunk_tokens, or the auto choice; at most N). */
AD_EXPORT int32_t ad_fll_cuda_chunk_tokens(const ad_fll_problem* problem, int64_t* chunk);

/* Loss, dXs and dWs on the GPU, asynchronous on `stream` (a cudaStream_t; NULL = legacy default stream).
 * All pointers in `problem` are device pointers; `workspace` is device memory of at least
 * ad_fll_cuda_workspace_bytes, 256-byte aligned (as cudaMalloc returns). `d_loss` (one double) and
 * `d_status` (4 int64: code, token, column, selected_rows) as ad_fdl_cuda. Returns AD_ERR_INVALID_ARGUMENT,
 * AD_ERR_UNSUPPORTED (no cuBLAS) or AD_ERR_CUDA for launch-time failures, before anything is written when
 * the arguments are wrong. */
AD_EXPORT int32_t ad_fll_cuda(const ad_fll_problem* problem, void* workspace, int64_t workspace_bytes,
                              double* d_loss, int64_t* d_status, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* ALIGNDISTIL_H */
