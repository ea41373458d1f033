/* pg_safetensors.h: a hardened reader and a deterministic writer for huggingface safetensors.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping
 * tensor names to {dtype, shape, data_offsets} (plus an optional "__metadata__" string map), and
 * the data buffer. The reader refuses anything spec/safetensors.md does not allow (bad JSON,
 * unknown dtypes, size disagreements, overlaps, holes, trailing bytes, limits) with one status
 * and a one-line message naming the file and byte offset; it never modifies its input. The
 * writer validates every tensor, writes sorted compact JSON padded to 8 bytes, and replaces the
 * destination atomically, so the same inputs always give the same bytes. */
#ifndef PG_SAFETENSORS_H
#define PG_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits enforced by the reader and the writer. */
#define PG_ST_MAX_HEADER 100000000u /* header JSON bytes */
#define PG_ST_MAX_RANK 8            /* dimensions per tensor */
#define PG_ST_MAX_NAME 1024u        /* bytes in a tensor name */
#define PG_ST_MAX_TENSORS 65536u    /* tensors per file (an artifact's limit too) */
#define PG_ST_MAX_META 65536u       /* "__metadata__" pairs per file */

/* Element types. Numbers are this library's own; the file stores the name. */
typedef enum pg_st_dtype {
  PG_ST_BOOL = 0,
  PG_ST_U8,
  PG_ST_I8,
  PG_ST_F8_E4M3, /* float8 e4m3fn: no infinities, S.1111.111 is NaN */
  PG_ST_F8_E5M2, /* float8 e5m2: the top byte of an fp16 */
  PG_ST_I16,
  PG_ST_U16,
  PG_ST_F16,
  PG_ST_BF16,
  PG_ST_I32,
  PG_ST_U32,
  PG_ST_F32,
  PG_ST_F64,
  PG_ST_I64,
  PG_ST_U64,
  PG_ST_DTYPE_COUNT
} pg_st_dtype;

/* "F16" etc.; NULL for a value outside the enum. */
const char *pg_st_dtype_name(pg_st_dtype dtype);
/* Bytes per element; 0 for a value outside the enum. */
size_t pg_st_dtype_size(pg_st_dtype dtype);
/* Look a dtype up by its file name (exact, case-sensitive); PG_E_DTYPE when unknown. */
int pg_st_dtype_parse(pg_st_dtype *out, const char *name, pg_err *err);

/* One tensor of an open file: a read-only view, valid until pg_st_free. */
typedef struct pg_st_tensor {
  const char *name;       /* NUL-terminated UTF-8, 1..PG_ST_MAX_NAME bytes */
  pg_st_dtype dtype;
  const char *dtype_name; /* "F16" etc. */
  uint32_t rank;          /* 0..PG_ST_MAX_RANK; 0 is a scalar */
  uint64_t shape[PG_ST_MAX_RANK]; /* shape[rank..] are 0 */
  uint64_t numel;         /* product of the shape (1 for a scalar) */
  uint64_t offset;        /* absolute byte offset of the data in the file */
  uint64_t nbytes;        /* numel * pg_st_dtype_size(dtype) */
  const uint8_t *data;    /* the bytes (unaligned); not NULL-checked when nbytes == 0 */
} pg_st_tensor;

/* One "__metadata__" pair. */
typedef struct pg_st_meta {
  const char *key;
  const char *value;
} pg_st_meta;

/* An open, fully validated safetensors file (opaque). */
typedef struct pg_st pg_st;

/* Validate len bytes at data (borrowed: they must outlive the handle, and are not copied).
 * name is used in error messages only (NULL gives "<memory>"). */
int pg_st_open_mem(pg_st **out, const uint8_t *data, size_t len, const char *name, pg_err *err);
/* Read path whole into private memory (not mapped) and validate it. */
int pg_st_open_file(pg_st **out, const char *path, pg_err *err);
/* Rules 5, 6 and 6a of spec/safetensors.md on a header's n bytes of text h (the bytes after
 * the 8-byte length): what a reader that parses a header itself checks first, so that the JSON
 * parser's memory stays bounded. Offsets in err count the length field (8 + position). */
int pg_st_header_text_check(const uint8_t *h, size_t n, const char *file, pg_err *err);
void pg_st_free(pg_st *st);

/* Tensors in data order (ascending offset; ties by name). */
size_t pg_st_count(const pg_st *st);
/* NULL when i >= pg_st_count(st). */
const pg_st_tensor *pg_st_at(const pg_st *st, size_t i);
/* By name; PG_E_NOT_FOUND (with a message) when absent. */
int pg_st_find(const pg_st_tensor **out, const pg_st *st, const char *name, pg_err *err);
/* Size of the data buffer and its offset in the file (8 + header length). */
uint64_t pg_st_data_size(const pg_st *st);
uint64_t pg_st_data_offset(const pg_st *st);

/* "__metadata__" pairs sorted by key (byte order); none when the file has none. */
size_t pg_st_meta_count(const pg_st *st);
const pg_st_meta *pg_st_meta_at(const pg_st *st, size_t i);
/* The value for key, or NULL. */
const char *pg_st_meta_get(const pg_st *st, const char *key);

/* Convert a tensor of st to fp32 into dst (room for dst_count floats, at least t->numel).
 * Sources: F32, F64 (rounded to nearest), F16, BF16, F8_E4M3, F8_E5M2 (exact). Other dtypes
 * give PG_E_DTYPE; too small a dst gives PG_E_ARG. */
int pg_st_to_f32(float *dst, size_t dst_count, const pg_st *st, const pg_st_tensor *t,
                 pg_err *err);

/* The writer (opaque). Tensor data is borrowed, not copied: it must stay valid and unchanged
 * until pg_st_writer_write / pg_st_writer_to_mem return or the writer is freed. */
typedef struct pg_st_writer pg_st_writer;

int pg_st_writer_create(pg_st_writer **out, pg_err *err);
/* Add a tensor; its data follows the previous tensor's. Refuses an empty, over-long, non-UTF-8
 * or reserved name (PG_E_ARG / PG_E_LIMIT), a duplicate (PG_E_DUPLICATE), an unknown dtype
 * (PG_E_DTYPE), rank above PG_ST_MAX_RANK (PG_E_LIMIT), a shape whose byte size overflows
 * (PG_E_DIMS_OVERFLOW) and nbytes other than numel * dtype size (PG_E_SIZE_MISMATCH).
 * shape may be NULL when rank is 0; data may be NULL when nbytes is 0. */
int pg_st_writer_add(pg_st_writer *w, const char *name, pg_st_dtype dtype, uint32_t rank,
                     const uint64_t *shape, const void *data, size_t nbytes, pg_err *err);
/* Produce a tensor's nbytes bytes into dst when the file is written (a status; err set). */
typedef int (*pg_st_fill_fn)(void *ctx, void *dst, size_t nbytes, pg_err *err);
/* pg_st_writer_add for data made on demand: fill(ctx, ...) is called once, while writing, into
 * a buffer of nbytes that is freed right after, so a writer of many tensors holds one at a time.
 * A fill that fails fails the write (nothing is left at the path). */
int pg_st_writer_add_fill(pg_st_writer *w, const char *name, pg_st_dtype dtype, uint32_t rank,
                          const uint64_t *shape, size_t nbytes, pg_st_fill_fn fill, void *ctx,
                          pg_err *err);
/* Add a "__metadata__" pair (UTF-8 strings); a key given twice is PG_E_DUPLICATE. */
int pg_st_writer_set_meta(pg_st_writer *w, const char *key, const char *value, pg_err *err);
/* Write the file atomically (temporary file + rename; a failure leaves nothing at path). */
int pg_st_writer_write(pg_st_writer *w, const char *path, pg_err *err);
/* The same bytes into a malloc'd buffer (free with free()). */
int pg_st_writer_to_mem(uint8_t **out, size_t *out_len, pg_st_writer *w, pg_err *err);
void pg_st_writer_free(pg_st_writer *w);

#ifdef __cplusplus
}
#endif
#endif
