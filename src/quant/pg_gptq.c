/* pg_gptq.c: Hessians, GPTQ (preparation and the quantization loop), the scale rules and the
 * one-matrix driver (see pg_gptq.h). LQER (pg_lqer_fit, pg_svd_top) is pg_lqer.h.
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
#include "pg_threads.h"

#define PG_GPTQ_FILE NULL

/* ---- small helpers --------------------------------------------------------------------- */

/* a*b*c elements of size sz, NULL on overflow or when out of memory. */
static void *alloc3(size_t a, size_t b, size_t c, size_t sz) {
  if (a == 0 || b == 0 || c == 0) return malloc(sz ? sz : 1);
  if (b > SIZE_MAX / a) return NULL;
  size_t n = a * b;
  if (c > SIZE_MAX / n) return NULL;
  n *= c;
  if (sz > SIZE_MAX / n) return NULL;
  return malloc(n * sz);
}
static void *zalloc3(size_t a, size_t b, size_t c, size_t sz) {
  if (a == 0 || b == 0 || c == 0) return calloc(1, sz ? sz : 1);
  if (b > SIZE_MAX / a) return NULL;
  size_t n = a * b;
  if (c > SIZE_MAX / n) return NULL;
  n *= c;
  return calloc(n, sz);
}

/* Tasks: fn(ctx, t) for t in [0, T), one thread each (T <= PG_PARALLEL_MAX_THREADS). */
typedef void (*task_fn)(void *ctx, int t);
typedef struct {
  task_fn fn;
  void *ctx;
} task_run;
static void task_adapter(void *ctx, size_t begin, size_t end) {
  task_run *r = ctx;
  for (size_t t = begin; t < end; t++) r->fn(r->ctx, (int)t);
}
static void run_tasks(int T, task_fn fn, void *ctx) {
  task_run r = {fn, ctx};
  pg_parallel_for((size_t)T, task_adapter, &r, T);
}
/* The number of tasks for `items` independent pieces of work. */
static int task_count(int nthreads, uint64_t items) {
  int T = pg_parallel_threads(nthreads);
  if ((uint64_t)T > items) T = items ? (int)items : 1;
  return T;
}

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

/* Rows of task t of T over `rows`: [lo, hi). */
static void task_rows(uint64_t rows, int T, int t, uint64_t *lo, uint64_t *hi) {
  uint64_t q = rows / (uint64_t)T, r = rows % (uint64_t)T, ut = (uint64_t)t;
  *lo = ut * q + (ut < r ? ut : r);
  *hi = (ut + 1) * q + (ut + 1 < r ? ut + 1 : r);
}

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
  return gptq_run(W, rows, cols, p, scales_f16, qmin, qmax, block, nthreads, q, NULL, err);
}

/* ---- scale rules ------------------------------------------------------------------------- */

const float PG_QUANT_PCTS[PG_QUANT_N_PCT] = {0.999f, 0.9995f, 0.9999f, 0.99999f, 1.0f};

/* torch.quantile's positions: ranks = q·(n−1) in fp32, below = trunc, above = ceil, weight =
 * ranks − below. */
static void quantile_pos(uint64_t n, float q, uint64_t *lo, uint64_t *hi, float *w) {
  float pos = q * (float)(n - 1);
  if (!(pos > 0)) pos = 0; /* q outside [0, 1] is the caller's error; stay in bounds */
  if (pos > (float)(n - 1)) pos = (float)(n - 1);
  uint64_t l = (uint64_t)pos;
  if (l > n - 1) l = n - 1;
  *lo = l;
  *w = pos - (float)l;
  *hi = (*w > 0 && l + 1 < n) ? l + 1 : l;
}
/* torch's lerp (ATen lerp_vec: weight < 0.5 from below, else from above, fused). */
static float lerp_torch(float a, float b, float w) {
  const float d = b - a;
  return w < 0.5f ? fmaf(w, d, a) : fmaf(w - 1.0f, d, b);
}

float pg_quant_quantile_sorted(const float *sorted, uint64_t n, float q) {
  if (!sorted || n == 0) return NAN;
  if (isnan(sorted[n - 1])) return sorted[n - 1]; /* NaN sorts last; torch answers NaN */
  uint64_t lo, hi;
  float w;
  quantile_pos(n, q, &lo, &hi, &w);
  return lerp_torch(sorted[lo], sorted[hi], w);
}

/* |x| as an order-preserving key (NaN above +inf). */
static uint32_t abs_key(float x) {
  uint32_t k;
  memcpy(&k, &x, sizeof k);
  return k & 0x7fffffffu;
}
static float key_float(uint32_t k) {
  float f;
  memcpy(&f, &k, sizeof f);
  return f;
}
/* LSD radix sort of n keys (8 bits a pass); the result ends up in k. */
static void radix_sort_u32(uint32_t *k, uint32_t *tmp, size_t n) {
  for (int shift = 0; shift < 32; shift += 8) {
    size_t cnt[257] = {0};
    for (size_t i = 0; i < n; i++) cnt[((k[i] >> shift) & 0xff) + 1]++;
    if (cnt[((k[0] >> shift) & 0xff) + 1] == n) continue; /* one digit value: already in order */
    for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
    for (size_t i = 0; i < n; i++) tmp[cnt[(k[i] >> shift) & 0xff]++] = k[i];
    memcpy(k, tmp, n * sizeof *k);
  }
}

/* Scale of one sorted row (keys) and one percentile. */
static uint16_t pct_scale_sorted(const uint32_t *keys, size_t n, float pct, int R) {
  float clip;
  if (isnan(key_float(keys[n - 1])))
    clip = key_float(keys[n - 1]);
  else if (pct >= 1.0f)
    clip = key_float(keys[n - 1]);
  else {
    uint64_t lo, hi;
    float w;
    quantile_pos(n, pct, &lo, &hi, &w);
    clip = lerp_torch(key_float(keys[lo]), key_float(keys[hi]), w);
  }
  const float fl = (float)(1.0 / (double)R); /* Python's 1/R, then fp32 */
  float s = clip / (float)R;
  if (s < fl) s = fl; /* clamp_min: a NaN stays NaN */
  return pg_f32_to_f16(s);
}

typedef struct {
  const float *W;
  uint64_t rows, cols;
  const float *pcts;
  int npct, R, T;
  uint16_t *out; /* npct × rows */
  int fail[PG_PARALLEL_MAX_THREADS];
} pct_ctx;

static void pct_rows(pct_ctx *c, uint64_t r0, uint64_t r1, uint32_t *keys, uint32_t *tmp) {
  const size_t n = (size_t)c->cols;
  for (uint64_t r = r0; r < r1; r++) {
    const float *w = c->W + r * n;
    for (size_t j = 0; j < n; j++) keys[j] = abs_key(w[j]);
    radix_sort_u32(keys, tmp, n);
    for (int i = 0; i < c->npct; i++)
      c->out[(uint64_t)i * c->rows + r] = pct_scale_sorted(keys, n, c->pcts[i], c->R);
  }
}
static void pct_task(void *vctx, int t) {
  pct_ctx *c = vctx;
  uint64_t r0, r1;
  task_rows(c->rows, c->T, t, &r0, &r1);
  if (r0 >= r1) return;
  uint32_t *keys = alloc3((size_t)c->cols, 2, 1, sizeof(uint32_t));
  if (!keys) {
    c->fail[t] = 1;
    return;
  }
  pct_rows(c, r0, r1, keys, keys + c->cols);
  free(keys);
}

/* The scales of several percentiles at once (one sort per row). Returns 0, or −1 when out of
 * memory. */
static int pct_scales_multi(const float *W, uint64_t rows, uint64_t cols, const float *pcts,
                            int npct, int R, uint16_t *out, int nthreads) {
  if (rows == 0) return 0;
  pct_ctx c;
  memset(&c, 0, sizeof c);
  c.W = W;
  c.rows = rows;
  c.cols = cols;
  c.pcts = pcts;
  c.npct = npct;
  c.R = R;
  c.out = out;
  c.T = task_count(nthreads, rows);
  run_tasks(c.T, pct_task, &c);
  for (int t = 0; t < c.T; t++)
    if (c.fail[t]) return -1;
  return 0;
}

/* The k-th smallest key of a row (0-based) without scratch: binary search on the key value. */
static uint32_t kth_key(const float *w, size_t n, uint64_t k) {
  uint32_t lo = 0, hi = 0xffffffffu;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    uint64_t cnt = 0;
    for (size_t j = 0; j < n; j++) cnt += abs_key(w[j]) <= mid;
    if (cnt > k)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

void pg_quant_pct_scales(const float *W, uint64_t rows, uint64_t cols, float pct, int R,
                         uint16_t *scales_f16) {
  if (!W || !scales_f16 || rows == 0 || cols == 0) return;
  if (pct_scales_multi(W, rows, cols, &pct, 1, R, scales_f16, 1) == 0) return;
  /* no memory for a sorted copy: the same values from order statistics found in place */
  for (uint64_t r = 0; r < rows; r++) {
    const float *w = W + r * cols;
    uint32_t top = kth_key(w, (size_t)cols, cols - 1);
    uint32_t keys[2] = {0, top};
    if (!isnan(key_float(top)) && pct < 1.0f) {
      uint64_t lo, hi;
      float wt;
      quantile_pos(cols, pct, &lo, &hi, &wt);
      keys[0] = kth_key(w, (size_t)cols, lo);
      keys[1] = kth_key(w, (size_t)cols, hi);
      float clip = lerp_torch(key_float(keys[0]), key_float(keys[1]), wt);
      const float fl = (float)(1.0 / (double)R);
      float s = clip / (float)R;
      if (s < fl) s = fl;
      scales_f16[r] = pg_f32_to_f16(s);
    } else {
      scales_f16[r] = pct_scale_sorted(&keys[1], 1, 1.0f, R);
    }
  }
}

void pg_quant_hsdclip_scales(const float *W, uint64_t rows, uint64_t cols, const double *diag,
                             float k, float lambda, unsigned bits, uint16_t *scales_f16) {
  if (!W || !diag || !scales_f16 || rows == 0 || cols == 0 || bits < 2 || bits > 16) return;
  const float R = (float)((1 << (bits - 1)) - 1);
  double dsum = 0;
  for (uint64_t j = 0; j < cols; j++) dsum += diag[j] < 1e-8 ? 1e-8 : diag[j];
  const double dmean = dsum / (double)cols;
  /* row_imp_i = mean_j |W_ij|·(d_j / mean d); computed twice (for the mean, then per row), the
   * same way both times, so nothing needs to be stored */
  double rsum = 0;
  for (int pass = 0; pass < 2; pass++) {
    const double rmean = rsum / (double)rows;
    for (uint64_t r = 0; r < rows; r++) {
      const float *w = W + r * cols;
      double acc = 0;
      for (uint64_t j = 0; j < cols; j++) {
        const double d = diag[j] < 1e-8 ? 1e-8 : diag[j];
        acc += fabs((double)w[j]) * (d / dmean);
      }
      const double imp = acc / (double)cols;
      if (pass == 0) {
        rsum += imp;
        continue;
      }
      const float ri = (float)(imp / rmean);
      float sd;
      pg_quant_row_std(w, 1, cols, &sd);
      float s = k * sd;
      s = s * (1.0f + lambda * (ri - 1.0f));
      s = s / R;
      if (!(s >= 1e-10f)) s = 1e-10f; /* as pg_quant_sdclip_scales: NaN lands on the floor */
      scales_f16[r] = pg_f32_to_f16(s);
    }
  }
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

double pg_quant_hessian_err(const float *A, const float *B, uint64_t rows, const pg_hessian *H,
                            int nthreads) {
  if (!A || !B || !H || !H->h || H->n == 0) return NAN;
  if (rows == 0) return 0;
  if (rows > SIZE_MAX / H->n) return NAN;
  double v;
  return hessian_err(A, B, rows, H, nthreads, &v) == 0 ? v : NAN;
}

/* ---- one matrix, end to end -------------------------------------------------------------- */

/* Round-to-nearest by rows in parallel, with per-row clamp counts. */
typedef struct {
  const float *W;
  uint64_t rows, cols;
  const uint16_t *s;
  int qmin, qmax, T;
  int8_t *q;
  uint64_t *row_clamped;
} rtn_ctx;
static void rtn_task(void *vctx, int t) {
  rtn_ctx *c = vctx;
  uint64_t r0, r1;
  task_rows(c->rows, c->T, t, &r0, &r1);
  for (uint64_t r = r0; r < r1; r++)
    c->row_clamped[r] = pg_quant_rtn_rows(c->W + r * c->cols, 1, c->cols, c->s + r, c->qmin,
                                          c->qmax, c->q + r * c->cols);
}

/* Per-row squared error Σ_c (W − Ŵ)² (fp64, c ascending), Ŵ by pg_dequant_rows. */
typedef struct {
  const float *W;
  uint64_t rows, cols;
  const int8_t *q;
  const uint16_t *s;
  double *err;
  int T;
  int fail[PG_PARALLEL_MAX_THREADS];
} rowerr_ctx;
static void rowerr_task(void *vctx, int t) {
  rowerr_ctx *c = vctx;
  uint64_t r0, r1;
  task_rows(c->rows, c->T, t, &r0, &r1);
  if (r0 >= r1) return;
  float *buf = alloc3((size_t)c->cols, 1, 1, sizeof(float));
  if (!buf) {
    c->fail[t] = 1;
    return;
  }
  for (uint64_t r = r0; r < r1; r++) {
    const float *w = c->W + r * c->cols;
    pg_dequant_rows(c->q + r * c->cols, c->s + r, 1, c->cols, buf);
    double acc = 0;
    for (uint64_t j = 0; j < c->cols; j++) {
      const double d = (double)w[j] - (double)buf[j];
      acc += d * d;
    }
    c->err[r] = acc;
  }
  free(buf);
}

typedef struct {
  const float *W;
  uint64_t rows, cols;
  const pg_qmat_opts *o;
  int qmin, qmax;
} qm_job;

static int qm_quantize(const qm_job *j, const uint16_t *s, int8_t *q, uint64_t *row_clamped,
                       pg_err *err) {
  if (j->o->round_rule == PG_ROUND_GPTQ)
    return gptq_run(j->W, j->rows, j->cols, j->o->prep, s, j->qmin, j->qmax, j->o->block,
                    j->o->nthreads, q, row_clamped, err);
  rtn_ctx c = {j->W, j->rows, j->cols, s, j->qmin, j->qmax, 0, q, row_clamped};
  c.T = task_count(j->o->nthreads, j->rows);
  run_tasks(c.T, rtn_task, &c);
  return PG_OK;
}

static int qm_rowerr(const qm_job *j, const int8_t *q, const uint16_t *s, double *out,
                     pg_err *err) {
  rowerr_ctx c;
  memset(&c, 0, sizeof c);
  c.W = j->W;
  c.rows = j->rows;
  c.cols = j->cols;
  c.q = q;
  c.s = s;
  c.err = out;
  c.T = task_count(j->o->nthreads, j->rows);
  run_tasks(c.T, rowerr_task, &c);
  for (int t = 0; t < c.T; t++)
    if (c.fail[t])
      return pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: row buffers");
  return PG_OK;
}

int pg_quant_matrix(const float *W, uint64_t rows, uint64_t cols, const pg_qmat_opts *o,
                    const pg_hessian *H, int8_t *q, uint16_t *scales_f16, pg_qmat_stats *stats,
                    pg_err *err) {
  if (stats) memset(stats, 0, sizeof *stats);
  if (!W || !o || !q || !scales_f16)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: NULL argument");
  if (rows == 0 || cols == 0 || rows > SIZE_MAX / cols)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: bad shape %llu x %llu",
                      (unsigned long long)rows, (unsigned long long)cols);
  if (o->bits < 5 || o->bits > 8)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: bits %u", o->bits);
  if (o->scale_rule < PG_SCALING_SDCLIP || o->scale_rule > PG_SCALING_PCT_ROW)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: scale rule %d",
                      o->scale_rule);
  if (o->round_rule != PG_ROUND_RTN && o->round_rule != PG_ROUND_GPTQ)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: round rule %d",
                      o->round_rule);
  int qmin = o->qmin, qmax = o->qmax;
  if (qmin == 0 && qmax == 0) {
    qmax = pg_int_max(o->bits);
    qmin = -qmax;
  }
  if (qmin >= qmax || qmin < pg_int_min(o->bits) || qmax > pg_int_max(o->bits))
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                      "quant: clamp [%d, %d] outside int%u", qmin, qmax, o->bits);
  const int need_prep = o->round_rule == PG_ROUND_GPTQ || o->scale_rule == PG_SCALING_HSDCLIP;
  if (need_prep && (!o->prep || o->prep->n != cols || !o->prep->diag ||
                    (o->round_rule == PG_ROUND_GPTQ && (!o->prep->u || !o->prep->perm))))
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                      "quant: rule needs a GPTQ preparation of %llu columns",
                      (unsigned long long)cols);
  if (o->block < 0)
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: block %d", o->block);
  if (H && (!H->h || H->n != cols))
    return pg_err_set(err, PG_E_ARG, PG_GPTQ_FILE, PG_NO_OFFSET,
                      "quant: Hessian of %u columns for %llu", H->n, (unsigned long long)cols);

  const size_t nr = (size_t)rows, nel = (size_t)(rows * cols);
  const qm_job job = {W, rows, cols, o, qmin, qmax};
  int rc = PG_OK;
  double *rerr = alloc3(nr, 1, 1, sizeof(double));
  uint64_t *rcl = alloc3(nr, 1, 1, sizeof(uint64_t));
  uint16_t *S = NULL;
  int8_t *qt = NULL;
  double *et = NULL;
  uint64_t *ct = NULL;
  float *what = NULL;
  float pct = 0;
  if (!rerr || !rcl) goto nomem;

  if (o->scale_rule == PG_SCALING_SDCLIP || o->scale_rule == PG_SCALING_HSDCLIP) {
    if (o->scale_rule == PG_SCALING_SDCLIP)
      pg_quant_sdclip_scales(W, rows, cols, o->k, o->bits, scales_f16);
    else
      pg_quant_hsdclip_scales(W, rows, cols, o->prep->diag, o->k, o->lambda, o->bits,
                              scales_f16);
    rc = qm_quantize(&job, scales_f16, q, rcl, err);
    if (rc == PG_OK && stats) rc = qm_rowerr(&job, q, scales_f16, rerr, err);
    if (rc != PG_OK) goto done;
  } else {
    S = alloc3(nr, PG_QUANT_N_PCT, 1, sizeof(uint16_t));
    qt = alloc3(nel, 1, 1, 1);
    et = alloc3(nr, 1, 1, sizeof(double));
    ct = alloc3(nr, 1, 1, sizeof(uint64_t));
    if (!S || !qt || !et || !ct) goto nomem;
    if (pct_scales_multi(W, rows, cols, PG_QUANT_PCTS, PG_QUANT_N_PCT, qmax, S, o->nthreads))
      goto nomem;
    double best = 0;
    for (int i = 0; i < PG_QUANT_N_PCT; i++) {
      const uint16_t *Si = S + (size_t)i * nr;
      if ((rc = qm_quantize(&job, Si, qt, ct, err)) != PG_OK) goto done;
      if ((rc = qm_rowerr(&job, qt, Si, et, err)) != PG_OK) goto done;
      if (o->scale_rule == PG_SCALING_PCT) {
        double tot = 0;
        for (size_t r = 0; r < nr; r++) tot += et[r];
        if (i == 0 || tot < best) { /* strictly smaller: the first of equals wins */
          best = tot;
          pct = PG_QUANT_PCTS[i];
          memcpy(q, qt, nel);
          memcpy(scales_f16, Si, nr * sizeof *Si);
          memcpy(rerr, et, nr * sizeof *et);
          memcpy(rcl, ct, nr * sizeof *ct);
        }
      } else {
        for (size_t r = 0; r < nr; r++)
          if (i == 0 || et[r] < rerr[r]) {
            memcpy(q + r * cols, qt + r * cols, (size_t)cols);
            scales_f16[r] = Si[r];
            rerr[r] = et[r];
            rcl[r] = ct[r];
          }
      }
    }
  }

  if (stats) {
    double sum = 0;
    uint64_t cl = 0;
    for (size_t r = 0; r < nr; r++) {
      sum += rerr[r];
      cl += rcl[r];
    }
    stats->mse = sum / (double)rows / (double)cols;
    stats->clamped = cl;
    stats->pct = o->scale_rule == PG_SCALING_PCT ? pct : 0.0f;
    if (H) {
      what = alloc3(nel, 1, 1, sizeof(float));
      if (!what) goto nomem;
      pg_dequant_rows(q, scales_f16, rows, cols, what);
      double num, den;
      if (hessian_err(W, what, rows, H, o->nthreads, &num) ||
          hessian_err(W, NULL, rows, H, o->nthreads, &den))
        goto nomem;
      stats->herr = den > 0 ? num / den : 0.0;
    }
  }
  goto done;
nomem:
  rc = pg_err_set(err, PG_E_NOMEM, PG_GPTQ_FILE, PG_NO_OFFSET, "quant: %llu x %llu",
                  (unsigned long long)rows, (unsigned long long)cols);
done:
  free(rerr);
  free(rcl);
  free(S);
  free(qt);
  free(et);
  free(ct);
  free(what);
  return rc;
}
