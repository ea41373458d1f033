/* pg_byteproof.h: the byte proof of a tokenizer against token shards (spec/tokenizer.md): every
 * target's byte count from the byte tables compared with the UTF-8 length of its piece's text,
 * token by token, and optionally each document's table total with the length of the text a
 * decoder gives for it. The proof holds (`proven`) when no token and no document disagrees.
 * `pgshard prove-bytes` prints it; a legality checker calls it on the validation shards. */
#ifndef PG_BYTEPROOF_H
#define PG_BYTEPROOF_H

#include <stddef.h>
#include <stdint.h>

#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_BYTEPROOF_SHOWN 20 /* disagreements kept, the first ones */

typedef struct pg_byteproof_disagreement {
  uint64_t target;  /* position of the target in the stream */
  uint32_t prev, id;
  uint32_t table, decoded; /* its bytes by the tables, by the piece's text */
} pg_byteproof_disagreement;

typedef struct pg_byteproof {
  uint64_t targets;               /* n − 1 for n tokens (0 for none) */
  uint64_t table_bytes, decoded_bytes;
  uint64_t token_disagreements;
  uint64_t unknown_targets;       /* targets that are the UNKNOWN piece (their bytes are lost) */
  pg_byteproof_disagreement first[PG_BYTEPROOF_SHOWN];
  size_t nfirst;
  int documents_checked;          /* a decoder was given */
  uint64_t documents_ok, document_disagreements; /* documents the decoder gave text for */
  uint64_t first_bad_document;    /* the first whose length disagrees (0 when none) */
  int proven;
  double seconds;
} pg_byteproof;

/* The text length of a document's ids (its BOS dropped), from a real decoder (SentencePiece's);
 * non-zero when it cannot decode them (counted as a disagreement). */
typedef int (*pg_byteproof_decode)(void *ctx, const int32_t *ids, size_t n, size_t *text_len);
/* Progress: targets checked out of the total; a non-zero return stops the proof (PG_E_ARG). */
typedef int (*pg_byteproof_progress)(void *ctx, uint64_t done, uint64_t total);

/* Prove the byte tables tab of tokenizer m on every token of set (named name in errors), whose
 * ids must be inside m's vocabulary (pg_shard_set_check_vocab). decode (NULL: no document
 * check) and progress (NULL: none) take ctx. A disagreement is a result (proven 0), not an
 * error; errors are reading the shards and memory. */
int pg_byteproof_run(const pg_spm *m, const pg_spm_tables *tab, const pg_shard_set *set,
                     const char *name, pg_byteproof_decode decode, pg_byteproof_progress progress,
                     void *ctx, pg_byteproof *out, pg_err *err);

/* UTF-8 bytes of a piece as text: every U+2581 is one space (*starts_with_space when it leads);
 * a BYTE piece is one raw byte; CONTROL, UNKNOWN and UNUSED pieces give no text. */
uint32_t pg_byteproof_piece_bytes(const pg_spm_piece *p, int *starts_with_space);

#ifdef __cplusplus
}
#endif
#endif
