/* pg_torchzip.c: the torch.save reader (pg_torchzip.h, spec/import.md §2). The ZIP layer checks
 * every offset and size against the buffer before it reads; the pickle layer is an interpreter
 * of a fixed opcode subset whose only callables are applied by this file, so nothing the file
 * names is ever looked up or run. */
#include "pg_torchzip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Internal kinds (never in a finished tree's reachable containers as public values). */
enum { K_GLOBAL = 64, K_STORAGE = 65 };
/* Allow-listed globals. */
enum { G_ODICT = 1, G_REBUILD_V2, G_REBUILD_PARAM, G_STORAGE };

typedef struct zentry {
  const char *name;
  size_t name_len;
  const uint8_t *data;
  uint64_t size, offset;
  uint64_t start; /* the local header's offset: the entry holds [start, offset + size) */
  uint32_t crc;   /* the directory's CRC-32 */
  uint32_t index; /* the entry's place in the directory */
} zentry;

struct pg_tz {
  const uint8_t *buf;
  size_t len;
  const char *name;
  zentry *ent;
  uint32_t nent;
  const char *prefix; /* the folder of data.pkl */
  size_t prefix_len;
  uint64_t pkl_off;
  pg_tz_value *nodes; /* every allocated value, for freeing */
  uint32_t nnodes;
  pg_tz_value *root;
};

static const struct {
  const char *name;
  int dtype;
  unsigned size;
} DTYPES[PG_TZ_DTYPE_COUNT] = {
    [PG_TZ_F32] = {"float32", PG_TZ_F32, 4},   [PG_TZ_F16] = {"float16", PG_TZ_F16, 2},
    [PG_TZ_BF16] = {"bfloat16", PG_TZ_BF16, 2}, [PG_TZ_F64] = {"float64", PG_TZ_F64, 8},
    [PG_TZ_I8] = {"int8", PG_TZ_I8, 1},         [PG_TZ_U8] = {"uint8", PG_TZ_U8, 1},
    [PG_TZ_I16] = {"int16", PG_TZ_I16, 2},      [PG_TZ_I32] = {"int32", PG_TZ_I32, 4},
    [PG_TZ_I64] = {"int64", PG_TZ_I64, 8},      [PG_TZ_BOOLT] = {"bool", PG_TZ_BOOLT, 1},
};

/* torch's storage classes, as torch.save names them in a storage's persistent id. */
static const struct {
  const char *name;
  int dtype;
} STORAGES[] = {
    {"FloatStorage", PG_TZ_F32}, {"HalfStorage", PG_TZ_F16},  {"BFloat16Storage", PG_TZ_BF16},
    {"DoubleStorage", PG_TZ_F64}, {"CharStorage", PG_TZ_I8},  {"ByteStorage", PG_TZ_U8},
    {"ShortStorage", PG_TZ_I16}, {"IntStorage", PG_TZ_I32},   {"LongStorage", PG_TZ_I64},
    {"BoolStorage", PG_TZ_BOOLT},
};

const char *pg_tz_dtype_name(int dtype) {
  return dtype >= 0 && dtype < PG_TZ_DTYPE_COUNT ? DTYPES[dtype].name : "?";
}
unsigned pg_tz_dtype_size(int dtype) {
  return dtype >= 0 && dtype < PG_TZ_DTYPE_COUNT ? DTYPES[dtype].size : 0;
}

const char *pg_tz_kind_name(int kind) {
  switch (kind) {
  case PG_TZ_NONE: return "None";
  case PG_TZ_BOOL: return "bool";
  case PG_TZ_INT: return "int";
  case PG_TZ_FLOAT: return "float";
  case PG_TZ_STR: return "str";
  case PG_TZ_BYTES: return "bytes";
  case PG_TZ_LIST: return "list";
  case PG_TZ_TUPLE: return "tuple";
  case PG_TZ_DICT: return "dict";
  case PG_TZ_TENSOR: return "tensor";
  case K_GLOBAL: return "global";
  case K_STORAGE: return "storage";
  default: return "?";
  }
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- ZIP ---- */

static int cmp_entry(const void *a, const void *b) {
  const zentry *x = a, *y = b;
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(x->name, y->name, n);
  if (c) return c;
  return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int cmp_start(const void *a, const void *b) {
  const zentry *x = a, *y = b;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

static const zentry *find_entry(const pg_tz *z, const char *name, size_t n) {
  zentry key = {.name = name, .name_len = n};
  return bsearch(&key, z->ent, z->nent, sizeof *z->ent, cmp_entry);
}

static int read_zip(pg_tz *z, pg_err *err) {
  const uint8_t *b = z->buf;
  size_t len = z->len;
  const char *f = z->name;
  PG_FAIL_IF(len < 4, err, PG_E_TRUNCATED, f, 0, "%zu bytes: too short for a ZIP archive", len);
  PG_FAIL_IF(memcmp(b, "PK\x03\x04", 4) != 0, err, PG_E_MAGIC, f, 0,
             "not a ZIP archive (a torch.save file begins with PK\\3\\4)");
  PG_FAIL_IF(len < 22, err, PG_E_TRUNCATED, f, 0, "%zu bytes: no room for the ZIP directory",
             len);
  /* The end record: the last "PK\5\6" whose comment reaches exactly the end of the file. */
  size_t eocd = SIZE_MAX;
  size_t lo = len - 22 > 65535 ? len - 22 - 65535 : 0;
  for (size_t p = len - 22 + 1; p-- > lo;) {
    if (rd32(b + p) == 0x06054b50u && p + 22 + rd16(b + p + 20) == len) {
      eocd = p;
      break;
    }
  }
  PG_FAIL_IF(eocd == SIZE_MAX, err, PG_E_MALFORMED, f, len,
             "no ZIP end-of-directory record (truncated archive?)");
  const uint8_t *e = b + eocd;
  uint32_t n_disk = rd16(e + 8), n_all = rd16(e + 10), cd_size = rd32(e + 12),
           cd_off = rd32(e + 16);
  PG_FAIL_IF(n_all == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu, err,
             PG_E_UNSUPPORTED, f, eocd,
             "a zip64 archive (over 65,535 entries or 4 GiB) is not supported");
  PG_FAIL_IF(rd16(e + 4) != 0 || rd16(e + 6) != 0 || n_disk != n_all, err, PG_E_MALFORMED, f,
             eocd, "a multi-disk ZIP archive");
  PG_FAIL_IF(n_all > PG_TZ_MAX_ENTRIES, err, PG_E_LIMIT, f, eocd, "%u ZIP entries (limit %u)",
             n_all, PG_TZ_MAX_ENTRIES);
  PG_FAIL_IF((uint64_t)cd_off + cd_size > eocd, err, PG_E_MALFORMED, f, eocd,
             "the ZIP directory (offset %u, %u bytes) reaches past its end record", cd_off,
             cd_size);
  z->ent = calloc(n_all ? n_all : 1, sizeof *z->ent);
  if (!z->ent) return pg_err_set(err, PG_E_NOMEM, f, PG_NO_OFFSET, "out of memory");
  uint64_t p = cd_off, end = (uint64_t)cd_off + cd_size;
  for (uint32_t i = 0; i < n_all; i++) {
    PG_FAIL_IF(p + 46 > end, err, PG_E_MALFORMED, f, p, "ZIP directory entry %u is cut short",
               i);
    const uint8_t *c = b + p;
    PG_FAIL_IF(rd32(c) != 0x02014b50u, err, PG_E_MALFORMED, f, p,
               "ZIP directory entry %u: bad signature", i);
    uint16_t flags = rd16(c + 8), method = rd16(c + 10);
    uint32_t crc = rd32(c + 16), csize = rd32(c + 20), usize = rd32(c + 24);
    uint32_t nl = rd16(c + 28), xl = rd16(c + 30), cl = rd16(c + 32), lho = rd32(c + 42);
    PG_FAIL_IF(p + 46 + nl + xl + cl > end, err, PG_E_MALFORMED, f, p,
               "ZIP directory entry %u reaches past the directory", i);
    PG_FAIL_IF(csize == 0xFFFFFFFFu || usize == 0xFFFFFFFFu || lho == 0xFFFFFFFFu, err,
               PG_E_UNSUPPORTED, f, p, "ZIP entry %u uses zip64 fields: not supported", i);
    PG_FAIL_IF(flags & 0x41, err, PG_E_UNSUPPORTED, f, p, "ZIP entry %u is encrypted", i);
    PG_FAIL_IF(method != 0, err, PG_E_UNSUPPORTED, f, p,
               "ZIP entry %u is compressed (method %u); torch.save stores entries", i, method);
    PG_FAIL_IF(csize != usize, err, PG_E_MALFORMED, f, p,
               "ZIP entry %u: stored entry with sizes %u and %u", i, csize, usize);
    PG_FAIL_IF(nl == 0, err, PG_E_MALFORMED, f, p, "ZIP entry %u has no name", i);
    /* The local header: its name must be the directory's, its data inside the file. */
    PG_FAIL_IF((uint64_t)lho + 30 > cd_off, err, PG_E_MALFORMED, f, p,
               "ZIP entry %u: local header at %u is outside the data area", i, lho);
    const uint8_t *l = b + lho;
    PG_FAIL_IF(rd32(l) != 0x04034b50u, err, PG_E_MALFORMED, f, lho,
               "ZIP entry %u: bad local header signature", i);
    uint32_t lnl = rd16(l + 26), lxl = rd16(l + 28);
    uint64_t data = (uint64_t)lho + 30 + lnl + lxl;
    PG_FAIL_IF(lnl != nl || data > cd_off || memcmp(l + 30, c + 46, nl) != 0, err,
               PG_E_MALFORMED, f, lho, "ZIP entry %u: local header disagrees with the directory",
               i);
    PG_FAIL_IF(data + usize > cd_off, err, PG_E_MALFORMED, f, lho,
               "ZIP entry %u: %u bytes at %llu reach past the data area", i, usize,
               (unsigned long long)data);
    z->ent[i] = (zentry){(const char *)(c + 46), nl, b + data, usize, data, lho, crc, i};
    p += 46 + nl + xl + cl;
  }
  z->nent = n_all;
  /* Entries hold disjoint byte ranges, as every ZIP writer lays them out. Checked before any
   * checksum: n entries sharing (or nesting) one large range would make the checks below read
   * it n times, work quadratic in the file's size. */
  qsort(z->ent, z->nent, sizeof *z->ent, cmp_start);
  for (uint32_t i = 1; i < z->nent; i++) {
    const zentry *x = &z->ent[i - 1], *y = &z->ent[i];
    PG_FAIL_IF(y->start < x->offset + x->size, err, PG_E_OVERLAP, f, y->start,
               "ZIP entries %u and %u overlap (local headers at %llu and %llu)", x->index,
               y->index, (unsigned long long)x->start, (unsigned long long)y->start);
  }
  /* Hence the checksums read each byte of the file at most once. */
  for (uint32_t i = 0; i < z->nent; i++) {
    const zentry *x = &z->ent[i];
    uint32_t got = (uint32_t)crc32(0L, Z_NULL, 0);
    for (uint64_t q = 0; q < x->size;) { /* crc32 takes uInt lengths */
      uInt chunk = x->size - q > (1u << 30) ? (1u << 30) : (uInt)(x->size - q);
      got = (uint32_t)crc32(got, x->data + q, chunk);
      q += chunk;
    }
#ifndef PG_FUZZING
    PG_FAIL_IF(got != x->crc, err, PG_E_CHECKSUM, f, x->offset,
               "ZIP entry %u: CRC-32 %08x, the directory says %08x", x->index, got, x->crc);
#else
    (void)got; /* the fuzzer's inputs reach past the checksum */
#endif
  }
  qsort(z->ent, z->nent, sizeof *z->ent, cmp_entry);
  for (uint32_t i = 1; i < z->nent; i++)
    PG_FAIL_IF(cmp_entry(&z->ent[i - 1], &z->ent[i]) == 0, err, PG_E_DUPLICATE, f,
               z->ent[i].offset, "two ZIP entries have the same name");
  /* data.pkl: exactly one, in a top-level folder, and every entry lies in that folder. */
  const zentry *pkl = NULL;
  for (uint32_t i = 0; i < z->nent; i++) {
    const zentry *x = &z->ent[i];
    if (x->name_len > 9 && memcmp(x->name + x->name_len - 9, "/data.pkl", 9) == 0 &&
        memchr(x->name, '/', x->name_len - 9) == NULL) {
      PG_FAIL_IF(pkl, err, PG_E_MALFORMED, f, x->offset, "two data.pkl entries");
      pkl = x;
    }
  }
  PG_FAIL_IF(!pkl, err, PG_E_MALFORMED, f, cd_off,
             "no FOLDER/data.pkl entry: a ZIP archive, but not a torch.save file");
  z->prefix = pkl->name;
  z->prefix_len = pkl->name_len - 8; /* keeps the '/' */
  for (uint32_t i = 0; i < z->nent; i++)
    PG_FAIL_IF(z->ent[i].name_len < z->prefix_len ||
                   memcmp(z->ent[i].name, z->prefix, z->prefix_len) != 0,
               err, PG_E_MALFORMED, f, z->ent[i].offset, "a ZIP entry outside the folder %.*s",
               (int)z->prefix_len, z->prefix);
  char bo[64];
  size_t pl = z->prefix_len;
  if (pl + 9 < sizeof bo) {
    memcpy(bo, z->prefix, pl);
    memcpy(bo + pl, "byteorder", 9);
    const zentry *x = find_entry(z, bo, pl + 9);
    PG_FAIL_IF(x && !(x->size == 6 && memcmp(x->data, "little", 6) == 0), err,
               PG_E_UNSUPPORTED, f, x ? x->offset : 0, "byteorder is not \"little\"");
  }
  PG_FAIL_IF(pkl->size > PG_TZ_MAX_PICKLE, err, PG_E_LIMIT, f, pkl->offset,
             "data.pkl holds %llu bytes (limit %llu)", (unsigned long long)pkl->size,
             (unsigned long long)PG_TZ_MAX_PICKLE);
  z->pkl_off = pkl->offset;
  return PG_OK;
}

/* ---- the pickle subset ---- */

typedef struct vm {
  pg_tz *z;
  const uint8_t *p;
  size_t n, pos, op_pos;
  pg_tz_value **stack;
  uint32_t sp;
  uint32_t *marks;
  uint32_t nmarks;
  pg_tz_value **memo;
  uint32_t memo_cap, memo_count;
  pg_err *err;
} vm;

#define VM_FAIL(v, status, ...)                                                                \
  return pg_err_set((v)->err, (status), (v)->z->name, (v)->z->pkl_off + (v)->op_pos,          \
                    __VA_ARGS__)

static pg_tz_value *node(vm *v, int kind) {
  if (v->z->nnodes >= PG_TZ_MAX_NODES) return NULL;
  pg_tz_value *x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->kind = kind;
  x->next_alloc = v->z->nodes;
  v->z->nodes = x;
  v->z->nnodes++;
  return x;
}

static int new_node(vm *v, int kind, pg_tz_value **out) {
  if (v->z->nnodes >= PG_TZ_MAX_NODES)
    VM_FAIL(v, PG_E_LIMIT, "pickle creates more than %u values", PG_TZ_MAX_NODES);
  *out = node(v, kind);
  if (!*out) VM_FAIL(v, PG_E_NOMEM, "out of memory");
  return PG_OK;
}

static int is_container(const pg_tz_value *x) {
  return x->kind == PG_TZ_LIST || x->kind == PG_TZ_TUPLE || x->kind == PG_TZ_DICT;
}

/* A small tuple of non-containers may be shared (pickle memoizes tuples such as sizes); every
 * other container has one parent, and none may hold one of its ancestors: the tree has no
 * cycles and no shared subtrees, so any walk of it is linear. */
static int shareable(const pg_tz_value *x) {
  if (x->kind != PG_TZ_TUPLE || x->n > 16) return 0;
  for (size_t i = 0; i < x->n; i++)
    if (is_container(x->items[i])) return 0;
  return 1;
}

static int attach(vm *v, pg_tz_value *parent, pg_tz_value *child) {
  /* A storage type or a storage is only ever an argument (of a persistent id or a rebuild). */
  if ((child->kind == K_GLOBAL || child->kind == K_STORAGE) && parent->kind != PG_TZ_TUPLE)
    VM_FAIL(v, PG_E_UNSUPPORTED, "a %s used as a plain value", pg_tz_kind_name(child->kind));
  if (!is_container(child)) return PG_OK;
  int share = shareable(child);
  if (child->parent && !share)
    VM_FAIL(v, PG_E_UNSUPPORTED, "a %s held by two containers", pg_tz_kind_name(child->kind));
  /* Heights (levels of containers below and including one) stay at most PG_TZ_MAX_DEPTH, so
   * the ancestor chain walked here is short, and any walk of the tree recurses that deep. */
  unsigned h = child->height + 1;
  for (pg_tz_value *a = parent; a; a = a->parent, h++) {
    if (a == child) VM_FAIL(v, PG_E_UNSUPPORTED, "a %s that contains itself",
                            pg_tz_kind_name(child->kind));
    if (h > PG_TZ_MAX_DEPTH)
      VM_FAIL(v, PG_E_LIMIT, "containers nested deeper than %u", PG_TZ_MAX_DEPTH);
    if (a->height < h) a->height = h;
  }
  if (!share) child->parent = parent;
  return PG_OK;
}

/* Append k items (lists, tuples: k = 1; dicts: a key and its value, k = 2, n counting pairs). */
static int push_items(vm *v, pg_tz_value *c, pg_tz_value *a, pg_tz_value *b) {
  size_t used = c->kind == PG_TZ_DICT ? 2 * c->n : c->n, k = b ? 2 : 1;
  if (used + k > c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 4;
    pg_tz_value **it = realloc(c->items, cap * sizeof *it);
    if (!it) VM_FAIL(v, PG_E_NOMEM, "out of memory");
    c->items = it;
    c->cap = cap;
  }
  c->items[used] = a;
  if (b) c->items[used + 1] = b;
  c->n++;
  return PG_OK;
}
static int push_item(vm *v, pg_tz_value *c, pg_tz_value *x) { return push_items(v, c, x, NULL); }

static int push(vm *v, pg_tz_value *x) {
  if (v->sp >= PG_TZ_MAX_STACK)
    VM_FAIL(v, PG_E_LIMIT, "pickle stack deeper than %u", PG_TZ_MAX_STACK);
  v->stack[v->sp++] = x;
  return PG_OK;
}

/* The stack may not be popped below the last mark. */
static uint32_t floor_of(const vm *v) { return v->nmarks ? v->marks[v->nmarks - 1] : 0; }

static int pop(vm *v, pg_tz_value **out) {
  if (v->sp <= floor_of(v)) VM_FAIL(v, PG_E_MALFORMED, "pickle stack underflow");
  *out = v->stack[--v->sp];
  return PG_OK;
}

static int need(vm *v, size_t k) {
  if (v->n - v->pos < k)
    VM_FAIL(v, PG_E_TRUNCATED, "data.pkl ends inside an opcode (%zu of %zu bytes)", v->n - v->pos,
            k);
  return PG_OK;
}

static int pop_mark(vm *v, uint32_t *base) {
  if (!v->nmarks) VM_FAIL(v, PG_E_MALFORMED, "no MARK on the pickle stack");
  *base = v->marks[--v->nmarks];
  return PG_OK;
}

static int make_str(vm *v, int kind, size_t len) {
  PG_TRY(need(v, len));
  if (len > PG_TZ_MAX_STR) VM_FAIL(v, PG_E_LIMIT, "a string of %zu bytes", len);
  pg_tz_value *x;
  PG_TRY(new_node(v, kind, &x));
  char *s = malloc(len + 1);
  if (!s) VM_FAIL(v, PG_E_NOMEM, "out of memory");
  memcpy(s, v->p + v->pos, len);
  s[len] = 0;
  x->s = s;
  x->len = len;
  v->pos += len;
  return push(v, x);
}

/* A string opcode: its length in lb (1 or 4) little-endian bytes, then the bytes. */
static int str_op(vm *v, int kind, unsigned lb) {
  PG_TRY(need(v, lb));
  size_t len = lb == 1 ? v->p[v->pos] : rd32(v->p + v->pos);
  v->pos += lb;
  return make_str(v, kind, len);
}

static int make_int(vm *v, int64_t i) {
  pg_tz_value *x;
  PG_TRY(new_node(v, PG_TZ_INT, &x));
  x->i = i;
  return push(v, x);
}

static int make_seq(vm *v, int kind, uint32_t base) {
  pg_tz_value *x;
  PG_TRY(new_node(v, kind, &x));
  for (uint32_t i = base; i < v->sp; i++) {
    PG_TRY(attach(v, x, v->stack[i]));
    PG_TRY(push_item(v, x, v->stack[i]));
  }
  v->sp = base;
  return push(v, x);
}

static int set_items(vm *v, pg_tz_value *d, uint32_t from) {
  if (d->kind != PG_TZ_DICT)
    VM_FAIL(v, PG_E_MALFORMED, "SETITEM on a %s", pg_tz_kind_name(d->kind));
  if ((v->sp - from) % 2) VM_FAIL(v, PG_E_MALFORMED, "SETITEMS with an odd number of values");
  for (uint32_t i = from; i < v->sp; i += 2) {
    pg_tz_value *k = v->stack[i], *val = v->stack[i + 1];
    if (k->kind != PG_TZ_STR && k->kind != PG_TZ_INT)
      VM_FAIL(v, PG_E_UNSUPPORTED, "a dict key of kind %s (only str and int keys)",
              pg_tz_kind_name(k->kind));
    PG_TRY(attach(v, d, val));
    PG_TRY(push_items(v, d, k, val));
  }
  v->sp = from;
  return PG_OK;
}

static int append_items(vm *v, pg_tz_value *l, uint32_t from) {
  if (l->kind != PG_TZ_LIST) VM_FAIL(v, PG_E_MALFORMED, "APPEND on a %s", pg_tz_kind_name(l->kind));
  for (uint32_t i = from; i < v->sp; i++) {
    PG_TRY(attach(v, l, v->stack[i]));
    PG_TRY(push_item(v, l, v->stack[i]));
  }
  v->sp = from;
  return PG_OK;
}

static int memo_put(vm *v, uint64_t idx) {
  if (!v->sp || v->sp <= floor_of(v)) VM_FAIL(v, PG_E_MALFORMED, "memoize with an empty stack");
  if (idx >= PG_TZ_MAX_MEMO) VM_FAIL(v, PG_E_LIMIT, "memo index %llu (limit %u)",
                                     (unsigned long long)idx, PG_TZ_MAX_MEMO);
  if (idx >= v->memo_cap) {
    uint32_t cap = v->memo_cap ? v->memo_cap : 64;
    while (cap <= idx) cap *= 2;
    pg_tz_value **m = realloc(v->memo, (size_t)cap * sizeof *m);
    if (!m) VM_FAIL(v, PG_E_NOMEM, "out of memory");
    memset(m + v->memo_cap, 0, (size_t)(cap - v->memo_cap) * sizeof *m);
    v->memo = m;
    v->memo_cap = cap;
  }
  if (!v->memo[idx]) v->memo_count++;
  v->memo[idx] = v->stack[v->sp - 1];
  return PG_OK;
}

static int memo_get(vm *v, uint64_t idx) {
  if (idx >= v->memo_cap || !v->memo[idx])
    VM_FAIL(v, PG_E_MALFORMED, "memo slot %llu is empty", (unsigned long long)idx);
  return push(v, v->memo[idx]);
}

static int global(vm *v, const char *mod, size_t ml, const char *name, size_t nl) {
  int id = 0, sub = 0;
#define EQ(s, l, lit) ((l) == sizeof(lit) - 1 && memcmp((s), (lit), (l)) == 0)
  if (EQ(mod, ml, "collections") && EQ(name, nl, "OrderedDict")) id = G_ODICT;
  else if (EQ(mod, ml, "torch._utils") && EQ(name, nl, "_rebuild_tensor_v2")) id = G_REBUILD_V2;
  else if (EQ(mod, ml, "torch._utils") && EQ(name, nl, "_rebuild_parameter"))
    id = G_REBUILD_PARAM;
  else if (EQ(mod, ml, "torch"))
    for (size_t i = 0; i < sizeof STORAGES / sizeof *STORAGES; i++)
      if (nl == strlen(STORAGES[i].name) && memcmp(name, STORAGES[i].name, nl) == 0) {
        id = G_STORAGE;
        sub = STORAGES[i].dtype;
      }
#undef EQ
  if (!id)
    VM_FAIL(v, PG_E_UNSUPPORTED, "pickle global %.*s.%.*s refused (not on the allow-list)",
            (int)(ml > 80 ? 80 : ml), mod, (int)(nl > 80 ? 80 : nl), name);
  pg_tz_value *x;
  PG_TRY(new_node(v, K_GLOBAL, &x));
  x->i = id;
  x->sub = sub;
  return push(v, x);
}

/* "module\nname\n" of GLOBAL. */
static int read_line(vm *v, const char **s, size_t *l) {
  const uint8_t *start = v->p + v->pos;
  size_t max = v->n - v->pos < 256 ? v->n - v->pos : 256;
  const uint8_t *nl = memchr(start, '\n', max);
  if (!nl) VM_FAIL(v, PG_E_MALFORMED, "GLOBAL without a newline in 256 bytes");
  *s = (const char *)start;
  *l = (size_t)(nl - start);
  v->pos += *l + 1;
  return PG_OK;
}

static int persid(vm *v) {
  pg_tz_value *pid = NULL;
  PG_TRY(pop(v, &pid));
  if (pid->kind != PG_TZ_TUPLE || pid->n != 5 || !pg_tz_is_str(pid->items[0], "storage") ||
      pid->items[1]->kind != K_GLOBAL || pid->items[1]->i != G_STORAGE ||
      pid->items[2]->kind != PG_TZ_STR || pid->items[3]->kind != PG_TZ_STR ||
      pid->items[4]->kind != PG_TZ_INT || pid->items[4]->i < 0)
    VM_FAIL(v, PG_E_UNSUPPORTED,
            "a persistent id that is not ('storage', TYPE, KEY, LOCATION, NUMEL)");
  int dtype = pid->items[1]->sub;
  uint64_t numel = (uint64_t)pid->items[4]->i, es = DTYPES[dtype].size;
  const pg_tz_value *key = pid->items[2];
  pg_tz *z = v->z;
  if (key->len > 200 || memchr(key->s, '/', key->len))
    VM_FAIL(v, PG_E_MALFORMED, "storage key of %zu bytes or with '/'", key->len);
  /* FOLDER/ (under 292 bytes, pg_tz_open) + "data/" + KEY (at most 200) */
  char nm[512];
  if (z->prefix_len + 5 + key->len > sizeof nm)
    VM_FAIL(v, PG_E_LIMIT, "storage name of %zu bytes", z->prefix_len + 5 + key->len);
  memcpy(nm, z->prefix, z->prefix_len);
  memcpy(nm + z->prefix_len, "data/", 5);
  memcpy(nm + z->prefix_len + 5, key->s, key->len);
  const zentry *e = find_entry(z, nm, z->prefix_len + 5 + key->len);
  if (!e) VM_FAIL(v, PG_E_MALFORMED, "storage %s has no ZIP entry data/%s", key->s, key->s);
  if (numel > UINT64_MAX / es || numel * es != e->size)
    VM_FAIL(v, PG_E_SIZE_MISMATCH, "storage %s: %llu %s elements, its entry holds %llu bytes",
            key->s, (unsigned long long)numel, DTYPES[dtype].name,
            (unsigned long long)e->size);
  pg_tz_value *x;
  PG_TRY(new_node(v, K_STORAGE, &x));
  x->t.dtype = dtype;
  x->t.numel = numel;
  x->t.data = e->data;
  x->t.nbytes = e->size;
  x->t.file_offset = e->offset;
  x->s = key->s;
  return push(v, x);
}

static int int_tuple(vm *v, const pg_tz_value *t, const char *what, unsigned *nd, uint64_t *out) {
  if (t->kind != PG_TZ_TUPLE) VM_FAIL(v, PG_E_MALFORMED, "tensor %s is a %s", what,
                                      pg_tz_kind_name(t->kind));
  if (t->n > PG_TZ_MAX_DIMS)
    VM_FAIL(v, PG_E_LIMIT, "tensor with %zu dimensions (limit %u)", t->n, PG_TZ_MAX_DIMS);
  for (size_t i = 0; i < t->n; i++) {
    if (t->items[i]->kind != PG_TZ_INT || t->items[i]->i < 0 ||
        (uint64_t)t->items[i]->i > (1ull << 40))
      VM_FAIL(v, PG_E_MALFORMED, "tensor %s[%zu] is not an integer in [0, 2^40]", what, i);
    out[i] = (uint64_t)t->items[i]->i;
  }
  *nd = (unsigned)t->n;
  return PG_OK;
}

static int is_empty_dict_or_none(const pg_tz_value *x) {
  return x->kind == PG_TZ_NONE || (x->kind == PG_TZ_DICT && x->n == 0);
}

/* _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]). */
static int rebuild_tensor(vm *v, const pg_tz_value *a) {
  if (a->n != 6 && a->n != 7)
    VM_FAIL(v, PG_E_MALFORMED, "_rebuild_tensor_v2 with %zu arguments", a->n);
  const pg_tz_value *st = a->items[0];
  if (st->kind != K_STORAGE) VM_FAIL(v, PG_E_MALFORMED, "_rebuild_tensor_v2 without a storage");
  if (a->items[1]->kind != PG_TZ_INT || a->items[1]->i < 0)
    VM_FAIL(v, PG_E_MALFORMED, "tensor storage offset is not a non-negative integer");
  pg_tz_tensor t = {.dtype = st->t.dtype};
  uint64_t stride[PG_TZ_MAX_DIMS];
  unsigned ns;
  PG_TRY(int_tuple(v, a->items[2], "size", &t.ndim, t.dims));
  PG_TRY(int_tuple(v, a->items[3], "stride", &ns, stride));
  if (ns != t.ndim) VM_FAIL(v, PG_E_MALFORMED, "tensor size and stride differ in length");
  if (a->items[4]->kind != PG_TZ_BOOL || !is_empty_dict_or_none(a->items[5]) ||
      (a->n == 7 && !is_empty_dict_or_none(a->items[6])))
    VM_FAIL(v, PG_E_UNSUPPORTED, "a tensor with backward hooks or metadata");
  uint64_t numel = 1;
  for (unsigned i = 0; i < t.ndim; i++)
    if (__builtin_mul_overflow(numel, t.dims[i], &numel) || numel > (1ull << 40))
      VM_FAIL(v, PG_E_DIMS_OVERFLOW, "tensor with more than 2^40 elements");
  /* Row-major contiguity (a dimension of size 1 may have any stride, as torch allows). */
  uint64_t want = 1;
  for (unsigned i = t.ndim; i-- > 0;) {
    if (numel && t.dims[i] != 1 && stride[i] != want)
      VM_FAIL(v, PG_E_UNSUPPORTED, "a non-contiguous tensor (stride %llu at dimension %u, %llu "
              "expected)", (unsigned long long)stride[i], i, (unsigned long long)want);
    want *= t.dims[i];
  }
  uint64_t off = (uint64_t)a->items[1]->i;
  if (off > st->t.numel || numel > st->t.numel - off)
    VM_FAIL(v, PG_E_SIZE_MISMATCH,
            "tensor of %llu elements at offset %llu does not fit storage %s of %llu",
            (unsigned long long)numel, (unsigned long long)off, st->s,
            (unsigned long long)st->t.numel);
  unsigned es = DTYPES[t.dtype].size;
  t.numel = numel;
  t.data = st->t.data + off * es;
  t.nbytes = numel * es;
  t.file_offset = st->t.file_offset + off * es;
  pg_tz_value *x;
  PG_TRY(new_node(v, PG_TZ_TENSOR, &x));
  x->t = t;
  return push(v, x);
}

static int reduce(vm *v) {
  pg_tz_value *args = NULL, *fn = NULL;
  PG_TRY(pop(v, &args));
  PG_TRY(pop(v, &fn));
  if (fn->kind != K_GLOBAL || args->kind != PG_TZ_TUPLE)
    VM_FAIL(v, PG_E_UNSUPPORTED, "REDUCE of a %s", pg_tz_kind_name(fn->kind));
  switch (fn->i) {
  case G_ODICT: {
    if (args->n != 0) VM_FAIL(v, PG_E_UNSUPPORTED, "OrderedDict with arguments");
    pg_tz_value *x;
    PG_TRY(new_node(v, PG_TZ_DICT, &x));
    return push(v, x);
  }
  case G_REBUILD_V2: return rebuild_tensor(v, args);
  case G_REBUILD_PARAM: {
    if (args->n != 3 || args->items[0]->kind != PG_TZ_TENSOR ||
        args->items[1]->kind != PG_TZ_BOOL || !is_empty_dict_or_none(args->items[2]))
      VM_FAIL(v, PG_E_UNSUPPORTED, "_rebuild_parameter with other arguments than "
              "(tensor, bool, empty hooks)");
    pg_tz_value *x;
    PG_TRY(new_node(v, PG_TZ_TENSOR, &x));
    x->t = args->items[0]->t;
    return push(v, x);
  }
  default: VM_FAIL(v, PG_E_UNSUPPORTED, "REDUCE of a storage type");
  }
}

static int run(vm *v) {
  while (v->pos < v->n) {
    v->op_pos = v->pos;
    uint8_t op = v->p[v->pos++];
    pg_tz_value *x = NULL, *y = NULL;
    uint32_t base = 0;
    switch (op) {
    case 0x80: /* PROTO */
      PG_TRY(need(v, 1));
      if (v->p[v->pos] < 2 || v->p[v->pos] > 5)
        VM_FAIL(v, PG_E_UNSUPPORTED, "pickle protocol %u (2 to 5 are read)", v->p[v->pos]);
      v->pos++;
      break;
    case 0x95: /* FRAME: a length hint */
      PG_TRY(need(v, 8));
      v->pos += 8;
      break;
    case '(': /* MARK */
      if (v->nmarks >= PG_TZ_MAX_STACK) VM_FAIL(v, PG_E_LIMIT, "too many MARKs");
      v->marks[v->nmarks++] = v->sp;
      break;
    case '}': PG_TRY(new_node(v, PG_TZ_DICT, &x)); PG_TRY(push(v, x)); break;
    case ']': PG_TRY(new_node(v, PG_TZ_LIST, &x)); PG_TRY(push(v, x)); break;
    case ')': PG_TRY(make_seq(v, PG_TZ_TUPLE, v->sp)); break;
    case 0x85: case 0x86: case 0x87: { /* TUPLE1..3 */
      uint32_t k = (uint32_t)(op - 0x84);
      if (v->sp < floor_of(v) + k) VM_FAIL(v, PG_E_MALFORMED, "pickle stack underflow");
      PG_TRY(make_seq(v, PG_TZ_TUPLE, v->sp - k));
      break;
    }
    case 't': PG_TRY(pop_mark(v, &base)); PG_TRY(make_seq(v, PG_TZ_TUPLE, base)); break;
    case 'l': PG_TRY(pop_mark(v, &base)); PG_TRY(make_seq(v, PG_TZ_LIST, base)); break;
    case 'X': PG_TRY(str_op(v, PG_TZ_STR, 4)); break;      /* BINUNICODE */
    case 0x8c: PG_TRY(str_op(v, PG_TZ_STR, 1)); break;     /* SHORT_BINUNICODE */
    case 'U': case 'C': PG_TRY(str_op(v, PG_TZ_BYTES, 1)); break; /* SHORT_BIN{STRING,BYTES} */
    case 'T': case 'B': {                                     /* BINSTRING, BINBYTES */
      PG_TRY(need(v, 4));
      if (op == 'T' && (rd32(v->p + v->pos) & 0x80000000u))
        VM_FAIL(v, PG_E_MALFORMED, "negative string length");
      PG_TRY(str_op(v, PG_TZ_BYTES, 4));
      break;
    }
    case 'J':
      PG_TRY(need(v, 4));
      PG_TRY(make_int(v, (int32_t)rd32(v->p + v->pos)));
      v->pos += 4;
      break;
    case 'K': PG_TRY(need(v, 1)); PG_TRY(make_int(v, v->p[v->pos])); v->pos += 1; break;
    case 'M': PG_TRY(need(v, 2)); PG_TRY(make_int(v, rd16(v->p + v->pos))); v->pos += 2; break;
    case 0x8a: { /* LONG1: n bytes of two's complement, little-endian */
      PG_TRY(need(v, 1));
      unsigned nb = v->p[v->pos++];
      if (nb > 8) VM_FAIL(v, PG_E_UNSUPPORTED, "an integer of %u bytes (64 bits at most)", nb);
      PG_TRY(need(v, nb));
      uint64_t u = 0;
      for (unsigned i = 0; i < nb; i++) u |= (uint64_t)v->p[v->pos + i] << (8 * i);
      if (nb && nb < 8 && (v->p[v->pos + nb - 1] & 0x80)) u |= ~0ull << (8 * nb);
      v->pos += nb;
      PG_TRY(make_int(v, (int64_t)u));
      break;
    }
    case 'G': {
      PG_TRY(need(v, 8));
      uint64_t u = 0;
      for (int i = 0; i < 8; i++) u = u << 8 | v->p[v->pos + i];
      v->pos += 8;
      PG_TRY(new_node(v, PG_TZ_FLOAT, &x));
      memcpy(&x->f, &u, 8);
      PG_TRY(push(v, x));
      break;
    }
    case 'N': PG_TRY(new_node(v, PG_TZ_NONE, &x)); PG_TRY(push(v, x)); break;
    case 0x88: case 0x89:
      PG_TRY(new_node(v, PG_TZ_BOOL, &x));
      x->i = op == 0x88;
      PG_TRY(push(v, x));
      break;
    case 'q': PG_TRY(need(v, 1)); PG_TRY(memo_put(v, v->p[v->pos])); v->pos += 1; break;
    case 'r': PG_TRY(need(v, 4)); PG_TRY(memo_put(v, rd32(v->p + v->pos))); v->pos += 4; break;
    case 0x94: PG_TRY(memo_put(v, v->memo_count)); break;
    case 'h': PG_TRY(need(v, 1)); PG_TRY(memo_get(v, v->p[v->pos])); v->pos += 1; break;
    case 'j': PG_TRY(need(v, 4)); PG_TRY(memo_get(v, rd32(v->p + v->pos))); v->pos += 4; break;
    case 'a':
      if (v->sp < floor_of(v) + 2) VM_FAIL(v, PG_E_MALFORMED, "pickle stack underflow");
      PG_TRY(append_items(v, v->stack[v->sp - 2], v->sp - 1));
      break;
    case 'e':
      PG_TRY(pop_mark(v, &base));
      if (base == 0 || base <= floor_of(v)) VM_FAIL(v, PG_E_MALFORMED, "APPENDS without a list");
      PG_TRY(append_items(v, v->stack[base - 1], base));
      break;
    case 's':
      if (v->sp < floor_of(v) + 3) VM_FAIL(v, PG_E_MALFORMED, "pickle stack underflow");
      PG_TRY(set_items(v, v->stack[v->sp - 3], v->sp - 2));
      break;
    case 'u':
      PG_TRY(pop_mark(v, &base));
      if (base == 0 || base <= floor_of(v)) VM_FAIL(v, PG_E_MALFORMED, "SETITEMS without a dict");
      PG_TRY(set_items(v, v->stack[base - 1], base));
      break;
    case 'c': {
      const char *m = NULL, *nm = NULL;
      size_t ml = 0, nl = 0;
      PG_TRY(read_line(v, &m, &ml));
      PG_TRY(read_line(v, &nm, &nl));
      PG_TRY(global(v, m, ml, nm, nl));
      break;
    }
    case 0x93: /* STACK_GLOBAL */
      PG_TRY(pop(v, &y));
      PG_TRY(pop(v, &x));
      if (x->kind != PG_TZ_STR || y->kind != PG_TZ_STR)
        VM_FAIL(v, PG_E_MALFORMED, "STACK_GLOBAL of non-strings");
      PG_TRY(global(v, x->s, x->len, y->s, y->len));
      break;
    case 'R': PG_TRY(reduce(v)); break;
    case 'Q': PG_TRY(persid(v)); break;
    case 'b': /* BUILD: only an OrderedDict's attribute dict (state_dict's _metadata), dropped */
      PG_TRY(pop(v, &y));
      if (v->sp <= floor_of(v)) VM_FAIL(v, PG_E_MALFORMED, "pickle stack underflow");
      x = v->stack[v->sp - 1];
      if (x->kind != PG_TZ_DICT || (y->kind != PG_TZ_DICT && y->kind != PG_TZ_NONE))
        VM_FAIL(v, PG_E_UNSUPPORTED, "BUILD of a %s with a %s", pg_tz_kind_name(x->kind),
                pg_tz_kind_name(y->kind));
      break;
    case '.': /* STOP */
      if (v->nmarks || v->sp != 1)
        VM_FAIL(v, PG_E_MALFORMED, "STOP with %u values and %u marks on the stack", v->sp,
                v->nmarks);
      if (v->pos != v->n)
        VM_FAIL(v, PG_E_TRAILING, "%zu bytes after STOP", v->n - v->pos);
      x = v->stack[0];
      if (x->kind == K_GLOBAL || x->kind == K_STORAGE)
        VM_FAIL(v, PG_E_UNSUPPORTED, "the saved object is a %s", pg_tz_kind_name(x->kind));
      v->z->root = x;
      return PG_OK;
    default:
      if (op >= 0x20 && op < 0x7f)
        VM_FAIL(v, PG_E_UNSUPPORTED, "pickle opcode 0x%02x ('%c') refused (not in the subset "
                "torch.save uses)", op, op);
      VM_FAIL(v, PG_E_UNSUPPORTED, "pickle opcode 0x%02x refused (not in the subset torch.save "
              "uses)", op);
    }
  }
  v->op_pos = v->pos;
  VM_FAIL(v, PG_E_TRUNCATED, "data.pkl ends without STOP");
}

int pg_tz_open(pg_tz **out, const uint8_t *data, size_t len, const char *name, pg_err *err) {
  *out = NULL;
  pg_tz *z = calloc(1, sizeof *z);
  if (!z) return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "out of memory");
  z->buf = data;
  z->len = len;
  z->name = name;
  int rc = read_zip(z, err);
  if (!rc) {
    const zentry *pkl = NULL;
    char nm[300];
    if (z->prefix_len + 8 < sizeof nm) {
      memcpy(nm, z->prefix, z->prefix_len);
      memcpy(nm + z->prefix_len, "data.pkl", 8);
      pkl = find_entry(z, nm, z->prefix_len + 8);
    }
    if (!pkl)
      rc = pg_err_set(err, PG_E_LIMIT, name, z->pkl_off, "a folder name of %zu bytes (limit 290)",
                      z->prefix_len - 1);
    vm v = {.z = z, .err = err};
    if (!rc) {
      v.p = pkl->data;
      v.n = (size_t)pkl->size;
      v.stack = malloc(PG_TZ_MAX_STACK * sizeof *v.stack);
      v.marks = malloc(PG_TZ_MAX_STACK * sizeof *v.marks);
      if (!v.stack || !v.marks)
        rc = pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "out of memory");
    }
    if (!rc) rc = run(&v);
    free(v.stack);
    free(v.marks);
    free(v.memo);
  }
  if (rc) {
    pg_tz_free(z);
    return rc;
  }
  *out = z;
  return PG_OK;
}

void pg_tz_free(pg_tz *z) {
  if (!z) return;
  for (pg_tz_value *x = z->nodes, *nx; x; x = nx) {
    nx = x->next_alloc;
    if (x->kind == PG_TZ_STR || x->kind == PG_TZ_BYTES) free((void *)x->s);
    free(x->items);
    free(x);
  }
  free(z->ent);
  free(z);
}

const pg_tz_value *pg_tz_root(const pg_tz *z) { return z->root; }

int pg_tz_is_str(const pg_tz_value *v, const char *s) {
  return v && v->kind == PG_TZ_STR && v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

const pg_tz_value *pg_tz_get(const pg_tz_value *d, const char *key) {
  if (!d || d->kind != PG_TZ_DICT) return NULL;
  for (size_t i = d->n; i-- > 0;) /* the last assignment wins, as in Python */
    if (pg_tz_is_str(d->items[2 * i], key)) return d->items[2 * i + 1];
  return NULL;
}
