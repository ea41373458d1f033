/* test_tools.c: the commands end to end, as a user runs them: exit codes (spec/cli.md), one-line
 * errors naming the file, --json documents, extraction and safetensors export, and that a failed
 * or refused command leaves its inputs untouched and no partial output. The harness is pgtools.h;
 * pgpack's budget fit is in test_tools2.c. */
#include <criterion/criterion.h>
#include <glob.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
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
#include "pg_packjob.h"
#include "pg_safetensors.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_verify.h"
#include "pgbomb.h"
#include "pglayout.h"
#include "pgremote.h"
#include "pgshards.h"
#include "pgtest.h"
#include "pgtools.h"

/* A small artifact made with pgdemo. */
static void make_demo(const char *path, const char *extra) {
  int rc = run("%s --layers 1 --dim 128 --heads 2 --kv-heads 1 --vocab 640 --codec zstd-3 "
               "--code %s/tools/pgdemo.c %s -o %s",
               bin("pgdemo"), getenv("PG_SOURCE_ROOT"), extra ? extra : "", path);
  cr_assert_eq(rc, 0, "pgdemo failed: %s", slurp(err_path));
}

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

/* pgdemo writes quant layout 2 in container version 2 by default, as pgpack does (every int
 * matrix transposed); --layout 1 and --container 1 write the older files, and --packed values
 * (which layout 2 does not order) layout 1; all read back to the same tensors. */
Test(tools, pgdemo_writes_layout_2_and_layout_1_on_request) {
  const char *opts[] = {"", "--layout 1", "--layout 2 --container 1", "--packed"};
  const int lay[] = {2, 1, 2, 1}, cont[] = {2, 2, 1, 2};
  char p[4][160];
  for (int k = 0; k < 4; k++) {
    snprintf(p[k], sizeof p[k], "%s/l%d.pgz", tmp, k);
    cr_assert_eq(run("%s --layers 2 --dim 64 --heads 2 --kv-heads 1 --vocab 128 "
                     "--passthrough-max 256 --codec zstd-3 %s -o %s", bin("pgdemo"), opts[k],
                     p[k]),
                 0, "%s", slurp(err_path));
    pglayout_counts c = pglayout_of(p[k]);
    cr_assert(c.container == cont[k] && c.quant_layout == lay[k], "%s: container %u, layout %u",
              opts[k], c.container, c.quant_layout);
    cr_assert_gt(c.ints, 4);
    cr_assert_eq(c.transposed, lay[k] == 2 ? c.ints : 0, "%s", opts[k]);
    if (k) pglayout_same_tensors(p[0], p[k]);
  }
  cr_assert_eq(run("%s --layout 3 -o %s", bin("pgdemo"), p[0]), 2);
  cr_assert_eq(run("%s --container 3 -o %s", bin("pgdemo"), p[0]), 2);
}

/* ---- pgverify end to end --------------------------------------------------------------------- */

static uint64_t xxh64_file(const char *path) {
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, &n, 64u << 20, &e), PG_OK, "%s", e.msg);
  uint64_t h = XXH64(b, n, 0);
  free(b);
  return h;
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
  cr_assert(!strncmp(json_string_value(jget(r, "engine", "devices")), "cpu: ", 5));
  cr_assert_str_eq(json_string_value(jget(r, "engine", "driver")), "");
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

/* Every member named "seconds*" removed, at any depth (the only fields that vary run to run). */
static void drop_timings(json_t *j) {
  if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++) drop_timings(json_array_get(j, i));
    return;
  }
  if (!json_is_object(j)) return;
  const char *key;
  json_t *v;
  void *tmpk;
  json_object_foreach_safe(j, tmpk, key, v) {
    if (!strncmp(key, "seconds", 7)) json_object_del(j, key);
    else drop_timings(v);
  }
}

static void count_start(void *ctx, const pg_verify_start *s) {
  cr_assert_eq(s->tokens, 1025);
  ++*(int *)ctx;
}

/* The library's verification run (pg_verify.h), called in process as a checker would, gives the
 * receipt pgverify writes, field for field (timings aside); it writes nothing without a path,
 * and its faults are the tool's. */
Test(tools, pg_verify_run_gives_the_receipt_pgverify_writes) {
  vfx f;
  vfx_init(&f);
  char rpath[200], vpat[200];
  snprintf(rpath, sizeof rpath, "%s/tool.json", tmp);
  snprintf(vpat, sizeof vpat, "%.*s", (int)strlen(f.val) - 2, f.val + 1); /* unquoted */
  cr_assert_eq(run("%s %s --val %s --seq-len 64 --stride 16 --threads 2 --receipt %s -q",
                   bin("pgverify"), f.art, f.val, rpath),
               0, "%s", slurp(err_path));
  int started = 0;
  pg_verify_cfg cfg = {.weights = f.art, .val = vpat, .threads = 1, .on_start = count_start,
                       .ctx = &started};
  pg_protocol_defaults(&cfg.protocol, PG_PROTO_SLIDING);
  cfg.protocol.seq_len = 64;
  cfg.protocol.stride = 16;
  pg_err err;
  pg_verify_result v;
  cr_assert_eq(pg_verify_run(&cfg, &v, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(started, 1);
  cr_assert_eq(v.tokens_read, 1025);
  json_t *lib = json_loads(v.receipt_json, 0, NULL), *tool = load_json(rpath);
  cr_assert_not_null(lib);
  /* the thread count is recorded; the figures do not depend on it */
  json_object_set(json_object_get(lib, "engine"), "threads",
                  json_object_get(json_object_get(tool, "engine"), "threads"));
  json_object_set(json_object_get(lib, "engine"), "devices",
                  json_object_get(json_object_get(tool, "engine"), "devices"));
  drop_timings(lib);
  drop_timings(tool);
  char *a = json_dumps(lib, JSON_SORT_KEYS), *b = json_dumps(tool, JSON_SORT_KEYS);
  cr_assert_str_eq(a, b);
  free(a);
  free(b);
  json_decref(lib);
  json_decref(tool);
  pg_verify_result_free(&v);
  /* safetensors weights need a tokenizer: the tool's message, from the library */
  char st[200];
  snprintf(st, sizeof st, "%s/w.safetensors", tmp);
  cr_assert_eq(run("%s %s --safetensors %s", bin("pgunpack"), f.art, st), 0, "%s",
               slurp(err_path));
  cfg.weights = st;
  cr_assert_eq(pg_verify_run(&cfg, &v, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "holds no tokenizer") != NULL, "%s", err.msg);
  pg_verify_result_free(&v);
}

/* pgverify loads an artifact onto its engine quantized and dequantizes it there (spec/engine.md
 * §8.1): its figures are, bit for bit, those of the same weights dequantized on the host (pgunpack
 * --safetensors, the reader's reference), on the CPU engine and on the remote test engine (memory
 * of its own: the quantized bytes go up, the host keeps no copy of the parameters). */
Test(tools, pg_verify_run_dequantizes_on_the_engine_same_figures) {
  vfx f;
  vfx_init(&f);
  const char *tok = spm_seed("byte_fallback.model");
  char art[200], st[200], vpat[200];
  snprintf(art, sizeof art, "%s/q.pgz", tmp);
  snprintf(st, sizeof st, "%s/q.safetensors", tmp);
  snprintf(vpat, sizeof vpat, "%.*s", (int)strlen(f.val) - 2, f.val + 1); /* unquoted */
  /* every matrix quantized (int5, bit-packed; the embeddings int8) */
  cr_assert_eq(run("%s --layers 2 --dim 32 --heads 4 --kv-heads 2 --mlp-mult 2 --vocab %u "
                   "--codec zstd-3 --packed --bits 5 --passthrough-max 64 --tokenizer %s -o %s",
                   bin("pgdemo"), f.vocab, tok, art),
               0, "pgdemo failed: %s", slurp(err_path));
  cr_assert_eq(run("%s %s --safetensors %s", bin("pgunpack"), art, st), 0, "%s",
               slurp(err_path));
  /* bf16 with the fp32 figure: both figures, the second on a copy of the weights */
  pg_verify_cfg cfg = {.weights = st, .tokenizer = tok, .val = vpat, .threads = 1,
                       .precision = PG_PREC_BF16, .fp32_figure = 1};
  pg_protocol_defaults(&cfg.protocol, PG_PROTO_SLIDING);
  cfg.protocol.seq_len = 64;
  cfg.protocol.stride = 16;
  pg_err err;
  pg_verify_result ref, v;
  cr_assert_eq(pg_verify_run(&cfg, &ref, &err), PG_OK, "%s", err.msg);
  cr_assert(isfinite(ref.eval.val_bpb) && ref.eval.scored == 1024 && ref.has_fp32);
  uint64_t np = 0;
  cr_assert_eq(pg_arch_param_count(&ref.arch, &np, &err), PG_OK, "%s", err.msg);
  cfg.weights = art;
  pgremote *r = pgremote_new(1);
  for (int k = 0; k < 2; k++) {
    cfg.engine = k ? &r->outer : NULL;
    cr_assert_eq(pg_verify_run(&cfg, &v, &err), PG_OK, "%s", err.msg);
    const pg_eval_result *x[2] = {&v.eval, &v.eval_fp32}, *y[2] = {&ref.eval, &ref.eval_fp32};
    for (int g = 0; g < 2; g++) {
      cr_assert(!memcmp(&x[g]->sum, &y[g]->sum, sizeof y[g]->sum), "engine %d figure %d: sums "
                "differ", k, g);
      cr_assert(!memcmp(&x[g]->val_loss, &y[g]->val_loss, sizeof(double)) &&
                    !memcmp(&x[g]->val_bpb, &y[g]->val_bpb, sizeof(double)),
                "engine %d figure %d: val_loss %.17g val_bpb %.17g, the host path's %.17g %.17g",
                k, g, x[g]->val_loss, x[g]->val_bpb, y[g]->val_loss, y[g]->val_bpb);
    }
    pg_verify_result_free(&v);
  }
  cr_assert_gt(r->dequants, 0, "the matrices were dequantized on the engine");
  /* the parameters never came down: the fp32 figure's copy was made on the engine */
  cr_assert_lt(r->max_download, np * 4, "a download of %zu bytes (%llu parameters)",
               r->max_download, (unsigned long long)np);
  cr_assert_eq(r->live, 0);
  pgremote_free(r);
  pg_verify_result_free(&ref);
}

static void count_steps(void *ctx, int step, int done, const pg_packjob *j) {
  (void)j;
  if (done) *(unsigned *)ctx |= 1u << step;
}

/* The library's packing job (pg_packjob.h), called in process, writes the bytes pgpack writes and
 * announces exactly the steps it took. */
Test(tools, pg_packjob_run_writes_what_pgpack_writes) {
  vfx f;
  vfx_init(&f);
  char a[200], b[200];
  snprintf(a, sizeof a, "%s/tool.pgz", tmp);
  snprintf(b, sizeof b, "%s/lib.pgz", tmp);
  cr_assert_eq(run("%s --weights %s --calib self --calib-seqs 2 --calib-len 16 --codec zstd-3 "
                   "--threads 2 -q -o %s", bin("pgpack"), f.art, a),
               0, "%s", slurp(err_path));
  unsigned steps = 0;
  pg_packjob_cfg cfg = {.weights = f.art, .out = b, .calib = "self", .calib_seqs = 2,
                        .calib_len = 16, .calib_batch = 4, .temperature = 0.8, .seed = 1337,
                        .recipe = pg_pack_recipe_default(), .fit_cat = -1,
                        .count_tokenizer = 1, .threads = 1, .on_step = count_steps,
                        .ctx = &steps};
  pg_err err;
  cr_assert_eq(pg_codec_spec_parse(&cfg.recipe.codec, "zstd-3", &err), PG_OK);
  cfg.recipe.codec_best = 0;
  pg_packjob job;
  cr_assert_eq(pg_packjob_run(&job, &cfg, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(steps, (1u << PG_PACKJOB_WEIGHTS) | (1u << PG_PACKJOB_CALIB) |
                          (1u << PG_PACKJOB_HESSIANS) | (1u << PG_PACKJOB_QUANTIZE) |
                          (1u << PG_PACKJOB_PACK) | (1u << PG_PACKJOB_WRITE));
  cr_assert(job.have_account && job.account.counted <= job.budget);
  pg_packjob_free(&job);
  uint8_t *x, *y;
  size_t na, nb;
  cr_assert_eq(pg_file_read_all(a, &x, &na, 64u << 20, &err), PG_OK);
  cr_assert_eq(pg_file_read_all(b, &y, &nb, 64u << 20, &err), PG_OK);
  cr_assert(na == nb && !memcmp(x, y, na), "the library's artifact differs from pgpack's");
  free(x);
  free(y);
}

/* --precision bf16 (spec/engine.md §7, spec/eval.md §7): the bf16 figure with the fp32 figure
 * beside it, the latter equal bit for bit to a default (fp32) run even after a TTT protocol has
 * changed the weights of the bf16 run; the receipt records the precision; the bf16 figure is the
 * same for any thread count, and differs a little from fp32. */
Test(tools, pgverify_precision_bf16) {
  vfx f;
  vfx_init(&f);
  const char *args = "--protocol ttt-chunk --seq-len 64 --stride 16 --chunk-tokens 256 --epochs 1 "
                     "--batch-rows 2";
  char r32[200], r16[200], r16b[200], r16n[200];
  snprintf(r32, sizeof r32, "%s/p32.json", tmp);
  snprintf(r16, sizeof r16, "%s/p16.json", tmp);
  snprintf(r16b, sizeof r16b, "%s/p16b.json", tmp);
  snprintf(r16n, sizeof r16n, "%s/p16n.json", tmp);
  cr_assert_eq(run("%s %s --val %s %s --threads 2 --receipt %s", bin("pgverify"), f.art, f.val,
                   args, r32), 0, "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "precision") == NULL && strstr(rep, "fp32 ") == NULL, "%s", rep);
  free(rep);
  cr_assert_eq(run("%s %s --val %s %s --threads 2 --precision bf16 --receipt %s", bin("pgverify"),
                   f.art, f.val, args, r16), 0, "%s", slurp(err_path));
  rep = slurp(out_path);
  cr_assert_str_eq(report_value(rep, "precision"), "bf16");
  cr_assert(strstr(rep, "\nfp32       val_loss ") != NULL, "%s", rep);
  char printed[64];
  strcpy(printed, report_value(rep, "val_bpb"));
  free(rep);
  cr_assert_eq(run("%s %s --val %s %s --threads 3 --precision bf16 --receipt %s", bin("pgverify"),
                   f.art, f.val, args, r16b), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --val %s %s --threads 1 --precision bf16 --no-fp32-figure --receipt %s",
                   bin("pgverify"), f.art, f.val, args, r16n), 0, "%s", slurp(err_path));
  json_t *a = load_json(r32), *b = load_json(r16), *c = load_json(r16b), *d = load_json(r16n);
  check_receipt(b, &f, "ttt-chunk", printed);
  cr_assert_str_eq(json_string_value(jget(a, "engine", "precision")), "fp32");
  cr_assert_str_eq(json_string_value(jget(b, "engine", "precision")), "bf16");
  cr_assert_null(json_object_get(a, "result_fp32"));
  cr_assert_null(json_object_get(d, "result_fp32"));
  double f32 = json_real_value(jget(a, "result", "val_bpb"));
  double beside = json_real_value(jget(b, "result_fp32", "val_bpb"));
  double l32 = json_real_value(jget(a, "result", "loss_sum_nats"));
  double lbeside = json_real_value(jget(b, "result_fp32", "loss_sum_nats"));
  cr_assert(!memcmp(&f32, &beside, sizeof f32) && !memcmp(&l32, &lbeside, sizeof l32),
            "the fp32 figure beside bf16 %.17g is not the fp32 run's %.17g", beside, f32);
  double b16 = json_real_value(jget(b, "result", "val_bpb"));
  double c16 = json_real_value(jget(c, "result", "val_bpb"));
  double d16 = json_real_value(jget(d, "result", "val_bpb"));
  cr_assert(!memcmp(&b16, &c16, sizeof b16) && !memcmp(&b16, &d16, sizeof b16),
            "bf16 figures differ across thread counts: %.17g %.17g %.17g", b16, c16, d16);
  cr_assert(b16 != f32 && fabs(b16 - f32) < 0.01 * f32, "bf16 %.17g vs fp32 %.17g", b16, f32);
  double diff = json_real_value(jget(b, "result_fp32", "bf16_minus_fp32_bpb"));
  cr_assert(!memcmp(&diff, &(double){b16 - f32}, sizeof diff));
  json_decref(a), json_decref(b), json_decref(c), json_decref(d);
  /* usage errors */
  cr_assert_eq(run("%s %s --val %s --precision fp16 --no-receipt", bin("pgverify"), f.art, f.val),
               2);
  cr_assert_eq(run("%s %s --val %s --no-fp32-figure --no-receipt", bin("pgverify"), f.art, f.val),
               2);
  char *e = slurp(err_path);
  cr_assert(strstr(e, "cpu engine's default precision is fp32") != NULL, "%s", e);
  free(e);
  cr_assert_eq(run("%s %s --val %s --precision fp32 --no-fp32-figure --no-receipt",
                   bin("pgverify"), f.art, f.val), 2);
  /* without --precision the engine decides: fp32 on the CPU (auto without a GPU picks it), bf16
   * on a GPU engine */
  cr_assert_eq(run("%s %s --val %s %s --engine auto --threads 2 --receipt %s", bin("pgverify"),
                   f.art, f.val, args, r16n), 0, "%s", slurp(err_path));
  json_t *g = load_json(r16n);
  const char *en = json_string_value(jget(g, "engine", "name"));
  cr_assert_str_eq(json_string_value(jget(g, "engine", "precision")),
                   strcmp(en, "cpu") ? "bf16" : "fp32");
  json_decref(g);
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

/* The early records' sliding variant that scores only each window's last S (spec/eval.md §3.2):
 * T = 1024, L 64, S 24: windows at 0, 24, ..., 960 score [40, 1024); the first 40 targets are
 * never scored, which the report, the receipt and its protocol say. A variant with a protocol it
 * does not apply to, an unknown one, and the packed plain variant on an arch without the
 * document mask are usage errors. */
Test(tools, pgverify_sliding_variant_flagged_and_refused) {
  vfx f;
  vfx_init(&f);
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 24 "
                   "--sliding-variant last-s", bin("pgverify"), f.art, f.val),
               0, "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "variant last-s: does not score every target") != NULL, "%s", rep);
  cr_assert(strstr(rep, "984 of T = 1,024: does not score every target (40 never scored)"),
            "%s", rep);
  free(rep);
  json_t *r = load_json(f.receipt);
  cr_assert_str_eq(json_string_value(jget(r, "protocol", "sliding_variant")), "last-s");
  cr_assert_eq(json_integer_value(jget(r, "result", "targets")), 1024);
  cr_assert_eq(json_integer_value(jget(r, "result", "scored")), 984);
  cr_assert_eq(json_integer_value(jget(r, "result", "unscored")), 40);
  cr_assert(json_is_false(jget(r, "result", "every_target_scored")));
  cr_assert(json_is_false(jget(r, "result", "every_target_scored_once")));
  json_decref(r);
  /* the default names its variant too, and scores every target */
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 16", bin("pgverify"),
                   f.art, f.val),
               0, "%s", slurp(err_path));
  r = load_json(f.receipt);
  cr_assert_str_eq(json_string_value(jget(r, "protocol", "sliding_variant")), "standard");
  cr_assert_eq(json_integer_value(jget(r, "result", "unscored")), 0);
  cr_assert(json_is_true(jget(r, "result", "every_target_scored")));
  json_decref(r);
  static const char *const bad[] = {
      "--protocol ttt-chunk --sliding-variant gap", "--protocol sliding --sliding-variant half",
      "--protocol sliding --sliding-variant last-s --tail-dup",
      "--protocol sliding --plain-variant packed",
      "--protocol plain --seq-len 64 --plain-variant packed --pack-windows 2"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cr_assert_eq(run("%s %s --val %s %s --no-receipt", bin("pgverify"), f.art, f.val, bad[i]), 2,
                 "%s", bad[i]);
    char *e = slurp(err_path);
    cr_assert_eq(count_lines(e), 1, "%s: %s", bad[i], e);
    if (i == 4) cr_assert(strstr(e, "doc_mask") != NULL, "%s", e);
    free(e);
  }
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
static void expect_error_rc(int want, const vfx *f, const char *n1, const char *n2,
                            const char *fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = run("%s", cmd);
  char *er = slurp(err_path);
  cr_assert_eq(rc, want, "exit %d for %s: %s", rc, cmd, er);
  cr_assert_eq(count_lines(er), 1, "not one line: %s", er);
  cr_assert(strncmp(er, "pgverify: ", 10) == 0, "%s", er);
  if (n1) cr_assert(strstr(er, n1) != NULL, "'%s' not in: %s", n1, er);
  if (n2) cr_assert(strstr(er, n2) != NULL, "'%s' not in: %s", n2, er);
  free(er);
  struct stat st;
  cr_assert(stat(f->receipt, &st) != 0, "a failed run left a receipt (%s)", cmd);
}
#define expect_error(...) expect_error_rc(2, __VA_ARGS__)

/* --engine auto runs where it can (here the CPU: this version has no CUDA engine) and says why;
 * the figures are those of --engine cpu. */
Test(tools, pgverify_engine_auto_says_what_it_chose) {
  vfx f;
  vfx_init(&f);
  const char *pv = bin("pgverify");
  char r1[300], r2[300];
  snprintf(r1, sizeof r1, "%s/auto.json", tmp);
  snprintf(r2, sizeof r2, "%s/cpu.json", tmp);
  int rc = run("%s %s --val %s --seq-len 64 --engine auto --receipt %s", pv, f.art, f.val, r1);
  char *er = slurp(err_path);
  cr_assert_eq(rc, 0, "%s", er);
  cr_assert(strstr(er, "pgverify: engine cpu (auto: "), "%s", er);
  free(er);
  cr_assert_eq(run("%s %s --val %s --seq-len 64 --engine cpu --receipt %s", pv, f.art, f.val, r2),
               0);
  json_t *a = json_load_file(r1, 0, NULL), *b = json_load_file(r2, 0, NULL);
  cr_assert(a && b);
  cr_assert_str_eq(json_string_value(jget(a, "engine", "name")), "cpu");
  cr_assert(json_equal(jget(a, "result", "val_bpb"), jget(b, "result", "val_bpb")));
  json_decref(a);
  json_decref(b);
}

/* --gpus N (spec/cli.md, spec/eval.md §8.1): every protocol shared among N engines (here CPU
 * engines) gives the one-engine figures bit for bit, the same chunks (with their update steps),
 * forwards, documents and masked targets, and a receipt naming every device; GPUs this build or
 * machine does not have are refused (exit 3). */
Test(tools, pgverify_gpus_same_bits_every_device_named) {
  vfx f;
  vfx_init(&f);
  const char *pv = bin("pgverify");
  const char *protos[] = {"--protocol sliding --seq-len 64 --stride 16 --report-tokens 128",
                          "--protocol plain --seq-len 64 --report-tokens 128 --batch 3",
                          "--protocol ttt-chunk --seq-len 64 --stride 16 --chunk-tokens 256 "
                          "--batch 3 --batch-rows 2 --epochs 1",
                          "--protocol ttt-lora --lora-window 64 --lora-chunk 16 --lora-rank 2 "
                          "--lora-batch-docs 5 --lora-lr 0.01",
                          "--protocol ttt-phased --lora-window 64 --lora-chunk 16 --lora-rank 2 "
                          "--lora-batch-docs 5 --lora-lr 0.01 --seq-len 32 --chunk-tokens 128 "
                          "--batch-rows 2 --prefix-docs 12 --phases 2"};
  for (int k = 0; k < 5; k++) {
    char r1[300], rn[300];
    snprintf(r1, sizeof r1, "%s/g1.json", tmp);
    snprintf(rn, sizeof rn, "%s/g3.json", tmp);
    cr_assert_eq(run("%s %s --val %s %s --threads 1 --receipt %s", pv, f.art, f.val, protos[k],
                     r1), 0, "%s", slurp(err_path));
    cr_assert_eq(run("%s %s --val %s %s --gpus 3 --threads 1 --receipt %s", pv, f.art, f.val,
                     protos[k], rn), 0, "%s", slurp(err_path));
    char *rep = slurp(out_path);
    cr_assert(strstr(rep, "cpu: 1 thread; cpu: 1 thread; cpu: 1 thread"), "%s", rep);
    free(rep);
    json_t *a = load_json(r1), *b = load_json(rn);
    const char *keys[] = {"val_loss", "val_bpb", "loss_sum_nats", "token_count", "byte_count",
                          "scored", "windows", "documents", "forwards", "chunks",
                          "train_steps", "masked_targets"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
      cr_assert(json_equal(jget(a, "result", keys[i]), jget(b, "result", keys[i])),
                "%s: result.%s differs with --gpus 3", protos[k], keys[i]);
    if (k >= 2) cr_assert_gt(json_integer_value(jget(a, "result", "train_steps")), 0);
    if (k == 4) cr_assert_gt(json_integer_value(jget(a, "result", "masked_targets")), 0);
    cr_assert_str_eq(json_string_value(jget(a, "engine", "devices")), "cpu: 1 thread");
    cr_assert_str_eq(json_string_value(jget(b, "engine", "devices")),
                     "cpu: 1 thread; cpu: 1 thread; cpu: 1 thread");
    json_decref(a);
    json_decref(b);
  }
  /* --json with several engines: the receipt on stdout */
  cr_assert_eq(run("%s %s --val %s %s --gpus 2 --threads 1 --json --no-receipt", pv, f.art, f.val,
                   protos[0]), 0, "%s", slurp(err_path));
  json_t *j = json_load_file(out_path, 0, NULL);
  cr_assert_not_null(j);
  cr_assert_str_eq(json_string_value(jget(j, "engine", "devices")),
                   "cpu: 1 thread; cpu: 1 thread");
  json_decref(j);
  expect_error(&f, "bad --gpus '0'", NULL, "%s %s --val %s --gpus 0", pv, f.art, f.val);
  /* more GPUs than any machine has: exit 3 whatever this build and machine are */
  expect_error_rc(3, &f, "--engine cuda", NULL, "%s %s --val %s --engine cuda --gpus 64", pv,
                  f.art, f.val);
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
  /* an engine this build or machine cannot make: one line, exit 3 (spec/cli.md); a bad name: 2 */
  expect_error_rc(3, &f, "--engine cuda", NULL, "%s %s --val %s --engine cuda", pv, f.art, f.val);
  expect_error(&f, "--engine", "gpu", "%s %s --val %s --engine gpu", pv, f.art, f.val);
  /* --receipt naming the artifact (by the same or another path) is refused; the artifact stays */
  uint8_t *before, *after;
  size_t nb, na;
  pg_err e;
  cr_assert_eq(pg_file_read_all(f.art, &before, &nb, 64u << 20, &e), PG_OK);
  expect_error(&f, "is the input", NULL, "%s %s --val %s --seq-len 64 --receipt %s", pv,
               f.art, f.val, f.art);
  snprintf(other, sizeof other, "%s/./v.pgz", tmp);
  expect_error(&f, "is the input", NULL, "%s %s --val %s --seq-len 64 --json --receipt %s",
               pv, f.art, f.val, other);
  cr_assert_eq(pg_file_read_all(f.art, &after, &na, 64u << 20, &e), PG_OK);
  cr_assert(na == nb && !memcmp(before, after, nb), "the artifact changed");
  free(before);
  free(after);
  char *out = slurp(out_path);
  cr_assert_str_eq(out, "", "nothing on stdout after a refusal");
  free(out);
}

/* ---- fidelity: what the weights cannot show, and the record's protocol ----------------------- */

/* Copy the safetensors file src to dst with the metadata pairs keys/values added (or replaced). */
static void st_with_meta(const char *src, const char *dst, const char *const *kv) {
  pg_st *st;
  pg_st_writer *w;
  pg_err e;
  cr_assert_eq(pg_st_open_file(&st, src, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  for (size_t i = 0; i < pg_st_count(st); i++) {
    const pg_st_tensor *t = pg_st_at(st, i);
    cr_assert_eq(pg_st_writer_add(w, t->name, t->dtype, t->rank, t->shape, t->data, t->nbytes, &e),
                 PG_OK, "%s", e.msg);
  }
  for (size_t i = 0; i < pg_st_meta_count(st); i++) {
    const pg_st_meta *m = pg_st_meta_at(st, i);
    int replaced = 0;
    for (int k = 0; kv[k]; k += 2) replaced |= !strcmp(kv[k], m->key);
    if (!replaced) cr_assert_eq(pg_st_writer_set_meta(w, m->key, m->value, &e), PG_OK);
  }
  for (int k = 0; kv[k]; k += 2)
    cr_assert_eq(pg_st_writer_set_meta(w, kv[k], kv[k + 1], &e), PG_OK);
  cr_assert_eq(pg_st_writer_write(w, dst, &e), PG_OK, "%s", e.msg);
  pg_st_writer_free(w);
  pg_st_free(st);
}

/* The demo artifact's arch with changes applied by edit(), written canonically to path. */
static void write_arch_variant(const char *st_path, const char *path, void (*edit)(pg_arch *)) {
  pg_st *st;
  pg_err e;
  cr_assert_eq(pg_st_open_file(&st, st_path, &e), PG_OK, "%s", e.msg);
  const char *text = pg_st_meta_get(st, "arch.json");
  cr_assert_not_null(text);
  pg_arch a;
  cr_assert_eq(pg_arch_parse(&a, text, strlen(text), "arch.json", &e), PG_OK, "%s", e.msg);
  pg_st_free(st);
  edit(&a);
  char *s;
  cr_assert_eq(pg_arch_serialize(&a, &s, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_file_write_atomic(path, s, strlen(s), &e), PG_OK, "%s", e.msg);
  free(s);
}

static void softcap_20(pg_arch *a) { a->head.softcap = 20.0; }
static void follows_rec_a(pg_arch *a) {
  a->follows.set = 1;
  snprintf(a->follows.record, sizeof a->follows.record, "2026-01-01_RecA_1.5");
  snprintf(a->follows.protocol, sizeof a->follows.protocol,
           "--protocol sliding --seq-len 64 --stride 16 --tail-dup");
}

/* A wrong arch is not accepted in silence: an --arch beside the weights' own arch.json must
 * describe the same model (the softcap, which no tensor shows, included), for an artifact and
 * for its safetensors export. */
Test(tools, pgverify_refuses_an_arch_that_contradicts_the_weights) {
  vfx f;
  vfx_init(&f);
  char st[200], soft[200];
  snprintf(st, sizeof st, "%s/v.safetensors", tmp);
  snprintf(soft, sizeof soft, "%s/soft.json", tmp);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  write_arch_variant(st, soft, softcap_20);
  const char *tok = spm_seed("byte_fallback.model");
  for (int k = 0; k < 2; k++) {
    cr_assert_eq(run(k ? "%s %s --tokenizer %s --arch %s --val %s --seq-len 64 --no-receipt"
                       : "%s %s --arch %s --val %s --seq-len 64 --no-receipt",
                     bin("pgverify"), k ? st : f.art, k ? tok : soft, k ? soft : f.val,
                     k ? f.val : ""),
                 2);
    char *e = slurp(err_path);
    cr_assert(strstr(e, "contradicts") && strstr(e, "head.softcap 20.0/30.0"), "%s", e);
    cr_assert_eq(count_lines(e), 1, "%s", e);
    free(e);
  }
  /* the same arch, given explicitly, is accepted for both */
  char same[200];
  snprintf(same, sizeof same, "%s/same.json", tmp);
  write_arch_variant(st, same, follows_rec_a);
  cr_assert_eq(run("%s %s --arch %s --val %s --seq-len 64 --stride 16 --tail-dup --no-receipt",
                   bin("pgverify"), f.art, same, f.val), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s %s --tokenizer %s --arch %s --val %s --seq-len 64 --stride 16 --tail-dup "
                   "--no-receipt", bin("pgverify"), st, tok, same, f.val),
               0, "%s", slurp(err_path));
}

/* pgverify states the settings it used that the weights cannot show, and says when the protocol
 * differs from the one that gave the record its figure (the arch's follows.protocol, or the
 * weights' own provenance.protocol), or when the weights come from another record. */
Test(tools, pgverify_states_provenance_and_protocol_differences) {
  vfx f;
  vfx_init(&f);
  char st[200], st2[200], fol[200], r[220];
  snprintf(st, sizeof st, "%s/v.safetensors", tmp);
  snprintf(st2, sizeof st2, "%s/v2.safetensors", tmp);
  snprintf(fol, sizeof fol, "%s/fol.json", tmp);
  snprintf(r, sizeof r, "%s/r.json", tmp);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  write_arch_variant(st, fol, follows_rec_a);
  /* without --tail-dup: the record evaluated with the tail variant */
  cr_assert_eq(run("%s %s --arch %s --val %s --seq-len 64 --stride 16 --receipt %s",
                   bin("pgverify"), f.art, fol, f.val, r), 0, "%s", slurp(err_path));
  char *e = slurp(err_path), *o = slurp(out_path);
  cr_assert(strstr(e, "pgverify: warning: the protocol differs from the one that gave "
                      "2026-01-01_RecA_1.5 its figure"), "%s", e);
  cr_assert(strstr(e, "tail_dup false (the record's: true)"), "%s", e);
  cr_assert(strstr(o, "unchecked  ") && strstr(o, "head.softcap=30.0"), "%s", o);
  cr_assert(strstr(o, "arch       follows 2026-01-01_RecA_1.5"), "%s", o);
  cr_assert(strstr(o, "the protocol is NOT the record's"), "%s", o);
  free(e);
  free(o);
  json_t *j = load_json(r);
  json_t *p = jget(j, "provenance", NULL);
  cr_assert(json_is_false(json_object_get(p, "protocol_matches_record")));
  cr_assert_eq(json_array_size(json_object_get(p, "warnings")), 1);
  cr_assert_eq(json_real_value(json_object_get(json_object_get(p, "not_fixed_by_weights"),
                                               "head.softcap")), 30.0);
  cr_assert_str_eq(json_string_value(jget(j, "arch", "follows") ? json_object_get(
                       jget(j, "arch", "follows"), "record") : NULL), "2026-01-01_RecA_1.5");
  json_decref(j);
  /* with it: no warning */
  cr_assert_eq(run("%s %s --arch %s --val %s --seq-len 64 --stride 16 --tail-dup --receipt %s",
                   bin("pgverify"), f.art, fol, f.val, r), 0, "%s", slurp(err_path));
  e = slurp(err_path);
  cr_assert_null(strstr(e, "warning"), "%s", e);
  free(e);
  j = load_json(r);
  cr_assert(json_is_true(jget(j, "provenance", "protocol_matches_record")));
  json_decref(j);
  /* weights that record another record (and its protocol, which takes precedence) */
  const char *kv[] = {"provenance.record", "2026-02-02_RecB_1.4", "provenance.protocol",
                      "--protocol sliding --seq-len 64 --stride 16", NULL};
  st_with_meta(st, st2, kv);
  cr_assert_eq(run("%s %s --tokenizer %s --arch %s --val %s --seq-len 64 --stride 16 --receipt %s",
                   bin("pgverify"), st2, spm_seed("byte_fallback.model"), fol, f.val, r),
               0, "%s", slurp(err_path));
  e = slurp(err_path);
  cr_assert(strstr(e, "the weights come from record \"2026-02-02_RecB_1.4\"") &&
                strstr(e, "the arch follows \"2026-01-01_RecA_1.5\"") &&
                strstr(e, "head.softcap=30.0"), "%s", e);
  cr_assert_null(strstr(e, "protocol differs"), "%s", e);
  cr_assert_eq(count_lines(e), 1, "%s", e);
  free(e);
  j = load_json(r);
  cr_assert_str_eq(json_string_value(jget(j, "provenance", "weights_record")),
                   "2026-02-02_RecB_1.4");
  cr_assert(json_is_true(jget(j, "provenance", "protocol_matches_record")));
  json_decref(j);
}

/* The protocol every example records (spec/examples/, follows.protocol) reads as pgverify options:
 * scoring with another protocol gives the "differs" warning, never "cannot read". */
static char example_protocol[512];
static void follows_example(pg_arch *a) {
  a->follows.set = 1;
  snprintf(a->follows.record, sizeof a->follows.record, "example");
  snprintf(a->follows.protocol, sizeof a->follows.protocol, "%s", example_protocol);
}

Test(tools, pgverify_reads_every_example_protocol) {
  vfx f;
  vfx_init(&f);
  char st[200], v[200];
  snprintf(st, sizeof st, "%s/v.safetensors", tmp);
  snprintf(v, sizeof v, "%s/ex.json", tmp);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  const char *names[] = {"baseline", "pr1676", "r12", "r12b", "pr473", "sys11036", "pr456"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char path[600];
    snprintf(path, sizeof path, "%s/spec/examples/%s.json", getenv("PG_SOURCE_ROOT"), names[i]);
    pg_arch ex;
    pg_err e;
    cr_assert_eq(pg_arch_load(&ex, path, &e), PG_OK, "%s", e.msg);
    cr_assert(ex.follows.protocol[0], "%s has no follows.protocol", names[i]);
    snprintf(example_protocol, sizeof example_protocol, "%s", ex.follows.protocol);
    write_arch_variant(st, v, follows_example);
    cr_assert_eq(run("%s %s --arch %s --val %s --protocol plain --seq-len 32 --no-receipt",
                     bin("pgverify"), f.art, v, f.val), 0, "%s", slurp(err_path));
    char *er = slurp(err_path);
    cr_assert(strstr(er, "protocol differs") && !strstr(er, "cannot read"), "%s: %s", names[i],
              er);
    free(er);
  }
  /* and one that is not a protocol: said, not ignored */
  const char *bad[] = {"--protocol sliding --val x", "--stride", "--protocol nope", "--lr -1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(example_protocol, sizeof example_protocol, "%s", bad[i]);
    write_arch_variant(st, v, follows_example);
    cr_assert_eq(run("%s %s --arch %s --val %s --protocol plain --seq-len 32 --no-receipt",
                     bin("pgverify"), f.art, v, f.val), 0, "%s", slurp(err_path));
    char *er = slurp(err_path);
    cr_assert(strstr(er, "cannot read the protocol recorded for example"), "%s: %s", bad[i], er);
    free(er);
  }
}

/* pgunpack --check: an arch.json that does not describe the tensors is an invalid artifact. */
Test(tools, pgunpack_check_refuses_an_arch_that_does_not_fit) {
  char path[160];
  snprintf(path, sizeof path, "%s/x.pgz", tmp);
  pg_writer *w;
  pg_err e;
  const pg_codec_spec none = {0, 0, 0, 0, 0};
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  pg_writer_set_meta_codec(w, &none, &none);
  const char *arch =
      "{\"vocab_size\": 32, \"dim\": 16, \"layers\": 2, \"heads\": 2, \"kv_heads\": 1}";
  cr_assert_eq(pg_writer_meta_str(w, "arch.json", arch, strlen(arch), &e), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "pgolf.writer", "test", 4, &e), PG_OK);
  const int d = pg_writer_data_section(w, &none, &e);
  uint64_t one = 1;
  float v = 1.0f;
  pg_tensor_in in = {.name = "x", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &v,
                     .sec_values = d};
  cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  cr_assert_eq(run("%s --check %s", bin("pgunpack"), path), 1, "%s", slurp(err_path));
  char *er = slurp(err_path);
  cr_assert(strstr(er, "tok_emb.weight: missing"), "%s", er);
  free(er);
  vfx f;
  vfx_init(&f);
  cr_assert_eq(run("%s --check %s", bin("pgunpack"), f.art), 0, "%s", slurp(err_path));
  char *o = slurp(out_path);
  cr_assert(strstr(o, "the tensors are exactly arch.json's"), "%s", o);
  free(o);
}

/* ---- pgpack end to end ----------------------------------------------------------------------- */

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

/* Where two artifacts differ, for a failure message: the section count, or the first section
 * whose kind, codec, raw bytes or stored bytes differ (a static text; "" when none does). */
static const char *artifact_diff(const char *pa, const char *pb) {
  static char msg[200];
  pg_artifact *a = NULL, *b = NULL;
  pg_err e;
  msg[0] = '\0';
  cr_assert_eq(pg_artifact_open(&a, pa, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_open(&b, pb, NULL, &e), PG_OK, "%s", e.msg);
  uint32_t n = pg_artifact_section_count(a);
  if (n != pg_artifact_section_count(b))
    snprintf(msg, sizeof msg, "%u sections against %u", n, pg_artifact_section_count(b));
  for (uint32_t i = 0; !msg[0] && i < n; i++) {
    const pg_section *x = pg_artifact_section(a, i), *y = pg_artifact_section(b, i);
    const uint8_t *rx, *ry;
    cr_assert_eq(pg_artifact_section_raw(a, i, &rx, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_section_raw(b, i, &ry, &e), PG_OK, "%s", e.msg);
    const char *what = x->kind != y->kind ? "kind"
                       : memcmp(&x->codec, &y->codec, sizeof x->codec) ? "codec"
                       : x->raw_size != y->raw_size || memcmp(rx, ry, (size_t)x->raw_size)
                           ? "raw bytes"
                       : x->stored_size != y->stored_size ? "stored size" : NULL;
    if (what) snprintf(msg, sizeof msg, "section %u (kind %u): its %s differ", i, x->kind, what);
  }
  pg_artifact_free(a);
  pg_artifact_free(b);
  return msg;
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
  /* the code file is a copy: a checkout changing under the test (a merge while the suite runs)
   * must not change the input between the two packs below */
  char code[200], common[1400];
  snprintf(code, sizeof code, "%s/pgpack.c", tmp);
  cr_assert_eq(run("cp %s/tools/pgpack.c %s", getenv("PG_SOURCE_ROOT"), code), 0);
  snprintf(common, sizeof common,
           "--arch %s --tokenizer %s --code %s --calib %s --calib-seqs 4 "
           "--calib-len 64 --val %s --passthrough-max 256 --lqer-top-k 2",
           arch, tok, code, train, f.val);
  cr_assert_eq(run("%s --weights %s %s --threads 2 -o %s", bin("pgpack"), st, common, p1), 0,
               "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "hessians") && strstr(rep, "within budget"), "%s", rep);
  cr_assert(strstr(rep, "gptq"), "%s", rep);
  free(rep);
  /* the same inputs give the same bytes, whatever the thread count */
  cr_assert_eq(run("%s --weights %s %s --threads 1 -q -o %s", bin("pgpack"), st, common, p2), 0,
               "%s", slurp(err_path));
  cr_assert_eq(xxh64_file(p1), xxh64_file(p2), "--threads 2 and 1: %s", artifact_diff(p1, p2));
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

/* ---- pgtrain end to end ---------------------------------------------------------------------- */

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

/* pgtrain --ranks N (spec/train.md §8): data parallel over CPU engines in threads. The first
 * step's loss is the one-rank run's; the run is its own bits again, and in two parts (rank 0's
 * checkpoint, resumed); the log and the summary record the ranks and the backend; refusals in
 * one line. */
static void expect_refusal(const char *tool, int rc);
static void err_has(const char *what) {
  char *e = slurp(err_path);
  cr_assert(strstr(e, what) && count_lines(e) == 1, "%s", e);
  free(e);
}

Test(tools, pgtrain_ranks_data_parallel) {
  vfx f;
  vfx_init(&f);
  char train[220], cfgp[200], c1[200], c2[200], c3[200], l1[200], l2[200], l3[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(cfgp, sizeof cfgp, "%s/dp.json", tmp);
  snprintf(c1, sizeof c1, "%s/dp1.safetensors", tmp);
  snprintf(c2, sizeof c2, "%s/dp2.safetensors", tmp);
  snprintf(c3, sizeof c3, "%s/dp3.safetensors", tmp);
  snprintf(l1, sizeof l1, "%s/dp1.jsonl", tmp);
  snprintf(l2, sizeof l2, "%s/dp2.jsonl", tmp);
  snprintf(l3, sizeof l3, "%s/dp3.jsonl", tmp);
  char tpat[220];
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  FILE *cf = fopen(cfgp, "w");
  cr_assert_not_null(cf);
  fprintf(cf,
          "{\"arch\": {\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 2, "
          "\"kv_heads\": 1, \"mlp\": {\"hidden\": 64}},\n"
          " \"data\": {\"train\": \"%s\", \"loader\": \"shuffled\", \"seq_len\": 32, "
          "\"batch\": 4},\n"
          " \"schedule\": {\"steps\": 5, \"warmdown_frac\": 0.5},\n"
          " \"averaging\": {\"ema\": 0.9}, \"log\": {\"every\": 1}}\n",
          f.vocab, tpat);
  fclose(cf);
  const char *pt = bin("pgtrain");
  cr_assert_eq(run("%s --config %s --threads 1 -q --log %s -o %s", pt, cfgp, l1, c1), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s --config %s --ranks 2 --threads 1 --log %s -o %s", pt, cfgp, l2, c2), 0,
               "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "2 ranks (threads)") && strstr(rep, "done"), "%s", rep);
  free(rep);
  double a[8], b[8], d[8];
  cr_assert_eq(step_losses(l1, a, 8), 5u);
  cr_assert_eq(step_losses(l2, b, 8), 5u);
  cr_assert_eq(a[0], b[0], "step 1: the one-rank loss");
  for (int i = 1; i < 5; i++) cr_assert(fabs(a[i] - b[i]) < 1e-6, "step %d", i + 1);
  char *lg = slurp(l2);
  cr_assert(strstr(lg, "\"ranks\":2") && strstr(lg, "\"comm\":\"threads\""), "%s", lg);
  free(lg);
  /* the same run in two parts, and again: the same checkpoint bytes */
  cr_assert_eq(run("%s --config %s --ranks 2 --threads 1 --stop-after 2 -q --log %s -o %s", pt,
                   cfgp, l3, c3), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s --config %s --ranks 2 --threads 1 --resume %s --json --log %s -o %s", pt,
                   cfgp, c3, l3, c3), 0, "%s", slurp(err_path));
  json_t *j = load_json(out_path);
  cr_assert_eq(json_integer_value(json_object_get(j, "ranks")), 2);
  cr_assert_str_eq(json_string_value(json_object_get(j, "comm")), "threads");
  json_decref(j);
  cr_assert_eq(step_losses(l3, d, 8), 5u);
  cr_assert_eq(memcmp(b, d, 5 * sizeof *b), 0, "the losses of the run in two parts");
  cr_assert_eq(xxh64_file(c2), xxh64_file(c3), "the same final checkpoint");
  /* refusals: a batch that does not split, --rank without its rendezvous, CPU ranks across
   * processes, NCCL for engines this build or machine may not have (exit 3) */
  expect_refusal("pgtrain: ", run("%s --config %s --ranks 3 -q -o %s", pt, cfgp, c1));
  err_has("does not split");
  expect_refusal("pgtrain: ", run("%s --config %s --ranks 2 --rank 1 -q -o %s", pt, cfgp, c1));
  cr_assert_eq(run("%s --config %s --ranks 2 --rank 1 --rendezvous %s/rdv -q -o %s", pt, cfgp,
                   tmp, c1), 3);
  err_has("--engine cuda");
  cr_assert_eq(run("%s --config %s --engine cuda --ranks 2 -q -o %s", pt, cfgp, c1), 3);
}

/* pgtrain --precision (spec/train.md §10): fp32 is the CPU's default (the same checkpoint bytes
 * as without the option); bf16 trains with the records' bf16 forward, so its losses are not the
 * fp32 ones but near them, a rerun gives its bits again, and the report and --json say which;
 * another name is a usage error in one line. */
static void expect_usage(const char *needle, const char *fmt, ...);
Test(tools, pgtrain_precision_bf16_and_fp32) {
  vfx f;
  vfx_init(&f);
  char train[220], cfgp[200], c0[200], c1[200], c2[200], c3[200], l0[200], l2[200], l3[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(cfgp, sizeof cfgp, "%s/pr.json", tmp);
  snprintf(c0, sizeof c0, "%s/pr0.safetensors", tmp);
  snprintf(c1, sizeof c1, "%s/pr1.safetensors", tmp);
  snprintf(c2, sizeof c2, "%s/pr2.safetensors", tmp);
  snprintf(c3, sizeof c3, "%s/pr3.safetensors", tmp);
  snprintf(l0, sizeof l0, "%s/pr0.jsonl", tmp);
  snprintf(l2, sizeof l2, "%s/pr2.jsonl", tmp);
  snprintf(l3, sizeof l3, "%s/pr3.jsonl", tmp);
  char tpat[220];
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  FILE *cf = fopen(cfgp, "w");
  cr_assert_not_null(cf);
  fprintf(cf,
          "{\"arch\": {\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 2, "
          "\"kv_heads\": 1, \"mlp\": {\"hidden\": 64}},\n"
          " \"data\": {\"train\": \"%s\", \"loader\": \"shuffled\", \"seq_len\": 32, "
          "\"batch\": 2},\n"
          " \"schedule\": {\"steps\": 4, \"warmdown_frac\": 0.5}, \"log\": {\"every\": 1}}\n",
          f.vocab, tpat);
  fclose(cf);
  const char *pt = bin("pgtrain");
  cr_assert_eq(run("%s --config %s --threads 1 -q --log %s -o %s", pt, cfgp, l0, c0), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s --config %s --threads 1 --precision fp32 -q -o %s", pt, cfgp, c1), 0,
               "%s", slurp(err_path));
  cr_assert_eq(xxh64_file(c0), xxh64_file(c1), "fp32 is the CPU's default");
  cr_assert_eq(run("%s --config %s --threads 1 --precision bf16 --log %s -o %s", pt, cfgp, l2,
                   c2), 0, "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "precision bf16") && strstr(rep, "done"), "%s", rep);
  free(rep);
  cr_assert_eq(run("%s --config %s --threads 2 --precision bf16 --json --log %s -o %s", pt, cfgp,
                   l3, c3), 0, "%s", slurp(err_path));
  json_t *j = load_json(out_path);
  cr_assert_str_eq(json_string_value(json_object_get(j, "precision")), "bf16");
  json_decref(j);
  double a[8], b[8], d[8];
  cr_assert_eq(step_losses(l0, a, 8), 4u);
  cr_assert_eq(step_losses(l2, b, 8), 4u);
  cr_assert_eq(step_losses(l3, d, 8), 4u);
  cr_assert_neq(a[0], b[0], "bf16's first loss is not fp32's");
  for (int i = 0; i < 4; i++)
    cr_assert(fabs(a[i] - b[i]) < 0.05, "step %d: fp32 %.9g, bf16 %.9g", i + 1, a[i], b[i]);
  cr_assert_eq(memcmp(b, d, sizeof b[0] * 4), 0, "a bf16 rerun (other threads): the same losses");
  cr_assert_eq(xxh64_file(c2), xxh64_file(c3), "a bf16 rerun: the same checkpoint");
  expect_usage("--precision", "%s --config %s --precision fp16 -q -o %s", pt, cfgp, c1);
}

/* ---- output a reviewer can trust (issue 11) ------------------------------------------------ */

/* The bytes a terminal acts on or that are not UTF-8: none may reach the terminal raw. */
static void assert_terminal_safe(const char *s, const char *what) {
  cr_assert_null(strchr(s, '\x1b'), "%s: raw ESC: %s", what, s);
  cr_assert_null(strchr(s, '\r'), "%s: raw CR: %s", what, s);
  cr_assert_null(strchr(s, '\a'), "%s: raw BEL: %s", what, s);
  cr_assert_null(strstr(s, "\xc2\x9b"), "%s: raw C1 CSI: %s", what, s);
  cr_assert_null(strstr(s, "\xe2\x80\xae"), "%s: raw RLO: %s", what, s);
  cr_assert(pg_utf8_valid((const uint8_t *)s, strlen(s), NULL), "%s: not UTF-8: %s", what, s);
}

/* An artifact whose names and metadata carry controls, bidi overrides and non-finite numbers;
 * its file name (not UTF-8) is made by the caller. */
static void write_hostile_artifact(const char *path) {
  pg_writer *w;
  pg_err e;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  const pg_codec_spec none = {0, 0, 0, 0, 0};
  pg_writer_set_meta_codec(w, &none, &none);
  cr_assert_eq(pg_writer_meta_f64(w, "x.nan", NAN, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_meta_f64(w, "x.inf", INFINITY, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_meta_f64(w, "x.ninf", -INFINITY, &e), PG_OK, "%s", e.msg);
  const double arr[3] = {1.5, NAN, -INFINITY};
  cr_assert_eq(pg_writer_meta_arr_f64(w, "x.arr", arr, 3, &e), PG_OK, "%s", e.msg);
  const char *note = "ok\n\x1b[2Jverdict    within budget\r\x07";
  cr_assert_eq(pg_writer_meta_str(w, "x.note", note, strlen(note), &e), PG_OK, "%s", e.msg);
  const int sec = pg_writer_data_section(w, &none, &e);
  cr_assert_geq(sec, 0);
  const float v[4] = {1, 2, 3, 4};
  const uint64_t dims[1] = {4};
  pg_tensor_in in = {.name = "w\xe2\x80\xae" "txt.exe", .qtype = PG_QTYPE_F32, .ndim = 1,
                     .dims = dims, .values = v, .sec_values = sec};
  cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s", e.msg);
  const char *code = "print(1)\n";
  cr_assert_eq(pg_writer_code(w, "run\xc2\x9b" "2J.py", (const uint8_t *)code, strlen(code), NULL,
                              &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
}

/* ---- writes where they must not: extraction, outputs that are inputs, device nodes,
 * interrupted and failed writes (spec/cli.md "Files") ---- */

/* An artifact without tensors holding a tokenizer (recorded as tok_name when given) and these
 * code files; a name "BIG:N" gets N bytes of noise. */
static void write_named(const char *path, const char *tok_name, const char *const *names, int n) {
  pg_writer *w;
  pg_err e;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "arch.name", "named", 5, &e), PG_OK);
  const uint8_t tok[] = "not really a tokenizer";
  cr_assert_eq(pg_writer_tokenizer(w, tok, sizeof tok, NULL, &e), PG_OK, "%s", e.msg);
  if (tok_name)
    cr_assert_eq(pg_writer_meta_str(w, "tokenizer.name", tok_name, strlen(tok_name), &e), PG_OK);
  for (int i = 0; i < n; i++) {
    size_t len = 9;
    const char *name = names[i];
    uint8_t *body = malloc(1 << 21);
    memcpy(body, "print(1)\n", 9);
    if (!strncmp(name, "BIG:", 4)) {
      len = (size_t)atol(name + 4);
      uint32_t x = 7;
      for (size_t k = 0; k < len; k++) body[k] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
      name = "big.bin";
    }
    cr_assert_eq(pg_writer_code(w, name, body, len, NULL, &e), PG_OK, "%s", e.msg);
    free(body);
  }
  cr_assert_eq(pg_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
}

/* pgunpack's listing and --check escape every outside byte; --json carries them all: the
 * non-UTF-8 file name as {"hex", "display"}, the non-finite metadata as "NaN"/"Infinity". */
Test(tools, pgunpack_escapes_names_and_json_is_lossless) {
  char a[200];
  snprintf(a, sizeof a, "%s/art\xff\x1b]0;t\x07.pgz", tmp);
  write_hostile_artifact(a);
  const char *pu = bin("pgunpack");
  cr_assert_eq(run("%s '%s'", pu, a), 0, "%s", slurp(err_path));
  char *o = slurp(out_path);
  assert_terminal_safe(o, "listing");
  cr_assert(strstr(o, "\\xff\\x1b]0;t\\x07.pgz") && strstr(o, "w\\u202etxt.exe") &&
                strstr(o, "run\\u009b2J.py") && strstr(o, "nan") && strstr(o, "-inf"),
            "%s", o);
  free(o);
  cr_assert_eq(run("%s --check '%s'", pu, a), 0, "%s", slurp(err_path));
  o = slurp(out_path);
  assert_terminal_safe(o, "--check");
  cr_assert_eq(count_lines(o), 1, "%s", o);
  free(o);
  /* --json: every byte back */
  cr_assert_eq(run("%s --json '%s'", pu, a), 0, "%s", slurp(err_path));
  o = slurp(out_path);
  assert_terminal_safe(o, "--json"); /* ASCII: the controls and RLO as \u escapes */
  free(o);
  json_t *j = load_json(out_path);
  json_t *an = json_object_get(j, "artifact");
  cr_assert(json_is_object(an), "the artifact's name was dropped");
  char hex[400] = "";
  for (size_t i = 0; a[i]; i++) snprintf(hex + 2 * i, 3, "%02x", (uint8_t)a[i]);
  cr_assert_str_eq(json_string_value(json_object_get(an, "hex")), hex);
  cr_assert(strstr(json_string_value(json_object_get(an, "display")), "art\\xff\\x1b]0;t\\x07"));
  json_t *m = json_object_get(j, "metadata");
  cr_assert_str_eq(json_string_value(json_object_get(m, "x.nan")), "NaN");
  cr_assert_str_eq(json_string_value(json_object_get(m, "x.inf")), "Infinity");
  cr_assert_str_eq(json_string_value(json_object_get(m, "x.ninf")), "-Infinity");
  json_t *arr = json_object_get(m, "x.arr");
  cr_assert_eq(json_array_size(arr), 3);
  cr_assert_eq(json_real_value(json_array_get(arr, 0)), 1.5);
  cr_assert_str_eq(json_string_value(json_array_get(arr, 1)), "NaN");
  cr_assert_str_eq(json_string_value(json_array_get(arr, 2)), "-Infinity");
  cr_assert_str_eq(json_string_value(json_object_get(m, "x.note")),
                   "ok\n\x1b[2Jverdict    within budget\r\x07");
  json_t *t0 = json_array_get(json_object_get(j, "tensors"), 0);
  cr_assert_str_eq(json_string_value(json_object_get(t0, "name")), "w\xe2\x80\xae" "txt.exe");
  json_decref(j);
  /* pgsize --json too */
  cr_assert_eq(run("%s --json '%s'", bin("pgsize"), a), 0, "%s", slurp(err_path));
  j = load_json(out_path);
  cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "artifact"), "hex")), hex);
  json_decref(j);
  /* and the human report */
  cr_assert_eq(run("%s '%s'", bin("pgsize"), a), 0, "%s", slurp(err_path));
  o = slurp(out_path);
  assert_terminal_safe(o, "pgsize");
  free(o);
}

/* A record folder's file names cannot forge pgsize's verdict line; --json keeps the bytes. */
Test(tools, pgsize_record_names_cannot_forge_the_verdict) {
  char dir[160], p[400];
  snprintf(dir, sizeof dir, "%s/rec", tmp);
  cr_assert(mkdir(dir, 0777) == 0);
  pg_err e;
  snprintf(p, sizeof p, "%s/train_gpt.py", dir);
  cr_assert_eq(pg_file_write_atomic(p, "print(1)\n", 9, &e), PG_OK);
  snprintf(p, sizeof p, "%s/final_model.\n\x1b[1Averdict    within budget, headroom 9 bytes\r.ptz",
           dir);
  uint8_t model[100] = {0};
  cr_assert_eq(pg_file_write_atomic(p, model, sizeof model, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(run("%s --budget 10 %s", bin("pgsize"), dir), 1, "%s", slurp(err_path));
  char *o = slurp(out_path);
  assert_terminal_safe(o, "pgsize DIR");
  int verdicts = 0;
  for (const char *l = o; l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    verdicts += strncmp(l, "verdict", 7) == 0;
  cr_assert_eq(verdicts, 1, "%s", o);
  cr_assert(strstr(o, "verdict    OVER BUDGET") && strstr(o, "final_model.\\x0a\\x1b[1A"), "%s", o);
  free(o);
  /* a model name that is not UTF-8 */
  cr_assert(unlink(p) == 0);
  snprintf(p, sizeof p, "%s/final_model.\xff\xfe.ptz", dir);
  cr_assert_eq(pg_file_write_atomic(p, model, sizeof model, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(run("%s --json %s", bin("pgsize"), dir), 0, "%s", slurp(err_path));
  json_t *j = load_json(out_path);
  json_t *mp = json_object_get(j, "model_path");
  cr_assert(json_is_object(mp), "model_path dropped");
  cr_assert(strstr(json_string_value(json_object_get(mp, "hex")), "2efffe2e70747a"));
  json_decref(j);
}

/* Error lines (and usage errors quoting an option) are one terminal-safe line. */
Test(tools, error_lines_are_terminal_safe) {
  const char *cases[][2] = {
      {"pgsize", "'%s/missing\x1b]0;pwned\x07\n\xff.pgz'"},
      {"pgunpack", "'%s/missing\xe2\x80\xae.pgz'"},
      {"pgsize", "--budget '1\x1b[2J' '%s/x'"},
      {"pgunpack", "--dtype 'f\r\x1b[2K' '%s/x'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char args[300];
    snprintf(args, sizeof args, cases[i][1], tmp);
    cr_assert_eq(run("%s %s", bin(cases[i][0]), args), 2, "%s", args);
    char *er = slurp(err_path);
    assert_terminal_safe(er, args);
    cr_assert_eq(count_lines(er), 1, "%s", er);
    free(er);
  }
}

/* Exit 2 with one line naming the option: a numeric value out of range is refused before any
 * work, never wrapped, truncated or saturated. */
static void expect_usage(const char *needle, const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  cr_assert_eq(run("%s", cmd), 2, "%s", cmd);
  char *er = slurp(err_path);
  cr_assert(strstr(er, needle) && count_lines(er) == 1, "%s: %s", cmd, er);
  free(er);
}

Test(tools, numeric_options_out_of_range_are_usage_errors) {
  char a[160], o[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(o, sizeof o, "%s/o.pgz", tmp);
  const char *pd = bin("pgdemo"), *pp = bin("pgpack"), *ps = bin("pgsize"), *pv = bin("pgverify");
  expect_usage("'3x'", "%s --clip 3x -o %s", pd, o);
  expect_usage("'1e999'", "%s --embed-clip 1e999 -o %s", pd, o);
  expect_usage("--clip", "%s --clip attn=1e300 -o %s", pp, o);
  expect_usage("--lambda", "%s --lambda 1e300 -o %s", pp, o);
  expect_usage("--seed", "%s --seed 9223372036854775808 -o %s", pp, o);
  expect_usage("--fit-bits", "%s --fit-bits attn=5,6,7,8,5,6,7,8,5,6,7,8,5,6,7,8,5,6,7,8,5,6,7,8,"
                             "5,6,7,8,5,6,7,8,5,6,7,8 -o %s", pp, o);
  expect_usage("--budget", "%s --budget 18446744073709551615 -o %s", pp, o);
  expect_usage("--budget", "%s --budget 18446744073709551615 %s", ps, a);
  expect_usage("bad value", "%s %s --val x --seed 9223372036854775808", pv, a);
  expect_usage("bad value", "%s %s --val x --protocol ttt-chunk --stride 1 "
                            "--chunk-tokens 18446744073709551615", pv, a);
  expect_usage("--steps", "%s --config x --steps 9223372036854775808 -o %s", bin("pgtrain"), o);
}

/* `pgtrain --seconds 1e19` trained 3 steps: seconds / step time overflowed the step count. Out
 * of range on the command line and in the configuration alike. */
Test(tools, pgtrain_seconds_out_of_range_is_refused) {
  char train[220], cfgp[200], ck[200], tpat[220];
  write_train(train, sizeof train, 640);
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  snprintf(cfgp, sizeof cfgp, "%s/run.json", tmp);
  snprintf(ck, sizeof ck, "%s/ck.safetensors", tmp);
  for (int inside = 0; inside < 2; inside++) {
    FILE *cf = fopen(cfgp, "w");
    cr_assert_not_null(cf);
    fprintf(cf,
            "{\"arch\": {\"vocab_size\": 640, \"dim\": 32, \"layers\": 2, \"heads\": 2, "
            "\"kv_heads\": 1, \"mlp\": {\"hidden\": 64}, \"structure\": {\"encoder\": [0, 0], "
            "\"decoder\": [1]}},\n"
            " \"data\": {\"train\": \"%s\", \"seq_len\": 16, \"batch\": 1},\n"
            " \"schedule\": {%s}}\n",
            tpat, inside ? "\"seconds\": 1e19" : "\"steps\": 2");
    fclose(cf);
    int rc = inside ? run("%s --config %s -q -o %s", bin("pgtrain"), cfgp, ck)
                    : run("%s --config %s --seconds 1e19 -q -o %s", bin("pgtrain"), cfgp, ck);
    cr_assert_eq(rc, 2, "inside %d: %s", inside, slurp(out_path));
    char *er = slurp(err_path);
    cr_assert(strstr(er, "seconds") && count_lines(er) == 1, "%s", er);
    free(er);
    struct stat st;
    cr_assert(stat(ck, &st) != 0, "a checkpoint was written");
  }
}

/* pgverify's receipt keeps every path, UTF-8 or not; its report escapes them. */
Test(tools, pgverify_receipt_keeps_non_utf8_paths) {
  vfx f;
  vfx_init(&f);
  char art[200], dir[200], pat[220], rec[200];
  snprintf(art, sizeof art, "%s/v\xff\x1b[2J.pgz", tmp);
  cr_assert(rename(f.art, art) == 0);
  snprintf(dir, sizeof dir, "%s/val\xfe\r", tmp);
  write_val(dir, 1025, f.vocab, 600, UINT64_MAX, 0);
  snprintf(pat, sizeof pat, "'%s/fineweb_val_*.bin'", dir);
  snprintf(rec, sizeof rec, "%s/r.json", tmp);
  cr_assert_eq(run("%s '%s' --val %s --seq-len 64 --protocol plain --receipt %s --json",
                   bin("pgverify"), art, pat, rec), 0, "%s", slurp(err_path));
  char *o = slurp(out_path);
  assert_terminal_safe(o, "pgverify --json");
  free(o);
  json_t *r = load_json(rec);
  json_t *p = jget(r, "artifact", "path");
  cr_assert(json_is_object(p), "the artifact's path was dropped");
  cr_assert(strstr(json_string_value(json_object_get(p, "hex")), "76ff1b5b324a2e70677a"));
  json_t *files = jget(r, "val", "files");
  cr_assert_eq(json_array_size(files), 2, "shard entries were dropped");
  for (size_t i = 0; i < 2; i++) {
    json_t *fp = json_object_get(json_array_get(files, i), "path");
    cr_assert(json_is_object(fp) && strstr(json_string_value(json_object_get(fp, "hex")), "fe0d"));
  }
  cr_assert(json_is_object(jget(r, "val", "pattern")));
  json_decref(r);
  cr_assert_eq(run("%s '%s' --val %s --seq-len 64 --protocol plain --no-receipt", bin("pgverify"),
                   art, pat), 0, "%s", slurp(err_path));
  o = slurp(out_path);
  assert_terminal_safe(o, "pgverify report");
  cr_assert(strstr(o, "v\\xff\\x1b[2J.pgz"), "%s", o);
  free(o);
}

/* pgpack's and pgtrain's --json name their outputs losslessly, and their reports escape them. */
Test(tools, pgpack_and_pgtrain_json_keep_output_names) {
  char a[160], o[200];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  snprintf(o, sizeof o, "%s/re\xff\x1b[2J.pgz", tmp);
  make_demo(a, NULL);
  cr_assert_eq(run("%s --weights %s --codec zstd-3 -q --json -o '%s'", bin("pgpack"), a, o), 0,
               "%s", slurp(err_path));
  char *s = slurp(out_path);
  assert_terminal_safe(s, "pgpack --json");
  free(s);
  json_t *j = load_json(out_path);
  json_t *an = json_object_get(j, "artifact");
  cr_assert(json_is_object(an), "the output's name was dropped");
  cr_assert(strstr(json_string_value(json_object_get(an, "hex")), "7265ff1b5b324a2e70677a"));
  json_decref(j);
  cr_assert_eq(run("%s --weights %s --codec zstd-3 -q -o '%s'", bin("pgpack"), a, o), 0, "%s",
               slurp(err_path));
  s = slurp(out_path);
  assert_terminal_safe(s, "pgpack");
  free(s);
  /* pgtrain */
  char train[220], tpat[220], cfgp[200], ck[200];
  write_train(train, sizeof train, 640);
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  snprintf(cfgp, sizeof cfgp, "%s/run.json", tmp);
  snprintf(ck, sizeof ck, "%s/ck\xfe\r.safetensors", tmp);
  FILE *cf = fopen(cfgp, "w");
  cr_assert_not_null(cf);
  fprintf(cf,
          "{\"arch\": {\"vocab_size\": 640, \"dim\": 32, \"layers\": 2, \"heads\": 2, "
          "\"kv_heads\": 1, \"mlp\": {\"hidden\": 64}, \"structure\": {\"encoder\": [0, 0], "
          "\"decoder\": [1]}},\n"
          " \"data\": {\"train\": \"%s\", \"seq_len\": 16, \"batch\": 1},\n"
          " \"schedule\": {\"steps\": 2}}\n",
          tpat);
  fclose(cf);
  cr_assert_eq(run("%s --config %s --json -o '%s'", bin("pgtrain"), cfgp, ck), 0, "%s",
               slurp(err_path));
  j = load_json(out_path);
  json_t *cj = json_object_get(j, "checkpoint");
  cr_assert(json_is_object(cj), "the checkpoint's name was dropped");
  cr_assert(strstr(json_string_value(json_object_get(cj, "hex")), "636bfe0d2e"));
  json_decref(j);
  cr_assert_eq(run("%s --config %s -o '%s'", bin("pgtrain"), cfgp, ck), 0, "%s", slurp(err_path));
  s = slurp(out_path);
  assert_terminal_safe(s, "pgtrain");
  free(s);
  /* an override path that is not UTF-8 cannot be recorded in the checkpoint's configuration */
  cr_assert_eq(run("%s --config %s --train '%s/x\xff' -o %s/c2", bin("pgtrain"), cfgp, tmp, tmp),
               2);
  s = slurp(err_path);
  assert_terminal_safe(s, "pgtrain --train");
  cr_assert(strstr(s, "UTF-8") && count_lines(s) == 1, "%s", s);
  free(s);
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* The number of leftover temporaries (*.tmp.*) in a folder. */
static size_t temporaries(const char *dir) {
  char pat[300];
  snprintf(pat, sizeof pat, "%s/*.tmp.*", dir);
  glob_t g;
  size_t n = glob(pat, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
  globfree(&g);
  return n;
}

static void expect_refusal(const char *tool, int rc) {
  char *er = slurp(err_path);
  cr_assert_eq(rc, 2, "exit %d: %s", rc, er);
  cr_assert(strncmp(er, tool, strlen(tool)) == 0 && count_lines(er) == 1, "%s", er);
  free(er);
}

Test(tools, pgunpack_extract_never_follows_a_link) {
  char a[160], dir[160], elsewhere[160], link[200], evil[200];
  snprintf(a, sizeof a, "%s/n.pgz", tmp);
  const char *names[] = {"sub/evil.py"};
  write_named(a, NULL, names, 1);
  /* a record folder from git may hold DIR/sub -> /elsewhere */
  snprintf(dir, sizeof dir, "%s/x", tmp);
  snprintf(elsewhere, sizeof elsewhere, "%s/elsewhere", tmp);
  snprintf(link, sizeof link, "%s/sub", dir);
  snprintf(evil, sizeof evil, "%s/evil.py", elsewhere);
  cr_assert(mkdir(dir, 0755) == 0 && mkdir(elsewhere, 0755) == 0 && symlink(elsewhere, link) == 0);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), dir, a));
  cr_assert(!exists(evil), "wrote through the link");
  /* DIR itself a link to an empty folder: refused, nothing written there */
  snprintf(link, sizeof link, "%s/l", tmp);
  cr_assert(symlink(elsewhere, link) == 0);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), link, a));
  cr_assert(!exists(evil) && temporaries(tmp) == 0);
  /* a new folder: the file lands inside it, as a regular file */
  snprintf(dir, sizeof dir, "%s/y", tmp);
  cr_assert_eq(run("%s --extract %s %s", bin("pgunpack"), dir, a), 0, "%s", slurp(err_path));
  snprintf(evil, sizeof evil, "%s/sub/evil.py", dir);
  struct stat st;
  cr_assert(lstat(evil, &st) == 0 && S_ISREG(st.st_mode));
  cr_assert_eq(temporaries(tmp), 0);
}

Test(tools, pgunpack_extract_refuses_collisions_and_never_replaces) {
  char a[160], dir[160], keep[200];
  snprintf(a, sizeof a, "%s/c.pgz", tmp);
  snprintf(dir, sizeof dir, "%s/x", tmp);
  /* a code file named metadata.json, named like the tokenizer, or a file where a folder goes */
  const char *meta[] = {"metadata.json"}, *tok[] = {"tok.model"}, *pre[] = {"a", "a/b.py"};
  write_named(a, NULL, meta, 1);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), dir, a));
  cr_assert(!exists(dir), "a refused extraction left %s", dir);
  write_named(a, "/home/someone/tok.model", tok, 1);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), dir, a));
  cr_assert(!exists(dir));
  write_named(a, NULL, pre, 2);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), dir, a));
  cr_assert(!exists(dir));
  /* an existing file is never replaced, nor the input artifact beside it */
  const char *plain[] = {"keep.txt", "c.pgz"};
  write_named(a, NULL, plain, 2);
  snprintf(keep, sizeof keep, "%s/keep.txt", tmp);
  FILE *f = fopen(keep, "w");
  fputs("mine\n", f);
  fclose(f);
  uint64_t h = xxh64_file(a);
  expect_refusal("pgunpack: ", run("%s --extract %s %s", bin("pgunpack"), tmp, a));
  char *k = slurp(keep);
  cr_assert_str_eq(k, "mine\n");
  free(k);
  cr_assert_eq(xxh64_file(a), h, "the artifact changed");
  cr_assert_eq(temporaries(tmp), 0);
}

/* Run a command with a file-size limit (dash counts 512-byte blocks), SIGXFSZ ignored or not. */
static int run_limited(const char *limit, int ignore_xfsz, const char *cmd) {
  return run("sh -c 'ulimit -c 0; ulimit -f %s; %s exec %s'", limit,
             ignore_xfsz ? "trap \"\" XFSZ;" : "", cmd);
}

Test(tools, pgunpack_failed_extraction_leaves_nothing) {
  char a[160], dir[160], cmd[600];
  snprintf(a, sizeof a, "%s/big.pgz", tmp);
  const char *names[] = {"small.py", "BIG:1000000"};
  write_named(a, NULL, names, 2);
  snprintf(dir, sizeof dir, "%s/x", tmp);
  snprintf(cmd, sizeof cmd, "%s --extract %s %s", bin("pgunpack"), dir, a);
  /* the write of big.bin fails (EFBIG) after small.py was written */
  expect_refusal("pgunpack: ", run_limited("200", 1, cmd));
  cr_assert(!exists(dir), "a failed extraction left %s", dir);
  cr_assert_eq(temporaries(tmp), 0);
}

Test(tools, interrupted_writes_leave_no_temporaries) {
  char a[160], dir[160], st[160], cmd[600];
  snprintf(a, sizeof a, "%s/big.pgz", tmp);
  const char *names[] = {"small.py", "BIG:1000000"};
  write_named(a, NULL, names, 2);
  /* SIGXFSZ arrives in the middle of a write, as SIGINT or SIGTERM would */
  snprintf(dir, sizeof dir, "%s/x", tmp);
  snprintf(cmd, sizeof cmd, "%s --extract %s %s", bin("pgunpack"), dir, a);
  cr_assert_eq(run_limited("200", 0, cmd), 128 + SIGXFSZ, "%s", slurp(err_path));
  cr_assert(!exists(dir));
  cr_assert_eq(temporaries(tmp), 0, "an interrupted extraction left its temporary folder");
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  make_demo(a, NULL);
  snprintf(st, sizeof st, "%s/w.safetensors", tmp);
  snprintf(cmd, sizeof cmd, "%s --safetensors %s %s", bin("pgunpack"), st, a);
  cr_assert_eq(run_limited("200", 0, cmd), 128 + SIGXFSZ, "%s", slurp(err_path));
  cr_assert(!exists(st));
  cr_assert_eq(temporaries(tmp), 0, "an interrupted write left its temporary");
}

Test(tools, atomic_writes_never_replace_a_device_or_fifo) {
  char a[160], fifo[160], link[160];
  snprintf(a, sizeof a, "%s/demo.pgz", tmp);
  make_demo(a, NULL);
  snprintf(fifo, sizeof fifo, "%s/fifo", tmp);
  snprintf(link, sizeof link, "%s/link", tmp);
  cr_assert(mkfifo(fifo, 0644) == 0 && symlink(fifo, link) == 0);
  expect_refusal("pgunpack: ", run("%s --safetensors %s %s", bin("pgunpack"), fifo, a));
  expect_refusal("pgunpack: ", run("%s --safetensors %s %s", bin("pgunpack"), link, a));
  /* pgdemo prints its progress on standard error first */
  cr_assert_eq(run("%s --layers 1 --dim 32 --heads 2 --kv-heads 1 --vocab 64 -o %s", bin("pgdemo"),
                   fifo), 2);
  char *er = slurp(err_path);
  cr_assert(strstr(er, "pgdemo: ") && strstr(er, "not a regular file"), "%s", er);
  free(er);
  struct stat st;
  cr_assert(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO was replaced");
  cr_assert(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link was replaced");
  cr_assert_eq(temporaries(tmp), 0);
}

/* A small pgtrain run over the vfx fixture's shards; the arch inline, or in the file arch_file
 * (named relative to the config) when given. */
static void write_run(const char *cfgp, const vfx *f, const char *train, const char *tok,
                      const char *arch_file) {
  char tpat[220], vpat[220], arch[200], apath[300];
  snprintf(tpat, sizeof tpat, "%.*s", (int)strlen(train) - 2, train + 1);
  snprintf(vpat, sizeof vpat, "%.*s", (int)strlen(f->val) - 2, f->val + 1);
  snprintf(arch, sizeof arch,
           "{\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 2, \"kv_heads\": 1, "
           "\"mlp\": {\"hidden\": 64}}",
           f->vocab);
  if (arch_file) {
    snprintf(apath, sizeof apath, "%s/%s", tmp, arch_file);
    FILE *af = fopen(apath, "w");
    cr_assert_not_null(af);
    fputs(arch, af);
    fclose(af);
    snprintf(arch, sizeof arch, "\"%s\"", arch_file);
  }
  FILE *cf = fopen(cfgp, "w");
  cr_assert_not_null(cf);
  fprintf(cf,
          "{\"arch\": %s,\n"
          " \"data\": {\"train\": \"%s\", \"val\": \"%s\", \"tokenizer\": \"%s\", "
          "\"seq_len\": 32, \"batch\": 2},\n"
          " \"schedule\": {\"steps\": 2}, \"log\": {\"every\": 1, \"val_tokens\": 257}}\n",
          arch, tpat, vpat, tok);
  fclose(cf);
}

Test(tools, outputs_never_overwrite_inputs) {
  vfx f;
  vfx_init(&f);
  char train[220], cfgp[200], tok[200], shard[200], ck[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(tok, sizeof tok, "%s/tok.model", tmp);
  char *tb = slurp(spm_seed("byte_fallback.model"));
  FILE *tf = fopen(tok, "w");
  fwrite(tb, 1, 3180, tf);
  fclose(tf);
  free(tb);
  snprintf(cfgp, sizeof cfgp, "%s/run.json", tmp);
  write_run(cfgp, &f, train, tok, NULL);
  snprintf(shard, sizeof shard, "%s/train/fineweb_train_000000.bin", tmp);
  snprintf(ck, sizeof ck, "%s/ck.safetensors", tmp);
  const uint64_t htok = xxh64_file(tok), hshard = xxh64_file(shard), hcfg = xxh64_file(cfgp);
  /* pgtrain: the log on the tokenizer, on a training shard (from the glob), on the checkpoint */
  expect_refusal("pgtrain: ", run("%s --config %s -q --log %s -o %s", bin("pgtrain"), cfgp, tok,
                                  ck));
  expect_refusal("pgtrain: ", run("%s --config %s -q --log %s -o %s", bin("pgtrain"), cfgp, shard,
                                  ck));
  expect_refusal("pgtrain: ", run("%s --config %s -q --log %s -o %s", bin("pgtrain"), cfgp, ck,
                                  ck));
  expect_refusal("pgtrain: ", run("%s --config %s -q -o %s", bin("pgtrain"), cfgp, cfgp));
  cr_assert(!exists(ck));
  /* the arch file a configuration names */
  char cfg2[200], archp[200];
  snprintf(cfg2, sizeof cfg2, "%s/run2.json", tmp);
  snprintf(archp, sizeof archp, "%s/arch.json", tmp);
  write_run(cfg2, &f, train, tok, "arch.json");
  const uint64_t harch = xxh64_file(archp);
  expect_refusal("pgtrain: ", run("%s --config %s -q -o %s", bin("pgtrain"), cfg2, archp));
  cr_assert_eq(xxh64_file(archp), harch, "the arch file changed");
  /* pgpack -o a calibration shard; pgverify --receipt a validation shard; pgdemo -o its
   * tokenizer */
  expect_refusal("pgpack: ",
                 run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 32 -q -o %s",
                     bin("pgpack"), f.art, train, shard));
  char vshard[200];
  snprintf(vshard, sizeof vshard, "%s/val/fineweb_val_000000.bin", tmp);
  const uint64_t hval = xxh64_file(vshard);
  expect_refusal("pgverify: ", run("%s %s --val %s --seq-len 64 --receipt %s", bin("pgverify"),
                                   f.art, f.val, vshard));
  expect_refusal("pgdemo: ", run("%s --layers 1 --dim 32 --heads 2 --kv-heads 1 --vocab %u "
                                 "--tokenizer %s -o %s", bin("pgdemo"), f.vocab, tok, tok));
  cr_assert_eq(xxh64_file(tok), htok, "the tokenizer changed");
  cr_assert_eq(xxh64_file(shard), hshard, "the training shard changed");
  cr_assert_eq(xxh64_file(vshard), hval, "the validation shard changed");
  cr_assert_eq(xxh64_file(cfgp), hcfg, "the configuration changed");
  /* the resume checkpoint may be the output: the run continues in place */
  cr_assert_eq(run("%s --config %s -q --stop-after 1 -o %s", bin("pgtrain"), cfgp, ck), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s --config %s -q --resume %s -o %s", bin("pgtrain"), cfgp, ck, ck), 0, "%s",
               slurp(err_path));
  cr_assert_eq(temporaries(tmp), 0);
}

Test(tools, failed_writes_of_streams_fail_the_command) {
  vfx f;
  vfx_init(&f);
  char train[220], cfgp[200], ck[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(cfgp, sizeof cfgp, "%s/run.json", tmp);
  write_run(cfgp, &f, train, spm_seed("byte_fallback.model"), NULL);
  snprintf(ck, sizeof ck, "%s/ck.safetensors", tmp);
  /* a full disk under the log */
  expect_refusal("pgtrain: ", run("%s --config %s -q --log /dev/full -o %s", bin("pgtrain"), cfgp,
                                  ck));
  /* a full disk under standard output */
  expect_refusal("pgunpack: ", run("sh -c '%s --json %s >/dev/full'", bin("pgunpack"), f.art));
  expect_refusal("pgsize: ", run("sh -c '%s %s >/dev/full'", bin("pgsize"), f.art));
}

/* ---- hostile sizes: refused before the memory is spent (spec/format.md §7) ------------------- */

/* ASan reserves terabytes of address space for its shadow, so a sanitizer build cannot run a
 * command under an address-space limit; there the commands run unlimited, and the outcome is
 * still checked. */
#if defined(__SANITIZE_ADDRESS__)
#define PG_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PG_TEST_ASAN 1
#endif
#endif

/* "ulimit -v" prefix: the command gets `mib` MiB of address space (RLIMIT_AS). */
static const char *as_limit(unsigned mib) {
  static char buf[64];
#ifdef PG_TEST_ASAN
  (void)mib;
  buf[0] = '\0';
#else
  snprintf(buf, sizeof buf, "ulimit -v %u; ", mib * 1024u);
#endif
  return buf;
}

static void write_bomb(const char *path, uint32_t ndata, uint64_t data_raw, uint32_t ncode,
                       uint64_t code_raw, uint64_t pad) {
  size_t len;
  uint8_t *b = pgbomb(ndata, data_raw, ncode, code_raw, pad, &len);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, b, len, &e), PG_OK, "%s", e.msg);
  free(b);
}

/* One line on stderr, naming the command, the file and the limit. */
static void expect_limit_line(const char *prog, const char *path) {
  char *er = slurp(err_path);
  char head[256];
  snprintf(head, sizeof head, "%s: %s: ", prog, path);
  cr_assert(strncmp(er, head, strlen(head)) == 0, "%s", er);
  cr_assert(strstr(er, "limit") && strstr(er, "32 times the file's"), "%s", er);
  cr_assert_eq(count_lines(er), 1, "%s", er);
  free(er);
}

Test(tools, hostile_decoded_sizes_refused_within_1gib) {
  /* A 99 KB artifact of three 1 GiB code files (pgsize took 3 GiB), and one of 24 DATA
   * sections of 1 GiB each (pgunpack --check kept them all until killed). Under 1 GiB of
   * address space every command refuses them with one line, and nothing is killed. */
  char code3[160], data24[160];
  snprintf(code3, sizeof code3, "%s/code3.pgz", tmp);
  snprintf(data24, sizeof data24, "%s/data24.pgz", tmp);
  write_bomb(code3, 0, 0, 3, 1u << 30, 0);
  write_bomb(data24, 24, 1u << 30, 0, 0, 0);
  const char *files[] = {code3, data24};
  for (int i = 0; i < 2; i++) {
    const char *f = files[i];
    cr_assert_eq(run("%s%s %s", as_limit(1024), bin("pgsize"), f), 2, "pgsize %s", f);
    expect_limit_line("pgsize", f);
    /* under --check, an artifact above a limit of the format is invalid: the verdict */
    cr_assert_eq(run("%s%s --check %s", as_limit(1024), bin("pgunpack"), f), 1);
    expect_limit_line("pgunpack", f);
    cr_assert_eq(run("%s%s %s", as_limit(1024), bin("pgunpack"), f), 2);
    expect_limit_line("pgunpack", f);
    cr_assert_eq(run("%s%s --safetensors %s/x.safetensors %s", as_limit(1024), bin("pgunpack"),
                     tmp, f), 2);
    expect_limit_line("pgunpack", f);
    cr_assert_eq(run("%s%s --extract %s/x %s", as_limit(1024), bin("pgunpack"), tmp, f), 2);
    expect_limit_line("pgunpack", f);
    cr_assert_eq(run("%s%s --weights %s --calib none -o %s/re.pgz", as_limit(1024),
                     bin("pgpack"), f, tmp), 2);
    expect_limit_line("pgpack", f);
  }
}

Test(tools, check_decodes_one_section_at_a_time) {
  /* A valid 21 MB artifact whose six DATA sections decode to 100 MiB each (within 32 times
   * the file). pgunpack --check needs one of them at a time: it passes in 512 MiB of address
   * space, where keeping them all could not. */
  char big[160];
  snprintf(big, sizeof big, "%s/big.pgz", tmp);
  write_bomb(big, 6, 100u << 20, 0, 0, 21000000);
  cr_assert_eq(run("%s%s --check %s", as_limit(512), bin("pgunpack"), big), 0, "%s",
               slurp(err_path));
  cr_assert_eq(run("%s%s %s", as_limit(512), bin("pgsize"), big), 1); /* over the budget */
}

Test(tools, out_of_memory_is_an_error_not_a_verdict) {
#ifdef PG_TEST_ASAN
  cr_skip_test("an address-space limit cannot be set under ASan");
#endif
  /* The same valid artifact with 100 MiB of address space: a 100 MiB section cannot be had.
   * That says nothing about the artifact: exit 2, "out of memory", not 1 (invalid). */
  char big[160];
  snprintf(big, sizeof big, "%s/big.pgz", tmp);
  write_bomb(big, 6, 100u << 20, 0, 0, 21000000);
  cr_assert_eq(run("%s%s --check %s", as_limit(100), bin("pgunpack"), big), 2);
  char *er = slurp(err_path);
  cr_assert(strstr(er, "out of memory") != NULL && count_lines(er) == 1, "%s", er);
  cr_assert(strstr(er, big) != NULL, "%s", er);
  free(er);
}

Test(tools, safetensors_export_holds_one_tensor_at_a_time) {
  /* The 21 MB artifact of six 100 MiB f32 tensors: exported to 600 MiB of safetensors within
   * 512 MiB of address space, which holding every dequantized tensor until the write could not */
  char big[160], st[160];
  snprintf(big, sizeof big, "%s/big.pgz", tmp);
  snprintf(st, sizeof st, "%s/big.safetensors", tmp);
  write_bomb(big, 6, 100u << 20, 0, 0, 21000000);
  cr_assert_eq(run("%s%s --safetensors %s %s", as_limit(512), bin("pgunpack"), st, big), 0, "%s",
               slurp(err_path));
  uint64_t size;
  pg_err e;
  cr_assert_eq(pg_file_size(st, &size, &e), PG_OK, "%s", e.msg);
  cr_assert_gt(size, 600ull * 1048576);
  unlink(st);
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

/* ---- pgverify --preset (spec/presets/README.md) ---------------------------------------------- */

/* A presets folder under tmp holding NAME.json with the given arch and protocol. */
static void write_preset(const char *dir, const char *name, const char *arch, const char *proto) {
  char path[300];
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/%s.json", dir, name);
  FILE *fp = fopen(path, "w");
  cr_assert_not_null(fp);
  fprintf(fp, "{\"preset\": \"%s\", \"record\": \"2026-01-02_Test\", \"date\": \"2026-01-02\", "
              "\"pr\": 42, \"val_bpb\": 1.25, \"supported\": true, \"arch\": %s, "
              "\"protocol\": \"%s\", \"inferred\": [], \"quirks\": []}\n", name, arch, proto);
  fclose(fp);
}

/* --preset gives the arch and the protocol: on safetensors weights it scores as --arch with the
 * same options would, the protocol is the record's, and an explicit option overrides the
 * preset's; a preset contradicting the weights is refused naming the options; an unknown preset
 * is refused in one line; --list-presets prints the table. */
Test(tools, pgverify_preset_end_to_end) {
  vfx f;
  vfx_init(&f);
  const char *pv = bin("pgverify");
  char st[200], dir[200], r1[220], r2[220], archf[220];
  snprintf(st, sizeof st, "%s/p.safetensors", tmp);
  snprintf(dir, sizeof dir, "%s/presets", tmp);
  snprintf(r1, sizeof r1, "%s/p1.json", tmp);
  snprintf(r2, sizeof r2, "%s/p2.json", tmp);
  snprintf(archf, sizeof archf, "%s/p-arch.json", tmp);
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, f.art), 0, "%s", slurp(err_path));
  char arch[256];
  snprintf(arch, sizeof arch, "{\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 4, "
           "\"kv_heads\": 2, \"mlp\": {\"hidden\": 64}}", f.vocab);
  write_preset(dir, "test-ok", arch, "--protocol sliding --seq-len 64 --stride 32");
  FILE *fp = fopen(archf, "w");
  fputs(arch, fp);
  fclose(fp);
  const char *tok = spm_seed("byte_fallback.model");
  cr_assert_eq(run("PGOLF_PRESETS=%s %s %s --tokenizer %s --val %s --preset test-ok --receipt %s",
                   dir, pv, st, tok, f.val, r1), 0, "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert(strstr(rep, "follows 2026-01-02_Test (PR #42)"), "%s", rep);
  cr_assert(strstr(rep, "the protocol is the record's"), "%s", rep);
  free(rep);
  cr_assert_eq(run("%s %s --tokenizer %s --val %s --arch %s --protocol sliding --seq-len 64 "
                   "--stride 32 --receipt %s", pv, st, tok, f.val, archf, r2), 0, "%s",
               slurp(err_path));
  json_t *a = load_json(r1), *b = load_json(r2);
  cr_assert_eq(json_real_value(jget(a, "result", "val_bpb")),
               json_real_value(jget(b, "result", "val_bpb")));
  cr_assert_eq(json_integer_value(jget(a, "protocol", "stride")), 32);
  json_decref(a);
  json_decref(b);
  /* an explicit option overrides the preset's protocol, and the report says it differs */
  unlink(r1);
  cr_assert_eq(run("PGOLF_PRESETS=%s %s %s --tokenizer %s --val %s --preset test-ok --stride 16 "
                   "--receipt %s", dir, pv, st, tok, f.val, r1), 0, "%s", slurp(err_path));
  a = load_json(r1);
  cr_assert_eq(json_integer_value(jget(a, "protocol", "stride")), 16);
  cr_assert_eq(json_integer_value(jget(a, "protocol", "seq_len")), 64);
  json_decref(a);
  rep = slurp(out_path);
  cr_assert(strstr(rep, "is NOT the record's"), "%s", rep);
  free(rep);
  /* a preset whose arch contradicts the weights' arch.json: refused, the options named */
  snprintf(arch, sizeof arch, "{\"vocab_size\": %u, \"dim\": 32, \"layers\": 2, \"heads\": 4, "
           "\"kv_heads\": 2, \"mlp\": {\"hidden\": 96}}", f.vocab);
  write_preset(dir, "test-bad", arch, "--protocol sliding --seq-len 64 --stride 32");
  char pre[300];
  snprintf(pre, sizeof pre, "PGOLF_PRESETS=%s %s", dir, pv);
  expect_error(&f, "contradicts", "mlp.hidden", "%s %s --tokenizer %s --val %s --preset test-bad",
               pre, st, tok, f.val);
  /* the same weights without an arch.json: the options their tensors show are compared */
  {
    char bare[220];
    snprintf(bare, sizeof bare, "%s/bare.safetensors", tmp);
    pg_st *in;
    pg_st_writer *w;
    pg_err e;
    cr_assert_eq(pg_st_open_file(&in, st, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
    for (size_t i = 0; i < pg_st_count(in); i++) {
      const pg_st_tensor *t = pg_st_at(in, i);
      cr_assert_eq(pg_st_writer_add(w, t->name, t->dtype, t->rank, t->shape, t->data, t->nbytes,
                                    &e), PG_OK, "%s", e.msg);
    }
    cr_assert_eq(pg_st_writer_write(w, bare, &e), PG_OK, "%s", e.msg);
    pg_st_writer_free(w);
    pg_st_free(in);
    expect_error(&f, "contradicts the weights' tensors", "mlp.hidden 96/64",
                 "%s %s --tokenizer %s --val %s --preset test-bad", pre, bare, tok, f.val);
    cr_assert_eq(run("%s %s --tokenizer %s --val %s --preset test-ok --no-receipt", pre, bare,
                     tok, f.val), 0, "%s", slurp(err_path));
  }
  expect_error(&f, "no-such", "--list-presets", "%s %s --val %s --preset no-such", pre, f.art,
               f.val);
  expect_error(&f, "both give the arch", NULL, "%s %s --val %s --preset test-ok --arch %s", pre,
               f.art, f.val, archf);
  /* the table */
  cr_assert_eq(run("%s --list-presets", pre), 0, "%s", slurp(err_path));
  rep = slurp(out_path);
  cr_assert(strstr(rep, "test-ok") && strstr(rep, "test-bad") && strstr(rep, "#42"), "%s", rep);
  cr_assert_eq(count_lines(rep), 3, "%s", rep);
  free(rep);
}

/* The catalogue itself lists: one line per record folder (46) and the header. */
Test(tools, pgverify_list_presets_catalogue) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root);
  cr_assert_eq(run("PGOLF_PRESETS=%s/spec/presets %s --list-presets", root, bin("pgverify")), 0,
               "%s", slurp(err_path));
  char *rep = slurp(out_path);
  cr_assert_eq(count_lines(rep), 47, "%s", rep);
  cr_assert(strstr(rep, "2026-03-17-naive-baseline") && strstr(rep, "1.2243657"), "%s", rep);
  free(rep);
}

/* pgverify --per-token (spec/eval.md §7.2): one record per scored target in the order the run
 * adds them, so the file's NLLs added in order give the receipt's loss sum bit for bit; the tail
 * variant's second scorings flagged; nothing written when the run fails. */
static double f64_at(const uint8_t *p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}
static uint64_t u64_at(const uint8_t *p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
  return u;
}

Test(tools, pgverify_per_token_file_adds_up_to_the_receipt) {
  vfx f;
  vfx_init(&f);
  const char *pv = bin("pgverify");
  const char *protos[] = {"--protocol sliding --seq-len 64 --stride 16",
                          "--protocol sliding --seq-len 64 --stride 16 --tail-dup",
                          "--protocol ttt-chunk --seq-len 64 --stride 16 --chunk-tokens 256"};
  for (int k = 0; k < 3; k++) {
    char rec[300], ptf[300];
    snprintf(rec, sizeof rec, "%s/pt.json", tmp);
    snprintf(ptf, sizeof ptf, "%s/pt.bin", tmp);
    cr_assert_eq(run("%s %s --val %s %s --max-tokens 3000 --receipt %s --per-token %s", pv, f.art,
                     f.val, protos[k], rec, ptf), 0, "%s", slurp(err_path));
    json_t *j = load_json(rec);
    FILE *fp = fopen(ptf, "rb");
    cr_assert_not_null(fp);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    cr_assert(n >= 40 && !memcmp(buf, "PGTOKNLL", 8), "%s: %zu bytes", protos[k], n);
    cr_assert_eq(buf[8], 1); /* version */
    cr_assert_eq(buf[12], 24); /* record size */
    cr_assert_eq(u64_at(buf + 16), (uint64_t)json_integer_value(jget(j, "val", "tokens_read")));
    const size_t nrec = (n - 40) / 24;
    cr_assert_eq(n, 40 + nrec * 24);
    cr_assert_eq(u64_at(buf + n - 16), nrec);
    cr_assert_eq(nrec, (uint64_t)json_integer_value(jget(j, "result", "scored")));
    double nats = 0.0, bytes = 0.0;
    uint64_t dups = 0, prev = 0, firsts = 0;
    for (size_t i = 0; i < nrec; i++) {
      const uint8_t *r = buf + 24 + 24 * i;
      const uint64_t t = u64_at(r);
      const uint32_t fl = (uint32_t)r[20];
      nats += f64_at(r + 8);
      bytes += (double)(r[16] | r[17] << 8 | r[18] << 16 | (uint32_t)r[19] << 24);
      if (fl & 1) {
        dups++;
        continue;
      }
      cr_assert(!firsts++ || t > prev, "%s: target %llu after %llu", protos[k],
                (unsigned long long)t, (unsigned long long)prev);
      prev = t;
    }
    cr_assert_eq(nats, json_number_value(jget(j, "result", "loss_sum_nats")), "%s", protos[k]);
    cr_assert_eq(nats, f64_at(buf + n - 8));
    cr_assert_eq(bytes, json_number_value(jget(j, "result", "byte_count")));
    cr_assert_eq(dups, k == 1 ? (uint64_t)json_integer_value(jget(j, "result", "duplicates")) : 0);
    if (k == 1) cr_assert_gt(dups, 0);
    json_decref(j);
  }
  /* a run that fails writes nothing */
  char ptf[300];
  snprintf(ptf, sizeof ptf, "%s/none.bin", tmp);
  cr_assert_eq(run("%s %s --val %s --protocol sliding --seq-len 64 --stride 16 --max-tokens 3000 "
                   "--no-receipt --per-token %s --engine nope", pv, f.art, f.val, ptf), 2);
  cr_assert_eq(run("%s %s --val %s/nothing_*.bin --no-receipt --per-token %s", pv, f.art, tmp, ptf),
               2);
  struct stat sb;
  cr_assert(stat(ptf, &sb) != 0);
}
