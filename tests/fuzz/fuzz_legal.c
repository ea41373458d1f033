/* fuzz_legal.c: libFuzzer target for pglegal's reader of the record analyzer's output and the
 * merge (pg_legal_merge_json) on the whole input, into a report whose checks already hold the
 * artifact's verdicts. A refused document must leave the report as it was, with a one-line
 * error; an accepted one must leave every verdict the higher of the two (spec/legal.md §3), every
 * finding whole, and a report whose JSON parses back through the same reader and whose Markdown
 * builds. Every invariant broken aborts. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_legal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const int BEFORE[PG_LEGAL_NCHECKS] = {PG_LEGAL_PASS, PG_LEGAL_FINDING, PG_LEGAL_ERROR,
                                             PG_LEGAL_SKIP, PG_LEGAL_PASS, PG_LEGAL_PASS,
                                             PG_LEGAL_DEAD, PG_LEGAL_PASS};

static void fill(pg_legal_report *r) {
  pg_err e;
  if (pg_legal_report_init(r, "artifact", "a.pgz", &e)) abort();
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    if (pg_legal_set(&r->checks[i], BEFORE[i], "artifact %d", i)) abort();
    if (i % 2 && (pg_legal_add(&r->checks[i], PG_LEGAL_INFO, "probe") ||
                  pg_legal_evidence(&r->checks[i], "evidence")))
      abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0;
  pg_legal_report r;
  pg_err err;
  fill(&r);
  size_t before[PG_LEGAL_NCHECKS];
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) before[i] = r.checks[i].nfindings;
  if (pg_legal_merge_json(&r, (const char *)data, size, "rec.json", &err) != PG_OK) {
    if (!err.status || !err.msg[0] || strchr(err.msg, '\n')) abort();
    for (int i = 0; i < PG_LEGAL_NCHECKS; i++) /* nothing merged */
      if (r.checks[i].verdict != BEFORE[i] || r.checks[i].nfindings != before[i]) abort();
    pg_legal_report_free(&r);
    return 0;
  }
  for (int i = 0; i < PG_LEGAL_NCHECKS; i++) {
    const pg_legal_check *c = &r.checks[i];
    if (c->verdict < BEFORE[i] || c->verdict > PG_LEGAL_FINDING || !c->summary ||
        strchr(c->summary, '\n') || c->nfindings < before[i])
      abort();
    for (size_t k = 0; k < c->nfindings; k++) {
      const pg_legal_finding *f = &c->findings[k];
      if (!f->title || f->severity < PG_LEGAL_INFO || f->severity > PG_LEGAL_ILLEGAL ||
          f->line < 0 || (f->nevidence && !f->evidence))
        abort();
      for (size_t e = 0; e < f->nevidence; e++)
        if (!f->evidence[e]) abort();
    }
  }
  /* the report's own JSON reads back through the reader */
  char *text, *md;
  if (pg_legal_report_json(&r, "fuzz", &text, &err) ||
      pg_legal_report_markdown(&r, "fuzz", &md, &err))
    abort();
  json_t *j = json_loads(text, 0, NULL);
  if (!j) abort();
  json_t *doc = json_pack("{s:O}", "checks", json_object_get(j, "checks"));
  char *t2 = doc ? json_dumps(doc, 0) : NULL;
  pg_legal_report r2;
  fill(&r2);
  /* the round trip must read, except where merging went over a limit (a joined summary or the
   * artifact's findings added to the record's) */
  if (!t2) abort();
  int rc = pg_legal_merge_json(&r2, t2, strlen(t2), "round trip", &err);
  if (rc && rc != PG_E_LIMIT) abort();
  pg_legal_report_free(&r2);
  free(t2);
  json_decref(doc);
  json_decref(j);
  free(text);
  free(md);
  pg_legal_report_free(&r);
  return 0;
}
