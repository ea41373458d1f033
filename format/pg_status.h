/* pg_status.h: the status codes of every pgolf library function, and the one-line error record.
 *
 * Library functions return an int status (PG_OK == 0, an error > 0) and, when given a pg_err,
 * fill it with one line naming the file, the offset where known, and the fault. They never exit.
 * Numbers are stable: a code, once released, keeps its number and meaning (spec/errors.md). */
#ifndef PG_STATUS_H
#define PG_STATUS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, number, message). Ranges: 1-9 general, 10-39 container, 40-49 JSON/safetensors,
 * 50-59 record folders, 60-79 shards and tokenizer, 80-89 device. */
#define PG_STATUS_LIST(X)                                                            \
  X(PG_OK, 0, "ok")                                                                  \
  X(PG_E_IO, 1, "input/output error")                                                \
  X(PG_E_NOMEM, 2, "out of memory")                                                  \
  X(PG_E_ARG, 3, "invalid argument")                                                 \
  X(PG_E_NOT_FOUND, 4, "not found")                                                  \
  X(PG_E_UNSUPPORTED, 5, "not supported by this build")                              \
  X(PG_E_EXISTS, 6, "output would overwrite an input or existing data")              \
  X(PG_E_ILLEGAL, 7, "evaluation rule violated")                                      \
  X(PG_E_TRUNCATED, 10, "truncated file")                                            \
  X(PG_E_MAGIC, 11, "wrong magic")                                                   \
  X(PG_E_VERSION, 12, "unsupported version")                                         \
  X(PG_E_HEADER, 13, "malformed header")                                             \
  X(PG_E_TABLE_RANGE, 14, "section table out of range")                              \
  X(PG_E_OVERLAP, 15, "sections overlap")                                            \
  X(PG_E_HOLE, 16, "hole between sections")                                          \
  X(PG_E_TRAILING, 17, "trailing bytes after the last section")                      \
  X(PG_E_CHECKSUM, 18, "checksum mismatch")                                          \
  X(PG_E_CODEC, 19, "unknown codec or codec parameter")                              \
  X(PG_E_TRANSFORM, 20, "unknown transform or transform parameter")                  \
  X(PG_E_DECOMPRESS, 21, "decompression failed")                                     \
  X(PG_E_QTYPE, 22, "unknown qtype or layout")                                       \
  X(PG_E_DIMS_OVERFLOW, 23, "dimension product overflows")                           \
  X(PG_E_SIZE_MISMATCH, 24, "size disagrees with shape and qtype")                   \
  X(PG_E_DUPLICATE, 25, "duplicate name")                                            \
  X(PG_E_META_TYPE, 26, "metadata of the wrong type")                                \
  X(PG_E_LIMIT, 27, "limit exceeded")                                                \
  X(PG_E_SECTION_KIND, 28, "unknown or misplaced section kind")                      \
  X(PG_E_MALFORMED, 29, "malformed structure")                                       \
  X(PG_E_VALUE_RANGE, 30, "quantized value out of its declared range")               \
  X(PG_E_JSON, 40, "malformed JSON")                                                 \
  X(PG_E_DTYPE, 41, "unknown dtype")                                                 \
  X(PG_E_RECORD, 50, "not a challenge record folder")                                \
  X(PG_E_UTF8, 51, "invalid UTF-8")                                                  \
  X(PG_E_TOKEN_RANGE, 60, "token id outside the vocabulary")                         \
  X(PG_E_EMPTY_SET, 61, "no input files matched")                                    \
  X(PG_E_PROTOBUF, 62, "malformed protobuf")                                         \
  X(PG_E_PIECE_TYPE, 63, "piece type out of range")                                  \
  X(PG_E_NO_SPACE_PIECE, 64, "tokenizer has no U+2581 piece")                        \
  X(PG_E_VOCAB, 65, "vocabulary size disagrees")                                     \
  X(PG_E_ENCODER, 66, "SentencePiece encoder error")                                 \
  X(PG_E_CUDA, 80, "CUDA error")                                                     \
  X(PG_E_NO_DEVICE, 81, "no CUDA device")                                            \
  X(PG_E_NCCL, 82, "NCCL unavailable or a collective failed")

enum pg_status {
#define PG_STATUS_ENUM_(name, num, msg) name = num,
  PG_STATUS_LIST(PG_STATUS_ENUM_)
#undef PG_STATUS_ENUM_
};

/* "truncated file" etc.; "unknown status" for a number not in the list. */
const char *pg_status_message(int status);
/* "PG_E_TRUNCATED" etc. */
const char *pg_status_name(int status);

#define PG_NO_OFFSET UINT64_MAX
#define PG_ERR_MSG_MAX 512

/* One error: its status and one line of text (no newline). */
typedef struct pg_err {
  int status;
  char msg[PG_ERR_MSG_MAX];
} pg_err;

/* Fill err (may be NULL) with "FILE: offset N: detail" (file and offset optional) and return
 * status. The line is stored in its display form (pg_text.h): control and formatting characters
 * and invalid UTF-8 from file names and details are escaped, so it stays one terminal-safe line. */
int pg_err_set(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
int pg_err_setv(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt,
                va_list ap);
void pg_err_clear(pg_err *err);

/* Return early with an error when cond holds. */
#define PG_FAIL_IF(cond, err, status, file, off, ...)                               \
  do {                                                                             \
    if (cond) return pg_err_set((err), (status), (file), (off), __VA_ARGS__);      \
  } while (0)
/* Forward a non-zero status unchanged. */
#define PG_TRY(expr)                                                               \
  do {                                                                             \
    int pg_try_rc_ = (expr);                                                       \
    if (pg_try_rc_ != PG_OK) return pg_try_rc_;                                    \
  } while (0)

#ifdef __cplusplus
}
#endif
#endif
