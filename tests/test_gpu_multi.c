/* test_gpu_multi.c: several CUDA engines in one run (spec/eval.md §8.1, spec/engine.md §8.8), on
 * whatever GPUs the machine has: two engines on device 0 (two streams, each driven by its own host
 * thread, each entering its device) give one engine's bits for plain, sliding, ttt-chunk (its
 * update on the first engine, the final weights included), ttt-lora and ttt-phased (each batch's
 * documents split between the engines), in fp32 and bf16 mode;
 * pg_engine_open_many opens one engine per device and refuses more devices than there are in one
 * line. Skips (77) without a CUDA build or a device, like the rest of the GPU suite. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_engine.h"
#include "pg_eval.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pgevalfx.h"
#include "pggpu.h"

#define V 61

static const char *ARCH =
    "{\"vocab_size\": 61, \"dim\": 32, \"heads\": 4, \"kv_heads\": 2, \"head_dim\": 8, "
    "\"layers\": 3, \"block\": {\"ln_scale\": \"physical\"}, "
    "\"attention\": {\"rope_dims\": 4, \"xsa_layers\": [0, 1, 2]}, "
    "\"mlp\": {\"hidden\": 64, \"act\": \"leaky_relu2\"}, "
    "\"structure\": {\"skips\": \"gated\", \"encoder\": [0, 1], \"decoder\": [1, 2], "
    "\"parallel\": \"gptj\", \"parallel_start\": 2}}";

static pg_engine *cuda_on(int device) {
  pg_engine_opts o = {.kind = PG_ENGINE_CUDA, .device = device};
  pg_engine *e = NULL;
  pg_err err;
  cr_assert_eq(pg_engine_open(&e, &o, &err), PG_OK, "%s", err.msg);
  return e;
}

static void same_bits(int kind, int precision) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, ARCH, strlen(ARCH), "test", &err), PG_OK, "%s", err.msg);
  pg_model *m;
  cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s", err.msg);
  pg_model_init_random(m, 7, 0.5);
  pg_model_set_precision(m, (pg_precision)precision);
  pg_spm_tables t = pgfx_tables(V);
  const uint64_t n = 64 * 9 + 1;
  int32_t *tok = pgfx_stream(n, V, 3);
  pg_val val = {.tok = tok, .n = n, .tables = &t};
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 64;
  p.stride = 16;
  p.batch = 3;
  p.report_tokens = 128;
  p.chunk_tokens = 128;
  p.batch_rows = 2;
  p.epochs = 1;
  p.lora_rank = 2;
  p.lora_alpha = 4;
  p.lora_chunk = 16;
  p.lora_window = 48;
  p.lora_batch_docs = 5;
  p.lora_lr = 0.01;
  p.prefix_docs = 9;
  p.phases = 2;
  /* ttt-chunk and ttt-phased change the weights: both runs start from m0's, and end with the same
   */
  pg_model *m0;
  cr_assert_eq(pg_model_create(&m0, &a, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_copy_params(m0, m, &err), PG_OK);
  const size_t np = pg_model_param_count(m);
  float *w1 = malloc(np * sizeof *w1);
  pg_engine *es[2] = {cuda_on(0), cuda_on(0)};
  pg_eval_result one, two;
  cr_assert_eq(pg_eval_run(m, es[0], &val, &p, NULL, &one, &err), PG_OK, "%s", err.msg);
  memcpy(w1, pg_model_params_read(m), np * sizeof *w1);
  cr_assert_eq(pg_model_copy_params(m, m0, &err), PG_OK);
  cr_assert_eq(pg_eval_run_on(m, es, 2, &val, &p, NULL, &two, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(memcmp(w1, pg_model_params_read(m), np * sizeof *w1), 0, "the final weights");
  cr_assert_eq(one.train_steps, two.train_steps);
  free(w1);
  pg_model_free(m0);
  cr_assert_eq(memcmp(&one.sum, &two.sum, sizeof one.sum), 0, "sums %.17g vs %.17g",
               one.sum.nats, two.sum.nats);
  cr_assert_eq(one.nchunks, two.nchunks);
  for (size_t i = 0; i < one.nchunks; i++)
    cr_assert_eq(memcmp(&one.chunks[i], &two.chunks[i], sizeof one.chunks[i]), 0, "chunk %zu", i);
  cr_assert_eq(one.forwards, two.forwards);
  pg_eval_result_free(&one);
  pg_eval_result_free(&two);
  pg_model_free(m); /* it lives on es[0], which the run left entered */
  pg_engine_destroy(es[1]);
  pg_engine_destroy(es[0]);
  free(tok);
  pgfx_tables_free(&t);
}

Test(gpu_multi, two_engines_one_device_plain_fp32) { same_bits(PG_PROTO_PLAIN, PG_PREC_FP32); }
Test(gpu_multi, two_engines_one_device_sliding_fp32) { same_bits(PG_PROTO_SLIDING, PG_PREC_FP32); }
Test(gpu_multi, two_engines_one_device_sliding_bf16) { same_bits(PG_PROTO_SLIDING, PG_PREC_BF16); }
Test(gpu_multi, two_engines_one_device_chunked_fp32) {
  same_bits(PG_PROTO_TTT_CHUNK, PG_PREC_FP32);
}
Test(gpu_multi, two_engines_one_device_chunked_bf16) {
  same_bits(PG_PROTO_TTT_CHUNK, PG_PREC_BF16);
}

Test(gpu_multi, two_engines_one_device_lora_fp32) { same_bits(PG_PROTO_TTT_LORA, PG_PREC_FP32); }
Test(gpu_multi, two_engines_one_device_lora_bf16) { same_bits(PG_PROTO_TTT_LORA, PG_PREC_BF16); }
Test(gpu_multi, two_engines_one_device_phased_fp32) {
  same_bits(PG_PROTO_TTT_PHASED, PG_PREC_FP32);
}
Test(gpu_multi, two_engines_one_device_phased_bf16) {
  same_bits(PG_PROTO_TTT_PHASED, PG_PREC_BF16);
}

Test(gpu_multi, open_many_one_engine_per_device) {
  int have = 0;
  pg_err err;
  cr_assert_eq(pg_cuda_device_count(&have, &err), PG_OK, "%s", err.msg);
  cr_assert_geq(have, 1);
  pg_engine *es[PG_ENGINES_MAX];
  pg_engine_opts o = {.kind = PG_ENGINE_CUDA};
  const int n = have < PG_ENGINES_MAX ? have : PG_ENGINES_MAX;
  cr_assert_eq(pg_engine_open_many(es, n, &o, &err), PG_OK, "%s", err.msg);
  for (int i = 0; i < n; i++) {
    char want[16];
    snprintf(want, sizeof want, "cuda:%d ", i);
    cr_assert(!strncmp(es[i]->info.devices, want, strlen(want)), "%s", es[i]->info.devices);
  }
  for (int i = n - 1; i >= 0; i--) pg_engine_destroy(es[i]);
  if (have < PG_ENGINES_MAX) { /* one more than the machine has: one line naming both counts */
    cr_assert_eq(pg_engine_open_many(es, have + 1, &o, &err), PG_E_NO_DEVICE);
    char want[64];
    snprintf(want, sizeof want, "%d GPUs asked for from device 0, %d present", have + 1, have);
    cr_assert(strstr(err.msg, want) && !strchr(err.msg, '\n'), "%s", err.msg);
    for (int i = 0; i < have + 1; i++) cr_assert_null(es[i]);
  }
}

int main(int argc, char *argv[]) { return gpu_main(argc, argv, 1); }
