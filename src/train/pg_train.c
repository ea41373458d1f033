/* pg_train.c: configuration, parameter groups, the training step, validation and checkpoints
 * (pg_train.h, spec/train.md). */
#include "pg_train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_eval.h"
#include "pg_io.h"
#include "pg_json.h"
#include "pg_batches.h"
#include "pg_optim.h"
#include "pg_safetensors.h"
#include "pg_spm.h"
#include "pg_tape.h"
#include "pg_threads.h"

static const char *const GROUP_NAMES[PG_TRAIN_GROUP_N] = {"matrix", "embed", "scalar"};
const char *pg_train_group_name(int g) {
  return g >= 0 && g < PG_TRAIN_GROUP_N ? GROUP_NAMES[g] : "?";
}

static const char *opt_name(int k) {
  return k == PG_TOPT_MUON ? "muon" : k == PG_TOPT_ADAMW ? "adamw" : "sgd";
}

/* ---- configuration --------------------------------------------------------------------------- */

void pg_train_cfg_default(pg_train_cfg *c) {
  memset(c, 0, sizeof *c);
  pg_arch_default(&c->arch);
  c->loader = PG_BATCHES_SEQUENTIAL;
  c->seq_len = 256;
  c->batch = 8;
  c->data_seed = 1337;
  c->init_seed = 1337;
  c->group[PG_TRAIN_GROUP_MATRIX] = (pg_train_group){.kind = PG_TOPT_MUON, .lr = 0.02};
  c->group[PG_TRAIN_GROUP_EMBED] = (pg_train_group){.kind = PG_TOPT_ADAMW, .lr = 0.03};
  c->group[PG_TRAIN_GROUP_SCALAR] = (pg_train_group){.kind = PG_TOPT_ADAMW, .lr = 0.02};
  c->muon = (pg_muon_opts){.lr = 0.02, .momentum = 0.95, .momentum_start = 0.85,
                           .momentum_warmup = 100, .nesterov = 1, .row_normalize = 0,
                           .ns_kind = PG_NS_CLASSIC, .ns_steps = 5, .weight_decay = 0};
  c->beta1 = 0.9;
  c->beta2 = 0.95;
  c->eps = 1e-8;
  c->grad_clip = 0;
  c->steps = 200;
  c->sched = (pg_lr_sched){.warmup_steps = 0, .warmdown_frac = 0.3, .min_lr = 0};
  c->swa_below = 0.5;
  c->log_every = 10;
}

#define CFAIL(...) pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, __VA_ARGS__)

static int validate(const pg_train_cfg *c, const char *file, pg_err *err);

/* Keys of obj must all be in the NULL-terminated list. */
static int only_keys(json_t *obj, const char *where, const char *const *keys, const char *file,
                     pg_err *err) {
  const char *k;
  json_t *v;
  json_object_foreach(obj, k, v) {
    int ok = 0;
    for (size_t i = 0; keys[i]; i++) ok |= !strcmp(k, keys[i]);
    if (!ok) return CFAIL("%s%s%s: unknown key", where, *where ? "." : "", k);
  }
  return PG_OK;
}

static int get_num(json_t *o, const char *where, const char *key, double *out, const char *file,
                   pg_err *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return PG_OK;
  if (!json_is_number(v)) return CFAIL("%s.%s: not a number", where, key);
  *out = json_number_value(v);
  if (!isfinite(*out)) return CFAIL("%s.%s: not finite", where, key);
  return PG_OK;
}

static int get_u64(json_t *o, const char *where, const char *key, uint64_t *out, const char *file,
                   pg_err *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return PG_OK;
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return CFAIL("%s.%s: not a non-negative integer", where, key);
  *out = (uint64_t)json_integer_value(v);
  return PG_OK;
}

static int get_int(json_t *o, const char *where, const char *key, int *out, const char *file,
                   pg_err *err) {
  uint64_t u = (uint64_t)*out;
  PG_TRY(get_u64(o, where, key, &u, file, err));
  if (u > 1u << 30) return CFAIL("%s.%s: too large", where, key);
  *out = (int)u;
  return PG_OK;
}

static int get_bool(json_t *o, const char *where, const char *key, int *out, const char *file,
                    pg_err *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return PG_OK;
  if (!json_is_boolean(v)) return CFAIL("%s.%s: not a boolean", where, key);
  *out = json_is_true(v);
  return PG_OK;
}

static int get_str(json_t *o, const char *where, const char *key, char *out, size_t cap,
                   const char *file, pg_err *err) {
  json_t *v = json_object_get(o, key);
  if (!v) return PG_OK;
  if (!json_is_string(v)) return CFAIL("%s.%s: not a string", where, key);
  if (json_string_length(v) >= cap) return CFAIL("%s.%s: too long", where, key);
  memcpy(out, json_string_value(v), json_string_length(v) + 1);
  return PG_OK;
}

static int get_obj(json_t *root, const char *key, json_t **out, const char *file, pg_err *err) {
  *out = json_object_get(root, key);
  if (*out && !json_is_object(*out)) return CFAIL("%s: not an object", key);
  return PG_OK;
}

static int parse_group(json_t *o, const char *name, pg_train_group *g, pg_muon_opts *mu,
                       const char *file, pg_err *err) {
  static const char *const keys[] = {"kind", "lr", "weight_decay", "momentum", "momentum_start",
                                     "momentum_warmup", "nesterov", "row_normalize", "ns",
                                     "ns_steps", NULL};
  char where[64];
  snprintf(where, sizeof where, "optimizer.%s", name);
  PG_TRY(only_keys(o, where, keys, file, err));
  char kind[16] = "";
  PG_TRY(get_str(o, where, "kind", kind, sizeof kind, file, err));
  if (*kind) {
    if (!strcmp(kind, "muon")) g->kind = PG_TOPT_MUON;
    else if (!strcmp(kind, "adamw")) g->kind = PG_TOPT_ADAMW;
    else if (!strcmp(kind, "sgd")) g->kind = PG_TOPT_SGD;
    else return CFAIL("%s.kind: '%s' is not muon, adamw or sgd", where, kind);
  }
  PG_TRY(get_num(o, where, "lr", &g->lr, file, err));
  PG_TRY(get_num(o, where, "weight_decay", &g->weight_decay, file, err));
  PG_TRY(get_num(o, where, "momentum", &g->momentum, file, err));
  int is_matrix = mu != NULL;
  if (!is_matrix) {
    for (size_t i = 3; keys[i]; i++)
      if (i > 3 && json_object_get(o, keys[i]))
        return CFAIL("%s.%s: only the matrix group runs Muon", where, keys[i]);
    return PG_OK;
  }
  if (json_object_get(o, "momentum")) mu->momentum = g->momentum;
  PG_TRY(get_num(o, where, "momentum_start", &mu->momentum_start, file, err));
  PG_TRY(get_int(o, where, "momentum_warmup", &mu->momentum_warmup, file, err));
  PG_TRY(get_bool(o, where, "nesterov", &mu->nesterov, file, err));
  PG_TRY(get_bool(o, where, "row_normalize", &mu->row_normalize, file, err));
  char ns[24] = "";
  PG_TRY(get_str(o, where, "ns", ns, sizeof ns, file, err));
  if (*ns) {
    if (!strcmp(ns, "classic")) mu->ns_kind = PG_NS_CLASSIC;
    else if (!strcmp(ns, "polar_express")) mu->ns_kind = PG_NS_POLAR_EXPRESS;
    else return CFAIL("%s.ns: '%s' is not classic or polar_express", where, ns);
  }
  PG_TRY(get_int(o, where, "ns_steps", &mu->ns_steps, file, err));
  return PG_OK;
}

/* The directory part of a path ("" when none), for files named relative to the config. */
static void dir_of(const char *path, char *out, size_t cap) {
  const char *s = path ? strrchr(path, '/') : NULL;
  size_t n = s ? (size_t)(s - path) + 1 : 0;
  if (n >= cap) n = 0;
  memcpy(out, path, n);
  out[n] = 0;
}

static int parse_root(pg_train_cfg *c, json_t *root, const char *file, pg_err *err) {
  static const char *const top[] = {"arch", "data", "init_seed", "optimizer", "schedule",
                                    "averaging", "log", NULL};
  PG_TRY(only_keys(root, "", top, file, err));
  /* arch: an object, or the path of an arch file (relative to the config's folder) */
  json_t *a = json_object_get(root, "arch");
  if (a && json_is_object(a)) {
    char *text = json_dumps(a, JSON_COMPACT);
    if (!text) return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
    char label[PG_TRAIN_PATH_MAX + 16];
    snprintf(label, sizeof label, "%s: arch", file ? file : "config");
    int rc = pg_arch_parse(&c->arch, text, strlen(text), label, err);
    free(text);
    PG_TRY(rc);
  } else if (a && json_is_string(a)) {
    char path[2 * PG_TRAIN_PATH_MAX], dir[PG_TRAIN_PATH_MAX];
    const char *s = json_string_value(a);
    dir_of(file, dir, sizeof dir);
    snprintf(path, sizeof path, "%s%s", s[0] == '/' ? "" : dir, s);
    PG_TRY(pg_arch_load(&c->arch, path, err));
    memcpy(c->arch_file, path, sizeof c->arch_file); /* an input the outputs must not replace */
  } else if (a) {
    return CFAIL("arch: not an object or a file name");
  }
  json_t *o;
  PG_TRY(get_obj(root, "data", &o, file, err));
  if (o) {
    static const char *const keys[] = {"train", "val", "tokenizer", "loader", "seq_len", "batch",
                                       "seed", NULL};
    PG_TRY(only_keys(o, "data", keys, file, err));
    PG_TRY(get_str(o, "data", "train", c->train, sizeof c->train, file, err));
    PG_TRY(get_str(o, "data", "val", c->val, sizeof c->val, file, err));
    PG_TRY(get_str(o, "data", "tokenizer", c->tokenizer, sizeof c->tokenizer, file, err));
    char mode[24] = "";
    PG_TRY(get_str(o, "data", "loader", mode, sizeof mode, file, err));
    if (*mode) {
      c->loader = pg_batches_mode_parse(mode);
      if (c->loader < 0)
        return CFAIL("data.loader: '%s' is not sequential, shuffled or packed", mode);
    }
    PG_TRY(get_int(o, "data", "seq_len", &c->seq_len, file, err));
    PG_TRY(get_int(o, "data", "batch", &c->batch, file, err));
    PG_TRY(get_u64(o, "data", "seed", &c->data_seed, file, err));
  }
  PG_TRY(get_u64(root, "", "init_seed", &c->init_seed, file, err));
  PG_TRY(get_obj(root, "optimizer", &o, file, err));
  if (o) {
    static const char *const keys[] = {"matrix", "embed", "scalar", "betas", "eps", "grad_clip",
                                       NULL};
    PG_TRY(only_keys(o, "optimizer", keys, file, err));
    for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
      json_t *go = json_object_get(o, GROUP_NAMES[g]);
      if (!go) continue;
      if (!json_is_object(go)) return CFAIL("optimizer.%s: not an object", GROUP_NAMES[g]);
      PG_TRY(parse_group(go, GROUP_NAMES[g], &c->group[g],
                         g == PG_TRAIN_GROUP_MATRIX ? &c->muon : NULL, file, err));
    }
    json_t *b = json_object_get(o, "betas");
    if (b) {
      if (!json_is_array(b) || json_array_size(b) != 2 || !json_is_number(json_array_get(b, 0)) ||
          !json_is_number(json_array_get(b, 1)))
        return CFAIL("optimizer.betas: not two numbers");
      c->beta1 = json_number_value(json_array_get(b, 0));
      c->beta2 = json_number_value(json_array_get(b, 1));
    }
    PG_TRY(get_num(o, "optimizer", "eps", &c->eps, file, err));
    PG_TRY(get_num(o, "optimizer", "grad_clip", &c->grad_clip, file, err));
  }
  PG_TRY(get_obj(root, "schedule", &o, file, err));
  if (o) {
    static const char *const keys[] = {"steps", "seconds", "warmup_steps", "warmdown_frac",
                                       "min_lr", NULL};
    PG_TRY(only_keys(o, "schedule", keys, file, err));
    PG_TRY(get_u64(o, "schedule", "steps", &c->steps, file, err));
    PG_TRY(get_num(o, "schedule", "seconds", &c->seconds, file, err));
    PG_TRY(get_u64(o, "schedule", "warmup_steps", &c->sched.warmup_steps, file, err));
    PG_TRY(get_num(o, "schedule", "warmdown_frac", &c->sched.warmdown_frac, file, err));
    PG_TRY(get_num(o, "schedule", "min_lr", &c->sched.min_lr, file, err));
  }
  PG_TRY(get_obj(root, "averaging", &o, file, err));
  if (o) {
    static const char *const keys[] = {"ema", "swa_every", "swa_start", "swa_below", NULL};
    PG_TRY(only_keys(o, "averaging", keys, file, err));
    PG_TRY(get_num(o, "averaging", "ema", &c->ema_decay, file, err));
    PG_TRY(get_u64(o, "averaging", "swa_every", &c->swa_every, file, err));
    PG_TRY(get_u64(o, "averaging", "swa_start", &c->swa_start, file, err));
    PG_TRY(get_num(o, "averaging", "swa_below", &c->swa_below, file, err));
  }
  PG_TRY(get_obj(root, "log", &o, file, err));
  if (o) {
    static const char *const keys[] = {"every", "val_every", "val_tokens", "checkpoint_every",
                                       NULL};
    PG_TRY(only_keys(o, "log", keys, file, err));
    PG_TRY(get_u64(o, "log", "every", &c->log_every, file, err));
    PG_TRY(get_u64(o, "log", "val_every", &c->val_every, file, err));
    PG_TRY(get_u64(o, "log", "val_tokens", &c->val_tokens, file, err));
    PG_TRY(get_u64(o, "log", "checkpoint_every", &c->ckpt_every, file, err));
  }
  return PG_OK;
}

int pg_train_cfg_parse(pg_train_cfg *c, const char *json, size_t len, const char *file,
                       pg_err *err) {
  pg_train_cfg_default(c);
  PG_TRY(pg_json_shape_check(json, len, &pg_json_doc_caps, file, 0, err));
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return pg_err_set(err, PG_E_JSON, file, (uint64_t)je.position, "line %d: %s", je.line,
                      je.text);
  int rc = json_is_object(root) ? parse_root(c, root, file, err)
                                : pg_err_set(err, PG_E_JSON, file, 0, "not a JSON object");
  json_decref(root);
  if (!rc) rc = validate(c, file, err);
  return rc;
}

int pg_train_cfg_load(pg_train_cfg *c, const char *path, pg_err *err) {
  uint8_t *b;
  size_t n;
  PG_TRY(pg_file_read_all(path, &b, &n, 1u << 20, err));
  int rc = pg_train_cfg_parse(c, (const char *)b, n, path, err);
  free(b);
  return rc;
}

int pg_train_cfg_validate(const pg_train_cfg *c, pg_err *err) { return validate(c, NULL, err); }

static int validate(const pg_train_cfg *c, const char *file, pg_err *err) {
  PG_TRY(pg_arch_validate(&c->arch, file, err));
  if (c->seq_len < 1 || c->batch < 1 || (uint64_t)c->seq_len * (uint64_t)c->batch > (1u << 24))
    return CFAIL("data: %d rows of %d tokens is not a usable batch", c->batch, c->seq_len);
  if (c->loader < 0 || c->loader > PG_BATCHES_PACKED) return CFAIL("data.loader: unknown");
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
    const pg_train_group *gr = &c->group[g];
    if (gr->kind == PG_TOPT_MUON && g != PG_TRAIN_GROUP_MATRIX)
      return CFAIL("optimizer.%s: muon is for the matrix group only", GROUP_NAMES[g]);
    if (!(gr->lr >= 0) || !(gr->weight_decay >= 0) || !(gr->momentum >= 0 && gr->momentum < 1))
      return CFAIL("optimizer.%s: lr, weight_decay and momentum must be >= 0 (momentum < 1)",
                   GROUP_NAMES[g]);
    if (gr->kind == PG_TOPT_SGD && gr->weight_decay != 0)
      return CFAIL("optimizer.%s: SGD takes no weight decay", GROUP_NAMES[g]);
  }
  const pg_muon_opts *m = &c->muon;
  if (!(m->momentum >= 0 && m->momentum < 1) ||
      !(m->momentum_start >= 0 && m->momentum_start < 1) || m->momentum_warmup < 0 ||
      m->ns_steps < 1 || m->ns_steps > 32)
    return CFAIL("optimizer.matrix: momentum in [0, 1), ns_steps in 1..32");
  if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) || !(c->eps > 0))
    return CFAIL("optimizer: betas in [0, 1), eps > 0");
  if (!(c->grad_clip >= 0)) return CFAIL("optimizer.grad_clip: must be >= 0");
  if (c->steps == 0 && !(c->seconds > 0))
    return CFAIL("schedule: give steps, or seconds for a wall-clock run");
  if (!(c->seconds >= 0 && c->seconds <= PG_TRAIN_MAX_SECONDS))
    return CFAIL("schedule.seconds: must be in [0, 1e9]");
  if (c->steps > PG_TRAIN_MAX_STEPS || c->sched.warmup_steps > PG_TRAIN_MAX_STEPS)
    return CFAIL("schedule: steps and warmup_steps are at most 2^62");
  if (!(c->sched.warmdown_frac >= 0 && c->sched.warmdown_frac <= 1) ||
      !(c->sched.min_lr >= 0 && c->sched.min_lr <= 1))
    return CFAIL("schedule: warmdown_frac and min_lr in [0, 1]");
  if (!(c->ema_decay >= 0 && c->ema_decay < 1) || !(c->swa_below >= 0))
    return CFAIL("averaging: ema in [0, 1), swa_below >= 0");
  if (!c->train[0]) return CFAIL("data.train: the training shards are required");
  /* the paths are recorded in the checkpoint's JSON configuration, which holds only UTF-8 */
  if (!pg_utf8_valid((const uint8_t *)c->train, strlen(c->train), NULL) ||
      !pg_utf8_valid((const uint8_t *)c->val, strlen(c->val), NULL) ||
      !pg_utf8_valid((const uint8_t *)c->tokenizer, strlen(c->tokenizer), NULL))
    return CFAIL("data: the train, val and tokenizer paths must be UTF-8");
  return PG_OK;
}

static json_t *group_json(const pg_train_cfg *c, int g) {
  const pg_train_group *gr = &c->group[g];
  json_t *o = json_object();
  json_object_set_new(o, "kind", json_string(opt_name(gr->kind)));
  json_object_set_new(o, "lr", json_real(gr->lr));
  json_object_set_new(o, "weight_decay", json_real(gr->weight_decay));
  if (gr->kind == PG_TOPT_SGD) json_object_set_new(o, "momentum", json_real(gr->momentum));
  if (gr->kind == PG_TOPT_MUON) {
    const pg_muon_opts *m = &c->muon;
    json_object_set_new(o, "momentum", json_real(m->momentum));
    json_object_set_new(o, "momentum_start", json_real(m->momentum_start));
    json_object_set_new(o, "momentum_warmup", json_integer(m->momentum_warmup));
    json_object_set_new(o, "nesterov", json_boolean(m->nesterov));
    json_object_set_new(o, "row_normalize", json_boolean(m->row_normalize));
    json_object_set_new(o, "ns", json_string(m->ns_kind == PG_NS_POLAR_EXPRESS ? "polar_express"
                                                                               : "classic"));
    json_object_set_new(o, "ns_steps", json_integer(m->ns_steps));
  }
  return o;
}

/* identity: 1 leaves out the limits, logging and intervals (what a resume may change) */
static json_t *cfg_json(const pg_train_cfg *c, int identity) {
  json_t *o = json_object();
  char *arch = NULL;
  if (pg_arch_serialize(&c->arch, &arch, NULL) == PG_OK) {
    json_object_set_new(o, "arch", json_loads(arch, 0, NULL));
    free(arch);
  }
  json_t *d = json_object();
  json_object_set_new(d, "train", json_string(c->train));
  if (!identity) {
    json_object_set_new(d, "val", json_string(c->val));
    json_object_set_new(d, "tokenizer", json_string(c->tokenizer));
  }
  json_object_set_new(d, "loader", json_string(pg_batches_mode_name(c->loader)));
  json_object_set_new(d, "seq_len", json_integer(c->seq_len));
  json_object_set_new(d, "batch", json_integer(c->batch));
  json_object_set_new(d, "seed", json_integer((json_int_t)c->data_seed));
  json_object_set_new(o, "data", d);
  json_object_set_new(o, "init_seed", json_integer((json_int_t)c->init_seed));
  json_t *op = json_object();
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++)
    json_object_set_new(op, GROUP_NAMES[g], group_json(c, g));
  json_object_set_new(op, "betas", json_pack("[f,f]", c->beta1, c->beta2));
  json_object_set_new(op, "eps", json_real(c->eps));
  json_object_set_new(op, "grad_clip", json_real(c->grad_clip));
  json_object_set_new(o, "optimizer", op);
  json_t *s = json_object();
  json_object_set_new(s, "steps", json_integer((json_int_t)c->steps));
  json_object_set_new(s, "seconds", json_real(c->seconds));
  json_object_set_new(s, "warmup_steps", json_integer((json_int_t)c->sched.warmup_steps));
  json_object_set_new(s, "warmdown_frac", json_real(c->sched.warmdown_frac));
  json_object_set_new(s, "min_lr", json_real(c->sched.min_lr));
  json_object_set_new(o, "schedule", s);
  json_t *av = json_object();
  json_object_set_new(av, "ema", json_real(c->ema_decay));
  json_object_set_new(av, "swa_every", json_integer((json_int_t)c->swa_every));
  json_object_set_new(av, "swa_start", json_integer((json_int_t)c->swa_start));
  json_object_set_new(av, "swa_below", json_real(c->swa_below));
  json_object_set_new(o, "averaging", av);
  if (!identity) {
    json_t *l = json_object();
    json_object_set_new(l, "every", json_integer((json_int_t)c->log_every));
    json_object_set_new(l, "val_every", json_integer((json_int_t)c->val_every));
    json_object_set_new(l, "val_tokens", json_integer((json_int_t)c->val_tokens));
    json_object_set_new(l, "checkpoint_every", json_integer((json_int_t)c->ckpt_every));
    json_object_set_new(o, "log", l);
  }
  return o;
}

static char *dump(json_t *o) {
  char *s = json_dumps(o, JSON_SORT_KEYS | JSON_INDENT(2) | JSON_REAL_PRECISION(17));
  json_decref(o);
  return s;
}

char *pg_train_cfg_json(const pg_train_cfg *c) { return dump(cfg_json(c, 0)); }

/* ---- the trainer ----------------------------------------------------------------------------- */

/* The optimizers run on the engine (spec/engine.md §4.20): their state (Muon buffers, SGD and
 * AdamW moments, the EMA weights, the SWA sums) is engine memory, and a step moves nothing but
 * the gradient norm's one fp64 scalar; checkpoints download and resume uploads it. */
typedef struct group_state {
  size_t *ix; /* model tensor indices */
  size_t n;
  size_t numel;
  pg_optim *opt;      /* AdamW / SGD, state on the engine */
  pg_optim_span *spans;
  float *muon_buf;    /* Muon: momentum buffers, tensors back to back (engine memory) */
  size_t *buf_off;
} group_state;

struct pg_trainer {
  pg_train_cfg c;
  pg_engine *e;
  pg_model *m;
  pg_tape *tp;
  pg_batches *ld;
  group_state g[PG_TRAIN_GROUP_N];
  size_t *off; /* each tensor's offset in the parameters (canonical order, back to back) */
  size_t np;
  float *ema;      /* engine memory */
  double *swa_sum; /* engine memory */
  double *norm2;   /* engine memory: the gradient norm's sum of squares */
  uint64_t swa_count, ema_updates;
  uint64_t step, total, tokens;
  int32_t *ids, *tgt;
  double *nll;
  float *dnll;
  /* validation */
  int32_t *val_tok;
  uint64_t val_n;
  pg_spm_tables tables;
  int have_tables;
  pg_model *shadow; /* export weights for validation */
  pg_comm *comm;    /* data parallel (pg_trainer_set_comm); NULL: one rank */
  pg_precision prec; /* pg_trainer_set_precision */
};

const pg_train_cfg *pg_trainer_cfg(const pg_trainer *t) { return &t->c; }
pg_model *pg_trainer_model(pg_trainer *t) { return t->m; }
uint64_t pg_trainer_total(const pg_trainer *t) { return t->total; }
uint64_t pg_trainer_step_count(const pg_trainer *t) { return t->step; }
void pg_trainer_set_total(pg_trainer *t, uint64_t total) {
  if (total > 0) t->total = total;
}

static int ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), k = strlen(suf);
  return n >= k && !strcmp(s + n - k, suf);
}

/* The records' partition (spec/records.md §3.1): Muon for the block matrices and the embedding
 * projections; the "tok" AdamW group for the embedding tables (and an untied head); the
 * "scalar" group for everything else (vectors, scalars, gates, skip and lane weights). */
static int group_of(const pg_arch_tensor *t) {
  const char *n = t->name;
  if (!strcmp(n, "tok_emb.weight") || !strcmp(n, "bigram.embed.weight") ||
      !strcmp(n, "ve_shared.embed.weight") || !strcmp(n, "lm_head.weight"))
    return PG_TRAIN_GROUP_EMBED;
  if (t->ndim == 2 && (!strcmp(n, "bigram.proj.weight") || !strcmp(n, "ve_shared.proj.weight")))
    return PG_TRAIN_GROUP_MATRIX;
  if (t->ndim == 2 && !strncmp(n, "blocks.", 7) &&
      (ends_with(n, ".attn.c_q.weight") || ends_with(n, ".attn.c_k.weight") ||
       ends_with(n, ".attn.c_v.weight") || ends_with(n, ".attn.proj.weight") ||
       ends_with(n, ".mlp.fc.weight") || ends_with(n, ".mlp.proj.weight")))
    return PG_TRAIN_GROUP_MATRIX;
  return PG_TRAIN_GROUP_SCALAR;
}

static size_t tensor_off(const pg_trainer *t, size_t i) { return t->off[i]; }

void pg_trainer_free(pg_trainer *t) {
  if (!t) return;
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
    free(t->g[g].ix);
    free(t->g[g].spans);
    pg_engine_free(t->e, t->g[g].muon_buf);
    free(t->g[g].buf_off);
    pg_optim_free(t->g[g].opt);
  }
  free(t->off);
  pg_engine_free(t->e, t->ema);
  pg_engine_free(t->e, t->swa_sum);
  pg_engine_free(t->e, t->norm2);
  free(t->ids);
  free(t->tgt);
  free(t->nll);
  free(t->dnll);
  free(t->val_tok);
  if (t->have_tables) pg_spm_tables_free(&t->tables);
  pg_model_free(t->shadow);
  pg_tape_free(t->tp);
  pg_batches_free(t->ld);
  pg_model_free(t->m);
  free(t);
}

static int nomem(pg_err *err) {
  return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
}

/* Zeroed engine memory for optimizer state; a failure is reported here (not at the next sync). */
static void *engine_state(pg_trainer *t, size_t bytes, pg_err *err, int *rc) {
  if (*rc) return NULL;
  void *p = pg_engine_alloc(t->e, bytes);
  if (!p) {
    pg_engine_sync(t->e, NULL);
    *rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                     "cannot allocate %zu bytes of optimizer state on the %s engine", bytes,
                     t->e->info.name);
  }
  return p;
}

static int build_groups(pg_trainer *t, pg_err *err) {
  pg_model *m = t->m;
  size_t nt = pg_model_tensor_count(m);
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
    t->g[g].ix = malloc((nt ? nt : 1) * sizeof(size_t));
    t->g[g].spans = malloc((nt ? nt : 1) * sizeof(pg_optim_span));
    t->g[g].buf_off = malloc((nt ? nt : 1) * sizeof(size_t));
    if (!t->g[g].ix || !t->g[g].spans || !t->g[g].buf_off) return nomem(err);
  }
  t->off = malloc((nt + 1) * sizeof *t->off);
  if (!t->off) return nomem(err);
  size_t off = 0;
  for (size_t i = 0; i < nt; i++) {
    const pg_arch_tensor *at = pg_model_tensor(m, i);
    int g = group_of(at);
    group_state *gs = &t->g[g];
    size_t n = (size_t)pg_arch_tensor_numel(at);
    t->off[i] = off;
    gs->buf_off[gs->n] = gs->numel;
    /* p and g are taken on the engine at each step */
    gs->spans[gs->n] = (pg_optim_span){.n = n, .state = gs->numel};
    gs->ix[gs->n++] = i;
    gs->numel += n;
    off += n;
  }
  t->off[nt] = off;
  int rc = PG_OK;
  for (int g = 0; g < PG_TRAIN_GROUP_N && !rc; g++) {
    group_state *gs = &t->g[g];
    const pg_train_group *gr = &t->c.group[g];
    if (gr->kind == PG_TOPT_MUON) {
      gs->muon_buf = engine_state(t, gs->numel * sizeof *gs->muon_buf, err, &rc);
    } else {
      pg_optim_cfg oc = {.kind = gr->kind == PG_TOPT_ADAMW ? PG_OPTIM_ADAMW : PG_OPTIM_SGD,
                         .momentum = gr->momentum, .beta1 = t->c.beta1, .beta2 = t->c.beta2,
                         .eps = t->c.eps, .weight_decay = gr->weight_decay};
      rc = pg_optim_create_on(&gs->opt, &oc, gs->numel ? gs->numel : 1, t->e, err);
    }
  }
  t->norm2 = engine_state(t, sizeof *t->norm2, err, &rc);
  return rc;
}

static int open_val(pg_trainer *t, pg_err *err) {
  if (!t->c.val[0]) return PG_OK;
  pg_val_data vd;
  PG_TRY(pg_val_data_open(&vd, t->c.val, NULL, (uint32_t)t->c.arch.vocab_size, t->c.val_tokens,
                          err));
  int rc = PG_OK;
  if (vd.n < 2)
    rc = pg_err_set(err, PG_E_ARG, t->c.val, PG_NO_OFFSET, "fewer than 2 validation tokens");
  t->val_tok = vd.tok; /* the trainer keeps the tokens; the files are closed */
  t->val_n = vd.n;
  vd.tok = NULL;
  pg_val_data_free(&vd);
  if (rc || !t->c.tokenizer[0]) return rc;
  pg_spm *spm = NULL;
  rc = pg_spm_open_file(&spm, t->c.tokenizer, err);
  if (!rc) rc = pg_spm_tables_build(&t->tables, spm, (uint32_t)t->c.arch.vocab_size, 0, err);
  if (!rc) t->have_tables = 1;
  pg_spm_free(spm);
  return rc;
}

int pg_trainer_create(pg_trainer **out, const pg_train_cfg *c, pg_engine *e, pg_err *err) {
  *out = NULL;
  PG_TRY(pg_train_cfg_validate(c, err));
  pg_trainer *t = calloc(1, sizeof *t);
  if (!t) return nomem(err);
  t->c = *c;
  t->e = e;
  t->total = c->steps;
  int rc = pg_model_create(&t->m, &c->arch, err);
  if (!rc) {
    pg_model_init(t->m, c->init_seed);
    rc = pg_model_enable_grads(t->m, err);
  }
  if (!rc) rc = pg_model_bind(t->m, e, err); /* the optimizers' state is made beside it */
  if (!rc) rc = pg_tape_create(&t->tp, e, 1);
  if (!rc)
    rc = pg_batches_open(&t->ld, c->train, c->loader, c->seq_len, (uint32_t)c->arch.vocab_size,
                        c->arch.bos_id, c->data_seed, err);
  if (!rc) rc = build_groups(t, err);
  size_t bt = (size_t)c->batch * (size_t)c->seq_len;
  t->np = t->m ? pg_model_param_count(t->m) : 0;
  if (!rc) {
    t->ids = malloc(bt * sizeof *t->ids);
    t->tgt = malloc(bt * sizeof *t->tgt);
    t->nll = malloc(bt * sizeof *t->nll);
    t->dnll = malloc(bt * sizeof *t->dnll);
    if (!t->ids || !t->tgt || !t->nll || !t->dnll) rc = nomem(err);
  }
  if (!rc && c->ema_decay > 0) {
    t->ema = engine_state(t, t->np * sizeof *t->ema, err, &rc);
    if (!rc) pg_engine_copy(e, t->ema, pg_model_params_engine(t->m), t->np * sizeof *t->ema);
  }
  if (!rc && c->swa_every > 0) t->swa_sum = engine_state(t, t->np * sizeof *t->swa_sum, err, &rc);
  if (!rc) rc = open_val(t, err);
  if (rc) {
    pg_trainer_free(t);
    return rc;
  }
  *out = t;
  return PG_OK;
}

/* Recurrence: on once step ≥ recur_step and frac ≥ recur_frac (always on when the arch has no
 * thresholds). */
static int loops_at(const pg_trainer *t, uint64_t step, double frac) {
  const pg_arch *a = &t->c.arch;
  return step >= (uint64_t)a->structure.recur_step && frac >= a->structure.recur_frac;
}

int pg_trainer_set_comm(pg_trainer *t, pg_comm *c, pg_err *err) {
  const int n = c ? pg_comm_size(c) : 1;
  if (t->c.batch % n != 0)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "data parallel: the batch of %d rows does not split among %d ranks (make "
                      "it a multiple)", t->c.batch, n);
  if (c && pg_comm_engine(c) != t->e)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "data parallel: the comm's rank %d drives another engine", pg_comm_rank(c));
  t->comm = c && n > 1 ? c : NULL;
  return PG_OK;
}

int pg_trainer_ranks(const pg_trainer *t) { return t->comm ? pg_comm_size(t->comm) : 1; }

void pg_trainer_set_precision(pg_trainer *t, pg_precision p) {
  t->prec = p == PG_PREC_BF16 ? PG_PREC_BF16 : PG_PREC_FP32;
  pg_model_set_precision(t->m, t->prec);
  if (t->shadow) pg_model_set_precision(t->shadow, t->prec);
}
pg_precision pg_trainer_precision(const pg_trainer *t) { return t->prec; }

int pg_trainer_step(pg_trainer *t, pg_train_step_info *info, pg_err *err) {
  const pg_train_cfg *c = &t->c;
  int B = c->batch, T = c->seq_len;
  size_t bt = (size_t)B * (size_t)T;
  /* data parallel: this rank's rows [r0, r0 + Bl) of the batch every rank reads */
  const int nr = pg_trainer_ranks(t), Bl = B / nr, r0 = t->comm ? pg_comm_rank(t->comm) * Bl : 0;
  const size_t bl = (size_t)Bl * (size_t)T, o0 = (size_t)r0 * (size_t)T;
  uint64_t total = t->total ? t->total : UINT64_MAX;
  double frac = t->total ? (double)t->step / (double)total : 0.0;
  int loops = loops_at(t, t->step, frac);
  pg_model_set_loops(t->m, loops);
  PG_TRY(pg_batches_next(t->ld, B, t->ids, t->tgt, err));
  pg_model_zero_grads(t->m);
  pg_batch b = {.B = Bl, .T = T, .ids = t->ids + o0, .targets = t->tgt + o0};
  for (size_t i = 0; i < bl; i++) t->dnll[i] = (float)(1.0 / (double)bt);
  int rc = pg_model_forward(t->m, t->tp, &b, NULL, t->nll + o0, t->dnll, err);
  /* bf16: the backward products may round their operands too (an engine opened with precision
   * bf16 runs them on the tensor cores); only the trainer's backward asks for it */
  t->e->bf16_grad = t->prec == PG_PREC_BF16;
  if (!rc) rc = pg_model_backward(t->m, t->tp, err);
  t->e->bf16_grad = 0;
  pg_model_set_loops(t->m, 1);
  /* Data parallel: every rank gets the whole batch's losses (so the same loss, in the one-rank
   * order) and the gradient summed over the ranks in rank order (so the same clip and update on
   * every rank: the optimizer state stays replicated). */
  if (!rc && t->comm) rc = pg_comm_allgather(t->comm, t->nll + o0, t->nll, bl * sizeof *t->nll,
                                             err);
  if (!rc && t->comm)
    rc = pg_comm_allreduce_sum(t->comm, pg_model_grads_engine(t->m), t->np, err);
  if (rc) return rc;
  double loss = 0;
  for (size_t i = 0; i < bt; i++) loss += t->nll[i];
  loss /= (double)bt;
  if (!isfinite(loss))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "step %llu: the loss is not finite (%g); lower the learning rates",
                      (unsigned long long)t->step + 1, loss);
  /* The optimizers run on the engine, on its copies of the parameters and gradients: the
   * clip's norm (every parameter in canonical order: one span) is the only value that comes
   * back. */
  pg_engine *e = t->e;
  const pg_ops *o = &e->ops;
  pg_real *P = pg_model_params_engine(t->m), *G = pg_model_grads_engine(t->m);
  pg_optim_span all = {.p = P, .g = G, .n = t->np};
  double gn = pg_clip_grad_norm_on(e, t->norm2, &all, 1, c->grad_clip);
  double lr_mul = pg_lr_mul(&c->sched, t->step, frac);
  double mu = pg_muon_momentum(&c->muon, t->step);
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
    group_state *gs = &t->g[g];
    const pg_train_group *gr = &c->group[g];
    double lr = gr->lr * lr_mul;
    for (size_t k = 0; k < gs->n; k++) {
      size_t at_off = tensor_off(t, gs->ix[k]);
      gs->spans[k].p = P + at_off;
      gs->spans[k].g = G + at_off;
    }
    if (gr->kind == PG_TOPT_MUON) {
      const pg_muon_opts *mo = &c->muon;
      /* a bf16 run: the records' bf16 Newton–Schulz (spec/train.md §10) */
      const int ns_bf16 = t->prec == PG_PREC_BF16 ? PG_NS_BF16 : 0;
      for (size_t k = 0; k < gs->n; k++) {
        const pg_arch_tensor *at = pg_model_tensor(t->m, gs->ix[k]);
        int rows = (int)at->shape[0], cols = (int)(gs->spans[k].n / at->shape[0]);
        o->muon_step(o, gs->spans[k].p, gs->spans[k].g, gs->muon_buf + gs->buf_off[k], rows,
                     cols, lr, mu, gr->weight_decay, mo->nesterov, mo->row_normalize,
                     mo->ns_kind | ns_bf16, mo->ns_steps);
      }
    } else if (gs->n) {
      pg_optim_step(gs->opt, gs->spans, gs->n, lr);
    }
  }
  t->step++;
  t->tokens += bt;
  if (t->ema) {
    o->ema_update(o, t->ema, P, t->np, c->ema_decay);
    t->ema_updates++;
  }
  if (t->swa_sum && t->step % c->swa_every == 0 && t->step >= c->swa_start &&
      lr_mul < c->swa_below) {
    o->swa_add(o, t->swa_sum, P, t->np);
    t->swa_count++;
  }
  PG_TRY(pg_engine_sync(e, err));
  if (info)
    *info = (pg_train_step_info){.step = t->step, .loss = loss, .grad_norm = gn,
                                 .lr_mul = lr_mul, .momentum = mu, .loops = loops,
                                 .tokens = t->tokens};
  return PG_OK;
}

/* The export weights into d, np values of the trainer's engine's memory. */
static void export_on_engine(pg_trainer *t, pg_real *d) {
  const pg_ops *o = &t->e->ops;
  size_t bytes = t->np * sizeof *d;
  if (t->ema)
    pg_engine_copy(t->e, d, t->ema, bytes);
  else if (t->swa_sum && t->swa_count)
    o->swa_average(o, d, t->swa_sum, t->np, t->swa_count);
  else
    pg_engine_copy(t->e, d, pg_model_params_engine(t->m), bytes);
}

/* The export weights into host memory d (np values): one download. */
static int export_to_host(pg_trainer *t, float *d, pg_err *err) {
  size_t bytes = t->np * sizeof *d;
  if (t->ema) {
    pg_engine_download(t->e, d, t->ema, bytes);
  } else if (t->swa_sum && t->swa_count) {
    pg_real *tmp = pg_engine_alloc(t->e, bytes);
    if (!tmp) {
      pg_engine_sync(t->e, NULL);
      return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                        "export: cannot allocate the SWA average on the %s engine",
                        t->e->info.name);
    }
    export_on_engine(t, tmp);
    pg_engine_download(t->e, d, tmp, bytes);
    pg_engine_free(t->e, tmp);
  } else {
    memcpy(d, pg_model_params_read(t->m), bytes);
  }
  return pg_engine_sync(t->e, err);
}

int pg_trainer_export(pg_trainer *t, pg_model *dst, pg_err *err) {
  if (pg_model_param_count(dst) != t->np)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "export: a model of another arch");
  if (pg_model_engine(dst) == t->e) { /* both on the engine: no round trip through the host */
    export_on_engine(t, pg_model_params_engine(dst));
    return pg_engine_sync(t->e, err);
  }
  return export_to_host(t, pg_model_params(dst), err);
}

int pg_trainer_validate(pg_trainer *t, int export_weights, double *loss, double *bpb,
                        uint64_t *targets, pg_err *err) {
  if (!t->val_tok)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "no validation shards configured");
  pg_model *m = t->m;
  if (export_weights) {
    if (!t->shadow) {
      PG_TRY(pg_model_create(&t->shadow, &t->c.arch, err));
      pg_model_set_precision(t->shadow, t->prec);
    }
    PG_TRY(pg_trainer_export(t, t->shadow, err));
    m = t->shadow;
  }
  pg_protocol p;
  pg_protocol_defaults(&p, PG_PROTO_PLAIN);
  p.seq_len = t->c.seq_len;
  p.batch = t->c.batch;
  p.trim = 1; /* whole windows: ((n − 1) / T)·T + 1 tokens, as the records load them */
  /* without byte tables the sums still give the loss; bytes come out as ones (bpb discarded) */
  uint16_t *ones = NULL;
  pg_val val = {.tok = t->val_tok, .n = t->val_n, .tables = t->have_tables ? &t->tables : NULL};
  if (!t->have_tables) {
    ones = malloc((size_t)t->val_n * sizeof *ones);
    if (!ones) return nomem(err);
    for (uint64_t i = 0; i < t->val_n; i++) ones[i] = 1;
    val.bytes = ones;
  }
  pg_eval_result r = {0};
  int rc = pg_eval_run(m, t->e, &val, &p, NULL, &r, err);
  if (!rc) {
    *loss = r.val_loss;
    *bpb = t->have_tables ? r.val_bpb : NAN;
    if (targets) *targets = r.scored;
  }
  pg_eval_result_free(&r);
  free(ones);
  return rc;
}

/* ---- checkpoints ----------------------------------------------------------------------------- */

static int add_f32(pg_st_writer *w, const char *prefix, const pg_arch_tensor *at, const float *v,
                   pg_err *err) {
  char name[PG_ARCH_NAME_MAX + 32];
  snprintf(name, sizeof name, "%s%s", prefix, at->name);
  uint64_t n = pg_arch_tensor_numel(at);
  return pg_st_writer_add(w, name, PG_ST_F32, (uint32_t)at->ndim, at->ndim ? at->shape : NULL, v,
                          (size_t)n * sizeof(float), err);
}

static int add_f64(pg_st_writer *w, const char *prefix, const pg_arch_tensor *at, const double *v,
                   pg_err *err) {
  char name[PG_ARCH_NAME_MAX + 32];
  snprintf(name, sizeof name, "%s%s", prefix, at->name);
  uint64_t n = pg_arch_tensor_numel(at);
  return pg_st_writer_add(w, name, PG_ST_F64, (uint32_t)at->ndim, at->ndim ? at->shape : NULL, v,
                          (size_t)n * sizeof(double), err);
}

static int meta_u64(pg_st_writer *w, const char *key, uint64_t v, pg_err *err) {
  char b[32];
  snprintf(b, sizeof b, "%llu", (unsigned long long)v);
  return pg_st_writer_set_meta(w, key, b, err);
}

/* Host copies of the engine-resident training state, for a checkpoint: on a host-memory engine
 * the state itself, else one download per array into buffers the checkpoint frees. */
typedef struct host_state {
  const float *exp, *muon[PG_TRAIN_GROUP_N], *s0[PG_TRAIN_GROUP_N], *s1[PG_TRAIN_GROUP_N];
  const double *swa;
  void *own[3 * PG_TRAIN_GROUP_N + 2];
  int nown;
} host_state;

static const void *state_to_host(pg_trainer *t, host_state *h, const void *src, size_t bytes,
                                 int *rc, pg_err *err) {
  if (!src || *rc) return NULL;
  if (t->e->host_memory) return src;
  void *d = malloc(bytes ? bytes : 1);
  if (!d) {
    *rc = nomem(err);
    return NULL;
  }
  h->own[h->nown++] = d;
  pg_engine_download(t->e, d, src, bytes);
  return d;
}

static int state_fetch(pg_trainer *t, host_state *h, pg_err *err) {
  memset(h, 0, sizeof *h);
  int rc = PG_OK;
  if (t->ema || (t->swa_sum && t->swa_count)) {
    float *exp = malloc(t->np * sizeof *exp + 1);
    if (!exp) return nomem(err);
    h->own[h->nown++] = exp;
    h->exp = exp;
    rc = export_to_host(t, exp, err);
  }
  h->swa = state_to_host(t, h, t->swa_sum, t->np * sizeof *t->swa_sum, &rc, err);
  for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
    group_state *gs = &t->g[g];
    size_t fb = gs->numel * sizeof(float);
    h->muon[g] = state_to_host(t, h, gs->muon_buf, fb, &rc, err);
    if (gs->opt) {
      h->s0[g] = state_to_host(t, h, pg_optim_state(gs->opt, 0), fb, &rc, err);
      h->s1[g] = state_to_host(t, h, pg_optim_state(gs->opt, 1), fb, &rc, err);
    }
  }
  return rc;
}

static void state_release(host_state *h) {
  for (int i = 0; i < h->nown; i++) free(h->own[i]);
  h->nown = 0;
}

/* Host memory to read engine-resident state into before it is uploaded: the state itself on a
 * host-memory engine, else a buffer freed by state_release (contents unspecified). */
static void *staging(pg_trainer *t, host_state *h, void *dst, size_t bytes, int *rc,
                     pg_err *err) {
  if (!dst || *rc) return NULL;
  if (t->e->host_memory) return dst;
  void *d = malloc(bytes ? bytes : 1);
  if (!d) *rc = nomem(err);
  else h->own[h->nown++] = d;
  return d;
}

int pg_trainer_checkpoint(pg_trainer *t, const char *path, pg_err *err) {
  pg_st_writer *w = NULL;
  PG_TRY(pg_st_writer_create(&w, err));
  pg_model *m = t->m;
  size_t nt = pg_model_tensor_count(m);
  host_state h;
  int rc = state_fetch(t, &h, err);
  int averaged = h.exp != NULL;
  const float *live = pg_model_params_read(m);
  /* the weights to export, under the arch's names */
  for (size_t i = 0; !rc && i < nt; i++) {
    const float *v = (averaged ? h.exp : live) + tensor_off(t, i);
    rc = add_f32(w, "", pg_model_tensor(m, i), v, err);
  }
  /* the training state */
  for (size_t i = 0; !rc && averaged && i < nt; i++)
    rc = add_f32(w, "train.param.", pg_model_tensor(m, i), live + tensor_off(t, i), err);
  for (size_t i = 0; !rc && h.swa && i < nt; i++)
    rc = add_f64(w, "train.swa_sum.", pg_model_tensor(m, i), h.swa + tensor_off(t, i), err);
  for (int g = 0; !rc && g < PG_TRAIN_GROUP_N; g++) {
    group_state *gs = &t->g[g];
    for (size_t k = 0; !rc && k < gs->n; k++) {
      const pg_arch_tensor *at = pg_model_tensor(m, gs->ix[k]);
      if (h.muon[g]) {
        rc = add_f32(w, "train.muon.", at, h.muon[g] + gs->buf_off[k], err);
      } else {
        if (h.s0[g]) rc = add_f32(w, "train.m.", at, h.s0[g] + gs->buf_off[k], err);
        if (!rc && h.s1[g]) rc = add_f32(w, "train.v.", at, h.s1[g] + gs->buf_off[k], err);
      }
    }
  }
  /* the counters and the data position */
  char *arch = NULL, *cfg = NULL;
  if (!rc) rc = pg_arch_serialize(&t->c.arch, &arch, err);
  if (!rc) rc = pg_st_writer_set_meta(w, "arch.json", arch, err);
  if (!rc) {
    cfg = pg_train_cfg_json(&t->c);
    rc = cfg ? pg_st_writer_set_meta(w, "pgtrain.config", cfg, err) : nomem(err);
  }
  if (!rc) rc = pg_st_writer_set_meta(w, "pgtrain.format", "1", err);
  if (!rc) rc = meta_u64(w, "pgtrain.step", t->step, err);
  if (!rc) rc = meta_u64(w, "pgtrain.total_steps", t->total, err);
  if (!rc) rc = meta_u64(w, "pgtrain.tokens", t->tokens, err);
  if (!rc) rc = meta_u64(w, "pgtrain.ema_updates", t->ema_updates, err);
  if (!rc) rc = meta_u64(w, "pgtrain.swa_count", t->swa_count, err);
  if (!rc) rc = meta_u64(w, "pgtrain.ranks", (uint64_t)pg_trainer_ranks(t), err); /* a record */
  for (int g = 0; !rc && g < PG_TRAIN_GROUP_N; g++) {
    char key[64];
    snprintf(key, sizeof key, "pgtrain.optim_steps.%s", GROUP_NAMES[g]);
    rc = meta_u64(w, key, t->g[g].opt ? pg_optim_steps(t->g[g].opt) : t->step, err);
  }
  pg_batches_pos lp = pg_batches_get_pos(t->ld);
  if (!rc) rc = meta_u64(w, "pgtrain.loader.epoch", lp.epoch, err);
  if (!rc) rc = meta_u64(w, "pgtrain.loader.offset", lp.offset, err);
  if (!rc) rc = meta_u64(w, "pgtrain.loader.rng", lp.rng, err);
  if (!rc) rc = meta_u64(w, "pgtrain.loader.phase", lp.phase, err);
  if (!rc) rc = meta_u64(w, "pgtrain.loader.skipped", lp.skipped, err);
  if (!rc) rc = pg_st_writer_write(w, path, err);
  free(arch);
  free(cfg);
  state_release(&h);
  pg_st_writer_free(w);
  return rc;
}

static int read_u64(const pg_st *st, const char *path, const char *key, uint64_t *out,
                    pg_err *err) {
  const char *v = pg_st_meta_get(st, key);
  if (!v) return pg_err_set(err, PG_E_NOT_FOUND, path, PG_NO_OFFSET, "no %s in __metadata__", key);
  /* decimal digits only: strtoull alone would take a sign, blanks, and wrap on overflow */
  uint64_t u = 0;
  const char *c = v;
  for (; *c >= '0' && *c <= '9'; c++)
    if (u > (UINT64_MAX - (uint64_t)(*c - '0')) / 10) break;
    else u = u * 10 + (uint64_t)(*c - '0');
  if (c == v || *c)
    return pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET, "%s: '%.40s' is not a count", key,
                      v);
  *out = u;
  return PG_OK;
}

/* Check the checkpoint tensor PREFIX+NAME of the arch tensor at (present, n elements of F32 or
 * F64, every value finite), then copy it into dst unless dst is NULL (the checking pass). */
static int read_tensor(const pg_st *st, const char *path, const char *prefix,
                       const pg_arch_tensor *at, void *dst, int f64, pg_err *err) {
  char name[PG_ARCH_NAME_MAX + 32];
  snprintf(name, sizeof name, "%s%s", prefix, at->name);
  const pg_st_tensor *ti;
  if (pg_st_find(&ti, st, name, NULL) != PG_OK)
    return pg_err_set(err, PG_E_NOT_FOUND, path, PG_NO_OFFSET, "tensor %s: missing", name);
  uint64_t n = pg_arch_tensor_numel(at);
  if (ti->numel != n || ti->dtype != (f64 ? PG_ST_F64 : PG_ST_F32))
    return pg_err_set(err, PG_E_SIZE_MISMATCH, path, PG_NO_OFFSET,
                      "tensor %s: %s of %llu elements, not %s of %llu", name, ti->dtype_name,
                      (unsigned long long)ti->numel, f64 ? "F64" : "F32",
                      (unsigned long long)n);
  if (dst) {
    memcpy(dst, ti->data, (size_t)ti->nbytes);
    return PG_OK;
  }
  for (uint64_t i = 0; i < n; i++) {
    double x;
    if (f64) {
      memcpy(&x, ti->data + 8 * i, 8);
    } else {
      float f;
      memcpy(&f, ti->data + 4 * i, 4);
      x = f;
    }
    if (!isfinite(x))
      return pg_err_set(err, PG_E_ARG, path, ti->offset + (f64 ? 8 : 4) * i,
                        "tensor %s: element %llu is not finite", name, (unsigned long long)i);
  }
  return PG_OK;
}

int pg_trainer_resume(pg_trainer *t, const char *path, pg_err *err) {
  pg_st *st = NULL;
  PG_TRY(pg_st_open_file(&st, path, err));
  int rc = PG_OK;
  /* the same run: the identity of the configuration must match */
  const char *cfg_text = pg_st_meta_get(st, "pgtrain.config");
  const char *fmt = pg_st_meta_get(st, "pgtrain.format");
  if (!cfg_text || !fmt || strcmp(fmt, "1"))
    rc = pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET,
                    "not a pgtrain checkpoint (no pgtrain.config / pgtrain.format 1)");
  if (!rc) {
    pg_train_cfg saved;
    pg_err e2;
    int prc = pg_train_cfg_parse(&saved, cfg_text, strlen(cfg_text), path, &e2);
    if (prc) {
      if (err) *err = e2;
      rc = prc;
    } else {
      char *a = dump(cfg_json(&saved, 1)), *b = dump(cfg_json(&t->c, 1));
      if (!a || !b) rc = nomem(err);
      else if (strcmp(a, b))
        rc = pg_err_set(err, PG_E_ARG, path, PG_NO_OFFSET,
                        "the checkpoint is of another run: its configuration differs from this "
                        "one (only limits, logging and intervals may change on resume)");
      free(a);
      free(b);
    }
  }
  uint64_t step = 0, total = 0, tokens = 0, ema_u = 0, swa_c = 0;
  pg_batches_pos lp = {0};
  if (!rc) rc = read_u64(st, path, "pgtrain.step", &step, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.total_steps", &total, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.tokens", &tokens, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.ema_updates", &ema_u, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.swa_count", &swa_c, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.loader.epoch", &lp.epoch, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.loader.offset", &lp.offset, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.loader.rng", &lp.rng, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.loader.phase", &lp.phase, err);
  if (!rc) rc = read_u64(st, path, "pgtrain.loader.skipped", &lp.skipped, err);
  pg_model *m = t->m;
  size_t nt = pg_model_tensor_count(m);
  int averaged = t->ema || (t->swa_sum && swa_c);
  /* the engine-resident state is read into host staging (the state itself on a host-memory
   * engine) and uploaded once checked */
  host_state h;
  memset(&h, 0, sizeof h);
  float *ema = NULL, *muon[PG_TRAIN_GROUP_N] = {0}, *s0[PG_TRAIN_GROUP_N] = {0},
        *s1[PG_TRAIN_GROUP_N] = {0};
  double *swa = NULL;
  if (!rc) {
    ema = staging(t, &h, t->ema, t->np * sizeof(float), &rc, err);
    swa = staging(t, &h, t->swa_sum, t->np * sizeof(double), &rc, err);
    for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
      group_state *gs = &t->g[g];
      size_t fb = gs->numel * sizeof(float);
      muon[g] = staging(t, &h, gs->muon_buf, fb, &rc, err);
      if (gs->opt) {
        s0[g] = staging(t, &h, pg_optim_state(gs->opt, 0), fb, &rc, err);
        s1[g] = staging(t, &h, pg_optim_state(gs->opt, 1), fb, &rc, err);
      }
    }
  }
  /* pass 0 checks every tensor, the loader position is checked next, and only then does pass 1
   * overwrite the trainer: a refused checkpoint leaves the trainer as it was */
  for (int pass = 0; pass < 2 && !rc; pass++) {
    if (pass == 1) rc = pg_batches_set_pos(t->ld, &lp, err);
#define DST(p) (pass ? (void *)(p) : NULL)
    for (size_t i = 0; !rc && i < nt; i++) {
      const pg_arch_tensor *at = pg_model_tensor(m, i);
      rc = read_tensor(st, path, averaged ? "train.param." : "", at, DST(pg_model_data(m, i)), 0,
                       err);
      if (!rc && ema) rc = read_tensor(st, path, "", at, DST(ema + tensor_off(t, i)), 0, err);
      if (!rc && swa)
        rc = read_tensor(st, path, "train.swa_sum.", at, DST(swa + tensor_off(t, i)), 1, err);
    }
    for (int g = 0; !rc && g < PG_TRAIN_GROUP_N; g++) {
      group_state *gs = &t->g[g];
      for (size_t k = 0; !rc && k < gs->n; k++) {
        const pg_arch_tensor *at = pg_model_tensor(m, gs->ix[k]);
        if (muon[g]) {
          rc = read_tensor(st, path, "train.muon.", at, DST(muon[g] + gs->buf_off[k]), 0, err);
        } else {
          if (s0[g])
            rc = read_tensor(st, path, "train.m.", at, DST(s0[g] + gs->buf_off[k]), 0, err);
          if (!rc && s1[g])
            rc = read_tensor(st, path, "train.v.", at, DST(s1[g] + gs->buf_off[k]), 0, err);
        }
      }
      if (!rc && gs->opt) {
        char key[64];
        uint64_t os = 0;
        snprintf(key, sizeof key, "pgtrain.optim_steps.%s", GROUP_NAMES[g]);
        rc = read_u64(st, path, key, &os, err);
        if (!rc && pass) pg_optim_set_steps(gs->opt, os);
      }
    }
#undef DST
  }
  if (!rc && !t->e->host_memory) { /* the checked state up to the engine */
    pg_engine *e = t->e;
    if (ema) pg_engine_upload(e, t->ema, ema, t->np * sizeof(float));
    if (swa) pg_engine_upload(e, t->swa_sum, swa, t->np * sizeof(double));
    for (int g = 0; g < PG_TRAIN_GROUP_N; g++) {
      group_state *gs = &t->g[g];
      size_t fb = gs->numel * sizeof(float);
      if (muon[g]) pg_engine_upload(e, gs->muon_buf, muon[g], fb);
      if (s0[g]) pg_engine_upload(e, pg_optim_state(gs->opt, 0), s0[g], fb);
      if (s1[g]) pg_engine_upload(e, pg_optim_state(gs->opt, 1), s1[g], fb);
    }
    rc = pg_engine_sync(e, err);
  }
  state_release(&h);
  if (!rc) {
    t->step = step;
    t->total = total;
    t->tokens = tokens;
    t->ema_updates = ema_u;
    t->swa_count = swa_c;
  }
  pg_st_free(st);
  return rc;
}
