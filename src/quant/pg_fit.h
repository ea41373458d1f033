/* pg_fit.h: the loss-aware budget fit (spec/quant.md §6.2). Each quantized tensor may take any
 * of a small set of options (bits 5..8 × a factor on its category's clip constant k, each with
 * or without the recipe's LQER, of which at most top-k tensors take one); every option's
 * Hessian-weighted error (after its LQER) and estimated bytes (with its LQER factors) are
 * measured once, each tensor's error is
 * put on the scale of the loss by a sensitivity measured on the calibration tokens (the loss
 * increase of quantizing that tensor alone), and a Lagrangian allocation (min Σ Δloss + λ·bytes)
 * is searched over λ until the real built artifact lands at or just under the budget. The
 * choice among the builds within the budget and the records' k fit at the same budget is by the
 * loss their artifacts' weights measure on held-out tokens. Every point explored is kept: the
 * loss-vs-bytes curve. The same inputs give the same bytes for any
 * thread count. */
#ifndef PG_FIT_H
#define PG_FIT_H

#include <stddef.h>
#include <stdint.h>

#include "pg_calib.h"
#include "pg_pack.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One point of the curve. */
typedef struct pg_fit_point {
  double lambda;    /* the price of a byte in loss (nats per token); NaN: the recipe's setting */
  double est_bytes; /* the estimated count of the allocation at lambda */
  uint64_t counted; /* the real count when built (0: estimated only) */
  uint64_t file_bytes;
  double dloss;     /* the expected loss increase of the allocation (nats per token) */
  int built, fits, chosen;
  int filled;       /* built from the allocation at lambda by upgrades that fill the gap up to
                       the budget (a Lagrangian allocation can jump over the window) */
  int kfit;         /* the records' recipe fitted to the budget (pg_packer_fit: one multiplier
                       mu of every clip constant, the category bits), a candidate of the
                       choice; lambda and dloss NaN */
  double mu;        /* kfit: its multiplier */
  double measured;  /* the measured loss of the artifact's weights (LQER included) on the
                       measuring tokens, nats per token; NaN: not measured */
} pg_fit_point;

/* "recipe", "k", "built" (a Lagrangian allocation), "filled" or "estimate" (not built). */
const char *pg_fit_point_kind(const pg_fit_point *p);

typedef struct pg_fit_opts {
  uint64_t budget;
  double tolerance;          /* land within budget·(1 − tolerance) .. budget; default 0.005 */
  int max_builds;            /* real builds of the search at most; default 16 */
  unsigned bits_mask;        /* bit b set: b bits is an option (5..8); 0: all four */
  const double *kmul;        /* factors on the category's k; NULL: 2^(i/2), i = −4..2 */
  int nkmul;
  const pg_calib_set *calib; /* tokens the sensitivities are measured on (unless sens) */
  int probe_seqs;            /* calibration rows they use (0: all) */
  int batch;                 /* rows per forward (0: 4) */
  const double *sens;        /* per tensor in model order: the sensitivities to use (NULL:
                                measure them) */
  /* the choice by measured loss (spec/quant.md §6.2 step 7) */
  int measure_max;           /* search builds measured at most, those of least expected loss
                                (0: 8); < 0: none, the least expected loss is chosen and the
                                k fit is not a candidate */
  int no_kfit;               /* 1: the k fit's solution is not a candidate */
  const pg_calib_set *measure; /* the measuring tokens (NULL: the first probe rows of calib) */
  /* events (each may be NULL): progress of the two measuring passes ("options",
   * "sensitivity"), and every point as it is explored */
  void (*on_progress)(void *ctx, const char *what, size_t done, size_t total);
  void (*on_point)(void *ctx, const pg_fit_point *pt);
  void *ctx;
} pg_fit_opts;

typedef struct pg_fit_result {
  pg_fit_point *points; /* every point in the order explored (malloc'd) */
  size_t npoints, chosen;
  size_t nt;            /* the model's tensor count */
  double *sens;         /* [nt] sensitivity (loss per unit of error); NaN: not a quant tensor */
  double *dloss;        /* [nt] expected Δloss of the chosen option; NaN likewise */
  double base_loss;     /* calibration loss of the unquantized weights (NaN with opts.sens) */
  double lambda;        /* the chosen point's λ */
  uint64_t measure_tokens; /* tokens each measured loss averages (0: none measured) */
} pg_fit_result;

void pg_fit_result_free(pg_fit_result *r);

/* Fit p (created with its Hessians, or none: then errors are plain Σ e²) to o->budget. Unless
 * o->measure_max < 0, the choice among the builds that fit (and the k fit's solution) is by
 * measured loss. The packer is left quantized at the chosen point (a loss point's recipe JSON
 * recording the per-tensor choice; the k point's bytes are pg_packer_fit's);
 * the chosen point's bytes are returned in *out. PG_E_LIMIT when no built point fits; PG_E_ARG
 * without calibration tokens and sensitivities. res is filled on success and on PG_E_LIMIT. */
int pg_packer_fit_loss(pg_packer *p, const pg_pack_extras *x, const pg_fit_opts *o,
                       pg_fit_result *res, uint8_t **out, size_t *len, pg_err *err);

/* The curve as TSV (a header line, then one line per point) or JSON; malloc'd text. */
char *pg_fit_curve_tsv(const pg_fit_result *r);
char *pg_fit_curve_json(const pg_fit_result *r);

#ifdef __cplusplus
}
#endif
#endif
