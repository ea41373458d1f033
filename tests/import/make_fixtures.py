#!/usr/bin/env python3
"""make_fixtures.py: small record-format artifacts for tests/test_import.c, made with torch by
this file's own reimplementation of the records' export formats as spec/import.md §3 describes
them (no upstream code), and the values each format's dequantizer gives (fp32, before the
record's final cast to the model's dtype), as CRC-32s.

The model has the baseline's tensors at a small size (V 1024, d 128, 2 layers, 2 heads of 64,
1 KV head, hidden 520): big enough that the embedding and the MLP matrices pass the formats'
65,536-element passthrough threshold. Weights are sparse Student-t samples (95% zeros, so the
committed files stay small).

Writes base_int8.ptz (int8-per-row, zlib 9); wm_int6.ptz (wm: int6 attention/MLP, int8
embedding, xz) and its zstd twin wm_int6_zstd.ptz (made with the zstd command); gptq_int6.ptz
(wm with 'gptq (int6)' notes, BSHF stride 2, xz); lqer_int6.ptz (wm as the LQER record writes
it: int8 row gates, two '+lqer_asym' matrices; xz) with lqer_arch.json; expect.json (for each
file and tensor the element count and the CRC-32 of the expected values' fp32 little-endian
bytes: the test compares every bit through it); base_arch.json (the arch the shapes imply); and
the seeds of tests/fuzz/fuzz_import.c (fuzz_seeds below)."""
import io
import json
import lzma
import os
import subprocess
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
V, D, L, H, KV, HD, HID = 1024, 128, 2, 2, 1, 64, 520
PASS_MAX = 65536
CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")


def model():
    g = torch.Generator().manual_seed(1234)

    def t(*shape, scale=0.02):
        x = torch.distributions.StudentT(2.0).sample(shape)
        keep = torch.rand(shape) < 0.05  # 95% zeros: small committed files
        keep[..., 0] = True  # no row is all zero
        return (x * keep * scale).float()

    torch.manual_seed(1234)
    sd = {"tok_emb.weight": t(V, D).bfloat16()}  # the baseline keeps the embedding in bf16
    for i in range(L):
        p = "blocks.%d." % i
        sd[p + "attn.c_q.weight"] = t(H * HD, D)
        sd[p + "attn.c_k.weight"] = t(KV * HD, D)
        sd[p + "attn.c_v.weight"] = t(KV * HD, D)
        sd[p + "attn.proj.weight"] = t(D, H * HD)
        sd[p + "attn.q_gain"] = torch.full((H,), 1.5)
        sd[p + "mlp.fc.weight"] = t(HID, D)
        sd[p + "mlp.proj.weight"] = t(D, HID)
        sd[p + "attn_scale"] = 1 + t(D, scale=0.1)
        sd[p + "mlp_scale"] = 1 + t(D, scale=0.1)
        sd[p + "resid_mix"] = torch.stack([1 + t(D, scale=0.1), t(D, scale=0.1)])
    sd["skip_weights"] = 1 + t(1, D, scale=0.1)
    return sd


def save(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def digest(tensors):
    out = {}
    for k in sorted(tensors):
        t = tensors[k].float().contiguous()
        b = t.numpy().astype("<f4").tobytes()
        out[k] = {"numel": t.numel(), "crc32": zlib.crc32(b)}
    return out


# ---- int8-per-row (the baseline's export) ----

def int8_rows(t):
    """Per-row clip at the 0.9999984 quantile of |W|, scale max(clip/127, 1/127) (the values are
    rounded with the fp32 scale, the stored scale is its fp16 rounding)."""
    t32 = t.float()
    if t32.ndim == 2:
        clip = torch.quantile(t32.abs(), 0.9999984, dim=1)
        c = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        s = (clip / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(c / s[:, None]), -127, 127).to(torch.int8)
        return q, s.to(torch.float16)
    clip = float(torch.quantile(t32.abs().flatten(), 0.9999984).item())
    s = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / s), -127, 127).to(torch.int8)
    return q, s


def export_int8(sd):
    obj = {"__quant_format__": "int8_clean_per_row_v1", "quantized": {}, "scales": {},
           "dtypes": {}, "passthrough": {}}
    orig, expect = {}, {}
    for name, t in sd.items():
        if t.numel() <= PASS_MAX:
            if any(p in name for p in CONTROL):
                kept = t.float()
            else:
                orig[name] = str(t.dtype).split(".")[1]
                kept = t.to(torch.float16)
            obj["passthrough"][name] = kept
            expect[name] = kept.float()
            continue
        q, s = int8_rows(t)
        obj["quantized"][name] = q
        obj["scales"][name] = s
        obj["dtypes"][name] = str(t.dtype).split(".")[1]
        obj["qmeta"] = obj.get("qmeta", {})
        if s.ndim > 0:
            obj["qmeta"][name] = {"scheme": "per_row", "axis": 0}
            expect[name] = q.float() * s.float().view(q.shape[0], *([1] * (q.ndim - 1)))
        else:
            expect[name] = q.float() * float(s.item())
    if orig:
        obj["passthrough_orig_dtypes"] = orig
    return obj, expect


# ---- wm: int6/int8 notes (mixed exports) and gptq (intN) notes ----

def int6_rows(t):
    t32 = t.float()
    s = (t32.abs().amax(dim=1) / 31.0).clamp_min(1e-12).to(torch.float16)
    s = s.clamp_min(torch.finfo(torch.float16).tiny)
    q = torch.clamp(torch.round(t32 / s.float()[:, None]), -32, 31).to(torch.int8)
    return q, s


def sdclip_rows(t, k, bits):
    r = 2 ** (bits - 1) - 1
    t32 = t.float()
    s = (k * t32.std(dim=1) / r).clamp_min(1e-10).to(torch.float16)
    q = torch.clamp(torch.round(t32 / s.float()[:, None]), -r, r).to(torch.int8)
    return q, s


def export_wm(sd, gptq):
    w, m, expect = {}, {}, {}
    for name, t in sd.items():
        if t.numel() <= PASS_MAX:
            w[name] = t.to(torch.float16)
            m[name] = "passthrough (float16)" if gptq else "passthrough"
            expect[name] = w[name].float()
            continue
        if gptq:
            bits = 8 if "tok_emb" in name else 6
            q, s = sdclip_rows(t, 20.0 if bits == 8 else 12.85, bits)
            m[name] = "gptq (int%d)" % bits
        elif "tok_emb" in name:
            q, s = int8_rows(t)
            m[name] = {"type": "int8"}
        else:
            q, s = int6_rows(t)
            m[name] = {"type": "int6"}
        w[name + ".q"], w[name + ".scale"] = q, s
        expect[name] = q.float() * s.float().view(q.shape[0], 1)
    return {"w": w, "m": m}, expect


def lqer_asym(E, r=4, g=64):
    """LQER's asymmetric factors of an error matrix (spec/records.md 5.7)."""
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    A, B = (U[:, :r] * S[:r]).contiguous(), Vh[:r, :].contiguous()
    sA = (A.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16)
    qA = torch.clamp(torch.round(A / sA.float()), -2, 1).to(torch.int8)
    Bf = B.reshape(-1, g)
    sB = (Bf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-10) / 7.5).to(torch.float16).reshape(-1)
    qB = torch.clamp(torch.round(Bf / sB.float().reshape(-1, 1)), -8, 7)
    qB = qB.to(torch.int8).reshape(B.shape)
    return qA, sA, qB, sB


def pgolf_lqer(W, qA, sA, qB, sB, g=64):
    """pgolf's LQER dequantization (spec/format.md 5): the products summed in fp64 in ascending
    k, rounded to fp32 once, added in fp32 (torch's fp32 matmul may differ in the last bit)."""
    a = (qA.float() * sA.float()).double()
    b = (qB.reshape(-1, g).float() * sB.float().view(-1, 1)).reshape(qB.shape).double()
    acc = torch.zeros(W.shape, dtype=torch.float64)
    for k in range(qA.shape[1]):
        acc += a[:, k, None] * b[None, k, :]
    return W + acc.float()


def export_lqer(sd):
    """wm as the LQER record writes it: 'gate_int8_row' gates (.gq, .gs), 'gptq (intN)' with
    '+lqer_asym' on two matrices, 'passthrough (float16)'."""
    obj, expect = export_wm({k: v for k, v in sd.items() if not k.endswith("attn_gate_w")},
                            gptq=True)
    w, m = obj["w"], obj["m"]
    for name, t in sd.items():
        if name.endswith("attn_gate_w"):
            s = (t.float().abs().amax(dim=1).clamp_min(1e-10) / 127.0).to(torch.float16)
            q = torch.clamp(torch.round(t.float() / s.float().view(-1, 1)), -127, 127)
            q = q.to(torch.int8)
            w[name + ".gq"], w[name + ".gs"], m[name] = q, s, "gate_int8_row"
            expect[name] = q.float() * s.float().view(-1, 1)
    for name in ("tok_emb.weight", "blocks.0.mlp.fc.weight"):
        q, s = w[name + ".q"], w[name + ".scale"]
        Wq = q.float() * s.float().view(-1, 1)
        qA, sA, qB, sB = lqer_asym(sd[name].float() - Wq)
        for suffix, v in ((".lqA_a", qA), (".lqAs_a", sA), (".lqB_a", qB), (".lqBs_a", sB)):
            w[name + suffix] = v
        m[name] += "+lqer_asym"
        expect[name] = pgolf_lqer(Wq, qA, sA, qB, sB)
    return obj, expect


def bshf(data, k=2):
    return b"BSHF" + bytes([k]) + b"".join(data[p::k] for p in range(k))


def fuzz_seeds():
    """Tiny inputs for tests/fuzz/fuzz_import.c (V 64, d 16, two layers, one head of 64,
    hidden 32; every matrix quantized whatever its size): raw torch.save archives, which the
    fuzzer can mutate, and one zlib stream."""
    out = os.path.join(HERE, "..", "fuzz", "seeds", "import")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(7)
    sd = {"tok_emb.weight": torch.randn(64, 16) * 0.02}
    for i in range(2):
        p = "blocks.%d." % i
        for k, shape in (("attn.c_q.weight", (64, 16)), ("attn.c_k.weight", (64, 16)),
                         ("attn.c_v.weight", (64, 16)), ("attn.proj.weight", (16, 64)),
                         ("mlp.fc.weight", (32, 16)), ("mlp.proj.weight", (16, 32))):
            sd[p + k] = torch.randn(*shape) * 0.02
        sd[p + "attn.q_gain"] = torch.full((1,), 1.5)
        for k in ("attn_scale", "mlp_scale"):
            sd[p + k] = torch.ones(16)
        sd[p + "resid_mix"] = torch.stack([torch.ones(16), torch.zeros(16)])
    sd["skip_weights"] = torch.ones(1, 16)
    q = {k: int8_rows(v) for k, v in sd.items() if v.ndim == 2 and v.numel() >= 256}
    base = {"__quant_format__": "int8_clean_per_row_v1",
            "quantized": {k: v[0] for k, v in q.items()}, "scales": {k: v[1] for k, v in q.items()},
            "dtypes": {k: "float32" for k in q},
            "passthrough": {k: v.half() for k, v in sd.items() if k not in q}}
    w, m = {}, {}
    for k, v in sd.items():
        if k in q:
            qq, ss = sdclip_rows(v, 12.85, 6)
            w[k + ".q"], w[k + ".scale"], m[k] = qq, ss, "gptq (int6)"
        else:
            w[k], m[k] = v.half(), "passthrough (float16)"
    for name, data in (("base.zip", save(base)), ("wm.zip", save({"w": w, "m": m})),
                       ("base.zlib", zlib.compress(save(base), 9))):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    fuzz_seeds()
    sd = model()
    expect = {}
    obj, e = export_int8(sd)
    write("base_int8.ptz", zlib.compress(save(obj), 9))
    expect["base_int8.ptz"] = digest(e)
    obj, e = export_wm(sd, gptq=False)
    raw = save(obj)
    write("wm_int6.ptz", lzma.compress(raw, preset=6))
    write("wm_int6_zstd.ptz", subprocess.run(["zstd", "-q", "-19", "-c"], input=raw,
                                             check=True, capture_output=True).stdout)
    expect["wm_int6.ptz"] = expect["wm_int6_zstd.ptz"] = digest(e)
    obj, e = export_wm(sd, gptq=True)
    write("gptq_int6.ptz", lzma.compress(bshf(save(obj)), preset=6))
    expect["gptq_int6.ptz"] = digest(e)
    sd2 = dict(sd)
    for i in range(L):
        sd2["blocks.%d.attn.attn_gate_w" % i] = torch.randn(H, 16) * 0.1
    obj, e = export_lqer(sd2)
    write("lqer_int6.ptz", lzma.compress(save(obj), preset=9))
    expect["lqer_int6.ptz"] = digest(e)
    with open(os.path.join(HERE, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)
        f.write("\n")
    arch = {"vocab_size": V, "dim": D, "layers": L, "heads": H, "kv_heads": KV, "head_dim": HD,
            "mlp": {"hidden": HID}}
    with open(os.path.join(HERE, "base_arch.json"), "w") as f:
        json.dump(arch, f, indent=2, sort_keys=True)
        f.write("\n")
    arch["attention"] = {"gate": "sparse_sigmoid", "gate_window": 16}
    with open(os.path.join(HERE, "lqer_arch.json"), "w") as f:
        json.dump(arch, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
