/* tool.c: shared helpers of the pgolf commands. */
#include "tool.h"

#include "pg_container.h"
#include "pg_io.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pg_tool_fail(const char *prog, const pg_err *err) {
  fprintf(stderr, "%s: %s\n", prog, err->msg[0] ? err->msg : pg_status_message(err->status));
  return PG_EXIT_ERROR;
}

int pg_tool_usage_error(const char *prog, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", prog);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see %s --help)\n", prog);
  va_end(ap);
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

void pg_print_safe(FILE *f, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f)
      fprintf(f, "\\x%02x", c);
    else
      fputc(c, f);
  }
}

double pg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pg_tool_is_artifact(const char *path, int *yes, pg_err *err) {
  FILE *f;
  PG_TRY(pg_file_fopen_read(path, &f, err));
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
