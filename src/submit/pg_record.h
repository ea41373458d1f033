/* pg_record.h: a challenge record folder (train_gpt.py + final_model.*.ptz + submission.json),
 * counted exactly the way the challenge counts it, and the claims of its submission.json
 * compared with that count. spec/record.md is the normative description. */
#ifndef PG_RECORD_H
#define PG_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_RECORD_CODE_NAME "train_gpt.py"
#define PG_RECORD_JSON_NAME "submission.json"
#define PG_RECORD_CODE_MAX ((size_t)64 << 20) /* train_gpt.py read cap: PG_E_LIMIT above */
#define PG_RECORD_JSON_MAX ((size_t)16 << 20) /* submission.json read cap: PG_E_LIMIT above */

/* ---- the code count ---- */

/* Bytes of a script as the challenge counts them:
 *   len(Path("train_gpt.py").read_text("utf-8").encode("utf-8")).
 * Text mode turns each "\r\n" into "\n" (a lone "\r" also becomes "\n": same length); a BOM is
 * kept and counted. So *out = len - (number of "\r\n" pairs), stored in *crlf_count (may be NULL).
 * Bytes that Python's strict UTF-8 decoder rejects (overlong forms, surrogates U+D800..U+DFFF,
 * code points above U+10FFFF, truncated sequences, stray continuation bytes, 0xC0 0xC1 0xF5..0xFF)
 * give PG_E_UTF8 with the offset of the first byte of the first invalid sequence; *out is then
 * untouched. file names the input in the error line (may be NULL). buf may be NULL when len is
 * 0. */
int pg_record_code_bytes(const uint8_t *buf, size_t len, uint64_t *out, uint64_t *crlf_count,
                         const char *file, pg_err *err);

/* 1 when the script looks like a self-extracting wrapper: after an optional UTF-8 BOM it starts
 * with "import lzma" or "import brotli" (followed by the end, or a byte that cannot continue a
 * Python identifier) and contains "exec(" anywhere. Such a file's own size is what counts. */
int pg_record_is_self_extractor(const uint8_t *buf, size_t len);

/* 1 when a file name matches the glob final_model.*.ptz ('*' may be empty, may hold dots). */
int pg_record_is_model_name(const char *name);

/* ---- the claims of submission.json ---- */

/* One numeric claim. JSON integers keep their exact value; reals keep theirs in value only. */
typedef struct pg_claim {
  int present;     /* the key is there and not null */
  int is_integer;  /* written as a JSON integer (no fraction, no exponent) */
  int64_t integer; /* the value when is_integer */
  double value;    /* the value as a double (always set when present) */
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
/* The JSON key of a claim ("bytes_total", ...); "?" for an unknown id. */
const char *pg_claim_key(int id);

/* The parsed claims. Strings are truncated on a UTF-8 boundary to fit, and their control
 * characters (C0, DEL, C1, NUL) are replaced by '?', so they are safe to print. */
typedef struct pg_record_claims {
  pg_claim num[PG_CLAIM_COUNT];
  char name[256], author[256], track[64], date[64]; /* "" when absent */
} pg_record_claims;

/* Parse submission.json bytes (untrusted). The top level must be a JSON object (else PG_E_JSON);
 * malformed JSON is PG_E_JSON at jansson's offset, invalid UTF-8 PG_E_UTF8 at the first bad byte,
 * a repeated key PG_E_DUPLICATE; a known numeric key holding anything but a number or null, or a
 * known string key holding anything but a string or null, is PG_E_META_TYPE. Unknown keys are
 * ignored. On error *out is all absent. file names the input in the error line (may be NULL). */
int pg_record_parse_claims(pg_record_claims *out, const uint8_t *buf, size_t len,
                           const char *file, pg_err *err);

/* ---- a record folder ---- */

/* An opened record folder. Every field is read-only for the caller; paths are malloc'd. */
typedef struct pg_record {
  char *dir;                                /* the folder as given, trailing '/' removed */
  char *code_path, *model_path, *json_path; /* json_path NULL without submission.json */
  uint64_t code_file_bytes; /* train_gpt.py's size on disk */
  uint64_t code_bytes;      /* as the challenge counts it (pg_record_code_bytes) */
  uint64_t crlf;            /* "\r\n" pairs folded by text mode */
  int bom;                  /* starts with a UTF-8 BOM (kept, 3 bytes counted) */
  int self_extractor;       /* pg_record_is_self_extractor */
  uint64_t model_bytes;     /* size of the model file */
  uint64_t total;           /* code_bytes + model_bytes: the challenge's bytes_total */
  pg_record_claims claims;  /* all absent without submission.json */
} pg_record;

/* Open a record folder and count it. dir must be a folder holding train_gpt.py (else
 * PG_E_RECORD) and, unless model is given, exactly one file named final_model.*.ptz (none, or
 * several, is PG_E_RECORD naming them). model, when not NULL, picks the model file: a name
 * without '/' is a file of dir, anything else a path used as given. submission.json is parsed
 * when present (pg_record_parse_claims). On error *out is zeroed (pg_record_free is harmless). */
int pg_record_open(pg_record *out, const char *dir, const char *model, pg_err *err);
void pg_record_free(pg_record *r);

/* ---- claims against the count ---- */

enum pg_finding_kind {
  PG_FIND_AGREES,  /* the claim equals the computed figure exactly */
  PG_FIND_DIFFERS, /* it does not; text says by how much and the likely reason */
  PG_FIND_INFO     /* not checkable from one folder (scores, means over seeds, maxima above) */
};
typedef struct pg_record_finding {
  int claim;       /* pg_claim_id */
  int kind;        /* pg_finding_kind */
  double claimed;  /* the claim's value */
  double computed; /* the figure it was compared with; NAN for scores */
  char text[384];  /* one line, e.g. "computed 15,863,489 = code 47,642 + model 15,815,847" */
} pg_record_finding;

/* Compare each present numeric claim (in pg_claim_id order) with the computed counts; write one
 * finding per claim to out (room for PG_CLAIM_COUNT) and return how many were written. */
int pg_record_compare(const pg_record *r, pg_record_finding *out);

/* The word of a finding kind: "agrees", "differs", "info". */
const char *pg_record_finding_word(int kind);

#ifdef __cplusplus
}
#endif
#endif
