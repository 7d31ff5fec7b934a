"""Per-document attention: a token attends only to earlier tokens of its own document.

Every document in the challenge's shards starts with a BOS token. A batch is cut into segments at
every row start, every BOS and every max_len tokens into a document (the #1530 lineage packs a
rank's whole span into one row, and a long document trains as chunks of TRAIN_SEQ_LEN); the
segment starts, padded to a multiple of 64 so that torch.compile sees few shapes, are the
`cu_seqlens` of FlashAttention's varlen kernels (the recipe's ATTENTION pin: fa3, fa2, auto = FA3,
else FA2). Where flash-attn cannot run (CPU, fp32) or ATTENTION=sdpa is pinned, the exact twin is
SDPA with the block-diagonal causal mask of the same segments; it materializes a T x T mask per row,
so on CUDA a recipe with per-document attention and a FlashAttention pin (or auto) needs flash-attn
and says so at start instead of falling back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.data import BOS_ID, DistributedTokenLoader
from packager.runtime.features import HP, feature

try:
    from flash_attn_interface import flash_attn_varlen_func as flash_attn_3_varlen_func
except ImportError:
    flash_attn_3_varlen_func = None
try:
    from flash_attn import flash_attn_varlen_func as flash_attn_2_varlen_func
except ImportError:
    flash_attn_2_varlen_func = None

FEATURES = {
    "doc_attention": ("attention stays inside documents (FlashAttention varlen over BOS-delimited segments)",
                      "doc_attention"),
}

HPARAMS = (
    HP("doc_attention", "DOC_ATTENTION", "model.doc_attention", bool, False, feature="doc_attention",
       doc="per-document attention: segments start at each BOS and every TRAIN_SEQ_LEN tokens of a document "
           "(always on in the #1530 lineage, which has no env var for it)"),
)

CU_SEQLENS_BUCKET = 64


def document_starts(x: Tensor, max_len: int) -> Tensor:
    """cu_seqlens (int32, on x's device) of x's (B, T) tokens flattened: segment starts, then the total."""
    ids = x.reshape(-1).cpu()
    n, row = ids.numel(), x.size(-1)
    pos = torch.arange(n)
    start = (ids == BOS_ID) | (pos % row == 0)
    doc_start = torch.cummax(torch.where(start, pos, 0), dim=0).values
    starts = torch.nonzero(start | ((pos - doc_start) % max_len == 0)).flatten()
    size = -(-(starts.numel() + 1) // CU_SEQLENS_BUCKET) * CU_SEQLENS_BUCKET
    cu = torch.full((size,), n, dtype=torch.int32)
    cu[: starts.numel()] = starts
    return cu.to(x.device)


def document_mask(cu_seqlens: Tensor, batch: int, seq_len: int) -> Tensor:
    """(B, 1, T, T) bool: query t may read key s iff s <= t and both lie in the same segment."""
    pos = torch.arange(batch * seq_len, device=cu_seqlens.device)
    seg = torch.searchsorted(cu_seqlens, pos.to(cu_seqlens.dtype), right=True).view(batch, seq_len)
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=seg.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def varlen_kernel(kernel: str):
    """The installed FlashAttention varlen function of the recipe's pin (fa3, fa2; auto: FA3, else FA2), or None."""
    return (flash_attn_3_varlen_func if kernel in ("fa3", "auto") else None) or (
        flash_attn_2_varlen_func if kernel in ("fa2", "auto") else None)


def document_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, max_len: int, kernel: str = "sdpa") -> Tensor:
    """Causal attention inside the segments of cu_seqlens (over the B*T tokens); (B, T, H, D) in and out.
    `kernel` is the recipe's pin: FlashAttention's varlen kernel for CUDA half-precision inputs, else the SDPA twin."""
    B, T, H, D = q.shape
    if feature("flash_attn"):
        varlen = varlen_kernel(kernel) if q.is_cuda and v.dtype in (torch.bfloat16, torch.float16) else None
        if varlen is not None:
            longest = min(T, max_len)  # segments never exceed max_len tokens (document_starts)
            out = varlen(q.reshape(B * T, H, D).to(v.dtype), k.reshape(B * T, -1, D).to(v.dtype),
                         v.reshape(B * T, -1, D), cu_seqlens, cu_seqlens, longest, longest, causal=True)
            return (out[0] if isinstance(out, tuple) else out).view(B, T, H, D)
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=document_mask(cu_seqlens, B, T),
        enable_gqa=k.size(2) != q.size(2),
    )
    return y.transpose(1, 2)


def check_document_attention(args, device: torch.device) -> str:
    """The kernel per-document attention will use. On CUDA a pinned fa3/fa2 without its varlen kernel is an
    error, and so is auto without flash-attn (the masked twin is T x T per row); an sdpa pin runs the twin."""
    if feature("flash_attn"):
        varlen = varlen_kernel(args.attention) if device.type == "cuda" else None
        if varlen is not None:
            return "fa3_varlen" if varlen is flash_attn_3_varlen_func else "fa2_varlen"
        if device.type == "cuda" and args.attention != "sdpa":
            wanted = {"fa3": "FlashAttention 3's", "fa2": "FlashAttention 2's"}.get(args.attention, "flash-attn's")
            raise RuntimeError(f"DOC_ATTENTION=1 with ATTENTION={args.attention} on CUDA needs {wanted} varlen kernel "
                               "(flash_attn_interface or flash_attn); install it, or set ATTENTION=sdpa (masked SDPA, "
                               "slow) or DOC_ATTENTION=0")
    return "sdpa_document_mask"


class DocumentTokenLoader(DistributedTokenLoader):
    """The rank's span as one row (1, N) with its document starts: the #1530 lineage's packing.
    max_len 0 gives the plain rows of DistributedTokenLoader and no starts."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device, max_len: int):
        super().__init__(pattern, rank, world_size, device)
        self.max_len = max_len

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor, Tensor]:
        if not self.max_len:  # DOC_ATTENTION=0: the plain rows, no document starts
            return (*super().next_batch(global_tokens, seq_len, grad_accum_steps), None)
        local = self.local_span(global_tokens, grad_accum_steps)
        x, y = local[None, :-1], local[None, 1:]
        cu_seqlens = document_starts(x, self.max_len)  # from the CPU copy: no device sync
        return tuple(t.to(self.device, non_blocking=True) for t in (x, y, cu_seqlens))
