/* bench_util.h: what the benchmarks share: a monotonic clock, a fatal one-line error and a
 * checked allocation. Include after defining `static const char *PROG = "bench_NAME";`. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { EXIT_OK = 0, EXIT_ERR = 2 };

/* Seconds on a monotonic clock. */
static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "PROG: message" on stderr, then exit 2. */
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2), unused))
#endif
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", PROG);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(EXIT_ERR);
}

#if defined(__GNUC__)
__attribute__((unused))
#endif
static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory (%zu bytes)", n);
  return p;
}

#endif
