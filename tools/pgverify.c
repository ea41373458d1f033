/* pgverify: re-compute the val_loss and val_bpb of a packed submission, independently of the
 * script that made it: open the artifact, dequantize its tensors into the model its arch
 * describes, read the validation shards and the byte tables of its tokenizer (or a CaseOps byte
 * sidecar), run one evaluation protocol (spec/eval.md) on an engine, print the figures and write
 * a JSON receipt of everything that went into them.
 *
 * Exit status: 0 success, 2 error (spec/cli.md). */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_eval.h"
#include "pg_io.h"
#include "pg_weights.h"
#include "pg_model.h"
#include "pg_receipt.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_threads.h"
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
      "  --val PATTERN         validation shards (a quoted glob; files named *_bytes_* are skipped)\n"
      "  --bytes PATTERN       CaseOps byte sidecar shards (per-token byte counts) instead of the\n"
      "                        tokenizer's byte tables\n"
      "  --tokenizer FILE      a SentencePiece .model instead of the artifact's own\n"
      "  --max-tokens N        use only the first N validation tokens (a partial check; the\n"
      "                        receipt says so)\n"
      "protocol:\n"
      "  --protocol NAME       plain | sliding | ttt-chunk | ttt-lora | ttt-phased (default sliding)\n"
      "  --seq-len L           window / training row length (default 2048; plain 1024)\n"
      "  --stride S            sliding stride (default 64)\n"
      "  --tail-dup            the older records' sliding variant that scores the tail's L-S\n"
      "                        targets twice (flagged in the output and the receipt)\n"
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
      "  --engine cpu          the CPU reference (fp32, fp64 sums); cuda is not built yet\n"
      "  --precision P         fp32 (default) or bf16: the records' bf16 autocast rounding\n"
      "                        (spec/engine.md §7), reported with the fp32 figure beside it\n"
      "  --no-fp32-figure      with bf16: skip the second (fp32) run\n"
      "  --threads N           CPU threads (default: all online; results do not depend on it)\n"
      "  --receipt FILE        where to write the receipt (default ARTIFACT.receipt.json)\n"
      "  --no-receipt          do not write one\n"
      "  --json                print the receipt on stdout instead of the report\n"
      "  -q, --quiet           no progress line\n"
      "  -h, --help            this text\n"
      "\n"
      "exit status: 0 success, 2 error\n");
}

/* ---- small helpers --------------------------------------------------------------------------- */

static int parse_num(const char *s, double lo, double hi, double *out) {
  return pg_parse_f64(s, lo, hi, out);
}

static int parse_int(const char *s, long lo, long hi, int *out) {
  uint64_t v;
  if (pg_parse_u64(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi) return 1;
  *out = (int)v;
  return 0;
}

static int hash_file(const char *path, uint64_t *h, uint64_t *size, pg_err *err) {
  pg_map m;
  PG_TRY(pg_file_map(&m, path, err));
  *h = XXH64(m.data, m.size, 0);
  *size = m.size;
  pg_file_unmap(&m);
  return PG_OK;
}

/* ---- provenance (spec/eval.md §7.1) --------------------------------------------------------- */

/* "k=v, k=v" from the compact JSON object of pg_arch_unchecked_json. */
static void unchecked_text(json_t *o, char *buf, size_t cap) {
  const char *key;
  json_t *v;
  buf[0] = '\0';
  json_object_foreach(o, key, v) {
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
    const size_t len = strlen(buf);
    if (len + 1 < cap) snprintf(buf + len, cap - len, "%s%s=%s", len ? ", " : "", key, t ? t : "?");
    free(t);
  }
}

/* A warning on stderr (outside text escaped), kept for the receipt's list. */
typedef struct warnings {
  char text[2][6000];
  const char *list[2];
  size_t n;
} warnings;

static void warn(warnings *w, const char *text) {
  fprintf(stderr, "%s: warning: ", PROG);
  pg_print_safe(stderr, text, strlen(text));
  fputc('\n', stderr);
  if (w->n < 2) {
    snprintf(w->text[w->n], sizeof w->text[w->n], "%s", text);
    w->list[w->n] = w->text[w->n];
    w->n++;
  }
}

/* ---- main ------------------------------------------------------------------------------------ */

enum {
  O_VAL = 256, O_BYTES, O_TOK, O_MAXTOK, O_PROTO, O_SEQ, O_STRIDE, O_TAIL, O_NOTRIM, O_BATCH,
  O_REPORT, O_CHUNK, O_OPT, O_LR, O_MOM, O_B1, O_B2, O_EPS, O_WD, O_EPOCHS, O_CLIP, O_ROWS,
  O_FREEZE, O_LRANK, O_LALPHA, O_LTARGETS, O_LCHUNK, O_LWIN, O_LDOCS, O_LLR, O_LB1, O_LB2, O_LEPS,
  O_LWD, O_WARM, O_NOWARM, O_SEED, O_PHASES, O_PREFIX, O_ENGINE, O_THREADS, O_RECEIPT, O_NORECEIPT,
  O_JSON, O_ARCH, O_PRECISION, O_NOFP32
};

typedef struct opts {
  const char *artifact, *val, *bytes, *tokenizer, *receipt, *engine, *arch;
  uint64_t max_tokens;
  int threads, json, quiet, no_receipt;
  int precision; /* PG_PREC_BF16: the bf16 run, and the fp32 run beside it unless no_fp32 */
  int no_fp32;
  pg_protocol p;
} opts;

/* Options that set protocol fields are applied after the defaults of the chosen protocol. */
typedef struct pending {
  int code;
  const char *arg;
} pending;

static int apply(opts *o, int code, const char *a) {
  pg_protocol *p = &o->p;
  int n;
  uint64_t u;
  pg_err err;
  switch (code) {
  case O_SEQ: return parse_int(a, 1, 1 << 24, &p->seq_len);
  case O_STRIDE: return parse_int(a, 1, 1 << 24, &p->stride);
  case O_TAIL: p->tail_dup = 1; return 0;
  case O_NOTRIM: p->trim = 0; return 0;
  case O_BATCH: return parse_int(a, 1, 4096, &p->batch);
  case O_REPORT:
    if (pg_parse_u64(a, &u) || !u || u > (UINT64_C(1) << 40)) return 1;
    p->report_tokens = u;
    return 0;
  case O_CHUNK:
    if (pg_parse_u64(a, &u) || !u || u > (UINT64_C(1) << 40)) return 1;
    p->chunk_tokens = u;
    return 0;
  case O_OPT: n = pg_optim_kind_parse(a); if (n < 0) return 1; p->opt = n; return 0;
  case O_LR: return parse_num(a, 0, 1e6, &p->lr);
  case O_MOM: return parse_num(a, 0, 0.999999, &p->momentum);
  case O_B1: return parse_num(a, 0, 0.999999, &p->beta1);
  case O_B2: return parse_num(a, 0, 0.999999, &p->beta2);
  case O_EPS: return parse_num(a, 1e-30, 1, &p->eps);
  case O_WD: return parse_num(a, 0, 1e6, &p->weight_decay);
  case O_EPOCHS: return parse_int(a, 0, 1000, &p->epochs);
  case O_CLIP: return parse_num(a, 0, 1e12, &p->clip);
  case O_ROWS: return parse_int(a, 1, 1 << 20, &p->batch_rows);
  case O_FREEZE: return parse_int(a, 0, 1 << 20, &p->freeze_blocks);
  case O_LRANK: return parse_int(a, 1, 4096, &p->lora_rank);
  case O_LALPHA: return parse_num(a, 1e-12, 1e12, &p->lora_alpha);
  case O_LTARGETS: return pg_lora_targets_parse(a, &p->lora_targets, &err) != PG_OK;
  case O_LCHUNK: return parse_int(a, 1, 1 << 24, &p->lora_chunk);
  case O_LWIN: return parse_int(a, 1, 1 << 24, &p->lora_window);
  case O_LDOCS: return parse_int(a, 1, 65536, &p->lora_batch_docs);
  case O_LLR: return parse_num(a, 0, 1e6, &p->lora_lr);
  case O_LB1: return parse_num(a, 0, 0.999999, &p->lora_beta1);
  case O_LB2: return parse_num(a, 0, 0.999999, &p->lora_beta2);
  case O_LEPS: return parse_num(a, 1e-30, 1, &p->lora_eps);
  case O_LWD: return parse_num(a, 0, 1e6, &p->lora_wd);
  case O_WARM: p->lora_warm_a = 1; return 0;
  case O_NOWARM: p->lora_warm_a = 0; return 0;
  /* the receipt records the seed as a JSON integer (int64) */
  case O_SEED:
    if (pg_parse_u64(a, &u) || u > (uint64_t)INT64_MAX) return 1;
    p->seed = u;
    return 0;
  case O_PHASES: return parse_int(a, 1, 1000, &p->phases);
  case O_PREFIX: return parse_int(a, 1, 1 << 30, &p->prefix_docs);
  default: return 1;
  }
}

/* Read a protocol written as pgverify options ("--protocol sliding --stride 64 --tail-dup") into
 * *p with the options table lo: the protocol's defaults, then each option; 0 when it reads and
 * validates, 1 for anything that is not a protocol option or a bad value. */
static int protocol_from_text(const char *text, const struct option *lo, pg_protocol *p) {
  char buf[1024];
  if (strlen(text) >= sizeof buf) return 1;
  memcpy(buf, text, strlen(text) + 1);
  char *tok[256];
  int n = 0;
  for (char *save, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
    if (n == 256) return 1;
    tok[n++] = t;
  }
  int kind = PG_PROTO_SLIDING;
  for (int i = 0; i < n; i++) {
    const char *name = NULL;
    if (!strcmp(tok[i], "--protocol") && i + 1 < n) name = tok[i + 1];
    if (!strncmp(tok[i], "--protocol=", 11)) name = tok[i] + 11;
    if (name && (kind = pg_proto_parse(name)) < 0) return 1;
  }
  opts o;
  memset(&o, 0, sizeof o);
  pg_protocol_defaults(&o.p, kind);
  for (int i = 0; i < n; i++) {
    if (strncmp(tok[i], "--", 2)) return 1;
    char *name = tok[i] + 2, *val = NULL, *eq = strchr(name, '=');
    if (eq) *eq = '\0', val = eq + 1;
    const struct option *f = NULL;
    for (int k = 0; lo[k].name; k++)
      if (!strcmp(lo[k].name, name)) f = &lo[k];
    if (!f) return 1;
    if (f->has_arg == required_argument && !val) {
      if (i + 1 >= n) return 1;
      val = tok[++i];
    }
    if (f->val == O_PROTO) continue;
    if (apply(&o, f->val, val)) return 1; /* also every option that is not the protocol's */
  }
  pg_err e;
  if (pg_protocol_validate(&o.p, &e)) return 1;
  *p = o.p;
  return 0;
}

/* What the receipt's provenance says (spec/eval.md §7.1), and the warnings, printed here. */
typedef struct prov_state {
  pg_receipt_provenance prov;
  warnings warns;
  char src_text[4400], diff[2048], unchecked_line[4096];
  char *w_record, *w_proto, *utext;
} prov_state;

static int gather_provenance(prov_state *ps, const opts *o, int is_st, pg_artifact *art,
                             const pg_arch *arch, const struct option *lo, pg_err *err) {
  const pg_arch_follows *fw = &arch->follows;
  char line[6000];
  {
    char *stored = is_st ? pg_tool_weights_meta(o->artifact, NULL, "arch.json") : NULL;
    if (!o->arch)
      snprintf(ps->src_text, sizeof ps->src_text, "%s",
               is_st ? "the file's __metadata__ arch.json" : "the artifact's arch.json");
    else
      snprintf(ps->src_text, sizeof ps->src_text, "--arch %s (%s)", o->arch,
               is_st && !stored ? "the file records no arch"
                                : "the same model as the file's own arch.json");
    free(stored);
  }
  ps->prov.arch_source = ps->src_text;
  ps->prov.arch_follows = fw->set ? fw->record : NULL;
  ps->w_record = pg_tool_weights_meta(o->artifact, art, "provenance.record");
  ps->w_proto = pg_tool_weights_meta(o->artifact, art, "provenance.protocol");
  ps->prov.weights_record = ps->w_record;
  if (pg_arch_unchecked_json(arch, &ps->utext, err)) return err->status;
  ps->prov.not_fixed_json = ps->utext;
  {
    json_t *unchecked = json_loads(ps->utext, 0, NULL);
    if (!unchecked) unchecked = json_object();
    unchecked_text(unchecked, ps->unchecked_line, sizeof ps->unchecked_line);
    json_decref(unchecked);
  }
  if (ps->w_record && fw->set && strcmp(ps->w_record, fw->record)) {
    snprintf(line, sizeof line, "the weights come from record \"%s\" (their provenance.record) "
             "but the arch follows \"%s\": these settings, which the weights cannot show, are "
             "that record's and may not be theirs: %s", ps->w_record, fw->record,
             ps->unchecked_line);
    warn(&ps->warns, line);
  }
  /* the record's protocol: the weights' own provenance first, else the arch's record */
  const char *wp = ps->w_proto;
  const char *rtext = wp ? wp : fw->set && fw->protocol[0] ? fw->protocol : NULL;
  const char *rname = wp ? (ps->w_record ? ps->w_record : "the weights' record") : fw->record;
  ps->prov.record_protocol = rtext;
  ps->prov.record_protocol_source = !rtext ? NULL
                                    : wp   ? "the weights' provenance.protocol"
                                           : "the arch's follows.protocol";
  pg_protocol rp;
  ps->prov.matches_record = -1;
  if (!rtext) {
    /* no record protocol to compare with: unknown */
  } else if (protocol_from_text(rtext, lo, &rp)) {
    snprintf(line, sizeof line, "cannot read the protocol recorded for %s: \"%s\"", rname,
             rtext);
    warn(&ps->warns, line);
  } else if (pg_receipt_protocol_diff(&o->p, &rp, ps->diff, sizeof ps->diff)) {
    ps->prov.matches_record = 0;
    ps->prov.differences = ps->diff;
    snprintf(line, sizeof line, "the protocol differs from the one that gave %s its figure "
             "(\"%s\"): %s; this val_bpb is not comparable to the record's", rname, rtext,
             ps->diff);
    warn(&ps->warns, line);
  } else {
    ps->prov.matches_record = 1;
  }
  ps->prov.warnings = ps->warns.list;
  ps->prov.nwarnings = ps->warns.n;
  return PG_OK;
}

static void prov_state_free(prov_state *ps) {
  free(ps->w_record);
  free(ps->w_proto);
  free(ps->utext);
}

/* The report on stdout (without --json). */
static void print_report(const opts *o, const prov_state *ps, const pg_arch *arch,
                         uint64_t art_size, uint64_t art_hash, const pg_eval_result *res,
                         const pg_eval_result *r32, uint64_t n, uint64_t total, int nthreads) {
  const pg_arch_follows *fw = &arch->follows;
  char a[32], b[32];
  printf("artifact   %s (%s bytes, xxh64 %016llx)\n", pg_safe(o->artifact),
         pg_fmt_u64(a, art_size), (unsigned long long)art_hash);
  printf("protocol   %s%s\n", pg_proto_name(o->p.kind),
         o->p.tail_dup ? " (tail variant: the last L-S targets are scored twice)" : "");
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
  pg_print_safe(stdout, ps->unchecked_line, strlen(ps->unchecked_line));
  printf("\n");
  if (ps->prov.matches_record >= 0)
    printf("record     the protocol %s the record's (%s)\n",
           ps->prov.matches_record ? "is" : "is NOT",
           ps->w_proto ? "provenance.protocol" : "follows.protocol");
  if (o->precision == PG_PREC_BF16)
    printf("precision  bf16 (the records' autocast rounding points, spec/engine.md §7)\n");
  printf("val_loss   %.8f\n", res->val_loss);
  printf("val_bpb    %.8f\n", res->val_bpb);
  if (r32)
    printf("fp32       val_loss %.8f  val_bpb %.8f  (bf16 - fp32: %+.3e bpb)\n", r32->val_loss,
           r32->val_bpb, res->val_bpb - r32->val_bpb);
  printf("targets    %s of T = %s%s\n", pg_fmt_u64(a, res->scored), pg_fmt_u64(b, res->targets),
         res->duplicates ? " (duplicates included)" : " (every target scored once)");
  printf("bytes      %s\n", pg_fmt_u64(a, (uint64_t)res->sum.bytes));
  if (n < total)
    printf("partial    the first %s of %s validation tokens\n", pg_fmt_u64(a, n),
           pg_fmt_u64(b, total));
  if (res->train_steps)
    printf("updates    %s (score-first: each after its chunk's score was committed)\n",
           pg_fmt_u64(a, res->train_steps));
  printf("time       %.2f s (engine cpu, %d threads)\n", res->seconds + (r32 ? r32->seconds : 0),
         nthreads);
  if (!o->no_receipt) printf("receipt    %s\n", pg_safe(o->receipt));
}

int main(int argc, char **argv) {
  static const struct option lo[] = {
      {"val", required_argument, 0, O_VAL}, {"bytes", required_argument, 0, O_BYTES},
      {"tokenizer", required_argument, 0, O_TOK}, {"arch", required_argument, 0, O_ARCH}, {"max-tokens", required_argument, 0, O_MAXTOK},
      {"protocol", required_argument, 0, O_PROTO}, {"seq-len", required_argument, 0, O_SEQ},
      {"stride", required_argument, 0, O_STRIDE}, {"tail-dup", no_argument, 0, O_TAIL},
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
      {"no-receipt", no_argument, 0, O_NORECEIPT}, {"json", no_argument, 0, O_JSON},
      {"precision", required_argument, 0, O_PRECISION},
      {"no-fp32-figure", no_argument, 0, O_NOFP32},
      {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
  opts o = {.engine = "cpu"};
  int kind = PG_PROTO_SLIDING;
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
      break;
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
    case O_RECEIPT: o.receipt = optarg; break;
    case O_NORECEIPT: o.no_receipt = 1; break;
    case O_JSON: o.json = 1; break;
    case 'q': o.quiet = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    case '?': return pg_tool_usage_error(PROG, "unknown option");
    default:
      if (npend == 128) return pg_tool_usage_error(PROG, "too many options");
      pend[npend++] = (pending){c, optarg};
    }
  }
  if (optind + 1 != argc) return pg_tool_usage_error(PROG, "expected one ARTIFACT");
  o.artifact = argv[optind];
  if (!o.val) return pg_tool_usage_error(PROG, "--val PATTERN is required");
  if (o.no_fp32 && o.precision != PG_PREC_BF16)
    return pg_tool_usage_error(PROG, "--no-fp32-figure goes with --precision bf16");
  if (strcmp(o.engine, "cpu") != 0) {
    if (!strcmp(o.engine, "cuda"))
      fprintf(stderr, "%s: the CUDA engine is not built yet (spec/eval.md §8); use --engine cpu\n",
              PROG);
    else
      fprintf(stderr, "%s: unknown engine '%s' (cpu)\n", PROG, pg_safe(o.engine));
    return PG_EXIT_ERROR;
  }
  pg_protocol_defaults(&o.p, kind);
  for (int i = 0; i < npend; i++)
    if (apply(&o, pend[i].code, pend[i].arg))
      return pg_tool_usage_error(PROG, "bad value '%s' for an option",
                                 pend[i].arg ? pend[i].arg : "");
  pg_err err;
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

  int rc = PG_EXIT_ERROR;
  double t0 = pg_now();
  pg_artifact *art = NULL;
  pg_model *m = NULL, *m32 = NULL;
  pg_spm *spm = NULL;
  pg_spm_tables tab = {0};
  pg_val_data vd = {0};
  pg_eval_result res = {0}, res32 = {0};
  const int fig32 = o.precision == PG_PREC_BF16 && !o.no_fp32;
  char *text = NULL;
  prov_state ps = {0};
  pg_receipt_shard *shards = NULL;
  size_t nshards = 0;
  uint64_t art_hash = 0, art_size = 0, tok_hash = 0;
  const pg_arch *arch;

  /* the artifact (or safetensors weights) and its model */
  int is_art = 0;
  if (hash_file(o.artifact, &art_hash, &art_size, &err) ||
      pg_tool_is_artifact(o.artifact, &is_art, &err))
    goto fail;
  const int is_st = !is_art;
  if (is_st) {
    pg_arch given;
    if (!o.tokenizer) {
      pg_err_set(&err, PG_E_ARG, o.artifact, PG_NO_OFFSET,
                 "a safetensors file holds no tokenizer; pass --tokenizer FILE.model");
      goto fail;
    }
    if ((o.arch && pg_arch_load(&given, o.arch, &err)) ||
        pg_model_load_checkpoint(&m, o.arch ? &given : NULL, o.artifact, &err))
      goto fail;
  } else {
    pg_arch given;
    if ((o.arch && pg_arch_load(&given, o.arch, &err)) ||
        pg_artifact_open(&art, o.artifact, NULL, &err) ||
        pg_model_load_artifact_arch(&m, art, o.arch ? &given : NULL, &err))
      goto fail;
  }
  arch = pg_model_arch(m);
  /* the tokenizer: the artifact's own unless given */
  if (o.tokenizer) {
    uint64_t sz;
    if (hash_file(o.tokenizer, &tok_hash, &sz, &err) || pg_spm_open_file(&spm, o.tokenizer, &err))
      goto fail;
  } else {
    int64_t ts = pg_artifact_tokenizer_section(art);
    if (ts < 0) {
      pg_err_set(&err, PG_E_NOT_FOUND, o.artifact, PG_NO_OFFSET,
                 "no tokenizer section; pass --tokenizer FILE.model");
      goto fail;
    }
    const pg_section *tsec = pg_artifact_section(art, (uint32_t)ts);
    if (tsec->raw_size > PG_SPM_MAX_FILE) { /* refused before it is decoded */
      pg_err_set(&err, PG_E_LIMIT, o.artifact, tsec->offset,
                 "tokenizer section of %llu bytes, limit %zu for a .model file",
                 (unsigned long long)tsec->raw_size, PG_SPM_MAX_FILE);
      goto fail;
    }
    const uint8_t *raw;
    if (pg_artifact_section_raw(art, (uint32_t)ts, &raw, &err)) goto fail;
    size_t len = (size_t)tsec->raw_size;
    tok_hash = XXH64(raw, len, 0);
    char name[4200];
    snprintf(name, sizeof name, "%s (tokenizer section)", o.artifact);
    if (pg_spm_open_mem(&spm, raw, len, name, &err)) goto fail;
    pg_artifact_section_release(art, (uint32_t)ts); /* the tokenizer keeps its own copy */
  }
  if (pg_spm_vocab_size(spm) != (uint32_t)arch->vocab_size) {
    pg_err_set(&err, PG_E_VOCAB, pg_spm_name(spm), PG_NO_OFFSET,
               "the tokenizer has %u pieces but the arch's vocabulary is %d",
               pg_spm_vocab_size(spm), arch->vocab_size);
    goto fail;
  }
  if (!o.bytes && pg_spm_tables_build(&tab, spm, (uint32_t)arch->vocab_size, 0, &err)) goto fail;
  /* the validation stream */
  if (pg_val_data_open(&vd, o.val, o.bytes, (uint32_t)arch->vocab_size, o.max_tokens, &err))
    goto fail;
  const pg_shard_set *set = vd.set;
  const uint64_t n = vd.n;
  pg_val val = {.tok = vd.tok, .n = n, .tables = o.bytes ? NULL : &tab, .bytes = vd.bytes};
  pg_engine e = pg_engine_cpu(o.threads);
  int nthreads = pg_parallel_threads(o.threads);
  pg_progress pr = {.on = !o.quiet && isatty(2), .t0 = pg_now(), .prog = PROG,
                    .unit = "targets"};
  pg_eval_hooks hooks = {.progress = pg_progress_tick, .ctx = &pr};
  if (!o.quiet && !o.json && isatty(2)) {
    char a[32];
    fprintf(stderr, "%s: %s on %s validation tokens, engine cpu (%d threads), %s%s\n", PROG,
            pg_proto_name(o.p.kind), pg_fmt_u64(a, n), nthreads,
            pg_precision_name((pg_precision)o.precision), fig32 ? " then fp32" : "");
  }
  /* provenance: what the weights cannot show, and the record's protocol (spec/eval.md §7.1) */
  if (gather_provenance(&ps, &o, is_st, art, arch, lo, &err)) goto fail;
  /* the fp32 figure runs on its own copy of the weights: a TTT protocol changes the model */
  if (fig32 && (pg_model_create(&m32, arch, &err) || pg_model_copy_params(m32, m, &err)))
    goto fail;
  pg_model_set_precision(m, (pg_precision)o.precision);
  if (fig32) pr.what = "bf16";
  if (pg_eval_run(m, &e, &val, &o.p, &hooks, &res, &err)) goto fail;
  if (fig32) {
    pr.t0 = pg_now(), pr.last = 0, pr.what = "fp32";
    if (pg_eval_run(m32, &e, &val, &o.p, &hooks, &res32, &err)) goto fail;
  }

  /* the receipt */
  nshards = pg_shard_set_nfiles(set);
  if (!(shards = calloc(nshards ? nshards : 1, sizeof *shards))) {
    pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the shard list");
    goto fail;
  }
  for (size_t k = 0; k < nshards; k++) {
    const pg_shard_file *f = pg_shard_set_file(set, k);
    uint64_t sz;
    shards[k].path = f->path;
    shards[k].tokens = f->count;
    if (hash_file(f->path, &shards[k].xxh64, &sz, &err)) goto fail;
  }
  pg_receipt_in ri = {
      .version = PG_VERSION, .artifact_path = o.artifact, .safetensors = is_st,
      .artifact_bytes = art_size, .artifact_xxh64 = art_hash, .arch = arch,
      .tokenizer_source = o.tokenizer ? o.tokenizer : "artifact",
      .tokenizer_pieces = pg_spm_vocab_size(spm), .tokenizer_xxh64 = tok_hash,
      .val_pattern = o.val, .shards = shards, .nshards = nshards,
      .tokens_available = pg_shard_set_count(set), .tokens_read = n, .bytes_pattern = o.bytes,
      .protocol = &o.p, .provenance = &ps.prov, .result = &res,
      .result_fp32 = fig32 ? &res32 : NULL,
      .engine = "cpu", .threads = nthreads, .precision = o.precision,
#ifdef __VERSION__
      .compiler = __VERSION__,
#endif
      .seconds_total = pg_now() - t0};
  if (pg_receipt_build(&ri, &text, &err) ||
      (!o.no_receipt && pg_receipt_write(o.receipt, text, &err)))
    goto fail;
  if (o.json) {
    fputs(text, stdout);
  } else {
    print_report(&o, &ps, arch, art_size, art_hash, &res, fig32 ? &res32 : NULL, n,
                 pg_shard_set_count(set), nthreads);
  }
  rc = PG_EXIT_OK;
  goto done;
fail:
  rc = pg_tool_fail(PROG, &err);
done:
  free(text);
  free(shards);
  prov_state_free(&ps);
  pg_eval_result_free(&res);
  pg_eval_result_free(&res32);
  pg_val_data_free(&vd);
  pg_spm_tables_free(&tab);
  pg_spm_free(spm);
  pg_model_free(m);
  pg_model_free(m32);
  pg_artifact_free(art);
  return rc;
}
