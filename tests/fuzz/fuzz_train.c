/* fuzz_train.c: libFuzzer target for the trainer's configuration parser (spec/train.md §2): parse
 * arbitrary bytes; a refusal must carry one of the documented statuses and a one-line message; an
 * accepted configuration must validate, and its canonical JSON must parse back to the same
 * canonical JSON. Every broken invariant aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static pg_train_cfg a, b;
  pg_err err;
  const int rc = pg_train_cfg_parse(&a, (const char *)data, size, "run.json", &err);
  if (rc != PG_OK) {
    /* JSON syntax, a bad key or value, an arch fault, or an arch file that cannot be read */
    if (rc != PG_E_JSON && rc != PG_E_ARG && rc != PG_E_UTF8 && rc != PG_E_DUPLICATE &&
        rc != PG_E_META_TYPE && rc != PG_E_NOMEM && rc != PG_E_IO && rc != PG_E_NOT_FOUND &&
        rc != PG_E_LIMIT)
      abort();
    if (err.status != rc || !err.msg[0] || strchr(err.msg, '\n') ||
        !memchr(err.msg, '\0', sizeof err.msg))
      abort();
    return 0;
  }
  if (pg_train_cfg_validate(&a, &err) != PG_OK) abort();
  char *s1 = pg_train_cfg_json(&a);
  if (!s1) abort();
  if (pg_train_cfg_parse(&b, s1, strlen(s1), "canonical", &err) != PG_OK) abort();
  char *s2 = pg_train_cfg_json(&b);
  if (!s2 || strcmp(s1, s2)) abort();
  free(s1);
  free(s2);
  return 0;
}
