/* pg_account.h: the byte accounting of an artifact (spec/accounting.md): where every byte of the
 * file goes, the challenge's count (code + model, tokenizer optional) against a budget, and the
 * stored bytes attributed to each tensor. */
#ifndef PG_ACCOUNT_H
#define PG_ACCOUNT_H

#include <stdint.h>

#include "pg_container.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_DEFAULT_BUDGET 16000000ull

typedef struct pg_account_section {
  uint32_t index;
  int kind;
  pg_codec_spec codec;
  uint64_t raw, stored;
  char label[PG_MAX_NAME + 16]; /* "code train_gpt.py", "data 2", ... */
} pg_account_section;

typedef struct pg_account_tensor {
  uint32_t index;
  uint64_t numel;
  uint64_t raw;        /* bytes of its parts, decoded */
  double stored;       /* stored bytes attributed: Σ part.size × section.stored / section.raw */
  double bits_per_weight; /* 8·stored / numel (0 for an empty tensor) */
} pg_account_tensor;

typedef struct pg_account {
  uint64_t file_size;
  uint64_t frame;          /* header + section table */
  uint64_t code_stored;    /* CODE sections as stored */
  uint64_t code_file_bytes; /* the code files' own bytes, uncompressed */
  uint64_t tokenizer_stored;
  uint64_t model;          /* everything else: frame, META, TENSORS, DATA */
  int tokenizer_counted;
  uint64_t counted;        /* model + code (+ tokenizer when counted) */
  uint64_t budget;
  int64_t headroom;        /* budget - counted (negative when over) */
  uint32_t nsections;
  pg_account_section *sections;
  uint32_t ntensors;
  pg_account_tensor *tensors;
} pg_account;

/* Account for every byte of an opened artifact. */
int pg_account_artifact(pg_account *out, pg_artifact *a, uint64_t budget, int count_tokenizer,
                        pg_err *err);
void pg_account_free(pg_account *acc);

#ifdef __cplusplus
}
#endif
#endif
