#!/usr/bin/env python3
"""make_variant_goldens.py: goldens of the records' own evaluation variants, for test_variants.c.

usage: make_variant_goldens.py CHECKOUT [--out DIR] [--only NAME]...

The evaluation functions whose window placement pgolf reproduces as flagged protocol options
(spec/eval.md §3.1, §3.2), run from the records' own train_gpt.py on a tiny random model (the
record's own GPT) and a short token stream, on the CPU in fp32:

  lasts_mq     2026-03-19_MixedQuant_Int6Int8_SlidingWindow  eval_val_sliding_window (last-s)
  lasts_mlp3x  2026-03-19_MLP3x_QAT_Int6_SlidingWindow       eval_val_sliding (last-s, its own code)
  gap_s2048    2026-03-19_Seq2048_FP16Emb_TunedLR            eval_val_sliding (gap)
  packed_r12   2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611
               eval_val, packed rows, called once per rank of a 3-rank split (packed)

(2026-03-19_smeargate_orthoinit_muonwd's eval_val_sliding_window is MixedQuant's, character for
character.) Per case NAME it writes NAME.golden.json with the tokens, the byte tables or sidecar,
the protocol's settings, `weights` (the name of the weight files), the three sums the record's
function all-reduces (loss, tokens, bytes: summed over the ranks for packed), the val_loss and
val_bpb they give, and `targets`: the sorted target positions the record's function scores.
Those come from a second run of the same function on the stream 0, 1, 2, ... with a model that
returns zeros: each target's id is then its position plus one, read where the function indexes
its byte table (the sliding ones) or from the targets of its cross-entropy call (packed).

The weights go through tools/pg_export.py: early.arch.json and early.safetensors for the three
early cases, whose records build the same tiny model (checked byte for byte); packed_r12 uses
make_goldens.py's r12 (same record, seed and sizes; the script checks that its export is the
committed r12.safetensors byte for byte).

It reuses make_goldens.py (its stand-ins for flash-attn, triton and torch.compile, the seeded
weights, tokens and byte tables). torch.distributed is replaced in each record module by a stand-in
that reports itself initialized and records what all_reduce is given, so that the sums of each
rank's call are read as the record computes them. Needs torch and numpy; fetches nothing.
"""

import math
import os
import random
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens as mg  # noqa: E402

REC = mg.REC

# The early records' model is the baseline's (relu², plain U-Net skips, tied head, softcap).
TINY_ARCH = {
    "vocab_size": 128, "dim": 32, "layers": 4, "heads": 4, "kv_heads": 2,
    "attention": {"q_gain": 1.5, "rope_dims": 8, "rope_base": 10000.0},
    "mlp": {"hidden": 64, "act": "relu2"},
    "structure": {"skips": "plain"},
    "head": {"softcap": 30.0},
}
TINY_ENV = {"VOCAB_SIZE": "128", "NUM_LAYERS": "4", "MODEL_DIM": "32", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "MLP_MULT": "2", "TRAIN_SEQ_LEN": "64", "QK_GAIN_INIT": "1.5"}

CASES = {
    # 7 windows at 0, 28, ..., 168 score [36, 232); the tail [232, 256) is never scored
    "lasts_mq": {"record": REC + "2026-03-19_MixedQuant_Int6Int8_SlidingWindow/train_gpt.py",
                 "env": dict(TINY_ENV, EVAL_STRIDE="28", SW_EVAL_BATCH="3"),
                 "variant": "last-s", "seq_len": 64, "stride": 28, "windows": 4},
    "lasts_mlp3x": {"record": REC + "2026-03-19_MLP3x_QAT_Int6_SlidingWindow/train_gpt.py",
                    "env": dict(TINY_ENV, EVAL_STRIDE="28", EVAL_SEQ_LEN="0",
                                EVAL_BATCH_SIZE="3"),
                    "variant": "last-s", "seq_len": 64, "stride": 28, "windows": 4},
    # windows at 0, 52, 64, ..., 184: [0, 64), the gap [64, 104), then the last 12 of each; the
    # tail [248, 256) is never scored
    "gap_s2048": {"record": REC + "2026-03-19_Seq2048_FP16Emb_TunedLR/train_gpt.py",
                  "env": dict(TINY_ENV, MLP_HIDDEN="64", EVAL_STRIDE="12", EVAL_SEQ_LEN="0"),
                  "variant": "gap", "seq_len": 64, "stride": 12, "windows": 4},
    # 11 windows of 48 over 3 ranks: [0, 3), [3, 7), [7, 11); rows of 2 windows, so rank 0
    # drops its third window
    "packed_r12": {"record": mg.CASES["r12"]["record"], "env": dict(mg.CASES["r12"]["env"]),
                   "variant": "packed", "seq_len": 48, "pack_windows": 2, "pack_ranks": 3,
                   "windows": 11},
}


class DistStandIn(types.SimpleNamespace):
    """The module's torch.distributed: initialized, and all_reduce records each value it is
    given (leaving it unchanged: the ranks are called one after the other)."""

    def __init__(self):
        super().__init__(ReduceOp=types.SimpleNamespace(SUM="sum"), seen=[])

    def is_available(self):
        return True

    def is_initialized(self):
        return True

    def all_reduce(self, t, op=None):
        self.seen.append(float(t.item()))


class IndexRecorder:
    """A byte table that records the ids it is indexed with (and gives 1 byte for each)."""

    def __init__(self):
        self.ids = []

    def __getitem__(self, idx):
        import torch
        self.ids.extend(int(i) for i in idx.reshape(-1).tolist())
        return torch.ones(idx.shape, dtype=torch.int16)


class TargetRecorder(mg.CERecorder):
    """make_goldens' F stand-in, also recording the targets of every cross_entropy call."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def cross_entropy(self, logits, target, *a, **kw):
        self.targets.extend(int(i) for i in target.reshape(-1).tolist())
        return super().cross_entropy(logits, target, *a, **kw)


class ZeroModel:
    """A model that returns zero logits (or zero losses) of the right shapes: the probe run."""

    def __init__(self, width):
        self.width = width

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def forward_logits(self, ids, **kw):
        import torch
        return torch.zeros(*ids.shape, self.width)

    def forward_per_token_loss(self, x, y):
        import torch
        return torch.zeros(x.shape)


def early_model(mod, name):
    a = mod.Hyperparameters()
    kw = mg.baseline_gpt_args(a)
    if name == "gap_s2048":
        kw["mlp_hidden"] = a.mlp_hidden
    else:
        kw["mlp_mult"] = a.mlp_mult
    return a, mod.GPT(**kw)


def sliding_call(mod, name, a, model, val_tokens, lt, case):
    """The record's own sliding function with its own arguments (as its main() passes them)."""
    dev = mg_device()
    if name == "lasts_mq":
        return mod.eval_val_sliding_window(a, model, 0, 1, dev, val_tokens, *lt,
                                           stride=case["stride"])
    if name == "lasts_mlp3x":
        if isinstance(model, ZeroModel):  # its module-level forward_logits reads the GPT
            saved = mod.forward_logits
            mod.forward_logits = lambda m, x: m.forward_logits(x)
            try:
                return mod.eval_val_sliding(a, model, 0, 1, dev, val_tokens, *lt)
            finally:
                mod.forward_logits = saved
        return mod.eval_val_sliding(a, model, 0, 1, dev, val_tokens, *lt)
    return mod.eval_val_sliding(model, 0, 1, dev, val_tokens, *lt, eval_seq_len=case["seq_len"],
                                stride=case["stride"])


def mg_device():
    import torch
    return torch.device("cpu")


def run_sliding(name, case, mod, golden):
    import torch
    a, model = early_model(mod, name)
    model = model.float()
    mg.randomize(model, mg.SEED)
    vocab = int(case["env"]["VOCAB_SIZE"])
    n_tok = case["windows"] * case["seq_len"] + 1
    toks = mg.make_tokens(n_tok, vocab, mg.SEED + 1, False)
    base, lead, bnd = mg.luts(vocab, mg.SEED + 2)
    lt = mg.lut_tensors(base, lead, bnd)
    dist = DistStandIn()
    mod.dist = dist
    loss, bpb = sliding_call(mod, name, a, model, torch.tensor(toks, dtype=torch.int64), lt, case)
    sums = dist.seen[:3]
    # the probe: the stream 0..n-1 (every id its position), zero logits, a recording byte table
    rec = IndexRecorder()
    plt = (rec, torch.zeros(n_tok, dtype=torch.bool), torch.ones(n_tok, dtype=torch.bool))
    sliding_call(mod, name, a, ZeroModel(n_tok), torch.arange(n_tok, dtype=torch.int64), plt, case)
    golden.update({"tokens": toks, "luts": {"base_bytes": base, "has_leading_space": lead,
                                            "is_boundary": bnd}})
    return model, loss, bpb, sums, sorted(i - 1 for i in rec.ids)


def run_packed(name, case, mod, golden, out_dir):
    import torch
    K, R, L = case["pack_windows"], case["pack_ranks"], case["seq_len"]
    a = mod.Hyperparameters()
    model = mod.GPT(a)
    model.looping_active = True  # evaluation always runs with the loops on
    model = model.float()
    mg.randomize(model, mg.SEED)
    n_tok = case["windows"] * L + 1
    toks = mg.make_tokens(n_tok, int(case["env"]["VOCAB_SIZE"]), mg.SEED + 1, True)
    r = random.Random(mg.SEED + 3)
    side = [r.randint(0, 9) for _ in range(n_tok)]

    def ranks(m, stream, sidecar):
        dist = DistStandIn()
        mod.dist = dist
        data = types.SimpleNamespace(caseops_enabled=True, val_tokens=stream,
                                     val_bytes=torch.tensor(sidecar, dtype=torch.int32))
        for rank in range(R):  # each rank's call as the record makes it on R GPUs
            a.rank, a.world_size, a.grad_accum_steps = rank, R, 1
            a.val_batch_tokens = K * L * R
            mod.eval_val(a, mg_device(), data, m)
        return [sum(dist.seen[k::3]) for k in range(3)]

    sums = ranks(model, torch.tensor(toks, dtype=torch.int64), side)
    loss = sums[0] / sums[1]
    bpb = loss / math.log(2.0) * (sums[1] / sums[2])
    probe = TargetRecorder()
    mod.F = probe
    ranks(ZeroModel(n_tok), torch.arange(n_tok, dtype=torch.int64), [1] * n_tok)
    golden.update({"tokens": toks, "sidecar_bytes": side, "weights": "r12"})
    with tempfile.TemporaryDirectory() as d:  # the weights must be the committed r12's
        arch = os.path.join(d, "a.json")
        mg.write_json(arch, mg.CASES["r12"]["arch"])
        st = os.path.join(d, "w.safetensors")
        mg.export(model, arch, st)
        with open(st, "rb") as f1, open(os.path.join(out_dir, "r12.safetensors"), "rb") as f2:
            assert f1.read() == f2.read(), "the r12 weights differ from r12.safetensors"
    return None, loss, bpb, sums, sorted(i - 1 for i in probe.targets)


EARLY_SEEN = set()  # cases of this run that wrote or checked early.safetensors


def run_case(name, case, checkout, out_dir, upstream):
    import torch
    mod = mg.import_record(os.path.join(checkout, case["record"]), case["env"], "pg_var_" + name)
    mod.F = mg.CERecorder()
    torch.manual_seed(mg.SEED)
    golden = {"record": case["record"], "upstream_commit": upstream, "seed": mg.SEED,
              "torch": torch.__version__, "variant": case["variant"],
              "seq_len": case["seq_len"]}
    for k in ("stride", "pack_windows", "pack_ranks"):
        if k in case:
            golden[k] = case[k]
    if case["variant"] == "packed":
        model, loss, bpb, sums, targets = run_packed(name, case, mod, golden, out_dir)
    else:
        model, loss, bpb, sums, targets = run_sliding(name, case, mod, golden)
    assert len(targets) == len(set(targets)) == int(sums[1]), (len(targets), sums)
    golden.update({"loss_sum": sums[0], "token_count": sums[1], "byte_count": sums[2],
                   "val_loss": loss, "val_bpb": bpb, "targets": targets})
    if model is not None:  # the three early records build the same tiny model: one file
        arch_path = os.path.join(out_dir, "early.arch.json")
        mg.write_json(arch_path, TINY_ARCH)
        with tempfile.TemporaryDirectory() as d:
            st = os.path.join(d, "w.safetensors")
            mg.export(model, arch_path, st)
            with open(st, "rb") as f:
                data = f.read()
        path = os.path.join(out_dir, "early.safetensors")
        if EARLY_SEEN:
            with open(path, "rb") as f:
                assert f.read() == data, "the early records' tiny models differ"
        else:
            with open(path + ".tmp", "wb") as f:
                f.write(data)
            os.replace(path + ".tmp", path)
        EARLY_SEEN.add(name)
        golden["weights"] = "early"
    mg.write_json(os.path.join(out_dir, name + ".golden.json"), golden, golden=True)
    print(f"{name}: {len(targets)} of {len(golden['tokens']) - 1} targets scored, "
          f"val_loss {loss!r} val_bpb {bpb!r}")


if __name__ == "__main__":
    mg.cli_main(sys.argv[1:], __doc__, CASES, run_case)
