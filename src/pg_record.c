/* pg_record.c: counting a challenge record folder (see pg_record.h, spec/record.md). */
#include "pg_record.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"

#define CODE_MAX (64u << 20)
#define JSON_MAX (16u << 20)

static const char *CLAIM_KEYS[PG_CLAIM_COUNT] = {
    "bytes_total",           "bytes_code",           "artifact_bytes_max", "artifact_bytes_mean",
    "bytes_model_int8_zlib", "bytes_model_int6_zstd", "val_bpb",            "val_loss"};

const char *pg_claim_key(int id) { return id >= 0 && id < PG_CLAIM_COUNT ? CLAIM_KEYS[id] : "?"; }

int pg_record_code_bytes(const uint8_t *buf, size_t len, uint64_t *out, uint64_t *crlf_count,
                         const char *file, pg_err *err) {
  size_t bad;
  if (!pg_utf8_valid(buf, len, &bad))
    return pg_err_set(err, PG_E_UTF8, file, bad,
                      "not valid UTF-8 (Python's read_text would raise UnicodeDecodeError)");
  uint64_t crlf = 0;
  for (size_t i = 0; i + 1 < len; i++)
    if (buf[i] == '\r' && buf[i + 1] == '\n') crlf++;
  *out = (uint64_t)len - crlf;
  if (crlf_count) *crlf_count = crlf;
  return PG_OK;
}

static void copy_str(char *dst, size_t cap, json_t *v) {
  const char *s = json_string_value(v);
  snprintf(dst, cap, "%s", s ? s : "");
  for (char *p = dst; *p; p++)
    if ((unsigned char)*p < 0x20) *p = '?';
}

int pg_record_parse_claims(pg_record_claims *out, const uint8_t *buf, size_t len,
                           const char *file, pg_err *err) {
  memset(out, 0, sizeof *out);
  json_error_t je;
  json_t *root = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return pg_err_set(err, PG_E_JSON, file, je.position >= 0 ? (uint64_t)je.position : PG_NO_OFFSET,
                      "malformed JSON: %s", je.text);
  int rc = PG_OK;
  if (!json_is_object(root)) {
    rc = pg_err_set(err, PG_E_JSON, file, 0, "submission.json is not a JSON object");
  }
  for (int i = 0; rc == PG_OK && i < PG_CLAIM_COUNT; i++) {
    json_t *v = json_object_get(root, CLAIM_KEYS[i]);
    if (!v || json_is_null(v)) continue;
    if (!json_is_number(v)) {
      rc = pg_err_set(err, PG_E_META_TYPE, file, PG_NO_OFFSET, "claim '%s' is not a number",
                      CLAIM_KEYS[i]);
      break;
    }
    out->num[i].present = 1;
    out->num[i].value = json_number_value(v);
  }
  const char *skeys[4] = {"name", "author", "track", "date"};
  char *sdst[4] = {out->name, out->author, out->track, out->date};
  size_t scap[4] = {sizeof out->name, sizeof out->author, sizeof out->track, sizeof out->date};
  for (int i = 0; rc == PG_OK && i < 4; i++) {
    json_t *v = json_object_get(root, skeys[i]);
    if (!v || json_is_null(v)) continue;
    if (!json_is_string(v)) {
      rc = pg_err_set(err, PG_E_META_TYPE, file, PG_NO_OFFSET, "'%s' is not a string", skeys[i]);
      break;
    }
    copy_str(sdst[i], scap[i], v);
  }
  json_decref(root);
  return rc;
}

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static int cmp_str(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The single final_model.*.ptz of dir (sorted listing), or an error naming them all. */
static int find_model(char **out, const char *dir, pg_err *err) {
  DIR *d = opendir(dir);
  if (!d) return pg_err_set(err, PG_E_NOT_FOUND, dir, PG_NO_OFFSET, "cannot open the folder");
  char *names[16];
  int n = 0, more = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t l = strlen(de->d_name);
    if (l > 16 && !strncmp(de->d_name, "final_model.", 12) && !strcmp(de->d_name + l - 4, ".ptz")) {
      if (n < 16) {
        names[n] = malloc(l + 1);
        if (names[n]) memcpy(names[n++], de->d_name, l + 1);
      } else {
        more++;
      }
    }
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  int rc = PG_OK;
  if (n == 0) {
    rc = pg_err_set(err, PG_E_RECORD, dir, PG_NO_OFFSET, "no final_model.*.ptz in the folder");
  } else if (n > 1) {
    char list[256] = "";
    size_t o = 0;
    for (int i = 0; i < n && o < sizeof list; i++)
      o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", names[i]);
    rc = pg_err_set(err, PG_E_RECORD, dir, PG_NO_OFFSET,
                    "%d model files (%s%s); choose one with --model", n + more, list,
                    more ? ", ..." : "");
  } else {
    *out = join(dir, names[0]);
    if (!*out) rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
  }
  for (int i = 0; i < n; i++) free(names[i]);
  return rc;
}

void pg_record_free(pg_record *r) {
  if (!r) return;
  free(r->dir);
  free(r->code_path);
  free(r->model_path);
  free(r->json_path);
  memset(r, 0, sizeof *r);
}

int pg_record_open(pg_record *r, const char *dir, const char *model, pg_err *err) {
  memset(r, 0, sizeof *r);
  size_t dl = strlen(dir);
  r->dir = malloc(dl + 1);
  r->code_path = join(dir, "train_gpt.py");
  if (!r->dir || !r->code_path) {
    pg_record_free(r);
    return pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
  }
  memcpy(r->dir, dir, dl + 1);
  uint8_t *code;
  size_t n;
  int rc = pg_file_read_all(r->code_path, &code, &n, CODE_MAX, err);
  if (rc == PG_E_NOT_FOUND)
    rc = pg_err_set(err, PG_E_RECORD, dir, PG_NO_OFFSET,
                    "not a record folder: no train_gpt.py (the counted code)");
  if (rc != PG_OK) {
    pg_record_free(r);
    return rc;
  }
  r->code_file_bytes = n;
  rc = pg_record_code_bytes(code, n, &r->code_bytes, &r->crlf, r->code_path, err);
  r->bom = n >= 3 && code[0] == 0xef && code[1] == 0xbb && code[2] == 0xbf;
  const char *start = (const char *)code + (r->bom ? 3 : 0);
  size_t slen = n - (r->bom ? 3 : 0);
  int wrapper = (slen >= 11 && !memcmp(start, "import lzma", 11)) ||
                (slen >= 13 && !memcmp(start, "import brotli", 13));
  int has_exec = 0;
  for (size_t i = 0; i + 5 <= slen && !has_exec; i++) has_exec = !memcmp(start + i, "exec(", 5);
  r->self_extractor = wrapper && has_exec;
  free(code);
  if (rc != PG_OK) {
    pg_record_free(r);
    return rc;
  }
  if (model) {
    uint64_t sz;
    pg_err tmp;
    if (model[0] != '/' && !strchr(model, '/')) {
      r->model_path = join(dir, model);
    } else if (pg_file_size(model, &sz, &tmp) == PG_OK) {
      r->model_path = malloc(strlen(model) + 1);
      if (r->model_path) strcpy(r->model_path, model);
    } else {
      r->model_path = join(dir, model);
    }
    if (!r->model_path) rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
  } else {
    rc = find_model(&r->model_path, dir, err);
  }
  if (rc == PG_OK) rc = pg_file_size(r->model_path, &r->model_bytes, err);
  if (rc == PG_OK) {
    r->total = r->code_bytes + r->model_bytes;
    char *jp = join(dir, "submission.json");
    uint8_t *jb;
    size_t jl;
    pg_err tmp;
    int jr = jp ? pg_file_read_all(jp, &jb, &jl, JSON_MAX, &tmp) : PG_E_NOMEM;
    if (jr == PG_OK) {
      r->json_path = jp;
      rc = pg_record_parse_claims(&r->claims, jb, jl, jp, err);
      free(jb);
    } else {
      free(jp);
      if (jr != PG_E_NOT_FOUND) {
        *err = tmp;
        rc = jr;
      }
    }
  }
  if (rc != PG_OK) pg_record_free(r);
  return rc;
}

static void fmt_num(char *buf, size_t cap, double v) {
  if (v == floor(v) && fabs(v) < 1e15)
    snprintf(buf, cap, "%.0f", v);
  else
    snprintf(buf, cap, "%.8g", v);
}

int pg_record_compare(const pg_record *r, pg_record_finding *out) {
  int n = 0;
  for (int id = 0; id < PG_CLAIM_COUNT; id++) {
    const pg_claim *c = &r->claims.num[id];
    if (!c->present) continue;
    pg_record_finding *f = &out[n++];
    memset(f, 0, sizeof *f);
    f->claim = id;
    f->claimed = c->value;
    char cl[48], co[48];
    fmt_num(cl, sizeof cl, c->value);
    switch (id) {
    case PG_CLAIM_BYTES_TOTAL:
    case PG_CLAIM_ARTIFACT_BYTES_MAX:
      f->computed = (double)r->total;
      if (c->value == (double)r->total) {
        f->kind = PG_FIND_AGREES;
        snprintf(f->text, sizeof f->text, "agrees with code + model");
      } else {
        f->kind = PG_FIND_DIFFERS;
        fmt_num(co, sizeof co, (double)r->total);
        if (c->value == (double)r->model_bytes)
          snprintf(f->text, sizeof f->text, "claims %s, the model bytes alone; code + model is %s",
                   cl, co);
        else if (!r->self_extractor && c->value < (double)r->total &&
                 c->value > (double)r->model_bytes)
          snprintf(f->text, sizeof f->text,
                   "claims %s, computed %s: the record may count a computed minified and "
                   "compressed code wrapper that is not shipped (not reproducible here)",
                   cl, co);
        else if (id == PG_CLAIM_ARTIFACT_BYTES_MAX)
          snprintf(f->text, sizeof f->text,
                   "claims %s over its seeds; this folder's model gives %s", cl, co);
        else
          snprintf(f->text, sizeof f->text, "claims %s, computed %s", cl, co);
      }
      break;
    case PG_CLAIM_BYTES_CODE:
      f->computed = (double)r->code_bytes;
      fmt_num(co, sizeof co, (double)r->code_bytes);
      if (c->value == (double)r->code_bytes) {
        f->kind = PG_FIND_AGREES;
        snprintf(f->text, sizeof f->text, "agrees with train_gpt.py as Python reads it");
      } else {
        f->kind = PG_FIND_DIFFERS;
        if (!r->self_extractor && c->value < (double)r->code_bytes)
          snprintf(f->text, sizeof f->text,
                   "claims %s but the file counts %s: the record may count a computed minified "
                   "wrapper (not reproducible here)",
                   cl, co);
        else
          snprintf(f->text, sizeof f->text, "claims %s, the file counts %s", cl, co);
      }
      break;
    case PG_CLAIM_BYTES_MODEL_INT8_ZLIB:
    case PG_CLAIM_BYTES_MODEL_INT6_ZSTD:
      f->computed = (double)r->model_bytes;
      fmt_num(co, sizeof co, (double)r->model_bytes);
      f->kind = c->value == (double)r->model_bytes ? PG_FIND_AGREES : PG_FIND_DIFFERS;
      snprintf(f->text, sizeof f->text, f->kind == PG_FIND_AGREES
                                            ? "agrees with the model file"
                                            : "claims %s, the model file holds %s",
               cl, co);
      break;
    case PG_CLAIM_ARTIFACT_BYTES_MEAN:
      f->kind = PG_FIND_INFO;
      f->computed = (double)r->total;
      snprintf(f->text, sizeof f->text, "a mean over seeds; not checkable from one folder");
      break;
    default:
      f->kind = PG_FIND_INFO;
      f->computed = NAN;
      snprintf(f->text, sizeof f->text, "a score: pgverify recomputes it from an artifact");
      break;
    }
  }
  return n;
}
