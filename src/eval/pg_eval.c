/* pg_eval.c: the evaluation protocols (pg_eval.h, spec/eval.md): window lists, scoring on an
 * inference tape into fp64 sums committed chunk by chunk through a ledger of target positions,
 * and the score-first updates (chunked TTT, per-document LoRA, phased global SGD), each checked
 * against the ledger before it runs. */
#include "pg_eval.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg_eval_testing.h"
#include "pg_ledger.h"
#include "pg_sched.h"
#include "pg_shard.h"
#include "pg_tape.h"

#define SZ(a, b) ((size_t)(a) * (size_t)(b))

/* ---- names and defaults ---------------------------------------------------------------------- */

static const char *const PROTO_NAMES[] = {NULL, "plain", "sliding", "ttt-chunk", "ttt-lora",
                                          "ttt-phased"};

const char *pg_proto_name(int kind) {
  return kind >= PG_PROTO_PLAIN && kind <= PG_PROTO_TTT_PHASED ? PROTO_NAMES[kind] : NULL;
}

int pg_proto_parse(const char *s) {
  for (int k = PG_PROTO_PLAIN; k <= PG_PROTO_TTT_PHASED; k++)
    if (!strcmp(s, PROTO_NAMES[k])) return k;
  return -1;
}

static const char *const SLIDE_NAMES[] = {"standard", "last-s", "gap"};
static const char *const PLAIN_NAMES[] = {"windows", "packed"};

const char *pg_sliding_variant_name(int v) {
  return v >= PG_SLIDE_STANDARD && v <= PG_SLIDE_GAP ? SLIDE_NAMES[v] : NULL;
}

int pg_sliding_variant_parse(const char *s) {
  for (int v = PG_SLIDE_STANDARD; v <= PG_SLIDE_GAP; v++)
    if (!strcmp(s, SLIDE_NAMES[v])) return v;
  return -1;
}

const char *pg_plain_variant_name(int v) {
  return v >= PG_PLAIN_WINDOWS && v <= PG_PLAIN_PACKED ? PLAIN_NAMES[v] : NULL;
}

int pg_plain_variant_parse(const char *s) {
  for (int v = PG_PLAIN_WINDOWS; v <= PG_PLAIN_PACKED; v++)
    if (!strcmp(s, PLAIN_NAMES[v])) return v;
  return -1;
}

void pg_protocol_defaults(pg_protocol *p, int kind) {
  memset(p, 0, sizeof *p);
  p->kind = kind;
  p->seq_len = 2048;
  p->stride = 64;
  p->trim = 1;
  p->batch = 8;
  p->report_tokens = 32768;
  p->pack_windows = 32; /* VAL_BATCH_TOKENS 524288 over 8 ranks, in windows of 2048 */
  p->pack_ranks = 8;
  p->chunk_tokens = 32768;
  p->opt = PG_OPTIM_SGD;
  p->lr = 0.005; /* TTT9 (PR #1493); LEAKY used 0.002 */
  p->momentum = 0.9;
  p->beta1 = 0.9;
  p->beta2 = 0.999;
  p->eps = 1e-8;
  p->epochs = 3;
  p->clip = 1.0;
  p->batch_rows = 32;
  p->lora_rank = 80;
  p->lora_alpha = 144;
  p->lora_targets = PG_LORA_Q | PG_LORA_K | PG_LORA_V | PG_LORA_O | PG_LORA_MLP | PG_LORA_HEAD;
  p->lora_chunk = 48;
  p->lora_window = 2048;
  p->lora_batch_docs = 64;
  p->lora_lr = 1e-4;
  p->lora_beta1 = 0.0;
  p->lora_beta2 = 0.99;
  p->lora_eps = 1e-10;
  p->lora_wd = 0.5;
  p->lora_warm_a = 1;
  p->seed = 1337;
  p->phases = 3;
  p->prefix_docs = 2500;
  if (kind == PG_PROTO_PLAIN) p->seq_len = 1024;
  if (kind == PG_PROTO_TTT_PHASED) {
    p->lr = 0.001; /* GLOBAL_TTT_LR */
    p->epochs = 1;
  }
}

#define BADP(...) pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, __VA_ARGS__)

int pg_protocol_validate(const pg_protocol *p, pg_err *err) {
  if (!pg_proto_name(p->kind)) return BADP("protocol: unknown kind %d", p->kind);
  if (p->seq_len < 1 || p->seq_len > (1 << 24)) return BADP("protocol: seq_len %d", p->seq_len);
  if (p->batch < 1 || p->batch > 4096) return BADP("protocol: batch %d not in 1..4096", p->batch);
  int windows = p->kind == PG_PROTO_SLIDING || p->kind == PG_PROTO_TTT_CHUNK;
  if (windows && (p->stride < 1 || p->stride > p->seq_len))
    return BADP("protocol: stride %d not in 1..seq_len (%d)", p->stride, p->seq_len);
  /* chunk arithmetic ((n + C - 1) / C, (i + 1) * C) stays exact below 2^40 */
  if ((p->kind == PG_PROTO_PLAIN || p->kind == PG_PROTO_SLIDING) &&
      (p->report_tokens < 1 || p->report_tokens > (UINT64_C(1) << 40)))
    return BADP("protocol: report_tokens must be in 1..2^40");
  if (p->tail_dup && !windows) return BADP("protocol: tail_dup applies to sliding windows only");
  if (!pg_sliding_variant_name(p->sliding_variant))
    return BADP("protocol: unknown sliding variant %d", p->sliding_variant);
  if (p->sliding_variant != PG_SLIDE_STANDARD) {
    const char *v = pg_sliding_variant_name(p->sliding_variant);
    if (p->kind != PG_PROTO_SLIDING)
      return BADP("protocol: the sliding variant %s applies to --protocol sliding only", v);
    if (p->tail_dup)
      return BADP("protocol: tail_dup is a variant of the standard windows, not of %s", v);
    if (p->sliding_variant == PG_SLIDE_GAP && 2 * (int64_t)p->stride > p->seq_len)
      return BADP("protocol: the gap variant needs 2*stride <= seq_len (%d, %d): its second "
                  "window would score targets of the first again", p->stride, p->seq_len);
  }
  if (!pg_plain_variant_name(p->plain_variant))
    return BADP("protocol: unknown plain variant %d", p->plain_variant);
  if (p->plain_variant == PG_PLAIN_PACKED) {
    if (p->kind != PG_PROTO_PLAIN)
      return BADP("protocol: the plain variant packed applies to --protocol plain only");
    if (p->pack_windows < 1 || (int64_t)p->pack_windows * p->seq_len > (1 << 24))
      return BADP("protocol: pack_windows %d not in 1..2^24 / seq_len", p->pack_windows);
    if (p->pack_ranks < 1 || p->pack_ranks > 4096)
      return BADP("protocol: pack_ranks %d not in 1..4096", p->pack_ranks);
  }
  if (p->kind == PG_PROTO_TTT_CHUNK || p->kind == PG_PROTO_TTT_PHASED) {
    if (p->chunk_tokens < 1 || p->chunk_tokens > (UINT64_C(1) << 40))
      return BADP("protocol: chunk_tokens must be in 1..2^40");
    if (p->kind == PG_PROTO_TTT_CHUNK && p->chunk_tokens % (uint64_t)p->stride)
      return BADP("protocol: chunk_tokens %llu is not a multiple of the stride %d",
                  (unsigned long long)p->chunk_tokens, p->stride);
    if (!pg_optim_kind_name(p->opt)) return BADP("protocol: unknown optimizer %d", p->opt);
    if (p->kind == PG_PROTO_TTT_PHASED && p->opt != PG_OPTIM_SGD)
      return BADP("protocol: the phased global update is SGD");
    if (!(p->lr >= 0) || !(p->momentum >= 0 && p->momentum < 1))
      return BADP("protocol: lr must be >= 0 and momentum in [0, 1)");
    if (p->opt == PG_OPTIM_ADAMW &&
        (!(p->beta1 >= 0 && p->beta1 < 1) || !(p->beta2 >= 0 && p->beta2 < 1) || !(p->eps > 0) ||
         !(p->weight_decay >= 0)))
      return BADP("protocol: AdamW needs betas in [0, 1), eps > 0, weight_decay >= 0");
    if (p->opt == PG_OPTIM_SGD && p->weight_decay != 0)
      return BADP("protocol: SGD takes no weight decay");
    if (p->epochs < 0 || p->epochs > 1000) return BADP("protocol: epochs %d", p->epochs);
    if (!(p->clip >= 0)) return BADP("protocol: clip must be >= 0");
    if (p->batch_rows < 1) return BADP("protocol: batch_rows must be positive");
    if (p->freeze_blocks < 0) return BADP("protocol: freeze_blocks must be >= 0");
  }
  if (p->kind == PG_PROTO_TTT_LORA || p->kind == PG_PROTO_TTT_PHASED) {
    if (p->lora_rank < 1 || p->lora_rank > 4096)
      return BADP("protocol: lora_rank %d", p->lora_rank);
    if (!(p->lora_alpha > 0)) return BADP("protocol: lora_alpha must be positive");
    if (!p->lora_targets || p->lora_targets >= (1u << 6)) return BADP("protocol: LoRA targets");
    if (p->lora_chunk < 1 || p->lora_window < p->lora_chunk)
      return BADP("protocol: lora_chunk %d must be in 1..lora_window (%d)", p->lora_chunk,
                  p->lora_window);
    if (p->lora_batch_docs < 1 || p->lora_batch_docs > 65536)
      return BADP("protocol: lora_batch_docs %d", p->lora_batch_docs);
    if (!(p->lora_lr >= 0) || !(p->lora_beta1 >= 0 && p->lora_beta1 < 1) ||
        !(p->lora_beta2 >= 0 && p->lora_beta2 < 1) || !(p->lora_eps > 0) || !(p->lora_wd >= 0))
      return BADP("protocol: LoRA AdamW settings out of range");
  }
  if (p->kind == PG_PROTO_TTT_PHASED) {
    if (p->phases < 1 || p->phases > 1000) return BADP("protocol: phases %d", p->phases);
    if (p->prefix_docs < p->phases) return BADP("protocol: prefix_docs below phases");
  }
  return PG_OK;
}

void pg_eval_result_free(pg_eval_result *r) {
  if (!r) return;
  free(r->chunks);
  r->chunks = NULL;
  r->nchunks = 0;
}

/* ---- windows --------------------------------------------------------------------------------- */

int pg_sliding_windows(uint64_t T, int L, int s, int tail_dup, pg_window **out, size_t *n,
                       pg_err *err) {
  *out = NULL;
  *n = 0;
  if (L < 1 || s < 1 || s > L) return BADP("sliding windows: need 1 <= stride <= length");
  uint64_t context = (uint64_t)(L - s), cap = T / (uint64_t)s + 2;
  pg_window *w = malloc(cap * sizeof *w);
  if (!w) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot list %llu windows",
                            (unsigned long long)cap);
  size_t k = 0;
  for (uint64_t ws = 0; ws < T; ws += (uint64_t)s) {
    uint64_t end = ws + (uint64_t)L < T ? ws + (uint64_t)L : T, wlen = end - ws;
    uint64_t lo;
    if (tail_dup) { /* variant A: every window with at least one target; the last s of each */
      if (wlen < 1) continue;
      lo = ws == 0 ? 0 : (wlen > (uint64_t)s ? wlen - (uint64_t)s : 0);
    } else { /* variant B: the exact partition */
      if (ws + context >= T) continue;
      lo = ws == 0 ? 0 : context;
    }
    w[k++] = (pg_window){.ws = ws, .lo = (uint32_t)lo, .wlen = (uint32_t)wlen};
  }
  *out = w;
  *n = k;
  return PG_OK;
}

/* The early records' sliding code (spec/eval.md §3.2): every window is a whole L; last-s scores
 * the last s targets of windows at 0, s, 2s, …; gap scores the whole first window, then the
 * last s of windows at L − s, L, L + s, …; a window exists while ws + L <= T. */
static int variant_windows(uint64_t T, int L, int s, int variant, pg_window **out, size_t *n,
                           pg_err *err) {
  uint64_t cap = T / (uint64_t)s + 2, ws = 0;
  pg_window *w = malloc(cap * sizeof *w);
  if (!w) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot list %llu windows",
                            (unsigned long long)cap);
  size_t k = 0;
  while (ws + (uint64_t)L <= T) {
    uint32_t lo = variant == PG_SLIDE_GAP && ws == 0 ? 0 : (uint32_t)(L - s);
    w[k++] = (pg_window){.ws = ws, .lo = lo, .wlen = (uint32_t)L};
    ws = variant == PG_SLIDE_GAP && ws == 0 ? (uint64_t)(L - s) : ws + (uint64_t)s;
  }
  *out = w;
  *n = k;
  return PG_OK;
}

/* The packed plain rows: the S = T / L windows split over the ranks as the records split them
 * (rank r has windows [S·r / R, S·(r + 1) / R)), each rank's cut to whole rows of K windows; the
 * rows in rank order. */
static int packed_rows(uint64_t T, int L, int K, int R, pg_window **out, size_t *n,
                       pg_err *err) {
  uint64_t S = T / (uint64_t)L;
  pg_window *w = malloc((S / (uint64_t)K + 1) * sizeof *w);
  if (!w) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot list the rows");
  size_t k = 0;
  for (uint64_t r = 0; r < (uint64_t)R; r++) {
    uint64_t s0 = S * r / (uint64_t)R, s1 = S * (r + 1) / (uint64_t)R;
    for (uint64_t q = s0; q + (uint64_t)K <= s1; q += (uint64_t)K)
      w[k++] = (pg_window){.ws = q * (uint64_t)L, .lo = 0, .wlen = (uint32_t)(K * L)};
  }
  *out = w;
  *n = k;
  return PG_OK;
}

int pg_protocol_windows(const pg_protocol *p, uint64_t T, pg_window **out, size_t *n,
                        pg_err *err) {
  *out = NULL;
  *n = 0;
  PG_TRY(pg_protocol_validate(p, err));
  if (p->kind == PG_PROTO_PLAIN && p->plain_variant == PG_PLAIN_PACKED)
    return packed_rows(T, p->seq_len, p->pack_windows, p->pack_ranks, out, n, err);
  if (p->kind == PG_PROTO_SLIDING && p->sliding_variant != PG_SLIDE_STANDARD)
    return variant_windows(T, p->seq_len, p->stride, p->sliding_variant, out, n, err);
  if (p->kind == PG_PROTO_SLIDING || p->kind == PG_PROTO_TTT_CHUNK)
    return pg_sliding_windows(T, p->seq_len, p->stride, p->tail_dup, out, n, err);
  return BADP("protocol %s has no window list", pg_proto_name(p->kind));
}

/* ---- the run's state ------------------------------------------------------------------------- */

typedef struct run run;
typedef struct doc doc;

/* One engine of a run over several (pg_eval_run_on): its model (the run's own on the first
 * engine, a copy on the others), its tapes and the buffers of its forwards; its host thread
 * scores batches of the current group of windows (score_ahead), or, in the per-document
 * protocols, runs its lane of each step: the documents of the batch whose adapter rows it owns
 * (lora_batch). */
typedef struct worker {
  run *r;
  pg_model *m;
  pg_engine *e;
  int own_model; /* m is a copy this run made */
  pg_tape *inf, *rec; /* the first engine's are the run's own (not freed here) */
  int32_t *ids, *tg;
  int *len, *lora_rows;
  double *nll;
  pg_real *dnll;
  size_t cap_tokens, cap_rows;
  /* per-document LoRA: this engine's adapters (every row, the owned ones used), their AdamW
   * state, the spans of the owned rows, and the current step's rows and whether any trains */
  pg_lora *lo;
  pg_optim *opt;
  pg_optim_span *lsp;
  size_t nlsp, rows;
  int train;
  int rc;
  pg_err err;
} worker;

struct run {
  pg_model *m;
  const pg_val *val;
  const pg_protocol *p;
  const pg_eval_hooks *hooks;
  const pg_eval_test_hooks *test; /* pg_eval_testing.h; NULL outside the tests */
  pg_eval_result *res;
  pg_err *err;
  uint64_t N, T;      /* tokens kept, targets */
  uint64_t expect;    /* targets the protocol scores: T, fewer for last-s, gap and packed */
  int rope_len, wbatch; /* windows' NTK call length and windows per forward (packed: its row) */
  pg_ledger *ledger;  /* scorings and commits of the T targets (spec/eval.md §6) */
  pg_tape *inf, *rec;
  pg_eval_chunk cur;  /* the chunk being accumulated */
  size_t chunk_cap;
  /* buffers of one forward */
  int32_t *ids, *tg;
  int *len, *lora_rows;
  double *nll;
  pg_real *dnll;
  size_t buf_tokens, buf_rows;
  int64_t *orig; /* the ledger position of each target of a training batch, −1 for none */
  double *norm2;  /* engine memory: the clip's sum of squares (one fp64), made at the first clip */
  /* several engines (plain, sliding and chunked TTT, pg_eval_run_on): the workers score a group
   * of windows of the list `wall` ahead, [pre_b, pre_e), into `pre`; the calling thread adds them
   * up. A group never passes `ahead_end` (chunked TTT: the end of the chunk, after which the
   * weights change). */
  worker *wk;
  int nwk;
  const pg_window *wall;
  size_t nwall, pre_b, pre_e, pre_cap, off_cap, nbatch, ahead_end;
  const pg_real *sync_src; /* chunked TTT: the updated weights the workers copy (worker_sync) */
  /* per-document LoRA (lora_batch): the batch's documents, the step ci the lanes run, its row
   * width and whether any document trains at it, each document's row in its lane's forward, and
   * the generator's state for the batch's reset (and after it) */
  const doc *bd;
  size_t bn;
  uint64_t bci;
  int bwidth, btrain, bkeep;
  size_t *brow;
  pg_rng brng, brng_next;
  double *pre;    /* the scored losses of the group's windows, window after window */
  size_t *off;    /* window pre_b + i's losses start at pre[off[i]] */
  size_t *bstart; /* batch i of the group is windows [bstart[i], bstart[i + 1]) */
  atomic_size_t next; /* the next batch of the group a worker claims */
  atomic_int stop;    /* a worker failed: the others stop claiming */
};

#define FAIL(r, st, ...) pg_err_set((r)->err, (st), NULL, PG_NO_OFFSET, __VA_ARGS__)

static int ensure_buffers(run *r, size_t rows, size_t tokens) {
  if (tokens > r->buf_tokens) {
    free(r->ids);
    free(r->tg);
    free(r->nll);
    free(r->dnll);
    free(r->orig);
    r->ids = malloc(tokens * sizeof *r->ids);
    r->tg = malloc(tokens * sizeof *r->tg);
    r->nll = malloc(tokens * sizeof *r->nll);
    r->dnll = malloc(tokens * sizeof *r->dnll);
    r->orig = malloc(tokens * sizeof *r->orig);
    r->buf_tokens = tokens;
    if (!r->ids || !r->tg || !r->nll || !r->dnll || !r->orig) {
      r->buf_tokens = 0;
      return FAIL(r, PG_E_NOMEM, "cannot allocate a batch of %zu tokens", tokens);
    }
  }
  if (rows > r->buf_rows) {
    free(r->len);
    free(r->lora_rows);
    r->len = malloc(rows * sizeof *r->len);
    r->lora_rows = malloc(rows * sizeof *r->lora_rows);
    r->buf_rows = rows;
    if (!r->len || !r->lora_rows) {
      r->buf_rows = 0;
      return FAIL(r, PG_E_NOMEM, "cannot allocate a batch of %zu rows", rows);
    }
  }
  return PG_OK;
}

static void free_run(run *r) {
  if (r->norm2) pg_engine_free(pg_tape_engine(r->rec), r->norm2);
  pg_ledger_free(r->ledger);
  pg_tape_free(r->inf);
  pg_tape_free(r->rec);
  free(r->ids);
  free(r->tg);
  free(r->len);
  free(r->lora_rows);
  free(r->nll);
  free(r->dnll);
  free(r->orig);
}

/* Bytes of target position t (the token at t + 1 after the token at t). */
static uint32_t target_bytes(const run *r, uint64_t t) {
  const pg_val *v = r->val;
  if (v->bytes) return v->bytes[t + 1];
  return pg_spm_pair_bytes_unchecked(v->tables, (uint32_t)v->tok[t], (uint32_t)v->tok[t + 1]);
}

/* Score one target: add it to the sums (in scoring order) and to the ledger. */
static int score(run *r, uint64_t t, double nll) {
  int dup;
  if (t >= r->T) return pg_ledger_score(r->ledger, t, &dup, r->err); /* past the stream */
  if (!isfinite(nll))
    return pg_err_set(r->err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "the model gives a non-finite loss (%g) at target %llu", nll,
                      (unsigned long long)t);
  PG_TRY(pg_ledger_score(r->ledger, t, &dup, r->err));
  if (dup) r->res->duplicates++;
  const uint32_t tb = target_bytes(r, t);
  const pg_eval_hooks *h = r->hooks;
  if (h && h->on_score && h->on_score(h->score_ctx, t, nll, tb, dup))
    return FAIL(r, PG_E_ARG, "stopped by the per-target hook");
  double b = (double)tb;
  r->res->sum.nats += nll;
  r->res->sum.tokens += 1.0;
  r->res->sum.bytes += b;
  r->res->scored++;
  r->cur.nats += nll;
  r->cur.bytes += b;
  r->cur.count++;
  return PG_OK;
}

/* Mark the targets [first, first + n) committed (scored once at least). */
static void commit_range(run *r, uint64_t first, uint64_t n) {
  pg_ledger_commit(r->ledger, first, n);
}

/* Close the current chunk: append it to the result and call the hooks. */
static int commit_chunk(run *r) {
  pg_eval_result *res = r->res;
  if (res->nchunks >= PG_EVAL_MAX_CHUNKS) /* the protocols that know their count refuse earlier */
    return FAIL(r, PG_E_LIMIT, "more than %u chunks: the receipt could not be read back",
                PG_EVAL_MAX_CHUNKS);
  if (res->nchunks == r->chunk_cap) {
    size_t cap = r->chunk_cap ? r->chunk_cap * 2 : 64;
    pg_eval_chunk *c = realloc(res->chunks, cap * sizeof *c);
    if (!c) return FAIL(r, PG_E_NOMEM, "cannot record more chunks");
    res->chunks = c;
    r->chunk_cap = cap;
  }
  res->chunks[res->nchunks++] = r->cur;
  const pg_eval_hooks *h = r->hooks;
  if (h && h->on_commit && h->on_commit(h->ctx, res->nchunks - 1, &r->cur))
    return FAIL(r, PG_E_ARG, "stopped by the commit hook");
  const pg_eval_test_hooks *th = r->test;
  if (th && th->alter && th->alter(th->ctx, res->nchunks - 1, &r->cur, th->tok, r->val->n))
    return FAIL(r, PG_E_ARG, "stopped by the commit hook");
  pg_ledger_summary ls;
  pg_ledger_summarize(r->ledger, &ls);
  if (h && h->progress && h->progress(h->ctx, ls.committed, r->T))
    return FAIL(r, PG_E_ARG, "stopped by the progress hook");
  memset(&r->cur, 0, sizeof r->cur);
  return PG_OK;
}

/* ---- scoring on several engines ------------------------------------------------------------- */

/* The chunk of window k of the list (score_chunked's grouping: report chunks, or chunked TTT's
 * chunks). */
static uint64_t window_chunk(const run *r, size_t k) {
  const uint64_t C = r->p->kind == PG_PROTO_TTT_CHUNK ? r->p->chunk_tokens : r->p->report_tokens;
  const uint64_t last = (r->T + C - 1) / C - 1;
  const uint64_t c = (r->wall[k].ws + r->wall[k].lo) / C;
  return c < last ? c : last;
}

static int worker_buffers(worker *wk, size_t rows, size_t tokens) {
  if (tokens > wk->cap_tokens) {
    free(wk->ids);
    free(wk->tg);
    free(wk->nll);
    free(wk->dnll);
    wk->ids = malloc(tokens * sizeof *wk->ids);
    wk->tg = malloc(tokens * sizeof *wk->tg);
    wk->nll = malloc(tokens * sizeof *wk->nll);
    wk->dnll = malloc(tokens * sizeof *wk->dnll);
    wk->cap_tokens = wk->ids && wk->tg && wk->nll && wk->dnll ? tokens : 0;
  }
  if (rows > wk->cap_rows) {
    free(wk->len);
    free(wk->lora_rows);
    wk->len = malloc(rows * sizeof *wk->len);
    wk->lora_rows = malloc(rows * sizeof *wk->lora_rows);
    wk->cap_rows = wk->len && wk->lora_rows ? rows : 0;
  }
  if (wk->cap_tokens < tokens || wk->cap_rows < rows)
    return pg_err_set(&wk->err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "cannot allocate a batch of %zu tokens", tokens);
  return PG_OK;
}

/* A worker's share of the group: it claims the next batch, runs it on its engine and copies each
 * window's scored losses to the window's place in the group, until no batch is left or another
 * worker failed. Which worker runs a batch changes nothing: the batches are the ones one engine
 * would run, and the sums are made afterwards in window order. */
static void *worker_score(void *arg) {
  worker *wk = arg;
  run *r = wk->r;
  pg_engine_enter(wk->e);
  if (!wk->inf && (wk->rc = pg_tape_create(&wk->inf, wk->e, 0))) {
    pg_err_set(&wk->err, wk->rc, NULL, PG_NO_OFFSET, "cannot create a tape");
    atomic_store(&r->stop, 1);
    return NULL;
  }
  while (!atomic_load(&r->stop)) {
    const size_t bi = atomic_fetch_add(&r->next, 1);
    if (bi >= r->nbatch) break;
    const size_t k0 = r->bstart[bi], kb = r->bstart[bi + 1] - k0;
    const pg_window *w = r->wall + k0;
    int width = 0;
    for (size_t k = 0; k < kb; k++) width = (int)w[k].wlen > width ? (int)w[k].wlen : width;
    if ((wk->rc = worker_buffers(wk, kb, SZ(kb, width)))) break;
    for (size_t k = 0; k < kb; k++) {
      for (int j = 0; j < width; j++) {
        const size_t o = SZ(k, width) + (size_t)j;
        const int in = j < (int)w[k].wlen;
        wk->ids[o] = in ? r->val->tok[w[k].ws + (uint64_t)j] : 0;
        wk->tg[o] = in ? r->val->tok[w[k].ws + (uint64_t)j + 1] : 0;
      }
      wk->len[k] = (int)w[k].wlen;
    }
    pg_batch b = {.B = (int)kb, .T = width, .ids = wk->ids, .targets = wk->tg, .len = wk->len,
                  .rope_len = r->rope_len};
    if ((wk->rc = pg_model_forward(wk->m, wk->inf, &b, NULL, wk->nll, NULL, &wk->err))) break;
    for (size_t k = 0; k < kb; k++)
      memcpy(r->pre + r->off[k0 + k - r->pre_b], wk->nll + SZ(k, width) + w[k].lo,
             (size_t)(w[k].wlen - w[k].lo) * sizeof *r->pre);
  }
  if (wk->rc) atomic_store(&r->stop, 1);
  return NULL;
}

/* The end of a worker, on its engine's thread: its tapes, adapters and optimizer, its copy of
 * the model, its buffers. */
static void *worker_free(void *arg) {
  worker *wk = arg;
  pg_engine_enter(wk->e);
  if (wk != wk->r->wk) { /* the first engine's tapes are the run's */
    pg_tape_free(wk->inf);
    pg_tape_free(wk->rec);
  }
  pg_lora_free(wk->lo);
  pg_optim_free(wk->opt);
  if (wk->own_model) pg_model_free(wk->m);
  free(wk->ids);
  free(wk->tg);
  free(wk->len);
  free(wk->lora_rows);
  free(wk->nll);
  free(wk->dnll);
  free(wk->lsp);
  return NULL;
}

/* Chunked TTT on several engines: after an update (made on the first engine's model, r->m), each
 * other worker copies the new weights into its model's host copy, which its next forward takes
 * up to its engine; so every engine scores the next chunk with the weights one engine would. */
static void *worker_sync(void *arg) {
  worker *wk = arg;
  if (!wk->own_model) return NULL;
  pg_engine_enter(wk->e);
  memcpy(pg_model_params(wk->m), wk->r->sync_src,
         pg_model_param_count(wk->m) * sizeof *wk->r->sync_src);
  return NULL;
}

/* fn on every worker, each on a host thread of its own; a worker whose thread cannot be started
 * runs on the calling thread once the others are done (the work is claimed, so it still gets
 * done). A single worker runs on the calling thread. */
static void run_workers(run *r, void *(*fn)(void *)) {
  if (r->nwk == 1) {
    fn(&r->wk[0]);
    return;
  }
  pthread_t th[PG_ENGINES_MAX];
  int started[PG_ENGINES_MAX];
  for (int i = 0; i < r->nwk; i++) started[i] = !pthread_create(&th[i], NULL, fn, &r->wk[i]);
  for (int i = 0; i < r->nwk; i++)
    if (started[i]) pthread_join(th[i], NULL);
  for (int i = 0; i < r->nwk; i++)
    if (!started[i]) fn(&r->wk[i]);
}

/* Score a group of windows from wall[k0] on the workers: whole batches as one engine cuts them
 * (at most `batch` windows, never across a report chunk), about 16 batches per engine and at
 * most 2^23 scored targets (one batch at least). */
static int score_ahead(run *r, size_t k0) {
  const size_t batch = (size_t)r->wbatch, want = 16 * batch * (size_t)r->nwk;
  const size_t maxw = want + batch;
  if (maxw + 1 > r->off_cap) {
    free(r->off);
    free(r->bstart);
    r->off = malloc((maxw + 1) * sizeof *r->off);
    r->bstart = malloc((maxw + 1) * sizeof *r->bstart);
    r->off_cap = r->off && r->bstart ? maxw + 1 : 0;
    if (!r->off_cap) return FAIL(r, PG_E_NOMEM, "cannot list a group of %zu windows", maxw);
  }
  size_t k = k0, total = 0;
  r->nbatch = 0;
  while (k < r->ahead_end && k - k0 < want && total < ((size_t)1 << 23)) {
    const uint64_t c = window_chunk(r, k);
    r->bstart[r->nbatch++] = k;
    for (size_t k1 = k; k < r->ahead_end && k - k1 < batch && window_chunk(r, k) == c; k++) {
      r->off[k - k0] = total;
      total += r->wall[k].wlen - r->wall[k].lo;
    }
  }
  r->bstart[r->nbatch] = k;
  if (total > r->pre_cap) {
    free(r->pre);
    r->pre = malloc(total * sizeof *r->pre);
    r->pre_cap = r->pre ? total : 0;
    if (!r->pre) return FAIL(r, PG_E_NOMEM, "cannot hold the losses of %zu targets", total);
  }
  r->pre_b = k0;
  r->pre_e = k;
  atomic_store(&r->next, 0);
  atomic_store(&r->stop, 0);
  run_workers(r, worker_score);
  for (int i = 0; i < r->nwk; i++)
    if (r->wk[i].rc) { /* the first engine (in order) that failed */
      r->pre_e = r->pre_b;
      *r->err = r->wk[i].err;
      return r->wk[i].rc;
    }
  r->res->forwards += r->nbatch;
  return PG_OK;
}

/* score_windows on several engines: windows w[0..n) of the list, their losses scored ahead by
 * group, then added to the sums here, in window order. */
static int score_windows_on(run *r, const pg_window *w, size_t n) {
  size_t k = (size_t)(w - r->wall);
  r->ahead_end = r->p->kind == PG_PROTO_TTT_CHUNK ? k + n : r->nwall;
  for (size_t i = 0; i < n; i++, k++) {
    if (k < r->pre_b || k >= r->pre_e) PG_TRY(score_ahead(r, k));
    const pg_window *wi = &r->wall[k];
    const double *nll = r->pre + r->off[k - r->pre_b];
    for (uint32_t j = wi->lo; j < wi->wlen; j++) PG_TRY(score(r, wi->ws + j, nll[j - wi->lo]));
  }
  r->res->windows += n;
  return PG_OK;
}

/* ---- scoring windows ------------------------------------------------------------------------- */

/* Score windows w[0..n) (in order), `batch` at a time, on the inference tape. */
static int score_windows(run *r, const pg_window *w, size_t n) {
  if (r->nwk > 1) return score_windows_on(r, w, n);
  const size_t nb = (size_t)r->wbatch;
  for (size_t k0 = 0; k0 < n; k0 += nb) {
    size_t kb = n - k0 < nb ? n - k0 : nb;
    int width = 0;
    for (size_t k = 0; k < kb; k++)
      width = (int)w[k0 + k].wlen > width ? (int)w[k0 + k].wlen : width;
    PG_TRY(ensure_buffers(r, kb, SZ(kb, width)));
    for (size_t k = 0; k < kb; k++) {
      const pg_window *wi = &w[k0 + k];
      for (int j = 0; j < width; j++) {
        size_t o = SZ(k, width) + (size_t)j;
        int in = j < (int)wi->wlen;
        r->ids[o] = in ? r->val->tok[wi->ws + (uint64_t)j] : 0;
        r->tg[o] = in ? r->val->tok[wi->ws + (uint64_t)j + 1] : 0;
      }
      r->len[k] = (int)wi->wlen;
    }
    pg_batch b = {.B = (int)kb, .T = width, .ids = r->ids, .targets = r->tg, .len = r->len,
                  .rope_len = r->rope_len};
    PG_TRY(pg_model_forward(r->m, r->inf, &b, NULL, r->nll, NULL, r->err));
    r->res->forwards++;
    for (size_t k = 0; k < kb; k++) {
      const pg_window *wi = &w[k0 + k];
      for (uint32_t j = wi->lo; j < wi->wlen; j++)
        PG_TRY(score(r, wi->ws + j, r->nll[SZ(k, width) + j]));
      if (r->test && r->test->inject_double_score && !r->res->windows && !k) /* fault injection */
        PG_TRY(score(r, wi->ws + wi->lo, r->nll[SZ(k, width) + wi->lo]));
    }
    r->res->windows += kb;
  }
  return PG_OK;
}

/* ---- one training step ----------------------------------------------------------------------- */

/* The trainable spans of the model, for the optimizer and the clip, as pointers into its engine
 * copies (spec/eval.md §5: the optimizers run on the engine); before the model is on an engine
 * only the count and the sizes are meaningful. */
static size_t model_spans(pg_model *m, pg_optim_span *sp) {
  pg_real *P = pg_model_params_engine(m), *G = pg_model_grads_engine(m);
  size_t k = 0, off = 0;
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    size_t n = (size_t)pg_arch_tensor_numel(pg_model_tensor(m, i));
    if (pg_model_trainable(m, i))
      sp[k++] = (pg_optim_span){.p = P ? P + off : NULL, .g = G ? G + off : NULL, .n = n,
                                .state = off};
    off += n;
  }
  return k;
}

/* Weights of a training batch already in r->ids/tg/orig (B rows of T, all valid): every target
 * weighs 1/count over the eligible targets. A target whose ledger position is not committed is
 * masked when `mask` is set (phased global SGD) and is an illegal update otherwise. */
static int train_weights(run *r, size_t n, int mask, uint64_t *used) {
  uint64_t cnt = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t o = r->orig[i];
    int ok = pg_ledger_is_committed(r->ledger, o);
    if (!ok && !mask) return pg_ledger_check_update(r->ledger, o, "update", r->err);
    if (!ok) r->res->masked++;
    r->dnll[i] = ok ? 1 : 0;
    cnt += (uint64_t)ok;
  }
  pg_real wgt = cnt ? (pg_real)(1.0 / (double)cnt) : 0;
  for (size_t i = 0; i < n; i++) r->dnll[i] *= wgt;
  *used = cnt;
  return PG_OK;
}

/* Full-model step on B rows of T tokens in r->ids/tg/orig: forward, backward, clip, update. */
static int model_step(run *r, pg_optim *opt, pg_optim_span *sp, size_t nsp, int B, int T, int mask,
                      double lr) {
  uint64_t used = 0;
  PG_TRY(train_weights(r, SZ(B, T), mask, &used));
  if (!used) return PG_OK;
  pg_model_zero_grads(r->m);
  pg_batch b = {.B = B, .T = T, .ids = r->ids, .targets = r->tg};
  PG_TRY(pg_model_forward(r->m, r->rec, &b, NULL, r->nll, r->dnll, r->err));
  PG_TRY(pg_model_backward(r->m, r->rec, r->err));
  /* The clip and the optimizer run on the engine's copies: only the norm comes back. */
  size_t k = model_spans(r->m, sp);
  if (k != nsp) return FAIL(r, PG_E_ARG, "internal: the trainable set changed during a step");
  pg_engine *e = pg_tape_engine(r->rec);
  if (r->p->clip > 0) {
    if (!r->norm2 && !(r->norm2 = pg_engine_alloc(e, sizeof *r->norm2)))
      return pg_engine_sync(e, r->err);
    pg_clip_grad_norm_on(e, r->norm2, sp, nsp, r->p->clip);
  }
  pg_optim_step(opt, sp, nsp, lr);
  PG_TRY(pg_engine_sync(e, r->err));
  r->res->train_steps++;
  r->res->forwards++;
  return PG_OK;
}

/* ---- plain and sliding ----------------------------------------------------------------------- */

/* Windows grouped into chunks of C target positions by their first scored target. Each chunk
 * is scored, committed (ledger, result, hooks), and only then handed to `after` (the updates of
 * chunked TTT), whose steps are recorded with the chunk. */
static int score_chunked(run *r, const pg_window *w, size_t nw, uint64_t C,
                         int (*after)(run *, uint64_t ci, uint64_t nchunks, void *), void *ctx) {
  uint64_t nchunks = (r->T + C - 1) / C;
  if (nchunks > PG_EVAL_MAX_CHUNKS) /* before anything is scored */
    return FAIL(r, PG_E_LIMIT,
                "%llu targets in chunks of %llu make %llu chunks, more than %u: the receipt could "
                "not be read back (raise %s)", (unsigned long long)r->T, (unsigned long long)C,
                (unsigned long long)nchunks, PG_EVAL_MAX_CHUNKS,
                r->p->kind == PG_PROTO_TTT_CHUNK ? "chunk_tokens" : "report_tokens");
  size_t k = 0;
  for (uint64_t ci = 0; ci < nchunks; ci++) {
    size_t k0 = k;
    while (k < nw) {
      uint64_t first = w[k].ws + w[k].lo, c = first / C;
      if (c > nchunks - 1) c = nchunks - 1;
      if (c != ci) break;
      k++;
    }
    r->cur.first = ci * C;
    if (after && r->test && r->test->inject_update_before_commit) /* fault injection */
      PG_TRY(after(r, ci, nchunks + 1, ctx));
    PG_TRY(score_windows(r, w + k0, k - k0));
    commit_range(r, ci * C, C);
    if (ci == nchunks - 1) commit_range(r, 0, r->T); /* whatever the last windows scored */
    PG_TRY(commit_chunk(r));
    uint64_t steps_before = r->res->train_steps;
    if (after) PG_TRY(after(r, ci, nchunks, ctx));
    r->res->chunks[r->res->nchunks - 1].train_steps =
        (uint32_t)(r->res->train_steps - steps_before);
  }
  return PG_OK;
}

typedef struct chunk_ttt {
  pg_optim *opt;
  pg_optim_span *sp;
  size_t nsp;
} chunk_ttt;

/* Chunked TTT, after chunk ci is committed: epochs over its rows of L (spec/records.md §4.3). */
static int chunk_train_on(run *r, uint64_t ci, uint64_t nchunks, void *ctx) {
  chunk_ttt *c = ctx;
  const pg_protocol *p = r->p;
  if (ci == nchunks - 1 || p->epochs == 0) return PG_OK; /* the last chunk is never trained on */
  int L = p->seq_len;
  uint64_t C = p->chunk_tokens, cs = ci * C, ce = (ci + 1) * C < r->T ? (ci + 1) * C : r->T;
  uint64_t nseq = (ce - cs) / (uint64_t)L;
  double lr = pg_cosine_lr(p->lr, ci, nchunks);
  for (int ep = 0; ep < p->epochs; ep++)
    for (uint64_t b0 = 0; b0 < nseq; b0 += (uint64_t)p->batch_rows) {
      uint64_t nb = nseq - b0 < (uint64_t)p->batch_rows ? nseq - b0 : (uint64_t)p->batch_rows;
      uint64_t s0 = cs + b0 * (uint64_t)L;
      if (s0 + nb * (uint64_t)L + 1 > r->N) continue;
      PG_TRY(ensure_buffers(r, nb, SZ(nb, L)));
      for (uint64_t i = 0; i < nb * (uint64_t)L; i++) {
        r->ids[i] = r->val->tok[s0 + i];
        r->tg[i] = r->val->tok[s0 + i + 1];
        r->orig[i] = (int64_t)(s0 + i);
      }
      PG_TRY(model_step(r, c->opt, c->sp, c->nsp, (int)nb, L, 0, lr));
    }
  return PG_OK;
}

/* The update after chunk ci; on several engines the others then take the new weights up. */
static int chunk_train(run *r, uint64_t ci, uint64_t nchunks, void *ctx) {
  const uint64_t steps0 = r->res->train_steps;
  int rc = chunk_train_on(r, ci, nchunks, ctx);
  if (!rc && r->nwk > 1 && r->res->train_steps != steps0) { /* the other engines follow */
    r->sync_src = pg_model_params_read(r->m);
    run_workers(r, worker_sync);
  }
  return rc;
}

static int run_windows(run *r) {
  const pg_protocol *p = r->p;
  pg_window *w = NULL;
  size_t nw = 0;
  int rc;
  r->rope_len = p->seq_len;
  r->wbatch = p->batch;
  if (p->kind == PG_PROTO_PLAIN && p->plain_variant == PG_PLAIN_PACKED) {
    /* the records' row: attention cut at each BOS and every L tokens of a document (their
     * cu_seqlens with max_doc_len = L), SmearGate across the row, RoPE and its rescale over the
     * whole row; one row per forward (batch changes no result, and a row is long) */
    const pg_arch *a = pg_model_arch(r->m);
    if (!a->attention.doc_mask || a->attention.doc_max_len != p->seq_len)
      return pg_err_set(r->err, PG_E_ARG, NULL, PG_NO_OFFSET,
                        "the packed plain variant needs an arch with doc_mask and doc_max_len "
                        "= seq_len (%d): the records cut a packed row's attention at each BOS "
                        "and every %d tokens of a document", p->seq_len, p->seq_len);
    PG_TRY(pg_protocol_windows(p, r->T, &w, &nw, r->err));
    r->rope_len = p->pack_windows * p->seq_len;
    r->wbatch = 1;
  } else if (p->kind == PG_PROTO_PLAIN) {
    uint64_t S = r->T / (uint64_t)p->seq_len;
    w = malloc((S ? S : 1) * sizeof *w);
    if (!w) return FAIL(r, PG_E_NOMEM, "cannot list the windows");
    for (uint64_t s = 0; s < S; s++)
      w[nw++] = (pg_window){.ws = s * (uint64_t)p->seq_len, .lo = 0, .wlen = (uint32_t)p->seq_len};
  } else {
    PG_TRY(pg_protocol_windows(p, r->T, &w, &nw, r->err));
  }
  if (nw == 0) {
    free(w);
    return pg_err_set(r->err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "the validation stream (%llu tokens) is shorter than one %s of %d",
                      (unsigned long long)r->N,
                      p->plain_variant == PG_PLAIN_PACKED ? "packed row" : "window",
                      p->plain_variant == PG_PLAIN_PACKED ? p->pack_windows * p->seq_len
                                                          : p->seq_len);
  }
  if (p->sliding_variant != PG_SLIDE_STANDARD || p->plain_variant == PG_PLAIN_PACKED) {
    r->expect = 0; /* these variants score each target at most once: the windows' sum */
    for (size_t k = 0; k < nw; k++) r->expect += w[k].wlen - w[k].lo;
  }
  r->wall = w;
  r->nwall = nw;
  if (p->kind == PG_PROTO_TTT_CHUNK) {
    chunk_ttt c = {0};
    pg_optim_cfg oc = {.kind = p->opt, .momentum = p->opt == PG_OPTIM_SGD ? p->momentum : 0,
                       .beta1 = p->beta1, .beta2 = p->beta2, .eps = p->eps,
                       .weight_decay = p->weight_decay};
    rc = pg_model_enable_grads(r->m, r->err);
    if (!rc)
      rc = pg_optim_create_on(&c.opt, &oc, pg_model_param_count(r->m), pg_tape_engine(r->rec),
                              r->err);
    if (!rc) {
      pg_model_freeze_blocks(r->m, p->freeze_blocks);
      c.sp = malloc((pg_model_tensor_count(r->m) + 1) * sizeof *c.sp);
      if (!c.sp) rc = FAIL(r, PG_E_NOMEM, "cannot allocate the spans");
    }
    if (!rc) {
      c.nsp = model_spans(r->m, c.sp);
      rc = score_chunked(r, w, nw, p->chunk_tokens, chunk_train, &c);
    }
    pg_optim_free(c.opt);
    free(c.sp);
  } else {
    rc = score_chunked(r, w, nw, p->report_tokens, NULL, NULL);
  }
  free(w);
  return rc;
}

/* ---- documents, LoRA and phases -------------------------------------------------------------- */

typedef struct doc {
  uint64_t start, len; /* tokens [start, start + len), len including the next BOS */
  uint64_t index;      /* in stream order */
} doc;

static int cmp_len(const void *a, const void *b) {
  const doc *x = a, *y = b;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

typedef struct dbatch {
  size_t first, n;   /* into the length-sorted documents */
  uint64_t maxlen;
  size_t index;      /* position among batches in length order */
} dbatch;

static int cmp_batch(const void *a, const void *b) {
  const dbatch *x = a, *y = b;
  if (x->maxlen != y->maxlen) return x->maxlen > y->maxlen ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

typedef struct lora_run { /* the adapters and their optimizers are the lanes' */
  pg_rng rng;
  int fresh; /* the adapters have never been initialized (or were rebuilt) */
} lora_run;

/* Global SGD of the phased protocol on the documents d[0..n) (in scoring order): their tokens
 * back to back, chunks of C, the last chunk not trained, rows of L (one flat row under a document
 * mask), targets never scored masked. */
static int global_sgd(run *r, const doc *d, size_t n) {
  const pg_protocol *p = r->p;
  int L = p->seq_len;
  uint64_t tot = 0;
  for (size_t i = 0; i < n; i++) tot += d[i].len;
  if (tot < 2) return PG_OK;
  int32_t *tok = malloc(tot * sizeof *tok);
  int64_t *pos = malloc(tot * sizeof *pos);
  pg_optim_span *sp = malloc((pg_model_tensor_count(r->m) + 1) * sizeof *sp);
  pg_optim *opt = NULL;
  pg_optim_cfg oc = {.kind = PG_OPTIM_SGD, .momentum = p->momentum};
  int rc = (!tok || !pos || !sp) ? FAIL(r, PG_E_NOMEM, "cannot gather the scored documents")
                                 : PG_OK;
  if (!rc) rc = pg_model_enable_grads(r->m, r->err);
  if (!rc)
    rc = pg_optim_create_on(&opt, &oc, pg_model_param_count(r->m), pg_tape_engine(r->rec),
                            r->err);
  if (!rc) {
    uint64_t k = 0;
    for (size_t i = 0; i < n; i++)
      for (uint64_t j = 0; j < d[i].len; j++, k++) {
        tok[k] = r->val->tok[d[i].start + j];
        pos[k] = (int64_t)(d[i].start + j) - 1; /* the ledger position that scored this token */
      }
    pg_model_freeze_blocks(r->m, p->freeze_blocks);
    size_t nsp = model_spans(r->m, sp);
    uint64_t C = p->chunk_tokens, nch = (tot - 1 + C - 1) / C;
    int flat = pg_model_arch(r->m)->attention.doc_mask;
    for (uint64_t ci = 0; ci + 1 < nch && !rc; ci++) {
      uint64_t cs = ci * C, ce = (ci + 1) * C < tot - 1 ? (ci + 1) * C : tot - 1;
      uint64_t nseq = (ce - cs) / (uint64_t)L;
      double lr = pg_cosine_lr(p->lr, ci, nch);
      for (int ep = 0; ep < p->epochs && !rc; ep++)
        for (uint64_t b0 = 0; b0 < nseq && !rc; b0 += (uint64_t)p->batch_rows) {
          uint64_t nb = nseq - b0 < (uint64_t)p->batch_rows ? nseq - b0 : (uint64_t)p->batch_rows;
          uint64_t s0 = cs + b0 * (uint64_t)L;
          rc = ensure_buffers(r, nb, SZ(nb, L));
          for (uint64_t i = 0; i < nb * (uint64_t)L && !rc; i++) {
            r->ids[i] = tok[s0 + i];
            r->tg[i] = tok[s0 + i + 1];
            r->orig[i] = pos[s0 + i + 1];
          }
          if (!rc)
            rc = model_step(r, opt, sp, nsp, flat ? 1 : (int)nb, flat ? (int)nb * L : L, 1, lr);
        }
    }
  }
  pg_optim_free(opt);
  free(tok);
  free(pos);
  free(sp);
  return rc;
}

/* ---- per-document LoRA across engines: lanes ------------------------------------------------- */

/* Batch row j (the batch's j-th document, adapter row j) belongs to engine j mod n, in every
 * batch: with lora_warm_a a row's A carries over to the next batch's document j, so it must stay
 * on one engine. Each engine holds adapters for every row (the generator draws them all, as one
 * engine does) and trains only its own rows; every engine takes every step of the batch, with
 * zero gradients where none of its documents trains (as a row without a training document has
 * on one engine), so each row sees the one-engine run's steps. The lane functions run on the
 * engine's host thread (run_workers). */

/* Step ci of document d: its window's first token ws, its last prediction end (exclusive), and
 * whether it has a chunk ci at all. */
static int doc_chunk(const doc *d, uint64_t ci, int C, int W, uint64_t *ws, uint64_t *end,
                     uint64_t *nch) {
  const uint64_t pred = d->len - 1;
  *nch = (pred + (uint64_t)C - 1) / (uint64_t)C;
  if (ci >= *nch) return 0;
  *end = ci + 1 == *nch ? pred : (ci + 1) * (uint64_t)C;
  *ws = *end > (uint64_t)W ? *end - (uint64_t)W : 0;
  return 1;
}

/* A lane's adapters (every row) and their AdamW state, on its engine; the spans of its rows. */
static void *lane_init(void *arg) {
  worker *wk = arg;
  run *r = wk->r;
  const pg_protocol *p = r->p;
  const size_t k = (size_t)(wk - r->wk), n = (size_t)r->nwk, B = (size_t)p->lora_batch_docs;
  pg_engine_enter(wk->e);
  pg_optim_cfg oc = {.kind = PG_OPTIM_ADAMW, .beta1 = p->lora_beta1, .beta2 = p->lora_beta2,
                     .eps = p->lora_eps, .weight_decay = p->lora_wd};
  wk->rc = pg_lora_create(&wk->lo, wk->m, (int)B, p->lora_rank, p->lora_alpha, p->lora_targets,
                          &wk->err);
  if (!wk->rc)
    wk->rc = pg_optim_create_on(&wk->opt, &oc, pg_lora_count(wk->lo), wk->e, &wk->err);
  if (!wk->rc && !wk->rec && (wk->rc = pg_tape_create(&wk->rec, wk->e, 1)))
    pg_err_set(&wk->err, wk->rc, NULL, PG_NO_OFFSET, "cannot create a tape");
  if (!wk->rc && !wk->inf && (wk->rc = pg_tape_create(&wk->inf, wk->e, 0)))
    pg_err_set(&wk->err, wk->rc, NULL, PG_NO_OFFSET, "cannot create a tape");
  if (!wk->rc && !(wk->lsp = malloc((B / n + 1) * sizeof *wk->lsp)))
    wk->rc = pg_err_set(&wk->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot list the rows");
  if (wk->rc) return NULL;
  /* the owned rows as spans of the adapters (their offsets are known before the engine is) */
  wk->nlsp = 0;
  for (size_t j = k; j < B; j += n) {
    size_t off, len;
    pg_lora_row_span(wk->lo, (int)j, &off, &len);
    pg_optim_span *last = wk->nlsp ? &wk->lsp[wk->nlsp - 1] : NULL;
    if (last && last->state + last->n == off)
      last->n += len; /* one engine: every row, one span */
    else
      wk->lsp[wk->nlsp++] = (pg_optim_span){.n = len, .state = off};
  }
  return NULL;
}

/* A new batch: every row's B zeroed, A drawn (unless kept) from the generator's state at the
 * batch, which every lane starts from; the AdamW state forgotten. */
static void *lane_reset(void *arg) {
  worker *wk = arg;
  run *r = wk->r;
  pg_engine_enter(wk->e);
  pg_rng g = r->brng;
  pg_lora_reset(wk->lo, -1, &g, r->bkeep);
  pg_optim_reset(wk->opt);
  if (wk == r->wk) r->brng_next = g;
  wk->rc = PG_OK;
  return NULL;
}

/* Step bci's forward over the lane's documents that have a chunk bci, one row each (row brow[i]),
 * all rows the step's width as on one engine; on the recording tape when one of them trains. */
static void *lane_forward(void *arg) {
  worker *wk = arg;
  run *r = wk->r;
  const int C = r->p->lora_chunk, W = r->p->lora_window, width = r->bwidth;
  pg_engine_enter(wk->e);
  wk->rc = PG_OK;
  if (r->btrain) pg_lora_zero_grads(wk->lo);
  if (!wk->rows) return NULL;
  if ((wk->rc = worker_buffers(wk, wk->rows, SZ(wk->rows, width)))) return NULL;
  for (size_t i = (size_t)(wk - r->wk); i < r->bn; i += (size_t)r->nwk) {
    const doc *d = &r->bd[i];
    uint64_t ws, end, nch;
    if (!doc_chunk(d, r->bci, C, W, &ws, &end, &nch)) continue;
    const size_t row = r->brow[i];
    const uint64_t wl = end - ws;
    for (int j = 0; j < width; j++) {
      const size_t o = SZ(row, width) + (size_t)j;
      const int in = (uint64_t)j < wl;
      wk->ids[o] = in ? r->val->tok[d->start + ws + (uint64_t)j] : 0;
      wk->tg[o] = in ? r->val->tok[d->start + ws + (uint64_t)j + 1] : 0;
      wk->dnll[o] = 0;
    }
    wk->len[row] = (int)wl;
    wk->lora_rows[row] = (int)i;
  }
  pg_batch b = {.B = (int)wk->rows, .T = width, .ids = wk->ids, .targets = wk->tg,
                .len = wk->len, .lora_rows = wk->lora_rows};
  wk->rc = pg_model_forward(wk->m, wk->train ? wk->rec : wk->inf, &b, wk->lo, wk->nll, wk->dnll,
                            &wk->err);
  return NULL;
}

/* Step bci's update, after the calling thread committed its scores and set the loss weights:
 * the backward where the lane's documents train, then AdamW on the lane's rows, on the engine. */
static void *lane_step(void *arg) {
  worker *wk = arg;
  wk->rc = PG_OK;
  if (!wk->nlsp) return NULL; /* more engines than rows: this one owns none */
  pg_engine_enter(wk->e);
  if (wk->train && (wk->rc = pg_model_backward(wk->m, wk->rec, &wk->err))) return NULL;
  pg_real *P = pg_lora_params_engine(wk->lo);
  if (!P) { /* no forward has used this lane's adapters yet: none of its rows had a document */
    if ((wk->rc = pg_lora_place(wk->lo, wk->e, &wk->err))) return NULL;
    P = pg_lora_params_engine(wk->lo);
  }
  pg_real *G = pg_lora_grads_engine(wk->lo);
  for (size_t s = 0; s < wk->nlsp; s++) {
    wk->lsp[s].p = P + wk->lsp[s].state;
    wk->lsp[s].g = G + wk->lsp[s].state;
  }
  pg_optim_step(wk->opt, wk->lsp, wk->nlsp, wk->r->p->lora_lr);
  wk->rc = pg_engine_sync(wk->e, &wk->err);
  return NULL;
}

/* fn on every lane; the first lane (in engine order) that failed gives the run its error. */
static int lanes(run *r, void *(*fn)(void *)) {
  run_workers(r, fn);
  for (int i = 0; i < r->nwk; i++)
    if (r->wk[i].rc) {
      *r->err = r->wk[i].err;
      return r->wk[i].rc;
    }
  return PG_OK;
}

/* One batch of documents: per-document LoRA, score-first per chunk of predictions. Each step's
 * forward runs on the lanes; the calling thread then scores and commits the documents' targets
 * in batch order (as one engine adds them), checks and weighs the loss's targets, and the lanes
 * update their rows. */
static int lora_batch(run *r, lora_run *lr, const doc *d, size_t n) {
  const pg_protocol *p = r->p;
  const int C = p->lora_chunk, W = p->lora_window;
  r->bd = d;
  r->bn = n;
  r->bkeep = p->lora_warm_a && !lr->fresh;
  r->brng = lr->rng;
  lr->fresh = 0;
  PG_TRY(lanes(r, lane_reset));
  lr->rng = r->brng_next;
  uint64_t maxch = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t nch = (d[i].len - 1 + (uint64_t)C - 1) / (uint64_t)C;
    if (nch > maxch) maxch = nch;
  }
  for (uint64_t ci = 0; ci < maxch; ci++) {
    /* the active documents, one row each on their lane */
    for (int k = 0; k < r->nwk; k++) {
      r->wk[k].rows = 0;
      r->wk[k].train = 0;
    }
    int width = 0, any_train = 0;
    for (size_t i = 0; i < n; i++) {
      uint64_t ws, end, nch;
      if (!doc_chunk(&d[i], ci, C, W, &ws, &end, &nch)) continue;
      worker *wk = &r->wk[i % (size_t)r->nwk];
      if ((int)(end - ws) > width) width = (int)(end - ws);
      r->brow[i] = wk->rows++;
      wk->train |= ci + 1 < nch;
      any_train |= ci + 1 < nch;
    }
    r->bci = ci;
    r->bwidth = width;
    r->btrain = any_train;
    PG_TRY(lanes(r, lane_forward));
    r->res->forwards++;
    /* score, then commit, before the update below reads anything */
    for (size_t i = 0; i < n; i++) {
      uint64_t ws, end, nch;
      if (!doc_chunk(&d[i], ci, C, W, &ws, &end, &nch)) continue;
      const double *nll = r->wk[i % (size_t)r->nwk].nll + SZ(r->brow[i], width);
      for (uint64_t t = ci * (uint64_t)C; t < end; t++)
        PG_TRY(score(r, d[i].start + t, nll[t - ws]));
      commit_range(r, d[i].start + ci * (uint64_t)C, end - ci * (uint64_t)C);
    }
    if (!any_train) continue;
    /* loss: Σ over documents not at their last chunk of the mean NLL of this chunk */
    for (size_t i = 0; i < n; i++) {
      uint64_t ws, end, nch;
      if (!doc_chunk(&d[i], ci, C, W, &ws, &end, &nch) || ci + 1 >= nch) continue;
      const uint64_t cs = ci * (uint64_t)C;
      pg_real *dn = r->wk[i % (size_t)r->nwk].dnll + SZ(r->brow[i], width);
      for (uint64_t t = cs; t < end; t++) {
        PG_TRY(pg_ledger_check_update(r->ledger, (int64_t)(d[i].start + t), "LoRA update",
                                      r->err));
        dn[t - ws] = (pg_real)(1.0 / (double)(end - cs));
      }
    }
    /* the adapters' update runs on the engines, on their copies (nothing comes back) */
    PG_TRY(lanes(r, lane_step));
    r->res->train_steps++;
    r->cur.train_steps++;
  }
  return PG_OK;
}

static int run_docs(run *r) {
  const pg_protocol *p = r->p;
  const int32_t *tok = r->val->tok;
  int bos = pg_model_arch(r->m)->bos_id;
  /* _find_docs: one document per BOS; len includes the next BOS */
  if (r->N == 0 || tok[0] != bos)
    return pg_err_set(r->err, PG_E_MALFORMED, NULL, PG_NO_OFFSET,
                      "the validation stream does not start with BOS (%d): per-document "
                      "protocols need documents", bos);
  uint64_t nd = 0;
  for (uint64_t i = 0; i < r->N; i++) nd += tok[i] == bos;
  doc *d = malloc(nd * sizeof *d);
  if (!d) return FAIL(r, PG_E_NOMEM, "cannot list the documents");
  uint64_t k = 0;
  for (uint64_t i = 0; i < r->N; i++)
    if (tok[i] == bos) {
      d[k] = (doc){.start = i, .index = k};
      k++;
    }
  for (uint64_t j = 0; j < nd; j++) {
    uint64_t end = j + 1 < nd ? d[j + 1].start + 1 : r->N;
    d[j].len = end - d[j].start;
    if (d[j].len < 2) {
      uint64_t at = d[j].start;
      free(d);
      return pg_err_set(r->err, PG_E_MALFORMED, NULL, PG_NO_OFFSET,
                        "document %llu at token %llu has no target (a BOS ends the stream)",
                        (unsigned long long)j, (unsigned long long)at);
    }
  }
  r->res->documents = nd;
  /* batches of documents of similar length, the longest first (spec/records.md §4.4) */
  qsort(d, nd, sizeof *d, cmp_len);
  size_t B = (size_t)p->lora_batch_docs, nb = (nd + B - 1) / B;
  dbatch *bt = malloc((nb ? nb : 1) * sizeof *bt);
  doc *scored = malloc(nd * sizeof *scored);
  r->brow = malloc(B * sizeof *r->brow);
  lora_run lr = {.fresh = 1};
  pg_rng_seed(&lr.rng, p->seed);
  int rc = (!bt || !scored || !r->brow) ? FAIL(r, PG_E_NOMEM, "cannot plan the document batches")
                                        : PG_OK;
  for (size_t i = 0; i < nb && !rc; i++) {
    bt[i].first = i * B;
    bt[i].n = nd - i * B < B ? nd - i * B : B;
    bt[i].maxlen = d[bt[i].first + bt[i].n - 1].len;
    bt[i].index = i;
  }
  if (!rc) qsort(bt, nb, sizeof *bt, cmp_batch);
  if (!rc) rc = lanes(r, lane_init);
  /* the base stays frozen while the adapters train */
  for (size_t i = 0; i < pg_model_tensor_count(r->m); i++) pg_model_set_trainable(r->m, i, 0);
  size_t nscored = 0;
  int phase = 0;
  for (size_t q = 0; q < nb && !rc; q++) {
    const doc *bd = d + bt[q].first;
    r->cur.first = bd[0].start;
    r->cur.docs = bt[q].n;
    rc = lora_batch(r, &lr, bd, bt[q].n);
    if (!rc) rc = commit_chunk(r);
    if (rc || p->kind != PG_PROTO_TTT_PHASED) continue;
    for (size_t i = 0; i < bt[q].n; i++) scored[nscored++] = bd[i];
    while (!rc && phase < p->phases) {
      size_t boundary = (size_t)p->prefix_docs * (size_t)(phase + 1) / (size_t)p->phases;
      if (nscored < boundary || boundary == 0) break;
      /* all base parameters train on the first `boundary` scored documents */
      for (size_t i = 0; i < pg_model_tensor_count(r->m); i++) pg_model_set_trainable(r->m, i, 1);
      rc = global_sgd(r, scored, boundary);
      for (size_t i = 0; i < pg_model_tensor_count(r->m); i++) pg_model_set_trainable(r->m, i, 0);
      if (!rc && r->nwk > 1) { /* the other engines take the new weights up, as in ttt-chunk */
        r->sync_src = pg_model_params_read(r->m);
        run_workers(r, worker_sync);
      }
      lr.fresh = 1; /* the adapters are rebuilt: new A */
      phase++;
    }
  }
  for (size_t i = 0; i < pg_model_tensor_count(r->m); i++) pg_model_set_trainable(r->m, i, 1);
  free(bt);
  free(scored);
  free(d);
  return rc;
}

/* ---- entry ----------------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int pg_eval_run(pg_model *m, pg_engine *e, const pg_val *val, const pg_protocol *p,
                const pg_eval_hooks *hooks, pg_eval_result *res, pg_err *err) {
  return pg_eval_run_hooked(m, e, val, p, hooks, NULL, res, err);
}

static int eval_run(pg_model *m, pg_engine *const *es, int ne, const pg_val *val,
                    const pg_protocol *p, const pg_eval_hooks *hooks,
                    const pg_eval_test_hooks *test, pg_eval_result *res, pg_err *err);

int pg_eval_run_hooked(pg_model *m, pg_engine *e, const pg_val *val, const pg_protocol *p,
                       const pg_eval_hooks *hooks, const pg_eval_test_hooks *test,
                       pg_eval_result *res, pg_err *err) {
  return eval_run(m, &e, 1, val, p, hooks, test, res, err);
}

int pg_eval_run_on(pg_model *m, pg_engine *const *engines, int n, const pg_val *val,
                   const pg_protocol *p, const pg_eval_hooks *hooks, pg_eval_result *res,
                   pg_err *err) {
  memset(res, 0, sizeof *res);
  if (!engines || n < 1 || n > PG_ENGINES_MAX)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "engines: %d given, 1..%d allowed", n,
                      PG_ENGINES_MAX);
  for (int i = 0; i < n; i++)
    if (!engines[i]) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "engine %d is NULL", i);
  return eval_run(m, engines, n, val, p, hooks, NULL, res, err);
}

/* The workers of a run on several engines: the run's model on the first engine, a copy of its
 * parameters (at its precision) for each other one. Host memory only: each copy reaches its
 * engine at its first forward, on its worker's thread. */
static int make_workers(run *r, pg_engine *const *es, int ne) {
  if (!(r->wk = calloc((size_t)ne, sizeof *r->wk)))
    return FAIL(r, PG_E_NOMEM, "cannot allocate %d workers", ne);
  r->nwk = ne;
  pg_engine_enter(es[0]); /* the copies read the model, which may live on the first engine */
  for (int i = 0; i < ne; i++) {
    worker *wk = &r->wk[i];
    wk->r = r;
    wk->e = es[i];
    wk->m = r->m;
    if (i == 0) { /* the run's own model and tapes */
      wk->inf = r->inf;
      wk->rec = r->rec;
      continue;
    }
    PG_TRY(pg_model_create(&wk->m, pg_model_arch(r->m), r->err));
    wk->own_model = 1;
    PG_TRY(pg_model_copy_params(wk->m, r->m, r->err));
    pg_model_set_precision(wk->m, pg_model_precision(r->m));
  }
  return PG_OK;
}

static void free_workers(run *r, pg_engine *first) {
  if (!r->wk) return;
  run_workers(r, worker_free);
  pg_engine_enter(first); /* the calling thread is left on the first engine, as it came */
  free(r->wk);
  free(r->brow);
  free(r->pre);
  free(r->off);
  free(r->bstart);
}

static int eval_run(pg_model *m, pg_engine *const *es, int ne, const pg_val *val,
                    const pg_protocol *p, const pg_eval_hooks *hooks,
                    const pg_eval_test_hooks *test, pg_eval_result *res, pg_err *err) {
  pg_engine *e = es[0];
  memset(res, 0, sizeof *res);
  PG_TRY(pg_protocol_validate(p, err));
  const pg_arch *a = pg_model_arch(m);
  if (!val->tok || (!val->tables && !val->bytes))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "no validation tokens or byte counts");
  if (val->tables && val->tables->size < (uint32_t)a->vocab_size)
    return pg_err_set(err, PG_E_VOCAB, NULL, PG_NO_OFFSET,
                      "the byte tables cover %u ids, the model's vocabulary is %d",
                      val->tables->size, a->vocab_size);
  for (uint64_t i = 0; i < val->n; i++)
    if (val->tok[i] < 0 || val->tok[i] >= a->vocab_size)
      return pg_err_set(err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,
                        "validation token %llu is %d, outside the model's vocabulary of %d",
                        (unsigned long long)i, val->tok[i], a->vocab_size);
  double t0 = now_s();
  run R = {.m = m, .val = val, .p = p, .hooks = hooks, .test = test, .res = res, .err = err};
  run *r = &R;
  int L = p->kind == PG_PROTO_TTT_LORA || p->kind == PG_PROTO_TTT_PHASED ? p->lora_window
                                                                          : p->seq_len;
  r->N = p->trim ? pg_val_trim(val->n, (uint64_t)L) : val->n;
  r->T = r->N > 0 ? r->N - 1 : 0;
  r->expect = r->T;
  res->tokens = r->N;
  res->targets = r->T;
  if (r->T == 0)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "the validation stream (%llu tokens) is shorter than one window of %d",
                      (unsigned long long)val->n, L);
  /* plain scores whole windows only: untrimmed, the targets past the last one would be left
   * unscored (the single-pass check would stop the run only after scoring everything else) */
  if (p->kind == PG_PROTO_PLAIN && r->T % (uint64_t)L != 0)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "plain scores whole windows of %d: %llu targets leave %llu unscored "
                      "(trim the stream: drop --no-trim)",
                      L, (unsigned long long)r->T, (unsigned long long)(r->T % (uint64_t)L));
  int rc = pg_ledger_create(&r->ledger, r->T, p->tail_dup, err);
  if (!rc) rc = pg_tape_create(&r->inf, e, 0);
  if (!rc) rc = pg_tape_create(&r->rec, e, 1);
  const int docs = p->kind == PG_PROTO_TTT_LORA || p->kind == PG_PROTO_TTT_PHASED;
  if (!rc && (ne > 1 || docs)) rc = make_workers(r, es, ne); /* documents: lanes, even one */
  if (!rc) {
    if (docs)
      rc = run_docs(r);
    else
      rc = run_windows(r);
  }
  if (!rc && r->expect == r->T) rc = pg_ledger_check_complete(r->ledger, err);
  if (!rc && r->expect != r->T) { /* a variant that skips targets: exactly its own set */
    pg_ledger_summary ls;
    pg_ledger_summarize(r->ledger, &ls);
    if (ls.committed != r->expect)
      rc = pg_err_set(err, PG_E_ILLEGAL, NULL, PG_NO_OFFSET,
                      "%llu of the %llu targets of the %s variant were scored",
                      (unsigned long long)ls.committed, (unsigned long long)r->expect,
                      p->kind == PG_PROTO_PLAIN ? "packed" :
                      pg_sliding_variant_name(p->sliding_variant));
    res->unscored = r->T - r->expect;
  }
  if (!rc) rc = pg_bpb_result(&res->sum, &res->val_loss, &res->val_bpb, err);
  res->seconds = now_s() - t0;
  free_workers(r, e);
  free_run(r);
  if (rc) pg_eval_result_free(res);
  return rc;
}
