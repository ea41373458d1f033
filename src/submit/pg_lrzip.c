/* pg_lrzip.c: an lrzip stream decoded by the lrzip program (pg_lrzip.h). The stream is written
 * to a fresh mkdtemp folder, `lrzip -d -q -f -o OUT IN` runs there with no shell and its output
 * discarded, the result's size is checked before it is read back, and the folder is removed
 * whatever happened. */
#define _GNU_SOURCE
#include "pg_lrzip.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_io.h"

/* "LRZI", major 0, minor ≥ 6, then the decoded size (u64 little-endian) at offset 6. */
static int declared_size(const uint8_t *in, size_t n, uint64_t *size) {
  if (n < 14 || memcmp(in, "LRZI", 4) != 0 || in[4] != 0 || in[5] < 6) return 0;
  uint64_t s = 0;
  for (int i = 7; i >= 0; i--) s = s << 8 | in[6 + i];
  *size = s;
  return 1;
}

#ifdef PG_FUZZING
int pg_lrzip_decode(const uint8_t *in, size_t n, const char *file, const char *what,
                    uint64_t max_out, uint8_t **out, size_t *out_len, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  PG_FAIL_IF(n > max_out, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "%s: decompresses to more than %llu bytes", what, (unsigned long long)max_out);
  *out = malloc(n ? n : 1);
  if (!*out) return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "out of memory");
  if (n) memcpy(*out, in, n);
  *out_len = n;
  return PG_OK;
}
#else
static int write_file(const char *path, const uint8_t *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return close(fd);
}

/* Run the program on inp → outp, allowed to write files of at most `limit` bytes
 * (RLIMIT_FSIZE: a stream that decodes to more than it declares is stopped there, SIGXFSZ, and
 * cannot fill the disk first). 0 ran and exited 0; else the status is set in err. The child
 * makes only system calls between fork and exec; exec failing exits 127, read below as the
 * program missing. */
static int run_lrzip(const char *inp, const char *outp, uint64_t limit, const char *file,
                     const char *what, pg_err *err) {
  const char *prog = getenv(PG_LRZIP_ENV);
  if (!prog || !*prog) prog = "lrzip";
  char *argv[] = {(char *)prog, "-d", "-q", "-f", "-o", (char *)outp, (char *)inp, NULL};
  const struct rlimit fsize = {(rlim_t)limit, (rlim_t)limit};
  pid_t pid = fork();
  if (pid < 0)
    return pg_err_set(err, PG_E_IO, file, PG_NO_OFFSET, "%s: cannot run %s: %s", what, prog,
                      strerror(errno));
  if (pid == 0) {
    /* quiet and detached from the caller's terminal: its messages are not ours to print */
    const int in = open("/dev/null", O_RDONLY | O_CLOEXEC),
              out = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 ||
        setrlimit(RLIMIT_FSIZE, &fsize) != 0 || signal(SIGXFSZ, SIG_DFL) == SIG_ERR)
      _exit(126);
    execvp(prog, argv);
    _exit(127);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return pg_err_set(err, PG_E_IO, file, PG_NO_OFFSET, "%s: waiting for %s: %s", what, prog,
                        strerror(errno));
  if (WIFEXITED(st) && WEXITSTATUS(st) == 127) /* not found, here or by a shell wrapper */
    return pg_err_set(err, PG_E_UNSUPPORTED, file, PG_NO_OFFSET,
                      "%s: lrzip not found (%s exited with status 127); install lrzip or name "
                      "the program in %s", what, prog, PG_LRZIP_ENV);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    if (WIFEXITED(st))
      return pg_err_set(err, PG_E_DECOMPRESS, file, PG_NO_OFFSET,
                        "%s: lrzip rejected the stream (%s exited with status %d)", what, prog,
                        WEXITSTATUS(st));
    return pg_err_set(err, PG_E_DECOMPRESS, file, PG_NO_OFFSET,
                      "%s: lrzip rejected the stream (%s was killed by signal %d)", what, prog,
                      WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  }
  return PG_OK;
}

int pg_lrzip_decode(const uint8_t *in, size_t n, const char *file, const char *what,
                    uint64_t max_out, uint8_t **out, size_t *out_len, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  uint64_t want = 0;
  PG_FAIL_IF(!declared_size(in, n, &want), err, PG_E_DECOMPRESS, file, PG_NO_OFFSET,
             "%s: not an lrzip stream (no LRZI header of version 0.6 or later)", what);
  PG_FAIL_IF(want > max_out, err, PG_E_LIMIT, file, PG_NO_OFFSET,
             "%s: declares %llu decoded bytes, more than the %llu allowed", what,
             (unsigned long long)want, (unsigned long long)max_out);
  const char *tmp = getenv("TMPDIR");
  char dir[4096], inp[4200], outp[4200];
  snprintf(dir, sizeof dir, "%s/pglrzip.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir))
    return pg_err_set(err, PG_E_IO, file, PG_NO_OFFSET, "%s: cannot make a temporary folder "
                      "for lrzip: %s", what, strerror(errno));
  snprintf(inp, sizeof inp, "%s/in.lrz", dir);
  snprintf(outp, sizeof outp, "%s/out", dir);
  int rc = PG_OK;
  struct stat sb;
  if (write_file(inp, in, n))
    rc = pg_err_set(err, PG_E_IO, file, PG_NO_OFFSET, "%s: cannot write %s: %s", what, inp,
                    strerror(errno));
  /* one byte more than declared is enough to tell that it holds more */
  if (!rc) rc = run_lrzip(inp, outp, want + 1, file, what, err);
  if (!rc && stat(outp, &sb) != 0)
    rc = pg_err_set(err, PG_E_DECOMPRESS, file, PG_NO_OFFSET, "%s: lrzip wrote no output", what);
  if (!rc && (uint64_t)sb.st_size > max_out)
    rc = pg_err_set(err, PG_E_LIMIT, file, PG_NO_OFFSET,
                    "%s: decompresses to %llu bytes, more than the %llu allowed", what,
                    (unsigned long long)sb.st_size, (unsigned long long)max_out);
  if (!rc && (uint64_t)sb.st_size != want)
    rc = pg_err_set(err, PG_E_SIZE_MISMATCH, file, PG_NO_OFFSET,
                    "%s: lrzip wrote %llu bytes, the stream declares %llu", what,
                    (unsigned long long)sb.st_size, (unsigned long long)want);
  if (!rc) {
    pg_err rerr = {0};
    rc = pg_file_read_all(outp, out, out_len, max_out ? max_out : 1, &rerr);
    if (rc) pg_err_set(err, rc, file, PG_NO_OFFSET, "%s: reading lrzip's output: %s", what,
                       rerr.msg);
  }
  unlink(inp);
  unlink(outp);
  rmdir(dir);
  return rc;
}
#endif
