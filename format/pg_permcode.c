/* pg_permcode.c: codec 6, "perm" (spec/format.md §13). A permutation of n is its Lehmer code
 * (each entry's rank among the entries not yet used): digit i is uniform over n-i values, so a
 * range coder with uniform intervals stores the digits of all the section's permutations in
 * log2(n!) bits each plus 4 bytes in all, against 2n bytes for the u16 entries, which general
 * codecs cannot shrink much (the entries of a row order are nearly uniform). Decoding is one
 * division per digit and a Fenwick-tree search per entry: linear in the entries, whatever the
 * stream holds. (Codec 5 stored one big-number rank per permutation; its decoder was quadratic
 * in the permutation's length, and it is withdrawn.) */
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

#define PG_RC_TOP (1u << 24) /* the range is renormalised to at least this */

/* The encoder: low holds 32 bits and a carry; the byte in cache and the `run` 0xff bytes after
 * it wait until a carry can no longer reach them. The first byte it settles is always 0 (the
 * coded number is below 1) and is not written. */
typedef struct {
  uint64_t low;
  uint32_t range;
  uint8_t cache;
  uint64_t run; /* settled bytes pending: the cache and run-1 0xff bytes */
  int first;
  uint8_t *o;
  size_t w;
} rc_enc;

static void rc_shift(rc_enc *e) {
  if ((uint32_t)e->low < 0xff000000u || (e->low >> 32)) {
    const uint8_t carry = (uint8_t)(e->low >> 32);
    uint8_t b = e->cache;
    for (; e->run; e->run--, b = 0xff) {
      if (e->first)
        e->first = 0; /* the leading 0 (a carry never reaches it) */
      else
        e->o[e->w++] = (uint8_t)(b + carry);
    }
    e->cache = (uint8_t)(e->low >> 24);
  }
  e->run++;
  e->low = (uint64_t)((uint32_t)e->low << 8);
}

/* Digit d of radix m ≥ 2: the m-th part of the range, the last part taking the remainder. */
static void rc_put(rc_enc *e, uint32_t d, uint32_t m) {
  const uint32_t r = e->range / m;
  e->low += (uint64_t)r * d;
  e->range = d + 1 < m ? r : e->range - r * d;
  while (e->range < PG_RC_TOP) {
    e->range <<= 8;
    rc_shift(e);
  }
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
  /* output: the count and each n (≤ 10 bytes each), then one byte per renormalisation, each
   * after 8 bits of the digits (a digit of radix m takes under log2(m) + 0.012 bits: at most 16.012
   * per u16 entry), and the 4 bytes of the end */
  const size_t cap = 10 + nsegs * 10 + raw_len + raw_len / 64 + 16;
  rc_enc e = {0, 0xffffffffu, 0, 1, 1, malloc(cap), 0};
  uint32_t *fw = malloc((maxn + 1) * sizeof *fw);
  if (!e.o || !fw) {
    free(e.o);
    free(fw);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "perm: cannot allocate");
  }
  e.w = (size_t)put_varint(e.o, nsegs);
  for (size_t s = 0; s < nsegs; s++) e.w += (size_t)put_varint(e.o + e.w, segs[s].len / 2);
  int rc = PG_OK;
  size_t at = 0;
  for (size_t s = 0; s < nsegs && !rc; s++) {
    const uint32_t n = (uint32_t)(segs[s].len / 2);
    const uint8_t *v8 = raw + at;
    at += segs[s].len;
    fw_init(fw, n);
    for (uint32_t i = 0; i < n; i++) {
      const uint32_t v = (uint32_t)v8[2 * i] | (uint32_t)v8[2 * i + 1] << 8;
      if (v >= n || fw_below(fw, v + 1) == fw_below(fw, v)) { /* out of range, or used */
        rc = pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET,
                        "perm: segment %zu is not a permutation (entry %u)", s, i);
        break;
      }
      const uint32_t d = fw_below(fw, v); /* the digit, < n - i */
      fw_take(fw, n, v);
      if (n - i >= 2) rc_put(&e, d, n - i); /* the last digit has one value: not stored */
    }
  }
  free(fw);
  if (!rc && nsegs)
    for (int k = 0; k < 5; k++) rc_shift(&e); /* the 4 bytes of low, through the cache */
  if (rc) {
    free(e.o);
    return rc;
  }
  *out = e.o;
  *out_len = e.w;
  return PG_OK;
}

#define BAD(...) return pg_err_set(err, PG_E_DECOMPRESS, file, off, "perm: " __VA_ARGS__)

int pg_perm_decode(const uint8_t *in, size_t n, uint8_t *out, size_t raw_len, const char *file,
                   uint64_t off, pg_err *err) {
  size_t p = 0;
  uint64_t count, left = raw_len / 2;
  if (raw_len % 2) BAD("a section of %zu bytes is not u16 entries", raw_len);
  if (!get_varint(in, n, &p, &count)) BAD("truncated or malformed count");
  if (count > left || (raw_len && !count))
    BAD("%llu permutations for %zu bytes", (unsigned long long)count, raw_len);
  const size_t hdr = p; /* the lengths follow: read them all before any digit */
  for (uint64_t s = 0; s < count; s++) {
    uint64_t m;
    if (!get_varint(in, n, &p, &m)) BAD("truncated or malformed length of permutation %llu",
                                        (unsigned long long)s);
    if (m == 0 || m > PG_PERM_MAX_N || m > left)
      BAD("permutation %llu of %llu entries does not fit", (unsigned long long)s,
          (unsigned long long)m);
    left -= m;
  }
  if (left) BAD("permutations hold %llu bytes, section declares %zu",
                (unsigned long long)(raw_len - 2 * left), raw_len);
  if (!count) {
    if (p != n) BAD("%zu bytes after the end of the stream", n - p);
    return PG_OK;
  }
  if (n - p < 4) BAD("truncated digits");
  uint32_t range = 0xffffffffu, code = 0;
  for (int k = 0; k < 4; k++) code = code << 8 | in[p++];
  if (code == 0xffffffffu) BAD("the digits' first word is not below the range");
  uint32_t *fw = malloc((PG_PERM_MAX_N + 1) * sizeof *fw);
  if (!fw) return pg_err_set(err, PG_E_NOMEM, file, off, "perm: cannot allocate");
  size_t q = hdr, done = 0;
  int rc = PG_OK;
  for (uint64_t s = 0; s < count && !rc; s++) {
    uint64_t m64 = 0;
    get_varint(in, n, &q, &m64); /* checked above */
    const uint32_t m = (uint32_t)m64;
    fw_init(fw, m);
    for (uint32_t i = 0; i < m; i++) {
      uint32_t d = 0;
      const uint32_t radix = m - i;
      if (radix >= 2) { /* code < range holds throughout, so every digit is in range */
        const uint32_t r = range / radix;
        d = code / r;
        if (d > radix - 1) d = radix - 1;
        code -= r * d;
        range = d + 1 < radix ? r : range - r * d;
        while (range < PG_RC_TOP) {
          if (p >= n) {
            rc = pg_err_set(err, PG_E_DECOMPRESS, file, off,
                            "perm: digits of permutation %llu truncated", (unsigned long long)s);
            break;
          }
          range <<= 8;
          code = code << 8 | in[p++];
        }
        if (rc) break;
      }
      const uint32_t v = fw_select(fw, m, d);
      fw_take(fw, m, v);
      out[done++] = (uint8_t)v;
      out[done++] = (uint8_t)(v >> 8);
    }
  }
  free(fw);
  if (rc) return rc;
  if (p != n) BAD("%zu bytes after the end of the stream", n - p);
  return PG_OK;
}
