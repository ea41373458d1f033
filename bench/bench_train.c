/* bench_train: CPU training throughput of a run configuration (default: the main job's
 * spec/examples/train-demo.json) on synthetic shards: tokens/s of whole steps, and the share of
 * the forward + backward, the Muon steps and the rest. Prints a markdown table.
 *
 *   bench_train [--config FILE] [--steps N] [--threads N] [--loops on|off] */
#include <getopt.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *PROG = "bench_train";
#include "bench_util.h"
#include "pg_muon.h"
#include "pg_ops.h"
#include "pg_shard.h"
#include "pg_threads.h"
#include "pg_train.h"

static void write_shards(const char *dir, uint32_t vocab) {
  pg_shard_writer *w;
  pg_err e;
  if (pg_shard_writer_open(&w, dir, "fineweb_train_", 1u << 22, &e)) die("%s", e.msg);
  uint16_t buf[4096];
  uint32_t x = 2463534242u;
  for (int k = 0; k < 64; k++) {
    for (int i = 0; i < 4096; i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
      buf[i] = (uint16_t)(i % 97 == 0 ? 1 : 2 + x % (vocab - 2));
    }
    if (pg_shard_writer_append(w, buf, 4096, &e)) die("%s", e.msg);
  }
  if (pg_shard_writer_finish(w, &e)) die("%s", e.msg);
  pg_shard_writer_free(w);
}

int main(int argc, char **argv) {
  const char *config = "spec/examples/train-demo.json";
  int steps = 10, threads = 0;
  static const struct option lo[] = {{"config", required_argument, 0, 'c'},
                                     {"steps", required_argument, 0, 's'},
                                     {"threads", required_argument, 0, 't'},
                                     {"help", no_argument, 0, 'h'},
                                     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
    switch (c) {
    case 'c': config = optarg; break;
    case 's': steps = atoi(optarg); break;
    case 't': threads = atoi(optarg); break;
    case 'h':
      printf("usage: bench_train [--config RUN.json] [--steps N] [--threads N]\n");
      return 0;
    default: return EXIT_ERR;
    }
  }
  if (steps < 2) die("--steps must be at least 2");
  pg_train_cfg cfg;
  pg_err e;
  /* the run's arch and optimizers; the data are synthetic shards in a temporary folder */
  char dir[] = "/tmp/bench_train.XXXXXX";
  if (!mkdtemp(dir)) die("cannot make a temporary folder");
  {
    FILE *f = fopen(config, "rb");
    if (!f) die("%s: cannot open (run from the repository root, or pass --config)", config);
    fclose(f);
  }
  if (pg_train_cfg_load(&cfg, config, &e)) die("%s", e.msg);
  write_shards(dir, (uint32_t)cfg.arch.vocab_size);
  snprintf(cfg.train, sizeof cfg.train, "%s/fineweb_train_*.bin", dir);
  cfg.val[0] = 0;
  cfg.steps = (uint64_t)steps + 1;
  pg_engine ops = pg_engine_cpu(threads);
  pg_trainer *t;
  if (pg_trainer_create(&t, &cfg, &ops, &e)) die("%s", e.msg);
  pg_train_step_info info;
  if (pg_trainer_step(t, &info, &e)) die("%s", e.msg); /* warm the arena */
  double t0 = now();
  for (int s = 0; s < steps; s++)
    if (pg_trainer_step(t, &info, &e)) die("%s", e.msg);
  double per = (now() - t0) / steps;
  uint64_t tok = (uint64_t)cfg.batch * (uint64_t)cfg.seq_len;

  /* the Muon steps alone, on the same matrices */
  pg_model *m = pg_trainer_model(t);
  double muon = 0;
  size_t nmat = 0, scratch = 0;
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const pg_arch_tensor *a = pg_model_tensor(m, i);
    if (a->ndim != 2 || strncmp(a->name, "blocks.", 7) || strstr(a->name, "gate")) continue;
    size_t s = pg_muon_scratch_floats((int)a->shape[0], (int)a->shape[1]);
    if (s > scratch) scratch = s;
  }
  float *sc = xmalloc(scratch * sizeof *sc);
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const pg_arch_tensor *a = pg_model_tensor(m, i);
    if (a->ndim != 2 || strncmp(a->name, "blocks.", 7) || strstr(a->name, "gate")) continue;
    size_t n = (size_t)(a->shape[0] * a->shape[1]);
    float *p = xmalloc(n * sizeof *p), *g = xmalloc(n * sizeof *g), *b = xmalloc(n * sizeof *b);
    memcpy(p, pg_model_data(m, i), n * sizeof *p);
    for (size_t k = 0; k < n; k++) g[k] = (float)((double)((k * 2654435761u) % 1000) / 1000 - 0.5);
    memset(b, 0, n * sizeof *b);
    double s0 = now();
    pg_muon_step(p, g, b, (int)a->shape[0], (int)a->shape[1], &cfg.muon, 0.01, 0.95, sc, threads);
    muon += now() - s0;
    nmat++;
    free(p);
    free(g);
    free(b);
  }
  free(sc);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "%s: could not remove %s\n", PROG, dir);

  const pg_arch *a = &cfg.arch;
  printf("| model | threads | tokens/step | s/step | tokens/s | Muon (%zu matrices) s/step |\n",
         nmat);
  printf("|---|--:|--:|--:|--:|--:|\n");
  printf("| %d layers (%d virtual), d %d, V %d | %d | %llu | %.3f | %.0f | %.3f |\n", a->layers,
         pg_arch_virtual_layers(a), a->dim, a->vocab_size, pg_parallel_threads(threads),
         (unsigned long long)tok, per, (double)tok / per, muon);
  pg_trainer_free(t);
  return 0;
}
