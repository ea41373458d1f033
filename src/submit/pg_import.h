/* pg_import.h: a challenge record's quantized artifact (final_model.*.ptz) read as it is and
 * written as a pgolf artifact with the same integers, scales and passthrough tensors
 * (spec/import.md). The record's file is decompressed with a size cap, read with the torch.save
 * reader that executes nothing (pg_torchzip.h), recognised by its format tag or its structure,
 * checked against an arch (given, or derived from the shapes), and written atomically. */
#ifndef PG_IMPORT_H
#define PG_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_codec.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The record formats pgimport reads (spec/import.md §3). */
#define PG_IMPORT_FORMATS "int8-per-row, wm, pgrp"

typedef struct pg_import_opts {
  const char *format;    /* NULL: recognise; else one of PG_IMPORT_FORMATS */
  const char *arch_path; /* NULL: derive the baseline family's arch from the shapes */
  const pg_arch *arch;   /* an arch already read (a preset's); wins over arch_path */
  const char *record;    /* provenance.record (may be NULL) */
  const char *protocol;  /* provenance.protocol (may be NULL) */
  const char *tokenizer; /* a SentencePiece .model to carry (TOKENIZER section), or NULL */
  pg_codec_spec codec;   /* of the DATA and TOKENIZER sections, when have_codec */
  int have_codec;        /* 0: brotli-11/w24 */
  int threads;           /* sections compressed at once (0: 1) */
  int layout;            /* 2 (0: the default): matrices stored transposed, their rows in
                            similarity order where that is smaller (quant layout 2, as pgpack
                            writes); 1: row-major */
  int container;         /* container version written: 2 (0: the default) or 1 */
} pg_import_opts;

typedef struct pg_import_report {
  char outer[32];   /* "zlib", "zstd", "xz", "brotli", "none"; "+bshf2" when byte-shuffled */
  char format[32];  /* the format read */
  char tag[64];     /* the record's own format tag, "" when it has none */
  uint64_t record_bytes, torch_bytes, out_bytes;
  uint32_t tensors, quantized, passthrough;
  int arch_derived;
} pg_import_report;

/* Decode a record file's outer compression: zlib, zstd, xz or brotli (recognised by their
 * magic; brotli, which has none, is tried last), or none for a ZIP; then undo a "BSHF" byte
 * shuffle. *out (malloc'd) holds the torch.save bytes, at most max_out of them
 * (PG_E_LIMIT above). A file that none of them decodes is PG_E_MAGIC naming what was expected
 * and the bytes found. */
int pg_import_decode(const uint8_t *in, size_t n, const char *file, uint64_t max_out,
                     uint8_t **out, size_t *out_len, pg_import_report *rep, pg_err *err);

/* Import the record artifact at in into a pgolf artifact at out (written atomically; out may
 * not be in). rep (may be NULL) is filled. */
int pg_import_run(const char *in, const char *out, const pg_import_opts *o, pg_import_report *rep,
                  pg_err *err);

/* The same from a record file held in memory (name labels errors), the artifact written to *out
 * (malloc'd). max_decoded (0: the spec's bound) caps the decompressed bytes lower, as a fuzzer
 * does. */
int pg_import_mem(const uint8_t *rec, size_t n, const char *name, const pg_import_opts *o,
                  uint64_t max_decoded, uint8_t **out, size_t *out_len, pg_import_report *rep,
                  pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
