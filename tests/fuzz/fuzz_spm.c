/* fuzz_spm.c: libFuzzer target for the SentencePiece .model reader: parse arbitrary bytes and, on
 * success, check the invariants of the open model, build the byte tables (missing "▁" allowed),
 * check them against the pieces, and look a few pieces up. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_bpb.h"
#include "pg_spm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pg_spm *m = NULL;
  pg_err e;
  if (pg_spm_open_mem(&m, data, size, "fuzz.model", &e) != PG_OK) {
    if (m) abort();
    if (!e.msg[0] || strchr(e.msg, '\n')) abort();
    return 0;
  }
  const pg_spm_info *in = pg_spm_info_of(m);
  const uint32_t n = pg_spm_vocab_size(m);
  if (n == 0 || in->vocab_size != n || in->unk_piece_id < 0) abort();
  for (uint32_t i = 0; i < n; i++) {
    const pg_spm_piece *p = pg_spm_piece_at(m, i);
    if (!p || p->len == 0 || p->type < 1 || p->type > 6 || p->piece[p->len] != 0) abort();
    if (pg_spm_piece_to_id(m, p->piece, p->len) != (int32_t)i) abort();
  }
  if (pg_spm_piece_at(m, n)) abort();
  (void)pg_spm_piece_to_id(m, "\xE2\x96\x81", 3);
  (void)pg_spm_piece_to_id(m, (const char *)data, size < 16 ? size : 16);
  (void)pg_spm_piece_to_id(m, "", 0);
  pg_spm_tables t;
  const uint32_t requested = size ? data[0] : 0;
  if (pg_spm_tables_build(&t, m, requested, PG_SPM_ALLOW_NO_SPACE, &e) == PG_OK) {
    if (t.size < n || t.size < requested) abort();
    for (uint32_t i = 0; i < t.size; i++) {
      const int type = i < n ? pg_spm_piece_at(m, i)->type : 0;
      const int bnd = type == 0 || type == PG_SPM_CONTROL || type == PG_SPM_UNKNOWN ||
                      type == PG_SPM_UNUSED;
      if (t.boundary[i] != bnd) abort();
      if (bnd && (t.base[i] != 0 || t.lead[i])) abort();
      if (type == PG_SPM_BYTE && (t.base[i] != 1 || t.lead[i])) abort();
      if (!bnd && type != PG_SPM_BYTE &&
          (uint32_t)t.base[i] + 3u * t.lead[i] != pg_spm_piece_at(m, i)->len)
        abort();
    }
    uint64_t total = 0;
    uint16_t s[8];
    for (int i = 0; i < 8; i++) s[i] = (uint16_t)(((size_t)i < size ? data[i] : 0) % t.size);
    if (pg_spm_count_stream_u16(&t, s, 8, &total, &e) != PG_OK) abort();
    pg_spm_tables_free(&t);
  }
  pg_spm_free(m);
  return 0;
}
