/* test_receipt.c: the receipt library (spec/eval.md §7): receipts that pgverify wrote read back
 * field by field, a receipt built from structured inputs reads back as those inputs, and every
 * kind of damaged receipt is refused with one line that names the file and the field. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_io.h"
#include "pg_receipt.h"
#include "pgfiller.h"
#include "pgtest.h"

static char *seed_text(const char *name, size_t *len, char *path, size_t cap) {
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root, "PG_SOURCE_ROOT is not set");
  snprintf(path, cap, "%s/tests/fuzz/seeds/receipt/%s", root, name);
  uint8_t *b;
  pg_err e;
  cr_assert_eq(pg_file_read_all(path, &b, len, 1 << 20, &e), PG_OK, "%s", e.msg);
  char *t = realloc(b, *len + 1);
  cr_assert_not_null(t);
  t[*len] = '\0';
  return t;
}

static void read_seed(const char *name, pg_receipt *r) {
  char path[512];
  pg_err e;
  const char *root = getenv("PG_SOURCE_ROOT");
  cr_assert_not_null(root);
  snprintf(path, sizeof path, "%s/tests/fuzz/seeds/receipt/%s", root, name);
  cr_assert_eq(pg_receipt_read(r, path, &e), PG_OK, "%s", e.msg);
}

Test(receipt, reads_the_receipts_pgverify_wrote) {
  pg_receipt r;
  read_seed("plain.json", &r);
  cr_assert_eq(r.format, 1);
  cr_assert_str_eq(r.artifact_path, "a.pgz");
  cr_assert_eq(r.safetensors, 0);
  cr_assert_eq(r.artifact_bytes, 190500);
  cr_assert_eq(r.artifact_xxh64, UINT64_C(0xb878757d7b05c61c));
  cr_assert_eq(r.protocol.kind, PG_PROTO_PLAIN);
  cr_assert_eq(r.protocol.seq_len, 64);
  cr_assert_eq(r.protocol.report_tokens, 256);
  cr_assert_eq(r.tokens_read, 600);
  cr_assert(r.partial && !r.sidecar && r.every_target_scored_once);
  cr_assert_eq(r.result.targets, 576);
  cr_assert_eq(r.result.nchunks, 3);
  cr_assert_eq(r.result.chunks[1].first, 256);
  cr_assert_eq(r.result.chunks[2].count, 64);
  cr_assert_eq(r.nshards, 1);
  cr_assert_eq(r.shards[0].tokens, r.tokens_available);
  cr_assert_eq(r.matches_record, -1);
  cr_assert_eq(r.nwarnings, 0);
  cr_assert_eq(r.has_fp32, 0);
  pg_receipt_free(&r);

  read_seed("sliding_bf16_provenance.json", &r);
  cr_assert_eq(r.protocol.kind, PG_PROTO_SLIDING);
  cr_assert_eq(r.protocol.stride, 16);
  cr_assert_eq(r.precision, PG_PREC_BF16);
  cr_assert(r.has_fp32 && r.fp32_val_bpb > 0);
  cr_assert_eq(r.matches_record, 0);
  cr_assert_eq(r.nwarnings, 1);
  cr_assert(strstr(r.warnings[0], "tail_dup false (the record's: true)"), "%s", r.warnings[0]);
  pg_receipt_free(&r);

  read_seed("ttt_chunk_adamw.json", &r);
  cr_assert_eq(r.protocol.kind, PG_PROTO_TTT_CHUNK);
  cr_assert_eq(r.protocol.opt, PG_OPTIM_ADAMW);
  cr_assert_eq(r.protocol.chunk_tokens, 256);
  cr_assert_eq(r.result.train_steps, 2);
  pg_receipt_free(&r);

  read_seed("ttt_lora_safetensors.json", &r);
  cr_assert_eq(r.safetensors, 1);
  cr_assert_eq(r.protocol.kind, PG_PROTO_TTT_LORA);
  cr_assert_eq(r.protocol.lora_rank, 4);
  cr_assert_eq(r.nwarnings, 1);
  pg_receipt_free(&r);

  read_seed("ttt_phased.json", &r);
  cr_assert_eq(r.protocol.kind, PG_PROTO_TTT_PHASED);
  cr_assert_eq(r.protocol.phases, 2);
  cr_assert_eq(r.protocol.prefix_docs, 4);
  pg_receipt_free(&r);
}

/* A receipt built from structured inputs, written atomically, reads back as those inputs; the
 * text is the same for the same inputs. */
Test(receipt, built_written_and_read_back) {
  pg_receipt s;
  read_seed("plain.json", &s);
  pg_arch arch;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&arch, s.arch_json, strlen(s.arch_json), "arch", &e), PG_OK);
  pg_protocol p;
  pg_protocol_defaults(&p, PG_PROTO_TTT_CHUNK);
  p.lr = 0.0025;
  p.epochs = 2;
  pg_eval_chunk ch[2] = {{0, 100, 250.5, 300, 0, 2}, {100, 99, 240.25, 280, 0, 2}};
  pg_eval_result res = {.sum = {490.75, 199, 580}, .val_loss = 490.75 / 199,
                        .val_bpb = 1.2, .tokens = 200, .targets = 199, .scored = 199,
                        .train_steps = 4, .chunks = ch, .nchunks = 2};
  pg_receipt_shard sh[2] = {{"v/fineweb_val_0.bin", 150, 0x0123456789abcdefu},
                            {"v/fineweb_val_1.bin", 50, 42}};
  const char *warns[] = {"a warning"};
  pg_receipt_provenance prov = {.arch_source = "the artifact's arch.json",
                                .record_protocol = "--protocol ttt-chunk",
                                .record_protocol_source = "the arch's follows.protocol",
                                .matches_record = 0, .differences = "lr 0.0025 (x)",
                                .warnings = warns, .nwarnings = 1};
  pg_receipt_in in = {.version = "9.9", .artifact_path = "w.safetensors", .safetensors = 1,
                      .artifact_bytes = 77, .artifact_xxh64 = UINT64_MAX, .arch = &arch,
                      .tokenizer_source = "t.model", .tokenizer_pieces = 1024,
                      .tokenizer_xxh64 = 1, .val_pattern = "v/*.bin", .shards = sh, .nshards = 2,
                      .tokens_available = 200, .tokens_read = 200, .bytes_pattern = "b/*.bin",
                      .protocol = &p, .provenance = &prov, .result = &res, .engine = "cpu",
                      .devices = "cpu: 3 threads", .threads = 3, .precision = PG_PREC_FP32,
                      .seconds_total = 1.5};
  char *text, *again;
  cr_assert_eq(pg_receipt_build(&in, &text, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_receipt_build(&in, &again, &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(text, again);
  cr_assert_eq(text[strlen(text) - 1], '\n');
  free(again);
  char dir[64], path[128];
  pgtest_mkdtemp(dir, "pgreceipt");
  snprintf(path, sizeof path, "%s/r.json", dir);
  cr_assert_eq(pg_receipt_write(path, text, &e), PG_OK, "%s", e.msg);
  pg_receipt r;
  cr_assert_eq(pg_receipt_read(&r, path, &e), PG_OK, "%s", e.msg);
  char diff[256];
  cr_assert_eq(pg_receipt_protocol_diff(&p, &r.protocol, diff, sizeof diff), 0, "%s", diff);
  cr_assert_eq(r.protocol.lr, 0.0025);
  cr_assert_str_eq(r.version, "9.9");
  cr_assert_eq(r.safetensors, 1);
  cr_assert_eq(r.artifact_xxh64, UINT64_MAX);
  cr_assert_eq(r.nshards, 2);
  cr_assert_str_eq(r.shards[1].path, "v/fineweb_val_1.bin");
  cr_assert_eq(r.shards[0].xxh64, 0x0123456789abcdefu);
  cr_assert(r.sidecar);
  cr_assert_str_eq(r.bytes_pattern, "b/*.bin");
  cr_assert(!r.partial);
  cr_assert_eq(r.result.nchunks, 2);
  cr_assert_eq(r.result.chunks[1].nats, 240.25);
  cr_assert_eq(r.result.chunks[1].train_steps, 2);
  cr_assert_eq(r.result.sum.nats, 490.75);
  cr_assert_eq(r.matches_record, 0);
  cr_assert_str_eq(r.warnings[0], "a warning");
  cr_assert_eq(r.threads, 3);
  cr_assert_str_eq(r.engine, "cpu");
  cr_assert_str_eq(r.devices, "cpu: 3 threads");
  cr_assert_str_eq(r.driver, "");
  pg_receipt_free(&r);
  free(text);
  pg_receipt_free(&s);
  pgtest_rm_rf(dir);
}

/* Two protocols that differ name each parameter that differs; batch and report_tokens do not
 * count. */
Test(receipt, protocol_diff_names_the_parameters) {
  pg_protocol a, b;
  pg_protocol_defaults(&a, PG_PROTO_SLIDING);
  pg_protocol_defaults(&b, PG_PROTO_SLIDING);
  char buf[256];
  b.batch = 3;
  b.report_tokens = 64;
  cr_assert_eq(pg_receipt_protocol_diff(&a, &b, buf, sizeof buf), 0, "%s", buf);
  b.stride = 32;
  b.tail_dup = 1;
  cr_assert_eq(pg_receipt_protocol_diff(&a, &b, buf, sizeof buf), 2);
  cr_assert_str_eq(buf, "stride 64 (the record's: 32), tail_dup false (the record's: true)");
  pg_protocol_defaults(&b, PG_PROTO_PLAIN);
  cr_assert_eq(pg_receipt_protocol_diff(&a, &b, buf, sizeof buf), 1);
  cr_assert_str_eq(buf, "protocol sliding (the record's: plain)");
}

/* One damage of the seed: replace the first `from` by `to`; the reader must say `want` with
 * status st in one line naming the file. */
static void refused(const char *from, const char *to, int st, const char *want) {
  size_t len;
  char path[512];
  char *t = seed_text("sliding_bf16_provenance.json", &len, path, sizeof path);
  char *at = strstr(t, from);
  cr_assert_not_null(at, "%s", from);
  size_t fl = strlen(from), tl = strlen(to);
  char *m = malloc(len - fl + tl + 1);
  cr_assert_not_null(m);
  memcpy(m, t, (size_t)(at - t));
  memcpy(m + (at - t), to, tl);
  memcpy(m + (at - t) + tl, at + fl, len - (size_t)(at - t) - fl + 1);
  pg_receipt r;
  pg_err e;
  int rc = pg_receipt_parse(&r, m, strlen(m), "x.receipt.json", &e);
  cr_assert_eq(rc, st, "%s -> %s: %d %s", from, to, rc, rc ? e.msg : "");
  cr_assert(strncmp(e.msg, "x.receipt.json: ", 16) == 0, "%s", e.msg);
  cr_assert_null(strchr(e.msg, '\n'));
  cr_assert(strstr(e.msg, want), "%s -> %s: %s", from, to, e.msg);
  cr_assert_null(r.version);
  free(m);
  free(t);
}

Test(receipt, damaged_receipts_are_refused_in_one_line) {
  refused("{", "[", PG_E_JSON, "receipt:");
  refused("\"receipt_format\": 1", "\"receipt_format\": 2", PG_E_VERSION, "receipt_format 2");
  refused("\"receipt_format\": 1", "\"receipt_format\": \"1\"", PG_E_MALFORMED,
          "pgverify.receipt_format: not an integer");
  refused("\"kind\": \"artifact\"", "\"kind\": \"zip\"", PG_E_MALFORMED, "artifact.kind");
  refused("\"xxh64\": \"b878757d7b05c61c\"", "\"xxh64\": \"b878757d7b05c61\"", PG_E_MALFORMED,
          "artifact.xxh64: not 16 hex digits");
  refused("\"xxh64\": \"b878757d7b05c61c\"", "\"xxh64\": \"B878757D7B05C61C\"", PG_E_MALFORMED,
          "artifact.xxh64");
  refused("\"bytes\": 190500", "\"bytes\": -1", PG_E_MALFORMED, "artifact.bytes: out of range");
  refused("\"tokens_read\": 600", "\"tokens_read\": 600000000", PG_E_MALFORMED,
          "val.tokens_read: more than tokens_available");
  refused("\"partial\": true", "\"partial\": false", PG_E_MALFORMED, "val.partial");
  refused("\"stride\": 16", "\"stride\": 0", PG_E_MALFORMED, "receipt protocol:");
  refused("\"stride\": 16", "\"strides\": 16", PG_E_MALFORMED,
          "protocol.strides: not a protocol parameter");
  refused("\"name\": \"sliding\"", "\"name\": \"slide\"", PG_E_MALFORMED, "protocol.name");
  refused("\"every_target_scored_once\": true", "\"every_target_scored_once\": false",
          PG_E_MALFORMED, "result.every_target_scored_once");
  refused("\"chunks\": [\n      [\n        0,", "\"chunks\": [\n      [\n        -1,",
          PG_E_MALFORMED, "result.chunks[0]");
  refused("\"chunks\": [\n      [", "\"chunks\": [\n      [1],\n      [", PG_E_MALFORMED,
          "result.chunks[0]: not an array of six values");
  refused("\"precision\": \"bf16\"", "\"precision\": \"fp32\"", PG_E_MALFORMED,
          "result_fp32: present without bf16 precision");
  refused("\"threads\": 1", "\"threads\": 0", PG_E_MALFORMED, "engine.threads");
  refused("\"protocol_matches_record\": false", "\"protocol_matches_record\": 0",
          PG_E_MALFORMED, "provenance.protocol_matches_record");
  refused("\"warnings\": [", "\"warnings\": [7, ", PG_E_MALFORMED,
          "provenance.warnings[0]: not a string");
  refused("\"val_bpb\": ", "\"val_bpb\": \"x\", \"y\": ", PG_E_MALFORMED,
          "result.val_bpb: not a number");
  refused("\"pgverify\": {", "\"pgverify\": {\"name\": 1, \"name\": 2,", PG_E_JSON, "duplicate");
  refused("\"layers\": 2", "\"layers\": 0", PG_E_ARG, "layers");
}

/* A file above the size limit is refused before it is read. */
Test(receipt, a_huge_file_is_refused) {
  char dir[64], path[128];
  pgtest_mkdtemp(dir, "pgreceipt");
  snprintf(path, sizeof path, "%s/big.json", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)PG_RECEIPT_MAX_FILE + 1), 0);
  close(fd);
  pg_receipt r;
  pg_err e;
  cr_assert_eq(pg_receipt_read(&r, path, &e), PG_E_LIMIT, "%s", e.msg);
  cr_assert(strstr(e.msg, path), "%s", e.msg);
  pgtest_rm_rf(dir);
}

/* The arch is kept as this build reads it: a receipt that leaves out settings at their defaults
 * reads back as the same receipt written again, which spells them out (found by fuzz_receipt:
 * the round trip differed). */
Test(receipt, arch_kept_in_canonical_form) {
  size_t len;
  char path[512];
  char *t = seed_text("sliding_bf16_provenance.json", &len, path, sizeof path);
  pg_receipt a, b;
  pg_err e;
  cr_assert_eq(pg_receipt_parse(&a, t, len, "a.json", &e), PG_OK, "%s", e.msg);
  const char *from = "\"parallel_post_init\": 1.0,";
  char *at = strstr(t, from);
  cr_assert_not_null(at, "the seed has no %s", from);
  memmove(at, at + strlen(from), strlen(at + strlen(from)) + 1);
  cr_assert_eq(pg_receipt_parse(&b, t, strlen(t), "b.json", &e), PG_OK, "%s", e.msg);
  cr_assert_str_eq(a.arch_json, b.arch_json);
  pg_receipt_free(&a);
  pg_receipt_free(&b);
  free(t);
}

/* The variants that leave targets unscored (spec/eval.md §3.1, §3.2) are written with their
 * protocol's name for them and the count never scored, and read back; a receipt whose counts
 * disagree, or that names an unknown variant, is refused. Receipts written before these fields
 * (the seeds above) read as scoring every target. */
Test(receipt, a_variant_that_skips_targets_reads_back) {
  pg_receipt s;
  read_seed("plain.json", &s);
  pg_arch arch;
  pg_err e;
  cr_assert_eq(pg_arch_parse(&arch, s.arch_json, strlen(s.arch_json), "arch", &e), PG_OK);
  cr_assert_eq(s.result.unscored, 0);
  pg_protocol p;
  pg_protocol_defaults(&p, PG_PROTO_SLIDING);
  p.seq_len = 64;
  p.stride = 24;
  p.sliding_variant = PG_SLIDE_LAST_S;
  pg_eval_chunk ch[1] = {{0, 984, 2000.5, 3000, 0, 0}};
  pg_eval_result res = {.sum = {2000.5, 984, 3000}, .val_loss = 2000.5 / 984, .val_bpb = 1.5,
                        .tokens = 1025, .targets = 1024, .scored = 984, .unscored = 40,
                        .windows = 41, .forwards = 6, .chunks = ch, .nchunks = 1};
  pg_receipt_shard sh[1] = {{"v/fineweb_val_0.bin", 1025, 7}};
  pg_receipt_provenance prov = {.arch_source = "the artifact's arch.json", .matches_record = -1};
  pg_receipt_in in = {.version = "9.9", .artifact_path = "a.pgz", .artifact_bytes = 77,
                      .arch = &arch, .tokenizer_source = "artifact", .tokenizer_pieces = 1024,
                      .val_pattern = "v/*.bin", .shards = sh, .nshards = 1,
                      .tokens_available = 1025, .tokens_read = 1025, .protocol = &p,
                      .provenance = &prov, .result = &res, .engine = "cpu",
                      .devices = "cpu: 1 threads", .threads = 1, .precision = PG_PREC_FP32};
  char *text;
  cr_assert_eq(pg_receipt_build(&in, &text, &e), PG_OK, "%s", e.msg);
  cr_assert(strstr(text, "\"sliding_variant\": \"last-s\"") && strstr(text, "\"unscored\": 40") &&
            strstr(text, "\"every_target_scored\": false"), "%s", text);
  pg_receipt r;
  cr_assert_eq(pg_receipt_parse(&r, text, strlen(text), "v.receipt.json", &e), PG_OK, "%s",
               e.msg);
  cr_assert_eq(r.protocol.sliding_variant, PG_SLIDE_LAST_S);
  cr_assert_eq(r.result.unscored, 40);
  cr_assert(!r.every_target_scored_once);
  char diff[256];
  pg_protocol std;
  pg_protocol_defaults(&std, PG_PROTO_SLIDING);
  std.seq_len = 64;
  std.stride = 24;
  cr_assert_eq(pg_receipt_protocol_diff(&std, &r.protocol, diff, sizeof diff), 1);
  cr_assert_str_eq(diff, "sliding_variant \"standard\" (the record's: \"last-s\")");
  pg_receipt_free(&r);
  static const char *const damage[][3] = {
      {"\"unscored\": 40", "\"unscored\": 41", "result.unscored"},
      {"\"every_target_scored\": false", "\"every_target_scored\": true",
       "result.every_target_scored"},
      {"\"last-s\"", "\"last\"", "protocol.sliding_variant: not a variant"},
      {"\"last-s\"", "7", "protocol.sliding_variant: not a variant"},
  };
  for (size_t i = 0; i < sizeof damage / sizeof *damage; i++) {
    char *at = strstr(text, damage[i][0]);
    cr_assert_not_null(at);
    size_t fl = strlen(damage[i][0]), tl = strlen(damage[i][1]), len = strlen(text);
    char *m = malloc(len - fl + tl + 1);
    cr_assert_not_null(m);
    memcpy(m, text, (size_t)(at - text));
    memcpy(m + (at - text), damage[i][1], tl);
    memcpy(m + (at - text) + tl, at + fl, len - (size_t)(at - text) - fl + 1);
    cr_assert_eq(pg_receipt_parse(&r, m, strlen(m), "v.receipt.json", &e), PG_E_MALFORMED,
                 "%s", damage[i][1]);
    cr_assert(strstr(e.msg, damage[i][2]) && !strchr(e.msg, '\n'), "%s", e.msg);
    free(m);
  }
  free(text);
  pg_receipt_free(&s);
  read_seed("sliding_last_s.json", &r); /* the fuzz seed of this shape */
  cr_assert_eq(r.protocol.sliding_variant, PG_SLIDE_LAST_S);
  cr_assert_eq(r.result.unscored, 48);
  pg_receipt_free(&r);
}

/* A receipt's cap is larger (it lists chunks and files) but still refuses 3 MB of "{}," that
 * would cost the parser more than 240 MB. */
Test(receipt, json_filler_refused_before_parsing) {
  size_t len;
  char *t = pgfiller_json("chunks", PG_RECEIPT_MAX_VALUES - 2, &len);
  pg_receipt r;
  pg_err e;
  cr_assert_eq(pg_receipt_parse(&r, t, len, "x.receipt.json", &e), PG_E_LIMIT, "%s", e.msg);
  char want[128];
  snprintf(want, sizeof want, "x.receipt.json: offset %llu: more than %llu JSON values",
           (unsigned long long)PGFILLER_OVER("chunks", PG_RECEIPT_MAX_VALUES),
           (unsigned long long)PG_RECEIPT_MAX_VALUES);
  cr_assert(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
  free(t);
}
