/* pg_shard_stats.c: the statistics of a shard set (see pg_shard_stats.h). */
#include "pg_shard_stats.h"

#include <stdlib.h>
#include <string.h>

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* The most frequent ids: each pick the largest count not taken yet, the smallest id on a tie. */
static void top_ids(pg_shard_stats *s, const uint64_t *hist) {
  s->ntop = 0;
  for (int t = 0; t < PG_SHARD_STATS_TOP; t++) {
    uint32_t best = 0;
    uint64_t bc = 0;
    for (uint32_t k = 0; k < 65536; k++) {
      int taken = 0;
      for (int q = 0; q < s->ntop; q++) taken |= s->top[q] == k;
      if (!taken && hist[k] > bc) {
        bc = hist[k];
        best = k;
      }
    }
    if (!bc) break;
    s->top[s->ntop] = best;
    s->top_count[s->ntop++] = bc;
  }
}

int pg_shard_stats_compute(pg_shard_stats *s, const pg_shard_set *set, const char *name,
                           const pg_spm_tables *tables, pg_err *err) {
  memset(s, 0, sizeof *s);
  const uint64_t n = pg_shard_set_count(set);
  s->files = pg_shard_set_nfiles(set);
  s->tokens = n;
  uint16_t *tok = malloc((n ? n : 1) * sizeof *tok);
  uint64_t *hist = calloc(65536, sizeof *hist);
  pg_doc *docs = NULL;
  uint64_t ndocs = 0, skipped = 0;
  int rc = tok && hist ? pg_shard_set_copy(set, 0, n, tok, err)
                       : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  if (rc == PG_OK) rc = pg_docs_list(tok, n, name, &docs, &ndocs, &skipped, err);
  if (rc == PG_OK) {
    s->documents = ndocs;
    s->before_first_bos = skipped;
    for (uint64_t k = 0; k < n; k++) hist[tok[k]]++;
    for (uint32_t k = 0; k < 65536; k++)
      if (hist[k]) {
        s->distinct_ids++;
        s->max_id = k;
      }
    uint64_t *lens = malloc((ndocs ? ndocs : 1) * sizeof *lens);
    if (lens && ndocs) {
      for (uint64_t d = 0; d < ndocs; d++) lens[d] = docs[d].len;
      qsort(lens, ndocs, sizeof *lens, cmp_u64);
      s->have_lengths = 1;
      s->len_min = lens[0];
      s->len_median = lens[ndocs / 2];
      s->len_max = lens[ndocs - 1];
      s->len_mean = (double)(n - skipped) / (double)ndocs;
    }
    free(lens);
    /* a count that fails leaves 0, as an empty stream does */
    pg_err ignored;
    if (tables && n > 1) pg_spm_count_stream_u16(tables, tok, n, &s->bytes, &ignored);
    top_ids(s, hist);
  }
  free(docs);
  free(tok);
  free(hist);
  return rc;
}
