/* pg_engine.c: what every engine shares (the sticky error, scratch slots, the wrappers that check
 * their arguments) and the CPU engine's memory, which is the C library's. */
#include "pg_engine.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_ops_cpu.h"
#include "pg_qtype.h"

#define PG_ENGINE_ALIGN 64

static const char *const KIND_NAMES[] = {"cpu", "cuda", "auto"};

const char *pg_engine_kind_name(int kind) {
  return kind >= PG_ENGINE_CPU && kind <= PG_ENGINE_AUTO ? KIND_NAMES[kind] : NULL;
}

int pg_engine_kind_parse(const char *s) {
  for (int k = PG_ENGINE_CPU; k <= PG_ENGINE_AUTO; k++)
    if (s && strcmp(s, KIND_NAMES[k]) == 0) return k;
  return -1;
}

/* ---- the sticky error ------------------------------------------------------------------------ */

int pg_engine_fail(pg_engine *e, int status, const char *fmt, ...) {
  if (e->status == PG_OK && status != PG_OK) {
    e->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
  }
  return e->status;
}

int pg_engine_failed(const pg_engine *e) { return e->status != PG_OK; }

int pg_engine_sync(pg_engine *e, pg_err *err) {
  if (e->finish) {
    int st = e->finish(e);
    if (st != PG_OK) pg_engine_fail(e, st, "%s engine: device fault (%s)", e->info.name,
                                    pg_status_name(st));
  }
  int st = e->status;
  if (st != PG_OK) {
    if (err) pg_err_set(err, st, NULL, PG_NO_OFFSET, "%s", e->msg);
    e->status = PG_OK;
    e->msg[0] = 0;
  }
  return st;
}

/* ---- memory ---------------------------------------------------------------------------------- */

void *pg_engine_alloc(pg_engine *e, size_t bytes) {
  void *p = e->mem_alloc(e, bytes);
  if (!p)
    pg_engine_fail(e, PG_E_NOMEM, "%s engine: out of memory (%zu bytes)", e->info.name, bytes);
  return p;
}

void pg_engine_free(pg_engine *e, void *p) {
  if (p) e->mem_free(e, p);
}

void pg_engine_upload(pg_engine *e, void *dst, const void *src, size_t bytes) {
  if (bytes) e->mem_upload(e, dst, src, bytes);
}

void pg_engine_download(pg_engine *e, void *dst, const void *src, size_t bytes) {
  if (bytes) e->mem_download(e, dst, src, bytes);
}

void pg_engine_zero(pg_engine *e, void *dst, size_t bytes) {
  if (bytes) e->mem_zero(e, dst, bytes);
}

void pg_engine_copy(pg_engine *e, void *dst, const void *src, size_t bytes) {
  if (bytes && dst != src) e->mem_copy(e, dst, src, bytes);
}

/* The reference dequantization of t into host memory out (format/pg_qtype.c). */
static void dequant_host(const pg_engine_qtensor *t, float *out) {
  pg_dequant_rows(t->q, t->scales, t->rows, t->cols, out);
  if (t->lqer_rank)
    pg_lqer_apply(out, t->rows, t->cols, t->lqer_rank, t->lqer_a, t->lqer_a_scale, t->lqer_b,
                  t->lqer_b_scales);
}

void pg_engine_dequant(pg_engine *e, float *dst, const pg_engine_qtensor *t) {
  const uint64_t n = t->rows * t->cols;
  if (n == 0) return;
  if (e->mem_dequant) {
    e->mem_dequant(e, dst, t);
    return;
  }
  /* an engine without a dequantization of its own: the reference on the host, uploaded */
  float *h = n <= SIZE_MAX / sizeof *h ? malloc((size_t)n * sizeof *h) : NULL;
  if (!h) {
    pg_engine_fail(e, PG_E_NOMEM, "%s engine: out of memory (%llu floats to dequantize)",
                   e->info.name, (unsigned long long)n);
    return;
  }
  dequant_host(t, h);
  pg_engine_upload(e, dst, h, (size_t)n * sizeof *h);
  free(h);
}

void *pg_engine_scratch_try(pg_engine *e, int slot, size_t bytes) {
  if (slot < 0 || slot >= PG_ENGINE_SCRATCH_SLOTS) return NULL;
  if (e->scratch_fn) return e->scratch_fn(e, slot, bytes);
  if (bytes <= e->scratch_cap[slot] && e->scratch[slot]) return e->scratch[slot];
  /* grow geometrically so a sequence of slightly larger requests does not reallocate each time */
  size_t cap = e->scratch_cap[slot] * 2;
  if (cap < bytes) cap = bytes;
  if (e->scratch[slot]) e->mem_free(e, e->scratch[slot]);
  e->scratch[slot] = e->mem_alloc(e, cap);
  e->scratch_cap[slot] = e->scratch[slot] ? cap : 0;
  return e->scratch[slot];
}

void *pg_engine_scratch(pg_engine *e, int slot, size_t bytes) {
  if (slot < 0 || slot >= PG_ENGINE_SCRATCH_SLOTS) {
    pg_engine_fail(e, PG_E_ARG, "%s engine: scratch slot %d out of range", e->info.name, slot);
    return NULL;
  }
  void *p = pg_engine_scratch_try(e, slot, bytes);
  if (!p)
    pg_engine_fail(e, PG_E_NOMEM, "%s engine: out of memory (%zu bytes of scratch)", e->info.name,
                   bytes);
  return p;
}

void pg_engine_enter(pg_engine *e) {
  if (e && e->enter) e->enter(e);
}

void pg_engine_destroy(pg_engine *e) {
  if (!e) return;
  pg_engine_enter(e); /* its memory and stream belong to its device */
  if (e->finish) (void)e->finish(e);
  for (int i = 0; i < PG_ENGINE_SCRATCH_SLOTS; i++) {
    if (e->scratch[i]) e->mem_free(e, e->scratch[i]);
    e->scratch[i] = NULL;
    e->scratch_cap[i] = 0;
  }
  if (e->release) e->release(e);
  e->release = NULL;
  e->impl = NULL;
  if (e->heap) free(e);
}

/* ---- the CPU engine -------------------------------------------------------------------------- */

/* Zeroed by calloc, which writes nothing to fresh pages from the system (they are zero
 * already): a large block is neither zeroed twice nor touched before an op first writes it. The
 * calloc'd block starts before the aligned pointer, which keeps its address just below.
 * (Transparent huge pages were tried for the large blocks: fewer faults, but the kernel then
 * clears whole 2 MiB pages, and on the benchmark's machine that cost more than it saved.) */
static void *cpu_alloc(pg_engine *e, size_t bytes) {
  (void)e;
  size_t n = (bytes + PG_ENGINE_ALIGN - 1) / PG_ENGINE_ALIGN * PG_ENGINE_ALIGN;
  if (n < bytes || n > SIZE_MAX - PG_ENGINE_ALIGN) return NULL; /* overflow */
  if (n == 0) n = PG_ENGINE_ALIGN;
  unsigned char *raw = calloc(1, n + PG_ENGINE_ALIGN);
  if (!raw) return NULL;
  unsigned char *p = raw + PG_ENGINE_ALIGN - (uintptr_t)raw % PG_ENGINE_ALIGN;
  memcpy(p - sizeof raw, &raw, sizeof raw);
  return p;
}

static void cpu_free(pg_engine *e, void *p) {
  (void)e;
  if (!p) return;
  unsigned char *raw;
  memcpy(&raw, (unsigned char *)p - sizeof raw, sizeof raw);
  free(raw);
}

static void cpu_memcpy(pg_engine *e, void *dst, const void *src, size_t bytes) {
  (void)e;
  memmove(dst, src, bytes);
}

static void cpu_zero(pg_engine *e, void *dst, size_t bytes) {
  (void)e;
  memset(dst, 0, bytes);
}

/* The CPU engine's memory is the host's: the reference writes the parameters in place. */
static void cpu_dequant(pg_engine *e, float *dst, const pg_engine_qtensor *t) {
  (void)e;
  dequant_host(t, dst);
}

/* The CPU engine's scratch is per thread (each op runs on the calling thread and the pool's
 * workers, each with buffers of its own), kept until the thread ends; a registry keeps every
 * live thread's buffers reachable. So a CPU engine owns nothing and can be copied by value. */
typedef struct tls_scratch {
  void *p[PG_ENGINE_SCRATCH_SLOTS];
  size_t cap[PG_ENGINE_SCRATCH_SLOTS];
  struct tls_scratch *prev, *next;
} tls_scratch;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static tls_scratch *tls_all;
static int tls_ok;

static void tls_release(void *v) {
  tls_scratch *t = v;
  pthread_mutex_lock(&tls_mu);
  if (t->prev) t->prev->next = t->next;
  else tls_all = t->next;
  if (t->next) t->next->prev = t->prev;
  pthread_mutex_unlock(&tls_mu);
  for (int i = 0; i < PG_ENGINE_SCRATCH_SLOTS; i++) cpu_free(NULL, t->p[i]);
  free(t);
}

static void tls_init(void) { tls_ok = pthread_key_create(&tls_key, tls_release) == 0; }

static void *cpu_scratch(pg_engine *e, int slot, size_t bytes) {
  (void)e;
  pthread_once(&tls_once, tls_init);
  if (!tls_ok) return NULL;
  tls_scratch *t = pthread_getspecific(tls_key);
  if (!t) {
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (pthread_setspecific(tls_key, t)) {
      free(t);
      return NULL;
    }
    pthread_mutex_lock(&tls_mu);
    t->next = tls_all;
    if (tls_all) tls_all->prev = t;
    tls_all = t;
    pthread_mutex_unlock(&tls_mu);
  }
  if (t->p[slot] && bytes <= t->cap[slot]) return t->p[slot];
  size_t cap = t->cap[slot] * 2;
  if (cap < bytes) cap = bytes;
  cpu_free(NULL, t->p[slot]);
  t->p[slot] = cpu_alloc(NULL, cap);
  t->cap[slot] = t->p[slot] ? cap : 0;
  return t->p[slot];
}

pg_engine pg_engine_cpu(int nthreads) {
  pg_engine e;
  memset(&e, 0, sizeof e);
  e.ops = pg_ops_cpu_table(nthreads);
  pg_ops_cpu_optim(&e.ops);
  int th = pg_parallel_threads(nthreads);
  snprintf(e.info.name, sizeof e.info.name, "cpu");
  snprintf(e.info.devices, sizeof e.info.devices, "cpu: %d thread%s", th, th == 1 ? "" : "s");
  e.info.ndevices = 1;
  e.info.threads = th;
  e.host_memory = 1;
  e.mem_alloc = cpu_alloc;
  e.mem_free = cpu_free;
  e.mem_upload = cpu_memcpy;
  e.mem_download = cpu_memcpy;
  e.mem_zero = cpu_zero;
  e.mem_copy = cpu_memcpy;
  e.mem_dequant = cpu_dequant;
  e.scratch_fn = cpu_scratch;
  return e;
}
