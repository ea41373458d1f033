/* test_lqer.c: the top-r SVD (pg_svd_top) and LQER's asymmetric packing (pg_lqer_fit). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_lqer.h"
#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_rng.h"

/* ---- helpers ------------------------------------------------------------------------------- */

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  cr_assert_not_null(p);
  return p;
}

/* k orthonormal vectors of length n (k ≤ n), stored one after another: Gaussian, then classical
 * Gram–Schmidt applied twice. */
static void rand_orthonormal(size_t n, size_t k, uint64_t seed, double *Q) {
  pg_rng g;
  pg_rng_seed(&g, seed);
  for (size_t j = 0; j < k; j++) {
    double *v = Q + j * n;
    for (size_t t = 0; t < n; t++) v[t] = pg_rng_gauss(&g);
    for (int pass = 0; pass < 2; pass++)
      for (size_t i = 0; i < j; i++) {
        double c = 0.0;
        for (size_t t = 0; t < n; t++) c += Q[i * n + t] * v[t];
        for (size_t t = 0; t < n; t++) v[t] -= c * Q[i * n + t];
      }
    double nn = 0.0;
    for (size_t t = 0; t < n; t++) nn += v[t] * v[t];
    nn = sqrt(nn);
    for (size_t t = 0; t < n; t++) v[t] /= nn;
  }
}

/* E [rows × cols] = Σ_i s_i u_i v_iᵀ from vectors u_i (rows), v_i (cols), in fp64, then fp32. */
static void compose(const double *u, const double *s, const double *v, size_t rows, size_t cols,
                    size_t k, float *E) {
  for (size_t a = 0; a < rows; a++)
    for (size_t b = 0; b < cols; b++) {
      double acc = 0.0;
      for (size_t i = 0; i < k; i++) acc += u[i * rows + a] * s[i] * v[i * cols + b];
      E[a * cols + b] = (float)acc;
    }
}

/* Reference SVD: one-sided Jacobi (Hestenes) in fp64 on the columns of E (tall) or of Eᵀ
 * (wide). Writes all p = min(rows, cols) triplets, descending: s [p], u [p × rows], v [p × cols]
 * (vectors contiguous). */
static void ref_svd(const float *E, size_t rows, size_t cols, double *s, double *u, double *v) {
  const int tall = cols <= rows;
  const size_t m = tall ? rows : cols, n = tall ? cols : rows;
  double *C = xcalloc(n * m, sizeof(double)); /* column j of the tall matrix at C + j*m */
  double *V = xcalloc(n * n, sizeof(double)); /* column j at V + j*n */
  for (size_t j = 0; j < n; j++) {
    for (size_t i = 0; i < m; i++) C[j * m + i] = tall ? E[i * cols + j] : E[j * cols + i];
    V[j * n + j] = 1.0;
  }
  for (int sweep = 0; sweep < 60; sweep++) {
    int rotated = 0;
    for (size_t p = 0; p + 1 < n; p++)
      for (size_t q = p + 1; q < n; q++) {
        double al = 0, be = 0, ga = 0;
        for (size_t i = 0; i < m; i++) {
          al += C[p * m + i] * C[p * m + i];
          be += C[q * m + i] * C[q * m + i];
          ga += C[p * m + i] * C[q * m + i];
        }
        if (ga == 0.0 || fabs(ga) <= 1e-15 * sqrt(al * be)) continue;
        rotated = 1;
        const double zeta = (be - al) / (2.0 * ga);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
        const double c = 1.0 / sqrt(1.0 + t * t), sn = c * t;
        for (size_t i = 0; i < m; i++) {
          const double x = C[p * m + i], y = C[q * m + i];
          C[p * m + i] = c * x - sn * y;
          C[q * m + i] = sn * x + c * y;
        }
        for (size_t i = 0; i < n; i++) {
          const double x = V[p * n + i], y = V[q * n + i];
          V[p * n + i] = c * x - sn * y;
          V[q * n + i] = sn * x + c * y;
        }
      }
    if (!rotated) break;
  }
  size_t *ord = xcalloc(n, sizeof(size_t));
  double *sig = xcalloc(n, sizeof(double));
  for (size_t j = 0; j < n; j++) {
    double nn = 0;
    for (size_t i = 0; i < m; i++) nn += C[j * m + i] * C[j * m + i];
    sig[j] = sqrt(nn);
    ord[j] = j;
  }
  for (size_t i = 0; i < n; i++) /* selection sort, descending */
    for (size_t j = i + 1; j < n; j++)
      if (sig[ord[j]] > sig[ord[i]]) {
        size_t t = ord[i];
        ord[i] = ord[j];
        ord[j] = t;
      }
  for (size_t i = 0; i < n; i++) {
    const size_t j = ord[i];
    s[i] = sig[j];
    double *big = tall ? u : v, *small = tall ? v : u; /* big side: m, small side: n */
    for (size_t t = 0; t < m; t++) big[i * m + t] = sig[j] > 0 ? C[j * m + t] / sig[j] : 0.0;
    for (size_t t = 0; t < n; t++) small[i * n + t] = V[j * n + t];
  }
  free(C);
  free(V);
  free(ord);
  free(sig);
}

/* |u_i · ref_i| for column i of U [rows × r] against a contiguous reference vector. */
static double ucol_dot(const double *U, size_t rows, size_t r, size_t i, const double *ref) {
  double d = 0.0;
  for (size_t a = 0; a < rows; a++) d += U[a * r + i] * ref[a];
  return fabs(d);
}
static double vrow_dot(const double *Vt, size_t cols, size_t i, const double *ref) {
  double d = 0.0;
  for (size_t b = 0; b < cols; b++) d += Vt[i * cols + b] * ref[b];
  return fabs(d);
}

/* Max deviation of UᵀU and VVᵀ from the identity (U [rows × r], Vt [r × cols]). */
static double orth_dev(const double *U, const double *Vt, size_t rows, size_t cols, size_t r) {
  double dev = 0.0;
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < r; j++) {
      double du = 0, dv = 0;
      for (size_t a = 0; a < rows; a++) du += U[a * r + i] * U[a * r + j];
      for (size_t b = 0; b < cols; b++) dv += Vt[i * cols + b] * Vt[j * cols + b];
      const double id = i == j ? 1.0 : 0.0;
      if (fabs(du - id) > dev) dev = fabs(du - id);
      if (fabs(dv - id) > dev) dev = fabs(dv - id);
    }
  return dev;
}

/* Every V row's largest-|.| entry (the first among exact ties) is positive. */
static void check_signs(const double *Vt, size_t cols, size_t r) {
  for (size_t i = 0; i < r; i++) {
    size_t best = 0;
    for (size_t b = 1; b < cols; b++)
      if (fabs(Vt[i * cols + b]) > fabs(Vt[i * cols + best])) best = b;
    cr_assert(Vt[i * cols + best] > 0.0, "row %zu: largest entry %g not positive", i,
              Vt[i * cols + best]);
  }
}

typedef struct {
  double *U, *S, *Vt;
} svd_out;

static svd_out run_svd(const float *E, size_t rows, size_t cols, unsigned r, int nthreads) {
  svd_out o = {xcalloc(rows * r, sizeof(double)), xcalloc(r, sizeof(double)),
               xcalloc(r * cols, sizeof(double))};
  pg_err err = {0};
  int rc = pg_svd_top(E, rows, cols, r, nthreads, o.U, o.S, o.Vt, &err);
  cr_assert_eq(rc, PG_OK, "pg_svd_top %zux%zu r=%u: %s", rows, cols, r, err.msg);
  return o;
}
static void free_svd(svd_out *o) {
  free(o->U);
  free(o->S);
  free(o->Vt);
}

/* Check the top r triplets against known ones (s descending, u [*×rows], v [*×cols]). */
static void check_against(const svd_out *o, size_t rows, size_t cols, unsigned r,
                          const double *s, const double *u, const double *v, double stol,
                          double vtol) {
  for (unsigned i = 0; i < r; i++) {
    cr_assert(fabs(o->S[i] - s[i]) <= stol * s[i], "%zux%zu r=%u: S[%u] = %.17g, want %.17g",
              rows, cols, r, i, o->S[i], s[i]);
    const double du = ucol_dot(o->U, rows, r, i, u + i * rows);
    const double dv = vrow_dot(o->Vt, cols, i, v + i * cols);
    cr_assert(fabs(du - 1.0) <= vtol && fabs(dv - 1.0) <= vtol,
              "%zux%zu r=%u: triplet %u: |u.u*| = %.17g, |v.v*| = %.17g", rows, cols, r, i, du, dv);
  }
  const double od = orth_dev(o->U, o->Vt, rows, cols, r);
  cr_assert(od <= 1e-10, "%zux%zu r=%u: not orthonormal (%g)", rows, cols, r, od);
  check_signs(o->Vt, cols, r);
}

/* Sylvester Hadamard matrix of order n (a power of two), entries ±1, row-major. */
static void hadamard(size_t n, double *H) {
  H[0] = 1.0;
  for (size_t h = 1; h < n; h *= 2)
    for (size_t i = 0; i < h; i++)
      for (size_t j = 0; j < h; j++) {
        const double x = H[i * n + j];
        H[i * n + j + h] = x;
        H[(i + h) * n + j] = x;
        H[(i + h) * n + j + h] = -x;
      }
}

/* ---- SVD ----------------------------------------------------------------------------------- */

/* E = U diag(s) Vᵀ held exactly in fp32: U = 16 columns of a sign-flipped H_64 / 8, V = a
 * sign-flipped H_16 / 4, s = distinct values with few bits. The triplets are known exactly. */
Test(svd, exact_known_triplets_tall_and_wide) {
  const size_t m = 64, n = 16;
  double *H64 = xcalloc(m * m, sizeof(double)), *H16 = xcalloc(n * n, sizeof(double));
  hadamard(m, H64);
  hadamard(n, H16);
  const double s[16] = {40, 33, 27, 22, 18, 15, 12, 10, 8, 6, 5, 4, 3, 2, 1.5, 1};
  double *u = xcalloc(n * m, sizeof(double)), *v = xcalloc(n * n, sizeof(double));
  pg_rng g;
  pg_rng_seed(&g, 99);
  double sgn_m[64], sgn_n[16];
  for (size_t t = 0; t < m; t++) sgn_m[t] = (pg_rng_u64(&g) & 1) ? -1.0 : 1.0;
  for (size_t t = 0; t < n; t++) sgn_n[t] = (pg_rng_u64(&g) & 1) ? -1.0 : 1.0;
  const size_t pick[16] = {3, 60, 17, 42, 9, 33, 50, 1, 27, 12, 58, 38, 21, 6, 47, 30};
  for (size_t i = 0; i < n; i++) {
    for (size_t t = 0; t < m; t++) u[i * m + t] = sgn_m[t] * H64[t * m + pick[i]] / 8.0;
    for (size_t t = 0; t < n; t++) v[i * n + t] = sgn_n[t] * H16[t * n + (i * 5) % n] / 4.0;
  }
  float *E = xcalloc(m * n, sizeof(float)), *Et = xcalloc(m * n, sizeof(float));
  compose(u, s, v, m, n, n, E);
  for (size_t a = 0; a < m; a++)
    for (size_t b = 0; b < n; b++) {
      double acc = 0.0;
      for (size_t i = 0; i < n; i++) acc += u[i * m + a] * s[i] * v[i * n + b];
      cr_assert_eq((double)E[a * n + b], acc, "test setup: E not exact in fp32");
      Et[b * m + a] = E[a * n + b];
    }
  const unsigned ranks[3] = {1, 4, 16};
  for (int k = 0; k < 3; k++) {
    svd_out o = run_svd(E, m, n, ranks[k], 2);
    check_against(&o, m, n, ranks[k], s, u, v, 1e-9, 1e-9);
    free_svd(&o);
    svd_out w = run_svd(Et, n, m, ranks[k], 2); /* wide: the roles of u and v swap */
    check_against(&w, n, m, ranks[k], s, v, u, 1e-9, 1e-9);
    free_svd(&w);
  }
  free(H64);
  free(H16);
  free(u);
  free(v);
  free(E);
  free(Et);
}

/* Random orthonormal U, V (Gram–Schmidt), distinct s; the fp32 rounding of E moves its singular
 * values by ~1e-7, so the 1e-9 check is against an fp64 one-sided Jacobi SVD of the fp32 E, and
 * the designed values are checked loosely. */
static void random_case(size_t rows, size_t cols, unsigned r, uint64_t seed) {
  const size_t p = rows < cols ? rows : cols;
  double *u = xcalloc(p * rows, sizeof(double)), *v = xcalloc(p * cols, sizeof(double));
  double *s = xcalloc(p, sizeof(double));
  rand_orthonormal(rows, p, seed, u);
  rand_orthonormal(cols, p, seed + 1, v);
  for (size_t i = 0; i < p; i++) s[i] = 10.0 * pow(0.85, (double)i);
  float *E = xcalloc(rows * cols, sizeof(float));
  compose(u, s, v, rows, cols, p, E);
  double *rs = xcalloc(p, sizeof(double)), *ru = xcalloc(p * rows, sizeof(double)),
         *rv = xcalloc(p * cols, sizeof(double));
  ref_svd(E, rows, cols, rs, ru, rv);
  svd_out o = run_svd(E, rows, cols, r, 2);
  check_against(&o, rows, cols, r, rs, ru, rv, 1e-9, 1e-9);
  for (unsigned i = 0; i < r; i++) /* the designed spectrum, up to the fp32 rounding of E */
    cr_assert(fabs(o.S[i] - s[i]) <= 1e-5 * s[0], "S[%u] = %g, designed %g", i, o.S[i], s[i]);
  free_svd(&o);
  free(u);
  free(v);
  free(s);
  free(E);
  free(rs);
  free(ru);
  free(rv);
}

Test(svd, random_orthonormal_tall) { random_case(96, 40, 6, 11); }
Test(svd, random_orthonormal_wide) { random_case(40, 96, 6, 21); }
Test(svd, random_orthonormal_full_rank) {
  random_case(48, 20, 20, 31);
  random_case(20, 48, 20, 41);
}

/* A flat spectrum (a Gaussian matrix, like a quantization error) converges slowest. */
Test(svd, gaussian_matrix_against_reference) {
  const size_t rows = 200, cols = 64;
  const unsigned r = 4;
  float *E = xcalloc(rows * cols, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, 5);
  for (size_t i = 0; i < rows * cols; i++) E[i] = (float)(0.02 * pg_rng_gauss(&g));
  double *rs = xcalloc(cols, sizeof(double)), *ru = xcalloc(cols * rows, sizeof(double)),
         *rv = xcalloc(cols * cols, sizeof(double));
  ref_svd(E, rows, cols, rs, ru, rv);
  svd_out o = run_svd(E, rows, cols, r, 1);
  check_against(&o, rows, cols, r, rs, ru, rv, 1e-9, 1e-8);
  free_svd(&o);
  free(E);
  free(rs);
  free(ru);
  free(rv);
}

/* An integer matrix of rank 3 (exact in fp32) is reproduced from 3 or more triplets. */
Test(svd, low_rank_reconstructs_exactly) {
  const size_t R = 50, C = 30;
  float *E = xcalloc(R * C, sizeof(float)), *Et = xcalloc(R * C, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, 7);
  int a[3][50], b[3][30];
  for (int k = 0; k < 3; k++) {
    for (size_t i = 0; i < R; i++) a[k][i] = (int)(pg_rng_u64(&g) % 17) - 8;
    for (size_t j = 0; j < C; j++) b[k][j] = (int)(pg_rng_u64(&g) % 17) - 8;
  }
  float emax = 0.0f;
  for (size_t i = 0; i < R; i++)
    for (size_t j = 0; j < C; j++) {
      const int e = a[0][i] * b[0][j] + 3 * a[1][i] * b[1][j] - 7 * a[2][i] * b[2][j];
      E[i * C + j] = (float)e;
      Et[j * R + i] = (float)e;
      if (fabsf((float)e) > emax) emax = fabsf((float)e);
    }
  const unsigned ranks[3] = {3, 4, 30};
  for (int w = 0; w < 2; w++)
    for (int k = 0; k < 3; k++) {
      const size_t rows = w ? C : R, cols = w ? R : C;
      const float *M = w ? Et : E;
      const unsigned r = ranks[k];
      svd_out o = run_svd(M, rows, cols, r, 2);
      double dev = 0.0;
      for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
          double acc = 0.0;
          for (unsigned t = 0; t < r; t++) acc += o.U[i * r + t] * o.S[t] * o.Vt[t * cols + j];
          const double d = fabs(acc - (double)M[i * cols + j]);
          if (d > dev) dev = d;
        }
      cr_assert(dev <= 1e-9 * emax, "%zux%zu r=%u: reconstruction off by %g", rows, cols, r, dev);
      cr_assert(o.S[2] > 1.0, "the third singular value is %g", o.S[2]);
      for (unsigned t = 3; t < r; t++)
        cr_assert(o.S[t] <= 1e-9 * o.S[0], "S[%u] = %g for a rank-3 matrix", t, o.S[t]);
      for (unsigned t = 1; t < r; t++) cr_assert(o.S[t] <= o.S[t - 1], "S not descending");
      check_signs(o.Vt, cols, r);
      free_svd(&o);
    }
  free(E);
  free(Et);
}

static void same_bits_case(size_t rows, size_t cols, unsigned r) {
  float *E = xcalloc(rows * cols, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, rows * 1000 + cols);
  for (size_t i = 0; i < rows * cols; i++) E[i] = (float)pg_rng_gauss(&g);
  E[5] = 30.0f; /* some structure on top of the noise */
  svd_out base = run_svd(E, rows, cols, r, 1);
  const int threads[4] = {2, 3, 0, 1};
  for (int t = 0; t < 4; t++) {
    svd_out o = run_svd(E, rows, cols, r, threads[t]);
    cr_assert(memcmp(o.U, base.U, rows * r * sizeof(double)) == 0, "U differs, nthreads %d",
              threads[t]);
    cr_assert(memcmp(o.S, base.S, r * sizeof(double)) == 0, "S differs, nthreads %d",
              threads[t]);
    cr_assert(memcmp(o.Vt, base.Vt, r * cols * sizeof(double)) == 0, "V differs, nthreads %d",
              threads[t]);
    free_svd(&o);
  }
  free_svd(&base);
  free(E);
}

Test(svd, same_bits_for_any_thread_count) {
  same_bits_case(300, 100, 5); /* several Gram tiles and long-side chunks */
  same_bits_case(70, 260, 3);  /* wide */
  same_bits_case(33, 33, 33);
}

Test(svd, zero_matrix) {
  const size_t shapes[2][2] = {{10, 7}, {7, 10}};
  const unsigned ranks[2] = {3, 7};
  for (int sh = 0; sh < 2; sh++)
    for (int k = 0; k < 2; k++) {
      const size_t rows = shapes[sh][0], cols = shapes[sh][1];
      const unsigned r = ranks[k];
      float *E = xcalloc(rows * cols, sizeof(float));
      svd_out o = run_svd(E, rows, cols, r, 2);
      for (unsigned i = 0; i < r; i++) cr_assert_eq(o.S[i], 0.0);
      for (size_t i = 0; i < rows * r; i++) cr_assert_eq(o.U[i], 0.0);
      for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < r; j++) {
          double d = 0.0;
          for (size_t c = 0; c < cols; c++) d += o.Vt[i * cols + c] * o.Vt[j * cols + c];
          cr_assert(fabs(d - (i == j ? 1.0 : 0.0)) <= 1e-12, "%zux%zu: V not orthonormal", rows,
                    cols);
        }
      free_svd(&o);
      free(E);
    }
}

Test(svd, tiny_matrices) {
  const float one[1] = {-3.0f};
  svd_out o = run_svd(one, 1, 1, 1, 2);
  cr_assert_eq(o.S[0], 3.0);
  cr_assert_eq(o.Vt[0], 1.0); /* the sign convention puts the minus on U */
  cr_assert_eq(o.U[0], -1.0);
  free_svd(&o);

  const float row[5] = {0.0f, 3.0f, 0.0f, -4.0f, 0.0f}; /* 1×5 and 5×1 */
  svd_out a = run_svd(row, 1, 5, 1, 1), b = run_svd(row, 5, 1, 1, 3);
  cr_assert(fabs(a.S[0] - 5.0) <= 1e-12 && fabs(b.S[0] - 5.0) <= 1e-12, "S %g %g", a.S[0],
            b.S[0]);
  cr_assert(fabs(a.Vt[3] - 0.8) <= 1e-12 && fabs(a.Vt[1] + 0.6) <= 1e-12 && a.U[0] == -1.0,
            "1x5: V = %g %g, U = %g", a.Vt[1], a.Vt[3], a.U[0]);
  cr_assert(b.Vt[0] == 1.0 && fabs(b.U[3] + 0.8) <= 1e-12 && fabs(b.U[1] - 0.6) <= 1e-12,
            "5x1: V = %g, U = %g %g", b.Vt[0], b.U[1], b.U[3]);
  free_svd(&a);
  free_svd(&b);

  const float m23[6] = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}; /* σ² = (91 ± √8065)/2 */
  const double s1 = sqrt((91.0 + sqrt(8065.0)) / 2.0), s2 = sqrt((91.0 - sqrt(8065.0)) / 2.0);
  svd_out c = run_svd(m23, 2, 3, 2, 2);
  cr_assert(fabs(c.S[0] - s1) <= 1e-12 * s1 && fabs(c.S[1] - s2) <= 1e-9 * s2, "S %.17g %.17g",
            c.S[0], c.S[1]);
  cr_assert(orth_dev(c.U, c.Vt, 2, 3, 2) <= 1e-12);
  free_svd(&c);
}

Test(svd, bad_arguments) {
  float E[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  double U[12], S[4], Vt[16];
  pg_err err = {0};
  cr_assert_eq(pg_svd_top(E, 3, 4, 0, 1, U, S, Vt, &err), PG_E_ARG);
  cr_assert_eq(err.status, PG_E_ARG);
  cr_assert_eq(pg_svd_top(E, 3, 4, 4, 1, U, S, Vt, &err), PG_E_ARG);
  cr_assert_eq(pg_svd_top(E, 4, 3, 4, 1, U, S, Vt, &err), PG_E_ARG);
  cr_assert_eq(pg_svd_top(E, 0, 4, 1, 1, U, S, Vt, &err), PG_E_ARG);
  cr_assert_eq(pg_svd_top(NULL, 3, 4, 1, 1, U, S, Vt, &err), PG_E_ARG);
  cr_assert_eq(pg_svd_top(E, 3, 4, 1, 1, U, NULL, Vt, &err), PG_E_ARG);
  cr_assert_eq(pg_svd_top(E, UINT64_MAX, UINT64_MAX, 1, 1, U, S, Vt, &err), PG_E_ARG);
  E[7] = NAN;
  cr_assert_eq(pg_svd_top(E, 3, 4, 1, 1, U, S, Vt, &err), PG_E_ARG);
  E[7] = INFINITY;
  cr_assert_eq(pg_svd_top(E, 3, 4, 1, 1, U, S, Vt, &err), PG_E_ARG);
  E[7] = 8.0f;
  cr_assert_eq(pg_svd_top(E, 3, 4, 3, 1, U, S, Vt, &err), PG_OK); /* r = min(rows, cols) */
}

/* ---- LQER ---------------------------------------------------------------------------------- */

typedef struct {
  int8_t *qa, *qb;
  uint16_t sa, *sb;
} lqer_out;

static lqer_out run_fit(const float *E, size_t rows, size_t cols, unsigned r, int nthreads) {
  lqer_out o = {xcalloc(rows * r, 1), xcalloc(r * cols, 1), 0,
                xcalloc(r * cols / PG_LQER_GROUP, sizeof(uint16_t))};
  pg_err err = {0};
  int rc = pg_lqer_fit(E, rows, cols, r, nthreads, o.qa, &o.sa, o.qb, o.sb, &err);
  cr_assert_eq(rc, PG_OK, "pg_lqer_fit %zux%zu r=%u: %s", rows, cols, r, err.msg);
  return o;
}
static void free_fit(lqer_out *o) {
  free(o->qa);
  free(o->qb);
  free(o->sb);
}

/* The packing recomputed here from pg_svd_top's factors and compared bit for bit. */
static void fit_matches_case(size_t rows, size_t cols, unsigned r, uint64_t seed) {
  float *E = xcalloc(rows * cols, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, seed);
  for (size_t i = 0; i < rows * cols; i++) E[i] = (float)(0.003 * pg_rng_gauss(&g));
  lqer_out o = run_fit(E, rows, cols, r, 2);
  svd_out d = run_svd(E, rows, cols, r, 1);

  /* A: fp32 copies, one scale from the largest magnitude */
  float *A = xcalloc(rows * r, sizeof(float));
  float amax = 0.0f;
  for (size_t i = 0; i < rows; i++)
    for (unsigned k = 0; k < r; k++) {
      A[i * r + k] = (float)(d.U[i * r + k] * d.S[k]);
      amax = fmaxf(amax, fabsf(A[i * r + k]));
    }
  const uint16_t want_sa = pg_f32_to_f16(fmaxf(amax, 1e-10f) / 1.5f);
  cr_assert_eq(o.sa, want_sa, "sA %#06x, want %#06x", o.sa, want_sa);
  int seen_lo = 0, seen_hi = 0;
  for (size_t i = 0; i < rows * r; i++) {
    float q = nearbyintf(A[i] / pg_f16_to_f32(want_sa));
    q = q < -2.0f ? -2.0f : (q > 1.0f ? 1.0f : q);
    cr_assert_eq(o.qa[i], (int8_t)q, "qA[%zu] = %d, want %d", i, o.qa[i], (int)q);
    cr_assert(o.qa[i] >= -2 && o.qa[i] <= 1);
    seen_lo |= o.qa[i] == -2;
    seen_hi |= o.qa[i] == 1;
  }
  cr_assert(seen_lo || seen_hi, "qA never reaches its extremes");

  /* B = Vt flattened, groups of 64 */
  const size_t nb = r * cols, ng = nb / PG_LQER_GROUP;
  for (size_t gi = 0; gi < ng; gi++) {
    float bmax = 0.0f;
    for (size_t t = gi * 64; t < gi * 64 + 64; t++) bmax = fmaxf(bmax, fabsf((float)d.Vt[t]));
    const uint16_t want_sb = pg_f32_to_f16(fmaxf(bmax, 1e-10f) / 7.5f);
    cr_assert_eq(o.sb[gi], want_sb, "sB[%zu] %#06x, want %#06x", gi, o.sb[gi], want_sb);
    int ext = 0;
    for (size_t t = gi * 64; t < gi * 64 + 64; t++) {
      float q = nearbyintf((float)d.Vt[t] / pg_f16_to_f32(want_sb));
      q = q < -8.0f ? -8.0f : (q > 7.0f ? 7.0f : q);
      cr_assert_eq(o.qb[t], (int8_t)q, "qB[%zu] = %d, want %d", t, o.qb[t], (int)q);
      cr_assert(o.qb[t] >= -8 && o.qb[t] <= 7);
      ext |= o.qb[t] == 7 || o.qb[t] == -8 || o.qb[t] == -7;
    }
    cr_assert(ext, "group %zu: its largest value does not reach the int4 edge", gi);
  }
  free(A);
  free_svd(&d);
  free_fit(&o);
  free(E);
}

Test(lqer, packing_matches_independent_computation) {
  fit_matches_case(128, 64, 4, 1);
  fit_matches_case(40, 32, 2, 2);  /* a group of 64 spans both rows of B */
  fit_matches_case(48, 160, 2, 3); /* wide; groups cross row boundaries */
}

/* E = x yᵀ with ‖y‖ = 1 and dyadic entries, so A = x and B = y exactly (the sign convention makes
 * B's largest entry positive) and every value of the packing follows by hand, ties included. */
Test(lqer, hand_computed_rank_one) {
  const float x[5] = {-24.0f, 24.0f, 12.0f, 8.0f, -8.0f};
  float y[64] = {0.9375f, 0.3125f, -0.0625f, 0.0625f, 0.0625f, -0.0625f, 0.0625f, -0.0625f};
  float E[5 * 64];
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 64; j++) E[i * 64 + j] = x[i] * y[j];
  lqer_out o = run_fit(E, 5, 64, 1, 1);
  cr_assert_eq(o.sa, pg_f32_to_f16(16.0f)); /* 24 / 1.5 */
  const int8_t want_qa[5] = {-2, 1, 1, 0, 0}; /* −1.5 → −2; 1.5 → 2 → 1; 0.75 → 1; ±0.5 → 0 */
  for (int i = 0; i < 5; i++) cr_assert_eq(o.qa[i], want_qa[i], "qA[%d] = %d", i, o.qa[i]);
  cr_assert_eq(o.sb[0], pg_f32_to_f16(0.125f)); /* 0.9375 / 7.5 */
  const int8_t want_qb[8] = {7, 2, 0, 0, 0, 0, 0, 0}; /* 7.5 → 8 → 7; 2.5 → 2; ±0.5 → 0 */
  for (int j = 0; j < 64; j++)
    cr_assert_eq(o.qb[j], j < 8 ? want_qb[j] : 0, "qB[%d] = %d", j, o.qb[j]);
  free_fit(&o);
}

static double frob(const float *X, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)X[i] * X[i];
  return sqrt(s);
}

/* ‖E − (qA·sA)(qB·sB)‖ / ‖E‖, the correction applied as the container's dequantization does. */
static double residual_ratio(const float *E, size_t rows, size_t cols, unsigned r) {
  lqer_out o = run_fit(E, rows, cols, r, 2);
  float *W = xcalloc(rows * cols, sizeof(float));
  for (size_t i = 0; i < rows * cols; i++) W[i] = -E[i];
  pg_lqer_apply(W, rows, cols, r, o.qa, o.sa, o.qb, o.sb); /* W = −(E − AB) */
  const double ratio = frob(W, rows * cols) / frob(E, rows * cols);
  /* the same correction with the wrong sign makes E larger (so the checks below can fail) */
  for (size_t i = 0; i < rows * cols; i++) W[i] = E[i];
  pg_lqer_apply(W, rows, cols, r, o.qa, o.sa, o.qb, o.sb);
  cr_assert(frob(W, rows * cols) > frob(E, rows * cols));
  free(W);
  free_fit(&o);
  return ratio;
}

/* E = a rank-2 matrix of large magnitude + small noise: the packed correction removes most of E.
 * With ±1 left factors (which int2 holds well) at least 40% must go; with Gaussian left factors
 * int2 rounds most of A to 0, so the bar there is lower. */
Test(lqer, correction_reduces_error) {
  const size_t rows = 256, cols = 128;
  float *E = xcalloc(rows * cols, sizeof(float)), *F = xcalloc(rows * cols, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, 17);
  double sa[2][256], ga[2][256], b[2][128];
  for (int k = 0; k < 2; k++) {
    for (size_t i = 0; i < rows; i++) {
      sa[k][i] = (pg_rng_u64(&g) & 1) ? 1.0 : -1.0;
      ga[k][i] = pg_rng_gauss(&g);
    }
    for (size_t j = 0; j < cols; j++) b[k][j] = pg_rng_gauss(&g);
  }
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++) {
      const double noise = 0.002 * pg_rng_gauss(&g);
      E[i * cols + j] = (float)(0.05 * sa[0][i] * b[0][j] + 0.03 * sa[1][i] * b[1][j] + noise);
      F[i * cols + j] = (float)(0.05 * ga[0][i] * b[0][j] + 0.03 * ga[1][i] * b[1][j] + noise);
    }
  const double re = residual_ratio(E, rows, cols, 4), rf = residual_ratio(F, rows, cols, 4);
  cr_log_info("LQER residual: sign factors %.1f%%, Gaussian factors %.1f%%", 100.0 * re,
              100.0 * rf);
  cr_assert(re <= 0.6, "sign factors: %.1f%% of ||E|| left (want <= 60%%)", 100.0 * re);
  cr_assert(rf <= 0.75, "Gaussian factors: %.1f%% of ||E|| left (want <= 75%%)", 100.0 * rf);
  free(E);
  free(F);
}

Test(lqer, reruns_and_thread_counts_identical) {
  const size_t rows = 192, cols = 96;
  const unsigned r = 4;
  float *E = xcalloc(rows * cols, sizeof(float));
  pg_rng g;
  pg_rng_seed(&g, 23);
  for (size_t i = 0; i < rows * cols; i++) E[i] = (float)(0.01 * pg_rng_gauss(&g));
  lqer_out base = run_fit(E, rows, cols, r, 1);
  const int threads[4] = {1, 2, 3, 0};
  for (int t = 0; t < 4; t++) {
    lqer_out o = run_fit(E, rows, cols, r, threads[t]);
    cr_assert_eq(o.sa, base.sa);
    cr_assert(memcmp(o.qa, base.qa, rows * r) == 0, "qA differs, nthreads %d", threads[t]);
    cr_assert(memcmp(o.qb, base.qb, r * cols) == 0, "qB differs, nthreads %d", threads[t]);
    cr_assert(memcmp(o.sb, base.sb, r * cols / 64 * sizeof(uint16_t)) == 0,
              "sB differs, nthreads %d", threads[t]);
    free_fit(&o);
  }
  free_fit(&base);
  free(E);
}

Test(lqer, bad_arguments) {
  float E[40 * 40];
  for (int i = 0; i < 40 * 40; i++) E[i] = (float)((i * 37) % 11) - 5.0f;
  int8_t qa[160], qb[160];
  uint16_t sa, sb[4];
  pg_err err = {0};
  /* r·cols = 40: not a multiple of 64 */
  cr_assert_eq(pg_lqer_fit(E, 40, 40, 1, 1, qa, &sa, qb, sb, &err), PG_E_ARG);
  cr_assert_eq(err.status, PG_E_ARG);
  cr_assert_eq(pg_lqer_fit(E, 40, 40, 3, 1, qa, &sa, qb, sb, &err), PG_E_ARG); /* 120 */
  cr_assert_eq(pg_lqer_fit(E, 40, 40, 0, 1, qa, &sa, qb, sb, &err), PG_E_ARG);
  cr_assert_eq(pg_lqer_fit(E, 1, 64, 2, 1, qa, &sa, qb, sb, &err), PG_E_ARG); /* r > rows */
  cr_assert_eq(pg_lqer_fit(E, 40, 32, 2, 1, qa, &sa, qb, NULL, &err), PG_E_ARG);
  /* and a valid call on the same buffers succeeds: 40×32 at rank 2 is one group */
  cr_assert_eq(pg_lqer_fit(E, 40, 32, 2, 1, qa, &sa, qb, sb, &err), PG_OK, "%s", err.msg);
}
