/* pg_ops.c: the CPU reference ops (the oracle for the CUDA engine). Plain loops (the matmul and
 * the attention forward blocked over tiles of independent outputs, with the same bits), fp64
 * sums in ascending index order, one fp32 rounding per output element, parallel over
 * independent outputs only (pg_parallel_for), so every result is the same for any thread
 * count. spec/engine.md defines each op. */
#include "pg_ops.h"

#include "pg_engine.h"
#include "pg_ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_exp.h"
#include "pg_status.h"
#include "pg_threads.h"

/* ---------------------------------------------------------------------------------------------
 * matmul: y[M,N] = x[M,K] · W^T, W[N,K]
 *
 * The three products (forward, dx, dW) are one blocked kernel over packed fp64 panels. Every
 * output element still has its own fp64 accumulator that starts at 0.0 and takes its products
 * in ascending reduction index, then is rounded once (spec/engine.md §2), so the result is bit
 * for bit that of the plain loops below (kept as the fallback when scratch memory is short, and
 * in tests/pgmm_naive.h as the reference). What the blocking changes is only how many outputs
 * are in flight: a tile of MM_MR output rows × MM_NR output columns (48 accumulators in
 * registers), whose inputs are converted to fp64 once, laid out so each step of the reduction
 * reads one run of MM_MR and one of MM_NR consecutive doubles. The vectors run across the
 * tile's columns (independent outputs), never along the reduction. -ffp-contract=off rules out
 * FMA contraction; the fp32 library's tile uses explicit FMAs, which give the same bits because
 * a product of two fp32 values is exact in fp64 (see mm_tile_fma). */

/* The plain loops: one output at a time (also the fallback, see above). Column block of the
 * backward's fp64 accumulators (kept on the stack). */
#define PG_OPS_KBLOCK 64

typedef struct {
  pg_real *y, *dx, *dw;
  const pg_real *x, *w, *dy;
  int M, N, K;
} pg_mm_ctx;

/* rows m of y: y[m,n] = Σ_k x[m,k]·w[n,k] */
static void mm_fwd_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
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

/* rows m of dx: dx[m,k] += Σ_n dy[m,n]·w[n,k] (n ascending, per k) */
static void mm_bwd_dx_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t m = b; m < end; m++) {
    const pg_real *dym = c->dy + m * (size_t)c->N;
    pg_real *dxm = c->dx + m * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PG_OPS_KBLOCK) {
      int kn = c->K - k0 < PG_OPS_KBLOCK ? c->K - k0 : PG_OPS_KBLOCK;
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

/* rows n of dw: dw[n,k] += Σ_m dy[m,n]·x[m,k] (m ascending, per k) */
static void mm_bwd_dw_rows(void *p, size_t b, size_t end) {
  const pg_mm_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t n = b; n < end; n++) {
    pg_real *dwn = c->dw + n * (size_t)c->K;
    for (int k0 = 0; k0 < c->K; k0 += PG_OPS_KBLOCK) {
      int kn = c->K - k0 < PG_OPS_KBLOCK ? c->K - k0 : PG_OPS_KBLOCK;
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

/* The blocked kernel computes out[p, q] (+)= Σ_r A(p, r)·B(q, r), r ascending, for P output rows
 * (split over threads) and Q output columns, with A(p, r) = a[p·a_p + r·a_r] and
 * B(q, r) = b[q·b_q + r·b_r]:
 *   forward  out = y  [M, N]: A = x  (p = m, r = k),  B = W (q = n, r = k), overwrite;
 *   dx       out = dx [M, K]: A = dy (p = m, r = n),  B = W (q = k, r = n), accumulate;
 *   dW       out = dW [N, K]: A = dy (p = n, r = m),  B = x (q = k, r = m), accumulate.
 * A thread packs B into fp64 panels of MM_NR columns (all R steps, a block of at most about
 * MM_BBLOCK bytes at a time, so it stays in L2), and, for each tile of MM_MR of its rows, A into
 * one fp64 panel of MM_MR rows (L1); the kernel then runs that panel against every B panel. */
#define MM_MR 6
#define MM_NR 8
#define MM_BBLOCK ((size_t)512 * 1024)
#define MM_ABYTES ((size_t)64 << 20)

typedef void (*mm_tile_fn)(const double *restrict ap, const double *restrict bp, int R,
                           double *restrict c);

typedef struct {
  const pg_real *a, *b;
  size_t a_p, a_r, b_q, b_r;
  pg_real *out;
  size_t ldo; /* out[p, q] = out[p·ldo + q] */
  int accumulate, P, Q, R;
  mm_tile_fn tile;
  pg_mm_ctx *plain; /* the plain loops over the same rows, when scratch is short */
  pg_parallel_fn plain_rows;
  const pg_ops *e; /* whose scratch the panels are packed into (slot 1: a parallel body's) */
} pg_mm_gemm;

/* c[i·MM_NR + j] = Σ_r ap[r·MM_MR + i]·bp[r·MM_NR + j], each sum from 0.0 in ascending r. The
 * 32 sums are independent: the loops over i and j are unrolled into vector operations across j
 * (the compiler may not reorder a sum's terms without -ffast-math). */
#define MM_TILE_BODY                                                                              \
  {                                                                                               \
    double s[MM_MR][MM_NR];                                                                       \
    for (int i = 0; i < MM_MR; i++)                                                               \
      for (int j = 0; j < MM_NR; j++) s[i][j] = 0.0;                                              \
    for (int r = 0; r < R; r++) {                                                                 \
      const double *av = ap + (size_t)r * MM_MR, *bv = bp + (size_t)r * MM_NR;                    \
      for (int i = 0; i < MM_MR; i++) {                                                           \
        double ai = av[i];                                                                        \
        for (int j = 0; j < MM_NR; j++) s[i][j] += ai * bv[j];                                    \
      }                                                                                           \
    }                                                                                             \
    for (int i = 0; i < MM_MR; i++)                                                               \
      for (int j = 0; j < MM_NR; j++) c[i * MM_NR + j] = s[i][j];                                 \
  }

static void mm_tile_generic(const double *restrict ap, const double *restrict bp, int R,
                            double *restrict c) MM_TILE_BODY

/* The same code compiled for AVX2 (4 doubles a vector instead of SSE2's 2), chosen at run time.
 * AVX2 does not bring FMA (a separate target feature), and contraction is off anyway: the
 * multiplies and adds are the same IEEE operations in the same order, so the bits are the same. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(PG_OPS_NO_AVX2)
#define MM_HAVE_AVX2 1
#include <immintrin.h>
#if MM_MR != 6 || MM_NR != 8
#error "mm_tile_avx2 and mm_tile_fma are written for 6 x 8 tiles"
#endif
/* Written with intrinsics: the compiler's own vectorization of MM_TILE_BODY shuffles every
 * panel load, which costs as much as the arithmetic. Each lane is still one output's sum:
 * s = 0.0, then s = s + a·b for r ascending, a separate multiply and add (no FMA). */
__attribute__((target("avx2"))) static void mm_tile_avx2(const double *restrict ap,
                                                         const double *restrict bp, int R,
                                                         double *restrict c) {
  __m256d s00 = _mm256_setzero_pd(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00,
          s30 = s00, s31 = s00, s40 = s00, s41 = s00, s50 = s00, s51 = s00;
  for (int r = 0; r < R; r++) {
    const double *av = ap + (size_t)r * MM_MR, *bv = bp + (size_t)r * MM_NR;
    __m256d b0 = _mm256_loadu_pd(bv), b1 = _mm256_loadu_pd(bv + 4), a;
#define MM_ROW(i, x0, x1)                                                                         \
  a = _mm256_broadcast_sd(av + i);                                                                \
  x0 = _mm256_add_pd(x0, _mm256_mul_pd(a, b0));                                                   \
  x1 = _mm256_add_pd(x1, _mm256_mul_pd(a, b1));
    MM_ROW(0, s00, s01) MM_ROW(1, s10, s11) MM_ROW(2, s20, s21)
    MM_ROW(3, s30, s31) MM_ROW(4, s40, s41) MM_ROW(5, s50, s51)
#undef MM_ROW
  }
  _mm256_storeu_pd(c, s00), _mm256_storeu_pd(c + 4, s01);
  _mm256_storeu_pd(c + 8, s10), _mm256_storeu_pd(c + 12, s11);
  _mm256_storeu_pd(c + 16, s20), _mm256_storeu_pd(c + 20, s21);
  _mm256_storeu_pd(c + 24, s30), _mm256_storeu_pd(c + 28, s31);
  _mm256_storeu_pd(c + 32, s40), _mm256_storeu_pd(c + 36, s41);
  _mm256_storeu_pd(c + 40, s50), _mm256_storeu_pd(c + 44, s51);
}

#ifndef PG_REAL_F64
/* With fused multiply-adds, for the fp32 library only. A product of two values converted from
 * fp32 is exact in fp64 (24 + 24 significant bits ≤ 53, and far from fp64's overflow and
 * subnormal range), so fma(a, b, s) = fp64(a·b + s) = fp64(fp64(a·b) + s): the same bits as the
 * separate multiply and add, in half the instructions. In the fp64 test build the products are
 * not exact, and mm_tile_avx2 is used. */
__attribute__((target("avx2,fma"))) static void mm_tile_fma(const double *restrict ap,
                                                            const double *restrict bp, int R,
                                                            double *restrict c) {
  __m256d s00 = _mm256_setzero_pd(), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00,
          s30 = s00, s31 = s00, s40 = s00, s41 = s00, s50 = s00, s51 = s00;
  for (int r = 0; r < R; r++) {
    const double *av = ap + (size_t)r * MM_MR, *bv = bp + (size_t)r * MM_NR;
    __m256d b0 = _mm256_loadu_pd(bv), b1 = _mm256_loadu_pd(bv + 4), a;
#define MM_ROW(i, x0, x1)                                                                         \
  a = _mm256_broadcast_sd(av + i);                                                                \
  x0 = _mm256_fmadd_pd(a, b0, x0);                                                                \
  x1 = _mm256_fmadd_pd(a, b1, x1);
    MM_ROW(0, s00, s01) MM_ROW(1, s10, s11) MM_ROW(2, s20, s21)
    MM_ROW(3, s30, s31) MM_ROW(4, s40, s41) MM_ROW(5, s50, s51)
#undef MM_ROW
  }
  _mm256_storeu_pd(c, s00), _mm256_storeu_pd(c + 4, s01);
  _mm256_storeu_pd(c + 8, s10), _mm256_storeu_pd(c + 12, s11);
  _mm256_storeu_pd(c + 16, s20), _mm256_storeu_pd(c + 20, s21);
  _mm256_storeu_pd(c + 24, s30), _mm256_storeu_pd(c + 28, s31);
  _mm256_storeu_pd(c + 32, s40), _mm256_storeu_pd(c + 36, s41);
  _mm256_storeu_pd(c + 40, s50), _mm256_storeu_pd(c + 44, s51);
}
#endif
#endif

static mm_tile_fn mm_tile_pick(void) {
#ifdef MM_HAVE_AVX2
  __builtin_cpu_init();
#ifndef PG_REAL_F64
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return mm_tile_fma;
#endif
  if (__builtin_cpu_supports("avx2")) return mm_tile_avx2;
#endif
  return mm_tile_generic;
}

/* Pack n rows (i) of a strided operand, element (i, r) = src[i·s_i + r·s_r], into fp64 panels of
 * w rows: element (i, r) goes to dst[(i / w)·w·R + r·w + i mod w]; the rows of a last partial
 * panel are padded with 0.0 (those lanes compute outputs that are never stored). When the rows
 * are adjacent in memory (s_i = 1) every step r reads one contiguous run across all panels. */
static void mm_pack(double *restrict dst, int w, const pg_real *src, size_t s_i, size_t s_r,
                    size_t n, int R) {
  const size_t W = (size_t)w, Rz = (size_t)R;
  if (s_i == 1) {
    for (size_t r = 0; r < Rz; r++) {
      const pg_real *sr = src + r * s_r;
      for (size_t i0 = 0; i0 < n; i0 += W) {
        double *d = dst + i0 * Rz + r * W;
        for (size_t i = 0; i < W; i++) d[i] = i0 + i < n ? (double)sr[i0 + i] : 0.0;
      }
    }
    return;
  }
  for (size_t i0 = 0; i0 < n; i0 += W) {
    double *d = dst + i0 * Rz;
    const size_t m = n - i0 < W ? n - i0 : W;
    if (s_r == 1 && m == MM_MR && w == MM_MR) { /* whole panels of rows contiguous along r */
      const pg_real *si[MM_MR];
      for (int i = 0; i < MM_MR; i++) si[i] = src + (i0 + (size_t)i) * s_i;
      for (size_t r = 0; r < Rz; r++, d += MM_MR)
        for (int i = 0; i < MM_MR; i++) d[i] = (double)si[i][r];
      continue;
    }
    if (s_r == 1 && m == W) {
      for (size_t i = 0; i < W; i++) {
        const pg_real *si = src + (i0 + i) * s_i;
        for (size_t r = 0; r < Rz; r++) d[r * W + i] = (double)si[r];
      }
      continue;
    }
    for (size_t r = 0; r < Rz; r++) {
      const pg_real *sr = src + i0 * s_i + r * s_r;
      size_t i = 0;
      for (; i < m; i++) d[r * W + i] = (double)sr[i * s_i];
      for (; i < W; i++) d[r * W + i] = 0.0;
    }
  }
}

static void mm_gemm_rows(void *p, size_t b, size_t end) {
  const pg_mm_gemm *g = p;
  if (g->Q <= 0) return; /* no output columns */
  const size_t R = (size_t)g->R, Rz = R ? R : 1;
  /* columns per B block: a multiple of MM_NR, ~MM_BBLOCK bytes, at least one panel */
  size_t nc = MM_BBLOCK / (Rz * sizeof(double)) / MM_NR * MM_NR;
  size_t qpad = ((size_t)g->Q + MM_NR - 1) / MM_NR * MM_NR;
  if (nc < MM_NR) nc = MM_NR;
  if (nc > qpad) nc = qpad;
  /* With more than one B block, the A panels of all the rows are packed once (up to
   * MM_ABYTES), not once per block */
  const size_t tiles = (end - b + MM_MR - 1) / MM_MR;
  const int a_once = qpad > nc && tiles * MM_MR * Rz * sizeof(double) <= MM_ABYTES;
  double *bp = pg_engine_scratch_try(pg_engine_of(g->e), 1,
                                     (nc + (a_once ? tiles : 1) * MM_MR) * Rz * sizeof *bp);
  if (!bp) {
    g->plain_rows(g->plain, b, end);
    return;
  }
  double *ap = bp + nc * Rz;
  if (a_once)
    for (size_t p0 = b; p0 < end; p0 += MM_MR)
      mm_pack(ap + (p0 - b) * Rz, MM_MR, g->a + p0 * g->a_p, g->a_p, g->a_r,
              end - p0 < MM_MR ? end - p0 : MM_MR, g->R);
  double c[MM_MR * MM_NR];
  for (size_t q0 = 0; q0 < (size_t)g->Q; q0 += nc) {
    size_t qn = (size_t)g->Q - q0 < nc ? (size_t)g->Q - q0 : nc;
    mm_pack(bp, MM_NR, g->b + q0 * g->b_q, g->b_q, g->b_r, qn, g->R);
    for (size_t p0 = b; p0 < end; p0 += MM_MR) {
      int pn = end - p0 < MM_MR ? (int)(end - p0) : MM_MR;
      const double *apt = ap + (a_once ? (p0 - b) * Rz : 0);
      if (!a_once) mm_pack(ap, MM_MR, g->a + p0 * g->a_p, g->a_p, g->a_r, (size_t)pn, g->R);
      for (size_t j0 = 0; j0 < qn; j0 += MM_NR) {
        int jn = qn - j0 < MM_NR ? (int)(qn - j0) : MM_NR;
        g->tile(apt, bp + j0 * R, g->R, c);
        for (int i = 0; i < pn; i++) {
          pg_real *o = g->out + (p0 + (size_t)i) * g->ldo + q0 + j0;
          const double *ci = c + i * MM_NR;
          if (g->accumulate)
            for (int j = 0; j < jn; j++) o[j] = (pg_real)((double)o[j] + ci[j]);
          else
            for (int j = 0; j < jn; j++) o[j] = (pg_real)ci[j];
        }
      }
    }
  }
}

/* Rows i of t[cols, rows] = aᵀ for a[rows, cols] (a copy, in blocks of MM_TB × MM_TB). */
#define MM_TB 16
typedef struct {
  pg_real *t;
  const pg_real *a;
  size_t rows, cols;
} pg_mm_transpose;

static void mm_transpose_rows(void *p, size_t b, size_t end) {
  const pg_mm_transpose *c = p;
  for (size_t r0 = 0; r0 < c->rows; r0 += MM_TB) {
    size_t r1 = c->rows - r0 < MM_TB ? c->rows : r0 + MM_TB;
    for (size_t i0 = b; i0 < end; i0 += MM_TB) {
      size_t i1 = end - i0 < MM_TB ? end : i0 + MM_TB;
      for (size_t r = r0; r < r1; r++)
        for (size_t i = i0; i < i1; i++) c->t[i * c->rows + r] = c->a[r * c->cols + i];
    }
  }
}

static void cpu_matmul_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *w, int M,
                           int N, int K) {
  pg_mm_ctx c = {.y = y, .x = x, .w = w, .M = M, .N = N, .K = K};
  size_t Kz = (size_t)K;
  pg_mm_gemm g = {.a = x, .a_p = Kz, .a_r = 1, .b = w, .b_q = Kz, .b_r = 1, .out = y,
                  .ldo = (size_t)N, .accumulate = 0, .P = M, .Q = N, .R = K,
                  .tile = mm_tile_pick(), .plain = &c, .plain_rows = mm_fwd_rows, .e = e};
  pg_parallel_for((size_t)M, mm_gemm_rows, &g, e->nthreads);
}

static void cpu_matmul_bwd(const pg_ops *e, pg_real *dx, pg_real *dw, const pg_real *dy,
                           const pg_real *x, const pg_real *w, int M, int N, int K) {
  pg_mm_ctx c = {.dx = dx, .dw = dw, .dy = dy, .x = x, .w = w, .M = M, .N = N, .K = K};
  size_t Nz = (size_t)N, Kz = (size_t)K;
  mm_tile_fn tile = mm_tile_pick();
  if (dx) {
    pg_mm_gemm g = {.a = dy, .a_p = Nz, .a_r = 1, .b = w, .b_q = 1, .b_r = Kz, .out = dx,
                    .ldo = Kz, .accumulate = 1, .P = M, .Q = K, .R = N,
                    .tile = tile, .plain = &c, .plain_rows = mm_bwd_dx_rows, .e = e};
    pg_parallel_for((size_t)M, mm_gemm_rows, &g, e->nthreads);
  }
  if (dw) {
    /* A(n, m) = dy[m, n] read down a column of dy is slow (one cache line per element, often on
     * the same cache set); the kernel reads dyᵀ[N, M] instead when there is room for it. */
    pg_real *dyt = M > 1 && N > 1
                       ? pg_engine_scratch_try(pg_engine_of(e), 0, Nz * (size_t)M * sizeof *dyt)
                       : NULL;
    pg_mm_gemm g = {.a = dy, .a_p = 1, .a_r = Nz, .b = x, .b_q = 1, .b_r = Kz, .out = dw,
                    .ldo = Kz, .accumulate = 1, .P = N, .Q = K, .R = M,
                    .tile = tile, .plain = &c, .plain_rows = mm_bwd_dw_rows, .e = e};
    if (dyt) {
      pg_mm_transpose t = {.t = dyt, .a = dy, .rows = (size_t)M, .cols = Nz};
      pg_parallel_for(Nz, mm_transpose_rows, &t, e->nthreads);
      g.a = dyt, g.a_p = (size_t)M, g.a_r = 1;
    }
    pg_parallel_for(Nz, mm_gemm_rows, &g, e->nthreads);
  }
}

/* ---------------------------------------------------------------------------------------------
 * rmsnorm: per row of D, y = x·r, r = 1/sqrt(mean(x²) + eps) */

typedef struct {
  pg_real *y, *dx;
  const pg_real *x, *dy;
  int D;
  double eps;
} pg_rms_ctx;

static double rms_inv(const pg_real *x, int D, double eps) {
  double ss = 0.0;
  for (int i = 0; i < D; i++) ss += (double)x[i] * (double)x[i];
  return 1.0 / sqrt(ss / (double)D + eps);
}

static void rms_fwd_rows(void *p, size_t b, size_t end) {
  const pg_rms_ctx *c = p;
  const size_t D = (size_t)c->D;
  size_t r = b;
  /* four rows at a time: their sums of squares are four independent chains of dependent adds
   * side by side (one row's chain runs at the latency of an add), each still in ascending i;
   * all four sums are taken before any row is written (y may alias x) */
  for (; r + 4 <= end; r += 4) {
    const pg_real *x = c->x + r * D;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    for (size_t i = 0; i < D; i++) {
      const double a0 = (double)x[i], a1 = (double)x[D + i], a2 = (double)x[2 * D + i],
                   a3 = (double)x[3 * D + i];
      s0 += a0 * a0, s1 += a1 * a1, s2 += a2 * a2, s3 += a3 * a3;
    }
    const double ss[4] = {s0, s1, s2, s3};
    for (size_t k = 0; k < 4; k++) {
      const double inv = 1.0 / sqrt(ss[k] / (double)c->D + c->eps);
      const pg_real *xk = x + k * D;
      pg_real *y = c->y + (r + k) * D;
      for (size_t i = 0; i < D; i++) y[i] = (pg_real)((double)xk[i] * inv);
    }
  }
  for (; r < end; r++) {
    const pg_real *x = c->x + r * (size_t)c->D;
    pg_real *y = c->y + r * (size_t)c->D;
    double inv = rms_inv(x, c->D, c->eps);
    for (int i = 0; i < c->D; i++) y[i] = (pg_real)((double)x[i] * inv);
  }
}

/* dx_j += r·dy_j − r³·x_j·(Σ_i dy_i·x_i)/D */
static void rms_bwd_rows(void *p, size_t b, size_t end) {
  const pg_rms_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    const pg_real *x = c->x + r * (size_t)c->D;
    const pg_real *dy = c->dy + r * (size_t)c->D;
    pg_real *dx = c->dx + r * (size_t)c->D;
    double inv = rms_inv(x, c->D, c->eps);
    double dot = 0.0;
    for (int i = 0; i < c->D; i++) dot += (double)dy[i] * (double)x[i];
    double k = inv * inv * inv * dot / (double)c->D;
    for (int i = 0; i < c->D; i++)
      dx[i] = (pg_real)((double)dx[i] + (inv * (double)dy[i] - k * (double)x[i]));
  }
}

static void cpu_rmsnorm_fwd(const pg_ops *e, pg_real *y, const pg_real *x, size_t R, int D,
                            float eps) {
  pg_rms_ctx c = {.y = y, .x = x, .D = D, .eps = (double)eps};
  pg_parallel_for((size_t)R, rms_fwd_rows, &c, e->nthreads);
}

static void cpu_rmsnorm_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x,
                            size_t R, int D, float eps) {
  pg_rms_ctx c = {.dx = dx, .dy = dy, .x = x, .D = D, .eps = (double)eps};
  pg_parallel_for((size_t)R, rms_bwd_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * rope: x[T, H, d], pairs (i, i + rot/2) for i < rot/2, rotation by -θ */

typedef struct {
  pg_real *y;
  const pg_real *x;
  const int32_t *pos;
  int H, d, rot;
  float base;
  int backward; /* 0: forward; 1: backward; 2: the bf16 forward */
} pg_rope_ctx;

static double bf(double v) { return (double)pg_bf16_round((float)v); }

/* The angle of pair i at position pos, as the records compute it (`1.0 / (base ** (arange(0, rot,
 * 2, fp32) / rot))`, then `outer(t, inv_freq)`, all fp32): an fp32 exponent, an fp32 power, its
 * fp32 reciprocal (not the power of the negated exponent: that rounds once instead of twice and
 * differs from the records' table by an ulp in 3 of the 8 frequencies of rot 16), fp32 product. */
static float rope_inv_freq(int i, int rot, float base) {
  float ex = (float)(2 * i) / (float)rot;
  float p = (float)pow((double)base, (double)ex);
  return 1.0f / p;
}
static double rope_angle(int32_t pos, float inv_freq) {
  float theta = (float)pos * inv_freq;
  return (double)theta;
}

/* rows t: forward y = R x; backward y += R^T x (x holding dy, y holding dx) */
static void rope_rows(void *p, size_t b, size_t end) {
  const pg_rope_ctx *c = p;
  enum { TB = 128 };
  int half = c->rot / 2;
  double cst[TB], snt[TB]; /* cos, sin of a position's angles i0 … i0 + TB − 1, for every head */
  float invf[TB];           /* the frequencies of pairs inv_i0 … inv_i0 + TB − 1 */
  int inv_i0 = -1;
  for (size_t t = b; t < end; t++) {
    for (int i0 = 0; i0 < half; i0 += TB) {
      int i1 = half - i0 < TB ? half : i0 + TB;
      if (inv_i0 != i0) /* once per call when half ≤ TB */
        for (int i = i0; i < i1; i++) invf[i - i0] = rope_inv_freq(i, c->rot, c->base);
      inv_i0 = i0;
      for (int i = i0; i < i1; i++) {
        double th = rope_angle(c->pos[t], invf[i - i0]);
        cst[i - i0] = cos(th), snt[i - i0] = sin(th);
      }
      for (int h = 0; h < c->H; h++) {
        size_t off = (t * (size_t)c->H + (size_t)h) * (size_t)c->d;
        const pg_real *x = c->x + off;
        pg_real *y = c->y + off;
        for (int i = i0; i < i1; i++) {
          double cs = cst[i - i0], sn = snt[i - i0];
          double x1 = (double)x[i], x2 = (double)x[i + half];
          if (c->backward == 2) {
            /* the records' bf16 RoPE: bf16 cos/sin, each product and each sum rounded to bf16 */
            cs = bf(cs), sn = bf(sn);
            y[i] = (pg_real)bf(bf(x1 * cs) + bf(x2 * sn));
            y[i + half] = (pg_real)bf(bf(x1 * -sn) + bf(x2 * cs));
          } else if (!c->backward) {
            y[i] = (pg_real)(x1 * cs + x2 * sn);
            y[i + half] = (pg_real)(-x1 * sn + x2 * cs);
          } else {
            y[i] = (pg_real)((double)y[i] + (x1 * cs - x2 * sn));
            y[i + half] = (pg_real)((double)y[i + half] + (x1 * sn + x2 * cs));
          }
        }
      }
    }
    for (int h = 0; h < c->H; h++) {
      size_t off = (t * (size_t)c->H + (size_t)h) * (size_t)c->d;
      const pg_real *x = c->x + off;
      pg_real *y = c->y + off;
      for (int i = c->rot; i < c->d; i++)
        y[i] = c->backward == 1 ? (pg_real)((double)y[i] + (double)x[i]) : x[i];
    }
  }
}

static void cpu_rope_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const int32_t *pos, int T,
                         int H, int d, int rot, float base) {
  pg_rope_ctx c = {.y = y, .x = x, .pos = pos, .H = H, .d = d, .rot = rot, .base = base};
  pg_parallel_for((size_t)T, rope_rows, &c, e->nthreads);
}

static void cpu_rope_bf16_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const int32_t *pos,
                              int T, int H, int d, int rot, float base) {
  pg_rope_ctx c = {.y = y, .x = x, .pos = pos, .H = H, .d = d, .rot = rot, .base = base,
                   .backward = 2};
  pg_parallel_for((size_t)T, rope_rows, &c, e->nthreads);
}

static void cpu_rope_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, const int32_t *pos, int T,
                         int H, int d, int rot, float base) {
  pg_rope_ctx c = {.y = dx, .x = dy, .pos = pos, .H = H, .d = d, .rot = rot, .base = base,
                   .backward = 1};
  pg_parallel_for((size_t)T, rope_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * The softmaxes' exponential (attention, cross-entropy): pg_exp.h, the same bits everywhere; the
 * copy compiled for FMA runs where the CPU has it (the other calls the C library's fma). */

static double sm_exp_plain(double x) { return pg_exp_inline(x); }
#ifdef PG_EXP_HAVE_AVX2
__attribute__((target("avx2,fma"))) static double sm_exp_fma(double x) {
  return pg_exp_inline(x);
}
#endif

static double sm_exp(double x) {
#ifdef PG_EXP_HAVE_AVX2
  if (__builtin_cpu_supports("fma")) return sm_exp_fma(x);
#endif
  return sm_exp_plain(x);
}

/* ---------------------------------------------------------------------------------------------
 * attention: q[T, H, d], k/v[T, Hkv, d], out[T, H, d]; causal, optional segment mask, GQA */

typedef struct {
  pg_real *out, *dq, *dk, *dv;
  const pg_real *q, *k, *v, *dout;
  const int32_t *seg;
  int T, H, Hkv, d;
  double scale;
  double *stats; /* backward: [T, H, 3] = (max, denominator, Σ_s p_s·(dout·v_s)) */
  const pg_ops *e; /* whose scratch the rows use (slot 1) */
  int bf16;      /* forward: the flash kernels' bf16 probabilities and output (§4.19) */
} pg_attn_ctx;

static int attn_allowed(const pg_attn_ctx *c, int t, int s) {
  return s <= t && (!c->seg || c->seg[s] == c->seg[t]);
}

static double attn_dot(const pg_real *a, const pg_real *b, int d) {
  double acc = 0.0;
  for (int i = 0; i < d; i++) acc += (double)a[i] * (double)b[i];
  return acc;
}

static const pg_real *attn_q(const pg_attn_ctx *c, int t, int h) {
  return c->q + ((size_t)t * (size_t)c->H + (size_t)h) * (size_t)c->d;
}
static const pg_real *attn_kv(const pg_attn_ctx *c, const pg_real *base, int s, int g) {
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
/* The logits l[s] = scale·(q_t·k_s) of row (t, h) for every allowed s ≤ t, each dot product
 * summed in ascending i exactly as attn_score does; four keys at a time when four consecutive
 * keys are allowed (four independent sums, so the values are the same bits). */
static void attn_logits(const pg_attn_ctx *c, int t, int h, double *l) {
  int g = h / (c->H / c->Hkv), d = c->d;
  const pg_real *q = attn_q(c, t, h);
  int s = 0;
  while (s <= t) {
    if (s + 3 <= t && attn_allowed(c, t, s) && attn_allowed(c, t, s + 3) &&
        attn_allowed(c, t, s + 1) && attn_allowed(c, t, s + 2)) {
      const pg_real *k0 = attn_kv(c, c->k, s, g), *k1 = attn_kv(c, c->k, s + 1, g);
      const pg_real *k2 = attn_kv(c, c->k, s + 2, g), *k3 = attn_kv(c, c->k, s + 3, g);
      double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
      for (int i = 0; i < d; i++) {
        double qi = (double)q[i];
        a0 += qi * (double)k0[i];
        a1 += qi * (double)k1[i];
        a2 += qi * (double)k2[i];
        a3 += qi * (double)k3[i];
      }
      l[s] = c->scale * a0;
      l[s + 1] = c->scale * a1;
      l[s + 2] = c->scale * a2;
      l[s + 3] = c->scale * a3;
      s += 4;
    } else {
      if (attn_allowed(c, t, s)) l[s] = attn_score(c, t, h, s);
      s++;
    }
  }
}

/* rows (t, h): out = Σ_s e^(l_s − max) v_s / Σ_s e^(l_s − max). The logits are computed once
 * into a buffer (when it can be had) instead of twice; the result is the same. */
static void attn_fwd_rows(void *p, size_t b, size_t end) {
  const pg_attn_ctx *c = p;
  double acc[PG_OPS_MAX_HEAD_DIM];
  double *l = pg_engine_scratch_try(pg_engine_of(c->e), 1, (size_t)c->T * sizeof *l);
  for (size_t row = b; row < end; row++) {
    int t = (int)(row / (size_t)c->H), h = (int)(row % (size_t)c->H);
    int g = h / (c->H / c->Hkv);
    double mx = -INFINITY, den = 0.0;
    if (l) {
      attn_logits(c, t, h, l);
      for (int s = 0; s <= t; s++)
        if (attn_allowed(c, t, s) && l[s] > mx) mx = l[s];
    } else {
      mx = attn_max(c, t, h);
    }
    for (int i = 0; i < c->d; i++) acc[i] = 0.0;
    for (int s = 0; s <= t; s++) {
      if (!attn_allowed(c, t, s)) continue;
      double w = sm_exp((l ? l[s] : attn_score(c, t, h, s)) - mx);
      const pg_real *vs = attn_kv(c, c->v, s, g);
      den += w;
      if (c->bf16) w = bf(w); /* P·V takes bf16 probabilities; the denominator does not */
      if (c->bf16) /* a bf16 weight times an fp32 value is exact in fp64: the FMA's bits */
        for (int i = 0; i < c->d; i++) acc[i] += w * (double)vs[i];
      else
        for (int i = 0; i < c->d; i++) acc[i] = fma(w, (double)vs[i], acc[i]);
    }
    pg_real *o = c->out + row * (size_t)c->d;
    for (int i = 0; i < c->d; i++)
      o[i] = c->bf16 ? (pg_real)bf(acc[i] / den) : (pg_real)(acc[i] / den);
  }
}

/* The forward over packed fp64 copies of k and v (AVX2, d a multiple of 4; the same bits as
 * attn_fwd_rows). kt holds k transposed in blocks of ATT_KB keys, vp holds v in chunks of dims
 * (attn_vidx). A unit of work is a tile of rows: ATT_QB consecutive positions t × the heads of
 * one kv group g, so a block of keys or values is read from L1 by every row of the tile instead
 * of from memory by each row. Both products run on register tiles of four rows × twelve outputs
 * (twelve vector sums in flight: enough to cover the FMA latency on both pipes, with three
 * loaded vectors and one broadcast per step):
 * - logits: each block of ATT_KB = 12 keys against the groups of four rows that may see it,
 *   each logit one sum over i ascending from 0.0, then ·scale; each term is an FMA (q and k are
 *   fp32 values, so the product is exact and the bits are those of a multiply then an add);
 *   keys past t (and the zero padding up to Tp) are computed and ignored, and blocks wholly
 *   before the tile's first allowed key (another segment) are not computed;
 * - max (four at a time: the max is exact in any order), pg_exp on sixteen keys at a time
 *   (pg_exp4_ways), and the denominators, s ascending, four rows side by side;
 * - values: for each block of ATT_SB keys, each row's accumulators (in memory between blocks,
 *   which is exact) take w_s·v_s as one FMA (§4.4) for its allowed s ascending: four rows × 12
 *   dims at a time (then 4 dims) over the keys all four rows may see, then each row alone over
 *   the few keys only the later positions see (so every row still takes its keys in order);
 * - out = fp32(acc / den).
 * Which unit a thread runs changes no value; units are ordered so contiguous chunks of them
 * cost about the same under the causal mask, and are handed out in small chunks. */
#if defined(MM_HAVE_AVX2) && !defined(PG_REAL_F64)
#define ATT_QB 8
#define ATT_KB 12
#define ATT_SB 64
#define ATT_AVX2 __attribute__((target("avx2,fma")))
/* Keeps three loaded vectors in registers: without it the compiler folds each load into every
 * row's arithmetic, loading every vector four times, and the loads become the bottleneck. */
#define ATT_IN_REGS(a, b, c) __asm__("" : "+x"(a), "+x"(b), "+x"(c))
typedef struct {
  const pg_attn_ctx *c;
  double *kt, *vp;
  size_t Tp; /* T rounded up to ATT_KB */
  int nqb;   /* tiles of positions: ceil(T / ATT_QB) */
} pg_attn_pack;

/* the tile of parallel index u: 0, n−1, 1, n−2, … */
static int attn_balanced(size_t u, int n) {
  return (u & 1) ? n - 1 - (int)(u / 2) : (int)(u / 2);
}

/* Where v[s][i] of a group lies in vp: the dims in chunks of 12 (the values' register tile),
 * then of 4, chunk by chunk, each chunk [Tp][its width], so the values pass reads one run of
 * consecutive doubles per key. The chunk of i starts at dim i0 and at vp + i0·Tp. */
static size_t attn_vidx(size_t d, size_t Tp, size_t s, size_t i) {
  const size_t d12 = d / 12 * 12, i0 = i < d12 ? i / 12 * 12 : i / 4 * 4;
  return i0 * Tp + s * (i < d12 ? 12 : 4) + (i - i0);
}

static void attn_pack_groups(void *p, size_t b, size_t end) {
  const pg_attn_pack *a = p;
  const pg_attn_ctx *c = a->c;
  size_t d = (size_t)c->d, Tp = a->Tp;
  for (size_t g = b; g < end; g++) {
    double *kt = a->kt + g * d * Tp, *vp = a->vp + g * Tp * d;
    for (size_t s = 0; s < Tp; s++) {
      const pg_real *ks = s < (size_t)c->T ? attn_kv(c, c->k, (int)s, (int)g) : NULL;
      const pg_real *vs = s < (size_t)c->T ? attn_kv(c, c->v, (int)s, (int)g) : NULL;
      for (size_t i = 0; i < d; i++) {
        kt[(s / ATT_KB * d + i) * ATT_KB + s % ATT_KB] = ks ? (double)ks[i] : 0.0;
        vp[attn_vidx(d, Tp, s, i)] = vs ? (double)vs[i] : 0.0;
      }
    }
  }
}

/* l[j][0 … 11] = scale·Σ_i q[j][i]·kb[i·12 + 0 … 11] for the four rows j (fp64 copies of q). */
ATT_AVX2 static inline void attn_logits4(const double *const q[4], double *const l[4],
                                         const double *kb, int d, __m256d scale) {
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, b0 = a0, b1 = a0, b2 = a0;
  __m256d c0 = a0, c1 = a0, c2 = a0, e0 = a0, e1 = a0, e2 = a0;
  const double *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
  for (int i = 0; i < d; i++, kb += ATT_KB) {
    __m256d k0 = _mm256_loadu_pd(kb), k1 = _mm256_loadu_pd(kb + 4), k2 = _mm256_loadu_pd(kb + 8);
    ATT_IN_REGS(k0, k1, k2);
    __m256d x = _mm256_broadcast_sd(q0 + i);
    a0 = _mm256_fmadd_pd(x, k0, a0), a1 = _mm256_fmadd_pd(x, k1, a1);
    a2 = _mm256_fmadd_pd(x, k2, a2);
    x = _mm256_broadcast_sd(q1 + i);
    b0 = _mm256_fmadd_pd(x, k0, b0), b1 = _mm256_fmadd_pd(x, k1, b1);
    b2 = _mm256_fmadd_pd(x, k2, b2);
    x = _mm256_broadcast_sd(q2 + i);
    c0 = _mm256_fmadd_pd(x, k0, c0), c1 = _mm256_fmadd_pd(x, k1, c1);
    c2 = _mm256_fmadd_pd(x, k2, c2);
    x = _mm256_broadcast_sd(q3 + i);
    e0 = _mm256_fmadd_pd(x, k0, e0), e1 = _mm256_fmadd_pd(x, k1, e1);
    e2 = _mm256_fmadd_pd(x, k2, e2);
  }
#define ATT_STORE3(p, x0, x1, x2)                                                                 \
  _mm256_storeu_pd(p, _mm256_mul_pd(scale, x0));                                                  \
  _mm256_storeu_pd(p + 4, _mm256_mul_pd(scale, x1));                                              \
  _mm256_storeu_pd(p + 8, _mm256_mul_pd(scale, x2));
  /* a row given twice (a short group) stores the same values twice */
  ATT_STORE3(l[0], a0, a1, a2) ATT_STORE3(l[1], b0, b1, b2)
  ATT_STORE3(l[2], c0, c1, c2) ATT_STORE3(l[3], e0, e1, e2)
#undef ATT_STORE3
}

/* acc[j][i] ← fma(w[j][s], v[s][i], acc[j][i]) for the four rows j, s ascending in [sa, sb)
 * (only the s with seg[s] = sid when seg is given): all four rows see the same keys. */
ATT_AVX2 static inline void attn_values4(const double *const w[4], double *const acc[4],
                                         const double *vp, size_t Tp, int d, int sa, int sb,
                                         const int32_t *seg, int32_t sid) {
  const double *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
  double *p0 = acc[0], *p1 = acc[1], *p2 = acc[2], *p3 = acc[3];
  int i0 = 0;
  for (; i0 + 12 <= d; i0 += 12) {
    const double *vc = vp + (size_t)i0 * Tp;
    __m256d a0 = _mm256_loadu_pd(p0 + i0), a1 = _mm256_loadu_pd(p0 + i0 + 4),
            a2 = _mm256_loadu_pd(p0 + i0 + 8), b0 = _mm256_loadu_pd(p1 + i0),
            b1 = _mm256_loadu_pd(p1 + i0 + 4), b2 = _mm256_loadu_pd(p1 + i0 + 8),
            c0 = _mm256_loadu_pd(p2 + i0), c1 = _mm256_loadu_pd(p2 + i0 + 4),
            c2 = _mm256_loadu_pd(p2 + i0 + 8), e0 = _mm256_loadu_pd(p3 + i0),
            e1 = _mm256_loadu_pd(p3 + i0 + 4), e2 = _mm256_loadu_pd(p3 + i0 + 8);
    for (int s = sa; s < sb; s++) {
      if (seg && seg[s] != sid) continue;
      const double *vr = vc + (size_t)s * 12;
      __m256d x0 = _mm256_loadu_pd(vr), x1 = _mm256_loadu_pd(vr + 4),
              x2 = _mm256_loadu_pd(vr + 8);
      ATT_IN_REGS(x0, x1, x2);
      __m256d ws = _mm256_broadcast_sd(w0 + s);
      a0 = _mm256_fmadd_pd(ws, x0, a0), a1 = _mm256_fmadd_pd(ws, x1, a1);
      a2 = _mm256_fmadd_pd(ws, x2, a2);
      ws = _mm256_broadcast_sd(w1 + s);
      b0 = _mm256_fmadd_pd(ws, x0, b0), b1 = _mm256_fmadd_pd(ws, x1, b1);
      b2 = _mm256_fmadd_pd(ws, x2, b2);
      ws = _mm256_broadcast_sd(w2 + s);
      c0 = _mm256_fmadd_pd(ws, x0, c0), c1 = _mm256_fmadd_pd(ws, x1, c1);
      c2 = _mm256_fmadd_pd(ws, x2, c2);
      ws = _mm256_broadcast_sd(w3 + s);
      e0 = _mm256_fmadd_pd(ws, x0, e0), e1 = _mm256_fmadd_pd(ws, x1, e1);
      e2 = _mm256_fmadd_pd(ws, x2, e2);
    }
    /* a row given twice (a short group) computed the same values twice */
    _mm256_storeu_pd(p0 + i0, a0), _mm256_storeu_pd(p0 + i0 + 4, a1);
    _mm256_storeu_pd(p0 + i0 + 8, a2), _mm256_storeu_pd(p1 + i0, b0);
    _mm256_storeu_pd(p1 + i0 + 4, b1), _mm256_storeu_pd(p1 + i0 + 8, b2);
    _mm256_storeu_pd(p2 + i0, c0), _mm256_storeu_pd(p2 + i0 + 4, c1);
    _mm256_storeu_pd(p2 + i0 + 8, c2), _mm256_storeu_pd(p3 + i0, e0);
    _mm256_storeu_pd(p3 + i0 + 4, e1), _mm256_storeu_pd(p3 + i0 + 8, e2);
  }
  for (; i0 < d; i0 += 4) {
    const double *vc = vp + (size_t)i0 * Tp;
    __m256d a = _mm256_loadu_pd(p0 + i0), b = _mm256_loadu_pd(p1 + i0),
            cc = _mm256_loadu_pd(p2 + i0), e = _mm256_loadu_pd(p3 + i0);
    for (int s = sa; s < sb; s++) {
      if (seg && seg[s] != sid) continue;
      const __m256d x = _mm256_loadu_pd(vc + (size_t)s * 4);
      a = _mm256_fmadd_pd(_mm256_broadcast_sd(w0 + s), x, a);
      b = _mm256_fmadd_pd(_mm256_broadcast_sd(w1 + s), x, b);
      cc = _mm256_fmadd_pd(_mm256_broadcast_sd(w2 + s), x, cc);
      e = _mm256_fmadd_pd(_mm256_broadcast_sd(w3 + s), x, e);
    }
    _mm256_storeu_pd(p0 + i0, a), _mm256_storeu_pd(p1 + i0, b);
    _mm256_storeu_pd(p2 + i0, cc), _mm256_storeu_pd(p3 + i0, e);
  }
}

/* The same for one row (query position t) over its allowed keys in [sa, sb). */
ATT_AVX2 static inline void attn_values1(const pg_attn_ctx *c, int t, const double *w,
                                         double *acc, const double *vp, size_t Tp, int sa,
                                         int sb) {
  const int d = c->d, d12 = d / 12 * 12;
  for (int i0 = 0; i0 < d; i0 += 4) {
    /* dims i0 … i0 + 3 lie in the chunk of dim c0, of width cw (attn_vidx) */
    const int c0 = i0 < d12 ? i0 / 12 * 12 : i0, cw = i0 < d12 ? 12 : 4;
    const double *vc = vp + (size_t)c0 * Tp + (i0 - c0);
    __m256d a = _mm256_loadu_pd(acc + i0);
    for (int s = sa; s < sb; s++) {
      if (c->seg && !attn_allowed(c, t, s)) continue;
      a = _mm256_fmadd_pd(_mm256_broadcast_sd(w + s), _mm256_loadu_pd(vc + (size_t)s * cw), a);
    }
    _mm256_storeu_pd(acc + i0, a);
  }
}

ATT_AVX2 static void attn_fwd_tiles_avx2(void *p, size_t b, size_t end) {
  const pg_attn_pack *a = p;
  const pg_attn_ctx *c = a->c;
  const int d = c->d, H = c->H, rep = c->H / c->Hkv, nr_max = ATT_QB * rep;
  const size_t Tp = a->Tp, dz = (size_t)d;
  /* row stride of L: rows 64 bytes off a multiple of 4 KiB apart */
  const size_t Ls = (Tp + 15) / 16 * 16 + 8;
  /* per row of a tile: logits then weights [Ls], accumulators [d], q in fp64 [d], denominator */
  double *buf = pg_engine_scratch_try(pg_engine_of(c->e), 1,
                                      (size_t)nr_max * (Ls + 2 * dz + 1) * sizeof *buf);
  if (!buf) {
    /* the plain rows of the same tiles */
    for (size_t u = b; u < end; u++) {
      int t0 = attn_balanced(u / (size_t)c->Hkv, a->nqb) * ATT_QB;
      int g = (int)(u % (size_t)c->Hkv);
      for (int t = t0; t < t0 + ATT_QB && t < c->T; t++) {
        size_t row = (size_t)t * (size_t)H + (size_t)(g * rep);
        attn_fwd_rows((void *)c, row, row + (size_t)rep);
      }
    }
    return;
  }
  double *L = buf, *A = buf + (size_t)nr_max * Ls, *Q = A + (size_t)nr_max * dz;
  double *dens = Q + (size_t)nr_max * dz;
  const __m256d scale = _mm256_set1_pd(c->scale);
  int slo = 0, slo_t0 = -1;
  for (size_t u = b; u < end; u++) {
    const int t0 = attn_balanced(u / (size_t)c->Hkv, a->nqb) * ATT_QB;
    const int g = (int)(u % (size_t)c->Hkv);
    const int t1 = c->T - t0 < ATT_QB ? c->T : t0 + ATT_QB, nr = (t1 - t0) * rep;
    const double *kt = a->kt + (size_t)g * dz * Tp, *vp = a->vp + (size_t)g * Tp * dz;
    /* row r of the tile is (t0 + r / rep, g·rep + r mod rep) */
    for (int r = 0; r < nr; r++) {
      const pg_real *q = attn_q(c, t0 + r / rep, g * rep + r % rep);
      for (int i = 0; i < d; i++) Q[(size_t)r * dz + i] = (double)q[i];
    }
    /* the first key any row of the tile may see (0 without segments; the same for every g) */
    if (t0 != slo_t0) {
      slo = t1, slo_t0 = t0;
      for (int t = t0; t < t1; t++) {
        int s = 0;
        while (s < slo && !attn_allowed(c, t, s)) s++;
        slo = s;
      }
    }
    /* each block of ATT_KB keys (read from L1 by every group after the first) against the
     * groups of four rows that may see it; a short group repeats its last row */
    for (int s0 = slo / ATT_KB * ATT_KB; s0 < t1; s0 += ATT_KB)
      for (int r = 0; r < nr; r += 4) {
        const int n4 = nr - r < 4 ? nr - r : 4, tl = t0 + (r + n4 - 1) / rep;
        if (s0 > tl) continue; /* no key of the block is ≤ t for any row of the group */
        const double *qr[4];
        double *l4[4];
        for (int j = 0; j < 4; j++) {
          const int rj = r + (j < n4 ? j : n4 - 1);
          qr[j] = Q + (size_t)rj * dz, l4[j] = L + (size_t)rj * Ls + s0;
        }
        attn_logits4(qr, l4, kt + (size_t)s0 * dz, d, scale);
      }
    for (int r = 0; r < nr; r++) {
      const int t = t0 + r / rep;
      double *l = L + (size_t)r * Ls, mx = -INFINITY;
      int s = slo;
      if (!c->seg) { /* the maximum is exact in any order (a NaN is skipped either way) */
        __m256d m4 = _mm256_set1_pd(-INFINITY);
        for (; s + 3 <= t; s += 4) m4 = _mm256_max_pd(_mm256_loadu_pd(l + s), m4);
        double m[4];
        _mm256_storeu_pd(m, m4);
        for (int j = 0; j < 4; j++)
          if (m[j] > mx) mx = m[j];
      }
      for (; s <= t; s++)
        if (attn_allowed(c, t, s) && l[s] > mx) mx = l[s];
      /* every key in [slo, t], sixteen at a time, then four, then one (those another segment
       * masks are not used) */
      const __m256d m4 = _mm256_set1_pd(mx);
      for (s = slo; s + 4 * PG_EXP_WAYS - 1 <= t; s += 4 * PG_EXP_WAYS) {
        __m256d x[PG_EXP_WAYS];
        for (int j = 0; j < PG_EXP_WAYS; j++)
          x[j] = _mm256_sub_pd(_mm256_loadu_pd(l + s + 4 * j), m4);
        pg_exp4_ways(x);
        for (int j = 0; j < PG_EXP_WAYS; j++) _mm256_storeu_pd(l + s + 4 * j, x[j]);
      }
      for (; s + 3 <= t; s += 4)
        _mm256_storeu_pd(l + s, pg_exp4(_mm256_sub_pd(_mm256_loadu_pd(l + s), m4)));
      for (; s <= t; s++) l[s] = pg_exp_inline(l[s] - mx);
      for (int i = 0; i < d; i++) A[(size_t)r * dz + i] = 0.0;
    }
    /* the denominators, s ascending; without segments four rows side by side (four chains of
     * dependent adds in flight instead of one) over the keys they all see, then each row's own */
    for (int r = 0; r < nr; r += 4) {
      const int n4 = nr - r < 4 ? nr - r : 4, tf = t0 + r / rep;
      const double *w[4];
      for (int j = 0; j < 4; j++) w[j] = L + (size_t)(r + (j < n4 ? j : n4 - 1)) * Ls;
      double d0 = 0.0, d1 = 0.0, d2 = 0.0, d3 = 0.0;
      if (!c->seg)
        for (int s = slo; s <= tf; s++) d0 += w[0][s], d1 += w[1][s], d2 += w[2][s], d3 += w[3][s];
      double ds[4] = {d0, d1, d2, d3};
      for (int j = 0; j < n4; j++) {
        const int t = t0 + (r + j) / rep;
        if (!c->seg)
          for (int s = tf + 1; s <= t; s++) ds[j] += w[j][s];
        else
          for (int s = slo; s <= t; s++)
            if (attn_allowed(c, t, s)) ds[j] += w[j][s];
        dens[r + j] = ds[j];
      }
    }
    for (int s0 = slo; s0 < t1; s0 += ATT_SB) {
      for (int r = 0; r < nr; r += 4) {
        const int n4 = nr - r < 4 ? nr - r : 4;
        const int tf = t0 + r / rep; /* the group's first position: its rows' t ascend */
        const double *wr[4];
        double *ar[4];
        int same = 1; /* do the group's rows share a segment? */
        for (int j = 0; j < 4; j++) {
          const int rj = r + (j < n4 ? j : n4 - 1);
          wr[j] = L + (size_t)rj * Ls, ar[j] = A + (size_t)rj * dz;
          if (c->seg && c->seg[t0 + rj / rep] != c->seg[tf]) same = 0;
        }
        /* keys every row of the group may see: s ≤ tf (and in tf's segment) */
        int sc = s0;
        if (same) {
          sc = tf + 1 < s0 + ATT_SB ? tf + 1 : s0 + ATT_SB;
          if (sc > s0)
            attn_values4(wr, ar, vp, Tp, d, s0, sc, c->seg, c->seg ? c->seg[tf] : 0);
          else
            sc = s0;
        }
        /* then each row alone, over the keys of the block only it (and later rows) may see */
        for (int j = 0; j < n4; j++) {
          const int t = t0 + (r + j) / rep, se = t + 1 < s0 + ATT_SB ? t + 1 : s0 + ATT_SB;
          if (se > sc) attn_values1(c, t, wr[j], ar[j], vp, Tp, sc, se);
        }
      }
    }
    for (int r = 0; r < nr; r++) {
      pg_real *o = c->out + ((size_t)(t0 + r / rep) * (size_t)H + (size_t)(g * rep + r % rep)) * dz;
      const double *acc = A + (size_t)r * dz;
      const __m256d dv = _mm256_set1_pd(dens[r]);
      for (int i0 = 0; i0 < d; i0 += 4)
        _mm_storeu_ps(o + i0, _mm256_cvtpd_ps(_mm256_div_pd(_mm256_loadu_pd(acc + i0), dv)));
    }
  }
}
#endif

static void cpu_attention_fwd(const pg_ops *e, pg_real *out, const pg_real *q, const pg_real *k,
                              const pg_real *v, const int32_t *seg, int T, int H, int Hkv, int d,
                              float scale) {
  pg_attn_ctx c = {.e = e, .out = out, .q = q, .k = k, .v = v, .seg = seg, .T = T, .H = H,
                   .Hkv = Hkv,
                   .d = d, .scale = (double)scale};
#if defined(MM_HAVE_AVX2) && !defined(PG_REAL_F64)
  if (d % 4 == 0 && T > 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    pg_attn_pack a = {.c = &c, .Tp = ((size_t)T + ATT_KB - 1) / ATT_KB * ATT_KB,
                      .nqb = (T + ATT_QB - 1) / ATT_QB};
    size_t n = (size_t)Hkv * a.Tp * (size_t)d;
    a.kt = pg_engine_scratch_try(pg_engine_of(e), 0, 2 * n * sizeof *a.kt);
    if (a.kt) {
      a.vp = a.kt + n;
      pg_parallel_for((size_t)Hkv, attn_pack_groups, &a, e->nthreads);
      /* the units' costs differ (the causal mask): small chunks, claimed as threads free up */
      pg_parallel_for_grain((size_t)a.nqb * (size_t)Hkv, 4 * (size_t)Hkv, attn_fwd_tiles_avx2, &a,
                            e->nthreads);
      return;
    }
  }
#endif
  pg_parallel_for((size_t)T * (size_t)H, attn_fwd_rows, &c, e->nthreads);
}

static void cpu_attention_bf16_fwd(const pg_ops *e, pg_real *out, const pg_real *q,
                                   const pg_real *k, const pg_real *v, const int32_t *seg, int T,
                                   int H, int Hkv, int d, float scale) {
  pg_attn_ctx c = {.e = e, .out = out, .q = q, .k = k, .v = v, .seg = seg, .T = T, .H = H,
                   .Hkv = Hkv,
                   .d = d, .scale = (double)scale, .bf16 = 1};
  pg_parallel_for((size_t)T * (size_t)H, attn_fwd_rows, &c, e->nthreads);
}

/* Backward pass A, rows (t, h): the softmax statistics, and
 * dq[t,h] += scale · Σ_s p_s (dp_s − D) k_s with dp_s = dout·v_s, D = Σ_s p_s dp_s. */
static void attn_bwd_q_rows(void *p, size_t b, size_t end) {
  const pg_attn_ctx *c = p;
  double acc[PG_OPS_MAX_HEAD_DIM];
  /* per row: the logits and dp_s = dout·v_s, each computed once (same values as recomputing) */
  double *l = pg_engine_scratch_try(pg_engine_of(c->e), 1, 2 * (size_t)c->T * sizeof *l);
  double *dp = l ? l + c->T : NULL;
  for (size_t row = b; row < end; row++) {
    int t = (int)(row / (size_t)c->H), h = (int)(row % (size_t)c->H);
    int g = h / (c->H / c->Hkv);
    const pg_real *dO = c->dout + row * (size_t)c->d;
    double mx = -INFINITY, den = 0.0, dsum = 0.0;
    if (l) {
      attn_logits(c, t, h, l);
      for (int s = 0; s <= t; s++)
        if (attn_allowed(c, t, s)) {
          if (l[s] > mx) mx = l[s];
          dp[s] = attn_dot(dO, attn_kv(c, c->v, s, g), c->d);
        }
    } else {
      mx = attn_max(c, t, h);
    }
    for (int s = 0; s <= t; s++) {
      if (!attn_allowed(c, t, s)) continue;
      double w = sm_exp((l ? l[s] : attn_score(c, t, h, s)) - mx);
      den += w;
      dsum += w * (l ? dp[s] : attn_dot(dO, attn_kv(c, c->v, s, g), c->d));
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
      double pr = sm_exp((l ? l[s] : attn_score(c, t, h, s)) - mx) / den;
      double ds = pr * ((l ? dp[s] : attn_dot(dO, attn_kv(c, c->v, s, g), c->d)) - D);
      const pg_real *ks = attn_kv(c, c->k, s, g);
      for (int i = 0; i < c->d; i++) acc[i] += ds * (double)ks[i];
    }
    pg_real *dq = c->dq + row * (size_t)c->d;
    for (int i = 0; i < c->d; i++) dq[i] = (pg_real)((double)dq[i] + c->scale * acc[i]);
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
    const pg_real *vs = attn_kv(c, c->v, s, g);
    for (int i = 0; i < c->d; i++) ak[i] = av[i] = 0.0;
    const pg_real *ks = attn_kv(c, c->k, s, g);
    for (int h = g * rep; h < (g + 1) * rep; h++) {
      int t = s;
      while (t < c->T) {
        /* the logits q_t·k_s and dout_t·v_s of up to four allowed queries at once: independent
         * sums, each over i ascending as attn_score and attn_dot sum, so the same values */
        int tt[4], n = 0;
        while (n < 4 && t < c->T) {
          if (attn_allowed(c, t, s)) tt[n++] = t;
          t++;
        }
        double lq[4] = {0, 0, 0, 0}, dp[4] = {0, 0, 0, 0};
        const pg_real *qp[4], *dOp[4];
        for (int j = 0; j < n; j++) {
          qp[j] = attn_q(c, tt[j], h);
          dOp[j] = c->dout + ((size_t)tt[j] * (size_t)c->H + (size_t)h) * (size_t)c->d;
        }
        if (n == 4) {
          for (int i = 0; i < c->d; i++) {
            double ki = (double)ks[i], vi = (double)vs[i];
            lq[0] += (double)qp[0][i] * ki;
            lq[1] += (double)qp[1][i] * ki;
            lq[2] += (double)qp[2][i] * ki;
            lq[3] += (double)qp[3][i] * ki;
            dp[0] += (double)dOp[0][i] * vi;
            dp[1] += (double)dOp[1][i] * vi;
            dp[2] += (double)dOp[2][i] * vi;
            dp[3] += (double)dOp[3][i] * vi;
          }
        } else {
          for (int j = 0; j < n; j++) {
            lq[j] = attn_dot(qp[j], ks, c->d);
            dp[j] = attn_dot(dOp[j], vs, c->d);
          }
        }
        for (int j = 0; j < n; j++) {
          const double *st = c->stats + ((size_t)tt[j] * (size_t)c->H + (size_t)h) * 3;
          double pr = sm_exp(c->scale * lq[j] - st[0]) / st[1];
          double ds = pr * (dp[j] - st[2]);
          for (int i = 0; i < c->d; i++) {
            ak[i] += ds * (double)qp[j][i];
            av[i] += pr * (double)dOp[j][i];
          }
        }
      }
    }
    size_t off = row * (size_t)c->d;
    if (c->dk)
      for (int i = 0; i < c->d; i++)
        c->dk[off + i] = (pg_real)((double)c->dk[off + i] + c->scale * ak[i]);
    if (c->dv)
      for (int i = 0; i < c->d; i++) c->dv[off + i] = (pg_real)((double)c->dv[off + i] + av[i]);
  }
}

static void cpu_attention_bwd(const pg_ops *e, pg_real *dq, pg_real *dk, pg_real *dv,
                              const pg_real *dout, const pg_real *q, const pg_real *k,
                              const pg_real *v, const int32_t *seg, int T, int H, int Hkv, int d,
                              float scale) {
  size_t rows = (size_t)T * (size_t)H;
  double *stats = pg_engine_scratch(pg_engine_of(e), 0, (rows ? rows : 1) * 3 * sizeof *stats);
  if (!stats) return;
  pg_attn_ctx c = {.e = e, .dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v,
                   .seg = seg, .T = T, .H = H, .Hkv = Hkv, .d = d, .scale = (double)scale,
                   .stats = stats};
  pg_parallel_for(rows, attn_bwd_q_rows, &c, e->nthreads);
  if (dk || dv) pg_parallel_for((size_t)T * (size_t)Hkv, attn_bwd_kv_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * elementwise ops: activations, gates, softcap, axpy */

typedef struct {
  pg_real *y, *dx, *dg;
  const pg_real *x, *dy, *g;
  double a;
  int D; /* rowgate only */
} pg_ew_ctx;

/* x > 0 ? x : +0 as a mask over the bits: the loops vectorize and have no branch to mispredict
 * on signs that are random (the compiler keeps a select on floats as a branch) */
static inline pg_real ew_relu(pg_real x) {
#ifdef PG_REAL_F64
  uint64_t u, m = -(uint64_t)(x > 0.0);
#else
  uint32_t u, m = -(uint32_t)(x > 0.0f);
#endif
  memcpy(&u, &x, sizeof u);
  u &= m;
  memcpy(&x, &u, sizeof x);
  return x;
}

static void relu2_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  const pg_real *restrict xs = c->x;
  pg_real *restrict y = c->y; /* locals: a store through c->y could otherwise alias c */
  for (size_t i = b; i < end; i++) {
    double x = (double)ew_relu(xs[i]);
    y[i] = (pg_real)(x * x);
  }
}

static void relu2_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = (double)ew_relu(c->x[i]);
    c->dx[i] = (pg_real)((double)c->dx[i] + (double)c->dy[i] * 2.0 * x);
  }
}

static void leaky2_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = (double)c->x[i], u = x > 0.0 ? x : c->a * x;
    c->y[i] = (pg_real)(u * u);
  }
}

static void leaky2_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double x = (double)c->x[i], du = x > 0.0 ? 2.0 * x : 2.0 * c->a * c->a * x;
    c->dx[i] = (pg_real)((double)c->dx[i] + (double)c->dy[i] * du);
  }
}

static double sigmoid(double z) {
  return z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

static void rowgate_fwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double sg = sigmoid((double)c->g[r]);
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++)
      c->y[j] = (pg_real)((double)c->x[j] * sg);
  }
}

static void rowgate_bwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double sg = sigmoid((double)c->g[r]), dot = 0.0;
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++) {
      dot += (double)c->dy[j] * (double)c->x[j];
      if (c->dx) c->dx[j] = (pg_real)((double)c->dx[j] + (double)c->dy[j] * sg);
    }
    if (c->dg) c->dg[r] = (pg_real)((double)c->dg[r] + dot * sg * (1.0 - sg));
  }
}

static void softcap_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (pg_real)(c->a * tanh((double)c->x[i] / c->a));
}

static void softcap_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double th = tanh((double)c->x[i] / c->a);
    c->dx[i] = (pg_real)((double)c->dx[i] + (double)c->dy[i] * (1.0 - th * th));
  }
}

static void axpy_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (pg_real)((double)c->y[i] + c->a * (double)c->x[i]);
}

static void cpu_relu2_fwd(const pg_ops *e, pg_real *y, const pg_real *x, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x};
  pg_parallel_for(n, relu2_fwd_range, &c, e->nthreads);
}

static void cpu_relu2_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x,
                          size_t n) {
  pg_ew_ctx c = {.dx = dx, .dy = dy, .x = x};
  pg_parallel_for(n, relu2_bwd_range, &c, e->nthreads);
}

static void cpu_leaky_relu2_fwd(const pg_ops *e, pg_real *y, const pg_real *x, size_t n, float s) {
  pg_ew_ctx c = {.y = y, .x = x, .a = (double)s};
  pg_parallel_for(n, leaky2_fwd_range, &c, e->nthreads);
}

static void cpu_leaky_relu2_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x,
                                size_t n, float s) {
  pg_ew_ctx c = {.dx = dx, .dy = dy, .x = x, .a = (double)s};
  pg_parallel_for(n, leaky2_bwd_range, &c, e->nthreads);
}

static void cpu_rowgate_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *g,
                            size_t R, int D) {
  pg_ew_ctx c = {.y = y, .x = x, .g = g, .D = D};
  pg_parallel_for((size_t)R, rowgate_fwd_rows, &c, e->nthreads);
}

static void cpu_rowgate_bwd(const pg_ops *e, pg_real *dx, pg_real *dg, const pg_real *dy,
                            const pg_real *x, const pg_real *g, size_t R, int D) {
  pg_ew_ctx c = {.dx = dx, .dg = dg, .dy = dy, .x = x, .g = g, .D = D};
  pg_parallel_for((size_t)R, rowgate_bwd_rows, &c, e->nthreads);
}

static void cpu_softcap_fwd(const pg_ops *e, pg_real *y, const pg_real *z, size_t n, float cap) {
  pg_ew_ctx c = {.y = y, .x = z, .a = (double)cap};
  pg_parallel_for(n, softcap_fwd_range, &c, e->nthreads);
}

static void cpu_softcap_bwd(const pg_ops *e, pg_real *dz, const pg_real *dy, const pg_real *z,
                            size_t n, float cap) {
  pg_ew_ctx c = {.dx = dz, .dy = dy, .x = z, .a = (double)cap};
  pg_parallel_for(n, softcap_bwd_range, &c, e->nthreads);
}

static void cpu_axpy(const pg_ops *e, pg_real *y, float a, const pg_real *x, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x, .a = (double)a};
  pg_parallel_for(n, axpy_range, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * chanmul: x[R, C] ⊙ s[C] broadcast over rows */

typedef struct {
  pg_real *y, *dx, *ds;
  const pg_real *x, *dy, *s;
  size_t R;
  int C;
} pg_cm_ctx;

static void cm_fwd_rows(void *p, size_t b, size_t end) {
  const pg_cm_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      c->y[i] = (pg_real)((double)c->x[i] * (double)c->s[j]);
    }
}

static void cm_bwd_dx_rows(void *p, size_t b, size_t end) {
  const pg_cm_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      c->dx[i] = (pg_real)((double)c->dx[i] + (double)c->dy[i] * (double)c->s[j]);
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
    for (size_t r = 0; r < c->R; r++) {
      size_t off = (size_t)r * (size_t)c->C + (size_t)j0;
      for (int j = 0; j < jn; j++) acc[j] += (double)c->dy[off + j] * (double)c->x[off + j];
    }
    for (int j = 0; j < jn; j++) c->ds[j0 + j] = (pg_real)((double)c->ds[j0 + j] + acc[j]);
  }
}

static void cpu_chanmul_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *s,
                            size_t R, int C) {
  pg_cm_ctx c = {.y = y, .x = x, .s = s, .R = R, .C = C};
  pg_parallel_for((size_t)R, cm_fwd_rows, &c, e->nthreads);
}

static void cpu_chanmul_bwd(const pg_ops *e, pg_real *dx, pg_real *ds, const pg_real *dy,
                            const pg_real *x, const pg_real *s, size_t R, int C) {
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
  pg_real *out, *dy, *dv;
  const pg_real *y, *v, *dout;
  int H, Hkv, d;
} pg_xsa_ctx;

/* v̂ of one value row into vh[d] (fp64); returns the clamped norm max(‖v‖, 1e-12) */
static double xsa_unit(const pg_real *v, int d, double *vh) {
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
    const pg_real *y = c->y + row * (size_t)c->d;
    pg_real *o = c->out + row * (size_t)c->d;
    double a = 0.0;
    for (int i = 0; i < c->d; i++) a += (double)y[i] * vh[i];
    for (int i = 0; i < c->d; i++) o[i] = (pg_real)((double)y[i] - a * vh[i]);
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
    const pg_real *v = c->v + row * (size_t)c->d;
    double nrm = xsa_unit(v, c->d, vh);
    for (int i = 0; i < c->d; i++) gv[i] = 0.0;
    for (int h = g * rep; h < (g + 1) * rep; h++) {
      size_t off = (t * (size_t)c->H + (size_t)h) * (size_t)c->d;
      const pg_real *y = c->y + off, *dO = c->dout + off;
      double a = 0.0, bb = 0.0;
      for (int i = 0; i < c->d; i++) {
        a += (double)y[i] * vh[i];
        bb += (double)dO[i] * vh[i];
      }
      for (int i = 0; i < c->d; i++) gv[i] -= bb * (double)y[i] + a * (double)dO[i];
      if (c->dy)
        for (int i = 0; i < c->d; i++)
          c->dy[off + i] = (pg_real)((double)c->dy[off + i] + ((double)dO[i] - bb * vh[i]));
    }
    if (!c->dv) continue;
    pg_real *dv = c->dv + row * (size_t)c->d;
    if (nrm > PG_OPS_XSA_EPS) {
      double gd = 0.0;
      for (int i = 0; i < c->d; i++) gd += gv[i] * vh[i];
      for (int i = 0; i < c->d; i++) dv[i] = (pg_real)((double)dv[i] + (gv[i] - gd * vh[i]) / nrm);
    } else {
      for (int i = 0; i < c->d; i++) dv[i] = (pg_real)((double)dv[i] + gv[i] / nrm);
    }
  }
}

static void cpu_xsa_fwd(const pg_ops *e, pg_real *out, const pg_real *y, const pg_real *v, int T,
                        int H, int Hkv, int d) {
  pg_xsa_ctx c = {.out = out, .y = y, .v = v, .H = H, .Hkv = Hkv, .d = d};
  pg_parallel_for((size_t)T * (size_t)H, xsa_fwd_rows, &c, e->nthreads);
}

static void cpu_xsa_bwd(const pg_ops *e, pg_real *dy, pg_real *dv, const pg_real *dout,
                        const pg_real *y, const pg_real *v, int T, int H, int Hkv, int d) {
  pg_xsa_ctx c = {.dy = dy, .dv = dv, .dout = dout, .y = y, .v = v, .H = H, .Hkv = Hkv, .d = d};
  pg_parallel_for((size_t)T * (size_t)Hkv, xsa_bwd_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * chanlerp, rowmul, tanh: the elementwise pieces of the model's gates, lerps and readout */

typedef struct {
  pg_real *y, *da, *db, *dg;
  const pg_real *a, *b, *g, *dy;
  size_t R;
  int C;
} pg_lerp_ctx;

static void lerp_fwd_rows(void *p, size_t b, size_t end) {
  const pg_lerp_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      double sg = sigmoid((double)c->g[j]);
      c->y[i] = (pg_real)(sg * (double)c->a[i] + (1.0 - sg) * (double)c->b[i]);
    }
}

static void lerp_bwd_ab_rows(void *p, size_t b, size_t end) {
  const pg_lerp_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->C; j++) {
      size_t i = r * (size_t)c->C + (size_t)j;
      double sg = sigmoid((double)c->g[j]), dy = (double)c->dy[i];
      if (c->da) c->da[i] = (pg_real)((double)c->da[i] + sg * dy);
      if (c->db) c->db[i] = (pg_real)((double)c->db[i] + (1.0 - sg) * dy);
    }
}

/* column blocks: dg[c] += σ'(g[c]) · Σ_r dy[r,c]·(a[r,c] − b[r,c]) (r ascending) */
static void lerp_bwd_g_blocks(void *p, size_t b, size_t end) {
  const pg_lerp_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t jb = b; jb < end; jb++) {
    int j0 = (int)jb * PG_OPS_KBLOCK;
    int jn = c->C - j0 < PG_OPS_KBLOCK ? c->C - j0 : PG_OPS_KBLOCK;
    for (int j = 0; j < jn; j++) acc[j] = 0.0;
    for (size_t r = 0; r < c->R; r++) {
      size_t off = (size_t)r * (size_t)c->C + (size_t)j0;
      for (int j = 0; j < jn; j++)
        acc[j] += (double)c->dy[off + j] * ((double)c->a[off + j] - (double)c->b[off + j]);
    }
    for (int j = 0; j < jn; j++) {
      double sg = sigmoid((double)c->g[j0 + j]);
      c->dg[j0 + j] = (pg_real)((double)c->dg[j0 + j] + acc[j] * sg * (1.0 - sg));
    }
  }
}

static void cpu_chanlerp_fwd(const pg_ops *e, pg_real *y, const pg_real *a, const pg_real *b,
                             const pg_real *g, size_t R, int C) {
  pg_lerp_ctx c = {.y = y, .a = a, .b = b, .g = g, .R = R, .C = C};
  pg_parallel_for((size_t)R, lerp_fwd_rows, &c, e->nthreads);
}

static void cpu_chanlerp_bwd(const pg_ops *e, pg_real *da, pg_real *db, pg_real *dg,
                             const pg_real *dy, const pg_real *a, const pg_real *b,
                             const pg_real *g, size_t R, int C) {
  pg_lerp_ctx c = {.da = da, .db = db, .dg = dg, .dy = dy, .a = a, .b = b, .g = g, .R = R,
                   .C = C};
  if (da || db) pg_parallel_for((size_t)R, lerp_bwd_ab_rows, &c, e->nthreads);
  if (dg)
    pg_parallel_for(((size_t)C + PG_OPS_KBLOCK - 1) / PG_OPS_KBLOCK, lerp_bwd_g_blocks, &c,
                    e->nthreads);
}

static void rowmul_fwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double s = (double)c->g[r];
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++)
      c->y[j] = (pg_real)((double)c->x[j] * s);
  }
}

static void rowmul_bwd_rows(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t r = b; r < end; r++) {
    double s = (double)c->g[r], dot = 0.0;
    for (size_t j = r * (size_t)c->D; j < (r + 1) * (size_t)c->D; j++) {
      dot += (double)c->dy[j] * (double)c->x[j];
      if (c->dx) c->dx[j] = (pg_real)((double)c->dx[j] + (double)c->dy[j] * s);
    }
    if (c->dg) c->dg[r] = (pg_real)((double)c->dg[r] + dot);
  }
}

static void cpu_rowmul_fwd(const pg_ops *e, pg_real *y, const pg_real *x, const pg_real *s,
                           size_t R, int D) {
  pg_ew_ctx c = {.y = y, .x = x, .g = s, .D = D};
  pg_parallel_for((size_t)R, rowmul_fwd_rows, &c, e->nthreads);
}

static void cpu_rowmul_bwd(const pg_ops *e, pg_real *dx, pg_real *ds, const pg_real *dy,
                           const pg_real *x, const pg_real *s, size_t R, int D) {
  pg_ew_ctx c = {.dx = dx, .dg = ds, .dy = dy, .x = x, .g = s, .D = D};
  pg_parallel_for((size_t)R, rowmul_bwd_rows, &c, e->nthreads);
}

static void tanh_fwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (pg_real)tanh((double)c->x[i]);
}

static void tanh_bwd_range(void *p, size_t b, size_t end) {
  const pg_ew_ctx *c = p;
  for (size_t i = b; i < end; i++) {
    double th = tanh((double)c->x[i]);
    c->dx[i] = (pg_real)((double)c->dx[i] + (double)c->dy[i] * (1.0 - th * th));
  }
}

static void cpu_tanh_fwd(const pg_ops *e, pg_real *y, const pg_real *x, size_t n) {
  pg_ew_ctx c = {.y = y, .x = x};
  pg_parallel_for(n, tanh_fwd_range, &c, e->nthreads);
}

static void cpu_tanh_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, const pg_real *x,
                         size_t n) {
  pg_ew_ctx c = {.dx = dx, .dy = dy, .x = x};
  pg_parallel_for(n, tanh_bwd_range, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * embed (row gather and its scatter-add), column slices, group expand, copy, zero */

typedef struct {
  pg_real *y;
  const pg_real *x;
  const int32_t *ids;
  const int32_t *start, *order; /* embed_bwd: tokens of row v are order[start[v] .. start[v+1]) */
  int D, C, c0, w, r;
} pg_gather_ctx;

static int ids_check(const int32_t *ids, int T, int V) {
  for (int t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= V) return PG_E_TOKEN_RANGE;
  return PG_OK;
}

static void embed_fwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  for (size_t t = b; t < end; t++) {
    const pg_real *src = c->x + (size_t)c->ids[t] * (size_t)c->D;
    pg_real *dst = c->y + t * (size_t)c->D;
    for (int i = 0; i < c->D; i++) dst[i] = src[i];
  }
}

static void embed_bwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  double acc[PG_OPS_KBLOCK];
  for (size_t v = b; v < end; v++) {
    int32_t s0 = c->start[v], s1 = c->start[v + 1];
    if (s0 == s1) continue;
    pg_real *dst = c->y + v * (size_t)c->D;
    for (int i0 = 0; i0 < c->D; i0 += PG_OPS_KBLOCK) {
      int in = c->D - i0 < PG_OPS_KBLOCK ? c->D - i0 : PG_OPS_KBLOCK;
      for (int j = 0; j < in; j++) acc[j] = 0.0;
      for (int32_t k = s0; k < s1; k++) {
        const pg_real *src = c->x + (size_t)c->order[k] * (size_t)c->D + (size_t)i0;
        for (int j = 0; j < in; j++) acc[j] += (double)src[j];
      }
      for (int j = 0; j < in; j++) dst[i0 + j] = (pg_real)((double)dst[i0 + j] + acc[j]);
    }
  }
}

/* An id outside [0, V) is recorded as the engine's error (the first one wins). */
static int ids_bad(const pg_ops *e, const int32_t *ids, int T, int V, const char *what) {
  int st = ids_check(ids, T, V);
  if (st)
    pg_engine_fail(pg_engine_of(e), st, "%s: an id is outside the table's %d rows", what, V);
  return st;
}

static void cpu_embed_fwd(const pg_ops *e, pg_real *y, const pg_real *table, const int32_t *ids,
                          int T, int D, int V) {
  if (ids_bad(e, ids, T, V, "embed")) return;
  pg_gather_ctx c = {.y = y, .x = table, .ids = ids, .D = D};
  pg_parallel_for((size_t)T, embed_fwd_rows, &c, e->nthreads);
}

/* A counting sort lists each row's tokens in ascending t; rows are then independent. */
static void cpu_embed_bwd(const pg_ops *e, pg_real *dtable, const pg_real *dy, const int32_t *ids,
                          int T, int D, int V) {
  if (ids_bad(e, ids, T, V, "embed backward")) return;
  /* start[V + 1], fill[V], order[T] in one piece of scratch */
  size_t n = 2 * (size_t)V + 1 + (T > 0 ? (size_t)T : 1);
  int32_t *start = pg_engine_scratch(pg_engine_of(e), 0, n * sizeof *start);
  if (!start) return;
  int32_t *fill = start + (size_t)V + 1, *order = fill + V;
  memset(start, 0, ((size_t)V + 1) * sizeof *start);
  for (int t = 0; t < T; t++) start[ids[t] + 1]++;
  for (int v = 0; v < V; v++) start[v + 1] += start[v];
  for (int v = 0; v < V; v++) fill[v] = start[v];
  for (int t = 0; t < T; t++) order[fill[ids[t]]++] = t;
  pg_gather_ctx c = {.y = dtable, .x = dy, .start = start, .order = order, .D = D};
  pg_parallel_for((size_t)V, embed_bwd_rows, &c, e->nthreads);
}

static void cols_fwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->w; j++)
      c->y[r * (size_t)c->w + (size_t)j] = c->x[r * (size_t)c->C + (size_t)(c->c0 + j)];
}

static void cols_bwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  for (size_t r = b; r < end; r++)
    for (int j = 0; j < c->w; j++) {
      pg_real *dx = c->y + r * (size_t)c->C + (size_t)(c->c0 + j);
      *dx = (pg_real)((double)*dx + (double)c->x[r * (size_t)c->w + (size_t)j]);
    }
}

static void cpu_cols_fwd(const pg_ops *e, pg_real *y, const pg_real *x, size_t R, int C, int c0,
                         int w) {
  pg_gather_ctx c = {.y = y, .x = x, .C = C, .c0 = c0, .w = w};
  pg_parallel_for((size_t)R, cols_fwd_rows, &c, e->nthreads);
}

static void cpu_cols_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, size_t R, int C, int c0,
                         int w) {
  pg_gather_ctx c = {.y = dx, .x = dy, .C = C, .c0 = c0, .w = w};
  pg_parallel_for((size_t)R, cols_bwd_rows, &c, e->nthreads);
}

static void expand_fwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  for (size_t g = b; g < end; g++)
    for (int j = 0; j < c->r; j++) c->y[g * (size_t)c->r + (size_t)j] = c->x[g];
}

static void expand_bwd_rows(void *p, size_t b, size_t end) {
  const pg_gather_ctx *c = p;
  for (size_t g = b; g < end; g++) {
    double acc = 0.0;
    for (int j = 0; j < c->r; j++) acc += (double)c->x[g * (size_t)c->r + (size_t)j];
    c->y[g] = (pg_real)((double)c->y[g] + acc);
  }
}

static void cpu_expand_fwd(const pg_ops *e, pg_real *y, const pg_real *x, int G, int r) {
  pg_gather_ctx c = {.y = y, .x = x, .r = r};
  pg_parallel_for((size_t)G, expand_fwd_rows, &c, e->nthreads);
}

static void cpu_expand_bwd(const pg_ops *e, pg_real *dx, const pg_real *dy, int G, int r) {
  pg_gather_ctx c = {.y = dx, .x = dy, .r = r};
  pg_parallel_for((size_t)G, expand_bwd_rows, &c, e->nthreads);
}

static void cpu_copy(const pg_ops *e, pg_real *y, const pg_real *x, size_t n) {
  (void)e;
  if (n) memmove(y, x, n * sizeof *y);
}

/* bf16 rounding (spec/engine.md §4.17): the fp32 value rounded to the nearest bfloat16 (the fp32
 * with the low 16 bits zero), ties to even; ±Inf stays, a finite value past the largest bf16
 * becomes ±Inf as RNE makes it, and a NaN stays a NaN (quieted, sign and top payload kept): a
 * NaN's payload may sit entirely in the low 16 bits, which a plain truncation would turn into Inf.
 * In the fp64 test build the value is first rounded to fp32. */
float pg_bf16_round(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    u = (u | 0x00400000u) & 0xffff0000u;
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
  }
  memcpy(&v, &u, sizeof v);
  return v;
}

typedef struct {
  pg_real *y;
  const pg_real *x;
} pg_bf16_ctx;

static void bf16_range(void *p, size_t b, size_t end) {
  const pg_bf16_ctx *c = p;
  for (size_t i = b; i < end; i++) c->y[i] = (pg_real)pg_bf16_round((float)c->x[i]);
}

static void cpu_round_bf16(const pg_ops *e, pg_real *y, const pg_real *x, size_t n) {
  pg_bf16_ctx c = {.y = y, .x = x};
  pg_parallel_for(n, bf16_range, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * cross-entropy: logits[T, V], targets[T] */

typedef struct {
  double *nll;
  pg_real *dl;
  const pg_real *logits, *dnll;
  const int32_t *tg;
  int V;
} pg_ce_ctx;

/* max and Σ_v e^(l_v − max) of one row */
static void ce_row_stats(const pg_real *l, int V, double *mx, double *sum) {
  double m = -INFINITY, s = 0.0;
  for (int v = 0; v < V; v++)
    if ((double)l[v] > m) m = (double)l[v];
  for (int v = 0; v < V; v++) s += sm_exp((double)l[v] - m);
  *mx = m;
  *sum = s;
}

static void ce_fwd_rows(void *p, size_t b, size_t end) {
  const pg_ce_ctx *c = p;
  for (size_t t = b; t < end; t++) {
    const pg_real *l = c->logits + t * (size_t)c->V;
    double mx, sum;
    ce_row_stats(l, c->V, &mx, &sum);
    c->nll[t] = mx + log(sum) - (double)l[c->tg[t]];
  }
}

static void ce_bwd_rows(void *p, size_t b, size_t end) {
  const pg_ce_ctx *c = p;
  for (size_t t = b; t < end; t++) {
    const pg_real *l = c->logits + t * (size_t)c->V;
    pg_real *dl = c->dl + t * (size_t)c->V;
    double g = c->dnll ? (double)c->dnll[t] : 1.0, mx, sum;
    ce_row_stats(l, c->V, &mx, &sum);
    for (int v = 0; v < c->V; v++) {
      double pr = sm_exp((double)l[v] - mx) / sum - (v == c->tg[t] ? 1.0 : 0.0);
      dl[v] = (pg_real)((double)dl[v] + g * pr);
    }
  }
}

static int ce_check_targets(const int32_t *tg, int T, int V) {
  for (int t = 0; t < T; t++)
    if (tg[t] < 0 || tg[t] >= V) return PG_E_TOKEN_RANGE;
  return PG_OK;
}

static void cpu_ce_fwd(const pg_ops *e, double *nll, const pg_real *logits,
                       const int32_t *targets, int T, int V) {
  if (ce_check_targets(targets, T, V)) {
    pg_engine_fail(pg_engine_of(e), PG_E_TOKEN_RANGE,
                   "a target id is outside the vocabulary of %d", V);
    return;
  }
  pg_ce_ctx c = {.nll = nll, .logits = logits, .tg = targets, .V = V};
  pg_parallel_for((size_t)T, ce_fwd_rows, &c, e->nthreads);
}

static void cpu_ce_bwd(const pg_ops *e, pg_real *dlogits, const pg_real *dnll,
                       const pg_real *logits, const int32_t *targets, int T, int V) {
  if (ce_check_targets(targets, T, V)) {
    pg_engine_fail(pg_engine_of(e), PG_E_TOKEN_RANGE,
                   "a target id is outside the vocabulary of %d", V);
    return;
  }
  pg_ce_ctx c = {.dl = dlogits, .dnll = dnll, .logits = logits, .tg = targets, .V = V};
  pg_parallel_for((size_t)T, ce_bwd_rows, &c, e->nthreads);
}

/* ---------------------------------------------------------------------------------------------
 * grouped products (per-row LoRA): each group by the matmul above */

static void cpu_matmul_grouped_fwd(const pg_ops *e, pg_real *y, const pg_real *x,
                                   const pg_real *w, const int32_t *widx, size_t wstride, int G,
                                   int M, int N, int K) {
  for (int g = 0; g < G; g++)
    cpu_matmul_fwd(e, y + (size_t)g * (size_t)M * (size_t)N, x + (size_t)g * (size_t)M * (size_t)K,
                   w + (size_t)widx[g] * wstride, M, N, K);
}

static void cpu_matmul_grouped_bwd(const pg_ops *e, pg_real *dx, pg_real *dw, const pg_real *dy,
                                   const pg_real *x, const pg_real *w, const int32_t *widx,
                                   size_t wstride, int G, int M, int N, int K) {
  for (int g = G - 1; g >= 0; g--) {
    size_t xo = (size_t)g * (size_t)M * (size_t)K, wo = (size_t)widx[g] * wstride;
    cpu_matmul_bwd(e, dx ? dx + xo : NULL, dw ? dw + wo : NULL,
                   dy + (size_t)g * (size_t)M * (size_t)N, x + xo, w + wo, M, N, K);
  }
}

/* ---------------------------------------------------------------------------------------------
 * attention over a batch: each sequence by the one-sequence kernels above, in order (the
 * sequences are independent, so the order changes no bit) */

#define ATT_SEQ(b, T, w) ((size_t)(b) * (size_t)(T) * (size_t)(w))

static void cpu_attention_fwd_batch(const pg_ops *e, pg_real *out, const pg_real *q,
                                    const pg_real *k, const pg_real *v, const int32_t *seg, int B,
                                    int T, int H, int Hkv, int d, float scale) {
  size_t wq = (size_t)H * (size_t)d, wk = (size_t)Hkv * (size_t)d;
  for (int b = 0; b < B; b++)
    cpu_attention_fwd(e, out + ATT_SEQ(b, T, wq), q + ATT_SEQ(b, T, wq), k + ATT_SEQ(b, T, wk),
                      v + ATT_SEQ(b, T, wk), seg ? seg + ATT_SEQ(b, T, 1) : NULL, T, H, Hkv, d,
                      scale);
}

static void cpu_attention_bf16_fwd_batch(const pg_ops *e, pg_real *out, const pg_real *q,
                                         const pg_real *k, const pg_real *v, const int32_t *seg,
                                         int B, int T, int H, int Hkv, int d, float scale) {
  size_t wq = (size_t)H * (size_t)d, wk = (size_t)Hkv * (size_t)d;
  for (int b = 0; b < B; b++)
    cpu_attention_bf16_fwd(e, out + ATT_SEQ(b, T, wq), q + ATT_SEQ(b, T, wq),
                           k + ATT_SEQ(b, T, wk), v + ATT_SEQ(b, T, wk),
                           seg ? seg + ATT_SEQ(b, T, 1) : NULL, T, H, Hkv, d, scale);
}

static void cpu_attention_bwd_batch(const pg_ops *e, pg_real *dq, pg_real *dk, pg_real *dv,
                                    const pg_real *dout, const pg_real *q, const pg_real *k,
                                    const pg_real *v, const int32_t *seg, int B, int T, int H,
                                    int Hkv, int d, float scale) {
  size_t wq = (size_t)H * (size_t)d, wk = (size_t)Hkv * (size_t)d;
#define AT(p, w) ((p) ? (p) + ATT_SEQ(b, T, w) : NULL)
  for (int b = 0; b < B; b++)
    cpu_attention_bwd(e, AT(dq, wq), AT(dk, wk), AT(dv, wk), dout + ATT_SEQ(b, T, wq),
                      q + ATT_SEQ(b, T, wq), k + ATT_SEQ(b, T, wk), v + ATT_SEQ(b, T, wk),
                      seg ? seg + ATT_SEQ(b, T, 1) : NULL, T, H, Hkv, d, scale);
#undef AT
}

/* --------------------------------------------------------------------------------------------- */

pg_ops pg_ops_cpu_table(int nthreads) {
  pg_ops o = {
      .name = "cpu",
      .nthreads = nthreads,
      .matmul_fwd = cpu_matmul_fwd,
      .matmul_bwd = cpu_matmul_bwd,
      .matmul_grouped_fwd = cpu_matmul_grouped_fwd,
      .matmul_grouped_bwd = cpu_matmul_grouped_bwd,
      .rmsnorm_fwd = cpu_rmsnorm_fwd,
      .rmsnorm_bwd = cpu_rmsnorm_bwd,
      .rope_fwd = cpu_rope_fwd,
      .rope_bwd = cpu_rope_bwd,
      .attention_fwd = cpu_attention_fwd_batch,
      .attention_bwd = cpu_attention_bwd_batch,
      .relu2_fwd = cpu_relu2_fwd,
      .relu2_bwd = cpu_relu2_bwd,
      .leaky_relu2_fwd = cpu_leaky_relu2_fwd,
      .leaky_relu2_bwd = cpu_leaky_relu2_bwd,
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
      .chanlerp_fwd = cpu_chanlerp_fwd,
      .chanlerp_bwd = cpu_chanlerp_bwd,
      .rowmul_fwd = cpu_rowmul_fwd,
      .rowmul_bwd = cpu_rowmul_bwd,
      .tanh_fwd = cpu_tanh_fwd,
      .tanh_bwd = cpu_tanh_bwd,
      .embed_fwd = cpu_embed_fwd,
      .embed_bwd = cpu_embed_bwd,
      .cols_fwd = cpu_cols_fwd,
      .cols_bwd = cpu_cols_bwd,
      .expand_fwd = cpu_expand_fwd,
      .expand_bwd = cpu_expand_bwd,
      .copy = cpu_copy,
      .round_bf16 = cpu_round_bf16,
      .rope_bf16_fwd = cpu_rope_bf16_fwd,
      .attention_bf16_fwd = cpu_attention_bf16_fwd_batch,
  };
  return o;
}
