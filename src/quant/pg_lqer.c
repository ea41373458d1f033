/* pg_lqer.c: a top-r SVD by subspace iteration on the Gram matrix of the smaller side, and LQER's
 * asymmetric int2/int4 packing of the rank-r factors of a quantization error (see pg_lqer.h and
 * spec/records.md §5.7).
 *
 * Determinism: every parallel loop writes disjoint outputs and sums each output in an order fixed
 * by the sizes alone (fixed-width chunks, fixed lanes), so any thread count gives the same bits. */
#include "pg_lqer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_rng.h"
#include "pg_threads.h"

#define SVD_OVERSAMPLE 8u    /* block width k = rank + this, capped at the small dimension */
#define SVD_MAX_ITERS 300    /* subspace iterations at most */
#define SVD_RTOL 1e-12       /* Ritz values: relative change that counts as converged */
#define SVD_SEED 0x4c514552c0ffee01ull
#define SVD_JACOBI_SWEEPS 100
#define GRAM_TILE 32u        /* Gram entries are computed in tiles of GRAM_TILE × GRAM_TILE */
#define GRAM_CHUNK 256u      /* ... over the long side in chunks of this many values */
#define TRANSPOSE_BLOCK 64u

/* ---- small helpers ------------------------------------------------------------------------- */

/* a*b into *out; 1 on overflow of size_t. */
static int mul_ovf(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return 1;
  *out = a * b;
  return 0;
}

/* Σ x[i]·y[i] in fp64 with eight lanes (lane i mod 8, ascending), combined pairwise: the order
 * depends only on n. */
static double dot8(const double *x, const double *y, size_t n) {
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t l = 0; l < 8; l++) s[l] += x[i + l] * y[i + l];
  for (size_t l = 0; i < n; i++, l++) s[l] += x[i] * y[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* ---- D: E widened to fp64 with the small side as rows ----------------------------------- */

/* D [n × m], n = min(rows, cols): D = Eᵀ when cols <= rows (tall), D = E otherwise. */
typedef struct {
  const float *E;
  size_t rows, cols, n, m;
  int tall;
  double *D;
} widen_ctx;

static void widen_body(void *vc, size_t begin, size_t end) {
  const widen_ctx *c = vc;
  if (!c->tall) { /* one row of E per index */
    for (size_t a = begin; a < end; a++) {
      const float *e = c->E + a * c->cols;
      double *d = c->D + a * c->m;
      for (size_t p = 0; p < c->m; p++) d[p] = (double)e[p];
    }
    return;
  }
  /* tall: one block of TRANSPOSE_BLOCK rows of E per index, transposed in square blocks */
  for (size_t blk = begin; blk < end; blk++) {
    const size_t p0 = blk * TRANSPOSE_BLOCK;
    const size_t p1 = p0 + TRANSPOSE_BLOCK < c->m ? p0 + TRANSPOSE_BLOCK : c->m;
    for (size_t a0 = 0; a0 < c->n; a0 += TRANSPOSE_BLOCK) {
      const size_t a1 = a0 + TRANSPOSE_BLOCK < c->n ? a0 + TRANSPOSE_BLOCK : c->n;
      for (size_t p = p0; p < p1; p++) {
        const float *e = c->E + p * c->cols;
        for (size_t a = a0; a < a1; a++) c->D[a * c->m + p] = (double)e[a];
      }
    }
  }
}

/* ---- G = D Dᵀ [n × n] -------------------------------------------------------------------- */

typedef struct {
  const double *D;
  size_t n, m;
  const uint32_t *tiles; /* pairs (ta, tb), ta <= tb */
  double *G;
} gram_ctx;

static void gram_body(void *vc, size_t begin, size_t end) {
  const gram_ctx *c = vc;
  double acc[GRAM_TILE * GRAM_TILE];
  for (size_t t = begin; t < end; t++) {
    const size_t a0 = (size_t)c->tiles[2 * t] * GRAM_TILE;
    const size_t b0 = (size_t)c->tiles[2 * t + 1] * GRAM_TILE;
    const size_t a1 = a0 + GRAM_TILE < c->n ? a0 + GRAM_TILE : c->n;
    const size_t b1 = b0 + GRAM_TILE < c->n ? b0 + GRAM_TILE : c->n;
    memset(acc, 0, sizeof acc);
    for (size_t p0 = 0; p0 < c->m; p0 += GRAM_CHUNK) {
      const size_t len = p0 + GRAM_CHUNK < c->m ? GRAM_CHUNK : c->m - p0;
      for (size_t a = a0; a < a1; a++) {
        const double *da = c->D + a * c->m + p0;
        for (size_t b = (b0 > a ? b0 : a); b < b1; b++)
          acc[(a - a0) * GRAM_TILE + (b - b0)] += dot8(da, c->D + b * c->m + p0, len);
      }
    }
    for (size_t a = a0; a < a1; a++)
      for (size_t b = (b0 > a ? b0 : a); b < b1; b++) {
        const double v = acc[(a - a0) * GRAM_TILE + (b - b0)];
        c->G[a * c->n + b] = v;
        c->G[b * c->n + a] = v;
      }
  }
}

/* ---- Z = G X (vectors stored contiguously: X [k × n]) ------------------------------------ */

typedef struct {
  const double *G, *X;
  size_t n, k;
  double *Z;
} gx_ctx;

static void gx_body(void *vc, size_t begin, size_t end) {
  const gx_ctx *c = vc;
  for (size_t a = begin; a < end; a++) {
    const double *g = c->G + a * c->n;
    for (size_t j = 0; j < c->k; j++) c->Z[j * c->n + a] = dot8(g, c->X + j * c->n, c->n);
  }
}

/* ---- Y = W D  (Y [r × m], W [r × n]): the other side's unnormalized vectors --------------- */

typedef struct {
  const double *D, *W;
  size_t n, m, r;
  double *Y;
} other_ctx;

static void other_body(void *vc, size_t begin, size_t end) {
  const other_ctx *c = vc;
  for (size_t i = 0; i < c->r; i++)
    memset(c->Y + i * c->m + begin, 0, (end - begin) * sizeof(double));
  for (size_t a = 0; a < c->n; a++) { /* a ascending for every entry */
    const double *d = c->D + a * c->m;
    for (size_t i = 0; i < c->r; i++) {
      const double w = c->W[i * c->n + a];
      double *y = c->Y + i * c->m;
      for (size_t p = begin; p < end; p++) y[p] += d[p] * w;
    }
  }
}

/* ---- modified Gram–Schmidt, twice, with deterministic replacements ---------------------- */

/* Orthogonalize v [n] against Q[0..j) (orthonormal, contiguous) twice and normalize it. 0 when
 * v is (numerically) in their span or zero: the second pass must keep at least half the norm. */
static int orth_one(const double *Q, size_t j, size_t n, double *v) {
  double prev = sqrt(dot8(v, v, n));
  if (!(prev > 0.0) || !isfinite(prev)) return 0;
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < j; i++) {
      const double *q = Q + i * n;
      const double c = dot8(q, v, n);
      for (size_t t = 0; t < n; t++) v[t] -= c * q[t];
    }
    const double nrm = sqrt(dot8(v, v, n));
    if (!(nrm > 0.0) || !isfinite(nrm)) return 0;
    if (pass == 1 && !(nrm >= 0.5 * prev)) return 0;
    prev = nrm;
  }
  const double inv = 1.0 / prev;
  for (size_t t = 0; t < n; t++) v[t] *= inv;
  return 1;
}

/* Orthonormalize the k vectors Z [k × n] in place. A vector that collapses is replaced by the
 * same column of fallback (may be NULL), and if that collapses too, by the first unit vector
 * e_0, e_1, ... that survives (one always does, k <= n). */
static void orthonormalize(double *Z, const double *fallback, size_t n, size_t k) {
  for (size_t j = 0; j < k; j++) {
    double *v = Z + j * n;
    if (orth_one(Z, j, n, v)) continue;
    if (fallback) {
      memcpy(v, fallback + j * n, n * sizeof(double));
      if (orth_one(Z, j, n, v)) continue;
    }
    for (size_t e = 0; e < n; e++) {
      memset(v, 0, n * sizeof(double));
      v[e] = 1.0;
      if (orth_one(Z, j, n, v)) break;
    }
  }
}

/* ---- symmetric k×k eigenproblem: cyclic Jacobi ------------------------------------------ */

/* H [k × k] symmetric (destroyed); Q [k × k] receives the eigenvectors as columns; lam the
 * eigenvalues; order[0..k) the indices by descending eigenvalue (stable for ties). */
static void jacobi_eig(double *H, size_t k, double *Q, double *lam, size_t *order) {
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < k; j++) Q[i * k + j] = i == j ? 1.0 : 0.0;
  for (int sweep = 0; sweep < SVD_JACOBI_SWEEPS; sweep++) {
    double off = 0.0, all = 0.0;
    for (size_t i = 0; i < k; i++)
      for (size_t j = 0; j < k; j++) {
        const double h2 = H[i * k + j] * H[i * k + j];
        all += h2;
        if (i != j) off += h2;
      }
    if (!(off > 1e-32 * all)) break;
    for (size_t p = 0; p + 1 < k; p++)
      for (size_t q = p + 1; q < k; q++) {
        const double apq = H[p * k + q];
        if (apq == 0.0) continue;
        const double app = H[p * k + p], aqq = H[q * k + q];
        const double theta = (aqq - app) / (2.0 * apq);
        const double t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
        const double cs = 1.0 / sqrt(t * t + 1.0), sn = t * cs;
        for (size_t i = 0; i < k; i++) { /* columns p, q */
          const double hip = H[i * k + p], hiq = H[i * k + q];
          H[i * k + p] = cs * hip - sn * hiq;
          H[i * k + q] = sn * hip + cs * hiq;
        }
        for (size_t i = 0; i < k; i++) { /* rows p, q */
          const double hpi = H[p * k + i], hqi = H[q * k + i];
          H[p * k + i] = cs * hpi - sn * hqi;
          H[q * k + i] = sn * hpi + cs * hqi;
        }
        H[p * k + q] = 0.0;
        H[q * k + p] = 0.0;
        for (size_t i = 0; i < k; i++) {
          const double qip = Q[i * k + p], qiq = Q[i * k + q];
          Q[i * k + p] = cs * qip - sn * qiq;
          Q[i * k + q] = sn * qip + cs * qiq;
        }
      }
  }
  for (size_t i = 0; i < k; i++) {
    lam[i] = H[i * k + i];
    order[i] = i;
  }
  for (size_t i = 1; i < k; i++) { /* stable insertion sort, descending */
    const size_t o = order[i];
    size_t j = i;
    while (j > 0 && lam[order[j - 1]] < lam[o]) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = o;
  }
}

/* ---- the SVD ------------------------------------------------------------------------------ */

int pg_svd_top(const float *E, uint64_t rows, uint64_t cols, unsigned rank, int nthreads,
               double *U, double *S, double *Vt, pg_err *err) {
  if (!E || !U || !S || !Vt)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "svd: NULL argument");
  if (rows == 0 || cols == 0 || rank == 0 || rank > (rows < cols ? rows : cols))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "svd: rank %u invalid for a %llu x %llu matrix", rank,
                      (unsigned long long)rows, (unsigned long long)cols);
  if (rows > SIZE_MAX || cols > SIZE_MAX)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "svd: dimensions overflow");
  const int tall = cols <= rows;
  const size_t n = (size_t)(tall ? cols : rows), m = (size_t)(tall ? rows : cols);
  const size_t r = rank;
  const size_t k = r + SVD_OVERSAMPLE < n ? r + SVD_OVERSAMPLE : n;
  size_t nm, nn, kn, rm, kk;
  if (mul_ovf(n, m, &nm) || mul_ovf(n, n, &nn) || mul_ovf(k, n, &kn) || mul_ovf(r, m, &rm) ||
      mul_ovf(k, k, &kk) || nm > SIZE_MAX / sizeof(double) || nn > SIZE_MAX / sizeof(double) ||
      rm > SIZE_MAX / sizeof(double) || n > UINT32_MAX / 2)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "svd: a %llu x %llu matrix is too large", (unsigned long long)rows,
                      (unsigned long long)cols);
  const size_t nt = (n + GRAM_TILE - 1) / GRAM_TILE, ntiles = nt * (nt + 1) / 2;

  double *D = malloc(nm * sizeof(double));
  double *G = malloc(nn * sizeof(double));
  double *X = malloc(kn * sizeof(double));
  double *Z = malloc(kn * sizeof(double));
  double *W = malloc(r * n * sizeof(double));
  double *Y = malloc(rm * sizeof(double));
  double *H = malloc(kk * sizeof(double));
  double *Q = malloc(kk * sizeof(double));
  double *lam = malloc(k * sizeof(double));
  double *prev = malloc(k * sizeof(double));
  double *sv = malloc(r * sizeof(double));
  size_t *order = malloc(k * sizeof(size_t));
  size_t *sorder = malloc(r * sizeof(size_t));
  uint32_t *tiles = malloc(2 * ntiles * sizeof(uint32_t));
  int rc = PG_OK;
  if (!D || !G || !X || !Z || !W || !Y || !H || !Q || !lam || !prev || !sv || !order ||
      !sorder || !tiles) {
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                    "svd: out of memory for a %llu x %llu matrix", (unsigned long long)rows,
                    (unsigned long long)cols);
    goto done;
  }

  /* D, then G = D Dᵀ (= EᵀE when tall, E Eᵀ when wide) */
  widen_ctx wc = {E, (size_t)rows, (size_t)cols, n, m, tall, D};
  pg_parallel_for(tall ? (m + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK : n, widen_body, &wc,
                  nthreads);
  for (size_t ta = 0, t = 0; ta < nt; ta++)
    for (size_t tb = ta; tb < nt; tb++, t++) {
      tiles[2 * t] = (uint32_t)ta;
      tiles[2 * t + 1] = (uint32_t)tb;
    }
  gram_ctx gc = {D, n, m, tiles, G};
  pg_parallel_for(ntiles, gram_body, &gc, nthreads);
  double gmax = 0.0;
  for (size_t a = 0; a < n; a++) {
    const double g = G[a * n + a];
    if (!isfinite(g)) {
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "svd: the matrix has non-finite values");
      goto done;
    }
    if (g > gmax) gmax = g;
  }

  /* block subspace iteration from a fixed Gaussian start */
  pg_rng rng;
  pg_rng_seed(&rng, SVD_SEED);
  for (size_t i = 0; i < kn; i++) X[i] = pg_rng_gauss(&rng);
  orthonormalize(X, NULL, n, k);
  /* noise floor for Ritz values near zero: roundoff in G is about n·ε·max diag */
  const double floor_abs = 4.0 * (double)n * 2.220446049250313e-16 * gmax;
  gx_ctx xc = {G, X, n, k, Z};
  for (int it = 0;; it++) {
    pg_parallel_for(n, gx_body, &xc, nthreads); /* Z = G X */
    for (size_t i = 0; i < k; i++)
      for (size_t j = i; j < k; j++) {
        const double h = 0.5 * (dot8(X + i * n, Z + j * n, n) + dot8(X + j * n, Z + i * n, n));
        H[i * k + j] = h;
        H[j * k + i] = h;
      }
    jacobi_eig(H, k, Q, lam, order);
    int conv = it > 0;
    for (size_t i = 0; i < r && conv; i++) {
      const double th = lam[order[i]];
      if (!(fabs(th - prev[i]) <= SVD_RTOL * fabs(th) + floor_abs)) conv = 0;
    }
    if (conv || it + 1 >= SVD_MAX_ITERS) break;
    for (size_t i = 0; i < r; i++) prev[i] = lam[order[i]];
    orthonormalize(Z, X, n, k); /* X's columns replace collapsed ones */
    double *tmp = X;
    X = Z;
    Z = tmp;
    xc.X = X;
    xc.Z = Z;
  }

  /* Rayleigh–Ritz: the top r Ritz vectors W_i = Σ_j Q[j][order_i] X_j */
  for (size_t i = 0; i < r; i++) {
    double *w = W + i * n;
    memset(w, 0, n * sizeof(double));
    for (size_t j = 0; j < k; j++) {
      const double q = Q[j * k + order[i]];
      const double *x = X + j * n;
      for (size_t t = 0; t < n; t++) w[t] += q * x[t];
    }
  }
  /* the other side: Y_i = Dᵀ W_i, σ_i = ‖Y_i‖ (more accurate than sqrt(θ) for small values) */
  other_ctx oc = {D, W, n, m, r, Y};
  pg_parallel_for(m, other_body, &oc, nthreads);
  for (size_t i = 0; i < r; i++) {
    sv[i] = sqrt(dot8(Y + i * m, Y + i * m, m));
    sorder[i] = i;
  }
  for (size_t i = 1; i < r; i++) { /* stable, descending σ */
    const size_t o = sorder[i];
    size_t j = i;
    while (j > 0 && sv[sorder[j - 1]] < sv[o]) {
      sorder[j] = sorder[j - 1];
      j--;
    }
    sorder[j] = o;
  }

  /* write U [rows × r], S, Vt [r × cols] */
  for (size_t i = 0; i < r; i++) {
    const size_t o = sorder[i];
    const double s = sv[o];
    const double *w = W + o * n, *y = Y + o * m;
    S[i] = s;
    if (tall) { /* w is v (cols), y = E v (rows) */
      for (size_t c = 0; c < n; c++) Vt[i * n + c] = w[c];
      for (size_t p = 0; p < m; p++) U[p * r + i] = s > 0.0 ? y[p] / s : 0.0;
    } else { /* w is u (rows), y = Eᵀ u (cols) */
      double *v = Vt + i * m;
      if (s > 0.0) {
        for (size_t p = 0; p < n; p++) U[p * r + i] = w[p];
        for (size_t c = 0; c < m; c++) v[c] = y[c] / s;
      } else { /* σ = 0: U column 0, V row any unit vector orthogonal to the earlier rows */
        for (size_t p = 0; p < n; p++) U[p * r + i] = 0.0;
        for (size_t e = 0; e < m; e++) {
          memset(v, 0, m * sizeof(double));
          v[e] = 1.0;
          if (orth_one(Vt, i, m, v)) break;
        }
      }
    }
  }
  /* signs: each V row's largest-|.| entry (the first of ties) is positive */
  for (size_t i = 0; i < r; i++) {
    double *v = Vt + i * (size_t)cols;
    size_t best = 0;
    for (size_t c = 1; c < (size_t)cols; c++)
      if (fabs(v[c]) > fabs(v[best])) best = c;
    if (v[best] < 0.0) {
      for (size_t c = 0; c < (size_t)cols; c++) v[c] = -v[c];
      for (size_t p = 0; p < (size_t)rows; p++) U[p * r + i] = -U[p * r + i];
    }
  }

done:
  free(D);
  free(G);
  free(X);
  free(Z);
  free(W);
  free(Y);
  free(H);
  free(Q);
  free(lam);
  free(prev);
  free(sv);
  free(order);
  free(sorder);
  free(tiles);
  return rc;
}

/* ---- LQER packing ------------------------------------------------------------------------ */

/* clamp(rint(x), lo, hi) with a NaN quotient (0/0) mapped to 0. */
static int8_t q_round_clamp(float x, int lo, int hi) {
  const float v = rintf(x);
  if (v != v) return 0;
  if (v < (float)lo) return (int8_t)lo;
  if (v > (float)hi) return (int8_t)hi;
  return (int8_t)v;
}

int pg_lqer_fit(const float *E, uint64_t rows, uint64_t cols, unsigned rank, int nthreads,
                int8_t *qa, uint16_t *sa, int8_t *qb, uint16_t *sb, pg_err *err) {
  if (!E || !qa || !sa || !qb || !sb)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "lqer: NULL argument");
  if (rows == 0 || cols == 0 || rank == 0 || rank > (rows < cols ? rows : cols))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "lqer: rank %u invalid for a %llu x %llu matrix", rank,
                      (unsigned long long)rows, (unsigned long long)cols);
  if (rows > SIZE_MAX || cols > SIZE_MAX)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "lqer: dimensions overflow");
  const size_t r = rank;
  size_t na, nb;
  if (mul_ovf((size_t)rows, r, &na) || mul_ovf(r, (size_t)cols, &nb) ||
      na > SIZE_MAX / sizeof(double) || nb > SIZE_MAX / sizeof(double))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "lqer: dimensions overflow");
  if (nb % PG_LQER_GROUP != 0)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "lqer: rank %u x %llu columns is not a multiple of %d", rank,
                      (unsigned long long)cols, PG_LQER_GROUP);
  double *U = malloc(na * sizeof(double));
  double *S = malloc(r * sizeof(double));
  double *Vt = malloc(nb * sizeof(double));
  int rc = PG_OK;
  if (!U || !S || !Vt) {
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "lqer: out of memory");
    goto done;
  }
  rc = pg_svd_top(E, rows, cols, rank, nthreads, U, S, Vt, err);
  if (rc != PG_OK) goto done;

  /* A = U_r·diag(S_r) in fp64, used as fp32; one fp16 scale for all of it */
  double amax = 0.0;
  for (size_t i = 0; i < na; i++) {
    const double a = fabs(U[i] * S[i % r]);
    if (a > amax) amax = a;
  }
  float s = (float)amax;
  if (!(s >= 1e-10f)) s = 1e-10f;
  *sa = pg_f32_to_f16(s / 1.5f);
  const float saf = pg_f16_to_f32(*sa);
  for (size_t i = 0; i < na; i++) qa[i] = q_round_clamp((float)(U[i] * S[i % r]) / saf, -2, 1);

  /* B = V_rᵀ flattened row-major, one fp16 scale per group of 64 */
  for (size_t g = 0; g < nb / PG_LQER_GROUP; g++) {
    const double *b = Vt + g * PG_LQER_GROUP;
    float bmax = 0.0f;
    for (size_t t = 0; t < PG_LQER_GROUP; t++) {
      const float v = fabsf((float)b[t]);
      if (v > bmax) bmax = v;
    }
    if (!(bmax >= 1e-10f)) bmax = 1e-10f;
    sb[g] = pg_f32_to_f16(bmax / 7.5f);
    const float sbf = pg_f16_to_f32(sb[g]);
    for (size_t t = 0; t < PG_LQER_GROUP; t++)
      qb[g * PG_LQER_GROUP + t] = q_round_clamp((float)b[t] / sbf, -8, 7);
  }

done:
  free(U);
  free(S);
  free(Vt);
  return rc;
}
