/* pg_corpus.h: `pgshard encode` as a library: text documents (plain files, JSON lines) -> the
 * challenge's token shards, BOS before each document and no EOS, the first val_docs documents
 * to PREFIX_val_NNNNNN.bin and the rest to PREFIX_train_NNNNNN.bin, and DIR/manifest.json.
 * spec/shards.md §9 is the normative description.
 *
 * Every document is either encoded or the whole run refused with one line naming the input, the
 * line (JSON lines) and the fault; a refused or abandoned run leaves no shard behind. */
#ifndef PG_CORPUS_H
#define PG_CORPUS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pg_encode.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest document (and JSON line) read: SentencePiece indexes text with int. */
#define PG_CORPUS_MAX_DOC 0x7fffffffull

typedef struct pg_corpus_cfg {
  const char *dir;       /* output folder; created when missing */
  const char *prefix;    /* file-name prefix (no '/'); NULL: "fineweb" */
  uint64_t shard_tokens; /* tokens per shard, 1 .. 2^31-1; 0: 100,000,000 as the challenge */
  uint64_t val_docs;     /* documents in the validation split */
  int threads;           /* encoder threads (0: one per CPU) */
  size_t batch_docs;     /* documents encoded together (0: 1024); results do not depend on it */
  uint64_t max_doc;      /* largest document and JSON line in bytes (0: PG_CORPUS_MAX_DOC) */
} pg_corpus_cfg;

typedef struct pg_corpus_stats {
  uint64_t docs;         /* documents encoded */
  uint64_t val_docs;     /* of which in the validation split */
  uint64_t bytes_in;     /* UTF-8 bytes of their texts */
  uint64_t val_tokens;   /* tokens written to the validation shards (BOS included) */
  uint64_t train_tokens; /* tokens written to the training shards */
} pg_corpus_stats;

typedef struct pg_corpus pg_corpus;

/* Start a run with an open encoder (borrowed; it must outlive the run). PG_E_EXISTS when dir
 * already holds PREFIX_*.bin files; PG_E_VOCAB for a vocabulary over 65536 ids. */
int pg_corpus_open(pg_corpus **out, const pg_enc *enc, const pg_corpus_cfg *cfg, pg_err *err);

/* One plain-text document (UTF-8; PG_E_UTF8 with the offset of the first bad byte). name labels
 * errors and the manifest's inputs. */
int pg_corpus_add_text(pg_corpus *c, const char *text, size_t len, const char *name,
                       pg_err *err);
/* JSON lines from f: one document per line, the "text" string of an object; blank lines are
 * skipped. A line that is not such an object is PG_E_JSON naming the line and its offset. */
int pg_corpus_add_jsonl(pg_corpus *c, FILE *f, const char *name, pg_err *err);
/* A file: JSON lines when its name ends in ".jsonl", else one plain-text document. */
int pg_corpus_add_file(pg_corpus *c, const char *path, pg_err *err);

/* Encode what is pending, write the last shards and DIR/manifest.json (atomically). */
int pg_corpus_finish(pg_corpus *c, pg_err *err);

const pg_corpus_stats *pg_corpus_stats_of(const pg_corpus *c);
/* The shards written so far: validation ones first, then training ones. NULL past the end. */
size_t pg_corpus_nfiles(const pg_corpus *c);
const char *pg_corpus_file(const pg_corpus *c, size_t k);

/* Free; a run not successfully finished is abandoned: every shard it wrote is removed. */
void pg_corpus_free(pg_corpus *c);

#ifdef __cplusplus
}
#endif
#endif
