/* pg_extract.c: pgunpack --extract in the library, so that tests and the fuzzer reach it: name
 * checks, collision checks, the metadata export, and the write into a fresh folder through
 * directory descriptors (pg_extract.h). */
#include "pg_extract.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_text.h"

#define METADATA_NAME "metadata.json"
#define TOKENIZER_DEFAULT "tokenizer.model"

int pg_extract_name_check(const char *name, size_t len, const char *src, pg_err *err) {
  const char *why = NULL;
  size_t bad = 0;
  if (len == 0 || len > PG_MAX_NAME) why = "is empty or longer than 255 bytes";
  else if (!pg_utf8_valid((const uint8_t *)name, len, &bad)) why = "is not valid UTF-8";
  else if (name[0] == '/') why = "is absolute";
  for (size_t i = 0, start = 0; !why && i <= len; i++) {
    const unsigned char c = i < len ? (unsigned char)name[i] : '/';
    if (c < 0x20 || c == 0x7f) why = "holds a control byte";
    else if (c == '\\') why = "holds a backslash";
    else if (c == '/') {
      const size_t cl = i - start;
      if (cl == 0) why = "has an empty component";
      else if (cl == 1 && name[start] == '.') why = "has a '.' component";
      else if (cl == 2 && name[start] == '.' && name[start + 1] == '.')
        why = "has a '..' component";
      start = i + 1;
    }
  }
  if (!why) return PG_OK;
  /* the name is untrusted: print only its safe bytes' count, not the bytes */
  return pg_err_set(err, PG_E_MALFORMED, src, PG_NO_OFFSET,
                    "a file name of %zu bytes %s; refusing to extract it", len, why);
}

/* ---- the metadata export ---- */

json_t *pg_meta_value_json(const pg_meta_entry *m) {
  switch (m->type) {
  case PG_META_I64: return json_integer(m->i64);
  case PG_META_F64: return pg_json_num(m->f64);
  case PG_META_BOOL: return json_boolean(m->b);
  case PG_META_STR: return pg_json_text(m->str, m->count);
  case PG_META_ARR: {
    json_t *arr = json_array();
    for (uint32_t i = 0; arr && i < m->count; i++) {
      switch (m->elem_type) {
      case PG_META_I64: json_array_append_new(arr, json_integer(pg_meta_arr_i64(m, i))); break;
      case PG_META_F64: json_array_append_new(arr, pg_json_num(pg_meta_arr_f64(m, i))); break;
      case PG_META_BOOL: json_array_append_new(arr, json_boolean(m->arr[i])); break;
      case PG_META_STR: {
        const char *s;
        uint32_t n;
        pg_meta_arr_str(m, i, &s, &n);
        json_array_append_new(arr, pg_json_text(s, n));
        break;
      }
      }
    }
    return arr;
  }
  default: return json_null();
  }
}

json_t *pg_meta_object_json(const pg_artifact *a) {
  json_t *o = json_object();
  for (uint32_t i = 0; o && i < pg_artifact_meta_count(a); i++) {
    const pg_meta_entry *m = pg_artifact_meta(a, i);
    char key[PG_MAX_NAME + 1];
    const size_t kl = m->key_len <= PG_MAX_NAME ? m->key_len : PG_MAX_NAME;
    memcpy(key, m->key, kl);
    key[kl] = '\0';
    json_object_set_new(o, key, pg_meta_value_json(m));
  }
  return o;
}

int pg_meta_export(const pg_artifact *a, char **text, size_t *len, pg_err *err) {
  *text = NULL;
  *len = 0;
  json_t *m = pg_meta_object_json(a);
  char *txt = m ? json_dumps(m, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII) : NULL;
  json_decref(m);
  const size_t tl = txt ? strlen(txt) : 0;
  char *out = txt ? malloc(tl + 2) : NULL;
  if (!out) {
    free(txt);
    return pg_err_set(err, PG_E_NOMEM, pg_artifact_name(a), PG_NO_OFFSET,
                      "cannot render metadata.json");
  }
  memcpy(out, txt, tl);
  out[tl] = '\n';
  out[tl + 1] = '\0';
  free(txt);
  *text = out;
  *len = tl + 1;
  return PG_OK;
}

/* ---- the plan ---- */

void pg_extract_plan_free(pg_extract_plan *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n; i++) {
    free(p->files[i].name);
    free(p->files[i].owned);
  }
  free(p->files);
  memset(p, 0, sizeof *p);
}

static int plan_add(pg_extract_plan *p, const char *name, size_t nl, const uint8_t *bytes,
                    size_t len, uint8_t *owned, const char *src, pg_err *err) {
  int rc = pg_extract_name_check(name, nl, src, err);
  char *copy = rc == PG_OK ? malloc(nl + 1) : NULL;
  pg_extract_file *f = copy ? realloc(p->files, (p->n + 1) * sizeof *f) : NULL;
  if (rc == PG_OK && !f)
    rc = pg_err_set(err, PG_E_NOMEM, src, PG_NO_OFFSET, "cannot allocate the file list");
  if (rc != PG_OK) {
    free(copy);
    free(owned);
    return rc;
  }
  memcpy(copy, name, nl);
  copy[nl] = '\0';
  p->files = f;
  p->files[p->n++] = (pg_extract_file){copy, bytes, len, owned};
  return PG_OK;
}

/* A path and every folder on its way, for the collision check. */
typedef struct path_ref {
  const char *s;
  size_t len;
  int is_file;
} path_ref;

static int path_ref_cmp(const void *x, const void *y) {
  const path_ref *a = x, *b = y;
  const size_t n = a->len < b->len ? a->len : b->len;
  const int c = memcmp(a->s, b->s, n);
  if (c) return c;
  return a->len < b->len ? -1 : a->len > b->len;
}

/* Two files with one name, or a file where another needs a folder: refused before writing. */
static int check_collisions(const pg_extract_plan *p, const char *src, pg_err *err) {
  size_t total = 0;
  for (size_t i = 0; i < p->n; i++) {
    total++;
    for (const char *c = p->files[i].name; *c; c++) total += *c == '/';
  }
  path_ref *r = malloc((total ? total : 1) * sizeof *r);
  if (!r) return pg_err_set(err, PG_E_NOMEM, src, PG_NO_OFFSET, "cannot allocate");
  size_t k = 0;
  for (size_t i = 0; i < p->n; i++) {
    const char *s = p->files[i].name;
    const size_t n = strlen(s);
    for (size_t j = 0; j < n; j++)
      if (s[j] == '/') r[k++] = (path_ref){s, j, 0};
    r[k++] = (path_ref){s, n, 1};
  }
  qsort(r, k, sizeof *r, path_ref_cmp);
  int rc = PG_OK;
  for (size_t i = 1; i < k && rc == PG_OK; i++)
    if ((r[i].is_file || r[i - 1].is_file) && !path_ref_cmp(&r[i], &r[i - 1]))
      rc = pg_err_set(err, PG_E_DUPLICATE, src, PG_NO_OFFSET,
                      "two extracted files collide at '%.*s'%s; refusing to extract", (int)r[i].len,
                      r[i].s, r[i].is_file && r[i - 1].is_file ? "" : " (a file and a folder)");
  free(r);
  return rc;
}

int pg_extract_plan_build(pg_artifact *a, pg_extract_plan *p, pg_err *err) {
  memset(p, 0, sizeof *p);
  const char *src = pg_artifact_name(a);
  int rc = PG_OK;
  const int64_t ts = pg_artifact_tokenizer_section(a);
  if (ts >= 0) {
    const uint8_t *raw;
    rc = pg_artifact_section_raw(a, (uint32_t)ts, &raw, err);
    if (rc == PG_OK) {
      /* the recorded file name's last component when it is a safe name, else the default */
      const pg_meta_entry *tn = pg_artifact_meta_find(a, "tokenizer.name");
      const char *name = TOKENIZER_DEFAULT;
      size_t nl = strlen(name);
      if (tn && tn->type == PG_META_STR) {
        const char *b = tn->str;
        for (uint32_t i = 0; i < tn->count; i++)
          if (tn->str[i] == '/') b = tn->str + i + 1;
        const size_t bl = (size_t)(tn->str + tn->count - b);
        pg_err ignored;
        if (pg_extract_name_check(b, bl, src, &ignored) == PG_OK) {
          name = b;
          nl = bl;
        }
      }
      rc = plan_add(p, name, nl, raw, (size_t)pg_artifact_section(a, (uint32_t)ts)->raw_size,
                    NULL, src, err);
    }
  }
  for (uint32_t i = 0; rc == PG_OK && i < pg_artifact_code_count(a); i++) {
    const char *name;
    size_t nl, bl;
    const uint8_t *bytes;
    rc = pg_artifact_code(a, i, &name, &nl, &bytes, &bl, NULL, err);
    if (rc == PG_OK) rc = plan_add(p, name, nl, bytes, bl, NULL, src, err);
  }
  if (rc == PG_OK) {
    char *txt;
    size_t tl;
    rc = pg_meta_export(a, &txt, &tl, err);
    if (rc == PG_OK)
      rc = plan_add(p, METADATA_NAME, strlen(METADATA_NAME), (const uint8_t *)txt, tl,
                    (uint8_t *)txt, src, err);
  }
  if (rc == PG_OK) rc = check_collisions(p, src, err);
  if (rc != PG_OK) pg_extract_plan_free(p);
  return rc;
}

/* ---- the write ---- */

static int io_fail(pg_err *err, const char *dir, const char *name, const char *what, int e) {
  return pg_err_set(err, e == EEXIST || e == ELOOP || e == ENOTDIR ? PG_E_EXISTS : PG_E_IO, dir,
                    PG_NO_OFFSET, "%s%s%s: %s", name ? name : "", name ? ": " : "", what,
                    strerror(e));
}

/* Create root/name with its folders: each step relative to the folder's descriptor, no link
 * followed (O_NOFOLLOW), the file new (O_EXCL). */
static int write_one(int root, const pg_extract_file *f, const char *dir, pg_err *err) {
  int cur = dup(root);
  if (cur < 0) return io_fail(err, dir, f->name, "cannot open a folder", errno);
  char comp[PG_MAX_NAME + 1];
  const char *s = f->name;
  for (const char *slash; (slash = strchr(s, '/')) != NULL; s = slash + 1) {
    const size_t cl = (size_t)(slash - s);
    memcpy(comp, s, cl);
    comp[cl] = '\0';
    if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST) {
      const int e = errno;
      close(cur);
      return io_fail(err, dir, f->name, "cannot create a folder", e);
    }
    const int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    const int e = errno;
    close(cur);
    if (next < 0) return io_fail(err, dir, f->name, "cannot open a folder", e);
    cur = next;
  }
  const int fd = openat(cur, s, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  int e = errno;
  close(cur);
  if (fd < 0) return io_fail(err, dir, f->name, "cannot create", e);
  size_t done = 0;
  while (done < f->len) {
    const ssize_t k = write(fd, f->bytes + done, f->len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      e = k < 0 ? errno : EIO;
      close(fd);
      return io_fail(err, dir, f->name, "write failed", e);
    }
    done += (size_t)k;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    e = errno;
    return io_fail(err, dir, f->name, "cannot complete the write", e);
  }
  return PG_OK;
}

static int dir_is_empty(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  int empty = 1;
  for (struct dirent *e; empty && (e = readdir(d)) != NULL;)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) empty = 0;
  closedir(d);
  return empty;
}

int pg_extract_write(const pg_extract_plan *p, const char *dir, pg_err *err) {
  size_t dl = strlen(dir);
  while (dl > 1 && dir[dl - 1] == '/') dl--;
  char *d = malloc(dl + 1), *tmp = malloc(dl + 16);
  if (!d || !tmp) {
    free(d);
    free(tmp);
    return pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate a path");
  }
  memcpy(d, dir, dl);
  d[dl] = '\0';
  int rc = PG_OK;
  struct stat st;
  if (dl == 0 || !strcmp(d, "/")) {
    rc = pg_err_set(err, PG_E_ARG, dir, PG_NO_OFFSET, "not a folder to extract into");
  } else if (lstat(d, &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      rc = pg_err_set(err, PG_E_EXISTS, d, PG_NO_OFFSET,
                      "exists and is not a folder (a link is not followed); extraction writes a "
                      "new folder");
    else if (!dir_is_empty(d))
      rc = pg_err_set(err, PG_E_EXISTS, d, PG_NO_OFFSET,
                      "is not empty; extraction never replaces files (name a new folder)");
  } else if (errno != ENOENT) {
    rc = io_fail(err, d, NULL, "cannot stat", errno);
  }
  /* the temporary folder beside the destination: a rename puts it in place in one step */
  int made = 0;
  unsigned long x = (unsigned long)getpid() * 2654435761ul ^ (unsigned long)time(NULL) ^
                    (unsigned long)(uintptr_t)tmp;
  for (int tries = 0; rc == PG_OK && !made && tries < 100; tries++) {
    char suf[7];
    for (int i = 0; i < 6; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      suf[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[x % 36];
    }
    suf[6] = '\0';
    snprintf(tmp, dl + 16, "%s.tmp.%s", d, suf);
    if (mkdir(tmp, 0755) == 0) made = 1;
    else if (errno != EEXIST) rc = io_fail(err, d, NULL, "cannot create a temporary folder", errno);
  }
  if (rc == PG_OK && !made)
    rc = pg_err_set(err, PG_E_IO, d, PG_NO_OFFSET, "cannot name a temporary folder");
  int slot = -1;
  if (made) {
    /* registered, so an interrupted extraction leaves no folder behind either */
    slot = pg_tmp_register(tmp, 1);
    if (slot < 0) {
      rmdir(tmp);
      free(d);
      free(tmp);
      return pg_err_set(err, PG_E_LIMIT, dir, PG_NO_OFFSET, "too many outputs in progress");
    }
    const int root = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0) rc = io_fail(err, d, NULL, "cannot open the temporary folder", errno);
    for (size_t i = 0; rc == PG_OK && i < p->n; i++) rc = write_one(root, &p->files[i], d, err);
    if (rc == PG_OK && fsync(root) != 0)
      rc = io_fail(err, d, NULL, "cannot complete the write", errno);
    if (root >= 0) close(root);
    /* onto nothing or an empty folder; a folder that filled up meanwhile makes this fail */
    if (rc == PG_OK && rename(tmp, d) != 0)
      rc = io_fail(err, d, NULL, "cannot move the extracted folder into place",
                   errno == ENOTEMPTY ? EEXIST : errno);
    if (rc == PG_OK)
      pg_tmp_forget(slot);
    else
      pg_tmp_discard(slot);
  }
  free(d);
  free(tmp);
  return rc;
}
