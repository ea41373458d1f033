/* test_tools.c: the commands end to end, as a user runs them: exit codes (spec/cli.md), one-line
 * errors naming the file, --json documents, extraction and safetensors export, and that a failed
 * or refused command leaves its inputs untouched and no partial output. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_container.h"
#include "pg_io.h"
#include "pg_safetensors.h"
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
  const char *tools[] = {"pgsize", "pgunpack", "pgdemo"};
  for (int i = 0; i < 3; i++) {
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
