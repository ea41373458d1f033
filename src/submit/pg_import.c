/* pg_import.c: a record's quantized artifact → a pgolf artifact (pg_import.h, spec/import.md).
 * Values are copied, never recomputed: the integers byte for byte, fp16 scales as their bits, a
 * scalar scale widened exactly to fp32, passthrough tensors in their stored dtype. */
#include "pg_import.h"

#include <brotli/decode.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_lrzip.h"
#include "pg_pack.h"
#include "pg_torchzip.h"
#include "pg_weights.h"

/* ---- outer compression ---- */

typedef struct gbuf {
  uint8_t *p;
  size_t len, cap, max;
} gbuf;

/* Room for more output: 0, or -1 at the cap, -2 out of memory. */
static int gbuf_room(gbuf *g) {
  if (g->len < g->cap) return 0;
  if (g->cap >= g->max) return -1;
  size_t cap = g->cap ? g->cap * 2 : (1u << 20);
  if (cap > g->max) cap = g->max;
  uint8_t *p = realloc(g->p, cap);
  if (!p) return -2;
  g->p = p;
  g->cap = cap;
  return 0;
}

static int room_fail(int r, const char *f, uint64_t max, pg_err *err) {
  if (r == -2) return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
  return pg_err_set(err, PG_E_LIMIT, f, 0, "decompresses to more than %llu bytes",
                    (unsigned long long)max);
}

static int dec_zlib(const uint8_t *in, size_t n, gbuf *g, const char *f, pg_err *err) {
  z_stream s;
  memset(&s, 0, sizeof s);
  if (inflateInit(&s) != Z_OK) return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "zlib init");
  s.next_in = (Bytef *)in;
  s.avail_in = (uInt)n;
  int rc = PG_OK;
  for (;;) {
    int r = gbuf_room(g);
    if (r) {
      rc = room_fail(r, f, g->max, err);
      break;
    }
    size_t avail = g->cap - g->len > (1u << 30) ? (1u << 30) : g->cap - g->len;
    s.next_out = g->p + g->len;
    s.avail_out = (uInt)avail;
    int z = inflate(&s, Z_NO_FLUSH);
    g->len += avail - s.avail_out;
    if (z == Z_STREAM_END) {
      if (s.avail_in)
        rc = pg_err_set(err, PG_E_TRAILING, f, n - s.avail_in, "%u bytes after the zlib stream",
                        s.avail_in);
      break;
    }
    if (z == Z_BUF_ERROR && s.avail_out == 0) continue;
    if (z != Z_OK) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, f, n - s.avail_in, "zlib: %s",
                      s.msg ? s.msg : (s.avail_in ? "stream error" : "stream is cut short"));
      break;
    }
  }
  inflateEnd(&s);
  return rc;
}

static int dec_zstd(const uint8_t *in, size_t n, gbuf *g, const char *f, pg_err *err) {
  ZSTD_DCtx *d = ZSTD_createDCtx();
  if (!d) return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
  ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 27);
  ZSTD_inBuffer ib = {in, n, 0};
  size_t last = 1;
  int rc = PG_OK;
  while (ib.pos < ib.size || last != 0) {
    int r = gbuf_room(g);
    if (r) {
      rc = room_fail(r, f, g->max, err);
      break;
    }
    ZSTD_outBuffer ob = {g->p, g->cap, g->len};
    size_t before_in = ib.pos, before_out = ob.pos;
    last = ZSTD_decompressStream(d, &ob, &ib);
    g->len = ob.pos;
    if (ZSTD_isError(last)) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, f, ib.pos, "zstd: %s", ZSTD_getErrorName(last));
      break;
    }
    if (ib.pos == ib.size && last != 0 && ob.pos < ob.size && before_in == ib.pos &&
        before_out == ob.pos) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, f, n, "zstd: the stream is cut short");
      break;
    }
  }
  ZSTD_freeDCtx(d);
  return rc;
}

static int dec_xz(const uint8_t *in, size_t n, gbuf *g, const char *f, pg_err *err) {
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&s, PG_LZMA_MEMLIMIT, 0) != LZMA_OK)
    return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "xz init");
  s.next_in = in;
  s.avail_in = n;
  int rc = PG_OK;
  for (;;) {
    int r = gbuf_room(g);
    if (r) {
      rc = room_fail(r, f, g->max, err);
      break;
    }
    s.next_out = g->p + g->len;
    s.avail_out = g->cap - g->len;
    size_t avail = s.avail_out;
    lzma_ret x = lzma_code(&s, LZMA_FINISH);
    g->len += avail - s.avail_out;
    if (x == LZMA_STREAM_END) {
      if (s.avail_in)
        rc = pg_err_set(err, PG_E_TRAILING, f, n - s.avail_in, "%zu bytes after the xz stream",
                        s.avail_in);
      break;
    }
    if (x == LZMA_OK && s.avail_out == 0) continue;
    rc = pg_err_set(err, x == LZMA_MEMLIMIT_ERROR ? PG_E_LIMIT : PG_E_DECOMPRESS, f,
                    n - s.avail_in, "xz: %s",
                    x == LZMA_MEMLIMIT_ERROR ? "the decoder needs more than 128 MiB"
                    : x == LZMA_OK || x == LZMA_BUF_ERROR ? "the stream is cut short"
                                                          : "corrupt stream");
    break;
  }
  lzma_end(&s);
  return rc;
}

static int dec_brotli(const uint8_t *in, size_t n, gbuf *g, const char *f, pg_err *err) {
  BrotliDecoderState *d = BrotliDecoderCreateInstance(NULL, NULL, NULL);
  if (!d) return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
  const uint8_t *next_in = in;
  size_t avail_in = n;
  int rc = PG_OK;
  for (;;) {
    int r = gbuf_room(g);
    if (r) {
      rc = room_fail(r, f, g->max, err);
      break;
    }
    uint8_t *next_out = g->p + g->len;
    size_t avail_out = g->cap - g->len, before = avail_out;
    BrotliDecoderResult x =
        BrotliDecoderDecompressStream(d, &avail_in, &next_in, &avail_out, &next_out, NULL);
    g->len += before - avail_out;
    if (x == BROTLI_DECODER_RESULT_SUCCESS) {
      if (avail_in)
        rc = pg_err_set(err, PG_E_TRAILING, f, n - avail_in, "%zu bytes after the brotli stream",
                        avail_in);
      break;
    }
    if (x == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) continue;
    rc = pg_err_set(err, PG_E_DECOMPRESS, f, n - avail_in, "brotli: %s",
                    x == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT
                        ? "the stream is cut short"
                        : BrotliDecoderErrorString(BrotliDecoderGetErrorCode(d)));
    break;
  }
  BrotliDecoderDestroyInstance(d);
  return rc;
}

int pg_import_decode(const uint8_t *in, size_t n, const char *file, uint64_t max_out,
                     uint8_t **out, size_t *out_len, pg_import_report *rep, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  gbuf g = {.max = (size_t)max_out};
  const char *outer;
  int rc;
  if (n >= 4 && memcmp(in, "PGRP", 4) == 0) /* read by pg_import_run and _mem (read_pgrp) */
    return pg_err_set(err, PG_E_UNSUPPORTED, file, 0,
                      "the per-group layout (PGRP) is several streams, not one outer layer: "
                      "import the file (pg_import_run) to read it");
  if (n >= 4 && memcmp(in, "PK\x03\x04", 4) == 0) {
    g.p = malloc(n ? n : 1);
    if (!g.p) return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
    memcpy(g.p, in, n);
    g.len = n;
    outer = "none";
    rc = PG_OK;
  } else if (n >= 4 && memcmp(in, "\x28\xB5\x2F\xFD", 4) == 0) {
    outer = "zstd";
    rc = dec_zstd(in, n, &g, file, err);
  } else if (n >= 6 && memcmp(in, "\xFD" "7zXZ\x00", 6) == 0) {
    outer = "xz";
    rc = dec_xz(in, n, &g, file, err);
  } else {
    /* zlib has a two-byte header (deflate, a window, a check multiple of 31); brotli none. */
    int zl = n >= 2 && (in[0] & 0x0F) == 8 && (in[0] >> 4) <= 7 && ((in[0] << 8) | in[1]) % 31 == 0;
    pg_err zerr = {0};
    rc = PG_E_DECOMPRESS;
    if (zl) {
      outer = "zlib";
      rc = dec_zlib(in, n, &g, file, &zerr);
    }
    if (rc == PG_E_DECOMPRESS || rc == PG_E_TRAILING) {
      g.len = 0;
      outer = "brotli";
      rc = dec_brotli(in, n, &g, file, err);
      if (rc == PG_E_DECOMPRESS) {
        if (zl) {
          *err = zerr;
          rc = zerr.status;
        } else {
          char hex[40] = "";
          for (size_t i = 0; i < n && i < 8; i++)
            snprintf(hex + 3 * i, sizeof hex - 3 * i, " %02x", in[i]);
          rc = pg_err_set(err, PG_E_MAGIC, file, 0,
                          "not a record artifact: expected a zlib, zstd, xz or brotli stream or "
                          "a torch.save ZIP; found bytes%s%s", n ? hex : " (none: empty file)",
                          n > 8 ? " ..." : "");
        }
      }
    } else if (rc) {
      *err = zerr;
    }
  }
  if (rc) {
    free(g.p);
    return rc;
  }
  char o[32];
  snprintf(o, sizeof o, "%s", outer);
  /* "BSHF", the stride, then the planes (spec/import.md §1). */
  if (g.len >= 5 && memcmp(g.p, "BSHF", 4) == 0) {
    unsigned k = g.p[4];
    size_t m = g.len - 5;
    uint8_t *u = malloc(m ? m : 1);
    if (!u) {
      free(g.p);
      return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
    }
    if (k >= 2) pg_unshuffle(g.p + 5, m, k, u);
    else memcpy(u, g.p + 5, m);
    free(g.p);
    g.p = u;
    g.len = m;
    snprintf(o, sizeof o, "%s+bshf%u", outer, k);
  }
  if (rep) snprintf(rep->outer, sizeof rep->outer, "%s", o);
  *out = g.p;
  *out_len = g.len;
  return PG_OK;
}

/* ---- the record's tensors ---- */

/* ---- dict lookups in O(log n): a hostile file may hold millions of keys ---- */

typedef struct kv {
  const char *k;
  size_t len, pos;
  const pg_tz_value *v;
} kv;
typedef struct dindex {
  kv *e;
  size_t n;
} dindex;

static int kv_cmp_key(const char *a, size_t al, const char *b, size_t bl) {
  int c = memcmp(a, b, al < bl ? al : bl);
  return c ? c : (al > bl) - (al < bl);
}
static int kv_cmp(const void *x, const void *y) {
  const kv *a = x, *b = y;
  int c = kv_cmp_key(a->k, a->len, b->k, b->len);
  return c ? c : (a->pos > b->pos) - (a->pos < b->pos);
}

/* Index a dict whose keys must all be strings (what names it in the error). */
static int dindex_build(const pg_tz_value *d, const char *file, const char *what, dindex *ix,
                        pg_err *err) {
  ix->n = 0;
  ix->e = malloc((d->n ? d->n : 1) * sizeof *ix->e);
  if (!ix->e) return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
  for (size_t i = 0; i < d->n; i++) {
    const pg_tz_value *k = d->items[2 * i];
    PG_FAIL_IF(k->kind != PG_TZ_STR, err, PG_E_MALFORMED, file, PG_NO_OFFSET,
               "a key of %s is a %s, not a string", what, pg_tz_kind_name(k->kind));
    ix->e[ix->n++] = (kv){k->s, k->len, i, d->items[2 * i + 1]};
  }
  qsort(ix->e, ix->n, sizeof *ix->e, kv_cmp);
  return PG_OK;
}

/* The value of key (the last one set, as in Python), or NULL. */
static const pg_tz_value *dindex_get(const dindex *ix, const char *key) {
  size_t kl = strlen(key), lo = 0, hi = ix->n; /* first entry with a key above `key` */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (kv_cmp_key(ix->e[mid].k, ix->e[mid].len, key, kl) <= 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo && kv_cmp_key(ix->e[lo - 1].k, ix->e[lo - 1].len, key, kl) == 0) return ix->e[lo - 1].v;
  return NULL;
}

static size_t dindex_distinct(const dindex *ix) {
  size_t n = 0;
  for (size_t i = 0; i < ix->n; i++)
    n += i == 0 || kv_cmp_key(ix->e[i - 1].k, ix->e[i - 1].len, ix->e[i].k, ix->e[i].len) != 0;
  return n;
}


typedef struct imp_t {
  char name[PG_MAX_NAME + 1];
  const pg_tz_tensor *q, *s, *f; /* quantized values and scales, or a float tensor */
  const pg_tz_tensor *la, *las, *lb, *lbs; /* LQER factors (asymmetric), or NULL */
  int bits, qmin, qmax;
  const pg_arch_tensor *at;
} imp_t;

typedef struct imp {
  const char *file;
  imp_t *t;
  size_t n, cap;
  pg_err *err;
} imp;

/* The records save unwrapped modules, but a DDP or compiled model prefixes its names. */
static const char *canonical(const char *s) {
  for (;;) {
    if (strncmp(s, "module.", 7) == 0) s += 7;
    else if (strncmp(s, "_orig_mod.", 10) == 0) s += 10;
    else return s;
  }
}

static int add(imp *m, const char *name, imp_t **out) {
  const char *c = canonical(name);
  if (strlen(c) == 0 || strlen(c) > PG_MAX_NAME)
    return pg_err_set(m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
                      "tensor name of %zu bytes", strlen(c));
  PG_FAIL_IF(m->n >= PG_MAX_TENSORS, m->err, PG_E_LIMIT, m->file, PG_NO_OFFSET,
             "more than %d tensors", PG_MAX_TENSORS);
  if (m->n == m->cap) {
    size_t cap = m->cap ? 2 * m->cap : 64;
    imp_t *t = realloc(m->t, cap * sizeof *t);
    if (!t) return pg_err_set(m->err, PG_E_NOMEM, m->file, PG_NO_OFFSET, "out of memory");
    m->t = t;
    m->cap = cap;
  }
  *out = &m->t[m->n++];
  memset(*out, 0, sizeof **out);
  snprintf((*out)->name, sizeof (*out)->name, "%s", c);
  return PG_OK;
}

static int want_tensor(imp *m, const pg_tz_value *v, const char *what, const char *name,
                       const pg_tz_tensor **out) {
  if (!v)
    return pg_err_set(m->err, PG_E_NOT_FOUND, m->file, PG_NO_OFFSET, "tensor %s: no %s", name,
                      what);
  if (v->kind != PG_TZ_TENSOR)
    return pg_err_set(m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
                      "tensor %s: its %s is a %s, not a tensor", name, what,
                      pg_tz_kind_name(v->kind));
  *out = &v->t;
  return PG_OK;
}

static int add_quant(imp *m, const char *name, const pg_tz_value *q, const pg_tz_value *s,
                     int bits, int qmin, int qmax, imp_t **out) {
  imp_t *t;
  PG_TRY(add(m, name, &t));
  if (out) *out = t;
  PG_TRY(want_tensor(m, q, "values", name, &t->q));
  PG_TRY(want_tensor(m, s, "scale", name, &t->s));
  t->bits = bits;
  t->qmin = qmin;
  t->qmax = qmax;
  PG_FAIL_IF(t->q->dtype != PG_TZ_I8, m->err, PG_E_DTYPE, m->file, t->q->file_offset,
             "tensor %s: values are %s, int8 expected", name, pg_tz_dtype_name(t->q->dtype));
  if (t->s->ndim == 0) {
    PG_FAIL_IF(t->s->dtype != PG_TZ_F32 && t->s->dtype != PG_TZ_F16 && t->s->dtype != PG_TZ_BF16,
               m->err, PG_E_DTYPE, m->file, t->s->file_offset,
               "tensor %s: a %s scale (float32, float16 or bfloat16 expected)", name,
               pg_tz_dtype_name(t->s->dtype));
  } else {
    PG_FAIL_IF(t->s->dtype != PG_TZ_F16, m->err, PG_E_DTYPE, m->file, t->s->file_offset,
               "tensor %s: row scales are %s; pgolf keeps fp16 row scales exactly, and no "
               "other", name, pg_tz_dtype_name(t->s->dtype));
    PG_FAIL_IF(t->q->ndim == 0 || t->s->numel != t->q->dims[0], m->err, PG_E_SIZE_MISMATCH,
               m->file, t->s->file_offset, "tensor %s: %llu row scales for %llu rows", name,
               (unsigned long long)t->s->numel,
               (unsigned long long)(t->q->ndim ? t->q->dims[0] : 0));
  }
  return PG_OK;
}

static int add_float(imp *m, const char *name, const pg_tz_value *v) {
  imp_t *t;
  PG_TRY(add(m, name, &t));
  PG_TRY(want_tensor(m, v, "passthrough tensor", name, &t->f));
  PG_FAIL_IF(t->f->dtype != PG_TZ_F32 && t->f->dtype != PG_TZ_F16 && t->f->dtype != PG_TZ_BF16,
             m->err, PG_E_DTYPE, m->file, t->f->file_offset,
             "tensor %s: a %s passthrough tensor (pgolf holds float32, float16 and bfloat16 "
             "exactly)", name, pg_tz_dtype_name(t->f->dtype));
  return PG_OK;
}

static const char *keystr(const pg_tz_value *k) { return k->kind == PG_TZ_STR ? k->s : NULL; }

/* The baseline's export (tag int8_clean_per_row_v1): quantized, scales, dtypes, passthrough. */
static int read_int8_per_row(imp *m, const pg_tz_value *root) {
  const pg_tz_value *q = pg_tz_get(root, "quantized"), *s = pg_tz_get(root, "scales"),
                    *p = pg_tz_get(root, "passthrough");
  PG_FAIL_IF(!q || q->kind != PG_TZ_DICT || !s || s->kind != PG_TZ_DICT || !p ||
                 p->kind != PG_TZ_DICT,
             m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
             "format int8-per-row: expected the dicts quantized, scales and passthrough");
  dindex si;
  PG_TRY(dindex_build(s, m->file, "scales", &si, m->err));
  int rc = PG_OK;
  for (size_t i = 0; i < q->n && !rc; i++) {
    const char *name = keystr(q->items[2 * i]);
    if (!name)
      rc = pg_err_set(m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
                      "format int8-per-row: a key of quantized is not a string");
    else
      rc = add_quant(m, name, q->items[2 * i + 1], dindex_get(&si, name), 8, -127, 127, NULL);
  }
  free(si.e);
  if (rc) return rc;
  for (size_t i = 0; i < p->n; i++) {
    const char *name = keystr(p->items[2 * i]);
    PG_FAIL_IF(!name, m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
               "format int8-per-row: a key of passthrough is not a string");
    PG_TRY(add_float(m, name, p->items[2 * i + 1]));
  }
  return PG_OK;
}

/* LQER's asymmetric factors (spec/records.md §5.7): A int2 with one fp16 scale, B int4 with an
 * fp16 scale per group of 64 of its row-major elements: exactly pgolf's LQER parts. */
static int add_lqer(imp *m, imp_t *t, const dindex *w, const char *name) {
  static const char *suffix[4] = {".lqA_a", ".lqAs_a", ".lqB_a", ".lqBs_a"};
  const pg_tz_tensor **dst[4] = {&t->la, &t->las, &t->lb, &t->lbs};
  for (int k = 0; k < 4; k++) {
    char key[PG_MAX_NAME + 16];
    snprintf(key, sizeof key, "%s%s", name, suffix[k]);
    PG_TRY(want_tensor(m, dindex_get(w, key), suffix[k] + 1, name, dst[k]));
  }
  const pg_tz_tensor *q = t->q, *a = t->la, *b = t->lb;
  uint64_t r = a->ndim == 2 ? a->dims[1] : 0;
  PG_FAIL_IF(q->ndim != 2 || t->s->ndim != 1 || a->ndim != 2 || b->ndim != 2 ||
                 a->dims[0] != q->dims[0] || b->dims[0] != r || b->dims[1] != q->dims[1] ||
                 r < 1 || r > PG_MAX_LQER_RANK || (r * q->dims[1]) % PG_LQER_GROUP != 0 ||
                 t->lbs->numel * PG_LQER_GROUP != r * q->dims[1] || t->las->numel != 1,
             m->err, PG_E_SIZE_MISMATCH, m->file, a->file_offset,
             "tensor %s: LQER factors of shapes that are not A [rows, r], B [r, cols] with r in "
             "1..%d and one fp16 scale per 64 elements of B", name, PG_MAX_LQER_RANK);
  PG_FAIL_IF(a->dtype != PG_TZ_I8 || b->dtype != PG_TZ_I8 || t->las->dtype != PG_TZ_F16 ||
                 t->lbs->dtype != PG_TZ_F16,
             m->err, PG_E_DTYPE, m->file, a->file_offset,
             "tensor %s: LQER factors must be int8 with float16 scales", name);
  for (int k = 0; k < 2; k++) {
    const pg_tz_tensor *f = k ? b : a;
    int lo = k ? -8 : -2, hi = k ? 7 : 1;
    for (uint64_t i = 0; i < f->numel; i++) {
      int v = (int8_t)f->data[i];
      PG_FAIL_IF(v < lo || v > hi, m->err, PG_E_VALUE_RANGE, m->file, f->file_offset + i,
                 "tensor %s: LQER %s value %d outside [%d, %d]", name, k ? "B" : "A", v, lo,
                 hi);
    }
  }
  return PG_OK;
}

static int read_notes(imp *m, const pg_tz_value *meta, const dindex *w);

/* The {"w": tensors, "m": per-name notes} exports, R2 to the SDClip GPTQ records. */
static int read_wm(imp *m, const pg_tz_value *root) {
  const pg_tz_value *w = pg_tz_get(root, "w"), *meta = pg_tz_get(root, "m");
  PG_FAIL_IF(!w || w->kind != PG_TZ_DICT || !meta || meta->kind != PG_TZ_DICT, m->err,
             PG_E_MALFORMED, m->file, PG_NO_OFFSET, "format wm: expected the dicts w and m");
  dindex wi;
  PG_TRY(dindex_build(w, m->file, "w", &wi, m->err));
  int rc = read_notes(m, meta, &wi);
  free(wi.e);
  return rc;
}

static int read_notes(imp *m, const pg_tz_value *meta, const dindex *w) {
  size_t used = 0;
  for (size_t i = 0; i < meta->n; i++) {
    const char *name = keystr(meta->items[2 * i]);
    const pg_tz_value *info = meta->items[2 * i + 1];
    PG_FAIL_IF(!name, m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
               "format wm: a key of m is not a string");
    int bits = 0, lo = 0, hi = 0;
    if (info->kind == PG_TZ_STR && strncmp(info->s, "passthrough", 11) == 0) {
      PG_TRY(add_float(m, name, dindex_get(w, name)));
      used++;
      continue;
    }
    const pg_tz_value *type = pg_tz_get(info, "type");
    const char *qs = ".q", *ss = ".scale", *lqer = NULL;
    int n = -1;
    if (pg_tz_is_str(type, "int6")) {
      bits = 6, lo = -32, hi = 31; /* the int6 per-row quantizer clamps to [-32, 31] */
    } else if (pg_tz_is_str(type, "int8")) {
      bits = 8, lo = -127, hi = 127;
    } else if (pg_tz_is_str(info, "gate_int8_row")) {
      bits = 8, lo = -127, hi = 127, qs = ".gq", ss = ".gs";
    } else if (info->kind == PG_TZ_STR && sscanf(info->s, "gptq (int%d)%n", &bits, &n) == 1 &&
               n > 0 && bits >= 5 && bits <= 8 &&
               (n == (int)info->len || strcmp(info->s + n, "+lqer_asym") == 0 ||
                strcmp(info->s + n, "+lqer") == 0)) {
      hi = (1 << (bits - 1)) - 1; /* SDClip GPTQ clamps to [-R, R] */
      lo = -hi;
      lqer = info->s[n] ? info->s + n : NULL;
    } else {
      return pg_err_set(m->err, PG_E_UNSUPPORTED, m->file, PG_NO_OFFSET,
                        "format wm: tensor %s: note %s%s%s not understood (expected "
                        "'passthrough...', {'type': 'int6' or 'int8'}, 'gate_int8_row' or "
                        "'gptq (intN)' with '+lqer_asym')",
                        name, info->kind == PG_TZ_STR ? "'" : "a ",
                        info->kind == PG_TZ_STR ? info->s : pg_tz_kind_name(info->kind),
                        info->kind == PG_TZ_STR ? "'" : "");
    }
    PG_FAIL_IF(lqer && strcmp(lqer, "+lqer") == 0, m->err, PG_E_UNSUPPORTED, m->file,
               PG_NO_OFFSET, "format wm: tensor %s: symmetric LQER factors (+lqer, per-row "
               "scales) have no exact form in a pgolf artifact; only +lqer_asym", name);
    char qn[PG_MAX_NAME + 16], sn[PG_MAX_NAME + 16];
    PG_FAIL_IF(strlen(name) > PG_MAX_NAME, m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
               "tensor name of %zu bytes", strlen(name));
    snprintf(qn, sizeof qn, "%s%s", name, qs);
    snprintf(sn, sizeof sn, "%s%s", name, ss);
    imp_t *t;
    PG_TRY(add_quant(m, name, dindex_get(w, qn), dindex_get(w, sn), bits, lo, hi, &t));
    used += 2;
    if (lqer) {
      PG_TRY(add_lqer(m, t, w, name));
      used += 4;
    }
  }
  /* Every tensor of w is accounted for by a note. */
  size_t distinct = dindex_distinct(w);
  PG_FAIL_IF(distinct != used, m->err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
             "format wm: w holds %zu tensors, the notes of m account for %zu", distinct, used);
  return PG_OK;
}

/* ---- the per-group layout (PGRP, spec/import.md §7) ---- */

/* The LQER record's groups, in its order; the sorted ones carry a row permutation each. */
#define PGRP_GROUPS 7
#define PGRP_STREAMS (PGRP_GROUPS + 2)
static const char *const PGRP_GROUP[PGRP_GROUPS] = {
    "_tok_emb.weight.q", "attn.c_k.weight.q", "attn.c_q.weight.q", "attn.c_v.weight.q",
    "attn.proj.weight.q", "mlp.fc.weight.q",   "mlp.proj.weight.q"};
static const int PGRP_SORTED[PGRP_GROUPS] = {1, 0, 1, 0, 0, 1, 0};
#define PGRP_MAX_PER_GROUP 4096u /* tensors in one group (a layer count) */

typedef struct pgrp {
  uint8_t *torch;                /* the remainder's torch.save bytes */
  pg_tz *z;
  uint8_t *vals[PGRP_GROUPS];    /* each group's values, row-major, tensor after tensor */
  pg_tz_value *nodes;            /* the group tensors as tree values */
  char (*names)[PG_MAX_NAME + 1];
  size_t nn;
} pgrp;

static void pgrp_free(pgrp *p) {
  free(p->torch);
  pg_tz_free(p->z);
  for (int g = 0; g < PGRP_GROUPS; g++) free(p->vals[g]);
  free(p->nodes);
  free(p->names);
  memset(p, 0, sizeof *p);
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A brotli stream of the file decoded into *out, at most *budget bytes (which it uses up). */
static int pgrp_brotli(const uint8_t *in, size_t n, const char *label, uint64_t *budget,
                       uint8_t **out, size_t *out_len, pg_err *err) {
  gbuf g = {.max = (size_t)*budget};
  int rc = dec_brotli(in, n, &g, label, err);
  if (rc) {
    free(g.p);
    return rc;
  }
  *budget -= g.len;
  *out = g.p;
  *out_len = g.len;
  return PG_OK;
}

/* One shape of the manifest: a tuple or list of at most 8 non-negative ints, whose product
 * (checked against `room`, the bytes the group has left) is *numel. */
static int pgrp_shape(const pg_tz_value *v, const char *file, const char *gk, size_t k,
                      uint64_t room, pg_tz_tensor *t, pg_err *err) {
  PG_FAIL_IF((v->kind != PG_TZ_TUPLE && v->kind != PG_TZ_LIST) || v->n > PG_TZ_MAX_DIMS, err,
             PG_E_MALFORMED, file, PG_NO_OFFSET,
             "PGRP shape manifest: group %s: shape %zu is not a tuple of at most %u ints", gk, k,
             PG_TZ_MAX_DIMS);
  uint64_t numel = 1;
  int zero = 0, over = 0;
  t->ndim = (unsigned)v->n;
  for (size_t d = 0; d < v->n; d++) {
    const pg_tz_value *x = v->items[d];
    PG_FAIL_IF(x->kind != PG_TZ_INT || x->i < 0, err, PG_E_MALFORMED, file, PG_NO_OFFSET,
               "PGRP shape manifest: group %s: shape %zu holds a %s", gk, k,
               x->kind == PG_TZ_INT ? "negative dimension" : pg_tz_kind_name(x->kind));
    t->dims[d] = (uint64_t)x->i;
    if (x->i == 0) zero = 1;
    else if (!over && (uint64_t)x->i > room / numel) over = 1; /* more than the group holds */
    else if (!over) numel *= (uint64_t)x->i;
  }
  if (zero) numel = 0;
  else if (over) numel = room + 1;
  PG_FAIL_IF(numel > room, err, PG_E_SIZE_MISMATCH, file, PG_NO_OFFSET,
             "PGRP shape manifest: group %s: shape %zu needs more values than the group's "
             "stream decodes to", gk, k);
  t->numel = numel;
  t->nbytes = numel;
  t->dtype = PG_TZ_I8;
  return PG_OK;
}

/* Undo one 2-D tensor's layout: the stream holds its rows (sorted by perm when given, row i of
 * the sorted matrix being row perm[i]) transposed; dst gets the record's row-major order. */
static void pgrp_unlayout(const uint8_t *src, uint64_t rows, uint64_t cols, const uint16_t *perm,
                          uint8_t *dst) {
  for (uint64_t c = 0; c < cols; c++)
    for (uint64_t i = 0; i < rows; i++)
      dst[(perm ? perm[i] : i) * cols + c] = src[c * rows + i];
}

/* Read a PGRP file: the stream table, the remainder (torch.save of r, m, s), the permutations
 * and the groups; the group tensors become tree values named as the record names them, and the
 * tensors of r and those together are read with the notes of m as the wm format's w. */
static int read_pgrp(imp *m, const uint8_t *raw, size_t n, uint64_t cap, pgrp *p,
                     pg_import_report *rep) {
  const char *f = m->file;
  pg_err *err = m->err;
  PG_FAIL_IF(n < 8, err, PG_E_TRUNCATED, f, n,
             "PGRP stream table: the file ends after %zu bytes, before the stream count", n);
  uint32_t ns = rd32(raw + 4);
  PG_FAIL_IF(ns != PGRP_STREAMS, err, ns > PGRP_STREAMS ? PG_E_LIMIT : PG_E_MALFORMED, f, 4,
             "PGRP stream table: %u streams, %d expected (%d groups, the remainder, the row "
             "permutations)", ns, PGRP_STREAMS, PGRP_GROUPS);
  uint64_t off = 8 + 4ull * ns;
  PG_FAIL_IF(n < off, err, PG_E_TRUNCATED, f, n,
             "PGRP stream table: the file ends after %zu bytes, inside the table of %u lengths",
             n, ns);
  uint64_t start[PGRP_STREAMS], len[PGRP_STREAMS];
  for (uint32_t i = 0; i < ns; i++) {
    len[i] = rd32(raw + 8 + 4 * i);
    start[i] = off;
    PG_FAIL_IF(len[i] > n - off, err, PG_E_TRUNCATED, f, 8 + 4 * i,
               "PGRP stream %u: %llu bytes from offset %llu run past the end of the file (%zu "
               "bytes)", i, (unsigned long long)len[i], (unsigned long long)off, n);
    off += len[i];
  }
  PG_FAIL_IF(off != n, err, PG_E_TRAILING, f, off,
             "PGRP: %llu bytes after the last stream", (unsigned long long)(n - off));
  PG_FAIL_IF(len[PGRP_GROUPS] == 0, err, PG_E_NOT_FOUND, f, 8 + 4 * PGRP_GROUPS,
             "PGRP: the remainder stream (torch.save of r, m and s) is empty");
  char label[PG_ERR_MSG_MAX / 2];
  uint64_t budget = cap;
  size_t tn = 0;
  snprintf(label, sizeof label, "%s (PGRP remainder)", f);
  PG_TRY(pgrp_brotli(raw + start[PGRP_GROUPS], len[PGRP_GROUPS], label, &budget, &p->torch,
                     &tn, err));
  snprintf(label, sizeof label, "%s (PGRP remainder, decompressed)", f);
  PG_TRY(pg_tz_open(&p->z, p->torch, tn, label, err));
  const pg_tz_value *root = pg_tz_root(p->z), *r = pg_tz_get(root, "r"),
                    *meta = pg_tz_get(root, "m"), *s = pg_tz_get(root, "s");
  PG_FAIL_IF(root->kind != PG_TZ_DICT || !r || r->kind != PG_TZ_DICT || !meta ||
                 meta->kind != PG_TZ_DICT || !s || s->kind != PG_TZ_DICT,
             err, PG_E_MALFORMED, f, PG_NO_OFFSET,
             "PGRP remainder: expected a dict of the dicts r (tensors), m (notes) and s (the "
             "shape manifest)");
  uint8_t *perms = NULL;
  size_t plen = 0, poff = 0;
  int rc = PG_OK;
  if (len[PGRP_GROUPS + 1]) {
    snprintf(label, sizeof label, "%s (PGRP row permutations)", f);
    PG_TRY(pgrp_brotli(raw + start[PGRP_GROUPS + 1], len[PGRP_GROUPS + 1], label, &budget,
                       &perms, &plen, err));
  }
  uint64_t torch_bytes = tn + plen;
  size_t cap_nodes = 0;
  uint16_t *perm = NULL;
  for (int g = 0; g < PGRP_GROUPS && !rc; g++) {
    const char *gk = PGRP_GROUP[g];
    const pg_tz_value *shapes = pg_tz_get(s, gk);
    uint8_t *dec = NULL;
    size_t dn = 0;
    if (len[g]) {
      char what[96];
      snprintf(what, sizeof what, "PGRP group %s", gk);
      rc = pg_lrzip_decode(raw + start[g], len[g], f, what, budget, &dec, &dn, err);
      if (rc) break;
      budget -= dn;
      torch_bytes += dn;
    }
    size_t nshape = shapes ? shapes->n : 0;
    if (shapes && shapes->kind != PG_TZ_LIST && shapes->kind != PG_TZ_TUPLE) {
      rc = pg_err_set(err, PG_E_MALFORMED, f, PG_NO_OFFSET,
                      "PGRP shape manifest: group %s is a %s, not a list of shapes", gk,
                      pg_tz_kind_name(shapes->kind));
    } else if (dn == 0 && nshape) {
      rc = pg_err_set(err, PG_E_SIZE_MISMATCH, f, start[g],
                      "PGRP group %s: the shape manifest lists %zu tensors, the stream is empty",
                      gk, nshape);
    } else if (dn && !nshape) {
      rc = pg_err_set(err, PG_E_SIZE_MISMATCH, f, start[g],
                      "PGRP group %s: %zu values and no shapes in the manifest", gk, dn);
    } else if (nshape > (g == 0 ? 1u : PGRP_MAX_PER_GROUP)) {
      rc = pg_err_set(err, PG_E_LIMIT, f, PG_NO_OFFSET,
                      "PGRP shape manifest: group %s lists %zu tensors (at most %u)", gk, nshape,
                      g == 0 ? 1u : PGRP_MAX_PER_GROUP);
    }
    if (rc || !nshape) {
      free(dec);
      continue;
    }
    p->vals[g] = malloc(dn);
    if (p->nn + nshape > cap_nodes) {
      cap_nodes = 2 * (p->nn + nshape);
      pg_tz_value *nv = realloc(p->nodes, cap_nodes * sizeof *nv);
      if (nv) p->nodes = nv;
      char (*nm)[PG_MAX_NAME + 1] = realloc(p->names, cap_nodes * sizeof *nm);
      if (nm) p->names = nm;
      if (!nv || !nm) cap_nodes = 0;
    }
    if (!p->vals[g] || !cap_nodes) {
      free(dec);
      rc = pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
      break;
    }
    uint64_t at = 0;
    for (size_t k = 0; k < nshape && !rc; k++) {
      pg_tz_value *v = &p->nodes[p->nn];
      memset(v, 0, sizeof *v);
      v->kind = PG_TZ_TENSOR;
      rc = pgrp_shape(shapes->items[k], f, gk, k, dn - at, &v->t, err);
      if (rc) break;
      pg_tz_tensor *t = &v->t;
      t->data = p->vals[g] + at;
      t->file_offset = start[g];
      if (g == 0) snprintf(p->names[p->nn], sizeof p->names[0], "%s", gk + 1);
      else snprintf(p->names[p->nn], sizeof p->names[0], "blocks.%zu.%s", k, gk);
      if (t->ndim != 2) {
        memcpy(p->vals[g] + at, dec + at, (size_t)t->numel);
      } else {
        uint64_t rows = t->dims[0], cols = t->dims[1];
        free(perm);
        perm = NULL;
        if (PGRP_SORTED[g]) {
          if (rows > 65536) { /* u16 entries cannot order more */
            rc = pg_err_set(err, PG_E_MALFORMED, f, start[g],
                            "PGRP group %s: %s has %llu rows, more than a u16 row permutation "
                            "can order", gk, p->names[p->nn], (unsigned long long)rows);
            break;
          }
          if (plen - poff < 2 * rows) {
            rc = pg_err_set(err, PG_E_SIZE_MISMATCH, f, start[PGRP_GROUPS + 1],
                            "PGRP row permutations: %s (%llu rows) needs %llu bytes, %zu are "
                            "left", p->names[p->nn], (unsigned long long)rows,
                            (unsigned long long)(2 * rows), plen - poff);
            break;
          }
          perm = malloc(rows ? 2 * rows : 1);
          uint8_t *seen = calloc(rows ? rows : 1, 1);
          if (!perm || !seen) {
            free(seen);
            rc = pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
            break;
          }
          for (uint64_t i = 0; i < rows && !rc; i++) {
            perm[i] = (uint16_t)(perms[poff + 2 * i] | perms[poff + 2 * i + 1] << 8);
            if (perm[i] >= rows || seen[perm[i]]++)
              rc = pg_err_set(err, PG_E_MALFORMED, f, start[PGRP_GROUPS + 1],
                              "PGRP row permutations: the one of %s is not a permutation of "
                              "its %llu rows (entry %llu is %u%s)", p->names[p->nn],
                              (unsigned long long)rows, (unsigned long long)i, perm[i],
                              perm[i] >= rows ? ", out of range" : ", a repeat");
          }
          free(seen);
          poff += 2 * rows;
          if (rc) break;
        }
        pgrp_unlayout(dec + at, rows, cols, perm, p->vals[g] + at);
      }
      at += t->numel;
      p->nn++;
    }
    if (!rc && at != dn)
      rc = pg_err_set(err, PG_E_SIZE_MISMATCH, f, start[g],
                      "PGRP group %s: the shape manifest accounts for %llu values, the stream "
                      "decodes to %zu", gk, (unsigned long long)at, dn);
    free(dec);
  }
  free(perm);
  if (!rc && poff != plen)
    rc = pg_err_set(err, PG_E_SIZE_MISMATCH, f, start[PGRP_GROUPS + 1],
                    "PGRP row permutations: %zu bytes, the sorted matrices use %zu", plen, poff);
  free(perms);
  if (rc) return rc;
  /* A manifest group this reader does not know would be values dropped silently. */
  for (size_t i = 0; i < s->n; i++) {
    const pg_tz_value *k = s->items[2 * i];
    int known = 0;
    for (int g = 0; g < PGRP_GROUPS; g++) known |= pg_tz_is_str(k, PGRP_GROUP[g]);
    PG_FAIL_IF(!known, err, PG_E_MALFORMED, f, PG_NO_OFFSET,
               "PGRP shape manifest: unknown group %s",
               k->kind == PG_TZ_STR ? k->s : pg_tz_kind_name(k->kind));
  }
  rep->torch_bytes = torch_bytes;
  snprintf(rep->outer, sizeof rep->outer, "pgrp");
  /* r and the group tensors, as one w */
  dindex wi;
  PG_TRY(dindex_build(r, f, "r", &wi, err));
  kv *e = realloc(wi.e, (wi.n + p->nn + 1) * sizeof *e);
  if (!e) {
    free(wi.e);
    return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
  }
  wi.e = e;
  for (size_t i = 0; i < p->nn; i++) {
    if (dindex_get(&wi, p->names[i]))
      rc = pg_err_set(err, PG_E_DUPLICATE, f, PG_NO_OFFSET,
                      "PGRP: tensor %s is both in a group and in the remainder", p->names[i]);
    if (rc) break;
  }
  if (!rc) {
    for (size_t i = 0; i < p->nn; i++)
      wi.e[wi.n++] = (kv){p->names[i], strlen(p->names[i]), r->n + i, &p->nodes[i]};
    qsort(wi.e, wi.n, sizeof *wi.e, kv_cmp);
    rc = read_notes(m, meta, &wi);
  }
  free(wi.e);
  return rc;
}

static const char *FORMATS[] = {"int8-per-row", "wm", "pgrp"};

static int recognise(imp *m, const pg_tz_value *root, const char *forced, const char **fmt,
                     pg_import_report *rep) {
  const pg_tz_value *tag = pg_tz_get(root, "__quant_format__");
  if (tag && tag->kind == PG_TZ_STR) snprintf(rep->tag, sizeof rep->tag, "%s", tag->s);
  if (forced) {
    for (size_t i = 0; i < sizeof FORMATS / sizeof *FORMATS; i++)
      if (strcmp(forced, FORMATS[i]) == 0) *fmt = FORMATS[i];
    if (!*fmt)
      return pg_err_set(m->err, PG_E_ARG, NULL, PG_NO_OFFSET,
                        "--format %s: unknown (known: " PG_IMPORT_FORMATS ")", forced);
    PG_FAIL_IF(strcmp(*fmt, "pgrp") == 0, m->err, PG_E_ARG, m->file, PG_NO_OFFSET,
               "--format pgrp: the file does not begin with PGRP");
    return PG_OK;
  }
  if (tag && pg_tz_is_str(tag, "int8_clean_per_row_v1")) {
    *fmt = FORMATS[0];
    return PG_OK;
  }
  if (tag)
    return pg_err_set(m->err, PG_E_UNSUPPORTED, m->file, PG_NO_OFFSET,
                      "unknown record format: expected __quant_format__ int8_clean_per_row_v1 "
                      "or the dicts w and m; found __quant_format__ %s%s",
                      tag->kind == PG_TZ_STR ? tag->s : "of kind ",
                      tag->kind == PG_TZ_STR ? "" : pg_tz_kind_name(tag->kind));
  if (root->kind == PG_TZ_DICT && pg_tz_get(root, "w") && pg_tz_get(root, "m")) {
    *fmt = FORMATS[1];
    return PG_OK;
  }
  char found[200] = "";
  size_t k = 0;
  if (root->kind == PG_TZ_DICT) {
    k = (size_t)snprintf(found, sizeof found, "a dict with keys");
    for (size_t i = 0; i < root->n && i < 6 && k < sizeof found; i++) {
      const pg_tz_value *key = root->items[2 * i];
      k += (size_t)snprintf(found + k, sizeof found - k, "%s %.40s", i ? "," : "",
                            key->kind == PG_TZ_STR ? key->s : "(int)");
    }
    if (root->n > 6 && k < sizeof found) snprintf(found + k, sizeof found - k, ", ...");
    if (root->n == 0) snprintf(found, sizeof found, "an empty dict");
  } else {
    snprintf(found, sizeof found, "a %s", pg_tz_kind_name(root->kind));
  }
  return pg_err_set(m->err, PG_E_UNSUPPORTED, m->file, PG_NO_OFFSET,
                    "unknown record format: expected a dict with __quant_format__ "
                    "int8_clean_per_row_v1 (int8-per-row) or the dicts w and m (wm); found %s "
                    "(a plain state dict? see tools/pg_export.py)", found);
}

/* ---- the arch ---- */

static int imp_cmp(const void *a, const void *b) {
  return strcmp(((const imp_t *)a)->name, ((const imp_t *)b)->name);
}

/* Sort the tensors by name for lookups; a name twice (after the prefixes are stripped) is a
 * fault. */
static int sort_tensors(imp *m) {
  if (m->n) qsort(m->t, m->n, sizeof *m->t, imp_cmp);
  for (size_t i = 1; i < m->n; i++)
    PG_FAIL_IF(strcmp(m->t[i - 1].name, m->t[i].name) == 0, m->err, PG_E_DUPLICATE, m->file,
               PG_NO_OFFSET, "tensor %s appears twice", m->t[i].name);
  return PG_OK;
}

static const imp_t *find(const imp *m, const char *name) {
  imp_t key;
  snprintf(key.name, sizeof key.name, "%s", name);
  return m->n ? bsearch(&key, m->t, m->n, sizeof *m->t, imp_cmp) : NULL;
}

static const pg_tz_tensor *stored(const imp_t *t) { return t->f ? t->f : t->q; }

/* The baseline family's arch from the shapes: V and d from tok_emb, the layers from the block
 * indices, heads of 64 dims from c_q and c_k, hidden from mlp.fc, untied when lm_head exists.
 * Every other option keeps the baseline's value; the strict check below refuses weights that
 * need another (spec/import.md §4). */
static int derive_arch(const imp *m, pg_arch *a, pg_err *err) {
  const imp_t *emb = find(m, "tok_emb.weight"), *cq = find(m, "blocks.0.attn.c_q.weight"),
              *ck = find(m, "blocks.0.attn.c_k.weight"), *fc = find(m, "blocks.0.mlp.fc.weight");
  PG_FAIL_IF(!emb || !cq || !ck || !fc || stored(emb)->ndim != 2 || stored(cq)->ndim != 2 ||
                 stored(ck)->ndim != 2 || stored(fc)->ndim != 2,
             err, PG_E_ARG, m->file, PG_NO_OFFSET,
             "cannot derive the arch: tok_emb.weight and block 0's c_q, c_k and mlp.fc must be "
             "matrices (pass --arch FILE)");
  int layers = 0;
  for (size_t i = 0; i < m->n; i++) {
    int b;
    if (sscanf(m->t[i].name, "blocks.%d.", &b) == 1 && b >= 0 && b < 1000 && b + 1 > layers)
      layers = b + 1;
  }
  char json[512];
  snprintf(json, sizeof json,
           "{\"vocab_size\": %llu, \"dim\": %llu, \"layers\": %d, \"heads\": %llu, "
           "\"kv_heads\": %llu, \"head_dim\": 64, \"mlp\": {\"hidden\": %llu}, "
           "\"head\": {\"tied\": %s}}",
           (unsigned long long)stored(emb)->dims[0], (unsigned long long)stored(emb)->dims[1],
           layers, (unsigned long long)(stored(cq)->dims[0] / 64),
           (unsigned long long)(stored(ck)->dims[0] / 64), (unsigned long long)stored(fc)->dims[0],
           find(m, "lm_head.weight") ? "false" : "true");
  pg_err perr = {0};
  int rc = pg_arch_parse(a, json, strlen(json), "derived arch", &perr);
  PG_FAIL_IF(rc, err, PG_E_ARG, m->file, PG_NO_OFFSET,
             "cannot derive the arch from the shapes (%s): pass --arch FILE", perr.msg);
  return PG_OK;
}

/* Every arch tensor present with a compatible shape, and no other. */
static int match_arch(imp *m, const pg_arch *a, int derived, pg_arch_tensor **at, size_t *nat,
                      pg_err *err) {
  PG_TRY(pg_arch_tensors(a, at, nat, err));
  const char *hint = derived ? " (the arch was derived from the shapes as the baseline's: pass "
                               "--arch FILE)" : "";
  for (size_t i = 0; i < m->n; i++) {
    imp_t *t = &m->t[i];
    for (size_t j = 0; j < *nat && !t->at; j++)
      if (strcmp((*at)[j].name, t->name) == 0) t->at = &(*at)[j];
    PG_FAIL_IF(!t->at, err, PG_E_MALFORMED, m->file, PG_NO_OFFSET,
               "tensor %s is not one the arch implies%s", t->name, hint);
    const pg_tz_tensor *s = stored(t);
    PG_FAIL_IF(!pg_weights_shape_compatible(t->at, s->ndim, s->dims), err, PG_E_SIZE_MISMATCH,
               m->file, PG_NO_OFFSET, "tensor %s: its shape does not match the arch's%s",
               t->name, hint);
  }
  for (size_t j = 0; j < *nat; j++)
    PG_FAIL_IF(!find(m, (*at)[j].name), err, PG_E_NOT_FOUND, m->file, PG_NO_OFFSET,
               "tensor %s, which the arch implies, is not in the record's file%s", (*at)[j].name,
               hint);
  return PG_OK;
}

/* ---- writing ---- */

/* A quantized tensor that quant layout 2 stores transposed: one value per byte, 2+ dims. */
static int layout2_matrix(const imp_t *t) { return t->q && stored(t)->ndim >= 2; }

/* Layout 2: the stored row order of each such matrix (perms[j] for at[j], NULL: as it is), by
 * pgpack's rule over the one section that holds them all (pg_pack_group_orders). */
static int import_row_orders(imp *m, const pg_arch_tensor *at, size_t nat, uint32_t **perms,
                             pg_err *err) {
  pg_pack_mat *mats = malloc((nat ? nat : 1) * sizeof *mats);
  uint32_t **got = malloc((nat ? nat : 1) * sizeof *got);
  int rc = mats && got ? PG_OK
                       : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  size_t n = 0;
  for (size_t j = 0; !rc && j < nat; j++) {
    const imp_t *t = find(m, at[j].name);
    if (!layout2_matrix(t)) continue;
    const pg_tz_tensor *s = stored(t);
    mats[n++] = (pg_pack_mat){(const int8_t *)t->q->data, s->dims[0],
                              s->dims[0] ? t->q->numel / s->dims[0] : 0, s->ndim};
  }
  if (!rc) rc = pg_pack_group_orders(mats, n, PG_ROW_SORT_AUTO, got, err);
  for (size_t j = 0, k = 0; !rc && j < nat; j++)
    if (layout2_matrix(find(m, at[j].name))) perms[j] = got[k++];
  free(mats);
  free(got);
  return rc;
}

static int write_artifact(imp *m, const pg_arch *a, const pg_arch_tensor *at, size_t nat,
                          const pg_import_opts *o, const char *fmt, pg_import_report *rep,
                          const char *out, uint8_t **mem, size_t *mem_len, pg_err *err) {
  pg_writer *w = NULL;
  PG_TRY(pg_writer_create(&w));
  pg_writer_set_threads(w, o->threads > 0 ? o->threads : 1);
  const int layout = o->layout ? o->layout : 2;
  if (layout != 1 && layout != 2) {
    pg_writer_free(w);
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "import: layout %d is not 1 or 2",
                      layout);
  }
  if (pg_writer_set_container(w, o->container ? o->container : PG_CONTAINER_VERSION)) {
    pg_writer_free(w);
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "import: container version %d is not 1 or 2", o->container);
  }
  pg_codec_spec cs = o->codec;
  if (!o->have_codec) cs = (pg_codec_spec){PG_CODEC_BROTLI, 11, 24, 0, 0};
  int have_q = 0, have_s = 0, have_f = 0, have_l = 0;
  for (size_t i = 0; i < m->n; i++) {
    have_l |= m->t[i].la != NULL;
    have_q |= m->t[i].q != NULL;
    have_f |= m->t[i].f != NULL;
    have_s |= m->t[i].q && m->t[i].s->ndim > 0;
  }
  int sv = -1, ss = -1, sf = -1, sl = -1, sp = -1, rc = PG_OK;
  uint32_t **perms = calloc(nat ? nat : 1, sizeof *perms);
  if (!perms) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  if (!rc && have_q && layout == 2) rc = import_row_orders(m, at, nat, perms, err);
  if (!rc && have_q && (sv = pg_writer_data_section(w, &cs, err)) < 0) rc = err->status;
  if (!rc && have_s && (ss = pg_writer_data_section(w, &cs, err)) < 0) rc = err->status;
  if (!rc && have_l && (sl = pg_writer_data_section(w, &cs, err)) < 0) rc = err->status;
  if (!rc && have_f && (sf = pg_writer_data_section(w, &cs, err)) < 0) rc = err->status;
  for (size_t j = 0; !rc && sp < 0 && j < nat; j++) /* the row orders, when some matrix has one */
    if (perms[j] && (sp = pg_writer_data_section(w, &cs, err)) < 0) rc = err->status;
  uint16_t *scales = NULL, *lbs = NULL;
  for (size_t j = 0; j < nat && !rc; j++) { /* canonical order */
    const imp_t *t = find(m, at[j].name);
    const pg_tz_tensor *s = stored(t);
    uint64_t dims[PG_TZ_MAX_DIMS];
    unsigned ndim = s->ndim;
    memcpy(dims, s->dims, sizeof dims);
    pg_tensor_in in = {.name = t->name, .dims = dims, .ndim = ndim};
    if (t->f) {
      in.qtype = t->f->dtype == PG_TZ_F32 ? PG_QTYPE_F32
                 : t->f->dtype == PG_TZ_F16 ? PG_QTYPE_F16 : PG_QTYPE_BF16;
      in.values = t->f->data;
      in.sec_values = sf;
    } else {
      if (ndim == 0) { /* ints have at least one dimension; [] and [1] are the same tensor */
        ndim = in.ndim = 1;
        dims[0] = 1;
      }
      for (uint64_t k = 0; k < t->q->numel; k++) {
        int v = (int8_t)t->q->data[k];
        if (v < t->qmin || v > t->qmax) {
          rc = pg_err_set(err, PG_E_VALUE_RANGE, m->file, t->q->file_offset + k,
                          "tensor %s: value %d at element %llu is outside [%d, %d], the "
                          "range of its format", t->name, v, (unsigned long long)k, t->qmin,
                          t->qmax);
          break;
        }
      }
      if (rc) break;
      in.qtype = t->bits == 8 ? PG_QTYPE_INT8 : t->bits == 7 ? PG_QTYPE_INT7
                 : t->bits == 6 ? PG_QTYPE_INT6 : PG_QTYPE_INT5;
      in.packing = PG_PACK_BYTE;
      in.qmin = t->qmin;
      in.qmax = t->qmax;
      in.values = t->q->data;
      in.sec_values = sv;
      if (layout == 2 && layout2_matrix(t)) {
        in.order = PG_ORDER_COLS;
        if (perms[j]) {
          in.perm = PG_PERM_STORED;
          in.row_perm = perms[j];
          in.sec_perm = sp;
        }
      }
      if (t->s->ndim == 0) {
        uint16_t h;
        in.scale_kind = PG_SCALE_SCALAR_F32;
        if (t->s->dtype == PG_TZ_F32) memcpy(&in.scalar_scale, t->s->data, 4);
        else {
          memcpy(&h, t->s->data, 2);
          in.scalar_scale = t->s->dtype == PG_TZ_F16 ? pg_f16_to_f32(h) : pg_bf16_to_f32(h);
        }
      } else {
        free(scales); /* copied: the archive does not promise 2-byte alignment */
        scales = malloc((size_t)t->s->nbytes);
        if (!scales) {
          rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
          break;
        }
        memcpy(scales, t->s->data, (size_t)t->s->nbytes);
        in.scale_kind = PG_SCALE_ROW_F16;
        in.row_scales = scales;
        in.sec_scales = ss;
      }
    }
    if (!rc && t->la) {
      free(lbs);
      lbs = malloc((size_t)t->lbs->nbytes);
      if (!lbs) {
        rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
        break;
      }
      memcpy(lbs, t->lbs->data, (size_t)t->lbs->nbytes);
      memcpy(&in.lqer_a_scale, t->las->data, 2);
      in.lqer_rank = (unsigned)t->la->dims[1];
      in.lqer_a = (const int8_t *)t->la->data;
      in.lqer_b = (const int8_t *)t->lb->data;
      in.lqer_b_scales = lbs;
      in.sec_lqer = sl;
    }
    rc = pg_writer_tensor(w, &in, err);
    if (t->q) rep->quantized++;
    else rep->passthrough++;
    rep->tensors++;
  }
  free(scales);
  free(lbs);
  for (size_t j = 0; perms && j < nat; j++) free(perms[j]);
  free(perms);
  char *arch = NULL, recipe[512], method[64], writer[64];
  if (!rc) rc = pg_arch_serialize(a, &arch, err);
  snprintf(writer, sizeof writer, "pgimport %s", PG_VERSION);
  snprintf(method, sizeof method, "import-%s", fmt);
  snprintf(recipe, sizeof recipe,
           "{\"format\":\"%s\",\"outer\":\"%s\",\"record_bytes\":%llu,\"tag\":\"%s\","
           "\"layout\":%d}",
           fmt, rep->outer, (unsigned long long)rep->record_bytes, rep->tag, layout);
  if (!rc) rc = pg_writer_meta_str(w, "pgolf.writer", writer, strlen(writer), err);
  if (!rc) rc = pg_writer_meta_str(w, "arch.name", "pgolf", 5, err);
  if (!rc) rc = pg_writer_meta_str(w, "arch.json", arch, strlen(arch), err);
  if (!rc) rc = pg_writer_meta_str(w, "quant.method", method, strlen(method), err);
  if (!rc) rc = pg_writer_meta_str(w, "quant.recipe", recipe, strlen(recipe), err);
  if (!rc) rc = pg_writer_meta_i64(w, "tokenizer.vocab_size", a->vocab_size, err);
  if (!rc && o->record)
    rc = pg_writer_meta_str(w, "provenance.record", o->record, strlen(o->record), err);
  if (!rc && o->protocol)
    rc = pg_writer_meta_str(w, "provenance.protocol", o->protocol, strlen(o->protocol), err);
  if (!rc && o->tokenizer) { /* carried as it is; pgverify and the loaders check it */
    uint8_t *tok = NULL;
    size_t tn = 0;
    const char *base = strrchr(o->tokenizer, '/') ? strrchr(o->tokenizer, '/') + 1 : o->tokenizer;
    rc = pg_file_read_all(o->tokenizer, &tok, &tn, 64u << 20, err);
    if (!rc) rc = pg_writer_tokenizer(w, tok, tn, &cs, err);
    if (!rc) rc = pg_writer_meta_str(w, "tokenizer.name", base, strlen(base), err);
    free(tok);
  }
  if (!rc) rc = out ? pg_writer_write(w, out, err) : pg_writer_to_mem(w, mem, mem_len, err);
  free(arch);
  pg_writer_free(w);
  return rc;
}

/* Decode, read, check and write: to the file out, or (out NULL) to *mem. */
static int import_core(const uint8_t *raw, size_t n, const char *in, uint64_t cap,
                       const pg_import_opts *o, pg_import_report *rep, const char *out,
                       uint8_t **mem, size_t *mem_len, pg_err *err) {
  memset(rep, 0, sizeof *rep);
  rep->record_bytes = n;
  uint8_t *zip = NULL;
  size_t zn = 0;
  pg_tz *z = NULL;
  imp m = {.file = in, .err = err};
  pg_arch a;
  pg_arch_tensor *at = NULL;
  size_t nat = 0;
  const char *fmt = NULL;
  pgrp pg = {0};
  int rc;
  if (n >= 4 && memcmp(raw, "PGRP", 4) == 0) { /* several streams, not one outer layer */
    fmt = "pgrp";
    snprintf(rep->format, sizeof rep->format, "%s", fmt);
    rc = o->format && strcmp(o->format, "pgrp") != 0
             ? pg_err_set(err, PG_E_ARG, in, 0, "--format %s: the file is the per-group layout "
                          "(PGRP), read as format pgrp", o->format)
             : read_pgrp(&m, raw, n, cap, &pg, rep);
  } else {
    PG_TRY(pg_import_decode(raw, n, in, cap, &zip, &zn, rep, err));
    rep->torch_bytes = zn;
    char label[PG_ERR_MSG_MAX / 2];
    snprintf(label, sizeof label, "%s (decompressed)", in);
    rc = pg_tz_open(&z, zip, zn, label, err);
    if (!rc) rc = recognise(&m, pg_tz_root(z), o->format, &fmt, rep);
    if (!rc) {
      snprintf(rep->format, sizeof rep->format, "%s", fmt);
      rc = strcmp(fmt, "wm") == 0 ? read_wm(&m, pg_tz_root(z))
                                  : read_int8_per_row(&m, pg_tz_root(z));
    }
  }
  if (!rc) rc = sort_tensors(&m);
  if (!rc) {
    if (o->arch) {
      a = *o->arch;
    } else if (o->arch_path) {
      rc = pg_arch_load(&a, o->arch_path, err);
    } else {
      rc = derive_arch(&m, &a, err);
      rep->arch_derived = 1;
    }
  }
  if (!rc) rc = match_arch(&m, &a, rep->arch_derived, &at, &nat, err);
  if (!rc) rc = write_artifact(&m, &a, at, nat, o, fmt, rep, out, mem, mem_len, err);
  free(at);
  free(m.t);
  pgrp_free(&pg);
  pg_tz_free(z);
  free(zip);
  return rc;
}

/* Decoded bytes allowed for a record file of n bytes (spec/import.md §1). */
static uint64_t decode_cap(size_t n) {
  uint64_t cap = 64ull * n > (64ull << 20) ? 64ull * n : (64ull << 20);
  return cap > (2ull << 30) ? (2ull << 30) : cap;
}

int pg_import_mem(const uint8_t *rec, size_t n, const char *name, const pg_import_opts *o,
                  uint64_t max_decoded, uint8_t **out, size_t *out_len, pg_import_report *rep,
                  pg_err *err) {
  pg_import_report local;
  *out = NULL;
  *out_len = 0;
  if (!rep) rep = &local;
  uint64_t cap = decode_cap(n);
  if (max_decoded && max_decoded < cap) cap = max_decoded;
  int rc = import_core(rec, n, name, cap, o, rep, NULL, out, out_len, err);
  if (!rc) rep->out_bytes = *out_len;
  return rc;
}

int pg_import_run(const char *in, const char *out, const pg_import_opts *o, pg_import_report *rep,
                  pg_err *err) {
  pg_import_report local;
  if (!rep) rep = &local;
  uint8_t *raw = NULL;
  size_t n = 0;
  /* A record file is at most 16,000,000 bytes; 1 GiB leaves room for any that is not. */
  PG_TRY(pg_file_read_all(in, &raw, &n, 1u << 30, err));
  int rc = import_core(raw, n, in, decode_cap(n), o, rep, out, NULL, NULL, err);
  free(raw);
  if (!rc) {
    uint64_t sz = 0;
    rc = pg_file_size(out, &sz, err);
    rep->out_bytes = sz;
  }
  return rc;
}
