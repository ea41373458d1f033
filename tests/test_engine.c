/* test_engine.c: the engine interface (pg_engine.h): names, the CPU engine's memory, the sticky
 * error and sync, scratch; and the seam a GPU engine needs, proven with the remote test engine
 * (tests/pgremote.h: memory the host cannot read): the model's forward and backward, with LoRA
 * and in bf16 mode, give the CPU engine's bits on it, a forward pass moves its inputs up in one
 * upload and its loss down in one download, and an op's failure reaches the caller at sync. The
 * protocols, the trainer and calibration have their remote-engine cases in their own tests. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_engine.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_optim.h"
#include "pg_rng.h"
#include "pg_tape.h"
#include "pgarchs.h"
#include "pgremote.h"

Test(engine, names_and_factory_kinds) {
  cr_assert_str_eq(pg_engine_kind_name(PG_ENGINE_CPU), "cpu");
  cr_assert_str_eq(pg_engine_kind_name(PG_ENGINE_CUDA), "cuda");
  cr_assert_str_eq(pg_engine_kind_name(PG_ENGINE_AUTO), "auto");
  cr_assert_null(pg_engine_kind_name(7));
  cr_assert_eq(pg_engine_kind_parse("cpu"), PG_ENGINE_CPU);
  cr_assert_eq(pg_engine_kind_parse("auto"), PG_ENGINE_AUTO);
  cr_assert_eq(pg_engine_kind_parse("CPU"), -1);
  cr_assert_eq(pg_engine_kind_parse(NULL), -1);
  pg_engine e = pg_engine_cpu(3);
  cr_assert_str_eq(e.info.name, "cpu");
  cr_assert_eq(e.info.threads, 3);
  cr_assert(e.host_memory);
  cr_assert_str_eq(e.info.devices, "cpu: 3 threads");
}

Test(engine, cpu_memory_is_zeroed_aligned_and_copies) {
  pg_engine e = pg_engine_cpu(1);
  unsigned char *p = pg_engine_alloc(&e, 1000), *q = pg_engine_alloc(&e, 0);
  cr_assert(p && q && p != q);
  cr_assert_eq((uintptr_t)p % 64, 0);
  for (int i = 0; i < 1000; i++) cr_assert_eq(p[i], 0);
  unsigned char host[1000];
  for (int i = 0; i < 1000; i++) host[i] = (unsigned char)(i * 7);
  pg_engine_upload(&e, p, host, 1000);
  pg_engine_copy(&e, p + 1, p, 999); /* overlapping, as memmove */
  unsigned char back[1000];
  pg_engine_download(&e, back, p, 1000);
  cr_assert_eq(back[0], host[0]);
  cr_assert_eq(memcmp(back + 1, host, 999), 0);
  pg_engine_zero(&e, p + 10, 20);
  pg_engine_download(&e, back, p, 1000);
  for (int i = 10; i < 30; i++) cr_assert_eq(back[i], 0);
  cr_assert_eq(back[30], host[29]);
  cr_assert_null(pg_engine_alloc(&e, SIZE_MAX - 8));
  pg_err err;
  cr_assert_eq(pg_engine_sync(&e, &err), PG_E_NOMEM, "a failed allocation is recorded");
  cr_assert(strstr(err.msg, "out of memory"), "%s", err.msg);
  cr_assert_eq(pg_engine_sync(&e, &err), PG_OK, "sync clears the error");
  pg_engine_free(&e, p);
  pg_engine_free(&e, q);
  pg_engine_free(&e, NULL);
}

Test(engine, first_error_wins_until_sync) {
  pg_engine e = pg_engine_cpu(1);
  cr_assert(!pg_engine_failed(&e));
  cr_assert_eq(pg_engine_fail(&e, PG_E_TOKEN_RANGE, "first %d", 1), PG_E_TOKEN_RANGE);
  cr_assert_eq(pg_engine_fail(&e, PG_E_NOMEM, "second"), PG_E_TOKEN_RANGE);
  cr_assert(pg_engine_failed(&e));
  pg_err err;
  cr_assert_eq(pg_engine_sync(&e, &err), PG_E_TOKEN_RANGE);
  cr_assert_str_eq(err.msg, "first 1");
  cr_assert(!pg_engine_failed(&e));
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_OK);
}

Test(engine, scratch_grows_and_is_kept) {
  pg_engine e = pg_engine_cpu(1);
  char *a = pg_engine_scratch(&e, 0, 100);
  cr_assert(a && (uintptr_t)a % 64 == 0);
  memset(a, 1, 100);
  cr_assert_eq(pg_engine_scratch(&e, 0, 50), a, "a smaller request reuses the buffer");
  char *b = pg_engine_scratch(&e, 1, 10);
  cr_assert(b && b != a, "slots are separate");
  char *c = pg_engine_scratch(&e, 0, 1 << 20);
  cr_assert(c);
  c[(1 << 20) - 1] = 1;
  cr_assert_null(pg_engine_scratch(&e, PG_ENGINE_SCRATCH_SLOTS, 8));
  cr_assert_eq(pg_engine_sync(&e, NULL), PG_E_ARG);
  /* an engine with memory of its own keeps scratch per engine and frees it at destroy */
  pgremote *r = pgremote_new(1);
  cr_assert(pg_engine_scratch(&r->outer, 0, 64));
  cr_assert(pg_engine_scratch(&r->outer, 0, 4096));
  cr_assert_eq(r->live, 1);
  pg_engine_destroy(&r->outer);
  cr_assert_eq(r->live, 0);
  free(r);
}

/* ---- the model on the remote engine ---------------------------------------------------------- */

static const char *FULL = PGARCH_FULL_TINY;

/* the baseline family: tied head with softcap, U-Net skips, SmearGate v1, untied-free */
static const char *SMEAR1 =
    "{\"vocab_size\": 41, \"dim\": 16, \"heads\": 2, \"kv_heads\": 1, \"layers\": 4, "
    "\"mlp\": {\"hidden\": 32}, \"embeddings\": {\"smear\": \"v1\"}, "
    "\"structure\": {\"parallel\": \"gptj\", \"parallel_start\": 2}, "
    "\"head\": {\"tied\": false}}";

enum { B = 2, T = 19, N = B * T, V = 41 };

static pg_model *mk(const char *json, uint64_t seed) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "t", &err), PG_OK, "%s", err.msg);
  pg_model *m;
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, seed, 1.0);
  cr_assert_eq(pg_model_enable_grads(m, &err), PG_OK);
  return m;
}

static void tokens(int32_t *ids, int32_t *tg, uint64_t seed) {
  pg_rng r;
  pg_rng_seed(&r, seed);
  for (int i = 0; i < N; i++) {
    ids[i] = (int32_t)(pg_rng_u64(&r) % V);
    if (i % 7 == 0) ids[i] = 1;
    tg[i] = (int32_t)(pg_rng_u64(&r) % V);
  }
}

typedef struct run {
  double nll[N];
  pg_real *grads, *lgrads, *logits;
} run;

/* forward + backward (with LoRA when lo) on engine e; copies out NLL, gradients, last logits */
static void fb(pg_model *m, pg_lora *lo, pg_engine *e, const int32_t *ids, const int32_t *tg,
               run *out) {
  pg_tape *tp;
  pg_err err;
  cr_assert_eq(pg_tape_create(&tp, e, 1), PG_OK);
  int len[B] = {T, T - 4};
  pg_real dnll[N];
  for (int i = 0; i < N; i++) dnll[i] = (pg_real)(0.5 + (i % 3) * 0.25);
  out->lgrads = NULL;
  out->logits = calloc((size_t)B * V, sizeof *out->logits);
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = tg, .len = len,
                .logits_last = out->logits};
  pg_model_zero_grads(m);
  if (lo) pg_lora_zero_grads(lo);
  cr_assert_eq(pg_model_forward(m, tp, &b, lo, out->nll, dnll, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_backward(m, tp, &err), PG_OK, "%s", err.msg);
  size_t np = pg_model_param_count(m);
  out->grads = malloc(np * sizeof *out->grads);
  memcpy(out->grads, pg_model_grads(m), np * sizeof *out->grads);
  if (lo) {
    out->lgrads = malloc(pg_lora_count(lo) * sizeof *out->lgrads);
    memcpy(out->lgrads, pg_lora_grads(lo), pg_lora_count(lo) * sizeof *out->lgrads);
  }
  pg_tape_free(tp);
}

static void same_run(const run *a, const run *b, size_t np, size_t nl) {
  cr_assert_eq(memcmp(a->nll, b->nll, sizeof a->nll), 0, "NLL differs on the remote engine");
  cr_assert_eq(memcmp(a->grads, b->grads, np * sizeof *a->grads), 0, "gradients differ");
  cr_assert_eq(memcmp(a->logits, b->logits, (size_t)B * V * sizeof *a->logits), 0, "logits");
  if (nl) cr_assert_eq(memcmp(a->lgrads, b->lgrads, nl * sizeof *a->lgrads), 0, "LoRA grads");
}

static void run_free(run *r) {
  free(r->grads);
  free(r->lgrads);
  free(r->logits);
}

static void remote_same(const char *json, int bf16, int with_lora) {
  int32_t ids[N], tg[N];
  tokens(ids, tg, 2);
  pg_model *m1 = mk(json, 1), *m2 = mk(json, 1);
  pg_model_set_precision(m1, bf16 ? PG_PREC_BF16 : PG_PREC_FP32);
  pg_model_set_precision(m2, bf16 ? PG_PREC_BF16 : PG_PREC_FP32);
  pg_lora *l1 = NULL, *l2 = NULL;
  pg_err err;
  if (with_lora) {
    cr_assert_eq(pg_lora_create(&l1, m1, B, 2, 4.0, 0x3f, &err), PG_OK, "%s", err.msg);
    cr_assert_eq(pg_lora_create(&l2, m2, B, 2, 4.0, 0x3f, &err), PG_OK, "%s", err.msg);
    pg_rng r1, r2;
    pg_rng_seed(&r1, 5);
    pg_rng_seed(&r2, 5);
    pg_lora_reset(l1, -1, &r1, 0);
    pg_lora_reset(l2, -1, &r2, 0);
    /* a non-zero B so the adapters' products reach the output */
    pg_real *p1 = pg_lora_params(l1), *p2 = pg_lora_params(l2);
    for (size_t i = 0; i < pg_lora_count(l1); i++) p1[i] = p2[i] = (pg_real)(0.01 * (i % 11));
  }
  pg_engine cpu = pg_engine_cpu(2);
  pgremote *rem = pgremote_new(2);
  run a, b;
  fb(m1, l1, &cpu, ids, tg, &a);
  fb(m2, l2, &rem->outer, ids, tg, &b);
  same_run(&a, &b, pg_model_param_count(m1), with_lora ? pg_lora_count(l1) : 0);
  run_free(&a);
  run_free(&b);
  pg_lora_free(l1);
  pg_lora_free(l2);
  pg_model_free(m1);
  pg_model_free(m2);
  cr_assert_eq(rem->live, 0, "every engine buffer is freed with its model and tape");
  pgremote_free(rem);
}

Test(engine, remote_model_full_arch_same_bits) { remote_same(FULL, 0, 0); }
Test(engine, remote_model_full_arch_lora_same_bits) { remote_same(FULL, 0, 1); }
Test(engine, remote_model_bf16_same_bits) { remote_same(FULL, 1, 1); }
Test(engine, remote_model_smear_v1_gptj_untied_same_bits) { remote_same(SMEAR1, 0, 1); }

/* Host edits of the parameters between passes reach the engine (the next forward uploads them),
 * and the engine's newer gradients come back at the host accessor. */
Test(engine, remote_host_edits_reach_the_engine) {
  int32_t ids[N], tg[N];
  tokens(ids, tg, 3);
  pg_model *m1 = mk(FULL, 4), *m2 = mk(FULL, 4);
  pg_engine cpu = pg_engine_cpu(1);
  pgremote *rem = pgremote_new(1);
  run a, b;
  fb(m1, NULL, &cpu, ids, tg, &a);
  fb(m2, NULL, &rem->outer, ids, tg, &b);
  run_free(&a);
  run_free(&b);
  /* edit one tensor on the host of both, then run again */
  long i = pg_model_find(m1, "blocks.2.mlp.fc.weight");
  cr_assert(i >= 0);
  pg_real *w1 = pg_model_data(m1, (size_t)i), *w2 = pg_model_data(m2, (size_t)i);
  for (int j = 0; j < 40; j++) w1[j] = w2[j] = (pg_real)(0.3 * j);
  fb(m1, NULL, &cpu, ids, tg, &a);
  fb(m2, NULL, &rem->outer, ids, tg, &b);
  same_run(&a, &b, pg_model_param_count(m1), 0);
  run_free(&a);
  run_free(&b);
  /* the parameters read back from the remote engine are the host's */
  cr_assert_eq(memcmp(pg_model_params_read(m1), pg_model_params_read(m2),
                      pg_model_param_count(m1) * sizeof(pg_real)), 0);
  /* copying between two models on one engine stays on the engine */
  pg_model *m3 = mk(FULL, 9);
  cr_assert_eq(pg_model_bind(m3, &rem->outer, NULL), PG_OK);
  size_t up = rem->uploads, down = rem->downloads;
  cr_assert_eq(pg_model_copy_params(m3, m2, NULL), PG_OK);
  cr_assert_eq(rem->uploads, up);
  cr_assert_eq(rem->downloads, down);
  cr_assert_eq(memcmp(pg_model_params_read(m3), pg_model_params_read(m1),
                      pg_model_param_count(m1) * sizeof(pg_real)), 0);
  pg_model_free(m1);
  pg_model_free(m2);
  pg_model_free(m3);
  pgremote_free(rem);
}

/* The fast bf16 mode's premise (spec/engine.md §8.7): the model marks each forward pass, and in a
 * bf16 pass both operands of every matmul (and grouped matmul, over the adapters it reads) and
 * q, k, v of the attention are bf16 values, so a GPU engine's conversion to bf16 is exact; an fp32
 * pass after it is marked fp32 again. Checked on a CPU engine whose ops are wrapped. */
static pg_ops bfp_cpu;
static int bfp_checked, bfp_bad, bfp_fp32_calls;

static int bfp_vals(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    if (u & 0xffffu) return 0;
  }
  return 1;
}

static void bfp_note(const pg_ops *o, int ok) {
  if (pg_engine_of(o)->bf16_pass) bfp_checked++, bfp_bad += !ok;
  else bfp_fp32_calls++;
}

static void bfp_matmul(const pg_ops *o, float *y, const float *x, const float *w, int M, int Nn,
                       int K) {
  bfp_note(o, bfp_vals(x, (size_t)M * K) && bfp_vals(w, (size_t)Nn * K));
  bfp_cpu.matmul_fwd(o, y, x, w, M, Nn, K);
}

static void bfp_grouped(const pg_ops *o, float *y, const float *x, const float *w,
                        const int32_t *widx, size_t wstride, int G, int M, int Nn, int K) {
  int ok = bfp_vals(x, (size_t)G * M * K);
  for (int g = 0; g < G; g++) ok = ok && bfp_vals(w + (size_t)widx[g] * wstride, (size_t)Nn * K);
  bfp_note(o, ok);
  bfp_cpu.matmul_grouped_fwd(o, y, x, w, widx, wstride, G, M, Nn, K);
}

static void bfp_attention(const pg_ops *o, float *out, const float *q, const float *k,
                          const float *v, const int32_t *seg, int Bb, int Tt, int H, int Hkv,
                          int d, float scale) {
  size_t nq = (size_t)Bb * Tt * H * d, nk = (size_t)Bb * Tt * Hkv * d;
  bfp_note(o, bfp_vals(q, nq) && bfp_vals(k, nk) && bfp_vals(v, nk));
  bfp_cpu.attention_bf16_fwd(o, out, q, k, v, seg, Bb, Tt, H, Hkv, d, scale);
}

static void bf16_pass_marked(const char *json) {
  int32_t ids[N], tg[N];
  tokens(ids, tg, 8);
  pg_model *m = mk(json, 3);
  pg_lora *lo;
  pg_err err;
  cr_assert_eq(pg_lora_create(&lo, m, B, 2, 4.0, 0x3f, &err), PG_OK, "%s", err.msg);
  pg_rng r;
  pg_rng_seed(&r, 5);
  pg_lora_reset(lo, -1, &r, 0);
  pg_real *lp = pg_lora_params(lo);
  for (size_t i = 0; i < pg_lora_count(lo); i++) lp[i] = (pg_real)(0.013 * (double)(i % 11));
  pg_engine e = pg_engine_cpu(2);
  bfp_cpu = e.ops;
  e.ops.matmul_fwd = bfp_matmul;
  e.ops.matmul_grouped_fwd = bfp_grouped;
  e.ops.attention_bf16_fwd = bfp_attention;
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
  double nll[N];
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = tg};
  bfp_checked = bfp_bad = bfp_fp32_calls = 0;
  pg_model_set_precision(m, PG_PREC_BF16);
  cr_assert_eq(pg_model_forward(m, tp, &b, lo, nll, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(e.bf16_pass, 1);
  cr_assert_gt(bfp_checked, 10, "the bf16 pass is marked (%d products and attentions seen)",
               bfp_checked);
  cr_assert_eq(bfp_fp32_calls, 0);
  cr_assert_eq(bfp_bad, 0, "%d of %d calls had an operand that is not a bf16 value", bfp_bad,
               bfp_checked);
  pg_model_set_precision(m, PG_PREC_FP32);
  cr_assert_eq(pg_model_forward(m, tp, &b, lo, nll, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(e.bf16_pass, 0, "an fp32 pass after a bf16 one is marked fp32");
  cr_assert_gt(bfp_fp32_calls, 10);
  pg_tape_free(tp);
  pg_lora_free(lo);
  pg_model_free(m);
}

Test(engine, bf16_pass_marked_and_operands_bf16) { bf16_pass_marked(FULL); }
Test(engine, bf16_pass_marked_smear_v1_untied) { bf16_pass_marked(SMEAR1); }

/* One inference forward on a bound model: one upload (the side inputs), one download (the NLL). */
Test(engine, remote_forward_moves_one_upload_one_download) {
  int32_t ids[N], tg[N];
  tokens(ids, tg, 5);
  pg_model *m = mk(FULL, 6);
  pgremote *rem = pgremote_new(1);
  pg_tape *tp;
  pg_err err;
  cr_assert_eq(pg_tape_create(&tp, &rem->outer, 0), PG_OK);
  double nll[N];
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = tg};
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_OK, "%s", err.msg);
  size_t up = rem->uploads, down = rem->downloads;
  cr_assert_eq(pg_model_forward(m, tp, &b, NULL, nll, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(rem->uploads - up, 1, "side inputs: one upload per forward");
  cr_assert_eq(rem->downloads - down, 1, "loss: one download per forward");
  pg_tape_free(tp);
  pg_model_free(m);
  pgremote_free(rem);
}

/* ---- the optimizer ops (spec/engine.md §4.20) ------------------------------------------------ */

/* Every optimizer op on engine e over the same host inputs: the results (parameters, state, the
 * norm's fp64 sum, the SWA sums and average) back to back in out. */
enum { ON = 1000, OR = 20, OC = 40 }; /* elements; Muon on OR × OC, then 4 × 50 after it */
static void optim_ops_on(pg_engine *e, const float *p0, const float *g0, double *out) {
  const pg_ops *o = &e->ops;
  size_t fb = ON * sizeof(float), db = ON * sizeof(double);
  float *p = pg_engine_alloc(e, fb), *g = pg_engine_alloc(e, fb), *m = pg_engine_alloc(e, fb);
  float *v = pg_engine_alloc(e, fb);
  double *sum = pg_engine_alloc(e, db), *acc = pg_engine_alloc(e, sizeof(double));
  cr_assert(p && g && m && v && sum && acc);
  float host[ON];
  size_t k = 0;
#define BACK(x)                                                                                  \
  do {                                                                                           \
    pg_engine_download(e, host, x, fb);                                                          \
    for (int i = 0; i < ON; i++) out[k++] = host[i];                                             \
  } while (0)
  pg_engine_upload(e, p, p0, fb);
  pg_engine_upload(e, g, g0, fb);
  o->sgd_step(o, p, g, m, ON, 0.1, 0.9, 1);
  o->sgd_step(o, p, g, m, ON, 0.1, 0.9, 0);
  o->sgd_step(o, p, g, NULL, ON, 0.05, 0.0, 0);
  BACK(p);
  BACK(m);
  pg_engine_zero(e, m, fb);
  o->adamw_step(o, p, g, m, v, ON, 1e-2, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9, 1 - 0.95);
  o->adamw_step(o, p, g, m, v, ON, 1e-2, 0.9, 0.95, 1e-8, 0.1, 1 - 0.81, 1 - 0.9025);
  BACK(p);
  BACK(m);
  BACK(v);
  pg_engine_zero(e, acc, sizeof(double));
  o->sumsq(o, acc, g, 300);
  o->sumsq(o, acc, g + 300, ON - 300);
  pg_engine_download(e, &out[k++], acc, sizeof(double));
  o->scale(o, g, ON, 0.37);
  BACK(g);
  pg_engine_zero(e, m, fb);
  for (int s = 0; s < 2; s++) {
    o->muon_step(o, p, g, m, OR, OC, 0.02, 0.95, 0.04, 1, 1, 1, 5); /* tall: the transpose */
    o->muon_step(o, p + OR * OC, g, m + OR * OC, 4, 50, 0.02, 0.9, 0.0, 0, 0, 0, 3);
  }
  BACK(p);
  BACK(m);
  o->ema_update(o, v, p, ON, 0.997);
  o->swa_add(o, sum, p, ON);
  o->swa_add(o, sum, g, ON);
  o->swa_average(o, v, sum, ON, 2);
  o->swa_average(o, m, sum, ON, 0); /* count 0: unchanged */
  BACK(v);
  BACK(m);
  double hs[ON];
  pg_engine_download(e, hs, sum, db);
  for (int i = 0; i < ON; i++) out[k++] = hs[i];
#undef BACK
  pg_err err;
  cr_assert_eq(pg_engine_sync(e, &err), PG_OK, "%s", err.msg);
  pg_engine_free(e, p), pg_engine_free(e, g), pg_engine_free(e, m), pg_engine_free(e, v);
  pg_engine_free(e, sum), pg_engine_free(e, acc);
}

/* The optimizer ops give the same bits for 1, 2 and 3 threads and on the remote engine (they
 * reach their state only as engine memory); the sum of squares is the host clip's. */
Test(engine, optimizer_ops_same_bits_threads_and_remote) {
  static float p0[ON], g0[ON];
  pg_rng rng;
  pg_rng_seed(&rng, 3);
  for (int i = 0; i < ON; i++) {
    p0[i] = (float)(pg_rng_uniform(&rng) - 0.5);
    g0[i] = (float)(0.1 * (pg_rng_uniform(&rng) - 0.5));
  }
  size_t n = 11 * ON + 1;
  double *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
  cr_assert(ref && got);
  pg_engine e1 = pg_engine_cpu(1);
  optim_ops_on(&e1, p0, g0, ref);
  for (int th = 2; th <= 3; th++) {
    pg_engine et = pg_engine_cpu(th);
    optim_ops_on(&et, p0, g0, got);
    cr_assert_eq(memcmp(ref, got, n * sizeof *ref), 0, "%d threads", th);
  }
  pgremote *rem = pgremote_new(2);
  optim_ops_on(&rem->outer, p0, g0, got);
  cr_assert_eq(memcmp(ref, got, n * sizeof *ref), 0, "remote engine");
  cr_assert_eq(rem->live, 0);
  pgremote_free(rem);
  /* the sum of squares is the host clip's norm, squared */
  pg_optim_span sp = {.g = g0, .n = ON};
  double norm = pg_clip_grad_norm(&sp, 1, 0);
  cr_assert_eq(norm, sqrt(ref[5 * ON]));
  /* the state changed: the ops did something */
  cr_assert_neq(ref[0], p0[0]);
  free(ref);
  free(got);
}

/* An op's failure on the engine (an id outside the table) reaches the tape and the caller. */
Test(engine, remote_op_failure_reaches_the_tape) {
  pgremote *rem = pgremote_new(1);
  pg_engine *e = &rem->outer;
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, e, 0), PG_OK);
  int32_t host_ids[3] = {0, 5, 2};
  int32_t *ids = pg_tape_scratch(tp, sizeof host_ids);
  pg_real *table = pg_tape_scratch(tp, 4 * 3 * sizeof(pg_real));
  cr_assert(ids && table);
  pg_engine_upload(e, ids, host_ids, sizeof host_ids);
  pg_t y = tp_embed(tp, pg_t_const(table, 12), ids, 3, 3, 4);
  cr_assert_null(y.v);
  pg_err err;
  cr_assert_eq(pg_tape_status(tp, &err), PG_E_TOKEN_RANGE);
  cr_assert(strstr(err.msg, "outside"), "%s", err.msg);
  cr_assert(!pg_engine_failed(e), "the tape took the engine's error over");
  pg_tape_reset(tp);
  cr_assert_eq(pg_tape_status(tp, NULL), PG_OK);
  pg_tape_free(tp);
  pgremote_free(rem);
}

/* ---- the factory ----------------------------------------------------------------------------- */

Test(engine, factory_cpu_auto_cuda) {
  pg_engine *e;
  pg_err err;
  pg_engine_opts o = {.kind = PG_ENGINE_CPU, .threads = 2};
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(e->info.name, "cpu");
  cr_assert_eq(e->info.threads, 2);
  cr_assert_str_eq(e->info.note, "");
  pg_engine_destroy(e);
  /* cuda: the CUDA engine where a GPU is; elsewhere refused in one line */
  o.kind = PG_ENGINE_CUDA;
  int st = pg_engine_open(&e, &o, &err);
  if (st == PG_OK) {
    cr_assert_str_eq(e->info.name, "cuda");
    pg_engine_destroy(e);
  } else {
    cr_assert(st == PG_E_UNSUPPORTED || st == PG_E_NO_DEVICE || st == PG_E_CUDA, "%d", st);
    cr_assert_null(e);
    cr_assert(strstr(err.msg, "--engine cuda"), "%s", err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
  }
  /* auto: CUDA where it can run, else the CPU with the reason */
  o.kind = PG_ENGINE_AUTO;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  if (st == PG_OK) {
    cr_assert_str_eq(e->info.name, "cuda");
  } else {
    cr_assert_str_eq(e->info.name, "cpu");
    cr_assert(!strncmp(e->info.note, "auto: ", 6), "%s", e->info.note);
  }
  pg_engine_destroy(e);
  o.kind = 9;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_E_ARG);
  o.kind = PG_ENGINE_CPU;
  o.threads = -1;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_E_ARG);
  /* precision: fp32 (0) or bf16 (1); the CPU engine takes either and computes the same */
  o.threads = 1;
  o.precision = 2;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_E_ARG);
  o.precision = -1;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_E_ARG);
  o.precision = 1;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(e->info.name, "cpu");
  cr_assert_str_eq(e->info.note, "");
  pg_engine_destroy(e);
}
