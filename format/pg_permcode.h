/* pg_permcode.h: codec 6, "perm": row permutations stored as range-coded Lehmer codes
 * (spec/format.md §13), about log2(n!) bits each instead of 16 bits per entry. */
#ifndef PG_PERMCODE_H
#define PG_PERMCODE_H

#include <stddef.h>
#include <stdint.h>

#include "pg_qcoder.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest permutation the codec holds: entries are u16. */
#define PG_PERM_MAX_N 65536u

/* Encode raw (raw_len bytes): each segment (segs, nsegs; NULL: the whole of raw) must hold a
 * permutation of 0..n-1 as n u16 little-endian entries; anything else is PG_E_CODEC (the codec
 * does not apply). *out is malloc'd. */
int pg_perm_encode(const uint8_t *raw, size_t raw_len, const pg_qc_seg *segs, size_t nsegs,
                   uint8_t **out, size_t *out_len, pg_err *err);
/* Decode exactly raw_len bytes into out; every fault of the stream is PG_E_DECOMPRESS. */
int pg_perm_decode(const uint8_t *in, size_t n, uint8_t *out, size_t raw_len, const char *file,
                   uint64_t off, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
