#!/usr/bin/env python3
"""bench_gpu_eval.py: sliding evaluation of a record-sized model on a GPU, pgverify against PyTorch.

The records' R9-class model (spec/examples/pr1676.json without its readout: 11 layers, d 512,
8/4 heads of 64, layers 3-5 looped to 17 virtual layers, vocabulary 8192, gated U-Net skips, GPT-J
parallel residuals from layer 7, XSA on every layer, leaky relu^2 MLP 4x, partial RoPE (16 dims),
q_gain 5, QK-norm, physical LN scale, tied head with softcap 30) gets random weights, written as
safetensors with pgolf's tensor names beside its arch JSON and a synthetic 8192-piece tokenizer.
A fixed slice of random tokens (one shard in pgolf's format) is scored with the sliding protocol
(exact partition, stride 64, context 2048; the slice is sized so that every window is full) by

  pgverify --engine cuda --precision bf16 --no-fp32-figure --protocol sliding --no-trim ...

and, in the same run on the same device, by the same model and protocol written here in PyTorch
from spec/model.md and spec/arch.md (torch.compile, bf16 autocast, F.scaled_dot_product_attention).
One table: scoring seconds (best of --repeat), tokens/s (scored targets per second), seconds
projected for the full validation set (40.5 M tokens), achieved TFLOP/s against the protocol's
FLOP count, % of the card's bf16 dense peak, each val_loss and their difference.

FLOP count (multiply-adds x 2; elementwise work not counted), per window of T tokens:
  F = 2*T*(n_virtual*P_layer + d*V) + 2*n_virtual*H*hd*T*(T+1)
with P_layer = d*H*hd + 2*d*Hkv*hd + H*hd*d + 2*d*hidden (q, k, v, o, fc, proj) and the causal
attention's QK^T and PV over T(T+1)/2 pairs per head; the protocol costs windows x F (every
window runs its whole length through the head, as the records' eval does).

--protocol ttt-chunk: R9's legal score-first TTT instead (SGD lr 0.005, 3 epochs, --chunk-tokens
per chunk), pgverify only (no PyTorch side); the "full val s" column projects its seconds for the
whole validation set (issue 15's goal: at most 600 s on one H100).

--smoke (or --small): a tiny model of the same features, --engine cpu, PyTorch on the CPU without
compile: runs in seconds without a GPU (scripts/gpu-check.sh's CPU row; the meson test
bench-gpu-eval-smoke runs it with --precision fp32 --check 1e-6, where both sides compute the
same fp32 model and must agree). Without PyTorch it prints a skip line and exits 0
(--no-torch-status). PGOLF_LIBRARY_PATH, when set, is put on pgverify's LD_LIBRARY_PATH (the GPU
bundle's libraries, kept away from Python's own).
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FULL_VAL_TOKENS = 40.5e6
# bf16 dense tensor-core peaks in TFLOP/s (without sparsity), by device name
PEAKS = [("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("H800", 989.0)]


def r9_arch():
    """R9 (PR #1493) as spec/examples/pr1676.json gives it, without the readout of PR #1676."""
    return {
        "vocab_size": 8192, "dim": 512, "layers": 11, "heads": 8, "kv_heads": 4, "head_dim": 64,
        "block": {"ln_scale": "physical"},
        "attention": {"q_gain": 5.0, "rope_dims": 16, "rope_base": 10000.0,
                      "xsa_layers": list(range(11))},
        "mlp": {"hidden": 2048, "act": "leaky_relu2", "leaky_slope": 0.5},
        "structure": {"skips": "gated", "encoder": [0, 1, 2, 3, 4, 5, 3, 4],
                      "decoder": [5, 3, 4, 5, 6, 7, 8, 9, 10], "recur_step": 2000,
                      "parallel": "gptj", "parallel_start": 7},
        "head": {"softcap": 30.0},
    }


def smoke_arch():
    """The same features at a size that runs in a second on a CPU."""
    return {
        "vocab_size": 512, "dim": 64, "layers": 4, "heads": 4, "kv_heads": 2, "head_dim": 16,
        "block": {"ln_scale": "physical"},
        "attention": {"q_gain": 5.0, "rope_dims": 8, "rope_base": 10000.0,
                      "xsa_layers": [0, 1, 2, 3]},
        "mlp": {"hidden": 256, "act": "leaky_relu2", "leaky_slope": 0.5},
        "structure": {"skips": "gated", "encoder": [0, 1, 2, 1], "decoder": [2, 1, 3],
                      "parallel": "gptj", "parallel_start": 3},
        "head": {"softcap": 30.0},
    }


def dims(a):
    st = a["structure"]
    n_virtual = len(st["encoder"]) + len(st["decoder"])
    d, H, G, hd, hid = a["dim"], a["heads"], a["kv_heads"], a["head_dim"], a["mlp"]["hidden"]
    p_layer = d * H * hd + 2 * d * G * hd + H * hd * d + 2 * d * hid
    return n_virtual, p_layer


def window_flops(a, T):
    n_virtual, p_layer = dims(a)
    return (2 * T * (n_virtual * p_layer + a["dim"] * a["vocab_size"]) +
            2 * n_virtual * a["heads"] * a["head_dim"] * T * (T + 1))


# ---- inputs: weights, tokenizer, tokens --------------------------------------------------------

def tensors_of(a, gen):
    """pgolf's names and shapes (spec/arch.md §4), random: matrices N(0, 1/fan_in) (projections
    x0.3), control tensors near their init; float32 torch tensors on the CPU."""
    import torch
    d, H, G, hd = a["dim"], a["heads"], a["kv_heads"], a["head_dim"]
    V, L, hid = a["vocab_size"], a["layers"], a["mlp"]["hidden"]
    st = a["structure"]
    n_skips = min(len(st["encoder"]), len(st["decoder"]))
    rn = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32)
    mat = lambda o, i: rn(o, i) / math.sqrt(i)
    near = lambda v, *s: v + 0.05 * rn(*s)
    t = {"tok_emb.weight": 0.02 * rn(V, d)}  # tied: small, or the input token dominates
    for i in range(L):
        p = f"blocks.{i}."
        t[p + "attn.c_q.weight"] = mat(H * hd, d)
        t[p + "attn.c_k.weight"] = mat(G * hd, d)
        t[p + "attn.c_v.weight"] = mat(G * hd, d)
        t[p + "attn.proj.weight"] = 0.3 * mat(d, H * hd)
        t[p + "attn.q_gain"] = near(a["attention"]["q_gain"], H)
        t[p + "mlp.fc.weight"] = mat(hid, d)
        t[p + "mlp.proj.weight"] = 0.3 * mat(d, hid)
        t[p + "attn_scale"] = near(1.0, d)
        t[p + "mlp_scale"] = near(1.0, d)
        t[p + "resid_mix"] = torch.stack([near(1.0, d), near(0.0, d)])
    t["skip_weights"] = near(1.0, n_skips, d)
    t["skip_gates"] = near(0.0, n_skips, d)
    return t


def write_safetensors(path, tensors):
    header, off, blobs = {}, 0, []
    for name, v in tensors.items():
        b = v.contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def write_tokenizer(path, V):
    """A SentencePiece .model (protobuf ModelProto) of exactly V pieces: <unk>, <s>, </s>, "▁",
    then "▁wN" and "wN" pieces (BPE, no byte fallback): pgverify needs one for the byte tables."""
    def varint(n):
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def field(num, wire, payload):
        key = varint(num << 3 | wire)
        return key + (varint(len(payload)) + payload if wire == 2 else payload)

    pieces = [("<unk>", 2), ("<s>", 3), ("</s>", 3), ("\u2581", 1)]
    k = 0
    while len(pieces) < V:
        pieces.append((("\u2581w%d" if k % 2 == 0 else "w%d") % (k // 2), 1))
        k += 1
    out = b""
    for s, typ in pieces:
        msg = field(1, 2, s.encode()) + field(2, 5, struct.pack("<f", -float(len(out) % 97))) + \
            field(3, 0, varint(typ))
        out += field(1, 2, msg)
    out += field(2, 2, field(3, 0, varint(2)) + field(4, 0, varint(V)))
    with open(path, "wb") as f:
        f.write(out)


def write_shard(path, toks):
    hdr = struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253))
    with open(path, "wb") as f:
        f.write(hdr + b"".join(struct.pack("<H", int(t)) for t in toks))


# ---- the PyTorch model (spec/model.md §3) -------------------------------------------------------

def build_torch_model(a, w, device, bf16, trainable=False):
    """The model as a torch module; trainable: the weights are parameters (bench_gpu_train.py),
    else buffers of an eval-mode module."""
    import torch
    import torch.nn.functional as F

    eps = float(a.get("norm_eps", 2.0 ** -23))
    d, H, G, hd = a["dim"], a["heads"], a["kv_heads"], a["head_dim"]
    at, st = a["attention"], a["structure"]
    rot, xsa = at["rope_dims"], set(at.get("xsa_layers", []))
    slope = a["mlp"].get("leaky_slope", 0.5)
    enc, dec = st["encoder"], st["decoder"]
    n_skips = min(len(enc), len(dec))
    pstart = st.get("parallel_start", 0) if st.get("parallel") == "gptj" else None
    cap = a["head"].get("softcap", 30.0)
    lnscale = a["block"].get("ln_scale", "none")
    try:  # GQA inside SDPA where this torch has it, else the kv heads are repeated
        F.scaled_dot_product_attention(torch.zeros(1, 2, 1, 2), torch.zeros(1, 1, 1, 2),
                                       torch.zeros(1, 1, 1, 2), enable_gqa=True)
        gqa_kw, repeat_kv = ({"enable_gqa": True} if H != G else {}), False
    except TypeError:
        gqa_kw, repeat_kv = {}, H != G

    def rms(x):
        return F.rms_norm(x.float(), (x.shape[-1],), eps=eps)

    class R9(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for k, v in w.items():
                if trainable:
                    self.register_parameter(k.replace(".", "__"),
                                            torch.nn.Parameter(v.to(device).clone()))
                else:
                    self.register_buffer(k.replace(".", "__"), v.to(device))

        def p(self, name):
            return getattr(self, name.replace(".", "__"))

        def attn(self, i, n, cos, sin):
            B, T, _ = n.shape
            p = f"blocks.{i}.attn."
            q = F.linear(n, self.p(p + "c_q.weight")).view(B, T, H, hd)
            k = F.linear(n, self.p(p + "c_k.weight")).view(B, T, G, hd)
            v = F.linear(n, self.p(p + "c_v.weight")).view(B, T, G, hd)
            if at.get("qk_norm", True):
                q, k = rms(q), rms(k)
            q, k = q.float(), k.float()
            if rot:
                h = rot // 2

                def rope(x):
                    x1, x2, rest = x[..., :h], x[..., h:rot], x[..., rot:]
                    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos, rest], dim=-1)
                q, k = rope(q), rope(k)
            q = q * self.p(p + "q_gain")[None, None, :, None]
            dt = torch.bfloat16 if bf16 else torch.float32
            qh, kh, vh = (t.transpose(1, 2).to(dt) for t in (q, k, v))
            if repeat_kv:
                kh, vh = (t.repeat_interleave(H // G, dim=1) for t in (kh, vh))
            y = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True,
                                               scale=1.0 / math.sqrt(hd),
                                               **gqa_kw).transpose(1, 2)  # [B, T, H, hd]
            if i in xsa:  # y - (y.v^)v^ with v^ the unit value of the head's kv group
                vn = F.normalize(v.float(), dim=-1).repeat_interleave(H // G, dim=2)
                yf = y.float()
                y = yf - (yf * vn).sum(-1, keepdim=True) * vn
            return F.linear(y.reshape(B, T, H * hd), self.p(p + "proj.weight"))

        def mlp(self, i, n):
            u = F.linear(n, self.p(f"blocks.{i}.mlp.fc.weight"))
            u = torch.where(u > 0, u, slope * u).square()
            return F.linear(u, self.p(f"blocks.{i}.mlp.proj.weight"))

        def block(self, i, x, x0, cos, sin, parallel):
            p = f"blocks.{i}."
            m = self.p(p + "resid_mix")
            x = m[0] * x + m[1] * x0
            s = 1.0 / math.sqrt(i + 1) if lnscale == "physical" else 1.0
            n = rms(x) * s
            if parallel:
                return (x + self.p(p + "attn_scale") * self.attn(i, n, cos, sin) +
                        self.p(p + "mlp_scale") * self.mlp(i, n))
            x = x + self.p(p + "attn_scale") * self.attn(i, n, cos, sin)
            return x + self.p(p + "mlp_scale") * self.mlp(i, rms(x) * s)

        def forward(self, ids, tgt):
            T = ids.shape[1]
            inv = 1.0 / (at["rope_base"] ** (torch.arange(0, rot, 2, dtype=torch.float32,
                                                          device=ids.device) / rot))
            ang = torch.arange(T, dtype=torch.float32, device=ids.device)[:, None] * inv[None, :]
            cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
            x = rms(F.embedding(ids, self.p("tok_emb.weight")))
            x0, stack = x, []
            for i in enc:
                x = self.block(i, x, x0, cos, sin, False)
                stack.append(x)
            for j, i in enumerate(dec):
                if j < n_skips and stack:
                    g = torch.sigmoid(self.p("skip_gates")[j])
                    x = g * x + (1 - g) * (self.p("skip_weights")[j] * stack.pop())
                x = self.block(i, x, x0, cos, sin, pstart is not None and i >= pstart)
            z = F.linear(rms(x), self.p("tok_emb.weight")).float()
            if cap > 0:
                z = cap * torch.tanh(z / cap)
            nll = F.cross_entropy(z.flatten(0, 1), tgt.flatten(), reduction="none")
            return nll.view(tgt.shape)

    return R9() if trainable else R9().eval()


def torch_eval(fn, tok, W, L, s, batch, device, bf16):
    """Every window full (ws = k*s, k < W); window 0 scores [0, L), the others [L - s, L).
    Batches of `batch` windows (the last padded with its last window, discarded): one shape."""
    import torch
    wins = tok.unfold(0, L + 1, s)[:W]  # [W, L + 1]
    nats = torch.zeros((), dtype=torch.float64, device=device)
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else \
        torch.autocast(device_type=device.type, enabled=False)
    with torch.inference_mode(), ctx:
        for b0 in range(0, W, batch):
            idx = torch.arange(b0, b0 + batch, device=device).clamp(max=W - 1)
            rows = wins[idx]
            nll = fn(rows[:, :-1], rows[:, 1:]).double()
            n = min(batch, W - b0)
            nats += nll[:n, L - s:].sum()
            if b0 == 0:
                nats += nll[0, :L - s].sum()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return float(nats) / (L + (W - 1) * s)


# ---- main ---------------------------------------------------------------------------------------

def add_common_args(ap, prog, smoke_help):
    """The options both benchmarks take (bench_gpu_train.py uses this too); prog is the pgolf
    program of the pgolf side: --engine, --only, --PROG and --PROG-timeout are about it."""
    ap.add_argument("--engine", default=None, help=f"{prog} --engine (default cuda; smoke: cpu)")
    ap.add_argument("--peak", type=float, default=0.0,
                    help="the device's bf16 dense peak in TFLOP/s (default: from its name)")
    ap.add_argument("--no-compile", action="store_true", help="PyTorch without torch.compile")
    ap.add_argument("--only", choices=[prog, "torch"], help="run one side only")
    ap.add_argument("--" + prog, default=None, help=f"the {prog} program (default: beside this "
                    f"script, or the build's tools/{prog})")
    ap.add_argument("--smoke", "--small", dest="smoke", action="store_true", help=smoke_help)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (smoke; 0: all)")
    ap.add_argument(f"--{prog}-timeout", type=float, default=None,
                    help=f"stop {prog} after this many seconds (a failure, with its bound)")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--no-torch-status", type=int, default=0,
                    help="exit status when PyTorch is not installed (default 0; a test: 77)")


def import_torch(bench):
    """torch, or None once the skip lines are printed (the caller then exits with
    --no-torch-status)."""
    try:
        import torch
    except ImportError:
        print(f"{bench}: PyTorch is not installed: skipped")
        print("summary: skipped (no PyTorch)")
        return None
    return torch


def torch_device(args, torch):
    """The PyTorch side's device (the CPU with --smoke), whether it compiles, the CPU threads
    (given to torch on the CPU), the device's name and its bf16 peak; args.engine defaulted."""
    args.engine = args.engine or ("cpu" if args.smoke else "cuda")
    use_cuda = not args.smoke and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    compile_ = use_cuda and not args.no_compile
    threads = args.threads or os.cpu_count()
    if not use_cuda:
        torch.set_num_threads(threads)
    dev_name = torch.cuda.get_device_name(0) if use_cuda else "cpu"
    peak = args.peak or next((p for k, p in PEAKS if k in dev_name), 0.0)
    return device, compile_, threads, dev_name, peak


def find_prog(name):
    """A pgolf program: beside this script (a bundle), in ../tools, or in ../build/tools."""
    for p in (os.path.join(HERE, name), os.path.join(HERE, "..", "tools", name),
              os.path.join(HERE, "..", "build", "tools", name)):
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return os.path.abspath(p)
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=256,
                    help="sliding windows scored, all full length (default 256)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16, help="windows per forward (both sides)")
    ap.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                    help="pgverify --precision, and torch with or without bf16 autocast")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes per side; the best counts")
    add_common_args(ap, "pgverify", "tiny model, --engine cpu, PyTorch on the CPU without compile")
    ap.add_argument("--check", type=float, default=None,
                    help="exit 1 when |val_loss difference| exceeds this")
    ap.add_argument("--protocol", choices=["sliding", "ttt-chunk"], default="sliding",
                    help="sliding (both sides) or ttt-chunk: R9's legal score-first TTT (SGD lr "
                    "0.005, 3 epochs; pgverify only), projected for the full validation set")
    ap.add_argument("--chunk-tokens", type=int, default=32768,
                    help="ttt-chunk: tokens per chunk (default 32768, the records')")
    args = ap.parse_args()
    torch = import_torch("bench_gpu_eval")
    if torch is None:
        return args.no_torch_status
    if args.smoke:
        a = smoke_arch()
        L, s, W, batch = 128, 16, 12, 4
    else:
        a = r9_arch()
        L, s, W, batch = args.seq_len, args.stride, args.windows, args.batch
    if W < 1 or s < 1 or s > L:
        sys.exit("bench_gpu_eval: need windows >= 1 and 1 <= stride <= seq-len")
    device, compile_, threads, dev_name, peak = torch_device(args, torch)
    engine = args.engine
    bf16 = args.precision == "bf16"
    ttt = args.protocol == "ttt-chunk"
    if ttt:
        if args.only == "torch":
            sys.exit("bench_gpu_eval: ttt-chunk has no PyTorch side (it runs pgverify only)")
        args.only = "pgverify"
        if args.chunk_tokens < s or args.chunk_tokens % s:
            sys.exit("bench_gpu_eval: --chunk-tokens must be a multiple of the stride")
    T = L + (W - 1) * s  # targets: W full windows exactly
    flops = W * window_flops(a, L)
    if ttt:  # every chunk but the last trains: epochs x (forward + backward ~ 3 forwards)
        chunks = -(-T // args.chunk_tokens)
        trained = min(T, (chunks - 1) * args.chunk_tokens)
        flops += 3 * 3 * (trained / L) * window_flops(a, L)
    windows_full = (FULL_VAL_TOKENS - 1 - L) / s + 1
    pgv = args.pgverify or find_prog("pgverify")
    gen = torch.Generator().manual_seed(args.seed)
    w = tensors_of(a, gen)
    toks = torch.randint(0, a["vocab_size"], (T + 1,), generator=gen)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench_gpu_eval.") as tmp:
        arch_path, st_path = os.path.join(tmp, "arch.json"), os.path.join(tmp, "w.safetensors")
        tok_path = os.path.join(tmp, "tok.model")
        with open(arch_path, "w") as f:
            json.dump(a, f)
        write_safetensors(st_path, w)
        write_tokenizer(tok_path, a["vocab_size"])
        os.mkdir(os.path.join(tmp, "val"))
        write_shard(os.path.join(tmp, "val/val_000000.bin"), toks.tolist())
        if args.only != "torch":
            cmd = [pgv, st_path, "--arch", arch_path, "--tokenizer", tok_path,
                   "--val", os.path.join(tmp, "val/val_*.bin"), "--protocol", args.protocol,
                   "--seq-len", str(L), "--stride", str(s), "--no-trim", "--batch", str(batch),
                   "--engine", engine, "--precision", args.precision, "--json", "--no-receipt"]
            if ttt:  # R9's (TTT9) protocol options: spec/presets
                cmd += ["--lr", "0.005", "--epochs", "3", "--chunk-tokens", str(args.chunk_tokens)]
            if bf16:
                cmd.append("--no-fp32-figure")
            if engine == "cpu":
                cmd += ["--threads", str(threads)]
            print("running: " + " ".join(cmd), file=sys.stderr)
            env = dict(os.environ)
            if env.get("PGOLF_LIBRARY_PATH"):  # the GPU bundle's libraries, for pgverify only
                env["LD_LIBRARY_PATH"] = env["PGOLF_LIBRARY_PATH"] + (
                    ":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
            best, loss, wall = None, None, None
            for _ in range(max(1, args.repeat)):
                t0 = time.monotonic()
                try:
                    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, env=env, timeout=args.pgverify_timeout)
                except subprocess.TimeoutExpired:
                    print(f"bench_gpu_eval: pgverify took more than {args.pgverify_timeout} s")
                    print(f"summary: pgverify > {args.pgverify_timeout} s for {W} windows "
                          f"({flops / 1e12:.1f} TFLOP): under "
                          f"{flops / args.pgverify_timeout / 1e12:.2f} TFLOP/s")
                    return 1
                wsec = time.monotonic() - t0
                if r.returncode:
                    sys.stderr.write(r.stderr)
                    print(f"bench_gpu_eval: pgverify exited {r.returncode}: "
                          f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
                    return 1
                j = json.loads(r.stdout)
                sec = j["result"]["seconds"]
                if best is None or sec < best:
                    best, wall = sec, wsec
                loss = j["result"]["val_loss"]
                eng = j["engine"]
            notes.append(f"pgverify: engine {eng['name']} ({eng['devices']}"
                         f"{', ' + eng['driver'] if eng.get('driver') else ''}), "
                         f"whole process {wall:.2f} s")
            rows.append(("pgverify", best, loss))
        if args.only != "pgverify":
            model = build_torch_model(a, w, device, bf16)
            fn = torch.compile(model, dynamic=False) if compile_ else model
            tok = toks.to(device)
            t0 = time.monotonic()
            if compile_:  # the compile and a first pass are not timed
                torch_eval(fn, tok[:L + 1 + (batch - 1) * s], batch, L, s, batch, device, bf16)
            warm = time.monotonic() - t0
            best, loss = None, None
            for _ in range(max(1, args.repeat)):
                t0 = time.monotonic()
                loss = torch_eval(fn, tok, W, L, s, batch, device, bf16)
                sec = time.monotonic() - t0
                best = sec if best is None else min(best, sec)
            how = f"torch.compile {warm:.1f} s untimed" if compile_ else "eager"
            notes.append(f"torch {torch.__version__}: {device.type} ({dev_name}), {how}"
                         f", {'bf16 autocast' if bf16 else 'fp32'}, SDPA")
            rows.append(("torch", best, loss))
    nv, pl = dims(a)
    what = (f"ttt-chunk (SGD lr 0.005, 3 epochs, chunks of {args.chunk_tokens}; FLOP: scoring + "
            f"3 epochs x 3 forwards on every chunk but the last)" if ttt else "sliding eval")
    print(f"{what}: {W} windows of {L} (stride {s}, exact partition, all full), {T} targets; "
          f"{a['layers']} layers ({nv} virtual), d {a['dim']}, vocab {a['vocab_size']}, "
          f"batch {batch}, {args.precision}; {flops / 1e12:.3f} TFLOP; device {dev_name}"
          f"{', peak %.0f TFLOP/s' % peak if peak else ''}")
    for n in notes:
        print("  " + n)
    print(f"{'side':<10}{'seconds':>9}{'tokens/s':>12}{'full val s':>12}{'TFLOP/s':>9}"
          f"{'% peak':>8}  {'val_loss':<18}")
    for name, sec, loss in rows:
        tf = flops / sec / 1e12
        pk = f"{100 * tf / peak:>8.1f}" if peak else f"{'n/a':>8}"
        print(f"{name:<10}{sec:>9.3f}{T / sec:>12.0f}{sec * windows_full / W:>12.0f}{tf:>9.2f}"
              f"{pk}  {loss:<18.12f}")
    summary = ", ".join(f"{n} {T / sec:.0f} tok/s {flops / sec / 1e12:.2f} TFLOP/s" +
                        (f" ({100 * flops / sec / 1e12 / peak:.1f}% peak)" if peak else "")
                        for n, sec, _ in rows)
    rc = 0
    if len(rows) == 2:
        diff = rows[0][2] - rows[1][2]
        print(f"val_loss difference (pgverify - torch): {diff:+.3e}; "
              f"pgverify time / torch time: {rows[0][1] / rows[1][1]:.2f}")
        summary += f", speed-up {rows[1][1] / rows[0][1]:.2f}x, dloss {diff:+.1e}"
        if args.check is not None and not abs(diff) <= args.check:
            print(f"bench_gpu_eval: the val_losses differ by {diff:+.3e}, more than {args.check}")
            rc = 1
    print(f"summary: {device.type}: {summary}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
