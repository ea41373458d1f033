/* fuzz_forward.c: libFuzzer target for the forward pass, the backward pass and the evaluation
 * protocols under hostile but valid archs: the input is arch JSON (or, when it does not start with
 * '{', bytes that choose the sizes and options of one); an arch the parser accepts and
 * that fits small caps (parameters, vocabulary, virtual layers) is built with deterministic
 * weights and run: a forward and a backward on a small batch, then tiny plain, sliding and
 * ttt-chunk runs over a short BOS-started stream, with the plain and sliding variants that leave
 * targets unscored. A valid arch must run: every step succeeds (or reports PG_E_NOMEM in one
 * line; packed without the document mask at L is refused in one line), NLLs and gradients are
 * finite, and the protocols score every target once (the variants: at most once, the rest
 * counted unscored) with finite sums. Every broken invariant aborts. (The fuzzers that stop at
 * parsing never reached the attention op's head_dim limit; this one does.) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_tape.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* caps that keep one input well under a second */
#define MAX_PARAMS 30000u
#define MAX_VOCAB 256
#define MAX_VIRTUAL 10
#define MAX_WIDTH 512 /* dim, heads·head_dim, mlp.hidden and the embedding widths */
#define ROWS 2
#define LEN 7
#define NVAL 24

static void check_line(const pg_err *err, int status) {
  if (err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

/* A status from a run on a valid arch: success, or an allocation failure reported in one line. */
static int ran(int rc, const pg_err *err) {
  if (rc == PG_OK) return 1;
  if (rc != PG_E_NOMEM) abort();
  check_line(err, rc);
  return 0;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return x;
}

static int small(const pg_arch *a) {
  uint64_t params = 0;
  if (pg_arch_param_count(a, &params, NULL) != PG_OK || params > MAX_PARAMS) return 0;
  if (a->vocab_size > MAX_VOCAB || a->vocab_size < 2) return 0;
  if (pg_arch_virtual_layers(a) > MAX_VIRTUAL) return 0;
  const int widths[] = {a->dim, a->heads * a->head_dim, a->mlp.hidden, a->embeddings.bigram_dim,
                        a->embeddings.ve_dim};
  for (size_t k = 0; k < sizeof widths / sizeof widths[0]; k++)
    if (widths[k] > MAX_WIDTH) return 0;
  return 1;
}

/* Forward and backward on a ROWS×LEN batch with a padded second row. */
static void forward_backward(pg_model *m, pg_engine *e, uint64_t seed) {
  const int V = pg_model_arch(m)->vocab_size;
  int32_t ids[ROWS * LEN], tg[ROWS * LEN];
  for (int i = 0; i < ROWS * LEN; i++) {
    ids[i] = (int32_t)(mix(seed + 2 * (uint64_t)i) % (uint64_t)V);
    tg[i] = (int32_t)(mix(seed + 2 * (uint64_t)i + 1) % (uint64_t)V);
  }
  int len[ROWS] = {LEN, LEN - 3};
  double nll[ROWS * LEN];
  pg_err err;
  for (int grad = 0; grad < 2; grad++) {
    pg_tape *tp = NULL;
    if (!ran(pg_tape_create(&tp, e, grad), &err)) return;
    pg_batch b = {.B = ROWS, .T = LEN, .ids = ids, .targets = tg, .len = len};
    if (grad) {
      if (!ran(pg_model_enable_grads(m, &err), &err)) {
        pg_tape_free(tp);
        return;
      }
      pg_model_zero_grads(m);
    }
    int rc = pg_model_forward(m, tp, &b, NULL, nll, NULL, &err);
    if (ran(rc, &err)) {
      for (int i = 0; i < ROWS * LEN; i++)
        if (!isfinite(nll[i]) || nll[i] < 0 || (i >= LEN + len[1] && nll[i] != 0)) abort();
      if (grad && ran(pg_model_backward(m, tp, &err), &err)) {
        for (size_t k = 0; k < pg_model_tensor_count(m); k++) {
          const pg_real *g = pg_model_grad(m, k);
          const size_t n = (size_t)pg_arch_tensor_numel(pg_model_tensor(m, k));
          for (size_t j = 0; g && j < n; j++)
            if (!isfinite(g[j])) abort();
        }
      }
    }
    pg_tape_free(tp);
  }
}

/* A tiny run of protocol kind over a short stream of BOS-started documents; variant: the
 * sliding or plain variant (spec/eval.md §3.1, §3.2), 0 for the standard one. */
static void protocol(pg_model *m, pg_engine *e, int kind, uint64_t seed, int variant) {
  const pg_arch *a = pg_model_arch(m);
  const uint32_t V = (uint32_t)a->vocab_size;
  pg_spm_tables tab = {.size = V, .vocab = V};
  int16_t base[MAX_VOCAB];
  uint8_t lead[MAX_VOCAB], boundary[MAX_VOCAB];
  for (uint32_t i = 0; i < V; i++) {
    base[i] = (int16_t)(1 + i % 3);
    lead[i] = i % 2;
    boundary[i] = i == (uint32_t)a->bos_id;
  }
  tab.base = base, tab.lead = lead, tab.boundary = boundary;
  int32_t tok[NVAL];
  for (int i = 0; i < NVAL; i++)
    tok[i] = i % 9 == 0 ? a->bos_id : (int32_t)(mix(seed + 7 * (uint64_t)i) % V);
  pg_val val = {.tok = tok, .n = NVAL, .tables = &tab};
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 8;
  p.stride = 4;
  p.batch = 3;
  p.report_tokens = 8;
  p.chunk_tokens = 16;
  p.epochs = 1;
  p.batch_rows = 2;
  int refuse = 0; /* packed needs the arch's document mask at L */
  if (kind == PG_PROTO_SLIDING) p.sliding_variant = variant;
  if (kind == PG_PROTO_PLAIN && variant) {
    p.plain_variant = variant;
    p.pack_windows = 1 + (int)(seed % 2);
    p.pack_ranks = p.pack_windows == 2 ? 1 : 1 + (int)((seed >> 1) % 2);
    refuse = !a->attention.doc_mask || a->attention.doc_max_len != p.seq_len;
  }
  pg_err err;
  if (pg_protocol_validate(&p, &err) != PG_OK) abort();
  pg_eval_result r;
  memset(&r, 0, sizeof r);
  const int rc = pg_eval_run(m, e, &val, &p, NULL, &r, &err);
  if (refuse && rc == PG_E_ARG) {
    check_line(&err, rc);
  } else if (ran(rc, &err)) {
    if (r.scored + r.unscored != r.targets + r.duplicates || r.targets + 1 != r.tokens) abort();
    if (variant ? r.duplicates != 0 : r.unscored != 0) abort();
    if (!isfinite(r.val_loss) || r.val_loss < 0 || !isfinite(r.val_bpb)) abort();
  }
  pg_eval_result_free(&r);
}

/* Arch JSON from bytes (an input not starting with '{'): the sizes and the main options drawn
 * from the bytes, so that mutations reach every size up to the caps (a mutated JSON number rarely
 * does). Invalid combinations are left to the parser to refuse. */
static size_t arch_from_bytes(const uint8_t *d, size_t n, char *out, size_t cap) {
  uint8_t b[24] = {0};
  memcpy(b, d, n < sizeof b ? n : sizeof b);
  const int heads = 1 + b[1] % 4, kv = b[2] % 2 && heads % 2 == 0 ? heads / 2 : heads;
  const int hd = 1 + (b[3] | (b[4] << 8)) % MAX_WIDTH / heads, dim = 1 + b[5] % 64;
  const int layers = 1 + b[6] % 4, rope = 2 * (b[7] % (hd / 2 + 1));
  static const char *const gate[] = {"none", "2sigma_first12", "dense_sigmoid", "sparse_sigmoid"};
  static const char *const smear[] = {"none", "v1", "v2"};
  static const char *const par[] = {"none", "gptj", "two_lane"};
  static const char *const skips[] = {"none", "plain", "gated"};
  int k = snprintf(out, cap,
      "{\"vocab_size\": %d, \"dim\": %d, \"heads\": %d, \"kv_heads\": %d, \"head_dim\": %d, "
      "\"layers\": %d, \"bos_id\": 1, \"block\": {\"ln_scale\": \"%s\", \"resid_mix\": %s}, "
      "\"attention\": {\"qk_norm\": %s, \"rope_dims\": %d, \"xsa_layers\": [%s], "
      "\"gate\": \"%s\", \"gate_window\": %d, \"doc_mask\": %s}, "
      "\"mlp\": {\"hidden\": %d, \"act\": \"%s\"}, "
      "\"embeddings\": {\"bigram_buckets\": %d, \"bigram_dim\": %d, \"smear\": \"%s\", "
      "\"smear_window\": %d, \"ve_layers\": [%s], \"ve_dim\": %d}, "
      "\"structure\": {\"skips\": \"%s\", \"parallel\": \"%s\", \"parallel_start\": %d}, "
      "\"head\": {\"tied\": %s, \"softcap\": %d}}",
      2 + b[0] % 60, dim, heads, kv, hd, layers,
      b[8] % 3 == 0 ? "none" : b[8] % 3 == 1 ? "physical" : "virtual", b[9] & 1 ? "true" : "false",
      b[9] & 2 ? "true" : "false", rope, b[10] & 1 ? "0" : "", gate[b[11] % 4],
      1 + b[12] % dim, b[9] & 4 ? "true" : "false", 1 + b[13] % 64,
      b[9] & 8 ? "leaky_relu2" : "relu2", b[14] % 3 ? 0 : 2 + b[15] % 30, 1 + b[16] % 64,
      smear[b[17] % 3], 1 + b[18] % dim, b[10] & 2 ? "0" : "", 1 + b[19] % 32,
      skips[b[20] % 3], par[b[21] % 3], b[22] % layers, b[9] & 16 ? "true" : "false",
      b[23] % 4 ? 0 : 1 + b[23] % 50);
  return k > 0 && (size_t)k < cap ? (size_t)k : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static pg_arch a;
  static char text[2048];
  pg_err err;
  const char *json = (const char *)data;
  if (size == 0 || data[0] != '{') {
    size = arch_from_bytes(data, size, text, sizeof text);
    json = text;
  }
  if (pg_arch_parse(&a, json, size, "arch.json", &err) != PG_OK) return 0;
  if (!small(&a)) return 0;
  pg_model *m = NULL;
  if (!ran(pg_model_create(&m, &a, &err), &err)) return 0;
  const uint64_t seed = mix(size);
  pg_model_init_random(m, seed, 0.1);
  pg_engine e = pg_engine_cpu(1);
  forward_backward(m, &e, seed);
  protocol(m, &e, PG_PROTO_PLAIN, seed, 0);
  protocol(m, &e, PG_PROTO_PLAIN, seed, PG_PLAIN_PACKED);
  protocol(m, &e, PG_PROTO_SLIDING, seed, 0);
  protocol(m, &e, PG_PROTO_SLIDING, seed, PG_SLIDE_LAST_S);
  protocol(m, &e, PG_PROTO_SLIDING, seed, PG_SLIDE_GAP);
  protocol(m, &e, PG_PROTO_TTT_CHUNK, seed, 0);
  pg_model_free(m);
  return 0;
}
