/* pgdemo: write a synthetic, untrained model of the record family into an artifact: a real arch
 * (the baseline of spec/arch.md with the sizes asked for) stored canonically as "arch.json", and
 * exactly that arch's tensors, initialized as a trainer would (pg_model_init) and quantized the
 * way the challenge's SDClip recipe does (row scales fp16(k·std/R), round half to even; small
 * tensors fp16). It gives test fixtures and a quick artifact without training (pgtrain and
 * pgpack make the real ones); the weights are untrained, so the artifact exercises every byte
 * path and loads as a model (pg_weights.h), not the score. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_model.h"
#include "pg_quant.h"
#include "pg_rng.h"
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
          "  --embed-bits B        bits of the tied embedding (default 8)\n"
          "  --clip K              SDClip k of the matrices (default 12.85)\n"
          "  --embed-clip K        SDClip k of the embedding (default 20)\n"
          "  --codec SPEC          codec of the data sections (default brotli-11), e.g. zstd-22,\n"
          "                        lzma-9e, brotli-11+shuf2\n"
          "  --packed              bit-pack the values (default one value per byte)\n"
          "  --passthrough-max N   matrices of at most N elements are stored fp16 (default 65536)\n"
          "  --code FILE           embed a code file (repeatable)\n"
          "  --tokenizer FILE      embed a SentencePiece .model file\n"
          "  --seed N              random seed (default 1337)\n"
          "  -h, --help            this text\n");
}

typedef struct demo {
  pg_writer *w;
  int sec_embed, sec_attn, sec_mlp, sec_scales, sec_small;
  unsigned bits, embed_bits;
  float clip, embed_clip;
  int packing;
  uint64_t passthrough_max;
  uint64_t params, quantized;
} demo;

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

/* One tensor of the model: vectors, scalars and tensors of at most passthrough_max elements
 * (65,536 by default, the challenge's routing) pass through as fp16; larger matrices get SDClip
 * row scales (rows = the first dimension) and round-to-nearest, the embeddings with their own
 * bits and clip. */
static int add_tensor(demo *d, const pg_arch_tensor *t, const float *W, pg_err *err) {
  const uint64_t n = pg_arch_tensor_numel(t);
  d->params += n;
  if (n <= d->passthrough_max || t->ndim < 2) {
    uint16_t *h = malloc(n * 2);
    if (!h) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", t->name);
    for (uint64_t i = 0; i < n; i++) h[i] = pg_f32_to_f16(W[i]);
    pg_tensor_in in = {.name = t->name, .qtype = PG_QTYPE_F16, .ndim = (unsigned)t->ndim,
                       .dims = t->shape, .values = h, .sec_values = d->sec_small};
    int rc = pg_writer_tensor(d->w, &in, err);
    free(h);
    return rc;
  }
  const int embed = !strcmp(t->name, "tok_emb.weight") || ends_with(t->name, "embed.weight");
  const unsigned bits = embed ? d->embed_bits : d->bits;
  const float k = embed ? d->embed_clip : d->clip;
  const uint64_t rows = t->ndim ? t->shape[0] : 1, cols = n / rows;
  int8_t *q = malloc(n);
  uint16_t *s = malloc(rows * 2);
  if (!q || !s) {
    free(q);
    free(s);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", t->name);
  }
  const int R = (1 << (bits - 1)) - 1;
  pg_quant_sdclip_scales(W, rows, cols, k, bits, s);
  for (uint64_t r = 0; r < rows; r++)
    if (s[r] == 0) s[r] = 1; /* a row below fp16's range: the smallest subnormal, never 0/0 */
  pg_quant_rtn_rows(W, rows, cols, s, -R, R, q);
  const int sec = embed ? d->sec_embed : strstr(t->name, ".mlp.") ? d->sec_mlp : d->sec_attn;
  pg_tensor_in in = {.name = t->name, .qtype = PG_QTYPE_INT5 + (int)bits - 5,
                     .packing = d->packing, .scale_kind = PG_SCALE_ROW_F16, .qmin = -R, .qmax = R,
                     .ndim = (unsigned)t->ndim, .dims = t->shape, .values = q, .row_scales = s,
                     .sec_values = sec, .sec_scales = d->sec_scales};
  int rc = pg_writer_tensor(d->w, &in, err);
  d->quantized += n;
  free(q);
  free(s);
  return rc;
}

/* The arch: the baseline (spec/arch.md) with the options' sizes. One layer cannot have U-Net
 * skips (an empty encoder), and the 12-channel gate windows cannot exceed a narrower model. */
static int demo_arch(pg_arch *a, long vocab, long dim, long layers, long heads, long kv_heads,
                     long hidden, pg_err *err) {
  char json[512];
  int n = snprintf(json, sizeof json,
                   "{\"vocab_size\": %ld, \"dim\": %ld, \"layers\": %ld, \"heads\": %ld, "
                   "\"kv_heads\": %ld, \"head_dim\": %ld, \"mlp\": {\"hidden\": %ld}",
                   vocab, dim, layers, heads, kv_heads, dim / heads, hidden);
  if (layers < 2)
    n += snprintf(json + n, sizeof json - (size_t)n, ", \"structure\": {\"skips\": \"none\"}");
  if (dim < 12)
    n += snprintf(json + n, sizeof json - (size_t)n,
                  ", \"attention\": {\"gate_window\": %ld}, "
                  "\"embeddings\": {\"smear_window\": %ld}",
                  dim, dim);
  n += snprintf(json + n, sizeof json - (size_t)n, "}");
  return pg_arch_parse(a, json, (size_t)n, "pgdemo arch", err);
}

/* An untrained model of that arch: the trainer's init (pg_model_init: control tensors at their
 * init values, matrices N(0, 1/fan_in), embeddings N(0, 0.005²)), except that the output
 * projections, which that init zeroes, are drawn like the other matrices so that every matrix
 * carries bytes. */
static int demo_model(pg_model **m, const pg_arch *a, uint64_t seed, pg_err *err) {
  PG_TRY(pg_model_create(m, a, err));
  pg_model_init(*m, seed);
  pg_rng rng;
  pg_rng_seed(&rng, seed ^ 0x9e3779b97f4a7c15ull);
  for (size_t i = 0; i < pg_model_tensor_count(*m); i++) {
    const pg_arch_tensor *t = pg_model_tensor(*m, i);
    if (!ends_with(t->name, "attn.proj.weight") && !ends_with(t->name, "mlp.proj.weight")) continue;
    const double std = 1.0 / sqrt((double)t->shape[1]);
    pg_real *p = pg_model_data(*m, i);
    for (uint64_t j = 0; j < pg_arch_tensor_numel(t); j++)
      p[j] = (pg_real)(std * pg_rng_gauss(&rng));
  }
  return PG_OK;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi) return 1;
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  long layers = 4, dim = 384, heads = 6, kv_heads = 3, mlp_mult = 4, vocab = 1024, bits = 6,
       embed_bits = 8, seed = 1337, passthrough = 65536;
  double clip = 12.85, embed_clip = 20.0;
  const char *out = NULL, *codec = "brotli-11", *tokenizer = NULL;
  const char *codes[64];
  int ncode = 0, packed = 0;
  enum { O_LAYERS = 256, O_DIM, O_HEADS, O_KV, O_MLP, O_VOCAB, O_BITS, O_EBITS, O_CLIP, O_ECLIP,
         O_CODEC, O_PACKED, O_CODE, O_TOK, O_SEED, O_PASS };
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
  if (!out || optind != argc) return pg_tool_usage_error(PROG, "expected -o OUT.pgz and no operands");
  const char *ins[65] = {tokenizer};
  for (int i = 0; i < ncode; i++) ins[1 + i] = codes[i];
  if (pg_tool_check_outputs(PROG, &out, 1, ins, (size_t)ncode + 1) != PG_EXIT_OK)
    return PG_EXIT_ERROR;
  if (dim % heads || heads % kv_heads)
    return pg_tool_usage_error(PROG, "--dim must divide by --heads, and --heads by --kv-heads");
  pg_err err;
  pg_codec_spec cs;
  if (pg_codec_spec_parse(&cs, codec, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  const double t0 = pg_now();
  pg_arch arch;
  char *arch_text = NULL;
  pg_model *model = NULL;
  if (demo_arch(&arch, vocab, dim, layers, heads, kv_heads, dim * mlp_mult, &err) != PG_OK ||
      pg_arch_serialize(&arch, &arch_text, &err) != PG_OK ||
      demo_model(&model, &arch, (uint64_t)seed, &err) != PG_OK) {
    free(arch_text);
    return pg_tool_fail(PROG, &err);
  }
  demo d = {.bits = (unsigned)bits, .embed_bits = (unsigned)embed_bits, .clip = (float)clip,
            .embed_clip = (float)embed_clip, .packing = packed,
            .passthrough_max = (uint64_t)passthrough};
  if (pg_writer_create(&d.w) != PG_OK) {
    free(arch_text);
    pg_model_free(model);
    return PG_EXIT_ERROR;
  }
  d.sec_embed = pg_writer_data_section(d.w, &cs, &err);
  d.sec_attn = pg_writer_data_section(d.w, &cs, &err);
  d.sec_mlp = pg_writer_data_section(d.w, &cs, &err);
  d.sec_scales = pg_writer_data_section(d.w, &cs, &err);
  d.sec_small = pg_writer_data_section(d.w, &cs, &err);
  char recipe[512], codec_name[48];
  pg_codec_spec_format(&cs, codec_name, sizeof codec_name); /* canonical: no quote to escape */
  snprintf(recipe, sizeof recipe,
           "{\"method\":\"rtn-sdclip\",\"matrix_bits\":%ld,\"embed_bits\":%ld,"
           "\"matrix_clip_sigmas\":%g,\"embed_clip_sigmas\":%g,\"passthrough_max\":%ld,"
           "\"codec\":\"%s\",\"packed\":%s}",
           bits, embed_bits, clip, embed_clip, passthrough, codec_name, packed ? "true" : "false");
  int rc = pg_writer_meta_str(d.w, "arch.name", "pgolf-demo", 10, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "arch.json", arch_text, strlen(arch_text), &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "quant.method", "rtn-sdclip", 10, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "quant.recipe", recipe, strlen(recipe), &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "tokenizer.vocab_size", vocab, &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "provenance.seed", seed, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "provenance.calib_source", "none (synthetic weights)", 24, &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "budget.bytes", 16000000, &err);
  /* exactly the arch's tensors, in its canonical order */
  for (size_t i = 0; i < pg_model_tensor_count(model) && rc == PG_OK; i++)
    rc = add_tensor(&d, pg_model_tensor(model, i), pg_model_data(model, i), &err);
  free(arch_text);
  pg_model_free(model);
  for (int i = 0; i < ncode && rc == PG_OK; i++) {
    uint8_t *bytes;
    size_t n;
    rc = pg_file_read_all(codes[i], &bytes, &n, 64u << 20, &err);
    if (rc != PG_OK) break;
    const char *base = strrchr(codes[i], '/');
    rc = pg_writer_code(d.w, base ? base + 1 : codes[i], bytes, n, NULL, &err);
    free(bytes);
  }
  if (rc == PG_OK && tokenizer) {
    uint8_t *bytes;
    size_t n;
    rc = pg_file_read_all(tokenizer, &bytes, &n, 64u << 20, &err);
    if (rc == PG_OK) {
      rc = pg_writer_tokenizer(d.w, bytes, n, NULL, &err);
      free(bytes);
      const char *base = strrchr(tokenizer, '/');
      base = base ? base + 1 : tokenizer;
      if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "tokenizer.name", base, strlen(base), &err);
    }
  }
  if (rc == PG_OK) {
    fprintf(stderr, "pgdemo: %llu parameters (%llu quantized); compressing with %s ...\n",
            (unsigned long long)d.params, (unsigned long long)d.quantized, codec_name);
    rc = pg_writer_write(d.w, out, &err);
  }
  pg_writer_free(d.w);
  if (rc != PG_OK) return pg_tool_fail(PROG, &err);
  uint64_t size = 0;
  pg_file_size(out, &size, &err);
  char b1[32];
  fprintf(stderr, "pgdemo: wrote %s, %s bytes, in %.2f s\n", pg_safe(out), pg_fmt_u64(b1, size),
          pg_now() - t0);
  return PG_EXIT_OK;
}
