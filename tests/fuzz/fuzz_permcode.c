/* fuzz_permcode.c: libFuzzer target for codec 6, perm (format/pg_permcode.h, spec/format.md §13).
 *
 * Input: u16 raw_len (little-endian), then a perm stream, decoded through pg_codec_decode into
 * exactly raw_len bytes: it must decode or be refused with PG_E_DECOMPRESS, never anything else.
 * What decodes must be permutations; re-encoded, one permutation (count byte 1) must take exactly
 * the stream's length (the bytes a decoder reads depend on the digits only) and decode to the
 * same permutation (the last bytes have slack, so they need not be the same bytes). Then
 * permutations shuffled by the input's bytes (up to 3 segments, at most 512 entries each) are
 * encoded and decoded: any difference aborts. Seeds (tests/fuzz/seeds/permcode/, written by
 * tests/fuzz/gen_seeds.py's own encoder: the bytes pg_perm_encode writes) have raw_len in front. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_codec.h"
#include "pg_permcode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const pg_codec_spec PERM = {PG_CODEC_PERM, 0, 0, 0, 0};

static void check_decoded(const uint8_t *stream, size_t sl, const uint8_t *out, size_t n) {
  /* one permutation (count byte 1): entries distinct and below n/2; the encoder's stream for
   * it is as long and decodes to it */
  if (sl < 1 || stream[0] != 1) return;
  const size_t m = n / 2;
  uint8_t *seen = calloc(m ? m : 1, 1);
  if (!seen) abort();
  for (size_t i = 0; i < m; i++) {
    const size_t v = (size_t)out[2 * i] | (size_t)out[2 * i + 1] << 8;
    if (v >= m || seen[v]) abort();
    seen[v] = 1;
  }
  free(seen);
  uint8_t *st = NULL;
  size_t len = 0;
  pg_err e;
  if (pg_codec_encode(&PERM, out, n, &st, &len, &e) != PG_OK) abort();
  if (len != sl) abort();
  uint8_t *again = malloc(n ? n : 1);
  if (!again) abort();
  if (pg_codec_decode(&PERM, st, len, again, n, "fuzz", 0, &e) != PG_OK) abort();
  if (memcmp(again, out, n)) abort();
  free(again);
  free(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pg_err e;
  if (size >= 2) {
    const size_t raw_len = (size_t)data[0] | (size_t)data[1] << 8;
    uint8_t *out = malloc(raw_len ? raw_len : 1);
    if (!out) abort();
    int rc = pg_codec_decode(&PERM, data + 2, size - 2, out, raw_len, "fuzz", 0, &e);
    if (rc != PG_OK && rc != PG_E_DECOMPRESS && rc != PG_E_NOMEM) abort();
    if (rc == PG_OK) check_decoded(data + 2, size - 2, out, raw_len);
    free(out);
  }
  /* permutations made from the input: segment k has 1 + (byte k) · 2 entries, shuffled by the
   * bytes that follow */
  if (size >= 1) {
    const size_t ns = 1 + data[0] % 3;
    pg_qc_seg segs[3];
    size_t total = 0;
    for (size_t k = 0; k < ns; k++) {
      segs[k] = (pg_qc_seg){2 * (1 + (size > k + 1 ? data[k + 1] : 0) * 2u), 1};
      total += segs[k].len;
    }
    uint8_t *raw = malloc(total), *back = malloc(total), *st = NULL;
    if (!raw || !back) abort();
    size_t at = 0, pos = 0;
    for (size_t k = 0; k < ns; k++) {
      const size_t m = segs[k].len / 2;
      uint16_t *p = malloc(m * sizeof *p);
      if (!p) abort();
      for (size_t i = 0; i < m; i++) p[i] = (uint16_t)i;
      for (size_t i = m; i > 1; i--) {
        const size_t j = (size ? data[pos++ % size] : 0) % i;
        uint16_t t = p[i - 1];
        p[i - 1] = p[j];
        p[j] = t;
      }
      for (size_t i = 0; i < m; i++) raw[at++] = (uint8_t)p[i], raw[at++] = (uint8_t)(p[i] >> 8);
      free(p);
    }
    size_t sl = 0;
    if (pg_codec_encode_segs(&PERM, raw, total, segs, ns, &st, &sl, &e) != PG_OK) abort();
    if (pg_codec_decode(&PERM, st, sl, back, total, "fuzz", 0, &e) != PG_OK) abort();
    if (memcmp(back, raw, total)) abort();
    if (pg_codec_decode(&PERM, st, sl - 1, back, total, "fuzz", 0, &e) != PG_E_DECOMPRESS)
      abort();
    free(st);
    free(raw);
    free(back);
  }
  return 0;
}
