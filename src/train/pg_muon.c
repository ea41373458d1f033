/* pg_muon.c: Newton–Schulz orthogonalization, the Muon step, the momentum warm-up and weight
 * averaging (pg_muon.h gives every formula and where it rounds). */
#include "pg_muon.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pg_threads.h"

/* ---- coefficients ------------------------------------------------------------------------------ */

static const double NS_CLASSIC[3] = {3.4445, -4.7750, 2.0315};

/* Polar Express, one tuple per step (spec/records.md §3.2, R11/R12). */
static const double NS_POLAR[5][3] = {
    {8.156554524902461, -22.48329292557795, 15.878769915207462},
    {4.042929935166739, -2.808917465908714, 0.5000178451051316},
    {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
    {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
    {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
};

void pg_ns_coeffs(int kind, int step, double abc[3]) {
  const double *t = NS_CLASSIC;
  if (kind == PG_NS_POLAR_EXPRESS) t = NS_POLAR[step < 0 ? 0 : step > 4 ? 4 : step];
  abc[0] = t[0], abc[1] = t[1], abc[2] = t[2];
}

/* ---- the product kernel ------------------------------------------------------------------------
 *
 * Every product of the iteration has the form out[p, q] = fp32(α·add[p, q] + β·S[p, q]) with
 * S[p, q] = Σ_r L(p, r)·R(q, r) (r ascending, from 0.0). Both factors are first converted to fp64
 * and packed into panels: L into panels of NS_MR rows (element (p, r) of panel t = p / NS_MR at
 * lp[t·NS_MR·R + r·NS_MR + p mod NS_MR]), R into panels of NS_NR columns likewise; the rows of a
 * last partial panel are 0.0 (their sums are never stored). A tile of NS_MR × NS_NR sums is run
 * over blocks of NS_KC reduction steps and parked in an fp64 accumulator between blocks; as
 * each sum still receives its terms one by one in ascending r, the blocking changes no bit. The
 * loops over the tile's rows and columns are independent sums, which the compiler vectorizes
 * across columns (never along r; the build has -ffp-contract=off, so no FMA either). */

#define NS_MR 4
#define NS_NR 8
#define NS_KC 256
#define NS_NC 256 /* output columns per pass (a multiple of NS_NR) */

typedef void (*ns_tile_fn)(const double *restrict lp, const double *restrict rp, int kc,
                           double *restrict c);

/* c[i·NS_NR + j] += Σ_{r < kc} lp[r·NS_MR + i]·rp[r·NS_NR + j], continuing the sums in c. */
#define NS_TILE_BODY                                                                             \
  {                                                                                              \
    double s[NS_MR][NS_NR];                                                                      \
    for (int i = 0; i < NS_MR; i++)                                                              \
      for (int j = 0; j < NS_NR; j++) s[i][j] = c[i * NS_NR + j];                                \
    for (int r = 0; r < kc; r++) {                                                               \
      const double *lv = lp + (size_t)r * NS_MR, *rv = rp + (size_t)r * NS_NR;                   \
      for (int i = 0; i < NS_MR; i++) {                                                          \
        const double li = lv[i];                                                                 \
        for (int j = 0; j < NS_NR; j++) s[i][j] += li * rv[j];                                   \
      }                                                                                          \
    }                                                                                            \
    for (int i = 0; i < NS_MR; i++)                                                              \
      for (int j = 0; j < NS_NR; j++) c[i * NS_NR + j] = s[i][j];                                \
  }

static void ns_tile_plain(const double *restrict lp, const double *restrict rp, int kc,
                          double *restrict c) NS_TILE_BODY

/* The same source for AVX2 (wider vectors of the same IEEE multiplies and adds: same bits). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(PG_OPS_NO_AVX2)
#define NS_HAVE_AVX2 1
__attribute__((target("avx2"))) static void ns_tile_avx2(const double *restrict lp,
                                                         const double *restrict rp, int kc,
                                                         double *restrict c) NS_TILE_BODY
#endif

static ns_tile_fn ns_tile_choose(void) {
#ifdef NS_HAVE_AVX2
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return ns_tile_avx2;
#endif
  return ns_tile_plain;
}

static size_t round_up(size_t x, size_t k) { return (x + k - 1) / k * k; }

/* Packing: n rows (i) of an fp32 operand whose element (i, r) is src[i·s_i + r·s_r], R steps,
 * into fp64 panels of w rows (layout above). Parallel over panels. */
typedef struct {
  double *dst;
  const float *src;
  size_t s_i, s_r, n, R, w;
} ns_pack_job;

static void ns_pack_panels(void *ctx, size_t t0, size_t t1) {
  const ns_pack_job *j = ctx;
  const size_t w = j->w, R = j->R;
  for (size_t t = t0; t < t1; t++) {
    double *d = j->dst + t * w * R;
    size_t i0 = t * w, live = j->n - i0 < w ? j->n - i0 : w;
    if (j->s_r == 1) { /* rows contiguous along r: read each row once, write with stride w */
      for (size_t i = 0; i < w; i++) {
        if (i < live) {
          const float *row = j->src + (i0 + i) * j->s_i;
          for (size_t r = 0; r < R; r++) d[r * w + i] = (double)row[r];
        } else {
          for (size_t r = 0; r < R; r++) d[r * w + i] = 0.0;
        }
      }
    } else {
      for (size_t r = 0; r < R; r++) {
        const float *col = j->src + r * j->s_r + i0 * j->s_i;
        for (size_t i = 0; i < w; i++) d[r * w + i] = i < live ? (double)col[i * j->s_i] : 0.0;
      }
    }
  }
}

static void ns_pack(double *dst, size_t w, const float *src, size_t s_i, size_t s_r, size_t n,
                    size_t R, int nthreads) {
  ns_pack_job j = {.dst = dst, .src = src, .s_i = s_i, .s_r = s_r, .n = n, .R = R, .w = w};
  pg_parallel_for((n + w - 1) / w, ns_pack_panels, &j, nthreads);
}

typedef struct {
  int P, Q, R;
  const double *lp, *rp; /* packed factors */
  double *acc;           /* round_up(P, NS_MR) × NS_NC sums, NS_MR·NS_NC per row panel */
  float *out;
  size_t ldo;
  const float *add; /* NULL: no α·add term */
  size_t ld_add;
  double alpha, beta;
  int upper;   /* symmetric result: only q ≥ p is computed and stored */
  size_t npan; /* row panels */
  ns_tile_fn tile;
} ns_prod;

/* The row panel handled for work index w. With `upper` the panel t costs about (npan − t), so
 * the indices are folded (0, npan−1, 1, npan−2, …) to give contiguous chunks equal work. */
static size_t ns_panel_of(const ns_prod *g, size_t w) {
  if (!g->upper) return w;
  return (w & 1) ? g->npan - 1 - w / 2 : w / 2;
}

static void ns_prod_panels(void *ctx, size_t w0, size_t w1) {
  const ns_prod *g = ctx;
  const size_t R = (size_t)g->R, Q = (size_t)g->Q, P = (size_t)g->P;
  for (size_t q0 = 0; q0 < Q; q0 += NS_NC) {
    const size_t qn = Q - q0 < NS_NC ? Q - q0 : NS_NC, nqp = (qn + NS_NR - 1) / NS_NR;
    for (size_t w = w0; w < w1; w++)
      memset(g->acc + ns_panel_of(g, w) * NS_MR * NS_NC, 0, NS_MR * NS_NC * sizeof(double));
    for (size_t r0 = 0; r0 < R; r0 += NS_KC) {
      const int kc = (int)(R - r0 < NS_KC ? R - r0 : NS_KC);
      for (size_t w = w0; w < w1; w++) {
        const size_t t = ns_panel_of(g, w), p_lo = t * NS_MR;
        const double *lp = g->lp + t * NS_MR * R + r0 * NS_MR;
        double *acc = g->acc + t * NS_MR * NS_NC;
        for (size_t u = 0; u < nqp; u++) {
          const size_t qs = q0 + u * NS_NR;
          if (g->upper && qs + NS_NR <= p_lo) continue; /* the tile lies below the diagonal */
          g->tile(lp, g->rp + qs * R + r0 * NS_NR, kc, acc + u * NS_MR * NS_NR);
        }
      }
    }
    for (size_t w = w0; w < w1; w++) {
      const size_t t = ns_panel_of(g, w);
      const double *acc = g->acc + t * NS_MR * NS_NC;
      for (size_t i = 0; i < NS_MR && t * NS_MR + i < P; i++) {
        const size_t p = t * NS_MR + i;
        size_t q = q0;
        if (g->upper && q < p) q = p;
        for (; q < q0 + qn; q++) {
          const size_t ql = q - q0;
          const double s = acc[(ql / NS_NR) * NS_MR * NS_NR + i * NS_NR + ql % NS_NR];
          double v = g->beta * s;
          if (g->add) v = g->alpha * (double)g->add[p * g->ld_add + q] + v;
          g->out[p * g->ldo + q] = (float)v;
        }
      }
    }
  }
}

static void ns_run(ns_prod *g, int nthreads) {
  g->npan = ((size_t)g->P + NS_MR - 1) / NS_MR;
  if (g->P <= 0 || g->Q <= 0) return;
  pg_parallel_for(g->npan, ns_prod_panels, g, nthreads);
}

/* dst[c × r] = srcᵀ for src [r × c], in 32 × 32 blocks (a copy: no rounding). */
static void transpose(float *restrict dst, const float *restrict src, size_t r, size_t c) {
  for (size_t i0 = 0; i0 < r; i0 += 32)
    for (size_t j0 = 0; j0 < c; j0 += 32) {
      size_t i1 = r - i0 < 32 ? r : i0 + 32, j1 = c - j0 < 32 ? c : j0 + 32;
      for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) dst[j * r + i] = src[i * c + j];
    }
}

/* Copy the strict upper triangle of a symmetric n × n matrix onto the lower one. */
static void mirror_lower(float *a, size_t n) {
  for (size_t i = 1; i < n; i++)
    for (size_t j = 0; j < i; j++) a[i * n + j] = a[j * n + i];
}

/* ---- Newton–Schulz ------------------------------------------------------------------------------
 * Scratch layout (m = min side, n = max side): X, X' [m × n] fp32; A, B [m × m] fp32; then, from
 * the next 64-byte boundary, fp64: the left pack (round_up(m, NS_MR) × n), the right pack (the
 * larger of round_up(m, NS_NR) × n and round_up(n, NS_NR) × m) and the accumulators. */

typedef struct {
  size_t m, n, lpack, rpack, acc;
} ns_sizes;

static ns_sizes ns_size(int rows, int cols) {
  ns_sizes z;
  size_t r = rows > 0 ? (size_t)rows : 0, c = cols > 0 ? (size_t)cols : 0;
  z.m = r < c ? r : c;
  z.n = r < c ? c : r;
  z.lpack = round_up(z.m, NS_MR) * z.n;
  size_t r1 = round_up(z.m, NS_NR) * z.n, r2 = round_up(z.n, NS_NR) * z.m;
  z.rpack = r1 > r2 ? r1 : r2;
  z.acc = round_up(z.m, NS_MR) * NS_NC;
  return z;
}

size_t pg_ns_scratch_floats(int rows, int cols) {
  ns_sizes z = ns_size(rows, cols);
  /* 2 floats per double, 16 floats to reach a 64-byte boundary from any float address */
  return 2 * z.m * z.n + 2 * z.m * z.m + 2 * (z.lpack + z.rpack + z.acc) + 16;
}

void pg_newton_schulz(const float *G, int rows, int cols, int kind, int steps, float *out,
                      float *scratch, int nthreads) {
  if (rows <= 0 || cols <= 0) return;
  const ns_sizes z = ns_size(rows, cols);
  const size_t m = z.m, n = z.n;
  const int tr = rows > cols;
  float *X = scratch, *Xn = X + m * n, *A = Xn + m * n, *B = A + m * m;
  uintptr_t at = (uintptr_t)(B + m * m);
  double *lp = (double *)((at + 63) & ~(uintptr_t)63);
  double *rp = lp + z.lpack, *acc = rp + z.rpack;

  /* X = G or Gᵀ, as m × n */
  if (tr) {
    transpose(X, G, n, m); /* G is n × m here */
  } else {
    memcpy(X, G, m * n * sizeof *X);
  }
  double ss = 0.0;
  for (size_t k = 0; k < m * n; k++) ss += (double)X[k] * (double)X[k];
  const double den = sqrt(ss) + 1e-7;
  for (size_t k = 0; k < m * n; k++) X[k] = (float)((double)X[k] / den);

  const ns_tile_fn tile = ns_tile_choose();
  for (int s = 0; s < steps; s++) {
    double abc[3];
    pg_ns_coeffs(kind, s, abc);
    /* A = X Xᵀ: L(p, r) = X[p, r], R(q, r) = X[q, r] */
    ns_pack(lp, NS_MR, X, n, 1, m, n, nthreads);
    ns_pack(rp, NS_NR, X, n, 1, m, n, nthreads);
    ns_prod pa = {.P = (int)m, .Q = (int)m, .R = (int)n, .lp = lp, .rp = rp, .acc = acc,
                  .out = A, .ldo = m, .beta = 1.0, .upper = 1, .tile = tile};
    ns_run(&pa, nthreads);
    mirror_lower(A, m);
    /* B = b·A + c·A A: L(p, r) = A[p, r], R(q, r) = A[q, r] (= A[r, q]) */
    ns_pack(lp, NS_MR, A, m, 1, m, m, nthreads);
    ns_pack(rp, NS_NR, A, m, 1, m, m, nthreads);
    ns_prod pb = {.P = (int)m, .Q = (int)m, .R = (int)m, .lp = lp, .rp = rp, .acc = acc,
                  .out = B, .ldo = m, .add = A, .ld_add = m, .alpha = abc[1], .beta = abc[2],
                  .upper = 1, .tile = tile};
    ns_run(&pb, nthreads);
    mirror_lower(B, m);
    /* X' = a·X + B X: L(p, r) = B[p, r], R(q, r) = X[r, q] */
    ns_pack(lp, NS_MR, B, m, 1, m, m, nthreads);
    ns_pack(rp, NS_NR, X, 1, n, n, m, nthreads);
    ns_prod px = {.P = (int)m, .Q = (int)n, .R = (int)m, .lp = lp, .rp = rp, .acc = acc,
                  .out = Xn, .ldo = n, .add = X, .ld_add = n, .alpha = abc[0], .beta = 1.0,
                  .upper = 0, .tile = tile};
    ns_run(&px, nthreads);
    float *t = X;
    X = Xn, Xn = t;
  }

  if (tr) {
    transpose(out, X, m, n);
  } else {
    memcpy(out, X, m * n * sizeof *out);
  }
}

/* ---- Muon ------------------------------------------------------------------------------------------ */

double pg_muon_momentum(const pg_muon_opts *o, uint64_t step) {
  if (o->momentum_warmup <= 0) return o->momentum;
  double f = (double)step / (double)o->momentum_warmup;
  if (f > 1.0) f = 1.0;
  return (1.0 - f) * o->momentum_start + f * o->momentum;
}

size_t pg_muon_scratch_floats(int rows, int cols) {
  size_t r = rows > 0 ? (size_t)rows : 0, c = cols > 0 ? (size_t)cols : 0;
  return r * c + pg_ns_scratch_floats(rows, cols);
}

typedef struct {
  float *p, *buf, *u;
  const float *g;
  size_t cols;
  double mu, decay, lr, scale;
  int nesterov, row_normalize;
} muon_job;

/* rows [i0, i1): the momentum buffer and the NS input u */
static void muon_rows_in(void *ctx, size_t i0, size_t i1) {
  const muon_job *j = ctx;
  const size_t c = j->cols;
  for (size_t i = i0; i < i1; i++) {
    const float *g = j->g + i * c;
    float *b = j->buf + i * c, *u = j->u + i * c;
    for (size_t k = 0; k < c; k++) {
      b[k] = (float)(j->mu * (double)b[k] + (double)g[k]);
      u[k] = j->nesterov ? (float)((double)g[k] + j->mu * (double)b[k]) : b[k];
    }
    if (j->row_normalize) {
      double ss = 0.0;
      for (size_t k = 0; k < c; k++) ss += (double)u[k] * (double)u[k];
      double d = sqrt(ss);
      if (d < 1e-7) d = 1e-7;
      for (size_t k = 0; k < c; k++) u[k] = (float)((double)u[k] / d);
    }
  }
}

/* rows [i0, i1): p ← fp32(p·(1 − lr·wd) − lr·(s·X)), X in u */
static void muon_rows_out(void *ctx, size_t i0, size_t i1) {
  const muon_job *j = ctx;
  const size_t c = j->cols;
  for (size_t i = i0; i < i1; i++) {
    float *p = j->p + i * c;
    const float *x = j->u + i * c;
    for (size_t k = 0; k < c; k++)
      p[k] = (float)((double)p[k] * j->decay - j->lr * (j->scale * (double)x[k]));
  }
}

void pg_muon_step(float *p, const float *g, float *buf, int rows, int cols,
                  const pg_muon_opts *o, double lr_t, double mu, float *scratch, int nthreads) {
  if (rows <= 0 || cols <= 0) return;
  const size_t R = (size_t)rows, C = (size_t)cols;
  double ratio = (double)rows / (double)cols;
  muon_job j = {.p = p, .buf = buf, .u = scratch, .g = g, .cols = C, .mu = mu,
                .decay = 1.0 - lr_t * o->weight_decay, .lr = lr_t,
                .scale = sqrt(ratio > 1.0 ? ratio : 1.0), .nesterov = o->nesterov != 0,
                .row_normalize = o->row_normalize != 0};
  pg_parallel_for(R, muon_rows_in, &j, nthreads);
  pg_newton_schulz(j.u, rows, cols, o->ns_kind, o->ns_steps, j.u, scratch + R * C, nthreads);
  pg_parallel_for(R, muon_rows_out, &j, nthreads);
}

/* ---- weight averaging ------------------------------------------------------------------------------ */

void pg_ema_update(float *ema, const float *p, size_t n, double decay) {
  const double keep = decay, take = 1.0 - decay;
  for (size_t i = 0; i < n; i++) ema[i] = (float)(keep * (double)ema[i] + take * (double)p[i]);
}

void pg_swa_add(double *sum, const float *p, size_t n) {
  for (size_t i = 0; i < n; i++) sum[i] += (double)p[i];
}

void pg_swa_average(const double *sum, uint64_t count, float *out, size_t n) {
  if (count == 0) return;
  const double c = (double)count;
  for (size_t i = 0; i < n; i++) out[i] = (float)(sum[i] / c);
}
