/* pg_eval_testing.h: the seams of pg_eval that only its tests use, kept out of the public
 * pg_eval.h: a hook that rewrites the stream's tokens right after a chunk's commit (to show that
 * committed sums never change afterwards), and a fault injection that puts an update before its
 * chunk's commit, or a second scoring of a target (to show that the ledger stops them). Not for
 * tools or other library code, except pglegal's own test seam (pg_legal_testing.h), which passes
 * the fault injections through to show that its checks catch them. */
#ifndef PG_EVAL_TESTING_H
#define PG_EVAL_TESTING_H

#include "pg_eval.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_eval_test_hooks {
  /* Runs right after on_commit with the stream's tokens writable: tok is the test's own buffer,
   * the one val->tok points to (n tokens). Non-zero stops the run with PG_E_ARG. */
  int (*alter)(void *ctx, size_t chunk, const pg_eval_chunk *c, int32_t *tok, uint64_t n);
  int32_t *tok;
  void *ctx;
  /* Chunked TTT trains on each chunk before scoring it (the classic illegal order); the ledger
   * must stop the run with PG_E_ILLEGAL. */
  int inject_update_before_commit;
  /* The window protocols score the first target of the first window twice (a second pass); the
   * ledger must stop the run with PG_E_ILLEGAL. */
  int inject_double_score;
} pg_eval_test_hooks;

/* pg_eval_run with the test seams (test may be NULL: then it is pg_eval_run). */
int pg_eval_run_hooked(pg_model *m, pg_engine *e, const pg_val *val, const pg_protocol *p,
                       const pg_eval_hooks *hooks, const pg_eval_test_hooks *test,
                       pg_eval_result *res, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
