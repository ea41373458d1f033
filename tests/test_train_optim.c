/* test_train_optim.c: the trainer's optimizer pieces (pg_muon.h) and the checkpoint accessors of
 * pg_optim.h. Newton–Schulz against a scalar hand computation, an explicit 2×3 unrolled
 * computation and a plain-loop reference written here (bit for bit, shapes chosen to cross the
 * kernel's blocking), its singular values (classic quintic vs Polar Express), transposition and
 * thread-count invariance; the Muon step (momentum, Nesterov, MuonEq-R, weight decay order, shape
 * scale) against independent fp64 formulas; the schedules, EMA/SWA and AdamW/SGD restore. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_muon.h"
#include "pg_ops.h"
#include "pg_optim.h"
#include "pg_rng.h"
#include "pg_sched.h"

/* ---- helpers --------------------------------------------------------------------------------- */

/* The coefficient tables, typed in again from spec/records.md §3.2 (not taken from the library). */
static const double T_CLASSIC[3] = {3.4445, -4.7750, 2.0315};
static const double T_POLAR[5][3] = {
    {8.156554524902461, -22.48329292557795, 15.878769915207462},
    {4.042929935166739, -2.808917465908714, 0.5000178451051316},
    {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
    {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
    {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
};

static const double *t_coeffs(int kind, int s) {
  return kind == PG_NS_POLAR_EXPRESS ? T_POLAR[s < 4 ? s : 4] : T_CLASSIC;
}

static float *fmalloc(size_t n) {
  float *p = calloc(n ? n : 1, sizeof *p);
  cr_assert_not_null(p);
  return p;
}

static void fill_gauss(float *x, size_t n, uint64_t seed, double scale) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++) x[i] = (float)(scale * pg_rng_gauss(&r));
}

/* Plain loops of the documented computation: full products (no symmetry used), A·A read down
 * the columns of A, fp64 sums in ascending order, one rounding per element. */
static void ref_ns(const float *G, int rows, int cols, int kind, int steps, float *out) {
  int tr = rows > cols, m = tr ? cols : rows, n = tr ? rows : cols;
  float *X = fmalloc((size_t)m * n), *Y = fmalloc((size_t)m * n);
  float *A = fmalloc((size_t)m * m), *B = fmalloc((size_t)m * m);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) X[i * n + j] = tr ? G[j * cols + i] : G[i * cols + j];
  double ss = 0;
  for (int k = 0; k < m * n; k++) ss += (double)X[k] * X[k];
  double den = sqrt(ss) + 1e-7;
  for (int k = 0; k < m * n; k++) X[k] = (float)(X[k] / den);
  for (int s = 0; s < steps; s++) {
    const double *c = t_coeffs(kind, s);
    for (int i = 0; i < m; i++)
      for (int j = 0; j < m; j++) {
        double acc = 0;
        for (int k = 0; k < n; k++) acc += (double)X[i * n + k] * X[j * n + k];
        A[i * m + j] = (float)acc;
      }
    for (int i = 0; i < m; i++)
      for (int j = 0; j < m; j++) {
        double acc = 0;
        for (int k = 0; k < m; k++) acc += (double)A[i * m + k] * A[k * m + j];
        B[i * m + j] = (float)(c[1] * A[i * m + j] + c[2] * acc);
      }
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double acc = 0;
        for (int k = 0; k < m; k++) acc += (double)B[i * m + k] * X[k * n + j];
        Y[i * n + j] = (float)(c[0] * X[i * n + j] + acc);
      }
    memcpy(X, Y, sizeof(float) * (size_t)m * n);
  }
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) *(tr ? &out[j * cols + i] : &out[i * cols + j]) = X[i * n + j];
  free(X), free(Y), free(A), free(B);
}

/* The library's NS into a fresh buffer. */
static float *lib_ns(const float *G, int rows, int cols, int kind, int steps, int nthreads) {
  float *out = fmalloc((size_t)rows * cols), *scr = fmalloc(pg_ns_scratch_floats(rows, cols));
  /* poison the scratch: nothing may depend on its initial contents */
  memset(scr, 0xA5, pg_ns_scratch_floats(rows, cols) * sizeof *scr);
  pg_newton_schulz(G, rows, cols, kind, steps, out, scr, nthreads);
  free(scr);
  return out;
}

static void assert_same_bits(const float *a, const float *b, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++)
    cr_assert(!memcmp(&a[i], &b[i], sizeof(float)), "%s: element %zu differs: %.9g vs %.9g", what,
              i, a[i], b[i]);
}

/* Eigenvalues of a small symmetric matrix (cyclic Jacobi, fp64; a is destroyed). */
static void jacobi_eigen(double *a, int n, double *ev) {
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0;
    for (int p = 0; p < n; p++)
      for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    if (off < 1e-30) break;
    for (int p = 0; p < n; p++)
      for (int q = p + 1; q < n; q++) {
        double apq = a[p * n + q];
        if (fabs(apq) < 1e-300) continue;
        double th = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1));
        double c = 1 / sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; k++) {
          double kp = a[k * n + p], kq = a[k * n + q];
          a[k * n + p] = c * kp - s * kq, a[k * n + q] = s * kp + c * kq;
        }
        for (int k = 0; k < n; k++) {
          double pk = a[p * n + k], qk = a[q * n + k];
          a[p * n + k] = c * pk - s * qk, a[q * n + k] = s * pk + c * qk;
        }
      }
  }
  for (int i = 0; i < n; i++) ev[i] = a[i * n + i];
}

/* Singular values of X [rows × cols] (the eigenvalues of the small Gram matrix), ascending. */
static void singular_values(const float *X, int rows, int cols, double *sv) {
  int tall = rows > cols, k = tall ? cols : rows;
  double *M = calloc((size_t)k * k, sizeof *M), tr = 0, fro = 0;
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++) {
      double acc = 0;
      if (tall)
        for (int r = 0; r < rows; r++) acc += (double)X[r * cols + i] * X[r * cols + j];
      else
        for (int c = 0; c < cols; c++) acc += (double)X[i * cols + c] * X[j * cols + c];
      M[i * k + j] = acc;
      fro += acc * acc;
    }
  for (int i = 0; i < k; i++) tr += M[i * k + i];
  jacobi_eigen(M, k, sv);
  double tr2 = 0, fro2 = 0;
  for (int i = 0; i < k; i++) tr2 += sv[i], fro2 += sv[i] * sv[i];
  cr_assert(fabs(tr2 - tr) < 1e-9 * (1 + tr) && fabs(fro2 - fro) < 1e-9 * (1 + fro),
            "the eigen solver lost the trace or the Frobenius norm");
  for (int i = 0; i < k; i++) {
    cr_assert(sv[i] > -1e-12, "negative Gram eigenvalue");
    sv[i] = sqrt(fabs(sv[i]));
  }
  for (int i = 1; i < k; i++)
    for (int j = i; j > 0 && sv[j] < sv[j - 1]; j--) {
      double t = sv[j];
      sv[j] = sv[j - 1], sv[j - 1] = t;
    }
  free(M);
}

/* ---- coefficients ---------------------------------------------------------------------------- */

Test(ns, coefficients) {
  double abc[3];
  for (int s = 0; s < 9; s++) {
    pg_ns_coeffs(PG_NS_CLASSIC, s, abc);
    cr_assert(abc[0] == 3.4445 && abc[1] == -4.7750 && abc[2] == 2.0315, "classic step %d", s);
  }
  static const double pe[5][3] = {
      {8.156554524902461, -22.48329292557795, 15.878769915207462},
      {4.042929935166739, -2.808917465908714, 0.5000178451051316},
      {3.8916678022926607, -2.772484153217685, 0.5060648178503393},
      {3.285753657755655, -2.3681294933425376, 0.46449024233003106},
      {2.3465413258596377, -1.7097828382687081, 0.42323551169305323},
  };
  for (int s = 0; s < 8; s++) {
    pg_ns_coeffs(PG_NS_POLAR_EXPRESS, s, abc);
    const double *w = pe[s < 4 ? s : 4];
    cr_assert(abc[0] == w[0] && abc[1] == w[1] && abc[2] == w[2], "Polar Express step %d", s);
  }
  /* each Polar Express tuple differs from the next (a table with a repeated row would pass the
   * loop above only if the test's table repeated it too) */
  for (int s = 0; s < 4; s++) cr_assert(pe[s][0] != pe[s + 1][0]);
}

/* ---- Newton–Schulz: hand cases --------------------------------------------------------------- */

/* G = [[0, 4, 0], [3, 0, 0]] has orthogonal rows, so A and B are diagonal and every step is the
 * scalar recurrence x ← fp32(a·x + fp32(b·fp32(x²) + c·fp32(x²)²)·x) on each non-zero entry. */
Test(ns, hand_scalar_recurrence) {
  const float G[6] = {0, 4, 0, 3, 0, 0};
  for (int kind = 0; kind < 2; kind++)
    for (int steps = 0; steps <= 2; steps++) {
      double den = sqrt(0.0 + 16.0 + 9.0) + 1e-7; /* the order of Σ does not matter here */
      float x[2] = {(float)(4.0 / den), (float)(3.0 / den)};
      for (int s = 0; s < steps; s++) {
        const double *c = t_coeffs(kind, s);
        for (int r = 0; r < 2; r++) {
          float A = (float)((double)x[r] * x[r]);
          float B = (float)(c[1] * A + c[2] * ((double)A * A));
          x[r] = (float)(c[0] * x[r] + (double)B * x[r]);
        }
      }
      float *out = lib_ns(G, 2, 3, kind, steps, 1);
      const float want[6] = {0, x[0], 0, x[1], 0, 0};
      for (int i = 0; i < 6; i++)
        cr_assert_eq(out[i], want[i], "kind %d, %d steps, element %d: %.9g vs %.9g", kind, steps,
                     i, out[i], want[i]);
      if (steps == 2 && kind == PG_NS_CLASSIC) /* 0.8 → 1.0189 → 0.7986… (the quintic's wobble) */
        cr_assert(fabsf(x[0] - 0.8f) > 0.01f);
      free(out);
    }
}

/* A dense 2×3 case written out element by element (one and two steps, both kinds). */
Test(ns, hand_dense_2x3) {
  const float G[6] = {0.5f, -1.25f, 2.0f, 1.5f, 0.75f, -0.25f};
  for (int kind = 0; kind < 2; kind++)
    for (int steps = 1; steps <= 2; steps++) {
      double ss = 0;
      for (int k = 0; k < 6; k++) ss += (double)G[k] * G[k];
      double den = sqrt(ss) + 1e-7;
      float x00 = (float)(G[0] / den), x01 = (float)(G[1] / den), x02 = (float)(G[2] / den);
      float x10 = (float)(G[3] / den), x11 = (float)(G[4] / den), x12 = (float)(G[5] / den);
      for (int s = 0; s < steps; s++) {
        const double *c = t_coeffs(kind, s);
        double a = c[0], b = c[1], cc = c[2];
        float a00 = (float)((double)x00 * x00 + (double)x01 * x01 + (double)x02 * x02);
        float a01 = (float)((double)x00 * x10 + (double)x01 * x11 + (double)x02 * x12);
        float a11 = (float)((double)x10 * x10 + (double)x11 * x11 + (double)x12 * x12);
        float b00 = (float)(b * a00 + cc * ((double)a00 * a00 + (double)a01 * a01));
        float b01 = (float)(b * a01 + cc * ((double)a00 * a01 + (double)a01 * a11));
        float b11 = (float)(b * a11 + cc * ((double)a01 * a01 + (double)a11 * a11));
        float y00 = (float)(a * x00 + ((double)b00 * x00 + (double)b01 * x10));
        float y01 = (float)(a * x01 + ((double)b00 * x01 + (double)b01 * x11));
        float y02 = (float)(a * x02 + ((double)b00 * x02 + (double)b01 * x12));
        float y10 = (float)(a * x10 + ((double)b01 * x00 + (double)b11 * x10));
        float y11 = (float)(a * x11 + ((double)b01 * x01 + (double)b11 * x11));
        float y12 = (float)(a * x12 + ((double)b01 * x02 + (double)b11 * x12));
        x00 = y00, x01 = y01, x02 = y02, x10 = y10, x11 = y11, x12 = y12;
      }
      const float want[6] = {x00, x01, x02, x10, x11, x12};
      float *out = lib_ns(G, 2, 3, kind, steps, 1);
      assert_same_bits(out, want, 6, "2x3");
      /* and its transpose, as 3×2 */
      const float Gt[6] = {G[0], G[3], G[1], G[4], G[2], G[5]};
      float *ot = lib_ns(Gt, 3, 2, kind, steps, 2);
      const float wt[6] = {x00, x10, x01, x11, x02, x12};
      assert_same_bits(ot, wt, 6, "3x2");
      free(out), free(ot);
    }
}

/* ---- Newton–Schulz: random matrices ---------------------------------------------------------- */

Test(ns, matches_plain_loops_and_threads) {
  /* shapes: tiny, panel remainders, reduction > 256 (the kernel's K block), columns > 256 (its
   * column block), square */
  static const int shapes[][2] = {{1, 1}, {1, 7}, {7, 1}, {8, 5}, {5, 8}, {13, 37}, {37, 13},
                                  {70, 300}, {300, 70}, {33, 33}, {9, 520}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int r = shapes[s][0], c = shapes[s][1];
    float *G = fmalloc((size_t)r * c), *want = fmalloc((size_t)r * c);
    fill_gauss(G, (size_t)r * c, 100 + s, 0.02);
    for (int kind = 0; kind < 2; kind++) {
      ref_ns(G, r, c, kind, 5, want);
      for (int th = 1; th <= 5; th += (th == 1 ? 1 : 2)) { /* 1, 2, 3, 5 */
        float *out = lib_ns(G, r, c, kind, 5, th);
        char what[64];
        snprintf(what, sizeof what, "%dx%d kind %d threads %d", r, c, kind, th);
        assert_same_bits(out, want, (size_t)r * c, what);
        free(out);
      }
    }
    free(G), free(want);
  }
}

/* The bf16 iteration (pg_ops_optim.h, spec/train.md §2.2) in plain loops: full products, fp64
 * sums in ascending order, bf16(v) = pg_bf16_round(fp32(v)) at each of the documented points. */
static double rb(double v) { return (double)pg_bf16_round((float)v); }

static void ref_ns_bf16(const float *G, int rows, int cols, int kind, int steps, float *out) {
  int tr = rows > cols, m = tr ? cols : rows, n = tr ? rows : cols;
  double *X = calloc((size_t)m * n, sizeof *X), *P = calloc((size_t)m * n, sizeof *P);
  double *A = calloc((size_t)m * m, sizeof *A), *B = calloc((size_t)m * m, sizeof *B);
  cr_assert(X && P && A && B);
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++) X[i * n + j] = rb(tr ? G[j * cols + i] : G[i * cols + j]);
  double ss = 0;
  for (int k = 0; k < m * n; k++) ss += X[k] * X[k];
  double den = rb(rb(sqrt(ss)) + 1e-7);
  for (int k = 0; k < m * n; k++) X[k] = rb(X[k] / den);
  for (int s = 0; s < steps; s++) {
    const double *c = t_coeffs(kind, s);
    for (int i = 0; i < m; i++)
      for (int j = 0; j < m; j++) {
        double acc = 0;
        for (int k = 0; k < n; k++) acc += X[i * n + k] * X[j * n + k];
        A[i * m + j] = rb(acc);
      }
    for (int i = 0; i < m; i++)
      for (int j = 0; j < m; j++) {
        double acc = 0;
        for (int k = 0; k < m; k++) acc += A[i * m + k] * A[k * m + j];
        B[i * m + j] = rb(rb(c[1] * A[i * m + j]) + rb(c[2] * rb(acc)));
      }
    for (int i = 0; i < m; i++)
      for (int j = 0; j < n; j++) {
        double acc = 0;
        for (int k = 0; k < m; k++) acc += B[i * m + k] * X[k * n + j];
        P[i * n + j] = rb(rb(c[0] * X[i * n + j]) + rb(acc));
      }
    memcpy(X, P, sizeof(double) * (size_t)m * n);
  }
  for (int i = 0; i < m; i++)
    for (int j = 0; j < n; j++)
      *(tr ? &out[j * cols + i] : &out[i * cols + j]) = (float)X[i * n + j];
  free(X), free(P), free(A), free(B);
}

Test(ns_bf16, matches_plain_loops_and_threads) {
  static const int shapes[][2] = {{1, 7}, {7, 1}, {13, 37}, {37, 13}, {70, 300}, {300, 70},
                                  {33, 33}, {9, 520}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int r = shapes[s][0], c = shapes[s][1];
    float *G = fmalloc((size_t)r * c), *want = fmalloc((size_t)r * c);
    fill_gauss(G, (size_t)r * c, 300 + s, 0.02);
    for (int kind = 0; kind < 2; kind++) {
      ref_ns_bf16(G, r, c, kind, 5, want);
      float *exact = lib_ns(G, r, c, kind, 5, 1);
      size_t differ = 0;
      for (size_t k = 0; k < (size_t)r * c; k++) {
        cr_assert_eq((double)want[k], rb(want[k]), "not a bf16 value");
        differ += memcmp(&exact[k], &want[k], sizeof(float)) != 0;
      }
      /* the flag changes the result (a matrix of one row or column converges either way) */
      if (r > 1 && c > 1) cr_assert_gt(differ, (size_t)r * c / 4, "%dx%d: fp32 NS = bf16 NS", r, c);
      free(exact);
      for (int th = 1; th <= 3; th++) {
        float *out = lib_ns(G, r, c, kind | PG_NS_BF16, 5, th);
        char what[64];
        snprintf(what, sizeof what, "bf16 %dx%d kind %d threads %d", r, c, kind, th);
        assert_same_bits(out, want, (size_t)r * c, what);
        free(out);
      }
    }
    free(G), free(want);
  }
}

Test(ns, transpose_is_bit_exact) {
  static const int shapes[][2] = {{8, 5}, {5, 8}, {300, 70}, {3, 100}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    int r = shapes[s][0], c = shapes[s][1];
    float *G = fmalloc((size_t)r * c), *Gt = fmalloc((size_t)r * c);
    fill_gauss(G, (size_t)r * c, 7 + s, 1.0);
    for (int i = 0; i < r; i++)
      for (int j = 0; j < c; j++) Gt[j * r + i] = G[i * c + j];
    for (int kind = 0; kind < 2; kind++) {
      float *a = lib_ns(G, r, c, kind, 5, 2), *b = lib_ns(Gt, c, r, kind, 5, 3);
      float *bt = fmalloc((size_t)r * c);
      for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) bt[i * c + j] = b[j * r + i];
      assert_same_bits(a, bt, (size_t)r * c, "NS(Gᵀ)ᵀ vs NS(G)");
      free(a), free(b), free(bt);
    }
    free(G), free(Gt);
  }
}

Test(ns, in_place) {
  float *G = fmalloc(40);
  fill_gauss(G, 40, 5, 1.0);
  float *want = lib_ns(G, 8, 5, PG_NS_CLASSIC, 5, 1);
  float *scr = fmalloc(pg_ns_scratch_floats(8, 5));
  pg_newton_schulz(G, 8, 5, PG_NS_CLASSIC, 5, G, scr, 2);
  assert_same_bits(G, want, 40, "out = G");
  free(G), free(want), free(scr);
}

/* NS is an odd matrix polynomial, so each singular value σ of G maps to φ(σ / ‖G‖_F), φ the
 * composition of the steps' scalar quintics x ↦ a·x + b·x³ + c·x⁵. Over σ/‖G‖_F ≥ 0.01, the
 * classic φ (5 steps) stays in [0.682, 1.135] (it does not converge to 1: Jordan's "something like
 * Uniform(0.5, 1.5)"), while the Polar Express φ equioscillates in [0.859, 1.141] (scanned on a
 * fine grid in fp64 while writing this test). The bands checked are those with a margin; the
 * sorted σ are also compared with φ of the input's σ (fp32 rounding only). */
static double t_phi(double x, int kind) {
  for (int s = 0; s < 5; s++) {
    const double *c = t_coeffs(kind, s);
    x = c[0] * x + c[1] * x * x * x + c[2] * x * x * x * x * x;
  }
  return x;
}

static void sort5(double *v) {
  for (int i = 1; i < 5; i++)
    for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
      double t = v[j];
      v[j] = v[j - 1], v[j - 1] = t;
    }
}

Test(ns, singular_values) {
  static const int shapes[][2] = {{8, 5}, {5, 8}};
  double lo[2] = {1, 1}, hi[2] = {0, 0};
  for (size_t s = 0; s < 2; s++)
    for (uint64_t seed = 1; seed <= 4; seed++) {
      int r = shapes[s][0], c = shapes[s][1];
      float G[40];
      fill_gauss(G, 40, seed * 31 + s, 1.0);
      double fro = 0, sg[5], sv[5], pred[5];
      for (int i = 0; i < 40; i++) fro += (double)G[i] * G[i];
      fro = sqrt(fro);
      singular_values(G, r, c, sg);
      cr_assert(sg[0] / fro > 0.01, "input σ_min/‖G‖ %g: outside the analysed range", sg[0] / fro);
      for (int kind = 0; kind < 2; kind++) {
        float *x = lib_ns(G, r, c, kind, 5, 1);
        singular_values(x, r, c, sv);
        for (int i = 0; i < 5; i++) pred[i] = t_phi(sg[i] / fro, kind);
        sort5(pred);
        for (int i = 0; i < 5; i++) {
          cr_assert(fabs(sv[i] - pred[i]) < 1e-4, "%dx%d seed %d kind %d: σ %g, φ predicts %g", r,
                    c, (int)seed, kind, sv[i], pred[i]);
          lo[kind] = fmin(lo[kind], sv[i]), hi[kind] = fmax(hi[kind], sv[i]);
        }
        free(x);
      }
    }
  cr_assert(lo[0] >= 0.6 && hi[0] <= 1.3, "classic σ in [%g, %g]", lo[0], hi[0]);
  cr_assert(lo[1] >= 0.85 && hi[1] <= 1.15, "Polar Express σ in [%g, %g]", lo[1], hi[1]);
  cr_log_info("σ after 5 steps: classic [%.4f, %.4f], Polar Express [%.4f, %.4f]", lo[0], hi[0],
              lo[1], hi[1]);
}

/* ---- Muon ------------------------------------------------------------------------------------ */

static pg_muon_opts opts(int nesterov, int rn, int kind) {
  pg_muon_opts o = {.lr = 123.0, /* must not be read by pg_muon_step */
                    .momentum = 0.95, .momentum_start = 0.85, .momentum_warmup = 10,
                    .nesterov = nesterov, .row_normalize = rn, .ns_kind = kind, .ns_steps = 5};
  return o;
}

/* One Muon step of the library on copies; returns p after the step (buf updated in place). */
static void lib_step(float *p, const float *g, float *buf, int r, int c, const pg_muon_opts *o,
                     double lr, double mu, int th) {
  size_t ns = pg_muon_scratch_floats(r, c);
  float *scr = fmalloc(ns);
  memset(scr, 0x5A, ns * sizeof *scr);
  pg_muon_step(p, g, buf, r, c, o, lr, mu, scr, th);
  free(scr);
}

Test(muon, hand_2x2) {
  const float g[4] = {0.3f, -0.1f, 0.2f, 0.4f};
  float p[4] = {1.0f, -0.5f, 0.25f, 2.0f}, buf[4] = {0};
  const float p0[4] = {1.0f, -0.5f, 0.25f, 2.0f};
  pg_muon_opts o = opts(1, 0, PG_NS_CLASSIC);
  o.weight_decay = 0.1;
  const double lr = 0.02, mu = 0.9;
  lib_step(p, g, buf, 2, 2, &o, lr, mu, 1);
  float u[4], X[4];
  for (int i = 0; i < 4; i++) {
    float b = (float)(mu * 0.0 + g[i]);
    cr_assert_eq(buf[i], b);
    u[i] = (float)(g[i] + mu * b); /* 1.9·g */
  }
  ref_ns(u, 2, 2, PG_NS_CLASSIC, 5, X);
  for (int i = 0; i < 4; i++) {
    float want = (float)(p0[i] * (1 - lr * 0.1) - lr * (1.0 * X[i]));
    cr_assert_eq(p[i], want, "element %d: %.9g vs %.9g", i, p[i], want);
  }
  /* 5 classic steps leave X near orthogonal: XᵀX ≈ I within the quintic's band */
  double n0 = (double)X[0] * X[0] + (double)X[2] * X[2];
  cr_assert(n0 > 0.36 && n0 < 1.69);
}

Test(muon, weight_decay_before_update_with_scheduled_lr) {
  float g[6], p[6], buf[6] = {0};
  fill_gauss(g, 6, 3, 1.0);
  fill_gauss(p, 6, 4, 1.0);
  float p0[6];
  memcpy(p0, p, sizeof p);
  pg_muon_opts o = opts(1, 0, PG_NS_POLAR_EXPRESS);
  o.weight_decay = 0.4;
  const double lr = 0.5, mu = 0.0; /* μ 0: u = g */
  lib_step(p, g, buf, 2, 3, &o, lr, mu, 2);
  float X[6];
  ref_ns(g, 2, 3, PG_NS_POLAR_EXPRESS, 5, X);
  int differs_from_after = 0;
  for (int i = 0; i < 6; i++) {
    float before = (float)(p0[i] * (1 - lr * 0.4) - lr * X[i]);
    float after = (float)((p0[i] - lr * X[i]) * (1 - lr * 0.4)); /* the wrong order */
    float base = (float)(p0[i] * (1 - 123.0 * 0.4) - lr * X[i]); /* decay with the base lr */
    cr_assert_eq(p[i], before, "element %d", i);
    cr_assert_neq(p[i], base);
    differs_from_after |= p[i] != after;
  }
  cr_assert(differs_from_after, "the test cannot tell the two orders apart");
}

Test(muon, shape_scale) {
  /* 4×2: ×sqrt(2); 2×4: ×1; 2×2: ×1 (p starts at 0, no decay: p = −lr·s·X) */
  static const int shapes[][2] = {{4, 2}, {2, 4}, {2, 2}, {8, 2}};
  static const double scale[] = {1.4142135623730951, 1.0, 1.0, 2.0};
  for (int s = 0; s < 4; s++) {
    int r = shapes[s][0], c = shapes[s][1];
    float g[16], p[16] = {0}, buf[16] = {0}, X[16];
    fill_gauss(g, 16, 9 + s, 1.0);
    pg_muon_opts o = opts(0, 0, PG_NS_CLASSIC);
    lib_step(p, g, buf, r, c, &o, 0.25, 0.0, 1);
    ref_ns(g, r, c, PG_NS_CLASSIC, 5, X);
    for (int i = 0; i < r * c; i++) {
      cr_assert_eq(p[i], (float)(0.0 * 1.0 - 0.25 * (scale[s] * X[i])), "%dx%d element %d", r,
                   c, i);
      cr_assert(fabs(p[i] / (-0.25 * X[i]) - scale[s]) < 1e-6, "%dx%d: ratio", r, c);
    }
  }
}

Test(muon, nesterov_and_plain_two_steps) {
  const int r = 3, c = 4;
  float g1[12], g2[12];
  fill_gauss(g1, 12, 21, 1.0);
  fill_gauss(g2, 12, 22, 1.0);
  const double mu1 = 0.85, mu2 = 0.86;
  for (int nest = 0; nest < 2; nest++) {
    float p[12] = {0}, buf[12] = {0};
    pg_muon_opts o = opts(nest, 0, PG_NS_CLASSIC);
    lib_step(p, g1, buf, r, c, &o, 1.0, mu1, 2);
    float b1[12], u[12], X[12], p1[12];
    for (int i = 0; i < 12; i++) {
      b1[i] = g1[i]; /* μ·0 + g */
      u[i] = nest ? (float)(g1[i] + mu1 * b1[i]) : b1[i];
    }
    ref_ns(u, r, c, PG_NS_CLASSIC, 5, X);
    for (int i = 0; i < 12; i++) {
      p1[i] = (float)(0.0 - 1.0 * X[i]);
      cr_assert_eq(buf[i], b1[i]);
      cr_assert_eq(p[i], p1[i], "nesterov %d step 1 element %d", nest, i);
    }
    lib_step(p, g2, buf, r, c, &o, 1.0, mu2, 3);
    for (int i = 0; i < 12; i++) {
      float b2 = (float)(mu2 * b1[i] + g2[i]);
      cr_assert_eq(buf[i], b2, "nesterov %d: buffer after two steps, element %d", nest, i);
      u[i] = nest ? (float)(g2[i] + mu2 * b2) : b2;
    }
    ref_ns(u, r, c, PG_NS_CLASSIC, 5, X);
    for (int i = 0; i < 12; i++)
      cr_assert_eq(p[i], (float)(p1[i] - 1.0 * X[i]), "nesterov %d step 2 element %d", nest, i);
  }
}

Test(muon, row_normalize) {
  const int r = 4, c = 6;
  float g[24], gs[24], gn[24];
  fill_gauss(g, 24, 77, 1.0);
  /* rows of very different sizes (powers of two, so a row's scaling is exact) */
  static const float rs[4] = {1.0f, 64.0f, 1.0f / 32, 4.0f};
  for (int i = 0; i < r; i++)
    for (int j = 0; j < c; j++) gs[i * c + j] = g[i * c + j] * rs[i];
  /* the NS input, normalized here: each row over its fp64 norm */
  for (int i = 0; i < r; i++) {
    double ss = 0;
    for (int j = 0; j < c; j++) ss += (double)g[i * c + j] * g[i * c + j];
    for (int j = 0; j < c; j++) gn[i * c + j] = (float)(g[i * c + j] / sqrt(ss));
    double ssn = 0;
    for (int j = 0; j < c; j++) ssn += (double)gn[i * c + j] * gn[i * c + j];
    cr_assert(fabs(ssn - 1) < 1e-6, "row %d of the expected input is not unit", i);
  }
  pg_muon_opts rn = opts(0, 1, PG_NS_CLASSIC), plain = opts(0, 0, PG_NS_CLASSIC);
  float pa[24] = {0}, pb[24] = {0}, pc[24] = {0}, pd[24] = {0};
  float ba[24] = {0}, bb[24] = {0}, bc[24] = {0}, bd[24] = {0};
  lib_step(pa, gs, ba, r, c, &rn, 1.0, 0.0, 1);    /* row-normalized scaled rows */
  lib_step(pb, g, bb, r, c, &rn, 1.0, 0.0, 2);     /* row-normalized rows */
  lib_step(pc, gn, bc, r, c, &plain, 1.0, 0.0, 1); /* unit rows given directly */
  lib_step(pd, gs, bd, r, c, &plain, 1.0, 0.0, 1); /* scaled rows, not normalized */
  assert_same_bits(pa, pb, 24, "row scaling must not matter");
  assert_same_bits(pa, pc, 24, "row normalization = NS of unit rows");
  int differ = 0;
  for (int i = 0; i < 24; i++) differ |= pa[i] != pd[i];
  cr_assert(differ, "without row normalization the scaled rows must give another update");
  /* a zero row stays zero (divided by the 1e-7 floor, not by 0) */
  float z[24] = {0}, pz[24] = {0}, bz[24] = {0};
  memcpy(z, g, sizeof z);
  for (int j = 0; j < c; j++) z[c + j] = 0;
  lib_step(pz, z, bz, r, c, &rn, 1.0, 0.0, 1);
  for (int i = 0; i < 24; i++) cr_assert(isfinite(pz[i]));
}

Test(muon, threads_bit_identical) {
  const int r = 96, c = 40;
  float *g = fmalloc(r * c), *p0 = fmalloc(r * c);
  fill_gauss(g, r * c, 5, 0.01);
  fill_gauss(p0, r * c, 6, 0.1);
  float *ref = NULL, *refb = NULL;
  for (int th = 1; th <= 3; th++) {
    float *p = fmalloc(r * c), *buf = fmalloc(r * c);
    memcpy(p, p0, sizeof(float) * r * c);
    fill_gauss(buf, r * c, 8, 0.01);
    pg_muon_opts o = opts(1, 1, PG_NS_POLAR_EXPRESS);
    o.weight_decay = 0.095;
    lib_step(p, g, buf, r, c, &o, 0.026, 0.97, th);
    if (!ref) {
      ref = p, refb = buf;
    } else {
      assert_same_bits(p, ref, (size_t)r * c, "p");
      assert_same_bits(buf, refb, (size_t)r * c, "buf");
      free(p), free(buf);
    }
  }
  free(ref), free(refb), free(g), free(p0);
}

/* ---- schedules ------------------------------------------------------------------------------- */

Test(sched, momentum_warmup) {
  pg_muon_opts o = {.momentum = 0.99, .momentum_start = 0.92, .momentum_warmup = 1500};
  cr_assert_eq(pg_muon_momentum(&o, 0), 0.92);
  cr_assert(fabs(pg_muon_momentum(&o, 750) - 0.955) < 1e-15);
  cr_assert(fabs(pg_muon_momentum(&o, 300) - (0.92 + 0.07 * 0.2)) < 1e-15);
  /* the records' form (1 − f)·start + f·end, not start + (end − start)·f: at t = 2 they differ */
  cr_assert_eq(pg_muon_momentum(&o, 2), (1 - 2 / 1500.0) * 0.92 + (2 / 1500.0) * 0.99);
  cr_assert_neq(pg_muon_momentum(&o, 2), 0.92 + (0.99 - 0.92) * (2 / 1500.0));
  cr_assert_eq(pg_muon_momentum(&o, 1500), 0.99);
  cr_assert_eq(pg_muon_momentum(&o, 1501), 0.99);
  cr_assert_eq(pg_muon_momentum(&o, 100000), 0.99);
  o.momentum_warmup = 0;
  cr_assert_eq(pg_muon_momentum(&o, 0), 0.99);
}

Test(sched, lr_mul) {
  pg_lr_sched r12 = {.warmup_steps = 0, .warmdown_frac = 0.85, .min_lr = 0.10};
  cr_assert_eq(pg_lr_mul(&r12, 0, 0.0), 1.0);
  cr_assert_eq(pg_lr_mul(&r12, 100, 0.1), 1.0, "flat before the warmdown");
  cr_assert(fabs(pg_lr_mul(&r12, 100, 0.2) - 0.8 / 0.85) < 1e-15);
  cr_assert(fabs(pg_lr_mul(&r12, 100, 0.5) - 0.5 / 0.85) < 1e-15);
  cr_assert(fabs(pg_lr_mul(&r12, 100, 0.9) - 0.1 / 0.85) < 1e-15); /* 0.1176 > the floor */
  cr_assert_eq(pg_lr_mul(&r12, 100, 0.95), 0.10, "the floor");
  cr_assert_eq(pg_lr_mul(&r12, 100, 1.0), 0.10);
  cr_assert_eq(pg_lr_mul(&r12, 100, 1.3), 0.10);
  pg_lr_sched r8 = {.warmdown_frac = 0.667, .min_lr = 0.0};
  cr_assert_eq(pg_lr_mul(&r8, 5, 0.3), 1.0);
  cr_assert(fabs(pg_lr_mul(&r8, 5, 0.5) - 0.5 / 0.667) < 1e-15);
  cr_assert_eq(pg_lr_mul(&r8, 5, 1.0), 0.0);
  cr_assert_eq(pg_lr_mul(&r8, 5, 1.2), 0.0, "past the end: 0, not negative");
  pg_lr_sched none = {0};
  cr_assert_eq(pg_lr_mul(&none, 7, 0.99), 1.0, "no warmdown");
  pg_lr_sched wu = {.warmup_steps = 10, .warmdown_frac = 0.5, .min_lr = 0.0};
  cr_assert_eq(pg_lr_mul(&wu, 0, 0.0), 0.1);
  cr_assert_eq(pg_lr_mul(&wu, 4, 0.0), 0.5);
  cr_assert_eq(pg_lr_mul(&wu, 9, 0.0), 1.0);
  cr_assert_eq(pg_lr_mul(&wu, 10, 0.0), 1.0);
  cr_assert(fabs(pg_lr_mul(&wu, 4, 0.75) - 0.5 * 0.5) < 1e-15, "warm-up × warmdown");
}

/* ---- weight averaging ------------------------------------------------------------------------ */

Test(avg, ema_closed_form) {
  /* d = 1/2 from 0 towards 1: 1 − 2^−k, exact at every step */
  float e = 0.0f, one = 1.0f;
  for (int k = 1; k <= 20; k++) {
    pg_ema_update(&e, &one, 1, 0.5);
    cr_assert_eq(e, (float)(1.0 - ldexp(1.0, -k)), "step %d", k);
  }
  /* the records' decay: e_k = d^k·e_0 + (1 − d^k)·p for a constant p */
  float e2[3] = {2.0f, -1.0f, 0.0f};
  const float p[3] = {0.5f, 0.5f, -3.0f};
  const double d = 0.9965;
  for (int k = 1; k <= 200; k++) pg_ema_update(e2, p, 3, d);
  const double e0[3] = {2.0, -1.0, 0.0};
  for (int i = 0; i < 3; i++) {
    double want = pow(d, 200) * e0[i] + (1 - pow(d, 200)) * p[i];
    /* each step rounds once (≤ 2^−24 relative, values ≤ 3 in size); the errors only decay */
    cr_assert(fabs(e2[i] - want) < 200 * ldexp(3.0, -24), "element %d: %.9g vs %.9g", i, e2[i],
              want);
  }
  /* one step, one rounding: for these two values rounding either product to fp32 first would
   * give another result (found by a search over random pairs) */
  const float a0 = 0x1.242a7cp-1f, b = -0x1.c4b652p-1f;
  const double want = 0.997 * (double)a0 + (1 - 0.997) * (double)b;
  cr_assert_neq((float)((float)(0.997 * (double)a0) + (1 - 0.997) * (double)b), (float)want);
  cr_assert_neq((float)(0.997 * (double)a0 + (float)((1 - 0.997) * (double)b)), (float)want);
  float a = a0;
  pg_ema_update(&a, &b, 1, 0.997);
  cr_assert_eq(a, (float)want);
}

Test(avg, swa_mean) {
  double sum[3] = {0};
  const float x1[3] = {1, 0.1f, -2}, x2[3] = {2, 0.2f, 5}, x3[3] = {4, 0.3f, 0};
  pg_swa_add(sum, x1, 3);
  pg_swa_add(sum, x2, 3);
  pg_swa_add(sum, x3, 3);
  float out[3] = {9, 9, 9};
  pg_swa_average(sum, 3, out, 3);
  cr_assert_eq(out[0], (float)(7.0 / 3.0));
  cr_assert_eq(out[1], (float)(((double)0.1f + (double)0.2f + (double)0.3f) / 3.0));
  cr_assert_eq(out[2], 1.0f);
  float keep[1] = {5};
  pg_swa_average(sum, 0, keep, 1);
  cr_assert_eq(keep[0], 5.0f, "count 0 leaves out alone");
}

/* ---- pg_optim checkpoint accessors ----------------------------------------------------------- */

static void restore_roundtrip(const pg_optim_cfg *cfg) {
  enum { N = 5 };
  pg_err err;
  pg_optim *a, *b, *c;
  cr_assert_eq(pg_optim_create(&a, cfg, N, &err), PG_OK);
  cr_assert_eq(pg_optim_create(&b, cfg, N, &err), PG_OK);
  cr_assert_eq(pg_optim_create(&c, cfg, N, &err), PG_OK);
  cr_assert_eq(pg_optim_state_size(a), N);
  int nbuf = cfg->kind == PG_OPTIM_ADAMW ? 2 : 1;
  cr_assert_not_null(pg_optim_state(a, 0));
  cr_assert((pg_optim_state(a, 1) != NULL) == (nbuf == 2));
  cr_assert_null(pg_optim_state(a, 2));
  cr_assert_null(pg_optim_state(a, -1));
  float pa[N], g[N];
  fill_gauss(pa, N, 1, 1.0);
  pg_optim_span sa = {.p = pa, .g = g, .n = N};
  for (int t = 0; t < 3; t++) {
    fill_gauss(g, N, 10 + t, 1.0);
    pg_optim_step(a, &sa, 1, 1e-2);
  }
  /* checkpoint: copy out, restore into fresh b (and c without the step count) */
  float save[2][N], pb[N], pc[N];
  for (int w = 0; w < nbuf; w++) memcpy(save[w], pg_optim_state(a, w), sizeof save[w]);
  uint64_t steps = pg_optim_steps(a);
  cr_assert_eq(steps, 3);
  memcpy(pb, pa, sizeof pb);
  memcpy(pc, pa, sizeof pc);
  for (int w = 0; w < nbuf; w++) {
    memcpy(pg_optim_state(b, w), save[w], sizeof save[w]);
    memcpy(pg_optim_state(c, w), save[w], sizeof save[w]);
  }
  pg_optim_set_steps(b, steps);
  pg_optim_span sb = {.p = pb, .g = g, .n = N}, sc = {.p = pc, .g = g, .n = N};
  for (int t = 3; t < 5; t++) {
    fill_gauss(g, N, 10 + t, 1.0);
    pg_optim_step(a, &sa, 1, 1e-2);
    pg_optim_step(b, &sb, 1, 1e-2);
    pg_optim_step(c, &sc, 1, 1e-2);
  }
  assert_same_bits(pa, pb, N, "restored optimizer");
  for (int w = 0; w < nbuf; w++)
    assert_same_bits(pg_optim_state(a, w), pg_optim_state(b, w), N, "restored state");
  cr_assert_eq(pg_optim_steps(b), 5);
  int differ = 0;
  for (int i = 0; i < N; i++) differ |= pa[i] != pc[i];
  cr_assert(differ, "without the step count the restore must differ (the test can fail)");
  pg_optim_free(a), pg_optim_free(b), pg_optim_free(c);
}

Test(optim_state, adamw_restore) {
  pg_optim_cfg c = {.kind = PG_OPTIM_ADAMW, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8,
                    .weight_decay = 0.085};
  restore_roundtrip(&c);
}

Test(optim_state, sgd_restore) {
  pg_optim_cfg c = {.kind = PG_OPTIM_SGD, .momentum = 0.9};
  restore_roundtrip(&c);
}
