/* fuzz_load.c: libFuzzer target for the artifact loader (spec/load.md): open the bytes as an
 * artifact and load a model from it. A refusal must carry a status and a one-line message and
 * leave no model; a loaded model must hold exactly the artifact's tensors, finite, each equal to
 * the reader's own dequantization bit for bit. Loaded onto the CPU engine (the engine path of
 * spec/engine.md §8.1: the quantized parts decoded apart, dequantized by the engine, finiteness
 * decided from the scales), the same status and message, or the same parameters bit for bit.
 * Every broken invariant aborts. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_weights.h"
#include "pg_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err) {
  if (err->status == PG_OK || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* tighter limits than the spec's keep a fuzz input from asking for gigabytes; a small cache
   * makes the reader evict and decode again */
  const pg_read_limits lim = {.max_section_raw = 16u << 20, .max_elements = 1u << 22,
                              .max_total_raw = 32u << 20, .max_cache = 1u << 16};
  pg_artifact *a;
  pg_err err;
  if (pg_artifact_open_mem(&a, data, size, "fuzz.pgz", &lim, &err) != PG_OK) {
    check_line(&err);
    return 0;
  }
  /* The loader allocates no more than the artifact's tensors hold (spec/load.md §4); bound that
   * here so the model stays within the fuzzer's memory. */
  uint64_t held = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++)
    held += pg_artifact_tensor(a, i)->numel;
  if (held > (1u << 24)) {
    pg_artifact_free(a);
    return 0;
  }
  pg_model *m = NULL, *me = NULL;
  const int rc = pg_model_load_artifact(&m, a, &err);
  pg_engine cpu = pg_engine_cpu(1);
  pg_err err2;
  const int rc2 = pg_model_load_artifact_on(&me, a, NULL, &cpu, &err2);
  if (rc2 != rc || (rc2 != PG_OK && (me || strcmp(err2.msg, err.msg)))) abort();
  if (rc != PG_OK) {
    if (m || err.status != rc) abort();
    check_line(&err);
    pg_artifact_free(a);
    return 0;
  }
  if (memcmp(pg_model_params_read(m), pg_model_params_read(me),
             pg_model_param_count(m) * sizeof(float)))
    abort();
  pg_model_free(me);
  if (pg_model_tensor_count(m) != pg_artifact_tensor_count(a) || pg_model_param_count(m) != held)
    abort();
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const pg_arch_tensor *t = pg_model_tensor(m, i);
    const int64_t j = pg_artifact_tensor_find(a, t->name);
    if (j < 0) abort();
    const pg_tensor_info *ti = pg_artifact_tensor(a, (uint32_t)j);
    if (!pg_weights_shape_compatible(t, ti->ndim, ti->dims)) abort();
    const uint64_t n = pg_arch_tensor_numel(t);
    const float *x = pg_model_data(m, i);
    float *ref = malloc(n * sizeof *ref);
    if (!ref) break;
    if (pg_artifact_tensor_dequant(a, (uint32_t)j, ref, &err) != PG_OK) abort();
    for (uint64_t k = 0; k < n; k++)
      if (!isfinite(x[k])) abort();
    if (memcmp(ref, x, n * sizeof *ref)) abort();
    free(ref);
  }
  pg_model_free(m);
  pg_artifact_free(a);
  return 0;
}
