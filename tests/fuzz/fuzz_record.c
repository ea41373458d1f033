/* fuzz_record.c: libFuzzer target for the record-folder readers: the text-mode UTF-8 count of a
 * script and the submission.json claim parser, on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t n, crlf;
  pg_err err;
  if (pg_record_code_bytes(data, size, &n, &crlf, "train_gpt.py", &err) == PG_OK) {
    if (n + crlf != size) abort();
  } else if (err.status != PG_E_UTF8 || strchr(err.msg, '\n')) {
    abort();
  }
  pg_record_claims c;
  if (pg_record_parse_claims(&c, data, size, "submission.json", &err) != PG_OK &&
      strchr(err.msg, '\n'))
    abort();
  return 0;
}
