/*
 * cloop.c: the "straightforward C loop" of issue 15, the bound the fused CPU kernel is measured against, and the
 * harness that times it and ad_fdl_cpu (libaligndistil_cpu.so) on the same inputs, alternating, in one process.
 *
 * The C loop (cloop_row): one aligndistil row (student s, DPO d, reverse DPO r; V columns) per call, OpenMP over rows
 * (schedule(dynamic, 1)), written as plain loops for the compiler to vectorise (gcc -O3 -march=native -ffast-math
 * -mprefer-vector-width=512, or with AVX-512 switched off for the AVX2 build: see benchmarks/cloop/build.sh):
 *   pass 1  the three row maxima
 *   pass 2  e^(z - m) once for each of the three inputs, stored in a per-thread scratch (3 x V floats), summed
 *           (Z_s, Z_d, Z_r) together with the first moments U_s = sum e^s' s', U_d = sum e^s' d', U_r = sum e^s' r'
 *   pass 3  tvd = sum |e^d'/Z_d - e^r'/Z_r| from the cached rows; alpha = beta2 tvd + eps; teacher z* = d' + alpha (d' - r')
 *   pass 4  the teacher's maximum M
 *   pass 5  S = sum e^(z* - M) (one exp per element)
 *           K = (U_s/Z_s - log Z_s) - (((1 + alpha) U_d - alpha U_r)/Z_s - M - log S)
 *   pass 6  g = coef row_scale p (log p - log q - K) with p = e^s'/Z_s read from the cache
 * Four exps per element; exp = degree-5 polynomial on the reduced argument of a Cody-Waite split (n = rint(x/ln2),
 * r = x - n ln2_hi - n ln2_lo), 2^n by exponent bits, arguments clamped at -87.
 *
 * PRECISION NOTE: this loop is an optimistic bound, not a correct implementation of the project's contract. It sums in
 * f32 (no f64 anywhere but the scalars) and forms K with the identity K = E_p[s'] - log Z_s - E_p[z*] + M + log S
 * that cancels when the student nearly agrees with the teacher (the spec's precision warning: relative errors of
 * 7e-2 to 3e-1 in K at V = 151,936 and K ~ 1e-3); its tvd is a plain difference of f32 probabilities; -ffast-math
 * lets the compiler reassociate every sum, and it has no validity checks (NaN / inf), no -inf columns, no strides, no
 * bf16, no mask. It would fail the project's near-agreement tests. It is here only for its time.
 *
 * Harness: cloop [--vocab V] [--tokens T] [--reps N] [--threads "1 2"] [--dtypes "f32 bf16"] [--label L] [--json FILE]
 *                [--alt-lib PATH]   (also times ad_fdl_cpu of another build of the library, f32, in the same rotation:
 *                                    A/B of two kernels on a loaded machine)
 * For each thread count: the C loop (f32) and ad_fdl_cpu (f32, then bf16 if asked) on the same inputs, one call each
 * in turn, N rounds; medians, ns/element = time / (tokens x V) (per call, not per thread). Inputs as FusedLossBench:
 * a Gaussian base of scale 3 per column, teachers 0.5 and the student 0.7 away from it. Both results are compared (the
 * loss within 1e-3 relative: the C loop's own error) so neither side can skip its work.
 */
#define _GNU_SOURCE
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <dlfcn.h>
#include "aligndistil.h"

/* ------------------------------------------------------------------------------------------ the C loop */
static inline float cl_exp(float x)
{
    x = x < -87.0f ? -87.0f : x;
    const float n = __builtin_rintf(x * 0x1.715476p+0f);
    float r = x - n * 0x1.63p-1f;
    r = r - n * -0x1.bd0106p-13f;
    float p = 0x1.0fa830p-7f;
    p = p * r + 0x1.573a56p-5f;
    p = p * r + 0x1.555a6ap-3f;
    p = p * r + 0x1.fffdc6p-2f;
    p = p * r + 0x1.fffff6p-1f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float sc;
    memcpy(&sc, &bits, 4);
    return p * sc;
}

static _Thread_local float* t_cache;
static _Thread_local int64_t t_cache_n;

/* one row; returns the token loss coef * K (loss contribution = that times row_scale) */
static double cloop_row(const float* restrict s, const float* restrict d, const float* restrict r, float* restrict g,
                        int64_t V, float beta, float beta2, float eps, float row_scale)
{
    if (t_cache_n < 3 * V) {
        free(t_cache);
        t_cache = aligned_alloc(64, (size_t)(3 * V) * sizeof(float) + 64);
        t_cache_n = 3 * V;
    }
    float* restrict es = t_cache;
    float* restrict ed = t_cache + V;
    float* restrict er = t_cache + 2 * V;
    float ms = -INFINITY, md = -INFINITY, mr = -INFINITY;
    for (int64_t v = 0; v < V; v++) {
        ms = fmaxf(ms, s[v]);
        md = fmaxf(md, d[v]);
        mr = fmaxf(mr, r[v]);
    }
    float zs = 0, zd = 0, zr = 0, us = 0, ud = 0, ur = 0;
    for (int64_t v = 0; v < V; v++) {
        const float sp = s[v] - ms, dp = d[v] - md, rp = r[v] - mr;
        const float a = cl_exp(sp), b = cl_exp(dp), c = cl_exp(rp);
        es[v] = a; ed[v] = b; er[v] = c;
        zs += a; zd += b; zr += c;
        us += a * sp; ud += a * dp; ur += a * rp;
    }
    const float izd = 1.0f / zd, izr = 1.0f / zr;
    float tvd = 0;
    for (int64_t v = 0; v < V; v++) tvd += fabsf(ed[v] * izd - er[v] * izr);
    const float alpha = beta2 * tvd + eps, coef = beta / alpha;
    const float a1 = 1.0f + alpha;
    float M = -INFINITY;
    for (int64_t v = 0; v < V; v++) M = fmaxf(M, a1 * (d[v] - md) - alpha * (r[v] - mr));
    float S = 0;
    for (int64_t v = 0; v < V; v++) S += cl_exp(a1 * (d[v] - md) - alpha * (r[v] - mr) - M);
    const float lzs = logf(zs), lq0 = M + logf(S);
    const float K = (us / zs - lzs) - ((a1 * ud - alpha * ur) / zs - lq0);
    const float izs = 1.0f / zs, cg = coef * row_scale;
    const float c0 = lzs - lq0 + K;     /* log p - log q - K = s' - z* - c0 */
    for (int64_t v = 0; v < V; v++) {
        const float zt = a1 * (d[v] - md) - alpha * (r[v] - mr);
        g[v] = cg * (es[v] * izs) * ((s[v] - ms) - zt - c0);
    }
    return (double)coef * K;
}

/* all rows: returns the loss (mean over the rows of the token losses: one sequence, length-normalised) */
static double cloop(const float* s, const float* d, const float* r, float* g, int64_t T, int64_t V, int threads)
{
    double loss = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+ : loss)
    for (int64_t t = 0; t < T; t++)
        loss += cloop_row(s + t * V, d + t * V, r + t * V, g + t * V, V, 0.1f, 10.0f, 1e-3f, 1.0f / (float)T);
    return loss / (double)T;
}

/* ------------------------------------------------------------------------------------------ harness */
static uint64_t g_rng = 0x5eed1234abcdull;
static double urand(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * 0x1p-53;
}
static double gauss(void)
{
    double u = urand(), v = urand();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
/* CPU time of the calling thread: with one thread (both sides run on the caller) it leaves out the time other jobs
 * on a shared machine hold the core, which wall time does not */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static int cmp_d(const void* a, const void* b)
{
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}
static double med(double* v, int n)
{
    double c[256];
    memcpy(c, v, sizeof(double) * (size_t)n);
    qsort(c, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
}

typedef int32_t (*fdl_fn)(const ad_fdl_problem*, ad_fdl_status*, int32_t);
static fdl_fn g_fdl = ad_fdl_cpu;

static double fused(const void* s, const void* d, const void* r, void* g, int64_t dt, int64_t T, int64_t V, int threads)
{
    ad_fdl_problem p;
    memset(&p, 0, sizeof p);
    p.batch = 1; p.seq = T; p.vocab = V;
    p.student = s; p.dpo = d; p.second = r; p.grad = g;
    p.student_dtype = p.dpo_dtype = p.second_dtype = p.grad_dtype = dt;
    p.student_stride_b = p.dpo_stride_b = p.second_stride_b = p.grad_stride_b = T * V;
    p.student_stride_t = p.dpo_stride_t = p.second_stride_t = p.grad_stride_t = V;
    p.variant = AD_VARIANT_ALIGNDISTIL; p.length_norm = 1;
    p.beta = 0.1; p.beta2 = 10; p.epsilon = 1e-3; p.temperature = 1; p.student_temperature = 1; p.seq_divisor = 0;
    ad_fdl_status st;
    const int rc = g_fdl(&p, &st, threads);
    if (rc != AD_OK) { fprintf(stderr, "ad_fdl_cpu: error %d\n", rc); exit(1); }
    return st.loss;
}

int main(int argc, char** argv)
{
    if (getenv("OMP_WAIT_POLICY") == NULL) { /* idle OpenMP threads must not spin while ad_fdl_cpu runs */
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execv("/proc/self/exe", argv);
    }
    int64_t V = 151936, T = 64;
    int reps = 5;
    const char* thr = "1 2";
    const char* dts = "f32 bf16";
    const char* label = "";
    const char* json = NULL;
    const char* alt = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc) V = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) thr = argv[++i];
        else if (!strcmp(argv[i], "--dtypes") && i + 1 < argc) dts = argv[++i];
        else if (!strcmp(argv[i], "--label") && i + 1 < argc) label = argv[++i];
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(argv[i], "--alt-lib") && i + 1 < argc) alt = argv[++i];
        else { fprintf(stderr, "usage: %s [--vocab V] [--tokens T] [--reps N] [--threads \"1 2\"] [--dtypes \"f32 bf16\"] [--label L] [--json FILE]\n", argv[0]); return 2; }
    }
    if (reps < 1 || reps > 255) reps = 5;
    const int want_bf16 = strstr(dts, "bf16") != NULL;
    fdl_fn alt_fn = NULL;
    if (alt) {
        void* h = dlopen(alt, RTLD_NOW | RTLD_LOCAL);
        if (!h || !(alt_fn = (fdl_fn)dlsym(h, "ad_fdl_cpu"))) { fprintf(stderr, "--alt-lib %s: %s\n", alt, dlerror()); return 2; }
    }
    const size_t n = (size_t)(T * V);
    float *s = aligned_alloc(64, n * 4), *d = aligned_alloc(64, n * 4), *r = aligned_alloc(64, n * 4);
    float *g1 = aligned_alloc(64, n * 4), *g2 = aligned_alloc(64, n * 4);
    uint16_t *sb = NULL, *db = NULL, *rb = NULL, *gb = NULL;
    for (size_t i = 0; i < n; i++) {
        const double base = 3.0 * gauss();
        d[i] = (float)(base + 0.5 * gauss());
        r[i] = (float)(base + 0.5 * gauss());
        s[i] = (float)(base + 0.7 * gauss());
    }
    if (want_bf16) {
        sb = aligned_alloc(64, n * 2); db = aligned_alloc(64, n * 2); rb = aligned_alloc(64, n * 2); gb = aligned_alloc(64, n * 2);
        for (size_t i = 0; i < n; i++) { sb[i] = to_bf16(s[i]); db[i] = to_bf16(d[i]); rb[i] = to_bf16(r[i]); }
    }
    memset(g1, 0, n * 4); memset(g2, 0, n * 4);
    FILE* js = json ? fopen(json, "w") : NULL;
    if (js) fprintf(js, "{\"label\": \"%s\", \"isa\": \"%s\", \"vocab\": %lld, \"tokens\": %lld, \"reps\": %d, \"results\": [\n", label, ad_cpu_isa(), (long long)V, (long long)T, reps);
    int first = 1;
    printf("cloop harness %s: V = %lld, %lld tokens, fused isa %s, %d rounds (C loop and fused alternating), medians\n",
           label, (long long)V, (long long)T, ad_cpu_isa(), reps);
    char tbuf[64];
    snprintf(tbuf, sizeof tbuf, "%s", thr);
    double one_c = 0, one_f = 0, cpu_ratio = 0, cpu_c = 0, cpu_f = 0;
    for (char* tok = strtok(tbuf, " "); tok; tok = strtok(NULL, " ")) {
        const int th = atoi(tok);
        double tc[256], tf[256], tb[256], ta[256], cc[256], cf[256], cb[256], ca[256];
        if (alt_fn) { g_fdl = alt_fn; fused(s, d, r, g2, AD_F32, T, V, th); g_fdl = ad_fdl_cpu; }
        double lc = cloop(s, d, r, g1, T, V, th), lf = fused(s, d, r, g2, AD_F32, T, V, th); /* warm-up, pools */
        if (want_bf16) fused(sb, db, rb, gb, AD_BF16, T, V, th);
        if (!(fabs(lc - lf) <= 1e-3 * fabs(lf))) { fprintf(stderr, "loss mismatch: C loop %.9g fused %.9g\n", lc, lf); return 1; }
        double gd = 0, gn = 0;
        for (size_t i = 0; i < n; i++) { gd += (double)(g1[i] - g2[i]) * (g1[i] - g2[i]); gn += (double)g2[i] * g2[i]; }
        if (!(sqrt(gd) <= 1e-2 * sqrt(gn))) { fprintf(stderr, "grad mismatch: rel L2 %.3g\n", sqrt(gd / gn)); return 1; }
        for (int k = 0; k < reps; k++) {
            double t0 = now_s(), c0 = cpu_s();
            cloop(s, d, r, g1, T, V, th);
            tc[k] = now_s() - t0; cc[k] = cpu_s() - c0;
            t0 = now_s(); c0 = cpu_s();
            fused(s, d, r, g2, AD_F32, T, V, th);
            tf[k] = now_s() - t0; cf[k] = cpu_s() - c0;
            if (want_bf16) {
                t0 = now_s(); c0 = cpu_s();
                fused(sb, db, rb, gb, AD_BF16, T, V, th);
                tb[k] = now_s() - t0; cb[k] = cpu_s() - c0;
            }
            if (alt_fn) {
                g_fdl = alt_fn;
                t0 = now_s(); c0 = cpu_s();
                fused(s, d, r, g2, AD_F32, T, V, th);
                ta[k] = now_s() - t0; ca[k] = cpu_s() - c0;
                g_fdl = ad_fdl_cpu;
            }
        }
        if (alt_fn) printf("  threads %d: alt library f32 %8.2f ms = %.3f ns/element (alt/fused %.3fx)%s\n", th, med(ta, reps) * 1e3,
                           med(ta, reps) * 1e9 / ((double)T * (double)V), med(ta, reps) / med(tf, reps), "");
        if (th == 1) { /* thread CPU time: both sides ran on this thread */
            const double el1 = (double)T * (double)V;
            printf("  threads 1, thread CPU time: C loop f32 %.3f ns/element | fused f32 %.3f ns/element | fused/C loop %.3fx",
                   med(cc, reps) * 1e9 / el1, med(cf, reps) * 1e9 / el1, med(cf, reps) / med(cc, reps));
            if (want_bf16) printf(" | fused bf16 %.3f ns/element (bf16/f32 %.3fx)", med(cb, reps) * 1e9 / el1, med(cb, reps) / med(cf, reps));
            if (alt_fn) printf(" | alt f32 %.3f ns/element (alt/fused %.3fx)", med(ca, reps) * 1e9 / el1, med(ca, reps) / med(cf, reps));
            printf("\n");
            cpu_ratio = med(cf, reps) / med(cc, reps); cpu_c = med(cc, reps) * 1e3; cpu_f = med(cf, reps) * 1e3;
        }
        const double mc = med(tc, reps), mf = med(tf, reps), mb = want_bf16 ? med(tb, reps) : 0;
        const double el = (double)T * (double)V;
        if (th == 1) { one_c = mc; one_f = mf; }
        printf("  threads %d: C loop f32 %8.2f ms = %.3f ns/element | fused f32 %8.2f ms = %.3f ns/element | fused/C loop %.3fx",
               th, mc * 1e3, mc * 1e9 / el, mf * 1e3, mf * 1e9 / el, mf / mc);
        if (want_bf16) printf(" | fused bf16 %8.2f ms = %.3f ns/element (bf16/f32 %.3fx)", mb * 1e3, mb * 1e9 / el, mb / mf);
        if (th > 1 && one_c > 0) printf(" | %d/1 threads: C loop %.2fx, fused %.2fx", th, one_c / mc, one_f / mf);
        printf("\n");
        if (js) {
            fprintf(js, "%s  {\"threads\": %d, \"cloop_f32_ms\": %.4f, \"fused_f32_ms\": %.4f, \"fused_bf16_ms\": %.4f, \"cloop_ns_per_element\": %.4f, \"fused_ns_per_element\": %.4f, \"fused_bf16_ns_per_element\": %.4f, \"fused_over_cloop\": %.4f, \"cloop_runs_ms\": [",
                    first ? "" : ",\n", th, mc * 1e3, mf * 1e3, mb * 1e3, mc * 1e9 / el, mf * 1e9 / el, mb * 1e9 / el, mf / mc);
            for (int k = 0; k < reps; k++) fprintf(js, "%s%.4f", k ? ", " : "", tc[k] * 1e3);
            fprintf(js, "], \"fused_runs_ms\": [");
            for (int k = 0; k < reps; k++) fprintf(js, "%s%.4f", k ? ", " : "", tf[k] * 1e3);
            fprintf(js, "]");
            if (th == 1) fprintf(js, ", \"cloop_f32_cpu_ms\": %.4f, \"fused_f32_cpu_ms\": %.4f, \"fused_over_cloop_cpu\": %.4f", cpu_c, cpu_f, cpu_ratio);
            fprintf(js, "}");
            first = 0;
        }
    }
    if (js) { fprintf(js, "\n]}\n"); fclose(js); }
    return 0;
}
