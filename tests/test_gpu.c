/* test_gpu.c: the CUDA kernels against the CPU reference, bit for bit (spec/kernels.md).
 *
 * Own main: before Criterion starts, a forked child asks the CUDA runtime for a device (so the
 * Criterion parent never initializes CUDA); without a CUDA build or a device the program exits 77,
 * which `meson test` reports as SKIP (PG_REQUIRE_GPU=1 turns that into a failure, for GPU CI).
 * Every test then runs in Criterion's own fresh worker process. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_cuda.h"
#include "pggpu.h"
#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_status.h"

#if defined(__SANITIZE_ADDRESS__)
#define PG_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PG_TEST_ASAN 1
#endif
#endif
#ifdef PG_TEST_ASAN
/* The CUDA driver maps memory where ASan's default shadow-gap protection sits; without this,
 * context creation fails with "out of memory" in a sanitizer build. Options from ASAN_OPTIONS
 * still apply on top. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }
/* Allocations the CUDA driver keeps until exit are not ours. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcuda.so\nleak:libnvidia-\n"; }
#endif

/* ---- deterministic inputs ---- */

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static int rnd_in(int lo, int hi) { return lo + (int)(rnd() % (uint32_t)(hi - lo + 1)); }
/* A finite fp16 bit pattern of either sign, subnormals and zeros included. */
static uint16_t rnd_f16(void) {
  for (;;) {
    uint16_t h = (uint16_t)rnd();
    if (((h >> 10) & 0x1fu) != 0x1fu) return h;
  }
}

/* One quantized tensor with the buffers it owns. */
typedef struct {
  pg_cuda_qtensor t;
  int8_t *q;       /* unpacked values (what the reference dequantizes) */
  uint8_t *packed; /* bit-packed stream when packing is PG_PACK_BITS */
  uint16_t *scales;
  int8_t *qa, *qb;
  uint16_t *sb;
} qcase;

static void qcase_make(qcase *c, uint64_t rows, uint64_t cols, unsigned bits, int packing,
                       unsigned rank, uint64_t seed) {
  memset(c, 0, sizeof *c);
  rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
  const uint64_t n = rows * cols;
  c->q = malloc(n ? n : 1);
  c->scales = malloc(rows ? rows * 2 : 2);
  cr_assert(c->q && c->scales);
  for (uint64_t i = 0; i < n; i++) c->q[i] = (int8_t)rnd_in(pg_int_min(bits), pg_int_max(bits));
  /* the extremes of the range always occur */
  if (n > 1) {
    c->q[0] = (int8_t)pg_int_min(bits);
    c->q[n - 1] = (int8_t)pg_int_max(bits);
  }
  for (uint64_t r = 0; r < rows; r++) c->scales[r] = rnd_f16();
  c->t.rows = rows;
  c->t.cols = cols;
  c->t.bits = bits;
  c->t.packing = packing;
  c->t.scales_f16 = c->scales;
  if (packing == PG_PACK_BITS) {
    const uint64_t nb = pg_packed_bytes(n, bits);
    c->packed = malloc(nb ? nb : 1);
    cr_assert(c->packed);
    pg_pack_bits(c->q, n, bits, c->packed);
    c->t.values = c->packed;
  } else {
    c->t.values = c->q;
  }
  if (rank) {
    const uint64_t na = rows * rank, nb = cols * rank;
    c->qa = malloc(na ? na : 1);
    c->qb = malloc(nb ? nb : 1);
    c->sb = malloc(nb / PG_LQER_GROUP * 2 + 2);
    cr_assert(c->qa && c->qb && c->sb);
    for (uint64_t i = 0; i < na; i++) c->qa[i] = (int8_t)rnd_in(-2, 1);
    for (uint64_t i = 0; i < nb; i++) c->qb[i] = (int8_t)rnd_in(-8, 7);
    for (uint64_t g = 0; g < nb / PG_LQER_GROUP; g++) c->sb[g] = rnd_f16();
    c->t.lqer_rank = rank;
    c->t.lqer_a = c->qa;
    c->t.lqer_a_scale_f16 = rnd_f16();
    c->t.lqer_b = c->qb;
    c->t.lqer_b_scales_f16 = c->sb;
  }
}

static void qcase_free(qcase *c) {
  free(c->q);
  free(c->packed);
  free(c->scales);
  free(c->qa);
  free(c->qb);
  free(c->sb);
}

/* The CPU reference: unpack (when packed), dequantize the rows, add the LQER correction. */
static float *reference(const qcase *c) {
  const pg_cuda_qtensor *t = &c->t;
  const uint64_t n = t->rows * t->cols;
  float *w = malloc(n ? n * 4 : 4);
  int8_t *q = malloc(n ? n : 1);
  cr_assert(w && q);
  if (t->packing == PG_PACK_BITS)
    cr_assert_eq(pg_unpack_bits(c->packed, n, t->bits, q), 0);
  else
    memcpy(q, c->q, n);
  pg_dequant_rows(q, t->scales_f16, t->rows, t->cols, w);
  if (t->lqer_rank)
    pg_lqer_apply(w, t->rows, t->cols, t->lqer_rank, t->lqer_a, t->lqer_a_scale_f16, t->lqer_b,
                  t->lqer_b_scales_f16);
  free(q);
  return w;
}

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

/* Assert got == want byte for byte, naming the first differing element. */
static void assert_same(const float *got, const float *want, uint64_t n, const char *what,
                        const pg_cuda_qtensor *t) {
  if (n == 0 || !memcmp(got, want, n * 4)) return;
  uint64_t i = 0;
  while (fbits(got[i]) == fbits(want[i])) i++;
  cr_assert_fail("%s: %llux%llu bits=%u packing=%d rank=%u: element %llu is %08x (%a), "
                 "reference %08x (%a)",
                 what, (unsigned long long)t->rows, (unsigned long long)t->cols, t->bits,
                 t->packing, t->lqer_rank, (unsigned long long)i, fbits(got[i]), (double)got[i],
                 fbits(want[i]), (double)want[i]);
}

/* GPU == reference bit for bit, and a second run gives the same bytes. */
static void check_case(uint64_t rows, uint64_t cols, unsigned bits, int packing, unsigned rank,
                       uint64_t seed) {
  qcase c;
  qcase_make(&c, rows, cols, bits, packing, rank, seed);
  const uint64_t n = rows * cols;
  float *want = reference(&c);
  float *got = malloc(n ? n * 4 : 4), *again = malloc(n ? n * 4 : 4);
  cr_assert(got && again);
  memset(got, 0xA5, n * 4);
  memset(again, 0x5A, n * 4);
  pg_err e = {0};
  int rc = pg_cuda_dequant(&c.t, got, &e);
  cr_assert_eq(rc, PG_OK, "dequant: %s", e.msg);
  assert_same(got, want, n, "GPU vs CPU", &c.t);
  rc = pg_cuda_dequant(&c.t, again, &e);
  cr_assert_eq(rc, PG_OK, "dequant (rerun): %s", e.msg);
  assert_same(again, got, n, "rerun", &c.t);
  free(want);
  free(got);
  free(again);
  qcase_free(&c);
}

static const uint64_t SHAPES[][2] = {
    {1, 1},  {1, 7},  {1, 64}, {3, 1},   {2, 3},    {5, 13},  {7, 16},   {4, 32},  {17, 33},
    {9, 48}, {31, 129}, {13, 64}, {6, 80}, {33, 192}, {64, 64}, {3, 1000}, {129, 257}, {40, 1},
};
static const unsigned RANKS[] = {0, 1, 2, 3, 4, 64};

/* Every shape, both layouts, every rank that the shape allows (rank*cols a multiple of 64). */
static void check_all(unsigned bits) {
  uint64_t seed = bits * 1000;
  for (size_t s = 0; s < sizeof SHAPES / sizeof SHAPES[0]; s++) {
    for (int packing = PG_PACK_BYTE; packing <= PG_PACK_BITS; packing++) {
      for (size_t k = 0; k < sizeof RANKS / sizeof RANKS[0]; k++) {
        const unsigned rank = RANKS[k];
        if (rank && (rank * SHAPES[s][1]) % PG_LQER_GROUP) continue;
        check_case(SHAPES[s][0], SHAPES[s][1], bits, packing, rank, ++seed);
      }
    }
  }
}

/* ---- tests ---- */

Test(gpu, device_present) {
  int count = -1;
  pg_err e = {0};
  cr_assert(pg_cuda_built());
  cr_assert_eq(pg_cuda_device_count(&count, &e), PG_OK, "%s", e.msg);
  cr_assert_geq(count, 1);
}

Test(gpu, int5_matches_cpu) { check_all(5); }
Test(gpu, int6_matches_cpu) { check_all(6); }
Test(gpu, int7_matches_cpu) { check_all(7); }
Test(gpu, int8_matches_cpu) { check_all(8); }

/* 2M elements: more than one grid of the kernel's capped launch, so the grid-stride loop runs. */
Test(gpu, large_tensor_matches_cpu) {
  check_case(1024, 2048, 6, PG_PACK_BITS, 4, 77);
  check_case(1000, 2049, 5, PG_PACK_BITS, 0, 78);
}

/* Every value of the range against the scales at the edges of fp16 (zero, -0, the smallest
 * subnormal, the largest subnormal, the smallest normal, 1, the largest finite). */
Test(gpu, edge_scales_and_values) {
  static const uint16_t edge[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400,
                                  0x3c00, 0xbc00, 0x7bff, 0xfbff, 0x3555, 0x0155};
  const uint64_t rows = sizeof edge / sizeof edge[0];
  for (unsigned bits = 5; bits <= 8; bits++) {
    for (int packing = PG_PACK_BYTE; packing <= PG_PACK_BITS; packing++) {
      const uint64_t cols = 1u << bits;
      qcase c;
      qcase_make(&c, rows, cols, bits, packing, 2, bits);
      for (uint64_t r = 0; r < rows; r++) {
        c.scales[r] = edge[r];
        for (uint64_t j = 0; j < cols; j++) c.q[r * cols + j] = (int8_t)(pg_int_min(bits) + (int)j);
      }
      if (packing == PG_PACK_BITS) pg_pack_bits(c.q, rows * cols, bits, c.packed);
      c.t.lqer_a_scale_f16 = 0x7bff; /* large factors: products far from fp32's range edges */
      for (uint64_t g = 0; g < 2 * cols / PG_LQER_GROUP; g++) c.sb[g] = edge[g % rows];
      float *want = reference(&c), *got = malloc(rows * cols * 4);
      pg_err e = {0};
      cr_assert_eq(pg_cuda_dequant(&c.t, got, &e), PG_OK, "%s", e.msg);
      assert_same(got, want, rows * cols, "edge scales", &c.t);
      free(want);
      free(got);
      qcase_free(&c);
    }
  }
}

/* Inputs where the order and the roundings of the LQER sum show in the fp32 result: B's group
 * scales alternate between fp16's largest values and its subnormals, so a large product and its
 * near-opposite cancel and the small ones decide the result. Summing in another order, or adding
 * the correction to W in double, gives different bytes; the test first proves that on the CPU. */
Test(gpu, lqer_sum_order_is_the_reference_order) {
  enum { ROWS = 512, COLS = 64, RANK = 4 };
  qcase c;
  qcase_make(&c, ROWS, COLS, 8, PG_PACK_BYTE, RANK, 31337);
  c.t.lqer_a_scale_f16 = 0x3d55; /* 1.333..., a full 11-bit significand */
  c.sb[0] = c.sb[2] = 0x7b55;     /* ~60000: k = 0 and 2 cancel where qA*qB are opposite */
  c.sb[1] = 0x02ab;               /* subnormals: their low bits fall below the large ones' ulp */
  c.sb[3] = 0x0155;
  for (uint64_t r = 0; r < ROWS; r++) c.scales[r] = (uint16_t)(0x0001 + r % 0x3ff); /* small W */
  float *want = reference(&c);
  /* the same sum in descending k, and with the correction added in double */
  uint64_t differ_order = 0, differ_fused = 0;
  const float sa = pg_f16_to_f32(c.t.lqer_a_scale_f16);
  for (uint64_t i = 0; i < ROWS; i++) {
    for (uint64_t j = 0; j < COLS; j++) {
      const float w = (float)c.q[i * COLS + j] * pg_f16_to_f32(c.scales[i]);
      double up = 0.0, down = 0.0;
      for (unsigned k = 0; k < RANK; k++) {
        const unsigned kk = RANK - 1 - k;
        const float a = (float)c.qa[i * RANK + k] * sa,
                    b = (float)c.qb[k * COLS + j] * pg_f16_to_f32(c.sb[k]);
        const float a2 = (float)c.qa[i * RANK + kk] * sa,
                    b2 = (float)c.qb[kk * COLS + j] * pg_f16_to_f32(c.sb[kk]);
        up += (double)a * (double)b;
        down += (double)a2 * (double)b2;
      }
      const float r_down = w + (float)down, r_fused = (float)((double)w + up);
      differ_order += fbits(r_down) != fbits(want[i * COLS + j]);
      differ_fused += fbits(r_fused) != fbits(want[i * COLS + j]);
    }
  }
  cr_assert_gt(differ_order, 0, "inputs do not tell the summation orders apart");
  cr_assert_gt(differ_fused, 0, "inputs do not tell the final roundings apart");
  float *got = malloc(ROWS * COLS * 4);
  pg_err e = {0};
  cr_assert_eq(pg_cuda_dequant(&c.t, got, &e), PG_OK, "%s", e.msg);
  assert_same(got, want, ROWS * COLS, "LQER sum order", &c.t);
  free(want);
  free(got);
  qcase_free(&c);
}

/* The device-pointer variant on device buffers, on the default stream. 37 x 13 int7 values
 * leave one padding bit in the last packed byte; rank 64 makes rank*cols a multiple of 64. */
Test(gpu, device_pointer_variant) {
  enum { ROWS = 37, COLS = 13, RANK = 64 };
  qcase c;
  qcase_make(&c, ROWS, COLS, 7, PG_PACK_BITS, RANK, 4242);
  const uint64_t n = ROWS * COLS, vbytes = pg_packed_bytes(n, 7);
  const uint64_t na = ROWS * RANK, nb = RANK * COLS, ng = nb / PG_LQER_GROUP;
  cr_assert_neq((n * 7) % 8, 0);
  float *want = reference(&c), *got = malloc(n * 4);
  void *dv, *ds, *da, *db, *dsb, *dout;
  pg_err e = {0};
  cr_assert_eq(pg_cuda_alloc(&dv, vbytes, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_alloc(&ds, ROWS * 2, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_alloc(&da, na, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_alloc(&db, nb, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_alloc(&dsb, ng * 2, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_alloc(&dout, n * 4, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_upload(dv, c.packed, vbytes, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_upload(ds, c.scales, ROWS * 2, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_upload(da, c.qa, na, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_upload(db, c.qb, nb, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_upload(dsb, c.sb, ng * 2, &e), PG_OK, "%s", e.msg);
  pg_cuda_qtensor t = c.t;
  t.values = dv;
  t.scales_f16 = ds;
  t.lqer_a = da;
  t.lqer_b = db;
  t.lqer_b_scales_f16 = dsb;
  cr_assert_eq(pg_cuda_dequant_dev(&t, dout, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_download(got, dout, n * 4, &e), PG_OK, "%s", e.msg);
  assert_same(got, want, n, "device variant", &t);
  /* the same through the host variant */
  float *host = malloc(n * 4);
  cr_assert_eq(pg_cuda_dequant(&c.t, host, &e), PG_OK, "%s", e.msg);
  assert_same(host, got, n, "host vs device variant", &t);
  /* host pointers where device pointers belong */
  cr_assert_eq(pg_cuda_dequant_dev(&c.t, dout, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_cuda_dequant_dev(&t, got, NULL, &e), PG_E_ARG);
  /* dirty the padding bit in device memory */
  uint8_t last = c.packed[vbytes - 1] | 0x80;
  cr_assert_eq(pg_cuda_upload((uint8_t *)dv + vbytes - 1, &last, 1, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_cuda_dequant_dev(&t, dout, NULL, &e), PG_E_VALUE_RANGE);
  pg_cuda_free(dv);
  pg_cuda_free(ds);
  pg_cuda_free(da);
  pg_cuda_free(db);
  pg_cuda_free(dsb);
  pg_cuda_free(dout);
  free(want);
  free(got);
  free(host);
  qcase_free(&c);
}

static void expect(int rc_want, const pg_cuda_qtensor *t, float *out, const char *what) {
  pg_err e = {0};
  int rc = pg_cuda_dequant(t, out, &e);
  cr_assert_eq(rc, rc_want, "%s: got %s (%s)", what, pg_status_name(rc), e.msg);
  cr_assert_eq(e.status, rc_want, "%s", what);
  cr_assert(e.msg[0] != '\0' && !strchr(e.msg, '\n'), "%s: one non-empty line", what);
}

Test(gpu, bad_arguments) {
  qcase c;
  qcase_make(&c, 4, 64, 6, PG_PACK_BITS, 2, 9);
  float out[256];
  pg_cuda_qtensor t;
  expect(PG_E_ARG, NULL, out, "no tensor");
  expect(PG_E_ARG, &c.t, NULL, "no output");
  t = c.t, t.bits = 4;
  expect(PG_E_ARG, &t, out, "bits 4");
  t = c.t, t.bits = 9;
  expect(PG_E_ARG, &t, out, "bits 9");
  t = c.t, t.packing = 2;
  expect(PG_E_ARG, &t, out, "packing 2");
  t = c.t, t.values = NULL;
  expect(PG_E_ARG, &t, out, "no values");
  t = c.t, t.scales_f16 = NULL;
  expect(PG_E_ARG, &t, out, "no scales");
  t = c.t, t.lqer_rank = 65;
  expect(PG_E_ARG, &t, out, "rank 65");
  t = c.t, t.lqer_rank = 3; /* 3 * 64 is fine, but not 3 * 63 */
  t.cols = 63;
  expect(PG_E_ARG, &t, out, "rank*cols not a multiple of 64");
  t = c.t, t.lqer_a = NULL;
  expect(PG_E_ARG, &t, out, "no LQER A");
  t = c.t, t.lqer_b = NULL;
  expect(PG_E_ARG, &t, out, "no LQER B");
  t = c.t, t.lqer_b_scales_f16 = NULL;
  expect(PG_E_ARG, &t, out, "no LQER B scales");
  t = c.t, t.rows = UINT64_MAX / 2, t.cols = 3;
  expect(PG_E_DIMS_OVERFLOW, &t, out, "rows*cols overflows");
  t = c.t, t.rows = 1u << 21, t.cols = 1u << 20;
  expect(PG_E_LIMIT, &t, out, "beyond 2^40 elements");
  /* nothing to do: fine, and no buffer is touched */
  t = c.t, t.rows = 0;
  cr_assert_eq(pg_cuda_dequant(&t, out, NULL), PG_OK);
  t = c.t, t.cols = 0, t.lqer_rank = 0;
  cr_assert_eq(pg_cuda_dequant(&t, out, NULL), PG_OK);
  qcase_free(&c);

  /* a packed stream whose last byte has a padding bit set (the reference flags it too) */
  qcase_make(&c, 3, 5, 5, PG_PACK_BITS, 0, 10); /* 75 bits: 5 padding bits */
  const uint64_t nb = pg_packed_bytes(15, 5);
  c.packed[nb - 1] |= 0x80;
  int8_t tmp[15];
  cr_assert_eq(pg_unpack_bits(c.packed, 15, 5, tmp), 1);
  expect(PG_E_VALUE_RANGE, &c.t, out, "padding bits");
  qcase_free(&c);

  int count;
  cr_assert_eq(pg_cuda_device_count(NULL, NULL), PG_E_ARG);
  cr_assert_eq(pg_cuda_device_count(&count, NULL), PG_OK);
}

/* A CUDA runtime failure is PG_E_CUDA with the runtime's text on one line. */
Test(gpu, cuda_failure_is_reported) {
  void *p = NULL;
  pg_err e = {0};
  int rc = pg_cuda_alloc(&p, (size_t)1 << 52, &e); /* 4 PiB */
  cr_assert_eq(rc, PG_E_CUDA, "got %s", pg_status_name(rc));
  cr_assert_null(p);
  cr_assert(strstr(e.msg, "cudaMalloc") && !strchr(e.msg, '\n'), "%s", e.msg);
  /* the failure is not sticky: the next call works */
  cr_assert_eq(pg_cuda_alloc(&p, 16, &e), PG_OK, "%s", e.msg);
  pg_cuda_free(p);
}

/* ---- entry point ---- */

int main(int argc, char *argv[]) { return gpu_main(argc, argv, 1); }
