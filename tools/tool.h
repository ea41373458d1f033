/* tool.h: what every pgolf command shares: exit codes, one-line errors, number formatting. */
#ifndef PG_TOOL_H
#define PG_TOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pg_engine.h"
#include "pg_status.h"
#include "pg_text.h"

/* Exit codes of every command (spec/cli.md). */
enum {
  PG_EXIT_OK = 0,      /* success; the verdict, if any, is positive */
  PG_EXIT_VERDICT = 1, /* ran fine; the verdict is negative (over budget, check failed) */
  PG_EXIT_ERROR = 2,   /* usage error, unreadable or invalid input, failed output */
  PG_EXIT_ENGINE = 3,  /* the engine asked for cannot run here (no CUDA, no GPU, driver fault) */
};

/* --engine NAME with --threads N (spec/cli.md): PG_EXIT_OK and *out an engine (the caller
 * destroys it), or the error printed in one line: an unknown name is a usage error
 * (PG_EXIT_ERROR), an engine this build or machine cannot make is PG_EXIT_ENGINE. For auto, the
 * choice and its reason go to stderr unless quiet, and so does the engine's note. precision is
 * the run's --precision (pg_engine_opts.precision; 0 for fp32). */
int pg_tool_engine(const char *prog, const char *name, int threads, int precision, int quiet,
                   pg_engine **out);
/* The same for --gpus N (spec/cli.md): N engines of the kind (pg_engine_open_many) in out[0..N).
 * CUDA: devices 0..N-1, fewer present is PG_EXIT_ENGINE. CPU (asked for, or auto without a
 * GPU): N CPU engines, each of `threads` threads (0: the online CPUs divided among them). */
int pg_tool_engines(const char *prog, const char *name, int threads, int precision, int n,
                    int quiet, pg_engine **out);
/* precision < 0 in the two above: "the engine's default", resolved after opening by this:
 * PG_PREC_BF16 for a GPU engine (which they open with its bf16 kernels), PG_PREC_FP32 for the
 * CPU (spec/cli.md). */
int pg_tool_default_precision(const pg_engine *e);

/* Print "PROG: message" on stderr (one line, in its display form: pg_text.h) and return
 * PG_EXIT_ERROR; the usage error adds " (see PROG --help)". */
int pg_tool_fail(const char *prog, const pg_err *err);
int pg_tool_usage_error(const char *prog, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Outputs never destroy inputs (spec/cli.md "Files"): PG_EXIT_OK, or the one-line PG_E_EXISTS
 * error printed and PG_EXIT_ERROR when an output names the same existing file (device and inode)
 * as an input, or two outputs name the same file. Each input may be a glob pattern: every file it
 * matches counts. NULL entries are skipped. */
int pg_tool_check_outputs(const char *prog, const char *const *outs, size_t nout,
                          const char *const *ins, size_t nin);
/* "16,000,000": thousands separators; buf >= 32 bytes. Returns buf. */
const char *pg_fmt_u64(char *buf, uint64_t v);
/* Print the display form of s[0..n) (pg_text.h: control, formatting and invalid bytes escaped). */
void pg_print_safe(FILE *f, const char *s, size_t n);
/* The display form of s (NULL: "") for a printf argument: every name, path or text that comes
 * from outside goes through it. The result lives in one of 8 rotating buffers, valid until 8
 * more calls. pg_safe_cut cuts it to at most max bytes without splitting an escape or a
 * character (for fixed-width columns). */
const char *pg_safe(const char *s);
const char *pg_safen(const char *s, size_t n);
const char *pg_safe_cut(const char *s, size_t max);
/* A progress line on standard error for long work; `on` only for a terminal and without
 * --quiet. what (may be NULL) names the work, unit the things counted. */
typedef struct pg_progress {
  int on;
  double t0, last;
  const char *prog, *what, *unit;
} pg_progress;
/* The library's progress hook (ctx is a pg_progress): at most twice a second,
 * "\rPROG: [WHAT ]P% (DONE / TOTAL UNIT)  E s, about R s left", a newline when done. Returns 0. */
int pg_progress_tick(void *ctx, uint64_t done, uint64_t total);

/* Seconds on a monotonic clock. */
double pg_now(void);

#endif
