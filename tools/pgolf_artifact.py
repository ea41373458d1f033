#!/usr/bin/env python3
"""pgolf_artifact.py: read a pgolf artifact (.pgz, spec/format.md) from Python.

usage: pgolf_artifact.py ARTIFACT [--list | --tensor NAME | --npz OUT]

As a module (numpy required; torch only for state_dict(torch=True)):

    from pgolf_artifact import Artifact
    a = Artifact("model.pgz")          # a path, or the file's bytes
    a.meta                             # dict: key -> int, float, str, bool or list
    a.arch                             # the parsed "arch.json" metadata, or None
    a.tokenizer                        # the SentencePiece .model bytes, or None
    a.code                             # dict: relative path -> bytes
    a.tensor("blocks.0.mlp.fc.weight") # numpy float32, dequantized as pgolf's C reader does
    model.load_state_dict(a.state_dict())

The checks are those a reader MUST make (spec/format.md sections 1-8): magic, versions, header
and table checksums, coverage of the file and of the DATA sections, every offset and size
bounds-checked before use, the decoded-size limits of section 7, every decoder capped at the
section's raw_size. Dequantization is bit for bit the C reference (format/pg_qtype.c): fp16
scales widened by bits, (float)q * scale in fp32, LQER summed in double over ascending k,
rounded to fp32 once and then added. Checksums use the `xxhash` module when installed and a
pure-Python XXH64 otherwise (slow on large files). Codecs: zstd needs `zstandard`, brotli needs
`brotli`, lzma is the standard library's, qc (codec 4) and perm (codec 6) are decoded here
(slowly); codec 5 (withdrawn) is refused.

Hostile files: nothing is sized by a count or a dimension alone. Memory follows the decoded
sizes that section 7 of the spec bounds (max(64 MiB, 32 x the file) in all): the decoders write
at most raw_size bytes (brotli needs the module's output_buffer_limit, brotli 1.2 or later: an
older one decodes a section whole before its size can be checked), qc keeps 4 bytes per value
of its longest row as the C decoder does, XXH64 reads 8 KiB at a time, and a tensor's arrays
are those of its parts (a tensor of 2^40 rows and no columns allocates nothing). Work is
linear in the file and those sizes (the DATA tiling check is one pass over the sorted parts),
but qc and perm run value by value in Python, about 3 us a value: the 64 MiB that even a tiny
file may declare take minutes.

Every fault raises ArtifactError with one line, "FILE: offset N: what"; the command line prints
that line and exits 2.
"""
from array import array
import json
import os
import struct
import sys
import tempfile
import zipfile

import numpy as np

MAGIC = b"\x89PGZ\r\n\x1a\n"
KINDS = {1: "meta", 2: "tensors", 3: "data", 4: "tokenizer", 5: "code"}
QTYPES = {1: ("int5", 5), 2: ("int6", 6), 3: ("int7", 7), 4: ("int8", 8),
          16: ("f16", 16), 17: ("bf16", 16), 18: ("f32", 32)}
PARTS = ("values", "scales", "lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scales", "row_perm")
WELL_KNOWN = {"arch.json": 3, "arch.name": 3, "budget.bytes": 1, "pack.data_sections": 5,
              "pgolf.writer": 3, "provenance.calib_source": 3, "provenance.calib_tokens": 1,
              "provenance.calib_xxh64": 3, "provenance.protocol": 3, "provenance.record": 3,
              "provenance.seed": 1, "quant.method": 3, "quant.recipe": 3, "tokenizer.name": 3,
              "tokenizer.vocab_size": 1}
MAX_SECTIONS, MAX_SECTION_RAW = 4096, 1 << 30
MAX_META_RAW, MAX_META_ENTRIES = 16 << 20, 65536
MAX_DIR_RAW, MAX_TENSORS = 64 << 20, 65536
MAX_TOKENIZER_RAW, MAX_ELEMENTS, MAX_LQER_RANK = 64 << 20, 1 << 40, 64
LZMA_MEMLIMIT, LQER_GROUP = 128 << 20, 64
KEY_CHARS = set(b"abcdefghijklmnopqrstuvwxyz0123456789_.-")


class ArtifactError(Exception):
    """One line naming the file, the offset of the field at fault and the fault."""


# ---- XXH64 (seed 0): the xxhash module when present, else this pure-Python one ----
_M = (1 << 64) - 1
_P1, _P2, _P3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
_P4, _P5 = 9650029242287828579, 2870177450012600261


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc, lane):
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def xxh64_py(data):
    data = bytes(data)
    n, p = len(data), 0
    if n >= 32:
        v = [(_P1 + _P2) & _M, _P2, 0, (-_P1) & _M]
        stripes = n // 32
        # 8 KiB of lanes at a time: unpacking them all at once would hold 5 bytes of Python
        # ints per input byte (5 GiB for a 1 GiB section)
        for c in range(0, stripes, 256):
            k = min(256, stripes - c)
            lanes = struct.unpack_from("<%dQ" % (4 * k), data, 32 * c)
            for s in range(0, 4 * k, 4):
                v[0] = _round(v[0], lanes[s])
                v[1] = _round(v[1], lanes[s + 1])
                v[2] = _round(v[2], lanes[s + 2])
                v[3] = _round(v[3], lanes[s + 3])
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M
        for x in v:
            h = (((h ^ _round(0, x)) * _P1) + _P4) & _M
        p = 32 * stripes
    else:
        h = _P5
    h = (h + n) & _M
    while p + 8 <= n:
        h ^= _round(0, struct.unpack_from("<Q", data, p)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _M
        p += 8
    if p + 4 <= n:
        h ^= (struct.unpack_from("<I", data, p)[0] * _P1) & _M
        h = (_rotl(h, 23) * _P2 + _P3) & _M
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M
        h = (_rotl(h, 11) * _P1) & _M
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    return h ^ (h >> 32)


try:
    import xxhash as _xxhash

    def xxh64(data):
        return _xxhash.xxh64_intdigest(bytes(data))
except ImportError:  # the pure-Python one
    xxh64 = xxh64_py


# ---- fp16 / bf16 widening by bits (format/pg_half.c): NaN payloads kept as they are ----
def f16_to_f32(h):
    h = np.asarray(h, dtype=np.uint16).astype(np.uint32)
    sign, exp, man = (h & 0x8000) << 16, (h >> 10) & 0x1F, h & 0x3FF
    bits = np.where(exp == 31, sign | 0x7F800000 | (man << 13),
                    sign | ((exp + 112) << 23) | (man << 13)).astype(np.uint32)
    out = bits.view(np.float32).copy()
    sub = exp == 0  # zero and subnormals: man * 2^-24, exact in fp32
    v = man[sub].astype(np.float32) * np.float32(5.9604644775390625e-08)
    out[sub] = np.where(sign[sub] != 0, -v, v)
    return out


def bf16_to_f32(h):
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def unpack_bits(buf, n, bits):
    """n signed b-bit values, offset binary, LSB first; None when padding bits are not zero."""
    stream = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")
    if stream[n * bits:].any():
        return None
    u = np.packbits(stream[:n * bits].reshape(n, bits), axis=1, bitorder="little")[:, 0]
    return (u.astype(np.int16) - (1 << (bits - 1))).astype(np.int8)


def unshuffle(buf, k):
    n = len(buf)
    src, out = np.frombuffer(buf, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    full, rem, start = n // k, n % k, 0
    for p in range(k):
        m = full + (p < rem)
        out[p::k] = src[start:start + m]
        start += m
    return out.tobytes()


def _need(module, codec):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError("%s sections need the Python module '%s' (pip install %s)"
                          % (codec, module, module)) from None


def _qc_weight(c):
    return c if c < 16 else (16 + (c - 16) % 16) << ((c - 16) // 16)


def _qc_normalize(codes):
    """Codes (symbol -> 1..255) -> frequencies adding up to 4096 (spec/format.md §12)."""
    w = {s: _qc_weight(c) for s, c in codes.items()}
    W = sum(w.values())
    f = [0] * 256
    for s in codes:
        f[s] = max(1, w[s] * 4096 // W)
    total = sum(f)
    while total != 4096:
        big = max(range(256), key=lambda s: (f[s], -s))
        if total < 4096:
            f[big] += 4096 - total
            total = 4096
        else:
            t = min(total - 4096, f[big] - 1)
            f[big] -= t
            total -= t
    return f


def _qc_varint(d, p):
    r = 0
    for k in range(10):
        if p >= len(d):
            raise ValueError("qc: truncated varint")
        b = d[p]
        p += 1
        if k == 9 and b > 1:
            raise ValueError("qc: varint overflows 64 bits")
        r |= (b & 0x7F) << (7 * k)
        if not b & 0x80:
            if k and not b:
                raise ValueError("qc: varint not minimal")
            return r, p
    raise ValueError("qc: varint too long")


def qc_decode(d, raw_size):
    """Codec 4 (spec/format.md §12), decoded value by value: slow, for checking."""
    d = bytes(d)
    if len(d) < 9 or d[0] not in (1, 2):
        raise ValueError("qc: truncated stream or unknown format")
    fmt = d[0]  # 2: pred with a weight per context
    nb = list(d[1:4])
    rs, cs, smode, init = d[4], d[5], d[6] & 3, struct.unpack_from("<H", d, 7)[0]
    pred = d[6] >> 2
    if (min(nb) < 1 or max(nb) > 8 or nb[0] * nb[1] * nb[2] > 64 or not 1 <= rs <= 8
            or not 1 <= cs <= 8 or pred > 1 or d[6] > 7
            or (smode == 0 and (nb[2] != 1 or pred)) or init > 32768 or (fmt == 2 and not pred)):
        raise ValueError("qc: bad header")
    p, edges = 9, []
    for k in range(3):
        e = []
        for _ in range(nb[k] - 1):
            if p + 2 > len(d):
                raise ValueError("qc: stream ends in the bucket edges")
            v = struct.unpack_from("<H", d, p)[0]
            p += 2
            if v > 2048 or (e and v < e[-1]):
                raise ValueError("qc: bad bucket edge")
            e.append(v)
        edges.append(e)
    nseg, p = _qc_varint(d, p)
    if nseg > raw_size or nseg > (len(d) - p) // 2:
        raise ValueError("qc: %d segments for %d bytes" % (nseg, raw_size))
    segs, total = [], 0
    for _ in range(nseg):
        ln, p = _qc_varint(d, p)
        row, p = _qc_varint(d, p)
        if ln < 1 or ln > raw_size - total or row < 1 or row > ln:
            raise ValueError("qc: bad segment")
        segs.append((ln, row))
        total += ln
    if total != raw_size:
        raise ValueError("qc: segments hold %d bytes, section declares %d" % (total, raw_size))
    nctx = nb[0] * nb[1] * nb[2]
    tabs = []
    for c in range(nctx):
        k, p = _qc_varint(d, p)
        if k > 256:
            raise ValueError("qc: bad table length")
        if not k:
            tabs.append(None)
            continue
        if len(d) - p < 1 + k or d[p] + k > 256 or not d[p + 1] or not d[p + k]:
            raise ValueError("qc: bad table")
        lo = d[p]
        codes = {lo + i: d[p + 1 + i] for i in range(k) if d[p + 1 + i]}
        p += 1 + k
        f = _qc_normalize(codes)
        slot = bytearray(4096)
        start, st = [0] * 256, 0
        for s in range(lo, lo + k):
            slot[st:st + f[s]] = bytes([s]) * f[s]
            start[s] = st
            st += f[s]
        tabs.append((slot, f, start))
    wts = [16] * nctx
    if fmt == 2:
        if len(d) - p < nctx or max(d[p:p + nctx]) > 16:
            raise ValueError("qc: bad context weights")
        wts = list(d[p:p + nctx])
        p += nctx
    if len(d) - p < 8:
        raise ValueError("qc: stream ends before the coder states")
    x = list(struct.unpack_from("<2I", d, p))
    p += 8
    L = 1 << 23
    if not all(L <= v < L << 8 for v in x):
        raise ValueError("qc: bad coder states")

    def bucket(e, v):
        b = 0
        while b < len(e) and v >= e[b]:
            b += 1
        return b

    out, i = bytearray(raw_size), 0
    for ln, row in segs:
        # the column averages stay below 2^16 (a <= 128, s <= 255): 2 bytes each, as the
        # C decoder's 4 bytes per value of the longest row (spec/format.md section 7), not a
        # list's 8
        colm, cols = array("H", [init]) * row, array("H", [32768]) * row
        rm, rsg, j = init, 32768, 0
        rm1, rsg1 = rm, rsg  # the row averages before the previous value
        sp = 32768  # the previous value of the row (smode 3)
        for _ in range(ln):
            sg = rsg1 if smode == 1 else cols[j] if smode == 2 else sp if smode == 3 else 0
            sv = sg >> 5
            c = ((bucket(edges[0], rm1 >> 4) * nb[1] + bucket(edges[1], colm[j] >> 4)) * nb[2]
                 + bucket(edges[2], sv))
            if tabs[c] is None:
                raise ValueError("qc: value %d falls in a context without a table" % i)
            slot, f, start = tabs[c]
            xs = x[i & 1]
            t = slot[xs & 4095]
            xs = f[t] * (xs >> 12) + (xs & 4095) - start[t]
            while xs < L:
                if p >= len(d):
                    raise ValueError("qc: the stream ends at value %d" % i)
                xs = (xs << 8) | d[p]
                p += 1
            x[i & 1] = xs
            p1 = (sg + 128) >> 8
            pw = (wts[c] * sg + (16 - wts[c]) * 32768 + 2048) >> 12
            s = (t + pw + 128) & 0xFF if pred else t
            out[i] = s ^ 0x80
            if fmt == 2:  # the averages follow the residual against the unweighted prediction
                t = (s - p1 + 128) & 0xFF
            a = t - 128 if t >= 128 else 128 - t
            rm1, rsg1 = rm, rsg
            rm = (rm * ((1 << rs) - 1) + a * 256) >> rs
            colm[j] = (colm[j] * ((1 << cs) - 1) + a * 256) >> cs
            rsg = (rsg * ((1 << rs) - 1) + s * 256) >> rs
            cols[j] = (cols[j] * ((1 << cs) - 1) + s * 256) >> cs
            sp = s * 256
            i += 1
            j += 1
            if j == row:
                j, rm, rsg = 0, init, 32768
                rm1, rsg1, sp = rm, rsg, 32768
    if x != [L, L]:
        raise ValueError("qc: coder states do not end where the encoder began")
    if p != len(d):
        raise ValueError("qc: %d bytes after the end of the stream" % (len(d) - p))
    return bytes(out)


def perm_decode(d, raw_size):
    """Codec 6, perm (spec/format.md section 13): range-coded Lehmer digits."""
    if raw_size % 2:
        raise ValueError("perm: a section of %d bytes is not u16 entries" % raw_size)
    count, p = _qc_varint(d, 0)
    left = raw_size // 2
    if count > left or (raw_size and not count):
        raise ValueError("perm: %d permutations for %d bytes" % (count, raw_size))
    lens = []
    for s in range(count):
        n, p = _qc_varint(d, p)
        if n == 0 or n > 65536 or n > left:
            raise ValueError("perm: permutation %d of %d entries does not fit" % (s, n))
        left -= n
        lens.append(n)
    if left:
        raise ValueError("perm: permutations hold %d bytes, section declares %d"
                         % (raw_size - 2 * left, raw_size))
    out = bytearray()
    if count:
        if len(d) - p < 4:
            raise ValueError("perm: truncated digits")
        rng, code = 0xFFFFFFFF, int.from_bytes(bytes(d[p:p + 4]), "big")
        p += 4
        if code == 0xFFFFFFFF:
            raise ValueError("perm: the digits' first word is not below the range")
        for s, n in enumerate(lens):
            tree = [0] + [k & -k for k in range(1, n + 1)]  # Fenwick counts of the unused values
            top = 1 << (n.bit_length() - 1)
            perm = []
            for i in range(n):
                m, dg = n - i, 0
                if m >= 2:
                    r = rng // m
                    dg = min(code // r, m - 1)
                    code -= r * dg
                    rng = r if dg + 1 < m else rng - r * dg
                    while rng < 1 << 24:
                        if p >= len(d):
                            raise ValueError("perm: digits of permutation %d truncated" % s)
                        rng, code = rng << 8, (code << 8) | d[p]
                        p += 1
                pos, step, k = 0, top, dg  # the dg-th unused value: O(log n), not list.pop's O(n)
                while step:
                    if pos + step <= n and tree[pos + step] <= k:
                        pos += step
                        k -= tree[pos]
                    step >>= 1
                perm.append(pos)
                j = pos + 1
                while j <= n:
                    tree[j] -= 1
                    j += j & -j
            out += np.array(perm, dtype="<u2").tobytes()
    if p != len(d):
        raise ValueError("perm: %d bytes after the end of the stream" % (len(d) - p))
    return bytes(out)


def decompress(codec, stored, raw_size):
    """Decode into at most raw_size bytes (one more to see a longer stream); returns bytes or
    raises ValueError with the reason."""
    if codec == 0:
        if len(stored) != raw_size:
            raise ValueError("stored size %d differs from raw size %d with codec none"
                             % (len(stored), raw_size))
        return bytes(stored)
    if codec == 1:
        zstd = _need("zstandard", "zstd")
        try:
            fs = zstd.frame_content_size(stored)
        except zstd.ZstdError:
            raise ValueError("zstd: not a zstd frame") from None
        if fs >= 0 and fs != raw_size:
            raise ValueError("zstd: frame holds %d bytes, section declares %d" % (fs, raw_size))
        # a reader across frames, as ZSTD_decompress; bytes after the last frame are an error
        # there, and one byte more than raw_size says the stream holds more
        chunks, got = [], 0
        try:
            r = zstd.ZstdDecompressor().stream_reader(stored, read_across_frames=True)
            while got <= raw_size:
                b = r.read(raw_size + 1 - got)
                if not b:
                    break
                chunks.append(b)
                got += len(b)
        except zstd.ZstdError as e:
            raise ValueError("zstd: %s" % e) from None
        if got > raw_size:
            raise ValueError("zstd: stream holds more than the declared %d bytes" % raw_size)
        out = b"".join(chunks)
    elif codec == 2:
        brotli = _need("brotli", "brotli")
        d = brotli.Decompressor()
        try:
            try:
                out = d.process(stored, output_buffer_limit=raw_size + 1)
            except TypeError:  # brotli before 1.2: no cap on the output
                out = d.process(stored)
        except brotli.error as e:
            raise ValueError("brotli: %s" % str(e).replace("brotli: ", "")) from None
        if len(out) > raw_size:
            raise ValueError("brotli: stream holds more than the declared %d bytes" % raw_size)
        if not d.is_finished():
            raise ValueError("brotli: stream ends early")
    elif codec == 3:
        import lzma
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=LZMA_MEMLIMIT)
        try:
            out = d.decompress(stored, max_length=raw_size + 1)
        except lzma.LZMAError as e:
            raise ValueError("lzma: %s (decoder memory limit %d)" % (e, LZMA_MEMLIMIT)) from None
        if len(out) > raw_size:
            raise ValueError("lzma: stream holds more than the declared %d bytes" % raw_size)
        if not d.eof:
            raise ValueError("lzma: stream ends early")
        if d.unused_data:
            raise ValueError("lzma: %d bytes after the end of the stream" % len(d.unused_data))
    elif codec == 4:
        out = qc_decode(stored, raw_size)
    elif codec == 6:
        out = perm_decode(stored, raw_size)
    else:
        raise ValueError("unknown codec %d" % codec)
    if len(out) != raw_size:
        raise ValueError("produced %d bytes, section declares %d" % (len(out), raw_size))
    return out


def _name_ok(b):
    if not 1 <= len(b) <= 255 or any(c < 0x20 or c == 0x7F for c in b):
        return False
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class Artifact:
    def __init__(self, source, name=None):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.data, self.name = bytes(source), name or "<bytes>"
        else:
            self.name = name or str(source)
            with open(source, "rb") as f:
                self.data = f.read()
        self._raw = {}
        self._table()
        self.meta = self._parse_meta()
        self.tensors = self._parse_dir()
        self.code = {}
        for i in self.code_secs:
            raw = self.section(i)
            if len(raw) < 2 or len(raw) - 2 < struct.unpack_from("<H", raw)[0]:
                self._fail(self.secs[i]["offset"],
                           "code section %d: its name runs past its end" % i)
            nl = struct.unpack_from("<H", raw)[0]
            nm = raw[2:2 + nl]
            if not _name_ok(nm) or nm[:1] == b"/" or b".." in nm.split(b"/"):
                self._fail(self.secs[i]["offset"], "code section %d: bad file name" % i)
            if nm.decode() in self.code:
                self._fail(self.secs[i]["offset"], "duplicate code file name '%s'" % nm.decode())
            self.code[nm.decode()] = raw[2 + nl:]

    def _fail(self, off, what):
        raise ArtifactError("%s: offset %d: %s" % (self.name, off, what))

    # ---- header and table (spec/format.md sections 1, 2, 7) ----
    def _table(self):
        d, n = self.data, len(self.data)
        if n < 8:
            self._fail(0, "file is %d bytes, shorter than the magic" % n)
        if d[:8] != MAGIC:
            self._fail(0, "not a pgolf artifact (wrong magic)")
        if n < 12:
            self._fail(n, "file is %d bytes, shorter than its versions" % n)
        cver, qver = struct.unpack_from("<HH", d, 8)
        if cver not in (1, 2):
            self._fail(8, "container version %d, this reader knows 1 and 2" % cver)
        if qver not in (1, 2):
            self._fail(10, "quantization layout version %d, this reader knows 1 and 2" % qver)
        self.cver, self.qver = cver, qver
        entries = self._table_v1() if cver == 1 else self._table_v2()
        self.secs, self.code_secs = [], []
        expect, total, kinds = self.head, 0, {}
        for i, (eo, kind, codec, level, window, transform, stride, off, ssz, rsz, rxx) in \
                enumerate(entries):
            ok = {0: level == 0 and window == 0, 1: 1 <= level <= 22 and window == 0,
                  2: level <= 11 and 10 <= window <= 24,
                  3: (level & 0x7F) <= 9 and not level & 0x70 and window == 0,
                  4: level == 0 and window == 0 and transform == 0 and stride == 0 and
                  self.cver == 2,
                  6: level == 0 and window == 0 and transform == 0 and stride == 0 and
                  self.cver == 2}.get(codec)
            if not ok:
                self._fail(eo + 2, "section %d: unknown codec %d or bad parameters" % (i, codec))
            if transform > 1 or (transform == 0 and stride) or (transform == 1 and stride < 2):
                self._fail(eo + 2, "section %d: bad transform %d/stride %d"
                           % (i, transform, stride))
            fo = eo + 8 if cver == 1 else eo  # v1 names the field; v2 sizes are varints
            if rsz > MAX_SECTION_RAW:
                self._fail(eo + 24 if cver == 1 else eo, "section %d: raw size %d, limit %d"
                           % (i, rsz, MAX_SECTION_RAW))
            total += rsz
            if off + ssz > n:
                self._fail(fo, "section %d: [%d, +%d) reaches past the end of the file (%d)"
                           % (i, off, ssz, n))
            if off != expect:
                self._fail(fo, "section %d begins at %d, expected %d (%s)"
                           % (i, off, expect, "overlap" if off < expect else "hole"))
            expect = off + ssz
            if cver == 1 and xxh64(d[off:off + ssz]) != self._sxx[i]:
                self._fail(off, "section %d (%s): stored checksum mismatch" % (i, KINDS[kind]))
            if kind == 4 and 4 in kinds:
                self._fail(eo, "a second tokenizer section (%d)" % i)
            kinds.setdefault(kind, i)
            if kind == 5:
                self.code_secs.append(i)
            self.secs.append(dict(kind=kind, codec=codec, transform=transform, stride=stride,
                                  offset=off, stored=ssz, raw=rsz, raw_xxh64=rxx))
        if expect < n:
            self._fail(expect, "%d bytes after the last section" % (n - expect))
        bound = max(64 << 20, 32 * n)
        toff = 64 if cver == 1 else 12
        if total > bound:
            self._fail(toff, "the sections decode to %d bytes in all, limit %d" % (total, bound))
        for k in (1, 2):
            if sum(s["kind"] == k for s in self.secs) != 1:
                self._fail(toff, "exactly one %s section is required" % KINDS[k])
        self.meta_sec, self.dir_sec = kinds[1], kinds[2]
        self.tok_sec = kinds.get(4)

    def _varint(self, buf, pos, fail):
        """A minimal LEB128 varint of at most 64 bits at buf[pos:]: (value, next pos)."""
        v = 0
        for k in range(10):
            if pos >= len(buf):
                fail(1)
            b = buf[pos]
            pos += 1
            if k == 9 and b > 1:
                fail(2)
            v |= (b & 0x7F) << (7 * k)
            if not b & 0x80:
                if k and not b:
                    fail(2)
                return v, pos
        fail(2)

    def _table_v2(self):
        d, n = self.data, len(self.data)

        def vfail(where):
            def f(kind):
                if kind == 1:
                    self._fail(n, "file ends inside %s" % where)
                self._fail(12, "%s is not a minimal varint" % where)
            return f
        count, pos = self._varint(d, 12, vfail("the section count"))
        if count == 0 or count > MAX_SECTIONS:
            self._fail(12, "section count %d outside 1..%d" % (count, MAX_SECTIONS))
        ents = []
        for i in range(count):
            eo = pos
            if n - pos < 6:
                self._fail(n, "file ends inside section table entry %d" % i)
            kind, codec, level, window, transform, stride = d[pos:pos + 6]
            ssz, pos = self._varint(d, pos + 6, vfail("section table entry %d" % i))
            rsz, pos = self._varint(d, pos, vfail("section table entry %d" % i))
            if n - pos < 4:
                self._fail(n, "file ends inside section table entry %d" % i)
            rxx = struct.unpack_from("<I", d, pos)[0]
            pos += 4
            ents.append([eo, kind, codec, level, window, transform, stride, 0, ssz, rsz, rxx])
        if n - pos < 8:
            self._fail(n, "file ends inside the file checksum")
        ck, off = pos, pos + 8
        for i, e in enumerate(ents):
            e[7] = off
            off += e[8]
            if off > n:
                self._fail(n, "file is %d bytes; its section table declares more (section %d "
                           "ends past it)" % (n, i))
        if off < n:
            self._fail(off, "%d bytes after the last section" % (n - off))
        if xxh64(bytes(d[:ck]) + bytes(d[ck + 8:])) != struct.unpack_from("<Q", d, ck)[0]:
            self._fail(ck, "file checksum mismatch")
        for i, e in enumerate(ents):
            if e[1] not in KINDS:
                self._fail(e[0], "section %d: unknown kind %d" % (i, e[1]))
        self.head = ck + 8
        return [tuple(e) for e in ents]

    def _table_v1(self):
        d, n = self.data, len(self.data)
        if n < 64:
            self._fail(n, "file is %d bytes, shorter than the 64-byte header" % n)
        cver, qver, flags, count, res, fsize, txx = struct.unpack_from("<HHIIIQQ", d, 8)
        if xxh64(d[:56]) != struct.unpack_from("<Q", d, 56)[0]:
            self._fail(56, "header checksum mismatch")
        if flags:
            self._fail(12, "flags are %d, must be 0" % flags)
        if res or any(d[40:56]):
            self._fail(20, "reserved header bytes not zero")
        if fsize > n:
            self._fail(n, "truncated: the header says %d bytes, the file has %d" % (fsize, n))
        if fsize < n:
            self._fail(fsize, "%d trailing bytes after the declared file size" % (n - fsize))
        if count == 0 or count > MAX_SECTIONS:
            self._fail(16, "section count %d outside 1..%d" % (count, MAX_SECTIONS))
        tend = 64 + 64 * count
        if tend > n:
            self._fail(64, "section table ends at %d, past the end of the file (%d)" % (tend, n))
        if xxh64(d[64:tend]) != txx:
            self._fail(32, "section table checksum mismatch")
        ents, self._sxx = [], []
        for i in range(count):
            eo = 64 + 64 * i
            kind, codec, level, window, transform, stride, r7 = struct.unpack_from("<H6B", d, eo)
            off, ssz, rsz, sxx, rxx = struct.unpack_from("<5Q", d, eo + 8)
            if kind not in KINDS:
                self._fail(eo, "section %d: unknown kind %d" % (i, kind))
            if r7 or any(d[eo + 48:eo + 64]):
                self._fail(eo, "section %d: reserved bytes not zero" % i)
            self._sxx.append(sxx)
            ents.append((eo, kind, codec, level, window, transform, stride, off, ssz, rsz, rxx))
        self.head = tend
        return ents

    def section(self, i):
        """The decoded bytes of section i, checked against its raw checksum."""
        if i in self._raw:
            return self._raw[i]
        s = self.secs[i]
        stored = self.data[s["offset"]:s["offset"] + s["stored"]]
        try:
            raw = decompress(s["codec"], stored, s["raw"])
        except ValueError as e:
            self._fail(s["offset"], "section %d (%s): %s" % (i, KINDS[s["kind"]], e))
        except ImportError as e:
            self._fail(s["offset"], "section %d (%s): %s" % (i, KINDS[s["kind"]], e))
        if s["transform"] == 1:
            raw = unshuffle(raw, s["stride"])
        if xxh64(raw) & (0xFFFFFFFFFFFFFFFF if self.cver == 1 else 0xFFFFFFFF) != s["raw_xxh64"]:
            self._fail(s["offset"], "section %d (%s): raw checksum mismatch"
                       % (i, KINDS[s["kind"]]))
        if s["kind"] == 3:  # DATA sections are kept; the others are parsed once
            self._raw[i] = raw
        return raw

    # ---- META (section 3) ----
    def _parse_meta(self):
        s = self.secs[self.meta_sec]
        if s["raw"] > MAX_META_RAW:
            self._fail(s["offset"], "meta section holds %d bytes, limit %d"
                       % (s["raw"], MAX_META_RAW))
        raw, pos, meta, prev = self.section(self.meta_sec), 0, {}, None

        def take(k, what):
            nonlocal pos
            if len(raw) - pos < k:
                self._fail(s["offset"], "meta section byte %d: ends inside %s" % (pos, what))
            pos += k
            return raw[pos - k:pos]

        def value(t, key):
            if t == 1:
                return struct.unpack("<q", take(8, "a number"))[0]
            if t == 2:
                return struct.unpack("<d", take(8, "a number"))[0]
            if t == 4:
                b = take(1, "a bool")[0]
                if b > 1:
                    self._fail(s["offset"], "meta section: key '%s': bool value %d" % (key, b))
                return bool(b)
            n = length(4, "a string length")
            try:
                return take(n, "a string").decode("utf-8")
            except UnicodeDecodeError:
                self._fail(s["offset"], "meta section: key '%s': invalid UTF-8" % key)

        def length(w, what):  # v1: a u16/u32; v2: a u8 key length, else a varint
            nonlocal pos
            if self.cver == 1:
                return struct.unpack("<H" if w == 2 else "<I", take(w, what))[0]
            if w == 2:
                return take(1, what)[0]

            def fail(kind):
                self._fail(s["offset"], "meta section byte %d: %s" % (
                    pos, "ends inside " + what if kind == 1 else what + " is not a minimal varint"))
            v, pos = self._varint(raw, pos, fail)
            return v

        count = length(4, "the entry count")
        if count > MAX_META_ENTRIES or count * 4 > len(raw):
            self._fail(s["offset"], "meta section: %d entries do not fit" % count)
        for _ in range(count):
            at = pos
            kb = take(length(2, "a key length"), "a key")
            if not 1 <= len(kb) <= 255 or not set(kb) <= KEY_CHARS:
                self._fail(s["offset"],
                           "meta section byte %d: key is not 1..255 of [a-z0-9_.-]" % at)
            if prev is not None and kb <= prev:
                self._fail(s["offset"], "meta section byte %d: key '%s' %s" % (
                    at, kb.decode(), "repeats" if kb == prev else "out of ascending order"))
            prev, key = kb, kb.decode()
            t = take(1, "a type")[0]
            if t == 5:
                et = take(1, "an array header")[0]
                n = length(4, "an array header")
                if n > len(raw) - pos:
                    self._fail(s["offset"], "meta section: key '%s': %d elements cannot fit"
                               % (key, n))
                if not 1 <= et <= 4:
                    self._fail(s["offset"], "meta section: key '%s': element type %d" % (key, et))
                meta[key] = [value(et, key) for _ in range(n)]
            elif 1 <= t <= 4:
                meta[key] = value(t, key)
            else:
                self._fail(s["offset"], "meta section: key '%s': unknown type %d" % (key, t))
            if WELL_KNOWN.get(key, t) != t:
                self._fail(s["offset"], "meta section: key '%s' must be of type %d, found %d"
                           % (key, WELL_KNOWN[key], t))
        if pos != len(raw):
            self._fail(s["offset"], "meta section byte %d: bytes after the last entry" % pos)
        if "pgolf.writer" not in meta:
            self._fail(s["offset"], "meta section lacks the required key 'pgolf.writer'")
        return meta

    # ---- TENSORS (section 4) ----
    def _parse_dir(self):
        s = self.secs[self.dir_sec]
        so = s["offset"]
        if s["raw"] > MAX_DIR_RAW:
            self._fail(so, "tensors section holds %d bytes, limit %d" % (s["raw"], MAX_DIR_RAW))
        raw, pos, out = self.section(self.dir_sec), 0, {}

        def take(k, what):
            nonlocal pos
            if len(raw) - pos < k:
                self._fail(so, "tensors section byte %d: ends inside %s" % (pos, what))
            pos += k
            return raw[pos - k:pos]

        def length(w, what):  # v1: fixed w bytes; v2: a u8 name length, else a varint
            nonlocal pos
            if self.cver == 1:
                return struct.unpack({2: "<H", 4: "<I", 8: "<Q"}[w], take(w, what))[0]
            if w == 2:
                return take(1, what)[0]

            def fail(kind):
                self._fail(so, "tensors section byte %d: %s" % (
                    pos, "ends inside " + what if kind == 1 else what + " is not a minimal varint"))
            v, pos = self._varint(raw, pos, fail)
            return v

        fill = {}  # v2: parts lie back to back in directory order in each section
        count = length(4, "the tensor count")
        if count > MAX_TENSORS or count * (31 if self.cver == 1 else 11) > len(raw):
            self._fail(so, "tensors section: %d tensors do not fit" % count)
        refs = []
        for _ in range(count):
            at = pos
            nb = take(length(2, "a name length"), "a name")
            if not _name_ok(nb):
                self._fail(so, "tensors section byte %d: bad tensor name" % at)
            name = nb.decode()
            qtype, packing, sk, qmin, qmax, ndim, rank, r = struct.unpack("<3B2b3B",
                                                                           take(8, "a header"))
            bad = lambda what: self._fail(so, "tensors section byte %d: tensor '%s': %s"
                                          % (at, name, what))
            if r and self.qver == 1:
                bad("reserved byte is %d" % r)
            order, perm = r & 15, r >> 4
            if ndim > 8:
                bad("%d dimensions, limit 8" % ndim)
            dims = tuple(length(8, "the dimensions") for _ in range(ndim))
            if qtype not in QTYPES:
                bad("unknown qtype %d" % qtype)
            isint, bits = qtype <= 4, QTYPES[qtype][1]
            if packing > 1 or (not isint and packing):
                bad("packing %d not valid" % packing)
            if (sk not in (1, 2)) if isint else sk != 0:
                bad("scale kind %d not valid" % sk)
            if isint and not (-(1 << (bits - 1)) <= qmin <= qmax <= (1 << (bits - 1)) - 1):
                bad("range [%d, %d] not inside the qtype's" % (qmin, qmax))
            if not isint and (qmin or qmax):
                bad("a float tensor declares a value range")
            if isint and ndim == 0:
                bad("an integer tensor needs at least one dimension")
            span = 1
            for x in dims:
                span *= max(x, 1)
            if span >= 1 << 64:
                bad("the product of its dimensions overflows 64 bits")
            if span > MAX_ELEMENTS:
                bad("%d elements, limit %d" % (span, MAX_ELEMENTS))
            numel, cols = 1, 1
            for j, x in enumerate(dims):
                numel *= x
                cols *= x if j else 1
            rows = dims[0] if ndim else 1
            if order > 1 or perm > 1:
                bad("unknown value order %d or row permutation kind %d" % (order, perm))
            if (order or perm) and (not isint or packing or ndim < 2):
                bad("a value order or row permutation needs an integer tensor of 2 or more "
                    "dimensions, one value per byte")
            if rank and (rank > MAX_LQER_RANK or not isint or sk != 1 or ndim != 2
                         or (cols * rank) % LQER_GROUP):
                bad("LQER rank %d not valid here" % rank)
            pk = lambda m, w: (m * w + 7) // 8 if packing else m
            want = [pk(numel, bits) if isint else numel * bits // 8,
                    (2 * rows if sk == 1 else 4) if isint else None] + (
                [pk(rows * rank, 2), 2, pk(rank * cols, 4), 2 * (rank * cols // LQER_GROUP)]
                if rank else [None] * 4) + [rows * (2 if rows <= 65536 else 4) if perm else None]
            parts = {}
            for role, size in enumerate(want):
                if size is None:
                    continue
                if self.cver == 1:
                    sec, off, psz = struct.unpack("<IQQ", take(20, "a part"))
                else:
                    sec = length(4, "a part")
                    off, psz = fill.get(sec, 0), size
                    fill[sec] = off + psz
                if sec >= len(self.secs):
                    bad("%s part names section %d of %d" % (PARTS[role], sec, len(self.secs)))
                if self.secs[sec]["kind"] != 3:
                    bad("%s part names section %d, not a data section" % (PARTS[role], sec))
                if psz != size:
                    bad("%s part is %d bytes, shape and qtype give %d" % (PARTS[role], psz, size))
                if off + psz > self.secs[sec]["raw"]:
                    bad("%s part reaches past section %d" % (PARTS[role], sec))
                parts[PARTS[role]] = (sec, off, psz)
                refs.append((sec, off, psz, name, PARTS[role]))
            if name in out:
                self._fail(so, "tensors section: duplicate tensor name '%s'" % name)
            out[name] = dict(qtype=QTYPES[qtype][0], bits=bits, packing=packing, scale_kind=sk,
                             qmin=qmin, qmax=qmax, shape=tuple(dims), numel=numel, rows=rows,
                             cols=cols, lqer_rank=rank, order=order, perm=perm, parts=parts)
        if pos != len(raw):
            self._fail(so, "tensors section byte %d: bytes after the last tensor" % pos)
        # The parts tile every DATA section exactly. One pass over the sorted parts, section by
        # section: scanning every part for each section would be sections x parts steps (4,096 x
        # 458,752 from a directory of a few MiB).
        refs.sort()
        at = 0
        for i, sec in enumerate(self.secs):
            if sec["kind"] != 3:
                continue
            expect = 0
            while at < len(refs) and refs[at][0] == i:
                r = refs[at]
                if r[1] != expect:
                    self._fail(sec["offset"], "data section %d byte %d: tensor '%s' %s part %s"
                               % (i, r[1], r[3], r[4], "overlaps" if r[1] < expect else
                                  "leaves a hole before it"))
                expect = r[1] + r[2]
                at += 1
            if expect != sec["raw"]:
                self._fail(sec["offset"], "data section %d: bytes %d..%d belong to no tensor"
                           % (i, expect, sec["raw"]))
        return out

    # ---- values ----
    @property
    def tokenizer(self):
        if self.tok_sec is None:
            return None
        s = self.secs[self.tok_sec]
        if s["raw"] > MAX_TOKENIZER_RAW:
            self._fail(s["offset"], "tokenizer of %d bytes, limit %d"
                       % (s["raw"], MAX_TOKENIZER_RAW))
        return self.section(self.tok_sec)

    @property
    def arch(self):
        return json.loads(self.meta["arch.json"]) if "arch.json" in self.meta else None

    def _part(self, t, role):
        sec, off, size = t["parts"][role]
        return self.section(sec)[off:off + size]

    def _ints(self, name, t, role, n, bits, lo, hi):
        buf = self._part(t, role)
        off = self.secs[t["parts"][role][0]]["offset"]
        if t["packing"]:
            q = unpack_bits(buf, n, bits)
            if q is None:
                self._fail(off, "tensor '%s' %s: padding bits of the last byte are not zero"
                           % (name, role))
        else:
            q = np.frombuffer(buf, dtype=np.int8)
        if n and (q.min() < lo or q.max() > hi):
            i = int(np.argmax((q < lo) | (q > hi)))
            self._fail(off, "tensor '%s' %s: element %d is %d, outside [%d, %d]"
                       % (name, role, i, q[i], lo, hi))
        return q

    def tensor(self, name):
        """The tensor dequantized to fp32 exactly as format/pg_qtype.c does, in its shape."""
        with np.errstate(all="ignore"):  # an inf or NaN scale gives what C gives, silently
            return self._tensor(name)

    def _tensor(self, name):
        if name not in self.tensors:
            raise KeyError("%s: no tensor '%s'" % (self.name, name))
        t = self.tensors[name]
        shape = t["shape"]
        if t["qtype"] == "f32":
            v = np.frombuffer(self._part(t, "values"), dtype="<f4")
            return v.astype(np.float32).reshape(shape)
        if t["qtype"] in ("f16", "bf16"):
            h = np.frombuffer(self._part(t, "values"), dtype="<u2")
            return (f16_to_f32(h) if t["qtype"] == "f16" else bf16_to_f32(h)).reshape(shape)
        q = self._ints(name, t, "values", t["numel"], t["bits"], t["qmin"], t["qmax"])
        if t["order"] or t["perm"]:  # quant layout 2: back to the logical row-major matrix
            rows, cols = t["rows"], t["cols"]
            img = q.reshape(cols, rows).T if t["order"] else q.reshape(rows, cols)
            # Nothing here may be sized by rows alone: with cols = 0 a tensor of 2^40 rows has
            # no values and needs no scales (scale kind 2), so an identity permutation of rows
            # entries would be terabytes from a 100-byte file. Only a stored row_perm (a part of
            # rows entries, paid for by the file) is materialised.
            if not t["perm"]:
                q = np.ascontiguousarray(img).reshape(-1)
            else:
                b = self._part(t, "row_perm")
                perm = np.frombuffer(b, dtype="<u2" if rows <= 65536 else "<u4").astype(np.int64)
                off = self.secs[t["parts"]["row_perm"][0]]["offset"]
                seen = np.zeros(rows, dtype=bool)
                for j, v in enumerate(perm):
                    if v >= rows or seen[v]:
                        self._fail(off, "tensor '%s' row_perm: entry %d is %d, %s" % (
                            name, j, v, "not a row index" if v >= rows
                            else "a row that appears twice"))
                    seen[v] = True
                out = np.empty((rows, cols), dtype=np.int8)
                out[perm] = img
                q = out.reshape(-1)
        qf = q.astype(np.float32)
        if t["scale_kind"] == 2:
            w = qf * np.frombuffer(self._part(t, "scales"), dtype="<f4").astype(np.float32)[0]
        else:
            s = f16_to_f32(np.frombuffer(self._part(t, "scales"), dtype="<u2"))
            w = (qf.reshape(t["rows"], t["cols"]) * s[:, None]).reshape(-1)
        if t["lqer_rank"]:
            r, rows, cols = t["lqer_rank"], t["rows"], t["cols"]
            qa = self._ints(name, t, "lqer_a", rows * r, 2, -2, 1).reshape(rows, r)
            qb = self._ints(name, t, "lqer_b", r * cols, 4, -8, 7)
            sa = f16_to_f32(np.frombuffer(self._part(t, "lqer_a_scale"), dtype="<u2"))[0]
            sb = f16_to_f32(np.frombuffer(self._part(t, "lqer_b_scales"), dtype="<u2"))
            a = (qa.astype(np.float32) * sa).astype(np.float64)
            b = (qb.astype(np.float32) * np.repeat(sb, LQER_GROUP)).astype(np.float64)
            b = b.reshape(r, cols)
            acc = np.zeros((rows, cols), dtype=np.float64)
            for k in range(r):  # ascending k, one double rounding per step, as the C loop
                acc += a[:, k:k + 1] * b[k:k + 1, :]
            w = w.reshape(rows, cols) + acc.astype(np.float32)
        return w.reshape(shape)

    def state_dict(self, torch=True):
        """name -> torch tensor (numpy array when torch=False or torch is not installed)."""
        out = {n: self.tensor(n) for n in self.tensors}
        if torch:
            try:
                import torch as _torch
            except ImportError:
                return out
            out = {n: _torch.from_numpy(v.copy()) for n, v in out.items()}
        return out


def _main(argv):
    import argparse
    ap = argparse.ArgumentParser(prog="pgolf_artifact.py",
                                 description="Read a pgolf artifact: list it, print one "
                                             "dequantized tensor, or write them all to .npz.")
    ap.add_argument("artifact")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="metadata keys, tensors, code files")
    g.add_argument("--tensor", metavar="NAME", help="print one dequantized tensor")
    g.add_argument("--npz", metavar="OUT", help="write every dequantized tensor to OUT (.npz)")
    args = ap.parse_args(argv)
    try:
        a = Artifact(args.artifact)
        if args.tensor is not None:
            if args.tensor not in a.tensors:
                raise ArtifactError("%s: no tensor '%s'" % (a.name, args.tensor))
            v = a.tensor(args.tensor)
            print("%s %s float32" % (args.tensor, "x".join(map(str, v.shape)) or "scalar"))
            np.set_printoptions(threshold=64)
            print(v)
        elif args.npz is not None:
            d = os.path.dirname(os.path.abspath(args.npz))
            fd, tmp = tempfile.mkstemp(prefix=".pgolf_artifact.", dir=d)
            try:
                with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as z:
                    for n in a.tensors:  # np.savez's layout, any tensor name as a key
                        with z.open(n + ".npy", "w", force_zip64=True) as m:
                            np.lib.format.write_array(m, a.tensor(n))
                um = os.umask(0)
                os.umask(um)
                os.chmod(tmp, 0o666 & ~um)  # mkstemp's 0600 is not what a user expects
                os.replace(tmp, args.npz)
            except BaseException:
                os.unlink(tmp)
                raise
        else:
            for k, v in a.meta.items():
                text = repr(v)
                print("meta   %s = %s" % (k, text if len(text) <= 60 else text[:57] + "..."))
            for n, t in a.tensors.items():
                print("tensor %-40s %-5s %-12s %s%s" % (
                    n, t["qtype"], "x".join(map(str, t["shape"])) or "scalar",
                    "bits" if t["packing"] else "byte",
                    " lqer %d" % t["lqer_rank"] if t["lqer_rank"] else ""))
            for n, b in a.code.items():
                print("code   %s (%d bytes)" % (n, len(b)))
            if a.tok_sec is not None:
                print("tokenizer (%d bytes)" % a.secs[a.tok_sec]["raw"])
    except ArtifactError as e:
        print(e, file=sys.stderr)
        return 2
    except (OSError, MemoryError) as e:
        print("%s: %s" % (args.artifact, e.strerror if isinstance(e, OSError) and e.strerror
                          else "out of memory" if isinstance(e, MemoryError) else e),
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
