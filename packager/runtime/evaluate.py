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

from packager.runtime.bpb import finish_scores, target_bytes
from packager.runtime.docattn import document_starts
from packager.runtime.features import HP, feature
from packager.runtime.system import autocast_ctx

FEATURES = {
    "sliding": ("sliding-window scoring: windows advance by a stride, each scores its last tokens", "sliding_stride > 0"),
    "eval_seq_len": ("evaluation windows of their own length instead of train_seq_len", "eval_seq_len > 0"),
    "record_windows": ("the records' window list: the last tokens of the split are scored again",
                       "sliding_stride > 0 and eval_windows != 'tiled'"),
}

HPARAMS = (
    HP("eval_seq_len", "EVAL_SEQ_LEN", "eval.seq_len", int, 0, feature="eval_seq_len",
       doc="window length of the final evaluations (0: train_seq_len)", minimum=0, smoke=128),
    HP("sliding_stride", "EVAL_STRIDE", "eval.sliding_stride", int, 0, feature="sliding",
       doc="sliding-window stride; each window scores its last stride tokens (0: off)", minimum=0, smoke=64),
    HP("eval_batch_seqs", "EVAL_BATCH_SEQS", "eval.batch_seqs", int, 32, feature="sliding",
       doc="windows per forward pass in the sliding evaluation", minimum=1),
    HP("eval_windows", "EVAL_WINDOWS", "eval.windows", str, "tiled", feature="sliding",
       choices=("tiled", "records", "records_all"),
       doc="tiled: every token once; records: a window every stride while one stride remains, cut windows score "
           "their last stride again (seeds 001, 002); records_all: while a token remains (seeds 000, 002 v1)"),
    HP("eval_passes", "EVAL_PASSES", "eval.passes", str, "",
       doc='final evaluations, in the order roundtrip, sliding, ttt ("": each one the script has)'),
)


def rank_share(items: list, rank: int, world_size: int) -> list:
    return items[len(items) * rank // world_size : len(items) * (rank + 1) // world_size]


def eval_window(args) -> tuple[int, int]:
    """(window length, stride) of the final evaluations; ValueError naming EVAL_STRIDE when they cannot work."""
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
    return seq_len, stride


def eval_windows(args, total: int) -> list[tuple[int, int, int]]:
    """[(start, first scored, end)]: scored spans tile [0, total) in order, end their windows and advance by stride."""
    seq_len, stride = eval_window(args)
    if feature("record_windows"):
        if args.eval_windows != "tiled":  # as the records wrote it: the spans of cut windows overlap
            least = stride if args.eval_windows == "records" else 1
            ends = [(s, min(s + seq_len, total)) for s in range(0, total, stride)]
            return [(s, s if s == 0 else max(e - stride, s), e) for s, e in ends if e - s >= least or s == 0]
    ends = list(range(min(seq_len, total), total, stride)) + [total]
    return [(0, 0, ends[0])] + [(end - seq_len, prev, end) for prev, end in zip(ends, ends[1:])]


def score_windows(model, wins: list, val_tokens, luts, device, sums: Tensor, batch: int, width: int,
                  doc_len: int = 0) -> None:
    """Add (NLL sum, tokens, bytes) of the scored spans of `wins` to the float64 `sums`; leaves `model` in eval mode.

    Rows are `width` tokens (shorter windows padded after their end, as the records do: causal attention keeps
    the padding out of the scored positions, and RoPE sees the same sequence length). doc_len > 0: per-document
    attention with documents cut every doc_len tokens."""
    model.eval()
    for i in range(0, len(wins), batch):
        part = wins[i : i + batch]
        rows = torch.zeros(len(part), width + 1, dtype=torch.int64)
        for j, (s, _, e) in enumerate(part):
            rows[j, : e - s + 1] = val_tokens[s : e + 1]
        rows = rows.to(device)
        x, y = rows[:, :-1], rows[:, 1:]
        docs = {}
        if feature("doc_attention"):
            if doc_len:  # per-document attention: a window never reads across a BOS
                docs = {"cu_seqlens": document_starts(x, doc_len)}
        with torch.inference_mode(), autocast_ctx(device):
            logits = model(x, **docs).float()
            nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
            cols = torch.arange(y.size(1), device=device)[None, :]
            mask = (cols >= torch.tensor([a - s for s, a, _ in part], device=device)[:, None]) & (
                cols < torch.tensor([e - s for s, _, e in part], device=device)[:, None])
            sums[0] += nll[mask].double().sum()
            sums[1] += mask.sum()
            sums[2] += target_bytes(x, y, luts, [s + 1 for s, _, _ in part])[mask].double().sum()


def eval_sliding(args, model, rank, world_size, device, val_tokens, luts) -> tuple[float, float]:
    """(val_loss, val_bpb) with every token scored once by a window ending just after it."""
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    doc_len = 0
    if feature("doc_attention"):
        doc_len = args.train_seq_len if args.doc_attention else 0
    score_windows(model, rank_share(eval_windows(args, val_tokens.numel() - 1), rank, world_size), val_tokens, luts,
                  device, sums, args.eval_batch_seqs, eval_window(args)[0], doc_len)
    model.train()
    return finish_scores(sums)
