/* pg_gptq.c: Hessians and their weighted errors, GPTQ (preparation and the quantization loop)
 * (see pg_gptq.h). The scale rules and the one-matrix driver are pg_quant.c; LQER is pg_lqer.c.
 *
 * Determinism: every value is computed by one fixed sequence of operations whichever thread runs
 * it. The heavy loops (XᵀX, the Cholesky's trailing updates, the triangular inverse, the product
 * of the inverse with its transpose) share one 4×4 register tile: C[a][b] += Σ_k A[k][a]·B[k][b]
 * with each entry accumulated sequentially in ascending k, straight into C, so splitting the tiles
 * across threads, or splitting k into consecutive calls, never changes a bit. */
#include "pg_gptq.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_quant.h"
#include "pg_quant_tasks.h"
#include "pg_threads.h"

#define PG_GPTQ_FILE NULL

/* ---- small helpers --------------------------------------------------------------------- */

/* Rows [0, n) of uneven cost, split into T consecutive ranges of about equal total cost. The
 * split only decides which thread does what, never how a value is computed. */
typedef double (*cost_fn)(const void *ctx, size_t row);
typedef void (*rows_fn)(void *ctx, size_t begin, size_t end);
typedef struct {
  size_t bounds[PG_PARALLEL_MAX_THREADS + 1];
  rows_fn fn;
  void *ctx;
} balanced_run;
static void balanced_task(void *ctx, int t) {
  balanced_run *b = ctx;
  if (b->bounds[t] < b->bounds[t + 1]) b->fn(b->ctx, b->bounds[t], b->bounds[t + 1]);
}
static void balanced_for(size_t n, cost_fn cost, rows_fn fn, void *ctx, int nthreads) {
  if (n == 0) return;
  int T = task_count(nthreads, n);
  if (T == 1) {
    fn(ctx, 0, n);
    return;
  }
  balanced_run b;
  b.fn = fn;
  b.ctx = ctx;
  double total = 0;
  for (size_t i = 0; i < n; i++) total += cost(ctx, i);
  b.bounds[0] = 0;
  int t = 1;
  double acc = 0;
  for (size_t i = 0; i < n && t < T; i++) {
    acc += cost(ctx, i);
    while (t < T && acc >= total * (double)t / (double)T) b.bounds[t++] = i + 1;
  }
  while (t <= T) b.bounds[t++] = n;
  run_tasks(T, balanced_task, &b);
}

/* ---- the 4×4 tile ------------------------------------------------------------------------ */

/* C[a*ldc + b] += Σ_{k<K} A[4k + a]·B[4k + b] for a < ma, b < mb, k ascending, each entry one
 * running fp64 sum that starts from C. A and B are packed panels (4 values per k). */
static void tile4(double *C, size_t ldc, const double *A, const double *B, size_t K, int ma,
                  int mb) {
  double c[4][4];
  if (ma == 4 && mb == 4) {
    for (int a = 0; a < 4; a++)
      for (int b = 0; b < 4; b++) c[a][b] = C[(size_t)a * ldc + (size_t)b];
    for (size_t k = 0; k < K; k++) {
      const double *x = A + 4 * k, *y = B + 4 * k;
      for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++) c[a][b] += x[a] * y[b];
    }
    for (int a = 0; a < 4; a++)
      for (int b = 0; b < 4; b++) C[(size_t)a * ldc + (size_t)b] = c[a][b];
    return;
  }
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) c[a][b] = (a < ma && b < mb) ? C[(size_t)a * ldc + (size_t)b] : 0;
  for (size_t k = 0; k < K; k++) {
    const double *x = A + 4 * k, *y = B + 4 * k;
    for (int a = 0; a < 4; a++)
      for (int b = 0; b < 4; b++) c[a][b] += x[a] * y[b];
  }
  for (int a = 0; a < ma; a++)
    for (int b = 0; b < mb; b++) C[(size_t)a * ldc + (size_t)b] = c[a][b];
}

static int min4(size_t rest) { return rest < 4 ? (int)rest : 4; }

/* ---- Hessians ---------------------------------------------------------------------------- */

int pg_hessian_init(pg_hessian *H, uint32_t n, pg_err *err) {
  if (!H) return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "hessian: NULL");
  memset(H, 0, sizeof *H);
  if (n == 0) return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "hessian: n = 0");
  H->h = zalloc3(n, n, 1, sizeof(double));
  if (!H->h)
    return pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "hessian: %u x %u", n, n);
  H->n = n;
  return PG_OK;
}

void pg_hessian_free(pg_hessian *H) {
  if (!H) return;
  free(H->h);
  memset(H, 0, sizeof *H);
}

/* Rows per packed block of XᵀX. */
#define HESS_KB 128

/* Upper-triangle tiles of C (m×m tiles of 4) += PᵀP over K packed rows; P holds m panels of
 * pstride doubles; tile row i costs (m − i). kmin_tri: K starts at 4·max(i, j) (P lower
 * triangular: the rows above are zero, so skipping them is exact as far as values go, and the
 * order of the rest is kept). */
typedef struct {
  double *C;
  size_t ldc, n; /* n: valid rows/cols of C */
  const double *P;
  size_t pstride, m, K;
  int tri_skip;
} syrk_ctx;
static double syrk_cost(const void *vctx, size_t i) {
  const syrk_ctx *s = vctx;
  if (!s->tri_skip) return (double)(s->m - i);
  double c = 0;
  for (size_t j = i; j < s->m; j++) c += (double)(s->K - 4 * j) + 8;
  return c;
}
static void syrk_rows(void *vctx, size_t begin, size_t end) {
  const syrk_ctx *s = vctx;
  for (size_t i = begin; i < end; i++)
    for (size_t j = i; j < s->m; j++) {
      size_t k0 = s->tri_skip ? 4 * j : 0;
      tile4(s->C + 4 * i * s->ldc + 4 * j, s->ldc, s->P + i * s->pstride + 4 * k0,
            s->P + j * s->pstride + 4 * k0, s->K - k0, min4(s->n - 4 * i), min4(s->n - 4 * j));
    }
}

/* Mirror the upper triangle of the n×n matrix C into the lower one. */
static void mirror_upper(double *C, size_t n) {
  for (size_t i = 1; i < n; i++)
    for (size_t j = 0; j < i; j++) C[i * n + j] = C[j * n + i];
}

/* Pack kb rows of an fp32 matrix (n columns) as fp64 column panels of 4: P[p][k][b]. When B is
 * given the packed value is (double)A − (double)B. */
static void pack_rows_f32(const float *A, const float *B, size_t n, size_t kb, size_t m,
                          double *P, size_t pstride) {
  for (size_t k = 0; k < kb; k++) {
    const float *a = A + k * n, *b = B ? B + k * n : NULL;
    for (size_t c = 0; c < n; c++)
      P[(c >> 2) * pstride + 4 * k + (c & 3)] = b ? (double)a[c] - (double)b[c] : (double)a[c];
    for (size_t c = n; c < 4 * m; c++) P[(c >> 2) * pstride + 4 * k + (c & 3)] = 0;
  }
}

/* C (n×n, upper triangle) += DᵀD for D = A − B (B may be NULL) [rows × n], fp64, each entry
 * summed over rows in ascending order. P: scratch of m·HESS_KB·4 doubles. */
static void xtx_upper(double *C, size_t n, const float *A, const float *B, uint64_t rows,
                      double *P, int nthreads) {
  size_t m = (n + 3) / 4;
  for (uint64_t r0 = 0; r0 < rows; r0 += HESS_KB) {
    size_t kb = (size_t)(rows - r0 < HESS_KB ? rows - r0 : HESS_KB);
    pack_rows_f32(A + r0 * n, B ? B + r0 * n : NULL, n, kb, m, P, 4 * HESS_KB);
    syrk_ctx s = {C, n, n, P, 4 * HESS_KB, m, kb, 0};
    balanced_for(m, syrk_cost, syrk_rows, &s, nthreads);
  }
}

void pg_hessian_add(pg_hessian *H, const float *X, uint64_t rows, int nthreads) {
  if (!H || !H->h || !X || rows == 0) return;
  size_t n = H->n, m = (n + 3) / 4;
  double *P = alloc3(m, HESS_KB, 4, sizeof(double));
  if (P) {
    xtx_upper(H->h, n, X, NULL, rows, P, nthreads);
    free(P);
  } else {
    /* no scratch: the same sums (one running sum per entry, rows ascending), unblocked */
    for (uint64_t r = 0; r < rows; r++) {
      const float *x = X + r * n;
      for (size_t i = 0; i < n; i++) {
        double xi = (double)x[i];
        double *h = H->h + i * n;
        for (size_t j = i; j < n; j++) h[j] += xi * (double)x[j];
      }
    }
  }
  mirror_upper(H->h, n);
  H->rows += rows;
}

/* ---- fp64 Cholesky and the inverse from its factor ---------------------------------------- */

#define CHOL_NB 64

typedef struct {
  double *A;
  size_t n, k0, k1;
  double *P, *Pn; /* packed panel (and its negation): groups of 4 rows below k1, kb per group */
  size_t pstride;
} chol_ctx;

/* Rows i >= k1 of the panel: L[i][j] = (A[i][j] − Σ_{k0<=k<j} L[i][k]·L[j][k]) / L[j][j], then
 * packed, 4 rows per group. */
static void chol_panel_groups(void *vctx, size_t begin, size_t end) {
  chol_ctx *c = vctx;
  size_t n = c->n, k0 = c->k0, k1 = c->k1, kb = k1 - k0;
  for (size_t g = begin; g < end; g++) {
    for (size_t a = 0; a < 4; a++) {
      size_t i = k1 + 4 * g + a;
      double *P = c->P + g * c->pstride, *Pn = c->Pn + g * c->pstride;
      if (i >= n) {
        for (size_t k = 0; k < kb; k++) P[4 * k + a] = Pn[4 * k + a] = 0;
        continue;
      }
      double *ri = c->A + i * n;
      for (size_t j = k0; j < k1; j++) {
        const double *rj = c->A + j * n;
        double v = ri[j];
        for (size_t k = k0; k < j; k++) v -= ri[k] * rj[k];
        ri[j] = v / rj[j];
      }
      for (size_t k = 0; k < kb; k++) {
        P[4 * k + a] = ri[k0 + k];
        Pn[4 * k + a] = -ri[k0 + k];
      }
    }
  }
}

static double chol_trail_cost(const void *vctx, size_t gi) {
  (void)vctx;
  return (double)(gi + 1);
}
/* Lower tiles (gj <= gi) of the trailing matrix: A[i][j] −= Σ_k L[i][k]·L[j][k]. */
static void chol_trail_rows(void *vctx, size_t begin, size_t end) {
  chol_ctx *c = vctx;
  size_t n = c->n, k1 = c->k1, kb = c->k1 - c->k0;
  for (size_t gi = begin; gi < end; gi++)
    for (size_t gj = 0; gj <= gi; gj++)
      tile4(c->A + (k1 + 4 * gi) * n + k1 + 4 * gj, n, c->Pn + gi * c->pstride,
            c->P + gj * c->pstride, kb, min4(n - k1 - 4 * gi), min4(n - k1 - 4 * gj));
}

/* In-place lower Cholesky of the n×n row-major A (lower triangle read and written; the upper
 * triangle is scratch). Each L[i][j] is A[i][j] minus the products L[i][k]·L[j][k] in ascending
 * k, then divided by L[j][j] (or square-rooted). Returns 0, or −1 on a pivot that is not a
 * positive finite number. P, Pn: scratch of m·CHOL_NB·4 doubles each. */
static int chol_lower(double *A, size_t n, double *P, double *Pn, int nthreads) {
  chol_ctx c = {A, n, 0, 0, P, Pn, 4 * CHOL_NB};
  for (size_t k0 = 0; k0 < n; k0 += CHOL_NB) {
    size_t k1 = k0 + CHOL_NB < n ? k0 + CHOL_NB : n;
    for (size_t j = k0; j < k1; j++) {
      double *rj = A + j * n;
      double d = rj[j];
      for (size_t k = k0; k < j; k++) d -= rj[k] * rj[k];
      if (!(d > 0) || !isfinite(d)) return -1;
      double ljj = sqrt(d);
      rj[j] = ljj;
      for (size_t i = j + 1; i < k1; i++) {
        double *ri = A + i * n;
        double v = ri[j];
        for (size_t k = k0; k < j; k++) v -= ri[k] * rj[k];
        ri[j] = v / ljj;
      }
    }
    if (k1 == n) break;
    c.k0 = k0;
    c.k1 = k1;
    size_t groups = (n - k1 + 3) / 4;
    /* panel rows, uniform cost per group */
    pg_parallel_for(groups, chol_panel_groups, &c, nthreads);
    balanced_for(groups, chol_trail_cost, chol_trail_rows, &c, nthreads);
  }
  return 0;
}

/* X = L⁻¹ (lower) for the lower factor L in A, stored as column panels XP[p][k][b] = X[k][4p+b]
 * (entries above the diagonal exactly 0):
 *   X[c][c] = 1/L[c][c];  X[i][c] = −(Σ_{k<i} L[i][k]·X[k][c]) / L[i][i]  (k ascending, the
 * terms with k < c being exact zeros). Row blocks of CHOL_NB: the part of the sum over earlier
 * blocks by tiles into S, the rest column by column. */
typedef struct {
  const double *A;
  size_t n, m, i0, i1;
  double *XP, *S, *LA; /* S: CHOL_NB×n partial sums; LA: the block's rows of L, packed by 4 */
} trinv_ctx;

static double trinv_cost(const void *vctx, size_t pc) {
  const trinv_ctx *t = vctx;
  return (double)(t->i0 - 4 * pc) + 8;
}
static void trinv_gemm_cols(void *vctx, size_t begin, size_t end) {
  trinv_ctx *t = vctx;
  size_t n = t->n, rb = t->i1 - t->i0, groups = (rb + 3) / 4;
  for (size_t pc = begin; pc < end; pc++) {
    size_t c0 = 4 * pc;
    for (size_t g = 0; g < groups; g++)
      tile4(t->S + 4 * g * n + c0, n, t->LA + g * 4 * n + 4 * c0, t->XP + pc * 4 * n + 4 * c0,
            t->i0 - c0, min4(rb - 4 * g), 4);
  }
}
/* Column panels pc < ceil(i1/4): finish rows [i0, i1) of X in those columns. */
static void trinv_finish_cols(void *vctx, size_t begin, size_t end) {
  trinv_ctx *t = vctx;
  size_t n = t->n, i0 = t->i0, i1 = t->i1;
  for (size_t pc = begin; pc < end; pc++) {
    double *xp = t->XP + pc * 4 * n;
    for (size_t b = 0; b < 4; b++) {
      size_t c = 4 * pc + b;
      if (c >= i1) break;
      for (size_t i = i0 > c ? i0 : c; i < i1; i++) {
        const double *li = t->A + i * n;
        if (i == c) {
          xp[4 * i + b] = 1.0 / li[i];
          continue;
        }
        double acc = c < i0 ? t->S[(i - i0) * n + c] : 0.0;
        for (size_t k = i0 > c ? i0 : c; k < i; k++) acc += li[k] * xp[4 * k + b];
        xp[4 * i + b] = -acc / li[i];
      }
    }
  }
}

static void tri_inverse_panels(const double *A, size_t n, double *XP, double *S, double *LA,
                               int nthreads) {
  size_t m = (n + 3) / 4;
  trinv_ctx t = {A, n, m, 0, 0, XP, S, LA};
  for (size_t i0 = 0; i0 < n; i0 += CHOL_NB) {
    size_t i1 = i0 + CHOL_NB < n ? i0 + CHOL_NB : n, rb = i1 - i0;
    t.i0 = i0;
    t.i1 = i1;
    if (i0 > 0) {
      /* pack rows i0..i1 of L (columns < i0) by groups of 4, and clear S */
      size_t groups = (rb + 3) / 4;
      for (size_t g = 0; g < groups; g++)
        for (size_t a = 0; a < 4; a++) {
          size_t i = i0 + 4 * g + a;
          double *la = LA + g * 4 * n;
          for (size_t k = 0; k < i0; k++) la[4 * k + a] = i < n ? A[i * n + k] : 0.0;
        }
      for (size_t r = 0; r < 4 * groups; r++) memset(S + r * n, 0, i0 * sizeof(double));
      balanced_for(i0 / 4, trinv_cost, trinv_gemm_cols, &t, nthreads);
    }
    pg_parallel_for((i1 + 3) / 4, trinv_finish_cols, &t, nthreads);
  }
}

/* ---- GPTQ preparation -------------------------------------------------------------------- */

pg_gptq_opts pg_gptq_defaults(void) {
  pg_gptq_opts o;
  o.damp = 0.01;
  o.act_order = 1;
  o.max_retries = 4;
  return o;
}

void pg_gptq_prep_free(pg_gptq_prep *p) {
  if (!p) return;
  free(p->perm);
  free(p->u);
  free(p->dead);
  free(p->diag);
  memset(p, 0, sizeof *p);
}

/* Stable merge sort of idx by key descending (equal keys keep their order; NaN keys compare as
 * not greater, so they stay in place relative to what they meet). */
static void sort_desc_stable(uint32_t *idx, uint32_t *tmp, size_t n, const double *key) {
  for (size_t w = 1; w < n; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t a = lo, b = mid, o = lo;
      while (a < mid && b < hi) tmp[o++] = key[idx[b]] > key[idx[a]] ? idx[b++] : idx[a++];
      while (a < mid) tmp[o++] = idx[a++];
      while (b < hi) tmp[o++] = idx[b++];
    }
    memcpy(idx, tmp, n * sizeof *idx);
  }
}

int pg_gptq_prepare(const pg_hessian *H, const pg_gptq_opts *o, pg_gptq_prep *p, pg_err *err) {
  if (!p) return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq prepare: NULL");
  memset(p, 0, sizeof *p);
  if (!H || !H->h || H->n == 0)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq prepare: empty Hessian");
  pg_gptq_opts opts = o ? *o : pg_gptq_defaults();
  if (!(opts.damp >= 0) || !isfinite(opts.damp) || opts.max_retries < 0)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                      "gptq prepare: damp %g, max_retries %d", opts.damp, opts.max_retries);
  const size_t n = H->n, m = (n + 3) / 4;
  const int nthreads = 0;

  p->n = H->n;
  p->perm = alloc3(n, 1, 1, sizeof(uint32_t));
  p->u = alloc3(n, n, 1, sizeof(double));
  p->dead = zalloc3(n, 1, 1, 1);
  p->diag = alloc3(n, 1, 1, sizeof(double));
  uint32_t *tmp = alloc3(n, 1, 1, sizeof(uint32_t));
  double *base = alloc3(n, 1, 1, sizeof(double)); /* diag with dead columns at 1 */
  double *A = alloc3(n, n, 1, sizeof(double));
  double *XP = alloc3(m, 4, n, sizeof(double));
  double *S = alloc3(CHOL_NB, n, 1, sizeof(double));
  double *LA = alloc3(CHOL_NB, n, 1, sizeof(double));
  double *P = alloc3(m, CHOL_NB, 4, sizeof(double));
  double *Pn = alloc3(m, CHOL_NB, 4, sizeof(double));
  int rc = PG_OK;
  if (!p->perm || !p->u || !p->dead || !p->diag || !tmp || !base || !A || !XP || !S || !LA ||
      !P || !Pn) {
    rc = pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq prepare: n = %zu", n);
    goto done;
  }

  double mean = 0;
  for (size_t j = 0; j < n; j++) {
    double d = H->h[j * n + j];
    if (d == 0) {
      p->dead[j] = 1;
      p->n_dead++;
      d = 1;
    }
    base[j] = d;
    mean += d;
  }
  mean /= (double)n;

  double damp = opts.damp;
  int ok = 0;
  for (int attempt = 0; attempt <= opts.max_retries; attempt++, damp *= 10) {
    const double add = damp * mean;
    for (size_t j = 0; j < n; j++) p->diag[j] = base[j] + add;
    for (size_t j = 0; j < n; j++) p->perm[j] = (uint32_t)j;
    if (opts.act_order) sort_desc_stable(p->perm, tmp, n, p->diag);
    /* A = the damped H, permuted (only the lower triangle is used) */
    for (size_t a = 0; a < n; a++) {
      const double *hr = H->h + (size_t)p->perm[a] * n;
      double *ar = A + a * n;
      for (size_t b = 0; b < a; b++) ar[b] = hr[p->perm[b]];
      ar[a] = p->diag[p->perm[a]];
      for (size_t b = a + 1; b < n; b++) ar[b] = 0;
    }
    if (chol_lower(A, n, P, Pn, nthreads) != 0) continue;
    /* X = L⁻¹ in panels; H⁻¹ = XᵀX into u (upper, then mirrored) */
    memset(XP, 0, m * 4 * n * sizeof(double));
    tri_inverse_panels(A, n, XP, S, LA, nthreads);
    memset(p->u, 0, n * n * sizeof(double));
    syrk_ctx s = {p->u, n, n, XP, 4 * n, m, n, 1};
    balanced_for(m, syrk_cost, syrk_rows, &s, nthreads);
    mirror_upper(p->u, n);
    if (chol_lower(p->u, n, P, Pn, nthreads) != 0) continue;
    /* u = Lᵀ: upper factor with uᵀu = H⁻¹ */
    for (size_t i = 0; i < n; i++)
      for (size_t j = i + 1; j < n; j++) {
        p->u[i * n + j] = p->u[j * n + i];
        p->u[j * n + i] = 0;
      }
    p->damp_used = damp;
    p->retries = attempt;
    ok = 1;
    break;
  }
  if (!ok)
    rc = pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                    "gptq prepare: Cholesky failed up to damp %g (%d retries)", damp / 10,
                    opts.max_retries);
done:
  free(tmp);
  free(base);
  free(A);
  free(XP);
  free(S);
  free(LA);
  free(P);
  free(Pn);
  if (rc != PG_OK) pg_gptq_prep_free(p);
  return rc;
}

/* ---- GPTQ quantization ------------------------------------------------------------------- */

#define GPTQ_G 8     /* rows of W processed together (they share the loads of u) */
#define GPTQ_KC 256  /* columns per chunk of the lazy update */

typedef struct {
  const float *W;
  uint64_t rows;
  size_t n, block;
  const pg_gptq_prep *p;
  const uint16_t *s;
  int qmin, qmax, T;
  int8_t *q;
  uint64_t *row_clamped; /* may be NULL */
  int fail[PG_PARALLEL_MAX_THREADS];
} gq_ctx;

static void gq_task(void *vctx, int t) {
  gq_ctx *c = vctx;
  const size_t n = c->n, B = c->block;
  const double *u = c->p->u;
  const uint32_t *perm = c->p->perm;
  uint64_t r0, r1;
  task_rows(c->rows, c->T, t, &r0, &r1);
  if (r0 >= r1) return;
  double *w = alloc3(GPTQ_G, n, 1, sizeof(double));
  double *e = alloc3(GPTQ_G, B, 1, sizeof(double));
  double *acc = alloc3(GPTQ_G, GPTQ_KC, 1, sizeof(double));
  if (!w || !e || !acc) {
    c->fail[t] = 1;
    goto out;
  }
  for (uint64_t r = r0; r < r1; r += GPTQ_G) {
    const size_t G = (size_t)(r1 - r < GPTQ_G ? r1 - r : GPTQ_G);
    double sg[GPTQ_G];
    uint64_t cl[GPTQ_G];
    for (size_t g = 0; g < G; g++) {
      const float *src = c->W + (r + g) * n;
      double *wg = w + g * n;
      for (size_t j = 0; j < n; j++)
        wg[j] = c->p->dead[perm[j]] ? 0.0 : (double)src[perm[j]];
      sg[g] = (double)pg_f16_to_f32(c->s[r + g]);
      cl[g] = 0;
    }
    for (size_t i1 = 0; i1 < n; i1 += B) {
      const size_t i2 = i1 + B < n ? i1 + B : n, bs = i2 - i1;
      for (size_t j = i1; j < i2; j++) {
        const double *uj = u + j * n;
        const double ujj = uj[j];
        for (size_t g = 0; g < G; g++) {
          double *wg = w + g * n;
          double qv = rint(wg[j] / sg[g]);
          if (qv < (double)c->qmin) {
            qv = (double)c->qmin;
            cl[g]++;
          } else if (qv > (double)c->qmax) {
            qv = (double)c->qmax;
            cl[g]++;
          } else if (qv != qv) {
            qv = 0; /* 0/0 in a row whose scale underflowed to 0 */
          }
          c->q[(r + g) * n + perm[j]] = (int8_t)qv;
          const double ev = (wg[j] - qv * sg[g]) / ujj;
          e[g * B + (j - i1)] = ev;
          for (size_t k = j + 1; k < i2; k++) wg[k] -= ev * uj[k];
        }
      }
      /* lazy update of the later columns: w_k −= Σ_j e_j·u[j][k], j ascending */
      for (size_t k0 = i2; k0 < n; k0 += GPTQ_KC) {
        const size_t kc = n - k0 < GPTQ_KC ? n - k0 : GPTQ_KC;
        memset(acc, 0, G * GPTQ_KC * sizeof(double));
        for (size_t jj = 0; jj < bs; jj++) {
          const double *uj = u + (i1 + jj) * n + k0;
          for (size_t g = 0; g < G; g++) {
            const double ev = e[g * B + jj];
            double *a = acc + g * GPTQ_KC;
            for (size_t k = 0; k < kc; k++) a[k] += ev * uj[k];
          }
        }
        for (size_t g = 0; g < G; g++) {
          double *wg = w + g * n + k0;
          const double *a = acc + g * GPTQ_KC;
          for (size_t k = 0; k < kc; k++) wg[k] -= a[k];
        }
      }
    }
    if (c->row_clamped)
      for (size_t g = 0; g < G; g++) c->row_clamped[r + g] = cl[g];
  }
out:
  free(w);
  free(e);
  free(acc);
}

static int check_q_range(int qmin, int qmax, pg_err *err) {
  if (qmin >= qmax || qmin < -128 || qmax > 127)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: bad clamp [%d, %d]",
                      qmin, qmax);
  return PG_OK;
}

/* GPTQ with optional per-row clamp counts. Arguments already checked. */
static int gptq_run(const float *W, uint64_t rows, uint64_t cols, const pg_gptq_prep *p,
                    const uint16_t *s, int qmin, int qmax, int block, int nthreads, int8_t *q,
                    uint64_t *row_clamped, pg_err *err) {
  gq_ctx c;
  memset(&c, 0, sizeof c);
  c.W = W;
  c.rows = rows;
  c.n = (size_t)cols;
  c.block = block > 0 ? (size_t)block : 128;
  c.p = p;
  c.s = s;
  c.qmin = qmin;
  c.qmax = qmax;
  c.q = q;
  c.row_clamped = row_clamped;
  c.T = task_count(nthreads, (rows + GPTQ_G - 1) / GPTQ_G);
  run_tasks(c.T, gq_task, &c);
  for (int t = 0; t < c.T; t++)
    if (c.fail[t])
      return pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq: row buffers");
  return PG_OK;
}

int pg_gptq_quantize(const float *W, uint64_t rows, uint64_t cols, const pg_gptq_prep *p,
                     const uint16_t *scales_f16, int qmin, int qmax, int block, int nthreads,
                     int8_t *q, pg_err *err) {
  return pg_gptq_quantize_counted(W, rows, cols, p, scales_f16, qmin, qmax, block, nthreads, q,
                                  NULL, err);
}

int pg_gptq_quantize_counted(const float *W, uint64_t rows, uint64_t cols, const pg_gptq_prep *p,
                             const uint16_t *scales_f16, int qmin, int qmax, int block,
                             int nthreads, int8_t *q, uint64_t *row_clamped, pg_err *err) {
  if (!W || !p || !p->u || !p->perm || !p->dead || !scales_f16 || !q)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq: NULL argument");
  if (cols != p->n || cols == 0)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                      "gptq: %llu columns, prepared for %u", (unsigned long long)cols, p->n);
  if (rows > SIZE_MAX / cols)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq: %llu x %llu overflows",
                      (unsigned long long)rows, (unsigned long long)cols);
  if (block < 0)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "gptq: block %d", block);
  PG_TRY(check_q_range(qmin, qmax, err));
  if (rows == 0) return PG_OK;
  return gptq_run(W, rows, cols, p, scales_f16, qmin, qmax, block, nthreads, q, row_clamped,
                  err);
}

/* ---- Hessian-weighted error -------------------------------------------------------------- */

/* Σ_r e_r H e_rᵀ (E = A − B, B NULL: E = A) as ⟨H, EᵀE⟩: G = EᵀE by the same tiles as the
 * Hessian (each entry summed over rows ascending), then Σ_i [H_ii G_ii + Σ_{j>i} (H_ij + H_ji)
 * G_ij] in row-major order. Returns 0, or −1 when out of memory. */
static int hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H,
                       int nthreads, double *out) {
  const size_t n = H->n, m = (n + 3) / 4;
  double *G = zalloc3(n, n, 1, sizeof(double));
  double *P = alloc3(m, HESS_KB, 4, sizeof(double));
  int rc = -1;
  if (G && P) {
    xtx_upper(G, n, A, B, rows, P, nthreads);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
      const double *h = H->h + i * n, *g = G + i * n;
      double row = h[i] * g[i];
      for (size_t j = i + 1; j < n; j++) row += (h[j] + H->h[j * n + i]) * g[j];
      total += row;
    }
    *out = total;
    rc = 0;
  }
  free(G);
  free(P);
  return rc;
}

int pg_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H, int nthreads,
                   double *out, pg_err *err) {
  if (!A || !H || !H->h || H->n == 0 || !out || rows > SIZE_MAX / H->n)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "hessian: bad arguments");
  if (hessian_err(A, B, rows, H, nthreads, out))
    return pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "hessian: %u x %u sums", H->n,
                      H->n);
  return PG_OK;
}

double pg_quant_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H,
                            int nthreads) {
  if (!A || !B || !H || !H->h || H->n == 0) return NAN;
  if (rows == 0) return 0;
  if (rows > SIZE_MAX / H->n) return NAN;
  double v;
  return hessian_err(A, B, rows, H, nthreads, &v) == 0 ? v : NAN;
}
