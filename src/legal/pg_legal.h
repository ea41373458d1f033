/* pg_legal.h: pglegal, a reviewer's report on whether a submission is legal (spec/legal.md).
 * Eight checks, each with an ID, a verdict, a one-line summary, findings with evidence, and the
 * paragraph of spec/legal.md that defines it. On a pgolf artifact every check runs on the model
 * the artifact holds (probes, a replay of its protocol through the score-first ledger, the byte
 * proof, scans of every section); on a challenge record folder the record-code analyzer
 * (tools/pglegal_record.py, spec/legal-record.md) gives its checks as JSON, which
 * pg_legal_merge_json reads (outside input: bounds-checked, one-line errors) and merges.
 *
 * Nothing here prints: the report is a structure, written as JSON or Markdown by the functions
 * below, and as terminal lines by the tool. Progress goes through a callback. */
#ifndef PG_LEGAL_H
#define PG_LEGAL_H

#include <stddef.h>
#include <stdint.h>

#include "pg_engine.h"
#include "pg_eval.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_LEGAL_NCHECKS 8

/* Verdicts, in the order of the merge (spec/legal.md §3): of two verdicts of one check the
 * higher wins. */
enum pg_legal_verdict {
  PG_LEGAL_DEAD = 0,    /* record code: the construct exists but no default path reaches it */
  PG_LEGAL_PASS = 1,
  PG_LEGAL_SKIP = 2,    /* not applicable, or an input it needs was not given (said why) */
  PG_LEGAL_ERROR = 3,   /* could not check (the summary says why) */
  PG_LEGAL_FINDING = 4  /* at least one finding of severity illegal or warning */
};
enum pg_legal_severity { PG_LEGAL_INFO = 0, PG_LEGAL_WARNING = 1, PG_LEGAL_ILLEGAL = 2 };

/* "pass", "finding", ... / "illegal", ...; and back (-1 for another name). */
const char *pg_legal_verdict_name(int v);
int pg_legal_verdict_parse(const char *s);
const char *pg_legal_severity_name(int s);
int pg_legal_severity_parse(const char *s);

typedef struct pg_legal_finding {
  int severity;
  char *title;      /* one line */
  char **evidence;  /* lines */
  size_t nevidence;
  char *file;       /* NULL: the artifact */
  long line;        /* 0: none */
  int reachable;
} pg_legal_finding;

typedef struct pg_legal_check {
  char id[4];           /* "L1" .. "L8" */
  const char *name;     /* "causality", ... */
  const char *spec;     /* "spec/legal.md §4.1" */
  int verdict;
  char *summary;        /* one line */
  pg_legal_finding *findings;
  size_t nfindings;
} pg_legal_check;

typedef struct pg_legal_report {
  pg_legal_check checks[PG_LEGAL_NCHECKS]; /* L1 .. L8 in order */
  int incomplete;    /* a part could not run at all (the record analyzer): exit 2 */
  char *input_kind;  /* "artifact" or "record" */
  char *input_path;
  /* facts gathered for a merge: the score a record claims (submission.json), when known */
  int has_claim;
  double claimed_bpb;
} pg_legal_report;

/* The eight checks with their IDs, names and spec paragraphs, every one "skip: not run". */
int pg_legal_report_init(pg_legal_report *r, const char *kind, const char *path, pg_err *err);
void pg_legal_report_free(pg_legal_report *r);
/* 0 clean, 1 a finding, 2 could not check (an error, or incomplete); spec/legal.md §5. */
int pg_legal_report_exit(const pg_legal_report *r);
/* The check of id "L1".."L8", or NULL. */
pg_legal_check *pg_legal_report_check(pg_legal_report *r, const char *id);

/* Set a check's verdict and summary (printf), and add findings and their evidence lines. Each
 * returns PG_E_NOMEM or PG_OK. */
int pg_legal_set(pg_legal_check *c, int verdict, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
int pg_legal_add(pg_legal_check *c, int severity, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* An evidence line of the check's last finding. */
int pg_legal_evidence(pg_legal_check *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The report as the JSON document of spec/legal.md §6 (ASCII, malloc'd, ends in a newline). */
int pg_legal_report_json(const pg_legal_report *r, const char *version, char **out, pg_err *err);
/* The Markdown report (malloc'd). */
int pg_legal_report_markdown(const pg_legal_report *r, const char *version, char **out,
                             pg_err *err);

/* Limits on the analyzer's JSON (spec/legal.md §6.2). */
#define PG_LEGAL_JSON_MAX ((size_t)16 << 20)
#define PG_LEGAL_MAX_FINDINGS 4096
#define PG_LEGAL_MAX_EVIDENCE 256
#define PG_LEGAL_MAX_TEXT 4096
/* JSON values (keys counted), checked before parsing: every finding at its limits (an object of
 * six keys and six values, and its evidence lines) and 65,536 for the checks and the facts */
#define PG_LEGAL_JSON_VALUES \
  ((uint64_t)PG_LEGAL_MAX_FINDINGS * (13 + PG_LEGAL_MAX_EVIDENCE) + 65536)

/* Read the record analyzer's output ({"checks": [...], "facts": {...}}, spec/legal.md §6.2),
 * named name in errors, and merge its checks into r: per check the higher verdict, the summaries
 * joined, the findings appended; facts.claimed_val_bpb (when a number) becomes the claim. The
 * document is checked whole before r changes: PG_E_JSON (does not parse), PG_E_MALFORMED (a
 * field of the wrong type or value, naming it), PG_E_LIMIT. */
int pg_legal_merge_json(pg_legal_report *r, const char *json, size_t len, const char *name,
                        pg_err *err);

/* ---- the artifact checks ---- */

typedef struct pg_legal_cfg {
  const char *artifact;   /* a pgolf artifact */
  const char *val;        /* validation shard pattern (required) */
  const char *train;      /* training shard pattern (L6 overlap); NULL: skipped */
  const char *tokenizer;  /* a .model the submission claims to use (L5 identity); NULL: none */
  uint64_t tokens;        /* validation prefix for L1-L4 and L8; 0: the default (spec/legal.md
                           §1), UINT64_MAX: all */
  const char *protocol;   /* pgverify options; NULL: the artifact's recorded protocol */
  pg_engine *engine;      /* where the model runs; NULL: the CPU engine of `threads` */
  int threads;
  /* progress of long work: what (a check's ID and a word), done of total */
  int (*progress)(void *ctx, const char *what, uint64_t done, uint64_t total);
  void *ctx;
} pg_legal_cfg;

/* Run the eight checks on cfg->artifact into r (initialized by the caller). A check that cannot
 * run is ERROR with its reason; the return is an error only for what stops every check (the
 * artifact cannot be opened or its model loaded, the validation shards cannot be read), and
 * then every check that did not run is ERROR too. */
int pg_legal_run(const pg_legal_cfg *cfg, pg_legal_report *r, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
