/* pg_protocol_text.c: a protocol written as pgverify options (pg_protocol_text.h). The names
 * and ranges are pgverify's (spec/eval.md §3, spec/cli.md); only protocol options are accepted. */
#include "pg_protocol_text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pg_text.h"

static int parse_num(const char *s, double lo, double hi, double *out) {
  return pg_parse_f64(s, lo, hi, out);
}

static int parse_int(const char *s, long lo, long hi, int *out) {
  uint64_t v;
  if (pg_parse_u64(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi) return 1;
  *out = (int)v;
  return 0;
}

static int parse_big(const char *s, uint64_t *out) {
  uint64_t u;
  if (pg_parse_u64(s, &u) || !u || u > (UINT64_C(1) << 40)) return 1;
  *out = u;
  return 0;
}

enum {
  O_PROTO = 1, O_SEQ, O_STRIDE, O_TAIL, O_NOTRIM, O_BATCH, O_REPORT, O_CHUNK, O_OPT, O_LR, O_MOM,
  O_B1, O_B2, O_EPS, O_WD, O_EPOCHS, O_CLIP, O_ROWS, O_FREEZE, O_LRANK, O_LALPHA, O_LTARGETS,
  O_LCHUNK, O_LWIN, O_LDOCS, O_LLR, O_LB1, O_LB2, O_LEPS, O_LWD, O_WARM, O_NOWARM, O_SEED,
  O_PHASES, O_PREFIX, O_SVAR, O_PVAR, O_PACKW, O_PACKR
};

typedef struct popt {
  const char *name;
  int code, has_arg;
} popt;

static const popt OPTS[] = {
    {"protocol", O_PROTO, 1}, {"seq-len", O_SEQ, 1}, {"stride", O_STRIDE, 1},
    {"tail-dup", O_TAIL, 0}, {"no-trim", O_NOTRIM, 0}, {"batch", O_BATCH, 1},
    {"report-tokens", O_REPORT, 1}, {"chunk-tokens", O_CHUNK, 1}, {"opt", O_OPT, 1},
    {"lr", O_LR, 1}, {"momentum", O_MOM, 1}, {"beta1", O_B1, 1}, {"beta2", O_B2, 1},
    {"eps", O_EPS, 1}, {"weight-decay", O_WD, 1}, {"epochs", O_EPOCHS, 1}, {"clip", O_CLIP, 1},
    {"batch-rows", O_ROWS, 1}, {"freeze-blocks", O_FREEZE, 1}, {"lora-rank", O_LRANK, 1},
    {"lora-alpha", O_LALPHA, 1}, {"lora-targets", O_LTARGETS, 1}, {"lora-chunk", O_LCHUNK, 1},
    {"lora-window", O_LWIN, 1}, {"lora-batch-docs", O_LDOCS, 1}, {"lora-lr", O_LLR, 1},
    {"lora-beta1", O_LB1, 1}, {"lora-beta2", O_LB2, 1}, {"lora-eps", O_LEPS, 1},
    {"lora-wd", O_LWD, 1}, {"lora-warm-a", O_WARM, 0}, {"no-lora-warm-a", O_NOWARM, 0},
    {"seed", O_SEED, 1}, {"phases", O_PHASES, 1}, {"prefix-docs", O_PREFIX, 1},
    {"sliding-variant", O_SVAR, 1}, {"plain-variant", O_PVAR, 1}, {"pack-windows", O_PACKW, 1},
    {"pack-ranks", O_PACKR, 1}, {NULL, 0, 0}};

/* One option onto p (the ranges of pgverify's options); 0 when it applies. */
static int apply(pg_protocol *p, int code, const char *a) {
  int n;
  uint64_t u;
  pg_err err;
  switch (code) {
  case O_SEQ: return parse_int(a, 1, 1 << 24, &p->seq_len);
  case O_STRIDE: return parse_int(a, 1, 1 << 24, &p->stride);
  case O_TAIL: p->tail_dup = 1; return 0;
  case O_NOTRIM: p->trim = 0; return 0;
  case O_BATCH: return parse_int(a, 1, 4096, &p->batch);
  case O_REPORT: return parse_big(a, &p->report_tokens);
  case O_CHUNK: return parse_big(a, &p->chunk_tokens);
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
  case O_SEED: /* recorded as a JSON integer (int64) */
    if (pg_parse_u64(a, &u) || u > (uint64_t)INT64_MAX) return 1;
    p->seed = u;
    return 0;
  case O_PHASES: return parse_int(a, 1, 1000, &p->phases);
  case O_PREFIX: return parse_int(a, 1, 1 << 30, &p->prefix_docs);
  case O_SVAR:
    n = pg_sliding_variant_parse(a);
    if (n < 0) return 1;
    p->sliding_variant = n;
    return 0;
  case O_PVAR:
    n = pg_plain_variant_parse(a);
    if (n < 0) return 1;
    p->plain_variant = n;
    return 0;
  case O_PACKW: return parse_int(a, 1, 1 << 24, &p->pack_windows);
  case O_PACKR: return parse_int(a, 1, 4096, &p->pack_ranks);
  default: return 1;
  }
}

int pg_protocol_option(pg_protocol *p, const char *name, const char *value) {
  for (int k = 0; OPTS[k].name; k++) {
    if (strcmp(OPTS[k].name, name)) continue;
    if (OPTS[k].code == O_PROTO) return -1;
    if (OPTS[k].has_arg && !value) return 1;
    return apply(p, OPTS[k].code, value) ? 1 : 0;
  }
  return -1;
}

int pg_protocol_from_text(const char *text, pg_protocol *out) {
  char buf[1024];
  if (strlen(text) >= sizeof buf) return 1;
  memcpy(buf, text, strlen(text) + 1);
  char *tok[256];
  int n = 0;
  for (char *save, *t = strtok_r(buf, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) {
    if (n == 256) return 1;
    tok[n++] = t;
  }
  /* the protocol first: the other options apply over its defaults, wherever they stand */
  int kind = PG_PROTO_SLIDING;
  for (int i = 0; i < n; i++) {
    const char *name = NULL;
    if (!strcmp(tok[i], "--protocol") && i + 1 < n) name = tok[i + 1];
    if (!strncmp(tok[i], "--protocol=", 11)) name = tok[i] + 11;
    if (name && (kind = pg_proto_parse(name)) < 0) return 1;
  }
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  for (int i = 0; i < n; i++) {
    if (strncmp(tok[i], "--", 2)) return 1;
    char *name = tok[i] + 2, *val = NULL, *eq = strchr(name, '=');
    if (eq) *eq = '\0', val = eq + 1;
    const popt *f = NULL;
    for (int k = 0; OPTS[k].name; k++)
      if (!strcmp(OPTS[k].name, name)) f = &OPTS[k];
    if (!f) return 1;
    if (f->has_arg && !val) {
      if (i + 1 >= n) return 1;
      val = tok[++i];
    }
    if (f->code == O_PROTO) continue;
    if (apply(&p, f->code, val)) return 1;
  }
  pg_err e;
  if (pg_protocol_validate(&p, &e)) return 1;
  *out = p;
  return 0;
}
