/* pg_qtype.h: the value types of the container, their bit packing, and the CPU reference for
 * dequantization (the oracle the CUDA kernels are checked against, bit for bit).
 *
 * Integer qtypes hold signed values in [-(2^(b-1)), 2^(b-1)-1]. Stored one per byte they are
 * two's-complement int8 (as torch.int8 holds them); bit-packed they are offset binary
 * u = v + 2^(b-1) in b bits, LSB first, in one continuous stream over the whole tensor in
 * row-major order, the last byte's unused high bits zero. */
#ifndef PG_QTYPE_H
#define PG_QTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pg_qtype {
  PG_QTYPE_INT5 = 1,
  PG_QTYPE_INT6 = 2,
  PG_QTYPE_INT7 = 3,
  PG_QTYPE_INT8 = 4,
  PG_QTYPE_F16 = 16,
  PG_QTYPE_BF16 = 17,
  PG_QTYPE_F32 = 18,
};

enum pg_packing { PG_PACK_BYTE = 0, PG_PACK_BITS = 1 };

/* "int6", "f16", ...; NULL for an unknown qtype. */
const char *pg_qtype_name(int qtype);
/* Parse a qtype name; -1 when unknown. */
int pg_qtype_parse(const char *name);
/* 1 for int5..int8. */
int pg_qtype_is_int(int qtype);
/* Bits per value (5..8 for ints, 16 or 32 for floats); 0 for an unknown qtype. */
unsigned pg_qtype_bits(int qtype);
/* The signed range of a b-bit integer: [-(2^(b-1)), 2^(b-1)-1]. */
static inline int pg_int_min(unsigned bits) { return -(1 << (bits - 1)); }
static inline int pg_int_max(unsigned bits) { return (1 << (bits - 1)) - 1; }

/* Bytes that n values of `bits` take when bit-packed (ceil(n*bits/8)); UINT64_MAX on overflow. */
uint64_t pg_packed_bytes(uint64_t n, unsigned bits);
/* Pack n values (each within the b-bit signed range) into pg_packed_bytes(n, bits) bytes. */
void pg_pack_bits(const int8_t *v, uint64_t n, unsigned bits, uint8_t *out);
/* Unpack; returns 0, or 1 when the padding bits of the last byte are not zero. */
int pg_unpack_bits(const uint8_t *in, uint64_t n, unsigned bits, int8_t *out);

/* out[r*cols + c] = (float)q[r*cols + c] * f16(scales[r]), one fp32 rounding per element. */
void pg_dequant_rows(const int8_t *q, const uint16_t *scales_f16, uint64_t rows, uint64_t cols,
                     float *out);
/* Same with one scale for the whole tensor (fp32). */
void pg_dequant_scalar(const int8_t *q, float scale, uint64_t n, float *out);

/* LQER group size of the int4 factor's scales. */
#define PG_LQER_GROUP 64
/* Add the low-rank correction (qA·sA)(qB·sB) to W (rows x cols), rank r:
 *   a[i,k] = (float)qA[i*r+k] * f16(sA);  b[k,j] = (float)qB[k*cols+j] * f16(sB[(k*cols+j)/64]);
 *   W[i,j] = W[i,j] + (float)(sum_k (double)a[i,k] * (double)b[k,j])   (k ascending)
 * qA values lie in [-2, 1] (int2), qB in [-8, 7] (int4); r*cols must be a multiple of 64. */
void pg_lqer_apply(float *W, uint64_t rows, uint64_t cols, unsigned rank, const int8_t *qA,
                   uint16_t sA_f16, const int8_t *qB, const uint16_t *sB_f16);

#ifdef __cplusplus
}
#endif
#endif
