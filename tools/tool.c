/* tool.c: shared helpers of the pgolf commands, and what every command sets up before main:
 * remove live temporaries when interrupted, fail (exit 2) when standard output was not written. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* program_invocation_short_name */
#endif
#include "tool.h"

#include "pg_io.h"
#include "pg_model.h"
#include "pg_threads.h"

#include <errno.h>
#include <glob.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* SIGINT, SIGTERM, SIGHUP, and SIGXFSZ (a file-size limit hit mid-write): remove the temporaries
 * of unfinished outputs (pg_io.h's registry), then die of the same signal, so the parent sees what
 * happened. */
static void on_fatal_signal(int sig) {
  pg_tmp_remove_all();
  raise(sig); /* the handler was reset (SA_RESETHAND): delivered when this returns */
}

/* A report that did not reach standard output (a full disk, a closed pipe) is a failed command. */
static void check_stdout(void) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    const int e = errno;
    fprintf(stderr, "%s: standard output: write failed: %s\n", program_invocation_short_name,
            e ? strerror(e) : "stream error");
    _exit(PG_EXIT_ERROR);
  }
}

/* Runs before main in every command (they all link this file). A signal the caller ignores
 * (nohup's SIGHUP) stays ignored. */
__attribute__((constructor)) static void pg_tool_init(void) {
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGXFSZ};
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
    struct sigaction old, sa;
    if (sigaction(sigs[i], NULL, &old) != 0 || old.sa_handler == SIG_IGN) continue;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_fatal_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(sigs[i], &sa, NULL);
  }
  atexit(check_stdout);
}

/* The folder of a path that may not exist yet, resolved, and the last component: two paths whose
 * files do not exist name the same future file when these agree. */
static int future_name(const char *path, char *buf, size_t cap) {
  char a[4096], b[4096];
  if (strlen(path) >= sizeof a) return -1;
  strcpy(a, path);
  strcpy(b, path);
  char real[4096];
  if (!realpath(dirname(a), real)) return -1;
  int k = snprintf(buf, cap, "%s/%s", real, basename(b));
  return k < 0 || (size_t)k >= cap ? -1 : 0;
}

static int same_target(const char *a, const char *b) {
  struct stat sa, sb;
  const int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  if (ea != eb) return 0;
  char na[8300], nb[8300];
  if (future_name(a, na, sizeof na) || future_name(b, nb, sizeof nb)) return !strcmp(a, b);
  return !strcmp(na, nb);
}

int pg_tool_check_outputs(const char *prog, const char *const *outs, size_t nout,
                          const char *const *ins, size_t nin) {
  pg_err err;
  for (size_t i = 0; i < nout; i++) {
    if (!outs[i]) continue;
    for (size_t j = i + 1; j < nout; j++)
      if (outs[j] && same_target(outs[i], outs[j])) {
        pg_err_set(&err, PG_E_EXISTS, outs[j], PG_NO_OFFSET,
                   "names the same file as the output %s; refusing to write it twice", outs[i]);
        return pg_tool_fail(prog, &err);
      }
    struct stat so;
    if (stat(outs[i], &so) != 0) continue; /* not there yet: no input can be it */
    for (size_t j = 0; j < nin; j++) {
      if (!ins[j]) continue;
      /* every file a pattern matches is an input; a pattern that matches nothing is its name */
      glob_t g;
      if (glob(ins[j], GLOB_NOCHECK | GLOB_NOESCAPE, NULL, &g) != 0) continue;
      for (size_t k = 0; k < g.gl_pathc; k++) {
        struct stat si;
        if (stat(g.gl_pathv[k], &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
          pg_err_set(&err, PG_E_EXISTS, outs[i], PG_NO_OFFSET,
                     "is the input %s; refusing to overwrite it", g.gl_pathv[k]);
          globfree(&g);
          return pg_tool_fail(prog, &err);
        }
      }
      globfree(&g);
    }
  }
  return PG_EXIT_OK;
}

int pg_tool_fail(const char *prog, const pg_err *err) {
  const char *m = err->msg[0] ? err->msg : pg_status_message(err->status);
  fprintf(stderr, "%s: %s\n", prog, pg_safe(m));
  return PG_EXIT_ERROR;
}

int pg_tool_engine(const char *prog, const char *name, int threads, int precision, int quiet,
                   pg_engine **out) {
  return pg_tool_engines(prog, name, threads, precision, 1, quiet, out);
}

int pg_tool_engines(const char *prog, const char *name, int threads, int precision, int n,
                    int quiet, pg_engine **out) {
  for (int i = 0; i < n; i++) out[i] = NULL;
  int kind = pg_engine_kind_parse(name);
  if (kind < 0) return pg_tool_usage_error(prog, "--engine: cpu, cuda or auto, not '%s'", name);
  /* CPU engines share the machine: by default each gets its part of the online CPUs */
  if (n > 1 && !threads && kind != PG_ENGINE_CUDA)
    threads = pg_parallel_threads(0) / n > 0 ? pg_parallel_threads(0) / n : 1;
  /* the default precision opens a GPU engine with its bf16 kernels; the CPU ignores it */
  pg_engine_opts o = {.kind = kind, .threads = threads,
                      .precision = precision < 0 ? (kind == PG_ENGINE_CPU ? 0 : 1) : precision};
  pg_err err;
  int st = pg_engine_open_many(out, n, &o, &err);
  if (st == PG_E_UNSUPPORTED || st == PG_E_NO_DEVICE || st == PG_E_CUDA) {
    pg_tool_fail(prog, &err);
    return PG_EXIT_ENGINE;
  }
  if (st) return pg_tool_fail(prog, &err);
  if (out[0]->info.note[0] && !quiet)
    fprintf(stderr, "%s: engine %s (%s)\n", prog, out[0]->info.name, out[0]->info.note);
  return PG_EXIT_OK;
}

int pg_tool_default_precision(const pg_engine *e) {
  return strcmp(e->info.name, "cpu") ? PG_PREC_BF16 : PG_PREC_FP32;
}

int pg_tool_usage_error(const char *prog, const char *fmt, ...) {
  /* the message quotes options as given: shown in its display form like every error line */
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s (see %s --help)\n", prog, pg_safe(line), prog);
  return PG_EXIT_ERROR;
}

const char *pg_fmt_u64(char *buf, uint64_t v) {
  char tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
  int o = 0;
  for (int i = 0; i < n; i++) {
    if (i > 0 && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = tmp[i];
  }
  buf[o] = '\0';
  return buf;
}

void pg_print_safe(FILE *f, const char *s, size_t n) { fputs(pg_safen(s, n), f); }

static const char *safe_ring(const char *s, size_t n, size_t max) {
  static char *ring[8];
  static size_t cap[8];
  static unsigned next;
  unsigned k = next++ % 8;
  size_t need = pg_escape(NULL, 0, s, n);
  if (need > max) need = max;
  if (cap[k] < need + 1) {
    char *p = realloc(ring[k], need + 1);
    if (!p) return "(out of memory)";
    ring[k] = p;
    cap[k] = need + 1;
  }
  pg_escape(ring[k], need + 1, s, n);
  return ring[k];
}

const char *pg_safen(const char *s, size_t n) { return s ? safe_ring(s, n, SIZE_MAX - 1) : ""; }
const char *pg_safe(const char *s) { return s ? safe_ring(s, strlen(s), SIZE_MAX - 1) : ""; }
const char *pg_safe_cut(const char *s, size_t max) {
  return s ? safe_ring(s, strlen(s), max) : "";
}

double pg_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int pg_progress_tick(void *ctx, uint64_t done, uint64_t total) {
  pg_progress *p = ctx;
  double now = pg_now();
  if (!p->on || (now - p->last < 0.5 && done < total)) return 0;
  p->last = now;
  double el = now - p->t0, frac = total ? (double)done / (double)total : 1;
  char a[32], b[32];
  fprintf(stderr, "\r%s: %s%s%5.1f%% (%s / %s %s)  %.0f s", p->prog, p->what ? p->what : "",
          p->what ? " " : "", 100 * frac, pg_fmt_u64(a, done), pg_fmt_u64(b, total), p->unit, el);
  if (frac > 0 && frac < 1) fprintf(stderr, ", about %.0f s left   ", el * (1 - frac) / frac);
  else fprintf(stderr, "                    ");
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
  return 0;
}
