/* test_import.c: pgimport (src/submit/pg_import.h) on record-format files that
 * tests/import/make_fixtures.py made with torch: every dequantized value equal, bit for bit, to
 * what the format's dequantizer gave in torch (through a CRC-32 of each tensor's fp32 bytes),
 * the integers and fp16 scales copied exactly, the byte-shuffled brotli variant, refusals with
 * one line, and the tools end to end (pgimport, pgunpack --check, pgverify). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <string.h>
#include <zlib.h>

#include "pg_codec.h"
#include "pg_container.h"
#include "pg_import.h"
#include "pg_io.h"
#include "pg_lrzip.h"
#include "pg_torchzip.h"
#include "pglayout.h"
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

/* ---- the per-group layout (PGRP): faults, each built from the golden's streams ---- */

#define PGRP_N 9
typedef struct pgrp_file {
  uint8_t *b;
  size_t n;
  const uint8_t *st[PGRP_N];
  uint32_t len[PGRP_N];
} pgrp_file;

static void pgrp_load(pgrp_file *p) {
  pg_err err = {0};
  cr_assert_eq(pg_file_read_all(src("tests/import/rec_pgrp_lrzip.ptz"), &p->b, &p->n, 1u << 24,
                                &err), PG_OK, "%s", err.msg);
  cr_assert(p->n > 8 + 4 * PGRP_N && memcmp(p->b, "PGRP", 4) == 0);
  size_t off = 8 + 4 * PGRP_N;
  for (int i = 0; i < PGRP_N; i++) {
    memcpy(&p->len[i], p->b + 8 + 4 * i, 4);
    p->st[i] = p->b + off;
    off += p->len[i];
  }
  cr_assert_eq(off, p->n);
}

/* PGRP, the count, the lengths, the streams; `extra` bytes after them. */
static void pgrp_write(const char *path, const pgrp_file *p, uint32_t count, size_t extra) {
  size_t n = 8 + 4 * PGRP_N + extra;
  for (int i = 0; i < PGRP_N; i++) n += p->len[i];
  uint8_t *b = calloc(n, 1), *q = b + 8 + 4 * PGRP_N;
  memcpy(b, "PGRP", 4);
  memcpy(b + 4, &count, 4);
  for (int i = 0; i < PGRP_N; i++) {
    memcpy(b + 8 + 4 * i, &p->len[i], 4);
    memcpy(q, p->st[i], p->len[i]);
    q += p->len[i];
  }
  pg_err err = {0};
  cr_assert_eq(pg_file_write_atomic(path, b, n, &err), PG_OK, "%s", err.msg);
  free(b);
}

static void pgrp_refused(const pgrp_file *p, uint32_t count, size_t extra, int status,
                         const char *words) {
  char in[128];
  snprintf(in, sizeof in, "%s/bad.ptz", tmp);
  pgrp_write(in, p, count, extra);
  pg_import_opts o = {.codec = ZSTD3, .have_codec = 1,
                      .arch_path = src("tests/import/rec_pgrp_arch.json")};
  refused(in, &o, status, words);
}

/* The golden, written back unchanged, imports: the faults below differ from it in one thing. */
Test(import, pgrp_rewritten_golden_imports) {
  pgrp_file p;
  pgrp_load(&p);
  char in[128], out[128];
  snprintf(in, sizeof in, "%s/ok.ptz", tmp);
  snprintf(out, sizeof out, "%s/ok.pgz", tmp);
  pgrp_write(in, &p, PGRP_N, 0);
  pg_import_opts o = {.codec = ZSTD3, .have_codec = 1,
                      .arch_path = src("tests/import/rec_pgrp_arch.json")};
  pg_import_report r;
  pg_err err = {0};
  cr_assert_eq(pg_import_run(in, out, &o, &r, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(r.format, "pgrp");
  cr_assert_str_eq(r.outer, "pgrp");
  /* --format names it; another format does not apply */
  o.format = "wm";
  refused(in, &o, PG_E_ARG, "the file is the per-group layout (PGRP)");
  o.format = "pgrp";
  cr_assert_eq(pg_import_run(in, out, &o, &r, &err), PG_OK, "%s", err.msg);
  refused(src("tests/import/base_int8.ptz"), &o, PG_E_ARG, "does not begin with PGRP");
  free(p.b);
}

Test(import, pgrp_table_faults_are_refused_before_use) {
  pgrp_file p;
  pgrp_load(&p);
  char in[128];
  snprintf(in, sizeof in, "%s/t.ptz", tmp);
  pg_import_opts o = {0};
  pg_err err = {0};
  /* the table cut after three lengths */
  cr_assert_eq(pg_file_write_atomic(in, p.b, 8 + 12, &err), PG_OK);
  refused(in, &o, PG_E_TRUNCATED, "inside the table of 9 lengths");
  cr_assert_eq(pg_file_write_atomic(in, "PGRP\x09", 5, &err), PG_OK);
  refused(in, &o, PG_E_TRUNCATED, "before the stream count");
  /* a count the table cannot hold */
  pgrp_refused(&p, 0x7fffffffu, 0, PG_E_LIMIT, "2147483647 streams, 9 expected");
  pgrp_refused(&p, 2, 0, PG_E_MALFORMED, "2 streams, 9 expected");
  /* a length past the end (the sum is taken in 64 bits) */
  pgrp_write(in, &p, PGRP_N, 0);
  uint8_t *b;
  size_t n;
  cr_assert_eq(pg_file_read_all(in, &b, &n, 1u << 24, &err), PG_OK);
  uint32_t big = 0xFFFFFFF0u;
  memcpy(b + 8 + 4 * 3, &big, 4);
  cr_assert_eq(pg_file_write_atomic(in, b, n, &err), PG_OK);
  free(b);
  refused(in, &o, PG_E_TRUNCATED, "PGRP stream 3: 4294967280 bytes from offset");
  /* bytes after the last stream */
  pgrp_refused(&p, PGRP_N, 3, PG_E_TRAILING, "3 bytes after the last stream");
  /* no remainder */
  p.len[7] = 0;
  pgrp_refused(&p, PGRP_N, 0, PG_E_NOT_FOUND, "the remainder stream");
  free(p.b);
}

/* How many entries a folder holds (. and .. aside). */
static int entries(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s' | wc -l)\" -eq 0", dir);
  return system(cmd) == 0 ? 0 : 1;
}

Test(import, pgrp_stream_faults_name_the_group) {
  pgrp_file p;
  pgrp_load(&p);
  /* lrzip's private folders go under TMPDIR, and none is left behind, whatever happened */
  char lz[128];
  snprintf(lz, sizeof lz, "%s/lz", tmp);
  cr_assert_eq(mkdir(lz, 0700), 0);
  setenv("TMPDIR", lz, 1);
  /* a group stream lrzip rejects: a valid header, then noise */
  static const uint8_t junk[] = "LRZI\x00\x06\x40\x00\x00\x00\x00\x00\x00\x00"
                                "not a zpaq stream, nothing lrzip can decode";
  const uint8_t *st0 = p.st[0];
  uint32_t l0 = p.len[0];
  p.st[0] = junk;
  p.len[0] = sizeof junk - 1;
  pgrp_refused(&p, PGRP_N, 0, PG_E_DECOMPRESS, "PGRP group _tok_emb.weight.q: lrzip rejected");
  /* no header at all */
  p.st[0] = (const uint8_t *)"plain bytes";
  p.len[0] = 11;
  pgrp_refused(&p, PGRP_N, 0, PG_E_DECOMPRESS, "not an lrzip stream");
  p.st[0] = st0;
  p.len[0] = l0;
  /* the program missing */
  setenv("PGOLF_LRZIP", "/nonexistent/lrzip", 1);
  pgrp_refused(&p, PGRP_N, 0, PG_E_UNSUPPORTED, "lrzip not found");
  unsetenv("PGOLF_LRZIP");
  /* c_k's stream where c_q's belongs: the manifest's shapes disagree with the decoded size */
  const uint8_t *s1 = p.st[1], *s2 = p.st[2];
  uint32_t l1 = p.len[1], l2 = p.len[2];
  p.st[1] = s2, p.len[1] = l2, p.st[2] = s1, p.len[2] = l1;
  pgrp_refused(&p, PGRP_N, 0, PG_E_SIZE_MISMATCH, "PGRP group attn.c_k.weight.q");
  p.st[1] = s1, p.len[1] = l1, p.st[2] = s2, p.len[2] = l2;
  /* an empty group stream the manifest still lists */
  p.len[6] = 0;
  pgrp_refused(&p, PGRP_N, 0, PG_E_SIZE_MISMATCH, "lists 4 tensors, the stream is empty");
  cr_assert_eq(entries(lz), 0, "a temporary folder of lrzip's was left in %s", lz);
  unsetenv("TMPDIR");
  free(p.b);
}

/* The lrzip program may write no more than the stream declares: it runs with a file-size limit
 * of the declared size + 1, so a stream that decodes to more (here a stand-in program that
 * writes 64 MiB whatever it is given) is stopped at that byte, not after filling the disk, and
 * refused. Before the limit the whole output was written, then found too large. */
Test(import, lrzip_output_beyond_the_declared_size_is_stopped_while_written) {
  char prog[128], lz[128];
  snprintf(prog, sizeof prog, "%s/fake-lrzip", tmp);
  snprintf(lz, sizeof lz, "%s/lz", tmp);
  cr_assert_eq(mkdir(lz, 0700), 0);
  FILE *f = fopen(prog, "w");
  cr_assert_not_null(f);
  /* argv: -d -q -f -o OUT IN; the exit status tells whether the whole output was written */
  fputs("#!/bin/sh\nhead -c 67108864 /dev/zero > \"$5\" || exit 3\nexit 0\n", f);
  fclose(f);
  cr_assert_eq(chmod(prog, 0700), 0);
  setenv("PGOLF_LRZIP", prog, 1);
  setenv("TMPDIR", lz, 1);
  /* LRZI 0.6, 4096 bytes declared */
  static const uint8_t stream[] = "LRZI\x00\x06\x00\x10\x00\x00\x00\x00\x00\x00 payload";
  uint8_t *out = NULL;
  size_t n = 0;
  pg_err err = {0};
  int rc = pg_lrzip_decode(stream, sizeof stream - 1, "g.pgrp", "group q", 1u << 30, &out, &n,
                           &err);
  unsetenv("PGOLF_LRZIP");
  unsetenv("TMPDIR");
  cr_assert_eq(rc, PG_E_DECOMPRESS, "%s: %s", pg_status_name(rc), err.msg);
  cr_assert_null(out);
  cr_assert_not_null(strstr(err.msg, "g.pgrp: group q: lrzip rejected the stream"), "%s",
                     err.msg);
  cr_assert_null(strchr(err.msg, '\n'));
  cr_assert_eq(entries(lz), 0, "a temporary folder of lrzip's was left in %s", lz);
}

Test(import, pgrp_a_row_order_that_is_not_a_permutation_is_refused) {
  pgrp_file p;
  pgrp_load(&p);
  /* tok_emb's 1024 rows, then c_q's 128 and mlp.fc's 640 in each of 4 layers */
  size_t rows = 1024 + 4 * 128 + 4 * 640;
  uint8_t *perm = malloc(2 * rows), *orig = malloc(2 * rows), *z = NULL;
  size_t zn = 0;
  pg_err err = {0};
  cr_assert_eq(pg_codec_decompress(PG_CODEC_BROTLI, p.st[8], p.len[8], perm, 2 * rows, "perms",
                                   0, &err), PG_OK, "%s", err.msg);
  memcpy(orig, perm, 2 * rows);
  memcpy(perm + 2 * 1030, perm + 2 * 1025, 2); /* c_q of layer 0: a row twice */
  cr_assert_eq(pg_codec_compress(PG_CODEC_BROTLI, 11, 24, perm, 2 * rows, &z, &zn, &err), PG_OK);
  const uint8_t *s8 = p.st[8];
  uint32_t l8 = p.len[8];
  p.st[8] = z;
  p.len[8] = (uint32_t)zn;
  pgrp_refused(&p, PGRP_N, 0, PG_E_MALFORMED,
               "the one of blocks.0.attn.c_q.weight.q is not a permutation of its 128 rows "
               "(entry 6 is");
  free(z);
  /* out of range */
  memcpy(perm, orig, 2 * rows);
  perm[2 * 1025] = 200, perm[2 * 1025 + 1] = 0;
  cr_assert_eq(pg_codec_compress(PG_CODEC_BROTLI, 11, 24, perm, 2 * rows, &z, &zn, &err), PG_OK);
  p.st[8] = z;
  p.len[8] = (uint32_t)zn;
  pgrp_refused(&p, PGRP_N, 0, PG_E_MALFORMED, "out of range");
  free(z);
  /* one entry short */
  cr_assert_eq(pg_codec_compress(PG_CODEC_BROTLI, 11, 24, orig, 2 * rows - 2, &z, &zn, &err),
               PG_OK);
  p.st[8] = z;
  p.len[8] = (uint32_t)zn;
  pgrp_refused(&p, PGRP_N, 0, PG_E_SIZE_MISMATCH, "PGRP row permutations");
  free(z);
  p.st[8] = s8;
  p.len[8] = l8;
  free(perm);
  free(orig);
  free(p.b);
}

/* pgimport writes quant layout 2 in container version 2 by default, as pgpack does: every int
 * matrix transposed, their rows in similarity order where that is smaller (here it is); layout
 * 1 and container 1 on request; all of them read back to the same tensors. */
Test(import, layout_2_by_default_and_layout_1_on_request_read_the_same) {
  const char *in = src("tests/import/rec_lqer_brotli.ptz");
  char p[4][128];
  const int lay[4] = {0, 1, 2, 1}, cont[4] = {0, 0, 1, 1};
  for (int k = 0; k < 4; k++) {
    snprintf(p[k], sizeof p[k], "%s/l%d.pgz", tmp, k);
    pg_import_opts o = {.codec = ZSTD3, .have_codec = 1, .layout = lay[k], .container = cont[k],
                        .arch_path = src("tests/import/rec_lqer_arch.json")};
    pg_err err = {0};
    cr_assert_eq(pg_import_run(in, p[k], &o, NULL, &err), PG_OK, "%s", err.msg);
    pglayout_counts c = pglayout_of(p[k]);
    cr_assert_eq(c.container, cont[k] ? cont[k] : PG_CONTAINER_V2);
    cr_assert_eq(c.quant_layout, lay[k] == 1 ? 1 : 2, "file %d", k);
    cr_assert_gt(c.ints, 2);
    if (lay[k] == 1) {
      cr_assert_eq(c.transposed + c.permuted, 0);
    } else { /* every int tensor here is a matrix */
      cr_assert(c.transposed == c.ints && c.permuted == c.transposed,
                "%u ints, %u transposed, %u permuted", c.ints, c.transposed, c.permuted);
    }
    if (k) pglayout_same_tensors(p[0], p[k]);
  }
  /* the tool's options; a layout it does not know is a usage error */
  const char *b = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(b);
  char out[128];
  snprintf(out, sizeof out, "%s/t.pgz", tmp);
  cr_assert_eq(run_tool("%s/tools/pgimport %s --arch %s --layout 1 --container 1 -o %s "
                        "--codec zstd-3 > /dev/null", b, in,
                        src("tests/import/rec_lqer_arch.json"), out), 0);
  cr_assert_eq(run_tool("cmp -s %s %s", out, p[3]), 0, "the tool writes what the library does");
  cr_assert_eq(run_tool("%s/tools/pgimport %s --layout 3 -o %s 2> /dev/null", b, in, out), 2);
  cr_assert_eq(run_tool("%s/tools/pgimport %s --container 0 -o %s 2> /dev/null", b, in, out), 2);
}
