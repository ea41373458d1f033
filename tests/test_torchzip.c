/* test_torchzip.c: the torch.save reader (format/pg_torchzip.h) on the files
 * tests/torchzip/make_fixtures.py wrote with torch: known values read back exactly, and the
 * hostile or broken variants refused with the status and the words spec/import.md gives. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "pg_io.h"
#include "pg_torchzip.h"

static uint8_t *slurp(const char *name, size_t *len) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/torchzip/%s", root, name);
  uint8_t *b = NULL;
  pg_err err = {0};
  cr_assert_eq(pg_file_read_all(path, &b, len, 1 << 20, &err), PG_OK, "%s", err.msg);
  return b;
}

static int open_fixture(const char *name, pg_tz **z, uint8_t **buf, pg_err *err) {
  size_t len;
  *buf = slurp(name, &len);
  return pg_tz_open(z, *buf, len, name, err);
}

static const pg_tz_value *tensor(const pg_tz_value *sd, const char *key, int dtype, unsigned nd) {
  const pg_tz_value *t = pg_tz_get(sd, key);
  cr_assert_not_null(t, "no %s", key);
  cr_assert_eq(t->kind, PG_TZ_TENSOR, "%s is a %s", key, pg_tz_kind_name(t->kind));
  cr_assert_eq(t->t.dtype, dtype, "%s dtype %s", key, pg_tz_dtype_name(t->t.dtype));
  cr_assert_eq(t->t.ndim, nd, "%s ndim %u", key, t->t.ndim);
  return t;
}

static void check_plain(const char *name) {
  pg_tz *z;
  uint8_t *buf;
  pg_err err = {0};
  cr_assert_eq(open_fixture(name, &z, &buf, &err), PG_OK, "%s", err.msg);
  const pg_tz_value *root = pg_tz_root(z);
  cr_assert_eq(root->kind, PG_TZ_DICT);
  cr_assert(pg_tz_is_str(pg_tz_get(root, "tag"), "fixture_v1"));
  const pg_tz_value *sd = pg_tz_get(root, "sd");
  cr_assert_not_null(sd);
  const pg_tz_value *w = tensor(sd, "w", PG_TZ_F32, 2);
  cr_assert(w->t.dims[0] == 2 && w->t.dims[1] == 3 && w->t.numel == 6 && w->t.nbytes == 24);
  for (int i = 0; i < 6; i++) {
    float f;
    memcpy(&f, w->t.data + 4 * i, 4);
    cr_assert_eq(f, (float)i);
  }
  const pg_tz_value *h = tensor(sd, "h", PG_TZ_F16, 1);
  uint16_t hb[3];
  memcpy(hb, h->t.data, 6);
  cr_assert(hb[0] == 0x3E00 && hb[1] == 0xC000 && hb[2] == 0x7BFF); /* 1.5, -2, 65504 */
  const pg_tz_value *b = tensor(sd, "b", PG_TZ_BF16, 2);
  uint16_t bb[2];
  memcpy(bb, b->t.data, 4);
  cr_assert(bb[0] == 0x3F00 && bb[1] == 0x4040); /* 0.5, 3.0 */
  const pg_tz_value *q = tensor(sd, "q", PG_TZ_I8, 2);
  cr_assert(q->t.data[0] == 0x80 && q->t.data[2] == 127 && q->t.data[5] == 3);
  const pg_tz_value *s = tensor(sd, "s", PG_TZ_F16, 0);
  cr_assert_eq(s->t.numel, 1);
  const pg_tz_value *view = tensor(sd, "view", PG_TZ_I64, 1);
  const pg_tz_value *base = tensor(sd, "base", PG_TZ_I64, 1);
  cr_assert_eq(view->t.numel, 3);
  cr_assert_eq(view->t.data, base->t.data + 4 * 8, "a view starts at its storage offset");
  int64_t v0;
  memcpy(&v0, view->t.data, 8);
  cr_assert_eq(v0, 4);
  const pg_tz_value *m = pg_tz_get(root, "meta");
  cr_assert_eq(pg_tz_get(m, "n")->i, 3);
  cr_assert_eq(pg_tz_get(m, "neg")->i, -70000);
  cr_assert_eq(pg_tz_get(m, "big")->i, (1ll << 40) + 1);
  cr_assert_eq(pg_tz_get(m, "x")->f, 0.1);
  cr_assert(pg_tz_get(m, "t")->kind == PG_TZ_BOOL && pg_tz_get(m, "t")->i == 1);
  cr_assert(pg_tz_get(m, "f")->kind == PG_TZ_BOOL && pg_tz_get(m, "f")->i == 0);
  cr_assert_eq(pg_tz_get(m, "none")->kind, PG_TZ_NONE);
  cr_assert(pg_tz_is_str(pg_tz_get(m, "name"), "per_row"));
  const pg_tz_value *l = pg_tz_get(root, "list");
  cr_assert(l->kind == PG_TZ_LIST && l->n == 3 && l->items[2]->kind == PG_TZ_TUPLE);
  cr_assert(pg_tz_is_str(l->items[1], "two") && l->items[2]->items[1]->i == 4);
  pg_tz_free(z);
  free(buf);
}

Test(torchzip, plain_values_read_back_exactly) { check_plain("plain.pt"); }
Test(torchzip, protocol4_frames_memoize_stack_global) { check_plain("proto4.pt"); }
Test(torchzip, a_long_folder_name_is_read) { check_plain("long_folder.pt"); }
/* A long folder name and a long storage key together overflowed the storage's name buffer. */
Test(torchzip, long_folder_and_storage_key_are_read) {
  pg_tz *z;
  uint8_t *buf;
  pg_err err = {0};
  cr_assert_eq(open_fixture("long_names.pt", &z, &buf, &err), PG_OK, "%s", err.msg);
  const pg_tz_value *t = pg_tz_root(z);
  cr_assert(t->kind == PG_TZ_TENSOR && t->t.numel == 6 && t->t.dtype == PG_TZ_F32);
  float f;
  memcpy(&f, t->t.data + 20, 4);
  cr_assert_eq(f, 5.0f);
  pg_tz_free(z);
  free(buf);
}

static void refused(const char *name, int status, const char *words) {
  pg_tz *z = NULL;
  uint8_t *buf;
  pg_err err = {0};
  int rc = open_fixture(name, &z, &buf, &err);
  cr_assert_eq(rc, status, "%s: status %s, expected %s (%s)", name, pg_status_name(rc),
               pg_status_name(status), err.msg);
  cr_assert_null(z);
  cr_assert_not_null(strstr(err.msg, words), "%s: \"%s\" lacks \"%s\"", name, err.msg, words);
  cr_assert_not_null(strstr(err.msg, name), "the line names the file: %s", err.msg);
  cr_assert_null(strchr(err.msg, '\n'));
  free(buf);
}

Test(torchzip, a_global_outside_the_allow_list_is_refused) {
  refused("evil_system.pt", PG_E_UNSUPPORTED, "pickle global posix.system refused");
  refused("evil_eval.pt", PG_E_UNSUPPORTED, "pickle global builtins.eval refused");
}
Test(torchzip, broken_archives_are_refused) {
  refused("truncated.pt", PG_E_MALFORMED, "no ZIP end-of-directory record");
  refused("bad_offset.pt", PG_E_MALFORMED, "local header");
  refused("deflated.pt", PG_E_UNSUPPORTED, "is compressed (method 8)");
  refused("missing_storage.pt", PG_E_MALFORMED, "has no ZIP entry data/0");
  refused("short_storage.pt", PG_E_SIZE_MISMATCH, "storage 0: 6 float32 elements");
  refused("cycle.pt", PG_E_UNSUPPORTED, "contains itself");
  refused("deep.pt", PG_E_LIMIT, "nested deeper than 64");
  refused("noncontig.pt", PG_E_UNSUPPORTED, "non-contiguous tensor");
  refused("folder_too_long.pt", PG_E_LIMIT, "a folder name of 291 bytes (limit 290)");
}
#ifndef PG_FUZZING
Test(torchzip, a_crc_mismatch_is_refused) {
  refused("bad_crc.pt", PG_E_CHECKSUM, "CRC-32");
}
#endif

/* Every prefix of a valid archive is refused (never read past its end), with one line. */
Test(torchzip, every_truncation_is_refused) {
  size_t len;
  uint8_t *full = slurp("plain.pt", &len);
  for (size_t n = 0; n < len; n++) {
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, full, n);
    pg_tz *z = NULL;
    pg_err err = {0};
    int rc = pg_tz_open(&z, b, n, "cut.pt", &err);
    cr_assert_neq(rc, PG_OK, "a %zu-byte prefix was accepted", n);
    cr_assert_null(z);
    free(b);
  }
  free(full);
}

/* ---- hostile archives: small, valid-looking, expensive ---- */

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff), put16(p + 2, v >> 16); }

/* n directory entries over `payload` bytes of data. nested = 0: every entry is the same local
 * header "a/data.pkl" and its data (one range read n times); nested = 1: n local headers back
 * to back, entry i's data running from its header's end to the end of the data area (over all
 * later headers), each name distinct and each CRC right. Either way the checksums would read
 * about n * payload bytes from a file of about 90 * n + payload. */
static uint8_t *zip_bomb(uint32_t n, uint32_t payload, int nested, size_t *len) {
  const uint32_t nl = 10, lh = 30 + nl, nh = nested ? n : 1;
  const uint32_t area = nh * lh + payload, cd = n * (46 + nl);
  *len = (size_t)area + cd + 22;
  uint8_t *b = calloc(1, *len);
  cr_assert_not_null(b);
  for (uint32_t i = 0; i < payload; i++) b[nh * lh + i] = (uint8_t)(i * 131 + 7);
  uint32_t *crc = malloc(nh * sizeof *crc);
  cr_assert_not_null(crc);
  for (uint32_t i = 0; i < nh; i++) {
    uint8_t *l = b + (size_t)i * lh;
    put32(l, 0x04034b50u);
    put16(l + 26, nl);
    char name[16];
    snprintf(name, sizeof name, nested ? "a/e%07u" : "a/data.pkl", i);
    memcpy(l + 30, name, nl);
  }
  /* entry i's data is [i*lh + lh, area): the next header's bytes, then entry i+1's data */
  crc[nh - 1] = (uint32_t)crc32(0L, b + nh * lh, payload);
  for (uint32_t i = nh - 1; i-- > 0;) {
    const uLong h = crc32(0L, b + (size_t)(i + 1) * lh, lh);
    crc[i] = (uint32_t)crc32_combine(h, crc[i + 1], (z_off_t)(area - (i + 2) * lh));
  }
  for (uint32_t i = 0; i < n; i++) {
    const uint32_t k = nested ? i : 0, size = area - (k + 1) * lh;
    uint8_t *c = b + area + (size_t)i * (46 + nl);
    put32(c, 0x02014b50u);
    put32(c + 16, crc[k]);
    put32(c + 20, size);
    put32(c + 24, size);
    put16(c + 28, nl);
    put32(c + 42, k * lh);
    memcpy(c + 46, b + (size_t)k * lh + 30, nl);
  }
  uint8_t *e = b + area + cd;
  put32(e, 0x06054b50u);
  put16(e + 8, n);
  put16(e + 10, n);
  put32(e + 12, cd);
  put32(e + 16, area);
  free(crc);
  return b;
}

/* Entries must hold disjoint ranges, checked before any checksum is computed: before the rule,
 * both archives below read ~n * payload bytes (about 4 GB for a 10 MB file at n = 65,535). */
Test(torchzip, entries_sharing_bytes_are_refused_before_their_checksums) {
  for (int nested = 0; nested < 2; nested++) {
    size_t len;
    uint8_t *b = zip_bomb(4000, 1 << 18, nested, &len);
    pg_tz *z = NULL;
    pg_err err = {0};
    int rc = pg_tz_open(&z, b, len, "bomb.pt", &err);
    cr_assert_eq(rc, PG_E_OVERLAP, "nested %d: status %s (%s)", nested, pg_status_name(rc),
                 err.msg);
    cr_assert_null(z);
    char want[64];
    snprintf(want, sizeof want, "bomb.pt: offset %d: ZIP entries 0 and 1 overlap", nested ? 40 : 0);
    cr_assert_not_null(strstr(err.msg, want), "%s", err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
    free(b);
  }
}
