/* pg_container.h: the pgolf artifact container, versions 1 and 2 (spec/format.md): a reader that
 * validates every byte before trusting it, and a deterministic, atomic writer. */
#ifndef PG_CONTAINER_H
#define PG_CONTAINER_H

#include <stddef.h>
#include <stdint.h>

#include "pg_codec.h"
#include "pg_qtype.h"
#include "pg_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PG_CONTAINER_V1 1
#define PG_CONTAINER_V2 2
/* What the writer writes unless told otherwise (pg_writer_set_container). */
#define PG_CONTAINER_VERSION PG_CONTAINER_V2
#define PG_QUANT_LAYOUT_V1 1
#define PG_QUANT_LAYOUT_V2 2 /* adds a stored value order and a row permutation per tensor */
#define PG_QUANT_LAYOUT_VERSION PG_QUANT_LAYOUT_V2 /* the newest this reader knows */
/* Container v1: a fixed 64-byte header and 64 bytes per section table entry. */
#define PG_HEADER_SIZE 64
#define PG_ENTRY_SIZE 64
/* Container v2: magic, two versions, a varint count, compact entries, one file checksum. */
#define PG_V2_FIXED 12 /* magic + container_version + quant_layout_version */
#define PG_MAX_SECTIONS 4096
#define PG_MAX_SECTION_RAW (1ull << 30)
#define PG_MAX_META_RAW (16ull << 20)
#define PG_MAX_META_ENTRIES 65536
#define PG_MAX_DIR_RAW (64ull << 20)
#define PG_MAX_TENSORS 65536
#define PG_MAX_NAME 255
#define PG_MAX_DIMS 8
#define PG_MAX_ELEMENTS (1ull << 40)
#define PG_MAX_LQER_RANK 64
/* The decoded bytes of all sections together are at most PG_RAW_RATIO times the file's size, or
 * PG_RAW_FLOOR for a small file (spec/format.md §7): see pg_artifact_raw_bound. */
#define PG_RAW_RATIO 32
#define PG_RAW_FLOOR (64ull << 20)
/* Decoded sections a reader keeps between calls (beyond META, TENSORS and the sections a caller
 * holds): when a decode would take the cache above this, the least recently used go first. The
 * sections the last call used stay, so consecutive tensors of one section decode it once. */
#define PG_CACHE_BYTES (64ull << 20)

extern const uint8_t PG_MAGIC[8];

enum pg_section_kind {
  PG_SEC_META = 1,
  PG_SEC_TENSORS = 2,
  PG_SEC_DATA = 3,
  PG_SEC_TOKENIZER = 4,
  PG_SEC_CODE = 5,
};
const char *pg_section_kind_name(int kind);

enum pg_scale_kind { PG_SCALE_NONE = 0, PG_SCALE_ROW_F16 = 1, PG_SCALE_SCALAR_F32 = 2 };

enum pg_meta_type {
  PG_META_I64 = 1,
  PG_META_F64 = 2,
  PG_META_STR = 3,
  PG_META_BOOL = 4,
  PG_META_ARR = 5,
};

/* One metadata value. Strings point into the decoded META section (not NUL-terminated: use len). */
typedef struct pg_meta_entry {
  const char *key;
  uint16_t key_len;
  uint8_t type;
  uint8_t elem_type; /* arrays */
  uint8_t compact;   /* container v2: lengths inside arrays are varints */
  uint32_t count;    /* arrays: element count; strings: byte length */
  int64_t i64;
  double f64;
  int b;
  const char *str;
  const uint8_t *arr; /* arrays: the raw elements (decode with pg_meta_arr_*) */
  size_t arr_bytes;
} pg_meta_entry;

/* i-th element of an array entry. Strings: *s, *len point into the section. */
int64_t pg_meta_arr_i64(const pg_meta_entry *e, uint32_t i);
double pg_meta_arr_f64(const pg_meta_entry *e, uint32_t i);
void pg_meta_arr_str(const pg_meta_entry *e, uint32_t i, const char **s, uint32_t *len);

typedef struct pg_section {
  uint16_t kind;
  pg_codec_spec codec;
  /* v2 files keep no stored checksum per section (one covers the file: stored_xxh64 is 0) and
   * the low 32 bits of the raw one */
  uint64_t offset, stored_size, raw_size, stored_xxh64, raw_xxh64;
} pg_section;

enum pg_part_role {
  PG_PART_VALUES = 0,
  PG_PART_SCALES = 1,
  PG_PART_LQER_A = 2,
  PG_PART_LQER_A_SCALE = 3,
  PG_PART_LQER_B = 4,
  PG_PART_LQER_B_SCALES = 5,
  PG_PART_ROW_PERM = 6, /* quant layout 2, perm kind 1: the stored row order */
  PG_PART_COUNT = 7
};
const char *pg_part_role_name(int role);

typedef struct pg_part {
  int present;
  uint32_t section;
  uint64_t offset, size;
} pg_part;

/* Quant layout 2: how an integer tensor's values part is laid out. The values part holds the
 * image of the matrix whose row j is the logical row perm[j] (perm: identity, or the row_perm
 * part), row-major (order 0) or column-major (order 1); every reader call returns the logical
 * row-major matrix. */
enum pg_order { PG_ORDER_ROWS = 0, PG_ORDER_COLS = 1 };
enum pg_perm_kind { PG_PERM_NONE = 0, PG_PERM_STORED = 1 };

typedef struct pg_tensor_info {
  char name[PG_MAX_NAME + 1];
  uint8_t qtype, packing, scale_kind, ndim, lqer_rank;
  uint8_t order, perm; /* enum pg_order, enum pg_perm_kind (0, 0 under quant layout 1) */
  int8_t qmin, qmax;
  uint64_t dims[PG_MAX_DIMS];
  uint64_t numel, rows, cols;
  pg_part parts[PG_PART_COUNT];
} pg_tensor_info;

/* Limits a reader enforces; zero fields take the spec's values. A reader may be stricter. */
typedef struct pg_read_limits {
  uint64_t max_section_raw;
  uint64_t max_elements;
  uint64_t max_total_raw; /* decoded bytes of all sections together (at most the file's bound) */
  uint64_t max_cache;     /* decoded bytes cached between calls (default PG_CACHE_BYTES) */
} pg_read_limits;

/* The most bytes the sections of a file of this size may decode to, all together:
 * max(PG_RAW_FLOOR, PG_RAW_RATIO * file_size). */
uint64_t pg_artifact_raw_bound(uint64_t file_size);

typedef struct pg_artifact pg_artifact;

/* Open a file (read whole into private memory, never modified) or a buffer (which must outlive
 * the handle). Validates header, table, coverage, the limits of spec/format.md §7 (the decoded
 * total included, before anything is decoded), stored checksums, META, TENSORS and the CODE names.
 * META and TENSORS stay decoded; nothing else is kept. A handle is used by one thread at a time;
 * distinct handles are independent. */
int pg_artifact_open(pg_artifact **out, const char *path, const pg_read_limits *lim, pg_err *err);
int pg_artifact_open_mem(pg_artifact **out, const uint8_t *data, size_t len, const char *name,
                         const pg_read_limits *lim, pg_err *err);
void pg_artifact_free(pg_artifact *a);

const char *pg_artifact_name(const pg_artifact *a);
uint64_t pg_artifact_file_size(const pg_artifact *a);
uint16_t pg_artifact_container_version(const pg_artifact *a);
uint16_t pg_artifact_quant_layout_version(const pg_artifact *a);
/* Bytes of the header and the section table (what precedes section 0). */
uint64_t pg_artifact_head_size(const pg_artifact *a);

uint32_t pg_artifact_section_count(const pg_artifact *a);
const pg_section *pg_artifact_section(const pg_artifact *a, uint32_t i);
/* Decoded bytes of section i (raw checksum verified). They stay valid until
 * pg_artifact_section_release(a, i) or pg_artifact_free. */
int pg_artifact_section_raw(pg_artifact *a, uint32_t i, const uint8_t **raw, pg_err *err);
/* Let go of section i's decoded bytes (no effect on META and TENSORS, which stay decoded). */
void pg_artifact_section_release(pg_artifact *a, uint32_t i);
/* Let go of every decoded section the tensor calls keep (not those a caller holds). */
void pg_artifact_trim(pg_artifact *a);

uint32_t pg_artifact_meta_count(const pg_artifact *a);
const pg_meta_entry *pg_artifact_meta(const pg_artifact *a, uint32_t i);
const pg_meta_entry *pg_artifact_meta_find(const pg_artifact *a, const char *key);

uint32_t pg_artifact_tensor_count(const pg_artifact *a);
const pg_tensor_info *pg_artifact_tensor(const pg_artifact *a, uint32_t i);
/* Index of the tensor with this name, or -1. */
int64_t pg_artifact_tensor_find(const pg_artifact *a, const char *name);
/* Integer values of tensor i, unpacked to one int8 per element and range-checked. */
int pg_artifact_tensor_values(pg_artifact *a, uint32_t i, int8_t *out, pg_err *err);
/* Row scales (fp16 bits, rows of them) of tensor i: in its section, held as by
 * pg_artifact_section_raw. The other tensor calls decode on demand and hold nothing. */
int pg_artifact_tensor_scales(pg_artifact *a, uint32_t i, const uint8_t **bytes, pg_err *err);
/* Dequantize tensor i to fp32 (numel floats), LQER correction included. */
int pg_artifact_tensor_dequant(pg_artifact *a, uint32_t i, float *out, pg_err *err);
/* The other parts pg_artifact_tensor_dequant reads of integer tensor i with row scales
 * (PG_SCALE_ROW_F16), decoded for a dequantization done elsewhere (an engine's, spec/engine.md
 * §8.1; the values come from pg_artifact_tensor_values): scales[rows] (fp16 bits), and with
 * lqer_rank r > 0 the LQER factors qa[rows*r] (range-checked to [-2, 1]), *sa (fp16 bits),
 * qb[r*cols] ([-8, 7]) and sb[r*cols/64] (fp16 bits); the LQER pointers are not used when r is
 * 0. PG_E_ARG for another tensor kind. Holds nothing (as pg_artifact_tensor_values). */
int pg_artifact_tensor_row_parts(pg_artifact *a, uint32_t i, uint16_t *scales, int8_t *qa,
                                 uint16_t *sa, int8_t *qb, uint16_t *sb, pg_err *err);

/* Section index of the tokenizer, or -1. */
int64_t pg_artifact_tokenizer_section(const pg_artifact *a);
/* CODE sections: count, and the i-th file's name (checked and copied at open), its length and
 * section; with `bytes` non-NULL, its bytes, decoded and held as by pg_artifact_section_raw. */
uint32_t pg_artifact_code_count(const pg_artifact *a);
int pg_artifact_code(pg_artifact *a, uint32_t i, const char **name, size_t *name_len,
                     const uint8_t **bytes, size_t *len, uint32_t *section, pg_err *err);

/* Codec qc's layout hint for section s (pg_qcoder.h, spec/format.md §12): one segment per part
 * that names it, in offset order (*segs malloc'd; none for a section no part names). */
int pg_artifact_section_segments(const pg_artifact *a, uint32_t s, pg_qc_seg **segs, size_t *n,
                                 pg_err *err);
/* Decode every section, verify every raw checksum, and range-check every tensor's values; one
 * section at a time (what the caller holds stays held). */
int pg_artifact_check(pg_artifact *a, pg_err *err);

/* ------------------------------------------------------------------------------------------ */
/* Writer */

typedef struct pg_writer pg_writer;

/* One tensor to add. Integer qtypes: `values` is int8[numel]; floats: `values` is the raw
 * little-endian bytes (2 or 4 per element). Data is copied; the caller keeps ownership. */
typedef struct pg_tensor_in {
  const char *name;
  int qtype, packing, scale_kind;
  int qmin, qmax; /* ints; 0,0 means the qtype's full range */
  unsigned ndim;
  const uint64_t *dims;
  const void *values;
  const uint16_t *row_scales; /* PG_SCALE_ROW_F16: rows fp16 values */
  float scalar_scale;         /* PG_SCALE_SCALAR_F32 */
  unsigned lqer_rank;
  const int8_t *lqer_a;         /* rows x rank, values in [-2, 1] */
  uint16_t lqer_a_scale;        /* fp16 */
  const int8_t *lqer_b;         /* rank x cols, values in [-8, 7] */
  const uint16_t *lqer_b_scales; /* rank*cols/64 fp16 values */
  /* Quant layout 2 (integer tensors, ndim >= 2, one value per byte): `values` stays the logical
   * row-major matrix; the writer stores the image of order/perm. row_perm[j] is the logical row
   * stored j-th (a permutation of 0..rows-1), with perm = PG_PERM_STORED. */
  int order, perm;
  const uint32_t *row_perm;
  /* DATA section handles (from pg_writer_data_section) for each kind of part */
  int sec_values, sec_scales, sec_lqer, sec_perm;
} pg_tensor_in;

int pg_writer_create(pg_writer **out);
void pg_writer_free(pg_writer *w);
/* Encode up to this many sections at once when serializing (default 1). The bytes are the same
 * for any value. */
void pg_writer_set_threads(pg_writer *w, int threads);
/* Container version to write: PG_CONTAINER_V1 or PG_CONTAINER_V2 (the default). The quant layout
 * version written is 2 when some tensor has an order or a permutation, else 1. */
int pg_writer_set_container(pg_writer *w, int version);
/* Codecs of the META and TENSORS sections (default brotli-11/w22). */
void pg_writer_set_meta_codec(pg_writer *w, const pg_codec_spec *meta, const pg_codec_spec *dir);

int pg_writer_meta_i64(pg_writer *w, const char *key, int64_t v, pg_err *err);
int pg_writer_meta_f64(pg_writer *w, const char *key, double v, pg_err *err);
int pg_writer_meta_bool(pg_writer *w, const char *key, int v, pg_err *err);
int pg_writer_meta_str(pg_writer *w, const char *key, const char *s, size_t len, pg_err *err);
int pg_writer_meta_arr_i64(pg_writer *w, const char *key, const int64_t *v, uint32_t n,
                           pg_err *err);
int pg_writer_meta_arr_f64(pg_writer *w, const char *key, const double *v, uint32_t n,
                           pg_err *err);
int pg_writer_meta_arr_str(pg_writer *w, const char *key, const char *const *v, uint32_t n,
                           pg_err *err);

/* A new DATA section; returns its handle (>= 0) or a negative value on a bad spec. */
int pg_writer_data_section(pg_writer *w, const pg_codec_spec *spec, pg_err *err);
int pg_writer_tokenizer(pg_writer *w, const uint8_t *bytes, size_t len, const pg_codec_spec *spec,
                        pg_err *err);
int pg_writer_code(pg_writer *w, const char *name, const uint8_t *bytes, size_t len,
                   const pg_codec_spec *spec, pg_err *err);
int pg_writer_tensor(pg_writer *w, const pg_tensor_in *t, pg_err *err);

/* Serialize: to memory (*out malloc'd), or atomically to a file. */
int pg_writer_to_mem(pg_writer *w, uint8_t **out, size_t *len, pg_err *err);
int pg_writer_write(pg_writer *w, const char *path, pg_err *err);

#ifdef __cplusplus
}
#endif
#endif
