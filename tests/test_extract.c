/* test_extract.c: writing where it is safe: the extraction of an artifact's files (name checks,
 * collisions, a fresh folder, nothing left on failure), the metadata export, the registry of live
 * temporaries, and atomic writes that never replace a device, FIFO or folder (spec/cli.md). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_container.h"
#include "pg_extract.h"
#include "pg_io.h"
#include "pg_shard.h"
#include "pgtest.h"

static char tmp[64];
static void setup(void) { pgtest_mkdtemp(tmp, "pgextract"); }
static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(extract, .init = setup, .fini = teardown);

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static size_t temporaries(const char *dir) {
  char pat[300];
  snprintf(pat, sizeof pat, "%s/*.tmp.*", dir);
  glob_t g;
  size_t n = glob(pat, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
  globfree(&g);
  return n;
}

static int name_status(const char *s, size_t n) {
  pg_err e;
  int rc = pg_extract_name_check(s, n, "a.pgz", &e);
  if (rc != PG_OK) cr_assert(strchr(e.msg, '\n') == NULL && strstr(e.msg, "a.pgz"), "%s", e.msg);
  return rc;
}
#define NAME(s) name_status(s, sizeof(s) - 1)

Test(extract, names_are_plain_relative_paths) {
  cr_assert_eq(NAME("train_gpt.py"), PG_OK);
  cr_assert_eq(NAME("sub/dir/evil.py"), PG_OK);
  cr_assert_eq(NAME("caf\xc3\xa9.py"), PG_OK);
  cr_assert_eq(NAME(".hidden"), PG_OK);
  cr_assert_eq(NAME("a..b"), PG_OK);
  const char *bad[] = {"", "/etc/passwd", "..", "../x", "a/../b", "a/..", ".", "./a", "a/./b",
                       "a/.", "a//b", "a/", "a\\b", "a\x01" "b", "a\x7f", "\xff.py", "a\nb"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    cr_assert_eq(name_status(bad[i], strlen(bad[i])), PG_E_MALFORMED, "'%s' accepted", bad[i]);
  cr_assert_eq(name_status("a\0b", 3), PG_E_MALFORMED, "a NUL accepted");
  char long_name[300];
  memset(long_name, 'a', sizeof long_name);
  cr_assert_eq(name_status(long_name, 255), PG_OK);
  cr_assert_eq(name_status(long_name, 256), PG_E_MALFORMED);
}

/* An artifact in memory with a tokenizer (recorded under tok_name when given) and code files. */
static pg_artifact *artifact(const char *tok_name, const char *const *names, int n,
                             uint8_t **keep) {
  pg_writer *w;
  pg_err e;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "zeta", "last", 4, &e), PG_OK);
  cr_assert_eq(pg_writer_meta_i64(w, "alpha", 7, &e), PG_OK);
  const double arr[2] = {0.5, -1.0};
  cr_assert_eq(pg_writer_meta_arr_f64(w, "arr", arr, 2, &e), PG_OK);
  const uint8_t tok[] = "tokenizer bytes";
  cr_assert_eq(pg_writer_tokenizer(w, tok, sizeof tok, NULL, &e), PG_OK);
  if (tok_name)
    cr_assert_eq(pg_writer_meta_str(w, "tokenizer.name", tok_name, strlen(tok_name), &e), PG_OK);
  for (int i = 0; i < n; i++)
    cr_assert_eq(pg_writer_code(w, names[i], (const uint8_t *)names[i], strlen(names[i]), NULL,
                                &e),
                 PG_OK, "%s", e.msg);
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, keep, &len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, *keep, len, "mem.pgz", NULL, &e), PG_OK, "%s", e.msg);
  return a;
}

static int plan_status(const char *tok_name, const char *const *names, int n) {
  uint8_t *bytes;
  pg_artifact *a = artifact(tok_name, names, n, &bytes);
  pg_extract_plan p;
  pg_err e;
  int rc = pg_extract_plan_build(a, &p, &e);
  if (rc != PG_OK) {
    cr_assert(strchr(e.msg, '\n') == NULL, "%s", e.msg);
    cr_assert_eq(p.n, 0u);
  }
  pg_extract_plan_free(&p);
  pg_artifact_free(a);
  free(bytes);
  return rc;
}

Test(extract, colliding_names_are_refused) {
  const char *ok[] = {"a/b.py", "a/c.py", "a-b", "ab"};
  cr_assert_eq(plan_status(NULL, ok, 4), PG_OK);
  const char *meta[] = {"metadata.json"};
  cr_assert_eq(plan_status(NULL, meta, 1), PG_E_DUPLICATE);
  const char *tok[] = {"x.model"};
  cr_assert_eq(plan_status("/somewhere/x.model", tok, 1), PG_E_DUPLICATE);
  cr_assert_eq(plan_status(NULL, tok, 1), PG_OK);
  const char *deftok[] = {"tokenizer.model"};
  cr_assert_eq(plan_status("../..", deftok, 1), PG_E_DUPLICATE, "an unsafe name falls back");
  const char *prefix[] = {"a", "a/b"}, *prefix2[] = {"a/b/c", "a/b"};
  cr_assert_eq(plan_status(NULL, prefix, 2), PG_E_DUPLICATE);
  cr_assert_eq(plan_status(NULL, prefix2, 2), PG_E_DUPLICATE);
  /* names the container accepts but a folder cannot hold safely */
  const char *dots[] = {"a/./b"}, *empty[] = {"a//b"};
  cr_assert_eq(plan_status(NULL, dots, 1), PG_E_MALFORMED);
  cr_assert_eq(plan_status(NULL, empty, 1), PG_E_MALFORMED);
}

Test(extract, writes_a_new_folder_or_nothing) {
  uint8_t *bytes;
  const char *names[] = {"sub/deep/x.py", "top.py"};
  pg_artifact *a = artifact("/data/sp.model", names, 2, &bytes);
  pg_extract_plan p;
  pg_err e;
  cr_assert_eq(pg_extract_plan_build(a, &p, &e), PG_OK, "%s", e.msg);
  char dir[128], path[256];
  /* a new folder, named with a trailing slash */
  snprintf(dir, sizeof dir, "%s/new/", tmp);
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_OK, "%s", e.msg);
  snprintf(path, sizeof path, "%s/new/sub/deep/x.py", tmp);
  uint8_t *got;
  size_t n;
  cr_assert_eq(pg_file_read_all(path, &got, &n, 1 << 20, &e), PG_OK);
  cr_assert(n == 13 && !memcmp(got, "sub/deep/x.py", 13));
  free(got);
  snprintf(path, sizeof path, "%s/new/sp.model", tmp);
  cr_assert(exists(path));
  snprintf(path, sizeof path, "%s/new/metadata.json", tmp);
  json_t *m = json_load_file(path, 0, NULL);
  cr_assert_not_null(m);
  cr_assert_eq(json_integer_value(json_object_get(m, "alpha")), 7);
  cr_assert_str_eq(json_string_value(json_object_get(m, "tokenizer.name")), "/data/sp.model");
  json_decref(m);
  /* again into it: refused (not empty), the files untouched */
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_E_EXISTS);
  /* an empty folder is fine */
  snprintf(dir, sizeof dir, "%s/empty", tmp);
  cr_assert(mkdir(dir, 0755) == 0);
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_OK, "%s", e.msg);
  /* a link to an empty folder, a file, or a missing parent: refused, nothing written */
  char target[128];
  snprintf(target, sizeof target, "%s/target", tmp);
  snprintf(dir, sizeof dir, "%s/link", tmp);
  cr_assert(mkdir(target, 0755) == 0 && symlink(target, dir) == 0);
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_E_EXISTS);
  cr_assert(strchr(e.msg, '\n') == NULL);
  snprintf(path, sizeof path, "%s/top.py", target);
  cr_assert(!exists(path));
  snprintf(dir, sizeof dir, "%s/new/top.py", tmp);
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_E_EXISTS);
  snprintf(dir, sizeof dir, "%s/nope/x", tmp);
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_E_IO);
  cr_assert_eq(temporaries(tmp), 0);
  pg_extract_plan_free(&p);
  pg_artifact_free(a);
  free(bytes);
}

Test(extract, a_failure_midway_removes_everything) {
  /* a plan that was not checked: the second file needs a folder where the first is a file */
  pg_extract_file f[3] = {{"one.py", (const uint8_t *)"1", 1, NULL},
                          {"a", (const uint8_t *)"2", 1, NULL},
                          {"a/b", (const uint8_t *)"3", 1, NULL}};
  pg_extract_plan p = {f, 3};
  char dir[128];
  snprintf(dir, sizeof dir, "%s/x", tmp);
  pg_err e;
  cr_assert_eq(pg_extract_write(&p, dir, &e), PG_E_EXISTS);
  cr_assert(strchr(e.msg, '\n') == NULL, "%s", e.msg);
  cr_assert(!exists(dir));
  cr_assert_eq(temporaries(tmp), 0, "the temporary folder was left");
}

Test(extract, registry_removes_files_and_trees_without_following_links) {
  char file[128], tree[128], path[256], outside[128], keep[200];
  snprintf(file, sizeof file, "%s/f.tmp.1", tmp);
  snprintf(tree, sizeof tree, "%s/t.tmp.2", tmp);
  snprintf(outside, sizeof outside, "%s/outside", tmp);
  snprintf(keep, sizeof keep, "%s/keep", outside);
  cr_assert(mkdir(outside, 0755) == 0);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(keep, "k", 1, &e), PG_OK);
  cr_assert_eq(pg_file_write_atomic(file, "x", 1, &e), PG_OK);
  cr_assert(mkdir(tree, 0755) == 0);
  snprintf(path, sizeof path, "%s/a", tree);
  cr_assert(mkdir(path, 0755) == 0);
  snprintf(path, sizeof path, "%s/a/b", tree);
  cr_assert(mkdir(path, 0755) == 0);
  snprintf(path, sizeof path, "%s/a/b/c.py", tree);
  cr_assert_eq(pg_file_write_atomic(path, "c", 1, &e), PG_OK);
  snprintf(path, sizeof path, "%s/a/link", tree);
  cr_assert(symlink(outside, path) == 0);
  int s1 = pg_tmp_register(file, 0), s2 = pg_tmp_register(tree, 1);
  cr_assert(s1 >= 0 && s2 >= 0);
  pg_tmp_remove_all();
  cr_assert(!exists(file) && !exists(tree));
  cr_assert(exists(keep), "removal followed a link");
  pg_tmp_forget(s1);
  pg_tmp_forget(s2);
  /* a forgotten entry is left alone */
  cr_assert_eq(pg_file_write_atomic(file, "x", 1, &e), PG_OK);
  pg_tmp_forget(pg_tmp_register(file, 0));
  pg_tmp_remove_all();
  cr_assert(exists(file));
}

Test(extract, atomic_writes_replace_only_regular_files) {
  char fifo[128], link[128], reg[128], rlink[128], sub[128];
  snprintf(fifo, sizeof fifo, "%s/fifo", tmp);
  snprintf(link, sizeof link, "%s/link", tmp);
  snprintf(reg, sizeof reg, "%s/reg", tmp);
  snprintf(rlink, sizeof rlink, "%s/rlink", tmp);
  snprintf(sub, sizeof sub, "%s/sub", tmp);
  cr_assert(mkfifo(fifo, 0644) == 0 && symlink(fifo, link) == 0 && mkdir(sub, 0755) == 0);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(fifo, "x", 1, &e), PG_E_EXISTS);
  cr_assert(strstr(e.msg, "not a regular file") && strchr(e.msg, '\n') == NULL, "%s", e.msg);
  cr_assert_eq(pg_file_write_atomic(link, "x", 1, &e), PG_E_EXISTS);
  cr_assert_eq(pg_file_write_atomic(sub, "x", 1, &e), PG_E_EXISTS);
  struct stat st;
  cr_assert(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
  cr_assert(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
  /* a link to a regular file is replaced; the file it named is not written */
  cr_assert_eq(pg_file_write_atomic(reg, "old", 3, &e), PG_OK);
  cr_assert(symlink(reg, rlink) == 0);
  cr_assert_eq(pg_file_write_atomic(rlink, "new", 3, &e), PG_OK, "%s", e.msg);
  cr_assert(lstat(rlink, &st) == 0 && S_ISREG(st.st_mode));
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all(reg, &b, &n, 16, &e), PG_OK);
  cr_assert(n == 3 && !memcmp(b, "old", 3));
  free(b);
  cr_assert_eq(temporaries(tmp), 0);
}

Test(extract, metadata_export_is_sorted_json_with_a_newline) {
  uint8_t *bytes;
  pg_artifact *a = artifact(NULL, NULL, 0, &bytes);
  char *txt;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_meta_export(a, &txt, &n, &e), PG_OK);
  cr_assert(n == strlen(txt) && txt[n - 1] == '\n');
  const char *al = strstr(txt, "\"alpha\""), *ar = strstr(txt, "\"arr\""),
             *z = strstr(txt, "\"zeta\"");
  cr_assert(al && ar && z && al < ar && ar < z, "%s", txt);
  json_t *j = json_loads(txt, 0, NULL);
  cr_assert_not_null(j);
  cr_assert_eq(json_array_size(json_object_get(j, "arr")), 2u);
  json_decref(j);
  free(txt);
  pg_artifact_free(a);
  free(bytes);
}

Test(extract, an_interrupted_shard_writer_leaves_no_shard) {
  pg_shard_writer *w;
  pg_err e;
  cr_assert_eq(pg_shard_writer_open(&w, tmp, "fineweb_val_", 100, &e), PG_OK, "%s", e.msg);
  uint16_t t[250];
  for (int i = 0; i < 250; i++) t[i] = (uint16_t)(i % 7 + 1);
  cr_assert_eq(pg_shard_writer_append(w, t, 250, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_nfiles(w), 2u); /* two complete shards and an open one */
  /* what a tool's signal handler does: the complete shards of the unfinished output go too */
  pg_tmp_remove_all();
  char pat[128];
  snprintf(pat, sizeof pat, "%s/fineweb_val_*", tmp);
  glob_t g;
  cr_assert_eq(glob(pat, 0, NULL, &g), GLOB_NOMATCH, "left %s", g.gl_pathc ? g.gl_pathv[0] : "");
  globfree(&g);
  pg_shard_writer_abort(w);
  /* a writer freed after finishing keeps its files, out of the registry */
  cr_assert_eq(pg_shard_writer_open(&w, tmp, "fineweb_val_", 100, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_append(w, t, 250, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK, "%s", e.msg);
  pg_shard_writer_free(w);
  pg_tmp_remove_all();
  cr_assert_eq(glob(pat, 0, NULL, &g), 0);
  cr_assert_eq(g.gl_pathc, 3u);
  globfree(&g);
}
