/* pg_calib.c: calibration tokens and input Hessians (see pg_calib.h, spec/quant.md §2). */
#include "pg_calib.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pg_rng.h"
#include "pg_shard.h"

void pg_calib_free(pg_calib_set *c) {
  if (!c) return;
  free(c->tokens);
  memset(c, 0, sizeof *c);
}

uint64_t pg_calib_tokens_xxh64(const int32_t *t, size_t n) {
  XXH64_state_t *st = XXH64_createState();
  if (!st) return 0;
  XXH64_reset(st, 0);
  uint8_t buf[4096];
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    buf[k++] = (uint8_t)(t[i] & 0xff);
    buf[k++] = (uint8_t)((t[i] >> 8) & 0xff);
    if (k == sizeof buf) {
      XXH64_update(st, buf, k);
      k = 0;
    }
  }
  if (k) XXH64_update(st, buf, k);
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return h;
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

/* *same = 1 when shards a and b hold the same tokens (read piecewise). */
static int same_tokens(const pg_shard *a, const pg_shard *b, int *same, pg_err *err) {
  *same = 0;
  const uint64_t n = pg_shard_count(a);
  if (pg_shard_count(b) != n) return PG_OK;
  enum { PIECE = 32768 };
  uint16_t *x = malloc(PIECE * sizeof *x), *y = malloc(PIECE * sizeof *y);
  int rc = x && y ? PG_OK : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  int eq = 1;
  for (uint64_t at = 0; at < n && eq && rc == PG_OK; at += PIECE) {
    const uint64_t m = n - at < PIECE ? n - at : PIECE;
    rc = pg_shard_copy(a, at, m, x, err);
    if (rc == PG_OK) rc = pg_shard_copy(b, at, m, y, err);
    if (rc == PG_OK) eq = memcmp(x, y, (size_t)m * sizeof *x) == 0;
  }
  free(x);
  free(y);
  if (rc == PG_OK) *same = eq;
  return rc;
}

static int check_not_val(const pg_shard_set *cal, const char *val_pattern, pg_err *err) {
  size_t nf = pg_shard_set_nfiles(cal);
  for (size_t k = 0; k < nf; k++) {
    const char *p = pg_shard_set_file(cal, k)->path;
    if (strncmp(base_name(p), "fineweb_val_", 12) == 0)
      return pg_err_set(err, PG_E_ILLEGAL, p, PG_NO_OFFSET,
                        "calibration from a validation shard is not allowed");
  }
  if (!val_pattern) return PG_OK;
  pg_shard_set *val = NULL;
  int rc = pg_shard_set_open(&val, val_pattern, err);
  if (rc) return rc;
  size_t nv = pg_shard_set_nfiles(val);
  for (size_t k = 0; k < nf && !rc; k++) {
    const char *p = pg_shard_set_file(cal, k)->path;
    char *rp = realpath(p, NULL);
    const pg_shard *cs = pg_shard_set_shard(cal, k);
    for (size_t j = 0; j < nv && !rc; j++) {
      const char *q = pg_shard_set_file(val, j)->path;
      char *rq = realpath(q, NULL);
      int same = rp && rq ? strcmp(rp, rq) == 0 : strcmp(p, q) == 0;
      free(rq);
      if (same) {
        rc = pg_err_set(err, PG_E_ILLEGAL, p, PG_NO_OFFSET,
                        "calibration file is the validation file %s", q);
        break;
      }
      int dup = 0;
      rc = same_tokens(cs, pg_shard_set_shard(val, j), &dup, err);
      if (!rc && dup)
        rc = pg_err_set(err, PG_E_ILLEGAL, p, PG_NO_OFFSET,
                        "calibration file has the same tokens as the validation file %s", q);
    }
    free(rp);
  }
  pg_shard_set_free(val);
  return rc;
}

int pg_calib_from_shards(pg_calib_set *c, const char *pattern, const char *val_pattern, int nseq,
                         int T, uint32_t vocab, pg_err *err) {
  memset(c, 0, sizeof *c);
  if (nseq < 1 || T < 1 || (uint64_t)nseq * (uint64_t)T > (uint64_t)INT32_MAX)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "calibration: bad size %d x %d", nseq, T);
  pg_shard_set *set = NULL;
  int rc = pg_shard_set_open(&set, pattern, err);
  if (rc) return rc;
  rc = check_not_val(set, val_pattern, err);
  uint64_t n = (uint64_t)nseq * (uint64_t)T;
  if (!rc && pg_shard_set_count(set) < n)
    rc = pg_err_set(err, PG_E_ARG, pattern, PG_NO_OFFSET,
                    "calibration wants %llu tokens (%d x %d) but the shards hold %llu",
                    (unsigned long long)n, nseq, T, (unsigned long long)pg_shard_set_count(set));
  if (!rc) {
    c->tokens = malloc((size_t)n * sizeof *c->tokens);
    if (!c->tokens) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  if (!rc) rc = pg_shard_set_copy_i32(set, 0, n, c->tokens, err);
  for (uint64_t i = 0; !rc && i < n; i++)
    if ((uint32_t)c->tokens[i] >= vocab)
      rc = pg_err_set(err, PG_E_TOKEN_RANGE, pattern, PG_NO_OFFSET,
                      "calibration token %llu is %d, outside the vocabulary of %u",
                      (unsigned long long)i, c->tokens[i], vocab);
  if (!rc) {
    c->nseq = nseq;
    c->T = T;
    c->xxh64 = pg_calib_tokens_xxh64(c->tokens, (size_t)n);
    snprintf(c->source, sizeof c->source, "shards %s (%zu files): first %llu tokens as %d x %d",
             pattern, pg_shard_set_nfiles(set), (unsigned long long)n, nseq, T);
  } else {
    pg_calib_free(c);
  }
  pg_shard_set_free(set);
  return rc;
}

/* One token from logits (fp32) at a temperature; fp64 softmax, inverse CDF on one uniform. */
static int32_t sample(const pg_real *z, int V, double temp, pg_rng *r, double *p) {
  int best = 0;
  for (int v = 1; v < V; v++)
    if (z[v] > z[best]) best = v;
  if (temp <= 0) return best;
  double zmax = (double)z[best], sum = 0;
  for (int v = 0; v < V; v++) {
    p[v] = exp(((double)z[v] - zmax) / temp);
    sum += p[v];
  }
  double u = pg_rng_uniform(r) * sum, acc = 0;
  for (int v = 0; v < V; v++) {
    acc += p[v];
    if (u < acc) return v;
  }
  return V - 1;
}

int pg_calib_self(pg_calib_set *c, pg_model *m, pg_engine *e, int nseq, int T,
                  double temperature, uint64_t seed, int batch,
                  int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
                  pg_err *err) {
  memset(c, 0, sizeof *c);
  const pg_arch *a = pg_model_arch(m);
  int V = a->vocab_size;
  if (nseq < 1 || T < 1 || (uint64_t)nseq * (uint64_t)T > (uint64_t)INT32_MAX || batch < 1 ||
      !(temperature >= 0) || !isfinite(temperature))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "self calibration: bad settings (%d x %d, batch %d, temperature %g)", nseq, T,
                      batch, temperature);
  if (batch > nseq) batch = nseq;
  size_t n = (size_t)nseq * (size_t)T;
  c->tokens = malloc(n * sizeof *c->tokens);
  pg_real *logits = malloc((size_t)batch * (size_t)V * sizeof *logits);
  double *p = malloc((size_t)V * sizeof *p);
  double *nll = malloc((size_t)batch * (size_t)T * sizeof *nll);
  int32_t *ids = malloc((size_t)batch * (size_t)T * sizeof *ids);
  pg_tape *tp = NULL;
  int rc = (!c->tokens || !logits || !p || !nll || !ids)
               ? pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
               : pg_tape_create(&tp, e, 0);
  if (rc && rc != PG_E_NOMEM) rc = pg_err_set(err, rc, NULL, PG_NO_OFFSET, "tape: out of memory");
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (int s0 = 0; !rc && s0 < nseq; s0 += batch) {
    int B = nseq - s0 < batch ? nseq - s0 : batch;
    for (int b = 0; b < B; b++)
      c->tokens[(size_t)(s0 + b) * (size_t)T] = (int32_t)(pg_rng_u64(&r) % (uint64_t)V);
    for (int t = 1; !rc && t < T; t++) {
      /* rows of the prefix length t */
      for (int b = 0; b < B; b++)
        memcpy(ids + (size_t)b * (size_t)t, c->tokens + (size_t)(s0 + b) * (size_t)T,
               (size_t)t * sizeof *ids);
      pg_batch bt = {.B = B, .T = t, .ids = ids, .logits_last = logits};
      rc = pg_model_forward(m, tp, &bt, NULL, nll, NULL, err);
      for (int b = 0; !rc && b < B; b++)
        c->tokens[(size_t)(s0 + b) * (size_t)T + (size_t)t] =
            sample(logits + (size_t)b * (size_t)V, V, temperature, &r, p);
      if (!rc && progress &&
          progress(pctx, (uint64_t)s0 * (uint64_t)T + (uint64_t)B * (uint64_t)(t + 1), n))
        rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "self calibration cancelled");
    }
  }
  if (!rc) {
    c->nseq = nseq;
    c->T = T;
    c->xxh64 = pg_calib_tokens_xxh64(c->tokens, n);
    snprintf(c->source, sizeof c->source,
             "self-generated: %d x %d tokens, temperature %g, seed %llu, first token uniform",
             nseq, T, temperature, (unsigned long long)seed);
  } else {
    pg_calib_free(c);
  }
  pg_tape_free(tp);
  free(logits);
  free(p);
  free(nll);
  free(ids);
  return rc;
}

void pg_calib_hessians_free(pg_calib_hessians *h) {
  if (!h) return;
  for (size_t i = 0; i < h->nh; i++) pg_hessian_free(&h->H[i]);
  free(h->H);
  free(h->slot);
  memset(h, 0, sizeof *h);
}

typedef struct collect_ctx {
  pg_calib_hessians *h;
  int nthreads, rc;
  pg_err *err;
  float *buf;
  size_t buf_n;
} collect_ctx;

static void on_input(void *vctx, const long *tensors, int n, const pg_real *X, int rows,
                     int cols) {
  collect_ctx *c = vctx;
  pg_calib_hessians *h = c->h;
  if (c->rc || n < 1 || tensors[0] < 0 || (size_t)tensors[0] >= h->nt) return;
  long s = h->slot[tensors[0]];
  if (s < 0) {
    pg_hessian *nh = realloc(h->H, (h->nh + 1) * sizeof *nh);
    if (!nh) {
      c->rc = pg_err_set(c->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
      return;
    }
    h->H = nh;
    c->rc = pg_hessian_init(&h->H[h->nh], (uint32_t)cols, c->err);
    if (c->rc) return;
    s = (long)h->nh++;
    for (int k = 0; k < n; k++)
      if (tensors[k] >= 0 && (size_t)tensors[k] < h->nt) h->slot[tensors[k]] = s;
  }
  if (h->H[s].n != (uint32_t)cols) {
    c->rc = pg_err_set(c->err, PG_E_ARG, NULL, PG_NO_OFFSET,
                       "internal: input width %d of a tensor whose Hessian is %u wide", cols,
                       h->H[s].n);
    return;
  }
#ifdef PG_REAL_F64
  size_t need = (size_t)rows * (size_t)cols;
  if (c->buf_n < need) {
    float *nb = realloc(c->buf, need * sizeof *nb);
    if (!nb) {
      c->rc = pg_err_set(c->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
      return;
    }
    c->buf = nb;
    c->buf_n = need;
  }
  for (size_t i = 0; i < need; i++) c->buf[i] = (float)X[i];
  pg_hessian_add(&h->H[s], c->buf, (uint64_t)rows, c->nthreads);
#else
  pg_hessian_add(&h->H[s], X, (uint64_t)rows, c->nthreads);
#endif
}

int pg_calib_collect(pg_calib_hessians *out, pg_model *m, pg_engine *e, const pg_calib_set *c,
                     int batch, int nthreads,
                     int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
                     pg_err *err) {
  memset(out, 0, sizeof *out);
  if (batch < 1 || !c->tokens || c->nseq < 1 || c->T < 1)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "calibration: nothing to run");
  out->nt = pg_model_tensor_count(m);
  out->slot = malloc(out->nt * sizeof *out->slot);
  size_t T = (size_t)c->T;
  double *nll = malloc((size_t)batch * T * sizeof *nll);
  if (!out->slot || !nll) {
    free(nll);
    pg_calib_hessians_free(out);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  for (size_t i = 0; i < out->nt; i++) out->slot[i] = -1;
  pg_tape *tp = NULL;
  int rc = pg_tape_create(&tp, e, 0);
  if (rc) rc = pg_err_set(err, rc, NULL, PG_NO_OFFSET, "tape: out of memory");
  collect_ctx cc = {.h = out, .nthreads = nthreads, .err = err};
  pg_model_set_observer(m, on_input, &cc);
  uint64_t total = (uint64_t)c->nseq * T;
  for (int s0 = 0; !rc && s0 < c->nseq; s0 += batch) {
    int B = c->nseq - s0 < batch ? c->nseq - s0 : batch;
    pg_batch bt = {.B = B, .T = c->T, .ids = c->tokens + (size_t)s0 * T};
    rc = pg_model_forward(m, tp, &bt, NULL, nll, NULL, err);
    if (!rc) rc = cc.rc;
    if (!rc) out->tokens += (uint64_t)B * T;
    if (!rc && progress && progress(pctx, out->tokens, total))
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "calibration cancelled");
  }
  pg_model_set_observer(m, NULL, NULL);
  pg_tape_free(tp);
  free(nll);
  free(cc.buf);
  if (rc) pg_calib_hessians_free(out);
  return rc;
}
