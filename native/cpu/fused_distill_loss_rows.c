/*
 * fused_distill_loss_rows.c: the per-row kernel of ad_fdl_cpu. Compiled three times (see CMakeLists.txt):
 * AD_ISA_SUFFIX = portable | avx2 | avx512, defining ad_fdl_row_<suffix>.
 *
 * One selected row (s = student, d = DPO, r = second teacher), V columns. Computes alpha, coef, K = KL(p || q) and the
 * metrics of the row and writes its gradient row; runs on the calling worker thread, one row at a time. Never
 * materialises p or q. Two row designs, picked per row by ad_row_recompute (ad_cpu_force_row_design forces one):
 *
 * CACHING (avx2, portable; on avx512 16-bit rows and f32 rows below AD_RECOMPUTE_MIN_V columns): 4 exps per element.
 * Besides the grad row it overwrites the row scratch io->w (3 x (V + padding) floats per thread, from the driver):
 *   pass 0  (no exp)   row maxima m_s, m_d, m_r, row minima, and the validity check (NaN / +inf / partial -inf). The
 *                      minima decide whether the clamps below can bite; when they cannot (every column finite, no
 *                      centred value beyond the clamps) and Ts = T = 1, the passes run without clamps or scalings
 *                      (FAST): the same values bit for bit, fewer operations
 *   centred values     s' = (s - m_s)/Ts, d' = d - m_d, r' = r - m_r (all <= 0)
 *   pass A  (3 exp)    Z_s, Z_d, Z_r and U_s = sum e^s' s', U_d = sum e^s' d', U_r = sum e^s' r',
 *                      U_f = sum e^s' f with f = d' - r' computed as (d - r) - (m_d - m_r); stores e^s', e^d', e^r'
 *                      in the row scratch (rows 2, 0, 1)
 *   pass B  (0 exp)    tvd = sum |pd - pr| from the stored e^d', e^r' (aligndistil, adaptive): where the teachers are
 *                      close, |delta| = |log pd - log pr| < AD_TVD_T, as max(pd, pr) (1 - e^-|delta|) with a short
 *                      polynomial for 1 - e^-x (no range reduction: not an exp), elsewhere as |pd - pr| directly
 *                      (see the error bound there)
 *   pass C  (1 exp)    LSE* = M + log S of w = (d' + c f)/T (= z'/T), blockwise max; w is stored over e^d' (row 0)
 *   pass D  (0 exp)    g = (coef row_scale/Ts) p (s' - (w - M) - (log Z_s - log S + K)),  p = e^s' / Z_s with e^s'
 *                      stored by pass A and w by pass C in the row scratch (pass D reads s, w and e^s')
 *
 * RECOMPUTING (avx512: f32 rows of at least AD_RECOMPUTE_MIN_V columns): 7 exps per element, no row scratch (io->w is
 * not touched), four sweeps over the inputs instead of five and no scratch traffic. On a core whose L2 cannot hold the
 * three input rows and the scratch (1.8 + 1.8 MB at V = 151,936, f32) the caching design streams every pass from L3;
 * the 16-lane exps cost less than those bytes (measured: see ad_row_recompute).
 *   pass 0A (3 exp)    pass 0 and pass A in one sweep, block by block against running maxima, the f64 sums rescaled
 *                      when a maximum grows (pass0a_online); FAST rows only (Ts = T = 1, every value finite, no
 *                      clamp can bite), others take pass 0 and pass A as above (without the stores)
 *   pass B  (2 exp)    as above with e^d', e^r' recomputed: the same values bit for bit
 *   pass C  (1 exp)    as above, w kept for one block only (an L1 buffer)
 *   pass D  (1 exp)    as above with e^s' and w recomputed: the same values bit for bit
 *   Every sweep prefetches AD_PF_DIST columns ahead (the L2 streamer stops at 4 KiB pages).
 *
 * Each design and clamp mode runs in a function of its own for each dtype combination (AD_ROW_FN): compiled into one
 * body, the designs slowed each other down (see there).
 *
 * Both: the gradient's p e^s' (coef row_scale / (Ts Z_s)) has a relative error of at most the exp's 1.7e-7 plus two
 * f32 roundings (1.2e-7), with K = (U_s/Z_s - log Z_s) - ((U_d + c U_f)/(T Z_s) - LSE*). Writing the teacher as
 * d' + c (d' - r') rather than a d' + b r' avoids the cancellation of two large products when alpha is large.
 *
 * Columns that are -inf in all three rows (outside the vocabulary, and the padded lanes of the last
 * partial vector) never contribute: the centred values are clamped to a large negative finite number
 * (clamp_student / clamp_teacher from the driver), so their exps are exactly 0 and 0 * value stays 0; in
 * pass C they are set to AD_W_OUT explicitly (see there). The last partial vector always takes the clamped path. f32
 * lane sums run over blocks of AD_BLK columns and are folded lane-wise into f64 accumulators (f64 only there: the row
 * sums, and the scalars of the KL).
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include <stdint.h>
#include "fdl_cpu_internal.h"
#include "fdl_simd.h"

#ifndef AD_ISA_SUFFIX
#error "AD_ISA_SUFFIX must be defined (portable, avx2 or avx512)"
#endif
#define AD_CAT_(a, b) a##_##b
#define AD_CAT(a, b) AD_CAT_(a, b)
#define AD_ROW_ENTRY AD_CAT(ad_fdl_row, AD_ISA_SUFFIX)

#ifndef AD_PROF
#define AD_PROF(k) /* profiling hook between passes (bench builds only) */
#endif

/* Columns per f32 accumulation block: 32 vectors, so a lane adds at most 32 terms in f32 before the block
 * is folded into f64 (the rounding after one dominant term, e.g. the max column of a peaked softmax, is
 * what limits log Z and hence a small tvd). */
#define AD_BLK (32 * VW)

/* Runs the body for every vector of [B0, B1): full vectors, then one partial vector (tail_ = 1). Inside
 * the body i_ is the first column, LD(dt, base) loads, ST(dt, base, v) stores. */
#define AD_LOOP(B0, B1, ...)                                                                     \
    do {                                                                                         \
        int64_t i_ = (B0);                                                                       \
        const int64_t e_ = (B1);                                                                 \
        for (; i_ + VW <= e_; i_ += VW) {                                                        \
            const int tail_ = 0;                                                                 \
            const int64_t rem_ = VW;                                                             \
            (void)tail_; (void)rem_;                                                             \
            __VA_ARGS__                                                                          \
        }                                                                                        \
        if (i_ < e_) {                                                                           \
            const int tail_ = 1;                                                                 \
            const int64_t rem_ = e_ - i_;                                                        \
            (void)tail_; (void)rem_;                                                             \
            __VA_ARGS__                                                                          \
        }                                                                                        \
    } while (0)
#define LD(dt, base) (tail_ ? vload_tail((dt), (base), i_, rem_) : vload((dt), (base), i_))
#define ST(dt, base, v)                                                                          \
    do {                                                                                         \
        if (tail_) vstore_tail((dt), (base), i_, rem_, (v));                                     \
        else vstore((dt), (base), i_, (v));                                                      \
    } while (0)

/* pass B: 1 - e^-x for 0 <= x < AD_TVD_T as x P(x), P the Taylor polynomial of (1 - e^-x)/x to degree 5 (truncation
 * x^6/7! <= 4.8e-8 relative at x = 1/4; Horner in f32 adds about 6 roundings, 3.6e-7), so |pd - pr| = max(pd, pr)
 * (1 - e^-|delta|) keeps its relative accuracy (about 6e-7 with max(pd, pr)'s own) as delta -> 0, and identical
 * teachers give exactly 0. For |delta| >= AD_TVD_T the difference |pd - pr| is taken directly from the stored
 * exps: each of pd, pr carries at most the exp's 1.7e-7 plus 3 roundings (1.8e-7), so the absolute error is at most
 * (pd + pr) 3.5e-7 <= |pd - pr| (1 + e^-T)/(1 - e^-T) 3.5e-7 = 3.2e-6 |pd - pr| at T = 1/4. Bound on the tvd: relative
 * error 3.2e-6 at most (before the Z_d, Z_r sums' own rounding, as before); the former exp + expm1 form had about
 * 3e-7. alpha inherits it: 3.2e-6 relative, under the 1e-5 the tests allow. */
/* rows of at least this many columns write their gradient with non-temporal stores (pass D) */
#ifndef AD_NT_MIN_V
#define AD_NT_MIN_V 32768
#endif

#define AD_TVD_T  0.25f
#define AD_TVD_P0 1.0f
#define AD_TVD_P1 (-0.5f)
#define AD_TVD_P2 0x1.555556p-3f   /* 1/6 */
#define AD_TVD_P3 (-0x1.555556p-5f) /* -1/24 */
#define AD_TVD_P4 0x1.111112p-7f   /* 1/120 */
#define AD_TVD_P5 (-0x1.6c16c2p-10f) /* -1/720 */

typedef struct {
    float m_s, m_d, m_r;
} ad_row_max;

/* pass A's sums: Z_x = sum e^x', U_x = sum e^s' x' (x = s, d, r), U_f = sum e^s' f */
typedef struct {
    double Zs, Zd, Zr, Us, Ud, Ur, Uf;
} ad_row_sums;

/* The centred values of one vector, from names in scope in the passes: CLAMP (the row's clamped path), tail_ (from
 * AD_LOOP), and the constants vms, vmd, vmr, vits, vcls, vclt, vclt_pos, vcm (= m_d - m_r in f32). */
/* CL: this vector takes the clamped path (CLAMP, or the partial last vector, whose missing lanes read -inf) */
#define CL (CLAMP || tail_)
/* (-inf) - (-inf) = NaN outside the vocabulary: vmax(NaN, c) = c keeps it finite there */
#define AD_DIFF(d, r) (CL ? vmin(vmax(vsub(vsub((d), (r)), vcm), vclt), vclt_pos) : vsub(vsub((d), (r)), vcm))
#define AD_SP(s) (CL ? vmax(vmul(vsub((s), vms), vits), vcls) : vsub((s), vms))
#define AD_TP(x, vm) (CL ? vmax(vsub((x), (vm)), vclt) : vsub((x), (vm)))

/* software prefetch, compile-time knobs: AD_PF_DIST elements ahead (default one block), AD_PF_HINT the locality hint
 * (3 = T0, all cache levels; T1/T2 and longer distances measured no better at 512 tokens on the Emerald Rapids box, within
 * noise), AD_PF_PASSES 0 turns it off (profiling) */
#ifndef AD_PF_DIST
#define AD_PF_DIST AD_BLK
#endif
#ifndef AD_PF_HINT
#define AD_PF_HINT 3
#endif
#ifndef AD_PF_PASSES
#define AD_PF_PASSES 1
#endif
/* one prefetch per 64-byte line: a vector of fewer bytes (16-bit rows, 8-lane f32) requests every 64 / its bytes-th */
AD_INL void ad_prefetch(const int dt, const void* base, const int64_t i)
{
    const int64_t es = dt == AD_F32 ? 4 : 2;
    if (VW * es >= 64 || ((i * es) & 63) == 0) __builtin_prefetch((const char*)base + i * es, 0, AD_PF_HINT);
}

/* The row design (the comment at the top), when none is forced: RECOMPUTING on the avx512 path for f32 rows of at least
 * AD_RECOMPUTE_MIN_V columns (16-bit rows from AD_RECOMPUTE_MIN_V16, by default never); CACHING elsewhere. Measured on
 * the 2-core Xeon family 6 model 207 of issue 15 (2 MiB L2, 260 MiB L3), the library timed by benchmarks/cloop with
 * AD_CPU_ROW_DESIGN forced, thread CPU time, 64 rows, medians (benchmarks/results/row-design-sweep-*.md): avx512 f32
 * recomputing 2.04 ns/element against caching 3.11 at V = 151,936 (the caching design's three input rows and three
 * scratch rows, 3.6 MB, stream from L3 in every pass), 1.91 against 2.19 at 65,536, 1.79 against 1.88 at 16,384;
 * avx512 bf16 caching 2.05 against 2.07 at 151,936 and 1.84 against 2.11 at 16,384 (the widening in every sweep of the
 * recomputing design takes the shuffle port that the exps' fmas share); avx2 (8 lanes: the exps cost twice as much)
 * caching is faster up to 65,536 columns (2.92 against 3.26) and level with it from 100,000 to 151,936 (3.18-3.58 against
 * 3.17-3.55), f32 and bf16 alike. */
#ifndef AD_RECOMPUTE_MIN_V
#define AD_RECOMPUTE_MIN_V 16384
#endif
#ifndef AD_RECOMPUTE_MIN_V16
#define AD_RECOMPUTE_MIN_V16 INT64_MAX
#endif
AD_INL int ad_row_recompute(const ad_row_params* P, const int ds)
{
    if (P->design != AD_ROW_DESIGN_AUTO) return P->design == AD_ROW_DESIGN_RECOMPUTING; /* ad_cpu_force_row_design */
#if defined(AD_ISA_AVX512)
    return P->vocab >= (ds == AD_F32 ? (int64_t)AD_RECOMPUTE_MIN_V : (int64_t)AD_RECOMPUTE_MIN_V16);
#else
    (void)ds;
    return 0;
#endif
}

/* pass 0's clamp test: 1 when a clamp of the passes can bite, given the row's maxima and minima (n_*) */
AD_INL int clamps_bite(const ad_row_params* P, const int USE_R, const ad_row_max* mx, float n_s, float n_d, float n_r)
{
    const float cls = P->clamp_student, clt = P->clamp_teacher, cm = mx->m_d - mx->m_r;
    int c = P->inv_ts != 1.0 || P->temperature != 1.0;
    c = c || !((n_s - mx->m_s) >= -cls) || !((n_d - mx->m_d) >= -clt);
    if (USE_R) c = c || !((n_r - mx->m_r) >= -clt) || !(((mx->m_d - n_r) - cm) <= clt) || !(((n_d - mx->m_r) - cm) >= -clt);
    return c;
}

/* pass 0: maxima, minima and validity. Returns AD_OK and sets *mx and *clamp (1 when a clamp can bite), or an error. */
AD_INL int pass0(const ad_row_params* P, ad_row_io* io, const int DS, const int DD, const int DR, const int USE_R,
                 ad_row_max* mx, int* clamp)
{
    const int64_t V = P->vocab;
    const void* const S = io->s;
    const void* const D = io->d;
    const void* const R = io->r;
    VF ms = vset(-INFINITY), md = ms, mr = ms;
    VF ns = vset(INFINITY), nd = ns, nr = ns;
    int any_bad = 0;
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        const VF z0 = vzero();
        VF probe = vzero(); /* stays 0 while every value is finite, NaN otherwise */
        int tail_bad = 0;   /* the partial last vector (its missing lanes read -inf) is checked on its own */
        AD_LOOP(b0, b1, {
            const VF s = LD(DS, S);
            const VF d = LD(DD, D);
            ms = vmax(ms, s);
            md = vmax(md, d);
            VF t = vfma(d, z0, vmul(s, z0));
            if (!tail_) { ns = vmin(ns, s); nd = vmin(nd, d); } /* minima: full vectors (the tail is always clamped) */
            if (USE_R) {
                const VF r = LD(DR, R);
                mr = vmax(mr, r);
                if (!tail_) nr = vmin(nr, r);
                t = vfma(r, z0, t);
            }
            if (tail_) tail_bad = vbadbits(s, d, USE_R ? LD(DR, R) : s) != 0;
            else probe = vadd(probe, t);
        });
        if (tail_bad || vany_nan(probe)) { /* some value is not finite: -inf everywhere in a column is fine */
            any_bad = 1;
            AD_LOOP(b0, b1, {
                const VF s = LD(DS, S);
                const VF d = LD(DD, D);
                const VF r = USE_R ? LD(DR, R) : s;
                const unsigned bad = vbadbits(s, d, r);
                if (bad) {
                    io->bad_column = i_ + __builtin_ctz(bad);
                    return AD_ERR_NONFINITE;
                }
            });
        }
    }
    mx->m_s = vhmax(ms);
    mx->m_d = vhmax(md);
    mx->m_r = USE_R ? vhmax(mr) : 0.0f;
    if (mx->m_d == -INFINITY) return AD_ERR_EMPTY_ROW; /* every column -inf (checked consistent above) */
    /* The clamps of the passes below are max / min with constants after f32 operations that are monotonic in each
     * input, so they cannot bite when they do not bite at the row's extreme values: then the FAST passes compute the
     * same values. A -inf column (any_bad here: the probe saw one) always takes the clamped path. */
    const float n_s = -vhmax(vsub(vzero(), ns)), n_d = -vhmax(vsub(vzero(), nd)), n_r = USE_R ? -vhmax(vsub(vzero(), nr)) : 0.0f;
    *clamp = any_bad || clamps_bite(P, USE_R, mx, n_s, n_d, n_r);
    return AD_OK;
}

/* pass 0A (recomputing design, Ts = T = 1): pass 0 and pass A in one sweep, block by block. Each block is read from
 * memory once for its maxima, minima and the validity probe, then from L1 (3 x AD_BLK columns, 6 KiB with f32) for
 * its exps, taken against the running maxima, which include the block, so every exp is of a value <= 0. When a
 * maximum grows by -a (a = old - new) the f64 sums move with it: Z_x <- e^a_x Z_x, and U_s, U_d, U_r, U_f <-
 * e^a_s (U + a Z_s) with a the shift of that term's own centring (for U_f the shift of m_d - m_r, as the f32 value
 * the passes use). Returns 1, with nothing written, when the row is not FAST: a value that is not finite (a -inf
 * column included), or a clamp that could bite against the final maxima (the minima of the partial last vector leave
 * out its -inf lanes); the caller then takes pass 0 and pass A. */
AD_INL int pass0a_online(const ad_row_params* P, ad_row_io* io, const int DS, const int DD, const int DR,
                         const int USE_R, ad_row_max* mx, ad_row_sums* o)
{
    const int64_t V = P->vocab;
    const void* const S = io->s;
    const void* const D = io->d;
    const void* const R = io->r;
    const int CLAMP = 0;
    const VF vits = vset(1.0f), vcls = vset(-P->clamp_student);
    const VF vclt = vset(-P->clamp_teacher), vclt_pos = vset(P->clamp_teacher);
    const VF vlow = vset(-FLT_MAX), vpinf = vset(INFINITY);
    float ms = -INFINITY, md = -INFINITY, mr = USE_R ? -INFINITY : 0.0f, cmf = 0.0f;
    VF ns = vset(INFINITY), nd = ns, nr = ns;
    double Zs = 0.0, Zd = 0.0, Zr = 0.0, Us = 0.0, Ud = 0.0, Ur = 0.0, Uf = 0.0;
    /* 16-bit rows: the first sweep of a block keeps the widened values (L1) for the second, which then converts
     * nothing (the widening takes the shuffle port the exps' fmas also use) */
    const int BUF = DS != AD_F32 || DD != AD_F32 || (USE_R && DR != AD_F32);
    float wide[3][AD_BLK + AD_ROW_PAD] __attribute__((aligned(64)));
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        const VF z0 = vzero();
        VF bs = vset(-INFINITY), bd = bs, br = bs;
        VF probe = vzero(); /* stays 0 while every value is finite, NaN otherwise */
        int tail_bad = 0;
        AD_LOOP(b0, b1, {
            VF s = LD(DS, S);
            VF d = LD(DD, D);
            VF r = USE_R ? LD(DR, R) : s;
            if (BUF) {
                vstore(AD_F32, wide[0], i_ - b0, s);
                vstore(AD_F32, wide[1], i_ - b0, d);
                if (USE_R) vstore(AD_F32, wide[2], i_ - b0, r);
            }
            bs = vmax(bs, s);
            bd = vmax(bd, d);
            if (USE_R) br = vmax(br, r);
            if (tail_) {
                tail_bad = vbadbits(s, d, r) != 0;
                /* the minima leave out the -inf lanes (past the end of the row, or -inf in all three rows) */
                s = vsel_lt(s, vlow, vpinf, s);
                d = vsel_lt(d, vlow, vpinf, d);
                r = vsel_lt(r, vlow, vpinf, r);
            } else {
                VF t = vfma(d, z0, vmul(s, z0));
                if (USE_R) t = vfma(r, z0, t);
                probe = vadd(probe, t);
            }
            ns = vmin(ns, s);
            nd = vmin(nd, d);
            if (USE_R) nr = vmin(nr, r);
        });
        if (tail_bad || vany_nan(probe)) return 1;
        const float hs = vhmax(bs), hd = vhmax(bd), hr = USE_R ? vhmax(br) : 0.0f;
        const float ms1 = hs > ms ? hs : ms, md1 = hd > md ? hd : md, mr1 = hr > mr ? hr : mr;
        if (!(md1 > -INFINITY) || !(ms1 > -INFINITY) || !(mr1 > -INFINITY)) return 1; /* -inf tail lanes only */
        const float cm1 = md1 - mr1;
        if (b0 > 0 && (ms1 != ms || md1 != md || mr1 != mr)) {
            const double as = (double)ms - ms1, ad = (double)md - md1, ar = (double)mr - mr1;
            const double af = (double)cmf - cm1, es = exp(as);
            Us = es * (Us + as * Zs);
            Ud = es * (Ud + ad * Zs);
            Ur = es * (Ur + ar * Zs);
            Uf = es * (Uf + af * Zs);
            Zs *= es;
            Zd *= exp(ad);
            Zr *= exp(ar);
        }
        ms = ms1; md = md1; mr = mr1; cmf = cm1;
        const VF vms = vset(ms), vmd = vset(md), vmr = vset(mr), vcm = vset(cmf);
        VF zs = vzero(), zd = vzero(), zr = vzero(), us = vzero(), ud = vzero(), ur = vzero(), uf = vzero();
        AD_LOOP(b0, b1, {
            /* the next block's lines, while this one's exps run (one request per vector and row: a line, or half
             * a line for 16-bit rows; past the row's end a prefetch does nothing) */
            ad_prefetch(DS, S, i_ + AD_PF_DIST);
            ad_prefetch(DD, D, i_ + AD_PF_DIST);
            if (USE_R) ad_prefetch(DR, R, i_ + AD_PF_DIST);
            const VF sp = AD_SP(BUF ? vload(AD_F32, wide[0], i_ - b0) : LD(DS, S));
            const VF d = BUF ? vload(AD_F32, wide[1], i_ - b0) : LD(DD, D);
            const VF dp = AD_TP(d, vmd);
            const VF es = vexp(sp);
            const VF ed = vexp(dp);
            zs = vadd(zs, es);
            zd = vadd(zd, ed);
            us = vfma(es, sp, us);
            ud = vfma(es, dp, ud);
            if (USE_R) {
                const VF r = BUF ? vload(AD_F32, wide[2], i_ - b0) : LD(DR, R);
                const VF rp = AD_TP(r, vmr);
                const VF er = vexp(rp);
                zr = vadd(zr, er);
                ur = vfma(es, rp, ur);
                uf = vfma(es, AD_DIFF(d, r), uf);
            }
            AD_KEEP(zs); AD_KEEP(zd); AD_KEEP(us); AD_KEEP(ud);
            if (USE_R) { AD_KEEP(zr); AD_KEEP(ur); AD_KEEP(uf); }
        });
        DACC t;
        t = dacc_zero(); dacc_add(&t, zs); Zs += dacc_sum(t);
        t = dacc_zero(); dacc_add(&t, zd); Zd += dacc_sum(t);
        t = dacc_zero(); dacc_add(&t, us); Us += dacc_sum(t);
        t = dacc_zero(); dacc_add(&t, ud); Ud += dacc_sum(t);
        if (USE_R) {
            t = dacc_zero(); dacc_add(&t, zr); Zr += dacc_sum(t);
            t = dacc_zero(); dacc_add(&t, ur); Ur += dacc_sum(t);
            t = dacc_zero(); dacc_add(&t, uf); Uf += dacc_sum(t);
        }
    }
    mx->m_s = ms;
    mx->m_d = md;
    mx->m_r = mr;
    const float n_s = -vhmax(vsub(vzero(), ns)), n_d = -vhmax(vsub(vzero(), nd)), n_r = USE_R ? -vhmax(vsub(vzero(), nr)) : 0.0f;
    if (clamps_bite(P, USE_R, mx, n_s, n_d, n_r)) return 1;
    o->Zs = Zs; o->Zd = Zd; o->Zr = USE_R ? Zr : 1.0;
    o->Us = Us; o->Ud = Ud; o->Ur = Ur; o->Uf = Uf;
    return 0;
}

AD_INL int row_passes(const ad_row_params* P, ad_row_io* io, const int DS, const int DD, const int DR,
                      const int DG, const int USE_R, const int CLAMP, const int RECOMP, const ad_row_max* mx,
                      const ad_row_sums* pre)
{
    const int64_t V = P->vocab;
    const void* const S = io->s;
    const void* const D = io->d;
    const void* const R = io->r;
    const float m_s = mx->m_s, m_d = mx->m_d, m_r = mx->m_r;

    const VF vms = vset(m_s), vmd = vset(m_d), vmr = vset(m_r);
    const VF vits = vset((float)P->inv_ts);
    const VF vcls = vset(-P->clamp_student), vclt = vset(-P->clamp_teacher), vclt_pos = vset(P->clamp_teacher);
    /* diff = d' - r' = (d - r) - (m_d - m_r): d - r is exact when the teachers are close */
    const VF vcm = vset(m_d - m_r);

    const int64_t RS = ad_row_scratch_stride(V);
    float* const W = io->w;            /* row 0: e^d' (pass A), then w (pass C) */
    float* const ER = io->w + RS;      /* row 1: e^r' */
    float* const E = io->w + 2 * RS;   /* row 2: e^s', for pass D */
    float* const ED = W;

    AD_PROF(1);
    /* ------------------------------------------------------------ pass A: partition functions, U sums */
    ad_row_sums sm;
    if (pre != NULL) {
        sm = *pre; /* pass 0A took them */
    } else {
        DACC aZs = dacc_zero(), aZd = dacc_zero(), aZr = dacc_zero();
        DACC aUs = dacc_zero(), aUd = dacc_zero(), aUr = dacc_zero(), aUf = dacc_zero();
        for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
            const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
            VF zs = vzero(), zd = vzero(), zr = vzero(), us = vzero(), ud = vzero(), ur = vzero(), uf = vzero();
            AD_LOOP(b0, b1, {
                const VF sp = AD_SP(LD(DS, S));
                const VF d = LD(DD, D);
                const VF dp = AD_TP(d, vmd);
                const VF es = vexp(sp);
                if (!RECOMP) vstore(AD_F32, E, i_, es); /* pass D's p = e^s' / Z_s (a partial last vector fills the padding) */
                const VF ed = vexp(dp);
                zs = vadd(zs, es);
                zd = vadd(zd, ed);
                us = vfma(es, sp, us);
                ud = vfma(es, dp, ud);
                if (USE_R) {
                    if (!RECOMP) vstore(AD_F32, ED, i_, ed); /* pass B's pd */
                    const VF r = LD(DR, R);
                    const VF rp = AD_TP(r, vmr);
                    const VF er = vexp(rp);
                    if (!RECOMP) vstore(AD_F32, ER, i_, er); /* pass B's pr */
                    zr = vadd(zr, er);
                    ur = vfma(es, rp, ur);
                    uf = vfma(es, AD_DIFF(d, r), uf);
                }
                AD_KEEP(zs); AD_KEEP(zd); AD_KEEP(us); AD_KEEP(ud);
                if (USE_R) { AD_KEEP(zr); AD_KEEP(ur); AD_KEEP(uf); }
            });
            dacc_add(&aZs, zs); dacc_add(&aZd, zd); dacc_add(&aUs, us); dacc_add(&aUd, ud);
            if (USE_R) { dacc_add(&aZr, zr); dacc_add(&aUr, ur); dacc_add(&aUf, uf); }
        }
        sm.Zs = dacc_sum(aZs); sm.Zd = dacc_sum(aZd); sm.Us = dacc_sum(aUs); sm.Ud = dacc_sum(aUd);
        sm.Zr = USE_R ? dacc_sum(aZr) : 1.0; sm.Ur = USE_R ? dacc_sum(aUr) : 0.0; sm.Uf = USE_R ? dacc_sum(aUf) : 0.0;
    }
    const double Zs = sm.Zs, Zd = sm.Zd, Us = sm.Us, Ud = sm.Ud, Zr = sm.Zr, Ur = sm.Ur, Uf = sm.Uf;
    const double lZd = log(Zd), lZr = log(Zr);

    AD_PROF(2);
    /* ------------------------------------------------------------ weight alpha (pass B when adaptive) */
    const int variant = P->variant;
    double alpha;
    if (variant == AD_VARIANT_ALIGNDISTIL || variant == AD_VARIANT_ADAPTIVE) {
        /* pd = e^d' / Z_d and pr = e^r' / Z_r from pass A's stored exps (no exp here); see AD_TVD_T for the two forms
         * and the error bound. delta = ((d - r) - (m_d - m_r)) - (log Z_d - log Z_r): two constants, so that the small
         * second one keeps its digits when the maxima are far apart. Outside the vocabulary delta is NaN and the
         * direct form is taken (pd = pr = 0 there). */
        const VF via = vset((float)(1.0 / Zd)), vib = vset((float)(1.0 / Zr));
        const VF vclz = vset((float)(lZd - lZr));
        const VF vT = vset(AD_TVD_T);
        DACC aT = dacc_zero();
        for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
            const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
            VF tv = vzero();
            AD_LOOP(b0, b1, {
                if (RECOMP && AD_PF_PASSES) { ad_prefetch(DD, D, i_ + AD_PF_DIST); ad_prefetch(DR, R, i_ + AD_PF_DIST); }
                const VF dl = LD(DD, D), rl = LD(DR, R);
                /* e^d', e^r': pass A's values bit for bit, stored (scratch rows: whole vectors, padded) or recomputed */
                const VF pd = vmul(RECOMP ? vexp(AD_TP(dl, vmd)) : vload(AD_F32, ED, i_), via);
                const VF pr = vmul(RECOMP ? vexp(AD_TP(rl, vmr)) : vload(AD_F32, ER, i_), vib);
                const VF direct = vabs(vsub(pd, pr));
                const VF x = vabs(vsub(vsub(vsub(dl, rl), vcm), vclz));
                VF q = vfma(vset(AD_TVD_P5), x, vset(AD_TVD_P4));
                q = vfma(q, x, vset(AD_TVD_P3));
                q = vfma(q, x, vset(AD_TVD_P2));
                q = vfma(q, x, vset(AD_TVD_P1));
                q = vfma(q, x, vset(AD_TVD_P0));
                const VF near = vmul(vmax(pd, pr), vmul(q, x));
                tv = vadd(tv, vsel_lt(x, vT, near, direct));
                AD_KEEP(tv);
            });
            dacc_add(&aT, tv);
        }
        alpha = P->beta2 * dacc_sum(aT) + P->epsilon;
    } else if (variant == AD_VARIANT_GKD) {
        alpha = 1.0;
    } else {
        alpha = P->beta / P->beta2;
    }
    /* teacher logits over T: w = (d' + c (d' - r')) / T, c = alpha (aligndistil, contrast), alpha - 1
     * (adaptive, theorem1: alpha d' + (1 - alpha) r'), 0 (gkd). Coefficients are rounded once to f32 and
     * E_p[w] below uses the same ones. */
    double cdiff, coef;
    switch (variant) {
    case AD_VARIANT_ALIGNDISTIL: cdiff = alpha; coef = P->beta / alpha; break;
    case AD_VARIANT_CONTRAST:    cdiff = alpha; coef = P->beta2; break;
    case AD_VARIANT_ADAPTIVE:    cdiff = alpha - 1.0; coef = P->beta / alpha; break;
    case AD_VARIANT_THEOREM1:    cdiff = alpha - 1.0; coef = P->beta2; break;
    default:                     cdiff = 0.0; coef = 1.0; break; /* gkd */
    }
    const double T = P->temperature;
    const float it_f = (float)(1.0 / T), ct_f = (float)(cdiff / T);
    const VF viT = vset(it_f), vcT = vset(ct_f);

    AD_PROF(3);
    /* ------------------------------------------------------------ pass C: LSE* = M + log S of w */
    /* w is stored into the row scratch (over e^d', which pass B was the last to read; pass D reads it back instead of
     * recomputing it from d and r); columns outside the vocabulary hold AD_W_OUT, a finite stand-in for -inf (exp gives
     * 0 as for -inf, and pass D's u = s' - (w - M) stays finite where p = 0). FAST (T = 1): w = d' + c f, the same
     * value as d' 1 + c f. */
    double M = -INFINITY, Ssum = 0.0;
    {
        float wblk[AD_BLK + AD_ROW_PAD] __attribute__((aligned(64)));
        for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
            const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
            VF wm = vset(-INFINITY);
            /* RECOMP: the block's w only, in an L1 buffer (pass D recomputes w) */
            float* const WB = RECOMP ? wblk : W + b0;
            AD_LOOP(b0, b1, {
                if (RECOMP && AD_PF_PASSES) { ad_prefetch(DD, D, i_ + AD_PF_DIST); if (USE_R) ad_prefetch(DR, R, i_ + AD_PF_DIST); }
                const VF d = LD(DD, D);
                VF w = AD_TP(d, vmd);
                if (CL) w = vmul(w, viT);
                if (USE_R) w = vfma(AD_DIFF(d, LD(DR, R)), vcT, w);
                if (CL) w = vsel_out(vis_ninf(d), w); /* outside the vocabulary */
                vstore(AD_F32, WB, i_ - b0, w); /* a partial last vector fills the scratch's padding */
                wm = vmax(wm, w);
            });
            const float bm = vhmax(wm);
            if (bm <= AD_W_OUT) continue; /* block entirely outside the vocabulary */
            if (bm > M) {
                Ssum *= exp(M - bm);
                M = bm;
            }
            const VF vM = vset((float)M);
            VF acc = vzero();
            const int64_t nb = b1 - b0;
            for (int64_t k = 0; k < nb; k += VW) acc = vadd(acc, vexp(vsub(vload(AD_F32, WB, k), vM)));
            DACC t = dacc_zero();
            dacc_add(&t, acc);
            Ssum += dacc_sum(t);
        }
    }
    const double logS = log(Ssum);

    /* ------------------------------------------------------------ scalars */
    const double logZs = log(Zs);
    const double Es = Us / Zs;                                   /* E_p[s'] */
    const double Ew = ((double)it_f * Ud + (double)ct_f * Uf) / Zs; /* E_p[w] */
    const double K = (Es - logZs) - ((Ew - M) - logS); /* used by the gradient */

    io->alpha = alpha;
    io->coef = coef;
    if (P->want_metrics) {
        const double Ed = Ud / Zs, Er = Ur / Zs;
        if (USE_R) {
            io->metrics[0] = P->beta * ((Ed - lZd) - (Er - lZr));
            io->metrics[2] = (Es - logZs) - (Er - lZr);
        } else {
            io->metrics[0] = 0.0; /* gkd: no second row */
            io->metrics[2] = 0.0;
        }
        io->metrics[1] = (Es - logZs) - (Ed - lZd);
    }

    AD_PROF(4);
    /* ------------------------------------------------------------ pass D: gradient */
    /* log p - log q - K = u - c0 with u = s' - (w - M) and c0 = log Z_s - log S + K: every term is small
     * where p matters. Pass D also sums p u and p: the reported K is the direct sum
     * sum p (log p - log q) = sum p u - (log Z_s - log S) sum p over the very values the gradient used
     * (the estimate above differs from it by rounding only: an f32 ulp of w weighted by p). */
    const double cg = coef * io->row_scale * P->inv_ts;
    /* p = e^s' / Z_s enters the gradient as e^s' times the single constant cg / Z_s, and the sums as e^s' (divided by
     * Z_s in f64 below), so no f32 rounding of 1 / Z_s scales them */
    const VF vc0 = vset((float)(logZs - logS + K)), vcgz = vset((float)(cg / Zs));
    const VF vM = vset((float)M);
    void* const G = io->g;
    /* Large rows: the grad row goes to memory with non-temporal stores (nothing here reads it again), so it neither
     * reads its lines first nor evicts the rows and scratch the passes re-read from L2. Needs whole vectors aligned. */
    const size_t gsz = DG == AD_F32 ? 4u : 2u;
    const int nt = V >= AD_NT_MIN_V && ((uintptr_t)G % (VW * gsz)) == 0;
    DACC aPU = dacc_zero(), aP = dacc_zero();
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        VF pu = vzero(), pt = vzero();
        AD_LOOP(b0, b1, {
            const VF sp = AD_SP(LD(DS, S));
            VF w, e;
            if (RECOMP) { /* pass C's w and pass A's e^s', bit for bit, from the inputs */
                if (AD_PF_PASSES) {
                    ad_prefetch(DS, S, i_ + AD_PF_DIST);
                    ad_prefetch(DD, D, i_ + AD_PF_DIST);
                    if (USE_R) ad_prefetch(DR, R, i_ + AD_PF_DIST);
                }
                const VF d = LD(DD, D);
                w = AD_TP(d, vmd);
                if (CL) w = vmul(w, viT);
                if (USE_R) w = vfma(AD_DIFF(d, LD(DR, R)), vcT, w);
                if (CL) w = vsel_out(vis_ninf(d), w);
                e = vexp(sp);
            } else {
                w = vload(AD_F32, W, i_); /* pass C's values, bit for bit (padded: whole vectors) */
                e = vload(AD_F32, E, i_); /* e^s' from pass A */
            }
            const VF u = vsub(sp, vsub(w, vM));
            pu = vfma(e, u, pu);
            pt = vadd(pt, e);
            AD_KEEP(pu); AD_KEEP(pt);
            const VF gv = vmul(vmul(e, vcgz), vsub(u, vc0));
            if (nt && !tail_) vstream(DG, G, i_, gv);
            else ST(DG, G, gv);
        });
        dacc_add(&aPU, pu);
        dacc_add(&aP, pt);
    }
    if (nt) vstream_fence();
    double Kd = (dacc_sum(aPU) - (logZs - logS) * dacc_sum(aP)) / Zs;
    if (Kd < 0.0 && Kd > -1e-12) Kd = 0.0; /* rounding noise of an exact zero; larger negatives are kept */
    io->kl = Kd;
    AD_PROF(5);
    return AD_OK;
}

/* The passes of one row design and clamp mode, for one dtype combination: a function of its own (noinline). Inlined
 * into one body with the other designs, gcc's register allocation and scheduling got worse for all of them (measured:
 * the caching passes at V = 16,384 took 1.4x the time with the recomputing instances in the same function, f32, avx512,
 * Emerald Rapids) */
typedef int (*ad_passes_fn)(const ad_row_params* P, ad_row_io* io, const ad_row_max* mx, const ad_row_sums* pre);
typedef int (*ad_pass0a_fn)(const ad_row_params* P, ad_row_io* io, ad_row_max* mx, ad_row_sums* sm);

AD_INL int row_impl(const ad_row_params* P, ad_row_io* io, const int DS, const int DD, const int DR, const int USE_R,
                    const ad_pass0a_fn p0a, const ad_passes_fn cache_fast, const ad_passes_fn cache_clamp,
                    const ad_passes_fn recomp_fast, const ad_passes_fn recomp_clamp)
{
    AD_PROF(0);
    ad_row_max mx;
    const int recomp = ad_row_recompute(P, DS);
    if (recomp && P->inv_ts == 1.0 && P->temperature == 1.0) {
        /* ------------------------------------------------------------ pass 0A: maxima, validity, Z and U sums */
        ad_row_sums sm;
        if (p0a(P, io, &mx, &sm) == 0) {
            AD_PROF(1);
            return recomp_fast(P, io, &mx, &sm);
        }
    }
    /* ------------------------------------------------------------ pass 0: maxima + validity */
    int clamp = 1;
    const int rc = pass0(P, io, DS, DD, DR, USE_R, &mx, &clamp);
    if (rc != AD_OK) return rc;
    if (clamp) return recomp ? recomp_clamp(P, io, &mx, NULL) : cache_clamp(P, io, &mx, NULL);
    return recomp ? recomp_fast(P, io, &mx, NULL) : cache_fast(P, io, &mx, NULL);
}

/* One row entry NAME for the dtypes DS, DD, DR, DG (constants, or P's fields for the generic instance) and USE_R, with
 * its pass 0A and its four pass sets (design x clamp mode) as separate functions. */
#define AD_ROW_FN(NAME, DS, DD, DR, DG, USE_R)                                                                         \
    __attribute__((noinline)) static int NAME##_0a(const ad_row_params* P, ad_row_io* io, ad_row_max* mx,              \
                                                   ad_row_sums* sm)                                                    \
    { return pass0a_online(P, io, DS, DD, DR, USE_R, mx, sm); }                                                        \
    __attribute__((noinline)) static int NAME##_cf(const ad_row_params* P, ad_row_io* io, const ad_row_max* mx,        \
                                                   const ad_row_sums* pre)                                             \
    { return row_passes(P, io, DS, DD, DR, DG, USE_R, 0, 0, mx, pre); }                                                \
    __attribute__((noinline)) static int NAME##_cc(const ad_row_params* P, ad_row_io* io, const ad_row_max* mx,        \
                                                   const ad_row_sums* pre)                                             \
    { return row_passes(P, io, DS, DD, DR, DG, USE_R, 1, 0, mx, pre); }                                                \
    __attribute__((noinline)) static int NAME##_rf(const ad_row_params* P, ad_row_io* io, const ad_row_max* mx,        \
                                                   const ad_row_sums* pre)                                             \
    { return row_passes(P, io, DS, DD, DR, DG, USE_R, 0, 1, mx, pre); }                                                \
    __attribute__((noinline)) static int NAME##_rc(const ad_row_params* P, ad_row_io* io, const ad_row_max* mx,        \
                                                   const ad_row_sums* pre)                                             \
    { return row_passes(P, io, DS, DD, DR, DG, USE_R, 1, 1, mx, pre); }                                                \
    __attribute__((noinline)) static int NAME(const ad_row_params* P, ad_row_io* io)                                   \
    { return row_impl(P, io, DS, DD, DR, USE_R, NAME##_0a, NAME##_cf, NAME##_cc, NAME##_rf, NAME##_rc); }

/* the uniform dtype combinations the entry dispatches to, with and without the second teacher */
AD_ROW_FN(row_f32_f32_r1, AD_F32, AD_F32, AD_F32, AD_F32, 1)
AD_ROW_FN(row_f32_f32_r0, AD_F32, AD_F32, AD_F32, AD_F32, 0)
AD_ROW_FN(row_bf16_bf16_r1, AD_BF16, AD_BF16, AD_BF16, AD_BF16, 1)
AD_ROW_FN(row_bf16_bf16_r0, AD_BF16, AD_BF16, AD_BF16, AD_BF16, 0)
AD_ROW_FN(row_bf16_f32_r1, AD_BF16, AD_BF16, AD_BF16, AD_F32, 1)
AD_ROW_FN(row_bf16_f32_r0, AD_BF16, AD_BF16, AD_BF16, AD_F32, 0)
AD_ROW_FN(row_f16_f16_r1, AD_F16, AD_F16, AD_F16, AD_F16, 1)
AD_ROW_FN(row_f16_f16_r0, AD_F16, AD_F16, AD_F16, AD_F16, 0)
AD_ROW_FN(row_f16_f32_r1, AD_F16, AD_F16, AD_F16, AD_F32, 1)
AD_ROW_FN(row_f16_f32_r0, AD_F16, AD_F16, AD_F16, AD_F32, 0)
/* mixed dtypes: one generic instance each (the dtype switches stay in the loops) */
AD_ROW_FN(row_generic_r1, P->ds, P->dd, P->dr, P->dg, 1)
AD_ROW_FN(row_generic_r0, P->ds, P->dd, P->dd, P->dg, 0)

#define AD_ROW_CASE(DT, DGT, NAME)                                                                                     \
    if (ds == (DT) && dg == (DGT)) return P->use_second ? NAME##_r1(P, io) : NAME##_r0(P, io);

int AD_ROW_ENTRY(const ad_row_params* P, ad_row_io* io)
{
    const int ds = P->ds, dg = P->dg;
    if (P->dd == ds && (!P->use_second || P->dr == ds)) {
        AD_ROW_CASE(AD_F32, AD_F32, row_f32_f32)
        AD_ROW_CASE(AD_BF16, AD_BF16, row_bf16_bf16)
        AD_ROW_CASE(AD_BF16, AD_F32, row_bf16_f32)
        AD_ROW_CASE(AD_F16, AD_F16, row_f16_f16)
        AD_ROW_CASE(AD_F16, AD_F32, row_f16_f32)
    }
    return P->use_second ? row_generic_r1(P, io) : row_generic_r0(P, io);
}
