/* test_variants.c: the records' own evaluation variants as protocol options (spec/eval.md §3.1,
 * §3.2): the early records' sliding windows that score only their last s targets (last-s) or
 * leave a gap after the first window (gap), and the 2026-04 records' packed plain eval_val. The
 * goldens (tests/goldens/make_variant_goldens.py) come from the records' own evaluation
 * functions on a tiny random model: pg_eval_run, the library path pgverify takes, must score
 * exactly the targets the record's function scores and give its sums. Also: window placement on
 * small hand-checked cases, the option texts, the refusals, the presets that carry a variant,
 * and the same bits on several engines. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_arch.h"
#include "pg_eval.h"
#include "pg_model.h"
#include "pg_preset.h"
#include "pg_protocol_text.h"
#include "pg_weights.h"

#define TOL_LOSS 1e-6 /* val_loss, nats per target (spec/eval.md §8, tests/goldens/README.md) */
#define TOL_BPB 1e-6  /* val_bpb */

static void path_of(char *buf, size_t n, const char *name, const char *ext) {
  const char *root = getenv("PG_SOURCE_ROOT");
  snprintf(buf, n, "%s/tests/goldens/%s%s", root ? root : ".", name, ext);
}

typedef struct vgold {
  json_t *j;
  pg_model *m;
  int32_t *tok;
  uint16_t *side;
  size_t n;
  pg_spm_tables t;
  pg_val val;
} vgold;

/* A golden (NAME.golden.json) and the model of its `weights` (or of NAME itself). */
static void vgold_load(vgold *g, const char *name) {
  memset(g, 0, sizeof *g);
  char pj[1024], pa[1024], pw[1024];
  path_of(pj, sizeof pj, name, ".golden.json");
  json_error_t je;
  if (access(pj, R_OK)) cr_skip_test("golden %s absent", name);
  g->j = json_load_file(pj, 0, &je);
  cr_assert_not_null(g->j, "%s: %s", pj, je.text);
  json_t *w = json_object_get(g->j, "weights");
  const char *wn = w ? json_string_value(w) : name;
  path_of(pa, sizeof pa, wn, ".arch.json");
  path_of(pw, sizeof pw, wn, ".safetensors");
  pg_err err;
  pg_arch a;
  cr_assert_eq(pg_arch_load(&a, pa, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_model_load_safetensors(&g->m, &a, pw, &err), PG_OK, "%s", err.msg);
  json_t *tok = json_object_get(g->j, "tokens"), *side = json_object_get(g->j, "sidecar_bytes");
  g->n = json_array_size(tok);
  g->tok = malloc(g->n * sizeof *g->tok);
  cr_assert_not_null(g->tok);
  for (size_t i = 0; i < g->n; i++) g->tok[i] = (int32_t)json_integer_value(json_array_get(tok, i));
  g->val = (pg_val){.tok = g->tok, .n = g->n};
  if (side) { /* CaseOps: each token's byte count, aligned with the stream */
    g->side = malloc(g->n * sizeof *g->side);
    cr_assert_not_null(g->side);
    for (size_t i = 0; i < g->n; i++)
      g->side[i] = (uint16_t)json_integer_value(json_array_get(side, i));
    g->val.bytes = g->side;
    return;
  }
  json_t *l = json_object_get(g->j, "luts");
  json_t *base = json_object_get(l, "base_bytes"), *lead = json_object_get(l, "has_leading_space"),
         *bnd = json_object_get(l, "is_boundary");
  size_t V = json_array_size(base);
  g->t.size = g->t.vocab = (uint32_t)V;
  g->t.base = malloc(V * sizeof *g->t.base);
  g->t.lead = malloc(V);
  g->t.boundary = malloc(V);
  cr_assert(g->t.base && g->t.lead && g->t.boundary);
  for (size_t v = 0; v < V; v++) {
    g->t.base[v] = (int16_t)json_integer_value(json_array_get(base, v));
    g->t.lead[v] = (uint8_t)json_integer_value(json_array_get(lead, v));
    g->t.boundary[v] = (uint8_t)json_integer_value(json_array_get(bnd, v));
  }
  g->val.tables = &g->t;
}

static void vgold_free(vgold *g) {
  pg_model_free(g->m);
  json_decref(g->j);
  free(g->tok);
  free(g->side);
  free(g->t.base);
  free(g->t.lead);
  free(g->t.boundary);
}

/* The targets a run scores, as the per-target hook sees them. */
typedef struct seen {
  uint64_t *t;
  size_t n, cap;
} seen;

static int on_score(void *ctx, uint64_t target, double nll, uint32_t bytes, int dup) {
  (void)nll, (void)bytes;
  seen *s = ctx;
  if (dup) return 1;
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 256;
    s->t = realloc(s->t, s->cap * sizeof *s->t);
    if (!s->t) return 1;
  }
  s->t[s->n++] = target;
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The golden's protocol through pg_eval_run against the record's function: the same targets,
 * the same token and byte counts, val_loss and val_bpb within the tolerances. */
static void check_variant(const char *name) {
  vgold g;
  vgold_load(&g, name);
  const char *variant = json_string_value(json_object_get(g.j, "variant"));
  pg_protocol p;
  const int packed = !strcmp(variant, "packed");
  pg_protocol_defaults(&p, packed ? PG_PROTO_PLAIN : PG_PROTO_SLIDING);
  p.seq_len = (int)json_integer_value(json_object_get(g.j, "seq_len"));
  if (packed) {
    p.plain_variant = PG_PLAIN_PACKED;
    p.pack_windows = (int)json_integer_value(json_object_get(g.j, "pack_windows"));
    p.pack_ranks = (int)json_integer_value(json_object_get(g.j, "pack_ranks"));
  } else {
    p.sliding_variant = pg_sliding_variant_parse(variant);
    p.stride = (int)json_integer_value(json_object_get(g.j, "stride"));
  }
  p.batch = 3;
  seen s = {0};
  pg_eval_hooks h = {.on_score = on_score, .score_ctx = &s};
  pg_engine e = pg_engine_cpu(1);
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(g.m, &e, &g.val, &p, &h, &res, &err), PG_OK, "%s", err.msg);
  json_t *tg = json_object_get(g.j, "targets");
  const size_t nt = json_array_size(tg);
  qsort(s.t, s.n, sizeof *s.t, cmp_u64);
  cr_assert_eq(s.n, nt, "%s: %zu targets scored, the record's function scores %zu", name, s.n,
               nt);
  for (size_t i = 0; i < nt; i++)
    cr_assert_eq(s.t[i], (uint64_t)json_integer_value(json_array_get(tg, i)),
                 "%s: scored target %zu is %llu, the record's %lld", name, i,
                 (unsigned long long)s.t[i], (long long)json_integer_value(json_array_get(tg, i)));
  cr_expect_eq(res.scored, nt);
  cr_expect_eq(res.duplicates, 0);
  cr_expect_eq(res.unscored, res.targets - nt, "%s: unscored %llu", name,
               (unsigned long long)res.unscored);
  cr_expect(res.unscored > 0, "%s: the case must leave targets out", name);
  double ref_tok = json_number_value(json_object_get(g.j, "token_count"));
  double ref_bytes = json_number_value(json_object_get(g.j, "byte_count"));
  double ref_loss = json_number_value(json_object_get(g.j, "val_loss"));
  double ref_bpb = json_number_value(json_object_get(g.j, "val_bpb"));
  fprintf(stderr, "variant %s (%s): %zu of %llu targets, dval_loss %.3g, dval_bpb %.3g\n", name,
          variant, nt, (unsigned long long)res.targets, res.val_loss - ref_loss,
          res.val_bpb - ref_bpb);
  cr_expect_eq(res.sum.tokens, ref_tok);
  cr_expect_eq(res.sum.bytes, ref_bytes);
  cr_expect(fabs(res.val_loss - ref_loss) <= TOL_LOSS, "%s: val_loss %.12g, record %.12g", name,
            res.val_loss, ref_loss);
  cr_expect(fabs(res.val_bpb - ref_bpb) <= TOL_BPB, "%s: val_bpb %.12g, record %.12g", name,
            res.val_bpb, ref_bpb);
  free(s.t);
  pg_eval_result_free(&res);
  vgold_free(&g);
}

Test(variants, last_s_mixedquant) { check_variant("lasts_mq"); }
Test(variants, last_s_mlp3x) { check_variant("lasts_mlp3x"); }
Test(variants, gap_seq2048) { check_variant("gap_s2048"); }
Test(variants, packed_r12_three_ranks) { check_variant("packed_r12"); }

/* The goldens of make_goldens.py hold the 2026-04 records' eval_val on one rank, with rows of
 * several windows (tests/goldens/README.md): the packed variant with those rows and one rank must
 * give its figure (the plain protocol does not: golden/r12_plain_known_disagreement). */
static void check_packed_one_rank(const char *name) {
  vgold g;
  vgold_load(&g, name);
  pg_protocol p;
  pg_protocol_defaults(&p, PG_PROTO_PLAIN);
  p.seq_len = (int)json_integer_value(json_object_get(g.j, "eval_seq_len"));
  p.plain_variant = PG_PLAIN_PACKED;
  p.pack_windows = (int)json_integer_value(json_object_get(g.j, "T")) / p.seq_len;
  p.pack_ranks = 1;
  pg_engine e = pg_engine_cpu(1);
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(g.m, &e, &g.val, &p, NULL, &res, &err), PG_OK, "%s", err.msg);
  double ref_loss = json_number_value(json_object_get(g.j, "val_loss"));
  double ref_bpb = json_number_value(json_object_get(g.j, "val_bpb"));
  fprintf(stderr, "packed %s: %d windows per row, dval_loss %.3g, dval_bpb %.3g\n", name,
          p.pack_windows, res.val_loss - ref_loss, res.val_bpb - ref_bpb);
  cr_expect_eq(res.unscored, 0); /* these streams fill their rows */
  cr_expect(fabs(res.val_loss - ref_loss) <= TOL_LOSS, "%s: val_loss %.12g, eval_val %.12g",
            name, res.val_loss, ref_loss);
  cr_expect(fabs(res.val_bpb - ref_bpb) <= TOL_BPB, "%s: val_bpb %.12g, eval_val %.12g", name,
            res.val_bpb, ref_bpb);
  pg_eval_result_free(&res);
  vgold_free(&g);
}

Test(variants, packed_eval_val_r12) { check_packed_one_rank("r12"); }
Test(variants, packed_eval_val_r12b) { check_packed_one_rank("r12b"); }
Test(variants, packed_eval_val_r10) { check_packed_one_rank("r10"); }
Test(variants, packed_eval_val_r11m) { check_packed_one_rank("r11m"); }

/* ---- window placement, by hand ------------------------------------------------------------- */

static void windows_of(const char *text, uint64_t T, pg_window **w, size_t *n) {
  pg_protocol p;
  pg_err err;
  cr_assert_eq(pg_protocol_from_text(text, &p), 0, "%s", text);
  cr_assert_eq(pg_protocol_windows(&p, T, w, n, &err), PG_OK, "%s", err.msg);
}

/* last-s, L 8, s 3, T 20: windows at 0, 3, 6, 9, 12 (ws + 8 <= 20), each scoring offsets [5, 8):
 * targets [5, 20); the first 5 never scored, no tail (12 + 8 = 20). T 22: the same windows (a
 * window at 15 would end at 23 > 22), so targets 20 and 21 are a tail never scored. */
Test(variants, last_s_windows_by_hand) {
  pg_window *w;
  size_t n;
  windows_of("--protocol sliding --seq-len 8 --stride 3 --sliding-variant last-s", 20, &w, &n);
  cr_assert_eq(n, 5);
  for (size_t k = 0; k < n; k++) {
    cr_expect_eq(w[k].ws, 3 * k);
    cr_expect_eq(w[k].lo, 5);
    cr_expect_eq(w[k].wlen, 8);
  }
  free(w);
  windows_of("--protocol sliding --seq-len 8 --stride 3 --sliding-variant last-s", 22, &w, &n);
  cr_assert_eq(n, 5);
  cr_expect_eq(w[4].ws + w[4].wlen, 20); /* targets 20, 21: the tail, never scored */
  free(w);
  windows_of("--protocol sliding --seq-len 8 --stride 3 --sliding-variant last-s", 7, &w, &n);
  cr_expect_eq(n, 0); /* shorter than one window */
  free(w);
}

/* gap, L 8, s 2, T 20: windows at 0 (all 8), then 6, 8, 10, 12 scoring their last 2: targets
 * [0, 8), [12, 14), [14, 16), [16, 18), [18, 20): the gap [8, 12) = L − 2s. */
Test(variants, gap_windows_by_hand) {
  pg_window *w;
  size_t n;
  windows_of("--protocol sliding --seq-len 8 --stride 2 --sliding-variant gap", 20, &w, &n);
  cr_assert_eq(n, 5);
  const uint64_t ws[] = {0, 6, 8, 10, 12};
  for (size_t k = 0; k < n; k++) {
    cr_expect_eq(w[k].ws, ws[k]);
    cr_expect_eq(w[k].lo, k ? 6 : 0);
    cr_expect_eq(w[k].wlen, 8);
  }
  free(w);
}

/* packed, L 4, K 2 windows per row, R 3 ranks, T 44 (S 11 windows): ranks [0, 3), [3, 7),
 * [7, 11); rank 0 keeps one row (windows 0-1) and drops window 2; the others keep two rows. */
Test(variants, packed_rows_by_hand) {
  pg_window *w;
  size_t n;
  windows_of("--protocol plain --seq-len 4 --plain-variant packed --pack-windows 2 "
             "--pack-ranks 3", 44, &w, &n);
  cr_assert_eq(n, 5);
  const uint64_t ws[] = {0, 12, 20, 28, 36};
  for (size_t k = 0; k < n; k++) {
    cr_expect_eq(w[k].ws, ws[k]);
    cr_expect_eq(w[k].lo, 0);
    cr_expect_eq(w[k].wlen, 8);
  }
  free(w);
}

/* ---- options and refusals --------------------------------------------------------------- */

Test(variants, option_texts) {
  pg_protocol p;
  cr_assert_eq(pg_protocol_from_text("--protocol sliding --seq-len 1024 --stride 64 "
                                     "--sliding-variant last-s", &p), 0);
  cr_expect_eq(p.sliding_variant, PG_SLIDE_LAST_S);
  cr_assert_eq(pg_protocol_from_text("--protocol sliding --sliding-variant=gap", &p), 0);
  cr_expect_eq(p.sliding_variant, PG_SLIDE_GAP);
  cr_assert_eq(pg_protocol_from_text("--protocol plain --seq-len 2048 --plain-variant packed", &p),
               0);
  cr_expect_eq(p.plain_variant, PG_PLAIN_PACKED);
  cr_expect_eq(p.pack_windows, 32); /* VAL_BATCH_TOKENS 524288 / 8 ranks / 2048 */
  cr_expect_eq(p.pack_ranks, 8);
  cr_expect_str_eq(pg_sliding_variant_name(PG_SLIDE_STANDARD), "standard");
  cr_expect_str_eq(pg_plain_variant_name(PG_PLAIN_WINDOWS), "windows");
  /* unknown names and out-of-range values */
  cr_expect_neq(pg_protocol_from_text("--protocol sliding --sliding-variant last", &p), 0);
  cr_expect_neq(pg_protocol_from_text("--protocol plain --plain-variant rows", &p), 0);
  cr_expect_neq(pg_protocol_from_text("--protocol plain --plain-variant packed --pack-ranks 0",
                                      &p), 0);
  cr_expect_neq(pg_protocol_from_text("--protocol plain --plain-variant packed "
                                      "--pack-windows 0", &p), 0);
}

static void refused(const char *text, const char *needle) {
  pg_protocol p;
  pg_err err;
  cr_assert_eq(pg_protocol_from_text(text, &p), 1, "%s read", text);
  /* the same options, each applied over the defaults, fail validation with this message */
  char kind[32] = "";
  cr_assert_eq(sscanf(text, "--protocol %31s", kind), 1);
  pg_protocol_defaults(&p, pg_proto_parse(kind));
  char buf[512];
  snprintf(buf, sizeof buf, "%s", text);
  char *save, *name = NULL;
  for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
    if (!strncmp(t, "--", 2)) {
      if (name && strcmp(name, "protocol")) cr_assert_eq(pg_protocol_option(&p, name, NULL), 0);
      name = t + 2;
      continue;
    }
    if (strcmp(name, "protocol")) cr_assert_eq(pg_protocol_option(&p, name, t), 0, "%s", name);
    name = NULL;
  }
  if (name && strcmp(name, "protocol")) cr_assert_eq(pg_protocol_option(&p, name, NULL), 0);
  cr_assert_eq(pg_protocol_validate(&p, &err), PG_E_ARG, "%s validated", text);
  cr_expect(strstr(err.msg, needle) != NULL, "%s: \"%s\" lacks \"%s\"", text, err.msg, needle);
}

/* A variant with a protocol it does not apply to, or with settings its records never had. */
Test(variants, refusals) {
  refused("--protocol ttt-chunk --sliding-variant last-s", "applies to --protocol sliding only");
  refused("--protocol plain --sliding-variant gap", "applies to --protocol sliding only");
  refused("--protocol sliding --sliding-variant last-s --tail-dup", "tail_dup is a variant");
  refused("--protocol sliding --seq-len 8 --stride 5 --sliding-variant gap", "2*stride");
  refused("--protocol sliding --plain-variant packed", "applies to --protocol plain only");
  refused("--protocol ttt-lora --plain-variant packed", "applies to --protocol plain only");
  refused("--protocol plain --seq-len 1048576 --plain-variant packed", "pack_windows");
}

/* The packed rows are cut by the arch's document mask at L: an arch without it (or with
 * another cap) cannot be the records' packed row. */
Test(variants, packed_needs_the_document_mask) {
  vgold g;
  vgold_load(&g, "lasts_mq"); /* the early records' model: no doc_mask */
  pg_protocol p;
  pg_protocol_defaults(&p, PG_PROTO_PLAIN);
  p.seq_len = 64;
  p.plain_variant = PG_PLAIN_PACKED;
  p.pack_windows = 2;
  p.pack_ranks = 1;
  pg_engine e = pg_engine_cpu(1);
  pg_eval_result res;
  pg_err err;
  cr_assert_eq(pg_eval_run(g.m, &e, &g.val, &p, NULL, &res, &err), PG_E_ARG);
  cr_expect(strstr(err.msg, "doc_mask") != NULL, "%s", err.msg);
  vgold_free(&g);
}

/* The presets of the records whose evaluation is a variant carry it (spec/presets/README.md). */
Test(variants, presets_name_their_variants) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set (run through meson test)");
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/spec/presets", root);
  setenv("PGOLF_PRESETS", dir, 1);
  static const struct {
    const char *name;
    int supported, sliding, plain;
  } want[] = {
      {"2026-03-19-mixed-quant-int6-int8-sliding", 1, PG_SLIDE_LAST_S, 0},
      {"2026-03-19-mlp3x-qat-int6-sliding", 1, PG_SLIDE_LAST_S, 0},
      {"2026-03-19-smeargate-orthoinit-muonwd", 0, PG_SLIDE_LAST_S, 0}, /* its BigramHash */
      {"2026-03-19-seq2048-fp16emb-tunedlr", 1, PG_SLIDE_GAP, 0},
  };
  static pg_preset p;
  pg_err err;
  for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
    cr_assert_eq(pg_preset_load(&p, want[i].name, &err), PG_OK, "%s", err.msg);
    cr_expect_eq(p.supported, want[i].supported, "%s", p.name);
    pg_protocol pp;
    cr_assert_eq(pg_protocol_from_text(p.protocol, &pp), 0, "%s", p.name);
    cr_expect_eq(pp.sliding_variant, want[i].sliding, "%s", p.name);
    int named = 0;
    for (int q = 0; q < p.n_quirks; q++)
      named |= strstr(p.quirks[q], pg_sliding_variant_name(want[i].sliding)) != NULL;
    cr_expect(named, "%s: no quirk names the variant", p.name);
  }
  /* the 2026-04 records' packed eval_val: the quirk names the option, which reads */
  cr_assert_eq(pg_preset_load(&p, "2026-04-27-sp8192-lqer-sparsegate-bossmearfix", &err), PG_OK,
               "%s", err.msg);
  const char *q = NULL;
  for (int k = 0; k < p.n_quirks; k++)
    if (strstr(p.quirks[k], "--plain-variant packed")) q = p.quirks[k];
  cr_assert_not_null(q);
  pg_protocol pp;
  cr_assert_eq(pg_protocol_from_text("--protocol plain --seq-len 2048 --plain-variant packed", &pp),
               0);
  cr_expect_eq(pp.pack_windows * pp.seq_len * pp.pack_ranks, 524288); /* VAL_BATCH_TOKENS */
}

/* On several engines (spec/eval.md §8.1) a variant's result is one engine's, bit for bit. */
static void same_on_engines(const char *name, const char *text) {
  vgold g;
  vgold_load(&g, name);
  pg_protocol p;
  cr_assert_eq(pg_protocol_from_text(text, &p), 0, "%s", text);
  pg_engine e1 = pg_engine_cpu(1), e2 = pg_engine_cpu(1), e3 = pg_engine_cpu(1);
  pg_engine *const es[3] = {&e1, &e2, &e3};
  pg_eval_result a, b;
  pg_err err;
  cr_assert_eq(pg_eval_run(g.m, &e1, &g.val, &p, NULL, &a, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_eval_run_on(g.m, es, 3, &g.val, &p, NULL, &b, &err), PG_OK, "%s", err.msg);
  cr_expect_eq(a.sum.nats, b.sum.nats, "%s: %.17g vs %.17g", name, a.sum.nats, b.sum.nats);
  cr_expect_eq(a.sum.bytes, b.sum.bytes);
  cr_expect_eq(a.scored, b.scored);
  cr_expect_eq(a.unscored, b.unscored);
  cr_expect_eq(a.windows, b.windows);
  cr_expect_eq(a.forwards, b.forwards);
  pg_eval_result_free(&a);
  pg_eval_result_free(&b);
  vgold_free(&g);
}

Test(variants, same_bits_on_three_engines) {
  same_on_engines("lasts_mq",
                  "--protocol sliding --seq-len 64 --stride 28 --sliding-variant last-s --batch 2");
  same_on_engines("gap_s2048",
                  "--protocol sliding --seq-len 64 --stride 12 --sliding-variant gap --batch 2");
  same_on_engines("packed_r12", "--protocol plain --seq-len 48 --plain-variant packed "
                  "--pack-windows 2 --pack-ranks 3");
}
