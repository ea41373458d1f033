/* pg_rng.h: a small deterministic random stream (splitmix64) with uniform and Gaussian draws,
 * the same on every machine for a given seed: synthetic weights, initialization,
 * the training loader's sampling, benchmarks. */
#ifndef PG_RNG_H
#define PG_RNG_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pg_rng {
  uint64_t state;
  int has_spare;
  double spare;
} pg_rng;

void pg_rng_seed(pg_rng *r, uint64_t seed);
/* Next 64 random bits (splitmix64). */
uint64_t pg_rng_u64(pg_rng *r);
/* Uniform in the open interval (0, 1), 53 bits. */
double pg_rng_uniform(pg_rng *r);
/* Standard normal (Box-Muller; both values of each pair are used). */
double pg_rng_gauss(pg_rng *r);

#ifdef __cplusplus
}
#endif
#endif
