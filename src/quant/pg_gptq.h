/* pg_gptq.h: Hessian-aware quantization of one matrix (spec/quant.md): input Hessians H = Σ XᵀX
 * in fp64 sums and the Hessian-weighted error, GPTQ with damping, dead columns, act-order, blocks
 * of lazy updates and an fp64 Cholesky that retries at higher damping. The scale rules and the
 * one-matrix driver (pg_quant_matrix) are pg_quant.h; LQER, the low-rank repair of the
 * quantization error, is pg_lqer.h.
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
/* The same, also counting per row the values that hit qmin or qmax (row_clamped [rows], may be
 * NULL). */
int pg_gptq_quantize_counted(const float *W, uint64_t rows, uint64_t cols, const pg_gptq_prep *p,
                             const uint16_t *scales_f16, int qmin, int qmax, int block,
                             int nthreads, int8_t *q, uint64_t *row_clamped, pg_err *err);

/* ---- Hessian-weighted errors ------------------------------------------------------------ */

/* Σ_r e_r H e_rᵀ with E = A − B (rows × n), fp64, deterministic (computed as ⟨H, EᵀE⟩ with EᵀE
 * summed over rows in ascending order). NaN for bad arguments or when out of memory. */
double pg_quant_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H,
                            int nthreads);
/* The same sum into *out, with B NULL meaning E = A; PG_E_ARG for bad arguments, PG_E_NOMEM. */
int pg_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H, int nthreads,
                   double *out, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
