/* pgsubmit: write a challenge record folder from an artifact, its pgverify receipts and its
 * pgtrain log (spec/submit.md); `pgsize DIR` reads it back.
 *
 * Exit status: 0 written, 2 on error (spec/cli.md). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pg_submit.h"
#include "tool.h"

static const char *PROG = "pgsubmit";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgsubmit ARTIFACT.pgz --receipt R.json [--receipt R2.json ...] -o DIR\n"
          "\n"
          "Write a challenge record folder DIR (new, or an empty folder): the artifact as\n"
          "final_model.pgolf.ptz, train_gpt.py, submission.json with the records' fields, a\n"
          "README with the byte account, the protocol and the results, the receipts, and SVG\n"
          "pictures (the byte budget as a treemap, the per-chunk bpb of each receipt, the\n"
          "training curves). Every receipt must be of this artifact (its bytes and xxh64).\n"
          "\n"
          "options:\n"
          "  --receipt FILE        a pgverify receipt of ARTIFACT (repeatable, one per run)\n"
          "  --seed N              the training seed of each receipt, in the same order\n"
          "  --train-log FILE      a pgtrain --log file: the loss and val_bpb curves\n"
          "  --code FILE           the train_gpt.py to ship (default: the artifact's own\n"
          "                        CODE section named train_gpt.py)\n"
          "  --name, --author, --github-id, --date YYYY-MM-DD, --blurb TEXT\n"
          "                        the submission's words in submission.json and the README\n"
          "  -o, --output DIR      the folder to write\n"
          "  -h, --help            this text\n"
          "\n"
          "exit status: 0 written, 2 error\n");
}

int main(int argc, char **argv) {
  pg_submit_cfg c = {0};
  static const char *receipts[PG_SUBMIT_MAX_RECEIPTS];
  static uint64_t seeds[PG_SUBMIT_MAX_RECEIPTS];
  size_t nseeds = 0;
  enum { O_RECEIPT = 256, O_SEED, O_LOG, O_CODE, O_NAME, O_AUTHOR, O_GH, O_DATE, O_BLURB };
  static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                       {"receipt", required_argument, 0, O_RECEIPT},
                                       {"seed", required_argument, 0, O_SEED},
                                       {"train-log", required_argument, 0, O_LOG},
                                       {"code", required_argument, 0, O_CODE},
                                       {"name", required_argument, 0, O_NAME},
                                       {"author", required_argument, 0, O_AUTHOR},
                                       {"github-id", required_argument, 0, O_GH},
                                       {"date", required_argument, 0, O_DATE},
                                       {"blurb", required_argument, 0, O_BLURB},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
    switch (ch) {
    case 'o': c.out = optarg; break;
    case O_RECEIPT:
      if (c.nreceipts == PG_SUBMIT_MAX_RECEIPTS)
        return pg_tool_usage_error(PROG, "at most %d --receipt files", PG_SUBMIT_MAX_RECEIPTS);
      receipts[c.nreceipts++] = optarg;
      break;
    case O_SEED:
      if (nseeds == PG_SUBMIT_MAX_RECEIPTS || pg_parse_u64(optarg, &seeds[nseeds]) ||
          seeds[nseeds] > (uint64_t)INT64_MAX)
        return pg_tool_usage_error(PROG, "--seed wants an integer in 0..2^63-1, got '%s'",
                                   optarg);
      nseeds++;
      break;
    case O_LOG: c.train_log = optarg; break;
    case O_CODE: c.code = optarg; break;
    case O_NAME: c.name = optarg; break;
    case O_AUTHOR: c.author = optarg; break;
    case O_GH: c.github_id = optarg; break;
    case O_DATE: c.date = optarg; break;
    case O_BLURB: c.blurb = optarg; break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind != argc - 1) return pg_tool_usage_error(PROG, "expected one ARTIFACT");
  if (!c.out) return pg_tool_usage_error(PROG, "-o DIR is required");
  if (c.nreceipts == 0) return pg_tool_usage_error(PROG, "at least one --receipt is required");
  if (nseeds && nseeds != c.nreceipts)
    return pg_tool_usage_error(PROG, "%zu --seed for %zu --receipt: give one seed per receipt",
                               nseeds, c.nreceipts);
  c.artifact = argv[optind];
  c.receipts = receipts;
  c.seeds = nseeds ? seeds : NULL;
  pg_err err;
  if (pg_submit_write(&c, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  printf("%s: wrote %s (%zu receipt%s%s)\n", PROG, pg_safe(c.out), c.nreceipts,
         c.nreceipts == 1 ? "" : "s", c.train_log ? ", training curves" : "");
  return PG_EXIT_OK;
}
