"""Window-based final evaluation (sliding window).

Windows are planned so that the scored spans tile the validation targets in order: every
token is scored exactly once, each with the longest causal context the window length allows.
Positions are indices into val_tokens of the predicted token; val_tokens[0] is context only
and never scored. (golf-verify's probes capture every score from outside the script.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.bpb import count_bytes, finish_scores
from packager.runtime.features import HP, feature
from packager.runtime.system import autocast_ctx

FEATURES = {
    "sliding": ("score every validation token once, windows advancing by a stride", "sliding_stride > 0"),
    "eval_seq_len": ("evaluation windows of their own length instead of train_seq_len", "eval_seq_len > 0"),
}

HPARAMS = (
    HP("eval_seq_len", "EVAL_SEQ_LEN", "eval.seq_len", int, 0, feature="eval_seq_len",
       doc="window length of the final evaluations (0: train_seq_len)", minimum=0),
    HP("sliding_stride", "EVAL_STRIDE", "eval.sliding_stride", int, 0, feature="sliding",
       doc="sliding-window stride; each window scores its last stride tokens (0: off)", minimum=0),
    HP("eval_batch_seqs", "EVAL_BATCH_SEQS", "eval.batch_seqs", int, 32, feature="sliding",
       doc="windows per forward pass in the sliding evaluation", minimum=1),
)


def rank_share(items: list, rank: int, world_size: int) -> list:
    return items[len(items) * rank // world_size : len(items) * (rank + 1) // world_size]


def eval_windows(args, total: int) -> list[tuple[int, int, int]]:
    """[(start, first scored, end)]: scored spans tile [0, total) in order, end their windows and advance by stride."""
    if feature("eval_seq_len"):
        seq_len = args.eval_seq_len or args.train_seq_len
    else:
        seq_len = args.train_seq_len
    if feature("sliding"):
        stride = args.sliding_stride or seq_len
    else:
        stride = seq_len
    if not 0 < stride <= seq_len:
        raise ValueError(f"EVAL_STRIDE={stride} must be in 1..{seq_len} (the evaluation window length)")
    ends = list(range(min(seq_len, total), total, stride)) + [total]
    return [(0, 0, ends[0])] + [(end - seq_len, prev, end) for prev, end in zip(ends, ends[1:])]


def score_windows(model, wins: list, val_tokens, luts, device, sums: Tensor, batch: int) -> None:
    """Add (NLL sum, tokens, bytes) of the scored spans of `wins` to the float64 `sums`; leaves `model` in eval mode."""
    model.eval()
    for i in range(0, len(wins), batch):
        part = wins[i : i + batch]
        rows = torch.stack([val_tokens[s : e + 1] for s, _, e in part]).to(device=device, dtype=torch.int64)
        x, y = rows[:, :-1], rows[:, 1:]
        with torch.inference_mode(), autocast_ctx(device):
            logits = model(x).float()
            nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
            first = torch.tensor([a - s for s, a, _ in part], device=device)
            mask = torch.arange(y.size(1), device=device)[None, :] >= first[:, None]
            sums[0] += nll[mask].double().sum()
            sums[1] += mask.sum()
            sums[2] += count_bytes(x, y, luts)[mask].double().sum()


def eval_sliding(args, model, rank, world_size, device, val_tokens, luts) -> tuple[float, float]:
    """(val_loss, val_bpb) with every token scored once by a window ending just after it."""
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    score_windows(model, rank_share(eval_windows(args, val_tokens.numel() - 1), rank, world_size), val_tokens, luts,
                  device, sums, args.eval_batch_seqs)
    model.train()
    return finish_scores(sums)
