/* pgimport: a challenge record's quantized artifact (final_model.*.ptz, as the record's own
 * train_gpt.py wrote it) → a pgolf artifact holding the same integers, scales and passthrough
 * tensors (spec/import.md). Nothing in the record's file is executed.
 *
 * Exit status: 0 success, 2 error (spec/cli.md). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pg_import.h"
#include "pg_preset.h"
#include "tool.h"

static const char *PROG = "pgimport";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgimport RECORD_ARTIFACT [options] -o OUT.pgz\n"
          "\n"
          "Read a record's quantized artifact (zlib, zstd, xz or brotli over a torch.save file,\n"
          "byte-shuffled or not, or the LQER record's per-group PGRP layout) without executing\n"
          "it, and write a pgolf artifact with the same values: the record's integers, its fp16\n"
          "scales, its passthrough tensors.\n"
          "\n"
          "options:\n"
          "  -o, --output FILE     the pgolf artifact to write\n"
          "  --format NAME         " PG_IMPORT_FORMATS " (default: recognised from the file)\n"
          "  --arch FILE           the arch JSON (default: the baseline's, with the sizes\n"
          "                        derived from the shapes; refused when the weights need more)\n"
          "  --preset NAME         the record's preset (spec/presets): its arch, folder name and\n"
          "                        protocol (for --arch, --record and --record-protocol)\n"
          "  --codec SPEC          codec of the data sections (default brotli-11/w24)\n"
          "  --tokenizer FILE      carry this SentencePiece .model in the artifact\n"
          "  --record NAME         the record folder the file comes from (provenance.record)\n"
          "  --record-protocol OPTIONS  the pgverify options of that record's figure\n"
          "  --threads N           sections compressed at once (default 1; same bytes)\n"
          "  --layout 1|2          2 (default): matrices stored transposed, their rows in\n"
          "                        similarity order where that is smaller (quant layout 2, as\n"
          "                        pgpack writes); 1: row-major, as the record's tensors\n"
          "  --container 1|2       container version to write (default 2, the compact one)\n"
          "  -h, --help            this text\n"
          "\n"
          "environment:\n"
          "  PGOLF_LRZIP           the lrzip program that decodes PGRP groups (default: lrzip\n"
          "                        on PATH)\n"
          "\n"
          "exit status: 0 success, 2 error\n");
}

int main(int argc, char **argv) {
  pg_import_opts o = {0};
  const char *out = NULL;
  enum { O_FORMAT = 256, O_ARCH, O_CODEC, O_RECORD, O_PROTOCOL, O_THREADS, O_TOKENIZER, O_PRESET,
         O_LAYOUT, O_CONTAINER };
  const char *preset = NULL;
  static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                       {"format", required_argument, 0, O_FORMAT},
                                       {"arch", required_argument, 0, O_ARCH},
                                       {"codec", required_argument, 0, O_CODEC},
                                       {"record", required_argument, 0, O_RECORD},
                                       {"record-protocol", required_argument, 0, O_PROTOCOL},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"tokenizer", required_argument, 0, O_TOKENIZER},
                                       {"preset", required_argument, 0, O_PRESET},
                                       {"layout", required_argument, 0, O_LAYOUT},
                                       {"container", required_argument, 0, O_CONTAINER},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  pg_err err = {0};
  uint64_t th;
  while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (c) {
    case 'o': out = optarg; break;
    case O_FORMAT: o.format = optarg; break;
    case O_ARCH: o.arch_path = optarg; break;
    case O_CODEC:
      if (pg_codec_spec_parse(&o.codec, optarg, &err)) return pg_tool_fail(PROG, &err);
      o.have_codec = 1;
      break;
    case O_RECORD: o.record = optarg; break;
    case O_TOKENIZER: o.tokenizer = optarg; break;
    case O_PRESET: preset = optarg; break;
    case O_PROTOCOL: o.protocol = optarg; break;
    case O_THREADS:
      if (pg_parse_u64(optarg, &th) || th < 1 || th > 1024)
        return pg_tool_usage_error(PROG, "--threads wants 1..1024, got '%s'", optarg);
      o.threads = (int)th;
      break;
    case O_LAYOUT:
    case O_CONTAINER:
      if (strcmp(optarg, "1") && strcmp(optarg, "2"))
        return pg_tool_usage_error(PROG, "--%s: '%s' is not 1 or 2",
                                   c == O_LAYOUT ? "layout" : "container", optarg);
      *(c == O_LAYOUT ? &o.layout : &o.container) = optarg[0] - '0';
      break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind != argc - 1) return pg_tool_usage_error(PROG, "expected one RECORD_ARTIFACT");
  if (!out) return pg_tool_usage_error(PROG, "-o OUT.pgz is required");
  const char *in = argv[optind];
  static pg_preset pre; /* static: large */
  if (preset) {
    if (o.arch_path) return pg_tool_usage_error(PROG, "--preset and --arch both give the arch");
    if (pg_preset_load(&pre, preset, &err) || pg_preset_require_supported(&pre, &err))
      return pg_tool_fail(PROG, &err);
    o.arch = &pre.arch;
    if (!o.record) o.record = pre.record;
    if (!o.protocol && pre.protocol[0]) o.protocol = pre.protocol;
  }
  const char *ins[] = {in, o.arch_path, o.tokenizer};
  int x = pg_tool_check_outputs(PROG, &out, 1, ins, 3);
  if (x != PG_EXIT_OK) return x;
  pg_import_report r;
  if (pg_import_run(in, out, &o, &r, &err)) return pg_tool_fail(PROG, &err);
  char a[32], b[32], t[32];
  printf("%s: %s (%s over torch.save, format %s%s%s): %u tensors (%u quantized, %u "
         "passthrough), arch %s\n",
         PROG, pg_safe(in), r.outer, r.format, r.tag[0] ? ", tag " : "", pg_safe(r.tag),
         r.tensors, r.quantized, r.passthrough,
         r.arch_derived ? "derived from the shapes" : "given");
  pg_fmt_u64(a, r.record_bytes);
  pg_fmt_u64(b, r.out_bytes);
  long long d = (long long)r.out_bytes - (long long)r.record_bytes;
  pg_fmt_u64(t, (uint64_t)(d < 0 ? -d : d));
  printf("%s: wrote %s: %s bytes; the record's file: %s bytes (%s%s, %+.2f%%)\n", PROG,
         pg_safe(out), b, a, d < 0 ? "-" : "+", t,
         r.record_bytes ? 100.0 * (double)d / (double)r.record_bytes : 0.0);
  return PG_EXIT_OK;
}
