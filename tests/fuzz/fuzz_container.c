/* fuzz_container.c: libFuzzer target for the artifact reader. Every input must be either refused
 * with a status and a one-line message, or opened, checked and dequantized without a fault. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* tighter limits than the spec's keep a fuzz input from asking for gigabytes; a small cache
   * makes the reader evict and decode again */
  const pg_read_limits lim = {.max_section_raw = 16u << 20, .max_elements = 1u << 22,
                              .max_total_raw = 32u << 20, .max_cache = 1u << 16};
  pg_artifact *a;
  pg_err err;
  if (pg_artifact_open_mem(&a, data, size, "fuzz.pgz", &lim, &err) != PG_OK) {
    if (err.status == PG_OK || strchr(err.msg, '\n')) abort();
    return 0;
  }
  /* nothing opens that may decode to more than the limit */
  uint64_t total = 0;
  for (uint32_t i = 0; i < pg_artifact_section_count(a); i++)
    total += pg_artifact_section(a, i)->raw_size;
  if (total > lim.max_total_raw || total > pg_artifact_raw_bound(size)) abort();
  if (pg_artifact_check(a, &err) == PG_OK) {
    for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
      const pg_tensor_info *t = pg_artifact_tensor(a, i);
      if (t->numel > (1u << 20)) continue;
      float *out = malloc(t->numel ? (size_t)t->numel * sizeof(float) : 1);
      if (!out) break;
      if (pg_artifact_tensor_dequant(a, i, out, &err) != PG_OK) abort(); /* check() passed */
      free(out);
    }
  }
  for (uint32_t i = 0; i < pg_artifact_code_count(a); i++) {
    const uint8_t *b;
    size_t n;
    uint32_t sec;
    if (pg_artifact_code(a, i, NULL, NULL, &b, &n, &sec, &err) == PG_OK)
      pg_artifact_section_release(a, sec);
  }
  pg_artifact_free(a);
  return 0;
}
