/* pg_batches.h: the trainer's data loader over token shards (spec/train.md §3): three modes, each
 * giving batches of B rows of T+1 tokens (inputs are the first T, targets the last T), all
 * deterministic for a seed, with a position that a checkpoint saves and restores exactly.
 *
 * The stream is the shards matching the pattern, in sorted file order (pg_shard_set_open:
 * byte-wise sorted glob), concatenated: tokens x[0..N). Rows may span two (or more) files. Row
 * "at p" means tokens x[p..p+T] (T+1 tokens): ids x[p..p+T−1], targets x[p+1..p+T].
 *
 * Positions are kept normalized: after every row the loader moves at once to where the next row
 * starts (wrapping to the next epoch there when needed), so a position always names a row that
 * fits. The modes, exactly:
 *
 *   sequential  start at offset 0, epoch 0. Each row is at offset; then offset += T, and when
 *               offset + T + 1 > N (fewer than T+1 tokens left) epoch += 1 and offset = 0: the
 *               tail is dropped. Consecutive rows overlap by one token (x[offset+T] is the last
 *               target of one row and the first id of the next), as the records' (R1–R7)
 *               contiguous chunks do. Valid offsets: multiples of T with offset + T + 1 <= N.
 *   shuffled    random windows at a random phase (the records' ShuffledSequenceLoader, R8/R9).
 *               With P = min(T, N − T), each epoch starts from the rng state S (S = seed for
 *               epoch 0; pg_rng, splitmix64) and draws, in this order:
 *                 phase = pg_rng_u64 mod P                 (0 <= phase < T; = mod T when N >= 2T)
 *                 W = floor((N − 1 − phase) / T)           windows k = 0..W−1 at phase + k·T
 *                                                          (W >= 1 since phase <= N − T − 1)
 *                 perm = 0..W−1, then for i = W−1 down to 1: j = pg_rng_u64 mod (i+1),
 *                 swap perm[i] and perm[j]                 (Fisher–Yates)
 *               The rng state after these 1 + (W−1) draws is the next epoch's S. Row number
 *               offset (0..W−1) of the epoch is the window at phase + perm[offset]·T; after the
 *               last (offset reaches W) epoch += 1 and offset = 0 with the next S. Every window of
 *               an epoch is visited exactly once; the tokens before phase and after the last
 *               window are unused that epoch. perm is not part of the position: set_pos rebuilds
 *               it from S (the loader holds it, 8 bytes per window).
 *   packed      document packing (as R10–R12's DocumentPackingLoader, shards read in order): like
 *               sequential, but a row starts only at a BOS, x[p] == bos with p + T + 1 <= N (a
 *               "start"). At open and after each row (offset = p + T) the loader advances to the
 *               first start q >= offset, adding q − offset to skipped; when there is none it adds
 *               (N − offset) + q0, epoch += 1 and offset = q0, the first start of the stream. So a
 *               row that ends inside a document is followed by a row at the next document (the
 *               rest of that document is skipped); no row begins inside a document, and the
 *               model's document mask (arch attention.doc_mask) isolates the documents packed
 *               into a row. Initially skipped = q0 (the tokens before the first start).
 *
 * The loader reads each row from the shard files when it is taken (pg_shard_set, positioned
 * reads); it never holds a whole shard. A file that shrank while in use is PG_E_IO at that row. */
#ifndef PG_BATCHES_H
#define PG_BATCHES_H

#include <stddef.h>
#include <stdint.h>

#include "pg_shard.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pg_batches_mode { PG_BATCHES_SEQUENTIAL = 0, PG_BATCHES_SHUFFLED = 1, PG_BATCHES_PACKED = 2 };
/* "sequential", "shuffled", "packed"; NULL for an unknown mode. */
const char *pg_batches_mode_name(int mode);
int pg_batches_mode_parse(const char *s); /* the mode named s (exact match); −1 when unknown */

/* The exact position of a loader: what a checkpoint stores. get_pos gives skipped = 0 outside
 * packed mode, and phase = 0 with rng = the seed outside shuffled mode. */
typedef struct pg_batches_pos {
  uint64_t epoch;   /* completed passes over the stream */
  uint64_t offset;  /* sequential/packed: the token the next row starts at; shuffled: the next
                       row's number in the epoch (0..W−1) */
  uint64_t skipped; /* packed: tokens skipped so far (see packed above) */
  uint64_t rng;     /* shuffled: the rng state S at the start of this epoch */
  uint64_t phase;   /* shuffled: this epoch's phase */
} pg_batches_pos;

typedef struct pg_batches pg_batches;

/* Over the shards matching pattern, rows of T+1 tokens; bos is the document-start id (packed
 * mode only; ignored otherwise). Opening maps the set (its errors: PG_E_EMPTY_SET, ...), checks
 * every id against vocab (pg_shard_set_check_vocab: PG_E_TOKEN_RANGE) and places the loader at
 * its first row. PG_E_ARG, naming the pattern, for an unknown mode, T < 1, a stream of fewer than
 * T+1 tokens, and in packed mode a bos outside 0..65535 or no bos among x[0..N−T−1] (no row could
 * start). *out is NULL on failure. */
int pg_batches_open(pg_batches **out, const char *pattern, int mode, int T, uint32_t vocab,
                   int bos, uint64_t seed, pg_err *err);
void pg_batches_free(pg_batches *l);
uint64_t pg_batches_tokens(const pg_batches *l); /* tokens in the stream */

/* The next B rows, in order: ids [B·T] (row r at p: ids[r·T + t] = x[p+t]) and targets [B·T]
 * (targets[r·T + t] = x[p+t+1]), t = 0..T−1. PG_E_ARG for B < 1 or a NULL pointer (the position
 * is then unchanged). */
int pg_batches_next(pg_batches *l, int B, int32_t *ids, int32_t *targets, pg_err *err);
/* Packed mode: tokens skipped so far to start rows at a BOS (0 in the other modes). */
uint64_t pg_batches_skipped(const pg_batches *l);

pg_batches_pos pg_batches_get_pos(const pg_batches *l);
/* Restore a position saved from a loader over the same shards, mode, T and seed: the following
 * batches are exactly those the saved loader would have produced. PG_E_ARG (the loader is then
 * unchanged) for a position that cannot come from this loader:
 *   sequential  offset not a multiple of T, offset + T + 1 > N, skipped or phase not 0;
 *   shuffled    phase >= T, phase not the one drawn from rng (pg_rng_u64 mod P), offset >= W
 *               (the window count for that phase), skipped not 0;
 *   packed      offset + T + 1 > N, x[offset] != bos, phase not 0.
 * epoch is not checked; rng is ignored outside shuffled mode. */
int pg_batches_set_pos(pg_batches *l, const pg_batches_pos *pos, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
