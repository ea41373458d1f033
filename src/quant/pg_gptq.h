/* pg_gptq.h: Hessian-aware quantization of one matrix (spec/quant.md): input Hessians H = Σ XᵀX
 * in fp64 sums, GPTQ with damping, dead columns, act-order, blocks of lazy updates and an fp64
 * Cholesky that retries at higher damping; the scale rules (SDClip, its Hessian-aware variant,
 * the GPTQ-lite percentile search per matrix or per row). LQER, the low-rank repair of the
 * quantization error, has its own header (pg_lqer.h).
 *
 * Every function is deterministic: the same inputs give the same bits for any thread count (work
 * is split by rows or by entries, never by a reduction whose order depends on the split). */
#ifndef PG_GPTQ_H
#define PG_GPTQ_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Hessians ---------------------------------------------------------------------------- */

/* Σ XᵀX over every row X of the inputs of one matrix (n = the matrix's input width). */
typedef struct pg_hessian {
  uint32_t n;
  uint64_t rows; /* rows accumulated so far */
  double *h;     /* n*n, row-major, symmetric (both triangles kept equal) */
} pg_hessian;

/* Zeroed n×n sums. PG_E_ARG for n = 0, PG_E_NOMEM. */
int pg_hessian_init(pg_hessian *H, uint32_t n, pg_err *err);
void pg_hessian_free(pg_hessian *H);
/* H += XᵀX for X [rows × n] (fp32): every product and sum in fp64, each entry summed over rows in
 * ascending order, so the result is the same for any nthreads (0: all CPUs). */
void pg_hessian_add(pg_hessian *H, const float *X, uint64_t rows, int nthreads);

/* ---- GPTQ preparation: the part that depends only on H (reused across scale trials) -------- */

typedef struct pg_gptq_opts {
  double damp;     /* damping as a fraction of the mean diagonal; default 0.01 */
  int act_order;   /* 1: columns in descending order of diag(H) (stable for ties) */
  int max_retries; /* Cholesky failures: damping ×10 and retry, at most this often; default 4 */
} pg_gptq_opts;
/* The defaults above. */
pg_gptq_opts pg_gptq_defaults(void);

typedef struct pg_gptq_prep {
  uint32_t n;
  uint32_t *perm;   /* [n] column order: position p holds original column perm[p] */
  double *u;        /* [n*n] row-major upper Cholesky factor of (H_damped)^-1, permuted order */
  uint8_t *dead;    /* [n] original column j had diag(H) == 0 (its weights are zeroed) */
  uint32_t n_dead;
  double damp_used; /* the damping fraction that succeeded */
  int retries;      /* Cholesky retries it took */
  double *diag;     /* [n] diag of the damped H in original column order (for HSDClip) */
} pg_gptq_prep;

/* From H (not modified): dead columns get diag 1; H += damp·mean(diag)·I; act-order permutation;
 * u = upper Cholesky of the inverse (fp64: Cholesky, inverse from the factor, Cholesky again).
 * On failure of either Cholesky (a pivot not positive and finite) the damping is multiplied by 10
 * and the whole step retried from H (with damp 0 a retry cannot help). o NULL: the defaults.
 * Runs on all CPUs; the result does not depend on their number.
 * PG_E_ARG when every retry fails (the caller falls back to round-to-nearest), PG_E_NOMEM. */
int pg_gptq_prepare(const pg_hessian *H, const pg_gptq_opts *o, pg_gptq_prep *p, pg_err *err);
void pg_gptq_prep_free(pg_gptq_prep *p);

/* GPTQ of W [rows × cols], cols == p->n, with fixed fp16 row scales s (widened to fp32, then used
 * in fp64): in the permuted column order, blocks of `block` columns (128 when 0), within a block
 *   q = clamp(rint(w_j / s), qmin, qmax);  e = (w_j − q·s) / u[j][j];  w_k −= e·u[j][k] (k > j in
 *   the block); after the block  w_k −= Σ_j e_j·u[j][k] for every later k (j ascending).
 * Dead columns are zeroed before and quantize to 0. The working row is fp64. q is written in the
 * original column order. Rows are independent, so they are split across threads. */
int pg_gptq_quantize(const float *W, uint64_t rows, uint64_t cols, const pg_gptq_prep *p,
                     const uint16_t *scales_f16, int qmin, int qmax, int block, int nthreads,
                     int8_t *q, pg_err *err);

/* ---- scale rules ------------------------------------------------------------------------- */

/* torch.quantile's linear interpolation on n sorted fp32 values, in fp32 arithmetic:
 * pos = q·(n−1), lo = floor(pos), hi = ceil(pos), w = pos − lo, d = v[hi] − v[lo], then torch's
 * lerp (ATen lerp_vec): w < 0.5: fma(w, d, v[lo]); else fma(w − 1, d, v[hi]) (one rounding each).
 * This is v[lo] + w·d in exact arithmetic, but the plain fp32 form can land one ulp away.
 * A NaN (sorted last) gives NaN; n = 0 gives NaN. */
float pg_quant_quantile_sorted(const float *sorted, uint64_t n, float q);

/* Hessian-aware SDClip (spec/quant.md, spec/records.md §5.5): with d = max(diag, 1e-8) (original
 * order), col_imp = d / mean(d), row_imp_i = mean_j |W_ij|·col_imp_j normalized to mean 1 (all
 * fp64), std_i from pg_quant_row_std, then in fp32 (left to right)
 *   s_i = fp16(max(k·std_i·(1 + λ(row_imp_i − 1)) / R, 1e-10)),  R = 2^(bits−1) − 1
 * (a NaN lands on the floor, as in pg_quant_sdclip_scales; λ = 0 gives SDClip's scales). */
void pg_quant_hsdclip_scales(const float *W, uint64_t rows, uint64_t cols, const double *diag,
                             float k, float lambda, unsigned bits, uint16_t *scales_f16);

/* The GPTQ-lite percentiles the records search: 0.999, 0.9995, 0.9999, 0.99999, 1.0. */
#define PG_QUANT_N_PCT 5
extern const float PG_QUANT_PCTS[PG_QUANT_N_PCT];
/* Scales of one percentile: clip_r = quantile(|W_r|, pct) (pct 1: the row max);
 * s_r = fp16(max(clip_r / R, 1/R)) with R = qmax >= 1 (the records' floor of 1/R); clip_r / R in
 * fp32, the floor is Python's 1.0/R rounded to fp32, as clamp_min receives it. */
void pg_quant_pct_scales(const float *W, uint64_t rows, uint64_t cols, float pct, int R,
                         uint16_t *scales_f16);

/* ---- one matrix, end to end -------------------------------------------------------------- */

enum pg_scale_rule {
  PG_SCALING_SDCLIP = 0,  /* fp16(k·std/R) */
  PG_SCALING_HSDCLIP = 1, /* Hessian-aware SDClip (needs diag) */
  PG_SCALING_PCT = 2,     /* GPTQ-lite: one percentile for the whole matrix, least MSE wins */
  PG_SCALING_PCT_ROW = 3, /* the same search, each row keeping its own best percentile */
};
enum pg_round_rule { PG_ROUND_RTN = 0, PG_ROUND_GPTQ = 1 };

typedef struct pg_qmat_opts {
  int scale_rule, round_rule;
  unsigned bits;          /* 5..8 */
  int qmin, qmax;         /* the clamp; both 0: symmetric ±(2^(bits−1) − 1) */
  float k, lambda;        /* SDClip k; HSDClip λ */
  const pg_gptq_prep *prep; /* required for PG_ROUND_GPTQ and PG_SCALING_HSDCLIP */
  int block;              /* GPTQ block (0: 128) */
  int nthreads;
} pg_qmat_opts;

typedef struct pg_qmat_stats {
  double mse;       /* mean over the matrix of (W − Ŵ)² */
  double herr;      /* Σ_r e_r H e_rᵀ / Σ_r w_r H w_rᵀ (relative output error; 0 without H) */
  uint64_t clamped; /* values that hit qmin or qmax */
  float pct;        /* PG_SCALING_PCT: the percentile chosen (else 0) */
} pg_qmat_stats;

/* Quantize W into q [rows×cols] and scales [rows] by the rule; Ŵ = q·fp16(s) (pg_dequant_rows).
 * H (may be NULL) is only read for stats->herr. */
int pg_quant_matrix(const float *W, uint64_t rows, uint64_t cols, const pg_qmat_opts *o,
                    const pg_hessian *H, int8_t *q, uint16_t *scales_f16, pg_qmat_stats *stats,
                    pg_err *err);

/* Σ_r e_r H e_rᵀ with E = A − B (rows × n), fp64, deterministic (computed as ⟨H, EᵀE⟩ with EᵀE
 * summed over rows in ascending order). NaN for bad arguments or when out of memory. */
double pg_quant_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H,
                            int nthreads);

#ifdef __cplusplus
}
#endif
#endif
