/* pg_threads.h: a tiny deterministic parallel-for. [0, n) is cut into fixed contiguous chunks, one
 * per thread; each index is handled by exactly one thread, so a loop whose indices are independent
 * gives bit-identical results for any thread count. */
#ifndef PG_THREADS_H
#define PG_THREADS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most threads one pg_parallel_for call starts (more requested are capped to this). */
#define PG_PARALLEL_MAX_THREADS 256

/* Body of a parallel loop: handle the indices [begin, end). */
typedef void (*pg_parallel_fn)(void *ctx, size_t begin, size_t end);

/* The thread count a request resolves to: 0 → the online CPUs, otherwise nthreads, capped to
 * [1, PG_PARALLEL_MAX_THREADS]. */
int pg_parallel_threads(int nthreads);

/* Run fn over [0, n) with k = min(pg_parallel_threads(nthreads), n) threads (the caller is one of
 * them). Chunk i is [i*q + min(i, r), (i+1)*q + min(i+1, r)) with q = n / k, r = n % k. nthreads 1
 * runs fn(ctx, 0, n) inline. If a thread cannot be started its chunk runs on the calling thread,
 * so the call never fails. Returns after every chunk is done. */
void pg_parallel_for(size_t n, pg_parallel_fn fn, void *ctx, int nthreads);

/* The same over chunks of grain indices ([i·grain, (i+1)·grain) ∩ [0, n)), each claimed in order
 * by whichever thread is free: for units of unequal cost, where k equal chunks would leave
 * threads waiting for the slowest. Which thread runs a chunk changes no value. grain 0, or fewer
 * than two chunks per thread, is pg_parallel_for's split. */
void pg_parallel_for_grain(size_t n, size_t grain, pg_parallel_fn fn, void *ctx, int nthreads);

#ifdef __cplusplus
}
#endif
#endif
