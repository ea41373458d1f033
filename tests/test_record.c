/* test_record.c: counting a challenge record folder as the challenge does (spec/record.md): the
 * text-mode UTF-8 count of train_gpt.py against hand-made cases and an independent table-driven
 * validator, self-extractor and model-name recognition, the submission.json claim parser, and
 * whole folders built under a fresh /tmp/pgrec.XXXXXX (exact totals, the baseline's numbers,
 * claims compared, every missing, ambiguous or malformed piece refused with its status). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_record.h"
#include "pgfiller.h"
#include "pgtest.h"

/* ---- the code count on buffers ---- */

static const uint64_t UNTOUCHED = 0xdeadbeefull;

/* Count s (n bytes); returns the status, *out and *crlf as given back. */
static int count(const char *s, size_t n, uint64_t *out, uint64_t *crlf, pg_err *e) {
  *out = UNTOUCHED;
  *crlf = UNTOUCHED;
  return pg_record_code_bytes((const uint8_t *)s, n, out, crlf, "train_gpt.py", e);
}

#define COUNT_OK(lit, want_bytes, want_crlf)                                                \
  do {                                                                                     \
    uint64_t o_, c_;                                                                       \
    pg_err e_;                                                                             \
    cr_assert_eq(count(lit, sizeof(lit) - 1, &o_, &c_, &e_), PG_OK, "%s", e_.msg);         \
    cr_assert_eq(o_, (uint64_t)(want_bytes), "%s: %llu", #lit, (unsigned long long)o_);    \
    cr_assert_eq(c_, (uint64_t)(want_crlf), "%s: crlf %llu", #lit, (unsigned long long)c_); \
  } while (0)

Test(count, ascii) {
  COUNT_OK("print(1)\n", 9, 0);
  COUNT_OK("x", 1, 0);
  COUNT_OK("a\x00" "b", 3, 0); /* NUL is valid UTF-8 and counts */
  COUNT_OK("\t\f\v\x1b\x7f", 5, 0);
}

Test(count, empty) {
  uint64_t o, c;
  pg_err e;
  cr_assert_eq(count("", 0, &o, &c, &e), PG_OK);
  cr_assert_eq(o, 0);
  cr_assert_eq(c, 0);
  o = UNTOUCHED;
  cr_assert_eq(pg_record_code_bytes(NULL, 0, &o, NULL, "f", &e), PG_OK); /* crlf_count optional */
  cr_assert_eq(o, 0);
}

Test(count, crlf_pairs_fold) {
  COUNT_OK("a\r\nb\r\n", 4, 2);
  COUNT_OK("\r\n", 1, 1);
  COUNT_OK("\r\n\r\n", 2, 2);
  COUNT_OK("\r\r\n", 2, 1);   /* lone CR, then a pair */
  COUNT_OK("\n\r", 2, 0);     /* LF CR is not a pair */
  COUNT_OK("\r\n\n\r\r", 4, 1);
}

Test(count, lone_cr_keeps_its_byte) {
  COUNT_OK("a\rb\r", 4, 0); /* each lone CR becomes LF: the same length */
  COUNT_OK("\r", 1, 0);
  COUNT_OK("\r\r\r", 3, 0);
}

Test(count, cr_at_end_of_file) {
  COUNT_OK("x = 1\r", 6, 0);
  COUNT_OK("x = 1\r\n", 6, 1);
  COUNT_OK("x\r\n\r", 3, 1);
}

Test(count, bom_is_kept) {
  COUNT_OK("\xef\xbb\xbf", 3, 0);
  COUNT_OK("\xef\xbb\xbfx", 4, 0);
  COUNT_OK("\xef\xbb\xbfimport os\r\n", 13, 1);
  COUNT_OK("a\xef\xbb\xbf", 4, 0); /* U+FEFF later in the file: an ordinary character */
}

Test(count, multibyte_sequences) {
  COUNT_OK("\xc3\xa9", 2, 0);                        /* é */
  COUNT_OK("\xe2\x96\x81", 3, 0);                    /* ▁ (SentencePiece's space) */
  COUNT_OK("\xf0\x9f\x98\x80", 4, 0);                /* U+1F600 */
  COUNT_OK("\xc2\x80\xdf\xbf", 4, 0);                /* U+0080, U+07FF */
  COUNT_OK("\xe0\xa0\x80\xed\x9f\xbf", 6, 0);        /* U+0800, U+D7FF */
  COUNT_OK("\xee\x80\x80\xef\xbf\xbf", 6, 0);        /* U+E000, U+FFFF */
  COUNT_OK("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8, 0); /* U+10000, U+10FFFF */
  COUNT_OK("\xef\xbf\xbe", 3, 0);                    /* U+FFFE, a noncharacter, decodes */
  COUNT_OK("print(\"\xc3\xa9\")\r\n", 12, 1);
}

/* One invalid input: the status, the offset in the line, a word of the reason, *out untouched. */
static void expect_bad(const char *s, size_t n, size_t off, const char *word) {
  uint64_t o, c;
  pg_err e;
  cr_assert_eq(count(s, n, &o, &c, &e), PG_E_UTF8, "offset %zu", off);
  cr_assert_eq(e.status, PG_E_UTF8);
  char want[64];
  snprintf(want, sizeof want, "train_gpt.py: offset %zu: ", off);
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "want '%s', got '%s'", want, e.msg);
  cr_assert(strstr(e.msg, word) != NULL, "want '%s' in '%s'", word, e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
  cr_assert_eq(o, UNTOUCHED);
  cr_assert_eq(c, UNTOUCHED);
}
#define BAD(lit, off, word) expect_bad(lit, sizeof(lit) - 1, off, word)

Test(count, stray_continuation_bytes) {
  BAD("\x80", 0, "stray continuation");
  BAD("ok\xbf", 2, "stray continuation");
  BAD("\xc3\xa9\xa9", 2, "stray continuation");
}

Test(count, bytes_that_never_start_a_sequence) {
  BAD("\xc0\xaf", 0, "overlong");
  BAD("a\xc1\xbf", 1, "overlong");
  BAD("\xf5\x80\x80\x80", 0, "never valid");
  BAD("\xf8\x88\x80\x80\x80", 0, "never valid");
  BAD("xy\xff", 2, "never valid");
  BAD("\xfe\xff", 0, "never valid");
}

Test(count, overlong_forms) {
  BAD("ab\xe0\x80\xaf", 2, "overlong 3-byte");
  BAD("\xe0\x9f\xbf", 0, "overlong 3-byte");
  BAD("\xf0\x80\x80\xaf", 0, "overlong 4-byte");
  BAD("\xf0\x8f\xbf\xbf", 0, "overlong 4-byte");
}

Test(count, encoded_surrogates) {
  BAD("a\xed\xa0\x80", 1, "surrogate U+D800");
  BAD("\xed\xbf\xbf", 0, "surrogate U+DFFF");
  BAD("\xed\xa0\xbd\xed\xb8\x80", 0, "surrogate"); /* a CESU-8 pair */
}

Test(count, above_u10ffff) {
  BAD("\xf4\x90\x80\x80", 0, "above U+10FFFF");
  BAD("z\xf4\xbf\xbf\xbf", 1, "above U+10FFFF");
}

Test(count, truncated_sequences) {
  BAD("\xc3", 0, "end of the file");
  BAD("xyz\xe2\x96", 3, "end of the file");
  BAD("\xf0\x9f\x98", 0, "end of the file");
  BAD("\xc3" "A", 0, "does not continue");
  BAD("\xe2\x82" "A", 0, "offset 2 does not continue");
  BAD("\xf0\x9f\x98\n", 0, "does not continue");
}

Test(count, offsets_are_in_file_bytes_not_folded_text) {
  BAD("a\r\n\r\n\xff", 5, "never valid"); /* two CRLF before it: still offset 5 */
  BAD("\xef\xbb\xbf\x80", 3, "stray");
}

Test(count, bad_arguments) {
  pg_err e;
  uint64_t o;
  cr_assert_eq(pg_record_code_bytes((const uint8_t *)"x", 1, NULL, NULL, "f", &e), PG_E_ARG);
  cr_assert_eq(pg_record_code_bytes(NULL, 3, &o, NULL, "f", &e), PG_E_ARG);
  cr_assert_eq(pg_record_code_bytes(NULL, 3, &o, NULL, "f", NULL), PG_E_ARG); /* err optional */
}

/* An independent reference: the table of well-formed UTF-8 byte sequences (Unicode 15, table
 * 3-7), which is exactly what Python's strict decoder accepts. Returns the length of the
 * well-formed sequence at s (n > 0 bytes left), or 0 when it is ill-formed. */
static size_t wf_len(const uint8_t *s, size_t n) {
  const uint8_t c = s[0];
  if (c <= 0x7f) return 1;
  uint8_t lo = 0x80, hi = 0xbf;
  size_t len;
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c == 0xe0) len = 3, lo = 0xa0;
  else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) len = 3;
  else if (c == 0xed) len = 3, hi = 0x9f;
  else if (c == 0xf0) len = 4, lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) len = 4;
  else if (c == 0xf4) len = 4, hi = 0x8f;
  else return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t k = 2; k < len; k++)
    if (s[k] < 0x80 || s[k] > 0xbf) return 0;
  return len;
}

/* The reference count: validity by the table, newlines folded by building the translated text. */
static int ref_count(const uint8_t *s, size_t n, uint64_t *out, size_t *bad) {
  for (size_t i = 0; i < n;) {
    size_t l = wf_len(s + i, n - i);
    if (!l) {
      *bad = i;
      return 0;
    }
    i += l;
  }
  uint64_t len = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') i++; /* "\r\n" -> "\n" */
    len++;                                                  /* anything else, "\r" -> "\n" too */
  }
  *out = len;
  return 1;
}

static void agree_with_reference(const uint8_t *s, size_t n) {
  uint64_t got = UNTOUCHED, want = 0, crlf;
  size_t bad = 0;
  pg_err e;
  int rc = pg_record_code_bytes(s, n, &got, &crlf, "t", &e);
  if (ref_count(s, n, &want, &bad)) {
    cr_assert_eq(rc, PG_OK, "%s", e.msg);
    cr_assert_eq(got, want);
    cr_assert_eq(got + crlf, n);
  } else {
    cr_assert_eq(rc, PG_E_UTF8);
    char pre[48];
    snprintf(pre, sizeof pre, "t: offset %zu: ", bad);
    cr_assert(strncmp(e.msg, pre, strlen(pre)) == 0, "want '%s', got '%s'", pre, e.msg);
  }
}

Test(count, every_sequence_of_up_to_three_bytes_matches_the_table) {
  uint8_t b[4];
  for (unsigned x = 0; x < 256; x++) {
    b[0] = (uint8_t)x;
    agree_with_reference(b, 1);
    for (unsigned y = 0; y < 256; y++) {
      b[1] = (uint8_t)y;
      agree_with_reference(b, 2);
      if (x < 0xc0) continue; /* a third byte only matters after a lead byte */
      for (unsigned z = 0; z < 256; z++) {
        b[2] = (uint8_t)z;
        agree_with_reference(b, 3);
      }
    }
  }
}

Test(count, every_four_byte_sequence_after_a_four_byte_lead_matches_the_table) {
  uint8_t b[5] = {0, 0, 0, 0, 'x'};
  for (unsigned x = 0xf0; x <= 0xf4; x++)
    for (unsigned y = 0x80; y <= 0xc0; y++)
      for (unsigned z = 0x7f; z <= 0xc0; z++)
        for (unsigned w = 0x7f; w <= 0xc0; w++) {
          b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = (uint8_t)z, b[3] = (uint8_t)w;
          agree_with_reference(b, 5);
        }
}

Test(count, random_texts_match_the_reference) {
  static const char *const pieces[] = {"a", "\r", "\n", "\r\n", "\xc3\xa9", "\xe2\x96\x81",
                                       "\xf0\x9f\x98\x80", "\xef\xbb\xbf", " ", "\t"};
  static const uint8_t junk[] = {0x80, 0xc0, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff};
  uint64_t st = 0x9e3779b97f4a7c15ull;
  uint8_t buf[256];
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = 0;
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    const int parts = (int)((st >> 33) % 40);
    for (int k = 0; k < parts; k++) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      const unsigned r = (unsigned)(st >> 33);
      if (r % 97 == 0 && n < sizeof buf) { /* now and then a byte that may break the text */
        buf[n++] = junk[(r / 97) % sizeof junk];
        continue;
      }
      const char *p = pieces[r % (sizeof pieces / sizeof *pieces)];
      const size_t l = strlen(p);
      if (n + l > sizeof buf) break;
      memcpy(buf + n, p, l);
      n += l;
    }
    agree_with_reference(buf, n);
  }
}

/* ---- self-extractors and model names ---- */

static int selfx(const char *s) {
  return pg_record_is_self_extractor((const uint8_t *)s, strlen(s));
}

Test(shape, self_extractor) {
  cr_assert(selfx("import lzma as L,base64 as B\nexec(L.decompress(B.b85decode(\"x\")))\n"));
  cr_assert(selfx("import brotli\nexec(brotli.decompress(b'...'))"));
  cr_assert(selfx("import lzma;exec(lzma.decompress(open(__file__,'rb').read()[99:]))"));
  cr_assert(selfx("\xef\xbb\xbfimport lzma\nexec(x)"));  /* after a BOM */
  cr_assert(selfx("import lzma, base64\r\nexec(z)"));
  cr_assert_not(selfx("import lzma\nprint(1)\n"));       /* no exec( */
  cr_assert_not(selfx("import lzmax\nexec(x)"));          /* another module */
  cr_assert_not(selfx("import brotlicffi\nexec(x)"));
  cr_assert_not(selfx("import zlib\nexec(x)"));
  cr_assert_not(selfx("# wrapper\nimport lzma\nexec(x)")); /* must start with the import */
  cr_assert_not(selfx("import torch\nimport lzma\nexec(x)"));
  cr_assert_not(selfx("import lzma\nexec (x)"));
  cr_assert_not(selfx(""));
  cr_assert_not(selfx("import lzm"));
  cr_assert_not(pg_record_is_self_extractor(NULL, 0));
}

Test(shape, model_names) {
  cr_assert(pg_record_is_model_name("final_model.int8.ptz"));
  cr_assert(pg_record_is_model_name("final_model.int6.ptz"));
  cr_assert(pg_record_is_model_name("final_model.mixed.int5.ptz"));
  cr_assert(pg_record_is_model_name("final_model..ptz")); /* '*' may be empty */
  cr_assert_not(pg_record_is_model_name("final_model.ptz"));
  cr_assert_not(pg_record_is_model_name("final_model.int8.ptz.bak"));
  cr_assert_not(pg_record_is_model_name("final_model.int8.pt"));
  cr_assert_not(pg_record_is_model_name("Final_model.int8.ptz"));
  cr_assert_not(pg_record_is_model_name("final_model_int8.ptz"));
  cr_assert_not(pg_record_is_model_name("x.final_model.int8.ptz"));
  cr_assert_not(pg_record_is_model_name(""));
  cr_assert_not(pg_record_is_model_name(NULL));
}

/* ---- claims ---- */

static int claims(pg_record_claims *c, const char *json, pg_err *e) {
  return pg_record_parse_claims(c, (const uint8_t *)json, strlen(json), "submission.json", e);
}

static void expect_all_absent(const pg_record_claims *c) {
  for (int i = 0; i < PG_CLAIM_COUNT; i++) cr_assert_not(c->num[i].present, "claim %d", i);
  cr_assert_str_empty(c->name);
  cr_assert_str_empty(c->author);
  cr_assert_str_empty(c->track);
  cr_assert_str_empty(c->date);
}

Test(claims, keys) {
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_BYTES_TOTAL), "bytes_total");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_BYTES_CODE), "bytes_code");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_ARTIFACT_BYTES_MAX), "artifact_bytes_max");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_ARTIFACT_BYTES_MEAN), "artifact_bytes_mean");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_BYTES_MODEL_INT8_ZLIB), "bytes_model_int8_zlib");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_BYTES_MODEL_INT6_ZSTD), "bytes_model_int6_zstd");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_VAL_BPB), "val_bpb");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_VAL_LOSS), "val_loss");
  cr_assert_str_eq(pg_claim_key(-1), "?");
  cr_assert_str_eq(pg_claim_key(PG_CLAIM_COUNT), "?");
  cr_assert_str_eq(pg_record_finding_word(PG_FIND_AGREES), "agrees");
  cr_assert_str_eq(pg_record_finding_word(PG_FIND_DIFFERS), "differs");
  cr_assert_str_eq(pg_record_finding_word(PG_FIND_INFO), "info");
}

Test(claims, every_known_key) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, "{\"author\": \"Baseline\", \"github_id\": \"openai\", \"name\": "
                          "\"Naive Baseline\", \"date\": \"2026-03-18T00:05:35Z\", \"track\": "
                          "\"10min_16mb\", \"val_loss\": 2.06035852, \"val_bpb\": 1.21687994, "
                          "\"bytes_total\": 15863068, \"bytes_code\": 48140, "
                          "\"artifact_bytes_max\": 15900000, \"artifact_bytes_mean\": 15890000.5, "
                          "\"bytes_model_int8_zlib\": 15814928, \"bytes_model_int6_zstd\": 0, "
                          "\"blurb\": {\"nested\": [1, 2, {\"bytes_total\": \"x\"}]}}",
                      &e),
               PG_OK, "%s", e.msg);
  cr_assert_str_eq(c.name, "Naive Baseline");
  cr_assert_str_eq(c.author, "Baseline");
  cr_assert_str_eq(c.track, "10min_16mb");
  cr_assert_str_eq(c.date, "2026-03-18T00:05:35Z");
  const pg_claim *t = &c.num[PG_CLAIM_BYTES_TOTAL];
  cr_assert(t->present && t->is_integer);
  cr_assert_eq(t->integer, 15863068);
  cr_assert_eq(t->value, 15863068.0);
  cr_assert_eq(c.num[PG_CLAIM_BYTES_CODE].integer, 48140);
  cr_assert_eq(c.num[PG_CLAIM_ARTIFACT_BYTES_MAX].integer, 15900000);
  cr_assert_not(c.num[PG_CLAIM_ARTIFACT_BYTES_MEAN].is_integer);
  cr_assert_eq(c.num[PG_CLAIM_ARTIFACT_BYTES_MEAN].value, 15890000.5);
  cr_assert_eq(c.num[PG_CLAIM_BYTES_MODEL_INT8_ZLIB].integer, 15814928);
  cr_assert(c.num[PG_CLAIM_BYTES_MODEL_INT6_ZSTD].present); /* zero is a claim too */
  cr_assert_not(c.num[PG_CLAIM_VAL_BPB].is_integer);
  cr_assert_eq(c.num[PG_CLAIM_VAL_BPB].value, 1.21687994);
  cr_assert_eq(c.num[PG_CLAIM_VAL_LOSS].value, 2.06035852);
}

Test(claims, absent_null_and_empty_object) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, "{}", &e), PG_OK);
  expect_all_absent(&c);
  cr_assert_eq(claims(&c, " \r\n\t{\"bytes_total\": null, \"name\": null, \"val_bpb\": null} ",
                      &e),
               PG_OK, "%s", e.msg);
  expect_all_absent(&c);
}

Test(claims, numbers_of_every_json_form) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, "{\"bytes_total\": 15863489.0, \"bytes_code\": -5, \"val_bpb\": 1e0, "
                          "\"val_loss\": -0.0, \"artifact_bytes_max\": 9223372036854775807, "
                          "\"artifact_bytes_mean\": -9223372036854775808}",
                      &e),
               PG_OK, "%s", e.msg);
  cr_assert_not(c.num[PG_CLAIM_BYTES_TOTAL].is_integer);
  cr_assert_eq(c.num[PG_CLAIM_BYTES_TOTAL].value, 15863489.0);
  cr_assert_eq(c.num[PG_CLAIM_BYTES_CODE].integer, -5);
  cr_assert_not(c.num[PG_CLAIM_VAL_BPB].is_integer);
  cr_assert_eq(c.num[PG_CLAIM_VAL_BPB].value, 1.0);
  cr_assert_eq(c.num[PG_CLAIM_ARTIFACT_BYTES_MAX].integer, INT64_MAX);
  cr_assert_eq(c.num[PG_CLAIM_ARTIFACT_BYTES_MEAN].integer, INT64_MIN);
}

static void expect_type_error(const char *json, const char *words) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, json, &e), PG_E_META_TYPE, "%s", json);
  cr_assert(strncmp(e.msg, "submission.json: ", 17) == 0, "%s", e.msg);
  cr_assert(strstr(e.msg, words) != NULL, "want '%s' in '%s'", words, e.msg);
  expect_all_absent(&c); /* nothing half-parsed is left behind */
}

Test(claims, wrong_types_are_meta_type) {
  expect_type_error("{\"bytes_total\": \"15863489\"}", "'bytes_total' is a string, not a number");
  expect_type_error("{\"bytes_code\": true}", "'bytes_code' is true");
  expect_type_error("{\"val_bpb\": [1.2]}", "'val_bpb' is an array");
  expect_type_error("{\"val_loss\": {\"mean\": 2}}", "'val_loss' is an object");
  expect_type_error("{\"bytes_total\": 5, \"name\": 7}", "'name' is an integer, not a string");
  expect_type_error("{\"author\": [\"a\", \"b\"]}", "'author' is an array");
  expect_type_error("{\"date\": 20260318}", "'date' is an integer");
  expect_type_error("{\"track\": false}", "'track' is false");
}

static void expect_json_error(const char *json, size_t len, int status, long off) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(pg_record_parse_claims(&c, (const uint8_t *)json, len, "submission.json", &e),
               status, "'%s': %s", json, e.msg);
  cr_assert(strncmp(e.msg, "submission.json: ", 17) == 0, "%s", e.msg);
  if (off >= 0) {
    char want[64];
    snprintf(want, sizeof want, "submission.json: offset %ld: ", off);
    cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "want '%s', got '%s'", want, e.msg);
  }
  cr_assert_null(strchr(e.msg, '\n'));
  expect_all_absent(&c);
}
#define JBAD(lit, status, off) expect_json_error(lit, sizeof(lit) - 1, status, off)

Test(claims, malformed_json) {
  JBAD("", PG_E_JSON, 0);
  JBAD("   ", PG_E_JSON, -1);
  JBAD("{\"bytes_total\": 12,", PG_E_JSON, -1);
  JBAD("{\"bytes_total\": 12,}", PG_E_JSON, -1);
  JBAD("{\"bytes_total\": 12} x", PG_E_JSON, -1); /* trailing garbage */
  JBAD("{'bytes_total': 12}", PG_E_JSON, -1);
  JBAD("{\"val_bpb\": NaN}", PG_E_JSON, -1); /* Python writes it; JSON has no such token */
  JBAD("{\"val_bpb\": Infinity}", PG_E_JSON, -1);
  JBAD("{\"bytes_total\": 012}", PG_E_JSON, -1);
  JBAD("{\"bytes_total\": 99999999999999999999}", PG_E_JSON, -1); /* beyond 64 bits */
  JBAD("{\"val_bpb\": 1e400}", PG_E_JSON, -1);                     /* beyond a double */
  JBAD("\xef\xbb\xbf{}", PG_E_JSON, -1); /* a BOM: Python's json refuses it too */
  JBAD("{\"a\": \"\x01\"}", PG_E_JSON, -1); /* raw control character in a string */
}

Test(claims, top_level_must_be_an_object) {
  JBAD("[1, 2]", PG_E_JSON, 0);
  JBAD("  \"bytes_total\"", PG_E_JSON, 2);
  JBAD("\n15863489", PG_E_JSON, 1);
  JBAD("null", PG_E_JSON, 0);
}

Test(claims, duplicate_keys_are_refused) {
  JBAD("{\"bytes_total\": 1, \"bytes_total\": 2}", PG_E_DUPLICATE, -1);
  JBAD("{\"x\": {\"a\": 1, \"a\": 1}}", PG_E_DUPLICATE, -1);
}

Test(claims, invalid_utf8_is_refused_at_its_offset) {
  JBAD("{\"name\": \"caf\xe9\"}", PG_E_UTF8, 13);
  JBAD("{\"name\": \"\xed\xa0\x80\"}", PG_E_UTF8, 10);
  JBAD("{} \xff", PG_E_UTF8, 3);
}

Test(claims, strings_are_made_safe_to_print) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, "{\"name\": \"a\\u001b[31mred\\u0000\\n\\u007f\\u009b\\u00a0\xc3\xa9\","
                          " \"author\": \"\xe2\x96\x81 \\ud83d\\ude00\"}",
                      &e),
               PG_OK, "%s", e.msg);
  cr_assert_str_eq(c.name, "a?[31mred????\xc2\xa0\xc3\xa9"); /* U+00A0 is no control */
  cr_assert_str_eq(c.author, "\xe2\x96\x81 \xf0\x9f\x98\x80");
}

Test(claims, long_strings_are_cut_on_a_character_boundary) {
  char json[2048];
  size_t o = (size_t)snprintf(json, sizeof json, "{\"name\": \"");
  for (int i = 0; i < 300; i++) o += (size_t)snprintf(json + o, sizeof json - o, "\xc3\xa9");
  snprintf(json + o, sizeof json - o, "\", \"track\": \"%070d\"}", 0);
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(claims(&c, json, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(strlen(c.name), 254); /* 127 two-byte characters fit in 255 bytes */
  size_t bad;
  cr_assert(pg_utf8_valid((const uint8_t *)c.name, strlen(c.name), &bad));
  cr_assert_eq(strlen(c.track), sizeof c.track - 1);
}

Test(claims, bad_arguments) {
  pg_record_claims c;
  pg_err e;
  cr_assert_eq(pg_record_parse_claims(NULL, (const uint8_t *)"{}", 2, "f", &e), PG_E_ARG);
  cr_assert_eq(pg_record_parse_claims(&c, NULL, 2, "f", &e), PG_E_ARG);
  cr_assert_eq(pg_record_parse_claims(&c, NULL, 0, "f", &e), PG_E_JSON); /* empty: not JSON */
}

/* ---- folders ---- */

static char dir[64];

static void setup(void) {
  strcpy(dir, "/tmp/pgrec.XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void) { pgtest_rm_rf(dir); }
TestSuite(folder, .init = setup, .fini = teardown);

static const char *at(const char *name) {
  static char p[4][512];
  static int k;
  char *s = p[k++ & 3];
  snprintf(s, 512, "%s/%s", dir, name);
  return s;
}

static void put(const char *name, const void *bytes, size_t n) {
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(at(name), bytes, n, &e), PG_OK, "%s", e.msg);
}
static void put_text(const char *name, const char *text) { put(name, text, strlen(text)); }

/* A sparse file of the given size: only the size matters to the count. */
static void put_sized(const char *name, off_t size) {
  int fd = open(at(name), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, size), 0);
  close(fd);
}

/* n bytes of printable ASCII code ending in a newline. */
static void put_code(size_t n) {
  char *code = malloc(n);
  cr_assert_not_null(code);
  for (size_t i = 0; i < n; i++) code[i] = (i % 64 == 63 || i == n - 1) ? '\n' : 'x';
  put("train_gpt.py", code, n);
  free(code);
}

static int open_rec(pg_record *r, const char *model, pg_err *e) {
  memset(r, 0xa5, sizeof *r); /* open must not rely on a zeroed record */
  return pg_record_open(r, dir, model, e);
}

static void expect_zeroed(const pg_record *r) {
  pg_record z;
  memset(&z, 0, sizeof z);
  cr_assert(memcmp(r, &z, sizeof z) == 0, "a failed open leaves the record zeroed");
}

static const pg_record_finding *finding(const pg_record_finding *f, int n, int claim) {
  for (int i = 0; i < n; i++)
    if (f[i].claim == claim) return &f[i];
  cr_assert_fail("no finding for %s", pg_claim_key(claim));
  return NULL;
}

#define HAS(text, word) cr_assert(strstr((text), (word)) != NULL, "want '%s' in '%s'", word, text)

Test(folder, baseline_numbers) {
  /* the challenge's baseline: model 15,815,847 + code 47,642 = 15,863,489 */
  put_code(47642);
  put_sized("final_model.int8.ptz", 15815847);
  put_text("submission.json", "{\"author\": \"Baseline\", \"name\": \"Naive Baseline\", "
                              "\"val_loss\": 2.07269931, \"val_bpb\": 1.2243657, "
                              "\"bytes_total\": 15863489, \"bytes_code\": 47642, "
                              "\"bytes_model_int8_zlib\": 15815847}");
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(r.dir, dir);
  cr_assert_str_eq(r.code_path, at("train_gpt.py"));
  cr_assert_str_eq(r.model_path, at("final_model.int8.ptz"));
  cr_assert_str_eq(r.json_path, at("submission.json"));
  cr_assert_eq(r.code_file_bytes, 47642);
  cr_assert_eq(r.code_bytes, 47642);
  cr_assert_eq(r.crlf, 0);
  cr_assert_not(r.bom);
  cr_assert_not(r.self_extractor);
  cr_assert_eq(r.model_bytes, 15815847);
  cr_assert_eq(r.total, 15863489);
  cr_assert(r.total <= 16000000);
  cr_assert_str_eq(r.claims.name, "Naive Baseline");
  cr_assert_str_eq(r.claims.author, "Baseline");

  pg_record_finding f[PG_CLAIM_COUNT];
  const int n = pg_record_compare(&r, f);
  cr_assert_eq(n, 5);
  /* in pg_claim_id order */
  cr_assert_eq(f[0].claim, PG_CLAIM_BYTES_TOTAL);
  cr_assert_eq(f[0].kind, PG_FIND_AGREES);
  cr_assert_eq(f[0].claimed, 15863489.0);
  cr_assert_eq(f[0].computed, 15863489.0);
  cr_assert_str_eq(f[0].text, "computed 15,863,489 = code 47,642 + model 15,815,847");
  cr_assert_eq(f[1].claim, PG_CLAIM_BYTES_CODE);
  cr_assert_eq(f[1].kind, PG_FIND_AGREES);
  cr_assert_str_eq(f[1].text, "train_gpt.py counts 47,642 as Python reads it");
  cr_assert_eq(f[2].claim, PG_CLAIM_BYTES_MODEL_INT8_ZLIB);
  cr_assert_eq(f[2].kind, PG_FIND_AGREES);
  HAS(f[2].text, "final_model.int8.ptz");
  cr_assert_eq(f[3].claim, PG_CLAIM_VAL_BPB);
  cr_assert_eq(f[3].kind, PG_FIND_INFO);
  cr_assert_eq(f[3].claimed, 1.2243657);
  cr_assert(isnan(f[3].computed));
  cr_assert_eq(f[4].claim, PG_CLAIM_VAL_LOSS);
  cr_assert_eq(f[4].kind, PG_FIND_INFO);
  pg_record_free(&r);
  expect_zeroed(&r);
  pg_record_free(&r); /* twice is harmless */
  pg_record_free(NULL);
}

Test(folder, one_byte_over_the_budget_is_counted_exactly) {
  put_code(47642);
  put_sized("final_model.int6.ptz", 16000000 - 47642 + 1);
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.total, 16000001);
  pg_record_free(&r);
}

Test(folder, trailing_slashes_and_no_submission_json) {
  put_text("train_gpt.py", "print(1)\n");
  put_sized("final_model.int6.ptz", 100);
  char d[80];
  snprintf(d, sizeof d, "%s//", dir);
  pg_record r;
  pg_err e;
  cr_assert_eq(pg_record_open(&r, d, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(r.dir, dir);
  cr_assert_str_eq(r.code_path, at("train_gpt.py"));
  cr_assert_null(r.json_path);
  cr_assert_eq(r.total, 109);
  expect_all_absent(&r.claims);
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 0);
  pg_record_free(&r);
  cr_assert_eq(pg_record_compare(NULL, f), 0);
}

Test(folder, crlf_bom_and_a_raw_size_claim) {
  /* BOM + two CRLF lines: 3 + 11 + 16 = 30 bytes on disk, 28 as Python reads it */
  put_text("train_gpt.py", "\xef\xbb\xbfimport os\r\nprint(os.name)\r\n");
  put_sized("final_model.int6.ptz", 1000);
  put_text("submission.json", "{\"bytes_total\": 1030, \"bytes_code\": 30}");
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.code_file_bytes, 30);
  cr_assert_eq(r.crlf, 2);
  cr_assert_eq(r.code_bytes, 28);
  cr_assert(r.bom);
  cr_assert_eq(r.total, 1028);
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 2);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS);
  HAS(f[0].text, "computed 1,028 = code 28 + model 1,000");
  HAS(f[0].text, "30 bytes on disk");
  HAS(f[0].text, "folds its 2 CRLF pairs");
  cr_assert_eq(f[1].kind, PG_FIND_DIFFERS);
  HAS(f[1].text, "counts 28 as Python reads it (30 on disk, 2 CRLF folded)");
  HAS(f[1].text, "size on disk");
  pg_record_free(&r);
}

Test(folder, differing_claims_and_their_likely_reasons) {
  put_code(122168);
  put_sized("final_model.int6.ptz", 15000000);
  /* bytes_code of a computed minified wrapper; bytes_total = model + that wrapper */
  put_text("submission.json", "{\"bytes_total\": 15027610, \"bytes_code\": 27610}");
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 2);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS);
  HAS(f[0].text, "computed 15,122,168 = code 122,168 + model 15,000,000");
  HAS(f[0].text, "94,558 bytes below");
  HAS(f[0].text, "minified");
  HAS(f[0].text, "not reproducible here");
  cr_assert_eq(f[1].kind, PG_FIND_DIFFERS);
  cr_assert_eq(f[1].claimed, 27610.0);
  cr_assert_eq(f[1].computed, 122168.0);
  HAS(f[1].text, "train_gpt.py counts 122,168");
  HAS(f[1].text, "minified");
  pg_record_free(&r);

  /* the model bytes alone; a code claim above the file */
  put_text("submission.json", "{\"bytes_total\": 15000000, \"bytes_code\": 122169}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_record_compare(&r, f), 2);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS);
  HAS(f[0].text, "the claim is the model alone");
  cr_assert_eq(f[1].kind, PG_FIND_DIFFERS);
  HAS(f[1].text, "the claim is 1 byte above");
  cr_assert_null(strstr(f[1].text, "minified"));
  pg_record_free(&r);

  /* above the count: no explanation is guessed */
  put_text("submission.json", "{\"bytes_total\": 15200000}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_record_compare(&r, f), 1);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS);
  HAS(f[0].text, "the claim is 77,832 bytes above");
  cr_assert_null(strstr(f[0].text, "minified"));
  pg_record_free(&r);
}

Test(folder, a_self_extractor_gets_no_wrapper_excuse) {
  put_text("train_gpt.py",
           "import lzma as L,base64 as B\nexec(L.decompress(B.b85decode(\"x\")))\n");
  put_sized("final_model.int6.ptz", 1000);
  put_text("submission.json", "{\"bytes_total\": 1010, \"bytes_code\": 10}");
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert(r.self_extractor);
  cr_assert_eq(r.code_bytes, 66);
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 2);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(f[i].kind, PG_FIND_DIFFERS);
    cr_assert_null(strstr(f[i].text, "minified"), "%s", f[i].text);
    HAS(f[i].text, "56 bytes below");
  }
  pg_record_free(&r);
}

Test(folder, real_negative_and_seed_claims) {
  put_code(47642);
  put_sized("final_model.int8.ptz", 15815847);
  pg_record r;
  pg_err e;
  pg_record_finding f[PG_CLAIM_COUNT];
  const pg_record_finding *g;

  put_text("submission.json", "{\"bytes_total\": 15863489.0, \"bytes_code\": 47642.5, "
                              "\"bytes_model_int6_zstd\": -1}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  int n = pg_record_compare(&r, f);
  cr_assert_eq(n, 3);
  cr_assert_eq(finding(f, n, PG_CLAIM_BYTES_TOTAL)->kind, PG_FIND_AGREES); /* a whole real */
  g = finding(f, n, PG_CLAIM_BYTES_CODE);
  cr_assert_eq(g->kind, PG_FIND_DIFFERS);
  HAS(g->text, "0.5 bytes above");
  g = finding(f, n, PG_CLAIM_BYTES_MODEL_INT6_ZSTD);
  cr_assert_eq(g->kind, PG_FIND_DIFFERS);
  HAS(g->text, "final_model.int8.ptz holds 15,815,847 bytes");
  HAS(g->text, "15,815,848 bytes below");
  pg_record_free(&r);

  /* maxima and means over seeds */
  put_text("submission.json",
           "{\"artifact_bytes_max\": 15863489, \"artifact_bytes_mean\": 15860000}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  n = pg_record_compare(&r, f);
  cr_assert_eq(n, 2);
  cr_assert_eq(finding(f, n, PG_CLAIM_ARTIFACT_BYTES_MAX)->kind, PG_FIND_AGREES);
  g = finding(f, n, PG_CLAIM_ARTIFACT_BYTES_MEAN);
  cr_assert_eq(g->kind, PG_FIND_INFO);
  HAS(g->text, "3,489 bytes below");
  pg_record_free(&r);

  put_text("submission.json", "{\"artifact_bytes_max\": 15900000}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_record_compare(&r, f), 1);
  cr_assert_eq(f[0].kind, PG_FIND_INFO); /* this seed is within the maximum */
  HAS(f[0].text, "36,511 bytes above");
  pg_record_free(&r);

  put_text("submission.json", "{\"artifact_bytes_max\": 15000000}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_record_compare(&r, f), 1);
  cr_assert_eq(f[0].kind, PG_FIND_DIFFERS); /* this folder exceeds the claimed maximum */
  HAS(f[0].text, "exceeds the claimed maximum");
  pg_record_free(&r);

  put_text("submission.json", "{\"artifact_bytes_mean\": 15863489}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_record_compare(&r, f), 1);
  cr_assert_eq(f[0].kind, PG_FIND_AGREES);
  pg_record_free(&r);
}

Test(folder, a_claims_free_submission_json) {
  put_text("train_gpt.py", "x\n");
  put_sized("final_model.int8.ptz", 10);
  put_text("submission.json", "{\"name\": \"n\", \"blurb\": \"no numbers\"}");
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(r.json_path, at("submission.json"));
  pg_record_finding f[PG_CLAIM_COUNT];
  cr_assert_eq(pg_record_compare(&r, f), 0);
  pg_record_free(&r);
}

Test(folder, the_folder_itself) {
  pg_record r;
  pg_err e;
  cr_assert_eq(pg_record_open(&r, at("nope"), NULL, &e), PG_E_NOT_FOUND);
  HAS(e.msg, "nope");
  put_text("plain", "x");
  cr_assert_eq(pg_record_open(&r, at("plain"), NULL, &e), PG_E_RECORD);
  HAS(e.msg, "not a folder");
  cr_assert_eq(pg_record_open(&r, "", NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_record_open(&r, NULL, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_record_open(NULL, dir, NULL, &e), PG_E_ARG);
}

Test(folder, missing_code) {
  pg_record r;
  pg_err e;
  put_sized("final_model.int8.ptz", 10);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_RECORD);
  HAS(e.msg, "no train_gpt.py");
  HAS(e.msg, dir);
  cr_assert_null(strchr(e.msg, '\n'));
  expect_zeroed(&r);
  cr_assert_eq(mkdir(at("train_gpt.py"), 0755), 0);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_RECORD);
  HAS(e.msg, "train_gpt.py: not a regular file");
}

Test(folder, invalid_utf8_code) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "ok\r\n\xc3(\n");
  put_sized("final_model.int8.ptz", 10);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_UTF8);
  char want[128];
  snprintf(want, sizeof want, "%s: offset 4: ", at("train_gpt.py"));
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
  expect_zeroed(&r);
}

Test(folder, code_above_its_cap) {
  pg_record r;
  pg_err e;
  put_sized("train_gpt.py", (off_t)PG_RECORD_CODE_MAX + 1);
  put_sized("final_model.int8.ptz", 10);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_LIMIT);
  HAS(e.msg, "train_gpt.py");
}

Test(folder, no_model) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "x\n");
  put_sized("final_model.pt", 10);         /* unquantized: not the counted file */
  put_sized("final_model.ptz", 10);        /* does not match final_model.*.ptz */
  put_sized("final_model.int8.ptz.bak", 10);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_RECORD);
  HAS(e.msg, "no final_model.*.ptz");
  expect_zeroed(&r);
}

Test(folder, ambiguous_models_and_the_override) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "x\n");
  put_sized("final_model.int8.ptz", 10);
  put_sized("final_model.int6.ptz", 20);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_RECORD);
  HAS(e.msg, "2 files match final_model.*.ptz (final_model.int6.ptz, final_model.int8.ptz)");
  expect_zeroed(&r);

  cr_assert_eq(open_rec(&r, "final_model.int6.ptz", &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(r.model_path, at("final_model.int6.ptz"));
  cr_assert_eq(r.total, 22);
  pg_record_free(&r);

  cr_assert_eq(open_rec(&r, at("final_model.int8.ptz"), &e), PG_OK, "%s", e.msg); /* a path */
  cr_assert_eq(r.total, 12);
  pg_record_free(&r);

  cr_assert_eq(mkdir(at("elsewhere"), 0755), 0);
  put_sized("elsewhere/other.bin", 1000); /* any file may be named */
  cr_assert_eq(open_rec(&r, at("elsewhere/other.bin"), &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.model_bytes, 1000);
  pg_record_free(&r);

  cr_assert_eq(open_rec(&r, "final_model.int4.ptz", &e), PG_E_NOT_FOUND);
  HAS(e.msg, "final_model.int4.ptz");
  expect_zeroed(&r);
  cr_assert_eq(open_rec(&r, "", &e), PG_E_ARG);
}

Test(folder, many_models_make_one_line) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "x\n");
  char name[64];
  for (int i = 0; i < 60; i++) {
    snprintf(name, sizeof name, "final_model.run%02d.int6.ptz", i);
    put_sized(name, 10);
  }
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_RECORD);
  HAS(e.msg, "60 files match");
  HAS(e.msg, "final_model.run00.int6.ptz, final_model.run01.int6.ptz");
  HAS(e.msg, ", ...)");
  cr_assert_null(strchr(e.msg, '\n'));
  cr_assert_lt(strlen(e.msg), PG_ERR_MSG_MAX);
}

Test(folder, odd_model_entries) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "x\n");
  cr_assert_eq(mkdir(at("final_model.int8.ptz"), 0755), 0); /* a folder by that name */
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_IO);
  HAS(e.msg, "not a regular file");
  rmdir(at("final_model.int8.ptz"));

  put_sized("target.bin", 4242);
  cr_assert_eq(symlink("target.bin", at("final_model..ptz")), 0); /* followed, as Python does */
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r.model_bytes, 4242);
  pg_record_free(&r);
}

Test(folder, bad_submission_json) {
  pg_record r;
  pg_err e;
  put_text("train_gpt.py", "ok\n");
  put_sized("final_model.int8.ptz", 10);
  char want[128];
  snprintf(want, sizeof want, "%s: ", at("submission.json"));

  put_text("submission.json", "{\"bytes_total\": 12,");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_JSON);
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
  expect_zeroed(&r);

  put_text("submission.json", "{\"bytes_total\": \"12\"}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_META_TYPE);
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);

  put_text("submission.json", "{\"bytes_total\": 1, \"bytes_total\": 2}");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_DUPLICATE);

  put_text("submission.json", "[1, 2]");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_JSON);

  put_text("submission.json", "");
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_JSON);

  unlink(at("submission.json"));
  put_sized("submission.json", (off_t)PG_RECORD_JSON_MAX + 1);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_LIMIT);
  unlink(at("submission.json"));

  cr_assert_eq(mkdir(at("submission.json"), 0755), 0);
  cr_assert_eq(open_rec(&r, NULL, &e), PG_E_IO);
  HAS(e.msg, "submission.json");
  expect_zeroed(&r);
}

Test(folder, inputs_are_left_as_they_were) {
  const char code[] = "import os\r\nprint(1)\r\n";
  const char json[] = "{\"bytes_total\": 31}";
  put_text("train_gpt.py", code);
  put_sized("final_model.int8.ptz", 10);
  put_text("submission.json", json);
  struct stat before[3], after[3];
  const char *names[3] = {"train_gpt.py", "final_model.int8.ptz", "submission.json"};
  for (int i = 0; i < 3; i++) cr_assert_eq(stat(at(names[i]), &before[i]), 0);
  pg_record r;
  pg_err e;
  cr_assert_eq(open_rec(&r, NULL, &e), PG_OK, "%s", e.msg);
  pg_record_free(&r);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(stat(at(names[i]), &after[i]), 0);
    cr_assert_eq(after[i].st_size, before[i].st_size);
    cr_assert_eq(after[i].st_mtime, before[i].st_mtime);
  }
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all(at("train_gpt.py"), &b, &n, 1 << 20, &e), PG_OK);
  cr_assert_eq(n, sizeof code - 1);
  cr_assert(memcmp(b, code, n) == 0);
  free(b);
}

/* A few hundred kilobytes of "{}," would cost the parser tens of megabytes: refused before it
 * runs, at the value that goes over the cap, in one line. */
Test(claims, json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("val_bpb", PG_JSON_DOC_VALUES - 2, &len);
  expect_json_error(t, len, PG_E_LIMIT, (long)PGFILLER_OVER("val_bpb", PG_JSON_DOC_VALUES));
  free(t);
}
