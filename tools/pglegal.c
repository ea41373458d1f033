/* pglegal: a reviewer's report on whether a Parameter Golf submission is legal (spec/legal.md).
 * On a pgolf artifact it runs the eight checks of the library (pg_legal.h) on the model the
 * artifact holds; on a challenge record folder it runs the record-code analyzer
 * (tools/pglegal_record.py, spec/legal-record.md) and merges its checks with the artifact's when
 * the folder holds a pgolf artifact. Prints a terminal report, or --json; --markdown writes a
 * report for a pull request.
 *
 * Exit status: 0 clean, 1 findings, 2 could not check (spec/cli.md, spec/legal.md §5). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_legal.h"
#include "pg_weights.h"
#include "tool.h"

static const char *PROG = "pglegal";

static void usage(FILE *f) {
  fprintf(f,
      "usage: pglegal ARTIFACT --val 'DIR/fineweb_val_*.bin' [options]\n"
      "       pglegal RECORD_DIR [--val PATTERN] [options]\n"
      "\n"
      "Check whether a submission is legal and say why, with evidence (spec/legal.md):\n"
      "L1 causality, L2 normalisation, L3 score before update, L4 single pass, L5 accounting,\n"
      "L6 data provenance, L7 time, L8 reproduction. On an artifact every check runs on its\n"
      "model; on a record folder the record's code is analysed (python3\n"
      "tools/pglegal_record.py) and, when the folder holds a pgolf artifact and --val is given,\n"
      "the artifact's checks are merged in.\n"
      "\n"
      "  --val PATTERN         validation shards (a quoted glob)\n"
      "  --train PATTERN       training shards: L6 looks for validation documents in them\n"
      "  --tokenizer FILE      the .model the submission uses (L5 compares it with the\n"
      "                        artifact's; needed when the artifact holds none)\n"
      "  --tokens N            validation tokens for the probes, the replay and the score\n"
      "                        (default: four windows of the protocol; 0: all)\n"
      "  --protocol 'OPTIONS'  the protocol as pgverify options (default: the artifact's\n"
      "                        provenance.protocol, else its arch's follows.protocol)\n"
      "  --engine NAME         cpu | cuda | auto (default cpu)\n"
      "  --threads N           CPU threads (0: all; results do not depend on it)\n"
      "  --json                the report as JSON on standard output (spec/legal.md §6)\n"
      "  --markdown FILE       also write the report as Markdown, for a pull request\n"
      "  -q, --quiet           no progress on standard error\n"
      "  -h, --help            this help\n"
      "\n"
      "exit status: 0 clean, 1 findings, 2 could not check\n");
}

enum { O_VAL = 256, O_TRAIN, O_TOK, O_TOKENS, O_PROTO, O_ENGINE, O_THREADS, O_JSON, O_MD };

static const struct option LONGOPTS[] = {
    {"val", required_argument, 0, O_VAL}, {"train", required_argument, 0, O_TRAIN},
    {"tokenizer", required_argument, 0, O_TOK}, {"tokens", required_argument, 0, O_TOKENS},
    {"protocol", required_argument, 0, O_PROTO}, {"engine", required_argument, 0, O_ENGINE},
    {"threads", required_argument, 0, O_THREADS}, {"json", no_argument, 0, O_JSON},
    {"markdown", required_argument, 0, O_MD}, {"quiet", no_argument, 0, 'q'},
    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};

/* ---- progress ------------------------------------------------------------------------------- */

typedef struct prog_state {
  pg_progress pr;
  const char *what;
} prog_state;

static int on_progress(void *ctx, const char *what, uint64_t done, uint64_t total) {
  prog_state *ps = ctx;
  if (ps->what != what) {
    ps->what = what;
    ps->pr.t0 = pg_now(), ps->pr.last = 0, ps->pr.what = what;
  }
  return pg_progress_tick(&ps->pr, done, total);
}

/* ---- the record analyzer -------------------------------------------------------------------- */

/* The analyzer script: $PGOLF_LEGAL_PY, else the source tree's (an uninstalled build), else the
 * installed copy. NULL when none exists. */
static const char *analyzer_path(void) {
  const char *env = getenv("PGOLF_LEGAL_PY");
  if (env && *env) return env;
  static const char *const cand[] = {
#ifdef PG_LEGAL_PY_BUILD
      PG_LEGAL_PY_BUILD,
#endif
#ifdef PG_LEGAL_PY_DATA
      PG_LEGAL_PY_DATA,
#endif
      NULL};
  for (int i = 0; cand[i]; i++)
    if (access(cand[i], R_OK) == 0) return cand[i];
  return NULL;
}

/* Run python3 SCRIPT DIR --json; its standard output into *out (at most PG_LEGAL_JSON_MAX + 1
 * bytes). Returns 0 with the output, or a reason in why (python3 missing, the script failing). */
static int run_analyzer(const char *script, const char *dir, char **out, size_t *len, char *why,
                        size_t wcap) {
  *out = NULL, *len = 0;
  int fd[2];
  if (pipe(fd)) {
    snprintf(why, wcap, "cannot create a pipe: %s", strerror(errno));
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    snprintf(why, wcap, "cannot fork: %s", strerror(errno));
    close(fd[0]);
    close(fd[1]);
    return 1;
  }
  if (pid == 0) {
    dup2(fd[1], 1);
    close(fd[0]);
    close(fd[1]);
    execlp("python3", "python3", script, dir, "--json", (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  int over = 0;
  for (;;) {
    if (buf && n == cap) {
      char *b2 = cap <= PG_LEGAL_JSON_MAX ? realloc(buf, cap * 2) : NULL;
      if (!b2) {
        over = 1;
        char sink[4096];
        while (read(fd[0], sink, sizeof sink) > 0) {
        }
        break;
      }
      buf = b2, cap *= 2;
    }
    if (!buf) break;
    ssize_t k = read(fd[0], buf + n, cap - n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    n += (size_t)k;
  }
  close(fd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    snprintf(why, wcap, "python3 cannot be run (not found?): the record checks need it");
    free(buf);
    return 1;
  }
  if (!buf || over) {
    snprintf(why, wcap, "the analyzer's output is over %zu bytes", PG_LEGAL_JSON_MAX);
    free(buf);
    return 1;
  }
  if (!n) {
    snprintf(why, wcap, "the analyzer printed nothing (exit status %d)",
             WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    free(buf);
    return 1;
  }
  *out = buf, *len = n;
  return 0;
}

/* The first (by path) regular file of dir that pick accepts, in buf (cap bytes), or NULL. */
static const char *first_file(const char *dir, int (*pick)(const char *path, const char *name),
                              char *buf, size_t cap) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  struct dirent *de;
  buf[0] = '\0';
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char p[4096];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p || stat(p, &st) ||
        !S_ISREG(st.st_mode) || !pick(p, de->d_name))
      continue;
    if (!buf[0] || strcmp(p, buf) < 0) snprintf(buf, cap, "%s", p);
  }
  closedir(d);
  return buf[0] ? buf : NULL;
}

/* a pgolf artifact (by its magic) */
static int is_artifact(const char *path, const char *name) {
  (void)name;
  int yes = 0;
  pg_err e;
  return !pg_weights_is_artifact(path, &yes, &e) && yes;
}

/* a record's own artifact format, which pgimport reads: a name ending in ".ptz" */
static int is_ptz(const char *path, const char *name) {
  (void)path;
  const size_t n = strlen(name);
  return n >= 5 && !strcmp(name + n - 4, ".ptz");
}

/* ---- the terminal report -------------------------------------------------------------------- */

static void print_report(const pg_legal_report *r) {
  static const char *const EXITS[] = {"clean", "findings", "could not check"};
  printf("pglegal    %s %s\n", r->input_kind, pg_safe(r->input_path));
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r->checks[i];
    printf("%s %-20s %-8s %s\n", c->id, c->name, pg_legal_verdict_name(c->verdict),
           pg_safe(c->summary));
    for (size_t k = 0; k < c->nfindings; k++) {
      const pg_legal_finding *f = &c->findings[k];
      printf("    %s: %s", pg_legal_severity_name(f->severity), pg_safe(f->title));
      if (f->file) {
        printf(" (%s", pg_safe(f->file));
        if (f->line > 0) printf(":%ld", f->line);
        printf("%s)", f->reachable ? "" : ", not reachable");
      }
      printf("\n");
      for (size_t e = 0; e < f->nevidence; e++) printf("        %s\n", pg_safe(f->evidence[e]));
    }
  }
  const int x = pg_legal_report_exit(r);
  printf("verdict    %s (exit %d)\n", EXITS[x], x);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  const char *val = NULL, *train = NULL, *tok = NULL, *proto = NULL, *engine = "cpu",
             *md = NULL;
  uint64_t tokens = 0;
  int threads = 0, json = 0, quiet = 0, c;
  while ((c = getopt_long(argc, argv, "qh", LONGOPTS, NULL)) != -1) {
    switch (c) {
    case O_VAL: val = optarg; break;
    case O_TRAIN: train = optarg; break;
    case O_TOK: tok = optarg; break;
    case O_PROTO: proto = optarg; break;
    case O_ENGINE: engine = optarg; break;
    case O_MD: md = optarg; break;
    case O_JSON: json = 1; break;
    case 'q': quiet = 1; break;
    case O_TOKENS:
      if (pg_parse_u64(optarg, &tokens) || (tokens && tokens < 3) ||
          tokens > (UINT64_C(1) << 40))
        return pg_tool_usage_error(PROG, "bad --tokens '%s' (0, or 3..2^40)", optarg);
      if (!tokens) tokens = UINT64_MAX; /* all */
      break;
    case O_THREADS: {
      uint64_t t;
      if (pg_parse_u64(optarg, &t) || t > 256)
        return pg_tool_usage_error(PROG, "bad --threads '%s'", optarg);
      threads = (int)t;
      break;
    }
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind + 1 != argc) return pg_tool_usage_error(PROG, "expected one ARTIFACT or RECORD_DIR");
  const char *input = argv[optind];
  if (pg_engine_kind_parse(engine) < 0)
    return pg_tool_usage_error(PROG, "--engine: cpu, cuda or auto, not '%s'", engine);
  struct stat st;
  if (stat(input, &st)) {
    pg_err e;
    pg_err_set(&e, PG_E_IO, input, PG_NO_OFFSET, "cannot open: %s", strerror(errno));
    return pg_tool_fail(PROG, &e);
  }
  const int is_dir = S_ISDIR(st.st_mode);
  static char found[4096], ptz_buf[4096];
  const char *artifact = is_dir ? first_file(input, is_artifact, found, sizeof found) : input;
  if (!is_dir && !val) return pg_tool_usage_error(PROG, "--val PATTERN is required");
  if (md) {
    const char *ins[] = {input, artifact, val, train, tok};
    if (pg_tool_check_outputs(PROG, &md, 1, ins, 5) != PG_EXIT_OK) return PG_EXIT_ERROR;
  }

  pg_err err;
  pg_legal_report r;
  if (pg_legal_report_init(&r, is_dir ? "record" : "artifact", input, &err))
    return pg_tool_fail(PROG, &err);
  int rc = PG_EXIT_OK;
  char *rjson = NULL;
  size_t rlen = 0;
  char why[512] = "";
  if (is_dir) {
    const char *script = analyzer_path();
    int bad = 1;
    if (!script)
      snprintf(why, sizeof why, "the record analyzer pglegal_record.py is not installed "
               "(set PGOLF_LEGAL_PY)");
    else
      bad = run_analyzer(script, input, &rjson, &rlen, why, sizeof why);
    if (!bad) {
      /* checked on a scratch report first, for the claim the artifact's L8 compares with */
      pg_legal_report tmp;
      if (pg_legal_report_init(&tmp, "record", input, &err) ||
          pg_legal_merge_json(&tmp, rjson, rlen, "pglegal_record.py output", &err)) {
        snprintf(why, sizeof why, "%s", err.msg);
        bad = 1;
      } else {
        r.has_claim = tmp.has_claim, r.claimed_bpb = tmp.claimed_bpb;
      }
      pg_legal_report_free(&tmp);
    }
    if (bad) {
      r.incomplete = 1;
      for (int i = 0; i < PG_LEGAL_NCHECKS; i++)
        if (pg_legal_set(&r.checks[i], PG_LEGAL_SKIP, "record code not analysed: %s", why))
          r.incomplete = 1;
      free(rjson);
      rjson = NULL;
      fprintf(stderr, "%s: %s\n", PROG, pg_safe(why));
    }
    if (artifact && !val && !quiet)
      fprintf(stderr, "%s: the folder holds the pgolf artifact %s; pass --val to run its "
              "checks\n", PROG, pg_safe(artifact));
  }
  if (artifact && val) {
    pg_engine *eng;
    int erc = pg_tool_engine(PROG, engine, threads, 0, quiet || json, &eng);
    if (erc != PG_EXIT_OK) {
      pg_legal_report_free(&r);
      free(rjson);
      return erc;
    }
    prog_state ps = {.pr = {.on = !quiet && isatty(2), .t0 = pg_now(), .prog = PROG,
                            .unit = "steps"}};
    pg_legal_cfg cfg = {.artifact = artifact, .val = val, .train = train, .tokenizer = tok,
                        .tokens = tokens, .protocol = proto, .engine = eng, .threads = threads,
                        .progress = on_progress, .ctx = &ps};
    pg_legal_report ar;
    if (pg_legal_report_init(&ar, "artifact", artifact, &err)) {
      rc = pg_tool_fail(PROG, &err);
    } else {
      ar.has_claim = r.has_claim, ar.claimed_bpb = r.claimed_bpb; /* L8 compares with it */
      if (pg_legal_run(&cfg, &ar, &err)) {
        fprintf(stderr, "%s: %s\n", PROG, pg_safe(err.msg));
        ar.incomplete = 1;
      }
      /* the artifact's checks are the report's; the record's merge into them */
      if (is_dir) {
        free(ar.input_kind);
        free(ar.input_path);
        ar.input_kind = r.input_kind, ar.input_path = r.input_path;
        r.input_kind = r.input_path = NULL;
        ar.incomplete |= r.incomplete;
        for (int i = 0; i < PG_LEGAL_NCHECKS && !rjson; i++) {
          /* the record side could not run: said beside the artifact's verdict */
          pg_legal_check *ch = &ar.checks[i];
          if (pg_legal_set(ch, ch->verdict, "artifact: %s; record: not analysed: %s",
                           ch->summary, why))
            ar.incomplete = 1;
        }
      }
      pg_legal_report_free(&r);
      r = ar;
    }
    pg_engine_destroy(eng);
  }
  if (rc == PG_EXIT_OK && rjson &&
      pg_legal_merge_json(&r, rjson, rlen, "pglegal_record.py output", &err))
    rc = pg_tool_fail(PROG, &err);
  free(rjson);
  /* a record's own artifact (not a pgolf one): the way to reproduce its score (spec/legal.md) */
  const char *ptz =
      is_dir && !artifact ? first_file(input, is_ptz, ptz_buf, sizeof ptz_buf) : NULL;
  pg_legal_check *l8 = &r.checks[PG_LEGAL_NCHECKS - 1];
  if (rc == PG_EXIT_OK && ptz && l8->verdict == PG_LEGAL_SKIP &&
      pg_legal_set(l8, PG_LEGAL_SKIP, "the folder holds the record's own artifact %s: import it "
                   "(pgimport %s --preset NAME -o A.pgolf) and run pglegal A.pgolf --val ...",
                   ptz, ptz))
    r.incomplete = 1;
  if (rc == PG_EXIT_OK) {
    char *text = NULL;
    if (md) {
      if (pg_legal_report_markdown(&r, PG_VERSION, &text, &err) ||
          pg_file_write_atomic(md, text, strlen(text), &err))
        rc = pg_tool_fail(PROG, &err);
      free(text);
      text = NULL;
    }
    if (rc == PG_EXIT_OK && json) {
      if (pg_legal_report_json(&r, PG_VERSION, &text, &err)) rc = pg_tool_fail(PROG, &err);
      else fputs(text, stdout);
      free(text);
    } else if (rc == PG_EXIT_OK) {
      print_report(&r);
    }
    if (rc == PG_EXIT_OK) rc = pg_legal_report_exit(&r);
  }
  pg_legal_report_free(&r);
  if (fflush(stdout) || ferror(stdout)) {
    fprintf(stderr, "%s: cannot write the report: %s\n", PROG, strerror(errno));
    return PG_EXIT_ERROR;
  }
  return rc;
}
