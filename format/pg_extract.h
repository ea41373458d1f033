/* pg_extract.h: an artifact's files on disk (pgunpack --extract): the tokenizer, the code files
 * and metadata.json, written into a folder that did not exist (or was empty) before.
 *
 * Names come from the artifact, so from a stranger: each is checked as a relative path of plain
 * components before anything is written, collisions are refused, and the files are created inside
 * a fresh temporary folder beside the destination, relative to directory descriptors, never
 * following a link and never replacing anything; the folder is renamed into place when complete,
 * and removed whole on any failure (spec/cli.md "pgunpack --extract"). */
#ifndef PG_EXTRACT_H
#define PG_EXTRACT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "pg_container.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One file to write: a checked relative name and its bytes. */
typedef struct pg_extract_file {
  char *name;           /* NUL-terminated relative path, '/'-separated */
  const uint8_t *bytes; /* into the artifact, or `owned` */
  size_t len;
  uint8_t *owned;
} pg_extract_file;

typedef struct pg_extract_plan {
  pg_extract_file *files;
  size_t n;
} pg_extract_plan;

/* PG_OK when name (len bytes) is safe to create under a folder: 1..255 bytes of UTF-8, components
 * separated by single '/', none empty, "." or "..", no leading or trailing '/', no control bytes
 * (NUL included) and no backslash; otherwise PG_E_MALFORMED naming the artifact `src`. */
int pg_extract_name_check(const char *name, size_t len, const char *src, pg_err *err);

/* What --extract writes, checked: the tokenizer (under its recorded base name when that is a plain
 * file name, else tokenizer.model), every code file, and metadata.json. Refuses an unsafe name
 * (PG_E_MALFORMED) and two names that collide (PG_E_DUPLICATE): equal names, or a file that is a
 * folder of another's path. Free with pg_extract_plan_free (also after a failure). */
int pg_extract_plan_build(pg_artifact *a, pg_extract_plan *p, pg_err *err);
void pg_extract_plan_free(pg_extract_plan *p);

/* Write the plan to dir, which must not exist or be an empty folder (not a link): PG_E_EXISTS
 * otherwise. On failure nothing is left: neither dir's new contents nor the temporary folder. */
int pg_extract_write(const pg_extract_plan *p, const char *dir, pg_err *err);

/* The metadata export, in the lossless JSON form of spec/cli.md (non-finite numbers and non-UTF-8
 * text survive): one JSON value per entry (arrays element by element), and the object of
 * every entry by key; NULL when out of memory. */
json_t *pg_meta_value_json(const pg_meta_entry *m);
json_t *pg_meta_object_json(const pg_artifact *a);
/* metadata.json's text: the object with sorted keys, indented, ending in a newline (malloc'd). */
int pg_meta_export(const pg_artifact *a, char **text, size_t *len, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
