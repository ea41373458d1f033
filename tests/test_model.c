/* test_model.c: properties of the fp32 model that the gradient tests do not show: bit-identical
 * results for 1, 2 and 3 threads (forward and gradients), the inference tape (which frees each
 * block's temporaries) equal to the recording one, causality (a prediction never depends on a
 * later token), document isolation under the document mask, the BigramHash and segment rules on
 * worked values, the NTK base, LoRA at zero, and the clear errors of a bad batch; bf16 mode's
 * determinism and its distance from fp32; an fp32 golden of one pass. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_tape.h"
#include "pg_rng.h"
#include "pgarchs.h"

static const char *FULL = PGARCH_FULL_TINY;

static pg_model *mk(const char *json, uint64_t seed) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "t", &err), PG_OK, "%s", err.msg);
  pg_model *m;
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, seed, 1.0);
  return m;
}

static void tokens(int32_t *ids, int32_t *tg, int n, int V, uint64_t seed) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    ids[i] = (int32_t)(pg_rng_u64(&r) % (uint64_t)V);
    if (i % 7 == 0) ids[i] = 1;
    tg[i] = (int32_t)(pg_rng_u64(&r) % (uint64_t)V);
  }
}

enum { B = 2, T = 19, N = B * T };

static void forward(pg_model *m, int threads, int grad, const int32_t *ids, const int32_t *tg,
                    double *nll) {
  pg_engine e = pg_engine_cpu(threads);
  pg_tape *tp;
  pg_err err;
  cr_assert_eq(pg_tape_create(&tp, &e, grad), PG_OK);
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = tg};
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_OK, "%s", err.msg);
  if (grad) {
    pg_model_zero_grads(m);
    cr_assert_eq(pg_model_backward(m, tp, &err), PG_OK, "%s", err.msg);
  }
  pg_tape_free(tp);
}

Test(model, threads_and_tapes_bit_identical) {
  pg_model *m = mk(FULL, 1);
  pg_err err;
  cr_assert_eq(pg_model_enable_grads(m, &err), PG_OK);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 2);
  double n1[N], n2[N], n3[N], ni[N];
  size_t np = pg_model_param_count(m);
  float *g1 = malloc(np * sizeof *g1);
  forward(m, 1, 1, ids, tg, n1);
  memcpy(g1, pg_model_grads(m), np * sizeof *g1);
  forward(m, 2, 1, ids, tg, n2);
  cr_assert_eq(memcmp(g1, pg_model_grads(m), np * sizeof *g1), 0, "gradients: 1 vs 2 threads");
  forward(m, 3, 1, ids, tg, n3);
  cr_assert_eq(memcmp(g1, pg_model_grads(m), np * sizeof *g1), 0, "gradients: 1 vs 3 threads");
  forward(m, 2, 0, ids, tg, ni);
  cr_assert_eq(memcmp(n1, n2, sizeof n1), 0);
  cr_assert_eq(memcmp(n1, n3, sizeof n1), 0);
  cr_assert_eq(memcmp(n1, ni, sizeof n1), 0, "inference tape differs from the recording one");
  for (int i = 0; i < N; i++) cr_assert(isfinite(n1[i]) && n1[i] > 0);
  free(g1);
  pg_model_free(m);
}

/* nll[t] depends on ids[0..t] and tg[t] only. */
Test(model, causal) {
  pg_model *m = mk(FULL, 3);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 4);
  double a[N], b[N];
  forward(m, 1, 0, ids, tg, a);
  for (int t0 = 1; t0 < T; t0 += 3) {
    int32_t ids2[N];
    memcpy(ids2, ids, sizeof ids);
    for (int r = 0; r < B; r++) ids2[r * T + t0] = (ids[r * T + t0] + 5) % 41;
    forward(m, 1, 0, ids2, tg, b);
    for (int r = 0; r < B; r++)
      for (int t = 0; t < t0; t++)
        cr_assert_eq(a[r * T + t], b[r * T + t], "position %d saw token %d", t, t0);
    int moved = 0;
    for (int t = t0; t < T; t++) moved |= a[t0] != b[t0];
    cr_assert(moved);
  }
  pg_model_free(m);
}

/* With the document mask, a document's predictions do not depend on earlier documents' tokens
 * (no BigramHash or SmearGate here: those read the previous token by design). */
Test(model, documents_isolated) {
  const char *json = "{\"vocab_size\": 41, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, "
                     "\"head_dim\": 4, \"layers\": 3, \"attention\": {\"doc_mask\": true}}";
  pg_model *m = mk(json, 5);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 6); /* BOS at 0, 7, 14 of each row */
  double a[N], b[N];
  forward(m, 1, 0, ids, tg, a);
  for (int t = 1; t < 7; t++) ids[t] = (ids[t] + 9) % 41 == 1 ? 2 : (ids[t] + 9) % 41;
  forward(m, 1, 0, ids, tg, b);
  for (int t = 7; t < T; t++) cr_assert_eq(a[t], b[t], "position %d saw another document", t);
  cr_assert(a[3] != b[3]);
  pg_model_free(m);
}

Test(model, segments_and_bigram_hash) {
  int32_t ids[] = {1, 5, 6, 1, 7, 8, 9, 10, 11, 1};
  int32_t seg[10];
  pg_model_segments(ids, 10, 1, 0, seg);
  int32_t want[] = {0, 0, 0, 1, 1, 1, 1, 1, 1, 2};
  cr_assert_eq(memcmp(seg, want, sizeof want), 0);
  pg_model_segments(ids, 10, 1, 2, seg); /* cap 2 from each segment start */
  int32_t want2[] = {0, 0, 1, 2, 2, 3, 3, 4, 4, 5};
  cr_assert_eq(memcmp(seg, want2, sizeof want2), 0);
  int32_t a[] = {1, 2, 8191, 8191}, h[4];
  pg_model_bigram_hash(a, 4, 3072, h);
  cr_assert_eq(h[0], 3071);
  cr_assert_eq(h[1], ((36313 * 2) ^ (27191 * 1)) % 3071);
  cr_assert_eq(h[2], ((36313 * 8191) ^ (27191 * 2)) % 3071);
  cr_assert_eq(h[3], ((36313 * 8191) ^ (27191 * 8191)) % 3071);
  /* int32 wrap-around, then Python's non-negative remainder */
  int32_t big[] = {0, 70000, 70000};
  pg_model_bigram_hash(big, 3, 101, h);
  int32_t x = (int32_t)((uint32_t)36313u * 70000u ^ (uint32_t)27191u * 0u);
  cr_assert_eq(h[1], ((x % 100) + 100) % 100);
}

Test(model, ntk_base) {
  pg_arch a;
  pg_arch_default(&a);
  a.attention.rope_dims = 16;
  a.attention.rope_ntk_len = 1024;
  cr_assert_eq(pg_model_rope_base(&a, 1024), 10000.0f);
  cr_assert_eq(pg_model_rope_base(&a, 2048), (float)(10000.0 * pow(2.0, 16.0 / 14.0)));
  a.attention.rope_ntk_len = 0;
  cr_assert_eq(pg_model_rope_base(&a, 4096), 10000.0f);
}

/* Adapters with B = 0 change nothing; a non-zero B changes only rows it is mapped to. */
Test(model, lora_zero_is_identity_and_rows_are_separate) {
  pg_model *m = mk(FULL, 7);
  pg_err err;
  pg_lora *lo;
  cr_assert_eq(pg_lora_create(&lo, m, 3, 2, 4.0, 0x3f, &err), PG_OK);
  pg_rng r;
  pg_rng_seed(&r, 1);
  pg_lora_reset(lo, -1, &r, 0);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 8);
  double a[N], b[N];
  forward(m, 1, 0, ids, tg, a);
  pg_engine e = pg_engine_cpu(1);
  pg_tape *tp;
  pg_tape_create(&tp, &e, 0);
  int rows[B] = {2, 0};
  pg_batch bt = {.B = B, .T = T, .ids = ids, .targets = tg, .lora_rows = rows};
  cr_assert_eq(pg_model_forward(m, tp, &bt, lo, b, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(memcmp(a, b, sizeof a), 0, "zero-B adapters changed the output");
  size_t off, n;
  pg_lora_row_span(lo, 2, &off, &n);
  for (size_t i = 0; i < n; i++)
    if (pg_lora_params(lo)[off + i] == 0) pg_lora_params(lo)[off + i] = 0.1f;
  cr_assert_eq(pg_model_forward(m, tp, &bt, lo, b, NULL, &err), PG_OK);
  cr_assert(memcmp(a, b, T * sizeof *a) != 0, "row 0 (adapter 2) unchanged");
  cr_assert_eq(memcmp(a + T, b + T, T * sizeof *a), 0, "row 1 (adapter 0) changed");
  int bad[B] = {3, 0};
  bt.lora_rows = bad;
  cr_assert_eq(pg_model_forward(m, tp, &bt, lo, b, NULL, &err), PG_E_ARG);
  pg_tape_free(tp);
  pg_lora_free(lo);
  pg_model_free(m);
}

Test(model, bad_batches_are_clear_errors) {
  pg_model *m = mk(FULL, 9);
  pg_engine e = pg_engine_cpu(1);
  pg_tape *tp;
  pg_tape_create(&tp, &e, 0);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 10);
  double nll[N];
  pg_err err;
  ids[5] = 41;
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = tg};
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_E_TOKEN_RANGE);
  cr_assert(strstr(err.msg, "position 5"), "%s", err.msg);
  ids[5] = 3;
  tg[T + 2] = -1;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_E_TOKEN_RANGE);
  cr_assert(strstr(err.msg, "row 1 position 2"), "%s", err.msg);
  tg[T + 2] = 3;
  int len[B] = {T + 1, 3};
  b.len = len;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_E_ARG);
  pg_tape_free(tp);
  /* backward needs a recording tape */
  pg_tape_create(&tp, &e, 0);
  b.len = NULL;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_OK);
  cr_assert_eq(pg_model_backward(m, tp, &err), PG_E_ARG);
  pg_tape_free(tp);
  /* NaN weights are refused by name */
  pg_model_data(m, 2)[1] = NAN;
  cr_assert_eq(pg_model_check_finite(m, "x.pgz", &err), PG_E_ARG);
  cr_assert(strstr(err.msg, pg_model_tensor(m, 2)->name), "%s", err.msg);
  pg_model_free(m);
}

/* The init follows spec/arch.md §4: the control tensors at their values, projections zero. */
Test(model, init_values) {
  pg_model *m = mk(FULL, 11);
  pg_model_init(m, 1);
  long i = pg_model_find(m, "blocks.0.resid_mix");
  cr_assert(i >= 0);
  cr_assert_eq(pg_model_data(m, (size_t)i)[0], 1.0f);
  cr_assert_eq(pg_model_data(m, (size_t)i)[24], 0.0f);
  i = pg_model_find(m, "blocks.1.attn.q_gain");
  cr_assert_eq(pg_model_data(m, (size_t)i)[3], 1.5f);
  i = pg_model_find(m, "blocks.2.attn.proj.weight");
  cr_assert_eq(pg_model_data(m, (size_t)i)[7], 0.0f);
  i = pg_model_find(m, "parallel_resid_lambdas");
  cr_assert_eq(pg_model_data(m, (size_t)i)[0], 1.1f);
  i = pg_model_find(m, "bigram.scale");
  cr_assert_eq(pg_model_data(m, (size_t)i)[0], 0.05f);
  cr_assert_eq(pg_model_find(m, "no.such.tensor"), -1);
  pg_model_free(m);
}

/* bf16 mode (spec/engine.md §7): deterministic, the same bits for 1, 2 and 3 threads and for both
 * tapes (values and gradients), close to the fp32 NLLs but not equal to them, and the logits it
 * returns are bf16 values; switching back to fp32 gives the fp32 bits again. */
Test(model, bf16_mode) {
  pg_model *m = mk(FULL, 7);
  pg_err err;
  cr_assert_eq(pg_model_enable_grads(m, &err), PG_OK);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 8);
  double f32[N], a[N], b[N], c[N], inf[N], again[N];
  forward(m, 1, 0, ids, tg, f32);
  pg_model_set_precision(m, PG_PREC_BF16);
  cr_assert_eq(pg_model_precision(m), PG_PREC_BF16);
  size_t np = pg_model_param_count(m);
  float *g1 = malloc(np * sizeof *g1);
  forward(m, 1, 1, ids, tg, a);
  memcpy(g1, pg_model_grads(m), np * sizeof *g1);
  forward(m, 2, 1, ids, tg, b);
  cr_assert_eq(memcmp(g1, pg_model_grads(m), np * sizeof *g1), 0, "bf16 gradients: 1 vs 2");
  forward(m, 3, 0, ids, tg, c);
  forward(m, 3, 0, ids, tg, inf);
  cr_assert_eq(memcmp(a, b, sizeof a), 0);
  cr_assert_eq(memcmp(a, c, sizeof a), 0, "bf16: 1 vs 3 threads, recording vs inference tape");
  cr_assert_eq(memcmp(c, inf, sizeof c), 0, "bf16: a rerun differs");
  double sa = 0, sf = 0, worst = 0;
  int differ = 0;
  for (int i = 0; i < N; i++) {
    cr_assert(isfinite(a[i]) && a[i] > 0);
    sa += a[i], sf += f32[i];
    worst = fmax(worst, fabs(a[i] - f32[i]) / f32[i]);
    differ += a[i] != f32[i];
  }
  cr_assert(differ > N / 2, "bf16 changed only %d of %d NLLs", differ, N);
  /* relative to the NLL (this random model's are large): a few percent per token at most, the
   * mean much closer */
  cr_assert(worst < 0.05, "bf16 moved a token's NLL by %g of it", worst);
  cr_assert(fabs(sa - sf) / sf < 0.005, "bf16 moved the mean NLL by %g of it", fabs(sa - sf) / sf);
  /* the logits come out of the softcap in bf16 */
  pg_engine e = pg_engine_cpu(1);
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
  float last[B * 41];
  pg_batch bt = {.B = B, .T = T, .ids = ids, .targets = tg, .logits_last = last};
  cr_assert_eq(pg_model_forward(m, tp, &bt, NULL, inf, NULL, &err), PG_OK, "%s", err.msg);
  for (int i = 0; i < B * 41; i++) {
    uint32_t u;
    memcpy(&u, &last[i], sizeof u);
    cr_assert_eq(u & 0xffffu, 0u, "logit %d = %.9g is not a bf16 value", i, last[i]);
  }
  pg_tape_free(tp);
  pg_model_set_precision(m, PG_PREC_FP32);
  forward(m, 1, 0, ids, tg, again);
  cr_assert_eq(memcmp(again, f32, sizeof f32), 0, "fp32 after bf16 differs");
  cr_assert_eq(pg_precision_parse("bf16"), PG_PREC_BF16);
  cr_assert_eq(pg_precision_parse("fp32"), PG_PREC_FP32);
  cr_assert_eq(pg_precision_parse("fp16"), -1);
  cr_assert_str_eq(pg_precision_name(PG_PREC_BF16), "bf16");
  free(g1);
  pg_model_free(m);
}

/* fp32 golden: the NLLs and every gradient of one recording pass of FULL, hashed (FNV-1a over
 * the bytes). bf16 mode must leave the fp32 pass bit for bit as it was, node order included (the
 * order gradients accumulate in); a reordering that keeps the values but not the bits of a TTT
 * run shows here. A deliberate change of the fp32 numerics updates the golden in the same commit
 * and says why. */
static uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

Test(model, fp32_golden) {
  pg_model *m = mk(FULL, 11);
  pg_err err;
  cr_assert_eq(pg_model_enable_grads(m, &err), PG_OK);
  int32_t ids[N], tg[N];
  tokens(ids, tg, N, 41, 12);
  double nll[N];
  forward(m, 2, 1, ids, tg, nll);
  uint64_t h = fnv(nll, sizeof nll, 1469598103934665603ull);
  h = fnv(pg_model_grads(m), pg_model_param_count(m) * sizeof(float), h);
  cr_assert_eq(h, 0x84dddae5d8827895ull, "fp32 NLLs and gradients hash to %016llx",
               (unsigned long long)h);
  pg_model_free(m);
}

/* The tape refuses a head wider than the ops' stack accumulators with a status, whatever the
 * caller validated (defence in depth behind the arch rule; issue 11). */
Test(model, tape_refuses_heads_wider_than_the_ops_take) {
  pg_engine e = pg_engine_cpu(1);
  enum { D = PG_OPS_MAX_HEAD_DIM + 64 };
  pg_real *q = calloc(D, sizeof *q), *k = calloc(D, sizeof *k), *v = calloc(D, sizeof *v);
  cr_assert(q && k && v);
  for (int i = 0; i < D; i++) q[i] = k[i] = v[i] = 1.0f;
  for (int op = 0; op < 2; op++) {
    pg_tape *tp;
    cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
    pg_t out = {0};
    pg_t y = op == 0 ? tp_attention(tp, out, pg_t_const(q, D), pg_t_const(k, D),
                                    pg_t_const(v, D), NULL, 1, 1, 1, 1, D, 1.0f)
                     : tp_xsa(tp, pg_t_const(q, D), pg_t_const(v, D), 1, 1, 1, D);
    pg_err err;
    cr_assert_null(y.v);
    cr_assert_eq(pg_tape_status(tp, &err), PG_E_LIMIT);
    cr_assert(strstr(err.msg, op == 0 ? "attention" : "xsa"), "%s", err.msg);
    pg_tape_free(tp);
  }
  free(q), free(k), free(v);
}

/* B·T·width must fit the ops' int shapes: a batch beyond it is refused before any allocation
 * (here B·T·dim = 32768·65536 = 2^31). */
Test(model, batch_times_width_beyond_int_is_refused) {
  pg_model *m = mk("{\"vocab_size\": 8, \"dim\": 65536, \"heads\": 1, \"kv_heads\": 1, "
                   "\"head_dim\": 8, \"layers\": 2, \"mlp\": {\"hidden\": 8}}", 1);
  enum { BT = 32768 };
  int32_t *ids = calloc(BT, sizeof *ids);
  double *nll = calloc(BT, sizeof *nll);
  cr_assert(ids && nll);
  pg_engine e = pg_engine_cpu(1);
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
  pg_batch b = {.B = 2, .T = BT / 2, .ids = ids};
  pg_err err;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_E_LIMIT, "%s", err.msg);
  cr_assert(strstr(err.msg, "row width of 65536"), "%s", err.msg);
  pg_tape_free(tp);
  free(ids), free(nll);
  pg_model_free(m);
}
