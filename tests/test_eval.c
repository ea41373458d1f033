/* test_eval.c: the evaluation protocols on tiny models and synthetic streams: window partitions,
 * every target scored exactly once (tokens == T), sums equal to a direct computation, results
 * independent of batching and threads, bit-identical reruns, the tail variant's duplicates, and
 * score-before-update: altering a chunk's tokens once its score is committed leaves that score
 * unchanged, altering future tokens leaves all earlier scores unchanged, and an update placed
 * before its chunk's commit is stopped by the ledger. Also the optimizers against their formulas.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_eval.h"
#include "pg_eval_testing.h"
#include "pg_ledger.h"
#include "pg_model_testing.h"
#include "pg_optim.h"
#include "pg_rng.h"
#include "pg_sched.h"
#include "pgevalfx.h"
#include "pgremote.h"

#define V 37
#define BOS 1

/* ---- fixtures -------------------------------------------------------------------------------- */


static const char *ARCH = "{\"vocab_size\": 37, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, "
                          "\"head_dim\": 4, \"layers\": 2, \"mlp\": {\"hidden\": 24}}";

static pg_model *model(const char *json, uint64_t seed) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "test", &err), PG_OK, "%s", err.msg);
  pg_model *m;
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, seed, 0.5);
  return m;
}

typedef struct fixture {
  pg_spm_tables t;
  int32_t *tok; /* the stream, writable by the tests; val.tok points to it */
  pg_val val;
  pg_model *m;
  pg_engine e;
} fixture;

static void fx_init(fixture *f, uint64_t n, const char *json, int threads) {
  f->t = pgfx_tables(V);
  f->tok = pgfx_stream(n, V, 5);
  f->val = (pg_val){.tok = f->tok, .n = n, .tables = &f->t};
  f->m = model(json, 9);
  f->e = pg_engine_cpu(threads);
}

static void fx_free(fixture *f) {
  free(f->tok);
  pgfx_tables_free(&f->t);
  pg_model_free(f->m);
}

static void run_ok(fixture *f, const pg_protocol *p, const pg_eval_test_hooks *h,
                   pg_eval_result *res) {
  pg_err err;
  int rc = pg_eval_run_hooked(f->m, &f->e, &f->val, p, NULL, h, res, &err);
  cr_assert_eq(rc, PG_OK, "eval: %s", err.msg);
  cr_assert_eq(res->scored - res->duplicates, res->targets, "every target scored once");
  cr_assert_eq((uint64_t)res->sum.tokens, res->scored);
  cr_assert(isfinite(res->val_bpb) && res->val_bpb > 0);
}

static void same_result(const pg_eval_result *a, const pg_eval_result *b) {
  cr_assert_eq(memcmp(&a->sum, &b->sum, sizeof a->sum), 0,
               "sums differ: %.17g/%.17g vs %.17g/%.17g", a->sum.nats, a->sum.bytes, b->sum.nats,
               b->sum.bytes);
  cr_assert_eq(a->nchunks, b->nchunks);
  for (size_t i = 0; i < a->nchunks; i++)
    cr_assert_eq(memcmp(&a->chunks[i], &b->chunks[i], sizeof a->chunks[i]), 0, "chunk %zu", i);
}

static pg_protocol proto(int kind) {
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 32;
  p.stride = 8;
  p.report_tokens = 64;
  p.chunk_tokens = 64;
  p.batch = 3;
  p.batch_rows = 2;
  p.epochs = 2;
  p.lr = 0.05;
  p.lora_rank = 2;
  p.lora_alpha = 4;
  p.lora_chunk = 5;
  p.lora_window = 12;
  p.lora_batch_docs = 4;
  p.lora_lr = 0.01;
  p.prefix_docs = 9;
  p.phases = 2;
  return p;
}

/* ---- windows --------------------------------------------------------------------------------- */

Test(eval, sliding_windows_partition_and_tail_variant) {
  pg_err err;
  uint64_t Ts[] = {1, 7, 31, 32, 33, 64, 65, 200, 257};
  int Ls[] = {1, 8, 32}, Ss[] = {1, 4, 8};
  for (size_t a = 0; a < sizeof Ts / sizeof *Ts; a++)
    for (size_t b = 0; b < 3; b++)
      for (size_t c = 0; c < 3; c++) {
        uint64_t T = Ts[a];
        int L = Ls[b], s = Ss[c];
        if (s > L) continue;
        for (int dup = 0; dup < 2; dup++) {
          pg_window *w;
          size_t n;
          cr_assert_eq(pg_sliding_windows(T, L, s, dup, &w, &n, &err), PG_OK);
          if (!dup && T <= (uint64_t)(L - s)) { /* no window has context: none at all */
            cr_assert_eq(n, 0);
            free(w);
            continue;
          }
          int *cnt = calloc(T, sizeof *cnt);
          for (size_t k = 0; k < n; k++) {
            cr_assert(w[k].ws + w[k].wlen <= T && w[k].lo < w[k].wlen && w[k].wlen <= (uint32_t)L);
            for (uint32_t j = w[k].lo; j < w[k].wlen; j++) cnt[w[k].ws + j]++;
          }
          uint64_t extra = 0;
          for (uint64_t t = 0; t < T; t++) {
            cr_assert(cnt[t] >= 1, "T %lu L %d s %d dup %d: target %lu unscored", (unsigned long)T,
                      L, s, dup, (unsigned long)t);
            if (!dup) cr_assert_eq(cnt[t], 1, "variant B scores each target once");
            extra += cnt[t] > 1 ? (uint64_t)cnt[t] - 1 : 0;
          }
          /* variant A with T % s == 0 and T ≥ L duplicates exactly L − s targets */
          if (dup && T % (uint64_t)s == 0 && T >= (uint64_t)L)
            cr_assert_eq(extra, (uint64_t)(L - s), "T %lu L %d s %d: %lu duplicates",
                         (unsigned long)T, L, s, (unsigned long)extra);
          free(cnt);
          free(w);
        }
      }
}

/* ---- plain and sliding ----------------------------------------------------------------------- */

/* Plain windows: the sums equal a direct forward of each sequence, in order. */
Test(eval, plain_equals_direct_forward) {
  fixture f;
  fx_init(&f, 32 * 5 + 9, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_PLAIN);
  pg_eval_result res;
  run_ok(&f, &p, NULL, &res);
  cr_assert_eq(res.tokens, 32 * 5 + 1, "trimmed to ((n-1)/L)*L + 1");
  cr_assert_eq(res.targets, 160);
  pg_tape *tp;
  pg_tape_create(&tp, &f.e, 0);
  pg_bpb want;
  pg_bpb_init(&want);
  double nll[32];
  pg_err err;
  for (int s = 0; s < 5; s++) {
    pg_batch b = {.B = 1, .T = 32, .ids = f.val.tok + s * 32, .targets = f.val.tok + s * 32 + 1};
    cr_assert_eq(pg_model_forward(f.m, tp, &b, NULL, nll, NULL, &err), PG_OK);
    for (int j = 0; j < 32; j++) {
      uint32_t by = pg_spm_pair_bytes_unchecked(&f.t, (uint32_t)f.val.tok[s * 32 + j],
                                                (uint32_t)f.val.tok[s * 32 + j + 1]);
      pg_bpb_add(&want, nll[j], by, &err);
    }
  }
  cr_assert_eq(memcmp(&want, &res.sum, sizeof want), 0);
  double vl, vb;
  pg_bpb_result(&want, &vl, &vb, &err);
  cr_assert_eq(vb, res.val_bpb);
  pg_tape_free(tp);
  pg_eval_result_free(&res);
  fx_free(&f);
}

/* Untrimmed, plain would leave the targets past its last whole window unscored: refused before
 * scoring with PG_E_ARG (it used to score everything else, then stop with PG_E_ILLEGAL). */
Test(eval, plain_untrimmed_partial_window_refused_before_scoring) {
  fixture f;
  fx_init(&f, 32 * 5 + 9, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_PLAIN);
  p.trim = 0;
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_ARG, "%s", err.msg);
  cr_assert(strstr(err.msg, "168 targets leave 8 unscored"), "%s", err.msg);
  cr_assert_eq(res.scored, 0, "nothing was scored");
  f.val.n = 32 * 5 + 1; /* a whole number of windows needs no trimming */
  run_ok(&f, &p, NULL, &res);
  cr_assert_eq(res.targets, 160);
  pg_eval_result_free(&res);
  fx_free(&f);
}

/* A run never commits more chunks than its receipt's reader takes (PG_EVAL_MAX_CHUNKS): 65,568
 * targets in chunks of 1 are refused before anything is scored; in chunks of 2 they run. */
Test(eval, more_chunks_than_a_receipt_holds_refused_before_scoring) {
  fixture f;
  fx_init(&f, 32 * 2049 + 1, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_PLAIN);
  p.report_tokens = 1;
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_LIMIT, "%s", err.msg);
  cr_assert(strstr(err.msg, "65568 chunks, more than 65536"), "%s", err.msg);
  cr_assert_eq(res.scored, 0, "nothing was scored");
  p = proto(PG_PROTO_PLAIN);
  p.report_tokens = 2;
  run_ok(&f, &p, NULL, &res);
  cr_assert_eq(res.nchunks, 32784);
  pg_eval_result_free(&res);
  fx_free(&f);
}

/* stride = L makes the sliding windows the plain ones: the same sums, bit for bit. */
Test(eval, sliding_with_full_stride_is_plain) {
  fixture f;
  fx_init(&f, 300, ARCH, 1);
  pg_protocol a = proto(PG_PROTO_PLAIN), b = proto(PG_PROTO_SLIDING);
  b.stride = b.seq_len;
  pg_eval_result ra, rb;
  run_ok(&f, &a, NULL, &ra);
  run_ok(&f, &b, NULL, &rb);
  cr_assert_eq(memcmp(&ra.sum, &rb.sum, sizeof ra.sum), 0);
  pg_eval_result_free(&ra);
  pg_eval_result_free(&rb);
  fx_free(&f);
}

/* Results depend on neither the scoring batch nor the thread count. */
Test(eval, sliding_independent_of_batch_and_threads) {
  fixture f, g;
  fx_init(&f, 400, ARCH, 1);
  fx_init(&g, 400, ARCH, 3);
  pg_protocol p = proto(PG_PROTO_SLIDING), q = p;
  q.batch = 7;
  pg_eval_result ra, rb, rc;
  run_ok(&f, &p, NULL, &ra);
  run_ok(&f, &q, NULL, &rb);
  run_ok(&g, &p, NULL, &rc);
  same_result(&ra, &rb);
  same_result(&ra, &rc);
  cr_assert_eq(ra.duplicates, 0);
  pg_eval_result_free(&ra);
  pg_eval_result_free(&rb);
  pg_eval_result_free(&rc);
  fx_free(&f);
  fx_free(&g);
}

/* Variant A scores L − s tail targets twice (T a multiple of s) and says so. */
Test(eval, sliding_tail_variant_counts_duplicates) {
  fixture f;
  fx_init(&f, 32 * 8 + 1, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_SLIDING);
  p.tail_dup = 1;
  pg_eval_result res;
  run_ok(&f, &p, NULL, &res);
  cr_assert_eq(res.targets, 256);
  cr_assert_eq(res.duplicates, (uint64_t)(p.seq_len - p.stride));
  cr_assert_eq(res.scored, 256 + 24);
  pg_eval_result_free(&res);
  fx_free(&f);
}

Test(eval, errors_are_clear) {
  fixture f;
  fx_init(&f, 20, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_SLIDING);
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "shorter than one window"), "%s", err.msg);
  free(f.tok);
  f.val.tok = f.tok = pgfx_stream(200, V, 5);
  f.val.n = 200;
  f.tok[77] = V; /* outside the vocabulary */
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_TOKEN_RANGE);
  cr_assert(strstr(err.msg, "77"), "%s", err.msg);
  f.tok[77] = 5;
  f.tok[0] = 7; /* no BOS first: no documents */
  pg_protocol l = proto(PG_PROTO_TTT_LORA);
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &l, NULL, &res, &err), PG_E_MALFORMED);
  p.stride = 0;
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_ARG);
  /* a NaN weight shows as a non-finite loss naming the target */
  p = proto(PG_PROTO_SLIDING);
  f.tok[0] = BOS;
  pg_model_data(f.m, 0)[f.val.tok[3] * 16 + 2] = NAN;
  cr_assert_eq(pg_eval_run(f.m, &f.e, &f.val, &p, NULL, &res, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "non-finite"), "%s", err.msg);
  fx_free(&f);
}

/* ---- score-first TTT ------------------------------------------------------------------------- */

typedef struct alter {
  size_t chunk; /* alter this chunk's tokens right after its commit */
  uint64_t from, to;
  int done;
} alter;

static int alter_on_commit(void *ctx, size_t chunk, const pg_eval_chunk *c, int32_t *tok,
                           uint64_t n) {
  alter *a = ctx;
  (void)c;
  if (chunk != a->chunk) return 0;
  for (uint64_t i = a->from; i < a->to && i < n; i++)
    if (tok[i] != BOS) tok[i] = 4 + (tok[i] + 11) % (V - 4);
  a->done = 1;
  return 0;
}

static void score_first(int kind, int opt) {
  fixture f;
  fx_init(&f, 64 * 6 + 1, ARCH, 1);
  pg_protocol p = proto(kind);
  if (opt) {
    p.opt = opt;
    p.lr = 0.01;
  }
  pg_model *m0 = model(ARCH, 9);
  pg_eval_result A, B, C;
  run_ok(&f, &p, NULL, &A);
  cr_assert_eq(A.nchunks, 6);
  cr_assert_eq(A.chunks[5].train_steps, 0, "the last chunk is never trained on");
  cr_assert(A.train_steps > 0 && A.chunks[0].train_steps > 0);
  /* B: chunk 2's tokens altered right after its commit (before its update) */
  pg_err err;
  pg_model_copy_params(f.m, m0, &err);
  int32_t *orig = malloc(f.val.n * sizeof *orig);
  memcpy(orig, f.val.tok, f.val.n * sizeof *orig);
  alter al = {.chunk = 2, .from = 2 * 64 + 1, .to = 3 * 64 + 1};
  pg_eval_test_hooks h = {.alter = alter_on_commit, .tok = f.tok, .ctx = &al};
  run_ok(&f, &p, &h, &B);
  cr_assert(al.done);
  for (size_t c = 0; c <= 2; c++)
    cr_assert_eq(memcmp(&A.chunks[c], &B.chunks[c], sizeof A.chunks[c]), 0,
                 "chunk %zu's committed score changed after its tokens were altered", c);
  cr_assert(memcmp(&A.chunks[3], &B.chunks[3], sizeof A.chunks[3]) != 0,
            "the alteration must reach the later chunks (else the test proves nothing)");
  /* C: tokens after chunk 3's last target altered before the run: chunks 0..3 unchanged */
  memcpy(f.tok, orig, f.val.n * sizeof *orig);
  pg_model_copy_params(f.m, m0, &err);
  for (uint64_t i = 4 * 64 + 1; i < f.val.n; i++)
    if (f.tok[i] != BOS) f.tok[i] = 4 + (f.tok[i] + 5) % (V - 4);
  run_ok(&f, &p, NULL, &C);
  for (size_t c = 0; c <= 3; c++)
    cr_assert_eq(memcmp(&A.chunks[c], &C.chunks[c], sizeof A.chunks[c]), 0,
                 "chunk %zu depends on future tokens", c);
  /* an update placed before its chunk's commit is stopped */
  memcpy(f.tok, orig, f.val.n * sizeof *orig);
  pg_model_copy_params(f.m, m0, &err);
  pg_eval_test_hooks bad = {.inject_update_before_commit = 1};
  pg_eval_result D;
  cr_assert_eq(pg_eval_run_hooked(f.m, &f.e, &f.val, &p, NULL, &bad, &D, &err), PG_E_ILLEGAL);
  cr_assert(strstr(err.msg, "before its score is committed"), "%s", err.msg);
  pg_eval_result_free(&A);
  pg_eval_result_free(&B);
  pg_eval_result_free(&C);
  free(orig);
  pg_model_free(m0);
  fx_free(&f);
}

Test(eval, chunked_sgd_score_first) { score_first(PG_PROTO_TTT_CHUNK, 0); }
Test(eval, chunked_adamw_score_first) { score_first(PG_PROTO_TTT_CHUNK, PG_OPTIM_ADAMW); }

/* Reruns from the same weights are bit-identical, and so are 1 and 2 threads. */
static void rerun_identical(int kind, const char *json) {
  fixture f, g;
  fx_init(&f, 64 * 5 + 1, json, 1);
  fx_init(&g, 64 * 5 + 1, json, 2);
  pg_protocol p = proto(kind);
  pg_model *m0 = model(json, 9);
  pg_eval_result A, B, C;
  run_ok(&f, &p, NULL, &A);
  pg_err err;
  pg_model_copy_params(f.m, m0, &err);
  run_ok(&f, &p, NULL, &B);
  run_ok(&g, &p, NULL, &C);
  same_result(&A, &B);
  same_result(&A, &C);
  cr_assert(A.train_steps > 0);
  if (kind != PG_PROTO_TTT_CHUNK) cr_assert(A.documents > 0);
  pg_eval_result_free(&A);
  pg_eval_result_free(&B);
  pg_eval_result_free(&C);
  pg_model_free(m0);
  fx_free(&f);
  fx_free(&g);
}

Test(eval, chunked_rerun_identical) { rerun_identical(PG_PROTO_TTT_CHUNK, ARCH); }
Test(eval, lora_rerun_identical) { rerun_identical(PG_PROTO_TTT_LORA, ARCH); }
Test(eval, phased_rerun_identical) {
  rerun_identical(PG_PROTO_TTT_PHASED,
                  "{\"vocab_size\": 37, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, "
                  "\"head_dim\": 4, \"layers\": 2, \"attention\": {\"doc_mask\": true}}");
}

/* Every protocol on the remote test engine (memory the host cannot read, tests/pgremote.h) gives
 * the CPU engine's bits: the protocols reach engine memory only through the engine. */
static void remote_same(int kind, const char *json) {
  fixture f;
  fx_init(&f, 64 * 5 + 1, json, 2);
  pg_protocol p = proto(kind);
  pg_model *m0 = model(json, 9);
  pg_eval_result A, B;
  run_ok(&f, &p, NULL, &A);
  pg_err err;
  pg_model_copy_params(f.m, m0, &err);
  pgremote *r = pgremote_new(2);
  cr_assert_eq(pg_eval_run(f.m, &r->outer, &f.val, &p, NULL, &B, &err), PG_OK, "%s", err.msg);
  same_result(&A, &B);
  cr_assert_eq(A.train_steps, B.train_steps);
  pg_eval_result_free(&A);
  pg_eval_result_free(&B);
  pg_model_free(m0);
  fx_free(&f);
  cr_assert_eq(r->live, 0, "every engine buffer is freed");
  pgremote_free(r);
}

#define DOCS_ARCH                                                                                \
  "{\"vocab_size\": 37, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 4, "           \
  "\"layers\": 2, \"attention\": {\"doc_mask\": true}}"
Test(eval, remote_engine_plain) { remote_same(PG_PROTO_PLAIN, ARCH); }
Test(eval, remote_engine_sliding) { remote_same(PG_PROTO_SLIDING, DOCS_ARCH); }
Test(eval, remote_engine_chunked) { remote_same(PG_PROTO_TTT_CHUNK, ARCH); }
Test(eval, remote_engine_lora) { remote_same(PG_PROTO_TTT_LORA, ARCH); }
Test(eval, remote_engine_phased) { remote_same(PG_PROTO_TTT_PHASED, DOCS_ARCH); }

/* ---- several engines (pg_eval_run_on, spec/eval.md §8.1) ------------------------------------- */

typedef struct progress_log {
  uint64_t last, calls, total;
  int backwards;
} progress_log;

static int log_progress(void *ctx, uint64_t done, uint64_t total) {
  progress_log *l = ctx;
  if (done < l->last) l->backwards = 1;
  l->last = done;
  l->total = total;
  l->calls++;
  return 0;
}

/* The run on `n` engines gives the one-engine run's bits: the sums, every chunk, the counts;
 * progress is reported in order, up to every target. */
static int one_batch = 3; /* the batch of the one-engine runs (proto's) */

/* The adaptive runs (ttt-chunk) change the model: `ttt` holds the initial weights, put back
 * before the run, and the one-engine run's final ones, which the run must end with. */
typedef struct ttt_weights {
  pg_model *m0;
  float *final;
} ttt_weights;
static const ttt_weights *cur_ttt;

static void several_same(fixture *f, const pg_protocol *p, pg_engine *const *es, int n,
                         const pg_eval_result *one) {
  pg_err err;
  pg_eval_result R;
  if (cur_ttt) cr_assert_eq(pg_model_copy_params(f->m, cur_ttt->m0, &err), PG_OK);
  progress_log lg = {0};
  pg_eval_hooks h = {.progress = log_progress, .ctx = &lg};
  int rc = pg_eval_run_on(f->m, es, n, &f->val, p, &h, &R, &err);
  cr_assert_eq(rc, PG_OK, "%d engines: %s", n, err.msg);
  same_result(one, &R);
  if (p->batch == one_batch)
    cr_assert_eq(R.forwards, one->forwards, "%d engines: the same batches", n);
  cr_assert_eq(R.windows, one->windows);
  cr_assert_eq(R.documents, one->documents);
  cr_assert_eq(R.masked, one->masked);
  cr_assert_eq(R.scored, one->scored);
  cr_assert_eq(memcmp(&R.val_bpb, &one->val_bpb, sizeof R.val_bpb), 0);
  cr_assert(!lg.backwards, "progress never goes back");
  cr_assert_eq(lg.calls, R.nchunks, "one progress report per chunk");
  cr_assert_eq(lg.last, R.targets, "progress ends at every target");
  if (cur_ttt) {
    cr_assert_eq(R.train_steps, one->train_steps);
    cr_assert_eq(memcmp(pg_model_params_read(f->m), cur_ttt->final,
                        pg_model_param_count(f->m) * sizeof(float)), 0,
                 "%d engines: the weights after the last update", n);
  }
  pg_eval_result_free(&R);
}

/* The one-engine run of an adaptive protocol, its weights before and after (cur_ttt set); only
 * ttt-lora leaves the weights as they were (its adapters are not the model's). */
static void ttt_one(fixture *f, const pg_protocol *p, pg_eval_result *one, ttt_weights *w) {
  pg_err err;
  cr_assert_eq(pg_model_create(&w->m0, pg_model_arch(f->m), &err), PG_OK);
  cr_assert_eq(pg_model_copy_params(w->m0, f->m, &err), PG_OK);
  pg_model_set_precision(w->m0, pg_model_precision(f->m));
  run_ok(f, p, NULL, one);
  cr_assert_gt(one->train_steps, 0);
  size_t np = pg_model_param_count(f->m);
  w->final = malloc(np * sizeof *w->final);
  memcpy(w->final, pg_model_params_read(f->m), np * sizeof *w->final);
  cr_assert_eq(memcmp(w->final, pg_model_params_read(w->m0), np * sizeof *w->final) == 0,
               p->kind == PG_PROTO_TTT_LORA);
  cur_ttt = w;
}

static void ttt_done(ttt_weights *w) {
  pg_model_free(w->m0);
  free(w->final);
  cur_ttt = NULL;
}

static void several_cpu(int kind, int precision) {
  fixture f;
  fx_init(&f, 777, ARCH, 1);
  pg_model_set_precision(f.m, (pg_precision)precision);
  pg_protocol p = proto(kind);
  pg_eval_result one;
  ttt_weights w = {0};
  if (kind == PG_PROTO_TTT_CHUNK)
    ttt_one(&f, &p, &one, &w);
  else
    run_ok(&f, &p, NULL, &one);
  pg_engine cpu[3] = {pg_engine_cpu(1), pg_engine_cpu(2), pg_engine_cpu(1)};
  pg_engine *es[3] = {&cpu[0], &cpu[1], &cpu[2]};
  for (int n = 1; n <= 3; n++) several_same(&f, &p, es, n, &one);
  /* batches of one window (more batches than engines in every group) and of 16 */
  p.batch = 1;
  several_same(&f, &p, es, 3, &one);
  p.batch = 16;
  several_same(&f, &p, es, 2, &one);
  ttt_done(&w);
  pg_eval_result_free(&one);
  fx_free(&f);
}

Test(eval, several_engines_plain_same_bits) { several_cpu(PG_PROTO_PLAIN, PG_PREC_FP32); }
Test(eval, several_engines_sliding_same_bits) { several_cpu(PG_PROTO_SLIDING, PG_PREC_FP32); }
Test(eval, several_engines_sliding_bf16_same_bits) {
  several_cpu(PG_PROTO_SLIDING, PG_PREC_BF16);
}
/* ttt-chunk: each chunk scored on the engines, the update on the first, the others following:
 * the figure, every chunk's receipt and the final weights are the one-engine run's bits. */
Test(eval, several_engines_chunked_same_bits) { several_cpu(PG_PROTO_TTT_CHUNK, PG_PREC_FP32); }
Test(eval, several_engines_chunked_bf16_same_bits) {
  several_cpu(PG_PROTO_TTT_CHUNK, PG_PREC_BF16);
}

/* On remote engines whose memory is per thread (as a GPU's device is): the same bits, every
 * buffer freed, and no engine's memory moved from a thread that had not entered it. */
static void several_remote(int kind, const char *json) {
  fixture f;
  fx_init(&f, 64 * 5 + 1, json, 1);
  pg_protocol p = proto(kind);
  pg_eval_result one;
  ttt_weights w = {0};
  if (kind != PG_PROTO_PLAIN && kind != PG_PROTO_SLIDING)
    ttt_one(&f, &p, &one, &w);
  else
    run_ok(&f, &p, NULL, &one);
  pgremote *r[3];
  pg_engine *es[3];
  for (int i = 0; i < 3; i++) {
    r[i] = pgremote_new(1);
    pgremote_per_thread(r[i]);
    es[i] = &r[i]->outer;
  }
  pg_engine_enter(es[0]);
  for (int n = 2; n <= 3; n++) several_same(&f, &p, es, n, &one);
  ttt_done(&w);
  pg_eval_result_free(&one);
  pg_engine_enter(es[0]);
  fx_free(&f); /* the model lives on the first engine: freed from the thread that entered it */
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(r[i]->live, 0, "engine %d: every buffer is freed", i);
    cr_assert_eq(r[i]->wrong_thread, 0, "engine %d: memory moved from a thread not on it", i);
    pgremote_free(r[i]);
  }
}

Test(eval, several_remote_engines_plain) { several_remote(PG_PROTO_PLAIN, ARCH); }
Test(eval, several_remote_engines_sliding) { several_remote(PG_PROTO_SLIDING, DOCS_ARCH); }
Test(eval, several_remote_engines_chunked) { several_remote(PG_PROTO_TTT_CHUNK, ARCH); }
Test(eval, several_remote_engines_lora) { several_remote(PG_PROTO_TTT_LORA, ARCH); }
Test(eval, several_remote_engines_phased) { several_remote(PG_PROTO_TTT_PHASED, DOCS_ARCH); }

/* Fewer windows than engines: the idle engines change nothing. */
Test(eval, several_engines_fewer_windows_than_engines) {
  fixture f;
  fx_init(&f, 2 * 32 + 1, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_PLAIN);
  p.batch = 1;
  pg_eval_result one;
  run_ok(&f, &p, NULL, &one);
  cr_assert_eq(one.windows, 2);
  pg_engine cpu[3] = {pg_engine_cpu(1), pg_engine_cpu(1), pg_engine_cpu(1)};
  pg_engine *es[3] = {&cpu[0], &cpu[1], &cpu[2]};
  several_same(&f, &p, es, 3, &one);
  pg_eval_result_free(&one);
  fx_free(&f);
}

/* ttt-lora and ttt-phased on several engines: each batch's documents split across the engines
 * by adapter row (row j on engine j mod n), scored and committed in batch order on the calling
 * thread, the phases' global update on the first engine: the figure, every batch's receipt, the
 * counts and the final weights are the one-engine run's bits, for any n and any batch size (the
 * first batch, the partial one, leaves engines without a document: their rows still take the
 * batch's steps, which a warm A carries into the next batch). */
static void several_docs(int kind, const char *json, int precision) {
  fixture f;
  fx_init(&f, 777, json, 1);
  pg_model_set_precision(f.m, (pg_precision)precision);
  uint64_t nd = 0;
  for (uint64_t i = 0; i < f.val.n; i++) nd += f.tok[i] == BOS;
  /* 4 documents a batch (the proto's), and a size whose first batch has one or two */
  int sizes[2] = {4, 0};
  for (int b = 5; b < 13 && !sizes[1]; b++)
    if (nd % (uint64_t)b == 1 || nd % (uint64_t)b == 2) sizes[1] = b;
  cr_assert(sizes[1], "a batch size with a short first batch (%llu documents)",
            (unsigned long long)nd);
  pg_engine cpu[3] = {pg_engine_cpu(1), pg_engine_cpu(2), pg_engine_cpu(1)};
  pg_engine *es[3] = {&cpu[0], &cpu[1], &cpu[2]};
  for (int s = 0; s < 2; s++) {
    pg_protocol p = proto(kind);
    p.lora_batch_docs = sizes[s];
    pg_eval_result one;
    ttt_weights w = {0};
    ttt_one(&f, &p, &one, &w);
    cr_assert_eq(one.documents, nd);
    cr_assert(p.lora_warm_a, "the rows' A carries over between batches");
    if (kind == PG_PROTO_TTT_PHASED) cr_assert_gt(one.masked, 0);
    for (int n = 1; n <= 3; n++) several_same(&f, &p, es, n, &one);
    ttt_done(&w);
    pg_eval_result_free(&one);
  }
  /* a fresh A at every batch; more engines than rows (the third owns none) */
  for (int s = 0; s < 2; s++) {
    pg_protocol p = proto(kind);
    p.lora_warm_a = s;
    p.lora_batch_docs = s ? 2 : 4;
    pg_eval_result one;
    ttt_weights w = {0};
    ttt_one(&f, &p, &one, &w);
    several_same(&f, &p, es, s ? 3 : 2, &one);
    ttt_done(&w);
    pg_eval_result_free(&one);
  }
  fx_free(&f);
}

Test(eval, several_engines_lora_same_bits) { several_docs(PG_PROTO_TTT_LORA, ARCH, PG_PREC_FP32); }
Test(eval, several_engines_lora_bf16_same_bits) {
  several_docs(PG_PROTO_TTT_LORA, DOCS_ARCH, PG_PREC_BF16);
}
Test(eval, several_engines_phased_same_bits) {
  several_docs(PG_PROTO_TTT_PHASED, DOCS_ARCH, PG_PREC_FP32);
}
Test(eval, several_engines_phased_bf16_same_bits) {
  several_docs(PG_PROTO_TTT_PHASED, ARCH, PG_PREC_BF16);
}

Test(eval, several_engines_none_refused) {
  fixture f;
  fx_init(&f, 64 * 5 + 1, DOCS_ARCH, 1);
  pg_engine cpu[1] = {pg_engine_cpu(1)};
  pg_engine *es[1] = {&cpu[0]};
  pg_protocol p = proto(PG_PROTO_PLAIN);
  pg_eval_result R;
  pg_err err;
  cr_assert_eq(pg_eval_run_on(f.m, es, 0, &f.val, &p, NULL, &R, &err), PG_E_ARG);
  fx_free(&f);
}

/* With the model already on the remote engine, a TTT step moves up only its batch's side inputs
 * and loss weights and down only its NLL and (full-model steps, clip on) the gradient norm's one
 * fp64: per forward one upload and one download, per step one more of each, and no transfer as
 * large as the parameters (any parameter, gradient or optimizer-state transfer moves a whole
 * array). LoRA TTT moves its adapters only where a batch of documents resets them. */
static void remote_ttt_transfers(int kind, const char *json) {
  fixture f;
  fx_init(&f, 64 * 5 + 1, json, 2);
  pg_protocol p = proto(kind);
  pgremote *r = pgremote_new(2);
  pg_err err;
  cr_assert_eq(pg_model_enable_grads(f.m, &err), PG_OK);
  cr_assert_eq(pg_model_bind(f.m, &r->outer, &err), PG_OK);
  size_t u = r->uploads, d = r->downloads;
  r->max_upload = r->max_download = 0;
  pg_eval_result B;
  cr_assert_eq(pg_eval_run(f.m, &r->outer, &f.val, &p, NULL, &B, &err), PG_OK, "%s", err.msg);
  size_t F = B.forwards, S = B.train_steps, up = r->uploads - u, down = r->downloads - d;
  size_t pbytes = pg_model_param_count(f.m) * sizeof(float);
  cr_assert_gt(S, 1);
  if (kind == PG_PROTO_TTT_CHUNK) {
    cr_assert_gt(p.clip, 0);
    cr_assert_eq(up, F + S, "%zu uploads for %zu forwards and %zu steps", up, F, S);
    cr_assert_eq(down, F + S, "%zu downloads for %zu forwards and %zu steps", down, F, S);
  } else {
    size_t resets = B.nchunks; /* one per batch of documents */
    cr_assert_leq(down - F, resets, "%zu downloads for %zu forwards, %zu steps, %zu batches", down,
                  F, S, resets);
    cr_assert_leq(up - F - S, resets + 2, "%zu uploads for %zu forwards, %zu steps", up, F, S);
  }
  cr_assert_lt(r->max_download, pbytes, "a download of %zu bytes", r->max_download);
  cr_assert_lt(r->max_upload, pbytes, "an upload of %zu bytes", r->max_upload);
  pg_eval_result_free(&B);
  fx_free(&f);
  cr_assert_eq(r->live, 0, "every engine buffer is freed");
  pgremote_free(r);
}

Test(eval, remote_ttt_step_moves_no_parameters_chunked) {
  remote_ttt_transfers(PG_PROTO_TTT_CHUNK, ARCH);
}
Test(eval, remote_ttt_step_moves_no_adapters_lora) {
  remote_ttt_transfers(PG_PROTO_TTT_LORA, ARCH);
}

/* LoRA TTT: a batch's committed scores do not change when its tokens are altered after the
 * commit, and the documents of other batches are untouched by it (per-document adapters, frozen
 * base, A not kept). */
Test(eval, lora_score_first_and_document_independence) {
  fixture f;
  fx_init(&f, 400, ARCH, 1);
  pg_protocol p = proto(PG_PROTO_TTT_LORA);
  p.lora_warm_a = 0;
  pg_eval_result A, B;
  run_ok(&f, &p, NULL, &A);
  cr_assert(A.documents > 8 && A.nchunks == (A.documents + 3) / 4);
  /* alter every token of the stream right after batch 1 commits: batches 0 and 1 are final,
   * the later ones see new tokens */
  alter al = {.chunk = 1, .from = 0, .to = f.val.n};
  pg_eval_test_hooks h = {.alter = alter_on_commit, .tok = f.tok, .ctx = &al};
  pg_model *m0 = model(ARCH, 9);
  pg_err err;
  pg_model_copy_params(f.m, m0, &err);
  run_ok(&f, &p, &h, &B);
  cr_assert_eq(memcmp(&A.chunks[0], &B.chunks[0], sizeof A.chunks[0]), 0);
  cr_assert_eq(memcmp(&A.chunks[1], &B.chunks[1], sizeof A.chunks[1]), 0);
  cr_assert(memcmp(&A.chunks[2], &B.chunks[2], sizeof A.chunks[2]) != 0);
  /* the base model is frozen under LoRA TTT */
  for (size_t i = 0; i < pg_model_param_count(f.m); i++)
    cr_assert_eq(pg_model_params(f.m)[i], pg_model_params(m0)[i]);
  pg_eval_result_free(&A);
  pg_eval_result_free(&B);
  pg_model_free(m0);
  fx_free(&f);
}

/* Phased: the base changes (global SGD ran) only on committed targets; the never-scored BOS
 * targets at document joins are masked and counted. */
Test(eval, phased_global_sgd_uses_scored_documents_only) {
  const char *json = "{\"vocab_size\": 37, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, "
                     "\"head_dim\": 4, \"layers\": 2}";
  fixture f;
  fx_init(&f, 600, json, 1);
  pg_protocol p = proto(PG_PROTO_TTT_PHASED);
  p.chunk_tokens = 40;
  p.seq_len = 16;
  pg_model *m0 = model(json, 9);
  pg_eval_result A;
  run_ok(&f, &p, NULL, &A);
  int changed = 0;
  for (size_t i = 0; i < pg_model_param_count(f.m); i++)
    changed |= pg_model_params(f.m)[i] != pg_model_params(m0)[i];
  cr_assert(changed, "global SGD never ran");
  cr_assert(A.masked > 0);
  pg_eval_result_free(&A);
  pg_model_free(m0);
  fx_free(&f);
}

/* ---- optimizers ------------------------------------------------------------------------------ */

Test(optim, sgd_momentum_matches_torch_formula) {
  pg_optim *o;
  pg_err err;
  pg_optim_cfg c = {.kind = PG_OPTIM_SGD, .momentum = 0.9};
  cr_assert_eq(pg_optim_create(&o, &c, 3, &err), PG_OK);
  float p[3] = {1, -2, 0.5f}, g[3] = {0.1f, 0.2f, -0.3f};
  double pp[3] = {1, -2, 0.5}, buf[3] = {0, 0, 0};
  pg_optim_span s = {.p = p, .g = g, .n = 3};
  for (int step = 1; step <= 4; step++) {
    pg_optim_step(o, &s, 1, 0.01);
    for (int i = 0; i < 3; i++) {
      buf[i] = step == 1 ? g[i] : (double)(float)(0.9 * buf[i] + g[i]);
      if (step == 1) buf[i] = (double)(float)buf[i];
      pp[i] = (double)(float)(pp[i] - 0.01 * buf[i]);
      cr_assert_eq(p[i], (float)pp[i], "step %d element %d", step, i);
    }
  }
  pg_optim_free(o);
}

Test(optim, adamw_matches_torch_formula) {
  pg_optim *o;
  pg_err err;
  pg_optim_cfg c = {.kind = PG_OPTIM_ADAMW, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8,
                    .weight_decay = 0.5};
  cr_assert_eq(pg_optim_create(&o, &c, 2, &err), PG_OK);
  float p[2] = {1, -2}, g[2] = {0.1f, -0.3f};
  double pp[2] = {1, -2}, m[2] = {0}, v[2] = {0};
  pg_optim_span s = {.p = p, .g = g, .n = 2};
  for (int t = 1; t <= 3; t++) {
    pg_optim_step(o, &s, 1, 1e-3);
    for (int i = 0; i < 2; i++) {
      double q = pp[i] * (1 - 1e-3 * 0.5);
      m[i] = (float)(0.9 * m[i] + 0.1 * g[i]);
      v[i] = (float)(0.99 * v[i] + 0.01 * (double)g[i] * g[i]);
      double den = sqrt(v[i]) / sqrt(1 - pow(0.99, t)) + 1e-8;
      pp[i] = (float)(q - 1e-3 / (1 - pow(0.9, t)) * m[i] / den);
      cr_assert_eq(p[i], (float)pp[i], "step %d element %d", t, i);
    }
  }
  cr_assert_eq(pg_optim_steps(o), 3);
  pg_optim_reset(o);
  cr_assert_eq(pg_optim_steps(o), 0);
  pg_optim_free(o);
}

Test(optim, clip_and_cosine) {
  float g[4] = {3, 0, 0, 4};
  pg_optim_span s[2] = {{.g = g, .n = 2}, {.g = g + 2, .n = 2}};
  double n = pg_clip_grad_norm(s, 2, 1.0);
  cr_assert_eq(n, 5.0);
  cr_assert_float_eq(g[0], 3.0 / (5 + 1e-6), 1e-7);
  cr_assert_float_eq(g[3], 4.0 / (5 + 1e-6), 1e-7);
  float h[2] = {0.1f, 0.1f};
  pg_optim_span t = {.g = h, .n = 2};
  pg_clip_grad_norm(&t, 1, 1.0);
  cr_assert_eq(h[0], 0.1f, "below the limit the gradient is untouched");
  cr_assert_eq(pg_cosine_lr(2.0, 0, 5), 2.0);
  cr_assert_float_eq(pg_cosine_lr(2.0, 2, 5), 1.0, 1e-15);
  cr_assert_float_eq(pg_cosine_lr(2.0, 4, 5), 0.0, 1e-15);
  cr_assert_eq(pg_cosine_lr(2.0, 0, 1), 2.0);
  pg_optim *o;
  pg_err err;
  pg_optim_cfg bad = {.kind = PG_OPTIM_SGD, .momentum = 1.0};
  cr_assert_eq(pg_optim_create(&o, &bad, 1, &err), PG_E_ARG);
}

/* ---- the ledger on its own (pg_ledger.h): the events a checker replays ---------------------- */

Test(ledger, single_pass_commit_update_and_completion) {
  pg_ledger *l;
  pg_err e;
  pg_ledger_summary s;
  cr_assert_eq(pg_ledger_create(&l, 10, 0, &e), PG_OK);
  int dup = -1;
  for (uint64_t t = 0; t < 5; t++) cr_assert_eq(pg_ledger_score(l, t, &dup, &e), PG_OK);
  cr_assert_eq(dup, 0);
  cr_assert_eq(pg_ledger_score(l, 2, &dup, &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "target 2 scored twice (single pass violated)");
  cr_assert_eq(pg_ledger_score(l, 10, &dup, &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "internal: target 10 past the stream");
  /* an update may not use a scored target before its commit, nor a position outside */
  cr_assert_eq(pg_ledger_check_update(l, 3, "update", &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "update would use target 3 before its score is committed");
  cr_assert_eq(pg_ledger_check_update(l, -1, "LoRA update", &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "LoRA update would use target -1 before its score is committed");
  /* commit covers only what was scored, once, inside the stream */
  pg_ledger_commit(l, 0, 8);
  pg_ledger_commit(l, 0, 8);
  pg_ledger_commit(l, 9, UINT64_C(1) << 40);
  cr_assert_eq(pg_ledger_check_update(l, 3, "update", &e), PG_OK);
  cr_assert(pg_ledger_is_committed(l, 4) && !pg_ledger_is_committed(l, 5));
  cr_assert(!pg_ledger_is_committed(l, 10) && !pg_ledger_is_committed(l, -5));
  pg_ledger_summarize(l, &s);
  cr_assert_eq(s.targets, 10);
  cr_assert_eq(s.scored, 5);
  cr_assert_eq(s.committed, 5);
  cr_assert_eq(s.duplicates, 0);
  cr_assert_eq(pg_ledger_check_complete(l, &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "5 of 10 targets were scored (every target must be scored once)");
  /* a target scored and not yet committed stays unusable until its own commit */
  for (uint64_t t = 5; t < 10; t++) cr_assert_eq(pg_ledger_score(l, t, NULL, &e), PG_OK);
  cr_assert_eq(pg_ledger_check_update(l, 9, "update", &e), PG_E_ILLEGAL);
  pg_ledger_commit(l, 5, 5);
  cr_assert_eq(pg_ledger_check_update(l, 9, "update", &e), PG_OK);
  cr_assert_eq(pg_ledger_check_complete(l, &e), PG_OK);
  pg_ledger_free(l);
}

Test(ledger, duplicates_are_counted_up_to_127) {
  pg_ledger *l;
  pg_err e;
  pg_ledger_summary s;
  cr_assert_eq(pg_ledger_create(&l, 3, 1, &e), PG_OK);
  int dup = -1;
  cr_assert_eq(pg_ledger_score(l, 1, &dup, &e), PG_OK);
  cr_assert_eq(dup, 0);
  cr_assert_eq(pg_ledger_score(l, 1, &dup, &e), PG_OK);
  cr_assert_eq(dup, 1);
  pg_ledger_commit(l, 0, 3);
  cr_assert_eq(pg_ledger_score(l, 1, &dup, &e), PG_OK); /* scoring after the commit: counted */
  for (int k = 3; k < 127; k++) cr_assert_eq(pg_ledger_score(l, 1, NULL, &e), PG_OK);
  cr_assert_eq(pg_ledger_count(l, 1), 127);
  cr_assert_eq(pg_ledger_score(l, 1, NULL, &e), PG_E_ILLEGAL);
  cr_assert_str_eq(e.msg, "target 1 scored 127 times");
  cr_assert(pg_ledger_is_committed(l, 1)); /* the count never spills into the committed bit */
  pg_ledger_summarize(l, &s);
  cr_assert_eq(s.scored, 127);
  cr_assert_eq(s.duplicates, 126);
  cr_assert_eq(s.committed, 1);
  cr_assert_eq(pg_ledger_count(l, 0), 0);
  cr_assert_eq(pg_ledger_count(l, 99), 0);
  pg_ledger_free(l);
}
