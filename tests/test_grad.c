/* test_grad.c: finite-difference gradient tests of the model, one per feature of the arch, in
 * fp64: this program is compiled with PG_REAL_F64 and links the fp64 build of the ops, the tape
 * and the model (pg_real.h), so the backward under test is the very code of the fp32 library.
 * For each feature a tiny arch turns it on, every parameter gets a random value (gates and
 * lambdas away from their identity inits, so every path carries signal), and the tape's gradient
 * of L = Σ w_t·nll_t is compared with central differences on sampled elements of every tensor.
 * The fp32 library is compared with this fp64 one on the same weights (f32_bridge.c). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_exp.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_ops.h"
#include "pg_rng.h"
#include "pg_tape.h"

#define FD_STEP 1e-5    /* central-difference step (absolute) */
#define FD_TOL 1e-6     /* max |tape − FD| / max(1e-3, max |FD|) per tensor */
#define FD_SAMPLES 12   /* elements checked per tensor (all when it has fewer) */
#define F32_TOL 2e-5    /* fp32 library vs fp64: max |Δnll| / max(1, |nll|) */

/* in f32_bridge.c (compiled as fp32) */
int bridge_forward_f32(const char *arch_json, const double *params, size_t np, int B, int T,
                       const int32_t *ids, const int32_t *targets, const int *len, double *nll,
                       int nthreads);

typedef struct run {
  pg_model *m;
  pg_lora *lo;
  pg_engine e;
  pg_tape *rec, *inf;
  pg_batch b;
  int32_t *ids, *tg;
  int *len;
  double *nll;
  pg_real *w;
} run;

static void arch_from(pg_arch *a, const char *json) {
  pg_err err;
  int rc = pg_arch_parse(a, json, strlen(json), "test", &err);
  cr_assert_eq(rc, PG_OK, "arch: %s", err.msg);
}

/* A batch of B rows of T tokens (ids in [0, V), a BOS at a few places) and random weights. */
static void setup(run *r, const char *json, int B, int T, uint64_t seed) {
  memset(r, 0, sizeof *r);
  pg_arch a;
  arch_from(&a, json);
  pg_err err;
  cr_assert_eq(pg_model_create(&r->m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(r->m, seed, 1.0);
  cr_assert_eq(pg_model_enable_grads(r->m, &err), PG_OK);
  r->e = pg_engine_cpu(1);
  cr_assert_eq(pg_tape_create(&r->rec, &r->e, 1), PG_OK);
  cr_assert_eq(pg_tape_create(&r->inf, &r->e, 0), PG_OK);
  size_t n = (size_t)B * (size_t)T;
  r->ids = malloc(n * sizeof *r->ids);
  r->tg = malloc(n * sizeof *r->tg);
  r->nll = malloc(n * sizeof *r->nll);
  r->w = malloc(n * sizeof *r->w);
  pg_rng g;
  pg_rng_seed(&g, seed + 99);
  int V = a.vocab_size;
  for (size_t i = 0; i < n; i++) {
    r->ids[i] = (int32_t)(pg_rng_u64(&g) % (uint64_t)V);
    if (i % (size_t)T == 0 || i % 5 == 3) r->ids[i] = a.bos_id; /* documents for the masks */
    r->tg[i] = (int32_t)(pg_rng_u64(&g) % (uint64_t)V);
    r->w[i] = (pg_real)(0.5 + pg_rng_uniform(&g));
  }
  r->b = (pg_batch){.B = B, .T = T, .ids = r->ids, .targets = r->tg};
}

static void teardown_run(run *r) {
  pg_model_free(r->m);
  pg_lora_free(r->lo);
  pg_tape_free(r->rec);
  pg_tape_free(r->inf);
  free(r->ids);
  free(r->tg);
  free(r->len);
  free(r->nll);
  free(r->w);
}

static double loss_of(run *r, pg_tape *tp) {
  pg_err err;
  int rc = pg_model_forward(r->m, tp, &r->b, r->lo, r->nll, r->w, &err);
  cr_assert_eq(rc, PG_OK, "forward: %s", err.msg);
  double L = 0;
  for (int i = 0; i < r->b.B * r->b.T; i++) L += (double)r->w[i] * r->nll[i];
  return L;
}

/* FD check of `count` values at p against grads g (already computed). */
static void check_span(run *r, const char *what, pg_real *p, const pg_real *g, size_t count,
                       uint64_t seed) {
  pg_rng s;
  pg_rng_seed(&s, seed);
  size_t m = count < FD_SAMPLES ? count : FD_SAMPLES;
  double worst = 0, scale = 1e-3;
  size_t worst_at = 0;
  double got_at = 0, fd_at = 0;
  for (size_t k = 0; k < m; k++) {
    size_t j = count <= FD_SAMPLES ? k : (size_t)(pg_rng_u64(&s) % count);
    double v = p[j];
    p[j] = (pg_real)(v + FD_STEP);
    double lp = loss_of(r, r->inf);
    p[j] = (pg_real)(v - FD_STEP);
    double lm = loss_of(r, r->inf);
    p[j] = (pg_real)v;
    double fd = (lp - lm) / (2 * FD_STEP);
    scale = fmax(scale, fabs(fd));
    double e = fabs((double)g[j] - fd);
    if (e > worst) {
      worst = e;
      worst_at = j;
      got_at = g[j];
      fd_at = fd;
    }
  }
  cr_expect(worst / scale <= FD_TOL, "%s: element %zu: tape %.10g, FD %.10g (rel %.3g > %.1g)",
            what, worst_at, got_at, fd_at, worst / scale, FD_TOL);
}

/* Gradients of every tensor of the model (and of the adapters when present). Returns how many
 * tensors had a non-zero gradient. */
static size_t check_all(run *r) {
  pg_err err;
  pg_model_zero_grads(r->m);
  if (r->lo) pg_lora_zero_grads(r->lo);
  loss_of(r, r->rec);
  cr_assert_eq(pg_model_backward(r->m, r->rec, &err), PG_OK, "backward: %s", err.msg);
  size_t nonzero = 0;
  for (size_t i = 0; i < pg_model_tensor_count(r->m); i++) {
    if (!pg_model_trainable(r->m, i)) continue;
    const pg_arch_tensor *t = pg_model_tensor(r->m, i);
    size_t n = (size_t)pg_arch_tensor_numel(t);
    const pg_real *g = pg_model_grad(r->m, i);
    for (size_t j = 0; j < n; j++)
      if (g[j] != 0) {
        nonzero++;
        break;
      }
    check_span(r, t->name, pg_model_data(r->m, i), g, n, 1000 + i);
  }
  if (r->lo) {
    size_t off, n;
    for (int row = 0; row < r->b.B; row++) {
      pg_lora_row_span(r->lo, row, &off, &n);
      check_span(r, "lora", pg_lora_params(r->lo) + off, pg_lora_grads(r->lo) + off, n, 77 + row);
    }
  }
  return nonzero;
}

/* The fp32 library on the same weights gives the same NLLs within F32_TOL. */
static void check_f32(run *r, const char *json) {
  loss_of(r, r->inf);
  size_t n = (size_t)r->b.B * (size_t)r->b.T, np = pg_model_param_count(r->m);
  double *p = malloc(np * sizeof *p), *nll32 = malloc(n * sizeof *nll32);
  for (size_t i = 0; i < np; i++) p[i] = (double)pg_model_params(r->m)[i];
  int rc = bridge_forward_f32(json, p, np, r->b.B, r->b.T, r->ids, r->tg, r->b.len, nll32, 1);
  cr_assert_eq(rc, 0, "fp32 forward failed");
  double worst = 0;
  for (size_t i = 0; i < n; i++)
    worst = fmax(worst, fabs(nll32[i] - r->nll[i]) / fmax(1.0, fabs(r->nll[i])));
  cr_expect(worst <= F32_TOL, "fp32 vs fp64 NLL: relative %.3g > %.1g", worst, F32_TOL);
  free(p);
  free(nll32);
}

/* One feature: FD on every tensor, every trainable tensor reached, fp32 agreement. */
static void feature(const char *json, int B, int T) {
  run r;
  setup(&r, json, B, T, 42);
  size_t nonzero = check_all(&r);
  size_t trainable = 0;
  for (size_t i = 0; i < pg_model_tensor_count(r.m); i++) trainable += pg_model_trainable(r.m, i);
  cr_expect_eq(nonzero, trainable, "%zu of %zu tensors got a non-zero gradient", nonzero,
               trainable);
  check_f32(&r, json);
  teardown_run(&r);
}

#define SMALL "\"vocab_size\": 19, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 4, "

Test(grad, baseline) {
  feature("{" SMALL "\"layers\": 3, \"mlp\": {\"hidden\": 24}}", 2, 9);
}
Test(grad, partial_rope_leaky_gated_skips_ln_physical) {
  feature("{" SMALL "\"layers\": 4, \"block\": {\"ln_scale\": \"physical\"}, "
          "\"attention\": {\"rope_dims\": 2, \"q_gain\": 5.0}, "
          "\"mlp\": {\"hidden\": 20, \"act\": \"leaky_relu2\", \"leaky_slope\": 0.3}, "
          "\"structure\": {\"skips\": \"gated\"}}", 2, 8);
}
Test(grad, recurrence_ln_virtual) {
  feature("{" SMALL "\"layers\": 4, \"block\": {\"ln_scale\": \"virtual\"}, "
          "\"structure\": {\"encoder\": [0, 1, 2, 1], \"decoder\": [2, 1, 2, 3]}}", 1, 8);
}
Test(grad, ntk_rope_standard_sign) {
  feature("{" SMALL "\"layers\": 2, \"attention\": {\"rope_ntk_len\": 4, \"rope_dims\": 4, "
          "\"rope_sign\": \"standard\", \"rope_base\": 500.0}}", 2, 9);
}
Test(grad, doc_mask_segment_cap) {
  feature("{" SMALL "\"layers\": 2, \"attention\": {\"doc_mask\": true, \"doc_max_len\": 3}}",
          2, 11);
}
Test(grad, xsa) {
  feature("{" SMALL "\"layers\": 3, \"attention\": {\"xsa_layers\": [0, 2]}}", 2, 8);
}
Test(grad, gate_2sigma) {
  feature("{" SMALL "\"layers\": 2, \"attention\": {\"gate\": \"2sigma_first12\", "
          "\"gate_window\": 5}}", 2, 7);
}
Test(grad, gate_dense) {
  feature("{" SMALL "\"layers\": 2, \"attention\": {\"gate\": \"dense_sigmoid\"}}", 2, 7);
}
Test(grad, gate_sparse) {
  feature("{" SMALL "\"layers\": 2, \"attention\": {\"gate\": \"sparse_sigmoid\", "
          "\"gate_scale\": 0.5, \"gate_window\": 6}}", 2, 7);
}
Test(grad, bigram_hash_projected) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"bigram_buckets\": 11, "
          "\"bigram_dim\": 6}}", 2, 9);
}
Test(grad, bigram_hash_full_width) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"bigram_buckets\": 13, "
          "\"bigram_dim\": 16, \"bigram_proj\": false}}", 2, 9);
}
Test(grad, value_embeddings) {
  feature("{" SMALL "\"layers\": 3, \"embeddings\": {\"ve_layers\": [1, 2], \"ve_dim\": 5}}",
          2, 8);
}
Test(grad, value_embeddings_full_width) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"ve_layers\": [1], \"ve_dim\": 8}}", 2, 8);
}
Test(grad, smear_v1) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"smear\": \"v1\"}}", 2, 8);
}
Test(grad, smear_v2_bos_mask) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"smear\": \"v2\", "
          "\"smear_bos_mask\": true, \"smear_window\": 5}}", 2, 9);
}
Test(grad, smear_v2_no_mask) {
  feature("{" SMALL "\"layers\": 2, \"embeddings\": {\"smear\": \"v2\"}}", 2, 9);
}
Test(grad, parallel_gptj) {
  feature("{" SMALL "\"layers\": 4, \"structure\": {\"parallel\": \"gptj\", "
          "\"parallel_start\": 2}}", 2, 8);
}
Test(grad, parallel_two_lane) {
  feature("{" SMALL "\"layers\": 4, \"structure\": {\"skips\": \"gated\", "
          "\"encoder\": [0, 1, 1], \"decoder\": [1, 2, 3], "
          "\"parallel\": \"two_lane\", \"parallel_start\": 2}}", 2, 8);
}
Test(grad, trajectory_readout) {
  feature("{" SMALL "\"layers\": 4, \"structure\": {\"skips\": \"gated\", "
          "\"encoder\": [0, 1, 2, 1], \"decoder\": [2, 1, 2, 3], \"readout_groups\": 4, "
          "\"readout_layer\": 2, \"readout_scale\": 0.35, \"parallel\": \"gptj\", "
          "\"parallel_start\": 3}}", 2, 8);
}
Test(grad, layer0_without_attention) {
  feature("{" SMALL "\"layers\": 3, \"structure\": {\"layer0_attn\": false}}", 2, 8);
}
Test(grad, untied_head_no_final_norm_no_softcap) {
  feature("{" SMALL "\"layers\": 2, \"head\": {\"tied\": false, \"final_norm\": false, "
          "\"softcap\": 0}}", 2, 8);
}
Test(grad, no_skips_no_mix_no_scales_no_qk_norm) {
  feature("{" SMALL "\"layers\": 3, \"block\": {\"resid_mix\": false, \"attn_scale\": false, "
          "\"mlp_scale\": false}, \"attention\": {\"qk_norm\": false}, "
          "\"structure\": {\"skips\": \"none\"}}", 2, 8);
}
Test(grad, top_stack_r12_features) {
  feature("{" SMALL "\"layers\": 5, \"block\": {\"ln_scale\": \"physical\"}, "
          "\"attention\": {\"q_gain\": 5.0, \"rope_dims\": 2, \"doc_mask\": true, "
          "\"doc_max_len\": 4, \"xsa_layers\": [0, 1, 2, 3, 4], \"gate\": \"sparse_sigmoid\", "
          "\"gate_scale\": 0.5, \"gate_window\": 6}, "
          "\"mlp\": {\"hidden\": 20, \"act\": \"leaky_relu2\"}, "
          "\"embeddings\": {\"smear\": \"v2\", \"smear_bos_mask\": true, \"smear_window\": 6}, "
          "\"structure\": {\"skips\": \"gated\", \"encoder\": [0, 1, 2, 1], "
          "\"decoder\": [2, 1, 2, 3, 4], \"parallel\": \"two_lane\", \"parallel_start\": 3}}",
          2, 9);
}

/* LoRA on every target with the base frozen: only the adapters take gradients, and the FD check
 * covers them; then with the base trainable too. */
static void lora_case(int base_trainable) {
  const char *json = "{" SMALL "\"layers\": 3, \"structure\": {\"encoder\": [0, 1], "
                     "\"decoder\": [1, 2]}}";
  run r;
  setup(&r, json, 2, 7, 7);
  pg_err err;
  cr_assert_eq(pg_lora_create(&r.lo, r.m, 2, 3, 6.0, 0x3f, &err), PG_OK, "%s", err.msg);
  pg_rng g;
  pg_rng_seed(&g, 5);
  pg_lora_reset(r.lo, -1, &g, 0);
  /* B is zero after a reset: give it values so every adapter path carries signal */
  for (size_t i = 0; i < pg_lora_count(r.lo); i++)
    if (pg_lora_params(r.lo)[i] == 0) pg_lora_params(r.lo)[i] = (pg_real)(0.3 * pg_rng_gauss(&g));
  for (size_t i = 0; i < pg_model_tensor_count(r.m); i++)
    pg_model_set_trainable(r.m, i, base_trainable);
  check_all(&r);
  if (!base_trainable)
    for (size_t i = 0; i < pg_model_param_count(r.m); i++)
      cr_assert_eq(pg_model_grads(r.m)[i], 0, "a frozen parameter took a gradient");
  teardown_run(&r);
}

Test(grad, lora_all_targets_frozen_base) { lora_case(0); }
Test(grad, lora_all_targets_trainable_base) { lora_case(1); }

/* Padded positions (len < T) take no gradient: the gradients do not depend on their tokens. */
Test(grad, padding_is_inert) {
  const char *json = "{" SMALL "\"layers\": 2, \"embeddings\": {\"smear\": \"v1\"}}";
  run r;
  setup(&r, json, 2, 8, 3);
  r.len = malloc(2 * sizeof *r.len);
  r.len[0] = 5;
  r.len[1] = 8;
  r.b.len = r.len;
  check_all(&r);
  size_t np = pg_model_param_count(r.m);
  pg_real *g1 = malloc(np * sizeof *g1);
  memcpy(g1, pg_model_grads(r.m), np * sizeof *g1);
  for (int t = 5; t < 8; t++) {
    r.ids[t] = (r.ids[t] + 7) % 19;
    r.tg[t] = (r.tg[t] + 3) % 19;
  }
  pg_err err;
  pg_model_zero_grads(r.m);
  loss_of(&r, r.rec);
  cr_assert_eq(pg_model_backward(r.m, r.rec, &err), PG_OK);
  cr_expect_eq(memcmp(g1, pg_model_grads(r.m), np * sizeof *g1), 0,
               "padding tokens changed the gradients");
  for (int t = 5; t < 8; t++) cr_expect_eq(r.nll[t], 0.0);
  free(g1);
  teardown_run(&r);
}

static pg_real *rnd(pg_rng *r, size_t n, double scale) {
  pg_real *p = malloc((n ? n : 1) * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = (pg_real)(scale * pg_rng_gauss(r));
  return p;
}

/* The attention op's forward output, dq, dk and dv follow spec/engine.md §4.4 to the bit: logits
 * summed over i ascending, the max, then weights and sums over s ascending. Checked here in the
 * fp64 build, where no final fp32 rounding can hide a change of order (the op caches the logits and
 * computes four keys at a time; neither may change a bit). */
static void attn_definition(const pg_real *q, const pg_real *k, const pg_real *v,
                            const pg_real *dout, const int32_t *seg, int T, int H, int Hkv, int d,
                            double scale, pg_real *out, pg_real *dq, pg_real *dk, pg_real *dv) {
  double *stats = malloc((size_t)T * H * 3 * sizeof *stats);
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      int g = h / (H / Hkv);
      const pg_real *qt = q + (t * H + h) * d, *dO = dout + (t * H + h) * d;
      double mx = -INFINITY, den = 0, dsum = 0, acc[64] = {0}, aq[64] = {0};
      for (int s = 0; s <= t; s++) {
        if (seg && seg[s] != seg[t]) continue;
        double dot = 0;
        for (int i = 0; i < d; i++) dot += (double)qt[i] * (double)k[(s * Hkv + g) * d + i];
        if (scale * dot > mx) mx = scale * dot;
      }
      for (int s = 0; s <= t; s++) {
        if (seg && seg[s] != seg[t]) continue;
        double dot = 0, dp = 0;
        for (int i = 0; i < d; i++) dot += (double)qt[i] * (double)k[(s * Hkv + g) * d + i];
        for (int i = 0; i < d; i++) dp += (double)dO[i] * (double)v[(s * Hkv + g) * d + i];
        double w = pg_exp_inline(scale * dot - mx);
        den += w;
        dsum += w * dp;
        for (int i = 0; i < d; i++) acc[i] = fma(w, (double)v[(s * Hkv + g) * d + i], acc[i]);
      }
      double D = dsum / den;
      for (int s = 0; s <= t; s++) {
        if (seg && seg[s] != seg[t]) continue;
        double dot = 0, dp = 0;
        for (int i = 0; i < d; i++) dot += (double)qt[i] * (double)k[(s * Hkv + g) * d + i];
        for (int i = 0; i < d; i++) dp += (double)dO[i] * (double)v[(s * Hkv + g) * d + i];
        double ds = pg_exp_inline(scale * dot - mx) / den * (dp - D);
        for (int i = 0; i < d; i++) aq[i] += ds * (double)k[(s * Hkv + g) * d + i];
      }
      for (int i = 0; i < d; i++) {
        out[(t * H + h) * d + i] = (pg_real)(acc[i] / den);
        dq[(t * H + h) * d + i] = (pg_real)((double)dq[(t * H + h) * d + i] + scale * aq[i]);
      }
      stats[(t * H + h) * 3 + 0] = mx;
      stats[(t * H + h) * 3 + 1] = den;
      stats[(t * H + h) * 3 + 2] = D;
    }
  /* dk, dv: rows (s, g); heads of the group ascending, then allowed queries t >= s ascending */
  for (int s = 0; s < T; s++)
    for (int g = 0; g < Hkv; g++) {
      double ak[64] = {0}, av[64] = {0};
      for (int h = g * (H / Hkv); h < (g + 1) * (H / Hkv); h++)
        for (int t = s; t < T; t++) {
          if (seg && seg[s] != seg[t]) continue;
          const pg_real *qt = q + (t * H + h) * d, *dO = dout + (t * H + h) * d;
          const double *st = stats + (t * H + h) * 3;
          double dot = 0, dp = 0;
          for (int i = 0; i < d; i++) dot += (double)qt[i] * (double)k[(s * Hkv + g) * d + i];
          for (int i = 0; i < d; i++) dp += (double)dO[i] * (double)v[(s * Hkv + g) * d + i];
          double pr = pg_exp_inline(scale * dot - st[0]) / st[1], ds = pr * (dp - st[2]);
          for (int i = 0; i < d; i++) {
            ak[i] += ds * (double)qt[i];
            av[i] += pr * (double)dO[i];
          }
        }
      for (int i = 0; i < d; i++) {
        size_t o = (size_t)(s * Hkv + g) * d + i;
        dk[o] = (pg_real)((double)dk[o] + scale * ak[i]);
        dv[o] = (pg_real)((double)dv[o] + av[i]);
      }
    }
  free(stats);
}

Test(grad, attention_op_is_bit_exact_to_its_definition) {
  pg_rng r;
  pg_rng_seed(&r, 41);
  const int T = 37, H = 4, Hkv = 2, d = 12, nq = T * H * d, nk = T * Hkv * d;
  int32_t seg[37];
  for (int t = 0; t < T; t++)
    seg[t] = t < 6 ? 0 : t < 7 ? 1 : t < 23 ? 2 : 3; /* runs of 6, 1, 16, 14 */
  pg_real *q = rnd(&r, nq, 2), *k = rnd(&r, nk, 2), *v = rnd(&r, nk, 1), *dO = rnd(&r, nq, 1);
  pg_real *o1 = rnd(&r, nq, 0), *o2 = rnd(&r, nq, 0), *g1 = rnd(&r, nq, 0), *g2 = rnd(&r, nq, 0);
  pg_real *k1 = rnd(&r, nk, 0), *k2 = rnd(&r, nk, 0), *v1 = rnd(&r, nk, 0), *v2 = rnd(&r, nk, 0);
  for (int m = 0; m < 2; m++)
    for (int th = 1; th <= 3; th += 2) {
      const int32_t *sg = m ? seg : NULL;
      pg_engine e = pg_engine_cpu(th);
      for (int i = 0; i < nq; i++) g1[i] = g2[i] = 0.5;
      for (int i = 0; i < nk; i++) k1[i] = k2[i] = v1[i] = v2[i] = 0.25;
      e.ops.attention_fwd(&e.ops, o1, q, k, v, sg, 1, T, H, Hkv, d, 0.3f);
      e.ops.attention_bwd(&e.ops, g1, k1, v1, dO, q, k, v, sg, 1, T, H, Hkv, d, 0.3f);
      cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
      attn_definition(q, k, v, dO, sg, T, H, Hkv, d, (double)0.3f, o2, g2, k2, v2);
      cr_assert(!memcmp(o1, o2, nq * sizeof *o1), "forward differs (mask %d, %d threads)", m, th);
      cr_assert(!memcmp(g1, g2, nq * sizeof *g1), "dq differs (mask %d, %d threads)", m, th);
      cr_assert(!memcmp(k1, k2, nk * sizeof *k1), "dk differs (mask %d, %d threads)", m, th);
      cr_assert(!memcmp(v1, v2, nk * sizeof *v1), "dv differs (mask %d, %d threads)", m, th);
    }
  free(q), free(k), free(v), free(dO), free(o1), free(o2), free(g1), free(g2);
  free(k1), free(k2), free(v1), free(v2);
}

/* rmsnorm's forward against spec/engine.md §4.2 in fp64, where a change in the order of the sum
 * or of the operations after it shows (rounded to fp32 it seldom would): 1 to 11 rows (the
 * fp32 library's four-row blocks and what is left), an odd width, rows of very different
 * scales, 1, 2 and 3 threads, in place and not. */
Test(grad, rmsnorm_op_is_bit_exact_to_its_definition) {
  pg_rng r;
  pg_rng_seed(&r, 43);
  const int D = 37;
  const float eps = 0x1p-23f;
  for (int R = 1; R <= 11; R++) {
    pg_real *x = rnd(&r, R * D, 1), *want = rnd(&r, R * D, 0), *y = rnd(&r, R * D, 0);
    for (int i = 0; i < D; i++) x[(R / 2) * D + i] *= 1e-4, x[(R - 1) * D + i] *= 3e3;
    for (int k = 0; k < R; k++) {
      double ss = 0.0;
      for (int i = 0; i < D; i++) ss += (double)x[k * D + i] * (double)x[k * D + i];
      const double inv = 1.0 / sqrt(ss / (double)D + (double)eps);
      for (int i = 0; i < D; i++) want[k * D + i] = (pg_real)((double)x[k * D + i] * inv);
    }
    for (int th = 1; th <= 3; th++) {
      pg_engine e = pg_engine_cpu(th);
      e.ops.rmsnorm_fwd(&e.ops, y, x, (size_t)R, D, eps);
      cr_assert(!memcmp(y, want, (size_t)(R * D) * sizeof *y), "R %d, %d threads", R, th);
      memcpy(y, x, (size_t)(R * D) * sizeof *y);
      e.ops.rmsnorm_fwd(&e.ops, y, y, (size_t)R, D, eps);
      cr_assert(!memcmp(y, want, (size_t)(R * D) * sizeof *y), "R %d, %d threads, in place", R,
                th);
    }
    free(x), free(want), free(y);
  }
}
