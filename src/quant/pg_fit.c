/* pg_fit.c: the loss-aware budget fit (pg_fit.h, spec/quant.md §6.2): an options table per
 * quantized tensor, sensitivities from the calibration loss, the Lagrangian allocation, the
 * search over λ on real builds, the choice by measured loss (with the k fit's solution as a
 * candidate), and the curve. */
#include "pg_fit.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_engine.h"
#include "pg_tape.h"

/* The default clip factors: 2^(i/2) for i = −4..2. */
static const double KMUL_DEFAULT[] = {0.25, 0.35355339059327379, 0.5, 0.70710678118654757, 1.0,
                                      1.4142135623730951, 2.0};
#define LOG_LAMBDA_MIN (-60.0) /* log2 λ range of the search: every useful λ lies inside */
#define LOG_LAMBDA_MAX (40.0)
#define CURVE_SWEEP 32         /* estimated points recorded across the curve */

typedef struct fopt {
  unsigned bits;
  double kmul, err, ent; /* the probe's error and order-0 entropy bytes */
  double lerr, lbytes;   /* with the recipe's LQER: the error after it and the factors' packed
                            bytes (lerr NaN: the tensor cannot take it) */
} fopt;

typedef struct fitc {
  pg_packer *p;
  const pg_pack_extras *x;
  const pg_fit_opts *o;
  size_t nq, no;     /* quant tensors, options per tensor */
  size_t nopt;       /* option indices: [0, no) plain; [no, 2·no) the same with LQER (lqk > 0) */
  size_t lqk;        /* tensors LQER may correct (the recipe's top-k; 0: the proxy is blind) */
  size_t *idx;       /* [nq] model index */
  fopt *opt;         /* [nq·no] */
  double *sens;      /* [nq] */
  double *fac;       /* [nq] codec factor of the tensor's values section (stored / entropy) */
  double facl;       /* codec factor of the LQER section (stored / packed factor bytes) */
  double fixed;      /* the count less the values sections' (and, lqk > 0, LQER's) stored bytes */
  double *gain;      /* [nq] scratch of allocate */
  size_t *alt;       /* [nq] scratch of allocate */
  size_t **built;    /* allocations built, one per built point (NULL for estimated points) */
  pg_fit_result *res;
  size_t cap;
  /* measuring the loss of a candidate: the dequantized weights and a forward's buffers */
  pg_engine cpu;
  pg_model *mm;
  pg_tape *mtp;
  int32_t *mids, *mtg;
  double *mnll;
  int mbatch;
} fitc;

void pg_fit_result_free(pg_fit_result *r) {
  if (!r) return;
  free(r->points);
  free(r->sens);
  free(r->dloss);
  memset(r, 0, sizeof *r);
}

/* ---- the allocation ------------------------------------------------------------------------- */

/* Option k of tensor q: its bits and clip from opt[k mod no], with LQER when k >= no. */
static const fopt *opt_of(const fitc *f, size_t q, size_t k) {
  return &f->opt[q * f->no + k % f->no];
}

static int usable(const fitc *f, size_t q, size_t k) {
  return k < f->no || !isnan(opt_of(f, q, k)->lerr);
}

static double cost_of(const fitc *f, size_t q, size_t k) {
  const fopt *o = opt_of(f, q, k);
  return f->sens[q] * (k < f->no ? o->err : o->lerr);
}

static double bytes_of(const fitc *f, size_t q, size_t k) {
  const fopt *o = opt_of(f, q, k);
  return f->fac[q] * o->ent + (k < f->no ? 0.0 : f->facl * o->lbytes);
}

/* Tensor q's option of least Δloss + λ·bytes among [k0, k1) (ties: fewer bytes, then the
 * earlier option); SIZE_MAX when none is usable. */
static size_t best_in(const fitc *f, size_t q, double lambda, size_t k0, size_t k1, double *bv) {
  size_t best = SIZE_MAX;
  double bb = INFINITY;
  *bv = INFINITY;
  for (size_t k = k0; k < k1; k++) {
    if (!usable(f, q, k)) continue;
    double b = bytes_of(f, q, k), v = cost_of(f, q, k) + lambda * b;
    if (best == SIZE_MAX || v < *bv || (v == *bv && b < bb)) {
      best = k;
      *bv = v;
      bb = b;
    }
  }
  return best;
}

/* Each tensor's option of least Δloss + λ·bytes; with LQER in the proxy, at most lqk tensors
 * take an LQER option: those whose best LQER option beats their best plain one by the most
 * (ties: the earlier tensor), which is the least total at λ under that limit. Returns the
 * estimated count, *dloss the summed expected Δloss. */
static double allocate(const fitc *f, double lambda, size_t *alloc, double *dloss) {
  double est = f->fixed, dl = 0;
  for (size_t q = 0; q < f->nq; q++) {
    double v0, v1;
    alloc[q] = best_in(f, q, lambda, 0, f->no, &v0);
    f->gain[q] = -INFINITY;
    if (f->lqk) {
      f->alt[q] = best_in(f, q, lambda, f->no, f->nopt, &v1);
      if (f->alt[q] != SIZE_MAX) f->gain[q] = v0 - v1;
    }
  }
  for (size_t n = 0; n < f->lqk; n++) {
    size_t bq = SIZE_MAX;
    for (size_t q = 0; q < f->nq; q++)
      if (f->gain[q] > 0 && (bq == SIZE_MAX || f->gain[q] > f->gain[bq])) bq = q;
    if (bq == SIZE_MAX) break;
    alloc[bq] = f->alt[bq];
    f->gain[bq] = -INFINITY;
  }
  for (size_t q = 0; q < f->nq; q++) {
    est += bytes_of(f, q, alloc[q]);
    dl += cost_of(f, q, alloc[q]);
  }
  *dloss = dl;
  return est;
}

/* The smallest λ (to the bisection's precision, in log2 space) whose estimate is at most
 * target; the largest λ of the range when none is. */
static double solve(const fitc *f, double target, size_t *scratch) {
  double dl, lo = LOG_LAMBDA_MIN, hi = LOG_LAMBDA_MAX;
  if (allocate(f, exp2(lo), scratch, &dl) <= target) return exp2(lo);
  if (allocate(f, exp2(hi), scratch, &dl) > target) return exp2(hi);
  for (int it = 0; it < 80; it++) {
    double mid = 0.5 * (lo + hi);
    if (allocate(f, exp2(mid), scratch, &dl) <= target)
      hi = mid;
    else
      lo = mid;
  }
  return exp2(hi);
}

/* Upgrade alloc while its estimate stays at most target: each step takes, over every tensor and
 * option, the move to more bytes and less Δloss with the most Δloss saved per byte (ties: the
 * first tensor, then the first option). Returns the number of moves. */
static size_t fill(const fitc *f, size_t *alloc, double target) {
  double est = f->fixed;
  size_t nl = 0; /* tensors with LQER: at most lqk */
  for (size_t q = 0; q < f->nq; q++) {
    est += bytes_of(f, q, alloc[q]);
    nl += alloc[q] >= f->no;
  }
  size_t moves = 0;
  for (;;) {
    size_t bq = SIZE_MAX, bk = 0;
    double br = 0, bdb = 0;
    for (size_t q = 0; q < f->nq; q++) {
      double b0 = bytes_of(f, q, alloc[q]), c0 = cost_of(f, q, alloc[q]);
      for (size_t k = 0; k < f->nopt; k++) {
        if (!usable(f, q, k) || (k >= f->no && alloc[q] < f->no && nl >= f->lqk)) continue;
        double db = bytes_of(f, q, k) - b0, dc = c0 - cost_of(f, q, k);
        if (!(db > 0) || !(dc > 0) || est + db > target) continue;
        if (dc / db > br) {
          br = dc / db;
          bq = q;
          bk = k;
          bdb = db;
        }
      }
    }
    if (bq == SIZE_MAX) return moves;
    nl += (bk >= f->no) - (alloc[bq] >= f->no);
    alloc[bq] = bk;
    est += bdb;
    moves++;
  }
}

/* ---- points ---------------------------------------------------------------------------------- */

static int add_point(fitc *f, const pg_fit_point *pt, const size_t *alloc, pg_err *err) {
  pg_fit_result *r = f->res;
  if (r->npoints == f->cap) {
    size_t nc = f->cap ? 2 * f->cap : 64;
    pg_fit_point *np = realloc(r->points, nc * sizeof *np);
    if (np) r->points = np;
    size_t **nb = realloc(f->built, nc * sizeof *nb);
    if (nb) f->built = nb;
    if (!np || !nb) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    f->cap = nc;
  }
  f->built[r->npoints] = NULL;
  if (alloc) {
    f->built[r->npoints] = malloc((f->nq ? f->nq : 1) * sizeof *alloc);
    if (!f->built[r->npoints])
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    memcpy(f->built[r->npoints], alloc, f->nq * sizeof *alloc);
  }
  r->points[r->npoints] = *pt;
  if (!pt->kfit) r->points[r->npoints].measured = NAN; /* measured later, by the choice */
  if (f->o->on_point) f->o->on_point(f->o->ctx, &r->points[r->npoints]);
  r->npoints++;
  return PG_OK;
}

/* The built point with this allocation, or −1. */
static long find_built(const fitc *f, const size_t *alloc) {
  for (size_t i = 0; i < f->res->npoints; i++)
    if (f->built[i] && !memcmp(f->built[i], alloc, f->nq * sizeof *alloc)) return (long)i;
  return -1;
}

/* Set the packer to the allocation; with LQER in the proxy, the allocation names the tensors
 * LQER corrects (rule: leave LQER to the recipe's top-k rule, as the recipe's own point does). */
static int apply(fitc *f, const size_t *alloc, int rule) {
  for (size_t q = 0; q < f->nq; q++) {
    const fopt *op = opt_of(f, q, alloc[q]);
    PG_TRY(pg_packer_set_tensor(f->p, f->idx[q], op->bits, op->kmul));
    if (f->lqk) PG_TRY(pg_packer_set_tensor_lqer(f->p, f->idx[q], rule ? -1 : alloc[q] >= f->no));
  }
  return PG_OK;
}

/* Quantize and build the allocation (its recipe JSON records λ and the per-tensor choice, so
 * the bytes counted are those of the artifact written); recalibrate the byte estimate on the
 * real sections. */
static int build(fitc *f, double lambda, const size_t *alloc, int rule, uint8_t **bytes,
                 size_t *len, uint64_t *counted, pg_err *err) {
  if (apply(f, alloc, rule))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "internal: bad fit option");
  for (size_t q = 0; q < f->nq; q++) f->res->dloss[f->idx[q]] = cost_of(f, q, alloc[q]);
  pg_packer_set_fit_info(f->p, lambda, f->res->sens, f->res->dloss);
  PG_TRY(pg_packer_quantize(f->p, 1.0, err));
  PG_TRY(pg_packer_build(f->p, f->x, 1.0, bytes, len, counted, err));
  pg_packer_keep_codecs(f->p, 1); /* later builds keep the first build's codecs */
  /* each values section's stored bytes over the entropy its tensors were estimated at */
  pg_artifact *a = NULL;
  PG_TRY(pg_artifact_open_mem(&a, *bytes, *len, "(fit)", NULL, err));
  uint32_t ns = pg_artifact_section_count(a);
  double *ent = calloc(ns ? ns : 1, sizeof *ent);
  long *sec = malloc((f->nq ? f->nq : 1) * sizeof *sec);
  int rc = (!ent || !sec) ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
                          : PG_OK;
  const pg_model *m = pg_packer_model(f->p);
  long lsec = -1; /* the LQER factors' section */
  double lbytes = 0;
  for (size_t q = 0; !rc && q < f->nq; q++) sec[q] = -1;
  for (uint32_t i = 0; !rc && i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *ti = pg_artifact_tensor(a, i);
    long mi = pg_model_find(m, ti->name);
    if (mi < 0 || !ti->parts[PG_PART_VALUES].present) continue;
    for (size_t q = 0; q < f->nq; q++)
      if (f->idx[q] == (size_t)mi) {
        sec[q] = ti->parts[PG_PART_VALUES].section;
        ent[sec[q]] += opt_of(f, q, alloc[q])->ent;
        if (f->lqk && ti->parts[PG_PART_LQER_B].present && !isnan(opt_of(f, q, 0)->lerr)) {
          lsec = ti->parts[PG_PART_LQER_B].section;
          lbytes += opt_of(f, q, alloc[q])->lbytes;
        }
      }
  }
  if (!rc) {
    double stored = 0;
    for (uint32_t s = 0; s < ns; s++)
      if (ent[s] > 0) stored += (double)pg_artifact_section(a, s)->stored_size;
    if (lsec >= 0 && lbytes > 0 && !(ent[lsec] > 0)) {
      double sl = (double)pg_artifact_section(a, (uint32_t)lsec)->stored_size;
      f->facl = sl / lbytes;
      stored += sl;
    }
    for (size_t q = 0; q < f->nq; q++)
      f->fac[q] = sec[q] >= 0 && ent[sec[q]] > 0
                      ? (double)pg_artifact_section(a, (uint32_t)sec[q])->stored_size / ent[sec[q]]
                      : 1.0;
    f->fixed = (double)*counted - stored;
  }
  free(ent);
  free(sec);
  pg_artifact_free(a);
  return rc;
}

static int built_point(fitc *f, double lambda, const size_t *alloc, int filled,
                       uint64_t *counted, pg_err *err) {
  double dl, est = f->fixed;
  /* the estimate before this build recalibrated it */
  dl = 0;
  for (size_t q = 0; q < f->nq; q++) {
    est += bytes_of(f, q, alloc[q]);
    dl += cost_of(f, q, alloc[q]);
  }
  uint8_t *bytes = NULL;
  size_t len = 0;
  PG_TRY(build(f, lambda, alloc, 0, &bytes, &len, counted, err));
  free(bytes);
  pg_fit_point pt = {.lambda = lambda, .est_bytes = est, .counted = *counted,
                     .file_bytes = len, .dloss = dl, .built = 1, .filled = filled,
                     .fits = *counted <= f->o->budget};
  return add_point(f, &pt, alloc, err);
}

/* ---- measuring ------------------------------------------------------------------------------- */

/* Mean NLL (nats per token) of the first nseq calibration rows, each row predicting its own
 * next tokens (T − 1 per row), summed in order. */
static int calib_loss(pg_model *m, pg_tape *tp, const pg_calib_set *c, int nseq, int batch,
                      int32_t *ids, int32_t *tg, double *nll, double *out, pg_err *err) {
  int T = c->T - 1;
  double s = 0;
  uint64_t n = 0;
  for (int s0 = 0; s0 < nseq; s0 += batch) {
    int B = nseq - s0 < batch ? nseq - s0 : batch;
    for (int r = 0; r < B; r++)
      for (int t = 0; t < T; t++) {
        ids[r * T + t] = c->tokens[(size_t)(s0 + r) * (size_t)c->T + (size_t)t];
        tg[r * T + t] = c->tokens[(size_t)(s0 + r) * (size_t)c->T + (size_t)t + 1];
      }
    pg_batch bt = {.B = B, .T = T, .ids = ids, .targets = tg};
    PG_TRY(pg_model_forward(m, tp, &bt, NULL, nll, NULL, err));
    for (int i = 0; i < B * T; i++) s += nll[i];
    n += (uint64_t)B * (uint64_t)T;
  }
  *out = n ? s / (double)n : 0;
  return PG_OK;
}

/* The tokens a candidate's loss is measured on: o->measure, else the calibration rows; NULL
 * when there are none (the choice is then by expected loss). */
static const pg_calib_set *measure_set(const fitc *f) {
  const pg_calib_set *c = f->o->measure ? f->o->measure : f->o->calib;
  return c && c->tokens && c->nseq >= 1 && c->T >= 2 ? c : NULL;
}

/* The mean NLL on the measuring tokens of the weights a reader of the artifact built from the
 * packer's current quantization computes (pg_packer_dequant: LQER included). */
static int measure(fitc *f, double *out, pg_err *err) {
  const pg_calib_set *c = measure_set(f);
  if (!f->mm) {
    pg_model *src = pg_packer_model(f->p);
    f->mbatch = f->o->batch > 0 ? f->o->batch : 4;
    size_t per = (size_t)f->mbatch * (size_t)(c->T - 1);
    f->cpu = pg_engine_cpu(pg_packer_recipe(f->p)->nthreads);
    f->mids = malloc(per * sizeof *f->mids);
    f->mtg = malloc(per * sizeof *f->mtg);
    f->mnll = malloc(per * sizeof *f->mnll);
    if (!f->mids || !f->mtg || !f->mnll)
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    PG_TRY(pg_model_create(&f->mm, pg_model_arch(src), err));
    PG_TRY(pg_model_copy_params(f->mm, src, err));
    if (pg_tape_create(&f->mtp, &f->cpu, 0))
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "tape: out of memory");
  }
  PG_TRY(pg_packer_dequant(f->p, f->mm, err));
  f->res->measure_tokens = (uint64_t)c->nseq * (uint64_t)(c->T - 1);
  return calib_loss(f->mm, f->mtp, c, c->nseq, f->mbatch, f->mids, f->mtg, f->mnll, out, err);
}

/* Sensitivity of each quant tensor: the curvature of the calibration loss along its probe's
 * error E, (L(W + E) + L(W − E))/2 − L(W), over that probe's error. The probe is the recipe's
 * setting (the category's bits when they are an option, else the fewest, k × 1): the loss is
 * only locally quadratic, so the curvature is measured where the options lie, not at a far
 * coarser setting. The symmetric difference cancels the loss's first-order term, which on a
 * finite calibration set has a random sign and would dominate the small errors of the fine
 * options; what remains is the second-order loss increase the error proxy scales. */
static int sensitivities(fitc *f, pg_err *err) {
  const pg_fit_opts *o = f->o;
  const pg_calib_set *c = o->calib;
  if (!c || !c->tokens || c->nseq < 1 || c->T < 2)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "fit: the loss fit needs calibration tokens (--calib) or sensitivities");
  int nseq = o->probe_seqs > 0 && o->probe_seqs < c->nseq ? o->probe_seqs : c->nseq;
  int batch = o->batch > 0 ? o->batch : 4;
  unsigned bmin = 5;
  while (bmin < 8 && !(o->bits_mask & (1u << bmin))) bmin++;
  pg_model *src = pg_packer_model(f->p), *m = NULL;
  int nthreads = pg_packer_recipe(f->p)->nthreads;
  pg_engine cpu = pg_engine_cpu(nthreads);
  pg_tape *tp = NULL;
  size_t per = (size_t)batch * (size_t)(c->T - 1);
  int32_t *ids = malloc(per * sizeof *ids), *tg = malloc(per * sizeof *tg);
  double *nll = malloc(per * sizeof *nll), *dl = calloc(f->nq ? f->nq : 1, sizeof *dl);
  uint64_t maxn = 1;
  for (size_t q = 0; q < f->nq; q++) {
    const pg_arch_tensor *at = pg_model_tensor(src, f->idx[q]);
    if (pg_arch_tensor_numel(at) > maxn) maxn = pg_arch_tensor_numel(at);
  }
  float *wh = malloc((size_t)maxn * sizeof *wh);
  int rc = (!ids || !tg || !nll || !dl || !wh)
               ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
               : PG_OK;
  if (!rc) rc = pg_model_create(&m, pg_model_arch(src), err);
  if (!rc) rc = pg_model_copy_params(m, src, err);
  if (!rc && pg_tape_create(&tp, &cpu, 0))
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "tape: out of memory");
  double base = 0;
  if (!rc) rc = calib_loss(m, tp, c, nseq, batch, ids, tg, nll, &base, err);
  f->res->base_loss = base;
  double maxd = 0;
  for (size_t q = 0; !rc && q < f->nq; q++) {
    size_t i = f->idx[q];
    uint64_t n = pg_arch_tensor_numel(pg_model_tensor(m, i));
    pg_pack_probe pr;
    unsigned bp = pg_packer_recipe(f->p)->bits[pg_packer_report(f->p, i)->cat];
    if (!(o->bits_mask & (1u << bp))) bp = bmin;
    rc = pg_packer_probe(f->p, i, bp, 1.0, &pr, wh, err);
    float *dst = pg_model_data(m, i);
    if (!rc) {
      const float *w = pg_model_data(src, i);
      double lq = 0, lm = 0;
      memcpy(dst, wh, (size_t)n * sizeof *dst); /* W − E */
      rc = calib_loss(m, tp, c, nseq, batch, ids, tg, nll, &lq, err);
      for (uint64_t k = 0; k < n; k++) dst[k] = (float)(2.0 * (double)w[k] - (double)wh[k]);
      if (!rc) rc = calib_loss(m, tp, c, nseq, batch, ids, tg, nll, &lm, err); /* W + E */
      memcpy(dst, w, (size_t)n * sizeof *dst);
      dl[q] = 0.5 * (lq + lm) - base;
      f->sens[q] = pr.err; /* the probe's error for now */
      if (dl[q] > maxd) maxd = dl[q];
    }
    if (o->on_progress) o->on_progress(o->ctx, "sensitivity", q + 1, f->nq);
  }
  /* a loss that did not rise (the calibration tokens happen to prefer the probe) is taken as
   * a small rise, so that the tensor is not free */
  for (size_t q = 0; !rc && q < f->nq; q++) {
    double d = dl[q] > 0 ? dl[q] : (maxd > 0 ? 1e-3 * maxd : 1e-12);
    f->sens[q] = f->sens[q] > 0 ? d / f->sens[q] : 0;
  }
  pg_tape_free(tp);
  pg_model_free(m);
  free(ids);
  free(tg);
  free(nll);
  free(dl);
  free(wh);
  return rc;
}

static int options(fitc *f, pg_err *err) {
  const pg_fit_opts *o = f->o;
  size_t total = f->nq * f->no, done = 0;
  for (size_t q = 0; q < f->nq; q++) {
    size_t k = 0;
    for (unsigned b = 5; b <= 8; b++) {
      if (!(o->bits_mask & (1u << b))) continue;
      for (int g = 0; g < o->nkmul; g++, k++) {
        pg_pack_probe pr;
        PG_TRY(pg_packer_probe(f->p, f->idx[q], b, o->kmul[g], &pr, NULL, err));
        f->opt[q * f->no + k] = (fopt){.bits = b, .kmul = o->kmul[g], .err = pr.err,
                                       .ent = pr.entropy_bytes, .lerr = pr.lqer_err,
                                       .lbytes = pr.lqer_bytes};
        if (pr.lqer_rank) f->lqk = pg_packer_recipe(f->p)->lqer_top_k;
        if (o->on_progress) o->on_progress(o->ctx, "options", ++done, total);
      }
    }
  }
  return PG_OK;
}

/* The records' recipe fitted to the budget (pg_packer_fit: the category bits, one multiplier of
 * every clip constant), measured: a candidate of the choice, so that the loss fit is never
 * behind the records' recipe on the measuring tokens. Nothing of it fits: no candidate. Its bytes
 * are kept in *kb to check the rebuild when it is chosen. */
static int kfit_point(fitc *f, uint8_t **kb, size_t *kl, pg_err *err) {
  pg_pack_fit_opts ko = {.budget = f->o->budget, .tolerance = f->o->tolerance, .fit_cat = -1};
  pg_pack_trial *tr = NULL;
  size_t ntr = 0, ch = 0;
  pg_err ke = {0};
  pg_packer_clear_tensors(f->p);
  int rc = pg_packer_fit(f->p, f->x, &ko, &tr, &ntr, &ch, kb, kl, &ke);
  if (rc == PG_E_LIMIT) { /* no multiplier fits: no candidate */
    free(tr);
    return PG_OK;
  }
  if (rc) {
    free(tr);
    if (err) *err = ke;
    return rc;
  }
  pg_fit_point pt = {.lambda = NAN, .est_bytes = (double)tr[ch].counted,
                     .counted = tr[ch].counted, .file_bytes = *kl, .dloss = NAN, .built = 1,
                     .fits = 1, .kfit = 1, .mu = tr[ch].mu};
  free(tr);
  PG_TRY(measure(f, &pt.measured, err));
  return add_point(f, &pt, NULL, err);
}

/* ---- the search ------------------------------------------------------------------------------ */

static int in_window(const fitc *f, uint64_t counted) {
  double tol = f->o->tolerance > 0 ? f->o->tolerance : 0.005;
  return counted <= f->o->budget && (double)counted >= (double)f->o->budget * (1.0 - tol);
}

static int search(fitc *f, pg_err *err) {
  const pg_fit_opts *o = f->o;
  double tol = o->tolerance > 0 ? o->tolerance : 0.005;
  double target = (double)o->budget * (1.0 - tol / 2);
  int maxb = o->max_builds > 0 ? o->max_builds : 16;
  size_t *alloc = malloc((f->nq ? f->nq : 1) * sizeof *alloc);
  if (!alloc) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  int rc = PG_OK;
  /* the recipe's own setting (category bits, k × 1) calibrates the byte estimate first; it is a
   * point of the curve (λ NaN) when its bits are among the options */
  for (size_t q = 0; q < f->nq; q++) {
    unsigned b = pg_packer_recipe(f->p)->bits[pg_packer_report(f->p, f->idx[q])->cat];
    alloc[q] = SIZE_MAX;
    for (size_t k = 0; k < f->no; k++)
      if (f->opt[q * f->no + k].bits == b && f->opt[q * f->no + k].kmul == 1.0) alloc[q] = k;
  }
  int recipe_in = 1;
  for (size_t q = 0; q < f->nq; q++) recipe_in &= alloc[q] != SIZE_MAX;
  uint8_t *bytes = NULL;
  size_t len = 0;
  uint64_t counted = 0;
  if (recipe_in) {
    rc = build(f, NAN, alloc, 1, &bytes, &len, &counted, err);
    /* its LQER is the recipe's rule: the options it reached, for its expected Δloss */
    for (size_t q = 0; !rc && f->lqk && q < f->nq; q++)
      if (pg_packer_report(f->p, f->idx[q])->lqer_rank && usable(f, q, alloc[q] + f->no))
        alloc[q] += f->no;
    double dl = 0;
    for (size_t q = 0; q < f->nq; q++) dl += cost_of(f, q, alloc[q]);
    pg_fit_point pt = {.lambda = NAN, .est_bytes = (double)counted, .counted = counted,
                       .file_bytes = len, .dloss = dl, .built = 1, .fits = counted <= o->budget};
    if (!rc) rc = add_point(f, &pt, NULL, err);
  } else {
    /* the recipe's bits are not options: its build only chooses the codecs, and the first
     * build of the search calibrates the estimate (until then: raw entropy, nothing else) */
    pg_packer_clear_tensors(f->p);
    rc = pg_packer_quantize(f->p, 1.0, err);
    if (!rc) rc = pg_packer_build(f->p, f->x, 1.0, &bytes, &len, &counted, err);
    pg_packer_keep_codecs(f->p, 1);
    f->fixed = 0;
  }
  free(bytes);
  double lam_fit = INFINITY, lam_over = 0; /* the real bracket: fits at lam_fit, over at lam_over */
  int used = 0; /* builds of the search */
  for (int it = 0; !rc && it < (maxb + 1) / 2; it++) {
    double lambda = solve(f, target, alloc);
    if (!(lambda > lam_over && lambda < lam_fit)) {
      if (isinf(lam_fit))
        lambda = lam_over * 16;
      else if (lam_over <= 0)
        lambda = lam_fit / 16;
      else
        lambda = sqrt(lam_over * lam_fit);
    }
    if (lambda > exp2(LOG_LAMBDA_MAX)) lambda = exp2(LOG_LAMBDA_MAX);
    if (lambda < exp2(LOG_LAMBDA_MIN)) lambda = exp2(LOG_LAMBDA_MIN);
    double dl;
    allocate(f, lambda, alloc, &dl);
    long seen = find_built(f, alloc);
    if (seen >= 0) {
      /* the same allocation as a build before: the bracket cannot narrow further */
      counted = f->res->points[seen].counted;
      if (counted <= o->budget ? lambda >= lam_fit : lambda <= lam_over) break;
    } else {
      rc = built_point(f, lambda, alloc, 0, &counted, err);
      used++;
      if (rc) break;
    }
    if (counted <= o->budget) {
      if (lambda < lam_fit) lam_fit = lambda;
    } else if (lambda > lam_over) {
      lam_over = lambda;
    }
    if (seen < 0 && in_window(f, counted)) break;
    if (lam_over > 0 && lam_fit / lam_over < 1.0 + 1e-9) break;
    if (lambda >= exp2(LOG_LAMBDA_MAX) && counted > o->budget) break; /* nothing smaller */
  }
  /* between two neighbouring λ the allocation can jump by more than the window: fill the gap
   * from the best fitting allocation by the upgrades of most Δloss saved per byte */
  double tgt = target;
  for (int it = 0; !rc && used < maxb && it < 6; it++) {
    long from = -1;
    for (size_t i = 0; i < f->res->npoints; i++)
      if (f->built[i] && f->res->points[i].fits &&
          (from < 0 || f->res->points[i].dloss < f->res->points[from].dloss))
        from = (long)i;
    if (from >= 0 && in_window(f, f->res->points[from].counted)) break;
    double lambda = from >= 0 ? f->res->points[from].lambda : exp2(LOG_LAMBDA_MAX);
    double dl;
    if (from >= 0)
      memcpy(alloc, f->built[from], f->nq * sizeof *alloc);
    else
      allocate(f, lambda, alloc, &dl);
    if (!fill(f, alloc, tgt)) break;
    long seen = find_built(f, alloc);
    if (seen >= 0 && f->res->points[seen].counted <= o->budget) break;
    if (seen >= 0) { /* a build over the budget again: lower the target as after it */
      tgt -= (double)(f->res->points[seen].counted - o->budget) + (double)o->budget * tol / 4;
      continue;
    }
    rc = built_point(f, lambda, alloc, 1, &counted, err);
    used++;
    if (!rc && counted > o->budget)
      tgt -= (double)(counted - o->budget) + (double)o->budget * tol / 4;
    else if (!rc && !in_window(f, counted) && tgt < (double)o->budget)
      tgt = (double)o->budget; /* short of the window: the room up to the budget itself */
    if (!rc && in_window(f, counted)) break;
  }
  /* the estimated curve, on the last calibration: from the first change to the smallest */
  if (!rc && f->nq) {
    double dl0, dl1;
    double emax = allocate(f, exp2(LOG_LAMBDA_MIN), alloc, &dl0);
    double emin = allocate(f, exp2(LOG_LAMBDA_MAX), alloc, &dl1);
    double l0 = log2(solve(f, emax - 0.5, alloc)), l1 = log2(solve(f, emin, alloc));
    for (int i = 0; !rc && l1 > l0 && i < CURVE_SWEEP; i++) {
      double lambda = exp2(l0 + (l1 - l0) * i / (CURVE_SWEEP - 1));
      pg_fit_point pt = {.lambda = lambda};
      pt.est_bytes = allocate(f, lambda, alloc, &pt.dloss);
      rc = add_point(f, &pt, NULL, err);
    }
  }
  free(alloc);
  return rc;
}

int pg_packer_fit_loss(pg_packer *p, const pg_pack_extras *x, const pg_fit_opts *oin,
                       pg_fit_result *res, uint8_t **out, size_t *len, pg_err *err) {
  memset(res, 0, sizeof *res);
  *out = NULL;
  *len = 0;
  pg_fit_opts o = *oin;
  if (o.budget == 0) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "fit: budget 0");
  if (!(o.bits_mask & 0x1e0u)) o.bits_mask = 0x1e0u;
  if (!o.kmul || o.nkmul < 1) {
    o.kmul = KMUL_DEFAULT;
    o.nkmul = (int)(sizeof KMUL_DEFAULT / sizeof KMUL_DEFAULT[0]);
  }
  for (int g = 0; g < o.nkmul; g++)
    if (!(o.kmul[g] > 0) || !isfinite(o.kmul[g]))
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "fit: clip factor %g", o.kmul[g]);
  fitc f = {.p = p, .x = x, .o = &o, .res = res};
  size_t nt = pg_packer_tensor_count(p);
  res->nt = nt;
  res->base_loss = NAN;
  res->lambda = NAN;
  int nb = 0;
  for (unsigned b = 5; b <= 8; b++) nb += (o.bits_mask >> b) & 1u;
  f.no = (size_t)nb * (size_t)o.nkmul;
  f.idx = malloc((nt ? nt : 1) * sizeof *f.idx);
  res->sens = malloc((nt ? nt : 1) * sizeof *res->sens);
  res->dloss = malloc((nt ? nt : 1) * sizeof *res->dloss);
  int rc = (!f.idx || !res->sens || !res->dloss)
               ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
               : PG_OK;
  for (size_t i = 0; !rc && i < nt; i++) {
    res->sens[i] = res->dloss[i] = NAN;
    if (pg_packer_report(p, i)->route == PG_ROUTE_QUANT) f.idx[f.nq++] = i;
  }
  if (!rc) {
    f.opt = calloc(f.nq * f.no > 0 ? f.nq * f.no : 1, sizeof *f.opt);
    f.sens = calloc(f.nq ? f.nq : 1, sizeof *f.sens);
    f.fac = malloc((f.nq ? f.nq : 1) * sizeof *f.fac);
    f.gain = malloc((f.nq ? f.nq : 1) * sizeof *f.gain);
    f.alt = malloc((f.nq ? f.nq : 1) * sizeof *f.alt);
    if (!f.opt || !f.sens || !f.fac || !f.gain || !f.alt)
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  for (size_t q = 0; !rc && q < f.nq; q++) f.fac[q] = 1.0;
  pg_packer_clear_tensors(p);
  pg_packer_keep_codecs(p, 0);
  f.facl = 1.0;
  if (!rc) rc = options(&f, err);
  f.nopt = f.lqk ? 2 * f.no : f.no;
  if (!rc && o.sens) {
    for (size_t q = 0; q < f.nq; q++) f.sens[q] = o.sens[f.idx[q]];
  } else if (!rc) {
    rc = sensitivities(&f, err);
  }
  for (size_t q = 0; !rc && q < f.nq; q++) res->sens[f.idx[q]] = f.sens[q];
  /* the choice by measured loss (unless o.measure_max < 0 or nothing to measure on) */
  const int measuring = o.measure_max >= 0 && measure_set(&f);
  uint8_t *kbytes = NULL;
  size_t klen = 0;
  if (!rc && measuring && !o.no_kfit) rc = kfit_point(&f, &kbytes, &klen, err);
  if (!rc) rc = search(&f, err);
  long best = -1;
  if (!rc && measuring) {
    /* measure the search builds within the budget of least expected Δloss (ties: the earlier),
     * at most measure_max; then the least measured loss of those and the k point (ties: the
     * earlier point) */
    int cap = o.measure_max > 0 ? o.measure_max : 8;
    for (int n = 0; !rc && n < cap; n++) {
      long next = -1;
      for (size_t i = 0; i < res->npoints; i++) {
        const pg_fit_point *pt = &res->points[i];
        if (f.built[i] && pt->fits && isnan(pt->measured) &&
            (next < 0 || pt->dloss < res->points[next].dloss))
          next = (long)i;
      }
      if (next < 0) break;
      if (apply(&f, f.built[next], 0)) {
        rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "internal: bad fit option");
        break;
      }
      rc = pg_packer_quantize(p, 1.0, err);
      if (!rc) rc = measure(&f, &res->points[next].measured, err);
    }
    for (size_t i = 0; !rc && i < res->npoints; i++) {
      const pg_fit_point *pt = &res->points[i];
      if (pt->built && pt->fits && !isnan(pt->measured) &&
          (best < 0 || pt->measured < res->points[best].measured))
        best = (long)i;
    }
  }
  /* without measuring: among the built points of the search, the least expected Δloss of those
   * in the window, else of those that fit */
  for (int pass = 0; !rc && !measuring && pass < 2 && best < 0; pass++)
    for (size_t i = 0; i < res->npoints; i++) {
      const pg_fit_point *pt = &res->points[i];
      if (!f.built[i] || !pt->fits || (pass == 0 && !in_window(&f, pt->counted))) continue;
      if (best < 0 || pt->dloss < res->points[best].dloss) best = (long)i;
    }
  if (!rc && best < 0) {
    uint64_t smallest = UINT64_MAX;
    for (size_t i = 0; i < res->npoints; i++)
      if (res->points[i].built && res->points[i].counted < smallest)
        smallest = res->points[i].counted;
    rc = pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                    "fit: no allocation built fits %llu bytes (the smallest counts %llu)",
                    (unsigned long long)o.budget, (unsigned long long)smallest);
  }
  if (!rc && res->points[best].kfit) {
    /* the k point: its multiplier again, with the codecs every build kept (the first build's,
     * at the recipe's setting like the k fit's first trial): its bytes exactly */
    res->chosen = (size_t)best;
    res->points[best].chosen = 1;
    res->lambda = NAN;
    uint64_t counted = 0;
    pg_packer_clear_tensors(p);
    pg_packer_keep_codecs(p, 1);
    rc = pg_packer_quantize(p, res->points[best].mu, err);
    if (!rc) rc = pg_packer_build(p, x, res->points[best].mu, out, len, &counted, err);
    if (!rc && (*len != klen || memcmp(*out, kbytes, klen)))
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "internal: rebuilding the k fit's point gave other bytes");
  } else if (!rc) {
    /* leave the packer at the chosen point and return its bytes */
    const size_t *a = f.built[best];
    res->chosen = (size_t)best;
    res->points[best].chosen = 1;
    res->lambda = res->points[best].lambda;
    uint64_t counted = 0;
    rc = build(&f, res->lambda, a, 0, out, len, &counted, err);
    if (!rc && counted != res->points[best].counted)
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "internal: rebuilding the chosen allocation gave %llu bytes, not %llu",
                      (unsigned long long)counted,
                      (unsigned long long)res->points[best].counted);
  }
  pg_packer_keep_codecs(p, 0);
  if (rc) {
    free(*out);
    *out = NULL;
    *len = 0;
  }
  free(kbytes);
  pg_tape_free(f.mtp);
  pg_model_free(f.mm);
  free(f.mids);
  free(f.mtg);
  free(f.mnll);
  for (size_t i = 0; f.built && i < res->npoints; i++) free(f.built[i]);
  free(f.built);
  free(f.idx);
  free(f.opt);
  free(f.sens);
  free(f.fac);
  free(f.gain);
  free(f.alt);
  if (rc && rc != PG_E_LIMIT) {
    pg_fit_result_free(res);
  }
  return rc;
}

const char *pg_fit_point_kind(const pg_fit_point *p) {
  if (!p->built) return "estimate";
  if (p->kfit) return "k";
  return isnan(p->lambda) ? "recipe" : p->filled ? "filled" : "built";
}

/* ---- the curve ------------------------------------------------------------------------------- */

char *pg_fit_curve_tsv(const pg_fit_result *r) {
  size_t cap = 160 + r->npoints * 200, n = 0;
  char *s = malloc(cap);
  if (!s) return NULL;
  n += (size_t)snprintf(s + n, cap - n,
                        "kind\tlambda\test_bytes\tcounted\tfile_bytes\tdloss\tfits\tchosen"
                        "\tmeasured\n");
  for (size_t i = 0; i < r->npoints; i++) {
    const pg_fit_point *p = &r->points[i];
    char lam[40];
    if (isnan(p->lambda))
      snprintf(lam, sizeof lam, "-");
    else
      snprintf(lam, sizeof lam, "%.9g", p->lambda);
    char dl[40] = "-", ms[40] = "-";
    if (!isnan(p->dloss)) snprintf(dl, sizeof dl, "%.9g", p->dloss);
    if (!isnan(p->measured)) snprintf(ms, sizeof ms, "%.9g", p->measured);
    if (p->kfit) snprintf(lam, sizeof lam, "k*%.9g", p->mu);
    n += (size_t)snprintf(s + n, cap - n, "%s\t%s\t%.0f\t%llu\t%llu\t%s\t%d\t%d\t%s\n",
                          pg_fit_point_kind(p), lam, p->est_bytes,
                          (unsigned long long)p->counted, (unsigned long long)p->file_bytes,
                          dl, p->fits, p->chosen, ms);
  }
  return s;
}

char *pg_fit_curve_json(const pg_fit_result *r) {
  json_t *o = json_object(), *a = json_array();
  for (size_t i = 0; i < r->npoints; i++) {
    const pg_fit_point *p = &r->points[i];
    json_t *e = json_object();
    json_object_set_new(e, "kind", json_string(pg_fit_point_kind(p)));
    json_object_set_new(e, "lambda", isnan(p->lambda) ? json_null() : json_real(p->lambda));
    json_object_set_new(e, "est_bytes", json_real(p->est_bytes));
    json_object_set_new(e, "counted", p->built ? json_integer((json_int_t)p->counted)
                                               : json_null());
    json_object_set_new(e, "dloss", isnan(p->dloss) ? json_null() : json_real(p->dloss));
    if (p->kfit) json_object_set_new(e, "mu", json_real(p->mu));
    json_object_set_new(e, "measured",
                        isnan(p->measured) ? json_null() : json_real(p->measured));
    json_object_set_new(e, "fits", json_boolean(p->fits));
    json_object_set_new(e, "chosen", json_boolean(p->chosen));
    json_array_append_new(a, e);
  }
  json_object_set_new(o, "points", a);
  json_object_set_new(o, "base_loss", isnan(r->base_loss) ? json_null() : json_real(r->base_loss));
  json_object_set_new(o, "measure_tokens", json_integer((json_int_t)r->measure_tokens));
  char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
  json_decref(o);
  return s;
}
