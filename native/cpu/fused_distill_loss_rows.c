/*
 * fused_distill_loss_rows.c: the per-row kernel of ad_fdl_cpu. Compiled three times (see CMakeLists.txt):
 * AD_ISA_SUFFIX = portable | avx2 | avx512, defining ad_fdl_row_<suffix>.
 *
 * One selected row (s = student, d = DPO, r = second teacher), V columns:
 *   pass 0  (no exp)   row maxima m_s, m_d, m_r and the validity check (NaN / +inf / partial -inf)
 *   centred values     s' = (s - m_s)/Ts, d' = d - m_d, r' = r - m_r (all <= 0)
 *   pass A  (3 exp)    (stores e^s' in the row scratch) Z_s, Z_d, Z_r and U_s = sum e^s' s', U_d = sum e^s' d', U_r = sum e^s' r',
 *                      U_f = sum e^s' f with f = d' - r' computed as (d - r) - (m_d - m_r)
 *   pass B  (2 exp)    tvd = sum |pd - pr| = sum max(pd, pr) (1 - e^-|log pd - log pr|)  (aligndistil, adaptive)
 *   pass C  (1 exp)    LSE* = M + log S of w = (d' + c f)/T (= z'/T), blockwise max; w is stored in the row scratch
 *                      io->w (2 x (V + padding) floats per thread, from the driver; e^s' of pass A in the second half)
 *   pass D  (0 exp)    g = (coef row_scale/Ts) p (s' - (w - M) - (log Z_s - log S + K)),  p = e^s' / Z_s with e^s'
 *                      stored by pass A and w by pass C in the row scratch io->w (pass D reads s, w and e^s')
 * Exps per element: 6 (3 + 2 + 1). The gradient's p e^s' (coef row_scale / (Ts Z_s)) has a relative error of at most
 * the exp's 1.7e-7 plus two f32 roundings (1.2e-7); the former e^(s' - log Z_s) added the rounding of s' - log Z_s
 * (|s' - log Z_s| x 6e-8) and of log Z_s, so this is as accurate or better.
 * with K = (U_s/Z_s - log Z_s) - ((U_d + c U_f)/(T Z_s) - LSE*). Writing the teacher as d' + c (d' - r')
 * rather than a d' + b r' avoids the cancellation of two large products when alpha is large.
 *
 * Columns that are -inf in all three rows (outside the vocabulary, and the padded lanes of the last
 * partial vector) never contribute: the centred values are clamped to a large negative finite number
 * (clamp_student / clamp_teacher from the driver), so their exps are exactly 0 and 0 * value stays 0; in
 * pass C they are set to AD_W_OUT explicitly (see there). Writes: the grad row and the row scratch io->w. f32 lane sums run over blocks of AD_BLK columns and are folded
 * lane-wise into f64 accumulators.
 */
#include <math.h>
#include <string.h>
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

AD_INL int row_impl(const ad_row_params* P, ad_row_io* io, const int DS, const int DD, const int DR,
                    const int DG, const int USE_R)
{
    const int64_t V = P->vocab;
    const void* const S = io->s;
    const void* const D = io->d;
    const void* const R = io->r;

    AD_PROF(0);
    /* ------------------------------------------------------------ pass 0: maxima + validity */
    VF ms = vset(-INFINITY), md = ms, mr = ms;
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        const VF z0 = vzero();
        VF probe = vzero(); /* stays 0 while every value is finite, NaN otherwise */
        AD_LOOP(b0, b1, {
            const VF s = LD(DS, S);
            const VF d = LD(DD, D);
            ms = vmax(ms, s);
            md = vmax(md, d);
            VF t = vfma(d, z0, vmul(s, z0));
            if (USE_R) {
                const VF r = LD(DR, R);
                mr = vmax(mr, r);
                t = vfma(r, z0, t);
            }
            probe = vadd(probe, t);
        });
        if (vany_nan(probe)) { /* some value is not finite: -inf everywhere in a column is fine */
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
    const float m_s = vhmax(ms), m_d = vhmax(md), m_r = USE_R ? vhmax(mr) : 0.0f;
    if (m_d == -INFINITY) return AD_ERR_EMPTY_ROW; /* every column -inf (checked consistent above) */

    const VF vms = vset(m_s), vmd = vset(m_d), vmr = vset(m_r);
    const VF vits = vset((float)P->inv_ts);
    const VF vcls = vset(-P->clamp_student), vclt = vset(-P->clamp_teacher), vclt_pos = vset(P->clamp_teacher);
    /* diff = d' - r' = (d - r) - (m_d - m_r): d - r is exact when the teachers are close */
    const VF vcm = vset(m_d - m_r);
/* (-inf) - (-inf) = NaN outside the vocabulary: vmax(NaN, c) = c keeps it finite there */
#define AD_DIFF(d, r) vmin(vmax(vsub(vsub((d), (r)), vcm), vclt), vclt_pos)

    AD_PROF(1);
    /* ------------------------------------------------------------ pass A: partition functions, U sums */
    float* const E = io->w + ad_row_scratch_stride(V); /* e^s' of every column, for pass D */
    DACC aZs = dacc_zero(), aZd = dacc_zero(), aZr = dacc_zero();
    DACC aUs = dacc_zero(), aUd = dacc_zero(), aUr = dacc_zero(), aUf = dacc_zero();
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        VF zs = vzero(), zd = vzero(), zr = vzero(), us = vzero(), ud = vzero(), ur = vzero(), uf = vzero();
        AD_LOOP(b0, b1, {
            const VF sp = vmax(vmul(vsub(LD(DS, S), vms), vits), vcls);
            const VF d = LD(DD, D);
            const VF dp = vmax(vsub(d, vmd), vclt);
            const VF es = vexp(sp);
            vstore(AD_F32, E, i_, es); /* pass D's p = e^s' / Z_s (a partial last vector fills the padding) */
            const VF ed = vexp(dp);
            zs = vadd(zs, es);
            zd = vadd(zd, ed);
            us = vfma(es, sp, us);
            ud = vfma(es, dp, ud);
            if (USE_R) {
                const VF r = LD(DR, R);
                const VF rp = vmax(vsub(r, vmr), vclt);
                const VF er = vexp(rp);
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
    const double Zs = dacc_sum(aZs), Zd = dacc_sum(aZd), Us = dacc_sum(aUs), Ud = dacc_sum(aUd);
    const double Zr = USE_R ? dacc_sum(aZr) : 1.0, Ur = USE_R ? dacc_sum(aUr) : 0.0, Uf = USE_R ? dacc_sum(aUf) : 0.0;
    const double lZd = log(Zd), lZr = log(Zr);

    AD_PROF(2);
    /* ------------------------------------------------------------ weight alpha (pass B when adaptive) */
    const int variant = P->variant;
    double alpha;
    if (variant == AD_VARIANT_ALIGNDISTIL || variant == AD_VARIANT_ADAPTIVE) {
        /* |pd - pr| = max(pd, pr) (1 - e^-|delta|), delta = log pd - log pr: accurate
         * relative to the difference itself, so close teachers keep the digits of a small tvd, and
         * identical teachers give exactly 0. */
        const VF vlzd = vset((float)lZd), vlzr = vset((float)lZr);
        /* delta = ((d - r) - (m_d - m_r)) - (log Z_d - log Z_r): two constants, so that the small second
         * one keeps its digits when the maxima are far apart (the first matches d - r bit for bit at a
         * column holding both maxima) */
        const VF vclz = vset((float)(lZd - lZr));
        DACC aT = dacc_zero();
        for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
            const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
            VF tv = vzero();
            AD_LOOP(b0, b1, {
                const VF d = LD(DD, D);
                const VF r = LD(DR, R);
                const VF xd = vsub(vmax(vsub(d, vmd), vclt), vlzd);
                const VF xr = vsub(vmax(vsub(r, vmr), vclt), vlzr);
                const VF big = vexp(vmax(xd, xr));
                const VF em = vexpm1_neg(vnabs(vsub(vsub(vsub(d, r), vcm), vclz))); /* NaN (outside) -> -1, times 0 */
                tv = vfma(big, em, tv); /* accumulates -|pd - pr| */
                AD_KEEP(tv);
            });
            dacc_add(&aT, tv);
        }
        alpha = P->beta2 * -dacc_sum(aT) + P->epsilon;
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
    /* w is stored into the row scratch io->w (pass D reads it back instead of recomputing it from d and r); columns
     * outside the vocabulary hold AD_W_OUT, a finite stand-in for -inf (exp gives 0 as for -inf, and pass D's
     * u = s' - (w - M) stays finite where p = 0). */
    float* const W = io->w;
    double M = -INFINITY, Ssum = 0.0;
    {
        for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
            const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
            VF wm = vset(-INFINITY);
            AD_LOOP(b0, b1, {
                const VF d = LD(DD, D);
                VF w = vmul(vmax(vsub(d, vmd), vclt), viT);
                if (USE_R) w = vfma(AD_DIFF(d, LD(DR, R)), vcT, w);
                w = vsel_out(vis_ninf(d), w); /* outside the vocabulary */
                vstore(AD_F32, W, i_, w); /* a partial last vector fills the scratch's padding */
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
            for (int64_t k = 0; k < nb; k += VW) acc = vadd(acc, vexp(vsub(vload(AD_F32, W, b0 + k), vM)));
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
    DACC aPU = dacc_zero(), aP = dacc_zero();
    for (int64_t b0 = 0; b0 < V; b0 += AD_BLK) {
        const int64_t b1 = V - b0 > AD_BLK ? b0 + AD_BLK : V;
        VF pu = vzero(), pt = vzero();
        AD_LOOP(b0, b1, {
            const VF sp = vmax(vmul(vsub(LD(DS, S), vms), vits), vcls);
            const VF w = vload(AD_F32, W, i_); /* pass C's values, bit for bit (padded: whole vectors) */
            const VF e = vload(AD_F32, E, i_); /* e^s' from pass A */
            const VF u = vsub(sp, vsub(w, vM));
            pu = vfma(e, u, pu);
            pt = vadd(pt, e);
            AD_KEEP(pu); AD_KEEP(pt);
            ST(DG, G, vmul(vmul(e, vcgz), vsub(u, vc0)));
        });
        dacc_add(&aPU, pu);
        dacc_add(&aP, pt);
    }
    double Kd = (dacc_sum(aPU) - (logZs - logS) * dacc_sum(aP)) / Zs;
    if (Kd < 0.0 && Kd > -1e-12) Kd = 0.0; /* rounding noise of an exact zero; larger negatives are kept */
    io->kl = Kd;
#undef AD_DIFF
    AD_PROF(5);
    return AD_OK;
}

/* Mixed dtypes: one generic instance (the dtype switches stay in the loops). */
__attribute__((noinline)) static int row_generic(const ad_row_params* P, ad_row_io* io)
{
    if (P->use_second) return row_impl(P, io, P->ds, P->dd, P->dr, P->dg, 1);
    return row_impl(P, io, P->ds, P->dd, P->dd, P->dg, 0);
}

#define AD_ROW_CASE(DT, DGT)                                                                     \
    if (ds == (DT) && dg == (DGT))                                                               \
        return P->use_second ? row_impl(P, io, DT, DT, DT, DGT, 1) : row_impl(P, io, DT, DT, DT, DGT, 0);

int AD_ROW_ENTRY(const ad_row_params* P, ad_row_io* io)
{
    const int ds = P->ds, dg = P->dg;
    if (P->dd == ds && (!P->use_second || P->dr == ds)) {
        AD_ROW_CASE(AD_F32, AD_F32)
        AD_ROW_CASE(AD_BF16, AD_BF16)
        AD_ROW_CASE(AD_BF16, AD_F32)
        AD_ROW_CASE(AD_F16, AD_F16)
        AD_ROW_CASE(AD_F16, AD_F32)
    }
    return row_generic(P, io);
}
