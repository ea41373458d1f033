/* bench_permcode: codec 6 (perm, format/pg_permcode.h) on random row orders of the sizes a
 * model has (1,024 to 65,536 rows): stored bytes against the log2(n!) floor and brotli-11, and
 * encode and decode speed on one thread (its CPU time; MB of u16 entries). The last row is the
 * worst a 16 MB stream can ask of a reader: 65,536-entry permutations back to back, one section.
 *
 *   bench_permcode [--repeat N]   (default 5: the best of N timings) */
static const char *PROG = "bench_permcode";
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "pg_codec.h"
#include "pg_permcode.h"

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* count permutations of n entries each, back to back as u16 little-endian. */
static uint8_t *orders(uint32_t n, uint32_t count) {
  uint8_t *b = xmalloc((size_t)2 * n * count);
  uint32_t *p = xmalloc((size_t)n * sizeof *p);
  for (uint32_t s = 0; s < count; s++) {
    for (uint32_t i = 0; i < n; i++) p[i] = i;
    for (uint32_t i = n; i > 1; i--) {
      const uint32_t j = next() % i, t = p[i - 1];
      p[i - 1] = p[j];
      p[j] = t;
    }
    uint8_t *o = b + (size_t)2 * n * s;
    for (uint32_t i = 0; i < n; i++) o[2 * i] = (uint8_t)p[i], o[2 * i + 1] = (uint8_t)(p[i] >> 8);
  }
  free(p);
  return b;
}

static void row(const char *what, uint32_t n, uint32_t count, int repeat) {
  const size_t raw = (size_t)2 * n * count;
  uint8_t *b = orders(n, count), *back = xmalloc(raw), *st = NULL, *br = NULL;
  pg_qc_seg *segs = xmalloc(count * sizeof *segs);
  for (uint32_t s = 0; s < count; s++) segs[s] = (pg_qc_seg){(size_t)2 * n, 1};
  const pg_codec_spec perm = {PG_CODEC_PERM, 0, 0, 0, 0};
  pg_codec_spec brotli;
  pg_err e;
  size_t sl = 0, bl = 0;
  double enc = 1e30, dec = 1e30;
  for (int r = 0; r < repeat; r++) {
    free(st);
    double t0 = cpu_now();
    if (pg_codec_encode_segs(&perm, b, raw, segs, count, &st, &sl, &e)) die("%s", e.msg);
    const double t1 = cpu_now();
    if (pg_codec_decode(&perm, st, sl, back, raw, "bench", 0, &e)) die("%s", e.msg);
    const double t2 = cpu_now();
    if (memcmp(back, b, raw)) die("n %u: the round trip differs", n);
    enc = fmin(enc, t1 - t0);
    dec = fmin(dec, t2 - t1);
  }
  if (raw <= (1u << 20) && (pg_codec_spec_parse(&brotli, "brotli-11/w24", &e) ||
                            pg_codec_encode(&brotli, b, raw, &br, &bl, &e)))
    die("%s", e.msg); /* (not on the 16 MB row: a minute of brotli for a known answer) */
  char bs[24] = "-";
  if (br) snprintf(bs, sizeof bs, "%zu", bl);
  const double fl = count * lgamma(n + 1.0) / log(2.0) / 8;
  printf("| %-10s | %6u | %5u | %12.1f | %10zu | %+8.1f | %10s | %9.1f | %9.1f |\n", what, n,
         count, fl, sl, (double)sl - fl, bs, raw / 1e6 / fmax(enc, 1e-9),
         raw / 1e6 / fmax(dec, 1e-9));
  free(st);
  free(br);
  free(segs);
  free(back);
  free(b);
}

int main(int argc, char **argv) {
  int repeat = 5;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--repeat") && i + 1 < argc) {
      repeat = atoi(argv[++i]);
      if (repeat < 1 || repeat > 1000) die("--repeat: 1..1000");
    } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      printf("usage: bench_permcode [--repeat N]\n");
      return EXIT_OK;
    } else {
      die("unknown argument '%s' (try --help)", argv[i]);
    }
  }
  printf("| orders     |      n | count | floor bytes  | perm bytes | − floor  | brotli-11  "
         "| enc MB/s  | dec MB/s  |\n");
  printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  row("embedding", 1024, 1, repeat);
  row("embedding", 8192, 1, repeat);
  row("MLP rows", 2048, 11, repeat);
  row("largest", 65536, 1, repeat);
  row("16 MB", 65536, 134, 1);
  return EXIT_OK;
}
