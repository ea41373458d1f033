/* pg_ops_optim.h: the arithmetic of the engine's optimizer ops (pg_ops.h, spec/engine.md §4.20)
 * that is also called on host memory: Newton–Schulz and the Muon step with a caller's scratch.
 * The CPU ops muon_step and the host API of pg_muon.h run exactly these functions, so the bits
 * are the same on either path. Every fp32 value is pg_real (fp64 in the test-only build). */
#ifndef PG_OPS_OPTIM_H
#define PG_OPS_OPTIM_H

#include <stddef.h>

#include "pg_real.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pg_ns_kind { PG_NS_CLASSIC = 0, PG_NS_POLAR_EXPRESS = 1 };
/* A flag or-ed into a kind: the records' bf16 Newton–Schulz (pg_newton_schulz below). The trainer
 * sets it on the steps of a bf16 run (spec/train.md §10); the low byte is the kind. */
#define PG_NS_BF16 0x100
/* The coefficients (a, b, c) of step i (0-based) of an iteration kind (PG_NS_BF16 ignored): classic
 * is (3.4445, −4.7750, 2.0315) at every step; Polar Express has five per-step tuples
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
 * pg_ns_scratch_floats(rows, cols) values (any alignment of the element type). Rows of each
 * product are split over nthreads (pg_parallel_for), each element computed by one thread:
 * bit-identical for any thread count. An unknown kind is treated as PG_NS_CLASSIC.
 *
 * With PG_NS_BF16 in kind, the records' bf16 iteration, op for op as their PyTorch code runs
 * eagerly: every matrix is bf16 values (stored in pg_real), bf16(v) = pg_bf16_round(fp32(v)),
 * every elementwise operation one fp64 expression rounded to bf16, the same fp64 sums:
 *   X[i,j] = bf16(G or Gᵀ);  s = Σ X[i,j]² as above;  d = bf16(bf16(sqrt(s)) + 1e-7);
 *   X[i,j] ← bf16(X[i,j] / d);  then per step:
 *     A[i,j] = bf16(Σ_k X[i,k]·X[j,k]);            S[i,j] = bf16(Σ_k A[i,k]·A[j,k]);
 *     B[i,j] = bf16(bf16(b·A[i,j]) + bf16(c·S[i,j]));
 *     P[i,j] = bf16(Σ_k B[i,k]·X[k,j]);            X[i,j] ← bf16(bf16(a·X[i,j]) + P[i,j])
 * (A, S and B symmetric as before; spec/train.md §2.2). */
size_t pg_ns_scratch_floats(int rows, int cols);
void pg_newton_schulz(const pg_real *G, int rows, int cols, int kind, int steps, pg_real *out,
                      pg_real *scratch, int nthreads);

/* The muon_step op (pg_ops.h) on host-addressable memory with the caller's scratch of
 * pg_muon_scratch_floats(rows, cols) values, on nthreads threads. */
size_t pg_muon_scratch_floats(int rows, int cols);
void pg_muon_apply(pg_real *p, const pg_real *g, pg_real *buf, int rows, int cols, double lr,
                   double mu, double wd, int nesterov, int row_normalize, int ns_kind,
                   int ns_steps, pg_real *scratch, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
