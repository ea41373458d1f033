/* test_comm.c: the communicator (pg_comm.h): the threads backend's collectives give every rank
 * the same bits, the rank-order fp32 sum, for any size and rank count; sizes that disagree and
 * an aborted rank end the others' collectives with one line instead of a hang; the nccl
 * backend's library-absent path and its engine checks; the rendezvous file's round trip and
 * every fault of its reader; the rendezvous by an address over the loopback. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pg_comm.h"
#include "pgremote.h"

#define MAXR 5

/* The ranks of one test: each runs body(rank) on a thread of its own. */
typedef struct rank_ctx {
  pg_comm *c;
  int rank, n;
  size_t len;
  int rc[8];
  pg_err err;
  float *buf;
  void *user;
} rank_ctx;

static void run_ranks(rank_ctx *rk, int n, void *(*body)(void *)) {
  pthread_t th[MAXR];
  for (int i = 0; i < n; i++) cr_assert_eq(pthread_create(&th[i], NULL, body, &rk[i]), 0);
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
}

static void make(pg_comm **c, pg_engine *cpu, pg_engine **es, int n) {
  pg_err err;
  for (int i = 0; i < n; i++) {
    cpu[i] = pg_engine_cpu(1);
    es[i] = &cpu[i];
  }
  cr_assert_eq(pg_comm_threads_create(c, n, es, &err), PG_OK, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    cr_assert_eq(pg_comm_rank(c[i]), i);
    cr_assert_eq(pg_comm_size(c[i]), n);
    cr_assert_eq(pg_comm_backend(c[i]), PG_COMM_THREADS);
  }
}

/* Values whose fp32 sums depend on the order: large and small magnitudes mixed. */
static float val(int rank, size_t j) {
  uint32_t h = (uint32_t)(rank * 2654435761u) ^ (uint32_t)(j * 40503u + 17u);
  h ^= h >> 13;
  h *= 0x5bd1e995u;
  h ^= h >> 15;
  float mag = (h & 1) ? 1e4f : 1e-3f;
  return mag * ((float)(h >> 8) / 16777216.0f - 0.5f);
}

static void *allreduce_body(void *arg) {
  rank_ctx *r = arg;
  for (size_t j = 0; j < r->len; j++) r->buf[j] = val(r->rank, j);
  r->rc[0] = pg_comm_allreduce_sum(r->c, r->buf, r->len, &r->err);
  /* a second one right after (the buffers are reused at once) */
  for (size_t j = 0; j < r->len; j++) r->buf[j] = val(r->rank + 7, j);
  r->rc[1] = pg_comm_allreduce_sum(r->c, r->buf + 0, r->len, &r->err);
  return NULL;
}

Test(comm, threads_allreduce_rank_order_same_bits) {
  const size_t lens[] = {0, 1, 2, 3, 1001, 4096};
  for (int n = 1; n <= MAXR; n++)
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
      const size_t len = lens[li];
      pg_engine cpu[MAXR], *es[MAXR];
      pg_comm *c[MAXR];
      make(c, cpu, es, n);
      rank_ctx rk[MAXR];
      for (int i = 0; i < n; i++)
        rk[i] = (rank_ctx){.c = c[i], .rank = i, .n = n, .len = len,
                           .buf = malloc((len ? len : 1) * sizeof(float))};
      run_ranks(rk, n, allreduce_body);
      for (size_t j = 0; j < len; j++) {
        float s = val(7, j); /* the second all-reduce: ranks 0..n-1 offset by 7 */
        for (int q = 1; q < n; q++) s = s + val(q + 7, j);
        for (int i = 0; i < n; i++)
          cr_assert_eq(memcmp(&rk[i].buf[j], &s, sizeof s), 0,
                       "%d ranks, %zu values: rank %d, value %zu: %.9g, want %.9g", n, len, i,
                       j, rk[i].buf[j], s);
      }
      for (int i = 0; i < n; i++) {
        cr_assert_eq(rk[i].rc[0], PG_OK, "%s", rk[i].err.msg);
        cr_assert_eq(rk[i].rc[1], PG_OK, "%s", rk[i].err.msg);
        free(rk[i].buf);
        pg_comm_free(c[i]);
      }
    }
}

/* The rank-order sum is not the sum in another order: the values above do tell them apart. */
Test(comm, order_matters_for_the_test_values) {
  int differ = 0;
  for (size_t j = 0; j < 1001; j++) {
    float a = ((val(0, j) + val(1, j)) + val(2, j)) + val(3, j);
    float b = ((val(3, j) + val(2, j)) + val(1, j)) + val(0, j);
    differ += memcmp(&a, &b, sizeof a) != 0;
  }
  cr_assert_gt(differ, 10);
}

static void *gather_body(void *arg) {
  rank_ctx *r = arg;
  unsigned char mine[3] = {(unsigned char)r->rank, (unsigned char)(r->rank * 3), 0xA5};
  unsigned char *all = r->user;
  r->rc[0] = pg_comm_allgather(r->c, mine, all, sizeof mine, &r->err);
  double v = r->rank == 2 ? 3.25 : -1.0;
  r->rc[1] = pg_comm_broadcast(r->c, &v, sizeof v, r->n > 2 ? 2 : 0, &r->err);
  r->buf[0] = (float)v;
  r->rc[2] = pg_comm_barrier(r->c, &r->err);
  r->rc[3] = pg_comm_broadcast(r->c, &v, sizeof v, r->n, &r->err); /* no such root */
  return NULL;
}

Test(comm, threads_allgather_broadcast_barrier) {
  for (int n = 1; n <= MAXR; n++) {
    pg_engine cpu[MAXR], *es[MAXR];
    pg_comm *c[MAXR];
    make(c, cpu, es, n);
    rank_ctx rk[MAXR];
    unsigned char all[MAXR][3 * MAXR];
    float got[MAXR];
    for (int i = 0; i < n; i++)
      rk[i] = (rank_ctx){.c = c[i], .rank = i, .n = n, .buf = &got[i], .user = all[i]};
    run_ranks(rk, n, gather_body);
    for (int i = 0; i < n; i++) {
      for (int k = 0; k < 3; k++) cr_assert_eq(rk[i].rc[k], PG_OK, "%s", rk[i].err.msg);
      cr_assert_eq(rk[i].rc[3], PG_E_ARG);
      for (int q = 0; q < n; q++) {
        cr_assert_eq(all[i][3 * q], q);
        cr_assert_eq(all[i][3 * q + 1], 3 * q);
        cr_assert_eq(all[i][3 * q + 2], 0xA5);
      }
      cr_assert_eq(got[i], n > 2 ? 3.25f : -1.0f);
      pg_comm_free(c[i]);
    }
  }
}

static void *mismatch_body(void *arg) {
  rank_ctx *r = arg;
  float b[4] = {1, 2, 3, 4};
  r->rc[0] = pg_comm_allreduce_sum(r->c, b, r->rank == 1 ? 3 : 4, &r->err);
  return NULL;
}

/* Sizes that disagree: every rank returns PG_E_ARG naming the sizes, none hangs. */
Test(comm, threads_sizes_disagree) {
  pg_engine cpu[3], *es[3];
  pg_comm *c[3];
  make(c, cpu, es, 3);
  rank_ctx rk[3];
  for (int i = 0; i < 3; i++) rk[i] = (rank_ctx){.c = c[i], .rank = i, .n = 3};
  run_ranks(rk, 3, mismatch_body);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(rk[i].rc[0], PG_E_ARG);
    cr_assert(strstr(rk[i].err.msg, "sizes differ") && !strchr(rk[i].err.msg, '\n'), "%s",
              rk[i].err.msg);
    pg_comm_free(c[i]);
  }
}

static void *abort_body(void *arg) {
  rank_ctx *r = arg;
  float b[8] = {0};
  if (r->rank == 2) {
    usleep(20000); /* the others are waiting (either way the result is the same) */
    pg_comm_abort(r->c);
    r->rc[0] = pg_comm_allreduce_sum(r->c, b, 8, &r->err);
    return NULL;
  }
  r->rc[0] = pg_comm_allreduce_sum(r->c, b, 8, &r->err);
  r->rc[1] = pg_comm_barrier(r->c, &r->err);
  return NULL;
}

/* A rank that fails aborts: the others' collectives return PG_E_NCCL instead of waiting. */
Test(comm, threads_abort_releases_the_others) {
  pg_engine cpu[4], *es[4];
  pg_comm *c[4];
  make(c, cpu, es, 4);
  rank_ctx rk[4];
  for (int i = 0; i < 4; i++) rk[i] = (rank_ctx){.c = c[i], .rank = i, .n = 4};
  run_ranks(rk, 4, abort_body);
  for (int i = 0; i < 4; i++) {
    cr_assert_eq(rk[i].rc[0], PG_E_NCCL, "rank %d", i);
    if (i != 2) cr_assert_eq(rk[i].rc[1], PG_E_NCCL);
    cr_assert(strstr(rk[i].err.msg, i == 2 ? "this rank aborted" : "another rank failed"), "%s",
              rk[i].err.msg);
    pg_comm_free(c[i]);
  }
}

/* The threads backend shares host memory: an engine whose memory the host cannot read is
 * refused; so is a bad rank count. */
Test(comm, threads_refuses_device_engines) {
  pgremote *r = pgremote_new(1);
  pg_engine cpu = pg_engine_cpu(1);
  pg_engine *es[2] = {&cpu, &r->outer};
  pg_comm *c[2];
  pg_err err;
  cr_assert_eq(pg_comm_threads_create(c, 2, es, &err), PG_E_UNSUPPORTED);
  cr_assert(strstr(err.msg, "rank 1") && strstr(err.msg, "nccl"), "%s", err.msg);
  cr_assert(!c[0] && !c[1]);
  cr_assert_eq(pg_comm_threads_create(c, 0, es, &err), PG_E_ARG);
  pgremote_free(r);
}

/* ---- nccl ------------------------------------------------------------------------------------ */

/* Without the library: one line, PG_E_NCCL, naming what was looked for and how to get it. */
Test(comm, nccl_library_absent) {
  setenv("PG_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1); /* this test's own process */
  pg_err err = {0};
  cr_assert_eq(pg_comm_nccl_available(NULL, &err), PG_E_NCCL);
  cr_assert(strstr(err.msg, "/nonexistent/libnccl.so.2") && strstr(err.msg, "nvidia-nccl") &&
                !strchr(err.msg, '\n'),
            "%s", err.msg);
  pg_comm_id id;
  cr_assert_eq(pg_comm_nccl_id(&id, &err), PG_E_NCCL);
  pg_engine g = pg_engine_cpu(1);
  g.host_memory = 0;
  int q = 1;
  g.queue = &q; /* passes the engine check: the library is what fails */
  pg_comm *c;
  cr_assert_eq(pg_comm_nccl_create(&c, 2, 0, &id, &g, &err), PG_E_NCCL);
  cr_assert_null(c);
}

/* A library that is not NCCL: its missing functions are named. */
Test(comm, nccl_library_without_the_functions) {
  setenv("PG_NCCL_LIBRARY", "libm.so.6", 1);
  pg_err err = {0};
  cr_assert_eq(pg_comm_nccl_available(NULL, &err), PG_E_NCCL);
  cr_assert(strstr(err.msg, "lacks ncclGetVersion"), "%s", err.msg);
}

/* The nccl backend is for device engines; the CPU's are refused before the library is used. */
Test(comm, nccl_refuses_cpu_engines) {
  pg_engine cpu[2] = {pg_engine_cpu(1), pg_engine_cpu(1)};
  pg_engine *es[2] = {&cpu[0], &cpu[1]};
  pg_comm *c[2];
  pg_err err;
  cr_assert_eq(pg_comm_nccl_create_all(c, 2, es, &err), PG_E_UNSUPPORTED);
  cr_assert(strstr(err.msg, "not a GPU engine"), "%s", err.msg);
  pg_comm_id id = {{0}};
  cr_assert_eq(pg_comm_nccl_create(&c[0], 2, 0, &id, es[0], &err), PG_E_UNSUPPORTED);
  cr_assert_eq(pg_comm_nccl_create(&c[0], 2, 2, &id, es[0], &err), PG_E_ARG);
}

/* ---- the rendezvous file --------------------------------------------------------------------- */

static char *tmpname(const char *tag) {
  static char buf[256];
  snprintf(buf, sizeof buf, "/tmp/pgcomm_test_%ld_%s", (long)getpid(), tag);
  remove(buf);
  return buf;
}

Test(comm, rendezvous_round_trip_and_faults) {
  pg_comm_id id, back;
  for (size_t i = 0; i < sizeof id.b; i++) id.b[i] = (unsigned char)(i * 7 + 1);
  pg_err err;
  const char *p = tmpname("rdv");
  cr_assert_eq(pg_comm_rendezvous_write(p, 3, &id, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_comm_rendezvous_read(p, 3, 1.0, &back, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(memcmp(&id, &back, sizeof id), 0);
  /* another run's rank count */
  cr_assert_eq(pg_comm_rendezvous_read(p, 4, 1.0, &back, &err), PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "3 ranks") && strstr(err.msg, p), "%s", err.msg);
  /* the bytes: every fault named */
  unsigned char b[PG_COMM_RDV_BYTES + 1];
  FILE *f = fopen(p, "rb");
  cr_assert_eq(fread(b, 1, PG_COMM_RDV_BYTES, f), PG_COMM_RDV_BYTES);
  fclose(f);
  cr_assert_eq(pg_comm_rendezvous_parse(b, PG_COMM_RDV_BYTES - 1, 3, p, &back, &err),
               PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "143 bytes"), "%s", err.msg);
  cr_assert_eq(pg_comm_rendezvous_parse(b, PG_COMM_RDV_BYTES + 1, 3, p, &back, &err),
               PG_E_MALFORMED);
  b[0] = 'X';
  cr_assert_eq(pg_comm_rendezvous_parse(b, PG_COMM_RDV_BYTES, 3, p, &back, &err), PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "PGNCCLID"), "%s", err.msg);
  b[0] = 'P';
  b[13] = 1;
  cr_assert_eq(pg_comm_rendezvous_parse(b, PG_COMM_RDV_BYTES, 3, p, &back, &err), PG_E_MALFORMED);
  cr_assert(strstr(err.msg, "reserved"), "%s", err.msg);
  b[13] = 0;
  cr_assert_eq(pg_comm_rendezvous_parse(b, PG_COMM_RDV_BYTES, 3, p, &back, &err), PG_OK);
  /* a truncated file on disk */
  f = fopen(p, "wb");
  fwrite(b, 1, 20, f);
  fclose(f);
  cr_assert_eq(pg_comm_rendezvous_read(p, 3, 1.0, &back, &err), PG_E_MALFORMED);
  remove(p);
  /* no temp file is left beside it */
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
  cr_assert_neq(access(tmp, F_OK), 0);
}

Test(comm, rendezvous_wait_is_bounded) {
  pg_comm_id back;
  pg_err err;
  const char *p = tmpname("absent");
  cr_assert_eq(pg_comm_rendezvous_read(p, 2, 0.2, &back, &err), PG_E_NCCL);
  cr_assert(strstr(err.msg, "no rendezvous file") && strstr(err.msg, p), "%s", err.msg);
}

static void *late_writer(void *arg) {
  usleep(150000);
  pg_err err;
  pg_comm_rendezvous_write(arg, 2, &(pg_comm_id){{42}}, &err);
  return NULL;
}

/* A reader that starts first waits for rank 0's file. */
Test(comm, rendezvous_reader_waits_for_the_writer) {
  const char *p = tmpname("late");
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, late_writer, (void *)p), 0);
  pg_comm_id back;
  pg_err err;
  cr_assert_eq(pg_comm_rendezvous_read(p, 2, 10.0, &back, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(back.b[0], 42);
  pthread_join(th, NULL);
  remove(p);
}

/* Where NCCL is installed (the loader finds libnccl.so.2), the hand-made declarations resolve
 * and an id is made (no GPU is needed for either). */
Test(comm, nccl_library_loads_where_installed) {
  pg_err err = {0};
  int v = 0;
  if (pg_comm_nccl_available(&v, &err) != PG_OK) cr_skip_test("no NCCL here: %s", err.msg);
  cr_assert_gt(v, 20000, "NCCL version code %d", v);
  pg_comm_id id = {{0}}, zero = {{0}};
  cr_assert_eq(pg_comm_nccl_id(&id, &err), PG_OK, "%s", err.msg);
  cr_assert_neq(memcmp(&id, &zero, sizeof id), 0);
}

/* ---- the rendezvous by an address ------------------------------------------------------------ */

typedef struct serve_job {
  char addr[64];
  int n, rc;
  pg_comm_id id;
  pg_err err;
} serve_job;

static void *serve_body(void *arg) {
  serve_job *j = arg;
  j->rc = pg_comm_rendezvous_serve(j->addr, j->n, &j->id, 10.0, &j->err);
  return NULL;
}

typedef struct connect_job {
  const char *addr;
  int n, rc;
  pg_comm_id id;
  pg_err err;
} connect_job;

static void *connect_body(void *arg) {
  connect_job *j = arg;
  j->rc = pg_comm_rendezvous_connect(j->addr, j->n, 10.0, &j->id, &j->err);
  return NULL;
}

/* A free port on the loopback (bound and released: a race with other programs is possible but
 * harmless here, the test would fail loudly). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  close(fd);
  return ntohs(a.sin_port);
}

/* Rank 0 hands the id to three ranks, the ranks connecting before it listens included. */
Test(comm, rendezvous_by_address) {
  serve_job s = {.n = 4};
  snprintf(s.addr, sizeof s.addr, "127.0.0.1:%d", free_port());
  for (size_t i = 0; i < sizeof s.id.b; i++) s.id.b[i] = (unsigned char)(255 - i);
  connect_job c[3];
  pthread_t tc[3], ts;
  for (int i = 0; i < 3; i++) {
    c[i] = (connect_job){.addr = s.addr, .n = 4};
    cr_assert_eq(pthread_create(&tc[i], NULL, connect_body, &c[i]), 0);
  }
  usleep(150000); /* the ranks are already trying */
  cr_assert_eq(pthread_create(&ts, NULL, serve_body, &s), 0);
  pthread_join(ts, NULL);
  for (int i = 0; i < 3; i++) pthread_join(tc[i], NULL);
  cr_assert_eq(s.rc, PG_OK, "%s", s.err.msg);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(c[i].rc, PG_OK, "%s", c[i].err.msg);
    cr_assert_eq(memcmp(&c[i].id, &s.id, sizeof s.id), 0);
  }
}

/* Bounded waits both ways, another run's rank count refused, a malformed address refused. */
Test(comm, rendezvous_by_address_faults) {
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", free_port());
  pg_comm_id id = {{1}};
  pg_err err;
  cr_assert_eq(pg_comm_rendezvous_connect(addr, 2, 0.3, &id, &err), PG_E_NCCL);
  cr_assert(strstr(err.msg, "nothing listens") && strstr(err.msg, addr), "%s", err.msg);
  cr_assert_eq(pg_comm_rendezvous_serve(addr, 2, &id, 0.3, &err), PG_E_NCCL);
  cr_assert(strstr(err.msg, "0 of 1 ranks"), "%s", err.msg);
  /* a server for 3 ranks, a rank of a run of 2 */
  serve_job s = {.n = 3};
  snprintf(s.addr, sizeof s.addr, "%s", addr);
  pthread_t ts;
  cr_assert_eq(pthread_create(&ts, NULL, serve_body, &s), 0);
  connect_job c = {.addr = addr, .n = 2}, c2 = {.addr = addr, .n = 3};
  connect_body(&c);
  connect_body(&c2);
  pthread_join(ts, NULL);
  cr_assert_eq(c.rc, PG_E_MALFORMED);
  cr_assert(strstr(c.err.msg, "3 ranks"), "%s", c.err.msg);
  cr_assert_eq(c2.rc, PG_OK, "%s", c2.err.msg);
  cr_assert_eq(pg_comm_rendezvous_connect("no-port", 2, 0.1, &id, &err), PG_E_ARG);
  cr_assert_eq(pg_comm_rendezvous_serve("host:", 2, &id, 0.1, &err), PG_E_ARG);
}
