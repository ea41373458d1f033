/* bench_qcoder: codec 4 (qc, format/pg_qcoder.h) against brotli-11, lzma-9e and zstd-22 (and
 * `lrzip -z -L 9` when it is on PATH) on the quantized values of an artifact, grouped by tensor
 * kind (the name without "blocks.N."), in three layouts: row-major; transposed (each stored row
 * one input channel across the output rows); and the records' newest layout, the rows first
 * reordered by a nearest-neighbour chain (greedy, L1 distance, from row 0), then transposed. Prints
 * one table: bytes per kind and layout, the order-0 entropy floor, and qc's encode and decode speed
 * on one thread (the thread's CPU time, so that other work on the machine does not count).
 *
 *   bench_qcoder ARTIFACT.pgz [--no-lrzip] [--dump DIR]
 *
 * --dump DIR writes each kind's values in each layout to DIR/KIND.LAYOUT.bin (the exact bytes
 * measured) and its segments to DIR/KIND.LAYOUT.seg (a line "length row" per tensor), so that
 * other compressors and models can be measured on the same bytes. */
static const char *PROG = "bench_qcoder";
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "pg_codec.h"
#include "pg_container.h"
#include "pg_qcoder.h"

/* Seconds of this thread's CPU time. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct kind {
  char name[PG_MAX_NAME + 1];
  uint8_t *v[3]; /* row-major, transposed, chained and transposed */
  size_t n;
  pg_qc_seg *seg[3];
  size_t nseg;
  double h0; /* Σ over tensors of numel·H0/8 */
} kind;

static const char *kind_of(const char *name) {
  if (strncmp(name, "blocks.", 7) != 0) return name;
  const char *p = name + 7;
  while (*p >= '0' && *p <= '9') p++;
  return *p == '.' ? p + 1 : name;
}

/* perm ← a nearest-neighbour chain over the rows: from row 0, each next row the unvisited one
 * nearest (L1) to the last, the lowest index among equals. */
static void nn_chain(const int8_t *v, uint64_t rows, uint64_t cols, uint64_t *perm) {
  uint8_t *used = calloc(rows, 1);
  if (!used) die("out of memory");
  uint64_t cur = 0;
  for (uint64_t k = 0; k < rows; k++) {
    perm[k] = cur;
    used[cur] = 1;
    uint64_t best = UINT64_MAX, bi = cur;
    for (uint64_t r = 0; r < rows; r++) {
      if (used[r]) continue;
      uint64_t d = 0;
      const int8_t *a = v + cur * cols, *b = v + r * cols;
      for (uint64_t c = 0; c < cols && d < best; c++) d += (uint64_t)abs(a[c] - b[c]);
      if (d < best) best = d, bi = r;
    }
    cur = bi;
  }
  free(used);
}

static double entropy0(const int8_t *v, size_t n) {
  size_t h[256] = {0};
  for (size_t i = 0; i < n; i++) h[(uint8_t)v[i]]++;
  double bits = 0;
  for (int s = 0; s < 256; s++)
    if (h[s]) bits -= (double)h[s] * log2((double)h[s] / (double)n);
  return bits / 8;
}

static size_t codec_bytes(uint8_t codec, uint8_t level, uint8_t window, const uint8_t *v,
                          size_t n) {
  uint8_t *out;
  size_t len;
  pg_err e;
  if (pg_codec_compress(codec, level, window, v, n, &out, &len, &e) != PG_OK) die("%s", e.msg);
  free(out);
  return len;
}

/* lrzip -z -L 9 through temporary files; 0 when it fails. */
static size_t lrzip_bytes(const uint8_t *v, size_t n) {
  char in[] = "/tmp/bench_qcoder_XXXXXX";
  int fd = mkstemp(in);
  if (fd < 0) return 0;
  size_t got = 0;
  FILE *f = fdopen(fd, "wb");
  if (f && fwrite(v, 1, n, f) == n && fclose(f) == 0) {
    char out[sizeof in + 4], cmd[3 * sizeof in + 64];
    snprintf(out, sizeof out, "%s.lrz", in);
    snprintf(cmd, sizeof cmd, "lrzip -q -f -z -L 9 -o %s %s >/dev/null 2>&1", out, in);
    if (system(cmd) == 0) {
      FILE *g = fopen(out, "rb");
      if (g && fseek(g, 0, SEEK_END) == 0) got = (size_t)ftell(g);
      if (g) fclose(g);
    }
    unlink(out);
  } else if (f) {
    fclose(f);
  }
  unlink(in);
  return got;
}

/* --dump files: written to PATH.tmp, renamed to PATH once complete. */
static FILE *dump_open(const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) die("%s: cannot write", tmp);
  return f;
}

static void dump_close(FILE *f, const char *path) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (fclose(f) != 0 || rename(tmp, path) != 0) die("%s: cannot write", path);
}

int main(int argc, char **argv) {
  if (argc < 2) die("usage: bench_qcoder ARTIFACT.pgz [--no-lrzip] [--dump DIR]");
  int lrzip = 1;
  const char *dump = NULL;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--no-lrzip")) lrzip = 0;
    else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
    else die("unknown option %s", argv[i]);
  }
  lrzip = lrzip && system("command -v lrzip >/dev/null 2>&1") == 0;
  pg_artifact *a;
  pg_err e;
  if (pg_artifact_open(&a, argv[1], NULL, &e) != PG_OK) die("%s", e.msg);
  kind *k = NULL;
  size_t nk = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (!pg_qtype_is_int(t->qtype) || t->ndim < 2 || t->numel < 4096) continue;
    const char *kn = kind_of(t->name);
    size_t j = 0;
    while (j < nk && strcmp(k[j].name, kn)) j++;
    if (j == nk) {
      k = realloc(k, (nk + 1) * sizeof *k);
      if (!k) die("out of memory");
      memset(&k[nk], 0, sizeof *k);
      snprintf(k[nk].name, sizeof k[nk].name, "%s", kn);
      nk++;
    }
    kind *K = &k[j];
    int8_t *v = xmalloc(t->numel);
    if (pg_artifact_tensor_values(a, i, v, &e) != PG_OK) die("%s", e.msg);
    uint64_t *perm = xmalloc(t->rows * sizeof *perm);
    nn_chain(v, t->rows, t->cols, perm);
    for (int l = 0; l < 3; l++) {
      K->v[l] = realloc(K->v[l], K->n + t->numel);
      K->seg[l] = realloc(K->seg[l], (K->nseg + 1) * sizeof *K->seg[l]);
      if (!K->v[l] || !K->seg[l]) die("out of memory");
      uint8_t *d = K->v[l] + K->n;
      if (l == 0)
        memcpy(d, v, t->numel);
      else
        for (uint64_t r = 0; r < t->rows; r++)
          for (uint64_t c = 0; c < t->cols; c++)
            d[c * t->rows + r] = (uint8_t)v[(l == 2 ? perm[r] : r) * t->cols + c];
      K->seg[l][K->nseg] = (pg_qc_seg){t->numel, l == 0 ? t->cols : t->rows};
    }
    free(perm);
    K->n += t->numel;
    K->nseg++;
    K->h0 += entropy0(v, t->numel);
    free(v);
  }
  static const char *const LAYOUT[3] = {"rows", "transp", "nn+tr"};
  for (size_t j = 0; dump && j < nk; j++)
    for (int l = 0; l < 3; l++) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s.%s.bin", dump, k[j].name, LAYOUT[l]);
      FILE *f = dump_open(path);
      if (fwrite(k[j].v[l], 1, k[j].n, f) != k[j].n) die("%s: cannot write", path);
      dump_close(f, path);
      snprintf(path, sizeof path, "%s/%s.%s.seg", dump, k[j].name, LAYOUT[l]);
      f = dump_open(path);
      for (size_t g = 0; g < k[j].nseg; g++)
        fprintf(f, "%llu %llu\n", (unsigned long long)k[j].seg[l][g].len,
                (unsigned long long)k[j].seg[l][g].row);
      dump_close(f, path);
    }
  printf("bench_qcoder %s: %zu kinds of int values; one thread%s\n", argv[1], nk,
         lrzip ? "" : "; lrzip not on PATH (column empty)");
  printf("%-22s %-6s %10s %10s %10s %10s %10s %10s %10s %8s %8s\n", "kind", "layout", "values",
         "H0 floor", "qc", "brotli-11", "lzma-9e", "zstd-22", "lrzip-L9", "enc MB/s",
         "dec MB/s");
  printf("(bytes; qc's encode and decode speed in the thread's CPU time)\n");
  double tot[3][7] = {{0}}, tenc[3] = {0}, tdec[3] = {0};
  for (size_t j = 0; j < nk; j++)
    for (int l = 0; l < 3; l++) {
      kind *K = &k[j];
      uint8_t *q;
      size_t ql;
      double t0 = cpu_now();
      if (pg_qc_encode(K->v[l], K->n, K->seg[l], K->nseg, &q, &ql, &e) != PG_OK)
        die("%s", e.msg);
      double t1 = cpu_now();
      uint8_t *back = xmalloc(K->n);
      int reps = 0;
      double t2 = cpu_now(), t3;
      do {
        if (pg_qc_decode(q, ql, back, K->n, "bench", 0, &e) != PG_OK) die("%s", e.msg);
        reps++;
        t3 = cpu_now();
      } while (t3 - t2 < 0.2);
      if (memcmp(back, K->v[l], K->n)) die("%s: qc round trip differs", K->name);
      free(back);
      free(q);
      double row[7] = {(double)K->n,
                       K->h0,
                       (double)ql,
                       (double)codec_bytes(PG_CODEC_BROTLI, 11, 24, K->v[l], K->n),
                       (double)codec_bytes(PG_CODEC_LZMA, 9 | 0x80, 0, K->v[l], K->n),
                       (double)codec_bytes(PG_CODEC_ZSTD, 22, 0, K->v[l], K->n),
                       lrzip ? (double)lrzip_bytes(K->v[l], K->n) : 0};
      for (int c = 0; c < 7; c++) tot[l][c] += row[c];
      tenc[l] += t1 - t0;
      tdec[l] += (t3 - t2) / reps;
      printf("%-22s %-6s %10.0f %10.0f %10.0f %10.0f %10.0f %10.0f %10.0f %8.1f %8.1f\n",
             K->name, LAYOUT[l], row[0], row[1], row[2], row[3], row[4], row[5],
             row[6], K->n / (t1 - t0) / 1e6, K->n / ((t3 - t2) / reps) / 1e6);
    }
  for (int l = 0; l < 3; l++)
    printf("%-22s %-6s %10.0f %10.0f %10.0f %10.0f %10.0f %10.0f %10.0f %8.1f %8.1f\n", "total",
           LAYOUT[l], tot[l][0], tot[l][1], tot[l][2], tot[l][3], tot[l][4],
           tot[l][5], tot[l][6], tot[l][0] / tenc[l] / 1e6, tot[l][0] / tdec[l] / 1e6);
  for (int l = 0; l < 3; l++) {
    double bestother = tot[l][3];
    for (int c = 4; c < 7; c++)
      if (tot[l][c] > 0 && tot[l][c] < bestother) bestother = tot[l][c];
    printf("%s: qc is %+.2f%% against the best other codec, %+.2f%% against the H0 floor\n",
           LAYOUT[l], 100 * (tot[l][2] / bestother - 1),
           100 * (tot[l][2] / tot[l][1] - 1));
  }
  if (lrzip)
    printf("the records' best layout (nn+tr, lrzip -z -L 9): %.0f bytes; qc on the same bytes "
           "%.0f (%+.2f%%), qc row-major %.0f (%+.2f%%)\n",
           tot[2][6], tot[2][2], 100 * (tot[2][2] / tot[2][6] - 1), tot[0][2],
           100 * (tot[0][2] / tot[2][6] - 1));
  for (size_t j = 0; j < nk; j++)
    for (int l = 0; l < 3; l++) free(k[j].v[l]), free(k[j].seg[l]);
  free(k);
  pg_artifact_free(a);
  return EXIT_OK;
}
