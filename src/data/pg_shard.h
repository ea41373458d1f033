/* pg_shard.h: the challenge's token shards (the llm.c layout: 256 int32 header words, then uint16
 * tokens): reading and validating one shard or a sorted glob of them, writing a split into
 * fixed-size shards, validation trimming, BOS document listing, and the CaseOps byte sidecar.
 * spec/shards.md is the normative description. */
#ifndef PG_SHARD_H
#define PG_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_SHARD_MAGIC 20240520u
#define PG_SHARD_VERSION 1u
#define PG_SHARD_HEADER_WORDS 256u
#define PG_SHARD_HEADER_BYTES 1024u
#define PG_SHARD_MAX_TOKENS 0x7fffffffull /* header[2] is an int32: at most 2^31 - 1 tokens */
#define PG_BOS_ID 1u                      /* the only document delimiter */

/* ---- one shard ---- */

typedef struct pg_shard pg_shard;

/* Check a shard's bytes (untrusted): header and exact size. On success *count (may be NULL) is
 * the token count. name labels the error line (may be NULL). No allocation. */
int pg_shard_validate(const uint8_t *data, size_t len, const char *name, uint64_t *count,
                      pg_err *err);

/* Open a shard file read-only and validate its header and size; its tokens are read on demand
 * (pread), so a file that shrinks later makes those reads fail with PG_E_IO. */
int pg_shard_open(pg_shard **out, const char *path, pg_err *err);
/* Validate a shard held in memory. data is borrowed, not copied: it must outlive the shard. */
int pg_shard_open_mem(pg_shard **out, const uint8_t *data, size_t len, const char *name,
                      pg_err *err);
void pg_shard_free(pg_shard *s);

const char *pg_shard_name(const pg_shard *s);  /* path, or the name given to open_mem */
uint64_t pg_shard_count(const pg_shard *s);    /* N */
/* open_mem: the 2*N raw little-endian bytes (byte 1024 on); NULL for a file (read it with
 * pg_shard_copy). */
const uint8_t *pg_shard_data(const pg_shard *s);
/* token i (i < N; 0 when out of range or unreadable: use pg_shard_copy to tell) */
uint16_t pg_shard_token(const pg_shard *s, uint64_t i);
/* Copy tokens [start, start+n) to host order. PG_E_ARG when the range leaves the shard. */
int pg_shard_copy(const pg_shard *s, uint64_t start, uint64_t n, uint16_t *dst, pg_err *err);
/* PG_E_TOKEN_RANGE for the first token >= vocab, at its byte offset 1024 + 2*i. */
int pg_shard_check_vocab(const pg_shard *s, uint32_t vocab, pg_err *err);

/* ---- a set of shards: sorted(glob(pattern)), concatenated ---- */

typedef struct pg_shard_set pg_shard_set;

typedef struct pg_shard_file {
  const char *path;
  uint64_t count; /* tokens in this file */
  uint64_t first; /* global index of its first token */
} pg_shard_file;

/* Leave out files whose name (last path component) contains "_bytes_", as the CaseOps records'
 * load_validation_tokens does, so fineweb_val_*.bin does not pick up the byte sidecar. */
#define PG_SHARD_SKIP_BYTES 1u

/* Expand pattern with glob(3), sort the matches byte-wise (strcmp, = Python's sorted()), open
 * and validate each. No match (after filtering) is PG_E_EMPTY_SET naming the pattern. */
int pg_shard_set_open(pg_shard_set **out, const char *pattern, pg_err *err);
int pg_shard_set_open_ex(pg_shard_set **out, const char *pattern, unsigned flags, pg_err *err);
void pg_shard_set_free(pg_shard_set *set);

const char *pg_shard_set_pattern(const pg_shard_set *set);
uint64_t pg_shard_set_count(const pg_shard_set *set); /* total tokens */
size_t pg_shard_set_nfiles(const pg_shard_set *set);
const pg_shard_file *pg_shard_set_file(const pg_shard_set *set, size_t k); /* NULL past the end */
const pg_shard *pg_shard_set_shard(const pg_shard_set *set, size_t k);     /* NULL past the end */
uint16_t pg_shard_set_token(const pg_shard_set *set, uint64_t i); /* global i; 0 out of range
                                                                   or unreadable */
/* Copy global tokens [start, start+n) across file boundaries. PG_E_ARG out of range. */
int pg_shard_set_copy(const pg_shard_set *set, uint64_t start, uint64_t n, uint16_t *dst,
                      pg_err *err);
int pg_shard_set_copy_i32(const pg_shard_set *set, uint64_t start, uint64_t n, int32_t *dst,
                          pg_err *err);
/* The first token >= vocab in set order: PG_E_TOKEN_RANGE naming its file and byte offset. */
int pg_shard_set_check_vocab(const pg_shard_set *set, uint32_t vocab, pg_err *err);

/* ---- the CaseOps byte sidecar (fineweb_val_bytes_*.bin) ---- */

/* Open the sidecar set (no filtering) and require its count to equal the token set's count
 * (PG_E_SIZE_MISMATCH naming the pattern otherwise). */
int pg_sidecar_open(pg_shard_set **out, const char *pattern, const pg_shard_set *tokens,
                    pg_err *err);
/* Count check alone (PG_E_SIZE_MISMATCH). */
int pg_sidecar_check_count(const pg_shard_set *bytes, const pg_shard_set *tokens, pg_err *err);
/* Optional content check: the entry of every BOS token is 0 (the exporter writes 0 there).
 * The first disagreement is PG_E_MALFORMED naming the sidecar file and byte offset. */
int pg_sidecar_check_bos(const pg_shard_set *bytes, const pg_shard_set *tokens, pg_err *err);
/* Total of the entries [start, start+n) (the byte count of those tokens). PG_E_ARG out of
 * range. */
int pg_sidecar_sum(const pg_shard_set *bytes, uint64_t start, uint64_t n, uint64_t *sum,
                   pg_err *err);

/* ---- the validation stream, as the scoring tools read it ---- */

/* The tokens pgverify and pgtrain score, with their byte counts where a sidecar gives them. */
typedef struct pg_val_data {
  pg_shard_set *set;   /* the token shards (names with _bytes_ left out) */
  pg_shard_set *bset;  /* the sidecar set, or NULL */
  int32_t *tok;        /* n tokens in host order (malloc'd, never NULL after a successful open) */
  uint16_t *bytes;     /* n sidecar entries aligned with tok, or NULL without a sidecar */
  uint64_t n;          /* tokens read: the set's count, or max_tokens when that is smaller */
  uint64_t available;  /* tokens in the set */
} pg_val_data;

/* Open pattern with PG_SHARD_SKIP_BYTES, check every id against vocab (PG_E_TOKEN_RANGE naming
 * the file), read the first n tokens (max_tokens 0: all); with bytes_pattern (may be NULL), open
 * the sidecar (pg_sidecar_open: equal counts), require 0 for every BOS (pg_sidecar_check_bos) and
 * read its first n entries. On failure *v is zeroed and nothing stays open. */
int pg_val_data_open(pg_val_data *v, const char *pattern, const char *bytes_pattern,
                     uint32_t vocab, uint64_t max_tokens, pg_err *err);
void pg_val_data_free(pg_val_data *v);

/* ---- writing ---- */

typedef struct pg_shard_writer pg_shard_writer;

/* Write DIR/PREFIX%06d.bin shards of at most shard_tokens tokens (1 .. 2^31-1), numbered from 0.
 * A shard is written (atomically, pg_out_*) as soon as it is full; finish writes the last
 * partial one. No tokens at all: no file. dir must exist. */
int pg_shard_writer_open(pg_shard_writer **out, const char *dir, const char *prefix,
                         uint64_t shard_tokens, pg_err *err);
int pg_shard_writer_append(pg_shard_writer *w, const uint16_t *tok, size_t n, pg_err *err);
/* Write the last partial shard. After an error the writer has removed every file it wrote. */
int pg_shard_writer_finish(pg_shard_writer *w, pg_err *err);
uint64_t pg_shard_writer_count(const pg_shard_writer *w);  /* tokens appended */
size_t pg_shard_writer_nfiles(const pg_shard_writer *w);   /* files written so far */
const char *pg_shard_writer_path(const pg_shard_writer *w, size_t k); /* NULL past the end */
/* Remove every file this writer wrote (finished or not) and free it. */
void pg_shard_writer_abort(pg_shard_writer *w);
/* Free; a writer not successfully finished is aborted first (its files removed). Until then its
 * committed files stay in pg_io.h's registry of temporaries: a program interrupted before it
 * freed the writer removes them (pg_tmp_remove_all), as it removes the open shard's temporary. */
void pg_shard_writer_free(pg_shard_writer *w);

/* ---- validation trimming and documents ---- */

/* Tokens kept by load_validation_tokens: ((n-1)/seq_len)*seq_len + 1, or 0 when nothing can be
 * scored (n - 1 < seq_len, n == 0, or seq_len == 0). */
uint64_t pg_val_trim(uint64_t n, uint64_t seq_len);

/* One document as _find_docs gives it: tokens [start, start+len). len includes the next
 * document's BOS for every document but the last, whose len is n - start. */
typedef struct pg_doc {
  uint64_t start, len;
} pg_doc;

/* List the documents of tok[0..n): one per BOS (PG_BOS_ID). Tokens before the first BOS belong
 * to no document; their number goes to *skipped (may be NULL). A document with len < 2 (only
 * possible for a BOS as the last token) is PG_E_MALFORMED naming its index and position, as the
 * challenge's assert fails there. *docs is malloc'd (NULL when *ndocs == 0); free() it. name
 * labels the error line (may be NULL). */
int pg_docs_list(const uint16_t *tok, uint64_t n, const char *name, pg_doc **docs,
                 uint64_t *ndocs, uint64_t *skipped, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
