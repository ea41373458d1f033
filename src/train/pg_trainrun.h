/* pg_trainrun.h: one training run, what pgtrain does between its options and its summary
 * (spec/train.md, spec/cli.md): the trainer on the CPU engine (pg_train.h), resumed from a
 * checkpoint when asked, the untrained model's score, the steps (a wall-clock run times its first
 * steps to fix its step count), the validations and checkpoints at their intervals, the final
 * checkpoint and the validation of the exported weights, and the --log stream of JSON lines
 * (one per step and one per validation, appended to on a resume).
 *
 * Nothing here prints: the run reports through callbacks. */
#ifndef PG_TRAINRUN_H
#define PG_TRAINRUN_H

#include <stdint.h>

#include "pg_status.h"
#include "pg_train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One line of the training log, every cfg.log_every steps and at the last step. */
typedef struct pg_trainrun_log {
  const pg_train_step_info *info; /* the step just taken */
  uint64_t total;                 /* the run's total steps */
  double mean_loss;               /* mean of the steps' losses since the previous line */
  double tokens_per_s;            /* training tokens per second of training time since then */
  double elapsed;                 /* seconds since the run began */
} pg_trainrun_log;

typedef struct pg_trainrun_cfg {
  const pg_train_cfg *train;  /* validated (pg_train_cfg_validate) */
  const char *out;            /* the checkpoint, written at ckpt_every and at the end */
  const char *resume;         /* continue the run saved in this checkpoint; NULL: a new run */
  const char *log;            /* JSON lines of every step and validation; NULL: none */
  uint64_t stop_after;        /* stop after this step without changing the schedule; 0: no */
  pg_engine *engine;          /* where the run computes (pg_engine_open); NULL: the CPU engine */
  int threads;                /* CPU threads (0: all) */
  int precision;              /* pg_precision of every rank's trainer (pg_trainer_set_precision;
                                 0: fp32) */
  /* Data parallel (pg_trainer_set_comm, spec/train.md §8): the nlocal ranks this process runs,
   * comms[i] driving engines[i], one thread each (engine is then unused). The local rank 0, if
   * any, leads: it alone validates, logs, writes the checkpoints and reports through the events
   * below, and it tells the others when to step and the total a wall-clock run fixed (one
   * broadcast per step). A rank that fails aborts the comm, which ends the others. comms NULL:
   * one rank on `engine`. */
  int nlocal;
  pg_engine *const *engines;
  pg_comm *const *comms;
  /* events (each may be NULL). on_begin: the trainer is built (and resumed); on_val: a
   * validation, `what` is "initial", "live", or for the exported weights "ema", "swa" or
   * "final" (bpb NaN without a tokenizer); on_total: a wall-clock run fixed its step count. */
  void (*on_begin)(void *ctx, pg_trainer *t, int threads);
  void (*on_val)(void *ctx, const char *what, uint64_t step, double loss, double bpb,
                 uint64_t targets, double seconds);
  void (*on_total)(void *ctx, double seconds_per_step, uint64_t total);
  void (*on_log)(void *ctx, const pg_trainrun_log *line);
  void (*on_checkpoint)(void *ctx, uint64_t step, const char *path);
  void *ctx;
} pg_trainrun_cfg;

typedef struct pg_trainrun_result {
  uint64_t steps, total_steps, tokens;
  double last_loss;
  double seconds;               /* training time, from the first step to the last */
  double val_loss, val_bpb;     /* of the exported weights; NaN without validation data (bpb
                                   also without a tokenizer) */
  uint64_t val_targets;
} pg_trainrun_result;

/* Run it. PG_OK once the final checkpoint is written (and the log complete). */
int pg_trainrun(const pg_trainrun_cfg *cfg, pg_trainrun_result *res, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
