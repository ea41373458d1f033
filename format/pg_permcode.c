/* pg_permcode.c: codec 5, "perm" (spec/format.md §13). A permutation of n is its Lehmer code
 * (each entry's rank among the entries not yet used), read as one mixed-radix number R < n!
 * and stored in its minimal little-endian bytes: ⌈log2(n!)/8⌉ bytes, against 2n for the u16
 * entries, which general codecs cannot shrink much (the entries of a row order are nearly
 * uniform). R is a big integer in u32 limbs; decoding divides it by n, n-1, ..., so its cost is
 * n times the limbs the stream holds, bounded by the stream's own size. */
#include "pg_permcode.h"

#include <stdlib.h>
#include <string.h>

/* Fenwick tree over n slots, each 1 (unused) or 0 (used): t[1..n]. */
static void fw_init(uint32_t *t, uint32_t n) {
  for (uint32_t i = 1; i <= n; i++) t[i] = i & (0u - i); /* all ones: the lowbit is the count */
}
static void fw_take(uint32_t *t, uint32_t n, uint32_t v) { /* slot v (0-based) becomes used */
  for (uint32_t i = v + 1; i <= n; i += i & (0u - i)) t[i]--;
}
static uint32_t fw_below(const uint32_t *t, uint32_t v) { /* unused slots < v */
  uint32_t s = 0;
  for (uint32_t i = v; i > 0; i -= i & (0u - i)) s += t[i];
  return s;
}
static uint32_t fw_select(const uint32_t *t, uint32_t n, uint32_t k) { /* the k-th unused */
  uint32_t pos = 0, step = 1;
  while (step * 2 <= n) step *= 2;
  for (; step; step /= 2)
    if (pos + step <= n && t[pos + step] <= k) {
      pos += step;
      k -= t[pos];
    }
  return pos; /* 0-based: slot pos */
}

static int put_varint(uint8_t *o, uint64_t v) {
  int k = 0;
  do {
    o[k++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return k;
}

/* A minimal LEB128 varint of at most 64 bits; 0 on a truncated, overlong or non-minimal one. */
static int get_varint(const uint8_t *in, size_t n, size_t *p, uint64_t *v) {
  uint64_t x = 0;
  for (int k = 0; k < 10; k++) {
    if (*p >= n) return 0;
    const uint8_t b = in[(*p)++];
    if (k == 9 && b > 1) return 0;
    x |= (uint64_t)(b & 0x7f) << (7 * k);
    if (!(b & 0x80)) {
      if (k > 0 && b == 0) return 0;
      *v = x;
      return 1;
    }
  }
  return 0;
}

int pg_perm_encode(const uint8_t *raw, size_t raw_len, const pg_qc_seg *segs, size_t nsegs,
                   uint8_t **out, size_t *out_len, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  pg_qc_seg whole = {raw_len, 1};
  if (!segs) {
    segs = &whole;
    nsegs = raw_len ? 1 : 0;
  }
  size_t total = 0, maxn = 1;
  for (size_t s = 0; s < nsegs; s++) {
    PG_FAIL_IF(segs[s].len == 0 || segs[s].len % 2 || segs[s].len / 2 > PG_PERM_MAX_N ||
                   segs[s].len > raw_len - total,
               err, PG_E_CODEC, NULL, PG_NO_OFFSET,
               "perm: segment %zu is not a run of at most %u u16 entries", s, PG_PERM_MAX_N);
    total += segs[s].len;
    if (segs[s].len / 2 > maxn) maxn = segs[s].len / 2;
  }
  PG_FAIL_IF(total != raw_len, err, PG_E_CODEC, NULL, PG_NO_OFFSET,
             "perm: segments cover %zu of %zu bytes", total, raw_len);
  /* output: 10 bytes of count, then per permutation ≤ 2·5 bytes of header and ≤ 2n bytes
   * (log2(n!) < 16n bits), rounded up to whole limbs */
  const size_t cap = 10 + nsegs * 14 + raw_len;
  uint8_t *o = malloc(cap);
  uint32_t *fw = malloc((maxn + 1) * sizeof *fw), *limb = malloc((maxn / 2 + 2) * sizeof *limb);
  if (!o || !fw || !limb) {
    free(o);
    free(fw);
    free(limb);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "perm: cannot allocate");
  }
  size_t w = (size_t)put_varint(o, nsegs), at = 0;
  int rc = PG_OK;
  for (size_t s = 0; s < nsegs && !rc; s++) {
    const uint32_t n = (uint32_t)(segs[s].len / 2);
    const uint8_t *e = raw + at;
    at += segs[s].len;
    fw_init(fw, n);
    size_t nl = 0; /* R = Σ limb[i]·2^(32i), nl limbs, top one non-zero */
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t v = (uint32_t)e[2 * i] | (uint32_t)e[2 * i + 1] << 8;
      if (v >= n || fw_below(fw, v + 1) == fw_below(fw, v)) { /* out of range, or used */
        rc = pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET,
                        "perm: segment %zu is not a permutation (entry %u)", s, i);
        break;
      }
      const uint64_t m = n - i;
      uint64_t c = fw_below(fw, v); /* the digit, < m */
      fw_take(fw, n, v);
      for (size_t k = 0; k < nl; k++) { /* R = R·m + digit */
        const uint64_t x = (uint64_t)limb[k] * m + c;
        limb[k] = (uint32_t)x;
        c = x >> 32;
      }
      if (c) limb[nl++] = (uint32_t)c;
    }
    if (rc) break;
    size_t nb = nl * 4;
    while (nb && !((limb[(nb - 1) / 4] >> (8 * ((nb - 1) % 4))) & 0xff)) nb--;
    w += (size_t)put_varint(o + w, n);
    w += (size_t)put_varint(o + w, nb);
    for (size_t b = 0; b < nb; b++) o[w++] = (uint8_t)(limb[b / 4] >> (8 * (b % 4)));
  }
  free(fw);
  free(limb);
  if (rc) {
    free(o);
    return rc;
  }
  *out = o;
  *out_len = w;
  return PG_OK;
}

#define BAD(...) return pg_err_set(err, PG_E_DECOMPRESS, file, off, "perm: " __VA_ARGS__)

int pg_perm_decode(const uint8_t *in, size_t n, uint8_t *out, size_t raw_len, const char *file,
                   uint64_t off, pg_err *err) {
  size_t p = 0, done = 0;
  uint64_t count;
  if (!get_varint(in, n, &p, &count)) BAD("truncated or malformed count");
  if (count > raw_len / 2 || (raw_len && !count)) BAD("%llu permutations for %zu bytes",
                                                     (unsigned long long)count, raw_len);
  /* the rank's limbs are at most the stream's bytes / 4 + 1; the tree at most 65,537 slots */
  uint32_t *limb = malloc((n / 4 + 2) * sizeof *limb);
  uint32_t *fw = malloc((PG_PERM_MAX_N + 1) * sizeof *fw);
  uint32_t *dig = malloc(PG_PERM_MAX_N * sizeof *dig);
  int rc = PG_OK;
  if (!limb || !fw || !dig) {
    rc = pg_err_set(err, PG_E_NOMEM, file, off, "perm: cannot allocate");
    count = 0;
  }
  for (uint64_t s = 0; s < count && !rc; s++) {
    uint64_t m, nb;
    if (!get_varint(in, n, &p, &m) || !get_varint(in, n, &p, &nb)) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, file, off, "perm: truncated or malformed header");
      break;
    }
    if (m == 0 || m > PG_PERM_MAX_N || m > (raw_len - done) / 2) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, file, off,
                      "perm: permutation %llu of %llu entries does not fit",
                      (unsigned long long)s, (unsigned long long)m);
      break;
    }
    if (nb > n - p || nb > 2 * m || (nb && in[p + nb - 1] == 0)) { /* m! < 2^(16m) */
      rc = pg_err_set(err, PG_E_DECOMPRESS, file, off,
                      "perm: rank of permutation %llu truncated or not minimal",
                      (unsigned long long)s);
      break;
    }
    size_t nl = (size_t)(nb + 3) / 4;
    memset(limb, 0, (nl + 1) * sizeof *limb);
    for (size_t b = 0; b < nb; b++) limb[b / 4] |= (uint32_t)in[p + b] << (8 * (b % 4));
    p += (size_t)nb;
    /* digits from the last (radix 1) to the first (radix m): R mod r, then R div r */
    for (uint64_t i = m; i-- > 0;) {
      const uint64_t r = m - i;
      uint64_t rem = 0;
      for (size_t k = nl; k-- > 0;) {
        const uint64_t x = rem << 32 | limb[k];
        limb[k] = (uint32_t)(x / r);
        rem = x % r;
      }
      while (nl && !limb[nl - 1]) nl--;
      dig[i] = (uint32_t)rem;
    }
    if (nl) {
      rc = pg_err_set(err, PG_E_DECOMPRESS, file, off,
                      "perm: rank of permutation %llu is not below %llu!",
                      (unsigned long long)s, (unsigned long long)m);
      break;
    }
    fw_init(fw, (uint32_t)m);
    for (uint32_t i = 0; i < m; i++) {
      const uint32_t v = fw_select(fw, (uint32_t)m, dig[i]);
      fw_take(fw, (uint32_t)m, v);
      out[done++] = (uint8_t)v;
      out[done++] = (uint8_t)(v >> 8);
    }
  }
  free(limb);
  free(fw);
  free(dig);
  if (rc) return rc;
  if (done != raw_len) BAD("permutations hold %zu bytes, section declares %zu", done, raw_len);
  if (p != n) BAD("%zu bytes after the end of the stream", n - p);
  return PG_OK;
}
