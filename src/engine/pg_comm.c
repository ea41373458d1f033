/* pg_comm.c: the communicator of pg_comm.h: the threads backend (shared memory, a barrier of
 * its own) and the nccl backend (libnccl.so.2 through dlopen, declared here). */
#include "pg_comm.h"

#include <dlfcn.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *pg_comm_backend_name(int backend) {
  return backend == PG_COMM_THREADS ? "threads" : backend == PG_COMM_NCCL ? "nccl" : NULL;
}

/* ---- NCCL, declared by hand (the ABI of nccl.h, stable since 2.0) ---------------------------- */

typedef struct nccl_comm *nccl_comm_t;
enum { NCCL_SUCCESS = 0, NCCL_UINT8 = 1, NCCL_FLOAT32 = 7 };

typedef struct nccl_lib {
  int ok;
  char why[512];
  int (*get_version)(int *);
  int (*get_unique_id)(pg_comm_id *);
  int (*init_rank)(nccl_comm_t *, int, pg_comm_id, int);
  int (*init_all)(nccl_comm_t *, int, const int *);
  int (*all_gather)(const void *, void *, size_t, int, nccl_comm_t, void *);
  int (*broadcast)(const void *, void *, size_t, int, int, nccl_comm_t, void *);
  int (*destroy)(nccl_comm_t);
  int (*abort)(nccl_comm_t);
  const char *(*error_string)(int);
} nccl_lib;

static nccl_lib NCCL;
static pthread_once_t nccl_once = PTHREAD_ONCE_INIT;

static int nccl_sym(void *lib, const char *name, void *fp) {
  void *p = dlsym(lib, name);
  if (!p && !NCCL.why[0]) snprintf(NCCL.why, sizeof NCCL.why, "the NCCL library lacks %s", name);
  memcpy(fp, &p, sizeof p); /* a data pointer to a function pointer, as dlsym's contract allows */
  return p != NULL;
}

/* libnccl.so.2 from the loader's path, or the file PG_NCCL_LIBRARY names. */
static void nccl_load(void) {
  const char *env = getenv("PG_NCCL_LIBRARY");
  const char *name = env && *env ? env : "libnccl.so.2";
  void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *why = dlerror();
    snprintf(NCCL.why, sizeof NCCL.why, "cannot load %.64s (%.96s): install NCCL (e.g. the pip "
             "wheel nvidia-nccl-cu13) and put its lib directory on LD_LIBRARY_PATH", name,
             why ? why : "not found");
    return;
  }
  NCCL.ok = nccl_sym(lib, "ncclGetVersion", &NCCL.get_version) &&
            nccl_sym(lib, "ncclGetUniqueId", &NCCL.get_unique_id) &&
            nccl_sym(lib, "ncclCommInitRank", &NCCL.init_rank) &&
            nccl_sym(lib, "ncclCommInitAll", &NCCL.init_all) &&
            nccl_sym(lib, "ncclAllGather", &NCCL.all_gather) &&
            nccl_sym(lib, "ncclBroadcast", &NCCL.broadcast) &&
            nccl_sym(lib, "ncclCommDestroy", &NCCL.destroy) &&
            nccl_sym(lib, "ncclCommAbort", &NCCL.abort) &&
            nccl_sym(lib, "ncclGetErrorString", &NCCL.error_string);
  /* the library stays loaded for the process */
}

int pg_comm_nccl_available(int *version, pg_err *err) {
  pthread_once(&nccl_once, nccl_load);
  if (!NCCL.ok) return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET, "nccl: %s", NCCL.why);
  if (version) {
    *version = 0;
    NCCL.get_version(version);
  }
  return PG_OK;
}

static int nccl_fail(pg_err *err, int r, const char *what) {
  return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET, "nccl: %s: %s", what,
                    NCCL.error_string ? NCCL.error_string(r) : "error");
}

int pg_comm_nccl_id(pg_comm_id *id, pg_err *err) {
  PG_TRY(pg_comm_nccl_available(NULL, err));
  int r = NCCL.get_unique_id(id);
  return r == NCCL_SUCCESS ? PG_OK : nccl_fail(err, r, "making the unique id");
}

/* ---- the communicator ------------------------------------------------------------------------ */

/* The shared state of a threads group: a barrier (a generation count), each rank's published
 * pointer and size for the collective in progress, and the abort flag. */
typedef struct group {
  int n, members;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int arrived, aborted;
  unsigned long gen;
  void *ptr[PG_COMM_MAX_RANKS];
  size_t len[PG_COMM_MAX_RANKS];
} group;

struct pg_comm {
  int backend, rank, n;
  pg_engine *e;
  group *g;             /* threads */
  nccl_comm_t nc;       /* nccl */
  float *gather;        /* nccl: engine memory for the all-gather (n × chunk fp32 values) */
  size_t gather_cap;    /* bytes */
  unsigned char *stage; /* nccl: engine memory staging the host collectives */
  size_t stage_cap;
  int aborted;
};

int pg_comm_rank(const pg_comm *c) { return c->rank; }
int pg_comm_size(const pg_comm *c) { return c->n; }
int pg_comm_backend(const pg_comm *c) { return c->backend; }
pg_engine *pg_comm_engine(const pg_comm *c) { return c->e; }

static int check_n(int n, pg_err *err) {
  if (n < 1 || n > PG_COMM_MAX_RANKS)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "ranks: %d given, 1..%d allowed", n,
                      PG_COMM_MAX_RANKS);
  return PG_OK;
}

int pg_comm_threads_create(pg_comm **out, int n, pg_engine *const *engines, pg_err *err) {
  PG_TRY(check_n(n, err));
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++)
    if (!engines[i] || !engines[i]->host_memory)
      return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                        "comm threads: rank %d's engine (%s) has no host memory: engines on "
                        "devices communicate through nccl", i,
                        engines[i] ? engines[i]->info.name : "none");
  group *g = calloc(1, sizeof *g);
  if (!g) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a comm");
  g->n = n;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  for (int i = 0; i < n; i++) {
    if (!(out[i] = calloc(1, sizeof *out[i]))) {
      for (int j = 0; j < i; j++) pg_comm_free(out[j]), out[j] = NULL;
      if (!g->members) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
      }
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a comm");
    }
    *out[i] = (pg_comm){.backend = PG_COMM_THREADS, .rank = i, .n = n, .e = engines[i], .g = g};
    g->members++;
  }
  return PG_OK;
}

static int nccl_wrap(pg_comm **out, int n, int rank, pg_engine *e, nccl_comm_t nc, pg_err *err) {
  if (!(*out = calloc(1, sizeof **out))) {
    NCCL.destroy(nc);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a comm");
  }
  **out = (pg_comm){.backend = PG_COMM_NCCL, .rank = rank, .n = n, .e = e, .nc = nc};
  return PG_OK;
}

static int check_device_engine(pg_engine *e, int rank, pg_err *err) {
  if (!e || e->host_memory || !e->queue)
    return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                      "comm nccl: rank %d's engine (%s) is not a GPU engine", rank,
                      e ? e->info.name : "none");
  return PG_OK;
}

int pg_comm_nccl_create(pg_comm **out, int n, int rank, const pg_comm_id *id, pg_engine *e,
                        pg_err *err) {
  *out = NULL;
  PG_TRY(check_n(n, err));
  if (rank < 0 || rank >= n)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "rank %d of %d ranks", rank, n);
  PG_TRY(check_device_engine(e, rank, err));
  PG_TRY(pg_comm_nccl_available(NULL, err));
  pg_engine_enter(e);
  nccl_comm_t nc = NULL;
  int r = NCCL.init_rank(&nc, n, *id, rank);
  if (r != NCCL_SUCCESS) return nccl_fail(err, r, "joining the communicator");
  return nccl_wrap(out, n, rank, e, nc, err);
}

int pg_comm_nccl_create_all(pg_comm **out, int n, pg_engine *const *engines, pg_err *err) {
  PG_TRY(check_n(n, err));
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++) PG_TRY(check_device_engine(engines[i], i, err));
  PG_TRY(pg_comm_nccl_available(NULL, err));
  nccl_comm_t *nc = calloc((size_t)n, sizeof *nc);
  int *dev = calloc((size_t)n, sizeof *dev);
  int rc = nc && dev ? PG_OK : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (int i = 0; i < n && !rc; i++) dev[i] = engines[i]->ordinal;
  if (!rc) {
    int r = NCCL.init_all(nc, n, dev);
    if (r != NCCL_SUCCESS) rc = nccl_fail(err, r, "making the communicators");
  }
  for (int i = 0; i < n && !rc; i++) {
    rc = nccl_wrap(&out[i], n, i, engines[i], nc[i], err);
    if (rc)
      for (int j = i + 1; j < n; j++) NCCL.destroy(nc[j]);
  }
  if (rc)
    for (int i = 0; i < n; i++) pg_comm_free(out[i]), out[i] = NULL;
  pg_engine_enter(engines[0]);
  free(nc);
  free(dev);
  return rc;
}

void pg_comm_abort(pg_comm *c) {
  if (!c) return;
  c->aborted = 1;
  if (c->backend == PG_COMM_THREADS) {
    pthread_mutex_lock(&c->g->mu);
    c->g->aborted = 1;
    pthread_cond_broadcast(&c->g->cv);
    pthread_mutex_unlock(&c->g->mu);
  } else if (c->nc) {
    NCCL.abort(c->nc); /* the other ranks' collectives then fail (or time out in NCCL) */
    c->nc = NULL;
  }
}

void pg_comm_free(pg_comm *c) {
  if (!c) return;
  if (c->backend == PG_COMM_THREADS) {
    group *g = c->g;
    pthread_mutex_lock(&g->mu);
    const int last = --g->members == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) {
      pthread_mutex_destroy(&g->mu);
      pthread_cond_destroy(&g->cv);
      free(g);
    }
  } else {
    pg_engine_enter(c->e);
    if (c->nc) NCCL.destroy(c->nc);
    pg_engine_free(c->e, c->gather);
    pg_engine_free(c->e, c->stage);
  }
  free(c);
}

static int aborted(pg_err *err) {
  return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET, "comm: another rank failed");
}

/* ---- threads --------------------------------------------------------------------------------- */

/* Wait until every rank of the group has arrived (or one aborted). */
static int t_barrier(pg_comm *c, pg_err *err) {
  group *g = c->g;
  pthread_mutex_lock(&g->mu);
  int bad = g->aborted;
  if (!bad) {
    const unsigned long gen = g->gen;
    if (++g->arrived == g->n) {
      g->arrived = 0;
      g->gen++;
      pthread_cond_broadcast(&g->cv);
    } else {
      while (g->gen == gen && !g->aborted) pthread_cond_wait(&g->cv, &g->mu);
      bad = g->gen == gen; /* woken by an abort, not by the last arrival */
    }
  }
  pthread_mutex_unlock(&g->mu);
  return bad ? aborted(err) : PG_OK;
}

/* Publish this rank's pointer and size, wait for the others, and check that the sizes agree. */
static int t_publish(pg_comm *c, const void *p, size_t len, pg_err *err) {
  c->g->ptr[c->rank] = (void *)(uintptr_t)p;
  c->g->len[c->rank] = len;
  PG_TRY(t_barrier(c, err));
  for (int q = 0; q < c->n; q++)
    if (c->g->len[q] != len)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                        "comm: the ranks' sizes differ (rank %d: %zu, rank %d: %zu)", q,
                        c->g->len[q], c->rank, len);
  return PG_OK;
}

static void slice(size_t n, int parts, int i, size_t *b, size_t *e) {
  size_t q = n / (size_t)parts, r = n % (size_t)parts, k = (size_t)i;
  *b = k * q + (k < r ? k : r);
  *e = (k + 1) * q + (k + 1 < r ? k + 1 : r);
}

/* Rank r adds up slice r of every rank's buffer, in rank order, into its own buffer's slice r
 * (no other rank touches that slice in this phase); after a barrier every rank copies the other
 * slices from their owners; a last barrier keeps the buffers until all copies are done. No
 * memory beyond the buffers themselves. */
static int t_allreduce(pg_comm *c, float *buf, size_t n, pg_err *err) {
  PG_TRY(t_publish(c, buf, n, err));
  float *const *P = (float *const *)c->g->ptr;
  size_t b, e;
  slice(n, c->n, c->rank, &b, &e);
  for (size_t j = b; j < e; j++) {
    float s = P[0][j];
    for (int q = 1; q < c->n; q++) s = s + P[q][j]; /* fp32 after each add (axpy's y + 1·x) */
    buf[j] = s;
  }
  PG_TRY(t_barrier(c, err));
  for (int q = 0; q < c->n; q++) {
    if (q == c->rank) continue;
    slice(n, c->n, q, &b, &e);
    memcpy(buf + b, P[q] + b, (e - b) * sizeof *buf);
  }
  return t_barrier(c, err);
}

static int t_allgather(pg_comm *c, const void *send, void *recv, size_t bytes, pg_err *err) {
  PG_TRY(t_publish(c, send, bytes, err));
  for (int q = 0; q < c->n; q++) { /* send may be recv's own place (the in-place form) */
    unsigned char *dst = (unsigned char *)recv + (size_t)q * bytes;
    if (dst != c->g->ptr[q]) memcpy(dst, c->g->ptr[q], bytes);
  }
  return t_barrier(c, err);
}

static int t_broadcast(pg_comm *c, void *buf, size_t bytes, int root, pg_err *err) {
  PG_TRY(t_publish(c, buf, bytes, err));
  if (c->rank != root) memcpy(buf, c->g->ptr[root], bytes);
  return t_barrier(c, err);
}

/* ---- nccl ------------------------------------------------------------------------------------ */

/* Values per all-gather: the gather buffer holds n × this many fp32 values (64 MiB per rank). */
#define NCCL_CHUNK ((size_t)1 << 24)

static int n_grow(pg_comm *c, void **p, size_t *cap, size_t bytes, pg_err *err) {
  if (*cap >= bytes) return PG_OK;
  pg_engine_free(c->e, *p);
  *cap = 0;
  if (!(*p = pg_engine_alloc(c->e, bytes))) {
    pg_engine_sync(c->e, NULL);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "comm nccl: cannot allocate %zu bytes on the %s engine", bytes,
                      c->e->info.name);
  }
  *cap = bytes;
  return PG_OK;
}

/* All-gather each chunk of buf on the engine's stream, then add the n copies in rank order with
 * the engine's own ops (copy, then axpy with a = 1: fp32 after each add), on every rank alike. */
static int n_allreduce(pg_comm *c, float *buf, size_t n, pg_err *err) {
  const size_t chunk = n < NCCL_CHUNK ? n : NCCL_CHUNK;
  PG_TRY(n_grow(c, (void **)&c->gather, &c->gather_cap, (size_t)c->n * chunk * sizeof(float),
                err));
  const pg_ops *o = &c->e->ops;
  for (size_t b = 0; b < n; b += chunk) {
    const size_t k = n - b < chunk ? n - b : chunk;
    int r = NCCL.all_gather(buf + b, c->gather, k, NCCL_FLOAT32, c->nc, c->e->queue);
    if (r != NCCL_SUCCESS) return nccl_fail(err, r, "all-gather");
    pg_engine_copy(c->e, buf + b, c->gather, k * sizeof *buf);
    for (int q = 1; q < c->n; q++) o->axpy(o, buf + b, 1.0f, c->gather + (size_t)q * k, k);
  }
  return pg_engine_sync(c->e, err);
}

static int n_allgather(pg_comm *c, const void *send, void *recv, size_t bytes, pg_err *err) {
  PG_TRY(n_grow(c, (void **)&c->stage, &c->stage_cap, (size_t)(c->n + 1) * bytes, err));
  unsigned char *all = c->stage + bytes;
  pg_engine_upload(c->e, c->stage, send, bytes);
  int r = NCCL.all_gather(c->stage, all, bytes, NCCL_UINT8, c->nc, c->e->queue);
  if (r != NCCL_SUCCESS) return nccl_fail(err, r, "all-gather");
  pg_engine_download(c->e, recv, all, (size_t)c->n * bytes);
  return pg_engine_sync(c->e, err);
}

static int n_broadcast(pg_comm *c, void *buf, size_t bytes, int root, pg_err *err) {
  PG_TRY(n_grow(c, (void **)&c->stage, &c->stage_cap, bytes, err));
  if (c->rank == root) pg_engine_upload(c->e, c->stage, buf, bytes);
  int r = NCCL.broadcast(c->stage, c->stage, bytes, NCCL_UINT8, root, c->nc, c->e->queue);
  if (r != NCCL_SUCCESS) return nccl_fail(err, r, "broadcast");
  pg_engine_download(c->e, buf, c->stage, bytes);
  return pg_engine_sync(c->e, err);
}

/* ---- every backend --------------------------------------------------------------------------- */

static int usable(pg_comm *c, pg_err *err) {
  if (c->aborted || (c->backend == PG_COMM_NCCL && !c->nc))
    return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET, "comm: this rank aborted");
  pg_engine_enter(c->e);
  return PG_OK;
}

int pg_comm_allreduce_sum(pg_comm *c, float *buf, size_t n, pg_err *err) {
  PG_TRY(usable(c, err));
  if (c->n == 1) return PG_OK;
  if (c->backend == PG_COMM_THREADS) return t_allreduce(c, buf, n, err);
  PG_TRY(pg_engine_sync(c->e, err)); /* buf's values are complete before they are sent */
  return n_allreduce(c, buf, n, err);
}

int pg_comm_allgather(pg_comm *c, const void *send, void *recv, size_t bytes, pg_err *err) {
  PG_TRY(usable(c, err));
  if (c->n == 1) {
    memmove(recv, send, bytes);
    return PG_OK;
  }
  return c->backend == PG_COMM_THREADS ? t_allgather(c, send, recv, bytes, err)
                                       : n_allgather(c, send, recv, bytes, err);
}

int pg_comm_broadcast(pg_comm *c, void *buf, size_t bytes, int root, pg_err *err) {
  PG_TRY(usable(c, err));
  if (root < 0 || root >= c->n)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "comm: root %d of %d ranks", root, c->n);
  if (c->n == 1) return PG_OK;
  return c->backend == PG_COMM_THREADS ? t_broadcast(c, buf, bytes, root, err)
                                       : n_broadcast(c, buf, bytes, root, err);
}

int pg_comm_barrier(pg_comm *c, pg_err *err) {
  PG_TRY(usable(c, err));
  if (c->n == 1) return PG_OK;
  if (c->backend == PG_COMM_THREADS) return t_barrier(c, err);
  unsigned char one = 1, all[PG_COMM_MAX_RANKS];
  return n_allgather(c, &one, all, 1, err);
}

/* ---- the rendezvous file --------------------------------------------------------------------- */

static const unsigned char RDV_MAGIC[8] = {'P', 'G', 'N', 'C', 'C', 'L', 'I', 'D'};

int pg_comm_rendezvous_parse(const unsigned char *b, size_t len, int n, const char *path,
                             pg_comm_id *id, pg_err *err) {
  if (len != PG_COMM_RDV_BYTES)
    return pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET,
                      "rendezvous file of %zu bytes, %d expected", len, PG_COMM_RDV_BYTES);
  if (memcmp(b, RDV_MAGIC, sizeof RDV_MAGIC))
    return pg_err_set(err, PG_E_MALFORMED, path, 0, "not a rendezvous file (no PGNCCLID)");
  const uint32_t cnt = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 |
                       (uint32_t)b[11] << 24;
  if (cnt != (uint32_t)n)
    return pg_err_set(err, PG_E_MALFORMED, path, 8,
                      "rendezvous for %u ranks, this run has %d", (unsigned)cnt, n);
  if (b[12] | b[13] | b[14] | b[15])
    return pg_err_set(err, PG_E_MALFORMED, path, 12, "reserved bytes are not zero");
  memcpy(id->b, b + 16, sizeof id->b);
  return PG_OK;
}

static void rdv_bytes(unsigned char *b, int n, const pg_comm_id *id) {
  memset(b, 0, PG_COMM_RDV_BYTES);
  memcpy(b, RDV_MAGIC, sizeof RDV_MAGIC);
  for (int i = 0; i < 4; i++) b[8 + i] = (unsigned char)((uint32_t)n >> (8 * i));
  memcpy(b + 16, id->b, sizeof id->b);
}

int pg_comm_rendezvous_write(const char *path, int n, const pg_comm_id *id, pg_err *err) {
  PG_TRY(check_n(n, err));
  unsigned char b[PG_COMM_RDV_BYTES];
  rdv_bytes(b, n, id);
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
    return pg_err_set(err, PG_E_ARG, path, PG_NO_OFFSET, "path too long");
  FILE *f = fopen(tmp, "wb");
  if (!f)
    return pg_err_set(err, PG_E_IO, tmp, PG_NO_OFFSET, "cannot create: %s", strerror(errno));
  int bad = fwrite(b, 1, sizeof b, f) != sizeof b;
  bad |= fclose(f) != 0;
  if (bad || rename(tmp, path) != 0) {
    int e = errno;
    remove(tmp);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot write the rendezvous: %s",
                      strerror(e));
  }
  return PG_OK;
}

static double since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + 1e-9 * (double)(now.tv_nsec - t0->tv_nsec);
}

int pg_comm_rendezvous_read(const char *path, int n, double timeout_s, pg_comm_id *id,
                            pg_err *err) {
  PG_TRY(check_n(n, err));
  struct timespec t0, nap = {0, 50 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    FILE *f = fopen(path, "rb");
    if (f) { /* complete when it exists: it was renamed into place whole */
      unsigned char b[PG_COMM_RDV_BYTES + 1];
      size_t len = fread(b, 1, sizeof b, f);
      const int bad = ferror(f);
      fclose(f);
      if (bad) return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot read");
      return pg_comm_rendezvous_parse(b, len, n, path, id, err);
    }
    if (errno != ENOENT)
      return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot open: %s", strerror(errno));
    if (since(&t0) >= timeout_s)
      return pg_err_set(err, PG_E_NCCL, path, PG_NO_OFFSET,
                        "no rendezvous file from rank 0 after %.0f s", timeout_s);
    nanosleep(&nap, NULL);
  }
}

/* ---- the rendezvous by an address ------------------------------------------------------------ */

/* "HOST:PORT" (the last colon splits; "[v6]:PORT" allowed) into its parts. */
static int split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap,
                      pg_err *err) {
  const char *c = strrchr(addr, ':');
  size_t hl = c ? (size_t)(c - addr) : 0;
  if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') addr++, hl -= 2;
  if (!c || !c[1] || hl >= hcap || strlen(c + 1) >= pcap)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "rendezvous address '%.200s': HOST:PORT expected", addr);
  memcpy(host, addr, hl);
  host[hl] = '\0';
  strcpy(port, c + 1);
  return PG_OK;
}

/* Wait until fd is ready for `events`, at most until timeout_s after t0: 1 ready, 0 time out. */
static int wait_fd(int fd, short events, const struct timespec *t0, double timeout_s) {
  for (;;) {
    const double left = timeout_s - since(t0);
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = events};
    const int r = poll(&p, 1, (int)(left * 1000) + 1);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return 0;
  }
}

int pg_comm_rendezvous_serve(const char *addr, int n, const pg_comm_id *id, double timeout_s,
                             pg_err *err) {
  PG_TRY(check_n(n, err));
  char host[256], port[32];
  PG_TRY(split_addr(addr, host, sizeof host, port, sizeof port, err));
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE}, *ai = NULL;
  int g = getaddrinfo(NULL, port, &hints, &ai);
  if (g)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "rendezvous port '%s': %s", port,
                      gai_strerror(g));
  int fd = -1;
  for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, n)) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(ai);
  if (fd < 0)
    return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET,
                      "rendezvous: cannot listen on port %s: %s", port, strerror(errno));
  unsigned char b[PG_COMM_RDV_BYTES];
  rdv_bytes(b, n, id);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int served = 0, rc = PG_OK;
  while (served < n - 1 && !rc) {
    if (!wait_fd(fd, POLLIN, &t0, timeout_s)) {
      rc = pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET,
                      "rendezvous on port %s: %d of %d ranks came in %.0f s", port, served,
                      n - 1, timeout_s);
      break;
    }
    const int c = accept(fd, NULL, NULL);
    if (c < 0) continue;
    size_t sent = 0;
    while (sent < sizeof b && wait_fd(c, POLLOUT, &t0, timeout_s)) {
      const ssize_t k = send(c, b + sent, sizeof b - sent, MSG_NOSIGNAL);
      if (k <= 0) break;
      sent += (size_t)k;
    }
    close(c);
    served += sent == sizeof b;
  }
  close(fd);
  return rc;
}

int pg_comm_rendezvous_connect(const char *addr, int n, double timeout_s, pg_comm_id *id,
                               pg_err *err) {
  PG_TRY(check_n(n, err));
  char host[256], port[32];
  PG_TRY(split_addr(addr, host, sizeof host, port, sizeof port, err));
  struct timespec t0, nap = {0, 100 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) { /* connect, retrying while rank 0 does not listen yet */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g && g != EAI_AGAIN)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "rendezvous address '%.200s': %s",
                        addr, gai_strerror(g));
    int fd = -1;
    for (struct addrinfo *a = g ? NULL : ai; a && fd < 0; a = a->ai_next) {
      fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen)) {
        close(fd);
        fd = -1;
      }
    }
    if (!g) freeaddrinfo(ai);
    if (fd >= 0) { /* read all rank 0 sends (at most one byte more than a valid record) */
      unsigned char b[PG_COMM_RDV_BYTES + 1];
      size_t got = 0;
      int more = 1;
      while (more && got < sizeof b && wait_fd(fd, POLLIN, &t0, timeout_s)) {
        const ssize_t k = recv(fd, b + got, sizeof b - got, 0);
        if (k > 0) got += (size_t)k;
        else more = k < 0 && errno == EINTR;
      }
      close(fd);
      if (more && got < sizeof b) /* still open when the time ran out */
        return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET,
                          "rendezvous at %.200s: no complete answer in %.0f s", addr, timeout_s);
      return pg_comm_rendezvous_parse(b, got, n, addr, id, err);
    }
    if (since(&t0) >= timeout_s)
      return pg_err_set(err, PG_E_NCCL, NULL, PG_NO_OFFSET,
                        "rendezvous: nothing listens at %.200s after %.0f s", addr, timeout_s);
    nanosleep(&nap, NULL);
  }
}
