#!/usr/bin/env python3
"""bench_gpu_train.py: training tokens/s of a record-sized model on one GPU, pgtrain against
PyTorch.

The records' R9-class model (bench_gpu_eval.py's arch, with depth recurrence on from the first
step so that every step walks the 17 virtual layers) is trained for --steps steps of --batch rows
of --seq-len tokens from random token shards, by

  pgtrain --engine cuda --precision bf16 --config RUN.json   (Muon with Newton-Schulz, AdamW,
                                                             no averaging)

and, in the same run on the same device, by the same model written in PyTorch from spec/model.md
(bench_gpu_eval.py's module with the weights as parameters; torch.compile; bf16 autocast; Muon
with the records' quintic Newton-Schulz in bf16 on the block matrices, fused AdamW on the rest).
The first step of each side is not timed (allocation, compilation); tokens/s is over the others.

One table: seconds per step, tokens/s, achieved TFLOP/s against 3x the forward FLOP count
(bench_gpu_eval.py's formula, every row of every step), % of the card's bf16 dense peak, and each
side's first and last training loss. pgtrain trains in bf16 (spec/train.md §10: the records'
bf16 forward, the products of the forward and the backward on the tensor cores through cuBLAS,
attention's forward and backward as flash kernels; the other ops and the optimizers stay exact);
--pgtrain-precision bf16,fp32 adds a row of its exact fp32 kernels (slow: fp64 sums). PyTorch runs
the records' bf16 autocast. The records report about 0.8 M tokens/s per H100 (8 GPUs, 786,432
tokens per step).

--smoke (or --small): the tiny model, --engine cpu (pgtrain in fp32 unless --pgtrain-precision
says otherwise), PyTorch on the CPU in fp32 without compile: seconds without a GPU. The check
is a gross one: each row's first loss must be within 0.5 of ln(vocabulary) (both start from small
random weights), and every loss finite.
PGOLF_LIBRARY_PATH, when set, is put on pgtrain's LD_LIBRARY_PATH (the GPU bundle's libraries).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_gpu_eval as ev  # noqa: E402  (the arch, the inputs and the torch module)


def train_arch(smoke):
    a = ev.smoke_arch() if smoke else ev.r9_arch()
    a = json.loads(json.dumps(a))
    a["structure"]["recur_step"] = 0  # loops on from the first step, on both sides
    a["structure"].pop("recur_frac", None)
    return a


def run_config(a, steps, T, B, train_glob):
    return {
        "arch": a,
        "data": {"train": train_glob, "loader": "sequential", "seq_len": T, "batch": B,
                 "seed": 1},
        "init_seed": 7,
        "optimizer": {
            "matrix": {"kind": "muon", "lr": 0.02, "momentum": 0.95, "momentum_start": 0.85,
                       "momentum_warmup": 100, "nesterov": True, "ns": "classic",
                       "ns_steps": 5},
            "embed": {"kind": "adamw", "lr": 0.03},
            "scalar": {"kind": "adamw", "lr": 0.02},
            "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 0.3},
        "schedule": {"steps": steps, "warmup_steps": 0, "warmdown_frac": 0.0},
        "log": {"every": 1},
    }


STEP_LINE = re.compile(r"^step\s+(\d+)/\d+\s+loss\s+([-0-9.eEnaif]+).*?([0-9,]+) tok/s")


def pgtrain_side(args, a, tmp, T, B, threads, precision):
    cfg = run_config(a, args.steps, T, B, os.path.join(tmp, "train_*.bin"))
    cfg_path = os.path.join(tmp, "run.json")
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    prog = args.pgtrain or ev.find_prog("pgtrain")
    cmd = [prog, "--config", cfg_path, "-o", os.path.join(tmp, "ckpt.safetensors"),
           "--engine", args.engine]
    if args.engine == "cpu":
        cmd += ["--threads", str(threads)]
    if precision:
        cmd += ["--precision", precision]
    print("running: " + " ".join(cmd), file=sys.stderr)
    env = dict(os.environ)
    if env.get("PGOLF_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = env["PGOLF_LIBRARY_PATH"] + (
            ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=args.pgtrain_timeout)
    except subprocess.TimeoutExpired:
        return None, f"pgtrain took more than {args.pgtrain_timeout} s"
    if r.returncode:
        sys.stderr.write(r.stderr)
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        return None, f"pgtrain exited {r.returncode}: {last}"
    steps = []  # (step, loss, tokens/s of that one step)
    for line in r.stdout.splitlines():
        m = STEP_LINE.match(line)
        if m:
            steps.append((int(m.group(1)), float(m.group(2)), int(m.group(3).replace(",", ""))))
    if len(steps) != args.steps:
        return None, f"pgtrain printed {len(steps)} step lines, not {args.steps}"
    timed = [s for s in steps if s[0] >= 2]
    secs = sum(T * B / max(s[2], 1) for s in timed)
    return {"sec_per_step": secs / len(timed), "first": steps[0][1], "last": steps[-1][1]}, None


def muon_ns5(G, steps):
    """The records' quintic Newton-Schulz iteration in bf16 (orthogonalises G)."""
    import torch
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(torch.bfloat16)
    X = X / (X.norm() + 1e-7)
    tall = X.size(0) > X.size(1)
    if tall:
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


def torch_side(args, a, w, toks, device, T, B, bf16, compile_):
    import torch
    model = ev.build_torch_model(a, w, device, bf16, trainable=True)
    mats = [p for n, p in model.named_parameters()
            if p.ndim == 2 and n.startswith("blocks__")]
    mat_ids = {id(p) for p in mats}
    emb = [p for n, p in model.named_parameters() if n == "tok_emb__weight"]
    rest = [p for p in model.parameters() if id(p) not in mat_ids and p is not emb[0]]
    fused = device.type == "cuda"
    adam = torch.optim.AdamW([{"params": emb, "lr": 0.03}, {"params": rest, "lr": 0.02}],
                             betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=fused)
    bufs = [torch.zeros_like(p) for p in mats]
    ns = torch.compile(muon_ns5) if compile_ else muon_ns5
    fwd = torch.compile(model, dynamic=False) if compile_ else model
    ctx = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else \
        (lambda: torch.autocast(device_type=device.type, enabled=False))
    per_step = T * B

    def step(k):
        x = toks[k * per_step:(k + 1) * per_step + 1]
        ids, tgt = x[:-1].view(B, T), x[1:].view(B, T)
        with ctx():
            loss = fwd(ids, tgt).float().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
        with torch.no_grad():
            mom = 0.85 + (0.95 - 0.85) * min(k / 100, 1.0)
            for p, buf in zip(mats, bufs):
                buf.mul_(mom).add_(p.grad)
                g = p.grad.add(buf, alpha=mom)
                p.add_(ns(g, 5), alpha=-0.02 * max(1.0, p.size(0) / p.size(1)) ** 0.5)
        adam.step()
        model.zero_grad(set_to_none=True)
        return loss.detach()

    losses = []
    t0 = time.monotonic()
    losses.append(float(step(0)))  # compilation and allocation: not timed
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = time.monotonic() - t0
    t0 = time.monotonic()
    last = None
    for k in range(1, args.steps):
        last = step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.monotonic() - t0
    losses.append(float(last) if last is not None else losses[0])
    return {"sec_per_step": secs / max(1, args.steps - 1), "first": losses[0],
            "last": losses[-1], "warm": warm}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="training steps per side (default 8; "
                    "the first is not timed)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=16, help="rows per step (default 16)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                    help="PyTorch's numerics (default bf16 on a GPU, fp32 on the CPU)")
    ap.add_argument("--pgtrain-precision", default=None,
                    help="pgtrain's precisions, comma-separated, one row each (bf16, fp32; "
                    "default bf16, smoke fp32): the first row is 'pgtrain', another "
                    "'pgtrain-P'")
    ap.add_argument("--repeat", type=int, default=1, help="accepted for scripts/gpu-check.sh; "
                    "the timed steps are the repeats")
    ev.add_common_args(ap, "pgtrain", "tiny model, --engine cpu, PyTorch on the CPU in fp32 "
                       "without compile")
    args = ap.parse_args()
    torch = ev.import_torch("bench_gpu_train")
    if torch is None:
        return args.no_torch_status
    if args.steps < 2:
        sys.exit("bench_gpu_train: --steps must be at least 2 (the first is not timed)")
    T, B = (64, 4) if args.smoke else (args.seq_len, args.batch)
    device, compile_, threads, dev_name, peak = ev.torch_device(args, torch)
    a = train_arch(args.smoke)
    precs = (args.pgtrain_precision or ("fp32" if args.smoke else "bf16")).split(",")
    if any(p not in ("bf16", "fp32") for p in precs):
        sys.exit(f"bench_gpu_train: --pgtrain-precision: bf16 or fp32, not "
                 f"'{args.pgtrain_precision}'")
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    flops_step = 3 * B * ev.window_flops(a, T)
    gen = torch.Generator().manual_seed(args.seed)
    w = ev.tensors_of(a, gen)
    n_tok = args.steps * T * B + 1
    toks = torch.randint(0, a["vocab_size"], (n_tok,), generator=gen)
    rows, notes, rc = [], [], 0
    with tempfile.TemporaryDirectory(prefix="bench_gpu_train.") as tmp:
        # two shards, so the loader sees the records' layout of a pattern over several files
        half = n_tok // 2
        ev.write_shard(os.path.join(tmp, "train_000000.bin"), toks[:half + 1].tolist())
        ev.write_shard(os.path.join(tmp, "train_000001.bin"), toks[half:].tolist())
        for i, prec in enumerate(precs if args.only != "torch" else []):
            name = "pgtrain" if i == 0 else f"pgtrain-{prec}"
            r, why = pgtrain_side(args, a, tmp, T, B, threads, prec)
            if r is None:
                print(f"bench_gpu_train: {name}: {why}")
                print(f"summary: {name} failed: {why}")
                return 1
            rows.append((name, r))
            kind = ("exact kernels" if prec == "fp32" else
                    "tensor-core products, flash attention" if args.engine != "cpu" else
                    "the exact bf16 mode")
            notes.append(f"{name}: engine {args.engine}, {prec} ({kind})")
        if args.only != "pgtrain":
            r = torch_side(args, a, w, toks.to(device), device, T, B, bf16, compile_)
            rows.append(("torch", r))
            notes.append(f"torch {torch.__version__}: {device.type} ({dev_name}), "
                         f"{'torch.compile' if compile_ else 'eager'} (first step "
                         f"{r['warm']:.1f} s, untimed), {'bf16 autocast' if bf16 else 'fp32'}")
    nv, _ = ev.dims(a)
    print(f"training: {args.steps} steps ({args.steps - 1} timed) of {B} x {T} tokens; "
          f"{a['layers']} layers ({nv} virtual), d {a['dim']}, vocab {a['vocab_size']}; "
          f"{flops_step / 1e12:.3f} TFLOP per step (3 x forward); device {dev_name}"
          f"{', peak %.0f TFLOP/s' % peak if peak else ''}")
    for n in notes:
        print("  " + n)
    print(f"{'side':<13}{'s/step':>9}{'tokens/s':>12}{'TFLOP/s':>9}{'% peak':>8}"
          f"{'first loss':>12}{'last loss':>11}")
    lnv = math.log(a["vocab_size"])
    for name, r in rows:
        sec = r["sec_per_step"]
        tf = flops_step / sec / 1e12
        pk = f"{100 * tf / peak:>8.1f}" if peak else f"{'n/a':>8}"
        print(f"{name:<13}{sec:>9.3f}{T * B / sec:>12.0f}{tf:>9.3f}{pk}{r['first']:>12.4f}"
              f"{r['last']:>11.4f}")
        if not (math.isfinite(r["first"]) and math.isfinite(r["last"]) and
                abs(r["first"] - lnv) < 0.5):
            print(f"bench_gpu_train: {name}'s losses {r['first']} .. {r['last']} are not near "
                  f"ln(V) = {lnv:.4f} at the start, or not finite")
            rc = 1
    summary = ", ".join(f"{n} {T * B / r['sec_per_step']:.0f} tok/s" for n, r in rows)
    if len(rows) >= 2 and rows[-1][0] == "torch" and rows[0][0] == "pgtrain":
        summary += (f", pgtrain time / torch time "
                    f"{rows[0][1]['sec_per_step'] / rows[-1][1]['sec_per_step']:.2f}")
    print(f"summary: {device.type}: {summary}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
