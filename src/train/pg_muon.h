/* pg_muon.h: the trainer's matrix optimizer and weight averaging (spec/train.md): Muon (Nesterov
 * momentum, optional MuonEq-R row normalization, Newton–Schulz orthogonalization with the classic
 * 5-step coefficients or the Polar Express per-step coefficients, the records' shape scaling,
 * decoupled weight decay), the momentum warm-up, and weight averaging (EMA, SWA). The learning-rate
 * multiplier is in pg_sched.h.
 *
 * Numerics: parameters, gradients and momentum buffers are fp32; every matrix product and every
 * norm is computed with fp64 sums (the engine's rule, spec/engine.md) and rounded to fp32 once per
 * element. The records compute Newton–Schulz in bf16; pgolf does not emulate bf16 (spec/train.md
 * says where this differs). Results are bit-identical for any thread count. */
#ifndef PG_MUON_H
#define PG_MUON_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Newton–Schulz ---------------------------------------------------------------------------- */

enum pg_ns_kind { PG_NS_CLASSIC = 0, PG_NS_POLAR_EXPRESS = 1 };
/* The coefficients (a, b, c) of step i (0-based) of an iteration kind: classic is
 * (3.4445, −4.7750, 2.0315) at every step; Polar Express has five per-step tuples
 * (spec/records.md §3.2), and steps beyond the fifth repeat the last. */
void pg_ns_coeffs(int kind, int step, double abc[3]);

/* X ← the Newton–Schulz orthogonalization of G [rows × cols] (fp32). Let m = min(rows, cols),
 * n = max(rows, cols). The iteration works on an m × n matrix X (G itself, or Gᵀ when rows > cols,
 * so that A below is the small m × m side); every fp32 value is converted exactly to fp64, every
 * sum starts at 0 and adds its terms in ascending index order, and fp32(·) is one round to nearest:
 *   s = Σ X[i,j]² over X in row-major order (of X, i.e. after the transposition), in fp64;
 *   X[i,j] ← fp32(X[i,j] / (sqrt(s) + 1e-7));
 *   then `steps` times, with (a, b, c) = pg_ns_coeffs(kind, step):
 *     A[i,j] = fp32(Σ_k X[i,k]·X[j,k])                      (m × m; computed for j ≥ i, mirrored)
 *     B[i,j] = fp32(b·A[i,j] + c·Σ_k A[i,k]·A[j,k])         (A·A with A symmetric; mirrored)
 *     X[i,j] ← fp32(a·X[i,j] + Σ_k B[i,k]·X[k,j])           (m × n)
 *   so each of the three products rounds each of its elements once (the mirrored halves are the
 *   same sums, term for term, so A and B are exactly symmetric); finally out = X, or Xᵀ when
 *   rows > cols. Hence NS(Gᵀ) = NS(G)ᵀ bit for bit when rows ≠ cols. steps = 0 only normalizes.
 * out [rows × cols] may be G itself (G is read once, before out is written); scratch:
 * pg_ns_scratch_floats(rows, cols) floats (any float alignment). Rows of each product are split
 * over nthreads (pg_parallel_for), each element computed by one thread: bit-identical for any
 * thread count. An unknown kind is treated as PG_NS_CLASSIC. */
size_t pg_ns_scratch_floats(int rows, int cols);
void pg_newton_schulz(const float *G, int rows, int cols, int kind, int steps, float *out,
                      float *scratch, int nthreads);

/* ---- Muon --------------------------------------------------------------------------------------- */

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
 * scratch: pg_muon_scratch_floats(rows, cols) floats. Bit-identical for any nthreads. */
size_t pg_muon_scratch_floats(int rows, int cols);
void pg_muon_step(float *p, const float *g, float *buf, int rows, int cols,
                  const pg_muon_opts *o, double lr_t, double mu, float *scratch, int nthreads);

/* ---- weight averaging ------------------------------------------------------------------------------ */

/* EMA: ema ← fp32(d·ema + (1 − d)·p) per element, in fp64, rounded once (n elements). */
void pg_ema_update(float *ema, const float *p, size_t n, double decay);
/* SWA: sum += p (fp64 accumulators, not rounded), count tracked by the caller; the average is
 * out = fp32(sum / count) (count 0: out is left unchanged). */
void pg_swa_add(double *sum, const float *p, size_t n);
void pg_swa_average(const double *sum, uint64_t count, float *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
