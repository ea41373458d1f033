#!/usr/bin/env python3
"""make_fixtures.py: the torch.save files tests/test_torchzip.c reads (run with torch installed;
the outputs are committed, so the tests themselves need no Python).

Valid files hold known values (test_torchzip.c checks them); the hostile ones are built by
rewriting a valid archive's entries with the standard zipfile module, and each must be refused.
"""
import collections
import io
import os
import pickle
import struct
import sys
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def save(obj, name, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(buf.getvalue())
    return buf.getvalue()


def plain_obj():
    sd = collections.OrderedDict()
    sd["w"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    sd["h"] = torch.tensor([1.5, -2.0, 65504.0], dtype=torch.float16)
    sd["b"] = torch.tensor([[0.5, 3.0]], dtype=torch.bfloat16)
    sd["q"] = torch.tensor([[-128, 0, 127], [1, 2, 3]], dtype=torch.int8)
    sd["s"] = torch.tensor(0.25, dtype=torch.float16)  # a 0-d tensor
    base = torch.arange(10, dtype=torch.int64)
    sd["view"] = base[4:7]  # a view: storage offset 4 into a shared storage of 10
    sd["base"] = base
    return {
        "sd": sd,
        "meta": {"n": 3, "neg": -70000, "big": 2**40 + 1, "x": 0.1, "t": True, "f": False,
                 "none": None, "name": "per_row"},
        "list": [1, "two", (3, 4)],
        "tag": "fixture_v1",
    }


def rezip(src, name, replace=None, method=zipfile.ZIP_STORED, drop=(), folder=None):
    """The archive src with entries replaced (by basename), its folder renamed, rewritten by
    zipfile."""
    zin = zipfile.ZipFile(io.BytesIO(src))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=method) as zout:
        for info in zin.infolist():
            base = info.filename.split("/", 1)[1]
            if base in drop:
                continue
            data = zin.read(info.filename)
            if replace and base in replace:
                data = replace[base]
            zi = zipfile.ZipInfo(folder + "/" + base if folder else info.filename)
            zi.compress_type = method  # a fixed date: the same bytes on every run
            zout.writestr(zi, data)
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(out.getvalue())
    return out.getvalue()


def X(s):
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def long_names():
    """A valid archive whose folder (250 bytes) and storage key (200 bytes) are both long: one
    float32 tensor of 6 elements, the whole saved object."""
    key, folder = "k" * 200, "f" * 250
    pkl = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((" + X("storage") +
           b"ctorch\nFloatStorage\n" + X(key) + X("cpu") + b"K\x06tQK\x00K\x06\x85K\x01\x85\x89"
           b"ccollections\nOrderedDict\n)RtR.")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo(folder + "/data.pkl"), pkl)
        z.writestr(zipfile.ZipInfo(folder + "/byteorder"), b"little")
        z.writestr(zipfile.ZipInfo(folder + "/data/" + key), struct.pack("<6f", 0, 1, 2, 3, 4, 5))
    with open(os.path.join(HERE, "long_names.pt"), "wb") as f:
        f.write(out.getvalue())


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def main():
    plain = save(plain_obj(), "plain.pt")
    save(plain_obj(), "proto4.pt", pickle_protocol=4)
    # Hostile or broken variants; each must be refused.
    rezip(plain, "evil_system.pt", {"data.pkl": pickle.dumps({"x": Evil()}, protocol=2)})
    evil = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85R."
    rezip(plain, "evil_eval.pt", {"data.pkl": evil})
    rezip(plain, "deflated.pt", method=zipfile.ZIP_DEFLATED)
    rezip(plain, "long_folder.pt", folder="f" * 250)  # valid: a long folder name
    rezip(plain, "folder_too_long.pt", folder="f" * 291)
    long_names()
    rezip(plain, "missing_storage.pt", drop=("data/0",))
    rezip(plain, "short_storage.pt", {"data/0": b"\x00" * 8})
    deep = []
    for _ in range(100):
        deep = [deep]
    rezip(plain, "deep.pt", {"data.pkl": pickle.dumps(deep, protocol=2)})
    rezip(plain, "cycle.pt", {"data.pkl": b"\x80\x02]q\x00h\x00a."})
    with open(os.path.join(HERE, "truncated.pt"), "wb") as f:
        f.write(plain[: len(plain) // 2])
    bad = bytearray(plain)
    i = bad.rfind(b"PK\x01\x02")  # last directory entry: its local header offset far away
    struct.pack_into("<I", bad, i + 42, len(plain) + 1000)
    with open(os.path.join(HERE, "bad_offset.pt"), "wb") as f:
        f.write(bad)
    bad = bytearray(plain)
    z = zipfile.ZipFile(io.BytesIO(plain))
    info = [x for x in z.infolist() if x.filename.endswith("/data.pkl")][0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    bad[start + 20] ^= 0xFF  # a byte of data.pkl: the CRC no longer matches
    with open(os.path.join(HERE, "bad_crc.pt"), "wb") as f:
        f.write(bad)
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    save({"t": t}, "noncontig.pt")


if __name__ == "__main__":
    sys.exit(main())
