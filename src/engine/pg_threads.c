/* pg_threads.c: the fixed static partition behind pg_parallel_for, run by a persistent pool of
 * worker threads (started on first use, kept for the life of the process). */
#include "pg_threads.h"

#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

/* The partition never depends on which thread runs a chunk: chunks are claimed from a counter by
 * whichever of the caller and the workers is free, so the values are those of one thread.
 * Threads are started once instead of on every call (an op call may last only microseconds).
 * The pool serves one caller at a time; a call made while it is busy (from a chunk of another
 * call, or from another application thread) starts threads of its own, as before the pool. */
static struct {
  pthread_mutex_t busy; /* held by the caller that owns the pool for one call */
  pthread_mutex_t m;    /* guards everything below */
  pthread_cond_t wake, done;
  unsigned long gen; /* bumped for every call */
  pg_parallel_fn fn;
  void *ctx;
  size_t n, k, next, left; /* chunks: next to claim, not yet finished */
  size_t grain;            /* 0: k equal chunks; else chunks of grain indices */
  int nworkers;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, 0, 0};

static void chunk_bounds(size_t n, size_t k, size_t i, size_t *b, size_t *e) {
  size_t q = n / k, r = n % k;
  *b = i * q + (i < r ? i : r);
  *e = (i + 1) * q + (i + 1 < r ? i + 1 : r);
}

/* chunk i of the current call */
static void pool_bounds(size_t i, size_t *b, size_t *e) {
  if (pool.grain == 0) {
    chunk_bounds(pool.n, pool.k, i, b, e);
    return;
  }
  *b = i * pool.grain;
  *e = pool.n - *b < pool.grain ? pool.n : *b + pool.grain;
}

/* Claim and run chunks of the current call until none is left; called and returns with pool.m
 * held. */
static void pool_drain(void) {
  while (pool.next < pool.k) {
    size_t i = pool.next++, b, e;
    pg_parallel_fn fn = pool.fn;
    void *ctx = pool.ctx;
    pool_bounds(i, &b, &e);
    pthread_mutex_unlock(&pool.m);
    fn(ctx, b, e);
    pthread_mutex_lock(&pool.m);
    if (--pool.left == 0) pthread_cond_signal(&pool.done);
  }
}

/* arg: the generation before the call that started the worker, so it joins that call */
static void *pool_worker(void *arg) {
  unsigned long seen = (unsigned long)(uintptr_t)arg;
  pthread_mutex_lock(&pool.m);
  for (;;) {
    while (pool.gen == seen) pthread_cond_wait(&pool.wake, &pool.m);
    seen = pool.gen;
    pool_drain();
  }
  return NULL;
}

/* After fork() the child has none of the workers: start again from an empty pool. */
static void pool_atfork_child(void) {
  pthread_mutex_init(&pool.busy, NULL);
  pthread_mutex_init(&pool.m, NULL);
  pthread_cond_init(&pool.wake, NULL);
  pthread_cond_init(&pool.done, NULL);
  pool.nworkers = 0;
}
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void) { pthread_atfork(NULL, NULL, pool_atfork_child); }

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

/* The pool is busy: threads of this call's own, one per chunk but the caller's. */
static void parallel_for_own(size_t n, size_t k, pg_parallel_fn fn, void *ctx) {
  pg_chunk chunks[PG_PARALLEL_MAX_THREADS];
  pthread_t tids[PG_PARALLEL_MAX_THREADS];
  int started[PG_PARALLEL_MAX_THREADS];
  for (size_t i = 0; i < k; i++) {
    chunks[i].fn = fn;
    chunks[i].ctx = ctx;
    chunk_bounds(n, k, i, &chunks[i].begin, &chunks[i].end);
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

int pg_parallel_threads(int nthreads) {
  if (nthreads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = n > 0 ? (int)(n < PG_PARALLEL_MAX_THREADS ? n : PG_PARALLEL_MAX_THREADS) : 1;
  }
  return nthreads > PG_PARALLEL_MAX_THREADS ? PG_PARALLEL_MAX_THREADS : nthreads;
}

static void parallel_for(size_t n, size_t grain, pg_parallel_fn fn, void *ctx, int nthreads) {
  if (n == 0) return;
  size_t k = (size_t)pg_parallel_threads(nthreads);
  if (k > n) k = n;
  if (k == 1) {
    fn(ctx, 0, n);
    return;
  }
  /* fewer than two chunks per thread: the equal split does as well */
  if (grain && (n + grain - 1) / grain < 2 * k) grain = 0;
  pthread_once(&pool_once, pool_init);
  if (pthread_mutex_trylock(&pool.busy) != 0) {
    parallel_for_own(n, k, fn, ctx);
    return;
  }
  pthread_mutex_lock(&pool.m);
  /* k − 1 workers and the caller; a worker that cannot be started leaves its share to the
   * others (the caller at least), so the call never fails */
  while ((size_t)pool.nworkers < k - 1) {
    pthread_t tid;
    if (pthread_create(&tid, NULL, pool_worker, (void *)(uintptr_t)pool.gen) != 0) break;
    pthread_detach(tid);
    pool.nworkers++;
  }
  pool.fn = fn, pool.ctx = ctx, pool.n = n, pool.grain = grain;
  pool.k = grain ? (n + grain - 1) / grain : k;
  pool.next = 0, pool.left = pool.k;
  pool.gen++;
  pthread_cond_broadcast(&pool.wake);
  pool_drain();
  while (pool.left > 0) pthread_cond_wait(&pool.done, &pool.m);
  pthread_mutex_unlock(&pool.m);
  pthread_mutex_unlock(&pool.busy);
}

void pg_parallel_for(size_t n, pg_parallel_fn fn, void *ctx, int nthreads) {
  parallel_for(n, 0, fn, ctx, nthreads);
}

void pg_parallel_for_grain(size_t n, size_t grain, pg_parallel_fn fn, void *ctx, int nthreads) {
  parallel_for(n, grain, fn, ctx, nthreads);
}
