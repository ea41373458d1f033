/* pg_submit.c: write a challenge record folder (spec/submit.md). Everything is checked and every
 * figure computed before the first byte is written; the files go into a temporary folder beside
 * the destination, which is renamed into place at the end, so a failure leaves nothing behind. */
#include "pg_submit.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_account.h"
#include "pg_container.h"
#include "pg_io.h"
#include "pg_json.h"
#include "pg_receipt.h"
#include "pg_record.h"

/* ---- a growing string ---------------------------------------------------------------------- */

typedef struct sb {
  char *p;
  size_t n, cap;
  int oom;
} sb;

static void sbf(sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sbf(sb *s, const char *fmt, ...) {
  if (s->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
    va_end(ap);
    if (k < 0) { s->oom = 1; return; }
    if (s->p && s->n + (size_t)k < s->cap) { s->n += (size_t)k; return; }
    size_t cap = (s->cap ? s->cap * 2 : 4096) + (size_t)k;
    char *q = realloc(s->p, cap);
    if (!q) { s->oom = 1; return; }
    s->p = q;
    s->cap = cap;
  }
}

/* Text for XML or Markdown: markup characters escaped, control characters dropped. */
static void sb_text(sb *s, const char *t, int xml) {
  for (; t && *t; t++) {
    unsigned char ch = (unsigned char)*t;
    if (ch < 0x20 || ch == 0x7f) sbf(s, " ");
    else if (xml && ch == '&') sbf(s, "&amp;");
    else if (xml && ch == '<') sbf(s, "&lt;");
    else if (xml && ch == '>') sbf(s, "&gt;");
    else if (xml && ch == '"') sbf(s, "&quot;");
    else if (!xml && (ch == '|' || ch == '<' || ch == '>' || ch == '`')) sbf(s, "\\%c", ch);
    else sbf(s, "%c", ch);
  }
}

static const char *fmt_u64(char *buf, uint64_t v) {
  char raw[32];
  int n = snprintf(raw, sizeof raw, "%llu", (unsigned long long)v), o = 0;
  for (int i = 0; i < n; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = raw[i];
  }
  buf[o] = '\0';
  return buf;
}

/* ---- pictures ------------------------------------------------------------------------------ */

static const char *const PALETTE[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                                      "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#86bcb6"};

typedef struct tm_item {
  char label[96];
  double value;
  const char *color;
} tm_item;

static int tm_desc(const void *a, const void *b) {
  double x = ((const tm_item *)a)->value, y = ((const tm_item *)b)->value;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Split the items in two halves of about equal weight, along the longer side, recursively. */
static void treemap(sb *s, const tm_item *it, size_t n, double x, double y, double w, double h) {
  double sum = 0;
  for (size_t i = 0; i < n; i++) sum += it[i].value;
  if (n == 0 || sum <= 0) return;
  if (n == 1) {
    char b[32];
    sbf(s, "<g><title>");
    sb_text(s, it->label, 1);
    sbf(s, ": %s bytes</title><rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
        "fill=\"%s\" stroke=\"#ffffff\" stroke-width=\"1\"/>",
        fmt_u64(b, (uint64_t)it->value), x, y, w, h, it->color);
    if (w > 70 && h > 30) {
      sbf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" fill=\"#ffffff\">", x + 4, y + 14);
      sb_text(s, it->label, 1);
      sbf(s, "</text><text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"#ffffff\">%s</text>",
          x + 4, y + 27, b);
    }
    sbf(s, "</g>\n");
    return;
  }
  size_t k = 1;
  double left = it[0].value;
  while (k < n - 1 && fabs(left + it[k].value - sum / 2) < fabs(left - sum / 2))
    left += it[k++].value;
  const double f = left / sum;
  if (w >= h) {
    treemap(s, it, k, x, y, w * f, h);
    treemap(s, it + k, n - k, x + w * f, y, w * (1 - f), h);
  } else {
    treemap(s, it, k, x, y, w, h * f);
    treemap(s, it + k, n - k, x, y + h * f, w, h * (1 - f));
  }
}

typedef struct series {
  const double *x, *y;
  size_t n;
  const char *color, *name;
} series;

/* One line chart in the box (x0, y0, w, h): axes with five ticks each, a polyline per series,
 * a legend. Points that are not finite are left out. */
static void chart(sb *s, double x0, double y0, double w, double h, const char *title,
                  const char *xlabel, const series *ser, size_t nser) {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (size_t k = 0; k < nser; k++)
    for (size_t i = 0; i < ser[k].n; i++) {
      if (!isfinite(ser[k].x[i]) || !isfinite(ser[k].y[i])) continue;
      xmin = fmin(xmin, ser[k].x[i]);
      xmax = fmax(xmax, ser[k].x[i]);
      ymin = fmin(ymin, ser[k].y[i]);
      ymax = fmax(ymax, ser[k].y[i]);
    }
  if (!isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (xmax <= xmin) xmax = xmin + 1;
  if (ymax <= ymin) ymin -= 0.5, ymax += 0.5;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  const double L = x0 + 64, R = x0 + w - 12, T = y0 + 28, B = y0 + h - 36;
  sbf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"13\" font-weight=\"bold\">", x0 + 64, y0 + 16);
  sb_text(s, title, 1);
  sbf(s, "</text>\n<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" "
      "stroke=\"#888888\"/>\n", L, T, R - L, B - T);
  for (int i = 0; i <= 4; i++) {
    const double fx = L + (R - L) * i / 4, fy = B - (B - T) * i / 4;
    sbf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" text-anchor=\"middle\">%.6g</text>\n",
        fx, B + 14, xmin + (xmax - xmin) * i / 4);
    sbf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" text-anchor=\"end\">%.5g</text>\n",
        L - 4, fy + 3, ymin + (ymax - ymin) * i / 4);
    sbf(s, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#eeeeee\"/>\n", L, fy,
        R, fy);
  }
  sbf(s, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" text-anchor=\"middle\">", (L + R) / 2,
      B + 30);
  sb_text(s, xlabel, 1);
  sbf(s, "</text>\n");
  for (size_t k = 0; k < nser; k++) {
    sbf(s, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", ser[k].color);
    for (size_t i = 0; i < ser[k].n; i++) {
      if (!isfinite(ser[k].x[i]) || !isfinite(ser[k].y[i])) continue;
      sbf(s, "%.2f,%.2f ", L + (R - L) * (ser[k].x[i] - xmin) / (xmax - xmin),
          B - (B - T) * (ser[k].y[i] - ymin) / (ymax - ymin));
    }
    sbf(s, "\"/>\n<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"%s\" "
        "text-anchor=\"end\">", R - 4, T + 12 + 12.0 * (double)k, ser[k].color);
    sb_text(s, ser[k].name, 1);
    sbf(s, "</text>\n");
  }
}

static void svg_open(sb *s, int w, int h) {
  sbf(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
      "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\">\n<rect width=\"%d\" height=\"%d\" "
      "fill=\"#ffffff\"/>\n", w, h, w, h, w, h);
}

/* ---- inputs -------------------------------------------------------------------------------- */

typedef struct run_in {
  pg_receipt r;
  json_t *protocol; /* the receipt's "protocol" object, as written */
  uint8_t *raw;
  size_t len;
} run_in;

typedef struct log_pts {
  double *sx, *sy, *vx, *vy; /* steps: (step, loss); validations: (step, bpb) */
  size_t ns, nv, caps, capv;
} log_pts;

static int push2(double **x, double **y, size_t *n, size_t *cap, double a, double b) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 256;
    double *nx = realloc(*x, c * sizeof *nx);
    if (!nx) return -1;
    *x = nx;
    double *ny = realloc(*y, c * sizeof *ny);
    if (!ny) return -1;
    *y = ny;
    *cap = c;
  }
  (*x)[*n] = a;
  (*y)[*n] = b;
  (*n)++;
  return 0;
}

/* The pgtrain --log lines (spec/train.md §7): {"event":"step",...} and {"event":"val",...}. */
static int read_log(log_pts *lp, const uint8_t *b, size_t len, const char *path, pg_err *err) {
  size_t i = 0;
  while (i < len) {
    size_t e = i;
    while (e < len && b[e] != '\n') e++;
    size_t k = i;
    while (k < e && (b[k] == ' ' || b[k] == '\t' || b[k] == '\r')) k++;
    if (k < e) {
      PG_TRY(pg_json_shape_check((const char *)b + i, e - i, &pg_json_doc_caps, path, i, err));
      json_error_t je;
      json_t *o = json_loadb((const char *)b + i, e - i, 0, &je);
      if (!o || !json_is_object(o)) {
        json_decref(o);
        return pg_err_set(err, PG_E_JSON, path, i, "not a JSON object on this line");
      }
      const char *ev = json_string_value(json_object_get(o, "event"));
      json_t *st = json_object_get(o, "step");
      json_t *v = json_object_get(o, ev && !strcmp(ev, "val") ? "bpb" : "loss");
      int bad = 0, oom = 0;
      if (ev && (!strcmp(ev, "step") || !strcmp(ev, "val"))) {
        if (!json_is_integer(st) || !json_is_number(v)) bad = 1;
        else if (!strcmp(ev, "step"))
          oom = push2(&lp->sx, &lp->sy, &lp->ns, &lp->caps, (double)json_integer_value(st),
                      json_number_value(v));
        else if (json_number_value(v) >= 0) /* pgtrain writes -1 when no bpb was measured */
          oom = push2(&lp->vx, &lp->vy, &lp->nv, &lp->capv, (double)json_integer_value(st),
                      json_number_value(v));
      }
      json_decref(o);
      if (oom) return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "out of memory");
      if (bad)
        return pg_err_set(err, PG_E_MALFORMED, path, i,
                          "a %s line without an integer step and a number", ev);
    }
    i = e + 1;
  }
  if (lp->ns == 0)
    return pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET,
                      "no {\"event\":\"step\"} line: not a pgtrain --log file");
  return PG_OK;
}

/* The bytes of train_gpt.py: the file given, else the artifact's CODE section of that name. */
static int read_code(const pg_submit_cfg *c, pg_artifact *a, uint8_t **code, size_t *len,
                     pg_err *err) {
  if (c->code) return pg_file_read_all(c->code, code, len, PG_RECORD_CODE_MAX, err);
  const uint32_t n = pg_artifact_code_count(a);
  for (uint32_t i = 0; i < n; i++) {
    const char *name;
    size_t nl;
    PG_TRY(pg_artifact_code(a, i, &name, &nl, NULL, NULL, NULL, err));
    if (nl != strlen(PG_RECORD_CODE_NAME) || memcmp(name, PG_RECORD_CODE_NAME, nl)) continue;
    const uint8_t *b;
    size_t bl;
    PG_TRY(pg_artifact_code(a, i, &name, &nl, &b, &bl, NULL, err));
    *code = malloc(bl ? bl : 1);
    if (!*code) return pg_err_set(err, PG_E_NOMEM, c->artifact, PG_NO_OFFSET, "out of memory");
    memcpy(*code, b, bl);
    *len = bl;
    return PG_OK;
  }
  return pg_err_set(err, PG_E_ARG, c->artifact, PG_NO_OFFSET,
                    "embeds no %s: give the script to ship with --code FILE",
                    PG_RECORD_CODE_NAME);
}

/* PG_OK when out may be created: it does not exist, or it is an empty folder. */
static int check_out(const char *out, pg_err *err) {
  struct stat st;
  if (lstat(out, &st) != 0) {
    if (errno == ENOENT) return PG_OK;
    return pg_err_set(err, PG_E_IO, out, PG_NO_OFFSET, "%s", strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(out);
    if (!d) return pg_err_set(err, PG_E_IO, out, PG_NO_OFFSET, "%s", strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
      if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    if (empty) return PG_OK;
  }
  return pg_err_set(err, PG_E_EXISTS, out, PG_NO_OFFSET,
                    "exists and is not an empty folder: nothing written");
}

/* ---- the documents ------------------------------------------------------------------------- */

static double rbpb(const pg_receipt *r) { return r->result.val_bpb; }

static void mean_std(const run_in *runs, size_t n, int bpb, double *mean, double *sd) {
  double m = 0, v = 0;
  for (size_t i = 0; i < n; i++) m += bpb ? rbpb(&runs[i].r) : runs[i].r.result.val_loss;
  m /= (double)n;
  for (size_t i = 0; i < n; i++) {
    double d = (bpb ? rbpb(&runs[i].r) : runs[i].r.result.val_loss) - m;
    v += d * d;
  }
  *mean = m;
  *sd = n > 1 ? sqrt(v / (double)(n - 1)) : 0;
}

static void run_key(const pg_submit_cfg *c, size_t i, char *buf, size_t cap) {
  if (c->seeds) snprintf(buf, cap, "%llu", (unsigned long long)c->seeds[i]);
  else snprintf(buf, cap, "run %zu", i + 1);
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void set_str(json_t *o, const char *k, const char *v) {
  if (v) json_object_set_new(o, k, json_string(v));
}

static char *submission_json(const pg_submit_cfg *c, const run_in *runs, uint64_t code_bytes,
                             uint64_t total, uint64_t art_bytes, uint64_t art_hash) {
  json_t *o = json_object();
  set_str(o, "name", c->name);
  set_str(o, "author", c->author);
  set_str(o, "github_id", c->github_id);
  set_str(o, "date", c->date);
  set_str(o, "blurb", c->blurb);
  double m, sd;
  mean_std(runs, c->nreceipts, 0, &m, &sd);
  json_object_set_new(o, "val_loss", jnum(m));
  if (c->nreceipts > 1) json_object_set_new(o, "val_loss_std", jnum(sd));
  mean_std(runs, c->nreceipts, 1, &m, &sd);
  json_object_set_new(o, "val_bpb", jnum(m));
  if (c->nreceipts > 1) json_object_set_new(o, "val_bpb_std", jnum(sd));
  if (c->seeds) {
    json_t *a = json_array();
    for (size_t i = 0; i < c->nreceipts; i++)
      json_array_append_new(a, json_integer((json_int_t)c->seeds[i]));
    json_object_set_new(o, "seeds", a);
  }
  if (c->seeds || c->nreceipts > 1) {
    json_t *res = json_object();
    for (size_t i = 0; i < c->nreceipts; i++) {
      const pg_receipt *r = &runs[i].r;
      char key[32], rn[32];
      run_key(c, i, key, sizeof key);
      snprintf(rn, sizeof rn, "receipt-%zu.json", i + 1);
      json_t *e = json_object();
      json_object_set_new(e, "val_loss", jnum(r->result.val_loss));
      json_object_set_new(e, "val_bpb", jnum(r->result.val_bpb));
      json_object_set_new(e, "artifact_bytes", json_integer((json_int_t)total));
      json_object_set_new(e, "protocol", json_incref(json_object_get(runs[i].protocol, "name")));
      json_object_set_new(e, "targets_scored", json_integer((json_int_t)r->result.scored));
      json_object_set_new(e, "partial", json_boolean(r->partial));
      json_object_set_new(e, "eval_time_s", jnum(r->result.seconds));
      json_object_set_new(e, "receipt", json_string(rn));
      json_object_set_new(res, key, e);
    }
    json_object_set_new(o, c->seeds ? "seed_results" : "run_results", res);
  }
  json_object_set_new(o, "bytes_total", json_integer((json_int_t)total));
  json_object_set_new(o, "bytes_code", json_integer((json_int_t)code_bytes));
  json_object_set_new(o, "bytes_model", json_integer((json_int_t)art_bytes));
  char h[20];
  snprintf(h, sizeof h, "%016llx", (unsigned long long)art_hash);
  json_object_set_new(o, "artifact_xxh64", json_string(h));
  json_object_set_new(o, "written_by", json_string("pgsubmit"));
  char *t = json_dumps(o, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER |
                              JSON_REAL_PRECISION(17));
  json_decref(o);
  char *nl = t ? realloc(t, strlen(t) + 2) : NULL; /* the file ends with a newline */
  if (!nl) free(t);
  else strcat(nl, "\n");
  return nl;
}

static void readme(sb *s, const pg_submit_cfg *c, const run_in *runs, const pg_account *acc,
                   uint64_t code_bytes, uint64_t total, uint64_t art_bytes, int has_log,
                   const int *has_chunks) {
  char b1[32], b2[32], b3[32], b4[32];
  sbf(s, "# ");
  sb_text(s, c->name ? c->name : "pgolf submission", 0);
  sbf(s, "\n\n");
  if (c->author) {
    sbf(s, "By ");
    sb_text(s, c->author, 0);
    if (c->date) { sbf(s, ", "); sb_text(s, c->date, 0); }
    sbf(s, ".\n\n");
  }
  if (c->blurb) { sb_text(s, c->blurb, 0); sbf(s, "\n\n"); }
  sbf(s, "## Results\n\n| run | val_loss | val_bpb | protocol | targets scored | partial |\n"
         "|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < c->nreceipts; i++) {
    const pg_receipt *r = &runs[i].r;
    char key[32];
    run_key(c, i, key, sizeof key);
    sbf(s, "| %s | %.8f | %.8f | ", key, r->result.val_loss, r->result.val_bpb);
    sb_text(s, json_string_value(json_object_get(runs[i].protocol, "name")), 0);
    sbf(s, " | %s | %s |\n", fmt_u64(b1, r->result.scored), r->partial ? "yes" : "no");
  }
  double ml, sl, mb, sdb;
  mean_std(runs, c->nreceipts, 0, &ml, &sl);
  mean_std(runs, c->nreceipts, 1, &mb, &sdb);
  if (c->nreceipts > 1)
    sbf(s, "| mean (std) | %.8f (%.5f) | %.8f (%.5f) | | | |\n", ml, sl, mb, sdb);
  sbf(s, "\nEach run's pgverify receipt is here as receipt-N.json (in the order above).\n");
  sbf(s, "\n## Bytes\n\nCounted as the challenge counts a record folder (`pgsize .`): "
         "train_gpt.py %s + %s %s = **%s** bytes of 16,000,000 (%s %s).\n\n",
      fmt_u64(b1, code_bytes), PG_SUBMIT_MODEL_NAME, fmt_u64(b2, art_bytes),
      fmt_u64(b3, total), total <= PG_DEFAULT_BUDGET ? "headroom" : "OVER BUDGET by",
      fmt_u64(b4, total <= PG_DEFAULT_BUDGET ? PG_DEFAULT_BUDGET - total
                                             : total - PG_DEFAULT_BUDGET));
  sbf(s, "The artifact's own account (`pgsize %s`): counted %s = model %s + code %s + "
         "tokenizer %s.\n\n| # | what | codec | raw | stored | share |\n"
         "|---|---|---|---|---|---|\n",
      PG_SUBMIT_MODEL_NAME, fmt_u64(b1, acc->counted), fmt_u64(b2, acc->model),
      fmt_u64(b3, acc->code_stored), fmt_u64(b4, acc->tokenizer_stored));
  const double fs = acc->file_size ? (double)acc->file_size : 1;
  sbf(s, "| - | header + table | - | - | %s | %.2f%% |\n", fmt_u64(b1, acc->frame),
      100.0 * (double)acc->frame / fs);
  for (uint32_t i = 0; i < acc->nsections; i++) {
    const pg_account_section *x = &acc->sections[i];
    char cb[48];
    pg_codec_spec_format(&x->codec, cb, sizeof cb);
    sbf(s, "| %u | ", x->index);
    sb_text(s, x->label, 0);
    sbf(s, " | %s | %s | %s | %.2f%% |\n", cb, fmt_u64(b1, x->raw), fmt_u64(b2, x->stored),
        100.0 * (double)x->stored / fs);
  }
  sbf(s, "\n![byte budget](budget.svg)\n\n## Protocol\n\n");
  for (size_t i = 0; i < c->nreceipts; i++) {
    char key[32];
    run_key(c, i, key, sizeof key);
    sbf(s, "%s: ", key);
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(runs[i].protocol, k, v) {
      char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(12));
      sbf(s, "%s`%s %s`", first ? "" : ", ", k, t ? t : "?");
      free(t);
      first = 0;
    }
    sbf(s, "; engine %s, %s tokens of validation read.\n\n", runs[i].r.engine,
        fmt_u64(b1, runs[i].r.tokens_read));
    if (has_chunks[i]) sbf(s, "![per-chunk bpb of %s](chunks-%zu.svg)\n\n", key, i + 1);
  }
  if (has_log) sbf(s, "## Training\n\n![training loss and val_bpb](train.svg)\n\n"
                      "The log is train_log.jsonl (pgtrain --log).\n");
}

static void budget_svg(sb *s, const pg_account *acc, uint64_t code_bytes, uint64_t total) {
  size_t n = 0;
  tm_item *it = calloc(acc->nsections + 3, sizeof *it);
  if (!it) { s->oom = 1; return; }
  snprintf(it[n].label, sizeof it[n].label, "train_gpt.py");
  it[n++].value = (double)code_bytes;
  snprintf(it[n].label, sizeof it[n].label, "header + table");
  it[n++].value = (double)acc->frame;
  for (uint32_t i = 0; i < acc->nsections; i++) {
    snprintf(it[n].label, sizeof it[n].label, "%.95s", acc->sections[i].label);
    it[n++].value = (double)acc->sections[i].stored;
  }
  qsort(it, n, sizeof *it, tm_desc);
  for (size_t i = 0; i < n; i++) it[i].color = PALETTE[i % 10];
  if (total < PG_DEFAULT_BUDGET) {
    snprintf(it[n].label, sizeof it[n].label, "headroom");
    it[n].color = "#d9d9d9";
    it[n++].value = (double)(PG_DEFAULT_BUDGET - total);
  }
  char b[32], b2[32];
  svg_open(s, 800, 560);
  sbf(s, "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">%s of %s bytes "
      "(%.3f%%)</text>\n", fmt_u64(b, total), fmt_u64(b2, PG_DEFAULT_BUDGET),
      100.0 * (double)total / (double)PG_DEFAULT_BUDGET);
  treemap(s, it, n, 10, 34, 780, 516);
  sbf(s, "</svg>\n");
  free(it);
}

/* The bpb of each chunk of a receipt, as a line with the run's overall figure beside it. */
static int chunks_svg(sb *s, const pg_receipt *r, const char *key) {
  const size_t n = r->result.nchunks;
  double *x = malloc((n + 2) * sizeof *x), *y = malloc((n + 2) * sizeof *y);
  if (!x || !y) { free(x); free(y); s->oom = 1; return 0; }
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    const pg_eval_chunk *ch = &r->result.chunks[i];
    if (ch->bytes <= 0) continue;
    x[m] = (double)(i + 1);
    y[m++] = ch->nats / ch->bytes / log(2.0);
  }
  double ax[2] = {1, (double)n}, ay[2] = {r->result.val_bpb, r->result.val_bpb};
  series ser[2] = {{x, y, m, "#4e79a7", "bpb of each chunk"},
                   {ax, ay, 2, "#e15759", "val_bpb of the run"}};
  char title[96];
  snprintf(title, sizeof title, "per-chunk bpb, %s", key);
  svg_open(s, 720, 360);
  chart(s, 0, 0, 720, 360, title, "chunk (in scoring order)", ser, 2);
  sbf(s, "</svg>\n");
  free(x);
  free(y);
  return 1;
}

static void train_svg(sb *s, const log_pts *lp) {
  svg_open(s, 720, 640);
  series a = {lp->sx, lp->sy, lp->ns, "#4e79a7", "training loss"};
  chart(s, 0, 0, 720, 320, "training loss", "step", &a, 1);
  series b = {lp->vx, lp->vy, lp->nv, "#59a14f", "val_bpb"};
  chart(s, 0, 320, 720, 320, "validation bpb", "step", &b, 1);
  sbf(s, "</svg>\n");
}

/* ---- the folder ---------------------------------------------------------------------------- */

static int put(const char *dir, const char *name, const void *b, size_t n, pg_err *err) {
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
    return pg_err_set(err, PG_E_ARG, dir, PG_NO_OFFSET, "path too long");
  FILE *f = fopen(path, "wb");
  if (!f) return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "%s", strerror(errno));
  int ok = fwrite(b, 1, n, f) == n;
  ok &= fclose(f) == 0;
  return ok ? PG_OK : pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "write failed");
}

static int put_sb(const char *dir, const char *name, sb *s, pg_err *err) {
  if (s->oom) return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "out of memory");
  int rc = put(dir, name, s->p, s->n, err);
  free(s->p);
  memset(s, 0, sizeof *s);
  return rc;
}

typedef struct state {
  pg_map art;
  int mapped;
  pg_artifact *a;
  pg_account acc;
  int accounted;
  uint8_t *code;
  size_t code_len;
  uint8_t *log;
  size_t log_len;
  log_pts lp;
  run_in *runs;
  size_t nruns;
  char *tmpdir;
  int slot;
} state;

static int write_all(const pg_submit_cfg *c, state *st, pg_err *err) {
  PG_FAIL_IF(!c || !c->artifact || !c->out || !c->out[0], err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pgsubmit needs an artifact and an output folder");
  PG_FAIL_IF(c->nreceipts == 0 || c->nreceipts > PG_SUBMIT_MAX_RECEIPTS, err, PG_E_ARG, NULL,
             PG_NO_OFFSET, "give 1 to %d receipts, got %zu", PG_SUBMIT_MAX_RECEIPTS,
             c->nreceipts);
  if (c->seeds)
    for (size_t i = 0; i < c->nreceipts; i++)
      for (size_t j = 0; j < i; j++)
        PG_FAIL_IF(c->seeds[i] == c->seeds[j], err, PG_E_DUPLICATE, NULL, PG_NO_OFFSET,
                   "seed %llu given twice", (unsigned long long)c->seeds[i]);
  PG_TRY(check_out(c->out, err));
  /* the artifact: its bytes, hash and account */
  PG_TRY(pg_file_map(&st->art, c->artifact, err));
  st->mapped = 1;
  const uint64_t art_bytes = st->art.size, art_hash = XXH64(st->art.data, st->art.size, 0);
  PG_TRY(pg_artifact_open(&st->a, c->artifact, NULL, err));
  PG_TRY(pg_account_artifact(&st->acc, st->a, PG_DEFAULT_BUDGET, 1, err));
  st->accounted = 1;
  /* train_gpt.py, counted the challenge's way */
  PG_TRY(read_code(c, st->a, &st->code, &st->code_len, err));
  uint64_t code_bytes;
  PG_TRY(pg_record_code_bytes(st->code, st->code_len, &code_bytes, NULL,
                              c->code ? c->code : PG_RECORD_CODE_NAME, err));
  const uint64_t total = code_bytes + art_bytes;
  /* the receipts, each of this very file */
  st->runs = calloc(c->nreceipts, sizeof *st->runs);
  PG_FAIL_IF(!st->runs, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t i = 0; i < c->nreceipts; i++) {
    run_in *ri = &st->runs[i];
    const char *p = c->receipts[i];
    PG_TRY(pg_file_read_all(p, &ri->raw, &ri->len, PG_RECEIPT_MAX_FILE, err));
    st->nruns = i + 1;
    PG_TRY(pg_receipt_parse(&ri->r, (const char *)ri->raw, ri->len, p, err));
    if (ri->r.safetensors || ri->r.artifact_bytes != art_bytes ||
        ri->r.artifact_xxh64 != art_hash)
      return pg_err_set(err, PG_E_ARG, p, PG_NO_OFFSET,
                        "a receipt of another file (%llu bytes, xxh64 %016llx), not of %s "
                        "(%llu bytes, xxh64 %016llx)",
                        (unsigned long long)ri->r.artifact_bytes,
                        (unsigned long long)ri->r.artifact_xxh64, c->artifact,
                        (unsigned long long)art_bytes, (unsigned long long)art_hash);
    json_t *doc = json_loadb((const char *)ri->raw, ri->len, 0, NULL);
    ri->protocol = json_incref(json_object_get(doc, "protocol"));
    json_decref(doc);
    PG_FAIL_IF(!json_is_object(ri->protocol) ||
                   !json_is_string(json_object_get(ri->protocol, "name")),
               err, PG_E_MALFORMED, p, PG_NO_OFFSET, "no protocol object with a name");
  }
  if (c->train_log) {
    PG_TRY(pg_file_read_all(c->train_log, &st->log, &st->log_len, PG_SUBMIT_LOG_MAX, err));
    PG_TRY(read_log(&st->lp, st->log, st->log_len, c->train_log, err));
  }
  /* every figure is known: build the folder beside its destination */
  size_t ol = strlen(c->out);
  while (ol > 1 && c->out[ol - 1] == '/') ol--;
  st->tmpdir = malloc(ol + 16);
  PG_FAIL_IF(!st->tmpdir, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  snprintf(st->tmpdir, ol + 16, "%.*s.tmp.XXXXXX", (int)ol, c->out);
  if (!mkdtemp(st->tmpdir)) {
    int e = errno;
    free(st->tmpdir);
    st->tmpdir = NULL;
    return pg_err_set(err, PG_E_IO, c->out, PG_NO_OFFSET, "cannot create a temporary folder: %s",
                      strerror(e));
  }
  st->slot = pg_tmp_register(st->tmpdir, 1);
  const char *d = st->tmpdir;
  PG_TRY(put(d, PG_SUBMIT_MODEL_NAME, st->art.data, st->art.size, err));
  PG_TRY(put(d, PG_RECORD_CODE_NAME, st->code, st->code_len, err));
  int *has_chunks = calloc(c->nreceipts, sizeof *has_chunks);
  PG_FAIL_IF(!has_chunks, err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  int rc = PG_OK;
  for (size_t i = 0; i < c->nreceipts && rc == PG_OK; i++) {
    char name[48], key[32];
    snprintf(name, sizeof name, "receipt-%zu.json", i + 1);
    rc = put(d, name, st->runs[i].raw, st->runs[i].len, err);
    if (rc || st->runs[i].r.result.nchunks < 2) continue;
    sb s = {0};
    run_key(c, i, key, sizeof key);
    has_chunks[i] = chunks_svg(&s, &st->runs[i].r, key);
    snprintf(name, sizeof name, "chunks-%zu.svg", i + 1);
    rc = put_sb(d, name, &s, err);
  }
  if (rc == PG_OK && c->train_log) {
    rc = put(d, "train_log.jsonl", st->log, st->log_len, err);
    sb s = {0};
    train_svg(&s, &st->lp);
    if (rc == PG_OK) rc = put_sb(d, "train.svg", &s, err);
    free(s.p);
  }
  if (rc == PG_OK) {
    sb s = {0};
    budget_svg(&s, &st->acc, code_bytes, total);
    rc = put_sb(d, "budget.svg", &s, err);
  }
  if (rc == PG_OK) {
    sb s = {0};
    readme(&s, c, st->runs, &st->acc, code_bytes, total, art_bytes, c->train_log != NULL,
           has_chunks);
    rc = put_sb(d, "README.md", &s, err);
  }
  free(has_chunks);
  if (rc == PG_OK) {
    char *j = submission_json(c, st->runs, code_bytes, total, art_bytes, art_hash);
    if (!j) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
    rc = put(d, PG_RECORD_JSON_NAME, j, strlen(j), err);
    free(j);
  }
  PG_TRY(rc);
  if (rename(st->tmpdir, c->out) != 0)
    return pg_err_set(err, errno == ENOTEMPTY || errno == EEXIST ? PG_E_EXISTS : PG_E_IO, c->out,
                      PG_NO_OFFSET, "cannot rename the finished folder into place: %s",
                      strerror(errno));
  pg_tmp_forget(st->slot);
  free(st->tmpdir);
  st->tmpdir = NULL;
  return PG_OK;
}

int pg_submit_write(const pg_submit_cfg *c, pg_err *err) {
  state st;
  memset(&st, 0, sizeof st);
  st.slot = -1;
  int rc = write_all(c, &st, err);
  if (st.tmpdir) {
    /* a failure after the folder was begun: remove it and everything in it */
    if (st.slot >= 0) pg_tmp_discard(st.slot);
    else {
      char cmdless[4096];
      const char *names[] = {PG_SUBMIT_MODEL_NAME, PG_RECORD_CODE_NAME, PG_RECORD_JSON_NAME,
                             "README.md", "budget.svg", "train.svg", "train_log.jsonl"};
      for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(cmdless, sizeof cmdless, "%s/%s", st.tmpdir, names[i]);
        unlink(cmdless);
      }
      for (size_t i = 0; i < st.nruns; i++) {
        snprintf(cmdless, sizeof cmdless, "%s/receipt-%zu.json", st.tmpdir, i + 1);
        unlink(cmdless);
        snprintf(cmdless, sizeof cmdless, "%s/chunks-%zu.svg", st.tmpdir, i + 1);
        unlink(cmdless);
      }
      rmdir(st.tmpdir);
    }
    free(st.tmpdir);
  }
  for (size_t i = 0; i < st.nruns; i++) {
    pg_receipt_free(&st.runs[i].r);
    json_decref(st.runs[i].protocol);
    free(st.runs[i].raw);
  }
  free(st.runs);
  free(st.lp.sx);
  free(st.lp.sy);
  free(st.lp.vx);
  free(st.lp.vy);
  free(st.log);
  free(st.code);
  if (st.accounted) pg_account_free(&st.acc);
  if (st.a) pg_artifact_free(st.a);
  if (st.mapped) pg_file_unmap(&st.art);
  return rc;
}
