/*
 * fdl_cpu_internal.h: declarations shared by the CPU driver (fused_distill_loss.c), the per-ISA row kernels
 * (fused_distill_loss_rows.c, compiled once per ISA) and the worker pool (thread_pool.c). Not part of the ABI.
 */
#ifndef AD_FDL_CPU_INTERNAL_H
#define AD_FDL_CPU_INTERNAL_H

#include <stdint.h>
#include "aligndistil.h"

#if defined(__GNUC__)
#define AD_HIDDEN __attribute__((visibility("hidden")))
#else
#define AD_HIDDEN
#endif

/* padding of the row scratch ad_row_io.w: a partial last vector is stored whole (16 = the widest vector) */
#define AD_ROW_PAD 16
/* offset between the three rows of the row scratch (a multiple of 16 floats: 64-byte aligned) and its whole size */
static inline int64_t ad_row_scratch_stride(int64_t vocab) { return (vocab + AD_ROW_PAD + 15) & ~(int64_t)15; }
static inline int64_t ad_row_scratch_floats(int64_t vocab) { return 3 * ad_row_scratch_stride(vocab); }

/* Parameters common to every row of one call (read-only while the rows run). */
typedef struct ad_row_params {
    int64_t vocab;
    int     variant;        /* AD_VARIANT_* */
    int     use_second;     /* 0 for gkd: the second row is never read */
    int     ds, dd, dr, dg; /* dtypes: student, dpo, second, grad */
    double  beta, beta2, epsilon;
    double  temperature;    /* teacher T (1 for gkd) */
    double  inv_ts;         /* 1 / student temperature */
    float   clamp_student;  /* centred student logits are clamped to >= -clamp_student */
    float   clamp_teacher;  /* centred teacher logits are clamped to >= -clamp_teacher (keeps a d' + b r' finite) */
    int     want_metrics;
    int     design;         /* AD_ROW_DESIGN_*: the row design (auto: by ISA, dtype and vocabulary; see ad_row_recompute) */
} ad_row_params;

/* the row designs of fused_distill_loss_rows.c (ad_cpu_force_row_design) */
enum { AD_ROW_DESIGN_AUTO = 0, AD_ROW_DESIGN_CACHING = 1, AD_ROW_DESIGN_RECOMPUTING = 2 };

/* One row: inputs, the row scale, and what the kernel reports back. */
typedef struct ad_row_io {
    const void* s;          /* student row */
    const void* d;          /* dpo row */
    const void* r;          /* second row (NULL for gkd) */
    void*       g;          /* grad row (may equal s: in place) */
    float*      w;          /* row scratch, ad_row_scratch_floats(vocab) floats, 64-byte aligned, overwritten by every
                             * row: three rows ad_row_scratch_stride(vocab) apart. Pass A stores e^d', e^r', e^s' in
                             * rows 0, 1, 2; pass B reads rows 0 and 1; pass C stores the teacher logits over T in
                             * row 0; pass D reads rows 0 and 2 */
    double      row_scale;  /* (1/n_b if length_norm) / N */
    /* outputs */
    double      alpha;      /* weight */
    double      coef;
    double      kl;         /* K = KL(p || q) */
    double      metrics[3];
    int64_t     bad_column; /* AD_ERR_NONFINITE: first bad column of the row */
} ad_row_io;

/* Processes one selected row: validates it, computes alpha, K, the metrics and writes the grad row
 * (grad = (coef * row_scale / Ts) p (log p - log q - K)). Returns AD_OK, AD_ERR_NONFINITE (bad_column set)
 * or AD_ERR_EMPTY_ROW; on error the grad row has not been written. */
typedef int (*ad_row_fn)(const ad_row_params* P, ad_row_io* io);

AD_HIDDEN int ad_fdl_row_portable(const ad_row_params* P, ad_row_io* io);
AD_HIDDEN int ad_fdl_row_avx2(const ad_row_params* P, ad_row_io* io);
AD_HIDDEN int ad_fdl_row_avx512(const ad_row_params* P, ad_row_io* io);

/* ---- worker pool (thread_pool.c) ---- */
#define AD_POOL_MAX_THREADS 256

/* fn(arg, worker, nworkers) runs once for each worker index 0..nworkers-1; index 0 on the caller. */
typedef void (*ad_pool_fn)(void* arg, int worker, int nworkers);

/* Takes the pool for one call and makes sure it can run `want` workers (the caller included); returns how
 * many it can (2..want), or 0 when the pool is busy with another call or no worker thread could be started:
 * the caller then runs the work itself. A nonzero return must be followed by ad_pool_release. */
AD_HIDDEN int ad_pool_acquire(int want);
/* fn(arg, worker, nworkers) runs once for each worker index 0..nworkers-1 (index 0 on the caller) and
 * returns when all have finished. Only between ad_pool_acquire (which returned >= nworkers) and release. */
AD_HIDDEN void ad_pool_run(ad_pool_fn fn, void* arg, int nworkers);
AD_HIDDEN void ad_pool_release(void);

/* Default pool size (threads including the caller). */
AD_HIDDEN int ad_pool_default_threads(void);
AD_HIDDEN void ad_pool_set_default_threads(int n);

#endif /* AD_FDL_CPU_INTERNAL_H */
