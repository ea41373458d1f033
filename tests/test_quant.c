/* test_quant.c: SDClip scales bit for bit against values worked out independently (Python's
 * struct float32/float16 rounding), round-to-nearest-even quantization and its clamping. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "pg_half.h"
#include "pg_quant.h"

Test(quant, sdclip_scales_bit_exact) {
  /* rows of different lengths, run one at a time */
  static const float r0[] = {1, 2, 3, 4}, r1[] = {0.5f, -0.25f, 0.125f, -1.0f, 2.0f},
                     r2[] = {0, 0, 0, 0}, r3[] = {1e-3f, -1e-3f, 2e-3f, -2e-3f};
  const float *rows[] = {r0, r1, r2, r3};
  const uint64_t lens[] = {4, 5, 4, 4};
  const struct {
    float k;
    unsigned bits;
    uint16_t want[4];
  } cases[] = {{12.85f, 6, {0x3848, 0x3761, 0x0000, 0x1233}},
               {20.0f, 8, {0x3281, 0x319b, 0x0000, 0x0cb6}},
               {11.5f, 5, {0x3beb, 0x3ad3, 0x0000, 0x15bc}}};
  for (size_t c = 0; c < 3; c++)
    for (size_t r = 0; r < 4; r++) {
      uint16_t s;
      pg_quant_sdclip_scales(rows[r], 1, lens[r], cases[c].k, cases[c].bits, &s);
      cr_assert_eq(s, cases[c].want[r], "k=%g bits=%u row %zu: got %04x want %04x",
                   (double)cases[c].k, cases[c].bits, r, s, cases[c].want[r]);
    }
}

Test(quant, row_std_is_unbiased) {
  const float w[6] = {1, 2, 3, 4, 10, 10};
  float sd[2];
  pg_quant_row_std(w, 2, 3, sd);
  cr_assert_eq(sd[0], 1.0f);
  cr_assert_float_eq(sd[1], (float)sqrt(12.0), 1e-6);
}

Test(quant, rtn_rounds_half_to_even_and_clamps) {
  const float w[8] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 40.0f, -40.0f, 3.49f};
  const uint16_t s = pg_f32_to_f16(1.0f);
  int8_t q[8];
  uint64_t clamped = pg_quant_rtn_rows(w, 1, 8, &s, -31, 31, q);
  const int8_t want[8] = {0, 2, 2, 0, -2, 31, -31, 3};
  cr_assert(!memcmp(q, want, 8));
  cr_assert_eq(clamped, 2);
  /* a zero row: its scale underflows to 0 and its values quantize to 0 */
  const float z[4] = {0, 0, 0, 0};
  uint16_t zs;
  pg_quant_sdclip_scales(z, 1, 4, 12.85f, 6, &zs);
  int8_t zq[4] = {9, 9, 9, 9};
  cr_assert_eq(pg_quant_rtn_rows(z, 1, 4, &zs, -31, 31, zq), 0);
  cr_assert_eq(zq[0], 0);
  cr_assert_eq(zq[3], 0);
}
