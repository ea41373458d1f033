/* pg_cuda.h: the C interface to pgolf's CUDA kernels. Every function returns a pg_status;
 * in a build without CUDA they return PG_E_UNSUPPORTED. */
#ifndef PG_CUDA_H
#define PG_CUDA_H

#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build has CUDA kernels compiled in. */
int pg_cuda_built(void);
/* Number of usable devices (0 without a driver or device); PG_E_UNSUPPORTED without CUDA. */
int pg_cuda_device_count(int *count, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
