/* pg_ledger.c: the score-first ledger (pg_ledger.h, spec/eval.md §6). One byte per target keeps
 * it small enough for every validation stream: 40 M targets are 40 MB. */
#include "pg_ledger.h"

#include <stdlib.h>

#define COMMITTED 0x80u
#define COUNT 0x7fu

struct pg_ledger {
  uint8_t *b; /* [T]: count of scorings, COMMITTED once committed */
  uint64_t T;
  int allow_duplicates;
  pg_ledger_summary s;
};

int pg_ledger_create(pg_ledger **out, uint64_t T, int allow_duplicates, pg_err *err) {
  *out = NULL;
  pg_ledger *l = calloc(1, sizeof *l);
  if (l && T > SIZE_MAX) {
    free(l);
    l = NULL;
  }
  if (l && !(l->b = calloc(T ? (size_t)T : 1, 1))) {
    free(l);
    l = NULL;
  }
  if (!l) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the ledger");
  l->T = l->s.targets = T;
  l->allow_duplicates = allow_duplicates != 0;
  *out = l;
  return PG_OK;
}

void pg_ledger_free(pg_ledger *l) {
  if (!l) return;
  free(l->b);
  free(l);
}

int pg_ledger_score(pg_ledger *l, uint64_t t, int *duplicate, pg_err *err) {
  if (t >= l->T)
    return pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET,
                      "internal: target %llu past the stream", (unsigned long long)t);
  const uint8_t c = l->b[t];
  if ((c & COUNT) && !l->allow_duplicates)
    return pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET,
                      "target %llu scored twice (single pass violated)", (unsigned long long)t);
  if ((c & COUNT) == COUNT)
    return pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET, "target %llu scored 127 times",
                      (unsigned long long)t);
  if (c & COUNT) l->s.duplicates++;
  if (duplicate) *duplicate = (c & COUNT) != 0;
  l->b[t] = (uint8_t)(c + 1);
  l->s.scored++;
  return PG_OK;
}

void pg_ledger_commit(pg_ledger *l, uint64_t first, uint64_t n) {
  for (uint64_t t = first; t < first + n && t < l->T; t++)
    if ((l->b[t] & COUNT) && !(l->b[t] & COMMITTED)) {
      l->b[t] |= COMMITTED;
      l->s.committed++;
    }
}

int pg_ledger_is_committed(const pg_ledger *l, int64_t t) {
  return t >= 0 && (uint64_t)t < l->T && (l->b[t] & COMMITTED);
}

int pg_ledger_check_update(const pg_ledger *l, int64_t t, const char *who, pg_err *err) {
  if (pg_ledger_is_committed(l, t)) return PG_OK;
  return pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET,
                    "%s would use target %lld before its score is committed", who, (long long)t);
}

int pg_ledger_check_complete(const pg_ledger *l, pg_err *err) {
  if (l->s.committed == l->T) return PG_OK;
  return pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET,
                    "%llu of %llu targets were scored (every target must be scored once)",
                    (unsigned long long)l->s.committed, (unsigned long long)l->T);
}

unsigned pg_ledger_count(const pg_ledger *l, uint64_t t) {
  return t < l->T ? (unsigned)(l->b[t] & COUNT) : 0;
}

void pg_ledger_summarize(const pg_ledger *l, pg_ledger_summary *s) { *s = l->s; }
