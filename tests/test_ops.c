/* test_ops.c: the CPU reference ops against fp64 references written here: forwards within
 * FWD_TOL, backwards against central differences of the fp64 reference within BWD_TOL (the
 * tolerances are normative, spec/engine.md), plus the ops' properties (GQA, segment isolation,
 * partial RoPE, the RoPE inverse, CE by hand, activation bounds) and bit-identical results for 1,
 * 2 and 3 threads; the blocked matmul bit for bit against the plain loops it replaced. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_engine.h"
#include "pg_exp.h" /* the softmaxes' exp (spec/engine.md §2.1) */
#include "pg_ops.h"
#include "pg_rng.h"
#include "pg_status.h"
#include "pg_threads.h"
#include "pgmm_naive.h" /* the plain matmul loops the blocked kernels replaced */

#define FWD_TOL 1e-6 /* max |fp32 op − fp64 reference| / max(1, max |reference|) */
#define BWD_TOL 1e-5 /* max |fp32 backward − fp64 central difference| / max(1, max |FD|) */
#define FD_STEP 1e-6 /* central-difference step, relative to max(1, |value|) */
#define PREFILL 0.5f /* gradients start here, so the check also proves backward accumulates */
#define RMS_EPS 1.1920928955078125e-07f /* 2^-23, the records' rms_norm eps */

/* ---- helpers ------------------------------------------------------------------------------- */

static float *randf(pg_rng *r, size_t n, double scale) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++) p[i] = (float)(scale * pg_rng_gauss(r));
  return p;
}

static double *to_d(const float *x, size_t n) {
  double *p = malloc((n ? n : 1) * sizeof *p);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++) p[i] = (double)x[i];
  return p;
}

static float *filled(size_t n, float v) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++) p[i] = v;
  return p;
}

static double *dalloc(size_t n) {
  double *p = calloc(n ? n : 1, sizeof *p);
  cr_assert_not_null(p);
  return p;
}

/* max |got − off − want| / max(1, max |want|) */
static double rel_err(const float *got, float off, const double *want, size_t n) {
  double worst = 0.0, scale = 1.0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)got[i] - (double)off - want[i]));
  return worst / scale;
}

static void check_fwd(const char *what, const float *got, const double *want, size_t n) {
  double e = rel_err(got, 0.0f, want, n);
  cr_assert(e <= FWD_TOL, "%s forward: relative error %.3g > %.1g", what, e, FWD_TOL);
}

static void check_bwd(const char *what, const float *got, const double *fd, size_t n) {
  double e = rel_err(got, PREFILL, fd, n);
  cr_assert(e <= BWD_TOL, "%s backward: relative error %.3g > %.1g", what, e, BWD_TOL);
}

/* Central differences of loss(ctx) with respect to param[0..n). */
typedef double (*loss_fn)(void *ctx);
static void fd_grad(loss_fn f, void *ctx, double *param, size_t n, double *grad) {
  for (size_t i = 0; i < n; i++) {
    double v = param[i], h = FD_STEP * fmax(1.0, fabs(v));
    param[i] = v + h;
    double lp = f(ctx);
    param[i] = v - h;
    double lm = f(ctx);
    param[i] = v;
    grad[i] = (lp - lm) / (2.0 * h);
  }
}

static double wsum(const double *w, const double *y, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += w[i] * y[i];
  return s;
}

static double sigm(double z) { return 1.0 / (1.0 + exp(-z)); }

/* ---- matmul -------------------------------------------------------------------------------- */

typedef struct {
  double *x, *w, *dy, *y;
  int M, N, K;
} mm_ref;

static void ref_matmul(mm_ref *c) {
  for (int m = 0; m < c->M; m++)
    for (int n = 0; n < c->N; n++) {
      double s = 0.0;
      for (int k = 0; k < c->K; k++) s += c->x[m * c->K + k] * c->w[n * c->K + k];
      c->y[m * c->N + n] = s;
    }
}

static double mm_loss(void *p) {
  mm_ref *c = p;
  ref_matmul(c);
  return wsum(c->dy, c->y, (size_t)c->M * c->N);
}

Test(ops, matmul_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 1);
  const int M = 5, N = 7, K = 70; /* K crosses the 64-column accumulator block */
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, M * K, 1.0), *w = randf(&r, N * K, 0.2), *dy = randf(&r, M * N, 1.0);
  float *y = filled(M * N, 0), *dx = filled(M * K, PREFILL), *dw = filled(N * K, PREFILL);
  mm_ref c = {to_d(x, M * K), to_d(w, N * K), to_d(dy, M * N), dalloc(M * N), M, N, K};
  e.ops.matmul_fwd(&e.ops, y, x, w, M, N, K);
  ref_matmul(&c);
  check_fwd("matmul", y, c.y, M * N);
  e.ops.matmul_bwd(&e.ops, dx, dw, dy, x, w, M, N, K);
  double *g = dalloc(N * K);
  fd_grad(mm_loss, &c, c.x, M * K, g);
  check_bwd("matmul dx", dx, g, M * K);
  fd_grad(mm_loss, &c, c.w, N * K, g);
  check_bwd("matmul dw", dw, g, N * K);
  free(x), free(w), free(dy), free(y), free(dx), free(dw), free(g);
  free(c.x), free(c.w), free(c.dy), free(c.y);
}

/* Values whose sums depend on the order of the terms: Gaussians scaled by 2^e, e in [-12, 12],
 * with a few exact zeros and negative zeros among them. */
static float *wild(pg_rng *r, size_t n) {
  float *p = malloc((n ? n : 1) * sizeof *p);
  cr_assert_not_null(p);
  for (size_t i = 0; i < n; i++) {
    uint64_t u = pg_rng_u64(r);
    p[i] = (float)ldexp(pg_rng_gauss(r), (int)(u % 25) - 12);
    if ((u >> 8) % 29 == 0) p[i] = (u >> 16) & 1 ? -0.0f : 0.0f;
  }
  return p;
}

/* Make every product's sum depend on the order of its terms: for each of the three reductions
 * (over k, n and m) two positions i1 < i2 hold the same big term with opposite signs, so the
 * smaller terms added between them are absorbed at the big term's precision and the exact
 * cancellation at i2 leaves that rounding in the result, far above an fp32 ulp. A sum in any
 * other order rounds differently. (Without this, fp64 sums of fp32 products rounded to fp32 are
 * nearly always the same in any order, and an order change would go unnoticed.) */
static void plant_cancellations(pg_rng *r, float *x, float *w, float *dy, int M, int N, int K) {
  if (K >= 2) { /* forward: x[:, k2] = x[:, k1], w[:, k2] = −w[:, k1] = big */
    int k1 = (int)(pg_rng_u64(r) % (uint64_t)(K - 1));
    int k2 = k1 + 1 + (int)(pg_rng_u64(r) % (uint64_t)(K - 1 - k1));
    for (int m = 0; m < M; m++) x[(size_t)m * K + k2] = x[(size_t)m * K + k1];
    for (int n = 0; n < N; n++) {
      w[(size_t)n * K + k1] = (float)ldexp(pg_rng_gauss(r), 30);
      w[(size_t)n * K + k2] = -w[(size_t)n * K + k1];
    }
  }
  if (N >= 2) { /* dx: dy[:, n2] = dy[:, n1], w[n2, :] = −w[n1, :] = big (keeps the above) */
    int n1 = (int)(pg_rng_u64(r) % (uint64_t)(N - 1));
    int n2 = n1 + 1 + (int)(pg_rng_u64(r) % (uint64_t)(N - 1 - n1));
    for (int m = 0; m < M; m++) dy[(size_t)m * N + n2] = dy[(size_t)m * N + n1];
    for (int k = 0; k < K; k++) {
      w[(size_t)n1 * K + k] = (float)ldexp(w[(size_t)n1 * K + k], 20);
      w[(size_t)n2 * K + k] = -w[(size_t)n1 * K + k];
    }
  }
  if (M >= 2) { /* dW: dy[m2, :] = dy[m1, :], x[m2, :] = −x[m1, :] = big (keeps both above) */
    int m1 = (int)(pg_rng_u64(r) % (uint64_t)(M - 1));
    int m2 = m1 + 1 + (int)(pg_rng_u64(r) % (uint64_t)(M - 1 - m1));
    for (int n = 0; n < N; n++) dy[(size_t)m2 * N + n] = dy[(size_t)m1 * N + n];
    for (int k = 0; k < K; k++) {
      x[(size_t)m1 * K + k] = (float)ldexp(x[(size_t)m1 * K + k], 30);
      x[(size_t)m2 * K + k] = -x[(size_t)m1 * K + k];
    }
  }
}

/* The blocked matmul (src/engine/pg_ops.c) against the plain loops it replaced
 * (tests/pgmm_naive.h), bit for bit: forward, and both gradients accumulated onto non-zero buffers,
 * for shapes on and off the 6 × 8 tile, degenerate ones, several column blocks of packed panels (a
 * reduction of ≥ 2048 leaves ~32 columns per block), and 1, 2 and 3 threads. */
Test(ops, matmul_blocked_is_bit_identical_to_the_plain_loops) {
  static const int shapes[][3] = {
      {1, 1, 1},    {1, 1, 7},     {1, 9, 1},    {6, 1, 1},    {1, 1, 300},  {5, 1, 33},
      {1, 13, 40},  {3, 5, 1},     {4, 8, 16},   {8, 16, 64},  {5, 9, 17},   {7, 13, 33},
      {13, 5, 70},  {33, 17, 100}, {2, 3, 129},  {67, 131, 259}, {1, 131, 259}, {67, 1, 259},
      {67, 131, 1}, {9, 70, 2100}, {20, 2100, 70}, {2049, 12, 70}, {0, 5, 3}, {4, 6, 0},
  };
  pg_rng r;
  pg_rng_seed(&r, 4242);
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
    const size_t nx = (size_t)M * K, nw = (size_t)N * K, ny = (size_t)M * N;
    float *x = wild(&r, nx), *w = wild(&r, nw), *dy = wild(&r, ny);
    plant_cancellations(&r, x, w, dy, M, N, K);
    float *dx0 = wild(&r, nx), *dw0 = wild(&r, nw); /* the prefilled gradients */
    float *y_ref = filled(ny, 7.0f), *dx_ref = filled(nx, 0), *dw_ref = filled(nw, 0);
    memcpy(dx_ref, dx0, nx * sizeof *dx0), memcpy(dw_ref, dw0, nw * sizeof *dw0);
    pgmm_naive_fwd(1, y_ref, x, w, M, N, K);
    pgmm_naive_bwd(1, dx_ref, dw_ref, dy, x, w, M, N, K);
    for (int th = 1; th <= 3; th++) {
      pg_engine e = pg_engine_cpu(th);
      float *y = filled(ny, -3.0f), *dx = filled(nx, 0), *dw = filled(nw, 0);
      memcpy(dx, dx0, nx * sizeof *dx0), memcpy(dw, dw0, nw * sizeof *dw0);
      e.ops.matmul_fwd(&e.ops, y, x, w, M, N, K);
      cr_assert(!memcmp(y, y_ref, ny * sizeof *y), "forward %dx%dx%d, %d threads", M, N, K, th);
      e.ops.matmul_bwd(&e.ops, dx, dw, dy, x, w, M, N, K);
      cr_assert(!memcmp(dx, dx_ref, nx * sizeof *dx), "dx %dx%dx%d, %d threads", M, N, K, th);
      cr_assert(!memcmp(dw, dw_ref, nw * sizeof *dw), "dw %dx%dx%d, %d threads", M, N, K, th);
      /* one gradient at a time (the other NULL) gives the same bits */
      memcpy(dx, dx0, nx * sizeof *dx0), memcpy(dw, dw0, nw * sizeof *dw0);
      e.ops.matmul_bwd(&e.ops, dx, NULL, dy, x, w, M, N, K);
      e.ops.matmul_bwd(&e.ops, NULL, dw, dy, x, w, M, N, K);
      cr_assert(!memcmp(dx, dx_ref, nx * sizeof *dx), "dx alone %dx%dx%d, %d threads", M, N, K, th);
      cr_assert(!memcmp(dw, dw_ref, nw * sizeof *dw), "dw alone %dx%dx%d, %d threads", M, N, K, th);
      free(y), free(dx), free(dw);
    }
    free(x), free(w), free(dy), free(dx0), free(dw0), free(y_ref), free(dx_ref), free(dw_ref);
  }
}

/* ---- rmsnorm ------------------------------------------------------------------------------- */

typedef struct {
  double *x, *dy, *y;
  int R, D;
  double eps;
} rms_ref;

static void ref_rms(rms_ref *c) {
  for (int r = 0; r < c->R; r++) {
    double ss = 0.0;
    for (int i = 0; i < c->D; i++) ss += c->x[r * c->D + i] * c->x[r * c->D + i];
    double inv = 1.0 / sqrt(ss / c->D + c->eps);
    for (int i = 0; i < c->D; i++) c->y[r * c->D + i] = c->x[r * c->D + i] * inv;
  }
}

static double rms_loss(void *p) {
  rms_ref *c = p;
  ref_rms(c);
  return wsum(c->dy, c->y, (size_t)c->R * c->D);
}

Test(ops, rmsnorm_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 2);
  const int R = 6, D = 16;
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, R * D, 1.0), *dy = randf(&r, R * D, 1.0);
  for (int i = 0; i < D; i++) x[D + i] *= 1e-3f; /* a small row, where eps matters a little */
  float *y = filled(R * D, 0), *dx = filled(R * D, PREFILL);
  rms_ref c = {to_d(x, R * D), to_d(dy, R * D), dalloc(R * D), R, D, (double)RMS_EPS};
  e.ops.rmsnorm_fwd(&e.ops, y, x, R, D, RMS_EPS);
  ref_rms(&c);
  check_fwd("rmsnorm", y, c.y, R * D);
  e.ops.rmsnorm_bwd(&e.ops, dx, dy, x, R, D, RMS_EPS);
  double *g = dalloc(R * D);
  fd_grad(rms_loss, &c, c.x, R * D, g);
  check_bwd("rmsnorm dx", dx, g, R * D);
  /* in place gives the same bits */
  float *z = malloc(R * D * sizeof *z);
  memcpy(z, x, R * D * sizeof *z);
  e.ops.rmsnorm_fwd(&e.ops, z, z, R, D, RMS_EPS);
  cr_assert(!memcmp(z, y, R * D * sizeof *z));
  free(x), free(dy), free(y), free(dx), free(g), free(z), free(c.x), free(c.dy), free(c.y);
}

/* ---- rope ---------------------------------------------------------------------------------- */

typedef struct {
  double *x, *dy, *y;
  const int32_t *pos;
  int T, H, d, rot;
  float base;
} rope_ref;

static void ref_rope(rope_ref *c) {
  int half = c->rot / 2;
  for (int t = 0; t < c->T; t++)
    for (int h = 0; h < c->H; h++) {
      const double *x = c->x + (t * c->H + h) * c->d;
      double *y = c->y + (t * c->H + h) * c->d;
      for (int i = 0; i < half; i++) {
        float ex = (float)(2 * i) / (float)c->rot;
        float inv_freq = 1.0f / (float)pow((double)c->base, (double)ex);
        double th = (double)((float)c->pos[t] * inv_freq);
        y[i] = x[i] * cos(th) + x[i + half] * sin(th);
        y[i + half] = -x[i] * sin(th) + x[i + half] * cos(th);
      }
      for (int i = c->rot; i < c->d; i++) y[i] = x[i];
    }
}

static double rope_loss(void *p) {
  rope_ref *c = p;
  ref_rope(c);
  return wsum(c->dy, c->y, (size_t)c->T * c->H * c->d);
}

Test(ops, rope_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 3);
  const int T = 5, H = 3, d = 12, rot = 8, n = T * H * d;
  const int32_t pos[5] = {0, 1, 2, 700, 98303};
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, n, 1.0), *dy = randf(&r, n, 1.0), *y = filled(n, 0),
        *dx = filled(n, PREFILL);
  rope_ref c = {to_d(x, n), to_d(dy, n), dalloc(n), pos, T, H, d, rot, 1e4f};
  e.ops.rope_fwd(&e.ops, y, x, pos, T, H, d, rot, 1e4f);
  ref_rope(&c);
  check_fwd("rope", y, c.y, n);
  e.ops.rope_bwd(&e.ops, dx, dy, pos, T, H, d, rot, 1e4f);
  double *g = dalloc(n);
  fd_grad(rope_loss, &c, c.x, n, g);
  check_bwd("rope dx", dx, g, n);
  free(x), free(dy), free(y), free(dx), free(g), free(c.x), free(c.dy), free(c.y);
}

Test(ops, rope_partial_position_zero_sign_and_inverse) {
  pg_rng r;
  pg_rng_seed(&r, 4);
  const int T = 4, H = 2, d = 16, rot = 8, n = T * H * d;
  const int32_t pos[4] = {0, 3, 17, 4000};
  pg_engine e = pg_engine_cpu(1);
  float *x = randf(&r, n, 1.0), *y = filled(n, 0), *back = filled(n, 0);
  e.ops.rope_fwd(&e.ops, y, x, pos, T, H, d, rot, 1e4f);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const float *xr = x + (t * H + h) * d, *yr = y + (t * H + h) * d;
      /* the unrotated dims are copied bit for bit; position 0 is the identity */
      cr_assert(!memcmp(xr + rot, yr + rot, (size_t)(d - rot) * sizeof *xr));
      if (pos[t] == 0) cr_assert(!memcmp(xr, yr, (size_t)d * sizeof *xr));
    }
  /* the backward is the inverse rotation: R^T R x = x up to one rounding each way */
  e.ops.rope_bwd(&e.ops, back, y, pos, T, H, d, rot, 1e4f);
  for (int i = 0; i < n; i++) cr_assert(fabs((double)back[i] - x[i]) <= 1e-6 * fmax(1, fabs(x[i])));
  /* the sign convention: rot 2, pair (0, 1), θ = 1: (1, 0) → (cos 1, −sin 1), (0, 1) → (sin 1, cos
   * 1) */
  const float u[4] = {1, 0, 0, 1};
  const int32_t one[2] = {1, 1};
  float v[4];
  e.ops.rope_fwd(&e.ops, v, u, one, 2, 1, 2, 2, 1e4f);
  cr_assert_eq(v[0], (float)cos(1.0));
  cr_assert_eq(v[1], (float)-sin(1.0));
  cr_assert_eq(v[2], (float)sin(1.0));
  cr_assert_eq(v[3], (float)cos(1.0));
  /* in place gives the same bits */
  e.ops.rope_fwd(&e.ops, x, x, pos, T, H, d, rot, 1e4f);
  cr_assert(!memcmp(x, y, n * sizeof *x));
  free(x), free(y), free(back);
}

/* ---- attention ----------------------------------------------------------------------------- */

typedef struct {
  double *q, *k, *v, *dy, *y;
  const int32_t *seg;
  int T, H, Hkv, d;
  double scale;
} attn_ref;

static void ref_attn(attn_ref *c) {
  int rep = c->H / c->Hkv;
  double *p = dalloc(c->T);
  for (int t = 0; t < c->T; t++)
    for (int h = 0; h < c->H; h++) {
      int g = h / rep;
      double mx = -INFINITY, den = 0.0;
      for (int s = 0; s <= t; s++) {
        p[s] = -INFINITY;
        if (c->seg && c->seg[s] != c->seg[t]) continue;
        double dot = 0.0;
        for (int i = 0; i < c->d; i++)
          dot += c->q[(t * c->H + h) * c->d + i] * c->k[(s * c->Hkv + g) * c->d + i];
        p[s] = c->scale * dot;
        mx = fmax(mx, p[s]);
      }
      for (int s = 0; s <= t; s++) den += (p[s] = exp(p[s] - mx));
      for (int i = 0; i < c->d; i++) {
        double o = 0.0;
        for (int s = 0; s <= t; s++) o += p[s] / den * c->v[(s * c->Hkv + g) * c->d + i];
        c->y[(t * c->H + h) * c->d + i] = o;
      }
    }
  free(p);
}

static double attn_loss(void *p) {
  attn_ref *c = p;
  ref_attn(c);
  return wsum(c->dy, c->y, (size_t)c->T * c->H * c->d);
}

static void attention_check(const int32_t *seg, uint64_t seed) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  const int T = 7, H = 4, Hkv = 2, d = 8, nq = T * H * d, nk = T * Hkv * d;
  const float scale = 1.0f / sqrtf((float)d);
  pg_engine e = pg_engine_cpu(2);
  float *q = randf(&r, nq, 1.0), *k = randf(&r, nk, 1.0), *v = randf(&r, nk, 1.0);
  float *dy = randf(&r, nq, 1.0), *y = filled(nq, 0);
  float *dq = filled(nq, PREFILL), *dk = filled(nk, PREFILL), *dv = filled(nk, PREFILL);
  attn_ref c = {to_d(q, nq), to_d(k, nk), to_d(v, nk), to_d(dy, nq), dalloc(nq), seg, T, H, Hkv, d,
                (double)scale};
  e.ops.attention_fwd(&e.ops, y, q, k, v, seg, 1, T, H, Hkv, d, scale);
  ref_attn(&c);
  check_fwd("attention", y, c.y, nq);
  e.ops.attention_bwd(&e.ops, dq, dk, dv, dy, q, k, v, seg, 1, T, H, Hkv, d, scale);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  double *g = dalloc(nq);
  fd_grad(attn_loss, &c, c.q, nq, g);
  check_bwd("attention dq", dq, g, nq);
  fd_grad(attn_loss, &c, c.k, nk, g);
  check_bwd("attention dk", dk, g, nk);
  fd_grad(attn_loss, &c, c.v, nk, g);
  check_bwd("attention dv", dv, g, nk);
  free(q), free(k), free(v), free(dy), free(y), free(dq), free(dk), free(dv), free(g);
  free(c.q), free(c.k), free(c.v), free(c.dy), free(c.y);
}

Test(ops, attention_gqa_forward_and_gradients) { attention_check(NULL, 5); }

Test(ops, attention_gqa_document_mask_forward_and_gradients) {
  const int32_t seg[7] = {0, 0, 0, 1, 1, 2, 2};
  attention_check(seg, 6);
}

/* The attention forward as spec/engine.md §4.4 writes it, one row and one output at a time:
 * the order every faster path of src/engine/pg_ops.c must reproduce bit for bit. */
static void plain_attn_fwd(float *out, const float *q, const float *k, const float *v,
                           const int32_t *seg, int T, int H, int Hkv, int d, float scale) {
  double *l = dalloc(T);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      int g = h / (H / Hkv);
      double mx = -INFINITY, den = 0.0;
      for (int s = 0; s <= t; s++) {
        if (seg && seg[s] != seg[t]) continue;
        double dot = 0.0;
        for (int i = 0; i < d; i++)
          dot += (double)q[(t * H + h) * d + i] * (double)k[(s * Hkv + g) * d + i];
        l[s] = (double)scale * dot;
        if (l[s] > mx) mx = l[s];
      }
      for (int s = 0; s <= t; s++)
        if (!seg || seg[s] == seg[t]) den += (l[s] = pg_exp_inline(l[s] - mx));
      for (int i = 0; i < d; i++) {
        double o = 0.0;
        for (int s = 0; s <= t; s++)
          if (!seg || seg[s] == seg[t]) o = fma(l[s], (double)v[(s * Hkv + g) * d + i], o);
        out[(t * H + h) * d + i] = (float)(o / den);
      }
    }
  free(l);
}

/* The softmaxes' exp (spec/engine.md §2.1): hand-checked values and the edges of its range, the
 * AVX2 version lane for lane against the scalar one, and within 1 ulp of the exact exponential
 * (long double) over the range the softmaxes use and around it. */
static double ulps_off(double y, long double exact) {
  if (exact == 0.0L) return y == 0.0 ? 0.0 : INFINITY;
  int e;
  frexpl(fabsl(exact), &e);
  double ulp = ldexp(1.0, (e - 53) < -1074 ? -1074 : e - 53);
  return (double)(fabsl((long double)y - exact) / (long double)ulp);
}

#ifdef PG_EXP_HAVE_AVX2
__attribute__((target("avx2,fma"))) static void exp4_all(double *y, const double *x, int n) {
  for (int i = 0; i + 4 <= n; i += 4) _mm256_storeu_pd(y + i, pg_exp4(_mm256_loadu_pd(x + i)));
}
/* the same through pg_exp4_ways, PG_EXP_WAYS vectors at once */
__attribute__((target("avx2,fma"))) static void exp4_ways_all(double *y, const double *x, int n) {
  for (int i = 0; i + 4 * PG_EXP_WAYS <= n; i += 4 * PG_EXP_WAYS) {
    __m256d v[PG_EXP_WAYS];
    for (int j = 0; j < PG_EXP_WAYS; j++) v[j] = _mm256_loadu_pd(x + i + 4 * j);
    pg_exp4_ways(v);
    for (int j = 0; j < PG_EXP_WAYS; j++) _mm256_storeu_pd(y + i + 4 * j, v[j]);
  }
}
#endif

Test(ops, softmax_exp_is_its_definition_within_one_ulp) {
  cr_assert_eq(pg_exp_inline(0.0), 1.0);
  cr_assert_eq(pg_exp_inline(-0.0), 1.0);
  cr_assert_eq(pg_exp_inline(1.0), 0x1.5bf0a8b145769p+1);
  cr_assert_eq(pg_exp_inline(-1.0), 0x1.78b56362cef38p-2);
  cr_assert_eq(pg_exp_inline(-INFINITY), 0.0);
  cr_assert_eq(pg_exp_inline(-746.0), 0.0);
  cr_assert_eq(pg_exp_inline(-745.1), 0x1p-1074); /* the smallest subnormal */
  cr_assert_eq(pg_exp_inline(709.7), 0x1.d75ae7a50ee14p+1023);
  cr_assert(isinf(pg_exp_inline(709.8)) && isinf(pg_exp_inline(INFINITY)));
  cr_assert(isnan(pg_exp_inline(NAN)));
  enum { N = 1 << 16 };
  static const double ranges[][2] = {{-0.35, 0.35}, {-40.0, 0.0}, {-746.0, 0.0}, {-750.0, 712.0}};
  double *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  pg_rng r;
  pg_rng_seed(&r, 77);
  for (size_t k = 0; k < sizeof ranges / sizeof ranges[0]; k++) {
    for (int i = 0; i < N; i++)
      x[i] = ranges[k][0] + (ranges[k][1] - ranges[k][0]) * pg_rng_uniform(&r);
    x[0] = NAN, x[1] = -INFINITY, x[2] = INFINITY, x[3] = -0.0;
    double worst = 0.0;
    for (int i = 4; i < N; i++) {
      long double ex = expl((long double)x[i]);
      if (ex > (long double)DBL_MAX) continue;
      double u = ulps_off(pg_exp_inline(x[i]), ex);
      if (u > worst) worst = u;
    }
    cr_assert(worst < 1.0, "[%g, %g]: %.3f ulp", ranges[k][0], ranges[k][1], worst);
#ifdef PG_EXP_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
      for (int ways = 0; ways <= 1; ways++) {
        (ways ? exp4_ways_all : exp4_all)(y, x, N); /* N is a multiple of 4·PG_EXP_WAYS */
        for (int i = 0; i < N; i++) {
          double s = pg_exp_inline(x[i]);
          cr_assert(!memcmp(&s, &y[i], sizeof s), "exp(%a): scalar %a, AVX2 %a (ways %d)", x[i],
                    s, y[i], ways);
        }
      }
    }
#endif
  }
  free(x), free(y);
}

/* The packed (AVX2) attention forward against the plain loops: head dims on and off its register
 * tiles of 12 and 4 dims (and d not a multiple of 4, the plain path), lengths on and off its
 * tiles of 8 positions, blocks of 12 keys and of 64 keys, GQA with 1 to 8 query heads per kv head
 * (so groups of four rows span positions and end short), MHA, without a mask, with documents
 * (contiguous runs, so whole blocks of keys come before a tile's first allowed key) and with
 * stray segment ids (rows of one group in different segments), 1, 2 and 3 threads. */
Test(ops, attention_forward_is_bit_identical_to_the_plain_loops) {
  static const int shapes[][4] = {/* T, H, Hkv, d */
                                  {1, 1, 1, 4},    {5, 2, 1, 8},    {17, 4, 2, 36},
                                  {40, 4, 4, 64},  {33, 6, 2, 68},  {16, 2, 2, 32},
                                  {9, 3, 1, 6},    {70, 8, 4, 100}, {2, 8, 1, 12},
                                  {3, 3, 1, 24},   {13, 5, 1, 16},  {25, 6, 3, 28},
                                  {37, 8, 1, 60},  {49, 4, 2, 4},   {61, 7, 7, 44},
                                  {75, 8, 2, 64},  {97, 12, 4, 20}, {130, 2, 1, 64}};
  pg_rng r;
  pg_rng_seed(&r, 4243);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const int T = shapes[c][0], H = shapes[c][1], Hkv = shapes[c][2], d = shapes[c][3];
    const int nq = T * H * d, nk = T * Hkv * d;
    const float scale = 1.0f / sqrtf((float)d);
    float *q = randf(&r, nq, 2.0), *k = randf(&r, nk, 2.0), *v = randf(&r, nk, 1.0);
    int32_t *segs[2] = {malloc((size_t)T * sizeof(int32_t)), malloc((size_t)T * sizeof(int32_t))};
    for (int t = 0; t < T; t++) {
      segs[0][t] = t / 7 + (t % 5 == 3);                         /* runs, and a few stray ids */
      segs[1][t] = t < 5 ? 0 : t < 30 ? 1 : 2 + (t - 30) / 19; /* documents of 5, 25, 19 … */
    }
    for (int masked = 0; masked <= 2; masked++) {
      const int32_t *seg = masked ? segs[masked - 1] : NULL;
      float *ref = filled(nq, 0);
      plain_attn_fwd(ref, q, k, v, seg, T, H, Hkv, d, scale);
      for (int th = 1; th <= 3; th++) {
        pg_engine e = pg_engine_cpu(th);
        float *y = filled(nq, -5.0f);
        e.ops.attention_fwd(&e.ops, y, q, k, v, seg, 1, T, H, Hkv, d, scale);
        cr_assert(!memcmp(y, ref, (size_t)nq * sizeof *y),
                  "T %d H %d Hkv %d d %d mask %d, %d threads", T, H, Hkv, d, masked, th);
        free(y);
      }
      free(ref);
    }
    free(q), free(k), free(v), free(segs[0]), free(segs[1]);
  }
}

/* Outputs rounded to fp32 hide most changes in the order of an fp64 sum, so the test above would
 * not see the values' keys taken out of order. Here q = 0 (every weight is exactly 1) and v has
 * pairs +B, −B (B = 2^33) at every ninth key: a row's sum cancels each pair exactly only when the
 * keys come in ascending order; any other order rounds the small values to B's ulp on the way
 * and changes the result (checked: the same sums in descending order give other bits). */
Test(ops, attention_forward_takes_the_values_in_order) {
  static const int shapes[][4] = {{61, 6, 2, 28}, {75, 8, 4, 64}, {50, 3, 3, 16}};
  pg_rng r;
  pg_rng_seed(&r, 4247);
  for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
    const int T = shapes[c][0], H = shapes[c][1], Hkv = shapes[c][2], d = shapes[c][3];
    const int nq = T * H * d, nk = T * Hkv * d;
    float *q = filled(nq, 0.0f), *k = randf(&r, nk, 1.0), *v = randf(&r, nk, 1.0);
    for (int s = 0; s < T; s++)
      for (int i = 0; i < Hkv * d; i++)
        if (s % 9 < 2) v[s * Hkv * d + i] = s % 9 ? -0x1p33f : 0x1p33f;
    int32_t *seg = malloc((size_t)T * sizeof *seg);
    for (int t = 0; t < T; t++) seg[t] = t < 11 ? 0 : 1 + (t - 11) / 27; /* documents of 11, 27 */
    for (int masked = 0; masked <= 1; masked++) {
      float *ref = filled(nq, 0), *rev = filled(nq, 0);
      plain_attn_fwd(ref, q, k, v, masked ? seg : NULL, T, H, Hkv, d, 0.5f);
      if (!masked) { /* the teeth: descending order, every weight 1 */
        for (int t = 0; t < T; t++)
          for (int h = 0; h < H; h++)
            for (int i = 0; i < d; i++) {
              double o = 0.0;
              for (int s = t; s >= 0; s--) o += (double)v[(s * Hkv + h / (H / Hkv)) * d + i];
              rev[(t * H + h) * d + i] = (float)(o / (double)(t + 1));
            }
        cr_assert(memcmp(rev, ref, (size_t)nq * sizeof *ref), "the inputs tell no order apart");
      }
      for (int th = 1; th <= 2; th++) {
        pg_engine e = pg_engine_cpu(th);
        float *y = filled(nq, -5.0f);
        e.ops.attention_fwd(&e.ops, y, q, k, v, masked ? seg : NULL, 1, T, H, Hkv, d, 0.5f);
        cr_assert(!memcmp(y, ref, (size_t)nq * sizeof *y),
                  "T %d H %d Hkv %d d %d mask %d, %d threads", T, H, Hkv, d, masked, th);
        free(y);
      }
      free(ref), free(rev);
    }
    free(q), free(k), free(v), free(seg);
  }
}

Test(ops, attention_never_crosses_a_segment) {
  pg_rng r;
  pg_rng_seed(&r, 7);
  const int T = 9, H = 4, Hkv = 2, d = 8, nq = T * H * d, nk = T * Hkv * d;
  const int32_t seg[9] = {0, 0, 0, 1, 1, 1, 1, 2, 2};
  pg_engine e = pg_engine_cpu(1);
  float *q = randf(&r, nq, 1.0), *k = randf(&r, nk, 1.0), *v = randf(&r, nk, 1.0);
  float *y0 = filled(nq, 0), *y1 = filled(nq, 0);
  e.ops.attention_fwd(&e.ops, y0, q, k, v, seg, 1, T, H, Hkv, d, 0.35f);
  /* change token 1 (segment 0): tokens 3..8 are untouched */
  for (int i = 0; i < Hkv * d; i++) k[Hkv * d + i] += 3.0f, v[Hkv * d + i] -= 2.0f;
  for (int i = 0; i < H * d; i++) q[H * d + i] *= -1.5f;
  e.ops.attention_fwd(&e.ops, y1, q, k, v, seg, 1, T, H, Hkv, d, 0.35f);
  cr_assert(!memcmp(y0 + 3 * H * d, y1 + 3 * H * d, (size_t)(T - 3) * H * d * sizeof *y0));
  cr_assert(memcmp(y0 + H * d, y1 + H * d, (size_t)H * d * sizeof *y0)); /* token 1 did change */
  /* change token 4 (segment 1): segments 0 and 2 are untouched */
  for (int i = 0; i < Hkv * d; i++) k[4 * Hkv * d + i] += 1.0f, v[4 * Hkv * d + i] += 1.0f;
  e.ops.attention_fwd(&e.ops, y0, q, k, v, seg, 1, T, H, Hkv, d, 0.35f);
  cr_assert(!memcmp(y0, y1, (size_t)3 * H * d * sizeof *y0));
  cr_assert(!memcmp(y0 + 7 * H * d, y1 + 7 * H * d, (size_t)2 * H * d * sizeof *y0));
  /* one token per segment: each head returns its kv head's own value exactly (GQA h → h/2) */
  const int32_t lone[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  e.ops.attention_fwd(&e.ops, y0, q, k, v, lone, 1, T, H, Hkv, d, 0.35f);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++)
      cr_assert(!memcmp(y0 + (t * H + h) * d, v + (t * Hkv + h / 2) * d, d * sizeof *v));
  free(q), free(k), free(v), free(y0), free(y1);
}

/* The grouped product is each group's matmul, bit for bit; groups that share a matrix add their
 * dW into it in descending group order. */
Test(ops, matmul_grouped_is_each_group_alone) {
  pg_rng r;
  pg_rng_seed(&r, 23);
  enum { G = 4, M = 7, N = 5, K = 6, NW = 3, WS = N * K + 3 };
  pg_engine e = pg_engine_cpu(2);
  const int32_t widx[G] = {2, 0, 2, 1};
  float *x = randf(&r, G * M * K, 1.0), *w = randf(&r, (NW - 1) * WS + N * K, 1.0);
  float *dy = randf(&r, G * M * N, 1.0);
  float *y = filled(G * M * N, 0), *y1 = filled(G * M * N, 0);
  float *dx = filled(G * M * K, PREFILL), *dx1 = filled(G * M * K, PREFILL);
  float *dw = filled((NW - 1) * WS + N * K, PREFILL), *dw1 = filled((NW - 1) * WS + N * K, PREFILL);
  e.ops.matmul_grouped_fwd(&e.ops, y, x, w, widx, WS, G, M, N, K);
  e.ops.matmul_grouped_bwd(&e.ops, dx, dw, dy, x, w, widx, WS, G, M, N, K);
  for (int g = 0; g < G; g++)
    e.ops.matmul_fwd(&e.ops, y1 + g * M * N, x + g * M * K, w + widx[g] * WS, M, N, K);
  for (int g = G - 1; g >= 0; g--)
    e.ops.matmul_bwd(&e.ops, dx1 + g * M * K, dw1 + widx[g] * WS, dy + g * M * N, x + g * M * K,
                     w + widx[g] * WS, M, N, K);
  cr_assert(!memcmp(y, y1, G * M * N * sizeof *y));
  cr_assert(!memcmp(dx, dx1, G * M * K * sizeof *dx));
  cr_assert(!memcmp(dw, dw1, ((NW - 1) * WS + N * K) * sizeof *dw));
  for (int j = N * K; j < WS; j++) cr_assert_eq(dw[j], PREFILL, "the gap between matrices");
  free(x), free(w), free(dy), free(y), free(y1), free(dx), free(dx1), free(dw), free(dw1);
}

/* One call over a batch of sequences is each sequence by itself, bit for bit (forward, bf16
 * forward and all three gradients, with segments and without): sequences never see each other. */
Test(ops, attention_batch_is_each_sequence_alone) {
  pg_rng r;
  pg_rng_seed(&r, 21);
  enum { B = 3, T = 11, H = 4, Hkv = 2, d = 8, nq = T * H * d, nk = T * Hkv * d };
  pg_engine e = pg_engine_cpu(2);
  float *q = randf(&r, B * nq, 1.0), *k = randf(&r, B * nk, 1.0), *v = randf(&r, B * nk, 1.0);
  float *dy = randf(&r, B * nq, 1.0);
  int32_t seg[B * T];
  for (int i = 0; i < B * T; i++) seg[i] = (i % T) / 4;
  for (int masked = 0; masked < 2; masked++)
    for (int bf = 0; bf < 2; bf++) {
      float *y = filled(B * nq, 0), *y1 = filled(B * nq, 0);
      float *dq = filled(B * nq, PREFILL), *dk = filled(B * nk, PREFILL),
            *dv = filled(B * nk, PREFILL);
      float *dq1 = filled(B * nq, PREFILL), *dk1 = filled(B * nk, PREFILL),
            *dv1 = filled(B * nk, PREFILL);
      const int32_t *sg = masked ? seg : NULL;
      (bf ? e.ops.attention_bf16_fwd : e.ops.attention_fwd)(&e.ops, y, q, k, v, sg, B, T, H, Hkv, d,
                                                            0.3f);
      if (!bf) e.ops.attention_bwd(&e.ops, dq, dk, dv, dy, q, k, v, sg, B, T, H, Hkv, d, 0.3f);
      for (int b = 0; b < B; b++) {
        const int32_t *sb = masked ? seg + b * T : NULL;
        (bf ? e.ops.attention_bf16_fwd : e.ops.attention_fwd)(
            &e.ops, y1 + b * nq, q + b * nq, k + b * nk, v + b * nk, sb, 1, T, H, Hkv, d, 0.3f);
        if (!bf)
          e.ops.attention_bwd(&e.ops, dq1 + b * nq, dk1 + b * nk, dv1 + b * nk, dy + b * nq,
                              q + b * nq, k + b * nk, v + b * nk, sb, 1, T, H, Hkv, d, 0.3f);
      }
      cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
      cr_assert(!memcmp(y, y1, B * nq * sizeof *y), "forward (mask %d, bf16 %d)", masked, bf);
      cr_assert(!memcmp(dq, dq1, B * nq * sizeof *dq), "dq (mask %d)", masked);
      cr_assert(!memcmp(dk, dk1, B * nk * sizeof *dk), "dk (mask %d)", masked);
      cr_assert(!memcmp(dv, dv1, B * nk * sizeof *dv), "dv (mask %d)", masked);
      free(y), free(y1), free(dq), free(dk), free(dv), free(dq1), free(dk1), free(dv1);
    }
  free(q), free(k), free(v), free(dy);
}

/* ---- activations, gates, softcap ----------------------------------------------------------- */

typedef struct {
  double *x, *g, *dy, *y;
  size_t n;
  int D; /* rowgate: the row length (g has n / D entries) */
  double a;
  int kind; /* 0 relu², 1 leaky relu², 2 gate, 3 softcap, 4 rowgate */
} ew_ref;

static void ref_ew(ew_ref *c) {
  for (size_t i = 0; i < c->n; i++) {
    double x = c->x[i], u;
    switch (c->kind) {
    case 0: u = x > 0 ? x : 0; c->y[i] = u * u; break;
    case 1: u = x > 0 ? x : c->a * x; c->y[i] = u * u; break;
    case 3: c->y[i] = c->a * tanh(x / c->a); break;
    default: c->y[i] = x * sigm(c->g[i / (size_t)c->D]); break;
    }
  }
}

static double ew_loss(void *p) {
  ew_ref *c = p;
  ref_ew(c);
  return wsum(c->dy, c->y, c->n);
}

static void ew_check(int kind, float a, uint64_t seed) {
  static const char *names[] = {"relu2", "leaky_relu2", "", "softcap", "rowgate"};
  pg_rng r;
  pg_rng_seed(&r, seed);
  const int D = 5;
  const size_t n = 60, ng = kind == 4 ? n / D : n;
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, n, kind == 3 ? 6.0 : 1.0), *g = randf(&r, ng, 2.0), *dy = randf(&r, n, 1.0);
  for (size_t i = 0; i < n; i++) /* keep away from the kink at 0 for the differences */
    if (fabsf(x[i]) < 1e-3f) x[i] = 0.1f;
  float *y = filled(n, 0), *dx = filled(n, PREFILL), *dg = filled(ng, PREFILL);
  ew_ref c = {to_d(x, n), to_d(g, ng), to_d(dy, n), dalloc(n), n, D, (double)a, kind};
  switch (kind) {
  case 0: e.ops.relu2_fwd(&e.ops, y, x, n); e.ops.relu2_bwd(&e.ops, dx, dy, x, n); break;
  case 1:
    e.ops.leaky_relu2_fwd(&e.ops, y, x, n, a);
    e.ops.leaky_relu2_bwd(&e.ops, dx, dy, x, n, a);
    break;
  case 3: e.ops.softcap_fwd(&e.ops, y, x, n, a); e.ops.softcap_bwd(&e.ops, dx, dy, x, n, a); break;
  default:
    e.ops.rowgate_fwd(&e.ops, y, x, g, (int)ng, D);
    e.ops.rowgate_bwd(&e.ops, dx, dg, dy, x, g, (int)ng, D);
  }
  ref_ew(&c);
  check_fwd(names[kind], y, c.y, n);
  double *fd = dalloc(n);
  fd_grad(ew_loss, &c, c.x, n, fd);
  check_bwd(names[kind], dx, fd, n);
  if (kind == 4) {
    fd_grad(ew_loss, &c, c.g, ng, fd);
    check_bwd("rowgate dg", dg, fd, ng);
  }
  free(x), free(g), free(dy), free(y), free(dx), free(dg), free(fd);
  free(c.x), free(c.g), free(c.dy), free(c.y);
}

Test(ops, relu2_forward_and_gradient) { ew_check(0, 0.0f, 8); }
Test(ops, leaky_relu2_forward_and_gradient) { ew_check(1, 0.5f, 9); }
Test(ops, softcap_forward_and_gradient) { ew_check(3, 3.0f, 11); }
Test(ops, rowgate_forward_and_gradients) { ew_check(4, 0.0f, 12); }

/* relu² forward and backward against the definition (relu(x) = x > 0 ? x : 0), bit for bit, on
 * signed zeros, NaNs, infinities, subnormals, squares that overflow or underflow, and random
 * values, at a length off every vector width, 1 and 2 threads. */
Test(ops, relu2_is_its_definition_on_edge_values) {
  enum { N = 1037 };
  static const float edge[] = {0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, 1e-45f, -1e-45f,
                               1e-20f, 3e19f, 2e19f, -3e19f, FLT_MAX, -FLT_MAX, 1.0f, -1.0f};
  const size_t ne = sizeof edge / sizeof edge[0];
  pg_rng r;
  pg_rng_seed(&r, 31);
  float *x = randf(&r, N, 3.0), *dy = randf(&r, N, 1.0);
  for (size_t i = 0; i < ne; i++) x[7 * i + 3] = edge[i];
  float *want = filled(N, 0), *dwant = filled(N, 0.25f);
  for (int i = 0; i < N; i++) {
    double u = x[i] > 0.0f ? (double)x[i] : 0.0;
    want[i] = (float)(u * u);
    dwant[i] = (float)((double)dwant[i] + (double)dy[i] * 2.0 * u);
  }
  for (int th = 1; th <= 2; th++) {
    pg_engine e = pg_engine_cpu(th);
    float *y = filled(N, -1.0f), *dx = filled(N, 0.25f);
    e.ops.relu2_fwd(&e.ops, y, x, N);
    e.ops.relu2_bwd(&e.ops, dx, dy, x, N);
    for (int i = 0; i < N; i++) {
      cr_assert(!memcmp(&y[i], &want[i], sizeof *y), "relu2(%a) = %a, not %a", x[i], y[i],
                want[i]);
      cr_assert(!memcmp(&dx[i], &dwant[i], sizeof *dx), "relu2' at %a: %a, not %a", x[i], dx[i],
                dwant[i]);
    }
    free(y), free(dx);
  }
  free(x), free(dy), free(want), free(dwant);
}

Test(ops, activation_and_softcap_bounds) {
  pg_engine e = pg_engine_cpu(1);
  const float x[6] = {-3.0f, -0.5f, 0.0f, 0.25f, 2.0f, 1e4f};
  float y[6];
  e.ops.relu2_fwd(&e.ops, y, x, 6);
  const float want_relu[6] = {0, 0, 0, 0.0625f, 4.0f, 1e8f};
  cr_assert(!memcmp(y, want_relu, sizeof y));
  e.ops.leaky_relu2_fwd(&e.ops, y, x, 6, 0.5f);
  const float want_leaky[6] = {2.25f, 0.0625f, 0, 0.0625f, 4.0f, 1e8f};
  cr_assert(!memcmp(y, want_leaky, sizeof y));
  /* softcap: |y| ≤ c, odd, monotone, ≈ identity near 0 */
  const float z[7] = {-1e30f, -1e4f, -30.0f, 0.0f, 1e-3f, 30.0f, 1e4f};
  float s[7];
  e.ops.softcap_fwd(&e.ops, s, z, 7, 30.0f);
  for (int i = 0; i < 7; i++) cr_assert(fabsf(s[i]) <= 30.0f);
  for (int i = 1; i < 7; i++) cr_assert(s[i] >= s[i - 1]);
  cr_assert_eq(s[0], -30.0f);
  cr_assert_eq(s[6], 30.0f);
  cr_assert_eq(s[3], 0.0f);
  cr_assert_eq(s[2], -s[5]);
  cr_assert(fabs(s[4] - 1e-3) < 1e-9);
  cr_assert(fabs(s[5] - 30.0 * tanh(1.0)) < 1e-5);
  /* the row gate at g = 0 halves; at ±large it passes or blocks */
  const float gx[3] = {2.0f, 2.0f, 2.0f}, gg[3] = {0.0f, 100.0f, -100.0f};
  float gy[3];
  e.ops.rowgate_fwd(&e.ops, gy, gx, gg, 3, 1);
  cr_assert_eq(gy[0], 1.0f);
  cr_assert_eq(gy[1], 2.0f);
  cr_assert(gy[2] >= 0.0f && gy[2] < 1e-40f);
}

/* ---- chanmul and XSA ----------------------------------------------------------------------- */

typedef struct {
  double *x, *s, *dy, *y;
  int R, C;
} cm_ref;

static double cm_loss(void *p) {
  cm_ref *c = p;
  for (int r = 0; r < c->R; r++)
    for (int j = 0; j < c->C; j++) c->y[r * c->C + j] = c->x[r * c->C + j] * c->s[j];
  return wsum(c->dy, c->y, (size_t)c->R * c->C);
}

Test(ops, chanmul_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 14);
  const int R = 6, C = 70; /* C crosses the 64-column block */
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, R * C, 1.0), *sc = randf(&r, C, 1.0), *dy = randf(&r, R * C, 1.0);
  float *y = filled(R * C, 0), *dx = filled(R * C, PREFILL), *ds = filled(C, PREFILL);
  cm_ref c = {to_d(x, R * C), to_d(sc, C), to_d(dy, R * C), dalloc(R * C), R, C};
  e.ops.chanmul_fwd(&e.ops, y, x, sc, R, C);
  cm_loss(&c);
  check_fwd("chanmul", y, c.y, R * C);
  e.ops.chanmul_bwd(&e.ops, dx, ds, dy, x, sc, R, C);
  double *g = dalloc(R * C);
  fd_grad(cm_loss, &c, c.x, R * C, g);
  check_bwd("chanmul dx", dx, g, R * C);
  fd_grad(cm_loss, &c, c.s, C, g);
  check_bwd("chanmul ds", ds, g, C);
  free(x), free(sc), free(dy), free(y), free(dx), free(ds), free(g);
  free(c.x), free(c.s), free(c.dy), free(c.y);
}

typedef struct {
  double *y, *v, *dy, *out;
  int T, H, Hkv, d;
} xsa_ref;

static double xsa_loss(void *p) {
  xsa_ref *c = p;
  for (int t = 0; t < c->T; t++)
    for (int h = 0; h < c->H; h++) {
      const double *v = c->v + (t * c->Hkv + h / (c->H / c->Hkv)) * c->d;
      const double *y = c->y + (t * c->H + h) * c->d;
      double nn = 0.0, a = 0.0;
      for (int i = 0; i < c->d; i++) nn += v[i] * v[i];
      nn = fmax(sqrt(nn), 1e-12);
      for (int i = 0; i < c->d; i++) a += y[i] * v[i] / nn;
      for (int i = 0; i < c->d; i++) c->out[(t * c->H + h) * c->d + i] = y[i] - a * v[i] / nn;
    }
  return wsum(c->dy, c->out, (size_t)c->T * c->H * c->d);
}

Test(ops, xsa_forward_gradients_and_orthogonality) {
  pg_rng r;
  pg_rng_seed(&r, 15);
  const int T = 5, H = 4, Hkv = 2, d = 8, ny = T * H * d, nv = T * Hkv * d;
  pg_engine e = pg_engine_cpu(2);
  float *y = randf(&r, ny, 1.0), *v = randf(&r, nv, 1.0), *dout = randf(&r, ny, 1.0);
  float *out = filled(ny, 0), *dy = filled(ny, PREFILL), *dv = filled(nv, PREFILL);
  xsa_ref c = {to_d(y, ny), to_d(v, nv), to_d(dout, ny), dalloc(ny), T, H, Hkv, d};
  e.ops.xsa_fwd(&e.ops, out, y, v, T, H, Hkv, d);
  xsa_loss(&c);
  check_fwd("xsa", out, c.out, ny);
  /* the output is orthogonal to the token's own value */
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      double dot = 0.0;
      for (int i = 0; i < d; i++)
        dot += (double)out[(t * H + h) * d + i] * v[(t * Hkv + h / 2) * d + i];
      cr_assert(fabs(dot) < 1e-5);
    }
  e.ops.xsa_bwd(&e.ops, dy, dv, dout, y, v, T, H, Hkv, d);
  double *g = dalloc(ny);
  fd_grad(xsa_loss, &c, c.y, ny, g);
  check_bwd("xsa dy", dy, g, ny);
  fd_grad(xsa_loss, &c, c.v, nv, g);
  check_bwd("xsa dv", dv, g, nv);
  /* a zero value vector leaves y unchanged */
  memset(v, 0, (size_t)nv * sizeof *v);
  e.ops.xsa_fwd(&e.ops, out, y, v, T, H, Hkv, d);
  cr_assert(!memcmp(out, y, (size_t)ny * sizeof *y));
  free(y), free(v), free(dout), free(out), free(dy), free(dv), free(g);
  free(c.y), free(c.v), free(c.dy), free(c.out);
}

/* ---- cross-entropy ------------------------------------------------------------------------- */

typedef struct {
  double *l, *dnll, *nll;
  const int32_t *tg;
  int T, V;
} ce_ref;

static void ref_ce(ce_ref *c) {
  for (int t = 0; t < c->T; t++) {
    double mx = -INFINITY, s = 0.0;
    for (int v = 0; v < c->V; v++) mx = fmax(mx, c->l[t * c->V + v]);
    for (int v = 0; v < c->V; v++) s += exp(c->l[t * c->V + v] - mx);
    c->nll[t] = mx + log(s) - c->l[t * c->V + c->tg[t]];
  }
}

static double ce_loss(void *p) {
  ce_ref *c = p;
  ref_ce(c);
  return wsum(c->dnll, c->nll, (size_t)c->T);
}

Test(ops, cross_entropy_forward_and_gradient) {
  pg_rng r;
  pg_rng_seed(&r, 13);
  const int T = 4, V = 11;
  const int32_t tg[4] = {0, 10, 3, 3};
  pg_engine e = pg_engine_cpu(2);
  float *l = randf(&r, T * V, 3.0), *dnll = randf(&r, T, 1.0), *dl = filled(T * V, PREFILL);
  double nll[4];
  ce_ref c = {to_d(l, T * V), to_d(dnll, T), dalloc(T), tg, T, V};
  e.ops.ce_fwd(&e.ops, nll, l, tg, T, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  ref_ce(&c);
  for (int t = 0; t < T; t++) cr_assert(fabs(nll[t] - c.nll[t]) <= 1e-12 * fmax(1, c.nll[t]));
  e.ops.ce_bwd(&e.ops, dl, dnll, l, tg, T, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  double *g = dalloc(T * V);
  fd_grad(ce_loss, &c, c.l, T * V, g);
  check_bwd("cross-entropy dlogits", dl, g, T * V);
  free(l), free(dnll), free(dl), free(g), free(c.l), free(c.dnll), free(c.nll);
}

Test(ops, cross_entropy_by_hand_and_bad_targets) {
  pg_engine e = pg_engine_cpu(1);
  /* logits (1, 2, 3), target 2: log(e + e² + e³) − 3 = log(1 + e⁻¹ + e⁻²); zeros over 4: log 4 */
  const float l[7] = {1, 2, 3, 0, 0, 0, 0};
  double nll[2];
  const int32_t tg[1] = {2};
  e.ops.ce_fwd(&e.ops, nll, l, tg, 1, 3);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  cr_assert(fabs(nll[0] - 0.4076059644443806) < 1e-15);
  const int32_t tz[1] = {1};
  e.ops.ce_fwd(&e.ops, nll + 1, l + 3, tz, 1, 4);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  cr_assert(fabs(nll[1] - 1.3862943611198906) < 1e-15);
  float dl[3] = {0, 0, 0};
  e.ops.ce_bwd(&e.ops, dl, NULL, l, tg, 1, 3);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  cr_assert_eq(dl[0], (float)0.09003057317038046);
  cr_assert_eq(dl[1], (float)0.24472847105479764);
  cr_assert_eq(dl[2], (float)(0.6652409557748218 - 1.0));
  const float half = 0.5f;
  float dh[3] = {0, 0, 0};
  e.ops.ce_bwd(&e.ops, dh, &half, l, tg, 1, 3);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  cr_assert_eq(dh[0], (float)(0.5 * 0.09003057317038046));
  /* a target outside [0, V) is refused and nothing is written */
  const int32_t bad[2] = {2, 3};
  double out[2] = {-7, -7};
  e.ops.ce_fwd(&e.ops, out, l, bad, 2, 3);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_E_TOKEN_RANGE);
  cr_assert(out[0] == -7 && out[1] == -7);
  const int32_t neg[1] = {-1};
  e.ops.ce_bwd(&e.ops, dl, NULL, l, neg, 1, 3);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_E_TOKEN_RANGE);
}

Test(ops, axpy_adds_scaled) {
  pg_engine e = pg_engine_cpu(2);
  float y[5] = {1, 2, 3, 4, 5};
  const float x[5] = {1, 1, 2, -2, 0.5f};
  e.ops.axpy(&e.ops, y, 0.5f, x, 5);
  const float want[5] = {1.5f, 2.5f, 4.0f, 3.0f, 5.25f};
  cr_assert(!memcmp(y, want, sizeof y));
}

/* ---- threads and determinism --------------------------------------------------------------- */

static void count_range(void *p, size_t b, size_t end) {
  int *hits = p;
  for (size_t i = b; i < end; i++) hits[i]++;
}

Test(ops, parallel_for_covers_each_index_once) {
  int hits[40];
  for (size_t n = 0; n <= 40; n++)
    for (int th = 0; th <= 7; th++) {
      memset(hits, 0, sizeof hits);
      pg_parallel_for(n, count_range, hits, th);
      for (size_t i = 0; i < n; i++)
        cr_assert_eq(hits[i], 1, "n=%zu threads=%d index %zu", n, th, i);
    }
  cr_assert_eq(pg_parallel_threads(1), 1);
  cr_assert(pg_parallel_threads(0) >= 1);
  cr_assert_eq(pg_parallel_threads(100000), PG_PARALLEL_MAX_THREADS);
}

/* The chunks are the spec's contiguous ranges whichever pool thread runs them (spec/engine.md
 * §3), and the pool copes with a chunk that calls pg_parallel_for itself and with two
 * application threads calling at once (each falls back to threads of its own while the pool
 * is busy). */
typedef struct {
  size_t b[8], e[8];
  int n;
  pthread_mutex_t m;
} chunk_log;

static void log_chunk(void *p, size_t b, size_t end) {
  chunk_log *l = p;
  pthread_mutex_lock(&l->m);
  if (l->n < 8) l->b[l->n] = b, l->e[l->n] = end;
  l->n++;
  pthread_mutex_unlock(&l->m);
}

static void nested_range(void *p, size_t b, size_t end) {
  int(*hits)[13] = p;
  for (size_t i = b; i < end; i++) pg_parallel_for(13, count_range, hits[i], 3);
}

static void *hammer(void *p) {
  int *hits = p;
  for (int rep = 0; rep < 200; rep++) pg_parallel_for(37, count_range, hits, 2 + rep % 3);
  return NULL;
}

Test(ops, parallel_for_pool_chunks_nested_and_concurrent) {
  for (size_t n = 1; n <= 23; n++)
    for (size_t k = 2; k <= 7; k++) {
      chunk_log l = {.n = 0, .m = PTHREAD_MUTEX_INITIALIZER};
      pg_parallel_for(n, log_chunk, &l, (int)k);
      size_t kk = k < n ? k : n, q = n / kk, r = n % kk;
      cr_assert_eq(l.n, (int)kk, "n=%zu k=%zu", n, k);
      for (size_t i = 0; i < kk; i++) {
        size_t want_b = i * q + (i < r ? i : r), found = 0;
        for (int j = 0; j < l.n; j++)
          if (l.b[j] == want_b) {
            found = 1;
            cr_assert_eq(l.e[j], (i + 1) * q + (i + 1 < r ? i + 1 : r));
          }
        cr_assert(found, "n=%zu k=%zu chunk %zu", n, k, i);
      }
    }
  int nest[5][13] = {{0}};
  pg_parallel_for(5, nested_range, nest, 3);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 13; j++) cr_assert_eq(nest[i][j], 1);
  int h0[37] = {0}, h1[37] = {0};
  pthread_t t0, t1;
  cr_assert_eq(pthread_create(&t0, NULL, hammer, h0), 0);
  cr_assert_eq(pthread_create(&t1, NULL, hammer, h1), 0);
  pthread_join(t0, NULL), pthread_join(t1, NULL);
  for (int i = 0; i < 37; i++) cr_assert(h0[i] == 200 && h1[i] == 200, "index %d", i);
}

/* Chunks of a grain: each index once, the chunks aligned to the grain (spec/engine.md §3). */
Test(ops, parallel_for_grain_covers_each_index_once_in_its_chunks) {
  int hits[40];
  for (size_t n = 0; n <= 40; n++)
    for (size_t g = 0; g <= 9; g++)
      for (int th = 1; th <= 4; th++) {
        memset(hits, 0, sizeof hits);
        pg_parallel_for_grain(n, g, count_range, hits, th);
        for (size_t i = 0; i < n; i++)
          cr_assert_eq(hits[i], 1, "n=%zu grain=%zu threads=%d index %zu", n, g, th, i);
      }
  /* 23 indices in chunks of 3 on 2 threads: [0, 3), [3, 6), …, [21, 23) */
  chunk_log l = {.n = 0, .m = PTHREAD_MUTEX_INITIALIZER};
  pg_parallel_for_grain(23, 3, log_chunk, &l, 2);
  cr_assert_eq(l.n, 8);
  for (int j = 0; j < 8; j++)
    cr_assert(l.b[j] % 3 == 0 && l.e[j] == (l.b[j] + 3 < 23 ? l.b[j] + 3 : 23), "chunk %d", j);
}

/* ---- the model's pieces: chanlerp, rowmul, tanh, embed, cols, expand ------------------------- */

typedef struct {
  double *a, *b, *g, *dy, *y;
  int R, C;
} lerp_ref;

static double lerp_loss(void *p) {
  lerp_ref *c = p;
  for (int r = 0; r < c->R; r++)
    for (int j = 0; j < c->C; j++) {
      double s = sigm(c->g[j]);
      c->y[r * c->C + j] = s * c->a[r * c->C + j] + (1 - s) * c->b[r * c->C + j];
    }
  return wsum(c->dy, c->y, (size_t)c->R * c->C);
}

Test(ops, chanlerp_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 31);
  const int R = 5, C = 70, n = R * C;
  pg_engine e = pg_engine_cpu(2);
  float *a = randf(&r, n, 1), *b = randf(&r, n, 1), *g = randf(&r, C, 2), *dy = randf(&r, n, 1);
  float *y = filled(n, 0), *da = filled(n, PREFILL), *db = filled(n, PREFILL),
        *dg = filled(C, PREFILL);
  lerp_ref c = {to_d(a, n), to_d(b, n), to_d(g, C), to_d(dy, n), dalloc(n), R, C};
  e.ops.chanlerp_fwd(&e.ops, y, a, b, g, R, C);
  lerp_loss(&c);
  check_fwd("chanlerp", y, c.y, n);
  e.ops.chanlerp_bwd(&e.ops, da, db, dg, dy, a, b, g, R, C);
  double *fd = dalloc(n);
  fd_grad(lerp_loss, &c, c.a, n, fd);
  check_bwd("chanlerp da", da, fd, n);
  fd_grad(lerp_loss, &c, c.b, n, fd);
  check_bwd("chanlerp db", db, fd, n);
  fd_grad(lerp_loss, &c, c.g, C, fd);
  check_bwd("chanlerp dg", dg, fd, C);
  /* σ(0) = 0.5: the midpoint, exactly */
  float z = 0, one = 1, three = 3, out;
  e.ops.chanlerp_fwd(&e.ops, &out, &one, &three, &z, 1, 1);
  cr_assert_eq(out, 2.0f);
  free(a), free(b), free(g), free(dy), free(y), free(da), free(db), free(dg), free(fd);
  free(c.a), free(c.b), free(c.g), free(c.dy), free(c.y);
}

typedef struct {
  double *x, *s, *dy, *y;
  int R, D, tanh_only;
} rm_ref;

static double rm_loss(void *p) {
  rm_ref *c = p;
  for (int r = 0; r < c->R; r++)
    for (int j = 0; j < c->D; j++)
      c->y[r * c->D + j] =
          c->tanh_only ? tanh(c->x[r * c->D + j]) : c->x[r * c->D + j] * c->s[r];
  return wsum(c->dy, c->y, (size_t)c->R * c->D);
}

Test(ops, rowmul_and_tanh_forward_and_gradients) {
  pg_rng r;
  pg_rng_seed(&r, 32);
  const int R = 7, D = 9, n = R * D;
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, n, 1.5), *s = randf(&r, R, 1), *dy = randf(&r, n, 1);
  float *y = filled(n, 0), *dx = filled(n, PREFILL), *ds = filled(R, PREFILL);
  rm_ref c = {to_d(x, n), to_d(s, R), to_d(dy, n), dalloc(n), R, D, 0};
  e.ops.rowmul_fwd(&e.ops, y, x, s, R, D);
  rm_loss(&c);
  check_fwd("rowmul", y, c.y, n);
  e.ops.rowmul_bwd(&e.ops, dx, ds, dy, x, s, R, D);
  double *fd = dalloc(n);
  fd_grad(rm_loss, &c, c.x, n, fd);
  check_bwd("rowmul dx", dx, fd, n);
  fd_grad(rm_loss, &c, c.s, R, fd);
  check_bwd("rowmul ds", ds, fd, R);
  c.tanh_only = 1;
  float *dt = filled(n, PREFILL);
  e.ops.tanh_fwd(&e.ops, y, x, n);
  rm_loss(&c);
  check_fwd("tanh", y, c.y, n);
  e.ops.tanh_bwd(&e.ops, dt, dy, x, n);
  fd_grad(rm_loss, &c, c.x, n, fd);
  check_bwd("tanh dx", dt, fd, n);
  free(x), free(s), free(dy), free(y), free(dx), free(ds), free(dt), free(fd);
  free(c.x), free(c.s), free(c.dy), free(c.y);
}

typedef struct {
  double *table, *dy, *y;
  const int32_t *ids;
  int T, D;
} emb_ref;

static double emb_loss(void *p) {
  emb_ref *c = p;
  for (int t = 0; t < c->T; t++)
    for (int i = 0; i < c->D; i++) c->y[t * c->D + i] = c->table[c->ids[t] * c->D + i];
  return wsum(c->dy, c->y, (size_t)c->T * c->D);
}

Test(ops, embed_gather_scatter_and_bad_ids) {
  pg_rng r;
  pg_rng_seed(&r, 33);
  const int V = 11, D = 70, T = 23;
  int32_t ids[23];
  for (int t = 0; t < T; t++) ids[t] = (int32_t)(pg_rng_u64(&r) % 7); /* repeats, unused rows */
  pg_engine e = pg_engine_cpu(3);
  float *tab = randf(&r, V * D, 1), *dy = randf(&r, T * D, 1), *y = filled(T * D, 0);
  float *dt = filled(V * D, PREFILL);
  emb_ref c = {to_d(tab, V * D), to_d(dy, T * D), dalloc(T * D), ids, T, D};
  e.ops.embed_fwd(&e.ops, y, tab, ids, T, D, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  for (int t = 0; t < T; t++)
    cr_assert(!memcmp(y + t * D, tab + ids[t] * D, D * sizeof *y), "a gather is an exact copy");
  e.ops.embed_bwd(&e.ops, dt, dy, ids, T, D, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  double *fd = dalloc(V * D);
  fd_grad(emb_loss, &c, c.table, V * D, fd);
  check_bwd("embed dtable", dt, fd, V * D);
  int32_t bad[2] = {3, V};
  float *keep = filled(V * D, 7);
  e.ops.embed_fwd(&e.ops, y, tab, bad, 2, D, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_E_TOKEN_RANGE);
  e.ops.embed_bwd(&e.ops, keep, dy, bad, 2, D, V);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_E_TOKEN_RANGE);
  for (int i = 0; i < V * D; i++) cr_assert_eq(keep[i], 7.0f, "nothing written on a bad id");
  free(tab), free(dy), free(y), free(dt), free(fd), free(keep);
  free(c.table), free(c.dy), free(c.y);
}

Test(ops, cols_expand_copy_zero) {
  pg_rng r;
  pg_rng_seed(&r, 34);
  const int R = 4, C = 10, c0 = 3, w = 5;
  pg_engine e = pg_engine_cpu(2);
  float *x = randf(&r, R * C, 1), *y = filled(R * w, 0), *dy = randf(&r, R * w, 1);
  float *dx = filled(R * C, PREFILL);
  e.ops.cols_fwd(&e.ops, y, x, R, C, c0, w);
  e.ops.cols_bwd(&e.ops, dx, dy, R, C, c0, w);
  for (int i = 0; i < R; i++)
    for (int j = 0; j < C; j++) {
      int in = j >= c0 && j < c0 + w;
      if (in) cr_assert_eq(y[i * w + j - c0], x[i * C + j]);
      cr_assert_eq(dx[i * C + j], in ? PREFILL + dy[i * w + j - c0] : PREFILL);
    }
  float g[3] = {1, -2, 0.5f}, ex[12], dex[12], dg[3] = {PREFILL, PREFILL, PREFILL};
  e.ops.expand_fwd(&e.ops, ex, g, 3, 4);
  for (int i = 0; i < 12; i++) {
    cr_assert_eq(ex[i], g[i / 4]);
    dex[i] = (float)(i + 1);
  }
  e.ops.expand_bwd(&e.ops, dg, dex, 3, 4);
  cr_assert_eq(dg[0], PREFILL + 1 + 2 + 3 + 4);
  cr_assert_eq(dg[2], PREFILL + 9 + 10 + 11 + 12);
  e.ops.copy(&e.ops, dx, x, R * C);
  cr_assert(!memcmp(dx, x, R * C * sizeof *x));
  free(x), free(y), free(dy), free(dx);
}

/* bf16 rounding on hand-worked bit patterns (spec/engine.md §4.17). */
static uint32_t bits(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

static float from_bits(uint32_t u) {
  float v;
  memcpy(&v, &u, sizeof v);
  return v;
}

Test(ops, round_bf16_bit_patterns) {
  static const uint32_t cases[][2] = {
      {0x3f800000u, 0x3f800000u}, /* 1.0: exact */
      {0x3f808000u, 0x3f800000u}, /* 1 + 2^-8: a tie, to the even 1.0 */
      {0x3f818000u, 0x3f820000u}, /* 1 + 3·2^-8: a tie, to the even 1 + 2^-6 */
      {0x3f808001u, 0x3f810000u}, /* just above the tie: up */
      {0x3f807fffu, 0x3f800000u}, /* just below the tie: down */
      {0xbf808001u, 0xbf810000u}, /* negative: magnitude rounds, sign kept */
      {0x3f7fffffu, 0x3f800000u}, /* 1 − 2^-24 carries into the exponent */
      {0x00000000u, 0x00000000u}, /* +0 */
      {0x80000000u, 0x80000000u}, /* −0 */
      {0x00008000u, 0x00000000u}, /* subnormal tie to even (0) */
      {0x00018000u, 0x00020000u}, /* subnormal tie to even (up) */
      {0x00007fffu, 0x00000000u}, /* tiny subnormal flushes to +0 by rounding */
      {0x007fffffu, 0x00800000u}, /* the largest subnormal rounds to the smallest normal */
      {0x7f7f0000u, 0x7f7f0000u}, /* the largest bf16 */
      {0x7f7f7fffu, 0x7f7f0000u}, /* below the halfway point to 2^128: stays */
      {0x7f7f8000u, 0x7f800000u}, /* a tie at the top: to +Inf (even) */
      {0x7f7fffffu, 0x7f800000u}, /* FLT_MAX overflows to +Inf */
      {0xff7fffffu, 0xff800000u}, /* −FLT_MAX to −Inf */
      {0x7f800000u, 0x7f800000u}, /* +Inf */
      {0xff800000u, 0xff800000u}, /* −Inf */
      {0x7fc00000u, 0x7fc00000u}, /* quiet NaN */
      {0x7f800001u, 0x7fc00000u}, /* a NaN whose payload is all in the low bits stays NaN */
      {0xff812345u, 0xffc10000u}, /* negative signalling NaN: quieted, sign and top bits kept */
  };
  size_t n = sizeof cases / sizeof cases[0];
  float x[32], y[32];
  for (size_t i = 0; i < n; i++) x[i] = from_bits(cases[i][0]);
  for (int th = 1; th <= 3; th++) {
    pg_engine e = pg_engine_cpu(th);
    e.ops.round_bf16(&e.ops, y, x, n);
    for (size_t i = 0; i < n; i++) {
      cr_assert_eq(bits(y[i]), cases[i][1], "case %zu: %08x -> %08x, want %08x", i, cases[i][0],
                   bits(y[i]), cases[i][1]);
      cr_assert_eq(bits(pg_bf16_round(x[i])), cases[i][1]);
    }
  }
  /* in place, and against the definition on random values: the nearest bf16, ties to even */
  pg_rng r;
  pg_rng_seed(&r, 5);
  enum { NR = 4096 };
  float *v = randf(&r, NR, 3.0);
  float *w = malloc(NR * sizeof *w);
  memcpy(w, v, NR * sizeof *w);
  pg_engine e = pg_engine_cpu(2);
  e.ops.round_bf16(&e.ops, w, w, NR);
  for (int i = 0; i < NR; i++) {
    uint32_t u = bits(v[i]), lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double dl = fabs((double)v[i] - (double)from_bits(lo));
    double dh = fabs((double)from_bits(hi) - (double)v[i]);
    uint32_t want = dl < dh ? lo : dh < dl ? hi : ((lo >> 16) & 1u) ? hi : lo;
    cr_assert_eq(bits(w[i]), want, "value %d", i);
  }
  free(v), free(w);
}

/* The bf16 RoPE: worked in fp32 as the records' autocast computes it (bf16 cos and sin, every
 * product and sum rounded to bf16), the unrotated dims copied, within 2^-7 of the exact
 * rotation. */
Test(ops, rope_bf16_rounds_like_the_records) {
  enum { T = 11, H = 3, d = 12, rot = 8, n = T * H * d };
  pg_rng r;
  pg_rng_seed(&r, 17);
  float *x = randf(&r, n, 2.0), *y = filled(n, 0), *ex = filled(n, 0);
  for (int i = 0; i < n; i++) x[i] = pg_bf16_round(x[i]);
  int32_t pos[T];
  for (int t = 0; t < T; t++) pos[t] = t * 300 - 900; /* negative ones too (the standard sign) */
  pg_engine e = pg_engine_cpu(2);
  e.ops.rope_bf16_fwd(&e.ops, y, x, pos, T, H, d, rot, 1e4f);
  e.ops.rope_fwd(&e.ops, ex, x, pos, T, H, d, rot, 1e4f);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const float *xr = x + (t * H + h) * d, *yr = y + (t * H + h) * d, *er = ex + (t * H + h) * d;
      for (int i = 0; i < rot / 2; i++) {
        float inv = (float)pow(1e4, -2.0 * i / rot), th = (float)pos[t] * inv;
        float c = pg_bf16_round((float)cos((double)th)), sn = pg_bf16_round((float)sin((double)th));
        float x1 = xr[i], x2 = xr[i + rot / 2];
        float w1 = pg_bf16_round(pg_bf16_round(x1 * c) + pg_bf16_round(x2 * sn));
        float w2 = pg_bf16_round(pg_bf16_round(x1 * -sn) + pg_bf16_round(x2 * c));
        cr_assert_eq(yr[i], w1, "t %d h %d i %d", t, h, i);
        cr_assert_eq(yr[i + rot / 2], w2, "t %d h %d i %d (second half)", t, h, i);
        cr_assert(fabsf(yr[i] - er[i]) <= 0x1p-7f * (fabsf(x1) + fabsf(x2)));
      }
      for (int i = rot; i < d; i++) cr_assert_eq(yr[i], xr[i]);
    }
  free(x), free(y), free(ex);
}

/* The bf16 attention (spec/engine.md §4.19) against its formula worked here in fp64: each
 * probability rounded to bf16 before it weighs v, the denominator unrounded, the output rounded;
 * a row with one allowed key returns that key's value; within 2^-6 of the exact attention, and
 * not merely the exact output rounded (the probabilities' rounding shows). */
Test(ops, attention_bf16_rounds_the_probabilities) {
  enum { T = 23, H = 4, Hkv = 2, d = 8, nq = T * H * d, nk = T * Hkv * d };
  pg_rng r;
  pg_rng_seed(&r, 23);
  float *q = randf(&r, nq, 1.5), *k = randf(&r, nk, 1.5), *v = randf(&r, nk, 1.0);
  for (int i = 0; i < nq; i++) q[i] = pg_bf16_round(q[i]);
  for (int i = 0; i < nk; i++) k[i] = pg_bf16_round(k[i]), v[i] = pg_bf16_round(v[i]);
  float *y = filled(nq, 0), *ex = filled(nq, 0);
  int32_t seg[T];
  for (int t = 0; t < T; t++) seg[t] = t < 9 ? 0 : 1;
  pg_engine e = pg_engine_cpu(3);
  e.ops.attention_bf16_fwd(&e.ops, y, q, k, v, seg, 1, T, H, Hkv, d, 0.35f);
  e.ops.attention_fwd(&e.ops, ex, q, k, v, seg, 1, T, H, Hkv, d, 0.35f);
  int rounded_only = 1;
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      int g = h / (H / Hkv);
      double l[T], mx = -INFINITY, den = 0, acc[d];
      for (int s = 0; s <= t; s++) {
        if (seg[s] != seg[t]) continue;
        double dot = 0;
        for (int i = 0; i < d; i++)
          dot += (double)q[(t * H + h) * d + i] * k[(s * Hkv + g) * d + i];
        l[s] = (double)0.35f * dot;
        mx = fmax(mx, l[s]);
      }
      for (int i = 0; i < d; i++) acc[i] = 0;
      for (int s = 0; s <= t; s++) {
        if (seg[s] != seg[t]) continue;
        double w = pg_exp_inline(l[s] - mx);
        den += w;
        double p = pg_bf16_round((float)w);
        for (int i = 0; i < d; i++) acc[i] += p * v[(s * Hkv + g) * d + i];
      }
      for (int i = 0; i < d; i++) {
        float got = y[(t * H + h) * d + i], want = pg_bf16_round((float)(acc[i] / den));
        float exact = ex[(t * H + h) * d + i];
        cr_assert_eq(got, want, "t %d h %d i %d: %.9g, want %.9g", t, h, i, got, want);
        cr_assert(fabsf(got - exact) <= 0x1p-6f * (1.0f + fabsf(exact)));
        if (got != pg_bf16_round(exact)) rounded_only = 0;
        if (t == 0 || t == 9) cr_assert_eq(got, v[(t * Hkv + g) * d + i], "one key: its value");
      }
    }
  cr_assert(!rounded_only, "the probabilities' rounding changed no output");
  free(q), free(k), free(v), free(y), free(ex);
}

/* Every op forward and backward on one thread count; the outputs appended to one byte buffer. */
typedef struct {
  unsigned char *p;
  size_t n, cap;
} sink;

static void put(sink *s, const void *src, size_t bytes) {
  if (s->n + bytes > s->cap) {
    s->cap = (s->n + bytes) * 2;
    s->p = realloc(s->p, s->cap);
    cr_assert_not_null(s->p);
  }
  memcpy(s->p + s->n, src, bytes);
  s->n += bytes;
}

static sink run_all(int nthreads) {
  pg_rng r;
  pg_rng_seed(&r, 99);
  pg_engine e = pg_engine_cpu(nthreads);
  sink s = {0};
  /* matmul */
  const int M = 33, N = 17, K = 100;
  float *x = randf(&r, M * K, 1), *w = randf(&r, N * K, 1), *dy = randf(&r, M * N, 1);
  float *y = filled(M * N, 0), *dx = filled(M * K, 0), *dw = filled(N * K, 0);
  e.ops.matmul_fwd(&e.ops, y, x, w, M, N, K);
  e.ops.matmul_bwd(&e.ops, dx, dw, dy, x, w, M, N, K);
  put(&s, y, M * N * 4), put(&s, dx, M * K * 4), put(&s, dw, N * K * 4);
  free(x), free(w), free(dy), free(y), free(dx), free(dw);
  /* rmsnorm and rope on [T, H, d] */
  const int T = 19, H = 4, Hkv = 2, d = 16, nq = T * H * d, nk = T * Hkv * d;
  int32_t pos[19], seg[19];
  for (int t = 0; t < T; t++) pos[t] = t % 7, seg[t] = t / 7;
  x = randf(&r, nq, 1), dy = randf(&r, nq, 1), y = filled(nq, 0), dx = filled(nq, 0);
  e.ops.rmsnorm_fwd(&e.ops, y, x, T * H, d, RMS_EPS);
  e.ops.rmsnorm_bwd(&e.ops, dx, dy, x, T * H, d, RMS_EPS);
  put(&s, y, nq * 4), put(&s, dx, nq * 4);
  e.ops.rope_fwd(&e.ops, y, x, pos, T, H, d, 8, 1e4f);
  e.ops.rope_bwd(&e.ops, dx, dy, pos, T, H, d, 8, 1e4f);
  put(&s, y, nq * 4), put(&s, dx, nq * 4);
  e.ops.rope_bf16_fwd(&e.ops, y, x, pos, T, H, d, 8, 1e4f), put(&s, y, nq * 4);
  /* attention with and without segments */
  float *k = randf(&r, nk, 1), *v = randf(&r, nk, 1), *dk = filled(nk, 0), *dv = filled(nk, 0);
  for (int m = 0; m < 2; m++) {
    const int32_t *sg = m ? seg : NULL;
    e.ops.attention_fwd(&e.ops, y, x, k, v, sg, 1, T, H, Hkv, d, 0.25f);
    e.ops.attention_bwd(&e.ops, dx, dk, dv, dy, x, k, v, sg, 1, T, H, Hkv, d, 0.25f);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
    put(&s, y, nq * 4), put(&s, dx, nq * 4), put(&s, dk, nk * 4), put(&s, dv, nk * 4);
    e.ops.attention_bf16_fwd(&e.ops, y, x, k, v, sg, 1, T, H, Hkv, d, 0.25f), put(&s, y, nq * 4);
  }
  free(k), free(v), free(dk), free(dv);
  /* elementwise ops over nq */
  float *g = randf(&r, nq, 1), *dg = filled(nq, 0);
  e.ops.relu2_fwd(&e.ops, y, x, nq), e.ops.relu2_bwd(&e.ops, dx, dy, x, nq), put(&s, y, nq * 4);
  e.ops.leaky_relu2_fwd(&e.ops, y, x, nq, 0.5f), e.ops.leaky_relu2_bwd(&e.ops, dx, dy, x, nq, 0.5f);
  put(&s, y, nq * 4);
  e.ops.rowgate_fwd(&e.ops, y, x, g, T * H, d),
      e.ops.rowgate_bwd(&e.ops, dx, dg, dy, x, g, T * H, d);
  put(&s, y, nq * 4);
  e.ops.softcap_fwd(&e.ops, y, x, nq, 2.0f), e.ops.softcap_bwd(&e.ops, dx, dy, x, nq, 2.0f),
      put(&s, y, nq * 4);
  e.ops.axpy(&e.ops, y, 0.3f, x, nq), put(&s, y, nq * 4);
  e.ops.chanmul_fwd(&e.ops, y, x, g, T, H * d),
      e.ops.chanmul_bwd(&e.ops, dx, dg, dy, x, g, T, H * d);
  put(&s, y, nq * 4);
  float *vv = randf(&r, nk, 1), *dvv = filled(nk, 0);
  e.ops.xsa_fwd(&e.ops, y, x, vv, T, H, Hkv, d),
      e.ops.xsa_bwd(&e.ops, dx, dvv, dy, x, vv, T, H, Hkv, d);
  put(&s, y, nq * 4), put(&s, dvv, nk * 4);
  free(vv), free(dvv);
  put(&s, dx, nq * 4), put(&s, dg, nq * 4);
  /* chanlerp, rowmul, tanh, embed, cols, expand over the same data */
  float *b2 = randf(&r, nq, 1), *gc = randf(&r, H * d, 1), *da = filled(nq, 0), *db = filled(nq, 0);
  float *dgc = filled(H * d, 0);
  e.ops.chanlerp_fwd(&e.ops, y, x, b2, gc, T, H * d), put(&s, y, nq * 4);
  e.ops.chanlerp_bwd(&e.ops, da, db, dgc, dy, x, b2, gc, T, H * d);
  put(&s, da, nq * 4), put(&s, db, nq * 4), put(&s, dgc, H * d * 4);
  e.ops.rowmul_fwd(&e.ops, y, x, g, T * H, d), e.ops.rowmul_bwd(&e.ops, dx, dg, dy, x, g, T * H, d);
  put(&s, y, nq * 4), put(&s, dx, nq * 4), put(&s, dg, T * H * 4);
  e.ops.tanh_fwd(&e.ops, y, x, nq), e.ops.tanh_bwd(&e.ops, dx, dy, x, nq), put(&s, y, nq * 4),
      put(&s, dx, nq * 4);
  int32_t eid[19];
  for (int t = 0; t < T; t++) eid[t] = (t * 5) % 4;
  float *tab = filled(4 * H * d, 0);
  e.ops.embed_fwd(&e.ops, y, x, eid, T, H * d, T);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  e.ops.embed_bwd(&e.ops, tab, dy, eid, T, H * d, 4);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  put(&s, y, nq * 4), put(&s, tab, 4 * H * d * 4);
  e.ops.cols_fwd(&e.ops, y, x, T, H * d, 3, 9), e.ops.cols_bwd(&e.ops, dx, dy, T, H * d, 3, 9);
  put(&s, y, T * 9 * 4), put(&s, dx, nq * 4);
  e.ops.expand_fwd(&e.ops, y, x, 17, 5), e.ops.expand_bwd(&e.ops, dgc, dy, 17, 5);
  put(&s, y, 85 * 4), put(&s, dgc, 17 * 4);
  free(b2), free(gc), free(da), free(db), free(dgc), free(tab);
  e.ops.round_bf16(&e.ops, y, x, nq), put(&s, y, nq * 4);
  free(g), free(dg);
  /* cross-entropy: T rows of V = 64 from x */
  double nll[19];
  e.ops.ce_fwd(&e.ops, nll, x, pos, T, H * d);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  e.ops.ce_bwd(&e.ops, dx, NULL, x, pos, T, H * d);
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
  put(&s, nll, sizeof nll), put(&s, dx, nq * 4);
  free(x), free(dy), free(y), free(dx);
  return s;
}

Test(ops, every_op_is_bit_identical_for_1_2_3_threads) {
  sink one = run_all(1);
  for (int th = 2; th <= 3; th++) {
    sink other = run_all(th);
    cr_assert_eq(other.n, one.n);
    cr_assert(!memcmp(one.p, other.p, one.n), "%d threads differ from 1", th);
    free(other.p);
  }
  free(one.p);
}
