/* test_arch.c: the arch (spec/arch.md): every example file parses and round-trips through the
 * canonical JSON; parameter counts of the examples computed by hand from the shapes (and equal
 * to the record counts of spec/records.md §1 where the shapes match a record); the
 * baseline's tensor list for one block; defaults; and one refusal per rule class. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pgfiller.h"
#include "pgtest.h"

static const char *const EXAMPLES[] = {"baseline", "pr1676", "r12", "r12b", "pr473", "sys11036",
                                       "pr456"};
#define N_EXAMPLES (sizeof EXAMPLES / sizeof EXAMPLES[0])

static void load_example(const char *name, pg_arch *a) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  char path[1024];
  snprintf(path, sizeof path, "%s/spec/examples/%s.json", root, name);
  pg_err e;
  cr_assert_eq(pg_arch_load(a, path, &e), PG_OK, "%s", e.msg);
}

static int parse_str(const char *s, pg_arch *a, pg_err *e) {
  return pg_arch_parse(a, s, strlen(s), "t.json", e);
}

static uint64_t count_of(const pg_arch *a) {
  uint64_t n = 0;
  pg_err e;
  cr_assert_eq(pg_arch_param_count(a, &n, &e), PG_OK, "%s", e.msg);
  return n;
}

/* ---- examples ---- */

Test(examples, parse_and_round_trip) {
  for (size_t i = 0; i < N_EXAMPLES; i++) {
    pg_arch a, b;
    load_example(EXAMPLES[i], &a);
    char *s1 = NULL, *s2 = NULL;
    pg_err e;
    cr_assert_eq(pg_arch_serialize(&a, &s1, &e), PG_OK, "%s: %s", EXAMPLES[i], e.msg);
    cr_assert_eq(pg_arch_parse(&b, s1, strlen(s1), EXAMPLES[i], &e), PG_OK, "%s: %s\n%s",
                 EXAMPLES[i], e.msg, s1);
    cr_assert(pg_arch_equal(&a, &b), "%s: parse(serialize(a)) != a", EXAMPLES[i]);
    cr_assert_eq(pg_arch_serialize(&b, &s2, &e), PG_OK);
    cr_assert_str_eq(s1, s2, "%s: serialize is not a fixed point", EXAMPLES[i]);
    cr_assert_eq(s1[strlen(s1) - 1], '\n');
    free(s1);
    free(s2);
  }
}

Test(examples, serialize_is_canonical) {
  pg_arch a;
  load_example("baseline", &a);
  char *s = NULL;
  pg_err e;
  cr_assert_eq(pg_arch_serialize(&a, &s, &e), PG_OK);
  /* sorted keys: "attention" first, "vocab_size" last; every option explicit */
  const char *att = strstr(s, "\"attention\""), *voc = strstr(s, "\"vocab_size\"");
  cr_assert(att && voc && att < voc);
  cr_assert(strstr(s, "\"smear_bos_mask\": false"));
  cr_assert(strstr(s, "\"norm_eps\": 1.1920928955078125e-07,"), "%s", s);
  cr_assert(strstr(s, "\"readout_layer\": -1,"));
  cr_assert(strstr(s, "\"bigram_scale\": 0.05,"), "%s", s);
  cr_assert(strstr(s, "\"softcap\": 30.0,"), "%s", s);
  cr_assert(strstr(s, "\"decoder\": [4, 5, 6, 7, 8],"), "%s", s);
  free(s);
}

/* R1: 1024·512 + 9·(512·512·2 + 256·512·2 + 1024·512·2) + 9·(512+512+2·512+8) + 4·512 */
Test(examples, baseline_param_count) {
  pg_arch a;
  load_example("baseline", &a);
  const uint64_t per_block = 512 * 512 + 256 * 512 + 256 * 512 + 512 * 512 /* attn */
                             + 1024 * 512 * 2                              /* mlp */
                             + 8 + 512 + 512 + 2 * 512; /* q_gain, scales, resid_mix */
  const uint64_t want = 1024 * 512 + 9 * per_block + 4 * 512;
  cr_assert_eq(want, 17059912); /* the R1 count of spec/records.md §1 */
  cr_assert_eq(count_of(&a), want);
  cr_assert_eq(pg_arch_n_skips(&a), 4);
  cr_assert_eq(pg_arch_virtual_layers(&a), 9);
  cr_assert(!pg_arch_is_recurrent(&a));
}

Test(examples, other_param_counts) {
  pg_arch a;
  /* pr473: R6's shapes (11 layers, MLP 1536, bigram 3072×112, smear v1, VE 9,10 dim 128) */
  load_example("pr473", &a);
  const uint64_t blk3 = 2 * 512 * 512 + 2 * 256 * 512 + 2 * 1536 * 512 + 2056;
  uint64_t want = 1024 * 512 + 11 * blk3 + 5 * 512 + (3072 * 112 + 512 * 112 + 1) + 512 +
                  (1024 * 128 + 256 * 128 + 1 + 2);
  cr_assert_eq(want, 27067484); /* R6 */
  cr_assert_eq(count_of(&a), want);
  /* r12: R12's shapes: + sparse gate [8,12] per block, smear v2 13, two-lane 11·6 */
  load_example("r12", &a);
  const uint64_t blk4 = 2 * 512 * 512 + 2 * 256 * 512 + 2 * 2048 * 512 + 2056;
  want = 8192 * 512 + 11 * (blk4 + 8 * 12) + 2 * 8 * 512 + 13 + 11 * 6;
  cr_assert_eq(want, 35945671); /* R12 */
  cr_assert_eq(count_of(&a), want);
  cr_assert(pg_arch_is_recurrent(&a));
  cr_assert_eq(pg_arch_virtual_layers(&a), 17);
  /* pr1676: R9 (35,944,536) + readout_delta [2,16] */
  load_example("pr1676", &a);
  want = 8192 * 512 + 11 * blk4 + 2 * 8 * 512 + 2 * 16;
  cr_assert_eq(want, 35944536 + 32);
  cr_assert_eq(count_of(&a), want);
  cr_assert_eq(pg_arch_visits(&a, 5), 3);
  /* sys11036: 12 layers, 16 virtual (8 skips gated), bigram 16384×512 without projection */
  load_example("sys11036", &a);
  want = 8192 * 512 + 12 * blk4 + 2 * 8 * 512 + 16384 * 512 + 1;
  cr_assert_eq(count_of(&a), want);
  cr_assert_eq(pg_arch_virtual_layers(&a), 16);
  /* pr456: 11 layers MLP 1536, bigram 10240×128 + proj, smear v1, 5 plain skips */
  load_example("pr456", &a);
  want = 1024 * 512 + 11 * blk3 + 5 * 512 + (10240 * 128 + 512 * 128 + 1) + 512;
  cr_assert_eq(count_of(&a), want);
}

Test(examples, baseline_block_tensors) {
  pg_arch a;
  load_example("baseline", &a);
  pg_arch_tensor *t;
  size_t n;
  pg_err e;
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(n, 1 + 9 * 10 + 1);
  cr_assert_str_eq(t[0].name, "tok_emb.weight");
  cr_assert(t[0].ndim == 2 && t[0].shape[0] == 1024 && t[0].shape[1] == 512);
  static const struct {
    const char *name;
    int ndim;
    uint64_t s0, s1;
  } want[10] = {
      {"blocks.3.attn.c_q.weight", 2, 512, 512}, {"blocks.3.attn.c_k.weight", 2, 256, 512},
      {"blocks.3.attn.c_v.weight", 2, 256, 512}, {"blocks.3.attn.proj.weight", 2, 512, 512},
      {"blocks.3.attn.q_gain", 1, 8, 0},         {"blocks.3.mlp.fc.weight", 2, 1024, 512},
      {"blocks.3.mlp.proj.weight", 2, 512, 1024}, {"blocks.3.attn_scale", 1, 512, 0},
      {"blocks.3.mlp_scale", 1, 512, 0},         {"blocks.3.resid_mix", 2, 2, 512},
  };
  for (int k = 0; k < 10; k++) {
    const pg_arch_tensor *x = &t[1 + 3 * 10 + k];
    cr_assert_str_eq(x->name, want[k].name);
    cr_assert_eq(x->ndim, want[k].ndim, "%s", x->name);
    cr_assert_eq(x->shape[0], want[k].s0, "%s", x->name);
    if (want[k].ndim == 2) cr_assert_eq(x->shape[1], want[k].s1, "%s", x->name);
  }
  cr_assert_str_eq(t[n - 1].name, "skip_weights");
  cr_assert(t[n - 1].shape[0] == 4 && t[n - 1].shape[1] == 512);
  free(t);
}

Test(examples, feature_tensors) {
  pg_arch a;
  pg_arch_tensor *t;
  size_t n;
  pg_err e;
  load_example("r12", &a);
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_OK);
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(t[i].name, "blocks.10.attn.attn_gate_w")) {
      seen |= 1;
      cr_assert(t[i].shape[0] == 8 && t[i].shape[1] == 12);
    }
    if (!strcmp(t[i].name, "smear_gate.weight")) seen |= 2;
    if (!strcmp(t[i].name, "parallel_post_lambdas")) {
      seen |= 4;
      cr_assert(t[i].ndim == 3 && t[i].shape[0] == 11);
    }
    if (!strcmp(t[i].name, "skip_gates")) {
      seen |= 8;
      cr_assert_eq(t[i].shape[0], 8);
    }
  }
  cr_assert_eq(seen, 15);
  free(t);
  load_example("pr473", &a);
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_OK);
  cr_assert_str_eq(t[1].name, "bigram.embed.weight");
  cr_assert_str_eq(t[3].name, "bigram.scale");
  cr_assert_eq(t[3].ndim, 0);
  cr_assert_str_eq(t[5].name, "ve_shared.proj.weight");
  cr_assert(t[5].shape[0] == 256 && t[5].shape[1] == 128);
  cr_assert_str_eq(t[8].name, "ve_layer_scales.1");
  cr_assert_str_eq(t[9].name, "smear.gate");
  free(t);
}

/* Every file of spec/examples/ names the record whose settings it follows (the run
 * configuration train-demo.json in its "arch"), and what "follows" says agrees with itself: a
 * date agrees with a record folder's date prefix, a score with the folder's score suffix. */
Test(examples, every_example_says_which_record_it_follows) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root);
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/spec/examples", root);
  DIR *d = opendir(dir);
  cr_assert_not_null(d);
  struct dirent *de;
  int files = 0;
  while ((de = readdir(d))) {
    const size_t len = strlen(de->d_name);
    if (len < 6 || strcmp(de->d_name + len - 5, ".json")) continue;
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    cr_assert_not_null(j, "%s: %s", path, je.text);
    json_t *arch = json_object_get(j, "arch") ? json_object_get(j, "arch") : j;
    char *text = json_dumps(arch, 0);
    pg_arch a;
    pg_err e;
    cr_assert_eq(pg_arch_parse(&a, text, strlen(text), path, &e), PG_OK, "%s", e.msg);
    free(text);
    json_decref(j);
    cr_assert(a.follows.set && a.follows.record[0], "%s: no \"follows\"", de->d_name);
    const char *r = a.follows.record;
    if (a.follows.date[0] && r[0] >= '0' && r[0] <= '9')
      cr_assert(!strncmp(r, a.follows.date, 10), "%s: date %s, record %s", de->d_name,
                a.follows.date, r);
    const char *u = strrchr(r, '_');
    if (u && u[1] >= '0' && u[1] <= '9' && strchr(u, '.'))
      cr_assert(fabs(strtod(u + 1, NULL) - a.follows.val_bpb) < 1e-9, "%s: val_bpb %g, record %s",
                de->d_name, a.follows.val_bpb, r);
    files++;
  }
  closedir(d);
  cr_assert_geq(files, 8);
}

/* The 1.0611 record (R12) runs the sparse gate at scale 0.5 and its 2026-04-29 re-run at 1.0;
 * otherwise the two examples are the same model. */
Test(examples, r12_and_its_rerun_differ_in_the_gate_scale_only) {
  pg_arch a, b;
  load_example("r12", &a);
  load_example("r12b", &b);
  cr_assert_eq(a.follows.pr, 1855);
  cr_assert_str_eq(a.follows.date, "2026-04-27");
  cr_assert_eq(a.attention.gate_scale, 0.5);
  cr_assert_str_eq(b.follows.date, "2026-04-29");
  cr_assert_eq(b.attention.gate_scale, 1.0);
  char buf[256];
  cr_assert_eq(pg_arch_diff(&a, &b, buf, sizeof buf), 1, "%s", buf);
  cr_assert_str_eq(buf, "attention.gate_scale 0.5/1.0");
  cr_assert(!pg_arch_equal(&a, &b));
}

/* ---- provenance ("follows") ---- */

Test(follows, round_trip_and_equality) {
  const char *t = "{\"follows\": {\"record\": \"2026-04-27_X_1.0611\", \"date\": \"2026-04-27\", "
                  "\"pr\": 1855, \"val_bpb\": 1.0611, \"protocol\": \"--protocol ttt-phased\", "
                  "\"note\": \"caf\u00e9 \\\"quoted\\\"\"}}";
  pg_arch a, b, c;
  pg_err e;
  cr_assert_eq(parse_str(t, &a, &e), PG_OK, "%s", e.msg);
  cr_assert(a.follows.set);
  cr_assert_str_eq(a.follows.note, "caf\xc3\xa9 \"quoted\"");
  char *s = NULL;
  cr_assert_eq(pg_arch_serialize(&a, &s, &e), PG_OK);
  cr_assert(strstr(s, "\"follows\": {\n    \"date\": \"2026-04-27\",\n"), "%s", s);
  cr_assert_eq(parse_str(s, &b, &e), PG_OK, "%s\n%s", e.msg, s);
  cr_assert(pg_arch_equal(&a, &b));
  free(s);
  /* provenance is not a model option: the diff of the model options is empty */
  cr_assert_eq(parse_str("{}", &c, &e), PG_OK);
  cr_assert(!pg_arch_equal(&a, &c));
  cr_assert_eq(pg_arch_diff(&a, &c, NULL, 0), 0);
  /* without "follows" the canonical text has none */
  cr_assert_eq(pg_arch_serialize(&c, &s, &e), PG_OK);
  cr_assert_null(strstr(s, "follows"));
  free(s);
}

Test(follows, refusals) {
  pg_arch a;
  pg_err e;
  cr_assert_eq(parse_str("{\"follows\": 3}", &a, &e), PG_E_META_TYPE);
  cr_assert_eq(parse_str("{\"follows\": {}}", &a, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "follows.record"), "%s", e.msg);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"\"}}", &a, &e), PG_E_ARG);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"x\", \"score\": 1}}", &a, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "follows.score: unknown option"), "%s", e.msg);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"a\\nb\"}}", &a, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "control character"), "%s", e.msg);
  cr_assert_neq(parse_str("{\"follows\": {\"record\": \"a\\u0000b\"}}", &a, &e), PG_OK);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"x\", \"date\": \"2026-4-27\"}}", &a, &e),
               PG_E_ARG);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"x\", \"pr\": 0}}", &a, &e), PG_E_ARG);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"x\", \"pr\": \"1855\"}}", &a, &e),
               PG_E_META_TYPE);
  cr_assert_eq(parse_str("{\"follows\": {\"record\": \"x\", \"val_bpb\": -1}}", &a, &e), PG_E_ARG);
  cr_assert_eq(parse_str("{\"block\": {\"follows\": {\"record\": \"x\"}}}", &a, &e), PG_E_ARG);
  char big[700];
  snprintf(big, sizeof big, "{\"follows\": {\"record\": \"%0600d\"}}", 0);
  cr_assert_eq(parse_str(big, &a, &e), PG_E_ARG);
  /* a hand-filled struct is validated too */
  pg_arch_default(&a);
  a.follows.set = 1;
  cr_assert_eq(pg_arch_validate(&a, "t", &e), PG_E_ARG);
  snprintf(a.follows.record, sizeof a.follows.record, "bell\a");
  cr_assert_eq(pg_arch_validate(&a, "t", &e), PG_E_ARG);
}

/* What a loader cannot check: the options in effect that no tensor fixes, with their values. */
Test(follows, unchecked_options) {
  pg_arch a;
  pg_err e;
  char *s = NULL;
  load_example("r12", &a);
  cr_assert_eq(pg_arch_unchecked_json(&a, &s, &e), PG_OK, "%s", e.msg);
  cr_assert(strstr(s, "\"attention.gate_scale\": 0.5"), "%s", s);
  cr_assert(strstr(s, "\"head.softcap\": 30.0"), "%s", s);
  cr_assert(strstr(s, "\"embeddings.smear_bos_mask\": true"), "%s", s);
  cr_assert(strstr(s, "\"attention.doc_max_len\": 2048"), "%s", s);
  cr_assert_null(strstr(s, "structure.parallel\""), "two_lane is fixed by its lambdas: %s", s);
  cr_assert_null(strstr(s, "q_gain"), "an init value: %s", s);
  json_t *j = json_loads(s, 0, NULL);
  cr_assert_not_null(j, "%s", s);
  json_decref(j);
  free(s);
  load_example("baseline", &a);
  cr_assert_eq(pg_arch_unchecked_json(&a, &s, &e), PG_OK);
  cr_assert_null(strstr(s, "gate_scale"), "%s", s);
  cr_assert_null(strstr(s, "leaky_slope"), "%s", s);
  cr_assert(strstr(s, "\"structure.parallel\": \"none\""), "%s", s);
  cr_assert(strstr(s, "\"attention.rope_base\": 10000.0"), "%s", s);
  free(s);
}

/* ---- defaults ---- */

Test(defaults, empty_object_is_the_baseline) {
  pg_arch a, b, c;
  pg_err e;
  cr_assert_eq(parse_str("{}", &a, &e), PG_OK, "%s", e.msg);
  load_example("baseline", &b);
  cr_assert_eq(pg_arch_diff(&a, &b, NULL, 0), 0); /* the same model; b names its record */
  cr_assert(b.follows.set && !a.follows.set);
  pg_arch_default(&c);
  cr_assert(pg_arch_equal(&a, &c));
}

Test(defaults, derived) {
  pg_arch a;
  pg_err e;
  cr_assert_eq(parse_str("{\"dim\": 256, \"heads\": 4, \"kv_heads\": 2, \"layers\": 5}", &a, &e),
               PG_OK, "%s", e.msg);
  cr_assert_eq(a.head_dim, 64);
  cr_assert_eq(a.attention.rope_dims, 64);
  cr_assert_eq(a.mlp.hidden, 512);
  cr_assert_eq(a.structure.encoder.n, 2);
  cr_assert_eq(a.structure.decoder.n, 3);
  cr_assert_eq(a.structure.decoder.v[0], 2);
  cr_assert_eq(a.embeddings.bigram_proj, 1);
  cr_assert_eq(a.structure.readout_layer, -1);
  /* real numbers accept JSON integers; head_dim given explicitly */
  cr_assert_eq(parse_str("{\"head\": {\"softcap\": 15}, \"dim\": 96, \"heads\": 5, "
                         "\"kv_heads\": 1, \"head_dim\": 16}", &a, &e), PG_OK, "%s", e.msg);
  cr_assert_float_eq(a.head.softcap, 15.0, 0);
  cr_assert_eq(a.attention.rope_dims, 16);
}

/* ---- refusals ---- */

static void refuse(const char *json, int status, const char *needle) {
  pg_arch a;
  pg_err e;
  memset(&a, 0x5a, sizeof a);
  const int rc = parse_str(json, &a, &e);
  cr_assert_eq(rc, status, "%s: got %s (%s)", json, pg_status_name(rc), e.msg);
  cr_assert_eq(e.status, status);
  cr_assert(strstr(e.msg, "t.json") == e.msg, "%s", e.msg);
  cr_assert(strstr(e.msg, needle), "'%s' not in '%s'", needle, e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
  const unsigned char *p = (const unsigned char *)&a;
  for (size_t i = 0; i < sizeof a; i++) cr_assert_eq(p[i], 0, "output not zeroed on error");
}

Test(refuse, malformed_json) {
  refuse("{\"dim\": 512", PG_E_JSON, "JSON");
  refuse("", PG_E_JSON, "JSON");
  refuse("{} {}", PG_E_JSON, "JSON");
  refuse("{\"dim\": NaN}", PG_E_JSON, "JSON");
}

Test(refuse, duplicate_keys) {
  refuse("{\"dim\": 512, \"dim\": 512}", PG_E_DUPLICATE, "duplicate");
  refuse("{\"head\": {\"tied\": true, \"tied\": true}}", PG_E_DUPLICATE, "duplicate");
}

Test(refuse, unknown_keys) {
  refuse("{\"_comment\": \"x\"}", PG_E_ARG, "_comment: unknown option");
  refuse("{\"attention\": {\"rope\": 16}}", PG_E_ARG, "attention.rope: unknown option");
  refuse("{\"mlp\": {\"dim\": 16}}", PG_E_ARG, "mlp.dim: unknown option");
  refuse("{\"head\": {\"head\": {}}}", PG_E_ARG, "head.head: unknown option");
  refuse("{\"extra\": {}}", PG_E_ARG, "extra: unknown option");
}

Test(refuse, wrong_types) {
  refuse("[]", PG_E_META_TYPE, "top level");
  refuse("{\"dim\": 512.0}", PG_E_META_TYPE, "dim: is a real number, not an integer");
  refuse("{\"dim\": \"512\"}", PG_E_META_TYPE, "dim: is a string");
  refuse("{\"head\": {\"tied\": 1}}", PG_E_META_TYPE, "head.tied: is an integer, not a boolean");
  refuse("{\"head\": {\"softcap\": null}}", PG_E_META_TYPE, "head.softcap: is null");
  refuse("{\"mlp\": {\"act\": 2}}", PG_E_META_TYPE, "mlp.act");
  refuse("{\"mlp\": []}", PG_E_META_TYPE, "mlp: is an array, not an object");
  refuse("{\"attention\": {\"xsa_layers\": [1, 2.5]}}", PG_E_META_TYPE,
         "attention.xsa_layers[1]: is a real number");
  refuse("{\"attention\": {\"xsa_layers\": 3}}", PG_E_META_TYPE, "not an array");
}

Test(refuse, enum_values) {
  refuse("{\"mlp\": {\"act\": \"swiglu\"}}", PG_E_ARG, "mlp.act: \"swiglu\" is not one of");
  refuse("{\"attention\": {\"gate\": \"sigmoid\"}}", PG_E_ARG, "attention.gate");
  refuse("{\"structure\": {\"parallel\": \"two-lane\"}}", PG_E_ARG, "structure.parallel");
}

Test(refuse, top_level_ranges) {
  refuse("{\"dim\": 0}", PG_E_ARG, "dim: 0 is outside");
  refuse("{\"vocab_size\": -5}", PG_E_ARG, "vocab_size");
  refuse("{\"layers\": 65}", PG_E_ARG, "layers");
  refuse("{\"layers\": 99999999999}", PG_E_ARG, "layers: 99999999999 is outside the int range");
  refuse("{\"heads\": 8, \"kv_heads\": 3}", PG_E_ARG, "heads 8 is not a multiple of kv_heads 3");
  refuse("{\"heads\": 4, \"kv_heads\": 8}", PG_E_ARG, "kv_heads");
  refuse("{\"dim\": 100, \"heads\": 8, \"kv_heads\": 4}", PG_E_ARG, "head_dim");
  refuse("{\"bos_id\": 1024}", PG_E_ARG, "bos_id");
}

/* The ops keep one head's accumulators on the stack (PG_OPS_MAX_HEAD_DIM): a wider head is an
 * invalid arch, not a stack overflow in the first forward (issue 11). */
Test(refuse, head_dim_above_the_ops_limit) {
  refuse("{\"dim\": 512, \"heads\": 1, \"kv_heads\": 1}", PG_E_ARG,
         "head_dim: 512 is outside 1..256");
  refuse("{\"heads\": 2, \"kv_heads\": 1, \"head_dim\": 257}", PG_E_ARG,
         "head_dim: 257 is outside 1..256");
  pg_arch a;
  pg_err e;
  const char *ok = "{\"dim\": 256, \"heads\": 1, \"kv_heads\": 1}";
  cr_assert_eq(pg_arch_parse(&a, ok, strlen(ok), "t", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(a.head_dim, 256);
}

Test(refuse, rope) {
  refuse("{\"attention\": {\"rope_dims\": 15}}", PG_E_ARG, "attention.rope_dims: 15 is odd");
  refuse("{\"attention\": {\"rope_dims\": 66}}", PG_E_ARG, "attention.rope_dims: 66 is outside");
  refuse("{\"attention\": {\"rope_base\": 0}}", PG_E_ARG, "attention.rope_base");
  refuse("{\"attention\": {\"rope_dims\": 2, \"rope_ntk_len\": 1024}}", PG_E_ARG,
         "attention.rope_ntk_len");
}

Test(refuse, attention_rules) {
  refuse("{\"attention\": {\"causal\": false}}", PG_E_ARG, "attention.causal: must be true");
  refuse("{\"attention\": {\"q_gain\": 0}}", PG_E_ARG, "attention.q_gain");
  refuse("{\"attention\": {\"xsa_layers\": [9]}}", PG_E_ARG,
         "attention.xsa_layers[0]: layer 9 is outside 0..8");
  refuse("{\"attention\": {\"xsa_layers\": [-1]}}", PG_E_ARG, "attention.xsa_layers[0]");
  refuse("{\"attention\": {\"xsa_layers\": [3, 3]}}", PG_E_ARG, "strictly increasing");
  refuse("{\"attention\": {\"xsa_layers\": [0]}, \"structure\": {\"layer0_attn\": false}}",
         PG_E_ARG, "layer 0 has no attention");
  refuse("{\"attention\": {\"gate_scale\": -1}}", PG_E_ARG, "attention.gate_scale");
  refuse("{\"attention\": {\"gate_window\": 0}}", PG_E_ARG, "attention.gate_window");
  refuse("{\"attention\": {\"doc_max_len\": -1}}", PG_E_ARG, "attention.doc_max_len");
}

Test(refuse, mlp_and_embeddings) {
  refuse("{\"mlp\": {\"hidden\": 0}}", PG_E_ARG, "mlp.hidden");
  refuse("{\"mlp\": {\"leaky_slope\": 1.5}}", PG_E_ARG, "mlp.leaky_slope");
  refuse("{\"embeddings\": {\"bigram_buckets\": 1}}", PG_E_ARG, "embeddings.bigram_buckets");
  refuse("{\"embeddings\": {\"bigram_buckets\": 64, \"bigram_dim\": 128, \"bigram_proj\": false}}",
         PG_E_ARG, "embeddings.bigram_proj");
  refuse("{\"embeddings\": {\"ve_layers\": [10]}}", PG_E_ARG, "embeddings.ve_layers[0]");
  refuse("{\"embeddings\": {\"smear\": \"v1\", \"smear_bos_mask\": true}}", PG_E_ARG,
         "embeddings.smear_bos_mask");
  refuse("{\"embeddings\": {\"smear_window\": 513}}", PG_E_ARG, "embeddings.smear_window");
}

Test(refuse, structure_rules) {
  refuse("{\"structure\": {\"encoder\": [0, 1, 2, 9], \"decoder\": [4, 5, 6, 7, 8]}}", PG_E_ARG,
         "structure.encoder[3]: layer 9 is outside 0..8");
  refuse("{\"structure\": {\"decoder\": [4, 5, 6, 7, -8]}}", PG_E_ARG, "structure.decoder[4]");
  refuse("{\"structure\": {\"decoder\": []}}", PG_E_ARG, "structure.decoder: is empty");
  refuse("{\"structure\": {\"encoder\": [0, 1, 2], \"decoder\": [4, 5, 6, 7, 8]}}", PG_E_ARG,
         "physical layer 3 is in neither");
  refuse("{\"structure\": {\"encoder\": [], \"decoder\": [0,1,2,3,4,5,6,7,8]}}", PG_E_ARG,
         "structure.skips");
  refuse("{\"structure\": {\"recur_frac\": 1.5}}", PG_E_ARG, "structure.recur_frac");
  refuse("{\"structure\": {\"recur_step\": -1}}", PG_E_ARG, "structure.recur_step");
  refuse("{\"structure\": {\"parallel\": \"gptj\", \"parallel_start\": 9}}", PG_E_ARG,
         "structure.parallel_start");
  refuse("{\"structure\": {\"readout_groups\": 16}}", PG_E_ARG, "structure.readout_layer");
  refuse("{\"structure\": {\"readout_groups\": 16, \"readout_layer\": 4}}", PG_E_ARG,
         "visited 1 time");
  refuse("{\"structure\": {\"readout_groups\": 7}}", PG_E_ARG, "structure.readout_groups");
  /* a readout needs the single stream: its last visit may not fall among the two lanes */
  refuse("{\"layers\": 4, \"structure\": {\"encoder\": [0, 1], \"decoder\": [2, 3, 2], "
         "\"readout_groups\": 4, \"parallel\": \"two_lane\", \"parallel_start\": 2}}",
         PG_E_ARG, "two-lane region");
  pg_arch ok;
  const char *before = "{\"layers\": 4, \"structure\": {\"encoder\": [0, 1, 1], "
                       "\"decoder\": [1, 2, 3], \"readout_groups\": 4, "
                       "\"parallel\": \"two_lane\", \"parallel_start\": 2}}";
  cr_assert_eq(pg_arch_parse(&ok, before, strlen(before), "t", NULL), PG_OK);
}

Test(refuse, head_rules) {
  refuse("{\"head\": {\"softcap\": -30}}", PG_E_ARG, "head.softcap");
  refuse("{\"block\": {\"norm_eps\": -1e-6}}", PG_E_ARG, "block.norm_eps");
}

Test(refuse, invalid_utf8) {
  pg_arch a;
  pg_err e;
  const char bad[] = "{\"\xff\": 1}";
  cr_assert_eq(pg_arch_parse(&a, bad, sizeof bad - 1, "t.json", &e), PG_E_UTF8, "%s", e.msg);
}

Test(api, validate_and_serialize_refuse_bad_structs) {
  pg_arch a;
  pg_err e;
  pg_arch_default(&a);
  cr_assert_eq(pg_arch_validate(&a, "x", &e), PG_OK);
  a.mlp.act = 7;
  cr_assert_eq(pg_arch_validate(&a, "x", &e), PG_E_ARG);
  char *s = (char *)&a;
  cr_assert_eq(pg_arch_serialize(&a, &s, &e), PG_E_ARG);
  cr_assert_null(s);
  pg_arch_default(&a);
  a.head.softcap = 0.0 / 0.0;
  cr_assert_eq(pg_arch_validate(&a, "x", &e), PG_E_ARG);
  pg_arch_tensor *t = NULL;
  size_t n = 5;
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_E_ARG);
  cr_assert_null(t);
  cr_assert_eq(n, 0);
  pg_err_clear(&e);
  cr_assert_eq(pg_arch_load(&a, "/nonexistent/arch.json", &e), PG_E_NOT_FOUND, "%s", e.msg);
}

Test(api, untied_and_layer0_without_attention) {
  pg_arch a;
  pg_err e;
  cr_assert_eq(parse_str("{\"head\": {\"tied\": false}, \"structure\": {\"layer0_attn\": false},"
                         " \"block\": {\"resid_mix\": false}}", &a, &e), PG_OK, "%s", e.msg);
  pg_arch_tensor *t;
  size_t n;
  cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_OK);
  cr_assert_str_eq(t[n - 1].name, "lm_head.weight");
  cr_assert_str_eq(t[1].name, "blocks.0.mlp.fc.weight");
  for (size_t i = 0; i < n; i++) cr_assert_null(strstr(t[i].name, "resid_mix"));
  free(t);
  const uint64_t per_block = 2 * 512 * 512 + 2 * 256 * 512 + 2 * 1024 * 512 + 8 + 1024;
  cr_assert_eq(count_of(&a), 2 * 1024 * 512 + 9 * per_block - (2 * 512 * 512 + 2 * 256 * 512 +
                                                                   8 + 512) + 4 * 512);
}

Test(examples, tensor_names_unique_and_shapes_positive) {
  for (size_t i = 0; i < N_EXAMPLES; i++) {
    pg_arch a;
    load_example(EXAMPLES[i], &a);
    pg_arch_tensor *t;
    size_t n;
    pg_err e;
    cr_assert_eq(pg_arch_tensors(&a, &t, &n, &e), PG_OK);
    uint64_t total = 0;
    for (size_t k = 0; k < n; k++) {
      for (size_t j = 0; j < k; j++)
        cr_assert_str_neq(t[k].name, t[j].name, "%s: %s twice", EXAMPLES[i], t[k].name);
      for (int x = 0; x < t[k].ndim; x++) cr_assert_gt(t[k].shape[x], 0);
      total += pg_arch_tensor_numel(&t[k]);
    }
    cr_assert_eq(total, count_of(&a));
    free(t);
  }
}

Test(api, helpers) {
  pg_arch a;
  load_example("pr473", &a);
  cr_assert(pg_arch_has_xsa(&a, 7) && pg_arch_has_xsa(&a, 10) && !pg_arch_has_xsa(&a, 6));
  cr_assert_eq(pg_arch_ve_index(&a, 9), 0);
  cr_assert_eq(pg_arch_ve_index(&a, 10), 1);
  cr_assert_eq(pg_arch_ve_index(&a, 8), -1);
  cr_assert(!pg_arch_is_recurrent(&a));
  cr_assert_eq(pg_arch_n_skips(&a), 5);
  load_example("sys11036", &a);
  cr_assert(pg_arch_is_recurrent(&a));
  cr_assert_eq(pg_arch_visits(&a, 4), 3);
  cr_assert_eq(pg_arch_visits(&a, 11), 1);
  cr_assert_eq(a.structure.readout_layer, 5); /* derived: highest layer visited twice or more */
  cr_assert_eq(a.embeddings.bigram_proj, 0);
}

/* Found by fuzz_arch: a huge layer count must be refused quickly (derived defaults are resolved
 * before validation and must not loop over it). */
Test(refuse, huge_layer_count_is_fast) {
  refuse("{\"layers\":444444444}", PG_E_ARG, "layers: 444444444 is outside 1..64");
  refuse("{\"layers\":2147483647, \"structure\": {\"readout_groups\": 4}}", PG_E_ARG, "layers");
}

Test(refuse, text_above_1_mib) {
  /* spec/arch.md: at most 1 MiB, whether read from a file or handed over as text (an
   * artifact's metadata, a safetensors header): the JSON tree of a longer text would cost many
   * times its size before any rule could refuse it */
  const size_t n = PG_ARCH_JSON_MAX + 1;
  char *s = malloc(n);
  memset(s, ' ', n);
  memcpy(s, "{}", 2);
  pg_arch a;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&a, s, n - 1, "t.json", &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_arch_parse(&a, s, n, "t.json", &e), PG_E_LIMIT, "%s", e.msg);
  cr_assert(strstr(e.msg, "t.json") == e.msg && strstr(e.msg, "limit"), "%s", e.msg);
  free(s);
}

/* A few hundred kilobytes of "{}," would cost the parser tens of megabytes: refused before it
 * runs, at the value that goes over the cap, in one line. */
Test(arch, json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("dim", PG_JSON_DOC_VALUES - 2, &len);
  pg_arch a;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&a, t, len, "t.json", &e), PG_E_LIMIT, "%s", e.msg);
  char want[128];
  snprintf(want, sizeof want, "t.json: offset %llu: more than %u JSON values",
           (unsigned long long)PGFILLER_OVER("dim", PG_JSON_DOC_VALUES), PG_JSON_DOC_VALUES);
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
  free(t);
}
