/* pg_ops.c: the CPU reference ops (the oracle for the CUDA engine). Plain loops, fp64 sums in
 * ascending index order, one fp32 rounding per output element, parallel over output rows only
 * (pg_parallel_for), so every result is the same for any thread count. spec/engine.md defines
 * each op. */
#include "pg_ops.h"

#include <math.h>
#include <stdlib.h>

#include "pg_status.h"
#include "pg_threads.h"

/* Column block of the matmul backward's fp64 accumulators (kept on the stack). */
#define PG_OPS_KBLOCK 64

/* ---------------------------------------------------------------------------------------------
 * matmul: y[M,N] = x[M,K] · W^T, W[N,K] */

typedef struct {
  float *y, *dx, *dw;
  const float *x, *w, *dy;
  int M, N, K;
} pg_mm_ctx;

/* rows m of y: y[m,n] = Σ_k x[m,k]·w[n,k] */
static void mm_fwd_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
  for (size_t m = b; m < end; m++) {
    const float *xm = c->x + m * (size_t)c->K;
    float *ym = c->y + m * (size_t)c->N;
    for (int n = 0; n < c->N; n++) {
      const float *wn = c->w + (size_t)n * (size_t)c->K;
      double acc = 0.0;
      for (int k = 0; k < c->K; k++) acc += (double)xm[k] * (double)wn[k];
      ym[n] = (float)acc;
    }
  }
}

static void cpu_matmul_fwd(const pg_ops *e, float *y, const float *x, const float *w, int M, int N,
                           int K) {
  pg_mm_ctx c = {.y = y, .x = x, .w = w, .M = M, .N = N, .K = K};
  pg_parallel_for((size_t)M, mm_fwd_rows, &c, e->nthreads);
}

/* rows m of dx: dx[m,k] += Σ_n dy[m,n]·w[n,k] (n ascending, per k) */
static void mm_bwd_dx_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t m = b; m < end; m++) {
    const float *dym = c->dy + m * (size_t)c->N;
    float *dxm = c->dx + m * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PG_OPS_KBLOCK) {
      int kn = c->K - k0 < PG_OPS_KBLOCK ? c->K - k0 : PG_OPS_KBLOCK;
      for (int j = 0; j < kn; j++) acc[j] = 0.0;
      for (int n = 0; n < c->N; n++) {
        double g = (double)dym[n];
        const float *wn = c->w + (size_t)n * (size_t)c->K + (size_t)k0;
        for (int j = 0; j < kn; j++) acc[j] += g * (double)wn[j];
      }
      for (int j = 0; j < kn; j++) dxm[k0 + j] = (float)((double)dxm[k0 + j] + acc[j]);
    }
  }
}

/* rows n of dw: dw[n,k] += Σ_m dy[m,n]·x[m,k] (m ascending, per k) */
static void mm_bwd_dw_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t n = b; n < end; n++) {
    float *dwn = c->dw + n * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PG_OPS_KBLOCK) {
      int kn = c->K - k0 < PG_OPS_KBLOCK ? c->K - k0 : PG_OPS_KBLOCK;
      for (int j = 0; j < kn; j++) acc[j] = 0.0;
      for (int m = 0; m < c->M; m++) {
        double g = (double)c->dy[(size_t)m * (size_t)c->N + n];
        const float *xm = c->x + (size_t)m * (size_t)c->K + (size_t)k0;
        for (int j = 0; j < kn; j++) acc[j] += g * (double)xm[j];
      }
      for (int j = 0; j < kn; j++) dwn[k0 + j] = (float)((double)dwn[k0 + j] + acc[j]);
    }
  }
}

static void cpu_matmul_bwd(const pg_ops *e, float *dx, float *dw, const float *dy, const float *x,
                           const float *w, int M, int N, int K) {
  pg_mm_ctx c = {.dx = dx, .dw = dw, .dy = dy, .x = x, .w = w, .M = M, .N = N, .K = K};
  if (dx) pg_parallel_for((size_t)M, mm_bwd_dx_rows, &c, e->nthreads);
  if (dw) pg_parallel_for((size_t)N, mm_bwd_dw_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * rmsnorm: per row of D, y = x·r, r = 1/sqrt(mean(x²) + eps) */

typedef struct {
  float *y, *dx;
  const float *x, *dy;
  int D;
  double eps;
} pg_rms_ctx;

static double rms_inv(const float *x, int D, double eps) {
  double ss = 0.0;
  for (int i = 0; i < D; i++) ss += (double)x[i] * (double)x[i];
  return 1.0 / sqrt(ss / (double)D + eps);
}

static void rms_fwd_rows(void *p, size_t b, size_t end) {
  const pg_rms_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    const float *x = c->x + r * (size_t)c->D;
    float *y = c->y + r * (size_t)c->D;
    double inv = rms_inv(x, c->D, c->eps);
    for (int i = 0; i < c->D; i++) y[i] = (float)((double)x[i] * inv);
  }
}

/* dx_j += r·dy_j − r³·x_j·(Σ_i dy_i·x_i)/D */
static void rms_bwd_rows(void *p, size_t b, size_t end) {
  const pg_rms_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    const float *x = c->x + r * (size_t)c->D;
    const float *dy = c->dy + r * (size_t)c->D;
    float *dx = c->dx + r * (size_t)c->D;
    double inv = rms_inv(x, c->D, c->eps);
    double dot = 0.0;
    for (int i = 0; i < c->D; i++) dot += (double)dy[i] * (double)x[i];
    double k = inv * inv * inv * dot / (double)c->D;
    for (int i = 0; i < c->D; i++)
      dx[i] = (float)((double)dx[i] + (inv * (double)dy[i] - k * (double)x[i]));
  }
}

static void cpu_rmsnorm_fwd(const pg_ops *e, float *y, const float *x, int R, int D, float eps) {
  pg_rms_ctx c = {.y = y, .x = x, .D = D, .eps = (double)eps};
  pg_parallel_for((size_t)R, rms_fwd_rows, &c, e->nthreads);
}

static void cpu_rmsnorm_bwd(const pg_ops *e, float *dx, const float *dy, const float *x, int R,
                            int D, float eps) {
  pg_rms_ctx c = {.dx = dx, .dy = dy, .x = x, .D = D, .eps = (double)eps};
  pg_parallel_for((size_t)R, rms_bwd_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * rope: x[T, H, d], pairs (i, i + rot/2) for i < rot/2, rotation by -θ */

typedef struct {
  float *y;
  const float *x;
  const int32_t *pos;
  int H, d, rot;
  float base;
  int backward;
} pg_rope_ctx;

/* The angle of pair i at position pos, as the records compute it: fp32 inv_freq, fp32 product. */
static double rope_angle(int32_t pos, int i, int rot, float base) {
  float inv_freq = (float)pow((double)base, -2.0 * (double)i / (double)rot);
  float theta = (float)pos * inv_freq;
  return (double)theta;
}

/* rows t: forward y = R x; backward y += R^T x (x holding dy, y holding dx) */
static void rope_rows(void *p, size_t b, size_t end) {
  const pg_rope_ctx *c = p;
  int half = c->rot / 2;
  for (size_t t = b; t < end; t++) {
    for (int h = 0; h < c->H; h++) {
      size_t off = (t * (size_t)c->H + (size_t)h) * (size_t)c->d;
      const float *x = c->x + off;
      float *y = c->y + off;
      for (int i = 0; i < half; i++) {
        double th = rope_angle(c->pos[t], i, c->rot, c->base);
        double cs = cos(th), sn = sin(th);
        double x1 = (double)x[i], x2 = (double)x[i + half];
        if (!c->backward) {
          y[i] = (float)(x1 * cs + x2 * sn);
          y[i + half] = (float)(-x1 * sn + x2 * cs);
        } else {
          y[i] = (float)((double)y[i] + (x1 * cs - x2 * sn));
          y[i + half] = (float)((double)y[i + half] + (x1 * sn + x2 * cs));
        }
      }
      for (int i = c->rot; i < c->d; i++)
        y[i] = c->backward ? (float)((double)y[i] + (double)x[i]) : x[i];
    }
  }
}

static void cpu_rope_fwd(const pg_ops *e, float *y, const float *x, const int32_t *pos, int T,
                         int H, int d, int rot, float base) {
  pg_rope_ctx c = {.y = y, .x = x, .pos = pos, .H = H, .d = d, .rot = rot, .base = base};
  pg_parallel_for((size_t)T, rope_rows, &c, e->nthreads);
}

static void cpu_rope_bwd(const pg_ops *e, float *dx, const float *dy, const int32_t *pos, int T,
                         int H, int d, int rot, float base) {
  pg_rope_ctx c = {.y = dx, .x = dy, .pos = pos, .H = H, .d = d, .rot = rot, .base = base,
                   .backward = 1};
  pg_parallel_for((size_t)T, rope_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * attention: q[T, H, d], k/v[T, Hkv, d], out[T, H, d]; causal, optional segment mask, GQA */

typedef struct {
  float *out, *dq, *dk, *dv;
  const float *q, *k, *v, *dout;
  const int32_t *seg;
  int T, H, Hkv, d;
  double scale;
  double *stats; /* backward: [T, H, 3] = (max, denominator, Σ_s p_s·(dout·v_s)) */
} pg_attn_ctx;

static int attn_allowed(const pg_attn_ctx *c, int t, int s) {
  return s <= t && (!c->seg || c->seg[s] == c->seg[t]);
}

static double attn_dot(const float *a, const float *b, int d) {
  double acc = 0.0;
  for (int i = 0; i < d; i++) acc += (double)a[i] * (double)b[i];
  return acc;
}

static const float *attn_q(const pg_attn_ctx *c, int t, int h) {
  return c->q + ((size_t)t * (size_t)c->H + (size_t)h) * (size_t)c->d;
}
static const float *attn_kv(const pg_attn_ctx *c, const float *base, int s, int g) {
  return base + ((size_t)s * (size_t)c->Hkv + (size_t)g) * (size_t)c->d;
}

/* logit of query (t, h) against key s */
static double attn_score(const pg_attn_ctx *c, int t, int h, int s) {
  int g = h / (c->H / c->Hkv);
  return c->scale * attn_dot(attn_q(c, t, h), attn_kv(c, c->k, s, g), c->d);
}

static double attn_max(const pg_attn_ctx *c, int t, int h) {
  double mx = -INFINITY;
  for (int s = 0; s <= t; s++) {
    if (!attn_allowed(c, t, s)) continue;
    double sc = attn_score(c, t, h, s);
    if (sc > mx) mx = sc;
  }
  return mx;
}

/* rows (t, h): out = Σ_s e^(l_s − max) v_s / Σ_s e^(l_s − max) */
static void attn_fwd_rows(void *p, size_t b, size_t end) {
  const pg_attn_ctx *c = p;
  double acc[PG_OPS_MAX_HEAD_DIM];
  for (size_t row = b; row < end; row++) {
    int t = (int)(row / (size_t)c->H), h = (int)(row % (size_t)c->H);
    int g = h / (c->H / c->Hkv);
    double mx = attn_max(c, t, h), den = 0.0;
    for (int i = 0; i < c->d; i++) acc[i] = 0.0;
    for (int s = 0; s <= t; s++) {
      if (!attn_allowed(c, t, s)) continue;
      double w = exp(attn_score(c, t, h, s) - mx);
      const float *vs = attn_kv(c, c->v, s, g);
      den += w;
      for (int i = 0; i < c->d; i++) acc[i] += w * (double)vs[i];
    }
    float *o = c->out + row * (size_t)c->d;
    for (int i = 0; i < c->d; i++) o[i] = (float)(acc[i] / den);
  }
}

static void cpu_attention_fwd(const pg_ops *e, float *out, const float *q, const float *k,
                              const float *v, const int32_t *seg, int T, int H, int Hkv, int d,
                              float scale) {
  pg_attn_ctx c = {.out = out, .q = q, .k = k, .v = v, .seg = seg, .T = T, .H = H, .Hkv = Hkv,
                   .d = d, .scale = (double)scale};
  pg_parallel_for((size_t)T * (size_t)H, attn_fwd_rows, &c, e->nthreads);
}

/* Backward pass A, rows (t, h): the softmax statistics, and
 * dq[t,h] += scale · Σ_s p_s (dp_s − D) k_s with dp_s = dout·v_s, D = Σ_s p_s dp_s. */
static void attn_bwd_q_rows(void *p, size_t b, size_t end) {
  const pg_attn_ctx *c = p;
  double acc[PG_OPS_MAX_HEAD_DIM];
  for (size_t row = b; row < end; row++) {
    int t = (int)(row / (size_t)c->H), h = (int)(row % (size_t)c->H);
    int g = h / (c->H / c->Hkv);
    const float *dO = c->dout + row * (size_t)c->d;
    double mx = attn_max(c, t, h), den = 0.0, dsum = 0.0;
    for (int s = 0; s <= t; s++) {
      if (!attn_allowed(c, t, s)) continue;
      double w = exp(attn_score(c, t, h, s) - mx);
      den += w;
      dsum += w * attn_dot(dO, attn_kv(c, c->v, s, g), c->d);
    }
    double D = dsum / den;
    double *st = c->stats + row * 3;
    st[0] = mx;
    st[1] = den;
    st[2] = D;
    if (!c->dq) continue;
    for (int i = 0; i < c->d; i++) acc[i] = 0.0;
    for (int s = 0; s <= t; s++) {
      if (!attn_allowed(c, t, s)) continue;
      double pr = exp(attn_score(c, t, h, s) - mx) / den;
      double ds = pr * (attn_dot(dO, attn_kv(c, c->v, s, g), c->d) - D);
      const float *ks = attn_kv(c, c->k, s, g);
      for (int i = 0; i < c->d; i++) acc[i] += ds * (double)ks[i];
    }
    float *dq = c->dq + row * (size_t)c->d;
    for (int i = 0; i < c->d; i++) dq[i] = (float)((double)dq[i] + c->scale * acc[i]);
  }
}

/* Backward pass B, rows (s, g): over the heads h of group g (ascending), then the queries t ≥ s
 * (ascending): dk[s,g] += scale · Σ ds_{t,h,s} q[t,h];  dv[s,g] += Σ p_{t,h,s} dout[t,h]. */
static void attn_bwd_kv_rows(void *p, size_t b, size_t end) {
  const pg_attn_ctx *c = p;
  double ak[PG_OPS_MAX_HEAD_DIM], av[PG_OPS_MAX_HEAD_DIM];
  int rep = c->H / c->Hkv;
  for (size_t row = b; row < end; row++) {
    int s = (int)(row / (size_t)c->Hkv), g = (int)(row % (size_t)c->Hkv);
    const float *vs = attn_kv(c, c->v, s, g);
    for (int i = 0; i < c->d; i++) ak[i] = av[i] = 0.0;
    for (int h = g * rep; h < (g + 1) * rep; h++) {
      for (int t = s; t < c->T; t++) {
        if (!attn_allowed(c, t, s)) continue;
        const double *st = c->stats + ((size_t)t * (size_t)c->H + (size_t)h) * 3;
        const float *dO = c->dout + ((size_t)t * (size_t)c->H + (size_t)h) * (size_t)c->d;
        const float *qt = attn_q(c, t, h);
        double pr = exp(attn_score(c, t, h, s) - st[0]) / st[1];
        double ds = pr * (attn_dot(dO, vs, c->d) - st[2]);
        for (int i = 0; i < c->d; i++) {
          ak[i] += ds * (double)qt[i];
          av[i] += pr * (double)dO[i];
        }
      }
    }
    size_t off = row * (size_t)c->d;
    if (c->dk)
      for (int i = 0; i < c->d; i++) c->dk[off + i] = (float)((double)c->dk[off + i] + c->scale * ak[i]);
    if (c->dv)
      for (int i = 0; i < c->d; i++) c->dv[off + i] = (float)((double)c->dv[off + i] + av[i]);
  }
}

static int cpu_attention_bwd(const pg_ops *e, float *dq, float *dk, float *dv, const float *dout,
                             const float *q, const float *k, const float *v, const int32_t *seg,
                             int T, int H, int Hkv, int d, float scale) {
  size_t rows = (size_t)T * (size_t)H;
  double *stats = malloc((rows ? rows : 1) * 3 * sizeof *stats);
  if (!stats) return PG_E_NOMEM;
  pg_attn_ctx c = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v,
                   .seg = seg, .T = T, .H = H, .Hkv = Hkv, .d = d, .scale = (double)scale,
                   .stats = stats};
  pg_parallel_for(rows, attn_bwd_q_rows, &c, e->nthreads);
  if (dk || dv) pg_parallel_for((size_t)T * (size_t)Hkv, attn_bwd_kv_rows, &c, e->nthreads);
  free(stats);
  return PG_OK;
}

/* ---------------------------------------------------------------------------------------------
 * elementwise ops: activations, gates, softcap, axpy */

typedef struct {
  float *y, *dx, *dg;
  const float *x, *dy, *g;
  double a;
  int D; /* rowgate only */
} pg_ew_ctx;

static void relu2_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = c->x[i] > 0.0f ? (double)c->x[i] : 0.0;
    c->y[i] = (float)(x * x);
  }
}

static void relu2_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = c->x[i] > 0.0f ? (double)c->x[i] : 0.0;
    c->dx[i] = (float)((double)c->dx[i] + (double)c->dy[i] * 2.0 * x);
  }
}

static void leaky2_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = (double)c->x[i], u = x > 0.0 ? x : c->a * x;
    c->y[i] = (float)(u * u);
  }
}

static void leaky2_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = (double)c->x[i], du = x > 0.0 ? 2.0 * x : 2.0 * c->a * c->a * x;
    c->dx[i] = (float)((double)c->dx[i] + (double)c->dy[i] * du);
  }
}

static double sigmoid(double z) {
  return z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

static void gate_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (float)((double)c->x[i] * sigmoid((double)c->g[i]));
}

static void gate_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double sg = sigmoid((double)c->g[i]), dy = (double)c->dy[i];
    if (c->dx) c->dx[i] = (float)((double)c->dx[i] + dy * sg);
    if (c->dg) c->dg[i] = (float)((double)c->dg[i] + dy * (double)c->x[i] * sg * (1.0 - sg));
  }
}

static void rowgate_fwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double sg = sigmoid((double)c->g[r]);
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++)
      c->y[j] = (float)((double)c->x[j] * sg);
  }
}

static void rowgate_bwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double sg = sigmoid((double)c->g[r]), dot = 0.0;
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++) {
      dot += (double)c->dy[j] * (double)c->x[j];
      if (c->dx) c->dx[j] = (float)((double)c->dx[j] + (double)c->dy[j] * sg);
    }
    if (c->dg) c->dg[r] = (float)((double)c->dg[r] + dot * sg * (1.0 - sg));
  }
}

static void softcap_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (float)(c->a * tanh((double)c->x[i] / c->a));
}

static void softcap_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double th = tanh((double)c->x[i] / c->a);
    c->dx[i] = (float)((double)c->dx[i] + (double)c->dy[i] * (1.0 - th * th));
  }
}

static void axpy_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (float)((double)c->y[i] + c->a * (double)c->x[i]);
}

static void cpu_relu2_fwd(const pg_ops *e, float *y, const float *x, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x};
  pg_parallel_for(n, relu2_fwd_range, &c, e->nthreads);
}

static void cpu_relu2_bwd(const pg_ops *e, float *dx, const float *dy, const float *x, size_t n) {
  pg_ew_ctx c = {.dx = dx, .dy = dy, .x = x};
  pg_parallel_for(n, relu2_bwd_range, &c, e->nthreads);
}

static void cpu_leaky_relu2_fwd(const pg_ops *e, float *y, const float *x, size_t n, float s) {
  pg_ew_ctx c = {.y = y, .x = x, .a = (double)s};
  pg_parallel_for(n, leaky2_fwd_range, &c, e->nthreads);
}

static void cpu_leaky_relu2_bwd(const pg_ops *e, float *dx, const float *dy, const float *x,
                                size_t n, float s) {
  pg_ew_ctx c = {.dx = dx, .dy = dy, .x = x, .a = (double)s};
  pg_parallel_for(n, leaky2_bwd_range, &c, e->nthreads);
}

static void cpu_gate_fwd(const pg_ops *e, float *y, const float *x, const float *g, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x, .g = g};
  pg_parallel_for(n, gate_fwd_range, &c, e->nthreads);
}

static void cpu_gate_bwd(const pg_ops *e, float *dx, float *dg, const float *dy, const float *x,
                         const float *g, size_t n) {
  pg_ew_ctx c = {.dx = dx, .dg = dg, .dy = dy, .x = x, .g = g};
  pg_parallel_for(n, gate_bwd_range, &c, e->nthreads);
}

static void cpu_rowgate_fwd(const pg_ops *e, float *y, const float *x, const float *g, int R,
                            int D) {
  pg_ew_ctx c = {.y = y, .x = x, .g = g, .D = D};
  pg_parallel_for((size_t)R, rowgate_fwd_rows, &c, e->nthreads);
}

static void cpu_rowgate_bwd(const pg_ops *e, float *dx, float *dg, const float *dy,
                            const float *x, const float *g, int R, int D) {
  pg_ew_ctx c = {.dx = dx, .dg = dg, .dy = dy, .x = x, .g = g, .D = D};
  pg_parallel_for((size_t)R, rowgate_bwd_rows, &c, e->nthreads);
}

static void cpu_softcap_fwd(const pg_ops *e, float *y, const float *z, size_t n, float cap) {
  pg_ew_ctx c = {.y = y, .x = z, .a = (double)cap};
  pg_parallel_for(n, softcap_fwd_range, &c, e->nthreads);
}

static void cpu_softcap_bwd(const pg_ops *e, float *dz, const float *dy, const float *z, size_t n,
                            float cap) {
  pg_ew_ctx c = {.dx = dz, .dy = dy, .x = z, .a = (double)cap};
  pg_parallel_for(n, softcap_bwd_range, &c, e->nthreads);
}

static void cpu_axpy(const pg_ops *e, float *y, float a, const float *x, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x, .a = (double)a};
  pg_parallel_for(n, axpy_range, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * chanmul: x[R, C] ⊙ s[C] broadcast over rows */

typedef struct {
  float *y, *dx, *ds;
  const float *x, *dy, *s;
  int R, C;
} pg_cm_ctx;

static void cm_fwd_rows(void *p, size_t b, size_t end) {
  const pg_cm_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      c->y[i] = (float)((double)c->x[i] * (double)c->s[j]);
    }
}

static void cm_bwd_dx_rows(void *p, size_t b, size_t end) {
  const pg_cm_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      c->dx[i] = (float)((double)c->dx[i] + (double)c->dy[i] * (double)c->s[j]);
    }
}

/* column blocks jb of PG_OPS_KBLOCK: ds[c] += Σ_r dy[r,c]·x[r,c] (r ascending, per c) */
static void cm_bwd_ds_blocks(void *p, size_t b, size_t end) {
  const pg_cm_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t jb = b; jb < end; jb++) {
    int j0 = (int)jb * PG_OPS_KBLOCK;
    int jn = c->C - j0 < PG_OPS_KBLOCK ? c->C - j0 : PG_OPS_KBLOCK;
    for (int j = 0; j < jn; j++) acc[j] = 0.0;
    for (int r = 0; r < c->R; r++) {
      size_t off = (size_t)r * (size_t)c->C + (size_t)j0;
      for (int j = 0; j < jn; j++) acc[j] += (double)c->dy[off + j] * (double)c->x[off + j];
    }
    for (int j = 0; j < jn; j++) c->ds[j0 + j] = (float)((double)c->ds[j0 + j] + acc[j]);
  }
}

static void cpu_chanmul_fwd(const pg_ops *e, float *y, const float *x, const float *s, int R,
                            int C) {
  pg_cm_ctx c = {.y = y, .x = x, .s = s, .R = R, .C = C};
  pg_parallel_for((size_t)R, cm_fwd_rows, &c, e->nthreads);
}

static void cpu_chanmul_bwd(const pg_ops *e, float *dx, float *ds, const float *dy,
                            const float *x, const float *s, int R, int C) {
  pg_cm_ctx c = {.dx = dx, .ds = ds, .dy = dy, .x = x, .s = s, .R = R, .C = C};
  if (dx) pg_parallel_for((size_t)R, cm_bwd_dx_rows, &c, e->nthreads);
  if (ds)
    pg_parallel_for(((size_t)C + PG_OPS_KBLOCK - 1) / PG_OPS_KBLOCK, cm_bwd_ds_blocks, &c,
                    e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * xsa: y[T, H, d] minus its component along the token's own value v[T, Hkv, d] */

#define PG_OPS_XSA_EPS 1e-12

typedef struct {
  float *out, *dy, *dv;
  const float *y, *v, *dout;
  int H, Hkv, d;
} pg_xsa_ctx;

/* v̂ of one value row into vh[d] (fp64); returns the clamped norm max(‖v‖, 1e-12) */
static double xsa_unit(const float *v, int d, double *vh) {
  double ss = 0.0;
  for (int i = 0; i < d; i++) ss += (double)v[i] * (double)v[i];
  double nrm = sqrt(ss);
  if (nrm < PG_OPS_XSA_EPS) nrm = PG_OPS_XSA_EPS;
  for (int i = 0; i < d; i++) vh[i] = (double)v[i] / nrm;
  return nrm;
}

/* rows (t, h) */
static void xsa_fwd_rows(void *p, size_t b, size_t end) {
  const pg_xsa_ctx *c = p;
  double vh[PG_OPS_MAX_HEAD_DIM];
  for (size_t row = b; row < end; row++) {
    size_t t = row / (size_t)c->H;
    int g = (int)(row % (size_t)c->H) / (c->H / c->Hkv);
    xsa_unit(c->v + (t * (size_t)c->Hkv + (size_t)g) * (size_t)c->d, c->d, vh);
    const float *y = c->y + row * (size_t)c->d;
    float *o = c->out + row * (size_t)c->d;
    double a = 0.0;
    for (int i = 0; i < c->d; i++) a += (double)y[i] * vh[i];
    for (int i = 0; i < c->d; i++) o[i] = (float)((double)y[i] - a * vh[i]);
  }
}

/* rows (t, g): the heads h of group g ascending. With a = y·v̂, b = dout·v̂:
 * dy += dout − b·v̂;  ∂/∂v̂ = −(b·y + a·dout);  dv += (∂v̂ − (∂v̂·v̂)v̂)/‖v‖ (unclamped), ∂v̂/1e-12
 * (clamped). */
static void xsa_bwd_rows(void *p, size_t b, size_t end) {
  const pg_xsa_ctx *c = p;
  double vh[PG_OPS_MAX_HEAD_DIM], gv[PG_OPS_MAX_HEAD_DIM];
  int rep = c->H / c->Hkv;
  for (size_t row = b; row < end; row++) {
    size_t t = row / (size_t)c->Hkv;
    int g = (int)(row % (size_t)c->Hkv);
    const float *v = c->v + row * (size_t)c->d;
    double nrm = xsa_unit(v, c->d, vh);
    for (int i = 0; i < c->d; i++) gv[i] = 0.0;
    for (int h = g * rep; h < (g + 1) * rep; h++) {
      size_t off = (t * (size_t)c->H + (size_t)h) * (size_t)c->d;
      const float *y = c->y + off, *dO = c->dout + off;
      double a = 0.0, bb = 0.0;
      for (int i = 0; i < c->d; i++) {
        a += (double)y[i] * vh[i];
        bb += (double)dO[i] * vh[i];
      }
      for (int i = 0; i < c->d; i++) gv[i] -= bb * (double)y[i] + a * (double)dO[i];
      if (c->dy)
        for (int i = 0; i < c->d; i++)
          c->dy[off + i] = (float)((double)c->dy[off + i] + ((double)dO[i] - bb * vh[i]));
    }
    if (!c->dv) continue;
    float *dv = c->dv + row * (size_t)c->d;
    if (nrm > PG_OPS_XSA_EPS) {
      double gd = 0.0;
      for (int i = 0; i < c->d; i++) gd += gv[i] * vh[i];
      for (int i = 0; i < c->d; i++) dv[i] = (float)((double)dv[i] + (gv[i] - gd * vh[i]) / nrm);
    } else {
      for (int i = 0; i < c->d; i++) dv[i] = (float)((double)dv[i] + gv[i] / nrm);
    }
  }
}

static void cpu_xsa_fwd(const pg_ops *e, float *out, const float *y, const float *v, int T, int H,
                        int Hkv, int d) {
  pg_xsa_ctx c = {.out = out, .y = y, .v = v, .H = H, .Hkv = Hkv, .d = d};
  pg_parallel_for((size_t)T * (size_t)H, xsa_fwd_rows, &c, e->nthreads);
}

static void cpu_xsa_bwd(const pg_ops *e, float *dy, float *dv, const float *dout, const float *y,
                        const float *v, int T, int H, int Hkv, int d) {
  pg_xsa_ctx c = {.dy = dy, .dv = dv, .dout = dout, .y = y, .v = v, .H = H, .Hkv = Hkv, .d = d};
  pg_parallel_for((size_t)T * (size_t)Hkv, xsa_bwd_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * cross-entropy: logits[T, V], targets[T] */

typedef struct {
  double *nll;
  float *dl;
  const float *logits, *dnll;
  const int32_t *tg;
  int V;
} pg_ce_ctx;

/* max and Σ_v e^(l_v − max) of one row */
static void ce_row_stats(const float *l, int V, double *mx, double *sum) {
  double m = -INFINITY, s = 0.0;
  for (int v = 0; v < V; v++)
    if ((double)l[v] > m) m = (double)l[v];
  for (int v = 0; v < V; v++) s += exp((double)l[v] - m);
  *mx = m;
  *sum = s;
}

static void ce_fwd_rows(void *p, size_t b, size_t end) {
  const pg_ce_ctx *c = p;
  for (size_t t = b; t < end; t++) {
    const float *l = c->logits + t * (size_t)c->V;
    double mx, sum;
    ce_row_stats(l, c->V, &mx, &sum);
    c->nll[t] = mx + log(sum) - (double)l[c->tg[t]];
  }
}

static void ce_bwd_rows(void *p, size_t b, size_t end) {
  const pg_ce_ctx *c = p;
  for (size_t t = b; t < end; t++) {
    const float *l = c->logits + t * (size_t)c->V;
    float *dl = c->dl + t * (size_t)c->V;
    double g = c->dnll ? (double)c->dnll[t] : 1.0, mx, sum;
    ce_row_stats(l, c->V, &mx, &sum);
    for (int v = 0; v < c->V; v++) {
      double pr = exp((double)l[v] - mx) / sum - (v == c->tg[t] ? 1.0 : 0.0);
      dl[v] = (float)((double)dl[v] + g * pr);
    }
  }
}

static int ce_check_targets(const int32_t *tg, int T, int V) {
  for (int t = 0; t < T; t++)
    if (tg[t] < 0 || tg[t] >= V) return PG_E_TOKEN_RANGE;
  return PG_OK;
}

static int cpu_ce_fwd(const pg_ops *e, double *nll, const float *logits, const int32_t *targets,
                      int T, int V) {
  int st = ce_check_targets(targets, T, V);
  if (st) return st;
  pg_ce_ctx c = {.nll = nll, .logits = logits, .tg = targets, .V = V};
  pg_parallel_for((size_t)T, ce_fwd_rows, &c, e->nthreads);
  return PG_OK;
}

static int cpu_ce_bwd(const pg_ops *e, float *dlogits, const float *dnll, const float *logits,
                      const int32_t *targets, int T, int V) {
  int st = ce_check_targets(targets, T, V);
  if (st) return st;
  pg_ce_ctx c = {.dl = dlogits, .dnll = dnll, .logits = logits, .tg = targets, .V = V};
  pg_parallel_for((size_t)T, ce_bwd_rows, &c, e->nthreads);
  return PG_OK;
}

/* --------------------------------------------------------------------------------------------- */

pg_ops pg_ops_cpu(int nthreads) {
  pg_ops o = {
      .name = "cpu",
      .nthreads = nthreads,
      .impl = NULL,
      .matmul_fwd = cpu_matmul_fwd,
      .matmul_bwd = cpu_matmul_bwd,
      .rmsnorm_fwd = cpu_rmsnorm_fwd,
      .rmsnorm_bwd = cpu_rmsnorm_bwd,
      .rope_fwd = cpu_rope_fwd,
      .rope_bwd = cpu_rope_bwd,
      .attention_fwd = cpu_attention_fwd,
      .attention_bwd = cpu_attention_bwd,
      .relu2_fwd = cpu_relu2_fwd,
      .relu2_bwd = cpu_relu2_bwd,
      .leaky_relu2_fwd = cpu_leaky_relu2_fwd,
      .leaky_relu2_bwd = cpu_leaky_relu2_bwd,
      .gate_fwd = cpu_gate_fwd,
      .gate_bwd = cpu_gate_bwd,
      .rowgate_fwd = cpu_rowgate_fwd,
      .rowgate_bwd = cpu_rowgate_bwd,
      .chanmul_fwd = cpu_chanmul_fwd,
      .chanmul_bwd = cpu_chanmul_bwd,
      .xsa_fwd = cpu_xsa_fwd,
      .xsa_bwd = cpu_xsa_bwd,
      .softcap_fwd = cpu_softcap_fwd,
      .softcap_bwd = cpu_softcap_bwd,
      .ce_fwd = cpu_ce_fwd,
      .ce_bwd = cpu_ce_bwd,
      .axpy = cpu_axpy,
  };
  return o;
}
