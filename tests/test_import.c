/* test_import.c: pgimport (src/submit/pg_import.h) on record-format files that
 * tests/import/make_fixtures.py made with torch: every dequantized value equal, bit for bit, to
 * what the format's dequantizer gave in torch (through a CRC-32 of each tensor's fp32 bytes),
 * the integers and fp16 scales copied exactly, the byte-shuffled brotli variant, refusals with
 * one line, and the tools end to end (pgimport, pgunpack --check, pgverify). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <zlib.h>

#include "pg_codec.h"
#include "pg_container.h"
#include "pg_import.h"
#include "pg_io.h"
#include "pg_torchzip.h"
#include "pgtest.h"

static char tmp[64];
static void setup(void) { pgtest_mkdtemp(tmp, "pgimport"); }
static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(import, .init = setup, .fini = teardown);

static const char *src(const char *rel) {
  static char p[8][1024];
  static int k;
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  k = (k + 1) % 8;
  snprintf(p[k], sizeof p[k], "%s/%s", root, rel);
  return p[k];
}

static const pg_codec_spec ZSTD3 = {PG_CODEC_ZSTD, 3, 0, 0, 0};

static void import_ok(const char *in, const char *out, const char *arch) {
  pg_import_opts o = {.codec = ZSTD3, .have_codec = 1, .arch_path = arch};
  pg_import_report r;
  pg_err err = {0};
  cr_assert_eq(pg_import_run(in, out, &o, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_gt(r.out_bytes, 0);
}

/* Every tensor of the artifact dequantizes to the values expect.json digests for `key`. */
static void check_values(const char *art, const char *key) {
  json_error_t je;
  json_t *all = json_load_file(src("tests/import/expect.json"), 0, &je);
  cr_assert_not_null(all, "expect.json: %s", je.text);
  json_t *want = json_object_get(all, key);
  cr_assert_not_null(want, "no %s in expect.json", key);
  pg_artifact *a;
  pg_err err = {0};
  cr_assert_eq(pg_artifact_open(&a, art, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_artifact_tensor_count(a), json_object_size(want));
  const char *name;
  json_t *v;
  json_object_foreach(want, name, v) {
    int64_t i = pg_artifact_tensor_find(a, name);
    cr_assert_geq(i, 0, "%s: no tensor %s", key, name);
    const pg_tensor_info *t = pg_artifact_tensor(a, (uint32_t)i);
    cr_assert_eq(t->numel, (uint64_t)json_integer_value(json_object_get(v, "numel")));
    float *f = malloc(t->numel * sizeof *f);
    cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)i, f, &err), PG_OK, "%s", err.msg);
    uLong crc = crc32(0L, (const Bytef *)f, (uInt)(t->numel * sizeof *f));
    cr_assert_eq(crc, (uLong)json_integer_value(json_object_get(v, "crc32")),
                 "%s: tensor %s dequantizes to other values than the format's dequantizer", key,
                 name);
    free(f);
  }
  cr_assert_eq(pg_artifact_check(a, &err), PG_OK, "%s", err.msg);
  pg_artifact_free(a);
  json_decref(all);
}

static void roundtrip_arch(const char *fixture, const char *arch) {
  char in[128], out[128];
  snprintf(in, sizeof in, "tests/import/%s", fixture);
  snprintf(out, sizeof out, "%s/out.pgz", tmp);
  import_ok(src(in), out, arch);
  check_values(out, fixture);
}
static void roundtrip(const char *fixture) { roundtrip_arch(fixture, NULL); }

Test(import, baseline_int8_zlib_values_bit_exact) { roundtrip("base_int8.ptz"); }
Test(import, wm_int6_int8_xz_values_bit_exact) { roundtrip("wm_int6.ptz"); }
Test(import, wm_int6_int8_zstd_values_bit_exact) { roundtrip("wm_int6_zstd.ptz"); }
Test(import, gptq_int6_bshf_xz_values_bit_exact) { roundtrip("gptq_int6.ptz"); }

/* The LQER record's notes: int8 row gates and asymmetric LQER factors, which become the
 * artifact's LQER parts (the expected values follow pgolf's LQER sum, spec/format.md §5). */
Test(import, lqer_asym_and_gates_values_bit_exact) {
  roundtrip_arch("lqer_int6.ptz", src("tests/import/lqer_arch.json"));
  char out[128];
  snprintf(out, sizeof out, "%s/out.pgz", tmp);
  pg_artifact *a;
  pg_err err = {0};
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &err), PG_OK, "%s", err.msg);
  const pg_tensor_info *e =
      pg_artifact_tensor(a, (uint32_t)pg_artifact_tensor_find(a, "tok_emb.weight"));
  const pg_tensor_info *g = pg_artifact_tensor(
      a, (uint32_t)pg_artifact_tensor_find(a, "blocks.1.attn.attn_gate_w"));
  cr_assert(e->lqer_rank == 4 && e->qtype == PG_QTYPE_INT8 && e->qmin == -127);
  cr_assert(g->qtype == PG_QTYPE_INT8 && g->scale_kind == PG_SCALE_ROW_F16 && g->lqer_rank == 0);
  pg_artifact_free(a);
}

/* The record's own integers and fp16 scale bits, as stored, are the artifact's. */
Test(import, integers_and_scales_are_copied) {
  const char *in = src("tests/import/base_int8.ptz");
  char out[128];
  snprintf(out, sizeof out, "%s/b.pgz", tmp);
  import_ok(in, out, src("tests/import/base_arch.json"));
  uint8_t *raw, *zip;
  size_t n, zn;
  pg_err err = {0};
  cr_assert_eq(pg_file_read_all(in, &raw, &n, 1 << 24, &err), PG_OK);
  cr_assert_eq(pg_import_decode(raw, n, in, 1 << 26, &zip, &zn, NULL, &err), PG_OK, "%s",
               err.msg);
  pg_tz *z;
  cr_assert_eq(pg_tz_open(&z, zip, zn, in, &err), PG_OK, "%s", err.msg);
  const pg_tz_value *q = pg_tz_get(pg_tz_root(z), "quantized"),
                    *s = pg_tz_get(pg_tz_root(z), "scales");
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(q->n, 5);
  for (size_t k = 0; k < q->n; k++) {
    const char *name = q->items[2 * k]->s;
    const pg_tz_tensor *qt = &q->items[2 * k + 1]->t, *st = &pg_tz_get(s, name)->t;
    int64_t i = pg_artifact_tensor_find(a, name);
    cr_assert_geq(i, 0);
    const pg_tensor_info *t = pg_artifact_tensor(a, (uint32_t)i);
    cr_assert(t->qtype == PG_QTYPE_INT8 && t->qmin == -127 && t->qmax == 127);
    int8_t *v = malloc(t->numel);
    cr_assert_eq(pg_artifact_tensor_values(a, (uint32_t)i, v, &err), PG_OK, "%s", err.msg);
    cr_assert_eq(memcmp(v, qt->data, qt->nbytes), 0, "%s: integers differ", name);
    free(v);
    const uint8_t *sb;
    cr_assert_eq(pg_artifact_tensor_scales(a, (uint32_t)i, &sb, &err), PG_OK, "%s", err.msg);
    cr_assert_eq(memcmp(sb, st->data, st->nbytes), 0, "%s: scale bits differ", name);
  }
  pg_artifact_free(a);
  pg_tz_free(z);
  free(zip);
  free(raw);
}

/* SDC's brotli path: the same torch.save bytes, byte-shuffled (BSHF, stride 2) and brotli'd. */
Test(import, bshf_brotli_values_bit_exact) {
  const char *in = src("tests/import/gptq_int6.ptz");
  uint8_t *raw, *zip, *enc;
  size_t n, zn, en;
  pg_err err = {0};
  cr_assert_eq(pg_file_read_all(in, &raw, &n, 1 << 24, &err), PG_OK);
  pg_import_report r = {0};
  cr_assert_eq(pg_import_decode(raw, n, in, 1 << 26, &zip, &zn, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(r.outer, "xz+bshf2");
  uint8_t *sh = malloc(zn + 5);
  memcpy(sh, "BSHF\x02", 5);
  pg_shuffle(zip, zn, 2, sh + 5);
  cr_assert_eq(pg_codec_compress(PG_CODEC_BROTLI, 5, 22, sh, zn + 5, &enc, &en, &err), PG_OK);
  char p[128], out[128];
  snprintf(p, sizeof p, "%s/g.ptz", tmp);
  snprintf(out, sizeof out, "%s/g.pgz", tmp);
  cr_assert_eq(pg_file_write_atomic(p, enc, en, &err), PG_OK);
  pg_import_opts o = {.codec = ZSTD3, .have_codec = 1};
  cr_assert_eq(pg_import_run(p, out, &o, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(r.outer, "brotli+bshf2");
  check_values(out, "gptq_int6.ptz");
  free(raw);
  free(zip);
  free(sh);
  free(enc);
}

static void refused(const char *in, const pg_import_opts *o, int status, const char *words) {
  char out[128];
  snprintf(out, sizeof out, "%s/r.pgz", tmp);
  pg_err err = {0};
  int rc = pg_import_run(in, out, o, NULL, &err);
  cr_assert_eq(rc, status, "status %s, expected %s: %s", pg_status_name(rc),
               pg_status_name(status), err.msg);
  cr_assert_not_null(strstr(err.msg, words), "\"%s\" lacks \"%s\"", err.msg, words);
  cr_assert_null(strchr(err.msg, '\n'));
  cr_assert_neq(access(out, F_OK), 0, "no output after a refusal");
}

Test(import, unknown_inputs_are_refused_naming_what_was_expected) {
  pg_import_opts o = {0};
  /* a torch.save file of another shape */
  refused(src("tests/torchzip/plain.pt"), &o, PG_E_UNSUPPORTED,
          "expected a dict with __quant_format__ int8_clean_per_row_v1 (int8-per-row) or the "
          "dicts w and m (wm); found a dict with keys sd, meta, list, tag");
  /* bytes that no codec decodes */
  refused(src("tests/import/base_arch.json"), &o, PG_E_MAGIC,
          "expected a zlib, zstd, xz or brotli stream or a torch.save ZIP; found bytes 7b 0a");
  /* the LQER record's per-group layout, recognised and refused */
  char pg[128];
  snprintf(pg, sizeof pg, "%s/p.ptz", tmp);
  pg_err err = {0};
  cr_assert_eq(pg_file_write_atomic(pg, "PGRP\0\0\0\0", 8, &err), PG_OK);
  refused(pg, &o, PG_E_UNSUPPORTED, "the per-group layout (PGRP");
  /* a hostile pickle inside a valid compression */
  refused(src("tests/torchzip/evil_system.pt"), &o, PG_E_UNSUPPORTED, "posix.system refused");
  /* a forced format the file does not hold */
  o.format = "wm";
  refused(src("tests/import/base_int8.ptz"), &o, PG_E_MALFORMED,
          "format wm: expected the dicts w and m");
  o.format = "nope";
  refused(src("tests/import/base_int8.ptz"), &o, PG_E_ARG, "--format nope: unknown");
}

Test(import, an_arch_the_weights_contradict_is_refused) {
  char arch[128];
  snprintf(arch, sizeof arch, "%s/a.json", tmp);
  const char *text = "{\"vocab_size\": 1024, \"dim\": 128, \"layers\": 3, \"heads\": 2, "
                     "\"kv_heads\": 1, \"head_dim\": 64, \"mlp\": {\"hidden\": 520}}";
  pg_err err = {0};
  cr_assert_eq(pg_file_write_atomic(arch, text, strlen(text), &err), PG_OK);
  pg_import_opts o = {.arch_path = arch};
  refused(src("tests/import/base_int8.ptz"), &o, PG_E_NOT_FOUND,
          "tensor blocks.2.attn.c_q.weight, which the arch implies, is not in the record's file");
}

/* The value on the report line "KEY   VALUE" of the file at path (a static copy). */
static const char *line_value(const char *path, const char *key) {
  static char v[64];
  char line[1024];
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f);
  v[0] = 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, strlen(key)) == 0 && line[strlen(key)] == ' ') {
      const char *p = line + strlen(key);
      while (*p == ' ') p++;
      snprintf(v, sizeof v, "%.*s", (int)strcspn(p, " \n"), p);
    }
  fclose(f);
  cr_assert(v[0], "no %s line in %s", key, path);
  return v;
}

/* The commands end to end: pgimport, pgunpack --check, and a short pgverify run on the KJV
 * shards (vocabulary 1024, as the fixture's), which needs the prepared data/ folder. */
Test(import, pgimport_pgunpack_pgverify) {
  const char *b = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(b);
  char cmd[4096], out[128];
  snprintf(out, sizeof out, "%s/t.pgz", tmp);
  snprintf(cmd, sizeof cmd, "%s/tools/pgimport %s -o %s --codec zstd-3 > %s/log 2>&1", b,
           src("tests/import/base_int8.ptz"), out, tmp);
  cr_assert_eq(system(cmd), 0, "pgimport failed");
  char log[4096] = "", lp[128];
  snprintf(lp, sizeof lp, "%s/log", tmp);
  FILE *f = fopen(lp, "r");
  cr_assert_not_null(f);
  log[fread(log, 1, sizeof log - 1, f)] = 0;
  fclose(f);
  cr_assert_not_null(strstr(log, "(zlib over torch.save, format int8-per-row, tag "
                                  "int8_clean_per_row_v1): 22 tensors (5 quantized, 17 "
                                  "passthrough), arch derived from the shapes"), "%s", log);
  cr_assert_not_null(strstr(log, "bytes; the record's file: 73,326 bytes ("), "%s", log);
  snprintf(cmd, sizeof cmd, "%s/tools/pgimport %s > %s/log 2>&1", b,
           src("tests/import/base_int8.ptz"), tmp);
  cr_assert_eq(WEXITSTATUS(system(cmd)), 2, "-o is required");
  snprintf(cmd, sizeof cmd, "%s/tools/pgimport %s -o %s > %s/log 2>&1", b,
           src("tests/import/base_int8.ptz"), src("tests/import/base_int8.ptz"), tmp);
  cr_assert_eq(WEXITSTATUS(system(cmd)), 2, "the output may not be the input");
  snprintf(cmd, sizeof cmd, "%s/tools/pgunpack --check %s > %s/log 2>&1", b, out, tmp);
  cr_assert_eq(system(cmd), 0, "pgunpack --check failed on the imported artifact");
  const char *tok = src("data/kjv/kjv_1024_bpe.model");
  if (access(tok, R_OK) != 0) {
    cr_log_warn("no data/kjv: the pgverify step is skipped");
    return;
  }
  /* the tokenizer carried in the artifact, as a submission holds it */
  snprintf(cmd, sizeof cmd,
           "%s/tools/pgimport %s --tokenizer %s -o %s --codec zstd-3 > %s/log 2>&1", b,
           src("tests/import/base_int8.ptz"), tok, out, tmp);
  cr_assert_eq(system(cmd), 0, "pgimport --tokenizer failed");
  snprintf(cmd, sizeof cmd,
           "%s/tools/pgverify %s --val '%s' --max-tokens 600 --protocol plain "
           "--seq-len 64 --threads 1 --no-receipt -q > %s/log 2>&1",
           b, out, src("data/kjv/shards/fineweb_val_*.bin"), tmp);
  cr_assert_eq(system(cmd), 0, "pgverify failed on the imported artifact");
  char bpb[64];
  snprintf(bpb, sizeof bpb, "%s", line_value(lp, "val_bpb"));
  /* the same figure from the dequantized weights (which the CRC tests above tie to the
   * record format's own dequantizer) */
  snprintf(cmd, sizeof cmd,
           "%s/tools/pgunpack %s --safetensors %s/w.safetensors > %s/log 2>&1 && "
           "%s/tools/pgverify %s/w.safetensors --tokenizer %s --val '%s' --max-tokens 600 "
           "--protocol plain --seq-len 64 --threads 1 --no-receipt -q > %s/log 2>&1",
           b, out, tmp, tmp, b, tmp, tok, src("data/kjv/shards/fineweb_val_*.bin"), tmp);
  cr_assert_eq(system(cmd), 0, "pgverify failed on the dequantized weights");
  cr_assert_str_eq(line_value(lp, "val_bpb"), bpb);
}

/* pgimport --preset NAME (spec/import.md): the arch, the record's folder and its protocol come
 * from the preset; a preset whose arch the weights contradict, an unknown name and --preset with
 * --arch are refused. The presets folder is one written here (PGOLF_PRESETS), holding a preset
 * of the fixture's own arch and one of the baseline record's. */
static const char *TINY_PRESET =
    "{\"preset\": \"tiny\", \"record\": \"2026-01-01_Tiny\", \"date\": \"2026-01-01\", "
    "\"val_bpb\": 3.5, \"supported\": true, \"arch\": {\"vocab_size\": 1024, \"dim\": 128, "
    "\"layers\": 2, \"heads\": 2, \"kv_heads\": 1, \"head_dim\": 64, \"attention\": "
    "{\"q_gain\": 1.5, \"rope_base\": 10000.0}, \"mlp\": {\"hidden\": 520, \"act\": \"relu2\"}, "
    "\"structure\": {\"skips\": \"plain\"}, \"head\": {\"tied\": true, \"softcap\": 30.0}}, "
    "\"protocol\": \"--protocol plain --seq-len 64\", \"inferred\": [], \"quirks\": []}\n";

static int run_tool(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(import, pgimport_preset_gives_arch_record_and_protocol) {
  const char *b = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(b);
  char dir[200], p[260], out[200], log[200];
  snprintf(dir, sizeof dir, "%s/presets", tmp);
  cr_assert_eq(pg_mkdir_p(dir, NULL), PG_OK);
  snprintf(p, sizeof p, "%s/tiny.json", dir);
  cr_assert_eq(pg_file_write_atomic(p, TINY_PRESET, strlen(TINY_PRESET), NULL), PG_OK);
  char *base = NULL;
  size_t blen = 0;
  cr_assert_eq(pg_file_read_all(src("spec/presets/2026-03-17-naive-baseline.json"),
                                (uint8_t **)&base, &blen, 1 << 20, NULL), PG_OK);
  snprintf(p, sizeof p, "%s/2026-03-17-naive-baseline.json", dir);
  cr_assert_eq(pg_file_write_atomic(p, base, blen, NULL), PG_OK);
  free(base);
  snprintf(out, sizeof out, "%s/p.pgz", tmp);
  snprintf(log, sizeof log, "%s/plog", tmp);
  const char *in = src("tests/import/base_int8.ptz");
  cr_assert_eq(run_tool("PGOLF_PRESETS=%s %s/tools/pgimport %s --preset tiny -o %s > %s 2>&1",
                        dir, b, in, out, log), 0, "pgimport --preset tiny failed");
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open(&a, out, NULL, &e), PG_OK, "%s", e.msg);
  const char *keys[] = {"provenance.record", "provenance.protocol"};
  const char *want[] = {"2026-01-01_Tiny", "--protocol plain --seq-len 64"};
  for (int k = 0; k < 2; k++) {
    const pg_meta_entry *v = pg_artifact_meta_find(a, keys[k]);
    cr_assert(v && v->type == PG_META_STR, "%s missing", keys[k]);
    cr_assert(v->count == strlen(want[k]) && !memcmp(v->str, want[k], v->count), "%s", keys[k]);
  }
  pg_artifact_free(a);
  /* the baseline record's arch (9 layers, d 512) is not the fixture's */
  cr_assert_eq(run_tool("PGOLF_PRESETS=%s %s/tools/pgimport %s --preset 2026-03-17-naive-baseline "
                        "-o %s/q.pgz > %s 2>&1", dir, b, in, tmp, log), 2);
  cr_assert_eq(run_tool("PGOLF_PRESETS=%s %s/tools/pgimport %s --preset nope -o %s/q.pgz > %s 2>&1",
                        dir, b, in, tmp, log), 2);
  char *l = NULL;
  size_t ll = 0;
  cr_assert_eq(pg_file_read_all(log, (uint8_t **)&l, &ll, 1 << 16, NULL), PG_OK);
  cr_assert(strstr(l, "preset 'nope'"), "%.*s", (int)ll, l);
  free(l);
  cr_assert_eq(run_tool("PGOLF_PRESETS=%s %s/tools/pgimport %s --preset tiny --arch x.json "
                        "-o %s/q.pgz > %s 2>&1", dir, b, in, tmp, log), 2);
}
