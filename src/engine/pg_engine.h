/* pg_engine.h: an engine is where the model computes: its op table (pg_ops.h), its memory, a
 * scratch workspace, and a sticky error reported at sync. The model, the tape, the optimizers and
 * the protocols are written once against this interface; the CPU reference (pg_engine_cpu) is one
 * implementation, a GPU engine another (spec/engine.md §8).
 *
 * Memory. Every tensor an op reads or writes is engine memory: allocated by pg_engine_alloc, or a
 * view into such an allocation (pointer arithmetic on engine pointers is allowed; dereferencing
 * them on the host is not, unless the engine says host_memory). Host data reaches the engine only
 * through pg_engine_upload and comes back only through pg_engine_download. For the CPU engine
 * (host_memory = 1) engine memory is host memory and the model may skip the copies.
 *
 * Errors. Ops do not return statuses: a failure (an id outside the vocabulary, a device fault,
 * scratch that cannot be had) is recorded in the engine, the first one wins, and later ops may do
 * nothing. pg_engine_sync waits for the queued work, reports that first error (then clears it),
 * and is the only point where a caller learns of it. The memory calls record their failures the
 * same way (pg_engine_alloc also returns NULL at once).
 *
 * Scratch. An op that needs temporary memory takes it from the engine (pg_engine_scratch), never
 * from malloc: one buffer per slot, grown on demand and kept for the next op. Slot 0 is the op's
 * own; slot 1 is for the body of a parallel loop. The CPU engine keeps its scratch per thread
 * (each thread of an op has its own slots, kept until the thread ends), so it owns nothing and
 * can be copied by value; an engine with memory of its own frees its scratch at destroy. */
#ifndef PG_ENGINE_H
#define PG_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "pg_ops.h"
#include "pg_real.h"
#include "pg_status.h"
#include "pg_threads.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch slots (see "Scratch" above). */
#define PG_ENGINE_SCRATCH_SLOTS 4

typedef struct pg_engine pg_engine;

/* One integer tensor in its quantized form, in host memory, as a loader hands it to the engine
 * (pg_engine_dequant, spec/engine.md §8.1): W = rows x cols, row-major. */
typedef struct pg_engine_qtensor {
  uint64_t rows, cols;
  const int8_t *q;          /* rows*cols values, one per byte, in the logical row-major order */
  const uint16_t *scales;   /* rows fp16 bit patterns, one scale per row */
  unsigned lqer_rank;       /* 0: no LQER correction (the lqer_* fields are not read) */
  const int8_t *lqer_a;     /* rows x rank, values in [-2, 1] */
  uint16_t lqer_a_scale;    /* fp16 */
  const int8_t *lqer_b;     /* rank x cols, values in [-8, 7] */
  const uint16_t *lqer_b_scales; /* rank*cols/64 fp16, per group of 64 of B's row-major flatten */
} pg_engine_qtensor;

/* What a receipt records about the engine that computed a score. */
typedef struct pg_engine_info {
  char name[16];     /* "cpu", "cuda" */
  char devices[256]; /* "cpu: 2 threads" / "cuda:0 NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" */
  char driver[64];   /* "" for the CPU; the CUDA driver and runtime versions */
  int ndevices;      /* 1 for the CPU */
  int threads;       /* CPU threads per op (resolved: never 0) */
  char note[256];    /* why the factory chose this engine for auto, or which fast kernels a
                        GPU engine could not use here ("" when neither) */
} pg_engine_info;

struct pg_engine {
  pg_ops ops; /* first member: an op's `const pg_ops *e` is its engine (pg_engine_of) */
  pg_engine_info info;
  int host_memory; /* 1: engine memory is host memory */
  /* Set by the model at the start of each forward pass: 1 in bf16 mode (spec/engine.md §7), where
   * both operands of every matmul are bf16 values, else 0. An engine opened with precision bf16
   * may then compute the products with bf16 operands and fp32 sums (spec/engine.md §8.7); the
   * CPU engine ignores it. */
  int bf16_pass;
  /* Set by the trainer around the backward of a bf16 pass (spec/train.md, spec/engine.md §8.7):
   * 1 lets an engine opened with precision bf16 compute the backward products with bf16 operands
   * (the incoming gradient rounded to bf16) and fp32 sums; 0, the default, keeps the backward
   * exact (test-time training's, for one). The CPU engine ignores it. */
  int bf16_grad;

  /* The implementation's memory functions (use the pg_engine_* wrappers below). alloc returns
   * zeroed memory aligned to 64 bytes, or NULL; the others cannot fail on a CPU and record a
   * device fault with pg_engine_fail. finish waits for queued work and returns a device status. */
  void *(*mem_alloc)(pg_engine *e, size_t bytes);
  void (*mem_free)(pg_engine *e, void *p);
  void (*mem_upload)(pg_engine *e, void *dst, const void *src, size_t bytes);
  void (*mem_download)(pg_engine *e, void *dst, const void *src, size_t bytes);
  void (*mem_zero)(pg_engine *e, void *dst, size_t bytes);
  void (*mem_copy)(pg_engine *e, void *dst, const void *src, size_t bytes);
  /* Optional: pg_engine_dequant's work (NULL: the host reference into a host buffer, uploaded).
   * The CPU engine's is the reference itself, writing host memory: an engine made from the CPU
   * engine with memory functions of its own sets this too (or NULL). A GPU engine's uploads the
   * quantized bytes and runs its dequantization kernel. */
  void (*mem_dequant)(pg_engine *e, float *dst, const pg_engine_qtensor *t);
  int (*finish)(pg_engine *e);
  void (*release)(pg_engine *e); /* frees impl (destroy calls it) */
  /* Optional: the implementation's own scratch (the CPU's, per thread); NULL: the slots below. */
  void *(*scratch_fn)(pg_engine *e, int slot, size_t bytes);
  /* Optional: make the engine current on the calling thread (a GPU engine selects its device, a
   * per-thread setting); NULL: nothing to do. See pg_engine_enter. */
  void (*enter)(pg_engine *e);
  int ordinal; /* the device `enter` selects (GPU engines) */
  void *queue; /* GPU engines: the stream (cudaStream_t) their work is queued on, which the
                  collectives of pg_comm.h join; NULL for the CPU */
  void *impl;

  /* state shared by every engine */
  int status;
  char msg[PG_ERR_MSG_MAX];
  void *scratch[PG_ENGINE_SCRATCH_SLOTS];
  size_t scratch_cap[PG_ENGINE_SCRATCH_SLOTS];
  int heap; /* made by pg_engine_open: destroy frees the struct too */
};

/* Which engine pg_engine_open makes. */
typedef enum pg_engine_kind {
  PG_ENGINE_CPU = 0,
  PG_ENGINE_CUDA = 1,
  PG_ENGINE_AUTO = 2 /* CUDA when a usable GPU and a CUDA engine exist, else the CPU */
} pg_engine_kind;

typedef struct pg_engine_opts {
  int kind;    /* enum pg_engine_kind */
  int threads; /* CPU threads per op: 0 = the online CPUs */
  int device;  /* first GPU (CUDA) */
  int gpus;    /* GPUs to use (CUDA; 0 = 1) */
  /* The numerics the tool runs (a pg_precision of pg_model.h: 0 fp32, 1 bf16). With 1 a GPU
   * engine runs the model's bf16 passes with its fast kernels (spec/engine.md §8.7); with 0 it
   * stays exact. The CPU engine ignores it. */
  int precision;
} pg_engine_opts;

/* "cpu" / "cuda" / "auto", and back (-1 for another name). */
const char *pg_engine_kind_name(int kind);
int pg_engine_kind_parse(const char *s);

/* The most engines one run uses (pgverify --gpus). */
#define PG_ENGINES_MAX 64

/* Several engines for one run (pgverify --gpus N, spec/engine.md §8.8): engine i of the kind
 * asked for, on device o->device + i (each opened with gpus = 1). CPU: n CPU engines of
 * o->threads threads each. AUTO resolves once (CUDA when usable, else the CPU) and opens n of that
 * kind. Fewer GPUs than asked for is PG_E_NO_DEVICE (one line naming both counts). On failure the
 * engines already opened are destroyed and out[] is all NULL. */
int pg_engine_open_many(pg_engine **out, int n, const pg_engine_opts *o, pg_err *err);

/* The CPU reference engine with nthreads threads per op (0 = the online CPUs), by value: it owns
 * nothing (pg_engine_destroy on it does nothing and is not needed). */
pg_engine pg_engine_cpu(int nthreads);

/* The factory of every tool (--engine): the kind asked for, or for AUTO the CUDA engine when
 * it can be made, else the CPU. PG_E_UNSUPPORTED when CUDA is asked for and this build has no
 * CUDA engine, PG_E_NO_DEVICE without a usable GPU, PG_E_CUDA for a driver fault (one line each).
 * Defined with the kernels (kernels/pg_engine_open.c), which know what this build has. */
int pg_engine_open(pg_engine **out, const pg_engine_opts *o, pg_err *err);
/* Make e current on the calling thread (e->enter; nothing for the CPU). A thread that uses several
 * engines (or an engine made on another thread) enters each before using it: a GPU engine's
 * device is a per-thread setting of the runtime. pg_engine_destroy enters by itself. */
void pg_engine_enter(pg_engine *e);
/* Waits for queued work, frees every scratch buffer and the implementation's state; an engine
 * made by pg_engine_open is freed too. NULL is allowed. Memory still allocated from the engine
 * must be freed before. */
void pg_engine_destroy(pg_engine *e);

/* The engine an op table belongs to (the table is its first member). */
static inline pg_engine *pg_engine_of(const pg_ops *ops) { return (pg_engine *)(uintptr_t)ops; }

/* Memory. alloc: zeroed engine memory, or NULL (PG_E_NOMEM recorded). bytes 0 gives a valid
 * unique pointer. upload / download / zero / copy: as memcpy / memset on engine memory. */
void *pg_engine_alloc(pg_engine *e, size_t bytes);
void pg_engine_free(pg_engine *e, void *p);
void pg_engine_upload(pg_engine *e, void *dst, const void *src, size_t bytes);
void pg_engine_download(pg_engine *e, void *dst, const void *src, size_t bytes);
void pg_engine_zero(pg_engine *e, void *dst, size_t bytes);
void pg_engine_copy(pg_engine *e, void *dst, const void *src, size_t bytes);
/* Dequantize t into dst (engine memory, rows*cols fp32): the bits of the CPU reference
 * (pg_dequant_rows, then pg_lqer_apply when lqer_rank > 0; spec/format.md §5), whichever engine
 * computes them. t's buffers are host memory, only read, and free to reuse when the call returns.
 * Failures (memory, a device fault) are recorded as for the other calls. */
void pg_engine_dequant(pg_engine *e, float *dst, const pg_engine_qtensor *t);

/* Scratch of at least `bytes` in slot `slot` (engine memory, 64-byte aligned, contents
 * unspecified), valid until the next call for the same slot (on the same thread, for the CPU) or
 * destroy; NULL (PG_E_NOMEM recorded) when it cannot be had. An op holds its slots for its own
 * duration only. */
void *pg_engine_scratch(pg_engine *e, int slot, size_t bytes);

/* The same without recording a failure: for an op that has a slower path needing no scratch. */
void *pg_engine_scratch_try(pg_engine *e, int slot, size_t bytes);

/* Record an error (the first one since the last sync wins) and return the engine's status. */
int pg_engine_fail(pg_engine *e, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Nonzero when an error is pending (without waiting for queued work). */
int pg_engine_failed(const pg_engine *e);
/* Wait for every queued op, then report the first error since the last sync (into err, with
 * its message) and clear it: PG_OK or that status. */
int pg_engine_sync(pg_engine *e, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
