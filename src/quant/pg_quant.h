/* pg_quant.h: the quantization of one matrix (spec/quant.md): the scale rules (SDClip row scales,
 * their Hessian-aware variant HSDClip, the GPTQ-lite percentile search per matrix or per row),
 * round-to-nearest (half to even) per-row quantization, and pg_quant_matrix, one matrix quantized
 * by a scale rule and a rounding rule (round-to-nearest, or GPTQ from pg_gptq.h).
 *
 * Every function is deterministic: the same inputs give the same bits for any thread count. */
#ifndef PG_QUANT_H
#define PG_QUANT_H

#include <stdint.h>

#include "pg_gptq.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Unbiased standard deviation of each row (fp64 sums, two passes), rounded to fp32. */
void pg_quant_row_std(const float *W, uint64_t rows, uint64_t cols, float *std_out);

/* SDClip scales: s[r] = fp16(max(fp32(fp32(k * std[r]) / R), 1e-10)), R = 2^(bits-1) - 1. */
void pg_quant_sdclip_scales(const float *W, uint64_t rows, uint64_t cols, float k, unsigned bits,
                            uint16_t *scales_f16);

/* q = clamp(rint(W / s), qmin, qmax) per row with the fp16 scale widened to fp32; rint rounds
 * half to even (as torch.round). Returns the number of values that were clamped. */
uint64_t pg_quant_rtn_rows(const float *W, uint64_t rows, uint64_t cols,
                           const uint16_t *scales_f16, int qmin, int qmax, int8_t *q);

/* ---- the other scale rules ------------------------------------------------------------------- */

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

#ifdef __cplusplus
}
#endif
#endif
