/* pg_bpb.c: the bits-per-byte accumulator and the challenge's val_loss / val_bpb formulas
 * (see pg_bpb.h, spec/tokenizer.md). */
#include "pg_bpb.h"

#include <math.h>

void pg_bpb_init(pg_bpb *a) {
  if (!a) return;
  a->nats = 0.0;
  a->tokens = 0.0;
  a->bytes = 0.0;
}

int pg_bpb_add(pg_bpb *a, double nll, uint64_t bytes, pg_err *err) {
  PG_FAIL_IF(!a, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no accumulator");
  PG_FAIL_IF(!isfinite(nll), err, PG_E_ARG, NULL, PG_NO_OFFSET, "non-finite NLL %g", nll);
  a->nats += nll;
  a->tokens += 1.0;
  a->bytes += (double)bytes;
  return PG_OK;
}

int pg_bpb_add_batch(pg_bpb *a, double mean_loss, double tokens, double bytes, pg_err *err) {
  PG_FAIL_IF(!a, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no accumulator");
  PG_FAIL_IF(!isfinite(mean_loss) || !isfinite(tokens) || !isfinite(bytes) || tokens < 0 ||
                 bytes < 0,
             err, PG_E_ARG, NULL, PG_NO_OFFSET, "bad batch: loss %g, tokens %g, bytes %g",
             mean_loss, tokens, bytes);
  a->nats += mean_loss * tokens;
  a->tokens += tokens;
  a->bytes += bytes;
  return PG_OK;
}

static int check_nll(const double *nll, size_t n, pg_err *err) {
  for (size_t i = 0; i < n; i++)
    PG_FAIL_IF(!isfinite(nll[i]), err, PG_E_ARG, NULL, PG_NO_OFFSET,
               "non-finite NLL %g at index %zu", nll[i], i);
  return PG_OK;
}

/* Validate everything first, then add, so that a failure leaves *a unchanged. */
#define ADD_PAIRS_BODY()                                                                          \
  PG_FAIL_IF(!a || !t || !t->base || (n && (!x || !y || !nll)), err, PG_E_ARG, NULL,              \
             PG_NO_OFFSET, "no accumulator, tables or tokens");                                   \
  PG_TRY(check_nll(nll, n, err));                                                                 \
  for (size_t i = 0; i < n; i++)                                                                  \
    PG_FAIL_IF(x[i] >= t->size || y[i] >= t->size, err, PG_E_TOKEN_RANGE, NULL, PG_NO_OFFSET,     \
               "token %u at index %zu outside the byte table of %u entries",                      \
               (unsigned)(x[i] >= t->size ? x[i] : y[i]), i, t->size);                            \
  for (size_t i = 0; i < n; i++) {                                                                \
    a->nats += nll[i];                                                                            \
    a->tokens += 1.0;                                                                             \
    a->bytes += (double)pg_spm_pair_bytes_unchecked(t, x[i], y[i]);                               \
  }                                                                                               \
  return PG_OK

int pg_bpb_add_pairs_u16(pg_bpb *a, const pg_spm_tables *t, const uint16_t *x, const uint16_t *y,
                         const double *nll, size_t n, pg_err *err) {
  ADD_PAIRS_BODY();
}

int pg_bpb_add_pairs_u32(pg_bpb *a, const pg_spm_tables *t, const uint32_t *x, const uint32_t *y,
                         const double *nll, size_t n, pg_err *err) {
  ADD_PAIRS_BODY();
}

#define ADD_SIDECAR_BODY()                                                                        \
  PG_FAIL_IF(!a || (n && (!nll || !bytes)), err, PG_E_ARG, NULL, PG_NO_OFFSET,                    \
             "no accumulator, NLLs or byte counts");                                              \
  PG_TRY(check_nll(nll, n, err));                                                                 \
  for (size_t i = 0; i < n; i++) {                                                                \
    a->nats += nll[i];                                                                            \
    a->tokens += 1.0;                                                                             \
    a->bytes += (double)bytes[i];                                                                 \
  }                                                                                               \
  return PG_OK

int pg_bpb_add_sidecar_u16(pg_bpb *a, const double *nll, const uint16_t *bytes, size_t n,
                           pg_err *err) {
  ADD_SIDECAR_BODY();
}

int pg_bpb_add_sidecar_u32(pg_bpb *a, const double *nll, const uint32_t *bytes, size_t n,
                           pg_err *err) {
  ADD_SIDECAR_BODY();
}

void pg_bpb_merge(pg_bpb *dst, const pg_bpb *src) {
  if (!dst || !src) return;
  dst->nats += src->nats;
  dst->tokens += src->tokens;
  dst->bytes += src->bytes;
}

int pg_bpb_result(const pg_bpb *a, double *val_loss, double *val_bpb, pg_err *err) {
  PG_FAIL_IF(!a, err, PG_E_ARG, NULL, PG_NO_OFFSET, "no accumulator");
  PG_FAIL_IF(!(a->tokens > 0), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "no tokens counted: val_loss is undefined");
  PG_FAIL_IF(!(a->bytes > 0), err, PG_E_ARG, NULL, PG_NO_OFFSET,
             "no bytes counted: val_bpb is undefined");
  PG_FAIL_IF(!isfinite(a->nats) || !isfinite(a->tokens) || !isfinite(a->bytes), err, PG_E_ARG,
             NULL, PG_NO_OFFSET, "the sums are not finite");
  /* As the challenge writes it: val_loss = loss_sum / token_count;
   * bits_per_token = val_loss / math.log(2.0); tokens_per_byte = token_count / byte_count. */
  const double loss = a->nats / a->tokens;
  const double bits_per_token = loss / PG_BPB_LN2;
  const double tokens_per_byte = a->tokens / a->bytes;
  if (val_loss) *val_loss = loss;
  if (val_bpb) *val_bpb = bits_per_token * tokens_per_byte;
  return PG_OK;
}

double pg_bpb_direct(const pg_bpb *a) {
  if (!a || !(a->bytes > 0)) return NAN;
  return a->nats / (PG_BPB_LN2 * a->bytes);
}
