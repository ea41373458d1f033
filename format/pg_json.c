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

const pg_json_caps pg_json_doc_caps = {PG_JSON_DOC_VALUES, PG_JSON_DOC_DEPTH};

/* What ends a number or literal: JSON whitespace, punctuation, a quote. */
static int delim(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':' || c == ',' || c == '"' ||
         c == '{' || c == '}' || c == '[' || c == ']';
}

int pg_json_shape_check(const char *text, size_t len, const pg_json_caps *caps, const char *file,
                        uint64_t base, pg_err *err) {
  const unsigned char *t = (const unsigned char *)text;
  uint64_t values = 0;
  uint32_t depth = 0;
  for (size_t p = 0; p < len;) {
    const unsigned char c = t[p];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':' || c == ',') {
      p++;
      continue;
    }
    if (c == '}' || c == ']') { /* an unbalanced one is the parser's to report */
      if (depth) depth--;
      p++;
      continue;
    }
    if (++values > caps->values)
      return pg_err_set(err, PG_E_LIMIT, file, base + p, "more than %llu JSON values, the cap "
                        "(each key counts as one)", (unsigned long long)caps->values);
    const size_t at = p++;
    if (c == '"') { /* to the closing quote; an escape hides the byte after the backslash */
      while (p < len && t[p] != '"') p += t[p] == '\\' ? 2 : 1;
      p++;
    } else if (c == '{' || c == '[') {
      if (++depth > caps->depth)
        return pg_err_set(err, PG_E_LIMIT, file, base + at,
                          "JSON nested more than %u deep, the cap", caps->depth);
    } else { /* a number or literal (or a stray byte): up to the next delimiter */
      while (p < len && !delim(t[p])) p++;
    }
  }
  return PG_OK;
}

int pg_json_load(json_t **out, const char *text, size_t len, size_t flags, const pg_json_caps *caps,
                 const char *file, pg_err *err) {
  *out = NULL;
  PG_TRY(pg_json_shape_check(text, len, caps, file, 0, err));
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
