/* pg_engine_open.c: the engine factory of every tool (--engine cpu|cuda|auto). It lives with the
 * kernels because only they know what this build can run: the CPU engine always; a CUDA engine
 * when the build has one and the machine a usable GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_engine.h"

/* kernels/pg_cuda_engine.cu (pg_cuda_none.c without CUDA) */
int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err);

/* The CUDA engine, or why none can be made here: PG_E_UNSUPPORTED (this build), PG_E_NO_DEVICE,
 * PG_E_CUDA. */
static int cuda_engine(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = NULL;
  if (!pg_cuda_built())
    return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                      "--engine cuda: this build has no CUDA (configure with -Dcuda=enabled "
                      "where nvcc is installed)");
  int n = 0;
  pg_err e2;
  if (pg_cuda_device_count(&n, &e2) || n < 1)
    return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET,
                      "--engine cuda: no usable CUDA device (driver missing or no GPU)");
  return pg_cuda_engine_create(out, o, err);
}

int pg_engine_open(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = NULL;
  if (!o || !pg_engine_kind_name(o->kind))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "unknown engine kind");
  if (o->threads < 0 || o->gpus < 0 || o->device < 0 || o->precision < 0 || o->precision > 1)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "bad engine options");
  char why[PG_ERR_MSG_MAX] = "";
  if (o->kind != PG_ENGINE_CPU) {
    pg_err e2;
    int st = cuda_engine(out, o, &e2);
    if (st == PG_OK) return PG_OK;
    if (o->kind == PG_ENGINE_CUDA) {
      if (err) *err = e2;
      return st;
    }
    /* auto: the CPU, saying why */
    const char *m = strstr(e2.msg, ": ") ? strstr(e2.msg, ": ") + 2 : e2.msg;
    snprintf(why, sizeof why, "%s", m);
  }
  pg_engine *e = malloc(sizeof *e);
  if (!e) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate an engine");
  *e = pg_engine_cpu(o->threads);
  e->heap = 1;
  if (why[0]) snprintf(e->info.note, sizeof e->info.note, "auto: %s", why);
  *out = e;
  return PG_OK;
}
