/* pg_eval.h: the evaluation protocols of the records, run on a model over validation tokens:
 * plain non-overlapping windows, the sliding window (the exact partition, and the older records'
 * variant that scores a tail twice, flagged), the records' own variants that leave targets
 * unscored (sliding last-s and gap, packed plain rows; flagged), score-first chunked TTT (SGD
 * with momentum or AdamW), per-document LoRA TTT, and phased TTT (per-document LoRA plus global
 * SGD on already scored documents), defined deterministically. spec/eval.md is the normative
 * description.
 *
 * Legality is structural. A ledger holds one byte per target position (a committed flag and a
 * score count). Scoring runs on an inference tape (no gradient can flow from it) and its sums are
 * committed, chunk by chunk, into the result and the ledger before any update may use them; an
 * update whose loss weighs a target that is not yet committed stops the run with PG_E_ILLEGAL; a
 * target scored twice is PG_E_ILLEGAL too, except in the sliding-window tail variant, which
 * counts its duplicates. */
#ifndef PG_EVAL_H
#define PG_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "pg_bpb.h"
#include "pg_model.h"
#include "pg_engine.h"
#include "pg_optim.h"
#include "pg_spm.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most chunks one run commits: its receipt (7 values a chunk, spec/eval.md §7) then stays well
 * inside the receipt reader's cap of 1,048,576 values. */
#define PG_EVAL_MAX_CHUNKS 65536u

enum pg_proto_kind {
  PG_PROTO_PLAIN = 1,
  PG_PROTO_SLIDING = 2,
  PG_PROTO_TTT_CHUNK = 3,
  PG_PROTO_TTT_LORA = 4,
  PG_PROTO_TTT_PHASED = 5
};
/* "plain", "sliding", "ttt-chunk", "ttt-lora", "ttt-phased"; NULL otherwise. */
const char *pg_proto_name(int kind);
int pg_proto_parse(const char *s);

/* The sliding protocol's window placement (spec/eval.md §3.2). STANDARD is the exact partition
 * (or the tail variant with tail_dup); the other two are early records' code, which leave
 * targets unscored: LAST_S scores the last s targets of windows at 0, s, 2s, … (the first L − s
 * targets and a tail shorter than s are never scored); GAP scores the whole first window, then
 * windows at L − s, L, L + s, … score their last s (L − 2s targets after the first window are
 * never scored). */
enum pg_sliding_variant { PG_SLIDE_STANDARD = 0, PG_SLIDE_LAST_S = 1, PG_SLIDE_GAP = 2 };
/* The plain protocol's rows (spec/eval.md §3.1): one window per row, or PACKED, the 2026-04
 * records' eval_val: pack_windows windows per row, split over pack_ranks ranks whose last
 * partial row is dropped; attention is cut only by the arch's document mask. */
enum pg_plain_variant { PG_PLAIN_WINDOWS = 0, PG_PLAIN_PACKED = 1 };
/* "standard", "last-s", "gap" / "windows", "packed"; NULL (-1) otherwise. */
const char *pg_sliding_variant_name(int v);
int pg_sliding_variant_parse(const char *s);
const char *pg_plain_variant_name(int v);
int pg_plain_variant_parse(const char *s);

/* Every parameter of a run (spec/eval.md §3). pg_protocol_defaults fills the records' values. */
typedef struct pg_protocol {
  int kind;
  int seq_len;       /* L: plain windows, sliding windows, TTT training rows */
  int stride;        /* sliding (and chunked TTT) stride s */
  int tail_dup;      /* sliding variant A (SW/LEAKY): the tail's L − s targets scored again */
  int sliding_variant; /* enum pg_sliding_variant: the early records' windows that skip targets */
  int plain_variant;   /* enum pg_plain_variant: the 2026-04 records' packed eval_val */
  int pack_windows;    /* packed plain: windows of L per row (the records' local batch) */
  int pack_ranks;      /* packed plain: ranks the windows are split over (each drops its rest) */
  int trim;          /* keep ((n − 1) / L)·L + 1 tokens, as load_validation_tokens does */
  int batch;         /* windows (or documents) per forward when scoring; no effect on results */
  uint64_t report_tokens; /* plain/sliding: targets per reported chunk (a multiple of stride) */
  /* chunked TTT (ttt-chunk) and the global SGD of ttt-phased */
  uint64_t chunk_tokens;  /* C */
  int opt;                /* enum pg_optim_kind */
  double lr, momentum, beta1, beta2, eps, weight_decay;
  int epochs;
  double clip;            /* global gradient norm; 0 = none */
  int batch_rows;         /* training rows per step */
  int freeze_blocks;      /* blocks.{i} with i < k are not trained */
  /* per-document LoRA (ttt-lora, ttt-phased) */
  int lora_rank;
  double lora_alpha;
  unsigned lora_targets;  /* PG_LORA_* */
  int lora_chunk;         /* predictions per document chunk */
  int lora_window;        /* context window of a document chunk */
  int lora_batch_docs;    /* documents per batch (the adapters' rows) */
  double lora_lr, lora_beta1, lora_beta2, lora_eps, lora_wd;
  int lora_warm_a;        /* keep A between batches (only B is zeroed) */
  uint64_t seed;          /* LoRA A initialization */
  /* phased: global SGD on the first prefix_docs scored documents, in `phases` steps */
  int phases;
  int prefix_docs;
} pg_protocol;

/* The defaults of kind (spec/eval.md §3): the records' values at their sizes. */
void pg_protocol_defaults(pg_protocol *p, int kind);
/* Check p (PG_E_ARG naming the first bad parameter). */
int pg_protocol_validate(const pg_protocol *p, pg_err *err);

/* The validation stream: n tokens; the bytes of the target at position i+1 come from the tables
 * (pair (tok[i], tok[i+1])) or from a sidecar aligned with the tokens (bytes[i+1]). */
typedef struct pg_val {
  const int32_t *tok;
  uint64_t n;
  const pg_spm_tables *tables;
  const uint16_t *bytes;
} pg_val;

/* The committed sums of one chunk (a range of target positions, or a document batch). */
typedef struct pg_eval_chunk {
  uint64_t first, count; /* first target position, targets scored (by chunk protocols) */
  double nats, bytes;    /* fp64 sums of this chunk's targets */
  uint64_t docs;         /* documents (LoRA protocols) */
  uint32_t train_steps;  /* updates made after it was committed */
} pg_eval_chunk;

typedef struct pg_eval_result {
  pg_bpb sum;             /* the three fp64 sums, in scoring order */
  double val_loss, val_bpb;
  uint64_t tokens;        /* tokens of the stream after trimming (N) */
  uint64_t targets;       /* T = N − 1: every target scored once when tokens == T below */
  uint64_t scored;        /* targets scored (T, plus duplicates in the tail variant) */
  uint64_t duplicates;    /* tail variant only */
  uint64_t unscored;      /* targets never scored: the variants last-s, gap and packed only */
  uint64_t windows, documents, forwards, train_steps;
  uint64_t masked;        /* phased: global-SGD targets left out because they were never scored */
  pg_eval_chunk *chunks;  /* malloc'd */
  size_t nchunks;
  double seconds;
} pg_eval_result;
void pg_eval_result_free(pg_eval_result *r);

/* Optional callbacks. on_commit runs right after a chunk's sums are committed and before any
 * update may use its targets; progress reports targets committed out of the total. A non-zero
 * return from either stops the run with PG_E_ARG. (The seams the tests use to alter scored
 * tokens and to inject an illegal update are in pg_eval_testing.h, not here.) */
typedef struct pg_eval_hooks {
  int (*on_commit)(void *ctx, size_t chunk, const pg_eval_chunk *c);
  int (*progress)(void *ctx, uint64_t done, uint64_t total);
  void *ctx;
  /* Each target as it is scored, in the order its loss joins the sums (so adding the nll values
   * in call order gives sum.nats bit for bit): its index in the stream, its NLL in nats, its
   * bytes, and 1 when it was scored before (the tail variant's duplicates). Nonzero stops the
   * run. It gets score_ctx, not ctx. */
  int (*on_score)(void *score_ctx, uint64_t target, double nll, uint32_t bytes, int duplicate);
  void *score_ctx;
} pg_eval_hooks;

/* Run protocol p of model m on val with the engine e. The TTT protocols change m's parameters
 * (pass a copy to keep the original). */
int pg_eval_run(pg_model *m, pg_engine *e, const pg_val *val, const pg_protocol *p,
                const pg_eval_hooks *hooks, pg_eval_result *res, pg_err *err);

/* pg_eval_run on n engines (spec/eval.md §8.1): m runs on engines[0] and a copy of its
 * parameters, at its precision, on each other engine, one host thread per engine. Plain,
 * sliding and each chunk of ttt-chunk split their windows across the engines in whole batches
 * (the batches one engine would run) and add the per-window losses on the calling thread in the
 * protocol's order; ttt-chunk's update runs on engines[0] after the chunk is committed and the
 * other engines copy the new weights before scoring the next chunk. ttt-lora and ttt-phased split
 * each batch's documents by adapter row (row j on engine j mod n, every engine taking every step
 * of the batch on its rows), add and commit the losses on the calling thread in batch order, and
 * run the phases' global update on engines[0], the others copying its weights. So the result is
 * pg_eval_run's on one engine of the kind, bit for bit, for any n (where the engine's products
 * do not depend on the batch's shape). The hooks run on the calling thread, which is left on
 * engines[0] (pg_engine_enter). n = 1 is pg_eval_run. */
int pg_eval_run_on(pg_model *m, pg_engine *const *engines, int n, const pg_val *val,
                   const pg_protocol *p, const pg_eval_hooks *hooks, pg_eval_result *res,
                   pg_err *err);

/* Windows of the sliding protocol over T targets: start ws, first scored offset lo, length wlen
 * (spec/eval.md §3.2; what a checker recomputes to see which targets a run scored). Returns the
 * count; *out is malloc'd (NULL when none). */
typedef struct pg_window {
  uint64_t ws;
  uint32_t lo, wlen;
} pg_window;
int pg_sliding_windows(uint64_t T, int L, int s, int tail_dup, pg_window **out, size_t *n,
                       pg_err *err);
/* The windows of any sliding variant (p's seq_len, stride, tail_dup, sliding_variant) or of the
 * packed plain variant (one "window" per packed row, pack_windows·L long), over T targets; the
 * other protocols give PG_E_ARG. */
int pg_protocol_windows(const pg_protocol *p, uint64_t T, pg_window **out, size_t *n,
                        pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
