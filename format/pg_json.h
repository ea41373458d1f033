/* pg_json.h: what every reader of JSON text (safetensors headers, arch files, submission.json,
 * receipts) shares on top of jansson: the status of a parse failure and the word for a value's
 * type in an error line ("claim 'val_bpb' is a string, not a number"). */
#ifndef PG_JSON_H
#define PG_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The pg_status of a failed json_loadb: PG_E_DUPLICATE for a repeated key, PG_E_NOMEM,
 * PG_E_UTF8 for invalid UTF-8, PG_E_JSON for anything else. */
int pg_json_fault(const json_error_t *je);
/* Parse text[0..len) (NULL allowed when len is 0) with JSON_REJECT_DUPLICATES | JSON_DECODE_ANY
 * and the extra jansson flags given into *out (free with json_decref). On failure *out is NULL
 * and the status is pg_json_fault's, with "FILE: offset N: JSON: ..." in err (the offset clamped
 * to the text). */
int pg_json_load(json_t **out, const char *text, size_t len, size_t flags, const char *file,
                 pg_err *err);
/* "an object", "an array", "a string", "an integer", "a real number", "true", "false", "null". */
const char *pg_json_type_word(const json_t *v);

#ifdef __cplusplus
}
#endif
#endif
