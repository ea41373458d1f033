/* pgunpack: open an artifact up: list its sections, metadata and tensors; check every checksum,
 * the coverage rules and every value range; extract the tokenizer and code files; write every
 * tensor dequantized to safetensors for use from PyTorch.
 *
 * Exit status: 0 success, 1 --check found the artifact invalid, 2 error (spec/cli.md). */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_extract.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_weights.h"
#include "pg_safetensors.h"
#include "tool.h"

static const char *PROG = "pgunpack";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgunpack [options] ARTIFACT.pgz\n"
          "\n"
          "Without options, list the artifact's sections, metadata and tensors.\n"
          "\n"
          "options:\n"
          "  --check               decode every section, verify every checksum, the coverage\n"
          "                        rules, every value range, and that the tensors are exactly\n"
          "                        those of arch.json; exit 1 if anything is wrong\n"
          "  --extract DIR         write the tokenizer, the code files and metadata.json to DIR\n"
          "                        (a new or empty folder: all of them or nothing)\n"
          "  --safetensors OUT     write every tensor dequantized to OUT (a .safetensors file)\n"
          "  --dtype f32|bf16      element type for --safetensors (default f32)\n"
          "  --json                list as JSON on stdout\n"
          "  -h, --help            this text\n"
          "\n"
          "exit status: 0 success, 1 --check found the artifact invalid, 2 error\n");
}

static void shape_str(const pg_tensor_info *t, char *buf, size_t cap) {
  size_t o = 0;
  buf[0] = '\0';
  for (unsigned d = 0; d < t->ndim && o < cap; d++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? "x" : "", (unsigned long long)t->dims[d]);
  if (t->ndim == 0) snprintf(buf, cap, "scalar");
}

static int list(pg_artifact *a, int as_json) {
  char b1[32], b2[32];
  if (as_json) {
    json_t *o = json_object();
    json_object_set_new(o, "artifact", pg_json_cstr(pg_artifact_name(a)));
    json_object_set_new(o, "file_bytes", json_integer((json_int_t)pg_artifact_file_size(a)));
    json_object_set_new(o, "container_version", json_integer(pg_artifact_container_version(a)));
    json_object_set_new(o, "quant_layout_version",
                        json_integer(pg_artifact_quant_layout_version(a)));
    json_t *secs = json_array();
    for (uint32_t i = 0; i < pg_artifact_section_count(a); i++) {
      const pg_section *s = pg_artifact_section(a, i);
      char c[48];
      pg_codec_spec_format(&s->codec, c, sizeof c);
      json_t *so = json_object();
      json_object_set_new(so, "index", json_integer(i));
      json_object_set_new(so, "kind", json_string(pg_section_kind_name(s->kind)));
      json_object_set_new(so, "codec", json_string(c));
      json_object_set_new(so, "offset", json_integer((json_int_t)s->offset));
      json_object_set_new(so, "stored_bytes", json_integer((json_int_t)s->stored_size));
      json_object_set_new(so, "raw_bytes", json_integer((json_int_t)s->raw_size));
      char h[24];
      if (pg_artifact_container_version(a) == PG_CONTAINER_V1) {
        snprintf(h, sizeof h, "%016llx", (unsigned long long)s->stored_xxh64);
        json_object_set_new(so, "stored_xxh64", json_string(h));
        snprintf(h, sizeof h, "%016llx", (unsigned long long)s->raw_xxh64);
        json_object_set_new(so, "raw_xxh64", json_string(h));
      } else { /* v2: one checksum covers the file; a section keeps 32 bits of its raw one */
        snprintf(h, sizeof h, "%08llx", (unsigned long long)s->raw_xxh64);
        json_object_set_new(so, "raw_check", json_string(h));
      }
      json_array_append_new(secs, so);
    }
    json_object_set_new(o, "sections", secs);
    json_object_set_new(o, "metadata", pg_meta_object_json(a));
    json_t *ts = json_array();
    for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
      const pg_tensor_info *t = pg_artifact_tensor(a, i);
      json_t *to = json_object();
      json_object_set_new(to, "name", pg_json_cstr(t->name));
      json_object_set_new(to, "qtype", json_string(pg_qtype_name(t->qtype)));
      json_t *shape = json_array();
      for (unsigned d = 0; d < t->ndim; d++)
        json_array_append_new(shape, json_integer((json_int_t)t->dims[d]));
      json_object_set_new(to, "shape", shape);
      json_object_set_new(to, "packing", json_string(t->packing ? "bits" : "byte"));
      json_object_set_new(to, "scales", json_string(t->scale_kind == PG_SCALE_ROW_F16 ? "row_f16"
                                                    : t->scale_kind == PG_SCALE_SCALAR_F32
                                                        ? "scalar_f32"
                                                        : "none"));
      if (pg_qtype_is_int(t->qtype)) {
        json_object_set_new(to, "qmin", json_integer(t->qmin));
        json_object_set_new(to, "qmax", json_integer(t->qmax));
      }
      json_object_set_new(to, "lqer_rank", json_integer(t->lqer_rank));
      json_t *parts = json_array();
      for (int r = 0; r < PG_PART_COUNT; r++) {
        if (!t->parts[r].present) continue;
        json_t *p = json_object();
        json_object_set_new(p, "role", json_string(pg_part_role_name(r)));
        json_object_set_new(p, "section", json_integer(t->parts[r].section));
        json_object_set_new(p, "offset", json_integer((json_int_t)t->parts[r].offset));
        json_object_set_new(p, "bytes", json_integer((json_int_t)t->parts[r].size));
        json_array_append_new(parts, p);
      }
      json_object_set_new(to, "parts", parts);
      json_array_append_new(ts, to);
    }
    json_object_set_new(o, "tensors", ts);
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
    return PG_EXIT_OK;
  }
  printf("artifact  %s  %s bytes, container v%u, quant layout v%u\n", pg_safe(pg_artifact_name(a)),
         pg_fmt_u64(b1, pg_artifact_file_size(a)), pg_artifact_container_version(a),
         pg_artifact_quant_layout_version(a));
  printf("\nsections\n  %-4s %-10s %-16s %12s %14s %14s\n", "#", "kind", "codec", "offset",
         "stored", "raw");
  for (uint32_t i = 0; i < pg_artifact_section_count(a); i++) {
    const pg_section *s = pg_artifact_section(a, i);
    char c[48];
    pg_codec_spec_format(&s->codec, c, sizeof c);
    printf("  %-4u %-10s %-16s %12llu %14s %14s\n", i, pg_section_kind_name(s->kind), c,
           (unsigned long long)s->offset, pg_fmt_u64(b1, s->stored_size),
           pg_fmt_u64(b2, s->raw_size));
  }
  printf("\nmetadata (%u)\n", pg_artifact_meta_count(a));
  for (uint32_t i = 0; i < pg_artifact_meta_count(a); i++) {
    const pg_meta_entry *m = pg_artifact_meta(a, i);
    printf("  %-28.*s ", (int)m->key_len, m->key);
    json_t *v = pg_meta_value_json(m);
    char *txt = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (m->type == PG_META_F64 && !isfinite(m->f64)) { /* a number, not the string of --json */
      free(txt);
      txt = strdup(isnan(m->f64) ? "nan" : m->f64 > 0 ? "inf" : "-inf");
    }
    size_t n = txt ? strlen(txt) : 0;
    if (n > 90) {
      pg_print_safe(stdout, txt, 87);
      printf("... (%zu chars)\n", n);
    } else {
      pg_print_safe(stdout, txt ? txt : "", n);
      putchar('\n');
    }
    free(txt);
    json_decref(v);
  }
  for (uint32_t i = 0; i < pg_artifact_code_count(a); i++) {
    const char *name;
    size_t nl, bl;
    pg_err err;
    if (pg_artifact_code(a, i, &name, &nl, NULL, &bl, NULL, &err) != PG_OK)
      return pg_tool_fail(PROG, &err);
    printf("%s", i == 0 ? "\ncode files\n" : "");
    printf("  ");
    pg_print_safe(stdout, name, nl);
    printf("  %s bytes\n", pg_fmt_u64(b1, bl));
  }
  if (pg_artifact_tokenizer_section(a) >= 0)
    printf("\ntokenizer  section %lld, %s bytes\n", (long long)pg_artifact_tokenizer_section(a),
           pg_fmt_u64(
               b1, pg_artifact_section(a, (uint32_t)pg_artifact_tokenizer_section(a))->raw_size));
  printf("\ntensors (%u)\n  %-40s %-6s %-16s %-5s %-10s %-10s %s\n", pg_artifact_tensor_count(a),
         "name", "qtype", "shape", "pack", "range", "scales", "lqer");
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    char shape[64], range[16] = "-";
    shape_str(t, shape, sizeof shape);
    if (pg_qtype_is_int(t->qtype)) snprintf(range, sizeof range, "%d..%d", t->qmin, t->qmax);
    printf("  %-40s %-6s %-16.16s %-5s %-10s %-10s %u\n", pg_safe_cut(t->name, 40),
           pg_qtype_name(t->qtype),
           shape, t->packing ? "bits" : "byte", range,
           t->scale_kind == PG_SCALE_ROW_F16      ? "row-f16"
           : t->scale_kind == PG_SCALE_SCALAR_F32 ? "scalar-f32"
                                                  : "-",
           t->lqer_rank);
  }
  return PG_EXIT_OK;
}

/* The checks and the write are the library's (pg_extract.h); this prints what was written. */
static int extract(pg_artifact *a, const char *dir) {
  pg_err err;
  pg_extract_plan plan;
  if (pg_extract_plan_build(a, &plan, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  int rc = pg_extract_write(&plan, dir, &err);
  for (size_t i = 0; rc == PG_OK && i < plan.n; i++) {
    printf("wrote %s/", dir);
    pg_print_safe(stdout, plan.files[i].name, strlen(plan.files[i].name));
    printf(" (%zu bytes)\n", plan.files[i].len);
  }
  pg_extract_plan_free(&plan);
  return rc == PG_OK ? PG_EXIT_OK : pg_tool_fail(PROG, &err);
}

static int to_safetensors(pg_artifact *a, const char *out, int bf16) {
  pg_err err;
  double t0 = pg_now();
  if (pg_weights_export_safetensors(a, out, bf16, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  printf("wrote %s: %u tensors as %s in %.2f s\n", pg_safe(out), pg_artifact_tensor_count(a),
         bf16 ? "bf16" : "f32", pg_now() - t0);
  return PG_EXIT_OK;
}

/* Under --check an invalid artifact (a limit of spec/format.md §7 included) is the verdict; a
 * missing or unreadable file, or running out of memory, says nothing about the artifact. */
static int check_exit(int rc) {
  return rc == PG_E_NOT_FOUND || rc == PG_E_IO || rc == PG_E_NOMEM ? PG_EXIT_ERROR
                                                                   : PG_EXIT_VERDICT;
}

int main(int argc, char **argv) {
  int as_json = 0, check = 0, bf16 = 0;
  const char *extract_dir = NULL, *st_out = NULL;
  enum { OPT_CHECK = 256, OPT_EXTRACT, OPT_ST, OPT_DTYPE, OPT_JSON };
  static const struct option opts[] = {{"check", no_argument, 0, OPT_CHECK},
                                       {"extract", required_argument, 0, OPT_EXTRACT},
                                       {"safetensors", required_argument, 0, OPT_ST},
                                       {"dtype", required_argument, 0, OPT_DTYPE},
                                       {"json", no_argument, 0, OPT_JSON},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_CHECK: check = 1; break;
    case OPT_EXTRACT: extract_dir = optarg; break;
    case OPT_ST: st_out = optarg; break;
    case OPT_DTYPE:
      if (!strcmp(optarg, "bf16"))
        bf16 = 1;
      else if (strcmp(optarg, "f32") != 0)
        return pg_tool_usage_error(PROG, "--dtype is f32 or bf16, not '%s'", optarg);
      break;
    case OPT_JSON: as_json = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind != argc - 1) return pg_tool_usage_error(PROG, "expected one ARTIFACT");
  const char *path = argv[optind];
  const char *outs[] = {st_out, extract_dir};
  if (pg_tool_check_outputs(PROG, outs, 2, &path, 1) != PG_EXIT_OK) return PG_EXIT_ERROR;
  pg_artifact *a;
  pg_err err;
  int rc = pg_artifact_open(&a, path, NULL, &err);
  if (rc != PG_OK) {
    pg_tool_fail(PROG, &err);
    return check ? check_exit(rc) : PG_EXIT_ERROR;
  }
  int status = PG_EXIT_OK;
  if (check) {
    double t0 = pg_now();
    /* an arch.json that does not describe the tensors makes the artifact invalid: pgverify
     * would refuse it (spec/load.md §3) */
    const int has_arch = pg_artifact_meta_find(a, "arch.json") != NULL;
    if ((rc = pg_artifact_check(a, &err)) != PG_OK) {
      pg_tool_fail(PROG, &err);
      pg_artifact_free(a);
      return check_exit(rc);
    }
    if (has_arch && (rc = pg_weights_check_artifact(a, &err)) != PG_OK) {
      pg_tool_fail(PROG, &err);
      pg_artifact_free(a);
      /* a missing or misshapen tensor is a fault of the artifact; only memory is not */
      return rc == PG_E_NOMEM ? PG_EXIT_ERROR : PG_EXIT_VERDICT;
    }
    uint64_t raw = 0;
    for (uint32_t i = 0; i < pg_artifact_section_count(a); i++)
      raw += pg_artifact_section(a, i)->raw_size;
    char b1[32], b2[32];
    if (as_json) {
      json_t *o = json_pack("{s:o, s:b, s:I, s:I, s:I, s:I, s:b}", "artifact",
                            pg_json_cstr(path), "valid", 1,
                            "sections", (json_int_t)pg_artifact_section_count(a), "tensors",
                            (json_int_t)pg_artifact_tensor_count(a), "file_bytes",
                            (json_int_t)pg_artifact_file_size(a), "raw_bytes", (json_int_t)raw,
                            "arch_matches_tensors", has_arch);
      json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
      fputc('\n', stdout);
      json_decref(o);
    } else {
      printf("%s: valid: %u sections tile %s bytes exactly; every checksum, part and value range "
             "verified%s (%s raw bytes decoded in %.3f s)\n",
             pg_safe(path), pg_artifact_section_count(a), pg_fmt_u64(b1, pg_artifact_file_size(a)),
             has_arch ? "; the tensors are exactly arch.json's" : "; no arch.json",
             pg_fmt_u64(b2, raw), pg_now() - t0);
    }
  }
  /* the safetensors file first: inside DIR it makes DIR non-empty, which --extract refuses */
  if (st_out && status == PG_EXIT_OK) status = to_safetensors(a, st_out, bf16);
  if (extract_dir && status == PG_EXIT_OK) status = extract(a, extract_dir);
  if (!check && !extract_dir && !st_out) status = list(a, as_json);
  pg_artifact_free(a);
  return status;
}
