/* pg_packjob.h: one packing job, what pgpack does between its options and its report
 * (spec/quant.md, spec/cli.md): load the weights (safetensors, a pgtrain checkpoint or an
 * artifact to re-pack) and their arch, read the tokenizer and code files, collect calibration
 * tokens (training shards or self-generated, never validation) and the input Hessians, quantize
 * with the recipe (pg_pack.h), fit the clip constants to a byte budget or pack once, write the
 * artifact atomically, and account for the written file as pgsize does (pg_account.h).
 *
 * Nothing here prints: each step is announced to on_step when it begins and when it ends, with
 * the job's state so far, and the long ones report progress through callbacks. */
#ifndef PG_PACKJOB_H
#define PG_PACKJOB_H

#include <stddef.h>
#include <stdint.h>

#include "pg_account.h"
#include "pg_calib.h"
#include "pg_container.h"
#include "pg_fit.h"
#include "pg_model.h"
#include "pg_pack.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The steps of a job, in order; CALIB and HESSIANS only with calibration, FIT only with a
 * budget, QUANTIZE and PACK only without one. */
enum pg_packjob_step {
  PG_PACKJOB_WEIGHTS = 0,
  PG_PACKJOB_CALIB,
  PG_PACKJOB_HESSIANS,
  PG_PACKJOB_FIT,
  PG_PACKJOB_QUANTIZE,
  PG_PACKJOB_PACK,
  PG_PACKJOB_WRITE,
};

/* How a budget is fitted. */
enum pg_packjob_fit { PG_FIT_K = 0, PG_FIT_LOSS = 1 };

typedef struct pg_packjob pg_packjob;

typedef struct pg_packjob_cfg {
  const char *weights;       /* safetensors, a pgtrain checkpoint, or an artifact (re-pack) */
  const char *arch;          /* an arch JSON file; NULL: the weights' own "arch.json" */
  const char *tokenizer;     /* a SentencePiece .model to embed; NULL: none */
  const char *const *code;   /* code files to embed (their base names are recorded) */
  size_t ncode;
  const char *out;           /* the artifact to write */
  const char *calib;         /* "none", "self", or a training shard pattern */
  const char *val;           /* validation shards a shard calibration set must not equal; NULL */
  int calib_seqs, calib_len, calib_batch;
  double temperature;        /* self-generation */
  uint64_t seed;             /* self-generation, recorded as provenance.seed */
  pg_pack_recipe recipe;     /* recipe.nthreads is set from threads */
  uint64_t budget;           /* fit to this many counted bytes; 0: pack once, budget 16,000,000 */
  int fit_cat;               /* with a budget: also fit this category's bits (−1: none) */
  unsigned fit_mask;         /* ... trying these bits (bit b: b bits) */
  double fit_tolerance;
  int fit_method;            /* with a budget: PG_FIT_K (the clip multiplier, 0) or PG_FIT_LOSS
                                (per-tensor bits and clip, pg_fit.h; needs calibration) */
  int fit_probe_seqs;        /* PG_FIT_LOSS: calibration rows of the sensitivities (0: all) */
  int fit_measure;           /* PG_FIT_LOSS: search builds measured at most (0: 8; < 0: none,
                                the choice by expected loss, no k fit candidate) */
  int fit_measure_seqs;      /* PG_FIT_LOSS with shard calibration: rows of calib_len after the
                                calibration rows that the measured losses use (0: 256) */
  int count_tokenizer;       /* the budget counts the tokenizer section */
  pg_engine *engine;         /* where calibration runs (pg_engine_open); NULL: the CPU engine */
  int threads;               /* CPU threads (0: all) */
  const char *writer;        /* the artifact's writer; NULL: "pgpack " PG_VERSION */
  /* events (each may be NULL) */
  void (*on_step)(void *ctx, int step, int done, const pg_packjob *job);
  int (*progress)(void *ctx, uint64_t done, uint64_t total);     /* calibration */
  void (*on_tensor)(void *ctx, size_t done, size_t total, const char *name); /* quantization */
  void (*on_trial)(void *ctx, const pg_pack_trial *t);           /* the fit */
  void (*on_point)(void *ctx, const pg_fit_point *pt);           /* the loss fit */
  void (*on_fit_progress)(void *ctx, const char *what, size_t done, size_t total);
  void *ctx;
} pg_packjob_cfg;

/* The job's state: what each step has produced when it announces its end. */
struct pg_packjob {
  const pg_packjob_cfg *cfg;
  pg_model *model;              /* WEIGHTS: the weights as a model */
  pg_artifact *source;          /* ... the artifact they came from (NULL: safetensors) */
  char *record, *record_protocol; /* ... their provenance.record / .protocol (NULL: none) */
  pg_calib_set calib;           /* CALIB */
  pg_calib_set measure;         /* FIT (PG_FIT_LOSS): the calibration rows and the held-out rows
                                   after them (nseq 0: none, the calibration rows measure) */
  pg_calib_hessians hessians;   /* HESSIANS */
  int threads;                  /* the engine's threads */
  char engine_name[16];         /* the engine's name ("cpu") */
  pg_packer *packer;            /* FIT / QUANTIZE: the quantized tensors and their reports */
  pg_pack_trial *trials;        /* FIT (PG_FIT_K): every trial, and the one chosen */
  size_t ntrials, chosen;
  pg_fit_result fit;            /* FIT (PG_FIT_LOSS): the curve, the chosen point */
  int have_fit;
  double mu;                    /* the clip multiplier of the written artifact (1 without fit) */
  uint64_t counted;             /* its counted bytes as the packer computed them */
  uint8_t *bytes;               /* PACK / FIT: the artifact's bytes */
  size_t len;
  uint64_t budget;              /* the budget accounted against (cfg->budget or 16,000,000) */
  pg_account account;           /* after WRITE: pgsize's accounting of the written file */
  int have_account;
  /* owned inputs */
  uint8_t *tokenizer_bytes;
  size_t tokenizer_len;
  uint8_t **code_bytes;
  pg_pack_code *codes;
  pg_artifact *written;
};

/* Run the job into *job (zeroed first; free it with pg_packjob_free, also after a failure).
 * PG_OK once the artifact is written and accounted; whether it is within the budget is
 * job->account.counted ≤ job->budget. */
int pg_packjob_run(pg_packjob *job, const pg_packjob_cfg *cfg, pg_err *err);
void pg_packjob_free(pg_packjob *job);

#ifdef __cplusplus
}
#endif
#endif
