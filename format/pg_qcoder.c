/* pg_qcoder.c: codec 4, static-table rANS over quantized values with magnitude contexts
 * (spec/format.md §12). The encoder tries a small grid of context parameters (and, format 2, a
 * prediction weight per context) and keeps the smallest stream; the decoder is one pass with two
 * interleaved rANS states. */
#include "pg_qcoder.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"

#define PB PG_QC_PROB_BITS
#define PM (1u << PB)
#define RANS_L (1u << 23)
#define EMA_ONE 256u               /* |v| = 1 in the running averages' fixed point */
#define EMA_MAX (128u * EMA_ONE)   /* |v| is at most 128 */
#define LUT_N (EMA_MAX / 16 + 1)   /* magnitudes are bucketed on avg >> 4, signed on avg >> 5 */
#define NCTX_MAX PG_QC_MAX_CONTEXTS
#define SGN_ZERO (128u * EMA_ONE) /* the signed average holds v + 128: this is v = 0 */
#define FAIL(...) pg_err_set(err, PG_E_DECOMPRESS, file, off, "qc: " __VA_ARGS__)

/* The three context averages: the stored row's magnitude, the magnitude at this position in the
 * previous stored rows, and a signed one (the row's or the position's average, or the previous
 * value of the stored row, per smode). With
 * pred, the coded symbol is the value minus the signed average, rounded (the residual), and the
 * magnitude averages follow the residuals. */
enum { AV_ROW = 0, AV_COL = 1, AV_SGN = 2, NAV = 3 };
enum { SGN_NONE = 0, SGN_ROW = 1, SGN_COL = 2, SGN_PREV = 3 };

typedef struct qc_params {
  unsigned nb[NAV]; /* buckets per average; the context is (b0 * nb1 + b1) * nb2 + b2 */
  unsigned rs, cs, smode, pred, init;
  unsigned fmt;     /* 1, or 2: pred with a weight per context (w[c] sixteenths of S') */
  uint16_t edge[NAV][PG_QC_MAX_BUCKETS - 1];
  uint8_t w[PG_QC_MAX_CONTEXTS];
} qc_params;

#define WMAX 16u /* a weight of 16 predicts S' itself, 0 predicts v = 0 */

/* The weighted prediction of format 2 (spec/format.md §12.1): round(w/16 of the signed average
 * S' taken about v = 0), as a symbol; w = 16 gives the format 1 prediction (S' + 128) >> 8. */
static inline unsigned wpred(uint32_t sg, unsigned w) {
  return (w * sg + (WMAX - w) * SGN_ZERO + 2048) >> 12;
}

/* Table code c (1..255) → weight: c below 16, then 4 bits of mantissa per octave, so one step is
 * at most 1/16 of the weight; 0 means the symbol is absent. */
static uint32_t code_weight(unsigned c) {
  return c < 16 ? c : (16u + (c - 16) % 16) << ((c - 16) / 16);
}

/* |v| of the value whose symbol is s (s = byte ^ 0x80, so s - 128 is the signed value). */
static inline uint32_t sym_abs(unsigned s) { return s >= 128 ? s - 128 : 128 - s; }

static inline uint32_t ema_step(uint32_t e, uint32_t a, unsigned shift) {
  return (e * ((1u << shift) - 1) + a * EMA_ONE) >> shift;
}

/* lut[x] = number of edges at or below x, times mul (the bucket's stride in the context). */
static void bucket_lut(uint8_t *lut, const uint16_t *edge, unsigned nb, unsigned mul) {
  for (unsigned x = 0; x < LUT_N; x++) {
    unsigned b = 0;
    while (b + 1 < nb && x >= edge[b]) b++;
    lut[x] = (uint8_t)(b * mul);
  }
}

/* Codes (0 absent) → frequencies adding up to 2^PB; 0 when every code is 0. The rounding and the
 * correction are part of the format: floor(w·2^PB/W) with a floor of 1, then the difference goes
 * to (or comes from) the largest frequency, the first of equals, never below 1. */
static int normalize(const uint8_t *codes, uint32_t *freq) {
  uint64_t W = 0;
  for (unsigned s = 0; s < 256; s++) W += code_weight(codes[s]);
  if (!W) return 0;
  uint32_t sum = 0;
  for (unsigned s = 0; s < 256; s++) {
    uint64_t f = codes[s] ? (uint64_t)code_weight(codes[s]) * PM / W : 0;
    if (codes[s] && !f) f = 1;
    freq[s] = (uint32_t)f;
    sum += (uint32_t)f;
  }
  while (sum != PM) { /* at most 256 rounds: each ends the loop or brings one symbol to 1 */
    unsigned big = 0;
    for (unsigned s = 1; s < 256; s++)
      if (freq[s] > freq[big]) big = s;
    if (sum < PM) {
      freq[big] += PM - sum;
      sum = PM;
    } else {
      uint32_t d = sum - PM, can = freq[big] - 1, t = d < can ? d : can;
      freq[big] -= t;
      sum -= t;
    }
  }
  return 1;
}

static size_t varint_len(uint64_t v) {
  size_t k = 1;
  while (v >= 0x80) v >>= 7, k++;
  return k;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) *p++ = (uint8_t)(v | 0x80), v >>= 7;
  *p++ = (uint8_t)v;
  return p;
}

/* A canonical LEB128 u64 (no superfluous high zero groups): 0 when truncated or malformed. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t r = 0;
  for (unsigned k = 0; k < 10; k++) {
    if (*p == end) return 0;
    uint8_t b = *(*p)++;
    if (k == 9 && b > 1) return 0;
    r |= (uint64_t)(b & 0x7f) << (7 * k);
    if (!(b & 0x80)) {
      if (k && !b) return 0;
      *v = r;
      return 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder */

typedef struct qc_enc {
  const uint8_t *raw;
  size_t n;
  pg_qc_seg *segs;
  size_t nseg;
  uint64_t maxrow;
  uint16_t *av[NAV];        /* per value: each average before it, as bucketed (>> 4 or >> 5) */
  uint8_t *sym;             /* per value: the coded symbol (the residual with pred) */
  uint16_t *sg;             /* per value: the signed average S' (for format 2's weights) */
  uint16_t *colm, *cols;    /* a position's running averages within a segment */
  uint64_t hist[NAV][LUT_N]; /* of av[k], for the quantile edges */
  uint32_t *cnt;            /* NCTX_MAX x 256 */
  uint32_t *wcnt;           /* NCTX_MAX x (WMAX + 1) x 256: residual counts per weight */
  double scale;             /* payload bits per sampled bit: n / the values searched on */
  unsigned maxfmt;          /* the newest stream format the search may choose */
  double lg[PM + 1];
} qc_enc;

/* The search runs on at most this many values: a prefix of rows of every segment. */
#define QC_SAMPLE (1u << 18)

static int enc_alloc(qc_enc *e) {
  const size_t n = e->n ? e->n : 1, m = e->maxrow ? (size_t)e->maxrow : 1;
  for (int k = 0; k < NAV; k++) e->av[k] = malloc(n * sizeof *e->av[k]);
  e->colm = malloc(m * sizeof *e->colm);
  e->cols = malloc(m * sizeof *e->cols);
  e->sym = malloc(n);
  e->sg = malloc(n * sizeof *e->sg);
  e->cnt = malloc((size_t)NCTX_MAX * 256 * sizeof *e->cnt);
  e->wcnt = malloc((size_t)NCTX_MAX * (WMAX + 1) * 256 * sizeof *e->wcnt);
  e->lg[0] = 0;
  for (unsigned f = 1; f <= PM; f++) e->lg[f] = log2((double)f);
  return e->av[0] && e->av[1] && e->av[2] && e->colm && e->cols && e->sym && e->sg &&
         e->cnt && e->wcnt;
}

static void enc_free(qc_enc *e) {
  for (int k = 0; k < NAV; k++) free(e->av[k]);
  free(e->colm);
  free(e->cols);
  free(e->sym);
  free(e->sg);
  free(e->cnt);
  free(e->wcnt);
  free(e->segs);
}

/* The running averages before each value, and the coded symbols, for these parameters. */
static void enc_averages(qc_enc *e, const qc_params *q) {
  const unsigned rs = q->rs, cs = q->cs, smode = q->smode, init = q->init;
  size_t i = 0;
  for (size_t g = 0; g < e->nseg; g++) {
    const uint64_t L = e->segs[g].row;
    for (uint64_t j = 0; j < L; j++) e->colm[j] = (uint16_t)init, e->cols[j] = SGN_ZERO;
    /* the row averages lag one value (those before the previous value), so that decoding one
     * value does not wait for the previous one */
    uint32_t rm = init, rsg = SGN_ZERO, rm1 = init, rsg1 = SGN_ZERO, sp = SGN_ZERO;
    uint64_t j = 0;
    for (uint64_t k = 0; k < e->segs[g].len; k++, i++) {
      const unsigned s = e->raw[i] ^ 0x80u;
      const uint32_t sg = smode == SGN_ROW   ? rsg1
                          : smode == SGN_COL ? e->cols[j]
                          : smode == SGN_PREV ? sp : 0;
      const unsigned t = q->pred ? (s - ((sg + 128) >> 8) + 128) & 0xffu : s;
      const uint32_t a = sym_abs(t);
      e->sym[i] = (uint8_t)t;
      e->av[AV_ROW][i] = (uint16_t)(rm1 >> 4);
      e->av[AV_COL][i] = (uint16_t)(e->colm[j] >> 4);
      e->av[AV_SGN][i] = (uint16_t)(sg >> 5);
      e->sg[i] = (uint16_t)sg;
      rm1 = rm;
      rsg1 = rsg;
      rm = ema_step(rm, a, rs);
      rsg = ema_step(rsg, s, rs);
      e->colm[j] = (uint16_t)ema_step(e->colm[j], a, cs);
      e->cols[j] = (uint16_t)ema_step(e->cols[j], s, cs);
      sp = s << 8;
      if (++j == L) j = 0, rm = rm1 = init, rsg = rsg1 = sp = SGN_ZERO;
    }
  }
  memset(e->hist, 0, sizeof e->hist);
  for (int k = 0; k < NAV; k++)
    for (size_t t = 0; t < e->n; t++) e->hist[k][e->av[k][t]]++;
}

/* Edges at the quantiles of a histogram (equal-count buckets; equal edges leave a bucket empty,
 * which costs one byte per context). */
static void quantile_edges(const uint64_t *h, uint64_t n, unsigned nb, uint16_t *edge) {
  uint64_t cum = 0;
  unsigned v = 0;
  for (unsigned k = 1; k < nb; k++) {
    uint64_t want = n * k / nb;
    while (v < LUT_N && cum + h[v] <= want) cum += h[v++];
    edge[k - 1] = (uint16_t)(v < LUT_N - 1 ? v + 1 : LUT_N - 1);
  }
}

/* The code of a count c against the context's largest count cmax: the weight nearest in ratio. */
static uint8_t count_code(uint32_t c, uint32_t cmax) {
  if (!c) return 0;
  double t = (double)c / cmax * code_weight(255);
  unsigned lo = 1, hi = 255;
  while (lo < hi) { /* smallest code whose weight reaches t */
    unsigned mid = (lo + hi) / 2;
    if (code_weight(mid) >= t) hi = mid;
    else lo = mid + 1;
  }
  if (lo > 1 && t * t < (double)code_weight(lo) * code_weight(lo - 1)) lo--;
  return (uint8_t)lo;
}

/* The serialized size of one context's table (a length, then lo and the codes lo..hi). */
static size_t table_bytes(const uint8_t *codes) {
  int lo = -1, hi = -1;
  for (unsigned s = 0; s < 256; s++)
    if (codes[s]) {
      if (lo < 0) lo = (int)s;
      hi = (int)s;
    }
  return lo < 0 ? 1 : varint_len((uint64_t)(hi - lo + 1)) + 1 + (size_t)(hi - lo + 1);
}

/* Codes of every context from the counts; returns the table bytes, adds the payload bits. */
static size_t enc_tables(qc_enc *e, unsigned nctx, uint8_t (*codes)[256], double *bits) {
  size_t bytes = 0;
  for (unsigned c = 0; c < nctx; c++) {
    const uint32_t *h = e->cnt + (size_t)c * 256;
    uint32_t mx = 0;
    int lo = -1, hi = -1;
    for (unsigned s = 0; s < 256; s++)
      if (h[s]) {
        if (lo < 0) lo = (int)s;
        hi = (int)s;
        if (h[s] > mx) mx = h[s];
      }
    memset(codes[c], 0, 256);
    if (lo < 0) {
      bytes += 1;
      continue;
    }
    for (int s = lo; s <= hi; s++) codes[c][s] = count_code(h[s], mx);
    bytes += varint_len((uint64_t)(hi - lo + 1)) + 1 + (size_t)(hi - lo + 1);
    uint32_t f[256];
    normalize(codes[c], f);
    for (int s = lo; s <= hi; s++)
      if (h[s]) *bits += h[s] * (PB - e->lg[f[s]]);
  }
  return bytes;
}

static void luts(const qc_params *q, uint8_t lut[NAV][LUT_N]) {
  bucket_lut(lut[AV_ROW], q->edge[AV_ROW], q->nb[AV_ROW], q->nb[AV_COL] * q->nb[AV_SGN]);
  bucket_lut(lut[AV_COL], q->edge[AV_COL], q->nb[AV_COL], q->nb[AV_SGN]);
  bucket_lut(lut[AV_SGN], q->edge[AV_SGN], q->nb[AV_SGN], 1);
}

static size_t header_bytes(const qc_enc *e, const qc_params *q) {
  size_t b = 9 + 2 * (q->nb[0] + q->nb[1] + q->nb[2] - 3) + varint_len(e->nseg) + 8;
  for (size_t g = 0; g < e->nseg; g++)
    b += varint_len(e->segs[g].len) + varint_len(e->segs[g].row);
  return b;
}

/* Estimated size of the stream with these parameters (edges chosen here). */
static double enc_try(qc_enc *e, qc_params *q, uint8_t (*codes)[256]) {
  for (int k = 0; k < NAV; k++) quantile_edges(e->hist[k], e->n, q->nb[k], q->edge[k]);
  uint8_t lut[NAV][LUT_N];
  luts(q, lut);
  const unsigned nctx = q->nb[0] * q->nb[1] * q->nb[2];
  memset(e->cnt, 0, (size_t)nctx * 256 * sizeof *e->cnt);
  const uint16_t *a0 = e->av[0], *a1 = e->av[1], *a2 = e->av[2];
  for (size_t i = 0; i < e->n; i++)
    e->cnt[(size_t)(lut[0][a0[i]] + lut[1][a1[i]] + lut[2][a2[i]]) * 256 + e->sym[i]]++;
  double bits = 0;
  size_t tb = enc_tables(e, nctx, codes, &bits);
  return (double)(header_bytes(e, q) + tb) + bits * e->scale / 8;
}

/* Format 2 on q (pred; its edges are set here, from e's current averages): each context's weight
 * is the one whose residuals have the least entropy plus table span; e->sym becomes those
 * residuals. Returns the estimated stream size, weights included. */
static double enc_try_w(qc_enc *e, qc_params *q, uint8_t (*codes)[256]) {
  /* the edges enc_try will set and the stream will carry: after a sampled search, q's are the
   * sample's, and residuals formed with the weights of other contexts would not decode */
  for (int k = 0; k < NAV; k++) quantile_edges(e->hist[k], e->n, q->nb[k], q->edge[k]);
  uint8_t lut[NAV][LUT_N];
  luts(q, lut);
  const unsigned nctx = q->nb[0] * q->nb[1] * q->nb[2];
  uint32_t *wc = e->wcnt;
  memset(wc, 0, (size_t)nctx * (WMAX + 1) * 256 * sizeof *wc);
  const uint16_t *a0 = e->av[0], *a1 = e->av[1], *a2 = e->av[2];
  for (size_t i = 0; i < e->n; i++) {
    const unsigned c = lut[0][a0[i]] + lut[1][a1[i]] + lut[2][a2[i]], s = e->raw[i] ^ 0x80u;
    uint32_t *h = wc + (size_t)c * (WMAX + 1) * 256;
    for (unsigned w = 0; w <= WMAX; w++) h[w * 256 + ((s - wpred(e->sg[i], w) + 128) & 0xffu)]++;
  }
  for (unsigned c = 0; c < nctx; c++) {
    double best = INFINITY;
    q->w[c] = WMAX;
    for (unsigned w = 0; w <= WMAX; w++) {
      const uint32_t *h = wc + ((size_t)c * (WMAX + 1) + w) * 256;
      double tot = 0, ent = 0;
      int lo = -1, hi = -1;
      for (unsigned t = 0; t < 256; t++)
        if (h[t]) {
          if (lo < 0) lo = (int)t;
          hi = (int)t;
          tot += h[t];
          ent -= h[t] <= PM ? h[t] * e->lg[h[t]] : h[t] * log2((double)h[t]);
        }
      if (lo < 0) break; /* an empty context: any weight */
      const double cost = (ent + tot * log2(tot)) / 8 + (hi - lo);
      if (cost < best) best = cost, q->w[c] = (uint8_t)w;
    }
  }
  for (size_t i = 0; i < e->n; i++) {
    const unsigned c = lut[0][a0[i]] + lut[1][a1[i]] + lut[2][a2[i]], s = e->raw[i] ^ 0x80u;
    e->sym[i] = (uint8_t)(s - wpred(e->sg[i], q->w[c]) + 128);
  }
  return enc_try(e, q, codes) + nctx;
}

/* The search: for each pair of shifts and signed mode, a coordinate descent on the bucket counts
 * from one context; the smallest estimate wins, ties keep the first. Small inputs, where a table
 * costs more than a context can save, try one pair of shifts and at most n/256 contexts. */
static const unsigned SHIFTS_R[] = {4, 6};
static const unsigned SHIFTS_C[] = {3, 5};
static const unsigned BUCKETS[] = {1, 2, 3, 4, 6, 8};
#define NEL(a) (sizeof a / sizeof a[0])

static void enc_search(qc_enc *e, unsigned init, qc_params *best, uint8_t (*codes)[256]) {
  double best_size = INFINITY;
  const size_t npair = e->n < 16384 ? 1 : NEL(SHIFTS_R);
  const size_t cap = e->n / 256;
  const unsigned maxctx = cap < 1 ? 1 : cap > NCTX_MAX ? NCTX_MAX : (unsigned)cap;
  for (size_t a = 0; a < npair; a++)
    for (size_t b = 0; b < npair && b < NEL(SHIFTS_C); b++)
      for (unsigned mode = 0; mode < (e->maxfmt >= 2 ? 10u : 7u); mode++) {
        /* none; row, position, previous; predicting; predicting with weights (format 2) */
        const unsigned sm = mode < 4 ? mode : mode < 7 ? mode - 3 : mode - 6, pred = mode >= 4;
        qc_params q = {.nb = {1, 1, 1}, .rs = SHIFTS_R[a], .cs = SHIFTS_C[b], .smode = sm,
                       .pred = pred, .init = init, .fmt = mode < 7 ? 1 : 2};
        enc_averages(e, &q);
        double cur = q.fmt == 2 ? enc_try_w(e, &q, codes) : enc_try(e, &q, codes);
        for (int round = 0, changed = 1; changed && round < 4; round++) {
          changed = 0;
          for (int d = 0; d < NAV; d++) {
            if (d == AV_SGN && sm == SGN_NONE) continue;
            for (size_t o = 0; o < NEL(BUCKETS); o++) {
              qc_params t = q;
              t.nb[d] = BUCKETS[o];
              if (t.nb[d] == q.nb[d] || t.nb[0] * t.nb[1] * t.nb[2] > maxctx) continue;
              double sz = q.fmt == 2 ? enc_try_w(e, &t, codes) : enc_try(e, &t, codes);
              if (sz < cur) cur = sz, q = t, changed = 1;
            }
          }
        }
        if (sm != SGN_NONE && !pred && q.nb[AV_SGN] == 1) continue; /* as no signed average */
        if (cur < best_size) {
          best_size = cur;
          *best = q;
        }
      }
}

/* The averages, edges and codes of parameters q on all of e's values. */
static void enc_finish(qc_enc *e, qc_params *q, uint8_t (*codes)[256]) {
  enc_averages(e, q);
  if (q->fmt == 2)
    enc_try_w(e, q, codes); /* the weights again, on all the values */
  else
    enc_try(e, q, codes);
}

/* Search on a sample of e (the first rows of each segment, QC_SAMPLE values in all) when e is
 * larger; 0 when the sample cannot be allocated. */
static int enc_search_sampled(const qc_enc *e, unsigned init, qc_params *best,
                              uint8_t (*codes)[256]) {
  qc_enc *sm = calloc(1, sizeof *sm);
  uint8_t *buf = malloc(QC_SAMPLE + (size_t)e->maxrow);
  if (sm) sm->segs = malloc((e->nseg ? e->nseg : 1) * sizeof *sm->segs);
  int ok = sm && buf && sm->segs;
  size_t at = 0, used = 0;
  for (size_t g = 0; ok && g < e->nseg; g++) {
    const pg_qc_seg *sg = &e->segs[g];
    /* this segment's share of the sample, in whole rows (at least one) */
    uint64_t want = (uint64_t)((double)sg->len * QC_SAMPLE / (double)e->n) + 1;
    uint64_t take = (want + sg->row - 1) / sg->row * sg->row;
    if (take > sg->len) take = sg->len;
    if (used + take > QC_SAMPLE + (size_t)e->maxrow) take = 0;
    if (take) {
      memcpy(buf + used, e->raw + at, (size_t)take);
      sm->segs[sm->nseg++] = (pg_qc_seg){take, sg->row};
      if (sg->row > sm->maxrow) sm->maxrow = sg->row;
      used += (size_t)take;
    }
    at += (size_t)sg->len;
  }
  if (ok) {
    sm->raw = buf;
    sm->n = used;
    sm->scale = (double)e->n / (double)(used ? used : 1);
    sm->maxfmt = e->maxfmt;
    ok = enc_alloc(sm);
  }
  if (ok) enc_search(sm, init, best, codes);
  if (sm) enc_free(sm);
  free(sm);
  free(buf);
  return ok;
}

static inline void rans_put(uint32_t *x, uint8_t **p, uint32_t start, uint32_t freq) {
  uint32_t xmax = ((RANS_L >> PB) << 8) * freq;
  while (*x >= xmax) {
    *--*p = (uint8_t)*x;
    *x >>= 8;
  }
  *x = ((*x / freq) << PB) + (*x % freq) + start;
}

int pg_qc_encode(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t nsegs, uint8_t **out,
                 size_t *out_len, pg_err *err) {
  return pg_qc_encode_max(raw, n, segs, nsegs, PG_QC_FORMAT_W, out, out_len, err);
}

int pg_qc_encode_max(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t nsegs,
                     unsigned max_format, uint8_t **out, size_t *out_len, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  if (max_format < PG_QC_FORMAT || max_format > PG_QC_FORMAT_W)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "qc: no stream format %u", max_format);
  qc_enc *e = calloc(1, sizeof *e);
  if (!e) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "qc: cannot allocate");
  e->maxfmt = max_format;
  e->raw = raw;
  e->n = n;
  /* the segments: the hint without empty ones, rows cut to their segment */
  uint64_t total = 0;
  size_t ns = 0;
  e->segs = malloc((segs && nsegs ? nsegs : 1) * sizeof *e->segs);
  int rc = PG_OK;
  if (!e->segs) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "qc: cannot allocate");
  if (!rc && !segs && n) e->segs[ns++] = (pg_qc_seg){n, 1};
  for (size_t g = 0; !rc && segs && g < nsegs; g++) {
    if (!segs[g].len) continue;
    if (segs[g].len > n - total) {
      rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "qc: segments add up to more than the %zu bytes", n);
      break;
    }
    uint64_t row = segs[g].row < 1 ? 1 : segs[g].row > segs[g].len ? segs[g].len : segs[g].row;
    e->segs[ns++] = (pg_qc_seg){segs[g].len, row};
    total += segs[g].len;
  }
  if (!rc && segs && total != n)
    rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                    "qc: segments add up to %llu bytes, not %zu", (unsigned long long)total, n);
  e->nseg = ns;
  for (size_t g = 0; g < ns; g++)
    if (e->segs[g].row > e->maxrow) e->maxrow = e->segs[g].row;
  uint8_t(*codes)[256] = NULL, (*best_codes)[256] = NULL;
  uint8_t *buf = NULL;
  e->scale = 1;
  if (!rc) {
    codes = malloc(NCTX_MAX * sizeof *codes);
    best_codes = malloc(NCTX_MAX * sizeof *best_codes);
    buf = malloc(2 * n + 16);
    if (!enc_alloc(e) || !codes || !best_codes || !buf)
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "qc: cannot allocate");
  }
  qc_params q;
  if (!rc) {
    uint64_t sa = 0;
    for (size_t i = 0; i < n; i++) sa += sym_abs(raw[i] ^ 0x80u);
    unsigned init = n ? (unsigned)((sa * EMA_ONE + n / 2) / n) : EMA_ONE;
    if (n <= QC_SAMPLE)
      enc_search(e, init, &q, codes);
    else if (!enc_search_sampled(e, init, &q, codes))
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "qc: cannot allocate");
  }
  if (!rc) {
    enc_finish(e, &q, best_codes);
    /* the values coded backwards with the chosen parameters (enc_search left their averages) */
    const unsigned nctx = q.nb[0] * q.nb[1] * q.nb[2];
    uint8_t lut[NAV][LUT_N];
    luts(&q, lut);
    uint32_t(*fs)[256] = (uint32_t(*)[256])e->cnt; /* freq << 16 | start, over the counts */
    for (unsigned c = 0; c < nctx; c++) {
      uint32_t f[256];
      if (!normalize(best_codes[c], f)) memset(f, 0, sizeof f);
      uint32_t st = 0;
      for (unsigned s = 0; s < 256; s++) {
        fs[c][s] = f[s] << 16 | st;
        st += f[s];
      }
    }
    uint8_t *end = buf + 2 * n + 16, *p = end;
    uint32_t x[2] = {RANS_L, RANS_L};
    for (size_t i = n; i-- > 0;) {
      const unsigned c = lut[0][e->av[0][i]] + lut[1][e->av[1][i]] + lut[2][e->av[2][i]];
      const uint32_t v = fs[c][e->sym[i]];
      rans_put(&x[i & 1], &p, v & 0xffff, v >> 16);
    }
    const size_t payload = (size_t)(end - p);
    size_t tb = 0;
    for (unsigned c = 0; c < nctx; c++) tb += table_bytes(best_codes[c]);
    const size_t total_len = header_bytes(e, &q) + tb + (q.fmt == 2 ? nctx : 0) + payload;
    uint8_t *o = malloc(total_len);
    if (!o) {
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "qc: cannot allocate");
    } else {
      uint8_t *w = o;
      *w++ = (uint8_t)q.fmt;
      for (int k = 0; k < NAV; k++) *w++ = (uint8_t)q.nb[k];
      *w++ = (uint8_t)q.rs;
      *w++ = (uint8_t)q.cs;
      *w++ = (uint8_t)(q.smode | q.pred << 2);
      pg_st16(w, (uint16_t)q.init);
      w += 2;
      for (int k = 0; k < NAV; k++)
        for (unsigned b = 0; b + 1 < q.nb[k]; b++, w += 2) pg_st16(w, q.edge[k][b]);
      w = put_varint(w, e->nseg);
      for (size_t g = 0; g < e->nseg; g++) {
        w = put_varint(w, e->segs[g].len);
        w = put_varint(w, e->segs[g].row);
      }
      for (unsigned c = 0; c < nctx; c++) {
        int lo = -1, hi = -1;
        for (unsigned s = 0; s < 256; s++)
          if (best_codes[c][s]) {
            if (lo < 0) lo = (int)s;
            hi = (int)s;
          }
        if (lo < 0) {
          *w++ = 0;
          continue;
        }
        w = put_varint(w, (uint64_t)(hi - lo + 1));
        *w++ = (uint8_t)lo;
        for (int s = lo; s <= hi; s++) *w++ = best_codes[c][s];
      }
      if (q.fmt == 2) {
        memcpy(w, q.w, nctx);
        w += nctx;
      }
      pg_st32(w, x[0]);
      pg_st32(w + 4, x[1]);
      w += 8;
      if (payload) memcpy(w, p, payload);
      *out = o;
      *out_len = total_len;
    }
  }
  free(buf);
  free(codes);
  free(best_codes);
  enc_free(e);
  free(e);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoder */

typedef struct qc_dec {
  const uint8_t *sym;  /* per context, the symbol of each of the PM slots */
  const uint32_t *fs;  /* per context and symbol: (frequency - 1) | start << 12 */
  const uint8_t *valid, *w;
  uint8_t lut[NAV][LUT_N];
  uint16_t *colm, *cols;
  const uint8_t *p, *end;
  uint32_t x[2];
  unsigned rs, cs, init;
} qc_dec;

/* One segment; smode, pred and wfmt (format 2) are constants at each call, so each mode gets its
 * own loop.
 * Returns the index of the value where the stream failed, or len when the segment decoded. */
static inline __attribute__((always_inline)) uint64_t
dec_seg(qc_dec *d, uint8_t *out, uint64_t len, uint64_t row, size_t base, const unsigned smode,
        const unsigned pred, const unsigned wfmt) {
  /* locals, restrict: the stores to out (bytes) must not make the compiler reload the rest */
  uint16_t *restrict colm = d->colm, *restrict cols = d->cols;
  const uint8_t *restrict lr = d->lut[AV_ROW], *restrict lc = d->lut[AV_COL];
  const uint8_t *restrict ls = d->lut[AV_SGN], *restrict valid = d->valid, *restrict wt = d->w;
  const uint8_t *restrict sym = d->sym;
  const uint32_t *restrict fs = d->fs;
  uint8_t *restrict o = out;
  const unsigned rs = d->rs, cs = d->cs;
  const uint32_t init = d->init;
  for (uint64_t j = 0; j < row; j++) colm[j] = (uint16_t)init, cols[j] = SGN_ZERO;
  uint32_t rm = init, rsg = SGN_ZERO, rm1 = init, rsg1 = SGN_ZERO, sp = SGN_ZERO;
  /* xa codes the next value, xb the one after: the two interleaved states trade places at every
   * value, which keeps the state's choice out of the loop's dependency chain */
  const unsigned par = (unsigned)(base & 1);
  uint32_t xa = d->x[par], xb = d->x[par ^ 1];
  const uint8_t *p = d->p, *const end = d->end;
  uint64_t j = 0, k = 0;
  for (; k < len; k++) {
    const uint32_t sg = smode == SGN_ROW   ? rsg1
                        : smode == SGN_COL ? cols[j]
                        : smode == SGN_PREV ? sp : 0;
    const unsigned c = lr[rm1 >> 4] + lc[colm[j] >> 4] + ls[sg >> 5];
    if (!valid[c]) break;
    uint32_t xs = xa;
    const uint32_t slot = xs & (PM - 1), t = sym[(size_t)c * PM + slot];
    const uint32_t e = fs[(size_t)c * 256 + t];
    xs = ((e & 0xfff) + 1) * (xs >> PB) + slot - (e >> 12);
    while (xs < RANS_L && p < end) xs = xs << 8 | *p++;
    if (xs < RANS_L) break;
    xa = xb;
    xb = xs;
    const unsigned p16 = (sg + 128) >> 8, pw = wfmt ? wpred(sg, wt[c]) : p16;
    const unsigned s = pred ? (t + pw + 128) & 0xffu : t;
    o[k] = (uint8_t)(s ^ 0x80u);
    /* format 2: the averages follow the residual against the unweighted prediction */
    const uint32_t a = sym_abs(wfmt ? (s - p16 + 128) & 0xffu : t);
    rm1 = rm;
    rm = ema_step(rm, a, rs);
    colm[j] = (uint16_t)ema_step(colm[j], a, cs);
    if (smode == SGN_ROW) rsg1 = rsg, rsg = ema_step(rsg, s, rs);
    if (smode == SGN_COL) cols[j] = (uint16_t)ema_step(cols[j], s, cs);
    if (smode == SGN_PREV) sp = s << 8;
    if (++j == row) j = 0, rm = rm1 = init, rsg = rsg1 = sp = SGN_ZERO;
  }
  /* after k values xa belongs to the parity of base + k */
  const unsigned pk = (unsigned)((base + k) & 1);
  d->x[pk] = xa;
  d->x[pk ^ 1] = xb;
  d->p = p;
  return k;
}

int pg_qc_decode(const uint8_t *in, size_t n, uint8_t *out, size_t raw_len, const char *file,
                 uint64_t off, pg_err *err) {
  const uint8_t *p = in, *end = in + n;
  PG_FAIL_IF(n < 9, err, PG_E_DECOMPRESS, file, off, "qc: stream of %zu bytes is truncated", n);
  PG_FAIL_IF(p[0] != PG_QC_FORMAT && p[0] != PG_QC_FORMAT_W, err, PG_E_DECOMPRESS, file, off,
             "qc: unknown format %u", p[0]);
  qc_params q = {.nb = {p[1], p[2], p[3]}, .rs = p[4], .cs = p[5], .smode = p[6] & 3u,
                 .pred = p[6] >> 2, .init = pg_ld16(p + 7), .fmt = p[0]};
  const unsigned mode_byte = p[6]; /* for the message below, read before p moves on */
  p += 9;
  for (int k = 0; k < NAV; k++)
    PG_FAIL_IF(q.nb[k] < 1 || q.nb[k] > PG_QC_MAX_BUCKETS, err, PG_E_DECOMPRESS, file, off,
               "qc: %u buckets (1..%d)", q.nb[k], PG_QC_MAX_BUCKETS);
  const unsigned nctx = q.nb[0] * q.nb[1] * q.nb[2];
  PG_FAIL_IF(nctx > NCTX_MAX, err, PG_E_DECOMPRESS, file, off, "qc: %u contexts (at most %d)",
             nctx, NCTX_MAX);
  PG_FAIL_IF(q.rs < 1 || q.rs > 8 || q.cs < 1 || q.cs > 8, err, PG_E_DECOMPRESS, file, off,
             "qc: average shifts %u, %u outside 1..8", q.rs, q.cs);
  PG_FAIL_IF(q.smode > SGN_PREV || q.pred > 1 || (q.smode == SGN_NONE && (q.pred ||
             q.nb[AV_SGN] != 1)) || (q.fmt == PG_QC_FORMAT_W && !q.pred), err, PG_E_DECOMPRESS,
             file, off, "qc: signed mode %u with %u buckets (format %u)", mode_byte,
             q.nb[AV_SGN], q.fmt);
  PG_FAIL_IF(q.init > EMA_MAX, err, PG_E_DECOMPRESS, file, off,
             "qc: initial average %u above %u", q.init, EMA_MAX);
  const size_t nedge = q.nb[0] + q.nb[1] + q.nb[2] - 3;
  PG_FAIL_IF((size_t)(end - p) < 2 * nedge, err, PG_E_DECOMPRESS, file, off,
             "qc: stream ends in the bucket edges");
  for (int k = 0; k < NAV; k++)
    for (unsigned b = 0; b + 1 < q.nb[k]; b++, p += 2) {
      q.edge[k][b] = pg_ld16(p);
      PG_FAIL_IF(q.edge[k][b] >= LUT_N || (b && q.edge[k][b] < q.edge[k][b - 1]), err,
                 PG_E_DECOMPRESS, file, off, "qc: bucket edge %u of average %d (%u) out of "
                 "order or above %u", b, k, q.edge[k][b], LUT_N - 1);
    }
  uint64_t nseg;
  PG_FAIL_IF(!get_varint(&p, end, &nseg), err, PG_E_DECOMPRESS, file, off,
             "qc: bad segment count");
  PG_FAIL_IF(nseg > raw_len || nseg > (uint64_t)(end - p) / 2, err, PG_E_DECOMPRESS, file, off,
             "qc: %llu segments for %zu bytes", (unsigned long long)nseg, raw_len);
  const uint8_t *segp = p;
  uint64_t total = 0, maxrow = 0;
  for (uint64_t g = 0; g < nseg; g++) {
    uint64_t len, row;
    PG_FAIL_IF(!get_varint(&p, end, &len) || !get_varint(&p, end, &row), err, PG_E_DECOMPRESS,
               file, off, "qc: segment %llu is truncated or malformed", (unsigned long long)g);
    PG_FAIL_IF(len < 1 || len > raw_len - total || row < 1 || row > len, err, PG_E_DECOMPRESS,
               file, off, "qc: segment %llu (%llu bytes, rows of %llu) does not fit %zu bytes",
               (unsigned long long)g, (unsigned long long)len, (unsigned long long)row, raw_len);
    total += len;
    if (row > maxrow) maxrow = row;
  }
  PG_FAIL_IF(total != raw_len, err, PG_E_DECOMPRESS, file, off,
             "qc: segments hold %llu bytes, section declares %zu", (unsigned long long)total,
             raw_len);
  qc_dec d = {0};
  uint8_t *tab = malloc((size_t)nctx * PM);
  uint32_t *fsv = calloc((size_t)nctx * 256, sizeof *fsv);
  d.colm = malloc((maxrow ? maxrow : 1) * sizeof *d.colm);
  d.cols = malloc((maxrow ? maxrow : 1) * sizeof *d.cols);
  uint8_t valid[NCTX_MAX] = {0};
  int rc = PG_OK;
  if (!tab || !fsv || !d.colm || !d.cols)
    rc = pg_err_set(err, PG_E_NOMEM, file, off, "qc: cannot allocate");
  for (unsigned c = 0; !rc && c < nctx; c++) {
    uint64_t k;
    if (!get_varint(&p, end, &k) || k > 256) {
      rc = FAIL("context %u: bad table length", c);
      break;
    }
    if (!k) continue;
    if ((size_t)(end - p) < 1 + k || p[0] + k > 256 || !p[1] || !p[k]) {
      rc = FAIL("context %u: table truncated, past symbol 255, or not trimmed", c);
      break;
    }
    uint8_t codes[256] = {0};
    const unsigned lo = p[0];
    memcpy(codes + lo, p + 1, (size_t)k);
    p += 1 + k;
    uint32_t f[256];
    normalize(codes, f);
    uint8_t *t = tab + (size_t)c * PM;
    uint32_t st = 0;
    for (unsigned s = lo; s < lo + k; s++) {
      if (f[s]) memset(t + st, (int)s, f[s]), fsv[(size_t)c * 256 + s] = (f[s] - 1) | st << 12;
      st += f[s];
    }
    valid[c] = 1;
  }
  if (!rc && q.fmt == PG_QC_FORMAT_W) { /* a weight per context, each 0..=16 */
    if ((size_t)(end - p) < nctx) {
      rc = FAIL("stream ends in the context weights");
    } else {
      for (unsigned c = 0; !rc && c < nctx; c++)
        if (p[c] > WMAX) rc = FAIL("context %u: weight %u above %u", c, p[c], WMAX);
      memcpy(q.w, p, nctx);
      p += nctx;
    }
  }
  if (!rc && (size_t)(end - p) < 8) rc = FAIL("stream ends before the coder states");
  if (!rc) {
    d.x[0] = pg_ld32(p);
    d.x[1] = pg_ld32(p + 4);
    p += 8;
    if (d.x[0] < RANS_L || d.x[1] < RANS_L || d.x[0] >= RANS_L << 8 || d.x[1] >= RANS_L << 8)
      rc = FAIL("coder states %u, %u outside [2^23, 2^31)", d.x[0], d.x[1]);
  }
  luts(&q, d.lut);
  d.sym = tab;
  d.fs = fsv;
  d.valid = valid;
  d.w = q.w;
  d.p = p;
  d.end = end;
  d.rs = q.rs;
  d.cs = q.cs;
  d.init = q.init;
  size_t i = 0;
  for (uint64_t g = 0; !rc && g < nseg; g++) {
    uint64_t len = 0, row = 1;
    get_varint(&segp, end, &len);
    get_varint(&segp, end, &row);
    const unsigned mode = q.smode | q.pred << 2 | (q.fmt == PG_QC_FORMAT_W) << 3;
    uint64_t got = mode == 1    ? dec_seg(&d, out + i, len, row, i, SGN_ROW, 0, 0)
                   : mode == 2  ? dec_seg(&d, out + i, len, row, i, SGN_COL, 0, 0)
                   : mode == 5  ? dec_seg(&d, out + i, len, row, i, SGN_ROW, 1, 0)
                   : mode == 6  ? dec_seg(&d, out + i, len, row, i, SGN_COL, 1, 0)
                   : mode == 3  ? dec_seg(&d, out + i, len, row, i, SGN_PREV, 0, 0)
                   : mode == 7  ? dec_seg(&d, out + i, len, row, i, SGN_PREV, 1, 0)
                   : mode == 13 ? dec_seg(&d, out + i, len, row, i, SGN_ROW, 1, 1)
                   : mode == 14 ? dec_seg(&d, out + i, len, row, i, SGN_COL, 1, 1)
                   : mode == 15 ? dec_seg(&d, out + i, len, row, i, SGN_PREV, 1, 1)
                                : dec_seg(&d, out + i, len, row, i, SGN_NONE, 0, 0);
    if (got < len)
      rc = FAIL("value %zu of %zu: %s", i + (size_t)got, raw_len,
                d.p == end ? "the stream ends" : "a context without a table");
    i += (size_t)len;
  }
  if (!rc && (d.x[0] != RANS_L || d.x[1] != RANS_L))
    rc = FAIL("coder states do not end where the encoder began (corrupt payload)");
  if (!rc && d.p != end) rc = FAIL("%zu bytes after the end of the stream", (size_t)(end - d.p));
  free(tab);
  free(fsv);
  free(d.colm);
  free(d.cols);
  return rc;
}
