/* pg_quant.c: SDClip scales and round-to-nearest quantization (see pg_quant.h). */
#include "pg_quant.h"

#include <math.h>

#include "pg_half.h"

void pg_quant_row_std(const float *W, uint64_t rows, uint64_t cols, float *std_out) {
  for (uint64_t r = 0; r < rows; r++) {
    const float *w = W + r * cols;
    double sum = 0.0;
    for (uint64_t c = 0; c < cols; c++) sum += (double)w[c];
    const double mean = cols ? sum / (double)cols : 0.0;
    double ss = 0.0;
    for (uint64_t c = 0; c < cols; c++) {
      const double d = (double)w[c] - mean;
      ss += d * d;
    }
    std_out[r] = cols > 1 ? (float)sqrt(ss / (double)(cols - 1)) : NAN;
  }
}

void pg_quant_sdclip_scales(const float *W, uint64_t rows, uint64_t cols, float k, unsigned bits,
                            uint16_t *scales_f16) {
  const float R = (float)((1 << (bits - 1)) - 1);
  for (uint64_t r = 0; r < rows; r++) {
    float sd;
    pg_quant_row_std(W + r * cols, 1, cols, &sd);
    float s = (k * sd) / R;
    if (!(s >= 1e-10f)) s = 1e-10f; /* clamp_min; a NaN std also lands on the floor */
    scales_f16[r] = pg_f32_to_f16(s);
  }
}

uint64_t pg_quant_rtn_rows(const float *W, uint64_t rows, uint64_t cols,
                           const uint16_t *scales_f16, int qmin, int qmax, int8_t *q) {
  uint64_t clamped = 0;
  for (uint64_t r = 0; r < rows; r++) {
    const float s = pg_f16_to_f32(scales_f16[r]);
    for (uint64_t c = 0; c < cols; c++) {
      float v = rintf(W[r * cols + c] / s);
      if (v < (float)qmin) {
        v = (float)qmin;
        clamped++;
      } else if (v > (float)qmax) {
        v = (float)qmax;
        clamped++;
      } else if (v != v) {
        v = 0.0f; /* 0/0 in a row whose scale underflowed to 0: the value is 0 */
      }
      q[r * cols + c] = (int8_t)v;
    }
  }
  return clamped;
}
