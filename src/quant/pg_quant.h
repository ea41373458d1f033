/* pg_quant.h: quantization primitives shared by pgdemo and pgpack: SDClip row scales and
 * round-to-nearest (half to even) per-row quantization (spec/quant.md). GPTQ builds on these. */
#ifndef PG_QUANT_H
#define PG_QUANT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Unbiased standard deviation of each row (fp64 sums, two passes), rounded to fp32. */
void pg_quant_row_std(const float *W, uint64_t rows, uint64_t cols, float *std_out);

/* SDClip scales: s[r] = fp16(max(fp32(fp32(k * std[r]) / R), 1e-10)), R = 2^(bits-1) - 1. */
void pg_quant_sdclip_scales(const float *W, uint64_t rows, uint64_t cols, float k, unsigned bits,
                            uint16_t *scales_f16);

/* q = clamp(rint(W / s), qmin, qmax) per row with the fp16 scale widened to fp32; rint rounds
 * half to even (as torch.round). Returns the number of values that were clamped. */
uint64_t pg_quant_rtn_rows(const float *W, uint64_t rows, uint64_t cols,
                           const uint16_t *scales_f16, int qmin, int qmax, int8_t *q);

#ifdef __cplusplus
}
#endif
#endif
