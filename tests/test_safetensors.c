/* test_safetensors.c: safetensors write→read round trips, metadata, determinism, fp32
 * conversion, and one refusal per class of malformed file (hand-built byte strings), each with
 * its specific status and a message naming the file. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_safetensors.h"
#include "pgtest.h"

/* ---- a fresh temporary folder per test ---- */

static char tmpdir[64];

static void mk_tmp(void) {
  strcpy(tmpdir, "/tmp/pgst.XXXXXX");
  cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmp(void) { pgtest_rm_rf(tmpdir); }

TestSuite(st, .init = mk_tmp, .fini = rm_tmp);
TestSuite(st_bad, .init = mk_tmp, .fini = rm_tmp);

static char *tpath(const char *name) {
  static char p[4][256];
  static int k;
  char *s = p[k++ & 3];
  snprintf(s, 256, "%s/%s", tmpdir, name);
  return s;
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* ---- hand-built files: 8-byte length, header text, buffer ---- */

static void put_raw(const char *path, uint64_t n, const void *hdr, size_t hlen, const void *buf,
                    size_t blen) {
  FILE *fp = fopen(path, "wb");
  cr_assert_not_null(fp);
  uint8_t len[8];
  pg_st64(len, n);
  cr_assert_eq(fwrite(len, 1, 8, fp), 8u);
  if (hlen) cr_assert_eq(fwrite(hdr, 1, hlen, fp), hlen);
  if (blen) cr_assert_eq(fwrite(buf, 1, blen, fp), blen);
  cr_assert_eq(fclose(fp), 0);
}

/* Write json (length taken from the text) and blen zero bytes, open it, return the status. */
static int open_json_n(const char *json, size_t jlen, size_t blen, pg_err *e, const char **path) {
  const char *p = tpath("bad.safetensors");
  uint8_t *buf = calloc(1, blen ? blen : 1);
  put_raw(p, jlen, json, jlen, buf, blen);
  free(buf);
  pg_st *st = NULL;
  pg_err_clear(e);
  int rc = pg_st_open_file(&st, p, e);
  if (rc == PG_OK) cr_assert_not_null(st);
  else cr_assert_null(st);
  pg_st_free(st);
  *path = p;
  return rc;
}

static int open_json(const char *json, size_t blen, pg_err *e, const char **path) {
  return open_json_n(json, strlen(json), blen, e, path);
}

/* The open fails with status want, and the message names the file. */
#define EXPECT_BAD(want, json, blen)                                                          \
  do {                                                                                        \
    pg_err e_;                                                                                \
    const char *p_;                                                                           \
    int rc_ = open_json((json), (blen), &e_, &p_);                                            \
    cr_assert_eq(rc_, (want), "%s: got %s (%s), want %s", (json), pg_status_name(rc_),       \
                 e_.msg, pg_status_name(want));                                               \
    cr_assert_eq(e_.status, (want));                                                          \
    cr_assert_not_null(strstr(e_.msg, p_), "message does not name the file: %s", e_.msg);    \
    cr_assert_null(strchr(e_.msg, '\n'));                                                     \
  } while (0)

#define ENTRY(name, dtype, shape, b, e) \
  "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

/* ---- round trips ---- */

static uint8_t *pattern(size_t n, uint32_t seed) {
  uint8_t *b = malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1103515245u + 12345u;
    b[i] = (uint8_t)(seed >> 23);
  }
  return b;
}

Test(st, roundtrip_every_dtype_and_shape) {
  struct {
    const char *name;
    pg_st_dtype dt;
    uint32_t rank;
    uint64_t shape[PG_ST_MAX_RANK];
  } cases[] = {
      {"w.f32", PG_ST_F32, 2, {2, 3}},
      {"w.f16", PG_ST_F16, 1, {5}},
      {"w.bf16", PG_ST_BF16, 3, {2, 1, 3}},
      {"w.f64", PG_ST_F64, 1, {3}},
      {"scalar", PG_ST_F64, 0, {0}},
      {"empty", PG_ST_F32, 2, {0, 4}},
      {"empty1", PG_ST_I64, 1, {0}},
      {"bool", PG_ST_BOOL, 1, {7}},
      {"u8", PG_ST_U8, 1, {3}},
      {"i8", PG_ST_I8, 2, {1, 1}},
      {"i16", PG_ST_I16, 1, {3}},
      {"u16", PG_ST_U16, 1, {2}},
      {"i32", PG_ST_I32, 1, {3}},
      {"u32", PG_ST_U32, 1, {1}},
      {"i64", PG_ST_I64, 1, {2}},
      {"u64", PG_ST_U64, 1, {2}},
      {"f8a", PG_ST_F8_E4M3, 1, {9}},
      {"f8b", PG_ST_F8_E5M2, 8, {1, 1, 1, 1, 1, 1, 2, 1}},
      {"\xc3\xbc.name with spaces", PG_ST_U8, 1, {1}},
  };
  const size_t nc = sizeof cases / sizeof *cases;
  uint8_t *data[sizeof cases / sizeof *cases];
  size_t nbytes[sizeof cases / sizeof *cases];
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  for (size_t i = 0; i < nc; i++) {
    uint64_t n = 1;
    for (uint32_t d = 0; d < cases[i].rank; d++) n *= cases[i].shape[d];
    nbytes[i] = (size_t)n * pg_st_dtype_size(cases[i].dt);
    data[i] = pattern(nbytes[i], (uint32_t)i + 1);
    cr_assert_eq(pg_st_writer_add(w, cases[i].name, cases[i].dt, cases[i].rank, cases[i].shape,
                                  data[i], nbytes[i], &e),
                 PG_OK, "%s: %s", cases[i].name, e.msg);
  }
  const char *p = tpath("rt.safetensors");
  cr_assert_eq(pg_st_writer_write(w, p, &e), PG_OK, "%s", e.msg);
  pg_st_writer_free(w);

  pg_st *st;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_count(st), nc);
  cr_assert_eq(pg_st_data_offset(st) % 8, 0);
  uint64_t total = 0;
  for (size_t i = 0; i < nc; i++) total += nbytes[i];
  cr_assert_eq(pg_st_data_size(st), total);
  /* in data order, which is the order added */
  uint64_t at = pg_st_data_offset(st);
  for (size_t i = 0; i < nc; i++) {
    const pg_st_tensor *t;
    cr_assert_eq(pg_st_find(&t, st, cases[i].name, &e), PG_OK, "%s", e.msg);
    cr_assert_str_eq(t->name, cases[i].name);
    cr_assert_eq(t->dtype, cases[i].dt);
    cr_assert_str_eq(t->dtype_name, pg_st_dtype_name(cases[i].dt));
    cr_assert_eq(t->rank, cases[i].rank);
    for (uint32_t d = 0; d < PG_ST_MAX_RANK; d++)
      cr_assert_eq(t->shape[d], d < t->rank ? cases[i].shape[d] : 0);
    cr_assert_eq(t->nbytes, nbytes[i]);
    cr_assert_eq(t->numel * pg_st_dtype_size(t->dtype), nbytes[i]);
    cr_assert_eq(t->offset, at, "%s", cases[i].name);
    if (nbytes[i]) cr_assert(!memcmp(t->data, data[i], nbytes[i]), "%s", cases[i].name);
    at += nbytes[i];
  }
  const pg_st_tensor *sc;
  cr_assert_eq(pg_st_find(&sc, st, "scalar", &e), PG_OK);
  cr_assert_eq(sc->numel, 1);
  cr_assert_eq(sc->nbytes, 8);
  /* pg_st_at walks data order: ascending offsets */
  for (size_t i = 1; i < nc; i++) cr_assert(pg_st_at(st, i - 1)->offset <= pg_st_at(st, i)->offset);
  cr_assert_null(pg_st_at(st, nc));
  const pg_st_tensor *none;
  cr_assert_eq(pg_st_find(&none, st, "missing", &e), PG_E_NOT_FOUND);
  cr_assert_null(none);
  cr_assert_not_null(strstr(e.msg, p));
  pg_st_free(st);
  for (size_t i = 0; i < nc; i++) free(data[i]);
}

Test(st, roundtrip_empty_file_and_memory) {
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  uint8_t *mem;
  size_t len;
  cr_assert_eq(pg_st_writer_to_mem(&mem, &len, w, &e), PG_OK);
  cr_assert_eq(len, 16);
  cr_assert(!memcmp(mem + 8, "{}      ", 8));
  pg_st *st;
  cr_assert_eq(pg_st_open_mem(&st, mem, len, "mem.st", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_count(st), 0);
  cr_assert_eq(pg_st_meta_count(st), 0);
  pg_st_free(st);
  free(mem);
  pg_st_writer_free(w);
}

Test(st, exact_bytes_sorted_compact_padded) {
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  const float one = 1.0f;
  const uint16_t h[2] = {0x3c00, 0x4000};
  uint64_t s1 = 1, s2 = 2;
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_F32, 1, &s1, &one, 4, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "a", PG_ST_F16, 1, &s2, h, 4, &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "format", "pt", &e), PG_OK);
  uint8_t *mem;
  size_t len;
  cr_assert_eq(pg_st_writer_to_mem(&mem, &len, w, &e), PG_OK);
  const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                     "\"a\":{\"data_offsets\":[4,8],\"dtype\":\"F16\",\"shape\":[2]},"
                     "\"b\":{\"data_offsets\":[0,4],\"dtype\":\"F32\",\"shape\":[1]}}";
  size_t wl = strlen(want), padded = (wl + 7) / 8 * 8;
  cr_assert_eq(pg_ld64(mem), padded);
  cr_assert_eq(len, 8 + padded + 8);
  cr_assert(!memcmp(mem + 8, want, wl), "%.*s", (int)padded, (const char *)mem + 8);
  for (size_t i = wl; i < padded; i++) cr_assert_eq(mem[8 + i], ' ');
  cr_assert(!memcmp(mem + 8 + padded, &one, 4));
  cr_assert(!memcmp(mem + 8 + padded + 4, h, 4));
  free(mem);
  pg_st_writer_free(w);
}

Test(st, metadata_roundtrip) {
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "zeta", "last", &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "format", "pt", &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "empty", "", &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "unicode \xe2\x82\xac", "quote \" and \\ and \n", &e),
               PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "format", "other", &e), PG_E_DUPLICATE);
  cr_assert_eq(pg_st_writer_set_meta(w, "bad", "\xff", &e), PG_E_UTF8);
  const char *p = tpath("meta.safetensors");
  cr_assert_eq(pg_st_writer_write(w, p, &e), PG_OK, "%s", e.msg);
  pg_st_writer_free(w);
  pg_st *st;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_meta_count(st), 4);
  const char *keys[] = {"empty", "format", "unicode \xe2\x82\xac", "zeta"};
  const char *vals[] = {"", "pt", "quote \" and \\ and \n", "last"};
  for (size_t i = 0; i < 4; i++) {
    cr_assert_str_eq(pg_st_meta_at(st, i)->key, keys[i]);
    cr_assert_str_eq(pg_st_meta_at(st, i)->value, vals[i]);
    cr_assert_str_eq(pg_st_meta_get(st, keys[i]), vals[i]);
  }
  cr_assert_null(pg_st_meta_at(st, 4));
  cr_assert_null(pg_st_meta_get(st, "nope"));
  pg_st_free(st);
}

static pg_st_writer *sample_writer(int meta_order, uint8_t **bufs) {
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  uint64_t s[2] = {3, 5};
  bufs[0] = pattern(60, 7);
  bufs[1] = pattern(30, 8);
  cr_assert_eq(pg_st_writer_add(w, "layer.1.w", PG_ST_F32, 2, s, bufs[0], 60, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "layer.0.w", PG_ST_BF16, 2, s, bufs[1], 30, &e), PG_OK);
  if (meta_order) {
    pg_st_writer_set_meta(w, "b", "2", &e);
    pg_st_writer_set_meta(w, "a", "1", &e);
  } else {
    pg_st_writer_set_meta(w, "a", "1", &e);
    pg_st_writer_set_meta(w, "b", "2", &e);
  }
  return w;
}

Test(st, deterministic_output) {
  uint8_t *b1[2], *b2[2];
  pg_st_writer *w1 = sample_writer(0, b1), *w2 = sample_writer(1, b2);
  pg_err e;
  const char *p1 = tpath("d1.safetensors"), *p2 = tpath("d2.safetensors");
  cr_assert_eq(pg_st_writer_write(w1, p1, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_writer_write(w2, p2, &e), PG_OK, "%s", e.msg);
  uint8_t *m1, *m2, *m3;
  size_t l1, l2, l3;
  cr_assert_eq(pg_file_read_all(p1, &m1, &l1, 1 << 20, &e), PG_OK);
  cr_assert_eq(pg_file_read_all(p2, &m2, &l2, 1 << 20, &e), PG_OK);
  cr_assert_eq(pg_st_writer_to_mem(&m3, &l3, w1, &e), PG_OK);
  cr_assert_eq(l1, l2);
  cr_assert_eq(l1, l3);
  cr_assert(!memcmp(m1, m2, l1));
  cr_assert(!memcmp(m1, m3, l1));
  /* writing the same writer again gives the same bytes too */
  cr_assert_eq(pg_st_writer_write(w1, p2, &e), PG_OK);
  free(m2);
  cr_assert_eq(pg_file_read_all(p2, &m2, &l2, 1 << 20, &e), PG_OK);
  cr_assert(l1 == l2 && !memcmp(m1, m2, l1));
  free(m1);
  free(m2);
  free(m3);
  pg_st_writer_free(w1);
  pg_st_writer_free(w2);
  for (int i = 0; i < 2; i++) {
    free(b1[i]);
    free(b2[i]);
  }
}

Test(st, reading_leaves_the_file_unchanged) {
  uint8_t *b[2];
  pg_st_writer *w = sample_writer(0, b);
  pg_err e;
  const char *p = tpath("ro.safetensors");
  cr_assert_eq(pg_st_writer_write(w, p, &e), PG_OK);
  uint8_t *before, *after;
  size_t lb, la;
  cr_assert_eq(pg_file_read_all(p, &before, &lb, 1 << 20, &e), PG_OK);
  chmod(p, 0444);
  pg_st *st;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_count(st), 2);
  pg_st_free(st);
  cr_assert_eq(pg_file_read_all(p, &after, &la, 1 << 20, &e), PG_OK);
  cr_assert(la == lb && !memcmp(before, after, la));
  free(before);
  free(after);
  free(b[0]);
  free(b[1]);
  pg_st_writer_free(w);
}

Test(st, to_f32_from_every_float_dtype) {
  const uint16_t f16[] = {0x3c00, 0xc000, 0x7c00, 0x0001, 0x3555};
  const uint16_t bf16[] = {0x3f80, 0x4049, 0xff80, 0x0000, 0x8000};
  const double f64[] = {0.1, -3.5, 1e300, 0.0, 65504.0};
  const float f32[] = {1.5f, -0.0f, 3.0e38f, 1e-45f, 2.0f};
  const uint8_t e4m3[] = {0x38, 0x7e, 0x01, 0xb8, 0x7f};
  const uint8_t e5m2[] = {0x3c, 0xc0, 0x7c, 0x01, 0x3d};
  uint64_t five = 5;
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "f16", PG_ST_F16, 1, &five, f16, sizeof f16, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "bf16", PG_ST_BF16, 1, &five, bf16, sizeof bf16, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "f64", PG_ST_F64, 1, &five, f64, sizeof f64, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "f32", PG_ST_F32, 1, &five, f32, sizeof f32, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "e4m3", PG_ST_F8_E4M3, 1, &five, e4m3, 5, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "e5m2", PG_ST_F8_E5M2, 1, &five, e5m2, 5, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "i32", PG_ST_I32, 1, &five, f32, sizeof f32, &e), PG_OK);
  uint8_t *mem;
  size_t len;
  cr_assert_eq(pg_st_writer_to_mem(&mem, &len, w, &e), PG_OK);
  pg_st_writer_free(w);
  pg_st *st;
  cr_assert_eq(pg_st_open_mem(&st, mem, len, "conv.st", &e), PG_OK, "%s", e.msg);
  const pg_st_tensor *t;
  float out[5];

  cr_assert_eq(pg_st_find(&t, st, "f16", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(out[0] == 1.0f && out[1] == -2.0f && isinf(out[2]) && out[2] > 0);
  cr_assert(out[3] == ldexpf(1.0f, -24));
  cr_assert(out[4] == 0x1.554p-2f);

  cr_assert_eq(pg_st_find(&t, st, "bf16", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(out[0] == 1.0f && out[1] == 3.140625f && isinf(out[2]) && out[2] < 0);
  cr_assert(out[3] == 0.0f && !signbit(out[3]) && out[4] == 0.0f && signbit(out[4]));

  cr_assert_eq(pg_st_find(&t, st, "f64", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(out[0] == 0.1f && out[1] == -3.5f && isinf(out[2]) && out[3] == 0.0f &&
            out[4] == 65504.0f);

  cr_assert_eq(pg_st_find(&t, st, "f32", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(!memcmp(out, f32, sizeof f32));

  cr_assert_eq(pg_st_find(&t, st, "e4m3", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(out[0] == 1.0f && out[1] == 448.0f && out[2] == ldexpf(1.0f, -9) && out[3] == -1.0f);
  cr_assert(isnan(out[4]));

  cr_assert_eq(pg_st_find(&t, st, "e5m2", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_OK);
  cr_assert(out[0] == 1.0f && out[1] == -2.0f && isinf(out[2]) && out[3] == ldexpf(1.0f, -16) &&
            out[4] == 1.25f);

  cr_assert_eq(pg_st_to_f32(out, 4, st, t, &e), PG_E_ARG);
  cr_assert_eq(pg_st_find(&t, st, "i32", &e), PG_OK);
  cr_assert_eq(pg_st_to_f32(out, 5, st, t, &e), PG_E_DTYPE);
  cr_assert_not_null(strstr(e.msg, "conv.st"));
  pg_st_free(st);
  free(mem);
}

Test(st, failed_write_leaves_nothing) {
  uint8_t *b[2];
  pg_st_writer *w = sample_writer(0, b);
  pg_err e;
  const char *p = tpath("missing/dir/out.safetensors");
  cr_assert_eq(pg_st_writer_write(w, p, &e), PG_E_IO);
  cr_assert_not_null(strstr(e.msg, p));
  struct stat sb;
  cr_assert_neq(stat(p, &sb), 0);
  cr_assert_eq(count_entries(tmpdir), 0);
  /* and a good write leaves exactly one file, no temporaries */
  cr_assert_eq(pg_st_writer_write(w, tpath("ok.safetensors"), &e), PG_OK);
  cr_assert_eq(count_entries(tmpdir), 1);
  pg_st_writer_free(w);
  free(b[0]);
  free(b[1]);
}

Test(st, writer_refuses_bad_tensors) {
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  uint8_t buf[64] = {0};
  uint64_t s4 = 4, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, big[2] = {1ull << 32, 1ull << 32};
  uint64_t huge = 1ull << 62, toolarge = 1ull << 63;
  cr_assert_eq(pg_st_writer_add(w, "a", PG_ST_F32, 1, &s4, buf, 16, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w, "a", PG_ST_F32, 1, &s4, buf, 16, &e), PG_E_DUPLICATE);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_F32, 1, &s4, buf, 15, &e), PG_E_SIZE_MISMATCH);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_F32, 1, &s4, buf, 17, &e), PG_E_SIZE_MISMATCH);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_U8, 9, s9, buf, 1, &e), PG_E_LIMIT);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_U8, 2, big, buf, 1, &e), PG_E_DIMS_OVERFLOW);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_F64, 1, &huge, buf, 1, &e), PG_E_DIMS_OVERFLOW);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_U8, 1, &toolarge, buf, 1, &e), PG_E_LIMIT);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_DTYPE_COUNT, 1, &s4, buf, 4, &e), PG_E_DTYPE);
  cr_assert_eq(pg_st_writer_add(w, "", PG_ST_U8, 1, &s4, buf, 4, &e), PG_E_ARG);
  cr_assert_eq(pg_st_writer_add(w, "__metadata__", PG_ST_U8, 1, &s4, buf, 4, &e), PG_E_ARG);
  cr_assert_eq(pg_st_writer_add(w, "\xc0\x80", PG_ST_U8, 1, &s4, buf, 4, &e), PG_E_UTF8);
  cr_assert_eq(pg_st_writer_add(w, "b", PG_ST_U8, 1, &s4, NULL, 4, &e), PG_E_ARG);
  char name[PG_ST_MAX_NAME + 2];
  memset(name, 'n', sizeof name);
  name[PG_ST_MAX_NAME + 1] = 0;
  cr_assert_eq(pg_st_writer_add(w, name, PG_ST_U8, 1, &s4, buf, 4, &e), PG_E_LIMIT);
  name[PG_ST_MAX_NAME] = 0;
  cr_assert_eq(pg_st_writer_add(w, name, PG_ST_U8, 1, &s4, buf, 4, &e), PG_OK);
  /* the refusals left the writer usable: it holds "a" and the 1024-byte name */
  uint8_t *mem;
  size_t len;
  cr_assert_eq(pg_st_writer_to_mem(&mem, &len, w, &e), PG_OK);
  pg_st *st;
  cr_assert_eq(pg_st_open_mem(&st, mem, len, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_count(st), 2);
  pg_st_free(st);
  free(mem);
  pg_st_writer_free(w);
}

Test(st, dtype_names) {
  pg_st_dtype d;
  const char *names[] = {"BOOL", "U8",  "I8",  "F8_E4M3", "F8_E5M2", "I16", "U16", "F16",
                         "BF16", "I32", "U32", "F32",     "F64",     "I64", "U64"};
  const size_t sizes[] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
  for (int i = 0; i < PG_ST_DTYPE_COUNT; i++) {
    cr_assert_eq(pg_st_dtype_parse(&d, names[i], NULL), PG_OK, "%s", names[i]);
    cr_assert_eq((int)d, i);
    cr_assert_str_eq(pg_st_dtype_name(d), names[i]);
    cr_assert_eq(pg_st_dtype_size(d), sizes[i]);
  }
  cr_assert_eq(pg_st_dtype_parse(&d, "f32", NULL), PG_E_DTYPE);
  cr_assert_null(pg_st_dtype_name(PG_ST_DTYPE_COUNT));
  cr_assert_eq(pg_st_dtype_size(PG_ST_DTYPE_COUNT), 0);
}

Test(st, trailing_whitespace_after_header_is_allowed) {
  pg_err e;
  const char *p;
  cr_assert_eq(open_json("{}      ", 0, &e, &p), PG_OK, "%s", e.msg);
  cr_assert_eq(open_json("{" ENTRY("a", "U8", "[2]", 0, 2) "} \n\t", 2, &e, &p), PG_OK, "%s",
               e.msg);
  cr_assert_eq(open_json("{\"__metadata__\":{}}", 0, &e, &p), PG_OK, "%s", e.msg);
}

/* ---- the length prefix ---- */

Test(st_bad, shorter_than_8_bytes) {
  const char *p = tpath("short.safetensors");
  FILE *fp = fopen(p, "wb");
  fwrite("\x02\0\0\0\0", 1, 5, fp);
  fclose(fp);
  pg_st *st;
  pg_err e;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_TRUNCATED);
  cr_assert_not_null(strstr(e.msg, p));
  cr_assert_not_null(strstr(e.msg, "offset 0"));
  fp = fopen(p, "wb");
  fclose(fp);
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_TRUNCATED);
  cr_assert_not_null(strstr(e.msg, p));
  cr_assert_eq(pg_st_open_mem(&st, NULL, 0, "nothing", &e), PG_E_TRUNCATED);
  cr_assert_not_null(strstr(e.msg, "nothing"));
}

Test(st_bad, header_length_beyond_file) {
  const char *p = tpath("t.safetensors");
  put_raw(p, 100, "{}", 2, NULL, 0);
  pg_st *st;
  pg_err e;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_TRUNCATED);
  cr_assert_not_null(strstr(e.msg, p));
}

Test(st_bad, header_length_above_cap) {
  const char *p = tpath("t.safetensors");
  put_raw(p, PG_ST_MAX_HEADER + 1ull, "{}", 2, NULL, 0);
  pg_st *st;
  pg_err e;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_LIMIT);
  cr_assert_not_null(strstr(e.msg, p));
}

Test(st_bad, header_length_overflow) {
  const char *p = tpath("t.safetensors");
  pg_st *st;
  pg_err e;
  put_raw(p, UINT64_MAX, "{}", 2, NULL, 0);
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_LIMIT);
  cr_assert_not_null(strstr(e.msg, p));
  put_raw(p, UINT64_MAX - 7, "{}", 2, NULL, 0);
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_E_LIMIT);
  cr_assert_not_null(strstr(e.msg, p));
}

/* ---- the header text ---- */

Test(st_bad, header_not_utf8) {
  EXPECT_BAD(PG_E_UTF8, "{\"a\xff\":0}", 0);
  EXPECT_BAD(PG_E_UTF8, "{\"\xed\xa0\x80\":0}", 0);   /* surrogate */
  EXPECT_BAD(PG_E_UTF8, "{\"\xc0\xaf\":0}", 0);       /* overlong */
  pg_err e;
  const char *p;
  open_json("{\"ab\xff\":0}", 0, &e, &p);
  cr_assert_not_null(strstr(e.msg, "offset 12"), "%s", e.msg); /* 8 + 4 */
}

Test(st_bad, header_not_json) {
  EXPECT_BAD(PG_E_JSON, "{\"a\":", 0);
  EXPECT_BAD(PG_E_JSON, "{\"a\" 1}", 0);
  EXPECT_BAD(PG_E_JSON, "{} x", 0);
  EXPECT_BAD(PG_E_JSON,
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}",
             1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":\"\\ud800\"}", 0); /* lone surrogate escape */
  pg_err e;
  const char *p;
  cr_assert_eq(open_json("{\"abc\":}", 0, &e, &p), PG_E_JSON);
  /* the parser's position: 8 + just past the offending '}' */
  cr_assert_not_null(strstr(e.msg, "offset 16"), "%s", e.msg);
  /* a NUL byte inside the header */
  cr_assert_eq(open_json_n("{\"a\0\":0}", 8, 0, &e, &p), PG_E_JSON, "%s", e.msg);
  cr_assert_not_null(strstr(e.msg, p));
}

Test(st_bad, header_not_an_object) {
  EXPECT_BAD(PG_E_JSON, "[]", 0);
  EXPECT_BAD(PG_E_JSON, "[{}]", 0);
  EXPECT_BAD(PG_E_JSON, "\"x\"", 0);
  EXPECT_BAD(PG_E_JSON, " {}", 0); /* must start with '{' */
  EXPECT_BAD(PG_E_JSON, "\n{}", 0);
  EXPECT_BAD(PG_E_JSON, "", 0); /* N == 0 */
}

/* ---- entries ---- */

Test(st_bad, entry_not_an_object) {
  EXPECT_BAD(PG_E_JSON, "{\"a\":5}", 0);
  EXPECT_BAD(PG_E_JSON, "{\"a\":[\"U8\",[1],[0,1]]}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":null}", 0);
}

Test(st_bad, entry_missing_field) {
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{}}", 0);
}

Test(st_bad, entry_extra_field) {
  EXPECT_BAD(PG_E_JSON,
             "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1);
}

Test(st_bad, entry_wrong_json_types) {
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":8,\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[\"1\"],\"data_offsets\":[0,1]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":\"0,1\"}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,true]}}", 1);
  EXPECT_BAD(PG_E_JSON, "{\"a\":{\"dtype\":\"U8\",\"shape\":null,\"data_offsets\":[0,1]}}", 1);
}

Test(st_bad, dtype_unknown) {
  EXPECT_BAD(PG_E_DTYPE, "{" ENTRY("a", "F128", "[1]", 0, 16) "}", 16);
  EXPECT_BAD(PG_E_DTYPE, "{" ENTRY("a", "f32", "[1]", 0, 4) "}", 4);
  EXPECT_BAD(PG_E_DTYPE, "{" ENTRY("a", "", "[1]", 0, 4) "}", 4);
}

Test(st_bad, shape_entries_negative_or_not_integers) {
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[-1]", 0, 0) "}", 0);
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[2.0]", 0, 2) "}", 2);
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[1e1]", 0, 10) "}", 10);
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[[1]]", 0, 1) "}", 1);
}

Test(st_bad, offsets_negative_or_not_integers) {
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[1]", -1, 0) "}", 1);
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[1]", 0.0, 1) "}", 1);
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("a", "U8", "[1]", 0, 1.0) "}", 1);
}

Test(st_bad, rank_above_limit) {
  EXPECT_BAD(PG_E_LIMIT, "{" ENTRY("a", "U8", "[1,1,1,1,1,1,1,1,1]", 0, 1) "}", 1);
  pg_err e;
  const char *p;
  cr_assert_eq(open_json("{" ENTRY("a", "U8", "[1,1,1,1,1,1,1,1]", 0, 1) "}", 1, &e, &p), PG_OK,
               "%s", e.msg);
}

Test(st_bad, element_count_overflow) {
  EXPECT_BAD(PG_E_DIMS_OVERFLOW, "{" ENTRY("a", "U8", "[4294967296,4294967296]", 0, 0) "}", 0);
  EXPECT_BAD(PG_E_DIMS_OVERFLOW,
             "{" ENTRY("a", "U8", "[3,3,3,3,3,3,3,9223372036854775807]", 0, 0) "}", 0);
  /* numel fits, numel * 8 does not */
  EXPECT_BAD(PG_E_DIMS_OVERFLOW, "{" ENTRY("a", "F64", "[4611686018427387904]", 0, 0) "}", 0);
  /* a zero dimension makes the product 0 however large the others are */
  pg_err e;
  const char *p;
  cr_assert_eq(open_json("{" ENTRY("a", "F64", "[9223372036854775807,0,9223372036854775807]", 0,
                                   0) "}",
                         0, &e, &p),
               PG_OK, "%s", e.msg);
}

Test(st_bad, end_before_begin) {
  EXPECT_BAD(PG_E_SIZE_MISMATCH, "{" ENTRY("a", "U8", "[0]", 4, 2) "}", 4);
}

Test(st_bad, span_disagrees_with_shape) {
  EXPECT_BAD(PG_E_SIZE_MISMATCH, "{" ENTRY("a", "F32", "[2]", 0, 4) "}", 4);
  EXPECT_BAD(PG_E_SIZE_MISMATCH, "{" ENTRY("a", "F32", "[2]", 0, 12) "}", 12);
  EXPECT_BAD(PG_E_SIZE_MISMATCH, "{" ENTRY("a", "F32", "[]", 0, 0) "}", 0); /* scalar is 4 */
}

Test(st_bad, data_beyond_buffer) {
  EXPECT_BAD(PG_E_TRUNCATED, "{" ENTRY("a", "F32", "[2]", 0, 8) "}", 7);
  EXPECT_BAD(PG_E_TRUNCATED, "{" ENTRY("a", "U8", "[0]", 9, 9) "}", 8);
}

Test(st_bad, duplicate_names) {
  EXPECT_BAD(PG_E_DUPLICATE,
             "{" ENTRY("a", "U8", "[1]", 0, 1) "," ENTRY("a", "U8", "[1]", 1, 2) "}", 2);
  EXPECT_BAD(PG_E_DUPLICATE,
             "{" ENTRY("a", "U8", "[1]", 0, 1) "," ENTRY("\\u0061", "U8", "[1]", 1, 2) "}", 2);
  EXPECT_BAD(PG_E_DUPLICATE, "{\"__metadata__\":{},\"__metadata__\":{}}", 0);
  EXPECT_BAD(PG_E_DUPLICATE, "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0);
  EXPECT_BAD(PG_E_DUPLICATE,
             "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
}

Test(st_bad, empty_name) {
  EXPECT_BAD(PG_E_JSON, "{" ENTRY("", "U8", "[1]", 0, 1) "}", 1);
}

Test(st_bad, name_too_long) {
  char json[4096], name[PG_ST_MAX_NAME + 2];
  memset(name, 'x', sizeof name);
  name[PG_ST_MAX_NAME + 1] = 0;
  snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
           name);
  EXPECT_BAD(PG_E_LIMIT, json, 1);
  name[PG_ST_MAX_NAME] = 0;
  snprintf(json, sizeof json, "{\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
           name);
  pg_err e;
  const char *p;
  cr_assert_eq(open_json(json, 1, &e, &p), PG_OK, "%s", e.msg);
}

/* ---- coverage of the buffer ---- */

Test(st_bad, hole_between_tensors) {
  EXPECT_BAD(PG_E_HOLE, "{" ENTRY("a", "U8", "[2]", 0, 2) "," ENTRY("b", "U8", "[2]", 3, 5) "}", 5);
  EXPECT_BAD(PG_E_HOLE, "{" ENTRY("a", "U8", "[2]", 1, 3) "}", 3); /* not starting at 0 */
  pg_err e;
  const char *p;
  open_json("{" ENTRY("a", "U8", "[2]", 0, 2) "," ENTRY("b", "U8", "[2]", 3, 5) "}", 5, &e, &p);
  /* the hole starts at buffer byte 2: file offset 8 + N + 2 */
  char want[64];
  size_t n = strlen("{" ENTRY("a", "U8", "[2]", 0, 2) "," ENTRY("b", "U8", "[2]", 3, 5) "}");
  snprintf(want, sizeof want, "offset %zu:", 8 + n + 2);
  cr_assert_not_null(strstr(e.msg, want), "%s", e.msg);
}

Test(st_bad, overlapping_tensors) {
  EXPECT_BAD(PG_E_OVERLAP, "{" ENTRY("a", "U8", "[3]", 0, 3) "," ENTRY("b", "U8", "[2]", 2, 4) "}",
             4);
  EXPECT_BAD(PG_E_OVERLAP, "{" ENTRY("a", "U8", "[2]", 0, 2) "," ENTRY("b", "U8", "[2]", 0, 2) "}",
             2);
  /* an empty tensor inside another one */
  EXPECT_BAD(PG_E_OVERLAP, "{" ENTRY("a", "U8", "[4]", 0, 4) "," ENTRY("b", "U8", "[0]", 2, 2) "}",
             4);
  /* empty tensors at a boundary are fine, in any header order */
  pg_err e;
  const char *p;
  cr_assert_eq(open_json("{" ENTRY("z", "U8", "[0]", 4, 4) "," ENTRY("b", "U8", "[2]", 2, 4) ","
                         ENTRY("e", "U8", "[0]", 0, 0) "," ENTRY("a", "U8", "[2]", 0, 2) ","
                         ENTRY("m", "U8", "[0]", 2, 2) "}",
                         4, &e, &p),
               PG_OK, "%s", e.msg);
}

Test(st_bad, trailing_buffer_bytes) {
  EXPECT_BAD(PG_E_TRAILING, "{" ENTRY("a", "U8", "[2]", 0, 2) "}", 3);
  EXPECT_BAD(PG_E_TRAILING, "{}", 1);
  EXPECT_BAD(PG_E_TRAILING, "{\"__metadata__\":{\"a\":\"b\"}}", 8);
}

/* ---- metadata ---- */

Test(st_bad, metadata_wrong_type) {
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":{\"a\":1}}", 0);
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0);
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":{\"a\":null}}", 0);
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":[\"a\",\"b\"]}", 0);
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":\"x\"}", 0);
  EXPECT_BAD(PG_E_META_TYPE, "{\"__metadata__\":null}", 0);
}

/* ---- where an entry fault is reported ---- */

Test(st_bad, entry_fault_names_the_entry_offset) {
  const char *json = "{" ENTRY("a", "U8", "[1]", 0, 1) ",  \"b\" : {\"dtype\":\"Q\",\"shape\":[1],"
                     "\"data_offsets\":[1,2]}}";
  pg_err e;
  const char *p;
  cr_assert_eq(open_json(json, 2, &e, &p), PG_E_DTYPE);
  size_t at = (size_t)(strstr(json, "{\"dtype\":\"Q\"") - json);
  char want[64];
  snprintf(want, sizeof want, "%s: offset %zu:", p, 8 + at);
  cr_assert_not_null(strstr(e.msg, want), "%s (want %s)", e.msg, want);
  cr_assert_not_null(strstr(e.msg, "'b'"), "%s", e.msg);
}

/* ---- the tensor limit ---- */

Test(st_bad, too_many_tensors) {
  /* PG_ST_MAX_TENSORS + 1 members; the count is checked before the entries are */
  size_t n = PG_ST_MAX_TENSORS + 1, cap = n * 16 + 16, len = 0;
  char *json = malloc(cap);
  json[len++] = '{';
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(json + len, cap - len, "%s\"%zx\":0", i ? "," : "", i);
  json[len++] = '}';
  json[len] = 0;
  EXPECT_BAD(PG_E_LIMIT, json, 0);
  free(json);
}

/* Data made while writing: the same bytes as data given up front, one tensor's buffer at a
 * time; a fill that fails fails the write and leaves nothing. */
static int fill_ramp(void *ctx, void *dst, size_t nbytes, pg_err *err) {
  const int *fail = ctx;
  if (*fail) return pg_err_set(err, PG_E_CHECKSUM, "src", PG_NO_OFFSET, "fill failed");
  for (size_t i = 0; i < nbytes; i++) ((uint8_t *)dst)[i] = (uint8_t)(i * 3);
  return PG_OK;
}

Test(st, fill_on_demand_matches_data_up_front) {
  uint8_t ramp[24];
  for (size_t i = 0; i < sizeof ramp; i++) ramp[i] = (uint8_t)(i * 3);
  const uint64_t shape[2] = {2, 3};
  pg_st_writer *w1, *w2;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w1, &e), PG_OK);
  cr_assert_eq(pg_st_writer_create(&w2, &e), PG_OK);
  int fail = 0;
  cr_assert_eq(pg_st_writer_add(w1, "a", PG_ST_F32, 2, shape, ramp, 24, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add(w1, "b", PG_ST_F32, 2, shape, ramp, 24, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add_fill(w2, "a", PG_ST_F32, 2, shape, 24, fill_ramp, &fail, &e),
               PG_OK);
  cr_assert_eq(pg_st_writer_add(w2, "b", PG_ST_F32, 2, shape, ramp, 24, &e), PG_OK);
  cr_assert_eq(pg_st_writer_add_fill(w2, "c", PG_ST_F32, 2, shape, 20, fill_ramp, &fail, &e),
               PG_E_SIZE_MISMATCH);
  uint8_t *m1, *m2;
  size_t l1, l2;
  cr_assert_eq(pg_st_writer_to_mem(&m1, &l1, w1, &e), PG_OK);
  cr_assert_eq(pg_st_writer_to_mem(&m2, &l2, w2, &e), PG_OK, "%s", e.msg);
  cr_assert(l1 == l2 && !memcmp(m1, m2, l1));
  cr_assert_eq(pg_st_writer_write(w2, tpath("f.safetensors"), &e), PG_OK, "%s", e.msg);
  uint8_t *f;
  size_t fl;
  cr_assert_eq(pg_file_read_all(tpath("f.safetensors"), &f, &fl, 1 << 20, &e), PG_OK);
  cr_assert(fl == l1 && !memcmp(f, m1, fl));
  fail = 1;
  cr_assert_eq(pg_st_writer_write(w2, tpath("g.safetensors"), &e), PG_E_CHECKSUM);
  cr_assert_eq(count_entries(tmpdir), 1);
  free(f);
  free(m1);
  free(m2);
  pg_st_writer_free(w1);
  pg_st_writer_free(w2);
}

/* The reader holds a private copy: a file truncated after the open reads as it was (a mapping
 * died with SIGBUS on the first access past the new end). */
Test(st, file_truncated_after_open_reads_as_opened) {
  uint8_t *b[2];
  pg_st_writer *w = sample_writer(0, b);
  pg_err e;
  const char *p = tpath("cut.safetensors");
  cr_assert_eq(pg_st_writer_write(w, p, &e), PG_OK);
  pg_st *st;
  cr_assert_eq(pg_st_open_file(&st, p, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(truncate(p, 0), 0);
  const pg_st_tensor *t;
  cr_assert_eq(pg_st_find(&t, st, "layer.1.w", &e), PG_OK);
  float f[15];
  cr_assert_eq(pg_st_to_f32(f, 15, st, t, &e), PG_OK, "%s", e.msg);
  cr_assert(!memcmp(t->data, b[0], 60));
  pg_st_free(st);
  free(b[0]);
  free(b[1]);
  pg_st_writer_free(w);
}

/* ---- hostile headers: small text, a large JSON tree ---- */

/* head, then `unit` n times (the last without its trailing comma), then tail. */
static char *repeat_json(const char *head, const char *unit, size_t n, const char *tail) {
  const size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
  char *s = malloc(hl + n * ul + tl + 1);
  cr_assert_not_null(s);
  size_t k = 0;
  memcpy(s + k, head, hl), k += hl;
  for (size_t i = 0; i < n; i++) memcpy(s + k, unit, ul), k += ul;
  if (n && unit[ul - 1] == ',') k--;
  memcpy(s + k, tail, tl + 1);
  return s;
}

/* The shape of a header is checked before the parser builds its tree (spec/safetensors.md rule
 * 6a): before, each of these 1 to 3 MB headers made jansson build about a million values (an
 * empty array ~130 bytes, an object ~230: 100 MB of "[]," took 4.5 GB and 16 s, of "{}," 7.5 GB
 * and 23 s) before a later rule refused it. Now each is refused from the text alone, naming the
 * container at fault. */
static void expect_shape_fault(const char *json, int status, size_t at, const char *words) {
  pg_err e;
  const char *p;
  int rc = open_json_n(json, strlen(json), 0, &e, &p);
  cr_assert_eq(rc, status, "got %s (%s), want %s", pg_status_name(rc), e.msg,
               pg_status_name(status));
  char want[512];
  snprintf(want, sizeof want, "%s: offset %zu: %s", p, 8 + at, words);
  cr_assert_not_null(strstr(e.msg, want), "\"%s\" lacks \"%s\"", e.msg, want);
  cr_assert_null(strchr(e.msg, '\n'));
}

Test(st_bad, a_header_shaped_to_build_a_huge_tree_is_refused_from_its_text) {
  char *j = repeat_json("{\"__metadata__\":{\"x\":[", "[],", 1000000, "]}}");
  expect_shape_fault(j, PG_E_META_TYPE, 21, "__metadata__ holds an array or object");
  free(j);
  j = repeat_json("{\"a\":{\"dtype\":[", "{},", 1000000, "]}}");
  expect_shape_fault(j, PG_E_JSON, 15, "an array or object inside an array");
  free(j);
  j = repeat_json("{\"a\":{\"dtype\":\"U8\",\"shape\":[", "0,", 1000000,
                  "],\"data_offsets\":[0,0]}}");
  expect_shape_fault(j, PG_E_LIMIT, 27, "an array of more than 8 values");
  free(j);
  j = repeat_json("{\"a\":[", "0,", 1000000, "]}");
  expect_shape_fault(j, PG_E_LIMIT, 5, "an array of more than 8 values");
  free(j);
  j = repeat_json("{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"x\":{",
                  "\"\":[],", 1, "}}}");
  expect_shape_fault(j, PG_E_JSON, 5, "a tensor entry with more than 3 members");
  free(j);
  j = repeat_json("{\"a\":{\"dtype\":\"U8\",\"b\":{", "\"\":[],", 1, "}}}");
  expect_shape_fault(j, PG_E_JSON, 23, "an object inside a tensor entry");
  free(j);
  /* many distinct keys in one entry: before, each became a pair and a value */
  size_t n = 300000, cap = n * 16 + 64, len = 0;
  char *k = malloc(cap);
  cr_assert_not_null(k);
  len += (size_t)snprintf(k, cap, "{\"a\":{");
  for (size_t i = 0; i < n; i++) len += (size_t)snprintf(k + len, cap - len, "%s\"%zx\":[]",
                                                         i ? "," : "", i);
  snprintf(k + len, cap - len, "}}");
  expect_shape_fault(k, PG_E_JSON, 5, "a tensor entry with more than 3 members");
  free(k);
}

Test(st_bad, more_metadata_pairs_than_the_limit) {
  size_t n = PG_ST_MAX_META + 1, cap = n * 16 + 64, len = 0;
  char *j = malloc(cap);
  cr_assert_not_null(j);
  len += (size_t)snprintf(j, cap, "{\"__metadata__\":{");
  for (size_t i = 0; i < n; i++) len += (size_t)snprintf(j + len, cap - len, "%s\"%zx\":\"\"",
                                                         i ? "," : "", i);
  snprintf(j + len, cap - len, "}}");
  expect_shape_fault(j, PG_E_LIMIT, 16, "__metadata__ has more than 65536 entries");
  free(j);
  /* the limit itself is fine, and the writer keeps to it */
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  char key[16];
  for (uint32_t i = 0; i < PG_ST_MAX_META; i++) {
    snprintf(key, sizeof key, "%x", i);
    cr_assert_eq(pg_st_writer_set_meta(w, key, "", &e), PG_OK, "%s", e.msg);
  }
  uint8_t *buf;
  size_t blen;
  cr_assert_eq(pg_st_writer_to_mem(&buf, &blen, w, &e), PG_OK, "%s", e.msg);
  pg_st *st;
  cr_assert_eq(pg_st_open_mem(&st, buf, blen, "meta.safetensors", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_meta_count(st), PG_ST_MAX_META);
  pg_st_free(st);
  free(buf);
  cr_assert_eq(pg_st_writer_set_meta(w, "one-more", "", &e), PG_E_LIMIT);
  pg_st_writer_free(w);
}
