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

from packager.runtime.features import HP
from packager.runtime.system import all_reduce_, autocast_ctx

FEATURES: dict[str, str] = {}

HPARAMS = (
    HP(
        "val_batch_size",
        "VAL_BATCH_SIZE",
        "train.val_batch_size",
        int,
        524288,
        doc="validation tokens per forward pass, summed over ranks and accumulation steps",
        minimum=1,
    ),
)


def build_sentencepiece_luts(
    sp: spm.SentencePieceProcessor, vocab_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """(base_bytes int16, has_leading_space bool, is_boundary_token bool), indexed by id.

    Tables span max(tokenizer vocab, model vocab); ids the tokenizer lacks count as
    zero-byte boundary tokens.
    """
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, vocab_size)
    base_bytes = np.zeros((size,), dtype=np.int16)
    has_leading_space = np.zeros((size,), dtype=np.bool_)
    is_boundary = np.ones((size,), dtype=np.bool_)
    for tid in range(sp_vocab):
        if sp.is_control(tid) or sp.is_unknown(tid) or sp.is_unused(tid):
            continue
        is_boundary[tid] = False
        if sp.is_byte(tid):
            # <0xAB> stands for exactly one byte of the text.
            base_bytes[tid] = 1
            continue
        piece = sp.id_to_piece(tid)
        if piece.startswith("\u2581"):
            has_leading_space[tid] = True
            piece = piece[1:]
        base_bytes[tid] = len(piece.encode("utf-8"))
    return (
        torch.tensor(base_bytes, dtype=torch.int16, device=device),
        torch.tensor(has_leading_space, dtype=torch.bool, device=device),
        torch.tensor(is_boundary, dtype=torch.bool, device=device),
    )


def count_bytes(prev_ids: Tensor, tgt_ids: Tensor, luts: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Text bytes behind each target token (int16, same shape as tgt_ids)."""
    base_bytes, has_leading_space, is_boundary = luts
    nbytes = base_bytes[tgt_ids].to(dtype=torch.int16)
    nbytes += (has_leading_space[tgt_ids] & ~is_boundary[prev_ids]).to(dtype=torch.int16)
    return nbytes


def bits_per_byte(loss_nats_sum: float, token_count: float, byte_count: float) -> float:
    """Mean loss in bits per token times tokens per byte (the upstream order of operations)."""
    if token_count <= 0 or byte_count <= 0:
        raise ValueError(f"bits_per_byte needs positive counts, got tokens={token_count} bytes={byte_count}")
    mean_loss = loss_nats_sum / token_count
    return float(mean_loss / math.log(2.0) * (token_count / byte_count))


def eval_val(
    args,
    model: nn.Module,
    rank: int,
    world_size: int,
    device: torch.device,
    grad_accum_steps: int,
    val_tokens: Tensor,
    luts: tuple[Tensor, Tensor, Tensor],
) -> tuple[float, float]:
    """(val_loss in nats per token, val_bpb) over all of `val_tokens`.

    Each rank scores a contiguous slice of whole sequences; sums are float64 and
    all-reduced, so the result does not depend on the number of ranks beyond
    rounding. `model(x, y)` must return the mean cross-entropy.
    """
    seq_len = args.train_seq_len
    local_batch_tokens = args.val_batch_size // (world_size * grad_accum_steps)
    if local_batch_tokens < seq_len:
        raise ValueError(
            "VAL_BATCH_SIZE must provide at least one sequence per rank; "
            f"got VAL_BATCH_SIZE={args.val_batch_size}, WORLD_SIZE={world_size}, "
            f"GRAD_ACCUM_STEPS={grad_accum_steps}, TRAIN_SEQ_LEN={seq_len}"
        )
    local_batch_seqs = local_batch_tokens // seq_len
    total_seqs = (val_tokens.numel() - 1) // seq_len
    seq_start = (total_seqs * rank) // world_size
    seq_end = (total_seqs * (rank + 1)) // world_size
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    token_count = torch.zeros((), device=device, dtype=torch.float64)
    byte_count = torch.zeros((), device=device, dtype=torch.float64)

    model.eval()
    try:
        with torch.inference_mode():
            for batch_start in range(seq_start, seq_end, local_batch_seqs):
                batch_end = min(batch_start + local_batch_seqs, seq_end)
                raw = val_tokens[batch_start * seq_len : batch_end * seq_len + 1]
                local = raw.to(device=device, dtype=torch.int64, non_blocking=True)
                x = local[:-1].reshape(-1, seq_len)
                y = local[1:].reshape(-1, seq_len)
                with autocast_ctx(device):
                    batch_loss = model(x, y).detach()
                n = float(y.numel())
                loss_sum += batch_loss.to(torch.float64) * n
                token_count += n
                byte_count += count_bytes(x.reshape(-1), y.reshape(-1), luts).to(torch.float64).sum()
        all_reduce_(loss_sum)
        all_reduce_(token_count)
        all_reduce_(byte_count)
    finally:
        model.train()
    val_loss = (loss_sum / token_count).item()
    return float(val_loss), bits_per_byte(loss_sum.item(), token_count.item(), byte_count.item())
