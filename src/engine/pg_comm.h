/* pg_comm.h: a communicator between N ranks, each driving one engine (spec/engine.md §8.9):
 * all-reduce-sum of fp32 engine buffers, all-gather and broadcast of host bytes, a barrier.
 * Every result is a fixed function of the ranks' inputs: an all-reduce adds the ranks' values in
 * rank order, (((x₀ + x₁) + x₂) + …) rounded to fp32 after each add, so every rank gets the same
 * bits whatever the timing or the transport.
 *
 * Two backends. `threads`: the N ranks are threads of one process sharing memory (the CPU
 * stand-in; engines with host memory). `nccl`: libnccl.so.2, loaded at run time (no header or
 * library is needed to build): the all-reduce is an all-gather of the ranks' buffers followed by
 * the sum in rank order on each rank's own engine (NCCL's own all-reduce adds in an order that
 * depends on its algorithm and the topology); without the library PG_E_NCCL, one line.
 *
 * A collective is called by every rank, in the same sequence, with the same sizes. A rank that
 * fails calls pg_comm_abort so that the others, waiting in a collective, return PG_E_NCCL
 * instead of waiting for ever. */
#ifndef PG_COMM_H
#define PG_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "pg_engine.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most ranks of one communicator. */
#define PG_COMM_MAX_RANKS 1024

typedef struct pg_comm pg_comm;

enum pg_comm_backend { PG_COMM_THREADS = 0, PG_COMM_NCCL = 1 };
/* "threads" / "nccl" */
const char *pg_comm_backend_name(int backend);

/* The threads backend: n communicators of one group, rank i driving engines[i] (each with host
 * memory), handed out in out[0..n). Each is used by one thread at a time. */
int pg_comm_threads_create(pg_comm **out, int n, pg_engine *const *engines, pg_err *err);

/* ---- nccl ---------------------------------------------------------------------------------- */

/* NCCL's unique id: the bytes rank 0 makes and every rank needs to join. */
typedef struct pg_comm_id {
  unsigned char b[128];
} pg_comm_id;

/* Whether libnccl.so.2 (from the loader's path, or the file the environment variable
 * PG_NCCL_LIBRARY names) can be loaded and has every function used (PG_E_NCCL, one line, if not);
 * *version gets NCCL's version code (e.g. 22703) when not NULL. */
int pg_comm_nccl_available(int *version, pg_err *err);
/* A new id (rank 0, once per run). */
int pg_comm_nccl_id(pg_comm_id *id, pg_err *err);
/* One rank of n in this process or thread, on engine e (a CUDA engine; entered here). Every rank
 * calls it with the same id; it returns once all n have joined. */
int pg_comm_nccl_create(pg_comm **out, int n, int rank, const pg_comm_id *id, pg_engine *e,
                        pg_err *err);
/* All n ranks in this process, rank i on engines[i] (one thread per rank afterwards). */
int pg_comm_nccl_create_all(pg_comm **out, int n, pg_engine *const *engines, pg_err *err);

/* The rendezvous file (spec/engine.md §8.9): 144 bytes, "PGNCCLID", the rank count (u32 LE),
 * 4 zero bytes, the id. write: atomically (a temp name beside it, then rename). read: waits up
 * to timeout_s seconds for the file, then checks its size, magic, count and zeros (PG_E_MALFORMED
 * naming the file and the fault; PG_E_NCCL when it does not appear in time). */
#define PG_COMM_RDV_BYTES 144
int pg_comm_rendezvous_write(const char *path, int n, const pg_comm_id *id, pg_err *err);
int pg_comm_rendezvous_read(const char *path, int n, double timeout_s, pg_comm_id *id,
                            pg_err *err);
/* The rendezvous by an address, "HOST:PORT" (spec/engine.md §8.9): rank 0 listens on PORT (every
 * interface) and sends the same 144 bytes to each of the n − 1 ranks that connect, returning once
 * all have theirs; the others connect to HOST:PORT (retrying while nothing listens) and check what
 * they read as read does. Both give up after timeout_s seconds (PG_E_NCCL). */
int pg_comm_rendezvous_serve(const char *addr, int n, const pg_comm_id *id, double timeout_s,
                             pg_err *err);
int pg_comm_rendezvous_connect(const char *addr, int n, double timeout_s, pg_comm_id *id,
                               pg_err *err);
/* The check of read, on bytes already in memory (what the fuzz target drives). */
int pg_comm_rendezvous_parse(const unsigned char *b, size_t len, int n, const char *path,
                             pg_comm_id *id, pg_err *err);

/* ---- every backend ------------------------------------------------------------------------- */

int pg_comm_rank(const pg_comm *c);
int pg_comm_size(const pg_comm *c);
int pg_comm_backend(const pg_comm *c);
pg_engine *pg_comm_engine(const pg_comm *c);

/* buf (n fp32 values of the rank's engine memory) becomes the sum over the ranks, in rank order,
 * on every rank. Returns after the result is in buf (the engine synced). */
int pg_comm_allreduce_sum(pg_comm *c, float *buf, size_t n, pg_err *err);
/* recv (host memory, size·bytes) gets every rank's `bytes` of send, in rank order; send may be
 * recv + rank·bytes (in place). */
int pg_comm_allgather(pg_comm *c, const void *send, void *recv, size_t bytes, pg_err *err);
/* buf (host memory) on every rank becomes root's. */
int pg_comm_broadcast(pg_comm *c, void *buf, size_t bytes, int root, pg_err *err);
int pg_comm_barrier(pg_comm *c, pg_err *err);
/* This rank failed: the other ranks' collectives return PG_E_NCCL from now on. */
void pg_comm_abort(pg_comm *c);
/* On the rank's own thread; a group's shared state goes with its last member. NULL allowed. */
void pg_comm_free(pg_comm *c);

#ifdef __cplusplus
}
#endif
#endif
