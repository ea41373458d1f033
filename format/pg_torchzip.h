/* pg_torchzip.h: a reader of torch.save files that never executes anything (spec/import.md §2).
 *
 * A torch.save file is a ZIP archive of stored (uncompressed) entries: FOLDER/data.pkl, a pickle
 * of the saved object whose tensors name their storages by key, and FOLDER/data/KEY, each
 * storage's raw little-endian bytes. This reader checks the ZIP structure, then interprets the
 * pickle with a small virtual machine that knows only the opcodes torch.save emits and builds
 * plain values from them; the only callables it accepts are an allow-list of constructors
 * (OrderedDict, torch's tensor and parameter rebuilders), which it applies itself. The result
 * is a tree of plain values and tensors that point into the caller's buffer. */
#ifndef PG_TORCHZIP_H
#define PG_TORCHZIP_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits (spec/import.md §2.4). */
#define PG_TZ_MAX_ENTRIES 65536u         /* ZIP entries */
#define PG_TZ_MAX_PICKLE (64ull << 20)   /* bytes of data.pkl */
#define PG_TZ_MAX_NODES (4u << 20)       /* values the pickle may create */
#define PG_TZ_MAX_STACK 65536u           /* pickle stack and mark depth */
#define PG_TZ_MAX_MEMO (1u << 20)        /* memo slots */
#define PG_TZ_MAX_DEPTH 64u              /* nesting of containers */
#define PG_TZ_MAX_DIMS 8u                /* tensor dimensions */
#define PG_TZ_MAX_STR (16u << 20)        /* bytes of one string */

enum pg_tz_kind {
  PG_TZ_NONE = 0,
  PG_TZ_BOOL,
  PG_TZ_INT,
  PG_TZ_FLOAT,
  PG_TZ_STR,   /* UTF-8 text (not NUL-terminated inside the file; s is NUL-terminated here) */
  PG_TZ_BYTES,
  PG_TZ_LIST,
  PG_TZ_TUPLE,
  PG_TZ_DICT,  /* dict or OrderedDict; keys in insertion order, a repeated key replaces */
  PG_TZ_TENSOR,
};

enum pg_tz_dtype {
  PG_TZ_F32 = 0, PG_TZ_F16, PG_TZ_BF16, PG_TZ_F64, PG_TZ_I8, PG_TZ_U8, PG_TZ_I16, PG_TZ_I32,
  PG_TZ_I64, PG_TZ_BOOLT, PG_TZ_DTYPE_COUNT
};
/* "float32", "float16", ... (torch's names); element size in bytes. */
const char *pg_tz_dtype_name(int dtype);
unsigned pg_tz_dtype_size(int dtype);

typedef struct pg_tz_tensor {
  int dtype;
  unsigned ndim;
  uint64_t dims[PG_TZ_MAX_DIMS];
  uint64_t numel;
  const uint8_t *data; /* numel * size bytes, row-major (contiguity is checked), in the buffer */
  uint64_t nbytes;
  uint64_t file_offset; /* where data begins in the archive */
} pg_tz_tensor;

typedef struct pg_tz_value pg_tz_value;
struct pg_tz_value {
  int kind;
  int64_t i;        /* BOOL, INT */
  double f;         /* FLOAT */
  const char *s;    /* STR, BYTES */
  size_t len;       /* STR, BYTES: bytes */
  size_t n;         /* LIST, TUPLE: items; DICT: pairs */
  pg_tz_value **items; /* LIST, TUPLE: n items; DICT: key0, value0, key1, value1, ... */
  pg_tz_tensor t;   /* TENSOR */
  /* reader's bookkeeping */
  int sub;                 /* internal kind detail (global id, storage dtype) */
  unsigned height;         /* containers: levels of containers below this one (0: none) */
  pg_tz_value *parent;     /* the container holding this one (containers hold one parent) */
  size_t cap;
  pg_tz_value *next_alloc;
};

typedef struct pg_tz pg_tz;

/* Read a torch.save archive held in data[0..len) (which must outlive the handle; it is never
 * modified). name labels errors. Any fault is one line, "NAME: offset N: ...", with N the offset
 * in data: PG_E_TRUNCATED, PG_E_MAGIC (not a ZIP), PG_E_UNSUPPORTED (zip64, compressed or
 * encrypted entries, a pickle opcode or global outside the subset), PG_E_MALFORMED,
 * PG_E_CHECKSUM (an entry's CRC-32), PG_E_LIMIT, PG_E_DTYPE, PG_E_SIZE_MISMATCH (a tensor that
 * does not fit its storage), PG_E_NOMEM. */
int pg_tz_open(pg_tz **out, const uint8_t *data, size_t len, const char *name, pg_err *err);
void pg_tz_free(pg_tz *z);
/* The saved object. */
const pg_tz_value *pg_tz_root(const pg_tz *z);

/* Helpers over the tree: the value of a string key in a dict, or NULL. */
const pg_tz_value *pg_tz_get(const pg_tz_value *dict, const char *key);
/* 1 when v is a string equal to s. */
int pg_tz_is_str(const pg_tz_value *v, const char *s);
const char *pg_tz_kind_name(int kind);

#ifdef __cplusplus
}
#endif
#endif
