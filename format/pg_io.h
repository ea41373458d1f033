/* pg_io.h: file input and output for every pgolf reader and writer.
 *
 * Inputs are opened by pg_file_open_read only: a path that is not a regular file (a FIFO, a
 * device, a directory) is refused without blocking, so a reader never hangs on a pipe nobody
 * writes. Inputs are read into private memory (never memory-mapped: a file truncated under a
 * mapping would kill the process with SIGBUS) or read piecewise with pg_file_pread; a file that
 * shrinks while it is read is a one-line PG_E_IO. Inputs are never modified.
 * Outputs are written to a temporary file in the destination's folder, flushed, and renamed over
 * the destination only when complete; a failed write removes the temporary and leaves nothing.
 * A destination that exists and is not a regular file (a device, a FIFO, a directory) is refused:
 * the rename would replace the node itself. Live temporaries are kept in a registry that an
 * interrupted program empties from its signal handler (pg_tmp_remove_all). */
#ifndef PG_IO_H
#define PG_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Open an input file read-only: PG_E_NOT_FOUND, or PG_E_IO for anything that is not a regular
 * file (checked on the open descriptor, opened non-blocking so a FIFO cannot block; the
 * descriptor is blocking again on return). *size is the size at open (may be NULL). */
int pg_file_open_read(const char *path, int *fd, uint64_t *size, pg_err *err);
/* The same as a stdio stream ("rb"). */
int pg_file_fopen_read(const char *path, FILE **fp, pg_err *err);
/* Read exactly n bytes at offset off of an open input (path names it in errors): PG_E_IO when the
 * file ends first (it shrank after it was opened) or the read fails. */
int pg_file_pread(int fd, uint64_t off, void *buf, size_t n, const char *path, pg_err *err);

/* Read a whole file into a malloc'd buffer (*out, *len); fails with PG_E_LIMIT above max bytes. */
int pg_file_read_all(const char *path, uint8_t **out, size_t *len, size_t max, pg_err *err);

/* A private, read-only copy of a whole file (read into memory, not mapped; an empty file gives
 * data == NULL, size == 0). PG_E_NOMEM when it does not fit in memory. */
typedef struct pg_map {
  const uint8_t *data;
  size_t size;
  void *base_; /* mapping to release */
} pg_map;
int pg_file_map(pg_map *m, const char *path, pg_err *err);
void pg_file_unmap(pg_map *m);

/* Size of a regular file. */
int pg_file_size(const char *path, uint64_t *size, pg_err *err);

/* Atomic output: begin → write* → commit (rename) or abort (unlink). begin refuses
 * (PG_E_EXISTS) a destination that exists and is not a regular file; a symbolic link at the
 * destination is replaced, never written through, and refused when it names a non-regular file. */
typedef struct pg_out {
  FILE *fp;
  char *tmp_path;
  char *path;
  int failed;
  int tmp_slot; /* registry slot of tmp_path, or -1 */
} pg_out;
int pg_out_begin(pg_out *o, const char *path, pg_err *err);
int pg_out_write(pg_out *o, const void *buf, size_t len, pg_err *err);
int pg_out_commit(pg_out *o, pg_err *err);
void pg_out_abort(pg_out *o);

/* One-shot atomic write of a buffer. */
int pg_file_write_atomic(const char *path, const void *buf, size_t len, pg_err *err);

/* The registry of live temporaries (files and directory trees this process is writing), so an
 * interrupted program leaves none behind. The library never handles signals itself: a program
 * calls pg_tmp_remove_all from its SIGINT/SIGTERM/SIGHUP handler (the tools do, tools/tool.c).
 * register returns a slot (or -1 when the registry is full or the path too long: the write goes on
 * without the guarantee); forget drops the entry after a rename consumed the path; discard removes
 * the file or the whole tree now and drops the entry. pg_tmp_remove_all is async-signal-safe. */
int pg_tmp_register(const char *path, int is_tree);
void pg_tmp_forget(int slot);
void pg_tmp_discard(int slot);
void pg_tmp_remove_all(void);

/* PG_OK when path may be replaced by an atomic write: it does not exist, or it is (or a symbolic
 * link names) a regular file; otherwise PG_E_EXISTS (a device, FIFO, socket or directory). */
int pg_out_check_dest(const char *path, pg_err *err);

/* Create a directory and its parents (mode 0755); an existing directory is fine. */
int pg_mkdir_p(const char *path, pg_err *err);

/* Little-endian loads and stores on unaligned bytes. */
static inline uint16_t pg_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t pg_ld32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t pg_ld64(const uint8_t *p) {
  return (uint64_t)pg_ld32(p) | ((uint64_t)pg_ld32(p + 4) << 32);
}
static inline void pg_st16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void pg_st32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void pg_st64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Overflow-checked size arithmetic: return 1 on overflow, else store the result. */
static inline int pg_mul_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) {
  return __builtin_mul_overflow(a, b, r);
}
static inline int pg_add_overflow_u64(uint64_t a, uint64_t b, uint64_t *r) {
  return __builtin_add_overflow(a, b, r);
}

/* Strict UTF-8 check (no overlongs, no surrogates, nothing above U+10FFFF). Returns 1 when
 * valid; otherwise 0 with *bad set to the offset of the first invalid sequence. */
int pg_utf8_valid(const uint8_t *s, size_t n, size_t *bad);

/* A growable byte buffer for writers. */
typedef struct pg_buf {
  uint8_t *data;
  size_t len, cap;
  int oom;
} pg_buf;
int pg_buf_reserve(pg_buf *b, size_t extra);
int pg_buf_put(pg_buf *b, const void *p, size_t n);
int pg_buf_u8(pg_buf *b, uint8_t v);
int pg_buf_u16(pg_buf *b, uint16_t v);
int pg_buf_u32(pg_buf *b, uint32_t v);
int pg_buf_u64(pg_buf *b, uint64_t v);
void pg_buf_free(pg_buf *b);

#ifdef __cplusplus
}
#endif
#endif
