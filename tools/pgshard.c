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

#include "pg_corpus.h"
#include "pg_encode.h"
#include "pg_io.h"
#include "pg_shard.h"
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
          "document per line, in its \"text\" field). Each document becomes BOS + its ids (no EOS),\n"
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
      if (pg_parse_u64(optarg, &shard_tokens) || !shard_tokens || shard_tokens > PG_SHARD_MAX_TOKENS)
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

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
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
    const uint64_t n = pg_shard_set_count(set);
    uint16_t *tok = malloc((n ? n : 1) * sizeof *tok);
    uint64_t *hist = calloc(65536, sizeof *hist);
    pg_doc *docs = NULL;
    uint64_t ndocs = 0, skipped = 0;
    int rc = tok && hist ? pg_shard_set_copy(set, 0, n, tok, &err)
                         : pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    if (rc == PG_OK) rc = pg_docs_list(tok, n, argv[i], &docs, &ndocs, &skipped, &err);
    if (rc != PG_OK) {
      status = pg_tool_fail(PROG, &err);
    } else {
      for (uint64_t k = 0; k < n; k++) hist[tok[k]]++;
      uint64_t distinct = 0, maxid = 0;
      for (uint32_t k = 0; k < 65536; k++)
        if (hist[k]) {
          distinct++;
          maxid = k;
        }
      uint64_t *lens = malloc((ndocs ? ndocs : 1) * sizeof *lens);
      for (uint64_t d = 0; lens && d < ndocs; d++) lens[d] = docs[d].len;
      if (lens) qsort(lens, ndocs, sizeof *lens, cmp_u64);
      uint64_t bytes = 0;
      if (m && n > 1) pg_spm_count_stream_u16(&tab, tok, n, &bytes, &err);
      /* top ids */
      uint32_t top[10];
      int ntop = 0;
      for (int t = 0; t < 10; t++) {
        uint32_t best = 0;
        uint64_t bc = 0;
        for (uint32_t k = 0; k < 65536; k++) {
          int taken = 0;
          for (int q = 0; q < ntop; q++) taken |= top[q] == k;
          if (!taken && hist[k] > bc) {
            bc = hist[k];
            best = k;
          }
        }
        if (!bc) break;
        top[ntop++] = best;
      }
      json_t *j = json_object();
      json_object_set_new(j, "shards", pg_json_cstr(argv[i]));
      json_object_set_new(j, "files", json_integer((json_int_t)pg_shard_set_nfiles(set)));
      json_object_set_new(j, "tokens", json_integer((json_int_t)n));
      json_object_set_new(j, "targets", json_integer(n ? (json_int_t)n - 1 : 0));
      json_object_set_new(j, "documents", json_integer((json_int_t)ndocs));
      json_object_set_new(j, "tokens_before_first_bos", json_integer((json_int_t)skipped));
      if (ndocs && lens) {
        json_object_set_new(j, "doc_len_min", json_integer((json_int_t)lens[0]));
        json_object_set_new(j, "doc_len_median", json_integer((json_int_t)lens[ndocs / 2]));
        json_object_set_new(j, "doc_len_max", json_integer((json_int_t)lens[ndocs - 1]));
        json_object_set_new(j, "doc_len_mean", pg_json_num((double)(n - skipped) / (double)ndocs));
      }
      json_object_set_new(j, "distinct_ids", json_integer((json_int_t)distinct));
      json_object_set_new(j, "max_id", json_integer((json_int_t)maxid));
      json_t *tj = json_array();
      for (int t = 0; t < ntop; t++) {
        json_t *e = json_object();
        json_object_set_new(e, "id", json_integer(top[t]));
        json_object_set_new(e, "count", json_integer((json_int_t)hist[top[t]]));
        if (m && top[t] < pg_spm_vocab_size(m)) {
          const pg_spm_piece *p = pg_spm_piece_at(m, top[t]);
          json_object_set_new(e, "piece", pg_json_text(p->piece, p->len));
        }
        json_array_append_new(tj, e);
      }
      json_object_set_new(j, "top_ids", tj);
      if (m) {
        json_object_set_new(j, "bytes", json_integer((json_int_t)bytes));
        json_object_set_new(j, "bytes_per_target",
                            pg_json_num(n > 1 ? (double)bytes / (double)(n - 1) : 0.0));
      }
      if (o.json) {
        json_array_append(all, j);
      } else {
        char b1[32], b2[32], b3[32];
        printf("%s\n  files %zu, tokens %s, documents %s", pg_safe(argv[i]),
               pg_shard_set_nfiles(set),
               pg_fmt_u64(b1, n), pg_fmt_u64(b2, ndocs));
        if (skipped) printf(" (%s tokens before the first BOS)", pg_fmt_u64(b3, skipped));
        printf("\n");
        if (ndocs && lens)
          printf("  document length: min %llu, median %llu, mean %.1f, max %llu tokens\n",
                 (unsigned long long)lens[0], (unsigned long long)lens[ndocs / 2],
                 (double)(n - skipped) / (double)ndocs, (unsigned long long)lens[ndocs - 1]);
        printf("  ids: %llu distinct, max %llu; most frequent:", (unsigned long long)distinct,
               (unsigned long long)maxid);
        for (int t = 0; t < ntop; t++) {
          printf(" %u", top[t]);
          if (m && top[t] < pg_spm_vocab_size(m)) {
            const pg_spm_piece *p = pg_spm_piece_at(m, top[t]);
            printf(" '");
            pg_print_safe(stdout, p->piece, p->len);
            printf("'");
          }
          printf(" (%.2f%%)%s", 100.0 * (double)hist[top[t]] / (double)n, t + 1 < ntop ? "," : "");
        }
        printf("\n");
        if (m)
          printf("  bytes (challenge tables): %s over %s targets, %.4f bytes per target\n",
                 pg_fmt_u64(b1, bytes), pg_fmt_u64(b2, n ? n - 1 : 0),
                 n > 1 ? (double)bytes / (double)(n - 1) : 0.0);
      }
      json_decref(j);
      free(lens);
    }
    free(docs);
    free(tok);
    free(hist);
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

/* UTF-8 bytes of a piece as text: every U+2581 is one space; BYTE pieces are one raw byte;
 * CONTROL, UNKNOWN and UNUSED pieces produce no text. */
static uint32_t piece_text_bytes(const pg_spm_piece *p, int *starts_with_space) {
  *starts_with_space = 0;
  if (p->type == PG_SPM_BYTE) return 1;
  if (p->type == PG_SPM_CONTROL || p->type == PG_SPM_UNKNOWN || p->type == PG_SPM_UNUSED) return 0;
  uint32_t n = p->len;
  for (uint32_t i = 0; i + 2 < p->len; i++) {
    if ((uint8_t)p->piece[i] == 0xe2 && (uint8_t)p->piece[i + 1] == 0x96 &&
        (uint8_t)p->piece[i + 2] == 0x81) {
      n -= 2;
      if (i == 0) *starts_with_space = 1;
      i += 2;
    }
  }
  return n;
}

typedef struct disagreement {
  uint64_t pos;
  uint32_t prev, tgt, table, decoded;
} disagreement;

static int cmd_prove(int argc, char **argv) {
  read_opts o = {0};
  int r = parse_read_opts(argc, argv, &o);
  if (r) return r < 0 ? PG_EXIT_OK : r;
  if (!o.model) return pg_tool_usage_error(PROG, "prove-bytes needs --model");
  pg_err err;
  pg_spm *m;
  pg_spm_tables tab;
  if (open_model(&o, &m, &tab, &err) != PG_OK) return pg_tool_fail(PROG, &err);
  const uint32_t vocab = pg_spm_vocab_size(m);
  const int32_t bos = pg_spm_info_of(m)->bos_id;
  /* per-id decoded bytes, computed once from the pieces (not from the tables) */
  uint32_t *dec = malloc(vocab * sizeof *dec);
  uint8_t *sp = malloc(vocab);
  if (!dec || !sp) {
    free(dec);
    free(sp);
    pg_spm_tables_free(&tab);
    pg_spm_free(m);
    pg_err_set(&err, PG_E_NOMEM, o.model, PG_NO_OFFSET, "cannot allocate the per-id byte table");
    return pg_tool_fail(PROG, &err);
  }
  for (uint32_t k = 0; k < vocab; k++) {
    int s;
    dec[k] = piece_text_bytes(pg_spm_piece_at(m, k), &s);
    sp[k] = (uint8_t)s;
  }
  pg_enc *enc = NULL;
  int have_enc = pg_enc_available() && pg_enc_open(&enc, o.model, &err) == PG_OK;
  json_t *all = json_array();
  int status = PG_EXIT_OK;
  for (int i = optind; i < argc && status != PG_EXIT_ERROR; i++) {
    pg_shard_set *set = NULL;
    if (pg_shard_set_open_ex(&set, argv[i], PG_SHARD_SKIP_BYTES, &err) != PG_OK ||
        pg_shard_set_check_vocab(set, vocab, &err) != PG_OK) {
      status = pg_tool_fail(PROG, &err);
      pg_shard_set_free(set); /* opened but holding an id outside the vocabulary */
      break;
    }
    const double t0 = pg_now();
    const uint64_t n = pg_shard_set_count(set);
    uint16_t *tok = malloc((n ? n : 1) * sizeof *tok);
    if (!tok || pg_shard_set_copy(set, 0, n, tok, &err) != PG_OK) {
      if (!tok) pg_err_set(&err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
      status = pg_tool_fail(PROG, &err);
      free(tok);
      pg_shard_set_free(set);
      break;
    }
    uint64_t table_total = 0, decoded_total = 0, ndis = 0, unknown = 0;
    disagreement shown[20];
    for (uint64_t t = 1; t < n; t++) {
      const uint32_t x = tok[t - 1], y = tok[t];
      const uint32_t tb = pg_spm_pair_bytes_unchecked(&tab, x, y);
      uint32_t db = dec[y];
      if (sp[y] && (int32_t)x == bos) db -= 1; /* a document's text starts without its space */
      if (pg_spm_piece_at(m, y)->type == PG_SPM_UNKNOWN) unknown++;
      table_total += tb;
      decoded_total += db;
      if (tb != db) {
        if (ndis < 20) shown[ndis] = (disagreement){(uint64_t)t, x, y, tb, db};
        ndis++;
      }
    }
    /* document level, through SentencePiece's own decoder */
    uint64_t ndocs = 0, docs_ok = 0, docs_bad = 0, first_bad_doc = 0;
    pg_doc *docs = NULL;
    if (have_enc && pg_docs_list(tok, n, argv[i], &docs, &ndocs, NULL, &err) == PG_OK) {
      int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
      if (!ids) {
        pg_err_set(&err, PG_E_NOMEM, argv[i], PG_NO_OFFSET, "cannot allocate %llu ids",
                   (unsigned long long)n);
        status = pg_tool_fail(PROG, &err);
        free(docs);
        free(tok);
        pg_shard_set_free(set);
        break;
      }
      for (uint64_t d = 0; d < ndocs; d++) {
        const uint64_t s0 = docs[d].start, len = docs[d].len;
        /* the document's own tokens: drop its BOS, and the next document's BOS at the end */
        uint64_t end = s0 + len;
        if (end > s0 + 1 && end - 1 < n && (int32_t)tok[end - 1] == bos && d + 1 < ndocs) end--;
        size_t k = 0;
        for (uint64_t q = s0 + 1; q < end; q++) ids[k++] = tok[q];
        char *text;
        size_t tl;
        if (pg_enc_decode(enc, ids, k, &text, &tl, &err) != PG_OK) {
          docs_bad++;
          continue;
        }
        free(text);
        uint64_t tb = 0;
        for (uint64_t q = s0 + 1; q < s0 + len; q++)
          tb += pg_spm_pair_bytes_unchecked(&tab, tok[q - 1], tok[q]);
        if (tb == tl) {
          docs_ok++;
        } else {
          if (!docs_bad) first_bad_doc = d;
          docs_bad++;
        }
      }
      free(ids);
    }
    const double dt = pg_now() - t0;
    const int proven = ndis == 0 && docs_bad == 0;
    if (!proven) status = PG_EXIT_VERDICT;
    json_t *j = json_object();
    json_object_set_new(j, "shards", pg_json_cstr(argv[i]));
    json_object_set_new(j, "model", pg_json_cstr(o.model));
    json_object_set_new(j, "targets", json_integer(n ? (json_int_t)n - 1 : 0));
    json_object_set_new(j, "table_bytes", json_integer((json_int_t)table_total));
    json_object_set_new(j, "decoded_bytes", json_integer((json_int_t)decoded_total));
    json_object_set_new(j, "token_disagreements", json_integer((json_int_t)ndis));
    json_object_set_new(j, "unknown_targets", json_integer((json_int_t)unknown));
    json_object_set_new(j, "documents_checked_with_sentencepiece",
                        have_enc ? json_integer((json_int_t)(docs_ok + docs_bad)) : json_null());
    json_object_set_new(j, "document_disagreements", json_integer((json_int_t)docs_bad));
    json_object_set_new(j, "proven", json_boolean(proven));
    json_t *dj = json_array();
    for (uint64_t k = 0; k < ndis && k < 20; k++)
      json_array_append_new(dj, json_pack("{s:I,s:i,s:i,s:i,s:i}", "target", (json_int_t)shown[k].pos,
                                          "prev", (int)shown[k].prev, "id", (int)shown[k].tgt,
                                          "table", (int)shown[k].table, "decoded",
                                          (int)shown[k].decoded));
    json_object_set_new(j, "first_disagreements", dj);
    if (o.json) {
      json_array_append(all, j);
    } else {
      char b1[32], b2[32], b3[32];
      printf("%s (%s)\n", pg_safe(argv[i]), pg_safe(o.model));
      printf("  targets        %s\n", pg_fmt_u64(b1, n ? n - 1 : 0));
      printf("  table bytes    %s  (challenge formula: base[y] + (lead[y] and not boundary[x]))\n",
             pg_fmt_u64(b1, table_total));
      printf("  decoded bytes  %s  (UTF-8 of each target's piece text)\n",
             pg_fmt_u64(b2, decoded_total));
      printf("  disagreements  %s tokens", pg_fmt_u64(b3, ndis));
      if (unknown) printf("; %s targets are <unk> (their bytes are lost)", pg_fmt_u64(b1, unknown));
      printf("\n");
      for (uint64_t k = 0; k < ndis && k < 20; k++) {
        const pg_spm_piece *pp = pg_spm_piece_at(m, shown[k].prev), *pt = pg_spm_piece_at(m, shown[k].tgt);
        printf("    target %llu: prev %u '", (unsigned long long)shown[k].pos, shown[k].prev);
        pg_print_safe(stdout, pp->piece, pp->len);
        printf("' -> %u '", shown[k].tgt);
        pg_print_safe(stdout, pt->piece, pt->len);
        printf("': table %u, decoded %u\n", shown[k].table, shown[k].decoded);
      }
      if (have_enc)
        printf("  documents      %s decoded by SentencePiece; %s agree with the table totals%s\n",
               pg_fmt_u64(b1, docs_ok + docs_bad), pg_fmt_u64(b2, docs_ok),
               docs_bad ? "" : "");
      else
        printf("  documents      not checked (built without the SentencePiece library)\n");
      if (docs_bad) printf("  first disagreeing document: %llu\n", (unsigned long long)first_bad_doc);
      printf("  verdict        %s (%.2f s)\n",
             proven ? "PROVEN: the byte tables count every target exactly"
                    : "DISAGREEMENTS: the byte tables do not match the text",
             dt);
    }
    json_decref(j);
    free(docs);
    free(tok);
    pg_shard_set_free(set);
  }
  if (o.json && status != PG_EXIT_ERROR) {
    json_dumpf(all, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
  }
  json_decref(all);
  pg_enc_free(enc);
  free(dec);
  free(sp);
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
