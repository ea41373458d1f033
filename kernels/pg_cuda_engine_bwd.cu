/* pg_cuda_engine_bwd.cu: the CUDA engine's backward ops and optimizer ops (issue 15), exact
 * mirrors of the CPU reference (src/engine/pg_ops.c, pg_ops_optim.c; spec/engine.md §4, §4.20):
 * one thread computes one output element (or one row, or one column's sum over rows) start to
 * finish, with the CPU's fp64 arithmetic in the CPU's order, and rounds it once; where the CPU
 * accumulates (g ← fp32(fp64(g) + contribution)) the thread does the same. A gradient that is a
 * sum over rows (matmul's dW, chanmul's and chanlerp's channel gradients, attention's dk and dv,
 * embed's scatter) has one thread per output walking the contributions in the CPU's order: no
 * atomics feed a value, so reruns give the same bits. Same flags as pg_cuda_engine.cu
 * (-fmad=false, IEEE division and square root): ops of +, −, ×, ÷, √ and pg_exp give the CPU's
 * bits; those that call the C library's exp, tanh, pow, sin or cos on the CPU (the sigmoid gates,
 * softcap, tanh, RoPE's angle) use CUDA's fp64 functions (spec/engine.md §8.6 states the
 * tolerance). Temporaries come from the engine's scratch (slot 0), never from cudaMalloc. In the
 * trainer's bf16 backward (bf16_pass and bf16_grad set, an engine opened with precision bf16)
 * matmul_bwd and attention_bwd hand over to the tensor-core kernels of pg_cuda_engine.cu, and
 * ce_bwd's row statistics take a block per row; muon_step's bf16 Newton–Schulz (PG_NS_BF16, a
 * bf16 run's) multiplies through cuBLAS on such an engine (spec/engine.md §8.7). */
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <cub/device/device_radix_sort.cuh>

#include "pg_cuda_engine_impl.cuh"
#include "pg_engine.h"
#include "pg_ops_optim.h"

namespace {

using namespace pgcuda;

constexpr int kTile = 16;

cudaStream_t stream_of(const pg_ops *o) { return dev_of(o)->stream; }

/* 64-byte aligned offsets into one piece of scratch */
size_t align64(size_t n) { return (n + 63) / 64 * 64; }

/* ---- products: out[p, q] from S[p, q] = Σ_r A(p, r)·B(q, r), r ascending from 0.0 ------------
 * A(p, r) = a[p·a_p + r·a_r], B(q, r) = b[q·b_q + r·b_r] (the CPU's pg_mm_gemm, and the
 * Newton–Schulz products of pg_ops_optim.c). A product of two fp32 values is exact in fp64, so
 * the order of the factors changes nothing; the order of the terms is the CPU's. Modes:
 *   PR_ACC  out = fp32(out + S)                                  (matmul_bwd: dx, dW)
 *   PR_NS   out = fp32(alpha·add[p, q] + beta·S), or fp32(beta·S) without add (Newton–Schulz)
 * Grid z: groups g0 + z; group g reads a + g·a_g, b + (b_w ? widx[g] : g)·b_g and writes
 * out + (o_w ? widx[g] : g)·o_g. */
enum { PR_ACC, PR_NS };

struct Prod {
  float *out;
  size_t ldo, o_g;
  const float *a, *b;
  size_t a_p, a_r, a_g, b_q, b_r, b_g;
  const float *add;
  size_t ld_add;
  double alpha, beta;
  const int32_t *widx;
  int b_w, o_w, g0, mode, P, Q, R;
};

__global__ void k_prod(Prod c) {
  __shared__ float as[kTile][kTile + 1], bs[kTile][kTile + 1];
  const int g = c.g0 + (int)blockIdx.z;
  const float *A = c.a + (size_t)g * c.a_g;
  const float *Bm = c.b + (size_t)(c.b_w ? c.widx[g] : g) * c.b_g;
  float *out = c.out + (size_t)(c.o_w ? c.widx[g] : g) * c.o_g;
  const int p0 = blockIdx.y * kTile, q0 = blockIdx.x * kTile;
  const int p = p0 + threadIdx.y, q = q0 + threadIdx.x;
  const int tx = threadIdx.x, ty = threadIdx.y;
  double acc = 0.0;
  for (int r0 = 0; r0 < c.R; r0 += kTile) {
    /* as[i][j] = A(p0 + i, r0 + j), bs[i][j] = B(q0 + i, r0 + j); consecutive threads (x) load
     * along whichever index is contiguous in memory (how the tiles are filled changes no value) */
    if (c.a_r == 1) {
      int i = p0 + ty, r = r0 + tx;
      as[ty][tx] = (i < c.P && r < c.R) ? A[(size_t)i * c.a_p + (size_t)r] : 0.0f;
    } else {
      int i = p0 + tx, r = r0 + ty;
      as[tx][ty] = (i < c.P && r < c.R) ? A[(size_t)i * c.a_p + (size_t)r * c.a_r] : 0.0f;
    }
    if (c.b_r == 1) {
      int i = q0 + ty, r = r0 + tx;
      bs[ty][tx] = (i < c.Q && r < c.R) ? Bm[(size_t)i * c.b_q + (size_t)r] : 0.0f;
    } else {
      int i = q0 + tx, r = r0 + ty;
      bs[tx][ty] = (i < c.Q && r < c.R) ? Bm[(size_t)i * c.b_q + (size_t)r * c.b_r] : 0.0f;
    }
    __syncthreads();
    int rn = c.R - r0 < kTile ? c.R - r0 : kTile;
    for (int j = 0; j < rn; j++)
      acc = acc + (double)as[threadIdx.y][j] * (double)bs[threadIdx.x][j];
    __syncthreads();
  }
  if (p >= c.P || q >= c.Q) return;
  float *o = out + (size_t)p * c.ldo + q;
  if (c.mode == PR_ACC) {
    *o = (float)((double)*o + acc);
  } else {
    double v = c.beta * acc;
    if (c.add) v = c.alpha * (double)c.add[(size_t)p * c.ld_add + q] + v;
    *o = (float)v;
  }
}

void launch_prod(const pg_ops *o, const Prod &c, int groups, const char *what) {
  if (c.P <= 0 || c.Q <= 0 || groups <= 0) return;
  dim3 block(kTile, kTile), grid((c.Q + kTile - 1) / kTile, (c.P + kTile - 1) / kTile, groups);
  k_prod<<<grid, block, 0, stream_of(o)>>>(c);
  launched(o, what);
}

/* dx[g] [M, K] += dy[g] [M, N] · W_g: A = dy (p = m, r = n), B = W (q = k, r = n), one launch for
 * every group (their dx are disjoint). dW_g [N, K] += dy[g]ᵀ · x[g]: A = dy (p = n, r = m),
 * B = x (q = k, r = m), one launch per group in descending g (the CPU's order, so groups that
 * share a matrix add into it in that order; the launches run in stream order). */
void matmul_bwd_groups(const pg_ops *o, float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const int32_t *widx, size_t wstride, int G, int M, int N,
                       int K) {
  const size_t Mz = (size_t)M, Nz = (size_t)N, Kz = (size_t)K;
  if (dx) {
    Prod c = {};
    c.out = dx, c.ldo = Kz, c.o_g = Mz * Kz;
    c.a = dy, c.a_p = Nz, c.a_r = 1, c.a_g = Mz * Nz;
    c.b = w, c.b_q = 1, c.b_r = Kz, c.b_g = widx ? wstride : 0, c.b_w = widx != nullptr;
    c.widx = widx, c.mode = PR_ACC, c.P = M, c.Q = K, c.R = N;
    launch_prod(o, c, G, "matmul backward (dx)");
  }
  if (dw)
    for (int g = G - 1; g >= 0; g--) {
      Prod c = {};
      c.out = dw, c.ldo = Kz, c.o_g = widx ? wstride : 0, c.o_w = widx != nullptr;
      c.a = dy, c.a_p = 1, c.a_r = Nz, c.a_g = Mz * Nz;
      c.b = x, c.b_q = 1, c.b_r = Kz, c.b_g = Mz * Kz;
      c.widx = widx, c.g0 = g, c.mode = PR_ACC, c.P = N, c.Q = K, c.R = M;
      launch_prod(o, c, 1, "matmul backward (dW)");
    }
}

void c_matmul_bwd(const pg_ops *o, float *dx, float *dw, const float *dy, const float *x,
                  const float *w, int M, int N, int K) {
  if ((dx || dw) && fast_matmul_bwd(o, dx, dw, dy, x, w, M, N, K)) return;
  matmul_bwd_groups(o, dx, dw, dy, x, w, nullptr, 0, 1, M, N, K);
}

void c_matmul_grouped_bwd(const pg_ops *o, float *dx, float *dw, const float *dy, const float *x,
                          const float *w, const int32_t *widx, size_t wstride, int G, int M, int N,
                          int K) {
  matmul_bwd_groups(o, dx, dw, dy, x, w, widx, wstride, G, M, N, K);
}

/* ---- rmsnorm: a thread per row; dx += r·dy − r³·x·(Σ dy·x)/D --------------------------------- */

__global__ void k_rmsnorm_bwd(float *dx, const float *dy, const float *x, size_t R, int D,
                              double eps) {
  GRID_LOOP(r, R) {
    const float *xr = x + r * (size_t)D, *dyr = dy + r * (size_t)D;
    float *dxr = dx + r * (size_t)D;
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss = ss + (double)xr[i] * (double)xr[i];
    double inv = 1.0 / sqrt(ss / (double)D + eps);
    double dot = 0.0;
    for (int i = 0; i < D; i++) dot = dot + (double)dyr[i] * (double)xr[i];
    double k = inv * inv * inv * dot / (double)D;
    for (int i = 0; i < D; i++)
      dxr[i] = (float)((double)dxr[i] + (inv * (double)dyr[i] - k * (double)xr[i]));
  }
}

void c_rmsnorm_bwd(const pg_ops *o, float *dx, const float *dy, const float *x, size_t R, int D,
                   float eps) {
  if (!R) return;
  k_rmsnorm_bwd<<<blocks_for(R), kThreads, 0, stream_of(o)>>>(dx, dy, x, R, D, (double)eps);
  launched(o, "rmsnorm backward");
}

/* ---- rope: dx += R(θ)ᵀ dy, a thread per (t, h, pair); dims ≥ rot: dx += dy ------------------- */

__global__ void k_rope_bwd(float *dx, const float *dy, const int32_t *pos, int T, int H, int d,
                           int rot, float base) {
  const int half = rot / 2, per = d - half;
  size_t n = (size_t)T * (size_t)H * (size_t)per;
  GRID_LOOP(idx, n) {
    size_t row = idx / (size_t)per;
    int j = (int)(idx % (size_t)per);
    size_t t = row / (size_t)H;
    const float *x = dy + row * (size_t)d;
    float *y = dx + row * (size_t)d;
    if (j < half) {
      double th = rope_angle(pos[t], j, rot, base);
      double cs = cos(th), sn = sin(th);
      double x1 = (double)x[j], x2 = (double)x[j + half];
      y[j] = (float)((double)y[j] + (x1 * cs - x2 * sn));
      y[j + half] = (float)((double)y[j + half] + (x1 * sn + x2 * cs));
    } else {
      int i = rot + (j - half);
      if (i < d) y[i] = (float)((double)y[i] + (double)x[i]);
    }
  }
}

void c_rope_bwd(const pg_ops *o, float *dx, const float *dy, const int32_t *pos, int T, int H,
                int d, int rot, float base) {
  size_t n = (size_t)T * (size_t)H * (size_t)(d - rot / 2);
  if (!n) return;
  k_rope_bwd<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(dx, dy, pos, T, H, d, rot, base);
  launched(o, "rope backward");
}

/* ---- attention backward (the CPU's two passes) --------------------------------------------------
 * Pass A, a thread per query row (b, t, h): the softmax statistics (max, denominator,
 * D = Σ_s w_s·dp_s / den with dp_s = dout·v_s) into scratch, and
 * dq += scale · Σ_s p_s (dp_s − D) k_s. Pass B, a thread per key row (b, s, g): over the heads h
 * of group g ascending, then the queries t ≥ s ascending, dk += scale · Σ ds·q_t and
 * dv += Σ p·dout_t. Every dot product sums over i ascending from 0.0, as attn_dot does. */

__device__ inline double dot_d(const float *a, const float *b, int d) {
  double acc = 0.0;
  for (int i = 0; i < d; i++) acc = acc + (double)a[i] * (double)b[i];
  return acc;
}

__global__ void k_attn_bwd_q(float *dq, double *stats, const float *dout, const float *q,
                             const float *k, const float *v, const int32_t *seg, int B, int T,
                             int H, int Hkv, int d, double scale) {
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  GRID_LOOP(row, rows) {
    size_t bt = row / (size_t)H;
    int h = (int)(row % (size_t)H), g = h / (H / Hkv);
    int t = (int)(bt % (size_t)T);
    size_t base_kv = bt - (size_t)t; /* b·T */
    const float *qr = q + row * (size_t)d, *dO = dout + row * (size_t)d;
    const int32_t *sg = seg ? seg + base_kv : nullptr;
    double mx = -INFINITY;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      const float *ks = k + ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double l = scale * dot_d(qr, ks, d);
      if (l > mx) mx = l;
    }
    double den = 0.0, dsum = 0.0;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      size_t kv = ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double w = pg_exp_d(scale * dot_d(qr, k + kv, d) - mx);
      den = den + w;
      dsum = dsum + w * dot_d(dO, v + kv, d);
    }
    double D = dsum / den;
    stats[row * 3] = mx;
    stats[row * 3 + 1] = den;
    stats[row * 3 + 2] = D;
    if (!dq) continue;
    double acc[PG_OPS_MAX_HEAD_DIM];
    for (int i = 0; i < d; i++) acc[i] = 0.0;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      size_t kv = ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double pr = pg_exp_d(scale * dot_d(qr, k + kv, d) - mx) / den;
      double ds = pr * (dot_d(dO, v + kv, d) - D);
      for (int i = 0; i < d; i++) acc[i] = acc[i] + ds * (double)k[kv + i];
    }
    float *dqr = dq + row * (size_t)d;
    for (int i = 0; i < d; i++) dqr[i] = (float)((double)dqr[i] + scale * acc[i]);
  }
}

__global__ void k_attn_bwd_kv(float *dk, float *dv, const double *stats, const float *dout,
                              const float *q, const float *k, const float *v, const int32_t *seg,
                              int B, int T, int H, int Hkv, int d, double scale) {
  size_t rows = (size_t)B * (size_t)T * (size_t)Hkv;
  const int rep = H / Hkv;
  GRID_LOOP(row, rows) {
    size_t bs = row / (size_t)Hkv;
    int g = (int)(row % (size_t)Hkv);
    int s = (int)(bs % (size_t)T);
    size_t base = bs - (size_t)s; /* b·T */
    const int32_t *sg = seg ? seg + base : nullptr;
    const float *ks = k + row * (size_t)d, *vs = v + row * (size_t)d;
    double ak[PG_OPS_MAX_HEAD_DIM], av[PG_OPS_MAX_HEAD_DIM];
    for (int i = 0; i < d; i++) ak[i] = av[i] = 0.0;
    for (int h = g * rep; h < (g + 1) * rep; h++)
      for (int t = s; t < T; t++) {
        if (sg && sg[s] != sg[t]) continue;
        size_t qrow = (base + (size_t)t) * (size_t)H + (size_t)h;
        const float *qt = q + qrow * (size_t)d, *dO = dout + qrow * (size_t)d;
        double lq = dot_d(qt, ks, d), dp = dot_d(dO, vs, d);
        const double *st = stats + qrow * 3;
        double pr = pg_exp_d(scale * lq - st[0]) / st[1];
        double ds = pr * (dp - st[2]);
        for (int i = 0; i < d; i++) {
          ak[i] = ak[i] + ds * (double)qt[i];
          av[i] = av[i] + pr * (double)dO[i];
        }
      }
    if (dk)
      for (int i = 0; i < d; i++)
        dk[row * (size_t)d + i] = (float)((double)dk[row * (size_t)d + i] + scale * ak[i]);
    if (dv)
      for (int i = 0; i < d; i++)
        dv[row * (size_t)d + i] = (float)((double)dv[row * (size_t)d + i] + av[i]);
  }
}

void c_attention_bwd(const pg_ops *o, float *dq, float *dk, float *dv, const float *dout,
                     const float *q, const float *k, const float *v, const int32_t *seg, int B,
                     int T, int H, int Hkv, int d, float scale) {
  if (fast_attention_bwd(o, dq, dk, dv, dout, q, k, v, seg, B, T, H, Hkv, d, scale)) return;
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  double *stats = static_cast<double *>(
      pg_engine_scratch(pg_engine_of(o), 0, (rows ? rows : 1) * 3 * sizeof(double)));
  if (!stats || !rows) return;
  k_attn_bwd_q<<<blocks_for(rows), 128, 0, stream_of(o)>>>(dq, stats, dout, q, k, v, seg, B, T, H,
                                                          Hkv, d, (double)scale);
  launched(o, "attention backward (dq)");
  if (!dk && !dv) return;
  size_t kvrows = (size_t)B * (size_t)T * (size_t)Hkv;
  k_attn_bwd_kv<<<blocks_for(kvrows), 128, 0, stream_of(o)>>>(dk, dv, stats, dout, q, k, v, seg, B,
                                                             T, H, Hkv, d, (double)scale);
  launched(o, "attention backward (dk, dv)");
}

/* ---- elementwise backward -------------------------------------------------------------------- */

enum { EB_RELU2, EB_LEAKY, EB_SOFTCAP, EB_TANH };

__global__ void k_ew_bwd(float *dx, const float *dy, const float *x, size_t n, int kind,
                         double a) {
  GRID_LOOP(i, n) {
    double g = (double)dy[i], f;
    switch (kind) {
    case EB_RELU2: {
      double xv = x[i] > 0.0f ? (double)x[i] : 0.0;
      f = g * 2.0 * xv;
      break;
    }
    case EB_LEAKY: {
      double xv = (double)x[i], du = xv > 0.0 ? 2.0 * xv : 2.0 * a * a * xv;
      f = g * du;
      break;
    }
    case EB_SOFTCAP: {
      double th = tanh((double)x[i] / a);
      f = g * (1.0 - th * th);
      break;
    }
    default: {
      double th = tanh((double)x[i]);
      f = g * (1.0 - th * th);
      break;
    }
    }
    dx[i] = (float)((double)dx[i] + f);
  }
}

void launch_ew_bwd(const pg_ops *o, float *dx, const float *dy, const float *x, size_t n, int kind,
                   double a) {
  if (!n) return;
  k_ew_bwd<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(dx, dy, x, n, kind, a);
  launched(o, "elementwise backward");
}

void c_relu2_bwd(const pg_ops *o, float *dx, const float *dy, const float *x, size_t n) {
  launch_ew_bwd(o, dx, dy, x, n, EB_RELU2, 0);
}
void c_leaky_relu2_bwd(const pg_ops *o, float *dx, const float *dy, const float *x, size_t n,
                       float s) {
  launch_ew_bwd(o, dx, dy, x, n, EB_LEAKY, (double)s);
}
void c_softcap_bwd(const pg_ops *o, float *dz, const float *dy, const float *z, size_t n, float c) {
  launch_ew_bwd(o, dz, dy, z, n, EB_SOFTCAP, (double)c);
}
void c_tanh_bwd(const pg_ops *o, float *dx, const float *dy, const float *x, size_t n) {
  launch_ew_bwd(o, dx, dy, x, n, EB_TANH, 0);
}

/* ---- row ops: rowgate and rowmul, a thread per row (the row's sum and its dx) ---------------- */

__global__ void k_row_bwd(float *dx, float *ds, const float *dy, const float *x, const float *s,
                          size_t R, int D, int gate) {
  GRID_LOOP(r, R) {
    double sv = gate ? sigmoid_d((double)s[r]) : (double)s[r], dot = 0.0;
    for (size_t j = r * (size_t)D; j < (r + 1) * (size_t)D; j++) {
      dot = dot + (double)dy[j] * (double)x[j];
      if (dx) dx[j] = (float)((double)dx[j] + (double)dy[j] * sv);
    }
    if (ds) ds[r] = (float)((double)ds[r] + (gate ? dot * sv * (1.0 - sv) : dot));
  }
}

void launch_row_bwd(const pg_ops *o, float *dx, float *ds, const float *dy, const float *x,
                    const float *s, size_t R, int D, int gate) {
  if (!R) return;
  k_row_bwd<<<blocks_for(R), kThreads, 0, stream_of(o)>>>(dx, ds, dy, x, s, R, D, gate);
  launched(o, gate ? "rowgate backward" : "rowmul backward");
}

void c_rowgate_bwd(const pg_ops *o, float *dx, float *dg, const float *dy, const float *x,
                   const float *g, size_t R, int D) {
  launch_row_bwd(o, dx, dg, dy, x, g, R, D, 1);
}
void c_rowmul_bwd(const pg_ops *o, float *dx, float *ds, const float *dy, const float *x,
                  const float *s, size_t R, int D) {
  launch_row_bwd(o, dx, ds, dy, x, s, R, D, 0);
}

/* ---- channel ops: chanmul and chanlerp; dx (da, db) per element, the channel's gradient by a
 * thread per column summing its rows r ascending ---------------------------------------------- */

__global__ void k_chan_bwd_x(float *da, float *db, const float *dy, const float *s, size_t R, int C,
                             int lerp) {
  size_t n = R * (size_t)C;
  GRID_LOOP(i, n) {
    double g = (double)dy[i];
    if (!lerp) {
      da[i] = (float)((double)da[i] + g * (double)s[i % (size_t)C]);
      continue;
    }
    double sg = sigmoid_d((double)s[i % (size_t)C]);
    if (da) da[i] = (float)((double)da[i] + sg * g);
    if (db) db[i] = (float)((double)db[i] + (1.0 - sg) * g);
  }
}

__global__ void k_chan_bwd_s(float *ds, const float *dy, const float *a, const float *b,
                             const float *s, size_t R, int C, int lerp) {
  GRID_LOOP(j, (size_t)C) {
    double acc = 0.0;
    for (size_t r = 0; r < R; r++) {
      size_t i = r * (size_t)C + j;
      acc = acc +
          (lerp ? (double)dy[i] * ((double)a[i] - (double)b[i]) : (double)dy[i] * (double)a[i]);
    }
    if (lerp) {
      double sg = sigmoid_d((double)s[j]);
      ds[j] = (float)((double)ds[j] + acc * sg * (1.0 - sg));
    } else {
      ds[j] = (float)((double)ds[j] + acc);
    }
  }
}

void launch_chan_bwd(const pg_ops *o, float *da, float *db, float *ds, const float *dy,
                     const float *a, const float *b, const float *s, size_t R, int C, int lerp) {
  size_t n = R * (size_t)C;
  if (n && (da || db)) {
    k_chan_bwd_x<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(da, db, dy, s, R, C, lerp);
    launched(o, lerp ? "chanlerp backward" : "chanmul backward");
  }
  if (ds && C > 0) {
    k_chan_bwd_s<<<blocks_for((size_t)C), kThreads, 0, stream_of(o)>>>(ds, dy, a, b, s, R, C, lerp);
    launched(o, lerp ? "chanlerp backward" : "chanmul backward");
  }
}

void c_chanmul_bwd(const pg_ops *o, float *dx, float *ds, const float *dy, const float *x,
                   const float *s, size_t R, int C) {
  launch_chan_bwd(o, dx, nullptr, ds, dy, x, nullptr, s, R, C, 0);
}
void c_chanlerp_bwd(const pg_ops *o, float *da, float *db, float *dg, const float *dy,
                    const float *a, const float *b, const float *g, size_t R, int C) {
  launch_chan_bwd(o, da, db, dg, dy, a, b, g, R, C, 1);
}

/* ---- xsa backward: a thread per (t, g) row of v, the heads of group g ascending -------------- */

__global__ void k_xsa_bwd(float *dy, float *dv, const float *dout, const float *y, const float *v,
                          int T, int H, int Hkv, int d) {
  size_t rows = (size_t)T * (size_t)Hkv;
  const int rep = H / Hkv;
  GRID_LOOP(row, rows) {
    size_t t = row / (size_t)Hkv;
    int g = (int)(row % (size_t)Hkv);
    const float *vr = v + row * (size_t)d;
    double vh[PG_OPS_MAX_HEAD_DIM], gv[PG_OPS_MAX_HEAD_DIM];
    double ss = 0.0;
    for (int i = 0; i < d; i++) ss = ss + (double)vr[i] * (double)vr[i];
    double nrm = sqrt(ss);
    if (nrm < 1e-12) nrm = 1e-12;
    for (int i = 0; i < d; i++) vh[i] = (double)vr[i] / nrm;
    for (int i = 0; i < d; i++) gv[i] = 0.0;
    for (int h = g * rep; h < (g + 1) * rep; h++) {
      size_t off = (t * (size_t)H + (size_t)h) * (size_t)d;
      const float *yr = y + off, *dO = dout + off;
      double a = 0.0, bb = 0.0;
      for (int i = 0; i < d; i++) {
        a = a + (double)yr[i] * vh[i];
        bb = bb + (double)dO[i] * vh[i];
      }
      for (int i = 0; i < d; i++) gv[i] = gv[i] - (bb * (double)yr[i] + a * (double)dO[i]);
      if (dy)
        for (int i = 0; i < d; i++)
          dy[off + i] = (float)((double)dy[off + i] + ((double)dO[i] - bb * vh[i]));
    }
    if (!dv) continue;
    float *dvr = dv + row * (size_t)d;
    if (nrm > 1e-12) {
      double gd = 0.0;
      for (int i = 0; i < d; i++) gd = gd + gv[i] * vh[i];
      for (int i = 0; i < d; i++) dvr[i] = (float)((double)dvr[i] + (gv[i] - gd * vh[i]) / nrm);
    } else {
      for (int i = 0; i < d; i++) dvr[i] = (float)((double)dvr[i] + gv[i] / nrm);
    }
  }
}

void c_xsa_bwd(const pg_ops *o, float *dy, float *dv, const float *dout, const float *y,
               const float *v, int T, int H, int Hkv, int d) {
  size_t rows = (size_t)T * (size_t)Hkv;
  if (!rows) return;
  k_xsa_bwd<<<blocks_for(rows), 128, 0, stream_of(o)>>>(dy, dv, dout, y, v, T, H, Hkv, d);
  launched(o, "xsa backward");
}

/* ---- cross-entropy backward: each row's max and Σ pg_exp (scratch), then a thread per logit.
 * A target outside [0, V) is the error and nothing is written (the second kernel reads the error
 * word, which the first has set, and returns). ------------------------------------------------ */

__global__ void k_ce_stats(double *st, const float *logits, const int32_t *tg, int T, int V,
                           int *err) {
  GRID_LOOP(t, (size_t)T) {
    if (tg[t] < 0 || tg[t] >= V) set_err(err, PG_E_TOKEN_RANGE);
    const float *l = logits + t * (size_t)V;
    double m = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++)
      if ((double)l[v] > m) m = (double)l[v];
    for (int v = 0; v < V; v++) s = s + pg_exp_d((double)l[v] - m);
    st[2 * t] = m;
    st[2 * t + 1] = s;
  }
}

__global__ void k_ce_bwd(float *dl, const float *dnll, const float *logits, const int32_t *tg,
                         const double *st, int T, int V, const int *err) {
  if (*(volatile const int *)err) return;
  size_t n = (size_t)T * (size_t)V;
  GRID_LOOP(i, n) {
    size_t t = i / (size_t)V;
    int v = (int)(i % (size_t)V);
    double g = dnll ? (double)dnll[t] : 1.0;
    double pr = pg_exp_d((double)logits[i] - st[2 * t]) / st[2 * t + 1] - (v == tg[t] ? 1.0 : 0.0);
    dl[i] = (float)((double)dl[i] + g * pr);
  }
}

void c_ce_bwd(const pg_ops *o, float *dlogits, const float *dnll, const float *logits,
              const int32_t *targets, int T, int V) {
  if (T <= 0) return;
  double *st = static_cast<double *>(
      pg_engine_scratch(pg_engine_of(o), 0, 2 * (size_t)T * sizeof(double)));
  if (!st) return;
  int *err = dev_of(o)->err_dev;
  const pg_engine *e = pg_engine_of(o);
  if (dev_of(o)->fast && e->bf16_pass && e->bf16_grad && V > 0) /* the trainer's bf16 backward */
    launch_ce_stats_rows(o, st, logits, targets, T, V);
  else
    k_ce_stats<<<blocks_for((size_t)T), 128, 0, stream_of(o)>>>(st, logits, targets, T, V, err);
  launched(o, "cross-entropy backward");
  size_t n = (size_t)T * (size_t)V;
  if (!n) return;
  k_ce_bwd<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(dlogits, dnll, logits, targets, st, T, V,
                                                         err);
  launched(o, "cross-entropy backward");
}

/* ---- embed backward: the tokens of each row in ascending t, as the CPU's counting sort lists
 * them, by a stable radix sort of (id, t) (CUB's, deterministic); then a thread per table element
 * sums its row's tokens in that order. An id outside [0, V) is the error, nothing written. ----- */

__global__ void k_embed_prep(int32_t *t_in, const int32_t *ids, int T, int V, int *err) {
  GRID_LOOP(t, (size_t)T) {
    if (ids[t] < 0 || ids[t] >= V) set_err(err, PG_E_TOKEN_RANGE);
    t_in[t] = (int32_t)t;
  }
}

/* ranges[2v], ranges[2v + 1]: the first and one past the last sorted position of row v (both 0
 * for a row without tokens; the caller zeroed them) */
__global__ void k_embed_ranges(uint32_t *ranges, const uint32_t *keys, int T, int V) {
  GRID_LOOP(k, (size_t)T) {
    uint32_t key = keys[k];
    if (key >= (uint32_t)V) continue;
    if (k == 0 || keys[k - 1] != key) ranges[2 * (size_t)key] = (uint32_t)k;
    if (k + 1 == (size_t)T || keys[k + 1] != key) ranges[2 * (size_t)key + 1] = (uint32_t)(k + 1);
  }
}

__global__ void k_embed_bwd(float *dtable, const float *dy, const int32_t *order,
                            const uint32_t *ranges, int D, int V, const int *err) {
  if (*(volatile const int *)err) return;
  size_t n = (size_t)V * (size_t)D;
  GRID_LOOP(i, n) {
    size_t v = i / (size_t)D, col = i % (size_t)D;
    uint32_t s0 = ranges[2 * v], s1 = ranges[2 * v + 1];
    if (s0 == s1) continue;
    double acc = 0.0;
    for (uint32_t k = s0; k < s1; k++) acc = acc + (double)dy[(size_t)order[k] * (size_t)D + col];
    dtable[i] = (float)((double)dtable[i] + acc);
  }
}

void c_embed_bwd(const pg_ops *o, float *dtable, const float *dy, const int32_t *ids, int T, int D,
                 int V) {
  if (T <= 0 || V <= 0) return;
  pg_engine *e = pg_engine_of(o);
  cudaStream_t st = stream_of(o);
  int bits = 1;
  while (bits < 32 && ((uint64_t)1 << bits) < (uint64_t)V) bits++;
  size_t temp = 0;
  const uint32_t *keys_in = reinterpret_cast<const uint32_t *>(ids);
  rt_check(e,
           cub::DeviceRadixSort::SortPairs(nullptr, temp, keys_in, (uint32_t *)nullptr,
                                           (const int32_t *)nullptr, (int32_t *)nullptr, T, 0,
                                           bits, st),
           "embed backward (sort size)");
  if (pg_engine_failed(e)) return;
  const size_t Tz = (size_t)T;
  size_t o_keys = 0, o_tin = align64(o_keys + Tz * 4), o_tout = align64(o_tin + Tz * 4);
  size_t o_rng = align64(o_tout + Tz * 4), o_tmp = align64(o_rng + 2 * (size_t)V * 4);
  char *scr = static_cast<char *>(pg_engine_scratch(e, 0, o_tmp + temp));
  if (!scr) return;
  uint32_t *keys = reinterpret_cast<uint32_t *>(scr + o_keys);
  int32_t *t_in = reinterpret_cast<int32_t *>(scr + o_tin);
  int32_t *t_out = reinterpret_cast<int32_t *>(scr + o_tout);
  uint32_t *ranges = reinterpret_cast<uint32_t *>(scr + o_rng);
  int *err = dev_of(o)->err_dev;
  k_embed_prep<<<blocks_for(Tz), kThreads, 0, st>>>(t_in, ids, T, V, err);
  launched(o, "embed backward");
  rt_check(e, cudaMemsetAsync(ranges, 0, 2 * (size_t)V * 4, st), "embed backward");
  rt_check(e,
           cub::DeviceRadixSort::SortPairs(scr + o_tmp, temp, keys_in, keys, t_in, t_out, T, 0,
                                           bits, st),
           "embed backward (sort)");
  k_embed_ranges<<<blocks_for(Tz), kThreads, 0, st>>>(ranges, keys, T, V);
  launched(o, "embed backward");
  size_t n = (size_t)V * (size_t)D;
  if (!n) return;
  k_embed_bwd<<<blocks_for(n), kThreads, 0, st>>>(dtable, dy, t_out, ranges, D, V, err);
  launched(o, "embed backward");
}

/* ---- cols and expand ------------------------------------------------------------------------- */

__global__ void k_cols_bwd(float *dx, const float *dy, size_t R, int C, int c0, int w) {
  size_t n = R * (size_t)w;
  GRID_LOOP(i, n) {
    size_t r = i / (size_t)w;
    float *p = dx + r * (size_t)C + (size_t)(c0 + (int)(i % (size_t)w));
    *p = (float)((double)*p + (double)dy[i]);
  }
}

void c_cols_bwd(const pg_ops *o, float *dx, const float *dy, size_t R, int C, int c0, int w) {
  size_t n = R * (size_t)(w > 0 ? w : 0);
  if (!n) return;
  k_cols_bwd<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(dx, dy, R, C, c0, w);
  launched(o, "cols backward");
}

__global__ void k_expand_bwd(float *dx, const float *dy, int G, int r) {
  GRID_LOOP(g, (size_t)G) {
    double acc = 0.0;
    for (int j = 0; j < r; j++) acc = acc + (double)dy[g * (size_t)r + (size_t)j];
    dx[g] = (float)((double)dx[g] + acc);
  }
}

void c_expand_bwd(const pg_ops *o, float *dx, const float *dy, int G, int r) {
  if (G <= 0) return;
  k_expand_bwd<<<blocks_for((size_t)G), kThreads, 0, stream_of(o)>>>(dx, dy, G, r);
  launched(o, "expand backward");
}

/* ---- the elementwise optimizers (pg_ops_optim.c's bodies, element by element) ---------------- */

__global__ void k_sgd(float *p, const float *g, float *buf, size_t n, double lr, double mu,
                      int first) {
  GRID_LOOP(i, n) {
    double gv = (double)g[i], b = gv;
    if (mu != 0) {
      b = first ? gv : mu * (double)buf[i] + gv;
      buf[i] = (float)b;
      b = (double)buf[i];
    }
    p[i] = (float)((double)p[i] - lr * b);
  }
}

void c_sgd_step(const pg_ops *o, float *p, const float *g, float *buf, size_t n, double lr,
                double mu, int first) {
  if (!n) return;
  k_sgd<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(p, g, buf, n, lr, mu, first);
  launched(o, "sgd step");
}

/* step = lr / bc1 and sbc2 = sqrt(bc2) on the host, as the CPU op computes them once */
__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, double lr,
                        double b1, double b2, double eps, double wd, double step, double sbc2) {
  GRID_LOOP(i, n) {
    double gv = (double)g[i];
    double pv = (double)p[i] * (1.0 - lr * wd);
    m[i] = (float)(b1 * (double)m[i] + (1.0 - b1) * gv);
    v[i] = (float)(b2 * (double)v[i] + (1.0 - b2) * gv * gv);
    double denom = sqrt((double)v[i]) / sbc2 + eps;
    p[i] = (float)(pv - step * (double)m[i] / denom);
  }
}

void c_adamw_step(const pg_ops *o, float *p, const float *g, float *m, float *v, size_t n,
                  double lr, double beta1, double beta2, double eps, double wd, double bc1,
                  double bc2) {
  if (!n) return;
  k_adamw<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd,
                                                        lr / bc1, sqrt(bc2));
  launched(o, "adamw step");
}

/* One running fp64 sum, i ascending, continued from acc: one block; its threads square a chunk
 * of elements into shared memory (each square rounded on its own, as the CPU's), then thread 0
 * adds them in order. */
constexpr int kSumChunk = 2048;

__global__ void k_sumsq(double *acc, const float *x, size_t n) {
  __shared__ double sq[kSumChunk];
  double s = threadIdx.x == 0 ? *acc : 0.0;
  for (size_t i0 = 0; i0 < n; i0 += kSumChunk) {
    size_t m = n - i0 < (size_t)kSumChunk ? n - i0 : (size_t)kSumChunk;
    for (size_t j = threadIdx.x; j < m; j += blockDim.x) {
      double v = (double)x[i0 + j];
      sq[j] = v * v;
    }
    __syncthreads();
    if (threadIdx.x == 0)
      for (size_t j = 0; j < m; j++) s = s + sq[j];
    __syncthreads();
  }
  if (threadIdx.x == 0) *acc = s;
}

void launch_sumsq(const pg_ops *o, double *acc, const float *x, size_t n) {
  if (!n) return;
  k_sumsq<<<1, kThreads, 0, stream_of(o)>>>(acc, x, n);
  launched(o, "sum of squares");
}

void c_sumsq(const pg_ops *o, double *acc, const float *x, size_t n) { launch_sumsq(o, acc, x, n); }

enum { EO_SCALE, EO_EMA, EO_SWA_ADD, EO_SWA_AVG };

__global__ void k_ew_opt(float *y, double *sum, const float *x, size_t n, int kind, double a) {
  GRID_LOOP(i, n) {
    switch (kind) {
    case EO_SCALE: y[i] = (float)((double)y[i] * a); break;
    case EO_EMA: y[i] = (float)(a * (double)y[i] + (1.0 - a) * (double)x[i]); break;
    case EO_SWA_ADD: sum[i] = sum[i] + (double)x[i]; break;
    default: y[i] = (float)(sum[i] / a); break;
    }
  }
}

void launch_ew_opt(const pg_ops *o, float *y, double *sum, const float *x, size_t n, int kind,
                   double a, const char *what) {
  if (!n) return;
  k_ew_opt<<<blocks_for(n), kThreads, 0, stream_of(o)>>>(y, sum, x, n, kind, a);
  launched(o, what);
}

void c_scale(const pg_ops *o, float *x, size_t n, double a) {
  launch_ew_opt(o, x, nullptr, nullptr, n, EO_SCALE, a, "scale");
}
void c_ema_update(const pg_ops *o, float *ema, const float *p, size_t n, double decay) {
  launch_ew_opt(o, ema, nullptr, p, n, EO_EMA, decay, "ema update");
}
void c_swa_add(const pg_ops *o, double *sum, const float *p, size_t n) {
  launch_ew_opt(o, nullptr, sum, p, n, EO_SWA_ADD, 0, "swa add");
}
void c_swa_average(const pg_ops *o, float *out, const double *sum, size_t n, uint64_t count) {
  if (count == 0) return;
  launch_ew_opt(o, out, const_cast<double *>(sum), nullptr, n, EO_SWA_AVG, (double)count,
                "swa average");
}

/* ---- Muon (pg_muon_apply and pg_newton_schulz, step by step) ------------------------------------
 * The CPU computes the symmetric products A = X Xᵀ and B = b·A + c·A A for j ≥ i and mirrors them;
 * here every element is computed: element (j, i) sums the same products as (i, j) in the same
 * order (x·y = y·x exactly, and A is exactly symmetric), so the bits are the mirrored ones. */

__global__ void k_muon_in(float *buf, float *u, const float *g, size_t n, double mu, int nesterov) {
  GRID_LOOP(i, n) {
    buf[i] = (float)(mu * (double)buf[i] + (double)g[i]);
    u[i] = nesterov ? (float)((double)g[i] + mu * (double)buf[i]) : buf[i];
  }
}

__global__ void k_row_normalize(float *u, size_t rows, size_t cols) {
  GRID_LOOP(i, rows) {
    float *r = u + i * cols;
    double ss = 0.0;
    for (size_t k = 0; k < cols; k++) ss = ss + (double)r[k] * (double)r[k];
    double d = sqrt(ss);
    if (d < 1e-7) d = 1e-7;
    for (size_t k = 0; k < cols; k++) r[k] = (float)((double)r[k] / d);
  }
}

/* dst [c × r] = srcᵀ for src [r × c] (a copy) */
__global__ void k_transpose(float *dst, const float *src, size_t r, size_t c) {
  GRID_LOOP(i, r * c) {
    size_t j = i / r, k = i % r; /* dst[j, k] = src[k, j] */
    dst[i] = src[k * c + j];
  }
}

__global__ void k_ns_normalize(float *x, size_t n, const double *ss) {
  const double den = sqrt(*ss) + 1e-7;
  GRID_LOOP(i, n) x[i] = (float)((double)x[i] / den);
}

__global__ void k_muon_out(float *p, const float *x, size_t n, double decay, double lr,
                           double scale) {
  GRID_LOOP(i, n) p[i] = (float)((double)p[i] * decay - lr * (scale * (double)x[i]));
}

/* ---- the bf16 Newton–Schulz (PG_NS_BF16; pg_ops_optim.h, spec/engine.md §8.7) -----------------
 * The matrices are fp32 arrays of bf16 values, as on the CPU, with bf16 copies (the bits) of the
 * products' operands. A product's sums go to an fp32 array S: the exact tiled kernel's (fp64
 * sums rounded to fp32: with bf(·) after it, the CPU's bf(fp64 sum)) or cuBLAS's (fp32 sums);
 * k_nsb_comb then rounds it and forms the records' elementwise combination in fp64. */

__device__ inline uint16_t nsb_bits(float v) { return (uint16_t)(__float_as_uint(v) >> 16); }

__global__ void k_nsb_round(float *x, size_t n) {
  GRID_LOOP(i, n) x[i] = bf16_round(x[i]);
}

/* X ← bf(X / d), d = bf(bf(sqrt(ss)) + 1e-7); Xb its bits */
__global__ void k_nsb_normalize(float *x, uint16_t *xb, size_t n, const double *ss) {
  const double den = bfd(bfd(sqrt(*ss)) + 1e-7);
  GRID_LOOP(i, n) {
    float v = (float)bfd((double)x[i] / den);
    x[i] = v;
    xb[i] = nsb_bits(v);
  }
}

/* out = bf(bf(beta·bf(s))), or bf(bf(alpha·add) + bf(beta·bf(s))) with add; outb its bits (may
 * be null). out may be add. */
__global__ void k_nsb_comb(float *out, uint16_t *outb, const float *add, const float *s, size_t n,
                           double alpha, double beta) {
  GRID_LOOP(i, n) {
    double v = bfd(beta * bfd((double)s[i]));
    if (add) v = bfd(bfd(alpha * (double)add[i]) + v);
    out[i] = (float)v;
    if (outb) outb[i] = nsb_bits((float)v);
  }
}

/* u [rows × cols] ← NS_bf16(u) in place; scr: ns_bf16_bytes(rows, cols) bytes of scratch */
size_t ns_bf16_bytes(size_t m, size_t n) {
  const size_t big = m * n > m * m ? m * n : m * m;
  return align64(m * n * 4) + 2 * align64(m * m * 4) + align64(big * 4) + align64(m * n * 2) +
         2 * align64(m * m * 2) + sizeof(double);
}

void ns_bf16(const pg_ops *o, float *u, char *scr, int rows, int cols, int ns_kind,
             int ns_steps) {
  cudaStream_t st = stream_of(o);
  pg_engine *e = pg_engine_of(o);
  const size_t R = (size_t)rows, C = (size_t)cols, RC = R * C;
  const size_t m = R < C ? R : C, n = R < C ? C : R, big = m * n > m * m ? m * n : m * m;
  const int tr = rows > cols, mi = (int)m, ni = (int)n;
  size_t at = 0;
  auto take = [&](size_t bytes) {
    char *p = scr + at;
    at += align64(bytes);
    return p;
  };
  float *X = reinterpret_cast<float *>(take(m * n * 4));
  float *A = reinterpret_cast<float *>(take(m * m * 4));
  float *Bm = reinterpret_cast<float *>(take(m * m * 4));
  float *S = reinterpret_cast<float *>(take(big * 4));
  uint16_t *Xb = reinterpret_cast<uint16_t *>(take(m * n * 2));
  uint16_t *Ab = reinterpret_cast<uint16_t *>(take(m * m * 2));
  uint16_t *Bb = reinterpret_cast<uint16_t *>(take(m * m * 2));
  double *ss = reinterpret_cast<double *>(take(sizeof(double)));
  const char *what = "newton-schulz (bf16)";
  /* X = bf(u) or bf(uᵀ), m × n; its sum of squares in X's row-major order; the normalization */
  if (tr) {
    k_transpose<<<blocks_for(RC), kThreads, 0, st>>>(X, u, R, C);
    launched(o, what);
  } else {
    rt_check(e, cudaMemcpyAsync(X, u, RC * 4, cudaMemcpyDeviceToDevice, st), what);
  }
  k_nsb_round<<<blocks_for(RC), kThreads, 0, st>>>(X, RC);
  launched(o, what);
  rt_check(e, cudaMemsetAsync(ss, 0, sizeof(double), st), what);
  launch_sumsq(o, ss, X, RC);
  k_nsb_normalize<<<blocks_for(RC), kThreads, 0, st>>>(X, Xb, RC, ss);
  launched(o, what);
  const bool fast = dev_of(o)->blas != nullptr;
  for (int s = 0; s < ns_steps; s++) {
    double abc[3];
    pg_ns_coeffs(ns_kind, s, abc);
    /* S = X·Xᵀ; A = bf(S) */
    if (!fast || !blas_gemm_bf16(o, 1, 0, mi, mi, ni, Xb, ni, Xb, ni, S, mi, what)) {
      Prod pa = {};
      pa.out = S, pa.ldo = m, pa.a = X, pa.a_p = n, pa.a_r = 1, pa.b = X, pa.b_q = n, pa.b_r = 1;
      pa.beta = 1.0, pa.mode = PR_NS, pa.P = mi, pa.Q = mi, pa.R = ni;
      launch_prod(o, pa, 1, what);
    }
    k_nsb_comb<<<blocks_for(m * m), kThreads, 0, st>>>(A, Ab, nullptr, S, m * m, 0.0, 1.0);
    launched(o, what);
    /* S = A·A; B = bf(bf(b·A) + bf(c·bf(S))) */
    if (!fast || !blas_gemm_bf16(o, 0, 0, mi, mi, mi, Ab, mi, Ab, mi, S, mi, what)) {
      Prod pb = {};
      pb.out = S, pb.ldo = m, pb.a = A, pb.a_p = m, pb.a_r = 1, pb.b = A, pb.b_q = m, pb.b_r = 1;
      pb.beta = 1.0, pb.mode = PR_NS, pb.P = mi, pb.Q = mi, pb.R = mi;
      launch_prod(o, pb, 1, what);
    }
    k_nsb_comb<<<blocks_for(m * m), kThreads, 0, st>>>(Bm, Bb, A, S, m * m, abc[1], abc[2]);
    launched(o, what);
    /* S = B·X (column-major (B·X)ᵀ = Xᵀ·Bᵀ); X ← bf(bf(a·X) + bf(S)) */
    if (!fast || !blas_gemm_bf16(o, 0, 0, ni, mi, mi, Xb, ni, Bb, mi, S, ni, what)) {
      Prod px = {};
      px.out = S, px.ldo = n, px.a = Bm, px.a_p = m, px.a_r = 1, px.b = X, px.b_q = 1,
      px.b_r = n, px.beta = 1.0, px.mode = PR_NS, px.P = mi, px.Q = ni, px.R = mi;
      launch_prod(o, px, 1, what);
    }
    k_nsb_comb<<<blocks_for(m * n), kThreads, 0, st>>>(X, Xb, X, S, m * n, abc[0], 1.0);
    launched(o, what);
  }
  /* back into u (transposed back when rows > cols) */
  if (tr) {
    k_transpose<<<blocks_for(RC), kThreads, 0, st>>>(u, X, m, n);
    launched(o, what);
  } else {
    rt_check(e, cudaMemcpyAsync(u, X, RC * 4, cudaMemcpyDeviceToDevice, st), what);
  }
}

void c_muon_step(const pg_ops *o, float *p, const float *g, float *buf, int rows, int cols,
                 double lr, double mu, double wd, int nesterov, int row_normalize, int ns_kind,
                 int ns_steps) {
  if (rows <= 0 || cols <= 0) return;
  pg_engine *e = pg_engine_of(o);
  cudaStream_t st = stream_of(o);
  const size_t R = (size_t)rows, C = (size_t)cols, RC = R * C;
  const size_t m = R < C ? R : C, n = R < C ? C : R;
  const int tr = rows > cols;
  /* scratch: u [rows × cols], X, X' [m × n], A, B [m × m], the fp64 sum of squares */
  size_t o_u = 0, o_x = align64(RC * 4), o_xn = align64(o_x + m * n * 4);
  size_t o_a = align64(o_xn + m * n * 4), o_b = align64(o_a + m * m * 4);
  size_t o_ss = align64(o_b + m * m * 4), total = o_ss + sizeof(double);
  const int b16 = (ns_kind & PG_NS_BF16) != 0;
  if (b16) total = o_x + ns_bf16_bytes(m, n); /* u, then the bf16 iteration's own layout */
  char *scr = static_cast<char *>(pg_engine_scratch(e, 0, total));
  if (!scr) return;
  float *u = reinterpret_cast<float *>(scr + o_u), *X = reinterpret_cast<float *>(scr + o_x);
  float *Xn = reinterpret_cast<float *>(scr + o_xn), *A = reinterpret_cast<float *>(scr + o_a);
  float *Bm = reinterpret_cast<float *>(scr + o_b);
  double *ss = reinterpret_cast<double *>(scr + o_ss);

  k_muon_in<<<blocks_for(RC), kThreads, 0, st>>>(buf, u, g, RC, mu, nesterov != 0);
  launched(o, "muon step");
  if (row_normalize) {
    k_row_normalize<<<blocks_for(R), kThreads, 0, st>>>(u, R, C);
    launched(o, "muon step");
  }
  const int mi = (int)m, ni = (int)n;
  const float *res = u;
  if (b16) { /* the bf16 iteration in place in u, then the update */
    ns_bf16(o, u, scr + o_x, rows, cols, ns_kind, ns_steps);
    goto update;
  }
  /* X = u or uᵀ, as m × n; its sum of squares in X's row-major order; X ← X / (‖X‖ + 1e-7) */
  if (tr) {
    k_transpose<<<blocks_for(RC), kThreads, 0, st>>>(X, u, R, C);
    launched(o, "muon step");
  } else {
    rt_check(e, cudaMemcpyAsync(X, u, RC * 4, cudaMemcpyDeviceToDevice, st), "muon step");
  }
  rt_check(e, cudaMemsetAsync(ss, 0, sizeof(double), st), "muon step");
  launch_sumsq(o, ss, X, RC);
  k_ns_normalize<<<blocks_for(RC), kThreads, 0, st>>>(X, RC, ss);
  launched(o, "muon step");
  for (int s = 0; s < ns_steps; s++) {
    double abc[3];
    pg_ns_coeffs(ns_kind, s, abc);
    /* A = fp32(1·Σ_k X[i,k]·X[j,k]) */
    Prod pa = {};
    pa.out = A, pa.ldo = m, pa.a = X, pa.a_p = n, pa.a_r = 1, pa.b = X, pa.b_q = n, pa.b_r = 1;
    pa.beta = 1.0, pa.mode = PR_NS, pa.P = mi, pa.Q = mi, pa.R = ni;
    launch_prod(o, pa, 1, "newton-schulz");
    /* B = fp32(b·A[i,j] + c·Σ_k A[i,k]·A[j,k]) */
    Prod pb = {};
    pb.out = Bm, pb.ldo = m, pb.a = A, pb.a_p = m, pb.a_r = 1, pb.b = A, pb.b_q = m, pb.b_r = 1;
    pb.add = A, pb.ld_add = m, pb.alpha = abc[1], pb.beta = abc[2];
    pb.mode = PR_NS, pb.P = mi, pb.Q = mi, pb.R = mi;
    launch_prod(o, pb, 1, "newton-schulz");
    /* X' = fp32(a·X[i,j] + 1·Σ_k B[i,k]·X[k,j]) */
    Prod px = {};
    px.out = Xn, px.ldo = n, px.a = Bm, px.a_p = m, px.a_r = 1, px.b = X, px.b_q = 1, px.b_r = n;
    px.add = X, px.ld_add = n, px.alpha = abc[0], px.beta = 1.0;
    px.mode = PR_NS, px.P = mi, px.Q = ni, px.R = mi;
    launch_prod(o, px, 1, "newton-schulz");
    float *t = X;
    X = Xn, Xn = t;
  }
  /* the update from X (transposed back when rows > cols) */
  res = X;
  if (tr) {
    k_transpose<<<blocks_for(RC), kThreads, 0, st>>>(u, X, m, n);
    launched(o, "muon step");
    res = u;
  }
update:
  double ratio = (double)rows / (double)cols;
  k_muon_out<<<blocks_for(RC), kThreads, 0, st>>>(p, res, RC, 1.0 - lr * wd, lr,
                                                  sqrt(ratio > 1.0 ? ratio : 1.0));
  launched(o, "muon step");
}

} // namespace

void pgcuda::bwd_table(pg_ops *t) {
#define S(n) t->n = c_##n
  S(matmul_bwd); S(matmul_grouped_bwd); S(rmsnorm_bwd); S(rope_bwd); S(attention_bwd);
  S(relu2_bwd); S(leaky_relu2_bwd); S(rowgate_bwd); S(chanmul_bwd); S(xsa_bwd); S(softcap_bwd);
  S(ce_bwd); S(chanlerp_bwd); S(rowmul_bwd); S(tanh_bwd); S(embed_bwd); S(cols_bwd);
  S(expand_bwd); S(sgd_step); S(adamw_step); S(sumsq); S(scale); S(muon_step); S(ema_update);
  S(swa_add); S(swa_average);
#undef S
}
