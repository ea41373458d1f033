/* fuzz_stmodel.c: libFuzzer target for the readers that carry a safetensors file into a model
 * (spec/load.md) and into a training run (spec/train.md §5). The first byte picks the reader, the
 * rest is the file:
 *   0  pg_model_load_safetensors, the arch from the file's "__metadata__";
 *   1  pg_model_load_safetensors with the fixed arch below;
 *   2  pg_model_load_checkpoint (train.* tensors skipped), the arch from the metadata;
 *   3  pg_trainer_resume into a trainer of the fixed configuration below, then one step.
 * A refusal must carry a status and a one-line message and leave no model; a loaded model must
 * hold finite weights, each equal to the file's tensor converted by pg_st_to_f32; a resumed
 * trainer must hold finite weights and take a step (or refuse it in one line). Every broken
 * invariant aborts. The file is handed over as a path: /proc/self/fd of a memfd (no disk).
 * Seeds: checkpoints of the fixed configuration written by pgtrain's checkpoint code, and the
 * same weights as a plain safetensors file. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_weights.h"
#include "pg_safetensors.h"
#include "pg_shard.h"
#include "pg_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fixed run of mode 3 (and the arch of mode 1). The shards live at a fixed path: the run's
 * identity, which a checkpoint must match, includes the shard pattern. */
#define FUZZ_DIR "/tmp/pgolf-fuzz-stmodel"
#define FUZZ_CFG                                                                                  \
  "{\"arch\": {\"vocab_size\": 16, \"dim\": 8, \"layers\": 2, \"heads\": 2, \"kv_heads\": 1, "   \
  "\"attention\": {\"gate_window\": 4}, \"embeddings\": {\"smear_window\": 4}, "                 \
  "\"mlp\": {\"hidden\": 16}}, "                                                                  \
  "\"data\": {\"train\": \"" FUZZ_DIR "/fuzz_train_*.bin\", \"seq_len\": 8, \"batch\": 2}, "    \
  "\"schedule\": {\"steps\": 4}, \"averaging\": {\"ema\": 0.9}}"

static pg_trainer *trainer;
static pg_train_cfg cfg;

static void check_line(const pg_err *err, int status) {
  if (status == PG_OK || err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

static void setup(void) {
  static int done;
  if (done) return;
  done = 1;
  pg_err err;
  if (pg_train_cfg_parse(&cfg, FUZZ_CFG, strlen(FUZZ_CFG), "fuzz", &err) != PG_OK) abort();
  uint16_t tok[600];
  for (int i = 0; i < 600; i++) tok[i] = (uint16_t)(i % 11 == 0 ? 1 : (i * 7) % 16);
  pg_shard_writer *w;
  if (pg_mkdir_p(FUZZ_DIR, &err) != PG_OK ||
      pg_shard_writer_open(&w, FUZZ_DIR, "fuzz_train_", 1000, &err) != PG_OK)
    abort();
  if (pg_shard_writer_append(w, tok, 600, &err) != PG_OK ||
      pg_shard_writer_finish(w, &err) != PG_OK)
    abort();
  pg_shard_writer_free(w);
  static pg_engine e;
  e = pg_engine_cpu(1);
  if (pg_trainer_create(&trainer, &cfg, &e, &err) != PG_OK) abort();
}

/* Every weight finite, and (when st is given) equal to its tensor in st converted to fp32. */
static void check_model(pg_model *m, const pg_st *st) {
  for (size_t i = 0; i < pg_model_tensor_count(m); i++) {
    const pg_arch_tensor *t = pg_model_tensor(m, i);
    const size_t n = (size_t)pg_arch_tensor_numel(t);
    const float *x = pg_model_data(m, i);
    for (size_t k = 0; k < n; k++)
      if (!isfinite(x[k])) abort();
    if (!st) continue;
    const pg_st_tensor *ti;
    if (pg_st_find(&ti, st, t->name, NULL) != PG_OK || ti->numel != n) abort();
    float *ref = malloc((n ? n : 1) * sizeof *ref);
    if (!ref) continue;
    if (pg_st_to_f32(ref, n, st, ti, NULL) != PG_OK || memcmp(ref, x, n * sizeof *ref)) abort();
    free(ref);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  setup();
  const int mode = data[0] % 4;
  data++, size--;
  int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) abort();
  for (size_t off = 0; off < size;) {
    ssize_t k = write(fd, data + off, size - off);
    if (k <= 0) abort();
    off += (size_t)k;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  pg_err err;
  int rc;
  if (mode < 3) {
    pg_model *m = NULL;
    if (mode == 0) rc = pg_model_load_safetensors(&m, NULL, path, &err);
    else if (mode == 1) rc = pg_model_load_safetensors(&m, &cfg.arch, path, &err);
    else rc = pg_model_load_checkpoint(&m, NULL, path, &err);
    if (rc != PG_OK) {
      if (m) abort();
      check_line(&err, rc);
    } else {
      pg_st *st = NULL;
      if (pg_st_open_mem(&st, data, size, "fuzz", &err) != PG_OK) abort();
      check_model(m, st);
      pg_st_free(st);
      pg_model_free(m);
    }
  } else {
    rc = pg_trainer_resume(trainer, path, &err);
    if (rc != PG_OK) {
      check_line(&err, rc);
    } else {
      pg_model *m = NULL;
      if (pg_model_create(&m, &cfg.arch, &err) == PG_OK &&
          pg_trainer_export(trainer, m, &err) == PG_OK)
        check_model(m, NULL);
      pg_model_free(m);
      check_model(pg_trainer_model(trainer), NULL);
      pg_train_step_info info;
      rc = pg_trainer_step(trainer, &info, &err);
      if (rc != PG_OK) check_line(&err, rc);
      else if (!isfinite(info.loss)) abort();
    }
  }
  close(fd);
  return 0;
}
