/* pg_batches.c: the trainer's data loader: sequential, shuffled (random phase, Fisher–Yates
 * window order) and document-packed rows read from a shard set (see pg_batches.h). */
#include "pg_batches.h"

#include <stdlib.h>
#include <string.h>

#include "pg_io.h"
#include "pg_rng.h"

struct pg_batches {
  pg_shard_set *set;
  int mode;
  int T;
  int bos;
  uint64_t seed;
  uint64_t n;         /* tokens in the stream */
  uint64_t first_bos; /* packed: q0, the first position a row may start at */
  uint64_t *perm;     /* shuffled: this epoch's window order (room for the phase-0 count) */
  uint64_t nwin;      /* shuffled: W, the windows of this epoch */
  uint64_t next_rng;  /* shuffled: the rng state after this epoch's draws (the next epoch's S) */
  pg_batches_pos pos;
};

static const char *const MODE_NAMES[] = {"sequential", "shuffled", "packed"};

const char *pg_batches_mode_name(int mode) {
  return mode >= PG_BATCHES_SEQUENTIAL && mode <= PG_BATCHES_PACKED ? MODE_NAMES[mode] : NULL;
}

int pg_batches_mode_parse(const char *s) {
  if (!s) return -1;
  for (int k = PG_BATCHES_SEQUENTIAL; k <= PG_BATCHES_PACKED; k++)
    if (!strcmp(s, MODE_NAMES[k])) return k;
  return -1;
}

/* ---- the stream ---- */

/* *at = the first p in [from, limit) with x[p] == tok, or limit when there is none (the tokens
 * read piecewise from the shard files). */
static int find_token(const pg_shard_set *set, uint64_t from, uint64_t limit, uint16_t tok,
                      uint64_t *at, pg_err *err) {
  enum { PIECE = 32768 };
  uint16_t buf[PIECE / 8];
  *at = limit;
  for (uint64_t p = from; p < limit;) {
    const uint64_t m = limit - p < PIECE / 8 ? limit - p : PIECE / 8;
    PG_TRY(pg_shard_set_copy(set, p, m, buf, err));
    for (uint64_t i = 0; i < m; i++)
      if (buf[i] == tok) {
        *at = p + i;
        return PG_OK;
      }
    p += m;
  }
  return PG_OK;
}

/* packed: move from offset o to the next start (a BOS with room for a row), wrapping if needed. */
static int packed_advance(pg_batches *l, uint64_t o, pg_err *err) {
  const uint64_t starts = l->n - (uint64_t)l->T; /* a row at p fits when p < starts */
  uint64_t q;
  PG_TRY(find_token(l->set, o, starts, (uint16_t)l->bos, &q, err));
  if (q < starts) {
    l->pos.skipped += q - o;
    l->pos.offset = q;
  } else {
    l->pos.skipped += (l->n - o) + l->first_bos;
    l->pos.epoch++;
    l->pos.offset = l->first_bos;
  }
  return PG_OK;
}

/* shuffled: P, the phase modulus min(T, N − T). */
static uint64_t phase_mod(const pg_batches *l) {
  const uint64_t t = (uint64_t)l->T, room = l->n - t;
  return t < room ? t : room;
}

/* shuffled: the phase drawn first from state s. */
static uint64_t draw_phase(const pg_batches *l, uint64_t s) {
  pg_rng r;
  pg_rng_seed(&r, s);
  return pg_rng_u64(&r) % phase_mod(l);
}

static uint64_t window_count(const pg_batches *l, uint64_t phase) {
  return (l->n - 1 - phase) / (uint64_t)l->T;
}

/* shuffled: lay out the epoch that starts from rng state s: phase, W, the permutation and the
 * state after the epoch's draws (the next epoch's s). */
static void shuffle_epoch(pg_batches *l, uint64_t s) {
  pg_rng r;
  pg_rng_seed(&r, s);
  const uint64_t phase = pg_rng_u64(&r) % phase_mod(l);
  const uint64_t w = window_count(l, phase);
  for (uint64_t k = 0; k < w; k++) l->perm[k] = k;
  for (uint64_t i = w - 1; i >= 1; i--) {
    const uint64_t j = pg_rng_u64(&r) % (i + 1);
    const uint64_t t = l->perm[i];
    l->perm[i] = l->perm[j];
    l->perm[j] = t;
  }
  l->nwin = w;
  l->pos.phase = phase;
  l->pos.rng = s;
  l->next_rng = r.state;
}

/* ---- open / free ---- */

int pg_batches_open(pg_batches **out, const char *pattern, int mode, int T, uint32_t vocab,
                   int bos, uint64_t seed, pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, pattern, PG_NO_OFFSET, "loader: no output pointer");
  *out = NULL;
  PG_FAIL_IF(!pattern, err, PG_E_ARG, NULL, PG_NO_OFFSET, "loader: no shard pattern");
  PG_FAIL_IF(!pg_batches_mode_name(mode), err, PG_E_ARG, pattern, PG_NO_OFFSET,
             "loader: unknown mode %d (sequential 0, shuffled 1, packed 2)", mode);
  PG_FAIL_IF(T < 1, err, PG_E_ARG, pattern, PG_NO_OFFSET,
             "loader: sequence length T = %d; it must be at least 1", T);
  PG_FAIL_IF(mode == PG_BATCHES_PACKED && (bos < 0 || bos > 65535), err, PG_E_ARG, pattern,
             PG_NO_OFFSET, "loader: packed mode needs a BOS id in 0..65535, not %d", bos);

  pg_shard_set *set = NULL;
  PG_TRY(pg_shard_set_open(&set, pattern, err));
  int rc = pg_shard_set_check_vocab(set, vocab, err);
  if (rc != PG_OK) {
    pg_shard_set_free(set);
    return rc;
  }
  const uint64_t n = pg_shard_set_count(set), t = (uint64_t)T;
  if (n < t + 1) {
    pg_shard_set_free(set);
    return pg_err_set(err, PG_E_ARG, pattern, PG_NO_OFFSET,
                      "loader: the stream holds %llu tokens, fewer than the T+1 = %llu of one row",
                      (unsigned long long)n, (unsigned long long)(t + 1));
  }

  pg_batches *l = calloc(1, sizeof *l);
  if (!l) {
    pg_shard_set_free(set);
    return pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "loader: out of memory");
  }
  l->set = set;
  l->mode = mode;
  l->T = T;
  l->bos = bos;
  l->seed = seed;
  l->n = n;
  l->pos.rng = seed;

  if (mode == PG_BATCHES_PACKED) {
    rc = find_token(set, 0, n - t, (uint16_t)bos, &l->first_bos, err);
    if (rc != PG_OK) {
      pg_batches_free(l);
      return rc;
    }
    if (l->first_bos == n - t) {
      pg_batches_free(l);
      return pg_err_set(err, PG_E_ARG, pattern, PG_NO_OFFSET,
                        "loader: packed mode finds no BOS (id %d) among the first %llu of the "
                        "%llu tokens, so no row of T+1 = %llu tokens can start at a document",
                        bos, (unsigned long long)(n - t), (unsigned long long)n,
                        (unsigned long long)(t + 1));
    }
    rc = packed_advance(l, 0, err);
    if (rc != PG_OK) {
      pg_batches_free(l);
      return rc;
    }
  } else if (mode == PG_BATCHES_SHUFFLED) {
    const uint64_t wmax = window_count(l, 0);
    if (wmax > SIZE_MAX / sizeof *l->perm || !(l->perm = malloc(wmax * sizeof *l->perm))) {
      pg_batches_free(l);
      return pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET,
                        "loader: out of memory for the order of %llu windows",
                        (unsigned long long)wmax);
    }
    shuffle_epoch(l, seed);
  }
  *out = l;
  return PG_OK;
}

void pg_batches_free(pg_batches *l) {
  if (!l) return;
  pg_shard_set_free(l->set);
  free(l->perm);
  free(l);
}

uint64_t pg_batches_tokens(const pg_batches *l) { return l ? l->n : 0; }

uint64_t pg_batches_skipped(const pg_batches *l) {
  return l && l->mode == PG_BATCHES_PACKED ? l->pos.skipped : 0;
}

/* ---- batches ---- */

/* Where the row at the current position starts. */
static uint64_t row_start(const pg_batches *l) {
  if (l->mode == PG_BATCHES_SHUFFLED) return l->pos.phase + l->perm[l->pos.offset] * (uint64_t)l->T;
  return l->pos.offset;
}

/* Move past the row just taken to where the next one starts. */
static int step(pg_batches *l, pg_err *err) {
  const uint64_t t = (uint64_t)l->T;
  switch (l->mode) {
    case PG_BATCHES_SEQUENTIAL:
      l->pos.offset += t;
      if (l->pos.offset + t + 1 > l->n) {
        l->pos.epoch++;
        l->pos.offset = 0;
      }
      break;
    case PG_BATCHES_SHUFFLED:
      if (++l->pos.offset == l->nwin) {
        l->pos.epoch++;
        l->pos.offset = 0;
        shuffle_epoch(l, l->next_rng);
      }
      break;
    default: /* packed */
      return packed_advance(l, l->pos.offset + t, err);
  }
  return PG_OK;
}

int pg_batches_next(pg_batches *l, int B, int32_t *ids, int32_t *targets, pg_err *err) {
  PG_FAIL_IF(!l, err, PG_E_ARG, NULL, PG_NO_OFFSET, "loader: no loader");
  const char *pattern = pg_shard_set_pattern(l->set);
  PG_FAIL_IF(B < 1, err, PG_E_ARG, pattern, PG_NO_OFFSET,
             "loader: batch size B = %d; it must be at least 1", B);
  PG_FAIL_IF(!ids || !targets, err, PG_E_ARG, pattern, PG_NO_OFFSET,
             "loader: no ids or targets buffer");
  const size_t t = (size_t)l->T;
  for (int r = 0; r < B; r++) {
    int32_t *x = ids + (size_t)r * t, *y = targets + (size_t)r * t;
    const uint64_t p = row_start(l);
    PG_TRY(pg_shard_set_copy_i32(l->set, p, t, x, err));
    if (t > 1) memcpy(y, x + 1, (t - 1) * sizeof *y);
    PG_TRY(pg_shard_set_copy_i32(l->set, p + t, 1, y + t - 1, err));
    PG_TRY(step(l, err));
  }
  return PG_OK;
}

/* ---- positions ---- */

pg_batches_pos pg_batches_get_pos(const pg_batches *l) {
  pg_batches_pos z;
  memset(&z, 0, sizeof z);
  return l ? l->pos : z;
}

int pg_batches_set_pos(pg_batches *l, const pg_batches_pos *pos, pg_err *err) {
  PG_FAIL_IF(!l || !pos, err, PG_E_ARG, NULL, PG_NO_OFFSET, "loader: no loader or position");
  const char *pattern = pg_shard_set_pattern(l->set);
  const char *mode = MODE_NAMES[l->mode];
  const uint64_t t = (uint64_t)l->T;
  const unsigned long long off = (unsigned long long)pos->offset;
#define BADPOS(...) pg_err_set(err, PG_E_ARG, pattern, PG_NO_OFFSET, __VA_ARGS__)
  if (l->mode == PG_BATCHES_SHUFFLED) {
    if (pos->skipped)
      return BADPOS("loader position: skipped = %llu in shuffled mode; it must be 0",
                    (unsigned long long)pos->skipped);
    if (pos->phase >= t)
      return BADPOS("loader position: phase %llu is not below T = %d",
                    (unsigned long long)pos->phase, l->T);
    const uint64_t phase = draw_phase(l, pos->rng);
    if (pos->phase != phase)
      return BADPOS("loader position: phase %llu, but the rng state 0x%016llx draws phase %llu "
                    "(another seed or T?)",
                    (unsigned long long)pos->phase, (unsigned long long)pos->rng,
                    (unsigned long long)phase);
    const uint64_t w = window_count(l, phase);
    if (pos->offset >= w)
      return BADPOS("loader position: window %llu, but the epoch at phase %llu has %llu windows",
                    off, (unsigned long long)phase, (unsigned long long)w);
    shuffle_epoch(l, pos->rng);
    l->pos = *pos;
    return PG_OK;
  }
  if (pos->phase)
    return BADPOS("loader position: phase %llu in %s mode; it must be 0",
                  (unsigned long long)pos->phase, mode);
  if (pos->offset > l->n - t - 1)
    return BADPOS("loader position: offset %llu leaves no room for a row of T+1 = %llu tokens "
                  "in the stream of %llu",
                  off, (unsigned long long)(t + 1), (unsigned long long)l->n);
  if (l->mode == PG_BATCHES_SEQUENTIAL) {
    if (pos->skipped)
      return BADPOS("loader position: skipped = %llu in sequential mode; it must be 0",
                    (unsigned long long)pos->skipped);
    if (pos->offset % t)
      return BADPOS("loader position: offset %llu is not a multiple of T = %d", off, l->T);
  } else {
    int32_t first;
    PG_TRY(pg_shard_set_copy_i32(l->set, pos->offset, 1, &first, err));
    if (first != l->bos)
      return BADPOS("loader position: token %llu is %d, not the BOS id %d a packed row starts at",
                    off, (int)first, l->bos);
  }
#undef BADPOS
  l->pos = *pos;
  l->pos.rng = l->seed;
  return PG_OK;
}
