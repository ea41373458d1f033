/* pg_model_testing.h: the fixture of pg_model that only tests, fuzz targets and benchmarks use,
 * kept out of the public pg_model.h: weights that are not a trainer's init but make every path of
 * the forward and backward pass carry signal. Not for tools or other library code. */
#ifndef PG_MODEL_TESTING_H
#define PG_MODEL_TESTING_H

#include "pg_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every parameter N(0, std²) except that the control tensors (scales, gains, mixes, lambdas) get
 * their init value plus noise: a model whose every path carries signal, for gradient tests. */
void pg_model_init_random(pg_model *m, uint64_t seed, double std);

#ifdef __cplusplus
}
#endif
#endif
