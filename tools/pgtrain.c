/* pgtrain: train a model of the record family on an engine from a JSON configuration
 * (spec/train.md, spec/cli.md): periodic logs and validation, checkpoints at intervals and at the
 * end (the file pgpack reads), --resume continuing bit for bit. The run is the library's
 * (pg_trainrun.h); this main reads the options and the configuration and prints. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_batches.h"
#include "pg_comm.h"
#include "pg_io.h"
#include "pg_threads.h"
#include "pg_train.h"
#include "pg_trainrun.h"
#include "tool.h"

static const char *PROG = "pgtrain";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgtrain --config RUN.json [options] -o CHECKPOINT.safetensors\n"
          "\n"
          "Train a model of the record family on an engine (the CPU reference by default).\n"
          "The configuration holds the arch, the data, the optimizers, the schedule and the\n"
          "averaging (spec/train.md). Prints the training loss every log interval and the "
          "validation\n"
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
          "  --engine NAME         cpu (default), cuda (one GPU; exit 3 without one) or auto\n"
          "                        (cuda where it runs)\n"
          "  --precision P         fp32 or bf16 (default: bf16 on a GPU engine, fp32 on the\n"
          "                        CPU): bf16 is the records' autocast forward, and on a GPU its\n"
          "                        tensor-core products, backward included; fp32 is exact\n"
          "  --threads N           threads (default: all CPUs; with --ranks, per rank: the CPUs\n"
          "                        divided among the ranks)\n"
          "  --ranks N             data parallel over N ranks (default 1): each step's batch\n"
          "                        split among them, the gradients summed in rank order; engine\n"
          "                        cpu: N CPU engines in threads; cuda: GPUs 0..N-1 via NCCL\n"
          "  --rank R              with --rendezvous: run only rank R of --ranks N here (one\n"
          "                        process per GPU, on its device 0; engine cuda)\n"
          "  --rendezvous FILE     the file rank 0 writes NCCL's id to and the others wait for,\n"
          "                        or tcp:HOST:PORT: rank 0 (on HOST) hands it out on PORT\n"
          "  --rendezvous-timeout S  seconds the ranks wait for each other (default 600)\n"
          "  --json                print the final summary as JSON\n"
          "  -q, --quiet           only the final summary\n"
          "  -h, --help            this text\n"
          "\n"
          "exit status: 0 trained and written, 2 error, 3 engine or NCCL unavailable\n");
}

enum { O_CONFIG = 256, O_TRAIN, O_VAL, O_TOK, O_STEPS, O_SECONDS, O_STOP, O_RESUME, O_LOG,
       O_THREADS, O_JSON, O_ENGINE, O_RANKS, O_RANK, O_RDV, O_RDV_TIMEOUT, O_PRECISION };

/* A path that overrides the configuration: it is recorded in the checkpoint's JSON
 * configuration (and compared on --resume), so it must fit and be UTF-8 like the file's own. */
static int copy_path(char *dst, const char *src) {
  size_t n = strlen(src);
  if (n >= PG_TRAIN_PATH_MAX || !pg_utf8_valid((const uint8_t *)src, n, NULL)) return -1;
  memcpy(dst, src, n + 1);
  return 0;
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

/* ---- the run's events ------------------------------------------------------------------------ */

typedef struct ev {
  const char *config, *resume;
  const pg_train_cfg *cfg;
  int show;  /* neither --quiet nor --json */
  int ranks; /* --ranks */
  const char *comm; /* the communicator's backend ("" for one rank) */
  int precision;    /* the run's pg_precision */
} ev;

static void on_begin(void *ctx, pg_trainer *t, int nthreads) {
  const ev *e = ctx;
  const pg_train_cfg *cfg = e->cfg;
  if (!e->show) return;
  const pg_arch *a = &cfg->arch;
  uint64_t np = pg_model_param_count(pg_trainer_model(t));
  char b1[32];
  printf("pgtrain    %s: %d layers (%d virtual), d %d, vocab %d, %s parameters; %d threads",
         pg_safe(e->config), a->layers, pg_arch_virtual_layers(a), a->dim, a->vocab_size,
         pg_fmt_u64(b1, np), nthreads);
  if (e->ranks > 1) printf(" per rank, %d ranks (%s)", e->ranks, e->comm);
  printf("; precision %s\n", pg_precision_name((pg_precision)e->precision));
  printf("data       %s (%s, %d x %d per step)\n", pg_safe(cfg->train),
         pg_batches_mode_name(cfg->loader), cfg->batch, cfg->seq_len);
  if (cfg->steps)
    printf("schedule   %llu steps%s", (unsigned long long)cfg->steps,
           cfg->seconds > 0 ? " or the wall-clock limit" : "");
  else
    printf("schedule   %.0f s of wall clock (steps estimated from the first steps)",
           cfg->seconds);
  printf(", warmdown %.2f, floor %.2f%s\n", cfg->sched.warmdown_frac, cfg->sched.min_lr,
         cfg->ema_decay > 0 ? ", EMA on" : cfg->swa_every ? ", SWA on" : "");
  if (e->resume)
    printf("resume     %s at step %llu of %llu\n", pg_safe(e->resume),
           (unsigned long long)pg_trainer_step_count(t), (unsigned long long)pg_trainer_total(t));
  fflush(stdout);
}

static void on_val(void *ctx, const char *what, uint64_t step, double loss, double bpb,
                   uint64_t n, double secs) {
  if (((const ev *)ctx)->show) print_val(what, step, loss, bpb, n, secs);
}

static void on_total(void *ctx, double per, uint64_t total) {
  const ev *e = ctx;
  if (e->show)
    printf("schedule   %.3f s per step: %llu steps in %.0f s\n", per, (unsigned long long)total,
           e->cfg->seconds);
}

static void on_log(void *ctx, const pg_trainrun_log *l) {
  if (!((const ev *)ctx)->show) return;
  const pg_train_step_info *info = l->info;
  char b1[32];
  printf("step %6llu/%-6llu loss %.4f  gnorm %7.3f  lr×%.3f  mu %.3f  loops %-3s %s tok/s  "
         "%.0f s\n",
         (unsigned long long)info->step, (unsigned long long)l->total, l->mean_loss,
         info->grad_norm, info->lr_mul, info->momentum, info->loops ? "on" : "off",
         pg_fmt_u64(b1, (uint64_t)l->tokens_per_s), l->elapsed);
  fflush(stdout);
}

static void on_checkpoint(void *ctx, uint64_t step, const char *path) {
  if (((const ev *)ctx)->show)
    printf("ckpt   step %llu -> %s\n", (unsigned long long)step, pg_safe(path));
}

int main(int argc, char **argv) {
  const char *config = NULL, *out = NULL, *resume = NULL, *logp = NULL;
  const char *train = NULL, *val = NULL, *tok = NULL;
  uint64_t steps = 0, stop_after = 0;
  double seconds = -1;
  int have_steps = 0, threads = 0, as_json = 0, quiet = 0;
  const char *engine = "cpu", *rdv = NULL;
  int ranks = 1, rank = -1;
  int precision = -1; /* --precision; -1: the engine's default, resolved once it is open */
  double rdv_timeout = 600;
  static const struct option lo[] = {
      {"config", required_argument, 0, O_CONFIG}, {"out", required_argument, 0, 'o'},
      {"train", required_argument, 0, O_TRAIN},   {"val", required_argument, 0, O_VAL},
      {"tokenizer", required_argument, 0, O_TOK}, {"steps", required_argument, 0, O_STEPS},
      {"seconds", required_argument, 0, O_SECONDS}, {"stop-after", required_argument, 0, O_STOP},
      {"resume", required_argument, 0, O_RESUME}, {"log", required_argument, 0, O_LOG},
      {"threads", required_argument, 0, O_THREADS}, {"json", no_argument, 0, O_JSON},
      {"engine", required_argument, 0, O_ENGINE}, {"ranks", required_argument, 0, O_RANKS},
      {"rank", required_argument, 0, O_RANK},     {"rendezvous", required_argument, 0, O_RDV},
      {"rendezvous-timeout", required_argument, 0, O_RDV_TIMEOUT},
      {"precision", required_argument, 0, O_PRECISION},
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
    case O_ENGINE: engine = optarg; break;
    case O_RANKS:
      if (pg_parse_u64(optarg, &u) || u < 1 || u > PG_ENGINES_MAX)
        return pg_tool_usage_error(PROG, "--ranks: '%s' is not 1..%d", optarg, PG_ENGINES_MAX);
      ranks = (int)u;
      break;
    case O_RANK:
      if (pg_parse_u64(optarg, &u) || u >= PG_COMM_MAX_RANKS)
        return pg_tool_usage_error(PROG, "--rank: '%s' is not a rank", optarg);
      rank = (int)u;
      break;
    case O_RDV: rdv = optarg; break;
    case O_PRECISION:
      precision = pg_precision_parse(optarg);
      if (precision < 0)
        return pg_tool_usage_error(PROG, "--precision: fp32 or bf16, not '%s'", optarg);
      break;
    case O_RDV_TIMEOUT:
      if (pg_parse_f64(optarg, 0, 1e6, &rdv_timeout) || !(rdv_timeout > 0))
        return pg_tool_usage_error(PROG, "--rendezvous-timeout: '%s' is not in (0, 1e6]",
                                   optarg);
      break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: usage(stderr); return PG_EXIT_ERROR;
    }
  }
  if (optind < argc) return pg_tool_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
  if (!config) return pg_tool_usage_error(PROG, "--config RUN.json is required");
  if (!out) return pg_tool_usage_error(PROG, "-o CHECKPOINT.safetensors is required");
  if ((rank >= 0) != (rdv != NULL))
    return pg_tool_usage_error(PROG, "--rank and --rendezvous go together (one process per rank)");
  if (rank >= 0 && rank >= ranks)
    return pg_tool_usage_error(PROG, "--rank %d: not a rank of --ranks %d", rank, ranks);

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
  if (cfg.batch % ranks != 0)
    return pg_tool_usage_error(PROG, "--ranks %d: the batch of %d rows does not split among them "
                               "(make it a multiple)", ranks, cfg.batch);
  /* no output may be an input; the checkpoint may be the --resume one (it is read whole first) */
  const char *outs[] = {out, logp};
  const char *ins[] = {config, cfg.train[0] ? cfg.train : NULL, cfg.val[0] ? cfg.val : NULL,
                       cfg.tokenizer[0] ? cfg.tokenizer : NULL,
                       cfg.arch_file[0] ? cfg.arch_file : NULL};
  if (pg_tool_check_outputs(PROG, outs, 2, ins, 5) != PG_EXIT_OK ||
      pg_tool_check_outputs(PROG, &logp, 1, &resume, 1) != PG_EXIT_OK)
    return PG_EXIT_ERROR;

  /* the engines this process runs (one, or every rank's) and their communicators */
  pg_engine *engs[PG_ENGINES_MAX] = {0};
  pg_comm *comms[PG_ENGINES_MAX] = {0};
  const int nlocal = rank >= 0 ? 1 : ranks;
  int erc = pg_tool_engines(PROG, engine, threads, precision, nlocal, quiet || as_json, engs);
  if (erc != PG_EXIT_OK) return erc;
  /* without --precision: bf16 on a GPU engine (the records' training numerics, and the fast
   * kernels), fp32 on the CPU */
  if (precision < 0) precision = pg_tool_default_precision(engs[0]);
  int crc = PG_OK;
  if (ranks > 1 && rank < 0 && engs[0]->host_memory) {
    crc = pg_comm_threads_create(comms, ranks, engs, &err);
  } else if (ranks > 1 && rank < 0) {
    crc = pg_comm_nccl_create_all(comms, ranks, engs, &err);
  } else if (ranks > 1 && engs[0]->host_memory) {
    crc = pg_err_set(&err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                     "--rank: one process per rank communicates through NCCL: --engine cuda "
                     "(CPU ranks run as threads of one process: --ranks without --rank)");
  } else if (ranks > 1) { /* this process's rank: rank 0 publishes NCCL's id, the others wait */
    pg_comm_id id;
    const char *tcp = strncmp(rdv, "tcp:", 4) ? NULL : rdv + 4;
    if (rank == 0) {
      crc = pg_comm_nccl_id(&id, &err);
      if (!crc)
        crc = tcp ? pg_comm_rendezvous_serve(tcp, ranks, &id, rdv_timeout, &err)
                  : pg_comm_rendezvous_write(rdv, ranks, &id, &err);
    } else {
      crc = tcp ? pg_comm_rendezvous_connect(tcp, ranks, rdv_timeout, &id, &err)
                : pg_comm_rendezvous_read(rdv, ranks, rdv_timeout, &id, &err);
    }
    if (!crc) crc = pg_comm_nccl_create(&comms[0], ranks, rank, &id, engs[0], &err);
  }
  if (crc) {
    for (int i = nlocal - 1; i >= 0; i--) pg_engine_destroy(engs[i]);
    pg_tool_fail(PROG, &err);
    return crc == PG_E_NCCL || crc == PG_E_UNSUPPORTED ? PG_EXIT_ENGINE : PG_EXIT_ERROR;
  }
  const int leader = rank <= 0;
  ev ctx = {.config = config, .resume = resume, .cfg = &cfg, .show = !quiet && !as_json,
            .ranks = ranks, .precision = precision,
            .comm = comms[0] ? pg_comm_backend_name(pg_comm_backend(comms[0])) : ""};
  pg_trainrun_cfg rc = {.train = &cfg, .out = out, .resume = resume, .log = logp,
                        .stop_after = stop_after, .engine = engs[0], .threads = threads,
                        .precision = precision,
                        .nlocal = nlocal, .engines = engs, .comms = ranks > 1 ? comms : NULL,
                        .on_begin = on_begin,
                        .on_val = on_val, .on_total = on_total, .on_log = on_log,
                        .on_checkpoint = on_checkpoint, .ctx = &ctx};
  pg_trainrun_result r;
  int trc = pg_trainrun(&rc, &r, &err);
  for (int i = nlocal - 1; i >= 0; i--) {
    pg_engine_enter(engs[i]);
    pg_comm_free(comms[i]);
    pg_engine_destroy(engs[i]);
  }
  if (trc) return pg_tool_fail(PROG, &err);
  if (!leader) { /* a rank of another process's run: that process reports */
    if (!quiet && !as_json)
      printf("done       rank %d of %d: %llu steps\n", rank, ranks, (unsigned long long)r.steps);
    return PG_EXIT_OK;
  }
  if (as_json) {
    json_t *j = json_object();
    json_object_set_new(j, "checkpoint", pg_json_cstr(out));
    json_object_set_new(j, "steps", json_integer((json_int_t)r.steps));
    json_object_set_new(j, "total_steps", json_integer((json_int_t)r.total_steps));
    json_object_set_new(j, "tokens", json_integer((json_int_t)r.tokens));
    json_object_set_new(j, "last_loss", pg_json_num(r.last_loss));
    json_object_set_new(j, "seconds", pg_json_num(r.seconds));
    json_object_set_new(j, "ranks", json_integer(ranks));
    json_object_set_new(j, "precision", json_string(pg_precision_name((pg_precision)precision)));
    json_object_set_new(j, "comm", ranks > 1 ? json_string(ctx.comm) : json_null());
    if (cfg.val[0]) {
      json_object_set_new(j, "val_loss", pg_json_num(r.val_loss));
      json_object_set_new(j, "val_bpb", isnan(r.val_bpb) ? json_null() : pg_json_num(r.val_bpb));
    }
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    fputc('\n', stdout);
    json_decref(j);
  } else {
    char b1[32];
    printf("done       %llu steps, %s tokens in %.1f s; checkpoint %s\n",
           (unsigned long long)r.steps, pg_fmt_u64(b1, r.tokens), r.seconds, pg_safe(out));
  }
  return PG_EXIT_OK;
}
