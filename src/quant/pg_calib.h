/* pg_calib.h: calibration for quantization (spec/quant.md §2): the calibration tokens (training
 * shards, or sequences the model samples itself), the refusal of a calibration set that is the
 * validation set, and the input Hessians of every quantized matrix collected with the engine's
 * forward pass. */
#ifndef PG_CALIB_H
#define PG_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "pg_gptq.h"
#include "pg_model.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_CALIB_SOURCE_MAX 1024

/* nseq sequences of T tokens, row-major. */
typedef struct pg_calib_set {
  int nseq, T;
  int32_t *tokens;
  char source[PG_CALIB_SOURCE_MAX]; /* what they are, for the artifact's provenance */
  uint64_t xxh64;                   /* XXH64 (seed 0) of the tokens as u16 little-endian */
} pg_calib_set;

void pg_calib_free(pg_calib_set *c);
/* The set's checksum: XXH64 (seed 0) of n tokens as u16 little-endian. */
uint64_t pg_calib_tokens_xxh64(const int32_t *t, size_t n);

/* The first nseq·T tokens of the shards matching `pattern` (sorted, in stream order), cut into
 * nseq rows of T. Refused with PG_E_ILLEGAL: a file whose name begins "fineweb_val_", and, when
 * val_pattern is given, a file that is one of the validation files (same resolved path) or has
 * the same content (same size and XXH64). Tokens ≥ vocab: PG_E_TOKEN_RANGE. Too few tokens:
 * PG_E_ARG. */
int pg_calib_from_shards(pg_calib_set *c, const char *pattern, const char *val_pattern, int nseq,
                         int T, uint32_t vocab, pg_err *err);

/* nseq sequences of T tokens sampled from the model itself (the records' self-generated
 * calibration): row r starts with a token drawn uniformly from the vocabulary, then each next
 * token is drawn from softmax(logits / temperature) of the last position (temperature 0:
 * argmax), rows generated `batch` at a time with the full prefix recomputed each step (no KV
 * cache: cost grows as T²). Deterministic for a seed. progress (may be NULL) is called after
 * each step with tokens done and total; a non-zero return cancels with PG_E_ARG. */
int pg_calib_self(pg_calib_set *c, pg_model *m, pg_engine *e, int nseq, int T,
                  double temperature, uint64_t seed, int batch,
                  int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
                  pg_err *err);

/* Input Hessians, one per distinct input (pg_model_set_observer): slot[i] is tensor i's Hessian
 * (−1: the tensor has none); c_q, c_k and c_v of a layer share one; a looped layer adds every
 * visit. H = Σ XᵀX over all calibration tokens (not divided). */
typedef struct pg_calib_hessians {
  size_t nt;
  long *slot;
  pg_hessian *H;
  size_t nh;
  uint64_t tokens; /* calibration tokens run through the model */
} pg_calib_hessians;

/* Run every calibration row through the model (inference, `batch` rows per forward) and collect
 * the Hessians. progress as above (tokens). */
int pg_calib_collect(pg_calib_hessians *out, pg_model *m, pg_engine *e, const pg_calib_set *c,
                     int batch, int nthreads,
                     int (*progress)(void *ctx, uint64_t done, uint64_t total), void *pctx,
                     pg_err *err);
void pg_calib_hessians_free(pg_calib_hessians *h);

#ifdef __cplusplus
}
#endif
#endif
