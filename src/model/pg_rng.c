/* pg_rng.c: splitmix64 and Box-Muller (see pg_rng.h). */
#include "pg_rng.h"

#include <math.h>

void pg_rng_seed(pg_rng *r, uint64_t seed) {
  r->state = seed;
  r->has_spare = 0;
  r->spare = 0.0;
}

uint64_t pg_rng_u64(pg_rng *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double pg_rng_uniform(pg_rng *r) {
  return ((double)(pg_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

double pg_rng_gauss(pg_rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  const double u = pg_rng_uniform(r), v = pg_rng_uniform(r), m = sqrt(-2.0 * log(u));
  r->spare = m * sin(6.283185307179586 * v);
  r->has_spare = 1;
  return m * cos(6.283185307179586 * v);
}
