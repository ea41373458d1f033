/* pgfiller.h: JSON filler for the tests of the shape check (pg_json.h): a small text of many
 * values, on each of which a tree parser spends tens to hundreds of bytes. */
#ifndef PGFILLER_H
#define PGFILLER_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_json.h"

/* {"KEY":[{},{},...]} with n empty objects: n + 3 values, keys counted. The value that goes over
 * a cap C (3 <= C < n + 3) starts at PGFILLER_OVER(KEY, C). NUL-terminated, malloc'ed. */
static inline char *pgfiller_json(const char *key, uint64_t n, size_t *len) {
  const size_t kl = strlen(key), cap = kl + 8 + 3 * n;
  char *t = malloc(cap);
  cr_assert_not_null(t);
  size_t p = (size_t)snprintf(t, cap, "{\"%s\":[", key);
  for (uint64_t i = 0; i < n; i++) {
    memcpy(t + p, i + 1 < n ? "{}," : "{}", i + 1 < n ? 3 : 2);
    p += i + 1 < n ? 3 : 2;
  }
  memcpy(t + p, "]}", 3);
  if (len) *len = p + 2;
  return t;
}
#define PGFILLER_OVER(key, c) (strlen(key) + 5 + 3 * ((uint64_t)(c) - 3))

#endif
