/* pg_spm.h: a hardened reader of SentencePiece .model files (protobuf ModelProto, decoded by hand)
 * and the challenge's per-token byte tables built from one (build_sentencepiece_luts).
 *
 * The reader decodes the wire format with every varint, length and nesting bounds-checked,
 * refuses what SentencePiece itself would refuse to load (empty or duplicate pieces, no UNKNOWN
 * piece, bad byte pieces) and piece types outside 1..6, and keeps a copy of everything it exposes,
 * so the input may be released after opening. Errors are one line "FILE: offset N: what".
 * spec/tokenizer.md is the normative description. */
#ifndef PG_SPM_H
#define PG_SPM_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_SPM_MAX_FILE ((size_t)64 << 20) /* .model bytes; PG_E_LIMIT above */
#define PG_SPM_MAX_PIECES 1000000u         /* pieces per model; PG_E_LIMIT above */
#define PG_SPM_MAX_TABLE (1u << 24)        /* byte-table entries; PG_E_LIMIT above */
#define PG_SPM_MAX_BASE 32767u /* base + lead of one piece (the challenge's table is int16) */

/* ModelProto.SentencePiece.Type (the protobuf enum numbers). */
enum pg_spm_type {
  PG_SPM_NORMAL = 1,
  PG_SPM_UNKNOWN = 2,
  PG_SPM_CONTROL = 3,
  PG_SPM_USER_DEFINED = 4,
  PG_SPM_UNUSED = 5,
  PG_SPM_BYTE = 6
};
/* "NORMAL" etc.; "?" outside 1..6. */
const char *pg_spm_type_name(int type);

/* TrainerSpec.ModelType. */
enum pg_spm_model_type { PG_SPM_UNIGRAM = 1, PG_SPM_BPE = 2, PG_SPM_WORD = 3, PG_SPM_CHAR = 4 };
/* "UNIGRAM" etc.; "?" for other values. */
const char *pg_spm_model_type_name(int model_type);

/* One piece: a read-only view, valid until pg_spm_free. */
typedef struct pg_spm_piece {
  const char *piece; /* valid UTF-8, len bytes, NUL-terminated (it may also contain NULs) */
  uint32_t len;      /* bytes, >= 1 */
  float score;       /* 0 when absent */
  int type;          /* enum pg_spm_type; NORMAL when absent */
  uint64_t offset;   /* file offset of the piece's submessage (its first payload byte) */
} pg_spm_piece;

/* Bits of pg_spm_info.present: which fields the file wrote (the others hold proto defaults). */
enum {
  PG_SPM_HAS_TRAINER = 1u << 0,
  PG_SPM_HAS_NORMALIZER = 1u << 1,
  PG_SPM_HAS_MODEL_TYPE = 1u << 2,
  PG_SPM_HAS_VOCAB_SIZE = 1u << 3,
  PG_SPM_HAS_BYTE_FALLBACK = 1u << 4,
  PG_SPM_HAS_UNK_ID = 1u << 5,
  PG_SPM_HAS_BOS_ID = 1u << 6,
  PG_SPM_HAS_EOS_ID = 1u << 7,
  PG_SPM_HAS_PAD_ID = 1u << 8,
  PG_SPM_HAS_NAME = 1u << 9,
  PG_SPM_HAS_ADD_DUMMY_PREFIX = 1u << 10,
  PG_SPM_HAS_REMOVE_EXTRA_WS = 1u << 11,
  PG_SPM_HAS_ESCAPE_WS = 1u << 12
};

/* The model-wide facts. Fields the file leaves out hold the defaults of sentencepiece_model.proto
 * (shown in brackets). */
typedef struct pg_spm_info {
  uint32_t vocab_size; /* number of pieces (what sp.vocab_size() returns) */
  /* TrainerSpec (ModelProto field 2) */
  int32_t model_type;         /* field 3 [UNIGRAM]; other numbers are kept as read */
  int32_t trainer_vocab_size; /* field 4 [8000]; not checked against vocab_size */
  int byte_fallback;          /* field 35 [false] */
  int32_t unk_id;             /* field 40 [0] */
  int32_t bos_id;             /* field 41 [1] */
  int32_t eos_id;             /* field 42 [2] */
  int32_t pad_id;             /* field 43 [-1] */
  /* NormalizerSpec (ModelProto field 3) */
  const char *normalizer_name;   /* field 1 [""]: NUL-terminated UTF-8 */
  int add_dummy_prefix;          /* field 3 [true] */
  int remove_extra_whitespaces;  /* field 4 [true] */
  int escape_whitespaces;        /* field 5 [true] */
  unsigned present;              /* PG_SPM_HAS_* bits */
  /* Derived from the pieces */
  int32_t unk_piece_id;          /* the one UNKNOWN piece (always present in an open model) */
  int32_t space_id;              /* the piece "\xE2\x96\x81" (U+2581), or -1 */
  uint32_t type_count[7];        /* pieces per type; index = enum pg_spm_type, [0] unused */
} pg_spm_info;

/* An open, validated model (opaque). */
typedef struct pg_spm pg_spm;

/* Decode len bytes at data (only read during the call). name is used in messages ("<memory>"
 * when NULL). Statuses: PG_E_TRUNCATED (the data ends inside a field), PG_E_PROTOBUF (bad wire
 * format: overlong varint, field 0, groups, wire types 6/7, a known field with the wrong wire
 * type, a length past the end of its enclosing message), PG_E_PIECE_TYPE, PG_E_UTF8 (a piece or
 * the normalizer name), PG_E_LIMIT (file size, piece count), PG_E_VOCAB (no pieces),
 * PG_E_DUPLICATE (two pieces with the same string), PG_E_MALFORMED (an empty piece, no or two
 * UNKNOWN pieces, byte pieces that are not exactly <0x00>..<0xFF> with byte_fallback),
 * PG_E_NOMEM, PG_E_ARG. */
int pg_spm_open_mem(pg_spm **out, const uint8_t *data, size_t len, const char *name, pg_err *err);
/* Read path (at most PG_SPM_MAX_FILE bytes) and decode it; adds PG_E_IO. */
int pg_spm_open_file(pg_spm **out, const char *path, pg_err *err);
void pg_spm_free(pg_spm *m);

/* The name given at opening. */
const char *pg_spm_name(const pg_spm *m);
/* Number of pieces (ids are 0..vocab_size-1). */
uint32_t pg_spm_vocab_size(const pg_spm *m);
/* The piece with this id; NULL when id >= vocab_size. */
const pg_spm_piece *pg_spm_piece_at(const pg_spm *m, uint32_t id);
/* The model-wide facts. */
const pg_spm_info *pg_spm_info_of(const pg_spm *m);
/* The id of the piece whose bytes are exactly s[0..len); -1 when there is none. (Unlike
 * sp.piece_to_id, a missing piece gives -1, not the unknown id.) */
int32_t pg_spm_piece_to_id(const pg_spm *m, const char *s, size_t len);
/* The id of "\xE2\x96\x81" (U+2581), or -1. */
int32_t pg_spm_space_id(const pg_spm *m);
/* PG_E_VOCAB (naming the file) unless the model has exactly expected pieces. */
int pg_spm_check_vocab(const pg_spm *m, uint32_t expected, pg_err *err);
/* For a BYTE-shaped string "<0xHH>" (uppercase hex), its byte value 0..255; else -1. */
int pg_spm_byte_value(const char *s, size_t len);

/* ---- the challenge's byte tables ---- */

/* Per id, exactly as build_sentencepiece_luts builds them for table_size = max(vocab, requested):
 *   CONTROL, UNKNOWN, UNUSED        base 0, lead 0, boundary 1
 *   ids >= vocab                    base 0, lead 0, boundary 1
 *   BYTE                            base 1, lead 0, boundary 0
 *   NORMAL, USER_DEFINED            boundary 0; a piece starting with U+2581 has lead 1 and base =
 *                                   UTF-8 bytes after that ONE stripped U+2581; else lead 0 and
 *                                   base = its UTF-8 bytes.
 * A target y after prev x counts base[y] + (lead[y] && !boundary[x]) bytes. */
typedef struct pg_spm_tables {
  uint32_t size;     /* max(vocab, requested) */
  uint32_t vocab;    /* the model's piece count */
  int16_t *base;     /* [size] */
  uint8_t *lead;     /* [size] 0/1: has_leading_space */
  uint8_t *boundary; /* [size] 0/1: is_boundary_token */
} pg_spm_tables;

/* Flags for pg_spm_tables_build. */
#define PG_SPM_ALLOW_NO_SPACE 1u /* build even when the model has no usable U+2581 piece */

/* Build the tables. Without PG_SPM_ALLOW_NO_SPACE, a model whose "▁" piece is missing or is the
 * UNKNOWN piece (the challenge asserts sp.piece_to_id("▁") != sp.unk_id()) gives
 * PG_E_NO_SPACE_PIECE naming the file. PG_E_LIMIT when the size exceeds PG_SPM_MAX_TABLE or a
 * piece's base + lead exceeds PG_SPM_MAX_BASE (the challenge's int16 would overflow); PG_E_NOMEM;
 * PG_E_ARG. On failure *t is left empty (zeroed). */
int pg_spm_tables_build(pg_spm_tables *t, const pg_spm *m, uint32_t requested, unsigned flags,
                        pg_err *err);
void pg_spm_tables_free(pg_spm_tables *t);

/* Bytes of target tgt after prev, without range checks (both must be < t->size). */
static inline uint32_t pg_spm_pair_bytes_unchecked(const pg_spm_tables *t, uint32_t prev,
                                                   uint32_t tgt) {
  return (uint32_t)t->base[tgt] + (uint32_t)(t->lead[tgt] && !t->boundary[prev]);
}
/* The same with range checks: PG_E_TOKEN_RANGE when prev or tgt >= t->size. */
int pg_spm_pair_bytes(const pg_spm_tables *t, uint32_t prev, uint32_t tgt, uint32_t *bytes,
                      pg_err *err);
/* Sum of bytes over n pairs (x[i] = prev, y[i] = target); PG_E_TOKEN_RANGE naming the index.
 * per_target (may be NULL) receives each pair's bytes. */
int pg_spm_count_pairs_u16(const pg_spm_tables *t, const uint16_t *x, const uint16_t *y, size_t n,
                           uint64_t *total, uint32_t *per_target, pg_err *err);
int pg_spm_count_pairs_u32(const pg_spm_tables *t, const uint32_t *x, const uint32_t *y, size_t n,
                           uint64_t *total, uint32_t *per_target, pg_err *err);
/* Sum over a token stream s[0..n): targets s[1..n), each after the token before it (n-1 pairs;
 * 0 for n < 2). */
int pg_spm_count_stream_u16(const pg_spm_tables *t, const uint16_t *s, size_t n, uint64_t *total,
                            pg_err *err);
int pg_spm_count_stream_u32(const pg_spm_tables *t, const uint32_t *s, size_t n, uint64_t *total,
                            pg_err *err);

/* Totals of a table, for tests and reports. */
typedef struct pg_spm_totals {
  uint64_t base_sum;          /* sum of base over the table */
  uint32_t lead;              /* ids with lead 1 */
  uint32_t boundary;          /* ids with boundary 1 (including those >= vocab) */
  uint32_t beyond;            /* ids >= vocab */
  uint32_t type_count[7];     /* ids < vocab per piece type; index = enum pg_spm_type */
} pg_spm_totals;
/* m must be the model the tables were built from (for type_count). */
void pg_spm_tables_totals(const pg_spm_tables *t, const pg_spm *m, pg_spm_totals *out);

#ifdef __cplusplus
}
#endif
#endif
