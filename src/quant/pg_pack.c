/* pg_pack.c: routing, quantization, LQER, sections, codecs and the budget fit (pg_pack.h,
 * spec/quant.md). */
#include "pg_pack.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_account.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_lqer.h"
#include "pg_permcode.h"
#include "pg_qtype.h"
#include "pg_quant.h"
#include "pg_threads.h"

/* ---- categories ----------------------------------------------------------------------------- */

static const char *const CAT_NAMES[PG_CAT_COUNT] = {"embed", "attn", "mlp", "other"};

const char *pg_pack_cat_name(int cat) {
  return cat >= 0 && cat < PG_CAT_COUNT ? CAT_NAMES[cat] : "?";
}

int pg_pack_cat_parse(const char *s) {
  for (int c = 0; c < PG_CAT_COUNT; c++)
    if (strcmp(s, CAT_NAMES[c]) == 0) return c;
  return -1;
}

int pg_pack_classify(const char *name) {
  if (strstr(name, "tok_emb") || strstr(name, "lm_head")) return PG_CAT_EMBED;
  if (strstr(name, ".mlp.")) return PG_CAT_MLP;
  if (strstr(name, ".attn.")) return PG_CAT_ATTN;
  return PG_CAT_OTHER;
}

pg_pack_recipe pg_pack_recipe_default(void) {
  pg_pack_recipe r;
  memset(&r, 0, sizeof r);
  r.bits[PG_CAT_EMBED] = 7;
  r.bits[PG_CAT_ATTN] = 6;
  r.bits[PG_CAT_MLP] = 6;
  r.bits[PG_CAT_OTHER] = 6;
  r.k[PG_CAT_EMBED] = 14.0f;
  r.k[PG_CAT_ATTN] = 13.0f;
  r.k[PG_CAT_MLP] = 11.5f;
  r.k[PG_CAT_OTHER] = 12.85f;
  r.scale_rule = PG_SCALING_SDCLIP;
  r.round_rule = PG_ROUND_GPTQ;
  r.lambda = 0.175f;
  r.passthrough_max = 65536;
  r.gate_int8 = 1;
  r.lqer_top_k = 3;
  r.lqer_rank = 4;
  r.gptq = pg_gptq_defaults();
  r.block = 128;
  r.group = PG_PACK_GROUP_KIND;
  r.codec_best = 1;
  r.codec = (pg_codec_spec){.codec = PG_CODEC_BROTLI, .level = 11, .window = 24};
  r.packing = PG_PACK_BYTE;
  r.layout = 2;
  r.container = PG_CONTAINER_VERSION;
  r.nthreads = 0;
  return r;
}

/* ---- the packer ------------------------------------------------------------------------------ */

typedef struct ptensor {
  size_t ti;
  const pg_arch_tensor *at;
  int route, cat, group;
  uint64_t rows, cols, numel;
  long slot;
  int8_t *q;
  uint16_t *s;   /* row scales */
  uint16_t *f16; /* passthrough */
  int8_t *qa, *qb;
  uint16_t sa, *sb;
  uint32_t *perm; /* layout 2, sorted kinds: the stored row order of q (NULL: not computed) */
  pg_pack_report rep;
  char kind[PG_ARCH_NAME_MAX];
  double whw; /* Σ_r w_r H w_rᵀ (computed once; the denominator of rel_err) */
  int have_whw;
  unsigned set_bits; /* the loss fit's per-tensor setting: bits (0: the category's) */
  double set_kmul;   /* ... and a factor on the category's k (1: none) */
  int set_lqer;      /* ... and LQER: −1 the recipe's top-k rule, 0 none, 1 tried (the fit's) */
  double fit_sens, fit_proxy; /* ... its sensitivity and expected Δloss (NaN: no loss fit) */
} ptensor;

typedef struct gprep {
  int state; /* 0 not tried, 1 ready, 2 failed */
  pg_gptq_prep p;
} gprep;

struct pg_packer {
  pg_model *m;
  const pg_calib_hessians *h;
  pg_pack_recipe r;
  ptensor *t;
  size_t nt;
  gprep *prep; /* per Hessian slot */
  size_t nprep;
  char **kinds; /* distinct value groups, in order of first appearance */
  size_t nkinds;
  void (*progress)(void *, size_t, size_t, const char *);
  void *pctx;
  int quantized;
  pg_codec_spec *fixed; /* the last --codec best choice, per section spec */
  size_t nfixed;
  int reuse_specs;      /* during a fit: reuse it */
  int orders_done;      /* layout 2: the row orders of this quantization are decided */
  double fit_lambda;    /* the loss fit's λ (NaN: the recipe was not chosen by a loss fit) */
};

static int check_recipe(const pg_pack_recipe *r, pg_err *err) {
  for (int c = 0; c < PG_CAT_COUNT; c++) {
    if (r->bits[c] < 5 || r->bits[c] > 8)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: %s bits %u not in 5..8",
                        CAT_NAMES[c], r->bits[c]);
    if (!(r->k[c] > 0) || !isfinite(r->k[c]))
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: %s clip k %g is not positive",
                        CAT_NAMES[c], (double)r->k[c]);
  }
  if (r->scale_rule < PG_SCALING_SDCLIP || r->scale_rule > PG_SCALING_PCT_ROW ||
      (r->round_rule != PG_ROUND_RTN && r->round_rule != PG_ROUND_GPTQ))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: unknown scale or rounding rule");
  if (r->lqer_top_k > 0 && (r->lqer_rank < 1 || r->lqer_rank > PG_MAX_LQER_RANK))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: LQER rank %u not in 1..%d",
                      r->lqer_rank, PG_MAX_LQER_RANK);
  if (r->group < PG_PACK_GROUP_KIND || r->group > PG_PACK_GROUP_SINGLE)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: unknown grouping");
  if (r->packing != PG_PACK_BYTE && r->packing != PG_PACK_BITS)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: unknown packing");
  if (r->layout != 1 && r->layout != 2)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: layout %d is not 1 or 2",
                      r->layout);
  if (r->row_sort < PG_ROW_SORT_AUTO || r->row_sort > PG_ROW_SORT_NEVER)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: unknown row sort");
  if (r->container != PG_CONTAINER_V1 && r->container != PG_CONTAINER_V2)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "recipe: container %d is not 1 or 2",
                      r->container);
  if (!r->codec_best) return pg_codec_spec_check(&r->codec, NULL, PG_NO_OFFSET, err);
  return PG_OK;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

/* "blocks.3.attn.c_q.weight" → "attn.c_q.weight"; other names unchanged. */
static void kind_of(const char *name, char *out, size_t cap) {
  const char *s = name;
  if (strncmp(name, "blocks.", 7) == 0) {
    const char *d = strchr(name + 7, '.');
    if (d) s = d + 1;
  }
  snprintf(out, cap, "%s", s);
}

int pg_packer_create(pg_packer **out, const pg_model *m, const pg_calib_hessians *h,
                     const pg_pack_recipe *r, pg_err *err) {
  *out = NULL;
  PG_TRY(check_recipe(r, err));
  pg_packer *p = calloc(1, sizeof *p);
  if (!p) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  p->m = (pg_model *)m;
  p->h = h;
  p->r = *r;
  p->fit_lambda = NAN;
  p->nt = pg_model_tensor_count(m);
  p->t = calloc(p->nt ? p->nt : 1, sizeof *p->t);
  p->kinds = calloc(p->nt ? p->nt : 1, sizeof *p->kinds);
  if (h && h->nh) {
    p->prep = calloc(h->nh, sizeof *p->prep);
    p->nprep = h->nh;
  }
  if (!p->t || !p->kinds || (h && h->nh && !p->prep)) {
    pg_packer_free(p);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  if (h && h->nt != p->nt) {
    pg_packer_free(p);
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "Hessians for %zu tensors, model has %zu", h->nt, p->nt);
  }
  for (size_t i = 0; i < p->nt; i++) {
    ptensor *t = &p->t[i];
    const pg_arch_tensor *at = pg_model_tensor(m, i);
    t->ti = i;
    t->at = at;
    t->numel = pg_arch_tensor_numel(at);
    t->rows = at->ndim >= 1 ? at->shape[0] : 1;
    t->cols = t->rows ? t->numel / t->rows : 0;
    t->cat = pg_pack_classify(at->name);
    t->set_kmul = 1.0;
    t->set_lqer = -1;
    t->fit_sens = t->fit_proxy = NAN;
    t->slot = h ? h->slot[i] : -1;
    if (t->slot >= 0 && (size_t)t->slot < h->nh && h->H[t->slot].n != t->cols) t->slot = -1;
    if (r->gate_int8 && at->ndim == 2 && ends_with(at->name, ".attn_gate_w") && t->numel >= 32 &&
        t->numel <= 8192)
      t->route = PG_ROUTE_GATE;
    else if (at->ndim < 2 || t->numel <= r->passthrough_max)
      t->route = PG_ROUTE_F16;
    else
      t->route = PG_ROUTE_QUANT;
    t->rep.name = at->name;
    t->rep.route = t->route;
    t->rep.cat = t->cat;
    if (t->route == PG_ROUTE_QUANT) {
      char k[PG_ARCH_NAME_MAX];
      if (r->group == PG_PACK_GROUP_KIND)
        kind_of(at->name, k, sizeof k);
      else if (r->group == PG_PACK_GROUP_CATEGORY)
        snprintf(k, sizeof k, "%s", CAT_NAMES[t->cat]);
      else
        snprintf(k, sizeof k, "values");
      size_t g = 0;
      while (g < p->nkinds && strcmp(p->kinds[g], k) != 0) g++;
      if (g == p->nkinds) {
        p->kinds[g] = strdup(k);
        if (!p->kinds[g]) {
          pg_packer_free(p);
          return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
        }
        p->nkinds++;
      }
      t->group = (int)g;
    }
  }
  *out = p;
  return PG_OK;
}

static void free_q(ptensor *t) {
  free(t->q);
  free(t->s);
  free(t->f16);
  free(t->qa);
  free(t->qb);
  free(t->sb);
  free(t->perm);
  t->perm = NULL;
  t->q = t->qa = t->qb = NULL;
  t->s = t->f16 = t->sb = NULL;
}

void pg_packer_free(pg_packer *p) {
  if (!p) return;
  for (size_t i = 0; p->t && i < p->nt; i++) free_q(&p->t[i]);
  for (size_t i = 0; i < p->nprep; i++)
    if (p->prep[i].state == 1) pg_gptq_prep_free(&p->prep[i].p);
  for (size_t i = 0; i < p->nkinds; i++) free(p->kinds[i]);
  free(p->kinds);
  free(p->prep);
  free(p->fixed);
  free(p->t);
  free(p);
}

const pg_pack_recipe *pg_packer_recipe(const pg_packer *p) { return &p->r; }

void pg_packer_set_bits(pg_packer *p, int cat, unsigned bits) {
  if (cat >= 0 && cat < PG_CAT_COUNT) p->r.bits[cat] = bits;
}

void pg_packer_set_progress(pg_packer *p, void (*fn)(void *, size_t, size_t, const char *),
                            void *ctx) {
  p->progress = fn;
  p->pctx = ctx;
}

size_t pg_packer_tensor_count(const pg_packer *p) { return p->nt; }
const pg_pack_report *pg_packer_report(const pg_packer *p, size_t i) {
  return i < p->nt ? &p->t[i].rep : NULL;
}

static const float *weights(const pg_packer *p, size_t i) {
  return pg_model_data(p->m, i);
}

/* Ŵ of a quantized tensor (LQER included) into out [rows·cols]. */
static void dequant_t(const ptensor *t, float *out) {
  pg_dequant_rows(t->q, t->s, t->rows, t->cols, out);
  if (t->rep.lqer_rank)
    pg_lqer_apply(out, t->rows, t->cols, t->rep.lqer_rank, t->qa, t->sa, t->qb, t->sb);
}

static double mean_sq(const float *w, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; i++) s += (double)w[i] * (double)w[i];
  return n ? s / (double)n : 0;
}

static double frob_diff(const float *a, const float *b, uint64_t n) {
  double s = 0;
  for (uint64_t i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    s += d * d;
  }
  return sqrt(s);
}

/* Σ_r w_r H w_rᵀ of tensor t, computed once (it does not change between trials). */
static double whw(const pg_packer *p, ptensor *t, const float *W) {
  if (!t->have_whw) {
    float *zero = calloc((size_t)t->numel, sizeof *zero);
    if (!zero) return NAN;
    t->whw = pg_quant_hessian_err(W, zero, t->rows, &p->h->H[t->slot], p->r.nthreads);
    t->have_whw = 1;
    free(zero);
  }
  return t->whw;
}

/* Relative error of Ŵ against W: Hessian-weighted when t has H, else MSE over mean W². */
static double rel_err(const pg_packer *p, ptensor *t, const float *W, const float *Wh) {
  if (t->slot >= 0) {
    double den = whw(p, t, W);
    double num = pg_quant_hessian_err(W, Wh, t->rows, &p->h->H[t->slot], p->r.nthreads);
    return den > 0 ? num / den : 0;
  }
  double ms = mean_sq(W, t->numel), d = frob_diff(W, Wh, t->numel);
  return ms > 0 ? d * d / (double)t->numel / ms : 0;
}

static int quant_gate(ptensor *t, const float *W) {
  for (uint64_t r = 0; r < t->rows; r++) {
    float mx = 0;
    for (uint64_t c = 0; c < t->cols; c++) {
      float a = fabsf(W[r * t->cols + c]);
      if (a > mx) mx = a;
    }
    if (!(mx >= 1e-10f)) mx = 1e-10f;
    t->s[r] = pg_f32_to_f16(mx / 127.0f);
  }
  t->rep.clamped = pg_quant_rtn_rows(W, t->rows, t->cols, t->s, -127, 127, t->q);
  t->rep.bits = 8;
  return PG_OK;
}

static const pg_gptq_prep *get_prep(pg_packer *p, long slot, pg_err *err) {
  if (slot < 0 || (size_t)slot >= p->nprep) return NULL;
  gprep *g = &p->prep[slot];
  if (g->state == 0) {
    pg_err e2;
    int rc = pg_gptq_prepare(&p->h->H[slot], &p->r.gptq, &g->p, &e2);
    g->state = rc ? 2 : 1;
    if (rc == PG_E_NOMEM) {
      if (err) *err = e2;
      g->state = 0;
      return NULL;
    }
  }
  return g->state == 1 ? &g->p : NULL;
}

/* The options of one matrix at (bits, k): GPTQ with the cached preparation where it has H. */
static int qmat_opts(pg_packer *p, const ptensor *t, unsigned bits, float k, pg_qmat_opts *o,
                     int *want_gptq, pg_err *err) {
  const pg_pack_recipe *r = &p->r;
  const pg_gptq_prep *prep = NULL;
  *want_gptq = r->round_rule == PG_ROUND_GPTQ && t->slot >= 0;
  int want_prep = *want_gptq || (r->scale_rule == PG_SCALING_HSDCLIP && t->slot >= 0);
  if (want_prep) {
    pg_err e2 = {0};
    prep = get_prep(p, t->slot, &e2);
    if (!prep && e2.status == PG_E_NOMEM) {
      if (err) *err = e2;
      return PG_E_NOMEM;
    }
  }
  *o = (pg_qmat_opts){.scale_rule = r->scale_rule,
                      .round_rule = *want_gptq && prep ? PG_ROUND_GPTQ : PG_ROUND_RTN,
                      .bits = bits,
                      .k = k,
                      .lambda = r->lambda,
                      .prep = prep,
                      .block = r->block,
                      .nthreads = r->nthreads};
  if (o->scale_rule == PG_SCALING_HSDCLIP && !prep) o->scale_rule = PG_SCALING_SDCLIP;
  return PG_OK;
}

static unsigned tensor_bits(const pg_packer *p, const ptensor *t) {
  return t->set_bits ? t->set_bits : p->r.bits[t->cat];
}

static float tensor_k(const pg_packer *p, const ptensor *t, double mu, double kmul) {
  return (float)((double)p->r.k[t->cat] * mu * kmul);
}

static int quant_matrix(pg_packer *p, ptensor *t, const float *W, double mu, pg_err *err) {
  pg_qmat_opts o;
  int want_gptq;
  PG_TRY(qmat_opts(p, t, tensor_bits(p, t), tensor_k(p, t, mu, t->set_kmul), &o, &want_gptq,
                   err));
  const pg_gptq_prep *prep = o.prep;
  pg_qmat_stats st;
  /* no H for the stats: rel_err computes the output error once, with a cached denominator */
  PG_TRY(pg_quant_matrix(W, t->rows, t->cols, &o, NULL, t->q, t->s, &st, err));
  t->rep.bits = o.bits;
  t->rep.k = o.k;
  t->rep.gptq = o.round_rule == PG_ROUND_GPTQ;
  t->rep.gptq_failed = want_gptq && !prep;
  t->rep.damp_used = prep ? prep->damp_used : 0;
  t->rep.retries = prep ? prep->retries : 0;
  t->rep.dead_cols = prep ? prep->n_dead : 0;
  t->rep.clamped = st.clamped;
  return PG_OK;
}

static int cmp_err_desc(const void *a, const void *b) {
  const ptensor *x = *(ptensor *const *)a, *y = *(ptensor *const *)b;
  if (x->rep.lqer_before > y->rep.lqer_before) return -1;
  if (x->rep.lqer_before < y->rep.lqer_before) return 1;
  return x->ti < y->ti ? -1 : x->ti > y->ti;
}

/* LQER on the top-k quantized tensors by ‖W − Ŵ‖_F; kept where it lowers the error. */
static int lqer_pass(pg_packer *p, float *wh, float *e, pg_err *err) {
  const pg_pack_recipe *r = &p->r;
  size_t nq = 0;
  ptensor **list = malloc((p->nt ? p->nt : 1) * sizeof *list);
  if (!list) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t i = 0; i < p->nt; i++) {
    ptensor *t = &p->t[i];
    if (t->route != PG_ROUTE_QUANT) continue;
    const float *W = weights(p, i);
    dequant_t(t, wh);
    t->rep.lqer_before = frob_diff(W, wh, t->numel);
    list[nq++] = t;
  }
  /* the loss fit may name the tensors itself (its proxy priced LQER per option): then exactly
   * those are tried, in canonical order; else the top-k by ‖E‖_F */
  int named = 0;
  for (size_t k = 0; k < nq; k++) named |= list[k]->set_lqer >= 0;
  size_t ntry = 0;
  if (named) {
    for (size_t k = 0; k < nq; k++)
      if (list[k]->set_lqer == 1) list[ntry++] = list[k];
  } else {
    qsort(list, nq, sizeof *list, cmp_err_desc);
    ntry = nq < r->lqer_top_k ? nq : r->lqer_top_k;
  }
  int rc = PG_OK;
  for (size_t k = 0; k < ntry && !rc; k++) {
    ptensor *t = list[k];
    unsigned rank = r->lqer_rank;
    if (rank > t->rows || rank > t->cols || ((uint64_t)rank * t->cols) % PG_LQER_GROUP) continue;
    const float *W = weights(p, t->ti);
    dequant_t(t, wh);
    for (uint64_t i = 0; i < t->numel; i++) e[i] = W[i] - wh[i];
    t->qa = malloc((size_t)(t->rows * rank));
    t->qb = malloc((size_t)(rank * t->cols));
    t->sb = malloc((size_t)(rank * t->cols / PG_LQER_GROUP) * sizeof *t->sb);
    if (!t->qa || !t->qb || !t->sb) {
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
      break;
    }
    rc = pg_lqer_fit(e, t->rows, t->cols, rank, r->nthreads, t->qa, &t->sa, t->qb, t->sb, err);
    if (rc) break;
    t->rep.lqer_tried = 1;
    /* the error with the correction applied as the reader applies it */
    pg_lqer_apply(wh, t->rows, t->cols, rank, t->qa, t->sa, t->qb, t->sb);
    t->rep.lqer_after = frob_diff(W, wh, t->numel);
    double before_rel = t->slot >= 0 ? 0 : 1, after_rel = 0;
    if (t->slot >= 0) {
      /* judge by the output error where a Hessian exists */
      const pg_hessian *H = &p->h->H[t->slot];
      float *w0 = e; /* reuse: Ŵ without LQER */
      dequant_t(t, w0); /* rank still 0 here: plain Ŵ */
      before_rel = pg_quant_hessian_err(W, w0, t->rows, H, r->nthreads);
      after_rel = pg_quant_hessian_err(W, wh, t->rows, H, r->nthreads);
    } else {
      before_rel = t->rep.lqer_before;
      after_rel = t->rep.lqer_after;
    }
    if (after_rel < before_rel || r->lqer_force) {
      t->rep.lqer_rank = rank;
    } else {
      free(t->qa);
      free(t->qb);
      free(t->sb);
      t->qa = t->qb = NULL;
      t->sb = NULL;
    }
  }
  free(list);
  return rc;
}

/* ---- per-tensor settings (the loss fit, pg_fit.h) -------------------------------------------- */

int pg_packer_set_tensor(pg_packer *p, size_t i, unsigned bits, double kmul) {
  if (i >= p->nt || p->t[i].route != PG_ROUTE_QUANT || (bits && (bits < 5 || bits > 8)) ||
      !(kmul > 0) || !isfinite(kmul))
    return PG_E_ARG;
  p->t[i].set_bits = bits;
  p->t[i].set_kmul = kmul;
  return PG_OK;
}

int pg_packer_set_tensor_lqer(pg_packer *p, size_t i, int on) {
  if (i >= p->nt || p->t[i].route != PG_ROUTE_QUANT || on < -1 || on > 1) return PG_E_ARG;
  p->t[i].set_lqer = on;
  return PG_OK;
}

void pg_packer_clear_tensors(pg_packer *p) {
  for (size_t i = 0; i < p->nt; i++) {
    p->t[i].set_bits = 0;
    p->t[i].set_kmul = 1.0;
    p->t[i].set_lqer = -1;
    p->t[i].fit_proxy = NAN;
    p->t[i].fit_sens = NAN;
  }
  p->fit_lambda = NAN;
}

void pg_packer_keep_codecs(pg_packer *p, int on) { p->reuse_specs = on; }

pg_model *pg_packer_model(const pg_packer *p) { return p->m; }

void pg_packer_set_fit_info(pg_packer *p, double lambda, const double *sens, const double *proxy) {
  p->fit_lambda = lambda;
  for (size_t i = 0; i < p->nt; i++) {
    p->t[i].fit_sens = sens ? sens[i] : NAN;
    p->t[i].fit_proxy = proxy ? proxy[i] : NAN;
  }
}

/* Order-0 entropy of n values in [−128, 127], in bytes: Σ_v c_v·log2(n / c_v) / 8. */
static double entropy_bytes(const int8_t *q, uint64_t n) {
  uint64_t c[256] = {0};
  for (uint64_t i = 0; i < n; i++) c[(uint8_t)q[i]]++;
  double s = 0;
  for (int v = 0; v < 256; v++)
    if (c[v]) s += (double)c[v] * log2((double)n / (double)c[v]);
  return s / 8.0;
}

/* A probe's error of the reconstruction w against W: Σ_r e_r H e_rᵀ with the tensor's Hessian,
 * else Σ e² (spec/quant.md §6.2 step 1); NaN when the Hessian product could not allocate. */
static double probe_err(const pg_packer *p, const ptensor *t, const float *W, const float *w) {
  if (t->slot >= 0) return pg_quant_hessian_err(W, w, t->rows, &p->h->H[t->slot], p->r.nthreads);
  double d = frob_diff(W, w, t->numel);
  return d * d;
}

/* The probe's LQER facts, when the recipe runs LQER and this tensor can take it: the rank-r
 * correction of E = W − Ŵ fitted and applied exactly as lqer_pass does, the error after it
 * measured as out->err is, and the factors' packed bytes (spec/format.md §5). wh is Ŵ. */
static int probe_lqer(pg_packer *p, const ptensor *t, const float *W, const float *wh,
                      pg_pack_probe *out, pg_err *err) {
  const unsigned rank = p->r.lqer_rank;
  if (p->r.lqer_top_k == 0 || rank > t->rows || rank > t->cols ||
      ((uint64_t)rank * t->cols) % PG_LQER_GROUP)
    return PG_OK;
  const size_t na = (size_t)(t->rows * rank), nb = (size_t)(rank * t->cols);
  float *e = malloc((size_t)t->numel * sizeof *e);
  float *wl = malloc((size_t)t->numel * sizeof *wl);
  int8_t *qa = malloc(na), *qb = malloc(nb);
  uint16_t sa = 0, *sb = malloc(nb / PG_LQER_GROUP * sizeof *sb);
  int rc = (!e || !wl || !qa || !qb || !sb)
               ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
               : PG_OK;
  if (!rc) {
    for (uint64_t k = 0; k < t->numel; k++) e[k] = W[k] - wh[k];
    rc = pg_lqer_fit(e, t->rows, t->cols, rank, p->r.nthreads, qa, &sa, qb, sb, err);
  }
  if (!rc) {
    memcpy(wl, wh, (size_t)t->numel * sizeof *wl);
    pg_lqer_apply(wl, t->rows, t->cols, rank, qa, sa, qb, sb);
    out->lqer_err = probe_err(p, t, W, wl);
    if (!isfinite(out->lqer_err))
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "probe: out of memory");
    /* A at 2 bits, its scale, B at 4 bits, a scale per group of 64 */
    out->lqer_bytes = (double)((na * 2 + 7) / 8 + 2 + (nb * 4 + 7) / 8 + 2 * (nb / PG_LQER_GROUP));
    out->lqer_rank = rank;
  }
  free(e);
  free(wl);
  free(qa);
  free(qb);
  free(sb);
  return rc;
}

int pg_packer_probe(pg_packer *p, size_t i, unsigned bits, double kmul, pg_pack_probe *out,
                    float *wh, pg_err *err) {
  memset(out, 0, sizeof *out);
  if (i >= p->nt || p->t[i].route != PG_ROUTE_QUANT || bits < 5 || bits > 8 || !(kmul > 0) ||
      !isfinite(kmul))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "probe: tensor %zu, bits %u, k×%g", i,
                      bits, kmul);
  ptensor *t = &p->t[i];
  const float *W = weights(p, i);
  int8_t *q = malloc((size_t)t->numel);
  uint16_t *s = malloc((size_t)t->rows * sizeof *s);
  float *w2 = wh ? wh : malloc((size_t)t->numel * sizeof *w2);
  int rc = (!q || !s || !w2) ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
                             : PG_OK;
  pg_qmat_opts o;
  int want_gptq;
  if (!rc) rc = qmat_opts(p, t, bits, tensor_k(p, t, 1.0, kmul), &o, &want_gptq, err);
  pg_qmat_stats st;
  if (!rc) rc = pg_quant_matrix(W, t->rows, t->cols, &o, NULL, q, s, &st, err);
  if (!rc) {
    pg_dequant_rows(q, s, t->rows, t->cols, w2);
    out->has_hessian = t->slot >= 0;
    out->err = probe_err(p, t, W, w2);
    if (!isfinite(out->err))
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "probe: out of memory");
    out->entropy_bytes = entropy_bytes(q, t->numel);
    out->rows = t->rows;
    out->numel = t->numel;
  }
  out->lqer_err = NAN;
  if (!rc) rc = probe_lqer(p, t, W, w2, out, err);
  free(q);
  free(s);
  if (!wh) free(w2);
  return rc;
}

int pg_packer_quantize(pg_packer *p, double mu, pg_err *err) {
  if (!(mu > 0) || !isfinite(mu))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "clip multiplier %g", mu);
  PG_TRY(check_recipe(&p->r, err));
  uint64_t maxn = 0;
  for (size_t i = 0; i < p->nt; i++)
    if (p->t[i].numel > maxn) maxn = p->t[i].numel;
  float *wh = malloc((size_t)(maxn ? maxn : 1) * sizeof *wh);
  float *e = malloc((size_t)(maxn ? maxn : 1) * sizeof *e);
  int rc = (!wh || !e) ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory") : PG_OK;
  p->quantized = 0;
  p->orders_done = 0;
  for (size_t i = 0; i < p->nt && !rc; i++) {
    ptensor *t = &p->t[i];
    free_q(t);
    const char *name = t->rep.name;
    int route = t->rep.route, cat = t->rep.cat;
    memset(&t->rep, 0, sizeof t->rep);
    t->rep.name = name;
    t->rep.route = route;
    t->rep.cat = cat;
    const float *W = weights(p, i);
    if (t->route == PG_ROUTE_F16) {
      t->f16 = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *t->f16);
      if (!t->f16) {
        rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
        break;
      }
      for (uint64_t k = 0; k < t->numel; k++) t->f16[k] = pg_f32_to_f16(W[k]);
      t->rep.bits = 16;
      if (p->progress) p->progress(p->pctx, i + 1, p->nt, name);
      continue;
    }
    t->q = malloc((size_t)t->numel);
    t->s = malloc((size_t)t->rows * sizeof *t->s);
    if (!t->q || !t->s) {
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
      break;
    }
    rc = t->route == PG_ROUTE_GATE ? quant_gate(t, W) : quant_matrix(p, t, W, mu, err);
    if (rc) break;
    dequant_t(t, wh);
    t->rep.mse = frob_diff(W, wh, t->numel);
    t->rep.mse = t->rep.mse * t->rep.mse / (double)t->numel;
    t->rep.rel_err = rel_err(p, t, W, wh);
    if (p->progress) p->progress(p->pctx, i + 1, p->nt, name);
  }
  if (!rc && p->r.lqer_top_k > 0) rc = lqer_pass(p, wh, e, err);
  /* the final errors, LQER included */
  for (size_t i = 0; i < p->nt && !rc; i++) {
    ptensor *t = &p->t[i];
    if (t->route != PG_ROUTE_QUANT || !t->rep.lqer_rank) continue;
    const float *W = weights(p, i);
    dequant_t(t, wh);
    double d = frob_diff(W, wh, t->numel);
    t->rep.mse = d * d / (double)t->numel;
    t->rep.rel_err = rel_err(p, t, W, wh);
  }
  free(wh);
  free(e);
  if (!rc) p->quantized = 1;
  return rc;
}

double pg_packer_objective(const pg_packer *p) {
  double s = 0;
  size_t n = 0;
  for (size_t i = 0; i < p->nt; i++)
    if (p->t[i].route == PG_ROUTE_QUANT) {
      s += p->t[i].rep.rel_err;
      n++;
    }
  return n ? s / (double)n : 0;
}

int pg_packer_dequant(const pg_packer *p, pg_model *dst, pg_err *err) {
  if (!p->quantized)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: nothing quantized yet");
  if (pg_model_tensor_count(dst) != p->nt)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: a model of another arch");
  for (size_t i = 0; i < p->nt; i++) {
    const ptensor *t = &p->t[i];
    float *out = pg_model_data(dst, i);
    if (t->route == PG_ROUTE_F16)
      for (uint64_t k = 0; k < t->numel; k++) out[k] = pg_f16_to_f32(t->f16[k]);
    else
      dequant_t(t, out);
  }
  return PG_OK;
}

/* ---- serialization --------------------------------------------------------------------------- */

static int qtype_of_bits(unsigned bits) {
  switch (bits) {
  case 5: return PG_QTYPE_INT5;
  case 6: return PG_QTYPE_INT6;
  case 7: return PG_QTYPE_INT7;
  default: return PG_QTYPE_INT8;
  }
}

static const char *scale_rule_name(int r) {
  switch (r) {
  case PG_SCALING_SDCLIP: return "sdclip";
  case PG_SCALING_HSDCLIP: return "hsdclip";
  case PG_SCALING_PCT: return "percentile";
  case PG_SCALING_PCT_ROW: return "percentile-row";
  default: return "?";
  }
}

static const char *group_name(int g) {
  return g == PG_PACK_GROUP_KIND ? "kind" : g == PG_PACK_GROUP_CATEGORY ? "category" : "single";
}

/* The recipe and the per-tensor facts as JSON (keys sorted, compact: deterministic). */
static char *recipe_json(const pg_packer *p, double mu) {
  const pg_pack_recipe *r = &p->r;
  json_t *o = json_object();
  json_t *cats = json_object();
  for (int c = 0; c < PG_CAT_COUNT; c++) {
    json_t *co = json_object();
    json_object_set_new(co, "bits", json_integer(r->bits[c]));
    json_object_set_new(co, "k", json_real((double)r->k[c]));
    json_object_set_new(co, "k_used", json_real((double)(float)((double)r->k[c] * mu)));
    json_object_set_new(cats, CAT_NAMES[c], co);
  }
  json_object_set_new(o, "categories", cats);
  json_object_set_new(o, "k_multiplier", json_real(mu));
  json_object_set_new(o, "scales", json_string(scale_rule_name(r->scale_rule)));
  json_object_set_new(o, "rounding", json_string(r->round_rule == PG_ROUND_GPTQ ? "gptq" : "rtn"));
  if (r->scale_rule == PG_SCALING_HSDCLIP)
    json_object_set_new(o, "hsdclip_lambda", json_real((double)r->lambda));
  json_object_set_new(o, "passthrough_max", json_integer((json_int_t)r->passthrough_max));
  json_object_set_new(o, "gate_int8", json_boolean(r->gate_int8));
  json_t *g = json_object();
  json_object_set_new(g, "damp", json_real(r->gptq.damp));
  json_object_set_new(g, "act_order", json_boolean(r->gptq.act_order));
  json_object_set_new(g, "max_retries", json_integer(r->gptq.max_retries));
  json_object_set_new(g, "block", json_integer(r->block ? r->block : 128));
  json_object_set_new(o, "gptq", g);
  json_t *l = json_object();
  json_object_set_new(l, "top_k", json_integer(r->lqer_top_k));
  json_object_set_new(l, "rank", json_integer(r->lqer_rank));
  json_object_set_new(l, "force", json_boolean(r->lqer_force));
  json_object_set_new(o, "lqer", l);
  json_object_set_new(o, "grouping", json_string(group_name(r->group)));
  json_object_set_new(o, "packing", json_string(r->packing == PG_PACK_BITS ? "bits" : "byte"));
  json_object_set_new(o, "layout", json_integer(r->layout));
  if (r->layout == 2)
    json_object_set_new(o, "row_sort", json_string(r->row_sort == PG_ROW_SORT_AUTO     ? "auto"
                                                   : r->row_sort == PG_ROW_SORT_ALWAYS ? "always"
                                                                                       : "never"));
  json_t *ts = json_object();
  for (size_t i = 0; i < p->nt; i++) {
    const ptensor *t = &p->t[i];
    const pg_pack_report *rp = &t->rep;
    json_t *to = json_object();
    json_object_set_new(to, "route", json_string(t->route == PG_ROUTE_F16    ? "f16"
                                                 : t->route == PG_ROUTE_GATE ? "gate-int8-row"
                                                                             : "quant"));
    if (t->route == PG_ROUTE_QUANT) {
      json_object_set_new(to, "category", json_string(CAT_NAMES[t->cat]));
      json_object_set_new(to, "bits", json_integer(rp->bits));
      json_object_set_new(to, "k", json_real((double)rp->k));
      json_object_set_new(to, "rounding", json_string(rp->gptq ? "gptq" : "rtn"));
      if (rp->gptq_failed) json_object_set_new(to, "gptq_failed", json_true());
      if (rp->gptq) {
        json_object_set_new(to, "damp_used", json_real(rp->damp_used));
        json_object_set_new(to, "cholesky_retries", json_integer(rp->retries));
        json_object_set_new(to, "dead_columns", json_integer(rp->dead_cols));
      }
      json_object_set_new(to, "hessian", json_boolean(t->slot >= 0));
      json_object_set_new(to, "lqer_rank", json_integer(rp->lqer_rank));
      json_object_set_new(to, "rel_err", json_real(rp->rel_err));
      json_object_set_new(to, "clamped", json_integer((json_int_t)rp->clamped));
      if (isfinite(p->fit_lambda)) {
        /* the loss fit's choice for this tensor (spec/quant.md §6.2) */
        json_object_set_new(to, "k_factor", json_real(t->set_kmul));
        if (isfinite(t->fit_sens)) json_object_set_new(to, "sensitivity", json_real(t->fit_sens));
        if (isfinite(t->fit_proxy)) json_object_set_new(to, "dloss", json_real(t->fit_proxy));
      }
    }
    json_object_set_new(ts, t->rep.name, to);
  }
  json_object_set_new(o, "tensors", ts);
  if (isfinite(p->fit_lambda)) {
    json_t *f = json_object();
    double sum = 0;
    for (size_t i = 0; i < p->nt; i++)
      if (p->t[i].route == PG_ROUTE_QUANT && isfinite(p->t[i].fit_proxy))
        sum += p->t[i].fit_proxy;
    json_object_set_new(f, "method", json_string("loss"));
    json_object_set_new(f, "lambda", json_real(p->fit_lambda));
    json_object_set_new(f, "dloss", json_real(sum));
    json_object_set_new(o, "fit", f);
  }
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
  json_decref(o);
  return s;
}

/* Section specs: [0..nkinds) values, then scales, lqer, row perms, gates, f16, tokenizer, code
 * files. */
typedef struct layout {
  size_t nspec;
  pg_codec_spec *spec;
  size_t v0, s_scales, s_lqer, s_perm, s_gate, s_f16, s_tok, s_code0;
} layout;

static void layout_init(layout *L, const pg_packer *p, size_t ncode) {
  L->v0 = 0;
  L->s_scales = p->nkinds;
  L->s_lqer = L->s_scales + 1;
  L->s_perm = L->s_lqer + 1;
  L->s_gate = L->s_perm + 1;
  L->s_f16 = L->s_gate + 1;
  L->s_tok = L->s_f16 + 1;
  L->s_code0 = L->s_tok + 1;
  L->nspec = L->s_code0 + ncode;
}

int pg_packer_set_layout(pg_packer *p, int lay, int row_sort, int container) {
  pg_pack_recipe r = p->r;
  r.layout = lay;
  r.row_sort = row_sort;
  r.container = container;
  if (check_recipe(&r, NULL) != PG_OK) return PG_E_ARG;
  p->r = r;
  p->orders_done = 0;
  free(p->fixed); /* the codec choice was made on the other layout's bytes */
  p->fixed = NULL;
  p->nfixed = 0;
  return PG_OK;
}

/* Σ |a[i] − b[i]| over n bytes: the loop compilers turn into SAD instructions (psadbw). */
static uint32_t sad_u8(const uint8_t *a, const uint8_t *b, uint64_t n) {
  uint32_t d = 0;
  for (uint64_t i = 0; i < n; i++) d += (uint32_t)abs((int)a[i] - (int)b[i]);
  return d;
}

int pg_pack_row_chain(const int8_t *q, uint64_t rows, uint64_t cols, uint32_t *perm,
                      pg_err *err) {
  if (!rows) return PG_OK;
  /* offset-binary bytes keep |a − b| and let the distance loop vectorise; a candidate is dropped
   * as soon as its partial distance reaches the best so far (it cannot be strictly less) */
  const uint64_t n = rows * cols, blk = 128;
  uint8_t *w = malloc((size_t)(n ? n : 1));
  uint8_t *used = calloc((size_t)rows, 1);
  if (!w || !used) {
    free(w);
    free(used);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory for a row order");
  }
  for (uint64_t k = 0; k < n; k++) w[k] = (uint8_t)(q[k] + 128);
  uint64_t cur = 0;
  used[0] = 1;
  perm[0] = 0;
  for (uint64_t j = 1; j < rows; j++) {
    const uint8_t *a = w + cur * cols;
    uint64_t arg = UINT64_MAX;
    uint32_t bd = UINT32_MAX;
    for (uint64_t r = 0; r < rows; r++) {
      if (used[r]) continue;
      const uint8_t *b = w + r * cols;
      uint32_t d = 0;
      for (uint64_t c = 0; c < cols && d < bd; c += blk)
        d += sad_u8(a + c, b + c, cols - c < blk ? cols - c : blk);
      if (d < bd) { /* strict: ties keep the lowest index */
        bd = d;
        arg = r;
      }
    }
    used[arg] = 1;
    perm[j] = (uint32_t)arg;
    cur = arg;
  }
  free(w);
  free(used);
  return PG_OK;
}

/* The stored image of a group's matrices, each transposed (column-major) with its rows in the
 * order perms[i] (perms NULL: as they are), back to back in group order; and the perms' bytes. */
static int group_image(const pg_pack_mat *m, size_t n, uint32_t *const *perms, pg_buf *img,
                       pg_buf *pbytes) {
  for (size_t i = 0; i < n; i++) {
    const pg_pack_mat *t = &m[i];
    const uint64_t numel = t->rows * t->cols;
    const size_t at = img->len;
    if (pg_buf_reserve(img, (size_t)numel) != PG_OK) return PG_E_NOMEM;
    int8_t *o = (int8_t *)img->data + at;
    for (uint64_t j = 0; j < t->rows; j++) {
      const uint64_t r = perms ? perms[i][j] : j;
      for (uint64_t c = 0; c < t->cols; c++) o[c * t->rows + j] = t->q[r * t->cols + c];
      if (perms) {
        if (t->rows <= 65536) pg_buf_u16(pbytes, (uint16_t)r);
        else pg_buf_u32(pbytes, (uint32_t)r);
      }
    }
    img->len += (size_t)numel;
  }
  return img->oom || pbytes->oom ? PG_E_NOMEM : PG_OK;
}

static size_t encoded_size(const pg_buf *b, int *rc, pg_err *err) {
  static const pg_codec_spec BROTLI = {PG_CODEC_BROTLI, 11, 24, 0, 0};
  uint8_t *enc = NULL;
  size_t n = 0;
  if (!*rc) *rc = pg_codec_encode(&BROTLI, b->data ? b->data : (const uint8_t *)"", b->len, &enc,
                                  &n, err);
  free(enc);
  return n;
}

/* The stored size of a group's permutations: perm (codec 6, one segment a matrix) where every
 * entry is u16, as `--codec best` will store them; else brotli-11/w24. */
static size_t perms_size(const pg_pack_mat *m, size_t n, const pg_buf *pb, int *rc, pg_err *err) {
  pg_qc_seg *segs = malloc((n ? n : 1) * sizeof *segs);
  if (!segs) {
    if (!*rc) *rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    return 0;
  }
  int u16 = 1;
  for (size_t i = 0; i < n; i++) {
    segs[i] = (pg_qc_seg){(size_t)m[i].rows * 2, 1};
    u16 &= m[i].rows >= 1 && m[i].rows <= PG_PERM_MAX_N;
  }
  size_t sz = 0;
  uint8_t *enc = NULL;
  if (!u16) sz = encoded_size(pb, rc, err);
  else if (!*rc) *rc = pg_perm_encode(pb->data, pb->len, segs, n, &enc, &sz, err);
  free(enc);
  free(segs);
  return sz;
}

int pg_pack_group_orders(const pg_pack_mat *m, size_t n, int row_sort, uint32_t **perms,
                         pg_err *err) {
  int sort = n > 0 && row_sort != PG_ROW_SORT_NEVER;
  for (size_t i = 0; i < n; i++) {
    perms[i] = NULL;
    if (m[i].ndim < 2) sort = 0;
  }
  int rc = PG_OK;
  for (size_t i = 0; sort && !rc && i < n; i++) {
    perms[i] = malloc((size_t)(m[i].rows ? m[i].rows : 1) * sizeof *perms[i]);
    if (!perms[i]) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    if (!rc) rc = pg_pack_row_chain(m[i].q, m[i].rows, m[i].cols, perms[i], err);
  }
  int keep = sort && !rc && row_sort == PG_ROW_SORT_ALWAYS;
  if (sort && !rc && !keep) {
    pg_buf plain = {0}, sorted = {0}, pb = {0}, none = {0};
    if (group_image(m, n, NULL, &plain, &none) || group_image(m, n, perms, &sorted, &pb))
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    const size_t a = encoded_size(&plain, &rc, err);
    const size_t b = encoded_size(&sorted, &rc, err) + perms_size(m, n, &pb, &rc, err);
    keep = !rc && b < a;
    pg_buf_free(&plain);
    pg_buf_free(&sorted);
    pg_buf_free(&pb);
    pg_buf_free(&none);
  }
  for (size_t i = 0; !keep && i < n; i++) {
    free(perms[i]);
    perms[i] = NULL;
  }
  return rc;
}

/* Layout 2: the row order of each group's matrices (pg_pack_group_orders), for groups of
 * byte-per-value matrices. Decided once per quantization. */
static int row_orders(pg_packer *p, pg_err *err) {
  if (p->orders_done) return PG_OK;
  for (size_t i = 0; i < p->nt; i++) {
    free(p->t[i].perm);
    p->t[i].perm = NULL;
  }
  if (p->r.packing != PG_PACK_BYTE || p->r.row_sort == PG_ROW_SORT_NEVER) {
    p->orders_done = 1;
    return PG_OK;
  }
  pg_pack_mat *m = malloc((p->nt ? p->nt : 1) * sizeof *m);
  uint32_t **perms = malloc((p->nt ? p->nt : 1) * sizeof *perms);
  int rc = m && perms ? PG_OK : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t g = 0; !rc && g < p->nkinds; g++) {
    size_t n = 0;
    for (size_t i = 0; i < p->nt; i++) {
      const ptensor *t = &p->t[i];
      if (t->route == PG_ROUTE_QUANT && t->group == (int)g)
        m[n++] = (pg_pack_mat){t->q, t->rows, t->cols, (unsigned)t->at->ndim};
    }
    rc = pg_pack_group_orders(m, n, p->r.row_sort, perms, err);
    for (size_t i = 0, j = 0; !rc && i < p->nt; i++) {
      ptensor *t = &p->t[i];
      if (t->route == PG_ROUTE_QUANT && t->group == (int)g) t->perm = perms[j++];
    }
  }
  free(m);
  free(perms);
  if (!rc) p->orders_done = 1;
  return rc;
}

/* Add everything to a writer with these section specs. Empty DATA sections are not created
 * (a DATA section that no part names is not allowed); *data_map[k] says which spec index each
 * created DATA section came from. */
static int emit(pg_packer *p, const pg_pack_extras *x, double mu, const layout *L,
                const pg_codec_spec *spec, pg_writer **out, size_t *data_map, size_t *ndata,
                pg_err *err) {
  pg_writer *w = NULL;
  if (pg_writer_create(&w) != PG_OK)
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  pg_writer_set_threads(w, pg_parallel_threads(p->r.nthreads));
  int rc = pg_writer_set_container(w, p->r.container);
  if (!rc && p->r.layout == 2) rc = row_orders(p, err);
  /* which DATA sections are used */
  size_t nd = L->s_f16 + 1;
  int *used = calloc(nd, sizeof *used), *handle = calloc(nd, sizeof *handle);
  if (!used || !handle) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t i = 0; !rc && i < p->nt; i++) {
    const ptensor *t = &p->t[i];
    if (t->route == PG_ROUTE_F16) used[L->s_f16] = 1;
    if (t->route == PG_ROUTE_GATE) used[L->s_gate] = used[L->s_scales] = 1;
    if (t->route == PG_ROUTE_QUANT) {
      used[L->v0 + (size_t)t->group] = used[L->s_scales] = 1;
      if (t->rep.lqer_rank) used[L->s_lqer] = 1;
      if (t->perm && p->r.layout == 2) used[L->s_perm] = 1;
    }
  }
  *ndata = 0;
  const char **labels = calloc(nd, sizeof *labels);
  char *lbuf = calloc(nd, PG_ARCH_NAME_MAX + 16);
  if (!rc && (!labels || !lbuf))
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t k = 0; !rc && k < nd; k++) {
    if (!used[k]) continue;
    handle[k] = pg_writer_data_section(w, &spec[k], err);
    if (handle[k] < 0) rc = err ? err->status : PG_E_ARG;
    char *lb = lbuf + *ndata * (PG_ARCH_NAME_MAX + 16);
    if (k < L->s_scales)
      snprintf(lb, PG_ARCH_NAME_MAX + 16, "values %s", p->kinds[k - L->v0]);
    else
      snprintf(lb, PG_ARCH_NAME_MAX + 16, "%s",
               k == L->s_scales ? "row scales" : k == L->s_lqer ? "lqer factors"
                                             : k == L->s_perm   ? "row perms"
                                             : k == L->s_gate   ? "gate values"
                                                                : "f16 tensors");
    labels[*ndata] = lb;
    data_map[(*ndata)++] = k;
  }
  if (!rc) rc = pg_writer_meta_arr_str(w, "pack.data_sections", labels, (uint32_t)*ndata, err);
  free(labels);
  free(lbuf);
  for (size_t i = 0; !rc && i < p->nt; i++) {
    const ptensor *t = &p->t[i];
    pg_tensor_in in;
    memset(&in, 0, sizeof in);
    in.name = t->at->name;
    in.ndim = (unsigned)t->at->ndim;
    in.dims = t->at->shape;
    if (t->route == PG_ROUTE_F16) {
      in.qtype = PG_QTYPE_F16;
      in.values = t->f16;
      in.sec_values = handle[L->s_f16];
    } else {
      unsigned bits = t->rep.bits;
      int R = (1 << (bits - 1)) - 1;
      in.qtype = qtype_of_bits(bits);
      in.packing = t->route == PG_ROUTE_QUANT ? p->r.packing : PG_PACK_BYTE;
      in.scale_kind = PG_SCALE_ROW_F16;
      in.qmin = -R;
      in.qmax = R;
      in.values = t->q;
      in.row_scales = t->s;
      in.sec_values = t->route == PG_ROUTE_GATE ? handle[L->s_gate]
                                                : handle[L->v0 + (size_t)t->group];
      in.sec_scales = handle[L->s_scales];
      if (t->rep.lqer_rank) {
        in.lqer_rank = t->rep.lqer_rank;
        in.lqer_a = t->qa;
        in.lqer_a_scale = t->sa;
        in.lqer_b = t->qb;
        in.lqer_b_scales = t->sb;
        in.sec_lqer = handle[L->s_lqer];
      }
      if (t->route == PG_ROUTE_QUANT && p->r.layout == 2 && in.packing == PG_PACK_BYTE &&
          in.ndim >= 2) {
        in.order = PG_ORDER_COLS;
        if (t->perm) {
          in.perm = PG_PERM_STORED;
          in.row_perm = t->perm;
          in.sec_perm = handle[L->s_perm];
        }
      }
    }
    rc = pg_writer_tensor(w, &in, err);
  }
  /* metadata */
  char *recipe = rc ? NULL : recipe_json(p, mu);
  char *arch = NULL;
  if (!rc && !recipe) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  if (!rc) rc = pg_arch_serialize(pg_model_arch(p->m), &arch, err);
  const char *an = x->arch_name ? x->arch_name : "pgolf";
  const char *wr = x->writer ? x->writer : "pgpack";
  if (!rc) rc = pg_writer_meta_str(w, "pgolf.writer", wr, strlen(wr), err);
  if (!rc) rc = pg_writer_meta_str(w, "arch.name", an, strlen(an), err);
  if (!rc) rc = pg_writer_meta_str(w, "arch.json", arch, strlen(arch), err);
  const char *method = p->r.round_rule == PG_ROUND_GPTQ ? "gptq-" : "rtn-";
  char mbuf[64];
  snprintf(mbuf, sizeof mbuf, "%s%s", method, scale_rule_name(p->r.scale_rule));
  if (!rc) rc = pg_writer_meta_str(w, "quant.method", mbuf, strlen(mbuf), err);
  if (!rc) rc = pg_writer_meta_str(w, "quant.recipe", recipe, strlen(recipe), err);
  if (!rc)
    rc = pg_writer_meta_i64(w, "tokenizer.vocab_size", pg_model_arch(p->m)->vocab_size, err);
  if (!rc && x->tokenizer_name)
    rc = pg_writer_meta_str(w, "tokenizer.name", x->tokenizer_name, strlen(x->tokenizer_name),
                            err);
  if (!rc && x->calib_source) {
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)x->calib_xxh64);
    rc = pg_writer_meta_str(w, "provenance.calib_source", x->calib_source,
                            strlen(x->calib_source), err);
    if (!rc) rc = pg_writer_meta_str(w, "provenance.calib_xxh64", hex, 16, err);
    if (!rc) rc = pg_writer_meta_i64(w, "provenance.calib_tokens", (int64_t)x->calib_tokens, err);
  } else if (!rc) {
    const char *none = "none (round-to-nearest, no calibration)";
    rc = pg_writer_meta_str(w, "provenance.calib_source", none, strlen(none), err);
  }
  if (!rc && x->have_seed) rc = pg_writer_meta_i64(w, "provenance.seed", x->seed, err);
  if (!rc && x->record)
    rc = pg_writer_meta_str(w, "provenance.record", x->record, strlen(x->record), err);
  if (!rc && x->record_protocol)
    rc = pg_writer_meta_str(w, "provenance.protocol", x->record_protocol,
                            strlen(x->record_protocol), err);
  if (!rc)
    rc = pg_writer_meta_i64(w, "budget.bytes",
                            (int64_t)(x->budget ? x->budget : PG_DEFAULT_BUDGET), err);
  if (!rc && x->tokenizer)
    rc = pg_writer_tokenizer(w, x->tokenizer, x->tokenizer_len, &spec[L->s_tok], err);
  for (size_t c = 0; !rc && c < x->ncode; c++)
    rc = pg_writer_code(w, x->code[c].name, x->code[c].bytes, x->code[c].len,
                        &spec[L->s_code0 + c], err);
  free(recipe);
  free(arch);
  free(used);
  free(handle);
  if (rc) {
    pg_writer_free(w);
    return rc;
  }
  *out = w;
  return PG_OK;
}

/* The candidates of --codec best, in the order ties are broken. */
static const pg_codec_spec CANDIDATES[] = {
    {PG_CODEC_BROTLI, 11, 24, 0, 0}, {PG_CODEC_BROTLI, 11, 24, PG_TRANSFORM_SHUFFLE, 2},
    {PG_CODEC_LZMA, 9 | 0x80, 0, 0, 0}, {PG_CODEC_LZMA, 9 | 0x80, 0, PG_TRANSFORM_SHUFFLE, 2},
    {PG_CODEC_ZSTD, 22, 0, 0, 0},    {PG_CODEC_ZSTD, 22, 0, PG_TRANSFORM_SHUFFLE, 2},
    {PG_CODEC_QC, 0, 0, 0, 0}, /* only on sections of int values, with their layout hint */
    {PG_CODEC_PERM, 0, 0, 0, 0}, /* only on the row perms section, one segment per part */
};
#define N_CANDIDATES (sizeof CANDIDATES / sizeof CANDIDATES[0])

/* --codec best: every (section, candidate) pair is an independent job; workers take jobs from a
 * shared counter (largest sections first), so the choice does not depend on the thread count. */
typedef struct cjob {
  const uint8_t *raw;
  const pg_qc_seg *segs;
  size_t nsegs;
  size_t n, sec, cand, out_len;
  int rc;
  pg_err err;
} cjob;

typedef struct cpool {
  cjob *jobs;
  size_t n, next;
} cpool;

static void *codec_worker(void *arg) {
  cpool *pl = arg;
  for (;;) {
    size_t i = __atomic_fetch_add(&pl->next, 1, __ATOMIC_RELAXED);
    if (i >= pl->n) break;
    cjob *j = &pl->jobs[i];
    uint8_t *enc = NULL;
    j->rc = pg_codec_encode_segs(&CANDIDATES[j->cand], j->raw, j->n, j->segs, j->nsegs, &enc,
                                 &j->out_len, &j->err);
    free(enc);
  }
  return NULL;
}

static int cmp_job(const void *a, const void *b) {
  const cjob *x = a, *y = b;
  if (x->n != y->n) return x->n > y->n ? -1 : 1;
  if (x->sec != y->sec) return x->sec < y->sec ? -1 : 1;
  return x->cand < y->cand ? -1 : x->cand > y->cand;
}

/* raws[k] (n[k] bytes) for the sections k with want[k]; spec[k] ← the smallest candidate. qc is
 * tried only where segs[k] (the section's layout, nsegs[k] runs) is given. */
static int best_codecs(const uint8_t *const *raws, const size_t *n, const int *want,
                       pg_qc_seg *const *segs, const size_t *nsegs, size_t ns, size_t s_perm,
                       pg_codec_spec *spec, int nthreads, pg_err *err) {
  size_t nj = 0;
  cjob *jobs = calloc(ns * N_CANDIDATES + 1, sizeof *jobs);
  if (!jobs) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t k = 0; k < ns; k++)
    for (size_t c = 0; want[k] && c < N_CANDIDATES; c++) {
      if (CANDIDATES[c].transform && n[k] < 2) continue;
      if (CANDIDATES[c].codec == PG_CODEC_QC && (!segs[k] || k == s_perm)) continue;
      if (CANDIDATES[c].codec == PG_CODEC_PERM && (!segs[k] || k != s_perm)) continue;
      jobs[nj++] = (cjob){.raw = raws[k], .segs = segs[k], .nsegs = nsegs[k], .n = n[k], .sec = k,
                          .cand = c};
    }
  qsort(jobs, nj, sizeof *jobs, cmp_job);
  cpool pl = {.jobs = jobs, .n = nj};
  int T = pg_parallel_threads(nthreads);
  if ((size_t)T > nj) T = nj ? (int)nj : 1;
  pthread_t tids[PG_PARALLEL_MAX_THREADS];
  int started[PG_PARALLEL_MAX_THREADS] = {0};
  for (int t = 1; t < T; t++) started[t] = pthread_create(&tids[t], NULL, codec_worker, &pl) == 0;
  codec_worker(&pl);
  for (int t = 1; t < T; t++)
    if (started[t]) pthread_join(tids[t], NULL);
  int rc = PG_OK;
  size_t *best = malloc((ns ? ns : 1) * sizeof *best), *bc = malloc((ns ? ns : 1) * sizeof *bc);
  if (!best || !bc) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t k = 0; !rc && k < ns; k++) best[k] = SIZE_MAX, bc[k] = SIZE_MAX;
  for (size_t i = 0; !rc && i < nj; i++) {
    const cjob *j = &jobs[i];
    if (j->rc == PG_E_CODEC && CANDIDATES[j->cand].codec == PG_CODEC_PERM) continue; /* u32 */
    if (j->rc) {
      if (err) *err = j->err;
      rc = j->rc;
      break;
    }
    if (j->out_len < best[j->sec] || (j->out_len == best[j->sec] && j->cand < bc[j->sec])) {
      best[j->sec] = j->out_len;
      bc[j->sec] = j->cand;
    }
  }
  for (size_t k = 0; !rc && k < ns; k++)
    if (want[k] && bc[k] != SIZE_MAX) spec[k] = CANDIDATES[bc[k]];
  free(best);
  free(bc);
  free(jobs);
  return rc;
}

int pg_packer_build(pg_packer *p, const pg_pack_extras *x, double mu, uint8_t **out, size_t *len,
                    uint64_t *counted, pg_err *err) {
  *out = NULL;
  *len = 0;
  if (!p->quantized)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "build: nothing quantized yet");
  layout L;
  layout_init(&L, p, x->ncode);
  pg_codec_spec *spec = calloc(L.nspec, sizeof *spec);
  size_t *map = calloc(L.nspec, sizeof *map), nd = 0;
  if (!spec || !map) {
    free(spec);
    free(map);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  pg_writer *w = NULL;
  int rc = PG_OK;
  if (p->r.codec_best && p->reuse_specs && p->fixed && p->nfixed == L.nspec) {
    memcpy(spec, p->fixed, L.nspec * sizeof *spec);
  } else if (p->r.codec_best) {
    /* lay the sections out uncompressed, then pick each one's codec on its real bytes */
    for (size_t k = 0; k < L.nspec; k++) spec[k] = (pg_codec_spec){0};
    rc = emit(p, x, mu, &L, spec, &w, map, &nd, err);
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    if (!rc) rc = pg_writer_to_mem(w, &raw, &raw_len, err);
    pg_writer_free(w);
    w = NULL;
    pg_artifact *a = NULL;
    if (!rc) rc = pg_artifact_open_mem(&a, raw, raw_len, "(layout)", NULL, err);
    const uint8_t **raws = calloc(L.nspec, sizeof *raws);
    size_t *rn = calloc(L.nspec, sizeof *rn);
    int *want = calloc(L.nspec, sizeof *want);
    pg_qc_seg **segs = calloc(L.nspec, sizeof *segs);
    size_t *nsegs = calloc(L.nspec, sizeof *nsegs);
    if (!rc && (!raws || !rn || !want || !segs || !nsegs))
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    size_t di = 0, ci = 0;
    for (uint32_t s = 0; !rc && s < pg_artifact_section_count(a); s++) {
      const pg_section *sec = pg_artifact_section(a, s);
      size_t k;
      if (sec->kind == PG_SEC_DATA)
        k = map[di++];
      else if (sec->kind == PG_SEC_TOKENIZER)
        k = L.s_tok;
      else if (sec->kind == PG_SEC_CODE)
        k = L.s_code0 + ci++;
      else
        continue;
      rc = pg_artifact_section_raw(a, s, &raws[k], err);
      rn[k] = (size_t)sec->raw_size;
      want[k] = 1;
      /* int values: qc is a candidate, in container version 2 (it came with it) */
      /* the LQER factors are int values too (with their fp16 scales); and perm on the row
       * permutations (codec 5, which came with container version 2 too) */
      if (!rc && (k < L.s_scales || k == L.s_gate || k == L.s_lqer || k == L.s_perm) &&
          p->r.container != PG_CONTAINER_V1)
        rc = pg_artifact_section_segments(a, s, &segs[k], &nsegs[k], err);
    }
    if (!rc)
      rc = best_codecs(raws, rn, want, segs, nsegs, L.nspec, L.s_perm, spec, p->r.nthreads, err);
    for (size_t k = 0; segs && k < L.nspec; k++) free(segs[k]);
    free(segs);
    free(nsegs);
    free(raws);
    free(rn);
    free(want);
    /* sections that were not created keep a valid spec */
    for (size_t k = 0; k < L.nspec; k++)
      if (spec[k].codec == PG_CODEC_NONE) spec[k] = p->r.codec.codec ? p->r.codec : CANDIDATES[0];
    pg_artifact_free(a);
    free(raw);
    if (!rc) {
      pg_codec_spec *f = realloc(p->fixed, L.nspec * sizeof *f);
      if (f) {
        memcpy(f, spec, L.nspec * sizeof *f);
        p->fixed = f;
        p->nfixed = L.nspec;
      }
    }
  } else {
    for (size_t k = 0; k < L.nspec; k++) spec[k] = p->r.codec;
  }
  if (!rc) rc = emit(p, x, mu, &L, spec, &w, map, &nd, err);
  if (!rc) rc = pg_writer_to_mem(w, out, len, err);
  pg_writer_free(w);
  free(spec);
  free(map);
  if (!rc && counted) {
    pg_artifact *a = NULL;
    rc = pg_artifact_open_mem(&a, *out, *len, "(packed)", NULL, err);
    pg_account acc;
    if (!rc) rc = pg_account_artifact(&acc, a, x->budget ? x->budget : PG_DEFAULT_BUDGET,
                                      x->count_tokenizer, err);
    if (!rc) {
      *counted = acc.counted;
      pg_account_free(&acc);
    }
    pg_artifact_free(a);
  }
  if (rc) {
    free(*out);
    *out = NULL;
    *len = 0;
  }
  return rc;
}

/* ---- budget fit ------------------------------------------------------------------------------ */

typedef struct fitter {
  pg_packer *p;
  const pg_pack_extras *x;
  const pg_pack_fit_opts *o;
  pg_pack_trial *tr;
  size_t n, cap;
} fitter;

static int trial(fitter *f, double mu, pg_pack_trial *out, pg_err *err) {
  PG_TRY(pg_packer_quantize(f->p, mu, err));
  uint8_t *bytes = NULL;
  size_t len = 0;
  uint64_t counted = 0;
  PG_TRY(pg_packer_build(f->p, f->x, mu, &bytes, &len, &counted, err));
  free(bytes);
  f->p->reuse_specs = 1; /* later trials keep the first trial's codec choices */
  pg_pack_trial t = {.mu = mu, .counted = counted, .file_bytes = len,
                     .objective = pg_packer_objective(f->p), .fits = counted <= f->o->budget};
  memcpy(t.bits, f->p->r.bits, sizeof t.bits);
  if (f->n == f->cap) {
    size_t nc = f->cap ? 2 * f->cap : 32;
    pg_pack_trial *nt = realloc(f->tr, nc * sizeof *nt);
    if (!nt) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    f->tr = nt;
    f->cap = nc;
  }
  f->tr[f->n++] = t;
  if (f->o->on_trial) f->o->on_trial(f->o->ctx, &t);
  *out = t;
  return PG_OK;
}

static int in_window(const fitter *f, const pg_pack_trial *t) {
  double lo = (double)f->o->budget * (1.0 - (f->o->tolerance > 0 ? f->o->tolerance : 0.005));
  return t->fits && (double)t->counted >= lo;
}

/* Bisection on log mu for the current bits; returns the index of the best fitting trial of this
 * search (closest under the budget), or −1. */
static int search_mu(fitter *f, long *best, pg_err *err) {
  int maxt = f->o->max_trials > 0 ? f->o->max_trials : 24, used = 0;
  pg_pack_trial t;
  size_t first = f->n;
  double lo = 0, hi = 0; /* lo: a mu that does not fit (too big); hi: a mu that fits */
  int have_lo = 0, have_hi = 0;
  double mu = 1.0;
  /* bracket: mu = 1, then grow mu until it fits, or shrink it until it does not (or the window
   * is reached) */
  do {
    if (used > 0) {
      mu = have_hi ? mu / 2 : mu * 2;
      if (mu < 1.0 / 64 || mu > 64) break;
    }
    PG_TRY(trial(f, mu, &t, err));
    used++;
    *(t.fits ? &hi : &lo) = mu;
    *(t.fits ? &have_hi : &have_lo) = 1;
  } while (used < maxt && !(have_lo && have_hi) && !in_window(f, &t));
  while (used < maxt && have_lo && have_hi && !in_window(f, &t)) {
    mu = sqrt(lo * hi);
    PG_TRY(trial(f, mu, &t, err));
    used++;
    if (t.fits)
      hi = mu;
    else
      lo = mu;
    if (hi / lo < 1.0 + 1e-6) break;
  }
  *best = -1;
  for (size_t i = first; i < f->n; i++)
    if (f->tr[i].fits && (*best < 0 || f->tr[i].counted > f->tr[*best].counted))
      *best = (long)i;
  return PG_OK;
}

int pg_packer_fit(pg_packer *p, const pg_pack_extras *x, const pg_pack_fit_opts *o,
                  pg_pack_trial **trials, size_t *ntrials, size_t *chosen, uint8_t **out,
                  size_t *len, pg_err *err) {
  *trials = NULL;
  *ntrials = 0;
  *out = NULL;
  *len = 0;
  if (o->budget == 0) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "fit: budget 0");
  fitter f = {.p = p, .x = x, .o = o};
  p->reuse_specs = 0;
  int rc = PG_OK;
  long best = -1;
  unsigned base_bits = o->fit_cat >= 0 && o->fit_cat < PG_CAT_COUNT ? p->r.bits[o->fit_cat] : 0;
  if (o->fit_cat >= 0 && o->fit_cat < PG_CAT_COUNT && (o->bits_mask & 0x1e0u)) {
    for (unsigned b = 5; b <= 8 && !rc; b++) {
      if (!(o->bits_mask & (1u << b))) continue;
      pg_packer_set_bits(p, o->fit_cat, b);
      long bb = -1;
      rc = search_mu(&f, &bb, err);
      /* among bits choices: the least error of each choice's closest fit */
      if (!rc && bb >= 0 && (best < 0 || f.tr[bb].objective < f.tr[best].objective)) best = bb;
    }
  } else {
    rc = search_mu(&f, &best, err);
  }
  if (!rc && best < 0) {
    uint64_t smallest = UINT64_MAX;
    for (size_t i = 0; i < f.n; i++)
      if (f.tr[i].counted < smallest) smallest = f.tr[i].counted;
    rc = pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                    "fit: no setting tried fits %llu bytes (the smallest of %zu trials counts "
                    "%llu)", (unsigned long long)o->budget, f.n, (unsigned long long)smallest);
  }
  if (!rc) {
    /* leave the packer at the chosen trial and return its bytes */
    const pg_pack_trial *c = &f.tr[best];
    memcpy(p->r.bits, c->bits, sizeof p->r.bits);
    uint64_t counted = 0;
    rc = pg_packer_quantize(p, c->mu, err);
    if (!rc) rc = pg_packer_build(p, x, c->mu, out, len, &counted, err);
    if (!rc && counted != c->counted)
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "internal: rebuilding the chosen setting gave %llu bytes, not %llu",
                      (unsigned long long)counted, (unsigned long long)c->counted);
    *chosen = (size_t)best;
  } else if (base_bits) {
    pg_packer_set_bits(p, o->fit_cat, base_bits);
  }
  p->reuse_specs = 0;
  *trials = f.tr;
  *ntrials = f.n;
  return rc;
}
