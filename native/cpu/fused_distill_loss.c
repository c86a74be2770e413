/*
 * fused_distill_loss.c: ad_fdl_cpu and the ad_cpu_* helpers (see aligndistil.h for the contract).
 *
 * The driver validates the problem, scans the mask (n_b per sequence, number of non-empty sequences,
 * selected rows), cuts the flat row range [0, B*T) into at most AD_TILES tiles of consecutive rows (the cut depends on
 * B*T only), and the workers claim tiles one at a time from an atomic counter, running the per-ISA row kernel on each
 * selected row (fused_distill_loss_rows.c). A worker that a noisy neighbour slows down simply claims fewer tiles, so
 * no thread waits for a fixed share of a slow one. Each tile's loss terms are summed in f64 in row order into its own
 * slot, and the slots are added in tile order after the join: the loss is bit-identical for every thread count and
 * every claiming order. Rows not selected get a zero grad row and zero outputs and are never read.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "fdl_cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define AD_X86 1
#endif

int32_t ad_abi_version(void) { return AD_ABI_VERSION; }

/* ------------------------------------------------------------------------------------------ ISA */
enum { AD_ISA_ID_PORTABLE = 0, AD_ISA_ID_AVX2 = 1, AD_ISA_ID_AVX512 = 2 };
static const char* const k_isa_names[3] = {"portable", "avx2", "avx512"};
static const ad_row_fn k_isa_rows[3] = {ad_fdl_row_portable, ad_fdl_row_avx2, ad_fdl_row_avx512};

static int g_isa_best = -1;       /* best the CPU supports */
static int g_isa_auto = -1;       /* what "auto" picks */

/* "auto" picks the AVX-512 path where the CPU has AVX-512 F/BW/DQ/VL (verified by the self-test and the Java suite on
 * an AVX-512 machine, Intel Xeon family 6 model 207, issue 15). AD_CPU_ISA=avx2|portable (or ad_cpu_force_isa) still
 * forces another path; building with -DAD_CPU_AUTO_STOP_AT_AVX2=ON (CMake) makes "auto" stop at AVX2. */
#ifndef AD_CPU_AVX512_AUTO
#define AD_CPU_AVX512_AUTO 1
#endif
static atomic_int g_isa_active = -1;

static int cpu_best_isa(void)
{
#ifdef AD_X86
    __builtin_cpu_init();
    unsigned a, b, c, d;
    const int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return AD_ISA_ID_AVX512;
    if (avx2) return AD_ISA_ID_AVX2;
#endif
    return AD_ISA_ID_PORTABLE;
}

static int isa_by_name(const char* s)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s, k_isa_names[i]) == 0) return i;
    return -1;
}

__attribute__((constructor)) static void ad_cpu_init(void)
{
    g_isa_best = cpu_best_isa();
    g_isa_auto = (g_isa_best == AD_ISA_ID_AVX512 && !AD_CPU_AVX512_AUTO) ? AD_ISA_ID_AVX2 : g_isa_best;
    int isa = g_isa_auto;
    const char* env = getenv("AD_CPU_ISA");
    if (env != NULL) {
        const int want = isa_by_name(env);
        if (want >= 0 && want <= g_isa_best) isa = want; /* unknown / unsupported values: automatic */
    }
    atomic_store(&g_isa_active, isa);
}

static int active_isa(void)
{
    int isa = atomic_load(&g_isa_active);
    if (isa < 0) { /* constructor did not run (unusual linkage) */
        ad_cpu_init();
        isa = atomic_load(&g_isa_active);
    }
    return isa;
}

const char* ad_cpu_isa(void) { return k_isa_names[active_isa()]; }

int32_t ad_cpu_force_isa(const char* isa)
{
    active_isa();
    if (isa == NULL || strcmp(isa, "auto") == 0) {
        atomic_store(&g_isa_active, g_isa_auto);
        return AD_OK;
    }
    const int want = isa_by_name(isa);
    if (want < 0) return AD_ERR_INVALID_ARGUMENT;
    if (want > g_isa_best) return AD_ERR_UNSUPPORTED;
    atomic_store(&g_isa_active, want);
    return AD_OK;
}

/* ------------------------------------------------------------------------------------------ row design */
static const char* const k_design_names[3] = {"auto", "caching", "recomputing"};
static atomic_int g_design = -1;

static int active_design(void)
{
    int d = atomic_load(&g_design);
    if (d < 0) {
        const char* env = getenv("AD_CPU_ROW_DESIGN");
        d = AD_ROW_DESIGN_AUTO; /* unknown values: automatic */
        for (int i = 0; env != NULL && i < 3; i++)
            if (strcmp(env, k_design_names[i]) == 0) d = i;
        int expected = -1;
        if (!atomic_compare_exchange_strong(&g_design, &expected, d)) d = expected;
    }
    return d;
}

const char* ad_cpu_row_design(void) { return k_design_names[active_design()]; }

int32_t ad_cpu_force_row_design(const char* design)
{
    if (design == NULL) design = "auto";
    for (int i = 0; i < 3; i++)
        if (strcmp(design, k_design_names[i]) == 0) {
            atomic_store(&g_design, i);
            return AD_OK;
        }
    return AD_ERR_INVALID_ARGUMENT;
}

int32_t ad_cpu_set_threads(int32_t n)
{
    ad_pool_set_default_threads(n);
    return AD_OK;
}

int32_t ad_cpu_get_threads(void) { return ad_pool_default_threads(); }

/* ------------------------------------------------------------------------------------------ driver */
typedef struct {
    int64_t code, token, column, tile; /* the first error this worker met (tile: where; INT64_MAX while none) */
    char pad[32];                      /* one cache line per worker */
} ad_worker_result;

/* Tiles of consecutive rows that the workers claim one by one (at most this many per call; their f64 loss slots
 * live in the job on the caller's stack). */
#define AD_TILES 1024

typedef struct {
    const ad_fdl_problem* pb;
    ad_row_params P;
    ad_row_fn row;
    double N;
    atomic_llong error_tile;       /* lowest tile in which a row failed so far (INT64_MAX: none) */
    atomic_llong next_tile;        /* the next tile to claim */
    int64_t ntiles, tile_rows;     /* tile k holds rows [k tile_rows, min(B T, (k + 1) tile_rows)) */
    double tile_loss[AD_TILES];    /* loss terms of tile k, summed in row order */
    ad_worker_result res[AD_POOL_MAX_THREADS];
} ad_job;

static size_t dtype_size(int64_t dt) { return dt == AD_F32 ? 4u : 2u; }
static int valid_dtype(int64_t dt) { return dt == AD_F32 || dt == AD_BF16 || dt == AD_F16; }
static int pos_finite(double x) { return isfinite(x) && x > 0.0; }

static inline int row_selected(const ad_fdl_problem* pb, int64_t b, int64_t t)
{
    return pb->mask == NULL || pb->mask[b * pb->mask_stride_b + t * pb->mask_stride_t] != 0;
}

static inline const void* row_ptr(const void* base, int64_t dt, int64_t sb, int64_t st, int64_t b, int64_t t)
{
    return (const char*)base + (b * sb + t * st) * (int64_t)dtype_size(dt);
}

static void zero_outputs(const ad_fdl_problem* pb, int64_t f)
{
    if (pb->weight) pb->weight[f] = 0.0f;
    if (pb->token_loss) pb->token_loss[f] = 0.0f;
    if (pb->metrics) for (int k = 0; k < AD_FDL_METRICS; k++) pb->metrics[f * AD_FDL_METRICS + k] = 0.0f;
}

/* Row scratch of the row kernel (ad_row_io.w: e^s', e^d', e^r' and the teacher logits of one row), one per thread, kept between
 * calls and grown when a call has a larger vocabulary: about 12 V bytes (1.8 MB at V = 151,936) per thread
 * that has run rows, freed when the thread exits. Never shared: each worker (and each calling thread) has its own. */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static int g_scratch_key_ok;
static _Thread_local float* t_scratch;
static _Thread_local int64_t t_scratch_floats;

static void scratch_key_init(void) { g_scratch_key_ok = pthread_key_create(&g_scratch_key, free) == 0; }

static float* row_scratch(int64_t floats)
{
    if (t_scratch_floats >= floats) return t_scratch;
    pthread_once(&g_scratch_once, scratch_key_init);
    float* p = (float*)aligned_alloc(64, ((size_t)floats * sizeof(float) + 63) & ~(size_t)63);
    if (p == NULL) return NULL;
    free(t_scratch);
    t_scratch = p;
    t_scratch_floats = floats;
    if (g_scratch_key_ok) pthread_setspecific(g_scratch_key, p); /* the destructor frees it at thread exit */
    return p;
}

static void run_rows(void* arg, int w, int nw)
{
    (void)nw;
    ad_job* J = (ad_job*)arg;
    const ad_fdl_problem* pb = J->pb;
    const int64_t T = pb->seq, V = pb->vocab, BT = pb->batch * pb->seq;
    const size_t grow_bytes = (size_t)V * dtype_size(pb->grad_dtype);
    ad_worker_result* out = &J->res[w];
    double row_scale = 0.0;
    int64_t cur_b = -1;
    ad_row_io io;
    memset(&io, 0, sizeof io);
    for (;;) {
        /* after an error no tile is claimed: every later claim would be a higher tile than the failed one */
        if (atomic_load_explicit(&J->error_tile, memory_order_relaxed) != INT64_MAX) return;
        const int64_t k = atomic_fetch_add_explicit(&J->next_tile, 1, memory_order_relaxed);
        if (k >= J->ntiles) return;
        const int64_t f0 = k * J->tile_rows, f1 = f0 + J->tile_rows < BT ? f0 + J->tile_rows : BT;
        double loss = 0.0;
        for (int64_t f = f0; f < f1; f++) {
            /* a lower tile failed: this one cannot hold the first bad row, stop. A higher tile's failure does not stop
             * this one, which may still find a bad row before it (the error reported is the first in row order). */
            if (atomic_load_explicit(&J->error_tile, memory_order_relaxed) < k) return;
            const int64_t b = f / T, t = f - b * T;
            void* g = (void*)row_ptr(pb->grad, pb->grad_dtype, pb->grad_stride_b, pb->grad_stride_t, b, t);
            if (!row_selected(pb, b, t)) {
                memset(g, 0, grow_bytes);
                zero_outputs(pb, f);
                continue;
            }
            int rc = AD_OK;
            if (io.w == NULL && (io.w = row_scratch(ad_row_scratch_floats(V))) == NULL) rc = AD_ERR_OUT_OF_MEMORY;
            if (rc == AD_OK) {
                if (b != cur_b) {
                    cur_b = b;
                    int64_t nb = T;
                    if (pb->mask != NULL) {
                        nb = 0;
                        for (int64_t u = 0; u < T; u++) nb += row_selected(pb, b, u);
                    }
                    row_scale = (pb->length_norm ? 1.0 / (double)nb : 1.0) / J->N;
                }
                io.s = row_ptr(pb->student, pb->student_dtype, pb->student_stride_b, pb->student_stride_t, b, t);
                io.d = row_ptr(pb->dpo, pb->dpo_dtype, pb->dpo_stride_b, pb->dpo_stride_t, b, t);
                io.r = J->P.use_second ? row_ptr(pb->second, pb->second_dtype, pb->second_stride_b, pb->second_stride_t, b, t) : NULL;
                io.g = g;
                io.row_scale = row_scale;
                io.bad_column = -1;
                rc = J->row(&J->P, &io);
            }
            if (rc != AD_OK) { /* tiles are claimed in increasing order: this worker's first error is its lowest */
                out->code = rc;
                out->token = f;
                out->column = rc == AD_ERR_NONFINITE ? io.bad_column : -1;
                out->tile = k;
                long long low = atomic_load_explicit(&J->error_tile, memory_order_relaxed);
                while (k < low && !atomic_compare_exchange_weak_explicit(&J->error_tile, &low, k, memory_order_relaxed, memory_order_relaxed)) {
                }
                return;
            }
            const double tl = io.coef * io.kl;
            loss += tl * row_scale;
            if (pb->weight) pb->weight[f] = (float)io.alpha;
            if (pb->token_loss) pb->token_loss[f] = (float)tl;
            if (pb->metrics) for (int m = 0; m < AD_FDL_METRICS; m++) pb->metrics[f * AD_FDL_METRICS + m] = (float)io.metrics[m];
        }
        J->tile_loss[k] = loss;
    }
}

/* Zeroes every grad row (unless in place) and every optional output. */
static void zero_everything(const ad_fdl_problem* pb, int in_place)
{
    const int64_t B = pb->batch, T = pb->seq;
    const size_t grow_bytes = (size_t)pb->vocab * dtype_size(pb->grad_dtype);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            if (!in_place)
                memset((void*)row_ptr(pb->grad, pb->grad_dtype, pb->grad_stride_b, pb->grad_stride_t, b, t), 0, grow_bytes);
            zero_outputs(pb, b * T + t);
        }
}

static int validate(const ad_fdl_problem* pb)
{
    if (pb->batch < 1 || pb->seq < 1 || pb->vocab < 1) return 0;
    if (pb->batch > INT64_MAX / pb->seq || pb->batch * pb->seq > INT64_MAX / AD_FDL_METRICS) return 0;
    if (pb->vocab > INT64_MAX / 8) return 0;
    if (pb->variant < AD_VARIANT_ALIGNDISTIL || pb->variant > AD_VARIANT_GKD) return 0;
    const int use_second = pb->variant != AD_VARIANT_GKD;
    if (pb->student == NULL || pb->dpo == NULL || pb->grad == NULL) return 0;
    if (use_second && pb->second == NULL) return 0;
    if (!valid_dtype(pb->student_dtype) || !valid_dtype(pb->dpo_dtype)) return 0;
    if (use_second && !valid_dtype(pb->second_dtype)) return 0;
    if (pb->grad_dtype != AD_F32 && pb->grad_dtype != pb->student_dtype) return 0;
    if (pb->length_norm != 0 && pb->length_norm != 1) return 0;
    if (!pos_finite(pb->beta) || !pos_finite(pb->beta2) || !pos_finite(pb->epsilon)
        || !pos_finite(pb->temperature) || !pos_finite(pb->student_temperature))
        return 0;
    if (!isfinite(pb->seq_divisor)) return 0;
    if (pb->grad == pb->student
        && (pb->grad_dtype != pb->student_dtype || pb->grad_stride_b != pb->student_stride_b
            || pb->grad_stride_t != pb->student_stride_t))
        return 0;
    return 1;
}

int32_t ad_fdl_cpu(const ad_fdl_problem* pb, ad_fdl_status* st, int32_t threads)
{
    if (st == NULL) return AD_ERR_INVALID_ARGUMENT;
    st->code = AD_OK;
    st->token = -1;
    st->column = -1;
    st->loss = 0.0;
    st->selected_rows = 0;
    st->sequences = 0;
    if (pb == NULL || !validate(pb)) {
        st->code = AD_ERR_INVALID_ARGUMENT;
        return AD_ERR_INVALID_ARGUMENT;
    }

    ad_job J; /* ~26 KB on the caller's stack; nothing on the heap */
    J.pb = pb;
    ad_row_params* P = &J.P;
    P->vocab = pb->vocab;
    P->variant = (int)pb->variant;
    P->use_second = pb->variant != AD_VARIANT_GKD;
    P->ds = (int)pb->student_dtype;
    P->dd = (int)pb->dpo_dtype;
    P->dr = P->use_second ? (int)pb->second_dtype : P->dd;
    P->dg = (int)pb->grad_dtype;
    P->beta = pb->beta;
    P->beta2 = pb->beta2;
    P->epsilon = pb->epsilon;
    P->temperature = pb->variant == AD_VARIANT_GKD ? 1.0 : pb->temperature;
    P->inv_ts = 1.0 / pb->student_temperature;
    P->want_metrics = pb->metrics != NULL;
    P->design = active_design();
    /* Centred logits are clamped below so that out-of-vocabulary columns (-inf) become finite values
     * whose exps are 0, and so that (a d' + b r')/T cannot overflow f32: |a| + |b| <= 1 + 2 alpha_max. */
    double amax;
    switch (pb->variant) {
    case AD_VARIANT_ALIGNDISTIL:
    case AD_VARIANT_ADAPTIVE: amax = 2.0 * pb->beta2 + pb->epsilon; break;
    case AD_VARIANT_CONTRAST:
    case AD_VARIANT_THEOREM1: amax = pb->beta / pb->beta2; break;
    default: amax = 0.0; break;
    }
    const double coefmax = (1.0 + 2.0 * amax) / P->temperature;
    double clt = 1e37 / coefmax;
    if (!(clt >= 1e6)) { /* teacher coefficients beyond 1e31: f32 arithmetic cannot represent them */
        st->code = AD_ERR_INVALID_ARGUMENT;
        return AD_ERR_INVALID_ARGUMENT;
    }
    P->clamp_teacher = (float)(clt < 1e30 ? clt : 1e30);
    P->clamp_student = 1e30f;
    const int isa = active_isa();
    J.row = k_isa_rows[isa];

    /* mask scan */
    const int64_t B = pb->batch, T = pb->seq, BT = B * T;
    int64_t selected = 0, nseq = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t nb = 0;
        if (pb->mask == NULL) nb = T;
        else for (int64_t t = 0; t < T; t++) nb += row_selected(pb, b, t);
        selected += nb;
        nseq += nb > 0;
    }
    st->selected_rows = selected;
    st->sequences = nseq;
    const int in_place = pb->grad == pb->student;
    if (selected == 0) {
        zero_everything(pb, 0);
        return AD_OK;
    }
    J.N = pb->seq_divisor > 0.0 ? pb->seq_divisor : (double)nseq;

    /* threads and the static partition */
    int64_t nt = threads > 0 ? threads : ad_pool_default_threads();
    if (nt > AD_POOL_MAX_THREADS) nt = AD_POOL_MAX_THREADS;
    if (nt > selected) nt = selected;
    if ((double)selected * (double)pb->vocab < 65536.0) nt = 1; /* too small to be worth a wake-up */
    atomic_init(&J.error_tile, INT64_MAX);
    int nw = (int)nt;
    if (nw > 1) {
        nw = ad_pool_acquire(nw);
        if (nw < 2) nw = 1; /* busy (another call is running) or no worker could start: run here */
    }
    J.tile_rows = (BT + AD_TILES - 1) / AD_TILES; /* depends on B*T only: the loss does not depend on nw */
    J.ntiles = (BT + J.tile_rows - 1) / J.tile_rows;
    atomic_init(&J.next_tile, 0);
    for (int w = 0; w < nw; w++) {
        J.res[w].code = AD_OK;
        J.res[w].token = -1;
        J.res[w].column = -1;
        J.res[w].tile = INT64_MAX;
    }
    if (nw == 1) {
        run_rows(&J, 0, 1);
    } else {
        ad_pool_run(run_rows, &J, nw);
        ad_pool_release();
    }

    int64_t code = AD_OK, token = -1, column = -1, tile = INT64_MAX;
    for (int w = 0; w < nw; w++) { /* the error met in the lowest tile */
        if (J.res[w].code != AD_OK && J.res[w].tile < tile) {
            tile = J.res[w].tile;
            code = J.res[w].code;
            token = J.res[w].token;
            column = J.res[w].column;
        }
    }
    if (code != AD_OK) {
        zero_everything(pb, in_place);
        st->code = code;
        st->token = token;
        st->column = column;
        return (int32_t)code;
    }
    double loss = 0.0;
    for (int64_t k = 0; k < J.ntiles; k++) loss += J.tile_loss[k];
    st->loss = loss;
    return AD_OK;
}
