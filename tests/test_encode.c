/* test_encode.c: pg_enc_* (src/data/encode) against Debian's SentencePiece command-line tools as
 * the oracle: spm_encode for ids, spm_decode and spm_normalize for text, on real challenge
 * tokenizers from $PG_FIXTURES/tokenizers and a deterministic multilingual corpus generated here
 * (over 1 MB; nothing downloaded, nothing committed). Tests skip where the tools or the models are
 * absent. */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_encode.h"
#include "pg_io.h"
#include "pgtest.h"

/* ---- helpers: fixtures, files, subprocesses ---------------------------------------------- */

static const char *fixtures_dir(void) {
  const char *f = getenv("PG_FIXTURES");
  return f && *f ? f : "../shared/fixtures";
}

/* Path of a tokenizer fixture into buf; 1 when the file exists. */
static int model_path(char *buf, size_t cap, const char *name) {
  int k = snprintf(buf, cap, "%s/tokenizers/%s", fixtures_dir(), name);
  struct stat st;
  return k > 0 && (size_t)k < cap && stat(buf, &st) == 0 && S_ISREG(st.st_mode);
}

/* 1 when an executable of that name is on PATH. */
static int on_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path) return 0;
  char dir[4096];
  while (*path) {
    size_t n = strcspn(path, ":");
    if (n > 0 && n < sizeof dir - 64) {
      memcpy(dir, path, n);
      snprintf(dir + n, sizeof dir - n, "/%s", prog);
      if (access(dir, X_OK) == 0) return 1;
    }
    path += n;
    if (*path == ':') path++;
  }
  return 0;
}

/* Skip the current test unless the SentencePiece tools are installed and the model is there. */
#define NEED_ORACLE(buf, name)                                                          \
  do {                                                                                  \
    if (!on_path("spm_encode") || !on_path("spm_decode") || !on_path("spm_normalize"))  \
      cr_skip_test("spm_encode/spm_decode/spm_normalize not on PATH (apt sentencepiece)"); \
    if (!model_path((buf), sizeof(buf), (name)))                                        \
      cr_skip_test("fixture %s absent", (buf));                                         \
  } while (0)

#define NEED_MODEL(buf, name)                                                           \
  do {                                                                                  \
    if (!model_path((buf), sizeof(buf), (name))) cr_skip_test("fixture %s absent", (buf)); \
  } while (0)

static void write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  cr_assert_not_null(f, "cannot create %s", path);
  cr_assert_eq(fwrite(data, 1, len, f), len, "cannot write %s", path);
  cr_assert_eq(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f, "cannot open %s", path);
  size_t cap = 1 << 16, n = 0;
  char *b = malloc(cap + 1);
  cr_assert_not_null(b);
  size_t k;
  while ((k = fread(b + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      cap *= 2;
      b = realloc(b, cap + 1);
      cr_assert_not_null(b);
    }
  }
  fclose(f);
  b[n] = '\0';
  *len = n;
  return b;
}

/* Run argv[0] (found on PATH) with stdin from `in` and stdout to `out`; its exit status. */
static int run_tool(char *const argv[], const char *in, const char *out) {
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_neq(pid, -1, "fork: %s", strerror(errno));
  if (pid == 0) {
    int fi = open(in, O_RDONLY);
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fi < 0 || fo < 0 || dup2(fi, 0) < 0 || dup2(fo, 1) < 0) _exit(126);
    close(fi);
    close(fo);
    execvp(argv[0], argv);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) cr_assert_fail("waitpid: %s", strerror(errno));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---- the corpus: tests/pgcorpus.h ------------------------------------------------------ */

#include "pgcorpus.h"

/* ---- the oracle's id lines --------------------------------------------------------------- */

typedef struct idlines {
  int32_t *ids;   /* all ids */
  size_t *start;  /* line i is ids[start[i] .. start[i+1]) */
  size_t n_lines;
} idlines;

static void parse_idlines(const char *txt, size_t len, idlines *out) {
  size_t n_lines = 0, n_ids = 0;
  for (size_t i = 0; i < len; i++) n_lines += txt[i] == '\n';
  for (size_t i = 0; i < len; i++) n_ids += txt[i] != ' ' && txt[i] != '\n' &&
                                       (i == 0 || txt[i - 1] == ' ' || txt[i - 1] == '\n');
  out->ids = malloc((n_ids + 1) * sizeof(int32_t));
  out->start = malloc((n_lines + 1) * sizeof(size_t));
  cr_assert(out->ids && out->start);
  size_t line = 0, k = 0;
  out->start[0] = 0;
  const char *p = txt, *end = txt + len;
  while (p < end) {
    if (*p == '\n') {
      out->start[++line] = k;
      p++;
    } else if (*p == ' ') {
      p++;
    } else {
      char *e;
      long v = strtol(p, &e, 10);
      cr_assert(e > p && v >= 0 && v <= INT32_MAX, "oracle line %zu: bad id", line + 1);
      out->ids[k++] = (int32_t)v;
      p = e;
    }
  }
  cr_assert_eq(k, n_ids);
  out->n_lines = line;
}

static void free_idlines(idlines *l) {
  free(l->ids);
  free(l->start);
}

/* The corpus split at '\n' (without the newlines) as documents. */
static pg_enc_doc *split_lines(const char *txt, size_t len, size_t *n) {
  size_t cnt = 0;
  for (size_t i = 0; i < len; i++) cnt += txt[i] == '\n';
  pg_enc_doc *d = malloc((cnt + 1) * sizeof *d);
  cr_assert_not_null(d);
  size_t k = 0, a = 0;
  for (size_t i = 0; i < len; i++)
    if (txt[i] == '\n') {
      d[k].text = txt + a;
      d[k].len = i - a;
      k++;
      a = i + 1;
    }
  *n = k;
  return d;
}

static void show_ids(char *buf, size_t cap, const int32_t *ids, size_t n) {
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n && o + 16 < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%d", i ? " " : "", ids[i]);
  if (o + 16 >= cap) snprintf(buf + o, cap - o, " ...");
}

/* Compare ids of document i with the oracle's line i; fail with the first mismatch. */
static void expect_line(const idlines *want, size_t i, const int32_t *got, size_t n_got,
                        const pg_enc_doc *doc, const char *what) {
  const int32_t *w = want->ids + want->start[i];
  size_t n_w = want->start[i + 1] - want->start[i];
  if (n_w == n_got && (n_got == 0 || memcmp(w, got, n_got * sizeof(int32_t)) == 0)) return;
  size_t j = 0;
  while (j < n_w && j < n_got && w[j] == got[j]) j++;
  char a[400], b[400], t[200];
  show_ids(a, sizeof a, w, n_w);
  show_ids(b, sizeof b, got, n_got);
  snprintf(t, sizeof t, "%.*s", (int)(doc->len < 120 ? doc->len : 120), doc->text);
  cr_assert_fail("%s: line %zu differs at id %zu (spm_encode %zu ids, ours %zu)\n  text: %s\n"
                 "  spm_encode: %s\n  ours:       %s",
                 what, i + 1, j, n_w, n_got, t, a, b);
}

/* ---- the corpus against spm_encode (and spm_decode) -------------------------------------- */

#define CORPUS_SEED 0x70676F6C66ull /* "pgolf" */
#define CORPUS_BYTES (1200u * 1000u)

static void corpus_vs_oracle(const char *model_name) {
  char model[1024];
  NEED_ORACLE(model, model_name);
  char dir[64], in[128], ids_out[128], dec_out[128], devnull[] = "/dev/null";
  pgtest_mkdtemp(dir, "pg_test_encode");
  snprintf(in, sizeof in, "%s/corpus.txt", dir);
  snprintf(ids_out, sizeof ids_out, "%s/ids.txt", dir);
  snprintf(dec_out, sizeof dec_out, "%s/decoded.txt", dir);

  size_t len;
  char *corpus = make_corpus(CORPUS_SEED, CORPUS_BYTES, &len);
  write_file(in, corpus, len);
  char *enc_argv[] = {"spm_encode", "--model", model, "--output_format=id", in, NULL};
  cr_assert_eq(run_tool(enc_argv, devnull, ids_out), 0, "spm_encode failed");
  size_t olen;
  char *otxt = read_file(ids_out, &olen);
  idlines want;
  parse_idlines(otxt, olen, &want);
  free(otxt);

  size_t n_docs;
  pg_enc_doc *docs = split_lines(corpus, len, &n_docs);
  cr_assert_eq(want.n_lines, n_docs, "spm_encode printed %zu lines for %zu input lines",
               want.n_lines, n_docs);

  pg_enc *enc = NULL;
  pg_err err;
  cr_assert_eq(pg_enc_open(&enc, model, &err), PG_OK, "%s", err.msg);

  /* One line at a time. */
  size_t n_ids_total = 0;
  for (size_t i = 0; i < n_docs; i++) {
    int32_t *ids = NULL;
    size_t n = 0;
    cr_assert_eq(pg_enc_encode(enc, docs[i].text, docs[i].len, &ids, &n, &err), PG_OK,
                 "line %zu: %s", i + 1, err.msg);
    cr_assert_not_null(ids);
    expect_line(&want, i, ids, n, &docs[i], "pg_enc_encode");
    n_ids_total += n;
    free(ids);
  }

  /* The batch API at several thread counts: the same ids. */
  const int counts[] = {1, 3, 0};
  for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
    int32_t *all = NULL;
    size_t n_all = 0, *offs = NULL;
    cr_assert_eq(pg_enc_encode_many(enc, docs, n_docs, counts[t], &all, &n_all, &offs, &err),
                 PG_OK, "%s", err.msg);
    cr_assert_eq(offs[0], 0u);
    cr_assert_eq(n_all, n_ids_total);
    cr_assert_eq(offs[n_docs], n_all);
    char what[64];
    snprintf(what, sizeof what, "pg_enc_encode_many(%d threads)", counts[t]);
    for (size_t i = 0; i < n_docs; i++)
      expect_line(&want, i, all + offs[i], offs[i + 1] - offs[i], &docs[i], what);
    free(all);
    free(offs);
  }

  /* Decoding the oracle's ids: ours against spm_decode, line by line. */
  char *dec_argv[] = {"spm_decode", "--model", model, "--input_format=id", ids_out, NULL};
  cr_assert_eq(run_tool(dec_argv, devnull, dec_out), 0, "spm_decode failed");
  size_t dlen;
  char *dtxt = read_file(dec_out, &dlen);
  size_t n_dec;
  pg_enc_doc *dec_lines = split_lines(dtxt, dlen, &n_dec);
  cr_assert_eq(n_dec, n_docs, "spm_decode printed %zu lines for %zu", n_dec, n_docs);
  size_t dec_bytes = 0;
  for (size_t i = 0; i < n_docs; i++) {
    char *text = NULL;
    size_t tl = 0;
    cr_assert_eq(pg_enc_decode(enc, want.ids + want.start[i], want.start[i + 1] - want.start[i],
                               &text, &tl, &err),
                 PG_OK, "line %zu: %s", i + 1, err.msg);
    cr_assert(tl == dec_lines[i].len && memcmp(text, dec_lines[i].text, tl) == 0,
              "decode: line %zu differs from spm_decode:\n  spm_decode: %.*s\n  ours:       %s",
              i + 1, (int)dec_lines[i].len, dec_lines[i].text, text);
    cr_assert_eq(strlen(text), tl);
    dec_bytes += tl;
    free(text);
  }
  cr_log_info("%s: %zu lines, %zu bytes, %zu ids equal to spm_encode (1, 3, all threads); "
              "%zu decoded bytes equal to spm_decode",
              model_name, n_docs, len, n_ids_total, dec_bytes);

  free(dec_lines);
  free(dtxt);
  free(docs);
  free_idlines(&want);
  free(corpus);
  pg_enc_free(enc);
  pgtest_rm_rf(dir);
}

Test(corpus, sp8192) { corpus_vs_oracle("fineweb_8192_bpe.model"); }
Test(corpus, sp1024) { corpus_vs_oracle("fineweb_1024_bpe.model"); }
Test(corpus, sp2048) { corpus_vs_oracle("fineweb_2048_bpe.model"); }
Test(corpus, sp4096) { corpus_vs_oracle("fineweb_4096_bpe.model"); }
Test(corpus, sp8192_caseops) {
  corpus_vs_oracle("fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model");
}

/* The generator itself: deterministic, big enough, valid UTF-8, and really multilingual. */
Test(corpus, generator) {
  size_t a_len, b_len;
  char *a = make_corpus(CORPUS_SEED, CORPUS_BYTES, &a_len);
  char *b = make_corpus(CORPUS_SEED, CORPUS_BYTES, &b_len);
  cr_assert(a_len >= CORPUS_BYTES && a_len == b_len && memcmp(a, b, a_len) == 0);
  cr_assert_eq(a[a_len - 1], '\n');
  cr_assert_eq(memchr(a, '\0', a_len), NULL);
  size_t bad;
  cr_assert(pg_utf8_valid((const uint8_t *)a, a_len, &bad), "invalid UTF-8 at %zu", bad);
  const char *must[] = {"é", "α", "я", "你", "😀", "\xCC\x81", "ｆ", "ﬁ", "²", "\t", "  "};
  for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
    cr_assert_not_null(strstr(a, must[i]), "corpus lacks %s", must[i]);
  size_t non_ascii = 0;
  for (size_t i = 0; i < a_len; i++) non_ascii += (unsigned char)a[i] >= 0x80;
  cr_assert_gt(non_ascii, a_len / 10);
  free(a);
  free(b);
}

/* ---- decode(encode(x)) is SentencePiece's normalized text -------------------------------- */

static void roundtrip_vs_normalize(const char *model_name, const char *const *cases, size_t n) {
  char model[1024];
  NEED_ORACLE(model, model_name);
  char dir[64], in[128], out[128], devnull[] = "/dev/null";
  pgtest_mkdtemp(dir, "pg_test_encode");
  snprintf(in, sizeof in, "%s/cases.txt", dir);
  snprintf(out, sizeof out, "%s/normalized.txt", dir);
  sbuf b = {0};
  for (size_t i = 0; i < n; i++) {
    sb_puts(&b, cases[i]);
    sb_puts(&b, "\n");
  }
  write_file(in, b.p, b.len);
  char *argv[] = {"spm_normalize", "--model", model, in, NULL};
  cr_assert_eq(run_tool(argv, devnull, out), 0, "spm_normalize failed");
  size_t nl;
  char *norm = read_file(out, &nl);
  size_t n_lines;
  pg_enc_doc *lines = split_lines(norm, nl, &n_lines);
  cr_assert_eq(n_lines, n);

  pg_enc *enc;
  pg_err err;
  cr_assert_eq(pg_enc_open(&enc, model, &err), PG_OK, "%s", err.msg);
  for (size_t i = 0; i < n; i++) {
    int32_t *ids;
    size_t k;
    cr_assert_eq(pg_enc_encode(enc, cases[i], strlen(cases[i]), &ids, &k, &err), PG_OK, "%s",
                 err.msg);
    char *text;
    size_t tl;
    cr_assert_eq(pg_enc_decode(enc, ids, k, &text, &tl, &err), PG_OK, "%s", err.msg);
    cr_assert(tl == lines[i].len && memcmp(text, lines[i].text, tl) == 0,
              "case %zu [%s]: decode(encode) = [%s], spm_normalize = [%.*s]", i, cases[i], text,
              (int)lines[i].len, lines[i].text);
    free(text);
    free(ids);
  }
  pg_enc_free(enc);
  free(lines);
  free(norm);
  free(b.p);
  pgtest_rm_rf(dir);
}

Test(roundtrip, sp8192_normalized) {
  /* sp8192 has byte fallback: every character comes back (normalized). */
  static const char *const cases[] = {
      "Hello world",
      "  leading and   inner   spaces, trailing  ",
      "tab\tseparated\tvalues",
      "ﬁne ﬂour ＦＵＬＬ ｗｉｄｔｈ x² H₂O ½ ① ㎏ ™",
      "e\xCC\x81 a\xCC\x88 n\xCC\x83 — combining marks compose",
      "Ελληνικά, русский, 中文, 日本語, 한국어, हिन्दी, العربية",
      "emoji 😀👍🏽👨‍👩‍👧🇫🇷 and 𠀋 outside the BMP",
      "controls\x01\x1F\x7F and \r carriage",
      "",
  };
  roundtrip_vs_normalize("fineweb_8192_bpe.model", cases, sizeof cases / sizeof cases[0]);
}

Test(roundtrip, sp1024_normalized) {
  /* sp1024 has no byte fallback: only text its pieces cover comes back, so ASCII here. */
  static const char *const cases[] = {
      "The quick brown fox jumps over the lazy dog.",
      "   spaces    everywhere   ",
      "numbers 0123456789 and punctuation !?.,;:()",
      "ﬁne ＡＢＣ",
  };
  roundtrip_vs_normalize("fineweb_1024_bpe.model", cases, sizeof cases / sizeof cases[0]);
}

/* ---- API behaviour without the oracle ---------------------------------------------------- */

Test(api, open_vocab_and_empty) {
  char m8[1024], m1[1024];
  NEED_MODEL(m8, "fineweb_8192_bpe.model");
  NEED_MODEL(m1, "fineweb_1024_bpe.model");
  cr_assert_eq(pg_enc_available(), 1);
  pg_enc *a, *b;
  pg_err err;
  cr_assert_eq(pg_enc_open(&a, m8, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_enc_open(&b, m1, &err), PG_OK, "%s", err.msg);
  cr_assert_eq(pg_enc_vocab_size(a), 8192u);
  cr_assert_eq(pg_enc_vocab_size(b), 1024u);
  cr_assert_str_eq(pg_enc_model_path(a), m8);
  cr_assert(pg_enc_pad_id(a) == 0 && pg_enc_bos_id(a) == 1 && pg_enc_eos_id(a) == 2 &&
            pg_enc_unk_id(a) == 3);
  cr_assert(pg_enc_pad_id(b) == 0 && pg_enc_bos_id(b) == 1 && pg_enc_eos_id(b) == 2 &&
            pg_enc_unk_id(b) == 3);
  int32_t *ids = NULL;
  size_t n = 99;
  cr_assert_eq(pg_enc_encode(a, "", 0, &ids, &n, &err), PG_OK, "%s", err.msg);
  cr_assert_not_null(ids);
  cr_assert_eq(n, 0u);
  free(ids);
  cr_assert_eq(pg_enc_encode(a, NULL, 0, &ids, &n, &err), PG_OK, "%s", err.msg);
  free(ids);
  /* No BOS/EOS: "a" is not wrapped in specials. */
  cr_assert_eq(pg_enc_encode(a, "a", 1, &ids, &n, &err), PG_OK, "%s", err.msg);
  cr_assert_geq(n, 1u);
  for (size_t i = 0; i < n; i++) cr_assert(ids[i] > 3, "special id %d in the output", ids[i]);
  free(ids);
  /* Length, not NUL termination, bounds the text. */
  int32_t *x, *y;
  size_t nx, ny;
  cr_assert_eq(pg_enc_encode(a, "hello world!!!", 11, &x, &nx, &err), PG_OK);
  cr_assert_eq(pg_enc_encode(a, "hello world", 11, &y, &ny, &err), PG_OK);
  cr_assert(nx == ny && memcmp(x, y, nx * sizeof *x) == 0);
  free(x);
  free(y);
  char *t;
  size_t tl = 7;
  cr_assert_eq(pg_enc_decode(a, NULL, 0, &t, &tl, &err), PG_OK, "%s", err.msg);
  cr_assert_str_eq(t, "");
  cr_assert_eq(tl, 0u);
  free(t);
  /* One pg_enc serves several models' worth of calls independently. */
  cr_assert_eq(pg_enc_encode(b, "hello", 5, &ids, &n, &err), PG_OK);
  for (size_t i = 0; i < n; i++) cr_assert_lt(ids[i], 1024);
  free(ids);
  pg_enc_free(a);
  pg_enc_free(b);
  pg_enc_free(NULL);
}

Test(api, invalid_utf8) {
  char m[1024];
  NEED_MODEL(m, "fineweb_8192_bpe.model");
  pg_enc *enc;
  pg_err err;
  cr_assert_eq(pg_enc_open(&enc, m, &err), PG_OK, "%s", err.msg);
  static const struct {
    const char *s;
    size_t off;
  } bad[] = {
      {"\xFF", 0},                        /* never valid */
      {"abc\xC3", 3},                     /* truncated */
      {"ok \xC0\xAF", 3},                 /* overlong '/' */
      {"x\xED\xA0\x80y", 1},              /* surrogate U+D800 */
      {"\xF4\x90\x80\x80", 0},            /* above U+10FFFF */
      {"caf\xC3\xA9 \x80", 6},            /* stray continuation after valid text */
      {"\xE2\x82", 0},                    /* cut three-byte sequence */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int32_t *ids = (int32_t *)&err; /* must be reset */
    size_t n = 5;
    pg_err_clear(&err);
    int rc = pg_enc_encode(enc, bad[i].s, strlen(bad[i].s), &ids, &n, &err);
    cr_assert_eq(rc, PG_E_UTF8, "case %zu: status %d (%s)", i, rc, err.msg);
    cr_assert_eq(err.status, PG_E_UTF8);
    cr_assert_null(ids);
    cr_assert_eq(n, 0u);
    char want[64];
    snprintf(want, sizeof want, "text offset %zu", bad[i].off);
    cr_assert_not_null(strstr(err.msg, want), "case %zu: [%s] lacks [%s]", i, err.msg, want);
    cr_assert_not_null(strstr(err.msg, m), "the message names the model: %s", err.msg);
    cr_assert_null(strchr(err.msg, '\n'));
  }
  pg_enc_free(enc);
}

Test(api, missing_model) {
  pg_enc *enc = (pg_enc *)&enc;
  pg_err err;
  const char *p = "/nonexistent/pgolf/no_such_tokenizer.model";
  cr_assert_eq(pg_enc_open(&enc, p, &err), PG_E_NOT_FOUND, "%s", err.msg);
  cr_assert_null(enc);
  cr_assert_not_null(strstr(err.msg, p), "%s", err.msg);
  cr_assert_eq(pg_enc_open(&enc, NULL, &err), PG_E_ARG);
  cr_assert_eq(pg_enc_open(NULL, p, &err), PG_E_ARG);
  /* A folder is not a model file. */
  cr_assert_eq(pg_enc_open(&enc, "/tmp", &err), PG_E_IO, "%s", err.msg);
  cr_assert_null(enc);
}

Test(api, corrupt_model) {
  char m[1024];
  NEED_MODEL(m, "fineweb_8192_bpe.model");
  size_t len;
  char *model = read_file(m, &len);
  cr_assert_gt(len, 1000u);
  char dir[64], p[128];
  pgtest_mkdtemp(dir, "pg_test_encode");
  snprintf(p, sizeof p, "%s/bad.model", dir);
  pg_err err;
  pg_enc *enc;

  /* Text, a truncated model, random bytes, an empty file. */
  const char *text = "this is not a protobuf\n";
  write_file(p, text, strlen(text));
  cr_assert_eq(pg_enc_open(&enc, p, &err), PG_E_ENCODER, "%s", err.msg);
  cr_assert_null(enc);
  cr_assert_not_null(strstr(err.msg, p), "%s", err.msg);
  cr_assert_null(strchr(err.msg, '\n'));

  write_file(p, model, len / 2);
  cr_assert_eq(pg_enc_open(&enc, p, &err), PG_E_ENCODER, "%s", err.msg);
  cr_assert_not_null(strstr(err.msg, p), "%s", err.msg);

  uint64_t s = 42;
  for (size_t i = 0; i < len; i++) model[i] = (char)rnd(&s);
  write_file(p, model, len);
  cr_assert_eq(pg_enc_open(&enc, p, &err), PG_E_ENCODER, "%s", err.msg);

  write_file(p, "", 0);
  cr_assert_eq(pg_enc_open(&enc, p, &err), PG_E_ENCODER, "%s", err.msg);
  cr_assert_null(enc);

  free(model);
  pgtest_rm_rf(dir);
}

Test(api, decode_range) {
  char m[1024];
  NEED_MODEL(m, "fineweb_1024_bpe.model");
  pg_enc *enc;
  pg_err err;
  cr_assert_eq(pg_enc_open(&enc, m, &err), PG_OK, "%s", err.msg);
  char *t = (char *)&err;
  size_t tl;
  int32_t ids[] = {100, 200, 1024};
  cr_assert_eq(pg_enc_decode(enc, ids, 3, &t, &tl, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
  cr_assert_null(t);
  cr_assert_not_null(strstr(err.msg, "index 2"), "%s", err.msg);
  ids[2] = -1;
  cr_assert_eq(pg_enc_decode(enc, ids, 3, &t, &tl, &err), PG_E_TOKEN_RANGE, "%s", err.msg);
  ids[2] = 1023;
  cr_assert_eq(pg_enc_decode(enc, ids, 3, &t, &tl, &err), PG_OK, "%s", err.msg);
  free(t);
  pg_enc_free(enc);
}

/* pg_enc_encode_many: the same result, and the same error, at any thread count. */
Test(api, many_thread_independence) {
  char m[1024];
  NEED_MODEL(m, "fineweb_8192_bpe.model");
  pg_enc *enc;
  pg_err err;
  cr_assert_eq(pg_enc_open(&enc, m, &err), PG_OK, "%s", err.msg);
  size_t len;
  char *corpus = make_corpus(7, 300000, &len);
  size_t n_docs;
  pg_enc_doc *docs = split_lines(corpus, len, &n_docs);
  cr_assert_gt(n_docs, 100u);

  int32_t *ref = NULL;
  size_t n_ref = 0, *ref_off = NULL;
  cr_assert_eq(pg_enc_encode_many(enc, docs, n_docs, 1, &ref, &n_ref, &ref_off, &err), PG_OK,
               "%s", err.msg);
  const int counts[] = {2, 3, 4, 7, 16, 0};
  for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
    int32_t *ids;
    size_t n, *off;
    cr_assert_eq(pg_enc_encode_many(enc, docs, n_docs, counts[t], &ids, &n, &off, &err), PG_OK,
                 "%s", err.msg);
    cr_assert_eq(n, n_ref, "%d threads", counts[t]);
    cr_assert(memcmp(off, ref_off, (n_docs + 1) * sizeof *off) == 0, "%d threads", counts[t]);
    cr_assert(memcmp(ids, ref, n * sizeof *ids) == 0, "%d threads", counts[t]);
    free(ids);
    free(off);
  }
  /* Each document alone gives the same ids as in the batch. */
  for (size_t i = 0; i < n_docs; i += 37) {
    int32_t *ids;
    size_t n;
    cr_assert_eq(pg_enc_encode(enc, docs[i].text, docs[i].len, &ids, &n, &err), PG_OK);
    cr_assert_eq(n, ref_off[i + 1] - ref_off[i]);
    cr_assert(n == 0 || memcmp(ids, ref + ref_off[i], n * sizeof *ids) == 0);
    free(ids);
  }
  free(ref);
  free(ref_off);

  /* Zero documents. */
  int32_t *ids;
  size_t n, *off;
  cr_assert_eq(pg_enc_encode_many(enc, NULL, 0, 4, &ids, &n, &off, &err), PG_OK, "%s", err.msg);
  cr_assert(ids && off && n == 0 && off[0] == 0);
  free(ids);
  free(off);

  /* Two bad documents: the lower one is reported, whatever the thread count. */
  static const char bad1[] = "fine text then \xFF";
  static const char bad2[] = "\xC3";
  docs[n_docs / 3].text = bad1;
  docs[n_docs / 3].len = sizeof bad1 - 1;
  docs[n_docs / 2].text = bad2;
  docs[n_docs / 2].len = 1;
  char want[128];
  snprintf(want, sizeof want, "text offset %zu (document %zu)", sizeof bad1 - 2, n_docs / 3);
  for (size_t t = 0; t < sizeof counts / sizeof counts[0]; t++) {
    ids = (int32_t *)&err;
    off = (size_t *)&err;
    n = 3;
    int rc = pg_enc_encode_many(enc, docs, n_docs, counts[t], &ids, &n, &off, &err);
    cr_assert_eq(rc, PG_E_UTF8, "%d threads: %d %s", counts[t], rc, err.msg);
    cr_assert_eq(err.status, PG_E_UTF8);
    cr_assert_not_null(strstr(err.msg, want), "%d threads: [%s] lacks [%s]", counts[t], err.msg,
                       want);
    cr_assert(ids == NULL && off == NULL && n == 0);
  }
  cr_assert_eq(pg_enc_encode_many(enc, docs, n_docs, -1, &ids, &n, &off, &err), PG_E_ARG);
  free(docs);
  free(corpus);
  pg_enc_free(enc);
}
