/* pg_text.h: bytes that come from outside (names in files, file names, options), shown safely.
 *
 * Two forms (spec/cli.md, "Names and text from inputs"):
 * - the display form, for reports and error lines: printable UTF-8 is kept; control characters
 *   (C0, DEL, C1), the bidirectional and line/paragraph formatting characters and every byte of
 *   an invalid UTF-8 sequence are escaped (\xNN for a byte, \uNNNN for a character), so a name
 *   can neither move the cursor, end the line nor reorder what follows. The form is idempotent
 *   (escaping it again changes nothing) and not reversible;
 * - the lossless JSON form: a JSON string when the bytes are valid UTF-8, otherwise an object
 *   {"hex": the bytes, "display": the display form}; a non-finite number as the string "NaN",
 *   "Infinity" or "-Infinity". */
#ifndef PG_TEXT_H
#define PG_TEXT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Write the display form of s[0..n) into dst (cap bytes; NUL-terminated when cap > 0), cut
 * before an escape or a character that does not fit whole. Returns the bytes written (without
 * the NUL). dst may be NULL with cap 0 to measure: then returns the length of the whole form. */
size_t pg_escape(char *dst, size_t cap, const char *s, size_t n);

/* 1 when s[0..n) needs no escaping (its display form is itself). */
int pg_text_is_plain(const char *s, size_t n);

/* Option values as the tools and the protocol text read them. A non-negative integer that may
 * contain '_' or ',' separators; 0 on success, 1 otherwise. */
int pg_parse_u64(const char *s, uint64_t *out);
/* A whole decimal number in [lo, hi] (no trailing characters, no NaN, no overflow or
 * underflow); 0 on success, 1 otherwise. */
int pg_parse_f64(const char *s, double lo, double hi, double *out);

/* The lossless JSON value of the bytes s[0..n): a string, or {"hex", "display"} when they are
 * not valid UTF-8. NULL only when out of memory. */
json_t *pg_json_text(const char *s, size_t n);
/* pg_json_text of a NUL-terminated string; JSON null for NULL. */
json_t *pg_json_cstr(const char *s);
/* A number: a JSON real when finite, else the string "NaN", "Infinity" or "-Infinity". */
json_t *pg_json_num(double v);

#ifdef __cplusplus
}
#endif
#endif
