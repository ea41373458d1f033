/* pg_weights.c: the parameter loaders (spec/load.md). Both sources (an artifact, a safetensors
 * file) are seen through one small interface: a tensor count, each tensor's name and shape, and a
 * fill into fp32. The checks run in a fixed order, all before the model is allocated: the arch,
 * every arch tensor's presence and shape (canonical order), then any tensor the arch does not imply
 * (the source's order); then the values are filled and checked for NaN and infinity. */
#include "pg_weights.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_extract.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_real.h"
#include "pg_safetensors.h"

_Static_assert(sizeof(pg_real) == sizeof(float), "the loaders fill fp32 models");

/* One source of tensors. */
typedef struct src {
  const char *file; /* for error lines */
  size_t n;
  const char *(*name)(const struct src *s, size_t i);
  const uint64_t *(*dims)(const struct src *s, size_t i, unsigned *ndim);
  int (*fill)(struct src *s, size_t i, float *dst, size_t count, pg_err *err);
  pg_artifact *a;
  const pg_st *st;
  const char *skip_prefix; /* names beginning with it are not weights (checkpoint state) */
} src;

/* ---- the artifact ---- */

static const char *art_name(const src *s, size_t i) {
  return pg_artifact_tensor(s->a, (uint32_t)i)->name;
}
static const uint64_t *art_dims(const src *s, size_t i, unsigned *ndim) {
  const pg_tensor_info *t = pg_artifact_tensor(s->a, (uint32_t)i);
  *ndim = t->ndim;
  return t->dims;
}
static int art_fill(src *s, size_t i, float *dst, size_t count, pg_err *err) {
  (void)count; /* the shape check made it the tensor's element count */
  return pg_artifact_tensor_dequant(s->a, (uint32_t)i, dst, err);
}

/* ---- safetensors ---- */

static const char *st_name(const src *s, size_t i) { return pg_st_at(s->st, i)->name; }
static const uint64_t *st_dims(const src *s, size_t i, unsigned *ndim) {
  const pg_st_tensor *t = pg_st_at(s->st, i);
  *ndim = t->rank;
  return t->shape;
}
static int st_fill(src *s, size_t i, float *dst, size_t count, pg_err *err) {
  return pg_st_to_f32(dst, count, s->st, pg_st_at(s->st, i), err);
}

/* ---- the shape rule ---- */

int pg_weights_shape_compatible(const pg_arch_tensor *t, unsigned ndim, const uint64_t *dims) {
  uint64_t n = 1;
  for (unsigned k = 0; k < ndim; k++) {
    if (dims[k] == 0) return 0; /* no arch tensor is empty */
    if (n > UINT64_MAX / dims[k]) return 0;
    n *= dims[k];
  }
  if (n != pg_arch_tensor_numel(t)) return 0;
  unsigned j = 0;
  for (int k = 0; k < t->ndim; k++) {
    if (t->shape[k] == 1) continue;
    while (j < ndim && dims[j] == 1) j++;
    if (j == ndim || dims[j] != t->shape[k]) return 0;
    j++;
  }
  while (j < ndim && dims[j] == 1) j++;
  return j == ndim;
}

static const char *fmt_shape(char *buf, size_t cap, unsigned ndim, const uint64_t *dims) {
  size_t n = 0;
  buf[0] = '\0';
  int k = snprintf(buf, cap, "[");
  n = k > 0 ? (size_t)k : 0;
  for (unsigned i = 0; i < ndim && n < cap; i++) {
    k = snprintf(buf + n, cap - n, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (k < 0) break;
    n += (size_t)k;
  }
  if (n < cap) snprintf(buf + n, cap - n, "]");
  return buf;
}

/* ---- names, sorted for lookups both ways ---- */

typedef struct named {
  const char *name;
  size_t i;
} named;

static int cmp_named(const void *x, const void *y) {
  return strcmp(((const named *)x)->name, ((const named *)y)->name);
}

static long lookup(const named *v, size_t n, const char *name) {
  named key = {name, 0};
  const named *hit = n ? bsearch(&key, v, n, sizeof *v, cmp_named) : NULL;
  return hit ? (long)hit->i : -1;
}

/* Prefix a message that does not name the file (pg_model_create's) with it. */
static int with_file(pg_err *err, int rc, const char *file) {
  if (!err) return rc;
  char tmp[PG_ERR_MSG_MAX];
  memcpy(tmp, err->msg, sizeof tmp);
  tmp[sizeof tmp - 1] = '\0';
  return pg_err_set(err, rc, file, PG_NO_OFFSET, "%s", tmp);
}

/* Everything a loader checks before it allocates (spec/load.md §3): the arch, every arch
 * tensor present with a compatible shape, nothing else, and the parameter count. On success *t
 * (nt tensors) and *from (the source index of each) are malloc'd for the caller. */
static int plan(const pg_arch *arch, src *s, pg_arch_tensor **tp, size_t *ntp, size_t **fromp,
                pg_err *err) {
  *tp = NULL;
  *ntp = 0;
  *fromp = NULL;
  PG_TRY(pg_arch_validate(arch, s->file, err));
  pg_arch_tensor *t = NULL;
  size_t nt = 0;
  int rc = pg_arch_tensors(arch, &t, &nt, err);
  if (rc) return with_file(err, rc, s->file);
  uint64_t params = 0;
  rc = pg_arch_param_count(arch, &params, err);
  if (rc) {
    free(t);
    return with_file(err, rc, s->file);
  }
  named *sn = malloc((s->n ? s->n : 1) * sizeof *sn);
  named *an = malloc((nt ? nt : 1) * sizeof *an);
  size_t *from = malloc((nt ? nt : 1) * sizeof *from);
  if (!sn || !an || !from) {
    rc = pg_err_set(err, PG_E_NOMEM, s->file, PG_NO_OFFSET, "cannot allocate the tensor index");
    goto done;
  }
  for (size_t i = 0; i < s->n; i++) sn[i] = (named){s->name(s, i), i};
  qsort(sn, s->n, sizeof *sn, cmp_named);
  for (size_t i = 0; i < nt; i++) an[i] = (named){t[i].name, i};
  qsort(an, nt, sizeof *an, cmp_named);

  /* every arch tensor, present with a compatible shape */
  uint64_t held = 0;
  for (size_t i = 0; i < nt; i++) {
    long j = lookup(sn, s->n, t[i].name);
    if (j < 0) {
      rc = pg_err_set(err, PG_E_NOT_FOUND, s->file, PG_NO_OFFSET,
                      "tensor %s: missing (the arch implies it)", t[i].name);
      goto done;
    }
    unsigned nd;
    const uint64_t *d = s->dims(s, (size_t)j, &nd);
    if (!pg_weights_shape_compatible(&t[i], nd, d)) {
      char got[160], want[160];
      uint64_t ws[3] = {t[i].shape[0], t[i].shape[1], t[i].shape[2]};
      rc = pg_err_set(err, PG_E_SIZE_MISMATCH, s->file, PG_NO_OFFSET,
                      "tensor %s: shape %s does not match the arch's %s", t[i].name,
                      fmt_shape(got, sizeof got, nd, d),
                      fmt_shape(want, sizeof want, (unsigned)t[i].ndim, ws));
      goto done;
    }
    from[i] = (size_t)j;
    held += pg_arch_tensor_numel(&t[i]);
  }
  /* nothing else: a verifier must not silently ignore weights */
  for (size_t i = 0; i < s->n; i++) {
    const char *name = s->name(s, i);
    if (s->skip_prefix && strncmp(name, s->skip_prefix, strlen(s->skip_prefix)) == 0) continue;
    if (lookup(an, nt, name) < 0) {
      rc = pg_err_set(err, PG_E_MALFORMED, s->file, PG_NO_OFFSET,
                      "tensor %.255s: not part of the arch", name);
      goto done;
    }
  }
  /* Names are unique on both sides, so the tensors now pair one to one and the model holds
   * exactly the elements the source's tensors hold. */
  if (held != params)
    rc = pg_err_set(err, PG_E_SIZE_MISMATCH, s->file, PG_NO_OFFSET,
                    "the arch has %llu parameters but its tensors hold %llu",
                    (unsigned long long)params, (unsigned long long)held);
done:
  free(sn);
  free(an);
  if (rc) {
    free(t);
    free(from);
    return rc;
  }
  *tp = t;
  *ntp = nt;
  *fromp = from;
  return PG_OK;
}

/* The model keeps the arch's canonical order: tensor i of m must be the plan's t. */
static int same_order(const pg_model *m, size_t i, const pg_arch_tensor *t, const char *file,
                      pg_err *err) {
  if (strcmp(pg_model_tensor(m, i)->name, t->name) == 0) return PG_OK;
  return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "tensor %s: model order differs",
                    t->name);
}

/* The end of load() and load_on(): the model on success, none on failure; the plan freed. */
static int finish(pg_model **out, pg_model *m, pg_arch_tensor *t, size_t *from, int rc) {
  if (rc) {
    pg_model_free(m);
    m = NULL;
  }
  *out = m;
  free(from);
  free(t);
  return rc;
}

/* The common body: check everything, then allocate and fill. */
static int load(pg_model **out, const pg_arch *arch, src *s, pg_err *err) {
  *out = NULL;
  pg_arch_tensor *t;
  size_t nt, *from;
  PG_TRY(plan(arch, s, &t, &nt, &from, err));
  pg_model *m = NULL;
  int rc = pg_model_create(&m, arch, err);
  if (rc) {
    rc = with_file(err, rc, s->file);
    goto done;
  }
  for (size_t i = 0; i < nt; i++) {
    rc = same_order(m, i, &t[i], s->file, err);
    if (rc) goto done;
    rc = s->fill(s, from[i], pg_model_data(m, i), (size_t)pg_arch_tensor_numel(&t[i]), err);
    if (rc) goto done;
  }
  rc = pg_model_check_finite(m, s->file, err);

done:
  return finish(out, m, t, from, rc);
}

int pg_weights_check_arch(const pg_arch *given, const char *text, size_t len, const char *file,
                       const char *label, pg_arch *stored, pg_err *err) {
  pg_arch tmp;
  pg_arch *st = stored ? stored : &tmp;
  PG_TRY(pg_arch_parse(st, text, len, label, err));
  char diff[PG_ERR_MSG_MAX / 2];
  const int n = pg_arch_diff(given, st, diff, sizeof diff);
  PG_FAIL_IF(n > 0, err, PG_E_ARG, file, PG_NO_OFFSET,
             "the arch given contradicts the file's arch.json in %d option%s (given/stored): %s",
             n, n == 1 ? "" : "s", diff);
  return PG_OK;
}

/* The arch a loader uses: the given one when there is one, checked against the stored text when
 * there is one too (it must describe the same model; the stored "follows" is kept when the given
 * arch has none); else the stored one. */
static int resolve_arch(pg_arch *use, const pg_arch *given, const char *text, size_t len,
                        const char *file, const char *label, pg_err *err) {
  if (!given) return pg_arch_parse(use, text, len, label, err);
  *use = *given;
  if (!text) return PG_OK;
  pg_arch stored;
  PG_TRY(pg_weights_check_arch(given, text, len, file, label, &stored, err));
  if (!use->follows.set) use->follows = stored.follows;
  return PG_OK;
}

/* The artifact as a tensor source, with its arch (given, or from its metadata). */
static int artifact_src(pg_artifact *a, const pg_arch *given, pg_arch *arch, src *s,
                        pg_err *err) {
  const char *file = pg_artifact_name(a);
  const pg_meta_entry *e = pg_artifact_meta_find(a, "arch.json");
  PG_FAIL_IF(!e, err, PG_E_NOT_FOUND, file, PG_NO_OFFSET,
             "no \"arch.json\" metadata: the artifact does not describe its model");
  PG_FAIL_IF(e->type != PG_META_STR, err, PG_E_META_TYPE, file, PG_NO_OFFSET,
             "metadata \"arch.json\" is not a string");
  char label[PG_ERR_MSG_MAX / 2];
  snprintf(label, sizeof label, "%s: arch.json", file ? file : "<artifact>");
  PG_TRY(resolve_arch(arch, given, e->str, e->count, file, label, err));
  *s = (src){.file = file, .n = pg_artifact_tensor_count(a), .name = art_name, .dims = art_dims,
             .fill = art_fill, .a = a};
  return PG_OK;
}

int pg_model_load_artifact(pg_model **out, pg_artifact *a, pg_err *err) {
  return pg_model_load_artifact_arch(out, a, NULL, err);
}

int pg_model_load_artifact_arch(pg_model **out, pg_artifact *a, const pg_arch *given,
                                pg_err *err) {
  PG_FAIL_IF(!out || !a, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pg_model_load_artifact: NULL argument");
  *out = NULL;
  pg_arch arch;
  src s;
  PG_TRY(artifact_src(a, given, &arch, &s, err));
  const int rc = load(out, &arch, &s, err);
  pg_artifact_trim(a); /* the model holds the weights now: the decoded sections can go */
  return rc;
}

/* ---- an artifact loaded onto an engine (spec/engine.md §8.1) --------------------------------- */

/* Host buffers for one integer tensor's quantized parts, grown to the largest tensor. */
typedef struct qbufs {
  int8_t *q, *qa, *qb;
  uint16_t *sc, *sb;
  float *f; /* a tensor the host dequantizes */
  size_t nq, nqa, nqb, nsc, nsb, nf;
} qbufs;

static int grow(void **p, size_t *cap, size_t n, size_t size) {
  if (n <= *cap && *p) return PG_OK;
  void *q = realloc(*p, n ? n * size : 1);
  if (!q) return PG_E_NOMEM;
  *p = q;
  *cap = n;
  return PG_OK;
}

static void qbufs_free(qbufs *b) {
  free(b->q);
  free(b->qa);
  free(b->qb);
  free(b->sc);
  free(b->sb);
  free(b->f);
}

static int finite_f16(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

/* The first NaN or infinity of v[0..n) as the loaders report it (pg_model_check_finite). */
static int check_finite(const float *v, uint64_t n, const char *file, const char *name,
                        pg_err *err) {
  for (uint64_t j = 0; j < n; j++)
    if (!isfinite(v[j]))
      return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "tensor %s: element %zu is %s", name,
                        (size_t)j, isnan(v[j]) ? "NaN" : "infinite");
  return PG_OK;
}

/* Tensor ai of the artifact into engine memory dst (model tensor `name`). An integer tensor with
 * row scales goes up quantized and the engine dequantizes it; any other (floats, one fp32 scale)
 * is dequantized on the host and goes up as fp32. *bad gets the finiteness fault of this tensor,
 * as pg_model_check_finite would word it, when *bad is still PG_OK: every value is finite when
 * every fp16 scale is (|q·s| <= 128 · 65504, and the LQER term is bounded likewise), so only a
 * tensor with a non-finite scale is dequantized on the host to find its first bad element. */
static int fill_on(pg_artifact *a, uint32_t ai, pg_engine *e, float *dst, const char *name,
                   qbufs *b, int *bad, pg_err *bad_err, pg_err *err) {
  const char *file = pg_artifact_name(a);
  const pg_tensor_info *t = pg_artifact_tensor(a, ai);
  const uint64_t n = t->numel;
  const int quant = pg_qtype_is_int(t->qtype) && t->scale_kind == PG_SCALE_ROW_F16;
  if (!quant) {
    PG_FAIL_IF(grow((void **)&b->f, &b->nf, (size_t)n, sizeof *b->f), err, PG_E_NOMEM, file,
               PG_NO_OFFSET, "tensor '%s': out of memory for %llu floats", t->name,
               (unsigned long long)n);
    PG_TRY(pg_artifact_tensor_dequant(a, ai, b->f, err));
    if (*bad == PG_OK) *bad = check_finite(b->f, n, file, name, bad_err);
    pg_engine_upload(e, dst, b->f, (size_t)n * sizeof *b->f);
    return PG_OK;
  }
  const uint64_t r = t->lqer_rank, na = t->rows * r, nb = t->cols * r;
  PG_FAIL_IF(grow((void **)&b->q, &b->nq, (size_t)n, 1) ||
                 grow((void **)&b->sc, &b->nsc, (size_t)t->rows, sizeof *b->sc) ||
                 grow((void **)&b->qa, &b->nqa, (size_t)na, 1) ||
                 grow((void **)&b->qb, &b->nqb, (size_t)nb, 1) ||
                 grow((void **)&b->sb, &b->nsb, (size_t)(nb / PG_LQER_GROUP), sizeof *b->sb),
             err, PG_E_NOMEM, file, PG_NO_OFFSET,
             "tensor '%s': out of memory for its %llu values", t->name, (unsigned long long)n);
  uint16_t sa = 0;
  PG_TRY(pg_artifact_tensor_values(a, ai, b->q, err));
  PG_TRY(pg_artifact_tensor_row_parts(a, ai, b->sc, b->qa, &sa, b->qb, b->sb, err));
  const pg_engine_qtensor q = {.rows = t->rows, .cols = t->cols, .q = b->q, .scales = b->sc,
                               .lqer_rank = (unsigned)r, .lqer_a = b->qa, .lqer_a_scale = sa,
                               .lqer_b = b->qb, .lqer_b_scales = b->sb};
  pg_engine_dequant(e, dst, &q);
  if (*bad != PG_OK) return PG_OK;
  int finite = 1;
  for (uint64_t k = 0; k < t->rows; k++) finite &= finite_f16(b->sc[k]);
  if (r) {
    finite &= finite_f16(sa);
    for (uint64_t g = 0; g < nb / PG_LQER_GROUP; g++) finite &= finite_f16(b->sb[g]);
  }
  if (finite) return PG_OK;
  PG_FAIL_IF(grow((void **)&b->f, &b->nf, (size_t)n, sizeof *b->f), err, PG_E_NOMEM, file,
             PG_NO_OFFSET, "tensor '%s': out of memory for %llu floats", t->name,
             (unsigned long long)n);
  PG_TRY(pg_artifact_tensor_dequant(a, ai, b->f, err));
  *bad = check_finite(b->f, n, file, name, bad_err);
  return PG_OK;
}

/* load() for an artifact onto engine e: the same checks first, then every tensor in canonical
 * order through fill_on; decoding faults first, then the first non-finite weight, then a fault
 * of the engine, as the host path reports them. */
static int load_on(pg_model **out, const pg_arch *arch, src *s, pg_engine *e, pg_err *err) {
  *out = NULL;
  pg_arch_tensor *t;
  size_t nt, *from;
  PG_TRY(plan(arch, s, &t, &nt, &from, err));
  pg_model *m = NULL;
  qbufs b = {0};
  pg_err bad_err;
  int bad = PG_OK;
  int rc = pg_model_create_on(&m, arch, e, err);
  if (rc) {
    rc = with_file(err, rc, s->file);
    goto done;
  }
  for (size_t i = 0; i < nt && rc == PG_OK; i++) {
    rc = same_order(m, i, &t[i], s->file, err);
    if (rc) break;
    rc = fill_on(s->a, (uint32_t)from[i], e, pg_model_data_engine(m, i), t[i].name, &b, &bad,
                 &bad_err, err);
  }
  pg_err dev_err;
  const int dev = pg_engine_sync(e, &dev_err);
  if (rc == PG_OK && bad != PG_OK) {
    rc = bad;
    if (err) *err = bad_err;
  }
  if (rc == PG_OK && dev != PG_OK) rc = pg_err_set(err, dev, s->file, PG_NO_OFFSET,
                                                   "loading the weights: %s", dev_err.msg);
done:
  qbufs_free(&b);
  return finish(out, m, t, from, rc);
}

int pg_model_load_artifact_on(pg_model **out, pg_artifact *a, const pg_arch *given,
                              pg_engine *e, pg_err *err) {
  if (!e) return pg_model_load_artifact_arch(out, a, given, err);
  PG_FAIL_IF(!out || !a, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pg_model_load_artifact_on: NULL argument");
  *out = NULL;
  pg_arch arch;
  src s;
  PG_TRY(artifact_src(a, given, &arch, &s, err));
  const int rc = load_on(out, &arch, &s, e, err);
  pg_artifact_trim(a); /* the model holds the weights now: the decoded sections can go */
  return rc;
}

int pg_weights_check_artifact(pg_artifact *a, pg_err *err) {
  PG_FAIL_IF(!a, err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_weights_check_artifact: NULL argument");
  pg_arch arch;
  src s;
  PG_TRY(artifact_src(a, NULL, &arch, &s, err));
  pg_arch_tensor *t;
  size_t nt, *from;
  PG_TRY(plan(&arch, &s, &t, &nt, &from, err));
  free(t);
  free(from);
  return PG_OK;
}

static int load_st(pg_model **out, const pg_arch *arch, const char *path, const char *skip,
                   pg_err *err);

int pg_model_load_safetensors(pg_model **out, const pg_arch *arch, const char *path, pg_err *err) {
  return load_st(out, arch, path, NULL, err);
}

int pg_model_load_checkpoint(pg_model **out, const pg_arch *arch, const char *path, pg_err *err) {
  return load_st(out, arch, path, PG_LOAD_STATE_PREFIX, err);
}

static int load_st(pg_model **out, const pg_arch *arch, const char *path, const char *skip,
                   pg_err *err) {
  PG_FAIL_IF(!out || !path, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "pg_model_load_safetensors: NULL argument");
  *out = NULL;
  pg_st *st;
  PG_TRY(pg_st_open_file(&st, path, err));
  pg_arch use;
  int rc = PG_OK;
  const char *text = pg_st_meta_get(st, "arch.json");
  if (!arch && !text) {
    rc = pg_err_set(err, PG_E_NOT_FOUND, path, PG_NO_OFFSET,
                    "no \"arch.json\" in __metadata__: pass an arch to load this file");
  } else {
    char label[PG_ERR_MSG_MAX / 2];
    snprintf(label, sizeof label, "%s: __metadata__ arch.json", path);
    if (arch) rc = pg_arch_validate(arch, path, err);
    if (rc == PG_OK)
      rc = resolve_arch(&use, arch, text, text ? strlen(text) : 0, path, label, err);
  }
  if (rc == PG_OK) {
    src s = {.file = path, .n = pg_st_count(st), .name = st_name, .dims = st_dims,
             .fill = st_fill, .st = st, .skip_prefix = skip};
    rc = load(out, &use, &s, err);
  }
  pg_st_free(st);
  return rc;
}

/* ---- weights as the tools take them --------------------------------------------------------- */

int pg_weights_is_artifact(const char *path, int *yes, pg_err *err) {
  FILE *f;
  PG_TRY(pg_file_fopen_read(path, &f, err));
  uint8_t head[8] = {0};
  size_t got = fread(head, 1, sizeof head, f);
  fclose(f);
  *yes = got == sizeof head && memcmp(head, PG_MAGIC, sizeof head) == 0;
  return PG_OK;
}

int pg_weights_load(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                    const char *arch_path, pg_err *err) {
  pg_arch given;
  *m = NULL;
  *art = NULL;
  if (arch_path) PG_TRY(pg_arch_load(&given, arch_path, err));
  return pg_weights_load_given(m, art, path, is_artifact, arch_path ? &given : NULL, err);
}

int pg_weights_load_given(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                          const pg_arch *given, pg_err *err) {
  return pg_weights_load_on(m, art, path, is_artifact, given, NULL, err);
}

int pg_weights_load_on(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                       const pg_arch *given, pg_engine *e, pg_err *err) {
  *m = NULL;
  *art = NULL;
  if (!is_artifact) return pg_model_load_checkpoint(m, given, path, err);
  PG_TRY(pg_artifact_open(art, path, NULL, err));
  return pg_model_load_artifact_on(m, *art, given, e, err);
}

char *pg_weights_meta(const char *path, pg_artifact *art, const char *key) {
  if (art) {
    const pg_meta_entry *e = pg_artifact_meta_find(art, key);
    if (!e || e->type != PG_META_STR) return NULL;
    char *s = malloc((size_t)e->count + 1);
    if (s) {
      memcpy(s, e->str, (size_t)e->count);
      s[e->count] = '\0';
    }
    return s;
  }
  /* Only the header is read (8-byte length, then the JSON): the whole file is a model's worth of
   * bytes, and a verification asks for several entries. */
  int fd;
  uint64_t size;
  pg_err err;
  if (pg_file_open_read(path, &fd, &size, &err) != PG_OK) return NULL;
  uint8_t len8[8];
  char *hdr = NULL, *s = NULL;
  uint64_t n = 0;
  if (size >= 8 && pg_file_pread(fd, 0, len8, 8, path, &err) == PG_OK) n = pg_ld64(len8);
  if (n > 0 && n <= PG_ST_MAX_HEADER && n <= size - 8 && (hdr = malloc((size_t)n)) &&
      pg_file_pread(fd, 8, hdr, (size_t)n, path, &err) == PG_OK &&
      pg_st_header_text_check((const uint8_t *)hdr, (size_t)n, path, &err) == PG_OK) {
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    const char *v = json_string_value(json_object_get(json_object_get(root, "__metadata__"), key));
    s = v ? strdup(v) : NULL;
    json_decref(root);
  }
  free(hdr);
  close(fd);
  return s;
}

/* ---- an artifact's weights as safetensors ---------------------------------------------------- */

/* One tensor, dequantized when the writer asks for it: the export holds one tensor at a time. */
typedef struct st_job {
  pg_artifact *a;
  uint32_t i;
  int bf16;
} st_job;

static int fill_tensor(void *ctx, void *dst, size_t nbytes, pg_err *err) {
  const st_job *j = ctx;
  const uint64_t n = pg_artifact_tensor(j->a, j->i)->numel;
  float *f = j->bf16 ? malloc(n ? (size_t)n * 4 : 4) : dst;
  if (!f)
    return pg_err_set(err, PG_E_NOMEM, pg_artifact_name(j->a), PG_NO_OFFSET,
                      "tensor '%s': out of memory for %llu floats",
                      pg_artifact_tensor(j->a, j->i)->name, (unsigned long long)n);
  int rc = pg_artifact_tensor_dequant(j->a, j->i, f, err);
  if (j->bf16) {
    uint16_t *h = dst;
    for (uint64_t k = 0; rc == PG_OK && k < n; k++) h[k] = pg_f32_to_bf16(f[k]);
    free(f);
  }
  (void)nbytes; /* numel * 2 or 4: the writer checked it against the shape */
  return rc;
}

int pg_weights_export_safetensors(pg_artifact *a, const char *out, int bf16, pg_err *err) {
  const uint32_t n = pg_artifact_tensor_count(a);
  st_job *jobs = calloc(n ? n : 1, sizeof *jobs);
  pg_st_writer *w = NULL;
  int rc = jobs ? pg_st_writer_create(&w, err)
                : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "out of memory");
  for (uint32_t i = 0; rc == PG_OK && i < n; i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    jobs[i] = (st_job){a, i, bf16};
    rc = pg_st_writer_add_fill(w, t->name, bf16 ? PG_ST_BF16 : PG_ST_F32, t->ndim, t->dims,
                               (size_t)t->numel * (bf16 ? 2 : 4), fill_tensor, &jobs[i], err);
  }
  for (uint32_t i = 0; rc == PG_OK && i < pg_artifact_meta_count(a); i++) {
    const pg_meta_entry *m = pg_artifact_meta(a, i);
    char key[PG_MAX_NAME + 1];
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    json_t *v = pg_meta_value_json(m);
    char *txt = m->type == PG_META_STR ? NULL : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    char *s = txt;
    if (m->type == PG_META_STR) {
      s = malloc((size_t)m->count + 1);
      if (s) {
        memcpy(s, m->str, m->count);
        s[m->count] = '\0';
      }
    }
    json_decref(v);
    rc = s ? pg_st_writer_set_meta(w, key, s, err)
           : pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    free(s);
  }
  if (rc == PG_OK) rc = pg_st_writer_write(w, out, err);
  pg_st_writer_free(w);
  free(jobs);
  return rc;
}

