/* pg_receipt.c: the evaluation receipt (spec/eval.md §7). The writer lays out the fields in a
 * fixed order, so that the same inputs give the same bytes; the reader accepts exactly that
 * shape and checks every field it keeps, since a receipt comes from outside. */
#include "pg_receipt.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_io.h"
#include "pg_json.h"
#include "pg_model.h"
#include "pg_optim.h"
#include "pg_text.h"

/* ---- writer ---------------------------------------------------------------------------------- */

static json_t *hex64(uint64_t h) {
  char b[17];
  snprintf(b, sizeof b, "%016llx", (unsigned long long)h);
  return json_string(b);
}

static json_t *protocol_json(const pg_protocol *p) {
  json_t *o = json_object();
  char tg[64];
  json_object_set_new(o, "name", json_string(pg_proto_name(p->kind)));
  json_object_set_new(o, "seq_len", json_integer(p->seq_len));
  json_object_set_new(o, "trim", json_boolean(p->trim));
  json_object_set_new(o, "batch", json_integer(p->batch));
  if (p->kind == PG_PROTO_SLIDING || p->kind == PG_PROTO_TTT_CHUNK) {
    json_object_set_new(o, "stride", json_integer(p->stride));
    json_object_set_new(o, "tail_dup", json_boolean(p->tail_dup));
  }
  if (p->kind == PG_PROTO_SLIDING)
    json_object_set_new(o, "sliding_variant",
                        json_string(pg_sliding_variant_name(p->sliding_variant)));
  if (p->kind == PG_PROTO_PLAIN) {
    json_object_set_new(o, "plain_variant", json_string(pg_plain_variant_name(p->plain_variant)));
    if (p->plain_variant == PG_PLAIN_PACKED) {
      json_object_set_new(o, "pack_windows", json_integer(p->pack_windows));
      json_object_set_new(o, "pack_ranks", json_integer(p->pack_ranks));
    }
  }
  if (p->kind == PG_PROTO_PLAIN || p->kind == PG_PROTO_SLIDING)
    json_object_set_new(o, "report_tokens", json_integer((json_int_t)p->report_tokens));
  if (p->kind == PG_PROTO_TTT_CHUNK || p->kind == PG_PROTO_TTT_PHASED) {
    json_object_set_new(o, "chunk_tokens", json_integer((json_int_t)p->chunk_tokens));
    json_object_set_new(o, "optimizer", json_string(pg_optim_kind_name(p->opt)));
    json_object_set_new(o, "lr", pg_json_num(p->lr));
    json_object_set_new(o, "lr_schedule", json_string("cosine across chunks"));
    if (p->opt == PG_OPTIM_SGD) json_object_set_new(o, "momentum", pg_json_num(p->momentum));
    if (p->opt == PG_OPTIM_ADAMW) {
      json_object_set_new(o, "beta1", pg_json_num(p->beta1));
      json_object_set_new(o, "beta2", pg_json_num(p->beta2));
      json_object_set_new(o, "eps", pg_json_num(p->eps));
      json_object_set_new(o, "weight_decay", pg_json_num(p->weight_decay));
    }
    json_object_set_new(o, "epochs", json_integer(p->epochs));
    json_object_set_new(o, "clip", pg_json_num(p->clip));
    json_object_set_new(o, "batch_rows", json_integer(p->batch_rows));
    json_object_set_new(o, "freeze_blocks", json_integer(p->freeze_blocks));
  }
  if (p->kind == PG_PROTO_TTT_LORA || p->kind == PG_PROTO_TTT_PHASED) {
    json_object_set_new(o, "lora_rank", json_integer(p->lora_rank));
    json_object_set_new(o, "lora_alpha", pg_json_num(p->lora_alpha));
    json_object_set_new(o, "lora_targets", json_string(pg_lora_targets_name(p->lora_targets, tg)));
    json_object_set_new(o, "lora_chunk", json_integer(p->lora_chunk));
    json_object_set_new(o, "lora_window", json_integer(p->lora_window));
    json_object_set_new(o, "lora_batch_docs", json_integer(p->lora_batch_docs));
    json_object_set_new(o, "lora_lr", pg_json_num(p->lora_lr));
    json_object_set_new(o, "lora_beta1", pg_json_num(p->lora_beta1));
    json_object_set_new(o, "lora_beta2", pg_json_num(p->lora_beta2));
    json_object_set_new(o, "lora_eps", pg_json_num(p->lora_eps));
    json_object_set_new(o, "lora_weight_decay", pg_json_num(p->lora_wd));
    json_object_set_new(o, "lora_warm_a", json_boolean(p->lora_warm_a));
    json_object_set_new(o, "seed", json_integer((json_int_t)p->seed));
  }
  if (p->kind == PG_PROTO_TTT_PHASED) {
    json_object_set_new(o, "phases", json_integer(p->phases));
    json_object_set_new(o, "prefix_docs", json_integer(p->prefix_docs));
  }
  return o;
}

static json_t *result_json(const pg_eval_result *r) {
  json_t *o = json_object();
  json_object_set_new(o, "val_loss", pg_json_num(r->val_loss));
  json_object_set_new(o, "val_bpb", pg_json_num(r->val_bpb));
  json_object_set_new(o, "loss_sum_nats", pg_json_num(r->sum.nats));
  json_object_set_new(o, "token_count", pg_json_num(r->sum.tokens));
  json_object_set_new(o, "byte_count", pg_json_num(r->sum.bytes));
  json_object_set_new(o, "tokens_in_stream", json_integer((json_int_t)r->tokens));
  json_object_set_new(o, "targets", json_integer((json_int_t)r->targets));
  json_object_set_new(o, "scored", json_integer((json_int_t)r->scored));
  json_object_set_new(o, "duplicates", json_integer((json_int_t)r->duplicates));
  json_object_set_new(o, "every_target_scored_once",
                      json_boolean(r->scored == r->targets && r->duplicates == 0));
  json_object_set_new(o, "unscored", json_integer((json_int_t)r->unscored));
  json_object_set_new(o, "every_target_scored", json_boolean(r->unscored == 0));
  json_object_set_new(o, "windows", json_integer((json_int_t)r->windows));
  json_object_set_new(o, "documents", json_integer((json_int_t)r->documents));
  json_object_set_new(o, "forwards", json_integer((json_int_t)r->forwards));
  json_object_set_new(o, "train_steps", json_integer((json_int_t)r->train_steps));
  json_object_set_new(o, "masked_targets", json_integer((json_int_t)r->masked));
  json_object_set_new(o, "seconds", pg_json_num(r->seconds));
  json_t *ch = json_array();
  for (size_t i = 0; i < r->nchunks; i++) {
    const pg_eval_chunk *c = &r->chunks[i];
    json_t *row = json_array();
    json_array_append_new(row, json_integer((json_int_t)c->first));
    json_array_append_new(row, json_integer((json_int_t)c->count));
    json_array_append_new(row, pg_json_num(c->nats));
    json_array_append_new(row, pg_json_num(c->bytes));
    json_array_append_new(row, json_integer((json_int_t)c->docs));
    json_array_append_new(row, json_integer((json_int_t)c->train_steps));
    json_array_append_new(ch, row);
  }
  json_object_set_new(o, "chunk_columns",
                      json_pack("[ssssss]", "first", "targets", "nats", "bytes", "documents",
                                "train_steps"));
  json_object_set_new(o, "chunks", ch);
  return o;
}

static json_t *provenance_json(const pg_receipt_provenance *v) {
  json_t *prov = json_object(), *warns = json_array();
  json_object_set_new(prov, "arch_source", pg_json_cstr(v->arch_source));
  json_object_set_new(prov, "arch_follows", pg_json_cstr(v->arch_follows));
  json_object_set_new(prov, "weights_record", pg_json_cstr(v->weights_record));
  json_t *unchecked = v->not_fixed_json ? json_loads(v->not_fixed_json, 0, NULL) : NULL;
  json_object_set_new(prov, "not_fixed_by_weights", unchecked ? unchecked : json_object());
  json_object_set_new(prov, "record_protocol", pg_json_cstr(v->record_protocol));
  json_object_set_new(prov, "record_protocol_source", pg_json_cstr(v->record_protocol_source));
  json_object_set_new(prov, "protocol_matches_record",
                      v->matches_record < 0 ? json_null() : json_boolean(v->matches_record));
  if (v->matches_record == 0 && v->differences)
    json_object_set_new(prov, "protocol_differences", pg_json_cstr(v->differences));
  for (size_t i = 0; i < v->nwarnings; i++)
    json_array_append_new(warns, pg_json_cstr(v->warnings[i]));
  json_object_set_new(prov, "warnings", warns);
  return prov;
}

int pg_receipt_build(const pg_receipt_in *in, char **text, pg_err *err) {
  *text = NULL;
  json_t *receipt = json_object();
  json_t *tool = json_object();
  json_object_set_new(tool, "name", json_string("pgverify"));
  json_object_set_new(tool, "version", json_string(in->version));
  json_object_set_new(tool, "receipt_format", json_integer(PG_RECEIPT_FORMAT));
  json_object_set_new(receipt, "pgverify", tool);
  json_t *ja = json_object();
  json_object_set_new(ja, "path", pg_json_cstr(in->artifact_path));
  json_object_set_new(ja, "kind", json_string(in->safetensors ? "safetensors" : "artifact"));
  json_object_set_new(ja, "bytes", json_integer((json_int_t)in->artifact_bytes));
  json_object_set_new(ja, "xxh64", hex64(in->artifact_xxh64));
  json_object_set_new(receipt, "artifact", ja);
  char *arch_text = NULL;
  if (pg_arch_serialize(in->arch, &arch_text, err)) {
    json_decref(receipt);
    return err ? err->status : PG_E_NOMEM;
  }
  json_object_set_new(receipt, "arch", json_loads(arch_text, 0, NULL));
  free(arch_text);
  json_t *jt = json_object();
  json_object_set_new(jt, "source", pg_json_cstr(in->tokenizer_source));
  json_object_set_new(jt, "pieces", json_integer(in->tokenizer_pieces));
  json_object_set_new(jt, "xxh64", hex64(in->tokenizer_xxh64));
  json_object_set_new(receipt, "tokenizer", jt);
  json_t *jv = json_object(), *files = json_array();
  json_object_set_new(jv, "pattern", pg_json_cstr(in->val_pattern));
  for (size_t k = 0; k < in->nshards; k++) {
    const pg_receipt_shard *f = &in->shards[k];
    json_array_append_new(files, json_pack("{s:o,s:I,s:o}", "path", pg_json_cstr(f->path),
                                           "tokens", (json_int_t)f->tokens, "xxh64",
                                           hex64(f->xxh64)));
  }
  json_object_set_new(jv, "files", files);
  json_object_set_new(jv, "tokens_available", json_integer((json_int_t)in->tokens_available));
  json_object_set_new(jv, "tokens_read", json_integer((json_int_t)in->tokens_read));
  json_object_set_new(jv, "partial", json_boolean(in->tokens_read < in->tokens_available));
  json_object_set_new(jv, "bytes_source",
                      json_string(in->bytes_pattern ? "sidecar" : "tokenizer byte tables"));
  if (in->bytes_pattern) json_object_set_new(jv, "bytes_pattern", pg_json_cstr(in->bytes_pattern));
  json_object_set_new(receipt, "val", jv);
  json_object_set_new(receipt, "protocol", protocol_json(in->protocol));
  if (in->provenance) json_object_set_new(receipt, "provenance", provenance_json(in->provenance));
  const pg_eval_result *res = in->result, *r32 = in->result_fp32;
  json_object_set_new(receipt, "result", result_json(res));
  if (r32) {
    json_t *o = json_object();
    json_object_set_new(o, "val_loss", json_real(r32->val_loss));
    json_object_set_new(o, "val_bpb", json_real(r32->val_bpb));
    json_object_set_new(o, "loss_sum_nats", json_real(r32->sum.nats));
    json_object_set_new(o, "token_count", json_real(r32->sum.tokens));
    json_object_set_new(o, "byte_count", json_real(r32->sum.bytes));
    json_object_set_new(o, "seconds", json_real(r32->seconds));
    json_object_set_new(o, "bf16_minus_fp32_bpb", json_real(res->val_bpb - r32->val_bpb));
    json_object_set_new(receipt, "result_fp32", o);
  }
  json_t *je = json_object();
  json_object_set_new(je, "name", json_string(in->engine ? in->engine : "cpu"));
  json_object_set_new(je, "devices", json_string(in->devices ? in->devices : ""));
  json_object_set_new(je, "driver", json_string(in->driver ? in->driver : ""));
  json_object_set_new(je, "threads", json_integer(in->threads));
  json_object_set_new(je, "precision", json_string(pg_precision_name((pg_precision)in->precision)));
  json_object_set_new(je, "numerics",
                      json_string(in->precision == PG_PREC_BF16
                                      ? "bf16 at the records' autocast rounding points, fp64 sums "
                                        "(spec/engine.md §7)"
                                      : "fp32 tensors, fp64 sums (spec/engine.md)"));
  json_object_set_new(receipt, "engine", je);
  json_t *jb = json_object();
  json_object_set_new(jb, "version", json_string(in->version));
  if (in->compiler) json_object_set_new(jb, "compiler", json_string(in->compiler));
  json_object_set_new(receipt, "build", jb);
  json_object_set_new(receipt, "seconds_total", pg_json_num(in->seconds_total));
  char *t = json_dumps(receipt, JSON_INDENT(2) | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(17));
  json_decref(receipt);
  size_t tl = t ? strlen(t) : 0;
  char *out = t ? realloc(t, tl + 2) : NULL;
  if (!out) {
    free(t);
    return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot format the receipt");
  }
  out[tl] = '\n';
  out[tl + 1] = '\0';
  *text = out;
  return PG_OK;
}

int pg_receipt_write(const char *path, const char *text, pg_err *err) {
  return pg_file_write_atomic(path, text, strlen(text), err);
}

/* Append printf text to buf (cap bytes; cut when full). */
static void cat(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void cat(char *buf, size_t cap, const char *fmt, ...) {
  const size_t n = strlen(buf);
  if (n + 1 >= cap) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + n, cap - n, fmt, ap);
  va_end(ap);
}

int pg_receipt_protocol_diff(const pg_protocol *used, const pg_protocol *rec, char *buf,
                             size_t cap) {
  buf[0] = '\0';
  if (used->kind != rec->kind) {
    cat(buf, cap, "protocol %s (the record's: %s)", pg_proto_name(used->kind),
        pg_proto_name(rec->kind));
    return 1;
  }
  json_t *a = protocol_json(used), *b = protocol_json(rec);
  int n = 0;
  const char *key;
  json_t *vb;
  json_object_foreach(b, key, vb) {
    if (!strcmp(key, "batch") || !strcmp(key, "report_tokens")) continue;
    json_t *va = json_object_get(a, key);
    if (va && json_equal(va, vb)) continue;
    char *ta = va ? json_dumps(va, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10)) : NULL;
    char *tb = json_dumps(vb, JSON_ENCODE_ANY | JSON_REAL_PRECISION(10));
    cat(buf, cap, "%s%s %s (the record's: %s)", n++ ? ", " : "", key, ta ? ta : "-",
        tb ? tb : "?");
    free(ta);
    free(tb);
  }
  json_decref(a);
  json_decref(b);
  return n;
}

/* ---- reader ---------------------------------------------------------------------------------- */

typedef struct rd {
  const char *name;
  pg_err *err;
} rd;

static int bad(rd *c, const char *obj, const char *key, const char *what) {
  return pg_err_set(c->err, PG_E_MALFORMED, c->name, PG_NO_OFFSET, "receipt field %s%s%s: %s",
                    obj, obj[0] ? "." : "", key, what);
}

/* The member key of o, which must exist (unless optional: then NULL) and have JSON type t (−1:
 * any). */
static int member(rd *c, json_t *o, const char *obj, const char *key, int t, int optional,
                  json_t **out) {
  *out = json_object_get(o, key);
  if (!*out) return optional ? PG_OK : bad(c, obj, key, "missing");
  if (t >= 0 && (int)json_typeof(*out) != t) {
    static const char *names[] = {"an object", "an array", "a string", "an integer", "a real",
                                  "true", "false", "null"};
    char what[48];
    snprintf(what, sizeof what, "not %s", names[t]);
    return bad(c, obj, key, what);
  }
  return PG_OK;
}

static int get_obj(rd *c, json_t *o, const char *obj, const char *key, json_t **v) {
  return member(c, o, obj, key, JSON_OBJECT, 0, v);
}

static int get_u64(rd *c, json_t *o, const char *obj, const char *key, uint64_t max,
                   uint64_t *out) {
  json_t *v;
  PG_TRY(member(c, o, obj, key, JSON_INTEGER, 0, &v));
  json_int_t x = json_integer_value(v);
  if (x < 0 || (uint64_t)x > max) return bad(c, obj, key, "out of range");
  *out = (uint64_t)x;
  return PG_OK;
}

static int get_int(rd *c, json_t *o, const char *obj, const char *key, int *out) {
  uint64_t u;
  PG_TRY(get_u64(c, o, obj, key, INT_MAX, &u));
  *out = (int)u;
  return PG_OK;
}

static int num_value(json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return 0;
  }
  const char *s = json_string_value(v); /* pg_json_num's names of the non-finite values */
  if (!s) return 1;
  if (!strcmp(s, "NaN")) *out = NAN;
  else if (!strcmp(s, "Infinity")) *out = INFINITY;
  else if (!strcmp(s, "-Infinity")) *out = -INFINITY;
  else return 1;
  return 0;
}

static int get_num(rd *c, json_t *o, const char *obj, const char *key, int optional,
                   double *out) {
  json_t *v;
  PG_TRY(member(c, o, obj, key, -1, optional, &v));
  if (!v) {
    *out = NAN;
    return PG_OK;
  }
  return num_value(v, out) ? bad(c, obj, key, "not a number") : PG_OK;
}

static int get_bool(rd *c, json_t *o, const char *obj, const char *key, int *out) {
  json_t *v;
  PG_TRY(member(c, o, obj, key, -1, 0, &v));
  if (!json_is_boolean(v)) return bad(c, obj, key, "not a boolean");
  *out = json_is_true(v);
  return PG_OK;
}

static int unhex(int ch) {
  return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* A string as pg_json_cstr writes it: a JSON string, or {"hex", "display"} for bytes that are
 * not UTF-8 (the hex is kept); JSON null gives NULL when nullable. A NUL inside is refused. */
static int str_value(rd *c, json_t *v, const char *obj, const char *key, int nullable,
                     char **out) {
  *out = NULL;
  if (json_is_null(v) && nullable) return PG_OK;
  if (json_is_string(v)) {
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (memchr(s, 0, n)) return bad(c, obj, key, "a string holding a NUL");
    if (!(*out = strdup(s))) goto nomem;
    return PG_OK;
  }
  json_t *h = json_is_object(v) ? json_object_get(v, "hex") : NULL;
  const char *hs = json_string_value(h);
  if (!hs) return bad(c, obj, key, "not a string");
  size_t n = json_string_length(h);
  if (n % 2) return bad(c, obj, key, "hex of odd length");
  if (!(*out = malloc(n / 2 + 1))) goto nomem;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = unhex(hs[2 * i]), lo = unhex(hs[2 * i + 1]);
    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
      free(*out);
      *out = NULL;
      return bad(c, obj, key, "not lowercase hex of bytes without NUL");
    }
    (*out)[i] = (char)(hi * 16 + lo);
  }
  (*out)[n / 2] = '\0';
  return PG_OK;
nomem:
  return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot allocate a string");
}

static int get_str(rd *c, json_t *o, const char *obj, const char *key, int nullable,
                   char **out) {
  json_t *v;
  *out = NULL;
  PG_TRY(member(c, o, obj, key, -1, 0, &v));
  return str_value(c, v, obj, key, nullable, out);
}

/* A fixed string (const); one of `choices`, NULL-terminated; *idx its index. */
static int get_choice(rd *c, json_t *o, const char *obj, const char *key,
                      const char *const *choices, int *idx) {
  json_t *v;
  PG_TRY(member(c, o, obj, key, JSON_STRING, 0, &v));
  for (int i = 0; choices[i]; i++)
    if (!strcmp(json_string_value(v), choices[i])) {
      *idx = i;
      return PG_OK;
    }
  return bad(c, obj, key, "not one of the known values");
}

static int get_hex64(rd *c, json_t *o, const char *obj, const char *key, uint64_t *out) {
  json_t *v;
  PG_TRY(member(c, o, obj, key, JSON_STRING, 0, &v));
  const char *s = json_string_value(v);
  if (json_string_length(v) != 16) return bad(c, obj, key, "not 16 hex digits");
  uint64_t h = 0;
  for (int i = 0; i < 16; i++) {
    int d = unhex(s[i]);
    if (d < 0) return bad(c, obj, key, "not 16 lowercase hex digits");
    h = h << 4 | (uint64_t)d;
  }
  *out = h;
  return PG_OK;
}

/* The protocol object: its kind's defaults, then each field it has; names the writer does not
 * make are refused, and the result must pass pg_protocol_validate. */
enum { F_INT, F_U64, F_DBL, F_BOOL, F_OPT, F_TARGETS, F_SVAR, F_PVAR };
typedef struct pfield {
  const char *key;
  int type;
  size_t off;
} pfield;
#define PF(k, t, m) {k, t, offsetof(pg_protocol, m)}
static const pfield PFIELDS[] = {
    PF("seq_len", F_INT, seq_len),          PF("trim", F_BOOL, trim),
    PF("batch", F_INT, batch),              PF("stride", F_INT, stride),
    PF("tail_dup", F_BOOL, tail_dup),       PF("report_tokens", F_U64, report_tokens),
    PF("chunk_tokens", F_U64, chunk_tokens), PF("optimizer", F_OPT, opt),
    PF("lr", F_DBL, lr),                    PF("momentum", F_DBL, momentum),
    PF("beta1", F_DBL, beta1),              PF("beta2", F_DBL, beta2),
    PF("eps", F_DBL, eps),                  PF("weight_decay", F_DBL, weight_decay),
    PF("epochs", F_INT, epochs),            PF("clip", F_DBL, clip),
    PF("batch_rows", F_INT, batch_rows),    PF("freeze_blocks", F_INT, freeze_blocks),
    PF("lora_rank", F_INT, lora_rank),      PF("lora_alpha", F_DBL, lora_alpha),
    PF("lora_targets", F_TARGETS, lora_targets), PF("lora_chunk", F_INT, lora_chunk),
    PF("lora_window", F_INT, lora_window),  PF("lora_batch_docs", F_INT, lora_batch_docs),
    PF("lora_lr", F_DBL, lora_lr),          PF("lora_beta1", F_DBL, lora_beta1),
    PF("lora_beta2", F_DBL, lora_beta2),    PF("lora_eps", F_DBL, lora_eps),
    PF("lora_weight_decay", F_DBL, lora_wd), PF("lora_warm_a", F_BOOL, lora_warm_a),
    PF("seed", F_U64, seed),                PF("phases", F_INT, phases),
    PF("prefix_docs", F_INT, prefix_docs),
    PF("sliding_variant", F_SVAR, sliding_variant), PF("plain_variant", F_PVAR, plain_variant),
    PF("pack_windows", F_INT, pack_windows), PF("pack_ranks", F_INT, pack_ranks),
};

static int read_protocol(rd *c, json_t *o, pg_protocol *p) {
  json_t *v;
  PG_TRY(member(c, o, "protocol", "name", JSON_STRING, 0, &v));
  int kind = pg_proto_parse(json_string_value(v));
  if (kind <= 0) return bad(c, "protocol", "name", "not a protocol");
  pg_protocol_defaults(p, kind);
  const char *key;
  json_object_foreach(o, key, v) {
    if (!strcmp(key, "name") || !strcmp(key, "lr_schedule")) continue;
    const pfield *f = NULL;
    for (size_t i = 0; i < sizeof PFIELDS / sizeof *PFIELDS; i++)
      if (!strcmp(key, PFIELDS[i].key)) f = &PFIELDS[i];
    if (!f) return bad(c, "protocol", key, "not a protocol parameter");
    char *at = (char *)p + f->off;
    int n;
    switch (f->type) {
    case F_INT: PG_TRY(get_int(c, o, "protocol", key, (int *)at)); break;
    case F_U64: PG_TRY(get_u64(c, o, "protocol", key, INT64_MAX, (uint64_t *)at)); break;
    case F_DBL: PG_TRY(get_num(c, o, "protocol", key, 0, (double *)at)); break;
    case F_BOOL: PG_TRY(get_bool(c, o, "protocol", key, (int *)at)); break;
    case F_OPT:
      n = json_is_string(v) ? pg_optim_kind_parse(json_string_value(v)) : -1;
      if (n < 0) return bad(c, "protocol", key, "not an optimizer");
      *(int *)at = n;
      break;
    case F_SVAR:
    case F_PVAR:
      n = !json_is_string(v)       ? -1
          : f->type == F_SVAR      ? pg_sliding_variant_parse(json_string_value(v))
                                   : pg_plain_variant_parse(json_string_value(v));
      if (n < 0) return bad(c, "protocol", key, "not a variant of its protocol");
      *(int *)at = n;
      break;
    default: /* F_TARGETS */
      if (!json_is_string(v) || pg_lora_targets_parse(json_string_value(v), (unsigned *)at, NULL))
        return bad(c, "protocol", key, "not a list of LoRA targets");
    }
  }
  pg_err e;
  if (pg_protocol_validate(p, &e))
    return pg_err_set(c->err, PG_E_MALFORMED, c->name, PG_NO_OFFSET, "receipt protocol: %s",
                      e.msg);
  return PG_OK;
}

static int read_result(rd *c, json_t *o, pg_eval_result *r, int *once) {
  const char *R = "result";
  PG_TRY(get_num(c, o, R, "val_loss", 0, &r->val_loss));
  PG_TRY(get_num(c, o, R, "val_bpb", 0, &r->val_bpb));
  PG_TRY(get_num(c, o, R, "loss_sum_nats", 0, &r->sum.nats));
  PG_TRY(get_num(c, o, R, "token_count", 0, &r->sum.tokens));
  PG_TRY(get_num(c, o, R, "byte_count", 0, &r->sum.bytes));
  PG_TRY(get_u64(c, o, R, "tokens_in_stream", INT64_MAX, &r->tokens));
  PG_TRY(get_u64(c, o, R, "targets", INT64_MAX, &r->targets));
  PG_TRY(get_u64(c, o, R, "scored", INT64_MAX, &r->scored));
  PG_TRY(get_u64(c, o, R, "duplicates", INT64_MAX, &r->duplicates));
  PG_TRY(get_bool(c, o, R, "every_target_scored_once", once));
  if (*once != (r->scored == r->targets && r->duplicates == 0))
    return bad(c, R, "every_target_scored_once", "disagrees with scored, targets, duplicates");
  /* unscored and every_target_scored came with the variants that skip targets: a receipt
   * written before them scored every target */
  json_t *u;
  int every = 1;
  PG_TRY(member(c, o, R, "unscored", -1, 1, &u));
  if (u) PG_TRY(get_u64(c, o, R, "unscored", INT64_MAX, &r->unscored));
  PG_TRY(member(c, o, R, "every_target_scored", -1, 1, &u));
  if (u) PG_TRY(get_bool(c, o, R, "every_target_scored", &every));
  if (every != (r->unscored == 0))
    return bad(c, R, "every_target_scored", "disagrees with unscored");
  if (r->unscored > r->targets || r->scored + r->unscored != r->targets + r->duplicates)
    return bad(c, R, "unscored", "scored + unscored is not targets + duplicates");
  PG_TRY(get_u64(c, o, R, "windows", INT64_MAX, &r->windows));
  PG_TRY(get_u64(c, o, R, "documents", INT64_MAX, &r->documents));
  PG_TRY(get_u64(c, o, R, "forwards", INT64_MAX, &r->forwards));
  PG_TRY(get_u64(c, o, R, "train_steps", INT64_MAX, &r->train_steps));
  PG_TRY(get_u64(c, o, R, "masked_targets", INT64_MAX, &r->masked));
  PG_TRY(get_num(c, o, R, "seconds", 0, &r->seconds));
  json_t *cols, *rows;
  PG_TRY(member(c, o, R, "chunk_columns", JSON_ARRAY, 0, &cols));
  json_t *want = json_pack("[ssssss]", "first", "targets", "nats", "bytes", "documents",
                           "train_steps");
  int same = want && json_equal(cols, want);
  json_decref(want);
  if (!same) return bad(c, R, "chunk_columns", "not the six columns of format 1");
  PG_TRY(member(c, o, R, "chunks", JSON_ARRAY, 0, &rows));
  size_t n = json_array_size(rows);
  r->chunks = n ? calloc(n, sizeof *r->chunks) : NULL;
  if (n && !r->chunks)
    return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot allocate %zu chunks", n);
  r->nchunks = n;
  for (size_t i = 0; i < n; i++) {
    json_t *row = json_array_get(rows, i);
    char what[64];
    snprintf(what, sizeof what, "chunks[%zu]", i);
    if (!json_is_array(row) || json_array_size(row) != 6)
      return bad(c, R, what, "not an array of six values");
    pg_eval_chunk *ch = &r->chunks[i];
    json_t *x[6];
    for (int k = 0; k < 6; k++) x[k] = json_array_get(row, k);
    int ok = json_is_integer(x[0]) && json_is_integer(x[1]) && json_is_integer(x[4]) &&
             json_is_integer(x[5]) && !num_value(x[2], &ch->nats) && !num_value(x[3], &ch->bytes) &&
             json_integer_value(x[0]) >= 0 && json_integer_value(x[1]) >= 0 &&
             json_integer_value(x[4]) >= 0 && json_integer_value(x[5]) >= 0 &&
             json_integer_value(x[5]) <= UINT32_MAX;
    if (!ok) return bad(c, R, what, "a value of the wrong type or out of range");
    ch->first = (uint64_t)json_integer_value(x[0]);
    ch->count = (uint64_t)json_integer_value(x[1]);
    ch->docs = (uint64_t)json_integer_value(x[4]);
    ch->train_steps = (uint32_t)json_integer_value(x[5]);
  }
  return PG_OK;
}

static int read_all(rd *c, json_t *root, pg_receipt *r) {
  json_t *o, *v;
  if (!json_is_object(root))
    return pg_err_set(c->err, PG_E_MALFORMED, c->name, PG_NO_OFFSET, "not a JSON object");
  PG_TRY(get_obj(c, root, "", "pgverify", &o));
  uint64_t u;
  PG_TRY(get_u64(c, o, "pgverify", "receipt_format", INT_MAX, &u));
  if (u != PG_RECEIPT_FORMAT)
    return pg_err_set(c->err, PG_E_VERSION, c->name, PG_NO_OFFSET,
                      "receipt_format %llu; this build reads format %d", (unsigned long long)u,
                      PG_RECEIPT_FORMAT);
  r->format = (int)u;
  PG_TRY(get_str(c, o, "pgverify", "version", 0, &r->version));

  PG_TRY(get_obj(c, root, "", "artifact", &o));
  PG_TRY(get_str(c, o, "artifact", "path", 0, &r->artifact_path));
  static const char *const kinds[] = {"artifact", "safetensors", NULL};
  PG_TRY(get_choice(c, o, "artifact", "kind", kinds, &r->safetensors));
  PG_TRY(get_u64(c, o, "artifact", "bytes", INT64_MAX, &r->artifact_bytes));
  PG_TRY(get_hex64(c, o, "artifact", "xxh64", &r->artifact_xxh64));

  PG_TRY(get_obj(c, root, "", "arch", &o));
  if (!(r->arch_json = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(17))))
    return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot keep the arch");
  pg_arch arch; /* the arch must be one this build accepts */
  PG_TRY(pg_arch_parse(&arch, r->arch_json, strlen(r->arch_json), c->name, c->err));
  /* kept as this build reads it (canonical): a value the file spells otherwise ("1.00000000001"
   * for an fp32 1.0) would else differ from the same receipt written again */
  char *canon = NULL;
  PG_TRY(pg_arch_serialize(&arch, &canon, c->err));
  json_t *cj = json_loads(canon, 0, NULL);
  free(canon);
  free(r->arch_json);
  r->arch_json =
      cj ? json_dumps(cj, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(cj);
  if (!r->arch_json)
    return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot keep the arch");

  PG_TRY(get_obj(c, root, "", "tokenizer", &o));
  PG_TRY(get_str(c, o, "tokenizer", "source", 0, &r->tokenizer_source));
  PG_TRY(get_u64(c, o, "tokenizer", "pieces", UINT32_MAX, &u));
  r->tokenizer_pieces = (uint32_t)u;
  PG_TRY(get_hex64(c, o, "tokenizer", "xxh64", &r->tokenizer_xxh64));

  PG_TRY(get_obj(c, root, "", "val", &o));
  PG_TRY(get_str(c, o, "val", "pattern", 0, &r->val_pattern));
  PG_TRY(member(c, o, "val", "files", JSON_ARRAY, 0, &v));
  size_t nf = json_array_size(v);
  if (nf > PG_RECEIPT_MAX_FILES)
    return pg_err_set(c->err, PG_E_LIMIT, c->name, PG_NO_OFFSET,
                      "receipt lists %zu validation files, limit %u", nf, PG_RECEIPT_MAX_FILES);
  r->shards = nf ? calloc(nf, sizeof *r->shards) : NULL;
  if (nf && !r->shards)
    return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot allocate the files");
  r->nshards = nf;
  uint64_t total = 0;
  for (size_t i = 0; i < nf; i++) {
    json_t *f = json_array_get(v, i);
    char what[48];
    snprintf(what, sizeof what, "val.files[%zu]", i);
    if (!json_is_object(f)) return bad(c, "", what, "not an object");
    char *path;
    PG_TRY(get_str(c, f, what, "path", 0, &path));
    r->shards[i].path = path;
    PG_TRY(get_u64(c, f, what, "tokens", INT64_MAX, &r->shards[i].tokens));
    PG_TRY(get_hex64(c, f, what, "xxh64", &r->shards[i].xxh64));
    total += r->shards[i].tokens; /* each below 2^63, at most 10^5 of them: no wrap in 2^64 */
  }
  PG_TRY(get_u64(c, o, "val", "tokens_available", INT64_MAX, &r->tokens_available));
  PG_TRY(get_u64(c, o, "val", "tokens_read", INT64_MAX, &r->tokens_read));
  if (total != r->tokens_available)
    return bad(c, "val", "tokens_available", "not the sum of the files' tokens");
  if (r->tokens_read > r->tokens_available)
    return bad(c, "val", "tokens_read", "more than tokens_available");
  PG_TRY(get_bool(c, o, "val", "partial", &r->partial));
  if (r->partial != (r->tokens_read < r->tokens_available))
    return bad(c, "val", "partial", "disagrees with tokens_read and tokens_available");
  static const char *const bsrc[] = {"tokenizer byte tables", "sidecar", NULL};
  PG_TRY(get_choice(c, o, "val", "bytes_source", bsrc, &r->sidecar));
  if (r->sidecar) PG_TRY(get_str(c, o, "val", "bytes_pattern", 0, &r->bytes_pattern));
  else if (json_object_get(o, "bytes_pattern"))
    return bad(c, "val", "bytes_pattern", "present without a sidecar");

  PG_TRY(get_obj(c, root, "", "protocol", &o));
  PG_TRY(read_protocol(c, o, &r->protocol));

  r->matches_record = -1;
  PG_TRY(member(c, root, "", "provenance", JSON_OBJECT, 1, &o));
  if (o) {
    PG_TRY(member(c, o, "provenance", "protocol_matches_record", -1, 0, &v));
    if (json_is_boolean(v)) r->matches_record = json_is_true(v);
    else if (!json_is_null(v))
      return bad(c, "provenance", "protocol_matches_record", "not a boolean or null");
    PG_TRY(member(c, o, "provenance", "warnings", JSON_ARRAY, 0, &v));
    size_t nw = json_array_size(v);
    if (nw > PG_RECEIPT_MAX_WARNINGS)
      return pg_err_set(c->err, PG_E_LIMIT, c->name, PG_NO_OFFSET,
                        "receipt has %zu warnings, limit %u", nw, PG_RECEIPT_MAX_WARNINGS);
    r->warnings = nw ? calloc(nw, sizeof *r->warnings) : NULL;
    if (nw && !r->warnings)
      return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot allocate warnings");
    r->nwarnings = nw;
    for (size_t i = 0; i < nw; i++) {
      char what[48];
      snprintf(what, sizeof what, "warnings[%zu]", i);
      PG_TRY(str_value(c, json_array_get(v, i), "provenance", what, 0, &r->warnings[i]));
    }
  }

  PG_TRY(get_obj(c, root, "", "result", &o));
  PG_TRY(read_result(c, o, &r->result, &r->every_target_scored_once));
  if (r->result.tokens > r->tokens_read)
    return bad(c, "result", "tokens_in_stream", "more than val.tokens_read");

  PG_TRY(member(c, root, "", "result_fp32", JSON_OBJECT, 1, &o));
  if (o) {
    r->has_fp32 = 1;
    PG_TRY(get_num(c, o, "result_fp32", "val_loss", 1, &r->fp32_val_loss));
    PG_TRY(get_num(c, o, "result_fp32", "val_bpb", 1, &r->fp32_val_bpb));
    PG_TRY(get_num(c, o, "result_fp32", "loss_sum_nats", 1, &r->fp32_nats));
    PG_TRY(get_num(c, o, "result_fp32", "token_count", 1, &r->fp32_tokens));
    PG_TRY(get_num(c, o, "result_fp32", "byte_count", 1, &r->fp32_bytes));
  }

  PG_TRY(get_obj(c, root, "", "engine", &o));
  PG_TRY(get_str(c, o, "engine", "name", 0, &r->engine));
  /* devices and driver came with the engine interface; a receipt without them reads as "" */
  if (json_object_get(o, "devices")) PG_TRY(get_str(c, o, "engine", "devices", 0, &r->devices));
  if (json_object_get(o, "driver")) PG_TRY(get_str(c, o, "engine", "driver", 0, &r->driver));
  if (!r->devices) r->devices = strdup("");
  if (!r->driver) r->driver = strdup("");
  if (!r->devices || !r->driver)
    return pg_err_set(c->err, PG_E_NOMEM, c->name, PG_NO_OFFSET, "cannot allocate a string");
  PG_TRY(get_u64(c, o, "engine", "threads", INT_MAX, &u));
  if (!u) return bad(c, "engine", "threads", "zero");
  r->threads = (int)u;
  PG_TRY(member(c, o, "engine", "precision", JSON_STRING, 0, &v));
  if ((r->precision = pg_precision_parse(json_string_value(v))) < 0)
    return bad(c, "engine", "precision", "not a precision");
  if (r->has_fp32 && r->precision != PG_PREC_BF16)
    return bad(c, "", "result_fp32", "present without bf16 precision");
  return PG_OK;
}

int pg_receipt_parse(pg_receipt *r, const char *text, size_t len, const char *name, pg_err *err) {
  memset(r, 0, sizeof *r);
  rd c = {.name = name, .err = err};
  static const pg_json_caps caps = {PG_RECEIPT_MAX_VALUES, PG_JSON_DOC_DEPTH};
  PG_TRY(pg_json_shape_check(text, len, &caps, name, 0, err));
  json_error_t je;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return pg_err_set(err, PG_E_JSON, name, je.position >= 0 ? (uint64_t)je.position : PG_NO_OFFSET,
                      "receipt: %s", je.text);
  int rc = read_all(&c, root, r);
  json_decref(root);
  if (rc) pg_receipt_free(r);
  return rc;
}

int pg_receipt_read(pg_receipt *r, const char *path, pg_err *err) {
  uint8_t *buf;
  size_t len;
  memset(r, 0, sizeof *r);
  PG_TRY(pg_file_read_all(path, &buf, &len, PG_RECEIPT_MAX_FILE, err));
  int rc = pg_receipt_parse(r, (const char *)buf, len, path, err);
  free(buf);
  return rc;
}

void pg_receipt_free(pg_receipt *r) {
  if (!r) return;
  free(r->version);
  free(r->artifact_path);
  free(r->arch_json);
  free(r->tokenizer_source);
  free(r->val_pattern);
  for (size_t i = 0; i < r->nshards; i++) free((char *)r->shards[i].path);
  free(r->shards);
  free(r->bytes_pattern);
  pg_eval_result_free(&r->result);
  for (size_t i = 0; i < r->nwarnings; i++) free(r->warnings[i]);
  free(r->warnings);
  free(r->engine);
  free(r->devices);
  free(r->driver);
  memset(r, 0, sizeof *r);
}
