/* bench_model: CPU throughput of the model (src/model/pg_model.c over the CPU reference ops,
 * src/engine/pg_ops.c): tokens/s of the inference forward (a tape that does not record) and of
 * forward + backward (a recording tape, gradients into the model), for a small model and for the
 * naive baseline of spec/examples/baseline.json. With --matmul-only it times the matmul op alone
 * instead: GFLOP/s of the library's blocked kernels against the first, naive loops
 * (tests/pgmm_naive.h) on the baseline's matmul shapes, checking that both give the same bits.
 * With --attention-only it times the attention forward alone on the evaluation's shape, and prints
 * a hash of its output bits (two builds that print the same hash computed the same bits).
 *
 * Exit status: 0 ok, 2 on any error. Progress on stderr; the table on stdout. */
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pg_arch.h"
#include "pg_model.h"
#include "pg_ops.h"
#include "pg_rng.h"
#include "pg_tape.h"
#include "pg_threads.h"
#include "pgmm_naive.h" /* the naive matmul, also the reference of tests/test_ops.c */

static const char *PROG = "bench_model";
#include "bench_util.h"

/* ---- the models ------------------------------------------------------------------------- */

/* spec/examples/baseline.json (the naive baseline: 9 × 512, GQA 8/4, MLP 1024 relu², tied). */
static const char BASELINE_JSON[] =
    "{\"vocab_size\": 1024, \"dim\": 512, \"layers\": 9, \"heads\": 8, \"kv_heads\": 4,"
    " \"head_dim\": 64,"
    " \"block\": {\"ln_scale\": \"none\", \"resid_mix\": true, \"attn_scale\": true,"
    " \"mlp_scale\": true},"
    " \"attention\": {\"qk_norm\": true, \"q_gain\": 1.5, \"rope_dims\": 64,"
    " \"rope_base\": 10000.0, \"rope_ntk_len\": 0, \"xsa_layers\": [], \"gate\": \"none\"},"
    " \"mlp\": {\"hidden\": 1024, \"act\": \"relu2\"},"
    " \"structure\": {\"skips\": \"plain\", \"encoder\": [0, 1, 2, 3],"
    " \"decoder\": [4, 5, 6, 7, 8], \"parallel\": \"none\"},"
    " \"head\": {\"final_norm\": true, \"tied\": true, \"softcap\": 30.0}}";

/* The same family scaled down: 4 × 128, 4 heads / 2 KV heads of 32, MLP 256. */
static const char SMALL_JSON[] =
    "{\"vocab_size\": 1024, \"dim\": 128, \"layers\": 4, \"heads\": 4, \"kv_heads\": 2,"
    " \"head_dim\": 32, \"attention\": {\"rope_dims\": 32}, \"mlp\": {\"hidden\": 256}}";

typedef struct spec {
  const char *name, *json;
  int T, T_quick; /* tokens per pass: one row of T */
} spec;

typedef struct row {
  const char *model, *pass;
  uint64_t params;
  int tokens, threads;
  double secs; /* best pass */
} row;

/* Best-of-reps seconds of one pass (after one untimed warm-up). grad: forward + backward. */
static double time_model(const spec *s, int T, int grad, int threads, int reps, uint64_t *params) {
  pg_arch a;
  pg_err err;
  if (pg_arch_parse(&a, s->json, strlen(s->json), s->name, &err) != PG_OK) die("%s", err.msg);
  pg_model *m;
  if (pg_model_create(&m, &a, &err) != PG_OK) die("%s", err.msg);
  pg_model_init(m, 1234);
  *params = (uint64_t)pg_model_param_count(m);
  if (grad && pg_model_enable_grads(m, &err) != PG_OK) die("%s", err.msg);
  pg_engine e = pg_engine_cpu(threads);
  pg_tape *tp;
  if (pg_tape_create(&tp, &e, grad) != PG_OK) die("cannot create a tape");
  int32_t *ids = xmalloc((size_t)T * sizeof *ids), *tg = xmalloc((size_t)T * sizeof *tg);
  double *nll = xmalloc((size_t)T * sizeof *nll);
  pg_rng g;
  pg_rng_seed(&g, 42);
  for (int t = 0; t < T; t++) {
    ids[t] = (int32_t)(pg_rng_u64(&g) % (uint64_t)a.vocab_size);
    tg[t] = (int32_t)(pg_rng_u64(&g) % (uint64_t)a.vocab_size);
  }
  pg_batch b = {.B = 1, .T = T, .ids = ids, .targets = tg};
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    if (grad) pg_model_zero_grads(m);
    double t0 = now();
    if (pg_model_forward(m, tp, &b, NULL, nll, NULL, &err) != PG_OK) die("forward: %s", err.msg);
    if (grad && pg_model_backward(m, tp, &err) != PG_OK) die("backward: %s", err.msg);
    double dt = now() - t0;
    fprintf(stderr, "%s: %s %s T=%d: %s %.3f s\n", PROG, s->name, grad ? "fwd+bwd" : "fwd", T,
            r ? "run" : "warm-up", dt);
    if (r > 0 && dt < best) best = dt;
  }
  double mean = 0;
  for (int t = 0; t < T; t++) mean += nll[t] / T;
  if (!(mean > 0 && mean < 100)) die("%s: implausible mean NLL %g", s->name, mean);
  pg_tape_free(tp);
  pg_model_free(m);
  free(ids);
  free(tg);
  free(nll);
  return best;
}

/* ---- the matmul alone -------------------------------------------------------------------- */

typedef struct mmrow {
  const char *what;
  int M, N, K;
  double naive_fwd, lib_fwd, naive_bwd, lib_bwd; /* seconds */
} mmrow;

static float *randv(pg_rng *g, size_t n) {
  float *p = xmalloc(n * sizeof *p);
  for (size_t i = 0; i < n; i++) p[i] = (float)pg_rng_gauss(g);
  return p;
}

static double best_of(int reps, void (*fn)(void *), void *ctx) {
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t0 = now();
    fn(ctx);
    double dt = now() - t0;
    if (r > 0 && dt < best) best = dt;
  }
  return best;
}

typedef struct mmrun {
  pg_engine e;
  int threads, M, N, K;
  float *x, *w, *dy, *y, *dx, *dw;
} mmrun;

static void run_naive_fwd(void *p) {
  mmrun *c = p;
  pgmm_naive_fwd(c->threads, c->y, c->x, c->w, c->M, c->N, c->K);
}
static void run_lib_fwd(void *p) {
  mmrun *c = p;
  c->e.ops.matmul_fwd(&c->e.ops, c->y, c->x, c->w, c->M, c->N, c->K);
}
static void run_naive_bwd(void *p) {
  mmrun *c = p;
  pgmm_naive_bwd(c->threads, c->dx, c->dw, c->dy, c->x, c->w, c->M, c->N, c->K);
}
static void run_lib_bwd(void *p) {
  mmrun *c = p;
  c->e.ops.matmul_bwd(&c->e.ops, c->dx, c->dw, c->dy, c->x, c->w, c->M, c->N, c->K);
}

static void time_matmul(mmrow *r, int threads, int reps) {
  pg_rng g;
  pg_rng_seed(&g, 7);
  size_t M = (size_t)r->M, N = (size_t)r->N, K = (size_t)r->K;
  mmrun c = {.e = pg_engine_cpu(threads), .threads = threads, .M = r->M, .N = r->N, .K = r->K};
  c.x = randv(&g, M * K), c.w = randv(&g, N * K), c.dy = randv(&g, M * N);
  c.y = xmalloc(M * N * sizeof *c.y);
  c.dx = xmalloc(M * K * sizeof *c.dx), c.dw = xmalloc(N * K * sizeof *c.dw);
  float *y0 = xmalloc(M * N * sizeof *y0), *dx0 = xmalloc(M * K * sizeof *dx0),
        *dw0 = xmalloc(N * K * sizeof *dw0);
  /* Same bits: one forward and one backward (onto zeros) each way. */
  run_naive_fwd(&c), memcpy(y0, c.y, M * N * sizeof *y0);
  memset(c.dx, 0, M * K * sizeof *c.dx), memset(c.dw, 0, N * K * sizeof *c.dw);
  run_naive_bwd(&c), memcpy(dx0, c.dx, M * K * sizeof *dx0), memcpy(dw0, c.dw, N * K * sizeof *dw0);
  run_lib_fwd(&c);
  memset(c.dx, 0, M * K * sizeof *c.dx), memset(c.dw, 0, N * K * sizeof *c.dw);
  run_lib_bwd(&c);
  if (memcmp(y0, c.y, M * N * sizeof *y0) || memcmp(dx0, c.dx, M * K * sizeof *dx0) ||
      memcmp(dw0, c.dw, N * K * sizeof *dw0))
    die("%s %dx%dx%d: the library's matmul differs from the naive one", r->what, r->M, r->N, r->K);
  fprintf(stderr, "%s: matmul %s M=%d N=%d K=%d (same bits)\n", PROG, r->what, r->M, r->N, r->K);
  r->naive_fwd = best_of(reps, run_naive_fwd, &c);
  r->lib_fwd = best_of(reps, run_lib_fwd, &c);
  r->naive_bwd = best_of(reps, run_naive_bwd, &c);
  r->lib_bwd = best_of(reps, run_lib_bwd, &c);
  free(c.x), free(c.w), free(c.dy), free(c.y), free(c.dx), free(c.dw);
  free(y0), free(dx0), free(dw0);
}

/* ---- the attention forward alone ---------------------------------------------------------- */

typedef struct atrun {
  pg_engine e;
  int T, H, Hkv, d;
  float *q, *k, *v, *y;
  const int32_t *seg;
} atrun;

/* Best-of-reps CPU seconds of the process (all its threads): on a shared machine, time spent
 * waiting for a core does not count, unlike the wall clock. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double best_cpu_of(int reps, void (*fn)(void *), void *ctx) {
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t0 = cpu_now();
    fn(ctx);
    double dt = cpu_now() - t0;
    if (r > 0 && dt < best) best = dt;
  }
  return best;
}

static void run_attention(void *p) {
  atrun *c = p;
  c->e.ops.attention_fwd(&c->e.ops, c->y, c->q, c->k, c->v, c->seg, 1, c->T, c->H, c->Hkv, c->d,
                         0.125f);
}

/* FNV-1a over the bytes of the output: the same bits give the same hash. */
static uint64_t fnv64(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

/* The baseline's attention (8 query / 4 KV heads of 64) over T tokens, without and with a
 * document mask (documents of 300 tokens); q and k unit-variance like QK-normed vectors. */
static void time_attention(int T, int threads, int reps, int json) {
  const int H = 8, Hkv = 4, d = 64;
  pg_rng g;
  pg_rng_seed(&g, 11);
  size_t nq = (size_t)T * H * d, nk = (size_t)T * Hkv * d;
  atrun c = {.e = pg_engine_cpu(threads), .T = T, .H = H, .Hkv = Hkv, .d = d};
  c.q = randv(&g, nq), c.k = randv(&g, nk), c.v = randv(&g, nk), c.y = xmalloc(nq * sizeof *c.y);
  int32_t *seg = xmalloc((size_t)T * sizeof *seg);
  for (int t = 0; t < T; t++) seg[t] = t / 300;
  /* 4·d flops per allowed (query, head, key): the logits' and the values' multiply-adds */
  double pairs[2] = {(double)T * (T + 1) / 2, 0};
  for (int t = 0; t < T; t++) pairs[1] += t % 300 + 1;
  if (!json)
    printf("attention forward alone, T %d, %d/%d heads of %d, %d thread%s, best of %d;"
           " GFLOP/s = 4·d·H·(allowed keys) / s; cpu s: CPU time of all threads\n\n"
           "| %-9s | %9s | %9s | %9s | %-18s |\n"
           "|-----------|----------:|----------:|----------:|--------------------|\n",
           T, H, Hkv, d, threads, threads == 1 ? "" : "s", reps, "mask", "s", "GFLOP/s", "cpu s",
           "output bits (FNV)");
  else
    printf("[");
  for (int masked = 0; masked <= 1; masked++) {
    c.seg = masked ? seg : NULL;
    double s = best_of(reps, run_attention, &c), cs = best_cpu_of(reps, run_attention, &c);
    double fl = 4.0 * d * H * pairs[masked];
    uint64_t h = fnv64(c.y, nq * sizeof *c.y);
    if (json)
      printf("%s\n {\"T\": %d, \"mask\": \"%s\", \"threads\": %d, \"seconds\": %.6f, "
             "\"cpu_seconds\": %.6f, \"bits\": \"%016llx\"}",
             masked ? "," : "", T, masked ? "documents" : "causal", threads, s, cs,
             (unsigned long long)h);
    else
      printf("| %-9s | %9.4f | %9.2f | %9.4f | %016llx   |\n", masked ? "documents" : "causal",
             s, fl / s / 1e9, cs, (unsigned long long)h);
  }
  if (json) printf("\n]\n");
  free(c.q), free(c.k), free(c.v), free(c.y), free(seg);
}

/* ---- main -------------------------------------------------------------------------------- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [--threads N] [--reps N] [--quick] [--json] [--matmul-only]\n"
          "                   [--attention-only]\n"
          "\n"
          "CPU tokens/s of the model's inference forward and of forward + backward, for a small\n"
          "model (4 x 128, 4/2 heads, vocab 1024, 256 tokens) and the naive baseline of\n"
          "spec/examples/baseline.json (9 x 512, 8/4 heads, MLP 1024 relu^2, vocab 1024, 1024\n"
          "tokens). One batch row of T tokens per pass; weights from pg_model_init, random ids.\n"
          "\n"
          "  --threads N     threads per op (default: the online CPUs)\n"
          "  --reps N        timed passes per row, best kept, after one untimed warm-up "
          "(default 3)\n"
          "  --quick         fewer tokens (small 64, baseline 128)\n"
          "  --json          the rows as a JSON array instead of the table\n"
          "  --matmul-only   time the matmul op alone on the baseline's shapes (M = tokens):\n"
          "                  GFLOP/s of the naive loops vs the library's kernels, same bits\n"
          "  --attention-only  time the attention forward alone on the baseline's heads\n"
          "                  (8/4 of 64) at 2048 tokens (512 with --quick), causal and with\n"
          "                  documents of 300 tokens; a hash of the output bits\n"
          "  --help          this text\n",
          PROG);
}

int main(int argc, char **argv) {
  int threads = 0, reps = 3, quick = 0, json = 0, mm_only = 0, att_only = 0;
  static const struct option opts[] = {
      {"threads", required_argument, NULL, 't'}, {"reps", required_argument, NULL, 'r'},
      {"quick", no_argument, NULL, 'q'},         {"json", no_argument, NULL, 'j'},
      {"matmul-only", no_argument, NULL, 'm'},   {"help", no_argument, NULL, 'h'},
      {"attention-only", no_argument, NULL, 'a'},
      {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 't': threads = atoi(optarg); break;
    case 'r': reps = atoi(optarg); break;
    case 'q': quick = 1; break;
    case 'j': json = 1; break;
    case 'm': mm_only = 1; break;
    case 'a': att_only = 1; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: usage(stderr); return EXIT_ERR;
    }
  }
  if (optind < argc) die("unexpected argument %s (see --help)", argv[optind]);
  if (reps < 1 || threads < 0) die("bad --reps or --threads (see --help)");
  threads = pg_parallel_threads(threads);
  fprintf(stderr, "%s: %d thread%s\n", PROG, threads, threads == 1 ? "" : "s");

  if (att_only) {
    time_attention(quick ? 512 : 2048, threads, reps, json);
    return EXIT_OK;
  }
  if (mm_only) {
    const int T = quick ? 256 : 1024;
    mmrow rows[] = {
        {"attn.c_q / proj", T, 512, 512, 0, 0, 0, 0},
        {"attn.c_k / c_v", T, 256, 512, 0, 0, 0, 0},
        {"mlp.fc / head", T, 1024, 512, 0, 0, 0, 0},
        {"mlp.proj", T, 512, 1024, 0, 0, 0, 0},
    };
    const size_t n = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < n; i++) time_matmul(&rows[i], threads, reps);
    if (json) {
      printf("[");
      for (size_t i = 0; i < n; i++) {
        const mmrow *r = &rows[i];
        printf("%s\n {\"shape\": \"%s\", \"M\": %d, \"N\": %d, \"K\": %d, \"threads\": %d, "
               "\"naive_fwd_s\": %.6f, \"fwd_s\": %.6f, \"naive_bwd_s\": %.6f, \"bwd_s\": %.6f}",
               i ? "," : "", r->what, r->M, r->N, r->K, threads, r->naive_fwd, r->lib_fwd,
               r->naive_bwd, r->lib_bwd);
      }
      printf("\n]\n");
      return EXIT_OK;
    }
    printf("matmul alone, %d thread%s, best of %d; GFLOP/s = 2MNK (forward) or 4MNK (backward,"
           " dx and dW) / s\n\n",
           threads, threads == 1 ? "" : "s", reps);
    printf("| %-16s | %5s | %5s | %5s | %-8s | %9s | %9s | %9s | %9s | %7s |\n", "shape", "M",
           "N", "K", "pass", "naive s", "naive GF", "now s", "now GF", "speedup");
    printf("|------------------|------:|------:|------:|----------|----------:|----------:|"
           "----------:|----------:|--------:|\n");
    for (size_t i = 0; i < n; i++) {
      const mmrow *r = &rows[i];
      double fl = 2.0 * r->M * r->N * r->K;
      printf("| %-16s | %5d | %5d | %5d | %-8s | %9.4f | %9.2f | %9.4f | %9.2f | %6.1fx |\n",
             r->what, r->M, r->N, r->K, "forward", r->naive_fwd, fl / r->naive_fwd / 1e9,
             r->lib_fwd, fl / r->lib_fwd / 1e9, r->naive_fwd / r->lib_fwd);
      printf("| %-16s | %5d | %5d | %5d | %-8s | %9.4f | %9.2f | %9.4f | %9.2f | %6.1fx |\n",
             r->what, r->M, r->N, r->K, "backward", r->naive_bwd, 2 * fl / r->naive_bwd / 1e9,
             r->lib_bwd, 2 * fl / r->lib_bwd / 1e9, r->naive_bwd / r->lib_bwd);
    }
    return EXIT_OK;
  }

  const spec specs[] = {{"small", SMALL_JSON, 256, 64}, {"baseline", BASELINE_JSON, 1024, 128}};
  row rows[4];
  size_t n = 0;
  for (size_t i = 0; i < 2; i++)
    for (int grad = 0; grad <= 1; grad++) {
      row *r = &rows[n++];
      r->model = specs[i].name;
      r->pass = grad ? "fwd+bwd" : "forward";
      r->tokens = quick ? specs[i].T_quick : specs[i].T;
      r->threads = threads;
      r->secs = time_model(&specs[i], r->tokens, grad, threads, reps, &r->params);
    }
  if (json) {
    printf("[");
    for (size_t i = 0; i < n; i++)
      printf("%s\n {\"model\": \"%s\", \"params\": %llu, \"pass\": \"%s\", \"tokens\": %d, "
             "\"threads\": %d, \"seconds\": %.6f, \"tokens_per_s\": %.2f}",
             i ? "," : "", rows[i].model, (unsigned long long)rows[i].params, rows[i].pass,
             rows[i].tokens, rows[i].threads, rows[i].secs, rows[i].tokens / rows[i].secs);
    printf("\n]\n");
    return EXIT_OK;
  }
  printf("model on the CPU ops, %d thread%s, one row of T tokens per pass, best of %d\n\n", threads,
         threads == 1 ? "" : "s", reps);
  printf("| %-8s | %10s | %-8s | %6s | %7s | %10s | %10s |\n", "model", "params", "pass",
         "tokens", "threads", "s / pass", "tokens/s");
  printf("|----------|-----------:|----------|-------:|--------:|-----------:|-----------:|\n");
  for (size_t i = 0; i < n; i++)
    printf("| %-8s | %10llu | %-8s | %6d | %7d | %10.3f | %10.1f |\n", rows[i].model,
           (unsigned long long)rows[i].params, rows[i].pass, rows[i].tokens, rows[i].threads,
           rows[i].secs, rows[i].tokens / rows[i].secs);
  return EXIT_OK;
}
