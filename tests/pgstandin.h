/* pgstandin.h: the engine a GPU test program runs on: the CUDA engine, or with
 * PG_GPU_STANDIN=remote the remote test engine (pgremote.h: the CPU reference behind memory the
 * host cannot read) in the GPU's place, so that the program itself is checked on a machine
 * without one. For Criterion programs; one copy of the choice for every GPU program that has the
 * stand-in. */
#ifndef PGSTANDIN_H
#define PGSTANDIN_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "pg_engine.h"
#include "pgremote.h"

static inline int standin(void) {
  const char *s = getenv("PG_GPU_STANDIN");
  return s && !strcmp(s, "remote");
}

static inline pg_engine *dev_open(void) {
  if (standin()) {
    pgremote *r = pgremote_new(2);
    cr_assert(r);
    return &r->outer;
  }
  pg_engine *e;
  pg_err err;
  pg_engine_opts o = {.kind = PG_ENGINE_CUDA};
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  return e;
}

static inline void dev_close(pg_engine *e) {
  if (standin())
    pgremote_free((pgremote *)(void *)e);
  else
    pg_engine_destroy(e);
}

#endif
