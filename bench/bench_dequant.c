/* bench_dequant: dequantization throughput of the CUDA kernel (pg_cuda_dequant*) against the CPU
 * reference (pg_unpack_bits + pg_dequant_rows + pg_lqer_apply, one thread) on a record-sized tensor
 * set, in three layouts: the records' one value per byte, bit-packed, and bit-packed with an LQER
 * rank-4 correction on every matrix. Every GPU result is compared with the CPU's bit for bit.
 *
 * Without a CUDA build or a device it prints the CPU rows and says why the GPU rows are absent
 * (exit 0; with --require-gpu, exit 3 as the tools do when the engine cannot run here).
 * Exit status: 0 ok, 1 a GPU result differs from the reference, 2 error, 3 no GPU (--require-gpu).
 * Progress on stderr; the table and a last "summary:" line on stdout. */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_cuda.h"
#include "pg_half.h"
#include "pg_qtype.h"
#include "pg_rng.h"
#include "pg_status.h"

static const char *PROG = "bench_dequant";
#include "bench_util.h"

enum { LAYERS = 11, DIM = 512, KV_DIM = 256, HIDDEN = 4 * DIM, VOCAB = 8192, LQER_RANK = 4 };
#define SEED 4242u

/* One tensor of the set, in every layout: values one per byte and bit-packed, row scales, the
 * LQER factors; the CPU reference's and the GPU's outputs. */
typedef struct qt {
  uint64_t rows, cols, n;
  unsigned bits;
  int8_t *q;
  uint8_t *packed;
  uint16_t *scales;
  int8_t *qa, *qb;
  uint16_t sa, *sb;
  float *ref, *got;
} qt;

typedef struct tset {
  qt *t;
  size_t n;
  uint64_t elems;
} tset;

enum { LAYOUT_BYTES, LAYOUT_BITS, LAYOUT_LQER, N_LAYOUTS };
static const char *const LAYOUT_NAME[N_LAYOUTS] = {"bytes", "bit-packed", "bit-packed+lqer4"};

static pg_rng rng;

static void add_tensor(tset *s, uint64_t rows, uint64_t cols, unsigned bits) {
  qt *t = &s->t[s->n++];
  memset(t, 0, sizeof *t);
  t->rows = rows, t->cols = cols, t->n = rows * cols, t->bits = bits;
  t->q = xmalloc(t->n);
  t->packed = xmalloc(pg_packed_bytes(t->n, bits));
  t->scales = xmalloc(rows * 2);
  t->qa = xmalloc(rows * LQER_RANK);
  t->qb = xmalloc(LQER_RANK * cols);
  t->sb = xmalloc(LQER_RANK * cols / PG_LQER_GROUP * 2);
  t->ref = xmalloc(t->n * 4);
  t->got = xmalloc(t->n * 4);
  /* fault the output pages in now, not while timing */
  memset(t->ref, 0, t->n * 4);
  memset(t->got, 0, t->n * 4);
  /* values: a rounded Gaussian clipped to the range, as quantized weights look */
  const int lo = pg_int_min(bits), hi = pg_int_max(bits);
  const double sd = hi / 6.0 + 1.0;
  for (uint64_t i = 0; i < t->n; i++) {
    const double v = rint(sd * pg_rng_gauss(&rng));
    t->q[i] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
  }
  pg_pack_bits(t->q, t->n, bits, t->packed);
  for (uint64_t r = 0; r < rows; r++)
    t->scales[r] = pg_f32_to_f16((float)(exp(0.25 * pg_rng_gauss(&rng)) / sqrt((double)cols)));
  for (uint64_t i = 0; i < rows * LQER_RANK; i++) t->qa[i] = (int8_t)(pg_rng_u64(&rng) % 4) - 2;
  for (uint64_t i = 0; i < LQER_RANK * cols; i++) t->qb[i] = (int8_t)(pg_rng_u64(&rng) % 16) - 8;
  t->sa = pg_f32_to_f16(0.01f);
  for (uint64_t g = 0; g < LQER_RANK * cols / PG_LQER_GROUP; g++)
    t->sb[g] = pg_f32_to_f16((float)(0.001 * exp(0.5 * pg_rng_gauss(&rng))));
  s->elems += t->n;
}

/* The records' shapes: a tied int8 embedding VOCAB x DIM and, per layer, c_q, c_k, c_v, proj,
 * mlp.fc, mlp.proj at int6. --small keeps one layer and a 1024-row embedding. */
static void build_set(tset *s, int small) {
  const int layers = small ? 1 : LAYERS;
  s->t = xmalloc((size_t)(1 + 6 * layers) * sizeof *s->t);
  s->n = 0;
  s->elems = 0;
  pg_rng_seed(&rng, SEED);
  add_tensor(s, small ? 1024 : VOCAB, DIM, 8);
  for (int l = 0; l < layers; l++) {
    add_tensor(s, DIM, DIM, 6);
    add_tensor(s, KV_DIM, DIM, 6);
    add_tensor(s, KV_DIM, DIM, 6);
    add_tensor(s, DIM, DIM, 6);
    add_tensor(s, HIDDEN, DIM, 6);
    add_tensor(s, DIM, HIDDEN, 6);
  }
}

static void free_set(tset *s) {
  for (size_t i = 0; i < s->n; i++) {
    qt *t = &s->t[i];
    free(t->q), free(t->packed), free(t->scales), free(t->qa), free(t->qb), free(t->sb);
    free(t->ref), free(t->got);
  }
  free(s->t);
}

/* The kernel's view of tensor t in a layout (host pointers). */
static pg_cuda_qtensor view(const qt *t, int layout) {
  pg_cuda_qtensor v = {.rows = t->rows, .cols = t->cols, .bits = t->bits,
                       .packing = layout == LAYOUT_BYTES ? PG_PACK_BYTE : PG_PACK_BITS,
                       .values = layout == LAYOUT_BYTES ? (const void *)t->q : t->packed,
                       .scales_f16 = t->scales};
  if (layout == LAYOUT_LQER) {
    v.lqer_rank = LQER_RANK;
    v.lqer_a = t->qa;
    v.lqer_a_scale_f16 = t->sa;
    v.lqer_b = t->qb;
    v.lqer_b_scales_f16 = t->sb;
  }
  return v;
}

/* Bytes one pass reads (values, scales, LQER factors) and writes (fp32). */
static double pass_bytes(const tset *s, int layout) {
  double b = 0;
  for (size_t i = 0; i < s->n; i++) {
    const qt *t = &s->t[i];
    b += layout == LAYOUT_BYTES ? (double)t->n : (double)pg_packed_bytes(t->n, t->bits);
    b += 2.0 * (double)t->rows + 4.0 * (double)t->n;
    if (layout == LAYOUT_LQER)
      b += (double)(t->rows + t->cols) * LQER_RANK + 2.0 + LQER_RANK * t->cols / PG_LQER_GROUP * 2;
  }
  return b;
}

/* The CPU reference over the whole set into t->ref; scratch holds the unpacked values. */
static double cpu_pass(tset *s, int layout, int8_t *scratch) {
  const double t0 = now();
  for (size_t i = 0; i < s->n; i++) {
    qt *t = &s->t[i];
    const int8_t *q = t->q;
    if (layout != LAYOUT_BYTES) {
      if (pg_unpack_bits(t->packed, t->n, t->bits, scratch)) die("unpack: padding bits set");
      q = scratch;
    }
    pg_dequant_rows(q, t->scales, t->rows, t->cols, t->ref);
    if (layout == LAYOUT_LQER)
      pg_lqer_apply(t->ref, t->rows, t->cols, LQER_RANK, t->qa, t->sa, t->qb, t->sb);
  }
  return now() - t0;
}

/* pg_cuda_dequant on host buffers (upload, kernel, download) over the whole set into t->got. */
static int cuda_host_pass(tset *s, int layout, double *secs, pg_err *err) {
  const double t0 = now();
  for (size_t i = 0; i < s->n; i++) {
    const pg_cuda_qtensor v = view(&s->t[i], layout);
    PG_TRY(pg_cuda_dequant(&v, s->t[i].got, err));
  }
  *secs = now() - t0;
  return PG_OK;
}

/* Device copies of every tensor's inputs and output, for the kernel alone. */
typedef struct dtensor {
  pg_cuda_qtensor v;
  void *bufs[5]; /* values, scales, LQER A, B, B's scales */
  void *out;     /* rows*cols floats */
} dtensor;

static void dev_free(dtensor *d, size_t n) {
  for (size_t i = 0; d && i < n; i++) {
    for (int k = 0; k < 5; k++) pg_cuda_free(d[i].bufs[k]);
    pg_cuda_free(d[i].out);
  }
  free(d);
}

static int dev_put(void **dst, const void *src, size_t bytes, pg_err *err) {
  PG_TRY(pg_cuda_alloc(dst, bytes, err));
  return pg_cuda_upload(*dst, src, bytes, err);
}

static int dev_setup(const tset *s, int layout, dtensor **out, pg_err *err) {
  dtensor *d = calloc(s->n, sizeof *d);
  if (!d) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  int rc = PG_OK;
  for (size_t i = 0; i < s->n && rc == PG_OK; i++) {
    const qt *t = &s->t[i];
    d[i].v = view(t, layout);
    const size_t vbytes = layout == LAYOUT_BYTES ? t->n : pg_packed_bytes(t->n, t->bits);
    rc = dev_put(&d[i].bufs[0], d[i].v.values, vbytes, err);
    if (rc == PG_OK) rc = dev_put(&d[i].bufs[1], t->scales, t->rows * 2, err);
    if (rc == PG_OK && layout == LAYOUT_LQER) {
      rc = dev_put(&d[i].bufs[2], t->qa, t->rows * LQER_RANK, err);
      if (rc == PG_OK) rc = dev_put(&d[i].bufs[3], t->qb, LQER_RANK * t->cols, err);
      if (rc == PG_OK)
        rc = dev_put(&d[i].bufs[4], t->sb, LQER_RANK * t->cols / PG_LQER_GROUP * 2, err);
    }
    if (rc == PG_OK) rc = pg_cuda_alloc(&d[i].out, t->n * 4, err);
    d[i].v.values = d[i].bufs[0];
    d[i].v.scales_f16 = d[i].bufs[1];
    d[i].v.lqer_a = d[i].bufs[2];
    d[i].v.lqer_b = d[i].bufs[3];
    d[i].v.lqer_b_scales_f16 = d[i].bufs[4];
  }
  if (rc != PG_OK) {
    dev_free(d, s->n);
    return rc;
  }
  *out = d;
  return PG_OK;
}

/* pg_cuda_dequant_dev over the whole set (each call waits for its kernel). */
static int cuda_dev_pass(const tset *s, dtensor *d, double *secs, pg_err *err) {
  const double t0 = now();
  for (size_t i = 0; i < s->n; i++)
    PG_TRY(pg_cuda_dequant_dev(&d[i].v, (float *)d[i].out, NULL, err));
  *secs = now() - t0;
  return PG_OK;
}

/* 1 when every t->got equals t->ref byte for byte. */
static int same_as_ref(const tset *s) {
  for (size_t i = 0; i < s->n; i++)
    if (memcmp(s->t[i].got, s->t[i].ref, s->t[i].n * 4)) return 0;
  return 1;
}

static void poison(tset *s) {
  for (size_t i = 0; i < s->n; i++) memset(s->t[i].got, 0xA5, s->t[i].n * 4);
}

static void row(const char *layout, const char *engine, double secs, double elems, double bytes,
                const char *exact) {
  printf("%-17s %-12s %9.4f %10.1f %9.2f  %s\n", layout, engine, secs, elems / secs / 1e6,
         bytes / secs / 1e9, exact);
}

static void usage(FILE *f) {
  fprintf(f, "usage: %s [--repeat N] [--small] [--require-gpu]\n"
             "  --repeat N     timed passes per row, the best is shown (default 5)\n"
             "  --small        one layer and a 1024-row embedding instead of the record's set\n"
             "  --require-gpu  exit 3 when no GPU can run (default: CPU rows only, exit 0)\n",
          PROG);
}

int main(int argc, char **argv) {
  int repeat = 5, small = 0, require_gpu = 0;
  static const struct option opts[] = {{"repeat", required_argument, NULL, 'r'},
                                       {"small", no_argument, NULL, 's'},
                                       {"require-gpu", no_argument, NULL, 'g'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
  for (int c; (c = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
    if (c == 'r') {
      char *end;
      const long v = strtol(optarg, &end, 10);
      if (*end || v < 1 || v > 1000) die("--repeat: an integer in 1..1000, not '%s'", optarg);
      repeat = (int)v;
    } else if (c == 's') {
      small = 1;
    } else if (c == 'g') {
      require_gpu = 1;
    } else if (c == 'h') {
      usage(stdout);
      return EXIT_OK;
    } else {
      usage(stderr);
      return EXIT_ERR;
    }
  }
  if (optind != argc) die("unexpected argument '%s'", argv[optind]);

  /* Can the GPU rows run here? */
  char why[PG_ERR_MSG_MAX] = "";
  pg_err err = {0};
  int ndev = 0;
  if (!pg_cuda_built())
    snprintf(why, sizeof why, "this build has no CUDA (-Dcuda=disabled or no nvcc)");
  else if (pg_cuda_device_count(&ndev, &err) != PG_OK)
    snprintf(why, sizeof why, "%s", err.msg);
  else if (ndev < 1)
    snprintf(why, sizeof why, "no CUDA device (driver missing or no GPU)");
  const int gpu = why[0] == '\0';
  if (!gpu && require_gpu) {
    fprintf(stderr, "%s: --require-gpu: %s\n", PROG, why);
    return 3;
  }

  tset s;
  fprintf(stderr, "%s: building the %s tensor set\n", PROG, small ? "small" : "record-sized");
  build_set(&s, small);
  uint64_t maxn = 0;
  for (size_t i = 0; i < s.n; i++) maxn = s.t[i].n > maxn ? s.t[i].n : maxn;
  int8_t *scratch = xmalloc(maxn);
  printf("tensor set: %zu tensors, %.2f M elements (int8 embedding, int6 matrices), best of %d "
         "passes\n", s.n, (double)s.elems / 1e6, repeat);
  printf("GB/s counts the bytes a pass reads (values, scales, LQER factors) and writes (fp32)\n");
  printf("%-17s %-12s %9s %10s %9s  %s\n", "layout", "engine", "s", "Melem/s", "GB/s",
         "bit-exact vs cpu");

  int mismatch = 0;
  double best_cpu[N_LAYOUTS], best_dev[N_LAYOUTS], best_host[N_LAYOUTS];
  for (int l = 0; l < N_LAYOUTS; l++) {
    const double bytes = pass_bytes(&s, l), elems = (double)s.elems;
    fprintf(stderr, "%s: %s: cpu\n", PROG, LAYOUT_NAME[l]);
    double best = INFINITY;
    cpu_pass(&s, l, scratch); /* warm-up; also the reference every GPU row is checked against */
    for (int r = 0; r < repeat; r++) best = fmin(best, cpu_pass(&s, l, scratch));
    best_cpu[l] = best;
    row(LAYOUT_NAME[l], "cpu-1thread", best, elems, bytes, "(reference)");
    best_dev[l] = best_host[l] = NAN;
    if (!gpu) continue;

    fprintf(stderr, "%s: %s: cuda (host buffers)\n", PROG, LAYOUT_NAME[l]);
    double secs;
    best = INFINITY;
    poison(&s);
    if (cuda_host_pass(&s, l, &secs, &err) != PG_OK) die("%s", err.msg); /* warm-up */
    int exact = same_as_ref(&s);
    for (int r = 0; r < repeat; r++) {
      if (cuda_host_pass(&s, l, &secs, &err) != PG_OK) die("%s", err.msg);
      best = fmin(best, secs);
    }
    exact = exact && same_as_ref(&s);
    best_host[l] = best;
    row(LAYOUT_NAME[l], "cuda-host", best, elems, bytes, exact ? "yes" : "NO");
    mismatch |= !exact;

    fprintf(stderr, "%s: %s: cuda (device buffers)\n", PROG, LAYOUT_NAME[l]);
    dtensor *d = NULL;
    if (dev_setup(&s, l, &d, &err) != PG_OK) die("%s", err.msg);
    best = INFINITY;
    if (cuda_dev_pass(&s, d, &secs, &err) != PG_OK) die("%s", err.msg); /* warm-up */
    for (int r = 0; r < repeat; r++) {
      if (cuda_dev_pass(&s, d, &secs, &err) != PG_OK) die("%s", err.msg);
      best = fmin(best, secs);
    }
    poison(&s);
    for (size_t i = 0; i < s.n; i++)
      if (pg_cuda_download(s.t[i].got, d[i].out, s.t[i].n * 4, &err) != PG_OK) die("%s", err.msg);
    dev_free(d, s.n);
    exact = same_as_ref(&s);
    best_dev[l] = best;
    row(LAYOUT_NAME[l], "cuda-device", best, elems, bytes, exact ? "yes" : "NO");
    mismatch |= !exact;
  }
  if (!gpu) printf("cuda rows: absent (%s)\n", why);

  /* One line for scripts: the figures of the bit-packed + LQER layout (what pgverify loads). */
  const double gb = pass_bytes(&s, LAYOUT_LQER) / 1e9;
  if (gpu)
    printf("summary: %s; %s: cuda-device %.1f GB/s (%.0fx cpu), cuda-host %.1f GB/s, cpu %.2f "
           "GB/s\n", mismatch ? "GPU RESULTS DIFFER from the CPU reference" : "bit-exact",
           LAYOUT_NAME[LAYOUT_LQER], gb / best_dev[LAYOUT_LQER],
           best_cpu[LAYOUT_LQER] / best_dev[LAYOUT_LQER], gb / best_host[LAYOUT_LQER],
           gb / best_cpu[LAYOUT_LQER]);
  else
    printf("summary: no GPU (%s); %s: cpu %.2f GB/s\n", why, LAYOUT_NAME[LAYOUT_LQER],
           gb / best_cpu[LAYOUT_LQER]);
  free(scratch);
  free_set(&s);
  return mismatch ? 1 : EXIT_OK;
}
