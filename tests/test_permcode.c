/* test_permcode.c: codec 5, perm (spec/format.md §13): permutations round-trip at ⌈log2(n!)/8⌉
 * bytes of rank, beat the general codecs on a real row order, and every malformed stream is
 * refused with PG_E_DECOMPRESS. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_codec.h"
#include "pg_pack.h"
#include "pg_permcode.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* n u16 little-endian entries: a random permutation of 0..n-1 (Fisher-Yates) */
static void random_perm(uint8_t *b, uint32_t n) {
  uint32_t *p = malloc(n * sizeof *p);
  for (uint32_t i = 0; i < n; i++) p[i] = i;
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = next() % i, t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
  for (uint32_t i = 0; i < n; i++) b[2 * i] = (uint8_t)p[i], b[2 * i + 1] = (uint8_t)(p[i] >> 8);
  free(p);
}

static size_t rank_bytes(uint32_t n) { return (size_t)ceil(lgamma(n + 1.0) / log(2.0) / 8); }

static const pg_codec_spec PERM = {PG_CODEC_PERM, 0, 0, 0, 0};

static void roundtrip(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t ns,
                      size_t *stored) {
  uint8_t *st = NULL, *back = malloc(n ? n : 1);
  size_t sl = 0;
  pg_err e;
  cr_assert_eq(pg_codec_encode_segs(&PERM, raw, n, segs, ns, &st, &sl, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_codec_decode(&PERM, st, sl, back, n, "t", 0, &e), PG_OK, "%s", e.msg);
  cr_assert(n == 0 || !memcmp(back, raw, n));
  /* one byte short, or one byte more, is refused */
  if (sl) cr_assert_eq(pg_codec_decode(&PERM, st, sl - 1, back, n, "t", 0, &e), PG_E_DECOMPRESS);
  uint8_t *more = malloc(sl + 1);
  memcpy(more, st, sl);
  more[sl] = 0;
  cr_assert_eq(pg_codec_decode(&PERM, more, sl + 1, back, n, "t", 0, &e), PG_E_DECOMPRESS);
  free(more);
  *stored = sl;
  free(st);
  free(back);
}

Test(perm, roundtrip_at_the_floor) {
  const uint32_t ns[] = {1, 2, 3, 7, 255, 256, 1024, 5000};
  for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
    uint8_t *b = malloc(2 * ns[k]);
    random_perm(b, ns[k]);
    size_t sl;
    roundtrip(b, 2 * ns[k], NULL, 0, &sl);
    /* count, n, length: 1 + ≤3 + ≤2 bytes of varints, then the rank: at most ⌈log2(n!)/8⌉ */
    cr_assert_leq(sl, 6 + rank_bytes(ns[k]), "n %u: %zu bytes", ns[k], sl);
    free(b);
  }
  size_t sl;
  roundtrip(NULL, 0, NULL, 0, &sl); /* no bytes: a count of 0 */
  cr_assert_eq(sl, 1);
}

Test(perm, several_permutations_by_segments) {
  uint8_t b[2 * (300 + 1 + 64)];
  random_perm(b, 300);
  random_perm(b + 600, 1);
  random_perm(b + 602, 64);
  pg_qc_seg segs[3] = {{600, 1}, {2, 1}, {128, 1}};
  size_t sl;
  roundtrip(b, sizeof b, segs, 3, &sl);
  cr_assert_leq(sl, 1 + 3 * 5 + rank_bytes(300) + rank_bytes(64));
}

Test(perm, first_and_last_ranks) {
  uint8_t b[2 * 600];
  for (uint32_t i = 0; i < 600; i++) b[2 * i] = (uint8_t)i, b[2 * i + 1] = (uint8_t)(i >> 8);
  size_t sl;
  roundtrip(b, sizeof b, NULL, 0, &sl); /* the identity has rank 0: no rank bytes */
  cr_assert_eq(sl, 1 + 2 + 1);
  for (uint32_t i = 0; i < 600; i++)
    b[2 * i] = (uint8_t)(599 - i), b[2 * i + 1] = (uint8_t)((599 - i) >> 8);
  roundtrip(b, sizeof b, NULL, 0, &sl); /* the reversal: rank n! − 1, the most bytes */
  cr_assert_eq(sl, 1 + 2 + 2 + rank_bytes(600));
}

Test(perm, encoder_refuses_what_is_not_a_permutation) {
  uint8_t b[8] = {0, 0, 1, 0, 1, 0, 3, 0}; /* 1 twice */
  uint8_t *st = NULL;
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&PERM, b, 8, &st, &sl, &e), PG_E_CODEC);
  b[4] = 4; /* 4 is out of range for n = 4 */
  cr_assert_eq(pg_codec_encode(&PERM, b, 8, &st, &sl, &e), PG_E_CODEC);
  cr_assert_eq(pg_codec_encode(&PERM, b, 7, &st, &sl, &e), PG_E_CODEC); /* odd length */
  pg_qc_seg bad[1] = {{6, 1}};
  b[4] = 2;
  cr_assert_eq(pg_codec_encode_segs(&PERM, b, 8, bad, 1, &st, &sl, &e), PG_E_CODEC);
  cr_assert_null(st);
  cr_assert_eq(pg_codec_encode(&PERM, b, 8, &st, &sl, &e), PG_OK, "%s", e.msg);
  free(st);
  /* no level, no transform; the text form is "perm" */
  pg_codec_spec s = PERM;
  s.transform = PG_TRANSFORM_SHUFFLE;
  s.stride = 2;
  cr_assert_eq(pg_codec_spec_check(&s, "t", 0, &e), PG_E_TRANSFORM);
  s = PERM;
  s.level = 1;
  cr_assert_eq(pg_codec_spec_check(&s, "t", 0, &e), PG_E_CODEC);
  cr_assert_eq(pg_codec_spec_parse(&s, "perm", &e), PG_OK);
  cr_assert_eq(s.codec, PG_CODEC_PERM);
  char txt[32];
  pg_codec_spec_format(&s, txt, sizeof txt);
  cr_assert_str_eq(txt, "perm");
}

static int dec(const uint8_t *st, size_t sl, size_t raw_len) {
  uint8_t out[64];
  pg_err e;
  return pg_codec_decode(&PERM, st, sl, out, raw_len, "t", 0, &e);
}

Test(perm, malformed_streams_refused) {
  /* n = 3: ranks 0..5 are the six permutations */
  const uint8_t ok[] = {1, 3, 1, 5};
  cr_assert_eq(dec(ok, sizeof ok, 6), PG_OK);
  uint8_t out[6];
  pg_err e;
  cr_assert_eq(pg_codec_decode(&PERM, ok, sizeof ok, out, 6, "t", 0, &e), PG_OK);
  const uint8_t last[] = {2, 0, 1, 0, 0, 0}; /* rank 5 of 3!: the reversal (2, 1, 0) */
  cr_assert(!memcmp(out, last, 6));
  const uint8_t big[] = {1, 3, 1, 6};           /* rank 3! */
  const uint8_t nonmin[] = {1, 3, 2, 5, 0};     /* a zero top byte */
  const uint8_t lenbig[] = {1, 3, 7, 1, 1, 1, 1, 1, 1, 1}; /* 7 rank bytes for n = 3 (> 2n) */
  const uint8_t zero_n[] = {1, 0, 0};
  const uint8_t none[] = {0};                   /* no permutation for 6 bytes */
  const uint8_t two[] = {2, 3, 0, 3, 0};        /* two of 3 for 6 bytes */
  const uint8_t vnonmin[] = {0x81, 0x00, 3, 0}; /* a count varint that is not minimal */
  const uint8_t trunc[] = {1, 3, 2, 5};         /* the rank ends early */
  const uint8_t big_n[] = {1, 4, 0};           /* 4 entries for 6 bytes */
  const uint8_t huge_n[] = {1, 0x81, 0x80, 0x04, 0}; /* n = 65,537 */
  cr_assert_eq(dec(big, sizeof big, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(nonmin, sizeof nonmin, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(lenbig, sizeof lenbig, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(zero_n, sizeof zero_n, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(none, sizeof none, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(two, sizeof two, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(vnonmin, sizeof vnonmin, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(trunc, sizeof trunc, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(big_n, sizeof big_n, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(huge_n, sizeof huge_n, 64), PG_E_DECOMPRESS);
  cr_assert_eq(dec(ok, 0, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(ok, sizeof ok, 5), PG_E_DECOMPRESS); /* odd raw size */
  cr_assert_eq(dec(ok, sizeof ok, 8), PG_E_DECOMPRESS); /* segments short of raw_size */
}

Test(perm, every_byte_flip_is_safe) {
  uint8_t b[2 * 200], *st = NULL, back[2 * 200];
  random_perm(b, 200);
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&PERM, b, sizeof b, &st, &sl, &e), PG_OK);
  for (size_t i = 0; i < sl; i++)
    for (int bit = 0; bit < 8; bit++) {
      st[i] ^= (uint8_t)(1 << bit);
      int rc = pg_codec_decode(&PERM, st, sl, back, sizeof b, "t", 0, &e);
      cr_assert(rc == PG_OK || rc == PG_E_DECOMPRESS);
      if (rc == PG_OK) { /* what decodes is a permutation, and another one */
        uint8_t seen[200] = {0};
        for (int k = 0; k < 200; k++) {
          const unsigned v = back[2 * k] | back[2 * k + 1] << 8;
          cr_assert(v < 200 && !seen[v]);
          seen[v] = 1;
        }
        cr_assert(memcmp(back, b, sizeof b));
      }
      st[i] ^= (uint8_t)(1 << bit);
    }
  free(st);
}

/* A real row order: the records' nearest-neighbour chain over trained-like rows (a width per
 * row, Laplacian values), 1024 × 64 int6, as layout 2 stores it (u16 per row). The general
 * codecs the pack tries save ~20% of its 2 bytes per row; perm reaches log2(1024!) bits. */
Test(perm, beats_the_general_codecs_on_a_row_order) {
  const uint64_t rows = 1024, cols = 64;
  int8_t *q = malloc(rows * cols);
  for (uint64_t r = 0; r < rows; r++) {
    const double w = 0.5 + 5.0 * (next() % 1000) / 1000.0;
    for (uint64_t c = 0; c < cols; c++) {
      const double u = ((next() % 65535) + 0.5) / 65536.0 - 0.5;
      long v = lround(-w * (u < 0 ? -1 : 1) * log(1 - 2 * fabs(u)));
      q[r * cols + c] = (int8_t)(v < -31 ? -31 : v > 31 ? 31 : v);
    }
  }
  uint32_t *perm = malloc(rows * sizeof *perm);
  pg_err e;
  cr_assert_eq(pg_pack_row_chain(q, rows, cols, perm, &e), PG_OK);
  uint8_t *b = malloc(2 * rows);
  for (uint64_t j = 0; j < rows; j++) b[2 * j] = (uint8_t)perm[j], b[2 * j + 1] = perm[j] >> 8;
  size_t mine;
  roundtrip(b, 2 * rows, NULL, 0, &mine);
  const char *others[] = {"brotli-11/w24", "brotli-11/w24+shuf2", "lzma-9e", "lzma-9e+shuf2",
                          "zstd-22", "zstd-22+shuf2"};
  for (size_t k = 0; k < sizeof others / sizeof *others; k++) {
    pg_codec_spec s;
    uint8_t *st = NULL;
    size_t sl;
    cr_assert_eq(pg_codec_spec_parse(&s, others[k], &e), PG_OK);
    cr_assert_eq(pg_codec_encode(&s, b, 2 * rows, &st, &sl, &e), PG_OK);
    cr_assert_lt(mine + 100, sl, "perm %zu bytes, %s %zu", mine, others[k], sl);
    free(st);
  }
  free(b);
  free(perm);
  free(q);
}
