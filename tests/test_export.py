#!/usr/bin/env python3
"""test_export.py: tools/pg_export.py end to end, standard library only (no torch, no numpy).

usage: test_export.py PATH/TO/pg_export.py

Builds a synthetic banked state dict of a 2-layer model as safetensors (its own minimal writer,
F32, F16 and BF16 tensors, "module." / "_orig_mod." prefixes), runs the script with
sys.executable, reads the output back with its own reader and checks names, shapes, exact fp32
values, the unbanking indices, the F16/BF16 conversions, the refusals (unknown name, name
collision, inconsistent banks, NaN, a mismatching arch) and that a failing run leaves no file.
When PG_BUILD_ROOT holds a built tools/pgpack, the output also goes through pgolf's strict
loader (pgpack --weights OUT --arch ARCH --calib none); otherwise that test is skipped.
Prints TAP; exit status 1 when a test fails.
"""

import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

SCRIPT = None
TMP = None

N = 2     # layers
D = 16    # dim (at least the default gate and smear windows, 12)
KV = 8    # kv_heads * head_dim
HID = 32  # MLP hidden
V = 16    # vocab

ARCH = {"vocab_size": V, "dim": D, "layers": N, "heads": 2, "kv_heads": 1, "head_dim": 8,
        "mlp": {"hidden": HID}}


# ---- value encodings, written independently of the script ---------------------------------------

def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f16_to_float(h):
    """IEEE binary16 bits -> Python float, from the definition."""
    s = -1.0 if h & 0x8000 else 1.0
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        return s * m * 2.0 ** -24
    if e == 31:
        return s * float("inf") if m == 0 else float("nan")
    return s * (1 + m / 1024.0) * 2.0 ** (e - 15)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write_st(path, entries, metadata=None):
    """entries: list of (name, dtype, shape, raw bytes); written in list order, no padding."""
    header, off, blobs = {}, 0, []
    for name, dt, shape, raw in entries:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    if metadata:
        header["__metadata__"] = metadata
    hb = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))


def read_st(path):
    """(header text, name -> (dtype, shape, raw), metadata, names in data order)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack_from("<Q", blob)
    text = blob[8:8 + n]
    hdr = json.loads(text)
    meta = hdr.pop("__metadata__", None)
    buf = blob[8 + n:]
    out = {}
    for name, e in hdr.items():
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), buf[b:end])
    order = sorted(out, key=lambda k: hdr[k]["data_offsets"])
    return text, out, meta, order, len(buf)


def f32_list(raw):
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


# ---- the synthetic state dict ------------------------------------------------------------------

def f32_raw(vals):
    return struct.pack("<%df" % len(vals), *vals)


def make_banks(rng):
    """name -> (dtype, shape, raw, expected fp32 bits per element)."""
    t = {}
    # F32 banks: distinct exact values (bank id, slice, position) so any misplaced slice shows.
    for bank, shape, tag in (("qo_bank", (2 * N, D, D), 1), ("kv_bank", (2 * N, KV, D), 2)):
        vals = [tag * 10000 + k * 0.25 for k in range(numel(shape))]
        t[bank] = ("F32", shape, f32_raw(vals), [f32_bits(v) for v in vals])
    # F16 bank: random finite half bit patterns (normals, subnormals, signed zeros).
    shape = (N, HID, D)
    bits = []
    while len(bits) < numel(shape):
        h = rng.getrandbits(16)
        if (h >> 10) & 0x1F != 31:
            bits.append(h)
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x7BFF]  # +0, -0, smallest subnormal, largest normal
    t["mlp_up_bank"] = ("F16", shape, struct.pack("<%dH" % len(bits), *bits),
                        [f32_bits(f16_to_float(h)) for h in bits])
    # BF16 bank: random finite bf16 patterns; the fp32 is the pattern shifted up 16 bits.
    shape = (N, D, HID)
    bits = []
    while len(bits) < numel(shape):
        h = rng.getrandbits(16)
        if (h >> 7) & 0xFF != 0xFF:
            bits.append(h)
    bits[:4] = [0x0000, 0x8000, 0x0001, 0x7F7F]
    t["mlp_down_bank"] = ("BF16", shape, struct.pack("<%dH" % len(bits), *bits),
                          [h << 16 for h in bits])
    return t


def make_others(rng):
    t = {}
    # tok_emb as bf16 (as the records keep it), under both prefixes.
    bits = [rng.getrandbits(16) & 0xBFFF for _ in range(V * D)]  # exponent never all ones
    t["module._orig_mod.tok_emb.weight"] = ("BF16", (V, D),
                                            struct.pack("<%dH" % len(bits), *bits),
                                            [h << 16 for h in bits])
    for i in range(N):
        for nm, shape in (("attn.q_gain", (2,)), ("attn_scale", (D,)), ("mlp_scale", (D,)),
                          ("resid_mix", (2, D))):
            vals = [rng.uniform(-3, 3) for _ in range(numel(shape))]
            vals = [struct.unpack("<f", struct.pack("<f", v))[0] for v in vals]
            t["module.blocks.%d.%s" % (i, nm)] = ("F32", shape, f32_raw(vals),
                                                   [f32_bits(v) for v in vals])
    vals = [1.0 + k for k in range(D)]
    t["skip_weights"] = ("F32", (1, D), f32_raw(vals), [f32_bits(v) for v in vals])
    return t


def expected_map():
    """output name -> (input name, slice index or None)."""
    m = {}
    for i in range(N):
        m["blocks.%d.attn.c_q.weight" % i] = ("qo_bank", i)
        m["blocks.%d.attn.proj.weight" % i] = ("qo_bank", N + i)
        m["blocks.%d.attn.c_k.weight" % i] = ("kv_bank", i)
        m["blocks.%d.attn.c_v.weight" % i] = ("kv_bank", N + i)
        m["blocks.%d.mlp.fc.weight" % i] = ("mlp_up_bank", i)
        m["blocks.%d.mlp.proj.weight" % i] = ("mlp_down_bank", i)
        for nm in ("attn.q_gain", "attn_scale", "mlp_scale", "resid_mix"):
            m["blocks.%d.%s" % (i, nm)] = ("module.blocks.%d.%s" % (i, nm), None)
    m["tok_emb.weight"] = ("module._orig_mod.tok_emb.weight", None)
    m["skip_weights"] = ("skip_weights", None)
    return m


def as_entries(t, order=None):
    names = order or list(t)
    return [(n, t[n][0], t[n][1], t[n][2]) for n in names]


def run(*args):
    p = subprocess.run([sys.executable, SCRIPT] + list(args), capture_output=True, text=True,
                       timeout=120)
    return p.returncode, p.stdout, p.stderr


def leftovers(directory, stem):
    return [f for f in os.listdir(directory) if f.startswith("." + stem)]


# ---- the tests -----------------------------------------------------------------------------------

class State:
    pass


S = State()


def t_export_runs():
    rng = random.Random(1234)
    S.t = dict(make_banks(rng))
    S.t.update(make_others(rng))
    order = list(S.t)
    random.Random(7).shuffle(order)  # the input order must not matter
    S.inp = os.path.join(TMP, "banked.safetensors")
    write_st(S.inp, as_entries(S.t, order), {"format": "pt"})
    S.out = os.path.join(TMP, "out.safetensors")
    rc, out, err = run(S.inp, "-o", S.out)
    assert rc == 0, "exit %d: %s" % (rc, err.strip())
    assert err == "", "stderr not empty: %r" % err
    assert "out.safetensors" in out and "4 banks split" in out, out
    S.text, S.got, S.meta, S.order, S.buflen = read_st(S.out)


def t_layout():
    (n,) = struct.unpack_from("<Q", open(S.out, "rb").read(8))
    assert n % 8 == 0, "header length %d not a multiple of 8" % n
    assert S.text[:1] == b"{" and S.text.rstrip(b" ").endswith(b"}")
    names = [k for k in json.loads(S.text) if k != "__metadata__"]
    assert S.order == sorted(names, key=lambda s: s.encode()), "data not in sorted name order"
    pos = 0
    hdr = json.loads(S.text)
    for name in S.order:
        b, e = hdr[name]["data_offsets"]
        assert b == pos, "%s begins at %d, expected %d" % (name, b, pos)
        pos = e
    assert pos == S.buflen, "buffer has %d bytes, tensors cover %d" % (S.buflen, pos)
    assert all(S.got[k][0] == "F32" for k in S.got), "a tensor is not F32"
    assert S.meta == {"format": "pt", "source": "banked.safetensors"}, S.meta


def t_names():
    want = set(expected_map())
    got = set(S.got)
    assert got == want, "missing %s, extra %s" % (sorted(want - got), sorted(got - want))


def _check_values(filter_fn):
    em = expected_map()
    checked = 0
    for name, (src, idx) in sorted(em.items()):
        dt, shape, raw, bits = S.t[src]
        if not filter_fn(dt, idx):
            continue
        if idx is None:
            want_shape, want = shape, bits
        else:
            per = numel(shape[1:])
            want_shape, want = shape[1:], bits[idx * per:(idx + 1) * per]
        gdt, gshape, graw = S.got[name]
        assert gshape == tuple(want_shape), "%s: shape %s, want %s" % (name, gshape, want_shape)
        gbits = list(struct.unpack("<%dI" % (len(graw) // 4), graw))
        assert gbits == want, "%s: values differ from %s%s (first at %d)" % (
            name, src, "" if idx is None else "[%d]" % idx,
            next(k for k in range(len(want)) if gbits[k] != want[k]))
        checked += 1
    assert checked > 0
    return checked


def t_unbank_indices():
    # c_q = qo[i], proj = qo[n+i], c_k = kv[i], c_v = kv[n+i] (F32 banks, exact).
    assert _check_values(lambda dt, idx: idx is not None and dt == "F32") == 4 * N
    # Spot-check the index rule from the values themselves: qo_bank[j] starts at 10000+j*D*D/4.
    first = f32_list(S.got["blocks.1.attn.proj.weight"][2][:4])[0]
    assert first == 10000 + (N + 1) * D * D * 0.25, first
    first = f32_list(S.got["blocks.0.attn.c_v.weight"][2][:4])[0]
    assert first == 20000 + N * KV * D * 0.25, first


def t_f16():
    assert _check_values(lambda dt, idx: dt == "F16") == N  # mlp.fc from the F16 bank


def t_bf16():
    assert _check_values(lambda dt, idx: dt == "BF16") == N + 1  # mlp.proj and tok_emb


def t_f32_prefixes():
    assert _check_values(lambda dt, idx: idx is None and dt == "F32") == 4 * N + 1


def _refused(entries, needle, *extra):
    path = os.path.join(TMP, "bad.safetensors")
    write_st(path, entries)
    out = os.path.join(TMP, "refused.safetensors")
    rc, so, err = run(path, "-o", out, *extra)
    assert rc == 2, "exit %d, want 2 (stderr %r)" % (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pg_export: "), "stderr %r" % err
    assert needle in lines[0], "%r does not name %r" % (lines[0], needle)
    assert not os.path.exists(out), "a failed run left %s" % out
    assert leftovers(TMP, "refused") == [], "temporary files left: %s" % leftovers(TMP, "refused")
    return lines[0]


def t_unknown_refused():
    e = as_entries(S.t) + [("mtp_heads.0.weight", "F32", (2,), f32_raw([1.0, 2.0]))]
    _refused(e, "mtp_heads.0.weight")


def t_quantized_hint():
    e = as_entries(S.t) + [("blocks.0.mlp.fc.weight.q", "I8", (2,), b"\x01\x02")]
    line = _refused(e, "blocks.0.mlp.fc.weight.q")
    assert "quantized" in line, line


def t_drop():
    path = os.path.join(TMP, "extra.safetensors")
    write_st(path, as_entries(S.t) + [("mtp_heads.0.weight", "F32", (2,), f32_raw([1, 2])),
                                      ("module.mtp_heads.1.weight", "F32", (1,), f32_raw([3]))])
    out = os.path.join(TMP, "dropped.safetensors")
    rc, so, err = run(path, "-o", out, "--drop", r"mtp_heads\..*")
    assert rc == 0, "exit %d: %s" % (rc, err)
    assert "2 dropped" in so, so
    _, got, _, _, _ = read_st(out)
    assert set(got) == set(expected_map())
    assert open(out, "rb").read()[8:] != b"" and got["skip_weights"] == S.got["skip_weights"]


def t_f64_and_dropped_ints():
    # F64 rounds to nearest fp32; a non-float tensor is fine when --drop leaves it out.
    path = os.path.join(TMP, "f64.safetensors")
    vals = [0.1 * (k + 1) for k in range(D)]
    t = dict(S.t)
    t["skip_weights"] = ("F64", (1, D), struct.pack("<%dd" % D, *vals), None)
    entries = as_entries(t) + [("step", "I64", (), struct.pack("<q", 1000))]
    write_st(path, entries)
    out = os.path.join(TMP, "f64_out.safetensors")
    rc, so, err = run(path, "-o", out)
    assert rc == 2 and "tensor step:" in err, (rc, err)
    rc, so, err = run(path, "-o", out, "--drop", "step")
    assert rc == 0, "exit %d: %s" % (rc, err)
    _, got, _, _, _ = read_st(out)
    want = struct.pack("<%df" % D, *vals)  # struct's fp32 packing rounds to nearest
    assert got["skip_weights"][2] == want, "F64 not rounded to the nearest fp32"
    t["skip_weights"] = ("I32", (1, D), struct.pack("<%di" % D, *range(D)), None)
    write_st(path, as_entries(t))
    rc, so, err = run(path, "-o", out + "2")
    assert rc == 2 and "skip_weights" in err and "not a floating-point" in err, (rc, err)
    assert not os.path.exists(out + "2")


FAKE_TORCH = """
# A stand-in for torch, enough for pg_export.py's torch.load path: load() reads JSON.
import json
float32 = "torch.float32"
class Tensor:
    def __init__(self, shape, values, dtype):
        self.shape, self.values, self.dtype = tuple(shape), values, dtype
    def is_floating_point(self):
        return self.dtype.startswith("torch.float") or self.dtype == "torch.bfloat16"
    def detach(self):
        return self
    def to(self, device):
        assert device == "cpu"
        return self
    def float(self):
        return Tensor(self.shape, self.values, float32)
    def contiguous(self):
        return self
    def numpy(self):
        raise ImportError("no numpy here")
    def reshape(self, *shape):
        return self
    def tolist(self):
        return list(self.values)
def load(path, map_location=None, weights_only=False):
    assert map_location == "cpu" and weights_only
    with open(path) as f:
        obj = json.load(f)
    def conv(v):
        if isinstance(v, dict) and "shape" in v:
            return Tensor(v["shape"], v["values"], v["dtype"])
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(obj)
"""


def t_torch_path_stub():
    # The torch.load path against a stand-in module (no real torch here): the "model" key is
    # unwrapped, tensors converted with .float(), a non-tensor or integer entry refused.
    stub = os.path.join(TMP, "stub")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "torch.py"), "w") as f:
        f.write(FAKE_TORCH)
    sd = {}
    for name, (dt, shape, raw, bits) in S.t.items():
        vals = [struct.unpack("<f", struct.pack("<I", b))[0] for b in bits]
        sd[name] = {"shape": list(shape), "values": vals, "dtype": "torch.float32"}
    pt = os.path.join(TMP, "model.pt")
    with open(pt, "w") as f:
        json.dump({"model": sd, "step": 5}, f)
    out = os.path.join(TMP, "from_pt.safetensors")
    env = dict(os.environ, PYTHONPATH=stub)
    p = subprocess.run([sys.executable, SCRIPT, pt, "-o", out], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 0, "exit %d: %s" % (p.returncode, p.stderr)
    _, got, meta, _, _ = read_st(out)
    assert got == S.got, "the torch path gave other tensors than the safetensors path"
    assert meta["source"] == "model.pt", meta
    sd["module.blocks.0.attn.q_gain"]["dtype"] = "torch.int64"
    with open(pt, "w") as f:
        json.dump({"state_dict": sd}, f)
    p = subprocess.run([sys.executable, SCRIPT, pt, "-o", out + "2"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 2 and "blocks.0.attn.q_gain" in p.stderr, p.stderr
    assert not os.path.exists(out + "2")


# Stand-ins for torch around a pickle whose loading runs code (it creates a folder): neither an
# old torch without weights_only nor a safe loader that refuses the file may lead pg_export to
# unpickle it without the restriction.
EVIL_TORCH = {
    "old": """
import pickle
__version__ = "1.12.1"
class Tensor: pass
def load(path, map_location=None):
    with open(path, "rb") as f:
        return pickle.load(f)
""",
    "refusing": """
import pickle
__version__ = "2.5.0"
class Tensor: pass
def load(path, map_location=None, weights_only=None):
    if weights_only:
        raise TypeError("Weights only load failed: unsupported global posix.mkdir")
    with open(path, "rb") as f:
        return pickle.load(f)
""",
}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def t_never_unpickles_code():
    import pickle  # noqa: PLC0415 (writes the hostile input only)
    for kind, src in EVIL_TORCH.items():
        stub = os.path.join(TMP, "evil_" + kind)
        os.makedirs(stub, exist_ok=True)
        with open(os.path.join(stub, "torch.py"), "w") as f:
            f.write(src)
        marker = os.path.join(TMP, "pwned_" + kind)
        pt = os.path.join(TMP, "evil_%s.pt" % kind)
        with open(pt, "wb") as f:
            pickle.dump({"model": _Payload(marker)}, f)
        out = os.path.join(TMP, "evil_%s.safetensors" % kind)
        p = subprocess.run([sys.executable, SCRIPT, pt, "-o", out], capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=stub), timeout=120)
        assert not os.path.exists(marker), "%s torch: the payload ran" % kind
        assert p.returncode == 2, "%s torch: exit %d: %s" % (kind, p.returncode, p.stderr)
        assert p.stderr.count("\n") == 1 and "weights_only" in p.stderr, p.stderr
        assert not os.path.exists(out)


def t_collision_refused():
    e = as_entries(S.t) + [("blocks.1.attn.c_k.weight", "F32", (KV, D), f32_raw([0.0] * KV * D))]
    _refused(e, "blocks.1.attn.c_k.weight")


def t_inconsistent_banks():
    t = dict(S.t)
    dt, shape, raw, bits = t["mlp_up_bank"]
    t["mlp_up_bank"] = (dt, (N + 1,) + shape[1:], raw + raw[:len(raw) // N], None)
    _refused(as_entries(t), "layers")


def t_nan_refused():
    t = dict(S.t)
    vals = [1.0] * D
    t["skip_weights"] = ("F32", (1, D), f32_raw(vals[:3]) + struct.pack("<I", 0x7FC00000) +
                         f32_raw(vals[4:]), None)
    line = _refused(as_entries(t), "skip_weights")
    assert "element 3 is NaN" in line, line
    t["skip_weights"] = ("BF16", (1, D), struct.pack("<%dH" % D, *([0x3F80] * 5 + [0xFF80] +
                                                                  [0x3F80] * (D - 6))), None)
    line = _refused(as_entries(t), "skip_weights")
    assert "element 5 is infinite" in line, line


def t_no_overwrite_on_failure():
    # A failing run does not touch an existing output either.
    out = os.path.join(TMP, "keep.safetensors")
    with open(out, "wb") as f:
        f.write(b"old")
    path = os.path.join(TMP, "bad2.safetensors")
    write_st(path, as_entries(S.t) + [("what.is.this", "F32", (1,), f32_raw([1.0]))])
    rc, _, err = run(path, "-o", out)
    assert rc == 2 and "what.is.this" in err, (rc, err)
    assert open(out, "rb").read() == b"old", "the existing output was changed"
    assert leftovers(TMP, "keep") == []
    rc, _, err = run(S.inp, "-o", S.inp)
    assert rc == 2 and "over the input" in err, (rc, err)
    # nor the --arch file, nor a FIFO (a rename would replace the node)
    arch = os.path.join(TMP, "in_arch.json")
    with open(arch, "w") as f:
        json.dump(ARCH, f)
    before = open(arch, "rb").read()
    rc, _, err = run(S.inp, "-o", arch, "--arch", arch)
    assert rc == 2 and "over the input" in err, (rc, err)
    assert open(arch, "rb").read() == before, "the --arch file was overwritten"
    fifo = os.path.join(TMP, "fifo.safetensors")
    os.mkfifo(fifo)
    rc, _, err = run(S.inp, "-o", fifo)
    assert rc == 2 and "not a regular file" in err and len(err.strip().splitlines()) == 1, (rc, err)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"


def t_fifo_inputs_refused():
    # A FIFO as the input or as --arch is refused at once (opening it would wait for a writer).
    fifo = os.path.join(TMP, "in.fifo")
    os.mkfifo(fifo)
    out = os.path.join(TMP, "from_fifo.safetensors")
    for args in ((fifo, "-o", out), (S.inp, "-o", out, "--arch", fifo)):
        rc, _, err = run(*args)
        assert rc == 2 and "not a regular file" in err and len(err.strip().splitlines()) == 1, \
            (args, rc, err)
        assert not os.path.exists(out)


def t_arch():
    arch = os.path.join(TMP, "arch.json")
    with open(arch, "w") as f:
        json.dump(ARCH, f)
    out = os.path.join(TMP, "with_arch.safetensors")
    rc, so, err = run(S.inp, "-o", out, "--arch", arch)
    assert rc == 0, "exit %d: %s" % (rc, err)
    _, got, meta, _, _ = read_st(out)
    assert meta["arch.json"] == open(arch).read() and meta["format"] == "pt", meta
    S.arch, S.out_arch = arch, out
    bad = os.path.join(TMP, "arch_bad.json")
    with open(bad, "w") as f:
        json.dump(dict(ARCH, mlp={"hidden": 2 * HID}), f)
    out2 = os.path.join(TMP, "arch_refused.safetensors")
    rc, _, err = run(S.inp, "-o", out2, "--arch", bad)
    assert rc == 2 and "blocks.0.mlp.fc.weight" in err and "shape" in err, (rc, err)
    assert not os.path.exists(out2)
    with open(bad, "w") as f:
        json.dump(dict(ARCH, layers=3), f)
    rc, _, err = run(S.inp, "-o", out2, "--arch", bad)
    assert rc == 2 and "blocks.2." in err and "missing" in err, (rc, err)


REC = "2026-04-29_SmearGateBOSFix_3Seed_1.06141"
REC_PROTO = "--protocol sliding --seq-len 2048 --stride 64 --tail-dup"


def t_record():
    out = os.path.join(TMP, "with_record.safetensors")
    rc, so, err = run(S.inp, "-o", out, "--arch", S.arch, "--record", REC,
                      "--record-protocol=" + REC_PROTO)
    assert rc == 0, "exit %d: %s" % (rc, err)
    _, got, meta, _, _ = read_st(out)
    assert meta["provenance.record"] == REC and meta["provenance.protocol"] == REC_PROTO, meta
    S.out_record = out
    _, _, meta, _, _ = read_st(S.out_arch)
    assert "provenance.record" not in meta, meta
    bad = os.path.join(TMP, "record_bad.safetensors")
    for args, word in ((["--record", "a\nb"], "--record"),
                       (["--record-protocol=--tail-dup\x1b[2J"], "--record-protocol"),
                       (["--record", "x" * 300], "longer than 255")):
        rc, _, err = run(S.inp, "-o", bad, *args)
        assert rc == 2 and word in err and len(err.strip().splitlines()) == 1, (rc, err)
        assert not os.path.exists(bad)


def t_help():
    rc, so, err = run("--help")
    assert rc == 0 and "usage" in so and "--drop" in so and "--arch" in so, (rc, so, err)
    rc, so, err = run()
    assert rc == 2 and err.startswith("pg_export: ") and len(err.strip().splitlines()) == 1, err


def t_pgolf_loader():
    root = os.environ.get("PG_BUILD_ROOT", "")
    pgpack = os.path.join(root, "tools", "pgpack")
    if not root or not os.access(pgpack, os.X_OK):
        return "SKIP no built tools/pgpack (PG_BUILD_ROOT unset or pgpack not built)"
    art = os.path.join(TMP, "tiny.pgz")
    p = subprocess.run([pgpack, "--weights", S.out_arch, "--arch", S.arch, "--calib", "none",
                        "-o", art], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, "pgpack exit %d: %s" % (p.returncode, p.stderr.strip()[-400:])
    assert os.path.getsize(art) > 0
    # the record the weights come from travels into the artifact
    art2 = os.path.join(TMP, "tiny_record.pgz")
    p = subprocess.run([pgpack, "--weights", S.out_record, "--calib", "none", "-o", art2],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, "pgpack exit %d: %s" % (p.returncode, p.stderr.strip()[-400:])
    p = subprocess.run([os.path.join(root, "tools", "pgunpack"), "--json", art2],
                       capture_output=True, text=True, timeout=60)
    meta = json.loads(p.stdout)["metadata"]
    assert meta["provenance.record"] == REC and meta["provenance.protocol"] == REC_PROTO, meta
    # an --arch that contradicts the weights' own arch.json is refused, not used
    other = os.path.join(TMP, "arch_softcap.json")
    with open(other, "w") as f:
        json.dump(dict(ARCH, head={"softcap": 20.0}), f)
    art3 = os.path.join(TMP, "tiny_refused.pgz")
    p = subprocess.run([pgpack, "--weights", S.out_record, "--arch", other, "--calib", "none",
                        "-o", art3], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "contradicts" in p.stderr and "head.softcap 20.0/30.0" in \
        p.stderr, (p.returncode, p.stderr)
    assert not os.path.exists(art3)
    return None


def t_mutated_inputs():
    """The reader of outside bytes against mutated files: every outcome is a success or an
    ExportError (one line), never another exception. In-process, on 400 seeded mutations of the
    banked input (byte flips, truncation, header-length edits, junk appended)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("pg_export_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(S.inp, "rb") as f:
        base = f.read()
    rng = random.Random(2026)
    path = os.path.join(TMP, "mutated.safetensors")
    outcomes = {"ok": 0, "refused": 0}
    for i in range(400):
        b = bytearray(base)
        kind = i % 4
        if kind == 0:
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == 1:
            b = b[: rng.randrange(len(b))]
        elif kind == 2:
            b[0:8] = struct.pack("<Q", rng.choice([0, 1, 7, len(b), 2 ** 63, rng.randrange(4096)]))
        else:
            pos = 8 + rng.randrange(min(len(b) - 8, 2000))
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        with open(path, "wb") as f:
            f.write(bytes(b))
        try:
            tensors = mod.read_safetensors(path)
            for t in (tensors.values() if isinstance(tensors, dict) else tensors):
                conv = getattr(t, "convert", None)
                if conv:
                    conv()
            outcomes["ok"] += 1
        except mod.ExportError as e:
            assert "\n" not in str(e), "a refusal spans lines: %r" % str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0, outcomes
    return None


class WorkLimit(Exception):
    pass


def bounded_work(fn, limit):
    """fn() with the lines it executes in the script counted; WorkLimit past limit. Counts
    steps, not time: a deterministic bound on the work an input can ask for."""
    count = [0]
    script = os.path.abspath(SCRIPT)

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
            if count[0] > limit:
                raise WorkLimit("more than %d lines executed" % limit)
        return local

    def tracer(frame, event, arg):
        return local if os.path.abspath(frame.f_code.co_filename) == script else None

    sys.settrace(tracer)
    try:
        return fn()
    finally:
        sys.settrace(None)


def _module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("pg_export_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def t_hostile_arch_layers():
    # A 70-byte arch asking for 10^12 layers: the check stops at the first missing tensor
    # instead of listing every layer's names first (hours and gigabytes before).
    mod = _module()
    arch = dict(ARCH, layers=10 ** 12)
    tensors = {"tok_emb.weight": mod.Tensor((V, D), bytes(4 * V * D))}
    try:
        bounded_work(lambda: mod.check_arch(tensors, arch, "arch.json"), 5000)
        raise AssertionError("the arch was accepted")
    except mod.ExportError as e:
        assert "blocks.0.attn.c_q.weight" in str(e) and "missing" in str(e), e
    path = os.path.join(TMP, "arch_layers.json")
    with open(path, "w") as f:
        json.dump(arch, f)
    out = os.path.join(TMP, "arch_layers.safetensors")
    rc, _, err = run(S.inp, "-o", out, "--arch", path)
    assert rc == 2 and err.count("\n") == 1 and "missing" in err, (rc, err)
    assert not os.path.exists(out)


def t_hostile_json_depth():
    # JSON nested 100,000 deep: json's decoder recursion ends in RecursionError, which must be
    # one refusal line, not a traceback
    deep = b"[" * 100000 + b"]" * 100000
    header = b'{"a":' + deep + b"}"
    path = os.path.join(TMP, "deep.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
    out = os.path.join(TMP, "deep_out.safetensors")
    rc, _, err = run(path, "-o", out)
    assert rc == 2 and err.count("\n") == 1 and "nested too deeply" in err, (rc, err)
    arch = os.path.join(TMP, "deep_arch.json")
    with open(arch, "wb") as f:
        f.write(deep)
    rc, _, err = run(S.inp, "-o", out, "--arch", arch)
    assert rc == 2 and err.count("\n") == 1 and "nested too deeply" in err, (rc, err)
    assert not os.path.exists(out)


MARKING_TORCH = """
import os
__version__ = "2.5.0"
class Tensor: pass
def load(path, map_location=None, weights_only=None):
    open(os.environ["PG_TORCH_MARKER"], "w").close()
    raise RuntimeError("the stand-in loads nothing")
"""


def t_hostile_torch_zip():
    # A torch.save-like zip whose member is deflated: torch.load inflates it to the size the
    # archive declares (a 17 KB file gave a 16 MB tensor), so it is refused before torch.load
    # sees it. A stand-in torch notes whether load was called.
    import zipfile  # noqa: PLC0415
    stub = os.path.join(TMP, "marking")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "torch.py"), "w") as f:
        f.write(MARKING_TORCH)
    pt = os.path.join(TMP, "deflated.pt")
    with zipfile.ZipFile(pt, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("archive/data/0", bytes(1 << 22))
    assert os.path.getsize(pt) < 8192
    marker = os.path.join(TMP, "torch_load_called")
    out = os.path.join(TMP, "deflated.safetensors")
    p = subprocess.run([sys.executable, SCRIPT, pt, "-o", out], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=stub, PG_TORCH_MARKER=marker),
                       timeout=120)
    assert not os.path.exists(marker), "torch.load was given the deflated archive"
    assert p.returncode == 2 and p.stderr.count("\n") == 1, (p.returncode, p.stderr)
    assert "compressed" in p.stderr and "deflated.pt" in p.stderr, p.stderr
    assert not os.path.exists(out)
    # the same members stored, as torch.save writes them, reach torch.load
    with zipfile.ZipFile(pt, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    p = subprocess.run([sys.executable, SCRIPT, pt, "-o", out], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=stub, PG_TORCH_MARKER=marker),
                       timeout=120)
    assert os.path.exists(marker) and p.returncode == 2, (p.returncode, p.stderr)


TESTS = [
    ("export of a banked state dict runs", t_export_runs),
    ("output layout: padded header, sorted names, contiguous F32 data, metadata", t_layout),
    ("output names: unbanked, prefixes stripped, nothing else", t_names),
    ("unbanking indices: c_q=qo[i], proj=qo[n+i], c_k=kv[i], c_v=kv[n+i]", t_unbank_indices),
    ("F16 bank to fp32, exact (mlp.fc = mlp_up_bank[i])", t_f16),
    ("BF16 to fp32, exact (mlp.proj = mlp_down_bank[i], tok_emb)", t_bf16),
    ("F32 tensors bit for bit under module./_orig_mod. prefixes", t_f32_prefixes),
    ("unknown name refused, named, no output", t_unknown_refused),
    ("quantized-looking name refused with a hint", t_quantized_hint),
    ("--drop leaves matching names out", t_drop),
    ("F64 rounded to nearest; a non-float tensor refused unless dropped",
     t_f64_and_dropped_ints),
    ("torch.load path (against a stand-in torch module)", t_torch_path_stub),
    ("a pickle that runs code is refused, never unpickled unrestricted", t_never_unpickles_code),
    ("bank slice colliding with a per-layer tensor refused", t_collision_refused),
    ("banks with different layer counts refused", t_inconsistent_banks),
    ("NaN and infinity refused, element named", t_nan_refused),
    ("failure leaves an existing output alone; input is never the output",
     t_no_overwrite_on_failure),
    ("a FIFO as the input or --arch is refused without blocking", t_fifo_inputs_refused),
    ("--arch: stored in __metadata__, core shapes checked", t_arch),
    ("--record, --record-protocol: stored as provenance; control characters refused",
     t_record),
    ("mutated inputs: a success or one ExportError line, nothing else", t_mutated_inputs),
    ("hostile --arch: 10^12 layers cost no more than the tensors present", t_hostile_arch_layers),
    ("hostile JSON nesting: one refusal line, no traceback", t_hostile_json_depth),
    ("hostile torch zip: a deflated member refused before torch.load", t_hostile_torch_zip),
    ("--help and usage errors", t_help),
    ("pgolf's strict loader accepts the output (pgpack)", t_pgolf_loader),
]


def main():
    global SCRIPT, TMP
    if len(sys.argv) != 2:
        print("usage: test_export.py PATH/TO/pg_export.py", file=sys.stderr)
        return 2
    SCRIPT = sys.argv[1]
    TMP = tempfile.mkdtemp(prefix="pg_export_test.")
    failed = 0
    print("1..%d" % len(TESTS))
    try:
        for k, (name, fn) in enumerate(TESTS, 1):
            try:
                skip = fn()
                if skip:
                    print("ok %d - %s # %s" % (k, name, skip))
                else:
                    print("ok %d - %s" % (k, name))
            except Exception as e:  # noqa: BLE001 (report any failure as TAP)
                failed += 1
                print("not ok %d - %s" % (k, name))
                for line in ("%s: %s" % (type(e).__name__, e)).splitlines():
                    print("# " + line)
            sys.stdout.flush()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
