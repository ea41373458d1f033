/* pg_cuda_engine.cu: the CUDA engine, first part (issue 13): device memory on one stream, the
 * transfers, sync with the device's first error, and every FORWARD op of the table in the fp32
 * numerics of the CPU reference (spec/engine.md §2): one thread computes one output (or one row)
 * start to finish, every sum in fp64 in ascending index order, each output rounded once. The file
 * is built with -fmad=false, IEEE division and square root, so an op made of +, −, ×, ÷ and √ gives
 * the CPU's bits, and so do the softmaxes (attention, CE's sum), whose exponential is pg_exp, a
 * fixed sequence of fp64 operations; ops that call the C library's exp, log, tanh, pow, sin or
 * cos on the CPU (CE's log, softcap, sigmoid gates, RoPE angles) use CUDA's fp64 functions, which
 * may differ in the last place (spec/engine.md §8.6 states the tolerance). No atomics feed a result: reruns give the same
 * bits. The backward and optimizer ops (issue 15), in the same numerics, are in
 * pg_cuda_engine_bwd.cu; what both files share is in pg_cuda_engine_impl.cuh.
 *
 * Speed is not this file's aim yet: it is the exact engine a faster one (tensor cores, bf16,
 * fused attention) is checked against on the same device. */
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_cuda_engine_impl.cuh"
#include "pg_engine.h"

namespace {

using namespace pgcuda;

constexpr int kTile = 16;

/* ---- matmul: y[M,N] = x[M,K]·Wᵀ, tiles in shared memory, each output's sum in ascending k ---- */

__global__ void k_matmul(float *y, const float *x, const float *w, int M, int N, int K,
                         const int32_t *widx, size_t wstride) {
  __shared__ float xs[kTile][kTile + 1], ws[kTile][kTile + 1];
  const int g = blockIdx.z;
  const size_t xo = (size_t)g * (size_t)M * (size_t)K, yo = (size_t)g * (size_t)M * (size_t)N;
  const float *W = widx ? w + (size_t)widx[g] * wstride : w;
  const int m = blockIdx.y * kTile + threadIdx.y, n = blockIdx.x * kTile + threadIdx.x;
  double acc = 0.0;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    int kx = k0 + threadIdx.x, mw = blockIdx.x * kTile + threadIdx.y;
    xs[threadIdx.y][threadIdx.x] = (m < M && kx < K) ? x[xo + (size_t)m * K + kx] : 0.0f;
    ws[threadIdx.y][threadIdx.x] = (mw < N && kx < K) ? W[(size_t)mw * K + kx] : 0.0f;
    __syncthreads();
    int kn = K - k0 < kTile ? K - k0 : kTile;
    for (int j = 0; j < kn; j++)
      acc = acc + (double)xs[threadIdx.y][j] * (double)ws[threadIdx.x][j];
    __syncthreads();
  }
  if (m < M && n < N) y[yo + (size_t)m * N + n] = (float)acc;
}

void launch_matmul(const pg_ops *o, float *y, const float *x, const float *w, int G, int M, int N,
                   int K, const int32_t *widx, size_t wstride) {
  if (M <= 0 || N <= 0 || G <= 0) return;
  dim3 block(kTile, kTile), grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile, G);
  k_matmul<<<grid, block, 0, dev_of(o)->stream>>>(y, x, w, M, N, K, widx, wstride);
  launched(o, "matmul");
}

void c_matmul_fwd(const pg_ops *o, float *y, const float *x, const float *w, int M, int N, int K) {
  launch_matmul(o, y, x, w, 1, M, N, K, nullptr, 0);
}

void c_matmul_grouped_fwd(const pg_ops *o, float *y, const float *x, const float *w,
                          const int32_t *widx, size_t wstride, int G, int M, int N, int K) {
  launch_matmul(o, y, x, w, G, M, N, K, widx, wstride);
}

/* ---- rmsnorm: a thread per row ----------------------------------------------------------------- */

__global__ void k_rmsnorm(float *y, const float *x, size_t R, int D, double eps) {
  GRID_LOOP(r, R) {
    const float *xr = x + r * (size_t)D;
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss = ss + (double)xr[i] * (double)xr[i];
    double inv = 1.0 / sqrt(ss / (double)D + eps);
    float *yr = y + r * (size_t)D;
    for (int i = 0; i < D; i++) yr[i] = (float)((double)xr[i] * inv);
  }
}

void c_rmsnorm_fwd(const pg_ops *o, float *y, const float *x, size_t R, int D, float eps) {
  if (!R) return;
  k_rmsnorm<<<blocks_for(R), kThreads, 0, dev_of(o)->stream>>>(y, x, R, D, (double)eps);
  launched(o, "rmsnorm");
}

/* ---- rope: a thread per (t, h, pair); the records' fp32 angle (spec/engine.md §4.3) ------------- */

__global__ void k_rope(float *y, const float *x, const int32_t *pos, int T, int H, int d, int rot,
                       float base, int bf) {
  const int half = rot / 2, per = d - half; /* per row: half pairs, then d − rot copies */
  size_t n = (size_t)T * (size_t)H * (size_t)per;
  GRID_LOOP(idx, n) {
    size_t row = idx / (size_t)per;
    int j = (int)(idx % (size_t)per);
    size_t t = row / (size_t)H;
    const float *xr = x + row * (size_t)d;
    float *yr = y + row * (size_t)d;
    if (j < half) {
      double th = rope_angle(pos[t], j, rot, base);
      double cs = cos(th), sn = sin(th);
      double x1 = (double)xr[j], x2 = (double)xr[j + half];
      if (bf) {
        cs = bfd(cs), sn = bfd(sn);
        yr[j] = (float)bfd(bfd(x1 * cs) + bfd(x2 * sn));
        yr[j + half] = (float)bfd(bfd(x1 * -sn) + bfd(x2 * cs));
      } else {
        yr[j] = (float)(x1 * cs + x2 * sn);
        yr[j + half] = (float)(-x1 * sn + x2 * cs);
      }
    } else {
      int i = rot + (j - half);
      if (i < d) yr[i] = xr[i];
    }
  }
}

void launch_rope(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H, int d,
                 int rot, float base, int bf) {
  size_t n = (size_t)T * (size_t)H * (size_t)(d - rot / 2);
  if (!n) return;
  k_rope<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, pos, T, H, d, rot, base, bf);
  launched(o, "rope");
}

void c_rope_fwd(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H, int d,
                int rot, float base) {
  launch_rope(o, y, x, pos, T, H, d, rot, base, 0);
}

void c_rope_bf16_fwd(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H,
                     int d, int rot, float base) {
  launch_rope(o, y, x, pos, T, H, d, rot, base, 1);
}

/* ---- attention: a thread per (b, t, h) row, keys in ascending order (spec/engine.md §4.4) ------- */

__global__ void k_attention(float *out, const float *q, const float *k, const float *v,
                            const int32_t *seg, int B, int T, int H, int Hkv, int d, double scale,
                            int bf) {
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  GRID_LOOP(row, rows) {
    size_t bt = row / (size_t)H;
    int h = (int)(row % (size_t)H), g = h / (H / Hkv);
    int b = (int)(bt / (size_t)T), t = (int)(bt % (size_t)T);
    size_t base_kv = (size_t)b * (size_t)T;
    const float *qr = q + row * (size_t)d;
    const int32_t *sg = seg ? seg + base_kv : nullptr;
    double mx = -INFINITY;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      const float *ks = k + ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double acc = 0.0;
      for (int i = 0; i < d; i++) acc = acc + (double)qr[i] * (double)ks[i];
      double l = scale * acc;
      if (l > mx) mx = l;
    }
    double o[PG_OPS_MAX_HEAD_DIM];
    for (int i = 0; i < d; i++) o[i] = 0.0;
    double den = 0.0;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      size_t kv = ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double acc = 0.0;
      for (int i = 0; i < d; i++) acc = acc + (double)qr[i] * (double)k[kv + i];
      double w = pg_exp_d(scale * acc - mx);
      den = den + w;
      if (bf) w = bfd(w);
      for (int i = 0; i < d; i++) o[i] = __fma_rn(w, (double)v[kv + i], o[i]);
    }
    float *orow = out + row * (size_t)d;
    for (int i = 0; i < d; i++) orow[i] = bf ? (float)bfd(o[i] / den) : (float)(o[i] / den);
  }
}

void launch_attention(const pg_ops *o, float *out, const float *q, const float *k, const float *v,
                      const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale,
                      int bf) {
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  if (!rows) return;
  k_attention<<<blocks_for(rows), 128, 0, dev_of(o)->stream>>>(out, q, k, v, seg, B, T, H, Hkv, d,
                                                               (double)scale, bf);
  launched(o, "attention");
}

void c_attention_fwd(const pg_ops *o, float *out, const float *q, const float *k, const float *v,
                     const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale) {
  launch_attention(o, out, q, k, v, seg, B, T, H, Hkv, d, scale, 0);
}

void c_attention_bf16_fwd(const pg_ops *o, float *out, const float *q, const float *k,
                          const float *v, const int32_t *seg, int B, int T, int H, int Hkv, int d,
                          float scale) {
  launch_attention(o, out, q, k, v, seg, B, T, H, Hkv, d, scale, 1);
}

/* ---- elementwise ------------------------------------------------------------------------------ */

enum { EW_RELU2, EW_LEAKY, EW_SOFTCAP, EW_TANH, EW_AXPY, EW_BF16 };

__global__ void k_ew(float *y, const float *x, size_t n, int kind, double a) {
  GRID_LOOP(i, n) {
    double xv = (double)x[i];
    switch (kind) {
    case EW_RELU2: {
      double u = x[i] > 0.0f ? xv : 0.0;
      y[i] = (float)(u * u);
      break;
    }
    case EW_LEAKY: {
      double u = xv > 0.0 ? xv : a * xv;
      y[i] = (float)(u * u);
      break;
    }
    case EW_SOFTCAP: y[i] = (float)(a * tanh(xv / a)); break;
    case EW_TANH: y[i] = (float)tanh(xv); break;
    case EW_AXPY: y[i] = (float)((double)y[i] + a * xv); break;
    default: y[i] = bf16_round(x[i]); break;
    }
  }
}

void launch_ew(const pg_ops *o, float *y, const float *x, size_t n, int kind, double a) {
  if (!n) return;
  k_ew<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, n, kind, a);
  launched(o, "elementwise op");
}

void c_relu2_fwd(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_RELU2, 0);
}
void c_leaky_relu2_fwd(const pg_ops *o, float *y, const float *x, size_t n, float s) {
  launch_ew(o, y, x, n, EW_LEAKY, (double)s);
}
void c_softcap_fwd(const pg_ops *o, float *y, const float *z, size_t n, float c) {
  launch_ew(o, y, z, n, EW_SOFTCAP, (double)c);
}
void c_tanh_fwd(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_TANH, 0);
}
void c_axpy(const pg_ops *o, float *y, float a, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_AXPY, (double)a);
}
void c_round_bf16(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_BF16, 0);
}

/* y[r, c] from x[r, c] and per-row / per-channel vectors */
enum { BC_CHANMUL, BC_ROWMUL, BC_ROWGATE, BC_CHANLERP, BC_COLS, BC_EXPAND };

__global__ void k_bcast(float *y, const float *x, const float *b2, const float *s, size_t R,
                        int C, int c0, int w, int kind) {
  size_t n = R * (size_t)(kind == BC_COLS ? w : C);
  GRID_LOOP(i, n) {
    switch (kind) {
    case BC_CHANMUL: y[i] = (float)((double)x[i] * (double)s[i % (size_t)C]); break;
    case BC_ROWMUL: y[i] = (float)((double)x[i] * (double)s[i / (size_t)C]); break;
    case BC_ROWGATE: y[i] = (float)((double)x[i] * sigmoid_d((double)s[i / (size_t)C])); break;
    case BC_CHANLERP: {
      double sg = sigmoid_d((double)s[i % (size_t)C]);
      y[i] = (float)(sg * (double)x[i] + (1.0 - sg) * (double)b2[i]);
      break;
    }
    case BC_COLS: {
      size_t r = i / (size_t)w;
      y[i] = x[r * (size_t)C + (size_t)(c0 + (int)(i % (size_t)w))];
      break;
    }
    default: y[i] = x[i / (size_t)C]; break; /* expand: C is r */
    }
  }
}

void launch_bcast(const pg_ops *o, float *y, const float *x, const float *b2, const float *s,
                  size_t R, int C, int c0, int w, int kind) {
  size_t n = R * (size_t)(kind == BC_COLS ? w : C);
  if (!n) return;
  k_bcast<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, b2, s, R, C, c0, w, kind);
  launched(o, "broadcast op");
}

void c_chanmul_fwd(const pg_ops *o, float *y, const float *x, const float *s, size_t R, int C) {
  launch_bcast(o, y, x, nullptr, s, R, C, 0, 0, BC_CHANMUL);
}
void c_rowmul_fwd(const pg_ops *o, float *y, const float *x, const float *s, size_t R, int D) {
  launch_bcast(o, y, x, nullptr, s, R, D, 0, 0, BC_ROWMUL);
}
void c_rowgate_fwd(const pg_ops *o, float *y, const float *x, const float *g, size_t R, int D) {
  launch_bcast(o, y, x, nullptr, g, R, D, 0, 0, BC_ROWGATE);
}
void c_chanlerp_fwd(const pg_ops *o, float *y, const float *a, const float *b, const float *g,
                    size_t R, int C) {
  launch_bcast(o, y, a, b, g, R, C, 0, 0, BC_CHANLERP);
}
void c_cols_fwd(const pg_ops *o, float *y, const float *x, size_t R, int C, int c0, int w) {
  launch_bcast(o, y, x, nullptr, nullptr, R, C, c0, w, BC_COLS);
}
void c_expand_fwd(const pg_ops *o, float *y, const float *x, int G, int r) {
  launch_bcast(o, y, x, nullptr, nullptr, (size_t)G, r, 0, 0, BC_EXPAND);
}
void c_copy(const pg_ops *o, float *y, const float *x, size_t n) {
  if (n && y != x)
    rt_check(pg_engine_of(o),
             cudaMemcpyAsync(y, x, n * sizeof *y, cudaMemcpyDeviceToDevice, dev_of(o)->stream),
             "copy");
}

/* ---- xsa: a thread per (t, h) row ------------------------------------------------------------- */

__global__ void k_xsa(float *out, const float *y, const float *v, int T, int H, int Hkv, int d) {
  size_t rows = (size_t)T * (size_t)H;
  GRID_LOOP(row, rows) {
    size_t t = row / (size_t)H;
    int g = (int)(row % (size_t)H) / (H / Hkv);
    const float *vr = v + (t * (size_t)Hkv + (size_t)g) * (size_t)d;
    double ss = 0.0;
    for (int i = 0; i < d; i++) ss = ss + (double)vr[i] * (double)vr[i];
    double nrm = sqrt(ss);
    if (nrm < 1e-12) nrm = 1e-12;
    const float *yr = y + row * (size_t)d;
    double a = 0.0;
    for (int i = 0; i < d; i++) a = a + (double)yr[i] * ((double)vr[i] / nrm);
    float *o = out + row * (size_t)d;
    for (int i = 0; i < d; i++) o[i] = (float)((double)yr[i] - a * ((double)vr[i] / nrm));
  }
}

void c_xsa_fwd(const pg_ops *o, float *out, const float *y, const float *v, int T, int H, int Hkv,
               int d) {
  size_t rows = (size_t)T * (size_t)H;
  if (!rows) return;
  k_xsa<<<blocks_for(rows), kThreads, 0, dev_of(o)->stream>>>(out, y, v, T, H, Hkv, d);
  launched(o, "xsa");
}

/* ---- embed and cross-entropy (ids checked on the device: the first bad one is the error) ------ */

__global__ void k_embed(float *y, const float *table, const int32_t *ids, int T, int D, int V,
                        int *err) {
  size_t n = (size_t)T * (size_t)D;
  GRID_LOOP(i, n) {
    size_t t = i / (size_t)D;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      set_err(err, PG_E_TOKEN_RANGE);
      continue;
    }
    y[i] = table[(size_t)id * (size_t)D + i % (size_t)D];
  }
}

void c_embed_fwd(const pg_ops *o, float *y, const float *table, const int32_t *ids, int T, int D,
                 int V) {
  size_t n = (size_t)T * (size_t)D;
  if (!n) return;
  k_embed<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, table, ids, T, D, V,
                                                             dev_of(o)->err_dev);
  launched(o, "embed");
}

__global__ void k_ce(double *nll, const float *logits, const int32_t *tg, int T, int V, int *err) {
  GRID_LOOP(t, (size_t)T) {
    int32_t y = tg[t];
    if (y < 0 || y >= V) {
      set_err(err, PG_E_TOKEN_RANGE);
      continue;
    }
    const float *l = logits + t * (size_t)V;
    double m = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++)
      if ((double)l[v] > m) m = (double)l[v];
    for (int v = 0; v < V; v++) s = s + pg_exp_d((double)l[v] - m);
    nll[t] = m + log(s) - (double)l[y];
  }
}

void c_ce_fwd(const pg_ops *o, double *nll, const float *logits, const int32_t *targets, int T,
              int V) {
  if (T <= 0) return;
  k_ce<<<blocks_for((size_t)T), 128, 0, dev_of(o)->stream>>>(nll, logits, targets, T, V,
                                                             dev_of(o)->err_dev);
  launched(o, "cross-entropy");
}

/* ---- memory ------------------------------------------------------------------------------------ */

void *m_alloc(pg_engine *e, size_t bytes) {
  void *p = nullptr;
  size_t n = bytes ? bytes : 64;
  cudaError_t c = cudaMalloc(&p, n);
  if (c != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  c = cudaMemsetAsync(p, 0, n, dev_of(e)->stream);
  if (c != cudaSuccess) {
    (void)cudaGetLastError();
    cudaFree(p);
    return nullptr;
  }
  return p;
}

void m_free(pg_engine *e, void *p) {
  /* cudaFree waits for the device: work queued on the buffer is done first */
  rt_check(e, cudaFree(p), "free");
}

void m_upload(pg_engine *e, void *dst, const void *src, size_t n) {
  /* from pageable host memory the copy is staged: the host buffer may be reused on return */
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, dev_of(e)->stream), "upload");
}

void m_download(pg_engine *e, void *dst, const void *src, size_t n) {
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, dev_of(e)->stream),
           "download");
  rt_check(e, cudaStreamSynchronize(dev_of(e)->stream), "download");
}

void m_zero(pg_engine *e, void *dst, size_t n) {
  rt_check(e, cudaMemsetAsync(dst, 0, n, dev_of(e)->stream), "zero");
}

void m_copy(pg_engine *e, void *dst, const void *src, size_t n) {
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, dev_of(e)->stream), "copy");
}

int m_finish(pg_engine *e) {
  Dev *d = dev_of(e);
  rt_check(e, cudaStreamSynchronize(d->stream), "a kernel");
  int word = 0;
  cudaError_t c = cudaMemcpy(&word, d->err_dev, sizeof word, cudaMemcpyDeviceToHost);
  rt_check(e, c, "reading the error word");
  if (c == cudaSuccess && word) {
    pg_engine_fail(e, word, "cuda engine: an id or target is outside its table");
    rt_check(e, cudaMemset(d->err_dev, 0, sizeof(int)), "clearing the error word");
  }
  return PG_OK; /* the precise errors are recorded above */
}

void m_release(pg_engine *e) {
  Dev *d = dev_of(e);
  if (!d) return;
  if (d->err_dev) cudaFree(d->err_dev);
  if (d->stream) cudaStreamDestroy(d->stream);
  free(d);
  e->impl = nullptr;
}

pg_ops table(int nthreads) {
  pg_ops t;
  memset(&t, 0, sizeof t);
  t.name = "cuda";
  t.nthreads = nthreads;
#define S(n) t.n = c_##n
  S(matmul_fwd); S(matmul_grouped_fwd); S(rmsnorm_fwd); S(rope_fwd); S(attention_fwd);
  S(relu2_fwd); S(leaky_relu2_fwd); S(rowgate_fwd); S(chanmul_fwd); S(xsa_fwd); S(softcap_fwd);
  S(ce_fwd); S(axpy); S(chanlerp_fwd); S(rowmul_fwd); S(tanh_fwd); S(embed_fwd); S(cols_fwd);
  S(expand_fwd); S(copy); S(round_bf16); S(rope_bf16_fwd); S(attention_bf16_fwd);
#undef S
  bwd_table(&t); /* the backward and optimizer ops: pg_cuda_engine_bwd.cu */
  return t;
}

int fail_rt(pg_err *err, cudaError_t c, const char *what) {
  (void)cudaGetLastError();
  int st = c == cudaErrorNoDevice || c == cudaErrorInsufficientDriver ? PG_E_NO_DEVICE : PG_E_CUDA;
  return pg_err_set(err, st, NULL, PG_NO_OFFSET, "--engine cuda: %s: %s (%s)", what,
                    cudaGetErrorString(c), cudaGetErrorName(c));
}

} // namespace

extern "C" int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = nullptr;
  int n = 0;
  cudaError_t c = cudaGetDeviceCount(&n);
  if (c != cudaSuccess) return fail_rt(err, c, "no usable device");
  int want = o->gpus > 1 ? o->gpus : 1;
  if (o->device < 0 || o->device + want > n)
    return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET,
                      "--engine cuda: %d GPU%s asked for from device %d, %d present", want,
                      want == 1 ? "" : "s", o->device, n);
  if (want > 1)
    return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                      "--engine cuda: several GPUs are not in this version (one GPU only)");
  if ((c = cudaSetDevice(o->device)) != cudaSuccess) return fail_rt(err, c, "selecting the GPU");
  cudaDeviceProp prop;
  if ((c = cudaGetDeviceProperties(&prop, o->device)) != cudaSuccess)
    return fail_rt(err, c, "reading the GPU's properties");
  Dev *d = static_cast<Dev *>(calloc(1, sizeof *d));
  pg_engine *e = static_cast<pg_engine *>(calloc(1, sizeof *e));
  if (!d || !e) {
    free(d);
    free(e);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate an engine");
  }
  d->device = o->device;
  if ((c = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (c = cudaMalloc(&d->err_dev, sizeof(int))) != cudaSuccess ||
      (c = cudaMemset(d->err_dev, 0, sizeof(int))) != cudaSuccess) {
    if (d->stream) cudaStreamDestroy(d->stream);
    if (d->err_dev) cudaFree(d->err_dev);
    free(d);
    free(e);
    return fail_rt(err, c, "creating the stream");
  }
  e->ops = table(1);
  e->impl = d;
  e->heap = 1;
  e->host_memory = 0;
  e->mem_alloc = m_alloc;
  e->mem_free = m_free;
  e->mem_upload = m_upload;
  e->mem_download = m_download;
  e->mem_zero = m_zero;
  e->mem_copy = m_copy;
  e->finish = m_finish;
  e->release = m_release;
  int drv = 0, rtv = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rtv);
  snprintf(e->info.name, sizeof e->info.name, "cuda");
  char name[96];
  snprintf(name, sizeof name, "%.95s", prop.name);
  snprintf(e->info.devices, sizeof e->info.devices, "cuda:%d %s (sm_%d%d, %.0f GiB)", o->device,
           name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1u << 30));
  snprintf(e->info.driver, sizeof e->info.driver, "driver %d.%d, runtime %d.%d", drv / 1000,
           (drv % 1000) / 10, rtv / 1000, (rtv % 1000) / 10);
  e->info.ndevices = 1;
  e->info.threads = 1;
  *out = e;
  return PG_OK;
}
