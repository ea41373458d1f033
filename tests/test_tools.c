/* test_tools.c: the commands end to end, as a user runs them: exit codes (spec/cli.md), one-line
 * errors naming the file, --json documents, extraction and safetensors export, and that a failed
 * or refused command leaves its inputs untouched and no partial output. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_io.h"
#include "pg_safetensors.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pgtest.h"

static char tmp[64];
static char out_path[128], err_path[128];

static const char *bin(const char *tool) {
  static char path[4][512];
  static int k = 0;
  const char *root = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(root, "PG_BUILD_ROOT is not set (run through meson test)");
  k = (k + 1) % 4;
  snprintf(path[k], sizeof path[k], "%s/tools/%s", root, tool);
  return path[k];
}

static void setup(void) {
  strcpy(tmp, "/tmp/pgtools.XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
  snprintf(out_path, sizeof out_path, "%s/stdout", tmp);
  snprintf(err_path, sizeof err_path, "%s/stderr", tmp);
}

/* Run a shell command line with stdout/stderr captured; return the exit status. */
static int run(const char *fmt, ...) {
  char cmd[2048], full[2400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
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

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* A small artifact made with pgdemo. */
static void make_demo(const char *path, const char *extra) {
  int rc = run("%s --layers 1 --dim 128 --heads 2 --kv-heads 1 --vocab 640 --codec zstd-3 "
               "--code %s/tools/pgdemo.c %s -o %s",
               bin("pgdemo"), getenv("PG_SOURCE_ROOT"), extra ? extra : "", path);
  cr_assert_eq(rc, 0, "pgdemo failed: %s", slurp(err_path));
}

static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(tools, .init = setup, .fini = teardown);

Test(tools, help_and_usage_errors) {
  const char *tools[] = {"pgsize", "pgunpack", "pgdemo", "pgpack", "pgverify", "pgtrain"};
  for (int i = 0; i < 6; i++) {
    cr_assert_eq(run("%s --help", bin(tools[i])), 0, "%s --help", tools[i]);
    char *o = slurp(out_path);
    cr_assert(strstr(o, "usage:") != NULL);
    free(o);
    cr_assert_eq(run("%s --no-such-option", bin(tools[i])), 2, "%s bad option", tools[i]);
  }
}

Test(tools, pgsize_within_and_over_budget) {
  char a[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  make_demo(a, NULL);
  uint64_t size;
  pg_err e;
  cr_assert_eq(pg_file_size(a, &size, &e), PG_OK);
  cr_assert_eq(run("%s %s", bin("pgsize"), a), 0);
  char *o = slurp(out_path);
  cr_assert(strstr(o, "within budget") != NULL, "%s", o);
  free(o);
  cr_assert_eq(run("%s --budget 1000 %s", bin("pgsize"), a), 1);
  o = slurp(out_path);
  cr_assert(strstr(o, "OVER BUDGET") != NULL);
  free(o);
  /* exactly at the budget is within it; one byte less is over */
  cr_assert_eq(run("%s --budget %llu %s", bin("pgsize"), (unsigned long long)size, a), 0);
  cr_assert_eq(run("%s --budget %llu %s", bin("pgsize"), (unsigned long long)size - 1, a), 1);
}

Test(tools, pgsize_json_adds_up) {
  char a[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  make_demo(a, NULL);
  cr_assert_eq(run("%s --json %s", bin("pgsize"), a), 0);
  json_error_t je;
  json_t *j = json_load_file(out_path, 0, &je);
  cr_assert_not_null(j, "pgsize --json is not JSON: %s", je.text);
  json_int_t file = json_integer_value(json_object_get(j, "file_bytes"));
  json_int_t counted = json_integer_value(json_object_get(j, "counted_bytes"));
  json_int_t frame = json_integer_value(json_object_get(j, "frame_bytes"));
  cr_assert_eq(counted, file); /* no tokenizer: everything is counted */
  json_int_t sum = frame;
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(j, "sections"), i, s)
    sum += json_integer_value(json_object_get(s, "stored_bytes"));
  cr_assert_eq(sum, file, "sections + frame = %lld, file = %lld", (long long)sum, (long long)file);
  double tsum = 0;
  json_t *t;
  json_array_foreach(json_object_get(j, "tensors"), i, t)
    tsum += json_real_value(json_object_get(t, "stored_bytes_attributed"));
  /* attributed tensor bytes cover the data sections exactly (up to rounding) */
  double data = 0;
  json_array_foreach(json_object_get(j, "sections"), i, s)
    if (!strcmp(json_string_value(json_object_get(s, "kind")), "data"))
      data += (double)json_integer_value(json_object_get(s, "stored_bytes"));
  cr_assert(tsum > data - 1.0 && tsum < data + 1.0, "tensors %f, data sections %f", tsum, data);
  json_decref(j);
}

Test(tools, pgsize_tokenizer_counting_is_selectable) {
  char a[160], tok[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(tok, sizeof tok, "%s/fake.model", tmp);
  uint8_t fake[5000];
  uint32_t x = 2463534242u; /* xorshift: incompressible bytes */
  for (size_t i = 0; i < sizeof fake; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    fake[i] = (uint8_t)(x >> 24);
  }
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(tok, fake, sizeof fake, &e), PG_OK);
  char extra[200];
  snprintf(extra, sizeof extra, "--tokenizer %s", tok);
  make_demo(a, extra);
  cr_assert_eq(run("%s --json %s", bin("pgsize"), a), 0);
  json_t *j = json_load_file(out_path, 0, NULL);
  json_int_t with = json_integer_value(json_object_get(j, "counted_bytes"));
  json_int_t tokb = json_integer_value(json_object_get(j, "tokenizer_bytes"));
  cr_assert_gt(tokb, 4000);
  json_decref(j);
  cr_assert_eq(run("%s --json --exclude-tokenizer %s", bin("pgsize"), a), 0);
  j = json_load_file(out_path, 0, NULL);
  cr_assert_eq(json_integer_value(json_object_get(j, "counted_bytes")), with - tokb);
  cr_assert(json_is_false(json_object_get(j, "tokenizer_counted")));
  json_decref(j);
}

Test(tools, errors_are_one_line_naming_the_file) {
  char bad[160];
  snprintf(bad, sizeof bad, "%s/notes.txt", tmp);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(bad, "hello, this is not an artifact\n", 31, &e), PG_OK);
  const char *tools[] = {"pgsize", "pgunpack"};
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(run("%s %s", bin(tools[i]), bad), 2, "%s", tools[i]);
    char *er = slurp(err_path);
    cr_assert_eq(count_lines(er), 1, "%s: %s", tools[i], er);
    cr_assert(strstr(er, bad) != NULL, "%s: %s", tools[i], er);
    cr_assert(strstr(er, "wrong magic") != NULL, "%s: %s", tools[i], er);
    free(er);
    cr_assert_eq(run("%s %s/missing.pgz", bin(tools[i]), tmp), 2);
  }
}

Test(tools, pgunpack_check_verdicts) {
  char a[160], c[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(c, sizeof c, "%s/corrupt.pgz", tmp);
  make_demo(a, NULL);
  cr_assert_eq(run("%s --check %s", bin("pgunpack"), a), 0);
  char *o = slurp(out_path);
  cr_assert(strstr(o, "valid") != NULL);
  free(o);
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(a, &b, &n, 64u << 20, &e), PG_OK);
  b[n - 10] ^= 0x55;
  cr_assert_eq(pg_file_write_atomic(c, b, n, &e), PG_OK);
  cr_assert_eq(run("%s --check %s", bin("pgunpack"), c), 1);
  char *er = slurp(err_path);
  cr_assert(strstr(er, "checksum") != NULL, "%s", er);
  cr_assert_eq(count_lines(er), 1);
  free(er);
  /* the input was only read */
  uint8_t *b2;
  size_t n2;
  cr_assert_eq(pg_file_read_all(c, &b2, &n2, 64u << 20, &e), PG_OK);
  cr_assert(n2 == n && !memcmp(b, b2, n));
  free(b);
  free(b2);
}

Test(tools, pgunpack_extract_and_json_listing) {
  char a[160], dir[160], code[600];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(dir, sizeof dir, "%s/x", tmp);
  make_demo(a, NULL);
  cr_assert_eq(run("%s --extract %s %s", bin("pgunpack"), dir, a), 0, "%s", slurp(err_path));
  snprintf(code, sizeof code, "%s/pgdemo.c", dir);
  char *got = slurp(code);
  snprintf(code, sizeof code, "%s/tools/pgdemo.c", getenv("PG_SOURCE_ROOT"));
  char *want = slurp(code);
  cr_assert_str_eq(got, want);
  free(got);
  free(want);
  snprintf(code, sizeof code, "%s/metadata.json", dir);
  json_t *m = json_load_file(code, 0, NULL);
  cr_assert_not_null(m);
  cr_assert_str_eq(json_string_value(json_object_get(m, "arch.name")), "pgolf-demo");
  json_decref(m);
  cr_assert_eq(run("%s --json %s", bin("pgunpack"), a), 0);
  json_t *j = json_load_file(out_path, 0, NULL);
  cr_assert_not_null(j);
  cr_assert_gt(json_array_size(json_object_get(j, "tensors")), 5);
  json_decref(j);
}

Test(tools, pgunpack_safetensors_matches_dequant) {
  char a[160], st[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(st, sizeof st, "%s/w.safetensors", tmp);
  make_demo(a, "--packed");
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, a), 0, "%s", slurp(err_path));
  pg_artifact *art;
  pg_st *s;
  pg_err e;
  cr_assert_eq(pg_artifact_open(&art, a, NULL, &e), PG_OK);
  cr_assert_eq(pg_st_open_file(&s, st, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_count(s), pg_artifact_tensor_count(art));
  for (uint32_t i = 0; i < pg_artifact_tensor_count(art); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(art, i);
    const pg_st_tensor *x;
    cr_assert_eq(pg_st_find(&x, s, t->name, &e), PG_OK, "%s", t->name);
    cr_assert_eq(x->dtype, PG_ST_F32);
    cr_assert_eq(x->rank, t->ndim);
    float *want = malloc(t->numel * 4);
    cr_assert_eq(pg_artifact_tensor_dequant(art, i, want, &e), PG_OK);
    cr_assert(!memcmp(x->data, want, t->numel * 4), "%s differs", t->name);
    free(want);
  }
  cr_assert_not_null(pg_st_meta_get(s, "arch.json"));
  pg_st_free(s);
  /* bf16 export, and a refusal to write over the input */
  cr_assert_eq(run("%s --safetensors %s --dtype bf16 %s", bin("pgunpack"), st, a), 0);
  cr_assert_eq(pg_st_open_file(&s, st, &e), PG_OK);
  cr_assert_eq(pg_st_at(s, 0)->dtype, PG_ST_BF16);
  pg_st_free(s);
  uint64_t before;
  pg_file_size(a, &before, &e);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), a, a), 2);
  cr_assert_eq(pg_artifact_check(art, &e), PG_OK); /* still the same file */
  uint64_t after;
  pg_file_size(a, &after, &e);
  cr_assert_eq(before, after);
  pg_artifact_free(art);
}

Test(tools, pgdemo_is_deterministic) {
  char a[160], b[160];
  snprintf(a, sizeof a, "%s/a.pgz", tmp);
  snprintf(b, sizeof b, "%s/b.pgz", tmp);
  make_demo(a, NULL);
  make_demo(b, NULL);
  char *x, *y;
  uint8_t *bx, *by;
  size_t nx, ny;
  pg_err e;
  cr_assert_eq(pg_file_read_all(a, &bx, &nx, 64u << 20, &e), PG_OK);
  cr_assert_eq(pg_file_read_all(b, &by, &ny, 64u << 20, &e), PG_OK);
  cr_assert(nx == ny && !memcmp(bx, by, nx));
  (void)x;
  (void)y;
  free(bx);
  free(by);
  /* a failed write (missing folder) leaves nothing */
  cr_assert_eq(run("%s --layers 1 --dim 64 --heads 2 --kv-heads 1 --vocab 64 -o %s/no/such/x.pgz",
                   bin("pgdemo"), tmp),
               2);
}

/* ---- pgverify end to end --------------------------------------------------------------------- */

/* A SentencePiece model of the repository's fuzz seeds. */
static const char *spm_seed(const char *name) {
  static char path[2][512];
  static int k = 0;
  k = (k + 1) % 2;
  snprintf(path[k], sizeof path[k], "%s/tests/fuzz/seeds/spm/%s", getenv("PG_SOURCE_ROOT"), name);
  return path[k];
}

/* The vocabulary of a tokenizer that has the "▁" piece the byte tables need. */
static uint32_t spm_vocab(const char *path) {
  pg_spm *m;
  pg_err e;
  cr_assert_eq(pg_spm_open_file(&m, path, &e), PG_OK, "%s", e.msg);
  uint32_t v = pg_spm_vocab_size(m);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, v, 0, &e), PG_OK, "%s", e.msg);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  return v;
}

static uint64_t xxh64_file(const char *path) {
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, &n, 64u << 20, &e), PG_OK, "%s", e.msg);
  uint64_t h = XXH64(b, n, 0);
  free(b);
  return h;
}

/* n validation tokens in shards of shard_tokens under dir (created), named fineweb_val_NNNNNN.bin:
 * documents of 3..40 tokens, each starting with BOS (1), other ids in [4, vocab); token bad_at
 * (when < n) is set to bad_id. */
static void write_val(const char *dir, uint64_t n, uint32_t vocab, uint64_t shard_tokens,
                      uint64_t bad_at, uint16_t bad_id) {
  cr_assert(mkdir(dir, 0777) == 0, "mkdir %s", dir);
  uint16_t *t = malloc(n * sizeof *t);
  uint32_t x = 88172645u;
  uint64_t next = 0;
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    if (i == next && i + 1 < n) {
      t[i] = 1;
      next = i + 3 + x % 38;
    } else {
      t[i] = (uint16_t)(4 + x % (vocab - 4));
    }
  }
  if (bad_at < n) t[bad_at] = bad_id;
  pg_shard_writer *w;
  pg_err e;
  cr_assert_eq(pg_shard_writer_open(&w, dir, "fineweb_val_", shard_tokens, &e), PG_OK, "%s",
               e.msg);
  cr_assert_eq(pg_shard_writer_append(w, t, n, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK, "%s", e.msg);
  pg_shard_writer_free(w);
  free(t);
}

/* The inputs of a pgverify run: a tiny pgdemo artifact carrying byte_fallback.model, and 1,025
 * validation tokens in two shards. */
typedef struct vfx {
  char art[160], val[200], receipt[200];
  uint32_t vocab;
} vfx;

static void vfx_init(vfx *f) {
  const char *tok = spm_seed("byte_fallback.model");
  f->vocab = spm_vocab(tok);
  snprintf(f->art, sizeof f->art, "%s/v.pgz", tmp);
  snprintf(f->receipt, sizeof f->receipt, "%s.receipt.json", f->art);
  int rc = run("%s --layers 2 --dim 32 --heads 4 --kv-heads 2 --mlp-mult 2 --vocab %u "
               "--codec zstd-3 --tokenizer %s -o %s",
               bin("pgdemo"), f->vocab, tok, f->art);
  cr_assert_eq(rc, 0, "pgdemo failed: %s", slurp(err_path));
  char dir[160];
  snprintf(dir, sizeof dir, "%s/val", tmp);
  write_val(dir, 1025, f->vocab, 600, UINT64_MAX, 0);
  snprintf(f->val, sizeof f->val, "'%s/fineweb_val_*.bin'", dir);
}

/* The value printed on the report line "KEY   VALUE" (a static copy). */
static const char *report_value(const char *report, const char *key) {
  static char v[64];
  size_t kl = strlen(key);
  for (const char *l = report; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
    if (strncmp(l, key, kl) || l[kl] != ' ') continue;
    const char *p = l + kl;
    while (*p == ' ') p++;
    size_t n = strcspn(p, " \n");
    cr_assert_lt(n, sizeof v);
    memcpy(v, p, n);
    v[n] = '\0';
    return v;
  }
  cr_assert_fail("no '%s' line in the report:\n%s", key, report);
  return NULL;
}

static json_t *load_json(const char *path) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  cr_assert_not_null(j, "%s is not JSON: %s (line %d)", path, je.text, je.line);
  return j;
}

static json_t *jget(json_t *o, const char *a, const char *b) {
  json_t *x = json_object_get(o, a);
  cr_assert_not_null(x, "receipt has no %s", a);
  if (!b) return x;
  json_t *y = json_object_get(x, b);
  cr_assert_not_null(y, "receipt has no %s.%s", a, b);
  return y;
}

/* Everything a receipt of a run on f's inputs must hold; the printed val_bpb is `printed`. */
static void check_receipt(json_t *r, const vfx *f, const char *proto, const char *printed) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)xxh64_file(f->art));
  cr_assert_str_eq(json_string_value(jget(r, "artifact", "xxh64")), hex);
  cr_assert_str_eq(json_string_value(jget(r, "artifact", "path")), f->art);
  json_t *res = jget(r, "result", NULL);
  double bpb = json_real_value(jget(r, "result", "val_bpb"));
  char s[64];
  snprintf(s, sizeof s, "%.8f", bpb);
  cr_assert_str_eq(s, printed, "receipt val_bpb %.17g, report %s", bpb, printed);
  cr_assert(isfinite(bpb) && bpb > 0);
  cr_assert(json_is_true(json_object_get(res, "every_target_scored_once")));
  cr_assert_eq(json_integer_value(json_object_get(res, "targets")),
               json_integer_value(json_object_get(res, "scored")));
  cr_assert_eq(json_integer_value(json_object_get(res, "targets")), 1024);
  cr_assert_eq(json_integer_value(json_object_get(res, "duplicates")), 0);
  cr_assert_eq(json_real_value(json_object_get(res, "token_count")), 1024.0);
  /* the validation files, each with its own hash */
  json_t *files = jget(r, "val", "files");
  cr_assert_eq(json_array_size(files), 2, "1,025 tokens in shards of 600 are two files");
  json_int_t total = 0;
  size_t i;
  json_t *fi;
  json_array_foreach(files, i, fi) {
    const char *p = json_string_value(json_object_get(fi, "path"));
    cr_assert_not_null(p);
    char want[200];
    snprintf(want, sizeof want, "%s/val/fineweb_val_%06zu.bin", tmp, i);
    cr_assert_str_eq(p, want);
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)xxh64_file(p));
    cr_assert_str_eq(json_string_value(json_object_get(fi, "xxh64")), hex, "%s", p);
    total += json_integer_value(json_object_get(fi, "tokens"));
  }
  cr_assert_eq(total, 1025);
  cr_assert_eq(json_integer_value(jget(r, "val", "tokens_available")), 1025);
  cr_assert_eq(json_integer_value(jget(r, "val", "tokens_read")), 1025);
  cr_assert(json_is_false(jget(r, "val", "partial")));
  cr_assert_eq(json_integer_value(jget(r, "tokenizer", "pieces")), f->vocab);
  cr_assert_eq(json_integer_value(jget(r, "arch", "vocab_size")), f->vocab);
  /* the protocol and every one of its parameters */
  json_t *p = jget(r, "protocol", NULL);
  cr_assert_str_eq(json_string_value(json_object_get(p, "name")), proto);
  const char *common[] = {"seq_len", "trim", "batch", NULL};
  const char *windows[] = {"stride", "tail_dup", NULL};
  const char *report[] = {"report_tokens", NULL};
  const char *chunk[] = {"chunk_tokens", "optimizer", "lr", "lr_schedule", "momentum", "epochs",
                         "clip", "batch_rows", "freeze_blocks", NULL};
  const char **lists[4] = {common, NULL, NULL, NULL};
  if (!strcmp(proto, "plain")) lists[1] = report;
  if (!strcmp(proto, "sliding")) lists[1] = windows, lists[2] = report;
  if (!strcmp(proto, "ttt-chunk")) lists[1] = windows, lists[2] = chunk;
  for (int l = 0; l < 4 && lists[l]; l++)
    for (int k = 0; lists[l][k]; k++)
      cr_assert_not_null(json_object_get(p, lists[l][k]), "%s: protocol.%s missing", proto,
                         lists[l][k]);
  cr_assert_eq(json_integer_value(json_object_get(p, "seq_len")), 64);
  cr_assert(json_is_true(json_object_get(p, "trim")));
  if (strcmp(proto, "plain")) {
    cr_assert_eq(json_integer_value(json_object_get(p, "stride")), 16);
    cr_assert(json_is_false(json_object_get(p, "tail_dup")));
  }
  if (!strcmp(proto, "ttt-chunk")) {
    cr_assert_eq(json_integer_value(json_object_get(p, "chunk_tokens")), 256);
    cr_assert_eq(json_integer_value(json_object_get(p, "epochs")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(p, "optimizer")), "sgd");
    cr_assert_gt(json_integer_value(json_object_get(res, "train_steps")), 0);
  }
  cr_assert_str_eq(json_string_value(jget(r, "engine", "name")), "cpu");
}

/* The result object without its timing, for comparing two runs. */
static json_t *result_untimed(json_t *r) {
  json_t *res = json_deep_copy(jget(r, "result", NULL));
  json_object_del(res, "seconds");
  return res;
}

Test(tools, pgverify_protocols_and_receipts) {
  vfx f;
  vfx_init(&f);
  const char *protos[] = {"plain", "sliding", "ttt-chunk"};
  const char *args[] = {"--seq-len 64", "--seq-len 64 --stride 16",
                        "--seq-len 64 --stride 16 --chunk-tokens 256 --epochs 1 --batch-rows 2"};
  for (int i = 0; i < 3; i++) {
    unlink(f.receipt);
    cr_assert_eq(run("%s %s --val %s --protocol %s %s --threads 2", bin("pgverify"), f.art, f.val,
                     protos[i], args[i]),
                 0, "%s: %s", protos[i], slurp(err_path));
    char *rep = slurp(out_path);
    char printed[64];
    strcpy(printed, report_value(rep, "val_bpb"));
    const char *dot = strchr(printed, '.');
    cr_assert(dot && strlen(dot + 1) == 8 && strspn(dot + 1, "0123456789") == 8,
              "val_bpb is not printed with 8 decimals: %s", printed);
    cr_assert_str_eq(report_value(rep, "protocol"), protos[i]);
    cr_assert(strstr(rep, "every target scored once") != NULL, "%s", rep);
    cr_assert(strstr(rep, "partial") == NULL, "%s", rep);
    free(rep);
    /* the default receipt */
    json_t *r1 = load_json(f.receipt);
    check_receipt(r1, &f, protos[i], printed);
    /* --receipt PATH and --json: the same document on stdout and in the file */
    char rpath[200];
    snprintf(rpath, sizeof rpath, "%s/r-%s.json", tmp, protos[i]);
    cr_assert_eq(run("%s %s --val %s --protocol %s %s --receipt %s --json", bin("pgverify"), f.art,
                     f.val, protos[i], args[i], rpath),
                 0, "%s", slurp(err_path));
    char *out = slurp(out_path), *file = slurp(rpath);
    cr_assert_str_eq(out, file, "--json prints the receipt it writes");
    free(out);
    free(file);
    json_t *r2 = load_json(rpath);
    check_receipt(r2, &f, protos[i], printed);
    /* a second run: an identical result, bit for bit */
    json_t *a = result_untimed(r1), *b = result_untimed(r2);
    cr_assert(json_equal(a, b), "%s: the second run's result differs", protos[i]);
    double x1 = json_real_value(json_object_get(a, "val_bpb")),
           x2 = json_real_value(json_object_get(b, "val_bpb"));
    double l1 = json_real_value(json_object_get(a, "val_loss")),
           l2 = json_real_value(json_object_get(b, "val_loss"));
    cr_assert(!memcmp(&x1, &x2, sizeof x1) && !memcmp(&l1, &l2, sizeof l1));
    json_decref(a);
    json_decref(b);
    json_decref(r1);
    json_decref(r2);
  }
}

Test(tools, pgverify_partial_and_tail_variant) {
  vfx f;
  vfx_init(&f);
  /* --max-tokens: a partial check, said so */
  cr_assert_eq(run("%s %s --val %s --protocol plain --seq-len 64 --max-tokens 500", bin("pgverify"),
                   f.art, f.val),
               0, "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "partial") != NULL, "%s", rep);
  free(rep);
  json_t *r = load_json(f.receipt);
  cr_assert(json_is_true(jget(r, "val", "partial")));
  cr_assert_eq(json_integer_value(jget(r, "val", "tokens_read")), 500);
  cr_assert_eq(json_integer_value(jget(r, "val", "tokens_available")), 1025);
  cr_assert_eq(json_integer_value(jget(r, "result", "tokens_in_stream")), 7 * 64 + 1);
  json_decref(r);
  /* --tail-dup with T = 1024, a multiple of the stride: L − S = 48 targets scored twice */
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 16 --tail-dup",
                   bin("pgverify"), f.art, f.val),
               0, "%s", slurp(err_path));
  rep = slurp(out_path);
  cr_assert(strstr(rep, "scored twice") != NULL, "%s", rep);
  cr_assert(strstr(rep, "duplicates included") != NULL, "%s", rep);
  free(rep);
  r = load_json(f.receipt);
  cr_assert_eq(json_integer_value(jget(r, "result", "duplicates")), 64 - 16);
  cr_assert_eq(json_integer_value(jget(r, "result", "targets")), 1024);
  cr_assert_eq(json_integer_value(jget(r, "result", "scored")), 1024 + 48);
  cr_assert(json_is_false(jget(r, "result", "every_target_scored_once")));
  cr_assert(json_is_true(jget(r, "protocol", "tail_dup")));
  json_decref(r);
}

/* The artifact's safetensors export (pgunpack, f32: the dequantized values exactly, arch.json in
 * its metadata) scores exactly as the artifact; without --tokenizer it is refused. */
Test(tools, pgverify_safetensors_export_scores_as_the_artifact) {
  vfx f;
  vfx_init(&f);
  char st[200], r1[220], r2[220];
  snprintf(st, sizeof st, "%s/v.safetensors", tmp);
  snprintf(r1, sizeof r1, "%s/a.json", tmp);
  snprintf(r2, sizeof r2, "%s/b.json", tmp);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 32 --receipt %s",
                   bin("pgverify"), f.art, f.val, r1), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --tokenizer %s --val %s --protocol sliding --seq-len 64 --stride 32 "
                   "--receipt %s", bin("pgverify"), st, spm_seed("byte_fallback.model"), f.val, r2),
               0, "%s", slurp(err_path));
  json_t *a = load_json(r1), *b = load_json(r2);
  cr_assert_eq(json_real_value(jget(a, "result", "val_bpb")),
               json_real_value(jget(b, "result", "val_bpb")));
  cr_assert_eq(json_real_value(jget(a, "result", "loss_sum_nats")),
               json_real_value(jget(b, "result", "loss_sum_nats")));
  cr_assert_str_eq(json_string_value(jget(b, "artifact", "kind")), "safetensors");
  cr_assert_str_eq(json_string_value(jget(a, "artifact", "kind")), "artifact");
  json_decref(a);
  json_decref(b);
  cr_assert_eq(run("%s %s --val %s --no-receipt", bin("pgverify"), st, f.val), 2);
  char *e = slurp(err_path);
  cr_assert(strstr(e, "--tokenizer") != NULL, "%s", e);
  cr_assert_eq(count_lines(e), 1);
  free(e);
}

/* An artifact holding a valid arch.json and its tensors in f32, one of them with a NaN. */
static void write_nan_artifact(const char *path, uint32_t vocab) {
  char arch_json[256];
  snprintf(arch_json, sizeof arch_json,
           "{\"vocab_size\": %u, \"dim\": 16, \"layers\": 2, \"heads\": 2, \"kv_heads\": 1, "
           "\"mlp\": {\"hidden\": 32}}",
           vocab);
  pg_arch a;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&a, arch_json, strlen(arch_json), "t.json", &e), PG_OK, "%s", e.msg);
  pg_arch_tensor *t;
  size_t nt;
  cr_assert_eq(pg_arch_tensors(&a, &t, &nt, &e), PG_OK);
  pg_writer *w;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  const pg_codec_spec none = {0, 0, 0, 0, 0};
  pg_writer_set_meta_codec(w, &none, &none);
  cr_assert_eq(pg_writer_meta_str(w, "arch.json", arch_json, strlen(arch_json), &e), PG_OK);
  const int sec = pg_writer_data_section(w, &none, &e);
  cr_assert_geq(sec, 0);
  int poisoned = 0;
  for (size_t i = 0; i < nt; i++) {
    uint64_t n = pg_arch_tensor_numel(&t[i]);
    float *v = malloc(n * sizeof *v);
    for (uint64_t j = 0; j < n; j++) v[j] = 0.01f * (float)((j * 7 + i) % 13) - 0.06f;
    if (!strcmp(t[i].name, "blocks.1.mlp_scale")) {
      v[3] = NAN;
      poisoned = 1;
    }
    pg_tensor_in in = {.name = t[i].name, .qtype = PG_QTYPE_F32, .ndim = (unsigned)t[i].ndim,
                       .dims = t[i].shape, .values = v, .sec_values = sec};
    cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s: %s", t[i].name, e.msg);
    free(v);
  }
  cr_assert(poisoned);
  cr_assert_eq(pg_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  free(t);
}

/* Exit 2, one line on stderr holding every needle, and no default receipt left behind. */
static void expect_error(const vfx *f, const char *n1, const char *n2, const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = run("%s", cmd);
  char *er = slurp(err_path);
  cr_assert_eq(rc, 2, "exit %d for %s: %s", rc, cmd, er);
  cr_assert_eq(count_lines(er), 1, "not one line: %s", er);
  cr_assert(strncmp(er, "pgverify: ", 10) == 0, "%s", er);
  if (n1) cr_assert(strstr(er, n1) != NULL, "'%s' not in: %s", n1, er);
  if (n2) cr_assert(strstr(er, n2) != NULL, "'%s' not in: %s", n2, er);
  free(er);
  struct stat st;
  cr_assert(stat(f->receipt, &st) != 0, "a failed run left a receipt (%s)", cmd);
}

Test(tools, pgverify_errors_are_one_line) {
  vfx f;
  vfx_init(&f);
  const char *pv = bin("pgverify");
  char dir[160], pat[200], other[200];
  /* val shorter than one window */
  snprintf(dir, sizeof dir, "%s/short", tmp);
  write_val(dir, 40, f.vocab, 600, UINT64_MAX, 0);
  snprintf(pat, sizeof pat, "'%s/fineweb_val_*.bin'", dir);
  expect_error(&f, "shorter than one window", NULL, "%s %s --val %s --seq-len 64 --stride 16", pv,
               f.art, pat);
  /* a tokenizer whose vocabulary disagrees with the arch */
  const char *small = spm_seed("small_bpe.model");
  cr_assert_neq(spm_vocab(small), f.vocab);
  expect_error(&f, "small_bpe.model", "vocabulary", "%s %s --val %s --tokenizer %s --seq-len 64",
               pv, f.art, f.val, small);
  /* an artifact with a NaN weight */
  char nan_art[160];
  snprintf(nan_art, sizeof nan_art, "%s/nan.pgz", tmp);
  write_nan_artifact(nan_art, f.vocab);
  expect_error(&f, "blocks.1.mlp_scale", "NaN", "%s %s --val %s --seq-len 64", pv, nan_art, f.val);
  snprintf(other, sizeof other, "%s.receipt.json", nan_art);
  struct stat st;
  cr_assert(stat(other, &st) != 0);
  /* a shard holding an id outside the vocabulary */
  snprintf(dir, sizeof dir, "%s/bad", tmp);
  write_val(dir, 1025, f.vocab, 600, 700, (uint16_t)(f.vocab + 5));
  snprintf(pat, sizeof pat, "'%s/fineweb_val_*.bin'", dir);
  snprintf(other, sizeof other, "%s/fineweb_val_000001.bin", dir);
  expect_error(&f, other, "outside a vocabulary", "%s %s --val %s --seq-len 64", pv, f.art, pat);
  /* usage faults */
  expect_error(&f, "--val", NULL, "%s %s --seq-len 64", pv, f.art);
  expect_error(&f, "unknown protocol", "nope", "%s %s --val %s --protocol nope", pv, f.art, f.val);
  expect_error(&f, "CUDA engine is not built yet", NULL, "%s %s --val %s --engine cuda", pv, f.art,
               f.val);
  /* --receipt naming the artifact (by the same or another path) is refused; the artifact stays */
  uint8_t *before, *after;
  size_t nb, na;
  pg_err e;
  cr_assert_eq(pg_file_read_all(f.art, &before, &nb, 64u << 20, &e), PG_OK);
  expect_error(&f, "overwrite the artifact", NULL, "%s %s --val %s --seq-len 64 --receipt %s", pv,
               f.art, f.val, f.art);
  snprintf(other, sizeof other, "%s/./v.pgz", tmp);
  expect_error(&f, "overwrite the artifact", NULL, "%s %s --val %s --seq-len 64 --json --receipt %s",
               pv, f.art, f.val, other);
  cr_assert_eq(pg_file_read_all(f.art, &after, &na, 64u << 20, &e), PG_OK);
  cr_assert(na == nb && !memcmp(before, after, nb), "the artifact changed");
  free(before);
  free(after);
  char *out = slurp(out_path);
  cr_assert_str_eq(out, "", "nothing on stdout after a refusal");
  free(out);
}

/* ---- pgpack end to end ------------------------------------------------------------------------ */

/* Training shards for calibration (other tokens than the validation set's) under tmp/train. */
static void write_train(char *pattern, size_t cap, uint32_t vocab) {
  char dir[160];
  snprintf(dir, sizeof dir, "%s/train", tmp);
  cr_assert(mkdir(dir, 0777) == 0);
  uint16_t t[2048];
  uint32_t x = 12345u;
  for (int i = 0; i < 2048; i++) {
    x = x * 1103515245u + 12345u;
    t[i] = i % 50 == 0 ? 1 : (uint16_t)(4 + (x >> 8) % (vocab - 4));
  }
  pg_shard_writer *w;
  pg_err e;
  cr_assert_eq(pg_shard_writer_open(&w, dir, "fineweb_train_", 1 << 20, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_append(w, t, 2048, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK, "%s", e.msg);
  pg_shard_writer_free(w);
  snprintf(pattern, cap, "'%s/fineweb_train_*.bin'", dir);
}

/* The arch.json of an artifact, written to path (from pgunpack --extract's metadata.json). */
static void extract_arch(const char *art, const char *path) {
  char dir[160], meta[200];
  snprintf(dir, sizeof dir, "%s/xa", tmp);
  cr_assert_eq(run("%s --extract %s %s", bin("pgunpack"), dir, art), 0, "%s", slurp(err_path));
  snprintf(meta, sizeof meta, "%s/metadata.json", dir);
  json_t *m = load_json(meta);
  const char *a = json_string_value(json_object_get(m, "arch.json"));
  cr_assert_not_null(a);
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(a, f);
  fclose(f);
  json_decref(m);
  pgtest_rm_rf(dir);
}

Test(tools, pgpack_then_pgverify_round_trips) {
  vfx f;
  vfx_init(&f);
  char train[220], st[200], arch[200], p1[200], p2[200], up[200], r1[220], r2[220];
  write_train(train, sizeof train, f.vocab);
  snprintf(st, sizeof st, "%s/w.safetensors", tmp);
  snprintf(arch, sizeof arch, "%s/arch.json", tmp);
  snprintf(p1, sizeof p1, "%s/p1.pgz", tmp);
  snprintf(p2, sizeof p2, "%s/p2.pgz", tmp);
  snprintf(up, sizeof up, "%s/p1.safetensors", tmp);
  snprintf(r1, sizeof r1, "%s/r1.json", tmp);
  snprintf(r2, sizeof r2, "%s/r2.json", tmp);
  /* trained weights as safetensors + arch (here: the demo's, dequantized) */
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  extract_arch(f.art, arch);
  const char *tok = spm_seed("byte_fallback.model");
  char common[1400];
  snprintf(common, sizeof common,
           "--arch %s --tokenizer %s --code %s/tools/pgpack.c --calib %s --calib-seqs 4 "
           "--calib-len 64 --val %s --passthrough-max 256 --lqer-top-k 2",
           arch, tok, getenv("PG_SOURCE_ROOT"), train, f.val);
  cr_assert_eq(run("%s --weights %s %s --threads 2 -o %s", bin("pgpack"), st, common, p1), 0,
               "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "hessians") && strstr(rep, "within budget"), "%s", rep);
  cr_assert(strstr(rep, "gptq"), "%s", rep);
  free(rep);
  /* the same inputs give the same bytes, whatever the thread count */
  cr_assert_eq(run("%s --weights %s %s --threads 1 -q -o %s", bin("pgpack"), st, common, p2), 0,
               "%s", slurp(err_path));
  cr_assert_eq(xxh64_file(p1), xxh64_file(p2));
  /* pgverify on the artifact == pgverify on its unpacked weights, bit for bit */
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), up, p1), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 32 --receipt %s",
                   bin("pgverify"), p1, f.val, r1), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --tokenizer %s --val %s --protocol sliding --seq-len 64 --stride 32 "
                   "--receipt %s", bin("pgverify"), up, tok, f.val, r2), 0, "%s", slurp(err_path));
  json_t *a = load_json(r1), *b = load_json(r2);
  double va = json_real_value(jget(a, "result", "val_bpb"));
  cr_assert(va > 0);
  cr_assert_eq(va, json_real_value(jget(b, "result", "val_bpb")));
  cr_assert_eq(json_real_value(jget(a, "result", "loss_sum_nats")),
               json_real_value(jget(b, "result", "loss_sum_nats")));
  json_decref(a);
  json_decref(b);
  /* provenance: the calibration source and the hash of its tokens */
  cr_assert_eq(run("%s --json %s", bin("pgunpack"), p1), 0);
  json_t *j = load_json(out_path);
  json_t *meta = json_object_get(j, "metadata");
  cr_assert_not_null(meta);
  const char *src = json_string_value(json_object_get(meta, "provenance.calib_source"));
  cr_assert(src && strstr(src, "fineweb_train_"), "%s", src ? src : "(none)");
  const char *hx = json_string_value(json_object_get(meta, "provenance.calib_xxh64"));
  cr_assert(hx && strlen(hx) == 16);
  json_decref(j);
  /* re-packing an artifact works too; pgsize agrees it is within the default budget */
  cr_assert_eq(run("%s --weights %s -q --codec zstd-9 -o %s", bin("pgpack"), p1, p2), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s %s", bin("pgsize"), p2), 0);
  cr_assert_eq(run("%s %s", bin("pgsize"), p1), 0);
  rep = slurp(out_path);
  cr_assert(strstr(rep, "values mlp.fc.weight") && strstr(rep, "row scales"),
            "pgsize names what pgpack's sections hold:\n%s", rep);
  free(rep);
}

Test(tools, pgpack_budget_fit_and_refusals) {
  vfx f;
  vfx_init(&f);
  char train[220], out[200], big[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(out, sizeof out, "%s/fit.pgz", tmp);
  snprintf(big, sizeof big, "%s/big.pgz", tmp);
  /* a bigger demo model, packed once without a budget to learn its size */
  cr_assert_eq(run("%s --layers 2 --dim 128 --heads 4 --kv-heads 2 --vocab %u --codec zstd-3 "
                   "-o %s", bin("pgdemo"), f.vocab, big), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --json -o %s", bin("pgpack"), big, train, out), 0, "%s", slurp(err_path));
  json_t *j = load_json(out_path);
  json_int_t base = json_integer_value(json_object_get(j, "counted_bytes"));
  json_decref(j);
  cr_assert_gt(base, 10000);
  json_int_t budget = base * 3 / 4;
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --budget %lld --json -o %s", bin("pgpack"), big, train, (long long)budget, out),
               0, "%s", slurp(err_path));
  j = load_json(out_path);
  json_int_t got = json_integer_value(json_object_get(j, "counted_bytes"));
  cr_assert(got <= budget && got >= budget - budget / 200, "%lld for a budget of %lld",
            (long long)got, (long long)budget);
  cr_assert_gt(json_array_size(json_object_get(j, "trials")), 1);
  json_decref(j);
  /* pgsize counts the same bytes against the same budget */
  cr_assert_eq(run("%s --budget %lld --json %s", bin("pgsize"), (long long)budget, out), 0);
  j = load_json(out_path);
  cr_assert_eq(json_integer_value(json_object_get(j, "counted_bytes")), got);
  json_decref(j);
  /* a budget no setting reaches: an error, and no output */
  char none[200];
  snprintf(none, sizeof none, "%s/none.pgz", tmp);
  cr_assert_eq(run("%s --weights %s --budget 2000 -o %s", bin("pgpack"), big, none), 2);
  char *e = slurp(err_path);
  cr_assert(strstr(e, "pgpack: ") == e && count_lines(e) == 1, "%s", e);
  free(e);
  cr_assert_neq(access(none, F_OK), 0);
  /* calibrating on the validation shards is refused */
  cr_assert_eq(run("%s --weights %s --calib %s --val %s -o %s", bin("pgpack"), big, f.val, f.val,
                   none), 2);
  e = slurp(err_path);
  cr_assert(strstr(e, "validation") && count_lines(e) == 1, "%s", e);
  free(e);
  cr_assert_neq(access(none, F_OK), 0);
  /* usage errors */
  cr_assert_eq(run("%s --weights %s --bits mlp=4 -o %s", bin("pgpack"), big, none), 2);
  cr_assert_eq(run("%s --weights %s --round gptq -o %s", bin("pgpack"), big, none), 2);
  cr_assert_eq(run("%s --weights %s -o %s", bin("pgpack"), big, big), 2, "output over an input");
  cr_assert_eq(run("%s --help", bin("pgpack")), 0);
}

/* ---- pgtrain end to end ----------------------------------------------------------------------- */

/* The "loss" values of the step events of a --log file, in order (at most cap). */
static size_t step_losses(const char *path, double *out, size_t cap) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "%s", path);
  char line[1024];
  size_t n = 0;
  while (fgets(line, sizeof line, f)) {
    json_t *j = json_loads(line, 0, NULL);
    cr_assert_not_null(j, "%s: %s", path, line);
    if (!strcmp(json_string_value(json_object_get(j, "event")), "step") && n < cap)
      out[n++] = json_real_value(json_object_get(j, "loss"));
    json_decref(j);
  }
  fclose(f);
  return n;
}

Test(tools, pgtrain_resume_equals_one_run_and_pgpack_reads_it) {
  vfx f;
  vfx_init(&f);
  char train[220], cfgp[200], c1[200], c2[200], l1[200], l2[200], pk[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(cfgp, sizeof cfgp, "%s/run.json", tmp);
  snprintf(c1, sizeof c1, "%s/one.safetensors", tmp);
  snprintf(c2, sizeof c2, "%s/two.safetensors", tmp);
  snprintf(l1, sizeof l1, "%s/one.jsonl", tmp);
  snprintf(l2, sizeof l2, "%s/two.jsonl", tmp);
  snprintf(pk, sizeof pk, "%s/t.pgz", tmp);
  /* the patterns come quoted for the shell; the config wants them bare */
  char tpat[220], vpat[220];
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  snprintf(vpat, sizeof vpat, "%.*s", (int)strlen(f.val) - 2, f.val + 1);
  FILE *cf = fopen(cfgp, "w");
  cr_assert_not_null(cf);
  fprintf(cf,
          "{\"arch\": {\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 2, "
          "\"kv_heads\": 1, \"mlp\": {\"hidden\": 64}, \"structure\": {\"encoder\": [0, 0], "
          "\"decoder\": [1], \"recur_frac\": 0.3}},\n"
          " \"data\": {\"train\": \"%s\", \"val\": \"%s\", \"tokenizer\": \"%s\", "
          "\"loader\": \"shuffled\", \"seq_len\": 32, \"batch\": 2},\n"
          " \"schedule\": {\"steps\": 6, \"warmdown_frac\": 0.5},\n"
          " \"averaging\": {\"ema\": 0.9}, \"log\": {\"every\": 2, \"val_tokens\": 257}}\n",
          f.vocab, tpat, vpat, spm_seed("byte_fallback.model"));
  fclose(cf);
  cr_assert_eq(run("%s --config %s --threads 2 --log %s -o %s", bin("pgtrain"), cfgp, l1, c1), 0,
               "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "initial") && strstr(rep, "bpb") && strstr(rep, "done"), "%s", rep);
  free(rep);
  /* the same run in two parts */
  cr_assert_eq(run("%s --config %s --stop-after 4 -q --log %s -o %s", bin("pgtrain"), cfgp, l2,
                   c2), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s --config %s --resume %s -q --log %s -o %s", bin("pgtrain"), cfgp, c2, l2,
                   c2), 0, "%s", slurp(err_path));
  double a[16], b[16];
  size_t na = step_losses(l1, a, 16), nb = step_losses(l2, b, 16);
  cr_assert_eq(na, 6u);
  cr_assert_eq(nb, 6u);
  for (size_t i = 0; i < na; i++) cr_assert_eq(a[i], b[i], "step %zu", i + 1);
  cr_assert_eq(xxh64_file(c1), xxh64_file(c2), "the same final checkpoint");
  /* pgpack and pgverify read the checkpoint */
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 32 -q --codec zstd-3 "
                   "--passthrough-max 256 -o %s", bin("pgpack"), c1, train, pk), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s %s --tokenizer %s --val %s --seq-len 64 --no-receipt", bin("pgverify"), c1,
                   spm_seed("byte_fallback.model"), f.val), 0, "%s", slurp(err_path));
  /* errors: one line */
  cr_assert_eq(run("%s --config %s/none.json -o %s", bin("pgtrain"), tmp, c1), 2);
  char *e = slurp(err_path);
  cr_assert(strncmp(e, "pgtrain: ", 9) == 0 && count_lines(e) == 1, "%s", e);
  free(e);
}

/* ---- inputs that are not regular files ------------------------------------------------------- */

/* A FIFO where a file is expected (the artifact, the tokenizer, a shard, a config, a record's
 * submission.json) is refused at once with exit 2 and one line naming it: opening it for reading
 * used to wait for a writer forever. `timeout` turns a hang into exit 124. */
Test(tools, fifo_inputs_are_refused_without_blocking) {
  vfx f;
  vfx_init(&f);
  char fifo[200], rec[200], sub[240], code[240], model[240], valdir[200], valf[260], cfg[240];
  snprintf(fifo, sizeof fifo, "%s/pipe", tmp);
  cr_assert_eq(mkfifo(fifo, 0600), 0);
  snprintf(valdir, sizeof valdir, "%s/fval", tmp);
  cr_assert_eq(mkdir(valdir, 0777), 0);
  snprintf(valf, sizeof valf, "%s/fineweb_val_000000.bin", valdir);
  cr_assert_eq(mkfifo(valf, 0600), 0);
  snprintf(rec, sizeof rec, "%s/rec", tmp);
  cr_assert_eq(mkdir(rec, 0777), 0);
  snprintf(code, sizeof code, "%s/train_gpt.py", rec);
  snprintf(model, sizeof model, "%s/final_model.int6.ptz", rec);
  snprintf(sub, sizeof sub, "%s/submission.json", rec);
  cr_assert_eq(pg_file_write_atomic(code, "print(1)\n", 9, NULL), PG_OK);
  cr_assert_eq(pg_file_write_atomic(model, "x", 1, NULL), PG_OK);
  cr_assert_eq(mkfifo(sub, 0600), 0);
  snprintf(cfg, sizeof cfg, "%s/cfg.json", tmp);
  cr_assert_eq(mkfifo(cfg, 0600), 0);
  char cmds[8][900];
  int nc = 0;
  snprintf(cmds[nc++], 900, "%s %s", bin("pgsize"), fifo);
  snprintf(cmds[nc++], 900, "%s --check %s", bin("pgunpack"), fifo);
  snprintf(cmds[nc++], 900, "%s %s --val %s --no-receipt", bin("pgverify"), fifo, f.val);
  snprintf(cmds[nc++], 900, "%s %s --val %s --tokenizer %s --no-receipt", bin("pgverify"),
           f.art, f.val, fifo);
  snprintf(cmds[nc++], 900, "%s %s --val '%s/fineweb_val_*.bin' --no-receipt", bin("pgverify"),
           f.art, valdir);
  snprintf(cmds[nc++], 900, "%s --config %s -o %s/c.safetensors", bin("pgtrain"), cfg, tmp);
  snprintf(cmds[nc++], 900, "%s %s", bin("pgsize"), rec);
  for (int i = 0; i < nc; i++) {
    int rc = run("timeout 60 %s", cmds[i]);
    char *e = slurp(err_path);
    cr_assert_eq(rc, 2, "%s: exit %d: %s", cmds[i], rc, e);
    cr_assert(strstr(e, "FIFO") && count_lines(e) == 1, "%s: %s", cmds[i], e);
    free(e);
  }
}
