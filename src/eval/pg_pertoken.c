/* pg_pertoken.c: see pg_pertoken.h. */
#include "pg_pertoken.h"

#include <stdlib.h>
#include <string.h>

#include "pg_io.h"

struct pg_pertoken {
  pg_out out;
  uint64_t records;
  double sum;
  int failed;
  pg_err err; /* the first write error */
};

static void put_f64(uint8_t *p, double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  pg_st64(p, u);
}

int pg_pertoken_open(pg_pertoken **out, const char *path, uint64_t stream_tokens, pg_err *err) {
  *out = NULL;
  pg_pertoken *w = calloc(1, sizeof *w);
  if (!w) return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate a writer");
  int rc = pg_out_begin(&w->out, path, err);
  if (rc) {
    free(w);
    return rc;
  }
  uint8_t h[PG_PERTOKEN_HEADER];
  memcpy(h, PG_PERTOKEN_MAGIC, 8);
  pg_st32(h + 8, PG_PERTOKEN_VERSION);
  pg_st32(h + 12, PG_PERTOKEN_RECORD);
  pg_st64(h + 16, stream_tokens);
  if ((rc = pg_out_write(&w->out, h, sizeof h, err))) {
    pg_out_abort(&w->out);
    free(w);
    return rc;
  }
  *out = w;
  return PG_OK;
}

int pg_pertoken_add(void *writer, uint64_t target, double nll, uint32_t bytes, int duplicate) {
  pg_pertoken *w = writer;
  if (w->failed) return 1;
  uint8_t r[PG_PERTOKEN_RECORD];
  pg_st64(r, target);
  put_f64(r + 8, nll);
  pg_st32(r + 16, bytes);
  pg_st32(r + 20, duplicate ? PG_PERTOKEN_DUPLICATE : 0u);
  if (pg_out_write(&w->out, r, sizeof r, &w->err)) {
    w->failed = 1;
    return 1;
  }
  w->records++;
  w->sum += nll; /* the run's own order: the same bits as its sum */
  return 0;
}

int pg_pertoken_close(pg_pertoken *w, pg_err *err) {
  int rc = PG_OK;
  if (w->failed) {
    if (err) *err = w->err;
    rc = w->err.status ? w->err.status : PG_E_IO;
    pg_out_abort(&w->out);
  } else {
    uint8_t t[PG_PERTOKEN_TRAILER];
    pg_st64(t, w->records);
    put_f64(t + 8, w->sum);
    if ((rc = pg_out_write(&w->out, t, sizeof t, err)))
      pg_out_abort(&w->out);
    else
      rc = pg_out_commit(&w->out, err); /* removes the temporary itself when it fails */
  }
  free(w);
  return rc;
}

void pg_pertoken_abort(pg_pertoken *w) {
  if (!w) return;
  pg_out_abort(&w->out);
  free(w);
}
