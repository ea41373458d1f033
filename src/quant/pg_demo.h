/* pg_demo.h: a synthetic, untrained model of the record family written as an artifact (what
 * pgdemo makes): a real arch (the baseline of spec/arch.md with the sizes asked for) stored
 * canonically as "arch.json", and exactly that arch's tensors, initialized as a trainer would
 * (pg_model_init, with the output projections drawn too) and quantized the way the challenge's
 * SDClip recipe does (row scales fp16(k·std/R), round half to even; small tensors fp16). It gives
 * test fixtures and a quick artifact without training; the weights are untrained, so the artifact
 * exercises every byte path and loads as a model (pg_weights.h), not the score. */
#ifndef PG_DEMO_H
#define PG_DEMO_H

#include <stddef.h>
#include <stdint.h>

#include "pg_codec.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_demo_cfg {
  long layers, dim, heads, kv_heads, hidden, vocab; /* dim divisible by heads, heads by kv_heads */
  unsigned bits, embed_bits;     /* 5..8: the matrices and the tied embedding */
  double clip, embed_clip;       /* SDClip k of each */
  pg_codec_spec codec;           /* of every data section */
  int packed;                    /* bit-pack the values (else one per byte) */
  int layout;                    /* quant layout of the matrices: 2 (0: the default), stored
                                    transposed and each section's rows in similarity order where
                                    that is smaller, as pgpack does (not with packed); 1:
                                    row-major */
  int container;                 /* container version: 2 (0: the default) or 1 */
  uint64_t passthrough_max;      /* matrices of at most this many elements are stored fp16 */
  const char *const *code;       /* code files to embed (under their base names) */
  size_t ncode;
  const char *tokenizer;         /* a SentencePiece .model to embed; NULL: none */
  long seed;                     /* 0..2^31−1 */
  const char *out;               /* the artifact, written atomically */
  /* called once the model is quantized, before the sections are compressed and written */
  void (*on_write)(void *ctx, uint64_t params, uint64_t quantized, const char *codec_name);
  void *ctx;
} pg_demo_cfg;

/* Build, quantize and write the demo artifact. */
int pg_demo_write(const pg_demo_cfg *cfg, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
