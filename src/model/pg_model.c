/* pg_model.c: the record family's forward pass, written once against the tape (so once against
 * the op table), and its parameters. The backward is the tape's reverse walk. spec/model.md
 * describes every step; the comments name the sections of spec/records.md. */
#include "pg_model.h"
#include "pg_model_testing.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_Q, T_K, T_V, T_O, T_MLP, T_HEAD, T_COUNT };

/* ---- residency: a host copy and an engine copy of one array -----------------------------------
 * The host copy h is what loaders, checkpoints, packing and tests read and write; the engine copy
 * d is what the ops use (d == h on a host-memory engine, the CPU: no copies ever). `newer` says
 * which side was last handed out for writing; the other is refreshed, in one transfer, at the
 * next point that needs it: a writable host pointer (pg_model_data, pg_model_params, ...) brings
 * the engine's values to the host, a forward pass or a writable engine pointer takes the host's
 * values to the engine. A model loaded onto an engine with memory of its own
 * (pg_model_create_on) has no host copy at first (h NULL, newer SIDE_ENGINE): the first host
 * accessor allocates it and downloads into it. */
enum { SIDE_BOTH = 0, SIDE_HOST = 1, SIDE_ENGINE = 2 };
typedef struct mirror {
  pg_real *h, *d;
  size_t n;
  int newer;
} mirror;

static int separate(const pg_engine *e, const mirror *x) { return e && x->d && x->d != x->h; }

/* PG_E_NOMEM (recorded in the engine) when a host copy made on demand cannot be allocated. */
static int to_host(pg_engine *e, mirror *x, int write) {
  if (!x->h && separate(e, x)) {
    x->h = malloc(x->n ? x->n * sizeof *x->h : 1);
    if (!x->h)
      return pg_engine_fail(e, PG_E_NOMEM, "out of memory for a host copy of %zu parameters",
                            x->n);
  }
  if (separate(e, x) && x->newer == SIDE_ENGINE) {
    pg_engine_download(e, x->h, x->d, x->n * sizeof *x->h);
    x->newer = SIDE_BOTH;
  }
  if (write && separate(e, x)) x->newer = SIDE_HOST;
  return PG_OK;
}

static void to_engine(pg_engine *e, mirror *x, int write) {
  if (separate(e, x) && x->newer == SIDE_HOST) {
    pg_engine_upload(e, x->d, x->h, x->n * sizeof *x->h);
    x->newer = SIDE_BOTH;
  }
  if (write && separate(e, x)) x->newer = SIDE_ENGINE;
}

/* Move x from engine `from` (NULL: host only) to engine e: the host copy is brought up to date,
 * the old engine copy freed, and the new one made (or aliased on a host-memory engine). */
static int rebind(pg_engine *from, pg_engine *e, mirror *x) {
  if (to_host(from, x, 0)) return PG_E_NOMEM; /* the old engine copy is all there is: kept */
  if (separate(from, x)) pg_engine_free(from, x->d);
  x->d = NULL;
  x->newer = SIDE_BOTH;
  if (!x->h || !e) return PG_OK;
  if (e->host_memory) {
    x->d = x->h;
    return PG_OK;
  }
  x->d = pg_engine_alloc(e, x->n * sizeof *x->h);
  if (!x->d) return PG_E_NOMEM;
  pg_engine_upload(e, x->d, x->h, x->n * sizeof *x->h);
  return PG_OK;
}

static void mirror_zero(pg_engine *e, mirror *x) {
  if (separate(e, x)) pg_engine_zero(e, x->d, x->n * sizeof *x->d);
  if (!x->h) return; /* no host copy yet: the engine's stays the newer */
  memset(x->h, 0, x->n * sizeof *x->h);
  x->newer = SIDE_BOTH;
}

typedef struct layer_ix {
  long cq, ck, cv, proj, q_gain, gate, fc, mproj, attn_scale, mlp_scale, resid_mix;
} layer_ix;

struct pg_model {
  pg_arch a;
  pg_arch_tensor *t;
  size_t nt, np;
  size_t *off;
  pg_real *g;           /* the host copy of G (P's is P.h, made on demand after a load onto an
                           engine with memory of its own) */
  pg_engine *eng;       /* the engine the parameters are resident on (NULL: none yet) */
  mirror P, G;          /* parameters and gradients */
  pg_lora *last_lora;   /* the adapters of the last forward (their gradients follow its backward) */
  const pg_real *dnll_host; /* the last forward's loss weights (read at backward) */
  pg_real *dnll_dev;        /* ... and their engine copy (tape scratch) */
  size_t dnll_n;
  unsigned char *stage; /* host staging of the side inputs of a forward pass */
  size_t stage_cap;
  pg_real *obs_buf;     /* host copy of an observed activation (separate-memory engines) */
  size_t obs_cap;
  unsigned char *trainable;
  long tok_emb, bigram_embed, bigram_proj, bigram_scale, ve_embed, ve_proj, ve_scale, smear_gate,
      smear_w, smear_lambda, skip_weights, skip_gates, par_resid, par_post, readout, lm_head;
  long ve_layer_scale[PG_ARCH_MAX_LAYERS];
  layer_ix L[PG_ARCH_MAX_LAYERS];
  int nv, nenc;
  int vlist[PG_ARCH_MAX_VIRTUAL];
  pg_model_observer obs;
  void *obs_ctx;
  int loops; /* 1: the arch's encoder/decoder lists; 0: the plain split (training before recur) */
  pg_precision prec; /* fp32 (default) or the records' bf16 rounding points */
};

struct pg_lora {
  int rows, rank, nslots, d, V;
  unsigned targets;
  pg_real scale;
  size_t n, row_n;
  size_t slot_off[PG_ARCH_MAX_VIRTUAL][T_COUNT]; /* offset of A within a row; B follows A */
  int in[T_COUNT], out[T_COUNT];
  pg_real *p, *g; /* host copies */
  pg_engine *eng;
  mirror P, G;
};

/* ---- tensors --------------------------------------------------------------------------------- */

long pg_model_find(const pg_model *m, const char *name) {
  for (size_t i = 0; i < m->nt; i++)
    if (strcmp(m->t[i].name, name) == 0) return (long)i;
  return -1;
}

static long findf(const pg_model *m, const char *fmt, int i) {
  char name[PG_ARCH_NAME_MAX];
  snprintf(name, sizeof name, fmt, i);
  return pg_model_find(m, name);
}

int pg_model_create(pg_model **out, const pg_arch *a, pg_err *err) {
  *out = NULL;
  PG_TRY(pg_arch_validate(a, NULL, err));
  pg_model *m = calloc(1, sizeof *m);
  if (!m) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a model");
  m->a = *a;
  int rc = pg_arch_tensors(a, &m->t, &m->nt, err);
  if (rc) {
    free(m);
    return rc;
  }
  m->off = calloc(m->nt + 1, sizeof *m->off);
  m->trainable = malloc(m->nt ? m->nt : 1);
  if (!m->off || !m->trainable) goto nomem;
  for (size_t i = 0; i < m->nt; i++) {
    uint64_t n = pg_arch_tensor_numel(&m->t[i]);
    if (n > ((uint64_t)1 << 34) || m->off[i] + n > ((uint64_t)1 << 34)) {
      pg_model_free(m);
      return pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                        "the model has more than 2^34 parameters");
    }
    m->off[i + 1] = m->off[i] + (size_t)n;
    m->trainable[i] = 1;
  }
  m->np = m->off[m->nt];
  m->P = (mirror){.h = calloc(m->np ? m->np : 1, sizeof *m->P.h), .n = m->np};
  if (!m->P.h) goto nomem;

  m->tok_emb = pg_model_find(m, "tok_emb.weight");
  m->bigram_embed = pg_model_find(m, "bigram.embed.weight");
  m->bigram_proj = pg_model_find(m, "bigram.proj.weight");
  m->bigram_scale = pg_model_find(m, "bigram.scale");
  m->ve_embed = pg_model_find(m, "ve_shared.embed.weight");
  m->ve_proj = pg_model_find(m, "ve_shared.proj.weight");
  m->ve_scale = pg_model_find(m, "ve_shared.scale");
  m->smear_gate = pg_model_find(m, "smear.gate");
  m->smear_w = pg_model_find(m, "smear_gate.weight");
  m->smear_lambda = pg_model_find(m, "smear_lambda");
  m->skip_weights = pg_model_find(m, "skip_weights");
  m->skip_gates = pg_model_find(m, "skip_gates");
  m->par_resid = pg_model_find(m, "parallel_resid_lambdas");
  m->par_post = pg_model_find(m, "parallel_post_lambdas");
  m->readout = pg_model_find(m, "readout_delta");
  m->lm_head = pg_model_find(m, "lm_head.weight");
  for (int k = 0; k < a->embeddings.ve_layers.n; k++)
    m->ve_layer_scale[k] = findf(m, "ve_layer_scales.%d", k);
  for (int i = 0; i < a->layers; i++) {
    layer_ix *L = &m->L[i];
    L->cq = findf(m, "blocks.%d.attn.c_q.weight", i);
    L->ck = findf(m, "blocks.%d.attn.c_k.weight", i);
    L->cv = findf(m, "blocks.%d.attn.c_v.weight", i);
    L->proj = findf(m, "blocks.%d.attn.proj.weight", i);
    L->q_gain = findf(m, "blocks.%d.attn.q_gain", i);
    L->gate = a->attention.gate == PG_ARCH_GATE_2SIGMA_FIRST12
                  ? findf(m, "blocks.%d.attn.attn_gate_proj.weight", i)
                  : findf(m, "blocks.%d.attn.attn_gate_w", i);
    L->fc = findf(m, "blocks.%d.mlp.fc.weight", i);
    L->mproj = findf(m, "blocks.%d.mlp.proj.weight", i);
    L->attn_scale = findf(m, "blocks.%d.attn_scale", i);
    L->mlp_scale = findf(m, "blocks.%d.mlp_scale", i);
    L->resid_mix = findf(m, "blocks.%d.resid_mix", i);
  }
  pg_model_set_loops(m, 1);
  *out = m;
  return PG_OK;
nomem:
  pg_model_free(m);
  return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the model's parameters");
}

void pg_model_free(pg_model *m) {
  if (!m) return;
  if (separate(m->eng, &m->P)) pg_engine_free(m->eng, m->P.d);
  if (separate(m->eng, &m->G)) pg_engine_free(m->eng, m->G.d);
  free(m->stage);
  free(m->obs_buf);
  free(m->t);
  free(m->off);
  free(m->P.h);
  free(m->g);
  free(m->trainable);
  free(m);
}

const pg_arch *pg_model_arch(const pg_model *m) { return &m->a; }
size_t pg_model_tensor_count(const pg_model *m) { return m->nt; }
const pg_arch_tensor *pg_model_tensor(const pg_model *m, size_t i) {
  return i < m->nt ? &m->t[i] : NULL;
}
pg_real *pg_model_data(pg_model *m, size_t i) {
  if (i >= m->nt || to_host(m->eng, &m->P, 1)) return NULL;
  return m->P.h + m->off[i];
}
pg_real *pg_model_grad(pg_model *m, size_t i) {
  if (i >= m->nt || !m->g) return NULL;
  to_host(m->eng, &m->G, 1);
  return m->g + m->off[i];
}
size_t pg_model_param_count(const pg_model *m) { return m->np; }
pg_real *pg_model_params(pg_model *m) {
  return to_host(m->eng, &m->P, 1) ? NULL : m->P.h;
}
pg_real *pg_model_grads(pg_model *m) {
  if (m->g) to_host(m->eng, &m->G, 1);
  return m->g;
}
const pg_real *pg_model_params_read(pg_model *m) {
  return to_host(m->eng, &m->P, 0) ? NULL : m->P.h;
}

int pg_model_create_on(pg_model **out, const pg_arch *a, pg_engine *e, pg_err *err) {
  PG_TRY(pg_model_create(out, a, err));
  pg_model *m = *out;
  if (e->host_memory) return pg_model_bind(m, e, err);
  /* the engine copy alone, zeroed: the host copy is made when a host accessor asks for it */
  pg_real *d = pg_engine_alloc(e, m->np * sizeof *d);
  if (!d) {
    pg_engine_sync(e, NULL);
    pg_model_free(m);
    *out = NULL;
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "cannot place the model's %zu parameters on the %s engine", m->np,
                      e->info.name);
  }
  free(m->P.h);
  m->P = (mirror){.d = d, .n = m->np, .newer = SIDE_ENGINE};
  m->eng = e;
  return PG_OK;
}

pg_real *pg_model_data_engine(pg_model *m, size_t i) {
  if (i >= m->nt || !m->eng) return NULL;
  to_engine(m->eng, &m->P, 1);
  return m->P.d + m->off[i];
}

int pg_model_bind(pg_model *m, pg_engine *e, pg_err *err) {
  if (m->eng == e) return PG_OK;
  int st = rebind(m->eng, e, &m->P);
  if (!st) st = rebind(m->eng, e, &m->G);
  m->eng = e;
  if (st) {
    pg_engine_sync(e, NULL);
    rebind(e, NULL, &m->P);
    rebind(e, NULL, &m->G);
    m->eng = NULL;
    return pg_err_set(err, st, NULL, PG_NO_OFFSET,
                      "cannot place the model's %zu parameters on the %s engine", m->np,
                      e->info.name);
  }
  return PG_OK;
}

pg_engine *pg_model_engine(const pg_model *m) { return m->eng; }

void pg_model_to_host(pg_model *m) {
  (void)to_host(m->eng, &m->P, 1);
  if (m->g) (void)to_host(m->eng, &m->G, 1);
}

pg_real *pg_model_params_engine(pg_model *m) {
  if (!m->eng) return NULL;
  to_engine(m->eng, &m->P, 1);
  return m->P.d;
}

pg_real *pg_model_grads_engine(pg_model *m) {
  if (!m->eng || !m->g) return NULL;
  to_engine(m->eng, &m->G, 1);
  return m->G.d;
}

int pg_model_enable_grads(pg_model *m, pg_err *err) {
  if (m->g) return PG_OK;
  m->g = calloc(m->np ? m->np : 1, sizeof *m->g);
  if (!m->g) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate gradients");
  m->G = (mirror){.h = m->g, .n = m->np};
  if (m->eng && rebind(NULL, m->eng, &m->G))
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "cannot allocate gradients on the %s engine", m->eng->info.name);
  return PG_OK;
}

void pg_model_zero_grads(pg_model *m) { mirror_zero(m->eng, &m->G); }

void pg_model_set_trainable(pg_model *m, size_t i, int on) {
  if (i < m->nt) m->trainable[i] = on ? 1 : 0;
}
int pg_model_trainable(const pg_model *m, size_t i) { return i < m->nt && m->trainable[i]; }

void pg_model_freeze_blocks(pg_model *m, int k) {
  for (size_t i = 0; i < m->nt; i++) {
    int layer = -1;
    m->trainable[i] = 1;
    if (sscanf(m->t[i].name, "blocks.%d.", &layer) == 1 && layer < k) m->trainable[i] = 0;
  }
}

int pg_model_check_finite(pg_model *m, const char *file, pg_err *err) {
  const pg_real *p = pg_model_params_read(m);
  if (!p) return pg_engine_sync(m->eng, err);
  for (size_t i = 0; i < m->nt; i++)
    for (size_t j = m->off[i]; j < m->off[i + 1]; j++)
      if (!isfinite((double)p[j]))
        return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "tensor %s: element %zu is %s",
                          m->t[i].name, j - m->off[i], isnan((double)p[j]) ? "NaN" : "infinite");
  return PG_OK;
}

int pg_model_copy_params(pg_model *dst, pg_model *src, pg_err *err) {
  if (dst->np != src->np || !pg_arch_equal(&dst->a, &src->a))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "copy between models of different archs");
  if (dst->eng && dst->eng == src->eng && !dst->eng->host_memory) {
    /* both on one engine: an engine copy, no round trip through the host */
    pg_engine_copy(dst->eng, pg_model_params_engine(dst), pg_model_params_engine(src),
                   src->np * sizeof *src->P.h);
    return PG_OK;
  }
  pg_real *d = pg_model_params(dst);
  if (!d) return pg_engine_sync(dst->eng, err);
  if (separate(src->eng, &src->P) && src->P.newer == SIDE_ENGINE) {
    /* straight from src's engine: src gets no host copy for it (spec/engine.md §8.1) */
    pg_engine_download(src->eng, d, src->P.d, src->np * sizeof *d);
    return PG_OK;
  }
  const pg_real *s = pg_model_params_read(src);
  if (!s) return pg_engine_sync(src->eng, err);
  memcpy(d, s, src->np * sizeof *d);
  return PG_OK;
}

/* ---- init ------------------------------------------------------------------------------------ */

static int has_suffix(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

/* The init value of a control tensor (spec/arch.md §4), or 0 with *is_control = 0. */
static void control_init(const pg_model *m, size_t i, int *is_control, double *v0, double *v1) {
  const pg_arch *a = &m->a;
  const char *n = m->t[i].name;
  *is_control = 1;
  *v0 = *v1 = 0.0;
  if (has_suffix(n, ".q_gain")) *v0 = *v1 = a->attention.q_gain;
  else if (has_suffix(n, ".resid_mix")) *v0 = 1.0; /* row 0 ones, row 1 zeros */
  else if (has_suffix(n, "attn_scale") || has_suffix(n, "mlp_scale")) *v0 = *v1 = 1.0;
  else if (strcmp(n, "skip_weights") == 0) *v0 = *v1 = 1.0;
  else if (strcmp(n, "skip_gates") == 0) *v0 = *v1 = 0.0;
  else if (strcmp(n, "parallel_resid_lambdas") == 0) *v0 = *v1 = a->structure.parallel_resid_init;
  else if (strcmp(n, "parallel_post_lambdas") == 0) *v0 = *v1 = a->structure.parallel_post_init;
  else if (strcmp(n, "bigram.scale") == 0) *v0 = *v1 = a->embeddings.bigram_scale;
  else if (strcmp(n, "ve_shared.scale") == 0) *v0 = *v1 = a->embeddings.ve_scale;
  else if (strncmp(n, "ve_layer_scales.", 16) == 0) *v0 = *v1 = 1.0;
  else if (strcmp(n, "readout_delta") == 0 || strcmp(n, "smear.gate") == 0 ||
           strcmp(n, "smear_gate.weight") == 0 || strcmp(n, "smear_lambda") == 0 ||
           has_suffix(n, "attn_gate_proj.weight") || has_suffix(n, "attn_gate_w"))
    *v0 = *v1 = 0.0;
  else
    *is_control = 0;
}

static void fill_control(pg_model *m, size_t i, double v0, double v1, pg_rng *r, double noise) {
  pg_real *p = pg_model_data(m, i);
  size_t n = m->off[i + 1] - m->off[i], half = n / 2;
  int two_rows = has_suffix(m->t[i].name, ".resid_mix");
  for (size_t j = 0; j < n; j++) {
    double v = (two_rows && j >= half) ? v1 : v0;
    p[j] = (pg_real)(v + (noise > 0 ? noise * pg_rng_gauss(r) : 0.0));
  }
}

static void fill_gauss(pg_model *m, size_t i, pg_rng *r, double std) {
  pg_real *p = pg_model_params(m);
  for (size_t j = m->off[i]; j < m->off[i + 1]; j++) p[j] = (pg_real)(std * pg_rng_gauss(r));
}

void pg_model_init(pg_model *m, uint64_t seed) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (size_t i = 0; i < m->nt; i++) {
    const pg_arch_tensor *t = &m->t[i];
    const char *n = t->name;
    int ctl;
    double v0, v1;
    control_init(m, i, &ctl, &v0, &v1);
    if (ctl) {
      fill_control(m, i, v0, v1, &r, 0.0);
      if (has_suffix(n, "attn_gate_w") && m->a.attention.gate == PG_ARCH_GATE_DENSE_SIGMOID)
        fill_gauss(m, i, &r, 0.005);
    } else if (strcmp(n, "tok_emb.weight") == 0 || strcmp(n, "lm_head.weight") == 0) {
      fill_gauss(m, i, &r, 0.005);
    } else if (strcmp(n, "bigram.embed.weight") == 0) {
      fill_control(m, i, 0.0, 0.0, &r, 0.0);
    } else if (strcmp(n, "ve_shared.embed.weight") == 0) {
      fill_gauss(m, i, &r, 0.01);
    } else if (has_suffix(n, "attn.proj.weight") || has_suffix(n, "mlp.proj.weight")) {
      fill_control(m, i, 0.0, 0.0, &r, 0.0);
    } else {
      fill_gauss(m, i, &r, 1.0 / sqrt((double)(t->ndim == 2 ? t->shape[1] : 1)));
    }
  }
}

void pg_model_init_random(pg_model *m, uint64_t seed, double std) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (size_t i = 0; i < m->nt; i++) {
    const pg_arch_tensor *t = &m->t[i];
    int ctl;
    double v0, v1;
    control_init(m, i, &ctl, &v0, &v1);
    if (ctl)
      fill_control(m, i, v0, v1, &r, 0.25 * std);
    else if (t->ndim == 2 && strstr(t->name, "embed") == NULL &&
             strcmp(t->name, "tok_emb.weight") && strcmp(t->name, "lm_head.weight"))
      fill_gauss(m, i, &r, std / sqrt((double)t->shape[1]));
    else
      fill_gauss(m, i, &r, std);
  }
}

/* ---- small pieces ---------------------------------------------------------------------------- */

void pg_model_segments(const int32_t *ids, int T, int bos, int max_len, int32_t *seg) {
  int32_t s = 0;
  int start = 0;
  for (int t = 0; t < T; t++) {
    if (t > 0 && (ids[t] == bos || (max_len > 0 && t - start >= max_len))) {
      s++;
      start = t;
    }
    seg[t] = s;
  }
}

void pg_model_bigram_hash(const int32_t *ids, int T, int buckets, int32_t *h) {
  int32_t M = buckets - 1;
  for (int t = 0; t < T; t++) {
    if (t == 0 || M <= 0) {
      h[t] = M > 0 ? M : 0;
      continue;
    }
    uint32_t x = (uint32_t)36313u * (uint32_t)ids[t] ^ (uint32_t)27191u * (uint32_t)ids[t - 1];
    int32_t r = (int32_t)x % M; /* int32 wrap, then Python's non-negative remainder */
    h[t] = r < 0 ? r + M : r;
  }
}

float pg_model_rope_base(const pg_arch *a, int T) {
  double base = a->attention.rope_base;
  int len = a->attention.rope_ntk_len, rd = a->attention.rope_dims;
  if (len > 0 && T > len && rd > 2)
    base = base * pow((double)T / (double)len, (double)rd / (double)(rd - 2));
  return (float)base;
}

/* ---- LoRA ------------------------------------------------------------------------------------ */

static const char *const TARGET_NAMES[T_COUNT] = {"q", "k", "v", "o", "mlp", "head"};

int pg_lora_targets_parse(const char *s, unsigned *mask, pg_err *err) {
  *mask = 0;
  const char *p = s;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    int found = 0;
    for (int k = 0; k < T_COUNT; k++)
      if (strlen(TARGET_NAMES[k]) == len && strncmp(p, TARGET_NAMES[k], len) == 0) {
        *mask |= 1u << k;
        found = 1;
      }
    if (!found)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                        "LoRA target '%.*s' is not one of q,k,v,o,mlp,head", (int)len, p);
    p += len;
    if (*p == ',') p++;
  }
  if (!*mask) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "no LoRA target given");
  return PG_OK;
}

const char *pg_lora_targets_name(unsigned mask, char *buf) {
  buf[0] = 0;
  for (int k = 0; k < T_COUNT; k++)
    if (mask & (1u << k)) {
      if (buf[0]) strcat(buf, ",");
      strcat(buf, TARGET_NAMES[k]);
    }
  return buf;
}

int pg_lora_create(pg_lora **out, const pg_model *m, int rows, int rank, double alpha,
                   unsigned targets, pg_err *err) {
  *out = NULL;
  const pg_arch *a = &m->a;
  if (rows < 1 || rank < 1 || rank > 4096 || !(alpha > 0) || !targets || targets >= (1u << T_COUNT))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "LoRA needs rows >= 1, 1 <= rank <= 4096, alpha > 0 and a target");
  pg_lora *l = calloc(1, sizeof *l);
  if (!l) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate LoRA");
  l->rows = rows;
  l->rank = rank;
  l->targets = targets;
  l->nslots = m->nv;
  l->d = a->dim;
  l->V = a->vocab_size;
  l->scale = (pg_real)(alpha / (double)rank);
  int qd = a->heads * a->head_dim, kvd = a->kv_heads * a->head_dim;
  int in[T_COUNT] = {a->dim, a->dim, a->dim, a->dim, a->dim, a->dim};
  int outd[T_COUNT] = {qd, kvd, kvd, a->dim, a->dim, a->vocab_size};
  memcpy(l->in, in, sizeof in);
  memcpy(l->out, outd, sizeof outd);
  size_t off = 0;
  for (int s = 0; s < l->nslots; s++)
    for (int k = 0; k < T_HEAD; k++) {
      l->slot_off[s][k] = off;
      if (targets & (1u << k)) off += (size_t)rank * (size_t)(in[k] + outd[k]);
    }
  l->slot_off[0][T_HEAD] = off;
  if (targets & PG_LORA_HEAD) off += (size_t)rank * (size_t)(in[T_HEAD] + outd[T_HEAD]);
  l->row_n = off;
  l->n = off * (size_t)rows;
  l->p = calloc(l->n ? l->n : 1, sizeof *l->p);
  l->g = calloc(l->n ? l->n : 1, sizeof *l->g);
  if (!l->p || !l->g) {
    pg_lora_free(l);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate LoRA adapters");
  }
  l->P = (mirror){.h = l->p, .n = l->n};
  l->G = (mirror){.h = l->g, .n = l->n};
  *out = l;
  return PG_OK;
}

void pg_lora_free(pg_lora *l) {
  if (!l) return;
  if (separate(l->eng, &l->P)) pg_engine_free(l->eng, l->P.d);
  if (separate(l->eng, &l->G)) pg_engine_free(l->eng, l->G.d);
  free(l->p);
  free(l->g);
  free(l);
}

static size_t lora_a_off(const pg_lora *l, int row, int slot, int k) {
  return (size_t)row * l->row_n + (k == T_HEAD ? l->slot_off[0][T_HEAD] : l->slot_off[slot][k]);
}

void pg_lora_reset(pg_lora *l, int r, pg_rng *rng, int keep_a) {
  to_host(l->eng, &l->P, 1);
  for (int row = 0; row < l->rows; row++) {
    if (r >= 0 && row != r) continue;
    for (int s = 0; s < l->nslots; s++)
      for (int k = 0; k < T_COUNT; k++) {
        if (!(l->targets & (1u << k)) || (k == T_HEAD && s > 0)) continue;
        pg_real *A = l->p + lora_a_off(l, row, s, k);
        size_t na = (size_t)l->rank * (size_t)l->in[k], nb = (size_t)l->rank * (size_t)l->out[k];
        if (!keep_a) {
          double bound = 1.0 / sqrt((double)l->in[k]);
          for (size_t j = 0; j < na; j++)
            A[j] = (pg_real)(bound * (2.0 * pg_rng_uniform(rng) - 1.0));
        }
        memset(A + na, 0, nb * sizeof *A);
      }
  }
}

void pg_lora_zero_grads(pg_lora *l) { mirror_zero(l->eng, &l->G); }
size_t pg_lora_count(const pg_lora *l) { return l->n; }
pg_real *pg_lora_params(pg_lora *l) {
  to_host(l->eng, &l->P, 1);
  return l->p;
}
pg_real *pg_lora_grads(pg_lora *l) {
  to_host(l->eng, &l->G, 1);
  return l->g;
}
pg_real *pg_lora_params_engine(pg_lora *l) {
  if (!l->eng) return NULL;
  to_engine(l->eng, &l->P, 1);
  return l->P.d;
}
pg_real *pg_lora_grads_engine(pg_lora *l) {
  if (!l->eng) return NULL;
  to_engine(l->eng, &l->G, 1);
  return l->G.d;
}

static int lora_bind(pg_lora *l, pg_engine *e) {
  if (l->eng == e) return PG_OK;
  int st = rebind(l->eng, e, &l->P);
  if (!st) st = rebind(l->eng, e, &l->G);
  l->eng = e;
  return st;
}
int pg_lora_place(pg_lora *l, pg_engine *e, pg_err *err) {
  if (lora_bind(l, e))
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot place the LoRA adapters");
  return PG_OK;
}
void pg_lora_row_span(const pg_lora *l, int r, size_t *off, size_t *n) {
  *off = (size_t)r * l->row_n;
  *n = l->row_n;
}

/* ---- forward --------------------------------------------------------------------------------- */

void pg_model_set_loops(pg_model *m, int on) {
  const pg_arch *a = &m->a;
  if (on) {
    m->nenc = a->structure.encoder.n;
    m->nv = pg_arch_virtual_layers(a);
    for (int v = 0; v < m->nenc; v++) m->vlist[v] = a->structure.encoder.v[v];
    for (int v = 0; v < a->structure.decoder.n; v++)
      m->vlist[m->nenc + v] = a->structure.decoder.v[v];
  } else {
    m->nenc = a->layers / 2;
    m->nv = a->layers;
    for (int v = 0; v < m->nv; v++) m->vlist[v] = v;
  }
  m->loops = on;
}

int pg_model_loops(const pg_model *m) { return m->loops; }

void pg_model_set_precision(pg_model *m, pg_precision p) {
  m->prec = p == PG_PREC_BF16 ? PG_PREC_BF16 : PG_PREC_FP32;
}
pg_precision pg_model_precision(const pg_model *m) { return m->prec; }
const char *pg_precision_name(pg_precision p) { return p == PG_PREC_BF16 ? "bf16" : "fp32"; }
int pg_precision_parse(const char *s) {
  if (!strcmp(s, "fp32")) return PG_PREC_FP32;
  if (!strcmp(s, "bf16")) return PG_PREC_BF16;
  return -1;
}

void pg_model_set_observer(pg_model *m, pg_model_observer fn, void *ctx) {
  m->obs = fn;
  m->obs_ctx = ctx;
}

typedef struct fwd {
  pg_model *m;
  pg_tape *tp;
  const pg_arch *a;
  pg_lora *lo;
  int B, T, BT, d, grad;
  /* the side inputs, engine memory (one upload per forward): ids, targets, RoPE positions,
   * segments, BigramHash buckets, the SmearGate BOS mask */
  const int32_t *ids, *targets, *pos, *seg, *hash, *lora_idx;
  const pg_real *bos_mask;
  double *nll; /* [B·T] engine memory: the per-token NLL, downloaded once */
  float rope_base, eps;
  pg_t ve;
  int bf;         /* bf16 mode: round where the records' autocast rounds (spec/engine.md §7) */
  pg_real *ones;  /* bf16 mode: nones ones, the x of a rowgate that yields σ(g) itself */
  size_t nones;
} fwd;

#define SZ(a, b) ((size_t)(a) * (size_t)(b))

/* A parameter as a tensor: its gradient when gradients are on and it is trainable. */
static pg_t P(fwd *f, long i) {
  pg_model *m = f->m;
  if (i < 0) {
    pg_tape_fail(f->tp, PG_E_ARG, "internal: a tensor the arch implies is missing");
    return (pg_t){0};
  }
  size_t n = m->off[i + 1] - m->off[i];
  pg_real *g = (f->grad && m->G.d && m->trainable[i]) ? m->G.d + m->off[i] : NULL;
  return pg_t_param(m->P.d + m->off[i], g, n);
}

/* Report x [rows × cols] as the input of the weight tensors ws (count n) to the observer. */
static void observe(fwd *f, pg_t x, int rows, int cols, long w0, long w1, long w2) {
  pg_model *m = f->m;
  if (!m->obs || !x.v || pg_tape_status(f->tp, NULL)) return;
  long ws[3] = {w0, w1, w2};
  int n = w2 >= 0 ? 3 : 1;
  const pg_real *X = x.v;
  pg_engine *e = pg_tape_engine(f->tp);
  if (!e->host_memory) {
    /* the observer is a host reader: the activation comes back for it */
    size_t need = SZ(rows, cols);
    if (need > m->obs_cap) {
      pg_real *nb = realloc(m->obs_buf, need * sizeof *nb);
      if (!nb) {
        pg_tape_fail(f->tp, PG_E_NOMEM, "out of memory (an observed activation)");
        return;
      }
      m->obs_buf = nb;
      m->obs_cap = need;
    }
    pg_engine_download(e, m->obs_buf, x.v, need * sizeof *m->obs_buf);
    if (pg_tape_sync(f->tp, NULL)) return;
    X = m->obs_buf;
  }
  m->obs(m->obs_ctx, ws, n, X, rows, cols);
}

/* ---- bf16 mode: the rounding points (spec/engine.md §7). In fp32 mode each helper is the
 * plain op, so the fp32 forward is the same sequence of ops as without them. */

/* t rounded to bf16 in bf16 mode (a tensor the records hold in bf16); t itself in fp32 mode. */
static pg_t bf(fwd *f, pg_t t) { return f->bf ? tp_bf16(f->tp, t) : t; }

/* A parameter at use: in bf16 mode rounded as the records' p.to(x.dtype) rounds it. */
static pg_t PB(fwd *f, long i) { return bf(f, P(f, i)); }

/* A linear layer y = x·Wᵀ. bf16 mode: autocast's F.linear, bf16 operands, a wide accumulation
 * (here the exact fp64 sum of the op) and a bf16 output. */
static pg_t mm(fwd *f, pg_t x, pg_t w, int M, int N, int K) {
  if (!f->bf) return tp_matmul(f->tp, x, w, M, N, K);
  pg_t xb = bf(f, x), wb = bf(f, w);
  return bf(f, tp_matmul(f->tp, xb, wb, M, N, K));
}

/* bf16 mode: σ(g) of R values as its own tensor, rounded to bf16 (torch.sigmoid on a bf16
 * tensor), made as the row gate of ones so its gradient flows to g. */
static pg_t sigmoid_bf(fwd *f, pg_t g, size_t R) {
  if (!f->ones || R > f->nones) {
    pg_tape_fail(f->tp, PG_E_ARG, "internal: bf16 sigmoid of %zu values", R);
    return (pg_t){0};
  }
  return bf(f, tp_rowgate(f->tp, pg_t_const(f->ones, R), g, R, 1));
}

/* σ(g)·a + (1 − σ(g))·b per channel. bf16 mode: s = σ(g) is a bf16 tensor; the gated skips'
 * torch.lerp computes in fp32 and rounds once (ops = 1); SmearGate v1's (1 − s)·b + s·a is three
 * bf16 ops (ops = 3). fp32 mode: chanlerp. */
static pg_t lerp(fwd *f, pg_t a, pg_t b, pg_t g, size_t R, int C, int ops) {
  if (!f->bf) return tp_chanlerp(f->tp, a, b, g, R, C);
  pg_t s = sigmoid_bf(f, bf(f, g), C);
  pg_t oms = tp_add(f->tp, pg_t_const(f->ones, (size_t)C), tp_scale(f->tp, s, -1.0f));
  if (ops == 3) {
    pg_t tb = bf(f, tp_chanmul(f->tp, b, bf(f, oms), R, C));
    pg_t ta = bf(f, tp_chanmul(f->tp, a, s, R, C));
    return bf(f, tp_add(f->tp, tb, ta));
  }
  pg_t ta = tp_chanmul(f->tp, a, s, R, C);
  pg_t tb = tp_chanmul(f->tp, b, oms, R, C);
  return bf(f, tp_add(f->tp, ta, tb));
}

/* n = rms(x)·s, the LN scale folded in as one axpy when s ≠ 1. */
static pg_t norm_in(fwd *f, pg_t x, float s) {
  pg_t n = bf(f, tp_rmsnorm(f->tp, x, f->BT, f->d, f->eps));
  return s == 1.0f ? n : bf(f, tp_scale(f->tp, n, s));
}

static float ln_factor(const fwd *f, int i, int vi) {
  switch (f->a->block.ln_scale) {
  case PG_ARCH_LN_PHYSICAL: return (float)(1.0 / sqrt((double)i + 1.0));
  case PG_ARCH_LN_VIRTUAL: return (float)(1.0 / sqrt((double)vi + 1.0));
  default: return 1.0f;
  }
}

/* A grouped product, one group per batch row with that row's adapter (bf16 mode: mm's roundings,
 * the adapters rounded as a whole, the same values). */
static pg_t mmg(fwd *f, pg_t x, pg_t w, size_t wstride, int M, int N, int K) {
  pg_lora *l = f->lo;
  if (!f->bf)
    return tp_matmul_grouped(f->tp, x, w, f->lora_idx, wstride, l->rows, f->B, M, N, K);
  return bf(f, tp_matmul_grouped(f->tp, bf(f, x), bf(f, w), f->lora_idx, wstride, l->rows, f->B,
                                 M, N, K));
}

/* base + scale·(x Aᵀ) Bᵀ, each batch row with its adapter: two grouped products for the batch. */
static pg_t lora_add(fwd *f, pg_t base, pg_t x, int slot, int k) {
  pg_lora *l = f->lo;
  if (!l || !(l->targets & (1u << k))) return base;
  int in = l->in[k], out = l->out[k], r = l->rank, T = f->T;
  size_t so = lora_a_off(l, 0, slot, k), na = SZ(r, in), nb = SZ(r, out);
  size_t span = (size_t)(l->rows - 1) * l->row_n; /* adapter 0's A to the last adapter's */
  pg_t A = pg_t_param(l->P.d + so, f->grad ? l->G.d + so : NULL, span + na);
  pg_t Bm = pg_t_param(l->P.d + so + na, f->grad ? l->G.d + so + na : NULL, span + nb);
  pg_t xa = mmg(f, x, A, l->row_n, T, r, in);
  pg_t delta = mmg(f, xa, Bm, l->row_n, T, out, r);
  return bf(f, tp_add(f->tp, base,
                      l->scale == 1 ? delta : bf(f, tp_scale(f->tp, delta, (float)l->scale))));
}

/* Attention sublayer of physical layer i at virtual slot vi on the normalized input n [BT, d]
 * (spec/records.md §2.3–2.5). */
static pg_t attn(fwd *f, int i, int vi, pg_t n) {
  const pg_arch *a = f->a;
  const layer_ix *L = &f->m->L[i];
  pg_tape *tp = f->tp;
  int H = a->heads, Hkv = a->kv_heads, hd = a->head_dim, BT = f->BT, T = f->T, d = f->d;
  int qd = H * hd, kvd = Hkv * hd;
  observe(f, n, BT, d, L->cq, L->ck, L->cv);
  pg_t q = lora_add(f, mm(f, n, P(f, L->cq), BT, qd, d), n, vi, T_Q);
  pg_t k = lora_add(f, mm(f, n, P(f, L->ck), BT, kvd, d), n, vi, T_K);
  pg_t v = lora_add(f, mm(f, n, P(f, L->cv), BT, kvd, d), n, vi, T_V);
  int ve_k = pg_arch_ve_index(a, i);
  if (ve_k >= 0)
    v = bf(f, tp_add(tp, v, bf(f, tp_chanmul(tp, f->ve, PB(f, f->m->ve_layer_scale[ve_k]),
                                               SZ(BT, kvd), 1))));
  if (a->attention.qk_norm) {
    q = bf(f, tp_rmsnorm(tp, q, SZ(BT, H), hd, f->eps));
    k = bf(f, tp_rmsnorm(tp, k, SZ(BT, Hkv), hd, f->eps));
  }
  if (a->attention.rope_dims > 0) {
    pg_t (*rope)(pg_tape *, pg_t, const int32_t *, int, int, int, int, float) =
        f->bf ? tp_rope_bf16 : tp_rope;
    q = rope(tp, q, f->pos, BT, H, hd, a->attention.rope_dims, f->rope_base);
    k = rope(tp, k, f->pos, BT, Hkv, hd, a->attention.rope_dims, f->rope_base);
  }
  q = bf(f, tp_chanmul(tp, q, tp_expand(tp, PB(f, L->q_gain), H, hd), BT, qd));
  float scale = (float)(1.0 / sqrt((double)hd));
  /* bf16: the flash kernels' bf16 probabilities and bf16 output (attention_bf16_fwd) */
  pg_t y = (f->bf ? tp_attention_bf16 : tp_attention)(tp, (pg_t){0}, q, k, v, f->seg, f->B, T, H,
                                                       Hkv, hd, scale);
  /* XSA runs in fp32 in the records (F.normalize under autocast): its output is not rounded */
  if (pg_arch_has_xsa(a, i)) y = tp_xsa(tp, y, v, BT, H, Hkv, hd);
  int w = a->attention.gate_window;
  if (f->bf && a->attention.gate != PG_ARCH_GATE_NONE) {
    /* bf16: the gate σ(·) is a bf16 tensor; y·gate is rounded by the out-projection's cast */
    int dense = a->attention.gate == PG_ARCH_GATE_DENSE_SIGMOID;
    pg_t g = mm(f, dense ? n : tp_cols(tp, n, BT, d, 0, w), P(f, L->gate), BT, H, dense ? d : w);
    if (a->attention.gate == PG_ARCH_GATE_SPARSE_SIGMOID && a->attention.gate_scale != 1.0)
      g = bf(f, tp_scale(tp, g, (float)a->attention.gate_scale));
    pg_t s = sigmoid_bf(f, g, SZ(BT, H));
    if (a->attention.gate == PG_ARCH_GATE_2SIGMA_FIRST12) s = bf(f, tp_scale(tp, s, 2.0f));
    y = tp_rowmul(tp, y, s, SZ(BT, H), hd);
  } else
  switch (a->attention.gate) {
  case PG_ARCH_GATE_2SIGMA_FIRST12: {
    pg_t g = tp_matmul(tp, tp_cols(tp, n, BT, d, 0, w), P(f, L->gate), BT, H, w);
    y = tp_scale(tp, tp_rowgate(tp, y, g, SZ(BT, H), hd), 2.0f);
    break;
  }
  case PG_ARCH_GATE_DENSE_SIGMOID:
    y = tp_rowgate(tp, y, tp_matmul(tp, n, P(f, L->gate), BT, H, d), SZ(BT, H), hd);
    break;
  case PG_ARCH_GATE_SPARSE_SIGMOID: {
    pg_t g = tp_matmul(tp, tp_cols(tp, n, BT, d, 0, w), P(f, L->gate), BT, H, w);
    if (a->attention.gate_scale != 1.0) g = tp_scale(tp, g, (float)a->attention.gate_scale);
    y = tp_rowgate(tp, y, g, SZ(BT, H), hd);
    break;
  }
  default: break;
  }
  observe(f, y, BT, qd, L->proj, -1, -1);
  pg_t o = mm(f, y, P(f, L->proj), BT, d, qd);
  return lora_add(f, o, n, vi, T_O);
}

/* MLP sublayer: proj(act(fc(n))) (+ LoRA on n), spec/records.md §2.6. */
static pg_t mlp(fwd *f, int i, int vi, pg_t n) {
  const pg_arch *a = f->a;
  const layer_ix *L = &f->m->L[i];
  int hid = a->mlp.hidden;
  observe(f, n, f->BT, f->d, L->fc, -1, -1);
  pg_t u = mm(f, n, P(f, L->fc), f->BT, hid, f->d);
  u = bf(f, a->mlp.act == PG_ARCH_ACT_LEAKY_RELU2
                ? tp_leaky_relu2(f->tp, u, (float)a->mlp.leaky_slope)
                : tp_relu2(f->tp, u));
  observe(f, u, f->BT, hid, L->mproj, -1, -1);
  pg_t o = mm(f, u, P(f, L->mproj), f->BT, f->d, hid);
  return lora_add(f, o, n, vi, T_MLP);
}

/* x_in = m0⊙x + m1⊙x0 (spec/records.md §2.7). The x0 term enters the tape first: the order of the
 * nodes fixes the order gradients accumulate in (x0's gathers every layer's), and this is the
 * order the fp32 results have always had (the two terms used to be unsequenced arguments, which
 * GCC evaluates right to left). */
static pg_t mix(fwd *f, int i, pg_t x, pg_t x0) {
  if (!f->a->block.resid_mix) return x;
  pg_t rm = PB(f, f->m->L[i].resid_mix);
  pg_t b = bf(f, tp_chanmul(f->tp, x0, pg_t_view(rm, (size_t)f->d, (size_t)f->d), f->BT, f->d));
  pg_t a = bf(f, tp_chanmul(f->tp, x, pg_t_view(rm, 0, (size_t)f->d), f->BT, f->d));
  return bf(f, tp_add(f->tp, a, b));
}

static pg_t scaled(fwd *f, pg_t y, long ix, int on) {
  return on ? bf(f, tp_chanmul(f->tp, y, PB(f, ix), f->BT, f->d)) : y;
}

/* The sequential block (spec/records.md §2.7). */
static pg_t block(fwd *f, int i, int vi, pg_t x, pg_t x0) {
  const pg_arch *a = f->a;
  const layer_ix *L = &f->m->L[i];
  float s = ln_factor(f, i, vi);
  pg_t xi = mix(f, i, x, x0), xo = xi;
  if (pg_arch_has_attn(a, i))
    xo = bf(f, tp_add(f->tp, xi, scaled(f, attn(f, i, vi, norm_in(f, xi, s)), L->attn_scale,
                                        a->block.attn_scale)));
  pg_t mo = scaled(f, mlp(f, i, vi, norm_in(f, xo, s)), L->mlp_scale, a->block.mlp_scale);
  return bf(f, tp_add(f->tp, xo, mo));
}

/* GPT-J parallel block: both sublayers read rms(x_in) (spec/records.md §2.8, R9). */
static pg_t block_gptj(fwd *f, int i, int vi, pg_t x, pg_t x0) {
  const pg_arch *a = f->a;
  const layer_ix *L = &f->m->L[i];
  pg_t xi = mix(f, i, x, x0);
  pg_t n = norm_in(f, xi, ln_factor(f, i, vi));
  pg_t out = xi;
  if (pg_arch_has_attn(a, i))
    out = bf(f, tp_add(f->tp, out,
                       scaled(f, attn(f, i, vi, n), L->attn_scale, a->block.attn_scale)));
  return bf(f, tp_add(f->tp, out, scaled(f, mlp(f, i, vi, n), L->mlp_scale, a->block.mlp_scale)));
}

/* λ·t with λ one element of a lambda tensor. */
static pg_t lam(fwd *f, pg_t t, pg_t lambdas, size_t at) {
  return bf(f, tp_chanmul(f->tp, t, pg_t_view(lambdas, at, 1), t.n, 1));
}

/* Two-lane parallel block (spec/records.md §2.8, R10–R12). */
static void block_two_lane(fwd *f, int i, int vi, pg_t *l0, pg_t *l1, pg_t x0) {
  const pg_arch *a = f->a;
  const layer_ix *L = &f->m->L[i];
  pg_tape *tp = f->tp;
  float s = ln_factor(f, i, vi);
  pg_t R = PB(f, f->m->par_resid), Pl = PB(f, f->m->par_post);
  size_t ri = SZ(i, 2), pi = SZ(i, 4);
  pg_t at = {0};
  int has_attn = pg_arch_has_attn(a, i);
  if (has_attn)
    at = scaled(f, attn(f, i, vi, norm_in(f, mix(f, i, *l0, x0), s)), L->attn_scale,
                a->block.attn_scale);
  pg_t mo = scaled(f, mlp(f, i, vi, norm_in(f, *l1, s)), L->mlp_scale, a->block.mlp_scale);
  pg_t n0 = lam(f, *l0, R, ri + 0), n1 = lam(f, *l1, R, ri + 1);
  if (has_attn) {
    n0 = bf(f, tp_add(tp, n0, lam(f, at, Pl, pi + 0))); /* P[i,0,0]: attention into lane 0 */
    n1 = bf(f, tp_add(tp, n1, lam(f, at, Pl, pi + 1))); /* P[i,0,1]: attention into lane 1 */
  }
  n0 = bf(f, tp_add(tp, n0, lam(f, mo, Pl, pi + 2))); /* P[i,1,0]: MLP into lane 0 */
  n1 = bf(f, tp_add(tp, n1, lam(f, mo, Pl, pi + 3))); /* P[i,1,1]: MLP into lane 1 */
  *l0 = n0;
  *l1 = n1;
}

/* Inference: move t into the keep arena and free the pass's temporaries since the mark. */
static pg_t carry(fwd *f, pg_t t, pg_tape_mark_t mk) {
  if (f->grad || !t.v) return t;
  pg_t k = pg_t_keep(f->tp, t.n);
  if (!k.v) return k;
  pg_engine_copy(pg_tape_engine(f->tp), k.v, t.v, t.n * sizeof *t.v);
  pg_tape_release(f->tp, mk);
  return k;
}

/* Token embedding, BigramHash, SmearGate, the embedding norm (spec/records.md §2.2). */
static pg_t embed(fwd *f) {
  pg_model *m = f->m;
  const pg_arch *a = f->a;
  pg_tape *tp = f->tp;
  int BT = f->BT, d = f->d, T = f->T;
  /* bf16: the records' tok_emb is a bf16 table; rounding the gathered rows is the same */
  pg_t x = bf(f, tp_embed(tp, P(f, m->tok_emb), f->ids, BT, d, a->vocab_size));
  if (a->embeddings.bigram_buckets > 0) {
    int nb = a->embeddings.bigram_buckets, db = a->embeddings.bigram_dim;
    pg_t e = bf(f, tp_embed(tp, P(f, m->bigram_embed), f->hash, BT, db, nb));
    if (a->embeddings.bigram_proj) {
      observe(f, e, BT, db, m->bigram_proj, -1, -1);
      e = mm(f, e, P(f, m->bigram_proj), BT, d, db);
    }
    x = bf(f, tp_add(tp, x, bf(f, tp_chanmul(tp, e, PB(f, m->bigram_scale), SZ(BT, d), 1))));
  }
  pg_t prev = {0};
  if (a->embeddings.smear != PG_ARCH_SMEAR_NONE) {
    /* x_{t−1} within each row, zero at t = 0 */
    prev = pg_t_new(tp, SZ(BT, d));
    for (int b = 0; b < f->B && T > 1; b++)
      tp_copy_into(tp, pg_t_view(prev, (SZ(b, T) + 1) * (size_t)d, SZ(T - 1, d)),
                   pg_t_view(x, SZ(b, T) * (size_t)d, SZ(T - 1, d)));
  }
  if (a->embeddings.smear == PG_ARCH_SMEAR_V2 && f->bf) {
    /* bf16: g = λ·σ(x[:w]·w_s) is a bf16 tensor, then x + (g·x_{t−1})·mask */
    int w = a->embeddings.smear_window;
    pg_t g = mm(f, tp_cols(tp, x, BT, d, 0, w), P(f, m->smear_w), BT, 1, w);
    pg_t s = bf(f, tp_chanmul(tp, sigmoid_bf(f, g, BT), PB(f, m->smear_lambda), BT, 1));
    pg_t p = bf(f, tp_rowmul(tp, prev, s, BT, d));
    if (a->embeddings.smear_bos_mask)
      p = tp_rowmul(tp, p, pg_t_const(f->bos_mask, (size_t)BT), BT, d);
    x = bf(f, tp_add(tp, x, p));
  } else if (a->embeddings.smear == PG_ARCH_SMEAR_V2) {
    int w = a->embeddings.smear_window;
    pg_t g = tp_matmul(tp, tp_cols(tp, x, BT, d, 0, w), P(f, m->smear_w), BT, 1, w);
    pg_t p = tp_rowgate(tp, prev, g, BT, d);
    if (a->embeddings.smear_bos_mask)
      p = tp_rowmul(tp, p, pg_t_const(f->bos_mask, (size_t)BT), BT, d);
    x = tp_add(tp, x, tp_chanmul(tp, p, P(f, m->smear_lambda), SZ(BT, d), 1));
  }
  x = bf(f, tp_rmsnorm(tp, x, BT, d, f->eps));
  if (a->embeddings.smear == PG_ARCH_SMEAR_V1) {
    /* the normalized stream's predecessor */
    pg_t pn = pg_t_new(tp, SZ(BT, d));
    for (int b = 0; b < f->B && T > 1; b++)
      tp_copy_into(tp, pg_t_view(pn, (SZ(b, T) + 1) * (size_t)d, SZ(T - 1, d)),
                   pg_t_view(x, SZ(b, T) * (size_t)d, SZ(T - 1, d)));
    x = lerp(f, pn, x, P(f, m->smear_gate), BT, d, 3);
  }
  return x;
}

/* The value embedding shared by the VE layers (spec/records.md §2.2). */
static pg_t value_embed(fwd *f) {
  pg_model *m = f->m;
  const pg_arch *a = f->a;
  int kvd = a->kv_heads * a->head_dim, dv = a->embeddings.ve_dim;
  pg_t e = bf(f, tp_embed(f->tp, P(f, m->ve_embed), f->ids, f->BT, dv, a->vocab_size));
  if (m->ve_proj >= 0) {
    observe(f, e, f->BT, dv, m->ve_proj, -1, -1);
    e = mm(f, e, P(f, m->ve_proj), f->BT, kvd, dv);
  }
  return bf(f, tp_chanmul(f->tp, e, PB(f, m->ve_scale), SZ(f->BT, kvd), 1));
}

/* x ← p_last + Σ_k a_k ⊙ (p_k − p_last), a = scale·tanh(delta) per group (records.md §2.13). */
static pg_t readout(fwd *f, const pg_t *pk, int nvis) {
  const pg_arch *a = f->a;
  pg_tape *tp = f->tp;
  int G = a->structure.readout_groups, d = f->d;
  pg_t av = bf(f, tp_scale(tp, bf(f, tp_tanh(tp, PB(f, f->m->readout))),
                           (float)a->structure.readout_scale));
  pg_t last = pk[nvis - 1], x = last;
  for (int k = 0; k < nvis - 1; k++) {
    pg_t diff = bf(f, tp_add(tp, pk[k], tp_scale(tp, last, -1.0f)));
    pg_t ak = tp_expand(tp, pg_t_view(av, SZ(k, G), (size_t)G), G, d / G);
    x = bf(f, tp_add(tp, x, bf(f, tp_chanmul(tp, diff, ak, f->BT, d))));
  }
  return x;
}

int pg_model_forward(pg_model *m, pg_tape *tp, const pg_batch *b, pg_lora *lo, double *nll,
                     const pg_real *dnll, pg_err *err) {
  const pg_arch *a = &m->a;
  if (b->B < 1 || b->T < 1 || (size_t)b->B * (size_t)b->T > (size_t)INT32_MAX / 2 || !b->ids ||
      !nll)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "forward: bad batch (%d x %d)", b->B,
                      b->T);
  for (int r = 0; lo && r < b->B; r++) {
    int ar = b->lora_rows ? b->lora_rows[r] : r;
    if (ar < 0 || ar >= lo->rows)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                        "forward: batch row %d maps to adapter %d of %d", r, ar, lo->rows);
  }
  if ((size_t)b->B * (size_t)b->T * (size_t)a->vocab_size > ((size_t)1 << 40))
    return pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET, "forward: logits too large");
  /* The ops' int shape arguments are token counts (B·T), widths and head counts, and a row count
   * that is a product of the batch with a width is a size_t; but inside an op, offsets within one
   * tensor of B·T·w values are not yet all 64-bit: until they are, every such product must fit
   * an int. */
  size_t widest = (size_t)a->dim;
  const size_t widths[] = {(size_t)a->heads * (size_t)a->head_dim,
                           (size_t)a->kv_heads * (size_t)a->head_dim, (size_t)a->mlp.hidden};
  for (size_t k = 0; k < sizeof widths / sizeof widths[0]; k++)
    if (widths[k] > widest) widest = widths[k];
  if ((size_t)b->B * (size_t)b->T > (size_t)INT_MAX / widest)
    return pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                      "forward: batch %d x %d times a row width of %zu exceeds 2^31 - 1 values "
                      "(use a smaller batch)", b->B, b->T, widest);
  pg_tape_reset(tp);
  fwd F = {.m = m, .tp = tp, .a = a, .lo = lo, .B = b->B, .T = b->T, .BT = b->B * b->T,
           .d = a->dim, .grad = pg_tape_grad(tp),
           .eps = (float)a->block.norm_eps};
  fwd *f = &F;
  int BT = f->BT, T = f->T, V = a->vocab_size;
  for (int r = 0; r < b->B; r++) {
    int len = b->len ? b->len[r] : T;
    if (len < 0 || len > T)
      return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "forward: row %d length %d not in 0..%d",
                        r, len, T);
  }
  for (int t = 0; t < BT; t++)
    if (b->ids[t] < 0 || b->ids[t] >= V)
      return pg_err_set(err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,
                        "forward: input %d at row %d position %d is outside the vocabulary of %d",
                        b->ids[t], t / T, t % T, V);

  if (b->targets)
    for (int r = 0; r < b->B; r++)
      for (int t = 0; t < (b->len ? b->len[r] : T); t++) {
        int32_t y = b->targets[SZ(r, T) + (size_t)t];
        if (y < 0 || y >= V)
          return pg_err_set(err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,
                            "forward: target %d at row %d position %d is outside the vocabulary "
                            "of %d", y, r, t, V);
      }

  /* The side inputs, built on the host into one staging buffer and uploaded in one transfer:
   * ids, targets, positions (negated for the standard sign: rotation by +θ), segments, BigramHash
   * buckets, the BOS mask, the ones of bf16 mode; then engine-only space for the NLL and the loss
   * weights. Every piece starts at a multiple of 8 bytes. */
  f->rope_base = pg_model_rope_base(a, b->rope_len > 0 ? b->rope_len : T);
  int bigram = a->embeddings.bigram_buckets > 0;
  int mask = a->embeddings.smear == PG_ARCH_SMEAR_V2 && a->embeddings.smear_bos_mask;
  size_t nones = 0;
  /* the engine learns whether this pass's matmul operands are bf16 values (spec/engine.md §8.7) */
  pg_tape_engine(tp)->bf16_pass = m->prec == PG_PREC_BF16;
  if (m->prec == PG_PREC_BF16) {
    f->bf = 1;
    nones = SZ(BT, a->heads > 1 ? a->heads : 1);
    if (nones < (size_t)f->d) nones = (size_t)f->d;
  }
#define PG_AL8(x) (((x) + 7) / 8 * 8)
  size_t i32 = PG_AL8(SZ(BT, sizeof(int32_t))), rl = PG_AL8(SZ(BT, sizeof(pg_real)));
  size_t o_tg = i32, o_pos = o_tg + (b->targets ? i32 : 0), o_seg = o_pos + i32;
  size_t o_hash = o_seg + (a->attention.doc_mask ? i32 : 0);
  size_t o_mask = o_hash + (bigram ? i32 : 0), o_lora = o_mask + (mask ? rl : 0);
  size_t o_ones = o_lora + (lo ? PG_AL8(SZ(b->B, sizeof(int32_t))) : 0);
  size_t up = o_ones + PG_AL8(nones * sizeof(pg_real));
  size_t o_nll = up, o_dnll = o_nll + SZ(BT, sizeof(double));
  size_t total = o_dnll + (f->grad && dnll ? rl : 0);
#undef PG_AL8
  if (up > m->stage_cap) {
    unsigned char *ns = realloc(m->stage, up);
    if (!ns) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "forward: out of memory");
    m->stage = ns;
    m->stage_cap = up;
  }
  unsigned char *hs = m->stage;
  memcpy(hs, b->ids, SZ(BT, sizeof(int32_t)));
  if (b->targets) memcpy(hs + o_tg, b->targets, SZ(BT, sizeof(int32_t)));
  int32_t *pos = (int32_t *)(hs + o_pos);
  for (int t = 0; t < BT; t++) {
    int32_t p = b->pos ? b->pos[t] : (int32_t)(t % T);
    pos[t] = a->attention.rope_sign == PG_ARCH_ROPE_STANDARD ? -p : p;
  }
  if (a->attention.doc_mask)
    for (int r = 0; r < b->B; r++)
      pg_model_segments(b->ids + SZ(r, T), T, a->bos_id, a->attention.doc_max_len,
                        (int32_t *)(hs + o_seg) + SZ(r, T));
  if (bigram)
    for (int r = 0; r < b->B; r++)
      pg_model_bigram_hash(b->ids + SZ(r, T), T, a->embeddings.bigram_buckets,
                           (int32_t *)(hs + o_hash) + SZ(r, T));
  if (mask)
    for (int t = 0; t < BT; t++) ((pg_real *)(hs + o_mask))[t] = b->ids[t] == a->bos_id ? 0 : 1;
  for (size_t j = 0; j < nones; j++) ((pg_real *)(hs + o_ones))[j] = 1;
  for (int r = 0; lo && r < b->B; r++)
    ((int32_t *)(hs + o_lora))[r] = b->lora_rows ? b->lora_rows[r] : r;

  pg_engine *eng = pg_tape_engine(tp);
  PG_TRY(pg_model_bind(m, eng, err));
  if (lo && lora_bind(lo, eng))
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                      "forward: cannot place the LoRA adapters on the %s engine", eng->info.name);
  to_engine(eng, &m->P, 0);
  to_engine(eng, &m->G, 0);
  if (lo) {
    to_engine(eng, &lo->P, 0);
    to_engine(eng, &lo->G, 0);
  }
  unsigned char *ds = pg_tape_scratch(tp, total);
  if (!ds) return pg_tape_status(tp, err);
  pg_engine_upload(eng, ds, hs, up);
  f->ids = (const int32_t *)ds;
  f->targets = b->targets ? (const int32_t *)(ds + o_tg) : NULL;
  f->pos = (const int32_t *)(ds + o_pos);
  if (a->attention.doc_mask) f->seg = (const int32_t *)(ds + o_seg);
  if (bigram) f->hash = (const int32_t *)(ds + o_hash);
  if (mask) f->bos_mask = (const pg_real *)(ds + o_mask);
  if (lo) f->lora_idx = (const int32_t *)(ds + o_lora);
  f->ones = nones ? (pg_real *)(ds + o_ones) : NULL;
  f->nones = nones;
  f->nll = (double *)(ds + o_nll);
  m->last_lora = lo;
  m->dnll_host = f->grad ? dnll : NULL;
  m->dnll_dev = f->grad && dnll ? (pg_real *)(ds + o_dnll) : NULL;
  m->dnll_n = (size_t)BT;

  pg_t x = embed(f), x0 = x;
  if (a->embeddings.ve_layers.n > 0) f->ve = value_embed(f);

  /* the layer walk: encoder then decoder, skips, lanes, readout (spec/records.md §2.7–2.13) */
  int n_skips = pg_arch_n_skips(a), nsk = 0;
  if (!m->loops && n_skips > 0) {
    /* the plain split: min(encoder, decoder) skips, the first rows of skip_weights */
    int ps = m->nenc < m->nv - m->nenc ? m->nenc : m->nv - m->nenc;
    if (ps < n_skips) n_skips = ps;
  }
  pg_t stack[PG_ARCH_MAX_VIRTUAL];
  pg_t l0 = {0}, l1 = {0};
  int lanes = 0;
  int ro = a->structure.readout_groups > 0 ? a->structure.readout_layer : -1;
  int ro_vis = 0, ro_k = 0;
  for (int vi = 0; ro >= 0 && vi < m->nv; vi++) ro_vis += m->vlist[vi] == ro;
  pg_t pk[PG_ARCH_MAX_VIRTUAL];
  for (int vi = 0; vi < m->nv && !pg_tape_status(tp, NULL); vi++) {
    int i = m->vlist[vi], j = vi - m->nenc, dec = vi >= m->nenc;
    pg_tape_mark_t mk = pg_tape_mark(tp);
    int par = dec && a->structure.parallel != PG_ARCH_PAR_NONE && i >= a->structure.parallel_start;
    if (par && a->structure.parallel == PG_ARCH_PAR_TWO_LANE && !lanes) {
      l0 = l1 = x;
      lanes = 1;
    }
    if (dec && j < n_skips && nsk > 0) {
      pg_t s = stack[--nsk], *tgt = lanes ? &l0 : &x;
      pg_t ws = bf(f, tp_chanmul(tp, s, bf(f, pg_t_view(P(f, m->skip_weights), SZ(j, f->d),
                                                          (size_t)f->d)),
                                 BT, f->d));
      if (a->structure.skips == PG_ARCH_SKIPS_GATED)
        *tgt = lerp(f, *tgt, ws, pg_t_view(P(f, m->skip_gates), SZ(j, f->d), (size_t)f->d), BT,
                    f->d, 1);
      else
        *tgt = bf(f, tp_add(tp, *tgt, ws));
    }
    if (lanes) {
      block_two_lane(f, i, vi, &l0, &l1, x0);
      if (!f->grad) {
        /* carry both lanes: copy lane 1 first, then lane 0 releases the mark */
        pg_t k1 = pg_t_keep(tp, l1.n);
        if (k1.v) pg_engine_copy(pg_tape_engine(tp), k1.v, l1.v, l1.n * sizeof *l1.v);
        l0 = carry(f, l0, mk);
        l1 = k1;
      }
      x = l0;
    } else {
      x = par ? block_gptj(f, i, vi, x, x0) : block(f, i, vi, x, x0);
      x = carry(f, x, mk);
    }
    if (!dec) stack[nsk++] = x;
    if (i == ro && !lanes) {
      pk[ro_k++] = x;
      if (ro_k == ro_vis) x = readout(f, pk, ro_vis);
    }
  }
  if (lanes) x = bf(f, tp_scale(tp, bf(f, tp_add(tp, l0, l1)), 0.5f));

  /* head: final norm, tied (or separate) projection, LoRA, softcap, CE (spec/records.md §2.9) */
  pg_t h = a->head.final_norm ? bf(f, tp_rmsnorm(tp, x, BT, f->d, f->eps)) : x;
  pg_t W = P(f, a->head.tied ? m->tok_emb : m->lm_head);
  observe(f, h, BT, f->d, a->head.tied ? m->tok_emb : m->lm_head, -1, -1);
  pg_t z = lora_add(f, mm(f, h, W, BT, V, f->d), h, 0, T_HEAD);
  if (a->head.softcap > 0 && f->bf) {
    /* bf16 (the records' eager eval): z/c (a multiply by fp32 1/c), tanh and c·t, each bf16 */
    float c = (float)a->head.softcap;
    z = bf(f, tp_scale(tp, bf(f, tp_tanh(tp, bf(f, tp_scale(tp, z, 1.0f / c)))), c));
  } else if (a->head.softcap > 0) {
    z = tp_softcap(tp, z, (float)a->head.softcap);
  }
  if (b->targets && !pg_tape_status(tp, NULL)) {
    for (int r = 0; r < b->B; r++) {
      int len = b->len ? b->len[r] : T;
      if (len == 0) continue;
      size_t o = SZ(r, T);
      tp_ce(tp, pg_t_view(z, o * (size_t)V, SZ(len, V)), f->targets + o, len, V, f->nll + o,
            m->dnll_dev ? m->dnll_dev + o : NULL);
    }
  }
  /* what comes back to the host: the NLL in one download, and each row's last logits */
  int st = pg_tape_status(tp, err);
  if (st) return st;
  if (b->logits_last && z.v)
    for (int r = 0; r < b->B; r++) {
      int len = b->len ? b->len[r] : T;
      pg_real *dst = b->logits_last + SZ(r, V);
      if (len == 0)
        memset(dst, 0, SZ(V, sizeof *dst));
      else
        pg_engine_download(eng, dst, z.v + (SZ(r, T) + (size_t)(len - 1)) * (size_t)V,
                           SZ(V, sizeof *dst));
    }
  pg_engine_download(eng, nll, f->nll, SZ(BT, sizeof *nll));
  return pg_tape_sync(tp, err);
}

int pg_model_backward(pg_model *m, pg_tape *tp, pg_err *err) {
  pg_engine *e = pg_tape_engine(tp);
  if (m->eng != e)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "backward: not the forward's engine");
  /* the loss weights are read now (the caller fills them after seeing the NLLs) */
  if (m->dnll_dev)
    pg_engine_upload(e, m->dnll_dev, m->dnll_host, m->dnll_n * sizeof *m->dnll_dev);
  int st = pg_tape_backward(tp);
  if (st) return pg_tape_status(tp, err);
  /* the gradients are now newer on the engine */
  to_engine(e, &m->G, 1);
  if (m->last_lora) to_engine(e, &m->last_lora->G, 1);
  return pg_tape_sync(tp, err);
}
