/* pg_cuda_engine.cu: the CUDA engine, first part (issue 13): device memory on one stream, the
 * transfers, sync with the device's first error, and every FORWARD op of the table in the fp32
 * numerics of the CPU reference (spec/engine.md §2): one thread computes one output (or one row)
 * start to finish, every sum in fp64 in ascending index order, each output rounded once. The file
 * is built with -fmad=false, IEEE division and square root, so an op made of +, −, ×, ÷ and √ gives
 * the CPU's bits, and so do the softmaxes (attention, CE's sum), whose exponential is pg_exp, a
 * fixed sequence of fp64 operations; ops that call the C library's exp, log, tanh, pow, sin or
 * cos on the CPU (CE's log, softcap, sigmoid gates, RoPE angles) use CUDA's fp64 functions, which
 * may differ in the last place (spec/engine.md §8.6 states the tolerance). No atomics feed a
 * result: reruns give the same bits. The backward and optimizer ops (issue 15), in the same
 * numerics, are in pg_cuda_engine_bwd.cu; what both files share is in pg_cuda_engine_impl.cuh.
 *
 * The exact kernels are the fp32 mode's engine, and the reference the fast bf16 mode is checked
 * against on the same device. An engine opened with precision bf16 (pg_engine_opts) runs the
 * model's bf16 passes faster (spec/engine.md §8.7): matmul on the tensor cores through cuBLAS
 * (loaded at run time, so the programs still need only the driver), bf16 operands and fp32 sums;
 * attention_bf16_fwd as a fused flash kernel (mma.sync, online softmax, no T×T matrix); and in
 * the trainer's backward (pg_engine.bf16_grad) matmul_bwd through cuBLAS and attention_bwd as a
 * flash backward (pg_cuda_engine_bwd.cu calls both here). Every other op stays exact. */
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_cuda_engine_impl.cuh"
#include "pg_engine.h"

namespace {

/* The few names of cuBLAS's C interface the fast mode calls (loaded at run time, so no header or
 * library of cuBLAS is needed to build: a toolkit with nvcc alone compiles this file). The values
 * are cublas_api.h's, checked against it where it is installed. */
typedef int BlasStatus;
constexpr BlasStatus kBlasOk = 0;
constexpr int kBlasOpN = 0, kBlasOpT = 1, kBlasCompute32F = 68, kBlasGemmDefault = -1;
constexpr int kBlasDefaultMath = 0, kBlasNoReducedPrecisionReduction = 16;
constexpr int kBlasAtomicsNotAllowed = 0;
/* cuBLAS's major version follows the toolkit's (11, 12, 13): the library to load */
constexpr int kBlasMajor = CUDART_VERSION / 1000;
#if __has_include(<cublas_api.h>)
} // namespace
#include <cublas_api.h>
namespace {
static_assert(CUBLAS_STATUS_SUCCESS == kBlasOk && CUBLAS_OP_N == kBlasOpN &&
                  CUBLAS_OP_T == kBlasOpT && CUBLAS_COMPUTE_32F == kBlasCompute32F &&
                  CUBLAS_GEMM_DEFAULT == kBlasGemmDefault &&
                  CUBLAS_DEFAULT_MATH == kBlasDefaultMath &&
                  CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION ==
                      kBlasNoReducedPrecisionReduction &&
                  CUBLAS_ATOMICS_NOT_ALLOWED == kBlasAtomicsNotAllowed &&
                  CUBLAS_VER_MAJOR == kBlasMajor,
              "cuBLAS's interface is not the one this file declares");
#endif

using namespace pgcuda;

constexpr int kTile = 16;

/* ---- the fast bf16 mode (spec/engine.md §8.7) ------------------------------------------------ */

/* The bits of bf16_round(v), the upper half of the fp32 word. */
__device__ __forceinline__ uint16_t bf16_bits(float v) {
  return (uint16_t)(__float_as_uint(bf16_round(v)) >> 16);
}

/* Two values as the bf16 pair of an mma operand register: lo (the smaller index) in bits 0–15. */
__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
  return (uint32_t)bf16_bits(lo) | ((uint32_t)bf16_bits(hi) << 16);
}

/* D = A·B + D on the tensor cores: A 16×16 (row), B 16×8 (col), bf16 operands, fp32 sums. The
 * fragments (PTX ISA, "mma.m16n8k16", floating point): with gr = lane/4 and tq = lane%4, A's
 * registers hold rows (gr, gr+8, gr, gr+8) and columns (2tq, 2tq, 2tq+8, 2tq+8) (+0, +1 in the
 * two halves); B's hold rows 2tq and 2tq+8 (+0, +1) of column gr; D's c0..c3 are
 * (gr, 2tq), (gr, 2tq+1), (gr+8, 2tq), (gr+8, 2tq+1). */
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  (void)c, (void)a, (void)b0, (void)b1;
  __trap(); /* the host enables the fast mode on compute capability 8.0 and later only */
#endif
}

/* Flash attention forward on bf16 q, k, v (attention_bf16_fwd's contract: the model's q, k, v
 * are bf16 values, so the conversion below is exact). A block of 8 warps takes 128 positions of
 * one head of one sequence (warp w rows 16w … 16w+15) and walks the keys 0 … its last position
 * in tiles of 64: S = Q·Kᵀ on the tensor cores (fp32 sums), the mask (causal, segment), an
 * online softmax with fp32 running maxima and sums (rescaling when a maximum grows), the
 * probabilities rounded to bf16 for P·V (the row sums take them unrounded), and at the end
 * out = bf16(O / Z). DP is the head dim rounded up to 16, 32, 64 or 128 (the padding dims are
 * zeros: they add nothing to q·k, and their outputs are not stored). Each thread owns two rows
 * (gr and gr+8 of its warp's 16); a row's statistics are combined over its 4 threads by
 * shuffles in a fixed order, so the result does not depend on timing: no atomics, and a
 * sequence's result does not depend on the others of the batch. */
constexpr int kFaM = 128, kFaN = 64, kFaThreads = 256;
static_assert(kFaThreads == 32 * (kFaM / 16) && kFaThreads >= kFaN, "a warp per 16 positions");

template <int DP, bool STATS>
__global__ void __launch_bounds__(kFaThreads)
    k_flash_bf16(float *out, const float *dout, const float *q, const float *k, const float *v,
                 const int32_t *seg, int T, int H, int Hkv, int d, float scale_log2) {
  constexpr int KS = DP + 8;  /* Ks row stride (bf16): DP/2 + 4 words, conflict-free reads */
  constexpr int VS = kFaN + 8; /* Vt row stride: 36 words */
  __shared__ __align__(16) uint16_t Ks[kFaN * KS]; /* K tile, [key][dim] */
  __shared__ __align__(16) uint16_t Vt[DP * VS];   /* V tile transposed, [dim][key] */
  __shared__ int32_t segk[kFaN];
  const int b = blockIdx.z, h = blockIdx.y, g = h / (H / Hkv);
  const int q0 = blockIdx.x * kFaM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
  const size_t bT = (size_t)b * (size_t)T;
  const int t0 = q0 + warp * 16 + gr, t1 = t0 + 8; /* this thread's two rows */
  const float *qr0 = q + ((bT + (size_t)t0) * (size_t)H + (size_t)h) * (size_t)d;
  const float *qr1 = q + ((bT + (size_t)t1) * (size_t)H + (size_t)h) * (size_t)d;
  auto qv = [&](int t, const float *qr, int i) { return t < T && i < d ? qr[i] : 0.0f; };
  uint32_t qa[DP / 16][4]; /* the rows' Q as A fragments, one per 16 dims */
#pragma unroll
  for (int ks = 0; ks < DP / 16; ks++) {
    const int c = ks * 16 + tq * 2;
    qa[ks][0] = bf16_pair(qv(t0, qr0, c), qv(t0, qr0, c + 1));
    qa[ks][1] = bf16_pair(qv(t1, qr1, c), qv(t1, qr1, c + 1));
    qa[ks][2] = bf16_pair(qv(t0, qr0, c + 8), qv(t0, qr0, c + 9));
    qa[ks][3] = bf16_pair(qv(t1, qr1, c + 8), qv(t1, qr1, c + 9));
  }
  const int32_t sq0 = seg && t0 < T ? seg[bT + (size_t)t0] : 0;
  const int32_t sq1 = seg && t1 < T ? seg[bT + (size_t)t1] : 0;
  float o[DP / 8][4];
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, z0 = 0.0f, z1 = 0.0f;
  const int kend = T < q0 + kFaM ? T : q0 + kFaM; /* no row of the block sees a later key */
  for (int kb = 0; kb < kend; kb += kFaN) {
    __syncthreads(); /* every warp is done with the previous tile */
    for (int idx = threadIdx.x; idx < kFaN * DP; idx += kFaThreads) {
      const int j = idx / DP, i = idx % DP, s = kb + j;
      float kx = 0.0f, vx = 0.0f;
      if (s < T && i < d) {
        const size_t off = ((bT + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d + (size_t)i;
        kx = k[off];
        vx = v[off];
      }
      Ks[j * KS + i] = bf16_bits(kx);
      Vt[i * VS + j] = bf16_bits(vx); /* zeros past T: a masked key's 0 weight meets a 0 */
    }
    if (threadIdx.x < kFaN) {
      const int s = kb + (int)threadIdx.x;
      segk[threadIdx.x] = seg && s < T ? seg[bT + (size_t)s] : 0;
    }
    __syncthreads();
    /* S = Q·Kᵀ for the warp's 16 rows and the tile's 64 keys (8 tiles of 8 keys) */
    float sc[kFaN / 8][4];
#pragma unroll
    for (int nt = 0; nt < kFaN / 8; nt++) {
      sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
      const uint16_t *kr = Ks + (nt * 8 + gr) * KS + tq * 2;
#pragma unroll
      for (int ks = 0; ks < DP / 16; ks++) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t *>(kr + ks * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t *>(kr + ks * 16 + 8);
        mma_bf16(sc[nt], qa[ks], b0, b1);
      }
    }
    /* the mask and the scale (log2 units: exp2 below), and the rows' maxima over the tile */
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kFaN / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int jj = nt * 8 + tq * 2 + (e & 1), s = kb + jj;
        const int t = e < 2 ? t0 : t1;
        const bool ok = s <= t && t < T && (!seg || segk[jj] == (e < 2 ? sq0 : sq1));
        const float x = ok ? sc[nt][e] * scale_log2 : -INFINITY;
        sc[nt][e] = x;
        if (e < 2) mx0 = fmaxf(mx0, x);
        else mx1 = fmaxf(mx1, x);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    /* a row with no allowed key yet keeps −∞: its weights are 0 and nothing is rescaled */
    const float base0 = mn0 == -INFINITY ? 0.0f : mn0, base1 = mn1 == -INFINITY ? 0.0f : mn1;
    const float c0 = exp2f(m0 - base0), c1 = exp2f(m1 - base1); /* 0 from −∞, 1 unchanged */
    float rs0 = 0.0f, rs1 = 0.0f;
    uint32_t pa[kFaN / 16][4]; /* P as A fragments, one per 16 keys */
#pragma unroll
    for (int nt = 0; nt < kFaN / 8; nt++) {
      const float p0 = exp2f(sc[nt][0] - base0), p1 = exp2f(sc[nt][1] - base0);
      const float p2 = exp2f(sc[nt][2] - base1), p3 = exp2f(sc[nt][3] - base1);
      rs0 = rs0 + p0;
      rs0 = rs0 + p1;
      rs1 = rs1 + p2;
      rs1 = rs1 + p3;
      /* tile nt holds keys 8nt … 8nt+7: columns 0–7 (nt even) or 8–15 (odd) of chunk nt/2 */
      pa[nt >> 1][(nt & 1) * 2 + 0] = bf16_pair(p0, p1); /* row gr: a0 or a2 */
      pa[nt >> 1][(nt & 1) * 2 + 1] = bf16_pair(p2, p3); /* row gr+8: a1 or a3 */
    }
    rs0 = rs0 + __shfl_xor_sync(0xffffffffu, rs0, 1);
    rs0 = rs0 + __shfl_xor_sync(0xffffffffu, rs0, 2);
    rs1 = rs1 + __shfl_xor_sync(0xffffffffu, rs1, 1);
    rs1 = rs1 + __shfl_xor_sync(0xffffffffu, rs1, 2);
    z0 = z0 * c0 + rs0;
    z1 = z1 * c1 + rs1;
    m0 = mn0;
    m1 = mn1;
    /* O = O·c + P·V: B fragments from the transposed tile, keys 2tq, 2tq+1 (+8) of dim gr */
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++) {
      o[nt][0] *= c0;
      o[nt][1] *= c0;
      o[nt][2] *= c1;
      o[nt][3] *= c1;
      const uint16_t *vr = Vt + (nt * 8 + gr) * VS + tq * 2;
#pragma unroll
      for (int kc = 0; kc < kFaN / 16; kc++) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t *>(vr + kc * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t *>(vr + kc * 16 + 8);
        mma_bf16(o[nt], pa[kc], b0, b1);
      }
    }
  }
  if constexpr (STATS) {
    /* the backward's row statistics (k_flash_bwd_*): the final maximum (log2 units), Z, and
     * D = bf(dout)·(O/Z) (dout rounded as the backward's dP takes it), each row's dot product
     * summed over its 4 threads by shuffles */
    const size_t r0 = (bT + (size_t)t0) * (size_t)H + (size_t)h;
    const size_t r1 = (bT + (size_t)t1) * (size_t)H + (size_t)h;
    float dd0 = 0.0f, dd1 = 0.0f;
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = nt * 8 + tq * 2 + (e & 1);
        if (i >= d) continue;
        if (e < 2 && t0 < T) dd0 = dd0 + bf16_round(dout[r0 * (size_t)d + (size_t)i]) * o[nt][e];
        if (e >= 2 && t1 < T) dd1 = dd1 + bf16_round(dout[r1 * (size_t)d + (size_t)i]) * o[nt][e];
      }
    dd0 = dd0 + __shfl_xor_sync(0xffffffffu, dd0, 1);
    dd0 = dd0 + __shfl_xor_sync(0xffffffffu, dd0, 2);
    dd1 = dd1 + __shfl_xor_sync(0xffffffffu, dd1, 1);
    dd1 = dd1 + __shfl_xor_sync(0xffffffffu, dd1, 2);
    if (tq == 0 && t0 < T) out[r0 * 3] = m0, out[r0 * 3 + 1] = z0, out[r0 * 3 + 2] = dd0 / z0;
    if (tq == 0 && t1 < T) out[r1 * 3] = m1, out[r1 * 3 + 1] = z1, out[r1 * 3 + 2] = dd1 / z1;
    return;
  }
  /* out = bf16(O / Z); Z ≥ 1 on every stored row (its own key has weight exp2(0)) */
  float *or0 = out + ((bT + (size_t)t0) * (size_t)H + (size_t)h) * (size_t)d;
  float *or1 = out + ((bT + (size_t)t1) * (size_t)H + (size_t)h) * (size_t)d;
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = nt * 8 + tq * 2 + (e & 1);
      if (i >= d) continue;
      if (e < 2 && t0 < T) or0[i] = bf16_round(o[nt][e] / z0);
      if (e >= 2 && t1 < T) or1[i] = bf16_round(o[nt][e] / z1);
    }
}

/* The largest head the flash kernel takes; a wider one (the arch allows 256) runs exactly. */
constexpr int kFaMaxD = 128;

/* scale·log2(e): the logits in log2 units, for exp2 */
float scale_log2_of(float scale) { return (float)((double)scale * 1.4426950408889634); }

/* The forward (out), or with dout the backward's row statistics into out (3 per row). */
template <bool STATS>
void launch_flash_t(const pg_ops *o, float *out, const float *dout, const float *q,
                    const float *k, const float *v, const int32_t *seg, int B, int T, int H,
                    int Hkv, int d, float scale) {
  dim3 grid((unsigned)((T + kFaM - 1) / kFaM), (unsigned)H, (unsigned)B);
  const float sl = scale_log2_of(scale);
  cudaStream_t st = dev_of(o)->stream;
  if (d <= 16)
    k_flash_bf16<16, STATS><<<grid, kFaThreads, 0, st>>>(out, dout, q, k, v, seg, T, H, Hkv, d,
                                                         sl);
  else if (d <= 32)
    k_flash_bf16<32, STATS><<<grid, kFaThreads, 0, st>>>(out, dout, q, k, v, seg, T, H, Hkv, d,
                                                         sl);
  else if (d <= 64)
    k_flash_bf16<64, STATS><<<grid, kFaThreads, 0, st>>>(out, dout, q, k, v, seg, T, H, Hkv, d,
                                                         sl);
  else
    k_flash_bf16<128, STATS><<<grid, kFaThreads, 0, st>>>(out, dout, q, k, v, seg, T, H, Hkv, d,
                                                          sl);
  launched(o, STATS ? "attention backward (flash statistics)" : "attention (flash, bf16)");
}

void launch_flash(const pg_ops *o, float *out, const float *q, const float *k, const float *v,
                  const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale) {
  launch_flash_t<false>(o, out, nullptr, q, k, v, seg, B, T, H, Hkv, d, scale);
}

/* 1 when attention_bf16_fwd of this shape runs the flash kernel, else the exact one. */
bool flash_takes(const pg_ops *o, int B, int T, int H, int d) {
  return dev_of(o)->fast && d >= 1 && d <= kFaMaxD && B >= 1 && B <= 65535 && H >= 1 &&
         H <= 65535 && T >= 1;
}

/* ---- the flash attention backward (the trainer's bf16 steps: spec/engine.md §8.7) -------------
 * After the statistics pass (k_flash_bf16<DP, true>: per row the final maximum m in log2 units,
 * Z, and D = dout·O/Z), two kernels recompute P = exp2(x − m)/Z from the logits (x = q·k·scale·
 * log2 e, bf16 operands, fp32 sums on the tensor cores), dP = dout·vᵀ (dout rounded to bf16) and
 * dS = P∘(dP − D) in fp32, and multiply with P and dS rounded to bf16 (fp32 sums):
 * k_flash_bwd_dq, a block per 128 queries of one head walking the key tiles of 32, dq += scale·
 * dS·K; k_flash_bwd_dkv, a block per 128 keys of one kv head walking the group's heads in order
 * and the query tiles of 32 from its first key on, dk += scale·dSᵀ·Q and dv += Pᵀ·dout. Each
 * output is summed by one thread in a fixed order: no atomics, and the same bits on a rerun. The
 * fragments are those of mma_bf16; a B operand over keys (or queries) is read from a tile stored
 * transposed ([dim][key]), as the forward reads V. */
constexpr int kFbN = 32; /* keys (dq) or queries (dk, dv) per tile */

/* A rows' pair of bf16 A fragments for 16 dims from fp32 rows r0 (row gr) and r1 (row gr+8). */
template <int DP>
__device__ __forceinline__ void load_a(uint32_t a[DP / 16][4], const float *r0, const float *r1,
                                       bool ok0, bool ok1, int d, int tq) {
  auto val = [&](const float *r, bool ok, int i) { return ok && i < d ? r[i] : 0.0f; };
#pragma unroll
  for (int ks = 0; ks < DP / 16; ks++) {
    const int c = ks * 16 + tq * 2;
    a[ks][0] = bf16_pair(val(r0, ok0, c), val(r0, ok0, c + 1));
    a[ks][1] = bf16_pair(val(r1, ok1, c), val(r1, ok1, c + 1));
    a[ks][2] = bf16_pair(val(r0, ok0, c + 8), val(r0, ok0, c + 9));
    a[ks][3] = bf16_pair(val(r1, ok1, c + 8), val(r1, ok1, c + 9));
  }
}

/* acc[nt] (8 columns each) += A·B with B's rows (k) from a [n][k] tile of stride ST: the pattern
 * of the forward's P·V. */
template <int DP, int ST>
__device__ __forceinline__ void mma_t(float acc[DP / 8][4], const uint32_t a[kFbN / 16][4],
                                      const uint16_t *tile, int gr, int tq) {
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++) {
    const uint16_t *r = tile + (nt * 8 + gr) * ST + tq * 2;
#pragma unroll
    for (int kc = 0; kc < kFbN / 16; kc++) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t *>(r + kc * 16);
      const uint32_t b1 = *reinterpret_cast<const uint32_t *>(r + kc * 16 + 8);
      mma_bf16(acc[nt], a[kc], b0, b1);
    }
  }
}

/* sc[nt] = A·Bᵀ over DP dims for kFbN columns whose rows are stored [col][dim] with stride KS:
 * the pattern of the forward's Q·Kᵀ. */
template <int DP, int KS>
__device__ __forceinline__ void mma_rows(float sc[kFbN / 8][4], const uint32_t a[DP / 16][4],
                                         const uint16_t *tile, int gr, int tq) {
#pragma unroll
  for (int nt = 0; nt < kFbN / 8; nt++) {
    sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
    const uint16_t *r = tile + (nt * 8 + gr) * KS + tq * 2;
#pragma unroll
    for (int ks = 0; ks < DP / 16; ks++) {
      const uint32_t b0 = *reinterpret_cast<const uint32_t *>(r + ks * 16);
      const uint32_t b1 = *reinterpret_cast<const uint32_t *>(r + ks * 16 + 8);
      mma_bf16(sc[nt], a[ks], b0, b1);
    }
  }
}

/* Stages rows r0 .. r0 + kFbN - 1 (of head hh of nh) of x and y in shared memory as bf16 tiles:
 * [row][dim] in xs and ys (stride DP + 8), [dim][row] in xt and, with YT, yt (stride kFbN + 8);
 * rows from T on and dims from d on are zeros. Both backward kernels stage their tiles so. */
template <int DP, bool YT>
__device__ __forceinline__ void stage_tiles(uint16_t *xs, uint16_t *ys, uint16_t *xt,
                                            uint16_t *yt, const float *x, const float *y,
                                            size_t bT, int r0, int T, int nh, int hh, int d) {
  constexpr int KS = DP + 8, TS = kFbN + 8;
  for (int idx = threadIdx.x; idx < kFbN * DP; idx += kFaThreads) {
    const int j = idx / DP, i = idx % DP, s = r0 + j;
    float xv = 0.0f, yv = 0.0f;
    if (s < T && i < d) {
      const size_t off = ((bT + (size_t)s) * (size_t)nh + (size_t)hh) * (size_t)d + (size_t)i;
      xv = x[off];
      yv = y[off];
    }
    xs[j * KS + i] = bf16_bits(xv);
    ys[j * KS + i] = bf16_bits(yv);
    xt[i * TS + j] = bf16_bits(xv);
    if constexpr (YT) yt[i * TS + j] = bf16_bits(yv);
  }
}

template <int DP>
__global__ void __launch_bounds__(kFaThreads)
    k_flash_bwd_dq(float *dq, const float *stats, const float *dout, const float *q,
                   const float *k, const float *v, const int32_t *seg, int T, int H, int Hkv,
                   int d, float scale_log2, float scale) {
  constexpr int KS = DP + 8, TS = kFbN + 8;
  __shared__ __align__(16) uint16_t Ks[kFbN * KS]; /* K tile, [key][dim] */
  __shared__ __align__(16) uint16_t Vs[kFbN * KS]; /* V tile, [key][dim] */
  __shared__ __align__(16) uint16_t Kt[DP * TS];   /* K tile transposed, [dim][key] */
  __shared__ int32_t segk[kFbN];
  const int b = blockIdx.z, h = blockIdx.y, g = h / (H / Hkv);
  const int q0 = blockIdx.x * kFaM;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
  const size_t bT = (size_t)b * (size_t)T;
  const int t0 = q0 + warp * 16 + gr, t1 = t0 + 8;
  const size_t r0 = (bT + (size_t)t0) * (size_t)H + (size_t)h;
  const size_t r1 = (bT + (size_t)t1) * (size_t)H + (size_t)h;
  uint32_t qa[DP / 16][4], oa[DP / 16][4]; /* Q and dout rows as A fragments */
  load_a<DP>(qa, q + r0 * (size_t)d, q + r1 * (size_t)d, t0 < T, t1 < T, d, tq);
  load_a<DP>(oa, dout + r0 * (size_t)d, dout + r1 * (size_t)d, t0 < T, t1 < T, d, tq);
  const float m0 = t0 < T ? stats[r0 * 3] : 0.0f, z0 = t0 < T ? stats[r0 * 3 + 1] : 1.0f;
  const float D0 = t0 < T ? stats[r0 * 3 + 2] : 0.0f;
  const float m1 = t1 < T ? stats[r1 * 3] : 0.0f, z1 = t1 < T ? stats[r1 * 3 + 1] : 1.0f;
  const float D1 = t1 < T ? stats[r1 * 3 + 2] : 0.0f;
  const int32_t sq0 = seg && t0 < T ? seg[bT + (size_t)t0] : 0;
  const int32_t sq1 = seg && t1 < T ? seg[bT + (size_t)t1] : 0;
  float acc[DP / 8][4];
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
  const int kend = T < q0 + kFaM ? T : q0 + kFaM;
  for (int kb = 0; kb < kend; kb += kFbN) {
    __syncthreads();
    stage_tiles<DP, false>(Ks, Vs, Kt, nullptr, k, v, bT, kb, T, Hkv, g, d);
    if (threadIdx.x < kFbN) {
      const int s = kb + (int)threadIdx.x;
      segk[threadIdx.x] = seg && s < T ? seg[bT + (size_t)s] : 0;
    }
    __syncthreads();
    float sc[kFbN / 8][4], dp[kFbN / 8][4];
    mma_rows<DP, KS>(sc, qa, Ks, gr, tq);
    mma_rows<DP, KS>(dp, oa, Vs, gr, tq);
    uint32_t dsa[kFbN / 16][4]; /* dS as A fragments, one per 16 keys */
#pragma unroll
    for (int nt = 0; nt < kFbN / 8; nt++) {
      float ds[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int jj = nt * 8 + tq * 2 + (e & 1), s = kb + jj;
        const int t = e < 2 ? t0 : t1;
        const bool ok = s <= t && t < T && (!seg || segk[jj] == (e < 2 ? sq0 : sq1));
        const float p = ok ? exp2f(sc[nt][e] * scale_log2 - (e < 2 ? m0 : m1)) /
                                 (e < 2 ? z0 : z1)
                           : 0.0f;
        ds[e] = p * (dp[nt][e] - (e < 2 ? D0 : D1));
      }
      dsa[nt >> 1][(nt & 1) * 2 + 0] = bf16_pair(ds[0], ds[1]);
      dsa[nt >> 1][(nt & 1) * 2 + 1] = bf16_pair(ds[2], ds[3]);
    }
    mma_t<DP, TS>(acc, dsa, Kt, gr, tq);
  }
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = nt * 8 + tq * 2 + (e & 1);
      const int t = e < 2 ? t0 : t1;
      if (i >= d || t >= T) continue;
      float *o = dq + (e < 2 ? r0 : r1) * (size_t)d + (size_t)i;
      *o = *o + scale * acc[nt][e];
    }
}

template <int DP>
__global__ void __launch_bounds__(kFaThreads)
    k_flash_bwd_dkv(float *dk, float *dv, const float *stats, const float *dout, const float *q,
                    const float *k, const float *v, const int32_t *seg, int T, int H, int Hkv,
                    int d, float scale_log2, float scale) {
  constexpr int KS = DP + 8, TS = kFbN + 8;
  __shared__ __align__(16) uint16_t Qs[kFbN * KS]; /* Q tile, [query][dim] */
  __shared__ __align__(16) uint16_t Os[kFbN * KS]; /* dout tile, [query][dim] */
  __shared__ __align__(16) uint16_t Qt[DP * TS];   /* Q tile transposed, [dim][query] */
  __shared__ __align__(16) uint16_t Ot[DP * TS];   /* dout tile transposed, [dim][query] */
  __shared__ float stm[kFbN], stz[kFbN], std_[kFbN];
  __shared__ int32_t segq[kFbN];
  const int b = blockIdx.z, g = blockIdx.y, rep = H / Hkv;
  const int s0 = blockIdx.x * kFaM; /* a multiple of kFbN: the query tiles start there */
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, tq = lane & 3;
  const size_t bT = (size_t)b * (size_t)T;
  const int k0 = s0 + warp * 16 + gr, k1 = k0 + 8; /* this thread's two keys */
  const size_t w0 = (bT + (size_t)k0) * (size_t)Hkv + (size_t)g;
  const size_t w1 = (bT + (size_t)k1) * (size_t)Hkv + (size_t)g;
  uint32_t ka[DP / 16][4], va[DP / 16][4]; /* the keys' K and V rows as A fragments */
  load_a<DP>(ka, k + w0 * (size_t)d, k + w1 * (size_t)d, k0 < T, k1 < T, d, tq);
  load_a<DP>(va, v + w0 * (size_t)d, v + w1 * (size_t)d, k0 < T, k1 < T, d, tq);
  const int32_t sk0 = seg && k0 < T ? seg[bT + (size_t)k0] : 0;
  const int32_t sk1 = seg && k1 < T ? seg[bT + (size_t)k1] : 0;
  float adk[DP / 8][4], adv[DP / 8][4];
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) adk[nt][e] = adv[nt][e] = 0.0f;
  for (int h = g * rep; h < (g + 1) * rep; h++)
    for (int qb = s0; qb < T; qb += kFbN) {
      __syncthreads();
      stage_tiles<DP, true>(Qs, Os, Qt, Ot, q, dout, bT, qb, T, H, h, d);
      if (threadIdx.x < kFbN) {
        const int j = (int)threadIdx.x, t = qb + j;
        const size_t r = (bT + (size_t)t) * (size_t)H + (size_t)h;
        stm[j] = t < T ? stats[r * 3] : 0.0f;
        stz[j] = t < T ? stats[r * 3 + 1] : 1.0f;
        std_[j] = t < T ? stats[r * 3 + 2] : 0.0f;
        segq[j] = seg && t < T ? seg[bT + (size_t)t] : 0;
      }
      __syncthreads();
      /* Sᵀ = K·Qᵀ and dPᵀ = V·doutᵀ: rows the keys, columns the tile's queries */
      float sc[kFbN / 8][4], dp[kFbN / 8][4];
      mma_rows<DP, KS>(sc, ka, Qs, gr, tq);
      mma_rows<DP, KS>(dp, va, Os, gr, tq);
      uint32_t pa[kFbN / 16][4], dsa[kFbN / 16][4]; /* Pᵀ, dSᵀ as A fragments (k: queries) */
#pragma unroll
      for (int nt = 0; nt < kFbN / 8; nt++) {
        float p[4], ds[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int jj = nt * 8 + tq * 2 + (e & 1), t = qb + jj;
          const int s = e < 2 ? k0 : k1;
          const bool ok = t >= s && t < T && s < T && (!seg || segq[jj] == (e < 2 ? sk0 : sk1));
          p[e] = ok ? exp2f(sc[nt][e] * scale_log2 - stm[jj]) / stz[jj] : 0.0f;
          ds[e] = p[e] * (dp[nt][e] - std_[jj]);
        }
        pa[nt >> 1][(nt & 1) * 2 + 0] = bf16_pair(p[0], p[1]);
        pa[nt >> 1][(nt & 1) * 2 + 1] = bf16_pair(p[2], p[3]);
        dsa[nt >> 1][(nt & 1) * 2 + 0] = bf16_pair(ds[0], ds[1]);
        dsa[nt >> 1][(nt & 1) * 2 + 1] = bf16_pair(ds[2], ds[3]);
      }
      mma_t<DP, TS>(adv, pa, Ot, gr, tq);
      mma_t<DP, TS>(adk, dsa, Qt, gr, tq);
    }
#pragma unroll
  for (int nt = 0; nt < DP / 8; nt++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = nt * 8 + tq * 2 + (e & 1);
      const int s = e < 2 ? k0 : k1;
      if (i >= d || s >= T) continue;
      const size_t off = (e < 2 ? w0 : w1) * (size_t)d + (size_t)i;
      if (dk) dk[off] = dk[off] + scale * adk[nt][e];
      if (dv) dv[off] = dv[off] + adv[nt][e];
    }
}

template <int DP>
void launch_flash_bwd(const pg_ops *o, float *dq, float *dk, float *dv, const float *stats,
                      const float *dout, const float *q, const float *k, const float *v,
                      const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale) {
  cudaStream_t st = dev_of(o)->stream;
  const float sl = scale_log2_of(scale);
  if (dq) {
    dim3 grid((unsigned)((T + kFaM - 1) / kFaM), (unsigned)H, (unsigned)B);
    k_flash_bwd_dq<DP><<<grid, kFaThreads, 0, st>>>(dq, stats, dout, q, k, v, seg, T, H, Hkv, d,
                                                    sl, scale);
    launched(o, "attention backward (flash, dq)");
  }
  if (dk || dv) {
    dim3 grid((unsigned)((T + kFaM - 1) / kFaM), (unsigned)Hkv, (unsigned)B);
    k_flash_bwd_dkv<DP><<<grid, kFaThreads, 0, st>>>(dk, dv, stats, dout, q, k, v, seg, T, H,
                                                     Hkv, d, sl, scale);
    launched(o, "attention backward (flash, dk and dv)");
  }
}

/* attention_bwd of the trainer's bf16 backward (bf16_pass and bf16_grad set) on the tensor
 * cores, where the flash forward runs: false (nothing queued) when the exact kernels are to run
 * (another pass, another shape, no scratch for the statistics). */
bool fast_attention_bwd_impl(const pg_ops *o, float *dq, float *dk, float *dv,
                             const float *dout, const float *q, const float *k, const float *v,
                             const int32_t *seg, int B, int T, int H, int Hkv, int d,
                             float scale) {
  pg_engine *e = pg_engine_of(o);
  if (!e->bf16_pass || !e->bf16_grad || !flash_takes(o, B, T, H, d) || Hkv < 1 ||
      Hkv > 65535 || (!dq && !dk && !dv))
    return false;
  const size_t rows = (size_t)B * (size_t)T * (size_t)H;
  float *stats = static_cast<float *>(pg_engine_scratch_try(e, 0, rows * 3 * sizeof(float)));
  if (!stats) return false;
  launch_flash_t<true>(o, stats, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
  if (d <= 16)
    launch_flash_bwd<16>(o, dq, dk, dv, stats, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
  else if (d <= 32)
    launch_flash_bwd<32>(o, dq, dk, dv, stats, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
  else if (d <= 64)
    launch_flash_bwd<64>(o, dq, dk, dv, stats, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
  else
    launch_flash_bwd<128>(o, dq, dk, dv, stats, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
  return true;
}

/* cuBLAS, loaded at run time: the library of the toolkit the engine was built with (its major
 * version), from the loader's path, the toolkit's directory at build time, or the usual place. */
#ifndef PG_CUDA_LIBDIR
#define PG_CUDA_LIBDIR "/usr/local/cuda/lib64"
#endif

struct BlasLib {
  bool ok;
  char so[32];
  char why[200];
  BlasStatus (*create)(BlasHandle *);
  BlasStatus (*destroy)(BlasHandle);
  BlasStatus (*set_stream)(BlasHandle, cudaStream_t);
  BlasStatus (*set_workspace)(BlasHandle, void *, size_t);
  BlasStatus (*set_math)(BlasHandle, int);
  BlasStatus (*set_atomics)(BlasHandle, int);
  BlasStatus (*version)(BlasHandle, int *);
  const char *(*status_string)(BlasStatus);
  BlasStatus (*gemm)(BlasHandle, int, int, int, int, int, const void *, const void *,
                         cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                         cudaDataType, int, int, int);
  BlasStatus (*gemm_strided)(BlasHandle, int, int, int, int, int, const void *,
                                 const void *, cudaDataType, int, long long, const void *,
                                 cudaDataType, int, long long, const void *, void *, cudaDataType,
                                 int, long long, int, int, int);
};

template <typename F> bool sym(void *lib, const char *name, F *f, BlasLib *L) {
  void *p = dlsym(lib, name);
  if (!p) snprintf(L->why, sizeof L->why, "%s lacks %s", L->so, name);
  *f = reinterpret_cast<F>(p);
  return p != nullptr;
}

BlasLib load_blas() {
  BlasLib L;
  memset(&L, 0, sizeof L);
  snprintf(L.so, sizeof L.so, "libcublas.so.%d", kBlasMajor);
  const char *dirs[] = {"", PG_CUDA_LIBDIR "/", "/usr/local/cuda/lib64/"};
  void *lib = nullptr;
  for (const char *dir : dirs) {
    char path[512];
    snprintf(path, sizeof path, "%s%s", dir, L.so);
    if ((lib = dlopen(path, RTLD_NOW | RTLD_LOCAL))) break;
  }
  if (!lib) {
    const char *why = dlerror();
    snprintf(L.why, sizeof L.why, "cannot load %s: %s", L.so, why ? why : "not found");
    return L;
  }
  L.ok = sym(lib, "cublasCreate_v2", &L.create, &L) &&
         sym(lib, "cublasDestroy_v2", &L.destroy, &L) &&
         sym(lib, "cublasSetStream_v2", &L.set_stream, &L) &&
         sym(lib, "cublasSetWorkspace_v2", &L.set_workspace, &L) &&
         sym(lib, "cublasSetMathMode", &L.set_math, &L) &&
         sym(lib, "cublasSetAtomicsMode", &L.set_atomics, &L) &&
         sym(lib, "cublasGetVersion_v2", &L.version, &L) &&
         sym(lib, "cublasGetStatusString", &L.status_string, &L) &&
         sym(lib, "cublasGemmEx", &L.gemm, &L) &&
         sym(lib, "cublasGemmStridedBatchedEx", &L.gemm_strided, &L);
  return L; /* the library stays loaded for the process */
}

const BlasLib &blas_lib() {
  static const BlasLib L = load_blas(); /* once per process (thread-safe initialization) */
  return L;
}

/* The fixed workspace of every product: one size, so the library's choices do not vary with
 * what memory happens to be free. */
constexpr size_t kBlasWorkspace = (size_t)32 << 20;

/* An engine's cuBLAS handle on its stream: deterministic settings (no atomics, no reduced-
 * precision split-K reductions, a fixed workspace). Returns "" or why the products stay exact;
 * a driver fault is recorded in the engine. */
const char *blas_open(pg_engine *e, Dev *d, char *why, size_t n) {
  const BlasLib &L = blas_lib();
  why[0] = 0;
  if (!L.ok) {
    snprintf(why, n, "%s", L.why);
    return why;
  }
  if (cudaMalloc(&d->blas_ws, kBlasWorkspace) != cudaSuccess) {
    (void)cudaGetLastError();
    d->blas_ws = nullptr;
    snprintf(why, n, "no memory for the cuBLAS workspace");
    return why;
  }
  BlasStatus st = L.create(&d->blas);
  if (st == kBlasOk) st = L.set_stream(d->blas, d->stream);
  if (st == kBlasOk) st = L.set_workspace(d->blas, d->blas_ws, kBlasWorkspace);
  if (st == kBlasOk) st = L.set_math(d->blas, kBlasDefaultMath | kBlasNoReducedPrecisionReduction);
  if (st == kBlasOk) st = L.set_atomics(d->blas, kBlasAtomicsNotAllowed);
  if (st != kBlasOk) {
    snprintf(why, n, "cuBLAS: %s", L.status_string(st));
    if (d->blas) L.destroy(d->blas);
    d->blas = nullptr;
    cudaFree(d->blas_ws);
    d->blas_ws = nullptr;
  }
  (void)e;
  return why;
}

void blas_close(Dev *d) {
  if (d->blas) blas_lib().destroy(d->blas);
  if (d->blas_ws) cudaFree(d->blas_ws);
  d->blas = nullptr;
  d->blas_ws = nullptr;
}

__global__ void k_to_bf16(uint16_t *dst, const float *src, size_t n) {
  GRID_LOOP(i, n) dst[i] = bf16_bits(src[i]);
}

/* The G matrices W_g = w + widx[g]·wstride ([N, K] each, `per` values) gathered into [G, N, K]. */
__global__ void k_gather_bf16(uint16_t *dst, const float *w, const int32_t *widx, size_t wstride,
                              size_t per, int G) {
  GRID_LOOP(i, per * (size_t)G) {
    const size_t g = i / per;
    dst[i] = bf16_bits(w[(size_t)widx[g] * wstride + i % per]);
  }
}

/* y[g] = x[g]·W_gᵀ with bf16 operands and fp32 sums (cublasGemmEx, CUBLAS_COMPUTE_32F): row-major
 * Y [M, N] is column-major Yᵀ [N, M] = W·xᵀ, W [N, K] row-major being column-major Wᵀ (hence
 * OP_T, lda K) and x [M, K] row-major being column-major xᵀ (OP_N, ldb K). Returns false (and
 * nothing queued) when the exact kernel is to run: not a bf16 pass, no cuBLAS, K = 0, or no
 * scratch for the bf16 copies. */
bool fast_matmul(const pg_ops *o, float *y, const float *x, const float *w, int G, int M, int N,
                 int K, const int32_t *widx, size_t wstride) {
  pg_engine *e = pg_engine_of(o);
  Dev *d = dev_of(e);
  if (!d->blas || !e->bf16_pass || K <= 0) return false;
  const size_t nx = (size_t)G * (size_t)M * (size_t)K;
  const size_t per = (size_t)N * (size_t)K, nw = widx ? per * (size_t)G : per;
  uint16_t *xb = static_cast<uint16_t *>(pg_engine_scratch_try(e, 0, nx * sizeof(uint16_t)));
  uint16_t *wb = static_cast<uint16_t *>(pg_engine_scratch_try(e, 1, nw * sizeof(uint16_t)));
  if (!xb || !wb) return false;
  k_to_bf16<<<blocks_for(nx), kThreads, 0, d->stream>>>(xb, x, nx);
  if (widx)
    k_gather_bf16<<<blocks_for(nw), kThreads, 0, d->stream>>>(wb, w, widx, wstride, per, G);
  else
    k_to_bf16<<<blocks_for(nw), kThreads, 0, d->stream>>>(wb, w, nw);
  launched(o, "matmul (bf16 operands)");
  const BlasLib &L = blas_lib();
  const float one = 1.0f, zero = 0.0f;
  BlasStatus st;
  if (G == 1)
    st = L.gemm(d->blas, kBlasOpT, kBlasOpN, N, M, K, &one, wb, CUDA_R_16BF, K, xb, CUDA_R_16BF,
                K, &zero, y, CUDA_R_32F, N, kBlasCompute32F, kBlasGemmDefault);
  else
    st = L.gemm_strided(d->blas, kBlasOpT, kBlasOpN, N, M, K, &one, wb, CUDA_R_16BF, K,
                        widx ? (long long)per : 0LL, xb, CUDA_R_16BF, K,
                        (long long)M * (long long)K, &zero, y, CUDA_R_32F, N,
                        (long long)M * (long long)N, G, kBlasCompute32F, kBlasGemmDefault);
  if (st != kBlasOk)
    pg_engine_fail(e, PG_E_CUDA, "cuda engine: matmul (cuBLAS, %d x %d x %d): %s", M, N, K,
                   L.status_string(st));
  return true;
}

/* The backward of a product of a bf16 pass on the tensor cores, when the trainer asks for it
 * (pg_engine.bf16_grad, spec/engine.md §8.7): dx [M, K] += dy·W and dW [N, K] += dyᵀ·x with bf16
 * operands (x and W are bf16 values in such a pass, so only dy is rounded) and fp32 sums; cuBLAS
 * adds each sum into the fp32 gradient (beta = 1: fp32(g + S), one rounding of each). Row-major
 * dxᵀ [K, M] = Wᵀ·dyᵀ is column-major (W as [K, N] with lda K, dy as [N, M] with ldb N, both
 * OP_N); dWᵀ [K, N] = xᵀ·dy is column-major x [K, M] (lda K, OP_N) times dy (ldb N, OP_T).
 * Returns false (and nothing queued) when the exact kernels are to run. */
bool fast_matmul_bwd_impl(const pg_ops *o, float *dx, float *dw, const float *dy,
                          const float *x, const float *w, int M, int N, int K) {
  pg_engine *e = pg_engine_of(o);
  Dev *d = dev_of(e);
  if (!d->blas || !e->bf16_pass || !e->bf16_grad || M <= 0 || N <= 0 || K <= 0) return false;
  const size_t ny = (size_t)M * (size_t)N, nw = dx ? (size_t)N * (size_t)K : 0,
               nx = dw ? (size_t)M * (size_t)K : 0;
  const size_t nw_al = (nw + 31) / 32 * 32; /* x's copy starts 64-byte aligned */
  uint16_t *yb = static_cast<uint16_t *>(pg_engine_scratch_try(e, 0, ny * sizeof(uint16_t)));
  uint16_t *wb = static_cast<uint16_t *>(
      pg_engine_scratch_try(e, 1, (nw_al + nx) * sizeof(uint16_t)));
  if (!yb || !wb) return false;
  uint16_t *xb = wb + nw_al;
  k_to_bf16<<<blocks_for(ny), kThreads, 0, d->stream>>>(yb, dy, ny);
  if (dx) k_to_bf16<<<blocks_for(nw), kThreads, 0, d->stream>>>(wb, w, nw);
  if (dw) k_to_bf16<<<blocks_for(nx), kThreads, 0, d->stream>>>(xb, x, nx);
  launched(o, "matmul backward (bf16 operands)");
  const BlasLib &L = blas_lib();
  const float one = 1.0f;
  if (dx) {
    BlasStatus st = L.gemm(d->blas, kBlasOpN, kBlasOpN, K, M, N, &one, wb, CUDA_R_16BF, K, yb,
                           CUDA_R_16BF, N, &one, dx, CUDA_R_32F, K, kBlasCompute32F,
                           kBlasGemmDefault);
    if (st != kBlasOk)
      pg_engine_fail(e, PG_E_CUDA, "cuda engine: matmul backward dx (cuBLAS, %d x %d x %d): %s",
                     M, N, K, L.status_string(st));
  }
  if (dw) {
    BlasStatus st = L.gemm(d->blas, kBlasOpN, kBlasOpT, K, N, M, &one, xb, CUDA_R_16BF, K, yb,
                           CUDA_R_16BF, N, &one, dw, CUDA_R_32F, K, kBlasCompute32F,
                           kBlasGemmDefault);
    if (st != kBlasOk)
      pg_engine_fail(e, PG_E_CUDA, "cuda engine: matmul backward dW (cuBLAS, %d x %d x %d): %s",
                     M, N, K, L.status_string(st));
  }
  return true;
}

/* ---- matmul: y[M,N] = x[M,K]·Wᵀ, tiles in shared memory, each output's sum in ascending k ---- */

__global__ void k_matmul(float *y, const float *x, const float *w, int M, int N, int K,
                         const int32_t *widx, size_t wstride) {
  __shared__ float xs[kTile][kTile + 1], ws[kTile][kTile + 1];
  const int g = blockIdx.z;
  const size_t xo = (size_t)g * (size_t)M * (size_t)K, yo = (size_t)g * (size_t)M * (size_t)N;
  const float *W = widx ? w + (size_t)widx[g] * wstride : w;
  const int m = blockIdx.y * kTile + threadIdx.y, n = blockIdx.x * kTile + threadIdx.x;
  double acc = 0.0;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    int kx = k0 + threadIdx.x, mw = blockIdx.x * kTile + threadIdx.y;
    xs[threadIdx.y][threadIdx.x] = (m < M && kx < K) ? x[xo + (size_t)m * K + kx] : 0.0f;
    ws[threadIdx.y][threadIdx.x] = (mw < N && kx < K) ? W[(size_t)mw * K + kx] : 0.0f;
    __syncthreads();
    int kn = K - k0 < kTile ? K - k0 : kTile;
    for (int j = 0; j < kn; j++)
      acc = acc + (double)xs[threadIdx.y][j] * (double)ws[threadIdx.x][j];
    __syncthreads();
  }
  if (m < M && n < N) y[yo + (size_t)m * N + n] = (float)acc;
}

void launch_matmul(const pg_ops *o, float *y, const float *x, const float *w, int G, int M, int N,
                   int K, const int32_t *widx, size_t wstride) {
  if (M <= 0 || N <= 0 || G <= 0) return;
  dim3 block(kTile, kTile), grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile, G);
  k_matmul<<<grid, block, 0, dev_of(o)->stream>>>(y, x, w, M, N, K, widx, wstride);
  launched(o, "matmul");
}

void c_matmul_fwd(const pg_ops *o, float *y, const float *x, const float *w, int M, int N, int K) {
  if (M <= 0 || N <= 0 || fast_matmul(o, y, x, w, 1, M, N, K, nullptr, 0)) return;
  launch_matmul(o, y, x, w, 1, M, N, K, nullptr, 0);
}

void c_matmul_grouped_fwd(const pg_ops *o, float *y, const float *x, const float *w,
                          const int32_t *widx, size_t wstride, int G, int M, int N, int K) {
  if (M <= 0 || N <= 0 || G <= 0 || fast_matmul(o, y, x, w, G, M, N, K, widx, wstride)) return;
  launch_matmul(o, y, x, w, G, M, N, K, widx, wstride);
}

/* ---- rmsnorm: a thread per row --------------------------------------------------------------- */

__global__ void k_rmsnorm(float *y, const float *x, size_t R, int D, double eps) {
  GRID_LOOP(r, R) {
    const float *xr = x + r * (size_t)D;
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss = ss + (double)xr[i] * (double)xr[i];
    double inv = 1.0 / sqrt(ss / (double)D + eps);
    float *yr = y + r * (size_t)D;
    for (int i = 0; i < D; i++) yr[i] = (float)((double)xr[i] * inv);
  }
}

void c_rmsnorm_fwd(const pg_ops *o, float *y, const float *x, size_t R, int D, float eps) {
  if (!R) return;
  k_rmsnorm<<<blocks_for(R), kThreads, 0, dev_of(o)->stream>>>(y, x, R, D, (double)eps);
  launched(o, "rmsnorm");
}

/* ---- rope: a thread per (t, h, pair); the records' fp32 angle (spec/engine.md §4.3) ---------- */

__global__ void k_rope(float *y, const float *x, const int32_t *pos, int T, int H, int d, int rot,
                       float base, int bf) {
  const int half = rot / 2, per = d - half; /* per row: half pairs, then d − rot copies */
  size_t n = (size_t)T * (size_t)H * (size_t)per;
  GRID_LOOP(idx, n) {
    size_t row = idx / (size_t)per;
    int j = (int)(idx % (size_t)per);
    size_t t = row / (size_t)H;
    const float *xr = x + row * (size_t)d;
    float *yr = y + row * (size_t)d;
    if (j < half) {
      double th = rope_angle(pos[t], j, rot, base);
      double cs = cos(th), sn = sin(th);
      double x1 = (double)xr[j], x2 = (double)xr[j + half];
      if (bf) {
        cs = bfd(cs), sn = bfd(sn);
        yr[j] = (float)bfd(bfd(x1 * cs) + bfd(x2 * sn));
        yr[j + half] = (float)bfd(bfd(x1 * -sn) + bfd(x2 * cs));
      } else {
        yr[j] = (float)(x1 * cs + x2 * sn);
        yr[j + half] = (float)(-x1 * sn + x2 * cs);
      }
    } else {
      int i = rot + (j - half);
      if (i < d) yr[i] = xr[i];
    }
  }
}

void launch_rope(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H, int d,
                 int rot, float base, int bf) {
  size_t n = (size_t)T * (size_t)H * (size_t)(d - rot / 2);
  if (!n) return;
  k_rope<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, pos, T, H, d, rot, base, bf);
  launched(o, "rope");
}

void c_rope_fwd(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H, int d,
                int rot, float base) {
  launch_rope(o, y, x, pos, T, H, d, rot, base, 0);
}

void c_rope_bf16_fwd(const pg_ops *o, float *y, const float *x, const int32_t *pos, int T, int H,
                     int d, int rot, float base) {
  launch_rope(o, y, x, pos, T, H, d, rot, base, 1);
}

/* ---- attention: a thread per (b, t, h) row, keys in ascending order (spec/engine.md §4.4) ---- */

__global__ void k_attention(float *out, const float *q, const float *k, const float *v,
                            const int32_t *seg, int B, int T, int H, int Hkv, int d, double scale,
                            int bf) {
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  GRID_LOOP(row, rows) {
    size_t bt = row / (size_t)H;
    int h = (int)(row % (size_t)H), g = h / (H / Hkv);
    int b = (int)(bt / (size_t)T), t = (int)(bt % (size_t)T);
    size_t base_kv = (size_t)b * (size_t)T;
    const float *qr = q + row * (size_t)d;
    const int32_t *sg = seg ? seg + base_kv : nullptr;
    double mx = -INFINITY;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      const float *ks = k + ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double acc = 0.0;
      for (int i = 0; i < d; i++) acc = acc + (double)qr[i] * (double)ks[i];
      double l = scale * acc;
      if (l > mx) mx = l;
    }
    double o[PG_OPS_MAX_HEAD_DIM];
    for (int i = 0; i < d; i++) o[i] = 0.0;
    double den = 0.0;
    for (int s = 0; s <= t; s++) {
      if (sg && sg[s] != sg[t]) continue;
      size_t kv = ((base_kv + (size_t)s) * (size_t)Hkv + (size_t)g) * (size_t)d;
      double acc = 0.0;
      for (int i = 0; i < d; i++) acc = acc + (double)qr[i] * (double)k[kv + i];
      double w = pg_exp_d(scale * acc - mx);
      den = den + w;
      if (bf) w = bfd(w);
      for (int i = 0; i < d; i++) o[i] = __fma_rn(w, (double)v[kv + i], o[i]);
    }
    float *orow = out + row * (size_t)d;
    for (int i = 0; i < d; i++) orow[i] = bf ? (float)bfd(o[i] / den) : (float)(o[i] / den);
  }
}

void launch_attention(const pg_ops *o, float *out, const float *q, const float *k, const float *v,
                      const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale,
                      int bf) {
  size_t rows = (size_t)B * (size_t)T * (size_t)H;
  if (!rows) return;
  k_attention<<<blocks_for(rows), 128, 0, dev_of(o)->stream>>>(out, q, k, v, seg, B, T, H, Hkv, d,
                                                               (double)scale, bf);
  launched(o, "attention");
}

void c_attention_fwd(const pg_ops *o, float *out, const float *q, const float *k, const float *v,
                     const int32_t *seg, int B, int T, int H, int Hkv, int d, float scale) {
  launch_attention(o, out, q, k, v, seg, B, T, H, Hkv, d, scale, 0);
}

void c_attention_bf16_fwd(const pg_ops *o, float *out, const float *q, const float *k,
                          const float *v, const int32_t *seg, int B, int T, int H, int Hkv, int d,
                          float scale) {
  if (flash_takes(o, B, T, H, d))
    launch_flash(o, out, q, k, v, seg, B, T, H, Hkv, d, scale);
  else
    launch_attention(o, out, q, k, v, seg, B, T, H, Hkv, d, scale, 1);
}

/* ---- elementwise ----------------------------------------------------------------------------- */

enum { EW_RELU2, EW_LEAKY, EW_SOFTCAP, EW_TANH, EW_AXPY, EW_BF16 };

__global__ void k_ew(float *y, const float *x, size_t n, int kind, double a) {
  GRID_LOOP(i, n) {
    double xv = (double)x[i];
    switch (kind) {
    case EW_RELU2: {
      double u = x[i] > 0.0f ? xv : 0.0;
      y[i] = (float)(u * u);
      break;
    }
    case EW_LEAKY: {
      double u = xv > 0.0 ? xv : a * xv;
      y[i] = (float)(u * u);
      break;
    }
    case EW_SOFTCAP: y[i] = (float)(a * tanh(xv / a)); break;
    case EW_TANH: y[i] = (float)tanh(xv); break;
    case EW_AXPY: y[i] = (float)((double)y[i] + a * xv); break;
    default: y[i] = bf16_round(x[i]); break;
    }
  }
}

void launch_ew(const pg_ops *o, float *y, const float *x, size_t n, int kind, double a) {
  if (!n) return;
  k_ew<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, n, kind, a);
  launched(o, "elementwise op");
}

void c_relu2_fwd(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_RELU2, 0);
}
void c_leaky_relu2_fwd(const pg_ops *o, float *y, const float *x, size_t n, float s) {
  launch_ew(o, y, x, n, EW_LEAKY, (double)s);
}
void c_softcap_fwd(const pg_ops *o, float *y, const float *z, size_t n, float c) {
  launch_ew(o, y, z, n, EW_SOFTCAP, (double)c);
}
void c_tanh_fwd(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_TANH, 0);
}
void c_axpy(const pg_ops *o, float *y, float a, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_AXPY, (double)a);
}
void c_round_bf16(const pg_ops *o, float *y, const float *x, size_t n) {
  launch_ew(o, y, x, n, EW_BF16, 0);
}

/* y[r, c] from x[r, c] and per-row / per-channel vectors */
enum { BC_CHANMUL, BC_ROWMUL, BC_ROWGATE, BC_CHANLERP, BC_COLS, BC_EXPAND };

__global__ void k_bcast(float *y, const float *x, const float *b2, const float *s, size_t R,
                        int C, int c0, int w, int kind) {
  size_t n = R * (size_t)(kind == BC_COLS ? w : C);
  GRID_LOOP(i, n) {
    switch (kind) {
    case BC_CHANMUL: y[i] = (float)((double)x[i] * (double)s[i % (size_t)C]); break;
    case BC_ROWMUL: y[i] = (float)((double)x[i] * (double)s[i / (size_t)C]); break;
    case BC_ROWGATE: y[i] = (float)((double)x[i] * sigmoid_d((double)s[i / (size_t)C])); break;
    case BC_CHANLERP: {
      double sg = sigmoid_d((double)s[i % (size_t)C]);
      y[i] = (float)(sg * (double)x[i] + (1.0 - sg) * (double)b2[i]);
      break;
    }
    case BC_COLS: {
      size_t r = i / (size_t)w;
      y[i] = x[r * (size_t)C + (size_t)(c0 + (int)(i % (size_t)w))];
      break;
    }
    default: y[i] = x[i / (size_t)C]; break; /* expand: C is r */
    }
  }
}

void launch_bcast(const pg_ops *o, float *y, const float *x, const float *b2, const float *s,
                  size_t R, int C, int c0, int w, int kind) {
  size_t n = R * (size_t)(kind == BC_COLS ? w : C);
  if (!n) return;
  k_bcast<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, x, b2, s, R, C, c0, w, kind);
  launched(o, "broadcast op");
}

void c_chanmul_fwd(const pg_ops *o, float *y, const float *x, const float *s, size_t R, int C) {
  launch_bcast(o, y, x, nullptr, s, R, C, 0, 0, BC_CHANMUL);
}
void c_rowmul_fwd(const pg_ops *o, float *y, const float *x, const float *s, size_t R, int D) {
  launch_bcast(o, y, x, nullptr, s, R, D, 0, 0, BC_ROWMUL);
}
void c_rowgate_fwd(const pg_ops *o, float *y, const float *x, const float *g, size_t R, int D) {
  launch_bcast(o, y, x, nullptr, g, R, D, 0, 0, BC_ROWGATE);
}
void c_chanlerp_fwd(const pg_ops *o, float *y, const float *a, const float *b, const float *g,
                    size_t R, int C) {
  launch_bcast(o, y, a, b, g, R, C, 0, 0, BC_CHANLERP);
}
void c_cols_fwd(const pg_ops *o, float *y, const float *x, size_t R, int C, int c0, int w) {
  launch_bcast(o, y, x, nullptr, nullptr, R, C, c0, w, BC_COLS);
}
void c_expand_fwd(const pg_ops *o, float *y, const float *x, int G, int r) {
  launch_bcast(o, y, x, nullptr, nullptr, (size_t)G, r, 0, 0, BC_EXPAND);
}
void c_copy(const pg_ops *o, float *y, const float *x, size_t n) {
  if (n && y != x)
    rt_check(pg_engine_of(o),
             cudaMemcpyAsync(y, x, n * sizeof *y, cudaMemcpyDeviceToDevice, dev_of(o)->stream),
             "copy");
}

/* ---- xsa: a thread per (t, h) row ------------------------------------------------------------ */

__global__ void k_xsa(float *out, const float *y, const float *v, int T, int H, int Hkv, int d) {
  size_t rows = (size_t)T * (size_t)H;
  GRID_LOOP(row, rows) {
    size_t t = row / (size_t)H;
    int g = (int)(row % (size_t)H) / (H / Hkv);
    const float *vr = v + (t * (size_t)Hkv + (size_t)g) * (size_t)d;
    double ss = 0.0;
    for (int i = 0; i < d; i++) ss = ss + (double)vr[i] * (double)vr[i];
    double nrm = sqrt(ss);
    if (nrm < 1e-12) nrm = 1e-12;
    const float *yr = y + row * (size_t)d;
    double a = 0.0;
    for (int i = 0; i < d; i++) a = a + (double)yr[i] * ((double)vr[i] / nrm);
    float *o = out + row * (size_t)d;
    for (int i = 0; i < d; i++) o[i] = (float)((double)yr[i] - a * ((double)vr[i] / nrm));
  }
}

void c_xsa_fwd(const pg_ops *o, float *out, const float *y, const float *v, int T, int H, int Hkv,
               int d) {
  size_t rows = (size_t)T * (size_t)H;
  if (!rows) return;
  k_xsa<<<blocks_for(rows), kThreads, 0, dev_of(o)->stream>>>(out, y, v, T, H, Hkv, d);
  launched(o, "xsa");
}

/* ---- embed and cross-entropy (ids checked on the device: the first bad one is the error) ----- */

__global__ void k_embed(float *y, const float *table, const int32_t *ids, int T, int D, int V,
                        int *err) {
  size_t n = (size_t)T * (size_t)D;
  GRID_LOOP(i, n) {
    size_t t = i / (size_t)D;
    int32_t id = ids[t];
    if (id < 0 || id >= V) {
      set_err(err, PG_E_TOKEN_RANGE);
      continue;
    }
    y[i] = table[(size_t)id * (size_t)D + i % (size_t)D];
  }
}

void c_embed_fwd(const pg_ops *o, float *y, const float *table, const int32_t *ids, int T, int D,
                 int V) {
  size_t n = (size_t)T * (size_t)D;
  if (!n) return;
  k_embed<<<blocks_for(n), kThreads, 0, dev_of(o)->stream>>>(y, table, ids, T, D, V,
                                                             dev_of(o)->err_dev);
  launched(o, "embed");
}

__global__ void k_ce(double *nll, const float *logits, const int32_t *tg, int T, int V, int *err) {
  GRID_LOOP(t, (size_t)T) {
    int32_t y = tg[t];
    if (y < 0 || y >= V) {
      set_err(err, PG_E_TOKEN_RANGE);
      continue;
    }
    const float *l = logits + t * (size_t)V;
    double m = -INFINITY, s = 0.0;
    for (int v = 0; v < V; v++)
      if ((double)l[v] > m) m = (double)l[v];
    for (int v = 0; v < V; v++) s = s + pg_exp_d((double)l[v] - m);
    nll[t] = m + log(s) - (double)l[y];
  }
}

/* The cross-entropy statistics of the fast bf16 mode (spec/engine.md §8.7): one block of
 * kCeThreads per row t instead of one thread. The maximum m (exact in any order); then thread j
 * sums pg_exp(l[v] − m) over v ≡ j (mod kCeThreads) ascending, in fp64, and the block adds those
 * partial sums by a fixed pairwise tree: the same bits on every run, another order than the
 * exact op's one running sum. Writes st[2t] = m, st[2t + 1] = s; a target outside [0, V) sets the
 * error word. */
constexpr int kCeThreads = 256;

__global__ void __launch_bounds__(kCeThreads)
    k_ce_stats_rows(double *st, const float *logits, const int32_t *tg, int V, int *err) {
  __shared__ double red[kCeThreads];
  const size_t t = blockIdx.x;
  const int j = threadIdx.x;
  if (j == 0 && (tg[t] < 0 || tg[t] >= V)) set_err(err, PG_E_TOKEN_RANGE);
  const float *l = logits + t * (size_t)V;
  double m = -INFINITY;
  for (int v = j; v < V; v += kCeThreads)
    if ((double)l[v] > m) m = (double)l[v];
  red[j] = m;
  __syncthreads();
  for (int w = kCeThreads / 2; w > 0; w /= 2) {
    if (j < w && red[j + w] > red[j]) red[j] = red[j + w];
    __syncthreads();
  }
  m = red[0];
  __syncthreads();
  double s = 0.0;
  for (int v = j; v < V; v += kCeThreads) s = s + pg_exp_d((double)l[v] - m);
  red[j] = s;
  __syncthreads();
  for (int w = kCeThreads / 2; w > 0; w /= 2) {
    if (j < w) red[j] = red[j] + red[j + w];
    __syncthreads();
  }
  if (j == 0) {
    st[2 * t] = m;
    st[2 * t + 1] = red[0];
  }
}

/* nll[t] = m + log(s) − l[y] from the row statistics of k_ce_stats_rows */
__global__ void k_ce_from_stats(double *nll, const double *st, const float *logits,
                                const int32_t *tg, int T, int V, const int *err) {
  if (*(volatile const int *)err) return;
  GRID_LOOP(t, (size_t)T) {
    nll[t] = st[2 * t] + log(st[2 * t + 1]) - (double)logits[t * (size_t)V + tg[t]];
  }
}

void c_ce_fwd(const pg_ops *o, double *nll, const float *logits, const int32_t *targets, int T,
              int V) {
  if (T <= 0) return;
  pg_engine *e = pg_engine_of(o);
  Dev *d = dev_of(e);
  /* a bf16 pass of the fast mode: a block per row (the same formula, sums in another order) */
  double *st = d->fast && e->bf16_pass && V > 0
                   ? static_cast<double *>(pg_engine_scratch_try(e, 0, 2 * (size_t)T * 8))
                   : nullptr;
  if (st) {
    launch_ce_stats_rows(o, st, logits, targets, T, V);
    k_ce_from_stats<<<blocks_for((size_t)T), kThreads, 0, d->stream>>>(nll, st, logits, targets,
                                                                       T, V, d->err_dev);
    launched(o, "cross-entropy (rows by blocks)");
    return;
  }
  k_ce<<<blocks_for((size_t)T), 128, 0, dev_of(o)->stream>>>(nll, logits, targets, T, V,
                                                             dev_of(o)->err_dev);
  launched(o, "cross-entropy");
}

/* ---- memory ---------------------------------------------------------------------------------- */

void *m_alloc(pg_engine *e, size_t bytes) {
  void *p = nullptr;
  size_t n = bytes ? bytes : 64;
  cudaError_t c = cudaMalloc(&p, n);
  if (c != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  c = cudaMemsetAsync(p, 0, n, dev_of(e)->stream);
  if (c != cudaSuccess) {
    (void)cudaGetLastError();
    cudaFree(p);
    return nullptr;
  }
  return p;
}

void m_free(pg_engine *e, void *p) {
  /* cudaFree waits for the device: work queued on the buffer is done first */
  rt_check(e, cudaFree(p), "free");
}

void m_upload(pg_engine *e, void *dst, const void *src, size_t n) {
  /* from pageable host memory the copy is staged: the host buffer may be reused on return */
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, dev_of(e)->stream), "upload");
}

void m_download(pg_engine *e, void *dst, const void *src, size_t n) {
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, dev_of(e)->stream),
           "download");
  rt_check(e, cudaStreamSynchronize(dev_of(e)->stream), "download");
}

void m_zero(pg_engine *e, void *dst, size_t n) {
  rt_check(e, cudaMemsetAsync(dst, 0, n, dev_of(e)->stream), "zero");
}

void m_copy(pg_engine *e, void *dst, const void *src, size_t n) {
  rt_check(e, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, dev_of(e)->stream), "copy");
}

int m_finish(pg_engine *e) {
  Dev *d = dev_of(e);
  rt_check(e, cudaStreamSynchronize(d->stream), "a kernel");
  int word = 0;
  cudaError_t c = cudaMemcpy(&word, d->err_dev, sizeof word, cudaMemcpyDeviceToHost);
  rt_check(e, c, "reading the error word");
  if (c == cudaSuccess && word) {
    pg_engine_fail(e, word, "cuda engine: an id or target is outside its table");
    rt_check(e, cudaMemset(d->err_dev, 0, sizeof(int)), "clearing the error word");
  }
  return PG_OK; /* the precise errors are recorded above */
}

void m_release(pg_engine *e) {
  Dev *d = dev_of(e);
  if (!d) return;
  blas_close(d);
  if (d->err_dev) cudaFree(d->err_dev);
  if (d->stream) cudaStreamDestroy(d->stream);
  free(d);
  e->impl = nullptr;
}

pg_ops table(int nthreads) {
  pg_ops t;
  memset(&t, 0, sizeof t);
  t.name = "cuda";
  t.nthreads = nthreads;
#define S(n) t.n = c_##n
  S(matmul_fwd); S(matmul_grouped_fwd); S(rmsnorm_fwd); S(rope_fwd); S(attention_fwd);
  S(relu2_fwd); S(leaky_relu2_fwd); S(rowgate_fwd); S(chanmul_fwd); S(xsa_fwd); S(softcap_fwd);
  S(ce_fwd); S(axpy); S(chanlerp_fwd); S(rowmul_fwd); S(tanh_fwd); S(embed_fwd); S(cols_fwd);
  S(expand_fwd); S(copy); S(round_bf16); S(rope_bf16_fwd); S(attention_bf16_fwd);
#undef S
  bwd_table(&t); /* the backward and optimizer ops: pg_cuda_engine_bwd.cu */
  return t;
}

int fail_rt(pg_err *err, cudaError_t c, const char *what) {
  (void)cudaGetLastError();
  int st = c == cudaErrorNoDevice || c == cudaErrorInsufficientDriver ? PG_E_NO_DEVICE : PG_E_CUDA;
  return pg_err_set(err, st, NULL, PG_NO_OFFSET, "--engine cuda: %s: %s (%s)", what,
                    cudaGetErrorString(c), cudaGetErrorName(c));
}

} // namespace

extern "C" int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = nullptr;
  int n = 0;
  cudaError_t c = cudaGetDeviceCount(&n);
  if (c != cudaSuccess) return fail_rt(err, c, "no usable device");
  int want = o->gpus > 1 ? o->gpus : 1;
  if (o->device < 0 || o->device + want > n)
    return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET,
                      "--engine cuda: %d GPU%s asked for from device %d, %d present", want,
                      want == 1 ? "" : "s", o->device, n);
  if (want > 1)
    return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                      "--engine cuda: several GPUs are not in this version (one GPU only)");
  if ((c = cudaSetDevice(o->device)) != cudaSuccess) return fail_rt(err, c, "selecting the GPU");
  cudaDeviceProp prop;
  if ((c = cudaGetDeviceProperties(&prop, o->device)) != cudaSuccess)
    return fail_rt(err, c, "reading the GPU's properties");
  Dev *d = static_cast<Dev *>(calloc(1, sizeof *d));
  pg_engine *e = static_cast<pg_engine *>(calloc(1, sizeof *e));
  if (!d || !e) {
    free(d);
    free(e);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate an engine");
  }
  d->device = o->device;
  if ((c = cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (c = cudaMalloc(&d->err_dev, sizeof(int))) != cudaSuccess ||
      (c = cudaMemset(d->err_dev, 0, sizeof(int))) != cudaSuccess) {
    if (d->stream) cudaStreamDestroy(d->stream);
    if (d->err_dev) cudaFree(d->err_dev);
    free(d);
    free(e);
    return fail_rt(err, c, "creating the stream");
  }
  e->ops = table(1);
  e->impl = d;
  e->queue = d->stream; /* the collectives of pg_comm.h run on it, in order with the ops */
  e->heap = 1;
  e->host_memory = 0;
  e->mem_alloc = m_alloc;
  e->mem_free = m_free;
  e->mem_upload = m_upload;
  e->mem_download = m_download;
  e->mem_zero = m_zero;
  e->mem_copy = m_copy;
  e->finish = m_finish;
  e->release = m_release;
  int drv = 0, rtv = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rtv);
  snprintf(e->info.name, sizeof e->info.name, "cuda");
  char name[96];
  snprintf(name, sizeof name, "%.95s", prop.name);
  snprintf(e->info.devices, sizeof e->info.devices, "cuda:%d %s (sm_%d%d, %.0f GiB)", o->device,
           name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1u << 30));
  snprintf(e->info.driver, sizeof e->info.driver, "driver %d.%d, runtime %d.%d", drv / 1000,
           (drv % 1000) / 10, rtv / 1000, (rtv % 1000) / 10);
  e->info.ndevices = 1;
  e->info.threads = 1;
  /* precision bf16: the fast kernels of the bf16 passes (spec/engine.md §8.7); where a piece
   * cannot run here it stays exact, and the note says so */
  if (o->precision == 1) {
    if (prop.major < 8) {
      snprintf(e->info.note, sizeof e->info.note,
               "bf16: exact kernels (the fast ones need compute capability 8.0, this GPU has "
               "%d.%d)", prop.major, prop.minor);
    } else {
      d->fast = 1;
      char why[200];
      if (blas_open(e, d, why, sizeof why)[0]) {
        snprintf(e->info.note, sizeof e->info.note, "bf16: exact matmul (%s)", why);
      } else {
        int v = 0;
        if (blas_lib().version(d->blas, &v) == kBlasOk && v > 0) {
          size_t l = strlen(e->info.driver);
          snprintf(e->info.driver + l, sizeof e->info.driver - l, ", cuBLAS %d.%d.%d", v / 10000,
                   (v / 100) % 100, v % 100);
        }
      }
    }
  }
  *out = e;
  return PG_OK;
}

/* Column-major c [m × n] = op(a)·op(b) with bf16 operands, CUBLAS_COMPUTE_32F and an fp32 result
 * (beta 0): the products of the bf16 Newton–Schulz (spec/engine.md §8.7). False (and nothing
 * queued) without cuBLAS. */
bool pgcuda::blas_gemm_bf16(const pg_ops *o, int ta, int tb, int m, int n, int k,
                            const uint16_t *a, int lda, const uint16_t *b, int ldb, float *c,
                            int ldc, const char *what) {
  pg_engine *e = pg_engine_of(o);
  Dev *d = dev_of(e);
  if (!d->blas) return false;
  const BlasLib &L = blas_lib();
  const float one = 1.0f, zero = 0.0f;
  BlasStatus st = L.gemm(d->blas, ta ? kBlasOpT : kBlasOpN, tb ? kBlasOpT : kBlasOpN, m, n, k,
                         &one, a, CUDA_R_16BF, lda, b, CUDA_R_16BF, ldb, &zero, c, CUDA_R_32F,
                         ldc, kBlasCompute32F, kBlasGemmDefault);
  if (st != kBlasOk)
    pg_engine_fail(e, PG_E_CUDA, "cuda engine: %s (cuBLAS, %d x %d x %d): %s", what, m, n, k,
                   L.status_string(st));
  return true;
}

void pgcuda::launch_ce_stats_rows(const pg_ops *o, double *st, const float *logits,
                                  const int32_t *tg, int T, int V) {
  k_ce_stats_rows<<<(unsigned)T, kCeThreads, 0, dev_of(o)->stream>>>(st, logits, tg, V,
                                                                     dev_of(o)->err_dev);
  launched(o, "cross-entropy (rows by blocks)");
}

bool pgcuda::fast_matmul_bwd(const pg_ops *o, float *dx, float *dw, const float *dy,
                             const float *x, const float *w, int M, int N, int K) {
  return fast_matmul_bwd_impl(o, dx, dw, dy, x, w, M, N, K);
}

bool pgcuda::fast_attention_bwd(const pg_ops *o, float *dq, float *dk, float *dv,
                                const float *dout, const float *q, const float *k, const float *v,
                                const int32_t *seg, int B, int T, int H, int Hkv, int d,
                                float scale) {
  return fast_attention_bwd_impl(o, dq, dk, dv, dout, q, k, v, seg, B, T, H, Hkv, d, scale);
}
