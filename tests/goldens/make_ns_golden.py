#!/usr/bin/env python3
"""make_ns_golden.py: the records' bf16 Newton-Schulz on fixed matrices, for test_train_optim.c.

usage: make_ns_golden.py CHECKOUT [--out FILE]

CHECKOUT is a local checkout of the challenge repository (github.com/openai/parameter-golf); this
script fetches nothing. It reads two records' train_gpt.py, finds their Newton-Schulz function
(zeropower_via_newtonschulz5) with Python's ast module and executes that definition alone (and,
for the Polar Express record, the module-level coefficient table it reads), without its
torch.compile decorator: eager PyTorch on the CPU. Each function then runs on seeded fp32
matrices of three shapes (one with rows > cols, one square), 5 steps, and the script writes one
JSON file (default ns_bf16.golden.json next to this script):

  {"upstream": ..., "torch": ..., "cases": [{"kind": "classic" | "polar_express",
    "record": path, "rows": r, "cols": c, "steps": 5,
    "g": [fp32 bit patterns of the input, row-major],
    "x": [bf16 bit patterns of the output, row-major]}, ...]}

Needs torch (pip install torch). Eager PyTorch rounds b*A and c*(A@A) to bf16 separately before
adding them (and a*X likewise); the records' compiled kernel, like pgolf, rounds the sum once;
the CPU's bf16 matmul sums in fp32, pgolf in fp64. tests/goldens/README.md gives the measured
differences.
"""

import argparse
import ast
import json
import os
import struct
import subprocess

import torch

SEED = 20260412
REC = "records/track_10min_16mb/"
RECORDS = {
    "classic": REC + "2026-04-16_SmearGate_AttentionOutputGate_ScoreFirstTTT/train_gpt.py",
    "polar_express": REC + "2026-04-23_SP8192_CaseOps_SparseGate_QuantGate_Loop45_PhasedTTT_"
                           "PolarNS_MinLR_FusedCE/train_gpt.py",
}
SHAPES = [(16, 40), (40, 16), (24, 24)]
STEPS = 5


def load_ns(path):
    """The record's Newton-Schulz function, its definition executed on its own."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "zeropower_via_newtonschulz5":
            node.decorator_list = []  # torch.compile: eager instead
            keep.append(node)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id.startswith("_PE_") for t in node.targets):
            keep.append(node)
    names = [n.name for n in keep if isinstance(n, ast.FunctionDef)]
    if names != ["zeropower_via_newtonschulz5"]:
        raise SystemExit(f"{path}: no single zeropower_via_newtonschulz5")
    env = {"torch": torch, "Tensor": torch.Tensor}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), env)
    return env["zeropower_via_newtonschulz5"]


def f32_bits(t):
    return list(struct.unpack(f"<{t.numel()}I", t.float().contiguous().numpy().tobytes()))


def bf16_bits(t):
    return [b >> 16 for b in f32_bits(t.float())]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "ns_bf16.golden.json"))
    ap.add_argument("--upstream", default="",
                    help="the checkout's commit, when it is no git work tree")
    a = ap.parse_args()
    head = subprocess.run(["git", "-C", a.checkout, "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() or a.upstream
    gen = torch.Generator().manual_seed(SEED)
    cases = []
    for kind, rec in RECORDS.items():
        ns = load_ns(os.path.join(a.checkout, rec))
        for rows, cols in SHAPES:
            g = torch.randn(rows, cols, generator=gen, dtype=torch.float32)
            with torch.no_grad():
                x = ns(g.clone(), steps=STEPS)
            assert x.dtype == torch.bfloat16 and tuple(x.shape) == (rows, cols)
            cases.append({"kind": kind, "record": rec, "rows": rows, "cols": cols,
                          "steps": STEPS, "g": f32_bits(g), "x": bf16_bits(x)})
    out = {"upstream": head, "torch": torch.__version__, "seed": SEED, "cases": cases}
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
