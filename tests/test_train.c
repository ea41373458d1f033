/* test_train.c: the trainer (spec/train.md): configuration parsing and its errors, the parameter
 * groups, recurrence and schedule per step, learning on a learnable stream, checkpoints that
 * pgpack's loader reads, and resumed runs whose loss curve equals the uninterrupted one bit for
 * bit (every loader mode, every optimizer kind, EMA and SWA). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "pgremote.h"
#include "pg_io.h"
#include "pg_weights.h"
#include "pg_batches.h"
#include "pg_muon.h"
#include "pg_ops.h"
#include "pg_safetensors.h"
#include "pg_shard.h"
#include "pg_tape.h"
#include "pg_train.h"
#include "pgfiller.h"
#include "pgshards.h"
#include "pgtest.h"

static char dir[64];

/* learnable streams of ids below 64 (pgshards.h) */
static void setup(void) {
  pgtest_mkdtemp(dir, "pgtrain");
  pgshards_trainer_data(dir, 62);
}
static void teardown(void) { pgtest_rm_rf(dir); }
TestSuite(train, .init = setup, .fini = teardown);

static const char *ARCH =
    "{\"vocab_size\": 64, \"dim\": 32, \"layers\": 3, \"heads\": 2, \"kv_heads\": 1, "
    "\"mlp\": {\"hidden\": 64}, \"structure\": {\"skips\": \"gated\", \"encoder\": [0, 1, 1], "
    "\"decoder\": [2], \"recur_frac\": 0.5}}";

/* A configuration text with the given extra top-level members (may be ""). */
static void config(pg_train_cfg *c, const char *loader, const char *optimizer, const char *avg,
                   int steps) {
  char json[4096];
  snprintf(json, sizeof json,
           "{\"arch\": %s, \"data\": {\"train\": \"%s/train/fineweb_train_*.bin\", "
           "\"val\": \"%s/val/fineweb_val_*.bin\", \"loader\": \"%s\", \"seq_len\": 16, "
           "\"batch\": 3, \"seed\": 5}, \"init_seed\": 3, \"optimizer\": %s, "
           "\"schedule\": {\"steps\": %d, \"warmup_steps\": 2, \"warmdown_frac\": 0.5, "
           "\"min_lr\": 0.1}, \"averaging\": %s}",
           ARCH, dir, dir, loader, optimizer, steps, avg);
  pg_err e;
  cr_assert_eq(pg_train_cfg_parse(c, json, strlen(json), "t.json", &e), PG_OK, "%s", e.msg);
}

static const char *MUON =
    "{\"matrix\": {\"kind\": \"muon\", \"lr\": 0.02, \"momentum\": 0.95, \"momentum_start\": "
    "0.85, \"momentum_warmup\": 4, \"row_normalize\": true, \"ns\": \"polar_express\"}, "
    "\"embed\": {\"lr\": 0.05, \"weight_decay\": 0.01}, \"scalar\": {\"lr\": 0.02}, "
    "\"grad_clip\": 0.3}";

static pg_trainer *trainer(const pg_train_cfg *c, pg_engine *e) {
  pg_trainer *t;
  pg_err err;
  cr_assert_eq(pg_trainer_create(&t, c, e, &err), PG_OK, "%s", err.msg);
  return t;
}

Test(train, config_defaults_and_errors) {
  pg_train_cfg c;
  pg_err e;
  const char *ok = "{\"data\": {\"train\": \"x/*.bin\"}}";
  cr_assert_eq(pg_train_cfg_parse(&c, ok, strlen(ok), "a.json", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(c.group[PG_TRAIN_GROUP_MATRIX].kind, PG_TOPT_MUON);
  cr_assert_eq(c.steps, 200u);
  cr_assert_eq(c.arch.layers, 9, "the baseline arch by default");
  struct {
    const char *json, *want;
  } bad[] = {
      {"{\"data\": {\"train\": \"x\"}, \"optimiser\": {}}", "optimiser: unknown key"},
      {"{\"data\": {\"train\": \"x\", \"loader\": \"random\"}}", "data.loader"},
      {"{\"data\": {\"train\": \"x\"}, \"optimizer\": {\"embed\": {\"kind\": \"muon\"}}}",
       "muon is for the matrix group"},
      {"{\"data\": {\"train\": \"x\"}, \"optimizer\": {\"scalar\": {\"ns\": \"classic\"}}}",
       "only the matrix group"},
      {"{\"data\": {\"train\": \"x\"}, \"schedule\": {\"steps\": -3}}", "schedule.steps"},
      {"{\"data\": {\"train\": \"x\"}, \"schedule\": {\"steps\": 0}}", "give steps"},
      {"{\"data\": {}}", "data.train"},
      {"{\"data\": {\"train\": \"x\"}, \"arch\": {\"dim\": 0}}", "dim"},
      {"[1, 2]", "not a JSON object"},
      {"{\"data\": {\"train\": \"x\"}, \"optimizer\": {\"betas\": [0.9]}}", "betas"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_neq(pg_train_cfg_parse(&c, bad[i].json, strlen(bad[i].json), "b.json", &e), PG_OK,
                  "%s", bad[i].json);
    cr_assert(strstr(e.msg, bad[i].want), "%s: %s", bad[i].json, e.msg);
    cr_assert(strstr(e.msg, "b.json"), "%s", e.msg);
  }
  /* the canonical JSON parses back to the same canonical JSON */
  config(&c, "shuffled", MUON, "{\"ema\": 0.9}", 10);
  char *j1 = pg_train_cfg_json(&c);
  pg_train_cfg c2;
  cr_assert_eq(pg_train_cfg_parse(&c2, j1, strlen(j1), "j1", &e), PG_OK, "%s", e.msg);
  char *j2 = pg_train_cfg_json(&c2);
  cr_assert_str_eq(j1, j2);
  free(j1);
  free(j2);
}

/* Steps 1..n of a fresh run; losses[k] of step k+1. */
static void run_steps(pg_trainer *t, int n, double *losses, pg_train_step_info *last) {
  pg_err e;
  for (int k = 0; k < n; k++) {
    pg_train_step_info info;
    cr_assert_eq(pg_trainer_step(t, &info, &e), PG_OK, "%s", e.msg);
    losses[k] = info.loss;
    if (last) *last = info;
  }
}

/* Precision bf16 (spec/train.md §10): the trainer's forward is the bf16 pass (its products'
 * operands are bf16 values: marked bf16_pass), and its backward, only its backward, carries
 * bf16_grad, so an engine opened with precision bf16 may run the backward products on the
 * tensor cores; validation forwards and the fp32 trainer never see the mark. Checked on a CPU
 * engine whose matmuls are wrapped. */
static pg_ops mk_cpu;
static int mk_fwd_grad, mk_bwd, mk_bwd_marked, mk_fwd_bf16;

static void mk_fwd(const pg_ops *o, float *y, const float *x, const float *w, int M, int N,
                   int K) {
  mk_fwd_grad += pg_engine_of(o)->bf16_grad != 0;
  mk_fwd_bf16 += pg_engine_of(o)->bf16_pass != 0;
  mk_cpu.matmul_fwd(o, y, x, w, M, N, K);
}

static void mk_bwdf(const pg_ops *o, float *dx, float *dw, const float *dy, const float *x,
                    const float *w, int M, int N, int K) {
  const pg_engine *e = pg_engine_of(o);
  mk_bwd++;
  mk_bwd_marked += e->bf16_grad && e->bf16_pass;
  mk_cpu.matmul_bwd(o, dx, dw, dy, x, w, M, N, K);
}

static void marks(pg_precision p, double *loss) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 2);
  pg_engine e = pg_engine_cpu(1);
  mk_cpu = e.ops;
  e.ops.matmul_fwd = mk_fwd;
  e.ops.matmul_bwd = mk_bwdf;
  mk_fwd_grad = mk_bwd = mk_bwd_marked = mk_fwd_bf16 = 0;
  pg_trainer *t = trainer(&c, &e);
  cr_assert_eq(pg_trainer_precision(t), PG_PREC_FP32, "fp32 by default");
  pg_trainer_set_precision(t, p);
  cr_assert_eq(pg_trainer_precision(t), p);
  cr_assert_eq(pg_model_precision(pg_trainer_model(t)), p);
  double l[2];
  run_steps(t, 2, l, NULL);
  *loss = l[0];
  double vl, vb;
  pg_err err;
  cr_assert_eq(pg_trainer_validate(t, 1, &vl, &vb, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(e.bf16_grad, 0, "the mark ends with the backward");
  pg_trainer_free(t);
  cr_assert_gt(mk_bwd, 0);
  cr_assert_eq(mk_fwd_grad, 0, "no forward is marked for the backward");
  if (p == PG_PREC_BF16) {
    cr_assert_eq(mk_bwd_marked, mk_bwd, "every backward product of a bf16 step is marked");
    cr_assert_gt(mk_fwd_bf16, 0);
  } else {
    cr_assert_eq(mk_bwd_marked, 0);
    cr_assert_eq(mk_fwd_bf16, 0);
  }
}

Test(train, precision_bf16_marks_the_backward_only) {
  double l32, l16;
  marks(PG_PREC_FP32, &l32);
  marks(PG_PREC_BF16, &l16);
  cr_assert_neq(l32, l16, "the bf16 forward rounds");
  cr_assert(fabs(l32 - l16) < 0.05, "fp32 %.9g, bf16 %.9g", l32, l16);
}

/* A bf16 run's Muon steps ask for the records' bf16 Newton–Schulz (PG_NS_BF16, spec/train.md
 * §10) and an fp32 run's do not; the flag changes the weights (the same bf16 run with the flag
 * taken off the Muon calls ends elsewhere). Checked on a CPU engine whose muon_step is wrapped. */
static int ns_flagged, ns_plain, ns_strip;

static void mk_muon(const pg_ops *o, pg_real *p, const pg_real *g, pg_real *buf, int rows,
                    int cols, double lr, double mu, double wd, int nesterov, int row_normalize,
                    int ns_kind, int ns_steps) {
  if (ns_kind & PG_NS_BF16) ns_flagged++;
  else ns_plain++;
  if (ns_strip) ns_kind &= ~PG_NS_BF16;
  mk_cpu.muon_step(o, p, g, buf, rows, cols, lr, mu, wd, nesterov, row_normalize, ns_kind,
                   ns_steps);
}

/* 2 steps in precision p; the weights after them (malloc'ed) and their count */
static float *ns_run(pg_precision p, int strip, size_t *n) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 2);
  pg_engine e = pg_engine_cpu(2);
  mk_cpu = e.ops;
  e.ops.muon_step = mk_muon;
  ns_flagged = ns_plain = 0, ns_strip = strip;
  pg_trainer *t = trainer(&c, &e);
  pg_trainer_set_precision(t, p);
  double l[2];
  run_steps(t, 2, l, NULL);
  pg_model *m = pg_trainer_model(t);
  *n = pg_model_param_count(m);
  float *w = malloc(*n * sizeof *w);
  cr_assert_not_null(w);
  memcpy(w, pg_model_params_engine(m), *n * sizeof *w);
  pg_trainer_free(t);
  return w;
}

Test(train, precision_bf16_newton_schulz) {
  size_t n, n2;
  float *w32 = ns_run(PG_PREC_FP32, 0, &n);
  cr_assert_gt(ns_plain, 0);
  cr_assert_eq(ns_flagged, 0, "an fp32 run keeps the fp32 iteration");
  float *w16 = ns_run(PG_PREC_BF16, 0, &n2);
  cr_assert_eq(ns_plain, 0);
  cr_assert_gt(ns_flagged, 0, "a bf16 run asks for the bf16 iteration");
  float *w16x = ns_run(PG_PREC_BF16, 1, &n2);
  cr_assert_eq(n, n2);
  size_t differ = 0;
  for (size_t i = 0; i < n; i++) differ += memcmp(&w16[i], &w16x[i], sizeof(float)) != 0;
  cr_assert_gt(differ, n / 10, "the bf16 iteration changes the update (%zu of %zu)", differ, n);
  free(w32), free(w16), free(w16x);
}

Test(train, schedule_recurrence_and_momentum_per_step) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 10);
  pg_engine e = pg_engine_cpu(2);
  pg_trainer *t = trainer(&c, &e);
  pg_err err;
  for (uint64_t k = 0; k < 10; k++) {
    pg_train_step_info info;
    cr_assert_eq(pg_trainer_step(t, &info, &err), PG_OK, "%s", err.msg);
    double frac = (double)k / 10.0;
    cr_assert_eq(info.step, k + 1);
    cr_assert_eq(info.lr_mul, pg_lr_mul(&c.sched, k, frac));
    cr_assert_eq(info.momentum, pg_muon_momentum(&c.muon, k));
    cr_assert_eq(info.loops, frac >= 0.5, "step %llu", (unsigned long long)k);
    cr_assert_eq(info.tokens, (k + 1) * 48);
  }
  /* warm-up (2 steps), flat, warmdown to the 0.1 floor */
  cr_assert_eq(pg_lr_mul(&c.sched, 0, 0.0), 0.5);
  cr_assert_eq(pg_lr_mul(&c.sched, 3, 0.3), 1.0);
  cr_assert_eq(pg_lr_mul(&c.sched, 9, 0.96), 0.1);
  pg_trainer_free(t);
}

Test(train, learns_a_learnable_stream) {
  pg_train_cfg c;
  config(&c, "shuffled", MUON, "{\"ema\": 0.9}", 60);
  pg_engine e = pg_engine_cpu(2);
  pg_trainer *t = trainer(&c, &e);
  double l0, b0, l1, b1;
  uint64_t n;
  pg_err err;
  cr_assert_eq(pg_trainer_validate(t, 0, &l0, &b0, &n, &err), PG_OK, "%s", err.msg);
  cr_assert(isnan(b0), "no tokenizer: no bpb");
  cr_assert_eq(n, 1184u, "whole windows of 16: 74 x 16 targets");
  double losses[60];
  run_steps(t, 60, losses, NULL);
  cr_assert_eq(pg_trainer_validate(t, 0, &l1, &b1, &n, &err), PG_OK, "%s", err.msg);
  cr_log_info("val loss %.4f -> %.4f; train %.4f -> %.4f", l0, l1, losses[0], losses[59]);
  cr_assert(l1 < 0.6 * l0, "validation loss %.4f -> %.4f", l0, l1);
  cr_assert(losses[59] < losses[0] - 1.0);
  /* the export weights are the EMA, not the live weights */
  double le;
  cr_assert_eq(pg_trainer_validate(t, 1, &le, &b1, &n, &err), PG_OK);
  cr_assert_neq(le, l1);
  pg_trainer_free(t);
}

/* Run n steps uninterrupted; then k steps, a checkpoint, a fresh trainer resumed from it, n − k
 * steps: the losses and every final tensor must be equal bit for bit. */
static void resume_equal(const char *loader, const char *opt, const char *avg, int n, int k) {
  pg_train_cfg c;
  config(&c, loader, opt, avg, n);
  pg_engine e = pg_engine_cpu(2);
  double full[64], part[64];
  pg_trainer *a = trainer(&c, &e);
  run_steps(a, n, full, NULL);
  char ck[128], ck2[128];
  snprintf(ck, sizeof ck, "%s/ck.safetensors", dir);
  snprintf(ck2, sizeof ck2, "%s/ck2.safetensors", dir);
  pg_err err;
  cr_assert_eq(pg_trainer_checkpoint(a, ck2, &err), PG_OK, "%s", err.msg);

  pg_trainer *b = trainer(&c, &e);
  run_steps(b, k, part, NULL);
  cr_assert_eq(pg_trainer_checkpoint(b, ck, &err), PG_OK, "%s", err.msg);
  pg_trainer_free(b);
  pg_trainer *r = trainer(&c, &e);
  cr_assert_eq(pg_trainer_resume(r, ck, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_trainer_step_count(r), (uint64_t)k);
  run_steps(r, n - k, part + k, NULL);
  for (int s = 0; s < n; s++)
    cr_assert_eq(memcmp(&full[s], &part[s], sizeof(double)), 0,
                 "%s/%s: step %d loss %.17g vs %.17g", loader, avg, s + 1, full[s], part[s]);
  pg_model *ma = pg_trainer_model(a), *mr = pg_trainer_model(r);
  cr_assert_eq(memcmp(pg_model_params(ma), pg_model_params(mr),
                      pg_model_param_count(ma) * sizeof(float)), 0);
  /* the final checkpoints are the same bytes */
  char ck3[128];
  snprintf(ck3, sizeof ck3, "%s/ck3.safetensors", dir);
  cr_assert_eq(pg_trainer_checkpoint(r, ck3, &err), PG_OK, "%s", err.msg);
  uint8_t *x, *y;
  size_t nx, ny;
  cr_assert_eq(pg_file_read_all(ck2, &x, &nx, 1 << 26, &err), PG_OK);
  cr_assert_eq(pg_file_read_all(ck3, &y, &ny, 1 << 26, &err), PG_OK);
  cr_assert(nx == ny && !memcmp(x, y, nx), "%s: the checkpoints differ", loader);
  free(x);
  free(y);
  pg_trainer_free(a);
  pg_trainer_free(r);
}

/* The trainer on the remote test engine (memory the host cannot read, tests/pgremote.h) gives
 * the CPU engine's losses, validation and weights bit for bit, EMA and clipping included. */
static void remote_equal(const char *loader, const char *opt, const char *avg, int n) {
  pg_train_cfg c;
  config(&c, loader, opt, avg, n);
  pg_engine e = pg_engine_cpu(2);
  pgremote *rem = pgremote_new(2);
  double la[64], lb[64];
  pg_trainer *a = trainer(&c, &e), *b = trainer(&c, &rem->outer);
  run_steps(a, n, la, NULL);
  run_steps(b, n, lb, NULL);
  cr_assert_eq(memcmp(la, lb, (size_t)n * sizeof *la), 0, "%s: the losses differ", loader);
  pg_model *ma = pg_trainer_model(a), *mb = pg_trainer_model(b);
  cr_assert_eq(memcmp(pg_model_params_read(ma), pg_model_params_read(mb),
                      pg_model_param_count(ma) * sizeof(float)), 0, "%s: the weights", loader);
  double va, vb, ba, bb;
  uint64_t na, nb;
  pg_err err;
  cr_assert_eq(pg_trainer_validate(a, 1, &va, &ba, &na, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_trainer_validate(b, 1, &vb, &bb, &nb, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(memcmp(&va, &vb, sizeof va), 0, "validation of the export weights");
  pg_trainer_free(a);
  pg_trainer_free(b);
  cr_assert_eq(rem->live, 0, "every engine buffer is freed");
  pgremote_free(rem);
}

Test(train, remote_engine_muon_ema_clip) { remote_equal("sequential", MUON, "{\"ema\": 0.9}", 6); }
Test(train, remote_engine_adamw_swa) {
  remote_equal("packed",
               "{\"matrix\": {\"kind\": \"adamw\", \"lr\": 0.01}, \"embed\": {\"kind\": "
               "\"sgd\", \"lr\": 0.1, \"momentum\": 0.9}, \"grad_clip\": 0.5}",
               "{\"swa_every\": 2, \"swa_start\": 2, \"swa_below\": 2.0}", 6);
}

/* After the first step, a training step on the remote engine moves up only the batch's side
 * inputs and its loss weights, and down only its NLL and the gradient norm's one fp64: the
 * parameters, gradients and optimizer state (Muon buffers, moments, EMA, SWA) stay on the
 * engine (spec/engine.md §8.1). */
static void remote_step_transfers(const char *opt, const char *avg) {
  pg_train_cfg c;
  config(&c, "sequential", opt, avg, 5);
  pgremote *rem = pgremote_new(2);
  pg_trainer *t = trainer(&c, &rem->outer);
  double loss[1];
  run_steps(t, 1, loss, NULL);
  const size_t bt = (size_t)c.batch * (size_t)c.seq_len;
  size_t up[4], upb[4], down[4], downb[4];
  for (int s = 0; s < 4; s++) {
    size_t u = rem->uploads, ub = rem->upload_bytes, d = rem->downloads, db = rem->download_bytes;
    run_steps(t, 1, loss, NULL);
    up[s] = rem->uploads - u, upb[s] = rem->upload_bytes - ub;
    down[s] = rem->downloads - d, downb[s] = rem->download_bytes - db;
  }
  /* the side inputs of a batch of this shape: one forward on an inference tape */
  pg_model *m = pg_trainer_model(t);
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &rem->outer, 0), PG_OK);
  int32_t *ids = calloc(bt, sizeof *ids);
  double *nll = calloc(bt, sizeof *nll);
  pg_batch b = {.B = c.batch, .T = c.seq_len, .ids = ids, .targets = ids};
  size_t u0 = rem->uploads, ub0 = rem->upload_bytes;
  pg_err err;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(rem->uploads - u0, 1);
  size_t side = rem->upload_bytes - ub0;
  for (int s = 0; s < 4; s++) {
    cr_assert_eq(down[s], 2, "step %d: %zu downloads (%zu bytes), not the NLL and the norm", s + 2,
                 down[s], downb[s]);
    cr_assert_eq(downb[s], bt * sizeof(double) + sizeof(double), "step %d: %zu bytes down", s + 2,
                 downb[s]);
    cr_assert_eq(up[s], 2, "step %d: %zu uploads (%zu bytes), not the side inputs and dnll", s + 2,
                 up[s], upb[s]);
    cr_assert_eq(upb[s], side + bt * sizeof(float), "step %d: %zu bytes up", s + 2, upb[s]);
  }
  free(ids);
  free(nll);
  pg_tape_free(tp);
  pg_trainer_free(t);
  cr_assert_eq(rem->live, 0, "every engine buffer is freed");
  pgremote_free(rem);
}

Test(train, remote_step_moves_no_parameters_muon_ema) {
  remote_step_transfers(MUON, "{\"ema\": 0.9}");
}
Test(train, remote_step_moves_no_parameters_adamw_sgd_swa) {
  remote_step_transfers("{\"matrix\": {\"kind\": \"adamw\", \"lr\": 0.01}, \"embed\": {\"kind\": "
                        "\"sgd\", \"lr\": 0.1, \"momentum\": 0.9}, \"grad_clip\": 0.5}",
                        "{\"swa_every\": 2, \"swa_start\": 2, \"swa_below\": 2.0}");
}

Test(train, resume_is_bit_identical_sequential_muon_ema) {
  resume_equal("sequential", MUON, "{\"ema\": 0.9}", 8, 3);
}

Test(train, resume_is_bit_identical_shuffled_swa) {
  /* 500 windows of 17 per epoch would take long: a short stream crosses epochs */
  resume_equal("shuffled", MUON, "{\"swa_every\": 2, \"swa_start\": 4, \"swa_below\": 2.0}", 9, 5);
}

Test(train, resume_is_bit_identical_packed_adamw_sgd) {
  resume_equal("packed",
               "{\"matrix\": {\"kind\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.1}, "
               "\"embed\": {\"kind\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}, "
               "\"scalar\": {\"kind\": \"adamw\", \"lr\": 0.02}}",
               "{\"ema\": 0.5, \"swa_every\": 3, \"swa_below\": 2.0}", 7, 4);
}

Test(train, checkpoint_is_what_pgpack_reads) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{\"ema\": 0.8}", 4);
  pg_engine e = pg_engine_cpu(1);
  pg_trainer *t = trainer(&c, &e);
  double l[4];
  run_steps(t, 4, l, NULL);
  char ck[128];
  snprintf(ck, sizeof ck, "%s/ck.safetensors", dir);
  pg_err err;
  cr_assert_eq(pg_trainer_checkpoint(t, ck, &err), PG_OK, "%s", err.msg);
  /* the weights under the arch's names are the export (EMA) weights; arch.json is inside */
  pg_model *m, *x;
  cr_assert_eq(pg_model_load_checkpoint(&m, NULL, ck, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_create(&x, &c.arch, &err), PG_OK);
  cr_assert_eq(pg_trainer_export(t, x, &err), PG_OK);
  cr_assert_eq(memcmp(pg_model_params(m), pg_model_params(x),
                      pg_model_param_count(x) * sizeof(float)), 0);
  /* the strict loader refuses the training state */
  pg_model *s;
  cr_assert_eq(pg_model_load_safetensors(&s, NULL, ck, &err), PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "train."), "%s", err.msg);
  /* the groups: Muon buffers for the block matrices, moments for the rest */
  pg_st *st;
  cr_assert_eq(pg_st_open_file(&st, ck, &err), PG_OK);
  const pg_st_tensor *ti;
  cr_assert_eq(pg_st_find(&ti, st, "train.muon.blocks.1.mlp.fc.weight", &err), PG_OK);
  cr_assert_eq(pg_st_find(&ti, st, "train.v.tok_emb.weight", &err), PG_OK);
  cr_assert_eq(pg_st_find(&ti, st, "train.m.blocks.0.attn.q_gain", &err), PG_OK);
  cr_assert_eq(pg_st_find(&ti, st, "train.param.skip_gates", &err), PG_OK);
  cr_assert_neq(pg_st_find(&ti, st, "train.muon.tok_emb.weight", NULL), PG_OK);
  cr_assert_str_eq(pg_st_meta_get(st, "pgtrain.step"), "4");
  pg_st_free(st);
  pg_model_free(m);
  pg_model_free(x);
  pg_trainer_free(t);
}

Test(train, resume_refuses_another_run) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 4);
  pg_engine e = pg_engine_cpu(1);
  pg_trainer *t = trainer(&c, &e);
  double l[2];
  run_steps(t, 2, l, NULL);
  char ck[128];
  snprintf(ck, sizeof ck, "%s/ck.safetensors", dir);
  pg_err err;
  cr_assert_eq(pg_trainer_checkpoint(t, ck, &err), PG_OK, "%s", err.msg);
  pg_trainer_free(t);
  pg_train_cfg d;
  config(&d, "sequential",
         "{\"matrix\": {\"kind\": \"muon\", \"lr\": 0.03}}", "{}", 4);
  t = trainer(&d, &e);
  cr_assert_eq(pg_trainer_resume(t, ck, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "another run"), "%s", err.msg);
  pg_trainer_free(t);
  /* a checkpoint that is not one */
  char bad[128];
  snprintf(bad, sizeof bad, "%s/w.safetensors", dir);
  pg_st_writer *w;
  cr_assert_eq(pg_st_writer_create(&w, &err), PG_OK);
  float v = 1;
  uint64_t one = 1;
  cr_assert_eq(pg_st_writer_add(w, "x", PG_ST_F32, 1, &one, &v, 4, &err), PG_OK);
  cr_assert_eq(pg_st_writer_write(w, bad, &err), PG_OK);
  pg_st_writer_free(w);
  t = trainer(&c, &e);
  cr_assert_eq(pg_trainer_resume(t, bad, &err), PG_E_MALFORMED);
  pg_trainer_free(t);
}

/* The checkpoint's counters are digits only: strtoull took "-1" as 2^64-1 and saturated an
 * overlong number in silence. */
Test(train, resume_refuses_counters_that_are_not_counts) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 4);
  pg_engine e = pg_engine_cpu(1);
  pg_trainer *t = trainer(&c, &e);
  double l[2];
  run_steps(t, 2, l, NULL);
  char ck[128], bad[128];
  snprintf(ck, sizeof ck, "%s/ck.safetensors", dir);
  snprintf(bad, sizeof bad, "%s/bad.safetensors", dir);
  pg_err err;
  cr_assert_eq(pg_trainer_checkpoint(t, ck, &err), PG_OK, "%s", err.msg);
  pg_trainer_free(t);
  const char *values[] = {"-1", "99999999999999999999999", " 2", "+2"};
  for (size_t v = 0; v < sizeof values / sizeof *values; v++) {
    /* the same checkpoint with pgtrain.step replaced */
    pg_st *st;
    cr_assert_eq(pg_st_open_file(&st, ck, &err), PG_OK, "%s", err.msg);
    pg_st_writer *w;
    cr_assert_eq(pg_st_writer_create(&w, &err), PG_OK);
    for (size_t i = 0; i < pg_st_count(st); i++) {
      const pg_st_tensor *ti = pg_st_at(st, i);
      cr_assert_eq(pg_st_writer_add(w, ti->name, ti->dtype, ti->rank, ti->shape, ti->data,
                                    ti->nbytes, &err), PG_OK, "%s", err.msg);
    }
    for (size_t i = 0; i < pg_st_meta_count(st); i++) {
      const pg_st_meta *m = pg_st_meta_at(st, i);
      const char *val = strcmp(m->key, "pgtrain.step") ? m->value : values[v];
      cr_assert_eq(pg_st_writer_set_meta(w, m->key, val, &err), PG_OK, "%s", err.msg);
    }
    cr_assert_eq(pg_st_writer_write(w, bad, &err), PG_OK, "%s", err.msg);
    pg_st_writer_free(w);
    pg_st_free(st);
    t = trainer(&c, &e);
    cr_assert_eq(pg_trainer_resume(t, bad, &err), PG_E_MALFORMED, "'%s' accepted", values[v]);
    cr_assert(strstr(err.msg, "pgtrain.step"), "%s", err.msg);
    pg_trainer_free(t);
  }
}

/* EMA and SWA follow their definitions over the live weights of each step. */
Test(train, averaging_matches_the_definition) {
  pg_engine e = pg_engine_cpu(1);
  pg_err err;
  for (int kind = 0; kind < 2; kind++) {
    pg_train_cfg c;
    config(&c, "sequential", MUON,
           kind ? "{\"swa_every\": 2, \"swa_start\": 4, \"swa_below\": 2.0}" : "{\"ema\": 0.75}",
           9);
    pg_trainer *t = trainer(&c, &e);
    pg_model *m = pg_trainer_model(t);
    size_t np = pg_model_param_count(m);
    float *ema = malloc(np * sizeof *ema), *want = malloc(np * sizeof *want);
    double *sum = calloc(np, sizeof *sum);
    memcpy(ema, pg_model_params(m), np * sizeof *ema);
    uint64_t count = 0;
    for (uint64_t k = 1; k <= 9; k++) {
      pg_train_step_info info;
      cr_assert_eq(pg_trainer_step(t, &info, &err), PG_OK, "%s", err.msg);
      const float *p = pg_model_params(m);
      if (!kind) {
        for (size_t i = 0; i < np; i++)
          ema[i] = (float)(0.75 * (double)ema[i] + 0.25 * (double)p[i]);
      } else if (k % 2 == 0 && k >= 4) {
        pg_swa_add(sum, p, np);
        count++;
      }
    }
    if (kind) {
      cr_assert_eq(count, 3u);
      pg_swa_average(sum, count, want, np);
    } else {
      memcpy(want, ema, np * sizeof *want);
    }
    pg_model *x;
    cr_assert_eq(pg_model_create(&x, &c.arch, &err), PG_OK);
    cr_assert_eq(pg_trainer_export(t, x, &err), PG_OK);
    cr_assert_eq(memcmp(pg_model_params(x), want, np * sizeof *want), 0, "%s",
                 kind ? "SWA" : "EMA");
    pg_model_free(x);
    free(ema);
    free(want);
    free(sum);
    pg_trainer_free(t);
  }
}

/* The data paths are recorded in the checkpoint's JSON configuration: not UTF-8, they were
 * dropped from it in silence (jansson refuses such strings); now the run is refused. */
Test(train, data_paths_must_be_utf8) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 4);
  pg_err err;
  cr_assert_eq(pg_train_cfg_validate(&c, &err), PG_OK, "%s", err.msg);
  snprintf(c.val, sizeof c.val, "%s", "/tmp/v\xff/*.bin");
  cr_assert_neq(pg_train_cfg_validate(&c, &err), PG_OK);
  cr_assert(strstr(err.msg, "UTF-8"), "%s", err.msg);
}

/* Replace the first occurrence of `from` in the safetensors header of path by `to` (the data
 * offsets are relative to the data, so only the header length changes). */
static void rewrite_header(const char *path, const char *from, const char *to) {
  uint8_t *b;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, &n, 1 << 26, &e), PG_OK, "%s", e.msg);
  uint64_t h = pg_ld64(b);
  char *hdr = malloc(h + 1);
  memcpy(hdr, b + 8, h);
  hdr[h] = '\0';
  char *at = strstr(hdr, from);
  cr_assert_not_null(at, "%s not in the header", from);
  size_t nh = h - strlen(from) + strlen(to);
  uint8_t *o = malloc(8 + nh + (n - 8 - h));
  pg_st64(o, nh);
  size_t pre = (size_t)(at - hdr);
  memcpy(o + 8, hdr, pre);
  memcpy(o + 8 + pre, to, strlen(to));
  memcpy(o + 8 + pre + strlen(to), at + strlen(from), h - pre - strlen(from));
  memcpy(o + 8 + nh, b + 8 + h, n - 8 - h);
  cr_assert_eq(pg_file_write_atomic(path, o, 8 + nh + (n - 8 - h), &e), PG_OK);
  free(o);
  free(hdr);
  free(b);
}

/* A checkpoint with a non-finite value in its training state, or a counter that is not a plain
 * decimal count, is refused in one line, and the refused resume leaves the trainer as it was
 * (fuzz_stmodel found resumes that took NaN weights, and the counters took "-1" or wrapped). */
Test(train, resume_refuses_non_finite_state_and_bad_counters_and_changes_nothing) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{\"ema\": 0.9}", 6);
  pg_engine e = pg_engine_cpu(1);
  pg_trainer *t = trainer(&c, &e);
  double l[2];
  run_steps(t, 2, l, NULL);
  char ck[128], ck2[128];
  snprintf(ck, sizeof ck, "%s/ck.safetensors", dir);
  snprintf(ck2, sizeof ck2, "%s/ck2.safetensors", dir);
  pg_err err;
  cr_assert_eq(pg_trainer_checkpoint(t, ck, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_trainer_checkpoint(t, ck2, &err), PG_OK, "%s", err.msg);
  pg_trainer_free(t);
  /* the last element of the live weights of the last tensor (a later tensor than the first
   * ones the resume would have overwritten) becomes NaN */
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all(ck, &b, &n, 1 << 26, &err), PG_OK);
  pg_st *st;
  cr_assert_eq(pg_st_open_mem(&st, b, n, "ck", &err), PG_OK, "%s", err.msg);
  const pg_st_tensor *ti = NULL;
  for (size_t i = 0; i < pg_st_count(st); i++)
    if (!strncmp(pg_st_at(st, i)->name, "train.param.", 12)) ti = pg_st_at(st, i);
  cr_assert_not_null(ti);
  const float nan = NAN;
  memcpy(b + ti->offset + ti->nbytes - 4, &nan, 4);
  pg_st_free(st);
  cr_assert_eq(pg_file_write_atomic(ck, b, n, &err), PG_OK);
  free(b);
  t = trainer(&c, &e);
  pg_model *m = pg_trainer_model(t);
  float *before = malloc(pg_arch_tensor_numel(pg_model_tensor(m, 0)) * sizeof *before);
  memcpy(before, pg_model_data(m, 0), pg_arch_tensor_numel(pg_model_tensor(m, 0)) * 4);
  cr_assert_eq(pg_trainer_resume(t, ck, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "is not finite") && strstr(err.msg, "train.param."), "%s", err.msg);
  cr_assert(!memcmp(before, pg_model_data(m, 0), pg_arch_tensor_numel(pg_model_tensor(m, 0)) * 4),
            "a refused resume changed the weights");
  cr_assert_eq(pg_trainer_step_count(t), 0);
  /* counters: a sign, and a value beyond 2^64 - 1 */
  rewrite_header(ck2, "\"pgtrain.step\":\"2\"", "\"pgtrain.step\":\"-2\"");
  cr_assert_eq(pg_trainer_resume(t, ck2, &err), PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "pgtrain.step"), "%s", err.msg);
  rewrite_header(ck2, "\"pgtrain.step\":\"-2\"", "\"pgtrain.step\":\"18446744073709551618\"");
  cr_assert_eq(pg_trainer_resume(t, ck2, &err), PG_E_MALFORMED);
  cr_assert_eq(pg_trainer_step_count(t), 0);
  free(before);
  pg_trainer_free(t);
}

/* ---- data parallel (pg_trainer_set_comm, spec/train.md §8) ----------------------------------- */

typedef struct dp_rank {
  pg_trainer *t;
  pg_comm *comm;
  int steps, rc;
  double loss[64];
  pg_err err;
} dp_rank;

static void *dp_body(void *arg) {
  dp_rank *r = arg;
  for (int k = 0; k < r->steps && !r->rc; k++) {
    pg_train_step_info info;
    r->rc = pg_trainer_step(r->t, &info, &r->err);
    r->loss[k] = info.loss;
  }
  if (r->rc) pg_comm_abort(r->comm);
  return NULL;
}

#define DPMAX 3

/* N ranks of CPU engines through the threads comm, `steps` steps (after resuming from `resume`
 * when given). Every rank must end with the same losses and weights (replicated state): rank 0's
 * are returned; rank 0 writes `ckpt` when given. */
static void dp_run(const pg_train_cfg *c, int n, int steps, const char *resume, const char *ckpt,
                   double *loss, float *w) {
  pg_engine cpu[DPMAX], *es[DPMAX];
  pg_comm *comm[DPMAX];
  dp_rank rk[DPMAX];
  pg_err err;
  for (int i = 0; i < n; i++) {
    cpu[i] = pg_engine_cpu(1);
    es[i] = &cpu[i];
  }
  cr_assert_eq(pg_comm_threads_create(comm, n, es, &err), PG_OK, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    rk[i] = (dp_rank){.t = trainer(c, es[i]), .comm = comm[i], .steps = steps};
    cr_assert_eq(pg_trainer_set_comm(rk[i].t, comm[i], &err), PG_OK, "%s", err.msg);
    cr_assert_eq(pg_trainer_ranks(rk[i].t), n);
    if (resume) cr_assert_eq(pg_trainer_resume(rk[i].t, resume, &err), PG_OK, "%s", err.msg);
  }
  pthread_t th[DPMAX];
  for (int i = 0; i < n; i++) cr_assert_eq(pthread_create(&th[i], NULL, dp_body, &rk[i]), 0);
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  const size_t np = pg_model_param_count(pg_trainer_model(rk[0].t));
  for (int i = 0; i < n; i++) {
    cr_assert_eq(rk[i].rc, PG_OK, "rank %d: %s", i, rk[i].err.msg);
    cr_assert_eq(memcmp(rk[i].loss, rk[0].loss, (size_t)steps * sizeof *rk[0].loss), 0,
                 "rank %d: the losses", i);
    cr_assert_eq(memcmp(pg_model_params_read(pg_trainer_model(rk[i].t)),
                        pg_model_params_read(pg_trainer_model(rk[0].t)), np * sizeof *w),
                 0, "rank %d: the weights", i);
  }
  memcpy(loss, rk[0].loss, (size_t)steps * sizeof *loss);
  memcpy(w, pg_model_params_read(pg_trainer_model(rk[0].t)), np * sizeof *w);
  if (ckpt) cr_assert_eq(pg_trainer_checkpoint(rk[0].t, ckpt, &err), PG_OK, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    pg_trainer_free(rk[i].t);
    pg_comm_free(comm[i]);
  }
}

/* The largest |Δw| relative to the largest |w| of each tensor, over the tensors. */
static double worst_rel(const pg_train_cfg *c, const float *a, const float *b) {
  pg_model *m;
  pg_err err;
  cr_assert_eq(pg_model_create(&m, &c->arch, &err), PG_OK);
  double worst = 0;
  size_t off = 0;
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    size_t n = (size_t)pg_arch_tensor_numel(pg_model_tensor(m, i));
    double d = 0, s = 0;
    for (size_t j = off; j < off + n; j++) {
      d = fmax(d, fabs((double)a[j] - (double)b[j]));
      s = fmax(s, fabs((double)a[j]));
    }
    if (s > 0) worst = fmax(worst, d / s);
    off += n;
  }
  pg_model_free(m);
  return worst;
}

/* N ranks against one: the first step's loss is the same bits (each row's losses do not depend
 * on the rows beside it, and they are gathered and added in the one-rank order); the gradients
 * are not (a weight gradient sums over the rows, and split among ranks the partial sums are
 * rounded before they are added), so after 6 steps the losses and weights agree within the
 * tolerance of spec/train.md §8, not bit for bit; reruns with the same N are the same bits. */
static void dp_against_one(const char *opt, const char *avg) {
  pg_train_cfg c;
  config(&c, "shuffled", opt, avg, 6);
  c.batch = 6;
  pg_engine e = pg_engine_cpu(1);
  pg_trainer *one = trainer(&c, &e);
  double l1[6], ln[6], lr[6];
  run_steps(one, 6, l1, NULL);
  const size_t np = pg_model_param_count(pg_trainer_model(one));
  float *w1 = malloc(np * sizeof *w1), *wn = malloc(np * sizeof *wn), *wr = malloc(np * 4);
  memcpy(w1, pg_model_params_read(pg_trainer_model(one)), np * sizeof *w1);
  pg_trainer_free(one);
  for (int n = 2; n <= 3; n++) {
    dp_run(&c, n, 6, NULL, NULL, ln, wn);
    cr_assert_eq(memcmp(&l1[0], &ln[0], sizeof l1[0]), 0, "%d ranks: step 1's loss", n);
    double dl = 0;
    for (int k = 0; k < 6; k++) dl = fmax(dl, fabs(l1[k] - ln[k]));
    const double dw = worst_rel(&c, w1, wn);
    cr_log_info("%s, %d ranks: losses within %.3g nats, weights within %.3g relative", opt, n,
                dl, dw);
    cr_assert_lt(dl, 1e-6, "%d ranks: losses %.3g apart", n, dl);
    cr_assert_lt(dw, 1e-4, "%d ranks: weights %.3g apart", n, dw);
    dp_run(&c, n, 6, NULL, NULL, lr, wr);
    cr_assert_eq(memcmp(ln, lr, sizeof ln), 0, "%d ranks: a rerun's losses", n);
    cr_assert_eq(memcmp(wn, wr, np * sizeof *wn), 0, "%d ranks: a rerun's weights", n);
  }
  free(w1);
  free(wn);
  free(wr);
}

Test(train, data_parallel_muon_ema_clip) { dp_against_one(MUON, "{\"ema\": 0.9}"); }
Test(train, data_parallel_adamw_sgd_swa) {
  dp_against_one("{\"matrix\": {\"kind\": \"adamw\", \"lr\": 0.01}, \"embed\": {\"kind\": "
                 "\"sgd\", \"lr\": 0.1, \"momentum\": 0.9}, \"scalar\": {\"lr\": 0.02}}",
                 "{\"swa_every\": 2, \"swa_start\": 2, \"swa_below\": 1.1}");
}

/* Resumed with the same N from rank 0's checkpoint: the uninterrupted run's bits. */
Test(train, data_parallel_resume_is_bit_identical) {
  pg_train_cfg c;
  config(&c, "packed", MUON, "{\"ema\": 0.9}", 6);
  c.batch = 4;
  char ck[128];
  snprintf(ck, sizeof ck, "%s/dp.safetensors", dir);
  double la[6], lb[6];
  pg_model *m;
  pg_err err;
  cr_assert_eq(pg_model_create(&m, &c.arch, &err), PG_OK);
  const size_t np = pg_model_param_count(m);
  pg_model_free(m);
  float *wa = malloc(np * sizeof *wa), *wb = malloc(np * sizeof *wb);
  dp_run(&c, 2, 6, NULL, NULL, la, wa);
  dp_run(&c, 2, 2, NULL, ck, lb, wb);
  dp_run(&c, 2, 4, ck, NULL, lb + 2, wb);
  cr_assert_eq(memcmp(la, lb, sizeof la), 0, "the losses");
  cr_assert_eq(memcmp(wa, wb, np * sizeof *wa), 0, "the weights");
  free(wa);
  free(wb);
}

/* A batch that does not split among the ranks, or a comm of another engine: refused. */
Test(train, data_parallel_refusals) {
  pg_train_cfg c;
  config(&c, "sequential", MUON, "{}", 2);
  pg_engine cpu[2] = {pg_engine_cpu(1), pg_engine_cpu(1)};
  pg_engine *es[2] = {&cpu[0], &cpu[1]};
  pg_comm *comm[2];
  pg_err err;
  cr_assert_eq(pg_comm_threads_create(comm, 2, es, &err), PG_OK);
  pg_trainer *t = trainer(&c, es[0]); /* batch 3 */
  cr_assert_eq(pg_trainer_set_comm(t, comm[0], &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "3 rows") && strstr(err.msg, "2 ranks"), "%s", err.msg);
  pg_trainer_free(t);
  c.batch = 4;
  t = trainer(&c, es[0]);
  cr_assert_eq(pg_trainer_set_comm(t, comm[1], &err), PG_E_ARG);
  cr_assert_eq(pg_trainer_set_comm(t, comm[0], &err), PG_OK, "%s", err.msg);
  pg_trainer_free(t);
  pg_comm_free(comm[0]);
  pg_comm_free(comm[1]);
}

/* A few hundred kilobytes of "{}," would cost the parser tens of megabytes: refused before it
 * runs, at the value that goes over the cap, in one line. */
Test(train, config_json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("model", PG_JSON_DOC_VALUES - 2, &len);
  pg_train_cfg c;
  pg_err e;
  cr_assert_eq(pg_train_cfg_parse(&c, t, len, "b.json", &e), PG_E_LIMIT, "%s", e.msg);
  cr_assert(strstr(e.msg, "b.json: offset ") == e.msg && strstr(e.msg, "JSON values"), "%s",
            e.msg);
  free(t);
}
