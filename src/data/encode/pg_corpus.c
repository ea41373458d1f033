/* pg_corpus.c: text documents -> token shards and manifest.json, the pipeline of `pgshard encode`
 * (see pg_corpus.h, spec/shards.md §9). */
#include "pg_text.h"
#include "pg_corpus.h"

#include <errno.h>
#include <glob.h>
#include <sys/stat.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "pg_io.h"
#include "pg_json.h"
#include "pg_shard.h"
#include "pg_spm.h"

#define DEFAULT_BATCH 1024

/* Where a pending document came from, for its error line. */
typedef struct origin {
  size_t input;  /* index into inputs */
  uint64_t line; /* JSON lines: 1-based line number; 0 for a plain-text document */
  uint64_t off;  /* byte offset of the line (0 for plain text) */
} origin;

struct pg_corpus {
  const pg_enc *enc;
  pg_corpus_cfg cfg;
  char *dir, *prefix;
  uint32_t vocab;
  pg_shard_writer *val, *train;
  pg_corpus_stats st;
  char **inputs;
  size_t ninputs, cap_inputs;
  pg_enc_doc *batch; /* pending documents (their texts owned here) */
  origin *from;
  size_t nbatch, cap;
  int failed, finished;
  int made_dir; /* the output folder did not exist: a run that does not finish removes it */
};

static char *dup_str(const char *s) {
  const size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

static int nomem(pg_err *err, const char *file) {
  return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "cannot allocate");
}

static void drop_batch(pg_corpus *c) {
  for (size_t d = 0; d < c->nbatch; d++) free((char *)c->batch[d].text);
  c->nbatch = 0;
}

/* Record a failure: the run stays failed and its shards are removed. */
static int fail(pg_corpus *c, int rc) {
  if (rc != PG_OK && !c->failed) {
    c->failed = rc;
    drop_batch(c);
    pg_shard_writer_abort(c->val);
    pg_shard_writer_abort(c->train);
    c->val = c->train = NULL;
  }
  return rc;
}

int pg_corpus_open(pg_corpus **out, const pg_enc *enc, const pg_corpus_cfg *cfg, pg_err *err) {
  PG_FAIL_IF(!out || !enc || !cfg || !cfg->dir || !*cfg->dir, err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "encode needs an encoder and an output folder");
  *out = NULL;
  const char *prefix = cfg->prefix ? cfg->prefix : "fineweb";
  const uint64_t st = cfg->shard_tokens ? cfg->shard_tokens : 100000000ull;
  PG_FAIL_IF(st > PG_SHARD_MAX_TOKENS, err, PG_E_ARG, cfg->dir, PG_NO_OFFSET,
             "shard size %llu tokens is outside 1 .. 2^31-1", (unsigned long long)st);
  PG_FAIL_IF(!*prefix || strchr(prefix, '/') || strlen(prefix) > 200, err, PG_E_ARG, cfg->dir,
             PG_NO_OFFSET, "file-name prefix must be 1..200 bytes without '/'");
  PG_FAIL_IF(cfg->threads < 0, err, PG_E_ARG, NULL, PG_NO_OFFSET, "%d threads", cfg->threads);
  const size_t vocab = pg_enc_vocab_size(enc);
  PG_FAIL_IF(vocab > 65536, err, PG_E_VOCAB, pg_enc_model_path(enc), PG_NO_OFFSET,
             "vocabulary of %zu does not fit uint16 shards", vocab);
  struct stat sb;
  const int made_dir = stat(cfg->dir, &sb) != 0;
  PG_TRY(pg_mkdir_p(cfg->dir, err));
  /* an earlier run's shards would mix with this one's (the writer leaves files it did not write) */
  const size_t plen = strlen(cfg->dir) + strlen(prefix) + 16;
  char *pat = malloc(plen);
  if (!pat) return nomem(err, cfg->dir);
  snprintf(pat, plen, "%s/%s_*.bin", cfg->dir, prefix);
  glob_t g;
  memset(&g, 0, sizeof g);
  const int grc = glob(pat, GLOB_NOESCAPE, NULL, &g);
  free(pat);
  if (grc == 0 && g.gl_pathc > 0) {
    const int rc = pg_err_set(err, PG_E_EXISTS, g.gl_pathv[0], PG_NO_OFFSET,
                              "%s already holds %s_* shards; remove them first", cfg->dir, prefix);
    globfree(&g);
    return rc;
  }
  globfree(&g);
  pg_corpus *c = calloc(1, sizeof *c);
  if (!c) {
    if (made_dir) rmdir(cfg->dir);
    return nomem(err, cfg->dir);
  }
  c->made_dir = made_dir;
  c->enc = enc;
  c->cfg = *cfg;
  c->cfg.shard_tokens = st;
  if (!c->cfg.batch_docs) c->cfg.batch_docs = DEFAULT_BATCH;
  if (!c->cfg.max_doc || c->cfg.max_doc > PG_CORPUS_MAX_DOC) c->cfg.max_doc = PG_CORPUS_MAX_DOC;
  c->vocab = (uint32_t)vocab;
  c->dir = dup_str(cfg->dir);
  c->prefix = dup_str(prefix);
  c->cfg.dir = c->dir;
  c->cfg.prefix = c->prefix;
  int rc = c->dir && c->prefix ? PG_OK : nomem(err, cfg->dir);
  char wp[256];
  if (!rc) {
    snprintf(wp, sizeof wp, "%s_val_", prefix);
    rc = pg_shard_writer_open(&c->val, c->dir, wp, st, err);
  }
  if (!rc) {
    snprintf(wp, sizeof wp, "%s_train_", prefix);
    rc = pg_shard_writer_open(&c->train, c->dir, wp, st, err);
  }
  if (rc) {
    pg_corpus_free(c);
    return rc;
  }
  *out = c;
  return PG_OK;
}

/* Register an input name; its index goes into the origins of its documents. */
static int add_input(pg_corpus *c, const char *name, size_t *idx, pg_err *err) {
  if (c->ninputs == c->cap_inputs) {
    const size_t cap = c->cap_inputs ? 2 * c->cap_inputs : 8;
    char **p = realloc(c->inputs, cap * sizeof *p);
    if (!p) return nomem(err, name);
    c->inputs = p;
    c->cap_inputs = cap;
  }
  char *d = dup_str(name ? name : "");
  if (!d) return nomem(err, name);
  c->inputs[c->ninputs] = d;
  *idx = c->ninputs++;
  return PG_OK;
}

/* The error line of a document: its input, the line's offset and number, and the document's
 * number in the whole run (0-based, the order of the splits). */
static int doc_fault(const pg_corpus *c, const origin *o, uint64_t doc, int status, pg_err *err,
                     const char *detail) {
  const char *name = c->inputs[o->input];
  if (o->line)
    return pg_err_set(err, status, name, o->off, "line %llu (document %llu): %s",
                      (unsigned long long)o->line, (unsigned long long)doc, detail);
  return pg_err_set(err, status, name, PG_NO_OFFSET, "document %llu: %s",
                    (unsigned long long)doc, detail);
}

/* Encode the pending documents and append them, in order, to their split. */
static int flush_batch(pg_corpus *c, pg_err *err) {
  if (!c->nbatch) return PG_OK;
  int32_t *ids = NULL;
  size_t nids = 0, *offs = NULL;
  pg_err e;
  int rc = pg_enc_encode_many(c->enc, c->batch, c->nbatch, c->cfg.threads, &ids, &nids, &offs, &e);
  if (rc != PG_OK) {
    /* the message names the batch's document number: say which input and line it was */
    size_t d = 0;
    char *at = strstr(e.msg, " (document ");
    if (at) {
      char *end = strchr(at, ')');
      d = (size_t)strtoull(at + 11, NULL, 10);
      if (end) memmove(at, end + 1, strlen(end + 1) + 1); /* that number is the batch's */
    }
    if (d >= c->nbatch) d = 0;
    return doc_fault(c, &c->from[d], c->st.docs + d, rc, err, e.msg);
  }
  size_t longest = 0;
  for (size_t d = 0; d < c->nbatch; d++)
    if (offs[d + 1] - offs[d] > longest) longest = offs[d + 1] - offs[d];
  uint16_t *buf = malloc((longest + 1) * sizeof *buf);
  if (!buf) rc = nomem(err, c->dir);
  for (size_t d = 0; rc == PG_OK && d < c->nbatch; d++) {
    const uint64_t doc = c->st.docs;
    const size_t n = offs[d + 1] - offs[d];
    if (n == 0) {
      /* a lone BOS: a document without a target, which the challenge's _find_docs refuses when
       * it ends a split, and which scores a BOS after a BOS anywhere else */
      rc = doc_fault(c, &c->from[d], doc, PG_E_MALFORMED, err,
                     "encodes to no tokens (empty, or only what the normalizer removes); every "
                     "document needs at least one");
      break;
    }
    buf[0] = PG_BOS_ID;
    for (size_t k = 0; k < n; k++) {
      const int32_t id = ids[offs[d] + k];
      if (id < 0 || (uint32_t)id >= c->vocab) { /* the encoder checks this too */
        char why[96];
        snprintf(why, sizeof why, "id %ld outside the vocabulary of %u", (long)id, c->vocab);
        rc = doc_fault(c, &c->from[d], doc, PG_E_TOKEN_RANGE, err, why);
        break;
      }
      buf[1 + k] = (uint16_t)id;
    }
    if (rc != PG_OK) break;
    const int is_val = doc < c->cfg.val_docs;
    rc = pg_shard_writer_append(is_val ? c->val : c->train, buf, n + 1, err);
    if (rc != PG_OK) break;
    if (is_val) {
      c->st.val_tokens += n + 1;
      c->st.val_docs++;
    } else {
      c->st.train_tokens += n + 1;
    }
    c->st.bytes_in += c->batch[d].len;
    c->st.docs++;
  }
  free(buf);
  free(ids);
  free(offs);
  drop_batch(c);
  return rc;
}

/* Take ownership of text (malloc'd) as the next document. */
static int push_doc(pg_corpus *c, char *text, size_t len, origin o, pg_err *err) {
  if (c->nbatch == c->cap) {
    const size_t cap = c->cap ? 2 * c->cap : 64;
    pg_enc_doc *b = realloc(c->batch, cap * sizeof *b);
    if (b) c->batch = b;
    origin *f = b ? realloc(c->from, cap * sizeof *f) : NULL;
    if (f) c->from = f;
    if (!b || !f) {
      free(text);
      return nomem(err, c->inputs[o.input]);
    }
    c->cap = cap;
  }
  c->batch[c->nbatch] = (pg_enc_doc){text, len};
  c->from[c->nbatch++] = o;
  return c->nbatch >= c->cfg.batch_docs ? flush_batch(c, err) : PG_OK;
}

static int usable(pg_corpus *c, pg_err *err) {
  PG_FAIL_IF(!c, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no encode run");
  PG_FAIL_IF(c->failed, err, c->failed, c->dir, PG_NO_OFFSET,
             "encode run already failed; its shards were removed");
  PG_FAIL_IF(c->finished, err, PG_E_ARG, c->dir, PG_NO_OFFSET, "encode run already finished");
  return PG_OK;
}

int pg_corpus_add_text(pg_corpus *c, const char *text, size_t len, const char *name,
                       pg_err *err) {
  PG_TRY(usable(c, err));
  PG_FAIL_IF(!text && len, err, PG_E_ARG, name, PG_NO_OFFSET, "no text");
  size_t idx;
  PG_TRY(fail(c, add_input(c, name, &idx, err)));
  if (len > c->cfg.max_doc)
    return fail(c, pg_err_set(err, PG_E_LIMIT, name, PG_NO_OFFSET,
                              "document of %zu bytes, more than the %llu the encoder takes", len,
                              (unsigned long long)c->cfg.max_doc));
  size_t bad;
  if (!pg_utf8_valid((const uint8_t *)(len ? text : ""), len, &bad))
    return fail(c, pg_err_set(err, PG_E_UTF8, name, bad, "not valid UTF-8"));
  char *copy = malloc(len ? len : 1);
  if (!copy) return fail(c, nomem(err, name));
  if (len) memcpy(copy, text, len);
  return fail(c, push_doc(c, copy, len, (origin){.input = idx}, err));
}

/* Read one line of at most max bytes (the '\n' excluded) into *buf. 1: a line (*len its length,
 * *nl whether a '\n' ended it); 0: end of input; -1: a read error; -2: longer than max. */
static int read_line(FILE *f, char **buf, size_t *cap, size_t *len, int *nl, uint64_t max) {
  size_t n = 0;
  int ch;
  *nl = 0;
  while ((ch = getc(f)) != EOF) {
    if (ch == '\n') {
      *nl = 1;
      break;
    }
    if (n >= max) return -2;
    if (n + 1 >= *cap) {
      const size_t cap2 = *cap ? 2 * *cap : 4096;
      char *b = realloc(*buf, cap2);
      if (!b) return -3;
      *buf = b;
      *cap = cap2;
    }
    (*buf)[n++] = (char)ch;
  }
  if (ferror(f)) return -1;
  *len = n;
  return n > 0 || *nl ? 1 : 0;
}

int pg_corpus_add_jsonl(pg_corpus *c, FILE *f, const char *name, pg_err *err) {
  PG_TRY(usable(c, err));
  PG_FAIL_IF(!f, err, PG_E_ARG, name, PG_NO_OFFSET, "no input stream");
  size_t idx;
  PG_TRY(fail(c, add_input(c, name, &idx, err)));
  char *line = NULL;
  size_t cap = 0, n;
  uint64_t lineno = 0, off = 0;
  int rc = PG_OK, nl, r;
  while (rc == PG_OK && (r = read_line(f, &line, &cap, &n, &nl, c->cfg.max_doc)) == 1) {
    lineno++;
    const uint64_t here = off;
    off += n + (uint64_t)nl;
    /* trailing CR and JSON whitespace; a line of nothing else is skipped */
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t')) n--;
    if (n == 0) continue;
    pg_err se; /* the line's offset and number, then "offset N: ..." of the value over the cap */
    if ((rc = pg_json_shape_check(line, n, &pg_json_doc_caps, NULL, here, &se)) != PG_OK) {
      rc = pg_err_set(err, rc, name, here, "line %llu: %s", (unsigned long long)lineno, se.msg);
      break;
    }
    json_error_t je; /* a \u0000 escape is text, as for Python's json; a repeated key is not */
    json_t *o = json_loadb(line, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    json_t *t = json_is_object(o) ? json_object_get(o, "text") : NULL;
    if (!o) {
      rc = pg_err_set(err, PG_E_JSON, name, here, "line %llu: %s", (unsigned long long)lineno,
                      je.text);
    } else if (!json_is_string(t)) {
      rc = pg_err_set(err, PG_E_JSON, name, here, "line %llu: not an object with a \"text\" string",
                      (unsigned long long)lineno);
    } else {
      const size_t tl = json_string_length(t);
      char *copy = malloc(tl ? tl : 1);
      if (!copy) {
        rc = nomem(err, name);
      } else {
        if (tl) memcpy(copy, json_string_value(t), tl);
        rc = push_doc(c, copy, tl, (origin){.input = idx, .line = lineno, .off = here}, err);
      }
    }
    json_decref(o);
  }
  if (rc == PG_OK && r == -2)
    rc = pg_err_set(err, PG_E_LIMIT, name, off, "line %llu: longer than %llu bytes",
                    (unsigned long long)lineno + 1, (unsigned long long)c->cfg.max_doc);
  if (rc == PG_OK && r == -3) rc = nomem(err, name);
  if (rc == PG_OK && r == -1) rc = pg_err_set(err, PG_E_IO, name, off, "read failed");
  free(line);
  return fail(c, rc);
}

static int ends_with(const char *s, const char *suffix) {
  const size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

int pg_corpus_add_file(pg_corpus *c, const char *path, pg_err *err) {
  PG_TRY(usable(c, err));
  PG_FAIL_IF(!path, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no input path");
  if (!ends_with(path, ".jsonl")) {
    uint8_t *buf;
    size_t n;
    PG_TRY(fail(c, pg_file_read_all(path, &buf, &n, (size_t)c->cfg.max_doc, err)));
    const int rc = pg_corpus_add_text(c, (const char *)buf, n, path, err);
    free(buf);
    return rc;
  }
  /* the shared opener: a FIFO or device is refused instead of waiting for a writer */
  FILE *f = NULL;
  PG_TRY(fail(c, pg_file_fopen_read(path, &f, err)));
  const int rc = pg_corpus_add_jsonl(c, f, path, err);
  fclose(f);
  return rc;
}

static int write_manifest(pg_corpus *c, pg_err *err) {
  const char *model = pg_enc_model_path(c->enc);
  uint8_t *mb;
  size_t ml;
  PG_TRY(pg_file_read_all(model, &mb, &ml, PG_SPM_MAX_FILE, err));
  char h[24];
  snprintf(h, sizeof h, "%016llx", (unsigned long long)XXH64(mb, ml, 0));
  free(mb);
  json_t *m = json_object(), *inputs = json_array(), *files = json_array();
  if (!m || !inputs || !files) {
    json_decref(m), json_decref(inputs), json_decref(files);
    return nomem(err, c->dir);
  }
  json_object_set_new(m, "tool", json_string("pgshard " PG_VERSION));
  json_object_set_new(m, "model", pg_json_cstr(model));
  json_object_set_new(m, "model_xxh64", json_string(h));
  json_object_set_new(m, "vocab_size", json_integer(c->vocab));
  for (size_t i = 0; i < c->ninputs; i++) json_array_append_new(inputs, pg_json_cstr(c->inputs[i]));
  json_object_set_new(m, "inputs", inputs);
  json_object_set_new(m, "documents", json_integer((json_int_t)c->st.docs));
  json_object_set_new(m, "val_documents", json_integer((json_int_t)c->st.val_docs));
  json_object_set_new(m, "val_tokens", json_integer((json_int_t)c->st.val_tokens));
  json_object_set_new(m, "train_tokens", json_integer((json_int_t)c->st.train_tokens));
  json_object_set_new(m, "shard_tokens", json_integer((json_int_t)c->cfg.shard_tokens));
  json_object_set_new(m, "bos_id", json_integer(PG_BOS_ID));
  json_object_set_new(m, "eos_appended", json_false());
  for (size_t k = 0; k < pg_corpus_nfiles(c); k++)
    json_array_append_new(files, pg_json_cstr(pg_corpus_file(c, k)));
  json_object_set_new(m, "files", files);
  char *txt = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
  json_decref(m);
  if (!txt) return nomem(err, c->dir);
  const size_t plen = strlen(c->dir) + 16;
  char *mpath = malloc(plen);
  int rc = mpath ? PG_OK : nomem(err, c->dir);
  if (!rc) {
    snprintf(mpath, plen, "%s/manifest.json", c->dir);
    rc = pg_file_write_atomic(mpath, txt, strlen(txt), err);
  }
  free(mpath);
  free(txt);
  return rc;
}

int pg_corpus_finish(pg_corpus *c, pg_err *err) {
  PG_TRY(usable(c, err));
  int rc = flush_batch(c, err);
  if (!rc) rc = pg_shard_writer_finish(c->val, err);
  if (!rc) rc = pg_shard_writer_finish(c->train, err);
  if (!rc) rc = write_manifest(c, err);
  if (!rc) c->finished = 1;
  return fail(c, rc);
}

const pg_corpus_stats *pg_corpus_stats_of(const pg_corpus *c) { return c ? &c->st : NULL; }

size_t pg_corpus_nfiles(const pg_corpus *c) {
  return c ? pg_shard_writer_nfiles(c->val) + pg_shard_writer_nfiles(c->train) : 0;
}

const char *pg_corpus_file(const pg_corpus *c, size_t k) {
  if (!c) return NULL;
  const size_t nv = pg_shard_writer_nfiles(c->val);
  return k < nv ? pg_shard_writer_path(c->val, k) : pg_shard_writer_path(c->train, k - nv);
}

void pg_corpus_free(pg_corpus *c) {
  if (!c) return;
  drop_batch(c);
  pg_shard_writer_free(c->val); /* removes the shards of a run not finished */
  pg_shard_writer_free(c->train);
  /* a folder this run made and did not fill is removed (rmdir refuses one that is not empty) */
  if (c->made_dir && !c->finished && c->dir) rmdir(c->dir);
  for (size_t i = 0; i < c->ninputs; i++) free(c->inputs[i]);
  free(c->inputs);
  free(c->batch);
  free(c->from);
  free(c->dir);
  free(c->prefix);
  free(c);
}
