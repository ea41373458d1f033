/* pg_encode.h: text -> token ids (and back) exactly as SentencePiece does, through the
 * SentencePiece library itself (C API over C++; only pgencode links the library).
 *
 * The ids are those of SentencePieceProcessor::Encode (what `spm_encode --output_format=id`
 * prints for one line): no BOS or EOS is added; callers add them. The input must be valid UTF-8
 * (strict: pg_utf8_valid); anything else fails with PG_E_UTF8 and the offset of the first bad
 * byte. No C++ exception crosses this API: library failures become PG_E_ENCODER with one line of
 * text naming the model file. In a build without the library (have_encoder = false in meson)
 * every function below fails with PG_E_UNSUPPORTED. */
#ifndef PG_ENCODE_H
#define PG_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An opened SentencePiece model. Immutable once open: any number of threads may encode and
 * decode with one pg_enc at the same time. */
typedef struct pg_enc pg_enc;

/* 1 when this build links the SentencePiece library, 0 for the stub build. */
int pg_enc_available(void);

/* Open a SentencePiece model file (a serialized ModelProto, e.g. fineweb_8192_bpe.model).
 * PG_E_NOT_FOUND when the file does not exist, PG_E_IO when it cannot be read, PG_E_ENCODER when
 * SentencePiece rejects it, PG_E_NOMEM. On failure *out is NULL. */
int pg_enc_open(pg_enc **out, const char *model_path, pg_err *err);

/* Release everything (NULL is fine). */
void pg_enc_free(pg_enc *enc);

/* Number of pieces in the vocabulary (valid ids are 0 .. size-1). */
size_t pg_enc_vocab_size(const pg_enc *enc);

/* The model's special ids, -1 where it has none (the challenge's tokenizers: <pad> 0, <s> 1,
 * </s> 2, <unk> 3). Encoding never emits BOS or EOS; callers add pg_enc_bos_id themselves. */
int32_t pg_enc_bos_id(const pg_enc *enc);
int32_t pg_enc_eos_id(const pg_enc *enc);
int32_t pg_enc_unk_id(const pg_enc *enc);
int32_t pg_enc_pad_id(const pg_enc *enc);

/* The model path given to pg_enc_open (owned by enc). */
const char *pg_enc_model_path(const pg_enc *enc);

/* Encode len bytes of UTF-8 text (need not be NUL-terminated; NUL bytes are text like any other).
 * On success *ids is a malloc'd array (never NULL, even for *n == 0; free with free()) of *n ids.
 * On failure *ids is NULL and *n is 0. PG_E_ARG for NULL pointers with len > 0, and for texts of
 * 2^31 bytes or more (the library indexes characters with int). */
int pg_enc_encode(const pg_enc *enc, const char *text, size_t len, int32_t **ids, size_t *n,
                  pg_err *err);

/* Decode ids to text exactly as SentencePieceProcessor::Decode does (the normalized text, with
 * the leading space of the first piece removed). *text is malloc'd and NUL-terminated (*len bytes
 * before the NUL; free with free()). PG_E_TOKEN_RANGE (offset = index) for an id outside
 * 0 .. vocab_size-1. */
int pg_enc_decode(const pg_enc *enc, const int32_t *ids, size_t n, char **text, size_t *len,
                  pg_err *err);

/* One document for pg_enc_encode_many. */
typedef struct pg_enc_doc {
  const char *text;
  size_t len;
} pg_enc_doc;

/* Encode n_docs documents with up to `threads` threads (0: one per online CPU). The result does
 * not depend on the thread count: *ids is every document's ids concatenated in document order,
 * and *offsets (n_docs + 1 entries, (*offsets)[0] == 0) bounds them: document i is
 * (*ids)[(*offsets)[i] .. (*offsets)[i+1]). Both are malloc'd (never NULL on success; free with
 * free()) and *n_ids == (*offsets)[n_docs]. On failure both are NULL and the error is the one of
 * the lowest-numbered failing document (its number is in the message; for PG_E_UTF8 the offset
 * is within that document), whatever the thread count. */
int pg_enc_encode_many(const pg_enc *enc, const pg_enc_doc *docs, size_t n_docs, int threads,
                       int32_t **ids, size_t *n_ids, size_t **offsets, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
