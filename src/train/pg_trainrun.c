/* pg_trainrun.c: one training run (see pg_trainrun.h): the trainer, its steps, validations,
 * checkpoints and log stream. */
#include "pg_trainrun.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_ops.h"
#include "pg_text.h"
#include "pg_threads.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* One JSON line of the --log stream, flushed at once so the file can be followed; a failed write
 * (a full disk) fails the run. */
static int log_json(FILE *f, const char *path, json_t *o, pg_err *err) {
  int rc = PG_OK;
  if (f) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!s || fprintf(f, "%s\n", s) < 0 || fflush(f) != 0)
      rc = pg_err_set(err, s ? PG_E_IO : PG_E_NOMEM, path, PG_NO_OFFSET, "write failed: %s",
                      s ? strerror(errno) : "cannot format a line");
    free(s);
  }
  json_decref(o);
  return rc;
}

/* A validation of the live (export_weights 0) or exported weights, reported and logged. */
static int validate(const pg_trainrun_cfg *c, pg_trainer *t, FILE *logf, int export_weights,
                    const char *what, uint64_t step, double *loss, double *bpb,
                    uint64_t *targets, pg_err *err) {
  double vs = now_s();
  PG_TRY(pg_trainer_validate(t, export_weights, loss, bpb, targets, err));
  if (c->on_val) c->on_val(c->ctx, what, step, *loss, *bpb, *targets, now_s() - vs);
  return log_json(logf, c->log,
                  json_pack("{s:s,s:I,s:s,s:o,s:o}", "event", "val", "step", (json_int_t)step,
                            "weights", what, "loss", pg_json_num(*loss), "bpb",
                            pg_json_num(isnan(*bpb) ? -1.0 : *bpb)),
                  err);
}

/* The steps, from where the trainer stands to the total, the stop or the wall clock. */
static int steps(const pg_trainrun_cfg *c, pg_trainer *t, FILE *logf, double t0,
                 pg_train_step_info *info, double *train_secs, pg_err *err) {
  const pg_train_cfg *cfg = c->train;
  /* a wall-clock run without a step count: time the first steps, then fix the total */
  int probe = cfg->steps == 0 && pg_trainer_total(t) == 0;
  const uint64_t probe_steps = 3;
  double run_t0 = now_s(), last_log = now_s();
  uint64_t log_tokens0 = 0;
  double loss_acc = 0;
  uint64_t loss_n = 0;
  for (;;) {
    uint64_t total = pg_trainer_total(t), done = pg_trainer_step_count(t);
    if (total && done >= total) break;
    if (c->stop_after && done >= c->stop_after) break;
    if (cfg->seconds > 0 && !probe && now_s() - t0 >= cfg->seconds) break;
    PG_TRY(pg_trainer_step(t, info, err));
    loss_acc += info->loss;
    loss_n++;
    json_t *jl = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:b,s:I}", "event", "step", "step",
                           (json_int_t)info->step, "loss", pg_json_num(info->loss), "grad_norm",
                           pg_json_num(info->grad_norm), "lr_mul", pg_json_num(info->lr_mul),
                           "momentum", pg_json_num(info->momentum), "loops", info->loops,
                           "tokens", (json_int_t)info->tokens);
    PG_TRY(log_json(logf, c->log, jl, err));
    if (probe && info->step >= probe_steps) {
      double per = (now_s() - run_t0) / (double)probe_steps;
      /* seconds <= 1e9 (validated); the quotient is still clamped before it becomes a count */
      double q = floor(cfg->seconds / per);
      uint64_t tot = q < (double)PG_TRAIN_MAX_STEPS ? (uint64_t)q : PG_TRAIN_MAX_STEPS;
      if (tot < probe_steps) tot = probe_steps;
      pg_trainer_set_total(t, tot);
      probe = 0;
      if (c->on_total) c->on_total(c->ctx, per, tot);
    }
    total = pg_trainer_total(t);
    int last = total && info->step >= total;
    if (cfg->log_every && (info->step % cfg->log_every == 0 || last)) {
      double now = now_s();
      pg_trainrun_log line = {.info = info, .total = total,
                              .mean_loss = loss_acc / (double)loss_n,
                              .tokens_per_s = (double)(info->tokens - log_tokens0) /
                                              (now - last_log),
                              .elapsed = now - t0};
      if (c->on_log) c->on_log(c->ctx, &line);
      last_log = now;
      log_tokens0 = info->tokens;
      loss_acc = 0;
      loss_n = 0;
    }
    if (cfg->val_every && cfg->val[0] && info->step % cfg->val_every == 0 && !last) {
      double vl, vb, vs = now_s();
      uint64_t n;
      PG_TRY(validate(c, t, logf, 0, "live", info->step, &vl, &vb, &n, err));
      last_log += now_s() - vs; /* tokens/s counts training time only */
    }
    if (cfg->ckpt_every && info->step % cfg->ckpt_every == 0 && !last) {
      double cs = now_s();
      PG_TRY(pg_trainer_checkpoint(t, c->out, err));
      last_log += now_s() - cs;
      if (c->on_checkpoint) c->on_checkpoint(c->ctx, info->step, c->out);
    }
  }
  *train_secs = now_s() - run_t0;
  return PG_OK;
}

static int run(const pg_trainrun_cfg *c, pg_trainer **tp, FILE **logf, pg_trainrun_result *res,
               pg_err *err) {
  const pg_train_cfg *cfg = c->train;
  /* the log is a stream (spec/cli.md): written as the run goes, appended to on --resume */
  if (c->log && !(*logf = fopen(c->log, c->resume ? "a" : "w")))
    return pg_err_set(err, PG_E_IO, c->log, PG_NO_OFFSET, "cannot open for writing: %s",
                      strerror(errno));
  /* the engine: the one place this run chooses it */
  pg_engine cpu = pg_engine_cpu(c->threads);
  pg_engine *e = c->engine ? c->engine : &cpu;
  const int nthreads = e->info.threads;
  const double t0 = now_s();
  PG_TRY(pg_trainer_create(tp, cfg, e, err));
  pg_trainer *t = *tp;
  if (c->resume) PG_TRY(pg_trainer_resume(t, c->resume, err));
  if (c->on_begin) c->on_begin(c->ctx, t, nthreads);
  /* the untrained model's score, for comparison with the trained one */
  if (cfg->val[0] && pg_trainer_step_count(t) == 0) {
    double vl, vb;
    uint64_t n;
    PG_TRY(validate(c, t, *logf, 0, "initial", 0, &vl, &vb, &n, err));
  }
  pg_train_step_info info = {0};
  PG_TRY(steps(c, t, *logf, t0, &info, &res->seconds, err));
  PG_TRY(pg_trainer_checkpoint(t, c->out, err));
  if (cfg->val[0]) {
    const char *w = cfg->ema_decay > 0 ? "ema" : cfg->swa_every ? "swa" : "final";
    PG_TRY(validate(c, t, *logf, 1, w, pg_trainer_step_count(t), &res->val_loss, &res->val_bpb,
                    &res->val_targets, err));
  }
  res->steps = pg_trainer_step_count(t);
  res->total_steps = pg_trainer_total(t);
  res->tokens = info.tokens;
  res->last_loss = info.loss;
  if (*logf) {
    const int bad = fclose(*logf) != 0;
    *logf = NULL;
    if (bad)
      return pg_err_set(err, PG_E_IO, c->log, PG_NO_OFFSET, "cannot complete the write: %s",
                        strerror(errno));
  }
  return PG_OK;
}

int pg_trainrun(const pg_trainrun_cfg *c, pg_trainrun_result *res, pg_err *err) {
  memset(res, 0, sizeof *res);
  res->val_loss = res->val_bpb = NAN;
  pg_trainer *t = NULL;
  FILE *logf = NULL;
  int rc = run(c, &t, &logf, res, err);
  if (logf) fclose(logf);
  pg_trainer_free(t);
  return rc;
}
