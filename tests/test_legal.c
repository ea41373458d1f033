/* test_legal.c: pglegal (spec/legal.md). A legal demo artifact passes all eight checks; one
 * illegal variant per fault class an artifact can carry is caught by its check: attention that
 * sees a future token (L1), an unnormalised score (L2), an update before its targets are scored
 * (L3), a target scored twice and the tail variant (L4), an artifact over the limit, without its
 * code, with byte tables that miscount or another tokenizer (L5), validation tokens or text
 * planted in the code and training shards holding a validation document (L6). Then the report
 * (JSON, Markdown), the reader and merge of the record analyzer's output, the protocol text
 * reader, and the tool end to end (exit codes, --json, --markdown, record folders). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_demo.h"
#include "pg_io.h"
#include "pg_legal.h"
#include "pg_legal_testing.h"
#include "pg_protocol_text.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_weights.h"
#include "pgfiller.h"
#include "pgleak.h"
#include "pgshards.h"
#include "pgtest.h"

static char tmp[64];
static char tokpath[512], valpat[200], trainpat[200];
static uint32_t vocab;
static uint16_t *stream; /* the validation tokens */
static size_t nstream;

#define PROTO "--protocol sliding --seq-len 64 --stride 16"

static const char *path_in(const char *name) {
  static char p[4][256];
  static int k;
  k = (k + 1) % 4;
  snprintf(p[k], sizeof p[k], "%s/%s", tmp, name);
  return p[k];
}

static void write_file(const char *path, const void *b, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "%s", path);
  cr_assert_eq(fwrite(b, 1, n, f), n);
  cr_assert_eq(fclose(f), 0);
}

/* Documents of 40..340 tokens, each starting with BOS (1), the other ids in [4, vocab). */
static uint16_t *make_stream(size_t n, uint32_t seed) {
  return pgshards_random_docs(n, seed, vocab, 40, 301);
}

static void write_shards(const char *dir, const char *prefix, const uint16_t *t, size_t n) {
  cr_assert(mkdir(dir, 0777) == 0 || access(dir, F_OK) == 0);
  pgshards_write(dir, prefix, t, n, 1 << 20);
}

static void setup(void) {
  pgtest_mkdtemp(tmp, "pglegal");
  snprintf(tokpath, sizeof tokpath, "%s/tests/fuzz/seeds/spm/byte_fallback.model",
           getenv("PG_SOURCE_ROOT"));
  pg_spm *m;
  pg_err e;
  cr_assert_eq(pg_spm_open_file(&m, tokpath, &e), PG_OK, "%s", e.msg);
  vocab = pg_spm_vocab_size(m);
  pg_spm_free(m);
  nstream = 2049;
  stream = make_stream(nstream, 88172645u);
  write_shards(path_in("val"), "fineweb_val_", stream, nstream);
  snprintf(valpat, sizeof valpat, "%s/val/fineweb_val_*.bin", tmp);
  uint16_t *train = make_stream(20000, 12345u);
  write_shards(path_in("train"), "fineweb_train_", train, 20000);
  free(train);
  snprintf(trainpat, sizeof trainpat, "%s/train/fineweb_train_*.bin", tmp);
}

static void teardown(void) {
  free(stream);
  pgtest_rm_rf(tmp);
}

TestSuite(legal, .init = setup, .fini = teardown);

/* A demo artifact with the tokenizer and the given code files. */
static void demo(const char *out, const char *const *code, size_t ncode, int with_tokenizer) {
  pg_demo_cfg c = {.layers = 2, .dim = 32, .heads = 4, .kv_heads = 2, .hidden = 64,
                   .vocab = vocab, .bits = 6, .embed_bits = 8, .clip = 12.85, .embed_clip = 20,
                   .codec = {PG_CODEC_ZSTD, 3, 0, 0, 0}, .code = code, .ncode = ncode,
                   .tokenizer = with_tokenizer ? tokpath : NULL, .seed = 7, .out = out};
  pg_err e;
  cr_assert_eq(pg_demo_write(&c, &e), PG_OK, "%s", e.msg);
}

/* A plain code file (this test's own source would do; a short text keeps it small). */
static const char *code_file(void) {
  const char *p = path_in("train_gpt.py");
  const char *s = "import torch\n# the training script of the demo submission\nprint('hi')\n";
  write_file(p, s, strlen(s));
  return p;
}

static const char *legal_artifact(void) {
  static char a[256];
  snprintf(a, sizeof a, "%s/legal.pgz", tmp);
  const char *code[] = {code_file()};
  demo(a, code, 1, 1);
  return a;
}

static void run_checks(const char *art, const char *proto, const char *train, pg_engine *e,
                       const pg_legal_test *t, pg_legal_report *r) {
  pg_err err;
  cr_assert_eq(pg_legal_report_init(r, "artifact", art, &err), PG_OK);
  pg_legal_cfg cfg = {.artifact = art, .val = valpat, .train = train, .protocol = proto,
                      .engine = e, .threads = 1};
  cr_assert_eq(pg_legal_run_hooked(&cfg, t, r, &err), PG_OK, "%s", err.msg);
}

static int verdict(pg_legal_report *r, const char *id) {
  return pg_legal_report_check(r, id)->verdict;
}

/* The first finding of check id with this severity whose title contains text (NULL: none). */
static const pg_legal_finding *finding(pg_legal_report *r, const char *id, int sev,
                                       const char *text) {
  const pg_legal_check *c = pg_legal_report_check(r, id);
  for (size_t k = 0; k < c->nfindings; k++)
    if (c->findings[k].severity == sev && strstr(c->findings[k].title, text))
      return &c->findings[k];
  return NULL;
}

static void dump(pg_legal_report *r) {
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    fprintf(stderr, "%s %s %s\n", c->id, pg_legal_verdict_name(c->verdict), c->summary);
    for (size_t k = 0; k < c->nfindings; k++)
      fprintf(stderr, "   %s: %s\n", pg_legal_severity_name(c->findings[k].severity),
              c->findings[k].title);
  }
}

static void expect_only(pg_legal_report *r, const char *id) {
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    const int want = id && !strcmp(c->id, id) ? PG_LEGAL_FINDING : PG_LEGAL_PASS;
    if (c->verdict != want) dump(r);
    cr_assert_eq(c->verdict, want, "%s: %s (%s)", c->id, pg_legal_verdict_name(c->verdict),
                 c->summary);
  }
  cr_assert_eq(pg_legal_report_exit(r), id ? 1 : 0);
}

/* ---- a legal artifact ---------------------------------------------------------------------- */

Test(legal, legal_artifact_passes_every_check) {
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, PROTO, trainpat, NULL, NULL, &r);
  expect_only(&r, NULL);
  /* each check says what it ran */
  cr_assert_not_null(finding(&r, "L1", PG_LEGAL_INFO, "probes"));
  cr_assert_not_null(finding(&r, "L5", PG_LEGAL_INFO, "byte tables proven"));
  cr_assert_not_null(finding(&r, "L6", PG_LEGAL_INFO, "train/validation overlap: 0 of"));
  pg_legal_report_free(&r);
}

Test(legal, legal_ttt_artifact_passes_and_reports_its_updates) {
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, "--protocol ttt-chunk --seq-len 64 --stride 16 --epochs 1", NULL, NULL, NULL,
             &r);
  expect_only(&r, NULL);
  const pg_legal_finding *f = finding(&r, "L3", PG_LEGAL_INFO, "updates");
  cr_assert_not_null(f);
  int chunks = 0;
  for (size_t e = 0; e < f->nevidence; e++) chunks += strstr(f->evidence[e], "chunk ") != NULL;
  cr_assert_geq(chunks, 2, "every update is listed with the targets it read");
  pg_legal_report_free(&r);
}

/* ---- one illegal variant per fault class ------------------------------------------------- */

Test(legal, attention_that_sees_the_next_token_fails_L1) {
  const char *a = legal_artifact();
  pg_engine leak = pgleak_attention();
  pg_legal_report r;
  run_checks(a, PROTO, NULL, &leak, NULL, &r);
  cr_assert_eq(verdict(&r, "L1"), PG_LEGAL_FINDING);
  const pg_legal_finding *f = finding(&r, "L1", PG_LEGAL_ILLEGAL, "depends on a later token");
  cr_assert_not_null(f);
  cr_assert_geq(f->nevidence, 2);
  cr_assert_eq(pg_legal_report_exit(&r), 1);
  pg_legal_report_free(&r);
}

/* The legal artifact re-packed with the arch's document mask on (attention.doc_mask): its
 * tensors through safetensors without the stored arch, then pgpack with the changed arch. */
static const char *doc_mask_artifact_cap(int cap) {
  const char *a = legal_artifact(), *st = path_in("w.safetensors"),
             *st2 = path_in("w2.safetensors");
  const char *archp = path_in(cap ? "maskcap.json" : "mask.json");
  const char *out = path_in(cap ? "maskcap.pgz" : "mask.pgz");
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "%s/tools/pgunpack %s --safetensors %s >/dev/null 2>&1",
           getenv("PG_BUILD_ROOT"), a, st);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  char *arch = pg_weights_meta(st, NULL, "arch.json");
  cr_assert_not_null(arch);
  json_t *j = json_loads(arch, 0, NULL);
  cr_assert_not_null(j);
  json_t *att = json_object_get(j, "attention");
  if (!att) json_object_set_new(j, "attention", att = json_object());
  json_object_set_new(att, "doc_mask", json_true());
  if (cap) json_object_set_new(att, "doc_max_len", json_integer(cap));
  cr_assert_eq(json_dump_file(j, archp, 0), 0);
  json_decref(j);
  free(arch);
  /* the same file without its __metadata__ (so that --arch is the only arch) */
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(st, &b, &n, 64u << 20, &e), PG_OK, "%s", e.msg);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
  json_t *h = json_loadb((const char *)b + 8, (size_t)hl, 0, NULL);
  cr_assert_not_null(h);
  json_object_del(h, "__metadata__");
  char *t = json_dumps(h, JSON_COMPACT);
  size_t tl = strlen(t), pad = (8 - tl % 8) % 8;
  FILE *f = fopen(st2, "wb");
  cr_assert_not_null(f);
  uint8_t len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((tl + pad) >> (8 * i));
  fwrite(len8, 1, 8, f);
  fwrite(t, 1, tl, f);
  for (size_t i = 0; i < pad; i++) fputc(' ', f);
  fwrite(b + 8 + hl, 1, n - 8 - hl, f);
  cr_assert_eq(fclose(f), 0);
  free(t);
  json_decref(h);
  free(b);
  snprintf(cmd, sizeof cmd, "%s/tools/pgpack --weights %s --arch %s --tokenizer %s --code %s "
           "--codec zstd-3 -o %s >/dev/null 2>&1", getenv("PG_BUILD_ROOT"), st2, archp, tokpath,
           code_file(), out);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  return out;
}

static const char *doc_mask_artifact(void) { return doc_mask_artifact_cap(0); }

/* Attention that ignores the document mask (the CPU's, with no segments). */
static void (*cpu_attention)(const pg_ops *, pg_real *, const pg_real *, const pg_real *,
                             const pg_real *, const int32_t *, int, int, int, int, int, float);
static void nomask_attention(const pg_ops *e, pg_real *out, const pg_real *q, const pg_real *k,
                             const pg_real *v, const int32_t *seg, int B, int T, int H, int Hkv,
                             int d, float s) {
  (void)seg;
  cpu_attention(e, out, q, k, v, NULL, B, T, H, Hkv, d, s);
}

Test(legal, documents_the_arch_masks_are_probed_for_isolation) {
  const char *a = doc_mask_artifact();
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, NULL, &r);
  expect_only(&r, NULL);
  const pg_legal_finding *f = finding(&r, "L1", PG_LEGAL_INFO, "probes");
  cr_assert(strstr(f->evidence[1], "document mask: ") && !strstr(f->evidence[1], ": 0 probes"),
            "%s", f->evidence[1]);
  pg_legal_report_free(&r);
  /* an engine that does not apply the mask: the next document sees the one before (causal, but
   * not the isolation the arch claims) */
  pg_engine e = pg_engine_cpu(1);
  cpu_attention = e.ops.attention_fwd;
  e.ops.attention_fwd = nomask_attention;
  run_checks(a, PROTO, NULL, &e, NULL, &r);
  cr_assert_eq(verdict(&r, "L1"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L1", PG_LEGAL_WARNING, "depends on the document before it"));
  cr_assert_null(finding(&r, "L1", PG_LEGAL_ILLEGAL, ""), "causal all the same");
  pg_legal_report_free(&r);
}

Test(legal, an_unnormalised_score_fails_L2) {
  const char *a = legal_artifact();
  pg_engine un = pgleak_unnormalised();
  pg_legal_report r;
  run_checks(a, PROTO, NULL, &un, NULL, &r);
  cr_assert_eq(verdict(&r, "L2"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L2", PG_LEGAL_ILLEGAL, "normalised"));
  cr_assert_eq(verdict(&r, "L1"), PG_LEGAL_PASS, "causal all the same");
  pg_legal_report_free(&r);
}

Test(legal, an_update_before_scoring_fails_L3) {
  const char *a = legal_artifact();
  pg_legal_test t = {.inject_update_before_commit = 1};
  pg_legal_report r;
  run_checks(a, "--protocol ttt-chunk --seq-len 64 --stride 16 --epochs 1", NULL, NULL, &t, &r);
  cr_assert_eq(verdict(&r, "L3"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L3", PG_LEGAL_ILLEGAL, "before its score is committed"));
  cr_assert_eq(pg_legal_report_exit(&r), 1);
  pg_legal_report_free(&r);
}

Test(legal, a_target_scored_twice_fails_L4) {
  const char *a = legal_artifact();
  pg_legal_test t = {.inject_double_score = 1};
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, &t, &r);
  cr_assert_eq(verdict(&r, "L4"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L4", PG_LEGAL_ILLEGAL, "scored twice"));
  pg_legal_report_free(&r);
}

Test(legal, the_tail_variant_is_a_warning_of_L4) {
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, PROTO " --tail-dup", NULL, NULL, NULL, &r);
  cr_assert_eq(verdict(&r, "L4"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L4", PG_LEGAL_WARNING, "scored a second time"));
  pg_legal_report_free(&r);
}

/* The early records' variants leave targets unscored: not a second scoring (no illegal
 * finding), but a warning of L4 that the figure is not over every target, and L8 says over how
 * many it is. */
Test(legal, a_variant_that_skips_targets_is_a_warning_of_L4) {
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, "--protocol sliding --seq-len 64 --stride 24 --sliding-variant last-s", NULL,
             NULL, NULL, &r);
  cr_assert_eq(verdict(&r, "L4"), PG_LEGAL_FINDING);
  cr_assert_not_null(finding(&r, "L4", PG_LEGAL_WARNING, "does not score every target"));
  cr_assert_null(finding(&r, "L4", PG_LEGAL_ILLEGAL, ""));
  cr_assert_eq(verdict(&r, "L3"), PG_LEGAL_PASS);
  cr_assert(strstr(pg_legal_report_check(&r, "L4")->summary, "not every target") != NULL, "%s",
            pg_legal_report_check(&r, "L4")->summary);
  pg_legal_report_free(&r);
}

/* The packed plain variant (the 2026-04 records' eval_val) on an arch whose document mask caps
 * segments at L: the prefix of four windows is too short for 8 ranks of 32-window rows, so the
 * layout is scaled to one row of three windows, the fourth dropped: L4 warns, L8 says so. */
Test(legal, the_packed_variant_is_a_warning_of_L4_on_a_scaled_row) {
  const char *a = doc_mask_artifact_cap(64);
  pg_legal_report r;
  run_checks(a, "--protocol plain --seq-len 64 --plain-variant packed", NULL, NULL, NULL, &r);
  cr_assert_eq(verdict(&r, "L4"), PG_LEGAL_FINDING);
  const pg_legal_finding *f = finding(&r, "L4", PG_LEGAL_WARNING, "does not score every target");
  cr_assert_not_null(f);
  cr_assert(strstr(f->title, "192 of T = 256") && strstr(f->title, "64 never scored"), "%s",
            f->title);
  cr_assert_eq(verdict(&r, "L3"), PG_LEGAL_PASS);
  cr_assert_eq(verdict(&r, "L8"), PG_LEGAL_PASS, "%s", pg_legal_report_check(&r, "L8")->summary);
  pg_legal_report_free(&r);
}

Test(legal, an_artifact_over_the_limit_fails_L5) {
  const char *a = legal_artifact();
  pg_legal_test t = {.budget = 10000};
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, &t, &r);
  expect_only(&r, "L5");
  cr_assert_not_null(finding(&r, "L5", PG_LEGAL_ILLEGAL, "over the 10000-byte limit"));
  pg_legal_report_free(&r);
}

Test(legal, an_artifact_without_its_code_fails_L5) {
  const char *a = path_in("nocode.pgz");
  demo(a, NULL, 0, 1);
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, NULL, &r);
  expect_only(&r, "L5");
  cr_assert_not_null(finding(&r, "L5", PG_LEGAL_WARNING, "holds no code"));
  pg_legal_report_free(&r);
}

/* Byte tables that count one more byte for every token 4..: what a miscounting LUT does. */
static void miscount(void *ctx, pg_spm_tables *t) {
  (void)ctx;
  for (uint32_t i = 4; i < t->size; i++) t->base[i]++;
}

Test(legal, byte_tables_that_miscount_fail_L5) {
  const char *a = legal_artifact();
  pg_legal_test t = {.mutate_tables = miscount};
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, &t, &r);
  cr_assert_eq(verdict(&r, "L5"), PG_LEGAL_FINDING);
  const pg_legal_finding *f = finding(&r, "L5", PG_LEGAL_ILLEGAL, "byte tables miscount");
  cr_assert_not_null(f);
  cr_assert_geq(f->nevidence, 2, "the first disagreements are shown");
  pg_legal_report_free(&r);
}

Test(legal, another_tokenizer_than_the_one_given_fails_L5) {
  const char *a = legal_artifact();
  pg_legal_report r;
  pg_err err;
  char other[600];
  snprintf(other, sizeof other, "%s/tests/fuzz/seeds/spm/small_bpe.model",
           getenv("PG_SOURCE_ROOT"));
  cr_assert_eq(pg_legal_report_init(&r, "artifact", a, &err), PG_OK);
  pg_legal_cfg cfg = {.artifact = a, .val = valpat, .protocol = PROTO, .tokenizer = other,
                      .threads = 1};
  cr_assert_eq(pg_legal_run(&cfg, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_not_null(finding(&r, "L5", PG_LEGAL_ILLEGAL, "not the one given"));
  pg_legal_report_free(&r);
  /* the same file: identified */
  cr_assert_eq(pg_legal_report_init(&r, "artifact", a, &err), PG_OK);
  cfg.tokenizer = tokpath;
  cr_assert_eq(pg_legal_run(&cfg, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(verdict(&r, "L5"), PG_LEGAL_PASS);
  pg_legal_report_free(&r);
}

Test(legal, validation_tokens_in_the_code_fail_L6) {
  /* 40 validation tokens as the shards store them, inside a code file, at an odd offset */
  uint8_t b[1 + 80 + 16];
  b[0] = '#';
  for (int i = 0; i < 40; i++) {
    b[1 + 2 * i] = (uint8_t)(stream[700 + i] & 0xff);
    b[2 + 2 * i] = (uint8_t)(stream[700 + i] >> 8);
  }
  memset(b + 81, '\n', 16);
  const char *cf = path_in("tokens.py");
  write_file(cf, b, sizeof b);
  const char *a = path_in("planted.pgz");
  const char *code[] = {code_file(), cf};
  demo(a, code, 2, 1);
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, NULL, &r);
  expect_only(&r, "L6");
  const pg_legal_finding *f = finding(&r, "L6", PG_LEGAL_ILLEGAL, "consecutive validation tokens");
  cr_assert_not_null(f);
  cr_assert(strstr(f->title, "tokens.py") != NULL, "%s", f->title);
  cr_assert(strstr(f->evidence[0], "[700, 740)") != NULL, "%s", f->evidence[0]);
  pg_legal_report_free(&r);
}

/* The decoded text of validation tokens [from, to) (the pieces' text, U+2581 as a space). */
static size_t decode(size_t from, size_t to, char *out, size_t cap) {
  pg_spm *m;
  pg_err e;
  cr_assert_eq(pg_spm_open_file(&m, tokpath, &e), PG_OK, "%s", e.msg);
  size_t n = 0;
  for (size_t i = from; i < to; i++) {
    cr_assert_neq(stream[i], 1, "the range must stay inside one document");
    const pg_spm_piece *p = pg_spm_piece_at(m, stream[i]);
    if (p->type == PG_SPM_BYTE) {
      unsigned v;
      cr_assert_eq(sscanf(p->piece, "<0x%2X>", &v), 1);
      out[n++] = (char)v;
      continue;
    }
    if (p->type != PG_SPM_NORMAL && p->type != PG_SPM_USER_DEFINED) continue;
    for (uint32_t k = 0; k < p->len;) {
      if (k + 3 <= p->len && !memcmp(p->piece + k, "\xE2\x96\x81", 3)) {
        out[n++] = ' ';
        k += 3;
      } else {
        out[n++] = p->piece[k++];
      }
      cr_assert_lt(n, cap);
    }
  }
  pg_spm_free(m);
  return n;
}

Test(legal, validation_text_in_the_code_fails_L6) {
  size_t d = 0, e = 0; /* a long document of the stream: its text after its first token */
  for (size_t i = 0; i < nstream && !e; i++)
    if (stream[i] == 1) {
      size_t j = i + 1;
      while (j < nstream && stream[j] != 1) j++;
      if (j - i > 280) d = i, e = j;
    }
  cr_assert_gt(e, d);
  char text[8192];
  size_t n = decode(d + 2, e, text, sizeof text);
  cr_assert_geq(n, 256, "the planted text is long enough to be illegal anywhere");
  const char *cf = path_in("quote.py");
  char body[9000];
  int k = snprintf(body, sizeof body, "DOC = \"\"\"");
  memcpy(body + k, text, n);
  memcpy(body + k + n, "\"\"\"\n", 4);
  write_file(cf, body, (size_t)k + n + 4);
  const char *a = path_in("text.pgz");
  const char *code[] = {cf};
  demo(a, code, 1, 1);
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, NULL, &r);
  expect_only(&r, "L6");
  cr_assert_not_null(finding(&r, "L6", PG_LEGAL_ILLEGAL, "bytes of validation text"));
  pg_legal_report_free(&r);
}

Test(legal, a_validation_document_in_the_training_shards_fails_L6) {
  size_t d0 = 0, d1 = 0;
  for (size_t i = 300; i < nstream && !d1; i++)
    if (stream[i] == 1) d0 ? (void)(d1 = i) : (void)(d0 = i);
  cr_assert_gt(d1, d0);
  uint16_t *t = make_stream(6000, 999u);
  /* a training document that is the validation document [d0, d1) */
  memcpy(t + 3000, stream + d0, (d1 - d0) * sizeof *t);
  t[3000 + (d1 - d0)] = 1;
  write_shards(path_in("train2"), "fineweb_train_", t, 6000);
  free(t);
  char pat[200];
  snprintf(pat, sizeof pat, "%s/train2/fineweb_train_*.bin", tmp);
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, PROTO, pat, NULL, NULL, &r);
  expect_only(&r, "L6");
  cr_assert_not_null(finding(&r, "L6", PG_LEGAL_ILLEGAL, "is in the training shards"));
  pg_legal_report_free(&r);
}

Test(legal, calibration_on_validation_tokens_fails_L6) {
  /* the validation shard under a training name: pgpack cannot tell, the recorded hash can */
  char dir[200], cmd[2000];
  snprintf(dir, sizeof dir, "%s/disguised", tmp);
  write_shards(dir, "fineweb_train_", stream, nstream);
  const char *a = legal_artifact(), *b = path_in("calibrated.pgz");
  snprintf(cmd, sizeof cmd, "%s/tools/pgpack --weights %s --tokenizer %s --code %s --calib "
           "'%s/fineweb_train_*.bin' --calib-seqs 2 --calib-len 64 --codec zstd-3 -o %s "
           ">/dev/null 2>&1", getenv("PG_BUILD_ROOT"), a, tokpath, code_file(), dir, b);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
  pg_legal_report r;
  run_checks(b, PROTO, NULL, NULL, NULL, &r);
  expect_only(&r, "L6");
  const pg_legal_finding *f = finding(&r, "L6", PG_LEGAL_ILLEGAL, "calibrated on validation");
  cr_assert_not_null(f);
  cr_assert(strstr(f->evidence[0], "[0, 128)") != NULL, "%s", f->evidence[0]);
  pg_legal_report_free(&r);
}

Test(legal, an_evaluation_over_the_time_limit_is_a_warning_of_L7) {
  const char *a = legal_artifact();
  pg_legal_test t = {.flops_per_s = 1e5}; /* a machine slow enough for the demo model */
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, &t, &r);
  expect_only(&r, "L7");
  cr_assert_not_null(finding(&r, "L7", PG_LEGAL_WARNING, "over the 600 s limit"));
  pg_legal_report_free(&r);
}

Test(legal, a_score_far_from_the_claim_on_the_whole_set_is_a_warning_of_L8) {
  const char *a = legal_artifact();
  pg_err err;
  pg_legal_cfg cfg = {.artifact = a, .val = valpat, .protocol = PROTO, .tokens = UINT64_MAX,
                      .threads = 1};
  pg_legal_report r;
  cr_assert_eq(pg_legal_report_init(&r, "artifact", a, &err), PG_OK);
  r.has_claim = 1, r.claimed_bpb = 1.0;
  cr_assert_eq(pg_legal_run(&cfg, &r, &err), PG_OK, "%s", err.msg);
  expect_only(&r, "L8");
  const pg_legal_finding *f = finding(&r, "L8", PG_LEGAL_WARNING, "differs from the claim");
  cr_assert_not_null(f);
  double bpb;
  cr_assert_eq(sscanf(pg_legal_report_check(&r, "L8")->summary, "val_bpb %lf", &bpb), 1);
  pg_legal_report_free(&r);
  /* the claim the run reproduces: pass; on a prefix a far claim is information only */
  cr_assert_eq(pg_legal_report_init(&r, "artifact", a, &err), PG_OK);
  r.has_claim = 1, r.claimed_bpb = bpb;
  cr_assert_eq(pg_legal_run(&cfg, &r, &err), PG_OK, "%s", err.msg);
  expect_only(&r, NULL);
  pg_legal_report_free(&r);
  cr_assert_eq(pg_legal_report_init(&r, "artifact", a, &err), PG_OK);
  r.has_claim = 1, r.claimed_bpb = 1.0;
  cfg.tokens = 0;
  cr_assert_eq(pg_legal_run(&cfg, &r, &err), PG_OK, "%s", err.msg);
  expect_only(&r, NULL);
  pg_legal_report_free(&r);
}

/* ---- the reports --------------------------------------------------------------------------- */

Test(legal, the_json_report_has_the_schema) {
  const char *a = legal_artifact();
  pg_legal_report r;
  run_checks(a, PROTO, NULL, NULL, NULL, &r);
  char *s;
  pg_err err;
  cr_assert_eq(pg_legal_report_json(&r, "9.9", &s, &err), PG_OK);
  json_error_t je;
  json_t *j = json_loads(s, 0, &je);
  cr_assert_not_null(j, "%s", je.text);
  cr_assert_str_eq(json_string_value(json_object_get(j, "tool")), "pglegal");
  cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "9.9");
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "input"), "kind")),
                   "artifact");
  cr_assert_eq(json_integer_value(json_object_get(j, "exit")), 0);
  json_t *checks = json_object_get(j, "checks");
  cr_assert_eq(json_array_size(checks), 8);
  static const char *names[] = {"causality", "normalisation", "score-before-update",
                                "single-pass", "accounting", "provenance", "time",
                                "reproduction"};
  for (size_t i = 0; i < 8; i++) {
    json_t *c = json_array_get(checks, i);
    char id[4];
    snprintf(id, sizeof id, "L%zu", i + 1);
    cr_assert_str_eq(json_string_value(json_object_get(c, "id")), id);
    cr_assert_str_eq(json_string_value(json_object_get(c, "name")), names[i]);
    cr_assert_str_eq(json_string_value(json_object_get(c, "verdict")), "pass");
    cr_assert(json_is_string(json_object_get(c, "summary")));
    cr_assert(json_is_string(json_object_get(c, "spec")));
    json_t *f = json_array_get(json_object_get(c, "findings"), 0);
    cr_assert(json_is_object(f));
    cr_assert(json_is_null(json_object_get(f, "file")) && json_is_null(json_object_get(f, "line")));
    cr_assert(json_is_true(json_object_get(f, "reachable")));
  }
  /* the report reads back through the analyzer's reader (the same CHECK shape) */
  pg_legal_report r2;
  cr_assert_eq(pg_legal_report_init(&r2, "record", "x", &err), PG_OK);
  json_t *doc = json_pack("{s:O}", "checks", checks);
  char *t = json_dumps(doc, 0);
  cr_assert_eq(pg_legal_merge_json(&r2, t, strlen(t), "t", &err), PG_OK, "%s", err.msg);
  cr_assert_eq(r2.checks[4].nfindings, r.checks[4].nfindings);
  free(t);
  json_decref(doc);
  pg_legal_report_free(&r2);
  json_decref(j);
  free(s);
  pg_legal_report_free(&r);
}

static const char *REC =
    "{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"finding\", "
    "\"summary\": \"target in the hash key\", \"spec\": \"spec/legal-record.md §3\", "
    "\"findings\": [{\"severity\": \"illegal\", \"title\": \"the n-gram key holds the target\", "
    "\"evidence\": [\"key = hash(x[t], x[t+1])\"], \"file\": \"train_gpt.py\", \"line\": 812, "
    "\"reachable\": true}]}, {\"id\": \"L3\", \"name\": \"score-before-update\", "
    "\"verdict\": \"dead\", \"summary\": \"pre-eval TTT behind a flag that is off\", "
    "\"spec\": \"spec/legal-record.md §5\", \"findings\": []}], "
    "\"facts\": {\"claimed_val_bpb\": 1.0810}}";

Test(legal, the_record_checks_merge_by_the_worse_verdict) {
  pg_legal_report r;
  pg_err err;
  cr_assert_eq(pg_legal_report_init(&r, "record", "dir", &err), PG_OK);
  pg_legal_set(&r.checks[0], PG_LEGAL_PASS, "probes pass");
  pg_legal_set(&r.checks[2], PG_LEGAL_PASS, "no updates");
  pg_legal_set(&r.checks[3], PG_LEGAL_ERROR, "could not replay");
  cr_assert_eq(pg_legal_merge_json(&r, REC, strlen(REC), "rec", &err), PG_OK, "%s", err.msg);
  cr_assert_eq(r.checks[0].verdict, PG_LEGAL_FINDING, "finding > pass");
  cr_assert_str_eq(r.checks[0].summary, "artifact: probes pass; record: target in the hash key");
  cr_assert_eq(r.checks[0].nfindings, 1);
  cr_assert_str_eq(r.checks[0].findings[0].file, "train_gpt.py");
  cr_assert_eq(r.checks[0].findings[0].line, 812);
  cr_assert_eq(r.checks[2].verdict, PG_LEGAL_PASS, "pass > dead");
  cr_assert_eq(r.checks[3].verdict, PG_LEGAL_ERROR, "untouched by the record");
  cr_assert(r.has_claim && r.claimed_bpb == 1.0810);
  cr_assert_eq(pg_legal_report_exit(&r), 1, "a finding outweighs an error");
  /* finding > error > skip > pass > dead */
  cr_assert(PG_LEGAL_FINDING > PG_LEGAL_ERROR && PG_LEGAL_ERROR > PG_LEGAL_SKIP &&
            PG_LEGAL_SKIP > PG_LEGAL_PASS && PG_LEGAL_PASS > PG_LEGAL_DEAD);
  pg_legal_report_free(&r);
}

Test(legal, a_malformed_record_output_is_refused_whole) {
  static const struct {
    const char *json, *want;
  } bad[] = {
      {"{\"checks\": [", "JSON"},
      {"[]", "not an object"},
      {"{\"checks\": {}}", "\"checks\" is not an array"},
      {"{\"checks\": [], \"other\": 1}", "unknown key"},
      {"{\"checks\": [], \"checks\": []}", "duplicate"},
      {"{\"checks\": [{\"id\": \"L9\", \"name\": \"x\", \"verdict\": \"pass\", \"summary\": \"\", "
       "\"spec\": \"\", \"findings\": []}]}", "unknown check id"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"time\", \"verdict\": \"pass\", \"summary\": "
       "\"\", \"spec\": \"\", \"findings\": []}]}", "the name of L1"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"ok\", "
       "\"summary\": \"\", \"spec\": \"\", \"findings\": []}]}", "unknown verdict"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"pass\", "
       "\"summary\": \"a\\nb\", \"spec\": \"\", \"findings\": []}]}", "not one line"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"pass\", "
       "\"summary\": \"a\\u0000b\", \"spec\": \"\", \"findings\": []}]}", "NUL"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"pass\", "
       "\"summary\": \"\", \"spec\": \"\", \"findings\": [{\"severity\": \"illegal\", "
       "\"title\": \"t\", \"evidence\": [1], \"file\": null, \"line\": null, "
       "\"reachable\": true}]}]}", "evidence[0] is not a string"},
      {"{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", \"verdict\": \"pass\", "
       "\"summary\": \"\", \"spec\": \"\", \"findings\": [{\"severity\": \"illegal\", "
       "\"title\": \"t\", \"evidence\": [], \"file\": null, \"line\": -3, "
       "\"reachable\": true}]}]}", "\"line\""},
      {"{\"checks\": [], \"facts\": {\"claimed_val_bpb\": \"1.0\"}}", "claimed_val_bpb"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    pg_legal_report r;
    pg_err err;
    cr_assert_eq(pg_legal_report_init(&r, "record", "dir", &err), PG_OK);
    cr_assert_neq(pg_legal_merge_json(&r, bad[i].json, strlen(bad[i].json), "rec.json", &err),
                  PG_OK, "accepted: %s", bad[i].json);
    cr_assert(strstr(err.msg, bad[i].want) != NULL, "%s: %s", bad[i].json, err.msg);
    cr_assert(strstr(err.msg, "rec.json") != NULL && !strchr(err.msg, '\n'), "%s", err.msg);
    for (int k = 0; k < PG_LEGAL_NCHECKS; k++)
      cr_assert_str_eq(r.checks[k].summary, "not run", "nothing merged");
    pg_legal_report_free(&r);
  }
}

Test(legal, the_markdown_report_escapes_outside_text) {
  pg_legal_report r;
  pg_err err;
  cr_assert_eq(pg_legal_report_init(&r, "record", "a|b`c", &err), PG_OK);
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) pg_legal_set(&r.checks[i], PG_LEGAL_PASS, "ok");
  pg_legal_set(&r.checks[5], PG_LEGAL_FINDING, "x | **pass** \n| L9 | forged");
  pg_legal_add(&r.checks[5], PG_LEGAL_ILLEGAL, "title");
  pg_legal_evidence(&r.checks[5], "line with <script> and [link](x)");
  char *md;
  cr_assert_eq(pg_legal_report_markdown(&r, "1", &md, &err), PG_OK);
  cr_assert(strstr(md, "**findings** (exit 1") != NULL, "%s", md);
  cr_assert(strstr(md, "x \\| \\*\\*pass\\*\\* \\x0a\\| L9 \\| forged") != NULL, "%s", md);
  cr_assert(strstr(md, "\\<script\\>") != NULL && strstr(md, "\\[link\\]") != NULL, "%s", md);
  cr_assert(strstr(md, "a\\|b\\`c") != NULL, "%s", md);
  free(md);
  pg_legal_report_free(&r);
}

Test(legal, protocol_text_reads_as_pgverify_options) {
  pg_protocol p, d;
  cr_assert_eq(pg_protocol_from_text("--protocol ttt-chunk --seq-len 2048 --stride 64 --tail-dup "
                                     "--lr 0.002 --epochs 3", &p), 0);
  pg_protocol_defaults(&d, PG_PROTO_TTT_CHUNK);
  cr_assert_eq(p.kind, PG_PROTO_TTT_CHUNK);
  cr_assert(p.tail_dup && p.lr == 0.002 && p.epochs == 3 && p.stride == 64);
  cr_assert_eq(p.momentum, d.momentum);
  cr_assert_eq(pg_protocol_from_text("--stride=32 --protocol=sliding", &p), 0);
  cr_assert_eq(p.stride, 32);
  cr_assert_eq(p.kind, PG_PROTO_SLIDING, "the protocol applies first, wherever it stands");
  pg_protocol keep = p;
  cr_assert_eq(pg_protocol_from_text("--protocol sliding --json", &p), 1, "not a protocol option");
  cr_assert_eq(pg_protocol_from_text("--seq-len 0", &p), 1);
  cr_assert_eq(pg_protocol_from_text("--protocol nope", &p), 1);
  cr_assert_eq(pg_protocol_from_text("--stride", &p), 1);
  cr_assert_eq(pg_protocol_from_text("stride 4", &p), 1);
  cr_assert_eq(pg_protocol_from_text("--seq-len 64 --stride 128", &p), 1, "validated");
  cr_assert_eq(memcmp(&p, &keep, sizeof p), 0, "unchanged on failure");
}

/* ---- the tool ------------------------------------------------------------------------------ */

static char out_path[128], err_path[128];

static int run(const char *fmt, ...) {
  char cmd[3000], full[3400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(out_path, sizeof out_path, "%s/out.txt", tmp);
  snprintf(err_path, sizeof err_path, "%s/err.txt", tmp);
  snprintf(full, sizeof full, "%s >%s 2>%s", cmd, out_path, err_path);
  int st = system(full);
  cr_assert(WIFEXITED(st), "%s did not exit", cmd);
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

/* Whether the file holds text. */
static int file_has(const char *path, const char *text) {
  char *s = slurp(path);
  int yes = strstr(s, text) != NULL;
  free(s);
  return yes;
}

static const char *tool(void) {
  static char p[512];
  snprintf(p, sizeof p, "%s/tools/pglegal", getenv("PG_BUILD_ROOT"));
  return p;
}

Test(legal, tool_exit_codes_json_and_markdown) {
  const char *a = legal_artifact();
  cr_assert_eq(run("%s %s --val '%s' --protocol '" PROTO "'", tool(), a, valpat), 0);
  char *o = slurp(out_path);
  cr_assert(strstr(o, "L1 causality") && strstr(o, "verdict    clean (exit 0)"), "%s", o);
  free(o);
  /* --json parses; --markdown is written whole */
  const char *md = path_in("report.md");
  cr_assert_eq(run("%s %s --val '%s' --protocol '" PROTO "' --json --markdown %s", tool(), a,
                   valpat, md), 0);
  o = slurp(out_path);
  json_error_t je;
  json_t *j = json_loads(o, 0, &je);
  cr_assert_not_null(j, "%s: %s", je.text, o);
  cr_assert_eq(json_integer_value(json_object_get(j, "exit")), 0);
  json_decref(j);
  free(o);
  o = slurp(md);
  cr_assert(strstr(o, "## pglegal report") && strstr(o, "| L8 | reproduction | pass |"), "%s", o);
  free(o);
  /* findings: exit 1 */
  const char *b = path_in("nocode.pgz");
  demo(b, NULL, 0, 1);
  cr_assert_eq(run("%s %s --val '%s' --protocol '" PROTO "' --json", tool(), b, valpat), 1);
  /* could not check: exit 2 (no shards, a bad protocol, a usage error) */
  cr_assert_eq(run("%s %s --val '%s/none_*.bin'", tool(), a, tmp), 2);
  cr_assert_eq(run("%s %s --val '%s' --protocol '--seq-len 0'", tool(), a, valpat), 2);
  cr_assert_eq(run("%s %s", tool(), a), 2);
  cr_assert_eq(run("%s %s --val '%s' --tokens 2", tool(), a, valpat), 2);
  /* the Markdown output is never an input */
  cr_assert_eq(run("%s %s --val '%s' --markdown %s", tool(), a, valpat, a), 2);
  cr_assert(file_has(err_path, "input"));
  cr_assert_eq(run("%s --help", tool()), 0);
}

/* A fake analyzer: prints the given JSON. */
static const char *fake_analyzer(const char *json) {
  const char *p = path_in("fake.py");
  char body[4096];
  snprintf(body, sizeof body, "import sys\nsys.stdout.write(%s)\n", json);
  write_file(p, body, strlen(body));
  return p;
}

Test(legal, tool_record_folder_merges_the_analyzer_and_the_artifact) {
  char dir[200];
  snprintf(dir, sizeof dir, "%s/record", tmp);
  cr_assert_eq(mkdir(dir, 0777), 0);
  char art[260];
  snprintf(art, sizeof art, "%s/model.pgz", dir);
  const char *code[] = {code_file()};
  demo(art, code, 1, 1);
  const char *py = fake_analyzer("'''" "{\"checks\": [{\"id\": \"L1\", \"name\": \"causality\", "
                                 "\"verdict\": \"dead\", \"summary\": \"a cache behind a flag\", "
                                 "\"spec\": \"spec/legal-record.md\", \"findings\": []}], "
                                 "\"facts\": {\"claimed_val_bpb\": 3.5}}" "'''");
  cr_assert_eq(run("PGOLF_LEGAL_PY=%s %s %s --val '%s' --protocol '" PROTO "' --json", py,
                   tool(), dir, valpat), 0);
  char *o = slurp(out_path);
  json_t *j = json_loads(o, 0, NULL);
  cr_assert_not_null(j, "%s", o);
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "input"), "kind")),
                   "record");
  json_t *l1 = json_array_get(json_object_get(j, "checks"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(l1, "verdict")), "pass", "pass > dead");
  cr_assert(strstr(json_string_value(json_object_get(l1, "summary")), "record: a cache") != NULL);
  json_t *l8 = json_array_get(json_object_get(j, "checks"), 7);
  cr_assert(strstr(json_string_value(json_object_get(l8, "summary")), "claimed 3.5") != NULL,
            "%s", json_string_value(json_object_get(l8, "summary")));
  json_decref(j);
  free(o);
  /* the analyzer's output is outside input: malformed, the record checks cannot run (exit 2) */
  py = fake_analyzer("'{\"checks\": 7}'");
  cr_assert_eq(run("PGOLF_LEGAL_PY=%s %s %s", py, tool(), dir), 2);
  cr_assert(file_has(err_path, "\"checks\" is not an array"));
  /* python3 missing: skipped with the reason, exit 2 */
  cr_assert_eq(run("PATH=/nonexistent PGOLF_LEGAL_PY=%s %s %s", py, tool(), dir), 2);
  o = slurp(out_path);
  cr_assert(strstr(o, "skip") && strstr(o, "python3"), "%s", o);
  free(o);
}

/* A record folder holding the record's own artifact (a .ptz, not a pgolf artifact): L8 stays
 * skip and names the file and how to check it (pgimport --preset, then pglegal on the import). */
Test(legal, tool_record_folder_with_the_records_own_artifact_says_how_to_check_it) {
  char dir[200], ptz[260];
  snprintf(dir, sizeof dir, "%s/rec", tmp);
  cr_assert_eq(mkdir(dir, 0777), 0);
  snprintf(ptz, sizeof ptz, "%s/final_model.int6.ptz", dir);
  write_file(ptz, "not read", 8);
  const char *py = fake_analyzer("'''" "{\"checks\": [{\"id\": \"L8\", \"name\": \"reproduction\", "
                                 "\"verdict\": \"skip\", \"summary\": \"no artifact\", "
                                 "\"spec\": \"spec/legal-record.md\", \"findings\": []}], "
                                 "\"facts\": {\"claimed_val_bpb\": null}}" "'''");
  cr_assert_eq(run("PGOLF_LEGAL_PY=%s %s %s --json", py, tool(), dir), 0);
  char *o = slurp(out_path);
  json_t *j = json_loads(o, 0, NULL);
  cr_assert_not_null(j, "%s", o);
  json_t *l8 = json_array_get(json_object_get(j, "checks"), 7);
  const char *s = json_string_value(json_object_get(l8, "summary"));
  cr_assert_str_eq(json_string_value(json_object_get(l8, "verdict")), "skip");
  cr_assert(s && strstr(s, "final_model.int6.ptz") && strstr(s, "pgimport"), "%s", s);
  json_decref(j);
  free(o);
}

/* A few hundred kilobytes of "{}," would cost the parser tens of megabytes: refused before it
 * runs, at the value that goes over the cap, in one line. */
Test(legal, analyzer_json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("facts", PG_LEGAL_JSON_VALUES - 2, &len);
  pg_legal_report r;
  pg_err err;
  cr_assert_eq(pg_legal_report_init(&r, "record", "dir", &err), PG_OK);
  cr_assert_eq(pg_legal_merge_json(&r, t, len, "rec.json", &err), PG_E_LIMIT, "%s", err.msg);
  char want[128];
  snprintf(want, sizeof want, "rec.json: offset %llu: more than %llu JSON values",
           (unsigned long long)PGFILLER_OVER("facts", PG_LEGAL_JSON_VALUES),
           (unsigned long long)PG_LEGAL_JSON_VALUES);
  cr_assert(strncmp(err.msg, want, strlen(want)) == 0 && !strchr(err.msg, '\n'), "%s", err.msg);
  pg_legal_report_free(&r);
  free(t);
}
