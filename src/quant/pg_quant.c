/* pg_quant.c: the scale rules (SDClip, its Hessian-aware variant, the GPTQ-lite percentile
 * search), round-to-nearest, and one matrix quantized end to end by a scale rule and a rounding
 * rule (see pg_quant.h). Deterministic for any thread count: work is split by rows. */
#include "pg_quant.h"

#include <math.h>
#include <string.h>

#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_quant_tasks.h"
#include "pg_threads.h"

#define PG_QUANT_FILE NULL

void pg_quant_row_std(const float *W, uint64_t rows, uint64_t cols, float *std_out) {
  for (uint64_t r = 0; r < rows; r++) {
    const float *w = W + r * cols;
    double sum = 0.0;
    for (uint64_t c = 0; c < cols; c++) sum += (double)w[c];
    const double mean = cols ? sum / (double)cols : 0.0;
    double ss = 0.0;
    for (uint64_t c = 0; c < cols; c++) {
      const double d = (double)w[c] - mean;
      ss += d * d;
    }
    std_out[r] = cols > 1 ? (float)sqrt(ss / (double)(cols - 1)) : NAN;
  }
}

void pg_quant_sdclip_scales(const float *W, uint64_t rows, uint64_t cols, float k, unsigned bits,
                            uint16_t *scales_f16) {
  const float R = (float)((1 << (bits - 1)) - 1);
  for (uint64_t r = 0; r < rows; r++) {
    float sd;
    pg_quant_row_std(W + r * cols, 1, cols, &sd);
    float s = (k * sd) / R;
    if (!(s >= 1e-10f)) s = 1e-10f; /* clamp_min; a NaN std also lands on the floor */
    scales_f16[r] = pg_f32_to_f16(s);
  }
}

uint64_t pg_quant_rtn_rows(const float *W, uint64_t rows, uint64_t cols,
                           const uint16_t *scales_f16, int qmin, int qmax, int8_t *q) {
  uint64_t clamped = 0;
  for (uint64_t r = 0; r < rows; r++) {
    const float s = pg_f16_to_f32(scales_f16[r]);
    for (uint64_t c = 0; c < cols; c++) {
      float v = rintf(W[r * cols + c] / s);
      if (v < (float)qmin) {
        v = (float)qmin;
        clamped++;
      } else if (v > (float)qmax) {
        v = (float)qmax;
        clamped++;
      } else if (v != v) {
        v = 0.0f; /* 0/0 in a row whose scale underflowed to 0: the value is 0 */
      }
      q[r * cols + c] = (int8_t)v;
    }
  }
  return clamped;
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
    return pg_gptq_quantize_counted(j->W, j->rows, j->cols, j->o->prep, s, j->qmin, j->qmax,
                                    j->o->block, j->o->nthreads, q, row_clamped, err);
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
      return pg_err_set(err, PG_E_NOMEM, PG_QUANT_FILE, PG_NO_OFFSET, "quant: row buffers");
  return PG_OK;
}

int pg_quant_matrix(const float *W, uint64_t rows, uint64_t cols, const pg_qmat_opts *o,
                    const pg_hessian *H, int8_t *q, uint16_t *scales_f16, pg_qmat_stats *stats,
                    pg_err *err) {
  if (stats) memset(stats, 0, sizeof *stats);
  if (!W || !o || !q || !scales_f16)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: NULL argument");
  if (rows == 0 || cols == 0 || rows > SIZE_MAX / cols)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: bad shape %llu x %llu",
                      (unsigned long long)rows, (unsigned long long)cols);
  if (o->bits < 5 || o->bits > 8)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: bits %u", o->bits);
  if (o->scale_rule < PG_SCALING_SDCLIP || o->scale_rule > PG_SCALING_PCT_ROW)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: scale rule %d",
                      o->scale_rule);
  if (o->round_rule != PG_ROUND_RTN && o->round_rule != PG_ROUND_GPTQ)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: round rule %d",
                      o->round_rule);
  int qmin = o->qmin, qmax = o->qmax;
  if (qmin == 0 && qmax == 0) {
    qmax = pg_int_max(o->bits);
    qmin = -qmax;
  }
  if (qmin >= qmax || qmin < pg_int_min(o->bits) || qmax > pg_int_max(o->bits))
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET,
                      "quant: clamp [%d, %d] outside int%u", qmin, qmax, o->bits);
  const int need_prep = o->round_rule == PG_ROUND_GPTQ || o->scale_rule == PG_SCALING_HSDCLIP;
  if (need_prep && (!o->prep || o->prep->n != cols || !o->prep->diag ||
                    (o->round_rule == PG_ROUND_GPTQ && (!o->prep->u || !o->prep->perm))))
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET,
                      "quant: rule needs a GPTQ preparation of %llu columns",
                      (unsigned long long)cols);
  if (o->block < 0)
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET, "quant: block %d", o->block);
  if (H && (!H->h || H->n != cols))
    return pg_err_set(err, PG_E_ARG, PG_QUANT_FILE, PG_NO_OFFSET,
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
      if (pg_hessian_err(W, what, rows, H, o->nthreads, &num, err) ||
          pg_hessian_err(W, NULL, rows, H, o->nthreads, &den, err))
        goto nomem;
      stats->herr = den > 0 ? num / den : 0.0;
    }
  }
  goto done;
nomem:
  rc = pg_err_set(err, PG_E_NOMEM, PG_QUANT_FILE, PG_NO_OFFSET, "quant: %llu x %llu",
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
