/* test_codec.c: every codec and transform round-trips; corrupt or mis-sized streams are refused. */
#include <criterion/criterion.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>

#include "pg_codec.h"
#include "pg_io.h"

static uint8_t *sample(size_t n) {
  uint8_t *b = malloc(n);
  uint32_t x = 12345;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    b[i] = (uint8_t)((i % 7 == 0) ? (x >> 24) & 0x3f : (i & 0x1f));
  }
  return b;
}

static const char *SPECS[] = {"none",   "zstd-1",      "zstd-22",      "brotli-0/w10", "brotli-11",
                              "lzma-0", "lzma-9e",     "none+shuf2",   "zstd-3+shuf4", "brotli-5/w24+shuf2",
                              "lzma-6+shuf3"};

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
                       "zstd-3+shuf+4", "zstd-3+shuf 4"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(pg_codec_spec_parse(&s, bad[i], &e), PG_E_CODEC, "%s accepted", bad[i]);
  pg_codec_spec u = {.codec = 9};
  cr_assert_eq(pg_codec_spec_check(&u, "x", 3, &e), PG_E_CODEC);
  pg_codec_spec t = {.codec = 0, .transform = 7};
  cr_assert_eq(pg_codec_spec_check(&t, "x", 3, &e), PG_E_TRANSFORM);
}

Test(codec, garbage_stream_refused) {
  uint8_t junk[64];
  for (int i = 0; i < 64; i++) junk[i] = (uint8_t)(i * 37 + 11);
  uint8_t out[128];
  pg_err e;
  for (uint8_t c = 1; c <= 3; c++)
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
