/* fuzz_shard.c: libFuzzer target for the shard reader: the input is opened as a shard from memory
 * (pg_shard_open_mem); a valid one has its tokens copied and its documents listed and checked
 * (lens >= 2, documents tile the tokens from the first BOS, sum of len-1 = N-1-skipped), its
 * vocabulary checked against a bound taken from the input, and its trimmed length computed; a
 * refused one must give one of the reader's statuses in a one-line message. The raw bytes are
 * also listed as a token array, so the document lister sees hostile streams directly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"
#include "pg_shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err, int status) {
  if (err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

static void check_docs(const uint16_t *tok, uint64_t n) {
  pg_doc *d = (pg_doc *)1;
  uint64_t nd = 7, sk = 7;
  pg_err err;
  const int rc = pg_docs_list(tok, n, "fuzz", &d, &nd, &sk, &err);
  if (rc != PG_OK) {
    check_line(&err, rc);
    if (rc != PG_E_MALFORMED || d != NULL || nd != 0) abort();
    if (n == 0 || tok[n - 1] != PG_BOS_ID) abort(); /* only a BOS as the last token is refused */
    return;
  }
  if (sk > n) abort();
  for (uint64_t i = 0; i < sk; i++)
    if (tok[i] == PG_BOS_ID) abort();
  if (nd == 0) {
    if (d != NULL || sk != n) abort();
    return;
  }
  uint64_t sum = 0;
  if (d[0].start != sk) abort();
  for (uint64_t k = 0; k < nd; k++) {
    if (d[k].len < 2 || d[k].start >= n || d[k].len > n - d[k].start) abort();
    if (tok[d[k].start] != PG_BOS_ID) abort();
    const uint64_t end = d[k].start + d[k].len; /* one past, including the next BOS */
    for (uint64_t i = d[k].start + 1; i + 1 < end; i++)
      if (tok[i] == PG_BOS_ID) abort();
    if (k + 1 < nd) {
      if (d[k + 1].start != end - 1 || tok[end - 1] != PG_BOS_ID) abort();
    } else if (end != n) {
      abort();
    }
    sum += d[k].len - 1;
  }
  if (sum != n - 1 - sk) abort();
  free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* the raw bytes as a little-endian token stream */
  const size_t nraw = size / 2;
  uint16_t *raw = malloc(nraw ? nraw * sizeof *raw : 1);
  if (!raw) return 0;
  for (size_t i = 0; i < nraw; i++) raw[i] = pg_ld16(data + 2 * i);
  check_docs(raw, nraw);
  free(raw);

  pg_shard *s = (pg_shard *)1;
  pg_err err;
  const int rc = pg_shard_open_mem(&s, data, size, "fuzz.bin", &err);
  if (rc != PG_OK) {
    if (s != NULL) abort();
    if (rc != PG_E_TRUNCATED && rc != PG_E_MAGIC && rc != PG_E_VERSION && rc != PG_E_HEADER &&
        rc != PG_E_SIZE_MISMATCH && rc != PG_E_ARG)
      abort();
    check_line(&err, rc);
    if (strncmp(err.msg, "fuzz.bin: offset ", 17)) abort();
    return 0;
  }
  const uint64_t n = pg_shard_count(s);
  if (size != 1024 + 2 * n || pg_ld32(data) != PG_SHARD_MAGIC || pg_ld32(data + 4) != 1) abort();
  if (pg_shard_data(s) != data + 1024) abort();
  uint16_t *tok = malloc(n ? n * sizeof *tok : 1);
  if (!tok) {
    pg_shard_free(s);
    return 0;
  }
  if (pg_shard_copy(s, 0, n, tok, &err) != PG_OK) abort();
  for (uint64_t i = 0; i < n; i++)
    if (tok[i] != pg_shard_token(s, i)) abort();
  check_docs(tok, n);
  const uint64_t seq = n ? 1 + tok[0] % 64 : 1;
  const uint64_t kept = pg_val_trim(n, seq);
  if (kept && (kept > n || (kept - 1) % seq != 0 || n - kept >= seq)) abort();
  if (!kept && n > seq) abort();
  check_docs(tok, kept);
  const uint32_t vocab = n ? (uint32_t)tok[n - 1] + (n & 1) : 1;
  const int vr = pg_shard_check_vocab(s, vocab, &err);
  uint64_t first = n;
  for (uint64_t i = 0; i < n; i++)
    if (tok[i] >= vocab) {
      first = i;
      break;
    }
  if ((vr == PG_OK) != (first == n)) abort();
  if (vr != PG_OK) {
    check_line(&err, PG_E_TOKEN_RANGE);
    char want[64];
    snprintf(want, sizeof want, "fuzz.bin: offset %llu: ", (unsigned long long)(1024 + 2 * first));
    if (strncmp(err.msg, want, strlen(want))) abort();
  }
  free(tok);
  pg_shard_free(s);
  return 0;
}
