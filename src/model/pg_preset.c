/* pg_preset.c: reading the records' presets (spec/presets/README.md). A preset is untrusted
 * text like any arch file: its size is capped before parsing, every key is typed and bounded,
 * and the arch inside goes through pg_arch_parse. */
#include "pg_preset.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pg_io.h"
#include "pg_json.h"
#include "pg_safetensors.h"
#include "pg_weights.h"

#ifndef PG_PRESETS_SRCDIR
#define PG_PRESETS_SRCDIR ""
#endif
#ifndef PG_PRESETS_DATADIR
#define PG_PRESETS_DATADIR ""
#endif

int pg_preset_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n >= PG_PRESET_NAME_MAX || name[0] == '.') return 0;
  for (size_t i = 0; i < n; i++) {
    const char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* A printable JSON string (no control character, no DEL) into buf of cap bytes. */
static int get_text(const char *path, json_t *v, char *buf, size_t cap, const char *file,
                    pg_err *err) {
  PG_FAIL_IF(!json_is_string(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "%s: is %s, not a string", path, pg_json_type_word(v));
  const size_t n = json_string_length(v);
  const char *s = json_string_value(v);
  PG_FAIL_IF(n >= cap, err, PG_E_ARG, file, PG_NO_OFFSET, "%s: %zu bytes (at most %zu)", path, n,
             cap - 1);
  for (size_t i = 0; i < n; i++)
    PG_FAIL_IF((unsigned char)s[i] < 0x20 || s[i] == 0x7f, err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s: holds a control character at byte %zu", path, i);
  memcpy(buf, s, n + 1);
  return PG_OK;
}

static int get_list(const char *path, json_t *v, char (*items)[PG_PRESET_TEXT_MAX], int *n,
                    const char *file, pg_err *err) {
  PG_FAIL_IF(!json_is_array(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "%s: is %s, not an array", path, pg_json_type_word(v));
  PG_FAIL_IF(json_array_size(v) > PG_PRESET_LIST_MAX, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "%s: %zu entries (at most %d)", path, json_array_size(v), PG_PRESET_LIST_MAX);
  char ep[64];
  for (size_t i = 0; i < json_array_size(v); i++) {
    snprintf(ep, sizeof ep, "%s[%zu]", path, i);
    PG_TRY(get_text(ep, json_array_get(v, i), items[i], PG_PRESET_TEXT_MAX, file, err));
    PG_FAIL_IF(!items[i][0], err, PG_E_ARG, file, PG_NO_OFFSET, "%s: empty", ep);
  }
  *n = (int)json_array_size(v);
  return PG_OK;
}

static int date_ok(const char *d) {
  static const char form[] = "dddd-dd-dd";
  if (strlen(d) != 10) return 0;
  for (int i = 0; i < 10; i++)
    if (form[i] == 'd' ? !(d[i] >= '0' && d[i] <= '9') : d[i] != '-') return 0;
  return 1;
}

/* The body of pg_preset_parse on a parsed object. */
static int parse_root(pg_preset *p, json_t *root, const char *file, const char *name,
                      pg_err *err) {
  static const char *const KEYS[] = {"preset", "record", "date", "pr", "val_bpb", "supported",
                                     "reason", "params", "arch", "protocol", "inferred", "quirks",
                                     NULL};
  const char *key;
  json_t *v;
  json_object_foreach(root, key, v) {
    int known = 0;
    for (int k = 0; KEYS[k]; k++) known |= !strcmp(key, KEYS[k]);
    if (!known) {
      char kb[48];
      snprintf(kb, sizeof kb, "%s", key);
      for (char *c = kb; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
      return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "%s: unknown key", kb);
    }
  }
  /* required keys, then the optional ones */
  static const char *const REQ[] = {"preset", "record", "date", "val_bpb", "supported", NULL};
  for (int k = 0; REQ[k]; k++)
    PG_FAIL_IF(!json_object_get(root, REQ[k]), err, PG_E_ARG, file, PG_NO_OFFSET,
               "%s: missing", REQ[k]);
  PG_TRY(get_text("preset", json_object_get(root, "preset"), p->name, sizeof p->name, file, err));
  PG_FAIL_IF(!pg_preset_name_ok(p->name), err, PG_E_ARG, file, PG_NO_OFFSET,
             "preset: '%s' is not a preset name (1..%d bytes of a-z 0-9 . _ -, no leading .)",
             p->name, PG_PRESET_NAME_MAX - 1);
  PG_FAIL_IF(name && strcmp(name, p->name), err, PG_E_ARG, file, PG_NO_OFFSET,
             "preset: '%s' differs from the file's name '%s'", p->name, name);
  PG_TRY(get_text("record", json_object_get(root, "record"), p->record, sizeof p->record, file,
                  err));
  PG_FAIL_IF(!p->record[0], err, PG_E_ARG, file, PG_NO_OFFSET, "record: empty");
  PG_TRY(get_text("date", json_object_get(root, "date"), p->date, sizeof p->date, file, err));
  PG_FAIL_IF(!date_ok(p->date), err, PG_E_ARG, file, PG_NO_OFFSET,
             "date: '%s' is not YYYY-MM-DD", p->date);
  if ((v = json_object_get(root, "pr"))) {
    PG_FAIL_IF(!json_is_integer(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "pr: is %s, not an integer", pg_json_type_word(v));
    PG_FAIL_IF(json_integer_value(v) < 1 || json_integer_value(v) > 10000000, err, PG_E_ARG,
               file, PG_NO_OFFSET, "pr: %lld is outside 1..10000000",
               (long long)json_integer_value(v));
    p->pr = (int)json_integer_value(v);
  }
  if ((v = json_object_get(root, "params"))) {
    PG_FAIL_IF(!json_is_integer(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "params: is %s, not an integer", pg_json_type_word(v));
    PG_FAIL_IF(json_integer_value(v) < 1, err, PG_E_ARG, file, PG_NO_OFFSET,
               "params: %lld is not positive", (long long)json_integer_value(v));
    p->params = (uint64_t)json_integer_value(v);
  }
  v = json_object_get(root, "val_bpb");
  PG_FAIL_IF(!json_is_number(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "val_bpb: is %s, not a number", pg_json_type_word(v));
  p->val_bpb = json_number_value(v);
  PG_FAIL_IF(!(p->val_bpb > 0 && p->val_bpb <= 100), err, PG_E_ARG, file, PG_NO_OFFSET,
             "val_bpb: %.17g is outside (0..100]", p->val_bpb);
  v = json_object_get(root, "supported");
  PG_FAIL_IF(!json_is_boolean(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "supported: is %s, not a boolean", pg_json_type_word(v));
  p->supported = json_is_true(v);
  if ((v = json_object_get(root, "reason")))
    PG_TRY(get_text("reason", v, p->reason, sizeof p->reason, file, err));
  PG_FAIL_IF(!p->supported && !p->reason[0], err, PG_E_ARG, file, PG_NO_OFFSET,
             "reason: missing (a preset that is not supported says why)");
  PG_FAIL_IF(p->supported && v, err, PG_E_ARG, file, PG_NO_OFFSET,
             "reason: given, but the preset is supported");
  if ((v = json_object_get(root, "protocol"))) {
    PG_TRY(get_text("protocol", v, p->protocol, sizeof p->protocol, file, err));
    PG_FAIL_IF(strncmp(p->protocol, "--protocol ", 11), err, PG_E_ARG, file, PG_NO_OFFSET,
               "protocol: '%s' does not begin with \"--protocol \"", p->protocol);
  }
  if ((v = json_object_get(root, "inferred")))
    PG_TRY(get_list("inferred", v, p->inferred, &p->n_inferred, file, err));
  if ((v = json_object_get(root, "quirks")))
    PG_TRY(get_list("quirks", v, p->quirks, &p->n_quirks, file, err));
  if ((v = json_object_get(root, "arch"))) {
    PG_FAIL_IF(!json_is_object(v), err, PG_E_META_TYPE, file, PG_NO_OFFSET,
               "arch: is %s, not an object", pg_json_type_word(v));
    PG_FAIL_IF(json_object_get(v, "follows") != NULL, err, PG_E_ARG, file, PG_NO_OFFSET,
               "arch.follows: not allowed in a preset (its record, date, pr and val_bpb keys "
               "give it)");
    char *text = json_dumps(v, JSON_COMPACT);
    PG_FAIL_IF(!text, err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
    char label[300];
    snprintf(label, sizeof label, "%s: arch", file ? file : "preset");
    const int rc = pg_arch_parse(&p->arch, text, strlen(text), label, err);
    free(text);
    PG_TRY(rc);
    p->has_arch = 1;
    pg_arch_follows *f = &p->arch.follows;
    f->set = 1;
    memcpy(f->record, p->record, sizeof f->record);
    memcpy(f->date, p->date, sizeof f->date);
    f->pr = p->pr;
    f->val_bpb = p->val_bpb;
    memcpy(f->protocol, p->protocol, sizeof f->protocol);
    snprintf(f->note, sizeof f->note, "preset %s (spec/presets/%s.json): %d value%s inferred",
             p->name, p->name, p->n_inferred, p->n_inferred == 1 ? "" : "s");
  }
  PG_FAIL_IF(p->supported && (!p->has_arch || !p->protocol[0]), err, PG_E_ARG, file,
             PG_NO_OFFSET, "%s: missing (a supported preset has an arch and a protocol)",
             p->has_arch ? "protocol" : "arch");
  if (p->supported && p->params) {
    /* the record's own count: a wrong layer count or width shows here */
    uint64_t n = 0;
    PG_TRY(pg_arch_param_count(&p->arch, &n, err));
    PG_FAIL_IF(n != p->params, err, PG_E_ARG, file, PG_NO_OFFSET,
               "params: the record has %llu parameters, the arch %llu",
               (unsigned long long)p->params, (unsigned long long)n);
  }
  return PG_OK;
}

int pg_preset_parse(pg_preset *out, const char *text, size_t len, const char *file,
                    const char *name, pg_err *err) {
  PG_FAIL_IF(!out || (!text && len), err, PG_E_ARG, file, PG_NO_OFFSET, "no text to parse");
  memset(out, 0, sizeof *out);
  PG_FAIL_IF(len > PG_PRESET_JSON_MAX, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "preset text of %zu bytes, limit %zu", len, PG_PRESET_JSON_MAX);
  json_t *root;
  PG_TRY(pg_json_load(&root, text, len, 0, &pg_json_doc_caps, file, err));
  int rc = json_is_object(root)
               ? parse_root(out, root, file, name, err)
               : pg_err_set(err, PG_E_META_TYPE, file, PG_NO_OFFSET,
                            "the top level is %s, not an object", pg_json_type_word(root));
  json_decref(root);
  if (rc != PG_OK) memset(out, 0, sizeof *out);
  return rc;
}

static int is_dir(const char *p) {
  struct stat st;
  return p && p[0] && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int pg_preset_dir(char *buf, size_t cap, pg_err *err) {
  const char *env = getenv("PGOLF_PRESETS");
  const char *cand[] = {env, PG_PRESETS_SRCDIR, PG_PRESETS_DATADIR};
  if (env && env[0]) {
    /* an explicit folder is the only one looked at: a typo must not fall back silently */
    PG_FAIL_IF(!is_dir(env), err, PG_E_NOT_FOUND, env, PG_NO_OFFSET,
               "PGOLF_PRESETS names no presets folder");
    PG_FAIL_IF(strlen(env) >= cap, err, PG_E_LIMIT, env, PG_NO_OFFSET, "path too long");
    memcpy(buf, env, strlen(env) + 1);
    return PG_OK;
  }
  for (int i = 1; i < 3; i++) {
    if (!is_dir(cand[i])) continue;
    PG_FAIL_IF(strlen(cand[i]) >= cap, err, PG_E_LIMIT, cand[i], PG_NO_OFFSET, "path too long");
    memcpy(buf, cand[i], strlen(cand[i]) + 1);
    return PG_OK;
  }
  return pg_err_set(err, PG_E_NOT_FOUND, NULL, PG_NO_OFFSET,
                    "no presets folder (tried $PGOLF_PRESETS, %s, %s)",
                    PG_PRESETS_SRCDIR[0] ? PG_PRESETS_SRCDIR : "no source tree",
                    PG_PRESETS_DATADIR[0] ? PG_PRESETS_DATADIR : "no data directory");
}

int pg_preset_load(pg_preset *out, const char *name, pg_err *err) {
  if (out) memset(out, 0, sizeof *out);
  if (!pg_preset_name_ok(name)) {
    char shown[64];
    snprintf(shown, sizeof shown, "%s", name ? name : "");
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET,
                      "preset '%s': not a preset name (a-z 0-9 . _ -; pgverify --list-presets "
                      "lists them)", shown);
  }
  char dir[4096], path[4300];
  PG_TRY(pg_preset_dir(dir, sizeof dir, err));
  snprintf(path, sizeof path, "%s/%s.json", dir, name);
  struct stat st;
  PG_FAIL_IF(stat(path, &st) != 0, err, PG_E_NOT_FOUND, NULL, PG_NO_OFFSET,
             "preset '%s': no %s.json in %s (pgverify --list-presets lists them)", name, name,
             dir);
  uint8_t *buf = NULL;
  size_t len = 0;
  PG_TRY(pg_file_read_all(path, &buf, &len, PG_PRESET_JSON_MAX, err));
  const int rc = pg_preset_parse(out, (const char *)buf, len, path, name, err);
  free(buf);
  return rc;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

void pg_preset_names_free(char **names, size_t n) {
  for (size_t i = 0; names && i < n; i++) free(names[i]);
  free(names);
}

int pg_preset_names(char ***names, size_t *n, pg_err *err) {
  *names = NULL;
  *n = 0;
  char dir[4096];
  PG_TRY(pg_preset_dir(dir, sizeof dir, err));
  DIR *d = opendir(dir);
  PG_FAIL_IF(!d, err, PG_E_IO, dir, PG_NO_OFFSET, "cannot list the presets folder");
  char **v = NULL;
  size_t k = 0, capn = 0;
  int rc = PG_OK;
  for (struct dirent *e; (e = readdir(d));) {
    const size_t len = strlen(e->d_name);
    if (len <= 5 || strcmp(e->d_name + len - 5, ".json")) continue;
    char stem[PG_PRESET_NAME_MAX + 8];
    if (len - 5 >= sizeof stem) continue;
    memcpy(stem, e->d_name, len - 5);
    stem[len - 5] = '\0';
    if (!pg_preset_name_ok(stem)) continue;
    if (k == capn) {
      capn = capn ? 2 * capn : 64;
      char **nv = realloc(v, capn * sizeof *nv);
      if (!nv) { rc = PG_E_NOMEM; break; }
      v = nv;
    }
    if (!(v[k] = strdup(stem))) { rc = PG_E_NOMEM; break; }
    k++;
  }
  closedir(d);
  if (rc != PG_OK) {
    pg_preset_names_free(v, k);
    return pg_err_set(err, rc, dir, PG_NO_OFFSET, "out of memory listing the presets");
  }
  if (k) qsort(v, k, sizeof *v, cmp_names);
  *names = v;
  *n = k;
  return PG_OK;
}

int pg_preset_require_supported(const pg_preset *p, pg_err *err) {
  PG_FAIL_IF(!p->supported, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "preset '%s': not supported: %s", p->name, p->reason);
  return PG_OK;
}

/* ---- an arch against the tensors of a safetensors file without an arch.json ---- */

typedef struct diffbuf {
  char text[900];
  int n;
} diffbuf;

static void differ(diffbuf *d, const char *what, long long arch, long long weights) {
  if (arch == weights) return;
  const size_t used = strlen(d->text);
  if (used < sizeof d->text - 1)
    snprintf(d->text + used, sizeof d->text - used, "%s%s %lld/%lld", d->n ? ", " : "", what,
             arch, weights);
  d->n++;
}

static const pg_st_tensor *tensor(const pg_st *st, const char *name) {
  const pg_st_tensor *t;
  pg_err e;
  return pg_st_find(&t, st, name, &e) == PG_OK ? t : NULL;
}

/* The size of dimension k of the tensor, 0 when absent or of a lower rank. */
static long long dim_of(const pg_st_tensor *t, unsigned k) {
  return t && k < t->rank ? (long long)t->shape[k] : 0;
}

/* The options the tensors show (names and shapes, spec/arch.md §4), compared with a's. */
static void derive_diff(const pg_arch *a, const pg_st *st, diffbuf *d) {
  const pg_st_tensor *t = tensor(st, "tok_emb.weight");
  if (t && t->rank == 2) {
    differ(d, "vocab_size", a->vocab_size, dim_of(t, 0));
    differ(d, "dim", a->dim, dim_of(t, 1));
  }
  long long layers = 0;
  for (size_t i = 0; i < pg_st_count(st); i++) {
    const char *name = pg_st_at(st, i)->name;
    if (strncmp(name, "blocks.", 7)) continue;
    char *end;
    const long long k = strtoll(name + 7, &end, 10);
    if (end != name + 7 && *end == '.' && k >= 0 && k < 4096 && k + 1 > layers) layers = k + 1;
  }
  if (layers) differ(d, "layers", a->layers, layers);
  const int l = pg_arch_has_attn(a, 0) ? 0 : 1 < a->layers ? 1 : 0;
  char name[64];
  snprintf(name, sizeof name, "blocks.%d.attn.c_q.weight", l);
  if ((t = tensor(st, name)))
    differ(d, "heads*head_dim", (long long)a->heads * a->head_dim, dim_of(t, 0));
  snprintf(name, sizeof name, "blocks.%d.attn.c_k.weight", l);
  if ((t = tensor(st, name)))
    differ(d, "kv_heads*head_dim", (long long)a->kv_heads * a->head_dim, dim_of(t, 0));
  snprintf(name, sizeof name, "blocks.%d.attn.q_gain", l);
  if ((t = tensor(st, name)) && t->rank == 1) differ(d, "heads", a->heads, dim_of(t, 0));
  differ(d, "structure.layer0_attn", a->structure.layer0_attn,
         tensor(st, "blocks.0.attn.c_q.weight") != NULL);
  if ((t = tensor(st, "blocks.0.mlp.fc.weight")))
    differ(d, "mlp.hidden", a->mlp.hidden, dim_of(t, 0));
  t = tensor(st, "bigram.embed.weight");
  differ(d, "embeddings.bigram_buckets", a->embeddings.bigram_buckets, dim_of(t, 0));
  if (t && a->embeddings.bigram_buckets)
    differ(d, "embeddings.bigram_dim", a->embeddings.bigram_dim, dim_of(t, 1));
  t = tensor(st, "ve_shared.embed.weight");
  long long nve = 0;
  for (; nve < PG_ARCH_MAX_LAYERS; nve++) {
    snprintf(name, sizeof name, "ve_layer_scales.%lld", nve);
    if (!tensor(st, name)) break;
  }
  differ(d, "len(embeddings.ve_layers)", a->embeddings.ve_layers.n, t ? nve : 0);
  if (t && a->embeddings.ve_layers.n)
    differ(d, "embeddings.ve_dim", a->embeddings.ve_dim, dim_of(t, 1));
  const int smear = tensor(st, "smear.gate")          ? PG_ARCH_SMEAR_V1
                    : tensor(st, "smear_gate.weight") ? PG_ARCH_SMEAR_V2
                                                      : PG_ARCH_SMEAR_NONE;
  differ(d, "embeddings.smear (0 none, 1 v1, 2 v2)", a->embeddings.smear, smear);
  snprintf(name, sizeof name, "blocks.%d.attn.attn_gate_proj.weight", l);
  const int g2 = tensor(st, name) != NULL;
  snprintf(name, sizeof name, "blocks.%d.attn.attn_gate_w", l);
  const pg_st_tensor *gw = tensor(st, name);
  const int gate = a->attention.gate;
  if (g2 || gw || gate != PG_ARCH_GATE_NONE) {
    /* the kind the tensors allow: a [H, d] matrix is the dense gate, or a sparse one reading
     * all d channels; compare the tensor's presence and width */
    differ(d, "attention.gate is 2sigma_first12", gate == PG_ARCH_GATE_2SIGMA_FIRST12, g2);
    differ(d, "attention.gate is dense_sigmoid or sparse_sigmoid",
           gate == PG_ARCH_GATE_DENSE_SIGMOID || gate == PG_ARCH_GATE_SPARSE_SIGMOID, gw != NULL);
    if (gw && (gate == PG_ARCH_GATE_DENSE_SIGMOID || gate == PG_ARCH_GATE_SPARSE_SIGMOID))
      differ(d, "attention gate columns", gate == PG_ARCH_GATE_DENSE_SIGMOID
                                              ? a->dim : a->attention.gate_window, dim_of(gw, 1));
  }
  t = tensor(st, "skip_weights");
  differ(d, "skips (rows of skip_weights)", pg_arch_n_skips(a), dim_of(t, 0));
  if (t) differ(d, "structure.skips is gated", a->structure.skips == PG_ARCH_SKIPS_GATED,
                tensor(st, "skip_gates") != NULL);
  differ(d, "structure.parallel is two_lane", a->structure.parallel == PG_ARCH_PAR_TWO_LANE,
         tensor(st, "parallel_resid_lambdas") != NULL);
  t = tensor(st, "readout_delta");
  differ(d, "structure.readout_groups", a->structure.readout_groups,
         t ? dim_of(t, t->rank - 1) : 0);
  differ(d, "head.tied", a->head.tied, tensor(st, "lm_head.weight") == NULL);
}

int pg_preset_check_weights(const pg_arch *a, const char *path, pg_err *err) {
  int is_art = 0;
  PG_TRY(pg_weights_is_artifact(path, &is_art, err));
  if (is_art) return PG_OK; /* the loader compares the artifact's arch.json */
  pg_st *st;
  if (pg_st_open_file(&st, path, err) != PG_OK) return PG_OK; /* the loader reports it */
  int rc = PG_OK;
  if (!pg_st_meta_get(st, "arch.json")) {
    diffbuf d = {{0}, 0};
    derive_diff(a, st, &d);
    if (d.n)
      rc = pg_err_set(err, PG_E_ARG, path, PG_NO_OFFSET,
                      "the arch given contradicts the weights' tensors in %d option%s "
                      "(given/weights): %s", d.n, d.n == 1 ? "" : "s", d.text);
  }
  pg_st_free(st);
  return rc;
}
