/* pgremote.h: a test engine whose memory the host cannot read. Its buffers are host memory, but
 * every pointer it hands out is the real address plus 2^62, a non-canonical x86-64 address, so
 * any host code that dereferences engine memory (instead of going through upload / download)
 * faults at once. Its ops take the bias off every pointer and run the CPU reference ops, so its
 * results must be bit for bit the CPU engine's: a test that runs the model, the protocols, the
 * trainer or calibration on it and on the CPU engine and compares proves that nothing in them
 * reads or writes engine memory behind the engine's back (the seam a GPU engine needs). It also
 * counts transfers. Test-only; x86-64 (elsewhere the bias may be a valid address: it still runs
 * the same, without the fault). */
#ifndef PGREMOTE_H
#define PGREMOTE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_engine.h"

#define PGR_BIAS ((uintptr_t)1 << 62)

typedef struct pgremote {
  pg_engine outer; /* first: what the model and tape see */
  pg_engine inner; /* the CPU engine that computes */
  size_t uploads, downloads, upload_bytes, download_bytes, allocs, frees, live;
  size_t max_upload, max_download; /* the largest single transfer each way */
  size_t dequants; /* pg_engine_dequant calls (their quantized bytes count as uploads) */
  /* With pgremote_per_thread: like a GPU's device, the engine must be entered (pg_engine_enter)
   * on a thread before that thread moves its memory; each move that comes from another thread
   * is counted here. */
  int per_thread;
  size_t wrong_thread;
} pgremote;

/* The engine the calling thread entered last (per_thread engines). */
static _Thread_local const void *pgr_entered;

#define PGR(o) ((pgremote *)(uintptr_t)(o))
#define IN(o) (&PGR(o)->inner.ops)

static inline void *pgr_dec(const void *p) {
  return p ? (void *)((uintptr_t)p - PGR_BIAS) : NULL;
}
static inline void *pgr_enc(void *p) { return p ? (void *)((uintptr_t)p + PGR_BIAS) : NULL; }
#define D(p) pgr_dec(p)

/* An error the inner engine recorded becomes the outer's. */
static inline void pgr_pass(const pg_ops *o) {
  pgremote *r = PGR(o);
  if (pg_engine_failed(&r->inner)) {
    pg_err err;
    int st = pg_engine_sync(&r->inner, &err);
    pg_engine_fail(&r->outer, st, "%s", err.msg);
  }
}

#define W0(name, params, args)                                                                  \
  static void pgr_##name params {                                                               \
    IN(o)->name args;                                                                           \
    pgr_pass(o);                                                                                \
  }

W0(matmul_fwd,
   (const pg_ops *o, pg_real *y, const pg_real *x, const pg_real *w, int M, int N, int K),
   (IN(o), D(y), D(x), D(w), M, N, K))
W0(matmul_bwd, (const pg_ops *o, pg_real *dx, pg_real *dw, const pg_real *dy, const pg_real *x,
                const pg_real *w, int M, int N, int K),
   (IN(o), D(dx), D(dw), D(dy), D(x), D(w), M, N, K))
W0(matmul_grouped_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const pg_real *w,
                        const int32_t *wi, size_t ws, int G, int M, int N, int K),
   (IN(o), D(y), D(x), D(w), D(wi), ws, G, M, N, K))
W0(matmul_grouped_bwd, (const pg_ops *o, pg_real *dx, pg_real *dw, const pg_real *dy,
                        const pg_real *x, const pg_real *w, const int32_t *wi, size_t ws, int G,
                        int M, int N, int K),
   (IN(o), D(dx), D(dw), D(dy), D(x), D(w), D(wi), ws, G, M, N, K))
W0(rmsnorm_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, size_t R, int Dm, float eps),
   (IN(o), D(y), D(x), R, Dm, eps))
W0(rmsnorm_bwd,
   (const pg_ops *o, pg_real *dx, const pg_real *dy, const pg_real *x, size_t R, int Dm, float eps),
   (IN(o), D(dx), D(dy), D(x), R, Dm, eps))
W0(rope_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const int32_t *pos, int T, int H,
              int d, int rot, float base),
   (IN(o), D(y), D(x), D(pos), T, H, d, rot, base))
W0(rope_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, const int32_t *pos, int T, int H,
              int d, int rot, float base),
   (IN(o), D(dx), D(dy), D(pos), T, H, d, rot, base))
W0(rope_bf16_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const int32_t *pos, int T,
                   int H, int d, int rot, float base),
   (IN(o), D(y), D(x), D(pos), T, H, d, rot, base))
W0(attention_fwd, (const pg_ops *o, pg_real *out, const pg_real *q, const pg_real *k,
                   const pg_real *v, const int32_t *seg, int B, int T, int H, int Hkv, int d,
                   float s),
   (IN(o), D(out), D(q), D(k), D(v), D(seg), B, T, H, Hkv, d, s))
W0(attention_bf16_fwd, (const pg_ops *o, pg_real *out, const pg_real *q, const pg_real *k,
                        const pg_real *v, const int32_t *seg, int B, int T, int H, int Hkv, int d,
                        float s),
   (IN(o), D(out), D(q), D(k), D(v), D(seg), B, T, H, Hkv, d, s))
W0(attention_bwd, (const pg_ops *o, pg_real *dq, pg_real *dk, pg_real *dv, const pg_real *dout,
                   const pg_real *q, const pg_real *k, const pg_real *v, const int32_t *seg,
                   int B, int T, int H, int Hkv, int d, float s),
   (IN(o), D(dq), D(dk), D(dv), D(dout), D(q), D(k), D(v), D(seg), B, T, H, Hkv, d, s))
W0(relu2_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, size_t n), (IN(o), D(y), D(x), n))
W0(relu2_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, const pg_real *x, size_t n),
   (IN(o), D(dx), D(dy), D(x), n))
W0(leaky_relu2_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, size_t n, float s),
   (IN(o), D(y), D(x), n, s))
W0(leaky_relu2_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, const pg_real *x, size_t n,
                     float s),
   (IN(o), D(dx), D(dy), D(x), n, s))
W0(rowgate_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const pg_real *g, size_t R, int Dm),
   (IN(o), D(y), D(x), D(g), R, Dm))
W0(rowgate_bwd, (const pg_ops *o, pg_real *dx, pg_real *dg, const pg_real *dy, const pg_real *x,
                 const pg_real *g, size_t R, int Dm),
   (IN(o), D(dx), D(dg), D(dy), D(x), D(g), R, Dm))
W0(chanmul_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const pg_real *s, size_t R, int C),
   (IN(o), D(y), D(x), D(s), R, C))
W0(chanmul_bwd, (const pg_ops *o, pg_real *dx, pg_real *ds, const pg_real *dy, const pg_real *x,
                 const pg_real *s, size_t R, int C),
   (IN(o), D(dx), D(ds), D(dy), D(x), D(s), R, C))
W0(xsa_fwd, (const pg_ops *o, pg_real *out, const pg_real *y, const pg_real *v, int T, int H,
             int Hkv, int d),
   (IN(o), D(out), D(y), D(v), T, H, Hkv, d))
W0(xsa_bwd, (const pg_ops *o, pg_real *dy, pg_real *dv, const pg_real *dout, const pg_real *y,
             const pg_real *v, int T, int H, int Hkv, int d),
   (IN(o), D(dy), D(dv), D(dout), D(y), D(v), T, H, Hkv, d))
W0(softcap_fwd, (const pg_ops *o, pg_real *y, const pg_real *z, size_t n, float c),
   (IN(o), D(y), D(z), n, c))
W0(softcap_bwd, (const pg_ops *o, pg_real *dz, const pg_real *dy, const pg_real *z, size_t n,
                 float c),
   (IN(o), D(dz), D(dy), D(z), n, c))
W0(ce_fwd, (const pg_ops *o, double *nll, const pg_real *l, const int32_t *t, int T, int Vv),
   (IN(o), D(nll), D(l), D(t), T, Vv))
W0(ce_bwd, (const pg_ops *o, pg_real *dl, const pg_real *dnll, const pg_real *l, const int32_t *t,
            int T, int Vv),
   (IN(o), D(dl), D(dnll), D(l), D(t), T, Vv))
W0(axpy, (const pg_ops *o, pg_real *y, float a, const pg_real *x, size_t n),
   (IN(o), D(y), a, D(x), n))
W0(chanlerp_fwd, (const pg_ops *o, pg_real *y, const pg_real *a, const pg_real *b,
                  const pg_real *g, size_t R, int C),
   (IN(o), D(y), D(a), D(b), D(g), R, C))
W0(chanlerp_bwd, (const pg_ops *o, pg_real *da, pg_real *db, pg_real *dg, const pg_real *dy,
                  const pg_real *a, const pg_real *b, const pg_real *g, size_t R, int C),
   (IN(o), D(da), D(db), D(dg), D(dy), D(a), D(b), D(g), R, C))
W0(rowmul_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, const pg_real *s, size_t R, int Dm),
   (IN(o), D(y), D(x), D(s), R, Dm))
W0(rowmul_bwd, (const pg_ops *o, pg_real *dx, pg_real *ds, const pg_real *dy, const pg_real *x,
                const pg_real *s, size_t R, int Dm),
   (IN(o), D(dx), D(ds), D(dy), D(x), D(s), R, Dm))
W0(tanh_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, size_t n), (IN(o), D(y), D(x), n))
W0(tanh_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, const pg_real *x, size_t n),
   (IN(o), D(dx), D(dy), D(x), n))
W0(embed_fwd, (const pg_ops *o, pg_real *y, const pg_real *t, const int32_t *ids, int T, int Dm,
               int Vv),
   (IN(o), D(y), D(t), D(ids), T, Dm, Vv))
W0(embed_bwd, (const pg_ops *o, pg_real *dt, const pg_real *dy, const int32_t *ids, int T, int Dm,
               int Vv),
   (IN(o), D(dt), D(dy), D(ids), T, Dm, Vv))
W0(cols_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, size_t R, int C, int c0, int w),
   (IN(o), D(y), D(x), R, C, c0, w))
W0(cols_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, size_t R, int C, int c0, int w),
   (IN(o), D(dx), D(dy), R, C, c0, w))
W0(expand_fwd, (const pg_ops *o, pg_real *y, const pg_real *x, int G, int r),
   (IN(o), D(y), D(x), G, r))
W0(expand_bwd, (const pg_ops *o, pg_real *dx, const pg_real *dy, int G, int r),
   (IN(o), D(dx), D(dy), G, r))
W0(copy, (const pg_ops *o, pg_real *y, const pg_real *x, size_t n), (IN(o), D(y), D(x), n))
W0(round_bf16, (const pg_ops *o, pg_real *y, const pg_real *x, size_t n), (IN(o), D(y), D(x), n))
W0(sgd_step, (const pg_ops *o, pg_real *p, const pg_real *g, pg_real *buf, size_t n, double lr,
              double mu, int first),
   (IN(o), D(p), D(g), D(buf), n, lr, mu, first))
W0(adamw_step, (const pg_ops *o, pg_real *p, const pg_real *g, pg_real *m, pg_real *v, size_t n,
                double lr, double b1, double b2, double eps, double wd, double bc1, double bc2),
   (IN(o), D(p), D(g), D(m), D(v), n, lr, b1, b2, eps, wd, bc1, bc2))
W0(sumsq, (const pg_ops *o, double *acc, const pg_real *x, size_t n), (IN(o), D(acc), D(x), n))
W0(scale, (const pg_ops *o, pg_real *x, size_t n, double a), (IN(o), D(x), n, a))
W0(muon_step, (const pg_ops *o, pg_real *p, const pg_real *g, pg_real *buf, int rows, int cols,
               double lr, double mu, double wd, int nest, int rn, int kind, int steps),
   (IN(o), D(p), D(g), D(buf), rows, cols, lr, mu, wd, nest, rn, kind, steps))
W0(ema_update, (const pg_ops *o, pg_real *ema, const pg_real *p, size_t n, double decay),
   (IN(o), D(ema), D(p), n, decay))
W0(swa_add, (const pg_ops *o, double *sum, const pg_real *p, size_t n), (IN(o), D(sum), D(p), n))
W0(swa_average, (const pg_ops *o, pg_real *out, const double *sum, size_t n, uint64_t count),
   (IN(o), D(out), D(sum), n, count))
#undef W0

static void pgr_enter(pg_engine *e) { pgr_entered = e; }
static void pgr_on_thread(pg_engine *e) {
  if (PGR(e)->per_thread && pgr_entered != (const void *)e) PGR(e)->wrong_thread++;
}

static void *pgr_alloc(pg_engine *e, size_t bytes) {
  pgremote *r = PGR(e);
  pgr_on_thread(e);
  void *p = r->inner.mem_alloc(&r->inner, bytes);
  if (p) r->allocs++, r->live++;
  return pgr_enc(p);
}
static void pgr_free(pg_engine *e, void *p) {
  pgremote *r = PGR(e);
  pgr_on_thread(e);
  r->frees++, r->live--;
  r->inner.mem_free(&r->inner, pgr_dec(p));
}
static void pgr_upload(pg_engine *e, void *dst, const void *src, size_t n) {
  pgr_on_thread(e);
  PGR(e)->uploads++, PGR(e)->upload_bytes += n;
  if (n > PGR(e)->max_upload) PGR(e)->max_upload = n;
  memcpy(pgr_dec(dst), src, n);
}
static void pgr_download(pg_engine *e, void *dst, const void *src, size_t n) {
  pgr_on_thread(e);
  PGR(e)->downloads++, PGR(e)->download_bytes += n;
  if (n > PGR(e)->max_download) PGR(e)->max_download = n;
  memcpy(dst, pgr_dec(src), n);
}
static void pgr_mzero(pg_engine *e, void *dst, size_t n) {
  (void)e;
  memset(pgr_dec(dst), 0, n);
}
static void pgr_mcopy(pg_engine *e, void *dst, const void *src, size_t n) {
  (void)e;
  memmove(pgr_dec(dst), pgr_dec(src), n);
}

/* Dequantization on the engine, as a GPU engine does it: the quantized bytes count as one upload
 * (what such an engine transfers) and the CPU reference writes the values behind the bias. */
static void pgr_dequant(pg_engine *e, float *dst, const pg_engine_qtensor *t) {
  pgremote *r = PGR(e);
  pgr_on_thread(e);
  const size_t k = t->lqer_rank;
  const size_t n = (size_t)(t->rows * t->cols + t->rows * 2) +
                   (k ? (size_t)(t->rows * k + k * t->cols + k * t->cols / 64 * 2) : 0);
  r->dequants++, r->uploads++, r->upload_bytes += n;
  if (n > r->max_upload) r->max_upload = n;
  r->inner.mem_dequant(&r->inner, pgr_dec(dst), t);
}

/* A remote engine over a CPU engine of `threads` threads (heap: destroy with pgremote_free). */
static inline pgremote *pgremote_new(int threads) {
  pgremote *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->inner = pg_engine_cpu(threads);
  pg_engine *e = &r->outer;
  e->info = r->inner.info;
  strcpy(e->info.name, "remote");
  e->host_memory = 0;
  e->mem_alloc = pgr_alloc;
  e->mem_free = pgr_free;
  e->mem_upload = pgr_upload;
  e->mem_download = pgr_download;
  e->mem_zero = pgr_mzero;
  e->mem_copy = pgr_mcopy;
  e->mem_dequant = pgr_dequant;
  pg_ops *o = &e->ops;
  o->name = "remote";
  o->nthreads = threads;
#define S(n) o->n = pgr_##n
  S(matmul_fwd); S(matmul_bwd); S(matmul_grouped_fwd); S(matmul_grouped_bwd); S(rmsnorm_fwd);
  S(rmsnorm_bwd); S(rope_fwd); S(rope_bwd);
  S(rope_bf16_fwd); S(attention_fwd); S(attention_bf16_fwd); S(attention_bwd); S(relu2_fwd);
  S(relu2_bwd); S(leaky_relu2_fwd); S(leaky_relu2_bwd);
  S(rowgate_fwd); S(rowgate_bwd); S(chanmul_fwd); S(chanmul_bwd); S(xsa_fwd); S(xsa_bwd);
  S(softcap_fwd); S(softcap_bwd); S(ce_fwd); S(ce_bwd); S(axpy); S(chanlerp_fwd);
  S(chanlerp_bwd); S(rowmul_fwd); S(rowmul_bwd); S(tanh_fwd); S(tanh_bwd); S(embed_fwd);
  S(embed_bwd); S(cols_fwd); S(cols_bwd); S(expand_fwd); S(expand_bwd); S(copy);
  S(round_bf16); S(sgd_step); S(adamw_step); S(sumsq); S(scale); S(muon_step); S(ema_update);
  S(swa_add); S(swa_average);
#undef S
  return r;
}

/* Make r's memory per thread (see per_thread): its enter is the one that counts. */
static inline void pgremote_per_thread(pgremote *r) {
  r->per_thread = 1;
  r->outer.enter = pgr_enter;
}

static inline void pgremote_free(pgremote *r) {
  if (!r) return;
  pg_engine_destroy(&r->outer);
  free(r);
}

#undef D
#undef IN
#endif
