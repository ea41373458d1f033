/* fuzz_shardset.c: libFuzzer target for the validation stream as pgverify and pgtrain read it
 * (pg_val_data_open: a glob of token shards, the CaseOps byte sidecar) carried through to use.
 *
 * The input describes a folder: up to 8 files (token shards, sidecar shards, other names, a
 * sub-folder), each with a name chosen from a fixed list, a body that is either raw bytes or a
 * well-formed shard (optionally with a wrong count), and patterns for the tokens and the sidecar.
 * The files are written to a private temporary folder and opened through pg_val_data_open. An
 * independent oracle (fnmatch over the names written, strcmp order, the header rules, the vocab
 * and BOS rules) predicts the outcome: the status, the file the one-line error names, or the exact
 * tokens and sidecar entries. Accepted streams are then scored by a tiny model (plain, sliding or
 * per-document LoRA TTT, chosen by the input) with synthetic byte tables or the sidecar, and the
 * byte and target totals are checked against a direct count. Every broken invariant aborts,
 * naming its line and the last error line; FZ_DEBUG=1 also prints each scoring run. */
#include <dirent.h>
#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg_eval.h"
#include "pg_io.h"
#include "pg_model_testing.h"
#include "pg_shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define V 64          /* the tiny model's vocabulary */
#define MAX_FILES 8
#define MAX_BODY 1536 /* bytes of one file body taken from the input */

static char dir[64];

static const char *const STEMS[] = {"val_",   "val_bytes_", "train_", ".val_",
                                    "val_x_bytes_", "VAL_",  "val_bytesy", "val"};
static const char *const TOK_PATTERNS[] = {"val_*.bin", "val_00000?.bin", "val_[0-3]*.bin", "*",
                                           "*.bin",     "val_*",          "[!t]*.bin",
                                           "val_000001.bin", "nomatch_*.bin", ".*"};
static const char *const BYTE_PATTERNS[] = {"val_bytes_*.bin", "*_bytes_*",
                                            "val_bytes_00000[0-4].bin", "val_*.bin"};

typedef struct file {
  char name[40];
  int is_dir;
  uint8_t *body;
  size_t len;
} file;

static char last[PG_ERR_MSG_MAX]; /* the last error line, printed with a broken invariant */

/* abort() naming the broken invariant's line */
#define die_if(cond)                                                   \
  do {                                                                 \
    if (cond) {                                                        \
      fprintf(stderr, "fuzz_shardset.c:%d: %s [%s]\n", __LINE__, #cond, last); \
      abort();                                                         \
    }                                                                  \
  } while (0)

static void check_line(const pg_err *err, int status) {
  die_if(err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
         !memchr(err->msg, '\0', sizeof err->msg));
}

static void clear_dir(void) {
  DIR *d = opendir(dir);
  if (!d) abort();
  struct dirent *e;
  char p[128];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (unlink(p) != 0 && rmdir(p) != 0) abort();
  }
  closedir(d);
}

/* The header rules of spec/shards.md §2, restated: 1 and the count when the body is a shard. */
static int shard_ok(const uint8_t *b, size_t len, uint64_t *count) {
  if (len < 1024 || pg_ld32(b) != PG_SHARD_MAGIC || pg_ld32(b + 4) != 1) return 0;
  const uint32_t n = pg_ld32(b + 8);
  if (n > 0x7fffffffu) return 0;
  for (int k = 3; k < 256; k++)
    if (pg_ld32(b + 4 * k)) return 0;
  if (len != 1024 + 2 * (uint64_t)n) return 0;
  *count = n;
  return 1;
}

static int cmp_file(const void *a, const void *b) {
  return strcmp((*(file *const *)a)->name, (*(file *const *)b)->name);
}

/* What pg_shard_set_open_ex must find for pattern (a name pattern within dir). */
typedef struct expect {
  int status;        /* PG_OK or the first fault's status */
  char path[128];    /* the file the error names ("" when it names the pattern) */
  file *match[MAX_FILES];
  size_t nmatch;
  uint64_t count;
} expect;

static void expect_set(expect *x, file *files, size_t nf, const char *pat, int skip_bytes) {
  memset(x, 0, sizeof *x);
  for (size_t k = 0; k < nf; k++) {
    if (fnmatch(pat, files[k].name, FNM_PERIOD | FNM_NOESCAPE) != 0) continue;
    if (skip_bytes && strstr(files[k].name, "_bytes_")) continue;
    x->match[x->nmatch++] = &files[k];
  }
  qsort(x->match, x->nmatch, sizeof x->match[0], cmp_file);
  if (x->nmatch == 0) {
    x->status = PG_E_EMPTY_SET;
    return;
  }
  for (size_t k = 0; k < x->nmatch; k++) {
    uint64_t c;
    if (x->match[k]->is_dir || !shard_ok(x->match[k]->body, x->match[k]->len, &c)) {
      x->status = -1; /* one of the reader's statuses (fuzz_shard checks which) */
      snprintf(x->path, sizeof x->path, "%s/%s", dir, x->match[k]->name);
      return;
    }
    x->count += c;
  }
}

/* The concatenated tokens of a set that opens (x->status == PG_OK). */
static uint16_t *concat(const expect *x) {
  uint16_t *t = malloc((x->count ? x->count : 1) * sizeof *t);
  if (!t) abort();
  uint64_t o = 0;
  for (size_t k = 0; k < x->nmatch; k++)
    for (size_t i = 1024; i + 1 < x->match[k]->len; i += 2) t[o++] = pg_ld16(x->match[k]->body + i);
  die_if(o != x->count);
  return t;
}

static const char *file_of(const expect *x, uint64_t g, uint64_t *local) {
  static char p[128];
  for (size_t k = 0; k < x->nmatch; k++) {
    const uint64_t c = (x->match[k]->len - 1024) / 2;
    if (g < c) {
      snprintf(p, sizeof p, "%s/%s", dir, x->match[k]->name);
      *local = g;
      return p;
    }
    g -= c;
  }
  abort();
}

/* The error line starts with the file (or pattern) it is about. */
static void check_names(const pg_err *err, const char *path) {
  char want[160];
  snprintf(want, sizeof want, "%s: ", path);
  die_if(strncmp(err->msg, want, strlen(want)) != 0);
}

/* Synthetic byte tables over V ids: 0..3 are boundaries, the others 0..3 bytes plus a space. */
static pg_spm_tables tables(uint8_t salt) {
  static int16_t base[V];
  static uint8_t lead[V], boundary[V];
  for (uint32_t i = 0; i < V; i++) {
    boundary[i] = i < 4;
    base[i] = (int16_t)(i < 4 ? 0 : (i * 7 + salt) % 4);
    lead[i] = i >= 4 && (i + salt) % 3 == 0;
  }
  return (pg_spm_tables){.size = V, .vocab = V, .base = base, .lead = lead, .boundary = boundary};
}

static pg_model *tiny_model(uint64_t seed) {
  static const char arch[] = "{\"vocab_size\": 64, \"dim\": 16, \"heads\": 4, \"kv_heads\": 2, "
                             "\"head_dim\": 4, \"layers\": 2, \"mlp\": {\"hidden\": 24}}";
  pg_arch a;
  pg_model *m;
  pg_err err;
  if (pg_arch_parse(&a, arch, sizeof arch - 1, "tiny", &err) || pg_model_create(&m, &a, &err))
    abort();
  pg_model_init_random(m, seed, 0.5);
  return m;
}

/* Score the stream and check the totals against a direct count. */
static void score(const pg_val_data *vd, const uint8_t *ctl, size_t nctl) {
  const uint8_t c0 = nctl > 0 ? ctl[0] : 0, c1 = nctl > 1 ? ctl[1] : 0;
  pg_spm_tables t = tables(c1);
  const int kind = c0 % 8 == 7 ? PG_PROTO_TTT_LORA : c0 % 2 ? PG_PROTO_SLIDING : PG_PROTO_PLAIN;
  /* a prefix of the stream keeps each input fast (the reader above saw all of it) */
  const uint64_t cap = kind == PG_PROTO_TTT_LORA ? 48 : 64;
  const uint64_t n = vd->n < cap ? vd->n : cap;
  pg_val val = {.tok = vd->tok, .n = n, .tables = vd->bytes ? NULL : &t, .bytes = vd->bytes};
  pg_protocol p;
  pg_protocol_defaults(&p, kind);
  p.seq_len = 1 + (c1 >> 4) + (c1 & 8); /* 1..24 */
  p.stride = (p.seq_len + 1) / 2 + (c0 >> 4) % ((p.seq_len + 1) / 2); /* few windows: fast */
  p.report_tokens = (uint64_t)p.stride * (1 + (c0 >> 1) % 3);
  p.batch = 1 + (c0 >> 2) % 8;
  p.trim = !(c0 & 0x40) || kind == PG_PROTO_TTT_LORA;
  p.lora_rank = 2;
  p.lora_window = 4 + (c1 >> 4);
  p.lora_chunk = p.lora_window - (c1 & 3); /* few chunks: few backward passes */
  p.lora_batch_docs = 2;
  p.lora_lr = 0.01;
  /* one model for every input: plain and sliding only read it, ttt-lora trains adapters only */
  static pg_model *m;
  if (!m) m = tiny_model(7);
  pg_engine e = pg_engine_cpu(1);
  pg_eval_result res;
  pg_err err;
  const int rc = pg_eval_run(m, &e, &val, &p, NULL, &res, &err);
  if (getenv("FZ_DEBUG"))
    fprintf(stderr, "eval kind %d rc %d n %llu scored %llu targets %llu [%s]\n", kind, rc,
            (unsigned long long)n, (unsigned long long)res.scored,
            (unsigned long long)res.targets, rc ? err.msg : "");
  const int L = kind == PG_PROTO_TTT_LORA ? p.lora_window : p.seq_len;
  const uint64_t N = p.trim ? pg_val_trim(n, (uint64_t)L) : n;
  const uint64_t T = N ? N - 1 : 0;
  double bytes = 0;
  for (uint64_t i = 0; i < T; i++)
    bytes += vd->bytes ? vd->bytes[i + 1]
                       : pg_spm_pair_bytes_unchecked(&t, (uint32_t)vd->tok[i],
                                                     (uint32_t)vd->tok[i + 1]);
  const int refused = T == 0 || bytes == 0 ||
                      (kind == PG_PROTO_PLAIN && T % (uint64_t)L != 0) ||
                      (kind == PG_PROTO_SLIDING && T <= (uint64_t)(L - p.stride));
  if (rc != PG_OK) {
    check_line(&err, rc);
    memcpy(last, err.msg, sizeof last);
    if (getenv("FZ_DEBUG")) {
      fprintf(stderr, "kind %d L %d chunk %d batch_docs %d trim %d n %llu:", kind, L, p.lora_chunk,
              p.lora_batch_docs, p.trim, (unsigned long long)n);
      for (uint64_t i = 0; i < n; i++) fprintf(stderr, " %d", vd->tok[i]);
      fprintf(stderr, "\n");
    }
    /* nothing to score, no bytes to divide by, a partial plain window, no sliding window, or
     * (per document) a stream the challenge refuses */
    if (kind == PG_PROTO_TTT_LORA) die_if(rc != PG_E_MALFORMED && rc != PG_E_ARG);
    else die_if(rc != PG_E_ARG || !refused);
    return;
  }
  die_if(refused);
  die_if(res.tokens != N || res.targets != T);
  if (kind != PG_PROTO_TTT_LORA) {
    die_if(res.scored != T || res.duplicates != 0 || res.sum.tokens != (double)T);
    die_if(res.sum.bytes != bytes); /* integers below 2^53: exact in any order */
  }
  die_if(!isfinite(res.val_bpb) || !(res.val_bpb > 0) || !isfinite(res.val_loss));
  double cb = 0, cn = 0;
  for (size_t k = 0; k < res.nchunks; k++) {
    cb += res.chunks[k].bytes;
    cn += (double)res.chunks[k].count;
  }
  if (kind != PG_PROTO_TTT_LORA) die_if(cb != res.sum.bytes || cn != (double)T);
  pg_eval_result_free(&res);
}

static void write_files(file *files, size_t nf) {
  char p[128];
  for (size_t k = 0; k < nf; k++) {
    snprintf(p, sizeof p, "%s/%s", dir, files[k].name);
    if (files[k].is_dir) {
      if (mkdir(p, 0700) != 0) abort();
      continue;
    }
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(files[k].body, 1, files[k].len, f) != files[k].len || fclose(f) != 0) abort();
  }
}

static void cleanup(void) {
  clear_dir();
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/pgolf-fuzz-shardset.XXXXXX");
    if (!mkdtemp(dir)) abort();
    atexit(cleanup);
  }
  if (size < 4) return 0;
  const uint8_t flags = data[0], pat = data[1];
  const uint64_t max_tokens = flags & 0x10 ? data[2] | (uint64_t)data[3] << 8 : 0;
  size_t pos = 4;
  file files[MAX_FILES];
  size_t nf = 0;
  const size_t want = 1 + (flags & 7);
  /* each file: name byte, mode byte, two length bytes, the body */
  while (nf < want && pos + 4 <= size) {
    const uint8_t nb = data[pos], mode = data[pos + 1];
    size_t len = (size_t)(data[pos + 2] | data[pos + 3] << 8) % (MAX_BODY + 1);
    pos += 4;
    if (len > size - pos) len = size - pos;
    file *f = &files[nf];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s%06u.bin", STEMS[nb & 7], (unsigned)(nb >> 3) % 6);
    if ((nb >> 3) % 6 == 5) snprintf(f->name, sizeof f->name, "%s", STEMS[nb & 7]);
    int dup = 0;
    for (size_t k = 0; k < nf; k++) dup |= !strcmp(files[k].name, f->name);
    if (dup) {
      pos += len;
      continue;
    }
    f->is_dir = mode == 0xff;
    if ((mode & 3) == 0 || f->is_dir) { /* raw bytes */
      f->len = len;
      f->body = malloc(len ? len : 1);
      if (!f->body) abort();
      memcpy(f->body, data + pos, len);
    } else { /* a shard: tokens from the input, ids below V (1), raw (2), many zeros (3) */
      const size_t n = len / 2;
      f->len = 1024 + 2 * n;
      f->body = calloc(1, f->len);
      if (!f->body) abort();
      pg_st32(f->body, PG_SHARD_MAGIC);
      pg_st32(f->body + 4, 1);
      uint32_t cnt = (uint32_t)n;
      if (mode & 4) cnt += (mode >> 3) % 3 - 1; /* a count off by one either way, or right */
      pg_st32(f->body + 8, cnt);
      for (size_t i = 0; i < n; i++) {
        uint16_t v = pg_ld16(data + pos + 2 * i);
        if ((mode & 3) == 1) v %= V;
        if ((mode & 3) == 3) v = v % 5 == 0 ? 0 : v % V;
        pg_st16(f->body + 1024 + 2 * i, v);
      }
    }
    pos += len;
    nf++;
  }
  const uint8_t *ctl = data + pos;
  const size_t nctl = size - pos;
  const int with_sidecar = (flags & 8) != 0;
  /* a derived sidecar: for each valid val_N token file, val_bytes_N with the entry of every
   * token (0 for a BOS); or (flag 0x40) all of them in one file, split unlike the tokens */
  if (with_sidecar && (flags & 0x20)) {
    const size_t ntok = nf;
    file *one = NULL;
    for (size_t k = 0; k < ntok && nf < MAX_FILES; k++) {
      uint64_t c;
      if (files[k].is_dir || strncmp(files[k].name, "val_0", 5) ||
          !shard_ok(files[k].body, files[k].len, &c))
        continue;
      file *f = one ? one : &files[nf];
      if (!one) {
        memset(f, 0, sizeof *f);
        snprintf(f->name, sizeof f->name, "val_bytes_%s", files[k].name + 4);
        int dup = 0;
        for (size_t j = 0; j < nf; j++) dup |= !strcmp(files[j].name, f->name);
        if (dup) continue;
        f->body = calloc(1, 1024);
        if (!f->body) abort();
        f->len = 1024;
        pg_st32(f->body, PG_SHARD_MAGIC);
        pg_st32(f->body + 4, 1);
        nf++;
        if (flags & 0x40) one = f;
      }
      uint8_t *b = realloc(f->body, f->len + 2 * c);
      if (!b) abort();
      f->body = b;
      for (uint64_t i = 0; i < c; i++) {
        const uint16_t t = pg_ld16(files[k].body + 1024 + 2 * i);
        pg_st16(b + f->len + 2 * i, t == PG_BOS_ID ? 0 : (uint16_t)(t % 5));
      }
      f->len += 2 * c;
      pg_st32(b + 8, (uint32_t)((f->len - 1024) / 2));
    }
  }
  clear_dir();
  write_files(files, nf);

  const char *tp = TOK_PATTERNS[pat % 10], *bp = BYTE_PATTERNS[(pat / 10) % 4];
  char tpat[128], bpat[128];
  snprintf(tpat, sizeof tpat, "%s/%s", dir, tp);
  snprintf(bpat, sizeof bpat, "%s/%s", dir, bp);

  expect xt, xb;
  expect_set(&xt, files, nf, tp, 1);
  uint16_t *tok = NULL;
  int want_rc = xt.status;
  const char *want_path = xt.status == PG_E_EMPTY_SET ? tpat : xt.path;
  uint64_t n = 0;
  if (want_rc == PG_OK) { /* the vocabulary: the first id >= V, in set order */
    tok = concat(&xt);
    for (uint64_t g = 0; g < xt.count; g++)
      if (tok[g] >= V) {
        uint64_t local;
        want_rc = PG_E_TOKEN_RANGE;
        want_path = file_of(&xt, g, &local);
        break;
      }
    n = max_tokens && max_tokens < xt.count ? max_tokens : xt.count;
  }
  uint16_t *byt = NULL;
  if (want_rc == PG_OK && with_sidecar) {
    expect_set(&xb, files, nf, bp, 0);
    want_rc = xb.status;
    want_path = xb.status == PG_E_EMPTY_SET ? bpat : xb.path;
    if (want_rc == PG_OK && xb.count != xt.count) {
      want_rc = PG_E_SIZE_MISMATCH;
      want_path = bpat;
    }
    if (want_rc == PG_OK) {
      byt = concat(&xb);
      for (uint64_t g = 0; g < xt.count; g++)
        if (tok[g] == PG_BOS_ID && byt[g] != 0) {
          uint64_t local;
          want_rc = PG_E_MALFORMED;
          want_path = file_of(&xb, g, &local);
          break;
        }
    }
  }

  pg_val_data vd;
  pg_err err;
  const int rc = pg_val_data_open(&vd, tpat, with_sidecar ? bpat : NULL, V, max_tokens, &err);
  if (rc != PG_OK) {
    check_line(&err, rc);
    memcpy(last, err.msg, sizeof last);
    die_if(vd.tok || vd.bytes || vd.set || vd.bset || vd.n);
    if (want_rc == -1)
      die_if(rc != PG_E_TRUNCATED && rc != PG_E_MAGIC && rc != PG_E_VERSION && rc != PG_E_HEADER &&
             rc != PG_E_SIZE_MISMATCH && rc != PG_E_IO);
    else
      die_if(rc != want_rc);
    check_names(&err, want_path);
  } else {
    die_if(want_rc != PG_OK);
    die_if(vd.available != xt.count || vd.n != n || !vd.tok);
    die_if(pg_shard_set_nfiles(vd.set) != xt.nmatch);
    for (uint64_t i = 0; i < n; i++) die_if(vd.tok[i] != tok[i]);
    if (with_sidecar) {
      die_if(!vd.bytes || !vd.bset);
      uint64_t sum = 0, want_sum = 0;
      for (uint64_t i = 0; i < n; i++) {
        die_if(vd.bytes[i] != byt[i]);
        want_sum += byt[i];
      }
      die_if(pg_sidecar_sum(vd.bset, 0, n, &sum, &err) != PG_OK || sum != want_sum);
    } else {
      die_if(vd.bytes || vd.bset);
    }
    score(&vd, ctl, nctl);
    pg_val_data_free(&vd);
  }
  free(tok);
  free(byt);
  for (size_t k = 0; k < nf; k++) free(files[k].body);
  return 0;
}
