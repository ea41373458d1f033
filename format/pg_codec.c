/* pg_codec.c: zstd, brotli and lzma through their libraries, qc (pg_qcoder.c), perm
 * (pg_permcode.c), and the byte shuffle. */
#include "pg_codec.h"

#include "pg_permcode.h"

#include <brotli/decode.h>
#include <brotli/encode.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

const char *pg_codec_name(uint8_t codec) {
  switch (codec) {
  case PG_CODEC_NONE: return "none";
  case PG_CODEC_ZSTD: return "zstd";
  case PG_CODEC_BROTLI: return "brotli";
  case PG_CODEC_LZMA: return "lzma";
  case PG_CODEC_QC: return "qc";
  case PG_CODEC_PERM: return "perm";
  default: return "unknown";
  }
}

int pg_codec_spec_check(const pg_codec_spec *s, const char *file, uint64_t off, pg_err *err) {
  switch (s->codec) {
  case PG_CODEC_NONE:
    PG_FAIL_IF(s->level || s->window, err, PG_E_CODEC, file, off, "codec none takes no level");
    break;
  case PG_CODEC_ZSTD:
    PG_FAIL_IF(s->level < 1 || s->level > 22 || s->window, err, PG_E_CODEC, file, off,
               "zstd level %u outside 1..22", s->level);
    break;
  case PG_CODEC_BROTLI:
    PG_FAIL_IF(s->level > 11, err, PG_E_CODEC, file, off, "brotli quality %u outside 0..11",
               s->level);
    PG_FAIL_IF(s->window < 10 || s->window > 24, err, PG_E_CODEC, file, off,
               "brotli window %u outside 10..24", s->window);
    break;
  case PG_CODEC_LZMA:
    PG_FAIL_IF((s->level & 0x7f) > 9 || (s->level & 0x70) || s->window, err, PG_E_CODEC, file,
               off, "lzma preset %u outside 0..9", s->level & 0x7f);
    break;
  case PG_CODEC_QC:
  case PG_CODEC_PERM:
    PG_FAIL_IF(s->level || s->window, err, PG_E_CODEC, file, off, "codec %s takes no level",
               pg_codec_name(s->codec));
    PG_FAIL_IF(s->transform || s->stride, err, PG_E_TRANSFORM, file, off,
               "codec %s takes no transform", pg_codec_name(s->codec));
    break;
  case PG_CODEC_PERM_RANK:
    return pg_err_set(err, PG_E_CODEC, file, off,
                      "codec 5 (permutations by rank) is withdrawn: its decoding is quadratic");
  default:
    return pg_err_set(err, PG_E_CODEC, file, off, "unknown codec %u", s->codec);
  }
  switch (s->transform) {
  case PG_TRANSFORM_NONE:
    PG_FAIL_IF(s->stride, err, PG_E_TRANSFORM, file, off, "stride %u without a shuffle",
               s->stride);
    break;
  case PG_TRANSFORM_SHUFFLE:
    PG_FAIL_IF(s->stride < 2, err, PG_E_TRANSFORM, file, off, "shuffle stride %u below 2",
               s->stride);
    break;
  default:
    return pg_err_set(err, PG_E_TRANSFORM, file, off, "unknown transform %u", s->transform);
  }
  return PG_OK;
}

void pg_codec_spec_format(const pg_codec_spec *s, char *buf, size_t cap) {
  int n;
  switch (s->codec) {
  case PG_CODEC_NONE: n = snprintf(buf, cap, "none"); break;
  case PG_CODEC_ZSTD: n = snprintf(buf, cap, "zstd-%u", s->level); break;
  case PG_CODEC_BROTLI: n = snprintf(buf, cap, "brotli-%u/w%u", s->level, s->window); break;
  case PG_CODEC_LZMA:
    n = snprintf(buf, cap, "lzma-%u%s", s->level & 0x7f, (s->level & 0x80) ? "e" : "");
    break;
  case PG_CODEC_QC: n = snprintf(buf, cap, "qc"); break;
  case PG_CODEC_PERM: n = snprintf(buf, cap, "perm"); break;
  default: n = snprintf(buf, cap, "codec%u", s->codec); break;
  }
  if (n > 0 && (size_t)n < cap && s->transform == PG_TRANSFORM_SHUFFLE)
    snprintf(buf + n, cap - (size_t)n, "+shuf%u", s->stride);
}

/* A decimal number of at most 3 digits at p (a level, a window, a stride): -1 when there is no
 * digit there; strtol alone would take a sign or blanks, and "zstd--5" became the default. */
static long small_number(const char *p, char **end) {
  long v = 0;
  int k = 0;
  while (k < 4 && p[k] >= '0' && p[k] <= '9') v = v * 10 + (p[k++] - '0');
  *end = (char *)p + k;
  return k == 0 ? -1 : k == 4 ? 1000 : v;
}

int pg_codec_spec_parse(pg_codec_spec *s, const char *text, pg_err *err) {
  memset(s, 0, sizeof *s);
  char name[16] = {0};
  size_t i = 0;
  while (text[i] && text[i] != '-' && text[i] != '+' && i < sizeof name - 1) {
    name[i] = text[i];
    i++;
  }
  const char *p = text + i;
  long level = -1, window = -1;
  int extreme = 0;
  if (*p == '-') {
    char *end;
    level = small_number(p + 1, &end);
    if (level < 0) goto bad;
    p = end;
    if (*p == 'e') {
      extreme = 1;
      p++;
    }
    if (*p == '/' && p[1] == 'w') {
      window = small_number(p + 2, &end);
      if (window < 0) goto bad;
      p = end;
    }
  }
  if (!strcmp(name, "none") || !strcmp(name, "qc") || !strcmp(name, "perm")) {
    s->codec = name[0] == 'q' ? PG_CODEC_QC : name[0] == 'p' ? PG_CODEC_PERM : PG_CODEC_NONE;
    if (level >= 0) goto bad;
  } else if (!strcmp(name, "zstd")) {
    s->codec = PG_CODEC_ZSTD;
    s->level = (uint8_t)(level < 0 ? 19 : level);
    if (level > 255) goto bad;
  } else if (!strcmp(name, "brotli")) {
    s->codec = PG_CODEC_BROTLI;
    if (level > 255 || window > 255) goto bad;
    s->level = (uint8_t)(level < 0 ? 11 : level);
    s->window = (uint8_t)(window < 0 ? 22 : window);
  } else if (!strcmp(name, "lzma")) {
    s->codec = PG_CODEC_LZMA;
    if (level > 9) goto bad;
    s->level = (uint8_t)((level < 0 ? 9 : level) | (extreme ? 0x80 : 0));
  } else {
    goto bad;
  }
  if (s->codec != PG_CODEC_LZMA && extreme) goto bad;
  if (s->codec != PG_CODEC_BROTLI && window >= 0) goto bad;
  if (*p == '+') {
    if (strncmp(p, "+shuf", 5) != 0) goto bad;
    char *end;
    long k = small_number(p + 5, &end);
    if (k < 2 || k > 255) goto bad;
    s->transform = PG_TRANSFORM_SHUFFLE;
    s->stride = (uint8_t)k;
    p = end;
  }
  if (*p) goto bad;
  return pg_codec_spec_check(s, NULL, PG_NO_OFFSET, err);
bad:
  return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET,
                    "cannot parse codec '%s' (want none, zstd-L, brotli-Q[/wW], lzma-P[e], "
                    "optionally +shufK; or qc)",
                    text);
}

/* Both directions walk the interleaved side sequentially, k bytes per step, and the planes as k
 * sequential streams (plane p starts at p*(n/k) + min(p, n%k)). */
void pg_shuffle(const uint8_t *in, size_t n, unsigned k, uint8_t *out) {
  if (k < 2) {
    memcpy(out, in, n);
    return;
  }
  const size_t full = n / k, rem = n % k;
  if (k == 2) {
    uint8_t *p0 = out, *p1 = out + full + rem;
    for (size_t j = 0; j < full; j++) {
      p0[j] = in[2 * j];
      p1[j] = in[2 * j + 1];
    }
    if (rem) p0[full] = in[2 * full];
    return;
  }
  size_t start[256];
  for (unsigned p = 0; p < k; p++) start[p] = p * full + (p < rem ? p : rem);
  for (size_t j = 0; j < full; j++)
    for (unsigned p = 0; p < k; p++) out[start[p] + j] = in[j * k + p];
  for (unsigned p = 0; p < rem; p++) out[start[p] + full] = in[full * k + p];
}

void pg_unshuffle(const uint8_t *in, size_t n, unsigned k, uint8_t *out) {
  if (k < 2) {
    memcpy(out, in, n);
    return;
  }
  const size_t full = n / k, rem = n % k;
  if (k == 2) {
    const uint8_t *p0 = in, *p1 = in + full + rem;
    for (size_t j = 0; j < full; j++) {
      out[2 * j] = p0[j];
      out[2 * j + 1] = p1[j];
    }
    if (rem) out[2 * full] = p0[full];
    return;
  }
  size_t start[256];
  for (unsigned p = 0; p < k; p++) start[p] = p * full + (p < rem ? p : rem);
  for (size_t j = 0; j < full; j++)
    for (unsigned p = 0; p < k; p++) out[j * k + p] = in[start[p] + j];
  for (unsigned p = 0; p < rem; p++) out[full * k + p] = in[start[p] + full];
}

/* liblzma reports a bare number; name it, with what it means for a decoder here. */
static const char *lzma_ret_text(lzma_ret r) {
  switch (r) {
  case LZMA_OK: return "no error (LZMA_OK)";
  case LZMA_STREAM_END: return "end of stream (LZMA_STREAM_END)";
  case LZMA_NO_CHECK: return "stream has no integrity check (LZMA_NO_CHECK)";
  case LZMA_UNSUPPORTED_CHECK: return "unsupported integrity check (LZMA_UNSUPPORTED_CHECK)";
  case LZMA_GET_CHECK: return "integrity check type available (LZMA_GET_CHECK)";
  case LZMA_MEM_ERROR: return "cannot allocate memory (LZMA_MEM_ERROR)";
  case LZMA_MEMLIMIT_ERROR: return "needs more than the 1 GiB memory limit (LZMA_MEMLIMIT_ERROR)";
  case LZMA_FORMAT_ERROR: return "not an .xz stream (LZMA_FORMAT_ERROR)";
  case LZMA_OPTIONS_ERROR: return "unsupported options (LZMA_OPTIONS_ERROR)";
  case LZMA_DATA_ERROR: return "corrupt data (LZMA_DATA_ERROR)";
  case LZMA_BUF_ERROR: return "stream ends early or output full (LZMA_BUF_ERROR)";
  case LZMA_PROG_ERROR: return "invalid arguments (LZMA_PROG_ERROR)";
  default: return "unknown liblzma error";
  }
}

int pg_codec_compress(uint8_t codec, uint8_t level, uint8_t window, const uint8_t *in, size_t n,
                      uint8_t **out, size_t *out_len, pg_err *err) {
  *out = NULL;
  *out_len = 0;
  uint8_t *buf = NULL;
  size_t cap = 0, got = 0;
  switch (codec) {
  case PG_CODEC_NONE:
    buf = malloc(n ? n : 1);
    if (!buf) break;
    if (n) memcpy(buf, in, n);
    got = n;
    break;
  case PG_CODEC_ZSTD: {
    cap = ZSTD_compressBound(n);
    buf = malloc(cap ? cap : 1);
    if (!buf) break;
    ZSTD_CCtx *cx = ZSTD_createCCtx();
    if (!cx) {
      free(buf);
      buf = NULL;
      break;
    }
    ZSTD_CCtx_setParameter(cx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cx, ZSTD_c_checksumFlag, 0);
    ZSTD_CCtx_setParameter(cx, ZSTD_c_contentSizeFlag, 1);
    size_t r = ZSTD_compress2(cx, buf, cap, in, n);
    ZSTD_freeCCtx(cx);
    if (ZSTD_isError(r)) {
      free(buf);
      return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET, "zstd: %s", ZSTD_getErrorName(r));
    }
    got = r;
    break;
  }
  case PG_CODEC_BROTLI: {
    cap = BrotliEncoderMaxCompressedSize(n);
    if (cap == 0) cap = n + 1024; /* too large for the bound: try anyway */
    buf = malloc(cap);
    if (!buf) break;
    got = cap;
    if (!BrotliEncoderCompress(level, window, BROTLI_MODE_GENERIC, n, in, &got, buf)) {
      free(buf);
      return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET, "brotli compression failed");
    }
    break;
  }
  case PG_CODEC_LZMA: {
    cap = lzma_stream_buffer_bound(n);
    buf = malloc(cap ? cap : 1);
    if (!buf) break;
    uint32_t preset = (uint32_t)(level & 0x7f) | ((level & 0x80) ? LZMA_PRESET_EXTREME : 0);
    size_t pos = 0;
    lzma_ret r = lzma_easy_buffer_encode(preset, LZMA_CHECK_NONE, NULL, in, n, buf, &pos, cap);
    if (r != LZMA_OK) {
      free(buf);
      return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET, "lzma: compression failed: %s",
                        lzma_ret_text(r));
    }
    got = pos;
    break;
  }
  case PG_CODEC_QC: return pg_qc_encode(in, n, NULL, 0, out, out_len, err);
  case PG_CODEC_PERM: return pg_perm_encode(in, n, NULL, 0, out, out_len, err);
  default:
    return pg_err_set(err, PG_E_CODEC, NULL, PG_NO_OFFSET, "unknown codec %u", codec);
  }
  if (!buf) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate for codec");
  *out = buf;
  *out_len = got;
  return PG_OK;
}

int pg_codec_decompress(uint8_t codec, const uint8_t *in, size_t n, uint8_t *out, size_t raw_len,
                        const char *file, uint64_t off, pg_err *err) {
  switch (codec) {
  case PG_CODEC_NONE:
    PG_FAIL_IF(n != raw_len, err, PG_E_SIZE_MISMATCH, file, off,
               "stored size %zu differs from raw size %zu with codec none", n, raw_len);
    if (n) memcpy(out, in, n);
    return PG_OK;
  case PG_CODEC_ZSTD: {
    unsigned long long fs = ZSTD_getFrameContentSize(in, n);
    PG_FAIL_IF(fs == ZSTD_CONTENTSIZE_ERROR, err, PG_E_DECOMPRESS, file, off,
               "zstd: not a zstd frame");
    PG_FAIL_IF(fs != ZSTD_CONTENTSIZE_UNKNOWN && fs != raw_len, err, PG_E_DECOMPRESS, file, off,
               "zstd: frame holds %llu bytes, section declares %zu", fs, raw_len);
    size_t r = ZSTD_decompress(out, raw_len, in, n);
    PG_FAIL_IF(ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation, err, PG_E_NOMEM, file, off,
               "zstd: out of memory for the decoder");
    PG_FAIL_IF(ZSTD_isError(r), err, PG_E_DECOMPRESS, file, off, "zstd: %s",
               ZSTD_getErrorName(r));
    PG_FAIL_IF(r != raw_len, err, PG_E_DECOMPRESS, file, off,
               "zstd: produced %zu bytes, section declares %zu", r, raw_len);
    return PG_OK;
  }
  case PG_CODEC_BROTLI: {
    BrotliDecoderState *st = BrotliDecoderCreateInstance(NULL, NULL, NULL);
    if (!st) return pg_err_set(err, PG_E_NOMEM, file, off, "brotli: cannot allocate a decoder");
    size_t avail_in = n, avail_out = raw_len;
    const uint8_t *next_in = in;
    uint8_t *next_out = out;
    BrotliDecoderResult r =
        BrotliDecoderDecompressStream(st, &avail_in, &next_in, &avail_out, &next_out, NULL);
    int extra = 0;
    if (r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) {
      /* more data than declared: probe one byte to report it */
      uint8_t probe;
      uint8_t *pp = &probe;
      size_t one = 1;
      BrotliDecoderDecompressStream(st, &avail_in, &next_in, &one, &pp, NULL);
      extra = one == 0;
    }
    const BrotliDecoderErrorCode code = BrotliDecoderGetErrorCode(st);
    const char *why = BrotliDecoderErrorString(code);
    BrotliDecoderDestroyInstance(st);
    PG_FAIL_IF(code <= BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES &&
                   code >= BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES,
               err, PG_E_NOMEM, file, off, "brotli: out of memory for the decoder");
    PG_FAIL_IF(extra || r == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT, err, PG_E_DECOMPRESS,
               file, off, "brotli: stream holds more than the declared %zu bytes", raw_len);
    PG_FAIL_IF(r == BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT, err, PG_E_DECOMPRESS, file, off,
               "brotli: stream ends early");
    PG_FAIL_IF(r != BROTLI_DECODER_RESULT_SUCCESS, err, PG_E_DECOMPRESS, file, off, "brotli: %s",
               why);
    PG_FAIL_IF(avail_out != 0, err, PG_E_DECOMPRESS, file, off,
               "brotli: produced %zu bytes, section declares %zu", raw_len - avail_out, raw_len);
    PG_FAIL_IF(avail_in != 0, err, PG_E_DECOMPRESS, file, off,
               "brotli: %zu bytes after the end of the stream", avail_in);
    return PG_OK;
  }
  case PG_CODEC_LZMA: {
    /* The stream names its own dictionary size, which the decoder allocates: bounded here
     * (spec/format.md §2) so that a few header bytes cannot ask for a gigabyte. */
    uint64_t memlimit = PG_LZMA_MEMLIMIT;
    size_t in_pos = 0, out_pos = 0;
    lzma_ret r = lzma_stream_buffer_decode(&memlimit, LZMA_FAIL_FAST, NULL, in, &in_pos, n, out,
                                           &out_pos, raw_len);
    PG_FAIL_IF(r == LZMA_MEMLIMIT_ERROR, err, PG_E_LIMIT, file, off,
               "lzma: the stream needs %llu bytes of decoder memory, limit %llu",
               (unsigned long long)memlimit, (unsigned long long)PG_LZMA_MEMLIMIT);
    PG_FAIL_IF(r == LZMA_MEM_ERROR, err, PG_E_NOMEM, file, off,
               "lzma: out of memory for the decoder");
    PG_FAIL_IF(r == LZMA_BUF_ERROR && out_pos == raw_len, err, PG_E_DECOMPRESS, file, off,
               "lzma: stream holds more than the declared %zu bytes", raw_len);
    PG_FAIL_IF(r != LZMA_OK, err, PG_E_DECOMPRESS, file, off, "lzma: %s", lzma_ret_text(r));
    PG_FAIL_IF(out_pos != raw_len, err, PG_E_DECOMPRESS, file, off,
               "lzma: produced %zu bytes, section declares %zu", out_pos, raw_len);
    PG_FAIL_IF(in_pos != n, err, PG_E_DECOMPRESS, file, off,
               "lzma: %zu bytes after the end of the stream", n - in_pos);
    return PG_OK;
  }
  case PG_CODEC_QC: return pg_qc_decode(in, n, out, raw_len, file, off, err);
  case PG_CODEC_PERM: return pg_perm_decode(in, n, out, raw_len, file, off, err);
  default:
    return pg_err_set(err, PG_E_CODEC, file, off, "unknown codec %u", codec);
  }
}

int pg_codec_encode(const pg_codec_spec *s, const uint8_t *raw, size_t raw_len, uint8_t **out,
                    size_t *out_len, pg_err *err) {
  return pg_codec_encode_segs(s, raw, raw_len, NULL, 0, out, out_len, err);
}

int pg_codec_encode_segs(const pg_codec_spec *s, const uint8_t *raw, size_t raw_len,
                         const pg_qc_seg *segs, size_t nsegs, uint8_t **out, size_t *out_len,
                         pg_err *err) {
  PG_TRY(pg_codec_spec_check(s, NULL, PG_NO_OFFSET, err));
  if (s->codec == PG_CODEC_QC) return pg_qc_encode(raw, raw_len, segs, nsegs, out, out_len, err);
  if (s->codec == PG_CODEC_PERM)
    return pg_perm_encode(raw, raw_len, segs, nsegs, out, out_len, err);
  if (s->transform != PG_TRANSFORM_SHUFFLE)
    return pg_codec_compress(s->codec, s->level, s->window, raw, raw_len, out, out_len, err);
  uint8_t *tmp = malloc(raw_len ? raw_len : 1);
  if (!tmp) return pg_err_set(err, PG_E_NOMEM, NULL, PG_NO_OFFSET, "cannot allocate");
  pg_shuffle(raw, raw_len, s->stride, tmp);
  int rc = pg_codec_compress(s->codec, s->level, s->window, tmp, raw_len, out, out_len, err);
  free(tmp);
  return rc;
}

int pg_codec_decode(const pg_codec_spec *s, const uint8_t *stored, size_t stored_len, uint8_t *out,
                    size_t raw_len, const char *file, uint64_t off, pg_err *err) {
  PG_TRY(pg_codec_spec_check(s, file, off, err));
  if (s->transform != PG_TRANSFORM_SHUFFLE)
    return pg_codec_decompress(s->codec, stored, stored_len, out, raw_len, file, off, err);
  uint8_t *tmp = malloc(raw_len ? raw_len : 1);
  if (!tmp) return pg_err_set(err, PG_E_NOMEM, file, off, "cannot allocate %zu bytes", raw_len);
  int rc = pg_codec_decompress(s->codec, stored, stored_len, tmp, raw_len, file, off, err);
  if (rc == PG_OK) pg_unshuffle(tmp, raw_len, s->stride, out);
  free(tmp);
  return rc;
}
