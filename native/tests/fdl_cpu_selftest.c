/*
 * fdl_cpu_selftest.c: checks ad_fdl_cpu against a plain double-precision reference, and benchmarks it.
 *
 *   fdl_cpu_selftest            all tests on every ISA path this CPU can run (exit status 0 = pass)
 *   fdl_cpu_selftest --quick    fewer / smaller random cases (--seed N: another set of random cases)
 *   fdl_cpu_selftest --bench    V = 151936, 64 tokens, f32 and bf16, 1 and 2 threads: ns per element per thread
 *
 * The reference is written independently of the kernel: straightforward loops over log_softmax in double,
 * the tvd, the teacher logits built from the raw (uncentred) logits, KL, gradient and reductions. bf16 / f16
 * inputs are rounded first and the reference runs on the same rounded values.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "aligndistil.h"

/* ------------------------------------------------------------------------------------- utilities */
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd_u64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rnd_unif(void) { return (double)(rnd_u64() >> 11) * 0x1p-53; }
static double rnd_norm(void)
{
    double u = rnd_unif(), v = rnd_unif();
    if (u < 1e-300) u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static int rnd_int(int n) { return (int)(rnd_u64() % (uint64_t)n); }

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* reference conversions (written separately from the library's) */
static uint16_t to_bf16(float f)
{
    uint32_t u = f2u(f);
    if (isnan(f)) return (uint16_t)((u >> 16) | 0x40);
    uint32_t r = u + 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(r >> 16);
}
static float from_bf16(uint16_t h) { return u2f((uint32_t)h << 16); }
static float from_f16(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 31) v = m ? NAN : INFINITY;
    else if (e == 0) v = ldexp((double)m, -24);
    else v = ldexp((double)(m + 1024), e - 25);
    return (float)((h & 0x8000) ? -v : v);
}
static uint16_t to_f16(float f)
{
    /* brute force: nearest half by value, ties to even (used on test inputs only) */
    if (isnan(f)) return 0x7e00;
    const uint16_t sign = signbit(f) ? 0x8000 : 0;
    const double a = fabs((double)f);
    if (a >= 65520.0) return sign | 0x7c00;
    int lo = 0, hi = 0x7bff;
    while (lo < hi) { /* largest code with value <= a */
        int mid = (lo + hi + 1) / 2;
        if (from_f16((uint16_t)mid) <= a) lo = mid; else hi = mid - 1;
    }
    uint16_t c = (uint16_t)lo;
    if (c < 0x7bff || a > 65504.0) {
        const double d0 = a - from_f16(c), d1 = (c == 0x7bff ? 65536.0 : from_f16((uint16_t)(c + 1))) - a;
        if (d1 < d0 || (d1 == d0 && (c & 1))) c++;
    }
    return sign | c;
}

static size_t dsize(int dt) { return dt == AD_F32 ? 4 : 2; }
static void store_val(void* base, int64_t idx, int dt, float v)
{
    if (dt == AD_F32) ((float*)base)[idx] = v;
    else if (dt == AD_BF16) ((uint16_t*)base)[idx] = to_bf16(v);
    else ((uint16_t*)base)[idx] = to_f16(v);
}
static double load_val(const void* base, int64_t idx, int dt)
{
    if (dt == AD_F32) return ((const float*)base)[idx];
    if (dt == AD_BF16) return from_bf16(((const uint16_t*)base)[idx]);
    return from_f16(((const uint16_t*)base)[idx]);
}
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}
static const char* dtn(int dt) { return dt == AD_F32 ? "f32" : dt == AD_BF16 ? "bf16" : "f16"; }
static const char* varn(int v)
{
    static const char* n[] = {"aligndistil", "contrast", "adaptive", "theorem1", "gkd"};
    return n[v];
}

/* ------------------------------------------------------------------------------------- reference */
typedef struct {
    int code;
    int64_t column;
    double alpha, coef, K, metrics[3];
    double c; /* coef * row_scale / Ts: the row's gradient scale */
} ref_row_out;

static double ref_lse(const double* x, const int* oov, int64_t V)
{
    double m = -INFINITY;
    for (int64_t v = 0; v < V; v++) if (!oov[v] && x[v] > m) m = x[v];
    double s = 0;
    for (int64_t v = 0; v < V; v++) if (!oov[v]) s += exp(x[v] - m);
    return m + log(s);
}

/* s, d, r: the rows as doubles; g: gradient out (V); work: 6V doubles; oov: V ints */
static void ref_row(const double* s, const double* d, const double* r, int64_t V, int variant, double beta,
                    double beta2, double eps, double T, double Ts, double row_scale, double* g, double* work,
                    int* oov, ref_row_out* o)
{
    const int use_r = variant != AD_VARIANT_GKD;
    memset(o, 0, sizeof *o);
    o->column = -1;
    int64_t nin = 0;
    for (int64_t v = 0; v < V; v++) {
        const int ns = s[v] == -INFINITY, nd = d[v] == -INFINITY, nr = use_r ? r[v] == -INFINITY : ns;
        const int bad = isnan(s[v]) || s[v] == INFINITY || isnan(d[v]) || d[v] == INFINITY
                     || (use_r && (isnan(r[v]) || r[v] == INFINITY)) || ns != nd || ns != nr;
        if (bad) { o->code = AD_ERR_NONFINITE; o->column = v; return; }
        oov[v] = ns;
        nin += !ns;
    }
    if (nin == 0) { o->code = AD_ERR_EMPTY_ROW; return; }
    if (variant == AD_VARIANT_GKD) T = 1.0;
    double *lp = work, *ld = work + V, *lr = work + 2 * V, *lq = work + 3 * V, *tmp = work + 4 * V;
    for (int64_t v = 0; v < V; v++) tmp[v] = s[v] / Ts;
    double A = ref_lse(tmp, oov, V);
    for (int64_t v = 0; v < V; v++) lp[v] = oov[v] ? -INFINITY : tmp[v] - A;
    A = ref_lse(d, oov, V);
    for (int64_t v = 0; v < V; v++) ld[v] = oov[v] ? -INFINITY : d[v] - A;
    if (use_r) {
        A = ref_lse(r, oov, V);
        for (int64_t v = 0; v < V; v++) lr[v] = oov[v] ? -INFINITY : r[v] - A;
    }
    double alpha, coef;
    if (variant == AD_VARIANT_ALIGNDISTIL || variant == AD_VARIANT_ADAPTIVE) {
        double tvd = 0;
        for (int64_t v = 0; v < V; v++) if (!oov[v]) tvd += fabs(exp(ld[v]) - exp(lr[v]));
        alpha = beta2 * tvd + eps;
        coef = beta / alpha;
    } else if (variant == AD_VARIANT_GKD) {
        alpha = 1; coef = 1;
    } else {
        alpha = beta / beta2;
        coef = beta2;
    }
    for (int64_t v = 0; v < V; v++) {
        if (oov[v]) { tmp[v] = -INFINITY; continue; }
        double z;
        if (variant == AD_VARIANT_ALIGNDISTIL || variant == AD_VARIANT_CONTRAST) z = d[v] + alpha * (d[v] - r[v]);
        else if (variant == AD_VARIANT_GKD) z = d[v];
        else z = alpha * d[v] + (1 - alpha) * r[v];
        tmp[v] = z / T;
    }
    A = ref_lse(tmp, oov, V);
    for (int64_t v = 0; v < V; v++) lq[v] = oov[v] ? -INFINITY : tmp[v] - A;
    double K = 0, rew = 0, k1 = 0, k2 = 0;
    for (int64_t v = 0; v < V; v++) {
        if (oov[v]) continue;
        const double p = exp(lp[v]);
        K += p * (lp[v] - lq[v]);
        k1 += p * (lp[v] - ld[v]);
        if (use_r) { rew += p * (ld[v] - lr[v]); k2 += p * (lp[v] - lr[v]); }
    }
    const double c = coef * row_scale / Ts;
    for (int64_t v = 0; v < V; v++) g[v] = oov[v] ? 0.0 : c * exp(lp[v]) * (lp[v] - lq[v] - K);
    o->alpha = alpha;
    o->coef = coef;
    o->c = c;
    o->K = K;
    o->metrics[0] = use_r ? beta * rew : 0.0;
    o->metrics[1] = k1;
    o->metrics[2] = use_r ? k2 : 0.0;
}

/* ------------------------------------------------------------------------------------- test cases */
typedef struct {
    int B, T;
    int64_t V;
    int ds, dd, dr, dg;
    int variant, length_norm;
    double beta, beta2, eps, temp, ts, seq_div;
    int in_place, mask_mode; /* 0 none, 1 random, 2 random + one all-masked sequence */
    int extreme;             /* logits of magnitude ~1e4 */
    int oov;                 /* -inf columns */
    int identical;           /* second teacher == dpo */
    int close;               /* student close to the teacher (small K) */
    double tdelta;           /* > 0: the second teacher is dpo + tdelta N(0, 1) (tvd pass: near / direct forms) */
    int ramp;                /* logits drift upwards along the row (each row its own slope) and the student's largest
                              * logit is the last column: the running maxima of pass 0A grow block after block */
    int metrics;
} tcase;

typedef struct {
    tcase c;
    int64_t sb, st, db, dt_, rb, rt, gb, gt, mb, mt;
    void *s, *d, *r, *g;
    uint8_t* mask;
    float *w, *tl, *met;
    ad_fdl_problem pb;
} tdata;

static int g_fail = 0, g_checks = 0;
static int g_verbose = 0;

static void* xalloc(size_t n)
{
    void* p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static void make_data(tdata* D, const tcase* c)
{
    memset(D, 0, sizeof *D);
    D->c = *c;
    const int64_t V = c->V, B = c->B, T = c->T;
    const int pad = rnd_int(3) * 5;
    D->st = V + pad; D->sb = T * D->st + rnd_int(2) * 3;
    D->dt_ = V + rnd_int(2) * 7; D->db = T * D->dt_;
    D->rt = V; D->rb = T * V;
    if (rnd_int(3) == 0 && B > 1) { D->rb = V; D->rt = B * V; } /* a transposed batch */
    if (c->in_place) { D->gb = D->sb; D->gt = D->st; }
    else { D->gt = V + rnd_int(2) * 2; D->gb = T * D->gt; }
    D->mt = 1; D->mb = T + 1;
    const size_t ns = (size_t)(D->sb * B), nd = (size_t)(D->db * B), nr = (size_t)(B * T * V + 16);
    D->s = xalloc(ns * dsize(c->ds));
    D->d = xalloc(nd * dsize(c->dd));
    D->r = xalloc(nr * dsize(c->dr));
    D->g = c->in_place ? D->s : xalloc((size_t)(D->gb * B) * dsize(c->dg));
    if (!c->in_place) memset(D->g, 0x5a, (size_t)(D->gb * B) * dsize(c->dg)); /* garbage */
    memset(D->s, 0x7f, ns * dsize(c->ds)); /* padding: NaN-ish patterns that must never be read */
    memset(D->d, 0x7f, nd * dsize(c->dd));
    memset(D->r, 0x7f, nr * dsize(c->dr));
    D->mask = xalloc((size_t)(B * D->mb));
    memset(D->mask, 0, (size_t)(B * D->mb));
    D->w = xalloc(sizeof(float) * B * T);
    D->tl = xalloc(sizeof(float) * B * T);
    D->met = xalloc(sizeof(float) * B * T * 3);
    for (int64_t i = 0; i < B * T; i++) { D->w[i] = 7; D->tl[i] = 7; D->met[3 * i] = D->met[3 * i + 1] = D->met[3 * i + 2] = 7; }
    int empty_seq = c->mask_mode == 2 ? rnd_int(c->B) : -1;
    double* base = xalloc(sizeof(double) * V);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int sel = 1;
            if (c->mask_mode) sel = rnd_int(4) != 0;
            if (b == empty_seq) sel = 0;
            D->mask[b * D->mb + t * D->mt] = (uint8_t)sel;
            const double scale = c->extreme ? 1e4 : 1.0 + 3.0 * rnd_unif();
            const double off = c->extreme ? (rnd_unif() - 0.5) * 2e4 : (rnd_unif() - 0.5) * 20;
            int64_t noov = 0;
            if (c->oov && V > 1) noov = 1 + rnd_int((int)(V / 3 > 1 ? V / 3 : 1));
            for (int64_t v = 0; v < V; v++) base[v] = off + scale * rnd_norm();
            for (int64_t v = 0; v < V; v++) {
                double sv, dv, rv;
                if (c->extreme) {
                    sv = base[v] + 0.3 * scale * rnd_norm();
                    dv = base[v] + 0.3 * scale * rnd_norm();
                    rv = base[v] + 0.3 * scale * rnd_norm();
                } else if (c->close) {
                    dv = base[v] + 0.3 * rnd_norm();
                    rv = dv + 0.05 * rnd_norm();
                    sv = dv + 0.02 * rnd_norm() + 5.0;
                } else {
                    sv = base[v] + 0.7 * rnd_norm() + 3.0;
                    dv = base[v] + 0.5 * rnd_norm();
                    rv = base[v] + 0.5 * rnd_norm() - 1.0;
                }
                if (c->ramp) {
                    const double x = (double)v / (double)V, amp = c->extreme ? 2e4 : 30.0;
                    sv += amp * x;
                    dv += 0.8 * amp * x;
                    rv += 0.6 * amp * x * x;
                    if (v == V - 1) sv += c->extreme ? 1e4 : 8.0;
                }
                if (c->tdelta > 0) rv = dv + c->tdelta * rnd_norm();
                if (c->identical) rv = dv - 2.5;
                int is_oov = 0;
                if (noov) is_oov = (v >= V - noov / 2) || rnd_int(7) == 0;
                if (is_oov && v == 0) is_oov = 0;
                if (is_oov) sv = dv = rv = -INFINITY;
                store_val(D->s, b * D->sb + t * D->st + v, c->ds, (float)sv);
                store_val(D->d, b * D->db + t * D->dt_ + v, c->dd, (float)dv);
                store_val(D->r, b * D->rb + t * D->rt + v, c->dr, (float)rv);
            }
            if (c->identical) /* make the second row bit-identical to dpo minus a constant: recompute */
                for (int64_t v = 0; v < V; v++)
                    store_val(D->r, b * D->rb + t * D->rt + v, c->dr, (float)load_val(D->d, b * D->db + t * D->dt_ + v, c->dd));
        }
    free(base);
    ad_fdl_problem* p = &D->pb;
    memset(p, 0, sizeof *p);
    p->batch = B; p->seq = T; p->vocab = V;
    p->student = D->s; p->student_dtype = c->ds; p->student_stride_b = D->sb; p->student_stride_t = D->st;
    p->dpo = D->d; p->dpo_dtype = c->dd; p->dpo_stride_b = D->db; p->dpo_stride_t = D->dt_;
    p->second = c->variant == AD_VARIANT_GKD && rnd_int(2) ? NULL : D->r;
    p->second_dtype = c->dr; p->second_stride_b = D->rb; p->second_stride_t = D->rt;
    p->mask = c->mask_mode ? D->mask : NULL;
    p->mask_stride_b = D->mb; p->mask_stride_t = D->mt;
    p->grad = D->g; p->grad_dtype = c->dg; p->grad_stride_b = D->gb; p->grad_stride_t = D->gt;
    p->weight = D->w; p->token_loss = D->tl; p->metrics = c->metrics ? D->met : NULL;
    p->variant = c->variant; p->length_norm = c->length_norm;
    p->beta = c->beta; p->beta2 = c->beta2; p->epsilon = c->eps;
    p->temperature = c->temp; p->student_temperature = c->ts; p->seq_divisor = c->seq_div;
}

static void free_data(tdata* D)
{
    if (!D->c.in_place) free(D->g);
    free(D->s); free(D->d); free(D->r); free(D->mask); free(D->w); free(D->tl); free(D->met);
}

/* Reference of the whole problem. Outputs: loss, per-row outs, grad [B*T*V] (double), first error. */
typedef struct {
    double loss;
    int code;
    int64_t token, column;
    ref_row_out* rows;
    double* grad;
    int* selected;
} ref_all;

static void ref_problem(const ad_fdl_problem* p, const void* student_copy, ref_all* R)
{
    const int64_t B = p->batch, T = p->seq, V = p->vocab;
    R->rows = xalloc(sizeof(ref_row_out) * B * T);
    R->grad = xalloc(sizeof(double) * B * T * V);
    R->selected = xalloc(sizeof(int) * B * T);
    memset(R->rows, 0, sizeof(ref_row_out) * B * T);
    memset(R->grad, 0, sizeof(double) * B * T * V);
    R->code = AD_OK; R->token = -1; R->column = -1; R->loss = 0;
    double *s = xalloc(8 * V), *d = xalloc(8 * V), *r = xalloc(8 * V), *work = xalloc(8 * 6 * V);
    int* oov = xalloc(sizeof(int) * V);
    int64_t nseq = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = 0;
        for (int64_t t = 0; t < T; t++) nb += !p->mask || p->mask[b * p->mask_stride_b + t * p->mask_stride_t];
        nseq += nb > 0;
    }
    const double N = p->seq_divisor > 0 ? p->seq_divisor : (double)nseq;
    const int use_r = p->variant != AD_VARIANT_GKD;
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = 0;
        for (int64_t t = 0; t < T; t++) nb += !p->mask || p->mask[b * p->mask_stride_b + t * p->mask_stride_t];
        double seq_sum = 0;
        for (int64_t t = 0; t < T; t++) {
            const int64_t f = b * T + t;
            R->selected[f] = !p->mask || p->mask[b * p->mask_stride_b + t * p->mask_stride_t];
            if (!R->selected[f]) continue;
            for (int64_t v = 0; v < V; v++) {
                s[v] = load_val(student_copy, b * p->student_stride_b + t * p->student_stride_t + v, (int)p->student_dtype);
                d[v] = load_val(p->dpo, b * p->dpo_stride_b + t * p->dpo_stride_t + v, (int)p->dpo_dtype);
                r[v] = use_r ? load_val(p->second, b * p->second_stride_b + t * p->second_stride_t + v, (int)p->second_dtype) : 0;
            }
            const double row_scale = (p->length_norm ? 1.0 / nb : 1.0) / N;
            ref_row(s, d, use_r ? r : NULL, V, (int)p->variant, p->beta, p->beta2, p->epsilon, p->temperature,
                    p->student_temperature, row_scale, R->grad + f * V, work, oov, &R->rows[f]);
            if (R->rows[f].code != AD_OK) {
                if (R->code == AD_OK) { R->code = R->rows[f].code; R->token = f; R->column = R->rows[f].column; }
                continue;
            }
            seq_sum += R->rows[f].coef * R->rows[f].K;
        }
        if (nb > 0) R->loss += (p->length_norm ? seq_sum / nb : seq_sum) / N;
    }
    free(s); free(d); free(r); free(work); free(oov);
}
static void ref_free(ref_all* R) { free(R->rows); free(R->grad); free(R->selected); }

static int close_enough(double got, double want, double tol)
{
    if (isnan(got) || isnan(want)) return 0;
    const double err = fabs(got - want);
    return err <= tol * (fabs(want) > 1 ? fabs(want) : 1.0);
}

static void fail(const char* what, const char* ctx)
{
    g_fail++;
    fprintf(stderr, "FAIL [%s] %s\n", ctx, what);
}

/* Compares the library's outputs (already computed in D) with R. */
static void compare(const tdata* D, const ref_all* R, const double tol0, const double gtol0, const char* ctx, double* worst_g)
{
    const ad_fdl_problem* p = &D->pb;
    const int64_t B = p->batch, T = p->seq, V = p->vocab;
    char buf[512];
    for (int64_t f = 0; f < B * T; f++) {
        const int64_t b = f / T, t = f % T;
        const ref_row_out* o = &R->rows[f];
        double tol = tol0, gtol = gtol0;
        const int sel = R->selected[f];
        const double w_want = sel ? o->alpha : 0, tl_want = sel ? o->coef * o->K : 0;
        /* alpha = beta2 tvd + eps is ill-conditioned when tvd is small: with f32 probabilities the tvd is
         * known to about 2^-22 absolute (the normalisers Z_d, Z_r are f32 lane sums folded into f64; the
         * lane holding a dominant term rounds every later addition to its ulp), so coef = beta/alpha and
         * everything scaled by it may be off by beta2 2^-21 / alpha relative (a 2x margin) */
        const double cond = sel && (p->variant == AD_VARIANT_ALIGNDISTIL || p->variant == AD_VARIANT_ADAPTIVE)
                          ? p->beta2 * 0x1p-21 / o->alpha : 0.0;
        tol += cond;
        gtol += cond;
        g_checks++;
        if (!close_enough(D->w[f], w_want, tol)) {
            snprintf(buf, sizeof buf, "weight row %lld: got %.9g want %.9g", (long long)f, D->w[f], w_want);
            fail(buf, ctx);
        }
        if (!close_enough(D->tl[f], tl_want, tol)) {
            snprintf(buf, sizeof buf, "token_loss row %lld: got %.9g want %.9g (K %.6g coef %.6g; weight got %.9g want %.9g)", (long long)f, D->tl[f], tl_want, o->K, o->coef, D->w[f], w_want);
            fail(buf, ctx);
        }
        if (p->metrics)
            for (int k = 0; k < 3; k++) {
                const double want = sel ? o->metrics[k] : 0;
                if (!close_enough(D->met[3 * f + k], want, tol * 10)) {
                    snprintf(buf, sizeof buf, "metric %d row %lld: got %.9g want %.9g", k, (long long)f, D->met[3 * f + k], want);
                    fail(buf, ctx);
                }
            }
        /* gradient row */
        double num = 0, den = 0, gsum = 0, gabs = 0, worst = 0;
        int64_t worst_v = -1;
        for (int64_t v = 0; v < V; v++) {
            const double got = load_val(D->g, b * p->grad_stride_b + t * p->grad_stride_t + v, (int)p->grad_dtype);
            const double want = R->grad[f * V + v];
            if (isnan(got)) { num = INFINITY; worst_v = v; break; }
            /* a 16-bit grad may differ from the exact value by its own rounding (half an ulp of the
             * output dtype, f16 subnormals included): only the error beyond that is counted */
            double q = 0;
            if (p->grad_dtype == AD_BF16) q = fabs(want) * 0x1p-8;
            else if (p->grad_dtype == AD_F16) q = fmax(fabs(want) * 0x1p-11, 0x1p-25);
            const double e = fmax(fabs(got - want) - 1.0001 * q, 0.0);
            num += e * e;
            den += want * want;
            gsum += got;
            gabs += fabs(got);
            if (fabs(got - want) > worst) { worst = fabs(got - want); worst_v = v; }
            if (!sel && got != 0) { num = INFINITY; worst_v = v; break; }
        }
        /* Saturated rows (extreme logits: p one-hot) have an exact gradient of ~0 while f32 carries the
         * teacher logits w = (a d' + b r')/T only to ulp(|w|): allow |c| * 8 ulp(max |w|) absolute there. */
        const double c_row = sel ? fabs(o->c) : 0;
        const double wmax = D->c.extreme ? (o->alpha * 2 + 1) * 6e4 / (p->variant == AD_VARIANT_GKD ? 1 : p->temperature) : 0;
        const double sat_abs = D->c.extreme ? c_row * 8 * wmax * 0x1p-23 : 0;
        double rel = sel ? sqrt(num) / (sqrt(den) > 1e-300 ? sqrt(den) : 1e-300) : (num == 0 ? 0 : INFINITY);
        if (sel && sqrt(num) <= sat_abs) rel = 0;
        if (sel && sqrt(den) < 1e-30 && sat_abs == 0) { /* zero gradient (identical distributions) */
            if (!(sqrt(num) < 1e-12)) { snprintf(buf, sizeof buf, "grad row %lld expected ~0, L2 %.3g", (long long)f, sqrt(num)); fail(buf, ctx); }
        } else if (!(rel <= gtol)) {
            snprintf(buf, sizeof buf, "grad row %lld (%s): rel L2 %.3g > %.3g; worst col %lld got %.9g want %.9g",
                     (long long)f, sel ? "selected" : "unselected", rel, gtol, (long long)worst_v,
                     worst_v >= 0 ? load_val(D->g, b * p->grad_stride_b + t * p->grad_stride_t + worst_v, (int)p->grad_dtype) : 0.0,
                     worst_v >= 0 ? R->grad[f * V + worst_v] : 0.0);
            fail(buf, ctx);
        }
        if (sel && rel > *worst_g) *worst_g = rel;
        if (sel && p->grad_dtype == AD_F32 && !(fabs(gsum) <= 1e-5 * gabs + sat_abs + 1e-6 * c_row)) {
            snprintf(buf, sizeof buf, "grad row %lld sums to %.3g (sum |g| %.3g)", (long long)f, gsum, gabs);
            fail(buf, ctx);
        }
    }
}

static double g_worst_loss_rel = 0, g_worst_grad_rel = 0;

/* Runs one case with the given thread count; the problem data is regenerated by the caller. */
static void run_case(const tcase* c, int threads, const char* isa)
{
    tdata D;
    make_data(&D, c);
    void* scopy = NULL;
    const size_t sbytes = (size_t)(D.sb * c->B) * dsize(c->ds);
    scopy = xalloc(sbytes);
    memcpy(scopy, D.s, sbytes);
    ref_all R;
    ref_problem(&D.pb, scopy, &R);
    ad_fdl_status st;
    memset(&st, 0x33, sizeof st);
    const int rc = ad_fdl_cpu(&D.pb, &st, threads);
    char ctx[400];
    snprintf(ctx, sizeof ctx, "%s thr=%d %s B=%d T=%d V=%lld in=%s/%s/%s g=%s ln=%d T=%g Ts=%g mask=%d ext=%d oov=%d ident=%d close=%d inpl=%d",
             isa, threads, varn(c->variant), c->B, c->T, (long long)c->V, dtn(c->ds), dtn(c->dd), dtn(c->dr), dtn(c->dg),
             c->length_norm, c->temp, c->ts, c->mask_mode, c->extreme, c->oov, c->identical, c->close, c->in_place);
    if (g_verbose) fprintf(stderr, "case %s\n", ctx);
    const int lowp = c->ds != AD_F32 || c->dd != AD_F32 || c->dr != AD_F32;
    double tol = 1e-5, gtol = 1e-4;
    if (lowp || c->extreme) { tol *= 10; gtol *= 10; }
    if (c->dg == AD_BF16) gtol += 8e-3;  /* output quantisation: 2^-9 relative per element */
    if (c->dg == AD_F16) gtol += 1e-3;
    g_checks++;
    if (rc != R.code || st.code != rc) {
        char b[200];
        snprintf(b, sizeof b, "status: got %d (st %lld) want %d", rc, (long long)st.code, R.code);
        fail(b, ctx);
    } else if (rc == AD_OK) {
        double lcond = 0; /* see compare(): alpha's conditioning, worst selected row */
        if (c->variant == AD_VARIANT_ALIGNDISTIL || c->variant == AD_VARIANT_ADAPTIVE)
            for (int64_t f = 0; f < (int64_t)c->B * c->T; f++)
                if (R.selected[f] && R.rows[f].alpha > 0) lcond = fmax(lcond, c->beta2 * 0x1p-21 / R.rows[f].alpha);
        if (!close_enough(st.loss, R.loss, tol + lcond)) {
            char b[200];
            snprintf(b, sizeof b, "loss: got %.12g want %.12g", st.loss, R.loss);
            fail(b, ctx);
        }
        const double lr = fabs(st.loss - R.loss) / (fabs(R.loss) > 1 ? fabs(R.loss) : 1);
        if (lr > g_worst_loss_rel && !lowp && !c->extreme) g_worst_loss_rel = lr;
        double wg = 0;
        compare(&D, &R, tol, gtol, ctx, &wg);
        if (!lowp && !c->extreme && c->dg == AD_F32 && wg > g_worst_grad_rel) g_worst_grad_rel = wg;
        int64_t sel = 0;
        for (int64_t f = 0; f < (int64_t)c->B * c->T; f++) sel += R.selected[f];
        if (st.selected_rows != sel) fail("selected_rows", ctx);
    }
    ref_free(&R);
    free(scopy);
    free_data(&D);
}

static tcase base_case(void)
{
    tcase c;
    memset(&c, 0, sizeof c);
    c.B = 1; c.T = 1; c.V = 129;
    c.ds = c.dd = c.dr = c.dg = AD_F32;
    c.variant = AD_VARIANT_ALIGNDISTIL;
    c.length_norm = 1;
    c.beta = 0.1; c.beta2 = 10; c.eps = 1e-3; c.temp = 1; c.ts = 1; c.seq_div = 0;
    c.metrics = 1;
    return c;
}

static void random_cases(const char* isa, int n, int quick)
{
    static const int64_t vs[] = {1, 7, 129, 4099, 50257, 151936};
    for (int i = 0; i < n; i++) {
        tcase c = base_case();
        const int vi = rnd_int(6);
        c.V = vs[vi];
        if (quick && c.V > 5000) c.V = 4099;
        const int64_t maxrows = c.V >= 50000 ? 4 : c.V >= 4000 ? 24 : 141;
        c.B = 1 + rnd_int(3);
        c.T = 1 + rnd_int(47);
        while ((int64_t)c.B * c.T > maxrows) { if (c.T > 1) c.T = (c.T + 1) / 2; else c.B = 1; }
        c.variant = rnd_int(5);
        const int dti = rnd_int(6);
        if (dti <= 2) { c.ds = c.dd = c.dr = dti; }
        else { c.ds = rnd_int(3); c.dd = rnd_int(3); c.dr = rnd_int(3); }
        c.dg = rnd_int(2) ? AD_F32 : c.ds;
        c.length_norm = rnd_int(2);
        c.temp = rnd_int(2) ? 1.0 : 0.5 + 1.5 * rnd_unif();
        c.ts = rnd_int(2) ? 1.0 : (rnd_int(2) ? c.temp : 0.7 + rnd_unif());
        c.beta = rnd_int(2) ? 0.1 : 0.05 + rnd_unif();
        c.beta2 = rnd_int(2) ? 10 : 0.5 + 15 * rnd_unif();
        c.seq_div = rnd_int(3) == 0 ? 128 : 0;
        c.mask_mode = rnd_int(3);
        c.extreme = rnd_int(8) == 0;
        c.oov = rnd_int(3) == 0;
        c.identical = rnd_int(6) == 0;
        c.close = !c.extreme && rnd_int(4) == 0;
        c.in_place = c.dg == c.ds && rnd_int(3) == 0;
        c.metrics = rnd_int(4) != 0;
        if (c.V == 1) c.oov = 0;
        const int threads = 1 + rnd_int(2);
        run_case(&c, threads, isa);
    }
}

/* Same problem on 1, 2 and 3 threads: identical grads and a bit-identical loss (rows are claimed in tiles whose cut
 * depends on B*T only, and the tile sums are added in tile order). Two shapes: one row per tile (51 rows), and
 * several rows per tile (2100 rows > AD_TILES) with a small vocabulary. */
static void thread_consistency(const char* isa)
{
    static const int shapes[2][3] = {{3, 17, 4099}, {3, 700, 37}};
    for (int sh = 0; sh < 2; sh++)
        for (int threads = 2; threads <= 3; threads++) {
            tcase c = base_case();
            c.B = shapes[sh][0]; c.T = shapes[sh][1]; c.V = shapes[sh][2]; c.mask_mode = 2; c.variant = AD_VARIANT_ALIGNDISTIL;
            uint64_t seed = g_rng;
            tdata D1, D2;
            make_data(&D1, &c);
            g_rng = seed;
            make_data(&D2, &c);
            ad_fdl_status s1, s2;
            const int r1 = ad_fdl_cpu(&D1.pb, &s1, 1), r2 = ad_fdl_cpu(&D2.pb, &s2, threads);
            char ctx[96];
            snprintf(ctx, sizeof ctx, "%s threads 1 vs %d, B %d T %d V %lld", isa, threads, (int)c.B, (int)c.T, (long long)c.V);
            g_checks++;
            if (r1 || r2) fail("status", ctx);
            if (s1.loss != s2.loss) fail("loss differs", ctx);
            if (memcmp(D1.g, D2.g, (size_t)(D1.gb * c.B) * 4) != 0) fail("grad differs", ctx);
            free_data(&D1);
            free_data(&D2);
        }
}

/* Finite differences of the reference loss against the library's gradient (small V). */
static void fd_check(const char* isa)
{
    for (int variant = 0; variant < 5; variant++) {
        tcase c = base_case();
        c.V = 7; c.B = 2; c.T = 3; c.variant = variant; c.temp = 1.3; c.ts = 0.8; c.mask_mode = 0;
        tdata D;
        make_data(&D, &c);
        ad_fdl_status st;
        if (ad_fdl_cpu(&D.pb, &st, 1) != AD_OK) { fail("fd: status", isa); free_data(&D); continue; }
        float* s = (float*)D.s;
        double worst = 0;
        for (int64_t b = 0; b < c.B; b++)
            for (int64_t t = 0; t < c.T; t++)
                for (int64_t v = 0; v < c.V; v++) {
                    const int64_t idx = b * D.sb + t * D.st + v;
                    const float orig = s[idx];
                    const double h = 1e-4;
                    double lp[2];
                    for (int k = 0; k < 2; k++) {
                        /* the reference reads the student as f32: evaluate it on a double copy instead */
                        ref_all R;
                        double* sd = xalloc(8 * (size_t)(D.sb * c.B));
                        for (int64_t i = 0; i < D.sb * c.B; i++) sd[i] = s[i];
                        sd[idx] = orig + (k ? h : -h);
                        /* 5-point stencil would be better; h small and central is enough at 1e-6 */
                        ad_fdl_problem p = D.pb;
                        /* evaluate the reference on doubles: reuse ref_problem through a f32 buffer is
                         * too coarse, so compute directly */
                        (void)p;
                        double loss = 0;
                        {
                            const int64_t V = c.V;
                            double *rs = xalloc(8 * V), *rd = xalloc(8 * V), *rr = xalloc(8 * V), *g = xalloc(8 * V), *work = xalloc(48 * V);
                            int* oov = xalloc(sizeof(int) * V);
                            for (int64_t bb = 0; bb < c.B; bb++)
                                for (int64_t tt = 0; tt < c.T; tt++) {
                                    for (int64_t vv = 0; vv < V; vv++) {
                                        rs[vv] = sd[bb * D.sb + tt * D.st + vv];
                                        rd[vv] = ((float*)D.d)[bb * D.db + tt * D.dt_ + vv];
                                        rr[vv] = ((float*)D.r)[bb * D.rb + tt * D.rt + vv];
                                    }
                                    ref_row_out o;
                                    const double rsc = (c.length_norm ? 1.0 / c.T : 1.0) / c.B;
                                    ref_row(rs, rd, rr, V, variant, c.beta, c.beta2, c.eps, c.temp, c.ts, rsc, g, work, oov, &o);
                                    loss += o.coef * o.K * rsc;
                                }
                            free(rs); free(rd); free(rr); free(g); free(work); free(oov);
                        }
                        free(sd);
                        lp[k] = loss;
                        (void)R;
                    }
                    const double fd = (lp[1] - lp[0]) / (2 * h);
                    const double got = ((float*)D.g)[b * D.gb + t * D.gt + v];
                    const double err = fabs(fd - got) / (fabs(fd) > 1e-3 ? fabs(fd) : 1e-3);
                    if (err > worst) worst = err;
                }
        char ctx[96];
        snprintf(ctx, sizeof ctx, "%s fd %s", isa, varn(variant));
        g_checks++;
        /* central differences (h = 1e-4, O(h^2) truncation) of the double reference vs the f32 kernel grad */
        if (worst > 5e-4) { char b[96]; snprintf(b, sizeof b, "fd rel err %.3g", worst); fail(b, ctx); }
        if (g_verbose) fprintf(stderr, "%s: worst fd rel err %.3g\n", ctx, worst);
        free_data(&D);
    }
}

/* Fixed cases: each variant x dtype x grad dtype, identical teachers, extreme logits, oov, V = 1, and the tvd's
 * near / direct forms. */
static void fixed_cases(const char* isa)
{
    for (int variant = 0; variant < 5; variant++)
        for (int dt = 0; dt < 3; dt++)
            for (int gd = 0; gd < 2; gd++)
                for (int thr = 1; thr <= 2; thr++) {
                    tcase c = base_case();
                    c.variant = variant; c.ds = c.dd = c.dr = dt; c.dg = gd ? dt : AD_F32;
                    c.B = 2; c.T = 9; c.V = 4099; c.mask_mode = 2; c.temp = 1.5; c.ts = 1.5; c.oov = 1;
                    run_case(&c, thr, isa);
                }
    tcase c = base_case();
    c.identical = 1; c.B = 2; c.T = 5; c.V = 129;
    for (int v = 0; v < 5; v++) { c.variant = v; run_case(&c, 1, isa); }
    c = base_case();
    c.extreme = 1; c.B = 1; c.T = 6; c.V = 50257;
    for (int v = 0; v < 5; v++) { c.variant = v; run_case(&c, 2, isa); }
    c = base_case();
    c.V = 1; c.B = 3; c.T = 4;
    for (int v = 0; v < 5; v++) { c.variant = v; run_case(&c, 2, isa); }
    c = base_case();
    c.close = 1; c.B = 1; c.T = 4; c.V = 151936; c.beta2 = 10;
    run_case(&c, 2, isa);
    c.in_place = 1; c.ds = c.dd = c.dr = c.dg = AD_BF16;
    run_case(&c, 2, isa);
    /* the tvd pass's two forms (fused_distill_loss_rows.c, AD_TVD_T = 1/4): teachers that nearly agree (every
     * |delta| far below 1/4: the polynomial for 1 - e^-|delta|, tvd ~ 1e-5 .. 1e-3 where alpha is ill-conditioned),
     * |delta| spread around 1/4 (both forms in one row), far apart (the direct difference); with and without a student
     * close to the teacher, f32 and bf16, -inf columns, and extreme rows (logits ~1e4) */
    static const double tds[] = {1e-5, 1e-3, 0.25, 2.0};
    for (int k = 0; k < 4; k++)
        for (int cl = 0; cl < 2; cl++) {
            c = base_case();
            c.tdelta = tds[k]; c.close = cl; c.B = 1; c.T = 3; c.V = k == 1 ? 151936 : 4099;
            run_case(&c, 2, isa);
            c.oov = 1; c.variant = AD_VARIANT_ADAPTIVE;
            run_case(&c, 1, isa);
            c.oov = 0; c.variant = AD_VARIANT_ALIGNDISTIL; c.ds = c.dd = c.dr = AD_BF16; c.dg = AD_F32;
            run_case(&c, 1, isa);
        }
    for (int k = 0; k < 4; k++) {
        c = base_case();
        c.extreme = 1; c.tdelta = tds[k] * 1e4; c.B = 1; c.T = 2; c.V = 50257;
        run_case(&c, 2, isa);
    }
    /* rows whose maxima grow along the row (pass 0A's rescaling of the sums, every variant), the student's maximum in
     * the partial last vector (V = 151,937 and 4099 leave 1 and 3 columns), close and nearly agreeing teachers,
     * extreme logits, and -inf columns (pass 0A hands the row to pass 0 and pass A) */
    static const int64_t rvs[] = {151937, 4099};
    for (int k = 0; k < 2; k++)
        for (int variant = 0; variant < 5; variant++)
            for (int dt = 0; dt < 2; dt++) {
                c = base_case();
                c.ramp = 1; c.variant = variant; c.V = rvs[k]; c.B = 1; c.T = 2;
                c.ds = c.dd = c.dr = dt ? AD_BF16 : AD_F32; c.dg = AD_F32;
                run_case(&c, 2, isa);
                c.close = 1; c.tdelta = 1e-3;
                run_case(&c, 1, isa);
                c.close = 0; c.tdelta = 0; c.extreme = 1;
                run_case(&c, 1, isa);
                c.extreme = 0; c.oov = 1;
                run_case(&c, 1, isa);
            }
}

/* ------------------------------------------------------------------------------------- error cases */
static void expect_error(tdata* D, int want_code, int64_t want_token, int64_t want_col, const char* ctx, int threads)
{
    ad_fdl_status st;
    const int rc = ad_fdl_cpu(&D->pb, &st, threads);
    char b[300];
    g_checks++;
    if (rc != want_code || st.code != want_code || st.token != want_token || st.column != want_col || st.loss != 0) {
        snprintf(b, sizeof b, "got rc %d code %lld token %lld col %lld loss %g; want %d token %lld col %lld", rc,
                 (long long)st.code, (long long)st.token, (long long)st.column, st.loss, want_code, (long long)want_token,
                 (long long)want_col);
        fail(b, ctx);
        return;
    }
    if (want_code == AD_ERR_INVALID_ARGUMENT) return;
    const ad_fdl_problem* p = &D->pb;
    for (int64_t f = 0; f < p->batch * p->seq; f++) {
        if (D->w[f] != 0 || D->tl[f] != 0 || (p->metrics && (D->met[3 * f] != 0 || D->met[3 * f + 1] != 0 || D->met[3 * f + 2] != 0))) {
            fail("outputs not zeroed after error", ctx);
            return;
        }
        if (p->grad == p->student) continue;
        const int64_t b = f / p->seq, t = f % p->seq;
        for (int64_t v = 0; v < p->vocab; v++)
            if (load_val(p->grad, b * p->grad_stride_b + t * p->grad_stride_t + v, (int)p->grad_dtype) != 0) {
                fail("grad not zeroed after error", ctx);
                return;
            }
    }
}

static void error_cases(const char* isa)
{
    char ctx[128];
    for (int thr = 1; thr <= 2; thr++)
        for (int dt = 0; dt < 3; dt++)
            for (int kind = 0; kind < 7; kind++) {
                tcase c = base_case();
                c.B = 2; c.T = 5; c.V = kind == 6 ? 40 : 1000 + rnd_int(200); c.ds = c.dd = c.dr = dt;
                c.dg = AD_F32; c.variant = kind == 5 ? AD_VARIANT_GKD : rnd_int(4);
                tdata D;
                make_data(&D, &c);
                const int64_t b = 1, t = 2, f = b * c.T + t;
                const int64_t col = kind == 6 ? 33 : 700 + rnd_int(250);
                const int64_t col2 = col + 13; /* a later bad column in the same row */
                int want = AD_ERR_NONFINITE;
                int64_t wcol = col;
                switch (kind) {
                case 0: /* NaN in the student */
                    store_val(D.s, b * D.sb + t * D.st + col, dt, NAN);
                    store_val(D.d, b * D.db + t * D.dt_ + col2, dt, NAN);
                    break;
                case 1: /* +inf in the dpo row */
                    store_val(D.d, b * D.db + t * D.dt_ + col, dt, INFINITY);
                    break;
                case 2: /* +inf in the second row */
                    store_val(D.r, b * D.rb + t * D.rt + col, dt, INFINITY);
                    store_val(D.s, b * D.sb + t * D.st + col2, dt, NAN);
                    break;
                case 3: /* partial -inf: student only */
                    store_val(D.s, b * D.sb + t * D.st + col, dt, -INFINITY);
                    break;
                case 4: /* partial -inf: student and dpo but not second */
                    store_val(D.s, b * D.sb + t * D.st + col, dt, -INFINITY);
                    store_val(D.d, b * D.db + t * D.dt_ + col, dt, -INFINITY);
                    if (c.variant == AD_VARIANT_GKD) want = AD_OK;
                    break;
                case 5: /* gkd: second row NaN is never read; partial -inf between s and d is an error */
                    store_val(D.r, b * D.rb + t * D.rt + col, dt, NAN);
                    store_val(D.d, b * D.db + t * D.dt_ + col2, dt, -INFINITY);
                    wcol = col2;
                    break;
                case 6: /* all -inf row */
                    for (int64_t v = 0; v < c.V; v++) {
                        store_val(D.s, b * D.sb + t * D.st + v, dt, -INFINITY);
                        store_val(D.d, b * D.db + t * D.dt_ + v, dt, -INFINITY);
                        store_val(D.r, b * D.rb + t * D.rt + v, dt, -INFINITY);
                    }
                    want = AD_ERR_EMPTY_ROW;
                    wcol = -1;
                    break;
                }
                snprintf(ctx, sizeof ctx, "%s error kind %d %s thr %d", isa, kind, dtn(dt), thr);
                if (want == AD_OK) { free_data(&D); continue; }
                expect_error(&D, want, f, wcol, ctx, thr);
                free_data(&D);
            }
    /* several bad rows, several threads: the first bad row (in flat row order) is reported, whichever worker met
     * which one first: 1200 rows in tiles of 2, bad rows 101 (late in the first worker's natural share) and 1100 */
    for (int thr = 1; thr <= 3; thr++) {
        tcase c = base_case();
        c.B = 2; c.T = 600; c.V = 200; c.mask_mode = 0; c.ds = c.dd = c.dr = AD_F32; c.dg = AD_F32;
        tdata D;
        make_data(&D, &c);
        store_val(D.s, 0 * D.sb + 101 * D.st + 17, AD_F32, NAN);
        store_val(D.d, 1 * D.db + 500 * D.dt_ + 3, AD_F32, INFINITY);
        snprintf(ctx, sizeof ctx, "%s two bad rows thr %d", isa, thr);
        expect_error(&D, AD_ERR_NONFINITE, 101, 17, ctx, thr);
        free_data(&D);
    }
    /* an unselected bad row is never read */
    {
        tcase c = base_case();
        c.B = 1; c.T = 3; c.V = 100; c.mask_mode = 1;
        tdata D;
        make_data(&D, &c);
        D.pb.mask = D.mask;
        D.mask[0] = 0; D.mask[1] = 1; D.mask[2] = 1;
        store_val(D.s, 0 * D.st + 5, AD_F32, NAN);
        ad_fdl_status st;
        g_checks++;
        if (ad_fdl_cpu(&D.pb, &st, 1) != AD_OK) fail("bad unselected row was read", isa);
        free_data(&D);
    }
    /* invalid arguments */
    for (int k = 0; k < 20; k++) {
        tcase c = base_case();
        c.B = 1; c.T = 2; c.V = 10;
        tdata D;
        make_data(&D, &c);
        ad_fdl_problem* p = &D.pb;
        switch (k) {
        case 0: p->batch = 0; break;
        case 1: p->seq = -1; break;
        case 2: p->vocab = 0; break;
        case 3: p->student = NULL; break;
        case 4: p->dpo = NULL; break;
        case 5: p->second = NULL; break;
        case 6: p->grad = NULL; break;
        case 7: p->student_dtype = 3; break;
        case 8: p->dpo_dtype = -1; break;
        case 9: p->variant = 5; break;
        case 10: p->beta = 0; break;
        case 11: p->beta2 = NAN; break;
        case 12: p->epsilon = -1e-3; break;
        case 13: p->temperature = INFINITY; break;
        case 14: p->student_temperature = 0; break;
        case 15: p->grad_dtype = AD_BF16; break; /* student is f32 */
        case 16: p->length_norm = 2; break;
        case 17: p->seq_divisor = NAN; break;
        case 18: p->grad = (void*)p->student; p->grad_stride_t = p->student_stride_t + 1; break;
        case 19: p->second_dtype = 7; break;
        }
        snprintf(ctx, sizeof ctx, "%s invalid arg %d", isa, k);
        expect_error(&D, AD_ERR_INVALID_ARGUMENT, -1, -1, ctx, 1);
        free_data(&D);
    }
    g_checks++;
    if (ad_fdl_cpu(NULL, NULL, 1) != AD_ERR_INVALID_ARGUMENT) fail("NULL problem/status", isa);
    /* gkd with second = NULL and a bogus second dtype is fine */
    {
        tcase c = base_case();
        c.variant = AD_VARIANT_GKD; c.V = 50; c.T = 3;
        tdata D;
        make_data(&D, &c);
        D.pb.second = NULL; D.pb.second_dtype = 99;
        ad_fdl_status st;
        g_checks++;
        if (ad_fdl_cpu(&D.pb, &st, 2) != AD_OK) fail("gkd with NULL second", isa);
        free_data(&D);
    }
    /* nothing selected */
    {
        tcase c = base_case();
        c.B = 2; c.T = 3; c.V = 33; c.mask_mode = 1;
        tdata D;
        make_data(&D, &c);
        memset(D.mask, 0, (size_t)(c.B * D.mb));
        ad_fdl_status st;
        g_checks++;
        if (ad_fdl_cpu(&D.pb, &st, 2) != AD_OK || st.loss != 0 || st.selected_rows != 0 || st.sequences != 0) fail("empty mask", isa);
        for (int64_t f = 0; f < 6; f++) if (D.w[f] != 0 || D.tl[f] != 0) fail("empty mask outputs", isa);
        for (int64_t i = 0; i < 6; i++) {
            const float* g = (const float*)D.g + (i / 3) * D.gb + (i % 3) * D.gt;
            for (int v = 0; v < 33; v++) if (g[v] != 0) { fail("empty mask grad", isa); i = 6; break; }
        }
        free_data(&D);
    }
}

/* ------------------------------------------------------------------------------------- conversions */
static void conversion_checks(void)
{
    /* f16 -> f32 -> f16 round trip of every half (through the library: f16 in, f16 grad is not a direct
     * conversion, so check the test helpers against each other instead; the library's conversions are
     * exercised by every f16 case above) */
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = from_f16((uint16_t)h);
        if (isnan(f)) continue;
        g_checks++;
        if (to_f16(f) != h) { fail("to_f16/from_f16 round trip", "conv"); break; }
    }
}

/* ------------------------------------------------------------------------------------- benchmark */
static int cmp_d(const void* a, const void* b)
{
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

static void bench(int reps)
{
    const int64_t V = 151936, T = 64;
    printf("benchmark: ad_fdl_cpu aligndistil, V = %lld, %lld tokens, isa %s, median of %d runs\n", (long long)V, (long long)T, ad_cpu_isa(), reps);
    for (int dt = 0; dt < 2; dt++) {
        tcase c = base_case();
        c.B = 1; c.T = (int)T; c.V = V; c.ds = c.dd = c.dr = dt; c.dg = dt;
        tdata D;
        make_data(&D, &c);
        for (int threads = 1; threads <= 2; threads++) {
            double t[64];
            ad_fdl_status st;
            ad_fdl_cpu(&D.pb, &st, threads); /* warm-up (also starts the pool) */
            for (int i = 0; i < reps; i++) {
                const double t0 = now_s();
                const int rc = ad_fdl_cpu(&D.pb, &st, threads);
                t[i] = now_s() - t0;
                if (rc) { printf("error %d\n", rc); exit(1); }
            }
            qsort(t, (size_t)reps, sizeof(double), cmp_d);
            const double med = t[reps / 2];
            printf("  %-4s in / %-4s grad, %d thread%s: %7.2f ms/call, %.3f ns/elem/thread (min %.3f)\n", dtn(dt), dtn(dt), threads,
                   threads > 1 ? "s" : " ", med * 1e3, med * 1e9 * threads / (double)(V * T), t[0] * 1e9 * threads / (double)(V * T));
        }
        free_data(&D);
    }
}

int main(int argc, char** argv)
{
    int quick = 0, do_bench = 0, reps = 9;
    uint64_t seed = 0x1234567ull;
    const char* only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--bench")) do_bench = 1;
        else if (!strcmp(argv[i], "-v")) g_verbose = 1;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else { fprintf(stderr, "usage: %s [--quick] [--seed N] [--bench [--reps N]] [--isa avx512|avx2|portable] [-v]\n", argv[0]); return 2; }
    }
    if (reps < 1) reps = 1;
    if (reps > 64) reps = 64;
    printf("aligndistil CPU selftest: abi %d, auto isa %s, %d threads\n", ad_abi_version(), ad_cpu_isa(), ad_cpu_get_threads());
    if (do_bench) {
        if (only && ad_cpu_force_isa(only) != AD_OK) { printf("isa %s not supported here\n", only); return 1; }
        bench(reps);
        return 0;
    }
    conversion_checks();
    static const char* isas[] = {"avx512", "avx2", "portable"};
    for (int k = 0; k < 3; k++) {
        if (only && strcmp(only, isas[k])) continue;
        if (ad_cpu_force_isa(isas[k]) != AD_OK) {
            printf("isa %-8s: not supported by this CPU, skipped\n", isas[k]);
            continue;
        }
        const int f0 = g_fail, c0 = g_checks;
        const double t0 = now_s();
        g_rng = seed; /* the same cases on every ISA path */
        fd_check(isas[k]);
        error_cases(isas[k]);
        thread_consistency(isas[k]);
        fixed_cases(isas[k]);
        random_cases(isas[k], quick ? 40 : 160, quick);
        printf("isa %-8s: %d checks, %d failures (%.1f s)\n", isas[k], g_checks - c0, g_fail - f0, now_s() - t0);
        /* each row design forced on this path: the automatic choice above runs only one of them for most shapes (on
         * avx512 the recomputing design for f32 rows of >= 16,384 columns, elsewhere the caching one) */
        static const char* designs[] = {"caching", "recomputing"};
        for (int di = 0; di < 2; di++) {
            const int f1 = g_fail, c1 = g_checks;
            const double t1 = now_s();
            if (ad_cpu_force_row_design(designs[di]) != AD_OK) fail("force_row_design", designs[di]);
            char ctx[64];
            snprintf(ctx, sizeof ctx, "%s/%s", isas[k], designs[di]);
            g_rng = seed ^ 0x9e3779b97f4a7c15ull;
            error_cases(ctx);
            fixed_cases(ctx);
            random_cases(ctx, 40, 1);
            printf("isa %-8s, design %-11s forced: %d checks, %d failures (%.1f s)\n", isas[k], designs[di],
                   g_checks - c1, g_fail - f1, now_s() - t1);
        }
        ad_cpu_force_row_design("auto");
    }
    ad_cpu_force_isa("auto");
    g_checks++;
    if (ad_cpu_force_isa("bogus") != AD_ERR_INVALID_ARGUMENT) fail("force_isa bogus", "api");
    g_checks++;
    if (ad_cpu_force_row_design("bogus") != AD_ERR_INVALID_ARGUMENT || strcmp(ad_cpu_row_design(), "auto") != 0)
        fail("force_row_design bogus", "api");
    printf("worst relative error, f32 inputs: loss %.3g, grad (rel L2 per row) %.3g\n", g_worst_loss_rel, g_worst_grad_rel);
    printf("%s: %d checks, %d failures\n", g_fail ? "FAILED" : "PASSED", g_checks, g_fail);
    return g_fail ? 1 : 0;
}
