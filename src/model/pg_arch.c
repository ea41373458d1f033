/* pg_arch.c: the arch (spec/arch.md): one table of options drives parsing, defaults, canonical
 * serialization and comparison; the rules are checked in pg_arch_validate; the tensor list is
 * expanded from a validated arch. */
#include "pg_arch.h"
#include "pg_json.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"
#include "pg_ops.h"

/* ---- the option table ---- */

enum { T_INT, T_NUM, T_BOOL, T_ENUM, T_LIST };

static const char *const LN_NAMES[] = {"none", "physical", "virtual", NULL};
static const char *const SIGN_NAMES[] = {"records", "standard", NULL};
static const char *const GATE_NAMES[] = {"none", "2sigma_first12", "dense_sigmoid",
                                         "sparse_sigmoid", NULL};
static const char *const ACT_NAMES[] = {"relu2", "leaky_relu2", NULL};
static const char *const SMEAR_NAMES[] = {"none", "v1", "v2", NULL};
static const char *const SKIP_NAMES[] = {"none", "plain", "gated", NULL};
static const char *const PAR_NAMES[] = {"none", "gptj", "two_lane", NULL};

/* Options whose default depends on other options (resolved after parsing when absent). */
enum { D_NONE, D_HEAD_DIM, D_ROPE_DIMS, D_HIDDEN, D_ENCODER, D_DECODER, D_BIGRAM_PROJ,
       D_READOUT_LAYER };

typedef struct opt {
  const char *group; /* NULL: top level */
  const char *key;
  int type;
  size_t off;
  const char *const *names; /* T_ENUM */
  int derived;              /* D_* */
} opt;

#define OPT(g, k, t, field, names, d) {g, k, t, offsetof(pg_arch, field), names, d}

static const opt OPTS[] = {
    OPT(NULL, "vocab_size", T_INT, vocab_size, NULL, D_NONE),
    OPT(NULL, "dim", T_INT, dim, NULL, D_NONE),
    OPT(NULL, "layers", T_INT, layers, NULL, D_NONE),
    OPT(NULL, "heads", T_INT, heads, NULL, D_NONE),
    OPT(NULL, "kv_heads", T_INT, kv_heads, NULL, D_NONE),
    OPT(NULL, "head_dim", T_INT, head_dim, NULL, D_HEAD_DIM),
    OPT(NULL, "bos_id", T_INT, bos_id, NULL, D_NONE),
    OPT("block", "norm_eps", T_NUM, block.norm_eps, NULL, D_NONE),
    OPT("block", "ln_scale", T_ENUM, block.ln_scale, LN_NAMES, D_NONE),
    OPT("block", "resid_mix", T_BOOL, block.resid_mix, NULL, D_NONE),
    OPT("block", "attn_scale", T_BOOL, block.attn_scale, NULL, D_NONE),
    OPT("block", "mlp_scale", T_BOOL, block.mlp_scale, NULL, D_NONE),
    OPT("attention", "qk_norm", T_BOOL, attention.qk_norm, NULL, D_NONE),
    OPT("attention", "q_gain", T_NUM, attention.q_gain, NULL, D_NONE),
    OPT("attention", "rope_dims", T_INT, attention.rope_dims, NULL, D_ROPE_DIMS),
    OPT("attention", "rope_base", T_NUM, attention.rope_base, NULL, D_NONE),
    OPT("attention", "rope_sign", T_ENUM, attention.rope_sign, SIGN_NAMES, D_NONE),
    OPT("attention", "rope_ntk_len", T_INT, attention.rope_ntk_len, NULL, D_NONE),
    OPT("attention", "causal", T_BOOL, attention.causal, NULL, D_NONE),
    OPT("attention", "doc_mask", T_BOOL, attention.doc_mask, NULL, D_NONE),
    OPT("attention", "doc_max_len", T_INT, attention.doc_max_len, NULL, D_NONE),
    OPT("attention", "xsa_layers", T_LIST, attention.xsa_layers, NULL, D_NONE),
    OPT("attention", "gate", T_ENUM, attention.gate, GATE_NAMES, D_NONE),
    OPT("attention", "gate_scale", T_NUM, attention.gate_scale, NULL, D_NONE),
    OPT("attention", "gate_window", T_INT, attention.gate_window, NULL, D_NONE),
    OPT("mlp", "hidden", T_INT, mlp.hidden, NULL, D_HIDDEN),
    OPT("mlp", "act", T_ENUM, mlp.act, ACT_NAMES, D_NONE),
    OPT("mlp", "leaky_slope", T_NUM, mlp.leaky_slope, NULL, D_NONE),
    OPT("embeddings", "bigram_buckets", T_INT, embeddings.bigram_buckets, NULL, D_NONE),
    OPT("embeddings", "bigram_dim", T_INT, embeddings.bigram_dim, NULL, D_NONE),
    OPT("embeddings", "bigram_proj", T_BOOL, embeddings.bigram_proj, NULL, D_BIGRAM_PROJ),
    OPT("embeddings", "bigram_scale", T_NUM, embeddings.bigram_scale, NULL, D_NONE),
    OPT("embeddings", "ve_layers", T_LIST, embeddings.ve_layers, NULL, D_NONE),
    OPT("embeddings", "ve_dim", T_INT, embeddings.ve_dim, NULL, D_NONE),
    OPT("embeddings", "ve_scale", T_NUM, embeddings.ve_scale, NULL, D_NONE),
    OPT("embeddings", "smear", T_ENUM, embeddings.smear, SMEAR_NAMES, D_NONE),
    OPT("embeddings", "smear_bos_mask", T_BOOL, embeddings.smear_bos_mask, NULL, D_NONE),
    OPT("embeddings", "smear_window", T_INT, embeddings.smear_window, NULL, D_NONE),
    OPT("structure", "skips", T_ENUM, structure.skips, SKIP_NAMES, D_NONE),
    OPT("structure", "encoder", T_LIST, structure.encoder, NULL, D_ENCODER),
    OPT("structure", "decoder", T_LIST, structure.decoder, NULL, D_DECODER),
    OPT("structure", "recur_step", T_INT, structure.recur_step, NULL, D_NONE),
    OPT("structure", "recur_frac", T_NUM, structure.recur_frac, NULL, D_NONE),
    OPT("structure", "parallel", T_ENUM, structure.parallel, PAR_NAMES, D_NONE),
    OPT("structure", "parallel_start", T_INT, structure.parallel_start, NULL, D_NONE),
    OPT("structure", "parallel_resid_init", T_NUM, structure.parallel_resid_init, NULL, D_NONE),
    OPT("structure", "parallel_post_init", T_NUM, structure.parallel_post_init, NULL, D_NONE),
    OPT("structure", "readout_groups", T_INT, structure.readout_groups, NULL, D_NONE),
    OPT("structure", "readout_layer", T_INT, structure.readout_layer, NULL, D_READOUT_LAYER),
    OPT("structure", "readout_scale", T_NUM, structure.readout_scale, NULL, D_NONE),
    OPT("structure", "layer0_attn", T_BOOL, structure.layer0_attn, NULL, D_NONE),
    OPT("head", "final_norm", T_BOOL, head.final_norm, NULL, D_NONE),
    OPT("head", "tied", T_BOOL, head.tied, NULL, D_NONE),
    OPT("head", "softcap", T_NUM, head.softcap, NULL, D_NONE),
};
#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

static const char *const GROUPS[] = {"block", "attention", "mlp", "embeddings", "structure",
                                     "head", NULL};

static int *f_int(pg_arch *a, const opt *o) { return (int *)(void *)((char *)a + o->off); }
static double *f_num(pg_arch *a, const opt *o) { return (double *)(void *)((char *)a + o->off); }
static pg_arch_list *f_list(pg_arch *a, const opt *o) {
  return (pg_arch_list *)(void *)((char *)a + o->off);
}
static const int *c_int(const pg_arch *a, const opt *o) {
  return (const int *)(const void *)((const char *)a + o->off);
}
static const double *c_num(const pg_arch *a, const opt *o) {
  return (const double *)(const void *)((const char *)a + o->off);
}
static const pg_arch_list *c_list(const pg_arch *a, const opt *o) {
  return (const pg_arch_list *)(const void *)((const char *)a + o->off);
}

static int enum_count(const char *const *names) {
  int n = 0;
  while (names[n]) n++;
  return n;
}

/* "attention.rope_dims" or "vocab_size" into buf. */
static const char *opt_path(const opt *o, char *buf, size_t cap) {
  if (o->group)
    snprintf(buf, cap, "%s.%s", o->group, o->key);
  else
    snprintf(buf, cap, "%s", o->key);
  return buf;
}

/* ---- defaults ---- */

static void split_lists(pg_arch *a) {
  const int l = a->layers < 0 ? 0 : a->layers > PG_ARCH_MAX_LAYERS ? PG_ARCH_MAX_LAYERS : a->layers;
  const int ne = l / 2;
  a->structure.encoder.n = ne;
  for (int i = 0; i < ne; i++) a->structure.encoder.v[i] = i;
  a->structure.decoder.n = l - ne;
  for (int i = ne; i < l; i++) a->structure.decoder.v[i - ne] = i;
}

static int default_readout_layer(const pg_arch *a) {
  if (a->layers < 1 || a->layers > PG_ARCH_MAX_LAYERS) return -1; /* refused by validation */
  for (int i = a->layers - 1; i >= 0; i--)
    if (pg_arch_visits(a, i) >= 2) return i;
  return -1;
}

static void resolve(pg_arch *a, int d) {
  switch (d) {
  case D_HEAD_DIM:
    a->head_dim = a->heads > 0 && a->dim > 0 && a->dim % a->heads == 0 ? a->dim / a->heads : 0;
    break;
  case D_ROPE_DIMS: a->attention.rope_dims = a->head_dim; break;
  case D_HIDDEN: a->mlp.hidden = a->dim > 0 && a->dim <= INT_MAX / 2 ? 2 * a->dim : 0; break;
  case D_ENCODER:
  case D_DECODER: {
    pg_arch tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.layers = a->layers;
    split_lists(&tmp);
    if (d == D_ENCODER)
      a->structure.encoder = tmp.structure.encoder;
    else
      a->structure.decoder = tmp.structure.decoder;
    break;
  }
  case D_BIGRAM_PROJ: a->embeddings.bigram_proj = a->embeddings.bigram_dim != a->dim; break;
  case D_READOUT_LAYER: a->structure.readout_layer = default_readout_layer(a); break;
  default: break;
  }
}

static void set_static_defaults(pg_arch *a) {
  memset(a, 0, sizeof *a);
  a->vocab_size = 1024;
  a->dim = 512;
  a->layers = 9;
  a->heads = 8;
  a->kv_heads = 4;
  a->bos_id = 1;
  a->block.norm_eps = 0x1p-23;
  a->block.ln_scale = PG_ARCH_LN_NONE;
  a->block.resid_mix = a->block.attn_scale = a->block.mlp_scale = 1;
  a->attention.qk_norm = 1;
  a->attention.q_gain = 1.5;
  a->attention.rope_base = 10000.0;
  a->attention.rope_sign = PG_ARCH_ROPE_RECORDS;
  a->attention.causal = 1;
  a->attention.doc_max_len = 0;
  a->attention.gate = PG_ARCH_GATE_NONE;
  a->attention.gate_scale = 1.0;
  a->attention.gate_window = 12;
  a->mlp.act = PG_ARCH_ACT_RELU2;
  a->mlp.leaky_slope = 0.5;
  a->embeddings.bigram_dim = 128;
  a->embeddings.bigram_scale = 0.05;
  a->embeddings.ve_dim = 128;
  a->embeddings.ve_scale = 0.1;
  a->embeddings.smear_window = 12;
  a->structure.skips = PG_ARCH_SKIPS_PLAIN;
  a->structure.parallel_start = 0;
  a->structure.parallel_resid_init = 1.1;
  a->structure.parallel_post_init = 1.0;
  a->structure.readout_scale = 0.5;
  a->structure.layer0_attn = 1;
  a->head.final_norm = 1;
  a->head.tied = 1;
  a->head.softcap = 30.0;
}

static void resolve_all(pg_arch *a, const unsigned char *present) {
  /* in dependency order: head_dim before rope_dims; lists before readout_layer */
  static const int order[] = {D_HEAD_DIM, D_ROPE_DIMS, D_HIDDEN, D_ENCODER, D_DECODER,
                              D_BIGRAM_PROJ, D_READOUT_LAYER};
  for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
    for (size_t i = 0; i < N_OPTS; i++)
      if (OPTS[i].derived == order[k] && !(present && present[i])) resolve(a, order[k]);
}

void pg_arch_default(pg_arch *out) {
  set_static_defaults(out);
  resolve_all(out, NULL);
}

/* ---- derived quantities ---- */

int pg_arch_virtual_layers(const pg_arch *a) {
  return a->structure.encoder.n + a->structure.decoder.n;
}

int pg_arch_n_skips(const pg_arch *a) {
  if (a->structure.skips == PG_ARCH_SKIPS_NONE) return 0;
  const int e = a->structure.encoder.n, d = a->structure.decoder.n;
  return e < d ? e : d;
}

int pg_arch_visits(const pg_arch *a, int layer) {
  int n = 0;
  for (int i = 0; i < a->structure.encoder.n && i < PG_ARCH_MAX_VIRTUAL; i++)
    n += a->structure.encoder.v[i] == layer;
  for (int i = 0; i < a->structure.decoder.n && i < PG_ARCH_MAX_VIRTUAL; i++)
    n += a->structure.decoder.v[i] == layer;
  return n;
}

int pg_arch_is_recurrent(const pg_arch *a) {
  pg_arch s;
  memset(&s, 0, sizeof s);
  s.layers = a->layers;
  split_lists(&s);
  const pg_arch_list *e = &a->structure.encoder, *d = &a->structure.decoder;
  if (e->n != s.structure.encoder.n || d->n != s.structure.decoder.n) return 1;
  for (int i = 0; i < e->n; i++)
    if (e->v[i] != s.structure.encoder.v[i]) return 1;
  for (int i = 0; i < d->n; i++)
    if (d->v[i] != s.structure.decoder.v[i]) return 1;
  return 0;
}

static int list_has(const pg_arch_list *l, int x) {
  for (int i = 0; i < l->n; i++)
    if (l->v[i] == x) return 1;
  return 0;
}

int pg_arch_has_xsa(const pg_arch *a, int layer) {
  return list_has(&a->attention.xsa_layers, layer);
}

int pg_arch_has_attn(const pg_arch *a, int layer) {
  return !(layer == 0 && !a->structure.layer0_attn);
}

int pg_arch_ve_index(const pg_arch *a, int layer) {
  for (int i = 0; i < a->embeddings.ve_layers.n; i++)
    if (a->embeddings.ve_layers.v[i] == layer) return i;
  return -1;
}

/* ---- validation ---- */

#define BAD(path, ...) pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, path ": " __VA_ARGS__)

static int check_int(const char *path, int v, long long lo, long long hi, const char *file,
                     pg_err *err) {
  if (v < lo || v > hi)
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s: %d is outside %lld..%lld", path, v,
                      lo, hi);
  return PG_OK;
}

static int check_num(const char *path, double v, double lo, int lo_open, double hi,
                     const char *file, pg_err *err) {
  if (!isfinite(v) || v < lo || (lo_open && v == lo) || v > hi)
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s: %.17g is outside %s%g..%g]", path,
                      v, lo_open ? "(" : "[", lo, hi);
  return PG_OK;
}

/* Layer list: strictly increasing, each in 0..layers-1, each with attention when need_attn. */
static int check_layer_set(const pg_arch *a, const char *path, const pg_arch_list *l,
                           int need_attn, const char *file, pg_err *err) {
  PG_FAIL_IF(l->n < 0 || l->n > a->layers, err, PG_E_ARG, file, PG_NO_OFFSET,
             "%s: %d entries for %d layers", path, l->n, a->layers);
  for (int i = 0; i < l->n; i++) {
    PG_FAIL_IF(l->v[i] < 0 || l->v[i] >= a->layers, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s[%d]: layer %d is outside 0..%d", path, i, l->v[i], a->layers - 1);
    PG_FAIL_IF(i > 0 && l->v[i] <= l->v[i - 1], err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s[%d]: %d does not follow %d (the list must be strictly increasing)", path, i,
               l->v[i], l->v[i - 1]);
    PG_FAIL_IF(need_attn && !pg_arch_has_attn(a, l->v[i]), err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s[%d]: layer 0 has no attention (structure.layer0_attn is false)", path, i);
  }
  return PG_OK;
}

static int check_visit_list(const pg_arch *a, const char *path, const pg_arch_list *l,
                            const char *file, pg_err *err) {
  PG_FAIL_IF(l->n < 0 || l->n > PG_ARCH_MAX_VIRTUAL, err, PG_E_ARG, file, PG_NO_OFFSET,
             "%s: %d entries (at most %d)", path, l->n, PG_ARCH_MAX_VIRTUAL);
  for (int i = 0; i < l->n; i++)
    PG_FAIL_IF(l->v[i] < 0 || l->v[i] >= a->layers, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s[%d]: layer %d is outside 0..%d", path, i, l->v[i], a->layers - 1);
  return PG_OK;
}

/* A provenance string: NUL-terminated within its buffer, printable (no byte below 0x20, no DEL),
 * so that one line of a report stays one line; required ones non-empty. */
static int check_text(const char *path, const char *s, size_t cap, int required,
                      const char *file, pg_err *err) {
  const size_t n = strnlen(s, cap);
  PG_FAIL_IF(n == cap, err, PG_E_ARG, file, PG_NO_OFFSET, "%s: longer than %zu bytes", path,
             cap - 1);
  PG_FAIL_IF(required && n == 0, err, PG_E_ARG, file, PG_NO_OFFSET, "%s: is empty", path);
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = (unsigned char)s[i];
    PG_FAIL_IF(c < 0x20 || c == 0x7f, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s: control character 0x%02x at byte %zu", path, c, i);
  }
  return PG_OK;
}

static int check_follows(const pg_arch_follows *f, const char *file, pg_err *err) {
  PG_FAIL_IF(f->set != 0 && f->set != 1, err, PG_E_ARG, file, PG_NO_OFFSET,
             "follows: %d is not a boolean", f->set);
  if (!f->set) return PG_OK;
  PG_TRY(check_text("follows.record", f->record, sizeof f->record, 1, file, err));
  PG_TRY(check_text("follows.date", f->date, sizeof f->date, 0, file, err));
  if (f->date[0]) {
    int ok = strlen(f->date) == 10 && f->date[4] == '-' && f->date[7] == '-';
    for (int i = 0; ok && i < 10; i++)
      if (i != 4 && i != 7 && (f->date[i] < '0' || f->date[i] > '9')) ok = 0;
    PG_FAIL_IF(!ok, err, PG_E_ARG, file, PG_NO_OFFSET, "follows.date: \"%s\" is not YYYY-MM-DD",
               f->date);
  }
  PG_FAIL_IF(f->pr < 0 || f->pr > 10000000, err, PG_E_ARG, file, PG_NO_OFFSET,
             "follows.pr: %d is outside 1..10000000", f->pr);
  PG_FAIL_IF(!isfinite(f->val_bpb) || f->val_bpb < 0 || f->val_bpb > 100, err, PG_E_ARG, file,
             PG_NO_OFFSET, "follows.val_bpb: %.17g is outside (0..100]", f->val_bpb);
  PG_TRY(check_text("follows.protocol", f->protocol, sizeof f->protocol, 0, file, err));
  return check_text("follows.note", f->note, sizeof f->note, 0, file, err);
}

int pg_arch_validate(const pg_arch *a, const char *file, pg_err *err) {
  PG_FAIL_IF(!a, err, PG_E_ARG, file, PG_NO_OFFSET, "no arch");
  char path[96];
  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &OPTS[i];
    if (o->type == T_BOOL) {
      const int v = *c_int(a, o);
      PG_FAIL_IF(v != 0 && v != 1, err, PG_E_ARG, file, PG_NO_OFFSET, "%s: %d is not a boolean",
                 opt_path(o, path, sizeof path), v);
    } else if (o->type == T_ENUM) {
      const int v = *c_int(a, o);
      PG_FAIL_IF(v < 0 || v >= enum_count(o->names), err, PG_E_ARG, file, PG_NO_OFFSET,
                 "%s: %d is not one of its values", opt_path(o, path, sizeof path), v);
    } else if (o->type == T_NUM) {
      const double v = *c_num(a, o);
      PG_FAIL_IF(!isfinite(v), err, PG_E_ARG, file, PG_NO_OFFSET, "%s: not a finite number",
                 opt_path(o, path, sizeof path));
    }
  }
  /* top level */
  PG_TRY(check_int("vocab_size", a->vocab_size, 1, 1 << 24, file, err));
  PG_TRY(check_int("dim", a->dim, 1, 65536, file, err));
  PG_TRY(check_int("layers", a->layers, 1, PG_ARCH_MAX_LAYERS, file, err));
  PG_TRY(check_int("heads", a->heads, 1, 1024, file, err));
  PG_TRY(check_int("kv_heads", a->kv_heads, 1, a->heads, file, err));
  if (a->heads % a->kv_heads)
    return BAD("kv_heads", "heads %d is not a multiple of kv_heads %d", a->heads, a->kv_heads);
  if (a->head_dim == 0 && a->dim % a->heads)
    return BAD("head_dim", "dim %d is not a multiple of heads %d; give head_dim", a->dim,
               a->heads);
  /* the attention and XSA ops keep one head's accumulators on the stack */
  PG_TRY(check_int("head_dim", a->head_dim, 1, PG_OPS_MAX_HEAD_DIM, file, err));
  PG_TRY(check_int("bos_id", a->bos_id, 0, (long long)a->vocab_size - 1, file, err));
  /* block */
  PG_TRY(check_num("block.norm_eps", a->block.norm_eps, 0, 0, 1, file, err));
  /* attention */
  PG_TRY(check_num("attention.q_gain", a->attention.q_gain, 0, 1, 1e6, file, err));
  PG_TRY(check_int("attention.rope_dims", a->attention.rope_dims, 0, a->head_dim, file, err));
  if (a->attention.rope_dims % 2)
    return BAD("attention.rope_dims", "%d is odd (the half-split layout pairs dims j, j+rd/2)",
               a->attention.rope_dims);
  PG_TRY(check_num("attention.rope_base", a->attention.rope_base, 0, 1, 1e12, file, err));
  PG_TRY(check_int("attention.rope_ntk_len", a->attention.rope_ntk_len, 0, INT_MAX, file, err));
  if (a->attention.rope_ntk_len > 0 && a->attention.rope_dims < 4)
    return BAD("attention.rope_ntk_len", "the NTK rescale needs rope_dims >= 4 (it has %d)",
               a->attention.rope_dims);
  if (!a->attention.causal)
    return BAD("attention.causal", "must be true (a non-causal model cannot be scored)");
  PG_TRY(check_int("attention.doc_max_len", a->attention.doc_max_len, 0, INT_MAX, file, err));
  PG_TRY(check_layer_set(a, "attention.xsa_layers", &a->attention.xsa_layers, 1, file, err));
  PG_TRY(check_num("attention.gate_scale", a->attention.gate_scale, 0, 1, 1e6, file, err));
  PG_TRY(check_int("attention.gate_window", a->attention.gate_window, 1, a->dim, file, err));
  if (a->attention.gate != PG_ARCH_GATE_NONE && !a->structure.layer0_attn && a->layers == 1)
    return BAD("attention.gate", "no layer has attention");
  /* mlp */
  PG_TRY(check_int("mlp.hidden", a->mlp.hidden, 1, 1 << 20, file, err));
  PG_TRY(check_num("mlp.leaky_slope", a->mlp.leaky_slope, 0, 0, 1, file, err));
  if (a->mlp.leaky_slope == 1.0) return BAD("mlp.leaky_slope", "must be below 1");
  /* embeddings */
  if (a->embeddings.bigram_buckets == 1)
    return BAD("embeddings.bigram_buckets", "1 bucket leaves no hash range (0 = off, or >= 2)");
  PG_TRY(check_int("embeddings.bigram_buckets", a->embeddings.bigram_buckets, 0, 1 << 24, file,
                   err));
  PG_TRY(check_int("embeddings.bigram_dim", a->embeddings.bigram_dim, 1, 65536, file, err));
  if (!a->embeddings.bigram_proj && a->embeddings.bigram_dim != a->dim)
    return BAD("embeddings.bigram_proj", "must be true when bigram_dim %d differs from dim %d",
               a->embeddings.bigram_dim, a->dim);
  PG_TRY(check_num("embeddings.bigram_scale", a->embeddings.bigram_scale, -1e6, 0, 1e6, file,
                   err));
  PG_TRY(check_layer_set(a, "embeddings.ve_layers", &a->embeddings.ve_layers, 1, file, err));
  PG_TRY(check_int("embeddings.ve_dim", a->embeddings.ve_dim, 1, 65536, file, err));
  PG_TRY(check_num("embeddings.ve_scale", a->embeddings.ve_scale, -1e6, 0, 1e6, file, err));
  if (a->embeddings.smear_bos_mask && a->embeddings.smear != PG_ARCH_SMEAR_V2)
    return BAD("embeddings.smear_bos_mask", "applies only to smear \"v2\"");
  PG_TRY(check_int("embeddings.smear_window", a->embeddings.smear_window, 1, a->dim, file, err));
  /* structure */
  PG_TRY(check_visit_list(a, "structure.encoder", &a->structure.encoder, file, err));
  PG_TRY(check_visit_list(a, "structure.decoder", &a->structure.decoder, file, err));
  if (pg_arch_virtual_layers(a) > PG_ARCH_MAX_VIRTUAL)
    return BAD("structure.decoder", "encoder + decoder hold %d entries (at most %d)",
               pg_arch_virtual_layers(a), PG_ARCH_MAX_VIRTUAL);
  if (a->structure.decoder.n == 0) return BAD("structure.decoder", "is empty");
  for (int i = 0; i < a->layers; i++)
    if (!pg_arch_visits(a, i))
      return BAD("structure.encoder", "physical layer %d is in neither encoder nor decoder", i);
  if (a->structure.skips != PG_ARCH_SKIPS_NONE && a->structure.encoder.n == 0)
    return BAD("structure.skips", "U-Net skips need a non-empty encoder");
  PG_TRY(check_int("structure.recur_step", a->structure.recur_step, 0, INT_MAX, file, err));
  PG_TRY(check_num("structure.recur_frac", a->structure.recur_frac, 0, 0, 1, file, err));
  PG_TRY(check_int("structure.parallel_start", a->structure.parallel_start, 0, a->layers - 1,
                   file, err));
  PG_TRY(check_num("structure.parallel_resid_init", a->structure.parallel_resid_init, -1e6, 0,
                   1e6, file, err));
  PG_TRY(check_num("structure.parallel_post_init", a->structure.parallel_post_init, -1e6, 0, 1e6,
                   file, err));
  PG_TRY(check_int("structure.readout_groups", a->structure.readout_groups, 0, a->dim, file,
                   err));
  if (a->structure.readout_groups > 0 && a->dim % a->structure.readout_groups)
    return BAD("structure.readout_groups", "dim %d is not a multiple of %d", a->dim,
               a->structure.readout_groups);
  PG_TRY(check_int("structure.readout_layer", a->structure.readout_layer, -1, a->layers - 1,
                   file, err));
  if (a->structure.readout_groups > 0) {
    if (a->structure.readout_layer < 0)
      return BAD("structure.readout_layer", "a readout (readout_groups > 0) needs a layer");
    if (pg_arch_visits(a, a->structure.readout_layer) < 2)
      return BAD("structure.readout_layer", "layer %d is visited %d time(s); a readout needs a "
                 "looped layer (at least 2 visits)", a->structure.readout_layer,
                 pg_arch_visits(a, a->structure.readout_layer));
    if (a->structure.parallel == PG_ARCH_PAR_TWO_LANE) {
      /* the readout replaces the single stream: its last visit must precede the lanes */
      int nenc = a->structure.encoder.n, last = -1, first_lane = -1;
      for (int v = 0; v < pg_arch_virtual_layers(a); v++) {
        int i = v < nenc ? a->structure.encoder.v[v] : a->structure.decoder.v[v - nenc];
        if (i == a->structure.readout_layer) last = v;
        if (first_lane < 0 && v >= nenc && i >= a->structure.parallel_start) first_lane = v;
      }
      if (first_lane >= 0 && last >= first_lane)
        return BAD("structure.readout_layer", "the last visit of layer %d falls in the two-lane "
                   "region (a readout needs the single stream)", a->structure.readout_layer);
    }
  }
  PG_TRY(check_num("structure.readout_scale", a->structure.readout_scale, -1e6, 0, 1e6, file,
                   err));
  /* head */
  PG_TRY(check_num("head.softcap", a->head.softcap, 0, 0, 1e6, file, err));
  return check_follows(&a->follows, file, err);
}

/* ---- parsing ---- */



/* A key for an error line: at most 40 bytes, non-printable bytes as '?'. */
static const char *clean_key(const char *k, char *buf, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; k[i] && o + 4 < cap; i++) {
    if (i == 40) {
      buf[o++] = '.', buf[o++] = '.', buf[o++] = '.';
      break;
    }
    const unsigned char c = (unsigned char)k[i];
    buf[o++] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
  }
  buf[o] = '\0';
  return buf;
}

static int parse_value(pg_arch *a, const opt *o, json_t *v, const char *file, pg_err *err) {
  char path[96];
  opt_path(o, path, sizeof path);
  switch (o->type) {
  case T_INT: {
    PG_FAIL_IF(!json_is_integer(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "%s: is %s, not an integer", path, pg_json_type_word(v));
    const json_int_t x = json_integer_value(v);
    PG_FAIL_IF(x < INT_MIN || x > INT_MAX, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s: %lld is outside the int range", path, (long long)x);
    *f_int(a, o) = (int)x;
    return PG_OK;
  }
  case T_NUM:
    PG_FAIL_IF(!json_is_number(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "%s: is %s, not a number", path, pg_json_type_word(v));
    *f_num(a, o) = json_number_value(v);
    return PG_OK;
  case T_BOOL:
    PG_FAIL_IF(!json_is_boolean(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "%s: is %s, not a boolean", path, pg_json_type_word(v));
    *f_int(a, o) = json_is_true(v);
    return PG_OK;
  case T_ENUM: {
    PG_FAIL_IF(!json_is_string(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "%s: is %s, not a string", path, pg_json_type_word(v));
    const char *s = json_string_value(v);
    for (int k = 0; o->names[k]; k++)
      if (strlen(o->names[k]) == json_string_length(v) && !strcmp(s, o->names[k])) {
        *f_int(a, o) = k;
        return PG_OK;
      }
    char allowed[160] = "", kb[48];
    for (int k = 0; o->names[k]; k++) {
      strncat(allowed, k ? " | " : "", sizeof allowed - strlen(allowed) - 1);
      strncat(allowed, o->names[k], sizeof allowed - strlen(allowed) - 1);
    }
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s: \"%s\" is not one of %s", path,
                      clean_key(s, kb, sizeof kb), allowed);
  }
  case T_LIST: {
    PG_FAIL_IF(!json_is_array(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "%s: is %s, not an array", path, pg_json_type_word(v));
    const size_t n = json_array_size(v);
    PG_FAIL_IF(n > PG_ARCH_MAX_VIRTUAL, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s: %zu entries (at most %d)", path, n, PG_ARCH_MAX_VIRTUAL);
    pg_arch_list *l = f_list(a, o);
    for (size_t i = 0; i < n; i++) {
      json_t *e = json_array_get(v, i);
      PG_FAIL_IF(!json_is_integer(e), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
                 "%s[%zu]: is %s, not an integer", path, i, pg_json_type_word(e));
      const json_int_t x = json_integer_value(e);
      PG_FAIL_IF(x < INT_MIN || x > INT_MAX, err, PG_E_ARG, file, PG_NO_OFFSET,
                 "%s[%zu]: %lld is outside the int range", path, i, (long long)x);
      l->v[i] = (int)x;
    }
    l->n = (int)n;
    return PG_OK;
  }
  default: return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s: bad option type", path);
  }
}

static const opt *find_opt(const char *group, const char *key, size_t *idx) {
  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &OPTS[i];
    if ((group == NULL) != (o->group == NULL)) continue;
    if (group && strcmp(group, o->group)) continue;
    if (!strcmp(key, o->key)) {
      *idx = i;
      return o;
    }
  }
  return NULL;
}

static int is_group(const char *key) {
  for (int g = 0; GROUPS[g]; g++)
    if (!strcmp(key, GROUPS[g])) return 1;
  return 0;
}

/* A provenance string into buf: a JSON string without NUL bytes, shorter than cap. */
static int parse_text(const char *path, json_t *v, char *buf, size_t cap, const char *file,
                      pg_err *err) {
  PG_FAIL_IF(!json_is_string(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "%s: is %s, not a string", path, pg_json_type_word(v));
  const size_t n = json_string_length(v);
  PG_FAIL_IF(n >= cap, err, PG_E_ARG, file, PG_NO_OFFSET, "%s: %zu bytes (at most %zu)", path, n,
             cap - 1);
  PG_FAIL_IF(strlen(json_string_value(v)) != n, err, PG_E_ARG, file, PG_NO_OFFSET,
             "%s: holds a NUL character", path);
  memcpy(buf, json_string_value(v), n + 1);
  return PG_OK;
}

static int parse_follows(pg_arch_follows *f, json_t *obj, const char *file, pg_err *err) {
  PG_FAIL_IF(!json_is_object(obj), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "follows: is %s, not an object", pg_json_type_word(obj));
  const char *key;
  json_t *v;
  char kb[48];
  memset(f, 0, sizeof *f);
  f->set = 1;
  json_object_foreach(obj, key, v) {
    if (!strcmp(key, "record")) {
      PG_TRY(parse_text("follows.record", v, f->record, sizeof f->record, file, err));
    } else if (!strcmp(key, "date")) {
      PG_TRY(parse_text("follows.date", v, f->date, sizeof f->date, file, err));
    } else if (!strcmp(key, "protocol")) {
      PG_TRY(parse_text("follows.protocol", v, f->protocol, sizeof f->protocol, file, err));
    } else if (!strcmp(key, "note")) {
      PG_TRY(parse_text("follows.note", v, f->note, sizeof f->note, file, err));
    } else if (!strcmp(key, "pr")) {
      PG_FAIL_IF(!json_is_integer(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
                 "follows.pr: is %s, not an integer", pg_json_type_word(v));
      PG_FAIL_IF(json_integer_value(v) < 1 || json_integer_value(v) > 10000000, err, PG_E_ARG,
                 file, PG_NO_OFFSET, "follows.pr: %lld is outside 1..10000000",
                 (long long)json_integer_value(v));
      f->pr = (int)json_integer_value(v);
    } else if (!strcmp(key, "val_bpb")) {
      PG_FAIL_IF(!json_is_number(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
                 "follows.val_bpb: is %s, not a number", pg_json_type_word(v));
      const double x = json_number_value(v);
      PG_FAIL_IF(!(x > 0 && x <= 100), err, PG_E_ARG, file, PG_NO_OFFSET,
                 "follows.val_bpb: %.17g is outside (0..100]", x);
      f->val_bpb = x;
    } else {
      return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "follows.%s: unknown option",
                        clean_key(key, kb, sizeof kb));
    }
  }
  PG_FAIL_IF(!f->record[0], err, PG_E_ARG, file, PG_NO_OFFSET,
             "follows.record: missing (follows names the record whose settings the arch uses)");
  return PG_OK;
}

static int parse_object(pg_arch *a, json_t *obj, const char *group, unsigned char *present,
                        const char *file, pg_err *err) {
  const char *key;
  json_t *v;
  char kb[48];
  json_object_foreach(obj, key, v) {
    /* a key with an embedded NUL never matches (jansson's key is cut at the NUL) */
    size_t idx;
    const opt *o = strlen(key) < 64 ? find_opt(group, key, &idx) : NULL;
    if (o) {
      PG_TRY(parse_value(a, o, v, file, err));
      present[idx] = 1;
    } else if (!group && !strcmp(key, "follows")) {
      PG_TRY(parse_follows(&a->follows, v, file, err));
    } else if (!group && is_group(key)) {
      PG_FAIL_IF(!json_is_object(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
                 "%s: is %s, not an object", key, pg_json_type_word(v));
      PG_TRY(parse_object(a, v, key, present, file, err));
    } else {
      return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s%s%s: unknown option",
                        group ? group : "", group ? "." : "", clean_key(key, kb, sizeof kb));
    }
  }
  return PG_OK;
}

int pg_arch_parse(pg_arch *out, const char *text, size_t len, const char *file, pg_err *err) {
  PG_FAIL_IF(!out || (!text && len), err, PG_E_ARG, file, PG_NO_OFFSET, "no text to parse");
  memset(out, 0, sizeof *out);
  /* the same cap as a file's (spec/arch.md), checked before the JSON tree is built */
  PG_FAIL_IF(len > PG_ARCH_JSON_MAX, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "arch text of %zu bytes, limit %zu", len, PG_ARCH_JSON_MAX);
  json_t *root;
  PG_TRY(pg_json_load(&root, text, len, 0, &pg_json_doc_caps, file, err));
  int rc;
  if (!json_is_object(root)) {
    rc = pg_err_set(err, PG_E_META_TYPE, file, PG_NO_OFFSET, "the top level is %s, not an object",
                    pg_json_type_word(root));
  } else {
    unsigned char present[N_OPTS];
    memset(present, 0, sizeof present);
    set_static_defaults(out);
    rc = parse_object(out, root, NULL, present, file, err);
    if (rc == PG_OK) {
      resolve_all(out, present);
      rc = pg_arch_validate(out, file, err);
    }
  }
  json_decref(root);
  if (rc != PG_OK) memset(out, 0, sizeof *out);
  return rc;
}

int pg_arch_load(pg_arch *out, const char *path, pg_err *err) {
  uint8_t *buf = NULL;
  size_t len = 0;
  if (out) memset(out, 0, sizeof *out);
  PG_TRY(pg_file_read_all(path, &buf, &len, PG_ARCH_JSON_MAX, err));
  const int rc = pg_arch_parse(out, (const char *)buf, len, path, err);
  free(buf);
  return rc;
}

/* ---- serialization and comparison ---- */

/* An integral v below 1e15 as "N.0"; otherwise the shortest "%.Ng" text of v that reads back as
 * exactly v (with ".0" added when it would otherwise read as a JSON integer). */
static void fmt_real(char *buf, size_t cap, double v) {
  if (v == floor(v) && fabs(v) < 1e15) {
    snprintf(buf, cap, "%.1f", v); /* exact: 30.0, 10000.0 */
    return;
  }
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static void put_str(pg_buf *b, const char *s) { pg_buf_put(b, s, strlen(s)); }

static void put_value(pg_buf *b, const pg_arch *a, const opt *o) {
  char t[64];
  switch (o->type) {
  case T_INT: snprintf(t, sizeof t, "%d", *c_int(a, o)); break;
  case T_NUM: fmt_real(t, sizeof t, *c_num(a, o)); break;
  case T_BOOL: snprintf(t, sizeof t, "%s", *c_int(a, o) ? "true" : "false"); break;
  case T_ENUM: snprintf(t, sizeof t, "\"%s\"", o->names[*c_int(a, o)]); break;
  case T_LIST: {
    const pg_arch_list *l = c_list(a, o);
    put_str(b, "[");
    for (int i = 0; i < l->n; i++) {
      snprintf(t, sizeof t, "%s%d", i ? ", " : "", l->v[i]);
      put_str(b, t);
    }
    put_str(b, "]");
    return;
  }
  default: t[0] = '\0'; break;
  }
  put_str(b, t);
}

/* An entry of one object level: an option, or (top level only) a group or "follows". */
typedef struct entry {
  const char *key;
  const opt *o; /* NULL: the group named key, or "follows" */
} entry;

/* A JSON string literal (quoted, escaped by jansson; UTF-8 kept). */
static void put_json_str(pg_buf *b, const char *s) {
  json_t *j = json_string(s);
  char *t = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
  if (t)
    put_str(b, t);
  else
    b->oom = 1;
  free(t);
  json_decref(j);
}

/* "follows": its keys in byte order, each only when given. */
static void put_follows(pg_buf *b, const pg_arch_follows *f, int depth) {
  char t[64];
  const char *keys[6];
  int n = 0;
  if (f->date[0]) keys[n++] = "date";
  if (f->note[0]) keys[n++] = "note";
  if (f->pr > 0) keys[n++] = "pr";
  if (f->protocol[0]) keys[n++] = "protocol";
  keys[n++] = "record";
  if (f->val_bpb > 0) keys[n++] = "val_bpb";
  put_str(b, "{\n");
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < depth + 1; k++) put_str(b, "  ");
    put_str(b, "\"");
    put_str(b, keys[i]);
    put_str(b, "\": ");
    if (!strcmp(keys[i], "date")) put_json_str(b, f->date);
    if (!strcmp(keys[i], "note")) put_json_str(b, f->note);
    if (!strcmp(keys[i], "protocol")) put_json_str(b, f->protocol);
    if (!strcmp(keys[i], "record")) put_json_str(b, f->record);
    if (!strcmp(keys[i], "pr")) {
      snprintf(t, sizeof t, "%d", f->pr);
      put_str(b, t);
    }
    if (!strcmp(keys[i], "val_bpb")) {
      fmt_real(t, sizeof t, f->val_bpb);
      put_str(b, t);
    }
    put_str(b, i + 1 < n ? ",\n" : "\n");
  }
  for (int k = 0; k < depth; k++) put_str(b, "  ");
  put_str(b, "}");
}

static int entry_cmp(const void *x, const void *y) {
  return strcmp(((const entry *)x)->key, ((const entry *)y)->key);
}

static void put_object(pg_buf *b, const pg_arch *a, const char *group, int depth) {
  entry e[N_OPTS + 8];
  size_t n = 0;
  for (size_t i = 0; i < N_OPTS; i++)
    if ((group == NULL && OPTS[i].group == NULL) ||
        (group && OPTS[i].group && !strcmp(group, OPTS[i].group)))
      e[n].key = OPTS[i].key, e[n++].o = &OPTS[i];
  if (!group) {
    for (int g = 0; GROUPS[g]; g++) e[n].key = GROUPS[g], e[n++].o = NULL;
    if (a->follows.set) e[n].key = "follows", e[n++].o = NULL;
  }
  qsort(e, n, sizeof e[0], entry_cmp);
  put_str(b, "{\n");
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < depth + 1; k++) put_str(b, "  ");
    put_str(b, "\"");
    put_str(b, e[i].key);
    put_str(b, "\": ");
    if (e[i].o)
      put_value(b, a, e[i].o);
    else if (!strcmp(e[i].key, "follows"))
      put_follows(b, &a->follows, depth + 1);
    else
      put_object(b, a, e[i].key, depth + 1);
    put_str(b, i + 1 < n ? ",\n" : "\n");
  }
  for (int k = 0; k < depth; k++) put_str(b, "  ");
  put_str(b, "}");
}

int pg_arch_serialize(const pg_arch *a, char **out, pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no output");
  *out = NULL;
  PG_TRY(pg_arch_validate(a, "arch", err));
  pg_buf b = {0};
  put_object(&b, a, NULL, 0);
  put_str(&b, "\n");
  pg_buf_u8(&b, 0);
  if (b.oom) {
    pg_buf_free(&b);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory serializing an arch");
  }
  *out = (char *)b.data;
  return PG_OK;
}

static int opt_equal(const pg_arch *a, const pg_arch *b, const opt *o) {
  if (o->type == T_NUM) return *c_num(a, o) == *c_num(b, o);
  if (o->type == T_LIST) {
    const pg_arch_list *x = c_list(a, o), *y = c_list(b, o);
    if (x->n != y->n) return 0;
    for (int k = 0; k < x->n && k < PG_ARCH_MAX_VIRTUAL; k++)
      if (x->v[k] != y->v[k]) return 0;
    return 1;
  }
  return *c_int(a, o) == *c_int(b, o);
}

/* One option's value as canonical JSON text into buf (lists cut with "..." past cap). */
static void value_text(const pg_arch *a, const opt *o, char *buf, size_t cap) {
  pg_buf b = {0};
  put_value(&b, a, o);
  pg_buf_u8(&b, 0);
  if (b.oom || !b.data) {
    snprintf(buf, cap, "?");
  } else {
    const size_t n = strlen((const char *)b.data);
    if (n < cap) {
      memcpy(buf, b.data, n + 1);
    } else if (cap > 4) { /* a long list: its head and "..." */
      memcpy(buf, b.data, cap - 4);
      memcpy(buf + cap - 4, "...", 4);
    }
  }
  pg_buf_free(&b);
}

static int follows_equal(const pg_arch_follows *x, const pg_arch_follows *y) {
  if (x->set != y->set) return 0;
  if (!x->set) return 1;
  return !strcmp(x->record, y->record) && !strcmp(x->date, y->date) && x->pr == y->pr &&
         x->val_bpb == y->val_bpb && !strcmp(x->protocol, y->protocol) &&
         !strcmp(x->note, y->note);
}

int pg_arch_diff(const pg_arch *a, const pg_arch *b, char *buf, size_t cap) {
  int n = 0;
  size_t used = 0;
  if (cap) buf[0] = '\0';
  for (size_t i = 0; i < N_OPTS; i++) {
    if (opt_equal(a, b, &OPTS[i])) continue;
    n++;
    if (!cap || used + 1 >= cap) continue;
    char path[96], va[96], vb[96], item[320];
    value_text(a, &OPTS[i], va, sizeof va);
    value_text(b, &OPTS[i], vb, sizeof vb);
    snprintf(item, sizeof item, "%s%s %s/%s", n > 1 ? ", " : "",
             opt_path(&OPTS[i], path, sizeof path), va, vb);
    if (used + strlen(item) + 4 < cap) {
      memcpy(buf + used, item, strlen(item) + 1);
      used += strlen(item);
    } else {
      snprintf(buf + used, cap - used, "%s", cap - used > 4 ? ", ..." : "");
      used = cap;
    }
  }
  return n;
}

/* The options the tensors do not fix, with the condition under which each changes the forward
 * pass (spec/load.md §2.1). Init values (q_gain, the scales, lambdas) and training switches
 * (recur_step, recur_frac) are not listed: the evaluation reads the learned tensors instead. */
static int unchecked_in_effect(const pg_arch *a, const char *path) {
  const int rope = a->attention.rope_dims > 0;
  if (!strcmp(path, "bos_id")) return a->attention.doc_mask || a->embeddings.smear_bos_mask;
  if (!strcmp(path, "attention.rope_base") || !strcmp(path, "attention.rope_sign") ||
      !strcmp(path, "attention.rope_ntk_len"))
    return rope;
  if (!strcmp(path, "attention.doc_max_len")) return a->attention.doc_mask;
  if (!strcmp(path, "attention.gate_scale"))
    return a->attention.gate == PG_ARCH_GATE_SPARSE_SIGMOID;
  if (!strcmp(path, "mlp.leaky_slope")) return a->mlp.act == PG_ARCH_ACT_LEAKY_RELU2;
  if (!strcmp(path, "embeddings.ve_layers")) return a->embeddings.ve_layers.n > 0;
  if (!strcmp(path, "embeddings.smear_bos_mask")) return a->embeddings.smear == PG_ARCH_SMEAR_V2;
  if (!strcmp(path, "structure.parallel"))
    return a->structure.parallel != PG_ARCH_PAR_TWO_LANE; /* two_lane has its lambdas */
  if (!strcmp(path, "structure.parallel_start"))
    return a->structure.parallel != PG_ARCH_PAR_NONE;
  if (!strcmp(path, "structure.readout_layer") || !strcmp(path, "structure.readout_scale"))
    return a->structure.readout_groups > 0;
  return 1;
}

static const char *const UNCHECKED[] = {
    "bos_id", "block.norm_eps", "block.ln_scale", "attention.qk_norm", "attention.rope_dims",
    "attention.rope_base", "attention.rope_sign", "attention.rope_ntk_len", "attention.doc_mask",
    "attention.doc_max_len", "attention.xsa_layers", "attention.gate_scale", "mlp.act",
    "mlp.leaky_slope", "embeddings.ve_layers", "embeddings.smear_bos_mask", "structure.encoder",
    "structure.decoder", "structure.parallel", "structure.parallel_start",
    "structure.readout_layer", "structure.readout_scale", "head.final_norm", "head.softcap",
    NULL};

int pg_arch_unchecked_json(const pg_arch *a, char **out, pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no output");
  *out = NULL;
  PG_TRY(pg_arch_validate(a, "arch", err));
  pg_buf b = {0};
  int first = 1;
  put_str(&b, "{");
  for (int u = 0; UNCHECKED[u]; u++) {
    if (!unchecked_in_effect(a, UNCHECKED[u])) continue;
    char path[96];
    for (size_t i = 0; i < N_OPTS; i++) {
      if (strcmp(opt_path(&OPTS[i], path, sizeof path), UNCHECKED[u])) continue;
      put_str(&b, first ? "\"" : ", \"");
      put_str(&b, path);
      put_str(&b, "\": ");
      put_value(&b, a, &OPTS[i]);
      first = 0;
    }
  }
  put_str(&b, "}");
  pg_buf_u8(&b, 0);
  if (b.oom) {
    pg_buf_free(&b);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory listing options");
  }
  *out = (char *)b.data;
  return PG_OK;
}

int pg_arch_equal(const pg_arch *a, const pg_arch *b) {
  if (!follows_equal(&a->follows, &b->follows)) return 0;
  for (size_t i = 0; i < N_OPTS; i++) {
    const opt *o = &OPTS[i];
    if (o->type == T_NUM) {
      if (*c_num(a, o) != *c_num(b, o)) return 0;
    } else if (o->type == T_LIST) {
      const pg_arch_list *x = c_list(a, o), *y = c_list(b, o);
      if (x->n != y->n) return 0;
      for (int k = 0; k < x->n && k < PG_ARCH_MAX_VIRTUAL; k++)
        if (x->v[k] != y->v[k]) return 0;
    } else if (*c_int(a, o) != *c_int(b, o)) {
      return 0;
    }
  }
  return 1;
}

/* ---- tensors ---- */

typedef struct tlist {
  pg_arch_tensor *t;
  size_t n, cap;
  int oom;
} tlist;

static void add(tlist *l, int ndim, uint64_t d0, uint64_t d1, uint64_t d2, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
static void add(tlist *l, int ndim, uint64_t d0, uint64_t d1, uint64_t d2, const char *fmt, ...) {
  if (l->oom) return;
  if (l->n == l->cap) {
    const size_t cap = l->cap ? 2 * l->cap : 64;
    pg_arch_tensor *t = realloc(l->t, cap * sizeof *t);
    if (!t) {
      l->oom = 1;
      return;
    }
    l->t = t;
    l->cap = cap;
  }
  pg_arch_tensor *t = &l->t[l->n++];
  memset(t, 0, sizeof *t);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->name, sizeof t->name, fmt, ap);
  va_end(ap);
  t->ndim = ndim;
  t->shape[0] = d0;
  t->shape[1] = d1;
  t->shape[2] = d2;
}

uint64_t pg_arch_tensor_numel(const pg_arch_tensor *t) {
  uint64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

int pg_arch_tensors(const pg_arch *a, pg_arch_tensor **out, size_t *n, pg_err *err) {
  PG_FAIL_IF(!out || !n, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no output");
  *out = NULL;
  *n = 0;
  PG_TRY(pg_arch_validate(a, "arch", err));
  tlist l = {0};
  const uint64_t V = (uint64_t)a->vocab_size, d = (uint64_t)a->dim, L = (uint64_t)a->layers;
  const uint64_t qd = (uint64_t)a->heads * (uint64_t)a->head_dim;
  const uint64_t kvd = (uint64_t)a->kv_heads * (uint64_t)a->head_dim;
  const uint64_t hid = (uint64_t)a->mlp.hidden, H = (uint64_t)a->heads;
  add(&l, 2, V, d, 0, "tok_emb.weight");
  if (a->embeddings.bigram_buckets > 0) {
    const uint64_t bd = (uint64_t)a->embeddings.bigram_dim;
    add(&l, 2, (uint64_t)a->embeddings.bigram_buckets, bd, 0, "bigram.embed.weight");
    if (a->embeddings.bigram_proj) add(&l, 2, d, bd, 0, "bigram.proj.weight");
    add(&l, 0, 0, 0, 0, "bigram.scale");
  }
  if (a->embeddings.ve_layers.n > 0) {
    const uint64_t vd = (uint64_t)a->embeddings.ve_dim;
    add(&l, 2, V, vd, 0, "ve_shared.embed.weight");
    if (vd != kvd) add(&l, 2, kvd, vd, 0, "ve_shared.proj.weight");
    add(&l, 0, 0, 0, 0, "ve_shared.scale");
    for (int k = 0; k < a->embeddings.ve_layers.n; k++)
      add(&l, 1, 1, 0, 0, "ve_layer_scales.%d", k);
  }
  if (a->embeddings.smear == PG_ARCH_SMEAR_V1) {
    add(&l, 1, d, 0, 0, "smear.gate");
  } else if (a->embeddings.smear == PG_ARCH_SMEAR_V2) {
    add(&l, 2, 1, (uint64_t)a->embeddings.smear_window, 0, "smear_gate.weight");
    add(&l, 1, 1, 0, 0, "smear_lambda");
  }
  const uint64_t gw = (uint64_t)a->attention.gate_window;
  for (int i = 0; i < a->layers; i++) {
    if (pg_arch_has_attn(a, i)) {
      add(&l, 2, qd, d, 0, "blocks.%d.attn.c_q.weight", i);
      add(&l, 2, kvd, d, 0, "blocks.%d.attn.c_k.weight", i);
      add(&l, 2, kvd, d, 0, "blocks.%d.attn.c_v.weight", i);
      add(&l, 2, d, qd, 0, "blocks.%d.attn.proj.weight", i);
      add(&l, 1, H, 0, 0, "blocks.%d.attn.q_gain", i);
      switch (a->attention.gate) {
      case PG_ARCH_GATE_2SIGMA_FIRST12:
        add(&l, 2, H, gw, 0, "blocks.%d.attn.attn_gate_proj.weight", i);
        break;
      case PG_ARCH_GATE_DENSE_SIGMOID: add(&l, 2, H, d, 0, "blocks.%d.attn.attn_gate_w", i); break;
      case PG_ARCH_GATE_SPARSE_SIGMOID:
        add(&l, 2, H, gw, 0, "blocks.%d.attn.attn_gate_w", i);
        break;
      default: break;
      }
    }
    add(&l, 2, hid, d, 0, "blocks.%d.mlp.fc.weight", i);
    add(&l, 2, d, hid, 0, "blocks.%d.mlp.proj.weight", i);
    if (a->block.attn_scale && pg_arch_has_attn(a, i))
      add(&l, 1, d, 0, 0, "blocks.%d.attn_scale", i);
    if (a->block.mlp_scale) add(&l, 1, d, 0, 0, "blocks.%d.mlp_scale", i);
    if (a->block.resid_mix) add(&l, 2, 2, d, 0, "blocks.%d.resid_mix", i);
  }
  const uint64_t ns = (uint64_t)pg_arch_n_skips(a);
  if (ns > 0) {
    add(&l, 2, ns, d, 0, "skip_weights");
    if (a->structure.skips == PG_ARCH_SKIPS_GATED) add(&l, 2, ns, d, 0, "skip_gates");
  }
  if (a->structure.parallel == PG_ARCH_PAR_TWO_LANE) {
    add(&l, 2, L, 2, 0, "parallel_resid_lambdas");
    add(&l, 3, L, 2, 2, "parallel_post_lambdas");
  }
  if (a->structure.readout_groups > 0)
    add(&l, 2, (uint64_t)pg_arch_visits(a, a->structure.readout_layer) - 1,
        (uint64_t)a->structure.readout_groups, 0, "readout_delta");
  if (!a->head.tied) add(&l, 2, V, d, 0, "lm_head.weight");
  if (l.oom) {
    free(l.t);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory listing tensors");
  }
  *out = l.t;
  *n = l.n;
  return PG_OK;
}

int pg_arch_param_count(const pg_arch *a, uint64_t *out, pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no output");
  *out = 0;
  pg_arch_tensor *t;
  size_t n;
  PG_TRY(pg_arch_tensors(a, &t, &n, err));
  uint64_t s = 0;
  for (size_t i = 0; i < n; i++) s += pg_arch_tensor_numel(&t[i]);
  free(t);
  *out = s;
  return PG_OK;
}
