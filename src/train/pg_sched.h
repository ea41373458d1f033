/* pg_sched.h: the learning-rate schedules (spec/train.md §4, spec/eval.md): the trainer's
 * multiplier (warm-up, then a warmdown over the last fraction of the run with a floor) and the
 * cosine decay across chunks of the score-first test-time training. Both are plain fp64
 * functions of the step; the optimizers take the scheduled rate as an argument. */
#ifndef PG_SCHED_H
#define PG_SCHED_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_lr_sched {
  uint64_t warmup_steps; /* linear warm-up from 0 over these steps (the records: 0) */
  double warmdown_frac;  /* the last fraction of the run decays linearly (R12: 0.85) */
  double min_lr;         /* floor of the multiplier during the warmdown (R11/R12: 0.10) */
} pg_lr_sched;

/* The multiplier at `step` (0-based) with run progress frac in [0, 1] (steps done / total steps,
 * or seconds elapsed / the time budget) is w·d, both factors in fp64:
 *   w = (step + 1) / warmup_steps while step < warmup_steps, else 1;
 *   d = max((1 − frac) / warmdown_frac, min_lr) when warmdown_frac > 0 and
 *       frac ≥ 1 − warmdown_frac, else 1 (frac ≥ 1 gives the floor min_lr, 0 without one).
 * (So warm-up and warmdown multiply when both apply.) */
double pg_lr_mul(const pg_lr_sched *s, uint64_t step, double frac);

/* The records' test-time schedule across n chunks: lr·0.5·(1 + cos(π·i / max(n − 1, 1))). */
double pg_cosine_lr(double lr, uint64_t i, uint64_t n);

#ifdef __cplusplus
}
#endif
#endif
