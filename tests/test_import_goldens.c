/* test_import_goldens.c: pgimport on goldens made by the challenge records' OWN export code
 * (tests/import/make_record_goldens.py ran the records' quantizers, compressors and
 * dequantizers; tests/import/README.md says which files at which commit). Every imported tensor
 * must equal, bit for bit, the record's own dequantizer run with fp32 as the output dtype, and,
 * rounded to the dtype the record's dequantizer returns (bf16 for the embeddings), the record's
 * own output; pgverify scores the import exactly as the dequantized weights. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "pg_container.h"
#include "pg_half.h"
#include "pg_import.h"
#include "pgtest.h"

static char tmp[64];
static void setup(void) { pgtest_mkdtemp(tmp, "pgimportgold"); }
static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(import_goldens, .init = setup, .fini = teardown);

static const char *src(const char *rel) {
  static char p[8][1024];
  static int k;
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  k = (k + 1) % 8;
  snprintf(p[k], sizeof p[k], "%s/%s", root, rel);
  return p[k];
}

static uLong crc_of(const float *f, uint64_t n) {
  return crc32(0L, (const Bytef *)f, (uInt)(n * sizeof *f));
}

/* The record's final cast: fp32 → `dtype` (round to nearest even, as torch's .to) → fp32. */
static void cast_as_record(float *f, uint64_t n, const char *dtype) {
  if (strcmp(dtype, "bfloat16") == 0)
    for (uint64_t i = 0; i < n; i++) f[i] = pg_bf16_to_f32(pg_f32_to_bf16(f[i]));
  else if (strcmp(dtype, "float16") == 0)
    for (uint64_t i = 0; i < n; i++) f[i] = pg_f16_to_f32(pg_f32_to_f16(f[i]));
  else
    cr_assert_str_eq(dtype, "float32", "unexpected dtype %s in rec_expect.json", dtype);
}

/* Imports tests/import/`fixture` (with `arch` when given) to `out` and checks every tensor
 * against rec_expect.json. */
static void golden(const char *fixture, const char *arch, const char *out) {
  char in[128];
  snprintf(in, sizeof in, "tests/import/%s", fixture);
  pg_import_opts o = {.codec = {PG_CODEC_ZSTD, 3, 0, 0, 0}, .have_codec = 1, .arch_path = arch};
  pg_import_report r;
  pg_err err = {0};
  cr_assert_eq(pg_import_run(src(in), out, &o, &r, &err), PG_OK, "%s", err.msg);

  json_error_t je;
  json_t *all = json_load_file(src("tests/import/rec_expect.json"), 0, &je);
  cr_assert_not_null(all, "rec_expect.json: %s", je.text);
  json_t *want = json_object_get(json_object_get(all, fixture), "tensors");
  cr_assert_not_null(want, "no %s in rec_expect.json", fixture);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_artifact_tensor_count(a), json_object_size(want));
  const char *name;
  json_t *v;
  json_object_foreach(want, name, v) {
    int64_t i = pg_artifact_tensor_find(a, name);
    cr_assert_geq(i, 0, "%s: no tensor %s", fixture, name);
    const pg_tensor_info *t = pg_artifact_tensor(a, (uint32_t)i);
    cr_assert_eq(t->numel, (uint64_t)json_integer_value(json_object_get(v, "numel")));
    float *f = malloc(t->numel * sizeof *f);
    cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)i, f, &err), PG_OK, "%s", err.msg);
    cr_assert_eq(crc_of(f, t->numel), (uLong)json_integer_value(json_object_get(v, "crc32_f32")),
                 "%s: %s differs from the record's dequantizer (fp32)", fixture, name);
    cast_as_record(f, t->numel, json_string_value(json_object_get(v, "dtype")));
    cr_assert_eq(crc_of(f, t->numel), (uLong)json_integer_value(json_object_get(v, "crc32")),
                 "%s: %s, cast as the record casts, differs from the record's output", fixture,
                 name);
    free(f);
  }
  cr_assert_eq(pg_artifact_check(a, &err), PG_OK, "%s", err.msg);
  pg_artifact_free(a);
  json_decref(all);
}

Test(import_goldens, baseline_int8_zlib_equals_records_dequantizer) {
  char out[128];
  snprintf(out, sizeof out, "%s/b.pgz", tmp);
  golden("rec_base_int8.ptz", NULL, out);
}

Test(import_goldens, valcalib_gptq_int6_xz_equals_records_dequantizer) {
  char out[128];
  snprintf(out, sizeof out, "%s/g.pgz", tmp);
  golden("rec_gptq_int6.ptz", src("tests/import/rec_gptq_arch.json"), out);
}

Test(import_goldens, gptq_lite_int6_zstd_equals_records_dequantizer) {
  char out[128];
  snprintf(out, sizeof out, "%s/z.pgz", tmp);
  golden("rec_lite_zstd.ptz", src("tests/import/rec_lite_arch.json"), out);
}

/* The LQER record's brotli + byte-shuffle export: GPTQ int6/int7, asymmetric LQER on three
 * matrices, int8 row gates. Bit for bit: the record's fp32 matmul of its rank-4 factors agreed
 * with the artifact's fp64 sum on every element (rec_expect.json's
 * lqer_max_ulps_from_fp64_sum: 0), so no tolerance is needed here. */
Test(import_goldens, lqer_asym_brotli_bshf_equals_records_dequantizer) {
  char out[128];
  snprintf(out, sizeof out, "%s/l.pgz", tmp);
  golden("rec_lqer_brotli.ptz", src("tests/import/rec_lqer_arch.json"), out);
  pg_artifact *a;
  pg_err err = {0};
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &err), PG_OK, "%s", err.msg);
  unsigned lqer = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++)
    lqer += pg_artifact_tensor(a, i)->lqer_rank == 4;
  cr_assert_eq(lqer, 3, "the record's top-3 LQER matrices are the artifact's LQER tensors");
  pg_artifact_free(a);
}

/* The LQER record's per-group layout (PGRP), written by its own _serialize_pergroup with the real
 * lrzip: its int8 groups (tok_emb and the six per-layer kinds, three of them row-sorted)
 * transposed and lrzip'd, the rest a brotli torch.save. Read back row-major, every tensor equals
 * the record's _deserialize_pergroup + dequantize_mixed bit for bit. Needs the lrzip program. */
Test(import_goldens, pgrp_lrzip_equals_records_dequantizer) {
  char out[128];
  snprintf(out, sizeof out, "%s/p.pgz", tmp);
  golden("rec_pgrp_lrzip.ptz", src("tests/import/rec_pgrp_arch.json"), out);
  pg_artifact *a;
  pg_err err = {0};
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &err), PG_OK, "%s", err.msg);
  unsigned lqer = 0, quant = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    lqer += pg_artifact_tensor(a, i)->lqer_rank == 4;
    quant += pg_artifact_tensor(a, i)->qtype != PG_QTYPE_F32 &&
             pg_artifact_tensor(a, i)->qtype != PG_QTYPE_F16 &&
             pg_artifact_tensor(a, i)->qtype != PG_QTYPE_BF16;
  }
  cr_assert_eq(lqer, 3, "the record's top-3 LQER matrices are the artifact's LQER tensors");
  /* tok_emb, and 6 matrices in each of 4 layers, plus the int8 row gates of the remainder */
  cr_assert_geq(quant, 25, "every group's tensors are quantized (%u)", quant);
  pg_artifact_free(a);
}

static const char *val_bpb(const char *path) {
  static char v[64];
  char line[1024];
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  v[0] = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "val_bpb ", 8) == 0) {
      const char *p = line + 8;
      while (*p == ' ') p++;
      snprintf(v, sizeof v, "%.*s", (int)strcspn(p, " \n"), p);
    }
  fclose(f);
  cr_assert(v[0], "no val_bpb line in %s", path);
  return v;
}

/* pgimport --tokenizer, pgverify on the import, and pgverify on its dequantized weights
 * (pgunpack --safetensors): the same figure. Needs the prepared data/ folder (KJV shards,
 * vocabulary 1024 as the goldens'). */
static void scores_as_dequantized(const char *fixture, const char *arch_opt) {
  const char *b = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(b);
  const char *tok = src("data/kjv/kjv_1024_bpe.model");
  if (access(tok, R_OK) != 0) {
    cr_log_warn("no data/kjv: the pgverify step is skipped");
    return;
  }
  char in[128], cmd[4096], lp[128], bpb[64];
  snprintf(in, sizeof in, "tests/import/%s", fixture);
  snprintf(lp, sizeof lp, "%s/log", tmp);
  const char *val = src("data/kjv/shards/fineweb_val_*.bin");
  snprintf(cmd, sizeof cmd,
           "%s/tools/pgimport %s %s --tokenizer %s -o %s/t.pgz --codec zstd-3 > %s 2>&1 && "
           "%s/tools/pgverify %s/t.pgz --val '%s' --max-tokens 600 --protocol plain "
           "--seq-len 64 --threads 1 --no-receipt -q > %s 2>&1",
           b, src(in), arch_opt, tok, tmp, lp, b, tmp, val, lp);
  cr_assert_eq(system(cmd), 0, "pgimport or pgverify failed on %s", fixture);
  snprintf(bpb, sizeof bpb, "%s", val_bpb(lp));
  snprintf(cmd, sizeof cmd,
           "%s/tools/pgunpack %s/t.pgz --safetensors %s/w.safetensors > %s 2>&1 && "
           "%s/tools/pgverify %s/w.safetensors --tokenizer %s --val '%s' --max-tokens 600 "
           "--protocol plain --seq-len 64 --threads 1 --no-receipt -q > %s 2>&1",
           b, tmp, tmp, lp, b, tmp, tok, val, lp);
  cr_assert_eq(system(cmd), 0, "pgverify failed on the dequantized weights of %s", fixture);
  cr_assert_str_eq(val_bpb(lp), bpb);
}

Test(import_goldens, baseline_scores_as_its_dequantized_weights) {
  scores_as_dequantized("rec_base_int8.ptz", "");
}

Test(import_goldens, valcalib_gptq_scores_as_its_dequantized_weights) {
  char opt[1100];
  snprintf(opt, sizeof opt, "--arch %s", src("tests/import/rec_gptq_arch.json"));
  scores_as_dequantized("rec_gptq_int6.ptz", opt);
}

Test(import_goldens, lqer_scores_as_its_dequantized_weights) {
  char opt[1100];
  snprintf(opt, sizeof opt, "--arch %s", src("tests/import/rec_lqer_arch.json"));
  scores_as_dequantized("rec_lqer_brotli.ptz", opt);
}

Test(import_goldens, gptq_lite_scores_as_its_dequantized_weights) {
  char opt[1100];
  snprintf(opt, sizeof opt, "--arch %s", src("tests/import/rec_lite_arch.json"));
  scores_as_dequantized("rec_lite_zstd.ptz", opt);
}

Test(import_goldens, pgrp_scores_as_its_dequantized_weights) {
  char opt[1100];
  snprintf(opt, sizeof opt, "--arch %s", src("tests/import/rec_pgrp_arch.json"));
  scores_as_dequantized("rec_pgrp_lrzip.ptz", opt);
}
