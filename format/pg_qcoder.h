/* pg_qcoder.h: codec 4 ("qc"), an entropy coder of our own for quantized integer values stored
 * one per byte (spec/format.md §12): static rANS with one frequency table per context, the
 * context being the running magnitude of the stored row so far and of the same position in the
 * previous stored rows. It round-trips any byte string; int values simply code well.
 *
 * The raw bytes are cut into segments, each a run of stored rows of one length (a tensor's values
 * part: row length = the stored row length of its layout). The stream carries its segments, so a
 * decoder needs nothing but the stream and the raw size. Encoding is deterministic and searches
 * the context parameters (slow); decoding is one pass (fast). Stream format 2 adds a prediction
 * weight per context (residuals against a fraction of the previous value or running mean), for
 * layouts where some stored positions repeat their neighbour and others do not. */
#ifndef PG_QCODER_H
#define PG_QCODER_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A run of `len` raw bytes stored as rows of `row` bytes (the last row may be short). */
typedef struct pg_qc_seg {
  uint64_t len, row;
} pg_qc_seg;

/* Stream limits (spec/format.md §12). */
#define PG_QC_FORMAT 1   /* the stream format of §12 */
#define PG_QC_FORMAT_W 2 /* format 1 with pred and a prediction weight per context */
#define PG_QC_MAX_BUCKETS 8
#define PG_QC_MAX_CONTEXTS 64
#define PG_QC_PROB_BITS 12

/* Encode n bytes cut into segments (their lengths must add up to n; zero-length segments are
 * dropped, a row longer than its segment is cut to it). segs NULL: one segment of row length 1.
 * *out is malloc'd. A hint that does not add up to n is PG_E_ARG. */
int pg_qc_encode(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t nsegs, uint8_t **out,
                 size_t *out_len, pg_err *err);

/* pg_qc_encode choosing among the stream formats up to max_format only (PG_QC_FORMAT: streams
 * that readers of format 1 alone decode); another max_format is PG_E_ARG. */
int pg_qc_encode_max(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t nsegs,
                     unsigned max_format, uint8_t **out, size_t *out_len, pg_err *err);

/* Decode a stream into exactly raw_len bytes at out. Any malformed stream (truncated, bad
 * header or table, segments that do not add up to raw_len, states that do not end where they
 * began, trailing bytes) is PG_E_DECOMPRESS; running out of memory is PG_E_NOMEM. */
int pg_qc_decode(const uint8_t *in, size_t n, uint8_t *out, size_t raw_len, const char *file,
                 uint64_t off, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
