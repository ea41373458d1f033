/* test_spm.c: the SentencePiece .model reader on hand-built protobuf bytes (every piece type,
 * defaults, unknown and nested fields skipped, one refusal per malformed class with its status and
 * offset), the challenge's byte tables and per-target rule, the real fixture models (skipped when
 * ../shared/fixtures is absent), and the bpb accumulator. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_bpb.h"
#include "pg_io.h"
#include "pg_spm.h"
#include "pgtest.h"

#define SP "\xE2\x96\x81" /* U+2581, the SentencePiece space */

/* ---- a protobuf writer for hand-built models ---- */

typedef struct w {
  uint8_t *d;
  size_t n, cap;
} w;

static void w_put(w *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    b->d = realloc(b->d, cap);
    cr_assert_not_null(b->d);
    b->cap = cap;
  }
  if (n) memcpy(b->d + b->n, p, n);
  b->n += n;
}
static void w_u8(w *b, uint8_t c) { w_put(b, &c, 1); }
static void w_varint(w *b, uint64_t v) {
  while (v >= 0x80) {
    w_u8(b, (uint8_t)(v | 0x80));
    v >>= 7;
  }
  w_u8(b, (uint8_t)v);
}
static void w_tag(w *b, uint32_t num, int wt) { w_varint(b, ((uint64_t)num << 3) | (unsigned)wt); }
static void w_vfield(w *b, uint32_t num, uint64_t v) {
  w_tag(b, num, 0);
  w_varint(b, v);
}
static void w_bytes(w *b, uint32_t num, const void *p, size_t n) {
  w_tag(b, num, 2);
  w_varint(b, n);
  w_put(b, p, n);
}
static void w_str(w *b, uint32_t num, const char *s) { w_bytes(b, num, s, strlen(s)); }
static void w_sub(w *b, uint32_t num, w *sub) {
  w_bytes(b, num, sub->d, sub->n);
  free(sub->d);
  memset(sub, 0, sizeof *sub);
}
static void w_f32(w *b, uint32_t num, float f) {
  uint8_t x[4];
  uint32_t bits;
  memcpy(&bits, &f, 4);
  pg_st32(x, bits);
  w_tag(b, num, 5);
  w_put(b, x, 4);
}
static void w_free(w *b) {
  free(b->d);
  memset(b, 0, sizeof *b);
}

/* A piece message: type 0 leaves the type out (NORMAL by default). */
static void w_piece(w *b, const char *s, float score, int type) {
  w p = {0};
  w_str(&p, 1, s);
  w_f32(&p, 2, score);
  if (type) w_vfield(&p, 3, (uint64_t)type);
  w_sub(b, 1, &p);
}

/* The small model used by most tests:
 *   0 <unk> UNKNOWN, 1 <s> CONTROL, 2 </s> CONTROL, 3 <0x41> BYTE, ... (byte_fallback false, so no
 * BYTE here; see byte_model) */
static void w_small(w *b) {
  w_piece(b, "<unk>", 0, 2);                /* 0 */
  w_piece(b, "<s>", 0, 3);                  /* 1 */
  w_piece(b, "</s>", 0, 3);                 /* 2 */
  w_piece(b, SP, -1.0f, 0);                 /* 3: the space itself, type left out */
  w_piece(b, SP "the", -2.0f, 1);           /* 4 */
  w_piece(b, "ing", -3.0f, 1);              /* 5 */
  w_piece(b, SP "a" SP "b", -4.0f, 1);      /* 6: a second ▁ inside counts 3 bytes */
  w_piece(b, SP SP, -5.0f, 1);              /* 7: ▁▁ → one stripped, 3 left */
  w_piece(b, "\xC3\xA9", -6.0f, 1);         /* 8: é, 2 bytes */
  w_piece(b, "\xEE\x80\x81", 0, 4);         /* 9: U+E001 USER_DEFINED */
  w_piece(b, SP "\xEE\x80\x82", 0, 4);      /* 10: USER_DEFINED with a leading ▁ */
  w_piece(b, "<unused>", 0, 5);             /* 11: UNUSED */
  w_piece(b, "x" SP, -7.0f, 1);             /* 12: ▁ at the end does not lead */
}

static int open_w(const w *b, pg_spm **m, pg_err *e) {
  pg_err_clear(e);
  const int rc = pg_spm_open_mem(m, b->d, b->n, "hand.model", e);
  if (rc != PG_OK) cr_assert_null(*m);
  else cr_assert_not_null(*m);
  return rc;
}

/* Open and expect a failure with status st; the message must name the file. */
static void expect_fail(const w *b, int st, const char *needle) {
  pg_spm *m = NULL;
  pg_err e;
  const int rc = open_w(b, &m, &e);
  cr_assert_eq(rc, st, "status %d (%s), expected %d: %s", rc, pg_status_name(rc), st, e.msg);
  cr_assert_eq(e.status, st);
  cr_assert(strstr(e.msg, "hand.model") != NULL, "message does not name the file: %s", e.msg);
  if (needle) cr_assert(strstr(e.msg, needle) != NULL, "message lacks \"%s\": %s", needle, e.msg);
  pg_spm_free(m);
}

/* ---- reading ---- */

Test(spm, small_model_pieces_and_defaults) {
  w b = {0};
  w_small(&b);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_vocab_size(m), 13u);
  cr_assert_str_eq(pg_spm_name(m), "hand.model");
  const pg_spm_piece *p = pg_spm_piece_at(m, 4);
  cr_assert_not_null(p);
  cr_assert_eq(p->len, 6u);
  cr_assert_eq(memcmp(p->piece, SP "the", 6), 0);
  cr_assert_eq(p->piece[6], 0);
  cr_assert_eq(p->score, -2.0f);
  cr_assert_eq(p->type, PG_SPM_NORMAL);
  cr_assert_eq(pg_spm_piece_at(m, 3)->type, PG_SPM_NORMAL, "type defaults to NORMAL");
  cr_assert_eq(pg_spm_piece_at(m, 0)->type, PG_SPM_UNKNOWN);
  cr_assert_eq(pg_spm_piece_at(m, 1)->type, PG_SPM_CONTROL);
  cr_assert_eq(pg_spm_piece_at(m, 9)->type, PG_SPM_USER_DEFINED);
  cr_assert_eq(pg_spm_piece_at(m, 11)->type, PG_SPM_UNUSED);
  cr_assert_null(pg_spm_piece_at(m, 13));
  /* No TrainerSpec, no NormalizerSpec: the proto defaults. */
  const pg_spm_info *in = pg_spm_info_of(m);
  cr_assert_eq(in->vocab_size, 13u);
  cr_assert_eq(in->present, 0u);
  cr_assert_eq(in->model_type, PG_SPM_UNIGRAM);
  cr_assert_eq(in->trainer_vocab_size, 8000);
  cr_assert_eq(in->byte_fallback, 0);
  cr_assert_eq(in->unk_id, 0);
  cr_assert_eq(in->bos_id, 1);
  cr_assert_eq(in->eos_id, 2);
  cr_assert_eq(in->pad_id, -1);
  cr_assert_str_eq(in->normalizer_name, "");
  cr_assert_eq(in->add_dummy_prefix, 1);
  cr_assert_eq(in->remove_extra_whitespaces, 1);
  cr_assert_eq(in->escape_whitespaces, 1);
  cr_assert_eq(in->unk_piece_id, 0);
  cr_assert_eq(in->space_id, 3);
  cr_assert_eq(pg_spm_space_id(m), 3);
  cr_assert_eq(in->type_count[PG_SPM_NORMAL], 7u);
  cr_assert_eq(in->type_count[PG_SPM_UNKNOWN], 1u);
  cr_assert_eq(in->type_count[PG_SPM_CONTROL], 2u);
  cr_assert_eq(in->type_count[PG_SPM_USER_DEFINED], 2u);
  cr_assert_eq(in->type_count[PG_SPM_UNUSED], 1u);
  cr_assert_eq(in->type_count[PG_SPM_BYTE], 0u);
  /* piece_to_id: exact bytes. */
  cr_assert_eq(pg_spm_piece_to_id(m, SP "the", 6), 4);
  cr_assert_eq(pg_spm_piece_to_id(m, SP "th", 5), -1);
  cr_assert_eq(pg_spm_piece_to_id(m, SP "thee", 7), -1);
  cr_assert_eq(pg_spm_piece_to_id(m, "<s>", 3), 1);
  cr_assert_eq(pg_spm_piece_to_id(m, "", 0), -1);
  for (uint32_t i = 0; i < pg_spm_vocab_size(m); i++) {
    const pg_spm_piece *q = pg_spm_piece_at(m, i);
    cr_assert_eq(pg_spm_piece_to_id(m, q->piece, q->len), (int32_t)i);
  }
  cr_assert_eq(pg_spm_check_vocab(m, 13, &e), PG_OK);
  cr_assert_eq(pg_spm_check_vocab(m, 14, &e), PG_E_VOCAB);
  cr_assert(strstr(e.msg, "hand.model") != NULL);
  pg_spm_free(m);
  w_free(&b);
}

Test(spm, trainer_and_normalizer_fields) {
  w b = {0};
  w_small(&b);
  w t = {0};
  w_str(&t, 1, "input.txt");          /* repeated string input: skipped */
  w_vfield(&t, 3, 2);                 /* BPE */
  w_vfield(&t, 4, 13);
  w_f32(&t, 10, 0.9995f);             /* character_coverage: skipped */
  w_vfield(&t, 40, 0);
  w_vfield(&t, 41, 1);
  w_vfield(&t, 42, 2);
  w_vfield(&t, 43, (uint64_t)-1);     /* int32 -1: a 10-byte varint */
  w_str(&t, 45, "<unk>");
  w_sub(&b, 2, &t);
  w n = {0};
  w_str(&n, 1, "nmt_nfkc");
  w_bytes(&n, 2, "\x00\x01\x02\xff", 4); /* precompiled_charsmap: bytes, skipped */
  w_vfield(&n, 3, 0);
  w_vfield(&n, 4, 1);
  w_vfield(&n, 5, 0);
  w_sub(&b, 3, &n);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  const pg_spm_info *in = pg_spm_info_of(m);
  cr_assert_eq(in->model_type, PG_SPM_BPE);
  cr_assert_str_eq(pg_spm_model_type_name(in->model_type), "BPE");
  cr_assert_eq(in->trainer_vocab_size, 13);
  cr_assert_eq(in->pad_id, -1);
  cr_assert_eq(in->unk_id, 0);
  cr_assert_str_eq(in->normalizer_name, "nmt_nfkc");
  cr_assert_eq(in->add_dummy_prefix, 0);
  cr_assert_eq(in->remove_extra_whitespaces, 1);
  cr_assert_eq(in->escape_whitespaces, 0);
  cr_assert(in->present & PG_SPM_HAS_TRAINER);
  cr_assert(in->present & PG_SPM_HAS_NORMALIZER);
  cr_assert(in->present & PG_SPM_HAS_PAD_ID);
  cr_assert(in->present & PG_SPM_HAS_NAME);
  cr_assert(!(in->present & PG_SPM_HAS_BYTE_FALLBACK));
  pg_spm_free(m);
  w_free(&b);
}

Test(spm, unknown_fields_of_every_wire_type_are_skipped) {
  w b = {0};
  w_vfield(&b, 99, 12345);              /* top-level varint */
  w_tag(&b, 100, 1);                    /* 64-bit */
  w_put(&b, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
  w_tag(&b, 101, 5);                    /* 32-bit */
  w_put(&b, "\x01\x02\x03\x04", 4);
  w_bytes(&b, 4, "\x0a\x03" "abc", 5);  /* self_test_data: skipped, not parsed */
  w sub = {0};
  w_str(&sub, 1, "nmt_nfkc");
  w_sub(&b, 5, &sub);                   /* denormalizer_spec: skipped */
  /* A piece with unknown fields of each wire type and an extension number. */
  w p = {0};
  w_vfield(&p, 200, 7);
  w_str(&p, 1, "<unk>");
  w_tag(&p, 201, 1);
  w_put(&p, "\0\0\0\0\0\0\0\0", 8);
  w_bytes(&p, 536870911, "zz", 2);      /* the largest field number */
  w_vfield(&p, 3, 2);
  w_sub(&b, 1, &p);
  w_piece(&b, SP, 0, 1);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_vocab_size(m), 2u);
  cr_assert_eq(pg_spm_piece_at(m, 0)->type, PG_SPM_UNKNOWN);
  cr_assert_eq(pg_spm_piece_at(m, 0)->score, 0.0f, "score defaults to 0");
  cr_assert_str_eq(pg_spm_info_of(m)->normalizer_name, "",
                   "the denormalizer is not the normalizer");
  pg_spm_free(m);
  w_free(&b);
}

Test(spm, repeated_messages_merge_and_last_scalar_wins) {
  w b = {0};
  w t = {0};
  w_vfield(&t, 3, 2);
  w_vfield(&t, 35, 1);
  w_sub(&b, 2, &t);
  w_small(&b);
  w_vfield(&t, 35, 0); /* a second TrainerSpec: merges, byte_fallback overwritten */
  w_vfield(&t, 4, 13);
  w_sub(&b, 2, &t);
  /* a piece whose string field comes twice: the last wins */
  w p = {0};
  w_str(&p, 1, "first");
  w_str(&p, 1, "second");
  w_sub(&b, 1, &p);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  const pg_spm_info *in = pg_spm_info_of(m);
  cr_assert_eq(in->model_type, PG_SPM_BPE);
  cr_assert_eq(in->byte_fallback, 0);
  cr_assert_eq(in->trainer_vocab_size, 13);
  cr_assert_str_eq(pg_spm_piece_at(m, 13)->piece, "second");
  pg_spm_free(m);
  w_free(&b);
}

Test(spm, nul_inside_a_piece_is_kept) {
  w b = {0};
  w_piece(&b, "<unk>", 0, 2);
  w p = {0};
  w_bytes(&p, 1, "a\0b", 3);
  w_sub(&b, 1, &p);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_piece_at(m, 1)->len, 3u);
  cr_assert_eq(pg_spm_piece_to_id(m, "a\0b", 3), 1);
  cr_assert_eq(pg_spm_piece_to_id(m, "a", 1), -1);
  cr_assert_eq(pg_spm_space_id(m), -1);
  pg_spm_free(m);
  w_free(&b);
}

/* A byte_fallback model: unk, two controls, the 256 byte pieces, then a few normal ones. */
static void w_byte_model(w *b, int with_space) {
  w t = {0};
  w_vfield(&t, 3, 2);
  w_vfield(&t, 35, 1);
  w_sub(b, 2, &t);
  w_piece(b, "<unk>", 0, 2);
  w_piece(b, "<s>", 0, 3);
  w_piece(b, "</s>", 0, 3);
  for (int v = 0; v < 256; v++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", v);
    w_piece(b, s, 0, 6);
  }
  w_piece(b, SP "hi", -1.0f, 1);
  w_piece(b, "!", -2.0f, 1);
  if (with_space) w_piece(b, SP, -3.0f, 1);
}

Test(spm, byte_pieces) {
  w b = {0};
  w_byte_model(&b, 1);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_vocab_size(m), 262u);
  const pg_spm_info *in = pg_spm_info_of(m);
  cr_assert_eq(in->byte_fallback, 1);
  cr_assert_eq(in->type_count[PG_SPM_BYTE], 256u);
  cr_assert_eq(pg_spm_piece_to_id(m, "<0x0A>", 6), 3 + 10);
  cr_assert_eq(pg_spm_byte_value("<0x0A>", 6), 10);
  cr_assert_eq(pg_spm_byte_value("<0x0a>", 6), -1);
  cr_assert_eq(pg_spm_byte_value("<0xFF>", 6), 255);
  cr_assert_eq(pg_spm_byte_value("<0x0A> ", 7), -1);
  cr_assert_eq(pg_spm_space_id(m), 261);
  pg_spm_free(m);
  w_free(&b);
}

/* ---- refusals ---- */

Test(spm_bad, empty_input_has_no_pieces) {
  w b = {0};
  expect_fail(&b, PG_E_VOCAB, "no pieces");
}

Test(spm_bad, truncated_varint) {
  w b = {0};
  w_small(&b);
  const size_t at = b.n;
  w_tag(&b, 99, 0);
  w_u8(&b, 0x80); /* continuation, then the end */
  char off[32];
  snprintf(off, sizeof off, "offset %zu", at + 2);
  expect_fail(&b, PG_E_TRUNCATED, off);
  /* a truncated tag */
  b.n = at;
  w_u8(&b, 0x88);
  snprintf(off, sizeof off, "offset %zu", at);
  expect_fail(&b, PG_E_TRUNCATED, off);
  w_free(&b);
}

Test(spm_bad, varint_longer_than_64_bits) {
  w b = {0};
  w_small(&b);
  const size_t at = b.n;
  w_tag(&b, 99, 0);
  for (int i = 0; i < 9; i++) w_u8(&b, 0xff);
  w_u8(&b, 0x02); /* the tenth byte may only hold one bit */
  char off[32];
  snprintf(off, sizeof off, "offset %zu", at + 2);
  expect_fail(&b, PG_E_PROTOBUF, off);
  b.n = at;
  w_tag(&b, 99, 0);
  for (int i = 0; i < 10; i++) w_u8(&b, 0xff);
  w_u8(&b, 0x01); /* eleven bytes */
  expect_fail(&b, PG_E_PROTOBUF, "64 bits");
  /* the largest valid one: ten bytes ending in 0x01 */
  b.n = at;
  w_vfield(&b, 99, UINT64_MAX);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  pg_spm_free(m);
  w_free(&b);
}

Test(spm_bad, length_past_end) {
  w b = {0};
  w_small(&b);
  const size_t at = b.n;
  w_tag(&b, 1, 2);
  w_varint(&b, 50);
  w_put(&b, "\x0a\x01x", 3);
  char off[32];
  snprintf(off, sizeof off, "offset %zu", at + 1);
  expect_fail(&b, PG_E_TRUNCATED, off);
  /* a fixed32 score cut short */
  b.n = at;
  w p = {0};
  w_str(&p, 1, "zz");
  w_tag(&p, 2, 5);
  w_put(&p, "\x00\x00", 2);
  w_sub(&b, 1, &p);
  expect_fail(&b, PG_E_PROTOBUF, "enclosing message");
  /* a length inside a piece that leaves the piece but not the file */
  b.n = at;
  w_tag(&b, 1, 2);
  w_varint(&b, 3);
  w_put(&b, "\x0a\x05" "a", 3);
  w_put(&b, "bcdefgh", 7);
  expect_fail(&b, PG_E_PROTOBUF, "enclosing message");
  /* a 64-bit value at the very end of the file, cut short */
  b.n = at;
  w_tag(&b, 77, 1);
  w_put(&b, "\x01\x02\x03", 3);
  expect_fail(&b, PG_E_TRUNCATED, "64-bit");
  w_free(&b);
}

Test(spm_bad, bad_wire_types) {
  static const int wts[] = {3, 4, 6, 7};
  for (size_t k = 0; k < sizeof wts / sizeof wts[0]; k++) {
    w b = {0};
    w_small(&b);
    w_tag(&b, 50, wts[k]);
    w_put(&b, "\0\0\0\0\0\0\0\0", 8);
    expect_fail(&b, PG_E_PROTOBUF, "wire type");
    w_free(&b);
  }
  /* field number 0 */
  w b = {0};
  w_small(&b);
  w_u8(&b, 0x00);
  expect_fail(&b, PG_E_PROTOBUF, "field number 0");
  w_free(&b);
  /* field number above 2^29 - 1 */
  w_small(&b);
  w_varint(&b, ((uint64_t)1 << 32) << 3);
  expect_fail(&b, PG_E_PROTOBUF, "field number");
  w_free(&b);
  /* a known field with the wrong wire type */
  w_small(&b);
  w_vfield(&b, 1, 5); /* pieces as a varint */
  expect_fail(&b, PG_E_PROTOBUF, "expected 2");
  w_free(&b);
  w_small(&b);
  w p = {0};
  w_str(&p, 1, "q");
  w_vfield(&p, 2, 1); /* score as a varint */
  w_sub(&b, 1, &p);
  expect_fail(&b, PG_E_PROTOBUF, "score");
  w_free(&b);
  w_small(&b);
  w t = {0};
  w_str(&t, 35, "yes"); /* byte_fallback as a string */
  w_sub(&b, 2, &t);
  expect_fail(&b, PG_E_PROTOBUF, "byte_fallback");
  w_free(&b);
}

Test(spm_bad, piece_type_out_of_range) {
  static const uint64_t types[] = {0, 7, 8, 255, UINT64_MAX};
  for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
    w b = {0};
    w_small(&b);
    w p = {0};
    w_str(&p, 1, "bad");
    w_vfield(&p, 3, types[k]);
    const size_t at = b.n + 2 + p.n - (types[k] == UINT64_MAX ? 10 : types[k] > 127 ? 2 : 1);
    w_sub(&b, 1, &p);
    char off[32];
    snprintf(off, sizeof off, "offset %zu", at);
    expect_fail(&b, PG_E_PIECE_TYPE, "piece 13");
    expect_fail(&b, PG_E_PIECE_TYPE, off);
    w_free(&b);
  }
}

Test(spm_bad, invalid_utf8_piece) {
  static const char *const bad[] = {"\xff", "a\xC3", "\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                                    "ok\x80"};
  static const size_t bad_at[] = {0, 1, 0, 0, 0, 2}; /* first invalid byte within the piece */
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    w b = {0};
    w_small(&b);
    const size_t at = b.n + 2 + 2 + bad_at[k]; /* piece tag + length, string tag + length */
    w_piece(&b, bad[k], 0, 1);
    expect_fail(&b, PG_E_UTF8, "piece 13");
    char off[32];
    snprintf(off, sizeof off, "offset %zu:", at);
    expect_fail(&b, PG_E_UTF8, off);
    w_free(&b);
  }
  w b = {0};
  w_small(&b);
  w n = {0};
  w_str(&n, 1, "nmt\xff");
  w_sub(&b, 3, &n);
  expect_fail(&b, PG_E_UTF8, "normalizer");
  w_free(&b);
}

Test(spm_bad, too_many_pieces) {
  w b = {0};
  w_piece(&b, "<unk>", 0, 2);
  for (uint32_t i = 0; i < PG_SPM_MAX_PIECES; i++) w_put(&b, "\x0a\x00", 2);
  expect_fail(&b, PG_E_LIMIT, "pieces");
  w_free(&b);
}

Test(spm_bad, file_too_large) {
  pg_spm *m = NULL;
  pg_err e;
  static const uint8_t one = 0;
  cr_assert_eq(pg_spm_open_mem(&m, &one, PG_SPM_MAX_FILE + 1, "big.model", &e), PG_E_LIMIT);
  cr_assert_null(m);
}

Test(spm_bad, what_sentencepiece_refuses) {
  w b = {0};
  w_small(&b);
  w_piece(&b, "", 0, 1);
  expect_fail(&b, PG_E_MALFORMED, "empty");
  w_free(&b);
  w_small(&b);
  w_piece(&b, "ing", 0, 1);
  expect_fail(&b, PG_E_DUPLICATE, "piece 13 repeats piece 5");
  w_free(&b);
  w_piece(&b, SP, 0, 1);
  expect_fail(&b, PG_E_MALFORMED, "no UNKNOWN");
  w_free(&b);
  w_small(&b);
  w_piece(&b, "<unk2>", 0, 2);
  expect_fail(&b, PG_E_MALFORMED, "second UNKNOWN");
  w_free(&b);
  w_small(&b);
  w_piece(&b, "<0x41>", 0, 6); /* byte_fallback is false */
  expect_fail(&b, PG_E_MALFORMED, "byte_fallback");
  w_free(&b);
  w_byte_model(&b, 1);
  w_piece(&b, "<0x4g>", 0, 6);
  expect_fail(&b, PG_E_MALFORMED, "<0xHH>");
  w_free(&b);
  w_byte_model(&b, 1);
  w_piece(&b, "<0x41>", 0, 6); /* 257 byte pieces */
  expect_fail(&b, PG_E_MALFORMED, "257");
  w_free(&b);
  /* byte_fallback with 255 byte pieces */
  w t = {0};
  w_vfield(&t, 35, 1);
  w_sub(&b, 2, &t);
  w_piece(&b, "<unk>", 0, 2);
  for (int v = 0; v < 255; v++) {
    char s[8];
    snprintf(s, sizeof s, "<0x%02X>", v);
    w_piece(&b, s, 0, 6);
  }
  expect_fail(&b, PG_E_MALFORMED, "255");
  w_free(&b);
}

Test(spm_bad, arguments_and_missing_file) {
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(pg_spm_open_mem(NULL, (const uint8_t *)"", 0, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_spm_open_mem(&m, NULL, 5, NULL, &e), PG_E_ARG);
  cr_assert_eq(pg_spm_open_file(&m, "/nonexistent/dir/x.model", &e), PG_E_NOT_FOUND);
  cr_assert_null(m);
  cr_assert(strstr(e.msg, "/nonexistent/dir/x.model") != NULL, "%s", e.msg);
  cr_assert_eq(pg_spm_open_file(&m, "/", &e), PG_E_IO);
  cr_assert_null(m);
}

/* Every prefix of a valid model fails cleanly (or, at a field boundary, parses). */
Test(spm_bad, every_prefix) {
  w b = {0};
  w_small(&b);
  w n = {0};
  w_str(&n, 1, "nmt_nfkc");
  w_vfield(&n, 3, 0);
  w_sub(&b, 3, &n);
  for (size_t k = 0; k < b.n; k++) {
    pg_spm *m = NULL;
    pg_err e;
    const int rc = pg_spm_open_mem(&m, b.d, k, "prefix.model", &e);
    cr_assert(rc == PG_OK || rc == PG_E_TRUNCATED || rc == PG_E_VOCAB || rc == PG_E_MALFORMED,
              "prefix %zu: %s", k, e.msg);
    if (rc == PG_OK) pg_spm_free(m);
    else cr_assert_null(m);
  }
  w_free(&b);
}

/* The fuzz seeds (tests/fuzz/seeds/spm, written by hand as protobuf bytes) are read with the
 * statuses they were made for; the valid ones also load in the Python sentencepiece package. */
Test(spm, fuzz_seeds) {
  static const struct {
    const char *name;
    int open_status, tables_status;
    uint32_t vocab;
  } seeds[] = {
      {"small_bpe.model", PG_OK, PG_OK, 12},
      {"types_all.model", PG_OK, PG_E_NO_SPACE_PIECE, 8},
      {"byte_fallback.model", PG_OK, PG_OK, 262},
      {"caseops_like.model", PG_OK, PG_OK, 266},
      {"no_space.model", PG_OK, PG_E_NO_SPACE_PIECE, 6},
      {"unknown_fields.model", PG_OK, PG_OK, 5},
      {"negative_pad.model", PG_OK, PG_OK, 5},
      {"bad_type7.model", PG_E_PIECE_TYPE, 0, 0},
      {"bad_utf8.model", PG_E_UTF8, 0, 0},
      {"truncated.model", PG_E_TRUNCATED, 0, 0},
  };
  const char *root = getenv("PG_SOURCE_ROOT");
  if (!root) cr_skip_test("PG_SOURCE_ROOT not set");
  for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fuzz/seeds/spm/%s", root, seeds[k].name);
    pg_spm *m = NULL;
    pg_err e;
    const int rc = pg_spm_open_file(&m, path, &e);
    cr_assert_eq(rc, seeds[k].open_status, "%s: %s", seeds[k].name, e.msg);
    if (rc != PG_OK) continue;
    cr_assert_eq(pg_spm_vocab_size(m), seeds[k].vocab, "%s", seeds[k].name);
    pg_spm_tables t;
    cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), seeds[k].tables_status, "%s: %s",
                 seeds[k].name, e.msg);
    pg_spm_tables_free(&t);
    pg_spm_free(m);
  }
}

/* ---- the byte tables ---- */

Test(spm_tables, small_model_rules) {
  w b = {0};
  w_small(&b);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, 16, 0, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(t.size, 16u);
  cr_assert_eq(t.vocab, 13u);
  /* id:               0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 */
  static const int base[] = {0, 0, 0, 0, 3, 3, 5, 3, 2, 3, 3, 0, 4, 0, 0, 0};
  static const int lead[] = {0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0};
  static const int bnd[] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1};
  for (int i = 0; i < 16; i++) {
    cr_assert_eq(t.base[i], base[i], "base[%d] = %d", i, t.base[i]);
    cr_assert_eq(t.lead[i], lead[i], "lead[%d]", i);
    cr_assert_eq(t.boundary[i], bnd[i], "boundary[%d]", i);
  }
  pg_spm_totals tot;
  pg_spm_tables_totals(&t, m, &tot);
  cr_assert_eq(tot.base_sum, 26u);
  cr_assert_eq(tot.lead, 5u);
  cr_assert_eq(tot.boundary, 7u);
  cr_assert_eq(tot.beyond, 3u);
  cr_assert_eq(tot.type_count[PG_SPM_NORMAL], 7u);
  cr_assert_eq(tot.type_count[PG_SPM_CONTROL], 2u);
  pg_spm_tables_free(&t);
  /* requested below the vocab: the table is the vocab */
  cr_assert_eq(pg_spm_tables_build(&t, m, 5, 0, &e), PG_OK);
  cr_assert_eq(t.size, 13u);
  pg_spm_tables_free(&t);
  cr_assert_eq(pg_spm_tables_build(&t, m, PG_SPM_MAX_TABLE + 1, 0, &e), PG_E_LIMIT);
  cr_assert_null(t.base);
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, 2, &e), PG_E_ARG);
  pg_spm_free(m);
  w_free(&b);
}

Test(spm_tables, byte_pieces_count_one) {
  w b = {0};
  w_byte_model(&b, 1);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), PG_OK, "%s", e.msg);
  for (int i = 3; i < 259; i++) {
    cr_assert_eq(t.base[i], 1);
    cr_assert_eq(t.lead[i], 0);
    cr_assert_eq(t.boundary[i], 0);
  }
  cr_assert_eq(t.base[259], 2); /* ▁hi */
  cr_assert_eq(t.lead[259], 1);
  cr_assert_eq(t.base[261], 0); /* ▁ alone: base 0, lead */
  cr_assert_eq(t.lead[261], 1);
  pg_spm_totals tot;
  pg_spm_tables_totals(&t, m, &tot);
  cr_assert_eq(tot.base_sum, 256u + 2u + 1u);
  cr_assert_eq(tot.boundary, 3u);
  cr_assert_eq(tot.type_count[PG_SPM_BYTE], 256u);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  w_free(&b);
}

Test(spm_tables, missing_space_piece) {
  w b = {0};
  w_byte_model(&b, 0);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_space_id(m), -1);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), PG_E_NO_SPACE_PIECE);
  cr_assert(strstr(e.msg, "hand.model") != NULL, "%s", e.msg);
  cr_assert_null(t.base);
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, PG_SPM_ALLOW_NO_SPACE, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(t.base[259], 2);
  cr_assert_eq(t.lead[259], 1);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  w_free(&b);
  /* "▁" that is the UNKNOWN piece itself: sp.piece_to_id("▁") == sp.unk_id() */
  w_piece(&b, SP, 0, 2);
  w_piece(&b, "a", 0, 1);
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_space_id(m), 0);
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), PG_E_NO_SPACE_PIECE);
  cr_assert(strstr(e.msg, "UNKNOWN") != NULL, "%s", e.msg);
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, PG_SPM_ALLOW_NO_SPACE, &e), PG_OK);
  cr_assert_eq(t.boundary[0], 1);
  cr_assert_eq(t.lead[0], 0);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  w_free(&b);
}

/* A piece of n bytes: an optional leading ▁ and 'a's. */
static char *long_piece(int lead, size_t n) {
  char *s = malloc(n + 1);
  cr_assert_not_null(s);
  memset(s, 'a', n);
  if (lead) memcpy(s, SP, 3);
  s[n] = 0;
  return s;
}

Test(spm_tables, base_too_large_for_int16) {
  /* The challenge's base and base + lead are int16: 32767 fits, 32768 does not. */
  static const struct {
    int lead;
    size_t len; /* piece bytes */
    int ok;
  } cases[] = {{1, 3 + 32766, 1}, {1, 3 + 32767, 0}, {0, 32767, 1}, {0, 32768, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    w b = {0};
    w_piece(&b, "<unk>", 0, 2);
    w_piece(&b, SP, 0, 1);
    char *big = long_piece(cases[k].lead, cases[k].len);
    w_piece(&b, big, 0, 1);
    free(big);
    pg_spm *m = NULL;
    pg_err e;
    cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
    pg_spm_tables t;
    const int rc = pg_spm_tables_build(&t, m, 0, 0, &e);
    if (cases[k].ok) {
      cr_assert_eq(rc, PG_OK, "case %zu: %s", k, e.msg);
      cr_assert_eq(t.base[2] + t.lead[2], 32767);
      cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 1, 2), 32767u); /* after ▁: not a boundary */
      pg_spm_tables_free(&t);
    } else {
      cr_assert_eq(rc, PG_E_LIMIT, "case %zu", k);
      cr_assert(strstr(e.msg, "piece 2") != NULL, "%s", e.msg);
      cr_assert_null(t.base);
    }
    pg_spm_free(m);
    w_free(&b);
  }
}

Test(spm_tables, per_target_rule) {
  w b = {0};
  w_small(&b);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, 16, 0, &e), PG_OK, "%s", e.msg);
  uint32_t k;
  /* "▁the" after <s> (boundary): the leading space is dropped → 3 */
  cr_assert_eq(pg_spm_pair_bytes(&t, 1, 4, &k, &e), PG_OK);
  cr_assert_eq(k, 3u);
  /* after "ing" (not a boundary): the space counts → 4 */
  cr_assert_eq(pg_spm_pair_bytes(&t, 5, 4, &k, &e), PG_OK);
  cr_assert_eq(k, 4u);
  /* after UNUSED, UNKNOWN, and an id beyond the vocab: boundaries */
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 11, 4), 3u);
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 0, 4), 3u);
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 14, 4), 3u);
  /* the standalone ▁: 0 after a boundary, 1 otherwise */
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 2, 3), 0u);
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 8, 3), 1u);
  /* a target without lead does not care */
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 1, 5), 3u);
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 5, 5), 3u);
  /* control targets count nothing */
  cr_assert_eq(pg_spm_pair_bytes_unchecked(&t, 5, 2), 0u);
  cr_assert_eq(pg_spm_pair_bytes(&t, 16, 4, &k, &e), PG_E_TOKEN_RANGE);
  cr_assert_eq(pg_spm_pair_bytes(&t, 4, 16, &k, &e), PG_E_TOKEN_RANGE);
  /* a stream: <s> ▁the ing ▁a▁b </s> <s> ▁ é ▁▁ */
  const uint32_t s32[] = {1, 4, 5, 6, 2, 1, 3, 8, 7};
  const uint16_t s16[] = {1, 4, 5, 6, 2, 1, 3, 8, 7};
  /* targets: ▁the 3, ing 3, ▁a▁b 5+1, </s> 0, <s> 0, ▁ 0, é 2, ▁▁ 3+1 */
  uint64_t total = 0;
  cr_assert_eq(pg_spm_count_stream_u32(&t, s32, 9, &total, &e), PG_OK);
  cr_assert_eq(total, 18u);
  cr_assert_eq(pg_spm_count_stream_u16(&t, s16, 9, &total, &e), PG_OK);
  cr_assert_eq(total, 18u);
  cr_assert_eq(pg_spm_count_stream_u16(&t, s16, 1, &total, &e), PG_OK);
  cr_assert_eq(total, 0u);
  uint32_t per[8];
  cr_assert_eq(pg_spm_count_pairs_u32(&t, s32, s32 + 1, 8, &total, per, &e), PG_OK);
  static const uint32_t want[] = {3, 3, 6, 0, 0, 0, 2, 4};
  for (int i = 0; i < 8; i++) cr_assert_eq(per[i], want[i], "pair %d", i);
  const uint16_t bad[] = {1, 4, 99};
  cr_assert_eq(pg_spm_count_stream_u16(&t, bad, 3, &total, &e), PG_E_TOKEN_RANGE);
  cr_assert(strstr(e.msg, "index 1") != NULL, "%s", e.msg);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  w_free(&b);
}

/* ---- the real models (../shared/fixtures/tokenizers) ---- */

/* Expected facts. The counts, ids and totals were obtained independently with the Python
 * sentencepiece package 0.2.3 (pip, in a throwaway venv) during development:
 *   sp = spm.SentencePieceProcessor(model_file=F); m = sentencepiece_model_pb2.ModelProto()
 *   parsed from F; the tables rebuilt exactly as the challenge's build_sentencepiece_luts does
 *   (is_control/is_unknown/is_unused → boundary; is_byte → 1; else strip one leading "▁", lead,
 *   len(piece.encode())), then sum(base), sum(lead), sum(boundary), sum((i+1)*base[i]) and
 *   sum(i for lead[i]); sp.piece_to_id("▁") (and "▁the", "▁The": -1 where it returns the unknown
 *   id), sp.id_to_piece / sp.get_score of the last id. The stream is sp.encode(TEXT)
 *   after sp.bos_id(); its byte count (45) is len(normalized TEXT in UTF-8): nmt_nfkc turns
 *   the tab into a space and collapses the double space (46 - 1). */
typedef struct fixture {
  const char *file;
  uint32_t normal, user_defined, byte, byte_first;
  int32_t space;
  int byte_fallback;
  uint64_t base_sum, wbase, wlead;
  uint32_t lead;
  int32_t id_the, id_The; /* piece_to_id("▁the"), ("▁The"); -1: absent */
  const char *last;       /* the last piece, and its score */
  float last_score;
} fixture;

static const fixture FIX[] = {
    {"fineweb_1024_bpe.model", 1020, 0, 0, 0, 940, 0, 3058, 1655222, 239932, 476, 11, 97, "Z",
     -1019.0f},
    {"fineweb_2048_bpe.model", 2044, 0, 0, 0, 1964, 0, 7431, 8154042, 1186552, 1124, 11, 97, "Z",
     -2043.0f},
    {"fineweb_4096_bpe.model", 4092, 0, 0, 0, 4012, 0, 17643, 38998289, 5578072, 2589, 11, 97, "Z",
     -4091.0f},
    {"fineweb_8192_bpe.model", 7932, 0, 256, 4, 8108, 1, 38860, 174124474, 24044396, 5464, 267, 353,
     "Z", -7931.0f},
    {"fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model", 7928, 4, 256, 8, 8133, 1, 40622,
     183468541, 17947037, 4188, 271, -1, "*", -7927.0f},
};

static int open_fixture(const char *name, pg_spm **m) {
  const char *dir = getenv("PG_FIXTURES");
  if (!dir) return 0;
  char path[1024];
  snprintf(path, sizeof path, "%s/tokenizers/%s", dir, name);
  if (access(path, R_OK) != 0) return 0;
  pg_err e;
  cr_assert_eq(pg_spm_open_file(m, path, &e), PG_OK, "%s", e.msg);
  return 1;
}

static void check_fixture(const fixture *f) {
  pg_spm *m = NULL;
  if (!open_fixture(f->file, &m)) cr_skip_test("fixture %s absent", f->file);
  const uint32_t vocab = f->normal + f->user_defined + f->byte + 4;
  cr_assert_eq(pg_spm_vocab_size(m), vocab);
  const pg_spm_info *in = pg_spm_info_of(m);
  cr_assert_eq(in->type_count[PG_SPM_NORMAL], f->normal);
  cr_assert_eq(in->type_count[PG_SPM_UNKNOWN], 1u);
  cr_assert_eq(in->type_count[PG_SPM_CONTROL], 3u);
  cr_assert_eq(in->type_count[PG_SPM_USER_DEFINED], f->user_defined);
  cr_assert_eq(in->type_count[PG_SPM_UNUSED], 0u);
  cr_assert_eq(in->type_count[PG_SPM_BYTE], f->byte);
  cr_assert_eq(in->model_type, PG_SPM_BPE);
  cr_assert_eq(in->trainer_vocab_size, (int32_t)vocab);
  cr_assert_eq(in->byte_fallback, f->byte_fallback);
  cr_assert(in->present & PG_SPM_HAS_BYTE_FALLBACK);
  cr_assert_eq(in->pad_id, 0);
  cr_assert_eq(in->bos_id, 1);
  cr_assert_eq(in->eos_id, 2);
  cr_assert_eq(in->unk_id, 3);
  cr_assert_eq(in->unk_piece_id, 3);
  cr_assert_str_eq(in->normalizer_name, "nmt_nfkc");
  cr_assert_eq(in->add_dummy_prefix, 0);
  cr_assert(in->present & PG_SPM_HAS_ADD_DUMMY_PREFIX);
  cr_assert_eq(in->remove_extra_whitespaces, 1);
  cr_assert_eq(in->escape_whitespaces, 1);
  static const char *const specials[] = {"<pad>", "<s>", "</s>", "<unk>"};
  for (int i = 0; i < 4; i++) {
    cr_assert_str_eq(pg_spm_piece_at(m, (uint32_t)i)->piece, specials[i]);
    cr_assert_eq(pg_spm_piece_at(m, (uint32_t)i)->type, i == 3 ? PG_SPM_UNKNOWN : PG_SPM_CONTROL);
  }
  for (uint32_t i = 0; i < f->user_defined; i++) {
    const pg_spm_piece *p = pg_spm_piece_at(m, 4 + i);
    const char want[4] = {(char)0xEE, (char)0x80, (char)(0x81 + i), 0}; /* U+E001 + i */
    cr_assert_eq(p->type, PG_SPM_USER_DEFINED);
    cr_assert_str_eq(p->piece, want);
  }
  for (uint32_t v = 0; v < f->byte; v++) {
    const pg_spm_piece *p = pg_spm_piece_at(m, f->byte_first + v);
    cr_assert_eq(p->type, PG_SPM_BYTE);
    cr_assert_eq(pg_spm_byte_value(p->piece, p->len), (int)v);
  }
  cr_assert_eq(pg_spm_space_id(m), f->space);
  cr_assert_eq(pg_spm_piece_to_id(m, SP, 3), f->space);
  cr_assert_eq(pg_spm_piece_to_id(m, "<unk>", 5), 3);
  cr_assert_eq(pg_spm_piece_to_id(m, SP "the", 6), f->id_the);
  cr_assert_eq(pg_spm_piece_to_id(m, SP "The", 6), f->id_The);
  const pg_spm_piece *last = pg_spm_piece_at(m, vocab - 1);
  cr_assert_str_eq(last->piece, f->last);
  cr_assert_eq(last->score, f->last_score);
  cr_assert_eq(last->type, PG_SPM_NORMAL);
  pg_spm_tables t;
  pg_err e;
  cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), PG_OK, "%s", e.msg);
  pg_spm_totals tot;
  pg_spm_tables_totals(&t, m, &tot);
  cr_assert_eq(tot.base_sum, f->base_sum, "base sum %llu", (unsigned long long)tot.base_sum);
  cr_assert_eq(tot.lead, f->lead, "lead %u", tot.lead);
  cr_assert_eq(tot.boundary, 4u);
  uint64_t wbase = 0, wlead = 0;
  for (uint32_t i = 0; i < t.size; i++) {
    wbase += (uint64_t)(i + 1) * (uint64_t)t.base[i];
    if (t.lead[i]) wlead += i;
  }
  cr_assert_eq(wbase, f->wbase);
  cr_assert_eq(wlead, f->wlead);
  pg_spm_tables_free(&t);
  /* a larger table: the extra ids are boundaries with base 0 */
  cr_assert_eq(pg_spm_tables_build(&t, m, vocab + 64, 0, &e), PG_OK, "%s", e.msg);
  pg_spm_tables_totals(&t, m, &tot);
  cr_assert_eq(tot.base_sum, f->base_sum);
  cr_assert_eq(tot.boundary, 4u + 64u);
  cr_assert_eq(tot.beyond, 64u);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
}

Test(spm_fixtures, sp1024) { check_fixture(&FIX[0]); }
Test(spm_fixtures, sp2048) { check_fixture(&FIX[1]); }
Test(spm_fixtures, sp4096) { check_fixture(&FIX[2]); }
Test(spm_fixtures, sp8192) { check_fixture(&FIX[3]); }
Test(spm_fixtures, sp8192_caseops) { check_fixture(&FIX[4]); }

/* sp.encode("The caf\u00e9 costs 3 euros \U0001F600 and\tmore  spaces.") after <s>, from the
 * Python package (see above); the challenge's rule counts 45 bytes for its targets. */
Test(spm_fixtures, encoded_text_bytes) {
  static const uint16_t sp8192[] = {1,    886, 1422, 8125, 199, 173, 3023, 8108, 8161, 310, 1784,
                                    8115, 8108, 244, 163,  156, 132, 290,  502,  6722, 8129};
  static const uint16_t caseops[] = {1,   92,   267,  279, 1461, 203, 177, 2986, 8133, 8170, 312,
                                     8146, 968, 8133, 248, 167,  160, 136, 294,  496,  6529, 8154};
  struct {
    const char *file;
    const uint16_t *s;
    size_t n;
  } cases[] = {{FIX[3].file, sp8192, sizeof sp8192 / 2},
               {FIX[4].file, caseops, sizeof caseops / 2}};
  int ran = 0;
  for (int c = 0; c < 2; c++) {
    pg_spm *m = NULL;
    if (!open_fixture(cases[c].file, &m)) continue;
    ran++;
    pg_spm_tables t;
    pg_err e;
    cr_assert_eq(pg_spm_tables_build(&t, m, 0, 0, &e), PG_OK, "%s", e.msg);
    uint64_t total = 0;
    cr_assert_eq(pg_spm_count_stream_u16(&t, cases[c].s, cases[c].n, &total, &e), PG_OK);
    cr_assert_eq(total, 45u, "%s: %llu", cases[c].file, (unsigned long long)total);
    pg_spm_tables_free(&t);
    pg_spm_free(m);
  }
  if (!ran) cr_skip_test("fixtures absent");
}

/* ---- bpb ---- */

Test(bpb, hand_computed_sums) {
  pg_bpb a;
  pg_bpb_init(&a);
  pg_err e;
  cr_assert_eq(pg_bpb_add(&a, 1.5, 4, &e), PG_OK);
  cr_assert_eq(pg_bpb_add(&a, 0.25, 2, &e), PG_OK);
  cr_assert_eq(pg_bpb_add(&a, 2.25, 2, &e), PG_OK);
  cr_assert_eq(a.nats, 4.0);
  cr_assert_eq(a.tokens, 3.0);
  cr_assert_eq(a.bytes, 8.0);
  double loss, bpb;
  cr_assert_eq(pg_bpb_result(&a, &loss, &bpb, &e), PG_OK);
  cr_assert_eq(loss, 4.0 / 3.0);
  cr_assert_eq(bpb, ((4.0 / 3.0) / log(2.0)) * (3.0 / 8.0));
  cr_assert(fabs(bpb - 4.0 / (8.0 * log(2.0))) < 1e-15);
  cr_assert_eq(PG_BPB_LN2, log(2.0));
  /* one nat per byte is 1/ln 2 bits per byte */
  pg_bpb_init(&a);
  for (int i = 0; i < 10; i++) cr_assert_eq(pg_bpb_add(&a, 1.0, 1, &e), PG_OK);
  cr_assert_eq(pg_bpb_result(&a, &loss, &bpb, &e), PG_OK);
  cr_assert_eq(loss, 1.0);
  cr_assert_eq(bpb, 1.0 / log(2.0));
}

Test(bpb, batches_as_the_challenge_adds_them) {
  pg_bpb a;
  pg_bpb_init(&a);
  pg_err e;
  cr_assert_eq(pg_bpb_add_batch(&a, 2.5, 4.0, 10.0, &e), PG_OK);
  cr_assert_eq(pg_bpb_add_batch(&a, 3.0, 2.0, 5.0, &e), PG_OK);
  cr_assert_eq(a.nats, 16.0);
  cr_assert_eq(a.tokens, 6.0);
  cr_assert_eq(a.bytes, 15.0);
  cr_assert_eq(pg_bpb_add_batch(&a, NAN, 1, 1, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_add_batch(&a, 1, -1, 1, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_add_batch(&a, 1, 1, INFINITY, &e), PG_E_ARG);
  cr_assert_eq(a.nats, 16.0);
}

/* The normative form (loss/ln2)*(tok/bytes) and nats/(ln2*bytes) are equal in exact arithmetic
 * but about half of realistic sums differ in the last bit in fp64. Expected values (hex floats)
 * were computed with Python's float arithmetic (IEEE fp64, like C here with -ffp-contract=off):
 *   ((nats/tok)/math.log(2.0))*(tok/by)  and  nats/(math.log(2.0)*by). */
Test(bpb, the_two_forms) {
  static const struct {
    double nats, tokens, bytes, challenge, direct;
  } cases[] = {
      {4.0, 3.0, 8.0, 0x1.71547652b82fep-1, 0x1.71547652b82fep-1}, /* equal */
      {170559488.0, 62021632.0, 151080633.0, 0x1.a0f29d130a68cp+0, 0x1.a0f29d130a68bp+0},
      {117841101.1, 62021632.0, 100003.0, 0x1.a90259a158d5dp+10, 0x1.a90259a158d5ep+10},
      {2750.0, 1000.0, 2417.0, 0x1.a436ca9f928b1p+0, 0x1.a436ca9f928b0p+0},
      {1900.3, 1000.0, 151080633.0, 0x1.3071bbd04a046p-16, 0x1.3071bbd04a045p-16},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const pg_bpb a = {cases[i].nats, cases[i].tokens, cases[i].bytes};
    double loss, bpb;
    pg_err e;
    cr_assert_eq(pg_bpb_result(&a, &loss, &bpb, &e), PG_OK);
    cr_assert_eq(loss, cases[i].nats / cases[i].tokens);
    cr_assert_eq(bpb, cases[i].challenge, "case %zu: %a", i, bpb);
    cr_assert_eq(bpb, ((a.nats / a.tokens) / log(2.0)) * (a.tokens / a.bytes));
    cr_assert_eq(pg_bpb_direct(&a), cases[i].direct, "case %zu: %a", i, pg_bpb_direct(&a));
  }
}

Test(bpb, merge_equals_one_pass) {
  const double nll[] = {0.5, 1.25, 3.0, 0.125, 2.0, 0.75};
  const uint32_t bytes[] = {3, 1, 4, 1, 5, 9};
  pg_bpb all, a, b;
  pg_err e;
  pg_bpb_init(&all);
  pg_bpb_init(&a);
  pg_bpb_init(&b);
  cr_assert_eq(pg_bpb_add_sidecar_u32(&all, nll, bytes, 6, &e), PG_OK);
  cr_assert_eq(pg_bpb_add_sidecar_u32(&a, nll, bytes, 3, &e), PG_OK);
  cr_assert_eq(pg_bpb_add_sidecar_u32(&b, nll + 3, bytes + 3, 3, &e), PG_OK);
  pg_bpb_merge(&a, &b);
  cr_assert_eq(a.nats, all.nats); /* exact: every value is a dyadic rational */
  cr_assert_eq(a.tokens, 6.0);
  cr_assert_eq(a.bytes, 23.0);
  cr_assert_eq(all.nats, 7.625);
  const uint16_t b16[] = {3, 1, 4, 1, 5, 9};
  pg_bpb c;
  pg_bpb_init(&c);
  cr_assert_eq(pg_bpb_add_sidecar_u16(&c, nll, b16, 6, &e), PG_OK);
  cr_assert_eq(c.bytes, 23.0);
  cr_assert_eq(c.nats, 7.625);
}

Test(bpb, from_token_pairs) {
  w b = {0};
  w_small(&b);
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  pg_spm_tables t;
  cr_assert_eq(pg_spm_tables_build(&t, m, 16, 0, &e), PG_OK);
  const uint32_t x[] = {1, 4, 5, 6, 2, 1, 3, 8};
  const uint32_t y[] = {4, 5, 6, 2, 1, 3, 8, 7};
  const double nll[] = {1, 1, 1, 1, 1, 1, 1, 1};
  pg_bpb a;
  pg_bpb_init(&a);
  cr_assert_eq(pg_bpb_add_pairs_u32(&a, &t, x, y, nll, 8, &e), PG_OK);
  cr_assert_eq(a.bytes, 18.0);
  cr_assert_eq(a.tokens, 8.0);
  cr_assert_eq(a.nats, 8.0);
  const uint16_t x16[] = {1, 4}, y16[] = {4, 5};
  cr_assert_eq(pg_bpb_add_pairs_u16(&a, &t, x16, y16, nll, 2, &e), PG_OK);
  cr_assert_eq(a.bytes, 24.0);
  /* errors leave the sums unchanged */
  const uint32_t ybad[] = {4, 16};
  cr_assert_eq(pg_bpb_add_pairs_u32(&a, &t, x, ybad, nll, 2, &e), PG_E_TOKEN_RANGE);
  const double nan2[] = {1.0, NAN};
  cr_assert_eq(pg_bpb_add_pairs_u32(&a, &t, x, y, nan2, 2, &e), PG_E_ARG);
  cr_assert_eq(a.bytes, 24.0);
  cr_assert_eq(a.tokens, 10.0);
  pg_spm_tables_free(&t);
  pg_spm_free(m);
  w_free(&b);
}

Test(bpb, errors) {
  pg_bpb a;
  pg_err e;
  double loss = -1, bpb = -1;
  pg_bpb_init(&a);
  cr_assert_eq(pg_bpb_result(&a, &loss, &bpb, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "tokens") != NULL, "%s", e.msg);
  cr_assert_eq(pg_bpb_add(&a, 1.0, 0, &e), PG_OK);
  cr_assert_eq(pg_bpb_result(&a, &loss, &bpb, &e), PG_E_ARG);
  cr_assert(strstr(e.msg, "bytes") != NULL, "%s", e.msg);
  cr_assert_eq(loss, -1);
  cr_assert(isnan(pg_bpb_direct(&a)));
  cr_assert_eq(pg_bpb_add(&a, INFINITY, 1, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_add(&a, NAN, 1, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_add(NULL, 1.0, 1, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_result(NULL, &loss, &bpb, &e), PG_E_ARG);
  cr_assert_eq(pg_bpb_add(&a, 1.0, 1, &e), PG_OK);
  cr_assert_eq(pg_bpb_result(&a, NULL, NULL, &e), PG_OK);
}

/* ---- hostile models: small, valid, expensive ---- */

/* The piece index was an open-addressing table over a fixed FNV-1a hash: a model could choose
 * pieces whose slots crowd one corner of the table, and building the index then took time
 * quadratic in their number (100,000 pieces, a 1.4 MB file: 31 s; 1,000,000: about an hour).
 * The pieces below are chosen that way against that table (slot in the first 1/16 of 2^19);
 * the index is now a sort, which no choice of pieces slows down. */
static uint64_t old_fnv_slot(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
  return (h ^ (h >> 29)) & ((1u << 19) - 1);
}

Test(spm, pieces_chosen_to_collide_are_indexed_and_found) {
  enum { N = 200000 };
  w b = {0};
  w_piece(&b, "<unk>", 0, 2);
  char s[16];
  uint32_t *key = malloc(N * sizeof *key);
  cr_assert_not_null(key);
  for (uint32_t i = 0, k = 0; i < N; k++) {
    const int n = snprintf(s, sizeof s, "p%09u", k);
    if (old_fnv_slot(s, (size_t)n) >= (1u << 19) / 16) continue;
    w p = {0}; /* a piece with only its bytes (NORMAL, score 0): 12 bytes in the file */
    w_bytes(&p, 1, s, (size_t)n);
    w_sub(&b, 1, &p);
    key[i++] = k;
  }
  pg_spm *m = NULL;
  pg_err e;
  cr_assert_eq(open_w(&b, &m, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_spm_vocab_size(m), N + 1);
  for (uint32_t i = 0; i < N; i++) {
    const int n = snprintf(s, sizeof s, "p%09u", key[i]);
    cr_assert_eq(pg_spm_piece_to_id(m, s, (size_t)n), (int32_t)i + 1, "piece %s", s);
  }
  cr_assert_eq(pg_spm_piece_to_id(m, "<unk>", 5), 0);
  cr_assert_eq(pg_spm_piece_to_id(m, "p", 1), -1);
  cr_assert_eq(pg_spm_piece_to_id(m, "p0000000000", 11), -1);
  cr_assert_eq(pg_spm_space_id(m), -1);
  pg_spm_free(m);
  /* a repeat is still found, named by the lowest repeating id and the piece it repeats */
  snprintf(s, sizeof s, "p%09u", key[76]);
  w_piece(&b, s, 0, 1);
  snprintf(s, sizeof s, "p%09u", key[5]);
  w_piece(&b, s, 0, 1);
  char want[64];
  snprintf(want, sizeof want, "piece %u repeats piece 77", N + 1);
  expect_fail(&b, PG_E_DUPLICATE, want);
  free(key);
  w_free(&b);
}
