/* test_preset.c: the records' presets (spec/presets/, src/model/pg_preset.c). Every preset of the
 * catalogue parses, names its own file, has an arch and a protocol when supported (a reason when
 * not); every arch it holds validates and runs a forward pass (plain windows on a synthetic
 * stream) on a random-weight model after shrink_arch, which changes only sizes and keeps every
 * feature. Also the reader's refusals: an unknown or malformed name, unknown keys, a follows
 * inside the arch, a supported preset without a protocol. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_preset.h"
#include "pg_protocol_text.h"
#include "pg_safetensors.h"
#include "pgfiller.h"
#include "pgevalfx.h"

#define V 64

/* The catalogue of the source tree, whatever the environment says. */
static void use_source_presets(void) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set (run through meson test)");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/spec/presets", root);
  setenv("PGOLF_PRESETS", dir, 1);
}

/* The documented size reduction: vocabulary 64, d 32, 4/2 heads of 8, MLP 64, rope ≤ 4 dims, the
 * NTK length 16, the document cap 24, 97 bigram buckets of 16 (or d without a projection), VE
 * width 8; layers, lists, gates, smear, parallel lanes and the readout are kept as they are. */
static void shrink_arch(pg_arch *a) {
  a->vocab_size = V;
  a->dim = 32;
  a->heads = 4;
  a->kv_heads = 2;
  a->head_dim = 8;
  a->mlp.hidden = 64;
  if (a->attention.rope_dims) a->attention.rope_dims = 4;
  if (a->attention.rope_ntk_len) a->attention.rope_ntk_len = 16;
  if (a->attention.doc_max_len) a->attention.doc_max_len = 24;
  if (a->embeddings.bigram_buckets) a->embeddings.bigram_buckets = 97;
  a->embeddings.bigram_dim = a->embeddings.bigram_proj ? 16 : a->dim;
  a->embeddings.ve_dim = 8;
  if (a->attention.gate_window > a->dim) a->attention.gate_window = a->dim;
  if (a->embeddings.smear_window > a->dim) a->embeddings.smear_window = a->dim;
}

Test(preset, every_preset_loads_and_runs_a_forward_pass) {
  use_source_presets();
  char **names;
  size_t n;
  pg_err err;
  cr_assert_eq(pg_preset_names(&names, &n, &err), PG_OK, "%s", err.msg);
  cr_assert_geq(n, 40, "only %zu presets", n);
  static pg_preset p;
  size_t supported = 0;
  const uint64_t ntok = 257; /* T = 256: whole windows of 64 */
  pg_spm_tables t = pgfx_tables(V);
  pg_val val = {.tok = pgfx_stream(ntok, V, 5), .n = ntok, .tables = &t};
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(pg_preset_load(&p, names[i], &err), PG_OK, "%s", err.msg);
    cr_assert_str_eq(p.name, names[i]);
    cr_assert(p.val_bpb > 0.5 && p.val_bpb < 2, "%s: val_bpb %g", p.name, p.val_bpb);
    cr_assert(!strncmp(p.record, p.date, 10), "%s: record '%s' and date '%s' disagree", p.name,
              p.record, p.date);
    if (p.protocol[0]) { /* the options pgverify and pglegal read it with */
      pg_protocol pp;
      cr_assert_eq(pg_protocol_from_text(p.protocol, &pp), 0, "%s: protocol \"%s\" does not read",
                   p.name, p.protocol);
    }
    if (p.supported) {
      supported++;
      cr_assert(p.has_arch && p.protocol[0], "%s", p.name);
      cr_assert_eq(pg_preset_require_supported(&p, &err), PG_OK);
    } else {
      cr_assert(p.reason[0], "%s", p.name);
      cr_assert_eq(pg_preset_require_supported(&p, &err), PG_E_ARG);
      cr_assert(strstr(err.msg, "not supported") && !strchr(err.msg, '\n'), "%s", err.msg);
    }
    if (!p.has_arch) continue;
    cr_assert(p.arch.follows.set && !strcmp(p.arch.follows.record, p.record), "%s", p.name);
    pg_arch a = p.arch;
    shrink_arch(&a);
    cr_assert_eq(pg_arch_validate(&a, p.name, &err), PG_OK, "%s (reduced): %s", p.name, err.msg);
    pg_model *m;
    cr_assert_eq(pg_model_create(&m, &a, &err), PG_OK, "%s: %s", p.name, err.msg);
    pg_model_init_random(m, 7, 0.5);
    pg_protocol pr;
    pg_protocol_defaults(&pr, PG_PROTO_PLAIN);
    pr.seq_len = 64;
    pr.report_tokens = 128;
    pg_engine e = pg_engine_cpu(1);
    pg_eval_result res;
    cr_assert_eq(pg_eval_run(m, &e, &val, &pr, NULL, &res, &err), PG_OK, "%s: %s", p.name,
                 err.msg);
    cr_assert_eq(res.scored, 256, "%s", p.name);
    cr_assert(isfinite(res.val_bpb) && res.val_bpb > 0, "%s: val_bpb %g", p.name, res.val_bpb);
    pg_eval_result_free(&res);
    pg_model_free(m);
  }
  cr_assert_geq(supported, n / 2, "%zu of %zu supported", supported, n);
  free((int32_t *)val.tok);
  pgfx_tables_free(&t);
  pg_preset_names_free(names, n);
}

Test(preset, unknown_or_bad_name_is_one_line) {
  use_source_presets();
  static pg_preset p;
  pg_err err;
  cr_assert_eq(pg_preset_load(&p, "no-such-record", &err), PG_E_NOT_FOUND);
  cr_assert(strstr(err.msg, "no-such-record") && !strchr(err.msg, '\n'), "%s", err.msg);
  cr_assert_eq(pg_preset_load(&p, "../spec/presets/x", &err), PG_E_ARG);
  cr_assert_eq(pg_preset_load(&p, "", &err), PG_E_ARG);
  cr_assert_eq(pg_preset_load(&p, ".hidden", &err), PG_E_ARG);
  setenv("PGOLF_PRESETS", "/nonexistent/presets", 1);
  cr_assert_eq(pg_preset_load(&p, "2026-03-17-naive-baseline", &err), PG_E_NOT_FOUND);
  cr_assert(strstr(err.msg, "PGOLF_PRESETS"), "%s", err.msg);
}

static int parse(const char *text, const char *name, pg_err *err) {
  static pg_preset p;
  return pg_preset_parse(&p, text, strlen(text), "t.json", name, err);
}

#define HEAD "{\"preset\": \"x\", \"record\": \"2026-01-01_X\", \"date\": \"2026-01-01\", "

Test(preset, parse_rules) {
  pg_err err;
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}, "
                          "\"protocol\": \"--protocol plain\"}", "x", &err), PG_OK, "%s", err.msg);
  /* the file's name must be the preset's */
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}, "
                          "\"protocol\": \"--protocol plain\"}", "y", &err), PG_E_ARG);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}, "
                          "\"protocol\": \"--protocol plain\", \"extra\": 1}", NULL, &err),
               PG_E_ARG);
  cr_assert(strstr(err.msg, "extra: unknown key"), "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}}", NULL, &err),
               PG_E_ARG);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": false}", NULL, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "reason"), "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": false, \"reason\": \"r\"}", NULL,
                     &err), PG_OK, "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"protocol\": \"--protocol "
                          "plain\", \"arch\": {\"follows\": {\"record\": \"r\"}}}", NULL, &err),
               PG_E_ARG);
  cr_assert(strstr(err.msg, "arch.follows"), "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"protocol\": \"--protocol "
                          "plain\", \"arch\": {\"layers\": 0}}", NULL, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "t.json: arch") && strstr(err.msg, "layers"), "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": \"1.2\", \"supported\": true}", NULL, &err),
               PG_E_META_TYPE);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": false, \"reason\": \"r\", "
                          "\"quirks\": [\"a\\nb\"]}", NULL, &err), PG_E_ARG);
  /* the record's parameter count must be the arch's (the baseline's 17,059,912 here) */
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}, \"params\": "
                          "17059912, \"protocol\": \"--protocol plain\"}", NULL, &err), PG_OK,
               "%s", err.msg);
  cr_assert_eq(parse(HEAD "\"val_bpb\": 1.2, \"supported\": true, \"arch\": {}, \"params\": "
                          "17059913, \"protocol\": \"--protocol plain\"}", NULL, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "params: the record has 17059913"), "%s", err.msg);
  cr_assert_eq(parse("[1]", NULL, &err), PG_E_META_TYPE);
  cr_assert_eq(parse("{", NULL, &err), PG_E_JSON);
}

/* A safetensors file holding the tensors of the arch JSON text (small values), no metadata. */
static void write_weights(const char *path, const char *arch_json) {
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, arch_json, strlen(arch_json), "w", &err), PG_OK, "%s", err.msg);
  pg_arch_tensor *t;
  size_t n;
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &err), PG_OK);
  pg_st_writer *w;
  cr_assert_eq(pg_st_writer_create(&w, &err), PG_OK);
  float **vals = calloc(n, sizeof *vals); /* the writer reads them when it writes */
  for (size_t i = 0; i < n; i++) {
    const uint64_t k = pg_arch_tensor_numel(&t[i]);
    float *v = vals[i] = calloc(k, sizeof *v);
    for (uint64_t j = 0; j < k; j++) v[j] = 0.01f * (float)(j % 7);
    cr_assert_eq(pg_st_writer_add(w, t[i].name, PG_ST_F32, (uint32_t)t[i].ndim, t[i].shape, v,
                                  k * sizeof *v, &err), PG_OK, "%s", err.msg);
  }
  cr_assert_eq(pg_st_writer_write(w, path, &err), PG_OK, "%s", err.msg);
  pg_st_writer_free(w);
  for (size_t i = 0; i < n; i++) free(vals[i]);
  free(vals);
  free(t);
}

/* Weights without an arch.json: the options their tensors show are compared with the arch, and
 * every difference is named with both values. */
Test(preset, check_weights_names_the_contradicting_options) {
  char path[] = "/tmp/pg_preset_wXXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  close(fd);
  const char *w = "{\"vocab_size\": 64, \"dim\": 32, \"layers\": 3, \"heads\": 4, \"kv_heads\": 2, "
                  "\"mlp\": {\"hidden\": 64}, \"embeddings\": {\"smear\": \"v1\"}}";
  write_weights(path, w);
  pg_arch a;
  pg_err err;
  cr_assert_eq(pg_arch_parse(&a, w, strlen(w), "a", &err), PG_OK);
  cr_assert_eq(pg_preset_check_weights(&a, path, &err), PG_OK, "%s", err.msg);
  const char *b = "{\"vocab_size\": 64, \"dim\": 32, \"layers\": 2, \"heads\": 4, \"kv_heads\": 2, "
                  "\"mlp\": {\"hidden\": 96}, \"attention\": {\"gate\": \"sparse_sigmoid\"}, "
                  "\"structure\": {\"skips\": \"gated\"}}";
  cr_assert_eq(pg_arch_parse(&a, b, strlen(b), "b", &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_preset_check_weights(&a, path, &err), PG_E_ARG);
  cr_assert(strstr(err.msg, "layers 2/3") && strstr(err.msg, "mlp.hidden 96/64") &&
                strstr(err.msg, "smear") && strstr(err.msg, "gated") &&
                strstr(err.msg, "dense_sigmoid or sparse_sigmoid 1/0") &&
                !strchr(err.msg, '\n'),
            "%s", err.msg);
  unlink(path);
}

/* The presets of the records that spec/examples/ also follows describe the same models. */
Test(preset, agree_with_the_examples) {
  use_source_presets();
  const char *pairs[][2] = {{"2026-03-17-naive-baseline", "baseline"},
                            {"2026-04-27-sp8192-lqer-sparsegate-bossmearfix", "r12"},
                            {"2026-04-29-smeargate-bosfix-3seed", "r12b"}};
  static pg_preset p;
  pg_err err;
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    cr_assert_eq(pg_preset_load(&p, pairs[i][0], &err), PG_OK, "%s", err.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/spec/examples/%s.json", getenv("PG_SOURCE_ROOT"),
             pairs[i][1]);
    pg_arch ex;
    cr_assert_eq(pg_arch_load(&ex, path, &err), PG_OK, "%s", err.msg);
    char diff[512];
    cr_assert_eq(pg_arch_diff(&p.arch, &ex, diff, sizeof diff), 0, "%s vs %s: %s", pairs[i][0],
                 pairs[i][1], diff);
    cr_assert_str_eq(p.record, ex.follows.record);
  }
}

/* A few hundred kilobytes of "{}," would cost the parser tens of megabytes: refused before it
 * runs, at the value that goes over the cap, in one line. */
Test(preset, json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("arch", PG_JSON_DOC_VALUES - 2, &len);
  static pg_preset p;
  pg_err err;
  cr_assert_eq(pg_preset_parse(&p, t, len, "t.json", "x", &err), PG_E_LIMIT, "%s", err.msg);
  cr_assert(strstr(err.msg, "t.json: offset ") == err.msg && strstr(err.msg, "JSON values") &&
                !strchr(err.msg, '\n'),
            "%s", err.msg);
  free(t);
}
