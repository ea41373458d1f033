/* pg_preset.h: the catalogue of the challenge's merged records as presets (spec/presets/): one
 * JSON file per record folder, holding the record's folder name, date, pull request and claimed
 * score, its arch, the pgverify options of its evaluation protocol, which values were inferred
 * rather than read, and the evaluation quirks it has; or, where pgolf cannot express the record,
 * supported: false with the reason. spec/presets/README.md is the normative description.
 *
 * The folder is found in this order: the environment variable PGOLF_PRESETS, the source tree's
 * spec/presets (an uninstalled build), the installed data directory. */
#ifndef PG_PRESET_H
#define PG_PRESET_H

#include <stddef.h>
#include <stdint.h>

#include "pg_arch.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_PRESET_NAME_MAX 96       /* a preset's name, NUL included: [a-z0-9._-], no leading . */
#define PG_PRESET_TEXT_MAX 512      /* protocol, reason and each list entry, NUL included */
#define PG_PRESET_LIST_MAX 32       /* entries of "inferred" and of "quirks" */
#define PG_PRESET_JSON_MAX ((size_t)256 << 10) /* a preset file's size limit (PG_E_LIMIT) */

typedef struct pg_preset {
  char name[PG_PRESET_NAME_MAX];    /* "preset": the file's name without .json */
  char record[PG_ARCH_RECORD_MAX];  /* the record's folder name */
  char date[11];                    /* YYYY-MM-DD */
  int pr;                           /* pull request number, 0: not known */
  double val_bpb;                   /* the score the record claims */
  uint64_t params;                  /* the parameter count its log prints, 0: not given */
  int supported;                    /* 1: arch and protocol reproduce the record */
  char reason[PG_PRESET_TEXT_MAX];  /* why not, when supported is 0 */
  int has_arch;                     /* arch is set (always when supported) */
  pg_arch arch;                     /* its follows is the preset's record, date, pr, score */
  char protocol[PG_PRESET_TEXT_MAX]; /* pgverify options, "" when not given */
  int n_inferred, n_quirks;
  char inferred[PG_PRESET_LIST_MAX][PG_PRESET_TEXT_MAX];
  char quirks[PG_PRESET_LIST_MAX][PG_PRESET_TEXT_MAX];
} pg_preset;

/* Parse a preset's JSON text (untrusted; len bytes). file names it in errors; name, when not
 * NULL, must equal its "preset" key (the file's name). Every key is typed and checked, unknown
 * keys are refused (PG_E_ARG), the arch is pg_arch_parse's and may not carry its own "follows"
 * (the preset's keys give it). One-line errors; *out is zeroed on error. */
int pg_preset_parse(pg_preset *out, const char *text, size_t len, const char *file,
                    const char *name, pg_err *err);

/* 1 when name is a valid preset name (1..95 bytes of [a-z0-9._-], not starting with '.'). */
int pg_preset_name_ok(const char *name);

/* The presets folder (the first of PGOLF_PRESETS, the source tree's, the installed one that is a
 * directory) into buf; PG_E_NOT_FOUND naming the places tried. */
int pg_preset_dir(char *buf, size_t cap, pg_err *err);

/* Load the preset NAME from the presets folder: a bad name is PG_E_ARG, an unknown one
 * PG_E_NOT_FOUND ("preset 'x': no x.json in DIR"). */
int pg_preset_load(pg_preset *out, const char *name, pg_err *err);

/* The names of every preset in the folder, sorted (malloc'd array of malloc'd strings; free
 * with pg_preset_names_free). Files whose names are not valid preset names are skipped. */
int pg_preset_names(char ***names, size_t *n, pg_err *err);
void pg_preset_names_free(char **names, size_t n);

/* PG_OK when the preset can be run (supported, with an arch and a protocol); else PG_E_ARG,
 * "preset 'x': not supported: REASON". */
int pg_preset_require_supported(const pg_preset *p, pg_err *err);

/* Compare an arch with what a safetensors file's tensors show (names and shapes: vocabulary,
 * width, layers, head widths, MLP width, BigramHash, value embeddings, SmearGate, the attention
 * gate, skips, lanes, readout, tying) when the file carries no "arch.json" (with one, and for an
 * artifact, the loader compares the two archs). PG_E_ARG naming every differing option with
 * both values; PG_OK otherwise (faults of the file are left to the loader). */
int pg_preset_check_weights(const pg_arch *a, const char *path, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
