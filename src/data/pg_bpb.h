/* pg_bpb.h: the validation bits-per-byte accumulator: fp64 sums of nats, target tokens and bytes,
 * fed per token, per batch, from token pairs through the challenge's byte tables, or from a
 * sidecar of per-target byte counts; and the challenge's result formulas (spec/tokenizer.md). */
#ifndef PG_BPB_H
#define PG_BPB_H

#include <stddef.h>
#include <stdint.h>

#include "pg_spm.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The sums, in fp64 as the challenge keeps them (val_loss_sum, val_token_count, val_byte_count).
 * Sums are added in call order; fp64 addition is not associative, so the order is part of the
 * result when nats are not exact. */
typedef struct pg_bpb {
  double nats;   /* sum of per-token negative log-likelihoods, natural log */
  double tokens; /* number of targets */
  double bytes;  /* sum of per-target byte counts */
} pg_bpb;

/* ln 2 as a double (equal to C's log(2.0) and Python's math.log(2.0)). */
#define PG_BPB_LN2 0.69314718055994530942

void pg_bpb_init(pg_bpb *a);

/* One target: its NLL (finite, nats) and its byte count. PG_E_ARG for a non-finite nll. */
int pg_bpb_add(pg_bpb *a, double nll, uint64_t bytes, pg_err *err);
/* One batch the way the challenge adds it: nats += mean_loss * tokens (in fp64), tokens += tokens,
 * bytes += bytes. PG_E_ARG for non-finite values or negative counts. */
int pg_bpb_add_batch(pg_bpb *a, double mean_loss, double tokens, double bytes, pg_err *err);
/* n targets y[i] after x[i] with NLLs nll[i]; bytes from the tables (pg_spm.h).
 * PG_E_TOKEN_RANGE naming the index; PG_E_ARG for a non-finite nll. On error *a is unchanged. */
int pg_bpb_add_pairs_u16(pg_bpb *a, const pg_spm_tables *t, const uint16_t *x, const uint16_t *y,
                         const double *nll, size_t n, pg_err *err);
int pg_bpb_add_pairs_u32(pg_bpb *a, const pg_spm_tables *t, const uint32_t *x, const uint32_t *y,
                         const double *nll, size_t n, pg_err *err);
/* n targets with NLLs nll[i] and byte counts bytes[i] from a sidecar. On error *a is unchanged. */
int pg_bpb_add_sidecar_u16(pg_bpb *a, const double *nll, const uint16_t *bytes, size_t n,
                           pg_err *err);
int pg_bpb_add_sidecar_u32(pg_bpb *a, const double *nll, const uint32_t *bytes, size_t n,
                           pg_err *err);
/* dst += src, field by field. */
void pg_bpb_merge(pg_bpb *dst, const pg_bpb *src);

/* The challenge's results (normative form):
 *   val_loss = nats / tokens
 *   val_bpb  = (val_loss / log(2.0)) * (tokens / bytes)
 * Either pointer may be NULL. PG_E_ARG when tokens or bytes is zero (or the sums are not
 * finite). */
int pg_bpb_result(const pg_bpb *a, double *val_loss, double *val_bpb, pg_err *err);
/* The algebraically equal nats / (ln 2 * bytes): informative only, it may differ from val_bpb in
 * the last bits. NaN when bytes is zero. */
double pg_bpb_direct(const pg_bpb *a);

#ifdef __cplusplus
}
#endif
#endif
