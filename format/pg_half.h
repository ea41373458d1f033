/* pg_half.h: exact conversions between fp32 and the 16-bit float formats (fp16, bf16).
 * fp32 → 16-bit rounds to nearest, ties to even, as torch's .to(float16/bfloat16) does; NaN stays
 * NaN (quiet). 16-bit → fp32 is exact. */
#ifndef PG_HALF_H
#define PG_HALF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

float pg_f16_to_f32(uint16_t h);
uint16_t pg_f32_to_f16(float f);
float pg_bf16_to_f32(uint16_t h);
uint16_t pg_f32_to_bf16(float f);

#ifdef __cplusplus
}
#endif
#endif
