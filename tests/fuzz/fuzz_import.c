/* fuzz_import.c: libFuzzer target for pgimport's reading of a record's file (src/submit/
 * pg_import.h): the outer layer (decoded bytes capped at 16 MiB), the torch.save reader, the
 * record formats, the per-group layout (PGRP: this build reads its group streams as stored
 * bytes and runs no lrzip program, so the stream table, the shape manifest, the permutations
 * and the un-transposing are fuzzed; seed pgrp_stored.bin, tests/import/make_pgrp_seed.py),
 * the arch derived from the shapes, and the artifact written to memory. A
 * refusal must be one line; an artifact it writes must open, pass the whole-file check and hold
 * exactly its arch's tensors, since pgimport never writes a file pgolf would refuse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"
#include "pg_import.h"
#include "pg_weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  pg_import_opts o = {.codec = {PG_CODEC_NONE, 0, 0, 0, 0}, .have_codec = 1};
  uint8_t *out = NULL;
  size_t n = 0;
  pg_err err;
  if (pg_import_mem(data, size, "fuzz", &o, 16u << 20, &out, &n, NULL, &err) != PG_OK) {
    if (out || err.status == PG_OK || !err.msg[0] || strchr(err.msg, '\n')) abort();
    return 0;
  }
  pg_artifact *a = NULL;
  if (pg_artifact_open_mem(&a, out, n, "imported", NULL, &err) != PG_OK) abort();
  if (pg_artifact_check(a, &err) != PG_OK) abort();
  if (pg_weights_check_artifact(a, &err) != PG_OK) abort();
  pg_artifact_free(a);
  free(out);
  return 0;
}
