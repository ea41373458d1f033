/* pggpu.h: the GPU suite's start: a program's main (gpu_main) runs gpu_precheck() first; without
 * a CUDA build or a device it exits 77, which meson reports as SKIP (PG_REQUIRE_GPU=1 makes that a
 * failure, for a GPU machine). The probe runs in a forked child, so the Criterion parent never
 * initializes CUDA. */
#ifndef PGGPU_H
#define PGGPU_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_cuda.h"

/* 0: a device is there; 77: skip; 1: CUDA is broken. The probe runs in a child process. */
static inline int gpu_precheck(void) {
  const char *req = getenv("PG_REQUIRE_GPU");
  const int skip = (req && !strcmp(req, "1")) ? 1 : 77;
  if (!pg_cuda_built()) {
    fprintf(stderr, "gpu suite: this build has no CUDA kernels (-Dcuda=disabled or no nvcc)%s\n",
            skip == 77 ? ": skipped" : "");
    return skip;
  }
  fflush(NULL);
  const pid_t pid = fork();
  if (pid < 0) {
    perror("gpu suite: fork");
    return 1;
  }
  if (pid == 0) {
    int count = 0;
    pg_err e = {0};
    if (pg_cuda_device_count(&count, &e) != PG_OK) {
      fprintf(stderr, "gpu suite: %s\n", e.msg);
      _exit(2);
    }
    _exit(count > 0 ? 0 : 1);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) == 2) {
    fprintf(stderr, "gpu suite: the CUDA device probe failed\n");
    return 1;
  }
  if (WEXITSTATUS(st) == 1) {
    fprintf(stderr, "gpu suite: no CUDA device%s\n", skip == 77 ? ": skipped" : "");
    return skip;
  }
  return 0;
}

/* A GPU test program's main: gpu_precheck() when precheck is set (a program on a stand-in engine
 * needs no device), then Criterion's tests. */
static inline int gpu_main(int argc, char *argv[], int precheck) {
  if (precheck) {
    const int pre = gpu_precheck();
    if (pre != 0) return pre;
  }
  struct criterion_test_set *tests = criterion_initialize();
  int result = 0;
  if (criterion_handle_args(argc, argv, true)) result = !criterion_run_all_tests(tests);
  criterion_finalize(tests);
  return result;
}

#endif
