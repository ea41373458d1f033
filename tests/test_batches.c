/* test_loader.c: the trainer's data loader (pg_batches.h): sequential rows with their overlap,
 * wrap-around and rows across shard files; shuffled windows (determinism, coverage, phase, the
 * documented draws); packed rows at BOS with the skipped count; positions saved and restored
 * bit-for-bit across epoch boundaries; argument and position errors. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_batches.h"
#include "pg_rng.h"
#include "pg_shard.h"
#include "pgshards.h"
#include "pgtest.h"

static char dir[64];

static void setup(void) { pgtest_mkdtemp(dir, "pgloader"); }
static void teardown(void) { pgtest_rm_rf(dir); }

TestSuite(loader, .init = setup, .fini = teardown);

/* ---- helpers ---- */

/* Write tok[0..n) as DIR/name/s_%06d.bin shards of shard_tokens; pat gets the glob. */
static void write_stream(const char *name, const uint16_t *tok, size_t n, uint64_t shard_tokens,
                         char *pat, size_t cap) {
  char sub[160];
  snprintf(sub, sizeof sub, "%s/%s", dir, name);
  cr_assert_eq(mkdir(sub, 0755), 0);
  pgshards_write(sub, "s_", tok, n, shard_tokens);
  const int k = snprintf(pat, cap, "%s/s_*.bin", sub);
  cr_assert(k > 0 && (size_t)k < cap);
}

/* x[i] = i: a row's ids name the positions it came from. */
static uint16_t *iota_tokens(size_t n) {
  uint16_t *t = malloc(n * sizeof *t);
  cr_assert_not_null(t);
  for (size_t i = 0; i < n; i++) t[i] = (uint16_t)i;
  return t;
}

static pg_batches *open_ok(const char *pat, int mode, int T, uint32_t vocab, int bos,
                          uint64_t seed) {
  pg_err e;
  pg_batches *l = NULL;
  cr_assert_eq(pg_batches_open(&l, pat, mode, T, vocab, bos, seed, &e), PG_OK, "%s", e.msg);
  cr_assert_not_null(l);
  return l;
}

/* One row (B = 1) into ids/targets (T each), checking targets are ids shifted by one. */
static void next_row(pg_batches *l, int T, int32_t *ids, int32_t *tg) {
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 1, ids, tg, &e), PG_OK, "%s", e.msg);
  for (int t = 0; t + 1 < T; t++) cr_assert_eq(tg[t], ids[t + 1]);
}

/* ---- modes ---- */

Test(loader, mode_names) {
  cr_assert_str_eq(pg_batches_mode_name(PG_BATCHES_SEQUENTIAL), "sequential");
  cr_assert_str_eq(pg_batches_mode_name(PG_BATCHES_SHUFFLED), "shuffled");
  cr_assert_str_eq(pg_batches_mode_name(PG_BATCHES_PACKED), "packed");
  cr_assert_null(pg_batches_mode_name(3));
  cr_assert_null(pg_batches_mode_name(-1));
  cr_assert_eq(pg_batches_mode_parse("sequential"), PG_BATCHES_SEQUENTIAL);
  cr_assert_eq(pg_batches_mode_parse("shuffled"), PG_BATCHES_SHUFFLED);
  cr_assert_eq(pg_batches_mode_parse("packed"), PG_BATCHES_PACKED);
  cr_assert_eq(pg_batches_mode_parse("Packed"), -1);
  cr_assert_eq(pg_batches_mode_parse(""), -1);
  cr_assert_eq(pg_batches_mode_parse(NULL), -1);
}

/* ---- sequential ---- */

Test(loader, sequential_first_batches) {
  enum { N = 100, T = 8, B = 3 };
  uint16_t tok[N];
  for (int i = 0; i < N; i++) tok[i] = (uint16_t)(1000 + 7 * i); /* distinct, not the index */
  char pat[256];
  write_stream("seq", tok, N, 1000, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 2000, 1, 5);
  cr_assert_eq(pg_batches_tokens(l), N);
  int32_t ids[B * T], tg[B * T];
  pg_err e;
  for (int b = 0; b < 2; b++) {
    cr_assert_eq(pg_batches_next(l, B, ids, tg, &e), PG_OK, "%s", e.msg);
    for (int r = 0; r < B; r++) {
      const int p = (b * B + r) * T;
      for (int t = 0; t < T; t++) {
        cr_assert_eq(ids[r * T + t], tok[p + t], "batch %d row %d t %d", b, r, t);
        cr_assert_eq(tg[r * T + t], tok[p + t + 1], "batch %d row %d t %d", b, r, t);
      }
      /* consecutive rows overlap by one token */
      if (r + 1 < B) cr_assert_eq(tg[r * T + T - 1], ids[(r + 1) * T]);
    }
  }
  const pg_batches_pos pos = pg_batches_get_pos(l);
  cr_assert_eq(pos.epoch, 0);
  cr_assert_eq(pos.offset, 6 * T);
  cr_assert_eq(pos.skipped, 0);
  cr_assert_eq(pos.phase, 0);
  cr_assert_eq(pos.rng, 5); /* the seed, unused */
  cr_assert_eq(pg_batches_skipped(l), 0);
  pg_batches_free(l);
}

Test(loader, sequential_wraps_dropping_the_tail) {
  enum { N = 30, T = 8 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("wrap", tok, N, 1000, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 65536, 1, 0);
  int32_t ids[T], tg[T];
  /* rows at 0, 8, 16 (16 + 9 <= 30); 24 + 9 > 30, so the epoch ends there */
  for (int r = 0; r < 3; r++) {
    next_row(l, T, ids, tg);
    cr_assert_eq(ids[0], 8 * r);
    cr_assert_eq(tg[T - 1], 8 * r + T);
  }
  pg_batches_pos pos = pg_batches_get_pos(l);
  cr_assert_eq(pos.epoch, 1);
  cr_assert_eq(pos.offset, 0);
  next_row(l, T, ids, tg);
  cr_assert_eq(ids[0], 0);
  pos = pg_batches_get_pos(l);
  cr_assert_eq(pos.epoch, 1);
  cr_assert_eq(pos.offset, T);

  /* N = 25 = 3T + 1: the last row ends on the last token exactly, nothing is dropped */
  write_stream("exact", tok, 25, 1000, pat, sizeof pat);
  pg_batches *m = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 65536, 1, 0);
  int32_t ids3[3 * T], tg3[3 * T];
  pg_err e;
  cr_assert_eq(pg_batches_next(m, 3, ids3, tg3, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(tg3[3 * T - 1], 24);
  cr_assert_eq(pg_batches_get_pos(m).epoch, 1);
  pg_batches_free(m);
  pg_batches_free(l);
  free(tok);
}

Test(loader, sequential_rows_cross_shard_files) {
  enum { N = 45, T = 8 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("cross", tok, N, 10, pat, sizeof pat); /* 5 files: 10,10,10,10,5 */
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 65536, 1, 0);
  cr_assert_eq(pg_batches_tokens(l), N);
  int32_t ids[5 * T], tg[5 * T];
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 5, ids, tg, &e), PG_OK, "%s", e.msg);
  for (int i = 0; i < 5 * T; i++) { /* rows at 0..32: [8..16] spans files 0 and 1, etc. */
    cr_assert_eq(ids[i], i);
    cr_assert_eq(tg[i], i + 1);
  }
  pg_batches_free(l);

  /* a row of 26 tokens spanning three files */
  l = open_ok(pat, PG_BATCHES_SEQUENTIAL, 25, 65536, 1, 0);
  int32_t big[25], bigt[25];
  next_row(l, 25, big, bigt);
  for (int t = 0; t < 25; t++) cr_assert_eq(big[t], t);
  cr_assert_eq(bigt[24], 25);
  pg_batches_free(l);
  free(tok);
}

Test(loader, t_equals_one) {
  enum { N = 5 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("t1", tok, N, 2, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, 1, 65536, 1, 0);
  int32_t ids[6], tg[6];
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 6, ids, tg, &e), PG_OK, "%s", e.msg);
  const int32_t want_ids[6] = {0, 1, 2, 3, 0, 1}, want_tg[6] = {1, 2, 3, 4, 1, 2};
  cr_assert_arr_eq(ids, want_ids, sizeof ids);
  cr_assert_arr_eq(tg, want_tg, sizeof tg);
  pg_batches_free(l);
  free(tok);
}

/* ---- shuffled ---- */

/* Rows rows of one loader over pat, ids only. */
static int32_t *take_ids(const char *pat, int mode, int T, uint64_t seed, int rows) {
  pg_batches *l = open_ok(pat, mode, T, 65536, 1, seed);
  int32_t *ids = malloc((size_t)rows * T * sizeof *ids), *tg = malloc((size_t)T * sizeof *tg);
  cr_assert(ids && tg);
  for (int r = 0; r < rows; r++) next_row(l, T, ids + (size_t)r * T, tg);
  free(tg);
  pg_batches_free(l);
  return ids;
}

Test(loader, shuffled_deterministic_per_seed) {
  enum { N = 500, T = 16, ROWS = 40 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("det", tok, N, 128, pat, sizeof pat);
  int32_t *a = take_ids(pat, PG_BATCHES_SHUFFLED, T, 42, ROWS);
  int32_t *b = take_ids(pat, PG_BATCHES_SHUFFLED, T, 42, ROWS);
  int32_t *c = take_ids(pat, PG_BATCHES_SHUFFLED, T, 43, ROWS);
  cr_assert_eq(memcmp(a, b, (size_t)ROWS * T * sizeof *a), 0);
  cr_assert_neq(memcmp(a, c, (size_t)ROWS * T * sizeof *a), 0);
  /* every row is a contiguous window */
  for (int r = 0; r < ROWS; r++)
    for (int t = 1; t < T; t++) cr_assert_eq(a[r * T + t], a[r * T] + t);
  free(a);
  free(b);
  free(c);
  free(tok);
}

Test(loader, shuffled_epochs_cover_every_window_once) {
  enum { N = 203, T = 8, EPOCHS = 6 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("cover", tok, N, 50, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SHUFFLED, T, 65536, 1, 7);
  int32_t ids[T], tg[T];
  int32_t order[EPOCHS][N];
  uint64_t phases[EPOCHS], wins[EPOCHS];
  for (int ep = 0; ep < EPOCHS; ep++) {
    const pg_batches_pos p0 = pg_batches_get_pos(l);
    cr_assert_eq(p0.epoch, (uint64_t)ep);
    cr_assert_eq(p0.offset, 0);
    cr_assert_lt(p0.phase, T);
    phases[ep] = p0.phase;
    const uint64_t w = (N - 1 - p0.phase) / T;
    wins[ep] = w;
    int seen[N / T + 1];
    memset(seen, 0, sizeof seen);
    for (uint64_t k = 0; k < w; k++) {
      next_row(l, T, ids, tg);
      const int64_t s = ids[0];
      cr_assert_geq(s, (int64_t)p0.phase);
      cr_assert_eq((s - (int64_t)p0.phase) % T, 0, "window at %lld, phase %llu", (long long)s,
                   (unsigned long long)p0.phase);
      cr_assert_leq(s + T, N - 1);
      const int64_t kk = (s - (int64_t)p0.phase) / T;
      cr_assert_lt(kk, (int64_t)w);
      cr_assert_eq(seen[kk], 0, "window %lld visited twice in epoch %d", (long long)kk, ep);
      seen[kk] = 1;
      order[ep][k] = (int32_t)kk;
      cr_assert_eq(tg[T - 1], s + T);
      const pg_batches_pos pk = pg_batches_get_pos(l);
      if (k + 1 < w) {
        cr_assert_eq(pk.epoch, (uint64_t)ep);
        cr_assert_eq(pk.offset, k + 1);
        cr_assert_eq(pk.rng, p0.rng);
      }
    }
  }
  /* the second epoch is not a replay of the first; phases are not all equal */
  cr_assert(phases[0] != phases[1] || wins[0] != wins[1] ||
            memcmp(order[0], order[1], wins[0] * sizeof order[0][0]) != 0);
  int same = 1;
  for (int ep = 1; ep < EPOCHS; ep++) same &= phases[ep] == phases[0];
  cr_assert(!same, "six epochs drew the same phase");
  pg_batches_free(l);
  free(tok);
}

/* The documented draws, written out again: phase, then Fisher–Yates from the top. */
Test(loader, shuffled_follows_the_documented_draws) {
  enum { N = 150, T = 8 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("doc", tok, N, 64, pat, sizeof pat);
  const uint64_t seed = 0x1234567890abcdefull;
  pg_batches *l = open_ok(pat, PG_BATCHES_SHUFFLED, T, 65536, 1, seed);
  pg_rng r;
  pg_rng_seed(&r, seed);
  int32_t ids[T], tg[T];
  for (int ep = 0; ep < 3; ep++) {
    const uint64_t s = r.state;
    const uint64_t phase = pg_rng_u64(&r) % T; /* N >= 2T: P = T */
    const uint64_t w = (N - 1 - phase) / T;
    uint64_t perm[N];
    for (uint64_t k = 0; k < w; k++) perm[k] = k;
    for (uint64_t i = w - 1; i > 0; i--) {
      const uint64_t j = pg_rng_u64(&r) % (i + 1), t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
    const pg_batches_pos p = pg_batches_get_pos(l);
    cr_assert_eq(p.rng, s);
    cr_assert_eq(p.phase, phase);
    for (uint64_t k = 0; k < w; k++) {
      next_row(l, T, ids, tg);
      cr_assert_eq((uint64_t)ids[0], phase + perm[k] * T, "epoch %d row %llu", ep,
                   (unsigned long long)k);
    }
  }
  pg_batches_free(l);
  free(tok);
}

Test(loader, shuffled_short_stream_limits_the_phase) {
  enum { N = 12, T = 8 }; /* N < 2T: P = N − T = 4, one window per epoch */
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("short", tok, N, 5, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SHUFFLED, T, 65536, 1, 99);
  int32_t ids[T], tg[T];
  int seen[4] = {0};
  for (int ep = 0; ep < 40; ep++) {
    const pg_batches_pos p = pg_batches_get_pos(l);
    cr_assert_eq(p.epoch, (uint64_t)ep);
    cr_assert_lt(p.phase, 4);
    next_row(l, T, ids, tg);
    cr_assert_eq((uint64_t)ids[0], p.phase);
    cr_assert_eq(tg[T - 1], (int32_t)p.phase + T);
    seen[p.phase] = 1;
  }
  cr_assert(seen[0] && seen[1] && seen[2] && seen[3], "40 epochs did not draw every phase");
  pg_batches_free(l);
  free(tok);
}

/* ---- packed ---- */

Test(loader, packed_hand_made_stream) {
  enum { T = 4 };
  /* BOS (1) at 2, 8, 11 and 17; a row at p needs p + 5 <= 19, so 17 is no start */
  const uint16_t tok[] = {5, 6, 1, 7, 8, 9, 10, 11, 1, 12, 13, 1, 14, 15, 16, 17, 18, 1, 19};
  const size_t n = sizeof tok / sizeof tok[0];
  char pat[256];
  write_stream("hand", tok, n, 7, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_PACKED, T, 100, 1, 0);
  int32_t ids[T], tg[T];
  cr_assert_eq(pg_batches_skipped(l), 2); /* the tokens before the first BOS */
  cr_assert_eq(pg_batches_get_pos(l).offset, 2);

  next_row(l, T, ids, tg); /* at 2: x[2..6] */
  const int32_t r0[T] = {1, 7, 8, 9}, t0[T] = {7, 8, 9, 10};
  cr_assert_arr_eq(ids, r0, sizeof ids);
  cr_assert_arr_eq(tg, t0, sizeof tg);
  cr_assert_eq(pg_batches_skipped(l), 4); /* 6 → 8 */

  next_row(l, T, ids, tg); /* at 8: x[8..12], a row packing two documents */
  const int32_t r1[T] = {1, 12, 13, 1}, t1[T] = {12, 13, 1, 14};
  cr_assert_arr_eq(ids, r1, sizeof ids);
  cr_assert_arr_eq(tg, t1, sizeof tg);
  /* from 12 no start remains: (19 − 12) + 2 skipped, epoch 1 at the first start */
  pg_batches_pos p = pg_batches_get_pos(l);
  cr_assert_eq(pg_batches_skipped(l), 13);
  cr_assert_eq(p.skipped, 13);
  cr_assert_eq(p.epoch, 1);
  cr_assert_eq(p.offset, 2);

  next_row(l, T, ids, tg);
  cr_assert_arr_eq(ids, r0, sizeof ids);
  pg_batches_free(l);
}

Test(loader, packed_bos_next_to_bos_skips_nothing) {
  enum { T = 3 };
  /* every row ends on a BOS, so the next row starts there */
  const uint16_t tok[] = {1, 4, 5, 1, 6, 7, 1, 8, 9, 1};
  char pat[256];
  write_stream("tight", tok, 10, 4, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_PACKED, T, 16, 1, 0);
  int32_t ids[3 * T], tg[3 * T];
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 3, ids, tg, &e), PG_OK, "%s", e.msg);
  for (int i = 0; i < 3 * T; i++) cr_assert_eq(ids[i], tok[i]);
  cr_assert_eq(pg_batches_skipped(l), 1); /* from 9 (the last BOS, no room): 1 + 0 */
  cr_assert_eq(pg_batches_get_pos(l).epoch, 1);
  pg_batches_free(l);
}

/* Documents of random length (BOS then 1..maxlen tokens), ids 2..vocab−1. */
static uint16_t *random_docs(size_t n, unsigned maxlen, unsigned lead, uint64_t seed) {
  uint16_t *t = malloc(n * sizeof *t);
  cr_assert_not_null(t);
  pg_rng r;
  pg_rng_seed(&r, seed);
  size_t k = 0;
  for (; k < lead && k < n; k++) t[k] = (uint16_t)(2 + pg_rng_u64(&r) % 500);
  while (k < n) {
    t[k++] = 1;
    const unsigned len = 1 + (unsigned)(pg_rng_u64(&r) % maxlen);
    for (unsigned j = 0; j < len && k < n; j++) t[k++] = (uint16_t)(2 + pg_rng_u64(&r) % 500);
  }
  return t;
}

Test(loader, packed_rows_start_at_bos) {
  enum { N = 2000, T = 16 };
  uint16_t *tok = random_docs(N, 40, 5, 3);
  char pat[256];
  write_stream("docs", tok, N, 300, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_PACKED, T, 1024, 1, 0);
  int32_t ids[T], tg[T];
  uint64_t off = pg_batches_get_pos(l).offset, skipped = pg_batches_skipped(l), epoch = 0;
  cr_assert_eq(skipped, 5);
  for (int r = 0; r < 400; r++) {
    next_row(l, T, ids, tg);
    cr_assert_eq(ids[0], 1, "row %d starts with %d", r, ids[0]);
    for (int t = 0; t < T; t++) cr_assert_eq(ids[t], tok[off + (uint64_t)t]);
    cr_assert_eq(tg[T - 1], tok[off + T]);
    /* the skipped count grows by the distance to the next start (or around the end) */
    const pg_batches_pos p = pg_batches_get_pos(l);
    const uint64_t from = off + T;
    if (p.epoch == epoch) {
      cr_assert_geq(p.offset, from);
      cr_assert_eq(p.skipped - skipped, p.offset - from);
      for (uint64_t i = from; i < p.offset; i++) cr_assert_neq(tok[i], 1);
    } else {
      cr_assert_eq(p.epoch, epoch + 1);
      cr_assert_eq(p.skipped - skipped, (N - from) + p.offset);
      epoch = p.epoch;
    }
    off = p.offset;
    skipped = p.skipped;
  }
  cr_assert_geq(epoch, 2, "400 rows should wrap at least twice");
  pg_batches_free(l);
  free(tok);
}

/* ---- save and restore ---- */

static void save_restore(int mode, uint64_t seed) {
  enum { N = 150, T = 8, B = 2, FIRST = 5, THEN = 7 };
  uint16_t *tok = mode == PG_BATCHES_PACKED ? random_docs(N, 9, 3, seed) : iota_tokens(N);
  char pat[256], name[32];
  snprintf(name, sizeof name, "sr%d", mode);
  write_stream(name, tok, N, 40, pat, sizeof pat);
  pg_batches *a = open_ok(pat, mode, T, 65536, 1, seed);
  int32_t ids[B * T], tg[B * T];
  int32_t want_ids[THEN][B * T], want_tg[THEN][B * T];
  pg_err e;
  for (int k = 0; k < FIRST; k++)
    cr_assert_eq(pg_batches_next(a, B, ids, tg, &e), PG_OK, "%s", e.msg);
  const pg_batches_pos saved = pg_batches_get_pos(a);
  for (int k = 0; k < THEN; k++)
    cr_assert_eq(pg_batches_next(a, B, want_ids[k], want_tg[k], &e), PG_OK, "%s", e.msg);
  const pg_batches_pos end = pg_batches_get_pos(a);
  cr_assert_gt(end.epoch, saved.epoch, "%s: the 7 batches should cross an epoch boundary",
               pg_batches_mode_name(mode));

  /* a fresh loader placed at the saved position */
  pg_batches *b = open_ok(pat, mode, T, 65536, 1, seed);
  cr_assert_eq(pg_batches_set_pos(b, &saved, &e), PG_OK, "%s", e.msg);
  const pg_batches_pos got = pg_batches_get_pos(b);
  cr_assert_eq(memcmp(&got, &saved, sizeof got), 0);
  cr_assert_eq(pg_batches_skipped(b), saved.skipped);
  for (int k = 0; k < THEN; k++) {
    cr_assert_eq(pg_batches_next(b, B, ids, tg, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(memcmp(ids, want_ids[k], sizeof ids), 0, "%s: batch %d ids",
                 pg_batches_mode_name(mode), k);
    cr_assert_eq(memcmp(tg, want_tg[k], sizeof tg), 0, "%s: batch %d targets",
                 pg_batches_mode_name(mode), k);
  }
  const pg_batches_pos end_b = pg_batches_get_pos(b);
  cr_assert_eq(memcmp(&end_b, &end, sizeof end), 0);

  /* the same loader rewound to its own earlier position */
  cr_assert_eq(pg_batches_set_pos(a, &saved, &e), PG_OK, "%s", e.msg);
  for (int k = 0; k < THEN; k++) {
    cr_assert_eq(pg_batches_next(a, B, ids, tg, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(memcmp(ids, want_ids[k], sizeof ids), 0);
    cr_assert_eq(memcmp(tg, want_tg[k], sizeof tg), 0);
  }

  /* a position saved after the boundary restores too */
  cr_assert_eq(pg_batches_next(a, B, ids, tg, &e), PG_OK, "%s", e.msg);
  const pg_batches_pos late = pg_batches_get_pos(a);
  cr_assert_eq(pg_batches_next(a, B, want_ids[0], want_tg[0], &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_batches_set_pos(b, &late, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_batches_next(b, B, ids, tg, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(memcmp(ids, want_ids[0], sizeof ids), 0);
  cr_assert_eq(memcmp(tg, want_tg[0], sizeof tg), 0);

  pg_batches_free(a);
  pg_batches_free(b);
  free(tok);
}

Test(loader, save_restore_sequential) { save_restore(PG_BATCHES_SEQUENTIAL, 11); }
Test(loader, save_restore_shuffled) { save_restore(PG_BATCHES_SHUFFLED, 12); }
Test(loader, save_restore_packed) { save_restore(PG_BATCHES_PACKED, 13); }

/* ---- errors ---- */

static void open_fails(const char *pat, int mode, int T, uint32_t vocab, int bos, int status,
                       const char *needle) {
  pg_err e;
  pg_batches *l = (pg_batches *)&e; /* must come back NULL */
  cr_assert_eq(pg_batches_open(&l, pat, mode, T, vocab, bos, 0, &e), status, "%s", e.msg);
  cr_assert_null(l);
  cr_assert(strstr(e.msg, needle), "message lacks \"%s\": %s", needle, e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
}

Test(loader, open_errors) {
  uint16_t tok[20];
  for (int i = 0; i < 20; i++) tok[i] = (uint16_t)(2 + i);
  char pat[256], nobos[256], tail[256], big[256];
  write_stream("e", tok, 8, 100, pat, sizeof pat);
  write_stream("nobos", tok, 20, 100, nobos, sizeof nobos);
  tok[16] = 1; /* a BOS with no room for a row of 4 + 1 from it (16 + 5 > 20) */
  write_stream("tail", tok, 20, 100, tail, sizeof tail);
  tok[3] = 300;
  write_stream("big", tok, 20, 100, big, sizeof big);

  open_fails(pat, PG_BATCHES_SEQUENTIAL, 0, 100, 1, PG_E_ARG, "T = 0");
  open_fails(pat, PG_BATCHES_SHUFFLED, -3, 100, 1, PG_E_ARG, pat);
  open_fails(pat, 3, 4, 100, 1, PG_E_ARG, "unknown mode 3");
  open_fails(pat, -1, 4, 100, 1, PG_E_ARG, pat);
  /* 8 tokens: a row of T = 8 needs 9 */
  open_fails(pat, PG_BATCHES_SEQUENTIAL, 8, 100, 1, PG_E_ARG, "fewer than the T+1 = 9");
  open_fails(pat, PG_BATCHES_SHUFFLED, 8, 100, 1, PG_E_ARG, pat);
  open_fails(pat, PG_BATCHES_PACKED, 8, 100, 1, PG_E_ARG, pat);
  open_fails(nobos, PG_BATCHES_PACKED, 4, 100, 1, PG_E_ARG, "no BOS");
  open_fails(nobos, PG_BATCHES_PACKED, 4, 100, 1, PG_E_ARG, nobos);
  open_fails(tail, PG_BATCHES_PACKED, 4, 100, 1, PG_E_ARG, "no BOS");
  open_fails(tail, PG_BATCHES_PACKED, 4, 100, -1, PG_E_ARG, "BOS id");
  open_fails(tail, PG_BATCHES_PACKED, 4, 100, 65536, PG_E_ARG, "BOS id");
  open_fails(big, PG_BATCHES_SEQUENTIAL, 4, 100, 1, PG_E_TOKEN_RANGE, "s_000000.bin");

  /* the tail BOS is no start, but in the other modes bos is ignored */
  pg_batches *l = open_ok(tail, PG_BATCHES_SEQUENTIAL, 4, 100, -1, 0);
  pg_batches_free(l);
  l = open_ok(tail, PG_BATCHES_PACKED, 3, 100, 1, 0); /* 16 + 4 <= 20: now a start */
  cr_assert_eq(pg_batches_skipped(l), 16);
  pg_batches_free(l);
  /* 9 tokens fit T = 8 exactly */
  write_stream("nine", tok, 9, 100, pat, sizeof pat);
  l = open_ok(pat, PG_BATCHES_SHUFFLED, 8, 1000, 1, 0);
  pg_batches_free(l);

  char none[256];
  snprintf(none, sizeof none, "%s/missing_*.bin", dir);
  pg_err e;
  l = NULL;
  cr_assert_eq(pg_batches_open(&l, none, PG_BATCHES_SEQUENTIAL, 4, 100, 1, 0, &e), PG_E_EMPTY_SET);
  cr_assert_null(l);
  cr_assert_eq(pg_batches_open(NULL, pat, PG_BATCHES_SEQUENTIAL, 4, 100, 1, 0, &e), PG_E_ARG);
  cr_assert_eq(pg_batches_open(&l, NULL, PG_BATCHES_SEQUENTIAL, 4, 100, 1, 0, &e), PG_E_ARG);
}

Test(loader, next_errors_leave_the_position) {
  uint16_t *tok = iota_tokens(40);
  char pat[256];
  write_stream("n", tok, 40, 100, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, 4, 65536, 1, 0);
  int32_t ids[8], tg[8];
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 0, ids, tg, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "B = 0"), "%s", e.msg);
  cr_assert(strstr(e.msg, pat), "%s", e.msg);
  cr_assert_eq(pg_batches_next(l, -2, ids, tg, &e), PG_E_ARG);
  cr_assert_eq(pg_batches_next(l, 1, NULL, tg, &e), PG_E_ARG);
  cr_assert_eq(pg_batches_next(l, 1, ids, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_batches_next(NULL, 1, ids, tg, &e), PG_E_ARG);
  cr_assert_eq(pg_batches_get_pos(l).offset, 0);
  next_row(l, 4, ids, tg);
  cr_assert_eq(ids[0], 0);
  pg_batches_free(l);
  free(tok);
}

/* set_pos must refuse bad, leaving the position as it was. */
static void set_pos_fails(pg_batches *l, pg_batches_pos bad, const char *needle) {
  const pg_batches_pos before = pg_batches_get_pos(l);
  pg_err e;
  cr_assert_eq(pg_batches_set_pos(l, &bad, &e), PG_E_ARG, "accepted (needle %s)", needle);
  cr_assert(strstr(e.msg, needle), "message lacks \"%s\": %s", needle, e.msg);
  const pg_batches_pos after = pg_batches_get_pos(l);
  cr_assert_eq(memcmp(&before, &after, sizeof before), 0);
}

Test(loader, set_pos_rejects_bad_positions) {
  enum { N = 100, T = 8 };
  uint16_t *tok = iota_tokens(N);
  char pat[256];
  write_stream("pos", tok, N, 30, pat, sizeof pat);
  int32_t ids[T], tg[T];
  pg_err e;

  /* sequential: valid offsets are multiples of 8 up to 88 (88 + 9 <= 100) */
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 65536, 1, 0);
  next_row(l, T, ids, tg);
  pg_batches_pos p = pg_batches_get_pos(l), q;
  q = p, q.offset = 12, set_pos_fails(l, q, "not a multiple of T = 8");
  q = p, q.offset = 96, set_pos_fails(l, q, "no room");
  q = p, q.offset = 1000, set_pos_fails(l, q, "offset 1000");
  q = p, q.skipped = 1, set_pos_fails(l, q, "skipped");
  q = p, q.phase = 1, set_pos_fails(l, q, "phase");
  q = p, q.offset = 88, q.epoch = 9, q.rng = 77;
  cr_assert_eq(pg_batches_set_pos(l, &q, &e), PG_OK, "%s", e.msg);
  next_row(l, T, ids, tg);
  cr_assert_eq(ids[0], 88);
  cr_assert_eq(pg_batches_get_pos(l).epoch, 10);
  cr_assert_eq(pg_batches_get_pos(l).rng, 0); /* rng is ignored: the seed stays */
  cr_assert_eq(pg_batches_set_pos(l, NULL, &e), PG_E_ARG);
  pg_batches_free(l);

  /* shuffled */
  l = open_ok(pat, PG_BATCHES_SHUFFLED, T, 65536, 1, 21);
  next_row(l, T, ids, tg);
  p = pg_batches_get_pos(l);
  const uint64_t w = (N - 1 - p.phase) / T;
  q = p, q.phase = T, set_pos_fails(l, q, "not below T = 8");
  q = p, q.phase = (p.phase + 1) % T, set_pos_fails(l, q, "draws phase");
  q = p, q.rng = p.rng + 1, q.phase = p.phase;
  {
    pg_rng r;
    pg_rng_seed(&r, q.rng);
    if (pg_rng_u64(&r) % T != p.phase) set_pos_fails(l, q, "draws phase");
  }
  q = p, q.offset = w, set_pos_fails(l, q, "windows");
  q = p, q.skipped = 2, set_pos_fails(l, q, "skipped");
  q = p, q.offset = w - 1;
  cr_assert_eq(pg_batches_set_pos(l, &q, &e), PG_OK, "%s", e.msg);
  next_row(l, T, ids, tg);
  cr_assert_eq(pg_batches_get_pos(l).epoch, p.epoch + 1);
  pg_batches_free(l);

  /* packed */
  uint16_t *docs = random_docs(N, 6, 2, 5);
  write_stream("posp", docs, N, 30, pat, sizeof pat);
  l = open_ok(pat, PG_BATCHES_PACKED, T, 65536, 1, 0);
  p = pg_batches_get_pos(l);
  q = p, q.offset = p.offset + 1, set_pos_fails(l, q, "not the BOS id 1");
  q = p, q.offset = N - T, set_pos_fails(l, q, "no room");
  q = p, q.phase = 3, set_pos_fails(l, q, "phase");
  q = p, q.skipped = 12345, q.epoch = 4;
  cr_assert_eq(pg_batches_set_pos(l, &q, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_batches_skipped(l), 12345);
  pg_batches_free(l);
  free(docs);
  free(tok);
}

/* pgtrain's shards shrinking under a running loader: the row that reaches past the new end is
 * one PG_E_IO line naming the file (the mapped loader died with SIGBUS). */
Test(loader, shard_truncated_while_training_is_an_error_not_a_crash) {
  enum { N = 200, T = 8 };
  uint16_t *tok = iota_tokens(N);
  char pat[256], file[300];
  write_stream("cut", tok, N, 1000, pat, sizeof pat);
  pg_batches *l = open_ok(pat, PG_BATCHES_SEQUENTIAL, T, 1000, 1, 5);
  snprintf(file, sizeof file, "%s/cut/s_000000.bin", dir);
  cr_assert_eq(truncate(file, 1024 + 2 * 20), 0);
  int32_t ids[4 * T], tg[4 * T];
  pg_err e;
  cr_assert_eq(pg_batches_next(l, 2, ids, tg, &e), PG_OK, "%s", e.msg); /* tokens 0..16 remain */
  cr_assert_eq(pg_batches_next(l, 2, ids, tg, &e), PG_E_IO);
  cr_assert(strstr(e.msg, "s_000000.bin") && strstr(e.msg, "shrank"), "%s", e.msg);
  pg_batches_free(l);
  free(tok);
}
