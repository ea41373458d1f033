/* pg_encode.cc: the C API of pg_encode.h over SentencePieceProcessor (C++17). Every entry point
 * catches every exception: std::bad_alloc becomes PG_E_NOMEM, anything else PG_E_ENCODER. */
#include "pg_encode.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

#include "pg_io.h"
#include "pg_status.h"

struct pg_enc {
  sentencepiece::SentencePieceProcessor sp;
  std::string path;
  size_t vocab = 0;
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
};

namespace {

/* The largest model file we read (the challenge's are well under 1 MB). */
constexpr size_t kMaxModelBytes = size_t(1) << 30;

/* A library status as one line (pg_err_set also replaces any control characters). */
std::string status_text(const sentencepiece::util::Status &st) {
  const char *m = st.error_message();
  std::string s = (m && *m) ? m : "";
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r')) s.pop_back();
  /* The library reports a protobuf that does not parse by quoting its own source line. */
  if (s.find("ParseFromArray") != std::string::npos)
    s = "not a serialized ModelProto (protobuf parse failed)";
  if (s.empty()) s = "error";
  return "SentencePiece: " + s + " (status " + std::to_string(static_cast<int>(st.code())) + ")";
}

/* Map the exception being handled to a status; call only inside a catch block. */
int current_exception_to_err(pg_err *err, const char *file, const char *what_doing) {
  try {
    throw;
  } catch (const std::bad_alloc &) {
    return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "%s: out of memory", what_doing);
  } catch (const std::exception &e) {
    return pg_err_set(err, PG_E_ENCODER, file, PG_NO_OFFSET, "%s: C++ exception: %s",
                      what_doing, e.what());
  } catch (...) {
    return pg_err_set(err, PG_E_ENCODER, file, PG_NO_OFFSET, "%s: unknown C++ exception",
                      what_doing);
  }
}

/* Encode one text into v (cleared first). The document number goes into messages when
 * doc != SIZE_MAX. Never throws. */
int encode_into(const pg_enc *enc, const char *text, size_t len, size_t doc,
                std::vector<int> &v, pg_err *err) {
  const char *file = enc->path.c_str();
  char where[64] = "";
  if (doc != SIZE_MAX) snprintf(where, sizeof where, " (document %zu)", doc);
  if (len > 0 && !text)
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "NULL text of %zu bytes%s", len, where);
  if (len > static_cast<size_t>(INT32_MAX))
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET,
                      "text of %zu bytes%s: SentencePiece takes at most 2^31-1", len, where);
  size_t bad = 0;
  if (len > 0 && !pg_utf8_valid(reinterpret_cast<const uint8_t *>(text), len, &bad))
    return pg_err_set(err, PG_E_UTF8, file, PG_NO_OFFSET,
                      "invalid UTF-8 at text offset %zu%s", bad, where);
  try {
    v.clear();
    const sentencepiece::util::Status st =
        enc->sp.Encode(std::string_view(len ? text : "", len), &v);
    if (!st.ok())
      return pg_err_set(err, PG_E_ENCODER, file, PG_NO_OFFSET, "encode%s: %s", where,
                        status_text(st).c_str());
  } catch (...) {
    return current_exception_to_err(err, file, "encode");
  }
  for (size_t i = 0; i < v.size(); i++)
    if (v[i] < 0 || static_cast<size_t>(v[i]) >= enc->vocab)
      return pg_err_set(err, PG_E_ENCODER, file, PG_NO_OFFSET,
                        "encode%s: SentencePiece returned id %d outside the vocabulary", where,
                        v[i]);
  return PG_OK;
}

/* Copy ids out into a malloc'd int32_t array (at least one element, so never NULL). */
int32_t *copy_ids(const std::vector<int> &v) {
  int32_t *p = static_cast<int32_t *>(malloc((v.empty() ? 1 : v.size()) * sizeof(int32_t)));
  if (!p) return nullptr;
  for (size_t i = 0; i < v.size(); i++) p[i] = static_cast<int32_t>(v[i]);
  return p;
}

}  // namespace

extern "C" {

int pg_enc_available(void) { return 1; }

int pg_enc_open(pg_enc **out, const char *model_path, pg_err *err) {
  if (!out) return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_open: out is NULL");
  *out = nullptr;
  if (!model_path || !*model_path)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_open: no model path");
  /* Read the file ourselves: missing and unreadable files get their own statuses, and the
   * library only ever parses bytes. */
  uint8_t *bytes = nullptr;
  size_t nbytes = 0;
  int rc = pg_file_read_all(model_path, &bytes, &nbytes, kMaxModelBytes, err);
  if (rc != PG_OK) return rc;
  pg_enc *enc = nullptr;
  try {
    enc = new pg_enc;
    enc->path = model_path;
    const sentencepiece::util::Status st = enc->sp.LoadFromSerializedProto(
        std::string_view(reinterpret_cast<const char *>(bytes), nbytes));
    free(bytes);
    bytes = nullptr;
    if (!st.ok()) {
      rc = pg_err_set(err, PG_E_ENCODER, model_path, PG_NO_OFFSET,
                      "cannot load the SentencePiece model: %s", status_text(st).c_str());
      delete enc;
      return rc;
    }
    const int n = enc->sp.GetPieceSize();
    if (n <= 0) {
      delete enc;
      return pg_err_set(err, PG_E_ENCODER, model_path, PG_NO_OFFSET,
                        "SentencePiece model has no pieces");
    }
    enc->vocab = static_cast<size_t>(n);
    /* The library answers -1 for a special the model does not define; keep only real ids. */
    auto special = [n](int id) { return id >= 0 && id < n ? static_cast<int32_t>(id) : -1; };
    enc->bos = special(enc->sp.bos_id());
    enc->eos = special(enc->sp.eos_id());
    enc->unk = special(enc->sp.unk_id());
    enc->pad = special(enc->sp.pad_id());
  } catch (...) {
    free(bytes);
    delete enc;
    return current_exception_to_err(err, model_path, "loading the SentencePiece model");
  }
  *out = enc;
  return PG_OK;
}

void pg_enc_free(pg_enc *enc) { delete enc; }

size_t pg_enc_vocab_size(const pg_enc *enc) { return enc ? enc->vocab : 0; }

int32_t pg_enc_bos_id(const pg_enc *enc) { return enc ? enc->bos : -1; }
int32_t pg_enc_eos_id(const pg_enc *enc) { return enc ? enc->eos : -1; }
int32_t pg_enc_unk_id(const pg_enc *enc) { return enc ? enc->unk : -1; }
int32_t pg_enc_pad_id(const pg_enc *enc) { return enc ? enc->pad : -1; }

const char *pg_enc_model_path(const pg_enc *enc) { return enc ? enc->path.c_str() : ""; }

int pg_enc_encode(const pg_enc *enc, const char *text, size_t len, int32_t **ids, size_t *n,
                  pg_err *err) {
  if (!ids || !n || !enc)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_encode: NULL argument");
  *ids = nullptr;
  *n = 0;
  try {
    std::vector<int> v;
    int rc = encode_into(enc, text, len, SIZE_MAX, v, err);
    if (rc != PG_OK) return rc;
    int32_t *p = copy_ids(v);
    if (!p)
      return pg_err_set(err, PG_E_NOMEM, enc->path.c_str(), PG_NO_OFFSET,
                        "encode: cannot allocate %zu ids", v.size());
    *ids = p;
    *n = v.size();
    return PG_OK;
  } catch (...) {
    return current_exception_to_err(err, enc->path.c_str(), "encode");
  }
}

int pg_enc_decode(const pg_enc *enc, const int32_t *ids, size_t n, char **text, size_t *len,
                  pg_err *err) {
  if (!enc || !text || !len || (n > 0 && !ids))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_decode: NULL argument");
  *text = nullptr;
  *len = 0;
  const char *file = enc->path.c_str();
  for (size_t i = 0; i < n; i++)
    if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= enc->vocab)
      return pg_err_set(err, PG_E_TOKEN_RANGE, file, PG_NO_OFFSET,
                        "decode: id %ld at index %zu is outside 0..%zu", static_cast<long>(ids[i]),
                        i, enc->vocab - 1);
  try {
    std::vector<int> v(ids, ids + n);
    std::string s;
    const sentencepiece::util::Status st = enc->sp.Decode(v, &s);
    if (!st.ok())
      return pg_err_set(err, PG_E_ENCODER, file, PG_NO_OFFSET, "decode: %s",
                        status_text(st).c_str());
    char *p = static_cast<char *>(malloc(s.size() + 1));
    if (!p)
      return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "decode: cannot allocate %zu bytes",
                        s.size() + 1);
    memcpy(p, s.data(), s.size());
    p[s.size()] = '\0';
    *text = p;
    *len = s.size();
    return PG_OK;
  } catch (...) {
    return current_exception_to_err(err, file, "decode");
  }
}

int pg_enc_encode_many(const pg_enc *enc, const pg_enc_doc *docs, size_t n_docs, int threads,
                       int32_t **ids, size_t *n_ids, size_t **offsets, pg_err *err) {
  if (!enc || !ids || !n_ids || !offsets || (n_docs > 0 && !docs))
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_encode_many: NULL argument");
  *ids = nullptr;
  *n_ids = 0;
  *offsets = nullptr;
  if (threads < 0)
    return pg_err_set(err, PG_E_ARG, NULL, PG_NO_OFFSET, "pg_enc_encode_many: %d threads",
                      threads);
  const char *file = enc->path.c_str();
  if (n_docs >= std::numeric_limits<size_t>::max() / sizeof(size_t) - 1)
    return pg_err_set(err, PG_E_ARG, file, PG_NO_OFFSET, "encode: too many documents");
  size_t want = static_cast<size_t>(threads);
  if (want == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    want = c > 0 ? static_cast<size_t>(c) : 1;
  }
  want = std::max<size_t>(1, std::min(want, n_docs));

  try {
    std::vector<std::vector<int>> out(n_docs);
    std::atomic<size_t> next(0);
    /* The lowest failing document so far: documents above it are skipped, those below still
     * run, so the error reported is that of the lowest failing document at any thread count. */
    std::atomic<size_t> first_bad(SIZE_MAX);
    std::mutex mu;
    pg_err bad_err;
    pg_err_clear(&bad_err);

    auto work = [&]() noexcept {
      pg_err local;
      for (;;) {
        const size_t i = next.fetch_add(1, std::memory_order_relaxed);
        if (i >= n_docs || i > first_bad.load(std::memory_order_relaxed)) return;
        pg_err_clear(&local);
        int rc;
        try {
          rc = encode_into(enc, docs[i].text, docs[i].len, i, out[i], &local);
        } catch (...) {
          rc = current_exception_to_err(&local, file, "encode");
        }
        if (rc != PG_OK) {
          std::lock_guard<std::mutex> lock(mu);
          if (i < first_bad.load(std::memory_order_relaxed)) {
            first_bad.store(i, std::memory_order_relaxed);
            bad_err = local;
            bad_err.status = rc;
          }
        } else if (out[i].capacity() > 2 * out[i].size() + 64) {
          out[i].shrink_to_fit();
        }
      }
    };

    std::vector<std::thread> pool;
    try {
      for (size_t t = 1; t < want; t++) pool.emplace_back(work);
    } catch (const std::system_error &) {
      /* Fewer threads than asked for: the ones running (and this one) do all the work. */
    } catch (const std::bad_alloc &) {
    }
    work();
    for (std::thread &t : pool) t.join();

    if (first_bad.load() != SIZE_MAX) {
      if (err) *err = bad_err;
      return bad_err.status;
    }

    size_t *offs = static_cast<size_t *>(malloc((n_docs + 1) * sizeof(size_t)));
    if (!offs)
      return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "encode: cannot allocate offsets");
    offs[0] = 0;
    size_t total = 0;
    for (size_t i = 0; i < n_docs; i++) {
      total += out[i].size();
      offs[i + 1] = total;
    }
    int32_t *all = static_cast<int32_t *>(malloc((total ? total : 1) * sizeof(int32_t)));
    if (!all) {
      free(offs);
      return pg_err_set(err, PG_E_NOMEM, file, PG_NO_OFFSET, "encode: cannot allocate %zu ids",
                        total);
    }
    for (size_t i = 0; i < n_docs; i++) {
      int32_t *dst = all + offs[i];
      const std::vector<int> &v = out[i];
      for (size_t k = 0; k < v.size(); k++) dst[k] = static_cast<int32_t>(v[k]);
      std::vector<int>().swap(out[i]);
    }
    *ids = all;
    *n_ids = total;
    *offsets = offs;
    return PG_OK;
  } catch (...) {
    return current_exception_to_err(err, file, "encode");
  }
}

}  // extern "C"
