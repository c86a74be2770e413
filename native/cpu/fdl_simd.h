/*
 * fdl_simd.h: the small vector layer the row kernel is written in. Included only by
 * fused_distill_loss_rows.c, once per ISA (the build defines exactly one of AD_ISA_AVX512, AD_ISA_AVX2,
 * AD_ISA_PORTABLE and compiles with matching -m flags).
 *
 *   VF            a vector of VW floats
 *   VM            a lane mask
 *   DACC          a double-precision accumulator a VF is folded into (lane-wise, no horizontal f32 sum)
 *   vexpm1_neg    e^x - 1 for x <= 0, two-constant reduction and the degree-6 polynomial; (2^n - 1) + 2^n (e^r - 1) keeps its relative accuracy
 *                 near 0 (used for |pd - pr| = max(pd, pr) (1 - e^-|delta|) in the tvd)
 *   vexp          e^x for x <= 88 (the kernel only takes exps of values <= 0): n = round(x / ln2), one fma
 *                 reduction r = x - n ln2 (two constants without fma), degree-5 polynomial fitted for relative
 *                 error on [-ln2/2, ln2/2] (max 1.7e-7, mean -1.8e-8), 2^n by exponent arithmetic. x is
 *                 clamped below at -150, so x <= -150, -inf and NaN all give exactly +0. Results below 2^-126
 *                 are flushed to 0 on the avx2 / portable paths (gradual underflow on avx512).
 *   vsel_out(m,a) AD_W_OUT where m (columns outside the vocabulary), a elsewhere
 *   vsel_lt(x,t,a,b)  a where x < t, b elsewhere (also where x is NaN: ordered compare)
 *   vmax(a, c)    x86 MAXPS semantics on every path: a NaN first operand returns c (the kernel relies on it).
 *   vload(dt,..)  loads VW logits of dtype dt and widens them to f32 (bf16: shift; f16: F16C / scalar)
 *   vstore(dt,..) narrows with round-to-nearest-even (grad values are finite; NaN is not special-cased in
 *                 the vector bf16 path)
 *   vstream(dt,..) the same as a non-temporal store (whole aligned vectors; vstream_fence after the last); the portable
 *                 path stores normally
 */
#ifndef AD_FDL_SIMD_H
#define AD_FDL_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include "aligndistil.h"

#define AD_INL static inline __attribute__((always_inline))

/* exp constants (own least-squares/minimax fit, see the header comment) */
#define AD_LOG2E  0x1.715476p+0f
#define AD_LN2HI  0x1.63p-1f          /* 0.693359375: few bits, so n * AD_LN2HI is exact */
#define AD_LN2LO  -0x1.bd0106p-13f
#define AD_EXP_C2 0x1.fffffcp-2f
#define AD_EXP_C3 0x1.55541ap-3f
#define AD_EXP_C4 0x1.555822p-5f
#define AD_EXP_C5 0x1.126782p-7f
#define AD_EXP_C6 0x1.6ae728p-10f
#define AD_EXP_LO (-150.0f)
#define AD_LN2    0x1.62e430p-1f     /* ln 2 in f32 (error 1.9e-9): single-step reduction where an fma is exact */
/* degree-5 polynomial of vexp (c0 = 1): max relative error 1.7e-7 on [-ln2/2, ln2/2], mean -1.8e-8 */
#define AD_E5_C1  0x1.fffff6p-1f
#define AD_E5_C2  0x1.fffdc6p-2f
#define AD_E5_C3  0x1.555a6ap-3f
#define AD_E5_C4  0x1.573a56p-5f
#define AD_E5_C5  0x1.0fa830p-7f
/* teacher logit w of a column outside the vocabulary: finite, below every real w (|w| <= 1e37 by the driver's clamp),
 * and exp(AD_W_OUT - M) = 0 */
#define AD_W_OUT  (-0x1p127f)
#define AD_MAGIC  0x1.8p23f           /* adding it rounds |t| < 2^22 to an integer held in the low mantissa bits */

/* ---------------------------------------------------------------- scalar f16 / bf16 conversions */
AD_INL uint32_t ad_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
AD_INL float ad_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

AD_INL float ad_h2f_scalar(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return ad_u2f(sign | 0x7f800000u | (m << 13));          /* inf, NaN (payload kept) */
    if (e != 0) return ad_u2f(sign | ((e + 112u) << 23) | (m << 13));      /* normal */
    return ad_u2f(sign | ad_f2u((float)m * 0x1p-24f));                     /* zero, subnormal (exact) */
}

AD_INL uint16_t ad_f2h_scalar(float f)
{
    uint32_t x = ad_f2u(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));   /* NaN stays NaN */
    if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);                        /* >= 65520: inf */
    if (x >= 0x38800000u) {                                                           /* normal half */
        x += 0xfffu + ((x >> 13) & 1u);
        return (uint16_t)(sign | ((x - 0x38000000u) >> 13));
    }
    /* subnormal half (or zero): round |f| * 2^24 to an integer, ties to even (exact scaling) */
    const float v = ad_u2f(x) * 0x1p24f;
    float rnd = (v + 0x1p23f) - 0x1p23f;
    return (uint16_t)(sign | (uint16_t)rnd);
}

AD_INL uint16_t ad_f2bf_scalar(float f)
{
    uint32_t x = ad_f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* ================================================================================================ */
#if defined(AD_ISA_AVX512)
/* ================================================================================================ */
#include <immintrin.h>
#define VW 16
/* AD_KEEP(v): v must be in a vector register here; used on loop accumulators so that register pressure
 * spills loop-invariant constants (cheap memory operands) rather than loop-carried sums */
#define AD_KEEP(v) __asm__("" : "+v"(v))
typedef __m512 VF;
typedef __mmask16 VM;
typedef struct { __m512d lo, hi; } DACC;

AD_INL VF vzero(void) { return _mm512_setzero_ps(); }
AD_INL VF vset(float x) { return _mm512_set1_ps(x); }
AD_INL VF vadd(VF a, VF b) { return _mm512_add_ps(a, b); }
AD_INL VF vsub(VF a, VF b) { return _mm512_sub_ps(a, b); }
AD_INL VF vmul(VF a, VF b) { return _mm512_mul_ps(a, b); }
AD_INL VF vfma(VF a, VF b, VF c) { return _mm512_fmadd_ps(a, b, c); }
AD_INL VF vmax(VF a, VF b) { return _mm512_max_ps(a, b); }
AD_INL VF vmin(VF a, VF b) { return _mm512_min_ps(a, b); }
AD_INL VF vabs(VF a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
AD_INL float vhmax(VF a) { return _mm512_reduce_max_ps(a); }
AD_INL int vany_nan(VF a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) != 0; }
AD_INL VM vis_ninf(VF a) { return _mm512_cmp_ps_mask(a, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ); }
AD_INL VF vsel_out(VM m, VF a) { return _mm512_mask_mov_ps(a, m, _mm512_set1_ps(AD_W_OUT)); }
AD_INL VF vsel_lt(VF x, VF t, VF a, VF b) { return _mm512_mask_mov_ps(b, _mm512_cmp_ps_mask(x, t, _CMP_LT_OQ), a); }
AD_INL unsigned vbadbits(VF s, VF d, VF r)
{
    const VF inf = _mm512_set1_ps(INFINITY), ninf = _mm512_set1_ps(-INFINITY);
    const __mmask16 ok = _mm512_cmp_ps_mask(s, inf, _CMP_LT_OQ) & _mm512_cmp_ps_mask(d, inf, _CMP_LT_OQ)
                       & _mm512_cmp_ps_mask(r, inf, _CMP_LT_OQ);
    const __mmask16 ns = _mm512_cmp_ps_mask(s, ninf, _CMP_EQ_OQ), nd = _mm512_cmp_ps_mask(d, ninf, _CMP_EQ_OQ),
                    nr = _mm512_cmp_ps_mask(r, ninf, _CMP_EQ_OQ);
    return (unsigned)(uint16_t)~(ok & ~(ns ^ nd) & ~(ns ^ nr));
}
AD_INL VF vexp(VF x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(AD_EXP_LO)); /* also NaN -> AD_EXP_LO (max returns its 2nd operand) */
    const VF n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(AD_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const VF r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AD_LN2), x);
    VF p = _mm512_fmadd_ps(_mm512_set1_ps(AD_E5_C5), r, _mm512_set1_ps(AD_E5_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_E5_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_E5_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_E5_C1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);   /* p * 2^n; n <= -150 underflows to +0 */
}
/* e^x - 1 for x <= 0 (x >= -150 after the clamp), accurate relative to the result also near 0 */
AD_INL VF vexpm1_neg(VF x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(AD_EXP_LO));
    const VF n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(AD_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    VF r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AD_LN2HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(AD_LN2LO), r);
    VF p = _mm512_fmadd_ps(_mm512_set1_ps(AD_EXP_C6), r, _mm512_set1_ps(AD_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(AD_EXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const VF em = _mm512_mul_ps(p, r);                                  /* e^r - 1 */
    const VF sc = _mm512_scalef_ps(_mm512_set1_ps(1.0f), n);             /* 2^n */
    return _mm512_fmadd_ps(sc, em, _mm512_sub_ps(sc, _mm512_set1_ps(1.0f)));
}
AD_INL VF vnabs(VF a) { return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u))); }
AD_INL DACC dacc_zero(void) { DACC a; a.lo = _mm512_setzero_pd(); a.hi = _mm512_setzero_pd(); return a; }
AD_INL void dacc_add(DACC* a, VF v)
{
    a->lo = _mm512_add_pd(a->lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    a->hi = _mm512_add_pd(a->hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}
AD_INL double dacc_sum(DACC a) { return _mm512_reduce_add_pd(_mm512_add_pd(a.lo, a.hi)); }

AD_INL VF vload(int dt, const void* base, int64_t i)
{
    if (dt == AD_F32) return _mm512_loadu_ps((const float*)base + i);
    const __m256i h = _mm256_loadu_si256((const __m256i*)((const uint16_t*)base + i));
    if (dt == AD_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}
AD_INL void vstore(int dt, void* base, int64_t i, VF v)
{
    if (dt == AD_F32) { _mm512_storeu_ps((float*)base + i, v); return; }
    __m256i h;
    if (dt == AD_BF16) {
        __m512i x = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
        x = _mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16));
    } else {
        h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    _mm256_storeu_si256((__m256i*)((uint16_t*)base + i), h);
}

/* non-temporal store of a whole vector (base + i aligned to VW elements of dt): bypasses the caches */
AD_INL void vstream(int dt, void* base, int64_t i, VF v)
{
    if (dt == AD_F32) { _mm512_stream_ps((float*)base + i, v); return; }
    __m256i h;
    if (dt == AD_BF16) {
        __m512i x = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
        x = _mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(x, 16));
    } else {
        h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    _mm256_stream_si256((__m256i*)((uint16_t*)base + i), h);
}
AD_INL void vstream_fence(void) { _mm_sfence(); }

/* ================================================================================================ */
#elif defined(AD_ISA_AVX2)
/* ================================================================================================ */
#include <immintrin.h>
#define VW 8
#define AD_KEEP(v) __asm__("" : "+x"(v)) /* see the avx512 section */
typedef __m256 VF;
typedef __m256 VM;
typedef struct { __m256d lo, hi; } DACC;

AD_INL VF vzero(void) { return _mm256_setzero_ps(); }
AD_INL VF vset(float x) { return _mm256_set1_ps(x); }
AD_INL VF vadd(VF a, VF b) { return _mm256_add_ps(a, b); }
AD_INL VF vsub(VF a, VF b) { return _mm256_sub_ps(a, b); }
AD_INL VF vmul(VF a, VF b) { return _mm256_mul_ps(a, b); }
AD_INL VF vfma(VF a, VF b, VF c) { return _mm256_fmadd_ps(a, b, c); }
AD_INL VF vmax(VF a, VF b) { return _mm256_max_ps(a, b); }
AD_INL VF vmin(VF a, VF b) { return _mm256_min_ps(a, b); }
AD_INL VF vabs(VF a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
AD_INL float vhmax(VF a)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
AD_INL int vany_nan(VF a) { return _mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q)) != 0; }
AD_INL VM vis_ninf(VF a) { return _mm256_cmp_ps(a, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ); }
AD_INL VF vsel_out(VM m, VF a) { return _mm256_blendv_ps(a, _mm256_set1_ps(AD_W_OUT), m); }
AD_INL VF vsel_lt(VF x, VF t, VF a, VF b) { return _mm256_blendv_ps(b, a, _mm256_cmp_ps(x, t, _CMP_LT_OQ)); }
AD_INL unsigned vbadbits(VF s, VF d, VF r)
{
    const VF inf = _mm256_set1_ps(INFINITY), ninf = _mm256_set1_ps(-INFINITY);
    const VF ok = _mm256_and_ps(_mm256_and_ps(_mm256_cmp_ps(s, inf, _CMP_LT_OQ), _mm256_cmp_ps(d, inf, _CMP_LT_OQ)),
                                _mm256_cmp_ps(r, inf, _CMP_LT_OQ));
    const VF ns = _mm256_cmp_ps(s, ninf, _CMP_EQ_OQ), nd = _mm256_cmp_ps(d, ninf, _CMP_EQ_OQ),
             nr = _mm256_cmp_ps(r, ninf, _CMP_EQ_OQ);
    const VF diff = _mm256_or_ps(_mm256_xor_ps(ns, nd), _mm256_xor_ps(ns, nr));
    return (unsigned)_mm256_movemask_ps(_mm256_andnot_ps(diff, ok)) ^ 0xffu;
}
AD_INL VF vexp(VF x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(AD_EXP_LO)); /* also NaN -> AD_EXP_LO (max returns its 2nd operand) */
    const VF t = _mm256_fmadd_ps(x, _mm256_set1_ps(AD_LOG2E), _mm256_set1_ps(AD_MAGIC));   /* n in low bits */
    const VF n = _mm256_sub_ps(t, _mm256_set1_ps(AD_MAGIC));
    const VF r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AD_LN2), x);
    VF p = _mm256_fmadd_ps(_mm256_set1_ps(AD_E5_C5), r, _mm256_set1_ps(AD_E5_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_E5_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_E5_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_E5_C1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* biased exponent n + 127 = bits(t) - bits(MAGIC) + 127, clamped at 0 (=> scale +0 for n < -126) */
    __m256i e = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4b400000 - 127));
    e = _mm256_max_epi32(e, _mm256_setzero_si256());
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
/* e^x - 1 for x <= 0 (x >= -150 after the clamp), accurate relative to the result also near 0 */
AD_INL VF vexpm1_neg(VF x)
{
    x = _mm256_max_ps(x, _mm256_set1_ps(AD_EXP_LO));
    const VF t = _mm256_fmadd_ps(x, _mm256_set1_ps(AD_LOG2E), _mm256_set1_ps(AD_MAGIC));
    const VF n = _mm256_sub_ps(t, _mm256_set1_ps(AD_MAGIC));
    VF r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AD_LN2HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(AD_LN2LO), r);
    VF p = _mm256_fmadd_ps(_mm256_set1_ps(AD_EXP_C6), r, _mm256_set1_ps(AD_EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(AD_EXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const VF em = _mm256_mul_ps(p, r);                                  /* e^r - 1 */
    __m256i e = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(0x4b400000 - 127));
    e = _mm256_max_epi32(e, _mm256_setzero_si256());
    const VF sc = _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));        /* 2^n, 0 below 2^-126 */
    return _mm256_fmadd_ps(sc, em, _mm256_sub_ps(sc, _mm256_set1_ps(1.0f)));
}
AD_INL VF vnabs(VF a) { return _mm256_or_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))); }
AD_INL DACC dacc_zero(void) { DACC a; a.lo = _mm256_setzero_pd(); a.hi = _mm256_setzero_pd(); return a; }
AD_INL void dacc_add(DACC* a, VF v)
{
    a->lo = _mm256_add_pd(a->lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a->hi = _mm256_add_pd(a->hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}
AD_INL double dacc_sum(DACC a)
{
    const __m256d s = _mm256_add_pd(a.lo, a.hi);
    __m128d t = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    t = _mm_add_sd(t, _mm_unpackhi_pd(t, t));
    return _mm_cvtsd_f64(t);
}
AD_INL VF vload(int dt, const void* base, int64_t i)
{
    if (dt == AD_F32) return _mm256_loadu_ps((const float*)base + i);
    const __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)base + i));
    if (dt == AD_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}
AD_INL void vstore(int dt, void* base, int64_t i, VF v)
{
    if (dt == AD_F32) { _mm256_storeu_ps((float*)base + i, v); return; }
    __m128i h;
    if (dt == AD_BF16) {
        __m256i x = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        x = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i pk = _mm256_packus_epi32(x, x);   /* per 128-bit lane: x0..3 x0..3 | x4..7 x4..7 */
        h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(pk, 0x08));
    } else {
        h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    _mm_storeu_si128((__m128i*)((uint16_t*)base + i), h);
}

/* non-temporal store of a whole vector (base + i aligned to VW elements of dt): bypasses the caches */
AD_INL void vstream(int dt, void* base, int64_t i, VF v)
{
    if (dt == AD_F32) { _mm256_stream_ps((float*)base + i, v); return; }
    __m128i h;
    if (dt == AD_BF16) {
        __m256i x = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        x = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
        const __m256i pk = _mm256_packus_epi32(x, x);
        h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(pk, 0x08));
    } else {
        h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    _mm_stream_si128((__m128i*)((uint16_t*)base + i), h);
}
AD_INL void vstream_fence(void) { _mm_sfence(); }

/* ================================================================================================ */
#else /* AD_ISA_PORTABLE: GCC/Clang generic vectors, any target */
/* ================================================================================================ */
#define VW 4
#define AD_KEEP(v) ((void)0)
typedef float VF __attribute__((vector_size(16)));
typedef int32_t VI __attribute__((vector_size(16)));
typedef VI VM;
typedef struct { double v[VW]; } DACC;

AD_INL VF vzero(void) { VF z = {0, 0, 0, 0}; return z; }
AD_INL VF vset(float x) { VF z = {x, x, x, x}; return z; }
AD_INL VF vsel(VI m, VF a, VF b) { return (VF)(((VI)a & ~m) | ((VI)b & m)); }   /* m ? b : a */
AD_INL VF vadd(VF a, VF b) { return a + b; }
AD_INL VF vsub(VF a, VF b) { return a - b; }
AD_INL VF vmul(VF a, VF b) { return a * b; }
AD_INL VF vfma(VF a, VF b, VF c) { return a * b + c; }
/* x86 semantics: (a > b) ? a : b, so a NaN first operand gives the second */
AD_INL VF vmax(VF a, VF b) { return vsel(a > b, b, a); }
AD_INL VF vmin(VF a, VF b) { return vsel(a < b, b, a); }
AD_INL VF vabs(VF a) { return (VF)((VI)a & 0x7fffffff); }
AD_INL float vhmax(VF a)
{
    float m = a[0];
    for (int k = 1; k < VW; k++) m = a[k] > m ? a[k] : m;
    return m;
}
AD_INL int vany_nan(VF a)
{
    int r = 0;
    for (int k = 0; k < VW; k++) r |= (a[k] != a[k]);
    return r;
}
AD_INL VM vis_ninf(VF a) { return a == vset(-INFINITY); }
AD_INL VF vsel_out(VM m, VF a) { return vsel(m, a, vset(AD_W_OUT)); }
AD_INL VF vsel_lt(VF x, VF t, VF a, VF b) { return vsel(x < t, b, a); }   /* NaN x: b */
AD_INL unsigned vbadbits(VF s, VF d, VF r)
{
    unsigned bits = 0;
    for (int k = 0; k < VW; k++) {
        const int ok = s[k] < INFINITY && d[k] < INFINITY && r[k] < INFINITY
                    && (s[k] == -INFINITY) == (d[k] == -INFINITY) && (s[k] == -INFINITY) == (r[k] == -INFINITY);
        bits |= (unsigned)!ok << k;
    }
    return bits;
}
AD_INL VF vexp(VF x)
{
    x = vmax(x, vset(AD_EXP_LO));
    const VF t = x * vset(AD_LOG2E) + vset(AD_MAGIC);
    const VF n = t - vset(AD_MAGIC);
    VF r = x - n * vset(AD_LN2HI); /* no fma here: two-constant reduction with an exact first product */
    r = r - n * vset(AD_LN2LO);
    VF p = vset(AD_E5_C5) * r + vset(AD_E5_C4);
    p = p * r + vset(AD_E5_C3);
    p = p * r + vset(AD_E5_C2);
    p = p * r + vset(AD_E5_C1);
    p = p * r + vset(1.0f);
    VI e = (VI)t - (0x4b400000 - 127);
    e = e & (e > 0);
    return p * (VF)(e << 23);
}
/* e^x - 1 for x <= 0 (x >= -150 after the clamp), accurate relative to the result also near 0 */
AD_INL VF vexpm1_neg(VF x)
{
    x = vmax(x, vset(AD_EXP_LO));
    const VF t = x * vset(AD_LOG2E) + vset(AD_MAGIC);
    const VF n = t - vset(AD_MAGIC);
    VF r = x - n * vset(AD_LN2HI);
    r = r - n * vset(AD_LN2LO);
    VF p = vset(AD_EXP_C6) * r + vset(AD_EXP_C5);
    p = p * r + vset(AD_EXP_C4);
    p = p * r + vset(AD_EXP_C3);
    p = p * r + vset(AD_EXP_C2);
    p = p * r + vset(1.0f);
    const VF em = p * r;
    VI e = (VI)t - (0x4b400000 - 127);
    e = e & (e > 0);
    const VF sc = (VF)(e << 23);
    return sc * em + (sc - vset(1.0f));
}
AD_INL VF vnabs(VF a) { return (VF)((VI)a | (int32_t)0x80000000u); }
AD_INL DACC dacc_zero(void) { DACC a; for (int k = 0; k < VW; k++) a.v[k] = 0.0; return a; }
AD_INL void dacc_add(DACC* a, VF v) { for (int k = 0; k < VW; k++) a->v[k] += (double)v[k]; }
AD_INL double dacc_sum(DACC a) { double s = 0.0; for (int k = 0; k < VW; k++) s += a.v[k]; return s; }

AD_INL VF vload(int dt, const void* base, int64_t i)
{
    VF v;
    if (dt == AD_F32) { memcpy(&v, (const float*)base + i, sizeof v); return v; }
    uint16_t h[VW];
    memcpy(h, (const uint16_t*)base + i, sizeof h);
    if (dt == AD_BF16) {
        VI x;
        for (int k = 0; k < VW; k++) x[k] = (int32_t)((uint32_t)h[k] << 16);
        return (VF)x;
    }
    for (int k = 0; k < VW; k++) v[k] = ad_h2f_scalar(h[k]);
    return v;
}
AD_INL void vstore(int dt, void* base, int64_t i, VF v)
{
    if (dt == AD_F32) { memcpy((float*)base + i, &v, sizeof v); return; }
    uint16_t h[VW];
    for (int k = 0; k < VW; k++) h[k] = dt == AD_BF16 ? ad_f2bf_scalar(v[k]) : ad_f2h_scalar(v[k]);
    memcpy((uint16_t*)base + i, h, sizeof h);
}
#endif

#if !defined(AD_ISA_AVX512) && !defined(AD_ISA_AVX2)
AD_INL void vstream(int dt, void* base, int64_t i, VF v) { vstore(dt, base, i, v); }
AD_INL void vstream_fence(void) {}
#endif

/* ---------------------------------------------------------------- partial vectors (row tails) */
/* The missing lanes read as -inf in all three rows, i.e. as columns outside the vocabulary. */
AD_INL VF vload_tail(int dt, const void* base, int64_t i, int64_t rem)
{
    if (dt == AD_F32) {
        float buf[VW] __attribute__((aligned(64)));
        for (int k = 0; k < VW; k++) buf[k] = -INFINITY;
        memcpy(buf, (const float*)base + i, (size_t)rem * 4);
        return vload(AD_F32, buf, 0);
    }
    uint16_t buf[VW] __attribute__((aligned(64)));
    const uint16_t fill = dt == AD_BF16 ? 0xff80u : 0xfc00u;
    for (int k = 0; k < VW; k++) buf[k] = fill;
    memcpy(buf, (const uint16_t*)base + i, (size_t)rem * 2);
    return vload(dt, buf, 0);
}
AD_INL void vstore_tail(int dt, void* base, int64_t i, int64_t rem, VF v)
{
    if (dt == AD_F32) {
        float buf[VW] __attribute__((aligned(64)));
        vstore(AD_F32, buf, 0, v);
        memcpy((float*)base + i, buf, (size_t)rem * 4);
        return;
    }
    uint16_t buf[VW] __attribute__((aligned(64)));
    vstore(dt, buf, 0, v);
    memcpy((uint16_t*)base + i, buf, (size_t)rem * 2);
}

#endif /* AD_FDL_SIMD_H */
