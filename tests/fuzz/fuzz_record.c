/* fuzz_record.c: libFuzzer target for the record-folder readers of outside bytes: the text-mode
 * UTF-8 count of a script, the self-extractor test, and the submission.json claim parser, each
 * on the whole input; the parsed claims are then compared with counts taken from the input, so
 * the finding texts are built from hostile numbers too. Every invariant broken aborts. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"
#include "pg_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err, int status) {
  if (err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

/* A string claim: NUL-terminated inside its array, valid UTF-8, no control characters. */
static void check_str(const char *s, size_t cap) {
  const char *end = memchr(s, '\0', cap);
  if (!end) abort();
  const size_t n = (size_t)(end - s);
  size_t bad;
  if (!pg_utf8_valid((const uint8_t *)s, n, &bad)) abort();
  for (size_t i = 0; i < n; i++) {
    const uint8_t c = (uint8_t)s[i];
    if (c < 0x20 || c == 0x7f || (c == 0xc2 && i + 1 < n && (uint8_t)s[i + 1] < 0xa0)) abort();
  }
}

static void check_code(const uint8_t *data, size_t size) {
  uint64_t n = UINT64_MAX, crlf = UINT64_MAX;
  pg_err err;
  if (pg_record_code_bytes(data, size, &n, &crlf, "train_gpt.py", &err) == PG_OK) {
    if (n + crlf != size || crlf > size / 2) abort();
    size_t bad;
    if (!pg_utf8_valid(data, size, &bad)) abort();
    return;
  }
  check_line(&err, PG_E_UTF8);
  if (n != UINT64_MAX || crlf != UINT64_MAX) abort(); /* outputs untouched on error */
  /* "train_gpt.py: offset N: ...": everything before N is valid, the sequence at N is not */
  const char *p = err.msg + strlen("train_gpt.py: offset ");
  if (strncmp(err.msg, "train_gpt.py: offset ", strlen("train_gpt.py: offset "))) abort();
  char *end;
  const unsigned long long off = strtoull(p, &end, 10);
  if (end == p || *end != ':' || off >= size) abort();
  size_t bad = 1;
  if (!pg_utf8_valid(data, (size_t)off, &bad)) abort();
  if (pg_utf8_valid(data + off, size - (size_t)off, &bad) || bad != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_code(data, size);
  const int sx = pg_record_is_self_extractor(data, size);
  if (sx != 0 && sx != 1) abort();

  pg_record rec;
  memset(&rec, 0, sizeof rec);
  pg_err err;
  const int rc = pg_record_parse_claims(&rec.claims, data, size, "submission.json", &err);
  if (rc != PG_OK) {
    if (rc != PG_E_JSON && rc != PG_E_UTF8 && rc != PG_E_DUPLICATE && rc != PG_E_META_TYPE &&
        rc != PG_E_NOMEM && rc != PG_E_LIMIT)
      abort();
    check_line(&err, rc);
    for (int i = 0; i < PG_CLAIM_COUNT; i++)
      if (rec.claims.num[i].present) abort();
    if (rec.claims.name[0] || rec.claims.author[0] || rec.claims.track[0] || rec.claims.date[0])
      abort();
    return 0;
  }
  for (int i = 0; i < PG_CLAIM_COUNT; i++) {
    const pg_claim *c = &rec.claims.num[i];
    if (!c->present && (c->is_integer || c->value != 0)) abort();
    if (c->present && !isfinite(c->value)) abort();
    if (c->is_integer && c->value != (double)c->integer) abort();
  }
  check_str(rec.claims.name, sizeof rec.claims.name);
  check_str(rec.claims.author, sizeof rec.claims.author);
  check_str(rec.claims.track, sizeof rec.claims.track);
  check_str(rec.claims.date, sizeof rec.claims.date);

  /* counts taken from the input, so that claims sometimes meet them exactly */
  uint64_t words[3] = {0, 0, 0};
  for (size_t i = 0; i < size && i < 24; i++) words[i / 8] |= (uint64_t)data[i] << (8 * (i % 8));
  rec.code_file_bytes = words[0] % (PG_RECORD_CODE_MAX + 1);
  rec.crlf = words[1] % (rec.code_file_bytes / 2 + 1);
  rec.code_bytes = rec.code_file_bytes - rec.crlf;
  rec.model_bytes = words[2] >> 1;
  rec.total = rec.code_bytes + rec.model_bytes;
  rec.self_extractor = sx;
  static char model_path[] = "rec/final_model.int6.ptz";
  rec.model_path = size & 1 ? model_path : NULL;
  pg_record_finding f[PG_CLAIM_COUNT];
  memset(f, 0xff, sizeof f);
  const int n = pg_record_compare(&rec, f);
  int want = 0;
  for (int i = 0; i < PG_CLAIM_COUNT; i++) want += rec.claims.num[i].present;
  if (n != want) abort();
  for (int i = 0; i < n; i++) {
    if (f[i].claim < 0 || f[i].claim >= PG_CLAIM_COUNT || !rec.claims.num[f[i].claim].present)
      abort();
    if (i && f[i].claim <= f[i - 1].claim) abort();
    if (f[i].kind != PG_FIND_AGREES && f[i].kind != PG_FIND_DIFFERS && f[i].kind != PG_FIND_INFO)
      abort();
    if (!memchr(f[i].text, '\0', sizeof f[i].text) || !f[i].text[0] || strchr(f[i].text, '\n'))
      abort();
    if (f[i].claimed != rec.claims.num[f[i].claim].value) abort();
  }
  return 0;
}
