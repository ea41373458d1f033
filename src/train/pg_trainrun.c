/* pg_trainrun.c: one training run (see pg_trainrun.h): the trainer, its steps, validations,
 * checkpoints and log stream. */
#include "pg_trainrun.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
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

/* Data parallel: the leader tells the other ranks, before each step, whether there is one and
 * the total (a wall-clock run fixes it after its probe). */
static int tell_ranks(pg_comm *comm, int go, pg_trainer *t, pg_err *err) {
  if (!comm) return PG_OK;
  uint64_t ctl[2] = {(uint64_t)go, pg_trainer_total(t)};
  return pg_comm_broadcast(comm, ctl, sizeof ctl, 0, err);
}

/* The steps, from where the trainer stands to the total, the stop or the wall clock. */
static int steps(const pg_trainrun_cfg *c, pg_trainer *t, pg_comm *comm, FILE *logf, double t0,
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
    const int go = !(total && done >= total) && !(c->stop_after && done >= c->stop_after) &&
                   !(cfg->seconds > 0 && !probe && now_s() - t0 >= cfg->seconds);
    PG_TRY(tell_ranks(comm, go, t, err));
    if (!go) break;
    PG_TRY(pg_trainer_step(t, info, err));
    loss_acc += info->loss;
    loss_n++;
    json_t *jl = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:b,s:I,s:i,s:s?}", "event", "step", "step",
                           (json_int_t)info->step, "loss", pg_json_num(info->loss), "grad_norm",
                           pg_json_num(info->grad_norm), "lr_mul", pg_json_num(info->lr_mul),
                           "momentum", pg_json_num(info->momentum), "loops", info->loops,
                           "tokens", (json_int_t)info->tokens, "ranks", pg_trainer_ranks(t),
                           "comm", comm ? pg_comm_backend_name(pg_comm_backend(comm)) : NULL);
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

static int run(const pg_trainrun_cfg *c, pg_engine *eng, pg_comm *comm, pg_trainer **tp,
               FILE **logf, pg_trainrun_result *res, pg_err *err) {
  const pg_train_cfg *cfg = c->train;
  /* the log is a stream (spec/cli.md): written as the run goes, appended to on --resume */
  if (c->log && !(*logf = fopen(c->log, c->resume ? "a" : "w")))
    return pg_err_set(err, PG_E_IO, c->log, PG_NO_OFFSET, "cannot open for writing: %s",
                      strerror(errno));
  /* the engine: the one place this run chooses it */
  pg_engine cpu = pg_engine_cpu(c->threads);
  pg_engine *e = eng ? eng : &cpu;
  const int nthreads = e->info.threads;
  const double t0 = now_s();
  PG_TRY(pg_trainer_create(tp, cfg, e, err));
  pg_trainer *t = *tp;
  pg_trainer_set_precision(t, (pg_precision)c->precision);
  PG_TRY(pg_trainer_set_comm(t, comm, err));
  if (c->resume) PG_TRY(pg_trainer_resume(t, c->resume, err));
  if (c->on_begin) c->on_begin(c->ctx, t, nthreads);
  /* the untrained model's score, for comparison with the trained one */
  if (cfg->val[0] && pg_trainer_step_count(t) == 0) {
    double vl, vb;
    uint64_t n;
    PG_TRY(validate(c, t, *logf, 0, "initial", 0, &vl, &vb, &n, err));
  }
  pg_train_step_info info = {0};
  PG_TRY(steps(c, t, comm, *logf, t0, &info, &res->seconds, err));
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

/* One rank's run: the leader's (run), or a follower's: the same trainer, resumed from the same
 * checkpoint, stepping when the leader says so. A failure aborts the comm. */
typedef struct rank_job {
  const pg_trainrun_cfg *c;
  pg_engine *e;
  pg_comm *comm;
  pg_trainrun_result res;
  int rc;
  pg_err err;
} rank_job;

static int follow(const pg_trainrun_cfg *c, pg_engine *e, pg_comm *comm, pg_trainer **tp,
                  pg_trainrun_result *res, pg_err *err) {
  PG_TRY(pg_trainer_create(tp, c->train, e, err));
  pg_trainer *t = *tp;
  pg_trainer_set_precision(t, (pg_precision)c->precision);
  PG_TRY(pg_trainer_set_comm(t, comm, err));
  if (c->resume) PG_TRY(pg_trainer_resume(t, c->resume, err));
  pg_train_step_info info = {0};
  const double t0 = now_s();
  for (;;) {
    uint64_t ctl[2];
    PG_TRY(pg_comm_broadcast(comm, ctl, sizeof ctl, 0, err));
    if (!ctl[0]) break;
    if (ctl[1]) pg_trainer_set_total(t, ctl[1]);
    PG_TRY(pg_trainer_step(t, &info, err));
  }
  res->seconds = now_s() - t0;
  res->steps = pg_trainer_step_count(t);
  res->total_steps = pg_trainer_total(t);
  res->tokens = info.tokens;
  res->last_loss = info.loss;
  return PG_OK;
}

static void *rank_main(void *arg) {
  rank_job *j = arg;
  pg_engine_enter(j->e);
  pg_trainer *t = NULL;
  FILE *logf = NULL;
  if (j->comm && pg_comm_rank(j->comm) != 0)
    j->rc = follow(j->c, j->e, j->comm, &t, &j->res, &j->err);
  else
    j->rc = run(j->c, j->e, j->comm, &t, &logf, &j->res, &j->err);
  if (j->rc) pg_comm_abort(j->comm);
  if (logf) fclose(logf);
  pg_trainer_free(t);
  return NULL;
}

int pg_trainrun(const pg_trainrun_cfg *c, pg_trainrun_result *res, pg_err *err) {
  memset(res, 0, sizeof *res);
  res->val_loss = res->val_bpb = NAN;
  const int n = c->comms ? c->nlocal : 1;
  if (n < 1 || n > PG_COMM_MAX_RANKS || (c->comms && !c->engines))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "trainrun: %d local ranks", n);
  rank_job *jobs = calloc((size_t)n, sizeof *jobs);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  int *started = calloc((size_t)n, sizeof *started);
  if (!jobs || !th || !started) {
    free(jobs);
    free(th);
    free(started);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  }
  for (int i = 0; i < n; i++) {
    jobs[i] = (rank_job){.c = c, .e = c->comms ? c->engines[i] : c->engine,
                         .comm = c->comms ? c->comms[i] : NULL};
    jobs[i].res.val_loss = jobs[i].res.val_bpb = NAN;
  }
  /* every rank on a thread of its own but the first, which runs here */
  for (int i = 1; i < n; i++) started[i] = !pthread_create(&th[i], NULL, rank_main, &jobs[i]);
  for (int i = 1; i < n; i++)
    if (!started[i]) {
      jobs[i].rc = pg_err_set(&jobs[i].err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                              "cannot start the thread of rank %d", pg_comm_rank(c->comms[i]));
      pg_comm_abort(c->comms[i]);
    }
  rank_main(&jobs[0]);
  for (int i = 1; i < n; i++)
    if (started[i]) pthread_join(th[i], NULL);
  /* the result of the leader (or of the first local rank); the first failure in rank order,
   * preferring a rank's own fault to the aborts it caused in the others */
  int lead = 0;
  for (int i = 0; i < n; i++)
    if (jobs[i].comm && pg_comm_rank(jobs[i].comm) == 0) lead = i;
  *res = jobs[lead].res;
  int rc = PG_OK;
  for (int pass = 0; pass < 2 && !rc; pass++)
    for (int i = 0; i < n && !rc; i++)
      if (jobs[i].rc && (pass || jobs[i].rc != PG_E_NCCL || !strstr(jobs[i].err.msg, "another"))) {
        rc = jobs[i].rc;
        *err = jobs[i].err;
      }
  if (c->comms) pg_engine_enter(c->engines[0]);
  free(jobs);
  free(th);
  free(started);
  return rc;
}
