/* pg_encode_none.c: the pg_encode.h API in a build without the SentencePiece library: every
 * function fails with PG_E_UNSUPPORTED (meson builds this when have_encoder is false). */
#include "pg_encode.h"

#include <stdlib.h>

struct pg_enc {
  int unused;
};

static int unsupported(pg_err *err) {
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                    "this build of pgolf has no SentencePiece encoder "
                    "(install libsentencepiece-dev and reconfigure)");
}

int pg_enc_available(void) { return 0; }

int pg_enc_open(pg_enc **out, const char *model_path, pg_err *err) {
  (void)model_path;
  if (out) *out = NULL;
  return unsupported(err);
}

void pg_enc_free(pg_enc *enc) { free(enc); }

size_t pg_enc_vocab_size(const pg_enc *enc) {
  (void)enc;
  return 0;
}

int32_t pg_enc_bos_id(const pg_enc *enc) {
  (void)enc;
  return -1;
}
int32_t pg_enc_eos_id(const pg_enc *enc) {
  (void)enc;
  return -1;
}
int32_t pg_enc_unk_id(const pg_enc *enc) {
  (void)enc;
  return -1;
}
int32_t pg_enc_pad_id(const pg_enc *enc) {
  (void)enc;
  return -1;
}

const char *pg_enc_model_path(const pg_enc *enc) {
  (void)enc;
  return "";
}

int pg_enc_encode(const pg_enc *enc, const char *text, size_t len, int32_t **ids, size_t *n,
                  pg_err *err) {
  (void)enc, (void)text, (void)len;
  if (ids) *ids = NULL;
  if (n) *n = 0;
  return unsupported(err);
}

int pg_enc_decode(const pg_enc *enc, const int32_t *ids, size_t n, char **text, size_t *len,
                  pg_err *err) {
  (void)enc, (void)ids, (void)n;
  if (text) *text = NULL;
  if (len) *len = 0;
  return unsupported(err);
}

int pg_enc_encode_many(const pg_enc *enc, const pg_enc_doc *docs, size_t n_docs, int threads,
                       int32_t **ids, size_t *n_ids, size_t **offsets, pg_err *err) {
  (void)enc, (void)docs, (void)n_docs, (void)threads;
  if (ids) *ids = NULL;
  if (n_ids) *n_ids = 0;
  if (offsets) *offsets = NULL;
  return unsupported(err);
}
