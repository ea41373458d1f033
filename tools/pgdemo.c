/* pgdemo: write a synthetic, untrained model of the record family into an artifact (the work is
 * pg_demo.h: the baseline arch with the sizes asked for, its tensors initialized as a trainer
 * would and quantized with SDClip scales and round-to-nearest, small tensors fp16). It gives test
 * fixtures and a quick artifact without training (pgtrain and pgpack make the real ones). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "pg_demo.h"
#include "pg_io.h"
#include "tool.h"

static const char *PROG = "pgdemo";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgdemo [options] -o OUT.pgz\n"
          "\n"
          "Write a synthetic, untrained model into an artifact: the baseline arch with the\n"
          "sizes below (stored as \"arch.json\"; one layer has no U-Net skips), its tensors\n"
          "initialized as a trainer would, matrices of more than --passthrough-max elements\n"
          "quantized with SDClip scales and round-to-nearest, the others fp16.\n"
          "\n"
          "options:\n"
          "  -o, --out FILE        the artifact to write (required)\n"
          "  --layers N            transformer blocks (default 4)\n"
          "  --dim N               model width (default 384)\n"
          "  --heads N             query heads (default 6); --kv-heads N (default 3)\n"
          "  --mlp-mult N          MLP width multiplier (default 4)\n"
          "  --vocab N             vocabulary (default 1024)\n"
          "  --bits B              bits of the matrices, 5..8 (default 6)\n"
          "  --embed-bits B        bits of the embeddings, tok_emb and lm_head (default 8)\n"
          "  --clip K              SDClip k of the matrices (default 12.85)\n"
          "  --embed-clip K        SDClip k of the embedding (default 20)\n"
          "  --codec SPEC          codec of the data sections (default brotli-11), e.g. zstd-22,\n"
          "                        lzma-9e, brotli-11+shuf2\n"
          "  --packed              bit-pack the values (default one value per byte)\n"
          "  --layout 1|2          2 (default): matrices stored transposed, each section's rows\n"
          "                        in similarity order where that is smaller (quant layout 2,\n"
          "                        as pgpack writes; not with --packed); 1: row-major\n"
          "  --container 1|2       container version to write (default 2, the compact one)\n"
          "  --passthrough-max N   matrices of at most N elements are stored fp16 (default 65536)\n"
          "  --code FILE           embed a code file (repeatable)\n"
          "  --tokenizer FILE      embed a SentencePiece .model file\n"
          "  --seed N              random seed (default 1337)\n"
          "  -h, --help            this text\n");
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) return 1;
  *out = v;
  return 0;
}

static void on_write(void *ctx, uint64_t params, uint64_t quantized, const char *codec_name) {
  (void)ctx;
  fprintf(stderr, "pgdemo: %llu parameters (%llu quantized); compressing with %s ...\n",
          (unsigned long long)params, (unsigned long long)quantized, codec_name);
}

int main(int argc, char **argv) {
  long layers = 4, dim = 384, heads = 6, kv_heads = 3, mlp_mult = 4, vocab = 1024, bits = 6,
       embed_bits = 8, seed = 1337, passthrough = 65536;
  double clip = 12.85, embed_clip = 20.0;
  const char *out = NULL, *codec = "brotli-11", *tokenizer = NULL;
  const char *codes[64];
  int ncode = 0, packed = 0, layout = 2, container = 2;
  enum { O_LAYERS = 256, O_DIM, O_HEADS, O_KV, O_MLP, O_VOCAB, O_BITS, O_EBITS, O_CLIP, O_ECLIP,
         O_CODEC, O_PACKED, O_CODE, O_TOK, O_SEED, O_PASS, O_LAYOUT, O_CONTAINER };
  static const struct option opts[] = {
      {"out", required_argument, 0, 'o'},        {"layers", required_argument, 0, O_LAYERS},
      {"dim", required_argument, 0, O_DIM},      {"heads", required_argument, 0, O_HEADS},
      {"kv-heads", required_argument, 0, O_KV},  {"mlp-mult", required_argument, 0, O_MLP},
      {"vocab", required_argument, 0, O_VOCAB},  {"bits", required_argument, 0, O_BITS},
      {"embed-bits", required_argument, 0, O_EBITS}, {"clip", required_argument, 0, O_CLIP},
      {"embed-clip", required_argument, 0, O_ECLIP}, {"codec", required_argument, 0, O_CODEC},
      {"packed", no_argument, 0, O_PACKED},      {"code", required_argument, 0, O_CODE},
      {"tokenizer", required_argument, 0, O_TOK}, {"seed", required_argument, 0, O_SEED},
      {"passthrough-max", required_argument, 0, O_PASS},
      {"layout", required_argument, 0, O_LAYOUT}, {"container", required_argument, 0, O_CONTAINER},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
    int bad = 0;
    switch (c) {
    case 'o': out = optarg; break;
    case O_LAYERS: bad = parse_int(optarg, 1, 64, &layers); break;
    case O_DIM: bad = parse_int(optarg, 8, 8192, &dim); break;
    case O_HEADS: bad = parse_int(optarg, 1, 256, &heads); break;
    case O_KV: bad = parse_int(optarg, 1, 256, &kv_heads); break;
    case O_MLP: bad = parse_int(optarg, 1, 16, &mlp_mult); break;
    case O_VOCAB: bad = parse_int(optarg, 2, 1 << 20, &vocab); break;
    case O_BITS: bad = parse_int(optarg, 5, 8, &bits); break;
    case O_EBITS: bad = parse_int(optarg, 5, 8, &embed_bits); break;
    /* clip constants become floats: a whole number in (0, 1e6], not "3x" nor 1e999 */
    case O_CLIP: bad = pg_parse_f64(optarg, 0, 1e6, &clip) || !(clip > 0); break;
    case O_ECLIP: bad = pg_parse_f64(optarg, 0, 1e6, &embed_clip) || !(embed_clip > 0); break;
    case O_CODEC: codec = optarg; break;
    case O_PACKED: packed = 1; break;
    case O_LAYOUT:
    case O_CONTAINER:
      if (strcmp(optarg, "1") && strcmp(optarg, "2"))
        return pg_tool_usage_error(PROG, "--%s: '%s' is not 1 or 2",
                                   c == O_LAYOUT ? "layout" : "container", optarg);
      *(c == O_LAYOUT ? &layout : &container) = optarg[0] - '0';
      break;
    case O_PASS: bad = parse_int(optarg, 0, 0x7fffffffL, &passthrough); break;
    case O_CODE:
      if (ncode == 64) return pg_tool_usage_error(PROG, "at most 64 --code files");
      codes[ncode++] = optarg;
      break;
    case O_TOK: tokenizer = optarg; break;
    case O_SEED: bad = parse_int(optarg, 0, 0x7fffffffL, &seed); break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
    if (bad) return pg_tool_usage_error(PROG, "bad value '%s' for an option", optarg);
  }
  if (!out || optind != argc)
    return pg_tool_usage_error(PROG, "expected -o OUT.pgz and no operands");
  const char *ins[65] = {tokenizer};
  for (int i = 0; i < ncode; i++) ins[1 + i] = codes[i];
  if (pg_tool_check_outputs(PROG, &out, 1, ins, (size_t)ncode + 1) != PG_EXIT_OK)
    return PG_EXIT_ERROR;
  if (dim % heads || heads % kv_heads)
    return pg_tool_usage_error(PROG, "--dim must divide by --heads, and --heads by --kv-heads");
  pg_err err;
  pg_demo_cfg cfg = {.layers = layers, .dim = dim, .heads = heads, .kv_heads = kv_heads,
                     .hidden = dim * mlp_mult, .vocab = vocab, .bits = (unsigned)bits,
                     .embed_bits = (unsigned)embed_bits, .clip = clip, .embed_clip = embed_clip,
                     .packed = packed, .layout = layout, .container = container,
                     .passthrough_max = (uint64_t)passthrough, .code = codes,
                     .ncode = (size_t)ncode, .tokenizer = tokenizer, .seed = seed, .out = out,
                     .on_write = on_write};
  if (pg_codec_spec_parse(&cfg.codec, codec, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  const double t0 = pg_now();
  if (pg_demo_write(&cfg, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  uint64_t size = 0;
  pg_file_size(out, &size, &err);
  char b1[32];
  fprintf(stderr, "pgdemo: wrote %s, %s bytes, in %.2f s\n", pg_safe(out), pg_fmt_u64(b1, size),
          pg_now() - t0);
  return PG_EXIT_OK;
}
