/* bench_read: how long reading a ~16 MB artifact takes (open + checksums + decompression, range
 * checks, dequantization to fp32), set against the bare codec's speed on the very same stored
 * bytes, for several codecs. The artifact is synthetic but has the record models' shape and a
 * realistic value entropy; it is built deterministically in memory and written to a temp file.
 *
 * Exit status: 0 ok, 2 on any error. Progress on stderr; the table (or JSON) on stdout. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_codec.h"
#include "pg_container.h"
#include "pg_half.h"
#include "pg_io.h"
#include "pg_rng.h"

static const char *PROG = "bench_read";
#include "bench_util.h"

/* ------------------------------------------------------------------------------------------ */
/* the model: the challenge's record family, 11 layers, d=512, 8 heads / 4 KV heads, MLP 4x,
 * vocabulary 8192 with a tied embedding */

enum { LAYERS = 11, DIM = 512, HEADS = 8, KV_DIM = 256, HIDDEN = 4 * DIM, VOCAB = 8192,
       N_SKIP = LAYERS / 2 };
/* SDClip: scale = k*std(row)/R, so the quantized values have std R/k: 31/12.85 = 2.41 for the
 * int6 matrices (~3.3 bits/value of entropy), 127/20 = 6.35 for the int8 embedding (~4.7). */
#define CLIP6 12.85
#define CLIP8 20.0
#define SEED 1337u

/* DATA sections, one per category */
enum { SEC_EMBED, SEC_ATTN, SEC_MLP, SEC_SCALES, SEC_PASS, N_CAT };
static const char *const CAT_NAME[N_CAT] = {"embed", "attn", "mlp", "scales", "passthrough"};

typedef struct btensor {
  char name[64];
  int qtype;
  unsigned ndim;
  uint64_t dims[2];
  uint64_t numel;
  int cat;          /* DATA section of the values */
  void *values;     /* int8 values, or f16/f32 little-endian bytes */
  uint16_t *scales; /* int tensors: fp16 row scales */
  int qmin, qmax;
  float *out; /* dequantization target, allocated and touched once */
} btensor;

typedef struct model {
  btensor *t;
  size_t n, cap;
  uint64_t params;
} model;

static pg_rng rng; /* the deterministic stream the artifact is drawn from */

static btensor *model_add(model *m, const char *name, int qtype, unsigned ndim, uint64_t d0,
                          uint64_t d1, int cat) {
  if (m->n == m->cap) {
    size_t nc = m->cap ? 2 * m->cap : 64;
    btensor *t = realloc(m->t, nc * sizeof *t);
    if (!t) return NULL;
    m->t = t;
    m->cap = nc;
  }
  btensor *t = &m->t[m->n];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->qtype = qtype;
  t->ndim = ndim;
  t->dims[0] = d0;
  t->dims[1] = d1;
  t->numel = ndim == 2 ? d0 * d1 : d0;
  t->cat = cat;
  unsigned bytes = pg_qtype_is_int(qtype) ? 1 : pg_qtype_bits(qtype) / 8;
  t->values = malloc(t->numel * bytes);
  t->out = malloc(t->numel * sizeof(float));
  if (!t->values || !t->out) return NULL;
  memset(t->out, 0, t->numel * sizeof(float)); /* fault the pages in now, not while timing */
  m->n++;
  m->params += t->numel;
  return t;
}

/* An int matrix: values a rounded Gaussian of std R/k clipped to [-R, R], row scales
 * fp16(k * std_row / R) with std_row around 1/sqrt(cols), varying from row to row. */
static int add_matrix(model *m, const char *name, uint64_t rows, uint64_t cols, unsigned bits,
                      double k, int cat) {
  btensor *t = model_add(m, name, bits == 8 ? PG_QTYPE_INT8 : PG_QTYPE_INT6, 2, rows, cols, cat);
  if (!t) return 1;
  const int R = (1 << (bits - 1)) - 1;
  const double sd = (double)R / k;
  int8_t *q = t->values;
  for (uint64_t i = 0; i < t->numel; i++) {
    double v = rint(sd * pg_rng_gauss(&rng));
    q[i] = (int8_t)(v < -R ? -R : v > R ? R : v);
  }
  t->qmin = -R;
  t->qmax = R;
  t->scales = malloc(rows * 2);
  if (!t->scales) return 1;
  for (uint64_t r = 0; r < rows; r++) {
    double row_std = exp(0.25 * pg_rng_gauss(&rng)) / sqrt((double)cols);
    t->scales[r] = pg_f32_to_f16((float)(k * row_std / R));
  }
  return 0;
}

/* A control tensor (passthrough): trained-looking values around `center`. */
static int add_control(model *m, const char *name, int qtype, unsigned ndim, uint64_t d0,
                       uint64_t d1, double center, double spread) {
  btensor *t = model_add(m, name, qtype, ndim, d0, d1, SEC_PASS);
  if (!t) return 1;
  uint8_t *b = t->values;
  for (uint64_t i = 0; i < t->numel; i++) {
    float v = (float)(center + spread * pg_rng_gauss(&rng));
    if (qtype == PG_QTYPE_F16) {
      pg_st16(b + 2 * i, pg_f32_to_f16(v));
    } else {
      uint32_t u;
      memcpy(&u, &v, 4);
      pg_st32(b + 4 * i, u);
    }
  }
  return 0;
}

static int build_model(model *m) {
  pg_rng_seed(&rng, SEED);
  char nm[64];
  if (add_matrix(m, "tok_emb.weight", VOCAB, DIM, 8, CLIP8, SEC_EMBED)) return 1;
  for (int l = 0; l < LAYERS; l++) {
    static const struct {
      const char *suffix;
      uint64_t rows, cols;
      int cat;
    } mats[] = {
        {"attn.c_q.weight", DIM, DIM, SEC_ATTN},    {"attn.c_k.weight", KV_DIM, DIM, SEC_ATTN},
        {"attn.c_v.weight", KV_DIM, DIM, SEC_ATTN}, {"attn.proj.weight", DIM, DIM, SEC_ATTN},
        {"mlp.fc.weight", HIDDEN, DIM, SEC_MLP},    {"mlp.proj.weight", DIM, HIDDEN, SEC_MLP}};
    for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
      snprintf(nm, sizeof nm, "blocks.%d.%s", l, mats[i].suffix);
      if (add_matrix(m, nm, mats[i].rows, mats[i].cols, 6, CLIP6, mats[i].cat)) return 1;
    }
    snprintf(nm, sizeof nm, "blocks.%d.attn_scale", l);
    if (add_control(m, nm, PG_QTYPE_F16, 1, DIM, 0, 1.0, 0.15)) return 1;
    snprintf(nm, sizeof nm, "blocks.%d.mlp_scale", l);
    if (add_control(m, nm, PG_QTYPE_F16, 1, DIM, 0, 1.0, 0.15)) return 1;
    snprintf(nm, sizeof nm, "blocks.%d.resid_mix", l);
    if (add_control(m, nm, PG_QTYPE_F32, 2, 2, DIM, 0.5, 0.3)) return 1;
    snprintf(nm, sizeof nm, "blocks.%d.attn.q_gain", l);
    if (add_control(m, nm, PG_QTYPE_F32, 1, HEADS, 0, 1.5, 0.2)) return 1;
  }
  if (add_control(m, "skip_weights", PG_QTYPE_F32, 2, N_SKIP, DIM, 1.0, 0.2)) return 1;
  return 0;
}

static void free_model(model *m) {
  for (size_t i = 0; i < m->n; i++) {
    free(m->t[i].values);
    free(m->t[i].scales);
    free(m->t[i].out);
  }
  free(m->t);
}

/* Empirical entropy (bits/value) of the int values of one category. */
static double cat_entropy(const model *m, int cat) {
  uint64_t hist[256] = {0}, n = 0;
  for (size_t i = 0; i < m->n; i++) {
    const btensor *t = &m->t[i];
    if (t->cat != cat || !pg_qtype_is_int(t->qtype)) continue;
    const uint8_t *q = t->values;
    for (uint64_t j = 0; j < t->numel; j++) hist[q[j]]++;
    n += t->numel;
  }
  double h = 0;
  for (int b = 0; b < 256; b++)
    if (hist[b]) {
      double p = (double)hist[b] / (double)n;
      h -= p * log2(p);
    }
  return h;
}

/* ------------------------------------------------------------------------------------------ */
/* writing and timing */

static void progress(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void progress(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", PROG);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static int fail(const pg_err *err) {
  fprintf(stderr, "%s: %s\n", PROG, err->msg[0] ? err->msg : pg_status_message(err->status));
  return EXIT_ERR;
}

typedef struct sec_result {
  char kind[24]; /* META, TENSORS, or the DATA category */
  uint64_t stored, raw;
  double codec_s; /* best raw-codec time of this section */
} sec_result;

typedef struct result {
  char codec[48];
  uint64_t stored, raw;
  double compress_s, open_decode_s, check_s, dequant_s, codec_s;
  uint32_t nsec;
  sec_result *secs;
} result;

/* Write the model as an artifact with every DATA section in codec `cs`; META and TENSORS use
 * the same codec without the transform. */
static int write_artifact(const model *m, const pg_codec_spec *cs, const char *path,
                          double *secs, pg_err *err) {
  pg_writer *w;
  if (pg_writer_create(&w) != PG_OK)
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate a writer");
  pg_writer_set_container(w, PG_CONTAINER_V1); /* raw_setup reads v1's fixed-offset table */
  pg_codec_spec plain = *cs;
  plain.transform = PG_TRANSFORM_NONE;
  plain.stride = 0;
  pg_writer_set_meta_codec(w, &plain, &plain);
  int sec[N_CAT];
  int rc = PG_OK;
  for (int c = 0; c < N_CAT && rc == PG_OK; c++) {
    sec[c] = pg_writer_data_section(w, cs, err);
    if (sec[c] < 0) rc = err->status ? err->status : PG_E_CODEC;
  }
  static const char arch[] = "{\"family\":\"bench-record-shape\",\"layers\":11,\"dim\":512,"
                             "\"heads\":8,\"kv_heads\":4,\"mlp_mult\":4,\"vocab\":8192,"
                             "\"tied_embedding\":true}";
  if (rc == PG_OK) rc = pg_writer_meta_str(w, "arch.name", "bench-record-shape", 18, err);
  if (rc == PG_OK) rc = pg_writer_meta_str(w, "arch.json", arch, sizeof arch - 1, err);
  if (rc == PG_OK) rc = pg_writer_meta_str(w, "quant.method", "synthetic", 9, err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(w, "tokenizer.vocab_size", VOCAB, err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(w, "provenance.seed", SEED, err);
  if (rc == PG_OK) rc = pg_writer_meta_i64(w, "budget.bytes", 16000000, err);
  for (size_t i = 0; i < m->n && rc == PG_OK; i++) {
    const btensor *t = &m->t[i];
    pg_tensor_in in = {.name = t->name, .qtype = t->qtype, .ndim = t->ndim, .dims = t->dims,
                       .values = t->values, .sec_values = sec[t->cat]};
    if (pg_qtype_is_int(t->qtype)) {
      in.packing = PG_PACK_BYTE;
      in.scale_kind = PG_SCALE_ROW_F16;
      in.qmin = t->qmin;
      in.qmax = t->qmax;
      in.row_scales = t->scales;
      in.sec_scales = sec[SEC_SCALES];
    }
    rc = pg_writer_tensor(w, &in, err);
  }
  if (rc == PG_OK) {
    double t0 = now();
    rc = pg_writer_write(w, path, err);
    *secs = now() - t0;
  }
  pg_writer_free(w);
  return rc;
}

/* (a) open + decode every section; (b) the same + pg_artifact_check; (c) open + dequantize every
 * tensor to fp32 (which decodes the sections and range-checks the values it reads). */
enum { STAGE_DECODE, STAGE_CHECK, STAGE_DEQUANT };

static int time_stage(const char *path, model *m, int stage, double *secs, pg_err *err) {
  double t0 = now();
  pg_artifact *a;
  PG_TRY(pg_artifact_open(&a, path, NULL, err));
  int rc = PG_OK;
  if (stage == STAGE_DEQUANT) {
    for (uint32_t i = 0; i < pg_artifact_tensor_count(a) && rc == PG_OK; i++) {
      const pg_tensor_info *ti = pg_artifact_tensor(a, i);
      int64_t j = -1;
      /* the directory is in writer order, which is ours; check the name all the same */
      if (i < m->n && !strcmp(m->t[i].name, ti->name)) j = i;
      if (j < 0 || m->t[j].numel != ti->numel) {
        rc = pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET, "tensor %u ('%s') unexpected", i,
                        ti->name);
        break;
      }
      rc = pg_artifact_tensor_dequant(a, i, m->t[j].out, err);
    }
  } else {
    for (uint32_t i = 0; i < pg_artifact_section_count(a) && rc == PG_OK; i++) {
      const uint8_t *raw;
      rc = pg_artifact_section_raw(a, i, &raw, err);
    }
    if (rc == PG_OK && stage == STAGE_CHECK) rc = pg_artifact_check(a, err);
  }
  *secs = now() - t0;
  pg_artifact_free(a);
  return rc;
}

/* The dequantized output must be q * f16(scale) exactly (and the floats as written). */
static int verify_dequant(const model *m, const char *path, pg_err *err) {
  for (size_t i = 0; i < m->n; i++) {
    const btensor *t = &m->t[i];
    for (uint64_t j = 0; j < t->numel; j++) {
      float want;
      if (pg_qtype_is_int(t->qtype)) {
        want = (float)((const int8_t *)t->values)[j] * pg_f16_to_f32(t->scales[j / t->dims[1]]);
      } else if (t->qtype == PG_QTYPE_F16) {
        want = pg_f16_to_f32(pg_ld16((const uint8_t *)t->values + 2 * j));
      } else {
        uint32_t u = pg_ld32((const uint8_t *)t->values + 4 * j);
        memcpy(&want, &u, 4);
      }
      if (memcmp(&want, &t->out[j], 4) != 0)
        return pg_err_set(err, PG_E_MALFORMED, path, PG_NO_OFFSET,
                          "tensor '%s' element %llu dequantized to %g, want %g", t->name,
                          (unsigned long long)j, (double)t->out[j], (double)want);
    }
  }
  return PG_OK;
}

/* (d) the bare codec: pg_codec_decompress over exactly the stored bytes of each section, found
 * through the section table of the file as read from disk, into preallocated, touched buffers.
 * Checked once against the raw checksums (after unshuffling where the section is shuffled). */
typedef struct rawctx {
  uint8_t *file;
  size_t len;
  uint32_t n;
  uint8_t **out;
} rawctx;

static void raw_free(rawctx *c) {
  for (uint32_t i = 0; c->out && i < c->n; i++) free(c->out[i]);
  free(c->out);
  free(c->file);
  memset(c, 0, sizeof *c);
}

static const uint8_t *raw_entry(const rawctx *c, uint32_t i) {
  return c->file + PG_HEADER_SIZE + (size_t)PG_ENTRY_SIZE * i;
}

static int raw_setup(rawctx *c, const char *path, result *res, pg_err *err) {
  memset(c, 0, sizeof *c);
  PG_TRY(pg_file_read_all(path, &c->file, &c->len, (size_t)1 << 31, err));
  if (c->len < PG_HEADER_SIZE || memcmp(c->file, PG_MAGIC, 8) != 0) {
    raw_free(c);
    return pg_err_set(err, PG_E_MAGIC, path, 0, "not an artifact");
  }
  c->n = pg_ld32(c->file + 16);
  if ((uint64_t)PG_HEADER_SIZE + (uint64_t)PG_ENTRY_SIZE * c->n > c->len) {
    raw_free(c);
    return pg_err_set(err, PG_E_TABLE_RANGE, path, 16, "section table out of range");
  }
  c->out = calloc(c->n, sizeof *c->out);
  res->secs = calloc(c->n, sizeof *res->secs);
  res->nsec = c->n;
  int rc = PG_OK;
  if (!c->out || !res->secs)
    rc = pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate for %u sections", c->n);
  for (uint32_t i = 0; rc == PG_OK && i < c->n; i++) {
    const uint8_t *e = raw_entry(c, i);
    uint64_t off = pg_ld64(e + 8), stored = pg_ld64(e + 16), raw = pg_ld64(e + 24);
    if (off > c->len || stored > c->len - off || raw > PG_MAX_SECTION_RAW) {
      rc = pg_err_set(err, PG_E_TABLE_RANGE, path, off, "section %u out of range", i);
      break;
    }
    res->secs[i].stored = stored;
    res->secs[i].raw = raw;
    res->secs[i].codec_s = INFINITY;
    /* the writer puts META, TENSORS, then the DATA sections in the order they were made */
    if (pg_ld16(e) == PG_SEC_DATA && i >= 2 && i - 2 < N_CAT)
      snprintf(res->secs[i].kind, sizeof res->secs[i].kind, "%s", CAT_NAME[i - 2]);
    else
      snprintf(res->secs[i].kind, sizeof res->secs[i].kind, "%s", pg_section_kind_name(pg_ld16(e)));
    c->out[i] = malloc(raw ? (size_t)raw : 1);
    if (!c->out[i]) rc = pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate");
    else memset(c->out[i], 0, raw ? (size_t)raw : 1); /* fault the pages in now */
  }
  if (rc != PG_OK) raw_free(c);
  return rc;
}

/* One pass over every section; the per-section times go into res when `record`. */
static int raw_pass(rawctx *c, const char *path, int record, result *res, double *total,
                    pg_err *err) {
  *total = 0;
  for (uint32_t i = 0; i < c->n; i++) {
    const uint8_t *e = raw_entry(c, i);
    uint64_t off = pg_ld64(e + 8), stored = pg_ld64(e + 16), raw = pg_ld64(e + 24);
    double t0 = now();
    int rc = pg_codec_decompress(e[2], c->file + off, (size_t)stored, c->out[i], (size_t)raw, path,
                                 off, err);
    double dt = now() - t0;
    if (rc != PG_OK) return rc;
    *total += dt;
    if (record && dt < res->secs[i].codec_s) res->secs[i].codec_s = dt;
  }
  return PG_OK;
}

static int raw_verify(const rawctx *c, const char *path, pg_err *err) {
  for (uint32_t i = 0; i < c->n; i++) {
    const uint8_t *e = raw_entry(c, i);
    uint64_t raw = pg_ld64(e + 24);
    const uint8_t *check = c->out[i];
    uint8_t *tmp = NULL;
    if (e[5] == PG_TRANSFORM_SHUFFLE) {
      tmp = malloc(raw ? (size_t)raw : 1);
      if (!tmp) return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate");
      pg_unshuffle(c->out[i], (size_t)raw, e[6], tmp);
      check = tmp;
    }
    int bad = XXH64(check, (size_t)raw, 0) != pg_ld64(e + 40);
    free(tmp);
    if (bad)
      return pg_err_set(err, PG_E_CHECKSUM, path, pg_ld64(e + 8),
                        "section %u: the bare codec's output fails the raw checksum", i);
  }
  return PG_OK;
}

static int bench_codec(model *m, const char *spec_text, const char *dir, int repeat, int keep,
                       result *res, pg_err *err) {
  pg_codec_spec cs;
  PG_TRY(pg_codec_spec_parse(&cs, spec_text, err));
  pg_codec_spec_format(&cs, res->codec, sizeof res->codec);
  char fname[64];
  snprintf(fname, sizeof fname, "bench-%s.pgz", res->codec);
  for (char *p = fname; *p; p++)
    if (*p == '/' || *p == '+') *p = '_';
  size_t plen = strlen(dir) + 1 + strlen(fname) + 1;
  char *path = malloc(plen);
  if (!path) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  snprintf(path, plen, "%s/%s", dir, fname);

  progress("%s: compressing %.1f MB ...", res->codec, 1e-6 * (double)m->params);
  int rc = write_artifact(m, &cs, path, &res->compress_s, err);
  if (rc == PG_OK) {
    pg_artifact *a;
    rc = pg_artifact_open(&a, path, NULL, err);
    if (rc == PG_OK) {
      res->stored = pg_artifact_file_size(a);
      res->raw = 0;
      for (uint32_t i = 0; i < pg_artifact_section_count(a); i++)
        res->raw += pg_artifact_section(a, i)->raw_size;
      pg_artifact_free(a);
      progress("%s: %llu bytes stored in %.2f s; timing %d repeats ...", res->codec,
               (unsigned long long)res->stored, res->compress_s, repeat);
    }
  }
  /* the four measurements interleaved, so that they see the same machine conditions */
  rawctx rc_ctx = {0};
  if (rc == PG_OK) rc = raw_setup(&rc_ctx, path, res, err);
  double *slot[4] = {&res->open_decode_s, &res->check_s, &res->dequant_s, &res->codec_s};
  for (int s = 0; s < 4; s++) *slot[s] = INFINITY;
  for (int r = -1; r < repeat && rc == PG_OK; r++) { /* r = -1: an untimed warm-up */
    double t[4];
    for (int s = 0; s < 3 && rc == PG_OK; s++) rc = time_stage(path, m, s, &t[s], err);
    if (rc == PG_OK) rc = raw_pass(&rc_ctx, path, r >= 0, res, &t[3], err);
    for (int s = 0; s < 4 && rc == PG_OK && r >= 0; s++)
      if (t[s] < *slot[s]) *slot[s] = t[s];
  }
  if (rc == PG_OK) rc = verify_dequant(m, path, err);
  if (rc == PG_OK) rc = raw_verify(&rc_ctx, path, err);
  raw_free(&rc_ctx);
  if (rc == PG_OK)
    progress("%s: open+decode %.4f s, bare codec %.4f s", res->codec, res->open_decode_s,
             res->codec_s);
  if (!keep) unlink(path);
  free(path);
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* output */

static double overhead_pct(const result *r) {
  return r->codec_s > 0 ? 100.0 * (r->open_decode_s - r->codec_s) / r->codec_s : 0.0;
}
static double mb_per_s(const result *r) {
  return r->open_decode_s > 0 ? 1e-6 * (double)r->raw / r->open_decode_s : 0.0;
}

static void print_table(const result *res, int n, int repeat) {
  printf("%-22s %11s %11s %6s %10s %13s %9s %11s %11s %9s %8s\n", "codec", "stored B",
         "raw B", "ratio", "compress s", "open+decode s", "+check s", "+dequant s",
         "raw codec s", "overhead%", "MB/s");
  for (int i = 0; i < n; i++) {
    const result *r = &res[i];
    printf("%-22s %11llu %11llu %6.3f %10.2f %13.4f %9.4f %11.4f %11.4f %9.1f %8.1f\n", r->codec,
           (unsigned long long)r->stored, (unsigned long long)r->raw,
           (double)r->raw / (double)r->stored, r->compress_s, r->open_decode_s, r->check_s,
           r->dequant_s, r->codec_s, overhead_pct(r), mb_per_s(r));
  }
  printf("best of %d after a warm-up, warm page cache; times cumulative from the file: "
         "+check = open+decode+pg_artifact_check, "
         "+dequant = open+decode+dequant of every tensor to fp32; raw codec = pg_codec_decompress "
         "alone on the same stored bytes; overhead = (open+decode - raw codec) / raw codec; MB/s = "
         "raw bytes / open+decode (1 MB = 1e6 B)\n",
         repeat);
}

static int print_json(const result *res, int n, int repeat) {
  json_t *arr = json_array();
  if (!arr) return 1;
  for (int i = 0; i < n; i++) {
    const result *r = &res[i];
    json_t *o = json_object(), *secs = json_array();
    if (!o || !secs) return 1;
    json_object_set_new(o, "codec", json_string(r->codec));
    json_object_set_new(o, "stored_bytes", json_integer((json_int_t)r->stored));
    json_object_set_new(o, "raw_bytes", json_integer((json_int_t)r->raw));
    json_object_set_new(o, "ratio", json_real((double)r->raw / (double)r->stored));
    json_object_set_new(o, "compress_s", json_real(r->compress_s));
    json_object_set_new(o, "open_decode_s", json_real(r->open_decode_s));
    json_object_set_new(o, "open_decode_check_s", json_real(r->check_s));
    json_object_set_new(o, "open_dequant_s", json_real(r->dequant_s));
    json_object_set_new(o, "raw_codec_s", json_real(r->codec_s));
    json_object_set_new(o, "overhead_pct", json_real(overhead_pct(r)));
    json_object_set_new(o, "mb_per_s", json_real(mb_per_s(r)));
    json_object_set_new(o, "repeat", json_integer(repeat));
    for (uint32_t s = 0; s < r->nsec; s++) {
      json_t *so = json_object();
      if (!so) return 1;
      json_object_set_new(so, "kind", json_string(r->secs[s].kind));
      json_object_set_new(so, "stored_bytes", json_integer((json_int_t)r->secs[s].stored));
      json_object_set_new(so, "raw_bytes", json_integer((json_int_t)r->secs[s].raw));
      json_object_set_new(so, "raw_codec_s", json_real(r->secs[s].codec_s));
      json_array_append_new(secs, so);
    }
    json_object_set_new(o, "sections", secs);
    json_array_append_new(arr, o);
  }
  int rc = json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
  fputc('\n', stdout);
  json_decref(arr);
  return rc != 0;
}

/* ------------------------------------------------------------------------------------------ */

static void usage(FILE *f) {
  fprintf(f,
          "usage: bench_read [--out DIR] [--codecs LIST] [--repeat N] [--json] [--keep]\n"
          "\n"
          "Build a synthetic artifact with the record models' shape (11 layers, d=512, MLP 4x,\n"
          "tied 8192x512 embedding at int8, matrices at int6 with fp16 row scales, values one per\n"
          "byte; ~36 MB raw, ~16 MB stored), write it once per codec, and time reading it back:\n"
          "open+decode (checksums + decompression of every section), +check (range checks),\n"
          "+dequant (every tensor to fp32), against the bare codec on the same stored bytes.\n"
          "\n"
          "options:\n"
          "  --out DIR        where the temporary artifacts go (default: a fresh directory under\n"
          "                   /tmp, removed at the end); artifacts are removed unless --keep\n"
          "  --codecs LIST    comma-separated codec specs (default\n"
          "                   brotli-11,brotli-11+shuf2,lzma-9,zstd-19,zstd-22)\n"
          "  --repeat N       best of N timings, after one untimed warm-up (default 5)\n"
          "  --json           print a JSON array instead of the table\n"
          "  --keep           keep the artifacts in DIR\n"
          "  -h, --help       this text\n"
          "\n"
          "Compression (brotli-11, lzma-9) of ~36 MB takes tens of seconds per codec.\n"
          "exit status: 0 ok, 2 error\n");
}

static int usage_error(const char *msg, const char *arg) {
  fprintf(stderr, "%s: %s%s%s (see %s --help)\n", PROG, msg, arg ? " " : "", arg ? arg : "", PROG);
  return EXIT_ERR;
}

int main(int argc, char **argv) {
  const char *out_dir = NULL;
  const char *codecs = "brotli-11,brotli-11+shuf2,lzma-9,zstd-19,zstd-22";
  long repeat = 5;
  int as_json = 0, keep = 0;
  enum { O_OUT = 256, O_CODECS, O_REPEAT, O_JSON, O_KEEP };
  static const struct option opts[] = {{"out", required_argument, 0, O_OUT},
                                       {"codecs", required_argument, 0, O_CODECS},
                                       {"repeat", required_argument, 0, O_REPEAT},
                                       {"json", no_argument, 0, O_JSON},
                                       {"keep", no_argument, 0, O_KEEP},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case O_OUT: out_dir = optarg; break;
    case O_CODECS: codecs = optarg; break;
    case O_REPEAT: {
      char *end;
      repeat = strtol(optarg, &end, 10);
      if (end == optarg || *end || repeat < 1 || repeat > 1000)
        return usage_error("bad --repeat", optarg);
      break;
    }
    case O_JSON: as_json = 1; break;
    case O_KEEP: keep = 1; break;
    case 'h': usage(stdout); return EXIT_OK;
    default: return usage_error("unknown option", NULL);
    }
  }
  if (optind != argc) return usage_error("unexpected operand", argv[optind]);

  /* parse the codec list up front, so a typo fails before minutes of compression */
  char *list = strdup(codecs);
  if (!list) return EXIT_ERR;
  char *specs[64];
  int nspec = 0;
  pg_err err;
  pg_err_clear(&err);
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    pg_codec_spec cs;
    if (nspec == 64) {
      free(list);
      return usage_error("at most 64 codecs", NULL);
    }
    if (pg_codec_spec_parse(&cs, tok, &err) != PG_OK) {
      free(list);
      return fail(&err);
    }
    specs[nspec++] = tok;
  }
  if (!nspec) {
    free(list);
    return usage_error("empty --codecs", NULL);
  }

  char tmpl[] = "/tmp/bench_read.XXXXXX";
  const char *dir = out_dir;
  int made_dir = 0;
  if (!dir) {
    if (!mkdtemp(tmpl)) {
      perror("bench_read: mkdtemp");
      free(list);
      return EXIT_ERR;
    }
    dir = tmpl;
    made_dir = 1;
  } else if (pg_mkdir_p(dir, &err) != PG_OK) {
    free(list);
    return fail(&err);
  }

  model m = {0};
  double t0 = now();
  int rc = build_model(&m) ? pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET,
                                        "cannot allocate the model")
                           : PG_OK;
  result *res = calloc((size_t)nspec, sizeof *res);
  if (rc == PG_OK && !res) rc = pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  if (rc == PG_OK)
    progress("model: %zu tensors, %llu parameters, built in %.2f s; entropy (bits/value): "
             "embed int8 %.3f, attn int6 %.3f, mlp int6 %.3f; artifacts in %s",
             m.n, (unsigned long long)m.params, now() - t0, cat_entropy(&m, SEC_EMBED),
             cat_entropy(&m, SEC_ATTN), cat_entropy(&m, SEC_MLP), dir);
  for (int i = 0; i < nspec && rc == PG_OK; i++)
    rc = bench_codec(&m, specs[i], dir, (int)repeat, keep, &res[i], &err);
  int status = EXIT_OK;
  if (rc != PG_OK) {
    status = fail(&err);
  } else if (as_json) {
    if (print_json(res, nspec, (int)repeat)) {
      fprintf(stderr, "%s: cannot write the JSON report\n", PROG);
      status = EXIT_ERR;
    }
  } else {
    print_table(res, nspec, (int)repeat);
  }
  if (fflush(stdout) != 0) status = EXIT_ERR;
  if (made_dir && !keep && rmdir(dir) != 0) perror("bench_read: rmdir");
  for (int i = 0; res && i < nspec; i++) free(res[i].secs);
  free(res);
  free_model(&m);
  free(list);
  return status;
}
