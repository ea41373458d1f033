/* pg_model.h: a model of the record family: the parameters an arch implies (spec/arch.md §4) in
 * one buffer, the forward pass to per-token NLL written once against the tape (pg_tape.h), hence
 * over the engine's op table, and its backward to parameter gradients; plus per-row LoRA
 * adapters for per-document test-time training. spec/model.md is the normative description. */
#ifndef PG_MODEL_H
#define PG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_engine.h"
#include "pg_real.h"
#include "pg_rng.h"
#include "pg_status.h"
#include "pg_tape.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_model pg_model;

/* A model with every parameter zero. The arch is validated (and copied). */
int pg_model_create(pg_model **out, const pg_arch *a, pg_err *err);
/* The same, placed on engine e (which must outlive the model or its next bind): on an engine with
 * memory of its own the parameters are engine memory only, zeroed, with no host copy until a host
 * accessor asks for one; a loader fills them through pg_model_data_engine (spec/engine.md §8.1). */
int pg_model_create_on(pg_model **out, const pg_arch *a, pg_engine *e, pg_err *err);
void pg_model_free(pg_model *m);
const pg_arch *pg_model_arch(const pg_model *m);

/* The tensors in canonical order (pg_arch_tensors), their values and gradients. */
size_t pg_model_tensor_count(const pg_model *m);
const pg_arch_tensor *pg_model_tensor(const pg_model *m, size_t i);
/* Index of the tensor with this name, or -1. */
long pg_model_find(const pg_model *m, const char *name);

/* Residency. The parameters (and gradients) have a host copy and, once the model has run on an
 * engine, an engine copy (the same memory on the CPU engine, so nothing is ever copied there).
 * The host accessors below are the points where values come back to the host: each returns a
 * writable host pointer after bringing the engine's newer values over (one download), and the
 * next forward pass (or pg_model_params_engine) takes the host's values back (one upload).
 * So loaders, checkpoints, packing and calibration read and write the host copy, and the
 * forward, backward and optimizers work on the engine copy, with no other copies. A host
 * pointer is valid until the model next runs or an engine pointer is taken. A model made by
 * pg_model_create_on an engine with memory of its own gets its host copy at the first host
 * accessor, which allocates it (NULL, with PG_E_NOMEM recorded in the engine, when it cannot). */
pg_real *pg_model_data(pg_model *m, size_t i);
/* NULL until pg_model_enable_grads. */
pg_real *pg_model_grad(pg_model *m, size_t i);
/* All parameters (and gradients) back to back in canonical order. */
size_t pg_model_param_count(const pg_model *m);
pg_real *pg_model_params(pg_model *m);
pg_real *pg_model_grads(pg_model *m);
/* Parameters and gradients to the host for writing (as pg_model_params and pg_model_grads): the
 * point where a host optimizer takes them, before it works on pointers it took earlier. */
void pg_model_to_host(pg_model *m);
/* The host copy for reading only (no upload follows). */
const pg_real *pg_model_params_read(pg_model *m);
/* Place the model on engine e (the forward pass does it for its tape's engine): the engine copy
 * is made from the host copy (a model on another engine comes back to the host first). The engine
 * must outlive the model or its next bind. */
int pg_model_bind(pg_model *m, pg_engine *e, pg_err *err);
pg_engine *pg_model_engine(const pg_model *m);
/* Writable engine pointers to all parameters / gradients (for optimizers running on the engine);
 * NULL before the model is bound (or without gradients). Valid until a host pointer is taken. */
pg_real *pg_model_params_engine(pg_model *m);
/* The same for tensor i alone (NULL when unbound or i is out of range). */
pg_real *pg_model_data_engine(pg_model *m, size_t i);
pg_real *pg_model_grads_engine(pg_model *m);

/* Allocate (zeroed) gradients for every parameter; idempotent. */
int pg_model_enable_grads(pg_model *m, pg_err *err);
void pg_model_zero_grads(pg_model *m);
/* Whether tensor i takes a gradient in the backward (default: all). */
void pg_model_set_trainable(pg_model *m, size_t i, int on);
int pg_model_trainable(const pg_model *m, size_t i);
/* Freeze every tensor of blocks.{i}. with i < k (the records' TTT_FREEZE_BLOCKS); the others
 * trainable. */
void pg_model_freeze_blocks(pg_model *m, int k);

/* The init of spec/arch.md §4 for a trainer: matrices N(0, std²) with std = 1/sqrt(fan_in)
 * (0.005 for the embeddings, zero for the output projections attn.proj and mlp.proj), the named
 * scalar inits, gates and smear weights zero. Deterministic for a seed. */
void pg_model_init(pg_model *m, uint64_t seed);
/* PG_E_ARG naming the first tensor and index holding a NaN or an infinity. */
int pg_model_check_finite(pg_model *m, const char *file, pg_err *err);
/* dst's parameters = src's (same arch). */
int pg_model_copy_params(pg_model *dst, pg_model *src, pg_err *err);

/* ---- LoRA adapters: one per row of a batch, per virtual layer slot and target ---- */

enum pg_lora_target {
  PG_LORA_Q = 1u << 0,
  PG_LORA_K = 1u << 1,
  PG_LORA_V = 1u << 2,
  PG_LORA_O = 1u << 3,   /* input: the block's normalized attention input n (not y) */
  PG_LORA_MLP = 1u << 4, /* input: the MLP input; added to the MLP output before mlp_scale */
  PG_LORA_HEAD = 1u << 5 /* input: the final hidden state; added to the logits before softcap */
};
/* "q,k,v,o,mlp,head" (any subset, comma-separated) → mask; PG_E_ARG for an unknown name. */
int pg_lora_targets_parse(const char *s, unsigned *mask, pg_err *err);
/* Canonical comma-separated form into buf (at least 32 bytes). */
const char *pg_lora_targets_name(unsigned mask, char *buf);

typedef struct pg_lora pg_lora;
/* Adapters for `rows` batch rows: for each row, each virtual slot and each target T with input
 * width in and output width out, A[rank, in] and B[out, rank]; delta(x) = scale·(x Aᵀ) Bᵀ with
 * scale = alpha / rank. Initialized by pg_lora_reset. */
int pg_lora_create(pg_lora **out, const pg_model *m, int rows, int rank, double alpha,
                   unsigned targets, pg_err *err);
void pg_lora_free(pg_lora *l);
/* Row r (or every row when r < 0): B ← 0, and A ← U(±1/sqrt(in)) from rng unless keep_a. */
void pg_lora_reset(pg_lora *l, int r, pg_rng *rng, int keep_a);
void pg_lora_zero_grads(pg_lora *l);
size_t pg_lora_count(const pg_lora *l);
/* Host and engine copies, as for the model's parameters (the adapters are placed on the engine of
 * the first forward that uses them). */
pg_real *pg_lora_params(pg_lora *l);
pg_real *pg_lora_grads(pg_lora *l);
pg_real *pg_lora_params_engine(pg_lora *l);
pg_real *pg_lora_grads_engine(pg_lora *l);
/* Place the adapters on engine e now, as a forward on e would (a step can then run on them
 * before any forward has used them). PG_E_NOMEM when e cannot hold them. */
int pg_lora_place(pg_lora *l, pg_engine *e, pg_err *err);
/* The parameters of row r are the contiguous span [*off, *off + *n) of the arrays above. */
void pg_lora_row_span(const pg_lora *l, int r, size_t *off, size_t *n);

/* ---- forward / backward ---- */

/* One batch: B rows of width T (token ids, row-major). Row r's positions t ≥ len[r] are padding:
 * their NLL is not computed (set to 0) and they take no gradient. */
typedef struct pg_batch {
  int B, T;
  const int32_t *ids;     /* [B·T] inputs, each in [0, vocab) */
  const int32_t *targets; /* [B·T] next tokens; NULL: no loss (the logits are computed anyway) */
  const int *len;         /* [B] valid prefix of each row; NULL: T */
  const int32_t *pos;     /* [B·T] RoPE positions; NULL: t within the row */
  int rope_len;           /* the call length of the NTK rescale (records pad windows); 0: T */
  const int *lora_rows;   /* [B] the adapter row of each batch row; NULL: row r uses adapter r */
  pg_real *logits_last; /* [B·V] out (host memory): row r's logits (after the softcap) at its last
                           valid position len−1 (zeros for an empty row); NULL: not wanted */
} pg_batch;

/* Forward on the tape's engine: nll[B·T] (fp64, host memory, downloaded once) for the targets. On a
 * tape that records, the pass is kept for pg_model_backward, which seeds the loss with dnll[B·T]
 * (read then, so the caller fills it after seeing the NLLs; NULL means every valid token weighs 1).
 * lora may be NULL; with it, every batch row maps to one of its rows (lora_rows, or row r to
 * adapter r). The model's parameters take gradients only when pg_model_enable_grads was called and
 * the tensor is trainable. */
int pg_model_forward(pg_model *m, pg_tape *tp, const pg_batch *b, pg_lora *lora, double *nll,
                     const pg_real *dnll, pg_err *err);
/* Accumulate the gradients of Σ dnll·nll of the last forward into the model's (and the
 * adapters') gradient buffers. */
int pg_model_backward(pg_model *m, pg_tape *tp, pg_err *err);

/* An observer of the inputs of the weight matrices, for calibration (Hessians): during a forward
 * pass it is called once per distinct input X [rows × cols] with the tensors that multiply it:
 * c_q, c_k and c_v together (one call, three tensors: they share the input), attn.proj with the
 * attention output, mlp.fc with the MLP input, mlp.proj with the activation, the head (tok_emb
 * when tied, else lm_head) with the final-norm output, bigram.proj and ve.proj with their
 * embeddings. A looped layer is reported at every visit. rows = B·T (padding rows included; a
 * calibration caller uses unpadded rows). X is host memory (downloaded for the call from an engine
 * with memory of its own) and lives only during the call. NULL fn: none. */
typedef void (*pg_model_observer)(void *ctx, const long *tensors, int n, const pg_real *X,
                                  int rows, int cols);
void pg_model_set_observer(pg_model *m, pg_model_observer fn, void *ctx);

/* Depth recurrence (spec/arch.md recur_step/recur_frac): on (the default, and always for
 * evaluation) the forward walks the arch's encoder/decoder lists; off it walks the plain split,
 * layers 0..L−1 once with the first ⌊L/2⌋ as the encoder, using the first min(⌊L/2⌋, L − ⌊L/2⌋)
 * rows of skip_weights/skip_gates (at most the arch's skip count); a readout layer is then
 * visited once and its readout leaves the stream unchanged. A trainer turns it off until the
 * recurrence starts. */
void pg_model_set_loops(pg_model *m, int on);
int pg_model_loops(const pg_model *m);

/* Numerics of the forward pass (spec/engine.md §7). PG_PREC_FP32, the default: fp32 tensors with
 * the ops' exact sums. PG_PREC_BF16: the same ops, with each value rounded to bfloat16 where the
 * records' evaluation under torch.autocast(bf16) rounds it (the tied embedding, the operands and
 * outputs of every linear layer, the residual stream and activations, the softcapped logits);
 * gradients pass the roundings straight through. */
typedef enum pg_precision { PG_PREC_FP32 = 0, PG_PREC_BF16 = 1 } pg_precision;
void pg_model_set_precision(pg_model *m, pg_precision p);
pg_precision pg_model_precision(const pg_model *m);
/* "fp32" / "bf16", and back (-1 for any other name). */
const char *pg_precision_name(pg_precision p);
int pg_precision_parse(const char *s);

/* ---- pieces of the forward pass that an engine or a checker recomputes on its own (and the
 * spec's worked examples use) ---- */

/* Segment ids of one row for the document mask: a new segment at t = 0, at each bos, and every
 * max_len tokens after a segment start (max_len 0: no cap). */
void pg_model_segments(const int32_t *ids, int T, int bos, int max_len, int32_t *seg);
/* BigramHash buckets of one row: h[0] = buckets − 1, h[t] = ((36313·ids[t]) XOR
 * (27191·ids[t−1])) mod (buckets − 1), int32 arithmetic as the records' code. */
void pg_model_bigram_hash(const int32_t *ids, int T, int buckets, int32_t *h);
/* The RoPE base for a call of length T (the NTK rescale above rope_ntk_len), as fp32. */
float pg_model_rope_base(const pg_arch *a, int T);

#ifdef __cplusplus
}
#endif
#endif
