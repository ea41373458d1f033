/* pg_optim.h: the optimizers of test-time training and of the trainer: SGD with
 * momentum and AdamW exactly as torch.optim computes them (torch's default flags: no dampening,
 * no Nesterov for SGD; decoupled weight decay for AdamW) and global-norm gradient clipping
 * (torch.nn.utils.clip_grad_norm_). State is pg_real like the parameters; each update is computed
 * in fp64 and rounded once per element. spec/eval.md §5 gives the formulas; the cosine schedule
 * across chunks is pg_sched.h. The updates are the engine's optimizer ops (spec/engine.md
 * §4.20): an optimizer made on an engine keeps its state in that engine's memory and steps spans
 * of that engine's pointers, so TTT and training run where the model runs; one made by
 * pg_optim_create runs the same ops on host memory (the CPU engine, one thread). */
#ifndef PG_OPTIM_H
#define PG_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "pg_engine.h"
#include "pg_real.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pg_optim_kind { PG_OPTIM_SGD = 1, PG_OPTIM_ADAMW = 2 };

typedef struct pg_optim_cfg {
  int kind;           /* enum pg_optim_kind */
  double momentum;    /* SGD: μ (0 = plain SGD) */
  double beta1, beta2, eps; /* AdamW */
  double weight_decay;      /* AdamW: decoupled, p ← p·(1 − lr·wd); SGD: must be 0 */
} pg_optim_cfg;

/* "sgd" / "adamw"; NULL for another value. */
const char *pg_optim_kind_name(int kind);
int pg_optim_kind_parse(const char *s);

/* One span of parameters and their gradients (the optimizer's engine's memory: host memory for
 * pg_optim_create); `state` is the offset of its optimizer state (the same layout as a flat
 * parameter buffer, so a span at p = params + k uses state k). */
typedef struct pg_optim_span {
  pg_real *p;
  const pg_real *g;
  size_t n, state;
} pg_optim_span;

typedef struct pg_optim pg_optim;
/* State for n parameters (zeroed) in host memory. PG_E_ARG for a bad configuration. */
int pg_optim_create(pg_optim **out, const pg_optim_cfg *cfg, size_t n, pg_err *err);
/* The same with the state in engine e's memory (NULL: as pg_optim_create); PG_E_NOMEM when the
 * engine cannot hold it. e must outlive the optimizer. */
int pg_optim_create_on(pg_optim **out, const pg_optim_cfg *cfg, size_t n, pg_engine *e,
                       pg_err *err);
void pg_optim_free(pg_optim *o);
/* Forget all state (momentum buffers, moments, the step count), as a freshly built optimizer. */
void pg_optim_reset(pg_optim *o);
/* One step over the spans with learning rate lr (one step count for all of them): sgd_step or
 * adamw_step on the optimizer's engine, per span; the bias corrections are formed here in fp64. */
void pg_optim_step(pg_optim *o, const pg_optim_span *spans, size_t nspans, double lr);
/* Steps taken since creation or the last reset. */
uint64_t pg_optim_steps(const pg_optim *o);

/* Checkpointing: the state is the step count and one or two buffers of pg_optim_state_size(o)
 * elements each (n of pg_optim_create). Buffer 0 is SGD's momentum buffer (present but unused at
 * momentum 0) or AdamW's first moment; buffer 1 is AdamW's second moment (NULL for SGD, and NULL
 * for any other `which`). A trainer saves the buffers and pg_optim_steps, and restores them into
 * an optimizer created with the same configuration and n by writing the buffers in place and
 * calling pg_optim_set_steps; the following steps are then bit-identical to the original's. The
 * buffers are the optimizer's engine's memory (read and written through pg_engine_download /
 * pg_engine_upload unless that engine has host memory). */
size_t pg_optim_state_size(const pg_optim *o);
pg_real *pg_optim_state(pg_optim *o, int which);
void pg_optim_set_steps(pg_optim *o, uint64_t steps);

/* Global L2 norm of the gradients of the spans (fp64, spans then elements in order). When
 * max_norm > 0 every gradient is multiplied by min(1, max_norm / (norm + 1e-6)) as
 * clip_grad_norm_ does. Returns the norm before clipping. The spans' g must be writable. */
double pg_clip_grad_norm(const pg_optim_span *spans, size_t nspans, double max_norm);
/* The same on engine e, whose memory the spans' g are in: the sum of squares is one running sum
 * (the sumsq op, spans then elements in order) into acc, one fp64 of e's memory that the caller
 * owns; it comes back in one 8-byte download (the only transfer), and the clip is the scale op.
 * The same bits as pg_clip_grad_norm. */
double pg_clip_grad_norm_on(pg_engine *e, double *acc, const pg_optim_span *spans, size_t nspans,
                            double max_norm);

#ifdef __cplusplus
}
#endif
#endif
