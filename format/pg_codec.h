/* pg_codec.h: the per-section codecs (none, zstd, brotli, lzma) and the byte-shuffle transform.
 *
 * Compression is deterministic for a given library version and parameters (single-threaded).
 * Decompression must produce exactly the declared raw size, or it fails. */
#ifndef PG_CODEC_H
#define PG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "pg_qcoder.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pg_codec_id {
  PG_CODEC_NONE = 0,
  PG_CODEC_ZSTD = 1,
  PG_CODEC_BROTLI = 2,
  PG_CODEC_LZMA = 3,
  PG_CODEC_QC = 4,       /* our coder of quantized values (pg_qcoder.h) */
  PG_CODEC_PERM_RANK = 5, /* withdrawn: permutations as big-number ranks (quadratic to decode) */
  PG_CODEC_PERM = 6       /* row permutations, range-coded Lehmer digits (pg_permcode.h) */
};
enum pg_transform_id { PG_TRANSFORM_NONE = 0, PG_TRANSFORM_SHUFFLE = 1 };

/* How one section is stored. level: zstd 1..22, brotli quality 0..11, lzma preset 0..9 (the
 * "extreme" flag is bit 7 of level for lzma), qc 0; window: brotli lgwin 10..24, else 0.
 * qc and perm take no transform.
 * stride: byte-shuffle stride 2..255 with PG_TRANSFORM_SHUFFLE, else 0. */
typedef struct pg_codec_spec {
  uint8_t codec, level, window, transform, stride;
} pg_codec_spec;

/* Validate a spec (file/offset only name where it was found, for the message). */
int pg_codec_spec_check(const pg_codec_spec *s, const char *file, uint64_t off, pg_err *err);
/* "zstd-22", "brotli-11/w22", "lzma-9e", "qc", "none"; with "+shuf2" when shuffled. buf >= 32. */
void pg_codec_spec_format(const pg_codec_spec *s, char *buf, size_t cap);
/* Parse the same text form (also "zstd", "brotli", "lzma" with default levels). */
int pg_codec_spec_parse(pg_codec_spec *s, const char *text, pg_err *err);
const char *pg_codec_name(uint8_t codec);

/* Encode raw bytes: shuffle (if asked), then compress. *out is malloc'd. */
int pg_codec_encode(const pg_codec_spec *s, const uint8_t *raw, size_t raw_len, uint8_t **out,
                    size_t *out_len, pg_err *err);
/* The same with a hint of how the bytes are laid out (runs of rows, pg_qcoder.h), which qc
 * and perm use and the other codecs ignore; segs NULL is no hint (qc: one run of rows of 1
 * byte; perm: one permutation). perm refuses bytes that are not permutations (PG_E_CODEC). */
int pg_codec_encode_segs(const pg_codec_spec *s, const uint8_t *raw, size_t raw_len,
                         const pg_qc_seg *segs, size_t nsegs, uint8_t **out, size_t *out_len,
                         pg_err *err);
/* Decoder memory an lzma stream may ask for (its dictionary; the largest preset's is 64 MiB). */
#define PG_LZMA_MEMLIMIT (128ull << 20)

/* Decode stored bytes into exactly raw_len bytes at out (caller-allocated); a stream that holds
 * more stops there (PG_E_DECOMPRESS), so decoding never writes or allocates past raw_len. */
int pg_codec_decode(const pg_codec_spec *s, const uint8_t *stored, size_t stored_len, uint8_t *out,
                    size_t raw_len, const char *file, uint64_t off, pg_err *err);

/* Raw compression primitives (no transform), used by the benchmark for the codec's own speed. */
int pg_codec_compress(uint8_t codec, uint8_t level, uint8_t window, const uint8_t *in, size_t n,
                      uint8_t **out, size_t *out_len, pg_err *err);
int pg_codec_decompress(uint8_t codec, const uint8_t *in, size_t n, uint8_t *out, size_t raw_len,
                        const char *file, uint64_t off, pg_err *err);

/* Byte shuffle with stride k: plane p holds bytes p, p+k, p+2k, ...; planes are concatenated.
 * Plane p has n/k + (p < n%k) bytes. unshuffle inverts it. out must not alias in. */
void pg_shuffle(const uint8_t *in, size_t n, unsigned k, uint8_t *out);
void pg_unshuffle(const uint8_t *in, size_t n, unsigned k, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
