/* pg_spm.c: the SentencePiece .model reader (a hand-written, bounds-checked protobuf wire-format
 * decoder for ModelProto), the piece index, and the challenge's byte tables (see pg_spm.h,
 * spec/tokenizer.md). */
#include "pg_spm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"

/* ---- names ---- */

const char *pg_spm_type_name(int type) {
  switch (type) {
  case PG_SPM_NORMAL: return "NORMAL";
  case PG_SPM_UNKNOWN: return "UNKNOWN";
  case PG_SPM_CONTROL: return "CONTROL";
  case PG_SPM_USER_DEFINED: return "USER_DEFINED";
  case PG_SPM_UNUSED: return "UNUSED";
  case PG_SPM_BYTE: return "BYTE";
  default: return "?";
  }
}

const char *pg_spm_model_type_name(int model_type) {
  switch (model_type) {
  case PG_SPM_UNIGRAM: return "UNIGRAM";
  case PG_SPM_BPE: return "BPE";
  case PG_SPM_WORD: return "WORD";
  case PG_SPM_CHAR: return "CHAR";
  default: return "?";
  }
}

/* ---- the model ---- */

struct pg_spm {
  char *name;
  uint32_t n;
  pg_spm_piece *pieces;
  char *strings;   /* every piece, NUL-terminated, back to back */
  char *norm_name; /* NormalizerSpec.name, NUL-terminated */
  uint32_t *order; /* the ids sorted by their pieces' bytes (then id): the exact-bytes index */
  pg_spm_info info;
};

/* ---- the wire format ---- */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct pb {
  const uint8_t *d;
  size_t n; /* the whole input */
  const char *file;
  pg_err *err;
} pb;

/* One field: number, wire type, where its tag starts, and its value (varint / fixed) or payload
 * (length-delimited: d[off .. off+len)). */
typedef struct pb_field {
  uint32_t num;
  int wt;
  size_t tag_off;
  size_t val_off;
  uint64_t v;
  size_t off, len;
} pb_field;

/* Running past end: a truncated file at the top level (end is the end of the input), otherwise a
 * value that leaves its enclosing submessage (whose own length was complete). */
static int pb_past(const pb *b, size_t at, size_t end, int top, const char *what,
                   const char *msg) {
  if (top)
    return pg_err_set(b->err, PG_E_TRUNCATED, b->file, at, "%s of %s runs past the end of the file",
                      what, msg);
  return pg_err_set(b->err, PG_E_PROTOBUF, b->file, at,
                    "%s of %s runs past the end of its enclosing message (offset %zu)", what, msg,
                    end);
}

static int pb_varint(const pb *b, size_t *pos, size_t end, int top, uint64_t *v, const char *what,
                     const char *msg) {
  const size_t start = *pos;
  uint64_t r = 0;
  size_t p = start;
  for (int i = 0; i < 10; i++) {
    if (p >= end) return pb_past(b, start, end, top, what, msg);
    const uint8_t c = b->d[p++];
    if (i == 9 && c > 1)
      return pg_err_set(b->err, PG_E_PROTOBUF, b->file, start,
                        "%s of %s: varint longer than 64 bits", what, msg);
    r |= (uint64_t)(c & 0x7f) << (7 * i);
    if (!(c & 0x80)) {
      *pos = p;
      *v = r;
      return PG_OK;
    }
  }
  return PG_E_PROTOBUF; /* not reached: the tenth byte either ends or fails above */
}

/* Read the next field of a message ending at end (top: the message is the whole input). */
static int pb_next(const pb *b, size_t *pos, size_t end, int top, pb_field *f, const char *msg) {
  uint64_t tag;
  f->tag_off = *pos;
  PG_TRY(pb_varint(b, pos, end, top, &tag, "field tag", msg));
  const uint64_t num = tag >> 3;
  f->wt = (int)(tag & 7);
  if (num == 0 || num > 0x1fffffffu)
    return pg_err_set(b->err, PG_E_PROTOBUF, b->file, f->tag_off,
                      "field number %llu in %s (valid: 1..536870911)", (unsigned long long)num,
                      msg);
  f->num = (uint32_t)num;
  f->val_off = *pos;
  switch (f->wt) {
  case WT_VARINT: return pb_varint(b, pos, end, top, &f->v, "varint value", msg);
  case WT_I64:
    if (end - *pos < 8) return pb_past(b, *pos, end, top, "64-bit value", msg);
    f->v = pg_ld64(b->d + *pos);
    *pos += 8;
    return PG_OK;
  case WT_I32:
    if (end - *pos < 4) return pb_past(b, *pos, end, top, "32-bit value", msg);
    f->v = pg_ld32(b->d + *pos);
    *pos += 4;
    return PG_OK;
  case WT_LEN: {
    uint64_t len;
    PG_TRY(pb_varint(b, pos, end, top, &len, "length", msg));
    if (len > (uint64_t)(end - *pos)) {
      if (top)
        return pg_err_set(b->err, PG_E_TRUNCATED, b->file, f->val_off,
                          "field %u of %s: length %llu runs past the end of the file (%zu bytes "
                          "left)",
                          f->num, msg, (unsigned long long)len, end - *pos);
      return pg_err_set(b->err, PG_E_PROTOBUF, b->file, f->val_off,
                        "field %u of %s: length %llu runs past the end of its enclosing message "
                        "(%zu bytes left)",
                        f->num, msg, (unsigned long long)len, end - *pos);
    }
    f->off = *pos;
    f->len = (size_t)len;
    *pos += (size_t)len;
    return PG_OK;
  }
  case WT_SGROUP:
  case WT_EGROUP:
    return pg_err_set(b->err, PG_E_PROTOBUF, b->file, f->tag_off,
                      "field %u of %s: wire type %d (groups) is not supported", f->num, msg, f->wt);
  default:
    return pg_err_set(b->err, PG_E_PROTOBUF, b->file, f->tag_off,
                      "field %u of %s: invalid wire type %d", f->num, msg, f->wt);
  }
}

static const char *wt_name(int wt) {
  switch (wt) {
  case WT_VARINT: return "varint";
  case WT_I64: return "64-bit";
  case WT_LEN: return "length-delimited";
  case WT_I32: return "32-bit";
  default: return "?";
  }
}

static int pb_expect(const pb *b, const pb_field *f, int wt, const char *msg, const char *field) {
  if (f->wt == wt) return PG_OK;
  return pg_err_set(b->err, PG_E_PROTOBUF, b->file, f->tag_off,
                    "field %u (%s) of %s has wire type %d (%s), expected %d (%s)", f->num, field,
                    msg, f->wt, wt_name(f->wt), wt, wt_name(wt));
}

/* ---- decoding the messages ---- */

typedef struct raw_piece {
  size_t off; /* the piece string in the input */
  size_t len;
  float score;
  int type;
  size_t msg_off;
} raw_piece;

typedef struct parse_state {
  raw_piece *raw;
  uint32_t n, cap;
  size_t name_off, name_len; /* NormalizerSpec.name in the input */
  pg_spm_info info;
} parse_state;

static int parse_piece(const pb *b, size_t pos, size_t end, uint32_t index, raw_piece *rp) {
  char msg[48];
  snprintf(msg, sizeof msg, "piece %u", index);
  rp->off = 0;
  rp->len = 0;
  rp->score = 0.0f;
  rp->type = PG_SPM_NORMAL;
  rp->msg_off = pos;
  while (pos < end) {
    pb_field f;
    PG_TRY(pb_next(b, &pos, end, 0, &f, msg));
    switch (f.num) {
    case 1:
      PG_TRY(pb_expect(b, &f, WT_LEN, msg, "piece"));
      rp->off = f.off;
      rp->len = f.len;
      break;
    case 2: {
      PG_TRY(pb_expect(b, &f, WT_I32, msg, "score"));
      const uint32_t bits = (uint32_t)f.v;
      memcpy(&rp->score, &bits, 4);
      break;
    }
    case 3:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "type"));
      if (f.v < 1 || f.v > 6)
        return pg_err_set(b->err, PG_E_PIECE_TYPE, b->file, f.val_off,
                          "piece %u has type %llu (valid: 1..6)", index, (unsigned long long)f.v);
      rp->type = (int)f.v;
      break;
    default: break; /* unknown fields are skipped */
    }
  }
  return PG_OK;
}

static int parse_trainer(const pb *b, size_t pos, size_t end, pg_spm_info *in) {
  static const char msg[] = "TrainerSpec";
  in->present |= PG_SPM_HAS_TRAINER;
  while (pos < end) {
    pb_field f;
    PG_TRY(pb_next(b, &pos, end, 0, &f, msg));
    /* int32 fields are varints holding the value sign-extended to 64 bits: keep the low 32. */
    const int32_t i32 = (int32_t)(uint32_t)f.v;
    switch (f.num) {
    case 3:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "model_type"));
      in->model_type = i32;
      in->present |= PG_SPM_HAS_MODEL_TYPE;
      break;
    case 4:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "vocab_size"));
      in->trainer_vocab_size = i32;
      in->present |= PG_SPM_HAS_VOCAB_SIZE;
      break;
    case 35:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "byte_fallback"));
      in->byte_fallback = f.v != 0;
      in->present |= PG_SPM_HAS_BYTE_FALLBACK;
      break;
    case 40:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "unk_id"));
      in->unk_id = i32;
      in->present |= PG_SPM_HAS_UNK_ID;
      break;
    case 41:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "bos_id"));
      in->bos_id = i32;
      in->present |= PG_SPM_HAS_BOS_ID;
      break;
    case 42:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "eos_id"));
      in->eos_id = i32;
      in->present |= PG_SPM_HAS_EOS_ID;
      break;
    case 43:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "pad_id"));
      in->pad_id = i32;
      in->present |= PG_SPM_HAS_PAD_ID;
      break;
    default: break;
    }
  }
  return PG_OK;
}

static int parse_normalizer(const pb *b, size_t pos, size_t end, parse_state *st) {
  static const char msg[] = "NormalizerSpec";
  pg_spm_info *in = &st->info;
  in->present |= PG_SPM_HAS_NORMALIZER;
  while (pos < end) {
    pb_field f;
    PG_TRY(pb_next(b, &pos, end, 0, &f, msg));
    switch (f.num) {
    case 1: {
      PG_TRY(pb_expect(b, &f, WT_LEN, msg, "name"));
      size_t bad = 0;
      if (!pg_utf8_valid(b->d + f.off, f.len, &bad))
        return pg_err_set(b->err, PG_E_UTF8, b->file, (uint64_t)(f.off + bad),
                          "the normalizer name is not valid UTF-8");
      st->name_off = f.off;
      st->name_len = f.len;
      in->present |= PG_SPM_HAS_NAME;
      break;
    }
    case 3:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "add_dummy_prefix"));
      in->add_dummy_prefix = f.v != 0;
      in->present |= PG_SPM_HAS_ADD_DUMMY_PREFIX;
      break;
    case 4:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "remove_extra_whitespaces"));
      in->remove_extra_whitespaces = f.v != 0;
      in->present |= PG_SPM_HAS_REMOVE_EXTRA_WS;
      break;
    case 5:
      PG_TRY(pb_expect(b, &f, WT_VARINT, msg, "escape_whitespaces"));
      in->escape_whitespaces = f.v != 0;
      in->present |= PG_SPM_HAS_ESCAPE_WS;
      break;
    default: break;
    }
  }
  return PG_OK;
}

static int parse_model(const pb *b, parse_state *st) {
  static const char msg[] = "ModelProto";
  size_t pos = 0;
  while (pos < b->n) {
    pb_field f;
    PG_TRY(pb_next(b, &pos, b->n, 1, &f, msg));
    switch (f.num) {
    case 1: {
      PG_TRY(pb_expect(b, &f, WT_LEN, msg, "pieces"));
      if (st->n >= PG_SPM_MAX_PIECES)
        return pg_err_set(b->err, PG_E_LIMIT, b->file, f.tag_off,
                          "more than %u pieces", PG_SPM_MAX_PIECES);
      if (st->n == st->cap) {
        const uint32_t cap = st->cap ? st->cap * 2 : 256;
        raw_piece *r = realloc(st->raw, (size_t)cap * sizeof *r);
        if (!r) return pg_err_set(b->err, PG_E_NOMEM, b->file, f.tag_off, "out of memory");
        st->raw = r;
        st->cap = cap;
      }
      PG_TRY(parse_piece(b, f.off, f.off + f.len, st->n, &st->raw[st->n]));
      const raw_piece *rp = &st->raw[st->n];
      size_t bad = 0;
      if (!pg_utf8_valid(b->d + rp->off, rp->len, &bad))
        return pg_err_set(b->err, PG_E_UTF8, b->file, (uint64_t)(rp->off + bad),
                          "piece %u is not valid UTF-8", st->n);
      st->n++;
      break;
    }
    case 2:
      PG_TRY(pb_expect(b, &f, WT_LEN, msg, "trainer_spec"));
      PG_TRY(parse_trainer(b, f.off, f.off + f.len, &st->info));
      break;
    case 3:
      PG_TRY(pb_expect(b, &f, WT_LEN, msg, "normalizer_spec"));
      PG_TRY(parse_normalizer(b, f.off, f.off + f.len, st));
      break;
    default: break; /* self_test_data (4), denormalizer_spec (5), extensions: skipped */
    }
  }
  return PG_OK;
}

/* ---- the piece index ---- */

/* Bytes order (memcmp, then the shorter first). */
static int cmp_bytes(const char *a, size_t na, const char *b, size_t nb) {
  const int c = memcmp(a, b, na < nb ? na : nb);
  return c ? c : (na > nb) - (na < nb);
}

int32_t pg_spm_piece_to_id(const pg_spm *m, const char *s, size_t len) {
  if (!m || (!s && len) || !m->order) return -1;
  size_t lo = 0, hi = m->n; /* the first id whose piece is not below s */
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    const pg_spm_piece *p = &m->pieces[m->order[mid]];
    if (cmp_bytes(p->piece, p->len, s, len) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo == m->n) return -1;
  const pg_spm_piece *p = &m->pieces[m->order[lo]];
  return p->len == len && !memcmp(p->piece, s, len) ? (int32_t)m->order[lo] : -1;
}

int pg_spm_byte_value(const char *s, size_t len) {
  if (!s || len != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; i++) {
    const char c = s[i];
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
    else return -1;
    v = v * 16 + d;
  }
  return v;
}

/* ---- opening ---- */

void pg_spm_free(pg_spm *m) {
  if (!m) return;
  free(m->name);
  free(m->pieces);
  free(m->strings);
  free(m->norm_name);
  free(m->order);
  free(m);
}

static char *dup_str(const char *s, size_t n) {
  char *r = malloc(n + 1);
  if (!r) return NULL;
  if (n) memcpy(r, s, n);
  r[n] = 0;
  return r;
}

/* What SentencePiece checks when it loads a model (model_interface InitializePieces). */
static int check_pieces(pg_spm *m, pg_err *err) {
  const char *file = m->name;
  pg_spm_info *in = &m->info;
  uint32_t nbytes = 0;
  in->unk_piece_id = -1;
  for (uint32_t i = 0; i < m->n; i++) {
    const pg_spm_piece *p = &m->pieces[i];
    if (p->len == 0)
      return pg_err_set(err, PG_E_MALFORMED, file, p->offset, "piece %u is empty", i);
    in->type_count[p->type]++;
    if (p->type == PG_SPM_UNKNOWN) {
      if (in->unk_piece_id >= 0)
        return pg_err_set(err, PG_E_MALFORMED, file, p->offset,
                          "piece %u is a second UNKNOWN piece (the first is piece %d)", i,
                          in->unk_piece_id);
      in->unk_piece_id = (int32_t)i;
    }
    if (p->type == PG_SPM_BYTE) {
      if (!in->byte_fallback)
        return pg_err_set(err, PG_E_MALFORMED, file, p->offset,
                          "piece %u is a BYTE piece but byte_fallback is false", i);
      const int v = pg_spm_byte_value(p->piece, p->len);
      if (v < 0)
        return pg_err_set(err, PG_E_MALFORMED, file, p->offset,
                          "BYTE piece %u is not of the form <0xHH> (uppercase hex)", i);
      (void)v; /* a repeated value is a duplicate piece, refused by the index */
      nbytes++;
    }
  }
  if (in->unk_piece_id < 0)
    return pg_err_set(err, PG_E_MALFORMED, file, PG_NO_OFFSET, "no UNKNOWN piece");
  if (in->byte_fallback && nbytes != 256)
    return pg_err_set(err, PG_E_MALFORMED, file, PG_NO_OFFSET,
                      "byte_fallback is true but there are %u BYTE pieces, not 256", nbytes);
  return PG_OK;
}

/* C11's qsort passes no context, so each element carries the bytes it sorts by. */
typedef struct piece_ref {
  const char *s;
  uint32_t len, id;
} piece_ref;

static int cmp_piece_ref(const void *x, const void *y) {
  const piece_ref *a = x, *b = y;
  const int c = cmp_bytes(a->s, a->len, b->s, b->len);
  return c ? c : (a->id > b->id) - (a->id < b->id);
}

/* The index is a sort, not a hash table: its cost is O(n log n) comparisons whatever the pieces
 * are (a fixed hash lets a file choose pieces that collide, and an open-addressing table then
 * takes time quadratic in their number). Equal pieces end up adjacent, in id order. */
static int build_index(pg_spm *m, pg_err *err) {
  piece_ref *r = malloc((size_t)m->n * sizeof *r);
  m->order = malloc((size_t)m->n * sizeof *m->order);
  if (!r || !m->order) {
    free(r);
    return pg_err_set(err, PG_E_NOMEM, m->name, PG_NO_OFFSET, "out of memory");
  }
  for (uint32_t id = 0; id < m->n; id++)
    r[id] = (piece_ref){m->pieces[id].piece, m->pieces[id].len, id};
  qsort(r, m->n, sizeof *r, cmp_piece_ref);
  /* Report the lowest id that repeats an earlier piece, and the first piece it repeats. */
  uint32_t dup = UINT32_MAX, first = 0;
  for (uint32_t i = 1, g = 0; i < m->n; i++) {
    if (cmp_bytes(r[i].s, r[i].len, r[g].s, r[g].len)) {
      g = i;
      continue;
    }
    if (i == g + 1 && r[i].id < dup) dup = r[i].id, first = r[g].id;
  }
  for (uint32_t i = 0; i < m->n; i++) m->order[i] = r[i].id;
  free(r);
  if (dup != UINT32_MAX)
    return pg_err_set(err, PG_E_DUPLICATE, m->name, m->pieces[dup].offset,
                      "piece %u repeats piece %u", dup, first);
  return PG_OK;
}

static int open_parsed(pg_spm *m, const pb *b, parse_state *st, pg_err *err) {
  m->n = st->n;
  m->info = st->info;
  m->info.vocab_size = st->n;
  if (st->n == 0)
    return pg_err_set(err, PG_E_VOCAB, m->name, PG_NO_OFFSET, "the model has no pieces");
  size_t total = 0;
  for (uint32_t i = 0; i < st->n; i++) total += st->raw[i].len + 1; /* < input size + n */
  m->pieces = calloc(st->n, sizeof *m->pieces);
  m->strings = malloc(total);
  m->norm_name = dup_str(st->name_len ? (const char *)b->d + st->name_off : "", st->name_len);
  if (!m->pieces || !m->strings || !m->norm_name)
    return pg_err_set(err, PG_E_NOMEM, m->name, PG_NO_OFFSET, "out of memory");
  m->info.normalizer_name = m->norm_name;
  char *w = m->strings;
  for (uint32_t i = 0; i < st->n; i++) {
    const raw_piece *rp = &st->raw[i];
    pg_spm_piece *p = &m->pieces[i];
    if (rp->len) memcpy(w, b->d + rp->off, rp->len);
    w[rp->len] = 0;
    p->piece = w;
    p->len = (uint32_t)rp->len;
    p->score = rp->score;
    p->type = rp->type;
    p->offset = rp->msg_off;
    w += rp->len + 1;
  }
  PG_TRY(check_pieces(m, err));
  PG_TRY(build_index(m, err));
  m->info.space_id = pg_spm_piece_to_id(m, "\xE2\x96\x81", 3);
  return PG_OK;
}

int pg_spm_open_mem(pg_spm **out, const uint8_t *data, size_t len, const char *name, pg_err *err) {
  const char *file = name ? name : "<memory>";
  if (out) *out = NULL;
  PG_FAIL_IF(!out || (!data && len), err, PG_E_ARG, file, PG_NO_OFFSET, "no model to read");
  PG_FAIL_IF(len > PG_SPM_MAX_FILE, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "%zu bytes is more than the %zu-byte limit for a .model file", len, PG_SPM_MAX_FILE);
  pg_spm *m = calloc(1, sizeof *m);
  if (!m) return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
  m->name = dup_str(file, strlen(file));
  if (!m->name) {
    free(m);
    return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
  }
  parse_state st;
  memset(&st, 0, sizeof st);
  st.info.model_type = PG_SPM_UNIGRAM;
  st.info.trainer_vocab_size = 8000;
  st.info.byte_fallback = 0;
  st.info.unk_id = 0;
  st.info.bos_id = 1;
  st.info.eos_id = 2;
  st.info.pad_id = -1;
  st.info.add_dummy_prefix = 1;
  st.info.remove_extra_whitespaces = 1;
  st.info.escape_whitespaces = 1;
  st.info.unk_piece_id = -1;
  st.info.space_id = -1;
  const pb b = {data, len, m->name, err};
  int rc = parse_model(&b, &st);
  if (rc == PG_OK) rc = open_parsed(m, &b, &st, err);
  free(st.raw);
  if (rc != PG_OK) {
    pg_spm_free(m);
    return rc;
  }
  *out = m;
  return PG_OK;
}

int pg_spm_open_file(pg_spm **out, const char *path, pg_err *err) {
  if (out) *out = NULL;
  PG_FAIL_IF(!out || !path, err, PG_E_ARG, path, PG_NO_OFFSET, "no model path");
  uint8_t *buf = NULL;
  size_t len = 0;
  PG_TRY(pg_file_read_all(path, &buf, &len, PG_SPM_MAX_FILE, err));
  const int rc = pg_spm_open_mem(out, buf, len, path, err);
  free(buf);
  return rc;
}

const char *pg_spm_name(const pg_spm *m) { return m ? m->name : NULL; }
uint32_t pg_spm_vocab_size(const pg_spm *m) { return m ? m->n : 0; }
const pg_spm_piece *pg_spm_piece_at(const pg_spm *m, uint32_t id) {
  return m && id < m->n ? &m->pieces[id] : NULL;
}
const pg_spm_info *pg_spm_info_of(const pg_spm *m) { return m ? &m->info : NULL; }
int32_t pg_spm_space_id(const pg_spm *m) { return m ? m->info.space_id : -1; }

int pg_spm_check_vocab(const pg_spm *m, uint32_t expected, pg_err *err) {
  PG_FAIL_IF(!m, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no model");
  PG_FAIL_IF(m->n != expected, err, PG_E_VOCAB, m->name, PG_NO_OFFSET,
             "the model has %u pieces, expected %u", m->n, expected);
  return PG_OK;
}

/* ---- the byte tables ---- */

void pg_spm_tables_free(pg_spm_tables *t) {
  if (!t) return;
  free(t->base);
  free(t->lead);
  free(t->boundary);
  memset(t, 0, sizeof *t);
}

int pg_spm_tables_build(pg_spm_tables *t, const pg_spm *m, uint32_t requested, unsigned flags,
                        pg_err *err) {
  PG_FAIL_IF(!t, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tables to fill");
  memset(t, 0, sizeof *t);
  PG_FAIL_IF(!m, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no model");
  PG_FAIL_IF(flags & ~PG_SPM_ALLOW_NO_SPACE, err, PG_E_ARG, m->name, PG_NO_OFFSET,
             "unknown flags 0x%x", flags & ~PG_SPM_ALLOW_NO_SPACE);
  const int32_t sid = m->info.space_id;
  if (!(flags & PG_SPM_ALLOW_NO_SPACE) && (sid < 0 || sid == m->info.unk_piece_id))
    return pg_err_set(err, PG_E_NO_SPACE_PIECE, m->name, PG_NO_OFFSET,
                      "the tokenizer has no \"\xE2\x96\x81\" (U+2581) piece%s, so leading spaces "
                      "cannot be counted (the challenge asserts sp.piece_to_id(\"\xE2\x96\x81\") "
                      "!= sp.unk_id())",
                      sid < 0 ? "" : " of its own (it is the UNKNOWN piece)");
  const uint32_t size = m->n > requested ? m->n : requested;
  PG_FAIL_IF(size > PG_SPM_MAX_TABLE, err, PG_E_LIMIT, m->name, PG_NO_OFFSET,
             "a byte table of %u entries is more than the limit of %u", size, PG_SPM_MAX_TABLE);
  t->base = calloc(size, sizeof *t->base);
  t->lead = calloc(size, 1);
  t->boundary = malloc(size);
  if (!t->base || !t->lead || !t->boundary) {
    pg_spm_tables_free(t);
    return pg_err_set(err, PG_E_NOMEM, m->name, PG_NO_OFFSET, "out of memory");
  }
  memset(t->boundary, 1, size);
  for (uint32_t id = 0; id < m->n; id++) {
    const pg_spm_piece *p = &m->pieces[id];
    if (p->type == PG_SPM_CONTROL || p->type == PG_SPM_UNKNOWN || p->type == PG_SPM_UNUSED)
      continue;
    t->boundary[id] = 0;
    if (p->type == PG_SPM_BYTE) {
      t->base[id] = 1;
      continue;
    }
    uint32_t len = p->len;
    if (len >= 3 && !memcmp(p->piece, "\xE2\x96\x81", 3)) {
      t->lead[id] = 1;
      len -= 3;
    }
    /* The challenge adds base + lead in int16 too: both must fit. */
    if (len + t->lead[id] > PG_SPM_MAX_BASE) {
      const uint64_t off = p->offset;
      const unsigned lead = t->lead[id];
      pg_spm_tables_free(t);
      return pg_err_set(err, PG_E_LIMIT, m->name, off,
                        "piece %u counts %u bytes%s, more than the challenge's int16 byte table "
                        "holds (%u)",
                        id, len, lead ? " plus a leading space" : "", PG_SPM_MAX_BASE);
    }
    t->base[id] = (int16_t)len;
  }
  t->size = size;
  t->vocab = m->n;
  return PG_OK;
}

int pg_spm_pair_bytes(const pg_spm_tables *t, uint32_t prev, uint32_t tgt, uint32_t *bytes,
                      pg_err *err) {
  PG_FAIL_IF(!t || !bytes || !t->base, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tables");
  PG_FAIL_IF(prev >= t->size || tgt >= t->size, err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,
             "token %u outside the byte table of %u entries", prev >= t->size ? prev : tgt,
             t->size);
  *bytes = pg_spm_pair_bytes_unchecked(t, prev, tgt);
  return PG_OK;
}

#define COUNT_PAIRS_BODY(X, Y)                                                                   \
  PG_FAIL_IF(!t || !t->base || !total || (n && (!x || !y)), err, PG_E_ARG, NULL, PG_NO_OFFSET,  \
             "no tables or tokens");                                                             \
  uint64_t sum = 0;                                                                              \
  for (size_t i = 0; i < n; i++) {                                                               \
    const uint32_t a = (X), c = (Y);                                                             \
    if (a >= t->size || c >= t->size)                                                            \
      return pg_err_set(err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,                               \
                        "token %u at index %zu outside the byte table of %u entries",            \
                        a >= t->size ? a : c, i, t->size);                                       \
    const uint32_t k = pg_spm_pair_bytes_unchecked(t, a, c);                                     \
    if (per_target) per_target[i] = k;                                                           \
    sum += k;                                                                                    \
  }                                                                                              \
  *total = sum;                                                                                  \
  return PG_OK

int pg_spm_count_pairs_u16(const pg_spm_tables *t, const uint16_t *x, const uint16_t *y, size_t n,
                           uint64_t *total, uint32_t *per_target, pg_err *err) {
  COUNT_PAIRS_BODY(x[i], y[i]);
}

int pg_spm_count_pairs_u32(const pg_spm_tables *t, const uint32_t *x, const uint32_t *y, size_t n,
                           uint64_t *total, uint32_t *per_target, pg_err *err) {
  COUNT_PAIRS_BODY(x[i], y[i]);
}

int pg_spm_count_stream_u16(const pg_spm_tables *t, const uint16_t *s, size_t n, uint64_t *total,
                            pg_err *err) {
  PG_FAIL_IF(n && !s, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tokens");
  if (n < 2) {
    PG_FAIL_IF(!t || !t->base || !total, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tables");
    *total = 0;
    return PG_OK;
  }
  return pg_spm_count_pairs_u16(t, s, s + 1, n - 1, total, NULL, err);
}

int pg_spm_count_stream_u32(const pg_spm_tables *t, const uint32_t *s, size_t n, uint64_t *total,
                            pg_err *err) {
  PG_FAIL_IF(n && !s, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tokens");
  if (n < 2) {
    PG_FAIL_IF(!t || !t->base || !total, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no tables");
    *total = 0;
    return PG_OK;
  }
  return pg_spm_count_pairs_u32(t, s, s + 1, n - 1, total, NULL, err);
}

void pg_spm_tables_totals(const pg_spm_tables *t, const pg_spm *m, pg_spm_totals *out) {
  if (!out) return;
  memset(out, 0, sizeof *out);
  if (!t || !t->base) return;
  for (uint32_t i = 0; i < t->size; i++) {
    out->base_sum += (uint64_t)(uint16_t)t->base[i];
    out->lead += t->lead[i];
    out->boundary += t->boundary[i];
    if (i >= t->vocab) out->beyond++;
    else if (m && i < m->n) out->type_count[m->pieces[i].type]++;
  }
}
