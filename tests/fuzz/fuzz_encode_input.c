/* fuzz_encode_input.c: libFuzzer target for `pgshard encode`'s text input (pg_corpus: plain text
 * files and JSON lines) carried through a real SentencePiece model (the byte-fallback BPE model
 * of tests/fuzz/seeds/spm) to the shard writer and manifest.json.
 *
 * The input holds up to 3 input files (plain or JSON lines, raw bytes from the fuzzer) and the
 * run's settings (validation documents, shard size, batch size, a document size limit). The run
 * must either succeed or be refused with one line naming an input that has a fault (and, for
 * JSON lines, the line and its offset), leaving no shard and no manifest. On success an
 * independent reading of the inputs (split, trim, jansson, one pg_enc_encode per document) must
 * give exactly the tokens of the validation and training shards read back, the counts of the
 * statistics and of the manifest, full shards but the last, and one document per BOS.
 * FZ_DEBUG=1 prints each run's status. */
#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_corpus.h"
#include "pg_io.h"
#include "pg_shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef PG_FUZZ_SPM_MODEL
#error "PG_FUZZ_SPM_MODEL (the path of a SentencePiece model) must be defined by the build"
#endif

#define MAX_INPUTS 3

static char root[80];
static char last[PG_ERR_MSG_MAX]; /* the last error line, printed with a broken invariant */
static pg_enc *enc;

#define die_if(cond)                                                                   \
  do {                                                                                 \
    if (cond) {                                                                        \
      fprintf(stderr, "fuzz_encode_input.c:%d: %s [%s]\n", __LINE__, #cond, last);     \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  char p[256];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", path, e->d_name);
    if (unlink(p) != 0) rm_tree(p), rmdir(p);
  }
  closedir(d);
}

/* Entries of path (without . and ..). */
static int entries(const char *path) {
  DIR *d = opendir(path);
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return n;
}

/* The oracle's documents: texts (borrowed or owned) in input order, and the faults seen. */
typedef struct doc {
  const char *text;
  size_t len;
  char *owned;
} doc;

typedef struct oracle {
  doc *docs;
  size_t n, cap;
  int fault;           /* an input has a fault: the run must be refused */
  char faults[64][96]; /* "PATH: " or "PATH: offset N: line L " prefixes of the faults */
  int nf;
} oracle;

static void add_doc(oracle *o, const char *text, size_t len, char *owned) {
  if (o->n == o->cap) {
    o->cap = o->cap ? 2 * o->cap : 16;
    o->docs = realloc(o->docs, o->cap * sizeof *o->docs);
    if (!o->docs) abort();
  }
  o->docs[o->n++] = (doc){text, len, owned};
}

static void add_fault(oracle *o, const char *path, size_t off, unsigned long long line) {
  o->fault = 1;
  if (o->nf == 64) return;
  if (line)
    snprintf(o->faults[o->nf++], sizeof o->faults[0], "%s: offset %zu: line %llu", path, off,
             line);
  else
    snprintf(o->faults[o->nf++], sizeof o->faults[0], "%s: ", path);
}

/* Arrays and objects open at once at the deepest point (the root is 1). A line deeper than 32 is
 * refused before it is parsed (spec/errors.md, the shape caps); its value cap (65,536) is out of
 * reach of an input of at most 65,535 bytes. */
static int depth(json_t *j) {
  int d = 0, k;
  size_t i;
  const char *key;
  json_t *v;
  if (json_is_array(j)) {
    json_array_foreach(j, i, v) {
      if ((k = depth(v)) > d) d = k;
    }
  } else if (json_is_object(j)) {
    json_object_foreach(j, key, v) {
      if ((k = depth(v)) > d) d = k;
    }
  } else {
    return 0;
  }
  return d + 1;
}

/* Read an input as pg_corpus must: plain is one document, JSON lines one per non-blank line. */
static void read_input(oracle *o, const char *path, const uint8_t *b, size_t len, int jsonl,
                       uint64_t max_doc) {
  if (!jsonl) {
    size_t bad;
    if (len > max_doc || !pg_utf8_valid(len ? b : (const uint8_t *)"", len, &bad))
      add_fault(o, path, 0, 0);
    else
      add_doc(o, (const char *)b, len, NULL);
    return;
  }
  size_t pos = 0;
  unsigned long long lineno = 0;
  while (pos < len) {
    const uint8_t *nl = memchr(b + pos, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - (b + pos)) : len - pos;
    const size_t here = pos;
    pos += n + (nl != NULL);
    lineno++;
    if (n > max_doc) { /* the limit stops the reading there */
      add_fault(o, path, here, lineno);
      return;
    }
    while (n && (b[here + n - 1] == '\r' || b[here + n - 1] == ' ' || b[here + n - 1] == '\t'))
      n--;
    if (!n) continue;
    json_error_t je;
    json_t *j =
        json_loadb((const char *)b + here, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    json_t *t = json_is_object(j) ? json_object_get(j, "text") : NULL;
    if (!json_is_string(t) || depth(j) > 32) {
      add_fault(o, path, here, lineno);
      json_decref(j);
      return; /* the run stops at the first bad line of an input */
    }
    const size_t tl = json_string_length(t);
    char *copy = malloc(tl ? tl : 1);
    if (!copy) abort();
    memcpy(copy, json_string_value(t), tl);
    add_doc(o, copy, tl, copy);
    json_decref(j);
  }
}

/* Read back DIR/PREFIX_<split>_*.bin: every file full but the last; the tokens. */
static uint16_t *read_split(const char *dir, const char *split, uint64_t shard_tokens,
                            uint64_t *n) {
  char pat[200];
  snprintf(pat, sizeof pat, "%s/fz_%s_*.bin", dir, split);
  pg_shard_set *s;
  pg_err e;
  const int rc = pg_shard_set_open(&s, pat, &e);
  if (rc == PG_E_EMPTY_SET) {
    *n = 0;
    return NULL;
  }
  die_if(rc != PG_OK);
  *n = pg_shard_set_count(s);
  die_if(*n == 0);
  for (size_t k = 0; k < pg_shard_set_nfiles(s); k++) {
    const pg_shard_file *f = pg_shard_set_file(s, k);
    if (k + 1 < pg_shard_set_nfiles(s)) die_if(f->count != shard_tokens);
    else die_if(f->count == 0 || f->count > shard_tokens);
  }
  uint16_t *t = malloc(*n * sizeof *t);
  if (!t) abort();
  die_if(pg_shard_set_copy(s, 0, *n, t, &e) != PG_OK);
  pg_shard_set_free(s);
  return t;
}

static uint64_t manifest_int(json_t *m, const char *key) {
  json_t *v = json_object_get(m, key);
  die_if(!json_is_integer(v));
  return (uint64_t)json_integer_value(v);
}

static void cleanup(void) {
  rm_tree(root);
  rmdir(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!root[0]) {
    struct stat st;
    const char *base = stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm"
                                                                                    : "/tmp";
    snprintf(root, sizeof root, "%s/pgolf-fuzz-encode.XXXXXX", base);
    if (!mkdtemp(root)) abort();
    atexit(cleanup);
    pg_err e;
    if (pg_enc_open(&enc, PG_FUZZ_SPM_MODEL, &e) != PG_OK) {
      fprintf(stderr, "%s\n", e.msg);
      abort();
    }
  }
  if (size < 3) return 0;
  const uint8_t f0 = data[0], f1 = data[1], f2 = data[2];
  pg_corpus_cfg cfg = {.prefix = "fz",
                       .val_docs = f0 & 7,
                       .shard_tokens = 32 + 8 * (uint64_t)f1,
                       .threads = 1,
                       .batch_docs = 1 + (f2 & 3),
                       .max_doc = f2 & 4 ? 16 + (f2 >> 3) * 8 : 0};
  const uint64_t max_doc = cfg.max_doc ? cfg.max_doc : PG_CORPUS_MAX_DOC;
  char out[128];
  snprintf(out, sizeof out, "%s/out", root);
  cfg.dir = out;
  rm_tree(root);

  /* the inputs: kind byte (bit 0: JSON lines), two length bytes, the bytes */
  oracle o = {0};
  char paths[MAX_INPUTS][128];
  size_t ni = 0, pos = 3;
  const int want = 1 + (f0 >> 3) % MAX_INPUTS;
  while ((int)ni < want && pos + 3 <= size) {
    const int jsonl = data[pos] & 1;
    size_t len = (size_t)(data[pos + 1] | data[pos + 2] << 8);
    pos += 3;
    if (len > size - pos) len = size - pos;
    snprintf(paths[ni], sizeof paths[ni], "%s/in%zu.%s", root, ni, jsonl ? "jsonl" : "txt");
    FILE *f = fopen(paths[ni], "wb");
    if (!f || (len && fwrite(data + pos, 1, len, f) != len) || fclose(f) != 0) abort();
    if (!o.fault) read_input(&o, paths[ni], data + pos, len, jsonl, max_doc);
    pos += len;
    ni++;
  }
  if (ni == 0) return 0;
  /* every document the oracle saw is encoded on its own; one without ids is a fault */
  int32_t **ids = calloc(o.n ? o.n : 1, sizeof *ids);
  size_t *nids = calloc(o.n ? o.n : 1, sizeof *nids);
  if (!ids || !nids) abort();
  pg_err e;
  for (size_t d = 0; d < o.n; d++) {
    die_if(pg_enc_encode(enc, o.docs[d].text, o.docs[d].len, &ids[d], &nids[d], &e) != PG_OK);
    if (nids[d] == 0) o.fault = 1;
  }

  pg_corpus *c = NULL;
  int rc = pg_corpus_open(&c, enc, &cfg, &e);
  die_if(rc != PG_OK);
  for (size_t i = 0; rc == PG_OK && i < ni; i++) rc = pg_corpus_add_file(c, paths[i], &e);
  if (rc == PG_OK) rc = pg_corpus_finish(c, &e);
  if (rc != PG_OK) memcpy(last, e.msg, sizeof last);
  if (getenv("FZ_DEBUG")) fprintf(stderr, "rc %d docs %zu: %s\n", rc, o.n, rc ? e.msg : "");

  if (rc != PG_OK) {
    die_if(e.status != rc || !e.msg[0] || strchr(e.msg, '\n'));
    die_if(rc != PG_E_JSON && rc != PG_E_UTF8 && rc != PG_E_LIMIT && rc != PG_E_MALFORMED);
    die_if(!o.fault);
    /* the line names an input (and a JSON line's offset and number) */
    int named = 0;
    for (size_t i = 0; i < ni; i++) {
      char want_p[160];
      snprintf(want_p, sizeof want_p, "%s: ", paths[i]);
      named |= !strncmp(e.msg, want_p, strlen(want_p));
    }
    die_if(!named);
    if (rc == PG_E_JSON || rc == PG_E_LIMIT || rc == PG_E_UTF8) { /* found while reading */
      int known = 0;
      for (int k = 0; k < o.nf; k++) known |= !strncmp(e.msg, o.faults[k], strlen(o.faults[k]));
      die_if(!known);
    }
    pg_corpus_free(c);
    die_if(entries(out) != 0); /* no shard, no manifest, no temporary */
  } else {
    die_if(o.fault);
    const pg_corpus_stats *st = pg_corpus_stats_of(c);
    const uint64_t nval = o.n < cfg.val_docs ? o.n : cfg.val_docs;
    uint64_t vt = 0, tt = 0, bytes = 0;
    for (size_t d = 0; d < o.n; d++) {
      *(d < nval ? &vt : &tt) += 1 + nids[d];
      bytes += o.docs[d].len;
    }
    die_if(st->docs != o.n || st->val_docs != nval || st->val_tokens != vt ||
           st->train_tokens != tt || st->bytes_in != bytes);
    uint64_t nv, nt;
    uint16_t *v = read_split(out, "val", cfg.shard_tokens, &nv);
    uint16_t *t = read_split(out, "train", cfg.shard_tokens, &nt);
    die_if(nv != vt || nt != tt);
    uint64_t iv = 0, it = 0;
    for (size_t d = 0; d < o.n; d++) {
      uint16_t *s = d < nval ? v : t;
      uint64_t *i = d < nval ? &iv : &it;
      die_if(s[(*i)++] != PG_BOS_ID);
      for (size_t k = 0; k < nids[d]; k++) die_if(s[(*i)++] != (uint16_t)ids[d][k]);
    }
    /* one document per BOS, as the challenge lists them (no BOS ends a split) */
    pg_doc *docs;
    uint64_t ndocs, skipped;
    die_if(pg_docs_list(v, nv, "val", &docs, &ndocs, &skipped, &e) != PG_OK || ndocs != nval ||
           skipped);
    free(docs);
    die_if(pg_docs_list(t, nt, "train", &docs, &ndocs, &skipped, &e) != PG_OK ||
           ndocs != o.n - nval || skipped);
    free(docs);
    free(v);
    free(t);
    /* the manifest says the same */
    char mp[160];
    snprintf(mp, sizeof mp, "%s/manifest.json", out);
    json_error_t je;
    json_t *m = json_load_file(mp, 0, &je);
    die_if(!m);
    die_if(manifest_int(m, "documents") != o.n || manifest_int(m, "val_documents") != nval ||
           manifest_int(m, "val_tokens") != vt || manifest_int(m, "train_tokens") != tt ||
           manifest_int(m, "shard_tokens") != cfg.shard_tokens);
    die_if(json_array_size(json_object_get(m, "files")) != pg_corpus_nfiles(c));
    die_if(json_array_size(json_object_get(m, "inputs")) != ni);
    const int nfiles = (int)pg_corpus_nfiles(c);
    die_if(entries(out) != nfiles + 1);
    json_decref(m);
    pg_corpus_free(c);
    die_if(entries(out) != nfiles + 1); /* a finished run keeps its files */
  }
  for (size_t d = 0; d < o.n; d++) {
    free(ids[d]);
    free(o.docs[d].owned);
  }
  free(ids);
  free(nids);
  free(o.docs);
  return 0;
}
