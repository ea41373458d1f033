/* pgshard: token shards: encode text into the challenge's shard format with a SentencePiece model,
 * inspect and validate shard sets, and prove the byte accounting behind val_bpb token by token.
 *
 * Exit status: 0 success (valid, proven), 1 a negative verdict (invalid shards, a byte
 * disagreement), 2 error (spec/cli.md). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_byteproof.h"
#include "pg_corpus.h"
#include "pg_encode.h"
#include "pg_io.h"
#include "pg_shard.h"
#include "pg_shard_stats.h"
#include "pg_spm.h"
#include "tool.h"

static const char *PROG = "pgshard";

static void usage(FILE *f) {
  fprintf(f,
          "usage: pgshard encode --model M.model --out DIR [options] INPUT...\n"
          "       pgshard info [--model M.model] [--json] 'SHARDS'...\n"
          "       pgshard check (--model M.model | --vocab V) 'SHARDS'...\n"
          "       pgshard prove-bytes --model M.model [--json] 'SHARDS'...\n"
          "\n"
          "SHARDS is a file or a glob pattern (quote it), read in sorted order, as the challenge\n"
          "reads fineweb_val_*.bin; info and prove-bytes skip CaseOps byte sidecars (names with\n"
          "_bytes_), as the challenge does.\n"
          "\n"
          "encode: each INPUT is a plain text file (one document) or JSON lines (*.jsonl: one\n"
          "document per line, in its \"text\" field). Each document becomes BOS + its ids "
          "(no EOS),\n"
          "exactly as SentencePiece encodes it. The first --val-docs documents go to\n"
          "PREFIX_val_NNNNNN.bin, the rest to PREFIX_train_NNNNNN.bin; DIR/manifest.json records\n"
          "the counts and checksums.\n"
          "  --model FILE          the SentencePiece .model\n"
          "  --out DIR             output folder (must not already hold PREFIX_* shards)\n"
          "  --val-docs N          documents in the validation split (default 0)\n"
          "  --shard-tokens N      tokens per shard (default 100,000,000, as the challenge)\n"
          "  --prefix NAME         file-name prefix (default fineweb)\n"
          "  --threads N           encoder threads (default: all cores)\n"
          "\n"
          "info: counts, documents, length and id statistics; with --model also the bytes.\n"
          "check: format, sizes, and every id below the vocabulary; exit 1 if anything is wrong.\n"
          "prove-bytes: decode every target through the pieces and compare its UTF-8 bytes with\n"
          "the challenge's byte tables, token by token and in total; where SentencePiece is built\n"
          "in, also compare each document's decoded text with its table total. Exit 1 on any\n"
          "disagreement.\n"
          "  --allow-no-space      accept a model without a U+2581 piece (the challenge refuses)\n"
          "  --json                machine-readable output\n"
          "  -h, --help            this text\n");
}

/* ------------------------------------------------------------------------------------------ */
/* encode */

static int cmd_encode(int argc, char **argv) {
  const char *model = NULL, *out = NULL, *prefix = "fineweb";
  uint64_t val_docs = 0, shard_tokens = 100000000ull, threads = 0;
  enum { O_MODEL = 256, O_OUT, O_VAL, O_SHARD, O_PREFIX, O_THREADS };
  static const struct option opts[] = {
      {"model", required_argument, 0, O_MODEL},  {"out", required_argument, 0, O_OUT},
      {"val-docs", required_argument, 0, O_VAL}, {"shard-tokens", required_argument, 0, O_SHARD},
      {"prefix", required_argument, 0, O_PREFIX}, {"threads", required_argument, 0, O_THREADS},
      {"help", no_argument, 0, 'h'},             {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case O_MODEL: model = optarg; break;
    case O_OUT: out = optarg; break;
    case O_VAL:
      if (pg_parse_u64(optarg, &val_docs)) return pg_tool_usage_error(PROG, "bad --val-docs");
      break;
    case O_SHARD:
      if (pg_parse_u64(optarg, &shard_tokens) || !shard_tokens ||
          shard_tokens > PG_SHARD_MAX_TOKENS)
        return pg_tool_usage_error(PROG, "--shard-tokens wants 1 .. 2^31-1");
      break;
    case O_PREFIX: prefix = optarg; break;
    case O_THREADS:
      if (pg_parse_u64(optarg, &threads) || threads > 1024)
        return pg_tool_usage_error(PROG, "bad --threads");
      break;
    case 'h': usage(stdout); return PG_EXIT_OK;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (!model || !out || optind >= argc)
    return pg_tool_usage_error(PROG, "encode needs --model, --out and at least one INPUT");
  pg_err err;
  if (!pg_enc_available()) {
    pg_err_set(&err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET,
               "built without the SentencePiece library (install libsentencepiece-dev and "
               "rebuild)");
    return pg_tool_fail(PROG, &err);
  }
  /* manifest.json must not be an input (the shards are new files: existing ones are refused) */
  char mpath[4200];
  snprintf(mpath, sizeof mpath, "%s/manifest.json", out);
  const char *mout = mpath;
  const size_t nin = (size_t)(argc - optind) + 1;
  const char **ins = malloc(nin * sizeof *ins);
  if (!ins) {
    pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    return pg_tool_fail(PROG, &err);
  }
  ins[0] = model;
  for (int i = optind; i < argc; i++) ins[1 + i - optind] = argv[i];
  const int io = pg_tool_check_outputs(PROG, &mout, 1, ins, nin);
  free(ins);
  if (io != PG_EXIT_OK) return PG_EXIT_ERROR;
  pg_enc *enc = NULL;
  pg_corpus *run = NULL;
  const double t0 = pg_now();
  pg_corpus_cfg cfg = {.dir = out, .prefix = prefix, .shard_tokens = shard_tokens,
                       .val_docs = val_docs, .threads = (int)threads};
  int rc = pg_enc_open(&enc, model, &err);
  if (rc == PG_OK) rc = pg_corpus_open(&run, enc, &cfg, &err);
  for (int i = optind; rc == PG_OK && i < argc; i++) rc = pg_corpus_add_file(run, argv[i], &err);
  if (rc == PG_OK) rc = pg_corpus_finish(run, &err);
  const double dt = pg_now() - t0;
  if (rc == PG_OK) {
    const pg_corpus_stats *s = pg_corpus_stats_of(run);
    char b1[32], b2[32], b3[32], b4[32];
    fprintf(stderr,
            "pgshard: encoded %s documents (%s bytes) into %s val + %s train tokens in %.2f s "
            "(%.1f MB/s)\n",
            pg_fmt_u64(b1, s->docs), pg_fmt_u64(b2, s->bytes_in), pg_fmt_u64(b3, s->val_tokens),
            pg_fmt_u64(b4, s->train_tokens), dt, dt > 0 ? (double)s->bytes_in / dt / 1e6 : 0.0);
    for (size_t k = 0; k < pg_corpus_nfiles(run); k++)
      printf("%s\n", pg_safe(pg_corpus_file(run, k)));
  }
  pg_corpus_free(run); /* a failed run's shards are removed */
  pg_enc_free(enc);
  return rc == PG_OK ? PG_EXIT_OK : pg_tool_fail(PROG, &err);
}

/* ------------------------------------------------------------------------------------------ */
/* shared: options of info / check / prove-bytes */

typedef struct read_opts {
  const char *model;
  uint64_t vocab;
  int json, allow_no_space;
} read_opts;

static int parse_read_opts(int argc, char **argv, read_opts *o) {
  enum { O_MODEL = 256, O_VOCAB, O_JSON, O_NOSPACE };
  static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                       {"vocab", required_argument, 0, O_VOCAB},
                                       {"json", no_argument, 0, O_JSON},
                                       {"allow-no-space", no_argument, 0, O_NOSPACE},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case O_MODEL: o->model = optarg; break;
    case O_VOCAB:
      if (pg_parse_u64(optarg, &o->vocab) || !o->vocab || o->vocab > 65536)
        return pg_tool_usage_error(PROG, "--vocab wants 1 .. 65536");
      break;
    case O_JSON: o->json = 1; break;
    case O_NOSPACE: o->allow_no_space = 1; break;
    case 'h': usage(stdout); return -1;
    default: return pg_tool_usage_error(PROG, "unknown option");
    }
  }
  if (optind >= argc) return pg_tool_usage_error(PROG, "expected at least one SHARDS pattern");
  return PG_EXIT_OK;
}

/* Open the tokenizer and its byte tables (tables may be NULL when not wanted). */
static int open_model(const read_opts *o, pg_spm **m, pg_spm_tables *t, pg_err *err) {
  PG_TRY(pg_spm_open_file(m, o->model, err));
  if (!t) return PG_OK;
  int rc = pg_spm_tables_build(t, *m, 0, o->allow_no_space ? PG_SPM_ALLOW_NO_SPACE : 0, err);
  if (rc != PG_OK) {
    pg_spm_free(*m);
    *m = NULL;
  }
  return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* check */

static int cmd_check(int argc, char **argv) {
  read_opts o = {0};
  int r = parse_read_opts(argc, argv, &o);
  if (r) return r < 0 ? PG_EXIT_OK : r;
  if (!o.model == !o.vocab) return pg_tool_usage_error(PROG, "check needs --model or --vocab");
  pg_err err;
  uint32_t vocab = (uint32_t)o.vocab;
  if (o.model) {
    pg_spm *m;
    if (pg_spm_open_file(&m, o.model, &err) != PG_OK) return pg_tool_fail(PROG, &err);
    vocab = pg_spm_vocab_size(m);
    pg_spm_free(m);
  }
  int status = PG_EXIT_OK;
  char b1[32];
  for (int i = optind; i < argc; i++) {
    pg_shard_set *set = NULL;
    int rc = pg_shard_set_open(&set, argv[i], &err);
    if (rc == PG_OK) rc = pg_shard_set_check_vocab(set, vocab, &err);
    if (rc == PG_OK) {
      printf("%s: valid: %zu files, %s tokens, every id below %u\n", pg_safe(argv[i]),
             pg_shard_set_nfiles(set), pg_fmt_u64(b1, pg_shard_set_count(set)), vocab);
    } else {
      pg_tool_fail(PROG, &err);
      /* a missing input is an error; a malformed shard or a bad id is the verdict */
      if (rc == PG_E_NOT_FOUND || rc == PG_E_IO || rc == PG_E_EMPTY_SET || rc == PG_E_NOMEM) {
        pg_shard_set_free(set);
        return PG_EXIT_ERROR;
      }
      status = PG_EXIT_VERDICT;
    }
    pg_shard_set_free(set);
  }
  return status;
}

/* ------------------------------------------------------------------------------------------ */
/* info */

/* The piece of an id, when the model has it. */
static const pg_spm_piece *piece_of(const pg_spm *m, uint32_t id) {
  return m && id < pg_spm_vocab_size(m) ? pg_spm_piece_at(m, id) : NULL;
}

static json_t *info_json(const char *shards, const pg_spm *m, const pg_shard_stats *st) {
  const uint64_t n = st->tokens;
  json_t *j = json_object();
  json_object_set_new(j, "shards", pg_json_cstr(shards));
  json_object_set_new(j, "files", json_integer((json_int_t)st->files));
  json_object_set_new(j, "tokens", json_integer((json_int_t)n));
  json_object_set_new(j, "targets", json_integer(n ? (json_int_t)n - 1 : 0));
  json_object_set_new(j, "documents", json_integer((json_int_t)st->documents));
  json_object_set_new(j, "tokens_before_first_bos", json_integer((json_int_t)st->before_first_bos));
  if (st->have_lengths) {
    json_object_set_new(j, "doc_len_min", json_integer((json_int_t)st->len_min));
    json_object_set_new(j, "doc_len_median", json_integer((json_int_t)st->len_median));
    json_object_set_new(j, "doc_len_max", json_integer((json_int_t)st->len_max));
    json_object_set_new(j, "doc_len_mean", pg_json_num(st->len_mean));
  }
  json_object_set_new(j, "distinct_ids", json_integer((json_int_t)st->distinct_ids));
  json_object_set_new(j, "max_id", json_integer((json_int_t)st->max_id));
  json_t *tj = json_array();
  for (int t = 0; t < st->ntop; t++) {
    json_t *e = json_object();
    json_object_set_new(e, "id", json_integer(st->top[t]));
    json_object_set_new(e, "count", json_integer((json_int_t)st->top_count[t]));
    const pg_spm_piece *p = piece_of(m, st->top[t]);
    if (p) json_object_set_new(e, "piece", pg_json_text(p->piece, p->len));
    json_array_append_new(tj, e);
  }
  json_object_set_new(j, "top_ids", tj);
  if (m) {
    json_object_set_new(j, "bytes", json_integer((json_int_t)st->bytes));
    json_object_set_new(j, "bytes_per_target",
                        pg_json_num(n > 1 ? (double)st->bytes / (double)(n - 1) : 0.0));
  }
  return j;
}

static void info_print(const char *shards, const pg_spm *m, const pg_shard_stats *st) {
  const uint64_t n = st->tokens;
  char b1[32], b2[32], b3[32];
  printf("%s\n  files %zu, tokens %s, documents %s", pg_safe(shards), st->files,
         pg_fmt_u64(b1, n), pg_fmt_u64(b2, st->documents));
  if (st->before_first_bos)
    printf(" (%s tokens before the first BOS)", pg_fmt_u64(b3, st->before_first_bos));
  printf("\n");
  if (st->have_lengths)
    printf("  document length: min %llu, median %llu, mean %.1f, max %llu tokens\n",
           (unsigned long long)st->len_min, (unsigned long long)st->len_median, st->len_mean,
           (unsigned long long)st->len_max);
  printf("  ids: %llu distinct, max %llu; most frequent:", (unsigned long long)st->distinct_ids,
         (unsigned long long)st->max_id);
  for (int t = 0; t < st->ntop; t++) {
    printf(" %u", st->top[t]);
    const pg_spm_piece *p = piece_of(m, st->top[t]);
    if (p) {
      printf(" '");
      pg_print_safe(stdout, p->piece, p->len);
      printf("'");
    }
    printf(" (%.2f%%)%s", 100.0 * (double)st->top_count[t] / (double)n,
           t + 1 < st->ntop ? "," : "");
  }
  printf("\n");
  if (m)
    printf("  bytes (challenge tables): %s over %s targets, %.4f bytes per target\n",
           pg_fmt_u64(b1, st->bytes), pg_fmt_u64(b2, n ? n - 1 : 0),
           n > 1 ? (double)st->bytes / (double)(n - 1) : 0.0);
}

static int cmd_info(int argc, char **argv) {
  read_opts o = {0};
  int r = parse_read_opts(argc, argv, &o);
  if (r) return r < 0 ? PG_EXIT_OK : r;
  pg_err err;
  pg_spm *m = NULL;
  pg_spm_tables tab;
  memset(&tab, 0, sizeof tab);
  if (o.model && open_model(&o, &m, &tab, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  json_t *all = json_array();
  int status = PG_EXIT_OK;
  for (int i = optind; i < argc && status == PG_EXIT_OK; i++) {
    pg_shard_set *set;
    if (pg_shard_set_open_ex(&set, argv[i], PG_SHARD_SKIP_BYTES, &err) != PG_OK) {
      status = pg_tool_fail(PROG, &err);
      break;
    }
    pg_shard_stats st;
    if (pg_shard_stats_compute(&st, set, argv[i], m ? &tab : NULL, &err) != PG_OK)
      status = pg_tool_fail(PROG, &err);
    else if (o.json)
      json_array_append_new(all, info_json(argv[i], m, &st));
    else
      info_print(argv[i], m, &st);
    pg_shard_set_free(set);
  }
  if (o.json && status == PG_EXIT_OK) {
    json_dumpf(all, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
  }
  json_decref(all);
  pg_spm_tables_free(&tab);
  pg_spm_free(m);
  return status;
}

/* ------------------------------------------------------------------------------------------ */
/* prove-bytes */

/* SentencePiece's own decoder as the proof's document check: the length of a document's text. */
static int enc_decode_len(void *ctx, const int32_t *ids, size_t n, size_t *text_len) {
  char *text;
  pg_err e;
  if (pg_enc_decode((const pg_enc *)ctx, ids, n, &text, text_len, &e) != PG_OK) return 1;
  free(text);
  return 0;
}

static json_t *proof_json(const char *shards, const char *model, const pg_byteproof *r) {
  json_t *j = json_object();
  json_object_set_new(j, "shards", pg_json_cstr(shards));
  json_object_set_new(j, "model", pg_json_cstr(model));
  json_object_set_new(j, "targets", json_integer((json_int_t)r->targets));
  json_object_set_new(j, "table_bytes", json_integer((json_int_t)r->table_bytes));
  json_object_set_new(j, "decoded_bytes", json_integer((json_int_t)r->decoded_bytes));
  json_object_set_new(j, "token_disagreements", json_integer((json_int_t)r->token_disagreements));
  json_object_set_new(j, "unknown_targets", json_integer((json_int_t)r->unknown_targets));
  json_object_set_new(j, "documents_checked_with_sentencepiece",
                      r->documents_checked
                          ? json_integer((json_int_t)(r->documents_ok + r->document_disagreements))
                          : json_null());
  json_object_set_new(j, "document_disagreements",
                      json_integer((json_int_t)r->document_disagreements));
  json_object_set_new(j, "proven", json_boolean(r->proven));
  json_t *dj = json_array();
  for (size_t k = 0; k < r->nfirst; k++) {
    const pg_byteproof_disagreement *d = &r->first[k];
    json_array_append_new(dj, json_pack("{s:I,s:i,s:i,s:i,s:i}", "target", (json_int_t)d->target,
                                        "prev", (int)d->prev, "id", (int)d->id, "table",
                                        (int)d->table, "decoded", (int)d->decoded));
  }
  json_object_set_new(j, "first_disagreements", dj);
  return j;
}

static void proof_print(const char *shards, const char *model, const pg_spm *m,
                        const pg_byteproof *r) {
  char b1[32], b2[32], b3[32];
  printf("%s (%s)\n", pg_safe(shards), pg_safe(model));
  printf("  targets        %s\n", pg_fmt_u64(b1, r->targets));
  printf("  table bytes    %s  (challenge formula: base[y] + (lead[y] and not boundary[x]))\n",
         pg_fmt_u64(b1, r->table_bytes));
  printf("  decoded bytes  %s  (UTF-8 of each target's piece text)\n",
         pg_fmt_u64(b2, r->decoded_bytes));
  printf("  disagreements  %s tokens", pg_fmt_u64(b3, r->token_disagreements));
  if (r->unknown_targets)
    printf("; %s targets are <unk> (their bytes are lost)", pg_fmt_u64(b1, r->unknown_targets));
  printf("\n");
  for (size_t k = 0; k < r->nfirst; k++) {
    const pg_byteproof_disagreement *d = &r->first[k];
    const pg_spm_piece *pp = pg_spm_piece_at(m, d->prev), *pt = pg_spm_piece_at(m, d->id);
    printf("    target %llu: prev %u '", (unsigned long long)d->target, d->prev);
    pg_print_safe(stdout, pp->piece, pp->len);
    printf("' -> %u '", d->id);
    pg_print_safe(stdout, pt->piece, pt->len);
    printf("': table %u, decoded %u\n", d->table, d->decoded);
  }
  if (r->documents_checked)
    printf("  documents      %s decoded by SentencePiece; %s agree with the table totals\n",
           pg_fmt_u64(b1, r->documents_ok + r->document_disagreements),
           pg_fmt_u64(b2, r->documents_ok));
  else
    printf("  documents      not checked (built without the SentencePiece library)\n");
  if (r->document_disagreements)
    printf("  first disagreeing document: %llu\n", (unsigned long long)r->first_bad_document);
  printf("  verdict        %s (%.2f s)\n",
         r->proven ? "PROVEN: the byte tables count every target exactly"
                   : "DISAGREEMENTS: the byte tables do not match the text",
         r->seconds);
}

static int cmd_prove(int argc, char **argv) {
  read_opts o = {0};
  int r = parse_read_opts(argc, argv, &o);
  if (r) return r < 0 ? PG_EXIT_OK : r;
  if (!o.model) return pg_tool_usage_error(PROG, "prove-bytes needs --model");
  pg_err err;
  pg_spm *m;
  pg_spm_tables tab;
  if (open_model(&o, &m, &tab, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  pg_enc *enc = NULL;
  int have_enc = pg_enc_available() && pg_enc_open(&enc, o.model, &err) == PG_OK;
  json_t *all = json_array();
  int status = PG_EXIT_OK;
  for (int i = optind; i < argc && status != PG_EXIT_ERROR; i++) {
    pg_shard_set *set = NULL;
    pg_byteproof res;
    if (pg_shard_set_open_ex(&set, argv[i], PG_SHARD_SKIP_BYTES, &err) != PG_OK ||
        pg_shard_set_check_vocab(set, pg_spm_vocab_size(m), &err) != PG_OK ||
        pg_byteproof_run(m, &tab, set, argv[i], have_enc ? enc_decode_len : NULL, NULL, enc,
                         &res, &err) != PG_OK) {
      status = pg_tool_fail(PROG, &err);
      pg_shard_set_free(set);
      break;
    }
    if (!res.proven) status = PG_EXIT_VERDICT;
    if (o.json) json_array_append_new(all, proof_json(argv[i], o.model, &res));
    else proof_print(argv[i], o.model, m, &res);
    pg_shard_set_free(set);
  }
  if (o.json && status != PG_EXIT_ERROR) {
    json_dumpf(all, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
  }
  json_decref(all);
  pg_enc_free(enc);
  pg_spm_tables_free(&tab);
  pg_spm_free(m);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? PG_EXIT_ERROR : PG_EXIT_OK;
  }
  const char *cmd = argv[1];
  argv[1] = argv[0];
  argc--;
  argv++;
  if (!strcmp(cmd, "encode")) return cmd_encode(argc, argv);
  if (!strcmp(cmd, "info")) return cmd_info(argc, argv);
  if (!strcmp(cmd, "check")) return cmd_check(argc, argv);
  if (!strcmp(cmd, "prove-bytes")) return cmd_prove(argc, argv);
  return pg_tool_usage_error(PROG, "unknown command '%s'", cmd);
}
