/* pg_container.c: reader and writer of the pgolf artifact container v1 and v2 (spec/format.md).
 *
 * The reader trusts nothing: it checks the header, the table, the exact tiling of the file by
 * sections, every checksum, the metadata, the tensor directory and the exact tiling of every DATA
 * section by tensor parts, before it hands out a single tensor. The writer produces the same
 * bytes for the same inputs and writes through a temporary file. */
#include "pg_container.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pg_half.h"
#include "pg_io.h"

/* A fuzzing build computes checksums but does not enforce them, so that mutated inputs reach the
 * parsers behind them (the same choice libpng makes for its CRCs under fuzzing). */
#ifdef PG_FUZZING
#define CHECKSUM_BAD(computed, stored) ((void)(computed), (void)(stored), 0)
#else
#define CHECKSUM_BAD(computed, stored) ((computed) != (stored))
#endif

const uint8_t PG_MAGIC[8] = {0x89, 'P', 'G', 'Z', 0x0d, 0x0a, 0x1a, 0x0a};

const char *pg_section_kind_name(int kind) {
  switch (kind) {
  case PG_SEC_META: return "meta";
  case PG_SEC_TENSORS: return "tensors";
  case PG_SEC_DATA: return "data";
  case PG_SEC_TOKENIZER: return "tokenizer";
  case PG_SEC_CODE: return "code";
  default: return "unknown";
  }
}

const char *pg_part_role_name(int role) {
  static const char *names[] = {"values", "scales", "lqer_a", "lqer_a_scale", "lqer_b",
                                "lqer_b_scales", "row_perm"};
  return role >= 0 && role < PG_PART_COUNT ? names[role] : "unknown";
}

/* ------------------------------------------------------------------------------------------ */
/* Shared rules */

static const struct {
  const char *key;
  uint8_t type;
} WELL_KNOWN[] = {
    {"arch.json", PG_META_STR},
    {"arch.name", PG_META_STR},
    {"budget.bytes", PG_META_I64},
    {"pack.data_sections", PG_META_ARR},
    {"pgolf.writer", PG_META_STR},
    {"provenance.calib_source", PG_META_STR},
    {"provenance.calib_tokens", PG_META_I64},
    {"provenance.calib_xxh64", PG_META_STR},
    {"provenance.protocol", PG_META_STR},
    {"provenance.record", PG_META_STR},
    {"provenance.seed", PG_META_I64},
    {"quant.method", PG_META_STR},
    {"quant.recipe", PG_META_STR},
    {"tokenizer.name", PG_META_STR},
    {"tokenizer.vocab_size", PG_META_I64},
};

static int well_known_type(const char *key, size_t len) {
  for (size_t i = 0; i < sizeof WELL_KNOWN / sizeof WELL_KNOWN[0]; i++)
    if (strlen(WELL_KNOWN[i].key) == len && !memcmp(WELL_KNOWN[i].key, key, len))
      return WELL_KNOWN[i].type;
  return 0;
}

static int key_chars_ok(const char *k, size_t n) {
  if (n == 0 || n > PG_MAX_NAME) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = k[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

/* UTF-8, 1..255 bytes, no control characters. */
static int name_ok(const uint8_t *s, size_t n) {
  if (n == 0 || n > PG_MAX_NAME) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] == 0x7f) return 0;
  return pg_utf8_valid(s, n, NULL);
}

/* A relative path without '..' components. */
static int code_name_ok(const uint8_t *s, size_t n) {
  if (!name_ok(s, n) || s[0] == '/') return 0;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || s[i] == '/') {
      if (i - start == 2 && s[start] == '.' && s[start + 1] == '.') return 0;
      start = i + 1;
    }
  }
  return 1;
}

/* Bytes of one row_perm entry: u16 while every row index fits, else u32. */
static unsigned pg_perm_width(uint64_t rows) { return rows <= 65536 ? 2 : 4; }

/* Expected part sizes of a tensor (UINT64_MAX where absent or on overflow). */
static void expected_parts(const pg_tensor_info *t, uint64_t sz[PG_PART_COUNT]) {
  for (int r = 0; r < PG_PART_COUNT; r++) sz[r] = UINT64_MAX;
  unsigned bits = pg_qtype_bits(t->qtype);
  if (pg_qtype_is_int(t->qtype)) {
    sz[PG_PART_VALUES] = t->packing ? pg_packed_bytes(t->numel, bits) : t->numel;
    sz[PG_PART_SCALES] = t->scale_kind == PG_SCALE_ROW_F16 ? t->rows * 2 : 4;
    if (t->lqer_rank) {
      uint64_t na = t->rows * t->lqer_rank, nb = t->cols * t->lqer_rank;
      sz[PG_PART_LQER_A] = t->packing ? pg_packed_bytes(na, 2) : na;
      sz[PG_PART_LQER_A_SCALE] = 2;
      sz[PG_PART_LQER_B] = t->packing ? pg_packed_bytes(nb, 4) : nb;
      sz[PG_PART_LQER_B_SCALES] = nb / PG_LQER_GROUP * 2;
    }
    if (t->perm == PG_PERM_STORED) sz[PG_PART_ROW_PERM] = t->rows * pg_perm_width(t->rows);
  } else {
    sz[PG_PART_VALUES] = t->numel * (bits / 8);
  }
}

/* Validate the layout fields of a tensor and derive numel/rows/cols. `where` names the place
 * for messages (file or NULL), off the file offset. */
static int tensor_layout_check(pg_tensor_info *t, uint64_t max_elements, const char *file,
                               uint64_t off, const char *ctx, pg_err *err) {
  const char *qn = pg_qtype_name(t->qtype);
  PG_FAIL_IF(!qn, err, PG_E_QTYPE, file, off, "%stensor '%s': unknown qtype %u", ctx, t->name,
             t->qtype);
  int isint = pg_qtype_is_int(t->qtype);
  PG_FAIL_IF(t->packing > 1 || (!isint && t->packing), err, PG_E_QTYPE, file, off,
             "%stensor '%s': packing %u not valid for %s", ctx, t->name, t->packing, qn);
  PG_FAIL_IF(isint ? (t->scale_kind != PG_SCALE_ROW_F16 && t->scale_kind != PG_SCALE_SCALAR_F32)
                   : t->scale_kind != PG_SCALE_NONE,
             err, PG_E_QTYPE, file, off, "%stensor '%s': scale kind %u not valid for %s", ctx,
             t->name, t->scale_kind, qn);
  if (isint) {
    unsigned b = pg_qtype_bits(t->qtype);
    PG_FAIL_IF(t->qmin < pg_int_min(b) || t->qmax > pg_int_max(b) || t->qmin > t->qmax, err,
               PG_E_QTYPE, file, off, "%stensor '%s': range [%d, %d] not inside %s [%d, %d]", ctx,
               t->name, t->qmin, t->qmax, qn, pg_int_min(b), pg_int_max(b));
  } else {
    PG_FAIL_IF(t->qmin || t->qmax, err, PG_E_MALFORMED, file, off,
               "%stensor '%s': a float tensor declares a value range", ctx, t->name);
  }
  PG_FAIL_IF(t->ndim > PG_MAX_DIMS, err, PG_E_LIMIT, file, off,
             "%stensor '%s': %u dimensions, limit %d", ctx, t->name, t->ndim, PG_MAX_DIMS);
  PG_FAIL_IF(isint && t->ndim == 0, err, PG_E_QTYPE, file, off,
             "%stensor '%s': an integer tensor needs at least one dimension", ctx, t->name);
  /* The product is checked with zero dimensions counted as 1, so no partial product (rows,
   * cols) can overflow either, even when the element count is 0. */
  uint64_t n = 1, span = 1;
  for (unsigned d = 0; d < t->ndim; d++) {
    PG_FAIL_IF(pg_mul_overflow_u64(span, t->dims[d] ? t->dims[d] : 1, &span), err,
               PG_E_DIMS_OVERFLOW, file, off,
               "%stensor '%s': the product of its dimensions overflows 64 bits", ctx, t->name);
    n *= t->dims[d];
  }
  PG_FAIL_IF(span > max_elements, err, PG_E_LIMIT, file, off,
             "%stensor '%s': %llu elements, limit %llu", ctx, t->name, (unsigned long long)span,
             (unsigned long long)max_elements);
  t->numel = n;
  t->rows = t->ndim ? t->dims[0] : 1;
  t->cols = 1;
  for (unsigned d = 1; d < t->ndim; d++) t->cols *= t->dims[d];
  PG_FAIL_IF(t->order > PG_ORDER_COLS || t->perm > PG_PERM_STORED, err, PG_E_QTYPE, file, off,
             "%stensor '%s': unknown value order %u or row permutation kind %u", ctx, t->name,
             t->order, t->perm);
  PG_FAIL_IF((t->order || t->perm) && (!isint || t->packing || t->ndim < 2), err, PG_E_QTYPE,
             file, off,
             "%stensor '%s': a value order or row permutation needs an integer tensor of 2 or "
             "more dimensions, one value per byte",
             ctx, t->name);
  if (t->lqer_rank) {
    PG_FAIL_IF(t->lqer_rank > PG_MAX_LQER_RANK, err, PG_E_LIMIT, file, off,
               "%stensor '%s': LQER rank %u, limit %d", ctx, t->name, t->lqer_rank,
               PG_MAX_LQER_RANK);
    PG_FAIL_IF(!isint || t->scale_kind != PG_SCALE_ROW_F16 || t->ndim != 2, err, PG_E_QTYPE,
               file, off, "%stensor '%s': LQER needs a 2-D integer tensor with row scales", ctx,
               t->name);
    PG_FAIL_IF((t->cols * t->lqer_rank) % PG_LQER_GROUP != 0, err, PG_E_QTYPE, file, off,
               "%stensor '%s': LQER rank*cols = %llu is not a multiple of %d", ctx, t->name,
               (unsigned long long)(t->cols * t->lqer_rank), PG_LQER_GROUP);
  }
  return PG_OK;
}

/* A LEB128 varint at d[*pos..n): 1..10 bytes, minimal (no high zero byte), at most 2^64 - 1.
 * Returns 0 on success, 1 when the bytes end inside it, 2 when it is not minimal or too long. */
static int get_varint(const uint8_t *d, size_t n, size_t *pos, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned k = 0; k < 10; k++) {
    if (*pos >= n) return 1;
    uint8_t b = d[(*pos)++];
    if (k == 9 && b > 1) return 2;
    x |= (uint64_t)(b & 0x7f) << (7 * k);
    if (!(b & 0x80)) {
      if (k > 0 && b == 0) return 2;
      *v = x;
      return PG_OK;
    }
  }
  return 2;
}

static void put_varint(pg_buf *b, uint64_t v) {
  while (v >= 0x80) {
    pg_buf_u8(b, (uint8_t)(v | 0x80));
    v >>= 7;
  }
  pg_buf_u8(b, (uint8_t)v);
}

/* ------------------------------------------------------------------------------------------ */
/* Reader */

struct pg_artifact {
  char *name;
  pg_map map;
  const uint8_t *data;
  size_t len;
  uint16_t cver, qver;
  uint64_t head; /* bytes of the header and the table */
  uint32_t nsec;
  pg_section *secs;
  /* Decoded sections, on demand. raw[i] is NULL until decoded; raw_own[i] is 1 where it is
   * malloc'd (codec none points into the file and costs nothing); held[i] is 1 where a caller
   * holds it (pg_artifact_section_raw) or the reader does (META, TENSORS): those are never
   * evicted. The others are a cache: before a decode, least recently used sections go until
   * the new one fits in lim.max_cache bytes (or nothing else can go); `used[i]` is the call
   * (`epoch`) that last touched a section, and nothing the current call touched is evicted, so
   * pointers live through one call. A section decoded a second time is kept (kept[i], outside the
   * cache's count) until pg_artifact_trim: however a file spreads its tensors' parts over its
   * sections, a walk over the tensors then decodes each section at most twice, and holds at most
   * the decoded total of the file (spec/format.md §7), where a cache alone would decode a large
   * section once per tensor. */
  uint8_t **raw;
  uint8_t *raw_own;
  uint8_t *held;
  uint8_t *decoded; /* times section i was decoded, up to 2 */
  uint8_t *kept;
  uint64_t *used;
  uint64_t epoch;
  uint64_t cached; /* malloc'd decoded bytes not held */
  uint32_t meta_sec, dir_sec;
  int64_t tok_sec;
  uint32_t nmeta;
  pg_meta_entry *meta;
  uint32_t ntens;
  pg_tensor_info *tens;
  uint32_t ncode;
  uint32_t *code_secs;
  char (*code_names)[PG_MAX_NAME + 1]; /* checked at open */
  uint16_t *code_name_len;
  pg_read_limits lim;
};

uint64_t pg_artifact_raw_bound(uint64_t file_size) {
  /* a file is at most SIZE_MAX bytes; the product cannot overflow for any file that exists,
   * and saturating keeps the function total */
  uint64_t b = file_size > UINT64_MAX / PG_RAW_RATIO ? UINT64_MAX : file_size * PG_RAW_RATIO;
  return b < PG_RAW_FLOOR ? PG_RAW_FLOOR : b;
}

typedef struct cursor {
  const uint8_t *p;
  size_t n, pos;
} cursor;

const char *pg_artifact_name(const pg_artifact *a) { return a->name; }
uint64_t pg_artifact_file_size(const pg_artifact *a) { return a->len; }
uint16_t pg_artifact_container_version(const pg_artifact *a) { return a->cver; }
uint16_t pg_artifact_quant_layout_version(const pg_artifact *a) { return a->qver; }
uint64_t pg_artifact_head_size(const pg_artifact *a) { return a->head; }
uint32_t pg_artifact_section_count(const pg_artifact *a) { return a->nsec; }
const pg_section *pg_artifact_section(const pg_artifact *a, uint32_t i) {
  return i < a->nsec ? &a->secs[i] : NULL;
}
uint32_t pg_artifact_meta_count(const pg_artifact *a) { return a->nmeta; }
const pg_meta_entry *pg_artifact_meta(const pg_artifact *a, uint32_t i) {
  return i < a->nmeta ? &a->meta[i] : NULL;
}
uint32_t pg_artifact_tensor_count(const pg_artifact *a) { return a->ntens; }
const pg_tensor_info *pg_artifact_tensor(const pg_artifact *a, uint32_t i) {
  return i < a->ntens ? &a->tens[i] : NULL;
}
int64_t pg_artifact_tokenizer_section(const pg_artifact *a) { return a->tok_sec; }
uint32_t pg_artifact_code_count(const pg_artifact *a) { return a->ncode; }

const pg_meta_entry *pg_artifact_meta_find(const pg_artifact *a, const char *key) {
  size_t n = strlen(key);
  for (uint32_t i = 0; i < a->nmeta; i++)
    if (a->meta[i].key_len == n && !memcmp(a->meta[i].key, key, n)) return &a->meta[i];
  return NULL;
}

int64_t pg_artifact_tensor_find(const pg_artifact *a, const char *name) {
  for (uint32_t i = 0; i < a->ntens; i++)
    if (!strcmp(a->tens[i].name, name)) return i;
  return -1;
}

int64_t pg_meta_arr_i64(const pg_meta_entry *e, uint32_t i) {
  return (int64_t)pg_ld64(e->arr + 8 * (size_t)i);
}
double pg_meta_arr_f64(const pg_meta_entry *e, uint32_t i) {
  uint64_t u = pg_ld64(e->arr + 8 * (size_t)i);
  double d;
  memcpy(&d, &u, 8);
  return d;
}
/* A string's length inside an array: u32 (v1) or a varint (v2), both checked at open. */
static const uint8_t *arr_str_len(const pg_meta_entry *e, const uint8_t *p, uint32_t *len) {
  if (!e->compact) {
    *len = pg_ld32(p);
    return p + 4;
  }
  size_t pos = 0;
  uint64_t v = 0;
  get_varint(p, 10, &pos, &v);
  *len = (uint32_t)v;
  return p + pos;
}

void pg_meta_arr_str(const pg_meta_entry *e, uint32_t i, const char **s, uint32_t *len) {
  const uint8_t *p = e->arr;
  for (uint32_t k = 0; k < i; k++) {
    p = arr_str_len(e, p, len);
    p += *len;
  }
  *s = (const char *)arr_str_len(e, p, len);
}

void pg_artifact_free(pg_artifact *a) {
  if (!a) return;
  if (a->raw)
    for (uint32_t i = 0; i < a->nsec; i++)
      if (a->raw_own[i]) free(a->raw[i]);
  free(a->raw);
  free(a->raw_own);
  free(a->held);
  free(a->decoded);
  free(a->kept);
  free(a->used);
  free(a->secs);
  free(a->meta);
  free(a->tens);
  free(a->code_secs);
  free(a->code_names);
  free(a->code_name_len);
  pg_file_unmap(&a->map);
  free(a->name);
  free(a);
}

/* Drop a decoded section (never one that is held). */
static void drop(pg_artifact *a, uint32_t i) {
  if (!a->raw[i] || a->held[i] || a->kept[i]) return;
  if (a->raw_own[i]) {
    free(a->raw[i]);
    a->cached -= a->secs[i].raw_size;
  }
  a->raw[i] = NULL;
  a->raw_own[i] = 0;
}

/* Return a kept section to the cache, which may then let it go. */
static void unkeep(pg_artifact *a, uint32_t i) {
  if (!a->kept[i] || a->held[i]) return;
  a->kept[i] = 0;
  a->cached += a->secs[i].raw_size;
}

/* Evict cached sections, least recently used first, until `need` more bytes fit in the cache
 * (or, with need = UINT64_MAX, everything evictable). Nothing the current call touched goes. */
static void make_room(pg_artifact *a, uint64_t need) {
  while (a->cached && (need == UINT64_MAX || a->cached + need > a->lim.max_cache)) {
    uint32_t victim = UINT32_MAX;
    for (uint32_t i = 0; i < a->nsec; i++)
      if (a->raw_own[i] && !a->held[i] && a->used[i] != a->epoch &&
          (victim == UINT32_MAX || a->used[i] < a->used[victim]))
        victim = i;
    if (victim == UINT32_MAX) return;
    drop(a, victim);
  }
}

/* The raw checksum as the file keeps it: XXH64, of which v2 keeps the low 32 bits. */
static uint64_t raw_sum(const pg_artifact *a, const uint8_t *p, uint64_t n) {
  uint64_t h = XXH64(p, (size_t)n, 0);
  return a->cver == PG_CONTAINER_V1 ? h : (h & 0xffffffffu);
}

/* Decoded bytes of section i, decoding it when needed; hold = 1 keeps it until released. */
static int section_get(pg_artifact *a, uint32_t i, int hold, const uint8_t **raw, pg_err *err) {
  *raw = NULL;
  PG_FAIL_IF(i >= a->nsec, err, PG_E_ARG, a->name, PG_NO_OFFSET, "no section %u", i);
  a->used[i] = a->epoch;
  if (a->raw[i]) {
    if (hold && !a->held[i] && a->raw_own[i] && !a->kept[i]) a->cached -= a->secs[i].raw_size;
    if (hold) a->held[i] = 1;
    *raw = a->raw[i];
    return PG_OK;
  }
  const pg_section *s = &a->secs[i];
  const uint8_t *stored = a->data + s->offset;
  static const uint8_t empty[1] = {0};
  if (s->codec.codec == PG_CODEC_NONE && s->codec.transform == PG_TRANSFORM_NONE) {
    PG_FAIL_IF(s->stored_size != s->raw_size, err, PG_E_SIZE_MISMATCH, a->name, s->offset,
               "section %u: codec none but stored %llu != raw %llu bytes", i,
               (unsigned long long)s->stored_size, (unsigned long long)s->raw_size);
    PG_FAIL_IF(CHECKSUM_BAD(raw_sum(a, stored, s->raw_size), s->raw_xxh64), err, PG_E_CHECKSUM,
               a->name, s->offset, "section %u (%s): raw checksum mismatch", i,
               pg_section_kind_name(s->kind));
    a->raw[i] = (uint8_t *)(s->raw_size ? stored : empty);
    a->raw_own[i] = 0;
    a->held[i] |= (uint8_t)hold;
    *raw = a->raw[i];
    return PG_OK;
  }
  make_room(a, s->raw_size);
  const size_t want = s->raw_size ? (size_t)s->raw_size : 1;
  uint8_t *buf = malloc(want);
  if (!buf) { /* let the cache go before calling it a failure */
    make_room(a, UINT64_MAX);
    buf = malloc(want);
  }
  PG_FAIL_IF(!buf, err, PG_E_NOMEM, a->name, s->offset,
             "section %u (%s): out of memory for its %llu decoded bytes", i,
             pg_section_kind_name(s->kind), (unsigned long long)s->raw_size);
  int rc = pg_codec_decode(&s->codec, stored, (size_t)s->stored_size, buf, (size_t)s->raw_size,
                           a->name, s->offset, err);
  if (rc == PG_OK && CHECKSUM_BAD(raw_sum(a, buf, s->raw_size), s->raw_xxh64))
    rc = pg_err_set(err, PG_E_CHECKSUM, a->name, s->offset,
                    "section %u (%s): raw checksum mismatch", i, pg_section_kind_name(s->kind));
  if (rc != PG_OK) {
    free(buf);
    return rc;
  }
  a->raw[i] = buf;
  a->raw_own[i] = 1;
  a->held[i] = (uint8_t)hold;
  if (a->decoded[i] < 2) a->decoded[i]++;
  a->kept[i] = a->decoded[i] == 2;
  if (!hold && !a->kept[i]) a->cached += s->raw_size;
  *raw = buf;
  return PG_OK;
}

int pg_artifact_section_raw(pg_artifact *a, uint32_t i, const uint8_t **raw, pg_err *err) {
  a->epoch++;
  return section_get(a, i, 1, raw, err);
}

void pg_artifact_trim(pg_artifact *a) {
  if (!a) return;
  a->epoch++;
  for (uint32_t i = 0; i < a->nsec; i++) unkeep(a, i);
  make_room(a, UINT64_MAX);
}

void pg_artifact_section_release(pg_artifact *a, uint32_t i) {
  if (i >= a->nsec || i == a->meta_sec || i == a->dir_sec || !a->held[i]) return;
  a->held[i] = 0;
  if (a->raw_own[i] && !a->kept[i]) a->cached += a->secs[i].raw_size;
  drop(a, i);
}

/* Cursor reads inside a decoded section; a short read is a malformed section. */
#define CUR_NEED(c, k, what)                                                                  \
  PG_FAIL_IF((c)->n - (c)->pos < (size_t)(k), err, PG_E_MALFORMED, a->name, sec->offset,     \
             "%s section byte %zu: ends inside %s", pg_section_kind_name(sec->kind), (c)->pos, \
             what)

/* A length or count inside META or TENSORS: w1 bytes in v1; w2 bytes in v2, or a varint where
 * w2 is 0. Limits on the value are the caller's. */
static int get_len(const pg_artifact *a, const pg_section *sec, cursor *c, unsigned w1,
                   unsigned w2, uint64_t *v, const char *what, pg_err *err) {
  const unsigned w = a->cver == PG_CONTAINER_V1 ? w1 : w2;
  const char *kn = pg_section_kind_name(sec->kind);
  const size_t at = c->pos;
  if (w) {
    PG_FAIL_IF(c->n - c->pos < w, err, PG_E_MALFORMED, a->name, sec->offset,
               "%s section byte %zu: ends inside %s", kn, at, what);
    *v = w == 1 ? c->p[at] : w == 2 ? pg_ld16(c->p + at) : pg_ld32(c->p + at);
    c->pos += w;
    return PG_OK;
  }
  int r = get_varint(c->p, c->n, &c->pos, v);
  PG_FAIL_IF(r == 1, err, PG_E_MALFORMED, a->name, sec->offset,
             "%s section byte %zu: ends inside %s", kn, at, what);
  PG_FAIL_IF(r == 2, err, PG_E_MALFORMED, a->name, sec->offset,
             "%s section byte %zu: %s is not a minimal varint", kn, at, what);
  return PG_OK;
}

static int parse_meta(pg_artifact *a, pg_err *err) {
  const pg_section *sec = &a->secs[a->meta_sec];
  PG_FAIL_IF(sec->raw_size > PG_MAX_META_RAW, err, PG_E_LIMIT, a->name, sec->offset,
             "meta section holds %llu bytes, limit %llu", (unsigned long long)sec->raw_size,
             (unsigned long long)PG_MAX_META_RAW);
  const uint8_t *raw;
  PG_TRY(pg_artifact_section_raw(a, a->meta_sec, &raw, err));
  cursor c = {raw, (size_t)sec->raw_size, 0}, *cp = &c;
  uint64_t n64;
  PG_TRY(get_len(a, sec, cp, 4, 0, &n64, "the entry count", err));
  PG_FAIL_IF(n64 > PG_MAX_META_ENTRIES, err, PG_E_LIMIT, a->name, sec->offset,
             "%llu metadata entries, limit %d", (unsigned long long)n64, PG_MAX_META_ENTRIES);
  const uint32_t n = (uint32_t)n64;
  PG_FAIL_IF((uint64_t)n * 4 > c.n, err, PG_E_MALFORMED, a->name, sec->offset,
             "%u metadata entries cannot fit in %zu bytes", n, c.n);
  a->meta = calloc(n ? n : 1, sizeof *a->meta);
  PG_FAIL_IF(!a->meta, err, PG_E_NOMEM, a->name, sec->offset, "cannot allocate metadata");
  for (uint32_t i = 0; i < n; i++) {
    pg_meta_entry *e = &a->meta[i];
    size_t at = c.pos;
    uint64_t kl;
    e->compact = a->cver != PG_CONTAINER_V1;
    PG_TRY(get_len(a, sec, cp, 2, 1, &kl, "a key length", err));
    e->key_len = (uint16_t)kl;
    CUR_NEED(cp, e->key_len, "a key");
    e->key = (const char *)raw + c.pos;
    c.pos += e->key_len;
    PG_FAIL_IF(!key_chars_ok(e->key, e->key_len), err, PG_E_MALFORMED, a->name, sec->offset,
               "meta section byte %zu: key %u is not 1..255 characters of [a-z0-9_.-]", at, i);
    if (i > 0) {
      const pg_meta_entry *p = &a->meta[i - 1];
      size_t m = p->key_len < e->key_len ? p->key_len : e->key_len;
      int cmp = memcmp(p->key, e->key, m);
      if (cmp == 0) cmp = (p->key_len > e->key_len) - (p->key_len < e->key_len);
      PG_FAIL_IF(cmp == 0, err, PG_E_DUPLICATE, a->name, sec->offset,
                 "meta section byte %zu: duplicate key '%.*s'", at, (int)e->key_len, e->key);
      PG_FAIL_IF(cmp > 0, err, PG_E_MALFORMED, a->name, sec->offset,
                 "meta section byte %zu: key '%.*s' out of ascending order", at,
                 (int)e->key_len, e->key);
    }
    CUR_NEED(cp, 1, "a type");
    e->type = raw[c.pos++];
    uint8_t t = e->type;
    uint32_t count = 1;
    if (t == PG_META_ARR) {
      CUR_NEED(cp, 1, "an array header");
      e->elem_type = raw[c.pos++];
      uint64_t cnt;
      PG_TRY(get_len(a, sec, cp, 4, 0, &cnt, "an array header", err));
      PG_FAIL_IF(cnt > c.n - c.pos, err, PG_E_MALFORMED, a->name, sec->offset,
                 "meta section byte %zu: key '%.*s': %llu elements cannot fit", at,
                 (int)e->key_len, e->key, (unsigned long long)cnt);
      count = (uint32_t)cnt;
      t = e->elem_type;
      PG_FAIL_IF(t < PG_META_I64 || t > PG_META_BOOL, err, PG_E_MALFORMED, a->name, sec->offset,
                 "meta section byte %zu: key '%.*s': unknown array element type %u", at,
                 (int)e->key_len, e->key, t);
      e->count = count;
      e->arr = raw + c.pos;
    } else {
      PG_FAIL_IF(t < PG_META_I64 || t > PG_META_BOOL, err, PG_E_MALFORMED, a->name, sec->offset,
                 "meta section byte %zu: key '%.*s': unknown type %u", at, (int)e->key_len,
                 e->key, t);
    }
    for (uint32_t k = 0; k < count; k++) {
      switch (t) {
      case PG_META_I64:
      case PG_META_F64: {
        CUR_NEED(cp, 8, "a number");
        uint64_t u = pg_ld64(raw + c.pos);
        if (e->type != PG_META_ARR) {
          e->i64 = (int64_t)u;
          memcpy(&e->f64, &u, 8);
          if (t == PG_META_I64) e->f64 = (double)e->i64;
        }
        c.pos += 8;
        break;
      }
      case PG_META_BOOL:
        CUR_NEED(cp, 1, "a bool");
        PG_FAIL_IF(raw[c.pos] > 1, err, PG_E_MALFORMED, a->name, sec->offset,
                   "meta section byte %zu: key '%.*s': bool value %u", c.pos, (int)e->key_len,
                   e->key, raw[c.pos]);
        if (e->type != PG_META_ARR) e->b = raw[c.pos];
        c.pos += 1;
        break;
      case PG_META_STR: {
        uint64_t len64;
        PG_TRY(get_len(a, sec, cp, 4, 0, &len64, "a string length", err));
        CUR_NEED(cp, len64, "a string");
        const uint32_t len = (uint32_t)len64;
        size_t bad;
        PG_FAIL_IF(!pg_utf8_valid(raw + c.pos, len, &bad), err, PG_E_MALFORMED, a->name,
                   sec->offset, "meta section byte %zu: key '%.*s': invalid UTF-8", c.pos + bad,
                   (int)e->key_len, e->key);
        if (e->type != PG_META_ARR) {
          e->str = (const char *)raw + c.pos;
          e->count = len;
        }
        c.pos += len;
        break;
      }
      }
    }
    if (e->type == PG_META_ARR) e->arr_bytes = (size_t)(raw + c.pos - e->arr);
    int want = well_known_type(e->key, e->key_len);
    PG_FAIL_IF(want && want != e->type, err, PG_E_META_TYPE, a->name, sec->offset,
               "meta section byte %zu: key '%.*s' must be of type %d, found %d", at,
               (int)e->key_len, e->key, want, e->type);
  }
  PG_FAIL_IF(c.pos != c.n, err, PG_E_MALFORMED, a->name, sec->offset,
             "meta section byte %zu: %zu bytes after the last entry", c.pos, c.n - c.pos);
  a->nmeta = n;
  PG_FAIL_IF(!pg_artifact_meta_find(a, "pgolf.writer"), err, PG_E_MALFORMED, a->name,
             sec->offset, "meta section lacks the required key 'pgolf.writer'");
  return PG_OK;
}

typedef struct part_ref {
  uint32_t section, tensor;
  int role;
  uint64_t offset, size;
} part_ref;

static int cmp_part(const void *x, const void *y) {
  const part_ref *p = x, *q = y;
  if (p->section != q->section) return p->section < q->section ? -1 : 1;
  if (p->offset != q->offset) return p->offset < q->offset ? -1 : 1;
  if (p->size != q->size) return p->size < q->size ? -1 : 1;
  return (p->tensor > q->tensor) - (p->tensor < q->tensor);
}

/* C11's qsort passes no context, so each element carries the name it sorts by: no state is
 * shared between readers on different threads. */
typedef struct name_ref {
  const char *name;
} name_ref;
static int cmp_name_ref(const void *x, const void *y) {
  return strcmp(((const name_ref *)x)->name, ((const name_ref *)y)->name);
}

static int parse_dir(pg_artifact *a, pg_err *err) {
  const pg_section *sec = &a->secs[a->dir_sec];
  PG_FAIL_IF(sec->raw_size > PG_MAX_DIR_RAW, err, PG_E_LIMIT, a->name, sec->offset,
             "tensors section holds %llu bytes, limit %llu", (unsigned long long)sec->raw_size,
             (unsigned long long)PG_MAX_DIR_RAW);
  const uint8_t *raw;
  PG_TRY(pg_artifact_section_raw(a, a->dir_sec, &raw, err));
  cursor c = {raw, (size_t)sec->raw_size, 0}, *cp = &c;
  const int v1 = a->cver == PG_CONTAINER_V1;
  uint64_t n64;
  PG_TRY(get_len(a, sec, cp, 4, 0, &n64, "the tensor count", err));
  PG_FAIL_IF(n64 > PG_MAX_TENSORS, err, PG_E_LIMIT, a->name, sec->offset,
             "%llu tensors, limit %d", (unsigned long long)n64, PG_MAX_TENSORS);
  const uint32_t n = (uint32_t)n64;
  /* the smallest entry: v1 31 bytes, v2 11 (a 1-byte name, a scalar, one part) */
  PG_FAIL_IF((uint64_t)n * (v1 ? 31 : 11) > c.n - c.pos, err, PG_E_MALFORMED, a->name,
             sec->offset, "%u tensors cannot fit in %zu bytes", n, c.n);
  a->tens = calloc(n ? n : 1, sizeof *a->tens);
  part_ref *refs = malloc(((size_t)n * PG_PART_COUNT + 1) * sizeof *refs);
  /* v2: parts lie in directory order, back to back in each section: fill[s] is where the next
   * part of section s begins */
  uint64_t *fill = calloc(a->nsec, sizeof *fill);
  if (!a->tens || !refs || !fill) {
    free(fill);
    free(refs);
    return pg_err_set(err, PG_E_NOMEM, a->name, sec->offset, "cannot allocate the directory");
  }
  size_t nrefs = 0;
  int rc = PG_OK;
  char ctx[48];
  for (uint32_t i = 0; i < n && rc == PG_OK; i++) {
    pg_tensor_info *t = &a->tens[i];
    size_t at = c.pos;
#undef CUR_NEED
#define CUR_NEED(c, k, what)                                                                   \
  if ((c)->n - (c)->pos < (size_t)(k)) {                                                      \
    rc = pg_err_set(err, PG_E_MALFORMED, a->name, sec->offset,                                \
                    "tensors section byte %zu: ends inside %s", (c)->pos, what);              \
    break;                                                                                    \
  }
    uint64_t nl64;
    rc = get_len(a, sec, cp, 2, 1, &nl64, "a name length", err);
    if (rc != PG_OK) break;
    const uint16_t nl = (uint16_t)nl64;
    CUR_NEED(cp, nl, "a name");
    if (!name_ok(raw + c.pos, nl)) {
      rc = pg_err_set(err, PG_E_MALFORMED, a->name, sec->offset,
                      "tensors section byte %zu: tensor %u: name is not 1..255 bytes of "
                      "printable UTF-8",
                      at, i);
      break;
    }
    memcpy(t->name, raw + c.pos, nl);
    t->name[nl] = '\0';
    c.pos += nl;
    CUR_NEED(cp, 8, "a tensor header");
    const uint8_t *h = raw + c.pos;
    t->qtype = h[0];
    t->packing = h[1];
    t->scale_kind = h[2];
    t->qmin = (int8_t)h[3];
    t->qmax = (int8_t)h[4];
    t->ndim = h[5];
    t->lqer_rank = h[6];
    /* quant layout 2: the byte that layout 1 reserves holds order (low 4 bits) and perm kind */
    if (h[7] != 0 && a->qver == PG_QUANT_LAYOUT_V1) {
      rc = pg_err_set(err, PG_E_MALFORMED, a->name, sec->offset,
                      "tensors section byte %zu: tensor '%s': reserved byte is %u", c.pos + 7,
                      t->name, h[7]);
      break;
    }
    t->order = h[7] & 15;
    t->perm = h[7] >> 4;
    c.pos += 8;
    if (t->ndim > PG_MAX_DIMS) {
      rc = pg_err_set(err, PG_E_LIMIT, a->name, sec->offset,
                      "tensors section byte %zu: tensor '%s': %u dimensions, limit %d", at,
                      t->name, t->ndim, PG_MAX_DIMS);
      break;
    }
    if (v1) {
      CUR_NEED(cp, 8u * t->ndim, "the dimensions");
      for (unsigned d = 0; d < t->ndim; d++) t->dims[d] = pg_ld64(raw + c.pos + 8 * d);
      c.pos += 8u * t->ndim;
    } else {
      for (unsigned d = 0; d < t->ndim && rc == PG_OK; d++)
        rc = get_len(a, sec, cp, 8, 0, &t->dims[d], "the dimensions", err);
      if (rc != PG_OK) break;
    }
    snprintf(ctx, sizeof ctx, "tensors section byte %zu: ", at);
    rc = tensor_layout_check(t, a->lim.max_elements, a->name, sec->offset, ctx, err);
    if (rc != PG_OK) break;
    uint64_t want[PG_PART_COUNT];
    expected_parts(t, want);
    for (int r = 0; r < PG_PART_COUNT && rc == PG_OK; r++) {
      if (want[r] == UINT64_MAX) {
        if (r == PG_PART_VALUES && t->numel > 0) /* overflow of the byte size */
          rc = pg_err_set(err, PG_E_DIMS_OVERFLOW, a->name, sec->offset,
                          "%stensor '%s': byte size overflows", ctx, t->name);
        continue;
      }
      pg_part *p = &t->parts[r];
      p->present = 1;
      if (v1) {
        CUR_NEED(cp, 20, "a part");
        p->section = pg_ld32(raw + c.pos);
        p->offset = pg_ld64(raw + c.pos + 4);
        p->size = pg_ld64(raw + c.pos + 12);
        c.pos += 20;
      } else {
        uint64_t s64;
        rc = get_len(a, sec, cp, 4, 0, &s64, "a part", err);
        if (rc != PG_OK) break;
        p->section = s64 > UINT32_MAX ? UINT32_MAX : (uint32_t)s64;
        p->offset = p->section < a->nsec ? fill[p->section] : 0;
        p->size = want[r];
      }
      if (p->section >= a->nsec) {
        rc = pg_err_set(err, PG_E_TABLE_RANGE, a->name, sec->offset,
                        "%stensor '%s': %s part names section %u of %u", ctx, t->name,
                        pg_part_role_name(r), p->section, a->nsec);
      } else if (a->secs[p->section].kind != PG_SEC_DATA) {
        rc = pg_err_set(err, PG_E_SECTION_KIND, a->name, sec->offset,
                        "%stensor '%s': %s part names section %u, a %s section", ctx, t->name,
                        pg_part_role_name(r), p->section,
                        pg_section_kind_name(a->secs[p->section].kind));
      } else if (p->size != want[r]) {
        rc = pg_err_set(err, PG_E_SIZE_MISMATCH, a->name, sec->offset,
                        "%stensor '%s': %s part is %llu bytes, shape and qtype give %llu", ctx,
                        t->name, pg_part_role_name(r), (unsigned long long)p->size,
                        (unsigned long long)want[r]);
      } else {
        uint64_t end;
        if (pg_add_overflow_u64(p->offset, p->size, &end) ||
            end > a->secs[p->section].raw_size)
          rc = pg_err_set(err, PG_E_TABLE_RANGE, a->name, sec->offset,
                          "%stensor '%s': %s part [%llu, +%llu) reaches past section %u "
                          "(%llu bytes)",
                          ctx, t->name, pg_part_role_name(r), (unsigned long long)p->offset,
                          (unsigned long long)p->size, p->section,
                          (unsigned long long)a->secs[p->section].raw_size);
        else {
          refs[nrefs++] = (part_ref){p->section, i, r, p->offset, p->size};
          fill[p->section] = end;
        }
      }
    }
  }
#undef CUR_NEED
  if (rc == PG_OK && c.pos != c.n)
    rc = pg_err_set(err, PG_E_MALFORMED, a->name, sec->offset,
                    "tensors section byte %zu: %zu bytes after the last tensor", c.pos,
                    c.n - c.pos);
  if (rc == PG_OK) {
    a->ntens = n;
    /* unique names */
    name_ref *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx)
      rc = pg_err_set(err, PG_E_NOMEM, a->name, sec->offset, "out of memory for %u names", n);
    for (uint32_t i = 0; rc == PG_OK && i < n; i++) idx[i].name = a->tens[i].name;
    if (rc == PG_OK) {
      qsort(idx, n, sizeof *idx, cmp_name_ref);
      for (uint32_t i = 1; i < n; i++)
        if (!strcmp(idx[i].name, idx[i - 1].name)) {
          rc = pg_err_set(err, PG_E_DUPLICATE, a->name, sec->offset,
                          "tensors section: duplicate tensor name '%s'", idx[i].name);
          break;
        }
    }
    free(idx);
  }
  if (rc == PG_OK) {
    /* exact tiling of every DATA section by parts */
    qsort(refs, nrefs, sizeof *refs, cmp_part);
    size_t k = 0;
    for (uint32_t s = 0; s < a->nsec && rc == PG_OK; s++) {
      if (a->secs[s].kind != PG_SEC_DATA) continue;
      uint64_t expect = 0;
      for (; k < nrefs && refs[k].section == s; k++) {
        const part_ref *r = &refs[k];
        if (r->offset < expect) {
          rc = pg_err_set(err, PG_E_OVERLAP, a->name, a->secs[s].offset,
                          "data section %u byte %llu: tensor '%s' %s part overlaps the part "
                          "before it",
                          s, (unsigned long long)r->offset, a->tens[r->tensor].name,
                          pg_part_role_name(r->role));
          break;
        }
        if (r->offset > expect) {
          rc = pg_err_set(err, PG_E_HOLE, a->name, a->secs[s].offset,
                          "data section %u: bytes %llu..%llu belong to no tensor", s,
                          (unsigned long long)expect, (unsigned long long)r->offset);
          break;
        }
        expect = r->offset + r->size;
      }
      if (rc == PG_OK && expect != a->secs[s].raw_size)
        rc = pg_err_set(err, PG_E_TRAILING, a->name, a->secs[s].offset,
                        "data section %u: bytes %llu..%llu after the last part belong to no "
                        "tensor",
                        s, (unsigned long long)expect, (unsigned long long)a->secs[s].raw_size);
    }
  }
  free(refs);
  free(fill);
  return rc;
}

/* Check every CODE section's name and keep a copy of it, one section decoded at a time: a
 * report of the names and sizes (pgsize) then needs no decoding. */
static int parse_code(pg_artifact *a, pg_err *err) {
  a->code_names = calloc(a->ncode ? a->ncode : 1, sizeof *a->code_names);
  a->code_name_len = calloc(a->ncode ? a->ncode : 1, sizeof *a->code_name_len);
  PG_FAIL_IF(!a->code_names || !a->code_name_len, err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
             "out of memory for %u code file names", a->ncode);
  for (uint32_t k = 0; k < a->ncode; k++) {
    uint32_t s = a->code_secs[k];
    const pg_section *sec = &a->secs[s];
    const uint8_t *raw;
    a->epoch++;
    PG_TRY(section_get(a, s, 0, &raw, err));
    PG_FAIL_IF(sec->raw_size < 2 || sec->raw_size - 2 < pg_ld16(raw), err, PG_E_MALFORMED,
               a->name, sec->offset, "code section %u: ends inside its file name", s);
    uint16_t nl = pg_ld16(raw);
    PG_FAIL_IF(!code_name_ok(raw + 2, nl), err, PG_E_MALFORMED, a->name, sec->offset,
               "code section %u: file name is not a safe relative path", s);
    for (uint32_t j = 0; j < k; j++)
      PG_FAIL_IF(a->code_name_len[j] == nl && !memcmp(a->code_names[j], raw + 2, nl), err,
                 PG_E_DUPLICATE, a->name, sec->offset,
                 "code section %u: duplicate file name '%.*s'", s, (int)nl, raw + 2);
    memcpy(a->code_names[k], raw + 2, nl);
    a->code_name_len[k] = nl;
    drop(a, s);
  }
  return PG_OK;
}

int pg_artifact_code(pg_artifact *a, uint32_t i, const char **name, size_t *name_len,
                     const uint8_t **bytes, size_t *len, uint32_t *section, pg_err *err) {
  PG_FAIL_IF(i >= a->ncode, err, PG_E_ARG, a->name, PG_NO_OFFSET, "no code file %u", i);
  uint32_t s = a->code_secs[i];
  uint16_t nl = a->code_name_len[i];
  if (bytes) {
    const uint8_t *raw;
    PG_TRY(pg_artifact_section_raw(a, s, &raw, err));
    *bytes = raw + 2 + nl;
  }
  if (name) *name = a->code_names[i];
  if (name_len) *name_len = nl;
  if (len) *len = (size_t)a->secs[s].raw_size - 2 - nl;
  if (section) *section = s;
  return PG_OK;
}

/* The v1 header and table (spec/format.md, appendix A): fills a->secs and eoff (each entry's
 * file offset); returns where the table ends. */
static int read_table_v1(pg_artifact *a, uint64_t **eoff, uint64_t *table_end, pg_err *err) {
  const uint8_t *d = a->data;
  const char *f = a->name;
  PG_FAIL_IF(a->len < PG_HEADER_SIZE, err, PG_E_TRUNCATED, f, a->len,
             "file is %zu bytes, shorter than the %d-byte header", a->len, PG_HEADER_SIZE);
  PG_FAIL_IF(CHECKSUM_BAD(XXH64(d, 56, 0), pg_ld64(d + 56)), err, PG_E_CHECKSUM, f, 56,
             "header checksum mismatch");
  PG_FAIL_IF(pg_ld32(d + 12) != 0, err, PG_E_HEADER, f, 12, "flags are %u, must be 0",
             pg_ld32(d + 12));
  PG_FAIL_IF(pg_ld32(d + 20) != 0, err, PG_E_HEADER, f, 20, "reserved header bytes not zero");
  for (int i = 40; i < 56; i++)
    PG_FAIL_IF(d[i] != 0, err, PG_E_HEADER, f, (uint64_t)i, "reserved header bytes not zero");
  uint64_t fsize = pg_ld64(d + 24);
  PG_FAIL_IF(fsize > a->len, err, PG_E_TRUNCATED, f, a->len,
             "file is %zu bytes, header declares %llu", a->len, (unsigned long long)fsize);
  PG_FAIL_IF(fsize < a->len, err, PG_E_TRAILING, f, fsize,
             "file is %zu bytes, header declares %llu", a->len, (unsigned long long)fsize);
  uint32_t n = pg_ld32(d + 16);
  PG_FAIL_IF(n == 0 || n > PG_MAX_SECTIONS, err, PG_E_LIMIT, f, 16,
             "section count %u outside 1..%d", n, PG_MAX_SECTIONS);
  uint64_t end = PG_HEADER_SIZE + (uint64_t)PG_ENTRY_SIZE * n;
  PG_FAIL_IF(end > a->len, err, PG_E_TABLE_RANGE, f, PG_HEADER_SIZE,
             "section table of %u entries ends at %llu, past the end of the file (%zu)", n,
             (unsigned long long)end, a->len);
  PG_FAIL_IF(CHECKSUM_BAD(XXH64(d + PG_HEADER_SIZE, (size_t)(end - PG_HEADER_SIZE), 0),
                          pg_ld64(d + 32)),
             err, PG_E_CHECKSUM, f, 32, "section table checksum mismatch");
  a->nsec = n;
  a->secs = calloc(n, sizeof *a->secs);
  *eoff = calloc(n, sizeof **eoff);
  PG_FAIL_IF(!a->secs || !*eoff, err, PG_E_NOMEM, f, PG_NO_OFFSET,
             "out of memory for a table of %u sections", n);
  for (uint32_t i = 0; i < n; i++) {
    const uint8_t *e = d + PG_HEADER_SIZE + (size_t)PG_ENTRY_SIZE * i;
    const uint64_t eo = PG_HEADER_SIZE + (uint64_t)PG_ENTRY_SIZE * i;
    pg_section *s = &a->secs[i];
    (*eoff)[i] = eo;
    s->kind = pg_ld16(e);
    s->codec.codec = e[2];
    s->codec.level = e[3];
    s->codec.window = e[4];
    s->codec.transform = e[5];
    s->codec.stride = e[6];
    s->offset = pg_ld64(e + 8);
    s->stored_size = pg_ld64(e + 16);
    s->raw_size = pg_ld64(e + 24);
    s->stored_xxh64 = pg_ld64(e + 32);
    s->raw_xxh64 = pg_ld64(e + 40);
    PG_FAIL_IF(s->kind < PG_SEC_META || s->kind > PG_SEC_CODE, err, PG_E_SECTION_KIND, f, eo,
               "section %u: unknown kind %u", i, s->kind);
    int bad_res = e[7] != 0;
    for (int k = 48; k < 64; k++) bad_res |= e[k] != 0;
    PG_FAIL_IF(bad_res, err, PG_E_HEADER, f, eo, "section %u: reserved bytes not zero", i);
  }
  *table_end = end;
  return PG_OK;
}

/* The v2 header and table (spec/format.md §1, §2): magic, versions, varint count, compact
 * entries, then the file checksum. Offsets follow from the sizes (sections back to back), so a
 * declared size that does not add up to the file is a truncated file or trailing bytes. */
static int read_table_v2(pg_artifact *a, uint64_t **eoff, uint64_t *table_end, pg_err *err) {
  const uint8_t *d = a->data;
  const char *f = a->name;
  const size_t len = a->len;
  size_t pos = PG_V2_FIXED;
  uint64_t n;
  int vr = get_varint(d, len, &pos, &n);
  PG_FAIL_IF(vr == 1, err, PG_E_TRUNCATED, f, len, "file ends inside the section count");
  PG_FAIL_IF(vr == 2, err, PG_E_MALFORMED, f, PG_V2_FIXED,
             "section count is not a minimal varint");
  PG_FAIL_IF(n == 0 || n > PG_MAX_SECTIONS, err, PG_E_LIMIT, f, PG_V2_FIXED,
             "section count %llu outside 1..%d", (unsigned long long)n, PG_MAX_SECTIONS);
  a->nsec = (uint32_t)n;
  a->secs = calloc(n, sizeof *a->secs);
  *eoff = calloc(n, sizeof **eoff);
  PG_FAIL_IF(!a->secs || !*eoff, err, PG_E_NOMEM, f, PG_NO_OFFSET,
             "out of memory for a table of %u sections", a->nsec);
  for (uint32_t i = 0; i < a->nsec; i++) {
    pg_section *s = &a->secs[i];
    const uint64_t eo = pos;
    (*eoff)[i] = eo;
    PG_FAIL_IF(len - pos < 6, err, PG_E_TRUNCATED, f, len,
               "file ends inside section table entry %u", i);
    s->kind = d[pos];
    s->codec.codec = d[pos + 1];
    s->codec.level = d[pos + 2];
    s->codec.window = d[pos + 3];
    s->codec.transform = d[pos + 4];
    s->codec.stride = d[pos + 5];
    pos += 6;
    for (int k = 0; k < 2; k++) {
      uint64_t v;
      const uint64_t at = pos;
      vr = get_varint(d, len, &pos, &v);
      PG_FAIL_IF(vr == 1, err, PG_E_TRUNCATED, f, len,
                 "file ends inside section table entry %u", i);
      PG_FAIL_IF(vr == 2, err, PG_E_MALFORMED, f, at,
                 "section %u: %s size is not a minimal varint", i, k ? "raw" : "stored");
      if (k) s->raw_size = v;
      else s->stored_size = v;
    }
    PG_FAIL_IF(len - pos < 4, err, PG_E_TRUNCATED, f, len,
               "file ends inside section table entry %u", i);
    s->raw_xxh64 = pg_ld32(d + pos);
    pos += 4;
  }
  PG_FAIL_IF(len - pos < 8, err, PG_E_TRUNCATED, f, len, "file ends inside the file checksum");
  const size_t ck = pos;
  pos += 8;
  /* offsets, and the file's size they imply */
  uint64_t off = pos;
  for (uint32_t i = 0; i < a->nsec; i++) {
    pg_section *s = &a->secs[i];
    s->offset = off;
    PG_FAIL_IF(pg_add_overflow_u64(off, s->stored_size, &off) || off > len, err,
               PG_E_TRUNCATED, f, len,
               "file is %zu bytes; its section table declares more (section %u ends past it)",
               len, i);
  }
  PG_FAIL_IF(off < len, err, PG_E_TRAILING, f, off, "%llu bytes after the last section",
             (unsigned long long)(len - off));
  /* one checksum over every byte of the file but its own 8 */
  XXH64_state_t *st = XXH64_createState();
  PG_FAIL_IF(!st, err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory for a checksum");
  XXH64_reset(st, 0);
  XXH64_update(st, d, ck);
  XXH64_update(st, d + ck + 8, len - ck - 8);
  const uint64_t sum = XXH64_digest(st);
  XXH64_freeState(st);
  PG_FAIL_IF(CHECKSUM_BAD(sum, pg_ld64(d + ck)), err, PG_E_CHECKSUM, f, ck,
             "file checksum mismatch");
  for (uint32_t i = 0; i < a->nsec; i++)
    PG_FAIL_IF(a->secs[i].kind < PG_SEC_META || a->secs[i].kind > PG_SEC_CODE, err,
               PG_E_SECTION_KIND, f, (*eoff)[i], "section %u: unknown kind %u", i,
               a->secs[i].kind);
  *table_end = pos;
  return PG_OK;
}

static int parse_table(pg_artifact *a, pg_err *err) {
  const uint8_t *d = a->data;
  const char *f = a->name;
  PG_FAIL_IF(a->len < 8, err, PG_E_TRUNCATED, f, 0, "file is %zu bytes, shorter than the magic",
             a->len);
  PG_FAIL_IF(memcmp(d, PG_MAGIC, 8) != 0, err, PG_E_MAGIC, f, 0,
             "not a pgolf artifact (wrong magic)");
  PG_FAIL_IF(a->len < PG_V2_FIXED, err, PG_E_TRUNCATED, f, a->len,
             "file is %zu bytes, shorter than its versions", a->len);
  a->cver = pg_ld16(d + 8);
  a->qver = pg_ld16(d + 10);
  PG_FAIL_IF(a->cver != PG_CONTAINER_V1 && a->cver != PG_CONTAINER_V2, err, PG_E_VERSION, f, 8,
             "container version %u; this reader knows versions 1 and 2", a->cver);
  PG_FAIL_IF(a->qver != PG_QUANT_LAYOUT_V1 && a->qver != PG_QUANT_LAYOUT_V2, err, PG_E_VERSION,
             f, 10, "quantization-layout version %u; this reader knows versions 1 and 2",
             a->qver);
  uint64_t *eoff = NULL, table_end = 0;
  int rc = a->cver == PG_CONTAINER_V1 ? read_table_v1(a, &eoff, &table_end, err)
                                      : read_table_v2(a, &eoff, &table_end, err);
  if (rc != PG_OK) {
    free(eoff);
    return rc;
  }
  a->head = table_end;
  const uint32_t n = a->nsec;
  a->raw = calloc(n, sizeof *a->raw);
  a->raw_own = calloc(n, 1);
  a->held = calloc(n, 1);
  a->decoded = calloc(n, 1);
  a->kept = calloc(n, 1);
  a->used = calloc(n, sizeof *a->used);
  a->code_secs = calloc(n, sizeof *a->code_secs);
  if (!a->raw || !a->raw_own || !a->held || !a->decoded || !a->kept || !a->used ||
      !a->code_secs) {
    free(eoff);
    return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory for a table of %u sections",
                      n);
  }
  /* Every decoded byte is paid for by the file (spec/format.md §7): checked with the table,
   * before anything is decoded, so no declared size makes a reader allocate beyond the bound. */
  const uint64_t bound = a->lim.max_total_raw;
  uint64_t total = 0;
  uint64_t expect = table_end;
  int nmeta = 0, ndir = 0;
  a->tok_sec = -1;
  for (uint32_t i = 0; i < n && rc == PG_OK; i++) {
    const uint64_t eo = eoff[i];
    pg_section *s = &a->secs[i];
    rc = pg_codec_spec_check(&s->codec, f, eo + (a->cver == PG_CONTAINER_V1 ? 2 : 1), err);
    if (rc != PG_OK) break;
    if (a->cver == PG_CONTAINER_V1 && s->codec.codec >= PG_CODEC_QC) {
      rc = pg_err_set(err, PG_E_CODEC, f, eo + 2,
                      "section %u: codec %u (%s) belongs to container version 2, not 1", i,
                      s->codec.codec, pg_codec_name(s->codec.codec));
      break;
    }
#define TFAIL(cond, st, o, ...)                                                              \
  if (cond) {                                                                                \
    rc = pg_err_set(err, st, f, o, __VA_ARGS__);                                             \
    break;                                                                                   \
  }
    /* v1 names the field at fault; a v2 entry's sizes are varints: its first byte */
    const uint64_t eo_off = eo + (a->cver == PG_CONTAINER_V1 ? 8 : 0);
    TFAIL(s->raw_size > a->lim.max_section_raw, PG_E_LIMIT,
          eo + (a->cver == PG_CONTAINER_V1 ? 24 : 0), "section %u: raw size %llu, limit %llu",
          i, (unsigned long long)s->raw_size, (unsigned long long)a->lim.max_section_raw);
    total += s->raw_size; /* at most 4096 * 2^30: no overflow */
    uint64_t end;
    TFAIL(pg_add_overflow_u64(s->offset, s->stored_size, &end) || end > a->len,
          PG_E_TABLE_RANGE, eo_off,
          "section %u: [%llu, +%llu) reaches past the end of the file (%zu)", i,
          (unsigned long long)s->offset, (unsigned long long)s->stored_size, a->len);
    TFAIL(s->offset < expect, PG_E_OVERLAP, eo_off,
          "section %u begins at %llu, inside what precedes it (ends at %llu)", i,
          (unsigned long long)s->offset, (unsigned long long)expect);
    TFAIL(s->offset > expect, PG_E_HOLE, eo_off,
          "section %u begins at %llu, leaving a hole from %llu", i,
          (unsigned long long)s->offset, (unsigned long long)expect);
    expect = end;
    /* v1 keeps a checksum of each section's stored bytes; v2 one of the whole file (above) */
    TFAIL(a->cver == PG_CONTAINER_V1 &&
              CHECKSUM_BAD(XXH64(a->data + s->offset, (size_t)s->stored_size, 0),
                           s->stored_xxh64),
          PG_E_CHECKSUM, s->offset, "section %u (%s): stored checksum mismatch", i,
          pg_section_kind_name(s->kind));
    switch (s->kind) {
    case PG_SEC_META:
      a->meta_sec = i;
      nmeta++;
      break;
    case PG_SEC_TENSORS:
      a->dir_sec = i;
      ndir++;
      break;
    case PG_SEC_TOKENIZER:
      TFAIL(a->tok_sec >= 0, PG_E_SECTION_KIND, eo, "a second tokenizer section (%u)", i);
      a->tok_sec = i;
      break;
    case PG_SEC_CODE: a->code_secs[a->ncode++] = i; break;
    default: break;
    }
#undef TFAIL
  }
  free(eoff);
  if (rc != PG_OK) return rc;
  const uint64_t toff = a->cver == PG_CONTAINER_V1 ? PG_HEADER_SIZE : PG_V2_FIXED;
  PG_FAIL_IF(expect < a->len, err, PG_E_TRAILING, f, expect,
             "%llu bytes after the last section", (unsigned long long)(a->len - expect));
  if (total > bound) {
    char why[96] = "this reader's limit";
    if (bound == pg_artifact_raw_bound(a->len))
      snprintf(why, sizeof why, "%d times the file's %zu bytes, at least %llu MiB", PG_RAW_RATIO,
               a->len, (unsigned long long)(PG_RAW_FLOOR >> 20));
    return pg_err_set(err, PG_E_LIMIT, f, toff,
                      "the sections decode to %llu bytes in all, limit %llu (%s)",
                      (unsigned long long)total, (unsigned long long)bound, why);
  }
  PG_FAIL_IF(nmeta != 1, err, PG_E_SECTION_KIND, f, toff,
             "%d meta sections; exactly one is required", nmeta);
  PG_FAIL_IF(ndir != 1, err, PG_E_SECTION_KIND, f, toff,
             "%d tensors sections; exactly one is required", ndir);
  return PG_OK;
}

int pg_artifact_open_mem(pg_artifact **out, const uint8_t *data, size_t len, const char *name,
                         const pg_read_limits *lim, pg_err *err) {
  *out = NULL;
  pg_artifact *a = calloc(1, sizeof *a);
  PG_FAIL_IF(!a, err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate");
  const char *nm = name ? name : "<memory>";
  a->name = malloc(strlen(nm) + 1);
  if (!a->name) {
    free(a);
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate");
  }
  strcpy(a->name, nm);
  a->data = data;
  a->len = len;
  a->lim.max_section_raw = PG_MAX_SECTION_RAW;
  a->lim.max_elements = PG_MAX_ELEMENTS;
  if (lim && lim->max_section_raw && lim->max_section_raw < a->lim.max_section_raw)
    a->lim.max_section_raw = lim->max_section_raw;
  if (lim && lim->max_elements && lim->max_elements < a->lim.max_elements)
    a->lim.max_elements = lim->max_elements;
  a->lim.max_total_raw = pg_artifact_raw_bound(len);
  if (lim && lim->max_total_raw && lim->max_total_raw < a->lim.max_total_raw)
    a->lim.max_total_raw = lim->max_total_raw;
  a->lim.max_cache = lim && lim->max_cache ? lim->max_cache : PG_CACHE_BYTES;
  int rc = parse_table(a, err);
  if (rc == PG_OK) rc = parse_meta(a, err);
  if (rc == PG_OK) rc = parse_dir(a, err);
  if (rc == PG_OK) rc = parse_code(a, err);
  if (rc != PG_OK) {
    pg_artifact_free(a);
    return rc;
  }
  *out = a;
  return PG_OK;
}

int pg_artifact_open(pg_artifact **out, const char *path, const pg_read_limits *lim, pg_err *err) {
  *out = NULL;
  pg_map m;
  PG_TRY(pg_file_map(&m, path, err));
  pg_artifact *a;
  int rc = pg_artifact_open_mem(&a, m.data, m.size, path, lim, err);
  if (rc != PG_OK) {
    pg_file_unmap(&m);
    return rc;
  }
  a->map = m;
  *out = a;
  return PG_OK;
}

/* Decode n signed values of `bits` from a part (packed or one per byte), checking [lo, hi]. */
static int decode_ints(pg_artifact *a, const pg_tensor_info *t, int role, uint64_t n,
                       unsigned bits, int lo, int hi, int8_t *out, pg_err *err) {
  const pg_part *p = &t->parts[role];
  const uint8_t *raw;
  PG_TRY(section_get(a, p->section, 0, &raw, err));
  raw += p->offset;
  const uint64_t soff = a->secs[p->section].offset;
  if (t->packing == PG_PACK_BITS) {
    PG_FAIL_IF(pg_unpack_bits(raw, n, bits, out) != 0, err, PG_E_VALUE_RANGE, a->name, soff,
               "tensor '%s' %s: padding bits of the last byte are not zero", t->name,
               pg_part_role_name(role));
  } else if (n) {
    memcpy(out, raw, (size_t)n);
  }
  for (uint64_t i = 0; i < n; i++)
    PG_FAIL_IF(out[i] < lo || out[i] > hi, err, PG_E_VALUE_RANGE, a->name, soff,
               "tensor '%s' %s: element %llu is %d, outside [%d, %d]", t->name,
               pg_part_role_name(role), (unsigned long long)i, out[i], lo, hi);
  return PG_OK;
}

static int part_bytes(pg_artifact *a, const pg_tensor_info *t, int role, const uint8_t **p,
                      pg_err *err) {
  const uint8_t *raw;
  PG_TRY(section_get(a, t->parts[role].section, 0, &raw, err));
  *p = raw + t->parts[role].offset;
  return PG_OK;
}

/* The stored row order of tensor t: perm[j] is the logical row stored j-th; a stored row_perm is
 * checked to be a permutation of 0..rows-1 (every index below rows, none twice). */
static int load_perm(pg_artifact *a, const pg_tensor_info *t, uint32_t *perm, pg_err *err) {
  const uint64_t rows = t->rows;
  if (t->perm == PG_PERM_NONE) {
    for (uint64_t j = 0; j < rows; j++) perm[j] = (uint32_t)j;
    return PG_OK;
  }
  const uint8_t *p;
  PG_TRY(part_bytes(a, t, PG_PART_ROW_PERM, &p, err));
  const uint64_t soff = a->secs[t->parts[PG_PART_ROW_PERM].section].offset;
  const unsigned w = pg_perm_width(rows);
  uint8_t *seen = calloc(rows ? (size_t)rows : 1, 1);
  PG_FAIL_IF(!seen, err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
             "tensor '%s': out of memory for its row permutation", t->name);
  int rc = PG_OK;
  for (uint64_t j = 0; j < rows; j++) {
    const uint64_t v = w == 2 ? pg_ld16(p + 2 * j) : pg_ld32(p + 4 * j);
    if (v >= rows || seen[v]) {
      rc = pg_err_set(err, PG_E_MALFORMED, a->name, soff,
                      "tensor '%s' row_perm: entry %llu is %llu, %s", t->name,
                      (unsigned long long)j, (unsigned long long)v,
                      v >= rows ? "not a row index" : "a row that appears twice");
      break;
    }
    seen[v] = 1;
    perm[j] = (uint32_t)v;
  }
  free(seen);
  return rc;
}

/* The logical row-major values of integer tensor t, whatever its stored order and row
 * permutation (quant layout 2), range-checked. */
static int tensor_ints(pg_artifact *a, const pg_tensor_info *t, int8_t *out, pg_err *err) {
  const unsigned bits = pg_qtype_bits(t->qtype);
  if (t->order == PG_ORDER_ROWS && t->perm == PG_PERM_NONE)
    return decode_ints(a, t, PG_PART_VALUES, t->numel, bits, t->qmin, t->qmax, out, err);
  const uint64_t rows = t->rows, cols = t->cols;
  int8_t *st = malloc(t->numel ? (size_t)t->numel : 1);
  uint32_t *perm = malloc(rows ? (size_t)rows * sizeof *perm : 1);
  int rc = st && perm ? PG_OK
                      : pg_err_set(err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
                                   "tensor '%s': out of memory for its stored values", t->name);
  if (rc == PG_OK)
    rc = decode_ints(a, t, PG_PART_VALUES, t->numel, bits, t->qmin, t->qmax, st, err);
  if (rc == PG_OK) rc = load_perm(a, t, perm, err);
  if (rc == PG_OK && t->order == PG_ORDER_ROWS) {
    for (uint64_t j = 0; j < rows; j++)
      if (cols) memcpy(out + (size_t)perm[j] * cols, st + j * cols, (size_t)cols);
  } else if (rc == PG_OK) { /* column-major image: stored[c*rows + j] = q[perm[j], c] */
    for (uint64_t c = 0; c < cols; c++) {
      const int8_t *src = st + c * rows;
      for (uint64_t j = 0; j < rows; j++) out[(size_t)perm[j] * cols + c] = src[j];
    }
  }
  free(st);
  free(perm);
  return rc;
}

int pg_artifact_tensor_values(pg_artifact *a, uint32_t i, int8_t *out, pg_err *err) {
  a->epoch++;
  PG_FAIL_IF(i >= a->ntens, err, PG_E_ARG, a->name, PG_NO_OFFSET, "no tensor %u", i);
  const pg_tensor_info *t = &a->tens[i];
  PG_FAIL_IF(!pg_qtype_is_int(t->qtype), err, PG_E_ARG, a->name, PG_NO_OFFSET,
             "tensor '%s' is %s, not an integer tensor", t->name, pg_qtype_name(t->qtype));
  return tensor_ints(a, t, out, err);
}

int pg_artifact_tensor_scales(pg_artifact *a, uint32_t i, const uint8_t **bytes, pg_err *err) {
  PG_FAIL_IF(i >= a->ntens || !a->tens[i].parts[PG_PART_SCALES].present, err, PG_E_ARG, a->name,
             PG_NO_OFFSET, "tensor %u has no scales", i);
  const pg_part *p = &a->tens[i].parts[PG_PART_SCALES];
  const uint8_t *raw;
  PG_TRY(pg_artifact_section_raw(a, p->section, &raw, err));
  *bytes = raw + p->offset;
  return PG_OK;
}

int pg_artifact_tensor_dequant(pg_artifact *a, uint32_t i, float *out, pg_err *err) {
  a->epoch++;
  PG_FAIL_IF(i >= a->ntens, err, PG_E_ARG, a->name, PG_NO_OFFSET, "no tensor %u", i);
  const pg_tensor_info *t = &a->tens[i];
  const uint8_t *v;
  if (!pg_qtype_is_int(t->qtype)) {
    PG_TRY(part_bytes(a, t, PG_PART_VALUES, &v, err));
    for (uint64_t k = 0; k < t->numel; k++) {
      if (t->qtype == PG_QTYPE_F32) {
        uint32_t u = pg_ld32(v + 4 * k);
        memcpy(&out[k], &u, 4);
      } else if (t->qtype == PG_QTYPE_F16) {
        out[k] = pg_f16_to_f32(pg_ld16(v + 2 * k));
      } else {
        out[k] = pg_bf16_to_f32(pg_ld16(v + 2 * k));
      }
    }
    return PG_OK;
  }
  int8_t *q = malloc(t->numel ? (size_t)t->numel : 1);
  uint16_t *sc = NULL;
  int8_t *qa = NULL, *qb = NULL;
  uint16_t *sb = NULL;
  PG_FAIL_IF(!q, err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
             "tensor '%s': out of memory for its %llu values", t->name,
             (unsigned long long)t->numel);
  int rc = tensor_ints(a, t, q, err);
  const uint8_t *sp = NULL;
  if (rc == PG_OK) rc = part_bytes(a, t, PG_PART_SCALES, &sp, err);
  if (rc == PG_OK && t->scale_kind == PG_SCALE_SCALAR_F32) {
    uint32_t u = pg_ld32(sp);
    float s;
    memcpy(&s, &u, 4);
    pg_dequant_scalar(q, s, t->numel, out);
  } else if (rc == PG_OK) {
    sc = malloc(t->rows ? (size_t)t->rows * 2 : 1);
    if (!sc)
      rc = pg_err_set(err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
                      "tensor '%s': out of memory for its scales", t->name);
    for (uint64_t r = 0; rc == PG_OK && r < t->rows; r++) sc[r] = pg_ld16(sp + 2 * r);
    if (rc == PG_OK) pg_dequant_rows(q, sc, t->rows, t->cols, out);
  }
  if (rc == PG_OK && t->lqer_rank) {
    const uint64_t na = t->rows * t->lqer_rank, nb = t->cols * t->lqer_rank;
    qa = malloc(na ? (size_t)na : 1);
    qb = malloc(nb ? (size_t)nb : 1);
    sb = malloc(nb / PG_LQER_GROUP * 2 + 2);
    if (!qa || !qb || !sb)
      rc = pg_err_set(err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
                      "tensor '%s': out of memory for its LQER factors", t->name);
    if (rc == PG_OK) rc = decode_ints(a, t, PG_PART_LQER_A, na, 2, -2, 1, qa, err);
    if (rc == PG_OK) rc = decode_ints(a, t, PG_PART_LQER_B, nb, 4, -8, 7, qb, err);
    const uint8_t *pa = NULL, *pb = NULL;
    if (rc == PG_OK) rc = part_bytes(a, t, PG_PART_LQER_A_SCALE, &pa, err);
    if (rc == PG_OK) rc = part_bytes(a, t, PG_PART_LQER_B_SCALES, &pb, err);
    if (rc == PG_OK) {
      for (uint64_t g = 0; g < nb / PG_LQER_GROUP; g++) sb[g] = pg_ld16(pb + 2 * g);
      pg_lqer_apply(out, t->rows, t->cols, t->lqer_rank, qa, pg_ld16(pa), qb, sb);
    }
  }
  free(q);
  free(sc);
  free(qa);
  free(qb);
  free(sb);
  return rc;
}

int pg_artifact_tensor_row_parts(pg_artifact *a, uint32_t i, uint16_t *scales, int8_t *qa,
                                 uint16_t *sa, int8_t *qb, uint16_t *sb, pg_err *err) {
  a->epoch++;
  PG_FAIL_IF(i >= a->ntens, err, PG_E_ARG, a->name, PG_NO_OFFSET, "no tensor %u", i);
  const pg_tensor_info *t = &a->tens[i];
  PG_FAIL_IF(!pg_qtype_is_int(t->qtype) || t->scale_kind != PG_SCALE_ROW_F16, err, PG_E_ARG,
             a->name, PG_NO_OFFSET, "tensor '%s' is not an integer tensor with row scales",
             t->name);
  /* the parts in the order pg_artifact_tensor_dequant decodes them, so a fault reads the same */
  const uint8_t *sp;
  PG_TRY(part_bytes(a, t, PG_PART_SCALES, &sp, err));
  for (uint64_t r = 0; r < t->rows; r++) scales[r] = pg_ld16(sp + 2 * r);
  if (!t->lqer_rank) return PG_OK;
  const uint64_t na = t->rows * t->lqer_rank, nb = t->cols * t->lqer_rank;
  PG_TRY(decode_ints(a, t, PG_PART_LQER_A, na, 2, -2, 1, qa, err));
  PG_TRY(decode_ints(a, t, PG_PART_LQER_B, nb, 4, -8, 7, qb, err));
  const uint8_t *pa, *pb;
  PG_TRY(part_bytes(a, t, PG_PART_LQER_A_SCALE, &pa, err));
  PG_TRY(part_bytes(a, t, PG_PART_LQER_B_SCALES, &pb, err));
  *sa = pg_ld16(pa);
  for (uint64_t g = 0; g < nb / PG_LQER_GROUP; g++) sb[g] = pg_ld16(pb + 2 * g);
  return PG_OK;
}

/* An integer part to range-check, ordered by section for pg_artifact_check. */
typedef struct int_part {
  uint32_t section, tensor;
  int role;
} int_part;

static int cmp_int_part(const void *x, const void *y) {
  const int_part *p = x, *q = y;
  if (p->section != q->section) return p->section < q->section ? -1 : 1;
  if (p->tensor != q->tensor) return p->tensor < q->tensor ? -1 : 1;
  return (p->role > q->role) - (p->role < q->role);
}

/* Section by section: decode it, check what lies in it, let it go. The memory this takes is one
 * section (plus one tensor's values), not the artifact. */
int pg_artifact_check(pg_artifact *a, pg_err *err) {
  int_part *parts = malloc(((size_t)a->ntens * 3 + 1) * sizeof *parts);
  PG_FAIL_IF(!parts, err, PG_E_NOMEM, a->name, PG_NO_OFFSET, "out of memory for %u tensors",
             a->ntens);
  size_t np = 0;
  uint64_t maxn = 0;
  for (uint32_t i = 0; i < a->ntens; i++) {
    const pg_tensor_info *t = &a->tens[i];
    if (!pg_qtype_is_int(t->qtype)) continue;
    parts[np++] = (int_part){t->parts[PG_PART_VALUES].section, i, PG_PART_VALUES};
    if (t->numel > maxn) maxn = t->numel;
    if (t->lqer_rank) {
      parts[np++] = (int_part){t->parts[PG_PART_LQER_A].section, i, PG_PART_LQER_A};
      parts[np++] = (int_part){t->parts[PG_PART_LQER_B].section, i, PG_PART_LQER_B};
      if (t->rows * t->lqer_rank > maxn) maxn = t->rows * t->lqer_rank;
      if (t->cols * t->lqer_rank > maxn) maxn = t->cols * t->lqer_rank;
    }
  }
  qsort(parts, np, sizeof *parts, cmp_int_part);
  int8_t *buf = malloc(maxn ? (size_t)maxn : 1);
  int rc = buf ? PG_OK
               : pg_err_set(err, PG_E_NOMEM, a->name, PG_NO_OFFSET,
                            "out of memory for %llu values", (unsigned long long)maxn);
  size_t k = 0;
  for (uint32_t s = 0; rc == PG_OK && s < a->nsec; s++) {
    a->epoch++;
    const int was = a->raw[s] != NULL;
    const uint8_t *raw;
    rc = section_get(a, s, 0, &raw, err);
    for (; rc == PG_OK && k < np && parts[k].section == s; k++) {
      const pg_tensor_info *t = &a->tens[parts[k].tensor];
      switch (parts[k].role) {
      case PG_PART_VALUES: rc = tensor_ints(a, t, buf, err); break;
      case PG_PART_LQER_A:
        rc = decode_ints(a, t, PG_PART_LQER_A, t->rows * t->lqer_rank, 2, -2, 1, buf, err);
        break;
      default:
        rc = decode_ints(a, t, PG_PART_LQER_B, t->cols * t->lqer_rank, 4, -8, 7, buf, err);
        break;
      }
    }
    if (!was) { /* what was decoded before (held, cached or kept) stays */
      unkeep(a, s);
      drop(a, s);
    }
  }
  free(buf);
  free(parts);
  return rc;
}

/* Codec qc's hint for DATA section `sec` (spec/format.md §12): one segment per part that tiles
 * it, in offset order, with the stored row length of the part's bytes. The values of an int
 * tensor stored one per byte lie in rows of `cols` (row-major), its LQER factors one per byte
 * in rows of the rank (A) and of `cols` (B); every other part (scales, packed bits, floats, row
 * permutations: perm's permutations) is rows of 1. The one place that knows how values are
 * laid out. */
static int section_segments(const pg_tensor_info *ts, uint32_t nt, uint32_t sec, pg_qc_seg **out,
                            size_t *nseg, pg_err *err) {
  size_t n = 0;
  for (uint32_t i = 0; i < nt; i++)
    for (int r = 0; r < PG_PART_COUNT; r++)
      n += ts[i].parts[r].present && ts[i].parts[r].section == sec;
  pg_qc_seg *g = malloc((n ? n : 1) * sizeof *g);
  uint64_t *at = malloc((n ? n : 1) * sizeof *at);
  if (!g || !at) {
    free(g);
    free(at);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  }
  size_t k = 0;
  for (uint32_t i = 0; i < nt; i++)
    for (int r = 0; r < PG_PART_COUNT; r++) {
      const pg_part *p = &ts[i].parts[r];
      if (!p->present || p->section != sec) continue;
      const int rows = r == PG_PART_VALUES && pg_qtype_is_int(ts[i].qtype) && !ts[i].packing;
      size_t j = k++; /* insertion by offset: the writer adds parts in offset order already */
      for (; j > 0 && at[j - 1] > p->offset; j--) at[j] = at[j - 1], g[j] = g[j - 1];
      at[j] = p->offset;
      /* a stored row: `cols` values in row-major order, `rows` values transposed (§4.1) */
      uint64_t len = ts[i].order == PG_ORDER_COLS ? ts[i].rows : ts[i].cols;
      /* LQER factors one per byte: A is rows × rank, B rank × cols, both row-major */
      const int lq = !ts[i].packing && (r == PG_PART_LQER_A || r == PG_PART_LQER_B);
      if (lq) len = r == PG_PART_LQER_A ? ts[i].lqer_rank : ts[i].cols;
      g[j] = (pg_qc_seg){p->size, (rows || lq) && len ? len : 1};
    }
  free(at);
  *out = g;
  *nseg = n;
  return PG_OK;
}

int pg_artifact_section_segments(const pg_artifact *a, uint32_t s, pg_qc_seg **segs, size_t *n,
                                 pg_err *err) {
  return section_segments(a->tens, a->ntens, s, segs, n, err);
}

/* ------------------------------------------------------------------------------------------ */
/* Writer */

typedef struct wsec {
  uint16_t kind;
  pg_codec_spec spec;
  pg_buf raw;
  int referenced; /* DATA: some tensor part names it (unreferenced ones are not written) */
} wsec;

typedef struct wmeta {
  char key[PG_MAX_NAME + 1];
  pg_buf val; /* type byte + value */
} wmeta;

struct pg_writer {
  int cver;        /* container version to write */
  int uses_layout; /* some tensor has an order or a permutation: quant layout 2 */
  pg_codec_spec meta_spec, dir_spec;
  int threads; /* sections encoded at once (1: sequential) */
  wmeta *meta;
  uint32_t nmeta, cap_meta;
  pg_buf dir;
  size_t *dir_sec_pos; /* where each part's section index lies in dir */
  size_t n_pos, cap_pos;
  uint32_t ntens;
  char **names;
  pg_tensor_info *infos; /* parts as added (section = 2 + data handle): codec qc's hints */
  uint32_t cap_names;
  wsec *data;
  uint32_t ndata;
  int has_tok;
  wsec tok;
  wsec *code;
  uint32_t ncode;
};

static const pg_codec_spec DEFAULT_SPEC = {PG_CODEC_BROTLI, 11, 22, 0, 0};

int pg_writer_create(pg_writer **out) {
  pg_writer *w = calloc(1, sizeof *w);
  if (!w) return PG_E_NOMEM;
  w->cver = PG_CONTAINER_VERSION;
  w->meta_spec = DEFAULT_SPEC;
  w->dir_spec = DEFAULT_SPEC;
  *out = w;
  return PG_OK;
}

void pg_writer_free(pg_writer *w) {
  if (!w) return;
  for (uint32_t i = 0; i < w->nmeta; i++) pg_buf_free(&w->meta[i].val);
  free(w->meta);
  pg_buf_free(&w->dir);
  free(w->dir_sec_pos);
  for (uint32_t i = 0; i < w->ntens; i++) free(w->names[i]);
  free(w->names);
  free(w->infos);
  for (uint32_t i = 0; i < w->ndata; i++) pg_buf_free(&w->data[i].raw);
  free(w->data);
  pg_buf_free(&w->tok.raw);
  for (uint32_t i = 0; i < w->ncode; i++) pg_buf_free(&w->code[i].raw);
  free(w->code);
  free(w);
}

void pg_writer_set_threads(pg_writer *w, int threads) { w->threads = threads; }

int pg_writer_set_container(pg_writer *w, int version) {
  if (version != PG_CONTAINER_V1 && version != PG_CONTAINER_V2) return PG_E_ARG;
  w->cver = version;
  return PG_OK;
}

void pg_writer_set_meta_codec(pg_writer *w, const pg_codec_spec *meta, const pg_codec_spec *dir) {
  if (meta) w->meta_spec = *meta;
  if (dir) w->dir_spec = *dir;
}

static int meta_slot(pg_writer *w, const char *key, uint8_t type, pg_buf **val, pg_err *err) {
  size_t n = strlen(key);
  PG_FAIL_IF(!key_chars_ok(key, n), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "metadata key '%s' is not 1..255 characters of [a-z0-9_.-]", key);
  int want = well_known_type(key, n);
  PG_FAIL_IF(want && want != type, err, PG_E_META_TYPE, NULL, PG_NO_OFFSET,
             "metadata key '%s' must be of type %d", key, want);
  for (uint32_t i = 0; i < w->nmeta; i++)
    PG_FAIL_IF(!strcmp(w->meta[i].key, key), err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET,
               "metadata key '%s' set twice", key);
  PG_FAIL_IF(w->nmeta >= PG_MAX_META_ENTRIES, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "more than %d metadata entries", PG_MAX_META_ENTRIES);
  if (w->nmeta == w->cap_meta) {
    uint32_t cap = w->cap_meta ? w->cap_meta * 2 : 16;
    wmeta *m = realloc(w->meta, cap * sizeof *m);
    PG_FAIL_IF(!m, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate metadata");
    w->meta = m;
    w->cap_meta = cap;
  }
  wmeta *e = &w->meta[w->nmeta++];
  memset(e, 0, sizeof *e);
  memcpy(e->key, key, n + 1);
  pg_buf_u8(&e->val, type);
  *val = &e->val;
  return PG_OK;
}

static int meta_done(pg_buf *b, pg_err *err) {
  PG_FAIL_IF(b->oom, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate metadata");
  return PG_OK;
}

int pg_writer_meta_i64(pg_writer *w, const char *key, int64_t v, pg_err *err) {
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_I64, &b, err));
  pg_buf_u64(b, (uint64_t)v);
  return meta_done(b, err);
}

int pg_writer_meta_f64(pg_writer *w, const char *key, double v, pg_err *err) {
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_F64, &b, err));
  uint64_t u;
  memcpy(&u, &v, 8);
  pg_buf_u64(b, u);
  return meta_done(b, err);
}

int pg_writer_meta_bool(pg_writer *w, const char *key, int v, pg_err *err) {
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_BOOL, &b, err));
  pg_buf_u8(b, v ? 1 : 0);
  return meta_done(b, err);
}

static int put_str(pg_buf *b, const char *s, size_t len, pg_err *err) {
  PG_FAIL_IF(len > PG_MAX_META_RAW, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "metadata string of %zu bytes", len);
  PG_FAIL_IF(!pg_utf8_valid((const uint8_t *)s, len, NULL), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "metadata string is not valid UTF-8");
  pg_buf_u32(b, (uint32_t)len);
  pg_buf_put(b, s, len);
  return PG_OK;
}

int pg_writer_meta_str(pg_writer *w, const char *key, const char *s, size_t len, pg_err *err) {
  PG_FAIL_IF(!pg_utf8_valid((const uint8_t *)s, len, NULL), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "metadata '%s': value is not valid UTF-8", key);
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_STR, &b, err));
  PG_TRY(put_str(b, s, len, err));
  return meta_done(b, err);
}

int pg_writer_meta_arr_i64(pg_writer *w, const char *key, const int64_t *v, uint32_t n,
                           pg_err *err) {
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_ARR, &b, err));
  pg_buf_u8(b, PG_META_I64);
  pg_buf_u32(b, n);
  for (uint32_t i = 0; i < n; i++) pg_buf_u64(b, (uint64_t)v[i]);
  return meta_done(b, err);
}

int pg_writer_meta_arr_f64(pg_writer *w, const char *key, const double *v, uint32_t n,
                           pg_err *err) {
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_ARR, &b, err));
  pg_buf_u8(b, PG_META_F64);
  pg_buf_u32(b, n);
  for (uint32_t i = 0; i < n; i++) {
    uint64_t u;
    memcpy(&u, &v[i], 8);
    pg_buf_u64(b, u);
  }
  return meta_done(b, err);
}

int pg_writer_meta_arr_str(pg_writer *w, const char *key, const char *const *v, uint32_t n,
                           pg_err *err) {
  for (uint32_t i = 0; i < n; i++)
    PG_FAIL_IF(!pg_utf8_valid((const uint8_t *)v[i], strlen(v[i]), NULL), err, PG_E_ARG, NULL,
               PG_NO_OFFSET, "metadata '%s': element %u is not valid UTF-8", key, i);
  pg_buf *b;
  PG_TRY(meta_slot(w, key, PG_META_ARR, &b, err));
  pg_buf_u8(b, PG_META_STR);
  pg_buf_u32(b, n);
  for (uint32_t i = 0; i < n; i++) PG_TRY(put_str(b, v[i], strlen(v[i]), err));
  return meta_done(b, err);
}

int pg_writer_data_section(pg_writer *w, const pg_codec_spec *spec, pg_err *err) {
  if (pg_codec_spec_check(spec, NULL, PG_NO_OFFSET, err) != PG_OK) return -1;
  if (w->ndata + 8 >= PG_MAX_SECTIONS) {
    pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET, "too many sections");
    return -1;
  }
  wsec *d = realloc(w->data, (w->ndata + 1) * sizeof *d);
  if (!d) {
    pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    return -1;
  }
  w->data = d;
  memset(&d[w->ndata], 0, sizeof *d);
  d[w->ndata].kind = PG_SEC_DATA;
  d[w->ndata].spec = *spec;
  return (int)w->ndata++;
}

int pg_writer_tokenizer(pg_writer *w, const uint8_t *bytes, size_t len, const pg_codec_spec *spec,
                        pg_err *err) {
  PG_FAIL_IF(w->has_tok, err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET, "a second tokenizer");
  const pg_codec_spec *s = spec ? spec : &DEFAULT_SPEC;
  PG_TRY(pg_codec_spec_check(s, NULL, PG_NO_OFFSET, err));
  PG_FAIL_IF(len > PG_MAX_SECTION_RAW, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "tokenizer of %zu bytes", len);
  w->tok.kind = PG_SEC_TOKENIZER;
  w->tok.spec = *s;
  pg_buf_put(&w->tok.raw, bytes, len);
  PG_FAIL_IF(w->tok.raw.oom, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  w->has_tok = 1;
  return PG_OK;
}

int pg_writer_code(pg_writer *w, const char *name, const uint8_t *bytes, size_t len,
                   const pg_codec_spec *spec, pg_err *err) {
  size_t nl = strlen(name);
  PG_FAIL_IF(!code_name_ok((const uint8_t *)name, nl), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "code file name '%s' is not a safe relative path of 1..255 bytes", name);
  for (uint32_t i = 0; i < w->ncode; i++) {
    const pg_buf *b = &w->code[i].raw;
    PG_FAIL_IF(pg_ld16(b->data) == nl && !memcmp(b->data + 2, name, nl), err, PG_E_DUPLICATE,
               NULL, PG_NO_OFFSET, "code file '%s' added twice", name);
  }
  const pg_codec_spec *s = spec ? spec : &DEFAULT_SPEC;
  PG_TRY(pg_codec_spec_check(s, NULL, PG_NO_OFFSET, err));
  PG_FAIL_IF(len > PG_MAX_SECTION_RAW - 2 - nl, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "code file '%s' of %zu bytes", name, len);
  PG_FAIL_IF(w->ndata + w->ncode + 8 >= PG_MAX_SECTIONS, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "too many sections");
  wsec *c = realloc(w->code, (w->ncode + 1) * sizeof *c);
  PG_FAIL_IF(!c, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  w->code = c;
  wsec *e = &c[w->ncode];
  memset(e, 0, sizeof *e);
  e->kind = PG_SEC_CODE;
  e->spec = *s;
  pg_buf_u16(&e->raw, (uint16_t)nl);
  pg_buf_put(&e->raw, name, nl);
  pg_buf_put(&e->raw, bytes, len);
  if (e->raw.oom) {
    pg_buf_free(&e->raw);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  }
  w->ncode++;
  return PG_OK;
}

/* Append n int values (range-checked) to a section, packed or one per byte. */
static int put_ints(pg_buf *b, const int8_t *v, uint64_t n, unsigned bits, int packing, int lo,
                    int hi, const char *name, const char *what, pg_err *err) {
  for (uint64_t i = 0; i < n; i++)
    PG_FAIL_IF(v[i] < lo || v[i] > hi, err, PG_E_VALUE_RANGE, NULL, PG_NO_OFFSET,
               "tensor '%s' %s: element %llu is %d, outside [%d, %d]", name, what,
               (unsigned long long)i, v[i], lo, hi);
  uint64_t nb = packing ? pg_packed_bytes(n, bits) : n;
  PG_FAIL_IF(nb > SIZE_MAX || pg_buf_reserve(b, (size_t)nb) != PG_OK, err, PG_E_NOMEM, NULL,
             PG_NO_OFFSET, "cannot allocate %llu bytes", (unsigned long long)nb);
  if (packing)
    pg_pack_bits(v, n, bits, b->data + b->len);
  else if (n)
    memcpy(b->data + b->len, v, (size_t)n);
  b->len += (size_t)nb;
  return PG_OK;
}

int pg_writer_tensor(pg_writer *w, const pg_tensor_in *in, pg_err *err) {
  PG_FAIL_IF(!in->name, err, PG_E_ARG, NULL, PG_NO_OFFSET, "tensor without a name");
  size_t nl = strlen(in->name);
  PG_FAIL_IF(!name_ok((const uint8_t *)in->name, nl), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "tensor name '%s' is not 1..255 bytes of printable UTF-8", in->name);
  for (uint32_t i = 0; i < w->ntens; i++)
    PG_FAIL_IF(!strcmp(w->names[i], in->name), err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET,
               "tensor '%s' added twice", in->name);
  PG_FAIL_IF(w->ntens >= PG_MAX_TENSORS, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "more than %d tensors", PG_MAX_TENSORS);
  PG_FAIL_IF(in->ndim > PG_MAX_DIMS, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "tensor '%s': %u dimensions", in->name, in->ndim);
  PG_FAIL_IF(in->qtype < 0 || in->qtype > 255 || in->packing < 0 || in->packing > 1 ||
                 in->scale_kind < 0 || in->scale_kind > 2 || in->lqer_rank > 255 ||
                 in->order < 0 || in->order > 15 || in->perm < 0 || in->perm > 15,
             err, PG_E_QTYPE, NULL, PG_NO_OFFSET, "tensor '%s': bad qtype, packing or scale kind",
             in->name);
  pg_tensor_info t;
  memset(&t, 0, sizeof t);
  memcpy(t.name, in->name, nl + 1);
  t.qtype = (uint8_t)in->qtype;
  t.packing = (uint8_t)in->packing;
  t.scale_kind = (uint8_t)in->scale_kind;
  t.ndim = (uint8_t)in->ndim;
  t.lqer_rank = (uint8_t)in->lqer_rank;
  t.order = (uint8_t)in->order;
  t.perm = (uint8_t)in->perm;
  int isint = pg_qtype_is_int(in->qtype);
  unsigned bits = pg_qtype_bits(in->qtype);
  int qmin = in->qmin, qmax = in->qmax;
  if (isint && qmin == 0 && qmax == 0) {
    qmin = pg_int_min(bits);
    qmax = pg_int_max(bits);
  }
  PG_FAIL_IF(qmin < -128 || qmax > 127, err, PG_E_QTYPE, NULL, PG_NO_OFFSET,
             "tensor '%s': range [%d, %d]", in->name, qmin, qmax);
  t.qmin = (int8_t)qmin;
  t.qmax = (int8_t)qmax;
  for (unsigned d = 0; d < in->ndim; d++) t.dims[d] = in->dims[d];
  PG_TRY(tensor_layout_check(&t, PG_MAX_ELEMENTS, NULL, PG_NO_OFFSET, "", err));
  uint64_t want[PG_PART_COUNT];
  expected_parts(&t, want);
  PG_FAIL_IF(want[PG_PART_VALUES] == UINT64_MAX, err, PG_E_DIMS_OVERFLOW, NULL, PG_NO_OFFSET,
             "tensor '%s': byte size overflows", in->name);
  int secs[PG_PART_COUNT] = {in->sec_values, in->sec_scales, in->sec_lqer, in->sec_lqer,
                             in->sec_lqer,   in->sec_lqer,   in->sec_perm};
  for (int r = 0; r < PG_PART_COUNT; r++)
    PG_FAIL_IF(want[r] != UINT64_MAX && (secs[r] < 0 || (uint32_t)secs[r] >= w->ndata), err,
               PG_E_ARG, NULL, PG_NO_OFFSET, "tensor '%s': %s part names no data section",
               in->name, pg_part_role_name(r));
  PG_FAIL_IF(t.numel && !in->values, err, PG_E_ARG, NULL, PG_NO_OFFSET, "tensor '%s': no values",
             in->name);
  PG_FAIL_IF(isint && t.scale_kind == PG_SCALE_ROW_F16 && t.rows && !in->row_scales, err,
             PG_E_ARG, NULL, PG_NO_OFFSET, "tensor '%s': no row scales", in->name);
  PG_FAIL_IF(t.lqer_rank && (!in->lqer_a || !in->lqer_b || !in->lqer_b_scales), err, PG_E_ARG,
             NULL, PG_NO_OFFSET, "tensor '%s': LQER factors missing", in->name);
  /* quant layout 2: the stored image of the values (row j of it is logical row perm[j]) */
  int8_t *img = NULL;
  if (t.order || t.perm) {
    PG_FAIL_IF(t.perm && !in->row_perm, err, PG_E_ARG, NULL, PG_NO_OFFSET,
               "tensor '%s': no row permutation", in->name);
    img = malloc(t.numel ? (size_t)t.numel : 1);
    uint8_t *seen = calloc(t.rows ? (size_t)t.rows : 1, 1);
    if (!img || !seen) {
      free(img);
      free(seen);
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    }
    const int8_t *v = in->values;
    for (uint64_t j = 0; j < t.rows; j++) {
      const uint64_t r = t.perm ? in->row_perm[j] : j;
      if (r >= t.rows || seen[r]) {
        free(img);
        free(seen);
        return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                          "tensor '%s': row_perm is not a permutation of its %llu rows",
                          in->name, (unsigned long long)t.rows);
      }
      seen[r] = 1;
      for (uint64_t c = 0; c < t.cols; c++)
        img[t.order ? c * t.rows + j : j * t.cols + c] = v[r * t.cols + c];
    }
    free(seen);
  }

  /* Snapshot the lengths so a failure leaves the sections as they were. */
  size_t saved[PG_MAX_SECTIONS];
  uint32_t nd = w->ndata;
  for (uint32_t s = 0; s < nd; s++) saved[s] = w->data[s].raw.len;
  size_t dir_saved = w->dir.len;
  pg_part parts[PG_PART_COUNT];
  memset(parts, 0, sizeof parts);
  int rc = PG_OK;
  for (int r = 0; r < PG_PART_COUNT && rc == PG_OK; r++) {
    if (want[r] == UINT64_MAX) continue;
    pg_buf *b = &w->data[secs[r]].raw;
    parts[r].present = 1;
    parts[r].section = 2 + (uint32_t)secs[r];
    parts[r].offset = b->len;
    parts[r].size = want[r];
    switch (r) {
    case PG_PART_VALUES:
      if (isint)
        rc = put_ints(b, img ? img : in->values, t.numel, bits, t.packing, qmin, qmax, in->name,
                      "values", err);
      else
        pg_buf_put(b, in->values, (size_t)want[r]);
      break;
    case PG_PART_SCALES:
      if (t.scale_kind == PG_SCALE_ROW_F16) {
        for (uint64_t k = 0; k < t.rows; k++) pg_buf_u16(b, in->row_scales[k]);
      } else {
        uint32_t u;
        memcpy(&u, &in->scalar_scale, 4);
        pg_buf_u32(b, u);
      }
      break;
    case PG_PART_LQER_A:
      rc = put_ints(b, in->lqer_a, t.rows * t.lqer_rank, 2, t.packing, -2, 1, in->name, "lqer_a",
                    err);
      break;
    case PG_PART_LQER_A_SCALE: pg_buf_u16(b, in->lqer_a_scale); break;
    case PG_PART_LQER_B:
      rc = put_ints(b, in->lqer_b, t.cols * t.lqer_rank, 4, t.packing, -8, 7, in->name, "lqer_b",
                    err);
      break;
    case PG_PART_LQER_B_SCALES:
      for (uint64_t g = 0; g < want[r] / 2; g++) pg_buf_u16(b, in->lqer_b_scales[g]);
      break;
    case PG_PART_ROW_PERM:
      for (uint64_t j = 0; j < t.rows; j++) {
        if (pg_perm_width(t.rows) == 2) pg_buf_u16(b, (uint16_t)in->row_perm[j]);
        else pg_buf_u32(b, in->row_perm[j]);
      }
      break;
    }
    if (rc == PG_OK && b->oom)
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    if (rc == PG_OK && b->len > PG_MAX_SECTION_RAW)
      rc = pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                      "data section %d grows past %llu bytes", secs[r],
                      (unsigned long long)PG_MAX_SECTION_RAW);
  }
  if (rc == PG_OK && w->n_pos + PG_PART_COUNT > w->cap_pos) {
    size_t cap = w->cap_pos ? w->cap_pos * 2 : 256;
    size_t *np = realloc(w->dir_sec_pos, cap * sizeof *np);
    if (!np)
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    else {
      w->dir_sec_pos = np;
      w->cap_pos = cap;
    }
  }
  size_t pos_saved = w->n_pos;
  if (rc == PG_OK) {
    pg_buf *d = &w->dir;
    pg_buf_u16(d, (uint16_t)nl);
    pg_buf_put(d, in->name, nl);
    uint8_t h[8] = {t.qtype, t.packing, t.scale_kind, (uint8_t)t.qmin, (uint8_t)t.qmax,
                    t.ndim,  t.lqer_rank, (uint8_t)(t.order | t.perm << 4)};
    pg_buf_put(d, h, 8);
    for (unsigned k = 0; k < t.ndim; k++) pg_buf_u64(d, t.dims[k]);
    for (int r = 0; r < PG_PART_COUNT; r++) {
      if (!parts[r].present) continue;
      w->dir_sec_pos[w->n_pos++] = d->len;
      pg_buf_u32(d, parts[r].section);
      pg_buf_u64(d, parts[r].offset);
      pg_buf_u64(d, parts[r].size);
    }
    if (d->oom) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  }
  if (rc == PG_OK && w->ntens == w->cap_names) {
    uint32_t cap = w->cap_names ? w->cap_names * 2 : 64;
    char **nn = realloc(w->names, cap * sizeof *nn);
    if (nn) w->names = nn;
    pg_tensor_info *ni = nn ? realloc(w->infos, cap * sizeof *ni) : NULL;
    if (ni) w->infos = ni;
    if (!nn || !ni) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    else w->cap_names = cap;
  }
  char *copy = NULL;
  if (rc == PG_OK) {
    copy = malloc(nl + 1);
    if (!copy) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  }
  free(img);
  if (rc != PG_OK) {
    for (uint32_t s = 0; s < nd; s++)
      if (!w->data[s].raw.oom) w->data[s].raw.len = saved[s];
    if (!w->dir.oom) w->dir.len = dir_saved;
    w->n_pos = pos_saved;
    return rc;
  }
  for (int r = 0; r < PG_PART_COUNT; r++)
    if (parts[r].present) w->data[secs[r]].referenced = 1;
  w->uses_layout |= t.order || t.perm;
  memcpy(copy, in->name, nl + 1);
  memcpy(t.parts, parts, sizeof parts);
  w->infos[w->ntens] = t;
  w->names[w->ntens++] = copy;
  return PG_OK;
}

static int cmp_wmeta(const void *x, const void *y) {
  return strcmp(((const wmeta *)x)->key, ((const wmeta *)y)->key);
}

typedef struct enc_sec {
  uint16_t kind;
  pg_codec_spec spec;
  const uint8_t *raw;
  size_t raw_len;
  pg_qc_seg *segs; /* codec qc: how the DATA section's bytes are laid out */
  size_t nsegs;
  uint8_t *stored;
  size_t stored_len;
  int rc;
  pg_err err;
} enc_sec;

/* Encode every section: each is independent, so workers take them from a shared counter, largest
 * first; the bytes do not depend on the thread count. The first failure in section order wins. */
typedef struct enc_pool {
  enc_sec *es;
  uint32_t *order;
  uint32_t n, next;
} enc_pool;

static void *enc_worker(void *arg) {
  enc_pool *p = arg;
  for (;;) {
    uint32_t k = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED);
    if (k >= p->n) break;
    enc_sec *e = &p->es[p->order[k]];
    e->rc = pg_codec_encode_segs(&e->spec, e->raw, e->raw_len, e->segs, e->nsegs, &e->stored,
                                 &e->stored_len, &e->err);
  }
  return NULL;
}

static int encode_all(enc_sec *es, uint32_t n, int threads, pg_err *err) {
  uint32_t *order = malloc((n ? n : 1) * sizeof *order);
  if (!order) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  for (uint32_t i = 0; i < n; i++) order[i] = i;
  for (uint32_t i = 1; i < n; i++) /* insertion sort by raw size, descending, stable */
    for (uint32_t j = i; j > 0 && es[order[j]].raw_len > es[order[j - 1]].raw_len; j--) {
      uint32_t t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  enc_pool pool = {es, order, n, 0};
  int T = threads < 1 ? 1 : threads > 64 ? 64 : threads;
  if ((uint32_t)T > n) T = n ? (int)n : 1;
  pthread_t tids[64];
  int started[64] = {0};
  for (int t = 1; t < T; t++) started[t] = pthread_create(&tids[t], NULL, enc_worker, &pool) == 0;
  enc_worker(&pool);
  for (int t = 1; t < T; t++)
    if (started[t]) pthread_join(tids[t], NULL);
  free(order);
  for (uint32_t i = 0; i < n; i++)
    if (es[i].rc) {
      if (err) *err = es[i].err;
      return es[i].rc;
    }
  return PG_OK;
}

/* Container v2 keeps lengths and counts as varints (spec/format.md §3, §4): the writer builds
 * META and TENSORS in the v1 form and rewrites them. */
static void meta_to_v2(const pg_buf *v1, pg_buf *out) {
  const uint8_t *p = v1->data;
  put_varint(out, pg_ld32(p));
  size_t pos = 4;
  while (pos < v1->len) {
    const uint16_t kl = pg_ld16(p + pos);
    pg_buf_u8(out, (uint8_t)kl);
    pg_buf_put(out, p + pos + 2, kl);
    pos += 2 + kl;
    const uint8_t type = p[pos++];
    pg_buf_u8(out, type);
    uint8_t et = type;
    uint32_t count = 1;
    if (type == PG_META_ARR) {
      et = p[pos];
      count = pg_ld32(p + pos + 1);
      pg_buf_u8(out, et);
      put_varint(out, count);
      pos += 5;
    }
    for (uint32_t k = 0; k < count; k++) {
      size_t w = et == PG_META_BOOL ? 1 : 8;
      if (et == PG_META_STR) {
        const uint32_t len = pg_ld32(p + pos);
        put_varint(out, len);
        pos += 4;
        w = len;
      }
      pg_buf_put(out, p + pos, w);
      pos += w;
    }
  }
}

static void dir_to_v2(const pg_buf *v1, pg_buf *out) {
  const uint8_t *p = v1->data;
  const uint32_t n = pg_ld32(p);
  put_varint(out, n);
  size_t pos = 4;
  for (uint32_t i = 0; i < n; i++) {
    pg_tensor_info t;
    memset(&t, 0, sizeof t);
    const uint16_t nl = pg_ld16(p + pos);
    pg_buf_u8(out, (uint8_t)nl);
    pg_buf_put(out, p + pos + 2, nl);
    memcpy(t.name, p + pos + 2, nl);
    pos += 2 + nl;
    const uint8_t *h = p + pos;
    pg_buf_put(out, h, 8);
    t.qtype = h[0], t.packing = h[1], t.scale_kind = h[2], t.qmin = (int8_t)h[3];
    t.qmax = (int8_t)h[4], t.ndim = h[5], t.lqer_rank = h[6], t.order = h[7] & 15;
    t.perm = h[7] >> 4;
    pos += 8;
    for (unsigned d = 0; d < t.ndim; d++, pos += 8) {
      t.dims[d] = pg_ld64(p + pos);
      put_varint(out, t.dims[d]);
    }
    /* checked when the tensor was added: the part count follows from the header */
    tensor_layout_check(&t, PG_MAX_ELEMENTS, NULL, PG_NO_OFFSET, "", NULL);
    uint64_t want[PG_PART_COUNT];
    expected_parts(&t, want);
    for (int r = 0; r < PG_PART_COUNT; r++)
      if (want[r] != UINT64_MAX) {
        put_varint(out, pg_ld32(p + pos));
        pos += 20;
      }
  }
}

/* Build every section and the header/table; the caller writes head, then each stored blob. */
static int writer_build(pg_writer *w, uint8_t **head, size_t *head_len, enc_sec **secs_out,
                        uint32_t *nsec_out, pg_err *err) {
  *head = NULL;
  *secs_out = NULL;
  if (w->cver == PG_CONTAINER_V1) { /* qc and perm came with container version 2 (§10) */
    int qc = w->meta_spec.codec >= PG_CODEC_QC || w->dir_spec.codec >= PG_CODEC_QC ||
             (w->has_tok && w->tok.spec.codec >= PG_CODEC_QC);
    for (uint32_t i = 0; i < w->ndata; i++) qc |= w->data[i].spec.codec >= PG_CODEC_QC;
    for (uint32_t i = 0; i < w->ncode; i++) qc |= w->code[i].spec.codec >= PG_CODEC_QC;
    if (qc)
      return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET,
                        "codecs qc and perm need container version 2; version 1 was asked for");
  }
  int has_writer = 0;
  for (uint32_t i = 0; i < w->nmeta; i++) has_writer |= !strcmp(w->meta[i].key, "pgolf.writer");
  if (!has_writer) {
    static const char wr[] = "pgolf " PG_VERSION;
    PG_TRY(pg_writer_meta_str(w, "pgolf.writer", wr, sizeof wr - 1, err));
  }
  qsort(w->meta, w->nmeta, sizeof *w->meta, cmp_wmeta);
  pg_buf meta = {0}, dir = {0};
  pg_buf_u32(&meta, w->nmeta);
  for (uint32_t i = 0; i < w->nmeta; i++) {
    size_t kl = strlen(w->meta[i].key);
    pg_buf_u16(&meta, (uint16_t)kl);
    pg_buf_put(&meta, w->meta[i].key, kl);
    pg_buf_put(&meta, w->meta[i].val.data, w->meta[i].val.len);
  }
  /* DATA sections that no part names are not written; the parts' section indices are renumbered
   * to the sections that remain. */
  uint32_t *newidx = malloc((w->ndata ? w->ndata : 1) * sizeof *newidx);
  uint32_t nkept = 0;
  for (uint32_t i = 0; newidx && i < w->ndata; i++)
    newidx[i] = w->data[i].referenced ? 2 + nkept++ : 0;
  pg_buf_u32(&dir, w->ntens);
  pg_buf_put(&dir, w->dir.data, w->dir.len);
  for (size_t k = 0; newidx && !dir.oom && k < w->n_pos; k++) {
    uint8_t *p = dir.data + 4 + w->dir_sec_pos[k];
    pg_st32(p, newidx[pg_ld32(p) - 2]);
  }
  if (!newidx) dir.oom = 1;
  free(newidx);
  if (w->cver == PG_CONTAINER_V2 && !meta.oom && !dir.oom) {
    pg_buf m2 = {0}, d2 = {0};
    meta_to_v2(&meta, &m2);
    dir_to_v2(&dir, &d2);
    pg_buf_free(&meta);
    pg_buf_free(&dir);
    meta = m2;
    dir = d2;
  }
  uint32_t n = 2 + nkept + (uint32_t)w->has_tok + w->ncode;
  enc_sec *es = calloc(n, sizeof *es);
  int rc = PG_OK;
  if (meta.oom || dir.oom || !es)
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  if (rc == PG_OK && meta.len > PG_MAX_META_RAW)
    rc = pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET, "metadata of %zu bytes", meta.len);
  if (rc == PG_OK && dir.len > PG_MAX_DIR_RAW)
    rc = pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET, "tensor directory of %zu bytes", dir.len);
  if (rc == PG_OK) {
    uint32_t k = 0;
    es[k++] = (enc_sec){.kind = PG_SEC_META, .spec = w->meta_spec, .raw = meta.data,
                        .raw_len = meta.len};
    es[k++] = (enc_sec){.kind = PG_SEC_TENSORS, .spec = w->dir_spec, .raw = dir.data,
                        .raw_len = dir.len};
    for (uint32_t i = 0; rc == PG_OK && i < w->ndata; i++)
      if (w->data[i].referenced) {
        es[k] = (enc_sec){.kind = PG_SEC_DATA, .spec = w->data[i].spec,
                          .raw = w->data[i].raw.data, .raw_len = w->data[i].raw.len};
        if (es[k].spec.codec == PG_CODEC_QC || es[k].spec.codec == PG_CODEC_PERM)
          rc = section_segments(w->infos, w->ntens, 2 + i, &es[k].segs, &es[k].nsegs, err);
        k++;
      }
    if (w->has_tok)
      es[k++] = (enc_sec){.kind = PG_SEC_TOKENIZER, .spec = w->tok.spec, .raw = w->tok.raw.data,
                          .raw_len = w->tok.raw.len};
    for (uint32_t i = 0; i < w->ncode; i++)
      es[k++] = (enc_sec){.kind = PG_SEC_CODE, .spec = w->code[i].spec,
                          .raw = w->code[i].raw.data, .raw_len = w->code[i].raw.len};
  }
  if (rc == PG_OK) rc = encode_all(es, n, w->threads, err);
  const uint16_t qver = w->uses_layout ? PG_QUANT_LAYOUT_V2 : PG_QUANT_LAYOUT_V1;
  size_t hl = PG_HEADER_SIZE + (size_t)PG_ENTRY_SIZE * n;
  uint8_t *h = NULL;
  if (rc == PG_OK && w->cver == PG_CONTAINER_V2) {
    pg_buf hb = {0};
    pg_buf_put(&hb, PG_MAGIC, 8);
    pg_buf_u16(&hb, PG_CONTAINER_V2);
    pg_buf_u16(&hb, qver);
    put_varint(&hb, n);
    for (uint32_t i = 0; i < n; i++) {
      const pg_codec_spec *c = &es[i].spec;
      const uint8_t e[6] = {(uint8_t)es[i].kind, c->codec, c->level, c->window, c->transform,
                            c->stride};
      pg_buf_put(&hb, e, 6);
      put_varint(&hb, es[i].stored_len);
      put_varint(&hb, es[i].raw_len);
      const uint8_t *raw = es[i].raw ? es[i].raw : (const uint8_t *)"";
      pg_buf_u32(&hb, (uint32_t)XXH64(raw, es[i].raw_len, 0));
    }
    XXH64_state_t *st = XXH64_createState();
    if (hb.oom || !st) {
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    } else { /* the file checksum covers every byte but its own: the head, then the sections */
      XXH64_reset(st, 0);
      XXH64_update(st, hb.data, hb.len);
      for (uint32_t i = 0; i < n; i++) XXH64_update(st, es[i].stored, es[i].stored_len);
      pg_buf_u64(&hb, XXH64_digest(st));
    }
    XXH64_freeState(st);
    if (rc == PG_OK && hb.oom)
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    if (rc == PG_OK) {
      h = hb.data;
      hl = hb.len;
    } else {
      pg_buf_free(&hb);
    }
  } else if (rc == PG_OK) {
    h = calloc(1, hl);
    if (!h) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  }
  if (rc == PG_OK && w->cver == PG_CONTAINER_V1) {
    uint64_t off = hl;
    for (uint32_t i = 0; i < n; i++) {
      uint8_t *e = h + PG_HEADER_SIZE + (size_t)PG_ENTRY_SIZE * i;
      pg_st16(e, es[i].kind);
      e[2] = es[i].spec.codec;
      e[3] = es[i].spec.level;
      e[4] = es[i].spec.window;
      e[5] = es[i].spec.transform;
      e[6] = es[i].spec.stride;
      pg_st64(e + 8, off);
      pg_st64(e + 16, es[i].stored_len);
      pg_st64(e + 24, es[i].raw_len);
      pg_st64(e + 32, XXH64(es[i].stored, es[i].stored_len, 0));
      pg_st64(e + 40, XXH64(es[i].raw ? es[i].raw : (const uint8_t *)"", es[i].raw_len, 0));
      off += es[i].stored_len;
    }
    memcpy(h, PG_MAGIC, 8);
    pg_st16(h + 8, PG_CONTAINER_V1);
    pg_st16(h + 10, qver);
    pg_st32(h + 16, n);
    pg_st64(h + 24, off);
    pg_st64(h + 32, XXH64(h + PG_HEADER_SIZE, hl - PG_HEADER_SIZE, 0));
    pg_st64(h + 56, XXH64(h, 56, 0));
  }
  /* the raw pointers of META/TENSORS live in local buffers: detach them */
  for (uint32_t i = 0; es && i < n; i++) { /* the hints were for encoding only */
    free(es[i].segs);
    es[i].segs = NULL;
  }
  if (rc != PG_OK) {
    for (uint32_t i = 0; es && i < n; i++) free(es[i].stored);
    free(es);
    free(h);
    pg_buf_free(&meta);
    pg_buf_free(&dir);
    return rc;
  }
  for (uint32_t i = 0; i < n; i++) es[i].raw = NULL;
  pg_buf_free(&meta);
  pg_buf_free(&dir);
  *head = h;
  *head_len = hl;
  *secs_out = es;
  *nsec_out = n;
  return PG_OK;
}

static void free_enc(enc_sec *es, uint32_t n) {
  for (uint32_t i = 0; es && i < n; i++) free(es[i].stored), free(es[i].segs);
  free(es);
}

int pg_writer_to_mem(pg_writer *w, uint8_t **out, size_t *len, pg_err *err) {
  uint8_t *h;
  size_t hl;
  enc_sec *es;
  uint32_t n;
  PG_TRY(writer_build(w, &h, &hl, &es, &n, err));
  size_t total = hl;
  for (uint32_t i = 0; i < n; i++) total += es[i].stored_len;
  uint8_t *buf = malloc(total);
  if (!buf) {
    free(h);
    free_enc(es, n);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %zu bytes", total);
  }
  memcpy(buf, h, hl);
  size_t off = hl;
  for (uint32_t i = 0; i < n; i++) {
    if (es[i].stored_len) memcpy(buf + off, es[i].stored, es[i].stored_len);
    off += es[i].stored_len;
  }
  free(h);
  free_enc(es, n);
  *out = buf;
  *len = total;
  return PG_OK;
}

int pg_writer_write(pg_writer *w, const char *path, pg_err *err) {
  uint8_t *h;
  size_t hl;
  enc_sec *es;
  uint32_t n;
  PG_TRY(writer_build(w, &h, &hl, &es, &n, err));
  pg_out o;
  int rc = pg_out_begin(&o, path, err);
  if (rc == PG_OK) rc = pg_out_write(&o, h, hl, err);
  for (uint32_t i = 0; rc == PG_OK && i < n; i++)
    rc = pg_out_write(&o, es[i].stored, es[i].stored_len, err);
  if (rc == PG_OK)
    rc = pg_out_commit(&o, err);
  else if (o.fp)
    pg_out_abort(&o);
  free(h);
  free_enc(es, n);
  return rc;
}
