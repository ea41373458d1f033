/* f32_bridge.c: the fp32 library's forward pass behind a plain-double interface, so the fp64 test
 * programs (compiled with PG_REAL_F64) can compare the two builds on the same weights. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_model.h"
#include "pg_ops.h"
#include "pg_tape.h"

int bridge_forward_f32(const char *arch_json, const double *params, size_t np, int B, int T,
                       const int32_t *ids, const int32_t *targets, const int *len, double *nll,
                       int nthreads);

int bridge_forward_f32(const char *arch_json, const double *params, size_t np, int B, int T,
                       const int32_t *ids, const int32_t *targets, const int *len, double *nll,
                       int nthreads) {
  pg_arch a;
  pg_err err;
  if (pg_arch_parse(&a, arch_json, strlen(arch_json), "bridge", &err)) return 1;
  pg_model *m;
  if (pg_model_create(&m, &a, &err)) return 1;
  if (pg_model_param_count(m) != np) {
    pg_model_free(m);
    return 1;
  }
  for (size_t i = 0; i < np; i++) pg_model_params(m)[i] = (float)params[i];
  pg_engine e = pg_engine_cpu(nthreads);
  pg_tape *tp;
  if (pg_tape_create(&tp, &e, 0)) {
    pg_model_free(m);
    return 1;
  }
  pg_batch b = {.B = B, .T = T, .ids = ids, .targets = targets, .len = len};
  int rc = pg_model_forward(m, tp, &b, NULL, nll, NULL, &err);
  pg_tape_free(tp);
  pg_model_free(m);
  return rc ? 1 : 0;
}
