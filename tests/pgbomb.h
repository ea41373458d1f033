/* pgbomb.h: hostile artifacts for the memory tests: small files whose sections declare (and
 * really decode to) far more bytes than the file holds. Every checksum is right, so a reader
 * that trusts the declared sizes decodes them in full. The sections are built by streaming, so
 * making a bomb costs no more memory than the file itself. */
#ifndef PGBOMB_H
#define PGBOMB_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include <zstd.h>

#include "pg_container.h"
#include "pg_io.h"

/* A zstd frame (content size in its header) of `prefix` followed by zeros, raw bytes in all;
 * its stored bytes, length and raw checksum. */
static inline uint8_t *pgbomb_frame(const uint8_t *prefix, size_t np, uint64_t raw, size_t *len,
                                    uint64_t *raw_xxh) {
  static uint8_t zeros[1 << 17];
  ZSTD_CCtx *c = ZSTD_createCCtx();
  cr_assert_not_null(c);
  ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setPledgedSrcSize(c, raw);
  XXH64_state_t *h = XXH64_createState();
  XXH64_reset(h, 0);
  size_t cap = 1 << 16, n = 0;
  uint8_t *out = malloc(cap);
  uint64_t left = raw;
  int first = 1;
  for (;;) {
    const uint8_t *src = zeros;
    size_t k = left < sizeof zeros ? (size_t)left : sizeof zeros;
    if (first && np) {
      src = prefix;
      k = np;
    }
    first = 0;
    XXH64_update(h, src, k);
    left -= k;
    ZSTD_inBuffer in = {src, k, 0};
    ZSTD_EndDirective end = left ? ZSTD_e_continue : ZSTD_e_end;
    size_t more;
    do {
      if (cap - n < (1 << 15)) out = realloc(out, cap *= 2);
      ZSTD_outBuffer o = {out + n, cap - n, 0};
      more = ZSTD_compressStream2(c, &o, &in, end);
      cr_assert(!ZSTD_isError(more), "%s", ZSTD_getErrorName(more));
      n += o.pos;
    } while (end == ZSTD_e_end ? more != 0 : in.pos < in.size);
    if (!left) break;
  }
  ZSTD_freeCCtx(c);
  *raw_xxh = XXH64_digest(h);
  XXH64_freeState(h);
  *len = n;
  return out;
}

static inline void pgbomb_put(uint8_t **b, size_t *n, const void *p, size_t k) {
  *b = realloc(*b, *n + k + 1);
  memcpy(*b + *n, p, k);
  *n += k;
}
static inline void pgbomb_u16(uint8_t **b, size_t *n, uint16_t v) {
  uint8_t x[2];
  pg_st16(x, v);
  pgbomb_put(b, n, x, 2);
}
static inline void pgbomb_u32(uint8_t **b, size_t *n, uint32_t v) {
  uint8_t x[4];
  pg_st32(x, v);
  pgbomb_put(b, n, x, 4);
}
static inline void pgbomb_u64(uint8_t **b, size_t *n, uint64_t v) {
  uint8_t x[8];
  pg_st64(x, v);
  pgbomb_put(b, n, x, 8);
}

/* An artifact of META and TENSORS (codec none), `ndata` DATA sections of `data_raw` bytes each
 * (one f32 tensor of zeros filling each), and `ncode` CODE sections of `code_raw` bytes each
 * (files c0.py, c1.py, ... of zeros), all zstd; with pad > 0, a TOKENIZER section of `pad`
 * pseudo-random bytes, codec none (it makes the file bigger, not its decoded bytes). Valid
 * under spec/format.md's per-section limits; *len is the file's size. */
static inline uint8_t *pgbomb(uint32_t ndata, uint64_t data_raw, uint32_t ncode,
                              uint64_t code_raw, uint64_t pad, size_t *len) {
  cr_assert(data_raw % 4 == 0 && (ncode == 0 || code_raw >= 8));
  uint8_t *meta = NULL, *dir = NULL;
  size_t nmeta = 0, ndir = 0;
  pgbomb_u32(&meta, &nmeta, 1);
  pgbomb_u16(&meta, &nmeta, 12);
  pgbomb_put(&meta, &nmeta, "pgolf.writer", 12);
  pgbomb_put(&meta, &nmeta, "\x03", 1);
  pgbomb_u32(&meta, &nmeta, 6);
  pgbomb_put(&meta, &nmeta, "pgbomb", 6);
  pgbomb_u32(&dir, &ndir, ndata);
  for (uint32_t i = 0; i < ndata; i++) {
    char name[16];
    snprintf(name, sizeof name, "t%05u", i);
    pgbomb_u16(&dir, &ndir, 6);
    pgbomb_put(&dir, &ndir, name, 6);
    const uint8_t hdr[8] = {PG_QTYPE_F32, 0, 0, 0, 0, 1, 0, 0};
    pgbomb_put(&dir, &ndir, hdr, 8);
    pgbomb_u64(&dir, &ndir, data_raw / 4);
    pgbomb_u32(&dir, &ndir, 2 + i);
    pgbomb_u64(&dir, &ndir, 0);
    pgbomb_u64(&dir, &ndir, data_raw);
  }
  cr_assert(ncode <= 10, "code files are named c0.py .. c9.py");
  size_t dlen = 0, clen[10] = {0};
  uint64_t dx = 0, cx[10] = {0};
  uint8_t *dfr = ndata ? pgbomb_frame(NULL, 0, data_raw, &dlen, &dx) : NULL, *cfr[10] = {0};
  uint64_t code_stored = 0;
  for (uint32_t k = 0; k < ncode; k++) {
    const uint8_t prefix[7] = {5, 0, 'c', (uint8_t)('0' + k), '.', 'p', 'y'};
    cfr[k] = pgbomb_frame(prefix, sizeof prefix, code_raw, &clen[k], &cx[k]);
    code_stored += clen[k];
  }
  uint8_t *padb = malloc(pad ? (size_t)pad : 1);
  uint32_t x = 2463534242u;
  for (uint64_t k = 0; k < pad; k++) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    padb[k] = (uint8_t)x;
  }
  const uint32_t ntok = pad ? 1 : 0, nsec = 2 + ndata + ntok + ncode;
  const uint64_t table_end = PG_HEADER_SIZE + (uint64_t)PG_ENTRY_SIZE * nsec;
  const uint64_t total = table_end + nmeta + ndir + (uint64_t)ndata * dlen + pad + code_stored;
  uint8_t *b = calloc(1, (size_t)total);
  cr_assert_not_null(b);
  memcpy(b, PG_MAGIC, 8);
  pg_st16(b + 8, PG_CONTAINER_V1);
  pg_st16(b + 10, PG_QUANT_LAYOUT_V1);
  pg_st32(b + 16, nsec);
  pg_st64(b + 24, total);
  uint64_t off = table_end;
  for (uint32_t i = 0; i < nsec; i++) {
    uint8_t *e = b + PG_HEADER_SIZE + (size_t)PG_ENTRY_SIZE * i;
    const uint8_t *stored;
    uint64_t stored_n, raw_n, raw_x;
    int kind = i == 0                  ? PG_SEC_META
               : i == 1                ? PG_SEC_TENSORS
               : i < 2 + ndata         ? PG_SEC_DATA
               : i < 2 + ndata + ntok ? PG_SEC_TOKENIZER
                                       : PG_SEC_CODE;
    if (i < 2 || kind == PG_SEC_TOKENIZER) {
      stored = i == 0 ? meta : i == 1 ? dir : padb;
      stored_n = raw_n = i == 0 ? nmeta : i == 1 ? ndir : pad;
      raw_x = XXH64(stored, (size_t)stored_n, 0);
    } else if (kind == PG_SEC_DATA) {
      stored = dfr, stored_n = dlen, raw_n = data_raw, raw_x = dx;
    } else {
      const uint32_t k = i - 2 - ndata - ntok;
      stored = cfr[k], stored_n = clen[k], raw_n = code_raw, raw_x = cx[k];
    }
    pg_st16(e, (uint16_t)kind);
    if (kind == PG_SEC_DATA || kind == PG_SEC_CODE) e[2] = PG_CODEC_ZSTD, e[3] = 1;
    pg_st64(e + 8, off);
    pg_st64(e + 16, stored_n);
    pg_st64(e + 24, raw_n);
    memcpy(b + off, stored, (size_t)stored_n);
    pg_st64(e + 32, XXH64(b + off, (size_t)stored_n, 0));
    pg_st64(e + 40, raw_x);
    off += stored_n;
  }
  pg_st64(b + 32, XXH64(b + PG_HEADER_SIZE, (size_t)(table_end - PG_HEADER_SIZE), 0));
  pg_st64(b + 56, XXH64(b, 56, 0));
  free(meta);
  free(dir);
  free(dfr);
  free(padb);
  for (uint32_t k = 0; k < ncode; k++) free(cfr[k]);
  *len = (size_t)total;
  return b;
}

#endif
