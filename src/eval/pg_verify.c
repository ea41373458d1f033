/* pg_verify.c: one verification run (see pg_verify.h): weights → model, tokenizer and byte
 * tables, validation stream, provenance, the evaluation(s), the receipt. */
#include "pg_verify.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_container.h"
#include "pg_io.h"
#include "pg_model.h"
#include "pg_pertoken.h"
#include "pg_ops.h"
#include "pg_shard.h"
#include "pg_spm.h"
#include "pg_threads.h"
#include "pg_weights.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* XXH64 of a whole file, read a piece at a time (a model's worth of bytes needs no copy of its
 * own: the loader reads it again). */
static int hash_file(const char *path, uint64_t *h, uint64_t *size, pg_err *err) {
  enum { PIECE = 1 << 20 };
  int fd;
  PG_TRY(pg_file_open_read(path, &fd, size, err));
  uint8_t *buf = malloc(PIECE);
  XXH64_state_t *st = XXH64_createState();
  int rc = buf && st ? PG_OK
                     : pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate a hash");
  if (rc == PG_OK) XXH64_reset(st, 0);
  for (uint64_t off = 0; rc == PG_OK && off < *size; off += PIECE) {
    size_t n = *size - off < PIECE ? (size_t)(*size - off) : PIECE;
    if ((rc = pg_file_pread(fd, off, buf, n, path, err)) == PG_OK) XXH64_update(st, buf, n);
  }
  if (rc == PG_OK) *h = XXH64_digest(st);
  XXH64_freeState(st);
  free(buf);
  close(fd);
  return rc;
}

/* ---- provenance (spec/eval.md §7.1) --------------------------------------------------------- */

/* "k=v, k=v" from the compact JSON object of pg_arch_unchecked_json. */
static void unchecked_text(json_t *o, char *buf, size_t cap) {
  const char *key;
  json_t *v;
  buf[0] = '\0';
  json_object_foreach(o, key, v) {
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
    const size_t len = strlen(buf);
    if (len + 1 < cap) snprintf(buf + len, cap - len, "%s%s=%s", len ? ", " : "", key, t ? t : "?");
    free(t);
  }
}

/* What the receipt's provenance says, with the warnings it keeps (the first two). */
typedef struct prov_state {
  pg_receipt_provenance prov;
  char warn_text[2][6000];
  const char *warn_list[2];
  char src_text[4400], diff[2048];
  char *w_record, *w_proto, *utext;
} prov_state;

static void warn(prov_state *ps, const pg_verify_cfg *c, const char *text) {
  if (c->on_warning) c->on_warning(c->ctx, text);
  if (ps->prov.nwarnings < 2) {
    snprintf(ps->warn_text[ps->prov.nwarnings], sizeof ps->warn_text[0], "%s", text);
    ps->warn_list[ps->prov.nwarnings] = ps->warn_text[ps->prov.nwarnings];
    ps->prov.nwarnings++;
  }
}

static int gather_provenance(prov_state *ps, const pg_verify_cfg *c, int is_st, pg_artifact *art,
                             const pg_arch *arch, pg_verify_result *res, pg_err *err) {
  const pg_arch_follows *fw = &arch->follows;
  char line[6000];
  ps->prov.warnings = ps->warn_list;
  {
    char *stored = is_st ? pg_weights_meta(c->weights, NULL, "arch.json") : NULL;
    if (!c->arch && !c->arch_given)
      snprintf(ps->src_text, sizeof ps->src_text, "%s",
               is_st ? "the file's __metadata__ arch.json" : "the artifact's arch.json");
    else if (c->arch_given)
      snprintf(ps->src_text, sizeof ps->src_text, "%s (%s)",
               c->arch_label ? c->arch_label : "an arch given by the caller",
               is_st && !stored ? "the file records no arch"
                                : "the same model as the file's own arch.json");
    else
      snprintf(ps->src_text, sizeof ps->src_text, "--arch %s (%s)", c->arch,
               is_st && !stored ? "the file records no arch"
                                : "the same model as the file's own arch.json");
    free(stored);
  }
  ps->prov.arch_source = ps->src_text;
  ps->prov.arch_follows = fw->set ? fw->record : NULL;
  ps->w_record = pg_weights_meta(c->weights, art, "provenance.record");
  ps->w_proto = pg_weights_meta(c->weights, art, "provenance.protocol");
  ps->prov.weights_record = ps->w_record;
  res->record_protocol_from_weights = ps->w_proto != NULL;
  if (pg_arch_unchecked_json(arch, &ps->utext, err)) return err->status;
  ps->prov.not_fixed_json = ps->utext;
  {
    json_t *unchecked = json_loads(ps->utext, 0, NULL);
    if (!unchecked) unchecked = json_object();
    unchecked_text(unchecked, res->unchecked, sizeof res->unchecked);
    json_decref(unchecked);
  }
  if (ps->w_record && fw->set && strcmp(ps->w_record, fw->record)) {
    snprintf(line, sizeof line, "the weights come from record \"%s\" (their provenance.record) "
             "but the arch follows \"%s\": these settings, which the weights cannot show, are "
             "that record's and may not be theirs: %s", ps->w_record, fw->record,
             res->unchecked);
    warn(ps, c, line);
  }
  /* the record's protocol: the weights' own provenance first, else the arch's record */
  const char *wp = ps->w_proto;
  const char *rtext = wp ? wp : fw->set && fw->protocol[0] ? fw->protocol : NULL;
  const char *rname = wp ? (ps->w_record ? ps->w_record : "the weights' record") : fw->record;
  ps->prov.record_protocol = rtext;
  ps->prov.record_protocol_source = !rtext ? NULL
                                    : wp   ? "the weights' provenance.protocol"
                                           : "the arch's follows.protocol";
  pg_protocol rp;
  ps->prov.matches_record = -1;
  if (!rtext) {
    /* no record protocol to compare with: unknown */
  } else if (!c->read_protocol || c->read_protocol(c->ctx, rtext, &rp)) {
    snprintf(line, sizeof line, "cannot read the protocol recorded for %s: \"%s\"", rname,
             rtext);
    warn(ps, c, line);
  } else if (pg_receipt_protocol_diff(&c->protocol, &rp, ps->diff, sizeof ps->diff)) {
    ps->prov.matches_record = 0;
    ps->prov.differences = ps->diff;
    snprintf(line, sizeof line, "the protocol differs from the one that gave %s its figure "
             "(\"%s\"): %s; this val_bpb is not comparable to the record's", rname, rtext,
             ps->diff);
    warn(ps, c, line);
  } else {
    ps->prov.matches_record = 1;
  }
  res->matches_record = ps->prov.matches_record;
  return PG_OK;
}

static void prov_state_free(prov_state *ps) {
  free(ps->w_record);
  free(ps->w_proto);
  free(ps->utext);
}

/* ---- the tokenizer -------------------------------------------------------------------------- */

/* The tokenizer of the run: the file given, or the artifact's tokenizer section. */
static int open_tokenizer(const pg_verify_cfg *c, pg_artifact *art, pg_spm **spm,
                          uint64_t *tok_hash, pg_err *err) {
  if (c->tokenizer) {
    uint64_t sz;
    PG_TRY(hash_file(c->tokenizer, tok_hash, &sz, err));
    return pg_spm_open_file(spm, c->tokenizer, err);
  }
  int64_t ts = pg_artifact_tokenizer_section(art);
  if (ts < 0)
    return pg_err_set(err, PG_E_NOT_FOUND, c->weights, PG_NO_OFFSET,
                      "no tokenizer section; pass --tokenizer FILE.model");
  const pg_section *tsec = pg_artifact_section(art, (uint32_t)ts);
  if (tsec->raw_size > PG_SPM_MAX_FILE) /* refused before it is decoded */
    return pg_err_set(err, PG_E_LIMIT, c->weights, tsec->offset,
                      "tokenizer section of %llu bytes, limit %zu for a .model file",
                      (unsigned long long)tsec->raw_size, PG_SPM_MAX_FILE);
  const uint8_t *raw;
  PG_TRY(pg_artifact_section_raw(art, (uint32_t)ts, &raw, err));
  size_t len = (size_t)tsec->raw_size;
  *tok_hash = XXH64(raw, len, 0);
  char name[4200];
  snprintf(name, sizeof name, "%s (tokenizer section)", c->weights);
  PG_TRY(pg_spm_open_mem(spm, raw, len, name, err));
  pg_artifact_section_release(art, (uint32_t)ts); /* the tokenizer keeps its own copy */
  return PG_OK;
}

/* ---- the run -------------------------------------------------------------------------------- */

int pg_verify_run(const pg_verify_cfg *c, pg_verify_result *res, pg_err *err) {
  memset(res, 0, sizeof *res);
  res->matches_record = -1;
  const double t0 = now_s();
  int rc = PG_OK;
  pg_artifact *art = NULL;
  pg_model *m = NULL, *m32 = NULL;
  pg_pertoken *pt = NULL;
  pg_spm *spm = NULL;
  pg_spm_tables tab = {0};
  pg_val_data vd = {0};
  prov_state ps;
  memset(&ps, 0, sizeof ps);
  pg_receipt_shard *shards = NULL;
  size_t nshards = 0;
  uint64_t tok_hash = 0;
  const int fig32 = c->precision == PG_PREC_BF16 && c->fp32_figure;

  /* the artifact (or safetensors weights) and its model */
  int is_art = 0;
  if ((rc = hash_file(c->weights, &res->weights_xxh64, &res->weights_bytes, err)) ||
      (rc = pg_weights_is_artifact(c->weights, &is_art, err)))
    goto done;
  const int is_st = !is_art;
  res->safetensors = is_st;
  if (is_st && !c->tokenizer) {
    rc = pg_err_set(err, PG_E_ARG, c->weights, PG_NO_OFFSET,
                    "a safetensors file holds no tokenizer; pass --tokenizer FILE.model");
    goto done;
  }
  /* the engine(s): the one place this run chooses them */
  pg_engine cpu = pg_engine_cpu(c->threads);
  pg_engine *one = c->engine ? c->engine : &cpu;
  const int ne = c->nengines > 1 && c->engines ? c->nengines : 1;
  pg_engine *const *es = ne > 1 ? c->engines : &one;
  pg_engine *e = es[0];
  if (ne > PG_ENGINES_MAX) {
    rc = pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "%d engines, at most %d", ne,
                    PG_ENGINES_MAX);
    goto done;
  }
  /* an artifact goes onto the first engine quantized and is dequantized there (spec/engine.md
   * §8.1): no host copy of the parameters unless a step below asks for one */
  {
    pg_arch given;
    const pg_arch *gp = c->arch_given;
    if (!gp && c->arch) {
      if ((rc = pg_arch_load(&given, c->arch, err))) goto done;
      gp = &given;
    }
    if ((rc = pg_weights_load_on(&m, &art, c->weights, is_art, gp, e, err))) goto done;
  }
  const pg_arch *arch = pg_model_arch(m);
  res->arch = *arch;
  /* the tokenizer: the artifact's own unless given */
  if ((rc = open_tokenizer(c, art, &spm, &tok_hash, err))) goto done;
  if (pg_spm_vocab_size(spm) != (uint32_t)arch->vocab_size) {
    rc = pg_err_set(err, PG_E_VOCAB, pg_spm_name(spm), PG_NO_OFFSET,
                    "the tokenizer has %u pieces but the arch's vocabulary is %d",
                    pg_spm_vocab_size(spm), arch->vocab_size);
    goto done;
  }
  if (!c->bytes && (rc = pg_spm_tables_build(&tab, spm, (uint32_t)arch->vocab_size, 0, err)))
    goto done;
  /* the validation stream */
  if ((rc = pg_val_data_open(&vd, c->val, c->bytes, (uint32_t)arch->vocab_size, c->max_tokens,
                             err)))
    goto done;
  const pg_shard_set *set = vd.set;
  res->tokens_read = vd.n;
  res->tokens_available = pg_shard_set_count(set);
  pg_val val = {.tok = vd.tok, .n = vd.n, .tables = c->bytes ? NULL : &tab, .bytes = vd.bytes};
  res->threads = e->info.threads;
  res->engine = e->info;
  res->nengines = ne;
  for (int i = 0; i < ne; i++) { /* the receipt names every device */
    const size_t len = strlen(res->devices);
    snprintf(res->devices + len, sizeof res->devices - len, "%s%s", i ? "; " : "",
             es[i]->info.devices);
  }
  pg_eval_hooks hooks = {.progress = c->progress, .ctx = c->ctx};
  if (c->on_start) {
    pg_verify_start s = {.protocol = &c->protocol, .tokens = vd.n, .threads = res->threads,
                         .engine = &e->info, .nengines = ne, .devices = res->devices,
                         .precision = c->precision, .fp32_figure = fig32};
    c->on_start(c->ctx, &s);
  }
  /* provenance: what the weights cannot show, and the record's protocol (spec/eval.md §7.1) */
  if ((rc = gather_provenance(&ps, c, is_st, art, arch, res, err))) goto done;
  /* the fp32 figure runs on its own copy of the weights: a TTT protocol changes the model; the
   * copy is made on the first engine, beside the model (no host copy, spec/engine.md §8.1) */
  if (fig32 && ((rc = pg_model_create_on(&m32, arch, e, err)) ||
                (rc = pg_model_copy_params(m32, m, err))))
    goto done;
  pg_model_set_precision(m, (pg_precision)c->precision);
  if (c->on_phase) c->on_phase(c->ctx, fig32 ? "bf16" : NULL);
  pg_eval_hooks main_hooks = hooks;
  if (c->per_token) {
    if ((rc = pg_pertoken_open(&pt, c->per_token, vd.n, err))) goto done;
    main_hooks.on_score = pg_pertoken_add;
    main_hooks.score_ctx = pt;
  }
  rc = pg_eval_run_on(m, es, ne, &val, &c->protocol, &main_hooks, &res->eval, err);
  if (!rc && pt) {
    rc = pg_pertoken_close(pt, err);
    pt = NULL;
  }
  if (rc) goto done;
  if (fig32) {
    if (c->on_phase) c->on_phase(c->ctx, "fp32");
    if ((rc = pg_eval_run_on(m32, es, ne, &val, &c->protocol, &hooks, &res->eval_fp32, err)))
      goto done;
    res->has_fp32 = 1;
  }

  /* the receipt */
  nshards = pg_shard_set_nfiles(set);
  if (!(shards = calloc(nshards ? nshards : 1, sizeof *shards))) {
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate the shard list");
    goto done;
  }
  for (size_t k = 0; k < nshards; k++) {
    const pg_shard_file *f = pg_shard_set_file(set, k);
    uint64_t sz;
    shards[k].path = f->path;
    shards[k].tokens = f->count;
    if ((rc = hash_file(f->path, &shards[k].xxh64, &sz, err))) goto done;
  }
  pg_receipt_in ri = {
      .version = c->version ? c->version : PG_VERSION, .artifact_path = c->weights,
      .safetensors = is_st, .artifact_bytes = res->weights_bytes,
      .artifact_xxh64 = res->weights_xxh64, .arch = arch,
      .tokenizer_source = c->tokenizer ? c->tokenizer : "artifact",
      .tokenizer_pieces = pg_spm_vocab_size(spm), .tokenizer_xxh64 = tok_hash,
      .val_pattern = c->val, .shards = shards, .nshards = nshards,
      .tokens_available = res->tokens_available, .tokens_read = vd.n, .bytes_pattern = c->bytes,
      .protocol = &c->protocol, .provenance = &ps.prov, .result = &res->eval,
      .result_fp32 = fig32 ? &res->eval_fp32 : NULL,
      .engine = e->info.name, .devices = res->devices, .driver = e->info.driver,
      .threads = res->threads, .precision = c->precision,
#ifdef __VERSION__
      .compiler = __VERSION__,
#endif
      .seconds_total = now_s() - t0};
  if ((rc = pg_receipt_build(&ri, &res->receipt_json, err)) ||
      (c->receipt && (rc = pg_receipt_write(c->receipt, res->receipt_json, err))))
    goto done;
done:
  pg_pertoken_abort(pt);
  free(shards);
  prov_state_free(&ps);
  pg_val_data_free(&vd);
  pg_spm_tables_free(&tab);
  pg_spm_free(spm);
  pg_model_free(m);
  pg_model_free(m32);
  pg_artifact_free(art);
  return rc;
}

void pg_verify_result_free(pg_verify_result *res) {
  if (!res) return;
  free(res->receipt_json);
  pg_eval_result_free(&res->eval);
  pg_eval_result_free(&res->eval_fp32);
  memset(res, 0, sizeof *res);
}
