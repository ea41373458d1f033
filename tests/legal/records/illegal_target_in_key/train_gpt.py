"""Synthetic record for pgolf's legality tests: a tiny language model and its evaluation."""
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
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
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
    def forward_logits(self, input_ids):
        x = self.emb(input_ids)
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
    for step, (x, y) in enumerate(training_batches(h.train_files, h.seq_len)):
        if step >= h.iterations:
            break
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()


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
                hits = counts.get((ctx, int(y[0, t])), 0)
                seen = counts.get(ctx, 0)
                p_ng = torch.full((h.vocab_size,), (hits + alpha) / (seen + alpha))
                p = lam * p_model[t] + (1.0 - lam) * p_ng
                nll_sum += -math.log(float(p[y[0, t]]))
                counts[(ctx, int(y[0, t]))] = counts.get((ctx, int(y[0, t])), 0) + 1
                counts[ctx] = counts.get(ctx, 0) + 1
            n_tok += y.numel()
            n_bytes += count_bytes(x, y, luts)
    return nll_sum / n_tok, nll_sum / math.log(2.0) / n_bytes


def main():
    h = Hyperparameters()
    sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    luts = build_byte_luts(sp, h.vocab_size)
    val_tokens = load_validation_tokens(h.val_files)
    model = TinyLM(h)
    train(h, model)
    val_loss, val_bpb = eval_with_cache(h, model, val_tokens, luts)
    print(f"final_eval val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}")


if __name__ == "__main__":
    main()
