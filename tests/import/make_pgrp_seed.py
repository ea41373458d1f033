#!/usr/bin/env python3
"""make_pgrp_seed.py: the PGRP seed of tests/fuzz/fuzz_import.c (tests/fuzz/seeds/import/
pgrp_stored.bin), written from the wm seed beside it (wm.zip, make_fixtures.py's small model).

A -Dfuzz=true build reads PGRP group streams as stored bytes (no lrzip program runs,
spec/import.md §7), so this seed holds each group's values uncompressed in the layout the
importer undoes: per group, each matrix's rows reordered by a permutation (for the sorted groups)
and transposed; the remainder (w's other tensors, m, and the shape manifest) a brotli torch.save;
the permutations a brotli stream of u16. Run from the repository root with torch and brotli.
"""
import io
import struct

import brotli
import torch

GROUPS = ["_tok_emb.weight.q", "attn.c_k.weight.q", "attn.c_q.weight.q", "attn.c_v.weight.q",
          "attn.proj.weight.q", "mlp.fc.weight.q", "mlp.proj.weight.q"]
SORTED = {"_tok_emb.weight.q", "attn.c_q.weight.q", "mlp.fc.weight.q"}


def main():
    d = torch.load("tests/fuzz/seeds/import/wm.zip", map_location="cpu")
    w, meta = d["w"], d["m"]
    layers = 1 + max(int(k.split(".")[1]) for k in w if k.startswith("blocks."))
    g = torch.Generator().manual_seed(1707)
    streams, perms, shapes, rest = [], b"", {}, dict(w)
    for gk in GROUPS:
        names = [gk[1:]] if gk.startswith("_") else [f"blocks.{i}.{gk}" for i in range(layers)]
        names = [n for n in names if n in w]
        if not names:
            streams.append(b"")
            continue
        blob = b""
        for n in names:
            t = rest.pop(n)
            if gk in SORTED:
                p = torch.randperm(t.shape[0], generator=g)
                perms += p.to(torch.int32).numpy().astype("<u2").tobytes()
                t = t[p]
            blob += t.T.contiguous().numpy().tobytes()
        shapes[gk] = [tuple(w[n].shape) for n in names]
        streams.append(blob)
    buf = io.BytesIO()
    torch.save({"r": rest, "m": meta, "s": shapes}, buf)
    streams.append(brotli.compress(buf.getvalue(), quality=11, lgwin=24))
    streams.append(brotli.compress(perms, quality=11) if perms else b"")
    out = b"PGRP" + struct.pack("<I", len(streams))
    out += b"".join(struct.pack("<I", len(s)) for s in streams) + b"".join(streams)
    with open("tests/fuzz/seeds/import/pgrp_stored.bin", "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
