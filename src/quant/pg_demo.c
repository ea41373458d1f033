/* pg_demo.c: the synthetic demo artifact (see pg_demo.h). */
#include "pg_demo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_model.h"
#include "pg_pack.h"
#include "pg_quant.h"
#include "pg_rng.h"

typedef struct demo {
  pg_writer *w;
  int sec_embed, sec_attn, sec_mlp, sec_scales, sec_perm, sec_small;
  unsigned bits, embed_bits;
  float clip, embed_clip;
  int packing, layout;
  uint64_t passthrough_max;
  uint64_t params, quantized;
} demo;

/* One tensor of the model on its way to the writer: fp16 values, or ints with row scales (and
 * under layout 2 its stored row order). */
typedef struct dtensor {
  const pg_arch_tensor *t;
  uint16_t *h;     /* fp16 passthrough, or NULL */
  int8_t *q;       /* quantized values */
  uint16_t *s;     /* their row scales */
  uint32_t *perm;  /* layout 2: the stored row order, or NULL */
  unsigned bits;
  int sec;
} dtensor;

static void dtensor_free(dtensor *x) {
  free(x->h);
  free(x->q);
  free(x->s);
  free(x->perm);
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

/* One tensor of the model: vectors, scalars and tensors of at most passthrough_max elements
 * (65,536 by default, the challenge's routing) pass through as fp16; larger matrices get SDClip
 * row scales (rows = the first dimension) and round-to-nearest, the embeddings (pgpack's `embed`
 * category: tok_emb, lm_head) with their own bits and clip. */
static int quant_tensor(demo *d, const pg_arch_tensor *t, const float *W, dtensor *x,
                        pg_err *err) {
  const uint64_t n = pg_arch_tensor_numel(t);
  x->t = t;
  d->params += n;
  if (n <= d->passthrough_max || t->ndim < 2) {
    x->h = malloc(n * 2);
    if (!x->h)
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", t->name);
    for (uint64_t i = 0; i < n; i++) x->h[i] = pg_f32_to_f16(W[i]);
    x->sec = d->sec_small;
    return PG_OK;
  }
  /* pgpack's categories (spec/quant.md §3): one rule for which tensors are embeddings */
  const int cat = pg_pack_classify(t->name), embed = cat == PG_CAT_EMBED;
  x->bits = embed ? d->embed_bits : d->bits;
  const float k = embed ? d->embed_clip : d->clip;
  const uint64_t rows = t->shape[0], cols = n / rows;
  x->q = malloc(n);
  x->s = malloc(rows * 2);
  if (!x->q || !x->s)
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate %s", t->name);
  const int R = (1 << (x->bits - 1)) - 1;
  pg_quant_sdclip_scales(W, rows, cols, k, x->bits, x->s);
  for (uint64_t r = 0; r < rows; r++)
    if (x->s[r] == 0) x->s[r] = 1; /* a row below fp16's range: the smallest subnormal, never 0/0 */
  pg_quant_rtn_rows(W, rows, cols, x->s, -R, R, x->q);
  x->sec = embed ? d->sec_embed : cat == PG_CAT_MLP ? d->sec_mlp : d->sec_attn;
  d->quantized += n;
  return PG_OK;
}

/* Layout 2: each values section's row order, by pgpack's rule (pg_pack_group_orders). */
static int row_orders(demo *d, dtensor *x, size_t nt, pg_err *err) {
  const int secs[] = {d->sec_embed, d->sec_attn, d->sec_mlp};
  pg_pack_mat *m = malloc((nt ? nt : 1) * sizeof *m);
  uint32_t **perms = malloc((nt ? nt : 1) * sizeof *perms);
  int rc = m && perms ? PG_OK : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (size_t k = 0; !rc && k < sizeof secs / sizeof secs[0]; k++) {
    size_t n = 0;
    for (size_t i = 0; i < nt; i++)
      if (x[i].q && x[i].sec == secs[k])
        m[n++] = (pg_pack_mat){x[i].q, x[i].t->shape[0],
                               pg_arch_tensor_numel(x[i].t) / x[i].t->shape[0],
                               (unsigned)x[i].t->ndim};
    rc = pg_pack_group_orders(m, n, PG_ROW_SORT_AUTO, perms, err);
    for (size_t i = 0, j = 0; !rc && i < nt; i++)
      if (x[i].q && x[i].sec == secs[k]) x[i].perm = perms[j++];
  }
  free(m);
  free(perms);
  return rc;
}

static int write_tensor(demo *d, const dtensor *x, pg_err *err) {
  const pg_arch_tensor *t = x->t;
  if (x->h) {
    pg_tensor_in in = {.name = t->name, .qtype = PG_QTYPE_F16, .ndim = (unsigned)t->ndim,
                       .dims = t->shape, .values = x->h, .sec_values = x->sec};
    return pg_writer_tensor(d->w, &in, err);
  }
  const int R = (1 << (x->bits - 1)) - 1;
  pg_tensor_in in = {.name = t->name, .qtype = PG_QTYPE_INT5 + (int)x->bits - 5,
                     .packing = d->packing, .scale_kind = PG_SCALE_ROW_F16, .qmin = -R, .qmax = R,
                     .ndim = (unsigned)t->ndim, .dims = t->shape, .values = x->q,
                     .row_scales = x->s, .sec_values = x->sec, .sec_scales = d->sec_scales};
  if (d->layout == 2 && d->packing == PG_PACK_BYTE) {
    in.order = PG_ORDER_COLS;
    if (x->perm) {
      in.perm = PG_PERM_STORED;
      in.row_perm = x->perm;
      in.sec_perm = d->sec_perm;
    }
  }
  return pg_writer_tensor(d->w, &in, err);
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

/* The metadata, every tensor, the code files and the tokenizer into the writer. */
static int fill(demo *d, const pg_demo_cfg *c, pg_model *model, const char *arch_text,
                const char *codec_name, pg_err *err) {
  char recipe[512];
  snprintf(recipe, sizeof recipe,
           "{\"method\":\"rtn-sdclip\",\"matrix_bits\":%ld,\"embed_bits\":%ld,"
           "\"matrix_clip_sigmas\":%g,\"embed_clip_sigmas\":%g,\"passthrough_max\":%ld,"
           "\"codec\":\"%s\",\"packed\":%s,\"layout\":%d}",
           (long)c->bits, (long)c->embed_bits, c->clip, c->embed_clip, (long)c->passthrough_max,
           codec_name, c->packed ? "true" : "false",
           d->layout == 2 && d->packing == PG_PACK_BYTE ? 2 : 1); /* the layout written */
  PG_TRY(pg_writer_meta_str(d->w, "arch.name", "pgolf-demo", 10, err));
  PG_TRY(pg_writer_meta_str(d->w, "arch.json", arch_text, strlen(arch_text), err));
  PG_TRY(pg_writer_meta_str(d->w, "quant.method", "rtn-sdclip", 10, err));
  PG_TRY(pg_writer_meta_str(d->w, "quant.recipe", recipe, strlen(recipe), err));
  PG_TRY(pg_writer_meta_i64(d->w, "tokenizer.vocab_size", c->vocab, err));
  PG_TRY(pg_writer_meta_i64(d->w, "provenance.seed", c->seed, err));
  PG_TRY(pg_writer_meta_str(d->w, "provenance.calib_source", "none (synthetic weights)", 24,
                            err));
  PG_TRY(pg_writer_meta_i64(d->w, "budget.bytes", 16000000, err));
  /* exactly the arch's tensors, in its canonical order: all quantized first, so that layout 2
   * can order each section's rows */
  const size_t nt = pg_model_tensor_count(model);
  dtensor *x = calloc(nt ? nt : 1, sizeof *x);
  if (!x) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  int qrc = PG_OK;
  for (size_t i = 0; !qrc && i < nt; i++)
    qrc = quant_tensor(d, pg_model_tensor(model, i), pg_model_data(model, i), &x[i], err);
  if (!qrc && d->layout == 2 && d->packing == PG_PACK_BYTE) qrc = row_orders(d, x, nt, err);
  for (size_t i = 0; !qrc && i < nt; i++) qrc = write_tensor(d, &x[i], err);
  for (size_t i = 0; i < nt; i++) dtensor_free(&x[i]);
  free(x);
  PG_TRY(qrc);
  for (size_t i = 0; i < c->ncode; i++) {
    uint8_t *bytes;
    size_t n;
    PG_TRY(pg_file_read_all(c->code[i], &bytes, &n, 64u << 20, err));
    const char *base = strrchr(c->code[i], '/');
    int rc = pg_writer_code(d->w, base ? base + 1 : c->code[i], bytes, n, NULL, err);
    free(bytes);
    PG_TRY(rc);
  }
  if (c->tokenizer) {
    uint8_t *bytes;
    size_t n;
    PG_TRY(pg_file_read_all(c->tokenizer, &bytes, &n, 64u << 20, err));
    int rc = pg_writer_tokenizer(d->w, bytes, n, NULL, err);
    free(bytes);
    PG_TRY(rc);
    const char *base = strrchr(c->tokenizer, '/');
    base = base ? base + 1 : c->tokenizer;
    PG_TRY(pg_writer_meta_str(d->w, "tokenizer.name", base, strlen(base), err));
  }
  return PG_OK;
}

int pg_demo_write(const pg_demo_cfg *c, pg_err *err) {
  pg_arch arch;
  char *arch_text = NULL;
  pg_model *model = NULL;
  int rc = demo_arch(&arch, c->vocab, c->dim, c->layers, c->heads, c->kv_heads, c->hidden, err);
  if (rc == PG_OK) rc = pg_arch_serialize(&arch, &arch_text, err);
  if (rc == PG_OK) rc = demo_model(&model, &arch, (uint64_t)c->seed, err);
  demo d = {.bits = c->bits, .embed_bits = c->embed_bits, .clip = (float)c->clip,
            .embed_clip = (float)c->embed_clip, .packing = c->packed,
            .layout = c->layout ? c->layout : 2, .passthrough_max = c->passthrough_max};
  if (rc == PG_OK && (d.layout < 1 || d.layout > 2))
    rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "demo: layout %d is not 1 or 2", d.layout);
  if (rc == PG_OK && (rc = pg_writer_create(&d.w)) != PG_OK)
    pg_err_set(err, rc, NULL, PG_NO_OFFSET, "cannot create the artifact writer");
  if (rc == PG_OK &&
      (rc = pg_writer_set_container(d.w, c->container ? c->container : PG_CONTAINER_VERSION)))
    pg_err_set(err, rc, NULL, PG_NO_OFFSET, "demo: container version %d is not 1 or 2",
               c->container);
  char codec_name[48];
  if (rc == PG_OK) {
    d.sec_embed = pg_writer_data_section(d.w, &c->codec, err);
    d.sec_attn = pg_writer_data_section(d.w, &c->codec, err);
    d.sec_mlp = pg_writer_data_section(d.w, &c->codec, err);
    d.sec_scales = pg_writer_data_section(d.w, &c->codec, err);
    d.sec_perm = pg_writer_data_section(d.w, &c->codec, err); /* dropped when no tensor has one */
    d.sec_small = pg_writer_data_section(d.w, &c->codec, err);
    /* canonical: no quote to escape */
    pg_codec_spec_format(&c->codec, codec_name, sizeof codec_name);
    rc = fill(&d, c, model, arch_text, codec_name, err);
  }
  free(arch_text);
  pg_model_free(model);
  if (rc == PG_OK) {
    if (c->on_write) c->on_write(c->ctx, d.params, d.quantized, codec_name);
    rc = pg_writer_write(d.w, c->out, err);
  }
  pg_writer_free(d.w);
  return rc;
}
