/* pg_pack.h: from fp32 weights (and calibration Hessians) to a submission artifact
 * (spec/quant.md): the routing of each tensor (fp16 passthrough, int8 gate rows, or a matrix
 * quantized with GPTQ or round-to-nearest under SDClip, Hessian-aware SDClip or percentile
 * scales), LQER on the tensors with the largest error, the grouping of the values into DATA
 * sections with a codec chosen per section, and the fit of the clip constants (and optionally
 * of one category's bits) to a byte budget. The same inputs give the same bytes. */
#ifndef PG_PACK_H
#define PG_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "pg_calib.h"
#include "pg_codec.h"
#include "pg_gptq.h"
#include "pg_quant.h"
#include "pg_model.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The records' categories (spec/records.md §5.1): "tok_emb" or "lm_head" in the name → embed,
 * ".mlp." → mlp, ".attn." → attn, anything else → other. */
enum pg_pack_cat { PG_CAT_EMBED = 0, PG_CAT_ATTN = 1, PG_CAT_MLP = 2, PG_CAT_OTHER = 3,
                   PG_CAT_COUNT = 4 };
const char *pg_pack_cat_name(int cat);
int pg_pack_cat_parse(const char *s); /* -1 when unknown */
int pg_pack_classify(const char *name);

/* How quantized values are grouped into DATA sections. */
enum pg_pack_group {
  PG_PACK_GROUP_KIND = 0,     /* one section per tensor kind (name without "blocks.{i}."),
                                 in layer order */
  PG_PACK_GROUP_CATEGORY = 1, /* one section per category */
  PG_PACK_GROUP_SINGLE = 2    /* every value in one section */
};

/* Layout 2: which groups get their rows in similarity order. */
enum pg_pack_row_sort {
  PG_ROW_SORT_AUTO = 0,  /* where the group's sorted values plus permutations compress smaller */
  PG_ROW_SORT_ALWAYS = 1,
  PG_ROW_SORT_NEVER = 2
};

typedef struct pg_pack_recipe {
  unsigned bits[PG_CAT_COUNT]; /* 5..8 */
  float k[PG_CAT_COUNT];       /* SDClip k per category */
  int scale_rule;              /* enum pg_scale_rule */
  int round_rule;              /* enum pg_round_rule; GPTQ falls back to RTN per tensor without H */
  float lambda;                /* HSDClip λ */
  uint64_t passthrough_max;    /* tensors of at most this many elements (or ndim < 2): fp16 */
  int gate_int8;               /* "*.attn_gate_w" with 32 ≤ numel ≤ 8192: int8 rows */
  unsigned lqer_top_k, lqer_rank;
  int lqer_force;              /* 1: keep LQER even where it does not lower the error */
  pg_gptq_opts gptq;
  int block;                   /* GPTQ block (0: 128) */
  int group;                   /* enum pg_pack_group */
  int codec_best;              /* try every codec (and shuffle) per section, keep the smallest */
  pg_codec_spec codec;         /* else this one for every section */
  int packing;                 /* PG_PACK_BYTE or PG_PACK_BITS for the quantized values */
  int layout;                  /* 2: quantized matrices stored transposed, a group's rows in
                                  similarity order per row_sort (quant layout 2); 1: row-major */
  int row_sort;                /* layout 2: enum pg_pack_row_sort */
  int container;               /* container version written: 2 (compact) or 1 */
  int nthreads;
} pg_pack_recipe;

/* The LQER record's recipe: embed int7 k 14, attn int6 k 13, mlp int6 k 11.5, other int6 k 12.85,
 * SDClip scales, GPTQ (damp 0.01, act-order, block 128), fp16 passthrough ≤ 65,536, int8 gates,
 * LQER top 3 at rank 4, grouping by kind, best codec per section, one value per byte. */
pg_pack_recipe pg_pack_recipe_default(void);

/* Per-tensor facts after quantization. */
enum pg_pack_route { PG_ROUTE_F16 = 0, PG_ROUTE_GATE = 1, PG_ROUTE_QUANT = 2 };
typedef struct pg_pack_report {
  const char *name;
  int route, cat;
  unsigned bits;
  float k;             /* the clip constant used (recipe k × the fit's multiplier) */
  int gptq;            /* 1 GPTQ, 0 round-to-nearest */
  int gptq_failed;     /* GPTQ was asked for but every Cholesky failed: RTN instead */
  double damp_used;    /* GPTQ: damping fraction that succeeded */
  int retries;
  uint32_t dead_cols;
  uint64_t clamped;
  double mse;          /* mean (W − Ŵ)², LQER included */
  double rel_err;      /* herr (Hessian-weighted, relative) when H exists, else mse / mean W² */
  unsigned lqer_rank;  /* 0: none */
  double lqer_before, lqer_after; /* ‖W − Ŵ‖_F without and with the kept/tried correction */
  int lqer_tried;
} pg_pack_report;

typedef struct pg_packer pg_packer;

/* m and h (h may be NULL: no Hessians, round-to-nearest everywhere) must outlive the packer. */
int pg_packer_create(pg_packer **out, const pg_model *m, const pg_calib_hessians *h,
                     const pg_pack_recipe *r, pg_err *err);
void pg_packer_free(pg_packer *p);
const pg_pack_recipe *pg_packer_recipe(const pg_packer *p);
/* Change one category's bits (the fit does). */
void pg_packer_set_bits(pg_packer *p, int cat, unsigned bits);

/* Change how the next builds lay the values out (recipe fields layout, row_sort, container); the
 * quantization stays. PG_E_ARG on a value the recipe check refuses. */
int pg_packer_set_layout(pg_packer *p, int lay, int row_sort, int container);

/* Progress of quantization: tensors done of total, with the tensor's name. */
void pg_packer_set_progress(pg_packer *p, void (*fn)(void *ctx, size_t done, size_t total,
                                                       const char *name), void *ctx);

/* Quantize every tensor with the k's multiplied by mu; then LQER. GPTQ preparations (Cholesky)
 * are computed once per Hessian and reused. */
int pg_packer_quantize(pg_packer *p, double mu, pg_err *err);
size_t pg_packer_tensor_count(const pg_packer *p);
const pg_pack_report *pg_packer_report(const pg_packer *p, size_t i);
/* Mean over the quantized tensors of rel_err: the fit's error figure. */
double pg_packer_objective(const pg_packer *p);
/* dst (same arch) ← the dequantized weights, exactly what a reader of the artifact computes. */
int pg_packer_dequant(const pg_packer *p, pg_model *dst, pg_err *err);

/* ---- per-tensor settings, for the loss fit (pg_fit.h) ---- */

/* Quantize quant tensor i with `bits` (0: its category's) and its category's k × kmul (× the mu
 * of pg_packer_quantize) from now on. PG_E_ARG for another route or a bad value. */
int pg_packer_set_tensor(pg_packer *p, size_t i, unsigned bits, double kmul);
/* LQER of quant tensor i in the next quantizations: −1 the recipe's rule (the top-k by ‖E‖_F);
 * 0 none, 1 tried (kept where it lowers the error, as the rule's). Once any tensor is 0 or 1, the
 * tensors set to 1 are exactly those tried. PG_E_ARG for another route or value. */
int pg_packer_set_tensor_lqer(pg_packer *p, size_t i, int on);
/* Every tensor back to its category's setting (LQER: the recipe's rule); the fit facts
 * cleared. */
void pg_packer_clear_tensors(pg_packer *p);
/* on: later builds reuse the codecs the last --codec best build chose (as the fit does). */
void pg_packer_keep_codecs(pg_packer *p, int on);
pg_model *pg_packer_model(const pg_packer *p);
/* Record the loss fit's λ and, per tensor (model order, may be NULL), its sensitivity and
 * expected Δloss: quant.recipe then carries them (spec/quant.md §6.2). lambda NaN: none. */
void pg_packer_set_fit_info(pg_packer *p, double lambda, const double *sens, const double *proxy);

/* One quant tensor quantized alone at (bits, k × kmul), the packer unchanged. */
typedef struct pg_pack_probe {
  double err;           /* Σ_r e_r H e_rᵀ with its Hessian, else Σ e² (E = W − Ŵ, no LQER) */
  int has_hessian;
  double entropy_bytes; /* numel × the order-0 entropy of the values, in bytes */
  uint64_t rows, numel;
  /* with the recipe's LQER (top-k > 0) on a tensor its rank fits (else lqer_rank 0, lqer_err
   * NaN): the error after the correction the reader applies, measured as err is, and the
   * factors' packed bytes */
  unsigned lqer_rank;
  double lqer_err, lqer_bytes;
} pg_pack_probe;
/* wh (numel floats, may be NULL) ← Ŵ. GPTQ preparations are the cached ones. */
int pg_packer_probe(pg_packer *p, size_t i, unsigned bits, double kmul, pg_pack_probe *out,
                    float *wh, pg_err *err);

typedef struct pg_pack_code {
  const char *name;
  const uint8_t *bytes;
  size_t len;
} pg_pack_code;

/* What goes into the artifact besides the weights. */
typedef struct pg_pack_extras {
  const char *writer;    /* "pgpack 0.1" */
  const char *arch_name; /* NULL: "pgolf" */
  const uint8_t *tokenizer;
  size_t tokenizer_len;
  const char *tokenizer_name;
  const pg_pack_code *code;
  size_t ncode;
  const char *calib_source; /* NULL: none */
  uint64_t calib_xxh64;
  uint64_t calib_tokens;
  int have_seed;
  int64_t seed;
  const char *record;   /* provenance.record: the record the weights come from; NULL: none */
  const char *record_protocol; /* provenance.protocol: pgverify options of its figure; NULL */
  uint64_t budget;      /* recorded as budget.bytes (0: 16,000,000) */
  int count_tokenizer;  /* the budget counts the tokenizer section (pgsize's default) */
} pg_pack_extras;

/* Serialize the current quantization into artifact bytes (*out malloc'd); *counted is the
 * challenge's count of spec/accounting.md (model + code, + tokenizer when counted). */
int pg_packer_build(pg_packer *p, const pg_pack_extras *x, double mu, uint8_t **out, size_t *len,
                    uint64_t *counted, pg_err *err);

/* The records' row order for a matrix's values: a greedy nearest-neighbour chain that starts at
 * row 0 and repeatedly takes the unused row with the least L1 distance to the current one (ties
 * to the lowest index). perm[j] is the row placed j-th. O(rows² · cols). */
int pg_pack_row_chain(const int8_t *q, uint64_t rows, uint64_t cols, uint32_t *perm,
                      pg_err *err);

/* One int matrix of a group (the quantized values one DATA section holds), for the row sort. */
typedef struct pg_pack_mat {
  const int8_t *q; /* rows × cols values, row-major, one per byte */
  uint64_t rows, cols;
  unsigned ndim;   /* the tensor's; a group with a tensor of fewer than 2 is never sorted */
} pg_pack_mat;

/* Quant layout 2's row sort of one group of n matrices, each stored transposed: perms[i] ←
 * matrix i's pg_pack_row_chain order (malloc'd), for every matrix or for none (all NULL). With
 * PG_ROW_SORT_AUTO the group is sorted where its sorted image (brotli-11) plus the permutations
 * (perm, codec 6; brotli-11 where a matrix has over 65,536 rows) are smaller than its plain image
 * (brotli-11); the same values give the same choice. Every writer of layout 2 (pgpack, pgimport,
 * pgdemo) decides by this one rule. */
int pg_pack_group_orders(const pg_pack_mat *m, size_t n, int row_sort, uint32_t **perms,
                         pg_err *err);

/* ---- fitting to a budget ---- */

typedef struct pg_pack_trial {
  double mu;
  unsigned bits[PG_CAT_COUNT];
  uint64_t counted, file_bytes;
  double objective;
  int fits;
} pg_pack_trial;

typedef struct pg_pack_fit_opts {
  uint64_t budget;
  double tolerance;     /* land within budget·(1 − tolerance) .. budget; default 0.005 */
  int max_trials;       /* per bits choice; default 24 */
  int fit_cat;          /* −1: only k; else also try each bits value in bits_mask for this cat */
  unsigned bits_mask;   /* bit b set: try b bits (5..8) */
  void (*on_trial)(void *ctx, const pg_pack_trial *t);
  void *ctx;
} pg_pack_fit_opts;

/* Search the multiplier mu of every k (log-space bisection; size falls as k grows) so that the
 * count lands at or just under the budget; with fit_cat, do so for each bits choice and keep the
 * least objective. The packer is left quantized at the chosen trial, whose bytes are returned.
 * trials (malloc'd) lists every trial in order, *chosen indexes it. PG_E_LIMIT when nothing
 * tried fits. */
int pg_packer_fit(pg_packer *p, const pg_pack_extras *x, const pg_pack_fit_opts *o,
                  pg_pack_trial **trials, size_t *ntrials, size_t *chosen, uint8_t **out,
                  size_t *len, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
