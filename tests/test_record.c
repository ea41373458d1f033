/* test_record.c: counting a challenge record folder as the challenge does (spec/record.md): the
 * text-mode UTF-8 count of train_gpt.py, model discovery, claims and their comparison. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_record.h"

static uint64_t count(const char *s, size_t n, int *rc_out, uint64_t *crlf) {
  uint64_t out = 0;
  pg_err e;
  *rc_out = pg_record_code_bytes((const uint8_t *)s, n, &out, crlf, "train_gpt.py", &e);
  return out;
}

Test(record, python_text_mode_count) {
  int rc;
  uint64_t crlf;
  cr_assert_eq(count("print(1)\n", 9, &rc, &crlf), 9);
  cr_assert_eq(rc, PG_OK);
  cr_assert_eq(count("a\r\nb\r\n", 6, &rc, &crlf), 4);
  cr_assert_eq(crlf, 2);
  cr_assert_eq(count("a\rb\r", 4, &rc, &crlf), 4); /* lone CR -> LF: same length */
  cr_assert_eq(count("a\r\r\n", 4, &rc, &crlf), 3);
  cr_assert_eq(count("\xef\xbb\xbfx", 4, &rc, &crlf), 4); /* BOM kept */
  cr_assert_eq(count("\xc3\xa9\xe2\x96\x81\xf0\x9f\x98\x80", 9, &rc, &crlf), 9);
  cr_assert_eq(count("", 0, &rc, &crlf), 0);
}

Test(record, invalid_utf8_named_with_offset) {
  const struct {
    const char *s;
    size_t n, off;
  } bad[] = {{"ab\xc0\xaf", 4, 2},         /* overlong '/' */
             {"a\xed\xa0\x80", 4, 1},      /* encoded surrogate */
             {"\xf4\x90\x80\x80", 4, 0},   /* above U+10FFFF */
             {"xyz\xe2\x96", 5, 3},        /* truncated */
             {"ok\x80", 3, 2},             /* stray continuation */
             {"\xff", 1, 0}};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    uint64_t out;
    pg_err e;
    cr_assert_eq(pg_record_code_bytes((const uint8_t *)bad[i].s, bad[i].n, &out, NULL,
                                      "train_gpt.py", &e),
                 PG_E_UTF8, "case %zu", i);
    char want[64];
    snprintf(want, sizeof want, "train_gpt.py: offset %zu:", bad[i].off);
    cr_assert(strstr(e.msg, want) == e.msg, "case %zu: %s", i, e.msg);
  }
}

static char dir[64];
static void mkfile(const char *name, const char *text) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(p, text, strlen(text), &e), PG_OK);
}
static void mksized(const char *name, off_t size) {
  char p[256];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, size), 0); /* sparse: only the size matters */
  close(fd);
}
static void setup(void) {
  strcpy(dir, "/tmp/pgrec.XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}
TestSuite(folder, .init = setup);

Test(folder, baseline_numbers) {
  /* the naive baseline: model 15,815,847 + code 47,642 = 15,863,489 */
  char *code = malloc(47643);
  memset(code, 'x', 47641);
  code[47641] = '\n';
  code[47642] = '\0';
  mkfile("train_gpt.py", code);
  free(code);
  mksized("final_model.int8.ptz", 15815847);
  mkfile("submission.json", "{\"name\": \"Naive Baseline\", \"val_bpb\": 1.2243657, "
                            "\"bytes_total\": 15863489, \"bytes_code\": 47642}");
  pg_record r;
  pg_err e;
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.code_bytes, 47642);
  cr_assert_eq(r.model_bytes, 15815847);
  cr_assert_eq(r.total, 15863489);
  cr_assert_str_eq(r.claims.name, "Naive Baseline");
  pg_record_finding f[PG_CLAIM_COUNT];
  int n = pg_record_compare(&r, f);
  cr_assert_eq(n, 3);
  cr_assert_eq(f[0].claim, PG_CLAIM_BYTES_TOTAL);
  cr_assert_eq(f[0].kind, PG_FIND_AGREES);
  cr_assert_eq(f[1].claim, PG_CLAIM_BYTES_CODE);
  cr_assert_eq(f[1].kind, PG_FIND_AGREES);
  cr_assert_eq(f[2].claim, PG_CLAIM_VAL_BPB);
  cr_assert_eq(f[2].kind, PG_FIND_INFO);
  pg_record_free(&r);
}

Test(folder, crlf_script_and_differing_claims) {
  mkfile("train_gpt.py", "import os\r\nprint(os.name)\r\n");
  mksized("final_model.int6.ptz", 1000);
  /* a claim of the model bytes alone, and a code claim smaller than the plain script */
  mkfile("submission.json", "{\"bytes_total\": 1000, \"bytes_code\": 10}");
  pg_record r;
  pg_err e;
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.code_file_bytes, 27);
  cr_assert_eq(r.crlf, 2);
  cr_assert_eq(r.code_bytes, 25);
  cr_assert_eq(r.total, 1025);
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 2);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS);
  cr_assert(strstr(f[0].text, "model bytes alone") != NULL, "%s", f[0].text);
  cr_assert_eq(f[1].kind, PG_FIND_DIFFERS);
  cr_assert(strstr(f[1].text, "wrapper") != NULL, "%s", f[1].text);
  pg_record_free(&r);
}

Test(folder, self_extractor_is_recognised) {
  mkfile("train_gpt.py", "import lzma as L,base64 as B\nexec(L.decompress(B.b85decode(\"x\")))\n");
  mksized("final_model.int6.ptz", 10);
  pg_record r;
  pg_err e;
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert(r.self_extractor);
  cr_assert_null(r.json_path);
  pg_record_free(&r);
}

Test(folder, missing_and_ambiguous_pieces) {
  pg_record r;
  pg_err e;
  mksized("final_model.int8.ptz", 10);
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_RECORD); /* no train_gpt.py */
  cr_assert(strstr(e.msg, "train_gpt.py") != NULL);
  mkfile("train_gpt.py", "x\n");
  mksized("final_model.int6.ptz", 20);
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_RECORD); /* two models */
  cr_assert(strstr(e.msg, "final_model.int6.ptz") && strstr(e.msg, "final_model.int8.ptz"),
            "%s", e.msg);
  cr_assert_eq(pg_record_open(&r, dir, "final_model.int6.ptz", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.total, 22);
  pg_record_free(&r);
  char p[256];
  snprintf(p, sizeof p, "%s/final_model.int8.ptz", dir);
  unlink(p);
  snprintf(p, sizeof p, "%s/final_model.int6.ptz", dir);
  unlink(p);
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_RECORD); /* no model */
}

Test(folder, bad_script_and_bad_json) {
  pg_record r;
  pg_err e;
  mkfile("train_gpt.py", "ok\xc3(\n");
  mksized("final_model.int8.ptz", 10);
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_UTF8);
  cr_assert(strstr(e.msg, "train_gpt.py: offset 2:") != NULL, "%s", e.msg);
  mkfile("train_gpt.py", "ok\n");
  mkfile("submission.json", "{\"bytes_total\": 12,");
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_JSON);
  cr_assert(strstr(e.msg, "submission.json") != NULL);
  mkfile("submission.json", "{\"bytes_total\": \"12\"}");
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_META_TYPE);
  mkfile("submission.json", "{\"bytes_total\": 1, \"bytes_total\": 2}");
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_JSON);
  mkfile("submission.json", "[1, 2]");
  cr_assert_eq(pg_record_open(&r, dir, NULL, &e), PG_E_JSON);
}
