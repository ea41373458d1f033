/* pg_threads.c: the fixed static partition behind pg_parallel_for (pthreads, one chunk each). */
#include "pg_threads.h"

#include <pthread.h>
#include <unistd.h>

typedef struct {
  pg_parallel_fn fn;
  void *ctx;
  size_t begin, end;
} pg_chunk;

static void *pg_chunk_run(void *arg) {
  pg_chunk *c = arg;
  c->fn(c->ctx, c->begin, c->end);
  return NULL;
}

int pg_parallel_threads(int nthreads) {
  if (nthreads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = n > 0 ? (int)(n < PG_PARALLEL_MAX_THREADS ? n : PG_PARALLEL_MAX_THREADS) : 1;
  }
  return nthreads > PG_PARALLEL_MAX_THREADS ? PG_PARALLEL_MAX_THREADS : nthreads;
}

void pg_parallel_for(size_t n, pg_parallel_fn fn, void *ctx, int nthreads) {
  if (n == 0) return;
  size_t k = (size_t)pg_parallel_threads(nthreads);
  if (k > n) k = n;
  if (k == 1) {
    fn(ctx, 0, n);
    return;
  }
  pg_chunk chunks[PG_PARALLEL_MAX_THREADS];
  pthread_t tids[PG_PARALLEL_MAX_THREADS];
  int started[PG_PARALLEL_MAX_THREADS];
  size_t q = n / k, r = n % k;
  for (size_t i = 0; i < k; i++) {
    chunks[i].fn = fn;
    chunks[i].ctx = ctx;
    chunks[i].begin = i * q + (i < r ? i : r);
    chunks[i].end = (i + 1) * q + (i + 1 < r ? i + 1 : r);
  }
  /* chunks 1..k-1 on new threads, chunk 0 here; a thread that fails to start runs here too */
  for (size_t i = 1; i < k; i++)
    started[i] = pthread_create(&tids[i], NULL, pg_chunk_run, &chunks[i]) == 0;
  pg_chunk_run(&chunks[0]);
  for (size_t i = 1; i < k; i++) {
    if (started[i])
      pthread_join(tids[i], NULL);
    else
      pg_chunk_run(&chunks[i]);
  }
}
