/* pg_engine_open.c: the engine factory of every tool (--engine cpu|cuda|auto). It lives with the
 * kernels because only they know what this build can run: the CPU engine always; a CUDA engine
 * when the build has one and the machine a usable GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_engine.h"
#include "pg_qtype.h"

/* kernels/pg_cuda_engine.cu (pg_cuda_none.c without CUDA) */
int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err);

/* A CUDA engine's enter: its device becomes the calling thread's (pg_engine_enter). A failure is
 * the engine's first error, reported at its next sync. */
static void cuda_enter(pg_engine *e) {
  pg_err err;
  if (pg_cuda_set_device(e->ordinal, &err))
    pg_engine_fail(e, err.status, "cuda engine: device %d: %s", e->ordinal, err.msg);
}

/* A CUDA engine's dequantization (pg_engine_dequant): the quantized bytes go up into one scratch
 * buffer (values, row scales, LQER factors: about a quarter of the fp32 tensor's bytes), and the
 * kernel of pg_cuda.h, bit for bit the host reference, writes the fp32 values into dst. The values
 * come unpacked (one per byte, row-major), whatever the artifact's packing and layout: the reader
 * has put them in logical order. A failure is the engine's first error, reported at its next
 * sync. */
static void cuda_dequant(pg_engine *e, float *dst, const pg_engine_qtensor *t) {
  const uint64_t n = t->rows * t->cols, r = t->lqer_rank;
  const uint64_t na = r ? t->rows * r : 0, nb = r ? t->cols * r : 0, ng = nb / PG_LQER_GROUP;
  /* offsets inside the buffer, each part aligned to 16 bytes */
#define PG_UP16(x) (((x) + 15u) & ~(uint64_t)15u)
  const uint64_t o_sc = PG_UP16(n), o_a = PG_UP16(o_sc + 2 * t->rows), o_b = PG_UP16(o_a + na),
                 o_sb = PG_UP16(o_b + nb), total = o_sb + 2 * ng;
#undef PG_UP16
  if (n == 0 || pg_engine_failed(e)) return;
  uint8_t *buf = total <= SIZE_MAX ? pg_engine_scratch(e, 0, (size_t)total) : NULL;
  if (!buf) {
    pg_engine_fail(e, PG_E_NOMEM, "cuda engine: out of memory (%llu bytes of a quantized tensor)",
                   (unsigned long long)total);
    return;
  }
  pg_engine_upload(e, buf, t->q, (size_t)n);
  pg_engine_upload(e, buf + o_sc, t->scales, (size_t)t->rows * 2);
  if (r) {
    pg_engine_upload(e, buf + o_a, t->lqer_a, (size_t)na);
    pg_engine_upload(e, buf + o_b, t->lqer_b, (size_t)nb);
    pg_engine_upload(e, buf + o_sb, t->lqer_b_scales, (size_t)ng * 2);
  }
  if (pg_engine_failed(e)) return;
  const pg_cuda_qtensor q = {
      .rows = t->rows, .cols = t->cols, .bits = 8, .packing = PG_PACK_BYTE, .values = buf,
      .scales_f16 = (const uint16_t *)(const void *)(buf + o_sc), .lqer_rank = (unsigned)r,
      .lqer_a = r ? (const int8_t *)(buf + o_a) : NULL, .lqer_a_scale_f16 = t->lqer_a_scale,
      .lqer_b = r ? (const int8_t *)(buf + o_b) : NULL,
      .lqer_b_scales_f16 = r ? (const uint16_t *)(const void *)(buf + o_sb) : NULL};
  /* queued on the engine's stream after the uploads; it returns when the kernel is done */
  pg_err err;
  if (pg_cuda_dequant_dev(&q, dst, e->queue, &err))
    pg_engine_fail(e, err.status, "cuda engine: dequantization: %s", err.msg);
}

/* The CUDA engine, or why none can be made here: PG_E_UNSUPPORTED (this build), PG_E_NO_DEVICE,
 * PG_E_CUDA. */
static int cuda_engine(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = NULL;
  if (!pg_cuda_built())
    return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
                      "--engine cuda: this build has no CUDA (configure with -Dcuda=enabled "
                      "where nvcc is installed)");
  int n = 0;
  pg_err e2;
  if (pg_cuda_device_count(&n, &e2) || n < 1)
    return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET,
                      "--engine cuda: no usable CUDA device (driver missing or no GPU)");
  int st = pg_cuda_engine_create(out, o, err);
  if (st == PG_OK && !(*out)->enter) { /* several engines live on several threads */
    (*out)->enter = cuda_enter;
    (*out)->ordinal = o->device;
  }
  if (st == PG_OK && !(*out)->mem_dequant) (*out)->mem_dequant = cuda_dequant;
  return st;
}

int pg_engine_open(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  *out = NULL;
  if (!o || !pg_engine_kind_name(o->kind))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "unknown engine kind");
  if (o->threads < 0 || o->gpus < 0 || o->device < 0 || o->precision < 0 || o->precision > 1)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "bad engine options");
  char why[PG_ERR_MSG_MAX] = "";
  if (o->kind != PG_ENGINE_CPU) {
    pg_err e2;
    int st = cuda_engine(out, o, &e2);
    if (st == PG_OK) return PG_OK;
    if (o->kind == PG_ENGINE_CUDA) {
      if (err) *err = e2;
      return st;
    }
    /* auto: the CPU, saying why */
    const char *m = strstr(e2.msg, ": ") ? strstr(e2.msg, ": ") + 2 : e2.msg;
    snprintf(why, sizeof why, "%s", m);
  }
  pg_engine *e = malloc(sizeof *e);
  if (!e) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate an engine");
  *e = pg_engine_cpu(o->threads);
  e->heap = 1;
  if (why[0]) snprintf(e->info.note, sizeof e->info.note, "auto: %s", why);
  *out = e;
  return PG_OK;
}

int pg_engine_open_many(pg_engine **out, int n, const pg_engine_opts *o, pg_err *err) {
  if (n < 1 || n > PG_ENGINES_MAX || !o)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "engines: %d asked for, 1..%d allowed",
                      n, PG_ENGINES_MAX);
  for (int i = 0; i < n; i++) out[i] = NULL;
  pg_engine_opts one = *o;
  one.gpus = 1;
  int st = pg_engine_open(&out[0], &one, err);
  if (st) return st;
  const int cuda = !strcmp(out[0]->info.name, "cuda");
  if (n > 1 && cuda) { /* every device must be there before any further one is opened */
    int have = 0;
    pg_err e2;
    if (pg_cuda_device_count(&have, &e2) || o->device + n > have) {
      pg_engine_destroy(out[0]);
      out[0] = NULL;
      return pg_err_set(err, PG_E_NO_DEVICE, NULL, PG_NO_OFFSET,
                        "--engine cuda: %d GPUs asked for from device %d, %d present", n,
                        o->device, have);
    }
  }
  one.kind = cuda ? PG_ENGINE_CUDA : PG_ENGINE_CPU;
  for (int i = 1; i < n && !st; i++) {
    one.device = o->device + (cuda ? i : 0);
    st = pg_engine_open(&out[i], &one, err);
  }
  if (st)
    for (int i = n - 1; i >= 0; i--) {
      pg_engine_destroy(out[i]);
      out[i] = NULL;
    }
  else
    pg_engine_enter(out[0]); /* the caller's thread is left on the first device */
  return st;
}
