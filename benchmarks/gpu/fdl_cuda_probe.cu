/*
 * fdl_cuda_probe.cu: the small driver benchmarks/gpu/verify.sh runs on a GPU box, through libaligndistil_cuda.so
 * only (its ad_cuda_* helpers for memory, copies and events; ad_fdl_cuda for the loss). Prints one JSON line.
 *
 *   fdl_cuda_probe copy GIB                 device-to-device copy of GIB GiB (cudaMemcpyAsync through
 *                                           ad_cuda_memcpy_dtod), 3 warm-ups, 20 timed copies each between
 *                                           CUDA events; median; bytes moved = read + written = 2 x size
 *   fdl_cuda_probe launch V TOKENS DTYPE [N] N launches (default 1) of the fused loss on random logits, grad in the
 *                                           input dtype: for compute-sanitizer and ncu (one small, checked case)
 *   fdl_cuda_probe time V TOKENS DTYPE      the fused loss timed with CUDA events: input sets rotated so that
 *                                           they span at least 2x L2 (cold cache), 3 warm-ups, 20 timed launches,
 *                                           median; effective bytes = 3 inputs read + 1 gradient written
 *
 * DTYPE: f32 | bf16 | f16 (inputs and gradient). Variant aligndistil, every row selected, B = 4 sequences.
 * Inputs are never zeros: a hash-based pseudo-random fill (shared base of scale 3, teachers and student
 * perturbed around it, as the tests). The kernel implementation is the library's choice (AD_CUDA_KERNEL).
 * Exit: 0 ok, 1 a failure (message on stderr), 77 no GPU. Compile-checked on the build machine only.
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
#include <vector>

#define AD(call)                                                                                       \
    do {                                                                                               \
        int32_t rc_ = (call);                                                                          \
        if (rc_ != AD_OK) {                                                                            \
            fprintf(stderr, "fdl_cuda_probe: %s failed (%d): %s\n", #call, rc_, ad_cuda_last_error()); \
            exit(1);                                                                                   \
        }                                                                                              \
    } while (0)

static int dsize(int dt) { return dt == AD_F32 ? 4 : 2; }

static int parse_dtype(const char* s) {
    if (!strcmp(s, "f32")) return AD_F32;
    if (!strcmp(s, "bf16")) return AD_BF16;
    if (!strcmp(s, "f16")) return AD_F16;
    fprintf(stderr, "fdl_cuda_probe: dtype must be f32, bf16 or f16, got '%s'\n", s);
    exit(2);
}

__device__ __forceinline__ float hash_normal(uint64_t x) {
    /* splitmix64 -> two uniforms -> Box-Muller (one output) */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    const float u1 = ((x >> 40) + 1) * (1.0f / 16777217.0f), u2 = ((x >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
    return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

/* Test input only: overwrites p[0..n) with logits 3 * base(i) + spread * noise(i, seed) (teachers and student share
 * the base, as the tests' inputs); stateless hash, nothing materialised; legacy default stream. */
__global__ void probe_fill_kernel(void* p, int64_t n, int dt, uint64_t seed, float spread) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float x = 3.0f * hash_normal((uint64_t)i) + spread * hash_normal((uint64_t)i ^ (seed * 0xD1B54A32D192ED03ull));
        if (dt == AD_F32) static_cast<float*>(p)[i] = x;
        else if (dt == AD_BF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x);
        else static_cast<__half*>(p)[i] = __float2half_rn(x);
    }
}

static void fill(void* p, int64_t n, int dt, uint64_t seed, float spread) {
    probe_fill_kernel<<<1024, 256>>>(p, n, dt, seed, spread);
    if (cudaGetLastError() != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
        fprintf(stderr, "fdl_cuda_probe: fill kernel failed\n");
        exit(1);
    }
}

static float elapsed(void* e0, void* e1) {
    float ms = 0;
    AD(ad_cuda_event_elapsed_ms(e0, e1, &ms));
    return ms;
}

static double median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int copy_bw(double gib) {
    const int64_t bytes = (int64_t)(gib * (double)(1ll << 30));
    void *src, *dst, *e0, *e1;
    AD(ad_cuda_malloc(&src, bytes));
    AD(ad_cuda_malloc(&dst, bytes));
    fill(src, bytes / 4, AD_F32, 1, 1.0f);
    AD(ad_cuda_event_create(&e0));
    AD(ad_cuda_event_create(&e1));
    for (int i = 0; i < 3; ++i) AD(ad_cuda_memcpy_dtod(dst, src, bytes, nullptr));
    std::vector<float> ms;
    for (int i = 0; i < 20; ++i) {
        AD(ad_cuda_event_record(e0, nullptr));
        AD(ad_cuda_memcpy_dtod(dst, src, bytes, nullptr));
        AD(ad_cuda_event_record(e1, nullptr));
        ms.push_back(elapsed(e0, e1));
    }
    const double m = median(ms), moved = 2.0 * (double)bytes;
    printf("{\"probe\":\"copy\",\"bytes\":%lld,\"bytes_moved\":%.0f,\"median_ms\":%.5f,\"min_ms\":%.5f,\"gb_per_s\":%.1f}\n",
           (long long)bytes, moved, m, *std::min_element(ms.begin(), ms.end()), moved / m * 1e-6);
    ad_cuda_free(src); ad_cuda_free(dst); ad_cuda_event_destroy(e0); ad_cuda_event_destroy(e1);
    return 0;
}

struct Set { void *s, *d, *r, *g; };

static int fdl(int timed, int64_t V, int64_t tokens, int dt, int count) {
    const int64_t B = 4, T = (tokens + B - 1) / B, rows = B * T;
    const size_t arr = (size_t)rows * V * dsize(dt);
    int64_t info[8] = {0};
    AD(ad_cuda_device_info(0, info));
    int sets = 1;
    if (timed) sets = (int)std::max<int64_t>(2, (2 * info[4] + 4 * (int64_t)arr - 1) / (4 * (int64_t)arr));
    std::vector<Set> v(sets);
    for (int k = 0; k < sets; ++k) {
        AD(ad_cuda_malloc(&v[k].s, arr)); AD(ad_cuda_malloc(&v[k].d, arr));
        AD(ad_cuda_malloc(&v[k].r, arr)); AD(ad_cuda_malloc(&v[k].g, arr));
        const int64_t n = (int64_t)(arr / dsize(dt));
        fill(v[k].s, n, dt, 11 + 4 * k, 0.7f); fill(v[k].d, n, dt, 12 + 4 * k, 0.5f); fill(v[k].r, n, dt, 13 + 4 * k, 0.5f);
        AD(ad_cuda_memset(v[k].g, 0xFF, arr, nullptr)); /* poison: NaN in every dtype */
    }
    ad_fdl_problem p;
    memset(&p, 0, sizeof p);
    p.batch = B; p.seq = T; p.vocab = V;
    p.student_dtype = p.dpo_dtype = p.second_dtype = p.grad_dtype = dt;
    p.student_stride_b = p.dpo_stride_b = p.second_stride_b = p.grad_stride_b = T * V;
    p.student_stride_t = p.dpo_stride_t = p.second_stride_t = p.grad_stride_t = V;
    p.variant = AD_VARIANT_ALIGNDISTIL; p.length_norm = 1;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1;
    int64_t wsb = 0;
    AD(ad_fdl_cuda_workspace_bytes(&p, &wsb));
    void *ws, *dl, *dst, *e0, *e1;
    AD(ad_cuda_malloc(&ws, std::max<int64_t>(wsb, 256)));
    AD(ad_cuda_malloc(&dl, 8));
    AD(ad_cuda_malloc(&dst, 32));
    AD(ad_cuda_event_create(&e0));
    AD(ad_cuda_event_create(&e1));
    auto launch = [&](int i) {
        const Set& s = v[i % sets];
        p.student = s.s; p.dpo = s.d; p.second = s.r; p.grad = s.g;
        AD(ad_fdl_cuda(&p, ws, std::max<int64_t>(wsb, 256), (double*)dl, (int64_t*)dst, nullptr));
    };
    std::vector<float> ms;
    if (timed) {
        for (int i = 0; i < 3; ++i) launch(i);
        for (int i = 0; i < 20; ++i) {
            AD(ad_cuda_event_record(e0, nullptr));
            launch(i);
            AD(ad_cuda_event_record(e1, nullptr));
            ms.push_back(elapsed(e0, e1));
        }
    } else {
        for (int i = 0; i < count; ++i) launch(i);
    }
    AD(ad_cuda_stream_synchronize(nullptr));
    int64_t st[4];
    double loss = 0;
    AD(ad_cuda_memcpy_dtoh(st, dst, 32, nullptr));
    AD(ad_cuda_memcpy_dtoh(&loss, dl, 8, nullptr));
    /* every gradient element of the last set used must have been written (no NaN left from the poison) */
    const Set& last = v[(timed ? 19 : count - 1) % sets]; /* the last launch's set */
    std::vector<unsigned char> g(std::min<size_t>(arr, (size_t)V * dsize(dt) * 8));
    AD(ad_cuda_memcpy_dtoh(g.data(), (const char*)last.g + (arr - g.size()), (int64_t)g.size(), nullptr));
    int64_t nan = 0;
    for (size_t i = 0; i < g.size() / dsize(dt); ++i) {
        float x;
        if (dt == AD_F32) memcpy(&x, &g[4 * i], 4);
        else {
            uint16_t h;
            memcpy(&h, &g[2 * i], 2);
            if (dt == AD_BF16) { uint32_t u = (uint32_t)h << 16; memcpy(&x, &u, 4); }
            else { __half hh; memcpy(&hh, &h, 2); x = __half2float(hh); }
        }
        nan += !std::isfinite(x);
    }
    const char* kernel = getenv("AD_CUDA_KERNEL");
    const double bytes = 4.0 * (double)arr;
    printf("{\"probe\":\"%s\",\"kernel_env\":\"%s\",\"V\":%lld,\"tokens\":%lld,\"dtype\":\"%s\",\"sets\":%d,\"status\":%lld,"
           "\"loss\":%.9g,\"nonfinite_grad_in_last_rows\":%lld",
           timed ? "time" : "launch", kernel ? kernel : "", (long long)V, (long long)rows, dt == AD_F32 ? "f32" : dt == AD_BF16 ? "bf16" : "f16",
           sets, (long long)st[0], loss, (long long)nan);
    if (timed) {
        const double m = median(ms);
        printf(",\"bytes_moved\":%.0f,\"median_ms\":%.5f,\"min_ms\":%.5f,\"gb_per_s\":%.1f", bytes, m,
               *std::min_element(ms.begin(), ms.end()), bytes / m * 1e-6);
    }
    printf("}\n");
    const bool ok = st[0] == AD_OK && std::isfinite(loss) && nan == 0;
    if (!ok) fprintf(stderr, "fdl_cuda_probe: FAILED (status %lld, loss %g, %lld non-finite gradient values)\n", (long long)st[0], loss, (long long)nan);
    for (Set& s : v) { ad_cuda_free(s.s); ad_cuda_free(s.d); ad_cuda_free(s.r); ad_cuda_free(s.g); }
    ad_cuda_free(ws); ad_cuda_free(dl); ad_cuda_free(dst); ad_cuda_event_destroy(e0); ad_cuda_event_destroy(e1);
    return ok ? 0 : 1;
}

int main(int argc, char** argv) {
    int32_t n = 0;
    if (ad_cuda_device_count(&n) != AD_OK || n == 0) {
        fprintf(stderr, "fdl_cuda_probe: no CUDA device\n");
        return 77;
    }
    if (argc == 3 && !strcmp(argv[1], "copy")) return copy_bw(atof(argv[2]));
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "launch"))
        return fdl(0, atoll(argv[2]), atoll(argv[3]), parse_dtype(argv[4]), argc == 6 ? std::max(1, atoi(argv[5])) : 1);
    if (argc == 5 && !strcmp(argv[1], "time")) return fdl(1, atoll(argv[2]), atoll(argv[3]), parse_dtype(argv[4]), 0);
    fprintf(stderr, "usage: fdl_cuda_probe copy GIB | launch V TOKENS DTYPE [N] | time V TOKENS DTYPE\n");
    return 2;
}
