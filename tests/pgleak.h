/* pgleak.h: test engines whose model breaks a rule of the challenge, for the checks of pglegal
 * to catch (tests/test_legal.c). Each is the CPU engine (its ops, memory and scratch, by value)
 * with one op wrapped: its results are the CPU's, then altered.
 * - pgleak_attention: attention whose output at position t also takes the value vector of
 *   position t + 1 (one future position leaks into every score: L1 must see it);
 * - pgleak_unnormalised: a cross-entropy that subtracts 0.05 nats from every NLL (a distribution
 *   that sums to more than 1, as an unnormalised blend gives: L2 must see it).
 * Test-only. */
#ifndef PGLEAK_H
#define PGLEAK_H

#include "pg_engine.h"

static void (*pgleak_cpu_attention)(const pg_ops *, pg_real *, const pg_real *, const pg_real *,
                                    const pg_real *, const int32_t *, int, int, int, int, int,
                                    float);
static void (*pgleak_cpu_ce)(const pg_ops *, double *, const pg_real *, const int32_t *, int, int);

static void pgleak_attention_fwd(const pg_ops *e, pg_real *out, const pg_real *q, const pg_real *k,
                                 const pg_real *v, const int32_t *seg, int B, int T, int H,
                                 int Hkv, int d, float s) {
  pgleak_cpu_attention(e, out, q, k, v, seg, B, T, H, Hkv, d, s);
  const int g = H / Hkv;
  for (int b = 0; b < B; b++)
    for (int t = 0; t + 1 < T; t++)
      for (int h = 0; h < H; h++) {
        pg_real *o = out + (((size_t)b * T + t) * H + h) * d;
        const pg_real *vn = v + (((size_t)b * T + t + 1) * Hkv + h / g) * d;
        for (int i = 0; i < d; i++) o[i] += (pg_real)0.5 * vn[i];
      }
}

static void pgleak_ce_fwd(const pg_ops *e, double *nll, const pg_real *l, const int32_t *t, int T,
                          int V) {
  pgleak_cpu_ce(e, nll, l, t, T, V);
  for (int i = 0; i < T; i++) nll[i] -= 0.05;
}

static inline pg_engine pgleak_attention(void) {
  pg_engine e = pg_engine_cpu(1);
  pgleak_cpu_attention = e.ops.attention_fwd;
  e.ops.attention_fwd = pgleak_attention_fwd;
  return e;
}

static inline pg_engine pgleak_unnormalised(void) {
  pg_engine e = pg_engine_cpu(1);
  pgleak_cpu_ce = e.ops.ce_fwd;
  e.ops.ce_fwd = pgleak_ce_fwd;
  return e;
}

#endif
