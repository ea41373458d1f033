/* pgpack: trained weights → submission artifact (spec/cli.md, spec/quant.md). Load the weights
 * and arch, collect calibration tokens (training shards or self-generated, never validation),
 * collect the input Hessians with the CPU engine, quantize (GPTQ/RTN under SDClip, HSDClip or
 * percentile scales; int8 gates; fp16 passthrough; LQER), pack sections with the best codec
 * each, fit the clip constants to a byte budget, write atomically, and print pgsize's summary. The
 * job is the library's (pg_packjob.h); this main reads the options and prints each step. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_account.h"
#include "pg_arch.h"
#include "pg_container.h"
#include "pg_io.h"
#include "pg_model.h"
#include "pg_pack.h"
#include "pg_packjob.h"
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
      "  --calib-seqs N        sequences (default 16)      --calib-len T  tokens each "
      "(default 512)\n"
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
      "                        without byte shuffle, qc on int values and perm on row\n"
      "                        permutations, per section) or one\n"
      "                        spec, e.g. brotli-11\n"
      "  --group HOW           kind (default) | category | single: which values share a section\n"
      "  --packed              bit-pack the quantized values (default one per byte)\n"
      "  --layout 1|2          2 (default): matrices stored transposed, rows in similarity\n"
      "                        order (quant layout 2); 1: row-major\n"
      "  --row-sort WHEN       layout 2: auto (default: per group, where it is smaller),\n"
      "                        always or never\n"
      "  --container 1|2       container version to write (default 2, the compact one)\n"
      "  --budget N            fit to N bytes (e.g. 16000000)\n"
      "  --fit HOW             loss (default with calibration): bits 5..8 and clip per\n"
      "                        tensor, least expected loss increase at the budget; k (the\n"
      "                        default without): one multiplier of every clip constant\n"
      "  --fit-curve FILE      write every point the loss fit explored (TSV; JSON when FILE\n"
      "                        ends in .json)\n"
      "  --fit-probe-seqs N    calibration sequences the loss fit's sensitivities use\n"
      "                        (default: all)\n"
      "  --fit-measure N       loss fit: choose by measured loss among the k fit's solution\n"
      "                        and at most N builds (default 8; 0: by expected loss alone)\n"
      "  --fit-measure-seqs N  training sequences after the calibration ones that the\n"
      "                        measured losses use (default 256)\n"
      "  --fit-bits CAT=LIST   k fit: also try these bits for one category, e.g. embed=6,7,8\n"
      "  --fit-tolerance X     land within budget·(1−X)..budget (default 0.005)\n"
      "  --exclude-tokenizer   the budget does not count the tokenizer (pgsize's option)\n"
      "\n"
      "  --engine NAME         where calibration runs: cpu (default), cuda (one GPU; exit 3\n"
      "                        without one) or auto\n"
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
  O_EXTOK, O_THREADS, O_JSON, O_ENGINE, O_LAYOUT, O_CONTAINER, O_ROWSORT, O_FIT, O_FITCURVE,
  O_FITPROBE, O_FITMEAS, O_FITMSEQS
};

typedef struct opts {
  const char *weights, *arch, *tokenizer, *out, *calib, *val, *engine, *fit_curve;
  const char *code[256];
  int ncode;
  int cseqs, clen, cbatch;
  double temperature;
  uint64_t seed, budget;
  int fit_cat, fit_method, fit_probe; /* fit_method −1: by calibration */
  int fit_measure, fit_mseqs;         /* fit_measure −1: none (--fit-measure 0) */
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

/* ---- progress -------------------------------------------------------------------------------- */

typedef struct events {
  const opts *o;
  pg_progress pr;
  double step_t0;
} events;

static int on_progress(void *ctx, uint64_t done, uint64_t total) {
  return pg_progress_tick(&((events *)ctx)->pr, done, total);
}

static void on_tensor(void *ctx, size_t done, size_t total, const char *name) {
  pg_progress *p = &((events *)ctx)->pr;
  double now = pg_now();
  if (!p->on || (now - p->last < 0.5 && done < total)) return;
  p->last = now;
  fprintf(stderr, "\r\033[K%s: quantizing %zu/%zu %s  %.0f s", PROG, done, total, pg_safe(name),
          now - p->t0);
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

static void on_trial(void *ctx, const pg_pack_trial *t) {
  const events *ev = ctx;
  if (ev->pr.on) fprintf(stderr, "\r\033[K");
  if (ev->o->json) return;
  char a[32];
  printf("  trial  k×%-9.5f bits e/a/m/o %u/%u/%u/%u  counted %12s  %s  err %.6e\n", t->mu,
         t->bits[0], t->bits[1], t->bits[2], t->bits[3], pg_fmt_u64(a, t->counted),
         t->fits ? "fits" : "over", t->objective);
  fflush(stdout);
}

static void on_point(void *ctx, const pg_fit_point *t) {
  const events *ev = ctx;
  if (ev->pr.on) fprintf(stderr, "\r\033[K");
  if (ev->o->json || !t->built) return;
  char a[32], lam[24];
  if (t->kfit)
    snprintf(lam, sizeof lam, "(k×%.5f)", t->mu);
  else if (isnan(t->lambda))
    snprintf(lam, sizeof lam, "(recipe)");
  else
    snprintf(lam, sizeof lam, "%.4e", t->lambda);
  printf("  point  lambda %-10s  estimated %12.0f  counted %12s  %s  dloss %.6e\n", lam,
         t->est_bytes, pg_fmt_u64(a, t->counted), t->fits ? "fits" : "over", t->dloss);
  fflush(stdout);
}

static void on_fit_progress(void *ctx, const char *what, size_t done, size_t total) {
  pg_progress *p = &((events *)ctx)->pr;
  double now = pg_now();
  if (!p->on || (now - p->last < 0.5 && done < total)) return;
  p->last = now;
  fprintf(stderr, "\r\033[K%s: fit: %s %zu/%zu  %.0f s", PROG, what, done, total, now - p->t0);
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

/* ---- the step log ---------------------------------------------------------------------------- */

static void step_end(const events *ev, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void step_end(const events *ev, const char *fmt, ...) {
  if (ev->o->json) return;
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("  (%.2f s)\n", pg_now() - ev->step_t0);
  fflush(stdout);
}

static const char *const STEP_NAME[] = {"weights", "calibration", "hessians", "fit",
                                        "quantize", "pack", "write"};

/* Each step of the job: its name when it begins, what it produced and its time when it ends. */
static void on_step(void *ctx, int step, int done, const pg_packjob *j) {
  events *ev = ctx;
  const opts *o = ev->o;
  char a1[32];
  if (!done) {
    if (step == PG_PACKJOB_CALIB) ev->pr.what = "generating", ev->pr.t0 = pg_now();
    if (step == PG_PACKJOB_HESSIANS) ev->pr.what = "calibrating", ev->pr.t0 = pg_now();
    if (step == PG_PACKJOB_FIT || step == PG_PACKJOB_QUANTIZE) ev->pr.t0 = pg_now();
    ev->step_t0 = pg_now();
    if (!o->json) {
      printf("%-12s ", STEP_NAME[step]);
      fflush(stdout);
    }
    if (step == PG_PACKJOB_FIT && !o->json && o->fit_method == PG_FIT_LOSS)
      printf("measuring bits and clip options per tensor, then the allocation for %llu bytes\n",
             (unsigned long long)o->budget);
    else if (step == PG_PACKJOB_FIT && !o->json)
      printf("searching the clip multiplier for %llu bytes\n", (unsigned long long)o->budget);
    return;
  }
  switch (step) {
  case PG_PACKJOB_WEIGHTS: {
    const pg_arch *arch = pg_model_arch(j->model);
    step_end(ev, "%s: %s parameters in %zu tensors (%d layers, d %d, vocab %d)%s",
             pg_safe(o->weights), pg_fmt_u64(a1, pg_model_param_count(j->model)),
             pg_model_tensor_count(j->model), arch->layers, arch->dim, arch->vocab_size,
             j->source ? " [dequantized from an artifact]" : "");
    break;
  }
  case PG_PACKJOB_CALIB:
    step_end(ev, "%s (xxh64 %016llx)", pg_safe(j->calib.source),
             (unsigned long long)j->calib.xxh64);
    break;
  case PG_PACKJOB_HESSIANS:
    step_end(ev, "%zu Hessians from %s tokens (%s engine, %d threads)", j->hessians.nh,
             pg_fmt_u64(a1, j->hessians.tokens), j->engine_name, j->threads);
    break;
  case PG_PACKJOB_FIT:
    if (j->have_fit) {
      const pg_fit_point *c = &j->fit.points[j->fit.chosen];
      step_end(ev, "chose point %zu of %zu (%s): lambda %.4e, %s counted bytes, expected dloss "
               "%.6e, measured loss %.6f",
               j->fit.chosen + 1, j->fit.npoints, pg_fit_point_kind(c), c->lambda,
               pg_fmt_u64(a1, c->counted), c->dloss, c->measured);
      break;
    }
    step_end(ev, "chose trial %zu of %zu: k×%.5f, %s counted bytes, error %.6e", j->chosen + 1,
             j->ntrials, j->mu, pg_fmt_u64(a1, j->counted), j->trials[j->chosen].objective);
    break;
  case PG_PACKJOB_QUANTIZE:
    if (ev->pr.on) fprintf(stderr, "\r\033[K");
    step_end(ev, "error %.6e (mean relative)", pg_packer_objective(j->packer));
    break;
  case PG_PACKJOB_PACK: step_end(ev, "%s bytes", pg_fmt_u64(a1, j->len)); break;
  case PG_PACKJOB_WRITE:
    step_end(ev, "%s (%s bytes)", pg_safe(o->out), pg_fmt_u64(a1, j->len));
    break;
  }
}

/* The summary: pgsize's accounting of the written file, the tried settings and every tensor's
 * route, as JSON or as text. */
static void print_summary(const opts *o, const pg_packjob *job, double t_all) {
  const pg_account *acc = &job->account;
  const pg_packer *pk = job->packer;
  const pg_pack_trial *trials = job->trials;
  const size_t ntrials = job->ntrials, chosen = job->chosen;
  const uint64_t budget = job->budget;
  const int over = acc->counted > budget;
  if (o->json) {
    json_t *j = json_object();
    json_object_set_new(j, "artifact", pg_json_cstr(o->out));
    json_object_set_new(j, "file_bytes", json_integer((json_int_t)acc->file_size));
    json_object_set_new(j, "counted_bytes", json_integer((json_int_t)acc->counted));
    json_object_set_new(j, "budget", json_integer((json_int_t)budget));
    json_object_set_new(j, "headroom", json_integer((json_int_t)acc->headroom));
    json_object_set_new(j, "within_budget", json_boolean(!over));
    json_object_set_new(j, "model_bytes", json_integer((json_int_t)acc->model));
    json_object_set_new(j, "code_bytes", json_integer((json_int_t)acc->code_stored));
    json_object_set_new(j, "tokenizer_bytes", json_integer((json_int_t)acc->tokenizer_stored));
    json_object_set_new(j, "k_multiplier", pg_json_num(job->mu));
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
    if (job->have_fit) {
      const pg_fit_result *fr = &job->fit;
      const pg_fit_point *c = &fr->points[fr->chosen];
      json_t *jf = json_object();
      json_object_set_new(jf, "method", json_string("loss"));
      json_object_set_new(jf, "lambda", pg_json_num(c->lambda));
      json_object_set_new(jf, "dloss", pg_json_num(c->dloss));
      json_object_set_new(jf, "estimated_bytes", pg_json_num(c->est_bytes));
      json_object_set_new(jf, "counted_bytes", json_integer((json_int_t)c->counted));
      json_object_set_new(jf, "calib_loss", pg_json_num(fr->base_loss));
      json_object_set_new(jf, "chosen", json_integer((json_int_t)fr->chosen));
      json_object_set_new(jf, "points", json_integer((json_int_t)fr->npoints));
      /* the choice by measured loss: the chosen point's kind and every measured candidate */
      json_object_set_new(jf, "kind", json_string(pg_fit_point_kind(c)));
      json_object_set_new(jf, "measured_loss", pg_json_num(c->measured));
      json_object_set_new(jf, "measure_tokens", json_integer((json_int_t)fr->measure_tokens));
      json_t *jc = json_array();
      for (size_t i = 0; i < fr->npoints; i++) {
        const pg_fit_point *p = &fr->points[i];
        if (isnan(p->measured)) continue;
        json_t *e = json_object();
        json_object_set_new(e, "point", json_integer((json_int_t)i));
        json_object_set_new(e, "kind", json_string(pg_fit_point_kind(p)));
        json_object_set_new(e, p->kfit ? "k_multiplier" : "lambda",
                            pg_json_num(p->kfit ? p->mu : p->lambda));
        json_object_set_new(e, "counted_bytes", json_integer((json_int_t)p->counted));
        json_object_set_new(e, "dloss", pg_json_num(p->dloss));
        json_object_set_new(e, "measured_loss", pg_json_num(p->measured));
        json_object_set_new(e, "chosen", json_boolean(p->chosen));
        json_array_append_new(jc, e);
      }
      json_object_set_new(jf, "candidates", jc);
      json_object_set_new(j, "fit", jf);
    }
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
        if (job->have_fit) {
          json_object_set_new(to, "sensitivity", pg_json_num(job->fit.sens[i]));
          json_object_set_new(to, "dloss", pg_json_num(job->fit.dloss[i]));
        }
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
    for (uint32_t i = 0; i < acc->nsections; i++) {
      const pg_account_section *s = &acc->sections[i];
      char cs[40];
      pg_codec_spec_format(&s->codec, cs, sizeof cs);
      printf("  %3u %-9s %-34s %-20s %12s -> %12s\n", s->index, pg_section_kind_name(s->kind),
             pg_safe_cut(s->label, 34), cs, pg_fmt_u64(a1, s->raw), pg_fmt_u64(a2, s->stored));
    }
    printf("\npgsize     %s: %s bytes counted (model %s + code %s%s) of %s\n", pg_safe(o->out),
           pg_fmt_u64(a1, acc->counted), pg_fmt_u64(a2, acc->model),
           pg_fmt_u64(a3, acc->code_stored), acc->tokenizer_counted ? " + tokenizer" : "",
           pg_fmt_u64(a4, budget));
    printf("           %s, headroom %lld bytes\n", over ? "OVER BUDGET" : "within budget",
           (long long)acc->headroom);
    printf("total      %.2f s\n", pg_now() - t_all);
  }
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
  o.fit_method = -1;
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
      {"block", required_argument, 0, O_BLOCK},
      {"passthrough-max", required_argument, 0, O_PASS},
      {"no-gate-int8", no_argument, 0, O_NOGATE},    {"lqer-top-k", required_argument, 0, O_LQK},
      {"lqer-rank", required_argument, 0, O_LQR},    {"lqer-force", no_argument, 0, O_LQF},
      {"codec", required_argument, 0, O_CODEC},      {"group", required_argument, 0, O_GROUP},
      {"packed", no_argument, 0, O_PACKED},          {"budget", required_argument, 0, O_BUDGET},
      {"fit-bits", required_argument, 0, O_FITBITS},
      {"fit-tolerance", required_argument, 0, O_FITTOL},
      {"exclude-tokenizer", no_argument, 0, O_EXTOK},
      {"threads", required_argument, 0, O_THREADS},  {"json", no_argument, 0, O_JSON},
      {"engine", required_argument, 0, O_ENGINE},
      {"layout", required_argument, 0, O_LAYOUT},
      {"container", required_argument, 0, O_CONTAINER},
      {"row-sort", required_argument, 0, O_ROWSORT},
      {"fit", required_argument, 0, O_FIT},
      {"fit-curve", required_argument, 0, O_FITCURVE},
      {"fit-probe-seqs", required_argument, 0, O_FITPROBE},
      {"fit-measure", required_argument, 0, O_FITMEAS},
      {"fit-measure-seqs", required_argument, 0, O_FITMSEQS},
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
      else
        return pg_tool_usage_error(PROG, "--scales: '%s' is not sdclip, hsdclip, pct or pct-row",
                                   optarg);
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
      if (parse_int(optarg, 0, 1 << 16, &iv))
        return pg_tool_usage_error(PROG, "--lqer-top-k: '%s'", optarg);
      o.r.lqer_top_k = (unsigned)iv;
      break;
    case O_LQR:
      if (parse_int(optarg, 1, PG_MAX_LQER_RANK, &iv))
        return pg_tool_usage_error(PROG, "--lqer-rank: '%s' is not 1..%d", optarg,
                                   PG_MAX_LQER_RANK);
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
      else
        return pg_tool_usage_error(PROG, "--group: '%s' is not kind, category or single", optarg);
      break;
    case O_PACKED: o.r.packing = PG_PACK_BITS; break;
    case O_LAYOUT:
      if (strcmp(optarg, "1") && strcmp(optarg, "2"))
        return pg_tool_usage_error(PROG, "--layout: '%s' is not 1 or 2", optarg);
      o.r.layout = optarg[0] - '0';
      break;
    case O_ROWSORT:
      if (!strcmp(optarg, "auto")) o.r.row_sort = PG_ROW_SORT_AUTO;
      else if (!strcmp(optarg, "always")) o.r.row_sort = PG_ROW_SORT_ALWAYS;
      else if (!strcmp(optarg, "never")) o.r.row_sort = PG_ROW_SORT_NEVER;
      else
        return pg_tool_usage_error(PROG, "--row-sort: '%s' is not auto, always or never", optarg);
      break;
    case O_CONTAINER:
      if (strcmp(optarg, "1") && strcmp(optarg, "2"))
        return pg_tool_usage_error(PROG, "--container: '%s' is not 1 or 2", optarg);
      o.r.container = optarg[0] - '0';
      break;
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
    case O_ENGINE: o.engine = optarg; break;
    case O_FIT:
      if (!strcmp(optarg, "loss")) o.fit_method = PG_FIT_LOSS;
      else if (!strcmp(optarg, "k")) o.fit_method = PG_FIT_K;
      else return pg_tool_usage_error(PROG, "--fit: '%s' is not loss or k", optarg);
      break;
    case O_FITCURVE: o.fit_curve = optarg; break;
    case O_FITPROBE:
      if (parse_int(optarg, 1, 1 << 20, &o.fit_probe))
        return pg_tool_usage_error(PROG, "--fit-probe-seqs: '%s' is not a count", optarg);
      break;
    case O_FITMEAS:
      if (parse_int(optarg, 0, 1024, &o.fit_measure))
        return pg_tool_usage_error(PROG, "--fit-measure: '%s' is not 0..1024", optarg);
      if (o.fit_measure == 0) o.fit_measure = -1;
      break;
    case O_FITMSEQS:
      if (parse_int(optarg, 1, 1 << 20, &o.fit_mseqs))
        return pg_tool_usage_error(PROG, "--fit-measure-seqs: '%s' is not a count", optarg);
      break;
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
  /* the loss fit measures sensitivities on the calibration tokens; --fit-bits is the k fit's */
  if (o.fit_method < 0) o.fit_method = no_calib || o.fit_cat >= 0 ? PG_FIT_K : PG_FIT_LOSS;
  if (o.fit_method == PG_FIT_LOSS && no_calib)
    return pg_tool_usage_error(PROG, "--fit loss needs calibration (--calib GLOB or self)");
  if (o.fit_method == PG_FIT_LOSS && o.fit_cat >= 0)
    return pg_tool_usage_error(PROG, "--fit-bits belongs to --fit k");
  if (o.fit_curve && (!o.budget || o.fit_method != PG_FIT_LOSS))
    return pg_tool_usage_error(PROG, "--fit-curve needs --budget and --fit loss");
  if (no_calib && !round_set) o.r.round_rule = PG_ROUND_RTN;
  if (no_calib && o.r.round_rule == PG_ROUND_GPTQ)
    return pg_tool_usage_error(PROG, "--round gptq needs calibration (--calib GLOB or self)");
  if (no_calib && o.r.scale_rule == PG_SCALING_HSDCLIP)
    return pg_tool_usage_error(PROG, "--scales hsdclip needs calibration (--calib GLOB or self)");
  /* the output must not be an input (every file of the calibration and validation globs too) */
  const char *inputs[262];
  size_t ni = 0;
  inputs[ni++] = o.weights;
  inputs[ni++] = o.arch;
  inputs[ni++] = o.tokenizer;
  inputs[ni++] = strcmp(o.calib, "self") && strcmp(o.calib, "none") ? o.calib : NULL;
  inputs[ni++] = o.val;
  for (int i = 0; i < o.ncode; i++) inputs[ni++] = o.code[i];
  const char *outs[2] = {o.out, o.fit_curve};
  if (pg_tool_check_outputs(PROG, outs, o.fit_curve ? 2 : 1, inputs, ni) != PG_EXIT_OK)
    return PG_EXIT_ERROR;

  pg_err err = {0};
  double t_all = pg_now();
  pg_engine *eng;
  int erc =
      pg_tool_engine(PROG, o.engine ? o.engine : "cpu", o.threads, 0, o.quiet || o.json, &eng);
  if (erc != PG_EXIT_OK) return erc;
  events ev = {.o = &o, .pr = {.on = !o.quiet && isatty(2), .t0 = pg_now(), .prog = PROG,
                                .unit = "tokens"}};
  pg_packjob_cfg cfg = {.weights = o.weights, .arch = o.arch, .tokenizer = o.tokenizer,
                        .code = o.code, .ncode = (size_t)o.ncode, .out = o.out,
                        .calib = o.calib, .val = o.val, .calib_seqs = o.cseqs,
                        .calib_len = o.clen, .calib_batch = o.cbatch,
                        .temperature = o.temperature, .seed = o.seed, .recipe = o.r,
                        .budget = o.budget, .fit_cat = o.fit_cat, .fit_mask = o.fit_mask,
                        .fit_tolerance = o.fit_tol, .count_tokenizer = o.count_tok,
                        .fit_method = o.fit_method, .fit_probe_seqs = o.fit_probe,
                        .fit_measure = o.fit_measure, .fit_measure_seqs = o.fit_mseqs,
                        .on_point = on_point, .on_fit_progress = on_fit_progress,
                        .engine = eng, .threads = o.threads, .on_step = on_step,
                        .progress = on_progress,
                        .on_tensor = on_tensor, .on_trial = on_trial, .ctx = &ev};
  pg_packjob job;
  int jrc = pg_packjob_run(&job, &cfg, &err);
  /* the curve, also when nothing fitted (it shows how close the fit came) */
  if (o.fit_curve && job.have_fit) {
    size_t n = strlen(o.fit_curve);
    int as_json = n >= 5 && !strcmp(o.fit_curve + n - 5, ".json");
    char *text = as_json ? pg_fit_curve_json(&job.fit) : pg_fit_curve_tsv(&job.fit);
    pg_err e2;
    int wrc = !text ? pg_err_set(&e2, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory")
                    : pg_file_write_atomic(o.fit_curve, text, strlen(text), &e2);
    free(text);
    if (wrc && !jrc) {
      err = e2;
      jrc = wrc;
    }
  }
  if (jrc) {
    if (ev.pr.on) fprintf(stderr, "\r\033[K");
    if (!o.json) printf("\n");
    fflush(stdout);
    pg_packjob_free(&job);
    pg_engine_destroy(eng);
    return pg_tool_fail(PROG, &err);
  }
  print_summary(&o, &job, t_all);
  const int over = job.account.counted > job.budget;
  pg_packjob_free(&job);
  pg_engine_destroy(eng);
  return over ? PG_EXIT_VERDICT : PG_EXIT_OK;
}
