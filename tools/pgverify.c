/* pgverify: re-compute the val_loss and val_bpb of a packed submission, independently of the
 * script that made it: open the artifact, dequantize its tensors into the model its arch
 * describes, read the validation shards and the byte tables of its tokenizer (or a CaseOps byte
 * sidecar), run one evaluation protocol (spec/eval.md) on an engine, print the figures and write
 * a JSON receipt of everything that went into them. The run is the library's (pg_verify.h); this
 * main reads the options (and a record's protocol written as options) and prints.
 *
 * Exit status: 0 success, 2 error, 3 the engine cannot run here (spec/cli.md). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_eval.h"
#include "pg_model.h"
#include "pg_protocol_text.h"
#include "pg_preset.h"
#include "pg_verify.h"
#include "tool.h"

static const char *PROG = "pgverify";

static void usage(FILE *f) {
  fprintf(f,
      "usage: pgverify ARTIFACT --val 'DIR/fineweb_val_*.bin' [options]\n"
      "       pgverify WEIGHTS.safetensors --tokenizer FILE.model [--arch ARCH.json] --val ...\n"
      "\n"
      "Re-compute val_loss and val_bpb of ARTIFACT (or of dequantized weights in a\n"
      "safetensors file, e.g. a PyTorch export) on the validation shards with one\n"
      "evaluation protocol (spec/eval.md), print them and write a JSON receipt.\n"
      "\n"
      "input:\n"
      "  --arch FILE           the arch of weights without \"arch.json\" metadata; with weights\n"
      "                        that have one, it must describe the same model (else refused)\n"
      "  --preset NAME         a merged record's arch and protocol (spec/presets/NAME.json);\n"
      "                        protocol options given as well override the preset's\n"
      "  --list-presets        print the presets (record, date, PR, claimed val_bpb) and exit\n"
      "  --val PATTERN         validation shards (a quoted glob; "
      "files named *_bytes_* are skipped)\n"
      "  --bytes PATTERN       CaseOps byte sidecar shards (per-token byte counts) instead of the\n"
      "                        tokenizer's byte tables\n"
      "  --tokenizer FILE      a SentencePiece .model instead of the artifact's own\n"
      "  --max-tokens N        use only the first N validation tokens (a partial check; the\n"
      "                        receipt says so)\n"
      "protocol:\n"
      "  --protocol NAME       plain | sliding | ttt-chunk | ttt-lora | ttt-phased "
      "(default sliding)\n"
      "  --seq-len L           window / training row length (default 2048; plain 1024)\n"
      "  --stride S            sliding stride (default 64)\n"
      "  --tail-dup            the older records' sliding variant that scores the tail's L-S\n"
      "                        targets twice (flagged in the output and the receipt)\n"
      "  --sliding-variant V   standard | last-s | gap: the early records' windows that leave\n"
      "                        targets unscored (flagged: does not score every target)\n"
      "  --plain-variant V     windows | packed: the 2026-04 records' eval_val, N windows per\n"
      "                        row over R ranks, the rest dropped (flagged likewise)\n"
      "  --pack-windows N (32) --pack-ranks R (8)   the packed rows\n"
      "  --no-trim             do not trim the stream to ((n-1)/L)*L+1 tokens\n"
      "  --batch N             windows or documents per forward (default 8; no effect on results)\n"
      "  --report-tokens N     plain/sliding: targets per receipt chunk (default 32768)\n"
      "chunked TTT (ttt-chunk) and the global SGD of ttt-phased:\n"
      "  --chunk-tokens C      (default 32768)   --opt sgd|adamw (default sgd)\n"
      "  --lr X (0.005; phased 0.001)   --momentum X (0.9)   --beta1 X --beta2 X --eps X\n"
      "  --weight-decay X (0)  --epochs N (3; phased 1)   --clip X (1.0; 0 = none)\n"
      "  --batch-rows N (32)   --freeze-blocks K (0)\n"
      "per-document LoRA (ttt-lora, ttt-phased):\n"
      "  --lora-rank R (80)    --lora-alpha A (144)   --lora-targets q,k,v,o,mlp,head (all)\n"
      "  --lora-chunk N (48)   --lora-window N (2048)  --lora-batch-docs N (64)\n"
      "  --lora-lr X (1e-4)    --lora-beta1 X (0)  --lora-beta2 X (0.99)  --lora-eps X (1e-10)\n"
      "  --lora-wd X (0.5)     --lora-warm-a / --no-lora-warm-a (keep A between batches: on)\n"
      "  --seed N (1337)       --phases N (3)  --prefix-docs N (2500)\n"
      "engine and output:\n"
      "  --engine NAME         cpu (the reference: fp32, fp64 sums), cuda (GPUs, every\n"
      "                        protocol; exit 3 without a GPU) or auto (cuda where it runs)\n"
      "  --gpus N              share the windows (or a batch's documents) among N engines:\n"
      "                        GPUs 0..N-1 (exit 3 with fewer), or N CPU engines with\n"
      "                        --engine cpu; the same result bits for any N (full-model\n"
      "                        updates on the first engine; default 1)\n"
      "  --precision P         fp32 or bf16: the records' bf16 autocast rounding (spec/engine.md\n"
      "                        §7), reported with the fp32 figure beside it (on cuda: the fast\n"
      "                        bf16 kernels, spec/engine.md §8.7); default bf16 on a GPU\n"
      "                        engine, fp32 on the CPU\n"
      "  --no-fp32-figure      with bf16: skip the second (fp32) run\n"
      "  --threads N           CPU threads (default: all online; results do not depend on it)\n"
      "  --receipt FILE        where to write the receipt (default ARTIFACT.receipt.json)\n"
      "  --no-receipt          do not write one\n"
      "  --per-token FILE      write every scored target's NLL and bytes, in the order they are\n"
      "                        added (binary, spec/eval.md §7.2)\n"
      "  --json                print the receipt on stdout instead of the report\n"
      "  -q, --quiet           no progress line\n"
      "  -h, --help            this text\n"
      "\n"
      "exit status: 0 success, 2 error, 3 the engine cannot run here\n");
}

/* ---- small helpers --------------------------------------------------------------------------- */

static int parse_int(const char *s, long lo, long hi, int *out) {
  uint64_t v;
  if (pg_parse_u64(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi) return 1;
  *out = (int)v;
  return 0;
}

/* ---- options --------------------------------------------------------------------------------- */

enum {
  O_VAL = 256, O_BYTES, O_TOK, O_MAXTOK, O_PROTO, O_SEQ, O_STRIDE, O_TAIL, O_NOTRIM, O_BATCH,
  O_REPORT, O_CHUNK, O_OPT, O_LR, O_MOM, O_B1, O_B2, O_EPS, O_WD, O_EPOCHS, O_CLIP, O_ROWS,
  O_FREEZE, O_LRANK, O_LALPHA, O_LTARGETS, O_LCHUNK, O_LWIN, O_LDOCS, O_LLR, O_LB1, O_LB2, O_LEPS,
  O_LWD, O_WARM, O_NOWARM, O_SEED, O_PHASES, O_PREFIX, O_ENGINE, O_THREADS, O_RECEIPT, O_NORECEIPT,
  O_JSON, O_ARCH, O_PRECISION, O_NOFP32, O_GPUS, O_PRESET, O_LISTPRESETS, O_PERTOKEN, O_SVAR,
  O_PVAR, O_PACKW, O_PACKR
};

typedef struct opts {
  const char *artifact, *val, *bytes, *tokenizer, *receipt, *engine, *arch, *preset, *per_token;
  uint64_t max_tokens;
  int threads, json, quiet, no_receipt;
  int gpus; /* engines sharing the windows (--gpus) */
  int precision; /* PG_PREC_BF16: the bf16 run, and the fp32 run beside it unless no_fp32; -1
                   until the engine is open when --precision is not given */
  int precision_default; /* 1: precision is the engine's default, not --precision */
  int no_fp32;
  pg_protocol p;
} opts;

static const struct option LONGOPTS[] = {
    {"val", required_argument, 0, O_VAL}, {"bytes", required_argument, 0, O_BYTES},
    {"tokenizer", required_argument, 0, O_TOK}, {"arch", required_argument, 0, O_ARCH},
    {"max-tokens", required_argument, 0, O_MAXTOK},
    {"protocol", required_argument, 0, O_PROTO}, {"seq-len", required_argument, 0, O_SEQ},
    {"stride", required_argument, 0, O_STRIDE}, {"tail-dup", no_argument, 0, O_TAIL},
    {"sliding-variant", required_argument, 0, O_SVAR},
    {"plain-variant", required_argument, 0, O_PVAR},
    {"pack-windows", required_argument, 0, O_PACKW},
    {"pack-ranks", required_argument, 0, O_PACKR},
    {"no-trim", no_argument, 0, O_NOTRIM}, {"batch", required_argument, 0, O_BATCH},
    {"report-tokens", required_argument, 0, O_REPORT},
    {"chunk-tokens", required_argument, 0, O_CHUNK}, {"opt", required_argument, 0, O_OPT},
    {"lr", required_argument, 0, O_LR}, {"momentum", required_argument, 0, O_MOM},
    {"beta1", required_argument, 0, O_B1}, {"beta2", required_argument, 0, O_B2},
    {"eps", required_argument, 0, O_EPS}, {"weight-decay", required_argument, 0, O_WD},
    {"epochs", required_argument, 0, O_EPOCHS}, {"clip", required_argument, 0, O_CLIP},
    {"batch-rows", required_argument, 0, O_ROWS},
    {"freeze-blocks", required_argument, 0, O_FREEZE},
    {"lora-rank", required_argument, 0, O_LRANK}, {"lora-alpha", required_argument, 0, O_LALPHA},
    {"lora-targets", required_argument, 0, O_LTARGETS},
    {"lora-chunk", required_argument, 0, O_LCHUNK}, {"lora-window", required_argument, 0, O_LWIN},
    {"lora-batch-docs", required_argument, 0, O_LDOCS}, {"lora-lr", required_argument, 0, O_LLR},
    {"lora-beta1", required_argument, 0, O_LB1}, {"lora-beta2", required_argument, 0, O_LB2},
    {"lora-eps", required_argument, 0, O_LEPS}, {"lora-wd", required_argument, 0, O_LWD},
    {"lora-warm-a", no_argument, 0, O_WARM}, {"no-lora-warm-a", no_argument, 0, O_NOWARM},
    {"seed", required_argument, 0, O_SEED}, {"phases", required_argument, 0, O_PHASES},
    {"prefix-docs", required_argument, 0, O_PREFIX}, {"engine", required_argument, 0, O_ENGINE},
    {"threads", required_argument, 0, O_THREADS}, {"receipt", required_argument, 0, O_RECEIPT},
    {"no-receipt", no_argument, 0, O_NORECEIPT}, {"per-token", required_argument, 0, O_PERTOKEN},
    {"json", no_argument, 0, O_JSON},
    {"precision", required_argument, 0, O_PRECISION},
    {"no-fp32-figure", no_argument, 0, O_NOFP32}, {"gpus", required_argument, 0, O_GPUS},
    {"preset", required_argument, 0, O_PRESET}, {"list-presets", no_argument, 0, O_LISTPRESETS},
    {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};

/* Options that set protocol fields are applied after the defaults of the chosen protocol. */
typedef struct pending {
  int code;
  const char *arg;
} pending;

/* A protocol option given on the command line, by its code: the library applies it by name
 * (the ranges are pg_protocol_option's, the same for a record's protocol text). */
static int apply(opts *o, int code, const char *a) {
  for (int k = 0; LONGOPTS[k].name; k++)
    if (LONGOPTS[k].val == code) return pg_protocol_option(&o->p, LONGOPTS[k].name, a) != 0;
  return 1;
}

/* The report on stdout (without --json). */
static void print_report(const opts *o, const pg_verify_result *v) {
  const pg_arch_follows *fw = &v->arch.follows;
  const pg_eval_result *res = &v->eval, *r32 = v->has_fp32 ? &v->eval_fp32 : NULL;
  const uint64_t n = v->tokens_read, total = v->tokens_available;
  char a[32], b[32], c[32];
  printf("artifact   %s (%s bytes, xxh64 %016llx)\n", pg_safe(o->artifact),
         pg_fmt_u64(a, v->weights_bytes), (unsigned long long)v->weights_xxh64);
  printf("protocol   %s%s", pg_proto_name(o->p.kind),
         o->p.tail_dup ? " (tail variant: the last L-S targets are scored twice)" : "");
  if (o->p.sliding_variant)
    printf(" (variant %s: does not score every target)",
           pg_sliding_variant_name(o->p.sliding_variant));
  if (o->p.plain_variant)
    printf(" (variant packed, %d windows per row over %d ranks: does not score every target)",
           o->p.pack_windows, o->p.pack_ranks);
  printf("\n");
  printf("arch       ");
  if (fw->set) {
    printf("follows ");
    pg_print_safe(stdout, fw->record, strlen(fw->record));
    if (fw->pr) printf(" (PR #%d)", fw->pr);
    if (fw->val_bpb > 0) printf(", reported val_bpb %.5g", fw->val_bpb);
    printf("\n");
  } else {
    printf("names no record (no \"follows\")\n");
  }
  printf("unchecked  not fixed by the weights, taken from the arch: ");
  pg_print_safe(stdout, v->unchecked, strlen(v->unchecked));
  printf("\n");
  if (v->matches_record >= 0)
    printf("record     the protocol %s the record's (%s)\n",
           v->matches_record ? "is" : "is NOT",
           v->record_protocol_from_weights ? "provenance.protocol" : "follows.protocol");
  if (o->precision == PG_PREC_BF16)
    printf("precision  bf16 (the records' autocast rounding points, spec/engine.md §7)%s\n",
           o->precision_default ? "; the GPU default, --precision fp32 for the exact run" : "");
  printf("val_loss   %.8f\n", res->val_loss);
  printf("val_bpb    %.8f\n", res->val_bpb);
  if (r32)
    printf("fp32       val_loss %.8f  val_bpb %.8f  (bf16 - fp32: %+.3e bpb)\n", r32->val_loss,
           r32->val_bpb, res->val_bpb - r32->val_bpb);
  if (res->unscored)
    printf("targets    %s of T = %s: does not score every target (%s never scored)\n",
           pg_fmt_u64(a, res->scored), pg_fmt_u64(b, res->targets),
           pg_fmt_u64(c, res->unscored));
  else
    printf("targets    %s of T = %s%s\n", pg_fmt_u64(a, res->scored),
           pg_fmt_u64(b, res->targets),
           res->duplicates ? " (duplicates included)" : " (every target scored once)");
  printf("bytes      %s\n", pg_fmt_u64(a, (uint64_t)res->sum.bytes));
  if (n < total)
    printf("partial    the first %s of %s validation tokens\n", pg_fmt_u64(a, n),
           pg_fmt_u64(b, total));
  if (res->train_steps)
    printf("updates    %s (score-first: each after its chunk's score was committed)\n",
           pg_fmt_u64(a, res->train_steps));
  printf("time       %.2f s (engine %s: %s)\n", res->seconds + (r32 ? r32->seconds : 0),
         v->engine.name, v->devices);
  if (v->engine.driver[0]) printf("driver     %s\n", v->engine.driver);
  if (!o->no_receipt) printf("receipt    %s\n", pg_safe(o->receipt));
}

/* ---- the run's events ------------------------------------------------------------------------ */

typedef struct events {
  const opts *o;
  pg_progress pr;
} events;

static int read_record_protocol(void *ctx, const char *text, pg_protocol *p) {
  (void)ctx;
  return pg_protocol_from_text(text, p);
}

static void on_start(void *ctx, const pg_verify_start *s) {
  const events *ev = ctx;
  if (ev->o->quiet || ev->o->json || !isatty(2)) return;
  char a[32];
  fprintf(stderr, "%s: %s on %s validation tokens, engine %s (%s), %s%s\n", PROG,
          pg_proto_name(s->protocol->kind), pg_fmt_u64(a, s->tokens), s->engine->name,
          s->devices,
          pg_precision_name((pg_precision)s->precision), s->fp32_figure ? " then fp32" : "");
}

/* A warning on stderr (outside text escaped); the library keeps it for the receipt. */
static void on_warning(void *ctx, const char *text) {
  (void)ctx;
  fprintf(stderr, "%s: warning: ", PROG);
  pg_print_safe(stderr, text, strlen(text));
  fputc('\n', stderr);
}

static void on_phase(void *ctx, const char *what) {
  events *ev = ctx;
  ev->pr.t0 = pg_now(), ev->pr.last = 0, ev->pr.what = what;
}

static int on_progress(void *ctx, uint64_t done, uint64_t total) {
  return pg_progress_tick(&((events *)ctx)->pr, done, total);
}

/* ---- presets (spec/presets/README.md) -------------------------------------------------------- */

/* The protocol named by a preset's options (they begin "--protocol NAME"), or -1. */
static int preset_kind(const pg_preset *p) {
  char name[32];
  if (sscanf(p->protocol, "--protocol %31s", name) != 1) return -1;
  return pg_proto_parse(name);
}

/* --list-presets: one line per preset. */
static int list_presets(void) {
  char **names;
  size_t n;
  pg_err err;
  if (pg_preset_names(&names, &n, &err)) return pg_tool_fail(PROG, &err);
  pg_preset *p = malloc(sizeof *p);
  int rc = p ? PG_EXIT_OK : pg_tool_usage_error(PROG, "out of memory");
  if (p) printf("%-44s %-10s %-6s %-10s %s\n", "preset", "date", "PR", "val_bpb", "supported");
  for (size_t i = 0; p && i < n && rc == PG_EXIT_OK; i++) {
    if (pg_preset_load(p, names[i], &err)) {
      rc = pg_tool_fail(PROG, &err);
      break;
    }
    char pr[16] = "-";
    if (p->pr) snprintf(pr, sizeof pr, "#%d", p->pr);
    printf("%-44s %-10s %-6s %-10.8g ", p->name, p->date, pr, p->val_bpb);
    if (p->supported) printf("yes\n");
    else {
      printf("no: ");
      pg_print_safe(stdout, p->reason, strlen(p->reason));
      printf("\n");
    }
  }
  free(p);
  pg_preset_names_free(names, n);
  return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  const struct option *lo = LONGOPTS;
  opts o = {.engine = "cpu", .gpus = 1, .precision = -1};
  int kind = PG_PROTO_SLIDING, kind_given = 0, list = 0;
  pending pend[128];
  int npend = 0, c;
  while ((c = getopt_long(argc, argv, "qh", lo, NULL)) != -1) {
    switch (c) {
    case O_VAL: o.val = optarg; break;
    case O_BYTES: o.bytes = optarg; break;
    case O_TOK: o.tokenizer = optarg; break;
    case O_ARCH: o.arch = optarg; break;
    case O_MAXTOK:
      if (pg_parse_u64(optarg, &o.max_tokens) || o.max_tokens < 2)
        return pg_tool_usage_error(PROG, "bad --max-tokens '%s'", optarg);
      break;
    case O_PROTO:
      kind = pg_proto_parse(optarg);
      if (kind < 0) return pg_tool_usage_error(PROG, "unknown protocol '%s'", optarg);
      kind_given = 1;
      break;
    case O_PRESET: o.preset = optarg; break;
    case O_LISTPRESETS: list = 1; break;
    case O_ENGINE: o.engine = optarg; break;
    case O_THREADS:
      if (parse_int(optarg, 0, 256, &o.threads))
        return pg_tool_usage_error(PROG, "bad --threads '%s'", optarg);
      break;
    case O_PRECISION:
      o.precision = pg_precision_parse(optarg);
      if (o.precision < 0)
        return pg_tool_usage_error(PROG, "unknown precision '%s' (fp32, bf16)", optarg);
      break;
    case O_NOFP32: o.no_fp32 = 1; break;
    case O_GPUS:
      if (parse_int(optarg, 1, PG_ENGINES_MAX, &o.gpus))
        return pg_tool_usage_error(PROG, "bad --gpus '%s' (1..%d)", optarg, PG_ENGINES_MAX);
      break;
    case O_RECEIPT: o.receipt = optarg; break;
    case O_NORECEIPT: o.no_receipt = 1; break;
    case O_PERTOKEN: o.per_token = optarg; break;
    case O_JSON: o.json = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    case '?': return pg_tool_usage_error(PROG, "unknown option");
    default:
      if (npend == 128) return pg_tool_usage_error(PROG, "too many options");
      pend[npend++] = (pending){c, optarg};
    }
  }
  if (list) return list_presets();
  if (optind + 1 != argc) return pg_tool_usage_error(PROG, "expected one ARTIFACT");
  o.artifact = argv[optind];
  if (!o.val) return pg_tool_usage_error(PROG, "--val PATTERN is required");
  if (o.no_fp32 && o.precision == PG_PREC_FP32)
    return pg_tool_usage_error(PROG, "--no-fp32-figure goes with --precision bf16");
  if (pg_engine_kind_parse(o.engine) < 0)
    return pg_tool_usage_error(PROG, "--engine: cpu, cuda or auto, not '%s'", o.engine);
  pg_err err;
  /* a preset gives the arch and the protocol; the options given override the protocol's, and
   * another --protocol starts from that protocol's defaults */
  pg_preset *pre = NULL;
  if (o.preset) {
    if (o.arch) return pg_tool_usage_error(PROG, "--preset and --arch both give the arch");
    static pg_preset preset; /* static: large, and nothing to free on an early exit */
    pre = &preset;
    if (pg_preset_load(pre, o.preset, &err) || pg_preset_require_supported(pre, &err) ||
        pg_preset_check_weights(&pre->arch, o.artifact, &err))
      return pg_tool_fail(PROG, &err);
  }
  pg_protocol_defaults(&o.p, kind);
  if (pre && (!kind_given || preset_kind(pre) == kind) &&
      pg_protocol_from_text(pre->protocol, &o.p)) {
    return pg_tool_usage_error(PROG, "preset '%s': its protocol does not read: %s", o.preset,
                               pre->protocol);
  }
  for (int i = 0; i < npend; i++)
    if (apply(&o, pend[i].code, pend[i].arg))
      return pg_tool_usage_error(PROG, "bad value '%s' for an option",
                                 pend[i].arg ? pend[i].arg : "");
  if (pg_protocol_validate(&o.p, &err)) return pg_tool_fail(PROG, &err);

  char rpath[4096];
  if (!o.no_receipt) {
    if (!o.receipt) {
      int k = snprintf(rpath, sizeof rpath, "%s.receipt.json", o.artifact);
      if (k < 0 || (size_t)k >= sizeof rpath) return pg_tool_usage_error(PROG, "path too long");
      o.receipt = rpath;
    }
    const char *ins[] = {o.artifact, o.tokenizer, o.arch, o.val, o.bytes};
    if (pg_tool_check_outputs(PROG, &o.receipt, 1, ins, 5) != PG_EXIT_OK) return PG_EXIT_ERROR;
  }

  pg_engine *engs[PG_ENGINES_MAX];
  int erc = pg_tool_engines(PROG, o.engine, o.threads, o.precision, o.gpus, o.quiet || o.json,
                            engs);
  if (erc != PG_EXIT_OK) return erc;
  /* without --precision: bf16 on a GPU engine (the records' numerics), fp32 on the CPU */
  if (o.precision < 0) {
    o.precision = pg_tool_default_precision(engs[0]);
    o.precision_default = 1;
    if (o.no_fp32 && o.precision != PG_PREC_BF16) {
      pg_tool_usage_error(PROG, "--no-fp32-figure goes with bf16, and the %s engine's default "
                          "precision is fp32", engs[0]->info.name);
      for (int i = 0; i < o.gpus; i++) pg_engine_destroy(engs[i]);
      return PG_EXIT_ERROR;
    }
  }
  char preset_label[160];
  snprintf(preset_label, sizeof preset_label, "--preset %s", o.preset ? o.preset : "");
  events ev = {.o = &o, .pr = {.on = !o.quiet && isatty(2), .t0 = pg_now(), .prog = PROG,
                                .unit = "targets"}};
  pg_verify_cfg cfg = {.weights = o.artifact, .arch = o.arch, .tokenizer = o.tokenizer,
                       .arch_given = pre ? &pre->arch : NULL, .arch_label = preset_label,
                       .val = o.val, .bytes = o.bytes, .max_tokens = o.max_tokens,
                       .protocol = o.p, .precision = o.precision,
                       .fp32_figure = o.precision == PG_PREC_BF16 && !o.no_fp32,
                       .engine = engs[0], .engines = engs, .nengines = o.gpus,
                       .threads = o.threads, .receipt = o.no_receipt ? NULL : o.receipt,
                       .per_token = o.per_token,
                       .read_protocol = read_record_protocol, .on_start = on_start,
                       .on_warning = on_warning, .on_phase = on_phase, .progress = on_progress,
                       .ctx = &ev};
  pg_verify_result v;
  int rc = pg_verify_run(&cfg, &v, &err) ? pg_tool_fail(PROG, &err) : PG_EXIT_OK;
  if (rc == PG_EXIT_OK) {
    if (o.json) fputs(v.receipt_json, stdout);
    else print_report(&o, &v);
  }
  pg_verify_result_free(&v);
  for (int i = o.gpus - 1; i >= 0; i--) pg_engine_destroy(engs[i]);
  return rc;
}
