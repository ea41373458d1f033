/* pg_ops_optim.c: the CPU bodies of the engine's optimizer ops (pg_ops.h, spec/engine.md §4.20):
 * SGD with momentum, AdamW, the pieces of global-norm clipping, Muon with its Newton–Schulz
 * iteration, EMA and SWA. Every update is fp64 per element, rounded once per stored value; the
 * elementwise ops run over contiguous ranges of elements (pg_parallel_for) and Newton–Schulz
 * over rows of each product, so every result is the same for any thread count. The host APIs of
 * pg_optim.h and pg_muon.h run these same bodies. */
#include "pg_ops_optim.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "pg_engine.h"
#include "pg_ops_cpu.h"
#include "pg_status.h"
#include "pg_threads.h"

/* ---- coefficients ---------------------------------------------------------------------------- */

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
  if ((kind & 0xff) == PG_NS_POLAR_EXPRESS) t = NS_POLAR[step < 0 ? 0 : step > 4 ? 4 : step];
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
  const pg_real *src;
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
          const pg_real *row = j->src + (i0 + i) * j->s_i;
          for (size_t r = 0; r < R; r++) d[r * w + i] = (double)row[r];
        } else {
          for (size_t r = 0; r < R; r++) d[r * w + i] = 0.0;
        }
      }
    } else {
      for (size_t r = 0; r < R; r++) {
        const pg_real *col = j->src + r * j->s_r + i0 * j->s_i;
        for (size_t i = 0; i < w; i++) d[r * w + i] = i < live ? (double)col[i * j->s_i] : 0.0;
      }
    }
  }
}

static void ns_pack(double *dst, size_t w, const pg_real *src, size_t s_i, size_t s_r, size_t n,
                    size_t R, int nthreads) {
  ns_pack_job j = {.dst = dst, .src = src, .s_i = s_i, .s_r = s_r, .n = n, .R = R, .w = w};
  pg_parallel_for((n + w - 1) / w, ns_pack_panels, &j, nthreads);
}

typedef struct {
  int P, Q, R;
  const double *lp, *rp; /* packed factors */
  double *acc;           /* round_up(P, NS_MR) × NS_NC sums, NS_MR·NS_NC per row panel */
  pg_real *out;
  size_t ldo;
  const pg_real *add; /* NULL: no α·add term */
  size_t ld_add;
  double alpha, beta;
  int upper;   /* symmetric result: only q ≥ p is computed and stored */
  int bf16; /* the bf16 iteration: out = bf16(bf16(α·add) + bf16(β·bf16(S))), else fp32(α·add + β·S)
             */
  size_t npan; /* row panels */
  ns_tile_fn tile;
} ns_prod;

/* bf16(v) of the bf16 iteration: to fp32, then to bf16 (the GPU's order too) */
static double nsb(double v) { return (double)pg_bf16_round((float)v); }

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
          double v;
          if (g->bf16) { /* each of the records' tensor operations rounds */
            v = nsb(g->beta * nsb(s));
            if (g->add) v = nsb(nsb(g->alpha * (double)g->add[p * g->ld_add + q]) + v);
          } else {
            v = g->beta * s;
            if (g->add) v = g->alpha * (double)g->add[p * g->ld_add + q] + v;
          }
          g->out[p * g->ldo + q] = (pg_real)v;
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
static void transpose(pg_real *restrict dst, const pg_real *restrict src, size_t r, size_t c) {
  for (size_t i0 = 0; i0 < r; i0 += 32)
    for (size_t j0 = 0; j0 < c; j0 += 32) {
      size_t i1 = r - i0 < 32 ? r : i0 + 32, j1 = c - j0 < 32 ? c : j0 + 32;
      for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) dst[j * r + i] = src[i * c + j];
    }
}

/* Copy the strict upper triangle of a symmetric n × n matrix onto the lower one. */
static void mirror_lower(pg_real *a, size_t n) {
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
  /* 2 floats per double, 16 floats to reach a 64-byte boundary from any pg_real address */
  return 2 * z.m * z.n + 2 * z.m * z.m + 2 * (z.lpack + z.rpack + z.acc) + 16;
}

void pg_newton_schulz(const pg_real *G, int rows, int cols, int kind, int steps, pg_real *out,
                      pg_real *scratch, int nthreads) {
  if (rows <= 0 || cols <= 0) return;
  const ns_sizes z = ns_size(rows, cols);
  const size_t m = z.m, n = z.n;
  const int tr = rows > cols;
  pg_real *X = scratch, *Xn = X + m * n, *A = Xn + m * n, *B = A + m * m;
  uintptr_t at = (uintptr_t)(B + m * m);
  double *lp = (double *)((at + 63) & ~(uintptr_t)63);
  double *rp = lp + z.lpack, *acc = rp + z.rpack;

  const int b16 = (kind & PG_NS_BF16) != 0;
  /* X = G or Gᵀ, as m × n */
  if (tr) {
    transpose(X, G, n, m); /* G is n × m here */
  } else {
    memcpy(X, G, m * n * sizeof *X);
  }
  if (b16)
    for (size_t k = 0; k < m * n; k++) X[k] = (pg_real)nsb(X[k]);
  double ss = 0.0;
  for (size_t k = 0; k < m * n; k++) ss += (double)X[k] * (double)X[k];
  if (b16) {
    const double den = nsb(nsb(sqrt(ss)) + 1e-7);
    for (size_t k = 0; k < m * n; k++) X[k] = (pg_real)nsb((double)X[k] / den);
  } else {
    const double den = sqrt(ss) + 1e-7;
    for (size_t k = 0; k < m * n; k++) X[k] = (pg_real)((double)X[k] / den);
  }

  const ns_tile_fn tile = ns_tile_choose();
  for (int s = 0; s < steps; s++) {
    double abc[3];
    pg_ns_coeffs(kind, s, abc);
    /* A = X Xᵀ: L(p, r) = X[p, r], R(q, r) = X[q, r] */
    ns_pack(lp, NS_MR, X, n, 1, m, n, nthreads);
    ns_pack(rp, NS_NR, X, n, 1, m, n, nthreads);
    ns_prod pa = {.P = (int)m, .Q = (int)m, .R = (int)n, .lp = lp, .rp = rp, .acc = acc,
                  .out = A, .ldo = m, .beta = 1.0, .upper = 1, .bf16 = b16, .tile = tile};
    ns_run(&pa, nthreads);
    mirror_lower(A, m);
    /* B = b·A + c·A A: L(p, r) = A[p, r], R(q, r) = A[q, r] (= A[r, q]); bf16: b·A + c·S */
    ns_pack(lp, NS_MR, A, m, 1, m, m, nthreads);
    ns_pack(rp, NS_NR, A, m, 1, m, m, nthreads);
    ns_prod pb = {.P = (int)m, .Q = (int)m, .R = (int)m, .lp = lp, .rp = rp, .acc = acc,
                  .out = B, .ldo = m, .add = A, .ld_add = m, .alpha = abc[1], .beta = abc[2],
                  .upper = 1, .bf16 = b16, .tile = tile};
    ns_run(&pb, nthreads);
    mirror_lower(B, m);
    /* X' = a·X + B X: L(p, r) = B[p, r], R(q, r) = X[r, q] */
    ns_pack(lp, NS_MR, B, m, 1, m, m, nthreads);
    ns_pack(rp, NS_NR, X, 1, n, n, m, nthreads);
    ns_prod px = {.P = (int)m, .Q = (int)n, .R = (int)m, .lp = lp, .rp = rp, .acc = acc,
                  .out = Xn, .ldo = n, .add = X, .ld_add = n, .alpha = abc[0], .beta = 1.0,
                  .upper = 0, .bf16 = b16, .tile = tile};
    ns_run(&px, nthreads);
    pg_real *t = X;
    X = Xn, Xn = t;
  }

  if (tr) {
    transpose(out, X, m, n);
  } else {
    memcpy(out, X, m * n * sizeof *out);
  }
}

/* ---- Muon ------------------------------------------------------------------------------------ */

size_t pg_muon_scratch_floats(int rows, int cols) {
  size_t r = rows > 0 ? (size_t)rows : 0, c = cols > 0 ? (size_t)cols : 0;
  return r * c + pg_ns_scratch_floats(rows, cols);
}

typedef struct {
  pg_real *p, *buf, *u;
  const pg_real *g;
  size_t cols;
  double mu, decay, lr, scale;
  int nesterov, row_normalize;
} muon_job;

/* rows [i0, i1): the momentum buffer and the NS input u */
static void muon_rows_in(void *ctx, size_t i0, size_t i1) {
  const muon_job *j = ctx;
  const size_t c = j->cols;
  for (size_t i = i0; i < i1; i++) {
    const pg_real *g = j->g + i * c;
    pg_real *b = j->buf + i * c, *u = j->u + i * c;
    for (size_t k = 0; k < c; k++) {
      b[k] = (pg_real)(j->mu * (double)b[k] + (double)g[k]);
      u[k] = j->nesterov ? (pg_real)((double)g[k] + j->mu * (double)b[k]) : b[k];
    }
    if (j->row_normalize) {
      double ss = 0.0;
      for (size_t k = 0; k < c; k++) ss += (double)u[k] * (double)u[k];
      double d = sqrt(ss);
      if (d < 1e-7) d = 1e-7;
      for (size_t k = 0; k < c; k++) u[k] = (pg_real)((double)u[k] / d);
    }
  }
}

/* rows [i0, i1): p ← fp32(p·(1 − lr·wd) − lr·(s·X)), X in u */
static void muon_rows_out(void *ctx, size_t i0, size_t i1) {
  const muon_job *j = ctx;
  const size_t c = j->cols;
  for (size_t i = i0; i < i1; i++) {
    pg_real *p = j->p + i * c;
    const pg_real *x = j->u + i * c;
    for (size_t k = 0; k < c; k++)
      p[k] = (pg_real)((double)p[k] * j->decay - j->lr * (j->scale * (double)x[k]));
  }
}

void pg_muon_apply(pg_real *p, const pg_real *g, pg_real *buf, int rows, int cols, double lr,
                   double mu, double wd, int nesterov, int row_normalize, int ns_kind,
                   int ns_steps, pg_real *scratch, int nthreads) {
  if (rows <= 0 || cols <= 0) return;
  const size_t R = (size_t)rows, C = (size_t)cols;
  double ratio = (double)rows / (double)cols;
  muon_job j = {.p = p, .buf = buf, .u = scratch, .g = g, .cols = C, .mu = mu,
                .decay = 1.0 - lr * wd, .lr = lr, .scale = sqrt(ratio > 1.0 ? ratio : 1.0),
                .nesterov = nesterov != 0, .row_normalize = row_normalize != 0};
  pg_parallel_for(R, muon_rows_in, &j, nthreads);
  pg_newton_schulz(j.u, rows, cols, ns_kind, ns_steps, j.u, scratch + R * C, nthreads);
  pg_parallel_for(R, muon_rows_out, &j, nthreads);
}

/* ---- the elementwise optimizer ops ----------------------------------------------------------- */

typedef struct {
  pg_real *p, *buf, *m, *v;
  const pg_real *g;
  double *sum;
  const double *csum;
  double lr, mu, b1, b2, eps, wd, step, sbc2, a;
  int first;
} opt_ctx;

static void sgd_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  for (size_t i = i0; i < i1; i++) {
    double g = (double)c->g[i], b = g;
    if (c->mu != 0) {
      b = c->first ? g : c->mu * (double)c->buf[i] + g;
      c->buf[i] = (pg_real)b;
      b = (double)c->buf[i];
    }
    c->p[i] = (pg_real)((double)c->p[i] - c->lr * b);
  }
}

static void cpu_sgd_step(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *buf, size_t n,
                         double lr, double mu, int first) {
  opt_ctx c = {.p = p, .g = g, .buf = buf, .lr = lr, .mu = mu, .first = first};
  pg_parallel_for(n, sgd_range, &c, e->nthreads);
}

static void adamw_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  const double b1 = c->b1, b2 = c->b2;
  for (size_t i = i0; i < i1; i++) {
    double g = (double)c->g[i];
    double p = (double)c->p[i] * (1.0 - c->lr * c->wd);
    c->m[i] = (pg_real)(b1 * (double)c->m[i] + (1.0 - b1) * g);
    c->v[i] = (pg_real)(b2 * (double)c->v[i] + (1.0 - b2) * g * g);
    double denom = sqrt((double)c->v[i]) / c->sbc2 + c->eps;
    c->p[i] = (pg_real)(p - c->step * (double)c->m[i] / denom);
  }
}

static void cpu_adamw_step(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *m, pg_real *v,
                           size_t n, double lr, double beta1, double beta2, double eps, double wd,
                           double bc1, double bc2) {
  opt_ctx c = {.p = p, .g = g, .m = m, .v = v, .lr = lr, .b1 = beta1, .b2 = beta2, .eps = eps,
               .wd = wd, .step = lr / bc1, .sbc2 = sqrt(bc2)};
  pg_parallel_for(n, adamw_range, &c, e->nthreads);
}

static void cpu_sumsq(const pg_ops *e, double *acc, const pg_real *x, size_t n) {
  (void)e;
  double ss = *acc;
  for (size_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
  *acc = ss;
}

static void scale_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  for (size_t i = i0; i < i1; i++) c->p[i] = (pg_real)((double)c->p[i] * c->a);
}

static void cpu_scale(const pg_ops *e, pg_real *x, size_t n, double a) {
  opt_ctx c = {.p = x, .a = a};
  pg_parallel_for(n, scale_range, &c, e->nthreads);
}

static void cpu_muon_step(const pg_ops *e, pg_real *p, const pg_real *g, pg_real *buf, int rows,
                          int cols, double lr, double mu, double wd, int nesterov,
                          int row_normalize, int ns_kind, int ns_steps) {
  if (rows <= 0 || cols <= 0) return;
  pg_real *scr = pg_engine_scratch(pg_engine_of(e), 0,
                                   pg_muon_scratch_floats(rows, cols) * sizeof(pg_real));
  if (!scr) return; /* PG_E_NOMEM recorded */
  pg_muon_apply(p, g, buf, rows, cols, lr, mu, wd, nesterov, row_normalize, ns_kind, ns_steps,
                scr, e->nthreads);
}

static void ema_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  const double keep = c->a, take = 1.0 - c->a;
  for (size_t i = i0; i < i1; i++)
    c->m[i] = (pg_real)(keep * (double)c->m[i] + take * (double)c->g[i]);
}

static void cpu_ema_update(const pg_ops *e, pg_real *ema, const pg_real *p, size_t n,
                           double decay) {
  opt_ctx c = {.m = ema, .g = p, .a = decay};
  pg_parallel_for(n, ema_range, &c, e->nthreads);
}

static void swa_add_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  for (size_t i = i0; i < i1; i++) c->sum[i] += (double)c->g[i];
}

static void cpu_swa_add(const pg_ops *e, double *sum, const pg_real *p, size_t n) {
  opt_ctx c = {.sum = sum, .g = p};
  pg_parallel_for(n, swa_add_range, &c, e->nthreads);
}

static void swa_avg_range(void *ctx, size_t i0, size_t i1) {
  const opt_ctx *c = ctx;
  for (size_t i = i0; i < i1; i++) c->p[i] = (pg_real)(c->csum[i] / c->a);
}

static void cpu_swa_average(const pg_ops *e, pg_real *out, const double *sum, size_t n,
                            uint64_t count) {
  if (count == 0) return;
  opt_ctx c = {.p = out, .csum = sum, .a = (double)count};
  pg_parallel_for(n, swa_avg_range, &c, e->nthreads);
}

void pg_ops_cpu_optim(pg_ops *o) {
  o->sgd_step = cpu_sgd_step;
  o->adamw_step = cpu_adamw_step;
  o->sumsq = cpu_sumsq;
  o->scale = cpu_scale;
  o->muon_step = cpu_muon_step;
  o->ema_update = cpu_ema_update;
  o->swa_add = cpu_swa_add;
  o->swa_average = cpu_swa_average;
}
