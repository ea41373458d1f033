/* test_systems.c: each system of spec/examples/ end to end at a reduced size. The example arch is
 * parsed from its file, shrunk to a few thousand parameters per layer with every feature kept
 * (layers, encoder/decoder lists, XSA, VE, BigramHash, SmearGate, gates, readout, parallel
 * residuals, document mask: the tensor list keeps its names), and run through that system's
 * evaluation protocol (spec/eval.md, spec/records.md §4) on a synthetic stream of BOS-started
 * documents with hand-made byte tables:
 *
 *   pr1676    chunked SGD TTT (lr 0.005, momentum 0.9, 3 epochs) over exact-partition windows
 *   r12       phased TTT (per-document LoRA + 2 global SGD phases), and the sliding window
 *   pr473     chunked SGD TTT
 *   sys11036  chunked SGD TTT with a long context; the BigramHash table trains
 *   pr456     chunked AdamW TTT, 1 epoch per chunk
 *   baseline  plain non-overlapping windows
 *
 * Every run scores each target exactly once (tokens == T), gives a finite positive val_bpb, and a
 * rerun from the same initial weights gives bit-identical sums and chunks; two systems also give
 * bit-identical results on 1 and 2 threads. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_io.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_rng.h"
#include "pgevalfx.h"

#define V 64
#define BOS 1
#define N_TOK 1537 /* T = 1536: a multiple of 16, 32, 64, 256 and 512, so nothing is trimmed */

/* ---- fixtures -------------------------------------------------------------------------------- */


/* The reduced arch: the sizes below, every feature of the example kept. */
static void shrink(pg_arch *a) {
  a->vocab_size = V;
  a->dim = 32;
  a->heads = 4;
  a->kv_heads = 2;
  a->head_dim = 8;
  a->mlp.hidden = 64;
  int rd = a->attention.rope_dims;
  if (rd) {
    rd = rd < 4 ? rd : 4;
    rd &= ~1;
    a->attention.rope_dims = rd ? rd : 2;
  }
  if (a->attention.rope_ntk_len) a->attention.rope_ntk_len = 16;
  if (a->attention.doc_max_len) a->attention.doc_max_len = 24;
  if (a->embeddings.bigram_buckets) a->embeddings.bigram_buckets = 97;
  a->embeddings.bigram_dim = a->embeddings.bigram_proj ? 16 : a->dim;
  a->embeddings.ve_dim = 8;
  if (a->attention.gate_window > a->dim) a->attention.gate_window = a->dim;
  if (a->embeddings.smear_window > a->dim) a->embeddings.smear_window = a->dim;
  int G = a->structure.readout_groups;
  cr_assert(G == 0 || (G <= a->dim && a->dim % G == 0), "readout_groups %d does not divide %d", G,
            a->dim);
}

/* Read spec/examples/NAME.json, parse it, shrink it, re-validate it, and check that the features
 * are the example's: only the size options changed, and the tensors have the same names. */
static pg_arch load_system(const char *name) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set (run through meson test)");
  char path[1024];
  snprintf(path, sizeof path, "%s/spec/examples/%s.json", root, name);
  uint8_t *buf;
  size_t len;
  pg_err err;
  cr_assert_eq(pg_file_read_all(path, &buf, &len, PG_ARCH_JSON_MAX, &err), PG_OK, "%s", err.msg);
  pg_arch full, a;
  cr_assert_eq(pg_arch_parse(&full, (const char *)buf, len, path, &err), PG_OK, "%s", err.msg);
  free(buf);
  a = full;
  shrink(&a);
  cr_assert_eq(pg_arch_validate(&a, path, &err), PG_OK, "%s (reduced): %s", name, err.msg);
  /* putting the sizes back gives the example: nothing else changed */
  pg_arch back = a;
  back.vocab_size = full.vocab_size;
  back.dim = full.dim;
  back.heads = full.heads;
  back.kv_heads = full.kv_heads;
  back.head_dim = full.head_dim;
  back.mlp.hidden = full.mlp.hidden;
  back.attention.rope_dims = full.attention.rope_dims;
  back.attention.rope_ntk_len = full.attention.rope_ntk_len;
  back.attention.doc_max_len = full.attention.doc_max_len;
  back.attention.gate_window = full.attention.gate_window;
  back.embeddings.bigram_buckets = full.embeddings.bigram_buckets;
  back.embeddings.bigram_dim = full.embeddings.bigram_dim;
  back.embeddings.ve_dim = full.embeddings.ve_dim;
  back.embeddings.smear_window = full.embeddings.smear_window;
  cr_assert(pg_arch_equal(&back, &full), "%s: shrinking changed a feature", name);
  cr_assert_eq(!!a.attention.rope_dims, !!full.attention.rope_dims);
  pg_arch_tensor *tf, *ta;
  size_t nf, na;
  cr_assert_eq(pg_arch_tensors(&full, &tf, &nf, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_arch_tensors(&a, &ta, &na, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(na, nf, "%s: %zu tensors reduced, %zu in the example", name, na, nf);
  for (size_t i = 0; i < na; i++) {
    cr_assert_str_eq(ta[i].name, tf[i].name);
    cr_assert_eq(ta[i].ndim, tf[i].ndim, "%s", ta[i].name);
  }
  free(tf);
  free(ta);
  return a;
}

static pg_model *make_model(const pg_arch *a) {
  pg_model *m;
  pg_err err;
  cr_assert_eq(pg_model_create(&m, a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, 20240520, 0.5);
  return m;
}

typedef struct sys {
  const char *name;
  pg_arch arch;
  pg_spm_tables t;
  pg_val val;
  pg_model *m0; /* the initial weights */
  pg_model *m;  /* the weights a run changes */
  pg_engine e1, e2;
} sys;

static void sys_init(sys *s, const char *name, uint64_t n) {
  memset(s, 0, sizeof *s);
  s->name = name;
  s->arch = load_system(name);
  s->t = pgfx_tables(V);
  s->val = (pg_val){.tok = pgfx_stream(n, V, 77), .n = n, .tables = &s->t};
  s->m0 = make_model(&s->arch);
  s->m = make_model(&s->arch);
  s->e1 = pg_engine_cpu(1);
  s->e2 = pg_engine_cpu(2);
}

static void sys_free(sys *s) {
  free((int32_t *)s->val.tok); /* made by pgfx_stream: the test's own */
  pgfx_tables_free(&s->t);
  pg_model_free(s->m0);
  pg_model_free(s->m);
}

/* The protocol of kind at the reduced size (windows of 64, stride 16, chunks of 256). */
static pg_protocol proto(int kind) {
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 64;
  p.stride = 16;
  p.batch = 4;
  p.report_tokens = 256;
  p.chunk_tokens = 256;
  p.batch_rows = 4;
  return p;
}

/* Run p on a fresh copy of the initial weights with engine e, and check what every run must give.
 */
static void run_fresh(sys *s, pg_engine *e, const pg_protocol *p, const pg_eval_hooks *h,
                      pg_eval_result *res) {
  pg_err err;
  cr_assert_eq(pg_model_copy_params(s->m, s->m0, &err), PG_OK, "%s", err.msg);
  int rc = pg_eval_run(s->m, e, &s->val, p, h, res, &err);
  cr_assert_eq(rc, PG_OK, "%s %s: %s", s->name, pg_proto_name(p->kind), err.msg);
  cr_assert_eq(res->targets, s->val.n - 1, "%s: the stream was trimmed", s->name);
  cr_assert_eq(res->scored, res->targets, "%s: %llu scored of T = %llu", s->name,
               (unsigned long long)res->scored, (unsigned long long)res->targets);
  cr_assert_eq(res->duplicates, 0, "%s", s->name);
  cr_assert_eq(res->sum.tokens, (double)res->targets, "%s: tokens == T", s->name);
  cr_assert(isfinite(res->val_bpb) && res->val_bpb > 0, "%s: val_bpb %g", s->name, res->val_bpb);
  cr_assert(isfinite(res->val_loss) && res->val_loss > 0, "%s: val_loss %g", s->name,
            res->val_loss);
  cr_assert_gt(res->nchunks, 1);
  uint64_t cnt = 0, steps = 0;
  for (size_t i = 0; i < res->nchunks; i++) {
    cnt += res->chunks[i].count;
    steps += res->chunks[i].train_steps;
  }
  cr_assert_eq(cnt, res->targets, "%s: the chunks add up to T", s->name);
  if (p->kind == PG_PROTO_PLAIN || p->kind == PG_PROTO_SLIDING) {
    cr_assert_eq(res->train_steps, 0);
    cr_assert_eq(steps, 0);
  } else {
    cr_assert_gt(res->train_steps, 0, "%s: TTT made no update", s->name);
  }
  if (p->kind == PG_PROTO_TTT_CHUNK) {
    uint64_t C = p->chunk_tokens;
    cr_assert_eq(res->nchunks, (res->targets + C - 1) / C);
    cr_assert_eq(res->chunks[res->nchunks - 1].train_steps, 0,
                 "%s: the last chunk is never trained on", s->name);
    cr_assert_gt(res->chunks[0].train_steps, 0);
    cr_assert_eq(steps, res->train_steps);
  }
}

static void same_result(const char *what, const pg_eval_result *a, const pg_eval_result *b) {
  cr_assert_eq(memcmp(&a->sum, &b->sum, sizeof a->sum), 0,
               "%s: sums differ: %.17g/%.17g vs %.17g/%.17g", what, a->sum.nats, a->sum.bytes,
               b->sum.nats, b->sum.bytes);
  cr_assert_eq(memcmp(&a->val_bpb, &b->val_bpb, sizeof a->val_bpb), 0, "%s", what);
  cr_assert_eq(a->nchunks, b->nchunks, "%s", what);
  for (size_t i = 0; i < a->nchunks; i++)
    cr_assert_eq(memcmp(&a->chunks[i], &b->chunks[i], sizeof a->chunks[i]), 0, "%s: chunk %zu",
                 what, i);
  cr_assert_eq(a->train_steps, b->train_steps, "%s", what);
  cr_assert_eq(a->windows, b->windows, "%s", what);
  cr_assert_eq(a->documents, b->documents, "%s", what);
}

/* Run p twice from the same initial weights (bit-identical), and, when threads, once more on 2
 * threads (bit-identical to 1). The first result stays in *res; the model holds the weights of
 * the last run. */
static void run_checked(sys *s, const pg_protocol *p, const pg_eval_hooks *h, int threads,
                        pg_eval_result *res) {
  char what[96];
  pg_eval_result again;
  run_fresh(s, &s->e1, p, h, res);
  run_fresh(s, &s->e1, p, h, &again);
  snprintf(what, sizeof what, "%s %s rerun", s->name, pg_proto_name(p->kind));
  same_result(what, res, &again);
  pg_eval_result_free(&again);
  if (threads) {
    run_fresh(s, &s->e2, p, h, &again);
    snprintf(what, sizeof what, "%s %s on 2 threads", s->name, pg_proto_name(p->kind));
    same_result(what, res, &again);
    pg_eval_result_free(&again);
  }
}

static int tensor_changed(sys *s, const char *name) {
  long i = pg_model_find(s->m, name);
  cr_assert_geq(i, 0, "%s has no %s", s->name, name);
  size_t n = (size_t)pg_arch_tensor_numel(pg_model_tensor(s->m, (size_t)i));
  return memcmp(pg_model_data(s->m, (size_t)i), pg_model_data(s->m0, (size_t)i),
                n * sizeof(pg_real)) != 0;
}

static int params_changed(sys *s) {
  return memcmp(pg_model_params(s->m), pg_model_params(s->m0),
                pg_model_param_count(s->m) * sizeof(pg_real)) != 0;
}

/* ---- the systems ----------------------------------------------------------------------------- */

/* PR #1676: trajectory readout on R9; full-model SGD TTT (lr 0.005, momentum 0.9, 3 epochs) over
 * the exact-partition sliding windows (spec/records.md §2.13, §4.3). */
Test(systems, pr1676_chunked_sgd_ttt) {
  sys s;
  sys_init(&s, "pr1676", N_TOK);
  cr_assert_eq(s.arch.structure.readout_groups, 16);
  cr_assert_eq(s.arch.structure.parallel, PG_ARCH_PAR_GPTJ);
  pg_protocol p = proto(PG_PROTO_TTT_CHUNK);
  p.opt = PG_OPTIM_SGD;
  p.lr = 0.005;
  p.momentum = 0.9;
  p.epochs = 3;
  pg_eval_result r;
  run_checked(&s, &p, NULL, 0, &r);
  cr_assert_eq(r.nchunks, 6);
  cr_assert(params_changed(&s));
  cr_assert(tensor_changed(&s, "readout_delta"), "the readout takes part in TTT");
  pg_eval_result_free(&r);
  sys_free(&s);
}

/* Counts the distinct states of the base weights seen at the commits of a phased run: the base is
 * frozen under LoRA, so it changes between two commits only through a global SGD phase. */
typedef struct phase_watch {
  pg_model *m;
  pg_real *last;
  size_t n;
  int states;
} phase_watch;

static int watch_commit(void *ctx, size_t chunk, const pg_eval_chunk *c) {
  phase_watch *w = ctx;
  (void)c;
  const pg_real *p = pg_model_params(w->m);
  if (chunk == 0 || memcmp(p, w->last, w->n * sizeof *p) != 0) w->states++;
  memcpy(w->last, p, w->n * sizeof *p);
  return 0;
}

/* R12 (2026-04-27, PR #1855): phased TTT, per-document LoRA plus global SGD phases on the already
 * scored documents (eval §4.3); and the exact-partition sliding window with context L − s. */
Test(systems, r12_phased_ttt_and_sliding) {
  sys s;
  sys_init(&s, "r12", N_TOK);
  cr_assert(s.arch.attention.doc_mask && s.arch.attention.doc_max_len == 24);
  cr_assert_eq(s.arch.structure.parallel, PG_ARCH_PAR_TWO_LANE);
  cr_assert_eq(s.arch.embeddings.smear, PG_ARCH_SMEAR_V2);
  cr_assert_eq(s.arch.attention.gate, PG_ARCH_GATE_SPARSE_SIGMOID);
  pg_protocol p = proto(PG_PROTO_TTT_PHASED);
  p.seq_len = 32;      /* global SGD rows */
  p.chunk_tokens = 64; /* global SGD chunks */
  p.batch_rows = 2;
  p.lr = 0.001;
  p.momentum = 0.9;
  p.epochs = 1;
  p.lora_rank = 2;
  p.lora_alpha = 4;
  p.lora_chunk = 8;
  p.lora_window = 32;
  p.lora_batch_docs = 4;
  p.lora_lr = 0.01;
  p.prefix_docs = 12;
  p.phases = 2; /* boundaries 6 and 12 documents: after the 2nd and the 3rd batch */
  phase_watch w = {.m = s.m, .n = pg_model_param_count(s.m)};
  w.last = malloc(w.n * sizeof *w.last);
  pg_eval_hooks h = {.on_commit = watch_commit, .ctx = &w};
  pg_eval_result r;
  run_fresh(&s, &s.e1, &p, &h, &r);
  cr_assert_gt(r.documents, 12);
  uint64_t docs = 0, lora_steps = 0;
  for (size_t i = 0; i < r.nchunks; i++) {
    docs += r.chunks[i].docs;
    lora_steps += r.chunks[i].train_steps;
  }
  cr_assert_eq(docs, r.documents);
  cr_assert_eq(r.nchunks, (r.documents + 3) / 4);
  cr_assert_gt(lora_steps, 0, "no LoRA step");
  cr_assert_geq(r.train_steps - lora_steps, 2, "global SGD made %llu steps",
                (unsigned long long)(r.train_steps - lora_steps));
  cr_assert_eq(w.states, 3, "the base weights took %d states at the commits (want: initial, after "
               "phase 1, after phase 2)", w.states);
  cr_assert(params_changed(&s));
  pg_eval_result_free(&r);
  /* reruns and 2 threads */
  w.states = 0;
  run_checked(&s, &p, &h, 1, &r);
  pg_eval_result_free(&r);

  /* the sliding window: stride 16, context 48, every target once */
  pg_protocol q = proto(PG_PROTO_SLIDING);
  cr_assert_eq(q.tail_dup, 0);
  run_checked(&s, &q, NULL, 0, &r);
  pg_window *win;
  size_t nw;
  pg_err err;
  cr_assert_eq(pg_sliding_windows(r.targets, q.seq_len, q.stride, 0, &win, &nw, &err), PG_OK);
  cr_assert_eq(r.windows, nw);
  cr_assert_eq(nw, (r.targets - (uint64_t)(q.seq_len - q.stride) + q.stride - 1) / q.stride);
  for (size_t k = 1; k < nw; k++) cr_assert_eq(win[k].lo, (uint32_t)(q.seq_len - q.stride));
  free(win);
  cr_assert_eq(r.nchunks, r.targets / q.report_tokens);
  cr_assert(!params_changed(&s), "the sliding window changes no weight");
  pg_eval_result_free(&r);
  free(w.last);
  sys_free(&s);
}

/* PR #473: XSA, SmearGate v1, BigramHash, VE; chunked SGD TTT (eval §4.1). */
Test(systems, pr473_chunked_sgd_ttt) {
  sys s;
  sys_init(&s, "pr473", N_TOK);
  cr_assert(s.arch.embeddings.ve_layers.n == 2 && s.arch.embeddings.bigram_buckets == 97);
  pg_protocol p = proto(PG_PROTO_TTT_CHUNK);
  p.opt = PG_OPTIM_SGD;
  p.lr = 0.002;
  p.momentum = 0.9;
  p.epochs = 3;
  pg_eval_result r;
  run_checked(&s, &p, NULL, 1, &r);
  cr_assert(params_changed(&s));
  cr_assert(tensor_changed(&s, "ve_shared.embed.weight"));
  pg_eval_result_free(&r);
  sys_free(&s);
}

/* System 11036: 12 layers looped to 16, XSA everywhere, BigramHash without projection; chunked
 * SGD TTT with a long eval context (256, four times the others'), the BigramHash table trained. */
Test(systems, sys11036_long_context_ttt_trains_bigram) {
  sys s;
  sys_init(&s, "sys11036", 2 * N_TOK - 1); /* T = 3072 */
  cr_assert_eq(s.arch.embeddings.bigram_proj, 0);
  cr_assert_eq(s.arch.embeddings.bigram_dim, s.arch.dim);
  pg_protocol p = proto(PG_PROTO_TTT_CHUNK);
  p.seq_len = 256;
  p.stride = 64;
  p.chunk_tokens = 512;
  p.batch_rows = 2;
  p.opt = PG_OPTIM_SGD;
  p.lr = 0.005;
  p.momentum = 0.9;
  p.epochs = 2;
  pg_eval_result r;
  run_checked(&s, &p, NULL, 0, &r);
  cr_assert_eq(r.nchunks, 6);
  cr_assert_eq(r.windows, (r.targets - 192 + 63) / 64);
  cr_assert(tensor_changed(&s, "bigram.embed.weight"), "the BigramHash table did not train");
  cr_assert(tensor_changed(&s, "bigram.scale"));
  pg_eval_result_free(&r);
  sys_free(&s);
}

/* PR #456: BigramHash, SmearGate v1, XSA on the last 3; chunked TTT with AdamW (betas 0.9/0.999,
 * eps 1e-8), 1 epoch per chunk. */
Test(systems, pr456_chunked_adamw_ttt) {
  sys s;
  sys_init(&s, "pr456", N_TOK);
  pg_protocol p = proto(PG_PROTO_TTT_CHUNK);
  p.opt = PG_OPTIM_ADAMW;
  p.lr = 0.001;
  p.beta1 = 0.9;
  p.beta2 = 0.999;
  p.eps = 1e-8;
  p.weight_decay = 0;
  p.epochs = 1;
  pg_eval_result r;
  run_checked(&s, &p, NULL, 0, &r);
  /* one epoch: each trained chunk of 256 gives 4 rows of 64, one step of batch_rows 4 */
  for (size_t i = 0; i + 1 < r.nchunks; i++)
    cr_assert_eq(r.chunks[i].train_steps, 1, "chunk %zu", i);
  cr_assert(params_changed(&s));
  cr_assert(tensor_changed(&s, "smear.gate"));
  pg_eval_result_free(&r);
  sys_free(&s);
}

/* The naive baseline (R1): plain non-overlapping windows. */
Test(systems, baseline_plain) {
  sys s;
  sys_init(&s, "baseline", N_TOK);
  pg_protocol p = proto(PG_PROTO_PLAIN);
  pg_eval_result r;
  run_checked(&s, &p, NULL, 0, &r);
  cr_assert_eq(r.windows, r.targets / (uint64_t)p.seq_len);
  cr_assert(!params_changed(&s));
  pg_eval_result_free(&r);
  sys_free(&s);
}
