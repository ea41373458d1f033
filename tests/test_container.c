#define _GNU_SOURCE
/* test_container.c: the artifact container v1 (spec/format.md): round trips of every qtype,
 * packing, codec and transform; metadata, code and tokenizer sections; determinism; atomic
 * writes; and one test per malformed-input class, each asserting its specific status. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pgbomb.h"
#include "pgtest.h"

/* ---------------------------------------------------------------------------------------- */
/* helpers */

static uint32_t rng_state = 1;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

static int8_t *rand_ints(uint64_t n, int lo, int hi) {
  int8_t *v = malloc(n ? n : 1);
  for (uint64_t i = 0; i < n; i++) v[i] = (int8_t)(lo + (int)(rnd() % (uint32_t)(hi - lo + 1)));
  return v;
}

static uint16_t *rand_scales(uint64_t n) {
  uint16_t *s = malloc((n ? n : 1) * 2);
  for (uint64_t i = 0; i < n; i++) s[i] = pg_f32_to_f16(0.001f + (float)(rnd() % 1000) * 1e-5f);
  return s;
}

static const pg_codec_spec NONE = {0, 0, 0, 0, 0};

/* A writer of container version cver. The tests that edit bytes of a file in place use v1, whose
 * fields lie at fixed offsets; the v2 tests below edit v2 files. */
static void test_writer(pg_writer **w, int cver) {
  cr_assert_eq(pg_writer_create(w), PG_OK);
  cr_assert_eq(pg_writer_set_container(*w, cver), PG_OK);
}

static pg_codec_spec spec_of(const char *s) {
  pg_codec_spec c;
  pg_err e;
  cr_assert_eq(pg_codec_spec_parse(&c, s, &e), PG_OK, "%s", s);
  return c;
}

/* A small artifact: one int6 matrix (row scales), one f32 vector, one int8 scalar-scaled tensor,
 * all in one DATA section with codec none; META and TENSORS uncompressed; no code/tokenizer, so
 * the DATA section is the last one in the file. */
static uint8_t *small_artifact(size_t *len) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  cr_assert_eq(pg_writer_meta_i64(w, "tokenizer.vocab_size", 1024, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "arch.name", "tiny", 4, &e), PG_OK);
  int d = pg_writer_data_section(w, &NONE, &e);
  cr_assert_geq(d, 0);
  uint64_t dims[2] = {4, 8};
  int8_t q[32];
  for (int i = 0; i < 32; i++) q[i] = (int8_t)((i % 63) - 31);
  uint16_t sc[4];
  for (int i = 0; i < 4; i++) sc[i] = pg_f32_to_f16(0.01f * (float)(i + 1));
  pg_tensor_in a = {.name = "blocks.0.attn.c_q.weight", .qtype = PG_QTYPE_INT6,
                    .scale_kind = PG_SCALE_ROW_F16, .qmin = -31, .qmax = 31, .ndim = 2,
                    .dims = dims, .values = q, .row_scales = sc, .sec_values = d, .sec_scales = d};
  cr_assert_eq(pg_writer_tensor(w, &a, &e), PG_OK, "%s", e.msg);
  float f[4] = {1.0f, -2.0f, 0.5f, 3.25f};
  uint64_t d1 = 4;
  pg_tensor_in b = {.name = "blocks.0.attn_scale", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &d1,
                    .values = f, .sec_values = d};
  cr_assert_eq(pg_writer_tensor(w, &b, &e), PG_OK, "%s", e.msg);
  int8_t q8[4] = {-127, 0, 5, 127};
  pg_tensor_in c = {.name = "other", .qtype = PG_QTYPE_INT8, .scale_kind = PG_SCALE_SCALAR_F32,
                    .scalar_scale = 0.5f, .ndim = 1, .dims = &d1, .values = q8, .sec_values = d,
                    .sec_scales = d};
  cr_assert_eq(pg_writer_tensor(w, &c, &e), PG_OK, "%s", e.msg);
  uint8_t *buf;
  cr_assert_eq(pg_writer_to_mem(w, &buf, len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  return buf;
}

static uint8_t *entry(uint8_t *buf, uint32_t i) { return buf + PG_HEADER_SIZE + PG_ENTRY_SIZE * i; }
static uint32_t nsections(const uint8_t *buf) { return pg_ld32(buf + 16); }

/* Recompute the checksums of a section stored with codec none (stored == raw). */
static void fix_section(uint8_t *buf, uint32_t i) {
  uint8_t *e = entry(buf, i);
  uint64_t off = pg_ld64(e + 8), n = pg_ld64(e + 16);
  uint64_t h = XXH64(buf + off, n, 0);
  pg_st64(e + 32, h);
  if (e[2] == 0 && e[5] == 0) pg_st64(e + 40, h);
}

/* Recompute the table and header checksums. */
static void reseal(uint8_t *buf) {
  uint32_t n = nsections(buf);
  pg_st64(buf + 32, XXH64(buf + PG_HEADER_SIZE, (size_t)PG_ENTRY_SIZE * n, 0));
  pg_st64(buf + 56, XXH64(buf, 56, 0));
}

static int section_of_kind(const uint8_t *buf, int kind) {
  for (uint32_t i = 0; i < nsections(buf); i++)
    if (pg_ld16(buf + PG_HEADER_SIZE + PG_ENTRY_SIZE * i) == kind) return (int)i;
  return -1;
}

/* Pointer to the directory entry of a tensor (TENSORS stored with codec none). */
static uint8_t *dir_entry(uint8_t *buf, const char *name) {
  int s = section_of_kind(buf, PG_SEC_TENSORS);
  uint8_t *p = buf + pg_ld64(entry(buf, (uint32_t)s) + 8);
  uint32_t n = pg_ld32(p);
  p += 4;
  for (uint32_t i = 0; i < n; i++) {
    uint16_t nl = pg_ld16(p);
    uint8_t *ent = p;
    int match = strlen(name) == nl && !memcmp(p + 2, name, nl);
    uint8_t ndim = p[2 + nl + 5];
    uint8_t isint = p[2 + nl] <= 4, rank = p[2 + nl + 6];
    int nparts = 1 + (isint ? 1 : 0) + (rank ? 4 : 0);
    if (match) return ent;
    p += 2 + nl + 8 + 8 * ndim + 20 * nparts;
  }
  cr_assert_fail("tensor %s not found", name);
  return NULL;
}
/* Offsets inside a directory entry. */
static uint8_t *dir_hdr(uint8_t *ent) { return ent + 2 + pg_ld16(ent); }
static uint8_t *dir_dims(uint8_t *ent) { return dir_hdr(ent) + 8; }
static uint8_t *dir_part(uint8_t *ent, int k) {
  return dir_dims(ent) + 8 * dir_hdr(ent)[5] + 20 * k;
}

static void fix_dir(uint8_t *buf) {
  fix_section(buf, (uint32_t)section_of_kind(buf, PG_SEC_TENSORS));
  reseal(buf);
}

static int open_status(const uint8_t *buf, size_t len, pg_err *e) {
  pg_artifact *a;
  int rc = pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, e);
  if (rc == PG_OK) {
    rc = pg_artifact_check(a, e);
    pg_artifact_free(a);
  }
  return rc;
}

#define EXPECT_STATUS(buf, len, want)                                                      \
  do {                                                                                     \
    pg_err e_;                                                                             \
    int rc_ = open_status((buf), (len), &e_);                                              \
    cr_assert_eq(rc_, (want), "got %s (%s), want %s", pg_status_name(rc_), e_.msg,         \
                 pg_status_name(want));                                                    \
    cr_assert(strstr(e_.msg, "t.pgz") == e_.msg, "message does not name the file: %s",     \
              e_.msg);                                                                     \
    cr_assert(strchr(e_.msg, '\n') == NULL);                                               \
  } while (0)

/* ---------------------------------------------------------------------------------------- */
/* round trips */

Test(container, small_artifact_opens_and_dequantizes) {
  size_t len;
  uint8_t *buf = small_artifact(&len);
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_file_size(a), len);
  cr_assert_eq(pg_artifact_tensor_count(a), 3);
  /* the sizes add up exactly */
  uint64_t sum = PG_HEADER_SIZE + (uint64_t)PG_ENTRY_SIZE * pg_artifact_section_count(a);
  for (uint32_t i = 0; i < pg_artifact_section_count(a); i++)
    sum += pg_artifact_section(a, i)->stored_size;
  cr_assert_eq(sum, len);
  const pg_meta_entry *m = pg_artifact_meta_find(a, "tokenizer.vocab_size");
  cr_assert_not_null(m);
  cr_assert_eq(m->i64, 1024);
  m = pg_artifact_meta_find(a, "pgolf.writer");
  cr_assert_not_null(m);
  cr_assert(m->count > 6 && !memcmp(m->str, "pgolf ", 6));
  int64_t ti = pg_artifact_tensor_find(a, "blocks.0.attn.c_q.weight");
  cr_assert_geq(ti, 0);
  float out[32];
  cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)ti, out, &e), PG_OK, "%s", e.msg);
  for (int i = 0; i < 32; i++)
    cr_assert_eq(out[i],
                 (float)((i % 63) - 31) * pg_f16_to_f32(pg_f32_to_f16(0.01f * (float)(i / 8 + 1))));
  ti = pg_artifact_tensor_find(a, "blocks.0.attn_scale");
  cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)ti, out, &e), PG_OK);
  cr_assert_eq(out[3], 3.25f);
  ti = pg_artifact_tensor_find(a, "other");
  cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)ti, out, &e), PG_OK);
  cr_assert_eq(out[0], -63.5f);
  cr_assert_eq(out[3], 63.5f);
  cr_assert_eq(pg_artifact_tensor_find(a, "missing"), -1);
  pg_artifact_free(a);
  free(buf);
}

static const char *CODECS[] = {"none", "zstd-3", "brotli-5/w16", "lzma-1", "none+shuf2",
                               "zstd-3+shuf2", "brotli-5+shuf3", "lzma-1+shuf2"};

Test(container, roundtrip_every_qtype_packing_codec_transform) {
  for (size_t ci = 0; ci < sizeof CODECS / sizeof *CODECS; ci++) {
    pg_codec_spec cs = spec_of(CODECS[ci]);
    for (int qt = PG_QTYPE_INT5; qt <= PG_QTYPE_INT8; qt++) {
      for (int packing = 0; packing <= 1; packing++) {
        unsigned bits = pg_qtype_bits(qt);
        pg_writer *w;
        pg_err e;
        test_writer(&w, ci % 2 ? PG_CONTAINER_V2 : PG_CONTAINER_V1);
        pg_writer_set_meta_codec(w, &cs, &cs);
        int dv = pg_writer_data_section(w, &cs, &e), ds = pg_writer_data_section(w, &cs, &e);
        uint64_t dims[2] = {13, 64}; /* 13*64*bits not a multiple of 64 bits for odd widths */
        const uint64_t n = 13 * 64;
        int8_t *q = rand_ints(n, pg_int_min(bits), pg_int_max(bits));
        uint16_t *sc = rand_scales(13);
        int8_t *la = rand_ints(13 * 2, -2, 1), *lb = rand_ints(2 * 64, -8, 7);
        uint16_t *lbs = rand_scales(2);
        pg_tensor_in t = {.name = "w", .qtype = qt, .packing = packing,
                          .scale_kind = PG_SCALE_ROW_F16, .ndim = 2, .dims = dims, .values = q,
                          .row_scales = sc, .lqer_rank = 2, .lqer_a = la,
                          .lqer_a_scale = pg_f32_to_f16(0.0625f), .lqer_b = lb,
                          .lqer_b_scales = lbs, .sec_values = dv, .sec_scales = ds,
                          .sec_lqer = ds};
        cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
        /* odd-length vector without LQER, scalar scale */
        uint64_t d3 = 7;
        int8_t *q3 = rand_ints(7, pg_int_min(bits), pg_int_max(bits));
        pg_tensor_in t3 = {.name = "v", .qtype = qt, .packing = packing,
                           .scale_kind = PG_SCALE_SCALAR_F32, .scalar_scale = 0.25f, .ndim = 1,
                           .dims = &d3, .values = q3, .sec_values = dv, .sec_scales = dv};
        cr_assert_eq(pg_writer_tensor(w, &t3, &e), PG_OK, "%s", e.msg);
        uint8_t *buf;
        size_t len;
        cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK, "%s", e.msg);
        pg_writer_free(w);
        pg_artifact *a;
        cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK,
                     "%s %s packing %d: %s", CODECS[ci], pg_qtype_name(qt), packing, e.msg);
        cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
        int8_t *back = malloc(n);
        cr_assert_eq(pg_artifact_tensor_values(a, 0, back, &e), PG_OK, "%s", e.msg);
        cr_assert(!memcmp(back, q, n), "%s %s packing %d: values differ", CODECS[ci],
                  pg_qtype_name(qt), packing);
        const pg_tensor_info *ti = pg_artifact_tensor(a, 0);
        cr_assert_eq(ti->parts[PG_PART_VALUES].size, packing ? (n * bits + 7) / 8 : n);
        cr_assert_eq(ti->qmin, pg_int_min(bits));
        float *got = malloc(n * 4), *want = malloc(n * 4);
        cr_assert_eq(pg_artifact_tensor_dequant(a, 0, got, &e), PG_OK, "%s", e.msg);
        pg_dequant_rows(q, sc, 13, 64, want);
        pg_lqer_apply(want, 13, 64, 2, la, pg_f32_to_f16(0.0625f), lb, lbs);
        cr_assert(!memcmp(got, want, n * 4), "dequant differs from the reference");
        int8_t back3[7];
        cr_assert_eq(pg_artifact_tensor_values(a, 1, back3, &e), PG_OK);
        cr_assert(!memcmp(back3, q3, 7));
        float got3[7];
        cr_assert_eq(pg_artifact_tensor_dequant(a, 1, got3, &e), PG_OK);
        for (int k = 0; k < 7; k++) cr_assert_eq(got3[k], (float)q3[k] * 0.25f);
        pg_artifact_free(a);
        free(buf);
        free(q);
        free(sc);
        free(la);
        free(lb);
        free(lbs);
        free(q3);
        free(back);
        free(got);
        free(want);
      }
    }
  }
}

Test(container, roundtrip_float_passthrough) {
  for (size_t ci = 0; ci < sizeof CODECS / sizeof *CODECS; ci++) {
    pg_codec_spec cs = spec_of(CODECS[ci]);
    pg_writer *w;
    pg_err e;
    test_writer(&w, PG_CONTAINER_V1);
    int d = pg_writer_data_section(w, &cs, &e);
    uint64_t dims[3] = {2, 3, 5};
    float f32[30];
    uint16_t f16[30], bf16[30];
    for (int i = 0; i < 30; i++) {
      f32[i] = (float)i * 0.37f - 4.0f;
      f16[i] = pg_f32_to_f16(f32[i]);
      bf16[i] = pg_f32_to_bf16(f32[i]);
    }
    pg_tensor_in a = {.name = "a", .qtype = PG_QTYPE_F32, .ndim = 3, .dims = dims, .values = f32,
                      .sec_values = d};
    pg_tensor_in b = {.name = "b", .qtype = PG_QTYPE_F16, .ndim = 3, .dims = dims, .values = f16,
                      .sec_values = d};
    pg_tensor_in c = {.name = "c", .qtype = PG_QTYPE_BF16, .ndim = 3, .dims = dims, .values = bf16,
                      .sec_values = d};
    float one = 2.5f;
    pg_tensor_in s0 = {
        .name = "scalar", .qtype = PG_QTYPE_F32, .ndim = 0, .values = &one, .sec_values = d};
    uint64_t zd[2] = {0, 4};
    pg_tensor_in z = {
        .name = "empty", .qtype = PG_QTYPE_F16, .ndim = 2, .dims = zd, .sec_values = d};
    cr_assert_eq(pg_writer_tensor(w, &a, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_writer_tensor(w, &b, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_writer_tensor(w, &c, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_writer_tensor(w, &s0, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_writer_tensor(w, &z, &e), PG_OK, "%s", e.msg);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK);
    pg_writer_free(w);
    pg_artifact *art;
    cr_assert_eq(pg_artifact_open_mem(&art, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_check(art, &e), PG_OK, "%s", e.msg);
    float out[30];
    cr_assert_eq(pg_artifact_tensor_dequant(art, 0, out, &e), PG_OK);
    cr_assert(!memcmp(out, f32, sizeof out));
    cr_assert_eq(pg_artifact_tensor_dequant(art, 1, out, &e), PG_OK);
    for (int i = 0; i < 30; i++) cr_assert_eq(out[i], pg_f16_to_f32(f16[i]));
    cr_assert_eq(pg_artifact_tensor_dequant(art, 2, out, &e), PG_OK);
    for (int i = 0; i < 30; i++) cr_assert_eq(out[i], pg_bf16_to_f32(bf16[i]));
    cr_assert_eq(pg_artifact_tensor_dequant(art, 3, out, &e), PG_OK);
    cr_assert_eq(out[0], 2.5f);
    cr_assert_eq(pg_artifact_tensor(art, 4)->numel, 0);
    pg_artifact_free(art);
    free(buf);
  }
}

Test(container, metadata_code_and_tokenizer_roundtrip) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  cr_assert_eq(pg_writer_meta_i64(w, "z.int", -5, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_f64(w, "a.float", 1.0 / 3.0, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_bool(w, "m.bool", 1, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "arch.json", "{\"dim\":512}", 11, &e), PG_OK);
  int64_t iv[3] = {1, -2, 3};
  double fv[2] = {0.5, -0.25};
  const char *sv[3] = {"x", "", "\xe2\x96\x81piece"};
  cr_assert_eq(pg_writer_meta_arr_i64(w, "arr.i", iv, 3, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_arr_f64(w, "arr.f", fv, 2, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_arr_str(w, "arr.s", sv, 3, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_i64(w, "z.int", 5, &e), PG_E_DUPLICATE);
  cr_assert_eq(pg_writer_meta_str(w, "tokenizer.vocab_size", "1", 1, &e), PG_E_META_TYPE);
  cr_assert_eq(pg_writer_meta_i64(w, "Bad Key", 1, &e), PG_E_ARG);
  const uint8_t tok[] = "\x0a\x05piece fake model bytes";
  cr_assert_eq(pg_writer_tokenizer(w, tok, sizeof tok, NULL, &e), PG_OK);
  const char *code = "print('hello')\n";
  pg_codec_spec lz = spec_of("lzma-9e");
  cr_assert_eq(pg_writer_code(w, "train_gpt.py", (const uint8_t *)code, strlen(code), &lz, &e),
               PG_OK);
  cr_assert_eq(pg_writer_code(w, "lib/util.py", (const uint8_t *)"", 0, NULL, &e), PG_OK);
  cr_assert_eq(pg_writer_code(w, "train_gpt.py", (const uint8_t *)"x", 1, NULL, &e),
               PG_E_DUPLICATE);
  cr_assert_eq(pg_writer_code(w, "../evil.py", (const uint8_t *)"x", 1, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_writer_code(w, "/abs.py", (const uint8_t *)"x", 1, NULL, &e), PG_E_ARG);
  uint8_t *buf;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  /* keys come back sorted */
  for (uint32_t i = 1; i < pg_artifact_meta_count(a); i++) {
    const pg_meta_entry *p = pg_artifact_meta(a, i - 1), *q = pg_artifact_meta(a, i);
    cr_assert(memcmp(p->key, q->key, p->key_len < q->key_len ? p->key_len : q->key_len) <= 0);
  }
  cr_assert_eq(pg_artifact_meta_find(a, "z.int")->i64, -5);
  cr_assert_eq(pg_artifact_meta_find(a, "a.float")->f64, 1.0 / 3.0);
  cr_assert_eq(pg_artifact_meta_find(a, "m.bool")->b, 1);
  const pg_meta_entry *aj = pg_artifact_meta_find(a, "arch.json");
  cr_assert_eq(aj->count, 11);
  cr_assert(!memcmp(aj->str, "{\"dim\":512}", 11));
  const pg_meta_entry *ai = pg_artifact_meta_find(a, "arr.i");
  cr_assert_eq(ai->count, 3);
  cr_assert_eq(pg_meta_arr_i64(ai, 1), -2);
  cr_assert_eq(pg_meta_arr_f64(pg_artifact_meta_find(a, "arr.f"), 1), -0.25);
  const char *s;
  uint32_t sl;
  pg_meta_arr_str(pg_artifact_meta_find(a, "arr.s"), 2, &s, &sl);
  cr_assert_eq(sl, strlen(sv[2]));
  cr_assert(!memcmp(s, sv[2], sl));
  cr_assert_eq(pg_artifact_code_count(a), 2);
  const char *nm;
  size_t nml, bl;
  const uint8_t *bytes;
  uint32_t sec;
  cr_assert_eq(pg_artifact_code(a, 0, &nm, &nml, &bytes, &bl, &sec, &e), PG_OK);
  cr_assert_eq(nml, strlen("train_gpt.py"));
  cr_assert(!memcmp(nm, "train_gpt.py", nml));
  cr_assert_eq(bl, strlen(code));
  cr_assert(!memcmp(bytes, code, bl));
  int64_t ts = pg_artifact_tokenizer_section(a);
  cr_assert_geq(ts, 0);
  const uint8_t *raw;
  cr_assert_eq(pg_artifact_section_raw(a, (uint32_t)ts, &raw, &e), PG_OK);
  cr_assert(!memcmp(raw, tok, sizeof tok));
  pg_artifact_free(a);
  free(buf);
}

Test(container, unreferenced_data_sections_are_not_written) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  int unused = pg_writer_data_section(w, &NONE, &e);
  int used = pg_writer_data_section(w, &NONE, &e);
  cr_assert(unused == 0 && used == 1);
  uint64_t n = 3;
  float f[3] = {1, 2, 3};
  pg_tensor_in t = {.name = "f", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &n, .values = f,
                    .sec_values = used};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK);
  uint8_t *buf;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK);
  pg_writer_free(w);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_section_count(a), 3); /* meta, tensors, one data section */
  cr_assert_eq(pg_artifact_tensor(a, 0)->parts[PG_PART_VALUES].section, 2);
  float out[3];
  cr_assert_eq(pg_artifact_tensor_dequant(a, 0, out, &e), PG_OK);
  cr_assert_eq(out[2], 3.0f);
  pg_artifact_free(a);
  free(buf);
}

Test(container, same_inputs_same_bytes) {
  size_t l1, l2;
  uint8_t *a = small_artifact(&l1), *b = small_artifact(&l2);
  cr_assert_eq(l1, l2);
  cr_assert(!memcmp(a, b, l1));
  free(a);
  free(b);
}

/* Sections encoded on several threads give the same bytes as on one. */
static uint8_t *many_sections(int threads, size_t *len) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_threads(w, threads);
  const char *codecs[] = {"zstd-9", "brotli-9/w20", "lzma-6", "zstd-3+shuf2", "brotli-5/w16"};
  for (int k = 0; k < 5; k++) {
    pg_codec_spec cs = spec_of(codecs[k]);
    int d = pg_writer_data_section(w, &cs, &e);
    cr_assert_geq(d, 0);
    uint64_t dims[2] = {64 + 16 * (uint64_t)k, 96};
    int8_t *q = rand_ints(dims[0] * dims[1], -31, 31);
    uint16_t *sc = rand_scales(dims[0]);
    char name[32];
    snprintf(name, sizeof name, "blocks.%d.mlp.fc.weight", k);
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16,
                      .qmin = -31, .qmax = 31, .ndim = 2, .dims = dims, .values = q,
                      .row_scales = sc, .sec_values = d, .sec_scales = d};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
    free(q);
    free(sc);
  }
  static const uint8_t code[] = "print('hello')\n";
  pg_codec_spec lz = spec_of("lzma-9e");
  cr_assert_eq(pg_writer_code(w, "train_gpt.py", code, sizeof code - 1, &lz, &e), PG_OK);
  uint8_t *buf;
  cr_assert_eq(pg_writer_to_mem(w, &buf, len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  return buf;
}

Test(container, threaded_encoding_same_bytes) {
  size_t l1, l2, l3;
  rng_state = 99;
  uint8_t *a = many_sections(1, &l1);
  rng_state = 99;
  uint8_t *b = many_sections(3, &l2);
  rng_state = 99;
  uint8_t *c = many_sections(16, &l3);
  cr_assert_eq(l1, l2);
  cr_assert_eq(l1, l3);
  cr_assert(!memcmp(a, b, l1) && !memcmp(a, c, l1));
  pg_artifact *x;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&x, b, l2, "b", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(x, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_section_count(x), 2u + 5u + 1u);
  pg_artifact_free(x);
  free(a);
  free(b);
  free(c);
}

Test(container, writer_rejects_bad_tensors) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  int d = pg_writer_data_section(w, &NONE, &e);
  uint64_t dims[2] = {2, 4};
  int8_t q[8] = {0, 1, 2, 3, 4, 5, 6, 40};
  uint16_t sc[2] = {0x3c00, 0x3c00};
  pg_tensor_in t = {.name = "t", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16, .ndim = 2,
                    .dims = dims, .values = q, .row_scales = sc, .sec_values = d, .sec_scales = d};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_VALUE_RANGE); /* 40 outside int6 */
  q[7] = 7;
  t.qmin = -3;
  t.qmax = 3;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_VALUE_RANGE); /* outside declared range */
  t.qmin = 0;
  t.qmax = 0;
  t.qtype = 99;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_QTYPE);
  t.qtype = PG_QTYPE_INT6;
  t.sec_scales = 7;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_ARG);
  t.sec_scales = d;
  uint64_t big[2] = {1ull << 40, 1ull << 40};
  t.dims = big;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_DIMS_OVERFLOW);
  t.dims = dims;
  t.lqer_rank = 3; /* 3*4 not a multiple of 64 */
  int8_t la[6] = {0}, lb[12] = {0};
  uint16_t lbs[1] = {0};
  t.lqer_a = la;
  t.lqer_b = lb;
  t.lqer_b_scales = lbs;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_QTYPE);
  t.lqer_rank = 0;
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_E_DUPLICATE);
  /* failed adds left nothing behind: the artifact opens with exactly one tensor */
  uint8_t *buf;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_tensor_count(a), 1);
  pg_artifact_free(a);
  free(buf);
  pg_writer_free(w);
}

static int count_entries(const char *dir) {
  DIR *dd = opendir(dir);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(dd)))
    if (de->d_name[0] != '.') n++;
  closedir(dd);
  return n;
}

Test(container, file_write_is_atomic_and_reopens) {
  char dir[] = "/tmp/pgct.XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  size_t len;
  uint8_t *mem = small_artifact(&len);
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  pg_writer_meta_i64(w, "tokenizer.vocab_size", 1024, &e);
  char path[128];
  snprintf(path, sizeof path, "%s/missing/x.pgz", dir);
  cr_assert_eq(pg_writer_write(w, path, &e), PG_E_IO);
  snprintf(path, sizeof path, "%s/x.pgz", dir);
  cr_assert_eq(pg_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  cr_assert_eq(count_entries(dir), 1);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open(&a, path, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_tensor_count(a), 0);
  pg_artifact_free(a);
  free(mem);
  pgtest_rm_rf(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* malformed input: one test per class */

Test(malformed, wrong_magic) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  b[1] = 'X';
  EXPECT_STATUS(b, len, PG_E_MAGIC);
  free(b);
}

Test(malformed, truncated) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  EXPECT_STATUS(b, 5, PG_E_TRUNCATED);
  EXPECT_STATUS(b, 40, PG_E_TRUNCATED);
  EXPECT_STATUS(b, len - 1, PG_E_TRUNCATED);
  free(b);
}

Test(malformed, unknown_versions) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  pg_st16(b + 8, 3);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_VERSION);
  pg_st16(b + 8, 1);
  pg_st16(b + 10, 3);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_VERSION);
  free(b);
}

Test(malformed, header_checksum_and_reserved) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  b[57] ^= 1;
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  b[57] ^= 1;
  b[12] = 1; /* flags */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_HEADER);
  b[12] = 0;
  b[44] = 1; /* reserved */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_HEADER);
  free(b);
}

Test(malformed, trailing_bytes_after_file) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint8_t *c = realloc(b, len + 3);
  memset(c + len, 0, 3);
  EXPECT_STATUS(c, len + 3, PG_E_TRAILING);
  free(c);
}

Test(malformed, section_count_limits) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  pg_st32(b + 16, 0);
  pg_st64(b + 56, XXH64(b, 56, 0));
  EXPECT_STATUS(b, len, PG_E_LIMIT);
  pg_st32(b + 16, 5000);
  pg_st64(b + 56, XXH64(b, 56, 0));
  EXPECT_STATUS(b, len, PG_E_LIMIT);
  free(b);
}

Test(malformed, table_out_of_range) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  /* a table of 1000 entries does not fit in the file: checked before its checksum */
  pg_st32(b + 16, 1000);
  pg_st64(b + 56, XXH64(b, 56, 0));
  EXPECT_STATUS(b, len, PG_E_TABLE_RANGE);
  free(b);
  b = small_artifact(&len);
  uint32_t last = nsections(b) - 1;
  pg_st64(entry(b, last) + 16, pg_ld64(entry(b, last) + 16) + 100); /* past the end */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_TABLE_RANGE);
  free(b);
}

Test(malformed, table_checksum) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  entry(b, 0)[20] ^= 1;
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  free(b);
}

Test(malformed, overlap_and_hole_between_sections) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint8_t *e1 = entry(b, 1);
  pg_st64(e1 + 8, pg_ld64(e1 + 8) - 1);
  pg_st64(e1 + 16, pg_ld64(e1 + 16) + 1);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_OVERLAP);
  free(b);
  b = small_artifact(&len);
  e1 = entry(b, 1);
  pg_st64(e1 + 8, pg_ld64(e1 + 8) + 1);
  pg_st64(e1 + 16, pg_ld64(e1 + 16) - 1);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_HOLE);
  free(b);
}

Test(malformed, trailing_bytes_after_last_section) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint32_t last = nsections(b) - 1;
  uint8_t *e = entry(b, last);
  pg_st64(e + 16, pg_ld64(e + 16) - 1);
  pg_st64(e + 24, pg_ld64(e + 24) - 1);
  fix_section(b, last);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_TRAILING);
  free(b);
}

Test(malformed, stored_and_raw_checksums) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  b[len - 1] ^= 0x40; /* a data byte */
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  free(b);
  b = small_artifact(&len);
  int d = section_of_kind(b, PG_SEC_DATA);
  entry(b, (uint32_t)d)[40] ^= 1; /* raw checksum of the data section */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  free(b);
}

Test(malformed, unknown_codec_and_transform) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  entry(b, 0)[2] = 9;
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_CODEC);
  entry(b, 0)[2] = 1; /* zstd with level 0 */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_CODEC);
  entry(b, 0)[2] = 0;
  entry(b, 0)[5] = 4;
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_TRANSFORM);
  entry(b, 0)[5] = 1;
  entry(b, 0)[6] = 1; /* stride 1 */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_TRANSFORM);
  free(b);
}

Test(malformed, unknown_section_kind_and_missing_meta) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  pg_st16(entry(b, 0), 77);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_SECTION_KIND);
  pg_st16(entry(b, 0), PG_SEC_DATA); /* no meta section left */
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_SECTION_KIND);
  free(b);
}

Test(malformed, decompression_size_mismatch) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_codec_spec z = spec_of("zstd-3");
  int d = pg_writer_data_section(w, &z, &e);
  uint64_t n = 1000;
  float *f = calloc(n, 4);
  pg_tensor_in t = {
      .name = "f", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &n, .values = f, .sec_values = d};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK);
  uint8_t *b;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &b, &len, &e), PG_OK);
  pg_writer_free(w);
  /* declare a raw size one smaller: the directory's part then also disagrees, but the
   * decoder is what check() reaches first for this section */
  int s = section_of_kind(b, PG_SEC_DATA);
  uint8_t *en = entry(b, (uint32_t)s);
  /* corrupt a byte inside the zstd frame and fix its stored checksum */
  uint64_t off = pg_ld64(en + 8), sz = pg_ld64(en + 16);
  b[off + sz / 2] ^= 0xff;
  b[off + sz - 1] ^= 0xff;
  pg_st64(en + 32, XXH64(b + off, sz, 0));
  reseal(b);
  pg_artifact *a;
  int rc = pg_artifact_open_mem(&a, b, len, "t.pgz", NULL, &e);
  cr_assert_eq(rc, PG_OK, "%s", e.msg);
  rc = pg_artifact_check(a, &e);
  cr_assert(rc == PG_E_DECOMPRESS || rc == PG_E_CHECKSUM, "got %s", pg_status_name(rc));
  pg_artifact_free(a);
  free(b);
  free(f);
}

Test(malformed, unknown_qtype_and_bad_layout) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint8_t *t = dir_entry(b, "blocks.0.attn.c_q.weight");
  dir_hdr(t)[0] = 42;
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_QTYPE);
  dir_hdr(t)[0] = PG_QTYPE_INT6;
  dir_hdr(t)[1] = 3; /* packing */
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_QTYPE);
  dir_hdr(t)[1] = 0;
  dir_hdr(t)[4] = 40; /* qmax above int6 */
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_QTYPE);
  free(b);
}

Test(malformed, dims_product_overflows) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint8_t *t = dir_entry(b, "blocks.0.attn.c_q.weight");
  pg_st64(dir_dims(t), 1ull << 40);
  pg_st64(dir_dims(t) + 8, 1ull << 40);
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_DIMS_OVERFLOW);
  pg_st64(dir_dims(t), 1ull << 21);
  pg_st64(dir_dims(t) + 8, 1ull << 20);
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_LIMIT); /* 2^41 elements */
  free(b);
}

Test(malformed, size_disagrees_with_shape) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  uint8_t *t = dir_entry(b, "blocks.0.attn.c_q.weight");
  pg_st64(dir_dims(t) + 8, 9); /* 4x9 but the values part holds 32 */
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_SIZE_MISMATCH);
  free(b);
}

Test(malformed, duplicate_tensor_name) {
  size_t len;
  uint8_t *b;
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  int d = pg_writer_data_section(w, &NONE, &e);
  uint64_t one = 1;
  float x = 1.0f, y = 2.0f;
  pg_tensor_in ta = {.name = "aaaa", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &x,
                     .sec_values = d};
  pg_tensor_in tb = {.name = "bbbb", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &y,
                     .sec_values = d};
  pg_writer_tensor(w, &ta, &e);
  pg_writer_tensor(w, &tb, &e);
  pg_writer_to_mem(w, &b, &len, &e);
  pg_writer_free(w);
  memcpy(dir_entry(b, "bbbb") + 2, "aaaa", 4);
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_DUPLICATE);
  free(b);
}

Test(malformed, parts_overlap_hole_and_trailing_inside_data) {
  pg_writer *w;
  pg_err e;
  uint8_t *b;
  size_t len;
  for (int mode = 0; mode < 3; mode++) {
    test_writer(&w, PG_CONTAINER_V1);
    pg_writer_set_meta_codec(w, &NONE, &NONE);
    int d = pg_writer_data_section(w, &NONE, &e);
    uint64_t one = 1;
    float x = 1.0f, y = 2.0f;
    pg_tensor_in ta = {
        .name = "a", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &x, .sec_values = d};
    pg_tensor_in tb = {
        .name = "b", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &y, .sec_values = d};
    pg_writer_tensor(w, &ta, &e);
    pg_writer_tensor(w, &tb, &e);
    pg_writer_to_mem(w, &b, &len, &e);
    pg_writer_free(w);
    /* grow the last (data) section by 4 bytes, so parts no longer tile it */
    b = realloc(b, len + 4);
    memset(b + len, 0, 4);
    len += 4;
    uint32_t last = nsections(b) - 1;
    uint8_t *en = entry(b, last);
    pg_st64(en + 16, pg_ld64(en + 16) + 4);
    pg_st64(en + 24, pg_ld64(en + 24) + 4);
    pg_st64(b + 24, len);
    fix_section(b, last);
    int want;
    if (mode == 0) {
      want = PG_E_TRAILING; /* parts [0,4) [4,8) in a 12-byte section */
    } else if (mode == 1) {
      pg_st64(dir_part(dir_entry(b, "b"), 0) + 4, 8); /* b at [8,12): hole [4,8) */
      want = PG_E_HOLE;
    } else {
      pg_st64(dir_part(dir_entry(b, "b"), 0) + 4, 2); /* b at [2,6): overlaps a */
      want = PG_E_OVERLAP;
    }
    fix_dir(b);
    EXPECT_STATUS(b, len, want);
    free(b);
  }
}

Test(malformed, part_in_a_non_data_section) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  pg_st32(dir_part(dir_entry(b, "other"), 0), 0); /* section 0 is META */
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_SECTION_KIND);
  pg_st32(dir_part(dir_entry(b, "other"), 0), 99);
  fix_dir(b);
  EXPECT_STATUS(b, len, PG_E_TABLE_RANGE);
  free(b);
}

Test(malformed, metadata_wrong_type_and_duplicate_key) {
  pg_writer *w;
  pg_err e;
  uint8_t *b;
  size_t len;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  pg_writer_meta_i64(w, "tokenizer.vocab_size", 8192, &e);
  pg_writer_meta_i64(w, "x.a", 1, &e);
  pg_writer_meta_i64(w, "x.b", 2, &e);
  pg_writer_to_mem(w, &b, &len, &e);
  pg_writer_free(w);
  int ms = section_of_kind(b, PG_SEC_META);
  uint8_t *m = b + pg_ld64(entry(b, (uint32_t)ms) + 8);
  size_t mlen = (size_t)pg_ld64(entry(b, (uint32_t)ms) + 16);
  uint8_t *k = memmem(m, mlen, "tokenizer.vocab_size", 20);
  cr_assert_not_null(k);
  k[20] = PG_META_F64; /* same width: an f64 where an i64 belongs */
  fix_section(b, (uint32_t)ms);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_META_TYPE);
  k[20] = PG_META_I64;
  uint8_t *xb = memmem(m, mlen, "x.b", 3);
  xb[2] = 'a';
  fix_section(b, (uint32_t)ms);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_DUPLICATE);
  xb[2] = '0'; /* "x.0" after "x.a": out of order */
  fix_section(b, (uint32_t)ms);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_MALFORMED);
  free(b);
}

Test(malformed, value_outside_declared_range) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  /* the int6 tensor declares [-31, 31]; its values are the first 32 bytes of the data section */
  int d = section_of_kind(b, PG_SEC_DATA);
  uint64_t off = pg_ld64(entry(b, (uint32_t)d) + 8);
  b[off + 5] = (uint8_t)(int8_t)-32;
  fix_section(b, (uint32_t)d);
  reseal(b);
  EXPECT_STATUS(b, len, PG_E_VALUE_RANGE);
  free(b);
}

Test(malformed, tighter_reader_limits) {
  size_t len;
  uint8_t *b = small_artifact(&len);
  pg_read_limits lim = {.max_elements = 16};
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&a, b, len, "t.pgz", &lim, &e), PG_E_LIMIT);
  lim.max_elements = 0;
  lim.max_section_raw = 8;
  cr_assert_eq(pg_artifact_open_mem(&a, b, len, "t.pgz", &lim, &e), PG_E_LIMIT);
  free(b);
}

/* ---------------------------------------------------------------------------------------- */
/* memory: what a file may make a reader decode (spec/format.md §7) */

/* Open only: the limits are checked before anything is decoded. */
static int open_only(const uint8_t *b, size_t len, pg_err *e) {
  pg_artifact *a;
  int rc = pg_artifact_open_mem(&a, b, len, "t.pgz", NULL, e);
  pg_artifact_free(a);
  return rc;
}

Test(limits, decoded_total_floor_for_small_files) {
  /* one CODE section; META (29 raw bytes) and TENSORS (4) add 33: 64 MiB in all is allowed to
   * a file of a few kilobytes, one byte more is not */
  size_t len;
  pg_err e;
  uint8_t *b = pgbomb(0, 0, 1, (64u << 20) - 33, 0, &len);
  cr_assert_lt(len, 1u << 20);
  cr_assert_eq(open_status(b, len, &e), PG_OK, "%s", e.msg);
  free(b);
  b = pgbomb(0, 0, 1, (64u << 20) - 32, 0, &len);
  cr_assert_eq(open_only(b, len, &e), PG_E_LIMIT, "got %s", e.msg);
  cr_assert(strstr(e.msg, "t.pgz") == e.msg && strstr(e.msg, "limit 67108864") &&
                !strchr(e.msg, '\n'),
            "%s", e.msg);
  free(b);
}

Test(limits, decoded_total_is_a_multiple_of_the_file_size) {
  /* a 4 MB file may decode to 32 times its size: 96 MiB of zeros and the 4 MB of its other
   * section fit, 124 MiB do not */
  size_t len;
  pg_err e;
  uint8_t *b = pgbomb(1, 96u << 20, 0, 0, 4000000, &len);
  cr_assert_eq(open_status(b, len, &e), PG_OK, "%s", e.msg);
  free(b);
  b = pgbomb(1, 124u << 20, 0, 0, 4000000, &len);
  cr_assert_eq(open_only(b, len, &e), PG_E_LIMIT, "got %s", e.msg);
  cr_assert(strstr(e.msg, "32 times the file's") != NULL, "%s", e.msg);
  free(b);
}

Test(limits, the_issue_shapes_are_refused_at_open) {
  /* a 99 KB file of three 1 GiB code files (pgsize took 3 GiB), and one of many 1 GiB DATA
   * sections (which a check decoded and kept until killed) */
  size_t len;
  pg_err e;
  uint8_t *b = pgbomb(0, 0, 3, 1u << 30, 0, &len);
  cr_assert_lt(len, 100000);
  cr_assert_eq(open_only(b, len, &e), PG_E_LIMIT, "got %s", e.msg);
  free(b);
  b = pgbomb(24, 1u << 30, 0, 0, 0, &len);
  cr_assert_eq(open_only(b, len, &e), PG_E_LIMIT, "got %s", e.msg);
  free(b);
}

/* ---------------------------------------------------------------------------------------- */
/* two readers on two threads */

typedef struct reader_job {
  const uint8_t *buf;
  size_t len;
  int want; /* the status every open must give */
  int bad;  /* opens that gave another */
} reader_job;

static void *reader_loop(void *arg) {
  reader_job *j = arg;
  for (int k = 0; k < 1000; k++) {
    pg_artifact *a;
    pg_err e;
    int rc = pg_artifact_open_mem(&a, j->buf, j->len, "t.pgz", NULL, &e);
    if (rc == PG_OK) {
      rc = pg_artifact_check(a, &e);
      float v;
      if (rc == PG_OK) rc = pg_artifact_tensor_dequant(a, 7, &v, &e);
      if (rc == PG_OK && v != 7.0f) rc = PG_E_VALUE_RANGE;
      pg_artifact_free(a);
    }
    j->bad += rc != j->want;
  }
  return NULL;
}

Test(threads, two_readers_at_once) {
  /* One artifact of 500 uniquely named tensors, and a copy whose last tensor takes the first
   * one's name. Read at the same time on two threads, the first must always open and the copy
   * always be refused as a duplicate: no state is shared between readers. */
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  pg_codec_spec z = spec_of("zstd-3");
  int d = pg_writer_data_section(w, &z, &e);
  uint64_t one = 1;
  for (int i = 0; i < 500; i++) {
    char name[16];
    snprintf(name, sizeof name, "t%04d", i);
    float v = (float)i;
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one,
                      .values = &v, .sec_values = d};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  }
  uint8_t *x;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &x, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  uint8_t *y = malloc(len);
  memcpy(y, x, len);
  memcpy(dir_entry(y, "t0499") + 2, "t0000", 5);
  fix_dir(y);
  EXPECT_STATUS(y, len, PG_E_DUPLICATE);
  reader_job jx = {x, len, PG_OK, 0}, jy = {y, len, PG_E_DUPLICATE, 0};
  pthread_t tx, ty;
  cr_assert_eq(pthread_create(&tx, NULL, reader_loop, &jx), 0);
  cr_assert_eq(pthread_create(&ty, NULL, reader_loop, &jy), 0);
  pthread_join(tx, NULL);
  pthread_join(ty, NULL);
  cr_assert_eq(jx.bad, 0, "%d of 1000 opens of the valid artifact failed", jx.bad);
  cr_assert_eq(jy.bad, 0, "%d of 1000 opens missed the duplicate", jy.bad);
  free(x);
  free(y);
}

Test(limits, sections_decoded_on_demand_and_held_until_released) {
  /* four zstd DATA sections of one f32 tensor each, read through a cache of one section: the
   * tensors come out right in any order, and a section a caller holds stays valid meanwhile */
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V1);
  pg_codec_spec z = spec_of("zstd-3");
  uint64_t n = 1000;
  float v[1000];
  for (int k = 0; k < 4; k++) {
    int d = pg_writer_data_section(w, &z, &e);
    for (int i = 0; i < 1000; i++) v[i] = (float)(k * 1000 + i);
    char name[8];
    snprintf(name, sizeof name, "t%d", k);
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &n, .values = v,
                      .sec_values = d};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  }
  uint8_t *b;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &b, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_read_limits lim = {.max_cache = 4000};
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, b, len, "t.pgz", &lim, &e), PG_OK, "%s", e.msg);
  const pg_tensor_info *t0 = pg_artifact_tensor(a, (uint32_t)pg_artifact_tensor_find(a, "t0"));
  const uint8_t *held;
  cr_assert_eq(pg_artifact_section_raw(a, t0->parts[PG_PART_VALUES].section, &held, &e), PG_OK);
  for (int round = 0; round < 3; round++)
    for (int k = 3; k >= 0; k--) {
      char name[8];
      snprintf(name, sizeof name, "t%d", k);
      cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)pg_artifact_tensor_find(a, name), v,
                                              &e),
                   PG_OK, "%s", e.msg);
      for (int i = 0; i < 1000; i++) cr_assert_eq(v[i], (float)(k * 1000 + i));
    }
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  for (int i = 0; i < 1000; i++) {
    float f;
    memcpy(&f, held + 4 * i, 4);
    cr_assert_eq(f, (float)i);
  }
  pg_artifact_section_release(a, t0->parts[PG_PART_VALUES].section);
  pg_artifact_trim(a);
  cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)pg_artifact_tensor_find(a, "t0"), v, &e),
               PG_OK, "%s", e.msg);
  cr_assert_eq(v[999], 999.0f);
  pg_artifact_free(a);
  free(b);
}

/* Two zstd DATA sections of 24 MiB (a large zero tensor each) and 20,000 small tensors that
 * alternate between them, read through a 16 MiB cache in directory order, as an export or a model
 * load walks them. With a cache alone every small tensor evicted the other section and decoded
 * its own again: 20,000 decodes of 24 MiB (the same layout at 40 MiB per section, default limits
 * and a 3.8 MB file: 85 ms per tensor, 42 s for 500 tensors). A section decoded a second time is
 * now kept until pg_artifact_trim, so the walk decodes each section at most twice. */
Test(limits, tensors_alternating_between_large_sections_decode_each_at_most_twice) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V2);
  pg_codec_spec z = spec_of("zstd-1");
  const int d[2] = {pg_writer_data_section(w, &z, &e), pg_writer_data_section(w, &z, &e)};
  enum { N = 20000 };
  uint64_t one = 1, big = (24u << 20) / 4;
  char name[16];
  for (uint32_t i = 0; i < N; i++) {
    const float x = (float)i;
    snprintf(name, sizeof name, "s%05u", i);
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &x,
                      .sec_values = d[i & 1]};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  }
  float *zero = calloc((size_t)big, sizeof *zero);
  cr_assert_not_null(zero);
  for (int k = 0; k < 2; k++) {
    snprintf(name, sizeof name, "big%d", k);
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &big,
                      .values = zero, .sec_values = d[k]};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  }
  free(zero);
  uint8_t *b;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &b, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_read_limits lim = {.max_cache = 16u << 20};
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, b, len, "alt.pgz", &lim, &e), PG_OK, "%s", e.msg);
  for (int round = 0; round < 2; round++) {
    for (uint32_t i = 0; i < N; i++) {
      float v = -1;
      cr_assert_eq(pg_artifact_tensor_dequant(a, i, &v, &e), PG_OK, "%s", e.msg);
      cr_assert_eq(v, (float)i);
    }
    pg_artifact_trim(a); /* lets the kept sections go; the next walk keeps them again */
  }
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  pg_artifact_free(a);
  free(b);
}

/* An artifact is read into private memory: truncating the file after the open changes nothing
 * (pgunpack --check on a mapped file died with SIGBUS when it shrank under it). */
Test(container, file_truncated_after_open_reads_as_opened) {
  char dir[] = "/tmp/pgct.XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  size_t len;
  uint8_t *mem = small_artifact(&len);
  char path[128];
  snprintf(path, sizeof path, "%s/x.pgz", dir);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, mem, len, &e), PG_OK);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open(&a, path, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(truncate(path, 0), 0);
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  float out[32];
  int64_t ti = pg_artifact_tensor_find(a, "blocks.0.attn.c_q.weight");
  cr_assert_geq(ti, 0);
  cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)ti, out, &e), PG_OK, "%s", e.msg);
  pg_artifact_free(a);
  free(mem);
  pgtest_rm_rf(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* container v2 and quant layout 2 */

/* The values and their layout: a 3-D int tensor (rows 13, cols 15) with every combination of
 * order and permutation, a 2-D one with LQER, and the same tensors in a row-major v1 file. */
#define EXPECT_OPENS(buf, len)                                                             \
  do {                                                                                     \
    pg_err e_;                                                                             \
    int rc_ = open_status((buf), (len), &e_);                                              \
    cr_assert_eq(rc_, PG_OK, "%s", e_.msg);                                                \
  } while (0)

typedef struct lay_case {
  int qt, order, perm;
} lay_case;

static uint8_t *layout_file(int cver, lay_case c, const int8_t *q, const uint16_t *sc,
                            const int8_t *q2, const uint16_t *sc2, const int8_t *la,
                            const int8_t *lb, const uint16_t *lbs, const uint32_t *perm,
                            const uint32_t *perm2, size_t *len) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, cver);
  int d = pg_writer_data_section(w, &NONE, &e), dp = pg_writer_data_section(w, &NONE, &e);
  uint64_t dims[3] = {13, 3, 5}, dims2[2] = {16, 64};
  const unsigned bits = pg_qtype_bits(c.qt);
  pg_tensor_in t = {.name = "m3", .qtype = c.qt, .scale_kind = PG_SCALE_ROW_F16, .ndim = 3,
                    .dims = dims, .values = q, .row_scales = sc, .order = c.order,
                    .perm = c.perm, .row_perm = perm, .sec_values = d, .sec_scales = d,
                    .sec_perm = dp, .qmin = pg_int_min(bits), .qmax = pg_int_max(bits)};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  pg_tensor_in t2 = {.name = "m2", .qtype = c.qt, .scale_kind = PG_SCALE_ROW_F16, .ndim = 2,
                     .dims = dims2, .values = q2, .row_scales = sc2, .lqer_rank = 1,
                     .lqer_a = la, .lqer_a_scale = pg_f32_to_f16(0.0625f), .lqer_b = lb,
                     .lqer_b_scales = lbs, .order = c.order, .perm = c.perm, .row_perm = perm2,
                     .sec_values = d, .sec_scales = d, .sec_lqer = d, .sec_perm = dp};
  cr_assert_eq(pg_writer_tensor(w, &t2, &e), PG_OK, "%s", e.msg);
  uint8_t *buf;
  cr_assert_eq(pg_writer_to_mem(w, &buf, len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  return buf;
}

static void shuffle_perm(uint32_t *p, uint32_t n) {
  for (uint32_t i = 0; i < n; i++) p[i] = i;
  for (uint32_t i = n; i > 1; i--) {
    uint32_t j = rnd() % i, t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
}

Test(layout, roundtrip_every_qtype_order_perm_and_container) {
  for (int qt = PG_QTYPE_INT5; qt <= PG_QTYPE_INT8; qt++) {
    const unsigned bits = pg_qtype_bits(qt);
    int8_t *q = rand_ints(13 * 15, pg_int_min(bits), pg_int_max(bits));
    int8_t *q2 = rand_ints(16 * 64, pg_int_min(bits), pg_int_max(bits));
    uint16_t *sc = rand_scales(13), *sc2 = rand_scales(16), *lbs = rand_scales(1);
    int8_t *la = rand_ints(16, -2, 1), *lb = rand_ints(64, -8, 7);
    uint32_t perm[13], perm2[16];
    shuffle_perm(perm, 13);
    shuffle_perm(perm2, 16);
    size_t rlen;
    uint8_t *ref = layout_file(PG_CONTAINER_V1, (lay_case){qt, 0, 0}, q, sc, q2, sc2, la, lb,
                               lbs, perm, perm2, &rlen);
    pg_artifact *r;
    pg_err e;
    cr_assert_eq(pg_artifact_open_mem(&r, ref, rlen, "ref.pgz", NULL, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_quant_layout_version(r), 1);
    float want[16 * 64], got[16 * 64];
    int8_t back[16 * 64];
    for (int cver = 1; cver <= 2; cver++)
      for (int order = 0; order <= 1; order++)
        for (int pk = 0; pk <= 1; pk++) {
          size_t len;
          uint8_t *buf = layout_file(cver, (lay_case){qt, order, pk}, q, sc, q2, sc2, la, lb, lbs,
                                     perm, perm2, &len);
          pg_artifact *a;
          cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
          cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
          cr_assert_eq(pg_artifact_container_version(a), cver);
          cr_assert_eq(pg_artifact_quant_layout_version(a), order || pk ? 2 : 1);
          for (uint32_t i = 0; i < 2; i++) {
            const pg_tensor_info *ti = pg_artifact_tensor(a, i);
            cr_assert_eq(ti->order, order);
            cr_assert_eq(ti->perm, pk);
            cr_assert_eq(ti->parts[PG_PART_ROW_PERM].present, pk);
            if (pk) cr_assert_eq(ti->parts[PG_PART_ROW_PERM].size, 2 * ti->rows);
            cr_assert_eq(pg_artifact_tensor_values(a, i, back, &e), PG_OK, "%s", e.msg);
            cr_assert(!memcmp(back, i ? q2 : q, ti->numel), "%s values differ: c%d o%d p%d",
                      pg_qtype_name(qt), cver, order, pk);
            cr_assert_eq(pg_artifact_tensor_dequant(a, i, got, &e), PG_OK, "%s", e.msg);
            cr_assert_eq(pg_artifact_tensor_dequant(r, i, want, &e), PG_OK, "%s", e.msg);
            cr_assert(!memcmp(got, want, ti->numel * 4), "dequant differs from row-major v1");
          }
          if (order || pk) { /* the stored bytes are the image, not the logical matrix */
            const pg_tensor_info *ti = pg_artifact_tensor(a, 0);
            const uint8_t *raw;
            cr_assert_eq(pg_artifact_section_raw(a, ti->parts[PG_PART_VALUES].section, &raw, &e),
                         PG_OK);
            const int8_t *st = (const int8_t *)raw + ti->parts[PG_PART_VALUES].offset;
            for (uint32_t j = 0; j < 13; j++)
              for (uint32_t c = 0; c < 15; c++)
                cr_assert_eq(st[order ? c * 13 + j : j * 15 + c], q[(pk ? perm[j] : j) * 15 + c]);
          }
          pg_artifact_free(a);
          free(buf);
        }
    pg_artifact_free(r);
    free(ref);
    free(q);
    free(q2);
    free(sc);
    free(sc2);
    free(lbs);
    free(la);
    free(lb);
  }
}

/* More than 65,536 rows: the permutation is stored as u32. */
Test(layout, wide_permutation_is_u32) {
  const uint32_t rows = 65537;
  int8_t *q = rand_ints(rows * 2, -31, 31);
  uint16_t *sc = rand_scales(rows);
  uint32_t *perm = malloc(rows * sizeof *perm);
  shuffle_perm(perm, rows);
  for (int cver = 1; cver <= 2; cver++) {
    pg_writer *w;
    pg_err e;
    test_writer(&w, cver);
    int d = pg_writer_data_section(w, &NONE, &e);
    uint64_t dims[2] = {rows, 2};
    pg_tensor_in t = {.name = "big", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16,
                      .ndim = 2, .dims = dims, .values = q, .row_scales = sc, .order = 1,
                      .perm = 1, .row_perm = perm, .sec_values = d, .sec_scales = d,
                      .sec_perm = d};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK, "%s", e.msg);
    pg_writer_free(w);
    pg_artifact *a;
    cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor(a, 0)->parts[PG_PART_ROW_PERM].size, 4ull * rows);
    int8_t *back = malloc(rows * 2);
    cr_assert_eq(pg_artifact_tensor_values(a, 0, back, &e), PG_OK, "%s", e.msg);
    cr_assert(!memcmp(back, q, rows * 2));
    free(back);
    pg_artifact_free(a);
    free(buf);
  }
  free(q);
  free(sc);
  free(perm);
}

Test(layout, writer_refuses_layout_where_it_makes_no_sense) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V2);
  int d = pg_writer_data_section(w, &NONE, &e);
  uint64_t dims[2] = {4, 8}, d1 = 32;
  int8_t q[32] = {0};
  uint16_t sc[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
  float f[32] = {0};
  uint32_t perm[4] = {0, 1, 1, 3}, good[4] = {3, 2, 1, 0};
  struct {
    pg_tensor_in t;
    int status;
    const char *needle;
  } cases[] = {
      {{.name = "f", .qtype = PG_QTYPE_F32, .ndim = 2, .dims = dims, .values = f, .order = 1},
       PG_E_QTYPE, "value order"},
      {{.name = "v", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_SCALAR_F32, .ndim = 1,
        .dims = &d1, .values = q, .order = 1},
       PG_E_QTYPE, "2 or more dimensions"},
      {{.name = "p", .qtype = PG_QTYPE_INT6, .packing = 1, .scale_kind = PG_SCALE_ROW_F16,
        .ndim = 2, .dims = dims, .values = q, .row_scales = sc, .perm = 1, .row_perm = good},
       PG_E_QTYPE, "one value per byte"},
      {{.name = "o", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16, .ndim = 2,
        .dims = dims, .values = q, .row_scales = sc, .order = 2},
       PG_E_QTYPE, "unknown value order"},
      {{.name = "r", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16, .ndim = 2,
        .dims = dims, .values = q, .row_scales = sc, .perm = 1, .row_perm = perm},
       PG_E_ARG, "not a permutation"},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    cases[k].t.sec_values = cases[k].t.sec_scales = cases[k].t.sec_perm = d;
    int rc = pg_writer_tensor(w, &cases[k].t, &e);
    cr_assert_eq(rc, cases[k].status, "%s: got %s (%s)", cases[k].t.name, pg_status_name(rc),
                 e.msg);
    cr_assert(strstr(e.msg, cases[k].needle), "%s", e.msg);
  }
  pg_writer_free(w);
}

/* The v2 table of a file: each entry's offset, each section's offset, the checksum's offset. */
typedef struct v2tab {
  uint32_t n;
  size_t eoff[16], off[16], stored[16], ck;
} v2tab;

static size_t varint_at(const uint8_t *b, size_t *pos) {
  size_t v = 0;
  for (unsigned k = 0;; k++) {
    uint8_t x = b[(*pos)++];
    v |= (size_t)(x & 0x7f) << (7 * k);
    if (!(x & 0x80)) return v;
  }
}

static v2tab v2_table(const uint8_t *b) {
  v2tab t;
  memset(&t, 0, sizeof t);
  cr_assert_eq(pg_ld16(b + 8), 2);
  size_t pos = 12;
  t.n = (uint32_t)varint_at(b, &pos);
  cr_assert_leq(t.n, 16);
  for (uint32_t i = 0; i < t.n; i++) {
    t.eoff[i] = pos;
    pos += 6;
    t.stored[i] = varint_at(b, &pos);
    varint_at(b, &pos);
    pos += 4;
  }
  t.ck = pos;
  size_t off = pos + 8;
  for (uint32_t i = 0; i < t.n; i++) {
    t.off[i] = off;
    off += t.stored[i];
  }
  return t;
}

/* Recompute section i's raw check (codec none) and the file checksum. */
static void v2_reseal(uint8_t *b, size_t len, int fix_sec) {
  v2tab t = v2_table(b);
  if (fix_sec >= 0) {
    size_t pos = t.eoff[fix_sec] + 6;
    varint_at(b, &pos);
    varint_at(b, &pos);
    pg_st32(b + pos, (uint32_t)XXH64(b + t.off[fix_sec], t.stored[fix_sec], 0));
  }
  XXH64_state_t *st = XXH64_createState();
  XXH64_reset(st, 0);
  XXH64_update(st, b, t.ck);
  XXH64_update(st, b + t.ck + 8, len - t.ck - 8);
  pg_st64(b + t.ck, XXH64_digest(st));
  XXH64_freeState(st);
}

static uint8_t *v2_small(size_t *len, uint32_t *perm_file_off, int *perm_sec) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V2);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  int d = pg_writer_data_section(w, &NONE, &e), dp = pg_writer_data_section(w, &NONE, &e);
  uint64_t dims[2] = {4, 8};
  int8_t q[32];
  for (int i = 0; i < 32; i++) q[i] = (int8_t)(i - 16);
  uint16_t sc[4] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
  uint32_t perm[4] = {2, 0, 3, 1};
  pg_tensor_in t = {.name = "w", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16,
                    .ndim = 2, .dims = dims, .values = q, .row_scales = sc, .order = 1,
                    .perm = 1, .row_perm = perm, .sec_values = d, .sec_scales = d,
                    .sec_perm = dp};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
  uint8_t *buf;
  cr_assert_eq(pg_writer_to_mem(w, &buf, len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, *len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  const pg_part *pp = &pg_artifact_tensor(a, 0)->parts[PG_PART_ROW_PERM];
  if (perm_file_off)
    *perm_file_off = (uint32_t)(pg_artifact_section(a, pp->section)->offset + pp->offset);
  if (perm_sec) *perm_sec = (int)pp->section;
  cr_assert_eq(pg_artifact_head_size(a), v2_table(buf).ck + 8);
  pg_artifact_free(a);
  return buf;
}

Test(layout, bad_permutation_is_malformed) {
  size_t len;
  uint32_t po;
  int ps;
  uint8_t *b = v2_small(&len, &po, &ps);
  EXPECT_OPENS(b, len);
  pg_st16(b + po + 2, 2); /* {2, 2, 3, 1}: row 2 twice */
  v2_reseal(b, len, ps);
  EXPECT_STATUS(b, len, PG_E_MALFORMED);
  pg_err e;
  open_status(b, len, &e);
  cr_assert(strstr(e.msg, "row_perm") && strstr(e.msg, "appears twice"), "%s", e.msg);
  pg_st16(b + po + 2, 4); /* {2, 4, 3, 1}: 4 is not a row */
  v2_reseal(b, len, ps);
  EXPECT_STATUS(b, len, PG_E_MALFORMED);
  open_status(b, len, &e);
  cr_assert(strstr(e.msg, "not a row index"), "%s", e.msg);
  free(b);
}

/* The layout byte in the (uncompressed) directory: bad order, perm on a packed tensor, a layout
 * under quant layout 1. */
Test(layout, bad_layout_byte) {
  size_t len;
  uint8_t *b = v2_small(&len, NULL, NULL);
  const int dir = 1;
  uint8_t *name = memmem(b + v2_table(b).off[dir], v2_table(b).stored[dir], "\x01w", 2);
  cr_assert_not_null(name);
  uint8_t *h = name + 2;
  cr_assert_eq(h[7], 0x11);
  h[7] = 0x12;
  v2_reseal(b, len, dir);
  EXPECT_STATUS(b, len, PG_E_QTYPE);
  h[7] = 0x11;
  h[1] = 1; /* bit packing */
  v2_reseal(b, len, dir);
  EXPECT_STATUS(b, len, PG_E_QTYPE);
  h[1] = 0;
  pg_st16(b + 10, 1); /* quant layout 1 has no layout byte */
  v2_reseal(b, len, dir);
  EXPECT_STATUS(b, len, PG_E_MALFORMED);
  pg_st16(b + 10, 2);
  v2_reseal(b, len, dir);
  EXPECT_OPENS(b, len);
  free(b);
}

Test(v2, compact_table_faults) {
  size_t len;
  uint8_t *b = v2_small(&len, NULL, NULL);
  v2tab t = v2_table(b);
  EXPECT_OPENS(b, len);
  /* truncation: inside the table, and inside the last section */
  EXPECT_STATUS(b, 13, PG_E_TRUNCATED);
  EXPECT_STATUS(b, t.ck + 4, PG_E_TRUNCATED);
  EXPECT_STATUS(b, len - 1, PG_E_TRUNCATED);
  /* trailing bytes */
  uint8_t *longer = malloc(len + 3);
  memcpy(longer, b, len);
  memset(longer + len, 0, 3);
  EXPECT_STATUS(longer, len + 3, PG_E_TRAILING);
  free(longer);
  /* any byte of a section, or of the table, changed: the file checksum */
  b[t.off[2]] ^= 1;
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  b[t.off[2]] ^= 1;
  b[t.eoff[0] + 2] ^= 1; /* the META entry's level byte */
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  b[t.eoff[0] + 2] ^= 1;
  b[t.ck] ^= 1;
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  b[t.ck] ^= 1;
  /* a section's raw check (codec none: its bytes) */
  b[t.off[2]] ^= 1;
  v2_reseal(b, len, -1);
  EXPECT_STATUS(b, len, PG_E_CHECKSUM);
  b[t.off[2]] ^= 1;
  v2_reseal(b, len, -1);
  EXPECT_OPENS(b, len);
  /* an unknown kind, a bad codec parameter */
  b[t.eoff[2]] = 9;
  v2_reseal(b, len, -1);
  EXPECT_STATUS(b, len, PG_E_SECTION_KIND);
  b[t.eoff[2]] = PG_SEC_DATA;
  b[t.eoff[2] + 1] = 77;
  v2_reseal(b, len, -1);
  EXPECT_STATUS(b, len, PG_E_CODEC);
  b[t.eoff[2] + 1] = 0;
  /* section count 0; a count that is not a minimal varint */
  uint8_t save = b[12];
  b[12] = 0; /* checked before the checksum */
  EXPECT_STATUS(b, len, PG_E_LIMIT);
  b[12] = save;
  v2_reseal(b, len, -1);
  EXPECT_OPENS(b, len);
  uint8_t *nm = malloc(len + 1);
  memcpy(nm, b, 12);
  nm[12] = (uint8_t)(b[12] | 0x80);
  nm[13] = 0;
  memcpy(nm + 14, b + 13, len - 13);
  EXPECT_STATUS(nm, len + 1, PG_E_MALFORMED);
  free(nm);
  free(b);
}

/* In v2 a part's offset follows from the parts before it: a section larger than its parts has
 * trailing bytes; a smaller one cannot hold them. */
Test(v2, implied_parts_must_tile_data_sections) {
  size_t len;
  uint32_t po;
  int ps;
  uint8_t *b = v2_small(&len, &po, &ps);
  /* make the perm section (last, 8 bytes) one byte longer: its stored and raw sizes both +1 */
  v2tab t = v2_table(b);
  cr_assert_eq(t.stored[ps], 8);
  uint8_t *c = malloc(len + 1);
  memcpy(c, b, len);
  c[len] = 0;
  size_t pos = t.eoff[ps] + 6;
  cr_assert_eq(c[pos], 8);
  c[pos] = 9;
  cr_assert_eq(c[pos + 1], 8);
  c[pos + 1] = 9;
  v2_reseal(c, len + 1, ps);
  EXPECT_STATUS(c, len + 1, PG_E_TRAILING);
  /* one byte shorter */
  memcpy(c, b, len);
  c[pos] = 7;
  c[pos + 1] = 7;
  v2_reseal(c, len - 1, ps);
  EXPECT_STATUS(c, len - 1, PG_E_TABLE_RANGE);
  free(c);
  free(b);
}

/* The v2 head: 12 bytes, the count, 12..30 bytes per section, the checksum; all adds up. */
Test(v2, head_is_compact_and_sizes_add_up) {
  size_t l2;
  pg_err e;
  uint8_t *b2 = v2_small(&l2, NULL, NULL);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, b2, l2, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  const uint32_t n = pg_artifact_section_count(a);
  cr_assert_eq(n, 4);
  cr_assert_eq(pg_artifact_head_size(a), 12 + 1 + 4 * 12 + 8); /* every size below 128 */
  uint64_t sum = pg_artifact_head_size(a);
  for (uint32_t i = 0; i < n; i++) sum += pg_artifact_section(a, i)->stored_size;
  cr_assert_eq(sum, l2);
  pg_artifact_free(a);
  free(b2);
}

/* META in v2: varint lengths, also of strings inside arrays (multi-byte ones included). */
Test(v2, meta_roundtrip_with_varint_lengths) {
  pg_writer *w;
  pg_err e;
  test_writer(&w, PG_CONTAINER_V2);
  char big[300];
  memset(big, 'x', sizeof big);
  const char *strs[3] = {"a", big, "ccc"};
  big[299] = '\0';
  const int64_t iv[2] = {-5, 1ll << 40};
  const double fv[1] = {0.5};
  cr_assert_eq(pg_writer_meta_str(w, "k.big", big, 299, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_arr_str(w, "k.strs", strs, 3, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_arr_i64(w, "k.ints", iv, 2, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_arr_f64(w, "k.f", fv, 1, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_bool(w, "k.b", 1, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_i64(w, "k.i", -7, &e), PG_OK);
  int d = pg_writer_data_section(w, &NONE, &e);
  uint64_t one = 1;
  float f = 1.0f;
  pg_tensor_in t = {.name = "x", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &f,
                    .sec_values = d};
  cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK);
  uint8_t *buf;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  const pg_meta_entry *m = pg_artifact_meta_find(a, "k.big");
  cr_assert(m && m->count == 299 && !memcmp(m->str, big, 299));
  m = pg_artifact_meta_find(a, "k.strs");
  cr_assert(m && m->count == 3);
  for (uint32_t i = 0; i < 3; i++) {
    const char *s;
    uint32_t n;
    pg_meta_arr_str(m, i, &s, &n);
    cr_assert(n == strlen(strs[i]) && !memcmp(s, strs[i], n), "element %u", i);
  }
  m = pg_artifact_meta_find(a, "k.ints");
  cr_assert_eq(pg_meta_arr_i64(m, 1), 1ll << 40);
  cr_assert_eq(pg_meta_arr_f64(pg_artifact_meta_find(a, "k.f"), 0), 0.5);
  cr_assert_eq(pg_artifact_meta_find(a, "k.b")->b, 1);
  cr_assert_eq(pg_artifact_meta_find(a, "k.i")->i64, -7);
  pg_artifact_free(a);
  free(buf);
}

/* Codec 4 (qc) came with container version 2 (spec/format.md §10): a version-1 table that names
 * it is PG_E_CODEC at its codec byte, and a writer asked for version 1 refuses a qc section. */
Test(v1, qc_is_a_container_v2_codec) {
  size_t len;
  uint8_t *buf = small_artifact(&len);
  int d = section_of_kind(buf, PG_SEC_DATA);
  cr_assert_geq(d, 0);
  entry(buf, (uint32_t)d)[2] = PG_CODEC_QC; /* level, window, transform, stride are 0 already */
  reseal(buf);
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "v1.pgz", NULL, &e), PG_E_CODEC);
  cr_assert(strstr(e.msg, "container version 2") != NULL, "%s", e.msg);
  char at[64];
  snprintf(at, sizeof at, "v1.pgz: offset %llu: ",
           (unsigned long long)(entry(buf, (uint32_t)d) - buf) + 2);
  cr_assert(strncmp(e.msg, at, strlen(at)) == 0, "%s", e.msg);
  free(buf);

  const pg_codec_spec qc = {PG_CODEC_QC, 0, 0, 0, 0};
  for (int cver = PG_CONTAINER_V1; cver <= PG_CONTAINER_V2; cver++) {
    pg_writer *w;
    test_writer(&w, cver);
    int s = pg_writer_data_section(w, &qc, &e);
    cr_assert_geq(s, 0);
    uint64_t dims[2] = {3, 5};
    int8_t q[15];
    for (int i = 0; i < 15; i++) q[i] = (int8_t)(i - 7);
    uint16_t sc[3] = {0x3C00, 0x3800, 0x3400};
    pg_tensor_in t = {.name = "w", .qtype = PG_QTYPE_INT6, .scale_kind = PG_SCALE_ROW_F16,
                      .ndim = 2, .dims = dims, .values = q, .row_scales = sc, .sec_values = s,
                      .sec_scales = s};
    cr_assert_eq(pg_writer_tensor(w, &t, &e), PG_OK, "%s", e.msg);
    uint8_t *out = NULL;
    size_t n;
    int rc = pg_writer_to_mem(w, &out, &n, &e);
    if (cver == PG_CONTAINER_V1) {
      cr_assert_eq(rc, PG_E_CODEC);
      cr_assert(strstr(e.msg, "container version 2") != NULL, "%s", e.msg);
    } else {
      cr_assert_eq(rc, PG_OK, "%s", e.msg);
      cr_assert_eq(pg_artifact_open_mem(&a, out, n, "v2.pgz", NULL, &e), PG_OK, "%s", e.msg);
      int8_t back[15];
      cr_assert_eq(pg_artifact_tensor_values(a, 0, back, &e), PG_OK, "%s", e.msg);
      cr_assert_arr_eq(back, q, 15);
      pg_artifact_free(a);
    }
    free(out);
    pg_writer_free(w);
  }
}
