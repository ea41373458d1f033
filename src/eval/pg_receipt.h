/* pg_receipt.h: the JSON receipt of an evaluation (spec/eval.md §7), built from structured inputs
 * and written atomically, and read back into a struct with every field checked. pgverify writes
 * receipts with it; a legality checker reads them with it.
 *
 * The reader takes outside bytes: a file of at most PG_RECEIPT_MAX_FILE bytes, JSON of the shape
 * the writer makes (types, ranges, 16-digit hashes, chunk rows of six numbers), refused with one
 * error naming the file and the first fault (PG_E_JSON for malformed JSON, PG_E_MALFORMED for a
 * field of the wrong type or value, PG_E_VERSION for an unknown receipt_format, PG_E_LIMIT). */
#ifndef PG_RECEIPT_H
#define PG_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_RECEIPT_FORMAT 1
#define PG_RECEIPT_MAX_FILE ((size_t)64 << 20)
#define PG_RECEIPT_MAX_FILES 100000u  /* validation shards listed */
/* JSON values in a receipt, keys counted (spec/eval.md §7): 7 per chunk and per file listed, and
 * about 350 besides */
#define PG_RECEIPT_MAX_VALUES ((uint64_t)1 << 20)
#define PG_RECEIPT_MAX_WARNINGS 1000u

/* One validation shard: its path, tokens and xxh64 of its bytes. */
typedef struct pg_receipt_shard {
  const char *path;
  uint64_t tokens, xxh64;
} pg_receipt_shard;

/* What the weights cannot show and how the protocol compares with the record's (§7.1). */
typedef struct pg_receipt_provenance {
  const char *arch_source;            /* where the arch came from */
  const char *arch_follows;           /* the record the arch follows; NULL: none */
  const char *weights_record;         /* the weights' provenance.record; NULL: none */
  const char *not_fixed_json;         /* a JSON object of the arch's unchecked settings */
  const char *record_protocol;        /* the record's protocol text; NULL: none */
  const char *record_protocol_source; /* where it came from; NULL when record_protocol is */
  int matches_record;                 /* 1, 0, or −1: unknown (null) */
  const char *differences;            /* with matches_record 0 */
  const char *const *warnings;
  size_t nwarnings;
} pg_receipt_provenance;

/* Everything a receipt states. result_fp32 is the fp32 figure beside a bf16 run (NULL: none). */
typedef struct pg_receipt_in {
  const char *version;                /* of the tool */
  const char *artifact_path;
  int safetensors;                    /* the weights are a safetensors file, not an artifact */
  uint64_t artifact_bytes, artifact_xxh64;
  const pg_arch *arch;
  const char *tokenizer_source;       /* a .model path, or "artifact" */
  uint32_t tokenizer_pieces;
  uint64_t tokenizer_xxh64;
  const char *val_pattern;
  const pg_receipt_shard *shards;
  size_t nshards;
  uint64_t tokens_available, tokens_read;
  const char *bytes_pattern;          /* CaseOps byte sidecar shards; NULL: the byte tables */
  const pg_protocol *protocol;
  const pg_receipt_provenance *provenance;
  const pg_eval_result *result, *result_fp32;
  const char *engine;                 /* "cpu", "cuda" */
  const char *devices;                /* what ran it: "cpu: 2 threads", a GPU's name; NULL: "" */
  const char *driver;                 /* the GPU driver and runtime; NULL or "": none (the CPU) */
  int threads;
  int precision;                      /* pg_precision */
  const char *compiler;               /* NULL: not stated */
  double seconds_total;
} pg_receipt_in;

/* The receipt text (indented JSON, ASCII, ending in a newline), malloc'd into *text. */
int pg_receipt_build(const pg_receipt_in *in, char **text, pg_err *err);
/* Write text to path through a temporary file and a rename. */
int pg_receipt_write(const char *path, const char *text, pg_err *err);

/* Where protocol `used` differs from a record's protocol `rec`, parameter by parameter in the
 * receipt's names ("lr 0.002 (the record's: 0.005), ..."; batch and report_tokens change no
 * figure). Returns the number of differences (0: they agree); buf is cut at cap. */
int pg_receipt_protocol_diff(const pg_protocol *used, const pg_protocol *rec, char *buf,
                             size_t cap);

/* A receipt read back. Strings and arrays are malloc'd (pg_receipt_free). */
typedef struct pg_receipt {
  int format;
  char *version;
  char *artifact_path;
  int safetensors;
  uint64_t artifact_bytes, artifact_xxh64;
  char *arch_json; /* the arch object as this build reads it (canonical), compact JSON text */
  char *tokenizer_source;
  uint32_t tokenizer_pieces;
  uint64_t tokenizer_xxh64;
  char *val_pattern;
  pg_receipt_shard *shards;           /* paths malloc'd */
  size_t nshards;
  uint64_t tokens_available, tokens_read;
  int partial, sidecar;
  char *bytes_pattern;                /* NULL: the byte tables */
  pg_protocol protocol;               /* its kind's defaults, then the fields the receipt has */
  pg_eval_result result;              /* chunks malloc'd */
  int every_target_scored_once;
  int has_fp32;
  double fp32_val_loss, fp32_val_bpb, fp32_nats, fp32_tokens, fp32_bytes;
  int matches_record;                 /* provenance.protocol_matches_record: 1, 0, −1 (null) */
  char **warnings;
  size_t nwarnings;
  char *engine, *devices, *driver; /* devices and driver: "" in receipts older than them */
  int threads, precision;
} pg_receipt;

/* Parse and check receipt JSON text[0..len) (name: for errors). On failure *r is zeroed. */
int pg_receipt_parse(pg_receipt *r, const char *text, size_t len, const char *name, pg_err *err);
/* Read and parse the receipt at path. */
int pg_receipt_read(pg_receipt *r, const char *path, pg_err *err);
void pg_receipt_free(pg_receipt *r);

#ifdef __cplusplus
}
#endif
#endif
