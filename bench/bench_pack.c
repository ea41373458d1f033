/* bench_pack: the packing pipeline of pgpack (src/quant/pg_pack.c) timed stage by stage on a model
 * the size of the records (11 × 512, 8/4 heads, MLP 4×, vocabulary 8192, tied): calibration tokens,
 * Hessian collection with the CPU forward, GPTQ of every matrix, the LQER pass, and packing with
 * each codec; then the comparison with the records' own storage: the same quantized values as
 * int8 per value with fp16 scales and fp16 passthrough tensors in one stream, byte-shuffled with
 * stride 2 and compressed with brotli quality 11, window 22 (torch.save's container aside).
 *
 * Exit status: 0 ok, 2 on any error. Progress on stderr; the table on stdout. */
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pg_arch.h"
#include "pg_calib.h"
#include "pg_codec.h"
#include "pg_container.h"
#include "pg_model.h"
#include "pg_ops.h"
#include "pg_weights.h"
#include "pg_pack.h"
#include "pg_qcoder.h"
#include "pg_qtype.h"
#include "pg_rng.h"
#include "pg_threads.h"

static const char *PROG = "bench_pack";
#include "bench_util.h"

/* ---- the table ---------------------------------------------------------------------------- */

typedef struct row {
  char stage[112];
  double secs;   /* < 0: not timed */
  int64_t bytes; /* < 0: none */
} row;

static row ROWS[40];
static size_t NROWS;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void add_row(double secs, int64_t bytes, const char *fmt, ...) {
  if (NROWS == sizeof ROWS / sizeof ROWS[0]) die("internal: too many rows");
  row *r = &ROWS[NROWS++];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->stage, sizeof r->stage, fmt, ap);
  va_end(ap);
  r->secs = secs;
  r->bytes = bytes;
}

/* ---- progress ----------------------------------------------------------------------------- */

typedef struct calib_prog {
  double t0, last;
} calib_prog;

static int on_calib(void *ctx, uint64_t done, uint64_t total) {
  calib_prog *c = ctx;
  double t = now();
  if (t - c->last >= 5.0 || done == total) {
    fprintf(stderr, "%s: hessians: %llu / %llu tokens, %.1f s\n", PROG, (unsigned long long)done,
            (unsigned long long)total, t - c->t0);
    c->last = t;
  }
  return 0;
}

typedef struct quant_prog {
  double t0, t_last_tensor, last_print;
} quant_prog;

static void on_tensor(void *ctx, size_t done, size_t total, const char *name) {
  quant_prog *q = ctx;
  double t = now();
  q->t_last_tensor = t;
  if (t - q->last_print >= 5.0 || done == total) {
    fprintf(stderr, "%s: quantize: %zu / %zu tensors (%s), %.1f s\n", PROG, done, total, name,
            t - q->t0);
    q->last_print = t;
  }
}

/* ---- the records' single stream ---------------------------------------------------------- */

typedef struct blob {
  uint8_t *p;
  size_t n, cap;
} blob;

static void put(blob *b, const void *src, size_t n) {
  if (b->n + n > b->cap) {
    size_t c = b->cap ? b->cap : 1 << 20;
    while (c < b->n + n) c *= 2;
    uint8_t *q = realloc(b->p, c);
    if (!q) die("out of memory (%zu bytes)", c);
    b->p = q;
    b->cap = c;
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}

/* The decoded bytes of one part of a tensor. */
static const uint8_t *part_bytes(pg_artifact *a, const pg_tensor_info *ti, int role) {
  const pg_part *pt = &ti->parts[role];
  if (!pt->present) die("%s: no %s part", ti->name, pg_part_role_name(role));
  const uint8_t *raw;
  pg_err err;
  if (pg_artifact_section_raw(a, pt->section, &raw, &err) != PG_OK) die("%s", err.msg);
  return raw + pt->offset;
}

/* An integer part (LQER factor) as one int8 per value, whatever the tensor's packing. */
static void put_ints(blob *b, pg_artifact *a, const pg_tensor_info *ti, int role, uint64_t n,
                     unsigned bits) {
  const uint8_t *src = part_bytes(a, ti, role);
  if (ti->packing == PG_PACK_BYTE) {
    put(b, src, (size_t)n);
    return;
  }
  int8_t *v = xmalloc((size_t)n);
  if (pg_unpack_bits(src, n, bits, v)) die("%s: bad padding bits", ti->name);
  put(b, v, (size_t)n);
  free(v);
}

/* What the records' torch.save holds, in state-dict order, as one stream: for each tensor, a
 * quantized one's int8 values then its fp16 row scales (then its LQER factors: qA int8, sA fp16,
 * qB int8, sB fp16), a passthrough one's fp16 values. */
static void records_stream(pg_artifact *a, const pg_model *m, blob *b) {
  pg_err err;
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const char *name = pg_model_tensor(m, i)->name;
    int64_t k = pg_artifact_tensor_find(a, name);
    if (k < 0) die("%s: not in the artifact", name);
    const pg_tensor_info *ti = pg_artifact_tensor(a, (uint32_t)k);
    if (!pg_qtype_is_int(ti->qtype)) {
      put(b, part_bytes(a, ti, PG_PART_VALUES), (size_t)ti->parts[PG_PART_VALUES].size);
      continue;
    }
    int8_t *v = xmalloc((size_t)ti->numel);
    if (pg_artifact_tensor_values(a, (uint32_t)k, v, &err) != PG_OK) die("%s", err.msg);
    put(b, v, (size_t)ti->numel);
    free(v);
    const uint8_t *s;
    if (pg_artifact_tensor_scales(a, (uint32_t)k, &s, &err) != PG_OK) die("%s", err.msg);
    put(b, s, (size_t)ti->parts[PG_PART_SCALES].size);
    if (ti->lqer_rank) {
      uint64_t r = ti->lqer_rank;
      put_ints(b, a, ti, PG_PART_LQER_A, ti->rows * r, 2);
      put(b, part_bytes(a, ti, PG_PART_LQER_A_SCALE), 2);
      put_ints(b, a, ti, PG_PART_LQER_B, r * ti->cols, 4);
      put(b, part_bytes(a, ti, PG_PART_LQER_B_SCALES),
          (size_t)ti->parts[PG_PART_LQER_B_SCALES].size);
    }
  }
}

/* ---- the records' newest layout (PGRP, their LQER record's _serialize_pergroup) ------------ */

/* The int8 values of each weight kind (the name without "blocks.{i}.") grouped across layers in
 * state-dict order; each matrix of the kinds tok_emb, attn.c_q, mlp.fc first has its rows in
 * the nearest-neighbour chain order (pg_pack_row_chain: the records' greedy L1 chain from row
 * 0, ties to the lowest index), its permutation kept as u16; then every matrix transposed
 * (arr[order].T). The rest (scales, LQER factors, passthrough tensors) in one remainder. */
typedef struct pgrp {
  blob groups[64];
  char kinds[64][96];
  size_t ng;
  blob perms, rest;
} pgrp;

static int pgrp_sorted(const char *kind) {
  return !strcmp(kind, "tok_emb.weight") || !strcmp(kind, "attn.c_q.weight") ||
         !strcmp(kind, "mlp.fc.weight");
}

static void pgrp_build(pg_artifact *a, const pg_model *m, pgrp *g) {
  pg_err err;
  memset(g, 0, sizeof *g);
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const char *name = pg_model_tensor(m, i)->name;
    int64_t k = pg_artifact_tensor_find(a, name);
    if (k < 0) die("%s: not in the artifact", name);
    const pg_tensor_info *ti = pg_artifact_tensor(a, (uint32_t)k);
    if (!pg_qtype_is_int(ti->qtype) || ti->ndim != 2) {
      if (pg_qtype_is_int(ti->qtype)) die("%s: an integer tensor that is not a matrix", name);
      put(&g->rest, part_bytes(a, ti, PG_PART_VALUES), (size_t)ti->parts[PG_PART_VALUES].size);
      continue;
    }
    const char *kind = name;
    if (!strncmp(name, "blocks.", 7) && strchr(name + 7, '.')) kind = strchr(name + 7, '.') + 1;
    size_t gi = 0;
    while (gi < g->ng && strcmp(g->kinds[gi], kind)) gi++;
    if (gi == g->ng) {
      if (g->ng == 64) die("more than 64 kinds");
      snprintf(g->kinds[g->ng++], sizeof g->kinds[0], "%s", kind);
    }
    const uint64_t rows = ti->rows, cols = ti->cols;
    int8_t *v = xmalloc((size_t)ti->numel), *t = xmalloc((size_t)ti->numel);
    uint32_t *perm = xmalloc((size_t)rows * sizeof *perm);
    if (pg_artifact_tensor_values(a, (uint32_t)k, v, &err) != PG_OK) die("%s", err.msg);
    if (pgrp_sorted(kind)) {
      if (pg_pack_row_chain(v, rows, cols, perm, &err) != PG_OK) die("%s", err.msg);
      for (uint64_t j = 0; j < rows; j++) {
        uint8_t le[2] = {(uint8_t)perm[j], (uint8_t)(perm[j] >> 8)};
        put(&g->perms, le, 2);
      }
    } else {
      for (uint64_t j = 0; j < rows; j++) perm[j] = (uint32_t)j;
    }
    for (uint64_t j = 0; j < rows; j++)
      for (uint64_t c = 0; c < cols; c++) t[c * rows + j] = v[(uint64_t)perm[j] * cols + c];
    put(&g->groups[gi], t, (size_t)ti->numel);
    free(v);
    free(t);
    free(perm);
    const uint8_t *s;
    if (pg_artifact_tensor_scales(a, (uint32_t)k, &s, &err) != PG_OK) die("%s", err.msg);
    put(&g->rest, s, (size_t)ti->parts[PG_PART_SCALES].size);
    if (ti->lqer_rank) {
      uint64_t r = ti->lqer_rank;
      put_ints(&g->rest, a, ti, PG_PART_LQER_A, rows * r, 2);
      put(&g->rest, part_bytes(a, ti, PG_PART_LQER_A_SCALE), 2);
      put_ints(&g->rest, a, ti, PG_PART_LQER_B, r * cols, 4);
      put(&g->rest, part_bytes(a, ti, PG_PART_LQER_B_SCALES),
          (size_t)ti->parts[PG_PART_LQER_B_SCALES].size);
    }
  }
}

static void pgrp_free(pgrp *g) {
  for (size_t i = 0; i < g->ng; i++) free(g->groups[i].p);
  free(g->perms.p);
  free(g->rest.p);
}

static size_t brotli11(const uint8_t *p, size_t n) {
  uint8_t *out;
  size_t len;
  pg_err err;
  if (pg_codec_compress(PG_CODEC_BROTLI, 11, 24, p ? p : (const uint8_t *)"", n, &out, &len,
                        &err) != PG_OK)
    die("%s", err.msg);
  free(out);
  return len;
}

/* The size of `lrzip -z -L 9` (ZPAQ) of n bytes, through files in dir; -1 when lrzip is not on
 * PATH. */
static int64_t lrzip_size(const uint8_t *p, size_t n, const char *dir) {
  char in[512], out[512];
  snprintf(in, sizeof in, "%s/g.bin", dir);
  snprintf(out, sizeof out, "%s/g.lrz", dir);
  FILE *f = fopen(in, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f)) die("%s: cannot write", in);
  unlink(out);
  char *argv[] = {"lrzip", "-z", "-L", "9", "-q", "-f", "-o", out, in, NULL};
  pid_t pid;
  extern char **environ;
  posix_spawn_file_actions_t fa; /* lrzip -q still prints its ratio: keep the table clean */
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  const int sp = posix_spawnp(&pid, "lrzip", &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (sp != 0) return -1;
  int st;
  if (waitpid(pid, &st, 0) < 0) die("waitpid: lrzip");
  if (WIFEXITED(st) && WEXITSTATUS(st) == 127) return -1;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) die("lrzip failed on %zu bytes", n);
  struct stat sb;
  if (stat(out, &sb) != 0) die("lrzip wrote no %s", out);
  unlink(in);
  unlink(out);
  return (int64_t)sb.st_size;
}

/* Rows: the PGRP layout with lrzip per group (when lrzip is on PATH) and with brotli-11 per
 * group; the remainder (scales, LQER, passthrough) and the permutations brotli-11 each. */
static void pgrp_rows(pg_artifact *a, const pg_model *m) {
  fprintf(stderr, "%s: records' newest layout (PGRP): groups, sort, transpose ...\n", PROG);
  double t0 = now();
  pgrp g;
  pgrp_build(a, m, &g);
  double t_build = now() - t0;
  size_t raw = 0;
  for (size_t i = 0; i < g.ng; i++) raw += g.groups[i].n;
  t0 = now();
  const size_t rest = brotli11(g.rest.p, g.rest.n), perms = brotli11(g.perms.p, g.perms.n);
  const double t_rest = now() - t0;
  fprintf(stderr, "%s: PGRP: %zu groups, %zu value bytes; remainder %zu -> %zu, perms %zu -> %zu "
          "(built in %.2f s)\n", PROG, g.ng, raw, g.rest.n, rest, g.perms.n, perms, t_build);
  char dir[] = "/tmp/bench_pack.XXXXXX";
  if (!mkdtemp(dir)) die("mkdtemp failed");
  t0 = now();
  int64_t lz = 0;
  for (size_t i = 0; i < g.ng && lz >= 0; i++) {
    int64_t k = lrzip_size(g.groups[i].p, g.groups[i].n, dir);
    if (k >= 0) fprintf(stderr, "%s:   PGRP %s: %zu -> %lld (lrzip)\n", PROG, g.kinds[i],
                        g.groups[i].n, (long long)k);
    lz = k < 0 ? -1 : lz + k;
  }
  rmdir(dir);
  if (lz >= 0)
    add_row(now() - t0 + t_build + t_rest, lz + (int64_t)(rest + perms),
            "records' newest (PGRP): %zu groups lrzip -z -L 9, rest brotli-11", g.ng);
  else
    add_row(-1, -1, "records' newest (PGRP): lrzip not found");
  t0 = now();
  size_t br = 0;
  for (size_t i = 0; i < g.ng; i++) br += brotli11(g.groups[i].p, g.groups[i].n);
  add_row(now() - t0 + t_build + t_rest, (int64_t)(br + rest + perms),
          "records' newest layout, groups brotli-11/w24 instead of lrzip");
  pgrp_free(&g);
}

/* Rows: pgolf's own artifact of the same quantized values with each stage of v2 switched on. */
static void pgolf_layout_rows(pg_packer *p, const pg_pack_extras *x, size_t v2_len) {
  static const struct {
    int layout, container;
    const char *what;
  } V[] = {{1, 1, "pgolf v1: row-major, container 1"},
           {2, 1, "pgolf: layout 2 (sort auto), container 1"},
           {1, 2, "pgolf: row-major, container 2"}};
  pg_err err;
  for (size_t k = 0; k < sizeof V / sizeof V[0]; k++) {
    if (pg_packer_set_layout(p, V[k].layout, PG_ROW_SORT_AUTO, V[k].container) != PG_OK)
      die("set_layout");
    fprintf(stderr, "%s: pack: %s ...\n", PROG, V[k].what);
    double t0 = now();
    uint8_t *b;
    size_t len;
    if (pg_packer_build(p, x, 1.0, &b, &len, NULL, &err) != PG_OK) die("build: %s", err.msg);
    add_row(now() - t0, (int64_t)len, "%s, best codec per section", V[k].what);
    free(b);
  }
  add_row(-1, (int64_t)v2_len, "pgolf v2: layout 2, container 2 (the pack: best row above)");
  if (pg_packer_set_layout(p, 2, PG_ROW_SORT_AUTO, 2) != PG_OK) die("set_layout");
}

/* ---- one codec for every DATA section, sections encoded in parallel ----------------------- */

/* Like pg_writer's encoder (format/pg_container.c): up to `threads` sections at once, the largest
 * first, each section by one thread. */
typedef struct enc_job {
  const uint8_t *raw;
  size_t n, stored;
  int rc;
  pg_err err;
} enc_job;

typedef struct enc_pool {
  const pg_codec_spec *spec;
  enc_job *jobs;
  size_t *order, n, next;
  pthread_mutex_t mu;
} enc_pool;

static void *enc_worker(void *arg) {
  enc_pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    size_t i = p->next < p->n ? p->order[p->next++] : SIZE_MAX;
    pthread_mutex_unlock(&p->mu);
    if (i == SIZE_MAX) return NULL;
    enc_job *j = &p->jobs[i];
    uint8_t *enc = NULL;
    j->rc = pg_codec_encode(p->spec, j->raw, j->n, &enc, &j->stored, &j->err);
    free(enc);
  }
}

/* Σ stored bytes of every DATA section of a encoded with spec. */
static uint64_t encode_data_sections(pg_artifact *a, const pg_codec_spec *spec, int threads) {
  pg_err err;
  size_t n = 0;
  enc_job *jobs = xmalloc(pg_artifact_section_count(a) * sizeof *jobs);
  for (uint32_t s = 0; s < pg_artifact_section_count(a); s++) {
    const pg_section *sec = pg_artifact_section(a, s);
    if (sec->kind != PG_SEC_DATA) continue;
    if (pg_artifact_section_raw(a, s, &jobs[n].raw, &err) != PG_OK) die("%s", err.msg);
    jobs[n].n = (size_t)sec->raw_size;
    jobs[n].stored = 0;
    jobs[n].rc = PG_OK;
    n++;
  }
  enc_pool pool = {.spec = spec, .jobs = jobs, .order = xmalloc((n ? n : 1) * sizeof(size_t)),
                   .n = n, .next = 0};
  for (size_t i = 0; i < n; i++) pool.order[i] = i;
  for (size_t i = 1; i < n; i++) /* largest first */
    for (size_t k = i; k > 0 && jobs[pool.order[k]].n > jobs[pool.order[k - 1]].n; k--) {
      size_t t = pool.order[k];
      pool.order[k] = pool.order[k - 1];
      pool.order[k - 1] = t;
    }
  pthread_mutex_init(&pool.mu, NULL);
  int T = threads < 1 ? 1 : threads > 64 ? 64 : threads;
  pthread_t tid[64];
  int started[64] = {0};
  for (int t = 1; t < T; t++) started[t] = pthread_create(&tid[t], NULL, enc_worker, &pool) == 0;
  enc_worker(&pool);
  for (int t = 1; t < T; t++)
    if (started[t]) pthread_join(tid[t], NULL);
  pthread_mutex_destroy(&pool.mu);
  uint64_t stored = 0;
  for (size_t i = 0; i < n; i++) {
    if (jobs[i].rc != PG_OK) die("%s", jobs[i].err.msg);
    stored += jobs[i].stored;
  }
  free(pool.order);
  free(jobs);
  return stored;
}

/* ---- main --------------------------------------------------------------------------------- */

/* ---- codec 4 (qc) on the quantized values ---------------------------------------------- */

/* Seconds of this thread's CPU time: the coder's own speed, whatever else runs on the machine. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* On the DATA sections that hold int values one per byte (identical bytes for every coder): the
 * order-0 entropy of the values (Σ over tensors of numel·H0/8, the floor of a context-free coder),
 * qc with the writer's layout hint (encode and decode on one thread, in its CPU time; decode
 * repeated for at least 0.2 s), and brotli-11/w24 on the same bytes with its decode speed. */
static void qcoder_rows(pg_artifact *a) {
  pg_err err;
  const uint32_t ns = pg_artifact_section_count(a);
  uint8_t *ints = calloc(ns, 1);
  if (!ints) die("out of memory");
  double h0 = 0;
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (!pg_qtype_is_int(t->qtype) || t->packing || !t->parts[PG_PART_VALUES].present) continue;
    ints[t->parts[PG_PART_VALUES].section] = 1;
    int8_t *v = xmalloc(t->numel);
    if (pg_artifact_tensor_values(a, i, v, &err) != PG_OK) die("%s", err.msg);
    uint64_t h[256] = {0};
    for (uint64_t k = 0; k < t->numel; k++) h[(uint8_t)v[k]]++;
    for (int k = 0; k < 256; k++)
      if (h[k]) h0 -= (double)h[k] * log2((double)h[k] / (double)t->numel) / 8;
    free(v);
  }
  uint64_t raw = 0, qc = 0, br = 0;
  double tenc = 0, tdec = 0, tbr = 0;
  for (uint32_t s = 0; s < ns; s++) {
    if (!ints[s]) continue;
    const pg_section *sec = pg_artifact_section(a, s);
    const uint8_t *bytes;
    if (pg_artifact_section_raw(a, s, &bytes, &err) != PG_OK) die("%s", err.msg);
    pg_qc_seg *segs;
    size_t nsegs;
    if (pg_artifact_section_segments(a, s, &segs, &nsegs, &err) != PG_OK) die("%s", err.msg);
    const size_t n = (size_t)sec->raw_size;
    uint8_t *enc, *back = xmalloc(n);
    size_t el;
    double t0 = cpu_now();
    if (pg_qc_encode(bytes, n, segs, nsegs, &enc, &el, &err) != PG_OK) die("%s", err.msg);
    tenc += cpu_now() - t0;
    int reps = 0;
    t0 = cpu_now();
    double t1;
    do {
      if (pg_qc_decode(enc, el, back, n, "bench", 0, &err) != PG_OK) die("%s", err.msg);
      reps++;
      t1 = cpu_now();
    } while (t1 - t0 < 0.2);
    tdec += (t1 - t0) / reps;
    if (memcmp(back, bytes, n)) die("qc: section %u does not round-trip", s);
    uint8_t *b;
    size_t bl;
    if (pg_codec_compress(PG_CODEC_BROTLI, 11, 24, bytes, n, &b, &bl, &err) != PG_OK)
      die("%s", err.msg);
    reps = 0;
    t0 = cpu_now();
    do {
      if (pg_codec_decompress(PG_CODEC_BROTLI, b, bl, back, n, "bench", 0, &err) != PG_OK)
        die("%s", err.msg);
      reps++;
      t1 = cpu_now();
    } while (t1 - t0 < 0.2);
    tbr += (t1 - t0) / reps;
    raw += n;
    qc += el;
    br += bl;
    free(b);
    free(enc);
    free(back);
    free(segs);
    pg_artifact_section_release(a, s);
  }
  free(ints);
  add_row(-1, (int64_t)llround(h0),
          "int values (%llu bytes): order-0 entropy floor, sum of numel*H0/8",
          (unsigned long long)raw);
  add_row(tenc, (int64_t)qc, "int values: qc (codec 4); encode %.2f MB/s (1 thread, CPU time)",
          raw / (tenc > 0 ? tenc : 1e-9) / 1e6);
  add_row(tdec, -1, "int values: qc decode, %.1f MB/s (1 thread, CPU time)",
          raw / (tdec > 0 ? tdec : 1e-9) / 1e6);
  add_row(tbr, (int64_t)br, "int values: brotli-11/w24; decode %.1f MB/s (same)",
          raw / (tbr > 0 ? tbr : 1e-9) / 1e6);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [--layers N] [--dim N] [--vocab N] [--calib-tokens N] [--threads N]\n"
          "          [--seed N] [--skip-gptq] [--check-codecs] [--weights FILE]\n"
          "          [--passthrough-max N]\n"
          "\n"
          "Times pgpack's pipeline on a model the size of the records (default 11 x 512, 8/4\n"
          "heads, MLP 4 x dim, vocabulary 8192, tied embedding; weights from pg_model_init plus\n"
          "Gaussian output projections): calibration tokens, Hessians (CPU forward), "
          "GPTQ of every\n"
          "matrix with the default recipe (the LQER record's), the LQER pass, packing with the\n"
          "best codec per section and with brotli-11/w24, lzma-9e and zstd-22 for every DATA\n"
          "section; then the records' layout (int8 per value, fp16 scales and passthrough, one\n"
          "stream, byte shuffle stride 2, brotli quality 11 window 22) on the same values; and on\n"
          "the sections of int values, their order-0 entropy, qc (codec 4) with its encode and\n"
          "decode speed on one thread, and brotli-11/w24 on the same bytes.\n"
          "\n"
          "  --layers N         physical layers (default 11)\n"
          "  --dim N            model width, a multiple of 8 (default 512; MLP hidden 4 x dim)\n"
          "  --vocab N          vocabulary (default 8192)\n"
          "  --calib-tokens N   calibration tokens, rows of min(N, 512) (default 2048)\n"
          "  --threads N        threads (default: the online CPUs)\n"
          "  --seed N           weights and tokens (default 1337)\n"
          "  --skip-gptq        no calibration: round-to-nearest everywhere\n"
          "  --weights FILE     a trained checkpoint or safetensors with arch.json metadata "
          "instead\n"
          "                     of random weights (--layers/--dim/--vocab are then ignored)\n"
          "  --passthrough-max N  fp16 for tensors of at most N elements (default 65536)\n"
          "  --check-codecs     also build a second artifact with zstd-22 for every section\n"
          "                     through pg_packer_build (quantizing again) and check that it\n"
          "                     matches the re-encoded figure byte for byte\n"
          "  --help             this text\n",
          PROG);
}

static int parse_int(const char *s, long lo, long hi, const char *what) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end || v < lo || v > hi) die("%s: %s is not in %ld..%ld", what, s, lo, hi);
  return (int)v;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && strcmp(s + n - k, suf) == 0;
}

int main(int argc, char **argv) {
  int layers = 11, dim = 512, vocab = 8192, calib_tokens = 2048, threads = 0, skip_gptq = 0,
      check = 0;
  uint64_t seed = 1337;
  const char *weights = NULL;
  long passthrough = 65536;
  static const struct option opts[] = {
      {"weights", required_argument, NULL, 'w'}, {"passthrough-max", required_argument, NULL, 'p'},
      {"layers", required_argument, NULL, 'l'},      {"dim", required_argument, NULL, 'd'},
      {"vocab", required_argument, NULL, 'v'},       {"calib-tokens", required_argument, NULL, 'c'},
      {"threads", required_argument, NULL, 't'},     {"seed", required_argument, NULL, 's'},
      {"skip-gptq", no_argument, NULL, 'g'},         {"check-codecs", no_argument, NULL, 'k'},
      {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'l': layers = parse_int(optarg, 1, 64, "--layers"); break;
    case 'd': dim = parse_int(optarg, 8, 8192, "--dim"); break;
    case 'v': vocab = parse_int(optarg, 2, 1 << 20, "--vocab"); break;
    case 'c': calib_tokens = parse_int(optarg, 1, 1 << 24, "--calib-tokens"); break;
    case 't': threads = parse_int(optarg, 0, 4096, "--threads"); break;
    case 's': seed = (uint64_t)parse_int(optarg, 0, 0x7fffffff, "--seed"); break;
    case 'g': skip_gptq = 1; break;
    case 'k': check = 1; break;
    case 'w': weights = optarg; break;
    case 'p': passthrough = parse_int(optarg, 0, 1 << 30, "--passthrough-max"); break;
    case 'h': usage(stdout); return EXIT_OK;
    default: usage(stderr); return EXIT_ERR;
    }
  }
  if (optind < argc) die("unexpected argument %s (see --help)", argv[optind]);
  if (dim % 8) die("--dim %d is not a multiple of 8 (8 heads)", dim);
  threads = pg_parallel_threads(threads);
  pg_err err;

  /* ---- the model ---- */
  double t0 = now();
  char json[512];
  snprintf(json, sizeof json,
           "{\"vocab_size\": %d, \"dim\": %d, \"layers\": %d, \"heads\": 8, \"kv_heads\": 4,"
           " \"mlp\": {\"hidden\": %d}, \"head\": {\"tied\": true}%s}",
           vocab, dim, layers, 4 * dim,
           layers < 2 ? ", \"structure\": {\"skips\": \"none\"}" : ""); /* no U-Net at 1 */
  pg_arch arch;
  pg_model *m;
  if (weights) {
    /* trained weights: the comparison of layouts is about real values */
    if (pg_model_load_checkpoint(&m, NULL, weights, &err) != PG_OK) die("%s", err.msg);
    arch = *pg_model_arch(m);
    layers = arch.layers;
    dim = arch.dim;
    vocab = arch.vocab_size;
  } else {
    if (pg_arch_parse(&arch, json, strlen(json), "(bench arch)", &err) != PG_OK)
      die("%s", err.msg);
    if (pg_model_create(&m, &arch, &err) != PG_OK) die("%s", err.msg);
    pg_model_init(m, seed);
    /* pg_model_init zeroes the output projections (a trainer's init); give them Gaussian weights
     * like the other matrices, or half the model would quantize to zeros and pack to nothing. */
    pg_rng g;
    pg_rng_seed(&g, seed ^ 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
      const pg_arch_tensor *t = pg_model_tensor(m, i);
      if (!ends_with(t->name, "attn.proj.weight") && !ends_with(t->name, "mlp.proj.weight"))
        continue;
      uint64_t n = pg_arch_tensor_numel(t), cols = n / t->shape[0];
      pg_real *w = pg_model_data(m, i);
      double sd = 1.0 / sqrt((double)cols);
      for (uint64_t k = 0; k < n; k++) w[k] = (pg_real)(sd * pg_rng_gauss(&g));
    }
  }
  uint64_t params = (uint64_t)pg_model_param_count(m);
  add_row(now() - t0, (int64_t)(4 * params),
          weights ? "model: loaded from the checkpoint "
                  : "model: pg_model_init + Gaussian projections "
                    "(fp32 bytes)");
  fprintf(stderr, "%s: %d x %d, vocab %d, %llu parameters, %d thread%s\n", PROG, layers, dim, vocab,
          (unsigned long long)params, threads, threads == 1 ? "" : "s");

  /* ---- calibration ---- */
  pg_calib_set cs;
  memset(&cs, 0, sizeof cs);
  pg_calib_hessians H;
  memset(&H, 0, sizeof H);
  int T = calib_tokens < 512 ? calib_tokens : 512;
  int nseq = calib_tokens / T;
  if (!skip_gptq) {
    t0 = now();
    cs.T = T;
    cs.nseq = nseq;
    cs.tokens = xmalloc((size_t)nseq * (size_t)T * sizeof *cs.tokens);
    pg_rng tr;
    pg_rng_seed(&tr, seed + 1);
    for (size_t k = 0; k < (size_t)nseq * (size_t)T; k++)
      cs.tokens[k] = (int32_t)(pg_rng_u64(&tr) % (uint64_t)vocab);
    cs.xxh64 = pg_calib_tokens_xxh64(cs.tokens, (size_t)nseq * (size_t)T);
    snprintf(cs.source, sizeof cs.source, "uniform random tokens (bench_pack, seed %llu)",
             (unsigned long long)seed + 1);
    add_row(now() - t0, (int64_t)nseq * T * 2,
            "calibration tokens: %d x %d uniform random (as u16)", nseq, T);

    t0 = now();
    pg_engine e = pg_engine_cpu(threads);
    calib_prog cp = {.t0 = t0, .last = t0};
    if (pg_calib_collect(&H, m, &e, &cs, 4, threads, on_calib, &cp, &err) != PG_OK)
      die("hessians: %s", err.msg);
    uint64_t hbytes = 0;
    for (size_t k = 0; k < H.nh; k++) hbytes += (uint64_t)H.H[k].n * H.H[k].n * 8;
    add_row(now() - t0, (int64_t)hbytes, "Hessians: pg_calib_collect, %zu of them (fp64 bytes)",
            H.nh);
  }

  /* ---- quantization (GPTQ, then LQER, in one pg_packer_quantize) ---- */
  pg_pack_recipe r = pg_pack_recipe_default();
  r.passthrough_max = (uint64_t)passthrough;
  r.nthreads = threads;
  if (skip_gptq) r.round_rule = PG_ROUND_RTN;
  pg_packer *p;
  if (pg_packer_create(&p, m, skip_gptq ? NULL : &H, &r, &err) != PG_OK) die("%s", err.msg);
  quant_prog qp;
  t0 = now();
  qp.t0 = qp.t_last_tensor = qp.last_print = t0;
  pg_packer_set_progress(p, on_tensor, &qp);
  if (pg_packer_quantize(p, 1.0, &err) != PG_OK) die("quantize: %s", err.msg);
  double t1 = now();
  /* The progress callback runs after each quantized tensor; LQER runs after the last one. */
  add_row(qp.t_last_tensor - t0, -1, "%s: every matrix, default recipe",
          skip_gptq ? "round-to-nearest (SDClip)" : "GPTQ prepare + quantize (SDClip)");
  size_t nq = 0, nlqer = 0;
  for (size_t i = 0; i < pg_packer_tensor_count(p); i++) {
    const pg_pack_report *rp = pg_packer_report(p, i);
    if (rp->route == PG_ROUTE_QUANT) nq++;
    if (rp->lqer_rank) {
      nlqer++;
      fprintf(stderr, "%s: LQER kept on %s (|W - Q|_F %.4g -> %.4g)\n", PROG, rp->name,
              rp->lqer_before, rp->lqer_after);
    }
  }
  add_row(t1 - qp.t_last_tensor, -1, "LQER pass: top %u, rank %u (kept on %zu)", r.lqer_top_k,
          r.lqer_rank, nlqer);
  fprintf(stderr, "%s: %zu matrices quantized, objective %.6g\n", PROG, nq,
          pg_packer_objective(p));

  /* ---- packing: best per section ---- */
  pg_pack_extras x;
  memset(&x, 0, sizeof x);
  x.writer = "bench_pack";
  if (!skip_gptq) {
    x.calib_source = cs.source;
    x.calib_xxh64 = cs.xxh64;
    x.calib_tokens = (uint64_t)nseq * (uint64_t)T;
  }
  x.have_seed = 1;
  x.seed = (int64_t)seed;
  fprintf(stderr, "%s: pack: best codec per section ...\n", PROG);
  t0 = now();
  uint8_t *art;
  size_t art_len;
  uint64_t counted;
  if (pg_packer_build(p, &x, 1.0, &art, &art_len, &counted, &err) != PG_OK)
    die("build: %s", err.msg);
  add_row(now() - t0, (int64_t)art_len, "pack: best codec per section (pg_packer_build)");

  pg_artifact *a;
  if (pg_artifact_open_mem(&a, art, art_len, "(bench artifact)", NULL, &err) != PG_OK)
    die("%s", err.msg);
  if (pg_artifact_check(a, &err) != PG_OK) die("%s", err.msg);
  uint64_t data_raw = 0, data_stored = 0;
  for (uint32_t s = 0; s < pg_artifact_section_count(a); s++) {
    const pg_section *sec = pg_artifact_section(a, s);
    if (sec->kind != PG_SEC_DATA) continue;
    char spec[32];
    pg_codec_spec_format(&sec->codec, spec, sizeof spec);
    fprintf(stderr, "%s:   DATA section %u: %llu -> %llu bytes (%s)\n", PROG, s,
            (unsigned long long)sec->raw_size, (unsigned long long)sec->stored_size, spec);
    data_raw += sec->raw_size;
    data_stored += sec->stored_size;
  }

  /* ---- packing: one codec for every DATA section ----
   * The same sections re-encoded: the artifact pgpack --codec SPEC writes differs from the best
   * one only in its DATA sections' stored bytes (META and TENSORS are brotli-11/w22 either way,
   * and file_size = 64 + 64·sections + Σ stored, spec/format.md §2). The sections are encoded
   * `threads` at a time, as pg_writer does. --check-codecs verifies the figure for zstd-22. */
  static const char *const SINGLE[] = {"brotli-11/w24", "lzma-9e", "zstd-22"};
  uint64_t single_bytes[3];
  for (size_t k = 0; k < 3; k++) {
    pg_codec_spec spec;
    if (pg_codec_spec_parse(&spec, SINGLE[k], &err) != PG_OK) die("%s", err.msg);
    fprintf(stderr, "%s: pack: %s for every DATA section ...\n", PROG, SINGLE[k]);
    t0 = now();
    uint64_t stored = encode_data_sections(a, &spec, threads);
    single_bytes[k] = art_len - data_stored + stored;
    add_row(now() - t0, (int64_t)single_bytes[k], "pack: %s, every DATA section", SINGLE[k]);
    if (single_bytes[k] < art_len)
      die("best (%zu bytes) is larger than %s alone (%llu bytes)", art_len, SINGLE[k],
          (unsigned long long)single_bytes[k]);
  }

  if (check) {
    /* The figure for zstd-22 against a real pg_packer_build with that codec (quantizing again:
     * the same inputs must give the same values, hence the same DATA raw bytes). */
    fprintf(stderr, "%s: check: quantize again and build with zstd-22 ...\n", PROG);
    pg_pack_recipe r2 = r;
    r2.codec_best = 0;
    if (pg_codec_spec_parse(&r2.codec, "zstd-22", &err) != PG_OK) die("%s", err.msg);
    pg_packer *p2;
    if (pg_packer_create(&p2, m, skip_gptq ? NULL : &H, &r2, &err) != PG_OK) die("%s", err.msg);
    if (pg_packer_quantize(p2, 1.0, &err) != PG_OK) die("quantize: %s", err.msg);
    uint8_t *b2;
    size_t l2;
    if (pg_packer_build(p2, &x, 1.0, &b2, &l2, NULL, &err) != PG_OK) die("build: %s", err.msg);
    if (l2 != single_bytes[2])
      die("check: pg_packer_build with zstd-22 gave %zu bytes, the re-encoded figure %llu", l2,
          (unsigned long long)single_bytes[2]);
    fprintf(stderr, "%s: check: zstd-22 artifact %zu bytes, as re-encoded\n", PROG, l2);
    free(b2);
    pg_packer_free(p2);
  }

  qcoder_rows(a);

  /* ---- the records' layout ---- */
  fprintf(stderr, "%s: records' layout: shuffle 2 + brotli-11/w22 ...\n", PROG);
  t0 = now();
  blob vals = {0};
  records_stream(a, m, &vals);
  size_t rec_n = 5 + vals.n;
  uint8_t *rec = xmalloc(rec_n);
  memcpy(rec, "BSHF\x02", 5); /* the records' _byte_shuffle header (spec/records.md §5.8) */
  pg_shuffle(vals.p, vals.n, 2, rec + 5);
  double t_stream = now() - t0;
  uint8_t *rb;
  size_t rlen;
  if (pg_codec_compress(PG_CODEC_BROTLI, 11, 22, rec, rec_n, &rb, &rlen, &err) != PG_OK)
    die("%s", err.msg);
  add_row(now() - t0, (int64_t)rlen,
          "records' layout: %zu raw bytes, shuffle 2, brotli-11/w22", vals.n);
  fprintf(stderr, "%s: records' stream %zu bytes (built in %.2f s) -> %zu\n", PROG, vals.n,
          t_stream, rlen);

  pgrp_rows(a, m);
  pgolf_layout_rows(p, &x, art_len);

  /* ---- the table ---- */
  printf("bench_pack: %s%d layers x %d, MLP %d, vocab %d; %llu parameters; "
         "%d thread%s; %s\n\n",
         weights ? "trained weights; " : "random weights; ", layers, dim, arch.mlp.hidden, vocab,
         (unsigned long long)params, threads, threads == 1 ? "" : "s",
         skip_gptq ? "no calibration (round-to-nearest)"
                   : "calibration: random tokens");
  printf("| %-70s | %9s | %12s |\n", "stage", "seconds", "bytes");
  printf("|%s|----------:|-------------:|\n",
         "------------------------------------------------------------------------");
  for (size_t i = 0; i < NROWS; i++) {
    char s[16] = "", b[24] = "";
    if (ROWS[i].secs >= 0) snprintf(s, sizeof s, "%.2f", ROWS[i].secs);
    if (ROWS[i].bytes >= 0) snprintf(b, sizeof b, "%lld", (long long)ROWS[i].bytes);
    printf("| %-70s | %9s | %12s |\n", ROWS[i].stage, s, b);
  }
  long long save = (long long)rlen - (long long)art_len;
  printf("\npgolf (best) %zu bytes vs the records' layout %zu bytes: %lld bytes saved (%.2f %%). "
         "pgolf's DATA sections: %llu raw -> %llu stored; META, TENSORS, header and table: %llu "
         "bytes (in pgolf's figure, not in the records').\n",
         art_len, rlen, save, 100.0 * (double)save / (double)rlen,
         (unsigned long long)data_raw, (unsigned long long)data_stored,
         (unsigned long long)(art_len - data_stored));

  free(rb);
  free(rec);
  free(vals.p);
  pg_artifact_free(a);
  free(art);
  pg_packer_free(p);
  pg_calib_hessians_free(&H);
  pg_calib_free(&cs);
  pg_model_free(m);
  return EXIT_OK;
}
