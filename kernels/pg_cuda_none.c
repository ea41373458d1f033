/* pg_cuda_none.c: the CUDA interface in a build without CUDA: every call is unsupported. */
#include "pg_cuda.h"
#include "pg_engine.h"

int pg_cuda_built(void) { return 0; }

int pg_cuda_device_count(int *count, pg_err *err) {
  if (count) *count = 0;
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_set_device(int device, pg_err *err) {
  (void)device;
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_dequant(const pg_cuda_qtensor *t, float *out, pg_err *err) {
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_dequant_dev(const pg_cuda_qtensor *t, float *out_dev, void *stream, pg_err *err) {
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_alloc(void **dev, size_t bytes, pg_err *err) {
  if (dev) *dev = NULL;
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

void pg_cuda_free(void *dev) { (void)dev; }

int pg_cuda_upload(void *dev, const void *host, size_t bytes, pg_err *err) {
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_download(void *host, const void *dev, size_t bytes, pg_err *err) {
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}

int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err);
int pg_cuda_engine_create(pg_engine **out, const pg_engine_opts *o, pg_err *err) {
  (void)o;
  *out = NULL;
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}
