/* pg_arch.h: the arch, a declarative description of one model of the Parameter Golf record
 * family: parsed from JSON (every option typed, defaulted and validated; unknown options
 * refused), written back as canonical JSON, and expanded into the list of tensors (canonical
 * name and shape) that the model holds. spec/arch.md is the normative description. */
#ifndef PG_ARCH_H
#define PG_ARCH_H

#include <stddef.h>
#include <stdint.h>

#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_ARCH_MAX_LAYERS 64    /* physical layers */
#define PG_ARCH_MAX_VIRTUAL 256  /* entries of encoder + decoder together */
#define PG_ARCH_JSON_MAX ((size_t)1 << 20) /* pg_arch_load read cap: PG_E_LIMIT above */
#define PG_ARCH_NAME_MAX 64      /* tensor name buffer, NUL included */

enum pg_arch_ln_scale { PG_ARCH_LN_NONE, PG_ARCH_LN_PHYSICAL, PG_ARCH_LN_VIRTUAL };
/* "records": out = (x1·cos + x2·sin, −x1·sin + x2·cos) (rotation by −θ, the records' code);
 * "standard": out = (x1·cos − x2·sin, x1·sin + x2·cos). */
enum pg_arch_rope_sign { PG_ARCH_ROPE_RECORDS, PG_ARCH_ROPE_STANDARD };
enum pg_arch_gate {
  PG_ARCH_GATE_NONE,
  PG_ARCH_GATE_2SIGMA_FIRST12, /* y_h·2σ(W n[:w])_h, W [heads, w] (R10 AttnOutGate) */
  PG_ARCH_GATE_DENSE_SIGMOID,  /* y_h·σ(W n)_h, W [heads, dim] */
  PG_ARCH_GATE_SPARSE_SIGMOID  /* y_h·σ(c·W n[:w])_h, W [heads, w] */
};
enum pg_arch_act { PG_ARCH_ACT_RELU2, PG_ARCH_ACT_LEAKY_RELU2 };
enum pg_arch_smear { PG_ARCH_SMEAR_NONE, PG_ARCH_SMEAR_V1, PG_ARCH_SMEAR_V2 };
enum pg_arch_skips { PG_ARCH_SKIPS_NONE, PG_ARCH_SKIPS_PLAIN, PG_ARCH_SKIPS_GATED };
enum pg_arch_parallel { PG_ARCH_PAR_NONE, PG_ARCH_PAR_GPTJ, PG_ARCH_PAR_TWO_LANE };

#define PG_ARCH_RECORD_MAX 256   /* follows.record buffer, NUL included */
#define PG_ARCH_TEXT_MAX 512     /* follows.protocol and follows.note buffers, NUL included */

/* A list of layer indices. */
typedef struct pg_arch_list {
  int n;
  int v[PG_ARCH_MAX_VIRTUAL];
} pg_arch_list;

/* Provenance: the record (or system) whose settings the arch follows (spec/arch.md §2.8). It
 * does not change the model; it lets a tool say which record an arch stands for, and what that
 * record's evaluation protocol was. Strings are printable (no control characters). */
typedef struct pg_arch_follows {
  int set;                          /* 1 when the arch carries "follows" */
  char record[PG_ARCH_RECORD_MAX];  /* required when set: the record's folder or system name */
  char date[11];                    /* "YYYY-MM-DD" or "" */
  int pr;                           /* pull request number, 0: none */
  double val_bpb;                   /* the record's reported score, 0: not given */
  char protocol[PG_ARCH_TEXT_MAX];  /* pgverify options of the reported figure, "" if unknown */
  char note[PG_ARCH_TEXT_MAX];      /* which values are assumed, "" if none */
} pg_arch_follows;

/* One arch. Booleans are 0/1. Every field is explicit after pg_arch_parse (defaults resolved). */
typedef struct pg_arch {
  int vocab_size, dim, layers, heads, kv_heads, head_dim, bos_id;
  struct {
    double norm_eps;
    int ln_scale; /* enum pg_arch_ln_scale */
    int resid_mix, attn_scale, mlp_scale;
  } block;
  struct {
    int qk_norm;
    double q_gain;
    int rope_dims;
    double rope_base;
    int rope_sign;    /* enum pg_arch_rope_sign */
    int rope_ntk_len; /* 0: off */
    int causal;
    int doc_mask;
    int doc_max_len; /* 0: no cap */
    pg_arch_list xsa_layers;
    int gate; /* enum pg_arch_gate */
    double gate_scale;
    int gate_window;
  } attention;
  struct {
    int hidden;
    int act; /* enum pg_arch_act */
    double leaky_slope;
  } mlp;
  struct {
    int bigram_buckets; /* 0: off */
    int bigram_dim;
    int bigram_proj;
    double bigram_scale;
    pg_arch_list ve_layers; /* empty: off */
    int ve_dim;
    double ve_scale;
    int smear; /* enum pg_arch_smear */
    int smear_bos_mask;
    int smear_window;
  } embeddings;
  struct {
    int skips; /* enum pg_arch_skips */
    pg_arch_list encoder, decoder;
    int recur_step;
    double recur_frac;
    int parallel; /* enum pg_arch_parallel */
    int parallel_start;
    double parallel_resid_init, parallel_post_init;
    int readout_groups; /* 0: off */
    int readout_layer;  /* -1: none */
    double readout_scale;
    int layer0_attn;
  } structure;
  struct {
    int final_norm, tied;
    double softcap; /* 0: off */
  } head;
  pg_arch_follows follows;
} pg_arch;

/* Parse arch JSON text (untrusted; len bytes, need not be NUL-terminated). Malformed JSON is
 * PG_E_JSON, invalid UTF-8 PG_E_UTF8, a repeated key PG_E_DUPLICATE, a value of the wrong JSON
 * type PG_E_META_TYPE, an unknown option or a value outside its rule PG_E_ARG. The error line
 * names file (may be NULL) and the option's path ("attention.rope_dims"). On error *out is
 * zeroed. */
int pg_arch_parse(pg_arch *out, const char *text, size_t len, const char *file, pg_err *err);
/* Read and parse a file (at most PG_ARCH_JSON_MAX bytes). */
int pg_arch_load(pg_arch *out, const char *path, pg_err *err);
/* Fill *out with the defaults of spec/arch.md (the naive baseline); the same as parsing "{}". */
void pg_arch_default(pg_arch *out);
/* Check every rule of spec/arch.md on a filled struct (PG_E_ARG naming the first fault). */
int pg_arch_validate(const pg_arch *a, const char *file, pg_err *err);
/* Canonical JSON (sorted keys, two-space indent, every option explicit, trailing newline) in a
 * malloc'd NUL-terminated string. The arch is validated first. Deterministic; parsing the text
 * gives an arch equal to a. */
int pg_arch_serialize(const pg_arch *a, char **out, pg_err *err);
/* 1 when every option of a and b is equal, "follows" included, else 0. */
int pg_arch_equal(const pg_arch *a, const pg_arch *b);
/* The model options (every option but "follows") where a and b differ: their count, and in buf
 * (cap bytes, may be 0) "path A/B" entries separated by ", " (cut with "..." when too long). */
int pg_arch_diff(const pg_arch *a, const pg_arch *b, char *buf, size_t cap);
/* The options in effect in a that change the forward pass but that no tensor name or shape
 * fixes (spec/load.md §2.1: gate_scale with the sparse gate, softcap, rope_base, norm_eps, ...),
 * as one compact JSON object {"path": value, ...} in the option table's order, malloc'd and
 * NUL-terminated. A loader cannot check these against the weights; a tool states them. */
int pg_arch_unchecked_json(const pg_arch *a, char **out, pg_err *err);

/* ---- derived quantities ---- */

/* encoder.n + decoder.n */
int pg_arch_virtual_layers(const pg_arch *a);
/* min(encoder.n, decoder.n) when skips are on, else 0. */
int pg_arch_n_skips(const pg_arch *a);
/* Times physical layer i is visited by encoder + decoder. */
int pg_arch_visits(const pg_arch *a, int layer);
/* 1 when the lists differ from the plain split (encoder 0..L/2-1, decoder L/2..L-1). */
int pg_arch_is_recurrent(const pg_arch *a);
/* 1 when physical layer i has the given feature. */
int pg_arch_has_xsa(const pg_arch *a, int layer);
int pg_arch_has_attn(const pg_arch *a, int layer);
/* Index of physical layer i in ve_layers, or -1. */
int pg_arch_ve_index(const pg_arch *a, int layer);

/* One tensor of the model: canonical name and shape (ndim 0 is a scalar of one element). */
typedef struct pg_arch_tensor {
  char name[PG_ARCH_NAME_MAX];
  int ndim;
  uint64_t shape[3];
} pg_arch_tensor;

/* The tensors the arch implies, in canonical order (spec/arch.md), in a malloc'd array (*out,
 * *n; free with free()). The arch is validated first. */
int pg_arch_tensors(const pg_arch *a, pg_arch_tensor **out, size_t *n, pg_err *err);
/* Elements of one tensor. */
uint64_t pg_arch_tensor_numel(const pg_arch_tensor *t);
/* Total number of parameters (sum of the tensors' elements). */
int pg_arch_param_count(const pg_arch *a, uint64_t *out, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
