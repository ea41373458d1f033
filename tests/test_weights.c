/* test_load.c: the parameter loaders (spec/load.md): artifacts holding an arch and its tensors in
 * every qtype, packing, scale kind and with LQER corrections, and safetensors files in every float
 * dtype, load into a model whose every parameter equals the expected value bit for bit (and the
 * reader's own dequantization); the shape rule; one test per refusal (missing or mistyped
 * arch.json, an invalid arch, a missing tensor, a wrong shape, an extra tensor, a NaN or infinite
 * weight, a dtype that is not a float); and the round trip artifact → pgunpack --safetensors →
 * model, and pgdemo's artifact, which must load as the model it describes. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <xxhash.h>

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_weights.h"
#include "pg_model.h"
#include "pg_safetensors.h"
#include "pgremote.h"
#include "pgtest.h"

/* An arch with every kind of shape: matrices of several widths, vectors, [2, d], [1] and two
 * scalars (bigram.scale, ve_shared.scale). */
static const char *ARCH =
    "{\"vocab_size\": 32, \"dim\": 16, \"layers\": 2, \"heads\": 2, \"kv_heads\": 1, "
    "\"mlp\": {\"hidden\": 32}, \"embeddings\": {\"bigram_buckets\": 8, \"bigram_dim\": 4, "
    "\"ve_layers\": [1], \"ve_dim\": 8}}";

static uint32_t rng_state = 7;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}
static float rndf(void) { return ((float)(rnd() % 20001) - 10000.0f) * 1e-4f; } /* [-1, 1] */

static const pg_codec_spec NONE = {0, 0, 0, 0, 0};

static void parse_arch(pg_arch *a, const char *json) {
  pg_err e;
  cr_assert_eq(pg_arch_parse(a, json, strlen(json), "t.json", &e), PG_OK, "%s", e.msg);
}

/* ---- artifacts ---- */

typedef struct scheme {
  int qtype, packing, scale_kind, lqer;
} scheme;

static const scheme SCHEMES[] = {
    {PG_QTYPE_INT5, 0, PG_SCALE_ROW_F16, 0},    {PG_QTYPE_INT6, 1, PG_SCALE_ROW_F16, 0},
    {PG_QTYPE_INT7, 0, PG_SCALE_SCALAR_F32, 0}, {PG_QTYPE_INT8, 1, PG_SCALE_SCALAR_F32, 0},
    {PG_QTYPE_F16, 0, 0, 0},                    {PG_QTYPE_BF16, 0, 0, 0},
    {PG_QTYPE_F32, 0, 0, 0},                    {PG_QTYPE_INT6, 0, PG_SCALE_ROW_F16, 1},
    {PG_QTYPE_INT5, 1, PG_SCALE_ROW_F16, 1},    {PG_QTYPE_INT7, 1, PG_SCALE_ROW_F16, 0},
    {PG_QTYPE_INT8, 0, PG_SCALE_ROW_F16, 0},    {PG_QTYPE_INT5, 1, PG_SCALE_SCALAR_F32, 0},
    {PG_QTYPE_INT6, 0, PG_SCALE_SCALAR_F32, 0}, {PG_QTYPE_INT7, 0, PG_SCALE_ROW_F16, 1},
    {PG_QTYPE_INT8, 1, PG_SCALE_ROW_F16, 1},
};
#define N_SCHEMES (sizeof SCHEMES / sizeof SCHEMES[0])

/* What to write. */
typedef struct cfg {
  const char *meta_arch; /* the "arch.json" text; NULL: no such key */
  int shift;             /* rotates the schemes over the tensors */
  int squeeze;           /* store with extra size-1 dimensions (scalars as [1] or [1, 1]) */
  const char *drop;      /* a tensor left out */
  const char *transpose; /* a 2-D tensor stored [cols, rows] */
  const char *grow;      /* a tensor stored with one element more ([n + 1]) */
  const char *extra;     /* a tensor the arch does not imply, added */
  const char *poison;    /* a tensor stored f32 with element 3 set to poison_value */
  float poison_value;
  const char *inf_scale; /* a tensor stored int8 with an infinite fp16 scale for row 0 */
  int layout2;           /* quant layout 2: the matrices of one value per byte stored transposed,
                            row-permuted or both, in turn */
} cfg;

/* What was written: the expected fp32 values of each arch tensor, in canonical order. */
typedef struct built {
  uint8_t *buf;
  size_t len;
  pg_arch arch;
  pg_arch_tensor *t;
  size_t nt;
  float **want;
} built;

static void built_free(built *b) {
  for (size_t i = 0; i < b->nt; i++) free(b->want[i]);
  free(b->want);
  free(b->t);
  free(b->buf);
}

static int is(const char *name, const char *which) { return which && !strcmp(name, which); }

/* Add one tensor with stored shape sd[0..sn) in scheme s; the decoded values go to want. */
static void add_tensor(pg_writer *w, const char *name, unsigned sn, const uint64_t *sd,
                       scheme s, int d0, int d1, const cfg *c, float *want) {
  uint64_t n = 1;
  for (unsigned k = 0; k < sn; k++) n *= sd[k];
  const uint64_t rows = sn ? sd[0] : 1, cols = n / rows;
  pg_err e;
  pg_tensor_in in = {.name = name, .qtype = s.qtype, .ndim = sn, .dims = sd, .sec_values = d0,
                     .sec_scales = d1, .sec_lqer = d1};
  if (s.qtype >= PG_QTYPE_F16) {
    void *v = malloc(n * 4);
    for (uint64_t i = 0; i < n; i++) {
      float x = rndf();
      if (is(name, c->poison) && i == 3 % n) x = c->poison_value;
      if (s.qtype == PG_QTYPE_F16) {
        ((uint16_t *)v)[i] = pg_f32_to_f16(x);
        want[i] = pg_f16_to_f32(((uint16_t *)v)[i]);
      } else if (s.qtype == PG_QTYPE_BF16) {
        ((uint16_t *)v)[i] = pg_f32_to_bf16(x);
        want[i] = pg_bf16_to_f32(((uint16_t *)v)[i]);
      } else {
        ((float *)v)[i] = x;
        want[i] = x;
      }
    }
    in.values = v;
    cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s: %s", name, e.msg);
    free(v);
    return;
  }
  const unsigned bits = pg_qtype_bits(s.qtype);
  int lo = pg_int_min(bits), hi = pg_int_max(bits);
  if (s.qtype == PG_QTYPE_INT6) lo = -31, hi = 31; /* SDClip's declared range */
  int8_t *q = malloc(n);
  for (uint64_t i = 0; i < n; i++) q[i] = (int8_t)(lo + (int)(rnd() % (uint32_t)(hi - lo + 1)));
  uint16_t *rs = malloc(rows * 2);
  for (uint64_t r = 0; r < rows; r++) rs[r] = pg_f32_to_f16(0.001f + (float)(rnd() % 1000) * 2e-5f);
  if (is(name, c->inf_scale)) rs[0] = 0x7c00;
  const float ss = 0.003f + (float)(rnd() % 1000) * 1e-5f;
  in.packing = s.packing;
  in.scale_kind = s.scale_kind;
  in.qmin = lo;
  in.qmax = hi;
  in.values = q;
  in.row_scales = rs;
  in.scalar_scale = ss;
  uint32_t *perm = NULL;
  static unsigned turn;
  if (c->layout2 && s.packing == 0 && sn >= 2 && rows > 1) {
    const unsigned k = turn++ % 3; /* transposed; row-permuted; both */
    in.order = k != 1 ? PG_ORDER_COLS : PG_ORDER_ROWS;
    if (k) {
      perm = malloc(rows * sizeof *perm);
      for (uint64_t j = 0; j < rows; j++) perm[j] = (uint32_t)j;
      for (uint64_t j = rows - 1; j > 0; j--) { /* Fisher-Yates */
        const uint64_t x = rnd() % (j + 1);
        const uint32_t v = perm[j];
        perm[j] = perm[x];
        perm[x] = v;
      }
      in.perm = PG_PERM_STORED;
      in.row_perm = perm;
      in.sec_perm = d1;
    }
  }
  for (uint64_t i = 0; i < n; i++)
    want[i] = s.scale_kind == PG_SCALE_ROW_F16 ? (float)q[i] * pg_f16_to_f32(rs[i / cols])
                                               : (float)q[i] * ss;
  int8_t *qa = NULL, *qb = NULL;
  uint16_t *sb = NULL;
  unsigned r = 0;
  if (s.lqer && s.scale_kind == PG_SCALE_ROW_F16 && sn == 2) {
    r = 1;
    while ((r * cols) % 64) r++; /* the smallest rank the group layout allows */
    qa = malloc(rows * r);
    qb = malloc(r * cols);
    sb = malloc(r * cols / 64 * 2);
    for (uint64_t i = 0; i < rows * r; i++) qa[i] = (int8_t)((int)(rnd() % 4) - 2);
    for (uint64_t i = 0; i < r * cols; i++) qb[i] = (int8_t)((int)(rnd() % 16) - 8);
    for (uint64_t i = 0; i < r * cols / 64; i++)
      sb[i] = pg_f32_to_f16(0.01f + (float)(rnd() % 100) * 1e-4f);
    const uint16_t sa = pg_f32_to_f16(0.05f);
    in.lqer_rank = r;
    in.lqer_a = qa;
    in.lqer_a_scale = sa;
    in.lqer_b = qb;
    in.lqer_b_scales = sb;
    for (uint64_t i = 0; i < rows; i++)
      for (uint64_t j = 0; j < cols; j++) {
        double acc = 0.0;
        for (unsigned k = 0; k < r; k++) {
          const float a = (float)qa[i * r + k] * pg_f16_to_f32(sa);
          const float b = (float)qb[k * cols + j] * pg_f16_to_f32(sb[(k * cols + j) / 64]);
          acc += (double)a * (double)b;
        }
        want[i * cols + j] = want[i * cols + j] + (float)acc;
      }
  }
  cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK, "%s: %s", name, e.msg);
  free(perm);
  free(q);
  free(rs);
  free(qa);
  free(qb);
  free(sb);
}

/* The stored shape of arch tensor t under c (squeeze variants, transposition, growth). */
static unsigned stored_shape(const pg_arch_tensor *t, size_t i, const cfg *c, uint64_t *sd) {
  unsigned sn = 0;
  if (c->squeeze) {
    if (t->ndim == 0) {
      sd[sn++] = 1;
      if (i % 2) sd[sn++] = 1;
    } else if (t->ndim == 1) {
      sd[sn++] = 1;
      sd[sn++] = t->shape[0];
    } else {
      for (int k = 0; k < t->ndim; k++) {
        sd[sn++] = t->shape[k];
        if (k == 0) sd[sn++] = 1;
      }
    }
  } else {
    for (int k = 0; k < t->ndim; k++) sd[sn++] = t->shape[k];
  }
  if (is(t->name, c->transpose)) {
    cr_assert(t->ndim == 2 && t->shape[0] != t->shape[1]);
    sn = 2;
    sd[0] = t->shape[1];
    sd[1] = t->shape[0];
  }
  if (is(t->name, c->grow)) {
    sn = 1;
    sd[0] = pg_arch_tensor_numel(t) + 1;
  }
  return sn;
}

static void build(const cfg *c, built *b) {
  memset(b, 0, sizeof *b);
  parse_arch(&b->arch, ARCH);
  pg_err e;
  cr_assert_eq(pg_arch_tensors(&b->arch, &b->t, &b->nt, &e), PG_OK);
  b->want = calloc(b->nt, sizeof *b->want);
  pg_writer *w;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  if (c->meta_arch)
    cr_assert_eq(pg_writer_meta_str(w, "arch.json", c->meta_arch, strlen(c->meta_arch), &e), PG_OK);
  pg_codec_spec zstd;
  cr_assert_eq(pg_codec_spec_parse(&zstd, "zstd-3", &e), PG_OK);
  const int d0 = pg_writer_data_section(w, &NONE, &e), d1 = pg_writer_data_section(w, &zstd, &e);
  cr_assert(d0 >= 0 && d1 >= 0);
  for (size_t i = 0; i < b->nt; i++) {
    const pg_arch_tensor *t = &b->t[i];
    uint64_t sd[8];
    const unsigned sn = stored_shape(t, i, c, sd);
    uint64_t n = 1;
    for (unsigned k = 0; k < sn; k++) n *= sd[k];
    b->want[i] = malloc(n * sizeof(float));
    if (is(t->name, c->drop)) continue;
    scheme s = SCHEMES[(i + (size_t)c->shift) % N_SCHEMES];
    if (sn == 0 || is(t->name, c->poison)) s = (scheme){PG_QTYPE_F32, 0, 0, 0};
    if (is(t->name, c->inf_scale)) s = (scheme){PG_QTYPE_INT8, 0, PG_SCALE_ROW_F16, 0};
    if (sn == 0 && i % 2) s.qtype = PG_QTYPE_F16;
    add_tensor(w, t->name, sn, sd, s, d0, d1, c, b->want[i]);
  }
  if (c->extra) {
    uint64_t d = 4;
    float v[4] = {1, 2, 3, 4};
    pg_tensor_in in = {.name = c->extra, .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &d,
                       .values = v, .sec_values = d0};
    cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK);
  }
  cr_assert_eq(pg_writer_to_mem(w, &b->buf, &b->len, &e), PG_OK, "%s", e.msg);
  pg_writer_free(w);
}

static pg_artifact *open_built(const built *b) {
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open_mem(&a, b->buf, b->len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  return a;
}

/* Every parameter of m equals b's expected values and the reader's dequantization, bit for bit. */
static void expect_model(pg_model *m, const built *b, pg_artifact *a) {
  cr_assert_eq(pg_model_tensor_count(m), b->nt);
  pg_err e;
  for (size_t i = 0; i < b->nt; i++) {
    const uint64_t n = pg_arch_tensor_numel(&b->t[i]);
    cr_assert_str_eq(pg_model_tensor(m, i)->name, b->t[i].name);
    const float *got = pg_model_data(m, i);
    cr_assert(!memcmp(got, b->want[i], n * 4), "%s differs from the expected values", b->t[i].name);
    if (a) {
      const int64_t j = pg_artifact_tensor_find(a, b->t[i].name);
      cr_assert_geq(j, 0);
      float *ref = malloc(n * 4);
      cr_assert_eq(pg_artifact_tensor_dequant(a, (uint32_t)j, ref, &e), PG_OK, "%s", e.msg);
      cr_assert(!memcmp(got, ref, n * 4), "%s differs from the reader's dequantization",
                b->t[i].name);
      free(ref);
    }
  }
}

/* Load b's artifact; expect status want, an error naming t.pgz and every needle. */
static void expect_refusal(const built *b, int want, const char *n1, const char *n2) {
  pg_artifact *a = open_built(b);
  pg_model *m = (pg_model *)&m; /* not NULL, to see it cleared */
  pg_err e;
  const int rc = pg_model_load_artifact(&m, a, &e);
  cr_assert_eq(rc, want, "got %s (%s), want %s", pg_status_name(rc), e.msg, pg_status_name(want));
  cr_assert_null(m);
  cr_assert(strncmp(e.msg, "t.pgz: ", 7) == 0, "does not name the file: %s", e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
  if (n1) cr_assert(strstr(e.msg, n1), "'%s' not in: %s", n1, e.msg);
  if (n2) cr_assert(strstr(e.msg, n2), "'%s' not in: %s", n2, e.msg);
  pg_artifact_free(a);
}

static void load_file_ok(pg_model **m, const char *path) {
  pg_artifact *a;
  pg_err e;
  cr_assert_eq(pg_artifact_open(&a, path, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_model_load_artifact(m, a, &e), PG_OK, "%s", e.msg);
  pg_artifact_free(a);
}

/* ---- the shape rule ---- */

Test(load, shape_rule) {
  pg_arch_tensor s = {.name = "s", .ndim = 0}, v = {.name = "v", .ndim = 1, .shape = {16}};
  pg_arch_tensor m = {.name = "m", .ndim = 2, .shape = {16, 32}};
  pg_arch_tensor r = {.name = "r", .ndim = 2, .shape = {1, 12}};
  const uint64_t one[] = {1, 1, 1}, d16[] = {16}, d1_16[] = {1, 16}, d16_1[] = {16, 1};
  const uint64_t m1[] = {16, 32}, m2[] = {16, 1, 32}, m3[] = {1, 16, 32, 1}, mt[] = {32, 16};
  const uint64_t m4[] = {512}, m5[] = {4, 4, 32}, d12[] = {12}, z[] = {0, 16};
  cr_assert(pg_weights_shape_compatible(&s, 0, NULL));
  cr_assert(pg_weights_shape_compatible(&s, 1, one));
  cr_assert(pg_weights_shape_compatible(&s, 2, one));
  cr_assert(pg_weights_shape_compatible(&s, 3, one));
  cr_assert(!pg_weights_shape_compatible(&s, 1, d16));
  cr_assert(pg_weights_shape_compatible(&v, 1, d16));
  cr_assert(pg_weights_shape_compatible(&v, 2, d1_16));
  cr_assert(pg_weights_shape_compatible(&v, 2, d16_1));
  cr_assert(!pg_weights_shape_compatible(&v, 0, NULL));
  cr_assert(pg_weights_shape_compatible(&m, 2, m1));
  cr_assert(pg_weights_shape_compatible(&m, 3, m2));
  cr_assert(pg_weights_shape_compatible(&m, 4, m3));
  cr_assert(!pg_weights_shape_compatible(&m, 2, mt)); /* same count, other dims */
  cr_assert(!pg_weights_shape_compatible(&m, 1, m4)); /* flattened */
  cr_assert(!pg_weights_shape_compatible(&m, 3, m5));
  cr_assert(pg_weights_shape_compatible(&r, 1, d12));
  cr_assert(pg_weights_shape_compatible(&r, 2, (const uint64_t[]){12, 1}));
  cr_assert(!pg_weights_shape_compatible(&v, 2, z));
}

/* ---- artifacts: values ---- */

Test(load, artifact_every_qtype_bit_exact) {
  int seen[N_SCHEMES] = {0};
  for (int shift = 0; shift < (int)N_SCHEMES; shift += 4)
    for (int squeeze = 0; squeeze < 2; squeeze++) {
      cfg c = {.meta_arch = ARCH, .shift = shift, .squeeze = squeeze};
      built b;
      build(&c, &b);
      pg_artifact *a = open_built(&b);
      for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
        const pg_tensor_info *t = pg_artifact_tensor(a, i);
        for (size_t k = 0; k < N_SCHEMES; k++)
          seen[k] |= SCHEMES[k].qtype == t->qtype && SCHEMES[k].packing == t->packing &&
                     SCHEMES[k].scale_kind == t->scale_kind &&
                     SCHEMES[k].lqer == (t->lqer_rank > 0);
      }
      pg_model *m;
      pg_err e;
      cr_assert_eq(pg_model_load_artifact(&m, a, &e), PG_OK, "%s", e.msg);
      cr_assert(pg_arch_equal(pg_model_arch(m), &b.arch));
      expect_model(m, &b, a);
      pg_model_free(m);
      pg_artifact_free(a);
      built_free(&b);
    }
  for (size_t k = 0; k < N_SCHEMES; k++) cr_assert(seen[k], "scheme %zu never written", k);
}

Test(load, artifact_canonical_arch_text_is_the_same_arch) {
  pg_arch a;
  parse_arch(&a, ARCH);
  char *text;
  pg_err e;
  cr_assert_eq(pg_arch_serialize(&a, &text, &e), PG_OK);
  cfg c = {.meta_arch = text};
  built b;
  build(&c, &b);
  pg_artifact *art = open_built(&b);
  pg_model *m;
  cr_assert_eq(pg_model_load_artifact(&m, art, &e), PG_OK, "%s", e.msg);
  expect_model(m, &b, art);
  pg_model_free(m);
  pg_artifact_free(art);
  built_free(&b);
  free(text);
}

/* The fuzz seeds (tests/fuzz/seeds/load/) load. mixed.pgz is this test's own artifact (every
 * scheme, LQER, a bf16 and two scalars), written there when PG_WRITE_LOAD_SEED names a path; the
 * demo_*.pgz seeds are tiny pgdemo outputs (spec/load.md §6). */
Test(load, fuzz_seeds) {
  cfg c = {.meta_arch = ARCH};
  built b;
  build(&c, &b);
  const char *w = getenv("PG_WRITE_LOAD_SEED");
  pg_err e;
  if (w && *w) cr_assert_eq(pg_file_write_atomic(w, b.buf, b.len, &e), PG_OK, "%s", e.msg);
  built_free(&b);
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  const char *seeds[] = {"mixed.pgz", "demo_l1_f16.pgz", "demo_l2_int6.pgz",
                         "demo_l2_int5_packed.pgz", "demo_l3_zstd.pgz"};
  for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fuzz/seeds/load/%s", root, seeds[k]);
    uint64_t size = 0;
    cr_assert_eq(pg_file_size(path, &size, &e), PG_OK, "%s", e.msg);
    cr_assert_lt(size, 40000, "%s is too big for a seed", seeds[k]);
    pg_model *m;
    load_file_ok(&m, path);
    pg_model_free(m);
  }
}

/* ---- artifacts: refusals ---- */

Test(load, artifact_without_arch) {
  cfg c = {0};
  built b;
  build(&c, &b);
  expect_refusal(&b, PG_E_NOT_FOUND, "arch.json", NULL);
  built_free(&b);
}

/* A writer refuses "arch.json" of another type, so write an i64 under a key of the same length
 * and rename it in the (uncompressed) META section; the reader refuses the file when it opens. */
Test(load, artifact_arch_json_not_a_string) {
  pg_writer *w;
  pg_err e;
  cr_assert_eq(pg_writer_create(&w), PG_OK);
  cr_assert_eq(pg_writer_set_container(w, PG_CONTAINER_V1), PG_OK); /* fixed offsets to edit */
  pg_writer_set_meta_codec(w, &NONE, &NONE);
  cr_assert_eq(pg_writer_meta_i64(w, "arch.jsom", 7, &e), PG_OK);
  const int d = pg_writer_data_section(w, &NONE, &e);
  uint64_t one = 1;
  float v = 1.0f;
  pg_tensor_in in = {.name = "x", .qtype = PG_QTYPE_F32, .ndim = 1, .dims = &one, .values = &v,
                     .sec_values = d};
  cr_assert_eq(pg_writer_tensor(w, &in, &e), PG_OK);
  uint8_t *buf;
  size_t len;
  cr_assert_eq(pg_writer_to_mem(w, &buf, &len, &e), PG_OK);
  pg_writer_free(w);
  uint8_t *k = memmem(buf, len, "arch.jsom", 9);
  cr_assert_not_null(k);
  k[8] = 'n';
  /* fix the META section's checksums, then the table's and the header's */
  const uint32_t ns = pg_ld32(buf + 16);
  for (uint32_t i = 0; i < ns; i++) {
    uint8_t *ent = buf + PG_HEADER_SIZE + PG_ENTRY_SIZE * i;
    if (pg_ld16(ent) != PG_SEC_META) continue;
    const uint64_t h = XXH64(buf + pg_ld64(ent + 8), pg_ld64(ent + 16), 0);
    pg_st64(ent + 32, h);
    pg_st64(ent + 40, h);
  }
  pg_st64(buf + 32, XXH64(buf + PG_HEADER_SIZE, (size_t)PG_ENTRY_SIZE * ns, 0));
  pg_st64(buf + 56, XXH64(buf, 56, 0));
  pg_artifact *a;
  const int rc = pg_artifact_open_mem(&a, buf, len, "t.pgz", NULL, &e);
  cr_assert_eq(rc, PG_E_META_TYPE, "got %s (%s)", pg_status_name(rc), e.msg);
  cr_assert(strstr(e.msg, "t.pgz") == e.msg && strstr(e.msg, "arch.json"), "%s", e.msg);
  free(buf);
}

Test(load, artifact_invalid_arch) {
  const struct {
    const char *json;
    int status;
    const char *needle;
  } cases[] = {
      {"{\"dim\": 15, \"heads\": 2, \"kv_heads\": 1}", PG_E_ARG, "head_dim"},
      {"{\"dim\": 16,", PG_E_JSON, "JSON"},
      {"{\"dims\": 16}", PG_E_ARG, "dims"},
      {"{\"dim\": \"16\"}", PG_E_META_TYPE, "dim"},
      {"[]", PG_E_META_TYPE, "object"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cfg c = {.meta_arch = cases[i].json};
    built b;
    build(&c, &b);
    expect_refusal(&b, cases[i].status, "t.pgz: arch.json: ", cases[i].needle);
    built_free(&b);
  }
}

Test(load, artifact_missing_tensor) {
  cfg c = {.meta_arch = ARCH, .drop = "blocks.1.mlp.fc.weight"};
  built b;
  build(&c, &b);
  expect_refusal(&b, PG_E_NOT_FOUND, "tensor blocks.1.mlp.fc.weight: missing", NULL);
  built_free(&b);
  cfg c2 = {.meta_arch = ARCH, .drop = "bigram.scale"};
  build(&c2, &b);
  expect_refusal(&b, PG_E_NOT_FOUND, "bigram.scale", NULL);
  built_free(&b);
}

Test(load, artifact_wrong_shape) {
  cfg c = {.meta_arch = ARCH, .transpose = "blocks.0.mlp.proj.weight"};
  built b;
  build(&c, &b);
  expect_refusal(&b, PG_E_SIZE_MISMATCH, "tensor blocks.0.mlp.proj.weight: shape [32, 16]",
                 "the arch's [16, 32]");
  built_free(&b);
  cfg c2 = {.meta_arch = ARCH, .grow = "blocks.1.attn.q_gain"};
  build(&c2, &b);
  expect_refusal(&b, PG_E_SIZE_MISMATCH, "shape [3] does not match the arch's [2]", NULL);
  built_free(&b);
  cfg c3 = {.meta_arch = ARCH, .grow = "ve_shared.scale"};
  build(&c3, &b);
  expect_refusal(&b, PG_E_SIZE_MISMATCH, "ve_shared.scale: shape [2] does not match the arch's []",
                 NULL);
  built_free(&b);
}

/* ARCH with more options: "{...ARCH..., EXTRA}" (EXTRA without braces). */
static void arch_plus(char *buf, size_t cap, const char *extra) {
  snprintf(buf, cap, "%.*s, %s}", (int)strlen(ARCH) - 1, ARCH, extra);
}

/* An arch given beside the artifact's own must describe the same model: a value the tensors
 * cannot show (the softcap, the RoPE base) is a contradiction named with both values, not a
 * silent override; an equal arch is accepted and keeps the artifact's "follows". */
Test(load, artifact_given_arch_must_agree) {
  char stored[1024], other[1024];
  arch_plus(stored, sizeof stored, "\"follows\": {\"record\": \"rec A\", \"pr\": 7}");
  arch_plus(other, sizeof other,
            "\"head\": {\"softcap\": 15}, \"attention\": {\"rope_base\": 500}");
  cfg c = {.meta_arch = stored};
  built b;
  build(&c, &b);
  pg_artifact *a = open_built(&b);
  pg_arch given;
  parse_arch(&given, other);
  pg_model *m = (pg_model *)&m;
  pg_err e;
  cr_assert_eq(pg_model_load_artifact_arch(&m, a, &given, &e), PG_E_ARG);
  cr_assert_null(m);
  cr_assert(strncmp(e.msg, "t.pgz: ", 7) == 0, "%s", e.msg);
  cr_assert(strstr(e.msg, "contradicts") && strstr(e.msg, "2 options"), "%s", e.msg);
  cr_assert(strstr(e.msg, "attention.rope_base 500.0/10000.0"), "%s", e.msg);
  cr_assert(strstr(e.msg, "head.softcap 15.0/30.0"), "%s", e.msg);
  parse_arch(&given, ARCH);
  cr_assert_eq(pg_model_load_artifact_arch(&m, a, &given, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(pg_model_arch(m)->follows.record, "rec A");
  expect_model(m, &b, NULL);
  pg_model_free(m);
  pg_artifact_free(a);
  built_free(&b);
}

/* pgunpack --check's arch check: the structure rules without loading. */
Test(load, check_artifact_structure) {
  cfg c = {.meta_arch = ARCH};
  built b;
  build(&c, &b);
  pg_artifact *a = open_built(&b);
  pg_err e;
  cr_assert_eq(pg_weights_check_artifact(a, &e), PG_OK, "%s", e.msg);
  pg_artifact_free(a);
  built_free(&b);
  cfg c2 = {.meta_arch = ARCH, .extra = "blocks.2.attn.c_q.weight"};
  build(&c2, &b);
  a = open_built(&b);
  cr_assert_eq(pg_weights_check_artifact(a, &e), PG_E_MALFORMED);
  cr_assert(strstr(e.msg, "not part of the arch"), "%s", e.msg);
  pg_artifact_free(a);
  built_free(&b);
  cfg c3 = {0};
  build(&c3, &b);
  a = open_built(&b);
  cr_assert_eq(pg_weights_check_artifact(a, &e), PG_E_NOT_FOUND);
  pg_artifact_free(a);
  built_free(&b);
}

Test(load, artifact_extra_tensor) {
  cfg c = {.meta_arch = ARCH, .extra = "blocks.2.attn.c_q.weight"};
  built b;
  build(&c, &b);
  expect_refusal(&b, PG_E_MALFORMED, "tensor blocks.2.attn.c_q.weight: not part of the arch", NULL);
  built_free(&b);
  /* the arch of a smaller model is refused over a bigger model's tensors, not loaded partly */
  cfg c2 = {.meta_arch = "{\"vocab_size\": 32, \"dim\": 16, \"layers\": 1, \"heads\": 2, "
                         "\"kv_heads\": 1, \"mlp\": {\"hidden\": 32}, \"embeddings\": "
                         "{\"bigram_buckets\": 8, \"bigram_dim\": 4, \"ve_layers\": [0], "
                         "\"ve_dim\": 8}, \"structure\": {\"skips\": \"none\"}}"};
  build(&c2, &b);
  expect_refusal(&b, PG_E_MALFORMED, "blocks.1.", "not part of the arch");
  built_free(&b);
}

Test(load, artifact_nan_and_infinity) {
  cfg c = {.meta_arch = ARCH, .poison = "blocks.1.mlp_scale", .poison_value = NAN};
  built b;
  build(&c, &b);
  expect_refusal(&b, PG_E_ARG, "tensor blocks.1.mlp_scale: element 3 is NaN", NULL);
  built_free(&b);
  cfg c2 = {.meta_arch = ARCH, .poison = "tok_emb.weight", .poison_value = -INFINITY};
  build(&c2, &b);
  expect_refusal(&b, PG_E_ARG, "tensor tok_emb.weight: element 3 is infinite", NULL);
  built_free(&b);
  cfg c3 = {.meta_arch = ARCH, .poison = "bigram.scale", .poison_value = INFINITY};
  build(&c3, &b);
  expect_refusal(&b, PG_E_ARG, "tensor bigram.scale: element 0 is infinite", NULL);
  built_free(&b);
  /* the reader accepts an infinite scale; the loader refuses the weights it gives */
  cfg c4 = {.meta_arch = ARCH, .inf_scale = "blocks.0.mlp.fc.weight"};
  build(&c4, &b);
  expect_refusal(&b, PG_E_ARG, "tensor blocks.0.mlp.fc.weight: element 0 is ", NULL);
  built_free(&b);
}

/* ---- an artifact loaded onto an engine (spec/engine.md §8.1) ---- */

/* m's parameters are ref's, bit for bit (m's host copy made here when it has none). */
static void same_params(pg_model *m, pg_model *ref, const char *what) {
  cr_assert_eq(pg_model_param_count(m), pg_model_param_count(ref));
  const float *x = pg_model_params_read(m), *y = pg_model_params_read(ref);
  cr_assert(x && y);
  for (size_t i = 0; i < pg_model_param_count(m); i++)
    cr_assert(!memcmp(&x[i], &y[i], 4), "%s: parameter %zu is %a, the host path's %a", what, i,
              (double)x[i], (double)y[i]);
}

/* The bytes an engine with memory of its own takes for a's tensors: each integer tensor with row
 * scales quantized (one byte per value, its scales and LQER factors), every other one as fp32. */
static size_t quantized_upload(pg_artifact *a, size_t *nq) {
  size_t n = 0;
  *nq = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (!pg_qtype_is_int(t->qtype) || t->scale_kind != PG_SCALE_ROW_F16) {
      n += (size_t)t->numel * 4;
      continue;
    }
    const size_t k = t->lqer_rank;
    n += (size_t)(t->numel + t->rows * 2 + t->rows * k + k * t->cols + k * t->cols / 64 * 2);
    ++*nq;
  }
  return n;
}

/* b's artifact loaded by the host path, onto the CPU engine and onto the remote engine (memory
 * of its own, dequantization on the engine): the same parameters, bit for bit, and the expected
 * values; the remote engine takes the quantized bytes and the host holds no copy until asked. */
static void expect_on_engines(const built *b, const char *what) {
  pg_artifact *a = open_built(b);
  pg_err e;
  pg_model *ref, *m;
  cr_assert_eq(pg_model_load_artifact(&ref, a, &e), PG_OK, "%s: %s", what, e.msg);
  pg_engine cpu = pg_engine_cpu(1);
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, &cpu, &e), PG_OK, "%s: %s", what, e.msg);
  cr_assert_eq(pg_model_engine(m), &cpu);
  same_params(m, ref, what);
  expect_model(m, b, a);
  pg_model_free(m);
  pgremote *r = pgremote_new(1);
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, &r->outer, &e), PG_OK, "%s: %s", what,
               e.msg);
  size_t nq;
  const size_t up = quantized_upload(a, &nq);
  cr_assert_eq(r->downloads, 0, "%s: the load brought values back to the host", what);
  cr_assert_eq(r->dequants, nq, "%s: %zu tensors dequantized on the engine, %zu quantized", what,
               r->dequants, nq);
  cr_assert_eq(r->upload_bytes, up, "%s: %zu bytes went up, %zu expected", what, r->upload_bytes,
               up);
  /* a copy (pgverify's fp32 figure, its further engines) comes straight down into the copy */
  pg_model *c;
  cr_assert_eq(pg_model_create(&c, pg_model_arch(m), &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_model_copy_params(c, m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(r->downloads, 1, "%s: the copy comes in one download", what);
  same_params(c, ref, what);
  pg_model_free(c);
  same_params(m, ref, what);
  cr_assert_eq(r->downloads, 2, "%s: the host copy comes in one download", what);
  expect_model(m, b, a);
  pg_model_free(m);
  cr_assert_eq(r->live, 0);
  pgremote_free(r);
  pg_model_free(ref);
  pg_artifact_free(a);
}

/* Every qtype, packing, scale kind and LQER rank, with quant layout 2 (transposed, row-permuted)
 * and without: the engines' loads are the host path's bits. */
Test(on, every_scheme_and_layout_same_bits) {
  for (int layout2 = 0; layout2 < 2; layout2++)
    for (int shift = 0; shift < (int)N_SCHEMES; shift++) {
      cfg c = {.meta_arch = ARCH, .shift = shift, .squeeze = shift % 3 == 1, .layout2 = layout2};
      built b;
      build(&c, &b);
      char what[64];
      snprintf(what, sizeof what, "shift %d layout %d", shift, layout2 + 1);
      if (layout2) { /* the artifact holds what the case is about */
        pg_artifact *a = open_built(&b);
        int cols = 0, perm = 0, lqer = 0;
        for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
          const pg_tensor_info *t = pg_artifact_tensor(a, i);
          cols += t->order == PG_ORDER_COLS;
          perm += t->perm == PG_PERM_STORED;
          lqer += t->lqer_rank > 0 && t->order == PG_ORDER_COLS;
        }
        cr_assert(cols && perm, "%s: %d transposed, %d permuted", what, cols, perm);
        if (shift == 0) cr_assert(lqer, "%s: no transposed tensor with LQER", what);
        pg_artifact_free(a);
      }
      expect_on_engines(&b, what);
      built_free(&b);
    }
}

/* A refusal reads the same on every path: status and line (a non-finite weight found from the
 * quantized parts, the first one in canonical order, after every decoding fault). */
static void same_refusal(const cfg *c) {
  built b;
  build(c, &b);
  pg_artifact *a = open_built(&b);
  pg_err e0, e1, e2;
  pg_model *m = NULL;
  const int want = pg_model_load_artifact(&m, a, &e0);
  cr_assert_neq(want, PG_OK);
  pg_engine cpu = pg_engine_cpu(1);
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, &cpu, &e1), want, "%s", e1.msg);
  cr_assert_null(m);
  cr_assert_str_eq(e1.msg, e0.msg);
  pgremote *r = pgremote_new(1);
  cr_assert_eq(pg_model_load_artifact_on(&m, a, NULL, &r->outer, &e2), want, "%s", e2.msg);
  cr_assert_null(m);
  cr_assert_str_eq(e2.msg, e0.msg);
  cr_assert_eq(r->live, 0, "the model's engine memory is freed");
  pgremote_free(r);
  pg_artifact_free(a);
  built_free(&b);
}

Test(on, refusals_read_the_same) {
  const cfg cs[] = {
      {.meta_arch = ARCH, .poison = "blocks.1.mlp_scale", .poison_value = NAN},
      {.meta_arch = ARCH, .inf_scale = "blocks.0.mlp.fc.weight"},
      /* both: the first in canonical order wins, whichever kind it is */
      {.meta_arch = ARCH, .inf_scale = "blocks.0.mlp.fc.weight", .poison = "tok_emb.weight",
       .poison_value = INFINITY},
      {.meta_arch = ARCH, .inf_scale = "tok_emb.weight", .poison = "blocks.1.attn.c_q.weight",
       .poison_value = NAN, .layout2 = 1},
      {.meta_arch = ARCH, .drop = "blocks.1.mlp.proj.weight"},
      {.meta_arch = ARCH, .extra = "not.a.tensor"},
      {.meta_arch = ARCH, .transpose = "blocks.0.mlp.fc.weight"},
  };
  for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) same_refusal(&cs[i]);
}

/* ---- safetensors ---- */

static char tmp[64];
static void setup(void) { pgtest_mkdtemp(tmp, "pgload"); }
static void teardown(void) { pgtest_rm_rf(tmp); }
TestSuite(st, .init = setup, .fini = teardown);
TestSuite(trip, .init = setup, .fini = teardown);

static const pg_st_dtype DTYPES[] = {PG_ST_F32, PG_ST_F16, PG_ST_BF16, PG_ST_F64, PG_ST_F8_E5M2};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

/* Write b's tensors as a safetensors file at path (dtypes rotated; cfg as for artifacts, with
 * poison on any dtype that holds it) and fill b->want. bad_dtype: that tensor stored as I8. */
static void build_st(const cfg *c, built *b, const char *path, const char *bad_dtype) {
  memset(b, 0, sizeof *b);
  parse_arch(&b->arch, ARCH);
  pg_err e;
  cr_assert_eq(pg_arch_tensors(&b->arch, &b->t, &b->nt, &e), PG_OK);
  b->want = calloc(b->nt, sizeof *b->want);
  void **data = calloc(b->nt + 1, sizeof *data);
  pg_st_writer *w;
  cr_assert_eq(pg_st_writer_create(&w, &e), PG_OK);
  if (c->meta_arch) cr_assert_eq(pg_st_writer_set_meta(w, "arch.json", c->meta_arch, &e), PG_OK);
  cr_assert_eq(pg_st_writer_set_meta(w, "other", "kept, not read", &e), PG_OK);
  for (size_t i = 0; i < b->nt; i++) {
    const pg_arch_tensor *t = &b->t[i];
    uint64_t sd[8];
    const unsigned sn = stored_shape(t, i, c, sd);
    uint64_t n = 1;
    for (unsigned k = 0; k < sn; k++) n *= sd[k];
    b->want[i] = malloc(n * sizeof(float));
    if (is(t->name, c->drop)) continue;
    pg_st_dtype dt = DTYPES[(i + (size_t)c->shift) % N_DTYPES];
    if (is(t->name, c->poison) && dt == PG_ST_F8_E5M2) dt = PG_ST_F16;
    if (is(t->name, bad_dtype)) dt = PG_ST_I8;
    const size_t es = pg_st_dtype_size(dt);
    uint8_t *v = malloc(n * es);
    data[i] = v;
    for (uint64_t j = 0; j < n; j++) {
      float x = rndf();
      if (is(t->name, c->poison) && j == 3 % n) x = c->poison_value;
      float got = x;
      switch (dt) {
      case PG_ST_F32: memcpy(v + 4 * j, &x, 4); break;
      case PG_ST_F16: {
        uint16_t h = pg_f32_to_f16(x);
        pg_st16(v + 2 * j, h);
        got = pg_f16_to_f32(h);
        break;
      }
      case PG_ST_BF16: {
        uint16_t h = pg_f32_to_bf16(x);
        pg_st16(v + 2 * j, h);
        got = pg_bf16_to_f32(h);
        break;
      }
      case PG_ST_F64: {
        double d = (double)x + 1e-12 * (double)(j % 7); /* rounds to nearest on the way in */
        uint64_t u;
        memcpy(&u, &d, 8);
        pg_st64(v + 8 * j, u);
        got = (float)d;
        break;
      }
      case PG_ST_F8_E5M2: {
        const uint8_t q = (uint8_t)(pg_f32_to_f16(x) >> 8);
        v[j] = q;
        got = pg_f16_to_f32((uint16_t)(q << 8));
        break;
      }
      default: v[j] = (uint8_t)(rnd() & 0x7f); break;
      }
      b->want[i][j] = got;
    }
    cr_assert_eq(pg_st_writer_add(w, t->name, dt, sn, sd, v, n * es, &e), PG_OK, "%s", e.msg);
  }
  float xv[4] = {1, 2, 3, 4};
  const uint64_t xd = 4;
  if (c->extra) cr_assert_eq(pg_st_writer_add(w, c->extra, PG_ST_F32, 1, &xd, xv, 16, &e), PG_OK);
  cr_assert_eq(pg_st_writer_write(w, path, &e), PG_OK, "%s", e.msg);
  pg_st_writer_free(w);
  for (size_t i = 0; i < b->nt; i++) free(data[i]);
  free(data);
}

static void st_path(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", tmp, name);
}

static void expect_st_refusal(const pg_arch *arch, const char *path, int want, const char *n1,
                              const char *n2) {
  pg_model *m = (pg_model *)&m;
  pg_err e;
  const int rc = pg_model_load_safetensors(&m, arch, path, &e);
  cr_assert_eq(rc, want, "got %s (%s), want %s", pg_status_name(rc), e.msg, pg_status_name(want));
  cr_assert_null(m);
  cr_assert(strncmp(e.msg, path, strlen(path)) == 0, "does not name the file: %s", e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
  if (n1) cr_assert(strstr(e.msg, n1), "'%s' not in: %s", n1, e.msg);
  if (n2) cr_assert(strstr(e.msg, n2), "'%s' not in: %s", n2, e.msg);
}

Test(st, every_dtype_bit_exact) {
  char p[128];
  st_path(p, sizeof p, "w.safetensors");
  for (int shift = 0; shift < (int)N_DTYPES; shift++)
    for (int squeeze = 0; squeeze < 2; squeeze++) {
      cfg c = {.meta_arch = ARCH, .shift = shift, .squeeze = squeeze};
      built b;
      build_st(&c, &b, p, NULL);
      pg_model *m;
      pg_err e;
      cr_assert_eq(pg_model_load_safetensors(&m, NULL, p, &e), PG_OK, "%s", e.msg);
      cr_assert(pg_arch_equal(pg_model_arch(m), &b.arch));
      expect_model(m, &b, NULL);
      pg_model_free(m);
      /* an explicit arch gives the same model */
      cr_assert_eq(pg_model_load_safetensors(&m, &b.arch, p, &e), PG_OK, "%s", e.msg);
      expect_model(m, &b, NULL);
      pg_model_free(m);
      built_free(&b);
    }
}

Test(st, arch_given_or_in_metadata) {
  char p[128];
  st_path(p, sizeof p, "w.safetensors");
  cfg c = {0};
  built b;
  build_st(&c, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_NOT_FOUND, "arch.json", "pass an arch");
  pg_model *m;
  pg_err e;
  cr_assert_eq(pg_model_load_safetensors(&m, &b.arch, p, &e), PG_OK, "%s", e.msg);
  expect_model(m, &b, NULL);
  pg_model_free(m);
  built_free(&b);
  /* an invalid arch given by the caller */
  pg_arch bad;
  parse_arch(&bad, ARCH);
  bad.kv_heads = 5;
  expect_st_refusal(&bad, p, PG_E_ARG, "kv_heads", NULL);
  /* invalid metadata */
  cfg c2 = {.meta_arch = "{\"layers\": 0}"};
  build_st(&c2, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_ARG, "__metadata__ arch.json", "layers");
  built_free(&b);
  cfg c3 = {.meta_arch = "not json"};
  build_st(&c3, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_JSON, "__metadata__ arch.json", NULL);
  built_free(&b);
  /* a missing file */
  char q[128];
  st_path(q, sizeof q, "none.safetensors");
  expect_st_refusal(NULL, q, PG_E_NOT_FOUND, NULL, NULL);
}

/* The weights' own __metadata__ arch.json against an arch passed by the caller (pgverify and
 * pgpack --arch): a contradiction is refused with every differing option; an equal arch loads,
 * also as a checkpoint, and keeps the stored "follows" when it has none. */
Test(st, given_arch_must_agree_with_metadata) {
  char p[128], stored[1024], other[1024];
  st_path(p, sizeof p, "w.safetensors");
  arch_plus(stored, sizeof stored, "\"follows\": {\"record\": \"rec B\"}");
  arch_plus(other, sizeof other, "\"block\": {\"norm_eps\": 1e-6}");
  cfg c = {.meta_arch = stored};
  built b;
  build_st(&c, &b, p, NULL);
  pg_arch given;
  parse_arch(&given, other);
  expect_st_refusal(&given, p, PG_E_ARG, "contradicts the file's arch.json in 1 option",
                    "block.norm_eps 1e-06/1.1920928955078125e-07");
  pg_model *m;
  pg_err e;
  cr_assert_eq(pg_model_load_checkpoint(&m, &given, p, &e), PG_E_ARG);
  parse_arch(&given, ARCH);
  cr_assert_eq(pg_model_load_checkpoint(&m, &given, p, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(pg_model_arch(m)->follows.record, "rec B");
  expect_model(m, &b, NULL);
  pg_model_free(m);
  built_free(&b);
}

Test(st, refusals) {
  char p[128];
  st_path(p, sizeof p, "w.safetensors");
  built b;
  cfg c1 = {.meta_arch = ARCH, .drop = "skip_weights"};
  build_st(&c1, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_NOT_FOUND, "tensor skip_weights: missing", NULL);
  built_free(&b);
  cfg c2 = {.meta_arch = ARCH, .transpose = "blocks.1.attn.c_k.weight"};
  build_st(&c2, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_SIZE_MISMATCH, "blocks.1.attn.c_k.weight: shape [16, 8]",
                    "the arch's [8, 16]");
  built_free(&b);
  cfg c3 = {.meta_arch = ARCH, .grow = "ve_layer_scales.0"};
  build_st(&c3, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_SIZE_MISMATCH, "ve_layer_scales.0: shape [2]", NULL);
  built_free(&b);
  cfg c4 = {.meta_arch = ARCH, .extra = "lm_head.weight"};
  build_st(&c4, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_MALFORMED, "tensor lm_head.weight: not part of the arch", NULL);
  built_free(&b);
  cfg c5 = {.meta_arch = ARCH, .poison = "blocks.0.resid_mix", .poison_value = NAN};
  build_st(&c5, &b, p, NULL);
  expect_st_refusal(NULL, p, PG_E_ARG, "tensor blocks.0.resid_mix: element 3 is NaN", NULL);
  built_free(&b);
  for (int shift = 0; shift < (int)N_DTYPES; shift++) { /* infinity in every dtype that has one */
    cfg c6 = {.meta_arch = ARCH, .shift = shift, .poison = "blocks.1.attn.c_v.weight",
              .poison_value = INFINITY};
    build_st(&c6, &b, p, NULL);
    expect_st_refusal(NULL, p, PG_E_ARG, "tensor blocks.1.attn.c_v.weight: element 3 is infinite",
                      NULL);
    built_free(&b);
  }
  cfg c7 = {.meta_arch = ARCH};
  build_st(&c7, &b, p, "blocks.0.attn.q_gain");
  expect_st_refusal(NULL, p, PG_E_DTYPE, "blocks.0.attn.q_gain", "I8");
  built_free(&b);
}

/* ---- round trips through the tools ---- */

static const char *bin(const char *tool) {
  static char path[2][512];
  static int k = 0;
  const char *root = getenv("PG_BUILD_ROOT");
  cr_assert_not_null(root, "PG_BUILD_ROOT is not set (run through meson test)");
  k = (k + 1) % 2;
  snprintf(path[k], sizeof path[k], "%s/tools/%s", root, tool);
  return path[k];
}

static int run(const char *fmt, ...) {
  char cmd[2048], full[2400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  snprintf(full, sizeof full, "%s >%s/out 2>%s/err", cmd, tmp, tmp);
  const int st = system(full);
  cr_assert(WIFEXITED(st), "%s did not exit", cmd);
  return WEXITSTATUS(st);
}


static int ends_with(const char *s, const char *suf) {
  const size_t a = strlen(s), b = strlen(suf);
  return a >= b && !strcmp(s + a - b, suf);
}

/* Both models hold the same arch and the same parameters, bit for bit. */
static void expect_same(pg_model *x, pg_model *y) {
  cr_assert(pg_arch_equal(pg_model_arch(x), pg_model_arch(y)));
  cr_assert_eq(pg_model_param_count(x), pg_model_param_count(y));
  cr_assert(!memcmp(pg_model_params(x), pg_model_params(y), pg_model_param_count(x) * 4));
}

/* artifact → pgunpack --safetensors (f32) → model equals artifact → model. */
static void round_trip(const char *pgz) {
  char st[128];
  st_path(st, sizeof st, "x.safetensors");
  cr_assert_eq(run("%s --safetensors %s %s", bin("pgunpack"), st, pgz), 0);
  pg_model *a, *s;
  pg_err e;
  load_file_ok(&a, pgz);
  cr_assert_eq(pg_model_load_safetensors(&s, NULL, st, &e), PG_OK, "%s", e.msg);
  expect_same(a, s);
  pg_model_free(s);
  /* bf16 export: each value is the artifact's rounded to bf16 */
  cr_assert_eq(run("%s --safetensors %s --dtype bf16 %s", bin("pgunpack"), st, pgz), 0);
  cr_assert_eq(pg_model_load_safetensors(&s, NULL, st, &e), PG_OK, "%s", e.msg);
  const float *pa = pg_model_params(a), *ps = pg_model_params(s);
  for (size_t i = 0; i < pg_model_param_count(a); i++)
    cr_assert_eq(ps[i], pg_bf16_to_f32(pg_f32_to_bf16(pa[i])), "parameter %zu", i);
  pg_model_free(s);
  pg_model_free(a);
}

Test(trip, artifact_to_safetensors_to_model) {
  for (int shift = 0; shift < (int)N_SCHEMES; shift += 5) {
    cfg c = {.meta_arch = ARCH, .shift = shift, .squeeze = shift % 2};
    built b;
    build(&c, &b);
    char p[128];
    st_path(p, sizeof p, "b.pgz");
    pg_err e;
    cr_assert_eq(pg_file_write_atomic(p, b.buf, b.len, &e), PG_OK, "%s", e.msg);
    round_trip(p);
    built_free(&b);
  }
}

Test(trip, pgdemo_artifact_is_its_model) {
  char p[128];
  st_path(p, sizeof p, "demo.pgz");
  const char *variants[] = {
      "--layers 1 --dim 16 --heads 2 --kv-heads 1 --vocab 32 --codec none",
      "--layers 2 --dim 96 --heads 4 --kv-heads 2 --vocab 1100 --mlp-mult 8 --codec zstd-3 "
      "--packed --bits 5",
      "--layers 3 --dim 8 --heads 2 --kv-heads 2 --vocab 16 --mlp-mult 1 --codec none "
      "--embed-bits 7",
  };
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    cr_assert_eq(run("%s %s -o %s", bin("pgdemo"), variants[v], p), 0, "pgdemo %s", variants[v]);
    pg_artifact *a;
    pg_err e;
    cr_assert_eq(pg_artifact_open(&a, p, NULL, &e), PG_OK, "%s", e.msg);
    /* arch.json is a real arch in its canonical form */
    const pg_meta_entry *me = pg_artifact_meta_find(a, "arch.json");
    cr_assert(me && me->type == PG_META_STR);
    pg_arch arch;
    cr_assert_eq(pg_arch_parse(&arch, me->str, me->count, "demo", &e), PG_OK, "%s", e.msg);
    char *canon;
    cr_assert_eq(pg_arch_serialize(&arch, &canon, &e), PG_OK);
    cr_assert(strlen(canon) == me->count && !memcmp(canon, me->str, me->count));
    free(canon);
    pg_model *m;
    cr_assert_eq(pg_model_load_artifact(&m, a, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor_count(a), pg_model_tensor_count(m));
    /* the control tensors hold their init values (exact in fp16) */
    for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
      const pg_arch_tensor *t = pg_model_tensor(m, i);
      const float *x = pg_model_data(m, i);
      const uint64_t n = pg_arch_tensor_numel(t);
      const int scale = ends_with(t->name, "attn_scale") || ends_with(t->name, "mlp_scale");
      if (strstr(t->name, "q_gain"))
        for (uint64_t j = 0; j < n; j++) cr_assert_eq(x[j], (float)arch.attention.q_gain);
      if (scale || !strcmp(t->name, "skip_weights"))
        for (uint64_t j = 0; j < n; j++) cr_assert_eq(x[j], 1.0f, "%s", t->name);
      if (strstr(t->name, "resid_mix"))
        for (uint64_t j = 0; j < n; j++) cr_assert_eq(x[j], j < n / 2 ? 1.0f : 0.0f);
      if (strstr(t->name, ".weight")) {
        float mx = 0;
        for (uint64_t j = 0; j < n; j++) mx = fmaxf(mx, fabsf(x[j]));
        cr_assert_gt(mx, 0.0f, "%s is all zero", t->name);
      }
    }
    pg_model_free(m);
    pg_artifact_free(a);
    round_trip(p);
  }
}
