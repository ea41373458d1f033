/* pg_legal.c: the eight checks of pglegal on a pgolf artifact (pg_legal.h, spec/legal.md §4),
 * each run on what the artifact holds: causality and normalisation probes on its model, a replay
 * of its protocol through the score-first ledger, its byte account and the byte proof of its
 * tokenizer on the validation shards, scans of its sections for validation data, a time
 * estimate from the protocol's FLOP count, and pgverify's score on a prefix. */
#include "pg_legal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pg_account.h"
#include "pg_byteproof.h"
#include "pg_container.h"
#include "pg_eval_testing.h"
#include "pg_io.h"
#include "pg_legal_testing.h"
#include "pg_model.h"
#include "pg_protocol_text.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_tape.h"
#include "pg_verify.h"
#include "pg_weights.h"

/* The constants of spec/legal.md §4 (stated there with their reasons). */
#define L2_TOL 1e-6                /* nats: the scored NLL against -log softmax (fp64) */
#define L2_SUM_TOL 1e-9            /* |Σ p − 1| */
#define L6_TOKENS 32               /* a run of validation tokens as the shards store them */
#define L6_TEXT 64                 /* bytes of decoded validation text */
#define L6_CAP ((uint64_t)1 << 21) /* windows indexed per kind (bounded memory: 64 MiB each) */
#define L6_DOC_MIN 32              /* tokens of a document compared for train/val overlap */
#define L6_SHOWN 5                 /* matches listed per section */
#define L7_PEAK 989e12             /* FLOP/s per H100 SXM, dense bf16 */
#define L7_EFF 0.40                /* model FLOP utilisation assumed */
#define L7_GPUS 8
#define L7_LIMIT 600.0
#define L8_TOL 2e-3                /* bpb: fp32 on CPU beside a bf16 record (spec/eval.md §8) */

typedef struct lrun {
  const pg_legal_cfg *cfg;
  const pg_legal_test *test;
  pg_legal_report *r;
  pg_err *err;
  int oom;
  pg_artifact *art;
  pg_model *m;
  const pg_arch *arch;
  pg_spm *spm;
  pg_spm_tables tab;
  uint64_t tok_hash;
  int tok_from_artifact;
  pg_val_data vd;        /* the whole validation stream */
  pg_protocol p;
  char psrc[160];        /* where the protocol came from */
  char ptext[1100];
  pg_engine cpu, *e;
  uint64_t prefix;       /* validation tokens for L1-L4 and L8 */
} lrun;

/* ---- small helpers -------------------------------------------------------------------------- */

#define CHK(lr, i) (&(lr)->r->checks[(i) - 1])

static void add(lrun *lr, int i, int sev, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void add(lrun *lr, int i, int sev, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (pg_legal_add(CHK(lr, i), sev, "%s", buf)) lr->oom = 1;
}

static void ev(lrun *lr, int i, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void ev(lrun *lr, int i, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (pg_legal_evidence(CHK(lr, i), "%s", buf)) lr->oom = 1;
}

static void set(lrun *lr, int i, int verdict, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static void set(lrun *lr, int i, int verdict, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (pg_legal_set(CHK(lr, i), verdict, "%s", buf)) lr->oom = 1;
}

/* The verdict a check's findings give: finding with any illegal or warning finding, else pass. */
static int verdict_of(lrun *lr, int i) {
  const pg_legal_check *c = CHK(lr, i);
  for (size_t k = 0; k < c->nfindings; k++)
    if (c->findings[k].severity >= PG_LEGAL_WARNING) return PG_LEGAL_FINDING;
  return PG_LEGAL_PASS;
}

static int progress(lrun *lr, const char *what, uint64_t done, uint64_t total) {
  return lr->cfg->progress ? lr->cfg->progress(lr->cfg->ctx, what, done, total) : 0;
}

static int progress_l3(void *ctx, uint64_t done, uint64_t total) {
  return progress(ctx, "L3/L4 replay", done, total);
}

/* A check that could not run: ERROR with the reason. */
static void fail(lrun *lr, int i, const pg_err *e) { set(lr, i, PG_LEGAL_ERROR, "%s", e->msg); }

/* The window length the protocol's model sees. */
static int proto_window(const pg_protocol *p) {
  return p->kind == PG_PROTO_TTT_LORA || p->kind == PG_PROTO_TTT_PHASED ? p->lora_window
                                                                        : p->seq_len;
}

/* One forward of B = 1 row on an inference tape: nll[T] for targets tg; logits of the last
 * position into last (V values) when non-NULL. */
static int forward1(lrun *lr, pg_tape *tp, const int32_t *ids, const int32_t *tg, int T,
                    int rope_len, pg_real *last, double *nll) {
  pg_batch b = {.B = 1, .T = T, .ids = ids, .targets = tg, .rope_len = rope_len,
                .logits_last = last};
  pg_tape_reset(tp);
  return pg_model_forward(lr->m, tp, &b, NULL, nll, NULL, lr->err);
}

/* ---- L1 causality and L2 normalisation: probes on the model ---------------------------------- */

static int32_t perturb(int32_t x, int j, int V) {
  return (int32_t)(((int64_t)x + 1 + (j % (V - 1))) % V);
}

static int probe_causality(lrun *lr) {
  const int V = lr->arch->vocab_size, L = proto_window(&lr->p);
  const uint64_t n = lr->prefix;
  const int W = (int)(n - 1 < (uint64_t)L ? n - 1 : (uint64_t)L);
  if (W < 2) {
    set(lr, 1, PG_LEGAL_ERROR, "the validation prefix holds fewer than 3 tokens");
    set(lr, 2, PG_LEGAL_ERROR, "the validation prefix holds fewer than 3 tokens");
    return PG_OK;
  }
  const int bos = lr->arch->bos_id;
  pg_tape *tp = NULL;
  int32_t *ids = malloc((size_t)W * sizeof *ids), *tg = malloc((size_t)W * sizeof *tg);
  int32_t *pid = malloc((size_t)W * sizeof *pid), *ptg = malloc((size_t)W * sizeof *ptg);
  double *nll = malloc((size_t)W * sizeof *nll), *pn = malloc((size_t)W * sizeof *pn);
  pg_real *last = malloc((size_t)V * sizeof *last);
  int rc = PG_OK;
  if (!ids || !tg || !pid || !ptg || !nll || !pn || !last) {
    rc = pg_err_set(lr->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the probes");
    goto done;
  }
  if ((rc = pg_tape_create(&tp, lr->e, 0))) goto done;
  /* windows at the start, the middle and the end of the prefix, and one whose middle is the
   * first document boundary past W/2 (so that a boundary is probed wherever the prefix has one) */
  const uint64_t last_ws = n - 1 - (uint64_t)W;
  uint64_t cand_ws[4] = {0, last_ws / 2, last_ws, UINT64_MAX}, starts[4];
  for (uint64_t p = (uint64_t)W / 2; p + (uint64_t)W / 2 < n; p++)
    if (lr->vd.tok[p] == lr->arch->bos_id) {
      if (p - (uint64_t)W / 2 <= last_ws) cand_ws[3] = p - (uint64_t)W / 2;
      break;
    }
  int nstart = 0;
  for (int k = 0; k < 4; k++) {
    int dup = cand_ws[k] == UINT64_MAX;
    for (int q = 0; q < nstart; q++) dup |= starts[q] == cand_ws[k];
    if (!dup) starts[nstart++] = cand_ws[k];
  }
  uint64_t compared = 0, cuts = 0, doc_probes = 0, doc_compared = 0;
  int leaks = 0, doc_leaks = 0;
  for (int s = 0; s < nstart; s++) {
    const uint64_t ws = starts[s];
    for (int j = 0; j < W; j++) ids[j] = lr->vd.tok[ws + j], tg[j] = lr->vd.tok[ws + j + 1];
    if ((rc = forward1(lr, tp, ids, tg, W, L, NULL, nll))) goto done;
    /* cut points: the window's start, quarter, middle and end, and both sides of the first
     * document boundary inside it */
    int cut[8], nc = 0, b = -1;
    for (int j = 1; j < W && b < 0; j++)
      if (ids[j] == bos) b = j;
    const int cand[6] = {0, W / 4, W / 2, W - 2, b - 1, b};
    for (int k = 0; k < 6; k++) {
      int t = cand[k], dup = 0;
      if ((k >= 4 && b < 0) || t < 0 || t > W - 2) continue;
      for (int q = 0; q < nc; q++) dup |= cut[q] == t;
      if (!dup) cut[nc++] = t;
    }
    for (int k = 0; k < nc; k++) {
      const int t = cut[k];
      for (int j = 0; j < W; j++) {
        pid[j] = j > t ? perturb(ids[j], j, V) : ids[j];
        ptg[j] = j >= t ? perturb(tg[j], j + 1, V) : tg[j];
      }
      ptg[t] = tg[t]; /* the score at t is of the original next token */
      if ((rc = forward1(lr, tp, pid, ptg, W, L, NULL, pn))) goto done;
      cuts++;
      for (int j = 0; j <= t; j++) {
        compared++;
        if (memcmp(&nll[j], &pn[j], sizeof nll[j]) && leaks++ < L6_SHOWN) {
          add(lr, 1, PG_LEGAL_ILLEGAL, "the score of target %llu depends on a later token",
              (unsigned long long)(ws + (uint64_t)j));
          ev(lr, 1, "window of %d tokens at stream position %llu; tokens after offset %d "
             "changed", W, (unsigned long long)ws, t);
          ev(lr, 1, "offset %d: NLL %.17g before, %.17g after", j, nll[j], pn[j]);
        }
      }
      if (progress(lr, "L1 probes", cuts, (uint64_t)nstart * 6)) {
        rc = pg_err_set(lr->err, PG_E_ARG, NULL, PG_NO_OFFSET, "stopped");
        goto done;
      }
    }
    /* documents: with the arch's document mask, a document's scores must not depend on the
     * document before it */
    if (lr->arch->attention.doc_mask && b > 0 && b <= W - 1) {
      for (int j = 0; j < W; j++) {
        pid[j] = j < b && ids[j] != bos ? perturb(ids[j], j, V) : ids[j];
        if (pid[j] == bos && ids[j] != bos) pid[j] = perturb(pid[j], j + 7, V);
        ptg[j] = tg[j];
      }
      if ((rc = forward1(lr, tp, pid, ptg, W, L, NULL, pn))) goto done;
      doc_probes++;
      for (int j = b; j < W; j++) {
        doc_compared++;
        if (memcmp(&nll[j], &pn[j], sizeof nll[j]) && doc_leaks++ < L6_SHOWN) {
          add(lr, 1, PG_LEGAL_WARNING, "the arch masks documents, but target %llu depends on "
              "the document before it", (unsigned long long)(ws + (uint64_t)j));
          ev(lr, 1, "window at %llu: tokens before the BOS at offset %d changed; offset %d: "
             "NLL %.17g before, %.17g after", (unsigned long long)ws, b, j, nll[j], pn[j]);
        }
      }
    }
    /* L2 at four positions of this window */
    if (s == 0) {
      const int pos[4] = {0, W / 3, 2 * W / 3, W - 1};
      double worst = 0, worst_sum = 0;
      int npos = 0;
      for (int k = 0; k < 4; k++) {
        const int P = pos[k];
        if (k && P == pos[k - 1]) continue;
        npos++;
        if ((rc = forward1(lr, tp, ids, tg, P + 1, L, last, pn))) goto done;
        double mx = -INFINITY, sum = 0, psum = 0;
        for (int v = 0; v < V; v++) mx = fmax(mx, (double)last[v]);
        for (int v = 0; v < V; v++) sum += exp((double)last[v] - mx);
        const double lse = mx + log(sum);
        for (int v = 0; v < V; v++) psum += exp((double)last[v] - lse);
        const double want = lse - (double)last[tg[P]], d = fabs(pn[P] - want);
        if (d > worst || isnan(d)) worst = d;
        if (fabs(psum - 1) > worst_sum || isnan(psum)) worst_sum = fabs(psum - 1);
        if (!(d <= L2_TOL * fmax(1, fabs(want))) || !(fabs(psum - 1) <= L2_SUM_TOL)) {
          add(lr, 2, PG_LEGAL_ILLEGAL, "the score of target %llu is not -log of the model's "
              "normalised distribution", (unsigned long long)P);
          ev(lr, 2, "scored NLL %.17g; -log softmax(logits)[target] %.17g (fp64); "
             "sum of p over the vocabulary %.17g", pn[P], want, psum);
        }
      }
      add(lr, 2, PG_LEGAL_INFO, "the scored NLL is -log of a softmax over all %d tokens", V);
      ev(lr, 2, "%d positions of the window at 0: largest |NLL - (-log p)| %.3g nats "
         "(tolerance %g relative to max(1, NLL)), largest |sum p - 1| %.3g (tolerance %g)",
         npos, worst, L2_TOL, worst_sum, L2_SUM_TOL);
    }
  }
  set(lr, 2, verdict_of(lr, 2), "%s", verdict_of(lr, 2) == PG_LEGAL_PASS
      ? "every sampled score is -log of a distribution that sums to 1 over the vocabulary"
      : "a scored NLL is not -log of a normalised distribution");
  add(lr, 1, PG_LEGAL_INFO, "probes: every score up to t unchanged, bit for bit, when the "
      "tokens after t change");
  ev(lr, 1, "%d windows of %d tokens, %llu cut points (window starts and ends, quarters, both "
     "sides of a document boundary), %llu scores compared bit for bit", nstart, W,
     (unsigned long long)cuts, (unsigned long long)compared);
  ev(lr, 1, lr->arch->attention.doc_mask
     ? "document mask: %llu probes, %llu scores of a document compared with the document "
       "before it changed"
     : "the arch has no document mask: context may cross documents, which is causal "
       "(%llu probes, %llu scores)",
     (unsigned long long)doc_probes, (unsigned long long)doc_compared);
  if (leaks)
    set(lr, 1, PG_LEGAL_FINDING, "%d of %llu scores changed when only later tokens changed: "
        "the model sees the future", leaks, (unsigned long long)compared);
  else
    set(lr, 1, verdict_of(lr, 1), "%llu scores unchanged, bit for bit, under %llu changes of "
        "the later tokens%s", (unsigned long long)compared, (unsigned long long)cuts,
        doc_leaks ? "; but documents are not isolated as the arch's mask claims" : "");
done:
  pg_tape_free(tp);
  free(ids);
  free(tg);
  free(pid);
  free(ptg);
  free(nll);
  free(pn);
  free(last);
  return rc;
}

/* ---- L3 score before update and L4 single pass: the protocol replayed through the ledger ---- */

/* A prefix shorter than a packed row per rank would score nothing (spec/eval.md §3.1): one row,
 * its last window left out, so that a run on it still shows the variant's dropped targets. */
static void scale_packed(pg_protocol *p, uint64_t n, char *note, size_t cap) {
  const uint64_t S = n > 0 ? (n - 1) / (uint64_t)p->seq_len : 0;
  if (p->kind != PG_PROTO_PLAIN || p->plain_variant != PG_PLAIN_PACKED || S < 1 ||
      S / (uint64_t)p->pack_ranks >= (uint64_t)p->pack_windows)
    return;
  const int K = S > 1 ? (int)(S - 1) : 1;
  snprintf(note, cap, "pack_windows scaled from %d to %d and pack_ranks from %d to 1 so that the "
           "prefix holds a packed row (on the whole set the record's layout decides which "
           "windows are dropped)", p->pack_windows, K, p->pack_ranks);
  p->pack_windows = K;
  p->pack_ranks = 1;
}

static int replay(lrun *lr) {
  pg_protocol p = lr->p;
  const uint64_t n = lr->prefix;
  char scaled[512] = "";
  /* a prefix shorter than two chunks would make no update: scale the chunk, not the order */
  if ((p.kind == PG_PROTO_TTT_CHUNK || p.kind == PG_PROTO_TTT_PHASED) &&
      p.chunk_tokens * 2 >= n) {
    uint64_t unit = p.kind == PG_PROTO_TTT_CHUNK ? (uint64_t)p.stride : 1, C = (n - 1) / 4;
    uint64_t L = (uint64_t)p.seq_len;
    if (p.kind == PG_PROTO_TTT_CHUNK && L % unit == 0) unit = L; /* rows of L, multiple of s */
    C = C / unit * unit;
    if (C >= unit) {
      snprintf(scaled, sizeof scaled, "chunk_tokens scaled from %llu to %llu so that the "
               "prefix holds several chunks (the order of scores and updates is checked, not "
               "the figure)", (unsigned long long)p.chunk_tokens, (unsigned long long)C);
      p.chunk_tokens = C;
    }
  }
  scale_packed(&p, n, scaled, sizeof scaled);
  if (p.kind == PG_PROTO_TTT_PHASED && p.prefix_docs > 8) {
    const size_t k = strlen(scaled);
    snprintf(scaled + k, sizeof scaled - k, "%sprefix_docs scaled from %d to 8 and phases from %d "
             "to %d, so that the prefix reaches the global updates", k ? "; " : "",
             p.prefix_docs, p.phases, p.phases > 2 ? 2 : p.phases);
    p.prefix_docs = 8;
    if (p.phases > 2) p.phases = 2;
  }
  pg_model *copy = NULL;
  pg_eval_result res;
  memset(&res, 0, sizeof res);
  int rc = pg_model_create(&copy, lr->arch, lr->err);
  if (!rc) rc = pg_model_copy_params(copy, lr->m, lr->err);
  if (rc) {
    pg_model_free(copy);
    return rc;
  }
  pg_val val = {.tok = lr->vd.tok, .n = n, .tables = &lr->tab};
  pg_eval_hooks hooks = {.progress = progress_l3, .ctx = lr};
  pg_eval_test_hooks th = {0};
  if (lr->test) {
    th.inject_update_before_commit = lr->test->inject_update_before_commit;
    th.inject_double_score = lr->test->inject_double_score;
  }
  pg_err e;
  int st = pg_eval_run_hooked(copy, lr->e, &val, &p, &hooks, &th, &res, &e);
  pg_model_free(copy);
  const char *pname = pg_proto_name(p.kind);
  if (st == PG_E_ILLEGAL) {
    const int upd = strstr(e.msg, "before its score is committed") != NULL;
    add(lr, upd ? 3 : 4, PG_LEGAL_ILLEGAL, "%s", e.msg);
    ev(lr, upd ? 3 : 4, "protocol %s (%s) replayed on the first %llu validation tokens; the "
       "score-first ledger stopped it", pname, lr->psrc, (unsigned long long)n);
    if (scaled[0]) ev(lr, upd ? 3 : 4, "%s", scaled);
    set(lr, upd ? 3 : 4, PG_LEGAL_FINDING, "%s", upd ? "an update reads a target before its "
        "score is committed" : "a target is scored more than once");
    set(lr, upd ? 4 : 3, PG_LEGAL_ERROR, "the replay stopped at the %s fault (%s)",
        upd ? "L3" : "L4", upd ? "score before update" : "single pass");
    pg_eval_result_free(&res);
    return PG_OK;
  }
  if (st) {
    fail(lr, 3, &e);
    fail(lr, 4, &e);
    pg_eval_result_free(&res);
    return PG_OK;
  }
  /* L3: every update, and the targets it read */
  add(lr, 3, PG_LEGAL_INFO, "%s replayed on the first %llu validation tokens: %llu updates, "
      "each after the score of every target it reads was committed", pname,
      (unsigned long long)n, (unsigned long long)res.train_steps);
  ev(lr, 3, "protocol: %s (%s)", lr->ptext, lr->psrc);
  if (scaled[0]) ev(lr, 3, "%s", scaled);
  if (!res.train_steps) ev(lr, 3, "the protocol makes no update: scoring only, on an inference "
                           "tape (no gradient, no parameter changes)");
  size_t shown = 0;
  uint64_t committed = 0;
  for (size_t k = 0; k < res.nchunks; k++) {
    const pg_eval_chunk *c = &res.chunks[k];
    committed += c->count;
    if (!c->train_steps || shown >= 12) continue;
    shown++;
    if (p.kind == PG_PROTO_TTT_CHUNK)
      ev(lr, 3, "chunk %zu: targets [%llu, %llu) scored and committed, then %u updates reading "
         "targets inside [%llu, %llu) (committed: %llu targets so far)", k,
         (unsigned long long)c->first, (unsigned long long)(c->first + c->count), c->train_steps,
         (unsigned long long)c->first, (unsigned long long)(c->first + c->count),
         (unsigned long long)committed);
    else
      ev(lr, 3, "batch %zu: %llu documents, %llu targets scored and committed, then %u updates "
         "reading only committed targets (checked target by target by the ledger)", k,
         (unsigned long long)c->docs, (unsigned long long)c->count, c->train_steps);
  }
  if (res.masked)
    ev(lr, 3, "%llu targets left out of global updates because they were not committed yet "
       "(spec/eval.md §3.5)", (unsigned long long)res.masked);
  if (res.train_steps)
    set(lr, 3, PG_LEGAL_PASS, "%llu updates, each reading only targets whose scores were "
        "committed", (unsigned long long)res.train_steps);
  else
    set(lr, 3, PG_LEGAL_PASS, "no updates: the protocol only scores");
  /* L4 */
  const int once = res.scored == res.targets && !res.duplicates;
  if (once) {
    add(lr, 4, PG_LEGAL_INFO, "every target scored exactly once: targets == T");
  } else if (res.unscored) {
    /* skipping a target is not scoring one twice: the pass is single, but the figure is not
     * over the whole validation set, which a reviewer must weigh */
    add(lr, 4, PG_LEGAL_WARNING, "does not score every target: %llu of T = %llu targets scored, "
        "%llu never scored (the %s variant); none is scored twice", (unsigned long long)res.scored,
        (unsigned long long)res.targets, (unsigned long long)res.unscored,
        p.kind == PG_PROTO_PLAIN ? "packed plain" : pg_sliding_variant_name(p.sliding_variant));
    ev(lr, 4, "a record's own evaluation that leaves targets out (spec/eval.md §3.1, §3.2): its "
       "figure is over the targets it scores, not over the whole validation set");
    if (scaled[0]) ev(lr, 4, "%s", scaled);
  } else {
    add(lr, 4, PG_LEGAL_WARNING, "%llu targets scored a second time (the sliding tail variant, "
        "--tail-dup)", (unsigned long long)res.duplicates);
    ev(lr, 4, "the older records' variant scores the tail's L - S targets again and counts "
       "them in the figure (spec/eval.md §3.2)");
  }
  if (res.unscored)
    ev(lr, 4, "T = %llu targets, %llu scorings, 0 duplicates, ledger complete over the "
       "variant's targets (each committed once)", (unsigned long long)res.targets,
       (unsigned long long)res.scored);
  else
    ev(lr, 4, "T = %llu targets, %llu scorings, %llu duplicates, ledger complete (every target "
       "committed)", (unsigned long long)res.targets, (unsigned long long)res.scored,
       (unsigned long long)res.duplicates);
  ev(lr, 4, "one pass: each target's score is added once, in scoring order, and never replaced "
     "(no minimum or best over passes exists in the protocol)");
  set(lr, 4, verdict_of(lr, 4), once ? "targets == T: every target scored once"
      : res.unscored ? "single pass, but not every target is scored (a skipping variant)"
      : "targets scored more than once (tail variant)");
  pg_eval_result_free(&res);
  return PG_OK;
}

/* ---- L5 accounting --------------------------------------------------------------------------- */

static char *meta_str(lrun *lr, const char *key) {
  return pg_weights_meta(lr->cfg->artifact, lr->art, key);
}

static int bp_progress(void *ctx, uint64_t done, uint64_t total) {
  return progress(ctx, "L5 byte proof", done, total);
}

static int hash_file(const char *path, uint64_t *h, pg_err *err) {
  pg_map m;
  PG_TRY(pg_file_map(&m, path, err));
  *h = XXH64(m.data, m.size, 0);
  pg_file_unmap(&m);
  return PG_OK;
}

static int check_accounting(lrun *lr) {
  pg_account acc;
  pg_err e;
  const uint64_t B = lr->test && lr->test->budget ? lr->test->budget : PG_DEFAULT_BUDGET;
  if (pg_account_artifact(&acc, lr->art, B, 0, &e)) {
    fail(lr, 5, &e);
    return PG_OK;
  }
  const uint64_t with_tok = acc.counted + acc.tokenizer_stored;
  if (acc.counted > B) {
    add(lr, 5, PG_LEGAL_ILLEGAL, "%llu bytes counted, over the %llu-byte limit by %llu",
        (unsigned long long)acc.counted, (unsigned long long)B,
        (unsigned long long)(acc.counted - B));
  } else {
    add(lr, 5, PG_LEGAL_INFO, "%llu bytes counted, %lld under the %llu-byte limit",
        (unsigned long long)acc.counted, (long long)acc.headroom, (unsigned long long)B);
  }
  ev(lr, 5, "file %llu = frame %llu + code %llu (stored; %llu bytes of source) + tokenizer %llu "
     "+ the rest of the model; counted = model + code (the challenge does not count the "
     "tokenizer; with it: %llu)", (unsigned long long)acc.file_size,
     (unsigned long long)acc.frame, (unsigned long long)acc.code_stored,
     (unsigned long long)acc.code_file_bytes, (unsigned long long)acc.tokenizer_stored,
     (unsigned long long)with_tok);
  if (!pg_artifact_code_count(lr->art)) {
    add(lr, 5, PG_LEGAL_WARNING, "the artifact holds no code: the code of the submission is "
        "not counted");
    ev(lr, 5, "pack the script with pgpack --code, or count the record folder with pgsize DIR");
  }
  pg_account_free(&acc);
  /* every section decodes to the bytes its checksums name */
  if (pg_artifact_check(lr->art, &e)) {
    add(lr, 5, PG_LEGAL_ILLEGAL, "the artifact's sections are not what its table records");
    ev(lr, 5, "%s", e.msg);
  }
  /* the facts the artifact records */
  const pg_meta_entry *bud = pg_artifact_meta_find(lr->art, "budget.bytes");
  if (bud && bud->type == PG_META_I64 && bud->i64 != (int64_t)PG_DEFAULT_BUDGET) {
    add(lr, 5, bud->i64 > (int64_t)PG_DEFAULT_BUDGET ? PG_LEGAL_WARNING : PG_LEGAL_INFO,
        "the artifact was fitted to a budget of %lld bytes, not 16,000,000",
        (long long)bud->i64);
  }
  const pg_meta_entry *vs = pg_artifact_meta_find(lr->art, "tokenizer.vocab_size");
  const uint32_t pieces = pg_spm_vocab_size(lr->spm);
  if (vs && vs->type == PG_META_I64 && vs->i64 != (int64_t)pieces) {
    add(lr, 5, PG_LEGAL_ILLEGAL, "the artifact records a vocabulary of %lld but its tokenizer "
        "has %u pieces", (long long)vs->i64, pieces);
  }
  /* tokenizer identity */
  add(lr, 5, PG_LEGAL_INFO, "tokenizer: %u pieces, xxh64 %016llx (%s)", pieces,
      (unsigned long long)lr->tok_hash,
      lr->tok_from_artifact ? "the artifact's tokenizer section" : "the file given");
  if (lr->cfg->tokenizer && lr->tok_from_artifact) {
    uint64_t h;
    if (hash_file(lr->cfg->tokenizer, &h, &e)) {
      ev(lr, 5, "cannot read --tokenizer: %s", e.msg);
    } else if (h != lr->tok_hash) {
      add(lr, 5, PG_LEGAL_ILLEGAL, "the artifact's tokenizer is not the one given");
      ev(lr, 5, "section xxh64 %016llx, --tokenizer xxh64 %016llx",
         (unsigned long long)lr->tok_hash,
         (unsigned long long)h);
    } else {
      ev(lr, 5, "the tokenizer given is the artifact's, byte for byte");
    }
  }
  /* the byte tables proven on the validation shards */
  pg_byteproof bp;
  memset(&bp, 0, sizeof bp);
  if (pg_byteproof_run(lr->spm, &lr->tab, lr->vd.set, lr->cfg->val, NULL, bp_progress, lr, &bp,
                       &e)) {
    add(lr, 5, PG_LEGAL_WARNING, "the byte proof could not run: %s", e.msg);
  } else if (!bp.proven) {
    add(lr, 5, PG_LEGAL_ILLEGAL, "the byte tables miscount %llu of %llu validation targets",
        (unsigned long long)bp.token_disagreements, (unsigned long long)bp.targets);
    ev(lr, 5, "tables %llu bytes, the pieces' text %llu bytes", (unsigned long long)bp.table_bytes,
       (unsigned long long)bp.decoded_bytes);
    for (size_t k = 0; k < bp.nfirst && k < L6_SHOWN; k++)
      ev(lr, 5, "target %llu (%u after %u): %u bytes by the tables, %u by the text",
         (unsigned long long)bp.first[k].target, bp.first[k].id, bp.first[k].prev,
         bp.first[k].table, bp.first[k].decoded);
  } else {
    add(lr, 5, PG_LEGAL_INFO, "byte tables proven on all %llu validation targets (%llu bytes)",
        (unsigned long long)bp.targets, (unsigned long long)bp.table_bytes);
    if (bp.unknown_targets)
      ev(lr, 5, "%llu targets are the UNKNOWN piece", (unsigned long long)bp.unknown_targets);
  }
  const int v = verdict_of(lr, 5);
  set(lr, 5, v, v == PG_LEGAL_PASS ? "within 16,000,000 bytes with its code; byte tables proven; "
      "tokenizer identified" : "the account, the byte tables or the tokenizer is not right");
  return PG_OK;
}

/* ---- L6 provenance: validation data inside the artifact, calibration, train/val overlap ------ */

#define HBASE 0x100000001b3ull /* odd: the rolling hashes are polynomials mod 2^64 */

/* An index of windows of the validation stream: hash -> position, open addressing. */
typedef struct vindex {
  uint64_t *h, *pos; /* pos + 1; 0: empty */
  uint64_t mask, count, step;
} vindex;

static int vindex_init(vindex *x, uint64_t windows) {
  memset(x, 0, sizeof *x);
  x->step = windows > L6_CAP ? (windows + L6_CAP - 1) / L6_CAP : 1;
  uint64_t want = 2 * (windows / x->step + 1), size = 1024;
  while (size < want) size *= 2;
  x->h = calloc(size, sizeof *x->h);
  x->pos = calloc(size, sizeof *x->pos);
  x->mask = size - 1;
  return x->h && x->pos ? PG_OK : PG_E_NOMEM;
}

static void vindex_free(vindex *x) {
  free(x->h);
  free(x->pos);
}

static void vindex_put(vindex *x, uint64_t h, uint64_t pos) {
  uint64_t i = (h ^ (h >> 29)) & x->mask;
  while (x->pos[i]) i = (i + 1) & x->mask;
  x->h[i] = h;
  x->pos[i] = pos + 1;
  x->count++;
}

/* Calls found(ctx, pos) for every position stored under h until it returns non-zero. */
static int vindex_find(const vindex *x, uint64_t h, int (*found)(void *, uint64_t), void *ctx) {
  for (uint64_t i = (h ^ (h >> 29)) & x->mask; x->pos[i]; i = (i + 1) & x->mask)
    if (x->h[i] == h && found(ctx, x->pos[i] - 1)) return 1;
  return 0;
}

static uint64_t hpow(uint64_t k) {
  uint64_t p = 1;
  for (uint64_t i = 0; i + 1 < k; i++) p *= HBASE;
  return p;
}

static int distinct_at_least(const uint32_t *v, int n, int want) {
  uint32_t seen[16];
  int k = 0;
  for (int i = 0; i < n && k < want; i++) {
    int d = 1;
    for (int j = 0; j < k; j++) d &= seen[j] != v[i];
    if (d) seen[k++] = v[i];
  }
  return k >= want;
}

/* The text of piece id as decoded text: U+2581 is a space (dropped at a document's start),
 * a byte piece is its byte, control, unknown and unused pieces give nothing. */
static size_t piece_text(const pg_spm *spm, int32_t id, int doc_start, char *out, size_t cap) {
  const pg_spm_piece *p = pg_spm_piece_at(spm, (uint32_t)id);
  if (!p) return 0;
  if (p->type == PG_SPM_BYTE) {
    unsigned b;
    if (cap && sscanf(p->piece, "<0x%2X>", &b) == 1) {
      out[0] = (char)b;
      return 1;
    }
    return 0;
  }
  if (p->type != PG_SPM_NORMAL && p->type != PG_SPM_USER_DEFINED) return 0;
  size_t n = 0;
  for (uint32_t i = 0; i < p->len && n < cap;) {
    if (i + 3 <= p->len && !memcmp(p->piece + i, "\xE2\x96\x81", 3)) {
      if (!(doc_start && n == 0 && i == 0)) out[n++] = ' ';
      i += 3;
    } else {
      out[n++] = p->piece[i++];
    }
  }
  return n;
}

/* Decoded validation text from token j on, at most cap bytes, stopping at a document's end. */
static size_t val_text(const lrun *lr, uint64_t j, char *out, size_t cap) {
  size_t n = 0;
  const int bos = lr->arch->bos_id;
  for (uint64_t k = j; k < lr->vd.n && n < cap; k++) {
    if (lr->vd.tok[k] == bos) break;
    char t[256];
    size_t m = piece_text(lr->spm, lr->vd.tok[k], k == 0 || lr->vd.tok[k - 1] == bos, t,
                          sizeof t);
    if (m > cap - n) m = cap - n;
    memcpy(out + n, t, m);
    n += m;
  }
  return n;
}

typedef struct scan {
  lrun *lr;
  const char *what;       /* the section, for the evidence */
  const uint8_t *buf;
  size_t len;
  int is_code;
  /* the candidate being confirmed */
  size_t at;              /* byte offset of the window in buf */
  size_t match_len;       /* confirmed: tokens or bytes matched */
  uint64_t match_pos;     /* confirmed: validation position */
  uint64_t tok_hits, tok_tokens, text_hits, text_bytes;
  size_t shown;
} scan;

static int confirm_tokens(void *ctx, uint64_t pos) {
  scan *s = ctx;
  const lrun *lr = s->lr;
  uint32_t v[L6_TOKENS];
  for (int i = 0; i < L6_TOKENS; i++) {
    const size_t o = s->at + 2 * (size_t)i;
    v[i] = (uint32_t)s->buf[o] | (uint32_t)s->buf[o + 1] << 8;
    if ((int32_t)v[i] != lr->vd.tok[pos + (uint64_t)i]) return 0;
  }
  if (!distinct_at_least(v, L6_TOKENS, 4)) return 0;
  size_t k = L6_TOKENS;
  while (s->at + 2 * k + 1 < s->len && pos + k < lr->vd.n &&
         ((uint32_t)s->buf[s->at + 2 * k] | (uint32_t)s->buf[s->at + 2 * k + 1] << 8) ==
             (uint32_t)lr->vd.tok[pos + k])
    k++;
  s->match_len = k, s->match_pos = pos;
  return 1;
}

static int confirm_text(void *ctx, uint64_t pos) {
  scan *s = ctx;
  char t[4096];
  size_t n = val_text(s->lr, pos, t, sizeof t);
  if (n < L6_TEXT || memcmp(t, s->buf + s->at, L6_TEXT)) return 0;
  uint32_t v[L6_TEXT];
  for (int i = 0; i < L6_TEXT; i++) v[i] = (uint8_t)t[i];
  if (!distinct_at_least(v, L6_TEXT, 8)) return 0;
  size_t k = L6_TEXT;
  while (k < n && s->at + k < s->len && s->buf[s->at + k] == (uint8_t)t[k]) k++;
  s->match_len = k, s->match_pos = pos;
  return 1;
}

static void scan_buffer(scan *s, const vindex *tokx, const vindex *txtx) {
  lrun *lr = s->lr;
  const uint64_t pk = hpow(L6_TOKENS), pt = hpow(L6_TEXT);
  /* token runs, at both byte alignments */
  for (size_t a = 0; a < 2 && s->len >= a + 2 * L6_TOKENS; a++) {
    const size_t nv = (s->len - a) / 2;
    uint64_t h = 0;
    size_t skip = 0;
    for (size_t j = 0; j < nv; j++) {
      const uint64_t x = (uint64_t)s->buf[a + 2 * j] | (uint64_t)s->buf[a + 2 * j + 1] << 8;
      if (j >= L6_TOKENS) {
        const size_t o = a + 2 * (j - L6_TOKENS);
        h -= ((uint64_t)s->buf[o] | (uint64_t)s->buf[o + 1] << 8) * pk;
      }
      h = h * HBASE + x;
      if (j + 1 < L6_TOKENS || j + 1 < skip) continue;
      s->at = a + 2 * (j + 1 - L6_TOKENS);
      if (!vindex_find(tokx, h, confirm_tokens, s)) continue;
      s->tok_hits++, s->tok_tokens += s->match_len;
      skip = j + 1 - L6_TOKENS + s->match_len + L6_TOKENS;
      if (s->shown++ < L6_SHOWN) {
        add(lr, 6, PG_LEGAL_ILLEGAL, "%zu consecutive validation tokens inside %s", s->match_len,
            s->what);
        ev(lr, 6, "at byte offset %zu of the section (uint16 little-endian, as the shards store "
           "them) = validation stream positions [%llu, %llu)", s->at,
           (unsigned long long)s->match_pos, (unsigned long long)(s->match_pos + s->match_len));
      }
    }
  }
  /* decoded text */
  if (s->len < L6_TEXT) return;
  uint64_t h = 0;
  size_t skip = 0;
  for (size_t j = 0; j < s->len; j++) {
    if (j >= L6_TEXT) h -= (uint64_t)s->buf[j - L6_TEXT] * pt;
    h = h * HBASE + s->buf[j];
    if (j + 1 < L6_TEXT || j + 1 < skip) continue;
    s->at = j + 1 - L6_TEXT;
    if (!vindex_find(txtx, h, confirm_text, s)) continue;
    s->text_hits++, s->text_bytes += s->match_len;
    skip = s->at + s->match_len + L6_TEXT;
    const int sev = s->is_code && s->match_len < 256 ? PG_LEGAL_WARNING : PG_LEGAL_ILLEGAL;
    if (s->shown++ < L6_SHOWN) {
      add(lr, 6, sev, "%zu bytes of validation text inside %s", s->match_len, s->what);
      char q[81];
      size_t qn = s->match_len < 80 ? s->match_len : 80;
      for (size_t i = 0; i < qn; i++) {
        unsigned char c = s->buf[s->at + i];
        q[i] = c >= 0x20 && c < 0x7f ? (char)c : '.';
      }
      q[qn] = '\0';
      ev(lr, 6, "at byte offset %zu of the section = the decoded text of validation tokens from "
         "position %llu: \"%s%s\"", s->at, (unsigned long long)s->match_pos, q,
         s->match_len > 80 ? "..." : "");
      if (sev == PG_LEGAL_WARNING)
        ev(lr, 6, "in code and shorter than 256 bytes: it may be common text (a licence, a "
           "quotation) rather than validation data; judge it");
    }
  }
}

static int build_indexes(lrun *lr, vindex *tokx, vindex *txtx) {
  const uint64_t N = lr->vd.n;
  const uint64_t nw = N >= L6_TOKENS ? N - L6_TOKENS + 1 : 0;
  if (vindex_init(tokx, nw) || vindex_init(txtx, N))
    return pg_err_set(lr->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the L6 index");
  for (uint64_t i = 0; i < nw; i += tokx->step) {
    uint32_t v[L6_TOKENS];
    uint64_t h = 0;
    for (int k = 0; k < L6_TOKENS; k++) {
      v[k] = (uint32_t)lr->vd.tok[i + (uint64_t)k];
      h = h * HBASE + v[k];
    }
    if (distinct_at_least(v, L6_TOKENS, 4)) vindex_put(tokx, h, i);
  }
  for (uint64_t j = 0; j < N; j += txtx->step) {
    char t[L6_TEXT];
    if (val_text(lr, j, t, L6_TEXT) < L6_TEXT) continue;
    uint32_t v[L6_TEXT];
    uint64_t h = 0;
    for (int k = 0; k < L6_TEXT; k++) {
      v[k] = (uint8_t)t[k];
      h = h * HBASE + (uint8_t)t[k];
    }
    if (distinct_at_least(v, L6_TEXT, 8)) vindex_put(txtx, h, j);
  }
  return PG_OK;
}

/* Documents of the validation stream (tokens between BOS, BOS excluded) of L6_DOC_MIN tokens or
 * more, hashed as uint16 little-endian. */
static uint64_t doc_hash(const uint16_t *t, size_t n) { return XXH64(t, n * sizeof *t, 0); }

typedef struct overlap {
  lrun *lr;
  const uint16_t *doc;
  size_t n;
  uint64_t train_at;
  uint64_t docs, tokens, shown;
} overlap;

static int confirm_doc(void *ctx, uint64_t pos) {
  overlap *o = ctx;
  const lrun *lr = o->lr;
  if (pos + o->n > lr->vd.n) return 0;
  for (size_t i = 0; i < o->n; i++)
    if ((int32_t)o->doc[i] != lr->vd.tok[pos + i]) return 0;
  if (pos + o->n < lr->vd.n && lr->vd.tok[pos + o->n] != lr->arch->bos_id) return 0;
  o->docs++, o->tokens += o->n;
  if (o->shown++ < L6_SHOWN) {
    add(o->lr, 6, PG_LEGAL_ILLEGAL, "a validation document of %zu tokens is in the training "
        "shards", o->n);
    ev(o->lr, 6, "training stream position %llu = validation stream position %llu",
       (unsigned long long)o->train_at, (unsigned long long)pos);
  }
  return 1;
}

static int check_overlap(lrun *lr) {
  const int bos = lr->arch->bos_id;
  const uint64_t N = lr->vd.n;
  vindex docs;
  uint64_t ndocs = 0;
  for (uint64_t i = 0; i < N; i++) ndocs += lr->vd.tok[i] == bos;
  if (vindex_init(&docs, ndocs + 1))
    return pg_err_set(lr->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the L6 index");
  docs.step = 1;
  uint16_t *tmp = malloc((N ? N : 1) * sizeof *tmp);
  if (!tmp) {
    vindex_free(&docs);
    return pg_err_set(lr->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the L6 index");
  }
  for (uint64_t i = 0; i < N; i++) tmp[i] = (uint16_t)lr->vd.tok[i];
  uint64_t indexed = 0;
  for (uint64_t s = 0; s < N;) {
    uint64_t e = s;
    while (e < N && lr->vd.tok[e] != bos) e++;
    if (e - s >= L6_DOC_MIN) vindex_put(&docs, doc_hash(tmp + s, e - s), s), indexed++;
    s = e + 1;
  }
  free(tmp);
  pg_shard_set *set = NULL;
  pg_err e;
  if (pg_shard_set_open(&set, lr->cfg->train, &e)) {
    vindex_free(&docs);
    add(lr, 6, PG_LEGAL_WARNING, "the training shards cannot be read: %s", e.msg);
    return PG_OK;
  }
  const uint64_t T = pg_shard_set_count(set);
  overlap o = {.lr = lr};
  size_t cap = 1 << 16, dn = 0;
  uint16_t *doc = malloc(cap * sizeof *doc), *blk = malloc(((size_t)1 << 20) * sizeof *blk);
  int rc = PG_OK;
  if (!doc || !blk) rc = pg_err_set(lr->err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  uint64_t doc_start = 0;
  for (uint64_t at = 0; !rc && at <= T; at += (uint64_t)1 << 20) {
    const uint64_t n = at >= T ? 0 : T - at < ((uint64_t)1 << 20) ? T - at : (uint64_t)1 << 20;
    if (n && pg_shard_set_copy(set, at, n, blk, &e)) {
      add(lr, 6, PG_LEGAL_WARNING, "the training shards cannot be read: %s", e.msg);
      break;
    }
    for (uint64_t i = 0; i <= n; i++) {
      const int end = i == n ? at + n >= T : blk[i] == bos;
      if (i == n && !end) break;
      if (end) {
        if (dn >= L6_DOC_MIN) {
          o.doc = doc, o.n = dn, o.train_at = doc_start;
          vindex_find(&docs, doc_hash(doc, dn), confirm_doc, &o);
        }
        dn = 0;
        doc_start = at + i + 1;
        if (i == n) break;
        continue;
      }
      if (dn == cap) {
        uint16_t *d2 = cap < ((size_t)1 << 26) ? realloc(doc, 2 * cap * sizeof *d2) : NULL;
        if (!d2) { /* a document longer than 64 M tokens is not compared */
          dn = 0;
          continue;
        }
        doc = d2, cap *= 2;
      }
      doc[dn++] = blk[i];
    }
    if (progress(lr, "L6 train/val overlap", at + n, T)) break;
    if (!n) break;
  }
  add(lr, 6, PG_LEGAL_INFO, "train/validation overlap: %llu of %llu validation documents (of %d "
      "tokens or more) found in %llu training tokens", (unsigned long long)o.docs,
      (unsigned long long)indexed, L6_DOC_MIN, (unsigned long long)T);
  ev(lr, 6, "documents compared whole (XXH64 of their tokens, then token by token)");
  free(doc);
  free(blk);
  pg_shard_set_free(set);
  vindex_free(&docs);
  return rc;
}

static int check_provenance(lrun *lr) {
  vindex tokx = {0}, txtx = {0};
  int rc = build_indexes(lr, &tokx, &txtx);
  uint64_t tok_hits = 0, text_hits = 0, scanned = 0;
  pg_err e;
  for (uint32_t i = 0; !rc && i < pg_artifact_section_count(lr->art); i++) {
    const pg_section *sec = pg_artifact_section(lr->art, i);
    const uint8_t *raw;
    if (pg_artifact_section_raw(lr->art, i, &raw, &e)) {
      add(lr, 6, PG_LEGAL_WARNING, "section %u cannot be decoded: %s", i, e.msg);
      continue;
    }
    char what[PG_MAX_NAME + 64];
    snprintf(what, sizeof what, "section %u (%s)", i, pg_section_kind_name(sec->kind));
    int is_code = 0;
    for (uint32_t c = 0; c < pg_artifact_code_count(lr->art); c++) {
      const char *name;
      size_t nl;
      uint32_t cs;
      if (!pg_artifact_code(lr->art, c, &name, &nl, NULL, NULL, &cs, &e) && cs == i) {
        snprintf(what, sizeof what, "section %u (code %.*s)", i, (int)(nl < 200 ? nl : 200), name);
        is_code = 1;
      }
    }
    scan s = {.lr = lr, .what = what, .buf = raw, .len = (size_t)sec->raw_size,
              .is_code = is_code};
    scan_buffer(&s, &tokx, &txtx);
    tok_hits += s.tok_hits, text_hits += s.text_hits, scanned += sec->raw_size;
    pg_artifact_section_release(lr->art, i);
    if (progress(lr, "L6 scan", i + 1, pg_artifact_section_count(lr->art))) break;
  }
  if (!rc) {
    add(lr, 6, PG_LEGAL_INFO, "scanned %llu decoded bytes of %u sections (code, tokenizer, "
        "metadata, tensors) for validation data", (unsigned long long)scanned,
        pg_artifact_section_count(lr->art));
    ev(lr, 6, "token runs: %d consecutive validation tokens as uint16 at any byte offset; "
       "validation windows indexed every %llu positions, so any run of %llu or more is found",
       L6_TOKENS, (unsigned long long)tokx.step, (unsigned long long)(L6_TOKENS + tokx.step - 1));
    ev(lr, 6, "text: windows of %d bytes of decoded validation text starting at every %llu-th "
       "token; a copy is found when it holds one such window whole", L6_TEXT,
       (unsigned long long)txtx.step);
    ev(lr, 6, "every hash hit is confirmed against the stream itself; windows of fewer than 4 "
       "distinct tokens (8 distinct bytes) are not counted");
    ev(lr, 6, "%llu token runs and %llu text copies found", (unsigned long long)tok_hits,
       (unsigned long long)text_hits);
  }
  vindex_free(&tokx);
  vindex_free(&txtx);
  if (rc) return rc;
  /* calibration provenance */
  char *src = meta_str(lr, "provenance.calib_source");
  char *cx = meta_str(lr, "provenance.calib_xxh64");
  const pg_meta_entry *ct = pg_artifact_meta_find(lr->art, "provenance.calib_tokens");
  if (!src) {
    add(lr, 6, PG_LEGAL_WARNING, "the artifact records no calibration provenance "
        "(provenance.calib_source)");
  } else {
    int on_val = strstr(src, "fineweb_val_") != NULL;
    for (size_t k = 0; k < pg_shard_set_nfiles(lr->vd.set); k++) {
      const char *path = pg_shard_set_file(lr->vd.set, k)->path;
      const char *base = strrchr(path, '/');
      if (strstr(src, base ? base + 1 : path)) on_val = 1;
    }
    unsigned long long hx = 0;
    const int have = cx && sscanf(cx, "%16llx", &hx) == 1;
    const uint64_t want = hx;
    if (have && ct && ct->type == PG_META_I64 && ct->i64 > 0) {
      const uint64_t K = (uint64_t)ct->i64;
      /* calibration rows are the first tokens of the files a pattern matched: any file start */
      for (size_t k = 0; k < pg_shard_set_nfiles(lr->vd.set); k++) {
        const uint64_t f = pg_shard_set_file(lr->vd.set, k)->first;
        if (f + K > lr->vd.n) continue;
        uint16_t *t = malloc(K * sizeof *t);
        if (!t) break;
        for (uint64_t i = 0; i < K; i++) t[i] = (uint16_t)lr->vd.tok[f + i];
        if (XXH64(t, K * sizeof *t, 0) == want) {
          on_val = 2;
          add(lr, 6, PG_LEGAL_ILLEGAL, "the artifact was calibrated on validation tokens");
          ev(lr, 6, "provenance.calib_xxh64 %s = XXH64 of validation tokens [%llu, %llu)", cx,
             (unsigned long long)f, (unsigned long long)(f + K));
        }
        free(t);
      }
    }
    if (on_val == 1) {
      add(lr, 6, PG_LEGAL_ILLEGAL, "the calibration source names validation shards");
      ev(lr, 6, "provenance.calib_source: %.300s", src);
    } else if (!on_val) {
      add(lr, 6, PG_LEGAL_INFO, "calibration: %.300s", src);
      ev(lr, 6, cx ? "its tokens' XXH64 (%s) is not that of the validation stream at any shard "
                     "start" : "no calibration tokens hash recorded%s", cx ? cx : "");
    }
  }
  free(src);
  free(cx);
  if (lr->cfg->train) PG_TRY(check_overlap(lr));
  const int v = verdict_of(lr, 6);
  set(lr, 6, v, v == PG_LEGAL_PASS ? "no validation data inside the artifact%s" :
      "validation data inside the artifact or its training%s",
      lr->cfg->train ? "" : " (no --train: train/validation overlap not checked)");
  return PG_OK;
}

/* ---- L7 time: the protocol's FLOP count on 8 x H100 ----------------------------------------- */

/* Forward FLOPs of one token: 2 per weight of every matrix it passes through (each block's
 * matrices once per visit, the head, the embeddings' projections; lookups are free), plus the
 * attention's 4·heads·head_dim per key for ctx keys in each attention layer visited. */
static double token_flops(const lrun *lr, double ctx) {
  const pg_arch *a = lr->arch;
  double mm = 0;
  for (size_t i = 0; i < pg_model_tensor_count(lr->m); i++) {
    const pg_arch_tensor *t = pg_model_tensor(lr->m, i);
    if (t->ndim != 2 || strstr(t->name, "emb")) continue;
    int layer;
    const double n = (double)pg_arch_tensor_numel(t);
    if (sscanf(t->name, "blocks.%d.", &layer) == 1) mm += n * pg_arch_visits(a, layer);
    else mm += n;
  }
  if (pg_model_find(lr->m, "lm_head.weight") < 0) mm += (double)a->vocab_size * a->dim;
  double att = 0;
  for (int l = 0; l < a->layers; l++)
    if (pg_arch_has_attn(a, l)) att += pg_arch_visits(a, l);
  return 2 * mm + 4.0 * a->heads * a->head_dim * ctx * att;
}

static int check_time(lrun *lr) {
  const pg_protocol *p = &lr->p;
  const uint64_t N = lr->vd.available ? lr->vd.available : lr->vd.n;
  const double T = (double)(N - 1);
  const int bos = lr->arch->bos_id;
  double fwd_tokens = 0, ctx = 0, train_tokens = 0;
  const char *how = "";
  if (p->kind == PG_PROTO_PLAIN) {
    fwd_tokens = T, ctx = p->seq_len / 2.0, how = "T tokens in windows of L";
  } else if (p->kind == PG_PROTO_SLIDING || p->kind == PG_PROTO_TTT_CHUNK) {
    const double L = p->seq_len, s = p->stride;
    fwd_tokens = T / s * L, ctx = L / 2, how = "T/s windows of L tokens";
    if (p->kind == PG_PROTO_TTT_CHUNK) {
      train_tokens = T * p->epochs;
      how = "T/s windows of L tokens, plus epochs x T training tokens (forward and backward)";
    }
  } else {
    /* per document: every chunk's window, from the documents of the stream */
    const double W = p->lora_window, C = p->lora_chunk;
    double ctx_sum = 0, prefix_tokens = 0;
    uint64_t ndoc = 0;
    /* the phased global updates train on the first boundary_k documents at phase k
     * (spec/eval.md §3.5): Σ_k of their tokens, taken in stream order */
    double *first = p->kind == PG_PROTO_TTT_PHASED ? calloc((size_t)p->prefix_docs + 1,
                                                            sizeof *first) : NULL;
    for (uint64_t s0 = 0; s0 < lr->vd.n;) {
      uint64_t e = s0 + 1;
      while (e < lr->vd.n && lr->vd.tok[e] != bos) e++;
      const double len = (double)(e < lr->vd.n ? e - s0 + 1 : e - s0), pred = len - 1;
      if (first && ndoc < (uint64_t)p->prefix_docs) first[ndoc + 1] = first[ndoc] + len;
      ndoc++;
      for (double ci = 0; ci * C < pred; ci++) {
        const double end = fmin((ci + 1) * C, pred), w = fmin(end, W) + 1;
        fwd_tokens += w, ctx_sum += w * w / 2;
        if (end < pred) train_tokens += w;
      }
      s0 = e;
    }
    ctx = fwd_tokens > 0 ? ctx_sum / fwd_tokens : 0;
    if (lr->vd.n < N) { /* a prefix was read: scale to the whole set */
      const double k = (double)N / (double)lr->vd.n;
      fwd_tokens *= k, train_tokens *= k;
    }
    if (first) {
      const uint64_t have = ndoc < (uint64_t)p->prefix_docs ? ndoc : (uint64_t)p->prefix_docs;
      for (int k = 0; k < p->phases; k++) {
        uint64_t b = (uint64_t)p->prefix_docs * (uint64_t)(k + 1) / (uint64_t)p->phases;
        prefix_tokens += first[b < have ? b : have];
      }
      train_tokens += prefix_tokens * p->epochs;
      free(first);
    }
    how = "every document chunk's window (lora_window), plus the LoRA steps (forward and "
          "backward)";
  }
  const double f = token_flops(lr, ctx);
  const double total = fwd_tokens * f + 3 * train_tokens * token_flops(lr, p->seq_len / 2.0);
  const double rate = lr->test && lr->test->flops_per_s > 0 ? lr->test->flops_per_s
                                                            : L7_GPUS * L7_PEAK * L7_EFF;
  const double secs = total / rate;
  if (secs > L7_LIMIT) {
    add(lr, 7, PG_LEGAL_WARNING, "estimated eval time %.0f s on 8 x H100, over the %.0f s limit",
        secs, L7_LIMIT);
  } else {
    add(lr, 7, PG_LEGAL_INFO, "estimated eval time %.3g s on 8 x H100 (limit %.0f s)", secs,
        L7_LIMIT);
  }
  ev(lr, 7, "%s: %.4g forward tokens, %.4g training tokens, %.4g FLOPs per forward token, "
     "%.4g FLOPs in all", how, fwd_tokens, train_tokens, f, total);
  ev(lr, 7, "assumed: %d GPUs x %.0f TFLOP/s (H100 SXM dense bf16 peak) x %.0f%% utilisation = "
     "%.4g FLOP/s; training counts 3x forward", L7_GPUS, L7_PEAK / 1e12, L7_EFF * 100, rate);
  ev(lr, 7, "for the %llu tokens of the validation set given (%s)", (unsigned long long)N,
     lr->cfg->val);
  set(lr, 7, verdict_of(lr, 7), "about %.3g s of the %.0f s (an estimate, assumptions stated)",
      secs, L7_LIMIT);
  return PG_OK;
}

/* ---- L8 reproduction ------------------------------------------------------------------------- */

static int read_protocol_cb(void *ctx, const char *text, pg_protocol *p) {
  (void)ctx;
  return pg_protocol_from_text(text, p);
}

static int l8_progress(void *ctx, uint64_t done, uint64_t total) {
  return progress(ctx, "L8 score", done, total);
}

static int check_reproduction(lrun *lr) {
  pg_protocol p = lr->p;
  char scaled[512] = "";
  scale_packed(&p, lr->prefix, scaled, sizeof scaled);
  pg_verify_cfg vc = {.weights = lr->cfg->artifact, .tokenizer = lr->tok_from_artifact ? NULL
                                                                  : lr->cfg->tokenizer,
                      .val = lr->cfg->val, .max_tokens = lr->prefix, .protocol = p,
                      .engine = lr->e, .threads = lr->cfg->threads,
                      .read_protocol = read_protocol_cb, .progress = l8_progress, .ctx = lr};
  pg_verify_result v;
  pg_err e;
  if (pg_verify_run(&vc, &v, &e)) {
    fail(lr, 8, &e);
    pg_verify_result_free(&v);
    return PG_OK;
  }
  const double bpb = v.eval.val_bpb;
  const int full = v.tokens_read >= v.tokens_available;
  double claim = 0;
  const char *src = NULL;
  if (lr->r->has_claim) claim = lr->r->claimed_bpb, src = "submission.json";
  else if (lr->arch->follows.set && lr->arch->follows.val_bpb > 0)
    claim = lr->arch->follows.val_bpb, src = "the arch's follows.val_bpb";
  add(lr, 8, PG_LEGAL_INFO, "pgverify's legal score: val_bpb %.8f on %s %llu validation tokens",
      bpb, full ? "all" : "the first", (unsigned long long)v.tokens_read);
  if (v.eval.unscored)
    ev(lr, 8, "protocol %s (%s); val_loss %.8f over %llu of %llu targets (the variant never "
       "scores %llu; L4)", pg_proto_name(lr->p.kind), lr->psrc, v.eval.val_loss,
       (unsigned long long)v.eval.scored, (unsigned long long)v.eval.targets,
       (unsigned long long)v.eval.unscored);
  if (scaled[0]) ev(lr, 8, "%s", scaled);
  else
    ev(lr, 8, "protocol %s (%s); val_loss %.8f, %llu targets, every one scored once by the "
       "ledger", pg_proto_name(lr->p.kind), lr->psrc, v.eval.val_loss,
       (unsigned long long)v.eval.targets);
  if (src) {
    ev(lr, 8, "claimed val_bpb %.8f (%s); difference %+.3e", claim, src, bpb - claim);
    if (full && fabs(bpb - claim) > L8_TOL) {
      add(lr, 8, PG_LEGAL_WARNING, "the score on the whole validation set differs from the "
          "claim by %.3e bpb (tolerance %g)", bpb - claim, L8_TOL);
    } else if (!full) {
      ev(lr, 8, "a prefix score is not the claim's figure; run with --tokens 0 (all) on GPUs to "
         "compare the two");
    }
  } else {
    ev(lr, 8, "no claimed score is known (no submission.json, no follows.val_bpb)");
  }
  if (src)
    set(lr, 8, verdict_of(lr, 8), "val_bpb %.6f on %s, claimed %.6f", bpb,
        full ? "the whole set" : "a prefix", claim);
  else
    set(lr, 8, verdict_of(lr, 8), "val_bpb %.6f on %s, no claim known", bpb,
        full ? "the whole set" : "a prefix");
  pg_verify_result_free(&v);
  return PG_OK;
}

/* ---- the run --------------------------------------------------------------------------------- */

static int open_inputs(lrun *lr) {
  const pg_legal_cfg *c = lr->cfg;
  int is_art = 0;
  PG_TRY(pg_weights_is_artifact(c->artifact, &is_art, lr->err));
  if (!is_art)
    return pg_err_set(lr->err, PG_E_MAGIC, c->artifact, 0, "not a pgolf artifact");
  PG_TRY(pg_weights_load(&lr->m, &lr->art, c->artifact, 1, NULL, lr->err));
  lr->arch = pg_model_arch(lr->m);
  /* the tokenizer: the artifact's own, else the one given */
  const int64_t ts = pg_artifact_tokenizer_section(lr->art);
  if (ts >= 0) {
    const pg_section *sec = pg_artifact_section(lr->art, (uint32_t)ts);
    if (sec->raw_size > PG_SPM_MAX_FILE)
      return pg_err_set(lr->err, PG_E_LIMIT, c->artifact, sec->offset,
                        "tokenizer section of %llu bytes, limit %zu",
                        (unsigned long long)sec->raw_size, PG_SPM_MAX_FILE);
    const uint8_t *raw;
    PG_TRY(pg_artifact_section_raw(lr->art, (uint32_t)ts, &raw, lr->err));
    lr->tok_hash = XXH64(raw, (size_t)sec->raw_size, 0);
    char name[4200];
    snprintf(name, sizeof name, "%s (tokenizer section)", c->artifact);
    PG_TRY(pg_spm_open_mem(&lr->spm, raw, (size_t)sec->raw_size, name, lr->err));
    pg_artifact_section_release(lr->art, (uint32_t)ts);
    lr->tok_from_artifact = 1;
  } else if (c->tokenizer) {
    PG_TRY(hash_file(c->tokenizer, &lr->tok_hash, lr->err));
    PG_TRY(pg_spm_open_file(&lr->spm, c->tokenizer, lr->err));
  } else {
    return pg_err_set(lr->err, PG_E_NOT_FOUND, c->artifact, PG_NO_OFFSET,
                      "no tokenizer section; pass --tokenizer FILE.model");
  }
  if (pg_spm_vocab_size(lr->spm) != (uint32_t)lr->arch->vocab_size)
    return pg_err_set(lr->err, PG_E_VOCAB, pg_spm_name(lr->spm), PG_NO_OFFSET,
                      "the tokenizer has %u pieces but the arch's vocabulary is %d",
                      pg_spm_vocab_size(lr->spm), lr->arch->vocab_size);
  PG_TRY(pg_spm_tables_build(&lr->tab, lr->spm, (uint32_t)lr->arch->vocab_size, 0, lr->err));
  if (lr->test && lr->test->mutate_tables) lr->test->mutate_tables(lr->test->ctx, &lr->tab);
  PG_TRY(pg_val_data_open(&lr->vd, c->val, NULL, (uint32_t)lr->arch->vocab_size, 0, lr->err));
  /* the protocol: given, else the artifact's recorded one, else the arch's record's, else the
   * default of pgverify */
  char *rec = c->protocol ? NULL : meta_str(lr, "provenance.protocol");
  const char *text = c->protocol ? c->protocol
                     : rec       ? rec
                     : lr->arch->follows.set && lr->arch->follows.protocol[0]
                         ? lr->arch->follows.protocol
                         : "--protocol sliding";
  snprintf(lr->psrc, sizeof lr->psrc, "%s",
           c->protocol ? "--protocol given"
           : rec       ? "the artifact's provenance.protocol"
           : strcmp(text, "--protocol sliding") ? "the arch's follows.protocol"
                                                : "no protocol recorded: pgverify's default");
  snprintf(lr->ptext, sizeof lr->ptext, "%s", text);
  const int bad = pg_protocol_from_text(text, &lr->p);
  free(rec);
  if (bad)
    return pg_err_set(lr->err, PG_E_ARG, c->artifact, PG_NO_OFFSET,
                      "the protocol \"%.300s\" (%s) does not read as pgverify options", text,
                      lr->psrc);
  /* the prefix of L1-L4 and L8: --tokens, else four windows of the protocol */
  const uint64_t L = (uint64_t)proto_window(&lr->p);
  uint64_t want = c->tokens ? c->tokens : 4 * L + 1;
  lr->prefix = want < lr->vd.n ? want : lr->vd.n;
  return PG_OK;
}

int pg_legal_run_hooked(const pg_legal_cfg *cfg, const pg_legal_test *test, pg_legal_report *r,
                        pg_err *err) {
  lrun lr;
  memset(&lr, 0, sizeof lr);
  lr.cfg = cfg, lr.test = test, lr.r = r, lr.err = err;
  lr.cpu = pg_engine_cpu(cfg->threads);
  lr.e = cfg->engine ? cfg->engine : &lr.cpu;
  int rc = open_inputs(&lr);
  if (!rc) rc = probe_causality(&lr);
  if (!rc) rc = replay(&lr);
  if (!rc) rc = check_accounting(&lr);
  if (!rc) rc = check_provenance(&lr);
  if (!rc) rc = check_time(&lr);
  if (!rc) rc = check_reproduction(&lr);
  if (!rc && lr.oom) rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  if (rc)
    for (int i = 1; i <= PG_LEGAL_NCHECKS; i++)
      if (!strcmp(CHK(&lr, i)->summary, "not run") || CHK(&lr, i)->verdict == PG_LEGAL_SKIP)
        set(&lr, i, PG_LEGAL_ERROR, "not checked: %s", err->msg);
  pg_val_data_free(&lr.vd);
  pg_spm_tables_free(&lr.tab);
  pg_spm_free(lr.spm);
  pg_model_free(lr.m);
  pg_artifact_free(lr.art);
  return rc;
}

int pg_legal_run(const pg_legal_cfg *cfg, pg_legal_report *r, pg_err *err) {
  return pg_legal_run_hooked(cfg, NULL, r, err);
}
