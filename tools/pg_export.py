#!/usr/bin/env python3
"""pg_export.py: a PyTorch state dict of the record family -> safetensors with pgolf's names.

usage: pg_export.py INPUT -o OUT.safetensors [--arch ARCH.json] [--drop REGEX]...
                    [--record NAME] [--record-protocol OPTIONS]

INPUT is either
  * a torch.save file (.pt, .pth; not a record's compressed quantized .ptz): read with
    torch.load(map_location="cpu", weights_only=True) and nothing else: a PyTorch without
    weights_only (before 1.13), or a file its safe loader refuses, is refused; the file is never
    unpickled without the restriction. torch is imported only for this case. A zip archive
    (what torch.save writes) must hold every member stored uncompressed, inside the file, as
    torch.save writes them: torch.load would inflate a deflated member to any declared size, so
    a compressed one is refused before torch sees the file.
    The loaded object is a state dict, or a dict holding one under "model" or "state_dict";
  * a safetensors file (recognised by its content, not its name), read with the standard
    library only. Dtypes F32, F16, BF16 and F64 are accepted.

Names (spec/arch.md section 4 lists pgolf's, which are the records' state_dict names after
"unbanking"):
  * the prefixes "module." (DistributedDataParallel) and "_orig_mod." (torch.compile) are
    stripped, repeatedly and in any order, from the front of every name;
  * the four parameter banks of records R5 onward (spec/records.md section 2.10, the records'
    `_unbank_state_dict`) are split per layer, n being the number of layers:
        qo_bank       [2n, d, d]   [i]   -> blocks.{i}.attn.c_q.weight
                                   [n+i] -> blocks.{i}.attn.proj.weight
        kv_bank       [2n, kv, d]  [i]   -> blocks.{i}.attn.c_k.weight
                                   [n+i] -> blocks.{i}.attn.c_v.weight
        mlp_up_bank   [n, h, d]    [i]   -> blocks.{i}.mlp.fc.weight
        mlp_down_bank [n, d, h]    [i]   -> blocks.{i}.mlp.proj.weight
    The banks present must agree on n. A bank slice that collides with a tensor stored under
    the per-layer name is refused;
  * every other name must already be one of pgolf's (the table of spec/arch.md section 4); the
    references document no other renaming between the records and pgolf, so none is made.
    An unknown name is refused, naming the tensor, unless a --drop pattern matches it. Names
    that look like a quantized export ("*.q", "*.scale", "*.gq", ...) are refused with a hint:
    dequantize first.

Values: every tensor is converted to fp32: exact for F16 and BF16 (bf16 is the high half of
an fp32), round to nearest for F64 (torch: Tensor.float()). Integer and boolean tensors are
refused. A NaN or an infinity is refused (pgolf's loaders refuse them too), naming the tensor
and the element.

Output: safetensors, every tensor F32 with its shape unchanged (a bank slice has the bank's
shape without the first dimension), names sorted bytewise, header keys sorted, padded with
spaces to a multiple of 8 bytes, and "__metadata__" = {"format": "pt", "source": INPUT's file
name} (plus "arch.json", below). It is written to a temporary file in OUT's directory and
renamed over OUT only when complete, so a failed or interrupted run (Ctrl-C, SIGTERM, SIGHUP)
leaves no OUT and no temporary. OUT may not be INPUT or the --arch file, and an existing OUT must
be a regular file (a device or FIFO is never replaced): spec/cli.md, "Files".

--arch ARCH.json: (1) the arch's text is stored in "__metadata__" under "arch.json", where
pg_model_load_safetensors finds it when no arch is passed (spec/load.md section 1); (2) a
PARTIAL check: the tensors whose shape follows from a handful of options (vocab_size, dim,
layers, heads, kv_heads, head_dim, mlp.hidden, head.tied, structure.layer0_attn): tok_emb,
lm_head, and every layer's c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj must be present with a
matching shape, and no blocks.{i} may exceed the layer count. Everything else (gates, bigram,
VE, smear, skips, lambdas, readout, the other options' validity) is NOT checked here; the strict
check is pgolf's loader, e.g. `pgpack --weights OUT --arch ARCH.json ...`, which refuses any
missing, extra or misshapen tensor.

--record NAME, --record-protocol OPTIONS: provenance (spec/eval.md section 7.1). NAME is the
record the weights come from (its folder under records/, e.g.
2026-04-29_SmearGateBOSFix_3Seed_1.06141), stored as "provenance.record"; OPTIONS are the
pgverify options that reproduce the protocol of the figure that record reported (e.g.
"--protocol sliding --seq-len 2048 --stride 64 --tail-dup"), stored as "provenance.protocol".
pgpack carries both into the artifact, and pgverify warns when its protocol differs from the
recorded one, or when the arch it scores with follows another record. Both must be printable
text (no control characters), at most 255 and 511 bytes.

Hostile inputs: work and memory follow the files' sizes. A JSON text (the safetensors header,
the --arch file) nested deeper than Python's recursion limit is refused as one line; the --arch
check stops at the first missing tensor, so "layers" cannot ask for more work than the input
has tensors.

Errors: one line "pg_export: ..." on stderr, exit status 2. Success: one summary line on stdout,
exit status 0.
"""

import argparse
import json
import os
import re
import signal
import stat
import struct
import sys
import tempfile
import zipfile
from array import array

PROG = "pg_export"


class ExportError(Exception):
    """A fault to report as one line, exit status 2."""


def _clean(s):
    """Escape control characters so that one fault stays one line."""
    return "".join(c if c.isprintable() else "\\x%02x" % ord(c) if ord(c) < 256
                   else "\\u%04x" % ord(c) for c in str(s))


# ---- pgolf's tensor names (spec/arch.md section 4) ------------------------------------------

_KNOWN = [re.compile(p) for p in (
    r"tok_emb\.weight",
    r"bigram\.embed\.weight", r"bigram\.proj\.weight", r"bigram\.scale",
    r"ve_shared\.embed\.weight", r"ve_shared\.proj\.weight", r"ve_shared\.scale",
    r"ve_layer_scales\.(0|[1-9][0-9]*)",
    r"smear\.gate", r"smear_gate\.weight", r"smear_lambda",
    r"blocks\.(0|[1-9][0-9]*)\.attn\.(c_q|c_k|c_v|proj)\.weight",
    r"blocks\.(0|[1-9][0-9]*)\.attn\.q_gain",
    r"blocks\.(0|[1-9][0-9]*)\.attn\.attn_gate_proj\.weight",
    r"blocks\.(0|[1-9][0-9]*)\.attn\.attn_gate_w",
    r"blocks\.(0|[1-9][0-9]*)\.mlp\.(fc|proj)\.weight",
    r"blocks\.(0|[1-9][0-9]*)\.(attn_scale|mlp_scale|resid_mix)",
    r"skip_weights", r"skip_gates",
    r"parallel_resid_lambdas", r"parallel_post_lambdas",
    r"readout_delta",
    r"lm_head\.weight",
)]

_QUANT_SUFFIX = re.compile(r".*\.(q|scale|gq|gs|lqA|lqAs|lqB|lqBs|lqA_a|lqAs_a|lqB_a|lqBs_a)$")

# bank name -> (first-dimension multiple, [(offset in units of n, per-layer name pattern)])
BANKS = {
    "qo_bank": (2, [(0, "blocks.{i}.attn.c_q.weight"), (1, "blocks.{i}.attn.proj.weight")]),
    "kv_bank": (2, [(0, "blocks.{i}.attn.c_k.weight"), (1, "blocks.{i}.attn.c_v.weight")]),
    "mlp_up_bank": (1, [(0, "blocks.{i}.mlp.fc.weight")]),
    "mlp_down_bank": (1, [(0, "blocks.{i}.mlp.proj.weight")]),
}

_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(name):
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if name.startswith(p) and len(name) > len(p):
                name = name[len(p):]
                changed = True
    return name


def is_known(name):
    return any(p.fullmatch(name) for p in _KNOWN)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


# ---- a tensor: a shape and its fp32 little-endian bytes ----------------------------------------

class Tensor:
    __slots__ = ("shape", "data")

    def __init__(self, shape, data):
        self.shape = tuple(int(s) for s in shape)
        self.data = data  # bytes-like, 4 * numel bytes, fp32 little-endian
        if len(self.data) != 4 * numel(self.shape):
            raise AssertionError("internal: tensor size mismatch")


class Lazy:
    """A tensor read but not converted yet: converted only once its name is accepted, so a
    tensor that --drop leaves out may have any dtype."""
    __slots__ = ("shape", "convert")

    def __init__(self, shape, convert):
        self.shape = tuple(int(s) for s in shape)
        self.convert = convert  # () -> fp32 little-endian bytes, or raises ExportError

    def get(self):
        return Tensor(self.shape, self.convert())


_BIG = sys.byteorder == "big"


def _f32_from_array(a):
    """fp32 little-endian bytes of an array('f')."""
    if _BIG:
        a.byteswap()
    return a.tobytes()


def bf16_to_f32(raw):
    """bf16 little-endian bytes -> fp32 little-endian bytes (exact: bf16 is the high half)."""
    n = len(raw) // 2
    out = bytearray(4 * n)
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return bytes(out)


def f16_to_f32(raw):
    """fp16 little-endian bytes -> fp32 little-endian bytes (exact, subnormals included)."""
    n = len(raw) // 2
    out = array("f")
    step = 1 << 20
    for i in range(0, n, step):
        k = min(step, n - i)
        out.extend(struct.unpack("<%de" % k, raw[2 * i:2 * (i + k)]))
    return _f32_from_array(out)


def f64_to_f32(raw):
    """fp64 little-endian bytes -> fp32 (round to nearest; out of range becomes +-inf)."""
    n = len(raw) // 8
    out = array("f")
    step = 1 << 20
    for i in range(0, n, step):
        k = min(step, n - i)
        for v in struct.unpack("<%dd" % k, raw[8 * i:8 * (i + k)]):
            try:
                out.append(v)
            except OverflowError:
                out.append(float("inf") if v > 0 else float("-inf"))
    return _f32_from_array(out)


def first_nonfinite(data):
    """Index and kind of the first NaN/inf among fp32 little-endian values, or None."""
    # An fp32 is NaN or infinite when its 8 exponent bits are all ones: byte 3 & 0x7f == 0x7f
    # and byte 2 & 0x80. Test every value at once with two byte translations and a big AND.
    hi = bytes(data[3::4]).translate(bytes(1 if (b & 0x7F) == 0x7F else 0 for b in range(256)))
    lo = bytes(data[2::4]).translate(bytes(1 if b & 0x80 else 0 for b in range(256)))
    if not int.from_bytes(hi, "little") & int.from_bytes(lo, "little"):
        return None
    for i in range(len(hi)):
        if hi[i] and lo[i]:
            (v,) = struct.unpack_from("<f", data, 4 * i)
            return i, ("NaN" if v != v else "infinite")
    return None


# ---- readers ----------------------------------------------------------------------------------

_ST_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ExportError("duplicate key %r in JSON" % _clean(k))
        d[k] = v
    return d


def _read_regular(path, limit=None):
    """The bytes of an input that is a regular file (at most limit bytes when given). A FIFO or a
    device is refused without blocking: opening one for reading would wait for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ExportError("%s: %s" % (_clean(path), e.strerror or e))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ExportError("%s: not a regular file" % _clean(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise ExportError("%s: %s" % (_clean(path), e.strerror or e))
    finally:
        if fd >= 0:
            os.close(fd)


def looks_like_safetensors(path):
    head = _read_regular(path, 9)
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise ExportError("%s: %s" % (_clean(path), e.strerror or e))
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= size - 8


def read_safetensors(path):
    """name -> Lazy, in the file's header order."""
    blob = _read_regular(path)
    p = _clean(path)
    if len(blob) < 8:
        raise ExportError("%s: not a safetensors file (shorter than 8 bytes)" % p)
    (n,) = struct.unpack_from("<Q", blob, 0)
    if n > len(blob) - 8 or n > 100_000_000:
        raise ExportError("%s: safetensors header length %d does not fit the file" % (p, n))
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"), object_pairs_hook=_no_dup_pairs)
    except ExportError as e:
        raise ExportError("%s: safetensors header: %s" % (p, e))
    except (UnicodeDecodeError, ValueError) as e:
        raise ExportError("%s: safetensors header is not valid JSON: %s" % (p, _clean(e)))
    except RecursionError:  # json's decoder recurses once per nested array or object
        raise ExportError("%s: safetensors header: JSON nested too deeply" % p)
    if not isinstance(header, dict):
        raise ExportError("%s: safetensors header is not a JSON object" % p)
    buf = memoryview(blob)[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        where = "%s: tensor %s" % (p, _clean(name))
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise ExportError("%s: entry is not {dtype, shape, data_offsets}" % where)
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt not in _ST_SIZES:
            raise ExportError("%s: unknown dtype %s" % (where, _clean(dt)))
        if (not isinstance(shape, list) or len(shape) > 8 or
                not all(type(s) is int and s >= 0 for s in shape)):
            raise ExportError("%s: bad shape %s" % (where, _clean(shape)))
        if (not isinstance(offs, list) or len(offs) != 2 or
                not all(type(o) is int and o >= 0 for o in offs)):
            raise ExportError("%s: bad data_offsets %s" % (where, _clean(offs)))
        b, end = offs
        if end < b or end - b != numel(shape) * _ST_SIZES[dt] or end > len(buf):
            raise ExportError("%s: data_offsets [%d, %d] do not hold %s %s in a %d-byte buffer"
                              % (where, b, end, dt, shape, len(buf)))
        out[name] = Lazy(shape, _st_converter(buf[b:end], dt, where))
    return out


def _st_converter(raw, dt, where):
    def convert():
        if dt == "F32":
            return bytes(raw)
        if dt == "BF16":
            return bf16_to_f32(raw)
        if dt == "F16":
            return f16_to_f32(bytes(raw))
        if dt == "F64":
            return f64_to_f32(bytes(raw))
        raise ExportError("%s: dtype %s is not a floating-point weight (F32, F16, BF16, F64)"
                          % (where, dt))
    return convert


def _why(e):
    """The first line of an exception, cleaned, for a one-line message."""
    return _clean(str(e).splitlines()[0] if str(e) else type(e).__name__)


def check_torch_zip(path):
    """A torch.save file (a zip archive since PyTorch 1.6) whose members are all stored
    uncompressed, each inside the file. torch.save never compresses, but torch.load inflates a
    deflated member to whatever size the archive declares: a 17 KB file holding 16 MB of zeros
    loads, so memory would follow the archive's claims (about 1,000 times the file) rather than
    the file. A file that is not a zip archive (the legacy format, or anything else) is left to
    torch.load(weights_only=True)."""
    p = _clean(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise ExportError("%s: not a readable zip archive: %s" % (p, _why(e)))
    for m in members:
        if m.compress_type != zipfile.ZIP_STORED or m.file_size != m.compress_size:
            raise ExportError("%s: member %s is compressed (method %d); torch.save stores its "
                              "members uncompressed" % (p, _clean(m.filename), m.compress_type))
        if m.header_offset + m.file_size > size:
            raise ExportError("%s: member %s reaches past the end of the file"
                              % (p, _clean(m.filename)))


def read_torch(path):
    """name -> Lazy from a torch.save file (torch imported here only)."""
    p = _clean(path)
    check_torch_zip(path)
    try:
        import torch  # noqa: PLC0415 (lazy on purpose: stdlib only at import time)
    except ImportError:
        raise ExportError("%s: not a safetensors file, and reading a torch.save file needs "
                          "PyTorch (import torch failed)" % p)
    # Only the safe loader: a torch.save file is a pickle, and unpickling runs whatever code its
    # maker put there. A torch without weights_only (before 1.13), or a file the safe loader
    # refuses for any reason, is refused; there is no second, unrestricted try.
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError as e:
        if "weights_only" in str(e):
            raise ExportError("%s: this PyTorch (%s) cannot load safely (torch.load has no "
                              "weights_only; 1.13 or later needed); refusing to unpickle"
                              % (p, _clean(getattr(torch, "__version__", "unknown version"))))
        raise ExportError("%s: torch.load(weights_only=True) refused it: %s" % (p, _why(e)))
    except Exception as e:  # noqa: BLE001 (torch raises many kinds; report any as one line)
        raise ExportError("%s: torch.load(weights_only=True) refused it: %s" % (p, _why(e)))
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ExportError("%s: torch.load gave a %s, not a state dict" % (p, type(obj).__name__))
    out = {}
    for name, t in obj.items():
        where = "%s: tensor %s" % (p, _clean(name))
        if not isinstance(name, str):
            raise ExportError("%s: a key is a %s, not a name" % (p, type(name).__name__))
        if not isinstance(t, torch.Tensor):
            out[name] = Lazy((), _refuse("%s: a %s, not a tensor" % (where, type(t).__name__)))
        elif not t.is_floating_point():
            out[name] = Lazy(tuple(t.shape), _refuse("%s: dtype %s is not a floating-point "
                                                     "weight" % (where, t.dtype)))
        else:
            out[name] = Lazy(tuple(t.shape), _torch_converter(t))
    return out


def _refuse(message):
    def convert():
        raise ExportError(message)
    return convert


def _torch_converter(t):
    def convert():
        f = t.detach().to("cpu").float().contiguous()
        try:
            data = f.numpy().tobytes()
            if _BIG:
                a = array("f")
                a.frombytes(data)
                data = _f32_from_array(a)
            return data
        except Exception:  # noqa: BLE001 (no numpy: go through Python floats, slower)
            return _f32_from_array(array("f", f.reshape(-1).tolist()))
    return convert


# ---- renaming -----------------------------------------------------------------------------------

def rename(tensors, drops):
    """Strip prefixes, drop, check every name, then convert and unbank.
    Returns (name -> Tensor, stats dict)."""
    stats = {"dropped": [], "banks": 0}
    stripped = {}
    for name, lazy in tensors.items():
        short = strip_prefixes(name)
        if any(d.fullmatch(name) or d.fullmatch(short) for d in drops):
            stats["dropped"].append(name)
            continue
        if short in stripped:
            raise ExportError("tensor %s: two inputs have this name once prefixes are stripped"
                              % _clean(short))
        stripped[short] = (name, lazy)

    # Names and bank shapes first, so a bad name is reported before any conversion work.
    layers = None
    for short, (name, lazy) in stripped.items():
        if short in BANKS:
            mult = BANKS[short][0]
            shape = lazy.shape
            if len(shape) != 3 or shape[0] == 0 or shape[0] % mult:
                raise ExportError("tensor %s: a bank must be 3-D with a first dimension that is "
                                  "a non-zero multiple of %d, not %s"
                                  % (_clean(name), mult, list(shape)))
            n = shape[0] // mult
            if layers is not None and n != layers[0]:
                raise ExportError("tensor %s: %d layers, but %s has %d"
                                  % (_clean(name), n, _clean(layers[1]), layers[0]))
            layers = (n, name)
        elif not is_known(short):
            hint = ""
            if _QUANT_SUFFIX.match(short):
                hint = " (it looks like a quantized export: dequantize it first)"
            raise ExportError("tensor %s: unknown name, not one of pgolf's (spec/arch.md section 4)"
                              "%s; pass --drop REGEX to leave it out" % (_clean(name), hint))

    out = {}
    origin = {}

    def put(new, t, src):
        if new in out:
            raise ExportError("tensor %s: given twice (from %s and from %s)"
                              % (_clean(new), _clean(origin[new]), _clean(src)))
        out[new] = t
        origin[new] = src

    for short, (name, lazy) in stripped.items():
        if short not in BANKS:
            put(short, lazy.get(), name)
            continue
        mult, parts = BANKS[short]
        bank = lazy.get()
        n = bank.shape[0] // mult
        per = 4 * numel(bank.shape[1:])
        mv = memoryview(bank.data)
        for off, pattern in parts:
            for i in range(n):
                j = off * n + i
                put(pattern.format(i=i), Tensor(bank.shape[1:], mv[j * per:(j + 1) * per]),
                    "%s[%d]" % (name, j))
        stats["banks"] += 1
    return out, stats


# ---- the partial arch check ---------------------------------------------------------------------

def check_arch(tensors, arch, arch_path):
    a = _clean(arch_path)
    if not isinstance(arch, dict):
        raise ExportError("%s: the arch is not a JSON object" % a)

    def opt(group, key, default):
        src = arch.get(group, {}) if group else arch
        if not isinstance(src, dict):
            raise ExportError("%s: %s: not an object" % (a, group))
        v = src.get(key, default)
        want = bool if isinstance(default, bool) else int
        if type(v) is not want:
            raise ExportError("%s: %s%s: not %s" % (a, group + "." if group else "", key,
                                                    "a boolean" if want is bool else
                                                    "an integer"))
        return v

    V = opt(None, "vocab_size", 1024)
    d = opt(None, "dim", 512)
    L = opt(None, "layers", 9)
    H = opt(None, "heads", 8)
    Hkv = opt(None, "kv_heads", 4)
    if H <= 0 or d <= 0 or L <= 0:
        raise ExportError("%s: dim, layers and heads must be positive" % a)
    hd = opt(None, "head_dim", d // H if d % H == 0 else 0)
    if hd <= 0:
        raise ExportError("%s: head_dim must be given when dim is not a multiple of heads" % a)
    hidden = opt("mlp", "hidden", 2 * d)
    tied = opt("head", "tied", True)
    l0attn = opt("structure", "layer0_attn", True)

    def wanted():
        # Generated one at a time, checked as they come: the names are distinct, so the first
        # missing one turns up within len(tensors) + 1 of them, whatever "layers" says (a list
        # of them all would be built from a 60-byte arch asking for 10^9 layers).
        yield "tok_emb.weight", (V, d)
        if not tied:
            yield "lm_head.weight", (V, d)
        for i in range(L):
            if i > 0 or l0attn:
                yield "blocks.%d.attn.c_q.weight" % i, (H * hd, d)
                yield "blocks.%d.attn.c_k.weight" % i, (Hkv * hd, d)
                yield "blocks.%d.attn.c_v.weight" % i, (Hkv * hd, d)
                yield "blocks.%d.attn.proj.weight" % i, (d, H * hd)
            yield "blocks.%d.mlp.fc.weight" % i, (hidden, d)
            yield "blocks.%d.mlp.proj.weight" % i, (d, hidden)

    def squeeze(s):
        return [x for x in s if x != 1]

    for name, shape in wanted():
        if name not in tensors:
            raise ExportError("tensor %s: missing (%s implies it)" % (name, a))
        got = tensors[name].shape
        if numel(got) != numel(shape) or squeeze(got) != squeeze(shape):
            raise ExportError("tensor %s: shape %s does not match the arch's %s"
                              % (name, list(got), list(shape)))
    if tied and "lm_head.weight" in tensors:
        raise ExportError("tensor lm_head.weight: present, but %s has a tied head" % a)
    blk = re.compile(r"blocks\.([0-9]+)\.")
    for name in tensors:
        m = blk.match(name)
        if m and int(m.group(1)) >= L:
            raise ExportError("tensor %s: layer %s, but %s has %d layers"
                              % (name, m.group(1), a, L))


# ---- writer ------------------------------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    """Sorted names, F32, compact sorted header padded to 8; atomic (temp file + os.replace)."""
    names = sorted(tensors, key=lambda s: s.encode("utf-8"))
    header = {}
    off = 0
    for name in names:
        t = tensors[name]
        header[name] = {"data_offsets": [off, off + len(t.data)], "dtype": "F32",
                        "shape": list(t.shape)}
        off += len(t.data)
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    hb = text.encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            for name in names:
                f.write(tensors[name].data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return off + 8 + len(hb)


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="pg_export.py",
        description="Convert a PyTorch state dict of the Parameter Golf record family (a "
                    "torch.save file, or safetensors) into an fp32 safetensors file with "
                    "pgolf's tensor names (spec/arch.md section 4): prefixes module. and "
                    "_orig_mod. stripped, the R5+ banks (qo_bank, kv_bank, mlp_up_bank, "
                    "mlp_down_bank) split per layer, every other name kept if it is pgolf's "
                    "and refused otherwise.",
        epilog="The --arch check is partial (the embedding, head and per-layer matrices "
               "only); the strict check is pgolf's loader: pgpack --weights OUT --arch ARCH. "
               "Exit status: 0, or 2 on any error (one line on stderr). See the module "
               "docstring for every rule.")
    ap.add_argument("input", metavar="INPUT", help="torch.save file or safetensors file")
    ap.add_argument("-o", "--out", required=True, metavar="OUT",
                    help="the safetensors file to write (atomically)")
    ap.add_argument("--arch", metavar="ARCH.json",
                    help="store the arch's text in __metadata__['arch.json'] and check the "
                         "shapes of tok_emb, lm_head and every layer's c_q, c_k, c_v, "
                         "attn.proj, mlp.fc and mlp.proj against it (partial: see below)")
    ap.add_argument("--record", metavar="NAME",
                    help="the record the weights come from (stored as provenance.record)")
    ap.add_argument("--record-protocol", metavar="OPTIONS",
                    help="the pgverify options of that record's reported figure (stored as "
                         "provenance.protocol)")
    ap.add_argument("--drop", action="append", default=[], metavar="REGEX",
                    help="leave out tensors whose name (as stored, or with its prefixes "
                         "stripped) fully matches REGEX (Python re); repeatable")

    def error(message):
        raise ExportError(message + " (see --help)")
    ap.error = error
    return ap.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    drops = []
    for d in args.drop:
        try:
            drops.append(re.compile(d))
        except re.error as e:
            raise ExportError("--drop %s: bad regular expression: %s" % (_clean(d), e))
    if not os.path.exists(args.input):
        raise ExportError("%s: no such file" % _clean(args.input))
    if not os.path.isfile(args.input):
        raise ExportError("%s: not a regular file" % _clean(args.input))
    # spec/cli.md "Files": the output is never an input, and only a regular file is replaced
    if os.path.exists(args.out):
        for given in (args.input, args.arch):
            if given and os.path.exists(given) and os.path.samefile(given, args.out):
                raise ExportError("%s: refusing to write over the input %s"
                                  % (_clean(args.out), _clean(given)))
        if not os.path.isfile(args.out):
            raise ExportError("%s: exists and is not a regular file; refusing to replace it"
                              % _clean(args.out))
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ExportError("%s: the directory does not exist" % _clean(args.out))

    provenance = {}
    for key, value, cap in (("provenance.record", args.record, 255),
                            ("provenance.protocol", args.record_protocol, 511)):
        if value is None:
            continue
        flag = "--" + key.split(".")[1].replace("protocol", "record-protocol")
        if not value or any(ord(c) < 0x20 or ord(c) == 0x7f for c in value):
            raise ExportError("%s: empty, or holds a control character: %s"
                              % (flag, _clean(value)))
        if len(value.encode("utf-8", "surrogatepass")) > cap:
            raise ExportError("%s: longer than %d bytes" % (flag, cap))
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ExportError("%s: not UTF-8: %s" % (flag, _clean(value)))
        provenance[key] = value

    arch_text = None
    arch = None
    if args.arch:
        try:
            arch_text = _read_regular(args.arch).decode("utf-8")
        except UnicodeDecodeError:
            raise ExportError("%s: not UTF-8" % _clean(args.arch))
        try:
            arch = json.loads(arch_text, object_pairs_hook=_no_dup_pairs)
        except ExportError as e:
            raise ExportError("%s: %s" % (_clean(args.arch), e))
        except ValueError as e:
            raise ExportError("%s: not valid JSON: %s" % (_clean(args.arch), _clean(e)))
        except RecursionError:
            raise ExportError("%s: JSON nested too deeply" % _clean(args.arch))

    if looks_like_safetensors(args.input):
        tensors = read_safetensors(args.input)
    else:
        tensors = read_torch(args.input)
    if not tensors:
        raise ExportError("%s: no tensors" % _clean(args.input))

    renamed, stats = rename(tensors, drops)
    if not renamed:
        raise ExportError("%s: every tensor was dropped" % _clean(args.input))
    for name in sorted(renamed):
        bad = first_nonfinite(renamed[name].data)
        if bad:
            raise ExportError("tensor %s: element %d is %s" % (_clean(name), bad[0], bad[1]))
    if arch is not None:
        check_arch(renamed, arch, args.arch)

    meta = {"format": "pt", "source": os.path.basename(args.input)}
    if arch_text is not None:
        meta["arch.json"] = arch_text
    meta.update(provenance)
    try:
        size = write_safetensors(args.out, renamed, meta)
    except OSError as e:
        raise ExportError("%s: cannot write: %s" % (_clean(args.out), e.strerror or e))
    params = sum(numel(t.shape) for t in renamed.values())
    print("%s: %d tensors, %d parameters, %d bytes%s%s" % (
        _clean(args.out), len(renamed), params, size,
        ", %d bank%s split" % (stats["banks"], "" if stats["banks"] == 1 else "s")
        if stats["banks"] else "",
        ", %d dropped" % len(stats["dropped"]) if stats["dropped"] else ""))
    return 0


class _Signalled(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so the temporary output is removed."""


def _on_signal(sig, _frame):
    raise _Signalled(sig)


if __name__ == "__main__":
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(_sig) != signal.SIG_IGN:
            signal.signal(_sig, _on_signal)
    try:
        sys.exit(main(sys.argv[1:]))
    except _Signalled as e:
        # the temporary is gone (write_safetensors); now die of the signal, as the tools do
        signal.signal(e.args[0], signal.SIG_DFL)
        os.kill(os.getpid(), e.args[0])
    except ExportError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print("%s: out of memory" % PROG, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        sys.exit(2)
