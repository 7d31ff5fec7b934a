"""Tokenizer-agnostic scoring: bytes per token from SentencePiece pieces, and validation.

val_bpb = val_loss / ln 2 * tokens / bytes, where the byte count is the UTF-8 length
of the text behind the target tokens. A piece's leading "▁" stands for one space
byte, except right after a boundary (control/unknown/unused) token such as BOS,
where the document starts and no space was in the text.
"""

from __future__ import annotations

import math

import numpy as np
import sentencepiece as spm
import torch
import torch.nn as nn
from torch import Tensor

from packager.runtime.docattn import document_starts
from packager.runtime.features import HP, feature
from packager.runtime.system import all_reduce_, autocast_ctx

FEATURES: dict[str, str] = {}

HPARAMS = (
    HP("val_batch_size", "VAL_BATCH_SIZE", "train.val_batch_size", int, 524288, minimum=1,
       doc="validation tokens per forward pass, summed over ranks and accumulation steps"),
)


def build_sentencepiece_luts(sp: spm.SentencePieceProcessor, vocab_size: int,
                             device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(base_bytes int16, has_leading_space bool, is_boundary_token bool), indexed by token id."""
    # Tables span max(tokenizer vocab, model vocab); ids the tokenizer lacks are zero-byte boundary tokens.
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base_bytes, has_space, is_boundary = np.zeros(size, np.int16), np.zeros(size, np.bool_), np.ones(size, np.bool_)
    for tid in range(sp_vocab):
        if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
            continue
        is_boundary[tid] = False
        if sp.is_byte(tid):  # <0xAB> stands for exactly one byte of the text
            base_bytes[tid] = 1
            continue
        piece = sp.id_to_piece(tid)
        has_space[tid] = piece.startswith("\u2581")
        base_bytes[tid] = len(piece.removeprefix("\u2581").encode("utf-8"))
    return tuple(torch.tensor(t, device=device) for t in (base_bytes, has_space, is_boundary))


def count_bytes(prev_ids: Tensor, tgt_ids: Tensor, luts: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Text bytes behind each target token (int16, same shape as tgt_ids)."""
    base_bytes, has_leading_space, is_boundary = luts[:3]
    return base_bytes[tgt_ids].to(torch.int16) + (has_leading_space[tgt_ids] & ~is_boundary[prev_ids]).to(torch.int16)


def target_bytes(prev_ids: Tensor, tgt_ids: Tensor, luts: tuple, first) -> Tensor:
    """Bytes behind each target (`first`: position of each row's first target, for a CaseOps sidecar)."""
    if feature("caseops"):
        if len(luts) > 3:
            pos = torch.as_tensor(first, device=tgt_ids.device).reshape(-1, *([1] * (tgt_ids.ndim - 1)))
            pos = (pos + torch.arange(tgt_ids.size(-1), device=tgt_ids.device)).clamp(max=luts[3].numel() - 1)
            return luts[3][pos].to(torch.int16)  # padding columns (clamped) are masked by the callers
    return count_bytes(prev_ids, tgt_ids, luts)


def bits_per_byte(loss_nats_sum: float, token_count: float, byte_count: float) -> float:
    """Mean loss in bits per token times tokens per byte (the upstream order of operations)."""
    if token_count <= 0 or byte_count <= 0:
        raise ValueError(f"bits_per_byte needs positive counts, got tokens={token_count} bytes={byte_count}")
    return float(loss_nats_sum / token_count / math.log(2.0) * (token_count / byte_count))


def finish_scores(sums: Tensor) -> tuple[float, float]:
    """(val_loss, val_bpb) from the float64 (NLL sum, tokens, bytes) of every rank."""
    all_reduce_(sums)
    loss, tokens, nbytes = sums.tolist()
    return loss / tokens, bits_per_byte(loss, tokens, nbytes)


def eval_val(args, model: nn.Module, rank: int, world_size: int, device: torch.device, grad_accum_steps: int,
             val_tokens: Tensor, luts: tuple[Tensor, Tensor, Tensor]) -> tuple[float, float]:
    """(val_loss in nats per token, val_bpb) over all of `val_tokens`; `model(x, y)` returns the mean cross-entropy."""
    # Each rank scores a contiguous slice of whole sequences; the float64 sums are all-reduced, so
    # the result does not depend on the number of ranks beyond rounding.
    seq_len = args.train_seq_len
    batch_seqs = args.val_batch_size // (world_size * grad_accum_steps) // seq_len
    if batch_seqs < 1:
        raise ValueError(f"VAL_BATCH_SIZE must provide at least one sequence per rank: {args.val_batch_size} // "
                         f"(WORLD_SIZE={world_size} * GRAD_ACCUM_STEPS={grad_accum_steps}) < TRAIN_SEQ_LEN={seq_len}")
    total_seqs = (val_tokens.numel() - 1) // seq_len
    seq_start, seq_end = total_seqs * rank // world_size, total_seqs * (rank + 1) // world_size
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(seq_start, seq_end, batch_seqs):
                raw = val_tokens[start * seq_len : min(start + batch_seqs, seq_end) * seq_len + 1]
                local = raw.to(device=device, dtype=torch.int64, non_blocking=True)
                x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
                docs = {}
                if feature("doc_attention"):
                    if args.doc_attention:  # scored as trained: attention inside documents
                        docs = {"cu_seqlens": document_starts(raw[:-1].view(-1, seq_len), seq_len).to(device)}
                with autocast_ctx(device):
                    batch_loss = model(x, y, **docs).detach()
                sums[0] += batch_loss.to(torch.float64) * y.numel()
                sums[1] += y.numel()
                sums[2] += target_bytes(x.reshape(-1), y.reshape(-1), luts, start * seq_len + 1).to(torch.float64).sum()
    finally:
        model.train()
    return finish_scores(sums)
