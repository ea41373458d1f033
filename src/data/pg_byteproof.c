/* pg_byteproof.c: the byte proof (pg_byteproof.h). The per-id text lengths come from the pieces
 * themselves, never from the byte tables under test, so the two counts are independent. */
#include "pg_byteproof.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint32_t pg_byteproof_piece_bytes(const pg_spm_piece *p, int *starts_with_space) {
  *starts_with_space = 0;
  if (p->type == PG_SPM_BYTE) return 1;
  if (p->type == PG_SPM_CONTROL || p->type == PG_SPM_UNKNOWN || p->type == PG_SPM_UNUSED) return 0;
  uint32_t n = p->len;
  for (uint32_t i = 0; i + 2 < p->len; i++) {
    if ((uint8_t)p->piece[i] == 0xe2 && (uint8_t)p->piece[i + 1] == 0x96 &&
        (uint8_t)p->piece[i + 2] == 0x81) {
      n -= 2;
      if (i == 0) *starts_with_space = 1;
      i += 2;
    }
  }
  return n;
}

/* Every document of tok[0..n) through the decoder: its table total against its text length. */
static int prove_documents(const pg_spm_tables *tab, int32_t bos, const uint16_t *tok, uint64_t n,
                           const char *name, pg_byteproof_decode decode, void *ctx,
                           pg_byteproof *out, pg_err *err) {
  pg_doc *docs = NULL;
  uint64_t ndocs = 0;
  /* a stream the document lister refuses is left without a document check, as before */
  if (pg_docs_list(tok, n, name, &docs, &ndocs, NULL, err) != PG_OK) return PG_OK;
  int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
  if (!ids) {
    free(docs);
    return pg_err_set(err, PG_E_NOMEM, name, PG_NO_OFFSET, "cannot allocate %llu ids",
                      (unsigned long long)n);
  }
  for (uint64_t d = 0; d < ndocs; d++) {
    const uint64_t s0 = docs[d].start, len = docs[d].len;
    /* the document's own tokens: drop its BOS, and the next document's BOS at the end */
    uint64_t end = s0 + len;
    if (end > s0 + 1 && end - 1 < n && (int32_t)tok[end - 1] == bos && d + 1 < ndocs) end--;
    size_t k = 0;
    for (uint64_t q = s0 + 1; q < end; q++) ids[k++] = tok[q];
    size_t tl;
    if (decode(ctx, ids, k, &tl)) { /* undecodable: a disagreement like a length that differs */
      if (!out->document_disagreements) out->first_bad_document = d;
      out->document_disagreements++;
      continue;
    }
    uint64_t tb = 0;
    for (uint64_t q = s0 + 1; q < s0 + len; q++)
      tb += pg_spm_pair_bytes_unchecked(tab, tok[q - 1], tok[q]);
    if (tb == tl) {
      out->documents_ok++;
    } else {
      if (!out->document_disagreements) out->first_bad_document = d;
      out->document_disagreements++;
    }
  }
  free(ids);
  free(docs);
  return PG_OK;
}

int pg_byteproof_run(const pg_spm *m, const pg_spm_tables *tab, const pg_shard_set *set,
                     const char *name, pg_byteproof_decode decode, pg_byteproof_progress progress,
                     void *ctx, pg_byteproof *out, pg_err *err) {
  memset(out, 0, sizeof *out);
  const double t0 = now();
  const uint32_t vocab = pg_spm_vocab_size(m);
  const int32_t bos = pg_spm_info_of(m)->bos_id;
  const uint64_t n = pg_shard_set_count(set);
  /* per-id decoded bytes, computed once from the pieces (not from the tables) */
  uint32_t *dec = malloc((vocab ? vocab : 1) * sizeof *dec);
  uint8_t *sp = malloc(vocab ? vocab : 1);
  uint16_t *tok = NULL;
  int rc = PG_OK;
  if (!dec || !sp) {
    rc = pg_err_set(err, PG_E_NOMEM, pg_spm_name(m), PG_NO_OFFSET,
                    "cannot allocate the per-id byte table");
    goto done;
  }
  for (uint32_t k = 0; k < vocab; k++) {
    int s;
    dec[k] = pg_byteproof_piece_bytes(pg_spm_piece_at(m, k), &s);
    sp[k] = (uint8_t)s;
  }
  tok = malloc((n ? n : 1) * sizeof *tok);
  if (!tok) {
    rc = pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
    goto done;
  }
  if ((rc = pg_shard_set_copy(set, 0, n, tok, err)) != PG_OK) goto done;
  out->targets = n ? n - 1 : 0;
  for (uint64_t t = 1; t < n; t++) {
    const uint32_t x = tok[t - 1], y = tok[t];
    const uint32_t tb = pg_spm_pair_bytes_unchecked(tab, x, y);
    uint32_t db = dec[y];
    if (sp[y] && (int32_t)x == bos) db -= 1; /* a document's text starts without its space */
    if (pg_spm_piece_at(m, y)->type == PG_SPM_UNKNOWN) out->unknown_targets++;
    out->table_bytes += tb;
    out->decoded_bytes += db;
    if (tb != db) {
      if (out->nfirst < PG_BYTEPROOF_SHOWN)
        out->first[out->nfirst++] = (pg_byteproof_disagreement){t, x, y, tb, db};
      out->token_disagreements++;
    }
    if (progress && (t & ((1u << 20) - 1)) == 0 && progress(ctx, t, n - 1)) {
      rc = pg_err_set(err, PG_E_ARG, name, PG_NO_OFFSET, "stopped by the progress callback");
      goto done;
    }
  }
  if (progress && progress(ctx, out->targets, out->targets)) {
    rc = pg_err_set(err, PG_E_ARG, name, PG_NO_OFFSET, "stopped by the progress callback");
    goto done;
  }
  /* document level, through the real decoder */
  out->documents_checked = decode != NULL;
  if (decode &&
      (rc = prove_documents(tab, bos, tok, n, name, decode, ctx, out, err)) != PG_OK)
    goto done;
  out->proven = out->token_disagreements == 0 && out->document_disagreements == 0;
  out->seconds = now() - t0;
done:
  free(tok);
  free(dec);
  free(sp);
  return rc;
}
