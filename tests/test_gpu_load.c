/* test_gpu_load.c: an artifact loaded onto the CUDA engine (spec/engine.md §8.1): its integer
 * tensors go up quantized and the device's dequantization kernel makes the parameters, which must
 * be the host path's (pg_model_load_artifact, the reader's reference) bit for bit, for int5..int8,
 * byte and bit packing, LQER corrections, one fp32 scale, fp16 passthrough, and quant layout 2
 * (transposed and row-permuted matrices, which the reader hands over in row-major order); a
 * refusal (an infinite scale) reads as the host path's. Skips (77) without a CUDA build or a
 * device, like the rest of the GPU suite.
 *
 * PG_GPU_STANDIN=remote runs the same tests with the remote test engine (tests/pgremote.h: the CPU
 * reference behind memory the host cannot read) in the GPU's place: a check of this program on a
 * machine without one. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_cuda.h"
#include "pg_engine.h"
#include "pg_half.h"
#include "pg_model.h"
#include "pg_weights.h"
#include "pggpu.h"
#include "pgremote.h"
#include "pgstandin.h"

/* Wide enough that a tensor spans many blocks of the kernel (tok_emb: 2^20 values). */
static const char *ARCH =
    "{\"vocab_size\": 4096, \"dim\": 256, \"layers\": 3, \"heads\": 4, \"kv_heads\": 2, "
    "\"mlp\": {\"hidden\": 512}, \"embeddings\": {\"bigram_buckets\": 64, \"bigram_dim\": 64, "
    "\"ve_layers\": [1], \"ve_dim\": 64}}";

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 16);
}

/* The artifact: the matrices in turn int5 bit-packed; int6 transposed with LQER rank 2; int7
 * row-permuted; int8 transposed and permuted with LQER rank 1; int6 with one fp32 scale; fp16.
 * The other tensors fp32. inf_name: that matrix is int7, with an infinite scale for row 0. */
static void build(uint8_t **buf, size_t *len, const char *inf_name) {
  pg_arch a;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&a, ARCH, strlen(ARCH), "arch", &e), PG_OK, "%s", e.msg);
  pg_arch_tensor *t;
  size_t nt;
  cr_assert_eq(pg_arch_tensors(&a, &t, &nt, &e), PG_OK, "%s", e.msg);
  pg_writer *w;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  cr_assert_eq(pg_writer_meta_str(w, "arch.json", ARCH, strlen(ARCH), &e), PG_OK, "%s", e.msg);
  pg_codec_spec zstd;
  cr_assert_eq(pg_codec_spec_parse(&zstd, "zstd-1", &e), PG_OK, "%s", e.msg);
  const int d = pg_writer_data_section(w, &zstd, &e);
  cr_assert_geq(d, 0, "%s", e.msg);
  int turn = 0;
  for (size_t i = 0; i < nt; i++) {
    const uint64_t n = pg_arch_tensor_numel(&t[i]);
    uint64_t dims[3];
    for (int k = 0; k < t[i].ndim; k++) dims[k] = t[i].shape[k];
    pg_tensor_in in = {.name = t[i].name, .ndim = (unsigned)t[i].ndim, .dims = dims,
                       .sec_values = d, .sec_scales = d, .sec_lqer = d, .sec_perm = d};
    const int mat = t[i].ndim == 2 && t[i].shape[0] > 1;
    const int k = !mat ? -1 : strcmp(t[i].name, inf_name ? inf_name : "") ? turn++ % 6 : 2;
    if (k < 0 || k == 5) {
      void *v = malloc(n * 4);
      for (uint64_t j = 0; j < n; j++) {
        const float x = ((float)(rnd() % 20001) - 10000.0f) * 1e-4f;
        if (k == 5)
          ((uint16_t *)v)[j] = pg_f32_to_f16(x);
        else
          ((float *)v)[j] = x;
      }
      in.qtype = k == 5 ? PG_QTYPE_F16 : PG_QTYPE_F32;
      in.values = v;
      cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s: %s", t[i].name, e.msg);
      free(v);
      continue;
    }
    static const int qt[5] = {PG_QTYPE_INT5, PG_QTYPE_INT6, PG_QTYPE_INT7, PG_QTYPE_INT8,
                              PG_QTYPE_INT6};
    const uint64_t rows = dims[0], cols = dims[1];
    const unsigned bits = pg_qtype_bits(qt[k]);
    int8_t *q = malloc(n);
    for (uint64_t j = 0; j < n; j++)
      q[j] = (int8_t)(pg_int_min(bits) + (int)(rnd() % (1u << bits)));
    uint16_t *rs = malloc(rows * 2);
    for (uint64_t r = 0; r < rows; r++)
      rs[r] = pg_f32_to_f16(1e-3f + (float)(rnd() % 1000) * 3e-5f);
    if (inf_name && !strcmp(t[i].name, inf_name)) rs[0] = 0x7c00;
    uint32_t *perm = malloc(rows * sizeof *perm);
    for (uint64_t j = 0; j < rows; j++) perm[j] = (uint32_t)j;
    for (uint64_t j = rows - 1; j > 0; j--) {
      const uint64_t x = rnd() % (j + 1);
      const uint32_t v = perm[j];
      perm[j] = perm[x];
      perm[x] = v;
    }
    const unsigned rank = k == 1 ? 2 : k == 3 ? 1 : 0;
    int8_t *qa = malloc(rows * 2), *qb = malloc(2 * cols);
    uint16_t *sb = malloc(2 * cols / 64 * 2 + 2);
    for (uint64_t j = 0; j < rows * 2; j++) qa[j] = (int8_t)((int)(rnd() % 4) - 2);
    for (uint64_t j = 0; j < 2 * cols; j++) qb[j] = (int8_t)((int)(rnd() % 16) - 8);
    for (uint64_t j = 0; j < 2 * cols / 64; j++)
      sb[j] = pg_f32_to_f16(0.01f + (float)(rnd() % 100) * 1e-4f);
    in.qtype = qt[k];
    in.values = q;
    in.packing = k == 0 ? PG_PACK_BITS : PG_PACK_BYTE;
    in.scale_kind = k == 4 ? PG_SCALE_SCALAR_F32 : PG_SCALE_ROW_F16;
    in.row_scales = rs;
    in.scalar_scale = 0.0123f;
    in.order = k == 1 || k == 3 ? PG_ORDER_COLS : PG_ORDER_ROWS;
    in.perm = k == 2 || k == 3 ? PG_PERM_STORED : PG_PERM_NONE;
    in.row_perm = perm;
    in.lqer_rank = rank;
    in.lqer_a = qa;
    in.lqer_a_scale = pg_f32_to_f16(0.05f);
    in.lqer_b = qb;
    in.lqer_b_scales = sb;
    cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s: %s", t[i].name, e.msg);
    free(q);
    free(rs);
    free(perm);
    free(qa);
    free(qb);
    free(sb);
  }
  cr_assert_geq(turn, 6, "every kind of matrix occurs");
  cr_assert_eq(pg_writer_to_mem(w, buf, len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
  free(t);
}

Test(load, device_parameters_are_the_host_paths) {
  uint8_t *buf;
  size_t len;
  build(&buf, &len, NULL);
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "q.pgz", NULL, &e), PG_OK, "%s", e.msg);
  pg_model *ref, *m;
  cr_assert_eq(pg_model_load_artifact(&ref, a, &e), PG_OK, "%s", e.msg);
  pg_engine *dev = dev_open();
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, dev, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_model_engine(m), dev);
  const float *x = pg_model_params_read(m), *y = pg_model_params_read(ref);
  cr_assert(x && y);
  cr_assert_eq(pg_engine_sync(dev, &e), PG_OK, "%s", e.msg);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < pg_model_param_count(m); i++)
    if (memcmp(&x[i], &y[i], 4) && !bad++) first = i;
  cr_assert_eq(bad, 0, "%zu parameters differ from the host path's, the first %zu (%a, not %a)",
               bad, first, bad ? (double)x[first] : 0.0, bad ? (double)y[first] : 0.0);
  pg_model_free(m);
  dev_close(dev);
  pg_model_free(ref);
  pg_artifact_free(a);
  free(buf);
}

Test(load, device_refusal_reads_as_the_host_paths) {
  uint8_t *buf;
  size_t len;
  build(&buf, &len, "blocks.1.mlp.fc.weight");
  pg_artifact *a;
  pg_err e0, e1;
  cr_assert_eq(pg_artifact_open_mem(&a, buf, len, "q.pgz", NULL, &e0), PG_OK, "%s", e0.msg);
  pg_model *m = NULL;
  const int want = pg_model_load_artifact(&m, a, &e0);
  cr_assert_eq(want, PG_E_ARG, "%s", e0.msg);
  cr_assert(strstr(e0.msg, "blocks.1.mlp.fc.weight"), "%s", e0.msg);
  pg_engine *dev = dev_open();
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, dev, &e1), want, "%s", e1.msg);
  cr_assert_null(m);
  cr_assert_str_eq(e1.msg, e0.msg);
  dev_close(dev);
  pg_artifact_free(a);
  free(buf);
}

int main(int argc, char *argv[]) { return gpu_main(argc, argv, !standin()); }
