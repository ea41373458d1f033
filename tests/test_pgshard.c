/* test_pgshard.c: pgshard end to end with the challenge's sp8192 tokenizer (skipped where the
 * fixture or the SentencePiece library is absent): encode, check verdicts, info, prove-bytes
 * (zero disagreements on real text, and a planted disagreement found), and that failures leave
 * no shards behind. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "pg_corpus.h"
#include "pg_encode.h"
#include "pg_io.h"
#include "pg_shard.h"
#include "pgfiller.h"
#include "pgshards.h"
#include "pgtest.h"

static char tmp[64], model[512], out_path[128], err_path[128];

static void setup(void) {
  const char *fx = getenv("PG_FIXTURES");
  snprintf(model, sizeof model, "%s/tokenizers/fineweb_8192_bpe.model", fx ? fx : "/nonexistent");
  if (access(model, R_OK) != 0) cr_skip_test("fixture %s absent", model);
  if (!pg_enc_available()) cr_skip_test("built without the SentencePiece library");
  pgtest_mkdtemp(tmp, "pgshard");
  snprintf(out_path, sizeof out_path, "%s/stdout", tmp);
  snprintf(err_path, sizeof err_path, "%s/stderr", tmp);
}
static void teardown(void) {
  if (tmp[0]) pgtest_rm_rf(tmp);
}
TestSuite(pgshard, .init = setup, .fini = teardown);

static int run(const char *fmt, ...) {
  char cmd[4096], full[4400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "%s/tools/pgshard %s >%s 2>%s", getenv("PG_BUILD_ROOT"), cmd,
           out_path, err_path);
  int st = system(full);
  cr_assert(WIFEXITED(st));
  return WEXITSTATUS(st);
}

static char *slurp(const char *path) {
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, &n, 64u << 20, &e), PG_OK, "%s", e.msg);
  char *s = malloc(n + 1);
  memcpy(s, b, n);
  s[n] = '\0';
  free(b);
  return s;
}

/* A JSON-lines corpus with non-ASCII text, whitespace runs and NFKC-sensitive characters. */
static void write_corpus(const char *path, int ndocs) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  const char *pieces[] = {"The quick brown fox jumps over the lazy dog.",
                          "Ça va très bien, naïve café; Grüße aus Köln.",
                          "Ελληνικά και Русский текст, 漢字とかな交じり文.",
                          "Numbers 1234567890, \\u00bd, x\\u00b2, the \\ufb01 ligature.",
                          "Emoji 🎉 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢,\\ttabs  and   spaces."};
  for (int d = 0; d < ndocs; d++) {
    fprintf(f, "{\"text\": \"Document %d. ", d);
    for (int k = 0; k < 3 + d % 7; k++) fprintf(f, "%s ", pieces[(d + k) % 5]);
    fprintf(f, "\"}\n");
  }
  fclose(f);
}

Test(pgshard, encode_check_info_prove) {
  char corpus[128], dir[128];
  snprintf(corpus, sizeof corpus, "%s/c.jsonl", tmp);
  snprintf(dir, sizeof dir, "%s/shards", tmp);
  write_corpus(corpus, 300);
  cr_assert_eq(run("encode --model %s --val-docs 50 --shard-tokens 4000 --out %s %s", model, dir,
                   corpus),
               0, "%s", slurp(err_path));
  /* shards read back: 300 documents, the first 50 in the validation split */
  pg_shard_set *val, *train;
  pg_err e;
  char pat[256];
  snprintf(pat, sizeof pat, "%s/fineweb_val_*.bin", dir);
  cr_assert_eq(pg_shard_set_open(&val, pat, &e), PG_OK, "%s", e.msg);
  snprintf(pat, sizeof pat, "%s/fineweb_train_*.bin", dir);
  cr_assert_eq(pg_shard_set_open(&train, pat, &e), PG_OK, "%s", e.msg);
  cr_assert_gt(pg_shard_set_nfiles(train), 1); /* 4000-token shards: documents span shards */
  cr_assert_eq(pg_shard_set_token(val, 0), PG_BOS_ID);
  pg_shard_set_free(val);
  pg_shard_set_free(train);
  char *manifest_path = malloc(256);
  snprintf(manifest_path, 256, "%s/manifest.json", dir);
  json_t *m = json_load_file(manifest_path, 0, NULL);
  free(manifest_path);
  cr_assert_not_null(m);
  cr_assert_eq(json_integer_value(json_object_get(m, "documents")), 300);
  cr_assert_eq(json_integer_value(json_object_get(m, "val_documents")), 50);
  json_decref(m);

  cr_assert_eq(run("check --model %s '%s/fineweb_*.bin'", model, dir), 0, "%s", slurp(err_path));
  cr_assert_eq(run("check --vocab 300 '%s/fineweb_*.bin'", dir), 1); /* ids above 299 */
  char *er = slurp(err_path);
  cr_assert(strstr(er, "fineweb_") && strstr(er, "offset"), "%s", er);
  free(er);

  cr_assert_eq(run("info --json --model %s '%s/fineweb_val_*.bin'", model, dir), 0);
  json_t *j = json_load_file(out_path, 0, NULL);
  cr_assert(json_is_array(j));
  cr_assert_eq(json_integer_value(json_object_get(json_array_get(j, 0), "documents")), 50);
  json_decref(j);

  cr_assert_eq(run("prove-bytes --json --model %s '%s/fineweb_*.bin'", model, dir), 0,
               "%s", slurp(out_path));
  j = json_load_file(out_path, 0, NULL);
  json_t *r = json_array_get(j, 0);
  cr_assert(json_is_true(json_object_get(r, "proven")));
  cr_assert_eq(json_integer_value(json_object_get(r, "token_disagreements")), 0);
  cr_assert_eq(json_integer_value(json_object_get(r, "document_disagreements")), 0);
  cr_assert_eq(json_integer_value(json_object_get(r, "table_bytes")),
               json_integer_value(json_object_get(r, "decoded_bytes")));
  json_decref(j);
}

Test(pgshard, prove_bytes_finds_a_planted_disagreement) {
  /* After <unk> (a boundary) the table drops a leading space that the text keeps. */
  char dir[128];
  snprintf(dir, sizeof dir, "%s/s", tmp);
  pg_err e;
  cr_assert_eq(pg_mkdir_p(dir, &e), PG_OK);
  pg_enc *enc;
  cr_assert_eq(pg_enc_open(&enc, model, &e), PG_OK, "%s", e.msg);
  int32_t *ids;
  size_t n;
  cr_assert_eq(pg_enc_encode(enc, "in the beginning", 16, &ids, &n, &e), PG_OK);
  pg_enc_free(enc);
  uint16_t tok[64];
  size_t k = 0;
  tok[k++] = PG_BOS_ID;
  tok[k++] = 3; /* <unk> */
  for (size_t i = 1; i < n; i++) tok[k++] = (uint16_t)ids[i]; /* "▁the ▁beginning" */
  free(ids);
  pg_shard_writer *w;
  cr_assert_eq(pg_shard_writer_open(&w, dir, "x_", 1000, &e), PG_OK);
  cr_assert_eq(pg_shard_writer_append(w, tok, k, &e), PG_OK);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK);
  pg_shard_writer_free(w);
  cr_assert_eq(run("prove-bytes --model %s '%s/x_*.bin'", model, dir), 1, "%s", slurp(out_path));
  char *o = slurp(out_path);
  cr_assert(strstr(o, "disagreements  1 tokens") != NULL, "%s", o);
  cr_assert(strstr(o, "DISAGREEMENTS") != NULL);
  free(o);
}

Test(pgshard, failures_leave_no_shards) {
  char corpus[128], dir[128];
  snprintf(corpus, sizeof corpus, "%s/bad.jsonl", tmp);
  snprintf(dir, sizeof dir, "%s/out", tmp);
  FILE *f = fopen(corpus, "w");
  for (int i = 0; i < 2000; i++)
    fprintf(f, "{\"text\": \"document %d with some words in it\"}\n", i);
  fprintf(f, "{\"text\": 42}\n"); /* not a string: fails after shards were written */
  fclose(f);
  cr_assert_eq(run("encode --model %s --shard-tokens 1000 --out %s %s", model, dir, corpus), 2);
  char *er = slurp(err_path);
  cr_assert(strstr(er, "bad.jsonl") && strstr(er, "line 2001"), "%s", er);
  free(er);
  /* a line of filler: refused before it is parsed, at the value over the cap */
  f = fopen(corpus, "w");
  fprintf(f, "{\"text\": \"one document\"}\n");
  char *fill = pgfiller_json("text", PG_JSON_DOC_VALUES - 2, NULL);
  fprintf(f, "%s\n", fill);
  free(fill);
  fclose(f);
  cr_assert_eq(run("encode --model %s --shard-tokens 1000 --out %s %s", model, dir, corpus), 2);
  er = slurp(err_path);
  char over[96];
  snprintf(over, sizeof over,
           "bad.jsonl: offset 25: line 2: offset %llu: more than %u JSON values",
           25 + (unsigned long long)PGFILLER_OVER("text", PG_JSON_DOC_VALUES), PG_JSON_DOC_VALUES);
  cr_assert(strstr(er, over), "%s", er);
  free(er);
  char pat[256];
  snprintf(pat, sizeof pat, "%s/fineweb_*", dir);
  pg_shard_set *s;
  pg_err e;
  cr_assert_eq(pg_shard_set_open(&s, pat, &e), PG_E_EMPTY_SET); /* nothing left behind */
  /* an existing shard set is not overwritten */
  snprintf(corpus, sizeof corpus, "%s/ok.jsonl", tmp);
  write_corpus(corpus, 3);
  cr_assert_eq(run("encode --model %s --out %s %s", model, dir, corpus), 0);
  cr_assert_eq(run("encode --model %s --out %s %s", model, dir, corpus), 2);
  cr_assert_eq(run("check --model %s '%s/nothing_*.bin'", model, dir), 2);
  cr_assert_eq(run("frobnicate"), 2);
}

/* Shard patterns and file names come from outside: reports escape them, --json keeps their
 * bytes ({"hex", "display"} where they are not UTF-8). */
Test(pgshard, names_escaped_and_json_lossless) {
  char dir[160];
  snprintf(dir, sizeof dir, "%s/s\xff\x1b[2J", tmp);
  cr_assert(mkdir(dir, 0777) == 0);
  uint16_t t[512];
  for (int i = 0; i < 512; i++) t[i] = i % 40 == 0 ? 1 : (uint16_t)(5 + i * 7 % 8000);
  pgshards_write(dir, "fineweb_val_", t, 512, 1 << 20);
  const char *cmds[] = {"info --model %s '%s/fineweb_val_*.bin'",
                        "check --model %s '%s/fineweb_val_*.bin'",
                        "prove-bytes --model %s '%s/fineweb_val_*.bin'",
                        "info --json --model %s '%s/fineweb_val_*.bin'"};
  for (int k = 0; k < 4; k++) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, cmds[k], model, dir);
    int rc = run("%s", cmd);
    cr_assert(rc == 0 || (k == 2 && rc == 1), "%s: %d %s", cmd, rc, slurp(err_path));
    char *o = slurp(out_path);
    cr_assert_null(strchr(o, '\x1b'), "%s: raw ESC: %s", cmd, o);
    cr_assert(pg_utf8_valid((const uint8_t *)o, strlen(o), NULL), "%s: not UTF-8: %s", cmd, o);
    if (k < 3) cr_assert(strstr(o, "s\\xff\\x1b[2J/"), "%s: %s", cmd, o);
    free(o);
  }
  json_t *j = json_load_file(out_path, 0, NULL);
  json_t *s = json_object_get(json_array_get(j, 0), "shards");
  cr_assert(json_is_object(s), "the pattern was dropped");
  cr_assert(strstr(json_string_value(json_object_get(s, "hex")), "73ff1b5b324a2f"));
  json_decref(j);
}

/* ---- encode's text input, with the small byte-fallback model in the tree (no fixture) ---- */

static void setup_small(void) {
  const char *src = getenv("PG_SOURCE_ROOT");
  snprintf(model, sizeof model, "%s/tests/fuzz/seeds/spm/byte_fallback.model", src ? src : ".");
  if (access(model, R_OK) != 0) cr_skip_test("%s absent", model);
  if (!pg_enc_available()) cr_skip_test("built without the SentencePiece library");
  pgtest_mkdtemp(tmp, "pgshard");
  snprintf(out_path, sizeof out_path, "%s/stdout", tmp);
  snprintf(err_path, sizeof err_path, "%s/stderr", tmp);
}
TestSuite(encode_input, .init = setup_small, .fini = teardown);

static void write_text(const char *path, const char *text, size_t len) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f);
  cr_assert_eq(fwrite(text, 1, len, f), len);
  cr_assert_eq(fclose(f), 0);
}

/* A document that encodes to no ids used to become a lone BOS: at the end of a split the
 * challenge's _find_docs refuses it (a document of length 1), elsewhere it scores a BOS after a
 * BOS. It is refused, naming the input, its line and offset, and nothing is left behind. */
Test(encode_input, empty_document_refused) {
  char corpus[128], dir[128];
  snprintf(corpus, sizeof corpus, "%s/c.jsonl", tmp);
  snprintf(dir, sizeof dir, "%s/out", tmp);
  static const char text[] = "{\"text\": \"first document\"}\n{\"text\": \"\"}\n";
  write_text(corpus, text, sizeof text - 1);
  cr_assert_eq(run("encode --model %s --val-docs 2 --out %s %s", model, dir, corpus), 2);
  char *er = slurp(err_path);
  char want[256];
  snprintf(want, sizeof want, "%s: offset 27: line 2 (document 1): encodes to no tokens", corpus);
  cr_assert(strstr(er, want), "%s", er);
  free(er);
  char pat[256];
  snprintf(pat, sizeof pat, "%s/fineweb_*", dir);
  pg_shard_set *s;
  pg_err e;
  cr_assert_eq(pg_shard_set_open(&s, pat, &e), PG_E_EMPTY_SET);
  struct stat sb;
  cr_assert(stat(dir, &sb) != 0, "the output folder this run made is left behind");
}

/* "\u0000" is text for Python's json (the challenge reads its documents with it); it used to be
 * refused as malformed JSON. Blank lines, also of spaces only, are skipped. */
Test(encode_input, nul_escape_is_text) {
  char corpus[128], dir[128];
  snprintf(corpus, sizeof corpus, "%s/c.jsonl", tmp);
  snprintf(dir, sizeof dir, "%s/out", tmp);
  static const char text[] = "{\"text\": \"a\\u0000b\"}\n  \n{\"text\": \"c\"}\n";
  write_text(corpus, text, sizeof text - 1);
  cr_assert_eq(run("encode --model %s --val-docs 1 --out %s %s", model, dir, corpus), 0, "%s",
               slurp(err_path));
  char *m = slurp(strcat(dir, "/manifest.json"));
  json_error_t je;
  json_t *j = json_loads(m, 0, &je);
  cr_assert_not_null(j, "%s", m);
  cr_assert_eq(json_integer_value(json_object_get(j, "documents")), 2);
  cr_assert_eq(json_integer_value(json_object_get(j, "val_documents")), 1);
  json_decref(j);
  free(m);
}

/* The library behind encode: a line over the document limit is refused with its offset and
 * number before it is read whole; statistics agree with the shards; a refused run leaves none. */
Test(encode_input, corpus_limits_and_counts) {
  pg_enc *enc;
  pg_err e;
  cr_assert_eq(pg_enc_open(&enc, model, &e), PG_OK, "%s", e.msg);
  char dir[128], corpus[128];
  snprintf(dir, sizeof dir, "%s/out", tmp);
  snprintf(corpus, sizeof corpus, "%s/c.jsonl", tmp);
  static const char text[] =
      "{\"text\": \"short\"}\n{\"text\": \"a line longer than the limit\"}\n";
  write_text(corpus, text, sizeof text - 1);
  pg_corpus_cfg cfg = {.dir = dir, .shard_tokens = 4, .val_docs = 1, .threads = 1,
                       .max_doc = 24};
  pg_corpus *c;
  cr_assert_eq(pg_corpus_open(&c, enc, &cfg, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_add_file(c, corpus, &e), PG_E_LIMIT);
  char want[256];
  snprintf(want, sizeof want, "%s: offset 18: line 2: longer than 24 bytes", corpus);
  cr_assert_str_eq(e.msg, want);
  cr_assert_eq(pg_corpus_finish(c, &e), PG_E_LIMIT, "the run stays refused");
  pg_corpus_free(c);
  char pat[256];
  snprintf(pat, sizeof pat, "%s/*", dir);
  pg_shard_set *s;
  cr_assert_eq(pg_shard_set_open(&s, pat, &e), PG_E_EMPTY_SET, "nothing left behind");
  /* without the limit: two documents, 1 + ids tokens each, shards of 4 read back */
  cfg.max_doc = 0;
  cr_assert_eq(pg_corpus_open(&c, enc, &cfg, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_add_file(c, corpus, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_add_text(c, "plain", 5, "mem", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_add_text(c, "\xff", 1, "mem", &e), PG_E_UTF8);
  pg_corpus_free(c);
  cr_assert_eq(pg_corpus_open(&c, enc, &cfg, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_add_file(c, corpus, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_corpus_finish(c, &e), PG_OK, "%s", e.msg);
  const pg_corpus_stats *st = pg_corpus_stats_of(c);
  cr_assert_eq(st->docs, 2);
  cr_assert_eq(st->val_docs, 1);
  snprintf(pat, sizeof pat, "%s/fineweb_val_*.bin", dir);
  cr_assert_eq(pg_shard_set_open(&s, pat, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_set_count(s), st->val_tokens);
  cr_assert_eq(pg_shard_set_token(s, 0), PG_BOS_ID);
  pg_shard_set_free(s);
  snprintf(pat, sizeof pat, "%s/fineweb_train_*.bin", dir);
  cr_assert_eq(pg_shard_set_open(&s, pat, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_set_count(s), st->train_tokens);
  pg_shard_set_free(s);
  pg_corpus_free(c);
  /* a second run into the same folder is refused rather than mixed with the first */
  cr_assert_eq(pg_corpus_open(&c, enc, &cfg, &e), PG_E_EXISTS);
  pg_enc_free(enc);
}

/* prove-bytes on a shard holding an id outside the model's vocabulary: one error line, exit 2,
 * and nothing leaked (the shard set was left open on this path; LeakSanitizer fails the run). */
Test(pgshard, prove_bytes_out_of_range_id_is_an_error) {
  char dir[128];
  snprintf(dir, sizeof dir, "%s/s", tmp);
  pg_err e;
  cr_assert_eq(pg_mkdir_p(dir, &e), PG_OK);
  uint16_t tok[4] = {PG_BOS_ID, 100, 9000, 101};
  pg_shard_writer *w;
  cr_assert_eq(pg_shard_writer_open(&w, dir, "x_", 1000, &e), PG_OK);
  cr_assert_eq(pg_shard_writer_append(w, tok, 4, &e), PG_OK);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK);
  pg_shard_writer_free(w);
  cr_assert_eq(run("prove-bytes --model %s '%s/x_*.bin'", model, dir), 2, "%s", slurp(err_path));
  char *m = slurp(err_path);
  cr_assert(strstr(m, "outside a vocabulary of 8192") != NULL, "%s", m);
  free(m);
}

/* A FIFO as encode's text input (plain or JSON lines) or as --model is refused at once (.timeout
 * only turns a hang into a failure). */
Test(pgshard, fifo_inputs_are_refused_without_blocking, .timeout = 120) {
  char fifo[128], jl[128], dir[128];
  snprintf(fifo, sizeof fifo, "%s/pipe", tmp);
  snprintf(jl, sizeof jl, "%s/pipe.jsonl", tmp);
  snprintf(dir, sizeof dir, "%s/out", tmp);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  cr_assert_eq(mkfifo(jl, 0600), 0);
  const char *inputs[2] = {fifo, jl};
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(run("encode --model %s --out %s %s", model, dir, inputs[i]), 2);
    char *m = slurp(err_path);
    cr_assert(strstr(m, "FIFO") != NULL, "%s", m);
    free(m);
  }
  cr_assert_eq(run("encode --model %s --out %s %s", fifo, dir, jl), 2);
  char *m = slurp(err_path);
  cr_assert(strstr(m, "FIFO") != NULL, "%s", m);
  free(m);
}
