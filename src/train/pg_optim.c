/* pg_optim.c: SGD with momentum, AdamW, the cosine schedule and gradient clipping (pg_optim.h). */
#include "pg_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pg_optim {
  pg_optim_cfg c;
  size_t n;
  pg_real *m, *v; /* SGD: m is the momentum buffer; AdamW: first and second moments */
  uint64_t t;
};

const char *pg_optim_kind_name(int kind) {
  return kind == PG_OPTIM_SGD ? "sgd" : kind == PG_OPTIM_ADAMW ? "adamw" : NULL;
}

int pg_optim_kind_parse(const char *s) {
  if (!strcmp(s, "sgd")) return PG_OPTIM_SGD;
  if (!strcmp(s, "adamw")) return PG_OPTIM_ADAMW;
  return -1;
}

int pg_optim_create(pg_optim **out, const pg_optim_cfg *cfg, size_t n, pg_err *err) {
  *out = NULL;
  const pg_optim_cfg *c = cfg;
  if (c->kind == PG_OPTIM_SGD) {
    PG_FAIL_IF(!(c->momentum >= 0 && c->momentum < 1), err, PG_E_ARG, NULL, PG_NO_OFFSET,
               "SGD momentum %g is not in [0, 1)", c->momentum);
    PG_FAIL_IF(c->weight_decay != 0, err, PG_E_ARG, NULL, PG_NO_OFFSET,
               "SGD here has no weight decay (the records use none)");
  } else if (c->kind == PG_OPTIM_ADAMW) {
    PG_FAIL_IF(!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1), err, PG_E_ARG,
               NULL, PG_NO_OFFSET, "AdamW betas (%g, %g) are not in [0, 1)", c->beta1, c->beta2);
    PG_FAIL_IF(!(c->eps > 0) || !(c->weight_decay >= 0), err, PG_E_ARG, NULL, PG_NO_OFFSET,
               "AdamW needs eps > 0 and weight_decay >= 0");
  } else {
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "unknown optimizer %d", c->kind);
  }
  pg_optim *o = calloc(1, sizeof *o);
  if (!o) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate an optimizer");
  o->c = *c;
  o->n = n;
  o->m = calloc(n ? n : 1, sizeof *o->m);
  if (c->kind == PG_OPTIM_ADAMW) o->v = calloc(n ? n : 1, sizeof *o->v);
  if (!o->m || (c->kind == PG_OPTIM_ADAMW && !o->v)) {
    pg_optim_free(o);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "cannot allocate optimizer state for %zu parameters", n);
  }
  *out = o;
  return PG_OK;
}

void pg_optim_free(pg_optim *o) {
  if (!o) return;
  free(o->m);
  free(o->v);
  free(o);
}

void pg_optim_reset(pg_optim *o) {
  memset(o->m, 0, o->n * sizeof *o->m);
  if (o->v) memset(o->v, 0, o->n * sizeof *o->v);
  o->t = 0;
}

uint64_t pg_optim_steps(const pg_optim *o) { return o->t; }

size_t pg_optim_state_size(const pg_optim *o) { return o->n; }

pg_real *pg_optim_state(pg_optim *o, int which) {
  return which == 0 ? o->m : which == 1 ? o->v : NULL;
}

void pg_optim_set_steps(pg_optim *o, uint64_t steps) { o->t = steps; }

/* torch.optim.SGD (dampening 0, nesterov off, no weight decay): buf ← μ·buf + g (buf = g at the
 * first step, the same value), p ← p − lr·buf. */
static void sgd_span(pg_optim *o, const pg_optim_span *s, double lr) {
  double mu = o->c.momentum;
  pg_real *buf = o->m + s->state;
  for (size_t i = 0; i < s->n; i++) {
    double g = (double)s->g[i], b = g;
    if (mu != 0) {
      b = o->t == 1 ? g : mu * (double)buf[i] + g;
      buf[i] = (pg_real)b;
      b = (double)buf[i];
    }
    s->p[i] = (pg_real)((double)s->p[i] - lr * b);
  }
}

/* torch.optim.AdamW: p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps). */
static void adamw_span(pg_optim *o, const pg_optim_span *s, double lr) {
  double b1 = o->c.beta1, b2 = o->c.beta2, eps = o->c.eps, wd = o->c.weight_decay;
  double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
  double step = lr / bc1, sbc2 = sqrt(bc2);
  pg_real *m = o->m + s->state, *v = o->v + s->state;
  for (size_t i = 0; i < s->n; i++) {
    double g = (double)s->g[i];
    double p = (double)s->p[i] * (1.0 - lr * wd);
    m[i] = (pg_real)(b1 * (double)m[i] + (1.0 - b1) * g);
    v[i] = (pg_real)(b2 * (double)v[i] + (1.0 - b2) * g * g);
    double denom = sqrt((double)v[i]) / sbc2 + eps;
    s->p[i] = (pg_real)(p - step * (double)m[i] / denom);
  }
}

void pg_optim_step(pg_optim *o, const pg_optim_span *spans, size_t nspans, double lr) {
  o->t++;
  for (size_t k = 0; k < nspans; k++) {
    if (spans[k].state + spans[k].n > o->n) continue; /* outside the state: a caller bug */
    if (o->c.kind == PG_OPTIM_SGD)
      sgd_span(o, &spans[k], lr);
    else
      adamw_span(o, &spans[k], lr);
  }
}

double pg_clip_grad_norm(const pg_optim_span *spans, size_t nspans, double max_norm) {
  double ss = 0;
  for (size_t k = 0; k < nspans; k++)
    for (size_t i = 0; i < spans[k].n; i++) ss += (double)spans[k].g[i] * (double)spans[k].g[i];
  double norm = sqrt(ss);
  if (max_norm > 0) {
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (size_t k = 0; k < nspans; k++) {
        pg_real *g = (pg_real *)spans[k].g;
        for (size_t i = 0; i < spans[k].n; i++) g[i] = (pg_real)((double)g[i] * coef);
      }
  }
  return norm;
}
