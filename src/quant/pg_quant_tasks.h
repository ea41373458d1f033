/* pg_quant_tasks.h: internal to src/quant (pg_gptq.c, pg_quant.c): checked allocation of
 * a·b·c elements and fixed splits of independent work across the thread pool. The split only
 * decides which thread computes what, never how a value is computed. */
#ifndef PG_QUANT_TASKS_H
#define PG_QUANT_TASKS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "pg_threads.h"

/* a*b*c elements of size sz, NULL on overflow or when out of memory. */
static inline void *alloc3(size_t a, size_t b, size_t c, size_t sz) {
  if (a == 0 || b == 0 || c == 0) return malloc(sz ? sz : 1);
  if (b > SIZE_MAX / a) return NULL;
  size_t n = a * b;
  if (c > SIZE_MAX / n) return NULL;
  n *= c;
  if (sz > SIZE_MAX / n) return NULL;
  return malloc(n * sz);
}
static inline void *zalloc3(size_t a, size_t b, size_t c, size_t sz) {
  if (a == 0 || b == 0 || c == 0) return calloc(1, sz ? sz : 1);
  if (b > SIZE_MAX / a) return NULL;
  size_t n = a * b;
  if (c > SIZE_MAX / n) return NULL;
  n *= c;
  return calloc(n, sz);
}

/* Tasks: fn(ctx, t) for t in [0, T), one thread each (T <= PG_PARALLEL_MAX_THREADS). */
typedef void (*task_fn)(void *ctx, int t);
typedef struct {
  task_fn fn;
  void *ctx;
} task_run;
static inline void task_adapter(void *ctx, size_t begin, size_t end) {
  task_run *r = ctx;
  for (size_t t = begin; t < end; t++) r->fn(r->ctx, (int)t);
}
static inline void run_tasks(int T, task_fn fn, void *ctx) {
  task_run r = {fn, ctx};
  pg_parallel_for((size_t)T, task_adapter, &r, T);
}
/* The number of tasks for `items` independent pieces of work. */
static inline int task_count(int nthreads, uint64_t items) {
  int T = pg_parallel_threads(nthreads);
  if ((uint64_t)T > items) T = items ? (int)items : 1;
  return T;
}

/* Rows of task t of T over `rows`: [lo, hi). */
static inline void task_rows(uint64_t rows, int T, int t, uint64_t *lo, uint64_t *hi) {
  uint64_t q = rows / (uint64_t)T, r = rows % (uint64_t)T, ut = (uint64_t)t;
  *lo = ut * q + (ut < r ? ut : r);
  *hi = (ut + 1) * q + (ut + 1 < r ? ut + 1 : r);
}

#endif
