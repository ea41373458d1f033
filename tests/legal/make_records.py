#!/usr/bin/env python3
"""Writes the synthetic record folders of tests/legal/records/ (run from the source root:
python3 tests/legal/make_records.py). Each folder is a small record in the style of the
challenge's (a Hyperparameters class read from the environment, a validation loader, a byte
table, a model, an evaluation, a main), written for pgolf's tests: the legal ones must give no
finding, each illegal one is caught by the check named in expected.json. The scripts are never
run; only their text is analysed."""
import base64
import json
import lzma
import os
import shutil
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "records")
MODEL_BYTES = 15_000_000

HEAD = '''"""Synthetic record for pgolf's legality tests: a tiny language model and its evaluation."""
import glob
import math
import os

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F
from torch import nn


class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data")
    val_files = os.path.join(data_path, "val_*.bin")
    train_files = os.path.join(data_path, "train_*.bin")
    tokenizer_path = os.environ.get("TOKENIZER_PATH", "./tokenizer.model")
    seed = int(os.environ.get("SEED", 7))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    seq_len = int(os.environ.get("SEQ_LEN", 1024))
    stride = int(os.environ.get("STRIDE", 64))
    iterations = int(os.environ.get("ITERATIONS", 1000))
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    chunk_tokens = int(os.environ.get("CHUNK_TOKENS", 32768))


def build_byte_luts(sp, vocab_size):
    n = max(int(sp.vocab_size()), vocab_size)
    base = np.zeros(n, dtype=np.int16)
    lead = np.zeros(n, dtype=np.bool_)
    bound = np.ones(n, dtype=np.bool_)
    for i in range(int(sp.vocab_size())):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        bound[i] = False
@@BYTEPIECE@@
        piece = sp.id_to_piece(i)
        if piece.startswith("\\u2581"):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return torch.tensor(base), torch.tensor(lead), torch.tensor(bound)


def count_bytes(x, y, luts):
    base, lead, bound = luts
    return int((base[y] + (lead[y] & ~bound[x])).sum())


def load_validation_tokens(pattern):
    parts = [np.fromfile(f, dtype=np.uint16).astype(np.int64) for f in sorted(glob.glob(pattern))]
    return torch.from_numpy(np.concatenate(parts))


def training_batches(pattern, seq_len):
    for f in sorted(glob.glob(pattern)):
        data = torch.from_numpy(np.fromfile(f, dtype=np.uint16).astype(np.int64))
        for s in range(0, data.numel() - seq_len - 1, seq_len):
            piece = data[s:s + seq_len + 1]
            yield piece[:-1].unsqueeze(0), piece[1:].unsqueeze(0)


class TinyLM(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.emb = nn.Embedding(h.vocab_size, 64)
        self.head = nn.Linear(64, h.vocab_size, bias=False)
@@MODELINIT@@
    def forward_logits(self, input_ids):
        x = self.emb(input_ids)
@@MODELFWD@@
        return self.head(x)

    def forward(self, input_ids, target_ids):
        logits = self.forward_logits(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), target_ids.reshape(-1))


def eval_plain(h, model, val_tokens, luts):
    nll_sum, n_tok, n_bytes = 0.0, 0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, val_tokens.numel() - h.seq_len, h.seq_len):
            chunk = val_tokens[start:start + h.seq_len + 1]
            x = chunk[:-1].unsqueeze(0)
            y = chunk[1:].unsqueeze(0)
            logits = model.forward_logits(x)
            nll_sum += F.cross_entropy(logits[0].float(), y[0], reduction="sum").item()
            n_tok += y.numel()
            n_bytes += count_bytes(x, y, luts)
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes


def train(h, model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
@@TRAINOPT@@
    for step, (x, y) in enumerate(training_batches(h.train_files, h.seq_len)):
        if step >= h.iterations:
            break
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
'''

MAIN = '''

def main():
    h = Hyperparameters()
    sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    luts = build_byte_luts(sp, h.vocab_size)
    val_tokens = load_validation_tokens(h.val_files)
    model = TinyLM(h)
    train(h, model)
@@EVAL@@
    print(f"final_eval val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


if __name__ == "__main__":
    main()
'''

BYTEPIECE_OK = '''        if sp.is_byte(i):
            base[i] = 1
            continue'''

PLAIN_EVAL = "    val_loss, val_bpb = eval_plain(h, model, val_tokens, luts)"

SLIDING = '''

def eval_sliding(h, model, val_tokens, luts):
    nll_sum, n_tok, n_bytes = 0.0, 0, 0
    total = val_tokens.numel() - 1
    with torch.inference_mode():
        for ws in range(0, total - h.seq_len + h.stride, h.stride):
            end = min(ws + h.seq_len, total)
            chunk = val_tokens[ws:end + 1]
            x = chunk[:-1].unsqueeze(0)
            y = chunk[1:].unsqueeze(0)
            first = 0 if ws == 0 else end - ws - h.stride
            nll = F.cross_entropy(model.forward_logits(x)[0].float(), y[0], reduction="none")
            nll_sum += nll[first:].sum().item()
            n_tok += nll[first:].numel()
            n_bytes += count_bytes(x[:, first:], y[:, first:], luts)
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes
'''

# chunked test-time training; ORDER decides whether a chunk is scored before it is trained on
TTT = '''

def score_chunk(model, chunk, luts):
    x = chunk[:-1].unsqueeze(0)
    y = chunk[1:].unsqueeze(0)
    with torch.no_grad():
        nll = F.cross_entropy(model.forward_logits(x)[0].float(), y[0], reduction="sum").item()
    return nll, y.numel(), count_bytes(x, y, luts)


def eval_ttt(h, model, val_tokens, luts):
    opt = torch.optim.SGD(model.parameters(), lr=h.ttt_lr, momentum=0.9)
    nll_sum, n_tok, n_bytes = 0.0, 0, 0
    for start in range(0, val_tokens.numel() - 1, h.chunk_tokens):
        chunk = val_tokens[start:start + h.chunk_tokens + 1]
@@ORDER@@
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes
'''
SCORE = '''        s_nll, s_tok, s_bytes = score_chunk(model, chunk, luts)
        nll_sum += s_nll
        n_tok += s_tok
        n_bytes += s_bytes'''
TRAIN_CHUNK = '''        x = chunk[:-1].unsqueeze(0)
        y = chunk[1:].unsqueeze(0)
        for _ in range(3):
            loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()'''

NGRAM = '''

def eval_with_cache(h, model, val_tokens, luts, lam=0.9, order=3, alpha=0.1):
    counts = {}
    nll_sum, n_tok, n_bytes = 0.0, 0, 0
    x_all = val_tokens[:-1]
    y_all = val_tokens[1:]
    with torch.no_grad():
        for start in range(0, x_all.numel(), h.seq_len):
            x = x_all[start:start + h.seq_len].unsqueeze(0)
            y = y_all[start:start + h.seq_len].unsqueeze(0)
            p_model = torch.softmax(model.forward_logits(x)[0].float(), dim=-1)
            for t in range(y.size(1)):
                ctx = tuple(x_all[max(0, start + t - order + 2):start + t + 1].tolist())
@@LOOKUP@@
                p = lam * p_model[t] + (1.0 - lam) * p_ng
                nll_sum += -math.log(float(p[y[0, t]]))
@@UPDATE@@
            n_tok += y.numel()
            n_bytes += count_bytes(x, y, luts)
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes
'''
LOOKUP_OK = '''                row = counts.get(ctx)
                vec = torch.zeros(h.vocab_size) if row is None else row
                p_ng = (vec + alpha) / (vec.sum() + alpha * h.vocab_size)'''
LOOKUP_RAW = '''                row = counts.get(ctx)
                p_ng = torch.zeros(h.vocab_size) if row is None else row'''
LOOKUP_TARGET = '''                hits = counts.get((ctx, int(y[0, t])), 0)
                seen = counts.get(ctx, 0)
                p_ng = torch.full((h.vocab_size,), (hits + alpha) / (seen + alpha))'''
UPDATE_VEC = '''                if ctx not in counts:
                    counts[ctx] = torch.zeros(h.vocab_size)
                counts[ctx][int(y[0, t])] += 1.0'''
UPDATE_KEYED = '''                counts[(ctx, int(y[0, t]))] = counts.get((ctx, int(y[0, t])), 0) + 1
                counts[ctx] = counts.get(ctx, 0) + 1'''

SLOT = '''

def eval_slot(h, model, val_tokens, luts, steps=4):
    nll_sum, n_tok, n_bytes = 0.0, 0, 0
    for start in range(0, val_tokens.numel() - h.seq_len, h.seq_len):
        chunk = val_tokens[start:start + h.seq_len + 1]
        x = chunk[:-1].unsqueeze(0)
        y = chunk[1:].unsqueeze(0)
        with torch.no_grad():
            hidden = model.emb(x)
        delta = torch.zeros(1, 1, hidden.size(-1), requires_grad=True)
        opt = torch.optim.AdamW([delta], lr=0.01)
        for _ in range(steps):
            loss = F.cross_entropy(model.head(hidden + delta)[0].float(), y[0])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = model.head(hidden + delta)
            nll_sum += F.cross_entropy(logits[0].float(), y[0], reduction="sum").item()
        n_tok += y.numel()
        n_bytes += count_bytes(x, y, luts)
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes
'''

PRE_TTT = '''

def adapt_on_validation(h, model, val_tokens):
    opt = torch.optim.SGD(model.parameters(), lr=h.ttt_lr)
    for start in range(0, val_tokens.numel() - h.seq_len, h.seq_len):
        chunk = val_tokens[start:start + h.seq_len + 1]
        loss = model(chunk[:-1].unsqueeze(0), chunk[1:].unsqueeze(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
'''

CALIB = '''

def collect_hessians(model, tokens, seq_len, batches=8):
    hessians = {}
    for b in range(batches):
        x = tokens[b * seq_len:(b + 1) * seq_len].unsqueeze(0)
        act = model.emb(x)[0].float()
        hessians["head"] = hessians.get("head", 0) + act.T @ act
    return hessians


def quantize(model, hessians):
    for name, hmat in hessians.items():
        damp = 0.01 * torch.diag(hmat).mean()
        torch.linalg.cholesky(hmat + damp * torch.eye(hmat.size(0)))
'''

SMEAR_INIT = '''        self.smear_gate = nn.Linear(12, 1, bias=False)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
'''
SMEAR_FWD_NOMASK = '''        g = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :12]))
        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)
        x = self.mix(x, cu_seqlens=document_starts(input_ids))'''
SMEAR_FWD_MASK = '''        g = self.smear_lambda * torch.sigmoid(self.smear_gate(x[:, 1:, :12]))
        not_bos = (input_ids[:, 1:] != BOS_ID).to(x.dtype).unsqueeze(-1)
        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1] * not_bos], dim=1)
        x = self.mix(x, cu_seqlens=document_starts(input_ids))'''
SMEAR_HELPERS = '''

BOS_ID = 1


def document_starts(input_ids):
    return (input_ids[0] == BOS_ID).nonzero().flatten()
'''
SMEAR_MIX = '''
    def mix(self, x, cu_seqlens=None):
        return x
'''
SMEAR_OPT = '''    opt.add_param_group({"params": [model.smear_lambda, model.smear_gate.weight], "lr": 1e-3})'''


def script(evaluation, extra="", bytepiece=BYTEPIECE_OK, model_init="", model_fwd="", train_opt="",
           head_extra=""):
    s = HEAD.replace("@@BYTEPIECE@@\n", bytepiece + "\n" if bytepiece else "")
    s = s.replace("@@MODELINIT@@\n", model_init + ("\n" if model_init else ""))
    s = s.replace("@@MODELFWD@@\n", model_fwd + ("\n" if model_fwd else ""))
    s = s.replace("@@TRAINOPT@@\n", train_opt + ("\n" if train_opt else ""))
    return s + head_extra + extra + MAIN.replace("@@EVAL@@", evaluation)


def ttt(order):
    return TTT.replace("@@ORDER@@", order)


VARIANTS = {
    # name: (script, {expected verdicts}, options)
    "legal_plain": (script(PLAIN_EVAL), {}, {}),
    "legal_sliding": (script("    val_loss, val_bpb = eval_sliding(h, model, val_tokens, luts)",
                             SLIDING), {}, {}),
    "legal_ttt_score_first": (script("    val_loss, val_bpb = eval_ttt(h, model, val_tokens, luts)",
                                     ttt(SCORE + "\n" + TRAIN_CHUNK)), {}, {}),
    "legal_ngram_cache": (script("    val_loss, val_bpb = "
                                 "eval_with_cache(h, model, val_tokens, luts)",
                                 NGRAM.replace("@@LOOKUP@@", LOOKUP_OK)
                                 .replace("@@UPDATE@@", UPDATE_VEC)), {}, {}),
    "legal_wrapper": (script(PLAIN_EVAL), {}, {"wrap": True}),
    "legal_bos_smear_masked": (script(PLAIN_EVAL, head_extra=SMEAR_HELPERS,
                                      model_init=SMEAR_INIT + SMEAR_MIX,
                                      model_fwd=SMEAR_FWD_MASK, train_opt=SMEAR_OPT), {}, {}),
    "illegal_target_in_key": (script("    val_loss, val_bpb = "
                                     "eval_with_cache(h, model, val_tokens, luts)",
                                     NGRAM.replace("@@LOOKUP@@", LOOKUP_TARGET)
                                     .replace("@@UPDATE@@", UPDATE_KEYED)),
                              {"L1": "finding", "L2": "finding"}, {}),
    "illegal_unnormalised_blend": (script("    val_loss, val_bpb = "
                                          "eval_with_cache(h, model, val_tokens, luts)",
                                          NGRAM.replace("@@LOOKUP@@", LOOKUP_RAW)
                                          .replace("@@UPDATE@@", UPDATE_VEC)),
                                   {"L2": "finding"}, {}),
    "illegal_update_before_score": (script("    val_loss, val_bpb = "
                                           "eval_ttt(h, model, val_tokens, luts)",
                                           ttt(TRAIN_CHUNK + "\n" + SCORE)), {"L3": "finding"}, {}),
    "illegal_pre_eval_ttt": (script("    adapt_on_validation(h, model, val_tokens)\n" + PLAIN_EVAL,
                                    PRE_TTT),
                             {"L3": "finding"}, {}),
    "illegal_slot": (script("    val_loss, val_bpb = eval_slot(h, model, val_tokens, luts)", SLOT),
                     {"L3": "finding"}, {}),
    "illegal_val_calibration": (script("    quantize(model, "
                                       "collect_hessians(model, val_tokens, h.seq_len))\n"
                                       + PLAIN_EVAL, CALIB),
                                {"L3": "finding", "L6": "finding"}, {}),
    "illegal_two_pass": (script("    eval_ttt(h, model, val_tokens, luts)\n" + PLAIN_EVAL,
                                ttt(SCORE + "\n" + TRAIN_CHUNK)), {"L4": "finding"}, {}),
    "illegal_best_of_passes": (script("    first = eval_plain(h, model, val_tokens, luts)\n"
                                      "    second = eval_sliding(h, model, val_tokens, luts)\n"
                                      "    val_loss, val_bpb = min(first, second)", SLIDING),
                               {"L4": "finding"}, {}),
    "illegal_wrong_shift": (script(PLAIN_EVAL).replace(
        "            x = chunk[:-1].unsqueeze(0)\n            y = chunk[1:].unsqueeze(0)\n"
        "            logits",
        "            x = chunk[1:].unsqueeze(0)\n            y = chunk[:-1].unsqueeze(0)\n"
        "            logits"),
                            {"L1": "finding"}, {}),
    "illegal_byte_table": (script(PLAIN_EVAL, bytepiece=""), {"L5": "finding"}, {}),
    "illegal_uncounted_code": (script("    from eval_helper import eval_fast\n"
                                      "    val_loss, val_bpb = "
                                      "eval_fast(h, model, val_tokens, luts)"),
                               {"L5": "finding"}, {"helper": True}),
    "illegal_claim_mismatch": (script(PLAIN_EVAL), {"L5": "finding"}, {"claim_bpb": 1.05}),
    "illegal_bos_smear": (script(PLAIN_EVAL, head_extra=SMEAR_HELPERS,
                                 model_init=SMEAR_INIT + SMEAR_MIX,
                                 model_fwd=SMEAR_FWD_NOMASK, train_opt=SMEAR_OPT),
                          {"L6": "finding"}, {}),
    "illegal_enabled_by_log": (script("    if h.ttt_enabled:\n"
                                      "        adapt_on_validation(h, model, val_tokens)\n"
                                      + PLAIN_EVAL, PRE_TTT), {"L3": "finding"}, {"ttt_log": True}),
    "illegal_train_on_val": (script(PLAIN_EVAL).replace("training_batches(h.train_files",
                                                        "training_batches(h.val_files"),
                             {"L6": "finding"}, {}),
    "dead_illegal_code": (script("    if h.ttt_enabled:\n"
                                 "        adapt_on_validation(h, model, val_tokens)\n"
                                 + PLAIN_EVAL, PRE_TTT + SLOT), {"L3": "dead"}, {}),
}

HELPER = '''"""Evaluation helper kept beside train_gpt.py (its bytes are not in the counted file)."""
import math

import torch
import torch.nn.functional as F


def eval_fast(h, model, val_tokens, luts):
    with torch.no_grad():
        x = val_tokens[:-1].unsqueeze(0)
        y = val_tokens[1:].unsqueeze(0)
        nll = F.cross_entropy(model.forward_logits(x)[0].float(), y[0], reduction="sum").item()
    return nll / y.numel(), nll / math.log(2.0) / y.numel()
'''


def wrap(code):
    blob = base64.b85encode(lzma.compress(code.encode("utf-8"), format=lzma.FORMAT_RAW,
                                          filters=[{"id": lzma.FILTER_LZMA2}])).decode("ascii")
    return ('import lzma as L,base64 as B\n'
            'exec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
            'filters=[{"id":L.FILTER_LZMA2}]))\n' % blob)


def write(name, code, opts):
    d = os.path.join(ROOT, name)
    os.makedirs(d)
    if opts.get("wrap"):
        code = wrap(code)
    with open(os.path.join(d, "train_gpt.py"), "w", encoding="utf-8", newline="\n") as f:
        f.write(code)
    extra = 0
    if opts.get("helper"):
        with open(os.path.join(d, "eval_helper.py"), "w", encoding="utf-8", newline="\n") as f:
            f.write(HELPER)
        extra = len(HELPER.encode("utf-8"))
    code_bytes = len(code.encode("utf-8"))
    total = MODEL_BYTES + code_bytes
    loss, bpb = 2.31234567, 1.12345678
    hp = {"seed": 7, "seq_len": 1024, "stride": 64, "ttt_enabled": bool(opts.get("ttt_log")),
          "ttt_lr": 0.002, "vocab_size": 1024}
    log = ["Hyperparameters:"] + ["  %s: %s" % (k, v) for k, v in sorted(hp.items())]
    log += ["step:1000/1000 val_loss:2.4000 val_bpb:1.1700 train_time:590000ms",
            "stopping_early: wallclock_cap train_time:590000ms step:1000/1000",
            "Code size: %d bytes" % code_bytes,
            "Serialized model int8+zlib: %d bytes" % MODEL_BYTES,
            "Total submission size int8+zlib: %d bytes" % total,
            "final_eval val_loss:%.8f val_bpb:%.8f eval_time:41234ms" % (loss, bpb)]
    with open(os.path.join(d, "train.log"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(log) + "\n")
    sub = {"name": name, "author": "pgolf tests", "val_loss": loss,
           "val_bpb": opts.get("claim_bpb", bpb), "bytes_total": total, "bytes_code": code_bytes,
           "seeds": [7]}
    with open(os.path.join(d, "submission.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(sub, f, indent=1)
        f.write("\n")
    env = "TTT_ENABLED=1 " if opts.get("ttt_log") else ""
    with open(os.path.join(d, "README.md"), "w", encoding="utf-8", newline="\n") as f:
        f.write("# %s\n\nA synthetic record for pgolf's legality tests (spec/legal-record.md).\n\n"
                "```\n%sSEED=7 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
                % (name, env))
    return extra


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    expected = {}
    for name, (code, verdicts, opts) in VARIANTS.items():
        write(name, code, opts)
        expected[name] = {"exit": 1 if any(v == "finding" for v in verdicts.values()) else 0,
                          "verdicts": verdicts}
    with open(os.path.join(os.path.dirname(ROOT), "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
