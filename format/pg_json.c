/* pg_json.c: see pg_json.h. */
#include "pg_json.h"

#include "pg_status.h"

int pg_json_fault(const json_error_t *je) {
  switch (json_error_code(je)) {
  case json_error_duplicate_key: return PG_E_DUPLICATE;
  case json_error_out_of_memory: return PG_E_NOMEM;
  case json_error_invalid_utf8: return PG_E_UTF8;
  default: return PG_E_JSON;
  }
}

int pg_json_load(json_t **out, const char *text, size_t len, size_t flags, const char *file,
                 pg_err *err) {
  json_error_t je;
  *out = json_loadb(len ? text : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | flags, &je);
  if (*out) return PG_OK;
  uint64_t pos = je.position < 0 ? 0 : (uint64_t)je.position;
  if (pos > len) pos = len;
  return pg_err_set(err, pg_json_fault(&je), file, pos, "JSON: %s", je.text);
}

const char *pg_json_type_word(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a real number";
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "null";
  default: return "?";
  }
}
