/* pg_ledger.h: the score-first ledger of an evaluation (spec/eval.md §6): one byte per target
 * position, a 7-bit count of its scorings and a committed bit. The evaluation protocols keep
 * one; a legality checker replays a run's events (score, commit, update) through one.
 *
 * - score: a target scored a second time is PG_E_ILLEGAL ("single pass violated") unless the
 *   ledger counts duplicates (the sliding tail variant); 127 scorings are PG_E_ILLEGAL always.
 * - commit: targets of a range that were scored become committed (once).
 * - update: a target an update weighs must be committed, else PG_E_ILLEGAL.
 * - complete: at the end every target must be committed. */
#ifndef PG_LEDGER_H
#define PG_LEDGER_H

#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_ledger pg_ledger;

typedef struct pg_ledger_summary {
  uint64_t targets;    /* T */
  uint64_t scored;     /* scorings, duplicates included */
  uint64_t duplicates; /* scorings of a target already scored */
  uint64_t committed;  /* targets committed */
} pg_ledger_summary;

/* A ledger of T targets, none scored; allow_duplicates counts a second scoring instead of
 * refusing it. */
int pg_ledger_create(pg_ledger **l, uint64_t T, int allow_duplicates, pg_err *err);
void pg_ledger_free(pg_ledger *l);

/* Score target t. *duplicate (may be NULL) is 1 when it had been scored before. */
int pg_ledger_score(pg_ledger *l, uint64_t t, int *duplicate, pg_err *err);
/* Commit the scored targets of [first, first + n) (the part inside the stream). */
void pg_ledger_commit(pg_ledger *l, uint64_t first, uint64_t n);
/* 1 when t is a target of the stream whose score is committed (t < 0: none). */
int pg_ledger_is_committed(const pg_ledger *l, int64_t t);
/* PG_E_ILLEGAL ("WHO would use target t before its score is committed") unless committed. */
int pg_ledger_check_update(const pg_ledger *l, int64_t t, const char *who, pg_err *err);
/* PG_E_ILLEGAL unless every target is committed. */
int pg_ledger_check_complete(const pg_ledger *l, pg_err *err);
/* Times t was scored (0 outside the stream). */
unsigned pg_ledger_count(const pg_ledger *l, uint64_t t);
void pg_ledger_summarize(const pg_ledger *l, pg_ledger_summary *s);

#ifdef __cplusplus
}
#endif
#endif
