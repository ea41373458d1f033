/* pg_muon.c: the host API of Muon and weight averaging over the engine's optimizer arithmetic
 * (pg_ops_optim.c) and the momentum warm-up (pg_muon.h gives every formula and where it rounds;
 * the learning-rate multiplier is pg_sched.h). */
#include "pg_muon.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pg_engine.h"

/* ---- Muon ------------------------------------------------------------------------------------ */

double pg_muon_momentum(const pg_muon_opts *o, uint64_t step) {
  if (o->momentum_warmup <= 0) return o->momentum;
  double f = (double)step / (double)o->momentum_warmup;
  if (f > 1.0) f = 1.0;
  return (1.0 - f) * o->momentum_start + f * o->momentum;
}

void pg_muon_step(float *p, const float *g, float *buf, int rows, int cols,
                  const pg_muon_opts *o, double lr_t, double mu, float *scratch, int nthreads) {
  pg_muon_apply(p, g, buf, rows, cols, lr_t, mu, o->weight_decay, o->nesterov, o->row_normalize,
                o->ns_kind, o->ns_steps, scratch, nthreads);
}

/* ---- weight averaging ------------------------------------------------------------------------ */

void pg_ema_update(float *ema, const float *p, size_t n, double decay) {
  pg_engine e = pg_engine_cpu(1);
  e.ops.ema_update(&e.ops, ema, p, n, decay);
}

void pg_swa_add(double *sum, const float *p, size_t n) {
  pg_engine e = pg_engine_cpu(1);
  e.ops.swa_add(&e.ops, sum, p, n);
}

void pg_swa_average(const double *sum, uint64_t count, float *out, size_t n) {
  pg_engine e = pg_engine_cpu(1);
  e.ops.swa_average(&e.ops, out, sum, n, count);
}
