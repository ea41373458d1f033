/* pg_status.c: status names and messages, and the one-line error record. */
#include "pg_status.h"

#include "pg_text.h"

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

int pg_err_setv(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt,
                va_list ap) {
  if (!err) return status;
  err->status = status;
  /* the raw line first (names from files in it as they came), then its display form: escaped
   * control and formatting characters and invalid UTF-8 (pg_text.h), so it stays one safe line */
  char raw[2 * PG_ERR_MSG_MAX];
  size_t n = 0;
  const size_t cap = sizeof raw;
  raw[0] = '\0';
  if (file && *file) {
    int k = snprintf(raw, cap, "%s: ", file);
    n = k < 0 ? 0 : ((size_t)k >= cap ? cap - 1 : (size_t)k);
  }
  if (offset != PG_NO_OFFSET && n < cap - 1) {
    int k = snprintf(raw + n, cap - n, "offset %llu: ", (unsigned long long)offset);
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  }
  if (fmt && n < cap - 1) {
    int k = vsnprintf(raw + n, cap - n, fmt, ap);
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  } else if (n < cap - 1) {
    int k = snprintf(raw + n, cap - n, "%s", pg_status_message(status));
    n += k < 0 ? 0 : ((size_t)k >= cap - n ? cap - n - 1 : (size_t)k);
  }
  pg_escape(err->msg, sizeof err->msg, raw, n);
  return status;
}

int pg_err_set(pg_err *err, int status, const char *file, uint64_t offset, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = pg_err_setv(err, status, file, offset, fmt, ap);
  va_end(ap);
  return rc;
}
