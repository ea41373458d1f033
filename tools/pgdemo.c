/* pgdemo: write a synthetic model of the record family's tensor layout, quantized the way the
 * challenge's SDClip recipe does (row scales fp16(k·std/R), round half to even), into an artifact.
 * It is the README's main job until training (pgtrain) and packing (pgpack) land; the weights
 * are random, so the artifact exercises every byte path, not the score. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_quant.h"
#include "pg_rng.h"
#include "tool.h"

static const char *PROG = "pgdemo";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgdemo [options] -o OUT.pgz\n"
          "\n"
          "Write a synthetic model (random weights with the record family's tensor names and\n"
          "shapes) quantized with SDClip scales and round-to-nearest into an artifact.\n"
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
          "  --code FILE           embed a code file (repeatable)\n"
          "  --tokenizer FILE      embed a SentencePiece .model file\n"
          "  --seed N              random seed (default 1337)\n"
          "  -h, --help            this text\n");
}

static pg_rng rng;
static float gauss(float std) { return (float)(std * pg_rng_gauss(&rng)); }

typedef struct demo {
  pg_writer *w;
  int sec_embed, sec_attn, sec_mlp, sec_scales, sec_small;
  unsigned bits, embed_bits;
  float clip, embed_clip;
  int packing;
  uint64_t params, quantized;
} demo;

static int add_matrix(demo *d, const char *name, uint64_t rows, uint64_t cols, float std,
                      int sec, unsigned bits, float k, pg_err *err) {
  const uint64_t n = rows * cols;
  float *W = malloc(n * sizeof *W);
  int8_t *q = malloc(n);
  uint16_t *s = malloc(rows * 2);
  if (!W || !q || !s) {
    free(W);
    free(q);
    free(s);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", name);
  }
  for (uint64_t i = 0; i < n; i++) W[i] = gauss(std);
  int rc;
  d->params += n;
  if (n <= 65536) { /* small tensors pass through as fp16, as the challenge's routing does */
    uint16_t *h = malloc(n * 2);
    if (!h) {
      rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", name);
    } else {
      for (uint64_t i = 0; i < n; i++) h[i] = pg_f32_to_f16(W[i]);
      uint64_t dims[2] = {rows, cols};
      pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F16, .ndim = 2, .dims = dims,
                        .values = h, .sec_values = d->sec_small};
      rc = pg_writer_tensor(d->w, &t, err);
      free(h);
    }
  } else {
    const int R = (1 << (bits - 1)) - 1;
    pg_quant_sdclip_scales(W, rows, cols, k, bits, s);
    pg_quant_rtn_rows(W, rows, cols, s, -R, R, q);
    uint64_t dims[2] = {rows, cols};
    pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_INT5 + (int)bits - 5, .packing = d->packing,
                      .scale_kind = PG_SCALE_ROW_F16, .qmin = -R, .qmax = R, .ndim = 2,
                      .dims = dims, .values = q, .row_scales = s, .sec_values = sec,
                      .sec_scales = d->sec_scales};
    rc = pg_writer_tensor(d->w, &t, err);
    d->quantized += n;
  }
  free(W);
  free(q);
  free(s);
  return rc;
}

static int add_vector(demo *d, const char *name, uint64_t n, float value, pg_err *err) {
  float *v = malloc(n * sizeof *v);
  if (!v) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  for (uint64_t i = 0; i < n; i++) v[i] = value;
  pg_tensor_in t = {.name = name, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &n, .values = v,
                    .sec_values = d->sec_small};
  d->params += n;
  int rc = pg_writer_tensor(d->w, &t, err);
  free(v);
  return rc;
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
       embed_bits = 8, seed = 1337;
  double clip = 12.85, embed_clip = 20.0;
  const char *out = NULL, *codec = "brotli-11", *tokenizer = NULL;
  const char *codes[64];
  int ncode = 0, packed = 0;
  enum { O_LAYERS = 256, O_DIM, O_HEADS, O_KV, O_MLP, O_VOCAB, O_BITS, O_EBITS, O_CLIP, O_ECLIP,
         O_CODEC, O_PACKED, O_CODE, O_TOK, O_SEED };
  static const struct option opts[] = {
      {"out", required_argument, 0, 'o'},        {"layers", required_argument, 0, O_LAYERS},
      {"dim", required_argument, 0, O_DIM},      {"heads", required_argument, 0, O_HEADS},
      {"kv-heads", required_argument, 0, O_KV},  {"mlp-mult", required_argument, 0, O_MLP},
      {"vocab", required_argument, 0, O_VOCAB},  {"bits", required_argument, 0, O_BITS},
      {"embed-bits", required_argument, 0, O_EBITS}, {"clip", required_argument, 0, O_CLIP},
      {"embed-clip", required_argument, 0, O_ECLIP}, {"codec", required_argument, 0, O_CODEC},
      {"packed", no_argument, 0, O_PACKED},      {"code", required_argument, 0, O_CODE},
      {"tokenizer", required_argument, 0, O_TOK}, {"seed", required_argument, 0, O_SEED},
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
    case O_CLIP: clip = strtod(optarg, NULL); bad = !(clip > 0); break;
    case O_ECLIP: embed_clip = strtod(optarg, NULL); bad = !(embed_clip > 0); break;
    case O_CODEC: codec = optarg; break;
    case O_PACKED: packed = 1; break;
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
  if (dim % heads || heads % kv_heads)
    return pg_tool_usage_error(PROG, "--dim must divide by --heads, and --heads by --kv-heads");
  pg_err err;
  pg_codec_spec cs;
  if (pg_codec_spec_parse(&cs, codec, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  const double t0 = pg_now();
  pg_rng_seed(&rng, (uint64_t)seed);
  demo d = {.bits = (unsigned)bits, .embed_bits = (unsigned)embed_bits, .clip = (float)clip,
            .embed_clip = (float)embed_clip, .packing = packed};
  if (pg_writer_create(&d.w) != PG_OK) return PG_EXIT_ERROR;
  d.sec_embed = pg_writer_data_section(d.w, &cs, &err);
  d.sec_attn = pg_writer_data_section(d.w, &cs, &err);
  d.sec_mlp = pg_writer_data_section(d.w, &cs, &err);
  d.sec_scales = pg_writer_data_section(d.w, &cs, &err);
  d.sec_small = pg_writer_data_section(d.w, &cs, &err);
  const long hd = dim / heads, kvd = hd * kv_heads, hidden = dim * mlp_mult;
  char arch[512];
  int al = snprintf(arch, sizeof arch,
                    "{\"family\":\"pgolf-demo\",\"layers\":%ld,\"dim\":%ld,\"heads\":%ld,"
                    "\"kv_heads\":%ld,\"mlp_mult\":%ld,\"vocab\":%ld,\"tied_embedding\":true}",
                    layers, dim, heads, kv_heads, mlp_mult, vocab);
  char recipe[256];
  int rl = snprintf(recipe, sizeof recipe,
                    "{\"method\":\"rtn-sdclip\",\"matrix_bits\":%ld,\"embed_bits\":%ld,"
                    "\"matrix_clip_sigmas\":%g,\"embed_clip_sigmas\":%g,\"passthrough_max\":65536,"
                    "\"codec\":\"%s\",\"packed\":%s}",
                    bits, embed_bits, clip, embed_clip, codec, packed ? "true" : "false");
  int rc = pg_writer_meta_str(d.w, "arch.name", "pgolf-demo", 10, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "arch.json", arch, (size_t)al, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "quant.method", "rtn-sdclip", 10, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "quant.recipe", recipe, (size_t)rl, &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "tokenizer.vocab_size", vocab, &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "provenance.seed", seed, &err);
  if (rc == PG_OK) rc = pg_writer_meta_str(d.w, "provenance.calib_source", "none (synthetic weights)", 24, &err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(d.w, "budget.bytes", 16000000, &err);
  if (rc == PG_OK)
    rc = add_matrix(&d, "tok_emb.weight", (uint64_t)vocab, (uint64_t)dim, 0.02f, d.sec_embed,
                    d.embed_bits, d.embed_clip, &err);
  char name[128];
  for (long l = 0; l < layers && rc == PG_OK; l++) {
    const struct {
      const char *suffix;
      long rows, cols;
      int mlp;
    } mats[] = {{"attn.c_q.weight", dim, dim, 0},   {"attn.c_k.weight", kvd, dim, 0},
                {"attn.c_v.weight", kvd, dim, 0},   {"attn.proj.weight", dim, dim, 0},
                {"mlp.fc.weight", hidden, dim, 1},  {"mlp.proj.weight", dim, hidden, 1}};
    for (size_t m = 0; m < sizeof mats / sizeof mats[0] && rc == PG_OK; m++) {
      snprintf(name, sizeof name, "blocks.%ld.%s", l, mats[m].suffix);
      rc = add_matrix(&d, name, (uint64_t)mats[m].rows, (uint64_t)mats[m].cols,
                      1.0f / sqrtf((float)mats[m].cols), mats[m].mlp ? d.sec_mlp : d.sec_attn,
                      d.bits, d.clip, &err);
    }
    if (rc == PG_OK) {
      snprintf(name, sizeof name, "blocks.%ld.attn_scale", l);
      rc = add_vector(&d, name, (uint64_t)dim, 1.0f, &err);
    }
    if (rc == PG_OK) {
      snprintf(name, sizeof name, "blocks.%ld.mlp_scale", l);
      rc = add_vector(&d, name, (uint64_t)dim, 1.0f, &err);
    }
    if (rc == PG_OK) {
      snprintf(name, sizeof name, "blocks.%ld.attn.q_gain", l);
      rc = add_vector(&d, name, (uint64_t)heads, 1.5f, &err);
    }
  }
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
            (unsigned long long)d.params, (unsigned long long)d.quantized, codec);
    rc = pg_writer_write(d.w, out, &err);
  }
  pg_writer_free(d.w);
  if (rc != PG_OK) return pg_tool_fail(PROG, &err);
  uint64_t size = 0;
  pg_file_size(out, &size, &err);
  char b1[32];
  fprintf(stderr, "pgdemo: wrote %s, %s bytes, in %.2f s\n", out, pg_fmt_u64(b1, size),
          pg_now() - t0);
  return PG_EXIT_OK;
}
