/* test_gpu_engine_bwd.c: the CUDA engine's backward and optimizer ops
 * (kernels/pg_cuda_engine_bwd.cu) against the CPU reference engine, with the tolerances of
 * spec/engine.md §8.6: op by op on random inputs (ragged shapes, GQA, segment masks, B > 1, the
 * gradients pre-filled so the accumulation is checked, NULL gradients), bit for bit where the op
 * is made of +, −, ×, ÷, √ and pg_exp, within one fp32 ulp where the CPU calls the C library's
 * exp, tanh, pow, sin or cos; the whole model's gradients (bit for bit for an arch without those
 * functions, fp32 and bf16 mode, LoRA included; within the stated tolerance for every feature);
 * the TTT protocols and trainer steps on both engines; reruns on the GPU bit-identical. Skips
 * without a CUDA build or a device (tests/pggpu.h).
 *
 * PG_GPU_STANDIN=remote runs the same tests with the remote test engine (tests/pgremote.h: CPU
 * ops behind memory the host cannot read) in place of the GPU: a check of this program itself on
 * a machine without one (every comparison then holds bit for bit). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_engine.h"
#include "pg_eval.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_ops_optim.h"
#include "pg_rng.h"
#include "pg_shard.h"
#include "pg_tape.h"
#include "pg_train.h"
#include "pgarchs.h"
#include "pgevalfx.h"
#include "pggpu.h"
#include "pgremote.h"
#include "pgshards.h"
#include "pgstandin.h"
#include "pgtest.h"

/* ---- the engines: dev_open and dev_close are pgstandin.h's ------------------------------- */

static pg_engine *dev_open_bf16(void); /* precision bf16: the fast kernels (below) */

/* ---- buffers: a host copy the CPU op works on, and the device copy the GPU op works on ------ */

typedef struct buf {
  float *h; /* host: the CPU engine's operand and result */
  float *d; /* engine memory of the GPU */
  size_t n;
} buf;

static buf mkbuf(pg_engine *g, pg_rng *r, size_t n, double scale) {
  buf b = {.h = malloc((n ? n : 1) * sizeof(float)), .n = n};
  cr_assert(b.h);
  for (size_t i = 0; i < n; i++) b.h[i] = (float)(scale * pg_rng_gauss(r));
  b.d = pg_engine_alloc(g, (n ? n : 1) * sizeof(float));
  cr_assert(b.d);
  pg_engine_upload(g, b.d, b.h, n * sizeof(float));
  return b;
}

static void freebuf(pg_engine *g, buf *b) {
  pg_engine_free(g, b->d);
  free(b->h);
  b->h = NULL, b->d = NULL;
}

static int32_t *up_i32(pg_engine *g, const int32_t *h, size_t n) {
  int32_t *d = pg_engine_alloc(g, (n ? n : 1) * sizeof *d);
  cr_assert(d);
  pg_engine_upload(g, d, h, n * sizeof *d);
  return d;
}

static int ulps(float a, float b) {
  if (a == b) return 0;
  if (a != a || b != b) return INT32_MAX;
  int32_t ia, ib;
  memcpy(&ia, &a, 4);
  memcpy(&ib, &b, 4);
  if ((ia < 0) != (ib < 0)) return INT32_MAX;
  return abs(ia - ib);
}

/* The device copy against the host copy: bit for bit (tol 0) or within tol ulps per element. Then
 * the host copy goes up again, so the next op that accumulates into the buffer starts from the
 * same values on both engines (one-ulp differences do not add up over calls). */
static void check(pg_engine *g, const char *what, const buf *b, int tol) {
  float *got = malloc((b->n ? b->n : 1) * sizeof *got);
  cr_assert(got);
  pg_engine_download(g, got, b->d, b->n * sizeof *got);
  pg_err err;
  cr_assert_eq(pg_engine_sync(g, &err), PG_OK, "%s: %s", what, err.msg);
  size_t off = 0;
  int worst = 0;
  for (size_t i = 0; i < b->n; i++) {
    int u = ulps(b->h[i], got[i]);
    cr_assert_leq(u, tol, "%s[%zu]: cpu %.9g gpu %.9g (%d ulps)", what, i, b->h[i], got[i], u);
    off += u != 0;
    if (u > worst) worst = u;
  }
  cr_log_info("%s: %zu of %zu elements differ (at most %d ulp)", what, off, b->n, worst);
  free(got);
  if (off) pg_engine_upload(g, b->d, b->h, b->n * sizeof(float));
}

static void check_f64(pg_engine *g, const char *what, const double *cpu, const double *d,
                      size_t n) {
  double *got = malloc((n ? n : 1) * sizeof *got);
  cr_assert(got);
  pg_engine_download(g, got, d, n * sizeof *got);
  cr_assert_eq(pg_engine_sync(g, NULL), PG_OK);
  cr_assert_eq(memcmp(cpu, got, n * sizeof *got), 0, "%s differs", what);
  free(got);
}

/* ---- the backward ops, op by op -------------------------------------------------------------- */

/* matmul_bwd and the grouped form: exact. dx and dW pre-filled (accumulation), and each alone. */
static void matmul_case(pg_engine *cpu, pg_engine *g, pg_rng *r, int M, int N, int K) {
  buf x = mkbuf(g, r, (size_t)M * K, 1), w = mkbuf(g, r, (size_t)N * K, 1);
  buf dy = mkbuf(g, r, (size_t)M * N, 1);
  buf dx = mkbuf(g, r, (size_t)M * K, 1), dw = mkbuf(g, r, (size_t)N * K, 1);
  char what[96];
  cpu->ops.matmul_bwd(&cpu->ops, dx.h, dw.h, dy.h, x.h, w.h, M, N, K);
  g->ops.matmul_bwd(&g->ops, dx.d, dw.d, dy.d, x.d, w.d, M, N, K);
  snprintf(what, sizeof what, "matmul_bwd dx %dx%dx%d", M, N, K);
  check(g, what, &dx, 0);
  snprintf(what, sizeof what, "matmul_bwd dw %dx%dx%d", M, N, K);
  check(g, what, &dw, 0);
  cpu->ops.matmul_bwd(&cpu->ops, NULL, dw.h, dy.h, x.h, w.h, M, N, K);
  g->ops.matmul_bwd(&g->ops, NULL, dw.d, dy.d, x.d, w.d, M, N, K);
  cpu->ops.matmul_bwd(&cpu->ops, dx.h, NULL, dy.h, x.h, w.h, M, N, K);
  g->ops.matmul_bwd(&g->ops, dx.d, NULL, dy.d, x.d, w.d, M, N, K);
  check(g, "matmul_bwd dx alone", &dx, 0);
  check(g, "matmul_bwd dw alone", &dw, 0);
  freebuf(g, &x), freebuf(g, &w), freebuf(g, &dy), freebuf(g, &dx), freebuf(g, &dw);
}

Test(gpu_bwd, matmul_backward_bit_for_bit) {
  pg_rng r;
  pg_rng_seed(&r, 21);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  static const int shapes[][3] = {{37, 29, 70}, {1, 1, 1}, {3, 130, 17}, {64, 48, 200},
                                  {129, 7, 65}, {5, 1, 33}};
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
    matmul_case(&cpu, g, &r, shapes[i][0], shapes[i][1], shapes[i][2]);
  /* grouped: 4 groups over 3 matrices, two groups sharing matrix 2 (their dW adds in the CPU's
   * descending group order) */
  enum { G = 4, NW = 3, M = 5, N = 29, K = 70 };
  int32_t widx[G] = {2, 0, 2, 1};
  int32_t *dwi = up_i32(g, widx, G);
  buf x = mkbuf(g, &r, (size_t)G * M * K, 1), w = mkbuf(g, &r, (size_t)NW * N * K, 1);
  buf dy = mkbuf(g, &r, (size_t)G * M * N, 1);
  buf dx = mkbuf(g, &r, (size_t)G * M * K, 1), dw = mkbuf(g, &r, (size_t)NW * N * K, 1);
  for (int pass = 0; pass < 3; pass++) {
    float *cdx = pass == 2 ? NULL : dx.h, *gdx = pass == 2 ? NULL : dx.d;
    float *cdw = pass == 1 ? NULL : dw.h, *gdw = pass == 1 ? NULL : dw.d;
    cpu.ops.matmul_grouped_bwd(&cpu.ops, cdx, cdw, dy.h, x.h, w.h, widx, (size_t)N * K, G, M, N,
                               K);
    g->ops.matmul_grouped_bwd(&g->ops, gdx, gdw, dy.d, x.d, w.d, dwi, (size_t)N * K, G, M, N, K);
    check(g, "matmul_grouped_bwd dx", &dx, 0);
    check(g, "matmul_grouped_bwd dw", &dw, 0);
  }
  freebuf(g, &x), freebuf(g, &w), freebuf(g, &dy), freebuf(g, &dx), freebuf(g, &dw);
  pg_engine_free(g, dwi);
  dev_close(g);
}

/* attention_bwd: exact (pg_exp). Causal, GQA, segment masks, B > 1, the largest head_dim, and
 * each of dq, dk, dv alone. */
static void attention_case(pg_engine *cpu, pg_engine *g, pg_rng *r, int B, int T, int H, int Hkv,
                           int d, int with_seg) {
  size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d;
  float scale = 1.0f / sqrtf((float)d);
  buf q = mkbuf(g, r, nq, 1), k = mkbuf(g, r, nk, 1), v = mkbuf(g, r, nk, 1);
  buf dout = mkbuf(g, r, nq, 1), dq = mkbuf(g, r, nq, 1), dk = mkbuf(g, r, nk, 1),
      dv = mkbuf(g, r, nk, 1);
  int32_t *seg = malloc((size_t)B * T * sizeof *seg), *dseg = NULL;
  for (int i = 0; i < B * T; i++) seg[i] = (i % T) / 5 + (i % T == 7); /* ragged documents */
  if (with_seg) dseg = up_i32(g, seg, (size_t)B * T);
  const int32_t *cseg = with_seg ? seg : NULL;
  char what[96];
  for (int pass = 0; pass < 4; pass++) {
    /* pass 0: all three; 1: dq only; 2: dk only; 3: dv only */
    int wq = pass == 0 || pass == 1, wk = pass == 0 || pass == 2, wv = pass == 0 || pass == 3;
    cpu->ops.attention_bwd(&cpu->ops, wq ? dq.h : NULL, wk ? dk.h : NULL, wv ? dv.h : NULL, dout.h,
                           q.h, k.h, v.h, cseg, B, T, H, Hkv, d, scale);
    g->ops.attention_bwd(&g->ops, wq ? dq.d : NULL, wk ? dk.d : NULL, wv ? dv.d : NULL, dout.d,
                         q.d, k.d, v.d, dseg, B, T, H, Hkv, d, scale);
    snprintf(what, sizeof what, "attention_bwd B%d T%d H%d/%d d%d seg %d pass %d: dq", B, T, H,
             Hkv, d, with_seg, pass);
    check(g, what, &dq, 0);
    what[strlen(what) - 1] = 'k';
    check(g, what, &dk, 0);
    what[strlen(what) - 1] = 'v';
    check(g, what, &dv, 0);
  }
  freebuf(g, &q), freebuf(g, &k), freebuf(g, &v), freebuf(g, &dout);
  freebuf(g, &dq), freebuf(g, &dk), freebuf(g, &dv);
  if (dseg) pg_engine_free(g, dseg);
  free(seg);
}

Test(gpu_bwd, attention_backward_bit_for_bit) {
  pg_rng r;
  pg_rng_seed(&r, 22);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  attention_case(&cpu, g, &r, 2, 23, 4, 2, 16, 1);  /* GQA, segments, B > 1 */
  attention_case(&cpu, g, &r, 3, 17, 6, 2, 12, 0);  /* GQA 3:1, causal only */
  attention_case(&cpu, g, &r, 1, 40, 3, 3, 24, 1);  /* MHA */
  attention_case(&cpu, g, &r, 1, 1, 2, 1, 8, 0);    /* one position */
  attention_case(&cpu, g, &r, 2, 6, 2, 1, PG_OPS_MAX_HEAD_DIM, 1);
  dev_close(g);
}

/* The row and element ops: exact except where the CPU calls exp, tanh, pow, sin or cos (one ulp).
 */
Test(gpu_bwd, row_and_element_backward_ops) {
  pg_rng r;
  pg_rng_seed(&r, 23);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  enum { R = 77, D = 40, T = 19, H = 4, Hkv = 2, d = 16 };
  const size_t n = (size_t)R * D;
  buf x = mkbuf(g, &r, n, 1), y = mkbuf(g, &r, n, 1), dy = mkbuf(g, &r, n, 1);
  buf dx = mkbuf(g, &r, n, 1), dx2 = mkbuf(g, &r, n, 1);
  buf sr = mkbuf(g, &r, R, 1.5), sc = mkbuf(g, &r, D, 1.5);
  buf dsr = mkbuf(g, &r, R, 1), dsc = mkbuf(g, &r, D, 1);
  /* a row of tiny values (rmsnorm's eps matters), zeros of both signs (relu's branches) */
  for (int i = 0; i < D; i++) x.h[2 * D + i] *= 1e-4f;
  x.h[5] = 0.0f, x.h[9] = -0.0f;
  pg_engine_upload(g, x.d, x.h, n * sizeof(float));
  for (int pass = 0; pass < 2; pass++) {
    cpu.ops.rmsnorm_bwd(&cpu.ops, dx.h, dy.h, x.h, R, D, pass ? 1e-6f : 0.5f);
    g->ops.rmsnorm_bwd(&g->ops, dx.d, dy.d, x.d, R, D, pass ? 1e-6f : 0.5f);
    check(g, "rmsnorm_bwd", &dx, 0);
  }
  cpu.ops.relu2_bwd(&cpu.ops, dx.h, dy.h, x.h, n);
  g->ops.relu2_bwd(&g->ops, dx.d, dy.d, x.d, n);
  check(g, "relu2_bwd", &dx, 0);
  cpu.ops.leaky_relu2_bwd(&cpu.ops, dx.h, dy.h, x.h, n, 0.5f);
  g->ops.leaky_relu2_bwd(&g->ops, dx.d, dy.d, x.d, n, 0.5f);
  check(g, "leaky_relu2_bwd", &dx, 0);
  cpu.ops.softcap_bwd(&cpu.ops, dx.h, dy.h, x.h, n, 1.5f);
  g->ops.softcap_bwd(&g->ops, dx.d, dy.d, x.d, n, 1.5f);
  check(g, "softcap_bwd", &dx, 1);
  cpu.ops.tanh_bwd(&cpu.ops, dx.h, dy.h, x.h, n);
  g->ops.tanh_bwd(&g->ops, dx.d, dy.d, x.d, n);
  check(g, "tanh_bwd", &dx, 1);
  /* rowmul: exact; rowgate: σ (one ulp); each with and without each gradient */
  for (int pass = 0; pass < 3; pass++) {
    float *cx = pass == 2 ? NULL : dx.h, *gx = pass == 2 ? NULL : dx.d;
    float *cs = pass == 1 ? NULL : dsr.h, *gs = pass == 1 ? NULL : dsr.d;
    cpu.ops.rowmul_bwd(&cpu.ops, cx, cs, dy.h, x.h, sr.h, R, D);
    g->ops.rowmul_bwd(&g->ops, gx, gs, dy.d, x.d, sr.d, R, D);
    check(g, "rowmul_bwd dx", &dx, 0);
    check(g, "rowmul_bwd ds", &dsr, 0);
  }
  for (int pass = 0; pass < 3; pass++) {
    float *cx = pass == 2 ? NULL : dx2.h, *gx = pass == 2 ? NULL : dx2.d;
    float *cs = pass == 1 ? NULL : dsr.h, *gs = pass == 1 ? NULL : dsr.d;
    cpu.ops.rowgate_bwd(&cpu.ops, cx, cs, dy.h, x.h, sr.h, R, D);
    g->ops.rowgate_bwd(&g->ops, gx, gs, dy.d, x.d, sr.d, R, D);
    check(g, "rowgate_bwd dx", &dx2, 1);
    check(g, "rowgate_bwd dg", &dsr, 1);
  }
  /* chanmul: exact; chanlerp: σ (one ulp); several row counts (the channel sums over rows) */
  static const size_t rows[] = {R, 1, 3};
  for (size_t k = 0; k < 3; k++) {
    size_t rr = rows[k];
    cpu.ops.chanmul_bwd(&cpu.ops, dx.h, dsc.h, dy.h, x.h, sc.h, rr, D);
    g->ops.chanmul_bwd(&g->ops, dx.d, dsc.d, dy.d, x.d, sc.d, rr, D);
    check(g, "chanmul_bwd dx", &dx, 0);
    check(g, "chanmul_bwd ds", &dsc, 0);
    cpu.ops.chanmul_bwd(&cpu.ops, NULL, dsc.h, dy.h, x.h, sc.h, rr, D);
    g->ops.chanmul_bwd(&g->ops, NULL, dsc.d, dy.d, x.d, sc.d, rr, D);
    check(g, "chanmul_bwd ds alone", &dsc, 0);
  }
  for (int pass = 0; pass < 4; pass++) {
    /* 0: all; 1: no da; 2: no db; 3: dg only */
    float *ca = pass == 1 || pass == 3 ? NULL : dx.h, *ga = pass == 1 || pass == 3 ? NULL : dx.d;
    float *cb = pass >= 2 ? NULL : dx2.h, *gb = pass >= 2 ? NULL : dx2.d;
    cpu.ops.chanlerp_bwd(&cpu.ops, ca, cb, dsc.h, dy.h, x.h, y.h, sc.h, R, D);
    g->ops.chanlerp_bwd(&g->ops, ga, gb, dsc.d, dy.d, x.d, y.d, sc.d, R, D);
    check(g, "chanlerp_bwd da", &dx, 1);
    check(g, "chanlerp_bwd db", &dx2, 1);
    check(g, "chanlerp_bwd dg", &dsc, 1);
  }
  /* cols and expand: exact */
  cpu.ops.cols_bwd(&cpu.ops, dx.h, dy.h, R, D, 7, 13);
  g->ops.cols_bwd(&g->ops, dx.d, dy.d, R, D, 7, 13);
  check(g, "cols_bwd", &dx, 0);
  cpu.ops.cols_bwd(&cpu.ops, dx.h, dy.h, R, D, 0, D);
  g->ops.cols_bwd(&g->ops, dx.d, dy.d, R, D, 0, D);
  check(g, "cols_bwd whole", &dx, 0);
  cpu.ops.expand_bwd(&cpu.ops, dsr.h, dy.h, R, D);
  g->ops.expand_bwd(&g->ops, dsr.d, dy.d, R, D);
  check(g, "expand_bwd", &dsr, 0);
  cpu.ops.expand_bwd(&cpu.ops, dsc.h, dy.h, D, 1);
  g->ops.expand_bwd(&g->ops, dsc.d, dy.d, D, 1);
  check(g, "expand_bwd r = 1", &dsc, 0);
  /* rope: the angle by pow, sin, cos (one ulp); rot < d, rot = d; B·T rows with restarts */
  size_t nq = (size_t)T * H * d;
  buf qy = mkbuf(g, &r, nq, 1), qx = mkbuf(g, &r, nq, 1);
  int32_t pos[T];
  for (int t = 0; t < T; t++) pos[t] = (t * 5) % 13 + (t > 9 ? 1000 : 0);
  int32_t *dpos = up_i32(g, pos, T);
  static const int rots[] = {12, 16, 2, 0};
  for (int k = 0; k < 4; k++) {
    cpu.ops.rope_bwd(&cpu.ops, qx.h, qy.h, pos, T, H, d, rots[k], 10000.0f);
    g->ops.rope_bwd(&g->ops, qx.d, qy.d, dpos, T, H, d, rots[k], 10000.0f);
    check(g, "rope_bwd", &qx, 1);
  }
  /* xsa: exact; GQA, MHA, and a value row of zeros (the clamped norm) */
  buf xv = mkbuf(g, &r, (size_t)T * Hkv * d, 1);
  for (int i = 0; i < d; i++) xv.h[(size_t)3 * Hkv * d + i] = 0.0f;
  pg_engine_upload(g, xv.d, xv.h, xv.n * sizeof(float));
  buf xdv = mkbuf(g, &r, xv.n, 1);
  for (int pass = 0; pass < 3; pass++) {
    float *cy = pass == 2 ? NULL : qx.h, *gy = pass == 2 ? NULL : qx.d;
    float *cv = pass == 1 ? NULL : xdv.h, *gv = pass == 1 ? NULL : xdv.d;
    cpu.ops.xsa_bwd(&cpu.ops, cy, cv, qy.h, dy.h, xv.h, T, H, Hkv, d);
    g->ops.xsa_bwd(&g->ops, gy, gv, qy.d, dy.d, xv.d, T, H, Hkv, d);
    check(g, "xsa_bwd dy", &qx, 0);
    check(g, "xsa_bwd dv", &xdv, 0);
  }
  cpu.ops.xsa_bwd(&cpu.ops, qx.h, dx.h, qy.h, dy.h, x.h, T, H, H, d);
  g->ops.xsa_bwd(&g->ops, qx.d, dx.d, qy.d, dy.d, x.d, T, H, H, d);
  check(g, "xsa_bwd MHA dy", &qx, 0);
  check(g, "xsa_bwd MHA dv", &dx, 0);
  buf *all[] = {&x, &y, &dy, &dx, &dx2, &sr, &sc, &dsr, &dsc, &qy, &qx, &xv, &xdv};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) freebuf(g, all[i]);
  pg_engine_free(g, dpos);
  dev_close(g);
}

/* ce_bwd and embed_bwd: exact; a bad id is the error at sync and nothing is written. */
Test(gpu_bwd, ce_and_embed_backward) {
  pg_rng r;
  pg_rng_seed(&r, 24);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  enum { T = 53, V = 301, D = 24 };
  buf logits = mkbuf(g, &r, (size_t)T * V, 3), dl = mkbuf(g, &r, (size_t)T * V, 1);
  buf dnll = mkbuf(g, &r, T, 1);
  int32_t tg[T], ids[T];
  for (int t = 0; t < T; t++) {
    tg[t] = (int32_t)(pg_rng_u64(&r) % V);
    ids[t] = (int32_t)(pg_rng_u64(&r) % 9); /* repeats: rows that sum several tokens */
  }
  ids[5] = V - 1, ids[17] = 200, ids[40] = 200;
  int32_t *dtg = up_i32(g, tg, T), *dids = up_i32(g, ids, T);
  cpu.ops.ce_bwd(&cpu.ops, dl.h, dnll.h, logits.h, tg, T, V);
  g->ops.ce_bwd(&g->ops, dl.d, dnll.d, logits.d, dtg, T, V);
  check(g, "ce_bwd", &dl, 0);
  cpu.ops.ce_bwd(&cpu.ops, dl.h, NULL, logits.h, tg, T, V);
  g->ops.ce_bwd(&g->ops, dl.d, NULL, logits.d, dtg, T, V);
  check(g, "ce_bwd dnll NULL", &dl, 0);
  buf dy = mkbuf(g, &r, (size_t)T * D, 1), dtab = mkbuf(g, &r, (size_t)V * D, 1);
  cpu.ops.embed_bwd(&cpu.ops, dtab.h, dy.h, ids, T, D, V);
  g->ops.embed_bwd(&g->ops, dtab.d, dy.d, dids, T, D, V);
  check(g, "embed_bwd", &dtab, 0);
  /* every token the same id; then one token */
  int32_t same[T];
  for (int t = 0; t < T; t++) same[t] = 3;
  pg_engine_upload(g, dids, same, sizeof same);
  cpu.ops.embed_bwd(&cpu.ops, dtab.h, dy.h, same, T, D, V);
  g->ops.embed_bwd(&g->ops, dtab.d, dy.d, dids, T, D, V);
  check(g, "embed_bwd one row", &dtab, 0);
  cpu.ops.embed_bwd(&cpu.ops, dtab.h, dy.h, ids, 1, D, V);
  pg_engine_upload(g, dids, ids, sizeof ids);
  g->ops.embed_bwd(&g->ops, dtab.d, dy.d, dids, 1, D, V);
  check(g, "embed_bwd one token", &dtab, 0);
  /* a larger vocabulary than tokens, ids over its whole range */
  enum { V2 = 70000, T2 = 1000, D2 = 3 };
  int32_t *ids2 = malloc(T2 * sizeof *ids2);
  for (int t = 0; t < T2; t++) ids2[t] = (int32_t)(pg_rng_u64(&r) % (t % 2 ? V2 : 50));
  int32_t *dids2 = up_i32(g, ids2, T2);
  buf dy2 = mkbuf(g, &r, (size_t)T2 * D2, 1), dtab2 = mkbuf(g, &r, (size_t)V2 * D2, 1);
  cpu.ops.embed_bwd(&cpu.ops, dtab2.h, dy2.h, ids2, T2, D2, V2);
  g->ops.embed_bwd(&g->ops, dtab2.d, dy2.d, dids2, T2, D2, V2);
  check(g, "embed_bwd V 70000", &dtab2, 0);
  /* out of range: PG_E_TOKEN_RANGE at sync, the gradients untouched, then the engine works on */
  pg_err err;
  tg[9] = V;
  pg_engine_upload(g, dtg, tg, sizeof tg);
  g->ops.ce_bwd(&g->ops, dl.d, dnll.d, logits.d, dtg, T, V);
  cr_assert_eq(pg_engine_sync(g, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
  check(g, "ce_bwd after a bad target: untouched", &dl, 0);
  ids[11] = -1;
  pg_engine_upload(g, dids, ids, sizeof ids);
  g->ops.embed_bwd(&g->ops, dtab.d, dy.d, dids, T, D, V);
  cr_assert_eq(pg_engine_sync(g, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
  check(g, "embed_bwd after a bad id: untouched", &dtab, 0);
  ids[11] = V + 3;
  pg_engine_upload(g, dids, ids, sizeof ids);
  g->ops.embed_bwd(&g->ops, dtab.d, dy.d, dids, T, D, V);
  cr_assert_eq(pg_engine_sync(g, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
  check(g, "embed_bwd after an id past V: untouched", &dtab, 0);
  buf *all[] = {&logits, &dl, &dnll, &dy, &dtab, &dy2, &dtab2};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) freebuf(g, all[i]);
  pg_engine_free(g, dtg), pg_engine_free(g, dids), pg_engine_free(g, dids2);
  free(ids2);
  dev_close(g);
}

/* Cross-entropy in a bf16 pass of the fast mode (spec/engine.md §8.7: a block per row, the sums
 * in another fixed order): the forward's NLL within 10⁻¹¹ (1 + |nll|) of the exact op's, the
 * backward (bf16_grad too) within 1 ulp per element, reruns bit for bit; a bad target is the
 * error, as in the exact op. */
Test(gpu_bwd, ce_bf16_rows_fast) {
  pg_rng r;
  pg_rng_seed(&r, 29);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open_bf16();
  static const int sizes[][2] = {{300, 8192}, {37, 1000}, {5, 97}}; /* T, V */
  for (size_t c = 0; c < sizeof sizes / sizeof *sizes; c++) {
    const int T = sizes[c][0], V = sizes[c][1];
    buf logits = mkbuf(g, &r, (size_t)T * V, 3), dl = mkbuf(g, &r, (size_t)T * V, 1);
    buf dnll = mkbuf(g, &r, (size_t)T, 1);
    int32_t *tg = malloc((size_t)T * sizeof *tg);
    double *nh = malloc((size_t)T * sizeof *nh), *got[2];
    cr_assert(tg && nh);
    for (int t = 0; t < T; t++) tg[t] = (int32_t)(pg_rng_u64(&r) % (uint64_t)V);
    int32_t *dtg = up_i32(g, tg, (size_t)T);
    double *nd = pg_engine_alloc(g, (size_t)T * sizeof *nd);
    cr_assert(nd);
    g->bf16_pass = 1, g->bf16_grad = 1;
    cpu.ops.ce_fwd(&cpu.ops, nh, logits.h, tg, T, V);
    for (int run = 0; run < 2; run++) {
      g->ops.ce_fwd(&g->ops, nd, logits.d, dtg, T, V);
      got[run] = malloc((size_t)T * sizeof *got[run]);
      cr_assert(got[run]);
      pg_engine_download(g, got[run], nd, (size_t)T * sizeof *nd);
      cr_assert_eq(pg_engine_sync(g, NULL), PG_OK);
    }
    cr_assert_eq(memcmp(got[0], got[1], (size_t)T * sizeof *nd), 0, "ce_fwd rerun differs");
    double worst = 0;
    for (int t = 0; t < T; t++) {
      double d = fabs(got[0][t] - nh[t]) / (1 + fabs(nh[t]));
      if (d > worst) worst = d;
    }
    cr_log_info("ce_fwd bf16 pass T %d V %d: worst %.3g", T, V, worst);
    cr_assert_leq(worst, 1e-11, "ce_fwd T %d V %d: %.3g", T, V, worst);
    float *first = malloc((size_t)T * V * sizeof *first);
    cr_assert(first);
    cpu.ops.ce_bwd(&cpu.ops, dl.h, dnll.h, logits.h, tg, T, V);
    g->ops.ce_bwd(&g->ops, dl.d, dnll.d, logits.d, dtg, T, V);
    char what[64];
    snprintf(what, sizeof what, "ce_bwd bf16 T %d V %d", T, V);
    check(g, what, &dl, 1);
    for (int run = 0; run < 2; run++) { /* into zeros, twice: bit for bit */
      float *again = malloc((size_t)T * V * sizeof *again);
      cr_assert(again);
      buf z = mkbuf(g, &r, (size_t)T * V, 0); /* zeros */
      g->ops.ce_bwd(&g->ops, z.d, NULL, logits.d, dtg, T, V);
      pg_engine_download(g, again, z.d, (size_t)T * V * sizeof *again);
      cr_assert_eq(pg_engine_sync(g, NULL), PG_OK);
      if (!run) memcpy(first, again, (size_t)T * V * sizeof *first);
      else cr_assert_eq(memcmp(first, again, (size_t)T * V * sizeof *first), 0,
                        "ce_bwd rerun differs");
      free(again);
      freebuf(g, &z);
    }
    pg_err err;
    tg[T / 2] = V;
    pg_engine_upload(g, dtg, tg, (size_t)T * sizeof *tg);
    g->ops.ce_fwd(&g->ops, nd, logits.d, dtg, T, V);
    cr_assert_eq(pg_engine_sync(g, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
    g->bf16_pass = 0, g->bf16_grad = 0;
    free(tg), free(nh), free(got[0]), free(got[1]), free(first);
    pg_engine_free(g, dtg), pg_engine_free(g, nd);
    freebuf(g, &logits), freebuf(g, &dl), freebuf(g, &dnll);
  }
  dev_close(g);
}

/* ---- the optimizers ------------------------------------------------------------------------- */

Test(gpu_bwd, optimizer_ops_bit_for_bit) {
  pg_rng r;
  pg_rng_seed(&r, 25);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  enum { N = 100003 };
  buf p = mkbuf(g, &r, N, 1), gr = mkbuf(g, &r, N, 0.1), m = mkbuf(g, &r, N, 0.01);
  buf v = mkbuf(g, &r, N, 0.01);
  for (size_t i = 0; i < N; i++) v.h[i] = fabsf(v.h[i]);
  pg_engine_upload(g, v.d, v.h, N * sizeof(float));
  /* SGD: momentum (first step and later), none */
  cpu.ops.sgd_step(&cpu.ops, p.h, gr.h, m.h, N, 0.05, 0.9, 1);
  g->ops.sgd_step(&g->ops, p.d, gr.d, m.d, N, 0.05, 0.9, 1);
  cpu.ops.sgd_step(&cpu.ops, p.h, gr.h, m.h, N, 0.05, 0.9, 0);
  g->ops.sgd_step(&g->ops, p.d, gr.d, m.d, N, 0.05, 0.9, 0);
  check(g, "sgd p", &p, 0);
  check(g, "sgd buf", &m, 0);
  cpu.ops.sgd_step(&cpu.ops, p.h, gr.h, NULL, N, 0.05, 0.0, 0);
  g->ops.sgd_step(&g->ops, p.d, gr.d, NULL, N, 0.05, 0.0, 0);
  check(g, "sgd without momentum", &p, 0);
  /* AdamW, two steps with their bias corrections */
  for (int t = 1; t <= 2; t++) {
    double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.95, t);
    cpu.ops.adamw_step(&cpu.ops, p.h, gr.h, m.h, v.h, N, 0.01, 0.9, 0.95, 1e-8, 0.1, bc1, bc2);
    g->ops.adamw_step(&g->ops, p.d, gr.d, m.d, v.d, N, 0.01, 0.9, 0.95, 1e-8, 0.1, bc1, bc2);
  }
  check(g, "adamw p", &p, 0);
  check(g, "adamw m", &m, 0);
  check(g, "adamw v", &v, 0);
  /* sumsq over two spans continued from a nonzero start; scale */
  double acc[1] = {0.25}, *dacc = pg_engine_alloc(g, sizeof(double));
  pg_engine_upload(g, dacc, acc, sizeof acc);
  cpu.ops.sumsq(&cpu.ops, acc, gr.h, 4099);
  cpu.ops.sumsq(&cpu.ops, acc, gr.h + 4099, N - 4099);
  g->ops.sumsq(&g->ops, dacc, gr.d, 4099);
  g->ops.sumsq(&g->ops, dacc, gr.d + 4099, N - 4099);
  check_f64(g, "sumsq", acc, dacc, 1);
  cpu.ops.scale(&cpu.ops, gr.h, N, 0.3170001);
  g->ops.scale(&g->ops, gr.d, N, 0.3170001);
  check(g, "scale", &gr, 0);
  /* EMA and SWA */
  cpu.ops.ema_update(&cpu.ops, m.h, p.h, N, 0.997);
  g->ops.ema_update(&g->ops, m.d, p.d, N, 0.997);
  check(g, "ema", &m, 0);
  double *sum = calloc(N, sizeof *sum), *dsum = pg_engine_alloc(g, N * sizeof(double));
  for (int k = 0; k < 3; k++) {
    cpu.ops.swa_add(&cpu.ops, sum, k ? p.h : gr.h, N);
    g->ops.swa_add(&g->ops, dsum, k ? p.d : gr.d, N);
  }
  check_f64(g, "swa sum", sum, dsum, N);
  cpu.ops.swa_average(&cpu.ops, v.h, sum, N, 3);
  g->ops.swa_average(&g->ops, v.d, dsum, N, 3);
  check(g, "swa average", &v, 0);
  cpu.ops.swa_average(&cpu.ops, v.h, sum, N, 0);
  g->ops.swa_average(&g->ops, v.d, dsum, N, 0);
  check(g, "swa average of none", &v, 0);
  buf *all[] = {&p, &gr, &m, &v};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) freebuf(g, all[i]);
  pg_engine_free(g, dacc), pg_engine_free(g, dsum);
  free(sum);
  dev_close(g);
}

/* Muon: Newton–Schulz both kinds, wide, tall (transposed), square, vectors; Nesterov, row
 * normalization, decay; two steps so the momentum buffer carries over. Bit for bit. */
Test(gpu_bwd, muon_step_bit_for_bit) {
  pg_rng r;
  pg_rng_seed(&r, 26);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  static const int shapes[][2] = {{24, 40}, {40, 24},  {33, 33}, {1, 7},
                                  {7, 1},   {64, 256}, {96, 17}};
  static const int variants[][5] = {
      /* kind, steps, nesterov, row_normalize, wd on */
      {PG_NS_CLASSIC, 5, 1, 0, 0},
      {PG_NS_POLAR_EXPRESS, 5, 1, 1, 1},
      {PG_NS_POLAR_EXPRESS, 7, 0, 0, 1},
      {PG_NS_CLASSIC, 0, 0, 1, 0},
      /* the bf16 iteration on an engine opened fp32: its exact products, the CPU's bits */
      {PG_NS_CLASSIC | PG_NS_BF16, 5, 1, 0, 0},
      {PG_NS_POLAR_EXPRESS | PG_NS_BF16, 5, 1, 1, 1}};
  char what[96];
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (size_t k = 0; k < sizeof variants / sizeof *variants; k++) {
      int rows = shapes[s][0], cols = shapes[s][1];
      const int *vr = variants[k];
      size_t n = (size_t)rows * cols;
      buf p = mkbuf(g, &r, n, 0.1), gr = mkbuf(g, &r, n, 1), bf = mkbuf(g, &r, n, 0.5);
      for (int step = 0; step < 2; step++) {
        cpu.ops.muon_step(&cpu.ops, p.h, gr.h, bf.h, rows, cols, 0.02, 0.95, vr[4] ? 0.04 : 0.0,
                          vr[2], vr[3], vr[0], vr[1]);
        g->ops.muon_step(&g->ops, p.d, gr.d, bf.d, rows, cols, 0.02, 0.95, vr[4] ? 0.04 : 0.0,
                         vr[2], vr[3], vr[0], vr[1]);
      }
      snprintf(what, sizeof what, "muon %dx%d variant %zu: p", rows, cols, k);
      check(g, what, &p, 0);
      snprintf(what, sizeof what, "muon %dx%d variant %zu: momentum", rows, cols, k);
      check(g, what, &bf, 0);
      freebuf(g, &p), freebuf(g, &gr), freebuf(g, &bf);
    }
  dev_close(g);
}

/* The bf16 Newton–Schulz through cuBLAS (an engine opened with precision bf16) against the CPU's
 * bf16 iteration (spec/train.md §10: the largest element difference ≤ 0.5 × the RMS of the CPU's
 * output, the RMS of the difference ≤ 0.05 × it), and a rerun bit for bit. One Muon step from
 * p = 0 with lr 1, μ 0 and no decay leaves p = −s·NS(g) on either engine. */
Test(gpu_bwd, muon_bf16_newton_schulz_fast) {
  pg_rng r;
  pg_rng_seed(&r, 28);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open_bf16();
  static const int shapes[][2] = {{96, 320}, {320, 96}, {512, 512}};
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
    for (int kind = 0; kind < 2; kind++) {
      const int rows = shapes[s][0], cols = shapes[s][1], nk = kind | PG_NS_BF16;
      const size_t n = (size_t)rows * cols;
      buf gr = mkbuf(g, &r, n, 1);
      float *ph = calloc(n, sizeof *ph), *bh = calloc(n, sizeof *bh), *got[2];
      cr_assert(ph && bh);
      cpu.ops.muon_step(&cpu.ops, ph, gr.h, bh, rows, cols, 1.0, 0.0, 0.0, 0, 0, nk, 5);
      for (int run = 0; run < 2; run++) {
        float *pd = pg_engine_alloc(g, n * 4), *bd = pg_engine_alloc(g, n * 4);
        cr_assert(pd && bd);
        g->ops.muon_step(&g->ops, pd, gr.d, bd, rows, cols, 1.0, 0.0, 0.0, 0, 0, nk, 5);
        got[run] = malloc(n * 4);
        cr_assert(got[run]);
        pg_engine_download(g, got[run], pd, n * 4);
        pg_err err;
        cr_assert_eq(pg_engine_sync(g, &err), PG_OK, "%s", err.msg);
        pg_engine_free(g, pd), pg_engine_free(g, bd);
      }
      cr_assert_eq(memcmp(got[0], got[1], n * 4), 0, "%dx%d kind %d: a rerun differs", rows,
                   cols, kind);
      double ss = 0, dd = 0, dmax = 0;
      size_t differ = 0;
      for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[0][i] - (double)ph[i]);
        ss += (double)ph[i] * ph[i], dd += d * d;
        if (d > dmax) dmax = d;
        differ += d != 0;
      }
      const double rms = sqrt(ss / (double)n), rd = sqrt(dd / (double)n) / rms;
      cr_log_info("bf16 NS %dx%d kind %d: %zu of %zu elements differ, largest %.4g and RMS %.4g "
                  "of the output's RMS", rows, cols, kind, differ, n, dmax / rms, rd);
      cr_assert_gt(rms, 0);
      cr_assert_leq(dmax, 0.5 * rms, "%dx%d kind %d: largest difference %.4g of the RMS", rows,
                    cols, kind, dmax / rms);
      cr_assert_leq(rd, 0.05, "%dx%d kind %d: RMS difference %.4g of the RMS", rows, cols, kind,
                    rd);
      free(ph), free(bh), free(got[0]), free(got[1]);
      freebuf(g, &gr);
    }
  dev_close(g);
}

/* Reruns of the ops that sum over rows (no atomics) give the same bits on the device. */
Test(gpu_bwd, reruns_bit_identical) {
  pg_rng r;
  pg_rng_seed(&r, 27);
  pg_engine *g = dev_open();
  enum { B = 2, T = 31, H = 4, Hkv = 2, d = 16, V = 97, M = 70, N = 40, K = 90 };
  size_t nq = (size_t)B * T * H * d, nk = (size_t)B * T * Hkv * d;
  buf q = mkbuf(g, &r, nq, 1), k = mkbuf(g, &r, nk, 1), v = mkbuf(g, &r, nk, 1);
  buf dout = mkbuf(g, &r, nq, 1), x = mkbuf(g, &r, (size_t)M * K, 1);
  buf w = mkbuf(g, &r, (size_t)N * K, 1), dy = mkbuf(g, &r, (size_t)M * N, 1);
  int32_t ids[B * T];
  for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(pg_rng_u64(&r) % 7);
  int32_t *dids = up_i32(g, ids, B * T);
  float *first[5] = {0}, *again[5] = {0};
  size_t sizes[5] = {nq, nk, nk, (size_t)N * K, (size_t)V * d};
  for (int run = 0; run < 2; run++) {
    float **out = run ? again : first;
    float *dq = pg_engine_alloc(g, nq * 4), *dk = pg_engine_alloc(g, nk * 4);
    float *dv = pg_engine_alloc(g, nk * 4), *dw = pg_engine_alloc(g, (size_t)N * K * 4);
    float *dt = pg_engine_alloc(g, (size_t)V * d * 4);
    g->ops.attention_bwd(&g->ops, dq, dk, dv, dout.d, q.d, k.d, v.d, NULL, B, T, H, Hkv, d, 0.25f);
    g->ops.matmul_bwd(&g->ops, NULL, dw, dy.d, x.d, w.d, M, N, K);
    g->ops.embed_bwd(&g->ops, dt, dout.d, dids, B * T, d, V);
    float *mom = pg_engine_alloc(g, (size_t)N * K * 4);
    g->ops.muon_step(&g->ops, w.d, dw, mom, N, K, 0.02, 0.9, 0.0, 1, 0, PG_NS_POLAR_EXPRESS, 5);
    pg_engine_copy(g, dw, w.d, (size_t)N * K * 4); /* the updated weights, compared below */
    pg_engine_free(g, mom);
    float *dev[5] = {dq, dk, dv, dw, dt};
    for (int i = 0; i < 5; i++) {
      out[i] = malloc(sizes[i] * 4);
      pg_engine_download(g, out[i], dev[i], sizes[i] * 4);
    }
    cr_assert_eq(pg_engine_sync(g, NULL), PG_OK);
    for (int i = 0; i < 5; i++) pg_engine_free(g, dev[i]);
    if (!run) pg_engine_upload(g, w.d, w.h, w.n * 4); /* the Muon step changed it */
  }
  for (int i = 0; i < 5; i++) {
    cr_assert_eq(memcmp(first[i], again[i], sizes[i] * 4), 0, "output %d differs on a rerun", i);
    free(first[i]), free(again[i]);
  }
  buf *all[] = {&q, &k, &v, &dout, &x, &w, &dy};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) freebuf(g, all[i]);
  pg_engine_free(g, dids);
  dev_close(g);
}

/* ---- the whole model ----------------------------------------------------------------------- */

/* Every arch feature (pgarchs.h, as test_gpu_engine.c's FULL). */
static const char *FULL = PGARCH_FULL_GPU;

/* The features whose ops are +, −, ×, ÷, √ and pg_exp only (no RoPE, gates, sigmoid skips or
 * smear, readout or softcap): its forward and backward are the CPU's bits. */
static const char *EXACT =
    "{\"vocab_size\": 301, \"dim\": 48, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 12, "
    "\"layers\": 5, \"block\": {\"ln_scale\": \"physical\"}, "
    "\"attention\": {\"rope_dims\": 0, \"xsa_layers\": [1, 3], \"doc_mask\": true, "
    "\"doc_max_len\": 12}, \"mlp\": {\"hidden\": 96, \"act\": \"leaky_relu2\"}, "
    "\"embeddings\": {\"bigram_buckets\": 37, \"bigram_dim\": 16, \"ve_layers\": [2], "
    "\"ve_dim\": 10}, "
    "\"structure\": {\"skips\": \"plain\", \"encoder\": [0, 1, 2, 1], "
    "\"decoder\": [2, 1, 2, 3, 4], "
    "\"parallel\": \"two_lane\", \"parallel_start\": 3}, \"head\": {\"softcap\": 0}}";

enum { MB = 3, MT = 48, MN = MB * MT, MV = 301 };

/* The CPU engine of the model tests: it must outlive the models bound to it. */
static pg_engine cpu_model_engine;

/* Elements of a tensor (its shape's product). */
static size_t numel(const pg_arch_tensor *t) {
  size_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
  return n;
}

typedef struct grads {
  double nll[MN];
  float *g, *lg; /* the model's and the adapters' gradients (host copies) */
  size_t np, nl;
} grads;

static pg_model *mk_model(const char *json, int bf16) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "arch", &err), PG_OK, "%s", err.msg);
  pg_model *m;
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, 3, 0.5);
  pg_model_set_precision(m, bf16 ? PG_PREC_BF16 : PG_PREC_FP32);
  cr_assert_eq(pg_model_enable_grads(m, &err), PG_OK, "%s", err.msg);
  return m;
}

static pg_lora *mk_lora(pg_model *m) {
  pg_lora *l;
  pg_err err;
  cr_assert_eq(pg_lora_create(&l, m, MB, 2, 4.0, 0x3f, &err), PG_OK, "%s", err.msg);
  pg_rng r;
  pg_rng_seed(&r, 5);
  pg_lora_reset(l, -1, &r, 0);
  pg_real *p = pg_lora_params(l); /* a non-zero B so the adapters reach the output */
  for (size_t i = 0; i < pg_lora_count(l); i++) p[i] = (pg_real)(0.01 * (double)(i % 11));
  return l;
}

/* forward + backward on e (weights dnll, rows of different lengths, LoRA when given) */
static void fwd_bwd(pg_model *m, pg_lora *lo, pg_engine *e, grads *out) {
  int32_t ids[MN], tg[MN];
  pg_rng r;
  pg_rng_seed(&r, 11);
  for (int i = 0; i < MN; i++) {
    ids[i] = (int32_t)(pg_rng_u64(&r) % MV);
    if (i % 13 == 0) ids[i] = 1;
    tg[i] = (int32_t)(pg_rng_u64(&r) % MV);
  }
  int len[MB] = {MT, MT - 5, MT - 17};
  pg_real dnll[MN];
  for (int i = 0; i < MN; i++) dnll[i] = (pg_real)(0.5 + (i % 3) * 0.25);
  pg_tape *tp;
  pg_err err;
  cr_assert_eq(pg_tape_create(&tp, e, 1), PG_OK);
  pg_model_zero_grads(m);
  if (lo) pg_lora_zero_grads(lo);
  pg_batch b = {.B = MB, .T = MT, .ids = ids, .targets = tg, .len = len};
  cr_assert_eq(pg_model_forward(m, tp, &b, lo, out->nll, dnll, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_backward(m, tp, &err), PG_OK, "%s", err.msg);
  out->np = pg_model_param_count(m);
  out->g = malloc(out->np * sizeof *out->g);
  memcpy(out->g, pg_model_grads(m), out->np * sizeof *out->g);
  out->nl = lo ? pg_lora_count(lo) : 0;
  out->lg = NULL;
  if (lo) {
    out->lg = malloc(out->nl * sizeof *out->lg);
    memcpy(out->lg, pg_lora_grads(lo), out->nl * sizeof *out->lg);
  }
  pg_tape_free(tp);
}

static void grads_free(grads *g) {
  free(g->g);
  free(g->lg);
}

/* The model on both engines (fresh models from the same init); returns both runs. */
static void both(const char *json, int bf16, int lora, grads *c, grads *d, pg_model **mc_out) {
  pg_model *mc = mk_model(json, bf16), *mg = mk_model(json, bf16);
  pg_lora *lc = lora ? mk_lora(mc) : NULL, *lg = lora ? mk_lora(mg) : NULL;
  cpu_model_engine = pg_engine_cpu(2);
  pg_engine *g = dev_open();
  fwd_bwd(mc, lc, &cpu_model_engine, c);
  fwd_bwd(mg, lg, g, d);
  grads again;
  fwd_bwd(mg, lg, g, &again);
  cr_assert_eq(memcmp(d->g, again.g, d->np * sizeof *d->g), 0, "a rerun on the GPU differs");
  cr_assert_eq(memcmp(d->nll, again.nll, sizeof d->nll), 0, "a rerun's NLL differs");
  if (lora) cr_assert_eq(memcmp(d->lg, again.lg, d->nl * sizeof *d->lg), 0, "LoRA rerun");
  grads_free(&again);
  pg_lora_free(lc);
  pg_lora_free(lg);
  pg_model_free(mg);
  dev_close(g);
  *mc_out = mc;
}

/* Without the C library's functions: gradients bit for bit, NLL within 1e-12 (its log). */
static void exact_model(int bf16) {
  grads c, d;
  pg_model *m;
  both(EXACT, bf16, 1, &c, &d, &m);
  for (int i = 0; i < MN; i++) cr_assert_leq(fabs(c.nll[i] - d.nll[i]), 1e-12, "nll[%d]", i);
  size_t off = 0; /* the tensors back to back in canonical order */
  for (size_t t = 0; t < pg_model_tensor_count(m); t++) {
    const pg_arch_tensor *at = pg_model_tensor(m, t);
    size_t n = numel(at);
    cr_assert_eq(memcmp(c.g + off, d.g + off, n * sizeof(float)), 0, "%s: gradient differs",
                 at->name);
    off += n;
  }
  cr_assert_eq(off, c.np);
  cr_assert_eq(memcmp(c.lg, d.lg, c.nl * sizeof(float)), 0, "LoRA gradients differ");
  grads_free(&c);
  grads_free(&d);
  pg_model_free(m);
}

Test(gpu_bwd, whole_model_gradients_exact_arch_fp32) { exact_model(0); }
Test(gpu_bwd, whole_model_gradients_exact_arch_bf16) { exact_model(1); }

/* Every feature: per tensor, the largest difference within tol × the tensor's largest gradient
 * (fp32: 1e-4; bf16 mode, where a one-ulp difference upstream can flip a bf16 rounding: 0.25, a
 * check of gross faults only; its figures are logged). */
static void full_model(int bf16) {
  grads c, d;
  pg_model *m;
  both(FULL, bf16, 1, &c, &d, &m);
  const double tol = bf16 ? 0.25 : 1e-4;
  double worst = 0;
  for (int i = 0; i < MN; i++) {
    double dd = fabs(c.nll[i] - d.nll[i]);
    if (dd > worst) worst = dd;
  }
  cr_log_info("%s: worst token NLL difference %.3g", bf16 ? "bf16" : "fp32", worst);
  cr_assert_leq(worst, bf16 ? 1e-2 : 1e-5);
  double rel_worst = 0;
  size_t off = 0;
  for (size_t t = 0; t < pg_model_tensor_count(m); off += numel(pg_model_tensor(m, t)), t++) {
    const pg_arch_tensor *at = pg_model_tensor(m, t);
    size_t n = numel(at);
    double mx = 0, dmax = 0;
    for (size_t i = 0; i < n; i++) {
      double a = fabs((double)c.g[off + i]), dd = fabs((double)c.g[off + i] - (double)d.g[off + i]);
      if (a > mx) mx = a;
      if (dd > dmax) dmax = dd;
    }
    double rel = mx > 0 ? dmax / mx : dmax;
    if (rel > rel_worst) rel_worst = rel;
    cr_assert_leq(rel, tol, "%s: gradient differs by %.3g of its largest (%.3g)", at->name, rel,
                  mx);
  }
  double lmx = 0, ldd = 0;
  for (size_t i = 0; i < c.nl; i++) {
    if (fabs((double)c.lg[i]) > lmx) lmx = fabs((double)c.lg[i]);
    double dd = fabs((double)c.lg[i] - (double)d.lg[i]);
    if (dd > ldd) ldd = dd;
  }
  cr_assert_leq(ldd, tol * lmx, "LoRA gradients differ by %.3g (largest %.3g)", ldd, lmx);
  cr_log_info("%s: worst tensor gradient difference %.3g of its largest; LoRA %.3g",
              bf16 ? "bf16" : "fp32", rel_worst, lmx > 0 ? ldd / lmx : ldd);
  grads_free(&c);
  grads_free(&d);
  pg_model_free(m);
}

Test(gpu_bwd, whole_model_gradients_full_arch_fp32) { full_model(0); }
Test(gpu_bwd, whole_model_gradients_full_arch_bf16) { full_model(1); }

/* ---- the adaptive protocols ------------------------------------------------------------------ */

static pg_protocol small_proto(int kind) {
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 64;
  p.stride = 16;
  p.report_tokens = 128;
  p.chunk_tokens = 128;
  p.batch = 3;
  p.batch_rows = 2;
  p.epochs = 2;
  p.lr = 0.05;
  p.lora_rank = 2;
  p.lora_alpha = 4;
  p.lora_chunk = 8;
  p.lora_window = 24;
  p.lora_batch_docs = 4;
  p.lora_lr = 0.01;
  p.prefix_docs = 9;
  p.phases = 2;
  return p;
}

/* One protocol on both engines from the same weights: the same chunks and counts; the per-chunk
 * nats within tol·(1 + |nats|) and val_bpb within tol (EXACT: the updates are the same bits, only
 * CE's log differs, 1e-9; FULL: 1e-5); the GPU's rerun bit-identical. */
static void protocol_both(int kind, const char *json, double tol) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "arch", &err), PG_OK, "%s", err.msg);
  pg_spm_tables tb = pgfx_tables(301);
  const uint64_t n = 64 * 8 + 1;
  int32_t *tok = pgfx_stream(n, 301, 5);
  pg_val val = {.tok = tok, .n = n, .tables = &tb};
  pg_model *m0, *m;
  cr_assert_eq(pg_model_create(&m0, &a, &err), PG_OK);
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK);
  pg_model_init_random(m0, 9, 0.5);
  pg_protocol p = small_proto(kind);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  pg_eval_result rc, rg, rg2;
  cr_assert_eq(pg_model_copy_params(m, m0, &err), PG_OK);
  cr_assert_eq(pg_eval_run(m, &cpu, &val, &p, NULL, &rc, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_copy_params(m, m0, &err), PG_OK);
  cr_assert_eq(pg_eval_run(m, g, &val, &p, NULL, &rg, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_copy_params(m, m0, &err), PG_OK);
  cr_assert_eq(pg_eval_run(m, g, &val, &p, NULL, &rg2, &err), PG_OK, "%s", err.msg);
  const char *name = pg_proto_name(kind);
  cr_assert_gt(rc.train_steps, 0, "%s: no update ran", name);
  cr_assert_eq(rc.train_steps, rg.train_steps, "%s", name);
  cr_assert_eq(rc.targets, rg.targets, "%s", name);
  cr_assert_eq(rc.scored, rg.scored, "%s", name);
  cr_assert_eq(rc.sum.bytes, rg.sum.bytes, "%s", name);
  cr_assert_eq(rc.nchunks, rg.nchunks, "%s", name);
  for (size_t i = 0; i < rc.nchunks; i++) {
    cr_assert_eq(rc.chunks[i].first, rg.chunks[i].first);
    cr_assert_eq(rc.chunks[i].count, rg.chunks[i].count);
    cr_assert_eq(rc.chunks[i].train_steps, rg.chunks[i].train_steps);
    cr_assert_leq(fabs(rc.chunks[i].nats - rg.chunks[i].nats),
                  tol * (1 + fabs(rc.chunks[i].nats)), "%s: chunk %zu: nats cpu %.12g gpu %.12g",
                  name, i, rc.chunks[i].nats, rg.chunks[i].nats);
  }
  cr_log_info("%s: val_bpb cpu %.12f gpu %.12f", name, rc.val_bpb, rg.val_bpb);
  cr_assert_leq(fabs(rc.val_bpb - rg.val_bpb), tol, "%s", name);
  cr_assert_eq(memcmp(&rg.sum, &rg2.sum, sizeof rg.sum), 0, "%s: a rerun on the GPU differs", name);
  pg_eval_result_free(&rc);
  pg_eval_result_free(&rg);
  pg_eval_result_free(&rg2);
  pg_model_free(m0);
  pg_model_free(m);
  dev_close(g);
  free(tok);
  pgfx_tables_free(&tb);
}

Test(gpu_bwd, ttt_chunk_exact_arch) { protocol_both(PG_PROTO_TTT_CHUNK, EXACT, 1e-9); }
Test(gpu_bwd, ttt_chunk_full_arch) { protocol_both(PG_PROTO_TTT_CHUNK, FULL, 1e-5); }
Test(gpu_bwd, ttt_lora_full_arch) { protocol_both(PG_PROTO_TTT_LORA, FULL, 1e-5); }
Test(gpu_bwd, ttt_phased_full_arch) { protocol_both(PG_PROTO_TTT_PHASED, FULL, 1e-5); }

/* ---- the trainer ----------------------------------------------------------------------------- */

static char tdir[64];

/* learnable streams of ids below 252 (pgshards.h) */
static void train_setup(void) {
  pgtest_mkdtemp(tdir, "pggpubwd");
  pgshards_trainer_data(tdir, 250);
}
static void train_teardown(void) { pgtest_rm_rf(tdir); }

static const char *MUON_OPT =
    "{\"matrix\": {\"kind\": \"muon\", \"lr\": 0.02, \"momentum\": 0.95, \"momentum_start\": "
    "0.85, \"momentum_warmup\": 4, \"row_normalize\": true, \"ns\": \"polar_express\"}, "
    "\"embed\": {\"lr\": 0.05, \"weight_decay\": 0.01}, \"scalar\": {\"lr\": 0.02}, "
    "\"grad_clip\": 0.3}";
static const char *ADAM_SGD_OPT =
    "{\"matrix\": {\"kind\": \"adamw\", \"lr\": 0.01, \"weight_decay\": 0.1}, \"embed\": "
    "{\"kind\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.9}, \"grad_clip\": 0.5}";

static void train_cfg(pg_train_cfg *c, const char *arch, const char *opt, const char *avg,
                      int steps) {
  char json[8192];
  snprintf(json, sizeof json,
           "{\"arch\": %s, \"data\": {\"train\": \"%s/train/fineweb_train_*.bin\", "
           "\"val\": \"%s/val/fineweb_val_*.bin\", \"loader\": \"sequential\", \"seq_len\": 32, "
           "\"batch\": 3, \"seed\": 5}, \"init_seed\": 3, \"optimizer\": %s, "
           "\"schedule\": {\"steps\": %d, \"warmup_steps\": 2, \"warmdown_frac\": 0.5, "
           "\"min_lr\": 0.1}, \"averaging\": %s}",
           arch, tdir, tdir, opt, steps, avg);
  pg_err e;
  cr_assert_eq(pg_train_cfg_parse(c, json, strlen(json), "t.json", &e), PG_OK, "%s", e.msg);
}

enum { TSTEPS = 5 };

static pg_trainer *run_trainer(const pg_train_cfg *c, pg_engine *e, double *loss, double *gnorm) {
  pg_trainer *t;
  pg_err err;
  cr_assert_eq(pg_trainer_create(&t, c, e, &err), PG_OK, "%s", err.msg);
  for (int k = 0; k < TSTEPS; k++) {
    pg_train_step_info info;
    cr_assert_eq(pg_trainer_step(t, &info, &err), PG_OK, "%s", err.msg);
    loss[k] = info.loss;
    gnorm[k] = info.grad_norm;
  }
  return t;
}

/* pgtrain's steps on both engines. EXACT arch: the weights (and the exported average) after every
 * step are the CPU's bits, the gradient norms equal, the losses within 1e-12 (CE's log). FULL
 * arch: losses within 1e-4 nats, weights within 1e-4. The GPU's rerun: bit-identical. */
static void trainer_both(const char *arch, const char *opt, const char *avg, int exact) {
  pg_train_cfg c;
  train_cfg(&c, arch, opt, avg, 12);
  pg_engine cpu = pg_engine_cpu(2), *g = dev_open();
  double lc[TSTEPS], lg[TSTEPS], lg2[TSTEPS], nc[TSTEPS], ng[TSTEPS], ng2[TSTEPS];
  pg_trainer *tc = run_trainer(&c, &cpu, lc, nc), *tg = run_trainer(&c, g, lg, ng);
  for (int k = 0; k < TSTEPS; k++) {
    cr_log_info("step %d: loss cpu %.12f gpu %.12f, grad norm cpu %.12g gpu %.12g", k + 1, lc[k],
                lg[k], nc[k], ng[k]);
    cr_assert_leq(fabs(lc[k] - lg[k]), exact ? 1e-12 : 1e-4, "step %d: loss", k + 1);
    if (exact) cr_assert_eq(nc[k], ng[k], "step %d: gradient norm", k + 1);
  }
  pg_model *mc = pg_trainer_model(tc), *mg = pg_trainer_model(tg);
  size_t np = pg_model_param_count(mc);
  const pg_real *pc = pg_model_params_read(mc), *pgp = pg_model_params_read(mg);
  if (exact) {
    cr_assert_eq(memcmp(pc, pgp, np * sizeof *pc), 0, "the weights differ");
  } else {
    double worst = 0;
    for (size_t i = 0; i < np; i++)
      if (fabs((double)pc[i] - (double)pgp[i]) > worst)
        worst = fabs((double)pc[i] - (double)pgp[i]);
    cr_log_info("weights: worst difference %.3g", worst);
    cr_assert_leq(worst, 1e-4, "the weights differ by %.3g", worst);
  }
  /* the export weights (EMA or SWA when on) */
  pg_model *ec, *eg;
  pg_err err;
  cr_assert_eq(pg_model_create(&ec, pg_model_arch(mc), &err), PG_OK);
  cr_assert_eq(pg_model_create(&eg, pg_model_arch(mc), &err), PG_OK);
  cr_assert_eq(pg_trainer_export(tc, ec, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_trainer_export(tg, eg, &err), PG_OK, "%s", err.msg);
  const pg_real *xc = pg_model_params_read(ec), *xg = pg_model_params_read(eg);
  if (exact) {
    cr_assert_eq(memcmp(xc, xg, np * sizeof *xc), 0, "the export weights differ");
  } else {
    for (size_t i = 0; i < np; i++)
      cr_assert_leq(fabs((double)xc[i] - (double)xg[i]), 1e-4, "export weight %zu", i);
  }
  /* a rerun on the GPU: the same bits */
  pg_trainer *tg2 = run_trainer(&c, g, lg2, ng2);
  cr_assert_eq(memcmp(lg, lg2, sizeof lg), 0, "a rerun's losses differ");
  cr_assert_eq(memcmp(ng, ng2, sizeof ng), 0, "a rerun's gradient norms differ");
  cr_assert_eq(memcmp(pgp, pg_model_params_read(pg_trainer_model(tg2)), np * sizeof *pgp), 0,
               "a rerun's weights differ");
  pg_model_free(ec);
  pg_model_free(eg);
  pg_trainer_free(tc);
  pg_trainer_free(tg);
  pg_trainer_free(tg2);
  dev_close(g);
}

Test(gpu_bwd, trainer_muon_ema_exact_arch, .init = train_setup, .fini = train_teardown) {
  trainer_both(EXACT, MUON_OPT, "{\"ema\": 0.9}", 1);
}
Test(gpu_bwd, trainer_adamw_sgd_swa_exact_arch, .init = train_setup, .fini = train_teardown) {
  trainer_both(EXACT, ADAM_SGD_OPT, "{\"swa_every\": 2, \"swa_start\": 2, \"swa_below\": 2.0}",
               1);
}
Test(gpu_bwd, trainer_muon_full_arch, .init = train_setup, .fini = train_teardown) {
  trainer_both(FULL, MUON_OPT, "{\"ema\": 0.9}", 0);
}

/* ---- training in bf16 (spec/train.md §10) ----------------------------------------------------
 * The fast engine (precision bf16: cuBLAS products, forward and backward, and flash attention)
 * trains the FULL arch in bf16; against the CPU's exact bf16 mode (the same rounding points) and
 * the exact GPU's fp32 run, within spec/train.md §10's tolerances; a rerun gives the same bits.
 * Without clipping, so the first step's gradients are the backward's own. */
static const char *MUON_NOCLIP =
    "{\"matrix\": {\"kind\": \"muon\", \"lr\": 0.02, \"momentum\": 0.95, \"momentum_start\": "
    "0.85, \"momentum_warmup\": 4, \"row_normalize\": true, \"ns\": \"polar_express\"}, "
    "\"embed\": {\"lr\": 0.05, \"weight_decay\": 0.01}, \"scalar\": {\"lr\": 0.02}}";

static pg_engine *dev_open_bf16(void) {
  if (standin()) return dev_open();
  pg_engine *e;
  pg_err err;
  pg_engine_opts o = {.kind = PG_ENGINE_CUDA, .precision = 1};
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(e->info.note, "", "the fast bf16 kernels are not all usable here: %s",
                   e->info.note);
  return e;
}

/* TSTEPS steps in precision p; *g1: the first step's gradients (malloc'd). */
static pg_trainer *run_trainer_prec(const pg_train_cfg *c, pg_engine *e, pg_precision p,
                                    double *loss, double *gnorm, float **g1) {
  pg_trainer *t;
  pg_err err;
  cr_assert_eq(pg_trainer_create(&t, c, e, &err), PG_OK, "%s", err.msg);
  pg_trainer_set_precision(t, p);
  pg_model *m = pg_trainer_model(t);
  const size_t np = pg_model_param_count(m);
  for (int k = 0; k < TSTEPS; k++) {
    pg_train_step_info info;
    cr_assert_eq(pg_trainer_step(t, &info, &err), PG_OK, "%s", err.msg);
    loss[k] = info.loss;
    gnorm[k] = info.grad_norm;
    if (k == 0) {
      *g1 = malloc(np * sizeof **g1);
      cr_assert(*g1);
      memcpy(*g1, pg_model_grads(m), np * sizeof **g1);
    }
  }
  return t;
}

/* Per tensor: the largest |a − b| over the tensor's largest |b|, or over 10⁻³ × the largest |b| of
 * the model where that is more (a gradient that cancels to almost nothing in one precision, such
 * as the parallel lanes' lambdas at init, is rounding noise in the other); the worst over the
 * tensors. */
static double worst_tensor(pg_model *m, const float *a, const float *b, const char **name) {
  const size_t np = pg_model_param_count(m);
  double floor = 0;
  for (size_t i = 0; i < np; i++)
    if (fabs((double)b[i]) > floor) floor = fabs((double)b[i]);
  floor *= 1e-3;
  double worst = 0;
  size_t off = 0;
  for (size_t t = 0; t < pg_model_tensor_count(m); off += numel(pg_model_tensor(m, t)), t++) {
    const size_t n = numel(pg_model_tensor(m, t));
    double mx = 0, dmax = 0;
    for (size_t i = 0; i < n; i++) {
      double v = fabs((double)b[off + i]), dd = fabs((double)a[off + i] - (double)b[off + i]);
      if (v > mx) mx = v;
      if (dd > dmax) dmax = dd;
    }
    if (mx < floor) mx = floor;
    double rel = mx > 0 ? dmax / mx : dmax;
    if (rel >= worst) {
      worst = rel;
      *name = pg_model_tensor(m, t)->name;
    }
  }
  return worst;
}

Test(gpu_bwd, trainer_bf16_against_cpu_bf16_and_fp32, .init = train_setup,
     .fini = train_teardown) {
  pg_train_cfg c;
  train_cfg(&c, FULL, MUON_NOCLIP, "{\"ema\": 0.9}", 12);
  pg_engine cpu = pg_engine_cpu(2), *f = dev_open_bf16(), *g = dev_open();
  double lc[TSTEPS], lf[TSTEPS], lf2[TSTEPS], l32[TSTEPS];
  double nc[TSTEPS], nf[TSTEPS], nf2[TSTEPS], n32[TSTEPS];
  float *gc, *gf, *gf2, *g32;
  pg_trainer *tc = run_trainer_prec(&c, &cpu, PG_PREC_BF16, lc, nc, &gc);
  pg_trainer *tf = run_trainer_prec(&c, f, PG_PREC_BF16, lf, nf, &gf);
  pg_trainer *t32 = run_trainer_prec(&c, g, PG_PREC_FP32, l32, n32, &g32);
  pg_model *m = pg_trainer_model(tf);
  const size_t np = pg_model_param_count(m);
  for (int k = 0; k < TSTEPS; k++) {
    cr_log_info("step %d: loss gpu bf16 %.9f, cpu bf16 %.9f, gpu fp32 %.9f; grad norm %.6g, "
                "%.6g, %.6g", k + 1, lf[k], lc[k], l32[k], nf[k], nc[k], n32[k]);
    cr_assert_leq(fabs(lf[k] - lc[k]), 1e-2, "step %d: the loss against the CPU's bf16", k + 1);
    cr_assert_leq(fabs(lf[k] - l32[k]), 2e-2, "step %d: the loss against fp32", k + 1);
  }
  cr_assert_leq(fabs(nf[0] - nc[0]), 0.05 * nc[0], "the first gradient norm against the CPU's");
  cr_assert_leq(fabs(nf[0] - n32[0]), 0.05 * n32[0], "the first gradient norm against fp32");
  const char *wc = "", *w32 = "";
  double rc = worst_tensor(m, gf, gc, &wc), r32 = worst_tensor(m, gf, g32, &w32);
  cr_log_info("first step's gradients: worst tensor %.3g of its largest against the CPU's bf16 "
              "(%s), %.3g against fp32 (%s)", rc, wc, r32, w32);
  cr_assert_leq(r32, 0.25, "%s: the bf16 gradient differs by %.3g of its largest", w32, r32);
  /* a rerun on the GPU: the same bits */
  pg_trainer *tf2 = run_trainer_prec(&c, f, PG_PREC_BF16, lf2, nf2, &gf2);
  cr_assert_eq(memcmp(lf, lf2, sizeof lf), 0, "a rerun's losses differ");
  cr_assert_eq(memcmp(nf, nf2, sizeof nf), 0, "a rerun's gradient norms differ");
  cr_assert_eq(memcmp(gf, gf2, np * sizeof *gf), 0, "a rerun's first gradients differ");
  cr_assert_eq(memcmp(pg_model_params_read(m), pg_model_params_read(pg_trainer_model(tf2)),
                      np * sizeof(pg_real)), 0, "a rerun's weights differ");
  free(gc), free(gf), free(gf2), free(g32);
  pg_trainer_free(tc);
  pg_trainer_free(tf);
  pg_trainer_free(tf2);
  pg_trainer_free(t32);
  dev_close(f);
  dev_close(g);
}

int main(int argc, char *argv[]) { return gpu_main(argc, argv, !standin()); }
