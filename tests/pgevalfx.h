/* pgevalfx.h: the fixtures shared by the evaluation tests (test_eval, test_systems): hand-made
 * byte tables and a synthetic validation stream of BOS-started documents. */
#ifndef PGEVALFX_H
#define PGEVALFX_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "pg_rng.h"
#include "pg_spm.h"

#define PGFX_BOS 1

/* Byte tables over V ids: ids 0..3 are boundaries of 0 bytes, the others 1..4 bytes, every third
 * with a leading space. */
static inline pg_spm_tables pgfx_tables(uint32_t V) {
  pg_spm_tables t = {.size = V, .vocab = V};
  t.base = calloc(V, sizeof *t.base);
  t.lead = calloc(V, 1);
  t.boundary = calloc(V, 1);
  cr_assert(t.base && t.lead && t.boundary);
  for (uint32_t i = 0; i < V; i++) {
    if (i < 4) {
      t.boundary[i] = 1;
      continue;
    }
    t.base[i] = (int16_t)(1 + i % 4);
    t.lead[i] = i % 3 == 0;
  }
  return t;
}

static inline void pgfx_tables_free(pg_spm_tables *t) {
  free(t->base);
  free(t->lead);
  free(t->boundary);
}

/* n tokens: documents of 3..40 tokens, each starting with BOS; the other ids anywhere in [0, V)
 * but BOS (boundary ids included). The last token is never a BOS (a document needs a target). */
static inline int32_t *pgfx_stream(uint64_t n, uint32_t V, uint64_t seed) {
  int32_t *t = malloc((n ? n : 1) * sizeof *t);
  cr_assert_not_null(t);
  pg_rng r;
  pg_rng_seed(&r, seed);
  uint64_t next = 0;
  for (uint64_t i = 0; i < n; i++) {
    if (i == next && i + 1 < n) {
      t[i] = PGFX_BOS;
      next = i + 3 + pg_rng_u64(&r) % 38;
    } else {
      int32_t x = (int32_t)(pg_rng_u64(&r) % (V - 1));
      t[i] = x >= PGFX_BOS ? x + 1 : x;
    }
  }
  return t;
}

#endif
