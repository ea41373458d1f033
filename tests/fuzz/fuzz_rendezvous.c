/* fuzz_rendezvous.c: libFuzzer target for the reader of the NCCL rendezvous file (pg_comm.h,
 * spec/engine.md §8.9): parse arbitrary bytes for a run of 1 to 8 ranks (the count taken from
 * byte 8, the count field's low byte, mod 8, with 0 meaning 8, so a valid file is read as one of
 * its own run). A refusal must be PG_E_MALFORMED with a one-line message and leave the id
 * untouched; an accepted file must be exactly the 144 bytes the writer makes for that count and
 * that id. Every broken invariant aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_comm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const int n = size > 8 && data[8] % 8 ? data[8] % 8 : 8;
  pg_comm_id id, before;
  memset(&id, 0x5a, sizeof id);
  before = id;
  pg_err err;
  const int rc = pg_comm_rendezvous_parse(data, size, n, "rdv", &id, &err);
  if (rc != PG_OK) {
    if (rc != PG_E_MALFORMED || err.status != rc || !err.msg[0] || strchr(err.msg, '\n') ||
        !memchr(err.msg, '\0', sizeof err.msg))
      abort();
    if (memcmp(&id, &before, sizeof id)) abort();
    return 0;
  }
  /* accepted: the writer's bytes for (n, id) */
  unsigned char want[PG_COMM_RDV_BYTES] = {'P', 'G', 'N', 'C', 'C', 'L', 'I', 'D',
                                           (unsigned char)n};
  memcpy(want + 16, id.b, sizeof id.b);
  if (size != PG_COMM_RDV_BYTES || memcmp(data, want, sizeof want)) abort();
  return 0;
}
