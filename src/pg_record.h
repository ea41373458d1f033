/* pg_record.h: a challenge record folder (train_gpt.py + final_model.*.ptz + submission.json),
 * counted exactly the way the challenge counts it (spec/record.md), and its claims compared. */
#ifndef PG_RECORD_H
#define PG_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of a script as the challenge counts them: len(read_text("utf-8").encode("utf-8")).
 * Text mode turns each "\r\n" into "\n" (a lone "\r" also becomes "\n", same length); a BOM is
 * kept. Invalid UTF-8 (Python's strict decoder) is PG_E_UTF8 at the offending byte. */
int pg_record_code_bytes(const uint8_t *buf, size_t len, uint64_t *out, uint64_t *crlf_count,
                         const char *file, pg_err *err);

/* One numeric claim of submission.json. */
typedef struct pg_claim {
  int present;
  double value;
} pg_claim;

enum pg_claim_id {
  PG_CLAIM_BYTES_TOTAL,
  PG_CLAIM_BYTES_CODE,
  PG_CLAIM_ARTIFACT_BYTES_MAX,
  PG_CLAIM_ARTIFACT_BYTES_MEAN,
  PG_CLAIM_BYTES_MODEL_INT8_ZLIB,
  PG_CLAIM_BYTES_MODEL_INT6_ZSTD,
  PG_CLAIM_VAL_BPB,
  PG_CLAIM_VAL_LOSS,
  PG_CLAIM_COUNT
};
/* The JSON key of a claim. */
const char *pg_claim_key(int id);

typedef struct pg_record_claims {
  pg_claim num[PG_CLAIM_COUNT];
  char name[256], author[128], track[64], date[64];
} pg_record_claims;

/* Parse submission.json bytes (untrusted): an object; the known keys must have the right JSON
 * type (numbers, strings) or PG_E_META_TYPE; malformed JSON is PG_E_JSON. */
int pg_record_parse_claims(pg_record_claims *out, const uint8_t *buf, size_t len,
                           const char *file, pg_err *err);

typedef struct pg_record {
  char *dir;
  char *code_path, *model_path, *json_path; /* json_path NULL without submission.json */
  uint64_t code_file_bytes; /* the file's size */
  uint64_t code_bytes;      /* as the challenge counts it */
  uint64_t crlf;            /* "\r\n" pairs folded by text mode */
  int bom;                  /* starts with a UTF-8 BOM (counted: 3 bytes) */
  int self_extractor;       /* an lzma/brotli + exec() wrapper: its own size is what counts */
  uint64_t model_bytes;
  uint64_t total;           /* code_bytes + model_bytes */
  pg_record_claims claims;
} pg_record;

/* Open a record folder. model may name the model file (relative to dir or a path) when the
 * folder holds several final_model.*.ptz; otherwise exactly one must be there. */
int pg_record_open(pg_record *out, const char *dir, const char *model, pg_err *err);
void pg_record_free(pg_record *r);

enum pg_finding_kind { PG_FIND_AGREES, PG_FIND_DIFFERS, PG_FIND_INFO };
typedef struct pg_record_finding {
  int claim; /* pg_claim_id */
  int kind;  /* pg_finding_kind */
  double claimed, computed;
  char text[256];
} pg_record_finding;

/* Compare each present claim with the computed counts; returns the number of findings written
 * (at most PG_CLAIM_COUNT). */
int pg_record_compare(const pg_record *r, pg_record_finding *out);

#ifdef __cplusplus
}
#endif
#endif
