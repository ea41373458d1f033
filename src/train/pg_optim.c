/* pg_optim.c: SGD with momentum, AdamW, the cosine schedule and gradient clipping (pg_optim.h),
 * driving the engine's optimizer ops (pg_ops_optim.c on the CPU). */
#include "pg_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pg_optim {
  pg_optim_cfg c;
  size_t n;
  pg_engine *e;   /* where the state is */
  pg_engine host; /* the CPU engine of a host optimizer (e = &host) */
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
  return pg_optim_create_on(out, cfg, n, NULL, err);
}

int pg_optim_create_on(pg_optim **out, const pg_optim_cfg *cfg, size_t n, pg_engine *e,
                       pg_err *err) {
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
  if (!e) {
    o->host = pg_engine_cpu(1);
    e = &o->host;
  }
  o->e = e;
  o->m = pg_engine_alloc(e, n * sizeof *o->m);
  if (c->kind == PG_OPTIM_ADAMW) o->v = pg_engine_alloc(e, n * sizeof *o->v);
  if (!o->m || (c->kind == PG_OPTIM_ADAMW && !o->v)) {
    pg_engine_sync(e, NULL); /* the failure is reported here, not at the engine's next sync */
    pg_optim_free(o);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "cannot allocate optimizer state for %zu parameters", n);
  }
  *out = o;
  return PG_OK;
}

void pg_optim_free(pg_optim *o) {
  if (!o) return;
  pg_engine_free(o->e, o->m);
  pg_engine_free(o->e, o->v);
  free(o);
}

void pg_optim_reset(pg_optim *o) {
  pg_engine_zero(o->e, o->m, o->n * sizeof *o->m);
  if (o->v) pg_engine_zero(o->e, o->v, o->n * sizeof *o->v);
  o->t = 0;
}

uint64_t pg_optim_steps(const pg_optim *o) { return o->t; }

size_t pg_optim_state_size(const pg_optim *o) { return o->n; }

pg_real *pg_optim_state(pg_optim *o, int which) {
  return which == 0 ? o->m : which == 1 ? o->v : NULL;
}

void pg_optim_set_steps(pg_optim *o, uint64_t steps) { o->t = steps; }

/* torch.optim.SGD (dampening 0, nesterov off, no weight decay): buf ← μ·buf + g (buf = g at the
 * first step), p ← p − lr·buf. torch.optim.AdamW: p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g;
 * v ← β2·v + (1−β2)·g²; p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps). */
void pg_optim_step(pg_optim *o, const pg_optim_span *spans, size_t nspans, double lr) {
  o->t++;
  const pg_ops *ops = &o->e->ops;
  const pg_optim_cfg *c = &o->c;
  double bc1 = 1.0 - pow(c->beta1, (double)o->t), bc2 = 1.0 - pow(c->beta2, (double)o->t);
  for (size_t k = 0; k < nspans; k++) {
    const pg_optim_span *s = &spans[k];
    if (s->state + s->n > o->n) continue; /* outside the state: a caller bug */
    if (c->kind == PG_OPTIM_SGD)
      ops->sgd_step(ops, s->p, s->g, o->m + s->state, s->n, lr, c->momentum, o->t == 1);
    else
      ops->adamw_step(ops, s->p, s->g, o->m + s->state, o->v + s->state, s->n, lr, c->beta1,
                      c->beta2, c->eps, c->weight_decay, bc1, bc2);
  }
}

double pg_clip_grad_norm(const pg_optim_span *spans, size_t nspans, double max_norm) {
  pg_engine e = pg_engine_cpu(1);
  double acc = 0;
  return pg_clip_grad_norm_on(&e, &acc, spans, nspans, max_norm);
}

double pg_clip_grad_norm_on(pg_engine *e, double *acc, const pg_optim_span *spans, size_t nspans,
                            double max_norm) {
  const pg_ops *ops = &e->ops;
  pg_engine_zero(e, acc, sizeof *acc);
  for (size_t k = 0; k < nspans; k++) ops->sumsq(ops, acc, spans[k].g, spans[k].n);
  double ss = 0;
  pg_engine_download(e, &ss, acc, sizeof ss);
  double norm = sqrt(ss);
  if (max_norm > 0) {
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (size_t k = 0; k < nspans; k++) ops->scale(ops, (pg_real *)spans[k].g, spans[k].n, coef);
  }
  return norm;
}
