/* pg_qtype.c: qtype facts, bit packing, and the CPU dequantization reference. */
#include "pg_qtype.h"

#include <string.h>

#include "pg_half.h"

static const struct {
  int id;
  const char *name;
  unsigned bits;
} QTYPES[] = {
    {PG_QTYPE_INT5, "int5", 5}, {PG_QTYPE_INT6, "int6", 6},  {PG_QTYPE_INT7, "int7", 7},
    {PG_QTYPE_INT8, "int8", 8}, {PG_QTYPE_F16, "f16", 16},   {PG_QTYPE_BF16, "bf16", 16},
    {PG_QTYPE_F32, "f32", 32},
};

const char *pg_qtype_name(int qtype) {
  for (size_t i = 0; i < sizeof QTYPES / sizeof QTYPES[0]; i++)
    if (QTYPES[i].id == qtype) return QTYPES[i].name;
  return NULL;
}

int pg_qtype_parse(const char *name) {
  for (size_t i = 0; i < sizeof QTYPES / sizeof QTYPES[0]; i++)
    if (!strcmp(QTYPES[i].name, name)) return QTYPES[i].id;
  return -1;
}

int pg_qtype_is_int(int qtype) { return qtype >= PG_QTYPE_INT5 && qtype <= PG_QTYPE_INT8; }

unsigned pg_qtype_bits(int qtype) {
  for (size_t i = 0; i < sizeof QTYPES / sizeof QTYPES[0]; i++)
    if (QTYPES[i].id == qtype) return QTYPES[i].bits;
  return 0;
}

uint64_t pg_packed_bytes(uint64_t n, unsigned bits) {
  uint64_t b;
  if (__builtin_mul_overflow(n, (uint64_t)bits, &b)) return UINT64_MAX;
  return b / 8 + (b % 8 != 0);
}

void pg_pack_bits(const int8_t *v, uint64_t n, unsigned bits, uint8_t *out) {
  const uint32_t bias = 1u << (bits - 1), mask = (1u << bits) - 1u;
  uint64_t nbytes = pg_packed_bytes(n, bits);
  memset(out, 0, (size_t)nbytes);
  uint32_t acc = 0;
  unsigned fill = 0;
  uint64_t o = 0;
  for (uint64_t i = 0; i < n; i++) {
    acc |= (((uint32_t)((int32_t)v[i] + (int32_t)bias)) & mask) << fill;
    fill += bits;
    while (fill >= 8) {
      out[o++] = (uint8_t)acc;
      acc >>= 8;
      fill -= 8;
    }
  }
  if (fill) out[o] = (uint8_t)acc;
}

int pg_unpack_bits(const uint8_t *in, uint64_t n, unsigned bits, int8_t *out) {
  const int32_t bias = 1 << (bits - 1);
  const uint32_t mask = (1u << bits) - 1u;
  uint32_t acc = 0;
  unsigned fill = 0;
  uint64_t p = 0;
  for (uint64_t i = 0; i < n; i++) {
    while (fill < bits) {
      acc |= (uint32_t)in[p++] << fill;
      fill += 8;
    }
    out[i] = (int8_t)((int32_t)(acc & mask) - bias);
    acc >>= bits;
    fill -= bits;
  }
  return acc != 0; /* leftover bits of the last byte must be zero */
}

void pg_dequant_rows(const int8_t *q, const uint16_t *scales_f16, uint64_t rows, uint64_t cols,
                     float *out) {
  for (uint64_t r = 0; r < rows; r++) {
    const float s = pg_f16_to_f32(scales_f16[r]);
    const int8_t *qr = q + r * cols;
    float *o = out + r * cols;
    for (uint64_t c = 0; c < cols; c++) o[c] = (float)qr[c] * s;
  }
}

void pg_dequant_scalar(const int8_t *q, float scale, uint64_t n, float *out) {
  for (uint64_t i = 0; i < n; i++) out[i] = (float)q[i] * scale;
}

void pg_lqer_apply(float *W, uint64_t rows, uint64_t cols, unsigned rank, const int8_t *qA,
                   uint16_t sA_f16, const int8_t *qB, const uint16_t *sB_f16) {
  const float sA = pg_f16_to_f32(sA_f16);
  for (uint64_t i = 0; i < rows; i++) {
    for (uint64_t j = 0; j < cols; j++) {
      double acc = 0.0;
      for (unsigned k = 0; k < rank; k++) {
        const uint64_t bi = (uint64_t)k * cols + j;
        const float a = (float)qA[i * rank + k] * sA;
        const float b = (float)qB[bi] * pg_f16_to_f32(sB_f16[bi / PG_LQER_GROUP]);
        acc += (double)a * (double)b;
      }
      W[i * cols + j] = W[i * cols + j] + (float)acc;
    }
  }
}
