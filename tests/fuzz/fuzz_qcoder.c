/* fuzz_qcoder.c: libFuzzer target for codec 4, qc (format/pg_qcoder.h, spec/format.md §12).
 *
 * Input: u16 raw_len (little-endian), then a qc stream. The stream is decoded into a buffer of
 * exactly raw_len bytes: it must decode (and then those bytes must round-trip through the
 * encoder) or be refused with PG_E_DECOMPRESS, never anything else. Then the whole input itself
 * (up to 1 KiB), cut into two segments whose row lengths come from its first byte, is encoded
 * and decoded, limited to stream format 1 when the first byte's top bit is set (the stream must
 * then be format 1): any difference aborts. The seeds (tests/fuzz/seeds/qcoder/) are streams
 * pg_qc_encode wrote for small int-like and arbitrary inputs, with their raw_len in front;
 * weighted_* are format 2 streams (slices of a row-sorted, transposed embedding, and hand-built
 * ones). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_qcoder.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t ns,
                      unsigned max_format) {
  uint8_t *st = NULL;
  size_t sl = 0;
  pg_err e;
  if (pg_qc_encode_max(raw, n, segs, ns, max_format, &st, &sl, &e) != PG_OK) abort();
  if (st[0] > max_format) abort();
  uint8_t *back = malloc(n ? n : 1);
  if (!back) abort();
  if (pg_qc_decode(st, sl, back, n, "fuzz", 0, &e) != PG_OK) abort();
  if (n && memcmp(back, raw, n)) abort();
  /* one byte less, or a declared size one larger, is refused */
  if (sl && pg_qc_decode(st, sl - 1, back, n, "fuzz", 0, &e) != PG_E_DECOMPRESS) abort();
  free(back);
  free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size >= 2) {
    const size_t raw_len = (size_t)data[0] | (size_t)data[1] << 8;
    uint8_t *out = malloc(raw_len ? raw_len : 1);
    if (!out) abort();
    pg_err e;
    int rc = pg_qc_decode(data + 2, size - 2, out, raw_len, "fuzz", 0, &e);
    if (rc != PG_OK && rc != PG_E_DECOMPRESS && rc != PG_E_NOMEM) abort();
    if (rc == PG_OK && raw_len <= 1024) roundtrip(out, raw_len, NULL, 0, PG_QC_FORMAT_W);
    free(out);
  }
  if (size <= 1024) {
    const unsigned r = size ? data[0] : 0;
    pg_qc_seg segs[2] = {{size / 3, 1 + r % 32}, {size - size / 3, 1 + r / 8}};
    roundtrip(data, size, segs, 2, r & 0x80 ? PG_QC_FORMAT : PG_QC_FORMAT_W);
  }
  return 0;
}
