#!/usr/bin/env python3
"""make_goldens.py: golden forward passes of the challenge's own PyTorch code, for test_golden.c.

usage: make_goldens.py CHECKOUT [--out DIR] [--only NAME]...

CHECKOUT is a local checkout of the challenge repository (github.com/openai/parameter-golf); this
script fetches nothing. For each case below it imports the record's train_gpt.py as a module
(main() is not run), builds the record's GPT with the record's own Hyperparameters class and
constructor at a tiny size (the record's architectural switches as its run set them, the sizes
shrunk), sets every parameter from a fixed seed (the ones the record inits to zero included, so
every path carries signal), and runs the record's own evaluation function (eval_val) in fp32
on the CPU with fixed tokens. It writes, per case NAME:

  NAME.arch.json       pgolf's arch for the same model (spec/arch.md)
  NAME.safetensors     the weights: the record's state_dict through tools/pg_export.py
  NAME.golden.json     tokens, the batch layout eval_val used, the per-token NLL of every target
                       (fp32 values as float64), the record's val_loss and val_bpb, the byte
                       tables or sidecar it counted bytes with, and (one case) logits

Substitutions, all outside the model's arithmetic: flash_attn_interface (CUDA only) by a plain
fp32 causal attention with FA3's GQA and varlen semantics (below); torch.compile by the identity;
triton and sentencepiece by inert modules (only the training kernels and the tokenizer loader use
them); torch.autocast(device_type="cuda") disables itself on a machine without CUDA, so every
op runs in fp32. F.cross_entropy is wrapped to record the per-token values (the same fp32 call
with reduction="none") next to the record's own reduction.

Needs torch and numpy (pip install torch numpy); the outputs do not depend on the torch build
beyond fp32 rounding.
"""

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import types

SEED = 20260412
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPORT = os.path.join(REPO_ROOT, "tools", "pg_export.py")
REC = "records/track_10min_16mb/"

# ---- the cases ----------------------------------------------------------------------------------
# env: the record's architectural settings as its logged run used them, then the tiny sizes.

CASES = {
    # R1: the naive baseline (relu², full RoPE, plain skips, SDPA with GQA).
    "baseline": {
        "record": REC + "2026-03-17_NaiveBaseline/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "128", "NUM_LAYERS": "5", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "2", "TRAIN_SEQ_LEN": "64",
            "VAL_BATCH_SIZE": str(8 * 2 * 64), "QK_GAIN_INIT": "1.5",
        },
        "windows": 3,
        "rope": {"head_dim": 64, "rot": 64, "ntk_len": 0, "T": 1024},
        "arch": {
            "vocab_size": 128, "dim": 32, "layers": 5, "heads": 4, "kv_heads": 2,
            "attention": {"q_gain": 1.5, "rope_dims": 8, "rope_base": 10000.0},
            "mlp": {"hidden": 64, "act": "relu2"},
            "structure": {"skips": "plain"},
            "head": {"softcap": 30.0},
        },
    },
    # R6: XSA, BigramHash (with projection), SmearGate v1, value embeddings (with projection),
    # partial RoPE with the hard-coded NTK rescale (windows longer than 1024), LN scale,
    # leaky relu², banked weights.
    "r6": {
        "record": REC + "2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "128", "NUM_LAYERS": "4", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "3.0", "TRAIN_SEQ_LEN": "1040",
            "EVAL_SEQ_LEN": "1040", "VAL_BATCH_SIZE": str(8 * 1040), "QK_GAIN_INIT": "1.5",
            "BIGRAM_VOCAB_SIZE": "61", "BIGRAM_DIM": "12", "TRIGRAM": "0", "XSA_LAST_N": "3",
            "ROPE_DIMS": "4", "LN_SCALE": "1", "DTG_ENABLED": "0", "VE_ENABLED": "1",
            "VE_DIM": "8", "VE_LAYERS": "2,3", "GATED_ATTENTION": "0", "VALUE_RESIDUAL": "0",
            "MTP_NUM_HEADS": "0",
        },
        "windows": 2,
        "stride": 256,
        "rope": {"head_dim": 64, "rot": 16, "ntk_len": 1024, "T": 2048},
        "arch": {
            "vocab_size": 128, "dim": 32, "layers": 4, "heads": 4, "kv_heads": 2,
            "block": {"ln_scale": "physical"},
            "attention": {"q_gain": 1.5, "rope_dims": 4, "rope_base": 10000.0,
                          "rope_ntk_len": 1024, "xsa_layers": [1, 2, 3]},
            "mlp": {"hidden": 96, "act": "leaky_relu2", "leaky_slope": 0.5},
            "embeddings": {"bigram_buckets": 61, "bigram_dim": 12, "bigram_scale": 0.05,
                           "ve_layers": [2, 3], "ve_dim": 8, "ve_scale": 0.1, "smear": "v1"},
            "structure": {"skips": "plain"},
            "head": {"softcap": 30.0},
        },
    },
    # R12 (current #1): loops, two-lane parallel residuals, gated skips, sparse attention gate
    # (c = 0.5), SmearGate v2 with the BOS fix, XSA, doc-masked varlen eval with a segment cap,
    # CaseOps byte sidecar.
    "r12": {
        "record": REC + "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
                        "/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "128", "NUM_LAYERS": "5", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "2.0", "TRAIN_SEQ_LEN": "48", "EVAL_SEQ_LEN": "48",
            "VAL_BATCH_TOKENS": str(8 * 3 * 48), "XSA_LAST_N": "5", "SKIP_GATES_ENABLED": "1",
            "ROPE_DIMS": "4", "ROPE_YARN": "0", "LN_SCALE": "1", "QK_GAIN_INIT": "5.0",
            "NUM_LOOPS": "2", "LOOP_START": "1", "LOOP_END": "2", "PARALLEL_START_LAYER": "3",
            "PARALLEL_FINAL_LANE": "mean", "ATTN_OUT_GATE_ENABLED": "0",
            "SMEAR_GATE_ENABLED": "1", "GATE_WINDOW": "12", "GATED_ATTN_ENABLED": "0",
            "SPARSE_ATTN_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_SCALE": "0.5",
            "CASEOPS_ENABLED": "1", "FUSED_CE_ENABLED": "1",
        },
        "windows": 6,
        "docs": True,
        "rope": {"head_dim": 64, "rot": 16, "ntk_len": 0, "T": 2048},
        "lora": {"starts": [32, 104, 229], "T": 32, "rank": 4, "alpha": 144.0},
        "logits_at": [0, 5, 47, 48, 100, 143, 200, 287],
        "arch": {
            "vocab_size": 128, "dim": 32, "layers": 5, "heads": 4, "kv_heads": 2, "bos_id": 1,
            "block": {"ln_scale": "physical"},
            "attention": {"q_gain": 5.0, "rope_dims": 4, "rope_base": 10000.0,
                          "doc_mask": True, "doc_max_len": 48,
                          "xsa_layers": [0, 1, 2, 3, 4],
                          "gate": "sparse_sigmoid", "gate_scale": 0.5, "gate_window": 12},
            "mlp": {"hidden": 64, "act": "leaky_relu2", "leaky_slope": 0.5},
            "embeddings": {"smear": "v2", "smear_bos_mask": True, "smear_window": 12},
            "structure": {"skips": "gated", "encoder": [0, 1, 2, 1], "decoder": [2, 1, 2, 3, 4],
                          "recur_frac": 0.35, "parallel": "two_lane", "parallel_start": 3,
                          "parallel_resid_init": 1.1, "parallel_post_init": 1.0},
            "head": {"softcap": 30.0},
        },
    },
    # R12b, the newest folder (2026-04-29, the same code family as R12 with the BOS mask spelled
    # as g.masked_fill(ids == 1, 0), run with the sparse gate's scale 1.0); another tiny layout.
    "r12b": {
        "record": REC + "2026-04-29_SmearGateBOSFix_3Seed_1.06141/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "96", "NUM_LAYERS": "6", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "1.0", "TRAIN_SEQ_LEN": "40", "EVAL_SEQ_LEN": "40",
            "VAL_BATCH_TOKENS": str(8 * 2 * 40), "XSA_LAST_N": "6", "SKIP_GATES_ENABLED": "1",
            "ROPE_DIMS": "4", "ROPE_YARN": "0", "LN_SCALE": "1", "QK_GAIN_INIT": "5.0",
            "NUM_LOOPS": "2", "LOOP_START": "2", "LOOP_END": "3", "PARALLEL_START_LAYER": "4",
            "PARALLEL_FINAL_LANE": "mean", "ATTN_OUT_GATE_ENABLED": "0",
            "SMEAR_GATE_ENABLED": "1", "GATE_WINDOW": "12", "GATED_ATTN_ENABLED": "0",
            "SPARSE_ATTN_GATE_ENABLED": "1", "SPARSE_ATTN_GATE_SCALE": "1.0",
            "CASEOPS_ENABLED": "1", "FUSED_CE_ENABLED": "1",
        },
        "windows": 6,
        "docs": True,
        "rope": {"head_dim": 64, "rot": 16, "ntk_len": 0, "T": 2048},
        "arch": {
            "vocab_size": 96, "dim": 32, "layers": 6, "heads": 4, "kv_heads": 2, "bos_id": 1,
            "block": {"ln_scale": "physical"},
            "attention": {"q_gain": 5.0, "rope_dims": 4, "rope_base": 10000.0,
                          "doc_mask": True, "doc_max_len": 40,
                          "xsa_layers": [0, 1, 2, 3, 4, 5],
                          "gate": "sparse_sigmoid", "gate_scale": 1.0, "gate_window": 12},
            "mlp": {"hidden": 32, "act": "leaky_relu2", "leaky_slope": 0.5},
            "embeddings": {"smear": "v2", "smear_bos_mask": True, "smear_window": 12},
            "structure": {"skips": "gated", "encoder": [0, 1, 2, 3, 2],
                          "decoder": [3, 2, 3, 4, 5], "recur_frac": 0.35,
                          "parallel": "two_lane", "parallel_start": 4,
                          "parallel_resid_init": 1.1, "parallel_post_init": 1.0},
            "head": {"softcap": 30.0},
        },
    },
    # R10: the per-head attention output gate 2σ(W n[:12]) (AttnOutGate, src = the block's
    # normalized input) and SmearGate v2 without the BOS mask (its run never trained W and λ;
    # the code path is the same), loops, two lanes, doc-masked rows; byte tables.
    "r10": {
        "record": REC + "2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "64", "NUM_LAYERS": "3", "MODEL_DIM": "32", "EMBEDDING_DIM": "32",
            "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MLP_MULT": "1.0", "TRAIN_SEQ_LEN": "40",
            "EVAL_SEQ_LEN": "40", "VAL_BATCH_TOKENS": str(8 * 2 * 40), "XSA_LAST_N": "3",
            "SKIP_GATES_ENABLED": "1", "ROPE_DIMS": "4", "ROPE_YARN": "0", "LN_SCALE": "1",
            "QK_GAIN_INIT": "5.25", "NUM_LOOPS": "2", "LOOP_START": "1", "LOOP_END": "1",
            "PARALLEL_START_LAYER": "2", "PARALLEL_FINAL_LANE": "mean", "GATE_ATTN_OUT": "1",
            "GATE_ATTN_SRC": "proj", "GATE_MLP_OUT": "0", "GATE_WIDTH": "12", "SMEAR_GATE": "1",
            "SMEAR_GATE_WIDTH": "12",
        },
        "windows": 4,
        "docs": True,
        "rope": {"head_dim": 64, "rot": 16, "ntk_len": 0, "T": 2048},
        "arch": {
            "vocab_size": 64, "dim": 32, "layers": 3, "heads": 4, "kv_heads": 2, "bos_id": 1,
            "block": {"ln_scale": "physical"},
            "attention": {"q_gain": 5.25, "rope_dims": 4, "rope_base": 10000.0,
                          "doc_mask": True, "doc_max_len": 40, "xsa_layers": [0, 1, 2],
                          "gate": "2sigma_first12", "gate_window": 12},
            "mlp": {"hidden": 32, "act": "leaky_relu2", "leaky_slope": 0.5},
            "embeddings": {"smear": "v2", "smear_bos_mask": False, "smear_window": 12},
            "structure": {"skips": "gated", "encoder": [0, 1], "decoder": [1, 1, 2],
                          "recur_frac": 0.35, "parallel": "two_lane", "parallel_start": 2,
                          "parallel_resid_init": 1.1, "parallel_post_init": 1.0},
            "head": {"softcap": 30.0},
        },
    },
    # R11- (2026-04-22, #5): the dense gated attention σ(W n) with W [H, d], no SmearGate.
    "r11m": {
        "record": REC + "2026-04-22_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT_MLPClip12"
                        "/train_gpt.py",
        "env": {
            "VOCAB_SIZE": "64", "NUM_LAYERS": "3", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "1.0", "TRAIN_SEQ_LEN": "40", "EVAL_SEQ_LEN": "40",
            "VAL_BATCH_TOKENS": str(8 * 2 * 40), "XSA_LAST_N": "3", "SKIP_GATES_ENABLED": "1",
            "ROPE_DIMS": "4", "ROPE_YARN": "0", "LN_SCALE": "1", "QK_GAIN_INIT": "5.0",
            "NUM_LOOPS": "2", "LOOP_START": "1", "LOOP_END": "1", "PARALLEL_START_LAYER": "2",
            "PARALLEL_FINAL_LANE": "mean", "ATTN_OUT_GATE_ENABLED": "0", "SMEAR_GATE_ENABLED": "0",
            "GATE_WINDOW": "12", "GATED_ATTN_ENABLED": "1", "GATED_ATTN_INIT_STD": "0.005",
            "SPARSE_ATTN_GATE_ENABLED": "0", "CASEOPS_ENABLED": "1", "FUSED_CE_ENABLED": "0",
        },
        "windows": 4,
        "docs": True,
        "rope": {"head_dim": 64, "rot": 16, "ntk_len": 0, "T": 2048},
        "arch": {
            "vocab_size": 64, "dim": 32, "layers": 3, "heads": 4, "kv_heads": 2, "bos_id": 1,
            "block": {"ln_scale": "physical"},
            "attention": {"q_gain": 5.0, "rope_dims": 4, "rope_base": 10000.0,
                          "doc_mask": True, "doc_max_len": 40, "xsa_layers": [0, 1, 2],
                          "gate": "dense_sigmoid"},
            "mlp": {"hidden": 32, "act": "leaky_relu2", "leaky_slope": 0.5},
            "structure": {"skips": "gated", "encoder": [0, 1], "decoder": [1, 1, 2],
                          "recur_frac": 0.35, "parallel": "two_lane", "parallel_start": 2,
                          "parallel_resid_init": 1.1, "parallel_post_init": 1.0},
            "head": {"softcap": 30.0},
        },
    },
}

# ---- stand-ins for what the CPU cannot run -------------------------------------------------------


def _attention(q, k, v, seg=None):
    """Causal attention in fp32 on [T, H, D] (query head h reads KV head h // (H / Hkv), FA3's
    GQA), softmax scale 1/sqrt(D); seg: [T] segment ids, attention only within a segment."""
    import torch
    T, H, D = q.shape
    group = H // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("thd,shd->hts", q.float(), k.float()) / math.sqrt(D)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    if seg is not None:
        allowed &= seg[:, None] == seg[None, :]
    s = s.masked_fill(~allowed[None], float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.einsum("hts,shd->thd", p, v.float()).to(q.dtype)


def flash_attn_func(q, k, v, causal=True, **kw):
    import torch
    assert causal and tuple(kw.get("window_size", (-1, -1))) == (-1, -1)
    return torch.stack([_attention(q[b], k[b], v[b]) for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           causal=True, window_size=(-1, -1), **kw):
    import torch
    assert causal and tuple(window_size) == (-1, -1)
    assert torch.equal(cu_seqlens_q, cu_seqlens_k)
    T = q.shape[0]
    cu = cu_seqlens_q.tolist()
    seg = torch.full((T,), -1, dtype=torch.long)
    for i in range(len(cu) - 1):
        a, b = cu[i], cu[i + 1]
        assert b - a <= max_seqlen_q
        seg[a:b] = i
    assert bool((seg >= 0).all())
    return _attention(q, k, v, seg)


class _Inert(types.ModuleType):
    """A module whose every attribute is an inert callable/decorator."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _inert


def _inert(*a, **k):
    if len(a) == 1 and callable(a[0]) and not k:
        return a[0]
    return _inert


def install_stubs():
    import torch
    fa = types.ModuleType("flash_attn_interface")
    fa.flash_attn_func = flash_attn_func
    fa.flash_attn_varlen_func = flash_attn_varlen_func
    sys.modules["flash_attn_interface"] = fa
    for name in ("triton", "triton.language", "triton.tools", "triton.tools.tensor_descriptor",
                 "sentencepiece"):
        sys.modules[name] = _Inert(name)
        parent, _, leaf = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], leaf, sys.modules[name])
    torch.compile = _compile


def _compile(fn=None, **kw):
    return fn if fn is not None else (lambda f: f)


class CERecorder:
    """Stands in for the module's `F`: every attribute is torch.nn.functional's, except that
    cross_entropy also records the per-token values of the same call (reduction="none") and
    its logits."""

    def __init__(self):
        import torch.nn.functional as F
        self._F = F
        self.nll = []
        self.logits = []

    def __getattr__(self, name):
        return getattr(self._F, name)

    def cross_entropy(self, logits, target, *a, **kw):
        out = self._F.cross_entropy(logits, target, *a, **kw)
        kw2 = dict(kw)
        kw2["reduction"] = "none"
        per = self._F.cross_entropy(logits, target, *a, **kw2)
        self.nll.append(per.detach().reshape(-1).double().clone())
        self.logits.append(logits.detach().reshape(-1, logits.shape[-1]).clone())
        return out


def import_record(path, env, name):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(k, None)
    os.environ.update(env)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the module's `if __name__ == "__main__"` does not fire
    return mod


# ---- weights and tokens --------------------------------------------------------------------------

CONTROL = ("resid_mix", "skip_weights", "skip_gates", "attn_gate_w", "smear_gate.weight",
           "parallel_resid_lambdas", "parallel_post_lambdas")


def randomize(model, seed):
    """Every parameter from one generator, in named_parameters order: control tensors (ndim < 2
    or the named ones) keep their init value plus N(0, 0.3²); matrices N(0, 1/fan_in) with fan_in
    the last dimension (bank slices alike); the tied embedding N(0, 0.3²)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.ndim < 2 or any(c in name for c in CONTROL):
                p.copy_((p.double() + 0.3 * noise).float())
            elif name == "tok_emb.weight":
                # Row TINY is 1e-4 smaller: its mean square (~1e-9) is below the RMSNorm eps
                # (FLT_EPSILON for eps=None), so the embedding norm of that token pins the eps.
                noise[TINY] *= 1e-4
                p.copy_((0.3 * noise).float())
            else:
                p.copy_((noise / math.sqrt(p.shape[-1])).float())


TINY = 7  # the token whose embedding row is tiny (randomize)


def make_tokens(n, vocab, seed, docs):
    """n tokens in [0, vocab); with docs, BOS (1) only at document starts (the first token one),
    document lengths 3..70; without, no constraint. TINY at every 37th position not a BOS."""
    import random
    r = random.Random(seed)
    toks = [r.randrange(vocab) for _ in range(n)]
    if docs:
        toks = [t if t != 1 else 2 for t in toks]
        i = 0
        while i < n:
            toks[i] = 1
            i += r.randint(3, 70)
    for i in range(5, n, 37):
        if toks[i] != 1:
            toks[i] = TINY
    return toks


def luts(vocab, seed):
    """Byte tables in the challenge's form (base bytes, has_leading_space, is_boundary): ids 0..2
    control (boundary, 0 bytes), ids 3..10 byte pieces (1 byte), the rest 1..6 bytes with a
    leading space at random."""
    import random
    r = random.Random(seed)
    base, lead, bnd = [], [], []
    for t in range(vocab):
        if t < 3:
            base.append(0); lead.append(0); bnd.append(1)
        elif t < 11:
            base.append(1); lead.append(0); bnd.append(0)
        else:
            base.append(r.randint(1, 6)); lead.append(r.randint(0, 1)); bnd.append(0)
    return base, lead, bnd


def lut_tensors(base, lead, bnd):
    """The byte tables as the records' eval functions take them (int16, bool, bool tensors)."""
    import torch
    return (torch.tensor(base, dtype=torch.int16), torch.tensor(lead, dtype=torch.bool),
            torch.tensor(bnd, dtype=torch.bool))


def baseline_gpt_args(a):
    """The GPT constructor arguments of the baseline family that every early record passes from
    its Hyperparameters a (each adds its own MLP width and switches)."""
    return dict(vocab_size=a.vocab_size, num_layers=a.num_layers, model_dim=a.model_dim,
                num_heads=a.num_heads, num_kv_heads=a.num_kv_heads,
                tie_embeddings=a.tie_embeddings, tied_embed_init_std=a.tied_embed_init_std,
                logit_softcap=a.logit_softcap, rope_base=a.rope_base, qk_gain_init=a.qk_gain_init)


def write_json(path, obj, golden=False):
    """An arch (indented, keys sorted) or a golden (compact), with a final newline."""
    with open(path, "w") as f:
        if golden:
            json.dump(obj, f, separators=(",", ":"))
        else:
            json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


# ---- the runs ------------------------------------------------------------------------------------


def export(model, arch_path, out_path):
    import torch
    with tempfile.TemporaryDirectory() as d:
        pt = os.path.join(d, "state.pt")
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, pt)
        subprocess.run([sys.executable, EXPORT, pt, "-o", out_path, "--arch", arch_path],
                       check=True)


def lora_value(j):
    """The j-th parameter of the fixed LoRA adapters, in pgolf's flat layout (spec/model.md §5):
    an exact fp32 value k·2⁻¹⁴, k in −1000..1000, from a multiplicative hash of j (test_golden.c
    computes the same)."""
    h = (j * 2654435761 + 12345) & 0xFFFFFFFF
    return ((h % 2001) - 1000) / 16384.0


def lora_golden(mod, model, toks, r):
    """The record's TTT forward (forward_ttt: per-document rows, plain causal attention, LoRA on
    q, k, v, o, mlp of every virtual slot and on the head, scale alpha/rank) with every adapter
    parameter set by lora_value in pgolf's layout, B included (the record inits B to zero)."""
    import torch
    rows, T, rank = len(r["starts"]), r["T"], r["rank"]
    lora = mod.BatchedTTTLoRA(rows, model, rank, k_lora=True, mlp_lora=True, o_lora=True)
    assert mod.BatchedLinearLoRA._ALPHA == r["alpha"]
    slots = list(zip(lora.q_loras, lora.k_loras, lora.v_loras, lora.o_loras, lora.mlp_loras))
    j = 0
    with torch.no_grad():
        for b in range(rows):
            for adapters in slots + [(lora.lm_head_lora,)]:
                for ad in adapters:
                    for P in (ad.A, ad.B):
                        flat = P.data[b].reshape(-1)
                        for i in range(flat.numel()):
                            flat[i] = lora_value(j)
                            j += 1
    x = torch.tensor([toks[s:s + T] for s in r["starts"]], dtype=torch.int64)
    y = torch.tensor([toks[s + 1:s + T + 1] for s in r["starts"]], dtype=torch.int64)
    assert bool((x[:, 0] == 1).all()) and int((x == 1).sum()) == rows  # one document per row
    model.eval()  # the unfused MLP (the fused Triton one is the same function, CUDA only)
    with torch.no_grad():
        nll = model.forward_ttt(x, y, lora)
    return dict(r, count=j, nll=nll.double().reshape(-1).tolist())


ROPE_POSITIONS = (0, 1, 2, 3, 5, 8, 13, 100, 511, 777, 1000, 1023, 1500, 2047)


def rope_table(mod, name, r):
    """The record's own Rotary at its full-size setting (head_dim 64, the record's rope dims, base
    1e4, its train length for the NTK rescale where it has one) called for length T on the CPU in
    fp32: cos and sin of the angle table at a few positions. The tiny models above rotate too few
    dims over too short windows to show a one-ulp difference of an inverse frequency; this does."""
    import torch
    if name == "baseline":
        rot = mod.Rotary(r["head_dim"], base=10000.0)
    elif name == "r6":
        rot = mod.Rotary(r["head_dim"], base=10000.0, train_seq_len=r["ntk_len"],
                         rope_dims=r["rot"])
    else:
        rot = mod.Rotary(r["head_dim"], base=10000.0, train_seq_len=r["T"], rope_dims=r["rot"],
                         yarn=False)
    cos, sin = rot(r["T"], torch.device("cpu"), torch.float32)
    cos = cos.reshape(r["T"], r["rot"] // 2)
    sin = sin.reshape(r["T"], r["rot"] // 2)
    pos = [p for p in ROPE_POSITIONS if p < r["T"]]
    return {"rot": r["rot"], "base": 10000.0, "ntk_len": r["ntk_len"], "T": r["T"],
            "positions": pos, "cos": [cos[p].double().tolist() for p in pos],
            "sin": [sin[p].double().tolist() for p in pos]}


def run_case(name, case, checkout, out_dir, upstream):
    import torch
    path = os.path.join(checkout, case["record"])
    mod = import_record(path, case["env"], "pg_golden_" + name)
    rec = CERecorder()
    mod.F = rec
    dev = torch.device("cpu")
    vocab = int(case["env"]["VOCAB_SIZE"])
    seq = int(case["env"].get("EVAL_SEQ_LEN", case["env"]["TRAIN_SEQ_LEN"]))
    n_tok = case["windows"] * seq + 1
    toks = make_tokens(n_tok, vocab, SEED + 1, case.get("docs", False))
    val_tokens = torch.tensor(toks, dtype=torch.int64)
    golden = {"record": case["record"], "upstream_commit": upstream, "seed": SEED,
              "torch": torch.__version__, "tokens": toks}
    torch.manual_seed(SEED)

    if name == "baseline":
        a = mod.Hyperparameters()
        model = mod.GPT(**baseline_gpt_args(a), mlp_mult=a.mlp_mult)
    elif name == "r6":
        a = mod.Hyperparameters()
        model = mod.GPT(**baseline_gpt_args(a), mlp_mult=a.mlp_mult, mtp_num_heads=a.mtp_num_heads,
                        mtp_loss_weight=a.mtp_loss_weight, bigram_vocab_size=a.bigram_vocab_size,
                        bigram_dim=a.bigram_dim, xsa_last_n=a.xsa_last_n, rope_dims=a.rope_dims,
                        ln_scale=a.ln_scale, dtg=a.dtg_enabled, ve_enabled=a.ve_enabled,
                        ve_dim=a.ve_dim, ve_layers=a.ve_layers, gated_attention=a.gated_attention,
                        value_residual=a.value_residual)
    else:  # r10, r11m, r12, r12b
        a = mod.Hyperparameters()
        model = mod.GPT(a)
        model.looping_active = True  # evaluation always runs with the loops on
    model = model.float().to(dev)
    randomize(model, SEED)

    if name in ("baseline", "r6"):
        base, lead, bnd = luts(vocab, SEED + 2)
        lt = lut_tensors(base, lead, bnd)
        if name == "baseline":
            loss, bpb = mod.eval_val(a, model, 0, 1, dev, 8, val_tokens, *lt)
        else:
            loss, bpb = mod.eval_val(a, model, 0, 1, dev, 8, val_tokens, *lt, eval_seq_len=seq)
            # The record's headline protocol too: its sliding window (the tail variant), whose
            # short last windows are zero-padded to seq (the NTK base of a call of length seq).
            nrec = len(rec.nll)
            stride = case["stride"]
            sl, sb = mod.eval_val_sliding(a, model, 0, 1, dev, val_tokens, *lt, stride=stride,
                                          batch_seqs=4, eval_seq_len=seq)
            del rec.nll[nrec:], rec.logits[nrec:]
            golden["sliding"] = {"seq_len": seq, "stride": stride, "val_loss": sl, "val_bpb": sb}
        golden.update({"rows": case["windows"], "T": seq, "doc_rows": False,
                       "luts": {"base_bytes": base, "has_leading_space": lead,
                                "is_boundary": bnd}})
    elif name == "r10":  # byte tables
        base, lead, bnd = luts(vocab, SEED + 2)
        val_data = types.SimpleNamespace(
            val_tokens=val_tokens, base_bytes_lut=torch.tensor(base, dtype=torch.int16),
            has_leading_space_lut=torch.tensor(lead, dtype=torch.bool),
            is_boundary_token_lut=torch.tensor(bnd, dtype=torch.bool))
        loss, bpb = mod.eval_val(a, dev, val_data, model)
        per_row = (a.val_batch_tokens // 8 // seq) * seq
        golden.update({"rows": (n_tok - 1) // per_row, "T": per_row, "doc_rows": True,
                       "eval_seq_len": seq,
                       "luts": {"base_bytes": base, "has_leading_space": lead,
                                "is_boundary": bnd}})
    else:  # CaseOps byte sidecar
        import random
        r = random.Random(SEED + 3)
        side = [r.randint(0, 9) for _ in range(n_tok)]
        val_data = types.SimpleNamespace(caseops_enabled=True, val_tokens=val_tokens,
                                         val_bytes=torch.tensor(side, dtype=torch.int32))
        loss, bpb = mod.eval_val(a, dev, val_data, model)
        per_row = (a.val_batch_tokens // 8 // seq) * seq
        golden.update({"rows": (n_tok - 1) // per_row, "T": per_row, "doc_rows": True,
                       "eval_seq_len": seq,
                       "sidecar_bytes": side})
    nll = torch.cat(rec.nll).tolist()
    assert len(nll) == golden["rows"] * golden["T"] == n_tok - 1, (len(nll), golden)
    golden["nll"] = nll
    golden["val_loss"] = loss
    golden["val_bpb"] = bpb
    golden["rope"] = rope_table(mod, name, case["rope"])
    if case.get("lora"):
        golden["lora"] = lora_golden(mod, model, toks, case["lora"])
    if case.get("logits_at"):
        lg = torch.cat(rec.logits)
        golden["logits"] = {str(p): lg[p].double().tolist() for p in case["logits_at"]}

    arch_path = os.path.join(out_dir, name + ".arch.json")
    write_json(arch_path, case["arch"])
    export(model, arch_path, os.path.join(out_dir, name + ".safetensors"))
    write_json(os.path.join(out_dir, name + ".golden.json"), golden, golden=True)
    print(f"{name}: {len(nll)} targets, val_loss {loss!r} val_bpb {bpb!r}")


def cli_main(argv, doc, cases, run):
    """A generator's command line (CHECKOUT [--out DIR] [--only NAME]...): run(name, case,
    checkout, out_dir, upstream) for each case asked for, with the stand-ins installed."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("checkout", help="a checkout of github.com/openai/parameter-golf")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", action="append", choices=sorted(cases))
    args = ap.parse_args(argv)
    try:
        upstream = subprocess.run(["git", "-C", args.checkout, "rev-parse", "HEAD"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        upstream = "unknown"
    import torch
    torch.set_num_threads(1)
    install_stubs()
    for name in args.only or cases:
        run(name, cases[name], args.checkout, args.out, upstream)


if __name__ == "__main__":
    cli_main(sys.argv[1:], __doc__, CASES, run_case)
