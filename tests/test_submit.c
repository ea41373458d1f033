/* test_submit.c: pgsubmit end to end (spec/submit.md): a record folder written from a pgdemo
 * artifact, two pgverify receipts and a training log, read back by `pgsize DIR` with the same
 * claims and no finding; its JSON fields, its SVG pictures well-formed; and the refusals (a
 * receipt of another artifact, an existing folder, a bad log) in one line, leaving nothing. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <glob.h>
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

#include "pg_io.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pgfiller.h"
#include "pgshards.h"
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
  strcpy(tmp, "/tmp/pgsubmit.XXXXXX");
  cr_assert_not_null(mkdtemp(tmp));
  snprintf(out_path, sizeof out_path, "%s/stdout", tmp);
  snprintf(err_path, sizeof err_path, "%s/stderr", tmp);
}
static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(submit, .init = setup, .fini = teardown);

/* Run a shell command line with stdout/stderr captured; return the exit status. */
static int run(const char *fmt, ...) {
  char cmd[3000], full[3400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "%s >%s 2>%s", cmd, out_path, err_path);
  int st = system(full);
  cr_assert(WIFEXITED(st), "%s did not exit", cmd);
  return WEXITSTATUS(st);
}

static char *slurp_n(const char *path, size_t *len) {
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, &n, 64u << 20, &e), PG_OK, "%s", e.msg);
  char *s = malloc(n + 1);
  memcpy(s, b, n);
  s[n] = '\0';
  free(b);
  if (len) *len = n;
  return s;
}
static char *slurp(const char *path) { return slurp_n(path, NULL); }

static json_t *load_json(const char *path) {
  json_error_t je;
  json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  cr_assert_not_null(j, "%s: %s", path, je.text);
  return j;
}

static uint64_t xxh64_file(const char *path) {
  size_t n;
  char *b = slurp_n(path, &n);
  uint64_t h = XXH64(b, n, 0);
  free(b);
  return h;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* Entries of a folder matching a glob pattern (relative to it). */
static size_t matches(const char *dir, const char *pat) {
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, pat);
  glob_t g;
  size_t n = glob(p, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
  globfree(&g);
  return n;
}

/* The refusal of a command: exit 2 and one line on stderr naming the tool. */
static void expect_refusal(int rc, const char *needle) {
  char *er = slurp(err_path);
  int lines = 0;
  for (const char *s = er; *s; s++) lines += *s == '\n';
  cr_assert_eq(rc, 2, "exit %d: %s", rc, er);
  cr_assert(strncmp(er, "pgsubmit", 8) == 0 && lines == 1, "%s", er);
  cr_assert(strstr(er, needle) != NULL, "'%s' not in: %s", needle, er);
  free(er);
}

/* A minimal well-formedness check of an SVG file: it starts with <svg, every element is closed
 * in order, and every number in an attribute value is finite. */
static void check_svg(const char *path) {
  char *s = slurp(path);
  cr_assert(strncmp(s, "<svg", 4) == 0, "%s does not start with <svg", path);
  char stack[64][32];
  int depth = 0, elements = 0;
  for (const char *p = s; *p;) {
    if (*p != '<') { p++; continue; }
    const char *e = strchr(p, '>');
    cr_assert_not_null(e, "%s: an unclosed tag", path);
    if (p[1] == '/') {
      char name[32];
      size_t n = strcspn(p + 2, " >");
      cr_assert(n < sizeof name && depth > 0, "%s: a stray end tag", path);
      memcpy(name, p + 2, n);
      name[n] = '\0';
      cr_assert_str_eq(stack[--depth], name, "%s: </%s> closes <%s>", path, name, stack[depth]);
    } else {
      size_t n = strcspn(p + 1, " />");
      cr_assert(n > 0 && n < 32, "%s: a bad tag", path);
      elements++;
      /* attribute values: numbers must be finite */
      for (const char *q = p; q < e; q++) {
        if (*q != '"') continue;
        const char *v = q + 1, *end = strchr(v, '"');
        cr_assert(end && end < e, "%s: an unterminated attribute", path);
        for (const char *r = v; r < end;) {
          if (isdigit((unsigned char)*r) || *r == '-' || *r == '.') {
            char *stop;
            double x = strtod(r, &stop);
            cr_assert(isfinite(x), "%s: a number that is not finite", path);
            r = stop > r ? stop : r + 1;
          } else {
            cr_assert(strncasecmp(r, "nan", 3) && strncasecmp(r, "inf", 3), "%s: nan/inf", path);
            r++;
          }
        }
        q = end;
      }
      if (e[-1] != '/') {
        cr_assert(depth < 64, "%s: too deep", path);
        memcpy(stack[depth], p + 1, n);
        stack[depth++][n] = '\0';
      }
    }
    p = e + 1;
  }
  cr_assert_eq(depth, 0, "%s: %d elements left open", path, depth);
  cr_assert_gt(elements, 3, "%s: nearly empty", path);
  free(s);
}

/* n validation tokens (documents of 3..40 tokens opening with BOS 1) in shards under dir. */
static void write_val(const char *dir, uint64_t n, uint32_t vocab) {
  cr_assert(mkdir(dir, 0777) == 0, "mkdir %s", dir);
  uint16_t *t = pgshards_random_docs(n, 2463534242u, vocab, 3, 38);
  pgshards_write(dir, "fineweb_val_", t, n, 600);
  free(t);
}

/* The inputs: an artifact embedding train_gpt.py, validation shards, two receipts (a partial
 * plain run and a chunked TTT run), a training log. */
typedef struct fx {
  char art[160], val[200], code[160], r1[160], r2[160], log[160];
} fx;

static void write_file(const char *path, const char *text) {
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, text, strlen(text), &e), PG_OK, "%s", e.msg);
}

static void fx_init(fx *f, int seed) {
  char tok[512];
  snprintf(tok, sizeof tok, "%s/tests/fuzz/seeds/spm/byte_fallback.model",
           getenv("PG_SOURCE_ROOT"));
  pg_spm *m;
  pg_err e;
  cr_assert_eq(pg_spm_open_file(&m, tok, &e), PG_OK, "%s", e.msg);
  const uint32_t vocab = pg_spm_vocab_size(m);
  pg_spm_free(m);
  snprintf(f->code, sizeof f->code, "%s/train_gpt.py", tmp);
  write_file(f->code, "import torch\r\nprint('a pgolf run')\r\n");
  snprintf(f->art, sizeof f->art, "%s/a.pgz", tmp);
  cr_assert_eq(run("%s --layers 1 --dim 32 --heads 4 --kv-heads 2 --mlp-mult 2 --vocab %u "
                   "--codec zstd-3 --tokenizer %s --code %s --seed %d -o %s",
                   bin("pgdemo"), vocab, tok, f->code, seed, f->art),
               0, "pgdemo: %s", slurp(err_path));
  char dir[160];
  snprintf(dir, sizeof dir, "%s/val", tmp);
  write_val(dir, 1025, vocab);
  snprintf(f->val, sizeof f->val, "'%s/fineweb_val_*.bin'", dir);
  snprintf(f->r1, sizeof f->r1, "%s/r1.json", tmp);
  snprintf(f->r2, sizeof f->r2, "%s/r2.json", tmp);
  cr_assert_eq(run("%s %s --val %s --protocol plain --seq-len 64 --max-tokens 700 --threads 1 "
                   "--receipt %s", bin("pgverify"), f->art, f->val, f->r1),
               0, "pgverify: %s", slurp(err_path));
  cr_assert_eq(run("%s %s --val %s --protocol ttt-chunk --seq-len 64 --stride 16 "
                   "--chunk-tokens 256 --epochs 1 --batch-rows 2 --threads 1 --receipt %s",
                   bin("pgverify"), f->art, f->val, f->r2),
               0, "pgverify: %s", slurp(err_path));
  /* a log in pgtrain's shape (spec/train.md §7) */
  snprintf(f->log, sizeof f->log, "%s/train.jsonl", tmp);
  FILE *lf = fopen(f->log, "w");
  cr_assert_not_null(lf);
  fprintf(lf, "{\"event\":\"val\",\"step\":0,\"weights\":\"live\",\"loss\":6.5,\"bpb\":3.1}\n");
  for (int s = 1; s <= 30; s++) {
    fprintf(lf, "{\"event\":\"step\",\"step\":%d,\"loss\":%.4f,\"grad_norm\":1.0,\"lr_mul\":1.0,"
                "\"momentum\":0.95,\"loops\":false,\"tokens\":4096}\n", s, 7.0 - 0.1 * s);
    if (s % 10 == 0)
      fprintf(lf, "{\"event\":\"val\",\"step\":%d,\"weights\":\"live\",\"loss\":%.3f,"
                  "\"bpb\":%.3f}\n", s, 6.5 - 0.05 * s, 3.1 - 0.02 * s);
  }
  fclose(lf);
}

static double receipt_num(const char *path, const char *key) {
  json_t *j = load_json(path);
  double v = json_number_value(json_object_get(json_object_get(j, "result"), key));
  json_decref(j);
  return v;
}

Test(submit, writes_a_folder_that_pgsize_reads_back) {
  fx f;
  fx_init(&f, 3);
  char dir[160];
  snprintf(dir, sizeof dir, "%s/rec", tmp);
  cr_assert_eq(run("%s %s --receipt %s --receipt %s --seed 1337 --seed 42 --train-log %s "
                   "--name 'Tiny & <demo>' --author 'A. Person' --github-id aperson "
                   "--date 2026-12-07 --blurb 'one line' -o %s",
                   bin("pgsubmit"), f.art, f.r1, f.r2, f.log, dir),
               0, "%s", slurp(err_path));
  const char *files[] = {"final_model.pgolf.ptz", "train_gpt.py", "submission.json", "README.md",
                         "budget.svg", "chunks-2.svg", "train.svg", "receipt-1.json",
                         "receipt-2.json", "train_log.jsonl"};
  char p[300];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, files[i]);
    cr_assert(exists(p), "%s missing", files[i]);
  }
  cr_assert_eq(matches(tmp, "*.tmp.*"), 0, "a temporary folder was left");
  /* the artifact is copied as it is, the embedded script is shipped */
  snprintf(p, sizeof p, "%s/final_model.pgolf.ptz", dir);
  cr_assert_eq(xxh64_file(p), xxh64_file(f.art));
  snprintf(p, sizeof p, "%s/train_gpt.py", dir);
  cr_assert_eq(xxh64_file(p), xxh64_file(f.code));
  /* submission.json: the records' fields */
  snprintf(p, sizeof p, "%s/submission.json", dir);
  json_t *s = load_json(p);
  cr_assert_str_eq(json_string_value(json_object_get(s, "name")), "Tiny & <demo>");
  cr_assert_str_eq(json_string_value(json_object_get(s, "author")), "A. Person");
  cr_assert_str_eq(json_string_value(json_object_get(s, "github_id")), "aperson");
  cr_assert_str_eq(json_string_value(json_object_get(s, "date")), "2026-12-07");
  cr_assert_str_eq(json_string_value(json_object_get(s, "blurb")), "one line");
  const double b1 = receipt_num(f.r1, "val_bpb"), b2 = receipt_num(f.r2, "val_bpb");
  const double l1 = receipt_num(f.r1, "val_loss"), l2 = receipt_num(f.r2, "val_loss");
  cr_assert_neq(b1, b2);
  cr_assert_eq(json_real_value(json_object_get(s, "val_bpb")), (b1 + b2) / 2);
  cr_assert_eq(json_real_value(json_object_get(s, "val_loss")), (l1 + l2) / 2);
  cr_assert(fabs(json_real_value(json_object_get(s, "val_bpb_std")) - fabs(b1 - b2) / sqrt(2)) <
            1e-12);
  json_t *seeds = json_object_get(s, "seeds");
  cr_assert_eq(json_array_size(seeds), 2);
  cr_assert_eq(json_integer_value(json_array_get(seeds, 0)), 1337);
  cr_assert_eq(json_integer_value(json_array_get(seeds, 1)), 42);
  json_t *sr = json_object_get(s, "seed_results");
  cr_assert_eq(json_real_value(json_object_get(json_object_get(sr, "1337"), "val_bpb")), b1);
  cr_assert_eq(json_real_value(json_object_get(json_object_get(sr, "42"), "val_bpb")), b2);
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(sr, "42"), "protocol")),
                   "ttt-chunk");
  uint64_t art_size, code_size;
  pg_err e;
  cr_assert_eq(pg_file_size(f.art, &art_size, &e), PG_OK);
  cr_assert_eq(pg_file_size(f.code, &code_size, &e), PG_OK);
  const json_int_t code_bytes = (json_int_t)code_size - 2; /* two CRLF pairs folded */
  cr_assert_eq(json_integer_value(json_object_get(s, "bytes_code")), code_bytes);
  cr_assert_eq(json_integer_value(json_object_get(s, "bytes_total")),
               (json_int_t)art_size + code_bytes);
  /* pgsize, the record reader, reads the same claims back and finds nothing */
  cr_assert_eq(run("%s --json %s", bin("pgsize"), dir), 0, "%s", slurp(err_path));
  json_t *r = load_json(out_path);
  cr_assert_eq(json_integer_value(json_object_get(r, "counted_bytes")),
               json_integer_value(json_object_get(s, "bytes_total")));
  json_t *claims = json_object_get(r, "claims");
  int seen = 0;
  for (size_t i = 0; i < json_array_size(claims); i++) {
    json_t *c = json_array_get(claims, i);
    const char *k = json_string_value(json_object_get(c, "claim"));
    const char *v = json_string_value(json_object_get(c, "verdict"));
    cr_assert_str_neq(v, "differs", "%s differs", k);
    if (!strcmp(k, "bytes_total") || !strcmp(k, "bytes_code")) {
      cr_assert_str_eq(v, "agrees", "%s", k);
      seen++;
    }
    if (!strcmp(k, "val_bpb")) {
      cr_assert_eq(json_number_value(json_object_get(c, "claimed")), (b1 + b2) / 2);
      seen++;
    }
  }
  cr_assert_eq(seen, 3, "pgsize did not read bytes_total, bytes_code and val_bpb");
  json_decref(r);
  json_decref(s);
  /* the pictures; the plain run has one chunk and no chart */
  const char *svgs[] = {"budget.svg", "chunks-2.svg", "train.svg"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, svgs[i]);
    check_svg(p);
  }
  cr_assert_eq(matches(dir, "chunks-1.svg"), 0);
  /* the README: the account, the protocol, the results */
  snprintf(p, sizeof p, "%s/README.md", dir);
  char *md = slurp(p);
  cr_assert(strstr(md, "# Tiny & \\<demo\\>") != NULL, "%s", md);
  cr_assert(strstr(md, "| 42 |") && strstr(md, "| 1337 |") && strstr(md, "mean (std)"), "%s",
            md);
  cr_assert(strstr(md, "`name \"ttt-chunk\"`") && strstr(md, "`chunk_tokens 256`"), "%s", md);
  cr_assert(strstr(md, "| tokenizer |") && strstr(md, "budget.svg") && strstr(md, "train.svg"),
            "%s", md);
  free(md);
}

Test(submit, one_receipt_and_an_empty_folder) {
  fx f;
  fx_init(&f, 3);
  char dir[160];
  snprintf(dir, sizeof dir, "%s/empty/", tmp);
  cr_assert(mkdir(dir, 0777) == 0);
  cr_assert_eq(run("%s %s --receipt %s -o %s", bin("pgsubmit"), f.art, f.r2, dir), 0, "%s",
               slurp(err_path));
  char p[300];
  snprintf(p, sizeof p, "%s/submission.json", dir);
  json_t *s = load_json(p);
  cr_assert_eq(json_real_value(json_object_get(s, "val_bpb")), receipt_num(f.r2, "val_bpb"));
  cr_assert_null(json_object_get(s, "seeds"));
  cr_assert_null(json_object_get(s, "val_bpb_std"));
  cr_assert_null(json_object_get(s, "name"));
  json_decref(s);
  cr_assert_eq(run("%s %s", bin("pgsize"), dir), 0, "%s", slurp(err_path));
  char *o = slurp(out_path);
  cr_assert(strstr(o, "DIFFERS") == NULL && strstr(o, "bytes_total") != NULL, "%s", o);
  free(o);
  snprintf(p, sizeof p, "%s/train.svg", dir);
  cr_assert(!exists(p));
}

Test(submit, refusals_leave_nothing) {
  fx f;
  fx_init(&f, 3);
  char dir[160], other[160], p[300];
  snprintf(dir, sizeof dir, "%s/rec", tmp);
  /* a receipt of another artifact */
  snprintf(other, sizeof other, "%s/other.pgz", tmp);
  cr_assert_eq(run("%s --layers 1 --dim 32 --heads 4 --kv-heads 2 --vocab 300 --codec zstd-3 "
                   "--code %s --seed 9 -o %s", bin("pgdemo"), f.code, other), 0);
  expect_refusal(run("%s %s --receipt %s --receipt %s -o %s", bin("pgsubmit"), other, f.r1, f.r2,
                     dir),
                 "a receipt of another file");
  cr_assert(!exists(dir));
  cr_assert_eq(matches(tmp, "*.tmp.*"), 0);
  /* an existing folder with something in it is left as it is */
  cr_assert(mkdir(dir, 0777) == 0);
  snprintf(p, sizeof p, "%s/keep.txt", dir);
  write_file(p, "mine\n");
  expect_refusal(run("%s %s --receipt %s -o %s", bin("pgsubmit"), f.art, f.r1, dir),
                 "not an empty folder");
  cr_assert_eq(matches(dir, "*"), 1);
  /* an existing file */
  expect_refusal(run("%s %s --receipt %s -o %s", bin("pgsubmit"), f.art, f.r1, p),
                 "not an empty folder");
  char *k = slurp(p);
  cr_assert_str_eq(k, "mine\n");
  free(k);
  /* an artifact without train_gpt.py and no --code */
  snprintf(dir, sizeof dir, "%s/rec2", tmp);
  char bare[160];
  snprintf(bare, sizeof bare, "%s/bare.pgz", tmp);
  cr_assert_eq(run("%s --layers 1 --dim 32 --heads 4 --kv-heads 2 --vocab 300 --codec zstd-3 "
                   "-o %s", bin("pgdemo"), bare), 0);
  expect_refusal(run("%s %s --receipt %s -o %s", bin("pgsubmit"), bare, f.r1, dir),
                 "embeds no train_gpt.py");
  /* a log that is not pgtrain's: refused after the receipts were read, before anything is kept */
  char bad[160];
  snprintf(bad, sizeof bad, "%s/bad.jsonl", tmp);
  write_file(bad, "{\"event\":\"step\",\"step\":1,\"loss\":2.0}\nnot json\n");
  expect_refusal(run("%s %s --receipt %s --train-log %s -o %s", bin("pgsubmit"), f.art, f.r1, bad,
                     dir),
                 "offset 37");
  /* a line of filler: refused before it is parsed, at the value over the cap */
  FILE *lf = fopen(bad, "w");
  cr_assert_not_null(lf);
  size_t fl;
  char *fill = pgfiller_json("loss", PG_JSON_DOC_VALUES - 2, &fl);
  fprintf(lf, "{\"event\":\"step\",\"step\":1,\"loss\":2.0}\n%s\n", fill);
  fclose(lf);
  free(fill);
  char over[80];
  snprintf(over, sizeof over, "offset %llu: more than %u JSON values",
           37 + (unsigned long long)PGFILLER_OVER("loss", PG_JSON_DOC_VALUES), PG_JSON_DOC_VALUES);
  expect_refusal(run("%s %s --receipt %s --train-log %s -o %s", bin("pgsubmit"), f.art, f.r1, bad,
                     dir),
                 over);
  /* one seed for two receipts */
  cr_assert_eq(run("%s %s --receipt %s --receipt %s --seed 1 -o %s", bin("pgsubmit"), f.art, f.r1,
                   f.r2, dir),
               2);
  cr_assert(!exists(dir));
  cr_assert_eq(matches(tmp, "*.tmp.*"), 0);
  /* the inputs are untouched: the receipts still name the artifact */
  cr_assert_eq(run("%s %s --receipt %s -o %s", bin("pgsubmit"), f.art, f.r1, dir), 0, "%s",
               slurp(err_path));
}
