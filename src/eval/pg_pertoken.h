/* pg_pertoken.h: the per-target file (`pgverify --per-token FILE`, spec/eval.md §7.2): every
 * scored target's NLL and bytes, in the order the run adds them, so that two implementations can
 * be compared position by position and the file's NLLs added in order give the receipt's sum bit
 * for bit. Written to a temporary name and renamed when complete (pg_io.h). */
#ifndef PG_PERTOKEN_H
#define PG_PERTOKEN_H

#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_PERTOKEN_MAGIC "PGTOKNLL"
#define PG_PERTOKEN_VERSION 1u
#define PG_PERTOKEN_HEADER 24u  /* magic, version, record size, stream tokens */
#define PG_PERTOKEN_RECORD 24u  /* target, nll, bytes, flags */
#define PG_PERTOKEN_TRAILER 16u /* records, Σ nll */
#define PG_PERTOKEN_DUPLICATE 1u /* flags bit 0: the target was scored before */

typedef struct pg_pertoken pg_pertoken;

/* Begin the file at path (its temporary beside it) for a stream of stream_tokens tokens. */
int pg_pertoken_open(pg_pertoken **out, const char *path, uint64_t stream_tokens, pg_err *err);
/* One record; the signature of pg_eval_hooks.on_score with the writer as score_ctx (nonzero on
 * a write error, which the writer keeps for pg_pertoken_close). */
int pg_pertoken_add(void *writer, uint64_t target, double nll, uint32_t bytes, int duplicate);
/* Write the trailer and rename the file into place; frees the writer (also on failure, when
 * nothing is left behind). */
int pg_pertoken_close(pg_pertoken *w, pg_err *err);
/* Drop the file (a failed run): the temporary is removed, the writer freed. NULL is fine. */
void pg_pertoken_abort(pg_pertoken *w);

#ifdef __cplusplus
}
#endif
#endif
