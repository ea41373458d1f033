/* fuzz_safetensors.c: libFuzzer target for the safetensors reader. Opens the input from memory;
 * when it is accepted, walks every tensor (name lookup, metadata, bytes) and converts the float
 * tensors of up to 1M elements to fp32, so any accepted file is also exercised end to end. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pg_st *st = NULL;
  pg_err err;
  if (pg_st_open_mem(&st, data, size, "fuzz", &err) != PG_OK) {
    if (st || err.status == PG_OK || !err.msg[0] || strchr(err.msg, '\n')) abort();
    return 0;
  }
  uint64_t covered = 0;
  for (size_t i = 0; i < pg_st_count(st); i++) {
    const pg_st_tensor *t = pg_st_at(st, i), *u = NULL;
    if (pg_st_find(&u, st, t->name, &err) != PG_OK || u != t) abort();
    if (t->offset + t->nbytes > size || t->rank > PG_ST_MAX_RANK) abort();
    uint8_t acc = 0;
    for (uint64_t k = 0; k < t->nbytes; k++) acc ^= t->data[k]; /* every byte is readable */
    (void)acc;
    covered += t->nbytes;
    if (t->numel > 1000000) continue;
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *out);
    if (!out) continue;
    int rc = pg_st_to_f32(out, (size_t)t->numel, st, t, &err);
    int is_float = t->dtype == PG_ST_F32 || t->dtype == PG_ST_F64 || t->dtype == PG_ST_F16 ||
                   t->dtype == PG_ST_BF16 || t->dtype == PG_ST_F8_E4M3 ||
                   t->dtype == PG_ST_F8_E5M2;
    if ((rc == PG_OK) != is_float) abort();
    free(out);
  }
  if (covered != pg_st_data_size(st)) abort();
  for (size_t i = 0; i < pg_st_meta_count(st); i++) {
    const pg_st_meta *m = pg_st_meta_at(st, i);
    if (pg_st_meta_get(st, m->key) != m->value) abort();
  }
  pg_st_free(st);
  return 0;
}
