/* pgmm_naive.h: the first, naive CPU matmul of src/engine/pg_ops.c (one output at a time, one fp64
 * accumulator), kept verbatim as the bit-exact reference for the blocked kernels that replaced
 * it: tests/test_ops.c compares the two with memcmp, bench/bench_model.c times both. Same
 * definition as spec/engine.md §4.1: y[m,n] = fp32(Σ_k x[m,k]·W[n,k]) with k ascending from 0.0;
 * dx[m,k] = fp32(dx + Σ_n dy[m,n]·W[n,k]); dW[n,k] = fp32(dW + Σ_m dy[m,n]·x[m,k]). Rows are
 * split over threads with pg_parallel_for, as the library does. */
#ifndef PGMM_NAIVE_H
#define PGMM_NAIVE_H

#include <stddef.h>

#include "pg_ops.h"
#include "pg_threads.h"

#define PGMM_NAIVE_KBLOCK 64

typedef struct {
  pg_real *y, *dx, *dw;
  const pg_real *x, *w, *dy;
  int M, N, K;
} pgmm_naive_ctx;

static void pgmm_naive_fwd_rows(void *p, size_t b, size_t end) {
  const pgmm_naive_ctx *c = p;
  for (size_t m = b; m < end; m++) {
    const pg_real *xm = c->x + m * (size_t)c->K;
    pg_real *ym = c->y + m * (size_t)c->N;
    for (int n = 0; n < c->N; n++) {
      const pg_real *wn = c->w + (size_t)n * (size_t)c->K;
      double acc = 0.0;
      for (int k = 0; k < c->K; k++) acc += (double)xm[k] * (double)wn[k];
      ym[n] = (pg_real)acc;
    }
  }
}

static void pgmm_naive_dx_rows(void *p, size_t b, size_t end) {
  const pgmm_naive_ctx *c = p;
  double acc[PGMM_NAIVE_KBLOCK];
  for (size_t m = b; m < end; m++) {
    const pg_real *dym = c->dy + m * (size_t)c->N;
    pg_real *dxm = c->dx + m * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PGMM_NAIVE_KBLOCK) {
      int kn = c->K - k0 < PGMM_NAIVE_KBLOCK ? c->K - k0 : PGMM_NAIVE_KBLOCK;
      for (int j = 0; j < kn; j++) acc[j] = 0.0;
      for (int n = 0; n < c->N; n++) {
        double g = (double)dym[n];
        const pg_real *wn = c->w + (size_t)n * (size_t)c->K + (size_t)k0;
        for (int j = 0; j < kn; j++) acc[j] += g * (double)wn[j];
      }
      for (int j = 0; j < kn; j++) dxm[k0 + j] = (pg_real)((double)dxm[k0 + j] + acc[j]);
    }
  }
}

static void pgmm_naive_dw_rows(void *p, size_t b, size_t end) {
  const pgmm_naive_ctx *c = p;
  double acc[PGMM_NAIVE_KBLOCK];
  for (size_t n = b; n < end; n++) {
    pg_real *dwn = c->dw + n * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PGMM_NAIVE_KBLOCK) {
      int kn = c->K - k0 < PGMM_NAIVE_KBLOCK ? c->K - k0 : PGMM_NAIVE_KBLOCK;
      for (int j = 0; j < kn; j++) acc[j] = 0.0;
      for (int m = 0; m < c->M; m++) {
        double g = (double)c->dy[(size_t)m * (size_t)c->N + n];
        const pg_real *xm = c->x + (size_t)m * (size_t)c->K + (size_t)k0;
        for (int j = 0; j < kn; j++) acc[j] += g * (double)xm[j];
      }
      for (int j = 0; j < kn; j++) dwn[k0 + j] = (pg_real)((double)dwn[k0 + j] + acc[j]);
    }
  }
}

/* y[M,N] = x[M,K] · W^T on nthreads threads (0: online CPUs). */
static inline void pgmm_naive_fwd(int nthreads, pg_real *y, const pg_real *x, const pg_real *w,
                                  int M, int N, int K) {
  pgmm_naive_ctx c = {.y = y, .x = x, .w = w, .M = M, .N = N, .K = K};
  pg_parallel_for((size_t)M, pgmm_naive_fwd_rows, &c, nthreads);
}

/* dx[M,K] += dy · W, dw[N,K] += dy^T · x (either may be NULL). */
static inline void pgmm_naive_bwd(int nthreads, pg_real *dx, pg_real *dw, const pg_real *dy,
                                  const pg_real *x, const pg_real *w, int M, int N, int K) {
  pgmm_naive_ctx c = {.dx = dx, .dw = dw, .dy = dy, .x = x, .w = w, .M = M, .N = N, .K = K};
  if (dx) pg_parallel_for((size_t)M, pgmm_naive_dx_rows, &c, nthreads);
  if (dw) pg_parallel_for((size_t)N, pgmm_naive_dw_rows, &c, nthreads);
}

#endif
