/* fuzz_preset.c: libFuzzer target for the presets reader (spec/presets/README.md): parse arbitrary
 * bytes as a preset; a refusal must carry a documented status and a one-line message and leave
 * the output zeroed; an accepted preset must be consistent (supported ⇒ arch and protocol, else a
 * reason; the arch's follows is the preset's record, date, pr, score and protocol), and its arch
 * must validate, serialize and re-parse equal, and expand into a tensor list whose element total
 * is the parameter count. Every broken invariant aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg_preset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_line(const pg_err *err, int status) {
  if (err->status != status || !err->msg[0] || strchr(err->msg, '\n') ||
      !memchr(err->msg, '\0', sizeof err->msg))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static pg_preset p;
  static pg_arch b;
  pg_err err;
  const int rc = pg_preset_parse(&p, (const char *)data, size, "preset.json", NULL, &err);
  if (rc != PG_OK) {
    if (rc != PG_E_JSON && rc != PG_E_UTF8 && rc != PG_E_DUPLICATE && rc != PG_E_META_TYPE &&
        rc != PG_E_ARG && rc != PG_E_NOMEM && rc != PG_E_LIMIT)
      abort();
    check_line(&err, rc);
    const unsigned char *q = (const unsigned char *)&p;
    for (size_t i = 0; i < sizeof p; i++)
      if (q[i]) abort();
    return 0;
  }
  if (!pg_preset_name_ok(p.name) || !p.record[0] || !(p.val_bpb > 0 && p.val_bpb <= 100)) abort();
  if (p.supported ? !p.has_arch || !p.protocol[0] || p.reason[0] : !p.reason[0]) abort();
  if ((pg_preset_require_supported(&p, &err) == PG_OK) != p.supported) abort();
  if (!p.supported) check_line(&err, PG_E_ARG);
  if (p.n_inferred < 0 || p.n_inferred > PG_PRESET_LIST_MAX || p.n_quirks < 0 ||
      p.n_quirks > PG_PRESET_LIST_MAX)
    abort();
  if (!p.has_arch) return 0;
  const pg_arch_follows *f = &p.arch.follows;
  if (!f->set || strcmp(f->record, p.record) || strcmp(f->date, p.date) || f->pr != p.pr ||
      f->val_bpb != p.val_bpb || strcmp(f->protocol, p.protocol))
    abort();
  if (pg_arch_validate(&p.arch, "preset.json", &err) != PG_OK) abort();
  char *s1 = NULL;
  if (pg_arch_serialize(&p.arch, &s1, &err) != PG_OK) abort();
  if (pg_arch_parse(&b, s1, strlen(s1), "canonical", &err) != PG_OK) abort();
  free(s1);
  if (!pg_arch_equal(&p.arch, &b)) abort();
  pg_arch_tensor *t = NULL;
  size_t n = 0;
  uint64_t total = 0, count = 0;
  if (pg_arch_tensors(&p.arch, &t, &n, &err) != PG_OK || n == 0) abort();
  for (size_t i = 0; i < n; i++) total += pg_arch_tensor_numel(&t[i]);
  free(t);
  if (pg_arch_param_count(&p.arch, &count, &err) != PG_OK || count != total) abort();
  if (p.supported && p.params && p.params != count) abort();
  return 0;
}
