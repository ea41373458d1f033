#!/usr/bin/env python3
"""make_pgrp_golden.py SNAPSHOT_GITDIR OUTDIR: the PGRP golden for tests/test_import_goldens.c,
made by the OWN export code of the LQER record that writes the per-group layout (README.md in
this folder says which file, at which commit, with which seeds).

As make_record_goldens.py (whose helpers it uses): the record's train_gpt.py is loaded as a
module (its training never runs), its GPT is built at a small size and filled with seeded values,
and what its serialize() runs with COMPRESSOR=pergroup runs: _unbank_state_dict,
gptq_mixed_quantize, _serialize_pergroup (the real `lrzip` program must be on PATH). The
reference values come from its deserialize(): _deserialize_pergroup, then dequantize_mixed.
Written to OUTDIR: rec_pgrp_lrzip.ptz, rec_pgrp_arch.json, and the entry rec_pgrp_lrzip.ptz of
rec_expect.json (the other entries are kept as they are).
"""
import json
import os
import shutil
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_record_goldens as mrg  # noqa: E402

PGRP = mrg.R + "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_gpt.py"


def pgrp(gitdir):
    L = 4
    os.environ.update({
        "VOCAB_SIZE": "1024", "NUM_LAYERS": str(L), "MODEL_DIM": "128", "NUM_HEADS": "2",
        "NUM_KV_HEADS": "1", "MLP_MULT": "5", "XSA_LAST_N": str(L), "LOOP_START": "1",
        "LOOP_END": "2", "NUM_LOOPS": "2", "PARALLEL_START_LAYER": "3",
        "SPARSE_ATTN_GATE_ENABLED": "1", "GATE_WINDOW": "12", "SMEAR_GATE_ENABLED": "1",
        "GATED_ATTN_QUANT_GATE": "1", "EMBED_BITS": "7", "MLP_CLIP_SIGMAS": "11.5",
        "ATTN_CLIP_SIGMAS": "13.0", "EMBED_CLIP_SIGMAS": "14.0", "LQER_ENABLED": "1",
        "LQER_ASYM_ENABLED": "1", "LQER_RANK": "4", "LQER_FACTOR_BITS": "4",
        "LQER_ASYM_GROUP": "64", "LQER_TOP_K": "3", "COMPRESSOR": "pergroup"})
    m, commit = mrg.load_record(gitdir, PGRP, "rec_pgrp")
    h = m.Hyperparameters()
    m.log = lambda *a, **k: None
    torch.manual_seed(2706)
    model = m.GPT(h).bfloat16()
    m.restore_fp32_params(model)
    mrg.fill(model, 2706)
    sd = m._unbank_state_dict(model.state_dict(), L)
    g = torch.Generator().manual_seed(2707)
    hessians = {}
    for name, t in sd.items():
        if t.ndim == 2 and t.numel() > 65536:
            x = torch.randn(512, t.shape[1], generator=g)
            hessians[name] = x.T @ x / 512
    result, meta = m.gptq_mixed_quantize(sd, hessians, h)
    # At this size the attention matrices (128 x 128, 64 x 128) fall under the record's 65,536
    # element threshold and stay fp16; its full-size model quantizes them. So that all six
    # per-layer groups are exercised, they are quantized here as gptq_mixed_quantize does the
    # larger matrices: the record's own gptq_quantize_weight, its attention clip sigmas, its
    # matrix bits, the note it writes.
    bits = h.matrix_bits
    for name in sorted(sd):
        if ".attn." in name and name.rsplit(".", 2)[-2] in ("c_q", "c_k", "c_v", "proj") \
                and meta.get(name, "").startswith("passthrough"):
            x = torch.randn(512, sd[name].shape[1], generator=g)
            q, s = m.gptq_quantize_weight(sd[name], x.T @ x / 512, clip_sigmas=h.attn_clip_sigmas,
                                          clip_range=2 ** (bits - 1) - 1)
            del result[name]
            result[name + ".q"] = q
            result[name + ".scale"] = s
            meta[name] = f"gptq (int{bits})"
    td = tempfile.mkdtemp(prefix="pgrp_gold_")
    try:
        blob = m._serialize_pergroup(result, meta, L, td)
        back, bmeta = m._deserialize_pergroup(blob, L, td)
    finally:
        shutil.rmtree(td)
    assert blob[:4] == b"PGRP"
    tmpl = m._unbank_state_dict(model.state_dict(), L)
    out = m.dequantize_mixed(back, bmeta, tmpl)
    tmpl32 = {k: torch.empty(0, dtype=torch.float32) for k in tmpl}
    out_f32 = m.dequantize_mixed(back, bmeta, tmpl32)
    d = mrg.digest(out, out_f32)
    mrg.lqer_ulps(d, back, bmeta, out_f32)
    arch = mrg.lqer_arch(L, model)
    return blob, d, commit, arch


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: make_pgrp_golden.py SNAPSHOT_GITDIR OUTDIR")
    gitdir, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)

    def write(name, data):
        p = os.path.join(outdir, name)
        with open(p + ".tmp", "wb") as f:
            f.write(data)
        os.replace(p + ".tmp", p)

    blob, d, commit, arch = pgrp(gitdir)
    write("rec_pgrp_lrzip.ptz", blob)
    write("rec_pgrp_arch.json", (json.dumps(arch, indent=2, sort_keys=True) + "\n").encode())
    ep = os.path.join(outdir, "rec_expect.json")
    expect = {}
    if os.path.exists(ep):
        with open(ep, encoding="utf-8") as f:
            expect = json.load(f)
    expect["rec_pgrp_lrzip.ptz"] = {"record": PGRP, "commit": commit, "tensors": d}
    write("rec_expect.json", (json.dumps(expect, indent=1, sort_keys=True) + "\n").encode())


if __name__ == "__main__":
    main()
