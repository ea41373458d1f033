/* fuzz_arch.c: libFuzzer target for the arch parser (spec/arch.md): parse arbitrary bytes; a
 * refusal must carry one of the documented statuses and a one-line message and leave the output
 * zeroed; an accepted arch must validate, serialize, re-parse to an equal arch, serialize to the
 * same text, and expand into a tensor list whose element total is the parameter count. Every
 * broken invariant aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err, int status) {
  if (err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static pg_arch a, b;
  pg_err err;
  const int rc = pg_arch_parse(&a, (const char *)data, size, "arch.json", &err);
  if (rc != PG_OK) {
    if (rc != PG_E_JSON && rc != PG_E_UTF8 && rc != PG_E_DUPLICATE && rc != PG_E_META_TYPE &&
        rc != PG_E_ARG && rc != PG_E_NOMEM && rc != PG_E_LIMIT)
      abort();
    check_line(&err, rc);
    const unsigned char *p = (const unsigned char *)&a;
    for (size_t i = 0; i < sizeof a; i++)
      if (p[i]) abort();
    return 0;
  }
  if (pg_arch_validate(&a, "arch.json", &err) != PG_OK) abort();
  char *s1 = NULL, *s2 = NULL;
  if (pg_arch_serialize(&a, &s1, &err) != PG_OK) abort();
  if (pg_arch_parse(&b, s1, strlen(s1), "canonical", &err) != PG_OK) abort();
  if (!pg_arch_equal(&a, &b)) abort();
  if (pg_arch_serialize(&b, &s2, &err) != PG_OK || strcmp(s1, s2)) abort();
  free(s1);
  free(s2);
  pg_arch_tensor *t = NULL;
  size_t n = 0;
  if (pg_arch_tensors(&a, &t, &n, &err) != PG_OK || n == 0) abort();
  uint64_t total = 0, count = 0;
  for (size_t i = 0; i < n; i++) {
    if (!t[i].name[0] || !memchr(t[i].name, '\0', sizeof t[i].name)) abort();
    if (t[i].ndim < 0 || t[i].ndim > 3) abort();
    for (int k = 0; k < t[i].ndim; k++)
      if (t[i].shape[k] == 0) abort();
    for (size_t j = 0; j < i && j < 64; j++) /* names unique (spot-checked) */
      if (!strcmp(t[i].name, t[j].name)) abort();
    total += pg_arch_tensor_numel(&t[i]);
  }
  free(t);
  if (pg_arch_param_count(&a, &count, &err) != PG_OK || count != total) abort();
  return 0;
}
