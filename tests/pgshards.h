/* pgshards.h: token streams for the test programs, and their shard files: a learnable stream, a
 * stream of random documents, and the writer that puts a stream into shards (every step asserted).
 * For Criterion programs; one copy of what several programs wrote alike. */
#ifndef PGSHARDS_H
#define PGSHARDS_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "pg_shard.h"

/* t[0..n) into the existing folder dir as shards PREFIX000000.bin, ... of shard_tokens tokens. */
static inline void pgshards_write(const char *dir, const char *prefix, const uint16_t *t, size_t n,
                                  uint64_t shard_tokens) {
  pg_shard_writer *w;
  pg_err e;
  cr_assert_eq(pg_shard_writer_open(&w, dir, prefix, shard_tokens, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_append(w, t, n, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK, "%s", e.msg);
  pg_shard_writer_free(w);
}

/* n tokens (malloc'd) that a model learns in a few steps: documents of 6..25 tokens starting with
 * BOS (1), each continuing the cycle of ids 2 + (k * 7 mod cycle) from a random start (LCG from
 * seed). */
static inline uint16_t *pgshards_learnable(uint64_t n, uint32_t seed, uint16_t cycle) {
  uint16_t *t = malloc(n * sizeof *t);
  cr_assert_not_null(t);
  uint32_t x = seed;
  uint64_t next = 0;
  uint16_t cur = 2;
  for (uint64_t i = 0; i < n; i++) {
    x = x * 1664525u + 1013904223u;
    if (i == next) {
      t[i] = 1;
      next = i + 6 + (x >> 16) % 20;
      cur = (uint16_t)(2 + (x >> 8) % cycle);
    } else {
      cur = (uint16_t)(2 + (cur - 2 + 7) % cycle);
      t[i] = cur;
    }
  }
  return t;
}

/* The trainer tests' data under dir: dir/train/fineweb_train_*.bin (10,000 tokens, seed 7) and
 * dir/val/fineweb_val_*.bin (1,200 tokens, seed 99), learnable streams of ids below 2 + cycle in
 * shards of 3,000 tokens. */
static inline void pgshards_trainer_data(const char *dir, uint16_t cycle) {
  static const struct {
    const char *sub, *prefix;
    uint64_t n;
    uint32_t seed;
  } parts[2] = {{"train", "fineweb_train_", 10000, 7}, {"val", "fineweb_val_", 1200, 99}};
  for (int k = 0; k < 2; k++) {
    char d[160];
    snprintf(d, sizeof d, "%s/%s", dir, parts[k].sub);
    mkdir(d, 0700);
    uint16_t *t = pgshards_learnable(parts[k].n, parts[k].seed, cycle);
    pgshards_write(d, parts[k].prefix, t, parts[k].n, 3000);
    free(t);
  }
}

/* n tokens (malloc'd) of random documents: each of min_len..min_len + span - 1 tokens, starting
 * with BOS (1) (never as the last token), the other ids in [4, vocab) (xorshift32 from seed). */
static inline uint16_t *pgshards_random_docs(uint64_t n, uint32_t seed, uint32_t vocab,
                                             uint32_t min_len, uint32_t span) {
  uint16_t *t = malloc(n * sizeof *t);
  cr_assert_not_null(t);
  uint32_t x = seed;
  uint64_t next = 0;
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    if (i == next && i + 1 < n) {
      t[i] = 1;
      next = i + min_len + x % span;
    } else {
      t[i] = (uint16_t)(4 + x % (vocab - 4));
    }
  }
  return t;
}

#endif
