/* pgpack: trained weights → submission artifact (spec/cli.md, spec/quant.md). Load the weights
 * and arch, collect calibration tokens (training shards or self-generated, never validation),
 * collect the input Hessians with the CPU engine, quantize (GPTQ/RTN under SDClip, HSDClip or
 * percentile scales; int8 gates; fp16 passthrough; LQER), pack sections with the best codec
 * each, fit the clip constants to a byte budget, write atomically, and print pgsize's summary. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_account.h"
#include "pg_arch.h"
#include "pg_calib.h"
#include "pg_container.h"
#include "pg_io.h"
#include "pg_weights.h"
#include "pg_model.h"
#include "pg_ops.h"
#include "pg_pack.h"
#include "pg_threads.h"
#include "tool.h"

static const char *PROG = "pgpack";

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: pgpack --weights FILE [--arch ARCH.json] [options] -o OUT.pgz\n"
      "\n"
      "Quantize trained weights and pack them, with the tokenizer and the code, into a\n"
      "submission artifact; with --budget, fit the clip constants so the artifact lands at or\n"
      "just under the budget. Prints every step with its time, the table of tried settings\n"
      "and the pgsize summary of the result.\n"
      "\n"
      "inputs:\n"
      "  --weights FILE        safetensors with the arch's tensor names (spec/quant.md §1), a\n"
      "                        pgtrain checkpoint, or a pgolf artifact (re-pack)\n"
      "  --arch FILE           the arch JSON of the weights (default: their \"arch.json\"\n"
      "                        metadata, as pgunpack --safetensors and pgtrain write it; when\n"
      "                        they have one, both must describe the same model)\n"
      "  --tokenizer FILE      SentencePiece .model to embed\n"
      "  --code FILE           a code file to embed (repeatable; counted as code bytes)\n"
      "  -o, --out FILE        the artifact to write\n"
      "\n"
      "calibration (never validation data):\n"
      "  --calib GLOB          training shards, e.g. 'DIR/fineweb_train_*.bin'\n"
      "  --calib self          sequences the model samples itself from the seed\n"
      "  --calib none          no calibration: round-to-nearest everywhere (the default)\n"
      "  --calib-seqs N        sequences (default 16)      --calib-len T  tokens each (default 512)\n"
      "  --calib-batch N       sequences per forward (default 4)\n"
      "  --temperature X       self-generation temperature (default 0.8)\n"
      "  --seed N              self-generation seed, 0..2^63-1 (default 1337)\n"
      "  --val GLOB            the validation shards: refuse a calibration set equal to them\n"
      "\n"
      "quantization (defaults: the LQER record's recipe):\n"
      "  --bits CAT=B          bits of a category (embed, attn, mlp, other), 5..8\n"
      "                        (default embed=7, others 6)\n"
      "  --clip CAT=K          SDClip k of a category (default embed=14 attn=13 mlp=11.5\n"
      "                        other=12.85)\n"
      "  --scales RULE         sdclip | hsdclip | pct (GPTQ-lite, per matrix) | pct-row\n"
      "  --lambda X            hsdclip λ, 0..1000 (default 0.175)\n"
      "  --round RULE          gptq (default, with calibration) | rtn\n"
      "  --damp X              GPTQ damping, fraction of the mean diagonal (default 0.01)\n"
      "  --no-act-order        GPTQ in the original column order\n"
      "  --block N             GPTQ block (default 128)\n"
      "  --passthrough-max N   tensors of at most N elements stay fp16 (default 65536)\n"
      "  --no-gate-int8        gates follow the passthrough rule\n"
      "  --lqer-top-k K        LQER on the K tensors of largest error (default 3; 0 off)\n"
      "  --lqer-rank R         LQER rank (default 4)\n"
      "  --lqer-force          keep LQER even where it does not lower the error\n"
      "\n"
      "packing and budget:\n"
      "  --codec SPEC          best (default: brotli-11/w24, lzma-9e, zstd-22, each with and\n"
      "                        without byte shuffle, per section) or one spec, e.g. brotli-11\n"
      "  --group HOW           kind (default) | category | single: which values share a section\n"
      "  --packed              bit-pack the quantized values (default one per byte)\n"
      "  --budget N            fit the clip constants to N bytes (e.g. 16000000)\n"
      "  --fit-bits CAT=LIST   also try these bits for one category, e.g. embed=6,7,8\n"
      "  --fit-tolerance X     land within budget·(1−X)..budget (default 0.005)\n"
      "  --exclude-tokenizer   the budget does not count the tokenizer (pgsize's option)\n"
      "\n"
      "  --threads N           threads (default: all CPUs)\n"
      "  --json                print the summary as JSON on stdout\n"
      "  -q, --quiet           no progress lines\n"
      "  -h, --help            this text\n"
      "\n"
      "exit status: 0 written (and within the budget), 1 written but over the budget, 2 error\n");
}

enum {
  O_WEIGHTS = 256, O_ARCH, O_TOK, O_CODE, O_CALIB, O_CSEQS, O_CLEN, O_CBATCH, O_TEMP, O_SEED,
  O_VAL, O_BITS, O_CLIP, O_SCALES, O_LAMBDA, O_ROUND, O_DAMP, O_NOACT, O_BLOCK, O_PASS,
  O_NOGATE, O_LQK, O_LQR, O_LQF, O_CODEC, O_GROUP, O_PACKED, O_BUDGET, O_FITBITS, O_FITTOL,
  O_EXTOK, O_THREADS, O_JSON
};

typedef struct opts {
  const char *weights, *arch, *tokenizer, *out, *calib, *val;
  const char *code[256];
  int ncode;
  int cseqs, clen, cbatch;
  double temperature;
  uint64_t seed, budget;
  int fit_cat;
  unsigned fit_mask;
  double fit_tol;
  int count_tok, threads, json, quiet;
  pg_pack_recipe r;
} opts;

static int parse_cat_value(const char *arg, int *cat, const char **val) {
  const char *eq = strchr(arg, '=');
  if (!eq) return -1;
  char name[16];
  size_t n = (size_t)(eq - arg);
  if (n == 0 || n >= sizeof name) return -1;
  memcpy(name, arg, n);
  name[n] = 0;
  *cat = pg_pack_cat_parse(name);
  *val = eq + 1;
  return *cat < 0 ? -1 : 0;
}

/* Every real option has a range (spec/cli.md): the clip constants and λ become floats. */
static int parse_double(const char *s, double lo, double hi, double *out) {
  return pg_parse_f64(s, lo, hi, out) ? -1 : 0;
}

static int parse_int(const char *s, int lo, int hi, int *out) {
  uint64_t v;
  if (pg_parse_u64(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi) return -1;
  *out = (int)v;
  return 0;
}

/* ---- progress ---------------------------------------------------------------------------------- */

static void on_tensor(void *ctx, size_t done, size_t total, const char *name) {
  pg_progress *p = ctx;
  double now = pg_now();
  if (!p->on || (now - p->last < 0.5 && done < total)) return;
  p->last = now;
  fprintf(stderr, "\r\033[K%s: quantizing %zu/%zu %s  %.0f s", PROG, done, total, pg_safe(name),
          now - p->t0);
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

typedef struct fitlog {
  int print;
  uint64_t budget;
  pg_progress *pr;
} fitlog;

static void on_trial(void *ctx, const pg_pack_trial *t) {
  fitlog *f = ctx;
  if (f->pr->on) fprintf(stderr, "\r\033[K");
  if (!f->print) return;
  char a[32], b[32];
  printf("  trial  k×%-9.5f bits e/a/m/o %u/%u/%u/%u  counted %12s  %s  err %.6e\n", t->mu,
         t->bits[0], t->bits[1], t->bits[2], t->bits[3], pg_fmt_u64(a, t->counted),
         t->fits ? "fits" : "over", t->objective);
  (void)b;
  fflush(stdout);
}

/* ---- the step log ------------------------------------------------------------------------------ */

static double step_t0;
static void step_begin(const opts *o, const char *what) {
  step_t0 = pg_now();
  if (!o->json) {
    printf("%-12s ", what);
    fflush(stdout);
  }
}
static void step_end(const opts *o, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void step_end(const opts *o, const char *fmt, ...) {
  if (o->json) return;
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("  (%.2f s)\n", pg_now() - step_t0);
  fflush(stdout);
}

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

int main(int argc, char **argv) {
  opts o;
  memset(&o, 0, sizeof o);
  o.r = pg_pack_recipe_default();
  o.cseqs = 16;
  o.clen = 512;
  o.cbatch = 4;
  o.temperature = 0.8;
  o.seed = 1337;
  o.fit_cat = -1;
  o.fit_tol = 0.005;
  o.count_tok = 1;
  o.calib = "none";
  int round_set = 0;
  static const struct option lo[] = {
      {"weights", required_argument, 0, O_WEIGHTS},  {"arch", required_argument, 0, O_ARCH},
      {"tokenizer", required_argument, 0, O_TOK},    {"code", required_argument, 0, O_CODE},
      {"out", required_argument, 0, 'o'},            {"calib", required_argument, 0, O_CALIB},
      {"calib-seqs", required_argument, 0, O_CSEQS}, {"calib-len", required_argument, 0, O_CLEN},
      {"calib-batch", required_argument, 0, O_CBATCH},
      {"temperature", required_argument, 0, O_TEMP}, {"seed", required_argument, 0, O_SEED},
      {"val", required_argument, 0, O_VAL},          {"bits", required_argument, 0, O_BITS},
      {"clip", required_argument, 0, O_CLIP},        {"scales", required_argument, 0, O_SCALES},
      {"lambda", required_argument, 0, O_LAMBDA},    {"round", required_argument, 0, O_ROUND},
      {"damp", required_argument, 0, O_DAMP},        {"no-act-order", no_argument, 0, O_NOACT},
      {"block", required_argument, 0, O_BLOCK},      {"passthrough-max", required_argument, 0, O_PASS},
      {"no-gate-int8", no_argument, 0, O_NOGATE},    {"lqer-top-k", required_argument, 0, O_LQK},
      {"lqer-rank", required_argument, 0, O_LQR},    {"lqer-force", no_argument, 0, O_LQF},
      {"codec", required_argument, 0, O_CODEC},      {"group", required_argument, 0, O_GROUP},
      {"packed", no_argument, 0, O_PACKED},          {"budget", required_argument, 0, O_BUDGET},
      {"fit-bits", required_argument, 0, O_FITBITS}, {"fit-tolerance", required_argument, 0, O_FITTOL},
      {"exclude-tokenizer", no_argument, 0, O_EXTOK},
      {"threads", required_argument, 0, O_THREADS},  {"json", no_argument, 0, O_JSON},
      {"quiet", no_argument, 0, 'q'},                {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "o:qh", lo, NULL)) != -1) {
    int cat, iv;
    const char *val;
    double dv;
    uint64_t uv;
    switch (c) {
    case O_WEIGHTS: o.weights = optarg; break;
    case O_ARCH: o.arch = optarg; break;
    case O_TOK: o.tokenizer = optarg; break;
    case O_CODE:
      if (o.ncode == 256) return pg_tool_usage_error(PROG, "at most 256 --code files");
      o.code[o.ncode++] = optarg;
      break;
    case 'o': o.out = optarg; break;
    case O_CALIB: o.calib = optarg; break;
    case O_CSEQS:
      if (parse_int(optarg, 1, 1 << 20, &o.cseqs))
        return pg_tool_usage_error(PROG, "--calib-seqs: '%s' is not a count", optarg);
      break;
    case O_CLEN:
      if (parse_int(optarg, 2, 1 << 20, &o.clen))
        return pg_tool_usage_error(PROG, "--calib-len: '%s' is not 2..1048576", optarg);
      break;
    case O_CBATCH:
      if (parse_int(optarg, 1, 4096, &o.cbatch))
        return pg_tool_usage_error(PROG, "--calib-batch: '%s' is not 1..4096", optarg);
      break;
    case O_TEMP:
      if (parse_double(optarg, 0, 1e6, &o.temperature))
        return pg_tool_usage_error(PROG, "--temperature: '%s' is not a number in [0, 1e6]", optarg);
      break;
    case O_SEED:
      /* recorded as the artifact's i64 provenance.seed: a larger one would read back negative */
      if (pg_parse_u64(optarg, &o.seed) || o.seed > (uint64_t)INT64_MAX)
        return pg_tool_usage_error(PROG, "--seed: '%s' is not a number in 0..2^63-1", optarg);
      break;
    case O_VAL: o.val = optarg; break;
    case O_BITS:
      if (parse_cat_value(optarg, &cat, &val) || parse_int(val, 5, 8, &iv))
        return pg_tool_usage_error(PROG, "--bits: '%s' is not CAT=5..8 (embed, attn, mlp, other)",
                                   optarg);
      o.r.bits[cat] = (unsigned)iv;
      break;
    case O_CLIP:
      if (parse_cat_value(optarg, &cat, &val) || parse_double(val, 0, 1e6, &dv) || !(dv > 0))
        return pg_tool_usage_error(PROG, "--clip: '%s' is not CAT=K with K in (0, 1e6]", optarg);
      o.r.k[cat] = (float)dv;
      break;
    case O_SCALES:
      if (!strcmp(optarg, "sdclip")) o.r.scale_rule = PG_SCALING_SDCLIP;
      else if (!strcmp(optarg, "hsdclip")) o.r.scale_rule = PG_SCALING_HSDCLIP;
      else if (!strcmp(optarg, "pct")) o.r.scale_rule = PG_SCALING_PCT;
      else if (!strcmp(optarg, "pct-row")) o.r.scale_rule = PG_SCALING_PCT_ROW;
      else return pg_tool_usage_error(PROG, "--scales: '%s' is not sdclip, hsdclip, pct or pct-row", optarg);
      break;
    case O_LAMBDA:
      if (parse_double(optarg, 0, 1000, &dv))
        return pg_tool_usage_error(PROG, "--lambda: '%s' is not a number in [0, 1000]", optarg);
      o.r.lambda = (float)dv;
      break;
    case O_ROUND:
      if (!strcmp(optarg, "gptq")) o.r.round_rule = PG_ROUND_GPTQ;
      else if (!strcmp(optarg, "rtn")) o.r.round_rule = PG_ROUND_RTN;
      else return pg_tool_usage_error(PROG, "--round: '%s' is not gptq or rtn", optarg);
      round_set = 1;
      break;
    case O_DAMP:
      if (parse_double(optarg, 0, 1e6, &dv) || !(dv > 0))
        return pg_tool_usage_error(PROG, "--damp: '%s' is not a number in (0, 1e6]", optarg);
      o.r.gptq.damp = dv;
      break;
    case O_NOACT: o.r.gptq.act_order = 0; break;
    case O_BLOCK:
      if (parse_int(optarg, 1, 1 << 16, &o.r.block))
        return pg_tool_usage_error(PROG, "--block: '%s' is not 1..65536", optarg);
      break;
    case O_PASS:
      if (pg_parse_u64(optarg, &o.r.passthrough_max))
        return pg_tool_usage_error(PROG, "--passthrough-max: '%s' is not a count", optarg);
      break;
    case O_NOGATE: o.r.gate_int8 = 0; break;
    case O_LQK:
      if (parse_int(optarg, 0, 1 << 16, &iv)) return pg_tool_usage_error(PROG, "--lqer-top-k: '%s'", optarg);
      o.r.lqer_top_k = (unsigned)iv;
      break;
    case O_LQR:
      if (parse_int(optarg, 1, PG_MAX_LQER_RANK, &iv))
        return pg_tool_usage_error(PROG, "--lqer-rank: '%s' is not 1..%d", optarg, PG_MAX_LQER_RANK);
      o.r.lqer_rank = (unsigned)iv;
      break;
    case O_LQF: o.r.lqer_force = 1; break;
    case O_CODEC:
      if (!strcmp(optarg, "best")) {
        o.r.codec_best = 1;
      } else {
        pg_err e;
        if (pg_codec_spec_parse(&o.r.codec, optarg, &e))
          return pg_tool_usage_error(PROG, "--codec: %s", e.msg);
        o.r.codec_best = 0;
      }
      break;
    case O_GROUP:
      if (!strcmp(optarg, "kind")) o.r.group = PG_PACK_GROUP_KIND;
      else if (!strcmp(optarg, "category")) o.r.group = PG_PACK_GROUP_CATEGORY;
      else if (!strcmp(optarg, "single")) o.r.group = PG_PACK_GROUP_SINGLE;
      else return pg_tool_usage_error(PROG, "--group: '%s' is not kind, category or single", optarg);
      break;
    case O_PACKED: o.r.packing = PG_PACK_BITS; break;
    case O_BUDGET:
      if (pg_parse_u64(optarg, &uv) || uv == 0 || uv > (uint64_t)INT64_MAX)
        return pg_tool_usage_error(PROG, "--budget: '%s' is not a byte count in 1..2^63-1", optarg);
      o.budget = uv;
      break;
    case O_FITBITS: {
      if (parse_cat_value(optarg, &cat, &val))
        return pg_tool_usage_error(PROG, "--fit-bits: '%s' is not CAT=LIST", optarg);
      o.fit_cat = cat;
      o.fit_mask = 0;
      char buf[64];
      if (strlen(val) >= sizeof buf) /* cut, "5,6,...,7" could have become "5,6,...," */
        return pg_tool_usage_error(PROG, "--fit-bits: '%s' is too long", optarg);
      snprintf(buf, sizeof buf, "%s", val);
      for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (parse_int(tok, 5, 8, &iv))
          return pg_tool_usage_error(PROG, "--fit-bits: '%s' is not 5..8", tok);
        o.fit_mask |= 1u << iv;
      }
      if (!o.fit_mask) return pg_tool_usage_error(PROG, "--fit-bits: no bits in '%s'", optarg);
      break;
    }
    case O_FITTOL:
      if (parse_double(optarg, 0, 1, &o.fit_tol) || !(o.fit_tol > 0 && o.fit_tol < 1))
        return pg_tool_usage_error(PROG, "--fit-tolerance: '%s' is not in (0, 1)", optarg);
      break;
    case O_EXTOK: o.count_tok = 0; break;
    case O_THREADS:
      if (parse_int(optarg, 0, PG_PARALLEL_MAX_THREADS, &o.threads))
        return pg_tool_usage_error(PROG, "--threads: '%s' is not 0..%d", optarg,
                                   PG_PARALLEL_MAX_THREADS);
      break;
    case O_JSON: o.json = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: usage(stderr); return PG_EXIT_ERROR;
    }
  }
  if (optind < argc) return pg_tool_usage_error(PROG, "unexpected argument '%s'", argv[optind]);
  if (!o.weights) return pg_tool_usage_error(PROG, "--weights FILE is required");
  if (!o.out) return pg_tool_usage_error(PROG, "-o OUT.pgz is required");
  if (o.fit_cat >= 0 && !o.budget)
    return pg_tool_usage_error(PROG, "--fit-bits needs --budget");
  int no_calib = !strcmp(o.calib, "none");
  if (no_calib && !round_set) o.r.round_rule = PG_ROUND_RTN;
  if (no_calib && o.r.round_rule == PG_ROUND_GPTQ)
    return pg_tool_usage_error(PROG, "--round gptq needs calibration (--calib GLOB or self)");
  if (no_calib && o.r.scale_rule == PG_SCALING_HSDCLIP)
    return pg_tool_usage_error(PROG, "--scales hsdclip needs calibration (--calib GLOB or self)");
  o.r.nthreads = o.threads;
  /* the output must not be an input (every file of the calibration and validation globs too) */
  const char *inputs[262];
  size_t ni = 0;
  inputs[ni++] = o.weights;
  inputs[ni++] = o.arch;
  inputs[ni++] = o.tokenizer;
  inputs[ni++] = strcmp(o.calib, "self") && strcmp(o.calib, "none") ? o.calib : NULL;
  inputs[ni++] = o.val;
  for (int i = 0; i < o.ncode; i++) inputs[ni++] = o.code[i];
  if (pg_tool_check_outputs(PROG, &o.out, 1, inputs, ni) != PG_EXIT_OK) return PG_EXIT_ERROR;

  pg_err err = {0};
  int rc = PG_EXIT_ERROR;
  pg_model *m = NULL;
  pg_artifact *src = NULL;
  pg_calib_set cal = {0};
  pg_calib_hessians hs = {0};
  pg_packer *pk = NULL;
  uint8_t *tokb = NULL, *bytes = NULL;
  char *record = NULL, *record_protocol = NULL;
  uint8_t *codeb[256] = {0};
  pg_pack_code code[256];
  pg_pack_trial *trials = NULL;
  size_t ntrials = 0, chosen = 0, len = 0;
  pg_artifact *outa = NULL;
  pg_account acc = {0};
  int have_acc = 0;
  double t_all = pg_now();
  pg_progress pr = {.on = !o.quiet && isatty(2), .t0 = pg_now(), .prog = PROG,
                    .unit = "tokens"};
  pg_ops e = pg_ops_cpu(o.threads);
  int nthreads = pg_parallel_threads(o.threads);

  /* 1. weights */
  step_begin(&o, "weights");
  int art = 0;
  if (pg_tool_is_artifact(o.weights, &art, &err)) goto fail;
  {
    /* --arch with weights that record their own arch must agree with it (spec/load.md §1) */
    pg_arch a;
    if (o.arch && pg_arch_load(&a, o.arch, &err)) goto fail;
    if (art) {
      if (pg_artifact_open(&src, o.weights, NULL, &err) ||
          pg_model_load_artifact_arch(&m, src, o.arch ? &a : NULL, &err))
        goto fail;
    } else if (pg_model_load_checkpoint(&m, o.arch ? &a : NULL, o.weights, &err)) {
      goto fail;
    }
  }
  /* the record the weights come from travels into the artifact (spec/format.md §3) */
  record = pg_tool_weights_meta(o.weights, src, "provenance.record");
  record_protocol = pg_tool_weights_meta(o.weights, src, "provenance.protocol");
  if (pg_model_check_finite(m, o.weights, &err)) goto fail;
  const pg_arch *arch = pg_model_arch(m);
  {
    uint64_t np = pg_model_param_count(m);
    char a1[32];
    step_end(&o, "%s: %s parameters in %zu tensors (%d layers, d %d, vocab %d)%s",
             pg_safe(o.weights), pg_fmt_u64(a1, np), pg_model_tensor_count(m), arch->layers,
             arch->dim, arch->vocab_size, art ? " [dequantized from an artifact]" : "");
  }
  /* tokenizer and code */
  size_t toklen = 0;
  if (o.tokenizer && pg_file_read_all(o.tokenizer, &tokb, &toklen, PG_MAX_SECTION_RAW, &err))
    goto fail;
  for (int i = 0; i < o.ncode; i++) {
    size_t n = 0;
    if (pg_file_read_all(o.code[i], &codeb[i], &n, PG_MAX_SECTION_RAW / 2, &err)) goto fail;
    code[i] = (pg_pack_code){.name = base_name(o.code[i]), .bytes = codeb[i], .len = n};
  }

  /* 2. calibration */
  if (!no_calib) {
    step_begin(&o, "calibration");
    pr.what = "generating";
    pr.t0 = pg_now();
    if (!strcmp(o.calib, "self")) {
      if (pg_calib_self(&cal, m, &e, o.cseqs, o.clen, o.temperature, o.seed, o.cbatch,
                        pg_progress_tick, &pr, &err))
        goto fail;
    } else if (pg_calib_from_shards(&cal, o.calib, o.val, o.cseqs, o.clen,
                                    (uint32_t)arch->vocab_size, &err)) {
      goto fail;
    }
    step_end(&o, "%s (xxh64 %016llx)", pg_safe(cal.source), (unsigned long long)cal.xxh64);
    step_begin(&o, "hessians");
    pr.what = "calibrating";
    pr.t0 = pg_now();
    if (pg_calib_collect(&hs, m, &e, &cal, o.cbatch, o.threads, pg_progress_tick, &pr, &err)) goto fail;
    char a1[32];
    step_end(&o, "%zu Hessians from %s tokens (cpu engine, %d threads)", hs.nh,
             pg_fmt_u64(a1, hs.tokens), nthreads);
  }

  /* 3. quantize (and fit) */
  if (pg_packer_create(&pk, m, no_calib ? NULL : &hs, &o.r, &err)) goto fail;
  pr.t0 = pg_now();
  pg_packer_set_progress(pk, on_tensor, &pr);
  pg_pack_extras x = {.writer = "pgpack " PG_VERSION,
                      .tokenizer = tokb,
                      .tokenizer_len = toklen,
                      .tokenizer_name = o.tokenizer ? base_name(o.tokenizer) : NULL,
                      .code = code,
                      .ncode = (size_t)o.ncode,
                      .calib_source = no_calib ? NULL : cal.source,
                      .calib_xxh64 = cal.xxh64,
                      .calib_tokens = hs.tokens,
                      .have_seed = !strcmp(o.calib, "self"),
                      .seed = (int64_t)o.seed,
                      .record = record,
                      .record_protocol = record_protocol,
                      .budget = o.budget ? o.budget : PG_DEFAULT_BUDGET,
                      .count_tokenizer = o.count_tok};
  double mu = 1.0;
  uint64_t counted = 0;
  if (o.budget) {
    step_begin(&o, "fit");
    if (!o.json) printf("searching the clip multiplier for %llu bytes\n",
                        (unsigned long long)o.budget);
    fitlog fl = {.print = !o.json, .budget = o.budget, .pr = &pr};
    pg_pack_fit_opts fo = {.budget = o.budget, .tolerance = o.fit_tol, .fit_cat = o.fit_cat,
                           .bits_mask = o.fit_mask, .on_trial = on_trial, .ctx = &fl};
    if (pg_packer_fit(pk, &x, &fo, &trials, &ntrials, &chosen, &bytes, &len, &err)) goto fail;
    mu = trials[chosen].mu;
    counted = trials[chosen].counted;
    char a1[32];
    step_end(&o, "chose trial %zu of %zu: k×%.5f, %s counted bytes, error %.6e", chosen + 1,
             ntrials, mu, pg_fmt_u64(a1, counted), trials[chosen].objective);
  } else {
    step_begin(&o, "quantize");
    if (pg_packer_quantize(pk, 1.0, &err)) goto fail;
    if (pr.on) fprintf(stderr, "\r\033[K");
    step_end(&o, "error %.6e (mean relative)", pg_packer_objective(pk));
    step_begin(&o, "pack");
    if (pg_packer_build(pk, &x, 1.0, &bytes, &len, &counted, &err)) goto fail;
    char a1[32];
    step_end(&o, "%s bytes", pg_fmt_u64(a1, len));
  }

  /* 4. write */
  step_begin(&o, "write");
  if (pg_file_write_atomic(o.out, bytes, len, &err)) goto fail;
  {
    char a1[32];
    step_end(&o, "%s (%s bytes)", pg_safe(o.out), pg_fmt_u64(a1, len));
  }

  /* 5. pgsize's accounting of the written file */
  if (pg_artifact_open(&outa, o.out, NULL, &err) || pg_artifact_check(outa, &err)) goto fail;
  uint64_t budget = o.budget ? o.budget : PG_DEFAULT_BUDGET;
  if (pg_account_artifact(&acc, outa, budget, o.count_tok, &err)) goto fail;
  have_acc = 1;
  int over = acc.counted > budget;
  if (o.json) {
    json_t *j = json_object();
    json_object_set_new(j, "artifact", pg_json_cstr(o.out));
    json_object_set_new(j, "file_bytes", json_integer((json_int_t)acc.file_size));
    json_object_set_new(j, "counted_bytes", json_integer((json_int_t)acc.counted));
    json_object_set_new(j, "budget", json_integer((json_int_t)budget));
    json_object_set_new(j, "headroom", json_integer((json_int_t)acc.headroom));
    json_object_set_new(j, "within_budget", json_boolean(!over));
    json_object_set_new(j, "model_bytes", json_integer((json_int_t)acc.model));
    json_object_set_new(j, "code_bytes", json_integer((json_int_t)acc.code_stored));
    json_object_set_new(j, "tokenizer_bytes", json_integer((json_int_t)acc.tokenizer_stored));
    json_object_set_new(j, "k_multiplier", pg_json_num(mu));
    json_object_set_new(j, "objective", pg_json_num(pg_packer_objective(pk)));
    json_t *jt = json_array();
    for (size_t i = 0; i < ntrials; i++) {
      const pg_pack_trial *t = &trials[i];
      json_array_append_new(
          jt, json_pack("{s:o,s:[i,i,i,i],s:I,s:I,s:o,s:b,s:b}", "k_multiplier",
                        pg_json_num(t->mu), "bits", (int)t->bits[0], (int)t->bits[1],
                        (int)t->bits[2], (int)t->bits[3], "counted_bytes", (json_int_t)t->counted,
                        "file_bytes", (json_int_t)t->file_bytes, "objective",
                        pg_json_num(t->objective), "fits", t->fits, "chosen", i == chosen));
    }
    json_object_set_new(j, "trials", jt);
    json_t *ts = json_array();
    for (size_t i = 0; i < pg_packer_tensor_count(pk); i++) {
      const pg_pack_report *r = pg_packer_report(pk, i);
      json_t *to = json_object();
      json_object_set_new(to, "name", pg_json_cstr(r->name));
      json_object_set_new(to, "route", json_string(r->route == PG_ROUTE_F16    ? "f16"
                                                   : r->route == PG_ROUTE_GATE ? "gate-int8-row"
                                                                               : "quant"));
      json_object_set_new(to, "bits", json_integer(r->bits));
      if (r->route == PG_ROUTE_QUANT) {
        json_object_set_new(to, "category", json_string(pg_pack_cat_name(r->cat)));
        json_object_set_new(to, "k", pg_json_num(r->k));
        json_object_set_new(to, "rounding", json_string(r->gptq ? "gptq" : "rtn"));
        json_object_set_new(to, "damp_used", pg_json_num(r->damp_used));
        json_object_set_new(to, "lqer_rank", json_integer(r->lqer_rank));
        json_object_set_new(to, "mse", pg_json_num(r->mse));
        json_object_set_new(to, "rel_err", pg_json_num(r->rel_err));
      }
      json_array_append_new(ts, to);
    }
    json_object_set_new(j, "tensors", ts);
    json_object_set_new(j, "seconds", pg_json_num(pg_now() - t_all));
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(j);
  } else {
    printf("\ntensors\n");
    printf("  %-40s %-6s %-5s %4s %9s %5s %12s %5s\n", "name", "route", "cat", "bits", "k", "round",
           "rel.err", "lqer");
    for (size_t i = 0; i < pg_packer_tensor_count(pk); i++) {
      const pg_pack_report *r = pg_packer_report(pk, i);
      if (r->route == PG_ROUTE_QUANT)
        printf("  %-40s %-6s %-5s %4u %9.4f %5s %12.4e %5u\n", pg_safe(r->name), "quant",
               pg_pack_cat_name(r->cat), r->bits, (double)r->k,
               r->gptq ? "gptq" : "rtn", r->rel_err, r->lqer_rank);
      else
        printf("  %-40s %-6s %-5s %4u\n", pg_safe(r->name),
               r->route == PG_ROUTE_F16 ? "f16" : "gate",
               pg_pack_cat_name(r->cat), r->bits);
    }
    char a1[32], a2[32], a3[32], a4[32];
    printf("\nsections\n");
    for (uint32_t i = 0; i < acc.nsections; i++) {
      const pg_account_section *s = &acc.sections[i];
      char cs[40];
      pg_codec_spec_format(&s->codec, cs, sizeof cs);
      printf("  %3u %-9s %-34s %-20s %12s -> %12s\n", s->index, pg_section_kind_name(s->kind),
             pg_safe_cut(s->label, 34), cs, pg_fmt_u64(a1, s->raw), pg_fmt_u64(a2, s->stored));
    }
    printf("\npgsize     %s: %s bytes counted (model %s + code %s%s) of %s\n", pg_safe(o.out),
           pg_fmt_u64(a1, acc.counted), pg_fmt_u64(a2, acc.model),
           pg_fmt_u64(a3, acc.code_stored), acc.tokenizer_counted ? " + tokenizer" : "",
           pg_fmt_u64(a4, budget));
    printf("           %s, headroom %lld bytes\n", over ? "OVER BUDGET" : "within budget",
           (long long)acc.headroom);
    printf("total      %.2f s\n", pg_now() - t_all);
  }
  rc = over ? PG_EXIT_VERDICT : PG_EXIT_OK;
  goto done;
fail:
  if (pr.on) fprintf(stderr, "\r\033[K");
  if (!o.json) printf("\n");
  fflush(stdout);
  rc = pg_tool_fail(PROG, &err);
done:
  if (have_acc) pg_account_free(&acc);
  pg_artifact_free(outa);
  free(trials);
  free(bytes);
  for (int i = 0; i < o.ncode; i++) free(codeb[i]);
  free(tokb);
  free(record);
  free(record_protocol);
  pg_packer_free(pk);
  pg_calib_hessians_free(&hs);
  pg_calib_free(&cal);
  pg_model_free(m);
  pg_artifact_free(src);
  return rc;
}
