/* pgtrain: train a model of the record family on the CPU engine from a JSON configuration
 * (spec/train.md, spec/cli.md): periodic logs and validation, checkpoints at intervals and at the
 * end (the file pgpack reads), --resume continuing bit for bit. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_batches.h"
#include "pg_ops.h"
#include "pg_threads.h"
#include "pg_train.h"
#include "tool.h"

static const char *PROG = "pgtrain";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgtrain --config RUN.json [options] -o CHECKPOINT.safetensors\n"
          "\n"
          "Train a model of the record family on the CPU reference engine. The configuration\n"
          "holds the arch, the data, the optimizers, the schedule and the averaging\n"
          "(spec/train.md). Prints the training loss every log interval and the validation\n"
          "loss and bpb at the validation interval and at the end; writes the checkpoint at\n"
          "the checkpoint interval and at the end (atomically). The checkpoint holds the\n"
          "weights to export (EMA or SWA when on) under the arch's names, which pgpack and\n"
          "pgverify read, and the training state from which --resume continues bit for bit.\n"
          "\n"
          "options:\n"
          "  --config FILE         the run (required)\n"
          "  -o, --out FILE        the checkpoint (required)\n"
          "  --train GLOB          training shards (overrides data.train)\n"
          "  --val GLOB            validation shards (overrides data.val)\n"
          "  --tokenizer FILE      SentencePiece .model for val_bpb (overrides data.tokenizer)\n"
          "  --steps N             total steps (overrides schedule.steps)\n"
          "  --seconds S           wall-clock limit (overrides schedule.seconds)\n"
          "  --stop-after N        stop after step N without changing the schedule\n"
          "  --resume FILE         continue the run saved in this checkpoint\n"
          "  --log FILE            JSON lines: every step and every validation\n"
          "  --threads N           threads (default: all CPUs)\n"
          "  --json                print the final summary as JSON\n"
          "  -q, --quiet           only the final summary\n"
          "  -h, --help            this text\n"
          "\n"
          "exit status: 0 trained and written, 2 error\n");
}

enum { O_CONFIG = 256, O_TRAIN, O_VAL, O_TOK, O_STEPS, O_SECONDS, O_STOP, O_RESUME, O_LOG,
       O_THREADS, O_JSON };

/* A path that overrides the configuration: it is recorded in the checkpoint's JSON
 * configuration (and compared on --resume), so it must fit and be UTF-8 like the file's own. */
static int copy_path(char *dst, const char *src) {
  size_t n = strlen(src);
  if (n >= PG_TRAIN_PATH_MAX || !pg_utf8_valid((const uint8_t *)src, n, NULL)) return -1;
  memcpy(dst, src, n + 1);
  return 0;
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

static void print_val(const char *what, uint64_t step, double loss, double bpb, uint64_t n,
                      double secs) {
  char a[32];
  if (isnan(bpb))
    printf("val    step %-6llu %-7s loss %.6f  (%s targets, no tokenizer: no bpb)  %.1f s\n",
           (unsigned long long)step, what, loss, pg_fmt_u64(a, n), secs);
  else
    printf("val    step %-6llu %-7s loss %.6f  bpb %.6f  (%s targets)  %.1f s\n",
           (unsigned long long)step, what, loss, bpb, pg_fmt_u64(a, n), secs);
  fflush(stdout);
}

int main(int argc, char **argv) {
  const char *config = NULL, *out = NULL, *resume = NULL, *logp = NULL;
  const char *train = NULL, *val = NULL, *tok = NULL;
  uint64_t steps = 0, stop_after = 0;
  double seconds = -1;
  int have_steps = 0, threads = 0, as_json = 0, quiet = 0;
  static const struct option lo[] = {
      {"config", required_argument, 0, O_CONFIG}, {"out", required_argument, 0, 'o'},
      {"train", required_argument, 0, O_TRAIN},   {"val", required_argument, 0, O_VAL},
      {"tokenizer", required_argument, 0, O_TOK}, {"steps", required_argument, 0, O_STEPS},
      {"seconds", required_argument, 0, O_SECONDS}, {"stop-after", required_argument, 0, O_STOP},
      {"resume", required_argument, 0, O_RESUME}, {"log", required_argument, 0, O_LOG},
      {"threads", required_argument, 0, O_THREADS}, {"json", no_argument, 0, O_JSON},
      {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "o:qh", lo, NULL)) != -1) {
    uint64_t u;
    switch (c) {
    case O_CONFIG: config = optarg; break;
    case 'o': out = optarg; break;
    case O_TRAIN: train = optarg; break;
    case O_VAL: val = optarg; break;
    case O_TOK: tok = optarg; break;
    case O_STEPS:
      if (pg_parse_u64(optarg, &steps) || steps == 0 || steps > PG_TRAIN_MAX_STEPS)
        return pg_tool_usage_error(PROG, "--steps: '%s' is not a count in 1..2^62", optarg);
      have_steps = 1;
      break;
    case O_SECONDS:
      if (pg_parse_f64(optarg, 0, PG_TRAIN_MAX_SECONDS, &seconds) || !(seconds > 0))
        return pg_tool_usage_error(PROG, "--seconds: '%s' is not a number in (0, 1e9]", optarg);
      break;
    case O_STOP:
      if (pg_parse_u64(optarg, &stop_after) || stop_after == 0 || stop_after > PG_TRAIN_MAX_STEPS)
        return pg_tool_usage_error(PROG, "--stop-after: '%s' is not a count in 1..2^62", optarg);
      break;
    case O_RESUME: resume = optarg; break;
    case O_LOG: logp = optarg; break;
    case O_THREADS:
      if (pg_parse_u64(optarg, &u) || u > PG_PARALLEL_MAX_THREADS)
        return pg_tool_usage_error(PROG, "--threads: '%s' is not 0..%d", optarg,
                                   PG_PARALLEL_MAX_THREADS);
      threads = (int)u;
      break;
    case O_JSON: as_json = 1; break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: usage(stderr); return PG_EXIT_ERROR;
    }
  }
  if (optind < argc) return pg_tool_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
  if (!config) return pg_tool_usage_error(PROG, "--config RUN.json is required");
  if (!out) return pg_tool_usage_error(PROG, "-o CHECKPOINT.safetensors is required");

  pg_err err = {0};
  pg_train_cfg cfg;
  if (pg_train_cfg_load(&cfg, config, &err)) return pg_tool_fail(PROG, &err);
  if ((train && copy_path(cfg.train, train)) || (val && copy_path(cfg.val, val)) ||
      (tok && copy_path(cfg.tokenizer, tok)))
    return pg_tool_usage_error(PROG, "--train, --val and --tokenizer take UTF-8 paths of at most "
                                     "%d bytes", PG_TRAIN_PATH_MAX - 1);
  if (have_steps) cfg.steps = steps;
  if (seconds > 0) {
    cfg.seconds = seconds;
    if (!have_steps) cfg.steps = 0;
  }
  if (pg_train_cfg_validate(&cfg, &err)) return pg_tool_fail(PROG, &err);
  /* no output may be an input; the checkpoint may be the --resume one (it is read whole first) */
  const char *outs[] = {out, logp};
  const char *ins[] = {config, cfg.train[0] ? cfg.train : NULL, cfg.val[0] ? cfg.val : NULL,
                       cfg.tokenizer[0] ? cfg.tokenizer : NULL,
                       cfg.arch_file[0] ? cfg.arch_file : NULL};
  if (pg_tool_check_outputs(PROG, outs, 2, ins, 5) != PG_EXIT_OK ||
      pg_tool_check_outputs(PROG, &logp, 1, &resume, 1) != PG_EXIT_OK)
    return PG_EXIT_ERROR;

  /* the log is a stream (spec/cli.md): written as the run goes, appended to on --resume */
  FILE *logf = NULL;
  if (logp) {
    logf = fopen(logp, resume ? "a" : "w");
    if (!logf) {
      pg_err_set(&err, PG_E_IO, logp, PG_NO_OFFSET, "cannot open for writing: %s",
                 strerror(errno));
      return pg_tool_fail(PROG, &err);
    }
  }
  pg_engine e = pg_engine_cpu(threads);
  int nthreads = pg_parallel_threads(threads);
  pg_trainer *t = NULL;
  int rc = PG_EXIT_ERROR;
  double t0 = pg_now();
  if (pg_trainer_create(&t, &cfg, &e, threads, &err)) goto fail;
  if (resume && pg_trainer_resume(t, resume, &err)) goto fail;
  const pg_arch *a = &cfg.arch;
  uint64_t np = pg_model_param_count(pg_trainer_model(t));
  if (!quiet && !as_json) {
    char b1[32];
    printf("pgtrain    %s: %d layers (%d virtual), d %d, vocab %d, %s parameters; %d threads\n",
           pg_safe(config), a->layers, pg_arch_virtual_layers(a), a->dim, a->vocab_size,
           pg_fmt_u64(b1, np),
           nthreads);
    printf("data       %s (%s, %d x %d per step)\n", pg_safe(cfg.train),
           pg_batches_mode_name(cfg.loader),
           cfg.batch, cfg.seq_len);
    if (cfg.steps)
      printf("schedule   %llu steps%s", (unsigned long long)cfg.steps,
             cfg.seconds > 0 ? " or the wall-clock limit" : "");
    else
      printf("schedule   %.0f s of wall clock (steps estimated from the first steps)",
             cfg.seconds);
    printf(", warmdown %.2f, floor %.2f%s\n", cfg.sched.warmdown_frac, cfg.sched.min_lr,
           cfg.ema_decay > 0 ? ", EMA on" : cfg.swa_every ? ", SWA on" : "");
    if (resume)
      printf("resume     %s at step %llu of %llu\n", pg_safe(resume),
             (unsigned long long)pg_trainer_step_count(t), (unsigned long long)pg_trainer_total(t));
    fflush(stdout);
  }
  /* the untrained model's score, for comparison with the trained one */
  if (cfg.val[0] && pg_trainer_step_count(t) == 0) {
    double vl, vb, vs = pg_now();
    uint64_t n;
    if (pg_trainer_validate(t, 0, &vl, &vb, &n, &err)) goto fail;
    if (!quiet && !as_json) print_val("initial", 0, vl, vb, n, pg_now() - vs);
    if (log_json(logf, logp,
                 json_pack("{s:s,s:I,s:s,s:o,s:o}", "event", "val", "step", (json_int_t)0,
                           "weights", "initial", "loss", pg_json_num(vl), "bpb",
                           pg_json_num(isnan(vb) ? -1.0 : vb)),
                 &err))
      goto fail;
  }
  /* a wall-clock run without a step count: time the first steps, then fix the total */
  int probe = cfg.steps == 0 && pg_trainer_total(t) == 0;
  const uint64_t probe_steps = 3;
  double run_t0 = pg_now(), last_log = pg_now();
  uint64_t log_tokens0 = 0;
  double loss_acc = 0;
  uint64_t loss_n = 0;
  pg_train_step_info info = {0};
  for (;;) {
    uint64_t total = pg_trainer_total(t), done = pg_trainer_step_count(t);
    if (total && done >= total) break;
    if (stop_after && done >= stop_after) break;
    if (cfg.seconds > 0 && !probe && pg_now() - t0 >= cfg.seconds) break;
    if (pg_trainer_step(t, &info, &err)) goto fail;
    loss_acc += info.loss;
    loss_n++;
    json_t *jl = json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:b,s:I}", "event", "step", "step",
                           (json_int_t)info.step, "loss", pg_json_num(info.loss), "grad_norm",
                           pg_json_num(info.grad_norm), "lr_mul", pg_json_num(info.lr_mul),
                           "momentum", pg_json_num(info.momentum), "loops", info.loops,
                           "tokens", (json_int_t)info.tokens);
    if (log_json(logf, logp, jl, &err)) goto fail;
    if (probe && info.step >= probe_steps) {
      double per = (pg_now() - run_t0) / (double)probe_steps;
      /* seconds <= 1e9 (validated); the quotient is still clamped before it becomes a count */
      double q = floor(cfg.seconds / per);
      uint64_t tot = q < (double)PG_TRAIN_MAX_STEPS ? (uint64_t)q : PG_TRAIN_MAX_STEPS;
      if (tot < probe_steps) tot = probe_steps;
      pg_trainer_set_total(t, tot);
      probe = 0;
      if (!quiet && !as_json)
        printf("schedule   %.3f s per step: %llu steps in %.0f s\n", per,
               (unsigned long long)tot, cfg.seconds);
    }
    total = pg_trainer_total(t);
    int last = total && info.step >= total;
    if (!quiet && !as_json && cfg.log_every && (info.step % cfg.log_every == 0 || last)) {
      double now = pg_now();
      double tps = (double)(info.tokens - log_tokens0) / (now - last_log);
      char b1[32];
      printf("step %6llu/%-6llu loss %.4f  gnorm %7.3f  lr×%.3f  mu %.3f  loops %-3s %s tok/s  "
             "%.0f s\n",
             (unsigned long long)info.step, (unsigned long long)total, loss_acc / (double)loss_n,
             info.grad_norm, info.lr_mul, info.momentum, info.loops ? "on" : "off",
             pg_fmt_u64(b1, (uint64_t)tps), now - t0);
      fflush(stdout);
      last_log = now;
      log_tokens0 = info.tokens;
      loss_acc = 0;
      loss_n = 0;
    }
    if (cfg.val_every && cfg.val[0] && info.step % cfg.val_every == 0 && !last) {
      double vl, vb, vs = pg_now();
      uint64_t n;
      if (pg_trainer_validate(t, 0, &vl, &vb, &n, &err)) goto fail;
      if (!quiet && !as_json) print_val("live", info.step, vl, vb, n, pg_now() - vs);
      if (log_json(logf, logp,
                   json_pack("{s:s,s:I,s:s,s:o,s:o}", "event", "val", "step",
                             (json_int_t)info.step, "weights", "live", "loss", pg_json_num(vl), "bpb",
                           pg_json_num(isnan(vb) ? -1.0 : vb)),
                   &err))
        goto fail;
      last_log += pg_now() - vs; /* tokens/s counts training time only */
    }
    if (cfg.ckpt_every && info.step % cfg.ckpt_every == 0 && !last) {
      double cs = pg_now();
      if (pg_trainer_checkpoint(t, out, &err)) goto fail;
      last_log += pg_now() - cs;
      if (!quiet && !as_json)
        printf("ckpt   step %llu -> %s\n", (unsigned long long)info.step, pg_safe(out));
    }
  }
  double train_secs = pg_now() - run_t0;
  if (pg_trainer_checkpoint(t, out, &err)) goto fail;
  double vl = NAN, vb = NAN;
  uint64_t vn = 0;
  if (cfg.val[0]) {
    double vs = pg_now();
    if (pg_trainer_validate(t, 1, &vl, &vb, &vn, &err)) goto fail;
    const char *w = cfg.ema_decay > 0 ? "ema" : cfg.swa_every ? "swa" : "final";
    if (!quiet && !as_json) print_val(w, pg_trainer_step_count(t), vl, vb, vn, pg_now() - vs);
    if (log_json(logf, logp,
                 json_pack("{s:s,s:I,s:s,s:o,s:o}", "event", "val", "step",
                           (json_int_t)pg_trainer_step_count(t), "weights", w, "loss", pg_json_num(vl), "bpb",
                           pg_json_num(isnan(vb) ? -1.0 : vb)),
                 &err))
      goto fail;
  }
  uint64_t steps_done = pg_trainer_step_count(t);
  if (logf) {
    const int bad = fclose(logf) != 0;
    logf = NULL;
    if (bad) {
      pg_err_set(&err, PG_E_IO, logp, PG_NO_OFFSET, "cannot complete the write: %s",
                 strerror(errno));
      goto fail;
    }
  }
  if (as_json) {
    json_t *j = json_object();
    json_object_set_new(j, "checkpoint", pg_json_cstr(out));
    json_object_set_new(j, "steps", json_integer((json_int_t)steps_done));
    json_object_set_new(j, "total_steps", json_integer((json_int_t)pg_trainer_total(t)));
    json_object_set_new(j, "tokens", json_integer((json_int_t)info.tokens));
    json_object_set_new(j, "last_loss", pg_json_num(info.loss));
    json_object_set_new(j, "seconds", pg_json_num(train_secs));
    if (cfg.val[0]) {
      json_object_set_new(j, "val_loss", pg_json_num(vl));
      json_object_set_new(j, "val_bpb", isnan(vb) ? json_null() : pg_json_num(vb));
    }
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(j);
  } else {
    char b1[32];
    printf("done       %llu steps, %s tokens in %.1f s; checkpoint %s\n",
           (unsigned long long)steps_done, pg_fmt_u64(b1, info.tokens), train_secs, pg_safe(out));
  }
  rc = PG_EXIT_OK;
  goto done;
fail:
  rc = pg_tool_fail(PROG, &err);
done:
  if (logf) fclose(logf);
  pg_trainer_free(t);
  return rc;
}
