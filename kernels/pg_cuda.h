/* pg_cuda.h: the C interface to pgolf's CUDA kernels. Every function returns a pg_status (and
 * fills the optional pg_err with one line); in a build without CUDA they return PG_E_UNSUPPORTED.
 * CUDA runtime failures are PG_E_CUDA (the line carries cudaGetErrorString's text), a machine
 * without a usable device PG_E_NO_DEVICE. The kernels' contract is spec/kernels.md. */
#ifndef PG_CUDA_H
#define PG_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build has CUDA kernels compiled in. */
int pg_cuda_built(void);
/* Number of usable devices (0 without a driver or device); PG_E_UNSUPPORTED without CUDA. */
int pg_cuda_device_count(int *count, pg_err *err);
/* Make device the calling thread's current device (cudaSetDevice: a per-thread setting). */
int pg_cuda_set_device(int device, pg_err *err);

/* Largest LQER rank the kernels accept (spec/format.md §7). */
#define PG_CUDA_LQER_MAX_RANK 64u
/* Largest element count of one tensor (spec/format.md §4). */
#define PG_CUDA_MAX_ELEMS (UINT64_C(1) << 40)

/* One quantized integer tensor with row scales, as the container stores it after decompression.
 * The pointers are host pointers for pg_cuda_dequant and device pointers for pg_cuda_dequant_dev;
 * they are only read. */
typedef struct pg_cuda_qtensor {
  uint64_t rows, cols;        /* W is rows x cols, row-major */
  unsigned bits;              /* 5..8: the qtype's width (int5..int8) */
  int packing;                /* PG_PACK_BYTE (0): rows*cols int8 values, two's complement;
                                 PG_PACK_BITS (1): pg_packed_bytes(rows*cols, bits) bytes, offset
                                 binary, LSB first, one continuous stream (pg_pack_bits) */
  const void *values;
  const uint16_t *scales_f16; /* rows fp16 bit patterns, one scale per row */
  /* Optional LQER correction; lqer_rank 0 means none and the lqer_* fields are ignored. */
  unsigned lqer_rank;         /* 1..64, with lqer_rank*cols a multiple of 64 */
  const int8_t *lqer_a;       /* rows x rank int8 (int2 values, [-2, 1]) */
  uint16_t lqer_a_scale_f16;  /* one fp16 scale for A */
  const int8_t *lqer_b;       /* rank x cols int8 (int4 values, [-8, 7]) */
  const uint16_t *lqer_b_scales_f16; /* rank*cols/64 fp16 scales, per group of 64 over B's
                                        row-major flatten */
} pg_cuda_qtensor;

/* Dequantize t to fp32 on device 0 and copy the rows*cols floats into the host buffer out.
 * The result is bit-identical to the CPU reference (pg_unpack_bits, pg_dequant_rows, then
 * pg_lqer_apply when lqer_rank > 0). Statuses: PG_E_ARG for bad arguments (NULL pointers,
 * bits outside 5..8, unknown packing, rank > 64 or rank*cols not a multiple of 64),
 * PG_E_DIMS_OVERFLOW when rows*cols overflows, PG_E_LIMIT beyond PG_CUDA_MAX_ELEMS,
 * PG_E_VALUE_RANGE when the padding bits of a packed stream's last byte are not zero,
 * PG_E_NO_DEVICE, PG_E_CUDA, PG_E_UNSUPPORTED without CUDA. out is unspecified after an error. */
int pg_cuda_dequant(const pg_cuda_qtensor *t, float *out, pg_err *err);

/* The same with every pointer of t and out_dev in device memory (device 0's current context).
 * stream is a cudaStream_t (NULL: the legacy default stream); the call waits for its work on
 * that stream to finish before it returns, so the status covers the kernel. */
int pg_cuda_dequant_dev(const pg_cuda_qtensor *t, float *out_dev, void *stream, pg_err *err);

/* Device memory for callers that hold no CUDA headers (the engine, tests). pg_cuda_alloc gives
 * at least one byte; pg_cuda_free(NULL) does nothing; the copies are synchronous. */
int pg_cuda_alloc(void **dev, size_t bytes, pg_err *err);
void pg_cuda_free(void *dev);
int pg_cuda_upload(void *dev, const void *host, size_t bytes, pg_err *err);
int pg_cuda_download(void *host, const void *dev, size_t bytes, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
