/* pg_lrzip.h: one lrzip stream decoded (spec/import.md §7). There is no lrzip library to link,
 * so the stream is handed to the `lrzip` program in a private temporary folder; everything about
 * that program lives in pg_lrzip.c, so an in-process decoder can replace it there alone. */
#ifndef PG_LRZIP_H
#define PG_LRZIP_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The environment variable that names the program (a path, or a name looked up on PATH);
 * unset or empty: "lrzip" on PATH. */
#define PG_LRZIP_ENV "PGOLF_LRZIP"

/* Decode the lrzip stream in[0..n) into *out (malloc'd, *out_len bytes, at most max_out:
 * PG_E_LIMIT above, checked on the size the stream declares before the program runs and on the
 * file it writes before that is read back). file and what label errors ("FILE: WHAT: ...").
 * PG_E_UNSUPPORTED when the program is not found; PG_E_DECOMPRESS when it fails (its exit
 * status in the message) or the bytes are not an lrzip stream. A -Dfuzz=true build (PG_FUZZING)
 * runs no program: the stream's bytes are taken as they are, so fuzzers reach the layout behind
 * it. */
int pg_lrzip_decode(const uint8_t *in, size_t n, const char *file, const char *what,
                    uint64_t max_out, uint8_t **out, size_t *out_len, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
