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
