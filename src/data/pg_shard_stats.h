/* pg_shard_stats.h: what `pgshard info` reports about a shard set: tokens and targets, documents
 * (BOS-delimited) and their lengths, the ids in use and the most frequent ones, and with the
 * tokenizer's byte tables the bytes the challenge counts (spec/shards.md). */
#ifndef PG_SHARD_STATS_H
#define PG_SHARD_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_SHARD_STATS_TOP 10

typedef struct pg_shard_stats {
  size_t files;
  uint64_t tokens;
  uint64_t documents;
  uint64_t before_first_bos;      /* tokens before the first BOS (no document) */
  int have_lengths;               /* documents exist (and their lengths could be sorted) */
  uint64_t len_min, len_median, len_max; /* tokens; the median is the upper one of an even count */
  double len_mean;                /* (tokens − before_first_bos) / documents */
  uint64_t distinct_ids, max_id;
  uint32_t top[PG_SHARD_STATS_TOP]; /* most frequent ids, by count then ascending id */
  uint64_t top_count[PG_SHARD_STATS_TOP];
  int ntop;
  uint64_t bytes;                 /* with tables: the challenge's byte count of every target */
} pg_shard_stats;

/* Read every token of set (name: the pattern, for messages) and fill *s; tables may be NULL (no
 * byte count). PG_E_NOMEM, or the reader's and the document lister's statuses. */
int pg_shard_stats_compute(pg_shard_stats *s, const pg_shard_set *set, const char *name,
                           const pg_spm_tables *tables, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
