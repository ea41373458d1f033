/* pg_sched.c: the learning-rate schedules (pg_sched.h gives the formulas). */
#include "pg_sched.h"

#include <math.h>

double pg_lr_mul(const pg_lr_sched *s, uint64_t step, double frac) {
  double w = 1.0, d = 1.0;
  if (step < s->warmup_steps) w = (double)(step + 1) / (double)s->warmup_steps;
  if (s->warmdown_frac > 0 && frac >= 1.0 - s->warmdown_frac) {
    d = (1.0 - frac) / s->warmdown_frac;
    if (d < s->min_lr) d = s->min_lr;
  }
  return w * d;
}

double pg_cosine_lr(double lr, uint64_t i, uint64_t n) {
  double den = n > 1 ? (double)(n - 1) : 1.0;
  return lr * 0.5 * (1.0 + cos(M_PI * (double)i / den));
}
