/* pg_io.c: the one way inputs are opened (regular files only, never blocking), whole-file and
 * positioned reads, atomic writes, the registry of live temporaries, and the byte buffer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* syscall(SYS_getdents64) for the signal-safe tree removal */
#endif
#include "pg_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

/* ---- the registry of live temporaries ----
 * Fixed slots with their own path storage: the signal handler reads them without locks or
 * allocation. A slot is claimed with a compare-and-swap (FREE -> BUSY), filled, then published
 * (FILE or TREE); the handler only acts on published slots. */
enum { TMP_FREE = 0, TMP_BUSY, TMP_FILE, TMP_TREE };
#define PG_TMP_SLOTS 256
#define PG_TMP_PATH 4096
static struct {
  int state;
  char path[PG_TMP_PATH];
} tmp_slots[PG_TMP_SLOTS];

int pg_tmp_register(const char *path, int is_tree) {
  size_t n = strlen(path);
  if (n >= PG_TMP_PATH) return -1;
  for (int i = 0; i < PG_TMP_SLOTS; i++) {
    int expect = TMP_FREE;
    if (!__atomic_compare_exchange_n(&tmp_slots[i].state, &expect, TMP_BUSY, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
      continue;
    memcpy(tmp_slots[i].path, path, n + 1);
    __atomic_store_n(&tmp_slots[i].state, is_tree ? TMP_TREE : TMP_FILE, __ATOMIC_RELEASE);
    return i;
  }
  return -1;
}

void pg_tmp_forget(int slot) {
  if (slot >= 0 && slot < PG_TMP_SLOTS)
    __atomic_store_n(&tmp_slots[slot].state, TMP_FREE, __ATOMIC_RELEASE);
}

/* Remove everything inside the open directory fd without following links; only system calls and
 * stack memory (async-signal-safe). Each pass restarts from the first entry, since removing
 * entries disturbs the directory stream; a pass that removes nothing ends. The depth is bounded
 * (the trees written here come from names of at most 255 bytes). */
static void rm_inside(int fd, int depth) {
#ifdef __linux__
  char buf[1024] __attribute__((aligned(8)));
  for (;;) {
    if (lseek(fd, 0, SEEK_SET) != 0) return;
    long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (got <= 0) return;
    int progress = 0;
    for (long off = 0; off < got;) {
      /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[] */
      unsigned short reclen;
      memcpy(&reclen, buf + off + 16, sizeof reclen);
      const unsigned char type = (unsigned char)buf[off + 18];
      const char *name = buf + off + 19;
      off += reclen;
      if (name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]))) continue;
      if (type == DT_DIR || (type == DT_UNKNOWN && unlinkat(fd, name, 0) != 0)) {
        int sub = depth < 128 ? openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                              : -1;
        if (sub >= 0) {
          rm_inside(sub, depth + 1);
          close(sub);
        }
        progress |= unlinkat(fd, name, AT_REMOVEDIR) == 0;
        continue;
      }
      progress |= type == DT_UNKNOWN || unlinkat(fd, name, 0) == 0;
    }
    if (!progress) return;
  }
#else
  (void)fd;
  (void)depth;
#endif
}

static void rm_entry(const char *path, int is_tree) {
  if (is_tree) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      rm_inside(fd, 0);
      close(fd);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

void pg_tmp_discard(int slot) {
  if (slot < 0 || slot >= PG_TMP_SLOTS) return;
  int st = __atomic_load_n(&tmp_slots[slot].state, __ATOMIC_ACQUIRE);
  if (st == TMP_FILE || st == TMP_TREE) rm_entry(tmp_slots[slot].path, st == TMP_TREE);
  pg_tmp_forget(slot);
}

void pg_tmp_remove_all(void) {
  for (int i = 0; i < PG_TMP_SLOTS; i++) {
    int st = __atomic_load_n(&tmp_slots[i].state, __ATOMIC_ACQUIRE);
    if (st == TMP_FILE || st == TMP_TREE) rm_entry(tmp_slots[i].path, st == TMP_TREE);
  }
}

static const char *file_kind(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

int pg_file_size(const char *path, uint64_t *size, pg_err *err) {
  struct stat st;
  if (stat(path, &st) != 0)
    return pg_err_set(err, errno == ENOENT ? PG_E_NOT_FOUND : PG_E_IO, path, PG_NO_OFFSET,
                      "cannot stat: %s", strerror(errno));
  if (!S_ISREG(st.st_mode))
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "is %s, not a regular file",
                      file_kind(st.st_mode));
  *size = (uint64_t)st.st_size;
  return PG_OK;
}

static int open_fault(const char *path, int e, pg_err *err) {
  return pg_err_set(err, e == ENOENT ? PG_E_NOT_FOUND : PG_E_IO, path, PG_NO_OFFSET,
                    "cannot open: %s", strerror(e));
}

int pg_file_open_read(const char *path, int *fd, uint64_t *size, pg_err *err) {
  *fd = -1;
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever */
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (f < 0) return open_fault(path, errno, err);
  struct stat st;
  if (fstat(f, &st) != 0) {
    int e = errno;
    close(f);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot stat: %s", strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(f);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "is %s, not a regular file",
                      file_kind(st.st_mode));
  }
  int fl = fcntl(f, F_GETFL);
  if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK) != 0) {
    int e = errno;
    close(f);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot open: %s", strerror(e));
  }
  *fd = f;
  if (size) *size = (uint64_t)st.st_size;
  return PG_OK;
}

int pg_file_fopen_read(const char *path, FILE **fp, pg_err *err) {
  *fp = NULL;
  int fd;
  PG_TRY(pg_file_open_read(path, &fd, NULL, err));
  *fp = fdopen(fd, "rb");
  if (!*fp) {
    int e = errno;
    close(fd);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot open: %s", strerror(e));
  }
  return PG_OK;
}

int pg_file_pread(int fd, uint64_t off, void *buf, size_t n, const char *path, pg_err *err) {
  size_t got = 0;
  while (got < n) {
    size_t want = n - got < ((size_t)1 << 30) ? n - got : ((size_t)1 << 30);
    ssize_t k = pread(fd, (uint8_t *)buf + got, want, (off_t)(off + got));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0)
      return pg_err_set(err, PG_E_IO, path, off + got, "read failed: %s", strerror(errno));
    if (k == 0)
      return pg_err_set(err, PG_E_IO, path, off + got,
                        "file shrank while in use: it ends at byte %llu, %llu bytes were expected "
                        "from byte %llu", (unsigned long long)(off + got),
                        (unsigned long long)n, (unsigned long long)off);
    got += (size_t)k;
  }
  return PG_OK;
}

/* Read the whole of an open input of `size` bytes into a malloc'd buffer. */
static int read_fd_all(int fd, uint64_t size, const char *path, uint8_t **out, pg_err *err) {
  if (size > (uint64_t)SIZE_MAX)
    return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "file of %llu bytes cannot be held",
                      (unsigned long long)size);
  size_t n = (size_t)size;
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf)
    return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate %zu bytes", n);
  int rc = pg_file_pread(fd, 0, buf, n, path, err);
  if (rc != PG_OK) {
    free(buf);
    return rc;
  }
  *out = buf;
  return PG_OK;
}

int pg_file_read_all(const char *path, uint8_t **out, size_t *len, size_t max, pg_err *err) {
  *out = NULL;
  *len = 0;
  int fd;
  uint64_t size;
  PG_TRY(pg_file_open_read(path, &fd, &size, err));
  if (size > (uint64_t)max) {
    close(fd);
    return pg_err_set(err, PG_E_LIMIT, path, PG_NO_OFFSET, "file is %llu bytes, limit %zu",
                      (unsigned long long)size, max);
  }
  int rc = read_fd_all(fd, size, path, out, err);
  close(fd);
  if (rc == PG_OK) *len = (size_t)size;
  return rc;
}

int pg_file_map(pg_map *m, const char *path, pg_err *err) {
  memset(m, 0, sizeof *m);
  int fd;
  uint64_t size;
  PG_TRY(pg_file_open_read(path, &fd, &size, err));
  if (size == 0) {
    close(fd);
    return PG_OK;
  }
  uint8_t *buf = NULL;
  int rc = read_fd_all(fd, size, path, &buf, err);
  close(fd);
  if (rc != PG_OK) return rc;
  m->base_ = buf;
  m->data = buf;
  m->size = (size_t)size;
  return PG_OK;
}

void pg_file_unmap(pg_map *m) {
  if (m) free(m->base_);
  if (m) memset(m, 0, sizeof *m);
}

int pg_out_check_dest(const char *path, pg_err *err) {
  struct stat st;
  if (stat(path, &st) != 0) {
    if (errno == ENOENT) return PG_OK; /* nothing there (or a dangling link, replaced) */
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot stat: %s", strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    return pg_err_set(err, PG_E_EXISTS, path, PG_NO_OFFSET,
                      "exists and is not a regular file; refusing to replace it");
  return PG_OK;
}

int pg_out_begin(pg_out *o, const char *path, pg_err *err) {
  memset(o, 0, sizeof *o);
  o->tmp_slot = -1;
  PG_TRY(pg_out_check_dest(path, err));
  size_t n = strlen(path);
  o->path = malloc(n + 1);
  o->tmp_path = malloc(n + 16);
  if (!o->path || !o->tmp_path) {
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate a path");
  }
  memcpy(o->path, path, n + 1);
  memcpy(o->tmp_path, path, n);
  memcpy(o->tmp_path + n, ".tmp.XXXXXX", 12);
  int fd = mkstemp(o->tmp_path);
  if (fd < 0) {
    int e = errno;
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot create a temporary file: %s",
                      strerror(e));
  }
  o->tmp_slot = pg_tmp_register(o->tmp_path, 0);
  (void)fchmod(fd, 0644);
  o->fp = fdopen(fd, "wb");
  if (!o->fp) {
    close(fd);
    unlink(o->tmp_path);
    pg_tmp_forget(o->tmp_slot);
    free(o->path);
    free(o->tmp_path);
    memset(o, 0, sizeof *o);
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot open a temporary file");
  }
  return PG_OK;
}

int pg_out_write(pg_out *o, const void *buf, size_t len, pg_err *err) {
  if (!o->fp || o->failed)
    return pg_err_set(err, PG_E_IO, o->path, PG_NO_OFFSET, "write after a failed write");
  if (len && fwrite(buf, 1, len, o->fp) != len) {
    o->failed = 1;
    return pg_err_set(err, PG_E_IO, o->path, PG_NO_OFFSET, "write failed: %s", strerror(errno));
  }
  return PG_OK;
}

void pg_out_abort(pg_out *o) {
  if (!o) return;
  if (o->fp) fclose(o->fp);
  if (o->tmp_path) unlink(o->tmp_path);
  pg_tmp_forget(o->tmp_slot);
  free(o->tmp_path);
  free(o->path);
  memset(o, 0, sizeof *o);
}

int pg_out_commit(pg_out *o, pg_err *err) {
  if (!o->fp || o->failed) {
    int rc = pg_err_set(err, PG_E_IO, o->path, PG_NO_OFFSET, "write failed");
    pg_out_abort(o);
    return rc;
  }
  int bad = fflush(o->fp) != 0 || fsync(fileno(o->fp)) != 0;
  bad |= fclose(o->fp) != 0;
  o->fp = NULL;
  /* again just before the rename: the destination may have changed while we wrote */
  int drc = bad ? PG_OK : pg_out_check_dest(o->path, err);
  if (drc != PG_OK) {
    pg_out_abort(o);
    return drc;
  }
  if (bad || rename(o->tmp_path, o->path) != 0) {
    int rc = pg_err_set(err, PG_E_IO, o->path, PG_NO_OFFSET, "cannot complete the write: %s",
                        strerror(errno));
    pg_out_abort(o);
    return rc;
  }
  pg_tmp_forget(o->tmp_slot);
  free(o->tmp_path);
  free(o->path);
  memset(o, 0, sizeof *o);
  return PG_OK;
}

int pg_file_write_atomic(const char *path, const void *buf, size_t len, pg_err *err) {
  pg_out o;
  PG_TRY(pg_out_begin(&o, path, err));
  int rc = pg_out_write(&o, buf, len, err);
  if (rc != PG_OK) {
    pg_out_abort(&o);
    return rc;
  }
  return pg_out_commit(&o, err);
}

int pg_mkdir_p(const char *path, pg_err *err) {
  size_t n = strlen(path);
  char *tmp = malloc(n + 1);
  if (!tmp) return pg_err_set(err, PG_E_NOMEM, path, PG_NO_OFFSET, "cannot allocate a path");
  memcpy(tmp, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (tmp[i] == '/' || tmp[i] == '\0') {
      char c = tmp[i];
      tmp[i] = '\0';
      if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        free(tmp);
        return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "cannot create a directory: %s",
                          strerror(e));
      }
      tmp[i] = c;
    }
  }
  free(tmp);
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
    return pg_err_set(err, PG_E_IO, path, PG_NO_OFFSET, "not a directory");
  return PG_OK;
}

int pg_buf_reserve(pg_buf *b, size_t extra) {
  if (b->oom) return PG_E_NOMEM;
  if (extra <= b->cap - b->len) return PG_OK;
  size_t need;
  if (__builtin_add_overflow(b->len, extra, &need)) {
    b->oom = 1;
    return PG_E_NOMEM;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) {
      cap = need;
      break;
    }
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (!p) {
    b->oom = 1;
    return PG_E_NOMEM;
  }
  b->data = p;
  b->cap = cap;
  return PG_OK;
}

int pg_buf_put(pg_buf *b, const void *p, size_t n) {
  if (pg_buf_reserve(b, n) != PG_OK) return PG_E_NOMEM;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return PG_OK;
}
int pg_buf_u8(pg_buf *b, uint8_t v) { return pg_buf_put(b, &v, 1); }
int pg_buf_u16(pg_buf *b, uint16_t v) {
  uint8_t t[2];
  pg_st16(t, v);
  return pg_buf_put(b, t, 2);
}
int pg_buf_u32(pg_buf *b, uint32_t v) {
  uint8_t t[4];
  pg_st32(t, v);
  return pg_buf_put(b, t, 4);
}
int pg_buf_u64(pg_buf *b, uint64_t v) {
  uint8_t t[8];
  pg_st64(t, v);
  return pg_buf_put(b, t, 8);
}
void pg_buf_free(pg_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

int pg_utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
      min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
      min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
      min = 0x10000;
    } else {
      goto fail;
    }
    if (n - i < len) goto fail;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) goto fail;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
    i += len;
  }
  return 1;
fail:
  if (bad) *bad = i;
  return 0;
}
