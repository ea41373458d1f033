/* pg_status.c: status names and messages, and the one-line error record. */
#include "pg_status.h"

#include <stdio.h>
#include <string.h>

const char *pg_status_message(int status) {
  switch (status) {
#define PG_STATUS_MSG_(name, num, msg) \
  case num: return msg;
    PG_STATUS_LIST(PG_STATUS_MSG_)
#undef PG_STATUS_MSG_
  default: return "unknown status";
  }
}

const char *pg_status_name(int status) {
  switch (status) {
#define PG_STATUS_NAME_(name, num, msg) \
  case num: return #name;
    PG_STATUS_LIST(PG_STATUS_NAME_)
#undef PG_STATUS_NAME_
  default: return "PG_E_UNKNOWN";
  }
}

void pg_err_clear(pg_err *err) {
  if (err) {
    err->status = PG_OK;
    err->msg[0] = '\0';
  }
}

static void sanitize_line(char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) *s = '?';
}

int pg_err_setv(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt,
                va_list ap) {
  if (!err) return status;
  err->status = status;
  size_t n = 0;
  char *m = err->msg;
  const size_t cap = sizeof err->msg;
  if (file && *file) {
    int k = snprintf(m, cap, "%s: ", file);
    n = k < 0 ? 0 : ((size_t)k >= cap ? cap - 1 : (size_t)k);
  }
  if (offset != PG_NO_OFFSET && n < cap) {
    int k = snprintf(m + n, cap - n, "offset %llu: ", (unsigned long long)offset);
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  }
  if (fmt && n < cap) {
    int k = vsnprintf(m + n, cap - n, fmt, ap);
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  } else if (n < cap) {
    int k = snprintf(m + n, cap - n, "%s", pg_status_message(status));
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  }
  m[cap - 1] = '\0';
  sanitize_line(m);
  return status;
}

int pg_err_set(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = pg_err_setv(err, status, file, offset, fmt, ap);
  va_end(ap);
  return rc;
}
