/* pgsize: the byte-budget report of an artifact, or of a challenge record folder.
 *
 * Exit status: 0 within budget, 1 over budget, 2 on error (spec/cli.md). */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pg_account.h"
#include "pg_container.h"
#include "pg_record.h"
#include "tool.h"

static const char *PROG = "pgsize";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgsize [options] ARTIFACT.pgz\n"
          "       pgsize [options] RECORD_DIR\n"
          "\n"
          "Account for every byte of a pgolf artifact against the byte budget: the total, the\n"
          "challenge's count (code + model bytes; the tokenizer counted unless told otherwise),\n"
          "the headroom, and raw and stored bytes, bits per weight and share per section and per\n"
          "tensor. Given a challenge record folder (train_gpt.py + final_model.*.ptz), count it "
          "the\n"
          "way the challenge does and compare with the claims in its submission.json.\n"
          "\n"
          "options:\n"
          "  --budget N            byte budget (default 16,000,000)\n"
          "  --exclude-tokenizer   do not count the tokenizer section (the challenge's practice:\n"
          "                        its .model files were never counted)\n"
          "  --no-tensors          omit the per-tensor table\n"
          "  --model FILE          record folder: the model file, when there are several\n"
          "  --json                machine-readable report on stdout\n"
          "  -h, --help            this text\n"
          "\n"
          "exit status: 0 within budget, 1 over budget, 2 error\n");
}

static json_t *codec_json(const pg_codec_spec *c) {
  char buf[48];
  pg_codec_spec_format(c, buf, sizeof buf);
  return json_string(buf);
}

static int report_artifact(const char *path, uint64_t budget, int count_tok, int tensors,
                           int as_json) {
  pg_artifact *a;
  pg_err err;
  if (pg_artifact_open(&a, path, NULL, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  pg_account acc;
  if (pg_account_artifact(&acc, a, budget, count_tok, &err) != PG_OK) {
    pg_artifact_free(a);
    return pg_tool_fail(PROG, &err);
  }
  const int over = acc.counted > budget;
  const double total = (double)acc.file_size;
  char b1[32], b2[32], b3[32], b4[32];
  if (as_json) {
    json_t *o = json_object();
    json_object_set_new(o, "artifact", pg_json_cstr(path));
    json_object_set_new(o, "container_version", json_integer(pg_artifact_container_version(a)));
    json_object_set_new(o, "quant_layout_version",
                        json_integer(pg_artifact_quant_layout_version(a)));
    json_object_set_new(o, "file_bytes", json_integer((json_int_t)acc.file_size));
    json_object_set_new(o, "budget", json_integer((json_int_t)budget));
    json_object_set_new(o, "counted_bytes", json_integer((json_int_t)acc.counted));
    json_object_set_new(o, "headroom", json_integer((json_int_t)acc.headroom));
    json_object_set_new(o, "within_budget", json_boolean(!over));
    json_object_set_new(o, "model_bytes", json_integer((json_int_t)acc.model));
    json_object_set_new(o, "code_bytes", json_integer((json_int_t)acc.code_stored));
    json_object_set_new(o, "code_file_bytes", json_integer((json_int_t)acc.code_file_bytes));
    json_object_set_new(o, "tokenizer_bytes", json_integer((json_int_t)acc.tokenizer_stored));
    json_object_set_new(o, "tokenizer_counted", json_boolean(acc.tokenizer_counted));
    json_object_set_new(o, "frame_bytes", json_integer((json_int_t)acc.frame));
    json_t *secs = json_array();
    for (uint32_t i = 0; i < acc.nsections; i++) {
      const pg_account_section *s = &acc.sections[i];
      json_t *so = json_object();
      json_object_set_new(so, "index", json_integer(s->index));
      json_object_set_new(so, "kind", json_string(pg_section_kind_name(s->kind)));
      json_object_set_new(so, "label", pg_json_cstr(s->label));
      json_object_set_new(so, "codec", codec_json(&s->codec));
      json_object_set_new(so, "raw_bytes", json_integer((json_int_t)s->raw));
      json_object_set_new(so, "stored_bytes", json_integer((json_int_t)s->stored));
      json_object_set_new(so, "share", pg_json_num(total > 0 ? (double)s->stored / total : 0));
      json_array_append_new(secs, so);
    }
    json_object_set_new(o, "sections", secs);
    if (tensors) {
      json_t *ts = json_array();
      for (uint32_t i = 0; i < acc.ntensors; i++) {
        const pg_tensor_info *t = pg_artifact_tensor(a, i);
        const pg_account_tensor *at = &acc.tensors[i];
        json_t *to = json_object();
        json_object_set_new(to, "name", pg_json_cstr(t->name));
        json_object_set_new(to, "qtype", json_string(pg_qtype_name(t->qtype)));
        json_t *shape = json_array();
        for (unsigned d = 0; d < t->ndim; d++)
          json_array_append_new(shape, json_integer((json_int_t)t->dims[d]));
        json_object_set_new(to, "shape", shape);
        json_object_set_new(to, "packed", json_boolean(t->packing == PG_PACK_BITS));
        json_object_set_new(to, "lqer_rank", json_integer(t->lqer_rank));
        json_object_set_new(to, "elements", json_integer((json_int_t)at->numel));
        json_object_set_new(to, "raw_bytes", json_integer((json_int_t)at->raw));
        json_object_set_new(to, "stored_bytes_attributed", pg_json_num(at->stored));
        json_object_set_new(to, "bits_per_weight", pg_json_num(at->bits_per_weight));
        json_object_set_new(to, "share", pg_json_num(total > 0 ? at->stored / total : 0));
        json_array_append_new(ts, to);
      }
      json_object_set_new(o, "tensors", ts);
    }
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
  } else {
    printf("artifact   %s  (container v%u, quant layout v%u)\n", pg_safe(path),
           pg_artifact_container_version(a), pg_artifact_quant_layout_version(a));
    printf("file       %s bytes\n", pg_fmt_u64(b1, acc.file_size));
    printf("counted    %s bytes = model %s + code %s", pg_fmt_u64(b1, acc.counted),
           pg_fmt_u64(b2, acc.model), pg_fmt_u64(b3, acc.code_stored));
    if (acc.tokenizer_counted)
      printf(" + tokenizer %s\n", pg_fmt_u64(b4, acc.tokenizer_stored));
    else
      printf("  (tokenizer %s not counted)\n", pg_fmt_u64(b4, acc.tokenizer_stored));
    printf("budget     %s bytes\n", pg_fmt_u64(b1, budget));
    if (over)
      printf("verdict    OVER BUDGET by %s bytes (%.3f%% of the budget)\n",
             pg_fmt_u64(b1, (uint64_t)(-acc.headroom)),
             100.0 * (double)acc.counted / (double)budget);
    else
      printf("verdict    within budget, headroom %s bytes (%.3f%% of the budget used)\n",
             pg_fmt_u64(b1, (uint64_t)acc.headroom),
             budget ? 100.0 * (double)acc.counted / (double)budget : 0.0);
    printf("code       %s bytes of code files, %s stored\n", pg_fmt_u64(b1, acc.code_file_bytes),
           pg_fmt_u64(b2, acc.code_stored));
    printf("\nsections\n");
    printf("  %-4s %-32s %-20s %14s %13s %7s %7s\n", "#", "what", "codec", "raw", "stored", "ratio",
           "share");
    printf("  %-4s %-32s %-20s %14s %13s %7s %6.2f%%\n", "-", "header + table", "-", "-",
           pg_fmt_u64(b1, acc.frame), "", 100.0 * (double)acc.frame / total);
    for (uint32_t i = 0; i < acc.nsections; i++) {
      const pg_account_section *s = &acc.sections[i];
      char cbuf[48];
      pg_codec_spec_format(&s->codec, cbuf, sizeof cbuf);
      printf("  %-4u %-32s %-20s %14s %13s %7.2f %6.2f%%\n", s->index, pg_safe_cut(s->label, 32),
             cbuf,
             pg_fmt_u64(b1, s->raw), pg_fmt_u64(b2, s->stored),
             s->stored ? (double)s->raw / (double)s->stored : 0.0,
             100.0 * (double)s->stored / total);
    }
    uint64_t sum = acc.frame;
    for (uint32_t i = 0; i < acc.nsections; i++) sum += acc.sections[i].stored;
    printf("  %-4s %-32s %-20s %14s %13s\n", "", "sum", "", "", pg_fmt_u64(b1, sum));
    if (tensors && acc.ntensors) {
      printf("\ntensors (%u; stored bytes attributed in proportion to raw bytes within a "
             "section)\n",
             acc.ntensors);
      printf("  %-40s %-5s %-16s %12s %12s %7s %7s\n", "name", "qtype", "shape", "raw",
             "stored~", "bpw", "share");
      for (uint32_t i = 0; i < acc.ntensors; i++) {
        const pg_tensor_info *t = pg_artifact_tensor(a, i);
        const pg_account_tensor *at = &acc.tensors[i];
        char shape[64] = "";
        size_t o = 0;
        for (unsigned d = 0; d < t->ndim && o < sizeof shape; d++)
          o += (size_t)snprintf(shape + o, sizeof shape - o, "%s%llu", d ? "x" : "",
                                (unsigned long long)t->dims[d]);
        if (t->ndim == 0) snprintf(shape, sizeof shape, "scalar");
        char qt[16];
        snprintf(qt, sizeof qt, "%s%s", pg_qtype_name(t->qtype), t->lqer_rank ? "+lq" : "");
        printf("  %-40s %-5s %-16.16s %12s %12s %7.3f %6.2f%%\n", pg_safe_cut(t->name, 40), qt,
               shape,
               pg_fmt_u64(b1, at->raw), pg_fmt_u64(b2, (uint64_t)(at->stored + 0.5)),
               at->bits_per_weight, 100.0 * at->stored / total);
      }
    }
  }
  pg_account_free(&acc);
  pg_artifact_free(a);
  return over ? PG_EXIT_VERDICT : PG_EXIT_OK;
}

static const char *KIND_WORD[] = {"agrees", "DIFFERS", "info"};

static int report_record(const char *dir, const char *model, uint64_t budget, int as_json) {
  pg_record r;
  pg_err err;
  if (pg_record_open(&r, dir, model, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  pg_record_finding f[PG_CLAIM_COUNT];
  const int nf = pg_record_compare(&r, f);
  const int over = r.total > budget;
  char b1[32], b2[32], b3[32];
  if (as_json) {
    json_t *o = json_object();
    json_object_set_new(o, "record", pg_json_cstr(dir));
    json_object_set_new(o, "code_path", pg_json_cstr(r.code_path));
    json_object_set_new(o, "code_file_bytes", json_integer((json_int_t)r.code_file_bytes));
    json_object_set_new(o, "code_bytes", json_integer((json_int_t)r.code_bytes));
    json_object_set_new(o, "crlf_folded", json_integer((json_int_t)r.crlf));
    json_object_set_new(o, "bom", json_boolean(r.bom));
    json_object_set_new(o, "self_extractor", json_boolean(r.self_extractor));
    json_object_set_new(o, "model_path", pg_json_cstr(r.model_path));
    json_object_set_new(o, "model_bytes", json_integer((json_int_t)r.model_bytes));
    json_object_set_new(o, "counted_bytes", json_integer((json_int_t)r.total));
    json_object_set_new(o, "budget", json_integer((json_int_t)budget));
    json_object_set_new(o, "headroom", json_integer((json_int_t)budget - (json_int_t)r.total));
    json_object_set_new(o, "within_budget", json_boolean(!over));
    json_t *claims = json_array();
    for (int i = 0; i < nf; i++) {
      json_t *c = json_object();
      json_object_set_new(c, "claim", json_string(pg_claim_key(f[i].claim)));
      json_object_set_new(c, "claimed", pg_json_num(f[i].claimed));
      json_object_set_new(c, "computed",
                          isnan(f[i].computed) ? json_null() : pg_json_num(f[i].computed));
      json_object_set_new(c, "verdict", json_string(f[i].kind == PG_FIND_AGREES   ? "agrees"
                                                    : f[i].kind == PG_FIND_DIFFERS ? "differs"
                                                                                   : "info"));
      json_object_set_new(c, "note", pg_json_cstr(f[i].text));
      json_array_append_new(claims, c);
    }
    json_object_set_new(o, "claims", claims);
    json_dumpf(o, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(o);
  } else {
    printf("record     %s\n", pg_safe(dir));
    if (r.claims.name[0]) printf("name       %s\n", pg_safe(r.claims.name));
    printf("code       %s: %s bytes as Python reads it", pg_safe(r.code_path),
           pg_fmt_u64(b1, r.code_bytes));
    if (r.crlf) printf(" (file %s bytes; %llu CRLF folded)", pg_fmt_u64(b2, r.code_file_bytes),
                       (unsigned long long)r.crlf);
    printf("%s%s\n", r.bom ? "; starts with a BOM (counted)" : "",
           r.self_extractor ? "; a self-extracting wrapper (its own size counts)" : "");
    printf("model      %s: %s bytes\n", pg_safe(r.model_path), pg_fmt_u64(b1, r.model_bytes));
    printf("counted    %s bytes = code %s + model %s\n", pg_fmt_u64(b1, r.total),
           pg_fmt_u64(b2, r.code_bytes), pg_fmt_u64(b3, r.model_bytes));
    printf("budget     %s bytes\n", pg_fmt_u64(b1, budget));
    if (over)
      printf("verdict    OVER BUDGET by %s bytes\n", pg_fmt_u64(b1, r.total - budget));
    else
      printf("verdict    within budget, headroom %s bytes\n", pg_fmt_u64(b1, budget - r.total));
    if (r.json_path) {
      printf("\nclaims of %s\n", pg_safe(r.json_path));
      if (nf == 0) printf("  (no byte or score claims)\n");
      for (int i = 0; i < nf; i++) {
        char v[48];
        if (f[i].claimed == floor(f[i].claimed) && fabs(f[i].claimed) < 1e15)
          snprintf(v, sizeof v, "%s", pg_fmt_u64(b1, (uint64_t)fabs(f[i].claimed)));
        else
          snprintf(v, sizeof v, "%.10g", f[i].claimed);
        printf("  %-22s %14s  %-7s %s\n", pg_claim_key(f[i].claim), v, KIND_WORD[f[i].kind],
               pg_safe(f[i].text));
      }
    }
  }
  pg_record_free(&r);
  return over ? PG_EXIT_VERDICT : PG_EXIT_OK;
}

int main(int argc, char **argv) {
  uint64_t budget = PG_DEFAULT_BUDGET;
  int as_json = 0, count_tok = 1, tensors = 1;
  const char *model = NULL;
  enum { OPT_BUDGET = 256, OPT_EXCL, OPT_NOTENS, OPT_MODEL, OPT_JSON };
  static const struct option opts[] = {{"budget", required_argument, 0, OPT_BUDGET},
                                       {"exclude-tokenizer", no_argument, 0, OPT_EXCL},
                                       {"no-tensors", no_argument, 0, OPT_NOTENS},
                                       {"model", required_argument, 0, OPT_MODEL},
                                       {"json", no_argument, 0, OPT_JSON},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case OPT_BUDGET:
      /* at most 2^63-1: the headroom and the JSON integers are signed 64-bit */
      if (pg_parse_u64(optarg, &budget) || budget == 0 || budget > (uint64_t)INT64_MAX)
        return pg_tool_usage_error(PROG, "--budget wants a byte count in 1..2^63-1, got '%s'",
                                   optarg);
      break;
    case OPT_EXCL: count_tok = 0; break;
    case OPT_NOTENS: tensors = 0; break;
    case OPT_MODEL: model = optarg; break;
    case OPT_JSON: as_json = 1; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind != argc - 1) return pg_tool_usage_error(PROG, "expected one ARTIFACT or RECORD_DIR");
  const char *path = argv[optind];
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return report_record(path, model, budget, as_json);
  if (model) return pg_tool_usage_error(PROG, "--model applies to a record folder only");
  return report_artifact(path, budget, count_tok, tensors, as_json);
}
