/* pg_text.c: the display form and the lossless JSON form of outside bytes (pg_text.h). */
#include "pg_text.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the strict UTF-8 sequence at s (no overlongs, surrogates or values above
 * U+10FFFF) and its code point; 0 when the bytes there are not one. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t c = s[0];
  size_t len;
  uint32_t v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if (c >= 0xc2 && c <= 0xdf) {
    len = 2, v = c & 0x1f, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3, v = c & 0x0f, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xc0) != 0x80) return 0;
    v = (v << 6) | (s[k] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return len;
}

/* Characters a terminal acts on or that reorder or break the line: C0 and DEL (as bytes),
 * C1, the Arabic letter mark, LRM/RLM, the line and paragraph separators, the embeddings,
 * overrides and isolates. */
static int escaped_char(uint32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c || cp == 0x200e ||
         cp == 0x200f || (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t pg_escape(char *dst, size_t cap, const char *s, size_t n) {
  const uint8_t *u = (const uint8_t *)s;
  size_t o = 0, i = 0;
  while (i < n) {
    uint32_t cp;
    size_t len = utf8_next(u + i, n - i, &cp);
    char tmp[8];
    const char *piece;
    size_t pl;
    if (len == 0 || (len == 1 && escaped_char(cp))) {
      snprintf(tmp, sizeof tmp, "\\x%02x", u[i]);
      piece = tmp, pl = 4, len = 1;
    } else if (escaped_char(cp)) {
      snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)cp);
      piece = tmp, pl = 6;
    } else {
      piece = s + i, pl = len;
    }
    if (dst) {
      if (o + pl >= cap) break;
      memcpy(dst + o, piece, pl);
    }
    o += pl;
    i += len;
  }
  if (dst && cap) dst[o] = '\0';
  return o;
}

int pg_text_is_plain(const char *s, size_t n) {
  const uint8_t *u = (const uint8_t *)s;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t len = utf8_next(u + i, n - i, &cp);
    if (len == 0 || escaped_char(cp)) return 0;
    i += len;
  }
  return 1;
}

static int utf8_ok(const char *s, size_t n) {
  const uint8_t *u = (const uint8_t *)s;
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    size_t len = utf8_next(u + i, n - i, &cp);
    if (len == 0) return 0;
    i += len;
  }
  return 1;
}

json_t *pg_json_text(const char *s, size_t n) {
  if (utf8_ok(s, n)) return json_stringn(s, n);
  /* not UTF-8: JSON cannot hold the bytes as a string; carry them in hex beside a readable form */
  size_t dl = pg_escape(NULL, 0, s, n);
  char *hex = malloc(2 * n + 1), *disp = malloc(dl + 1);
  json_t *o = NULL;
  if (hex && disp) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
      hex[2 * i] = digits[(uint8_t)s[i] >> 4];
      hex[2 * i + 1] = digits[(uint8_t)s[i] & 15];
    }
    hex[2 * n] = '\0';
    pg_escape(disp, dl + 1, s, n);
    o = json_object();
    if (o && (json_object_set_new(o, "hex", json_stringn(hex, 2 * n)) ||
              json_object_set_new(o, "display", json_stringn(disp, dl)))) {
      json_decref(o);
      o = NULL;
    }
  }
  free(hex);
  free(disp);
  return o;
}

json_t *pg_json_cstr(const char *s) { return s ? pg_json_text(s, strlen(s)) : json_null(); }

json_t *pg_json_num(double v) {
  if (isfinite(v)) return json_real(v);
  return json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
}

int pg_parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;
  int digits = 0;
  for (; *s; s++) {
    if (*s == '_' || *s == ',') continue;
    if (*s < '0' || *s > '9') return 1;
    if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return 1;
    v = v * 10 + (uint64_t)(*s - '0');
    digits++;
  }
  if (!digits) return 1;
  *out = v;
  return 0;
}

int pg_parse_f64(const char *s, double lo, double hi, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  /* a range check that NaN fails; ERANGE catches 1e999 and denormal underflow alike */
  if (end == s || *end || errno == ERANGE || !(v >= lo && v <= hi)) return 1;
  *out = v;
  return 0;
}
