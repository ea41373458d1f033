/* test_gptq.c: Hessians (exact against a naive fp64 XᵀX, thread- and split-invariant), the GPTQ
 * preparation (inverse factor, damping retries, dead columns, act-order), GPTQ itself (equal to
 * round-to-nearest under an identity Hessian, well below it on correlated inputs, bit-identical
 * for any thread count), the scale rules (torch.quantile, percentile scales, Hessian-aware
 * SDClip), the percentile searches and argument errors. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_gptq.h"
#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_quant.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  cr_assert_not_null(p);
  return p;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double rng_unif(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }
static double rng_normal(uint64_t *s) {
  double u = rng_unif(s), v = rng_unif(s);
  if (u < 1e-300) u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
static float *rand_matrix(uint64_t rows, uint64_t cols, uint64_t seed, double sd) {
  float *m = xcalloc(rows * cols, sizeof(float));
  uint64_t s = seed;
  for (uint64_t i = 0; i < rows * cols; i++) m[i] = (float)(sd * rng_normal(&s));
  return m;
}

/* X [rows × n] = Z·M with Z standard normal and M = I + strong random mixing, so the columns of X
 * are strongly correlated. */
static float *correlated_inputs(uint64_t rows, uint64_t n, uint64_t seed) {
  uint64_t s = seed;
  double *M = xcalloc(n * n, sizeof(double));
  for (uint64_t i = 0; i < n * n; i++) M[i] = 2.0 * rng_normal(&s) / sqrt((double)n);
  for (uint64_t i = 0; i < n; i++) M[i * n + i] += 0.3;
  double *z = xcalloc(n, sizeof(double));
  float *X = xcalloc(rows * n, sizeof(float));
  for (uint64_t r = 0; r < rows; r++) {
    for (uint64_t k = 0; k < n; k++) z[k] = rng_normal(&s);
    for (uint64_t j = 0; j < n; j++) {
      double a = 0;
      for (uint64_t k = 0; k < n; k++) a += z[k] * M[k * n + j];
      X[r * n + j] = (float)a;
    }
  }
  free(M);
  free(z);
  return X;
}

static void hess_from(pg_hessian *H, const float *X, uint64_t rows, uint32_t n, int nthreads) {
  cr_assert_eq(pg_hessian_init(H, n, NULL), PG_OK);
  pg_hessian_add(H, X, rows, nthreads);
}

/* Σ_r e_r H e_rᵀ, naive fp64. */
static double naive_herr(const float *A, const float *B, uint64_t rows, const pg_hessian *H) {
  const uint64_t n = H->n;
  double tot = 0;
  for (uint64_t r = 0; r < rows; r++) {
    double row = 0;
    for (uint64_t i = 0; i < n; i++) {
      double ei = (double)A[r * n + i] - (double)B[r * n + i], hi = 0;
      for (uint64_t j = 0; j < n; j++)
        hi += H->h[i * n + j] * ((double)A[r * n + j] - (double)B[r * n + j]);
      row += ei * hi;
    }
    tot += row;
  }
  return tot;
}

static pg_qmat_opts qopts(int scale_rule, int round_rule, const pg_gptq_prep *prep) {
  pg_qmat_opts o;
  memset(&o, 0, sizeof o);
  o.scale_rule = scale_rule;
  o.round_rule = round_rule;
  o.bits = 6;
  o.k = 12.85f;
  o.lambda = 0.175f;
  o.prep = prep;
  o.nthreads = 2;
  return o;
}

/* ---- Hessians ------------------------------------------------------------------------------ */

Test(gptq, hessian_matches_naive_exactly) {
  const uint32_t n = 37; /* not a multiple of the 4-wide tiles */
  const uint64_t rows = 300; /* more than one block of rows */
  float *X = rand_matrix(rows, n, 11, 1.0);
  pg_hessian H;
  hess_from(&H, X, rows, n, 2);
  double *want = xcalloc((size_t)n * n, sizeof(double));
  for (uint64_t r = 0; r < rows; r++)
    for (uint32_t i = 0; i < n; i++)
      for (uint32_t j = 0; j < n; j++)
        want[i * n + j] += (double)X[r * n + i] * (double)X[r * n + j];
  cr_assert_eq(H.rows, rows);
  for (size_t i = 0; i < (size_t)n * n; i++)
    cr_assert_eq(H.h[i], want[i], "entry %zu: %.17g vs %.17g", i, H.h[i], want[i]);
  pg_hessian_free(&H);
  cr_assert_null(H.h);
  free(want);
  free(X);
}

Test(gptq, hessian_same_for_any_thread_count) {
  const uint32_t n = 70;
  const uint64_t rows = 517;
  float *X = rand_matrix(rows, n, 12, 0.5);
  pg_hessian H[3];
  for (int t = 0; t < 3; t++) hess_from(&H[t], X, rows, n, t + 1);
  for (int t = 1; t < 3; t++)
    cr_assert(!memcmp(H[0].h, H[t].h, sizeof(double) * n * n), "nthreads %d differs", t + 1);
  for (int t = 0; t < 3; t++) pg_hessian_free(&H[t]);
  free(X);
}

Test(gptq, hessian_two_adds_equal_one_add_of_the_concatenation) {
  const uint32_t n = 21;
  const uint64_t r1 = 100, r2 = 77;
  float *X = rand_matrix(r1 + r2, n, 13, 2.0);
  pg_hessian a, b;
  cr_assert_eq(pg_hessian_init(&a, n, NULL), PG_OK);
  pg_hessian_add(&a, X, r1, 1);
  pg_hessian_add(&a, X + r1 * n, r2, 3);
  hess_from(&b, X, r1 + r2, n, 2);
  cr_assert_eq(a.rows, r1 + r2);
  cr_assert(!memcmp(a.h, b.h, sizeof(double) * n * n));
  /* symmetric */
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < n; j++) cr_assert_eq(a.h[i * n + j], a.h[j * n + i]);
  pg_hessian_free(&a);
  pg_hessian_free(&b);
  free(X);
}

/* ---- quantiles and percentile scales ------------------------------------------------------- */

static float fbits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint32_t ubits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

Test(gptq, quantile_matches_torch) {
  /* torch.quantile(torch.tensor([0., 1., 2., 3.]), 0.6) = 1.8000001 (0x3fe66667) */
  const float v4[4] = {0, 1, 2, 3};
  cr_assert_eq(ubits(pg_quant_quantile_sorted(v4, 4, 0.6f)), 0x3fe66667u);
  cr_assert_eq(pg_quant_quantile_sorted(v4, 4, 0.5f), 1.5f);
  cr_assert_eq(pg_quant_quantile_sorted(v4, 4, 0.0f), 0.0f);
  cr_assert_eq(pg_quant_quantile_sorted(v4, 4, 1.0f), 3.0f);
  const float one[1] = {7};
  cr_assert_eq(pg_quant_quantile_sorted(one, 1, 0.999f), 7.0f);
  /* [0, 0, 0, fp32(1/7), fp32(2/7)]: torch's lerp works from the upper end when the weight is
   * at least 0.5, fused: fma(w − 1, b − a, b). Worked out in exact rational arithmetic; the
   * textbook a + w·(b − a) in fp32 lands one ulp away in each case. */
  const float v5[5] = {0, 0, 0, fbits(0x3e124925u), fbits(0x3e924925u)};
  cr_assert_eq(ubits(pg_quant_quantile_sorted(v5, 5, 0.9f)), 0x3e6a0ea1u);   /* not ...a0 */
  cr_assert_eq(ubits(pg_quant_quantile_sorted(v5, 5, 0.999f)), 0x3e91fe3fu); /* not ...40 */
  const float v3[3] = {0, fbits(0x3e124925u), fbits(0x3e924925u)};
  cr_assert_eq(ubits(pg_quant_quantile_sorted(v3, 3, 0.9995f)), 0x3e92366bu); /* not ...6c */
  /* a NaN sorts last and makes the quantile NaN, as in torch */
  const float vn[3] = {1, 2, NAN};
  cr_assert(isnan(pg_quant_quantile_sorted(vn, 3, 0.5f)));
}

Test(gptq, pct_scales_hand_checked_and_floor) {
  /* row 0: ±k/100 for k = 1..1000 (shuffled signs and order); row 1: all below 1, so the floor
   * 1/R applies; R = 31 */
  const uint64_t cols = 1000;
  float *W = xcalloc(2 * cols, sizeof(float));
  for (uint64_t k = 0; k < cols; k++) {
    uint64_t pos = (k * 389) % cols; /* a permutation (389 is prime to 1000) */
    W[pos] = (float)(k + 1) / 100.0f * ((k % 3) ? 1.0f : -1.0f);
    W[cols + pos] = (float)(k + 1) / 4000.0f;
  }
  /* clip(0.999) = 9.990010 (0x411fd715) → fp16(clip/31) = 0x3528; the others round to 0x3529 */
  const struct {
    float pct;
    uint16_t want;
  } cases[] = {{0.999f, 0x3528}, {0.9995f, 0x3529}, {0.9999f, 0x3529}, {0.99999f, 0x3529},
               {1.0f, 0x3529}};
  for (size_t i = 0; i < 5; i++) {
    uint16_t s[2];
    pg_quant_pct_scales(W, 2, cols, cases[i].pct, 31, s);
    cr_assert_eq(s[0], cases[i].want, "pct %g: %04x", (double)cases[i].pct, s[0]);
    cr_assert_eq(s[1], 0x2821, "floor fp16(1/31): %04x", s[1]); /* fp16(fp32(1/31)) */
  }
  uint16_t s15;
  pg_quant_pct_scales(W + cols, 1, cols, 0.999f, 15, &s15);
  cr_assert_eq(s15, 0x2c44); /* fp16(1/15) */
  cr_assert_eq(PG_QUANT_PCTS[0], 0.999f);
  cr_assert_eq(PG_QUANT_PCTS[4], 1.0f);
  free(W);
}

/* ---- preparation --------------------------------------------------------------------------- */

Test(gptq, prepare_inverse_factor) {
  const uint32_t n = 150; /* more than one Cholesky block */
  const uint64_t rows = 600;
  float *X = rand_matrix(rows, n, 21, 1.0);
  for (uint64_t r = 0; r < rows; r++) /* uneven column scales: a real act-order */
    for (uint32_t j = 0; j < n; j++) X[r * n + j] *= (float)(0.5 + (j * 37 % 11) * 0.1);
  pg_hessian H;
  hess_from(&H, X, rows, n, 2);
  pg_gptq_opts o = pg_gptq_defaults();
  cr_assert_eq(o.damp, 0.01);
  cr_assert_eq(o.max_retries, 4);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_OK);
  cr_assert_eq(p.n, n);
  cr_assert_eq(p.retries, 0);
  cr_assert_eq(p.damp_used, 0.01);
  cr_assert_eq(p.n_dead, 0);
  double mean = 0;
  for (uint32_t j = 0; j < n; j++) mean += H.h[j * n + j];
  mean /= n;
  for (uint32_t j = 0; j < n; j++) cr_assert_eq(p.diag[j], H.h[j * n + j] + 0.01 * mean);
  /* perm: a permutation, diag descending */
  uint8_t *seen = xcalloc(n, 1);
  for (uint32_t a = 0; a < n; a++) {
    cr_assert_lt(p.perm[a], n);
    cr_assert(!seen[p.perm[a]]);
    seen[p.perm[a]] = 1;
    if (a) cr_assert_geq(p.diag[p.perm[a - 1]], p.diag[p.perm[a]]);
  }
  /* u upper with a positive diagonal; (uᵀu)·Hp = I where Hp is the damped, permuted H */
  double maxdev = 0;
  for (uint32_t i = 0; i < n; i++) {
    cr_assert_gt(p.u[i * n + i], 0);
    for (uint32_t j = 0; j < i; j++) cr_assert_eq(p.u[i * n + j], 0.0);
  }
  double *M = xcalloc((size_t)n * n, sizeof(double));
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < n; j++) {
      double a = 0;
      for (uint32_t k = 0; k <= (i < j ? i : j); k++) a += p.u[k * n + i] * p.u[k * n + j];
      M[i * n + j] = a;
    }
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < n; j++) {
      double a = 0;
      for (uint32_t k = 0; k < n; k++) {
        double hp = k == j ? p.diag[p.perm[k]] : H.h[(size_t)p.perm[k] * n + p.perm[j]];
        a += M[i * n + k] * hp;
      }
      double dev = fabs(a - (i == j ? 1.0 : 0.0));
      if (dev > maxdev) maxdev = dev;
    }
  cr_assert_lt(maxdev, 1e-10, "max |uᵀu·H − I| = %g", maxdev);
  pg_gptq_prep_free(&p);
  cr_assert_null(p.u);
  free(M);
  free(seen);
  pg_hessian_free(&H);
  free(X);
}

Test(gptq, prepare_retries_on_an_indefinite_hessian) {
  /* diag 1, off-diagonal 3: eigenvalues 7, −2, −2; damping adds damp·1 to the diagonal, so 0.01,
   * 0.1 and 1 fail and 10 succeeds */
  pg_hessian H;
  cr_assert_eq(pg_hessian_init(&H, 3, NULL), PG_OK);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) H.h[i * 3 + j] = i == j ? 1.0 : 3.0;
  pg_gptq_opts o = pg_gptq_defaults();
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_OK);
  cr_assert_eq(p.retries, 3);
  cr_assert_gt(p.damp_used, o.damp);
  cr_assert_float_eq(p.damp_used, 10.0, 1e-9);
  pg_gptq_prep_free(&p);
  o.max_retries = 2;
  pg_err e;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, &e), PG_E_ARG);
  cr_assert_null(p.u);
  /* a singular H (two equal columns) without damping fails, with damping it does not */
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) H.h[i * 3 + j] = (i == 2 ? 1 : i + 1) * (j == 2 ? 1 : j + 1);
  o.damp = 0;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_E_ARG);
  o.damp = 0.01;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_OK);
  cr_assert_eq(p.retries, 0);
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
}

Test(gptq, dead_columns_and_act_order) {
  const uint32_t n = 12;
  const uint64_t rows = 200;
  float *X = rand_matrix(rows, n, 31, 1.0);
  for (uint64_t r = 0; r < rows; r++) {
    X[r * n + 3] = 0; /* dead */
    X[r * n + 7] = 0; /* dead */
    X[r * n + 5] = X[r * n + 2]; /* equal diag: ties keep column order */
    for (uint32_t j = 0; j < n; j++) X[r * n + j] *= (float)(1 + j % 4);
    X[r * n + 5] = X[r * n + 2];
  }
  pg_hessian H;
  hess_from(&H, X, rows, n, 1);
  pg_gptq_prep p;
  pg_gptq_opts o = pg_gptq_defaults();
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_OK);
  cr_assert_eq(p.n_dead, 2);
  cr_assert(p.dead[3] && p.dead[7]);
  for (uint32_t j = 0; j < n; j++)
    if (j != 3 && j != 7) cr_assert(!p.dead[j]);
  double mean = 0;
  for (uint32_t j = 0; j < n; j++) mean += H.h[j * n + j] == 0 ? 1.0 : H.h[j * n + j];
  mean /= n;
  cr_assert_eq(p.diag[3], 1.0 + 0.01 * mean);
  /* the expected order: a stable sort by descending diag */
  uint32_t want[12];
  for (uint32_t j = 0; j < n; j++) want[j] = j;
  for (uint32_t a = 1; a < n; a++) /* insertion sort: stable */
    for (uint32_t b = a; b > 0 && p.diag[want[b]] > p.diag[want[b - 1]]; b--) {
      uint32_t t = want[b];
      want[b] = want[b - 1];
      want[b - 1] = t;
    }
  cr_assert(!memcmp(p.perm, want, sizeof want));
  uint32_t pos2 = 0, pos5 = 0;
  for (uint32_t a = 0; a < n; a++) {
    if (p.perm[a] == 2) pos2 = a;
    if (p.perm[a] == 5) pos5 = a;
  }
  cr_assert_eq(p.diag[2], p.diag[5]);
  cr_assert_eq(pos5, pos2 + 1, "ties keep the original order");
  /* dead columns quantize to 0 even where W is large */
  const uint64_t wr = 9;
  float *W = rand_matrix(wr, n, 32, 1.0);
  for (uint64_t r = 0; r < wr; r++) W[r * n + 3] = W[r * n + 7] = 5.0f;
  uint16_t *s = xcalloc(wr, sizeof(uint16_t));
  pg_quant_sdclip_scales(W, wr, n, 12.85f, 6, s);
  int8_t *q = xcalloc(wr * n, 1);
  cr_assert_eq(pg_gptq_quantize(W, wr, n, &p, s, -31, 31, 0, 2, q, NULL), PG_OK);
  for (uint64_t r = 0; r < wr; r++) {
    cr_assert_eq(q[r * n + 3], 0);
    cr_assert_eq(q[r * n + 7], 0);
  }
  pg_gptq_prep_free(&p);
  /* act_order 0: identity */
  o.act_order = 0;
  cr_assert_eq(pg_gptq_prepare(&H, &o, &p, NULL), PG_OK);
  for (uint32_t j = 0; j < n; j++) cr_assert_eq(p.perm[j], j);
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(q);
  free(s);
  free(W);
  free(X);
}

/* ---- GPTQ ---------------------------------------------------------------------------------- */

Test(gptq, identity_hessian_gives_round_to_nearest) {
  const uint32_t n = 64;
  const uint64_t rows = 50;
  pg_hessian H;
  cr_assert_eq(pg_hessian_init(&H, n, NULL), PG_OK);
  for (uint32_t j = 0; j < n; j++) H.h[j * n + j] = 1;
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  for (uint32_t i = 0; i < n; i++) /* no coupling at all: the error feedback is exactly zero */
    for (uint32_t j = 0; j < n; j++)
      if (i != j) cr_assert_eq(p.u[i * n + j], 0.0);
  float *W = rand_matrix(rows, n, 41, 0.02);
  uint16_t *s = xcalloc(rows, sizeof(uint16_t));
  pg_quant_sdclip_scales(W, rows, n, 2.0f, 6, s); /* a small k: some values clamp */
  int8_t *qg = xcalloc(rows * n, 1), *qr = xcalloc(rows * n, 1);
  cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -31, 31, 16, 2, qg, NULL), PG_OK);
  uint64_t clamped = pg_quant_rtn_rows(W, rows, n, s, -31, 31, qr);
  cr_assert_gt(clamped, 0);
  cr_assert(!memcmp(qg, qr, rows * n));
  /* and the rule in fp64 directly */
  for (uint64_t r = 0; r < rows; r++)
    for (uint32_t j = 0; j < n; j++) {
      double v = rint((double)W[r * n + j] / (double)pg_f16_to_f32(s[r]));
      v = v < -31 ? -31 : v > 31 ? 31 : v;
      cr_assert_eq(qg[r * n + j], (int8_t)v);
    }
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(qg);
  free(qr);
  free(s);
  free(W);
}

Test(gptq, beats_round_to_nearest_on_correlated_inputs) {
  const uint32_t n = 128;
  const uint64_t xrows = 2000, rows = 64;
  float *X = correlated_inputs(xrows, n, 51);
  pg_hessian H;
  hess_from(&H, X, xrows, n, 2);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  float *W = rand_matrix(rows, n, 52, 0.05);
  int8_t *qg = xcalloc(rows * n, 1), *qr = xcalloc(rows * n, 1);
  uint16_t *sg = xcalloc(rows, 2), *sr = xcalloc(rows, 2);
  pg_qmat_stats stg, str;
  pg_qmat_opts og = qopts(PG_SCALING_SDCLIP, PG_ROUND_GPTQ, &p),
               orr = qopts(PG_SCALING_SDCLIP, PG_ROUND_RTN, NULL);
  og.block = 32; /* blocks smaller than the width: the lazy updates run */
  cr_assert_eq(pg_quant_matrix(W, rows, n, &og, &H, qg, sg, &stg, NULL), PG_OK);
  cr_assert_eq(pg_quant_matrix(W, rows, n, &orr, &H, qr, sr, &str, NULL), PG_OK);
  cr_assert(!memcmp(sg, sr, rows * 2), "same SDClip scales");
  float *Wg = xcalloc(rows * n, sizeof(float)), *Wr = xcalloc(rows * n, sizeof(float));
  pg_dequant_rows(qg, sg, rows, n, Wg);
  pg_dequant_rows(qr, sr, rows, n, Wr);
  double eg = pg_quant_hessian_err(W, Wg, rows, &H, 2);
  double er = pg_quant_hessian_err(W, Wr, rows, &H, 2);
  cr_assert_lt(eg, 0.8 * er, "GPTQ %g vs RTN %g", eg, er);
  /* the stats agree: herr is the same error relative to W's own */
  cr_assert_lt(stg.herr, 0.8 * str.herr);
  cr_assert_gt(stg.herr, 0);
  cr_assert_lt(str.herr, 1);
  float *Z = xcalloc(rows * n, sizeof(float));
  double ew = pg_quant_hessian_err(W, Z, rows, &H, 1);
  free(Z);
  cr_assert_float_eq(stg.herr, eg / ew, 1e-12 * (eg / ew));
  /* GPTQ trades plain MSE for Hessian error: its MSE is not below RTN's */
  cr_assert_geq(stg.mse, str.mse);
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(X);
  free(W);
  free(Wg);
  free(Wr);
  free(qg);
  free(qr);
  free(sg);
  free(sr);
}

Test(gptq, bit_identical_for_any_thread_count_and_rerun) {
  const uint32_t n = 150;
  const uint64_t rows = 37;
  float *X = correlated_inputs(400, n, 61);
  pg_hessian H;
  hess_from(&H, X, 400, n, 3);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  float *W = rand_matrix(rows, n, 62, 1.0);
  uint16_t *s = xcalloc(rows, 2);
  pg_quant_sdclip_scales(W, rows, n, 12.85f, 6, s);
  int8_t *q[4];
  for (int t = 0; t < 4; t++) {
    q[t] = xcalloc(rows * n, 1);
    cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -32, 31, 32, t < 3 ? t + 1 : 3, q[t], NULL),
                 PG_OK);
  }
  for (int t = 1; t < 4; t++) cr_assert(!memcmp(q[0], q[t], rows * n), "run %d differs", t);
  /* the preparation too: a second one is identical */
  pg_gptq_prep p2;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p2, NULL), PG_OK);
  cr_assert(!memcmp(p.u, p2.u, sizeof(double) * n * n));
  cr_assert(!memcmp(p.perm, p2.perm, sizeof(uint32_t) * n));
  /* the whole driver, PCT_ROW + GPTQ, for 1, 2 and 3 threads */
  int8_t *qm[3];
  uint16_t sm[3][37];
  pg_qmat_stats st[3];
  for (int t = 0; t < 3; t++) {
    qm[t] = xcalloc(rows * n, 1);
    pg_qmat_opts o = qopts(PG_SCALING_PCT_ROW, PG_ROUND_GPTQ, &p);
    o.nthreads = t + 1;
    cr_assert_eq(pg_quant_matrix(W, rows, n, &o, &H, qm[t], sm[t], &st[t], NULL), PG_OK);
  }
  for (int t = 1; t < 3; t++) {
    cr_assert(!memcmp(qm[0], qm[t], rows * n));
    cr_assert(!memcmp(sm[0], sm[t], sizeof sm[0]));
    cr_assert_eq(st[0].mse, st[t].mse);
    cr_assert_eq(st[0].herr, st[t].herr);
    cr_assert_eq(st[0].clamped, st[t].clamped);
  }
  for (int t = 0; t < 4; t++) free(q[t]);
  for (int t = 0; t < 3; t++) free(qm[t]);
  pg_gptq_prep_free(&p);
  pg_gptq_prep_free(&p2);
  pg_hessian_free(&H);
  free(s);
  free(W);
  free(X);
}

/* The loop of pg_gptq.h written out plainly, one row at a time. */
static void gptq_reference(const float *W, uint64_t rows, uint32_t n, const pg_gptq_prep *p,
                           const uint16_t *s, int qmin, int qmax, uint32_t B, int8_t *q) {
  double *w = xcalloc(n, sizeof(double)), *e = xcalloc(B, sizeof(double));
  for (uint64_t r = 0; r < rows; r++) {
    const double sf = (double)pg_f16_to_f32(s[r]);
    for (uint32_t j = 0; j < n; j++)
      w[j] = p->dead[p->perm[j]] ? 0.0 : (double)W[r * n + p->perm[j]];
    for (uint32_t i1 = 0; i1 < n; i1 += B) {
      uint32_t i2 = i1 + B < n ? i1 + B : n;
      for (uint32_t j = i1; j < i2; j++) {
        double v = rint(w[j] / sf);
        v = v < qmin ? qmin : v > qmax ? qmax : v;
        q[r * n + p->perm[j]] = (int8_t)v;
        e[j - i1] = (w[j] - v * sf) / p->u[(size_t)j * n + j];
        for (uint32_t k = j + 1; k < i2; k++) w[k] -= e[j - i1] * p->u[(size_t)j * n + k];
      }
      for (uint32_t k = i2; k < n; k++) {
        double t = 0;
        for (uint32_t j = i1; j < i2; j++) t += e[j - i1] * p->u[(size_t)j * n + k];
        w[k] -= t;
      }
    }
  }
  free(w);
  free(e);
}

Test(gptq, matches_the_plain_loop_bit_for_bit) {
  const uint32_t n = 75;
  const uint64_t rows = 19;
  float *X = correlated_inputs(300, n, 141);
  for (uint64_t r = 0; r < 300; r++) X[r * n + 10] = 0; /* one dead column */
  pg_hessian H;
  hess_from(&H, X, 300, n, 2);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  cr_assert_eq(p.n_dead, 1);
  float *W = rand_matrix(rows, n, 142, 1.0);
  uint16_t *s = xcalloc(rows, 2);
  pg_quant_sdclip_scales(W, rows, n, 6.0f, 6, s);
  int8_t *a = xcalloc(rows * n, 1), *b = xcalloc(rows * n, 1);
  const int blocks[3] = {0, 16, 75};
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -32, 31, blocks[i], 2, a, NULL), PG_OK);
    gptq_reference(W, rows, n, &p, s, -32, 31, blocks[i] ? (uint32_t)blocks[i] : 128, b);
    cr_assert(!memcmp(a, b, rows * n), "block %d", blocks[i]);
  }
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(a);
  free(b);
  free(s);
  free(W);
  free(X);
}

Test(gptq, tiny_shapes) {
  for (uint32_t n = 1; n <= 9; n++) {
    float *X = correlated_inputs(20, n, 150 + n);
    pg_hessian H;
    hess_from(&H, X, 20, n, 3);
    pg_gptq_prep p;
    cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK, "n %u", n);
    for (uint64_t rows = 1; rows <= 3; rows++) {
      float *W = rand_matrix(rows, n, 160 + n, 1.0);
      uint16_t s[3];
      int8_t a[27], b[27];
      pg_quant_pct_scales(W, rows, n, 0.999f, 31, s);
      cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -31, 31, 2, 3, a, NULL), PG_OK);
      gptq_reference(W, rows, n, &p, s, -31, 31, 2, b);
      cr_assert(!memcmp(a, b, rows * n), "n %u rows %llu", n, (unsigned long long)rows);
      pg_qmat_opts o = qopts(PG_SCALING_PCT_ROW, PG_ROUND_GPTQ, &p);
      pg_qmat_stats st;
      cr_assert_eq(pg_quant_matrix(W, rows, n, &o, &H, a, s, &st, NULL), PG_OK);
      free(W);
    }
    pg_gptq_prep_free(&p);
    pg_hessian_free(&H);
    free(X);
  }
}

Test(gptq, block_size_changes_only_rounding) {
  /* blocks are a reordering of the same updates: results agree up to rare rounding flips */
  const uint32_t n = 96;
  const uint64_t rows = 40;
  float *X = correlated_inputs(300, n, 71);
  pg_hessian H;
  hess_from(&H, X, 300, n, 2);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  float *W = rand_matrix(rows, n, 72, 1.0);
  uint16_t *s = xcalloc(rows, 2);
  pg_quant_sdclip_scales(W, rows, n, 12.85f, 6, s);
  int8_t *a = xcalloc(rows * n, 1), *b = xcalloc(rows * n, 1);
  cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -31, 31, 0, 1, a, NULL), PG_OK);
  cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, s, -31, 31, 7, 2, b, NULL), PG_OK);
  uint64_t diff = 0;
  for (uint64_t i = 0; i < rows * n; i++) diff += a[i] != b[i];
  cr_assert_leq(diff, rows * n / 100, "%llu of %llu differ", (unsigned long long)diff,
                (unsigned long long)(rows * n));
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(a);
  free(b);
  free(s);
  free(W);
  free(X);
}

Test(gptq, hessian_err_matches_naive) {
  const uint32_t n = 45;
  const uint64_t rows = 31;
  float *X = correlated_inputs(100, n, 81);
  pg_hessian H;
  hess_from(&H, X, 100, n, 1);
  float *A = rand_matrix(rows, n, 82, 1.0), *B = rand_matrix(rows, n, 83, 1.0);
  double want = naive_herr(A, B, rows, &H);
  double got[3];
  for (int t = 0; t < 3; t++) got[t] = pg_quant_hessian_err(A, B, rows, &H, t + 1);
  cr_assert_float_eq(got[0], want, 1e-11 * fabs(want));
  cr_assert_eq(got[0], got[1]);
  cr_assert_eq(got[0], got[2]);
  cr_assert_eq(pg_quant_hessian_err(A, A, rows, &H, 2), 0.0);
  pg_hessian_free(&H);
  free(A);
  free(B);
  free(X);
}

/* ---- Hessian-aware SDClip ------------------------------------------------------------------ */

Test(gptq, hsdclip_hand_checked) {
  const float W[3 * 4] = {0.5f, -1.0f, 0.25f, 2.0f,   /* */
                          -0.1f, 0.3f, 0.2f, -0.4f,   /* */
                          1.5f, 1.0f, -2.5f, 0.75f};
  const double diag[4] = {4.0, 0.0, 1e-9, 2.5}; /* 0 and 1e-9 clamp to 1e-8 */
  const float k = 12.85f, lambda = 0.175f;
  /* independent fp64: d, col_imp, row_imp, normalized; unbiased std; then fp32 */
  double d[4], dm = 0;
  for (int j = 0; j < 4; j++) {
    d[j] = diag[j] < 1e-8 ? 1e-8 : diag[j];
    dm += d[j];
  }
  dm /= 4;
  double ri[3], rm = 0;
  for (int r = 0; r < 3; r++) {
    double a = 0;
    for (int j = 0; j < 4; j++) a += fabs((double)W[r * 4 + j]) * (d[j] / dm);
    ri[r] = a / 4;
    rm += ri[r];
  }
  rm /= 3;
  uint16_t got[3];
  pg_quant_hsdclip_scales(W, 3, 4, diag, k, lambda, 6, got);
  for (int r = 0; r < 3; r++) {
    double mu = 0, ss = 0;
    for (int j = 0; j < 4; j++) mu += W[r * 4 + j];
    mu /= 4;
    for (int j = 0; j < 4; j++) ss += (W[r * 4 + j] - mu) * (W[r * 4 + j] - mu);
    float sd = (float)sqrt(ss / 3);
    float rn = (float)(ri[r] / rm);
    float s = k * sd;
    s = s * (1.0f + lambda * (rn - 1.0f));
    s = s / 31.0f;
    cr_assert_eq(got[r], pg_f32_to_f16(s), "row %d: %04x vs %04x", r, got[r], pg_f32_to_f16(s));
  }
  /* the rows differ in importance, so λ moves the scales away from SDClip's */
  uint16_t sd[3];
  pg_quant_sdclip_scales(W, 3, 4, k, 6, sd);
  cr_assert(memcmp(sd, got, sizeof sd) != 0);
}

Test(gptq, hsdclip_lambda_zero_is_sdclip) {
  const uint64_t rows = 20, cols = 64;
  float *W = rand_matrix(rows, cols, 91, 0.03);
  double diag[64];
  uint64_t s = 92;
  for (int j = 0; j < 64; j++) diag[j] = rng_unif(&s) * 10;
  uint16_t a[20], b[20];
  for (unsigned bits = 5; bits <= 8; bits++) {
    pg_quant_hsdclip_scales(W, rows, cols, diag, 12.85f, 0.0f, bits, a);
    pg_quant_sdclip_scales(W, rows, cols, 12.85f, bits, b);
    cr_assert(!memcmp(a, b, sizeof a), "bits %u", bits);
  }
  free(W);
}

/* ---- the percentile searches --------------------------------------------------------------- */

/* Mean squared error of W against q·s (pg_dequant_rows), per row into re (may be NULL). */
static double mse_of(const float *W, const int8_t *q, const uint16_t *s, uint64_t rows,
                     uint64_t cols, double *re) {
  float *D = xcalloc(rows * cols, sizeof(float));
  pg_dequant_rows(q, s, rows, cols, D);
  double tot = 0;
  for (uint64_t r = 0; r < rows; r++) {
    double a = 0;
    for (uint64_t c = 0; c < cols; c++) {
      double e = (double)W[r * cols + c] - (double)D[r * cols + c];
      a += e * e;
    }
    if (re) re[r] = a;
    tot += a;
  }
  free(D);
  return tot / (double)(rows * cols);
}

static float *outlier_matrix(uint64_t rows, uint64_t cols, uint64_t seed) {
  float *W = rand_matrix(rows, cols, seed, 0.02);
  uint64_t s = seed + 1;
  for (uint64_t r = 0; r < rows; r++) /* a few rows with one big outlier */
    if (r % 3 == 0) W[r * cols + rng_next(&s) % cols] = (float)(0.5 + rng_unif(&s));
  return W;
}

Test(gptq, pct_picks_the_least_mse) {
  const uint64_t rows = 40, cols = 200;
  float *W = outlier_matrix(rows, cols, 101);
  double mses[PG_QUANT_N_PCT];
  int best = 0;
  int8_t *qi = xcalloc(rows * cols, 1);
  uint16_t si[40];
  for (int i = 0; i < PG_QUANT_N_PCT; i++) {
    pg_quant_pct_scales(W, rows, cols, PG_QUANT_PCTS[i], 31, si);
    pg_quant_rtn_rows(W, rows, cols, si, -31, 31, qi);
    mses[i] = mse_of(W, qi, si, rows, cols, NULL);
    if (mses[i] < mses[best]) best = i;
  }
  /* make sure the search has something to choose: not all equal */
  int distinct = 0;
  for (int i = 1; i < PG_QUANT_N_PCT; i++) distinct += mses[i] != mses[0];
  cr_assert_gt(distinct, 0);
  pg_qmat_opts o = qopts(PG_SCALING_PCT, PG_ROUND_RTN, NULL);
  int8_t *q = xcalloc(rows * cols, 1);
  uint16_t s[40];
  pg_qmat_stats st;
  cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, NULL, q, s, &st, NULL), PG_OK);
  cr_assert_eq(st.pct, PG_QUANT_PCTS[best], "chose %g, want %g", (double)st.pct,
               (double)PG_QUANT_PCTS[best]);
  pg_quant_pct_scales(W, rows, cols, PG_QUANT_PCTS[best], 31, si);
  cr_assert(!memcmp(s, si, sizeof s));
  uint64_t cl = pg_quant_rtn_rows(W, rows, cols, si, -31, 31, qi);
  cr_assert(!memcmp(q, qi, rows * cols));
  cr_assert_float_eq(st.mse, mses[best], 1e-12 * mses[best]);
  cr_assert_eq(st.clamped, cl);
  cr_assert_eq(st.herr, 0.0);
  /* per row: each row keeps its own best, so the MSE can only go down */
  pg_qmat_opts orow = qopts(PG_SCALING_PCT_ROW, PG_ROUND_RTN, NULL);
  int8_t *qr = xcalloc(rows * cols, 1);
  uint16_t sr[40];
  pg_qmat_stats str;
  cr_assert_eq(pg_quant_matrix(W, rows, cols, &orow, NULL, qr, sr, &str, NULL), PG_OK);
  cr_assert_leq(str.mse, st.mse);
  cr_assert_eq(str.pct, 0.0f);
  double rerr[40];
  cr_assert_float_eq(mse_of(W, qr, sr, rows, cols, rerr), str.mse, 1e-12 * str.mse);
  for (uint64_t r = 0; r < rows; r++) { /* no single percentile beats a row's choice */
    for (int i = 0; i < PG_QUANT_N_PCT; i++) {
      uint16_t s1;
      int8_t q1[200];
      pg_quant_pct_scales(W + r * cols, 1, cols, PG_QUANT_PCTS[i], 31, &s1);
      pg_quant_rtn_rows(W + r * cols, 1, cols, &s1, -31, 31, q1);
      double e1;
      mse_of(W + r * cols, q1, &s1, 1, cols, &e1);
      cr_assert_geq(e1, rerr[r]);
    }
  }
  free(W);
  free(q);
  free(qi);
  free(qr);
}

Test(gptq, pct_ties_keep_the_first_percentile) {
  /* every row's two largest |values| are equal: all five percentiles clip at the row max, give
   * the same scales and the same MSE, and the first (0.999) must win */
  const uint64_t rows = 6, cols = 10;
  float *W = rand_matrix(rows, cols, 131, 1.0);
  for (uint64_t r = 0; r < rows; r++) {
    W[r * cols + 2] = 9.0f;
    W[r * cols + 7] = -9.0f;
  }
  pg_qmat_opts o = qopts(PG_SCALING_PCT, PG_ROUND_RTN, NULL);
  int8_t q[60];
  uint16_t s[6];
  pg_qmat_stats st;
  cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, NULL, q, s, &st, NULL), PG_OK);
  cr_assert_eq(st.pct, PG_QUANT_PCTS[0], "chose %g", (double)st.pct);
  for (uint64_t r = 0; r < rows; r++)
    cr_assert_eq(s[r], pg_f32_to_f16(9.0f / 31.0f), "row %llu: %04x", (unsigned long long)r,
                 s[r]);
  free(W);
}

Test(gptq, pct_with_gptq_and_row_choice) {
  const uint32_t n = 64;
  const uint64_t rows = 30;
  float *X = correlated_inputs(300, n, 111);
  pg_hessian H;
  hess_from(&H, X, 300, n, 2);
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, NULL), PG_OK);
  float *W = outlier_matrix(rows, n, 112);
  int8_t *q = xcalloc(rows * n, 1), *qr = xcalloc(rows * n, 1), *qi = xcalloc(rows * n, 1);
  uint16_t s[30], sr[30], si[30];
  pg_qmat_stats st, str;
  pg_qmat_opts o = qopts(PG_SCALING_PCT, PG_ROUND_GPTQ, &p);
  o.qmin = -32; /* the asymmetric int6 range */
  o.qmax = 31;
  cr_assert_eq(pg_quant_matrix(W, rows, n, &o, &H, q, s, &st, NULL), PG_OK);
  /* the chosen percentile reproduces q exactly and no other has a smaller MSE */
  int found = 0;
  for (int i = 0; i < PG_QUANT_N_PCT; i++) {
    pg_quant_pct_scales(W, rows, n, PG_QUANT_PCTS[i], 31, si);
    cr_assert_eq(pg_gptq_quantize(W, rows, n, &p, si, -32, 31, 0, 1, qi, NULL), PG_OK);
    double m = mse_of(W, qi, si, rows, n, NULL);
    if (PG_QUANT_PCTS[i] == st.pct) {
      found = 1;
      cr_assert(!memcmp(q, qi, rows * n));
      cr_assert_float_eq(m, st.mse, 1e-12 * m);
    } else {
      cr_assert_geq(m, st.mse);
    }
  }
  cr_assert(found);
  o.scale_rule = PG_SCALING_PCT_ROW;
  cr_assert_eq(pg_quant_matrix(W, rows, n, &o, &H, qr, sr, &str, NULL), PG_OK);
  cr_assert_leq(str.mse, st.mse);
  cr_assert_gt(str.herr, 0);
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
  free(W);
  free(X);
  free(q);
  free(qr);
  free(qi);
}

Test(gptq, clamped_count_and_sdclip_stats) {
  const uint64_t rows = 10, cols = 50;
  float *W = rand_matrix(rows, cols, 121, 1.0);
  pg_qmat_opts o = qopts(PG_SCALING_SDCLIP, PG_ROUND_RTN, NULL);
  o.k = 2.0f; /* ±2σ: a good share clamps */
  int8_t *q = xcalloc(rows * cols, 1), *qi = xcalloc(rows * cols, 1);
  uint16_t s[10], si[10];
  pg_qmat_stats st;
  cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, NULL, q, s, &st, NULL), PG_OK);
  pg_quant_sdclip_scales(W, rows, cols, 2.0f, 6, si);
  uint64_t cl = pg_quant_rtn_rows(W, rows, cols, si, -31, 31, qi);
  cr_assert(!memcmp(s, si, sizeof s));
  cr_assert(!memcmp(q, qi, rows * cols));
  cr_assert_gt(cl, 0);
  cr_assert_eq(st.clamped, cl);
  cr_assert_float_eq(st.mse, mse_of(W, q, s, rows, cols, NULL), 1e-12);
  /* stats may be NULL */
  cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, NULL, q, s, NULL, NULL), PG_OK);
  free(W);
  free(q);
  free(qi);
}

/* ---- argument errors ----------------------------------------------------------------------- */

Test(gptq, argument_errors) {
  pg_hessian H;
  pg_err e;
  cr_assert_eq(pg_hessian_init(&H, 0, &e), PG_E_ARG);
  cr_assert_eq(pg_hessian_init(&H, 8, NULL), PG_OK);
  for (int j = 0; j < 8; j++) H.h[j * 8 + j] = 1;
  pg_gptq_prep p;
  cr_assert_eq(pg_gptq_prepare(NULL, NULL, &p, &e), PG_E_ARG);
  pg_gptq_opts bad = pg_gptq_defaults();
  bad.damp = -1;
  cr_assert_eq(pg_gptq_prepare(&H, &bad, &p, &e), PG_E_ARG);
  cr_assert_eq(pg_gptq_prepare(&H, NULL, &p, &e), PG_OK);

  float W[4 * 8] = {0};
  int8_t q[4 * 8];
  uint16_t s[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
  cr_assert_eq(pg_gptq_quantize(W, 4, 7, &p, s, -31, 31, 0, 1, q, &e), PG_E_ARG); /* cols */
  cr_assert_eq(pg_gptq_quantize(W, 4, 8, &p, s, 31, -31, 0, 1, q, &e), PG_E_ARG); /* clamp */
  cr_assert_eq(pg_gptq_quantize(W, 4, 8, &p, s, -31, 31, -1, 1, q, &e), PG_E_ARG); /* block */
  cr_assert_eq(pg_gptq_quantize(W, 4, 8, &p, s, -31, 31, 0, 1, q, &e), PG_OK);

  pg_qmat_opts o = qopts(PG_SCALING_SDCLIP, PG_ROUND_RTN, NULL);
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_OK);
  o.bits = 4;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o.bits = 9;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o = qopts(PG_SCALING_SDCLIP, PG_ROUND_RTN, NULL);
  o.qmin = -33; /* below int6 */
  o.qmax = 31;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o.qmin = 5;
  o.qmax = 5;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o.qmin = -32;
  o.qmax = 31;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_OK);
  o = qopts(PG_SCALING_SDCLIP, PG_ROUND_GPTQ, NULL); /* GPTQ without a preparation */
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o = qopts(PG_SCALING_HSDCLIP, PG_ROUND_RTN, NULL);
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o = qopts(PG_SCALING_SDCLIP, PG_ROUND_GPTQ, &p);
  cr_assert_eq(pg_quant_matrix(W, 8, 4, &o, NULL, q, s, NULL, &e), PG_E_ARG); /* 4 ≠ 8 cols */
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_OK);
  o.scale_rule = 7;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o = qopts(PG_SCALING_SDCLIP, 3, NULL);
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  o = qopts(PG_SCALING_SDCLIP, PG_ROUND_RTN, NULL);
  cr_assert_eq(pg_quant_matrix(NULL, 4, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_quant_matrix(W, 0, 8, &o, NULL, q, s, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, NULL, q, s, NULL, &e), PG_OK);
  pg_hessian H7;
  cr_assert_eq(pg_hessian_init(&H7, 7, NULL), PG_OK);
  pg_qmat_stats st;
  cr_assert_eq(pg_quant_matrix(W, 4, 8, &o, &H7, q, s, &st, &e), PG_E_ARG); /* H of 7 */
  cr_assert_eq(e.status, PG_E_ARG);
  pg_hessian_free(&H7);
  pg_gptq_prep_free(&p);
  pg_hessian_free(&H);
}
