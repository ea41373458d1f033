/* fuzz_extract.c: libFuzzer target for pgunpack --extract: the name checks, the collision checks,
 * the metadata export and the write through directory descriptors. Each input is extracted into a
 * fresh temporary folder; it must be refused with a status and a one-line message, or written so
 * that the folder holds exactly the planned files (regular files, no links, the planned bytes),
 * metadata.json parses, and nothing else is left beside it.
 *
 * Input: first byte even: artifact bytes. Odd: records that become an artifact (so that names
 * reach the checks without a valid container by chance): u8 name length, name, u8 body length,
 * body, repeated (at most 16); the first record's name is also the recorded tokenizer.name. */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_container.h"
#include "pg_extract.h"
#include "pg_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(int rc, const pg_err *err) {
  if (rc == PG_OK || err->status != rc || !err->msg[0] || strchr(err->msg, '\n')) abort();
}

/* Remove a tree made by this target (no links expected; unlink them if any). */
static void rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      char p[4096];
      for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
          snprintf(p, sizeof p, "%s/%s", path, e->d_name);
          rm_rf(p);
        }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* Count the regular files under path; abort on anything that is neither a file nor a folder. */
static size_t count_files(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) abort();
  if (S_ISREG(st.st_mode)) return 1;
  if (!S_ISDIR(st.st_mode)) abort(); /* a link or a node: extraction must never make one */
  size_t n = 0;
  DIR *d = opendir(path);
  if (!d) abort();
  char p[4096];
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(p, sizeof p, "%s/%s", path, e->d_name);
      n += count_files(p);
    }
  closedir(d);
  return n;
}

static void extract(pg_artifact *a) {
  pg_extract_plan plan;
  pg_err err;
  int rc = pg_extract_plan_build(a, &plan, &err);
  if (rc != PG_OK) {
    check_refusal(rc, &err);
    if (plan.n || plan.files) abort();
    return;
  }
  for (size_t i = 0; i < plan.n; i++) {
    const char *nm = plan.files[i].name;
    if (pg_extract_name_check(nm, strlen(nm), "x", &err) != PG_OK) abort();
  }
  /* metadata.json is last and parses */
  const pg_extract_file *meta = &plan.files[plan.n - 1];
  if (strcmp(meta->name, "metadata.json") != 0 || !meta->len || meta->bytes[meta->len - 1] != '\n')
    abort();
  json_t *j = json_loadb((const char *)meta->bytes, meta->len, JSON_ALLOW_NUL, NULL);
  if (!json_is_object(j)) abort();
  json_decref(j);
  /* the write, in a fresh folder (in memory where there is one: fsync is cheap there) */
  char root[64];
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  snprintf(root, sizeof root, "%s/pgfx.XXXXXX", base);
  if (!mkdtemp(root)) abort();
  char out[96];
  snprintf(out, sizeof out, "%s/out", root);
  rc = pg_extract_write(&plan, out, &err);
  if (rc != PG_OK) {
    check_refusal(rc, &err);
  } else {
    if (count_files(out) != plan.n) abort();
    for (size_t i = 0; i < plan.n; i++) {
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", out, plan.files[i].name);
      uint8_t *b;
      size_t n;
      if (pg_file_read_all(p, &b, &n, 1u << 24, &err) != PG_OK) abort();
      if (n != plan.files[i].len || (n && memcmp(b, plan.files[i].bytes, n))) abort();
      free(b);
    }
  }
  /* beside the output: nothing (no temporary folder left, nothing written outside) */
  DIR *d = opendir(root);
  if (!d) abort();
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
        !(rc == PG_OK && !strcmp(e->d_name, "out")))
      abort();
  closedir(d);
  rm_rf(root);
  pg_extract_plan_free(&plan);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1u << 16)) return 0;
  const pg_read_limits lim = {.max_section_raw = 1u << 20, .max_elements = 1u << 16};
  pg_err err;
  pg_artifact *a = NULL;
  uint8_t *built = NULL;
  int rc;
  if (!(data[0] & 1)) {
    rc = pg_artifact_open_mem(&a, data + 1, size - 1, "fuzz.pgz", &lim, &err);
  } else {
    pg_writer *w;
    if (pg_writer_create(&w) != PG_OK) return 0;
    const pg_codec_spec none = {0}; /* stored: keeps each run fast */
    pg_writer_set_meta_codec(w, &none, &none);
    const uint8_t tok[] = "tok";
    pg_writer_tokenizer(w, tok, sizeof tok, &none, &err);
    size_t o = 1;
    for (int k = 0; k < 16 && o < size; k++) {
      size_t nl = data[o++];
      if (nl > size - o) break;
      const char *name = (const char *)data + o;
      o += nl;
      size_t bl = o < size ? data[o++] : 0;
      if (bl > size - o) bl = size - o;
      /* the names that the container itself refuses never reach extraction; the checks must
       * still refuse them in one line */
      pg_err ne;
      if (pg_extract_name_check(name, nl, "x", &ne) != PG_OK) check_refusal(ne.status, &ne);
      char z[256];
      memcpy(z, name, nl);
      z[nl] = '\0';
      if (k == 0) pg_writer_meta_str(w, "tokenizer.name", name, nl, &err);
      if (strlen(z) == nl) pg_writer_code(w, z, data + o, bl, &none, &err);
      o += bl;
    }
    size_t len;
    rc = pg_writer_to_mem(w, &built, &len, &err);
    pg_writer_free(w);
    if (rc != PG_OK) return 0;
    rc = pg_artifact_open_mem(&a, built, len, "fuzz.pgz", &lim, &err);
    if (rc != PG_OK) abort(); /* our own writer's output */
  }
  if (rc != PG_OK) {
    check_refusal(rc, &err);
    return 0;
  }
  extract(a);
  pg_artifact_free(a);
  free(built);
  return 0;
}
