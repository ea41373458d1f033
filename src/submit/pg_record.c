/* pg_record.c: counting a challenge record folder the way the challenge counts it, parsing the
 * claims of its submission.json, and comparing the two (see pg_record.h, spec/record.md). */
#include "pg_record.h"
#include "pg_json.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pg_io.h"

static const char *const CLAIM_KEYS[PG_CLAIM_COUNT] = {
    "bytes_total",           "bytes_code",            "artifact_bytes_max", "artifact_bytes_mean",
    "bytes_model_int8_zlib", "bytes_model_int6_zstd", "val_bpb",            "val_loss"};

const char *pg_claim_key(int id) { return id >= 0 && id < PG_CLAIM_COUNT ? CLAIM_KEYS[id] : "?"; }

const char *pg_record_finding_word(int kind) {
  switch (kind) {
  case PG_FIND_AGREES: return "agrees";
  case PG_FIND_DIFFERS: return "differs";
  case PG_FIND_INFO: return "info";
  default: return "?";
  }
}

/* ---- the code count ---- */

/* Why the sequence at s[i] is invalid (pg_utf8_valid said it is), in words. */
static void utf8_fault(char *out, size_t cap, const uint8_t *s, size_t n, size_t i) {
  const uint8_t c = s[i];
  size_t len;
  uint32_t cp, min;
  if (c >= 0x80 && c <= 0xbf) {
    snprintf(out, cap, "stray continuation byte 0x%02X", c);
    return;
  }
  if (c == 0xc0 || c == 0xc1) {
    snprintf(out, cap, "byte 0x%02X (it could only start an overlong 2-byte form)", c);
    return;
  }
  if (c >= 0xf5) {
    snprintf(out, cap, "byte 0x%02X (never valid in UTF-8)", c);
    return;
  }
  if (c < 0xe0) {
    len = 2, cp = c & 0x1f, min = 0x80;
  } else if (c < 0xf0) {
    len = 3, cp = c & 0x0f, min = 0x800;
  } else {
    len = 4, cp = c & 0x07, min = 0x10000;
  }
  for (size_t k = 1; k < len; k++) {
    if (i + k >= n) {
      snprintf(out, cap, "truncated %zu-byte sequence at the end of the file", len);
      return;
    }
    if ((s[i + k] & 0xc0) != 0x80) {
      snprintf(out, cap,
               "truncated %zu-byte sequence (byte 0x%02X at offset %zu does not continue it)", len,
               s[i + k], i + k);
      return;
    }
    cp = (cp << 6) | (s[i + k] & 0x3f);
  }
  if (cp < min)
    snprintf(out, cap, "overlong %zu-byte encoding of U+%04X", len, (unsigned)cp);
  else if (cp >= 0xd800 && cp <= 0xdfff)
    snprintf(out, cap, "encoded surrogate U+%04X", (unsigned)cp);
  else
    snprintf(out, cap, "code point U+%X above U+10FFFF", (unsigned)cp);
}

int pg_record_code_bytes(const uint8_t *buf, size_t len, uint64_t *out, uint64_t *crlf_count,
                         const char *file, pg_err *err) {
  PG_FAIL_IF(!out || (!buf && len), err, PG_E_ARG, file, PG_NO_OFFSET, "no buffer to count");
  if (len == 0) {
    *out = 0;
    if (crlf_count) *crlf_count = 0;
    return PG_OK;
  }
  size_t bad = 0;
  if (!pg_utf8_valid(buf, len, &bad)) {
    char why[160];
    utf8_fault(why, sizeof why, buf, len, bad);
    return pg_err_set(err, PG_E_UTF8, file, (uint64_t)bad,
                      "not valid UTF-8: %s; Python's read_text(\"utf-8\") raises "
                      "UnicodeDecodeError, so the challenge cannot count this file",
                      why);
  }
  uint64_t crlf = 0;
  const uint8_t *p = buf, *const end = buf + len;
  while (p < end && (p = memchr(p, '\r', (size_t)(end - p))) != NULL) {
    if (p + 1 < end && p[1] == '\n') crlf++;
    p++;
  }
  *out = (uint64_t)len - crlf;
  if (crlf_count) *crlf_count = crlf;
  return PG_OK;
}

static int is_ident_byte(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c >= 0x80;
}

static int contains(const uint8_t *s, size_t n, const char *needle) {
  const size_t k = strlen(needle);
  if (n < k) return 0;
  const uint8_t *p = s, *const last = s + (n - k);
  while (p <= last && (p = memchr(p, needle[0], (size_t)(last - p) + 1)) != NULL) {
    if (!memcmp(p, needle, k)) return 1;
    p++;
  }
  return 0;
}

int pg_record_is_self_extractor(const uint8_t *buf, size_t len) {
  if (!buf) return 0;
  if (len >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf) buf += 3, len -= 3;
  static const char *const heads[] = {"import lzma", "import brotli"};
  int head = 0;
  for (size_t i = 0; i < sizeof heads / sizeof heads[0] && !head; i++) {
    const size_t k = strlen(heads[i]);
    head = len >= k && !memcmp(buf, heads[i], k) && (len == k || !is_ident_byte(buf[k]));
  }
  return head && contains(buf, len, "exec(");
}

int pg_record_is_model_name(const char *name) {
  if (!name) return 0;
  const size_t l = strlen(name);
  return l >= 16 && !strncmp(name, "final_model.", 12) && !strcmp(name + l - 4, ".ptz");
}

/* ---- the claims ---- */

static const char *const STR_KEYS[4] = {"name", "author", "track", "date"};


/* Copy a (valid UTF-8) string of n bytes into dst, cut on a character boundary to fit, with
 * C0 controls, NUL, DEL and C1 controls (U+0080..U+009F) replaced by '?'. */
static void copy_clean(char *dst, size_t cap, const char *s, size_t n) {
  size_t o = 0, i = 0;
  while (i < n) {
    const uint8_t c = (uint8_t)s[i];
    size_t l = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (l > n - i) l = n - i;
    const int ctl = c < 0x20 || c == 0x7f || (c == 0xc2 && l == 2 && (uint8_t)s[i + 1] < 0xa0);
    const size_t w = ctl ? 1 : l;
    if (o + w + 1 > cap) break;
    if (ctl)
      dst[o++] = '?';
    else
      memcpy(dst + o, s + i, l), o += l;
    i += l;
  }
  dst[o] = '\0';
}


static int parse_members(pg_record_claims *out, json_t *root, const char *file, pg_err *err) {
  for (int i = 0; i < PG_CLAIM_COUNT; i++) {
    json_t *v = json_object_get(root, CLAIM_KEYS[i]);
    if (!v || json_is_null(v)) continue;
    PG_FAIL_IF(!json_is_number(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "claim '%s' is %s, not a number", CLAIM_KEYS[i], pg_json_type_word(v));
    pg_claim *c = &out->num[i];
    c->present = 1;
    if (json_is_integer(v)) {
      c->is_integer = 1;
      c->integer = (int64_t)json_integer_value(v);
      c->value = (double)c->integer;
    } else {
      c->value = json_real_value(v);
    }
  }
  char *const dst[4] = {out->name, out->author, out->track, out->date};
  const size_t cap[4] = {sizeof out->name, sizeof out->author, sizeof out->track,
                         sizeof out->date};
  for (int i = 0; i < 4; i++) {
    json_t *v = json_object_get(root, STR_KEYS[i]);
    if (!v || json_is_null(v)) continue;
    PG_FAIL_IF(!json_is_string(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "'%s' is %s, not a string", STR_KEYS[i], pg_json_type_word(v));
    copy_clean(dst[i], cap[i], json_string_value(v), json_string_length(v));
  }
  return PG_OK;
}

int pg_record_parse_claims(pg_record_claims *out, const uint8_t *buf, size_t len,
                           const char *file, pg_err *err) {
  PG_FAIL_IF(!out || (!buf && len), err, PG_E_ARG, file, PG_NO_OFFSET, "no buffer to parse");
  memset(out, 0, sizeof *out);
  size_t bad = 0;
  if (len && !pg_utf8_valid(buf, len, &bad)) {
    char why[160];
    utf8_fault(why, sizeof why, buf, len, bad);
    return pg_err_set(err, PG_E_UTF8, file, (uint64_t)bad, "not valid UTF-8: %s", why);
  }
  PG_FAIL_IF(len >= 3 && buf[0] == 0xef && buf[1] == 0xbb && buf[2] == 0xbf, err, PG_E_JSON, file,
             0, "starts with a UTF-8 byte-order mark, which JSON does not allow");
  json_t *root;
  PG_TRY(pg_json_load(&root, (const char *)buf, len, JSON_ALLOW_NUL, &pg_json_doc_caps, file,
                      err));
  int rc;
  if (!json_is_object(root)) {
    size_t at = 0;
    while (at < len && (buf[at] == ' ' || buf[at] == '\t' || buf[at] == '\n' || buf[at] == '\r'))
      at++;
    rc = pg_err_set(err, PG_E_JSON, file, (uint64_t)at, "the top level is %s, not an object",
                    pg_json_type_word(root));
  } else {
    rc = parse_members(out, root, file, err);
  }
  json_decref(root);
  if (rc != PG_OK) memset(out, 0, sizeof *out);
  return rc;
}

/* ---- the folder ---- */

static char *dup_str(const char *s) {
  const size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static char *join(const char *dir, const char *name) {
  const size_t a = strlen(dir), b = strlen(name);
  const int slash = a > 0 && dir[a - 1] != '/';
  char *p = malloc(a + (size_t)slash + b + 1);
  if (!p) return NULL;
  memcpy(p, dir, a);
  if (slash) p[a] = '/';
  memcpy(p + a + (size_t)slash, name, b + 1);
  return p;
}

static int cmp_name(const void *x, const void *y) {
  return strcmp(*(char *const *)x, *(char *const *)y);
}

/* The one file of dir whose name matches final_model.*.ptz, or PG_E_RECORD naming them all. */
static int find_model(char **out, const char *dir, pg_err *err) {
  DIR *d = opendir(dir);
  if (!d)
    return pg_err_set(err, errno == ENOENT ? PG_E_NOT_FOUND : PG_E_IO, dir, PG_NO_OFFSET,
                      "cannot list the folder: %s", strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = PG_OK;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) {
      if (errno)
        rc = pg_err_set(err, PG_E_IO, dir, PG_NO_OFFSET, "cannot list the folder: %s",
                        strerror(errno));
      break;
    }
    if (!pg_record_is_model_name(de->d_name)) continue;
    if (n == cap) {
      const size_t nc = cap ? 2 * cap : 4;
      char **nn = realloc(names, nc * sizeof *nn);
      if (!nn) {
        rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
        break;
      }
      names = nn, cap = nc;
    }
    if (!(names[n] = dup_str(de->d_name))) {
      rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
      break;
    }
    n++;
  }
  closedir(d);
  if (rc == PG_OK) {
    if (n) qsort(names, n, sizeof *names, cmp_name);
    if (n == 0) {
      rc = pg_err_set(err, PG_E_RECORD, dir, PG_NO_OFFSET,
                      "not a record folder: no final_model.*.ptz (the counted model)");
    } else if (n > 1) {
      char list[320];
      size_t o = 0;
      list[0] = '\0';
      for (size_t i = 0; i < n; i++) {
        const int k = snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "", names[i]);
        if (k < 0 || (size_t)k >= sizeof list - o) {
          memcpy(list + (o < sizeof list - 6 ? o : sizeof list - 6), ", ...", 6);
          break;
        }
        o += (size_t)k;
      }
      rc = pg_err_set(err, PG_E_RECORD, dir, PG_NO_OFFSET,
                      "%zu files match final_model.*.ptz (%s); name the model to count", n, list);
    } else if (!(*out = join(dir, names[0]))) {
      rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
    }
  }
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
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

static int open_code(pg_record *r, pg_err *err) {
  struct stat st;
  if (stat(r->code_path, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      return pg_err_set(err, PG_E_RECORD, r->dir, PG_NO_OFFSET,
                        "not a record folder: no " PG_RECORD_CODE_NAME " (the counted code)");
    return pg_err_set(err, PG_E_IO, r->code_path, PG_NO_OFFSET, "cannot stat: %s",
                      strerror(errno));
  }
  PG_FAIL_IF(!S_ISREG(st.st_mode), err, PG_E_RECORD, r->code_path, PG_NO_OFFSET,
             "not a regular file");
  uint8_t *code = NULL;
  size_t n = 0;
  PG_TRY(pg_file_read_all(r->code_path, &code, &n, PG_RECORD_CODE_MAX, err));
  r->code_file_bytes = n;
  int rc = pg_record_code_bytes(code, n, &r->code_bytes, &r->crlf, r->code_path, err);
  r->bom = n >= 3 && code[0] == 0xef && code[1] == 0xbb && code[2] == 0xbf;
  r->self_extractor = pg_record_is_self_extractor(code, n);
  free(code);
  return rc;
}

static int open_model(pg_record *r, const char *model, pg_err *err) {
  if (model) {
    PG_FAIL_IF(!*model, err, PG_E_ARG, r->dir, PG_NO_OFFSET, "empty model file name");
    r->model_path = strchr(model, '/') ? dup_str(model) : join(r->dir, model);
    PG_FAIL_IF(!r->model_path, err, PG_E_NOMEM, r->dir, PG_NO_OFFSET, "cannot allocate");
  } else {
    PG_TRY(find_model(&r->model_path, r->dir, err));
  }
  return pg_file_size(r->model_path, &r->model_bytes, err);
}

static int open_claims(pg_record *r, pg_err *err) {
  char *jp = join(r->dir, PG_RECORD_JSON_NAME);
  PG_FAIL_IF(!jp, err, PG_E_NOMEM, r->dir, PG_NO_OFFSET, "cannot allocate");
  struct stat st;
  if (stat(jp, &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
    free(jp); /* no submission.json: no claims */
    return PG_OK;
  }
  r->json_path = jp;
  uint8_t *buf = NULL;
  size_t n = 0;
  PG_TRY(pg_file_read_all(jp, &buf, &n, PG_RECORD_JSON_MAX, err));
  const int rc = pg_record_parse_claims(&r->claims, buf, n, jp, err);
  free(buf);
  return rc;
}

int pg_record_open(pg_record *r, const char *dir, const char *model, pg_err *err) {
  PG_FAIL_IF(!r || !dir || !*dir, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no record folder given");
  memset(r, 0, sizeof *r);
  struct stat st;
  if (stat(dir, &st) != 0)
    return pg_err_set(err, errno == ENOENT ? PG_E_NOT_FOUND : PG_E_IO, dir, PG_NO_OFFSET,
                      "cannot stat: %s", strerror(errno));
  PG_FAIL_IF(!S_ISDIR(st.st_mode), err, PG_E_RECORD, dir, PG_NO_OFFSET,
             "not a record folder: not a folder");
  int rc = PG_OK;
  if (!(r->dir = dup_str(dir))) {
    rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
  } else {
    for (size_t l = strlen(r->dir); l > 1 && r->dir[l - 1] == '/'; l--) r->dir[l - 1] = '\0';
    if (!(r->code_path = join(r->dir, PG_RECORD_CODE_NAME)))
      rc = pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate");
  }
  if (rc == PG_OK) rc = open_code(r, err);
  if (rc == PG_OK) rc = open_model(r, model, err);
  if (rc == PG_OK && pg_add_overflow_u64(r->code_bytes, r->model_bytes, &r->total))
    rc = pg_err_set(err, PG_E_LIMIT, r->model_path, PG_NO_OFFSET, "code + model overflows");
  if (rc == PG_OK) rc = open_claims(r, err);
  if (rc != PG_OK) pg_record_free(r);
  return rc;
}

/* ---- claims against the count ---- */

/* "15,863,489". */
static const char *group(char buf[32], uint64_t v) {
  char t[32];
  const int n = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
  size_t o = 0;
  for (int i = 0; i < n; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = t[i];
  }
  buf[o] = '\0';
  return buf;
}

/* The shortest %g form that reads back as d, with ".0" added when it looks like an integer
 * (the way Python writes a float). */
static void fmt_real(char *buf, size_t cap, double d) {
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  if (!strpbrk(buf, ".eEnN")) {
    const size_t l = strlen(buf);
    if (l + 2 < cap) memcpy(buf + l, ".0", 3);
  }
}

/* 1 when the claim is exactly the whole number v. */
static int claim_is(const pg_claim *c, uint64_t v) {
  if (c->is_integer) return c->integer >= 0 && (uint64_t)c->integer == v;
  const double d = c->value;
  return d >= 0 && d < 18446744073709551616.0 && d == floor(d) && (uint64_t)d == v;
}

/* "1,234 bytes above" / "0.5 bytes below": how far the claim is from v (claim != v). */
static void fmt_gap(char *buf, size_t cap, const pg_claim *c, uint64_t v) {
  char g[32];
  if (c->is_integer && c->integer >= 0) {
    const uint64_t u = (uint64_t)c->integer;
    const uint64_t gap = u > v ? u - v : v - u;
    snprintf(buf, cap, "%s byte%s %s", group(g, gap), gap == 1 ? "" : "s",
             u > v ? "above" : "below");
  } else {
    const double d = c->value - (double)v;
    char r[40];
    if (d == floor(d) && fabs(d) < 1e18)
      group(r, (uint64_t)fabs(d));
    else
      fmt_real(r, sizeof r, fabs(d));
    snprintf(buf, cap, "%s byte%s %s", r, fabs(d) == 1 ? "" : "s", d > 0 ? "above" : "below");
  }
}

static const char *base_name(const char *p) {
  const char *s = p ? strrchr(p, '/') : NULL;
  return s ? s + 1 : (p ? p : "");
}

#define FTEXT(...) snprintf(f->text, sizeof f->text, __VA_ARGS__)

/* The code count said in words, with the raw size and folded CRLFs when they differ. */
static void code_words(char *buf, size_t cap, const pg_record *r) {
  char a[32], b[32];
  if (r->crlf)
    snprintf(buf, cap, "train_gpt.py counts %s as Python reads it (%s on disk, %llu CRLF folded)",
             group(a, r->code_bytes), group(b, r->code_file_bytes),
             (unsigned long long)r->crlf);
  else
    snprintf(buf, cap, "train_gpt.py counts %s as Python reads it", group(a, r->code_bytes));
}

static const char MINIFIED[] =
    "the record may count a computed minified and compressed code wrapper, which is not shipped "
    "(not reproducible here)";

static void cmp_total(const pg_record *r, const pg_claim *c, pg_record_finding *f) {
  char t[32], cb[32], mb[32], x[32], gap[64];
  group(t, r->total);
  group(cb, r->code_bytes);
  group(mb, r->model_bytes);
  f->computed = (double)r->total;
  if (claim_is(c, r->total)) {
    f->kind = PG_FIND_AGREES;
    FTEXT("computed %s = code %s + model %s", t, cb, mb);
    return;
  }
  f->kind = PG_FIND_DIFFERS;
  fmt_gap(gap, sizeof gap, c, r->total);
  if (r->crlf && claim_is(c, r->code_file_bytes + r->model_bytes))
    FTEXT("computed %s = code %s + model %s; the claim counts train_gpt.py's %s bytes on disk, "
          "but Python's text mode folds its %llu CRLF pairs",
          t, cb, mb, group(x, r->code_file_bytes), (unsigned long long)r->crlf);
  else if (claim_is(c, r->model_bytes))
    FTEXT("computed %s = code %s + model %s; the claim is the model alone", t, cb, mb);
  else if (!r->self_extractor && c->value > (double)r->model_bytes &&
           c->value < (double)r->total)
    FTEXT("computed %s = code %s + model %s; the claim (%s) leaves less for the code than "
          "train_gpt.py counts: %s",
          t, cb, mb, gap, MINIFIED);
  else
    FTEXT("computed %s = code %s + model %s; the claim is %s", t, cb, mb, gap);
}

static void cmp_code(const pg_record *r, const pg_claim *c, pg_record_finding *f) {
  char words[160], gap[64];
  code_words(words, sizeof words, r);
  f->computed = (double)r->code_bytes;
  if (claim_is(c, r->code_bytes)) {
    f->kind = PG_FIND_AGREES;
    FTEXT("%s", words);
    return;
  }
  f->kind = PG_FIND_DIFFERS;
  fmt_gap(gap, sizeof gap, c, r->code_bytes);
  if (r->crlf && claim_is(c, r->code_file_bytes))
    FTEXT("%s; the claim is the size on disk, before text mode folds CRLF", words);
  else if (!r->self_extractor && c->value >= 0 && c->value < (double)r->code_bytes)
    FTEXT("%s; the claim is %s: %s", words, gap, MINIFIED);
  else
    FTEXT("%s; the claim is %s", words, gap);
}

static void cmp_max(const pg_record *r, const pg_claim *c, pg_record_finding *f) {
  char t[32], gap[64];
  group(t, r->total);
  f->computed = (double)r->total;
  if (claim_is(c, r->total)) {
    f->kind = PG_FIND_AGREES;
    FTEXT("equals this folder's count %s", t);
    return;
  }
  fmt_gap(gap, sizeof gap, c, r->total);
  if (c->value > (double)r->total) {
    f->kind = PG_FIND_INFO;
    FTEXT("a maximum over runs; this folder's count %s is within it (the claim is %s)", t, gap);
  } else if (!r->self_extractor && c->value > (double)r->model_bytes) {
    f->kind = PG_FIND_DIFFERS;
    FTEXT("this folder's count %s exceeds the claimed maximum (the claim is %s): %s", t, gap,
          MINIFIED);
  } else {
    f->kind = PG_FIND_DIFFERS;
    FTEXT("this folder's count %s exceeds the claimed maximum (the claim is %s)", t, gap);
  }
}

static void cmp_mean(const pg_record *r, const pg_claim *c, pg_record_finding *f) {
  char t[32], gap[64];
  group(t, r->total);
  f->computed = (double)r->total;
  if (claim_is(c, r->total)) {
    f->kind = PG_FIND_AGREES;
    FTEXT("equals this folder's count %s", t);
    return;
  }
  fmt_gap(gap, sizeof gap, c, r->total);
  f->kind = PG_FIND_INFO;
  FTEXT("a mean over runs, not checkable from one folder; this folder's count is %s (the claim "
        "is %s)",
        t, gap);
}

static void cmp_model(const pg_record *r, const pg_claim *c, pg_record_finding *f) {
  char m[32], gap[64];
  group(m, r->model_bytes);
  f->computed = (double)r->model_bytes;
  if (claim_is(c, r->model_bytes)) {
    f->kind = PG_FIND_AGREES;
    FTEXT("equals the size of %s", base_name(r->model_path));
    return;
  }
  fmt_gap(gap, sizeof gap, c, r->model_bytes);
  f->kind = PG_FIND_DIFFERS;
  FTEXT("%s holds %s bytes; the claim is %s", base_name(r->model_path), m, gap);
}

int pg_record_compare(const pg_record *r, pg_record_finding *out) {
  if (!r || !out) return 0;
  int n = 0;
  for (int id = 0; id < PG_CLAIM_COUNT; id++) {
    const pg_claim *c = &r->claims.num[id];
    if (!c->present) continue;
    pg_record_finding *f = &out[n++];
    memset(f, 0, sizeof *f);
    f->claim = id;
    f->claimed = c->value;
    switch (id) {
    case PG_CLAIM_BYTES_TOTAL: cmp_total(r, c, f); break;
    case PG_CLAIM_BYTES_CODE: cmp_code(r, c, f); break;
    case PG_CLAIM_ARTIFACT_BYTES_MAX: cmp_max(r, c, f); break;
    case PG_CLAIM_ARTIFACT_BYTES_MEAN: cmp_mean(r, c, f); break;
    case PG_CLAIM_BYTES_MODEL_INT8_ZLIB:
    case PG_CLAIM_BYTES_MODEL_INT6_ZSTD: cmp_model(r, c, f); break;
    default:
      f->kind = PG_FIND_INFO;
      f->computed = NAN;
      FTEXT("a score; counting a folder does not re-evaluate the model");
      break;
    }
  }
  return n;
}
