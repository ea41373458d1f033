/* pg_ops.h: the engine's op table. Model code (forward, backward, loss) is written once against
 * pg_ops; the table is the first member of an engine (pg_engine.h), whose memory every pointer
 * below is in. pg_engine_cpu() is the CPU reference (the oracle), a CUDA engine fills the same
 * table. Ops return nothing: a failure (an id outside the table, scratch that cannot be had) is
 * recorded in the engine and reported at pg_engine_sync.
 *
 * Every tensor is pg_real (fp32; fp64 in the test-only build, see pg_real.h), row-major,
 * contiguous; shapes are in the comments ([T, H, d] means d is the fastest axis). Within an op
 * intermediates are fp64 and every reduction sums in fp64 in ascending index order; each output
 * element is rounded to fp32 exactly once. Forward ops overwrite their outputs (y may alias x only
 * where stated). Backward ops ACCUMULATE: they add
 * (+=) into the gradient buffers, which the caller zeroes first; a NULL gradient pointer skips
 * that gradient. Gradients never alias their inputs. The CPU ops parallelize over independent
 * output rows only, so their results are bit-identical for any thread count. Shapes are the
 * caller's to check: an op with bad shapes is a programming error. The exact definitions are in
 * spec/engine.md. */
#ifndef PG_OPS_H
#define PG_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "pg_real.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest head_dim the attention ops accept (their per-row accumulators live on the stack). */
#define PG_OPS_MAX_HEAD_DIM 256

typedef struct pg_ops pg_ops;
struct pg_ops {
  const char *name; /* "cpu" */
  int nthreads;     /* CPU: threads per op (0 = online CPUs, 1 = inline) */

  /* y[M,N] = x[M,K] · W^T, W[N,K] (torch Linear layout). */
  void (*matmul_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *w, int M, int N,
                     int K);
  /* dx[M,K] += dy[M,N] · W;  dw[N,K] += dy^T · x. */
  void (*matmul_bwd)(const pg_ops *e, pg_real *dx, pg_real *dw, const pg_real *dy, const pg_real *x,
                     const pg_real *w, int M, int N, int K);

  /* Grouped products, one call for G groups (per-row LoRA: a group per batch row, each with its
   * row's adapter): y[g] [M, N] = x[g] [M, K] · W_gᵀ with W_g = w + widx[g]·wstride ([N, K],
   * widx [G] int32 in engine memory, each in [0, nw) for the nw matrices w holds; the caller
   * checks them). Each group is matmul_fwd exactly. */
  void (*matmul_grouped_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *w,
                             const int32_t *widx, size_t wstride, int G, int M, int N, int K);
  /* dx[g] += dy[g] · W_g and dW_g += dy[g]ᵀ · x[g], each group as matmul_bwd, the groups in
   * descending order g = G−1 … 0 (groups that share a matrix add into it in that order). */
  void (*matmul_grouped_bwd)(const pg_ops *e, pg_real *dx, pg_real *dw, const pg_real *dy,
                             const pg_real *x, const pg_real *w, const int32_t *widx,
                             size_t wstride, int G, int M, int N, int K);

  /* Per row of length D (R rows): y = x / sqrt(mean(x²) + eps). y may alias x. Parameter-free;
   * QK-norm is this op on a [T, H, d] tensor viewed as T·H rows of d. */
  void (*rmsnorm_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, size_t R, int D, float eps);
  void (*rmsnorm_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x, size_t R,
                      int D, float eps);

  /* Partial RoPE on x[T, H, d]: the first rot dims (rot even, ≤ d), half-split pairs
   * (i, i + rot/2), rotation by -θ (out1 = x1·cos + x2·sin, out2 = -x1·sin + x2·cos),
   * θ = fp32(fp32(pos[t]) · inv_freq[i]), inv_freq[i] = fp32(1 / fp32(base^fp32(2i/rot))) (the
   * records' fp32 table, spec/engine.md §4.3). Dims ≥ rot are copied. pos[T] per token (so windows
   * and documents can restart it). y may alias x. */
  void (*rope_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const int32_t *pos, int T, int H,
                   int d, int rot, float base);
  /* dx += R(θ)^T dy (the inverse rotation); dims ≥ rot: dx += dy. */
  void (*rope_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, const int32_t *pos, int T,
                   int H, int d, int rot, float base);

  /* Causal softmax attention over a batch of B sequences: q[B, T, H, d], k and v [B, T, Hkv, d]
   * (H % Hkv == 0, head h uses kv head h / (H/Hkv)), out[B, T, H, d]; sequence b attends only
   * within itself. Query t attends key s iff s ≤ t and (seg is NULL or seg[b, s] == seg[b, t]),
   * seg [B, T]; logit = scale · q_t·k_s (scale is usually 1/sqrt(d)). d ≤ PG_OPS_MAX_HEAD_DIM. */
  void (*attention_fwd)(const pg_ops *e, pg_real *out, const pg_real *q, const pg_real *k,
                        const pg_real *v, const int32_t *seg, int B, int T, int H, int Hkv, int d,
                        float scale);
  /* dq, dk, dv += the gradients for dout[B, T, H, d] (the softmax is recomputed). Takes 3·T·H
   * doubles of scratch (without it: PG_E_NOMEM recorded, nothing written). */
  void (*attention_bwd)(const pg_ops *e, pg_real *dq, pg_real *dk, pg_real *dv,
                        const pg_real *dout, const pg_real *q, const pg_real *k, const pg_real *v,
                        const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale);

  /* Elementwise over n: y = relu(x)²;  dx += dy · 2·relu(x). y may alias x only in forward. */
  void (*relu2_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, size_t n);
  void (*relu2_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x, size_t n);
  /* y = (x > 0 ? x : s·x)²;  dx += dy · 2·(x > 0 ? x : s²·x). */
  void (*leaky_relu2_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, size_t n, float s);
  void (*leaky_relu2_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x,
                          size_t n, float s);

  /* Row gate: x[R, D], g[R]: y[r, :] = x[r, :] · σ(g[r]) (the per-head attention output gate with
   * rows (t, h)); dx += dy·σ(g[r]);  dg[r] += σ'(g[r]) · Σ_j dy[r,j]·x[r,j]. */
  void (*rowgate_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *g, size_t R,
                      int D);
  void (*rowgate_bwd)(const pg_ops *e, pg_real *dx, pg_real *dg, const pg_real *dy,
                      const pg_real *x, const pg_real *g, size_t R, int D);

  /* Channel scale: x[R, C], s[C]: y[r, c] = x[r, c] · s[c] (attn_scale, mlp_scale, resid_mix
   * rows, skip weights; q_gain as s[H·d] with each head's gain repeated d times). y may alias x
   * in forward. dx += dy·s;  ds[c] += Σ_r dy[r,c]·x[r,c]. */
  void (*chanmul_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *s, size_t R,
                      int C);
  void (*chanmul_bwd)(const pg_ops *e, pg_real *dx, pg_real *ds, const pg_real *dy,
                      const pg_real *x, const pg_real *s, size_t R, int C);

  /* XSA (exclusive self-attention) on the attention output y[T, H, d] with the values v[T, Hkv, d]
   * (head h uses kv head h / (H/Hkv)): v̂ = v / max(‖v‖₂, 1e-12), out = y − (y·v̂)·v̂ per (t, h).
   * out may alias y. Backward: dy += dout − (dout·v̂)v̂; dv += the gradient through v̂. */
  void (*xsa_fwd)(const pg_ops *e, pg_real *out, const pg_real *y, const pg_real *v, int T, int H,
                  int Hkv, int d);
  void (*xsa_bwd)(const pg_ops *e, pg_real *dy, pg_real *dv, const pg_real *dout, const pg_real *y,
                  const pg_real *v, int T, int H, int Hkv, int d);

  /* Softcap over n: y = c·tanh(z / c);  dz += dy · (1 - tanh²(z / c)). c > 0. */
  void (*softcap_fwd)(const pg_ops *e, pg_real *y, const pg_real *z, size_t n, float c);
  void (*softcap_bwd)(const pg_ops *e, pg_real *dz, const pg_real *dy, const pg_real *z, size_t n,
                      float c);

  /* Cross-entropy per token from logits[T, V] and targets[T]:
   * nll[t] = logsumexp(logits[t, :]) - logits[t, targets[t]] (fp64, not rounded).
   * A target outside [0, V): PG_E_TOKEN_RANGE recorded, nothing written. */
  void (*ce_fwd)(const pg_ops *e, double *nll, const pg_real *logits, const int32_t *targets, int T,
                int V);
  /* dlogits[t, :] += dnll[t] · (softmax(logits[t, :]) - onehot(targets[t])); dnll NULL means 1
   * for every token. Same failures as ce_fwd. */
  void (*ce_bwd)(const pg_ops *e, pg_real *dlogits, const pg_real *dnll, const pg_real *logits,
                const int32_t *targets, int T, int V);

  /* Residual helper over n: y = y + a·x (computed in fp64, rounded once). */
  void (*axpy)(const pg_ops *e, pg_real *y, float a, const pg_real *x, size_t n);

  /* y[r, c] = σ(g[c])·a[r, c] + (1 − σ(g[c]))·b[r, c] over a[R, C], b[R, C], g[C] (gated U-Net
   * skips, SmearGate v1). da += σ·dy, db += (1 − σ)·dy, dg[c] += σ'(g[c])·Σ_r dy·(a − b). */
  void (*chanlerp_fwd)(const pg_ops *e, pg_real *y, const pg_real *a, const pg_real *b,
                       const pg_real *g, size_t R, int C);
  void (*chanlerp_bwd)(const pg_ops *e, pg_real *da, pg_real *db, pg_real *dg, const pg_real *dy,
                       const pg_real *a, const pg_real *b, const pg_real *g, size_t R, int C);
  /* Row scale: x[R, D], s[R]: y[r, :] = x[r, :]·s[r];  dx += dy·s[r], ds[r] += Σ_j dy·x. */
  void (*rowmul_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *s, size_t R,
                     int D);
  void (*rowmul_bwd)(const pg_ops *e, pg_real *dx, pg_real *ds, const pg_real *dy,
                     const pg_real *x, const pg_real *s, size_t R, int D);
  /* Elementwise over n: y = tanh(x);  dx += dy·(1 − tanh²(x)). */
  void (*tanh_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, size_t n);
  void (*tanh_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x, size_t n);

  /* Row gather: y[T, D] = table[ids[t], :] (table[V, D]). An id outside [0, V):
   * PG_E_TOKEN_RANGE recorded, nothing written. */
  void (*embed_fwd)(const pg_ops *e, pg_real *y, const pg_real *table, const int32_t *ids, int T,
                   int D, int V);
  /* dtable[v, :] += Σ_{t : ids[t] = v} dy[t, :], t ascending per row v. PG_E_TOKEN_RANGE or
   * PG_E_NOMEM (scratch) recorded, nothing written. */
  void (*embed_bwd)(const pg_ops *e, pg_real *dtable, const pg_real *dy, const int32_t *ids, int T,
                   int D, int V);
  /* Column slice: y[R, w] = x[R, c0 : c0 + w] of x[R, C];  dx[:, c0 : c0 + w] += dy. */
  void (*cols_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, size_t R, int C, int c0, int w);
  void (*cols_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, size_t R, int C, int c0, int w);
  /* Group expand: y[G·r] with y[g·r + j] = x[g] (a per-head gain over its head's dims, readout
   * groups over their channels);  dx[g] += Σ_j dy[g·r + j]. */
  void (*expand_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, int G, int r);
  void (*expand_bwd)(const pg_ops *e, pg_real *dx, const pg_real *dy, int G, int r);
  /* y = x over n (no rounding: a copy). */
  void (*copy)(const pg_ops *e, pg_real *y, const pg_real *x, size_t n);
  /* y = x rounded to bfloat16 (round to nearest, ties to even; NaN stays NaN, overflow gives
   * ±Inf) and held in pg_real, over n; y may alias x. The rounding points of the model's bf16
   * mode (spec/engine.md §7); it has no backward of its own (the tape passes dy through). */
  void (*round_bf16)(const pg_ops *e, pg_real *y, const pg_real *x, size_t n);
  /* rope_fwd as the records compute it under bf16 autocast: cos θ and sin θ rounded to bf16,
   * each of the four products and the two sums rounded to bf16 (x holds bf16 values). Its
   * backward is rope_bwd (the exact rotation's transpose). y may alias x. */
  void (*rope_bf16_fwd)(const pg_ops *e, pg_real *y, const pg_real *x, const int32_t *pos, int T,
                        int H, int d, int rot, float base);
  /* attention_fwd as the flash kernels compute it on bf16 q, k, v: each probability
   * exp(l_s − max) rounded to bf16 before it weighs v_s (the denominator takes it unrounded),
   * the output rounded to bf16. Its backward is attention_bwd. */
  void (*attention_bf16_fwd)(const pg_ops *e, pg_real *out, const pg_real *q, const pg_real *k,
                             const pg_real *v, const int32_t *seg, int B, int T, int H, int Hkv,
                             int d, float scale);

  /* ---- the optimizers (spec/engine.md §4.20): in place on parameters, gradients and state in
   * engine memory; every update is computed in fp64 and each stored value rounded once. Scalars
   * are fp64 (the hyperparameters and schedules are computed on the host in fp64). Elementwise
   * over n except muon_step and sumsq. Defined in pg_ops_optim.c. */
  /* torch.optim.SGD (dampening 0, no Nesterov, no decay): with mu ≠ 0,
   * buf ← first ? g : fp32(mu·buf + g) and p ← fp32(p − lr·buf); with mu = 0, p ← fp32(p − lr·g)
   * and buf is not touched (may be NULL). */
  void (*sgd_step)(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *buf, size_t n,
                   double lr, double mu, int first);
  /* torch.optim.AdamW with the bias corrections bc1 = 1 − β1^t, bc2 = 1 − β2^t given:
   * m ← fp32(β1·m + (1 − β1)·g), v ← fp32(β2·v + (1 − β2)·g²),
   * p ← fp32(p·(1 − lr·wd) − (lr / bc1)·m / (sqrt(v) / sqrt(bc2) + eps)). */
  void (*adamw_step)(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *m, pg_real *v,
                     size_t n, double lr, double beta1, double beta2, double eps, double wd,
                     double bc1, double bc2);
  /* acc[0] (one fp64 of engine memory) ← acc[0] + x_0² + x_1² + … : one running fp64 sum
   * continued from acc, i ascending (so calls over consecutive spans give the one sum of the
   * global gradient norm). Sequential. */
  void (*sumsq)(const pg_ops *e, double *acc, const pg_real *x, size_t n);
  /* x ← fp32(x·a) (a fp64: the clip factor). */
  void (*scale)(const pg_ops *e, pg_real *x, size_t n, double a);
  /* One Muon step on the matrix p[rows, cols] with gradient g and momentum buffer buf (same
   * shape): buf ← fp32(mu·buf + g); u = nesterov ? fp32(g + mu·buf) : buf; with row_normalize
   * each row of u divided by max(‖row‖₂, 1e-7); X = Newton–Schulz(u) (ns_kind, ns_steps);
   * p ← fp32(p·(1 − lr·wd) − lr·(s·X)), s = sqrt(max(1, rows/cols)). Scratch from the engine:
   * PG_E_NOMEM recorded and nothing written when it cannot be had. */
  void (*muon_step)(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *buf, int rows,
                    int cols, double lr, double mu, double wd, int nesterov, int row_normalize,
                    int ns_kind, int ns_steps);
  /* ema ← fp32(decay·ema + (1 − decay)·p). */
  void (*ema_update)(const pg_ops *e, pg_real *ema, const pg_real *p, size_t n, double decay);
  /* sum ← sum + p in fp64 (not rounded);  out ← fp32(sum / count) (count 0: out unchanged). */
  void (*swa_add)(const pg_ops *e, double *sum, const pg_real *p, size_t n);
  void (*swa_average)(const pg_ops *e, pg_real *out, const double *sum, size_t n,
                      uint64_t count);
};

/* One fp32 value rounded to the nearest bfloat16 (RNE; NaN kept, quieted), returned as fp32. */
float pg_bf16_round(float v);

#ifdef __cplusplus
}
#endif
#endif
