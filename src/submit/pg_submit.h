/* pg_submit.h: a challenge record folder written from an artifact, the receipts that scored it and
 * its training log: the artifact as final_model.pgolf.ptz, train_gpt.py, submission.json with the
 * records' fields, a README with the byte account, the protocol and the results, and SVG pictures.
 * spec/submit.md is the normative description; `pgsize DIR` reads the folder back. */
#ifndef PG_SUBMIT_H
#define PG_SUBMIT_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_SUBMIT_MODEL_NAME "final_model.pgolf.ptz"
#define PG_SUBMIT_MAX_RECEIPTS 64
#define PG_SUBMIT_LOG_MAX ((size_t)256 << 20) /* a training log larger than this: PG_E_LIMIT */

typedef struct pg_submit_cfg {
  const char *artifact;               /* the .pgz to submit (copied, never modified) */
  const char *code;                   /* train_gpt.py to ship; NULL: the artifact's own CODE
                                       * section named train_gpt.py */
  const char *const *receipts;        /* pgverify receipts of this artifact (1..64) */
  size_t nreceipts;
  const uint64_t *seeds;              /* NULL, or one seed per receipt */
  const char *train_log;              /* pgtrain --log JSON lines; NULL: none */
  const char *name, *author, *github_id, *date, *blurb; /* NULL: left out */
  const char *out;                    /* the folder to create */
} pg_submit_cfg;

/* Write the folder c->out: built in a temporary folder beside it and renamed into place, so a
 * failure leaves nothing. An existing c->out that is not an empty folder is PG_E_EXISTS; a receipt
 * of another file (its artifact bytes or xxh64 differ from c->artifact's) is PG_E_ARG naming it;
 * a malformed receipt or log line is the reader's error (PG_E_JSON, PG_E_MALFORMED). */
int pg_submit_write(const pg_submit_cfg *c, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
