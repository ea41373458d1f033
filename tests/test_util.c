/* test_util.c: status messages, one-line errors, atomic writes, fp16/bf16 conversion, packing. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "pg_half.h"
#include "pg_io.h"
#include "pg_json.h"
#include "pg_qtype.h"
#include "pg_status.h"
#include "pg_text.h"
#include "pgfiller.h"
#include "pgtest.h"

Test(status, names_and_messages) {
  cr_assert_str_eq(pg_status_name(PG_E_TRUNCATED), "PG_E_TRUNCATED");
  cr_assert_str_eq(pg_status_message(PG_OK), "ok");
  cr_assert_str_eq(pg_status_message(9999), "unknown status");
}

Test(status, one_line_error_names_file_and_offset) {
  pg_err e;
  int rc = pg_err_set(&e, PG_E_CHECKSUM, "a\nb.pgz", 42, "bad %s", "thing\n");
  cr_assert_eq(rc, PG_E_CHECKSUM);
  cr_assert_eq(e.status, PG_E_CHECKSUM);
  cr_assert_str_eq(e.msg, "a\\x0ab.pgz: offset 42: bad thing\\x0a");
  pg_err_set(&e, PG_E_IO, NULL, PG_NO_OFFSET, NULL);
  cr_assert_str_eq(e.msg, "input/output error");
}

/* An error line is the display form of everything in it: no byte of a name reaches the terminal
 * as a control (ESC, BEL, CR, C1) or as invalid UTF-8; printable UTF-8 is kept. */
Test(status, error_lines_escape_terminal_controls_and_invalid_utf8) {
  pg_err e;
  pg_err_set(&e, PG_E_MAGIC, "\x1b[2Jx\r\x07.pgz", PG_NO_OFFSET, "name '%s'",
             "caf\xc3\xa9 \xff\xc2\x9b\xe2\x80\xae" "evil");
  cr_assert_str_eq(e.msg, "\\x1b[2Jx\\x0d\\x07.pgz: name 'caf\xc3\xa9 \\xff\\u009b\\u202eevil'");
  /* the display form is idempotent: a message quoting another one is not escaped twice */
  pg_err f;
  pg_err_set(&f, PG_E_IO, NULL, PG_NO_OFFSET, "%s", e.msg);
  cr_assert_str_eq(f.msg, e.msg);
  /* a long name cut at the line's end never leaves half an escape or half a character */
  char big[2000];
  for (int i = 0; i < 1999; i++) big[i] = i % 3 == 0 ? '\n' : i % 3 == 1 ? '\xc3' : '\xa9';
  big[1999] = 0;
  pg_err_set(&e, PG_E_IO, big, PG_NO_OFFSET, "x");
  size_t n = strlen(e.msg);
  cr_assert_lt(n, sizeof e.msg);
  cr_assert(pg_text_is_plain(e.msg, n));
  cr_assert(n >= 4 && (memcmp(e.msg + n - 4, "\\x0a", 4) == 0 ||
                       memcmp(e.msg + n - 2, "\xc3\xa9", 2) == 0),
            "%s", e.msg + n - 8);
}

Test(text, display_form) {
  char b[64];
  cr_assert_eq(pg_escape(b, sizeof b, "a\0b\x7f", 4), 10);
  cr_assert_str_eq(b, "a\\x00b\\x7f");
  /* overlong, surrogate, truncated sequences: each byte escaped */
  pg_escape(b, sizeof b, "\xc0\xaf\xed\xa0\x80\xe2\x82", 7);
  cr_assert_str_eq(b, "\\xc0\\xaf\\xed\\xa0\\x80\\xe2\\x82");
  /* printable multibyte kept, bidi isolates and the line separator escaped */
  pg_escape(b, sizeof b, "\xe2\x96\x81\xe2\x81\xa6\xe2\x80\xa8", 9);
  cr_assert_str_eq(b, "\xe2\x96\x81\\u2066\\u2028");
  /* measuring, and cutting without splitting an escape */
  cr_assert_eq(pg_escape(NULL, 0, "\n\n", 2), 8);
  cr_assert_eq(pg_escape(b, 7, "\n\n", 2), 4);
  cr_assert_str_eq(b, "\\x0a");
  cr_assert(pg_text_is_plain("caf\xc3\xa9", 5));
  cr_assert(!pg_text_is_plain("a\tb", 3));
}

Test(text, lossless_json) {
  json_t *s = pg_json_text("caf\xc3\xa9\n", 6);
  cr_assert(json_is_string(s));
  cr_assert_eq(json_string_length(s), 6);
  json_decref(s);
  json_t *o = pg_json_text("a\xff\n", 3);
  cr_assert(json_is_object(o));
  cr_assert_str_eq(json_string_value(json_object_get(o, "hex")), "61ff0a");
  cr_assert_str_eq(json_string_value(json_object_get(o, "display")), "a\\xff\\x0a");
  json_decref(o);
  cr_assert(json_is_null(pg_json_cstr(NULL)));
  json_t *v[4] = {pg_json_num(NAN), pg_json_num(INFINITY), pg_json_num(-INFINITY),
                  pg_json_num(0.5)};
  cr_assert_str_eq(json_string_value(v[0]), "NaN");
  cr_assert_str_eq(json_string_value(v[1]), "Infinity");
  cr_assert_str_eq(json_string_value(v[2]), "-Infinity");
  cr_assert_eq(json_real_value(v[3]), 0.5);
  for (int i = 0; i < 4; i++) json_decref(v[i]);
}

static char tmpdir[64];
static void mk_tmp(void) { pgtest_mkdtemp(tmpdir, "pgtest"); }
static void rm_tmp(void) { pgtest_rm_rf(tmpdir); }
TestSuite(io, .fini = rm_tmp);
static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)))
    if (de->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

Test(io, atomic_write_and_read_back) {
  mk_tmp();
  char path[128];
  snprintf(path, sizeof path, "%s/out.bin", tmpdir);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, "hello", 5, &e), PG_OK);
  uint8_t *buf;
  size_t n;
  cr_assert_eq(pg_file_read_all(path, &buf, &n, 1 << 20, &e), PG_OK);
  cr_assert_eq(n, 5);
  cr_assert(!memcmp(buf, "hello", 5));
  free(buf);
  cr_assert_eq(pg_file_read_all(path, &buf, &n, 4, &e), PG_E_LIMIT);
  cr_assert_eq(count_entries(tmpdir), 1);
}

Test(io, aborted_write_leaves_nothing) {
  mk_tmp();
  char path[128];
  snprintf(path, sizeof path, "%s/out.bin", tmpdir);
  pg_out o;
  pg_err e;
  cr_assert_eq(pg_out_begin(&o, path, &e), PG_OK);
  cr_assert_eq(pg_out_write(&o, "abc", 3, &e), PG_OK);
  pg_out_abort(&o);
  cr_assert_eq(count_entries(tmpdir), 0);
  /* a write into a missing folder fails cleanly */
  snprintf(path, sizeof path, "%s/missing/out.bin", tmpdir);
  cr_assert_eq(pg_file_write_atomic(path, "x", 1, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "missing/out.bin") != NULL);
}

Test(io, missing_file_is_not_found) {
  pg_err e;
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all("/nonexistent/file", &b, &n, 10, &e), PG_E_NOT_FOUND);
  cr_assert(strstr(e.msg, "/nonexistent/file") != NULL);
}

Test(half, f16_known_values) {
  cr_assert_eq(pg_f32_to_f16(1.0f), 0x3c00);
  cr_assert_eq(pg_f32_to_f16(-2.0f), 0xc000);
  cr_assert_eq(pg_f32_to_f16(65504.0f), 0x7bff);
  cr_assert_eq(pg_f32_to_f16(65520.0f), 0x7c00);     /* rounds up to inf */
  cr_assert_eq(pg_f32_to_f16(65519.99f), 0x7bff);
  cr_assert_eq(pg_f32_to_f16(5.9604645e-08f), 0x0001); /* smallest subnormal */
  cr_assert_eq(pg_f32_to_f16(2.9802322e-08f), 0x0000); /* half of it: tie to even -> 0 */
  cr_assert_eq(pg_f32_to_f16(8.940697e-08f), 0x0002);  /* 1.5 ulp: tie to even -> 2 */
  cr_assert_eq(pg_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
  cr_assert_eq(pg_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
  cr_assert(isnan(pg_f16_to_f32(pg_f32_to_f16(NAN))));
  cr_assert_eq(pg_f16_to_f32(0x0001), 5.9604644775390625e-08f);
  cr_assert_eq(pg_f16_to_f32(0xfbff), -65504.0f);
}

Test(half, f16_roundtrip_all_finite) {
  for (uint32_t h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) == 0x7c00) continue;
    float f = pg_f16_to_f32((uint16_t)h);
    cr_assert_eq(pg_f32_to_f16(f), h, "h=%04x", h);
  }
}

Test(half, f16_rounding_matches_double_reference) {
  /* every fp32 between consecutive fp16 values rounds to the nearer one, ties to even */
  srand(7);
  for (int i = 0; i < 200000; i++) {
    uint32_t u = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
    float f;
    memcpy(&f, &u, 4);
    if (!isfinite(f) || fabsf(f) >= 65504.0f) continue;
    uint16_t h = pg_f32_to_f16(f);
    double v = pg_f16_to_f32(h);
    uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
    double dv = fabs((double)f - v);
    if ((h & 0x7fff) != 0x7bff && (h & 0x7fff) != 0)
      cr_assert(dv <= fabs((double)f - pg_f16_to_f32(up)) &&
                    dv <= fabs((double)f - pg_f16_to_f32(dn)),
                "f=%a h=%04x", f, h);
  }
}

Test(half, bf16) {
  cr_assert_eq(pg_f32_to_bf16(1.0f), 0x3f80);
  cr_assert_eq(pg_bf16_to_f32(0x3f80), 1.0f);
  uint32_t u = 0x3f808000; /* exactly halfway between 0x3f80 and 0x3f81: to even */
  float f;
  memcpy(&f, &u, 4);
  cr_assert_eq(pg_f32_to_bf16(f), 0x3f80);
  u = 0x3f818000;
  memcpy(&f, &u, 4);
  cr_assert_eq(pg_f32_to_bf16(f), 0x3f82);
  cr_assert(isnan(pg_bf16_to_f32(pg_f32_to_bf16(NAN))));
}

Test(qtype, pack_unpack_every_width) {
  for (unsigned bits = 2; bits <= 8; bits++) {
    const uint64_t n = 1001;
    int8_t v[1001], w[1001];
    for (uint64_t i = 0; i < n; i++)
      v[i] = (int8_t)(pg_int_min(bits) + (int)((i * 7919u) % (1u << bits)));
    uint8_t packed[1001];
    uint64_t nb = pg_packed_bytes(n, bits);
    cr_assert_eq(nb, (n * bits + 7) / 8);
    pg_pack_bits(v, n, bits, packed);
    cr_assert_eq(pg_unpack_bits(packed, n, bits, w), 0);
    cr_assert(!memcmp(v, w, n), "bits=%u", bits);
    if ((n * bits) % 8) {
      packed[nb - 1] |= 0x80; /* dirty a padding bit */
      cr_assert_eq(pg_unpack_bits(packed, n, bits, w), 1);
    }
  }
  cr_assert_eq(pg_packed_bytes(UINT64_MAX / 2, 8), UINT64_MAX);
}

Test(qtype, names_and_ranges) {
  cr_assert_str_eq(pg_qtype_name(PG_QTYPE_INT6), "int6");
  cr_assert_eq(pg_qtype_parse("int5"), PG_QTYPE_INT5);
  cr_assert_eq(pg_qtype_parse("int9"), -1);
  cr_assert_eq(pg_int_min(6), -32);
  cr_assert_eq(pg_int_max(6), 31);
  cr_assert_eq(pg_int_min(5), -16);
  cr_assert_eq(pg_qtype_bits(PG_QTYPE_BF16), 16);
}

Test(qtype, dequant_rows_and_lqer) {
  int8_t q[6] = {1, -2, 3, -4, 5, -6};
  uint16_t s[2] = {pg_f32_to_f16(0.5f), pg_f32_to_f16(0.25f)};
  float out[6];
  pg_dequant_rows(q, s, 2, 3, out);
  cr_assert_eq(out[0], 0.5f);
  cr_assert_eq(out[5], -1.5f);
  /* rank-1 correction over 2x64: a = [1,-2]*sA, b[j] = qB[j]*sB */
  float W[128] = {0};
  int8_t qA[2] = {1, -2}, qB[64];
  for (int j = 0; j < 64; j++) qB[j] = (int8_t)((j % 16) - 8);
  uint16_t sA = pg_f32_to_f16(0.5f), sB[1] = {pg_f32_to_f16(0.125f)};
  pg_lqer_apply(W, 2, 64, 1, qA, sA, qB, sB);
  for (int j = 0; j < 64; j++) {
    cr_assert_eq(W[j], 0.5f * (float)qB[j] * 0.125f);
    cr_assert_eq(W[64 + j], -1.0f * (float)qB[j] * 0.125f);
  }
}

Test(status, spec_table_lists_every_status) {
  const char *root = getenv("PG_SOURCE_ROOT");
  if (!root) cr_skip_test("PG_SOURCE_ROOT not set");
  char path[512];
  snprintf(path, sizeof path, "%s/spec/errors.md", root);
  uint8_t *buf;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &buf, &n, 1 << 20, &e), PG_OK, "%s", e.msg);
  char *text = malloc(n + 1);
  memcpy(text, buf, n);
  text[n] = '\0';
  free(buf);
  int count = 0;
#define CHECK_ROW_(name, num, msg)                                                      \
  do {                                                                                  \
    char row[256];                                                                      \
    snprintf(row, sizeof row, "| %d | `%s` | %s |", num, #name, msg);                   \
    cr_assert(strstr(text, row) != NULL, "spec/errors.md lacks the row: %s", row);      \
    count++;                                                                            \
  } while (0);
  PG_STATUS_LIST(CHECK_ROW_)
#undef CHECK_ROW_
  /* and no row for a status that does not exist */
  int rows = 0;
  for (char *p = text; (p = strstr(p, "| `PG_")); p++) rows++;
  cr_assert_eq(rows, count);
  free(text);
}

/* Inputs that are not regular files are refused at open, without blocking: a FIFO nobody writes
 * used to hang every reader in open(2). .timeout only turns such a hang into a failure. */
Test(io, fifo_and_folder_inputs_are_refused_without_blocking, .timeout = 60) {
  mk_tmp();
  char fifo[128];
  snprintf(fifo, sizeof fifo, "%s/pipe", tmpdir);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  pg_err e;
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all(fifo, &b, &n, 1 << 20, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "pipe: is a FIFO, not a regular file"), "%s", e.msg);
  pg_map m;
  cr_assert_eq(pg_file_map(&m, fifo, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "FIFO"), "%s", e.msg);
  uint64_t size;
  cr_assert_eq(pg_file_size(fifo, &size, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "FIFO"), "%s", e.msg);
  cr_assert_eq(pg_file_read_all(tmpdir, &b, &n, 1 << 20, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "a directory"), "%s", e.msg);
}

/* A whole-file read holds a private copy: truncating the file afterwards cannot touch it (a
 * mapping died with SIGBUS on the first access past the new end). A positioned read of a file that
 * shrank after its open is a one-line PG_E_IO. */
Test(io, file_truncated_while_in_use_is_an_error_not_a_crash) {
  mk_tmp();
  char path[128];
  snprintf(path, sizeof path, "%s/in.bin", tmpdir);
  enum { N = 1 << 16 };
  uint8_t *src = malloc(N);
  cr_assert_not_null(src);
  for (int i = 0; i < N; i++) src[i] = (uint8_t)(i * 7);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, src, N, &e), PG_OK);
  pg_map m;
  cr_assert_eq(pg_file_map(&m, path, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(truncate(path, 0), 0);
  cr_assert_eq(m.size, (size_t)N);
  cr_assert(!memcmp(m.data, src, N));
  pg_file_unmap(&m);
  cr_assert_eq(pg_file_write_atomic(path, src, N, &e), PG_OK);
  int fd;
  uint64_t size;
  cr_assert_eq(pg_file_open_read(path, &fd, &size, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(size, (uint64_t)N);
  cr_assert_eq(truncate(path, 100), 0);
  uint8_t buf[256];
  cr_assert_eq(pg_file_pread(fd, 0, buf, 100, path, &e), PG_OK);
  cr_assert_eq(pg_file_pread(fd, 0, buf, sizeof buf, path, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "in.bin") && strstr(e.msg, "shrank"), "%s", e.msg);
  close(fd);
  free(src);
}

/* ---- the shape check of outside JSON (pg_json.h) ---- */

static int shape(const char *t, uint64_t values, uint32_t depth, pg_err *e) {
  const pg_json_caps caps = {values, depth};
  return pg_json_shape_check(t, strlen(t), &caps, "s.json", 100, e);
}

/* Brackets, quotes and backslashes inside strings are text, not values or nesting. */
Test(json, shape_skips_string_contents) {
  pg_err e;
  const char *t = "{\"a[{\\\"\": \"]]}}\\\\\", \"b\": [1, -2.5e3, true, null]}";
  /* the object, two keys, a string, an array and four scalars */
  cr_assert_eq(shape(t, 9, 2, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(shape(t, 8, 2, &e), PG_E_LIMIT);
  cr_assert_eq(shape(t, 9, 1, &e), PG_E_LIMIT);
  cr_assert_eq(shape("\"[[[[{{{{\"", 1, 1, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(shape("", 0, 0, &e), PG_OK);
  /* a string left open ends the scan: the parser reports it */
  cr_assert_eq(shape("[\"[[[\\\"", 2, 1, &e), PG_OK, "%s", e.msg);
}

/* Exactly the cap passes, one more is refused at the value that goes over, in one line. */
Test(json, shape_cap_boundary) {
  pg_err e;
  size_t len;
  char *t = pgfiller_json("a", 997, &len); /* 1000 values */
  const pg_json_caps at = {1000, 3}, below = {999, 3};
  cr_assert_eq(pg_json_shape_check(t, len, &at, "s.json", 0, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_json_shape_check(t, len, &below, "s.json", 0, &e), PG_E_LIMIT);
  char want[160];
  snprintf(want, sizeof want, "s.json: offset %llu: more than 999 JSON values, the cap (each key "
           "counts as one)", (unsigned long long)PGFILLER_OVER("a", 999));
  cr_assert_str_eq(e.msg, want);
  cr_assert_eq(t[PGFILLER_OVER("a", 999)], '{');
  /* the root, the array and an object: depth 3 */
  const pg_json_caps shallow = {1000, 2};
  cr_assert_eq(pg_json_shape_check(t, len, &shallow, "s.json", 0, &e), PG_E_LIMIT);
  cr_assert_str_eq(e.msg, "s.json: offset 6: JSON nested more than 2 deep, the cap");
  free(t);
  /* depth counts what is open, not what was opened: closed brackets give it back */
  cr_assert_eq(shape("[[[]],[[]],[[]]]", 100, 3, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(shape("[[[[]]]]", 100, 3, &e), PG_E_LIMIT);
  cr_assert_str_eq(e.msg, "s.json: offset 103: JSON nested more than 3 deep, the cap");
  /* an unbalanced close does not make room */
  cr_assert_eq(shape("]]][[[[", 100, 3, &e), PG_E_LIMIT);
}

/* pg_json_load checks before it parses: a cap below the text refuses it with no tree built. */
Test(json, load_checks_the_shape_first) {
  pg_err e;
  json_t *j = (json_t *)1;
  const pg_json_caps caps = {3, 32};
  cr_assert_eq(pg_json_load(&j, "[1,2,3]", 7, 0, &caps, "l.json", &e), PG_E_LIMIT);
  cr_assert_null(j);
  cr_assert_str_eq(e.msg, "l.json: offset 5: more than 3 JSON values, the cap (each key counts as "
                   "one)");
  cr_assert_eq(pg_json_load(&j, "[1,2]", 5, 0, &caps, "l.json", &e), PG_OK, "%s", e.msg);
  json_decref(j);
  /* the documents' caps: the real files hold a few hundred values */
  size_t len;
  char *t = pgfiller_json("a", PG_JSON_DOC_VALUES - 3, &len);
  cr_assert_eq(pg_json_load(&j, t, len, 0, &pg_json_doc_caps, "l.json", &e), PG_OK, "%s", e.msg);
  json_decref(j);
  free(t);
  t = pgfiller_json("a", PG_JSON_DOC_VALUES - 2, &len);
  cr_assert_eq(pg_json_load(&j, t, len, 0, &pg_json_doc_caps, "l.json", &e), PG_E_LIMIT);
  free(t);
}
