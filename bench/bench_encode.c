/* bench_encode: encoding throughput of pg_enc_* (src/data/encode, the SentencePiece library behind
 * a C API) at 1 and N threads, set against Debian's spm_encode run as a subprocess on the same
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
#include "bench_util.h"

#include "pgcorpus.h" /* the corpus of tests/test_encode.c */

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
