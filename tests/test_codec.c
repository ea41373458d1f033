/* test_codec.c: every codec and transform round-trips; corrupt or mis-sized streams are refused. */
#include <criterion/criterion.h>
#include <lzma.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_codec.h"
#include "pg_container.h"
#include "pg_io.h"
#include "pg_qcoder.h"

static uint8_t *sample(size_t n) {
  uint8_t *b = malloc(n);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    b[i] = (uint8_t)((i % 7 == 0) ? (x >> 24) & 0x3f : (i & 0x1f));
  }
  return b;
}

static const char *SPECS[] = {
    "none",    "zstd-1",     "zstd-22",      "brotli-0/w10",       "brotli-11",    "lzma-0",
    "lzma-9e", "none+shuf2", "zstd-3+shuf4", "brotli-5/w24+shuf2", "lzma-6+shuf3", "qc"};

Test(codec, roundtrip_every_codec_and_transform) {
  size_t sizes[] = {0, 1, 2, 3, 1000, 65537};
  for (size_t si = 0; si < sizeof SPECS / sizeof *SPECS; si++) {
    pg_codec_spec s;
    pg_err e;
    cr_assert_eq(pg_codec_spec_parse(&s, SPECS[si], &e), PG_OK, "%s: %s", SPECS[si], e.msg);
    char name[40];
    pg_codec_spec_format(&s, name, sizeof name);
    pg_codec_spec s2;
    cr_assert_eq(pg_codec_spec_parse(&s2, name, &e), PG_OK);
    cr_assert(!memcmp(&s, &s2, sizeof s), "%s -> %s", SPECS[si], name);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      size_t n = sizes[k];
      uint8_t *raw = sample(n ? n : 1), *st, *back = malloc(n ? n : 1);
      size_t sl;
      cr_assert_eq(pg_codec_encode(&s, raw, n, &st, &sl, &e), PG_OK, "%s: %s", SPECS[si], e.msg);
      cr_assert_eq(pg_codec_decode(&s, st, sl, back, n, "f", 0, &e), PG_OK, "%s n=%zu: %s",
                   SPECS[si], n, e.msg);
      cr_assert(!n || !memcmp(raw, back, n), "%s n=%zu", SPECS[si], n);
      if (s.codec != PG_CODEC_NONE && n > 0) {
        /* declared raw size one less or one more must fail */
        uint8_t *big = malloc(n + 1);
        cr_assert_eq(pg_codec_decode(&s, st, sl, big, n + 1, "f", 0, &e), PG_E_DECOMPRESS,
                     "%s n=%zu accepted a larger size", SPECS[si], n);
        cr_assert_eq(pg_codec_decode(&s, st, sl, big, n - 1, "f", 0, &e), PG_E_DECOMPRESS,
                     "%s n=%zu accepted a smaller size", SPECS[si], n);
        /* truncated stream */
        cr_assert_neq(pg_codec_decode(&s, st, sl - 1, big, n, "f", 0, &e), PG_OK, "%s", SPECS[si]);
        free(big);
      }
      free(raw);
      free(st);
      free(back);
    }
  }
}

Test(codec, deterministic_output) {
  uint8_t *raw = sample(100000);
  for (size_t si = 0; si < sizeof SPECS / sizeof *SPECS; si++) {
    pg_codec_spec s;
    pg_err e;
    pg_codec_spec_parse(&s, SPECS[si], &e);
    uint8_t *a, *b;
    size_t la, lb;
    cr_assert_eq(pg_codec_encode(&s, raw, 100000, &a, &la, &e), PG_OK);
    cr_assert_eq(pg_codec_encode(&s, raw, 100000, &b, &lb, &e), PG_OK);
    cr_assert_eq(la, lb);
    cr_assert(!memcmp(a, b, la));
    free(a);
    free(b);
  }
  free(raw);
}

Test(codec, shuffle_matches_challenge_layout) {
  /* stride 2: all even-offset bytes then all odd-offset bytes (odd length too) */
  const uint8_t in[5] = {0, 1, 2, 3, 4};
  uint8_t out[5], back[5];
  pg_shuffle(in, 5, 2, out);
  const uint8_t want[5] = {0, 2, 4, 1, 3};
  cr_assert(!memcmp(out, want, 5));
  pg_unshuffle(out, 5, 2, back);
  cr_assert(!memcmp(in, back, 5));
  const uint8_t in7[7] = {0, 1, 2, 3, 4, 5, 6};
  uint8_t o7[7], b7[7];
  pg_shuffle(in7, 7, 3, o7);
  const uint8_t w7[7] = {0, 3, 6, 1, 4, 2, 5};
  cr_assert(!memcmp(o7, w7, 7));
  pg_unshuffle(o7, 7, 3, b7);
  cr_assert(!memcmp(in7, b7, 7));
}

Test(codec, bad_specs_refused) {
  pg_codec_spec s;
  pg_err e;
  const char *bad[] = {"zstd-0", "zstd-23", "brotli-12", "brotli-11/w9", "brotli-11/w25", "lzma-10",
                       "gzip", "none-3", "zstd-3+shuf1", "zstd-3+shuf256", "zstd-3x", "",
                       /* a sign or a blank is not a level (strtol took them: "zstd--5" was the
                        * default level 19) */
                       "zstd--5", "zstd- 5", "zstd-+5", "brotli-11/w-1", "lzma--3",
                       "zstd-3+shuf+4", "zstd-3+shuf 4", "qc-1", "qce", "qc/w22"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(pg_codec_spec_parse(&s, bad[i], &e), PG_E_CODEC, "%s accepted", bad[i]);
  pg_codec_spec u = {.codec = 9};
  cr_assert_eq(pg_codec_spec_check(&u, "x", 3, &e), PG_E_CODEC);
  pg_codec_spec t = {.codec = 0, .transform = 7};
  cr_assert_eq(pg_codec_spec_check(&t, "x", 3, &e), PG_E_TRANSFORM);
  cr_assert_eq(pg_codec_spec_parse(&s, "qc+shuf2", &e), PG_E_TRANSFORM, "qc+shuf2 accepted");
  pg_codec_spec q = {.codec = PG_CODEC_QC, .transform = PG_TRANSFORM_SHUFFLE, .stride = 2};
  cr_assert_eq(pg_codec_spec_check(&q, "x", 3, &e), PG_E_TRANSFORM);
  q = (pg_codec_spec){.codec = PG_CODEC_QC, .level = 1};
  cr_assert_eq(pg_codec_spec_check(&q, "x", 3, &e), PG_E_CODEC);
}

Test(codec, garbage_stream_refused) {
  uint8_t junk[64];
  for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
  uint8_t out[128];
  pg_err e;
  for (uint8_t c = 1; c <= 4; c++)
    cr_assert_eq(pg_codec_decompress(c, junk, 64, out, 128, "f", 0, &e), PG_E_DECOMPRESS,
                 "codec %u", c);
}

/* Every codec fault is named: liblzma's return codes were printed as bare numbers. */
Test(codec, codec_errors_are_named_not_numbers) {
  uint8_t junk[64], out[128];
  for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
  pg_err e;
  cr_assert_eq(pg_codec_decompress(PG_CODEC_LZMA, junk, 64, out, 128, "f", 0, &e),
               PG_E_DECOMPRESS);
  cr_assert(strstr(e.msg, "LZMA_FORMAT_ERROR") && strstr(e.msg, "not an .xz stream"), "%s",
            e.msg);
  /* a real stream with a flipped byte in its payload */
  uint8_t *raw = sample(4096), *z;
  size_t zl;
  cr_assert_eq(pg_codec_compress(PG_CODEC_LZMA, 6, 0, raw, 4096, &z, &zl, &e), PG_OK);
  z[zl / 2] ^= 0x40;
  uint8_t *back = malloc(4096);
  cr_assert_eq(pg_codec_decompress(PG_CODEC_LZMA, z, zl, back, 4096, "f", 0, &e),
               PG_E_DECOMPRESS);
  cr_assert(strstr(e.msg, "lzma: ") && strstr(e.msg, "(LZMA_"), "%s", e.msg);
  free(back);
  free(z);
  free(raw);
}

Test(codec, shuffle_every_stride_and_length) {
  /* against the definition: plane p holds bytes p, p+k, ... in order */
  uint8_t in[300], out[300], back[300], want[300];
  for (int i = 0; i < 300; i++) in[i] = (uint8_t)(i * 7 + 3);
  for (unsigned k = 2; k <= 17; k++)
    for (size_t n = 0; n <= 300; n += (n < 40 ? 1 : 37)) {
      size_t o = 0;
      for (unsigned p = 0; p < k; p++)
        for (size_t i = p; i < n; i += k) want[o++] = in[i];
      pg_shuffle(in, n, k, out);
      cr_assert(!n || !memcmp(out, want, n), "k=%u n=%zu", k, n);
      pg_unshuffle(out, n, k, back);
      cr_assert(!n || !memcmp(back, in, n), "k=%u n=%zu", k, n);
    }
}

/* The dictionary an .xz stream asks for is allocated by the decoder: a stream of a few bytes
 * declaring 512 MiB is refused (PG_E_LIMIT), not served. */
Test(codec, lzma_dictionary_is_bounded) {
  uint8_t raw[1000];
  for (size_t i = 0; i < sizeof raw; i++) raw[i] = (uint8_t)(i * 7);
  pg_codec_spec s = {PG_CODEC_LZMA, 1, 0, 0, 0};
  uint8_t *enc;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_codec_encode(&s, raw, sizeof raw, &enc, &n, &e), PG_OK, "%s", e.msg);
  /* stream header (12 bytes), then the block header: size byte, flags, the optional sizes
   * (varints), then the LZMA2 filter: id 0x21, one property byte (the dictionary size code),
   * padding, CRC32 of the header */
  uint8_t *h = enc + 12;
  const size_t hsize = ((size_t)h[0] + 1) * 4;
  size_t p = 2;
  for (int k = 0; k < ((h[1] & 0x40) != 0) + ((h[1] & 0x80) != 0); k++)
    while (h[p++] & 0x80) {
    }
  cr_assert(h[p] == 0x21 && h[p + 1] == 1, "unexpected filter flags");
  uint8_t out[1000];
  cr_assert_eq(pg_codec_decode(&s, enc, n, out, sizeof out, "t", 0, &e), PG_OK, "%s", e.msg);
  h[p + 2] = 34; /* 2 << (34 / 2 + 11) = 512 MiB */
  pg_st32(h + hsize - 4, lzma_crc32(h, hsize - 4, 0));
  int rc = pg_codec_decode(&s, enc, n, out, sizeof out, "t", 0, &e);
  cr_assert_eq(rc, PG_E_LIMIT, "got %s: %s", pg_status_name(rc), e.msg);
  cr_assert(strstr(e.msg, "limit") != NULL, "%s", e.msg);
  free(enc);
}

/* ------------------------------------------------------------------------------------------ */
/* Codec 4 (qc): spec/format.md §12 */

/* Trained-like values: Laplacian with a width per row times one per column, rounded and
 * clipped to int6's [-31, 31], row-major rows x cols. */
static int8_t *laplace_rows(size_t rows, size_t cols, uint32_t seed) {
  int8_t *v = malloc(rows * cols);
  double *cw = malloc(cols * sizeof *cw);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
#define U01() ((x = x * 6364136223846793005ull + 1442695040888963407ull), \
               ((double)(x >> 11) + 0.5) / 9007199254740992.0)
  for (size_t c = 0; c < cols; c++) cw[c] = exp(2.0 * (U01() - 0.5)); /* e^-1 .. e */
  for (size_t r = 0; r < rows; r++) {
    const double w = 0.5 * exp(2.5 * U01()); /* 0.5 .. 6 */
    for (size_t c = 0; c < cols; c++) {
      double u = U01() - 0.5, l = -w * cw[c] * (u < 0 ? -1 : 1) * log(1 - 2 * fabs(u));
      long q = lround(l);
      v[r * cols + c] = (int8_t)(q < -31 ? -31 : q > 31 ? 31 : q);
    }
  }
#undef U01
  free(cw);
  return v;
}

static void qc_roundtrip(const uint8_t *raw, size_t n, const pg_qc_seg *segs, size_t ns,
                         size_t *out_len) {
  uint8_t *st, *back = malloc(n ? n : 1);
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_qc_encode(raw, n, segs, ns, &st, &sl, &e), PG_OK, "n=%zu: %s", n, e.msg);
  cr_assert_eq(pg_qc_decode(st, sl, back, n, "f", 0, &e), PG_OK, "n=%zu: %s", n, e.msg);
  cr_assert(!n || !memcmp(raw, back, n), "n=%zu differs", n);
  uint8_t *st2;
  size_t sl2;
  cr_assert_eq(pg_qc_encode(raw, n, segs, ns, &st2, &sl2, &e), PG_OK);
  cr_assert(sl2 == sl && !memcmp(st, st2, sl), "n=%zu: encoding is not deterministic", n);
  if (out_len) *out_len = sl;
  free(st);
  free(st2);
  free(back);
}

Test(qc, roundtrip_any_bytes_and_shapes) {
  uint8_t *rnd = malloc(70001);
  uint32_t x = 7;
  for (size_t i = 0; i < 70001; i++) rnd[i] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
  qc_roundtrip(rnd, 70001, NULL, 0, NULL); /* every byte value, no hint */
  pg_qc_seg rs[] = {{1, 1}, {7, 3}, {333, 17}, {69660, 999}};
  qc_roundtrip(rnd, 70001, rs, 4, NULL);
  qc_roundtrip(rnd, 0, NULL, 0, NULL);
  qc_roundtrip(rnd, 1, NULL, 0, NULL);
  pg_qc_seg one = {1, 5}; /* a row longer than its segment is cut to it */
  qc_roundtrip(rnd, 1, &one, 1, NULL);
  uint8_t same[5000];
  memset(same, 0x80, sizeof same); /* all -128 */
  size_t l;
  qc_roundtrip(same, sizeof same, NULL, 0, &l);
  cr_assert_lt(l, 64, "5000 equal bytes took %zu", l);
  int8_t *v = laplace_rows(97, 131, 3);
  pg_qc_seg odd[] = {{131 * 40, 131}, {0, 9}, {131 * 57 - 5, 131}, {5, 2}};
  qc_roundtrip((const uint8_t *)v, 97 * 131, odd, 4, NULL);
  /* the transposed layout: stored rows of `rows` values */
  int8_t *t = malloc(97 * 131);
  for (size_t r = 0; r < 97; r++)
    for (size_t c = 0; c < 131; c++) t[c * 97 + r] = v[r * 131 + c];
  pg_qc_seg tr = {97 * 131, 97};
  qc_roundtrip((const uint8_t *)t, 97 * 131, &tr, 1, NULL);
  free(t);
  free(v);
  free(rnd);
}

/* Rows that drift like a random walk: the previous value of the row is the context that pays
 * (smode 3, with or without pred); the stream must say so and round-trip. */
Test(qc, previous_value_context) {
  const size_t R = 64, C = 1024;
  uint8_t *v = malloc(R * C);
  uint32_t x = 99;
  for (size_t r = 0; r < R; r++) {
    int w = 0;
    for (size_t c = 0; c < C; c++) {
      x = x * 1664525u + 1013904223u;
      w += (int)(x >> 30) - 1 - ((x >> 29 & 1) && w > 0) + ((x >> 28 & 1) && w < 0);
      w = w < -31 ? -31 : w > 31 ? 31 : w;
      v[r * C + c] = (uint8_t)(int8_t)w;
    }
  }
  pg_qc_seg seg = {R * C, C};
  uint8_t *st;
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_qc_encode(v, R * C, &seg, 1, &st, &sl, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(st[6] & 3, 3, "signed mode byte %u", st[6]);
  qc_roundtrip(v, R * C, &seg, 1, NULL);
  free(st);
  free(v);
}

/* The embedding case of format 2: a matrix whose last rows are one shared vector plus noise of
 * +-1 on a quarter of them (rare tokens), the others independent, stored transposed (a stored row
 * is one column down the matrix rows). Predicting the previous value pays only at the shared rows'
 * positions, which a weight per context can say and format 1 cannot: format 2 must be chosen and be
 * smaller. */
Test(qc, weighted_prediction_beats_format_1) {
  const size_t R = 384, C = 96, SHARED = 128;
  int8_t *v = laplace_rows(R, C, 11), *t = malloc(R * C);
  uint32_t x = 5;
  for (size_t r = R - SHARED; r < R; r++)
    for (size_t c = 0; c < C; c++) {
      x = x * 1664525u + 1013904223u;
      const int n = (x >> 29) == 0 ? -1 : (x >> 29) == 7 ? 1 : 0;
      v[r * C + c] = (int8_t)(v[(R - SHARED) * C + c] / 2 + n);
    }
  for (size_t r = 0; r < R; r++)
    for (size_t c = 0; c < C; c++) t[c * R + r] = v[r * C + c];
  pg_qc_seg seg = {R * C, R};
  uint8_t *s1, *s2, *back = malloc(R * C);
  size_t l1, l2;
  pg_err e;
  cr_assert_eq(pg_qc_encode_max((uint8_t *)t, R * C, &seg, 1, PG_QC_FORMAT, &s1, &l1, &e), PG_OK);
  cr_assert_eq(pg_qc_encode((uint8_t *)t, R * C, &seg, 1, &s2, &l2, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(s1[0], 1);
  cr_assert_eq(s2[0], 2, "format %u chosen", s2[0]);
  cr_assert_lt((double)l2, 0.99 * (double)l1, "format 2 %zu bytes, format 1 %zu", l2, l1);
  cr_log_info("format 2 %zu bytes, format 1 %zu", l2, l1);
  cr_assert_eq(pg_qc_decode(s1, l1, back, R * C, "f", 0, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(back, t, R * C));
  qc_roundtrip((uint8_t *)t, R * C, &seg, 1, NULL);
  free(s1);
  free(s2);
  cr_assert_eq(pg_qc_encode_max((uint8_t *)t, 1, NULL, 0, 3, &s1, &l1, &e), PG_E_ARG);
  free(back);
  free(t);
  free(v);
}

/* Above 2^18 values the encoder searches on a sample, then recomputes the bucket edges on all the
 * values: format 2's weights must be chosen (and the residuals formed) with those edges, the ones
 * the stream carries, or the stream decodes to other values (bench_pack on the bench model). */
Test(qc, weighted_prediction_on_a_sampled_section) {
  const size_t R = 2560, C = 128, SHARED = 700;
  int8_t *v = laplace_rows(R, C, 13), *t = malloc(R * C);
  uint32_t x = 9;
  for (size_t r = R - SHARED; r < R; r++)
    for (size_t c = 0; c < C; c++) {
      x = x * 1664525u + 1013904223u;
      const int n = (x >> 29) == 0 ? -1 : (x >> 29) == 7 ? 1 : 0;
      v[r * C + c] = (int8_t)(v[(R - SHARED) * C + c] / 2 + n);
    }
  for (size_t r = 0; r < R; r++)
    for (size_t c = 0; c < C; c++) t[c * R + r] = v[r * C + c];
  pg_qc_seg seg = {R * C, R};
  uint8_t *st, *back = malloc(R * C);
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_qc_encode((uint8_t *)t, R * C, &seg, 1, &st, &sl, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(st[0], 2, "format %u chosen", st[0]);
  cr_assert_eq(pg_qc_decode(st, sl, back, R * C, "f", 0, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(back, t, R * C), "the stream decodes to other values");
  free(st);
  free(back);
  free(t);
  free(v);
}

Test(qc, hint_must_add_up) {
  uint8_t raw[100] = {0}, *st = NULL;
  size_t sl;
  pg_err e;
  pg_qc_seg less = {99, 1}, more[] = {{60, 1}, {41, 1}};
  cr_assert_eq(pg_qc_encode(raw, 100, &less, 1, &st, &sl, &e), PG_E_ARG);
  cr_assert_eq(pg_qc_encode(raw, 100, more, 2, &st, &sl, &e), PG_E_ARG);
  cr_assert_null(st);
}

/* Values whose width changes from row to row: the row's running magnitude is the context that
 * brotli cannot form, so qc must come out smaller (by 3% at least) on identical bytes. */
Test(qc, beats_brotli_on_rows_of_varying_width) {
  const size_t R = 256, C = 512;
  int8_t *v = laplace_rows(R, C, 11);
  pg_qc_seg seg = {R * C, C};
  size_t qc;
  qc_roundtrip((const uint8_t *)v, R * C, &seg, 1, &qc);
  uint8_t *b;
  size_t bl;
  pg_err e;
  cr_assert_eq(pg_codec_compress(PG_CODEC_BROTLI, 11, 24, (const uint8_t *)v, R * C, &b, &bl, &e),
               PG_OK);
  cr_assert_lt((double)qc, 0.97 * (double)bl, "qc %zu bytes, brotli-11 %zu", qc, bl);
  cr_log_info("qc %zu bytes, brotli-11 %zu", qc, bl);
  free(b);
  free(v);
}

/* A stream built by hand (spec/format.md §12): one context whose table holds one symbol with all
 * of the probability, so every value is coded in zero bits and both states stay at 2^23. */
typedef struct hand {
  uint8_t b[256];
  size_t n;
} hand;

static void put(hand *h, const void *p, size_t k) {
  memcpy(h->b + h->n, p, k);
  h->n += k;
}

static hand hand_stream(uint8_t sym, size_t len) {
  hand h = {.n = 0};
  const uint8_t head[9] = {1, 1, 1, 1, 4, 3, 0, 0, 1}; /* init 256 */
  put(&h, head, 9);
  h.b[h.n++] = 1; /* one segment */
  h.b[h.n++] = (uint8_t)len; /* of len (< 128) bytes */
  h.b[h.n++] = 1;            /* rows of 1 */
  const uint8_t table[3] = {1, sym, 1};
  put(&h, table, 3);
  uint8_t st[8];
  pg_st32(st, 1u << 23);
  pg_st32(st + 4, 1u << 23);
  put(&h, st, 8);
  return h;
}

static int hand_decode(const hand *h, size_t raw_len, pg_err *e) {
  uint8_t out[256];
  return pg_qc_decode(h->b, h->n, out, raw_len, "f", 0, e);
}

/* Format 2 by hand: the previous value predicted with weight w, one context whose only residual
 * is +1. From v = 1 (the first value is predicted as 0), w = 16 climbs by one per value, w = 8
 * settles at round(v/2) + 1 = 2, w = 0 stays at 1: the weighted prediction's exact rounding. */
static hand hand_stream_w(uint8_t w) {
  hand h = {.n = 0};
  const uint8_t head[9] = {2, 1, 1, 1, 4, 3, 7, 0, 1}; /* previous value, pred; init 256 */
  put(&h, head, 9);
  const uint8_t seg[3] = {1, 10, 10}, table[3] = {1, 0x81, 1};
  put(&h, seg, 3);
  put(&h, table, 3);
  h.b[h.n++] = w;
  uint8_t st[8];
  pg_st32(st, 1u << 23);
  pg_st32(st + 4, 1u << 23);
  put(&h, st, 8);
  return h;
}

Test(qc, hand_built_weighted_stream_decodes) {
  const uint8_t w[3] = {16, 8, 0};
  const int8_t want[3][10] = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                              {1, 2, 2, 2, 2, 2, 2, 2, 2, 2},
                              {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}};
  for (int k = 0; k < 3; k++) {
    hand h = hand_stream_w(w[k]);
    int8_t out[10];
    pg_err e;
    cr_assert_eq(pg_qc_decode(h.b, h.n, (uint8_t *)out, 10, "f", 0, &e), PG_OK, "%s", e.msg);
    for (int i = 0; i < 10; i++)
      cr_assert_eq(out[i], want[k][i], "w %u: value %d is %d", w[k], i, out[i]);
  }
}

Test(qc, malformed_weighted_streams_refused) {
  pg_err e;
  hand ok = hand_stream_w(16);
  cr_assert_eq(hand_decode(&ok, 10, &e), PG_OK, "%s", e.msg);
  for (size_t k = 0; k < ok.n; k++) { /* every truncation, the weights' included */
    hand t = ok;
    t.n = k;
    cr_assert_eq(hand_decode(&t, 10, &e), PG_E_DECOMPRESS, "truncated at %zu accepted", k);
  }
  struct {
    size_t at;
    uint8_t v;
    const char *what;
  } bad[] = {
      {0, 3, "unknown format 3"},
      {6, 3, "format 2 without pred"},
      {6, 4, "format 2, pred without a signed average"},
      {6, 15, "format 2 with a stray bit"},
      {15, 17, "a weight above 16"},
      {15, 0xff, "a weight of 255"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    hand t = ok;
    t.b[bad[k].at] = bad[k].v;
    int rc = hand_decode(&t, 10, &e);
    cr_assert_eq(rc, PG_E_DECOMPRESS, "%s accepted (%s)", bad[k].what, pg_status_name(rc));
  }
  hand one = ok; /* format 1 reads no weights: the weight byte is then a stray state byte */
  one.b[0] = 1;
  cr_assert_eq(hand_decode(&one, 10, &e), PG_E_DECOMPRESS);
}

Test(qc, hand_built_stream_decodes) {
  hand h = hand_stream(0x80 ^ 5, 10); /* ten values 5 */
  uint8_t out[10];
  pg_err e;
  cr_assert_eq(pg_qc_decode(h.b, h.n, out, 10, "f", 0, &e), PG_OK, "%s", e.msg);
  for (int i = 0; i < 10; i++) cr_assert_eq(out[i], 5);
}

Test(qc, malformed_streams_refused) {
  pg_err e;
  hand ok = hand_stream(0x80, 10);
  cr_assert_eq(hand_decode(&ok, 10, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(hand_decode(&ok, 9, &e), PG_E_DECOMPRESS, "fewer raw bytes than segments");
  cr_assert_eq(hand_decode(&ok, 11, &e), PG_E_DECOMPRESS, "more raw bytes than segments");
  for (size_t k = 0; k < ok.n; k++) { /* every truncation */
    hand t = ok;
    t.n = k;
    cr_assert_eq(hand_decode(&t, 10, &e), PG_E_DECOMPRESS, "truncated at %zu accepted", k);
  }
  struct {
    size_t at;
    uint8_t v;
    const char *what;
  } bad[] = {
      {0, 2, "unknown format"},        {1, 0, "no row buckets"},
      {2, 9, "9 column buckets"},      {4, 0, "row shift 0"},
      {5, 9, "column shift 9"},        {6, 8, "a stray bit in the signed mode"},
      {6, 4, "pred without a signed average"},
      {6, 9, "pred with signed mode 1 and a stray bit"},
      {3, 2, "signed buckets without a signed mode"},
      {8, 0x81, "initial average above 32768"},
      {9, 0, "no segments"},
      {11, 0, "rows of 0"},
      {11, 11, "rows longer than the segment"},
      {12, 0, "an empty table for the one context used"},
      {12, 0xff, "table length not a varint"},
      {14, 0, "a table whose only code is 0"},
      {18, 0x7f, "first state below 2^23"},
      {22, 0x80, "second state at 2^31"},
  };
  for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
    hand t = ok;
    t.b[bad[k].at] = bad[k].v;
    int rc = hand_decode(&t, 10, &e);
    cr_assert_eq(rc, PG_E_DECOMPRESS, "%s accepted (%s)", bad[k].what, pg_status_name(rc));
  }
  hand tr = ok; /* a trailing byte */
  tr.b[tr.n++] = 0;
  cr_assert_eq(hand_decode(&tr, 10, &e), PG_E_DECOMPRESS);
  cr_assert(strstr(e.msg, "after the end"), "%s", e.msg);
  hand tb = ok; /* a table running past symbol 255 */
  tb.b[13] = 0xff;
  tb.b[12] = 2;
  cr_assert_eq(hand_decode(&tb, 10, &e), PG_E_DECOMPRESS);
}

/* Sizes that overflow or outgrow the raw size are refused before anything is allocated. */
Test(qc, counts_that_overflow_refused) {
  pg_err e;
  hand ok = hand_stream(0x80, 10);
  /* the segment count: 2^64 - 1 as a 10-byte varint; then one past 64 bits; then not minimal */
  const uint8_t huge[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  const uint8_t over[10] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
  const uint8_t *v[] = {huge, over};
  for (int k = 0; k < 2; k++) {
    hand h = {.n = 0};
    put(&h, ok.b, 9);
    put(&h, v[k], 10);
    put(&h, ok.b + 10, ok.n - 10);
    cr_assert_eq(hand_decode(&h, 10, &e), PG_E_DECOMPRESS, "segment count %d accepted", k);
  }
  hand nm = {.n = 0}; /* 1 written as 0x81 0x00 */
  put(&nm, ok.b, 9);
  const uint8_t two[2] = {0x81, 0x00};
  put(&nm, two, 2);
  put(&nm, ok.b + 10, ok.n - 10);
  cr_assert_eq(hand_decode(&nm, 10, &e), PG_E_DECOMPRESS, "non-minimal varint accepted");
  /* two segments whose lengths add up past 2^64 */
  hand two_seg = {.n = 0};
  put(&two_seg, ok.b, 9);
  const uint8_t segs[] = {2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1,
                          0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1};
  put(&two_seg, segs, sizeof segs);
  put(&two_seg, ok.b + 13, ok.n - 13);
  cr_assert_eq(hand_decode(&two_seg, 10, &e), PG_E_DECOMPRESS);
}

/* Every byte flip of a real stream either decodes to some bytes or is refused as a decompression
 * fault: never a crash, never another status. */
Test(qc, every_byte_flip_is_safe) {
  int8_t *v = laplace_rows(16, 64, 5);
  pg_qc_seg seg = {1024, 64};
  uint8_t *st, out[1024];
  size_t sl;
  pg_err e;
  cr_assert_eq(pg_qc_encode((const uint8_t *)v, 1024, &seg, 1, &st, &sl, &e), PG_OK);
  for (size_t k = 0; k < sl; k++)
    for (int bit = 0; bit < 8; bit++) {
      st[k] ^= (uint8_t)(1u << bit);
      int rc = pg_qc_decode(st, sl, out, 1024, "f", 0, &e);
      cr_assert(rc == PG_OK || rc == PG_E_DECOMPRESS, "byte %zu bit %d: %s", k, bit,
                pg_status_name(rc));
      st[k] ^= (uint8_t)(1u << bit);
    }
  free(st);
  free(v);
}

/* The writer hands qc each DATA section's layout: values of an int tensor in rows of cols, the
 * other parts in rows of 1 (section_segments); the reader gets the same values back. */
Test(qc, writer_passes_the_layout) {
  pg_writer *w;
  pg_err e;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  pg_codec_spec qc = {.codec = PG_CODEC_QC};
  int vs = pg_writer_data_section(w, &qc, &e), ss = pg_writer_data_section(w, &qc, &e);
  cr_assert(vs >= 0 && ss >= 0);
  int8_t *a = laplace_rows(48, 80, 1), *b = laplace_rows(24, 32, 2);
  uint16_t sc[48];
  for (int i = 0; i < 48; i++) sc[i] = 0x3c00;
  uint64_t da[2] = {48, 80}, db[3] = {24, 4, 8};
  pg_tensor_in ta = {.name = "a", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16,
                     .ndim = 2, .dims = da, .values = a, .row_scales = sc, .sec_values = vs,
                     .sec_scales = ss};
  pg_tensor_in tb = ta;
  tb.name = "b";
  tb.ndim = 3;
  tb.dims = db;
  tb.values = b;
  tb.order = PG_ORDER_COLS; /* stored transposed: rows of 24 values (one per logical row) */
  cr_assert_eq(pg_writer_tensor(w, &ta, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_tensor(w, &tb, &e), PG_OK, "%s", e.msg);
  uint8_t *file;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &file, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_artifact *art;
  cr_assert_eq(pg_artifact_open_mem(&art, file, len, "m", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(art, &e), PG_OK, "%s", e.msg);
  pg_qc_seg *g;
  size_t ng;
  cr_assert_eq(pg_artifact_section_segments(art, 2, &g, &ng, &e), PG_OK);
  cr_assert_eq(ng, 2);
  cr_assert(g[0].len == 48 * 80 && g[0].row == 80 && g[1].len == 24 * 32 && g[1].row == 24,
            "%llu/%llu %llu/%llu", (unsigned long long)g[0].len, (unsigned long long)g[0].row,
            (unsigned long long)g[1].len, (unsigned long long)g[1].row);
  free(g);
  cr_assert_eq(pg_artifact_section_segments(art, 3, &g, &ng, &e), PG_OK);
  cr_assert(ng == 2 && g[0].row == 1 && g[1].row == 1);
  free(g);
  /* the stored stream carries the same segments: the count, then (len, row) varints */
  const pg_section *s = pg_artifact_section(art, 2);
  cr_assert_eq(s->codec.codec, PG_CODEC_QC);
  int8_t back[48 * 80];
  cr_assert_eq(pg_artifact_tensor_values(art, 0, back, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(back, a, sizeof back));
  int8_t backb[24 * 32];
  cr_assert_eq(pg_artifact_tensor_values(art, 1, backb, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(backb, b, sizeof backb));
  pg_artifact_free(art);
  free(file);
  free(a);
  free(b);
}

/* A fuzz finding: a header whose signed mode is refused, in a stream of exactly 15 bytes; the
 * message named the mode byte after the read position had moved past it, one byte beyond the
 * stream (ASan, heap-buffer-overflow). The stream is copied into a buffer of its own size so a
 * sanitizer build sees any read past it. */
Test(qc, refused_signed_mode_reads_nothing_past_the_stream) {
  static const uint8_t bad[15] = {0xbc, 0x02, 0x01, 0x01, 0x01, 0x01, 0x04, 0x03,
                                  0x28, 0x20, 0x00, 0x00, 0x00, 0xc3, 0x40};
  uint8_t *in = malloc(sizeof bad);
  memcpy(in, bad, sizeof bad);
  in[0] = 1; /* the format byte the decoder knows, so that it reaches the mode check */
  uint8_t out[64];
  pg_err e;
  cr_assert_eq(pg_qc_decode(in, sizeof bad, out, sizeof out, "s", 0, &e), PG_E_DECOMPRESS);
  cr_assert(strstr(e.msg, "signed mode 4 with") != NULL, "%s", e.msg);
  free(in);
}
