/*
 * fll_cuda_bench.cu: times ad_fll_cuda (the chunked fused-linear loss) with CUDA events against the same five
 * GEMMs alone through cuBLAS (three head GEMMs, dX = G Ws, dWs += G^T Xs, on the same chunks, no row kernel:
 * the GEMM floor of this design), and reports the extra device memory against the unfused footprint.
 * Prints one JSON line per measurement. Defaults: Qwen2.5-1.5B shapes, H = 1536, V = 151936, N = 16384, bf16.
 *
 * Build on a GPU box without CMake (cuBLAS is opened at run time, so it is not linked):
 *   nvcc -arch=sm_90a -std=c++17 -O2 -Inative/include -Isrc/main/cuda native/tests/fll_cuda_bench.cu src/main/cuda/fused_linear_loss.cu src/main/cuda/fused_distill_loss.cu src/main/cuda/cuda_runtime_api.cu -ldl -o fll_cuda_bench
 * or with CMake: -DAD_BUILD_TESTS=ON, target fll_cuda_bench.
 *   fll_cuda_bench [--n N] [--h H] [--v V] [--chunk C (0 = auto)] [--iters K] [--dtype bf16|f16|f32]
 *                  [--variant 0..4]
 * Exit 77 without a GPU, 1 on any failure (and no timing line is printed for a failing configuration).
 *
 * Memory. "workspace_bytes" is ad_fll_cuda_workspace_bytes; "first_call_bytes" is the drop of cudaMemGetInfo's
 * free memory across the first call (cuBLAS handle and its workspace, module loading); "peak_extra_bytes" is
 * their sum. "unfused_bytes" is what an unfused step keeps at once: three [N, V] logits tensors plus the [N, V]
 * gradient in the same dtype (3 N V if the gradient overwrites the student logits: "unfused_inplace_bytes").
 */
#include "aligndistil.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* The cuBLAS entry points the baseline uses, declared by hand (values from cublas_api.h / library_types.h). */
typedef int (*create_fn)(void**);                                  /* cublasCreate_v2 */
typedef int (*set_stream_fn)(void*, cudaStream_t);                 /* cublasSetStream_v2 */
typedef int (*gemm_ex_fn)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int,
                          const void*, void*, int, int, int, int); /* cublasGemmEx */
static const int kOpN = 0, kOpT = 1;                              /* CUBLAS_OP_N, CUBLAS_OP_T */
static const int kR32F = 0, kR16F = 2, kR16BF = 14;               /* CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF */
static const int kCompute32F = 68, kGemmDefault = -1;             /* CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT */

__global__ void fill_kernel(void* p, int64_t n, int dt, uint32_t seed, float scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15; h *= 2246822519u; h ^= h >> 13; h *= 3266489917u; h ^= h >> 16;
        const float x = scale * ((h & 0xffffff) / 8388608.0f - 1.0f); /* U(-scale, scale) */
        if (dt == AD_F32) static_cast<float*>(p)[i] = x;
        else if (dt == AD_BF16) static_cast<unsigned short*>(p)[i] = (unsigned short)(__float_as_uint(x) >> 16);
        else static_cast<__half*>(p)[i] = __float2half_rn(x);
    }
}

static void* dmalloc(size_t bytes) {
    void* p = nullptr;
    CK(cudaMalloc(&p, bytes ? bytes : 16));
    return p;
}

static void fill(void* p, int64_t n, int dt, uint32_t seed, float scale) {
    fill_kernel<<<1024, 256>>>(p, n, dt, seed, scale);
    CK(cudaGetLastError());
}

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

int main(int argc, char** argv) {
    int64_t N = 16384, H = 1536, V = 151936, chunk = 0;
    int iters = 10, dt = AD_BF16, variant = AD_VARIANT_ALIGNDISTIL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char* a = argv[i];
        const char* v = argv[i + 1];
        if (!strcmp(a, "--n")) N = atoll(v);
        else if (!strcmp(a, "--h")) H = atoll(v);
        else if (!strcmp(a, "--v")) V = atoll(v);
        else if (!strcmp(a, "--chunk")) chunk = atoll(v);
        else if (!strcmp(a, "--iters")) iters = atoi(v);
        else if (!strcmp(a, "--variant")) variant = atoi(v);
        else if (!strcmp(a, "--dtype")) dt = !strcmp(v, "f32") ? AD_F32 : !strcmp(v, "f16") ? AD_F16 : AD_BF16;
        else { fprintf(stderr, "unknown argument %s\n", a); return 1; }
    }
    if (N < 1 || H < 1 || V < 1 || iters < 1) { fprintf(stderr, "sizes and iters must be >= 1\n"); return 1; }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) { printf("{\"bench\":\"fll_cuda\",\"skipped\":\"no GPU\"}\n"); return 77; }
    const char* dn = dt == AD_F32 ? "f32" : dt == AD_BF16 ? "bf16" : "f16";
    const int64_t es = dt == AD_F32 ? 4 : 2;
    const bool gkd = variant == AD_VARIANT_GKD;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));

    size_t free0 = 0, total = 0;
    CK(cudaMemGetInfo(&free0, &total));
    void *xs = dmalloc(N * H * es), *ws_ = dmalloc(V * H * es), *xd = dmalloc(N * H * es), *wd = dmalloc(V * H * es);
    void *x2 = gkd ? nullptr : dmalloc(N * H * es), *w2 = gkd ? nullptr : dmalloc(V * H * es);
    void* dx = dmalloc(N * H * es);
    float* dw = static_cast<float*>(dmalloc(V * H * 4));
    double* loss = static_cast<double*>(dmalloc(8));
    int64_t* status = static_cast<int64_t*>(dmalloc(32));
    fill(xs, N * H, dt, 1, 1.0f); fill(ws_, V * H, dt, 2, 0.05f); fill(xd, N * H, dt, 3, 1.0f); fill(wd, V * H, dt, 4, 0.05f);
    if (!gkd) { fill(x2, N * H, dt, 5, 1.0f); fill(w2, V * H, dt, 6, 0.05f); }
    CK(cudaMemset(dw, 0, V * H * 4));

    ad_fll_problem p{};
    p.batch = 1; p.seq = N; p.hidden = H; p.vocab = V; p.dtype = dt;
    p.student_hidden = xs; p.student_head = ws_;
    p.dpo_hidden = xd; p.dpo_head = wd;
    p.second_hidden = x2; p.second_head = w2;
    p.d_student_hidden = dx; p.d_student_head = dw;
    p.variant = variant; p.length_norm = 1;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
    p.chunk_tokens = chunk;
    int64_t wsb = 0, C = 0;
    if (ad_fll_cuda_workspace_bytes(&p, &wsb) != AD_OK || ad_fll_cuda_chunk_tokens(&p, &C) != AD_OK) {
        fprintf(stderr, "workspace query failed: %s\n", ad_cuda_last_error());
        return 1;
    }
    void* ws = dmalloc(wsb);
    cudaStream_t s;
    CK(cudaStreamCreate(&s));
    CK(cudaDeviceSynchronize());
    size_t free1 = 0, free2 = 0;
    CK(cudaMemGetInfo(&free1, &total));
    if (ad_fll_cuda(&p, ws, wsb, loss, status, s) != AD_OK) { fprintf(stderr, "ad_fll_cuda: %s\n", ad_cuda_last_error()); return 1; }
    CK(cudaStreamSynchronize(s));
    CK(cudaMemGetInfo(&free2, &total));
    int64_t st[4];
    double l = 0;
    CK(cudaMemcpy(st, status, 32, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(&l, loss, 8, cudaMemcpyDeviceToHost));
    if (st[0] != AD_OK) { fprintf(stderr, "status %lld at token %lld\n", (long long)st[0], (long long)st[1]); return 1; }

    const int heads = gkd ? 2 : 3;
    const double flop = 2.0 * N * H * V * (heads + 2);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    std::vector<float> t_fused;
    for (int it = 0; it < iters; ++it) {
        CK(cudaEventRecord(e0, s));
        if (ad_fll_cuda(&p, ws, wsb, loss, status, s) != AD_OK) { fprintf(stderr, "ad_fll_cuda: %s\n", ad_cuda_last_error()); return 1; }
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t_fused.push_back(ms);
    }
    printf("{\"bench\":\"fll_cuda\",\"what\":\"ad_fll_cuda\",\"gpu\":\"%s\",\"dtype\":\"%s\",\"variant\":%d,\"N\":%lld,\"H\":%lld,"
           "\"V\":%lld,\"C\":%lld,\"iters\":%d,\"ms_median\":%.3f,\"ms_min\":%.3f,\"tflops_median\":%.1f,\"loss\":%.9g}\n",
           prop.name, dn, variant, (long long)N, (long long)H, (long long)V, (long long)C, iters, median(t_fused),
           *std::min_element(t_fused.begin(), t_fused.end()), flop / (median(t_fused) * 1e-3) / 1e12, l);

    /* baseline: the same GEMMs on the same chunks, own handle, buffers of the chunk's size */
    const char* lib_names[4] = {getenv("AD_CUBLAS_LIBRARY"), "libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    void* lib = nullptr;
    for (const char* n : lib_names) if (n && (lib = dlopen(n, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib) { fprintf(stderr, "cuBLAS not found for the baseline\n"); return 1; }
    create_fn create = (create_fn)dlsym(lib, "cublasCreate_v2");
    set_stream_fn set_stream = (set_stream_fn)dlsym(lib, "cublasSetStream_v2");
    gemm_ex_fn gemm = (gemm_ex_fn)dlsym(lib, "cublasGemmEx");
    if (!create || !set_stream || !gemm) { fprintf(stderr, "cuBLAS symbols missing\n"); return 1; }
    void* h = nullptr;
    if (create(&h) != 0 || set_stream(h, s) != 0) { fprintf(stderr, "cublasCreate failed\n"); return 1; }
    const int64_t ldz = (V + 7) / 8 * 8;
    void* z = dmalloc(heads * C * ldz * es);
    float* dxf = static_cast<float*>(dmalloc(C * H * 4));
    const float one = 1.0f, zero = 0.0f;
    const int ht = dt == AD_F32 ? kR32F : dt == AD_BF16 ? kR16BF : kR16F;
    const void* heads_w[3] = {ws_, wd, w2};
    const void* heads_x[3] = {xs, xd, x2};
    std::vector<float> t_gemm;
    for (int it = 0; it < iters; ++it) {
        CK(cudaEventRecord(e0, s));
        int bad = 0;
        for (int64_t c0 = 0; c0 < N; c0 += C) {
            const int rows = (int)std::min<int64_t>(C, N - c0);
            for (int k = 0; k < heads; ++k)
                bad |= gemm(h, kOpT, kOpN, (int)V, rows, (int)H, &one, heads_w[k], ht, (int)H,
                            (const char*)heads_x[k] + c0 * H * es, ht, (int)H, &zero, (char*)z + k * C * ldz * es, ht,
                            (int)ldz, kCompute32F, kGemmDefault);
            bad |= gemm(h, kOpN, kOpN, (int)H, rows, (int)V, &one, ws_, ht, (int)H, z, ht, (int)ldz, &zero, dxf, kR32F,
                        (int)H, kCompute32F, kGemmDefault);
            bad |= gemm(h, kOpN, kOpT, (int)H, (int)V, rows, &one, (const char*)xs + c0 * H * es, ht, (int)H, z, ht,
                        (int)ldz, &one, dw, kR32F, (int)H, kCompute32F, kGemmDefault);
        }
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        if (bad) { fprintf(stderr, "cublasGemmEx failed\n"); return 1; }
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        t_gemm.push_back(ms);
    }
    printf("{\"bench\":\"fll_cuda\",\"what\":\"gemm%d_chunked_cublas\",\"gpu\":\"%s\",\"dtype\":\"%s\",\"N\":%lld,\"H\":%lld,"
           "\"V\":%lld,\"C\":%lld,\"iters\":%d,\"ms_median\":%.3f,\"ms_min\":%.3f,\"tflops_median\":%.1f,"
           "\"fused_over_gemm\":%.3f}\n",
           heads + 2, prop.name, dn, (long long)N, (long long)H, (long long)V, (long long)C, iters, median(t_gemm),
           *std::min_element(t_gemm.begin(), t_gemm.end()), flop / (median(t_gemm) * 1e-3) / 1e12,
           median(t_fused) / median(t_gemm));

    const long long first_call = free1 > free2 ? (long long)(free1 - free2) : 0;
    printf("{\"bench\":\"fll_cuda\",\"what\":\"memory\",\"dtype\":\"%s\",\"N\":%lld,\"H\":%lld,\"V\":%lld,\"C\":%lld,"
           "\"workspace_bytes\":%lld,\"first_call_bytes\":%lld,\"peak_extra_bytes\":%lld,\"unfused_bytes\":%lld,"
           "\"unfused_inplace_bytes\":%lld,\"inputs_bytes\":%lld}\n",
           dn, (long long)N, (long long)H, (long long)V, (long long)C, (long long)wsb, first_call, (long long)wsb + first_call,
           (long long)((heads + 1) * N * V * es), (long long)(heads * N * V * es), (long long)(free0 - free1 - wsb));
    return 0;
}
