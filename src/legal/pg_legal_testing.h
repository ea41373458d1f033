/* pg_legal_testing.h: the seams of pg_legal_run that only its tests use: faults injected into
 * the run that each check must catch (an update before scoring and a target scored twice, through
 * pg_eval_testing.h; byte tables that miscount; a smaller byte limit or a slower machine). A
 * leaking model is made with an engine instead (tests/pgleak.h), since the model is what L1 probes.
 * Not for tools. */
#ifndef PG_LEGAL_TESTING_H
#define PG_LEGAL_TESTING_H

#include "pg_legal.h"
#include "pg_spm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_legal_test {
  int inject_update_before_commit; /* the replay of L3 trains each chunk before scoring it */
  int inject_double_score;         /* the replay of L4 scores one target twice */
  void (*mutate_tables)(void *ctx, pg_spm_tables *t); /* after the tables are built */
  uint64_t budget; /* L5's limit instead of 16,000,000 (0: that), so that a test of an artifact
                      over it need not write 16 MB */
  double flops_per_s; /* L7's assumed rate instead of 8 x H100 at 40% (0: that), so that a test
                         model is over the limit */
  void *ctx;
} pg_legal_test;

int pg_legal_run_hooked(const pg_legal_cfg *cfg, const pg_legal_test *test, pg_legal_report *r,
                        pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
