/* pg_tape.h: reverse-mode differentiation over the engine's op table. Model code calls the tp_*
 * functions, which run the forward op at once and, on a tape that records gradients, append a
 * node; pg_tape_backward then walks the nodes in reverse and calls each op's backward, so the
 * backward of every model feature is the composition of the op backwards of spec/engine.md.
 *
 * Memory: every tensor a tp_* call makes lives in the tape's arena until pg_tape_reset (or a
 * pg_tape_release to an earlier mark, for inference). On a recording tape each tensor also gets
 * a zeroed gradient buffer of the same size; a tensor whose g is NULL takes no gradient (a
 * constant, a frozen parameter, or any tensor of an inference tape). pg_t_new and pg_t_keep zero
 * their values; a tp_* op's output is not zeroed first, since its op writes every value.
 *
 * Every tensor is engine memory (the arena's blocks come from the engine, pg_engine.h): its values
 * are for ops, and reach the host only by pg_engine_download.
 *
 * Errors are sticky: the first failure (out of memory, a token outside the vocabulary, an error
 * the engine's ops recorded) is kept in the tape, later tp_* calls do nothing and return an empty
 * tensor, and pg_tape_status reports it. The model checks the status once at the end of its
 * forward pass.
 *
 * In-place rule: tp_copy_into writes into a tensor the caller made; each region of it must be
 * written once, before any node reads it. */
#ifndef PG_TAPE_H
#define PG_TAPE_H

#include <stddef.h>
#include <stdint.h>

#include "pg_engine.h"
#include "pg_ops.h"
#include "pg_real.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A tensor view: values, gradients (NULL when no gradient flows) and its element count. */
typedef struct pg_t {
  pg_real *v, *g;
  size_t n;
} pg_t;

typedef struct pg_tape pg_tape;

/* A tape over the engine e (which must outlive it). grad = 1 records nodes for the backward. */
int pg_tape_create(pg_tape **out, pg_engine *e, int grad);
void pg_tape_free(pg_tape *tp);
/* Forget every node and tensor (the arena keeps its memory for the next pass) and the error. */
void pg_tape_reset(pg_tape *tp);
/* PG_OK, or the first error of this pass (its message in *err when err is not NULL), including
 * one the engine has recorded so far. pg_tape_sync first waits for the engine's queued work (so
 * a fault of an asynchronous engine is seen). */
int pg_tape_status(pg_tape *tp, pg_err *err);
int pg_tape_sync(pg_tape *tp, pg_err *err);
/* Record an error (the first one wins) and return it. */
int pg_tape_fail(pg_tape *tp, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int pg_tape_grad(const pg_tape *tp);
pg_engine *pg_tape_engine(const pg_tape *tp);
/* Bytes the arena holds now (values, gradients and scratch), and nodes recorded this pass. */
size_t pg_tape_bytes(const pg_tape *tp);
size_t pg_tape_nodes(const pg_tape *tp);

/* Arena marks for inference: release frees every tensor made after the mark. On a recording tape
 * release does nothing (the nodes still need their tensors). */
typedef struct pg_tape_mark_t {
  size_t block, used, nodes;
} pg_tape_mark_t;
pg_tape_mark_t pg_tape_mark(const pg_tape *tp);
void pg_tape_release(pg_tape *tp, pg_tape_mark_t m);

/* Zeroed engine memory (64-byte aligned) that lives until reset; NULL after an error. */
void *pg_tape_scratch(pg_tape *tp, size_t bytes);

/* A zeroed tensor of n elements (with a zeroed gradient on a recording tape). */
pg_t pg_t_new(pg_tape *tp, size_t n);
/* A tensor that survives pg_tape_release (the carried state of an inference pass). */
pg_t pg_t_keep(pg_tape *tp, size_t n);
/* Views. A constant has no gradient; a parameter's gradient is g (NULL when frozen). */
pg_t pg_t_const(const pg_real *v, size_t n);
pg_t pg_t_param(pg_real *v, pg_real *g, size_t n);
pg_t pg_t_view(pg_t x, size_t off, size_t n);

/* Backward: every node in reverse order. The seeds are the dnll arrays given to tp_ce (read
 * now). PG_OK, the tape's error, or an op's failure (PG_E_NOMEM). */
int pg_tape_backward(pg_tape *tp);

/* ---- differentiable ops (shapes as in pg_ops.h; each returns a new tensor) ---- */

pg_t tp_matmul(pg_tape *tp, pg_t x, pg_t w, int M, int N, int K);
/* G products x[g] · W_gᵀ (op matmul_grouped_fwd): w holds nw matrices [N, K] wstride apart, and
 * widx [G] (engine memory) says which each group uses. */
pg_t tp_matmul_grouped(pg_tape *tp, pg_t x, pg_t w, const int32_t *widx, size_t wstride,
                       int nw, int G, int M, int N, int K);
pg_t tp_rmsnorm(pg_tape *tp, pg_t x, size_t R, int D, float eps);
/* The records' rotation by −θ; the standard sign is the same op on negated positions. */
pg_t tp_rope(pg_tape *tp, pg_t x, const int32_t *pos, int T, int H, int d, int rot, float base);
/* The same rotation with the records' bf16 roundings (op rope_bf16_fwd); backward as tp_rope. */
pg_t tp_rope_bf16(pg_tape *tp, pg_t x, const int32_t *pos, int T, int H, int d, int rot,
                  float base);
/* Attention over B sequences of T tokens (q [B, T, H, d], seg [B, T] or NULL). out: a fresh
 * tensor, or (when out.v is not NULL) a region of one to write into. */
pg_t tp_attention(pg_tape *tp, pg_t out, pg_t q, pg_t k, pg_t v, const int32_t *seg, int B,
                  int T, int H, int Hkv, int d, float scale);
/* The same with the flash kernels' bf16 probabilities and output (op attention_bf16_fwd). */
pg_t tp_attention_bf16(pg_tape *tp, pg_t out, pg_t q, pg_t k, pg_t v, const int32_t *seg, int B,
                       int T, int H, int Hkv, int d, float scale);
pg_t tp_relu2(pg_tape *tp, pg_t x);
pg_t tp_leaky_relu2(pg_tape *tp, pg_t x, float slope);
pg_t tp_rowgate(pg_tape *tp, pg_t x, pg_t g, size_t R, int D);
pg_t tp_rowmul(pg_tape *tp, pg_t x, pg_t s, size_t R, int D);
pg_t tp_chanmul(pg_tape *tp, pg_t x, pg_t s, size_t R, int C);
pg_t tp_chanlerp(pg_tape *tp, pg_t a, pg_t b, pg_t g, size_t R, int C);
pg_t tp_xsa(pg_tape *tp, pg_t y, pg_t v, int T, int H, int Hkv, int d);
pg_t tp_softcap(pg_tape *tp, pg_t z, float c);
pg_t tp_tanh(pg_tape *tp, pg_t x);
/* a·x (axpy onto zeros). */
pg_t tp_scale(pg_tape *tp, pg_t x, float a);
/* a + b (b added onto a copy of a by axpy). */
pg_t tp_add(pg_tape *tp, pg_t a, pg_t b);
/* dst = src (dst a region of a tensor made by the caller). */
void tp_copy_into(pg_tape *tp, pg_t dst, pg_t src);
pg_t tp_embed(pg_tape *tp, pg_t table, const int32_t *ids, int T, int D, int V);
pg_t tp_cols(pg_tape *tp, pg_t x, size_t R, int C, int c0, int w);
pg_t tp_expand(pg_tape *tp, pg_t x, int G, int r);
/* x rounded to bfloat16 (the op round_bf16); the backward passes dy through unchanged. */
pg_t tp_bf16(pg_tape *tp, pg_t x);
/* Per-token NLL into nll[T] (fp64, engine memory). On a recording tape the backward seeds dlogits
 * with dnll[T] (engine memory, read at backward time; NULL means 1 for every token). */
void tp_ce(pg_tape *tp, pg_t logits, const int32_t *targets, int T, int V, double *nll,
           const pg_real *dnll);

#ifdef __cplusplus
}
#endif
#endif
