/* fuzz_torchzip.c: libFuzzer target for the torch.save reader (format/pg_torchzip.h). A refused
 * input must leave one line and no handle; an accepted one is walked whole (every container,
 * every tensor's bytes, the dict lookups), checking the invariants the reader promises: tensors
 * inside the input with numel·size bytes, strings of their stated length, nesting bounded. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_torchzip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *g_data;
static size_t g_size;
static size_t g_visits;

static void walk(const pg_tz_value *x, unsigned depth) {
  if (depth > PG_TZ_MAX_DEPTH + 1) abort(); /* the reader bounds nesting */
  if (++g_visits > 4 * (size_t)PG_TZ_MAX_NODES) abort(); /* no cycles, no blow-up */
  switch (x->kind) {
  case PG_TZ_STR:
  case PG_TZ_BYTES:
    if (!x->s || x->s[x->len] != 0) abort();
    break;
  case PG_TZ_LIST:
  case PG_TZ_TUPLE:
    for (size_t i = 0; i < x->n; i++) walk(x->items[i], depth + 1);
    break;
  case PG_TZ_DICT:
    for (size_t i = 0; i < x->n; i++) {
      const pg_tz_value *k = x->items[2 * i];
      if (k->kind != PG_TZ_STR && k->kind != PG_TZ_INT) abort();
      if (k->kind == PG_TZ_STR && !pg_tz_get(x, k->s) && !memchr(k->s, 0, k->len)) abort();
      walk(x->items[2 * i + 1], depth + 1);
    }
    break;
  case PG_TZ_TENSOR: {
    const pg_tz_tensor *t = &x->t;
    uint64_t n = 1;
    if (t->ndim > PG_TZ_MAX_DIMS) abort();
    for (unsigned i = 0; i < t->ndim; i++) n *= t->dims[i];
    if (n != t->numel || t->nbytes != n * pg_tz_dtype_size(t->dtype)) abort();
    if (t->nbytes && (t->data < g_data || t->data + t->nbytes > g_data + g_size)) abort();
    uint8_t acc = 0;
    for (uint64_t k = 0; k < t->nbytes; k++) acc ^= t->data[k];
    (void)acc;
    break;
  }
  default:
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pg_tz *z = NULL;
  pg_err err;
  if (pg_tz_open(&z, data, size, "fuzz", &err) != PG_OK) {
    if (z || err.status == PG_OK || !err.msg[0] || strchr(err.msg, '\n')) abort();
    return 0;
  }
  g_data = data;
  g_size = size;
  g_visits = 0;
  walk(pg_tz_root(z), 0);
  pg_tz_free(z);
  return 0;
}
