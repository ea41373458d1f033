/* pg_safetensors.c: the hardened safetensors reader and the deterministic writer.
 *
 * The reader checks the 8-byte length, the header's UTF-8 and JSON (with jansson, duplicate keys
 * refused), every entry's fields and types, dtype, rank, element count, byte size, and then that
 * the tensors tile the data buffer exactly. Faults become one status and one line naming the
 * file and the byte offset; entries are located by a small scan of the (already valid) header
 * text, so a fault in an entry points at that entry. The writer builds the header with sorted
 * keys and compact separators, pads it with spaces to a multiple of 8 bytes, and writes the data
 * in the order the tensors were added, through pg_out (temporary file + rename). See
 * spec/safetensors.md for the rules. */
#include "pg_safetensors.h"
#include "pg_json.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_half.h"
#include "pg_io.h"

#define META_KEY "__metadata__"

/* ---- dtypes ---- */

static const struct {
  const char *name;
  size_t size;
} DTYPES[PG_ST_DTYPE_COUNT] = {
    [PG_ST_BOOL] = {"BOOL", 1},       [PG_ST_U8] = {"U8", 1},
    [PG_ST_I8] = {"I8", 1},           [PG_ST_F8_E4M3] = {"F8_E4M3", 1},
    [PG_ST_F8_E5M2] = {"F8_E5M2", 1}, [PG_ST_I16] = {"I16", 2},
    [PG_ST_U16] = {"U16", 2},         [PG_ST_F16] = {"F16", 2},
    [PG_ST_BF16] = {"BF16", 2},       [PG_ST_I32] = {"I32", 4},
    [PG_ST_U32] = {"U32", 4},         [PG_ST_F32] = {"F32", 4},
    [PG_ST_F64] = {"F64", 8},         [PG_ST_I64] = {"I64", 8},
    [PG_ST_U64] = {"U64", 8},
};

static int dtype_ok(pg_st_dtype d) { return (unsigned)d < (unsigned)PG_ST_DTYPE_COUNT; }

const char *pg_st_dtype_name(pg_st_dtype dtype) {
  return dtype_ok(dtype) ? DTYPES[dtype].name : NULL;
}

size_t pg_st_dtype_size(pg_st_dtype dtype) { return dtype_ok(dtype) ? DTYPES[dtype].size : 0; }

static int dtype_lookup(const char *name, pg_st_dtype *out) {
  for (int i = 0; i < PG_ST_DTYPE_COUNT; i++)
    if (strcmp(name, DTYPES[i].name) == 0) {
      *out = (pg_st_dtype)i;
      return 1;
    }
  return 0;
}

int pg_st_dtype_parse(pg_st_dtype *out, const char *name, pg_err *err) {
  PG_FAIL_IF(!out || !name, err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_st_dtype_parse: NULL argument");
  PG_FAIL_IF(!dtype_lookup(name, out), err, PG_E_DTYPE, NULL, PG_NO_OFFSET, "unknown dtype '%.64s'",
             name);
  return PG_OK;
}

/* ---- small helpers ---- */

/* The offset of the first invalid UTF-8 sequence (strict: pg_utf8_valid), or n when valid. */
static size_t utf8_first_bad(const uint8_t *s, size_t n) {
  size_t bad = n;
  return pg_utf8_valid(s, n, &bad) ? n : bad;
}

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

/* ---- locating top-level entries in valid header text ---- */

static size_t scan_ws(const uint8_t *h, size_t n, size_t p) {
  while (p < n && (h[p] == ' ' || h[p] == '\t' || h[p] == '\n' || h[p] == '\r')) p++;
  return p;
}

static size_t scan_string(const uint8_t *h, size_t n, size_t p) { /* p at the opening quote */
  for (p++; p < n && h[p] != '"'; p++)
    if (h[p] == '\\') p++;
  return p < n ? p + 1 : n;
}

static size_t scan_value(const uint8_t *h, size_t n, size_t p) {
  if (p >= n) return n;
  if (h[p] == '"') return scan_string(h, n, p);
  if (h[p] == '{' || h[p] == '[') {
    size_t depth = 0;
    while (p < n) {
      uint8_t c = h[p];
      if (c == '"') {
        p = scan_string(h, n, p);
        continue;
      }
      if (c == '{' || c == '[') depth++;
      if ((c == '}' || c == ']') && --depth == 0) return p + 1;
      p++;
    }
    return n;
  }
  while (p < n && h[p] != ',' && h[p] != '}' && h[p] != ']' && h[p] != ' ' && h[p] != '\t' &&
         h[p] != '\n' && h[p] != '\r')
    p++;
  return p;
}

/* Offsets (within the header) of the values of the top-level object's members, in text order.
 * Returns the count found, or 0 (and *out NULL) when the text does not look as expected. */
static size_t scan_members(const uint8_t *h, size_t n, size_t want, uint64_t **out) {
  *out = NULL;
  if (want == 0 || n == 0 || h[0] != '{') return 0;
  uint64_t *pos = malloc(want * sizeof *pos);
  if (!pos) return 0;
  size_t k = 0, p = 1;
  for (;;) {
    p = scan_ws(h, n, p);
    if (p >= n || h[p] != '"' || k == want) break;
    p = scan_ws(h, n, scan_string(h, n, p));
    if (p >= n || h[p] != ':') break;
    p = scan_ws(h, n, p + 1);
    pos[k++] = p;
    p = scan_ws(h, n, scan_value(h, n, p));
    if (p < n && h[p] == ',') {
      p++;
      continue;
    }
    if (p < n && h[p] == '}' && k == want) {
      *out = pos;
      return k;
    }
    break;
  }
  free(pos);
  return 0;
}

/* ---- the header's shape, before the JSON parser sees it ---- */

/* jansson spends 30 to 250 bytes on each value it builds (an empty array or object costs the
 * most), so a 100 MB header of "[],[],..." would take gigabytes. One linear pass over the text
 * first checks the shape a header can have (spec/safetensors.md §2, rule 6a): the header's
 * members are objects (or values refused later), __metadata__ holds scalars, a tensor entry at
 * most 3 members whose values are scalars or arrays, and an array at most PG_ST_MAX_RANK
 * scalars. The parser then builds at most 31 values per member, and members are limited, so its
 * memory is bounded by a fixed multiple of the limits plus the text. Text that is not JSON is
 * left to the parser, which reports it. */
static int header_shape(const char *f, const uint8_t *h, size_t n, pg_err *err) {
  struct {
    uint8_t kind, meta;
    uint64_t commas;
    size_t at;
  } lv[4];
  size_t key[3][2]; /* the current tensor entry's keys as written: offset, length */
  int d = 0, last_key_meta = 0, want_key = 0;
  for (size_t p = 0; p < n;) {
    const uint8_t c = h[p];
    if (c == '"') {
      const size_t q = scan_string(h, n, p);
      if (d == 1) last_key_meta = q - p == 14 && !memcmp(h + p, "\"" META_KEY "\"", 14);
      if (d == 2 && want_key && lv[1].kind == '{' && !lv[1].meta) { /* a tensor entry's key */
        /* a key that repeats an earlier one as written is the parser's to report (rule 8),
         * and it stops there: nothing past this point is built */
        const uint64_t m = lv[1].commas;
        for (uint64_t k = 0; k < m && k < 3; k++)
          if (key[k][1] == q - p && !memcmp(h + key[k][0], h + p, q - p)) return PG_OK;
        if (m >= 3)
          return pg_err_set(err, PG_E_JSON, f, 8 + lv[1].at,
                            "a tensor entry with more than 3 members (dtype, shape, "
                            "data_offsets)");
        key[m][0] = p, key[m][1] = q - p;
      }
      want_key = 0;
      p = q;
      continue;
    }
    if (c == '{' || c == '[') {
      if (d >= 1 && lv[d - 1].kind == '[')
        return pg_err_set(err, PG_E_JSON, f, 8 + p,
                          "an array or object inside an array (a shape and "
                          "data_offsets hold integers)");
      if (d == 2 && lv[1].meta)
        return pg_err_set(err, PG_E_META_TYPE, f, 8 + p,
                          "__metadata__ holds an array or object, not a string");
      if (d == 2 && c == '{')
        return pg_err_set(err, PG_E_JSON, f, 8 + p,
                          "an object inside a tensor entry (its members are a string "
                          "and two arrays)");
      if (d == 3) return PG_OK; /* not reached: depth 3 holds only arrays, refused above */
      lv[d].kind = c;
      lv[d].meta = d == 1 && c == '{' && last_key_meta;
      lv[d].commas = 0;
      lv[d].at = p;
      d++;
      want_key = c == '{';
    } else if (c == '}' || c == ']') {
      if (d == 0) return PG_OK; /* unbalanced: the parser's to report */
      d--;
      if (d == 0) return PG_OK; /* the root's end: what follows is the parser's to judge */
    } else if (c == ',' && d > 0) {
      const uint64_t k = ++lv[d - 1].commas + 1; /* at least this many members */
      want_key = lv[d - 1].kind == '{';
      if (d == 1 && k > (uint64_t)PG_ST_MAX_TENSORS + 1)
        return pg_err_set(err, PG_E_LIMIT, f, 8, "more than %u tensors (limit %u)",
                          PG_ST_MAX_TENSORS, PG_ST_MAX_TENSORS);
      if (d == 2 && lv[1].meta && k > PG_ST_MAX_META)
        return pg_err_set(err, PG_E_LIMIT, f, 8 + lv[1].at,
                          "__metadata__ has more than %u entries (limit %u)", PG_ST_MAX_META,
                          PG_ST_MAX_META);
      if (lv[d - 1].kind == '[' && k > PG_ST_MAX_RANK)
        return pg_err_set(err, PG_E_LIMIT, f, 8 + lv[d - 1].at,
                          "an array of more than %d values (a shape has at most %d, "
                          "data_offsets 2)", PG_ST_MAX_RANK, PG_ST_MAX_RANK);
    }
    p++;
  }
  return PG_OK;
}

int pg_st_header_text_check(const uint8_t *h, size_t n, const char *file, pg_err *err) {
  PG_FAIL_IF(n == 0 || h[0] != '{', err, PG_E_JSON, file, 8, "header does not start with '{'");
  size_t bad = utf8_first_bad(h, n);
  PG_FAIL_IF(bad != n, err, PG_E_UTF8, file, 8 + bad, "header is not valid UTF-8");
  return header_shape(file, h, n, err);
}

/* ---- the reader ---- */

struct pg_st {
  char *file;
  const uint8_t *base;
  size_t len;
  pg_map map;
  uint64_t hdr_len;   /* N */
  uint64_t data_off;  /* 8 + N */
  uint64_t data_size; /* len - 8 - N */
  pg_st_tensor *t;
  size_t nt;
  const pg_st_tensor **by_name;
  pg_st_meta *meta;
  size_t nmeta;
  char *pool; /* names, metadata keys and values */
};

void pg_st_free(pg_st *st) {
  if (!st) return;
  pg_file_unmap(&st->map);
  free(st->t);
  free(st->by_name);
  free(st->meta);
  free(st->pool);
  free(st->file);
  free(st);
}

/* Validate one tensor entry; on success fill *t (t->offset relative to the buffer, t->name
 * borrowed from jansson). off is the entry's absolute offset in the file. */
static int parse_entry(const pg_st *st, const char *name, json_t *v, uint64_t off, pg_st_tensor *t,
                       pg_err *err) {
  const char *f = st->file;
  size_t nl = strlen(name);
  PG_FAIL_IF(nl == 0, err, PG_E_JSON, f, off, "tensor with an empty name");
  PG_FAIL_IF(nl > PG_ST_MAX_NAME, err, PG_E_LIMIT, f, off,
             "tensor name of %zu bytes (limit %u): '%.40s...'", nl, PG_ST_MAX_NAME, name);
  PG_FAIL_IF(!json_is_object(v), err, PG_E_JSON, f, off, "tensor '%.200s': entry is not an object",
             name);
  const char *k;
  json_t *fv;
  json_object_foreach(v, k, fv) {
    PG_FAIL_IF(strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"), err,
               PG_E_JSON, f, off, "tensor '%.200s': unknown field '%.64s'", name, k);
  }
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
         *jo = json_object_get(v, "data_offsets");
  PG_FAIL_IF(!jd || !js || !jo, err, PG_E_JSON, f, off, "tensor '%.200s': missing field '%s'", name,
             !jd ? "dtype" : !js ? "shape" : "data_offsets");

  memset(t, 0, sizeof *t);
  t->name = name;
  PG_FAIL_IF(!json_is_string(jd), err, PG_E_JSON, f, off, "tensor '%.200s': dtype is not a string",
             name);
  PG_FAIL_IF(!dtype_lookup(json_string_value(jd), &t->dtype), err, PG_E_DTYPE, f, off,
             "tensor '%.200s': unknown dtype '%.64s'", name, json_string_value(jd));
  t->dtype_name = DTYPES[t->dtype].name;

  PG_FAIL_IF(!json_is_array(js), err, PG_E_JSON, f, off, "tensor '%.200s': shape is not an array",
             name);
  size_t rank = json_array_size(js);
  PG_FAIL_IF(rank > PG_ST_MAX_RANK, err, PG_E_LIMIT, f, off,
             "tensor '%.200s': rank %zu above the limit %d", name, rank, PG_ST_MAX_RANK);
  t->rank = (uint32_t)rank;
  int zero = 0;
  for (size_t i = 0; i < rank; i++) {
    json_t *d = json_array_get(js, i);
    PG_FAIL_IF(!json_is_integer(d), err, PG_E_JSON, f, off,
               "tensor '%.200s': shape[%zu] is not an integer", name, i);
    json_int_t x = json_integer_value(d);
    PG_FAIL_IF(x < 0, err, PG_E_JSON, f, off, "tensor '%.200s': shape[%zu] is negative (%lld)",
               name, i, (long long)x);
    t->shape[i] = (uint64_t)x;
    zero |= x == 0;
  }
  /* The exact product; a zero dimension makes it 0 whatever the others are. */
  uint64_t numel = 1;
  if (zero) {
    numel = 0;
  } else {
    for (size_t i = 0; i < rank; i++)
      PG_FAIL_IF(pg_mul_overflow_u64(numel, t->shape[i], &numel), err, PG_E_DIMS_OVERFLOW, f, off,
                 "tensor '%.200s': element count overflows 64 bits", name);
  }
  t->numel = numel;
  PG_FAIL_IF(pg_mul_overflow_u64(numel, DTYPES[t->dtype].size, &t->nbytes), err,
             PG_E_DIMS_OVERFLOW, f, off, "tensor '%.200s': byte size overflows 64 bits", name);

  PG_FAIL_IF(!json_is_array(jo) || json_array_size(jo) != 2, err, PG_E_JSON, f, off,
             "tensor '%.200s': data_offsets is not an array of two integers", name);
  json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
  PG_FAIL_IF(!json_is_integer(jb) || !json_is_integer(je), err, PG_E_JSON, f, off,
             "tensor '%.200s': data_offsets is not an array of two integers", name);
  json_int_t b = json_integer_value(jb), e = json_integer_value(je);
  PG_FAIL_IF(b < 0 || e < 0, err, PG_E_JSON, f, off,
             "tensor '%.200s': negative data_offsets [%lld, %lld]", name, (long long)b,
             (long long)e);
  PG_FAIL_IF(e < b, err, PG_E_SIZE_MISMATCH, f, off,
             "tensor '%.200s': data_offsets end %lld is before begin %lld", name, (long long)e,
             (long long)b);
  uint64_t span = (uint64_t)e - (uint64_t)b;
  PG_FAIL_IF(span != t->nbytes, err, PG_E_SIZE_MISMATCH, f, off,
             "tensor '%.200s': data_offsets span %llu bytes but %s shape needs %llu", name,
             (unsigned long long)span, t->dtype_name, (unsigned long long)t->nbytes);
  PG_FAIL_IF((uint64_t)e > st->data_size, err, PG_E_TRUNCATED, f, off,
             "tensor '%.200s': data ends at buffer byte %llu but the buffer has %llu", name,
             (unsigned long long)e, (unsigned long long)st->data_size);
  t->offset = (uint64_t)b;
  return PG_OK;
}

static int parse_meta(pg_st *st, json_t *v, uint64_t off, pg_err *err) {
  const char *f = st->file;
  PG_FAIL_IF(!json_is_object(v), err, PG_E_META_TYPE, f, off,
             "__metadata__ is not an object of strings");
  size_t n = json_object_size(v);
  if (n == 0) return PG_OK;
  st->meta = calloc(n, sizeof *st->meta);
  PG_FAIL_IF(!st->meta, err, PG_E_NOMEM, f, PG_NO_OFFSET, "cannot allocate the metadata");
  const char *k;
  json_t *mv;
  json_object_foreach(v, k, mv) {
    PG_FAIL_IF(!json_is_string(mv), err, PG_E_META_TYPE, f, off,
               "__metadata__ value of '%.200s' is not a string", k);
    st->meta[st->nmeta].key = k;
    st->meta[st->nmeta].value = json_string_value(mv);
    st->nmeta++;
  }
  return PG_OK;
}

static int cmp_offset(const void *a, const void *b) {
  const pg_st_tensor *x = a, *y = b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int cmp_name(const void *a, const void *b) {
  const pg_st_tensor *const *x = a, *const *y = b;
  return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta(const void *a, const void *b) {
  const pg_st_meta *x = a, *y = b;
  return strcmp(x->key, y->key);
}

/* Copy the names and metadata strings (borrowed from jansson so far) into one pool. */
static int intern_strings(pg_st *st, pg_err *err) {
  size_t total = 1;
  for (size_t i = 0; i < st->nt; i++) total += strlen(st->t[i].name) + 1;
  for (size_t i = 0; i < st->nmeta; i++)
    total += strlen(st->meta[i].key) + strlen(st->meta[i].value) + 2;
  st->pool = malloc(total);
  PG_FAIL_IF(!st->pool, err, PG_E_NOMEM, st->file, PG_NO_OFFSET, "cannot allocate %zu bytes",
             total);
  char *p = st->pool;
#define INTERN_(field)                   \
  do {                                   \
    size_t n_ = strlen(field) + 1;       \
    memcpy(p, (field), n_);              \
    (field) = p;                         \
    p += n_;                             \
  } while (0)
  for (size_t i = 0; i < st->nt; i++) INTERN_(st->t[i].name);
  for (size_t i = 0; i < st->nmeta; i++) {
    INTERN_(st->meta[i].key);
    INTERN_(st->meta[i].value);
  }
#undef INTERN_
  return PG_OK;
}

/* Every member of the header object. */
static int parse_members(pg_st *st, json_t *root, pg_err *err) {
  const char *f = st->file;
  const uint8_t *h = st->base + 8;
  size_t count = json_object_size(root);
  json_t *mv = json_object_get(root, META_KEY);
  size_t nt = count - (mv != NULL);
  PG_FAIL_IF(nt > PG_ST_MAX_TENSORS, err, PG_E_LIMIT, f, 8, "%zu tensors (limit %u)", nt,
             PG_ST_MAX_TENSORS);
  uint64_t *pos = NULL;
  size_t npos = scan_members(h, (size_t)st->hdr_len, count, &pos);
  if (nt) {
    st->t = calloc(nt, sizeof *st->t);
    if (!st->t) {
      free(pos);
      return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "cannot allocate %zu tensors", nt);
    }
  }
  const char *k;
  json_t *v;
  size_t i = 0;
  int rc = PG_OK;
  json_object_foreach(root, k, v) {
    uint64_t off = npos == count ? 8 + pos[i] : 8;
    i++;
    if (strcmp(k, META_KEY) == 0)
      rc = parse_meta(st, v, off, err);
    else
      rc = parse_entry(st, k, v, off, &st->t[st->nt++], err);
    if (rc != PG_OK) break;
  }
  free(pos);
  if (rc != PG_OK) {
    st->nt = st->nmeta = 0; /* names point into the JSON that is about to go */
    return rc;
  }
  return intern_strings(st, err);
}

/* The tensors tile [0, data_size) exactly; names are unique. */
static int check_layout(pg_st *st, pg_err *err) {
  const char *f = st->file;
  if (st->nt) qsort(st->t, st->nt, sizeof *st->t, cmp_offset);
  uint64_t at = 0;
  const char *prev = NULL;
  for (size_t i = 0; i < st->nt; i++) {
    pg_st_tensor *t = &st->t[i];
    PG_FAIL_IF(t->offset < at, err, PG_E_OVERLAP, f, st->data_off + t->offset,
               "tensor '%.200s' [%llu, %llu) overlaps '%.200s' which ends at buffer byte %llu",
               t->name, (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes),
               prev ? prev : "", (unsigned long long)at);
    PG_FAIL_IF(t->offset > at, err, PG_E_HOLE, f, st->data_off + at,
               "buffer bytes [%llu, %llu) before tensor '%.200s' belong to no tensor",
               (unsigned long long)at, (unsigned long long)t->offset, t->name);
    at = t->offset + t->nbytes;
    prev = t->name;
  }
  PG_FAIL_IF(at != st->data_size, err, PG_E_TRAILING, f, st->data_off + at,
             "%llu trailing buffer bytes belong to no tensor",
             (unsigned long long)(st->data_size - at));
  for (size_t i = 0; i < st->nt; i++) {
    pg_st_tensor *t = &st->t[i];
    t->data = st->base + st->data_off + t->offset;
    t->offset += st->data_off;
  }
  if (st->nt) {
    st->by_name = malloc(st->nt * sizeof *st->by_name);
    PG_FAIL_IF(!st->by_name, err, PG_E_NOMEM, f, PG_NO_OFFSET, "cannot allocate the name index");
    for (size_t i = 0; i < st->nt; i++) st->by_name[i] = &st->t[i];
    qsort(st->by_name, st->nt, sizeof *st->by_name, cmp_name);
    for (size_t i = 1; i < st->nt; i++)
      PG_FAIL_IF(strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0, err, PG_E_DUPLICATE,
                 f, 8, "duplicate tensor name '%.200s'", st->by_name[i]->name);
  }
  if (st->nmeta) qsort(st->meta, st->nmeta, sizeof *st->meta, cmp_meta);
  return PG_OK;
}


static int st_parse(pg_st *st, pg_err *err) {
  const char *f = st->file;
  PG_FAIL_IF(st->len < 8, err, PG_E_TRUNCATED, f, 0,
             "file is %zu bytes, shorter than the 8-byte header length", st->len);
  uint64_t n = pg_ld64(st->base), end;
  PG_FAIL_IF(pg_add_overflow_u64(n, 8, &end), err, PG_E_LIMIT, f, 0,
             "header length %llu overflows", (unsigned long long)n);
  PG_FAIL_IF(n > PG_ST_MAX_HEADER, err, PG_E_LIMIT, f, 0,
             "header length %llu above the limit %u", (unsigned long long)n, PG_ST_MAX_HEADER);
  PG_FAIL_IF(end > st->len, err, PG_E_TRUNCATED, f, 0,
             "header length %llu but only %zu bytes follow", (unsigned long long)n, st->len - 8);
  st->hdr_len = n;
  st->data_off = end;
  st->data_size = st->len - end;
  const uint8_t *h = st->base + 8;
  PG_TRY(pg_st_header_text_check(h, (size_t)n, f, err));

  json_error_t je;
  json_t *root = json_loadb((const char *)h, (size_t)n, JSON_REJECT_DUPLICATES, &je);
  if (!root) {
    uint64_t pos = je.position < 0 ? 0 : (uint64_t)je.position;
    if (pos > n) pos = n;
    return pg_err_set(err, pg_json_fault(&je), f, 8 + pos, "header JSON: %s", je.text);
  }
  int rc = json_is_object(root)
               ? parse_members(st, root, err)
               : pg_err_set(err, PG_E_JSON, f, 8, "header is not a JSON object");
  json_decref(root);
  PG_TRY(rc);
  return check_layout(st, err);
}

static int st_new(pg_st **out, const char *name, pg_err *err) {
  *out = NULL;
  pg_st *st = calloc(1, sizeof *st);
  char *fn = dup_str(name);
  if (!st || !fn) {
    free(st);
    free(fn);
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate a reader");
  }
  st->file = fn;
  *out = st;
  return PG_OK;
}

int pg_st_open_mem(pg_st **out, const uint8_t *data, size_t len, const char *name, pg_err *err) {
  if (!name) name = "<memory>";
  PG_FAIL_IF(!out || (!data && len), err, PG_E_ARG, name, PG_NO_OFFSET,
             "pg_st_open_mem: NULL argument");
  *out = NULL;
  pg_st *st;
  PG_TRY(st_new(&st, name, err));
  st->base = data;
  st->len = len;
  int rc = st_parse(st, err);
  if (rc != PG_OK) {
    pg_st_free(st);
    return rc;
  }
  *out = st;
  return PG_OK;
}

int pg_st_open_file(pg_st **out, const char *path, pg_err *err) {
  PG_FAIL_IF(!out || !path, err, PG_E_ARG, path, PG_NO_OFFSET, "pg_st_open_file: NULL argument");
  *out = NULL;
  pg_st *st;
  PG_TRY(st_new(&st, path, err));
  int rc = pg_file_map(&st->map, path, err);
  if (rc == PG_OK) {
    st->base = st->map.data;
    st->len = st->map.size;
    rc = st_parse(st, err);
  }
  if (rc != PG_OK) {
    pg_st_free(st);
    return rc;
  }
  *out = st;
  return PG_OK;
}

size_t pg_st_count(const pg_st *st) { return st ? st->nt : 0; }

const pg_st_tensor *pg_st_at(const pg_st *st, size_t i) {
  return st && i < st->nt ? &st->t[i] : NULL;
}

static int cmp_find(const void *key, const void *elem) {
  const pg_st_tensor *const *t = elem;
  return strcmp((const char *)key, (*t)->name);
}

int pg_st_find(const pg_st_tensor **out, const pg_st *st, const char *name, pg_err *err) {
  PG_FAIL_IF(!out || !st || !name, err, PG_E_ARG, st ? st->file : NULL, PG_NO_OFFSET,
             "pg_st_find: NULL argument");
  *out = NULL;
  const pg_st_tensor *const *hit =
      st->nt ? bsearch(name, st->by_name, st->nt, sizeof *st->by_name, cmp_find) : NULL;
  PG_FAIL_IF(!hit, err, PG_E_NOT_FOUND, st->file, PG_NO_OFFSET, "no tensor named '%.200s'", name);
  *out = *hit;
  return PG_OK;
}

uint64_t pg_st_data_size(const pg_st *st) { return st ? st->data_size : 0; }
uint64_t pg_st_data_offset(const pg_st *st) { return st ? st->data_off : 0; }

size_t pg_st_meta_count(const pg_st *st) { return st ? st->nmeta : 0; }

const pg_st_meta *pg_st_meta_at(const pg_st *st, size_t i) {
  return st && i < st->nmeta ? &st->meta[i] : NULL;
}

const char *pg_st_meta_get(const pg_st *st, const char *key) {
  if (!st || !key || !st->nmeta) return NULL;
  pg_st_meta k = {key, NULL};
  const pg_st_meta *hit = bsearch(&k, st->meta, st->nmeta, sizeof *st->meta, cmp_meta);
  return hit ? hit->value : NULL;
}

/* float8 e4m3fn: bias 7, subnormals, no infinities, S.1111.111 is NaN. */
static float f8e4m3_to_f32(uint8_t b) {
  unsigned e = (b >> 3) & 0xfu, m = b & 7u;
  float v;
  if (e == 15 && m == 7)
    v = NAN;
  else if (e == 0)
    v = ldexpf((float)m, -9);
  else
    v = ldexpf((float)(8 + m), (int)e - 10);
  return (b & 0x80) ? -v : v;
}

int pg_st_to_f32(float *dst, size_t dst_count, const pg_st *st, const pg_st_tensor *t,
                 pg_err *err) {
  const char *f = st ? st->file : NULL;
  PG_FAIL_IF(!t || (!dst && t->numel), err, PG_E_ARG, f, PG_NO_OFFSET,
             "pg_st_to_f32: NULL argument");
  PG_FAIL_IF(dst_count < t->numel, err, PG_E_ARG, f, t->offset,
             "tensor '%.200s' has %llu elements but the destination holds %zu", t->name,
             (unsigned long long)t->numel, dst_count);
  const uint8_t *p = t->data;
  size_t n = (size_t)t->numel;
  switch (t->dtype) {
  case PG_ST_F32:
    for (size_t i = 0; i < n; i++) {
      uint32_t u = pg_ld32(p + 4 * i);
      memcpy(&dst[i], &u, 4);
    }
    break;
  case PG_ST_F64:
    for (size_t i = 0; i < n; i++) {
      uint64_t u = pg_ld64(p + 8 * i);
      double d;
      memcpy(&d, &u, 8);
      dst[i] = (float)d;
    }
    break;
  case PG_ST_F16:
    for (size_t i = 0; i < n; i++) dst[i] = pg_f16_to_f32(pg_ld16(p + 2 * i));
    break;
  case PG_ST_BF16:
    for (size_t i = 0; i < n; i++) dst[i] = pg_bf16_to_f32(pg_ld16(p + 2 * i));
    break;
  case PG_ST_F8_E5M2:
    for (size_t i = 0; i < n; i++) dst[i] = pg_f16_to_f32((uint16_t)(p[i] << 8));
    break;
  case PG_ST_F8_E4M3:
    for (size_t i = 0; i < n; i++) dst[i] = f8e4m3_to_f32(p[i]);
    break;
  default:
    return pg_err_set(err, PG_E_DTYPE, f, t->offset,
                      "tensor '%.200s': cannot convert %s to fp32", t->name, t->dtype_name);
  }
  return PG_OK;
}

/* ---- the writer ---- */

typedef struct wtensor {
  char *name; /* owned */
  pg_st_dtype dtype;
  uint32_t rank;
  uint64_t shape[PG_ST_MAX_RANK];
  const void *data;
  size_t nbytes;
  pg_st_fill_fn fill; /* data made while writing, when set */
  void *ctx;
} wtensor;

struct pg_st_writer {
  wtensor *t;
  size_t nt, cap;
  uint64_t total; /* buffer bytes so far */
  json_t *names;  /* name set (values: null) */
  json_t *meta;   /* key -> string */
};

int pg_st_writer_create(pg_st_writer **out, pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_st_writer_create: NULL argument");
  *out = NULL;
  pg_st_writer *w = calloc(1, sizeof *w);
  if (w) {
    w->names = json_object();
    w->meta = json_object();
  }
  if (!w || !w->names || !w->meta) {
    pg_st_writer_free(w);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a writer");
  }
  *out = w;
  return PG_OK;
}

void pg_st_writer_free(pg_st_writer *w) {
  if (!w) return;
  json_decref(w->names);
  json_decref(w->meta);
  for (size_t i = 0; i < w->nt; i++) free(w->t[i].name);
  free(w->t);
  free(w);
}

static int add_tensor(pg_st_writer *w, const char *name, pg_st_dtype dtype, uint32_t rank,
                      const uint64_t *shape, const void *data, size_t nbytes, pg_st_fill_fn fill,
                      void *ctx, pg_err *err) {
  PG_FAIL_IF(!w || !name || (rank && !shape) || (nbytes && !data && !fill), err, PG_E_ARG, NULL,
             PG_NO_OFFSET, "pg_st_writer_add: NULL argument");
  size_t nl = strlen(name);
  PG_FAIL_IF(nl == 0, err, PG_E_ARG, NULL, PG_NO_OFFSET, "empty tensor name");
  PG_FAIL_IF(nl > PG_ST_MAX_NAME, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "tensor name of %zu bytes (limit %u)", nl, PG_ST_MAX_NAME);
  PG_FAIL_IF(utf8_first_bad((const uint8_t *)name, nl) != nl, err, PG_E_UTF8, NULL, PG_NO_OFFSET,
             "tensor name is not valid UTF-8");
  PG_FAIL_IF(strcmp(name, META_KEY) == 0, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "'" META_KEY "' is reserved");
  PG_FAIL_IF(json_object_get(w->names, name) != NULL, err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET,
             "duplicate tensor name '%.200s'", name);
  PG_FAIL_IF(w->nt >= PG_ST_MAX_TENSORS, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "more than %u tensors", PG_ST_MAX_TENSORS);
  PG_FAIL_IF(!dtype_ok(dtype), err, PG_E_DTYPE, NULL, PG_NO_OFFSET,
             "tensor '%.200s': unknown dtype %d", name, (int)dtype);
  PG_FAIL_IF(rank > PG_ST_MAX_RANK, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "tensor '%.200s': rank %u above the limit %d", name, rank, PG_ST_MAX_RANK);
  uint64_t numel = 1, bytes, total;
  int zero = 0;
  for (uint32_t i = 0; i < rank; i++) {
    PG_FAIL_IF(shape[i] > (uint64_t)INT64_MAX, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
               "tensor '%.200s': shape[%u] does not fit a JSON integer", name, i);
    zero |= shape[i] == 0;
  }
  if (zero)
    numel = 0;
  else
    for (uint32_t i = 0; i < rank; i++)
      PG_FAIL_IF(pg_mul_overflow_u64(numel, shape[i], &numel), err, PG_E_DIMS_OVERFLOW, NULL,
                 PG_NO_OFFSET, "tensor '%.200s': element count overflows 64 bits", name);
  PG_FAIL_IF(pg_mul_overflow_u64(numel, DTYPES[dtype].size, &bytes), err, PG_E_DIMS_OVERFLOW,
             NULL, PG_NO_OFFSET, "tensor '%.200s': byte size overflows 64 bits", name);
  PG_FAIL_IF(bytes != (uint64_t)nbytes, err, PG_E_SIZE_MISMATCH, NULL, PG_NO_OFFSET,
             "tensor '%.200s': %zu bytes given but %s shape needs %llu", name, nbytes,
             DTYPES[dtype].name, (unsigned long long)bytes);
  PG_FAIL_IF(pg_add_overflow_u64(w->total, bytes, &total) || total > (uint64_t)INT64_MAX, err,
             PG_E_LIMIT, NULL, PG_NO_OFFSET, "tensor '%.200s': buffer too large", name);
  if (w->nt == w->cap) {
    size_t cap = w->cap ? 2 * w->cap : 16;
    wtensor *p = realloc(w->t, cap * sizeof *p);
    PG_FAIL_IF(!p, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot grow the tensor list");
    w->t = p;
    w->cap = cap;
  }
  char *copy = dup_str(name);
  if (!copy || json_object_set_new(w->names, name, json_null()) != 0) {
    free(copy);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot record the name '%.200s'",
                      name);
  }
  wtensor *t = &w->t[w->nt++];
  memset(t, 0, sizeof *t);
  t->name = copy;
  t->dtype = dtype;
  t->rank = rank;
  for (uint32_t i = 0; i < rank; i++) t->shape[i] = shape[i];
  t->data = data;
  t->nbytes = nbytes;
  t->fill = fill;
  t->ctx = ctx;
  w->total = total;
  return PG_OK;
}

int pg_st_writer_add(pg_st_writer *w, const char *name, pg_st_dtype dtype, uint32_t rank,
                     const uint64_t *shape, const void *data, size_t nbytes, pg_err *err) {
  return add_tensor(w, name, dtype, rank, shape, data, nbytes, NULL, NULL, err);
}

int pg_st_writer_add_fill(pg_st_writer *w, const char *name, pg_st_dtype dtype, uint32_t rank,
                          const uint64_t *shape, size_t nbytes, pg_st_fill_fn fill, void *ctx,
                          pg_err *err) {
  PG_FAIL_IF(!fill, err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_st_writer_add_fill: no fill");
  return add_tensor(w, name, dtype, rank, shape, NULL, nbytes, fill, ctx, err);
}

/* A tensor's bytes: its data, or its fill run into *tmp (malloc'd; the caller frees it). */
static int tensor_bytes(const wtensor *t, const void **p, void **tmp, const char *path,
                        pg_err *err) {
  *tmp = NULL;
  *p = t->data;
  if (!t->fill || !t->nbytes) return PG_OK;
  *tmp = malloc(t->nbytes);
  PG_FAIL_IF(!*tmp, err, PG_E_NOMEM, path, PG_NO_OFFSET,
             "tensor '%.200s': out of memory for its %zu bytes", t->name, t->nbytes);
  *p = *tmp;
  return t->fill(t->ctx, *tmp, t->nbytes, err);
}

int pg_st_writer_set_meta(pg_st_writer *w, const char *key, const char *value, pg_err *err) {
  PG_FAIL_IF(!w || !key || !value, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pg_st_writer_set_meta: NULL argument");
  size_t kl = strlen(key), vl = strlen(value);
  PG_FAIL_IF(utf8_first_bad((const uint8_t *)key, kl) != kl ||
                 utf8_first_bad((const uint8_t *)value, vl) != vl,
             err, PG_E_UTF8, NULL, PG_NO_OFFSET, "metadata key or value is not valid UTF-8");
  PG_FAIL_IF(json_object_get(w->meta, key) != NULL, err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET,
             "duplicate metadata key '%.200s'", key);
  PG_FAIL_IF(json_object_size(w->meta) >= PG_ST_MAX_META, err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
             "more than %u metadata pairs", PG_ST_MAX_META);
  PG_FAIL_IF(json_object_set_new(w->meta, key, json_string(value)) != 0, err, PG_E_NOMEM, NULL,
             PG_NO_OFFSET, "cannot record metadata '%.200s'", key);
  return PG_OK;
}

/* The padded header: 8-byte length then sorted compact JSON and spaces to a multiple of 8. */
static int build_header(pg_buf *out, const pg_st_writer *w, const char *f, pg_err *err) {
  memset(out, 0, sizeof *out);
  json_t *root = json_object();
  int oom = !root;
  uint64_t at = 0;
  for (size_t i = 0; i < w->nt && !oom; i++) {
    const wtensor *t = &w->t[i];
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    oom = !e || !shape || !offs;
    for (uint32_t d = 0; d < t->rank && !oom; d++)
      oom = json_array_append_new(shape, json_integer((json_int_t)t->shape[d])) != 0;
    oom = oom || json_array_append_new(offs, json_integer((json_int_t)at)) != 0 ||
          json_array_append_new(offs, json_integer((json_int_t)(at + t->nbytes))) != 0;
    oom = oom || json_object_set_new(e, "dtype", json_string(DTYPES[t->dtype].name)) != 0;
    oom = oom || json_object_set(e, "shape", shape) != 0 ||
          json_object_set(e, "data_offsets", offs) != 0;
    json_decref(shape);
    json_decref(offs);
    oom = oom || json_object_set(root, t->name, e) != 0;
    json_decref(e);
    at += t->nbytes;
  }
  if (!oom && json_object_size(w->meta)) oom = json_object_set(root, META_KEY, w->meta) != 0;
  char *s = oom ? NULL : json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(root);
  PG_FAIL_IF(!s, err, PG_E_NOMEM, f, PG_NO_OFFSET, "cannot build the header");
  size_t n = strlen(s), padded = (n + 7) & ~(size_t)7;
  if (padded > PG_ST_MAX_HEADER) {
    free(s);
    return pg_err_set(err, PG_E_LIMIT, f, PG_NO_OFFSET, "header of %zu bytes above the limit %u",
                      padded, PG_ST_MAX_HEADER);
  }
  int rc = pg_buf_reserve(out, 8 + padded);
  if (rc == PG_OK) {
    pg_buf_u64(out, padded);
    pg_buf_put(out, s, n);
    for (size_t i = n; i < padded; i++) pg_buf_u8(out, ' ');
  }
  free(s);
  if (rc != PG_OK || out->oom) {
    pg_buf_free(out);
    return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "cannot build the header");
  }
  return PG_OK;
}

int pg_st_writer_write(pg_st_writer *w, const char *path, pg_err *err) {
  PG_FAIL_IF(!w || !path, err, PG_E_ARG, path, PG_NO_OFFSET, "pg_st_writer_write: NULL argument");
  pg_buf hdr;
  PG_TRY(build_header(&hdr, w, path, err));
  pg_out o;
  int rc = pg_out_begin(&o, path, err);
  if (rc != PG_OK) {
    pg_buf_free(&hdr);
    return rc;
  }
  rc = pg_out_write(&o, hdr.data, hdr.len, err);
  for (size_t i = 0; i < w->nt && rc == PG_OK; i++) {
    const void *p;
    void *tmp;
    rc = tensor_bytes(&w->t[i], &p, &tmp, path, err);
    if (rc == PG_OK) rc = pg_out_write(&o, p, w->t[i].nbytes, err);
    free(tmp);
  }
  pg_buf_free(&hdr);
  if (rc != PG_OK) {
    pg_out_abort(&o);
    return rc;
  }
  return pg_out_commit(&o, err);
}

int pg_st_writer_to_mem(uint8_t **out, size_t *out_len, pg_st_writer *w, pg_err *err) {
  PG_FAIL_IF(!out || !out_len || !w, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pg_st_writer_to_mem: NULL argument");
  *out = NULL;
  *out_len = 0;
  pg_buf b;
  PG_TRY(build_header(&b, w, "<memory>", err));
  if (w->total > SIZE_MAX - b.len) {
    pg_buf_free(&b);
    return pg_err_set(err, PG_E_NOMEM, "<memory>", PG_NO_OFFSET, "file too large for memory");
  }
  int rc = PG_OK;
  for (size_t i = 0; i < w->nt && rc == PG_OK; i++) {
    const void *p;
    void *tmp;
    rc = tensor_bytes(&w->t[i], &p, &tmp, "<memory>", err);
    if (rc == PG_OK) pg_buf_put(&b, p, w->t[i].nbytes);
    free(tmp);
  }
  if (rc != PG_OK) {
    pg_buf_free(&b);
    return rc;
  }
  if (b.oom) {
    pg_buf_free(&b);
    return pg_err_set(err, PG_E_NOMEM, "<memory>", PG_NO_OFFSET, "cannot allocate the file");
  }
  *out = b.data;
  *out_len = b.len;
  return PG_OK;
}
