/* pg_cuda_engine_impl.cuh: what the CUDA engine's translation units share (internal; not an API):
 * the device state behind pg_engine.impl, launch geometry, error recording, and the device
 * functions whose bits the CPU reference fixes (pg_exp, the sigmoid, bf16 rounding, RoPE's
 * angle). pg_cuda_engine.cu has the memory functions, the forward ops and the table;
 * pg_cuda_engine_bwd.cu the backward and optimizer ops, which it puts into the table through
 * pg_cuda_bwd_table. Everything here is inline (each unit gets the same code) and compiled with
 * the same flags (kernels/meson.build: -fmad=false, IEEE division and square root). */
#ifndef PG_CUDA_ENGINE_IMPL_CUH
#define PG_CUDA_ENGINE_IMPL_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "pg_engine.h"

namespace pgcuda {

constexpr int kThreads = 256;

/* cuBLAS's handle (the library is loaded at run time by pg_cuda_engine.cu: spec/engine.md §8.7) */
typedef struct BlasContext *BlasHandle;

struct Dev {
  int device;
  cudaStream_t stream;
  int *err_dev; /* the first error a kernel saw (a PG_E_ status), 0 when none */
  /* the fast bf16 mode (spec/engine.md §8.7): flash attention, and cuBLAS products when the
   * library could be loaded (blas non-NULL, with its fixed workspace) */
  int fast;
  BlasHandle blas;
  void *blas_ws;
};

inline Dev *dev_of(pg_engine *e) { return static_cast<Dev *>(e->impl); }
inline Dev *dev_of(const pg_ops *o) { return dev_of(pg_engine_of(o)); }

inline unsigned blocks_for(size_t n) {
  size_t b = (n + kThreads - 1) / kThreads;
  if (b > 65535u * 8u) b = 65535u * 8u; /* grid-stride loops cover the rest */
  return b ? (unsigned)b : 1u;
}

/* A failed launch or runtime call: the engine's first error, with CUDA's words. */
inline void rt_check(pg_engine *e, cudaError_t c, const char *what) {
  if (c != cudaSuccess) {
    (void)cudaGetLastError();
    pg_engine_fail(e, PG_E_CUDA, "cuda engine: %s: %s (%s)", what, cudaGetErrorString(c),
                   cudaGetErrorName(c));
  }
}

inline void launched(const pg_ops *o, const char *what) {
  rt_check(pg_engine_of(o), cudaGetLastError(), what);
}

__device__ inline void set_err(int *err, int status) {
  /* only the error word, never a result: the first error wins */
  atomicCAS(err, 0, status);
}

#define GRID_LOOP(i, n)                                                                           \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                         \
       i += (size_t)gridDim.x * blockDim.x)

/* The softmaxes' exponential, pg_exp (spec/engine.md §2.1, src/engine/pg_exp.h): the same fixed
 * sequence of exactly rounded fp64 operations, fused multiply-adds included, so attention and the
 * CE sums give the CPU's bits. */
__device__ inline double pg_exp_d(double x) {
  if (x != x) return x;
  if (x < -746.0) x = -746.0;
  if (x > 710.0) x = 710.0;
  double kf = rint(__dmul_rn(x, 0x1.71547652b82fep+0)); /* ties to even */
  double r = __fma_rn(-kf, 0x1.62e42fefa39efp-1, x);
  r = __fma_rn(-kf, 0x1.abc9e3b39803fp-56, r);
  double p = 1.0 / 6227020800.0;
  const double c[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                      1.0 / 40320.0,     1.0 / 5040.0,     1.0 / 720.0,     1.0 / 120.0,
                      1.0 / 24.0,        1.0 / 6.0,        0.5,             1.0,
                      1.0};
  for (int j = 0; j < 13; j++) p = __fma_rn(p, r, c[j]);
  long long k = (long long)kf, k1 = (k - (k & 1)) / 2, k2 = k - k1;
  double p1 = __longlong_as_double((k1 + 1023) << 52), p2 = __longlong_as_double((k2 + 1023) << 52);
  return __dmul_rn(__dmul_rn(p, p1), p2);
}

__device__ inline double sigmoid_d(double z) {
  return z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

/* fp32 → nearest bfloat16 (ties to even), NaN kept and quieted: pg_bf16_round. */
__device__ inline float bf16_round(float v) {
  uint32_t u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    u = (u | 0x00400000u) & 0xffff0000u;
  else
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  return __uint_as_float(u);
}
__device__ inline double bfd(double v) { return (double)bf16_round((float)v); }

/* RoPE's angle, the records' fp32 table (spec/engine.md §4.3). */
__device__ inline double rope_angle(int32_t pos, int i, int rot, float base) {
  float ex = (float)(2 * i) / (float)rot;
  float p = (float)pow((double)base, (double)ex);
  float inv_freq = 1.0f / p;
  float theta = (float)pos * inv_freq;
  return (double)theta;
}

/* matmul_bwd of a bf16 pass on the tensor cores when the trainer asks for it (bf16_grad;
 * pg_cuda_engine.cu, where cuBLAS is loaded): false when the exact kernels are to run. */
bool fast_matmul_bwd(const pg_ops *o, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, int M, int N, int K);

/* attention_bwd of the trainer's bf16 backward on the tensor cores (the flash backward of
 * pg_cuda_engine.cu): false when the exact kernels are to run. */
bool fast_attention_bwd(const pg_ops *o, float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v, const int32_t *seg, int B,
                        int T, int H, int Hkv, int d, float scale);

/* Column-major c [m × n] = op(a)·op(b) (ta, tb: transposed), bf16 operands, fp32 sums and
 * result, on the engine's cuBLAS handle (pg_cuda_engine.cu): false when cuBLAS is not in use
 * (an engine opened with precision fp32, or the library not loaded). */
bool blas_gemm_bf16(const pg_ops *o, int ta, int tb, int m, int n, int k, const uint16_t *a,
                    int lda, const uint16_t *b, int ldb, float *c, int ldc, const char *what);

/* The cross-entropy row statistics of the fast bf16 mode, a block per row (pg_cuda_engine.cu,
 * k_ce_stats_rows): st[2t] = the row's maximum, st[2t + 1] = its sum of exponentials. */
void launch_ce_stats_rows(const pg_ops *o, double *st, const float *logits, const int32_t *tg,
                          int T, int V);

/* Fills the table's backward and optimizer entries (pg_cuda_engine_bwd.cu). */
void bwd_table(pg_ops *t);

} // namespace pgcuda

#endif
