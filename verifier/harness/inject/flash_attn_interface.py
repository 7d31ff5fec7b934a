"""Stand-in of FlashAttention 3's `flash_attn_interface` for golf-verify's CPU harness: exact attention
with PyTorch's scaled_dot_product_attention (same layout: q (B, T, H, D), k/v (B, S, Hkv, D); varlen
q (total, H, D) with cu_seqlens), causal masks aligned bottom-right as FlashAttention aligns them,
sliding windows and logit soft-capping. Numerics differ from the GPU kernel; the function does not."""

import math

import torch
import torch.nn.functional as F

__all__ = ["flash_attn_func", "flash_attn_varlen_func", "attention"]


def attention(q, k, v, causal=False, softmax_scale=None, window_size=(-1, -1), softcap=0.0):
    """(B, T, H, D) attention of q over k/v, grouped-query heads repeated."""
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    if kh.size(1) != qh.size(1):
        rep = qh.size(1) // kh.size(1)
        kh, vh = kh.repeat_interleave(rep, dim=1), vh.repeat_interleave(rep, dim=1)
    t_q, t_k = qh.size(-2), kh.size(-2)
    left, right = (window_size if window_size is not None else (-1, -1))
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    plain = left < 0 and right < 0 and (not causal or t_q == t_k) and not softcap
    if plain:
        out = F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, scale=scale)
        return out.transpose(1, 2)
    i = torch.arange(t_q, device=q.device)[:, None] + (t_k - t_q)
    j = torch.arange(t_k, device=q.device)[None, :]
    keep = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device)
    if causal:
        keep &= j <= i
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    if not softcap:
        return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=keep, scale=scale).transpose(1, 2)
    scores = (qh.float() @ kh.float().transpose(-1, -2)) * scale
    scores = softcap * torch.tanh(scores / softcap)
    probs = scores.masked_fill(~keep, float("-inf")).softmax(-1)
    return (probs @ vh.float()).to(q.dtype).transpose(1, 2)


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                    v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                    pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False, **kwargs):
    return attention(q, k, v, causal, softmax_scale, window_size, softcap)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None, max_seqlen_k=None,
                           softmax_scale=None, causal=False, *args, window_size=(-1, -1), softcap=0.0, **kwargs):
    out = torch.empty_like(q)
    bq, bk = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for (q0, q1), (k0, k1) in zip(zip(bq, bq[1:]), zip(bk, bk[1:])):
        if q1 > q0:
            out[q0:q1] = attention(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], causal, softmax_scale,
                                   window_size, softcap)[0]
    return out
