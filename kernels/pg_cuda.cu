/* pg_cuda.cu: the CUDA implementation of pg_cuda.h: device discovery, small memory helpers and
 * the dequantization kernel (int5..int8, byte or bit-packed, fp16 row scales, optional LQER).
 *
 * The kernel reproduces the CPU reference in format/pg_qtype.c bit for bit (spec/kernels.md):
 * every floating-point operation is an explicitly rounded intrinsic in the reference's order, and
 * the file is built with -fmad=false and without fast math, so nothing is contracted or
 * approximated. One thread writes one output element; there are no atomics, so a rerun writes the
 * same bytes. C++17, but only extern "C" symbols leave this file. */
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "pg_cuda.h"
#include "pg_qtype.h"

namespace {

constexpr unsigned kThreads = 256;
/* Grid cap: a grid-stride loop covers the rest (H100: 132 SMs x 2048 resident threads). */
constexpr uint64_t kMaxBlocks = 4096;

/* Exact fp16 -> fp32, the same case analysis as pg_f16_to_f32 (format/pg_half.c). */
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    if (man == 0) return __uint_as_float(sign);
    const float v = __fmul_rn((float)man, 5.9604644775390625e-08f); /* man * 2^-24, exact */
    return sign ? -v : v;
  }
  if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
  return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

struct DequantArgs {
  uint64_t n, cols;
  unsigned bits;
  int packing;
  const uint8_t *values;
  const uint16_t *scales;
  unsigned rank;
  const int8_t *qa;
  uint16_t sa;
  const int8_t *qb;
  const uint16_t *sb;
  float *out;
};

/* out[i] for i in [0, n): unpack (pg_unpack_bits), scale by the row's fp16 (pg_dequant_rows), and
 * add the rank-r correction summed in double in ascending k (pg_lqer_apply). */
__global__ void dequant_kernel(DequantArgs p) {
  const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
  const uint32_t mask = (1u << p.bits) - 1u;
  const int bias = 1 << (p.bits - 1);
  for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
    const uint64_t r = i / p.cols, c = i - r * p.cols;
    int q;
    if (p.packing == PG_PACK_BITS) {
      /* value i occupies bits [i*b, i*b + b) of the LSB-first stream: at most two bytes */
      const uint64_t bit = i * p.bits;
      const uint64_t byte = bit >> 3;
      const unsigned shift = (unsigned)(bit & 7u);
      uint32_t w = p.values[byte];
      if (shift + p.bits > 8u) w |= (uint32_t)p.values[byte + 1] << 8;
      q = (int)((w >> shift) & mask) - bias;
    } else {
      q = (int)(int8_t)p.values[i];
    }
    float v = __fmul_rn((float)q, f16_to_f32(p.scales[r]));
    if (p.rank) {
      const float sa = f16_to_f32(p.sa);
      double acc = 0.0;
      for (unsigned k = 0; k < p.rank; k++) {
        const uint64_t bi = (uint64_t)k * p.cols + c;
        const float a = __fmul_rn((float)p.qa[r * p.rank + k], sa);
        const float b = __fmul_rn((float)p.qb[bi], f16_to_f32(p.sb[bi / PG_LQER_GROUP]));
        acc = __dadd_rn(acc, __dmul_rn((double)a, (double)b));
      }
      v = __fadd_rn(v, __double2float_rn(acc));
    }
    p.out[i] = v;
  }
}

/* Report a failed runtime call, and reset the thread's last-error state (sticky errors stay
 * sticky) so that a later launch check does not report this failure again. */
int cuda_fail(pg_err *err, cudaError_t e, const char *what) {
  (void)cudaGetLastError();
  return pg_err_set(err, PG_E_CUDA, NULL, PG_NO_OFFSET, "%s: %s (%s)", what,
                    cudaGetErrorString(e), cudaGetErrorName(e));
}

/* Sizes derived from a validated tensor. */
struct Sizes {
  uint64_t n;        /* elements */
  uint64_t vbytes;   /* bytes of the values part */
  uint64_t na, nb;   /* elements of qA and qB */
  uint64_t ngroups;  /* fp16 scales of qB */
};

int arg_fail(pg_err *err, const char *what) {
  return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: %s", what);
}

/* Check everything that can be checked without reading the buffers. */
int validate(const pg_cuda_qtensor *t, const float *out, Sizes *s, pg_err *err) {
  if (!t) return arg_fail(err, "no tensor");
  if (!out) return arg_fail(err, "no output buffer");
  if (t->bits < 5 || t->bits > 8)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: bits %u not in 5..8", t->bits);
  if (t->packing != PG_PACK_BYTE && t->packing != PG_PACK_BITS)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: unknown packing %d",
                      t->packing);
  if (t->cols && t->rows > UINT64_MAX / t->cols)
    return pg_err_set(err, PG_E_DIMS_OVERFLOW, NULL, PG_NO_OFFSET,
                      "dequant: %llu x %llu overflows", (unsigned long long)t->rows,
                      (unsigned long long)t->cols);
  s->n = t->rows * t->cols;
  if (s->n > PG_CUDA_MAX_ELEMS)
    return pg_err_set(err, PG_E_LIMIT, NULL, PG_NO_OFFSET,
                      "dequant: %llu elements exceed the limit of 2^40",
                      (unsigned long long)s->n);
  s->vbytes = t->packing == PG_PACK_BITS ? pg_packed_bytes(s->n, t->bits) : s->n;
  if (t->lqer_rank > PG_CUDA_LQER_MAX_RANK)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "dequant: LQER rank %u exceeds 64",
                      t->lqer_rank);
  s->na = t->rows * t->lqer_rank; /* rank <= 64 and rows, cols <= 2^40 when n > 0 */
  s->nb = t->cols * t->lqer_rank;
  if (s->n && t->lqer_rank && s->nb % PG_LQER_GROUP)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "dequant: LQER rank %u x cols %llu is not a multiple of %d", t->lqer_rank,
                      (unsigned long long)t->cols, PG_LQER_GROUP);
  s->ngroups = s->nb / PG_LQER_GROUP;
  if (s->n == 0) return PG_OK;
  if (!t->values) return arg_fail(err, "no values");
  if (!t->scales_f16) return arg_fail(err, "no row scales");
  if (t->lqer_rank && (!t->lqer_a || !t->lqer_b || !t->lqer_b_scales_f16))
    return arg_fail(err, "LQER rank > 0 without its factors");
  return PG_OK;
}

/* The padding bits above the last packed value must be zero (pg_unpack_bits returns 1). */
int check_padding(const pg_cuda_qtensor *t, const Sizes &s, uint8_t last, pg_err *err) {
  const unsigned used = (unsigned)((s.n * t->bits) % 8u);
  if (used && (last >> used))
    return pg_err_set(err, PG_E_VALUE_RANGE, NULL, PG_NO_OFFSET,
                      "dequant: padding bits of packed byte %llu are not zero",
                      (unsigned long long)(s.vbytes - 1));
  return PG_OK;
}

int require_device(pg_err *err) {
  int count = 0;
  PG_TRY(pg_cuda_device_count(&count, err));
  if (count == 0) return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET, "no CUDA device");
  return PG_OK;
}

/* Launch on device buffers and wait for the stream; the status covers the kernel itself. */
int launch(const pg_cuda_qtensor *t, const Sizes &s, const void *values, const uint16_t *scales,
           const int8_t *qa, const int8_t *qb, const uint16_t *sb, float *out,
           cudaStream_t stream, pg_err *err) {
  DequantArgs p;
  p.n = s.n;
  p.cols = t->cols;
  p.bits = t->bits;
  p.packing = t->packing;
  p.values = static_cast<const uint8_t *>(values);
  p.scales = scales;
  p.rank = t->lqer_rank;
  p.qa = qa;
  p.sa = t->lqer_a_scale_f16;
  p.qb = qb;
  p.sb = sb;
  p.out = out;
  (void)cudaGetLastError(); /* a launch check must see only this launch's error */
  uint64_t blocks = (s.n + kThreads - 1) / kThreads;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  dequant_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(p);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_fail(err, e, "dequant kernel launch");
  e = cudaStreamSynchronize(stream);
  if (e != cudaSuccess) return cuda_fail(err, e, "dequant kernel");
  return PG_OK;
}

/* Device buffers of the host variant, freed on every path. */
struct DeviceBuffers {
  void *p[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  ~DeviceBuffers() {
    for (void *q : p)
      if (q) cudaFree(q);
  }
};

int upload(void **dev, const void *host, uint64_t bytes, const char *what, pg_err *err) {
  if (bytes == 0) return PG_OK;
  cudaError_t e = cudaMalloc(dev, (size_t)bytes);
  if (e != cudaSuccess) {
    *dev = nullptr;
    (void)cudaGetLastError();
    return pg_err_set(err, PG_E_CUDA, NULL, PG_NO_OFFSET, "cudaMalloc (%s, %llu bytes): %s (%s)",
                      what, (unsigned long long)bytes, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (!host) return PG_OK;
  e = cudaMemcpy(*dev, host, (size_t)bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return pg_err_set(err, PG_E_CUDA, NULL, PG_NO_OFFSET, "cudaMemcpy to device (%s): %s (%s)",
                      what, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  return PG_OK;
}

/* PG_E_ARG when ptr is plain (unregistered) host memory: the device variant wants device memory. */
int want_device_ptr(const void *ptr, const char *what, pg_err *err) {
  if (!ptr) return PG_OK;
  cudaPointerAttributes a;
  cudaError_t e = cudaPointerGetAttributes(&a, ptr);
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaPointerGetAttributes");
  if (a.type == cudaMemoryTypeUnregistered)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "dequant: %s is host memory, not device memory", what);
  return PG_OK;
}

}  // namespace

extern "C" {

int pg_cuda_built(void) { return 1; }

int pg_cuda_device_count(int *count, pg_err *err) {
  if (!count) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "device count: no output");
  *count = 0;
  int c = 0;
  const cudaError_t e = cudaGetDeviceCount(&c);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    return PG_OK;
  }
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaGetDeviceCount");
  *count = c;
  return PG_OK;
}

int pg_cuda_set_device(int device, pg_err *err) {
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaSetDevice");
  return PG_OK;
}

int pg_cuda_dequant(const pg_cuda_qtensor *t, float *out, pg_err *err) {
  Sizes s;
  PG_TRY(validate(t, out, &s, err));
  if (s.n == 0) return PG_OK;
  const uint8_t *values = static_cast<const uint8_t *>(t->values);
  if (t->packing == PG_PACK_BITS) PG_TRY(check_padding(t, s, values[s.vbytes - 1], err));
  PG_TRY(require_device(err));
  DeviceBuffers d;
  PG_TRY(upload(&d.p[0], values, s.vbytes, "values", err));
  PG_TRY(upload(&d.p[1], t->scales_f16, t->rows * 2, "row scales", err));
  if (t->lqer_rank) {
    PG_TRY(upload(&d.p[2], t->lqer_a, s.na, "LQER A", err));
    PG_TRY(upload(&d.p[3], t->lqer_b, s.nb, "LQER B", err));
    PG_TRY(upload(&d.p[4], t->lqer_b_scales_f16, s.ngroups * 2, "LQER B scales", err));
  }
  PG_TRY(upload(&d.p[5], nullptr, s.n * 4, "output", err));
  PG_TRY(launch(t, s, d.p[0], static_cast<const uint16_t *>(d.p[1]),
                static_cast<const int8_t *>(d.p[2]), static_cast<const int8_t *>(d.p[3]),
                static_cast<const uint16_t *>(d.p[4]), static_cast<float *>(d.p[5]), 0, err));
  const cudaError_t e = cudaMemcpy(out, d.p[5], (size_t)(s.n * 4), cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaMemcpy to host (output)");
  return PG_OK;
}

int pg_cuda_dequant_dev(const pg_cuda_qtensor *t, float *out_dev, void *stream, pg_err *err) {
  Sizes s;
  PG_TRY(validate(t, out_dev, &s, err));
  if (s.n == 0) return PG_OK;
  PG_TRY(require_device(err));
  PG_TRY(want_device_ptr(t->values, "values", err));
  PG_TRY(want_device_ptr(t->scales_f16, "row scales", err));
  if (t->lqer_rank) {
    PG_TRY(want_device_ptr(t->lqer_a, "LQER A", err));
    PG_TRY(want_device_ptr(t->lqer_b, "LQER B", err));
    PG_TRY(want_device_ptr(t->lqer_b_scales_f16, "LQER B scales", err));
  }
  PG_TRY(want_device_ptr(out_dev, "output", err));
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t->packing == PG_PACK_BITS) {
    uint8_t last = 0;
    cudaError_t e = cudaMemcpyAsync(&last, static_cast<const uint8_t *>(t->values) + s.vbytes - 1,
                                    1, cudaMemcpyDeviceToHost, st);
    if (e == cudaSuccess) e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) return cuda_fail(err, e, "cudaMemcpyAsync (last packed byte)");
    PG_TRY(check_padding(t, s, last, err));
  }
  return launch(t, s, t->values, t->scales_f16, t->lqer_a, t->lqer_b, t->lqer_b_scales_f16,
                out_dev, st, err);
}

int pg_cuda_alloc(void **dev, size_t bytes, pg_err *err) {
  if (!dev) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "cuda alloc: no output");
  *dev = nullptr;
  PG_TRY(require_device(err));
  const cudaError_t e = cudaMalloc(dev, bytes ? bytes : 1);
  if (e != cudaSuccess) {
    *dev = nullptr;
    (void)cudaGetLastError();
    return pg_err_set(err, PG_E_CUDA, NULL, PG_NO_OFFSET, "cudaMalloc (%llu bytes): %s (%s)",
                      (unsigned long long)bytes, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  return PG_OK;
}

void pg_cuda_free(void *dev) {
  if (dev) (void)cudaFree(dev);
}

int pg_cuda_upload(void *dev, const void *host, size_t bytes, pg_err *err) {
  if (bytes == 0) return PG_OK;
  if (!dev || !host) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "cuda upload: NULL");
  const cudaError_t e = cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaMemcpy to device");
  return PG_OK;
}

int pg_cuda_download(void *host, const void *dev, size_t bytes, pg_err *err) {
  if (bytes == 0) return PG_OK;
  if (!dev || !host) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "cuda download: NULL");
  const cudaError_t e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) return cuda_fail(err, e, "cudaMemcpy to host");
  return PG_OK;
}

}  // extern "C"
