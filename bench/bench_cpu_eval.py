#!/usr/bin/env python3
"""bench_cpu_eval.py: the same sliding evaluation in pgverify (the CPU reference) and in PyTorch.

A random model of a record-sized arch (default: the baseline's features at 11 layers, d 512,
MLP 3x, vocab 1024) is written as safetensors with pgolf's tensor names; the first TARGETS + 1
tokens of the validation shard become a one-shard stream; pgverify scores it with
`--protocol sliding --seq-len L --stride S` and a PyTorch model written here from spec/model.md,
spec/arch.md and spec/engine.md scores the same windows. One table: wall seconds, CPU seconds
(user + system of every thread: the pgverify child's, PyTorch's own process's), tokens/s (scored
targets per second), both time ratios to PyTorch (measured in the same run), each val_loss and
their difference.

The PyTorch side covers the arch features the default arch uses (tied head with softcap,
QK-norm, q_gain, full or partial RoPE, resid_mix, attn/mlp scales, plain U-Net skips, GQA,
relu^2) and refuses any other.
"""
import argparse
import json
import math
import os
import resource
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def default_arch():
    with open(os.path.join(ROOT, "spec/examples/baseline.json")) as f:
        a = json.load(f)
    a.pop("follows", None)
    a["layers"] = 11
    a["mlp"]["hidden"] = 1536
    a["structure"]["encoder"] = list(range(5))
    a["structure"]["decoder"] = list(range(5, 11))
    return a


def check_supported(a):
    """Refuse what the PyTorch model below does not implement."""
    bad = []
    if a.get("block", {}).get("ln_scale", "none") != "none": bad.append("ln_scale")
    at = a.get("attention", {})
    if at.get("xsa_layers"): bad.append("xsa_layers")
    if at.get("gate", "none") != "none": bad.append("attention gate")
    if at.get("rope_ntk_len", 0): bad.append("rope_ntk_len")
    if a.get("mlp", {}).get("act", "relu2") != "relu2": bad.append("mlp act")
    st = a.get("structure", {})
    if st.get("skips", "plain") != "plain": bad.append("skips")
    if st.get("parallel", "none") != "none": bad.append("parallel")
    if a.get("embeddings"): bad.append("embeddings")
    if not a.get("head", {}).get("tied", True): bad.append("untied head")
    if bad: sys.exit("bench_cpu_eval: the PyTorch model does not implement: " + ", ".join(bad))


def tensors_of(a, rng):
    """pgolf's names and shapes (spec/arch.md §4) with random values: matrices N(0, 1/fan_in)
    (the projections too, so every path matters), control tensors at their init plus noise."""
    d, H, G, hd = a["dim"], a["heads"], a["kv_heads"], a["head_dim"]
    V, L, hid = a["vocab_size"], a["layers"], a["mlp"]["hidden"]
    st = a["structure"]
    n_skips = min(len(st["encoder"]), len(st["decoder"]))
    t = {}
    mat = lambda o, i: rng.standard_normal((o, i)).astype(np.float32) / np.float32(math.sqrt(i))
    near = lambda shape, v: (v + 0.05 * rng.standard_normal(shape)).astype(np.float32)
    t["tok_emb.weight"] = (0.05 * rng.standard_normal((V, d))).astype(np.float32)
    for i in range(L):
        p = f"blocks.{i}."
        t[p + "attn.c_q.weight"] = mat(H * hd, d)
        t[p + "attn.c_k.weight"] = mat(G * hd, d)
        t[p + "attn.c_v.weight"] = mat(G * hd, d)
        t[p + "attn.proj.weight"] = mat(d, H * hd) * np.float32(0.3)
        t[p + "attn.q_gain"] = near((H,), a["attention"]["q_gain"])
        t[p + "mlp.fc.weight"] = mat(hid, d)
        t[p + "mlp.proj.weight"] = mat(d, hid) * np.float32(0.3)
        if a["block"].get("attn_scale"): t[p + "attn_scale"] = near((d,), 1.0)
        if a["block"].get("mlp_scale"): t[p + "mlp_scale"] = near((d,), 1.0)
        if a["block"].get("resid_mix"):
            t[p + "resid_mix"] = np.stack([near((d,), 1.0), near((d,), 0.0)])
    if n_skips: t["skip_weights"] = near((n_skips, d), 1.0)
    return t


def write_safetensors(path, tensors, meta):
    header, off, blobs = {"__metadata__": meta}, 0, []
    for name, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs: f.write(b)


def read_shard(path):
    with open(path, "rb") as f:
        hdr = np.frombuffer(f.read(1024), dtype="<i4")
        assert hdr[0] == 20240520 and hdr[1] == 1
        return np.frombuffer(f.read(2 * int(hdr[2])), dtype="<u2").astype(np.int64)


def write_shard(path, toks):
    hdr = np.zeros(256, dtype="<i4")
    hdr[0], hdr[1], hdr[2] = 20240520, 1, len(toks)
    with open(path, "wb") as f:
        f.write(hdr.tobytes() + np.asarray(toks, dtype="<u2").tobytes())


# ---- the PyTorch model (spec/model.md §3, spec/engine.md §4), fp32 ----

def rms(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rope_tables(a, T):
    hd, rot = a["head_dim"], a["attention"]["rope_dims"]
    base = torch.tensor(a["attention"]["rope_base"], dtype=torch.float32)
    # fp32, rounded twice (spec/engine.md §4.3)
    inv = 1.0 / (base ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)


def rope(x, cos, sin, rot):
    # x [B, heads, T, hd]; pairs (i, i + rot/2): y_i = x_i c + x_j s, y_j = -x_i s + x_j c
    h = rot // 2
    x1, x2, rest = x[..., :h], x[..., h:rot], x[..., rot:]
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos, rest], dim=-1)


class Model:
    def __init__(self, a, w):
        self.a, self.w = a, {k: torch.from_numpy(np.array(v)) for k, v in w.items()}
        self.eps = float(a.get("norm_eps", 2.0 ** -23))

    def block(self, i, x, x0, cos, sin):
        a, w, p = self.a, self.w, f"blocks.{i}."
        B, T, d = x.shape
        H, G, hd, rot = a["heads"], a["kv_heads"], a["head_dim"], a["attention"]["rope_dims"]
        if p + "resid_mix" in w:
            m = w[p + "resid_mix"]
            x = m[0] * x + m[1] * x0
        n = rms(x, self.eps)
        q = F.linear(n, w[p + "attn.c_q.weight"]).view(B, T, H, hd).transpose(1, 2)
        k = F.linear(n, w[p + "attn.c_k.weight"]).view(B, T, G, hd).transpose(1, 2)
        v = F.linear(n, w[p + "attn.c_v.weight"]).view(B, T, G, hd).transpose(1, 2)
        if a["attention"].get("qk_norm"):
            q, k = rms(q, self.eps), rms(k, self.eps)
        q, k = rope(q, cos, sin, rot), rope(k, cos, sin, rot)
        q = q * w[p + "attn.q_gain"][None, :, None, None]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(hd),
                                           enable_gqa=(H != G))
        y = F.linear(y.transpose(1, 2).reshape(B, T, H * hd), w[p + "attn.proj.weight"])
        x = x + (w[p + "attn_scale"] * y if p + "attn_scale" in w else y)
        h = F.linear(rms(x, self.eps), w[p + "mlp.fc.weight"])
        h = F.linear(torch.relu(h).square(), w[p + "mlp.proj.weight"])
        return x + (w[p + "mlp_scale"] * h if p + "mlp_scale" in w else h)

    def nll(self, ids, tgt):
        """ids, tgt [B, T] -> per-target NLL [B, T] (fp32 logits, as the records)."""
        a, w = self.a, self.w
        st = a["structure"]
        cos, sin = rope_tables(a, ids.shape[1])
        x = rms(F.embedding(ids, w["tok_emb.weight"]), self.eps)
        x0, stack = x, []
        n_skips = min(len(st["encoder"]), len(st["decoder"]))
        for i in st["encoder"]:
            x = self.block(i, x, x0, cos, sin)
            stack.append(x)
        for j, i in enumerate(st["decoder"]):
            if j < n_skips and stack:
                x = x + w["skip_weights"][j] * stack.pop()
            x = self.block(i, x, x0, cos, sin)
        if a["head"].get("final_norm", True): x = rms(x, self.eps)
        z = F.linear(x, w["tok_emb.weight"])
        c = a["head"].get("softcap", 0.0)
        if c > 0: z = c * torch.tanh(z / c)
        nll = F.cross_entropy(z.float().flatten(0, 1), tgt.flatten(), reduction="none")
        return nll.view(tgt.shape)


def sliding_windows(T, L, s):
    """spec/eval.md §3.2, exact partition: (ws, wlen, lo) per window."""
    out, ws = [], 0
    while ws < T:
        if ws == 0 or ws + (L - s) < T:
            wlen = min(ws + L, T) - ws
            out.append((ws, wlen, 0 if ws == 0 else L - s))
        elif ws > 0:
            break
        ws += s
    return out


def torch_eval(model, toks, L, s, batch):
    T = len(toks) - 1
    tok = torch.from_numpy(toks)
    wins = sliding_windows(T, L, s)
    nats, n = 0.0, 0
    with torch.inference_mode():
        i = 0
        while i < len(wins):
            # a batch of equal-length windows (all but possibly the last have length L)
            grp = [wins[i]]
            while (i + len(grp) < len(wins) and len(grp) < batch and
                   wins[i + len(grp)][1] == grp[0][1]):
                grp.append(wins[i + len(grp)])
            wl = grp[0][1]
            ids = torch.stack([tok[ws:ws + wl] for ws, _, _ in grp])
            tgt = torch.stack([tok[ws + 1:ws + wl + 1] for ws, _, _ in grp])
            nll = model.nll(ids, tgt).double()
            for r, (ws, wlen, lo) in enumerate(grp):
                nats += float(nll[r, lo:wlen].sum())
                n += wlen - lo
            i += len(grp)
    return nats / n, n


def cpu_s(who):
    """User + system seconds so far (RUSAGE_CHILDREN: of the waited-for children)."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def keep(best, name, sec, cpu, n, loss):
    """Each side's fastest wall time and, separately, its least CPU time over the repeats."""
    if name not in best:
        best[name] = (name, sec, cpu, n, loss)
    else:
        _, s0, c0, _, _ = best[name]
        best[name] = (name, min(s0, sec), min(c0, cpu), n, loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=4096, help="targets scored (default 4096)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="both sides (0: online CPUs)")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward (both sides)")
    ap.add_argument("--arch", help="arch JSON (default: baseline features, 11 layers)")
    ap.add_argument("--pgverify", default=os.path.join(ROOT, "build/tools/pgverify"))
    ap.add_argument("--val", default=os.path.join(ROOT, "data/kjv/shards/fineweb_val_000000.bin"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "data/kjv/kjv_1024_bpe.model"))
    ap.add_argument("--base", metavar="PGVERIFY",
                    help="also time this pgverify (e.g. a build of an older commit), same inputs")
    ap.add_argument("--only", choices=["pgverify", "torch"], help="run one side only")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each side N times, alternating, and report the fastest run (the "
                         "least disturbed by other work on the machine) and the least CPU time; "
                         "default 1")
    args = ap.parse_args()
    if args.arch:
        with open(args.arch) as f: a = json.load(f)
        a.pop("follows", None)
    else:
        a = default_arch()
    check_supported(a)
    threads = args.threads or os.cpu_count()
    toks = read_shard(args.val)
    if len(toks) < args.targets + 1: sys.exit(f"bench_cpu_eval: the stream has {len(toks)} tokens")
    toks = toks[:args.targets + 1].copy()
    if args.targets % args.seq_len:
        sys.exit("bench_cpu_eval: --targets must be a multiple of --seq-len (no trimming)")
    w = tensors_of(a, np.random.default_rng(args.seed))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_cpu_eval.") as tmp:
        arch_path, st_path = os.path.join(tmp, "arch.json"), os.path.join(tmp, "w.safetensors")
        with open(arch_path, "w") as f: json.dump(a, f)
        write_safetensors(st_path, w, {})
        os.mkdir(os.path.join(tmp, "val"))
        write_shard(os.path.join(tmp, "val/val_000000.bin"), toks)
        sides = [("pgverify", args.pgverify)] + ([("base", args.base)] if args.base else [])
        best = {}
        model = None
        for _ in range(max(1, args.repeat)):
          for name, exe in sides if args.only != "torch" else []:
            cmd = [exe, st_path, "--arch", arch_path, "--tokenizer", args.tokenizer,
                   "--val", os.path.join(tmp, "val/val_*.bin"), "--protocol", "sliding",
                   "--seq-len", str(args.seq_len), "--stride", str(args.stride),
                   "--batch", str(args.batch), "--threads", str(threads), "--json",
                   "--no-receipt"]
            print("running: " + " ".join(cmd), file=sys.stderr)
            c0, t0 = cpu_s(resource.RUSAGE_CHILDREN), time.monotonic()
            r = subprocess.run(cmd, stdout=subprocess.PIPE)
            sec, cpu = time.monotonic() - t0, cpu_s(resource.RUSAGE_CHILDREN) - c0
            if r.returncode: sys.exit(f"bench_cpu_eval: pgverify exited {r.returncode}")
            j = json.loads(r.stdout)
            loss = j.get("val_loss", j.get("result", {}).get("val_loss"))
            keep(best, name, sec, cpu, args.targets, loss)
          if args.only != "pgverify":
            torch.set_num_threads(threads)
            print(f"running: torch {torch.__version__}, {threads} threads", file=sys.stderr)
            if model is None: model = Model(a, w)
            c0, t0 = cpu_s(resource.RUSAGE_SELF), time.monotonic()
            loss, n = torch_eval(model, toks, args.seq_len, args.stride, args.batch)
            sec, cpu = time.monotonic() - t0, cpu_s(resource.RUSAGE_SELF) - c0
            keep(best, "torch", sec, cpu, n, loss)
        rows = list(best.values())
    print(f"sliding eval: {args.targets} targets, seq_len {args.seq_len}, stride {args.stride}, "
          f"{a['layers']} layers, d {a['dim']}, vocab {a['vocab_size']}, {threads} threads"
          + (f", fastest of {args.repeat} runs each" if args.repeat > 1 else ""))
    print(f"{'engine':<10}{'seconds':>10}{'cpu_s':>9}{'tokens/s':>11}{'ratio':>8}{'cpu_ratio':>10}"
          f"  {'val_loss':<20}")
    base, base_cpu = rows[-1][1], rows[-1][2]
    for name, sec, cpu, n, loss in rows:
        print(f"{name:<10}{sec:>10.2f}{cpu:>9.2f}{n / sec:>11.1f}{sec / base:>8.2f}"
              f"{cpu / base_cpu:>10.2f}  {loss:<20.12f}")
    if args.only is None:
        for name, _, _, _, loss in rows[:-1]:
            print(f"val_loss difference ({name} - torch): {loss - rows[-1][4]:.3e}")


if __name__ == "__main__":
    main()
