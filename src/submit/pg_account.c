/* pg_account.c: byte accounting of an artifact; see pg_account.h and spec/accounting.md. */
#include "pg_account.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pg_account_artifact(pg_account *out, pg_artifact *a, uint64_t budget, int count_tokenizer,
                        pg_err *err) {
  memset(out, 0, sizeof *out);
  const uint32_t ns = pg_artifact_section_count(a), nt = pg_artifact_tensor_count(a);
  out->sections = calloc(ns ? ns : 1, sizeof *out->sections);
  out->tensors = calloc(nt ? nt : 1, sizeof *out->tensors);
  if (!out->sections || !out->tensors) {
    pg_account_free(out);
    return pg_err_set(err, PG_E_NOMEM, pg_artifact_name(a), PG_NO_OFFSET, "cannot allocate");
  }
  out->nsections = ns;
  out->ntensors = nt;
  out->file_size = pg_artifact_file_size(a);
  out->frame = pg_artifact_head_size(a);
  out->budget = budget;
  out->tokenizer_counted = count_tokenizer != 0;
  uint32_t ndata = 0, ndata_total = 0;
  for (uint32_t i = 0; i < ns; i++) ndata_total += pg_artifact_section(a, i)->kind == PG_SEC_DATA;
  /* pgpack names what each DATA section holds (spec/format.md §3, pack.data_sections) */
  const pg_meta_entry *names = pg_artifact_meta_find(a, "pack.data_sections");
  if (names && (names->type != PG_META_ARR || names->elem_type != PG_META_STR ||
                names->count != ndata_total))
    names = NULL;
  for (uint32_t i = 0; i < ns; i++) {
    const pg_section *s = pg_artifact_section(a, i);
    pg_account_section *as = &out->sections[i];
    as->index = i;
    as->kind = s->kind;
    as->codec = s->codec;
    as->raw = s->raw_size;
    as->stored = s->stored_size;
    snprintf(as->label, sizeof as->label, "%s", pg_section_kind_name(s->kind));
    if (s->kind == PG_SEC_DATA) {
      if (names) {
        const char *nm;
        uint32_t nl;
        pg_meta_arr_str(names, ndata, &nm, &nl);
        if (nl > PG_MAX_NAME) nl = PG_MAX_NAME;
        int k = snprintf(as->label, sizeof as->label, "data %u: ", ndata);
        for (uint32_t c = 0; c < nl && (size_t)k + 1 < sizeof as->label; c++)
          as->label[k++] = (unsigned char)nm[c] < 0x20 || nm[c] == 0x7f ? '?' : nm[c];
        as->label[k] = '\0';
      } else {
        snprintf(as->label, sizeof as->label, "data %u", ndata);
      }
      ndata++;
    }
    if (s->kind == PG_SEC_TOKENIZER) out->tokenizer_stored += s->stored_size;
  }
  for (uint32_t k = 0; k < pg_artifact_code_count(a); k++) {
    const char *name;
    size_t nl, bl;
    uint32_t sec;
    int rc = pg_artifact_code(a, k, &name, &nl, NULL, &bl, &sec, err);
    if (rc != PG_OK) {
      pg_account_free(out);
      return rc;
    }
    out->code_stored += out->sections[sec].stored;
    out->code_file_bytes += bl;
    snprintf(out->sections[sec].label, sizeof out->sections[sec].label, "code %.*s", (int)nl,
             name);
  }
  out->model = out->file_size - out->code_stored - out->tokenizer_stored;
  out->counted = out->model + out->code_stored + (count_tokenizer ? out->tokenizer_stored : 0);
  out->headroom = (int64_t)budget - (int64_t)out->counted;
  for (uint32_t i = 0; i < nt; i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    pg_account_tensor *at = &out->tensors[i];
    at->index = i;
    at->numel = t->numel;
    for (int r = 0; r < PG_PART_COUNT; r++) {
      const pg_part *p = &t->parts[r];
      if (!p->present) continue;
      const pg_section *s = pg_artifact_section(a, p->section);
      at->raw += p->size;
      if (s->raw_size) at->stored += (double)p->size * (double)s->stored_size / (double)s->raw_size;
    }
    at->bits_per_weight = t->numel ? 8.0 * at->stored / (double)t->numel : 0.0;
  }
  return PG_OK;
}

void pg_account_free(pg_account *acc) {
  if (!acc) return;
  free(acc->sections);
  free(acc->tensors);
  memset(acc, 0, sizeof *acc);
}
