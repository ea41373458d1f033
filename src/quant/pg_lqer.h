/* pg_lqer.h: LQER, the low-rank repair of a quantization error (spec/quant.md, spec/records.md
 * §5.7): a deterministic top-r SVD of the error and the asymmetric int2/int4 packing of its
 * factors. The reader's side (pg_lqer_apply) is in format/pg_qtype.h. */
#ifndef PG_LQER_H
#define PG_LQER_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The rank-r factors of E ≈ A·B, packed asymmetrically (spec/records.md §5.7):
 *   A = U_r·diag(S_r) [rows × r], B = V_rᵀ [r × cols] from a top-r SVD of E (fp64, subspace
 *   iteration from a fixed seed, so deterministic);
 *   sA = fp16(max(max|A|, 1e-10) / 1.5), qA = clamp(rint(A / sA), −2, 1);
 *   B flattened row-major in groups of 64: sB_g = fp16(max(max_g |B|, 1e-10) / 7.5),
 *   qB = clamp(rint(B / sB_g), −8, 7).
 * r·cols must be a multiple of 64 (PG_E_ARG otherwise), r ≤ min(rows, cols).
 * qa [rows·r], qb [r·cols], sb [r·cols/64]. */
int pg_lqer_fit(const float *E, uint64_t rows, uint64_t cols, unsigned rank, int nthreads,
                int8_t *qa, uint16_t *sa, int8_t *qb, uint16_t *sb, pg_err *err);

/* The top-r singular triplets of E [rows × cols] (fp64): U [rows × r], S [r] descending,
 * Vt [r × cols]. Deterministic. */
int pg_svd_top(const float *E, uint64_t rows, uint64_t cols, unsigned rank, int nthreads,
               double *U, double *S, double *Vt, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
