/* pgtest.h: helpers shared by the test programs: a fresh temporary folder per test, removed with
 * everything in it afterwards. */
#ifndef PGTEST_H
#define PGTEST_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Remove a file, or a folder and everything below it (links are removed, not followed). */
static inline void pgtest_rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *de;
      char p[1024];
      while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
          int k = snprintf(p, sizeof p, "%s/%s", path, de->d_name);
          if (k > 0 && (size_t)k < sizeof p) pgtest_rm_rf(p);
        }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* Make a fresh folder /tmp/<prefix>.XXXXXX into buf (at least 64 bytes). */
static inline void pgtest_mkdtemp(char *buf, const char *prefix) {
  snprintf(buf, 64, "/tmp/%s.XXXXXX", prefix);
  cr_assert_not_null(mkdtemp(buf), "cannot create a temporary folder");
}

#endif
