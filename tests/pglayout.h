/* pglayout.h: checks shared by the tests of the writers of quant layout 2 (pgimport, pgdemo):
 * the layout a file was written in, and that two files hold the same tensors whatever their
 * layouts (the same names, shapes, kinds, integers, scales, LQER factors and dequantized values).
 * Test-only. */
#ifndef PGLAYOUT_H
#define PGLAYOUT_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "pg_container.h"

/* How the tensors of a file are stored. */
typedef struct pglayout_counts {
  uint16_t container, quant_layout;
  uint32_t ints, transposed, permuted; /* int tensors; of them stored column-major; row-permuted */
} pglayout_counts;

static pglayout_counts pglayout_of(const char *path) {
  pg_artifact *a;
  pg_err e = {0};
  cr_assert_eq(pg_artifact_open(&a, path, NULL, &e), PG_OK, "%s", e.msg);
  pglayout_counts c = {pg_artifact_container_version(a), pg_artifact_quant_layout_version(a), 0,
                       0, 0};
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *t = pg_artifact_tensor(a, i);
    if (t->scale_kind == 0) continue; /* a float tensor */
    c.ints++;
    c.transposed += t->order == PG_ORDER_COLS;
    c.permuted += t->perm == PG_PERM_STORED;
  }
  pg_artifact_free(a);
  return c;
}

/* a and b hold the same tensors, in the same order, bit for bit as a reader returns them. */
static void pglayout_same_tensors(const char *pa, const char *pb) {
  pg_artifact *a, *b;
  pg_err e = {0};
  cr_assert_eq(pg_artifact_open(&a, pa, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_open(&b, pb, NULL, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(a, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_check(b, &e), PG_OK, "%s", e.msg);
  cr_assert_eq(pg_artifact_tensor_count(a), pg_artifact_tensor_count(b));
  for (uint32_t i = 0; i < pg_artifact_tensor_count(a); i++) {
    const pg_tensor_info *x = pg_artifact_tensor(a, i), *y = pg_artifact_tensor(b, i);
    cr_assert_str_eq(x->name, y->name);
    cr_assert(x->qtype == y->qtype && x->scale_kind == y->scale_kind && x->ndim == y->ndim &&
                  x->lqer_rank == y->lqer_rank && x->numel == y->numel &&
                  !memcmp(x->dims, y->dims, sizeof x->dims),
              "%s: not the same kind of tensor", x->name);
    float *fx = malloc((size_t)x->numel * sizeof *fx), *fy = malloc((size_t)x->numel * sizeof *fy);
    cr_assert(fx && fy);
    cr_assert_eq(pg_artifact_tensor_dequant(a, i, fx, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor_dequant(b, i, fy, &e), PG_OK, "%s", e.msg);
    cr_assert(!memcmp(fx, fy, (size_t)x->numel * sizeof *fx), "%s: other values", x->name);
    free(fx);
    free(fy);
    if (x->scale_kind == 0) continue;
    int8_t *qx = malloc((size_t)x->numel), *qy = malloc((size_t)x->numel);
    cr_assert(qx && qy);
    cr_assert_eq(pg_artifact_tensor_values(a, i, qx, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor_values(b, i, qy, &e), PG_OK, "%s", e.msg);
    cr_assert(!memcmp(qx, qy, (size_t)x->numel), "%s: other integers", x->name);
    free(qx);
    free(qy);
    if (x->scale_kind != PG_SCALE_ROW_F16) continue;
    const uint8_t *sx, *sy;
    cr_assert_eq(pg_artifact_tensor_scales(a, i, &sx, &e), PG_OK, "%s", e.msg);
    cr_assert_eq(pg_artifact_tensor_scales(b, i, &sy, &e), PG_OK, "%s", e.msg);
    cr_assert(!memcmp(sx, sy, (size_t)x->rows * 2), "%s: other scales", x->name);
  }
  pg_artifact_free(a);
  pg_artifact_free(b);
}

#endif
