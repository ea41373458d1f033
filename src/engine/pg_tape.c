/* pg_tape.c: the tape: a bump arena for activations (and their gradients), the node list, and
 * the reverse walk that calls each op's backward. An op's output takes a gradient buffer only when
 * one of its inputs has one (requires-grad propagation), so frozen parts of a model cost no
 * gradient memory and no backward work. */
#include "pg_tape.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arena blocks start small and double up to PG_TAPE_BLOCK, so a small model's tape stays small
 * (a tape is created per evaluation run and per training step of the TTT protocols). */
#define PG_TAPE_BLOCK ((size_t)64 << 20) /* largest regular arena block, bytes */
#define PG_TAPE_BLOCK_MIN ((size_t)1 << 20)
#define PG_TAPE_ALIGN 64

typedef struct block {
  unsigned char *p;
  size_t cap, used;
} block;

typedef struct arena {
  pg_engine *e; /* blocks are engine memory */
  block *b;
  size_t nb, cur; /* blocks allocated; the one being filled */
} arena;

enum kind {
  K_MATMUL,
  K_MATMUL_GROUPED,
  K_RMSNORM,
  K_ROPE,
  K_ATTN,
  K_RELU2,
  K_LEAKY,
  K_ROWGATE,
  K_ROWMUL,
  K_CHANMUL,
  K_CHANLERP,
  K_XSA,
  K_SOFTCAP,
  K_TANH,
  K_SCALE,
  K_ADD,
  K_COPY_INTO,
  K_EMBED,
  K_COLS,
  K_EXPAND,
  K_CE,
  K_BF16,
};

typedef struct node {
  int kind;
  pg_t o, a, b, c;
  const int32_t *i0, *i1;
  int64_t n[6]; /* the call's shape arguments */
  float f;
  const pg_real *dnll;
} node;

struct pg_tape {
  pg_engine *e;
  int grad;
  arena act, keep;
  node *nodes;
  size_t nn, cap;
  int status;
  char msg[PG_ERR_MSG_MAX];
};

/* ---- arena ----------------------------------------------------------------------------------- */

/* zero: 0 for memory its first user overwrites whole (a forward op's output) */
static void *arena_alloc_z(arena *ar, size_t bytes, int zero) {
  bytes = (bytes + PG_TAPE_ALIGN - 1) / PG_TAPE_ALIGN * PG_TAPE_ALIGN;
  if (bytes == 0) bytes = PG_TAPE_ALIGN;
  while (ar->cur < ar->nb) {
    block *b = &ar->b[ar->cur];
    if (b->cap - b->used >= bytes) {
      void *p = b->p + b->used;
      b->used += bytes;
      if (zero) pg_engine_zero(ar->e, p, bytes);
      return p;
    }
    if (ar->cur + 1 < ar->nb) {
      ar->cur++;
      ar->b[ar->cur].used = 0;
      continue;
    }
    break;
  }
  size_t grow = ar->nb < 6 ? PG_TAPE_BLOCK_MIN << ar->nb : PG_TAPE_BLOCK;
  size_t cap = bytes > grow ? bytes : grow;
  block *nb = realloc(ar->b, (ar->nb + 1) * sizeof *nb);
  if (!nb) return NULL;
  ar->b = nb;
  unsigned char *mem = ar->e->mem_alloc(ar->e, cap); /* zeroed; NULL is the caller's to report */
  if (!mem) return NULL;
  /* a fresh block goes right after the current one; blocks beyond it are empty */
  size_t at = ar->nb == 0 ? 0 : ar->cur + 1;
  memmove(&ar->b[at + 1], &ar->b[at], (ar->nb - at) * sizeof *ar->b);
  ar->b[at] = (block){.p = mem, .cap = cap, .used = bytes};
  ar->nb++;
  ar->cur = at;
  return mem;
}

static void *arena_alloc(arena *ar, size_t bytes) { return arena_alloc_z(ar, bytes, 1); }

static void arena_reset(arena *ar) {
  for (size_t i = 0; i < ar->nb; i++) ar->b[i].used = 0;
  ar->cur = 0;
}

static void arena_free(arena *ar) {
  for (size_t i = 0; i < ar->nb; i++) pg_engine_free(ar->e, ar->b[i].p);
  free(ar->b);
  ar->b = NULL;
  ar->nb = ar->cur = 0;
}

static size_t arena_bytes(const arena *ar) {
  size_t s = 0;
  for (size_t i = 0; i < ar->nb; i++) s += ar->b[i].cap;
  return s;
}

/* ---- tape ------------------------------------------------------------------------------------ */

int pg_tape_create(pg_tape **out, pg_engine *e, int grad) {
  *out = NULL;
  pg_tape *tp = calloc(1, sizeof *tp);
  if (!tp) return PG_E_NOMEM;
  tp->e = e;
  tp->act.e = tp->keep.e = e;
  tp->grad = grad ? 1 : 0;
  *out = tp;
  return PG_OK;
}

void pg_tape_free(pg_tape *tp) {
  if (!tp) return;
  arena_free(&tp->act);
  arena_free(&tp->keep);
  free(tp->nodes);
  free(tp);
}

void pg_tape_reset(pg_tape *tp) {
  arena_reset(&tp->act);
  arena_reset(&tp->keep);
  tp->nn = 0;
  tp->status = PG_OK;
  tp->msg[0] = 0;
}

/* An error the engine recorded (an op's) becomes the tape's, if the tape has none yet. */
static int adopt(pg_tape *tp) {
  if (pg_engine_failed(tp->e)) {
    pg_err err;
    int st = pg_engine_sync(tp->e, &err);
    if (tp->status == PG_OK) {
      tp->status = st;
      snprintf(tp->msg, sizeof tp->msg, "%s", err.msg);
    }
  }
  return tp->status;
}

int pg_tape_status(pg_tape *tp, pg_err *err) {
  adopt(tp);
  if (tp->status != PG_OK && err) pg_err_set(err, tp->status, NULL, PG_NO_OFFSET, "%s", tp->msg);
  return tp->status;
}

int pg_tape_sync(pg_tape *tp, pg_err *err) {
  if (tp->status == PG_OK) {
    pg_err e2;
    int st = pg_engine_sync(tp->e, &e2);
    if (st) {
      tp->status = st;
      snprintf(tp->msg, sizeof tp->msg, "%s", e2.msg);
    }
  }
  return pg_tape_status(tp, err);
}

int pg_tape_fail(pg_tape *tp, int status, const char *fmt, ...) {
  if (tp->status == PG_OK) {
    tp->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tp->msg, sizeof tp->msg, fmt, ap);
    va_end(ap);
  }
  return tp->status;
}

int pg_tape_grad(const pg_tape *tp) { return tp->grad; }
pg_engine *pg_tape_engine(const pg_tape *tp) { return tp->e; }
size_t pg_tape_bytes(const pg_tape *tp) {
  return arena_bytes(&tp->act) + arena_bytes(&tp->keep) + tp->cap * sizeof *tp->nodes;
}
size_t pg_tape_nodes(const pg_tape *tp) { return tp->nn; }

pg_tape_mark_t pg_tape_mark(const pg_tape *tp) {
  pg_tape_mark_t m = {.block = tp->act.cur,
                      .used = tp->act.nb ? tp->act.b[tp->act.cur].used : 0,
                      .nodes = tp->nn};
  return m;
}

void pg_tape_release(pg_tape *tp, pg_tape_mark_t m) {
  if (tp->grad || tp->act.nb == 0) return;
  for (size_t i = m.block + 1; i < tp->act.nb; i++) tp->act.b[i].used = 0;
  tp->act.cur = m.block;
  tp->act.b[m.block].used = m.used;
}

void *pg_tape_scratch(pg_tape *tp, size_t bytes) {
  if (adopt(tp)) return NULL;
  void *p = arena_alloc(&tp->keep, bytes);
  if (!p) pg_tape_fail(tp, PG_E_NOMEM, "out of memory (%zu bytes of scratch)", bytes);
  return p;
}

/* zero: whether the values are zeroed (gradients always are) */
static pg_t alloc_t(pg_tape *tp, arena *ar, size_t n, int with_grad, int zero) {
  pg_t t = {0};
  if (adopt(tp)) return t;
  if (n > SIZE_MAX / sizeof(pg_real) / 2) {
    pg_tape_fail(tp, PG_E_LIMIT, "tensor of %zu elements is too large", n);
    return t;
  }
  t.v = arena_alloc_z(ar, n * sizeof(pg_real), zero);
  if (t.v && with_grad) t.g = arena_alloc(ar, n * sizeof(pg_real));
  if (!t.v || (with_grad && !t.g)) {
    pg_tape_fail(tp, PG_E_NOMEM, "out of memory (a tensor of %zu elements)", n);
    return (pg_t){0};
  }
  t.n = n;
  return t;
}

pg_t pg_t_new(pg_tape *tp, size_t n) { return alloc_t(tp, &tp->act, n, tp->grad, 1); }
pg_t pg_t_keep(pg_tape *tp, size_t n) { return alloc_t(tp, &tp->keep, n, tp->grad, 1); }

pg_t pg_t_const(const pg_real *v, size_t n) {
  pg_t t = {.v = (pg_real *)v, .g = NULL, .n = n};
  return t;
}

pg_t pg_t_param(pg_real *v, pg_real *g, size_t n) {
  pg_t t = {.v = v, .g = g, .n = n};
  return t;
}

pg_t pg_t_view(pg_t x, size_t off, size_t n) {
  pg_t t = {.v = x.v ? x.v + off : NULL, .g = x.g ? x.g + off : NULL, .n = n};
  return t;
}

/* Append a node when the tape records and one of its inputs takes a gradient. */
static void record(pg_tape *tp, const node *nd) {
  if (!tp->grad || tp->status) return;
  if (!nd->a.g && !nd->b.g && !nd->c.g) return;
  if (tp->nn == tp->cap) {
    size_t cap = tp->cap ? tp->cap * 2 : 256;
    node *nn = realloc(tp->nodes, cap * sizeof *nn);
    if (!nn) {
      pg_tape_fail(tp, PG_E_NOMEM, "out of memory (tape of %zu nodes)", cap);
      return;
    }
    tp->nodes = nn;
    tp->cap = cap;
  }
  tp->nodes[tp->nn++] = *nd;
}

/* An op's output: a gradient buffer only when an input has one. Its values are not zeroed: a
 * forward op overwrites its output (spec/engine.md §1), and zeroing first costs a pass over
 * memory (the first touch of fresh pages, on the calling thread alone). */
static pg_t out_for(pg_tape *tp, size_t n, pg_t a, pg_t b, pg_t c) {
  return alloc_t(tp, &tp->act, n, tp->grad && (a.g || b.g || c.g), 0);
}

static const pg_t NONE = {0};

/* The attention and XSA ops hold one head's accumulators on the stack: a wider head is refused
 * here (a status, not an overflow), whatever the caller validated before. */
static int bad_head(pg_tape *tp, int T, int H, int Hkv, int d, const char *what) {
  if (adopt(tp)) return 1;
  if (T < 0 || H < 1 || Hkv < 1 || H % Hkv || d < 1 || d > PG_OPS_MAX_HEAD_DIM) {
    pg_tape_fail(tp, PG_E_LIMIT, "%s: %d heads (%d kv) of dim %d over %d tokens: the ops take "
                 "1..%d dims per head and heads a multiple of kv heads", what, H, Hkv, d, T,
                 PG_OPS_MAX_HEAD_DIM);
    return 1;
  }
  return 0;
}

static int bad(pg_tape *tp, int cond, const char *what) {
  if (adopt(tp)) return 1;
  if (cond) {
    pg_tape_fail(tp, PG_E_ARG, "internal: %s: tensor sizes disagree", what);
    return 1;
  }
  return 0;
}

#define SZ(a, b) ((size_t)(a) * (size_t)(b))

pg_t tp_matmul(pg_tape *tp, pg_t x, pg_t w, int M, int N, int K) {
  if (bad(tp, x.n != SZ(M, K) || w.n != SZ(N, K), "matmul")) return NONE;
  pg_t y = out_for(tp, SZ(M, N), x, w, NONE);
  if (!y.v) return NONE;
  tp->e->ops.matmul_fwd(&tp->e->ops, y.v, x.v, w.v, M, N, K);
  record(tp, &(node){.kind = K_MATMUL, .o = y, .a = x, .b = w, .n = {M, N, K}});
  return y;
}

pg_t tp_matmul_grouped(pg_tape *tp, pg_t x, pg_t w, const int32_t *widx, size_t wstride,
                       int nw, int G, int M, int N, int K) {
  if (bad(tp, G < 1 || nw < 1 || x.n != SZ(G, M) * (size_t)K ||
                  w.n != (size_t)(nw - 1) * wstride + SZ(N, K) || wstride < SZ(N, K),
          "matmul_grouped"))
    return NONE;
  pg_t y = out_for(tp, SZ(G, M) * (size_t)N, x, w, NONE);
  if (!y.v) return NONE;
  tp->e->ops.matmul_grouped_fwd(&tp->e->ops, y.v, x.v, w.v, widx, wstride, G, M, N, K);
  record(tp, &(node){.kind = K_MATMUL_GROUPED, .o = y, .a = x, .b = w, .i0 = widx,
                     .n = {G, M, N, K, (int64_t)wstride}});
  return y;
}

pg_t tp_rmsnorm(pg_tape *tp, pg_t x, size_t R, int D, float eps) {
  if (bad(tp, x.n != SZ(R, D), "rmsnorm")) return NONE;
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.rmsnorm_fwd(&tp->e->ops, y.v, x.v, R, D, eps);
  record(tp, &(node){.kind = K_RMSNORM, .o = y, .a = x, .n = {R, D}, .f = eps});
  return y;
}

pg_t tp_rope(pg_tape *tp, pg_t x, const int32_t *pos, int T, int H, int d, int rot, float base) {
  if (bad(tp, x.n != SZ(T, H) * (size_t)d, "rope")) return NONE;
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.rope_fwd(&tp->e->ops, y.v, x.v, pos, T, H, d, rot, base);
  record(tp, &(node){.kind = K_ROPE, .o = y, .a = x, .i0 = pos, .n = {T, H, d, rot}, .f = base});
  return y;
}

pg_t tp_rope_bf16(pg_tape *tp, pg_t x, const int32_t *pos, int T, int H, int d, int rot,
                 float base) {
  if (bad(tp, x.n != SZ(T, H) * (size_t)d, "rope_bf16")) return NONE;
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.rope_bf16_fwd(&tp->e->ops, y.v, x.v, pos, T, H, d, rot, base);
  record(tp, &(node){.kind = K_ROPE, .o = y, .a = x, .i0 = pos, .n = {T, H, d, rot}, .f = base});
  return y;
}

static pg_t attention(pg_tape *tp, pg_t out, pg_t q, pg_t k, pg_t v, const int32_t *seg, int B,
                      int T, int H, int Hkv, int d, float scale, int bf16) {
  if (bad_head(tp, T, H, Hkv, d, "attention") || bad(tp, B < 1, "attention batch")) return NONE;
  size_t nq = SZ(B, T) * SZ(H, d), nk = SZ(B, T) * SZ(Hkv, d);
  if (bad(tp, q.n != nq || k.n != nk || v.n != nk || (out.v && out.n != nq), "attention"))
    return NONE;
  pg_t y = out.v ? out : out_for(tp, nq, q, k, v);
  if (!y.v) return NONE;
  (bf16 ? tp->e->ops.attention_bf16_fwd : tp->e->ops.attention_fwd)(
      &tp->e->ops, y.v, q.v, k.v, v.v, seg, B, T, H, Hkv, d, scale);
  record(tp, &(node){.kind = K_ATTN, .o = y, .a = q, .b = k, .c = v, .i0 = seg,
                     .n = {T, H, Hkv, d, B}, .f = scale});
  return y;
}

pg_t tp_attention(pg_tape *tp, pg_t out, pg_t q, pg_t k, pg_t v, const int32_t *seg, int B,
                  int T, int H, int Hkv, int d, float scale) {
  return attention(tp, out, q, k, v, seg, B, T, H, Hkv, d, scale, 0);
}

pg_t tp_attention_bf16(pg_tape *tp, pg_t out, pg_t q, pg_t k, pg_t v, const int32_t *seg, int B,
                       int T, int H, int Hkv, int d, float scale) {
  return attention(tp, out, q, k, v, seg, B, T, H, Hkv, d, scale, 1);
}

pg_t tp_relu2(pg_tape *tp, pg_t x) {
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.relu2_fwd(&tp->e->ops, y.v, x.v, x.n);
  record(tp, &(node){.kind = K_RELU2, .o = y, .a = x});
  return y;
}

pg_t tp_leaky_relu2(pg_tape *tp, pg_t x, float slope) {
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.leaky_relu2_fwd(&tp->e->ops, y.v, x.v, x.n, slope);
  record(tp, &(node){.kind = K_LEAKY, .o = y, .a = x, .f = slope});
  return y;
}

pg_t tp_rowgate(pg_tape *tp, pg_t x, pg_t g, size_t R, int D) {
  if (bad(tp, x.n != SZ(R, D) || g.n != (size_t)R, "rowgate")) return NONE;
  pg_t y = out_for(tp, x.n, x, g, NONE);
  if (!y.v) return NONE;
  tp->e->ops.rowgate_fwd(&tp->e->ops, y.v, x.v, g.v, R, D);
  record(tp, &(node){.kind = K_ROWGATE, .o = y, .a = x, .b = g, .n = {R, D}});
  return y;
}

pg_t tp_rowmul(pg_tape *tp, pg_t x, pg_t s, size_t R, int D) {
  if (bad(tp, x.n != SZ(R, D) || s.n != (size_t)R, "rowmul")) return NONE;
  pg_t y = out_for(tp, x.n, x, s, NONE);
  if (!y.v) return NONE;
  tp->e->ops.rowmul_fwd(&tp->e->ops, y.v, x.v, s.v, R, D);
  record(tp, &(node){.kind = K_ROWMUL, .o = y, .a = x, .b = s, .n = {R, D}});
  return y;
}

pg_t tp_chanmul(pg_tape *tp, pg_t x, pg_t s, size_t R, int C) {
  if (bad(tp, x.n != SZ(R, C) || s.n != (size_t)C, "chanmul")) return NONE;
  pg_t y = out_for(tp, x.n, x, s, NONE);
  if (!y.v) return NONE;
  tp->e->ops.chanmul_fwd(&tp->e->ops, y.v, x.v, s.v, R, C);
  record(tp, &(node){.kind = K_CHANMUL, .o = y, .a = x, .b = s, .n = {R, C}});
  return y;
}

pg_t tp_chanlerp(pg_tape *tp, pg_t a, pg_t b, pg_t g, size_t R, int C) {
  if (bad(tp, a.n != SZ(R, C) || b.n != a.n || g.n != (size_t)C, "chanlerp")) return NONE;
  pg_t y = out_for(tp, a.n, a, b, g);
  if (!y.v) return NONE;
  tp->e->ops.chanlerp_fwd(&tp->e->ops, y.v, a.v, b.v, g.v, R, C);
  record(tp, &(node){.kind = K_CHANLERP, .o = y, .a = a, .b = b, .c = g, .n = {R, C}});
  return y;
}

pg_t tp_xsa(pg_tape *tp, pg_t y, pg_t v, int T, int H, int Hkv, int d) {
  if (bad_head(tp, T, H, Hkv, d, "xsa")) return NONE;
  if (bad(tp, y.n != SZ(T, H) * (size_t)d || v.n != SZ(T, Hkv) * (size_t)d, "xsa")) return NONE;
  pg_t o = out_for(tp, y.n, y, v, NONE);
  if (!o.v) return NONE;
  tp->e->ops.xsa_fwd(&tp->e->ops, o.v, y.v, v.v, T, H, Hkv, d);
  record(tp, &(node){.kind = K_XSA, .o = o, .a = y, .b = v, .n = {T, H, Hkv, d}});
  return o;
}

pg_t tp_softcap(pg_tape *tp, pg_t z, float c) {
  pg_t y = out_for(tp, z.n, z, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.softcap_fwd(&tp->e->ops, y.v, z.v, z.n, c);
  record(tp, &(node){.kind = K_SOFTCAP, .o = y, .a = z, .f = c});
  return y;
}

pg_t tp_tanh(pg_tape *tp, pg_t x) {
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.tanh_fwd(&tp->e->ops, y.v, x.v, x.n);
  record(tp, &(node){.kind = K_TANH, .o = y, .a = x});
  return y;
}

pg_t tp_scale(pg_tape *tp, pg_t x, float a) {
  /* axpy adds onto its output: zeroed values */
  pg_t y = alloc_t(tp, &tp->act, x.n, tp->grad && x.g, 1);
  if (!y.v) return NONE;
  tp->e->ops.axpy(&tp->e->ops, y.v, a, x.v, x.n);
  record(tp, &(node){.kind = K_SCALE, .o = y, .a = x, .f = a});
  return y;
}

pg_t tp_add(pg_tape *tp, pg_t a, pg_t b) {
  if (bad(tp, a.n != b.n, "add")) return NONE;
  pg_t y = out_for(tp, a.n, a, b, NONE);
  if (!y.v) return NONE;
  tp->e->ops.copy(&tp->e->ops, y.v, a.v, a.n);
  tp->e->ops.axpy(&tp->e->ops, y.v, 1.0f, b.v, b.n);
  record(tp, &(node){.kind = K_ADD, .o = y, .a = a, .b = b});
  return y;
}

void tp_copy_into(pg_tape *tp, pg_t dst, pg_t src) {
  if (bad(tp, dst.n != src.n || !dst.v, "copy_into")) return;
  tp->e->ops.copy(&tp->e->ops, dst.v, src.v, src.n);
  if (dst.g) record(tp, &(node){.kind = K_COPY_INTO, .o = dst, .a = src});
}

pg_t tp_embed(pg_tape *tp, pg_t table, const int32_t *ids, int T, int D, int V) {
  if (bad(tp, table.n != SZ(V, D), "embed")) return NONE;
  pg_t y = out_for(tp, SZ(T, D), table, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.embed_fwd(&tp->e->ops, y.v, table.v, ids, T, D, V);
  if (adopt(tp)) return NONE;
  record(tp, &(node){.kind = K_EMBED, .o = y, .a = table, .i0 = ids, .n = {T, D, V}});
  return y;
}

pg_t tp_cols(pg_tape *tp, pg_t x, size_t R, int C, int c0, int w) {
  if (bad(tp, x.n != SZ(R, C) || c0 < 0 || w < 0 || c0 + w > C, "cols")) return NONE;
  pg_t y = out_for(tp, SZ(R, w), x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.cols_fwd(&tp->e->ops, y.v, x.v, R, C, c0, w);
  record(tp, &(node){.kind = K_COLS, .o = y, .a = x, .n = {R, C, c0, w}});
  return y;
}

pg_t tp_expand(pg_tape *tp, pg_t x, int G, int r) {
  if (bad(tp, x.n != (size_t)G, "expand")) return NONE;
  pg_t y = out_for(tp, SZ(G, r), x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.expand_fwd(&tp->e->ops, y.v, x.v, G, r);
  record(tp, &(node){.kind = K_EXPAND, .o = y, .a = x, .n = {G, r}});
  return y;
}

void tp_ce(pg_tape *tp, pg_t logits, const int32_t *targets, int T, int V, double *nll,
           const pg_real *dnll) {
  if (bad(tp, logits.n != SZ(T, V), "ce")) return;
  tp->e->ops.ce_fwd(&tp->e->ops, nll, logits.v, targets, T, V);
  if (adopt(tp)) return;
  record(tp, &(node){.kind = K_CE, .a = logits, .i0 = targets, .n = {T, V}, .dnll = dnll});
}

/* The bf16 rounding of the model's bf16 mode. Its gradient is the identity (straight through),
 * as the records' casts pass their gradient back unchanged in value. */
pg_t tp_bf16(pg_tape *tp, pg_t x) {
  pg_t y = out_for(tp, x.n, x, NONE, NONE);
  if (!y.v) return NONE;
  tp->e->ops.round_bf16(&tp->e->ops, y.v, x.v, x.n);
  record(tp, &(node){.kind = K_BF16, .o = y, .a = x});
  return y;
}

/* ---- backward -------------------------------------------------------------------------------- */

static int node_bwd(pg_tape *tp, const node *nd) {
  const pg_ops *e = &tp->e->ops;
  const int64_t *n = nd->n;
  pg_real *dy = nd->o.g;
  if (nd->kind != K_CE && !dy) return PG_OK;
  switch (nd->kind) {
  case K_MATMUL: e->matmul_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, n[0], n[1], n[2]); break;
  case K_MATMUL_GROUPED:
    e->matmul_grouped_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, nd->i0, (size_t)n[4],
                          (int)n[0], (int)n[1], (int)n[2], (int)n[3]);
    break;
  case K_RMSNORM: e->rmsnorm_bwd(e, nd->a.g, dy, nd->a.v, n[0], n[1], nd->f); break;
  case K_ROPE: e->rope_bwd(e, nd->a.g, dy, nd->i0, n[0], n[1], n[2], n[3], nd->f); break;
  case K_ATTN:
    e->attention_bwd(e, nd->a.g, nd->b.g, nd->c.g, dy, nd->a.v, nd->b.v, nd->c.v, nd->i0,
                     (int)n[4], (int)n[0], (int)n[1], (int)n[2], (int)n[3], nd->f);
    break;
  case K_RELU2: e->relu2_bwd(e, nd->a.g, dy, nd->a.v, nd->a.n); break;
  case K_LEAKY: e->leaky_relu2_bwd(e, nd->a.g, dy, nd->a.v, nd->a.n, nd->f); break;
  case K_ROWGATE: e->rowgate_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, n[0], n[1]); break;
  case K_ROWMUL: e->rowmul_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, n[0], n[1]); break;
  case K_CHANMUL: e->chanmul_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, n[0], n[1]); break;
  case K_CHANLERP:
    e->chanlerp_bwd(e, nd->a.g, nd->b.g, nd->c.g, dy, nd->a.v, nd->b.v, nd->c.v, n[0], n[1]);
    break;
  case K_XSA: e->xsa_bwd(e, nd->a.g, nd->b.g, dy, nd->a.v, nd->b.v, n[0], n[1], n[2], n[3]); break;
  case K_SOFTCAP: e->softcap_bwd(e, nd->a.g, dy, nd->a.v, nd->a.n, nd->f); break;
  case K_TANH: e->tanh_bwd(e, nd->a.g, dy, nd->a.v, nd->a.n); break;
  case K_SCALE:
    if (nd->a.g) e->axpy(e, nd->a.g, nd->f, dy, nd->a.n);
    break;
  case K_ADD:
    if (nd->a.g) e->axpy(e, nd->a.g, 1.0f, dy, nd->a.n);
    if (nd->b.g) e->axpy(e, nd->b.g, 1.0f, dy, nd->b.n);
    break;
  case K_COPY_INTO:
  case K_BF16:
    if (nd->a.g) e->axpy(e, nd->a.g, 1.0f, dy, nd->a.n);
    break;
  case K_EMBED:
    if (nd->a.g) e->embed_bwd(e, nd->a.g, dy, nd->i0, n[0], n[1], n[2]);
    break;
  case K_COLS:
    if (nd->a.g) e->cols_bwd(e, nd->a.g, dy, n[0], n[1], n[2], n[3]);
    break;
  case K_EXPAND:
    if (nd->a.g) e->expand_bwd(e, nd->a.g, dy, n[0], n[1]);
    break;
  case K_CE:
    if (nd->a.g) e->ce_bwd(e, nd->a.g, nd->dnll, nd->a.v, nd->i0, n[0], n[1]);
    break;
  default: return PG_E_ARG;
  }
  return PG_OK;
}

int pg_tape_backward(pg_tape *tp) {
  if (tp->status) return tp->status;
  if (!tp->grad) return pg_tape_fail(tp, PG_E_ARG, "backward on a tape that does not record");
  for (size_t i = tp->nn; i-- > 0;) {
    int st = node_bwd(tp, &tp->nodes[i]);
    if (st) return pg_tape_fail(tp, st, "backward: op %d failed", tp->nodes[i].kind);
    if (adopt(tp)) return tp->status;
  }
  return PG_OK;
}
