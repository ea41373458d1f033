/* pg_verify.h: one verification run, what pgverify does between its options and its report
 * (spec/eval.md, spec/cli.md): open the weights (an artifact, or safetensors with a tokenizer),
 * load the model its arch describes, read the tokenizer's byte tables (or a CaseOps byte sidecar)
 * and the validation shards, work out the provenance of the figure (spec/eval.md §7.1: what the
 * weights cannot show, and whether the protocol is the record's), run one evaluation protocol
 * (and with bf16 the fp32 run beside it), and build the receipt (pg_receipt.h), written when a
 * path is given. A legality checker or another front end calls this instead of the tool.
 *
 * Nothing here prints: warnings, the start of the run and progress go through callbacks. */
#ifndef PG_VERIFY_H
#define PG_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_receipt.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest list of devices a run records (several engines). */
#define PG_VERIFY_DEVICES_MAX 4096

/* What the run is about to do, given to on_start once the inputs are open. */
typedef struct pg_verify_start {
  const pg_protocol *protocol;
  uint64_t tokens;     /* validation tokens read */
  int threads;         /* the engine's threads */
  const pg_engine_info *engine; /* the engine that runs it (the first of several) */
  int nengines;        /* engines sharing the windows (cfg.nengines, at least 1) */
  const char *devices; /* every engine's devices, "; " between engines */
  int precision;       /* pg_precision */
  int fp32_figure;     /* the fp32 run follows the bf16 one */
} pg_verify_start;

typedef struct pg_verify_cfg {
  const char *weights;   /* an artifact, or safetensors weights (then tokenizer is required) */
  const char *arch;      /* an arch JSON file; NULL: the weights' own "arch.json" */
  const pg_arch *arch_given; /* instead of arch: an arch struct (a preset's), named in the
                                provenance by arch_label ("--preset NAME") */
  const char *arch_label;
  const char *tokenizer; /* a SentencePiece .model; NULL: the artifact's tokenizer section */
  const char *val;       /* validation shard pattern (files named *_bytes_* skipped) */
  const char *bytes;     /* CaseOps byte sidecar pattern; NULL: the tokenizer's byte tables */
  uint64_t max_tokens;   /* only the first N validation tokens; 0: all */
  pg_protocol protocol;  /* validated by the caller (pg_protocol_validate) */
  int precision;         /* pg_precision */
  int fp32_figure;       /* with bf16: also run fp32, on its own copy of the weights */
  pg_engine *engine;     /* where the protocol runs (pg_engine_open); NULL: the CPU engine */
  /* Several engines (pg_engine_open_many; nengines > 1 replaces engine): every protocol shares
   * its windows (or each batch's documents) among them with the same result bits
   * (pg_eval_run_on). The calling thread is left on engines[0]. */
  pg_engine *const *engines;
  int nengines;
  int threads;           /* CPU threads (0: all online; results do not depend on it) */
  const char *receipt;   /* where the receipt is written; NULL: built, not written */
  const char *per_token; /* where the run's per-target file is written (pg_pertoken.h, the run at
                            `precision` only); NULL: none */
  const char *version;   /* the writer's version for the receipt (NULL: PG_VERSION) */
  /* The record's protocol, as text in the front end's own option syntax (an arch's
   * follows.protocol or the weights' provenance.protocol), read into *p: 0 when it reads and
   * validates. NULL: no record protocol can be read (a warning says so). */
  int (*read_protocol)(void *ctx, const char *text, pg_protocol *p);
  /* Events (each may be NULL). on_warning gets each provenance warning as it arises (the first
   * two also go into the receipt); on_phase runs before each evaluation with "bf16" or "fp32"
   * when there are two, else NULL; progress is pg_eval_hooks' progress. */
  void (*on_start)(void *ctx, const pg_verify_start *s);
  void (*on_warning)(void *ctx, const char *text);
  void (*on_phase)(void *ctx, const char *what);
  int (*progress)(void *ctx, uint64_t done, uint64_t total);
  void *ctx;
} pg_verify_cfg;

typedef struct pg_verify_result {
  pg_arch arch;                  /* the model's arch */
  int safetensors;               /* the weights were a safetensors file */
  uint64_t weights_bytes, weights_xxh64;
  uint64_t tokens_read, tokens_available;
  int threads;                   /* the engine's threads */
  pg_engine_info engine;         /* what computed the result (the first engine of several) */
  int nengines;                  /* engines that shared the windows */
  char devices[PG_VERIFY_DEVICES_MAX]; /* every engine's devices, "; " between engines */
  pg_eval_result eval;           /* the run at cfg->precision */
  pg_eval_result eval_fp32;      /* with fp32_figure: the fp32 run */
  int has_fp32;
  /* provenance (spec/eval.md §7.1) */
  int matches_record;            /* 1, 0, or −1: no record protocol to compare with */
  int record_protocol_from_weights; /* the record's protocol is the weights' provenance.protocol
                                       (else the arch's follows.protocol) */
  char unchecked[4096];          /* "k=v, k=v": the arch's settings the weights cannot show */
  char *receipt_json;            /* the receipt (malloc'd) */
} pg_verify_result;

/* Run it; *res is filled (free it with pg_verify_result_free, also after a failure). */
int pg_verify_run(const pg_verify_cfg *cfg, pg_verify_result *res, pg_err *err);
void pg_verify_result_free(pg_verify_result *res);

#ifdef __cplusplus
}
#endif
#endif
