/* pg_packjob.c: one packing job (see pg_packjob.h): weights → calibration → Hessians →
 * quantization (fitted to the budget or not) → bytes → the written artifact and its account. */
#include "pg_packjob.h"

#include <stdlib.h>
#include <string.h>

#include "pg_arch.h"
#include "pg_io.h"
#include "pg_ops.h"
#include "pg_threads.h"
#include "pg_weights.h"

static const char *base_name(const char *p) {
  const char *s = strrchr(p, '/');
  return s ? s + 1 : p;
}

static void step(pg_packjob *j, int which, int done) {
  if (j->cfg->on_step) j->cfg->on_step(j->cfg->ctx, which, done, j);
}

/* The weights as a model, with the record they come from (it travels into the artifact,
 * spec/format.md §3). */
static int load_weights(pg_packjob *j, pg_err *err) {
  const pg_packjob_cfg *c = j->cfg;
  int art = 0;
  PG_TRY(pg_weights_is_artifact(c->weights, &art, err));
  /* --arch with weights that record their own arch must agree with it (spec/load.md §1) */
  PG_TRY(pg_weights_load(&j->model, &j->source, c->weights, art, c->arch, err));
  j->record = pg_weights_meta(c->weights, j->source, "provenance.record");
  j->record_protocol = pg_weights_meta(c->weights, j->source, "provenance.protocol");
  return pg_model_check_finite(j->model, c->weights, err);
}

static int read_extras(pg_packjob *j, pg_err *err) {
  const pg_packjob_cfg *c = j->cfg;
  if (c->tokenizer)
    PG_TRY(pg_file_read_all(c->tokenizer, &j->tokenizer_bytes, &j->tokenizer_len,
                            PG_MAX_SECTION_RAW, err));
  if (!c->ncode) return PG_OK;
  j->code_bytes = calloc(c->ncode, sizeof *j->code_bytes);
  j->codes = calloc(c->ncode, sizeof *j->codes);
  if (!j->code_bytes || !j->codes)
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the code list");
  for (size_t i = 0; i < c->ncode; i++) {
    size_t n = 0;
    PG_TRY(pg_file_read_all(c->code[i], &j->code_bytes[i], &n, PG_MAX_SECTION_RAW / 2, err));
    j->codes[i] = (pg_pack_code){.name = base_name(c->code[i]), .bytes = j->code_bytes[i],
                                 .len = n};
  }
  return PG_OK;
}

int pg_packjob_run(pg_packjob *j, const pg_packjob_cfg *c, pg_err *err) {
  memset(j, 0, sizeof *j);
  j->cfg = c;
  j->mu = 1.0;
  j->budget = c->budget ? c->budget : PG_DEFAULT_BUDGET;
  const int no_calib = !strcmp(c->calib, "none"), self = !strcmp(c->calib, "self");
  /* the engine: the one place this job chooses it */
  pg_engine cpu = pg_engine_cpu(c->threads);
  pg_engine *e = c->engine ? c->engine : &cpu;
  j->threads = e->info.threads;
  snprintf(j->engine_name, sizeof j->engine_name, "%s", e->info.name);
  pg_pack_recipe r = c->recipe;
  r.nthreads = c->threads;

  /* 1. weights, tokenizer and code */
  step(j, PG_PACKJOB_WEIGHTS, 0);
  PG_TRY(load_weights(j, err));
  step(j, PG_PACKJOB_WEIGHTS, 1);
  PG_TRY(read_extras(j, err));

  /* 2. calibration */
  if (!no_calib) {
    const pg_arch *arch = pg_model_arch(j->model);
    step(j, PG_PACKJOB_CALIB, 0);
    if (self)
      PG_TRY(pg_calib_self(&j->calib, j->model, e, c->calib_seqs, c->calib_len, c->temperature,
                           c->seed, c->calib_batch, c->progress, c->ctx, err));
    else
      PG_TRY(pg_calib_from_shards(&j->calib, c->calib, c->val, c->calib_seqs, c->calib_len,
                                  (uint32_t)arch->vocab_size, err));
    step(j, PG_PACKJOB_CALIB, 1);
    step(j, PG_PACKJOB_HESSIANS, 0);
    PG_TRY(pg_calib_collect(&j->hessians, j->model, e, &j->calib, c->calib_batch, c->threads,
                            c->progress, c->ctx, err));
    step(j, PG_PACKJOB_HESSIANS, 1);
  }

  /* 3. quantize (and fit) */
  PG_TRY(pg_packer_create(&j->packer, j->model, no_calib ? NULL : &j->hessians, &r, err));
  pg_packer_set_progress(j->packer, c->on_tensor, c->ctx);
  pg_pack_extras x = {.writer = c->writer ? c->writer : "pgpack " PG_VERSION,
                      .tokenizer = j->tokenizer_bytes,
                      .tokenizer_len = j->tokenizer_len,
                      .tokenizer_name = c->tokenizer ? base_name(c->tokenizer) : NULL,
                      .code = j->codes,
                      .ncode = c->ncode,
                      .calib_source = no_calib ? NULL : j->calib.source,
                      .calib_xxh64 = j->calib.xxh64,
                      .calib_tokens = j->hessians.tokens,
                      .have_seed = self,
                      .seed = (int64_t)c->seed,
                      .record = j->record,
                      .record_protocol = j->record_protocol,
                      .budget = j->budget,
                      .count_tokenizer = c->count_tokenizer};
  if (c->budget && c->fit_method == PG_FIT_LOSS) {
    step(j, PG_PACKJOB_FIT, 0);
    pg_fit_opts fo = {.budget = c->budget, .tolerance = c->fit_tolerance,
                      .calib = no_calib ? NULL : &j->calib, .probe_seqs = c->fit_probe_seqs,
                      .batch = c->calib_batch, .measure_max = c->fit_measure,
                      .on_progress = c->on_fit_progress, .on_point = c->on_point,
                      .ctx = c->ctx};
    /* the measured losses of the choice: training rows after the calibration rows (held out
     * from the sensitivities and the Hessians); shards too short for them, or self
     * calibration: the calibration rows */
    pg_calib_set held = {0};
    if (!no_calib && !self && c->fit_measure >= 0) {
      const int nm = c->fit_measure_seqs > 0 ? c->fit_measure_seqs : 256;
      pg_err e2 = {0};
      int rc = pg_calib_from_shards(&j->measure, c->calib, c->val, j->calib.nseq + nm,
                                    j->calib.T, (uint32_t)pg_model_arch(j->model)->vocab_size,
                                    &e2);
      if (rc == PG_OK) {
        held = (pg_calib_set){.nseq = nm, .T = j->calib.T,
                              .tokens = j->measure.tokens +
                                        (size_t)j->calib.nseq * (size_t)j->calib.T};
        fo.measure = &held;
      } else if (rc != PG_E_ARG) {
        if (err) *err = e2;
        return rc;
      }
    }
    int rc = pg_packer_fit_loss(j->packer, &x, &fo, &j->fit, &j->bytes, &j->len, err);
    j->have_fit = rc == PG_OK || rc == PG_E_LIMIT;
    if (rc) return rc;
    j->counted = j->fit.points[j->fit.chosen].counted;
    if (j->fit.points[j->fit.chosen].kfit) j->mu = j->fit.points[j->fit.chosen].mu;
    step(j, PG_PACKJOB_FIT, 1);
  } else if (c->budget) {
    step(j, PG_PACKJOB_FIT, 0);
    pg_pack_fit_opts fo = {.budget = c->budget, .tolerance = c->fit_tolerance,
                           .fit_cat = c->fit_cat, .bits_mask = c->fit_mask,
                           .on_trial = c->on_trial, .ctx = c->ctx};
    PG_TRY(pg_packer_fit(j->packer, &x, &fo, &j->trials, &j->ntrials, &j->chosen, &j->bytes,
                         &j->len, err));
    j->mu = j->trials[j->chosen].mu;
    j->counted = j->trials[j->chosen].counted;
    step(j, PG_PACKJOB_FIT, 1);
  } else {
    step(j, PG_PACKJOB_QUANTIZE, 0);
    PG_TRY(pg_packer_quantize(j->packer, 1.0, err));
    step(j, PG_PACKJOB_QUANTIZE, 1);
    step(j, PG_PACKJOB_PACK, 0);
    PG_TRY(pg_packer_build(j->packer, &x, 1.0, &j->bytes, &j->len, &j->counted, err));
    step(j, PG_PACKJOB_PACK, 1);
  }

  /* 4. write */
  step(j, PG_PACKJOB_WRITE, 0);
  PG_TRY(pg_file_write_atomic(c->out, j->bytes, j->len, err));
  step(j, PG_PACKJOB_WRITE, 1);

  /* 5. pgsize's accounting of the written file */
  PG_TRY(pg_artifact_open(&j->written, c->out, NULL, err));
  PG_TRY(pg_artifact_check(j->written, err));
  PG_TRY(pg_account_artifact(&j->account, j->written, j->budget, c->count_tokenizer, err));
  j->have_account = 1;
  return PG_OK;
}

void pg_packjob_free(pg_packjob *j) {
  if (!j) return;
  if (j->have_account) pg_account_free(&j->account);
  pg_artifact_free(j->written);
  free(j->trials);
  pg_fit_result_free(&j->fit);
  free(j->bytes);
  if (j->code_bytes)
    for (size_t i = 0; i < j->cfg->ncode; i++) free(j->code_bytes[i]);
  free(j->code_bytes);
  free(j->codes);
  free(j->tokenizer_bytes);
  free(j->record);
  free(j->record_protocol);
  pg_packer_free(j->packer);
  pg_calib_hessians_free(&j->hessians);
  pg_calib_free(&j->calib);
  pg_calib_free(&j->measure);
  pg_model_free(j->model);
  pg_artifact_free(j->source);
  memset(j, 0, sizeof *j);
}
