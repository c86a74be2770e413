/*
 * fdl_cpu_profile.c: where the AVX2 row kernel's time goes, and the floor of its design on this CPU.
 * A measuring tool, not a test (it checks nothing). Built with AD_BUILD_TESTS; needs AVX2 + FMA. Built a second time
 * as fdl_cpu_profile512 (AD_PROF_AVX512): the same for the AVX-512 row kernel (needs AVX-512 F/BW/DQ/VL).
 *
 *   fdl_cpu_profile [--vocab V] [--tokens T] [--reps N] [--dtype f32|bf16] [--kernel-only] [--design caching|recomputing]
 *
 * Prints, as medians of N repetitions (timestamps from rdtsc, converted to core cycles by a calibration
 * loop of dependent integer adds, 1 cycle each, so the numbers hold on a VM without hardware counters):
 *   clock      core cycles per ns (dependent add chain) and TSC ticks per ns
 *   exp        throughput of vexp and vexpm1_neg (fdl_simd.h, avx2) on an L1-resident array: cycles per element
 *   read       streaming read bandwidth of one core (sum of 8-float vectors, 4 accumulators) from buffers sized
 *              for L1, L2, L3 and DRAM: bytes per cycle and GB/s
 *   passes     the row kernel itself (this file compiles fused_distill_loss_rows.c again with a timestamp at each
 *              AD_PROF point): ns per element of each pass from rdtsc and from the thread's CPU time (the latter
 *              leaves out time the core spent on other jobs; cache and memory contention stay in both), cycles, at the requested V and at V = 16384 (three rows in
 *              L2: the passes' compute cost without the L3 traffic)
 */
#ifdef AD_PROF_AVX512 /* the fdl_cpu_profile512 build: the avx512 row kernel */
#define AD_ISA_AVX512 1
#else
#define AD_ISA_AVX2 1
#endif
#define AD_ISA_SUFFIX prof
#include <stdint.h>
#include <time.h>
#include <x86intrin.h>
static uint64_t g_prof_t[8];
static double g_prof_c[8]; /* thread CPU time (s): leaves out the time other jobs on a shared machine hold the core */
static inline double prof_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
#define AD_PROF(k) (g_prof_t[(k)] = __rdtsc(), g_prof_c[(k)] = prof_cpu_s())
#include "../cpu/fused_distill_loss_rows.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_d(const void* a, const void* b)
{
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}
static double median(double* v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return v[n / 2];
}

/* core cycles per ns: 4e8 dependent adds (1 cycle latency each on every x86 core since the P6) */
static double cycles_per_ns(void)
{
    double v[7];
    for (int k = 0; k < 7; k++) {
        uint64_t x = 0;
        const double t0 = now_ns();
        for (long i = 0; i < 100000000L; i++) __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
        v[k] = 4e8 / (now_ns() - t0);
    }
    return median(v, 7);
}
static double tsc_per_ns(void)
{
    const double t0 = now_ns();
    const uint64_t c0 = __rdtsc();
    while (now_ns() - t0 < 2e8) {}
    return (double)(__rdtsc() - c0) / (now_ns() - t0);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static double urand(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) * 0x1p-53;
}
static float gauss(void)
{
    double s = 0;
    for (int k = 0; k < 4; k++) s += urand();
    return (float)((s - 2.0) * 1.7320508);
}

int main(int argc, char** argv)
{
    int64_t V = 151936, T = 64;
    int reps = 9, bf16 = 0, micro = 1, design = AD_ROW_DESIGN_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc) V = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoll(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) bf16 = !strcmp(argv[++i], "bf16");
        else if (!strcmp(argv[i], "--kernel-only")) micro = 0; /* no clock / exp / bandwidth part (for valgrind) */
        else if (!strcmp(argv[i], "--design") && i + 1 < argc) { /* force a row design (default: the automatic one) */
            const char* dn = argv[++i];
            design = !strcmp(dn, "caching") ? AD_ROW_DESIGN_CACHING : !strcmp(dn, "recomputing") ? AD_ROW_DESIGN_RECOMPUTING : AD_ROW_DESIGN_AUTO;
        }
        else { fprintf(stderr, "usage: %s [--vocab V] [--tokens T] [--reps N] [--dtype f32|bf16] [--kernel-only] [--design caching|recomputing]\n", argv[0]); return 2; }
    }
    if (reps < 1 || reps > 99) reps = 9;
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) { printf("needs avx2 + fma\n"); return 1; }
#ifdef AD_PROF_AVX512
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512dq")
        || !__builtin_cpu_supports("avx512vl")) { printf("needs avx512 f/bw/dq/vl\n"); return 1; }
    printf("isa: avx512 row kernel (16 lanes)\n");
#else
    printf("isa: avx2 row kernel (8 lanes)\n");
#endif

    double cpn = 0;
    for (int k = 0; micro && k < 3; k++) { const double c = cycles_per_ns(); if (c > cpn) cpn = c; }
    const double tpn = tsc_per_ns();
    if (micro) printf("clock: %.3f core cycles/ns (dependent-add chain, best of 3: a busy shared core only slows it), TSC %.3f ticks/ns\n", cpn, tpn);
    const double c_per_tick = cpn / tpn;

    /* ---- exp throughput: 8192 floats in L1, 4 independent chains per iteration */
    if (micro) {
        float* x = aligned_alloc(64, 8192 * 4);
        for (int i = 0; i < 8192; i++) x[i] = (float)(-20.0 * urand());
        double ve[21], vm[21], vl[21];
        for (int k = 0; k < 21; k++) {
            const int rounds = 200;
            VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
            uint64_t c0 = __rdtsc();
            for (int r = 0; r < rounds; r++)
                for (int i = 0; i < 8192; i += 4 * VW) {
                    a0 = vadd(a0, vexp(vload(AD_F32, x, i)));
                    a1 = vadd(a1, vexp(vload(AD_F32, x, i + VW)));
                    a2 = vadd(a2, vexp(vload(AD_F32, x, i + 2 * VW)));
                    a3 = vadd(a3, vexp(vload(AD_F32, x, i + 3 * VW)));
                }
            ve[k] = (double)(__rdtsc() - c0) * c_per_tick / (rounds * 8192.0);
            c0 = __rdtsc();
            for (int r = 0; r < rounds; r++)
                for (int i = 0; i < 8192; i += 4 * VW) {
                    a0 = vadd(a0, vexpm1_neg(vload(AD_F32, x, i)));
                    a1 = vadd(a1, vexpm1_neg(vload(AD_F32, x, i + VW)));
                    a2 = vadd(a2, vexpm1_neg(vload(AD_F32, x, i + 2 * VW)));
                    a3 = vadd(a3, vexpm1_neg(vload(AD_F32, x, i + 3 * VW)));
                }
            vm[k] = (double)(__rdtsc() - c0) * c_per_tick / (rounds * 8192.0);
            c0 = __rdtsc();
            for (int r = 0; r < rounds; r++)
                for (int i = 0; i < 8192; i += 4 * VW) {
                    a0 = vadd(a0, vload(AD_F32, x, i));
                    a1 = vadd(a1, vload(AD_F32, x, i + VW));
                    a2 = vadd(a2, vload(AD_F32, x, i + 2 * VW));
                    a3 = vadd(a3, vload(AD_F32, x, i + 3 * VW));
                }
            vl[k] = (double)(__rdtsc() - c0) * c_per_tick / (rounds * 8192.0);
            volatile float sink = vhmax(vadd(vadd(a0, a1), vadd(a2, a3)));
            (void)sink;
        }
        printf("exp: vexp %.3f cycles/element, vexpm1_neg %.3f, bare load+add loop %.3f (L1, median of 21)\n",
               median(ve, 21), median(vm, 21), median(vl, 21));
        free(x);
    }

    /* ---- streaming read bandwidth, one core */
    if (micro) {
        const size_t sizes[] = {16u << 10, 512u << 10, 8u << 20, 512u << 20};
        const char* names[] = {"L1 16 KiB", "L2 512 KiB", "L3 8 MiB", "DRAM 512 MiB"};
        float* buf = aligned_alloc(64, sizes[3]);
        for (size_t i = 0; i < sizes[3] / 4; i++) buf[i] = 1.0f;
        for (int s = 0; s < 4; s++) {
            const size_t n = sizes[s] / 4;
            const int rounds = (int)((1u << 30) / sizes[s]) + 1;
            double v[9];
            for (int k = 0; k < 9; k++) {
                VF a0 = vzero(), a1 = vzero(), a2 = vzero(), a3 = vzero();
                const uint64_t c0 = __rdtsc();
                for (int r = 0; r < (s == 3 ? 2 : rounds); r++)
                    for (size_t i = 0; i < n; i += 4 * VW) {
                        a0 = vadd(a0, vload(AD_F32, buf, (int64_t)i));
                        a1 = vadd(a1, vload(AD_F32, buf, (int64_t)i + VW));
                        a2 = vadd(a2, vload(AD_F32, buf, (int64_t)i + 2 * VW));
                        a3 = vadd(a3, vload(AD_F32, buf, (int64_t)i + 3 * VW));
                    }
                const double cyc = (double)(__rdtsc() - c0) * c_per_tick;
                v[k] = (double)sizes[s] * (s == 3 ? 2 : rounds) / cyc;
                volatile float sink = vhmax(vadd(vadd(a0, a1), vadd(a2, a3)));
                (void)sink;
            }
            const double bpc = median(v, 9);
            printf("read %-13s: %.2f bytes/cycle = %.1f GB/s\n", names[s], bpc, bpc * cpn);
        }
        free(buf);
    }

    /* ---- the row kernel, by pass */
    const int64_t Vs[2] = {V, 16384};
    for (int vi = 0; vi < 2; vi++) {
        const int64_t VV = Vs[vi];
        const int64_t TT = vi == 0 ? T : 64;
        const size_t es = bf16 ? 2 : 4, n = (size_t)VV * (size_t)TT;
        uint8_t* s = aligned_alloc(64, n * es);
        uint8_t* d = aligned_alloc(64, n * es);
        uint8_t* r = aligned_alloc(64, n * es);
        uint8_t* g = aligned_alloc(64, n * es);
        float* wrow = aligned_alloc(64, (size_t)ad_row_scratch_floats(VV) * 4); /* the row scratch (64-byte multiple) */
        for (size_t i = 0; i < n; i++) {
            const float base = 3.0f * gauss();
            const float v3[3] = {base + 0.7f * gauss(), base + 0.5f * gauss(), base + 0.5f * gauss()};
            uint8_t* dst[3] = {s, d, r};
            for (int k = 0; k < 3; k++) {
                if (bf16) { const uint16_t h = ad_f2bf_scalar(v3[k]); memcpy(dst[k] + i * 2, &h, 2); }
                else memcpy(dst[k] + i * 4, &v3[k], 4);
            }
        }
        ad_row_params P;
        memset(&P, 0, sizeof P);
        P.vocab = VV; P.variant = AD_VARIANT_ALIGNDISTIL; P.use_second = 1;
        P.ds = P.dd = P.dr = P.dg = bf16 ? AD_BF16 : AD_F32;
        P.beta = 0.1; P.beta2 = 10.0; P.epsilon = 1e-3; P.temperature = 1.0; P.inv_ts = 1.0;
        P.clamp_teacher = 1e30f; P.clamp_student = 1e30f;
        P.design = design;
        static double pass[5][99], tot[99], cpass[5][99], ctot[99];
        double klsum = 0.0;
        for (int k = 0; k <= reps; k++) {
            double acc[5] = {0}, cacc[5] = {0};
            for (int64_t t = 0; t < TT; t++) {
                ad_row_io io;
                memset(&io, 0, sizeof io);
                io.s = s + (size_t)t * VV * es; io.d = d + (size_t)t * VV * es; io.r = r + (size_t)t * VV * es;
                io.g = g + (size_t)t * VV * es; io.row_scale = 1.0 / TT; io.w = wrow;
                if (ad_fdl_row_prof(&P, &io) != AD_OK) { printf("row error\n"); return 1; }
                if (k == 0) klsum += io.kl;
                for (int p = 0; p < 5; p++) acc[p] += (double)(g_prof_t[p + 1] - g_prof_t[p]);
                for (int p = 0; p < 5; p++) cacc[p] += g_prof_c[p + 1] - g_prof_c[p];
            }
            if (k == 0) continue; /* warm-up */
            tot[k - 1] = 0;
            ctot[k - 1] = 0;
            for (int p = 0; p < 5; p++) {
                pass[p][k - 1] = acc[p] / tpn / (double)n; /* ns per element */
                tot[k - 1] += pass[p][k - 1];
                cpass[p][k - 1] = cacc[p] * 1e9 / (double)n;
                ctot[k - 1] += cpass[p][k - 1];
            }
        }
        /* the pass labels of the design the rows took (ad_row_recompute); in the recomputing design's FAST rows pass 0
         * and pass A are one sweep, timed as pass 0 (pass A then shows only the f64 fold) */
        const int rc = ad_row_recompute(&P, P.ds);
        static const char* pn_cache[5] = {"0 maxima+check", "A Z,U (3 exp)", "B tvd (0 exp)", "C LSE* (1 exp)",
                                          "D grad (0 exp)"};
        static const char* pn_rc[5] = {"0A max+Z,U (3 exp)", "A (fold)", "B tvd (2 exp)", "C LSE* (1 exp)",
                                       "D grad (1 exp)"};
        const char* const* pn = rc ? pn_rc : pn_cache;
        printf("row kernel %s, V = %lld, %lld tokens, aligndistil, %s design (median of %d)\n", bf16 ? "bf16" : "f32",
               (long long)VV, (long long)TT, rc ? "recomputing" : "caching", reps);
        printf("  %-22s %9s %12s %9s\n", "pass", "ns/elem", "cpu ns/elem", cpn > 0 ? "cyc/elem" : "");
        for (int p = 0; p <= 5; p++) {
            const double m = p < 5 ? median(pass[p], reps) : median(tot, reps);
            const double c = p < 5 ? median(cpass[p], reps) : median(ctot, reps);
            if (cpn > 0) printf("  %-22s %9.3f %12.3f %9.3f\n", p < 5 ? pn[p] : "total", m, c, m * cpn);
            else printf("  %-22s %9.3f %12.3f\n", p < 5 ? pn[p] : "total", m, c);
        }
        /* FNV-1a of the gradient bytes and the sum of the rows' KL: equal across builds means identical results */
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < n * es; i++) h = (h ^ g[i]) * 0x100000001b3ull;
        printf("  results: gradient FNV-1a %016llx, sum of KL %.17g\n", (unsigned long long)h, klsum);
        free(s); free(d); free(r); free(g); free(wrow);
    }
    return 0;
}
