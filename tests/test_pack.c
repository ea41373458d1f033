/* test_pack.c: calibration (sources, the refusal of validation data, self-generation, Hessians
 * from the CPU engine), GPTQ against round-to-nearest on real Hessians, LQER, the packer's
 * artifact (dequantized bit for bit as a reader sees it, the same bytes on every run and thread
 * count, provenance and recipe) and the budget fit. spec/quant.md.
 *
 * The real data is the embedded default set (scripts/data.sh: KJV train shards); without it the
 * tests use the bytes of an English text as tokens. */
#include <criterion/criterion.h>
#include <glob.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "pgremote.h"
#include "pg_arch.h"
#include "pg_calib.h"
#include "pg_container.h"
#include "pg_gptq.h"
#include "pg_weights.h"
#include "pg_model.h"
#include "pg_model_testing.h"
#include "pg_ops.h"
#include "pg_pack.h"
#include "pg_shard.h"
#include "pgtest.h"

/* 2 physical layers, layer 0 visited twice (encoder [0, 0], decoder [1]): a looped layer. */
static const char *ARCH =
    "{\"vocab_size\": 1024, \"dim\": 64, \"layers\": 2, \"heads\": 4, \"kv_heads\": 2, "
    "\"mlp\": {\"hidden\": 256}, \"attention\": {\"gate\": \"dense_sigmoid\"}, "
    "\"structure\": {\"encoder\": [0, 0], \"decoder\": [1]}}";

static const char *TEXT =
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. And the Spirit of God moved upon "
    "the face of the waters. And God said, Let there be light: and there was light. And God "
    "saw the light, that it was good: and God divided the light from the darkness. ";

static pg_model *make_model(const char *json, uint64_t seed) {
  pg_arch a;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&a, json, strlen(json), "t.json", &e), PG_OK, "%s", e.msg);
  pg_model *m = NULL;
  cr_assert_eq(pg_model_create(&m, &a, &e), PG_OK, "%s", e.msg);
  pg_model_init_random(m, seed, 0.05);
  return m;
}

static const char *train_glob(void) {
  static char pat[1024];
  const char *root = getenv("PG_SOURCE_ROOT");
  snprintf(pat, sizeof pat, "%s/data/kjv/shards/fineweb_train_*.bin", root ? root : ".");
  glob_t g;
  int found = glob(pat, 0, NULL, &g) == 0 && g.gl_pathc > 0;
  if (found) globfree(&g);
  return found ? pat : NULL;
}

/* Calibration rows from the KJV shards, or from the text's bytes. */
static void calib_rows(pg_calib_set *c, int nseq, int T) {
  const char *pat = train_glob();
  pg_err e;
  if (pat) {
    cr_assert_eq(pg_calib_from_shards(c, pat, NULL, nseq, T, 1024, &e), PG_OK, "%s", e.msg);
    return;
  }
  memset(c, 0, sizeof *c);
  c->nseq = nseq;
  c->T = T;
  c->tokens = malloc((size_t)nseq * (size_t)T * sizeof *c->tokens);
  size_t n = strlen(TEXT);
  for (size_t i = 0; i < (size_t)nseq * (size_t)T; i++)
    c->tokens[i] = (unsigned char)TEXT[(i * 7 + i / n) % n];
  snprintf(c->source, sizeof c->source, "test text");
}

static pg_calib_hessians collect(pg_model *m, const pg_calib_set *c, int threads) {
  pg_engine e = pg_engine_cpu(threads);
  pg_calib_hessians h;
  pg_err err;
  cr_assert_eq(pg_calib_collect(&h, m, &e, c, 4, threads, NULL, NULL, &err), PG_OK, "%s",
               err.msg);
  return h;
}

/* ---- categories ---- */

Test(pack, categories) {
  cr_assert_eq(pg_pack_classify("tok_emb.weight"), PG_CAT_EMBED);
  cr_assert_eq(pg_pack_classify("lm_head.weight"), PG_CAT_EMBED);
  cr_assert_eq(pg_pack_classify("blocks.3.mlp.fc.weight"), PG_CAT_MLP);
  cr_assert_eq(pg_pack_classify("blocks.0.attn.c_q.weight"), PG_CAT_ATTN);
  cr_assert_eq(pg_pack_classify("bigram.proj.weight"), PG_CAT_OTHER);
  cr_assert_eq(pg_pack_classify("ve_shared.embed.weight"), PG_CAT_OTHER);
  cr_assert_eq(pg_pack_cat_parse("mlp"), PG_CAT_MLP);
  cr_assert_eq(pg_pack_cat_parse("mlps"), -1);
}

/* ---- calibration sources ---- */

static void write_shard(const char *dir, const char *prefix, const uint16_t *t, size_t n) {
  pg_shard_writer *w;
  pg_err e;
  cr_assert_eq(pg_shard_writer_open(&w, dir, prefix, 1 << 20, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_append(w, t, n, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_shard_writer_finish(w, &e), PG_OK, "%s", e.msg);
  pg_shard_writer_free(w);
}

Test(pack, calib_refuses_validation) {
  char dir[64], pat[256], vpat[256], other[256];
  pgtest_mkdtemp(dir, "pgpack");
  uint16_t tok[600];
  for (int i = 0; i < 600; i++) tok[i] = (uint16_t)((i * 37) % 1000);
  /* a training shard, a validation shard with the same tokens, and one with other tokens */
  char d1[128], d2[128], d3[128];
  snprintf(d1, sizeof d1, "%s/a", dir);
  snprintf(d2, sizeof d2, "%s/b", dir);
  snprintf(d3, sizeof d3, "%s/c", dir);
  mkdir(d1, 0700);
  mkdir(d2, 0700);
  mkdir(d3, 0700);
  write_shard(d1, "fineweb_train_", tok, 600);
  write_shard(d2, "fineweb_val_", tok, 600);
  tok[5] ^= 1;
  write_shard(d3, "fineweb_val_", tok, 600);
  snprintf(pat, sizeof pat, "%s/fineweb_train_*.bin", d1);
  snprintf(vpat, sizeof vpat, "%s/fineweb_val_*.bin", d2);
  snprintf(other, sizeof other, "%s/fineweb_val_*.bin", d3);
  pg_calib_set c;
  pg_err e;
  /* the same tokens under another name */
  cr_assert_eq(pg_calib_from_shards(&c, pat, vpat, 4, 100, 1024, &e), PG_E_ILLEGAL);
  cr_assert(strstr(e.msg, "same tokens"), "%s", e.msg);
  /* the validation files themselves (by name and by path) */
  cr_assert_eq(pg_calib_from_shards(&c, vpat, NULL, 4, 100, 1024, &e), PG_E_ILLEGAL);
  cr_assert_eq(pg_calib_from_shards(&c, other, other, 4, 100, 1024, &e), PG_E_ILLEGAL);
  /* different validation tokens: accepted; the hash covers exactly the tokens used */
  cr_assert_eq(pg_calib_from_shards(&c, pat, other, 4, 100, 1024, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(c.nseq, 4);
  cr_assert_eq(c.tokens[0], 0);
  cr_assert_eq(c.tokens[101], (101 * 37) % 1000);
  uint64_t h1 = c.xxh64;
  cr_assert(strstr(c.source, "first 400 tokens"), "%s", c.source);
  pg_calib_free(&c);
  cr_assert_eq(pg_calib_from_shards(&c, pat, NULL, 2, 200, 1024, &e), PG_OK);
  cr_assert_eq(c.xxh64, h1, "same 400 tokens, other rows: same hash");
  pg_calib_free(&c);
  cr_assert_eq(pg_calib_from_shards(&c, pat, NULL, 4, 101, 1024, &e), PG_OK);
  cr_assert_neq(c.xxh64, h1);
  pg_calib_free(&c);
  /* too few tokens, a token outside the vocabulary */
  cr_assert_eq(pg_calib_from_shards(&c, pat, NULL, 7, 100, 1024, &e), PG_E_ARG);
  cr_assert_eq(pg_calib_from_shards(&c, pat, NULL, 4, 100, 500, &e), PG_E_TOKEN_RANGE);
  pgtest_rm_rf(dir);
}

Test(pack, calib_self_deterministic) {
  pg_model *m = make_model(ARCH, 3);
  pg_engine e = pg_engine_cpu(1);
  pg_calib_set a, b, c, g;
  pg_err err;
  cr_assert_eq(pg_calib_self(&a, m, &e, 3, 12, 0.8, 42, 2, NULL, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_calib_self(&b, m, &e, 3, 12, 0.8, 42, 2, NULL, NULL, &err), PG_OK);
  cr_assert_eq(pg_calib_self(&c, m, &e, 3, 12, 0.8, 43, 2, NULL, NULL, &err), PG_OK);
  cr_assert_eq(memcmp(a.tokens, b.tokens, 36 * sizeof *a.tokens), 0);
  cr_assert_eq(a.xxh64, b.xxh64);
  cr_assert_neq(memcmp(a.tokens, c.tokens, 36 * sizeof *a.tokens), 0);
  for (int i = 0; i < 36; i++) cr_assert(a.tokens[i] >= 0 && a.tokens[i] < 1024);
  /* temperature 0: every next token is the argmax of the model's logits at the last position */
  cr_assert_eq(pg_calib_self(&g, m, &e, 1, 6, 0.0, 7, 1, NULL, NULL, &err), PG_OK);
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
  float *z = malloc(1024 * sizeof *z);
  double nll[8];
  for (int t = 1; t < 6; t++) {
    pg_batch bt = {.B = 1, .T = t, .ids = g.tokens, .logits_last = z};
    cr_assert_eq(pg_model_forward(m, tp, &bt, NULL, nll, NULL, &err), PG_OK);
    int best = 0;
    for (int v = 1; v < 1024; v++)
      if (z[v] > z[best]) best = v;
    cr_assert_eq(g.tokens[t], best, "step %d", t);
  }
  free(z);
  pg_tape_free(tp);
  cr_assert(strstr(a.source, "self-generated"));
  pg_calib_free(&a);
  pg_calib_free(&b);
  pg_calib_free(&c);
  pg_calib_free(&g);
  pg_model_free(m);
}

/* ---- Hessians ---- */

Test(pack, hessians_shared_looped_tied) {
  pg_model *m = make_model(ARCH, 5);
  pg_calib_set c;
  calib_rows(&c, 4, 32);
  pg_calib_hessians h = collect(m, &c, 1);
  long q0 = pg_model_find(m, "blocks.0.attn.c_q.weight"),
       k0 = pg_model_find(m, "blocks.0.attn.c_k.weight"),
       v0 = pg_model_find(m, "blocks.0.attn.c_v.weight"),
       p0 = pg_model_find(m, "blocks.0.attn.proj.weight"),
       q1 = pg_model_find(m, "blocks.1.attn.c_q.weight"),
       f1 = pg_model_find(m, "blocks.1.mlp.proj.weight"), te = pg_model_find(m, "tok_emb.weight"),
       g0 = pg_model_find(m, "blocks.0.attn.attn_gate_w");
  cr_assert(h.slot[q0] >= 0 && h.slot[q0] == h.slot[k0] && h.slot[q0] == h.slot[v0]);
  cr_assert_neq(h.slot[q0], h.slot[p0]);
  cr_assert_eq(h.slot[g0], -1, "gates take no Hessian");
  cr_assert_eq(h.tokens, 128u);
  /* layer 0 is visited twice, layer 1 once */
  cr_assert_eq(h.H[h.slot[q0]].rows, 256u);
  cr_assert_eq(h.H[h.slot[q1]].rows, 128u);
  cr_assert_eq(h.H[h.slot[f1]].n, 256u);
  cr_assert_eq(h.H[h.slot[te]].n, 64u);
  cr_assert_eq(h.H[h.slot[te]].rows, 128u);
  /* any thread count: the same bits */
  pg_calib_hessians h2 = collect(m, &c, 3);
  cr_assert_eq(h2.nh, h.nh);
  for (size_t s = 0; s < h.nh; s++)
    cr_assert_eq(memcmp(h.H[s].h, h2.H[s].h, (size_t)h.H[s].n * h.H[s].n * sizeof(double)), 0);
  pg_calib_hessians_free(&h);
  pg_calib_hessians_free(&h2);
  pg_calib_free(&c);
  pg_model_free(m);
}

/* Calibration on the remote test engine (memory the host cannot read, tests/pgremote.h): the
 * observer gets the activations downloaded, and the self-generated rows and the Hessians are the
 * CPU engine's bits. */
Test(pack, calibration_on_the_remote_engine) {
  pg_model *m = make_model(ARCH, 5);
  pg_calib_set c;
  calib_rows(&c, 4, 32);
  pg_calib_hessians h = collect(m, &c, 2), h2;
  pgremote *r = pgremote_new(2);
  pg_err err;
  cr_assert_eq(pg_calib_collect(&h2, m, &r->outer, &c, 4, 2, NULL, NULL, &err), PG_OK, "%s",
               err.msg);
  cr_assert_eq(h2.nh, h.nh);
  cr_assert_eq(h2.tokens, h.tokens);
  for (size_t s = 0; s < h.nh; s++)
    cr_assert_eq(memcmp(h.H[s].h, h2.H[s].h, (size_t)h.H[s].n * h.H[s].n * sizeof(double)), 0);
  pg_calib_set a, b;
  pg_engine e = pg_engine_cpu(2);
  cr_assert_eq(pg_calib_self(&a, m, &e, 3, 12, 0.8, 42, 2, NULL, NULL, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_calib_self(&b, m, &r->outer, 3, 12, 0.8, 42, 2, NULL, NULL, &err), PG_OK, "%s",
               err.msg);
  cr_assert_eq(memcmp(a.tokens, b.tokens, 36 * sizeof *a.tokens), 0);
  pg_calib_free(&a);
  pg_calib_free(&b);
  pg_calib_hessians_free(&h);
  pg_calib_hessians_free(&h2);
  pg_calib_free(&c);
  pg_model_free(m);
  cr_assert_eq(r->live, 0, "every engine buffer is freed");
  pgremote_free(r);
}

/* ---- GPTQ against round-to-nearest on real Hessians ---- */

Test(pack, gptq_beats_rtn_on_real_hessians) {
  pg_model *m = make_model(ARCH, 9);
  pg_calib_set c;
  calib_rows(&c, 8, 64);
  pg_calib_hessians h = collect(m, &c, 2);
  double sum_g = 0, sum_r = 0;
  size_t n = 0;
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    if (h.slot[i] < 0) continue;
    const pg_arch_tensor *t = pg_model_tensor(m, i);
    if (pg_arch_tensor_numel(t) <= 1024) continue;
    uint64_t rows = t->shape[0], cols = pg_arch_tensor_numel(t) / rows;
    const pg_hessian *H = &h.H[h.slot[i]];
    pg_gptq_prep prep;
    pg_err e;
    pg_gptq_opts go = pg_gptq_defaults();
    cr_assert_eq(pg_gptq_prepare(H, &go, &prep, &e), PG_OK, "%s", e.msg);
    int8_t *q = malloc(rows * cols);
    uint16_t *s = malloc(rows * sizeof *s);
    pg_qmat_stats sg, sr;
    pg_qmat_opts o = {.scale_rule = PG_SCALING_SDCLIP, .round_rule = PG_ROUND_GPTQ, .bits = 6,
                      .k = 12.85f, .prep = &prep, .nthreads = 2};
    const float *W = pg_model_data(m, i);
    cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, H, q, s, &sg, &e), PG_OK, "%s", e.msg);
    o.round_rule = PG_ROUND_RTN;
    cr_assert_eq(pg_quant_matrix(W, rows, cols, &o, H, q, s, &sr, &e), PG_OK, "%s", e.msg);
    cr_assert(sg.herr < sr.herr, "%s: GPTQ %g vs RTN %g", t->name, sg.herr, sr.herr);
    sum_g += sg.herr;
    sum_r += sr.herr;
    n++;
    free(q);
    free(s);
    pg_gptq_prep_free(&prep);
  }
  cr_assert(n >= 10, "%zu matrices", n);
  cr_log_info("output error, GPTQ/RTN over %zu matrices: %.4f", n, sum_g / sum_r);
  cr_assert(sum_g <= 0.8 * sum_r, "GPTQ's output error is %.1f%% of RTN's, not <= 80%%",
            100 * sum_g / sum_r);
  pg_calib_hessians_free(&h);
  pg_calib_free(&c);
  pg_model_free(m);
}

/* ---- the packer ---- */

static pg_pack_recipe small_recipe(void) {
  pg_pack_recipe r = pg_pack_recipe_default();
  r.passthrough_max = 1024; /* so that this small model's matrices are quantized */
  r.codec_best = 0;
  r.codec = (pg_codec_spec){.codec = PG_CODEC_ZSTD, .level = 19};
  r.nthreads = 1;
  return r;
}

static uint8_t *build(pg_packer *p, double mu, size_t *len, uint64_t *counted) {
  pg_pack_extras x = {.writer = "test", .count_tokenizer = 1};
  uint8_t *out = NULL;
  pg_err e;
  cr_assert_eq(pg_packer_build(p, &x, mu, &out, len, counted, &e), PG_OK, "%s", e.msg);
  return out;
}

/* Layout 2 (transposed, rows sorted) and container 2 against layout 1 in container 1: the same
 * quantization reads back as the same tensors, and the layout-2 file stores its matrices with
 * order 1 and (row sort always) a permutation. */
Test(pack, layouts_and_containers_read_the_same) {
  pg_model *m = make_model(ARCH, 11);
  pg_pack_recipe r = small_recipe();
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  uint8_t *b[2];
  size_t len[2];
  uint64_t counted;
  cr_assert_eq(pg_packer_set_layout(p, 1, PG_ROW_SORT_AUTO, 1), PG_OK);
  b[0] = build(p, 1.0, &len[0], &counted);
  cr_assert_eq(pg_packer_set_layout(p, 2, PG_ROW_SORT_ALWAYS, 2), PG_OK);
  b[1] = build(p, 1.0, &len[1], &counted);
  cr_assert_eq(pg_packer_set_layout(p, 3, PG_ROW_SORT_AUTO, 2), PG_E_ARG);
  pg_artifact *a[2];
  for (int k = 0; k < 2; k++) {
    cr_assert_eq(pg_artifact_open_mem(&a[k], b[k], len[k], "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_check(a[k], &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_container_version(a[k]), k + 1);
    cr_assert_eq(pg_artifact_quant_layout_version(a[k]), k + 1);
  }
  size_t n2 = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a[0]); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a[0], i);
    int64_t j = pg_artifact_tensor_find(a[1], t->name);
    cr_assert_geq(j, 0);
    const pg_tensor_info *t2 = pg_artifact_tensor(a[1], (uint32_t)j);
    cr_assert_eq(t->order + t->perm, 0);
    float *x = malloc(t->numel * 4 + 4), *y = malloc(t->numel * 4 + 4);
    cr_assert_eq(pg_artifact_tensor_dequant(a[0], i, x, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor_dequant(a[1], (uint32_t)j, y, &e), PG_OK, "%s", e.msg);
    cr_assert(!memcmp(x, y, t->numel * 4), "%s differs", t->name);
    free(x);
    free(y);
    if (pg_qtype_is_int(t2->qtype) && !strstr(t2->name, "attn_gate_w")) {
      cr_assert(t2->order == PG_ORDER_COLS && t2->perm == PG_PERM_STORED, "%s", t2->name);
      n2++;
    }
  }
  cr_assert_gt(n2, 0);
  for (int k = 0; k < 2; k++) {
    pg_artifact_free(a[k]);
    free(b[k]);
  }
  pg_packer_free(p);
  pg_model_free(m);
}

/* --codec best stores layout 2's row permutations with codec 5 (perm) in container 2, smaller
 * than every general codec, and never in container 1 (which predates it). */
Test(pack, best_codec_stores_row_perms_as_ranks) {
  pg_model *m = make_model(ARCH, 11);
  pg_pack_recipe r = small_recipe();
  r.codec_best = 1;
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  for (int cv = 2; cv >= 1; cv--) {
    cr_assert_eq(pg_packer_set_layout(p, 2, PG_ROW_SORT_ALWAYS, cv), PG_OK);
    size_t len;
    uint64_t counted;
    uint8_t *b = build(p, 1.0, &len, &counted);
    pg_artifact *a;
    cr_assert_eq(pg_artifact_open_mem(&a, b, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
    int perm = 0;
    for (uint32_t s = 0; s < pg_artifact_section_count(a); s++)
      perm += pg_artifact_section(a, s)->codec.codec == PG_CODEC_PERM;
    cr_assert_eq(perm, cv == 2 ? 1 : 0, "container %d: %d perm sections", cv, perm);
    pg_artifact_free(a);
    free(b);
  }
  pg_packer_free(p);
  pg_model_free(m);
}

/* The layout hint of the section holding LQER factors (codec qc's segments): factor A in rows of
 * the rank, B in rows of cols, so that qc's contexts see their rows (it was rows of 1). */
Test(pack, lqer_factors_hint_their_rows) {
  pg_model *m = make_model(ARCH, 11);
  pg_pack_recipe r = small_recipe();
  r.lqer_force = 1;
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  size_t len;
  uint64_t counted;
  uint8_t *b = build(p, 1.0, &len, &counted);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, b, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  size_t nlq = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (!t->lqer_rank) continue;
    const pg_part *pa = &t->parts[PG_PART_LQER_A], *pb = &t->parts[PG_PART_LQER_B];
    pg_qc_seg *segs;
    size_t ns;
    cr_assert_eq(pg_artifact_section_segments(a, pa->section, &segs, &ns, &e), PG_OK);
    int sa = 0, sb = 0;
    for (uint64_t k = 0, at = 0; k < ns; at += segs[k].len, k++) {
      sa |= at == pa->offset && segs[k].len == pa->size && segs[k].row == t->lqer_rank;
      sb |= at == pb->offset && segs[k].len == pb->size && segs[k].row == t->cols;
    }
    cr_assert(sa && sb, "%s: LQER factors without their row lengths", t->name);
    free(segs);
    nlq++;
  }
  cr_assert_gt(nlq, 0);
  pg_artifact_free(a);
  free(b);
  pg_packer_free(p);
  pg_model_free(m);
}

Test(pack, artifact_dequantizes_as_the_packer_does) {
  pg_model *m = make_model(ARCH, 11);
  pg_calib_set c;
  calib_rows(&c, 4, 32);
  pg_calib_hessians h = collect(m, &c, 1);
  pg_pack_recipe r = small_recipe();
  r.lqer_force = 1; /* make sure LQER parts are in the file */
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, &h, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  size_t len;
  uint64_t counted;
  uint8_t *bytes = build(p, 1.0, &len, &counted);
  pg_artifact *a;
  cr_assert_eq(pg_artifact_open_mem(&a, bytes, len, "t.pgz", NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  pg_model *ml, *md = make_model(ARCH, 0);
  cr_assert_eq(pg_model_load_artifact(&ml, a, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_dequant(p, md, &e), PG_OK);
  cr_assert_eq(memcmp(pg_model_params(ml), pg_model_params(md),
                      pg_model_param_count(md) * sizeof(float)), 0,
               "the artifact's weights are the packer's dequantized weights");
  /* routes: gates int8, small tensors f16, quantized matrices with LQER on 3 */
  size_t nl = 0, ng = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (t->lqer_rank) nl++;
    if (strstr(t->name, "attn_gate_w")) {
      ng++;
      cr_assert_eq(t->qtype, PG_QTYPE_INT8);
    }
    if (!strcmp(t->name, "tok_emb.weight")) cr_assert_eq(t->qtype, PG_QTYPE_INT7);
    if (!strcmp(t->name, "blocks.1.mlp.fc.weight")) {
      cr_assert_eq(t->qtype, PG_QTYPE_INT6);
      cr_assert_eq(t->qmin, -31);
      cr_assert_eq(t->qmax, 31);
    }
  }
  cr_assert_eq(nl, 3u);
  cr_assert_eq(ng, 2u);
  /* provenance and recipe */
  const pg_meta_entry *me = pg_artifact_meta_find(a, "quant.recipe");
  cr_assert_not_null(me);
  json_t *j = json_loadb(me->str, me->count, 0, NULL);
  cr_assert_not_null(j);
  cr_assert_str_eq(json_string_value(json_object_get(j, "rounding")), "gptq");
  json_t *jt = json_object_get(json_object_get(j, "tensors"), "blocks.0.mlp.fc.weight");
  cr_assert_not_null(jt);
  cr_assert_eq(json_real_value(json_object_get(jt, "damp_used")), 0.01);
  json_decref(j);
  cr_assert_not_null(pg_artifact_meta_find(a, "provenance.calib_source"));
  me = pg_artifact_meta_find(a, "quant.method");
  cr_assert(me && me->count == 11 && !memcmp(me->str, "gptq-sdclip", 11));
  pg_model_free(ml);
  pg_model_free(md);
  pg_artifact_free(a);
  free(bytes);
  pg_packer_free(p);
  pg_calib_hessians_free(&h);
  pg_calib_free(&c);
  pg_model_free(m);
}

Test(pack, same_bytes_every_run_and_thread_count) {
  pg_model *m = make_model(ARCH, 13);
  pg_calib_set c;
  calib_rows(&c, 4, 32);
  pg_calib_hessians h = collect(m, &c, 1);
  uint8_t *first = NULL;
  size_t first_len = 0;
  for (int threads = 1; threads <= 3; threads++) {
    pg_pack_recipe r = small_recipe();
    r.nthreads = threads;
    r.codec_best = threads == 3; /* best picks per section, deterministically too */
    pg_packer *p;
    pg_err e;
    cr_assert_eq(pg_packer_create(&p, m, &h, &r, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
    size_t len;
    uint64_t counted;
    uint8_t *b = build(p, 1.0, &len, &counted);
    if (threads == 3) {
      uint8_t *b2 = build(p, 1.0, &len, &counted);
      cr_assert_eq(memcmp(b, b2, len), 0);
      free(b2);
      /* the same values: equal tensors, whatever the codecs */
      pg_artifact *x1, *x2;
      cr_assert_eq(pg_artifact_open_mem(&x1, first, first_len, "1", NULL, &e), PG_OK);
      cr_assert_eq(pg_artifact_open_mem(&x2, b, len, "2", NULL, &e), PG_OK);
      for (uint32_t i = 0; i < pg_artifact_tensor_count(x1); i++) {
        const pg_tensor_info *t = pg_artifact_tensor(x1, i);
        float *d1 = malloc(t->numel * sizeof *d1), *d2 = malloc(t->numel * sizeof *d2);
        cr_assert_eq(pg_artifact_tensor_dequant(x1, i, d1, &e), PG_OK);
        cr_assert_eq(pg_artifact_tensor_dequant(x2, i, d2, &e), PG_OK);
        cr_assert_eq(memcmp(d1, d2, t->numel * sizeof *d1), 0, "%s", t->name);
        free(d1);
        free(d2);
      }
      pg_artifact_free(x1);
      pg_artifact_free(x2);
      free(b);
    } else if (!first) {
      first = b;
      first_len = len;
    } else {
      cr_assert_eq(len, first_len);
      cr_assert_eq(memcmp(b, first, len), 0, "threads %d", threads);
      free(b);
    }
    pg_packer_free(p);
  }
  free(first);
  pg_calib_hessians_free(&h);
  pg_calib_free(&c);
  pg_model_free(m);
}

/* A trained model's matrices carry outlier structure that SDClip clips; plant one (a rank-one
 * component of large magnitude in a few rows and columns) and LQER must repair most of it. */
Test(pack, lqer_lowers_the_error_it_touches) {
  pg_model *m = make_model(ARCH, 17);
  long fc = pg_model_find(m, "blocks.1.mlp.fc.weight");
  float *W = pg_model_data(m, (size_t)fc);
  for (int r = 0; r < 256; r += 8)
    for (int cc = 0; cc < 64; cc += 4) W[r * 64 + cc] += 1.5f * (r % 16 ? 1.0f : -1.0f);
  pg_pack_recipe r = small_recipe();
  r.round_rule = PG_ROUND_RTN;
  r.lqer_top_k = 3;
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  int touched = 0;
  for (size_t i = 0; i < pg_packer_tensor_count(p); i++) {
    const pg_pack_report *rp = pg_packer_report(p, i);
    if (rp->lqer_rank) {
      touched++;
      cr_assert(rp->lqer_after < rp->lqer_before, "%s", rp->name);
    }
    if ((long)i == fc) {
      cr_assert_eq(rp->lqer_rank, 4u, "the planted tensor gets LQER");
      cr_assert(rp->lqer_after < 0.7 * rp->lqer_before, "%s: %g -> %g", rp->name,
                rp->lqer_before, rp->lqer_after);
    }
  }
  cr_assert(touched >= 1);
  pg_packer_free(p);
  pg_model_free(m);
}

Test(pack, budget_fit_lands_just_under) {
  pg_model *m = make_model(ARCH, 19);
  pg_calib_set c;
  calib_rows(&c, 4, 32);
  pg_calib_hessians h = collect(m, &c, 2);
  pg_pack_recipe r = small_recipe();
  r.nthreads = 2;
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, &h, &r, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  size_t len;
  uint64_t base;
  free(build(p, 1.0, &len, &base));
  /* a budget the recipe overflows, and one it leaves room under */
  uint64_t budgets[2] = {base * 7 / 10, base * 12 / 10};
  for (int b = 0; b < 2; b++) {
    pg_pack_extras x = {.writer = "test", .count_tokenizer = 1, .budget = budgets[b]};
    pg_pack_fit_opts fo = {.budget = budgets[b], .tolerance = 0.005, .fit_cat = -1};
    pg_pack_trial *tr;
    size_t nt, ch;
    uint8_t *out;
    cr_assert_eq(pg_packer_fit(p, &x, &fo, &tr, &nt, &ch, &out, &len, &e), PG_OK, "%s", e.msg);
    cr_assert(tr[ch].counted <= budgets[b]);
    cr_assert(tr[ch].counted >= budgets[b] - budgets[b] / 200, "%llu of %llu after %zu trials",
              (unsigned long long)tr[ch].counted, (unsigned long long)budgets[b], nt);
    cr_assert_eq(len, tr[ch].file_bytes);
    cr_assert((b == 0) == (tr[ch].mu > 1.0), "k grows to shrink, falls to grow");
    free(tr);
    free(out);
  }
  /* with a bits choice for the embedding */
  pg_pack_extras x = {.writer = "test", .count_tokenizer = 1, .budget = base};
  pg_pack_fit_opts fo = {.budget = base, .tolerance = 0.005, .fit_cat = PG_CAT_EMBED,
                         .bits_mask = (1u << 6) | (1u << 8)};
  pg_pack_trial *tr;
  size_t nt, ch;
  uint8_t *out;
  cr_assert_eq(pg_packer_fit(p, &x, &fo, &tr, &nt, &ch, &out, &len, &e), PG_OK, "%s", e.msg);
  int saw6 = 0, saw8 = 0;
  for (size_t i = 0; i < nt; i++) {
    saw6 |= tr[i].bits[PG_CAT_EMBED] == 6;
    saw8 |= tr[i].bits[PG_CAT_EMBED] == 8;
  }
  cr_assert(saw6 && saw8);
  cr_assert(tr[ch].counted <= base);
  free(tr);
  free(out);
  /* a budget nothing reaches */
  pg_pack_fit_opts tiny = {.budget = 1000, .fit_cat = -1};
  cr_assert_eq(pg_packer_fit(p, &x, &tiny, &tr, &nt, &ch, &out, &len, &e), PG_E_LIMIT);
  free(tr);
  pg_packer_free(p);
  pg_calib_hessians_free(&h);
  pg_calib_free(&c);
  pg_model_free(m);
}

Test(pack, bad_recipes) {
  pg_model *m = make_model(ARCH, 1);
  pg_pack_recipe r = small_recipe();
  pg_packer *p;
  pg_err e;
  r.bits[PG_CAT_MLP] = 4;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_E_ARG);
  r = small_recipe();
  r.k[PG_CAT_ATTN] = 0;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_E_ARG);
  r = small_recipe();
  r.lqer_rank = 65;
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_E_ARG);
  r = small_recipe();
  cr_assert_eq(pg_packer_create(&p, m, NULL, &r, &e), PG_OK);
  size_t len;
  uint8_t *out;
  pg_pack_extras x = {0};
  cr_assert_eq(pg_packer_build(p, &x, 1.0, &out, &len, NULL, &e), PG_E_ARG, "not quantized yet");
  cr_assert_eq(pg_packer_quantize(p, -1.0, &e), PG_E_ARG);
  pg_packer_free(p);
  pg_model_free(m);
}

/* ---- the loss-aware fit (pg_fit.h) ---- */

#include "pg_fit.h"
#include "pg_io.h"

typedef struct fitfx {
  pg_model *m;
  pg_calib_set c;
  pg_calib_hessians h;
  pg_packer *p;
} fitfx;

static void fit_setup(fitfx *f, uint64_t seed, int threads) {
  f->m = make_model(ARCH, seed);
  calib_rows(&f->c, 4, 32);
  f->h = collect(f->m, &f->c, threads);
  pg_pack_recipe r = small_recipe();
  r.nthreads = threads;
  pg_err e;
  cr_assert_eq(pg_packer_create(&f->p, f->m, &f->h, &r, &e), PG_OK, "%s", e.msg);
}

static void fit_teardown(fitfx *f) {
  pg_packer_free(f->p);
  pg_calib_hessians_free(&f->h);
  pg_calib_free(&f->c);
  pg_model_free(f->m);
}

/* The recipe's count at k × 1: the budgets below are fractions of it. */
static uint64_t recipe_count(pg_packer *p) {
  pg_err e;
  cr_assert_eq(pg_packer_quantize(p, 1.0, &e), PG_OK, "%s", e.msg);
  size_t len;
  uint64_t counted;
  free(build(p, 1.0, &len, &counted));
  return counted;
}

/* measure_max as pg_fit_opts (< 0: the choice by expected loss alone) */
static int fit_loss_m(fitfx *f, uint64_t budget, const double *sens, int measure_max,
                      pg_fit_result *res, uint8_t **out, size_t *len) {
  pg_pack_extras x = {.writer = "test", .count_tokenizer = 1, .budget = budget};
  pg_fit_opts o = {.budget = budget, .tolerance = 0.005, .calib = &f->c, .sens = sens,
                   .measure_max = measure_max};
  pg_err e = {0};
  int rc = pg_packer_fit_loss(f->p, &x, &o, res, out, len, &e);
  cr_assert(rc == PG_OK || rc == PG_E_LIMIT, "%s", e.msg);
  return rc;
}

static int fit_loss(fitfx *f, uint64_t budget, const double *sens, pg_fit_result *res,
                    uint8_t **out, size_t *len) {
  return fit_loss_m(f, budget, sens, 0, res, out, len);
}

/* Two tensors of the same shape and kind, one declared a thousand times more sensitive: at a
 * budget that cannot give every tensor its best option, the sensitive one gets more bits; with
 * the sensitivities swapped, the other one does. */
Test(pack, fit_loss_gives_the_sensitive_tensor_more_bits) {
  fitfx f;
  fit_setup(&f, 23, 1);
  uint64_t base = recipe_count(f.p);
  long t0 = pg_model_find(f.m, "blocks.0.mlp.fc.weight");
  long t1 = pg_model_find(f.m, "blocks.1.mlp.fc.weight");
  cr_assert(t0 >= 0 && t1 >= 0);
  size_t nt = pg_model_tensor_count(f.m);
  double *sens = malloc(nt * sizeof *sens);
  for (int swap = 0; swap < 2; swap++) {
    for (size_t i = 0; i < nt; i++) sens[i] = 1.0;
    long hot = swap ? t0 : t1, cold = swap ? t1 : t0;
    sens[hot] = 1000.0;
    pg_fit_result res;
    uint8_t *out;
    size_t len;
    cr_assert_eq(fit_loss_m(&f, base, sens, -1, &res, &out, &len), PG_OK);
    const pg_pack_report *rh = pg_packer_report(f.p, (size_t)hot);
    const pg_pack_report *rc = pg_packer_report(f.p, (size_t)cold);
    cr_assert_gt(rh->bits, rc->bits, "swap %d: %s %u bits, %s %u bits", swap, rh->name, rh->bits,
                 rc->name, rc->bits);
    cr_assert(res.points[res.chosen].counted <= base);
    cr_assert(res.points[res.chosen].counted >= base - base / 200);
    /* the artifact records the choice per tensor, as the packer made it */
    pg_artifact *a;
    pg_err e;
    cr_assert_eq(pg_artifact_open_mem(&a, out, len, "fit.pgz", NULL, &e), PG_OK, "%s", e.msg);
    const pg_meta_entry *me = pg_artifact_meta_find(a, "quant.recipe");
    json_t *j = json_loadb(me->str, me->count, 0, NULL);
    cr_assert_not_null(j);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "fit"), "method")),
                     "loss");
    json_t *jt = json_object_get(json_object_get(j, "tensors"), rh->name);
    cr_assert_eq(json_integer_value(json_object_get(jt, "bits")), rh->bits);
    cr_assert_float_eq(json_real_value(json_object_get(jt, "k")), rh->k, 1e-6);
    cr_assert_not_null(json_object_get(jt, "k_factor"));
    cr_assert_float_eq(json_real_value(json_object_get(jt, "sensitivity")), 1000.0, 1e-9);
    json_decref(j);
    pg_artifact_free(a);
    free(out);
    pg_fit_result_free(&res);
  }
  free(sens);
  fit_teardown(&f);
}

/* A model whose blocks.0.mlp.fc.weight has every row the same (row r = ± row 0): its
 * quantization error has rank 1 at every option, and LQER all but removes it. The loss fit at
 * 80% of the recipe's bytes with LQER (lqer_top_k 3) or without it (0); *bits the planted
 * tensor's bits, *lqer its LQER rank. Checks that the expected Δloss the fit reports per tensor
 * is its sensitivity times the Hessian error of the weights written, LQER included. */
static void fit_planted(int lqer_top_k, unsigned *bits, unsigned *lqer) {
  pg_model *m = make_model(ARCH, 41);
  long fc = pg_model_find(m, "blocks.0.mlp.fc.weight");
  cr_assert(fc >= 0);
  float *W = pg_model_data(m, (size_t)fc);
  for (int r = 1; r < 256; r++)
    for (int c = 0; c < 64; c++) W[r * 64 + c] = (r % 2 ? -1.0f : 1.0f) * W[c];
  pg_calib_set cs;
  calib_rows(&cs, 4, 32);
  pg_calib_hessians h = collect(m, &cs, 1);
  pg_pack_recipe r = small_recipe();
  r.lqer_top_k = (unsigned)lqer_top_k;
  pg_packer *p;
  pg_err e;
  cr_assert_eq(pg_packer_create(&p, m, &h, &r, &e), PG_OK, "%s", e.msg);
  uint64_t budget = recipe_count(p) * 8 / 10;
  size_t nt = pg_model_tensor_count(m);
  double *sens = malloc(nt * sizeof *sens);
  for (size_t i = 0; i < nt; i++) sens[i] = 1.0;
  pg_pack_extras x = {.writer = "test", .count_tokenizer = 1, .budget = budget};
  pg_fit_opts o = {.budget = budget, .tolerance = 0.005, .sens = sens, .measure_max = -1};
  pg_fit_result res;
  uint8_t *out;
  size_t len;
  cr_assert_eq(pg_packer_fit_loss(p, &x, &o, &res, &out, &len, &e), PG_OK, "%s", e.msg);
  pg_model *dq = NULL;
  cr_assert_eq(pg_model_create(&dq, pg_model_arch(m), &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_packer_dequant(p, dq, &e), PG_OK, "%s", e.msg);
  int corrected = 0;
  for (size_t i = 0; i < nt; i++) {
    const pg_pack_report *rp = pg_packer_report(p, i);
    if (rp->route != PG_ROUTE_QUANT) continue;
    corrected += rp->lqer_rank > 0;
    cr_assert(h.slot[i] >= 0, "%s has a Hessian", rp->name);
    double herr = pg_quant_hessian_err(pg_model_data(m, i), pg_model_data(dq, i),
                                       pg_model_tensor(m, i)->shape[0],
                                       &h.H[h.slot[i]], 1);
    cr_assert(fabs(res.dloss[i] - res.sens[i] * herr) <= 1e-9 * res.sens[i] * herr,
              "%s (LQER rank %u): expected dloss %.12g, written error %.12g", rp->name,
              rp->lqer_rank, res.dloss[i], res.sens[i] * herr);
  }
  cr_assert(lqer_top_k == 0 || corrected >= 1, "LQER is in the artifact");
  *bits = pg_packer_report(p, (size_t)fc)->bits;
  *lqer = pg_packer_report(p, (size_t)fc)->lqer_rank;
  pg_model_free(dq);
  free(out);
  pg_fit_result_free(&res);
  free(sens);
  pg_packer_free(p);
  pg_calib_hessians_free(&h);
  pg_calib_free(&cs);
  pg_model_free(m);
}

/* LQER inside the proxy (spec/quant.md §6.2 step 1): with the recipe's LQER, the planted
 * tensor's options are priced after the correction they get (plus the factors' bytes), so the
 * fit corrects it and spends fewer bits on it than a fit without LQER does; the expected Δloss
 * is that of the weights written in both. A proxy blind to LQER gives it the same bits both
 * times and reports the uncorrected error of every tensor LQER touched. */
Test(pack, fit_loss_prices_lqer) {
  unsigned b_lqer, r_lqer, b_none, r_none;
  fit_planted(3, &b_lqer, &r_lqer);
  fit_planted(0, &b_none, &r_none);
  cr_assert_eq(r_none, 0u);
  cr_assert_eq(r_lqer, 4u, "the planted tensor is corrected");
  cr_assert_lt(b_lqer, b_none, "bits of the planted tensor: %u with LQER, %u without", b_lqer,
               b_none);
}

/* Mean next-token NLL of the calibration rows (each row predicting its own next tokens). */
static double rows_loss(pg_model *m, const pg_calib_set *c) {
  pg_engine e = pg_engine_cpu(1);
  pg_tape *tp;
  cr_assert_eq(pg_tape_create(&tp, &e, 0), PG_OK);
  int T = c->T - 1;
  int32_t *ids = malloc((size_t)T * sizeof *ids), *tg = malloc((size_t)T * sizeof *tg);
  double *nll = malloc((size_t)T * sizeof *nll), s = 0;
  for (int r = 0; r < c->nseq; r++) {
    for (int t = 0; t < T; t++) {
      ids[t] = c->tokens[r * c->T + t];
      tg[t] = c->tokens[r * c->T + t + 1];
    }
    pg_batch bt = {.B = 1, .T = T, .ids = ids, .targets = tg};
    pg_err err;
    cr_assert_eq(pg_model_forward(m, tp, &bt, NULL, nll, NULL, &err), PG_OK, "%s", err.msg);
    for (int t = 0; t < T; t++) s += nll[t];
  }
  pg_tape_free(tp);
  free(ids);
  free(tg);
  free(nll);
  return s / ((double)c->nseq * T);
}

/* The sensitivities put every tensor's Hessian-weighted error on the scale of the loss: a
 * tensor's sensitivity times the error E of its probe (the recipe's bits, k × 1) is the
 * calibration loss's
 * curvature along E, (L(W − E) + L(W + E))/2 − L(W), quantizing that tensor alone, measured here
 * independently. */
Test(pack, fit_loss_sensitivity_is_the_measured_loss_increase) {
  fitfx f;
  fit_setup(&f, 29, 1);
  uint64_t base = recipe_count(f.p);
  pg_fit_result res;
  uint8_t *out;
  size_t len;
  cr_assert_eq(fit_loss(&f, base, NULL, &res, &out, &len), PG_OK);
  double l0 = rows_loss(f.m, &f.c);
  cr_assert_float_eq(res.base_loss, l0, 1e-9 * fabs(l0));
  size_t checked = 0;
  for (size_t i = 0; i < res.nt; i++) {
    if (pg_packer_report(f.p, i)->route != PG_ROUTE_QUANT) continue;
    cr_assert(isfinite(res.sens[i]) && res.sens[i] > 0, "%s", pg_packer_report(f.p, i)->name);
    uint64_t n = pg_arch_tensor_numel(pg_model_tensor(f.m, i));
    float *wh = malloc((size_t)n * sizeof *wh), *keep = malloc((size_t)n * sizeof *keep);
    float *w = pg_model_data(f.m, i);
    pg_pack_probe pr;
    pg_err e;
    unsigned bits = pg_packer_recipe(f.p)->bits[pg_packer_report(f.p, i)->cat];
    cr_assert_eq(pg_packer_probe(f.p, i, bits, 1.0, &pr, wh, &e), PG_OK, "%s", e.msg);
    memcpy(keep, w, (size_t)n * sizeof *w);
    memcpy(w, wh, (size_t)n * sizeof *w);
    double lq = rows_loss(f.m, &f.c);
    for (uint64_t k = 0; k < n; k++) w[k] = (float)(2.0 * (double)keep[k] - (double)wh[k]);
    double dl = 0.5 * (lq + rows_loss(f.m, &f.c)) - l0;
    memcpy(w, keep, (size_t)n * sizeof *w);
    if (dl > 0) {
      cr_assert_float_eq(res.sens[i] * pr.err, dl, 1e-6 * dl, "%s: %g·%g vs %g",
                         pg_packer_report(f.p, i)->name, res.sens[i], pr.err, dl);
      checked++;
    }
    free(wh);
    free(keep);
  }
  cr_assert_gt(checked, 0u);
  free(out);
  pg_fit_result_free(&res);
  fit_teardown(&f);
}

/* Chosen by expected loss (no measuring), a larger budget never gives a larger expected loss
 * increase. */
Test(pack, fit_loss_monotone_in_the_budget) {
  fitfx f;
  fit_setup(&f, 31, 2);
  uint64_t base = recipe_count(f.p);
  double last = INFINITY, first = 0;
  for (int b = 0; b < 6; b++) {
    uint64_t budget = base * (65 + 12 * (uint64_t)b) / 100;
    pg_fit_result res;
    uint8_t *out;
    size_t len;
    cr_assert_eq(fit_loss_m(&f, budget, NULL, -1, &res, &out, &len), PG_OK);
    const pg_fit_point *c = &res.points[res.chosen];
    cr_assert(c->counted <= budget && c->counted >= budget - budget / 200,
              "%llu for a budget of %llu", (unsigned long long)c->counted,
              (unsigned long long)budget);
    double d = c->dloss;
    cr_assert(d <= last, "budget %llu: expected dloss %g above %g of a smaller budget",
              (unsigned long long)budget, d, last);
    if (b == 0) first = d;
    last = d;
    free(out);
    pg_fit_result_free(&res);
  }
  cr_assert_lt(last, first, "the largest budget buys a smaller loss than the smallest");
  fit_teardown(&f);
}

/* The same bytes and the same curve twice, and with 1 or 2 threads. */
Test(pack, fit_loss_deterministic) {
  uint8_t *first = NULL;
  size_t first_len = 0;
  char *first_curve = NULL;
  for (int run = 0; run < 3; run++) {
    fitfx f;
    fit_setup(&f, 37, run == 2 ? 2 : 1);
    uint64_t budget = recipe_count(f.p) * 9 / 10;
    pg_fit_result res;
    uint8_t *out;
    size_t len;
    cr_assert_eq(fit_loss(&f, budget, NULL, &res, &out, &len), PG_OK);
    char *curve = pg_fit_curve_tsv(&res);
    if (!first) {
      first = out;
      first_len = len;
      first_curve = curve;
    } else {
      cr_assert(len == first_len && !memcmp(out, first, len), "run %d", run);
      cr_assert_str_eq(curve, first_curve, "run %d", run);
      free(out);
      free(curve);
    }
    pg_fit_result_free(&res);
    fit_teardown(&f);
  }
  free(first);
  free(first_curve);
}

/* The calibration rows' mean loss of the weights a reader of these artifact bytes computes
 * (the file written and loaded as pgverify loads it: LQER included). */
static double artifact_loss(const uint8_t *bytes, size_t len, const pg_calib_set *c) {
  char dir[64], path[96];
  pgtest_mkdtemp(dir, "pgfit");
  snprintf(path, sizeof path, "%s/a.pgz", dir);
  pg_err e;
  cr_assert_eq(pg_file_write_atomic(path, bytes, len, &e), PG_OK, "%s", e.msg);
  pg_model *m = NULL;
  pg_artifact *a = NULL;
  cr_assert_eq(pg_weights_load(&m, &a, path, 1, NULL, &e), PG_OK, "%s", e.msg);
  double l = rows_loss(m, c);
  pg_model_free(m);
  pg_artifact_free(a);
  pgtest_rm_rf(dir);
  return l;
}

/* The loss fit is never behind the records' recipe fitted to the same budget (pgpack --fit k):
 * the calibration loss of the artifact it writes is at most that of the k fit's artifact, at
 * budgets below and above the recipe's count. The k fit's solution is a point of the curve
 * (kind "k", its bytes and measured loss those of pg_packer_fit's artifact), and every measured
 * point's loss is that of its artifact as a reader computes it. Both cases are ones
 * where the choice by expected loss alone (measure_max −1, the rule before) is behind. */
Test(pack, fit_loss_not_behind_the_k_fit) {
  static const struct { uint64_t seed; int pct; } cases[] = {{43, 110}, {53, 85}};
  for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
    fitfx f;
    fit_setup(&f, cases[ci].seed, 1);
    uint64_t budget = recipe_count(f.p) * (uint64_t)cases[ci].pct / 100;
    pg_pack_extras x = {.writer = "test", .count_tokenizer = 1, .budget = budget};
    pg_pack_fit_opts ko = {.budget = budget, .tolerance = 0.005, .fit_cat = -1};
    pg_pack_trial *tr;
    size_t ntr, ch, klen;
    uint8_t *kb;
    pg_err e;
    cr_assert_eq(pg_packer_fit(f.p, &x, &ko, &tr, &ntr, &ch, &kb, &klen, &e), PG_OK, "%s",
                 e.msg);
    double lk = artifact_loss(kb, klen, &f.c);
    pg_fit_result res;
    uint8_t *out;
    size_t len;
    cr_assert_eq(fit_loss(&f, budget, NULL, &res, &out, &len), PG_OK);
    double ll = artifact_loss(out, len, &f.c);
    cr_assert_leq(ll, lk, "case %zu: the loss fit's artifact %.9f, the k fit's %.9f", ci, ll,
                  lk);
    const pg_fit_point *c = &res.points[res.chosen];
    cr_assert_leq(c->counted, budget);
    cr_assert_float_eq(c->measured, ll, 1e-12 * ll, "case %zu: %.12g vs %.12g", ci, c->measured,
                       ll);
    size_t nk = 0;
    for (size_t i = 0; i < res.npoints; i++) {
      const pg_fit_point *p = &res.points[i];
      if (!p->kfit) continue;
      nk++;
      cr_assert_str_eq(pg_fit_point_kind(p), "k");
      cr_assert_eq(p->counted, tr[ch].counted);
      cr_assert_eq(p->mu, tr[ch].mu);
      cr_assert_float_eq(p->measured, lk, 1e-12 * lk, "case %zu", ci);
      if (p->chosen) cr_assert(len == klen && !memcmp(out, kb, len), "case %zu", ci);
    }
    cr_assert_eq(nk, 1u, "case %zu", ci);
    free(tr);
    free(kb);
    free(out);
    pg_fit_result_free(&res);
    fit_teardown(&f);
  }
}

/* The curve: a header and one line of 9 fields per point, exactly one chosen (built, fitting),
 * built points with their counts, the estimated sweep in rising λ with falling bytes and rising
 * expected loss; the JSON form has the same points. A budget nothing reaches: PG_E_LIMIT with
 * the curve kept. */
Test(pack, fit_loss_curve_shape) {
  fitfx f;
  fit_setup(&f, 41, 1);
  uint64_t base = recipe_count(f.p);
  pg_fit_result res;
  uint8_t *out;
  size_t len;
  cr_assert_eq(fit_loss(&f, base * 4 / 5, NULL, &res, &out, &len), PG_OK);
  char *tsv = pg_fit_curve_tsv(&res);
  cr_assert_not_null(tsv);
  size_t lines = 0, chosen = 0, built = 0;
  double prev_l = 0, prev_b = INFINITY, prev_d = -INFINITY;
  for (char *line = strtok(tsv, "\n"); line; line = strtok(NULL, "\n"), lines++) {
    if (lines == 0) {
      cr_assert_str_eq(line, "kind\tlambda\test_bytes\tcounted\tfile_bytes\tdloss\tfits\tchosen"
                             "\tmeasured");
      continue;
    }
    int tabs = 0;
    for (char *c = line; *c; c++) tabs += *c == '\t';
    cr_assert_eq(tabs, 8, "%s", line);
    const pg_fit_point *p = &res.points[lines - 1];
    cr_assert(!strncmp(line, pg_fit_point_kind(p), strlen(pg_fit_point_kind(p))), "%s", line);
    chosen += (size_t)p->chosen;
    built += (size_t)p->built;
    if (p->chosen) cr_assert(p->built && p->fits && p->counted <= base * 4 / 5);
    if (p->built) {
      cr_assert_gt(p->counted, 0);
      continue;
    }
    cr_assert_eq(p->counted, 0);
    cr_assert(p->lambda > prev_l && p->est_bytes <= prev_b && p->dloss >= prev_d, "%s", line);
    prev_l = p->lambda;
    prev_b = p->est_bytes;
    prev_d = p->dloss;
  }
  cr_assert_eq(lines, res.npoints + 1);
  cr_assert_eq(chosen, 1u);
  cr_assert_geq(built, 2u, "the recipe's point and at least one of the search");
  free(tsv);
  char *js = pg_fit_curve_json(&res);
  json_t *j = json_loads(js, 0, NULL);
  cr_assert_not_null(j);
  cr_assert_eq(json_array_size(json_object_get(j, "points")), res.npoints);
  json_decref(j);
  free(js);
  free(out);
  pg_fit_result_free(&res);
  out = NULL;
  cr_assert_eq(fit_loss(&f, 1000, NULL, &res, &out, &len), PG_E_LIMIT);
  cr_assert_null(out);
  cr_assert_gt(res.npoints, 0u);
  pg_fit_result_free(&res);
  fit_teardown(&f);
}
