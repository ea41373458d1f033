/* pg_muon.h: the trainer's matrix optimizer and weight averaging (spec/train.md): Muon (Nesterov
 * momentum, optional MuonEq-R row normalization, Newton–Schulz orthogonalization with the classic
 * 5-step coefficients or the Polar Express per-step coefficients, the records' shape scaling,
 * decoupled weight decay), the momentum warm-up, and weight averaging (EMA, SWA). The learning-rate
 * multiplier is in pg_sched.h.
 *
 * Numerics: parameters, gradients and momentum buffers are fp32; every matrix product and every
 * norm is computed with fp64 sums (the engine's rule, spec/engine.md) and rounded to fp32 once per
 * element. The records compute Newton–Schulz in bf16: PG_NS_BF16 in ns_kind selects their
 * rounding points (pg_ops_optim.h; a bf16 run's trainer sets it, spec/train.md §2.2, §10).
 * Results are bit-identical for any thread count. */
#ifndef PG_MUON_H
#define PG_MUON_H

#include <stddef.h>
#include <stdint.h>

#include "pg_ops_optim.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Newton–Schulz ----------------------------------------------------------------------------
 * pg_ns_coeffs, pg_ns_scratch_floats and pg_newton_schulz (with enum pg_ns_kind) are declared in
 * pg_ops_optim.h, included above: the arithmetic of the engine's muon_step op. */

/* ---- Muon ------------------------------------------------------------------------------------ */

typedef struct pg_muon_opts {
  double lr;          /* base learning rate (times the schedule's multiplier) */
  double momentum;    /* μ after the warm-up */
  double momentum_start;   /* μ at step 0 (the records: 0.92; equal to momentum: no warm-up) */
  int momentum_warmup;     /* steps of the linear warm-up (the records: 1500) */
  int nesterov;       /* 1 (the records) */
  int row_normalize;  /* MuonEq-R: each row of the update divided by max(‖row‖₂, 1e-7) */
  int ns_kind;        /* enum pg_ns_kind */
  int ns_steps;       /* 5 */
  double weight_decay; /* decoupled: p ← p·(1 − lr_t·wd) before the update */
} pg_muon_opts;

/* μ at a step: linear from momentum_start to momentum over momentum_warmup steps, then constant,
 * written as the records write it: f = min(t / warmup, 1), μ_t = (1 − f)·start + f·end in fp64
 * (so μ is exactly `momentum` from t = warmup on; warmup ≤ 0: `momentum`). */
double pg_muon_momentum(const pg_muon_opts *o, uint64_t step);

/* One Muon step on one matrix p [rows × cols] with gradient g and momentum buffer buf (same
 * size, zero at the start), at learning rate lr_t (= lr × multiplier) and momentum mu (the
 * caller's pg_muon_momentum; o->lr and o->momentum* are not read here):
 *   buf ← fp32(μ·buf + g);  u = nesterov ? fp32(g + μ·buf) : buf  (buf: the value just stored);
 *   if row_normalize: u[i,:] ← fp32(u[i,:] / max(sqrt(Σ_j u[i,j]²), 1e-7)) (fp64 sum, j ascending);
 *   X = NS(u) (pg_newton_schulz with o->ns_kind, o->ns_steps);
 *   p ← fp32(p·(1 − lr_t·wd) − lr_t·(s·X)),  s = sqrt(max(1, rows / cols)) (real division),
 * i.e. the decoupled weight decay with the scheduled lr before the update, both in one fp64
 * expression rounded once (the records round twice, in fp32). Every step is fp64 per element.
 * scratch: pg_muon_scratch_floats(rows, cols) floats (pg_ops_optim.h). Bit-identical for any
 * nthreads. This is the engine's muon_step op (spec/engine.md §4.20) on host memory. */
void pg_muon_step(float *p, const float *g, float *buf, int rows, int cols,
                  const pg_muon_opts *o, double lr_t, double mu, float *scratch, int nthreads);

/* ---- weight averaging ------------------------------------------------------------------------ */

/* EMA: ema ← fp32(d·ema + (1 − d)·p) per element, in fp64, rounded once (n elements). These
 * three are the engine's ema_update, swa_add and swa_average ops run on host memory (the CPU
 * engine, one thread). */
void pg_ema_update(float *ema, const float *p, size_t n, double decay);
/* SWA: sum += p (fp64 accumulators, not rounded), count tracked by the caller; the average is
 * out = fp32(sum / count) (count 0: out is left unchanged). */
void pg_swa_add(double *sum, const float *p, size_t n);
void pg_swa_average(const double *sum, uint64_t count, float *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
