/* pg_weights.h: the parameter loaders: a model (pg_model.h) filled from an artifact (its
 * "arch.json" metadata and its tensors, dequantized) or from a safetensors file (an arch given, or
 * the one in its "__metadata__"). Strict on both sides: every tensor the arch implies must be
 * present with a compatible shape, no other tensor may be present, and every weight must be finite.
 * Everything is checked before the model is allocated, so a hostile file cannot make the loader
 * allocate more than its own tensors hold. spec/load.md is the normative description. Also the
 * weights as the tools take them (an artifact or a safetensors file, with their provenance
 * metadata) and an artifact's dequantized weights exported as safetensors. */
#ifndef PG_WEIGHTS_H
#define PG_WEIGHTS_H

#include "pg_arch.h"
#include "pg_container.h"
#include "pg_model.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A model from an artifact: the arch from the metadata key "arch.json" (a string; missing:
 * PG_E_NOT_FOUND, another type: PG_E_META_TYPE; invalid: pg_arch_parse's status), each tensor
 * dequantized with pg_artifact_tensor_dequant (LQER included). A missing tensor is PG_E_NOT_FOUND,
 * an incompatible shape PG_E_SIZE_MISMATCH, a tensor the arch does not imply PG_E_MALFORMED, a
 * NaN or infinite weight PG_E_ARG; decoding faults keep the reader's status. *out is NULL on
 * error; free the model with pg_model_free. */
int pg_model_load_artifact(pg_model **out, pg_artifact *a, pg_err *err);

/* pg_model_load_artifact with an arch given by the caller (may be NULL): it must describe the
 * same model as the artifact's "arch.json" (pg_arch_diff empty; else PG_E_ARG naming every
 * differing option with both values) and is the arch the model gets ("follows" taken from the
 * artifact's when the given arch has none). */
int pg_model_load_artifact_arch(pg_model **out, pg_artifact *a, const pg_arch *given,
                                pg_err *err);

/* pg_model_load_artifact_arch onto engine e (NULL: that function, the model on the host): the
 * model is made on e (pg_model_create_on) and each integer tensor with row scales goes up in its
 * quantized form (one byte per value, its scales and LQER factors) for e to dequantize
 * (pg_engine_dequant), the other tensors as fp32; the parameters are the same bits, the checks,
 * statuses and messages the same, and on an engine with memory of its own the host gets no copy
 * of the parameters until it asks for one (spec/engine.md §8.1). A fault of the engine is its
 * status, in a line naming the file. */
int pg_model_load_artifact_on(pg_model **out, pg_artifact *a, const pg_arch *given,
                              pg_engine *e, pg_err *err);

/* The structure checks of pg_model_load_artifact without loading: the artifact's "arch.json"
 * parses, and its tensors are exactly the arch's with compatible shapes (spec/load.md §3). */
int pg_weights_check_artifact(pg_artifact *a, pg_err *err);

/* Parse a file's stored arch text (label names it in a parse error) into *stored (may be NULL)
 * and compare it with the given arch: PG_OK when they describe the same model, else PG_E_ARG,
 * "FILE: the arch given contradicts the file's arch.json in N options (given/stored): ...". */
int pg_weights_check_arch(const pg_arch *given, const char *text, size_t len, const char *file,
                       const char *label, pg_arch *stored, pg_err *err);

/* A model from a safetensors file. arch may be NULL: then the file's "__metadata__" key
 * "arch.json" is parsed (absent: PG_E_NOT_FOUND); a given arch is used, and when the metadata
 * holds "arch.json" too, both must describe the same model (as pg_model_load_artifact_arch).
 * Tensors are converted with pg_st_to_f32 (F32, F64, F16, BF16, F8_E4M3, F8_E5M2; other dtypes
 * PG_E_DTYPE). The other rules and statuses are those of pg_model_load_artifact. */
int pg_model_load_safetensors(pg_model **out, const pg_arch *arch, const char *path, pg_err *err);

/* The prefix of a pgtrain checkpoint's training state (optimizer moments, live weights under
 * averaging, ...): spec/train.md. */
#define PG_LOAD_STATE_PREFIX "train."
/* pg_model_load_safetensors for a pgtrain checkpoint: the same rules, except that tensors whose
 * names begin with "train." are training state, not weights, and are skipped. */
int pg_model_load_checkpoint(pg_model **out, const pg_arch *arch, const char *path, pg_err *err);

/* The shape rule of both loaders: same element count, and the same dimensions once every
 * dimension of size 1 is dropped from both (so a scalar [] matches [1] and [1, 1]). 1 when an
 * arch tensor of this shape can be filled from a stored tensor of shape dims[0..ndim). */
int pg_weights_shape_compatible(const pg_arch_tensor *t, unsigned ndim, const uint64_t *dims);

/* ---- weights as the tools take them: an artifact or a safetensors file ---- */

/* *yes = 1 when the file begins with the artifact magic (anything else is read as safetensors by
 * the commands that take both); PG_E_IO when it cannot be opened. */
int pg_weights_is_artifact(const char *path, int *yes, pg_err *err);
/* The model of weights at path: an artifact (is_artifact; *art is left open for the caller to
 * free with pg_artifact_free, it serves pg_weights_meta) or a pgtrain checkpoint / safetensors
 * file (*art NULL), with the arch of the JSON file arch_path when not NULL, which must describe
 * the same model as the weights' own "arch.json" when they have one (spec/load.md §1). */
int pg_weights_load(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                    const char *arch_path, pg_err *err);
/* pg_weights_load with the arch given as a struct (may be NULL), e.g. a preset's. */
int pg_weights_load_given(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                          const pg_arch *given, pg_err *err);
/* pg_weights_load_given with an artifact loaded onto engine e (pg_model_load_artifact_on; NULL:
 * the host). A safetensors file is loaded on the host as ever. */
int pg_weights_load_on(pg_model **m, pg_artifact **art, const char *path, int is_artifact,
                       const pg_arch *given, pg_engine *e, pg_err *err);
/* A string metadata value of weights: the artifact's entry (art not NULL), else the safetensors
 * file's "__metadata__" (path; only its header is read). A malloc'd copy, or NULL when absent,
 * not a string, or unreadable (the loader has read the file already and reports its faults). */
char *pg_weights_meta(const char *path, pg_artifact *art, const char *key);

/* The artifact's tensors, dequantized (LQER included), as a safetensors file (f32, or bf16 with
 * bf16) with every metadata entry in "__metadata__" (strings as they are, other types as compact
 * JSON), written atomically; one tensor is dequantized at a time (pgunpack --safetensors). */
int pg_weights_export_safetensors(pg_artifact *a, const char *out, int bf16, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
