/* pg_exp.h: the exponential of the softmaxes (attention, cross-entropy), spec/engine.md §2.1.
 * A fixed sequence of IEEE fp64 operations (fused multiply-adds included, each exactly rounded),
 * so the result is the same bits on every machine, in scalar code (C99 fma) and in the AVX2
 * vector code below, and a GPU kernel can reproduce it (__fma_rn). About 8 vector operations
 * per value instead of a call to the C library's exp, which made a third of the attention's
 * time; its error is under 1 ulp (tests/test_ops.c measures it against the C library). */
#ifndef PG_EXP_H
#define PG_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* x is clamped to [PG_EXP_LO, PG_EXP_HI] (exp rounds to 0 below, to +Inf above) */
#define PG_EXP_LO (-746.0)
#define PG_EXP_HI 710.0
#define PG_EXP_LOG2E 0x1.71547652b82fep+0  /* fp64(log2 e) */
#define PG_EXP_LN2HI 0x1.62e42fefa39efp-1  /* fp64(ln 2) */
#define PG_EXP_LN2LO 0x1.abc9e3b39803fp-56 /* fp64(ln 2 − PG_EXP_LN2HI) */

/* c_j = fp64(1/j!) for the Taylor polynomial of degree 13, c_13 first */
#define PG_EXP_C13 (1.0 / 6227020800.0)
#define PG_EXP_C12 (1.0 / 479001600.0)
#define PG_EXP_C11 (1.0 / 39916800.0)
#define PG_EXP_C10 (1.0 / 3628800.0)
#define PG_EXP_C9 (1.0 / 362880.0)
#define PG_EXP_C8 (1.0 / 40320.0)
#define PG_EXP_C7 (1.0 / 5040.0)
#define PG_EXP_C6 (1.0 / 720.0)
#define PG_EXP_C5 (1.0 / 120.0)
#define PG_EXP_C4 (1.0 / 24.0)
#define PG_EXP_C3 (1.0 / 6.0)
#define PG_EXP_C2 0.5

/* 2^e as a double, for e in [−1022, 1023] */
static inline double pg_exp_pow2(int64_t e) {
  uint64_t u = (uint64_t)(e + 1023) << 52;
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* The definition (spec/engine.md §2.1), one value. Compiled where the target has FMA, fma() is
 * the instruction; elsewhere the C library's fma, which is exact as well. */
static inline __attribute__((always_inline)) double pg_exp_inline(double x) {
  if (x != x) return x; /* NaN */
  if (x < PG_EXP_LO) x = PG_EXP_LO;
  if (x > PG_EXP_HI) x = PG_EXP_HI;
  double kf = nearbyint(x * PG_EXP_LOG2E); /* ties to even */
  double r = fma(-kf, PG_EXP_LN2HI, x);
  r = fma(-kf, PG_EXP_LN2LO, r);
  double p = PG_EXP_C13;
  p = fma(p, r, PG_EXP_C12);
  p = fma(p, r, PG_EXP_C11);
  p = fma(p, r, PG_EXP_C10);
  p = fma(p, r, PG_EXP_C9);
  p = fma(p, r, PG_EXP_C8);
  p = fma(p, r, PG_EXP_C7);
  p = fma(p, r, PG_EXP_C6);
  p = fma(p, r, PG_EXP_C5);
  p = fma(p, r, PG_EXP_C4);
  p = fma(p, r, PG_EXP_C3);
  p = fma(p, r, PG_EXP_C2);
  p = fma(p, r, 1.0);
  p = fma(p, r, 1.0);
  /* 2^k in two normal factors (k is in [−1077, 1025]): the first product is exact, the
   * second rounds once, also into the subnormals or to +Inf */
  int64_t k = (int64_t)kf, k1 = (k - (k & 1)) / 2, k2 = k - k1;
  return p * pg_exp_pow2(k1) * pg_exp_pow2(k2);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PG_EXP_HAVE_AVX2 1
/* The same operations on four values (lane for lane the bits of pg_exp_inline). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256d pg_exp4(__m256d x0) {
  const __m256d nan = _mm256_cmp_pd(x0, x0, _CMP_UNORD_Q);
  __m256d x = _mm256_min_pd(_mm256_max_pd(x0, _mm256_set1_pd(PG_EXP_LO)),
                            _mm256_set1_pd(PG_EXP_HI));
  __m256d kf = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(PG_EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(kf, _mm256_set1_pd(PG_EXP_LN2HI), x);
  r = _mm256_fnmadd_pd(kf, _mm256_set1_pd(PG_EXP_LN2LO), r);
  __m256d p = _mm256_set1_pd(PG_EXP_C13);
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C12));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C11));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C10));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C9));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C8));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C7));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C6));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C5));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C4));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C3));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(PG_EXP_C2));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  __m128i k = _mm256_cvtpd_epi32(kf); /* exact: kf is an integer */
  __m128i k1 = _mm_srai_epi32(k, 1), k2 = _mm_sub_epi32(k, k1);
  const __m256i bias = _mm256_set1_epi64x(1023);
  __m256d p1 = _mm256_castsi256_pd(
      _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k1), bias), 52));
  __m256d p2 = _mm256_castsi256_pd(
      _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k2), bias), 52));
  __m256d y = _mm256_mul_pd(_mm256_mul_pd(p, p1), p2);
  return _mm256_blendv_pd(y, x0, nan);
}

/* pg_exp4 on PG_EXP_WAYS independent vectors, the same operations lane for lane, issued step by
 * step across the vectors: one value's steps are a chain of ~20 dependent operations, and
 * interleaving independent chains in the instruction stream lets the core overlap them without
 * having to look far ahead. */
#define PG_EXP_WAYS 4
__attribute__((target("avx2,fma"), always_inline)) static inline void pg_exp4_ways(
    __m256d x[PG_EXP_WAYS]) {
  __m256d r[PG_EXP_WAYS], p[PG_EXP_WAYS];
  __m128i k[PG_EXP_WAYS];
  for (int j = 0; j < PG_EXP_WAYS; j++) {
    __m256d xc = _mm256_min_pd(_mm256_max_pd(x[j], _mm256_set1_pd(PG_EXP_LO)),
                               _mm256_set1_pd(PG_EXP_HI));
    __m256d kf = _mm256_round_pd(_mm256_mul_pd(xc, _mm256_set1_pd(PG_EXP_LOG2E)),
                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    r[j] = _mm256_fnmadd_pd(kf, _mm256_set1_pd(PG_EXP_LN2HI), xc);
    r[j] = _mm256_fnmadd_pd(kf, _mm256_set1_pd(PG_EXP_LN2LO), r[j]);
    k[j] = _mm256_cvtpd_epi32(kf);
    p[j] = _mm256_set1_pd(PG_EXP_C13);
  }
  static const double cs[] = {PG_EXP_C12, PG_EXP_C11, PG_EXP_C10, PG_EXP_C9, PG_EXP_C8,
                              PG_EXP_C7,  PG_EXP_C6,  PG_EXP_C5,  PG_EXP_C4, PG_EXP_C3,
                              PG_EXP_C2,  1.0,        1.0};
  for (int c = 0; c < 13; c++)
    for (int j = 0; j < PG_EXP_WAYS; j++)
      p[j] = _mm256_fmadd_pd(p[j], r[j], _mm256_set1_pd(cs[c]));
  const __m256i bias = _mm256_set1_epi64x(1023);
  for (int j = 0; j < PG_EXP_WAYS; j++) {
    __m128i k1 = _mm_srai_epi32(k[j], 1), k2 = _mm_sub_epi32(k[j], k1);
    __m256d p1 = _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k1), bias), 52));
    __m256d p2 = _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(k2), bias), 52));
    __m256d y = _mm256_mul_pd(_mm256_mul_pd(p[j], p1), p2);
    x[j] = _mm256_blendv_pd(y, x[j], _mm256_cmp_pd(x[j], x[j], _CMP_UNORD_Q));
  }
}
#endif

#endif
