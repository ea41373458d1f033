/* test_tools2.c: the commands end to end, continued (test_tools.c): pgpack's budget fit, which
 * takes as long as the rest of test_tools.c together, in a program of its own so that the two run
 * side by side. The suite is still "tools". */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>
#include <unistd.h>

#include "pgtools.h"

TestSuite(tools, .init = setup, .fini = teardown);

Test(tools, pgpack_budget_fit_and_refusals) {
  vfx f;
  vfx_init(&f);
  char train[220], out[200], big[200];
  write_train(train, sizeof train, f.vocab);
  snprintf(out, sizeof out, "%s/fit.pgz", tmp);
  snprintf(big, sizeof big, "%s/big.pgz", tmp);
  /* a bigger demo model, packed once without a budget to learn its size */
  cr_assert_eq(run("%s --layers 2 --dim 128 --heads 4 --kv-heads 2 --vocab %u --codec zstd-3 "
                   "-o %s", bin("pgdemo"), f.vocab, big), 0, "%s", slurp(err_path));
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --json -o %s",
                   bin("pgpack"), big, train, out),
               0, "%s", slurp(err_path));
  json_t *j = load_json(out_path);
  json_int_t base = json_integer_value(json_object_get(j, "counted_bytes"));
  json_decref(j);
  cr_assert_gt(base, 10000);
  json_int_t budget = base * 3 / 4;
  /* the k fit (--fit k): one clip multiplier, its trials */
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --budget %lld --fit k --json -o %s", bin("pgpack"), big,
                   train, (long long)budget, out),
               0, "%s", slurp(err_path));
  j = load_json(out_path);
  json_int_t got = json_integer_value(json_object_get(j, "counted_bytes"));
  cr_assert(got <= budget && got >= budget - budget / 200, "%lld for a budget of %lld",
            (long long)got, (long long)budget);
  cr_assert_gt(json_array_size(json_object_get(j, "trials")), 1);
  cr_assert_null(json_object_get(j, "fit"));
  json_decref(j);
  /* the loss fit (the default with calibration): the chosen point and the curve file */
  char curve[220];
  snprintf(curve, sizeof curve, "%s/fit.tsv", tmp);
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --budget %lld --fit-curve %s --json -o %s",
                   bin("pgpack"), big, train, (long long)budget, curve, out),
               0, "%s", slurp(err_path));
  j = load_json(out_path);
  got = json_integer_value(json_object_get(j, "counted_bytes"));
  cr_assert(got <= budget && got >= budget - budget / 200, "%lld for a budget of %lld",
            (long long)got, (long long)budget);
  json_t *jf = json_object_get(j, "fit");
  cr_assert_str_eq(json_string_value(json_object_get(jf, "method")), "loss");
  cr_assert_eq(json_integer_value(json_object_get(jf, "counted_bytes")), got);
  cr_assert_eq(json_array_size(json_object_get(j, "trials")), 0);
  /* chosen by measured loss among the k fit's solution and the builds: none measured lower */
  json_t *jc = json_object_get(jf, "candidates");
  cr_assert_geq(json_array_size(jc), 2u);
  cr_assert_gt(json_integer_value(json_object_get(jf, "measure_tokens")), 0);
  double chosen_loss = json_real_value(json_object_get(jf, "measured_loss"));
  size_t nk = 0;
  for (size_t i = 0; i < json_array_size(jc); i++) {
    json_t *c = json_array_get(jc, i);
    nk += !strcmp(json_string_value(json_object_get(c, "kind")), "k");
    cr_assert_geq(json_real_value(json_object_get(c, "measured_loss")), chosen_loss);
  }
  cr_assert_eq(nk, 1u);
  json_decref(j);
  char *ct = slurp(curve);
  cr_assert(strncmp(ct, "kind\tlambda\t", 12) == 0, "%s", ct);
  cr_assert_gt(count_lines(ct), 3);
  free(ct);
  /* --fit-measure 0: by expected loss alone, nothing measured */
  cr_assert_eq(run("%s --weights %s --calib %s --calib-seqs 2 --calib-len 64 --codec zstd-19 "
                   "--passthrough-max 256 --budget %lld --fit-measure 0 --json -o %s",
                   bin("pgpack"), big, train, (long long)budget, out),
               0, "%s", slurp(err_path));
  j = load_json(out_path);
  jf = json_object_get(j, "fit");
  cr_assert_eq(json_array_size(json_object_get(jf, "candidates")), 0u);
  cr_assert_str_neq(json_string_value(json_object_get(jf, "kind")), "k");
  json_decref(j);
  cr_assert_eq(run("%s --weights %s --budget %lld --fit-measure 1025 -o %s", bin("pgpack"), big,
                   (long long)budget, out), 2);
  /* the loss fit needs calibration; the curve needs the loss fit */
  cr_assert_eq(run("%s --weights %s --budget %lld --fit loss -o %s", bin("pgpack"), big,
                   (long long)budget, out), 2);
  cr_assert_eq(run("%s --weights %s --budget %lld --fit-curve %s -o %s", bin("pgpack"), big,
                   (long long)budget, curve, out), 2);
  /* pgsize counts the same bytes against the same budget */
  cr_assert_eq(run("%s --budget %lld --json %s", bin("pgsize"), (long long)budget, out), 0);
  j = load_json(out_path);
  cr_assert_eq(json_integer_value(json_object_get(j, "counted_bytes")), got);
  json_decref(j);
  /* a budget no setting reaches: an error, and no output */
  char none[200];
  snprintf(none, sizeof none, "%s/none.pgz", tmp);
  cr_assert_eq(run("%s --weights %s --budget 2000 -o %s", bin("pgpack"), big, none), 2);
  char *e = slurp(err_path);
  cr_assert(strstr(e, "pgpack: ") == e && count_lines(e) == 1, "%s", e);
  free(e);
  cr_assert_neq(access(none, F_OK), 0);
  /* calibrating on the validation shards is refused */
  cr_assert_eq(run("%s --weights %s --calib %s --val %s -o %s", bin("pgpack"), big, f.val, f.val,
                   none), 2);
  e = slurp(err_path);
  cr_assert(strstr(e, "validation") && count_lines(e) == 1, "%s", e);
  free(e);
  cr_assert_neq(access(none, F_OK), 0);
  /* usage errors */
  cr_assert_eq(run("%s --weights %s --bits mlp=4 -o %s", bin("pgpack"), big, none), 2);
  cr_assert_eq(run("%s --weights %s --round gptq -o %s", bin("pgpack"), big, none), 2);
  cr_assert_eq(run("%s --weights %s -o %s", bin("pgpack"), big, big), 2, "output over an input");
  cr_assert_eq(run("%s --help", bin("pgpack")), 0);
}
