/* pg_json.h: what every reader of JSON text (safetensors headers, arch files, submission.json,
 * receipts) shares on top of jansson: the shape caps checked before outside text is parsed, the
 * status of a parse failure and the word for a value's type in an error line ("claim 'val_bpb'
 * is a string, not a number"). */
#ifndef PG_JSON_H
#define PG_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a reader lets the parser build from text it did not write. jansson spends tens to hundreds
 * of bytes on each value, so a few megabytes of "{}," would cost gigabytes; the shape check
 * refuses such text before it is parsed. */
typedef struct pg_json_caps {
  uint64_t values; /* values at most, each object key counted as one */
  uint32_t depth;  /* arrays and objects nested at most this deep (the root is depth 1) */
} pg_json_caps;

/* The caps of a small document: an arch file, a preset, a record's submission.json, a training
 * config, one line of a training log or of a JSONL corpus. The largest real ones hold under 400
 * values and nest 6 deep. (Receipts and the record analyzer's report have caps of their own.) */
#define PG_JSON_DOC_VALUES 65536u
#define PG_JSON_DOC_DEPTH 32u
extern const pg_json_caps pg_json_doc_caps;

/* One linear pass over text[0..len), allocating nothing: counts values (a string, a number or
 * literal, an array, an object; a key counts as one) and the nesting depth, skipping string
 * contents and their escapes. Above caps->values or caps->depth: PG_E_LIMIT, "FILE: offset N:
 * ...", the offset (base + the position in text) of the value that goes over the cap. Text that
 * is not JSON passes unless it goes over a cap: the parser reports it. */
int pg_json_shape_check(const char *text, size_t len, const pg_json_caps *caps, const char *file,
                        uint64_t base, pg_err *err);

/* The pg_status of a failed json_loadb: PG_E_DUPLICATE for a repeated key, PG_E_NOMEM,
 * PG_E_UTF8 for invalid UTF-8, PG_E_JSON for anything else. */
int pg_json_fault(const json_error_t *je);
/* Parse text[0..len) (NULL allowed when len is 0) with JSON_REJECT_DUPLICATES | JSON_DECODE_ANY
 * and the extra jansson flags given into *out (free with json_decref), after
 * pg_json_shape_check with caps. On failure *out is NULL and the status is the check's or
 * pg_json_fault's, with "FILE: offset N: JSON: ..." in err (the offset clamped to the text). */
int pg_json_load(json_t **out, const char *text, size_t len, size_t flags, const pg_json_caps *caps,
                 const char *file, pg_err *err);
/* "an object", "an array", "a string", "an integer", "a real number", "true", "false", "null". */
const char *pg_json_type_word(const json_t *v);

#ifdef __cplusplus
}
#endif
#endif
