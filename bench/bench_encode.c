/* bench_encode: encoding throughput of pg_enc_* (src/encode, the SentencePiece library behind a
 * C API) at 1 and N threads, set against Debian's spm_encode run as a subprocess on the same
 * input, for the challenge tokenizers. The input is the deterministic multilingual corpus of
 * tests/test_encode.c (same generator, same seed), a few MB written to a temp file; it is encoded
 * line by line, as spm_encode does, and the id counts are checked against spm_encode's output.
 *
 * Exit status: 0 ok, 2 on any error. Progress on stderr; the table on stdout. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pg_encode.h"

static const char *PROG = "bench_encode";

enum { EXIT_OK = 0, EXIT_ERR = 2 };

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 1, 2)))
#endif
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", PROG);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(EXIT_ERR);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- the corpus: the generator of tests/test_encode.c, unchanged but for error handling ---- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->len + n + 1) c *= 2;
    b->p = realloc(b->p, c);
    if (!b->p) die("out of memory");
    b->cap = c;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_cp(sbuf *b, uint32_t c) {
  char u[4];
  size_t n;
  if (c < 0x80) {
    u[0] = (char)c;
    n = 1;
  } else if (c < 0x800) {
    u[0] = (char)(0xC0 | (c >> 6));
    u[1] = (char)(0x80 | (c & 0x3F));
    n = 2;
  } else if (c < 0x10000) {
    u[0] = (char)(0xE0 | (c >> 12));
    u[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    u[2] = (char)(0x80 | (c & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (c >> 18));
    u[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    u[3] = (char)(0x80 | (c & 0x3F));
    n = 4;
  }
  sb_put(b, u, n);
}

static uint64_t rnd(uint64_t *s) { /* splitmix64 */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t rnd_below(uint64_t *s, size_t n) { return (size_t)(rnd(s) % n); }
#define PICK(s, arr) ((arr)[rnd_below((s), sizeof(arr) / sizeof((arr)[0]))])

static const char *const kEnglish[] = {
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "be",
    "at", "by", "this", "have", "from", "or", "one", "had", "not", "but", "what", "all", "were",
    "when", "we", "there", "can", "an", "your", "which", "their", "said", "if", "do", "will",
    "each", "about", "how", "up", "out", "them", "then", "she", "many", "some", "so", "these",
    "would", "other", "into", "has", "more", "her", "two", "like", "him", "see", "time", "could",
    "no", "make", "than", "first", "been", "its", "who", "now", "people", "my", "made", "over",
    "did", "down", "only", "way", "find", "use", "may", "water", "long", "little", "very",
    "after", "words", "called", "just", "where", "most", "know", "government", "information",
    "university", "understanding", "responsibility", "parameter", "golf", "tokenizer",
    "compression", "international", "development", "environment", "relationship", "approximately",
    "don't", "it's", "we're", "o'clock", "e-mail", "well-known", "state-of-the-art", "COVID-19",
    "https://example.com/a/b?c=1&d=2", "user@example.org", "#hashtag", "@mention", "C++",
    "x86_64", "snake_case", "camelCase", "HTTP/1.1", "3.14159", "1,000,000", "$19.99", "50%",
    "(parenthesised)", "[bracketed]", "{braced}", "<tag>", "\"quoted\"", "'single'", "--",
    "...", "?!", ";", ":", "/", "\\", "|", "~", "`code`", "**bold**", "_under_", "#", "&amp;",
};
static const char *const kAccented[] = {
    "café", "naïve", "résumé", "façade", "Straße", "Ångström", "Œuvre", "œil", "ñandú",
    "Łódź", "český", "Ærøskøbing", "São Paulo", "Bogotá", "Zürich", "Kraków", "İstanbul",
    "déjà vu", "jalapeño", "Dvořák", "Čapek", "Þór", "ðæ", "ÿ", "Ÿ", "ǅ", "ǈ", "ı", "ß", "ẞ",
    "Mötley", "coöperate", "Škoda", "Ålesund", "Tromsø", "Hà Nội", "Việt Nam", "ễ", "Ɛ",
};
static const char *const kGreek[] = {
    "αλφάβητο", "Ελλάδα", "λόγος", "φιλοσοφία", "ΑΘΗΝΑ", "καλημέρα", "ψυχή", "ω", "Σίσυφος",
    "ΐ", "ς", "µ", "Ω", "ϐ", "ϑ", "ϕ", "ᾳ", "ἀρχή",
};
static const char *const kCyrillic[] = {
    "привет", "Москва", "язык", "ПРАВДА", "ёжик", "Ёлка", "україна", "ґанок", "беларусь",
    "српски", "Љубљана", "щи", "ъ", "ы", "Ӂ", "ѣ",
};
static const char *const kCJK[] = {
    "你好", "世界", "中华人民共和国", "日本語", "東京", "ひらがな", "カタカナ", "한국어", "서울",
    "漢字", "繁體字", "。", "、", "「引用」", "『書名』", "〜", "ー", "𠀋", "𪚲", "々", "〆",
    "가나다라마바사", "ㄱㄴㄷ", "ไทย", "ภาษา", "हिन्दी", "नमस्ते", "العربية", "مرحبا", "עברית",
    "שלום", "ქართული", "Հայերեն", "አማርኛ",
};
static const char *const kEmoji[] = {
    "😀", "😂", "👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🇯🇵", "❤️", "✨", "🎉", "🤖", "🧠", "⚽",
    "☃", "♥", "★", "☺️", "🏳️‍🌈", "🫠", "🐍", "🦀", "1️⃣", "©", "®",
};
/* Combining marks, in the decomposed form NFKC composes (or cannot). */
static const char *const kCombining[] = {
    "e\xCC\x81", "a\xCC\x88", "n\xCC\x83", "o\xCC\x82\xCC\x81", "A\xCC\x8A",
    "Z\xCD\x91\xCD\x92\xCC\x9F", "\xCC\x81", "x\xCC\xB6", "i\xCC\x87", "\xE0\xA4\x95\xE0\xA5\x8D",
    "\xE1\x84\x80\xE1\x85\xA1", "u\xCC\x88\xCC\x81", "q\xCC\xA3\xCC\x87",
};
/* Characters NFKC maps to something else. */
static const char *const kNfkc[] = {
    "ＡＢＣ", "ｆｕｌｌ", "１２３", "！", "？", "（全角）", "ﬁ", "ﬂ", "ﬀ", "ﬃ", "ﬆ", "x²", "³",
    "ⁿ", "H₂O", "½", "¼", "①", "⑳", "㎏", "㎞", "℃", "№", "™", "…", "Ⅻ", "ⅷ", "ｶﾀｶﾅ", "ﾞ",
    "ｱｲｳ", "\xC2\xA0", "\xE3\x80\x80", "\xE2\x80\x83", "\xE2\x80\x8B", "\xE2\x80\x8D", "\xEF\xBB\xBF",
    "\xE2\x80\xA8", "\xC2\xAD", "ŉ", "ſ", "Ǆ", "㍿", "㈱", "ℌ", "ℵ", "𝐀𝐁𝐂", "𝔘𝔫𝔦", "ｰ", "ﹰ",
    "ﺍﻟﻌﺮﺑﻴﺔ", "Å", "Ω", "‼", "⁉", "′", "″", "‐", "—", "“quotes”", "‘x’", "«»", "¨", "´",
};
/* Whitespace and control characters other than newline and NUL. */
static const char *const kSpace[] = {
    "\t", "  ", "   ", "\t\t", " \t ", "\r", "\x0B", "\x0C", "\x01", "\x1F", "\x7F",
    "\xC2\x85", "\xC2\x9F", "     ",
};

/* One random valid scalar value outside ASCII (no surrogates), most in the BMP. */
static uint32_t rnd_cp(uint64_t *s) {
  for (;;) {
    uint32_t c;
    switch (rnd_below(s, 4)) {
    case 0: c = 0x80 + (uint32_t)rnd_below(s, 0x800 - 0x80); break;
    case 1: c = 0x800 + (uint32_t)rnd_below(s, 0x10000 - 0x800); break;
    case 2: c = 0x4E00 + (uint32_t)rnd_below(s, 0x9FFF - 0x4E00); break;
    default: c = 0x10000 + (uint32_t)rnd_below(s, 0x110000 - 0x10000); break;
    }
    if (c < 0xD800 || c > 0xDFFF) return c;
  }
}

static void add_item(sbuf *b, uint64_t *s) {
  size_t r = rnd_below(s, 100);
  if (r < 50) {
    const char *w = PICK(s, kEnglish);
    size_t form = rnd_below(s, 30);
    if (form == 0) { /* UPPER */
      for (const char *p = w; *p; p++) {
        char c = (*p >= 'a' && *p <= 'z') ? (char)(*p - 32) : *p;
        sb_put(b, &c, 1);
      }
    } else if (form < 4 && w[0] >= 'a' && w[0] <= 'z') { /* Capitalised */
      char c = (char)(w[0] - 32);
      sb_put(b, &c, 1);
      sb_puts(b, w + 1);
    } else {
      sb_puts(b, w);
    }
  } else if (r < 58) {
    sb_puts(b, PICK(s, kAccented));
  } else if (r < 63) {
    sb_puts(b, PICK(s, kGreek));
  } else if (r < 68) {
    sb_puts(b, PICK(s, kCyrillic));
  } else if (r < 74) {
    sb_puts(b, PICK(s, kCJK));
  } else if (r < 77) {
    sb_puts(b, PICK(s, kEmoji));
  } else if (r < 80) {
    sb_puts(b, PICK(s, kCombining));
  } else if (r < 87) {
    sb_puts(b, PICK(s, kNfkc));
  } else if (r < 91) {
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)(rnd(s) % 100000000ull));
    sb_puts(b, num + rnd_below(s, 3) * (strlen(num) > 3));
  } else if (r < 95) {
    for (size_t k = 1 + rnd_below(s, 3); k > 0; k--) sb_cp(b, rnd_cp(s));
  } else {
    sb_puts(b, PICK(s, kSpace));
  }
}

/* At least min_bytes of text, lines ending in '\n', from seed. */
static char *make_corpus(uint64_t seed, size_t min_bytes, size_t *len) {
  sbuf b = {0};
  uint64_t s = seed;
  while (b.len < min_bytes) {
    size_t kind = rnd_below(&s, 100), target;
    if (kind < 6) target = 0; /* empty line */
    else if (kind < 20) target = 1 + rnd_below(&s, 20);
    else if (kind < 99) target = 20 + rnd_below(&s, 300);
    else target = 2000 + rnd_below(&s, 20000);
    if (target && rnd_below(&s, 10) == 0) sb_puts(&b, rnd_below(&s, 2) ? " " : "\t");
    size_t start = b.len;
    while (b.len - start < target) {
      add_item(&b, &s);
      size_t sep = rnd_below(&s, 100);
      if (sep < 75) sb_puts(&b, " ");
      else if (sep < 80) sb_puts(&b, ", ");
      else if (sep < 84) sb_puts(&b, ". ");
      else if (sep < 88) sb_puts(&b, "  ");
      else if (sep < 91) sb_puts(&b, "\t");
      else if (sep < 93) sb_puts(&b, " - ");
      /* else glued to the next item */
    }
    sb_puts(&b, "\n");
  }
  *len = b.len;
  return b.p;
}

/* ---- spm_encode as a subprocess ---------------------------------------------------------- */

/* Run spm_encode on `in` with stdout to `out`; 0 when it exited 0. */
static int run_spm_encode(const char *model, const char *in, const char *out) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) {
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fi = open("/dev/null", O_RDONLY);
    if (fo < 0 || fi < 0 || dup2(fi, 0) < 0 || dup2(fo, 1) < 0) _exit(126);
    close(fo);
    close(fi);
    execlp("spm_encode", "spm_encode", "--model", model, "--output_format=id", in, (char *)NULL);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die("waitpid: %s", strerror(errno));
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Number of ids in spm_encode's output (space-separated numbers, one line per input line). */
static size_t count_ids_in_file(const char *path, size_t *lines) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open %s: %s", path, strerror(errno));
  size_t n = 0, nl = 0;
  int c, prev = '\n';
  while ((c = getc(f)) != EOF) {
    if (c != ' ' && c != '\n' && (prev == ' ' || prev == '\n')) n++;
    if (c == '\n') nl++;
    prev = c;
  }
  fclose(f);
  *lines = nl;
  return n;
}

static int on_path(const char *prog) {
  const char *path = getenv("PATH");
  char buf[4096];
  while (path && *path) {
    size_t n = strcspn(path, ":");
    if (n > 0 && n + strlen(prog) + 2 < sizeof buf) {
      memcpy(buf, path, n);
      snprintf(buf + n, sizeof buf - n, "/%s", prog);
      if (access(buf, X_OK) == 0) return 1;
    }
    path += n;
    if (*path == ':') path++;
  }
  return 0;
}

/* ---- the benchmark ----------------------------------------------------------------------- */

typedef struct row {
  const char *model;
  const char *method;
  int threads;
  double secs;
  size_t ids;
} row;

static void usage(FILE *f) {
  fprintf(f,
          "usage: %s [--fixtures DIR] [--model PATH]... [--mb N] [--threads N] [--repeat N]\n"
          "\n"
          "Encoding throughput (MB/s of UTF-8 input, 1 MB = 10^6 bytes) of pg_enc_encode (one\n"
          "line at a time, 1 thread), pg_enc_encode_many (1 and N threads) and spm_encode as a\n"
          "subprocess (whole file, ids to a file), on the same generated multilingual corpus.\n"
          "\n"
          "  --fixtures DIR  take fineweb_1024_bpe.model and fineweb_8192_bpe.model from\n"
          "                  DIR/tokenizers (default ../shared/fixtures)\n"
          "  --model PATH    benchmark this model instead (repeatable)\n"
          "  --mb N          corpus size in MB (default 4)\n"
          "  --threads N     N for the threaded row (default: online CPUs)\n"
          "  --repeat N      timed runs per row, best kept, after one untimed warm-up (default 3)\n"
          "  --help          this text\n",
          PROG);
}

int main(int argc, char **argv) {
  const char *fixtures = "../shared/fixtures";
  const char *models[16];
  size_t n_models = 0;
  double mb = 4.0;
  int threads = 0, repeat = 3;
  static const struct option opts[] = {
      {"fixtures", required_argument, NULL, 'f'}, {"model", required_argument, NULL, 'm'},
      {"mb", required_argument, NULL, 's'},       {"threads", required_argument, NULL, 't'},
      {"repeat", required_argument, NULL, 'r'},   {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 'f': fixtures = optarg; break;
    case 'm':
      if (n_models == sizeof models / sizeof models[0]) die("too many --model");
      models[n_models++] = optarg;
      break;
    case 's': mb = atof(optarg); break;
    case 't': threads = atoi(optarg); break;
    case 'r': repeat = atoi(optarg); break;
    case 'h': usage(stdout); return EXIT_OK;
    default: usage(stderr); return EXIT_ERR;
    }
  }
  if (optind < argc) die("unexpected argument %s (see --help)", argv[optind]);
  if (!(mb > 0 && mb <= 4096) || repeat < 1 || threads < 0)
    die("bad --mb, --repeat or --threads (see --help)");
  if (!pg_enc_available()) die("this build has no SentencePiece encoder");
  if (threads == 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  static char defaults[2][4096];
  if (n_models == 0) {
    snprintf(defaults[0], sizeof defaults[0], "%s/tokenizers/fineweb_1024_bpe.model", fixtures);
    snprintf(defaults[1], sizeof defaults[1], "%s/tokenizers/fineweb_8192_bpe.model", fixtures);
    models[n_models++] = defaults[0];
    models[n_models++] = defaults[1];
  }
  int have_spm = on_path("spm_encode");
  if (!have_spm) fprintf(stderr, "%s: spm_encode not on PATH: no spm_encode rows\n", PROG);

  /* The corpus, in memory and in a temp file. */
  size_t len;
  char *corpus = make_corpus(0x70676F6C66ull, (size_t)(mb * 1e6), &len);
  char dir[] = "/tmp/pg_bench_encode.XXXXXX";
  if (!mkdtemp(dir)) die("cannot create a temporary folder: %s", strerror(errno));
  char in[128], out[128];
  snprintf(in, sizeof in, "%s/corpus.txt", dir);
  snprintf(out, sizeof out, "%s/ids.txt", dir);
  FILE *f = fopen(in, "wb");
  if (!f || fwrite(corpus, 1, len, f) != len || fclose(f) != 0) die("cannot write %s", in);
  size_t n_docs = 0;
  for (size_t i = 0; i < len; i++) n_docs += corpus[i] == '\n';
  pg_enc_doc *docs = malloc(n_docs * sizeof *docs);
  if (!docs) die("out of memory");
  for (size_t i = 0, a = 0, k = 0; i < len; i++)
    if (corpus[i] == '\n') {
      docs[k].text = corpus + a;
      docs[k++].len = i - a;
      a = i + 1;
    }
  fprintf(stderr, "%s: corpus %zu bytes, %zu lines\n", PROG, len, n_docs);

  row rows[16 * 5];
  size_t n_rows = 0;
  int status = EXIT_OK;
  for (size_t mi = 0; mi < n_models; mi++) {
    pg_enc *enc;
    pg_err err;
    if (pg_enc_open(&enc, models[mi], &err) != PG_OK) die("%s", err.msg);
    const char *name = strrchr(models[mi], '/') ? strrchr(models[mi], '/') + 1 : models[mi];
    fprintf(stderr, "%s: %s (vocabulary %zu)\n", PROG, name, pg_enc_vocab_size(enc));

    /* pg_enc_encode, line by line. */
    double best = 1e30;
    size_t ids_line = 0;
    for (int r = 0; r <= repeat; r++) {
      double t0 = now();
      size_t total = 0;
      for (size_t i = 0; i < n_docs; i++) {
        int32_t *ids;
        size_t n;
        if (pg_enc_encode(enc, docs[i].text, docs[i].len, &ids, &n, &err) != PG_OK)
          die("%s", err.msg);
        total += n;
        free(ids);
      }
      double dt = now() - t0;
      if (r > 0 && dt < best) best = dt;
      ids_line = total;
    }
    rows[n_rows++] = (row){name, "pg_enc_encode per line", 1, best, ids_line};

    /* pg_enc_encode_many at 1 and N threads. */
    const int tcounts[2] = {1, threads};
    for (int k = 0; k < (threads > 1 ? 2 : 1); k++) {
      best = 1e30;
      size_t total = 0;
      for (int r = 0; r <= repeat; r++) {
        int32_t *ids;
        size_t *offs;
        double t0 = now();
        if (pg_enc_encode_many(enc, docs, n_docs, tcounts[k], &ids, &total, &offs, &err) != PG_OK)
          die("%s", err.msg);
        double dt = now() - t0;
        free(ids);
        free(offs);
        if (r > 0 && dt < best) best = dt;
      }
      if (total != ids_line) die("%s: encode_many gave %zu ids, encode %zu", name, total, ids_line);
      rows[n_rows++] = (row){name, "pg_enc_encode_many", tcounts[k], best, total};
    }

    /* spm_encode on the file. */
    if (have_spm) {
      best = 1e30;
      for (int r = 0; r <= repeat; r++) {
        double t0 = now();
        if (run_spm_encode(models[mi], in, out) != 0) die("spm_encode failed on %s", in);
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
      }
      size_t lines;
      size_t spm_ids = count_ids_in_file(out, &lines);
      if (lines != n_docs || spm_ids != ids_line) {
        fprintf(stderr, "%s: %s: spm_encode printed %zu ids on %zu lines, we encoded %zu on %zu\n",
                PROG, name, spm_ids, lines, ids_line, n_docs);
        status = EXIT_ERR;
      }
      rows[n_rows++] = (row){name, "spm_encode (subprocess)", 1, best, spm_ids};
    }
    pg_enc_free(enc);
  }
  unlink(out);
  unlink(in);
  rmdir(dir);

  printf("corpus: %zu bytes (%.2f MB), %zu lines; best of %d runs\n\n", len, (double)len / 1e6,
         n_docs, repeat);
  printf("| %-28s | %-25s | %7s | %9s | %8s | %10s | %8s |\n", "model", "method", "threads",
         "ids", "seconds", "MB/s", "vs spm");
  printf("|------------------------------|---------------------------|--------:|----------:|"
         "---------:|-----------:|---------:|\n");
  for (size_t i = 0; i < n_rows; i++) {
    double spm = 0;
    for (size_t j = 0; j < n_rows; j++)
      if (rows[j].model == rows[i].model && strncmp(rows[j].method, "spm_encode", 10) == 0)
        spm = rows[j].secs;
    char vs[32] = "-";
    if (spm > 0) snprintf(vs, sizeof vs, "%.2fx", spm / rows[i].secs);
    printf("| %-28s | %-25s | %7d | %9zu | %8.3f | %10.2f | %8s |\n", rows[i].model,
           rows[i].method, rows[i].threads, rows[i].ids, rows[i].secs,
           (double)len / 1e6 / rows[i].secs, vs);
  }
  free(docs);
  free(corpus);
  return status;
}
