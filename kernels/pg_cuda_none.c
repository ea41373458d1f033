/* pg_cuda_none.c: the CUDA interface in a build without CUDA: every call is unsupported. */
#include "pg_cuda.h"

int pg_cuda_built(void) { return 0; }

int pg_cuda_device_count(int *count, pg_err *err) {
  *count = 0;
  return pg_err_set(err, PG_E_UNSUPPORTED, NULL, PG_NO_OFFSET, "built without CUDA");
}
