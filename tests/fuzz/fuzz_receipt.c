/* fuzz_receipt.c: libFuzzer target for the receipt reader (pg_receipt_parse) on the whole input.
 * A receipt it accepts must hold its own invariants and survive a round trip: built again from
 * the parsed struct and parsed once more, it gives the same protocol, counts, chunks and hashes.
 * Every invariant broken aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_receipt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err) {
  if (!err->status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return 0;
  pg_receipt r;
  pg_err err;
  if (pg_receipt_parse(&r, (const char *)data, size, "receipt.json", &err) != PG_OK) {
    check_line(&err);
    if (r.version || r.shards || r.result.chunks || r.warnings) abort(); /* zeroed on failure */
    return 0;
  }
  const pg_eval_result *res = &r.result;
  if (r.format != PG_RECEIPT_FORMAT || r.tokens_read > r.tokens_available ||
      r.partial != (r.tokens_read < r.tokens_available) || !r.threads ||
      r.every_target_scored_once != (res->scored == res->targets && !res->duplicates) ||
      (r.sidecar != (r.bytes_pattern != NULL)) || (r.has_fp32 && r.precision != PG_PREC_BF16))
    abort();
  pg_arch arch;
  if (pg_arch_parse(&arch, r.arch_json, strlen(r.arch_json), "arch", &err)) abort();
  pg_receipt_in in = {
      .version = r.version, .artifact_path = r.artifact_path, .safetensors = r.safetensors,
      .artifact_bytes = r.artifact_bytes, .artifact_xxh64 = r.artifact_xxh64, .arch = &arch,
      .tokenizer_source = r.tokenizer_source, .tokenizer_pieces = r.tokenizer_pieces,
      .tokenizer_xxh64 = r.tokenizer_xxh64, .val_pattern = r.val_pattern, .shards = r.shards,
      .nshards = r.nshards, .tokens_available = r.tokens_available, .tokens_read = r.tokens_read,
      .bytes_pattern = r.bytes_pattern, .protocol = &r.protocol, .result = res,
      .engine = r.engine, .devices = r.devices, .driver = r.driver, .threads = r.threads,
      .precision = r.precision};
  char *text;
  pg_receipt r2;
  if (pg_receipt_build(&in, &text, &err) != PG_OK) abort();
  if (pg_receipt_parse(&r2, text, strlen(text), "rebuilt", &err) != PG_OK) abort();
  char diff[512];
  if (pg_receipt_protocol_diff(&r.protocol, &r2.protocol, diff, sizeof diff) ||
      r.protocol.batch != r2.protocol.batch ||
      r.protocol.report_tokens != r2.protocol.report_tokens ||
      r.artifact_xxh64 != r2.artifact_xxh64 || r.tokenizer_xxh64 != r2.tokenizer_xxh64 ||
      r.nshards != r2.nshards || res->nchunks != r2.result.nchunks ||
      res->targets != r2.result.targets || res->scored != r2.result.scored ||
      strcmp(r.artifact_path, r2.artifact_path) || strcmp(r.arch_json, r2.arch_json))
    abort();
  for (size_t i = 0; i < r.nshards; i++)
    if (strcmp(r.shards[i].path, r2.shards[i].path) || r.shards[i].xxh64 != r2.shards[i].xxh64)
      abort();
  for (size_t i = 0; i < res->nchunks; i++)
    if (res->chunks[i].first != r2.result.chunks[i].first ||
        res->chunks[i].count != r2.result.chunks[i].count ||
        res->chunks[i].train_steps != r2.result.chunks[i].train_steps)
      abort();
  free(text);
  pg_receipt_free(&r2);
  pg_receipt_free(&r);
  return 0;
}
