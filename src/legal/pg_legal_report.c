/* pg_legal_report.c: the report of pglegal (pg_legal.h): its checks and findings, the JSON and
 * Markdown forms (spec/legal.md §6, §7), and the reader of the record analyzer's JSON, which is
 * outside input: every field is checked before anything is merged. */
#include "pg_legal.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_json.h"

static const struct {
  const char *id, *name, *spec;
} CHECKS[PG_LEGAL_NCHECKS] = {
    {"L1", "causality", "spec/legal.md §4.1"},
    {"L2", "normalisation", "spec/legal.md §4.2"},
    {"L3", "score-before-update", "spec/legal.md §4.3"},
    {"L4", "single-pass", "spec/legal.md §4.4"},
    {"L5", "accounting", "spec/legal.md §4.5"},
    {"L6", "provenance", "spec/legal.md §4.6"},
    {"L7", "time", "spec/legal.md §4.7"},
    {"L8", "reproduction", "spec/legal.md §4.8"},
};

static const char *VERDICTS[] = {"dead", "pass", "skip", "error", "finding"};
static const char *SEVERITIES[] = {"info", "warning", "illegal"};

const char *pg_legal_verdict_name(int v) {
  return v >= 0 && v <= PG_LEGAL_FINDING ? VERDICTS[v] : "?";
}
int pg_legal_verdict_parse(const char *s) {
  for (int i = 0; i <= PG_LEGAL_FINDING; i++)
    if (!strcmp(s, VERDICTS[i])) return i;
  return -1;
}
const char *pg_legal_severity_name(int s) {
  return s >= 0 && s <= PG_LEGAL_ILLEGAL ? SEVERITIES[s] : "?";
}
int pg_legal_severity_parse(const char *s) {
  for (int i = 0; i <= PG_LEGAL_ILLEGAL; i++)
    if (!strcmp(s, SEVERITIES[i])) return i;
  return -1;
}

static char *vfmt(const char *fmt, va_list ap) {
  va_list aq;
  va_copy(aq, ap);
  int n = vsnprintf(NULL, 0, fmt, aq);
  va_end(aq);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

int pg_legal_report_init(pg_legal_report *r, const char *kind, const char *path, pg_err *err) {
  memset(r, 0, sizeof *r);
  r->input_kind = strdup(kind ? kind : "artifact");
  r->input_path = strdup(path ? path : "");
  int bad = !r->input_kind || !r->input_path;
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    pg_legal_check *c = &r->checks[i];
    memcpy(c->id, CHECKS[i].id, 3);
    c->name = CHECKS[i].name;
    c->spec = CHECKS[i].spec;
    c->verdict = PG_LEGAL_SKIP;
    if (!(c->summary = strdup("not run"))) bad = 1;
  }
  if (bad) {
    pg_legal_report_free(r);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the report");
  }
  return PG_OK;
}

static void finding_free(pg_legal_finding *f) {
  free(f->title);
  free(f->file);
  for (size_t i = 0; i < f->nevidence; i++) free(f->evidence[i]);
  free(f->evidence);
}

void pg_legal_report_free(pg_legal_report *r) {
  if (!r) return;
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    pg_legal_check *c = &r->checks[i];
    free(c->summary);
    for (size_t k = 0; k < c->nfindings; k++) finding_free(&c->findings[k]);
    free(c->findings);
  }
  free(r->input_kind);
  free(r->input_path);
  memset(r, 0, sizeof *r);
}

int pg_legal_report_exit(const pg_legal_report *r) {
  int err = r->incomplete;
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    if (r->checks[i].verdict == PG_LEGAL_FINDING) return 1;
    if (r->checks[i].verdict == PG_LEGAL_ERROR) err = 1;
  }
  return err ? 2 : 0;
}

pg_legal_check *pg_legal_report_check(pg_legal_report *r, const char *id) {
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++)
    if (!strcmp(r->checks[i].id, id)) return &r->checks[i];
  return NULL;
}

int pg_legal_set(pg_legal_check *c, int verdict, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  if (!s) return PG_E_NOMEM;
  free(c->summary);
  c->summary = s;
  c->verdict = verdict;
  return PG_OK;
}

static int push_finding(pg_legal_check *c, pg_legal_finding *f) {
  pg_legal_finding *g = realloc(c->findings, (c->nfindings + 1) * sizeof *g);
  if (!g) return PG_E_NOMEM;
  c->findings = g;
  g[c->nfindings++] = *f;
  return PG_OK;
}

int pg_legal_add(pg_legal_check *c, int severity, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pg_legal_finding f = {.severity = severity, .reachable = 1};
  f.title = vfmt(fmt, ap);
  va_end(ap);
  if (!f.title || push_finding(c, &f)) {
    free(f.title);
    return PG_E_NOMEM;
  }
  return PG_OK;
}

static int push_line(char ***v, size_t *n, char *s) {
  char **w = realloc(*v, (*n + 1) * sizeof *w);
  if (!w) return PG_E_NOMEM;
  *v = w;
  w[(*n)++] = s;
  return PG_OK;
}

int pg_legal_evidence(pg_legal_check *c, const char *fmt, ...) {
  if (!c->nfindings) return PG_E_ARG;
  pg_legal_finding *f = &c->findings[c->nfindings - 1];
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  if (!s || push_line(&f->evidence, &f->nevidence, s)) {
    free(s);
    return PG_E_NOMEM;
  }
  return PG_OK;
}

/* ---- JSON out (spec/legal.md §6) ------------------------------------------------------------ */

/* A text as JSON: a string when it is UTF-8 (jansson checks), else {"hex", "display"} as every
 * --json document writes outside bytes (spec/cli.md). */
static json_t *text_json(const char *s) {
  if (!s) return json_null();
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *hex = malloc(2 * n + 1), *disp = malloc(4 * n + 1);
  if (!hex || !disp) {
    free(hex);
    free(disp);
    return NULL;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    sprintf(hex + 2 * i, "%02x", (unsigned char)s[i]);
    unsigned char b = (unsigned char)s[i];
    if (b >= 0x20 && b < 0x7f) disp[k++] = (char)b;
    else k += (size_t)sprintf(disp + k, "\\x%02x", b);
  }
  hex[2 * n] = '\0';
  disp[k] = '\0';
  j = json_pack("{s:s, s:s}", "hex", hex, "display", disp);
  free(hex);
  free(disp);
  return j;
}

static json_t *finding_json(const pg_legal_finding *f) {
  json_t *ev = json_array();
  for (size_t i = 0; ev && i < f->nevidence; i++)
    json_array_append_new(ev, text_json(f->evidence[i]));
  json_t *o = json_object();
  if (!o || !ev) {
    json_decref(o);
    json_decref(ev);
    return NULL;
  }
  json_object_set_new(o, "severity", json_string(pg_legal_severity_name(f->severity)));
  json_object_set_new(o, "title", text_json(f->title));
  json_object_set_new(o, "evidence", ev);
  json_object_set_new(o, "file", text_json(f->file));
  json_object_set_new(o, "line", f->line > 0 ? json_integer(f->line) : json_null());
  json_object_set_new(o, "reachable", json_boolean(f->reachable));
  return o;
}

int pg_legal_report_json(const pg_legal_report *r, const char *version, char **out,
                         pg_err *err) {
  *out = NULL;
  json_t *checks = json_array(), *root = json_object();
  for (int i = 0; checks && i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    json_t *fs = json_array();
    for (size_t k = 0; fs && k < c->nfindings; k++)
      json_array_append_new(fs, finding_json(&c->findings[k]));
    json_t *o = json_object();
    if (o && fs) {
      json_object_set_new(o, "id", json_string(c->id));
      json_object_set_new(o, "name", json_string(c->name));
      json_object_set_new(o, "verdict", json_string(pg_legal_verdict_name(c->verdict)));
      json_object_set_new(o, "summary", text_json(c->summary));
      json_object_set_new(o, "spec", json_string(c->spec));
      json_object_set_new(o, "findings", fs);
      fs = NULL;
    }
    json_decref(fs);
    json_array_append_new(checks, o);
  }
  char *s = NULL;
  if (root && checks) {
    json_object_set_new(root, "tool", json_string("pglegal"));
    json_object_set_new(root, "version", json_string(version ? version : PG_VERSION));
    json_object_set_new(root, "input", json_pack("{s:s, s:o}", "kind", r->input_kind, "path",
                                                 text_json(r->input_path)));
    json_object_set_new(root, "checks", checks);
    checks = NULL;
    json_object_set_new(root, "exit", json_integer(pg_legal_report_exit(r)));
    s = json_dumps(root, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER |
                             JSON_REAL_PRECISION(17));
  }
  json_decref(checks);
  json_decref(root);
  if (!s) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot build the JSON report");
  size_t n = strlen(s);
  char *t = realloc(s, n + 2);
  if (!t) {
    free(s);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot build the JSON report");
  }
  t[n] = '\n', t[n + 1] = '\0';
  *out = t;
  return PG_OK;
}

/* ---- Markdown (spec/legal.md §7) ------------------------------------------------------------ */

typedef struct sbuf {
  char *s;
  size_t n, cap;
  int bad;
} sbuf;

static void sb_put(sbuf *b, const char *t, size_t n) {
  if (b->bad) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->bad = 1;
      return;
    }
    b->s = s, b->cap = cap;
  }
  memcpy(b->s + b->n, t, n);
  b->n += n;
  b->s[b->n] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  if (!s) {
    b->bad = 1;
    return;
  }
  sb_put(b, s, strlen(s));
  free(s);
}

/* Outside text in Markdown: one line, control bytes as \xNN, and the characters that would make
 * it markup (| ` * _ < > [ ] #) escaped with a backslash, so a name cannot forge a row or a
 * verdict. */
static void sb_md(sbuf *b, const char *s) {
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    char t[8];
    if (*p < 0x20 || *p == 0x7f) {
      snprintf(t, sizeof t, "\\x%02x", *p);
      sb_put(b, t, 4);
    } else if (strchr("|`*_<>[]#\\", *p)) {
      t[0] = '\\', t[1] = (char)*p;
      sb_put(b, t, 2);
    } else {
      sb_put(b, (const char *)p, 1);
    }
  }
}

int pg_legal_report_markdown(const pg_legal_report *r, const char *version, char **out,
                             pg_err *err) {
  *out = NULL;
  sbuf b = {0};
  static const char *const EXITS[] = {"clean", "findings", "could not check"};
  const int x = pg_legal_report_exit(r);
  sb_printf(&b, "## pglegal report\n\n%s `", r->input_kind);
  sb_md(&b, r->input_path);
  sb_printf(&b, "`: **%s** (exit %d; pglegal %s, spec/legal.md)\n\n", EXITS[x], x,
            version ? version : PG_VERSION);
  sb_printf(&b, "| check | name | verdict | summary |\n|---|---|---|---|\n");
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    sb_printf(&b, "| %s | %s | %s%s%s | ", c->id, c->name,
              c->verdict == PG_LEGAL_FINDING ? "**" : "", pg_legal_verdict_name(c->verdict),
              c->verdict == PG_LEGAL_FINDING ? "**" : "");
    sb_md(&b, c->summary);
    sb_printf(&b, " |\n");
  }
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    if (!c->nfindings) continue;
    sb_printf(&b, "\n### %s %s: %s (%s)\n", c->id, c->name, pg_legal_verdict_name(c->verdict),
              c->spec);
    for (size_t k = 0; k < c->nfindings; k++) {
      const pg_legal_finding *f = &c->findings[k];
      sb_printf(&b, "\n- **%s**: ", pg_legal_severity_name(f->severity));
      sb_md(&b, f->title);
      if (f->file) {
        sb_printf(&b, " (`");
        sb_md(&b, f->file);
        if (f->line > 0) sb_printf(&b, ":%ld", f->line);
        sb_printf(&b, "`%s)", f->reachable ? "" : ", not reachable");
      }
      sb_printf(&b, "\n");
      for (size_t e = 0; e < f->nevidence; e++) {
        sb_printf(&b, "  - ");
        sb_md(&b, f->evidence[e]);
        sb_printf(&b, "\n");
      }
    }
  }
  if (b.bad) {
    free(b.s);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot build the Markdown report");
  }
  *out = b.s;
  return PG_OK;
}

/* ---- the record analyzer's JSON (spec/legal.md §6.2) ---------------------------------------- */

#define BAD(...) pg_err_set(err, PG_E_MALFORMED, name, PG_NO_OFFSET, __VA_ARGS__)

/* A text field: a string (NUL-free, at most PG_LEGAL_MAX_TEXT bytes), or null when allowed. */
static int get_text(json_t *o, const char *key, int nullable, const char **out, const char *name,
                    const char *where, pg_err *err) {
  json_t *v = json_object_get(o, key);
  *out = NULL;
  if (!v) return BAD("%s: no \"%s\"", where, key);
  if (json_is_null(v) && nullable) return PG_OK;
  if (!json_is_string(v)) return BAD("%s: \"%s\" is not a string", where, key);
  size_t n = json_string_length(v);
  if (n > PG_LEGAL_MAX_TEXT)
    return pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET, "%s: \"%s\" longer than %d bytes",
                      where, key, PG_LEGAL_MAX_TEXT);
  if (strlen(json_string_value(v)) != n) return BAD("%s: \"%s\" holds a NUL", where, key);
  *out = json_string_value(v);
  return PG_OK;
}

/* Check one CHECK object; *idx its index among L1..L8. */
static int check_check(json_t *c, size_t i, int *idx, size_t *total, const char *name,
                       pg_err *err) {
  char where[64];
  snprintf(where, sizeof where, "checks[%zu]", i);
  if (!json_is_object(c)) return BAD("%s is not an object", where);
  const char *key;
  json_t *v;
  json_object_foreach(c, key, v) {
    if (strcmp(key, "id") && strcmp(key, "name") && strcmp(key, "verdict") &&
        strcmp(key, "summary") && strcmp(key, "spec") && strcmp(key, "findings"))
      return BAD("%s: unknown key", where);
  }
  const char *id, *nm, *verdict, *summary, *spec;
  PG_TRY(get_text(c, "id", 0, &id, name, where, err));
  PG_TRY(get_text(c, "name", 0, &nm, name, where, err));
  PG_TRY(get_text(c, "verdict", 0, &verdict, name, where, err));
  PG_TRY(get_text(c, "summary", 0, &summary, name, where, err));
  PG_TRY(get_text(c, "spec", 0, &spec, name, where, err));
  *idx = -1;
  for (int k = 0; k < PG_LEGAL_NCHECKS; k++)
    if (!strcmp(id, CHECKS[k].id)) *idx = k;
  if (*idx < 0) return BAD("%s: unknown check id", where);
  if (strcmp(nm, CHECKS[*idx].name)) return BAD("%s: the name of %s is \"%s\"", where, id,
                                                CHECKS[*idx].name);
  if (pg_legal_verdict_parse(verdict) < 0) return BAD("%s: unknown verdict", where);
  if (strchr(summary, '\n')) return BAD("%s: the summary is not one line", where);
  json_t *fs = json_object_get(c, "findings");
  if (!json_is_array(fs)) return BAD("%s: \"findings\" is not an array", where);
  if (*total + json_array_size(fs) > PG_LEGAL_MAX_FINDINGS)
    return pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET, "more than %d findings",
                      PG_LEGAL_MAX_FINDINGS);
  *total += json_array_size(fs);
  size_t k;
  json_t *f;
  json_array_foreach(fs, k, f) {
    snprintf(where, sizeof where, "checks[%zu].findings[%zu]", i, k);
    if (!json_is_object(f)) return BAD("%s is not an object", where);
    json_object_foreach(f, key, v) {
      if (strcmp(key, "severity") && strcmp(key, "title") && strcmp(key, "evidence") &&
          strcmp(key, "file") && strcmp(key, "line") && strcmp(key, "reachable"))
        return BAD("%s: unknown key", where);
    }
    const char *sev, *title, *file;
    PG_TRY(get_text(f, "severity", 0, &sev, name, where, err));
    PG_TRY(get_text(f, "title", 0, &title, name, where, err));
    PG_TRY(get_text(f, "file", 1, &file, name, where, err));
    if (pg_legal_severity_parse(sev) < 0) return BAD("%s: unknown severity", where);
    if (strchr(title, '\n')) return BAD("%s: the title is not one line", where);
    json_t *ln = json_object_get(f, "line");
    if (!ln) return BAD("%s: no \"line\"", where);
    if (!json_is_null(ln) && (!json_is_integer(ln) || json_integer_value(ln) < 1 ||
                              json_integer_value(ln) > 100000000))
      return BAD("%s: \"line\" is not null or a line number", where);
    if (!json_is_boolean(json_object_get(f, "reachable")))
      return BAD("%s: \"reachable\" is not true or false", where);
    json_t *ev = json_object_get(f, "evidence");
    if (!json_is_array(ev)) return BAD("%s: \"evidence\" is not an array", where);
    if (json_array_size(ev) > PG_LEGAL_MAX_EVIDENCE)
      return pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET, "%s: more than %d evidence lines",
                        where, PG_LEGAL_MAX_EVIDENCE);
    size_t e;
    json_t *line;
    json_array_foreach(ev, e, line) {
      if (!json_is_string(line)) return BAD("%s: evidence[%zu] is not a string", where, e);
      if (json_string_length(line) > PG_LEGAL_MAX_TEXT)
        return pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET,
                          "%s: evidence[%zu] longer than %d bytes", where, e, PG_LEGAL_MAX_TEXT);
      if (strlen(json_string_value(line)) != json_string_length(line))
        return BAD("%s: evidence[%zu] holds a NUL", where, e);
    }
  }
  return PG_OK;
}

/* Append the (checked) findings of c to dst. */
static int merge_findings(pg_legal_check *dst, json_t *fs) {
  size_t k;
  json_t *f;
  json_array_foreach(fs, k, f) {
    pg_legal_finding g = {0};
    g.severity = pg_legal_severity_parse(json_string_value(json_object_get(f, "severity")));
    g.title = strdup(json_string_value(json_object_get(f, "title")));
    json_t *file = json_object_get(f, "file"), *ln = json_object_get(f, "line");
    if (json_is_string(file)) g.file = strdup(json_string_value(file));
    g.line = json_is_integer(ln) ? (long)json_integer_value(ln) : 0;
    g.reachable = json_is_true(json_object_get(f, "reachable"));
    int bad = !g.title || (json_is_string(file) && !g.file);
    size_t e;
    json_t *line;
    json_array_foreach(json_object_get(f, "evidence"), e, line) {
      char *s = bad ? NULL : strdup(json_string_value(line));
      if (!s || push_line(&g.evidence, &g.nevidence, s)) {
        free(s);
        bad = 1;
      }
    }
    if (bad || push_finding(dst, &g)) {
      finding_free(&g);
      return PG_E_NOMEM;
    }
  }
  return PG_OK;
}

int pg_legal_merge_json(pg_legal_report *r, const char *json, size_t len, const char *name,
                        pg_err *err) {
  if (len > PG_LEGAL_JSON_MAX)
    return pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET, "%zu bytes of JSON, limit %zu", len,
                      PG_LEGAL_JSON_MAX);
  static const pg_json_caps caps = {PG_LEGAL_JSON_VALUES, PG_JSON_DOC_DEPTH};
  PG_TRY(pg_json_shape_check(json, len, &caps, name, 0, err));
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return pg_err_set(err, PG_E_JSON, name, (uint64_t)je.position, "malformed JSON: %s",
                      je.text);
  int rc = PG_OK;
  int seen[PG_LEGAL_NCHECKS] = {0}, idx[64];
  size_t total = 0;
  json_t *checks = json_object_get(root, "checks"), *facts = json_object_get(root, "facts");
  const char *key;
  json_t *v;
  if (!json_is_object(root)) {
    rc = BAD("the document is not an object");
    goto done;
  }
  json_object_foreach(root, key, v) {
    if (strcmp(key, "checks") && strcmp(key, "facts")) {
      rc = BAD("unknown key at the top level");
      goto done;
    }
  }
  if (!json_is_array(checks)) {
    rc = BAD("\"checks\" is not an array");
    goto done;
  }
  if (facts && !json_is_object(facts)) {
    rc = BAD("\"facts\" is not an object");
    goto done;
  }
  if (json_array_size(checks) > PG_LEGAL_NCHECKS) {
    rc = BAD("more than %d checks", PG_LEGAL_NCHECKS);
    goto done;
  }
  size_t i;
  json_t *c;
  json_array_foreach(checks, i, c) {
    if ((rc = check_check(c, i, &idx[i], &total, name, err))) goto done;
    if (seen[idx[i]]++) {
      rc = BAD("checks[%zu]: %s given twice", i, CHECKS[idx[i]].id);
      goto done;
    }
  }
  json_t *claim = facts ? json_object_get(facts, "claimed_val_bpb") : NULL;
  if (claim && !json_is_null(claim) && (!json_is_number(claim) ||
                                        !isfinite(json_number_value(claim)))) {
    rc = BAD("facts.claimed_val_bpb is not a number");
    goto done;
  }
  /* checked whole: merge */
  json_array_foreach(checks, i, c) {
    pg_legal_check *d = &r->checks[idx[i]];
    const int vin = pg_legal_verdict_parse(json_string_value(json_object_get(c, "verdict")));
    const char *sin = json_string_value(json_object_get(c, "summary"));
    const int fresh = !strcmp(d->summary, "not run") && !d->nfindings;
    int v2 = fresh ? vin : vin > d->verdict ? vin : d->verdict;
    char *sum = NULL;
    if (fresh) sum = strdup(sin);
    else if ((sum = malloc(strlen(d->summary) + strlen(sin) + 32)))
      sprintf(sum, "artifact: %s; record: %s", d->summary, sin);
    if (!sum || merge_findings(d, json_object_get(c, "findings"))) {
      free(sum);
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot merge the record checks");
      goto done;
    }
    free(d->summary);
    d->summary = sum;
    d->verdict = v2;
  }
  if (claim && json_is_number(claim)) {
    r->has_claim = 1;
    r->claimed_bpb = json_number_value(claim);
  }
done:
  json_decref(root);
  return rc;
}
