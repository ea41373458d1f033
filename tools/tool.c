/* tool.c: shared helpers of the pgolf commands. */
#include "tool.h"

#include "pg_container.h"
#include "pg_safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pg_tool_fail(const char *prog, const pg_err *err) {
  const char *m = err->msg[0] ? err->msg : pg_status_message(err->status);
  fprintf(stderr, "%s: %s\n", prog, pg_safe(m));
  return PG_EXIT_ERROR;
}

int pg_tool_usage_error(const char *prog, const char *fmt, ...) {
  /* the message quotes options as given: shown in its display form like every error line */
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s (see %s --help)\n", prog, pg_safe(line), prog);
  return PG_EXIT_ERROR;
}

const char *pg_fmt_u64(char *buf, uint64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  int o = 0;
  for (int i = 0; i < n; i++) {
    if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = '\0';
  return buf;
}

int pg_parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  int digits = 0;
  for (; *s; s++) {
    if (*s == '_' || *s == ',') continue;
    if (*s < '0' || *s > '9') return 1;
    if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return 1;
    v = v * 10 + (uint64_t)(*s - '0');
    digits++;
  }
  if (!digits) return 1;
  *out = v;
  return 0;
}

int pg_parse_f64(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  /* a range check that NaN fails; ERANGE catches 1e999 and denormal underflow alike */
  if (end == s || *end || errno == ERANGE || !(v >= lo && v <= hi)) return 1;
  *out = v;
  return 0;
}

void pg_print_safe(FILE *f, const char *s, size_t n) { fputs(pg_safen(s, n), f); }

static const char *safe_ring(const char *s, size_t n, size_t max) {
  static char *ring[8];
  static size_t cap[8];
  static unsigned next;
  unsigned k = next++ % 8;
  size_t need = pg_escape(NULL, 0, s, n);
  if (need > max) need = max;
  if (cap[k] < need + 1) {
    char *p = realloc(ring[k], need + 1);
    if (!p) return "(out of memory)";
    ring[k] = p;
    cap[k] = need + 1;
  }
  pg_escape(ring[k], need + 1, s, n);
  return ring[k];
}

const char *pg_safen(const char *s, size_t n) { return s ? safe_ring(s, n, SIZE_MAX - 1) : ""; }
const char *pg_safe(const char *s) { return s ? safe_ring(s, strlen(s), SIZE_MAX - 1) : ""; }
const char *pg_safe_cut(const char *s, size_t max) {
  return s ? safe_ring(s, strlen(s), max) : "";
}

double pg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pg_tool_is_artifact(const char *path, int *yes, pg_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot open");
  uint8_t head[8] = {0};
  size_t got = fread(head, 1, sizeof head, f);
  fclose(f);
  *yes = got == sizeof head && memcmp(head, PG_MAGIC, sizeof head) == 0;
  return PG_OK;
}

int pg_progress_tick(void *ctx, uint64_t done, uint64_t total) {
  pg_progress *p = ctx;
  double now = pg_now();
  if (!p->on || (now - p->last < 0.5 && done < total)) return 0;
  p->last = now;
  double el = now - p->t0, frac = total ? (double)done / (double)total : 1;
  char a[32], b[32];
  fprintf(stderr, "\r%s: %s%s%5.1f%% (%s / %s %s)  %.0f s", p->prog, p->what ? p->what : "",
          p->what ? " " : "", 100 * frac, pg_fmt_u64(a, done), pg_fmt_u64(b, total), p->unit, el);
  if (frac > 0 && frac < 1) fprintf(stderr, ", about %.0f s left   ", el * (1 - frac) / frac);
  else fprintf(stderr, "                    ");
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
  return 0;
}

char *pg_tool_weights_meta(const char *path, struct pg_artifact *art, const char *key) {
  if (art) {
    const pg_meta_entry *e = pg_artifact_meta_find(art, key);
    if (!e || e->type != PG_META_STR) return NULL;
    char *s = malloc((size_t)e->count + 1);
    if (s) {
      memcpy(s, e->str, (size_t)e->count);
      s[e->count] = '\0';
    }
    return s;
  }
  pg_st *st;
  pg_err err;
  if (pg_st_open_file(&st, path, &err) != PG_OK) return NULL;
  const char *v = pg_st_meta_get(st, key);
  char *s = v ? strdup(v) : NULL;
  pg_st_free(st);
  return s;
}
