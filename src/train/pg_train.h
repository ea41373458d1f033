/* pg_train.h: the trainer (spec/train.md): a JSON configuration (arch, data, optimizers,
 * schedule, averaging), the records' parameter partition (Muon for the block matrices, AdamW for
 * the embeddings and for the scalars), one optimizer step at a time over the engine's forward and
 * backward, periodic validation, and checkpoints (safetensors: the weights to export under the
 * arch's names, the training state under "train.", the position of the data and the counters in
 * __metadata__) from which a resumed run continues bit for bit. */
#ifndef PG_TRAIN_H
#define PG_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_comm.h"
#include "pg_model.h"
#include "pg_muon.h"
#include "pg_engine.h"
#include "pg_sched.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_TRAIN_PATH_MAX 1024
/* Limits of the schedule (spec/train.md §2): a wall-clock limit of at most 10^9 s (about 31
 * years) and at most 2^62 steps keep every step count and its conversions exact. */
#define PG_TRAIN_MAX_SECONDS 1e9
#define PG_TRAIN_MAX_STEPS (UINT64_C(1) << 62)

/* Optimizer of one parameter group. */
enum pg_train_opt { PG_TOPT_MUON = 0, PG_TOPT_ADAMW = 1, PG_TOPT_SGD = 2 };

typedef struct pg_train_group {
  int kind;                  /* enum pg_train_opt (muon only for the matrix group) */
  double lr, weight_decay;   /* AdamW: decoupled; SGD: must be 0 */
  double momentum;           /* SGD */
} pg_train_group;

enum pg_train_group_id { PG_TRAIN_GROUP_MATRIX = 0, PG_TRAIN_GROUP_EMBED = 1,
                         PG_TRAIN_GROUP_SCALAR = 2, PG_TRAIN_GROUP_N = 3 };
const char *pg_train_group_name(int g);

typedef struct pg_train_cfg {
  pg_arch arch;
  char arch_file[2 * PG_TRAIN_PATH_MAX]; /* the file the arch was read from ("" when inline) */
  /* data */
  char train[PG_TRAIN_PATH_MAX]; /* shard pattern */
  char val[PG_TRAIN_PATH_MAX];   /* validation pattern ("" = no validation) */
  char tokenizer[PG_TRAIN_PATH_MAX]; /* .model for val_bpb ("" = loss only) */
  int loader;                    /* enum pg_batches_mode */
  int seq_len, batch;            /* rows of T tokens (+1 target), B rows per step */
  uint64_t data_seed, init_seed;
  /* optimizers */
  pg_train_group group[PG_TRAIN_GROUP_N];
  pg_muon_opts muon;             /* the matrix group when kind is muon (lr and wd from group) */
  double beta1, beta2, eps;      /* AdamW groups */
  double grad_clip;              /* global L2 norm; 0 = none */
  /* schedule and limits */
  uint64_t steps;                /* total steps (0 with seconds: estimated, spec/train.md §4) */
  double seconds;                /* wall-clock limit (0 = none) */
  pg_lr_sched sched;
  /* averaging */
  double ema_decay;              /* 0 = off */
  uint64_t swa_every;            /* 0 = off */
  uint64_t swa_start;            /* collect from this step on (1-based count) */
  double swa_below;              /* ... and while the lr multiplier is below this */
  /* logging, validation, checkpoints */
  uint64_t log_every, val_every, ckpt_every;
  uint64_t val_tokens;           /* validation prefix (0 = all) */
} pg_train_cfg;

/* The defaults (spec/train.md §2): the baseline arch, sequential data of 8 × 256, Muon (lr 0.02,
 * μ 0.95 warmed up from 0.85 over 100 steps, Nesterov, classic NS ×5, no row normalization, no
 * weight decay), AdamW embeddings lr 0.03 and scalars lr 0.02 (β 0.9/0.95, eps 1e-8, no weight
 * decay), clip 0 (off), 200 steps, no warm-up, warmdown 0.3, floor 0, no averaging, log every
 * 10, no validation or checkpoints in between. */
void pg_train_cfg_default(pg_train_cfg *c);
/* Parse a configuration (spec/train.md §2); unknown keys are errors. file names the source. */
int pg_train_cfg_parse(pg_train_cfg *c, const char *json, size_t len, const char *file,
                       pg_err *err);
int pg_train_cfg_load(pg_train_cfg *c, const char *path, pg_err *err);
int pg_train_cfg_validate(const pg_train_cfg *c, pg_err *err);
/* Canonical JSON of the whole configuration (malloc'd; keys sorted). */
char *pg_train_cfg_json(const pg_train_cfg *c);

/* What one step did. */
typedef struct pg_train_step_info {
  uint64_t step;       /* the step just taken (1-based count after it) */
  double loss;         /* mean NLL over the batch's targets (nats) */
  double grad_norm;    /* before clipping */
  double lr_mul, momentum;
  int loops;           /* depth recurrence was on */
  uint64_t tokens;     /* training tokens seen so far */
} pg_train_step_info;

typedef struct pg_trainer pg_trainer;

/* Open the data, build the model (pg_model_init with init_seed) on engine e and the optimizers,
 * whose state is e's memory and whose steps are e's ops (spec/train.md §2.2). Every op runs on
 * e's own threads. */
int pg_trainer_create(pg_trainer **out, const pg_train_cfg *c, pg_engine *e, pg_err *err);
void pg_trainer_free(pg_trainer *t);
const pg_train_cfg *pg_trainer_cfg(const pg_trainer *t);
pg_model *pg_trainer_model(pg_trainer *t);

/* Total steps of the run (the configured steps, or the estimate fixed by
 * pg_trainer_set_total). */
uint64_t pg_trainer_total(const pg_trainer *t);
uint64_t pg_trainer_step_count(const pg_trainer *t);
/* Fix the total (a wall-clock run does after timing its first steps); 0 < total. */
void pg_trainer_set_total(pg_trainer *t, uint64_t total);

/* Data-parallel training (spec/train.md §8): t becomes rank pg_comm_rank(c) of pg_comm_size(c)
 * ranks, each a trainer made from the same configuration on the comm's engine. Every rank reads
 * the whole batch and runs its share, B / N rows from row rank·B / N; the per-token losses are
 * gathered and the gradients all-reduced in rank order (pg_comm.h) before the clip and the
 * optimizers, which every rank then runs alike (replicated state). Each step is a collective:
 * every rank steps together. B not a multiple of N, or a comm of another engine: PG_E_ARG.
 * NULL (or one rank): the one-engine trainer. */
int pg_trainer_set_comm(pg_trainer *t, pg_comm *c, pg_err *err);
/* 1, or the comm's rank count. */
int pg_trainer_ranks(const pg_trainer *t);

/* The numerics of the run's passes (spec/train.md §10). PG_PREC_FP32, the default: fp32 with the
 * ops' exact sums. PG_PREC_BF16: the model's forward at the records' bf16 rounding points
 * (spec/engine.md §7), and on an engine opened with precision bf16 its fast kernels (the products
 * and attention's forward), the backward products included (pg_engine.bf16_grad); norms, softmax
 * statistics, gradients, optimizer state and master weights stay fp32, the loss sum fp64.
 * Validation runs in the same precision. */
void pg_trainer_set_precision(pg_trainer *t, pg_precision p);
pg_precision pg_trainer_precision(const pg_trainer *t);

/* One step: a batch from the loader, forward, backward, clip, the optimizers at the scheduled
 * rate, then the averages. */
int pg_trainer_step(pg_trainer *t, pg_train_step_info *info, pg_err *err);

/* The weights to export: the EMA when on, else the SWA average when it has collected, else the
 * live weights; copied into dst (a model of the same arch). */
int pg_trainer_export(pg_trainer *t, pg_model *dst, pg_err *err);

/* Validation (plain windows of seq_len over the first val_tokens validation tokens) of the live
 * weights, or of the export weights. bpb is NaN without a tokenizer. */
int pg_trainer_validate(pg_trainer *t, int export_weights, double *loss, double *bpb,
                        uint64_t *targets, pg_err *err);

/* Write a checkpoint atomically (spec/train.md §5). */
int pg_trainer_checkpoint(pg_trainer *t, const char *path, pg_err *err);
/* Continue from a checkpoint of a run with the same configuration (the run's identity: every
 * setting but the limits, logging, validation and checkpoint intervals); PG_E_ARG otherwise. */
int pg_trainer_resume(pg_trainer *t, const char *path, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
