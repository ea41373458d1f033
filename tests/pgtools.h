/* pgtools.h: the harness of the commands' end-to-end tests (test_tools.c, test_tools2.c): a
 * fresh folder per test, the built tools run through the shell with their output captured, and the
 * inputs several tests share (a pgverify fixture, validation and training shards). */
#ifndef PGTOOLS_H
#define PGTOOLS_H

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "pg_io.h"
#include "pg_spm.h"
#include "pgshards.h"
#include "pgtest.h"

static char tmp[64];
static char out_path[128], err_path[128];

static inline const char *bin(const char *tool) {
  static char path[4][512];
  static int k = 0;
  const char *root = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(root, "PG_BUILD_ROOT is not set (run through meson test)");
  k = (k + 1) % 4;
  snprintf(path[k], sizeof path[k], "%s/tools/%s", root, tool);
  return path[k];
}

static inline void setup(void) {
  strcpy(tmp, "/tmp/pgtools.XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
  snprintf(out_path, sizeof out_path, "%s/stdout", tmp);
  snprintf(err_path, sizeof err_path, "%s/stderr", tmp);
}

/* Run a shell command line with stdout/stderr captured; return the exit status. */
static inline int run(const char *fmt, ...) {
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

static inline char *slurp(const char *path) {
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

static inline int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

static inline void teardown(void) { pgtest_rm_rf(tmp); }

/* A SentencePiece model of the repository's fuzz seeds. */
static inline const char *spm_seed(const char *name) {
  static char path[2][512];
  static int k = 0;
  k = (k + 1) % 2;
  snprintf(path[k], sizeof path[k], "%s/tests/fuzz/seeds/spm/%s", getenv("PG_SOURCE_ROOT"), name);
  return path[k];
}

/* The vocabulary of a tokenizer that has the "▁" piece the byte tables need. */
static inline uint32_t spm_vocab(const char *path) {
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

/* n validation tokens in shards of shard_tokens under dir (created), named fineweb_val_NNNNNN.bin:
 * documents of 3..40 tokens, each starting with BOS (1), other ids in [4, vocab); token bad_at
 * (when < n) is set to bad_id. */
static inline void write_val(const char *dir, uint64_t n, uint32_t vocab,
                             uint64_t shard_tokens, uint64_t bad_at, uint16_t bad_id) {
  cr_assert(mkdir(dir, 0777) == 0, "mkdir %s", dir);
  uint16_t *t = pgshards_random_docs(n, 88172645u, vocab, 3, 38);
  if (bad_at < n) t[bad_at] = bad_id;
  pgshards_write(dir, "fineweb_val_", t, n, shard_tokens);
  free(t);
}

/* The inputs of a pgverify run: a tiny pgdemo artifact carrying byte_fallback.model, and 1,025
 * validation tokens in two shards. */
typedef struct vfx {
  char art[160], val[200], receipt[200];
  uint32_t vocab;
} vfx;

static inline void vfx_init(vfx *f) {
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

static inline json_t *load_json(const char *path) {
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  cr_assert_not_null(j, "%s is not JSON: %s (line %d)", path, je.text, je.line);
  return j;
}

/* Training shards for calibration (other tokens than the validation set's) under tmp/train. */
static inline void write_train(char *pattern, size_t cap, uint32_t vocab) {
  char dir[160];
  snprintf(dir, sizeof dir, "%s/train", tmp);
  cr_assert(mkdir(dir, 0777) == 0);
  uint16_t t[2048];
  uint32_t x = 12345u;
  for (int i = 0; i < 2048; i++) {
    x = x * 1103515245u + 12345u;
    t[i] = i % 50 == 0 ? 1 : (uint16_t)(4 + (x >> 8) % (vocab - 4));
  }
  pgshards_write(dir, "fineweb_train_", t, 2048, 1 << 20);
  snprintf(pattern, cap, "'%s/fineweb_train_*.bin'", dir);
}

#endif
