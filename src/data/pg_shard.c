/* pg_shard.c: reading, validating and writing the challenge's token shards, shard sets from a
 * sorted glob, the CaseOps byte sidecar, validation trimming and BOS document listing (see
 * pg_shard.h, spec/shards.md). */
#include "pg_shard.h"

#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_io.h"

/* A shard from memory holds a pointer to its tokens; a shard from a file holds the open file and
 * reads its tokens on demand (pread), so a shard set costs no memory per token and a file that
 * shrinks while in use is a one-line PG_E_IO at the read, never a SIGBUS. */
struct pg_shard {
  char *name;
  const uint8_t *tok; /* open_mem: 2*count bytes, little-endian; NULL for a file */
  int fd;             /* a file: its descriptor; -1 for open_mem */
  uint64_t count;
};

#define PIECE_TOKENS 32768u /* tokens read from a file per piece */

/* Raw little-endian bytes of tokens [start, start + n) of s into dst (2n bytes). */
static int shard_read(const pg_shard *s, uint64_t start, uint64_t n, uint8_t *dst, pg_err *err) {
  if (s->fd < 0) {
    memcpy(dst, s->tok + 2 * start, (size_t)(2 * n));
    return PG_OK;
  }
  return pg_file_pread(s->fd, PG_SHARD_HEADER_BYTES + 2 * start, dst, (size_t)(2 * n), s->name,
                       err);
}

/* Call fn on tokens [start, start + n) of s in pieces (raw bytes, m tokens, the index of the
 * piece's first token); a non-zero return from fn stops the walk and is returned. */
typedef int (*piece_fn)(const uint8_t *src, uint64_t m, uint64_t at, void *ctx);

static int each_piece(const pg_shard *s, uint64_t start, uint64_t n, piece_fn fn, void *ctx,
                      int *stop, pg_err *err) {
  *stop = 0;
  if (n == 0) return PG_OK;
  if (s->fd < 0) {
    *stop = fn(s->tok + 2 * start, n, start, ctx);
    return PG_OK;
  }
  uint8_t *buf = malloc(2 * (size_t)(n < PIECE_TOKENS ? n : PIECE_TOKENS));
  if (!buf) return pg_err_set(err, PG_E_NOMEM, s->name, PG_NO_OFFSET, "cannot allocate");
  int rc = PG_OK;
  for (uint64_t at = start; at < start + n && rc == PG_OK && !*stop;) {
    const uint64_t m = start + n - at < PIECE_TOKENS ? start + n - at : PIECE_TOKENS;
    rc = shard_read(s, at, m, buf, err);
    if (rc == PG_OK) *stop = fn(buf, m, at, ctx);
    at += m;
  }
  free(buf);
  return rc;
}

static char *dup_str(const char *s) {
  const size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

/* ---- one shard ---- */

/* The checks of pg_shard_validate on a file of len bytes whose first min(len, 1024) bytes are at
 * data (only the header is read). */
static int shard_check(const uint8_t *data, size_t len, const char *name, uint64_t *count,
                       pg_err *err) {
  if (len < PG_SHARD_HEADER_BYTES)
    return pg_err_set(err, PG_E_TRUNCATED, name, (uint64_t)len,
                      "file is %zu bytes, shorter than the 1024-byte shard header", len);
  const uint32_t magic = pg_ld32(data);
  if (magic != PG_SHARD_MAGIC)
    return pg_err_set(err, PG_E_MAGIC, name, 0,
                      "header[0] is %ld, not the shard magic 20240520 (not a token shard)",
                      (long)(int32_t)magic);
  const uint32_t version = pg_ld32(data + 4);
  if (version != PG_SHARD_VERSION)
    return pg_err_set(err, PG_E_VERSION, name, 4, "header[1] (version) is %ld, not 1",
                      (long)(int32_t)version);
  const uint32_t n32 = pg_ld32(data + 8);
  if (n32 > PG_SHARD_MAX_TOKENS)
    return pg_err_set(err, PG_E_HEADER, name, 8,
                      "header[2] (token count) is %ld: negative as an int32 (0x%08lX)",
                      (long)(int32_t)n32, (unsigned long)n32);
  for (unsigned k = 3; k < PG_SHARD_HEADER_WORDS; k++) {
    const uint32_t w = pg_ld32(data + 4 * k);
    if (w != 0)
      return pg_err_set(err, PG_E_HEADER, name, 4 * (uint64_t)k,
                        "header[%u] is 0x%08lX; header words 3..255 must be 0", k,
                        (unsigned long)w);
  }
  const uint64_t n = n32;
  const uint64_t want = PG_SHARD_HEADER_BYTES + 2 * n;
  const uint64_t have = (uint64_t)len;
  if (have < want)
    return pg_err_set(err, PG_E_SIZE_MISMATCH, name, have,
                      "file is %llu bytes, %llu short of 1024 + 2*%llu = %llu for its token "
                      "count (file too short)",
                      (unsigned long long)have, (unsigned long long)(want - have),
                      (unsigned long long)n, (unsigned long long)want);
  if (have > want)
    return pg_err_set(err, PG_E_SIZE_MISMATCH, name, want,
                      "file is %llu bytes, %llu more than 1024 + 2*%llu = %llu for its token "
                      "count (trailing bytes)",
                      (unsigned long long)have, (unsigned long long)(have - want),
                      (unsigned long long)n, (unsigned long long)want);
  if (count) *count = n;
  return PG_OK;
}

int pg_shard_validate(const uint8_t *data, size_t len, const char *name, uint64_t *count,
                      pg_err *err) {
  PG_FAIL_IF(!data && len, err, PG_E_ARG, name, PG_NO_OFFSET, "no shard bytes");
  return shard_check(data, len, name, count, err);
}

static int shard_new(pg_shard **out, const char *name, pg_err *err) {
  pg_shard *s = calloc(1, sizeof *s);
  if (s) s->fd = -1;
  if (s) s->name = dup_str(name ? name : "");
  if (!s || !s->name) {
    free(s);
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate a shard");
  }
  *out = s;
  return PG_OK;
}

int pg_shard_open_mem(pg_shard **out, const uint8_t *data, size_t len, const char *name,
                      pg_err *err) {
  PG_FAIL_IF(!out, err, PG_E_ARG, name, PG_NO_OFFSET, "no output");
  *out = NULL;
  uint64_t n = 0;
  PG_TRY(pg_shard_validate(data, len, name, &n, err));
  pg_shard *s = NULL;
  PG_TRY(shard_new(&s, name, err));
  s->tok = data + PG_SHARD_HEADER_BYTES;
  s->count = n;
  *out = s;
  return PG_OK;
}

int pg_shard_open(pg_shard **out, const char *path, pg_err *err) {
  PG_FAIL_IF(!out || !path, err, PG_E_ARG, path, PG_NO_OFFSET, "no shard path");
  *out = NULL;
  int fd;
  uint64_t size;
  PG_TRY(pg_file_open_read(path, &fd, &size, err));
  /* the header and the size decide validity; the tokens are read when used */
  uint8_t hdr[PG_SHARD_HEADER_BYTES];
  const size_t hn = size < sizeof hdr ? (size_t)size : sizeof hdr;
  int rc = pg_file_pread(fd, 0, hdr, hn, path, err);
  uint64_t n = 0;
  if (rc == PG_OK && size > SIZE_MAX)
    rc = pg_err_set(err, PG_E_LIMIT, path, PG_NO_OFFSET, "file is too large");
  if (rc == PG_OK) rc = shard_check(hdr, (size_t)size, path, &n, err);
  pg_shard *s = NULL;
  if (rc == PG_OK) rc = shard_new(&s, path, err);
  if (rc != PG_OK) {
    close(fd);
    return rc;
  }
  s->fd = fd;
  s->count = n;
  *out = s;
  return PG_OK;
}

void pg_shard_free(pg_shard *s) {
  if (!s) return;
  if (s->fd >= 0) close(s->fd);
  free(s->name);
  free(s);
}

const char *pg_shard_name(const pg_shard *s) { return s ? s->name : NULL; }
uint64_t pg_shard_count(const pg_shard *s) { return s ? s->count : 0; }
const uint8_t *pg_shard_data(const pg_shard *s) { return s ? s->tok : NULL; }

uint16_t pg_shard_token(const pg_shard *s, uint64_t i) {
  uint8_t b[2];
  return s && i < s->count && shard_read(s, i, 1, b, NULL) == PG_OK ? pg_ld16(b) : 0;
}

static void copy_le16(const uint8_t *src, uint64_t n, uint16_t *dst) {
  for (uint64_t i = 0; i < n; i++) dst[i] = pg_ld16(src + 2 * i);
}

static int piece_u16(const uint8_t *src, uint64_t n, uint64_t at, void *ctx) {
  (void)at;
  uint16_t **dst = ctx;
  copy_le16(src, n, *dst);
  *dst += n;
  return 0;
}

static int piece_i32(const uint8_t *src, uint64_t n, uint64_t at, void *ctx) {
  (void)at;
  int32_t **dst = ctx;
  for (uint64_t i = 0; i < n; i++) (*dst)[i] = (int32_t)pg_ld16(src + 2 * i);
  *dst += n;
  return 0;
}

static int piece_sum(const uint8_t *src, uint64_t n, uint64_t at, void *ctx) {
  (void)at;
  uint64_t *sum = ctx;
  for (uint64_t i = 0; i < n; i++) *sum += pg_ld16(src + 2 * i);
  return 0;
}

static int walk_shard(const pg_shard *s, uint64_t start, uint64_t n, piece_fn fn, void *ctx,
                      pg_err *err) {
  int stop;
  return each_piece(s, start, n, fn, ctx, &stop, err);
}

int pg_shard_copy(const pg_shard *s, uint64_t start, uint64_t n, uint16_t *dst, pg_err *err) {
  PG_FAIL_IF(!s || (!dst && n), err, PG_E_ARG, NULL, PG_NO_OFFSET, "no shard or destination");
  PG_FAIL_IF(start > s->count || n > s->count - start, err, PG_E_ARG, s->name, PG_NO_OFFSET,
             "tokens [%llu, %llu + %llu) are outside the shard's %llu tokens",
             (unsigned long long)start, (unsigned long long)start, (unsigned long long)n,
             (unsigned long long)s->count);
  return walk_shard(s, start, n, piece_u16, &dst, err);
}

typedef struct {
  uint32_t vocab;
  uint64_t at;
  uint16_t id;
} range_ctx;

static int piece_range(const uint8_t *src, uint64_t m, uint64_t at, void *ctx) {
  range_ctx *c = ctx;
  for (uint64_t i = 0; i < m; i++)
    if (pg_ld16(src + 2 * i) >= c->vocab) {
      c->at = at + i;
      c->id = pg_ld16(src + 2 * i);
      return 1;
    }
  return 0;
}

/* PG_E_TOKEN_RANGE for the first token of s >= vocab; global is the index of s's first token. */
static int check_vocab(const pg_shard *s, uint64_t global, uint32_t vocab, pg_err *err) {
  if (vocab > 0xffff) return PG_OK;
  range_ctx c = {.vocab = vocab};
  int stop;
  PG_TRY(each_piece(s, 0, s->count, piece_range, &c, &stop, err));
  if (!stop) return PG_OK;
  return pg_err_set(err, PG_E_TOKEN_RANGE, s->name, PG_SHARD_HEADER_BYTES + 2 * c.at,
                    "token %llu (global index %llu) is id %u, outside a vocabulary of %lu",
                    (unsigned long long)c.at, (unsigned long long)(global + c.at), (unsigned)c.id,
                    (unsigned long)vocab);
}

int pg_shard_check_vocab(const pg_shard *s, uint32_t vocab, pg_err *err) {
  PG_FAIL_IF(!s, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no shard");
  return check_vocab(s, 0, vocab, err);
}

/* ---- sets ---- */

struct pg_shard_set {
  char *pattern;
  size_t nfiles;
  pg_shard **shards;
  pg_shard_file *files;
  uint64_t count;
};

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int name_has_bytes(const char *path) {
  const char *base = strrchr(path, '/');
  return strstr(base ? base + 1 : path, "_bytes_") != NULL;
}

/* Next path component at *s (runs of '/' skipped): its start, and its length in *len. */
static const char *next_comp(const char **s, size_t *len) {
  while (**s == '/') (*s)++;
  const char *c = *s;
  *len = strcspn(c, "/");
  *s += *len;
  return c;
}

/* 1 when a component of path is "." or ".." where the pattern's component has a wildcard.
 * glob(3) lists those entries of a folder (".*" matches both), Python's glob never does. */
static int dot_from_wildcard(const char *pattern, const char *path) {
  for (;;) {
    size_t pl, ml;
    const char *pc = next_comp(&pattern, &pl), *mc = next_comp(&path, &ml);
    if (pl == 0 || ml == 0) return 0; /* the end (or a shape we do not pair up: keep it) */
    const int dots = (ml == 1 && mc[0] == '.') || (ml == 2 && mc[0] == '.' && mc[1] == '.');
    int wild = 0;
    for (size_t i = 0; i < pl; i++) wild |= pc[i] == '*' || pc[i] == '?' || pc[i] == '[';
    if (dots && wild) return 1;
  }
}

void pg_shard_set_free(pg_shard_set *set) {
  if (!set) return;
  for (size_t k = 0; k < set->nfiles; k++) pg_shard_free(set->shards[k]);
  free(set->shards);
  free(set->files);
  free(set->pattern);
  free(set);
}

int pg_shard_set_open_ex(pg_shard_set **out, const char *pattern, unsigned flags, pg_err *err) {
  PG_FAIL_IF(!out || !pattern, err, PG_E_ARG, pattern, PG_NO_OFFSET, "no shard pattern");
  *out = NULL;
  PG_FAIL_IF(!*pattern, err, PG_E_EMPTY_SET, NULL, PG_NO_OFFSET, "empty shard pattern");
  glob_t g;
  memset(&g, 0, sizeof g);
  /* No GLOB_NOCHECK: a pattern without matches gives nothing. GLOB_NOESCAPE: Python's glob has
   * no backslash escapes. Sorting is ours (strcmp), not glob's (strcoll). */
  const int grc = glob(pattern, GLOB_NOSORT | GLOB_NOESCAPE, NULL, &g);
  if (grc == GLOB_NOSPACE) {
    globfree(&g);
    return pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "out of memory expanding the glob");
  }
  if (grc == GLOB_ABORTED) {
    globfree(&g);
    return pg_err_set(err, PG_E_IO, pattern, PG_NO_OFFSET, "cannot read a folder of the glob");
  }
  const size_t matched = grc == 0 ? g.gl_pathc : 0;
  char **paths = matched ? malloc(matched * sizeof *paths) : NULL;
  if (matched && !paths) {
    globfree(&g);
    return pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "cannot allocate a path list");
  }
  size_t n = 0;
  for (size_t k = 0; k < matched; k++)
    if (!((flags & PG_SHARD_SKIP_BYTES) && name_has_bytes(g.gl_pathv[k])) &&
        !dot_from_wildcard(pattern, g.gl_pathv[k]))
      paths[n++] = g.gl_pathv[k];
  if (n == 0) {
    free(paths);
    globfree(&g);
    return pg_err_set(err, PG_E_EMPTY_SET, pattern, PG_NO_OFFSET, "%s",
                      matched ? "no shard file matches once *_bytes_* names are left out"
                              : "no shard file matches");
  }
  qsort(paths, n, sizeof *paths, cmp_str);
  int rc = PG_OK;
  pg_shard_set *set = calloc(1, sizeof *set);
  if (set) {
    set->pattern = dup_str(pattern);
    set->shards = calloc(n, sizeof *set->shards);
    set->files = calloc(n, sizeof *set->files);
  }
  if (!set || !set->pattern || !set->shards || !set->files)
    rc = pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "cannot allocate a shard set");
  for (size_t k = 0; k < n && rc == PG_OK; k++) {
    rc = pg_shard_open(&set->shards[k], paths[k], err);
    if (rc != PG_OK) break;
    set->nfiles = k + 1;
    set->files[k].path = set->shards[k]->name;
    set->files[k].count = set->shards[k]->count;
    set->files[k].first = set->count;
    set->count += set->shards[k]->count;
  }
  free(paths);
  globfree(&g);
  if (rc != PG_OK) {
    pg_shard_set_free(set);
    return rc;
  }
  *out = set;
  return PG_OK;
}

int pg_shard_set_open(pg_shard_set **out, const char *pattern, pg_err *err) {
  return pg_shard_set_open_ex(out, pattern, 0, err);
}

const char *pg_shard_set_pattern(const pg_shard_set *set) { return set ? set->pattern : NULL; }
uint64_t pg_shard_set_count(const pg_shard_set *set) { return set ? set->count : 0; }
size_t pg_shard_set_nfiles(const pg_shard_set *set) { return set ? set->nfiles : 0; }

const pg_shard_file *pg_shard_set_file(const pg_shard_set *set, size_t k) {
  return set && k < set->nfiles ? &set->files[k] : NULL;
}

const pg_shard *pg_shard_set_shard(const pg_shard_set *set, size_t k) {
  return set && k < set->nfiles ? set->shards[k] : NULL;
}

/* The file holding global token i (i < count): the last file with first <= i and count > 0. */
static size_t file_of(const pg_shard_set *set, uint64_t i) {
  size_t lo = 0, hi = set->nfiles; /* answer in [lo, hi) */
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    if (set->files[mid].first <= i)
      lo = mid;
    else
      hi = mid;
  }
  /* empty files share their first with the next file: lo is the last of them, which holds i */
  return lo;
}

uint16_t pg_shard_set_token(const pg_shard_set *set, uint64_t i) {
  if (!set || i >= set->count) return 0;
  const size_t k = file_of(set, i);
  return pg_shard_token(set->shards[k], i - set->files[k].first);
}

/* Walk [start, start+n) file by file, calling fn on each piece. */
static int walk(const pg_shard_set *set, uint64_t start, uint64_t n, piece_fn fn, void *ctx,
                pg_err *err) {
  PG_FAIL_IF(!set, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no shard set");
  PG_FAIL_IF(start > set->count || n > set->count - start, err, PG_E_ARG, set->pattern,
             PG_NO_OFFSET, "tokens [%llu, %llu + %llu) are outside the set's %llu tokens",
             (unsigned long long)start, (unsigned long long)start, (unsigned long long)n,
             (unsigned long long)set->count);
  if (n == 0) return PG_OK;
  size_t k = file_of(set, start);
  uint64_t off = start - set->files[k].first;
  while (n > 0) {
    const uint64_t avail = set->files[k].count - off;
    const uint64_t m = avail < n ? avail : n;
    if (m) PG_TRY(walk_shard(set->shards[k], off, m, fn, ctx, err));
    n -= m;
    k++;
    off = 0;
  }
  return PG_OK;
}

int pg_shard_set_copy(const pg_shard_set *set, uint64_t start, uint64_t n, uint16_t *dst,
                      pg_err *err) {
  PG_FAIL_IF(!dst && n, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no destination");
  return walk(set, start, n, piece_u16, &dst, err);
}

int pg_shard_set_copy_i32(const pg_shard_set *set, uint64_t start, uint64_t n, int32_t *dst,
                          pg_err *err) {
  PG_FAIL_IF(!dst && n, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no destination");
  return walk(set, start, n, piece_i32, &dst, err);
}

int pg_shard_set_check_vocab(const pg_shard_set *set, uint32_t vocab, pg_err *err) {
  PG_FAIL_IF(!set, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no shard set");
  for (size_t k = 0; k < set->nfiles; k++)
    PG_TRY(check_vocab(set->shards[k], set->files[k].first, vocab, err));
  return PG_OK;
}

/* ---- the CaseOps byte sidecar ---- */

int pg_sidecar_check_count(const pg_shard_set *bytes, const pg_shard_set *tokens, pg_err *err) {
  PG_FAIL_IF(!bytes || !tokens, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no shard set");
  if (bytes->count == tokens->count) return PG_OK;
  const int more = bytes->count > tokens->count;
  const uint64_t d = more ? bytes->count - tokens->count : tokens->count - bytes->count;
  return pg_err_set(err, PG_E_SIZE_MISMATCH, bytes->pattern, PG_NO_OFFSET,
                    "byte sidecar has %llu entries, %llu %s than the %llu tokens of %s; it must "
                    "align 1:1 with the token shards",
                    (unsigned long long)bytes->count, (unsigned long long)d,
                    more ? "more" : "fewer", (unsigned long long)tokens->count, tokens->pattern);
}

int pg_sidecar_open(pg_shard_set **out, const char *pattern, const pg_shard_set *tokens,
                    pg_err *err) {
  PG_FAIL_IF(!out || !tokens, err, PG_E_ARG, pattern, PG_NO_OFFSET, "no output or token set");
  *out = NULL;
  pg_shard_set *b;
  PG_TRY(pg_shard_set_open_ex(&b, pattern, 0, err));
  const int rc = pg_sidecar_check_count(b, tokens, err);
  if (rc != PG_OK) {
    pg_shard_set_free(b);
    return rc;
  }
  *out = b;
  return PG_OK;
}

int pg_sidecar_check_bos(const pg_shard_set *bytes, const pg_shard_set *tokens, pg_err *err) {
  PG_TRY(pg_sidecar_check_count(bytes, tokens, err));
  const uint64_t n = tokens->count;
  const size_t piece = (size_t)(n < PIECE_TOKENS ? (n ? n : 1) : PIECE_TOKENS);
  uint16_t *t = malloc(piece * sizeof *t), *b = malloc(piece * sizeof *b);
  int rc = t && b ? PG_OK
                  : pg_err_set(err, PG_E_NOMEM, bytes->pattern, PG_NO_OFFSET, "cannot allocate");
  for (uint64_t g0 = 0; g0 < n && rc == PG_OK; g0 += piece) {
    const uint64_t m = n - g0 < piece ? n - g0 : piece;
    rc = pg_shard_set_copy(tokens, g0, m, t, err);
    if (rc == PG_OK) rc = pg_shard_set_copy(bytes, g0, m, b, err);
    for (uint64_t i = 0; i < m && rc == PG_OK; i++) {
      if (t[i] != PG_BOS_ID || b[i] == 0) continue;
      const uint64_t g = g0 + i;
      const size_t bk = file_of(bytes, g);
      const uint64_t bi = g - bytes->files[bk].first;
      rc = pg_err_set(err, PG_E_MALFORMED, bytes->shards[bk]->name,
                      PG_SHARD_HEADER_BYTES + 2 * bi,
                      "entry %llu (global index %llu) is %u but token %llu is a BOS, whose "
                      "entry must be 0",
                      (unsigned long long)bi, (unsigned long long)g, (unsigned)b[i],
                      (unsigned long long)g);
    }
  }
  free(t);
  free(b);
  return rc;
}

int pg_sidecar_sum(const pg_shard_set *bytes, uint64_t start, uint64_t n, uint64_t *sum,
                   pg_err *err) {
  PG_FAIL_IF(!sum, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no output");
  uint64_t s = 0;
  PG_TRY(walk(bytes, start, n, piece_sum, &s, err));
  *sum = s;
  return PG_OK;
}

/* ---- the validation stream ---- */

void pg_val_data_free(pg_val_data *v) {
  if (!v) return;
  pg_shard_set_free(v->set);
  pg_shard_set_free(v->bset);
  free(v->tok);
  free(v->bytes);
  memset(v, 0, sizeof *v);
}

int pg_val_data_open(pg_val_data *v, const char *pattern, const char *bytes_pattern,
                     uint32_t vocab, uint64_t max_tokens, pg_err *err) {
  PG_FAIL_IF(!v, err, PG_E_ARG, pattern, PG_NO_OFFSET, "no output");
  memset(v, 0, sizeof *v);
  int rc = pg_shard_set_open_ex(&v->set, pattern, PG_SHARD_SKIP_BYTES, err);
  if (!rc) rc = pg_shard_set_check_vocab(v->set, vocab, err);
  if (!rc) {
    v->available = v->set->count;
    v->n = max_tokens && max_tokens < v->available ? max_tokens : v->available;
    /* n <= 2^31 - 1 per file times the files mapped: bounded by the bytes on disk */
    if (v->n > SIZE_MAX / sizeof *v->tok)
      rc = pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "cannot hold %llu tokens",
                      (unsigned long long)v->n);
  }
  if (!rc && !(v->tok = malloc((size_t)(v->n ? v->n : 1) * sizeof *v->tok)))
    rc = pg_err_set(err, PG_E_NOMEM, pattern, PG_NO_OFFSET, "cannot hold %llu tokens",
                    (unsigned long long)v->n);
  if (!rc) rc = pg_shard_set_copy_i32(v->set, 0, v->n, v->tok, err);
  if (!rc && bytes_pattern) {
    rc = pg_sidecar_open(&v->bset, bytes_pattern, v->set, err);
    if (!rc) rc = pg_sidecar_check_bos(v->bset, v->set, err);
    if (!rc && !(v->bytes = malloc((size_t)(v->n ? v->n : 1) * sizeof *v->bytes)))
      rc = pg_err_set(err, PG_E_NOMEM, bytes_pattern, PG_NO_OFFSET,
                      "cannot hold %llu sidecar entries", (unsigned long long)v->n);
    if (!rc) rc = pg_shard_set_copy(v->bset, 0, v->n, v->bytes, err);
  }
  if (rc) pg_val_data_free(v);
  return rc;
}

/* ---- writing ---- */

#define WRITE_CHUNK 4096 /* tokens converted per write */

struct pg_shard_writer {
  char *dir, *prefix;
  uint64_t shard_tokens;
  uint64_t total;   /* tokens appended */
  uint64_t in_cur;  /* tokens in the open shard */
  int open;         /* a shard is being written (out is live) */
  int failed;       /* status of the first failure, 0 when none */
  int finished;
  pg_out out;
  char **paths; /* committed files */
  int *slots;   /* their entries in pg_io's registry of temporaries, until the writer is freed */
  size_t npaths, cap;
};

int pg_shard_writer_open(pg_shard_writer **out, const char *dir, const char *prefix,
                         uint64_t shard_tokens, pg_err *err) {
  PG_FAIL_IF(!out || !dir || !prefix || !*dir, err, PG_E_ARG, dir, PG_NO_OFFSET,
             "shard writer needs an output folder and a file-name prefix");
  *out = NULL;
  PG_FAIL_IF(shard_tokens == 0 || shard_tokens > PG_SHARD_MAX_TOKENS, err, PG_E_ARG, dir,
             PG_NO_OFFSET, "shard size %llu tokens is outside 1 .. 2^31-1",
             (unsigned long long)shard_tokens);
  PG_FAIL_IF(strchr(prefix, '/') != NULL, err, PG_E_ARG, dir, PG_NO_OFFSET,
             "file-name prefix \"%s\" contains '/'", prefix);
  pg_shard_writer *w = calloc(1, sizeof *w);
  if (w) {
    w->dir = dup_str(dir);
    w->prefix = dup_str(prefix);
  }
  if (!w || !w->dir || !w->prefix) {
    if (w) free(w->dir), free(w->prefix);
    free(w);
    return pg_err_set(err, PG_E_NOMEM, dir, PG_NO_OFFSET, "cannot allocate a shard writer");
  }
  w->shard_tokens = shard_tokens;
  *out = w;
  return PG_OK;
}

/* Drop an open shard: its temporary and the path reserved for it by writer_begin. */
static void writer_drop_open(pg_shard_writer *w) {
  if (w->open) {
    pg_out_abort(&w->out);
    free(w->paths[w->npaths]);
    w->open = 0;
  }
}

/* Remove every committed file and any open temporary. */
static void writer_remove(pg_shard_writer *w) {
  writer_drop_open(w);
  for (size_t k = 0; k < w->npaths; k++) {
    unlink(w->paths[k]);
    pg_tmp_forget(w->slots[k]);
    free(w->paths[k]);
  }
  w->npaths = 0;
}

static int writer_fail(pg_shard_writer *w, int rc) {
  writer_remove(w);
  w->failed = rc;
  return rc;
}

static int writer_begin(pg_shard_writer *w, pg_err *err) {
  const size_t idx = w->npaths;
  const int slash = w->dir[strlen(w->dir) - 1] != '/';
  const int need = snprintf(NULL, 0, "%s%s%s%06zu.bin", w->dir, slash ? "/" : "", w->prefix, idx);
  if (need < 0) return pg_err_set(err, PG_E_ARG, w->dir, PG_NO_OFFSET, "bad shard path");
  char *path = malloc((size_t)need + 1);
  if (!path) return pg_err_set(err, PG_E_NOMEM, w->dir, PG_NO_OFFSET, "cannot allocate a path");
  snprintf(path, (size_t)need + 1, "%s%s%s%06zu.bin", w->dir, slash ? "/" : "", w->prefix, idx);
  if (w->npaths == w->cap) {
    const size_t cap = w->cap ? 2 * w->cap : 16;
    char **p = realloc(w->paths, cap * sizeof *p);
    if (p) w->paths = p;
    int *sl = p ? realloc(w->slots, cap * sizeof *sl) : NULL;
    if (!sl) {
      free(path);
      return pg_err_set(err, PG_E_NOMEM, w->dir, PG_NO_OFFSET, "cannot allocate a path list");
    }
    w->slots = sl;
    w->cap = cap;
  }
  int rc = pg_out_begin(&w->out, path, err);
  if (rc != PG_OK) {
    free(path);
    return rc;
  }
  uint8_t hdr[PG_SHARD_HEADER_BYTES];
  memset(hdr, 0, sizeof hdr);
  pg_st32(hdr, PG_SHARD_MAGIC);
  pg_st32(hdr + 4, PG_SHARD_VERSION);
  pg_st32(hdr + 8, (uint32_t)w->shard_tokens); /* patched by finish when the shard is partial */
  rc = pg_out_write(&w->out, hdr, sizeof hdr, err);
  if (rc != PG_OK) {
    pg_out_abort(&w->out);
    free(path);
    return rc;
  }
  w->paths[w->npaths] = path; /* not counted in npaths until committed */
  w->open = 1;
  w->in_cur = 0;
  return PG_OK;
}

static int writer_commit(pg_shard_writer *w, pg_err *err) {
  char *path = w->paths[w->npaths];
  w->open = 0;
  const int rc = pg_out_commit(&w->out, err); /* aborts (removes the temporary) on failure */
  if (rc != PG_OK) {
    free(path);
    return rc;
  }
  /* complete, but part of an unfinished output: an interrupted program removes it too */
  w->slots[w->npaths] = pg_tmp_register(path, 0);
  w->npaths++;
  return PG_OK;
}

int pg_shard_writer_append(pg_shard_writer *w, const uint16_t *tok, size_t n, pg_err *err) {
  PG_FAIL_IF(!w || (!tok && n), err, PG_E_ARG, NULL, PG_NO_OFFSET, "no writer or tokens");
  PG_FAIL_IF(w->failed, err, w->failed, w->dir, PG_NO_OFFSET,
             "shard writer already failed; its files were removed");
  PG_FAIL_IF(w->finished, err, PG_E_ARG, w->dir, PG_NO_OFFSET, "shard writer already finished");
  uint8_t buf[2 * WRITE_CHUNK];
  while (n > 0) {
    int rc;
    if (!w->open && (rc = writer_begin(w, err)) != PG_OK) return writer_fail(w, rc);
    uint64_t room = w->shard_tokens - w->in_cur;
    uint64_t m = room < n ? room : (uint64_t)n;
    for (uint64_t done = 0; done < m;) {
      const size_t c = (size_t)(m - done < WRITE_CHUNK ? m - done : WRITE_CHUNK);
      for (size_t i = 0; i < c; i++) pg_st16(buf + 2 * i, tok[done + i]);
      if ((rc = pg_out_write(&w->out, buf, 2 * c, err)) != PG_OK) return writer_fail(w, rc);
      done += c;
    }
    tok += m;
    n -= (size_t)m;
    w->in_cur += m;
    w->total += m;
    if (w->in_cur == w->shard_tokens && (rc = writer_commit(w, err)) != PG_OK)
      return writer_fail(w, rc);
  }
  return PG_OK;
}

int pg_shard_writer_finish(pg_shard_writer *w, pg_err *err) {
  PG_FAIL_IF(!w, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no writer");
  PG_FAIL_IF(w->failed, err, w->failed, w->dir, PG_NO_OFFSET,
             "shard writer already failed; its files were removed");
  if (w->finished) return PG_OK;
  if (w->open) {
    /* the header says shard_tokens: write the real count of this last, partial shard */
    uint8_t cnt[4];
    pg_st32(cnt, (uint32_t)w->in_cur);
    if (fflush(w->out.fp) != 0 || fseek(w->out.fp, 8, SEEK_SET) != 0 ||
        fwrite(cnt, 1, 4, w->out.fp) != 4 || fseek(w->out.fp, 0, SEEK_END) != 0) {
      const int e = errno;
      const int rc = pg_err_set(err, PG_E_IO, w->paths[w->npaths], PG_NO_OFFSET,
                                "cannot write the token count: %s", strerror(e));
      return writer_fail(w, rc);
    }
    const int rc = writer_commit(w, err);
    if (rc != PG_OK) return writer_fail(w, rc);
  }
  w->finished = 1;
  return PG_OK;
}

uint64_t pg_shard_writer_count(const pg_shard_writer *w) { return w ? w->total : 0; }
size_t pg_shard_writer_nfiles(const pg_shard_writer *w) { return w ? w->npaths : 0; }
const char *pg_shard_writer_path(const pg_shard_writer *w, size_t k) {
  return w && k < w->npaths ? w->paths[k] : NULL;
}

static void writer_release(pg_shard_writer *w) {
  for (size_t k = 0; k < w->npaths; k++) {
    pg_tmp_forget(w->slots[k]);
    free(w->paths[k]);
  }
  free(w->paths);
  free(w->slots);
  free(w->dir);
  free(w->prefix);
  free(w);
}

void pg_shard_writer_abort(pg_shard_writer *w) {
  if (!w) return;
  writer_remove(w);
  writer_release(w);
}

void pg_shard_writer_free(pg_shard_writer *w) {
  if (!w) return;
  if (!w->finished) {
    pg_shard_writer_abort(w);
    return;
  }
  writer_release(w);
}

/* ---- validation trimming and documents ---- */

uint64_t pg_val_trim(uint64_t n, uint64_t seq_len) {
  if (n == 0 || seq_len == 0) return 0;
  const uint64_t usable = (n - 1) / seq_len * seq_len;
  return usable == 0 ? 0 : usable + 1;
}

int pg_docs_list(const uint16_t *tok, uint64_t n, const char *name, pg_doc **docs,
                 uint64_t *ndocs, uint64_t *skipped, pg_err *err) {
  PG_FAIL_IF(!docs || !ndocs || (!tok && n), err, PG_E_ARG, name, PG_NO_OFFSET,
             "no tokens or outputs");
  *docs = NULL;
  *ndocs = 0;
  if (skipped) *skipped = 0;
  uint64_t nb = 0, first = n;
  for (uint64_t i = 0; i < n; i++)
    if (tok[i] == PG_BOS_ID) {
      if (nb == 0) first = i;
      nb++;
    }
  if (nb == 0) {
    if (skipped) *skipped = n;
    return PG_OK;
  }
  /* only the last document can be short: a non-last one runs to and including the next BOS */
  if (tok[n - 1] == PG_BOS_ID)
    return pg_err_set(err, PG_E_MALFORMED, name, PG_NO_OFFSET,
                      "document %llu (the last) starts at token %llu with a BOS and has no other "
                      "token: length 1, and the challenge asserts every document has at least 2",
                      (unsigned long long)(nb - 1), (unsigned long long)(n - 1));
  if (nb > SIZE_MAX / sizeof(pg_doc))
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "too many documents");
  pg_doc *d = malloc((size_t)nb * sizeof *d);
  if (!d)
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate %llu documents",
                      (unsigned long long)nb);
  uint64_t k = 0, prev = first;
  for (uint64_t i = first + 1; i < n; i++)
    if (tok[i] == PG_BOS_ID) {
      d[k].start = prev;
      d[k].len = i - prev + 1; /* includes the next document's BOS */
      k++;
      prev = i;
    }
  d[k].start = prev;
  d[k].len = n - prev;
  *docs = d;
  *ndocs = nb;
  if (skipped) *skipped = first;
  return PG_OK;
}
