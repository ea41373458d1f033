/* test_permcode.c: codec 6, perm (spec/format.md §13): permutations round-trip within a few
 * bytes of log2(n!) bits, beat the general codecs on a real row order, every malformed stream is
 * refused with PG_E_DECOMPRESS, and the withdrawn codec 5 with PG_E_CODEC. */
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

static double floor_bytes(uint32_t n) { return lgamma(n + 1.0) / log(2.0) / 8; }

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

/* The stream: count and n as varints, then the range coder's bytes: log2(n!) bits, a
 * rounding loss under 0.006 bits per digit (7·10^-4 at n ≤ 8,192), and 4 bytes of end. */
Test(perm, roundtrip_at_the_floor) {
  const uint32_t ns[] = {1, 2, 3, 7, 255, 256, 1024, 5000, 65536};
  for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
    uint8_t *b = malloc(2 * ns[k]);
    random_perm(b, ns[k]);
    size_t sl;
    roundtrip(b, 2 * ns[k], NULL, 0, &sl);
    const size_t varints = 1 + (ns[k] < 128 ? 1 : ns[k] < 16384 ? 2 : 3);
    const double fl = floor_bytes(ns[k]);
    cr_assert_leq(sl, varints + ceil(fl + 0.012 * ns[k] / 8) + 4, "n %u: %zu bytes", ns[k], sl);
    cr_assert_geq(sl, varints + floor(fl), "n %u: %zu bytes", ns[k], sl);
    free(b);
  }
  size_t sl;
  roundtrip(NULL, 0, NULL, 0, &sl); /* no bytes: a count of 0 and no digits */
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
  /* one coder for the whole section: its 4 bytes of end are paid once */
  cr_assert_leq(sl, 1 + 2 + 1 + 1 + ceil(floor_bytes(300) + floor_bytes(64)) + 4);
}

/* Every order costs the same: the identity (all digits 0) and the reversal (all digits at
 * their top) take the floor like a random order does. */
Test(perm, first_and_last_orders) {
  uint8_t b[2 * 600];
  for (uint32_t i = 0; i < 600; i++) b[2 * i] = (uint8_t)i, b[2 * i + 1] = (uint8_t)(i >> 8);
  size_t id, rev;
  roundtrip(b, sizeof b, NULL, 0, &id);
  for (uint32_t i = 0; i < 600; i++)
    b[2 * i] = (uint8_t)(599 - i), b[2 * i + 1] = (uint8_t)((599 - i) >> 8);
  roundtrip(b, sizeof b, NULL, 0, &rev);
  cr_assert_leq(id, 3 + ceil(floor_bytes(600)) + 4);
  cr_assert_leq(rev, 3 + ceil(floor_bytes(600)) + 4);
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
  /* n = 3: digits of radix 3 and 2; the encoder's stream for the reversal (2, 1, 0) */
  const uint8_t rev[6] = {2, 0, 1, 0, 0, 0};
  uint8_t *ok = NULL, out[6];
  size_t okn;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&PERM, rev, 6, &ok, &okn, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(okn, 6);
  cr_assert_eq(ok[0], 1);
  cr_assert_eq(ok[1], 3);
  cr_assert_eq(pg_codec_decode(&PERM, ok, okn, out, 6, "t", 0, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(out, rev, 6));
  const uint8_t top[] = {1, 3, 0xff, 0xff, 0xff, 0xff};  /* a first word not below the range */
  const uint8_t zero_n[] = {1, 0, 0, 0, 0, 0};
  const uint8_t none[] = {0};                            /* no permutation for 6 bytes */
  const uint8_t two[] = {2, 3, 3, 0, 0, 0, 0};           /* two of 3 for 6 bytes */
  const uint8_t vnonmin[] = {0x81, 0x00, 3, 0, 0, 0, 0}; /* a count varint that is not minimal */
  const uint8_t nnonmin[] = {1, 0x83, 0x00, 0, 0, 0, 0}; /* an n varint that is not minimal */
  const uint8_t trunc[] = {1, 3, 0, 0, 0};               /* 3 of the 4 bytes the digits need */
  const uint8_t big_n[] = {1, 4, 0, 0, 0, 0};            /* 4 entries for 6 bytes */
  const uint8_t huge_n[] = {1, 0x81, 0x80, 0x04, 0, 0, 0, 0}; /* n = 65,537 */
  const uint8_t nolen[] = {2, 3};                        /* the second n is missing */
  cr_assert_eq(dec(top, sizeof top, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(zero_n, sizeof zero_n, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(none, sizeof none, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(two, sizeof two, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(vnonmin, sizeof vnonmin, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(nnonmin, sizeof nnonmin, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(trunc, sizeof trunc, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(big_n, sizeof big_n, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(huge_n, sizeof huge_n, 64), PG_E_DECOMPRESS);
  cr_assert_eq(dec(nolen, sizeof nolen, 12), PG_E_DECOMPRESS);
  cr_assert_eq(dec(ok, 0, 6), PG_E_DECOMPRESS);
  cr_assert_eq(dec(ok, okn, 5), PG_E_DECOMPRESS); /* odd raw size */
  cr_assert_eq(dec(ok, okn, 8), PG_E_DECOMPRESS); /* permutations short of raw_size */
  cr_assert_eq(dec(ok, okn, 4), PG_E_DECOMPRESS); /* and longer than it */
  const uint8_t empty[] = {0};
  cr_assert_eq(dec(empty, 1, 0), PG_OK);
  cr_assert_eq(dec(ok, 2, 0), PG_E_DECOMPRESS); /* a count of 1 for no bytes */
  free(ok);
}

/* Codec 5 stored each permutation as one big-number rank; dividing it digit by digit took time
 * quadratic in n (seconds for one 65,536-entry order), so a small artifact could stall a reader. It
 * is withdrawn: refused before any byte of it is decoded. */
Test(perm, withdrawn_rank_codec_refused) {
  pg_codec_spec s = {PG_CODEC_PERM_RANK, 0, 0, 0, 0};
  pg_err e;
  cr_assert_eq(pg_codec_spec_check(&s, "t", 0, &e), PG_E_CODEC);
  cr_assert(strstr(e.msg, "withdrawn"), "%s", e.msg);
  cr_assert_eq(PG_CODEC_PERM, 6);
  cr_assert_neq(pg_codec_spec_parse(&s, "perm-rank", &e), PG_OK);
}

Test(perm, every_byte_flip_is_safe) {
  uint8_t b[2 * 200], *st = NULL, back[2 * 200];
  random_perm(b, 200);
  size_t sl, changed = 0;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&PERM, b, sizeof b, &st, &sl, &e), PG_OK);
  for (size_t i = 0; i < sl; i++)
    for (int bit = 0; bit < 8; bit++) {
      st[i] ^= (uint8_t)(1 << bit);
      int rc = pg_codec_decode(&PERM, st, sl, back, sizeof b, "t", 0, &e);
      cr_assert(rc == PG_OK || rc == PG_E_DECOMPRESS);
      if (rc == PG_OK) { /* what decodes is a permutation (the last bytes have slack) */
        uint8_t seen[200] = {0};
        for (int k = 0; k < 200; k++) {
          const unsigned v = back[2 * k] | back[2 * k + 1] << 8;
          cr_assert(v < 200 && !seen[v]);
          seen[v] = 1;
        }
        changed += memcmp(back, b, sizeof b) != 0;
      }
      st[i] ^= (uint8_t)(1 << bit);
    }
  cr_assert_gt(changed, sl * 8 / 2); /* most flips reach the digits */
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

/* Layout 2's row sort is kept where it pays, its permutations priced as perm stores them. Rows
 * of uniform values in -3..3, 22% of them copies of an earlier row: the sort saves 241 bytes of
 * brotli-compressed values, the order costs 217 bytes as perm and 278 as brotli, so pricing the
 * order by brotli (as pgpack did) dropped a sort that makes the file smaller. */
static size_t brotli_size(const uint8_t *b, size_t n) {
  const pg_codec_spec s = {PG_CODEC_BROTLI, 11, 24, 0, 0};
  uint8_t *o = NULL;
  size_t l = 0;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&s, b, n, &o, &l, &e), PG_OK, "%s", e.msg);
  free(o);
  return l;
}

Test(perm, row_sort_prices_the_order_as_perm_stores_it) {
  enum { ROWS = 256, COLS = 32 };
  static int8_t q[ROWS * COLS];
  rng = 0x1234567ull + 56 * 7 + 3;
  for (uint32_t r = 0; r < ROWS; r++) {
    const int dup = r > 0 && next() % 256 < 56;
    const uint32_t src = dup ? next() % r : 0;
    for (uint32_t c = 0; c < COLS; c++)
      q[r * COLS + c] = (int8_t)(dup ? q[src * COLS + c] : (int)(next() % 7) - 3);
  }
  const pg_pack_mat m = {q, ROWS, COLS, 2};
  uint32_t *perms[1] = {NULL};
  pg_err e;
  cr_assert_eq(pg_pack_group_orders(&m, 1, PG_ROW_SORT_AUTO, perms, &e), PG_OK, "%s", e.msg);
  cr_assert_not_null(perms[0], "the sort was dropped");
  /* the case is the one described: between the two prices of the order */
  static uint8_t plain[ROWS * COLS], sorted[ROWS * COLS], order[2 * ROWS];
  for (uint32_t j = 0; j < ROWS; j++) {
    for (uint32_t c = 0; c < COLS; c++) {
      plain[c * ROWS + j] = (uint8_t)q[j * COLS + c];
      sorted[c * ROWS + j] = (uint8_t)q[perms[0][j] * COLS + c];
    }
    order[2 * j] = (uint8_t)perms[0][j];
    order[2 * j + 1] = (uint8_t)(perms[0][j] >> 8);
  }
  uint8_t *st = NULL;
  size_t pm = 0;
  cr_assert_eq(pg_codec_encode(&PERM, order, sizeof order, &st, &pm, &e), PG_OK, "%s", e.msg);
  free(st);
  const size_t a = brotli_size(plain, sizeof plain), b = brotli_size(sorted, sizeof sorted);
  const size_t pb = brotli_size(order, sizeof order);
  cr_assert_lt(b + pm, a, "sorted %zu + perm %zu against plain %zu", b, pm, a);
  cr_assert_geq(b + pb, a, "sorted %zu + brotli'd order %zu against plain %zu", b, pb, a);
  free(perms[0]);
}
