"""The GPT of the public baseline: U-Net skips, GQA attention with QK-norm and RoPE, relu^2 MLP.

Parameter names, shapes, registration order and init match the upstream root train_gpt.py, so
state_dicts (and therefore serialized artifacts) line up key for key. Attention tensors use the
(batch, seq, heads, head_dim) layout of FlashAttention throughout.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.features import HP

try:
    from flash_attn_interface import flash_attn_func as flash_attn_3_func
except ImportError:
    flash_attn_3_func = None
try:
    from flash_attn import flash_attn_func as flash_attn_2_func
except ImportError:
    flash_attn_2_func = None

FEATURES: dict[str, tuple[str, str]] = {}

HPARAMS = (
    HP("num_layers", "NUM_LAYERS", "model.num_layers", int, 9, doc="transformer blocks", minimum=1),
    HP("model_dim", "MODEL_DIM", "model.model_dim", int, 512, doc="residual width", minimum=2),
    HP("num_heads", "NUM_HEADS", "model.num_heads", int, 8, doc="query heads", minimum=1),
    HP("num_kv_heads", "NUM_KV_HEADS", "model.num_kv_heads", int, 4, doc="key/value heads (GQA)", minimum=1),
    HP("mlp_mult", "MLP_MULT", "model.mlp_mult", int, 2, doc="MLP hidden width = mlp_mult * model_dim", minimum=1),
    HP("activation", "ACTIVATION", "model.activation", str, "relu2", doc="MLP activation", choices=("relu2",)),
    HP("tie_embeddings", "TIE_EMBEDDINGS", "model.tie_embeddings", bool, True, doc="output head reuses tok_emb"),
    HP("tied_embed_init_std", "TIED_EMBED_INIT_STD", "model.tied_embed_init_std", float, 0.005,
       doc="std of the normal init of a tied embedding", minimum=0.0),
    HP("logit_softcap", "LOGIT_SOFTCAP", "model.logit_softcap", float, 30.0,
       doc="logits = cap * tanh(logits / cap)"),
    HP("rope_base", "ROPE_BASE", "model.rope_base", float, 10000.0, doc="RoPE frequency base"),
    HP("qk_gain_init", "QK_GAIN_INIT", "model.qk_gain_init", float, 1.5, doc="initial per-head query gain"),
)

# Small gains and mixes: kept in fp32, trained by Adam, never int8-quantized.
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights",
)


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True) -> Tensor:
    """Softmax attention on (B, T, H, D) tensors; k and v may have fewer heads (GQA).

    FlashAttention 3, else 2, on CUDA half-precision inputs (bf16 autocast); torch SDPA
    otherwise (CPU, fp32 on CUDA). Returns (B, T, H, D).
    """
    if q.is_cuda and v.dtype in (torch.bfloat16, torch.float16):
        fa = flash_attn_3_func if flash_attn_3_func is not None else flash_attn_2_func
        if fa is not None:
            out = fa(q.to(v.dtype), k.to(v.dtype), v, causal=causal)
            # Older FA3 builds return (out, softmax_lse).
            return out[0] if isinstance(out, tuple) else out
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=causal, enable_gqa=k.size(2) != q.size(2),
    )
    return y.transpose(1, 2)


def attention_backend_name() -> str:
    """The kernel `attention` uses for bf16 CUDA inputs here: "fa3", "fa2" or "sdpa"."""
    if torch.cuda.is_available() and flash_attn_3_func is not None:
        return "fa3"
    if torch.cuda.is_available() and flash_attn_2_func is not None:
        return "fa2"
    return "sdpa"


class RMSNorm(nn.Module):
    """Weightless RMS normalisation over the last dimension."""

    def __init__(self, eps: float | None = None):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.size(-1),), eps=self.eps)


class CastedLinear(nn.Linear):
    """Linear whose weight stays fp32 (for the optimizer) and is cast to the input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def restore_low_dim_params_to_fp32(module: nn.Module) -> None:
    """After model.bfloat16(): vectors, scalars and control tensors go back to fp32."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            low_dim = p.ndim < 2 or any(s in name for s in CONTROL_TENSOR_NAME_PATTERNS)
            if low_dim and p.dtype != torch.float32:
                p.data = p.data.float()


class Rotary(nn.Module):
    """RoPE tables for (B, T, H, D) tensors: cos/sin of shape (1, T, 1, D/2)."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # Recomputed per call (cheap, fused under compile): a cache would hold inference tensors
        # after an inference_mode eval and break a later training step (TTT). Positions take
        # inv_freq's dtype as upstream does, so after model.bfloat16() they are bf16-rounded.
        pos = torch.arange(seq_len, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(pos, self.inv_freq.to(device))[None, :, None, :]
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of the last dimension (non-interleaved RoPE)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, args):
        super().__init__()
        dim, heads, kv_heads = args.model_dim, args.num_heads, args.num_kv_heads
        if dim % heads:
            raise ValueError(f"model_dim={dim} must be divisible by num_heads={heads}")
        if heads % kv_heads:
            raise ValueError(f"num_heads={heads} must be divisible by num_kv_heads={kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, dim // heads
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} (model_dim/num_heads) must be even for RoPE")
        kv_dim = kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((heads,), args.qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, base=args.rope_base)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q = F.rms_norm(self.c_q(x).view(B, T, self.num_heads, self.head_dim), (self.head_dim,))
        k = F.rms_norm(self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim), (self.head_dim,))
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary(T, x.device, q.dtype)
        q = apply_rotary_emb(q, cos, sin) * self.q_gain.to(q.dtype)[None, None, :, None]
        k = apply_rotary_emb(k, cos, sin)
        return self.proj(attention(q, k, v, causal=True).reshape(B, T, C))


def mlp_activation(name: str, h: Tensor) -> Tensor:
    """The MLP nonlinearity; add a branch here (and to the HP choices) for a new one."""
    if name == "relu2":
        return torch.relu(h).square()
    raise ValueError(f"unknown activation {name!r}")


class MLP(nn.Module):
    def __init__(self, args):
        super().__init__()
        hidden = args.mlp_mult * args.model_dim
        self.activation = args.activation
        self.fc = CastedLinear(args.model_dim, hidden, bias=False)
        self.proj = CastedLinear(hidden, args.model_dim, bias=False)
        self.proj._zero_init = True

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(mlp_activation(self.activation, self.fc(x)))


class Block(nn.Module):
    """Pre-norm block; the input is first mixed with the embedding x0 (learned per channel).
    `layer` (0-based) is for per-layer variants."""

    def __init__(self, args, layer: int = 0):
        super().__init__()
        dim = args.model_dim
        self.attn_norm = RMSNorm()
        self.mlp_norm = RMSNorm()
        self.attn = CausalSelfAttention(args)
        self.mlp = MLP(args)
        self.attn_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))).float())

    def forward(self, x: Tensor, x0: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.attn_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """forward(input_ids, target_ids=None, reduction="mean"):
    targets + "mean": scalar fp32 mean cross-entropy; targets + "none": per-token NLL (B, T);
    no targets: fp32 soft-capped logits (B, T, vocab)."""

    def __init__(self, args):
        super().__init__()
        if args.logit_softcap <= 0.0:
            raise ValueError(f"logit_softcap must be positive, got {args.logit_softcap}")
        mlp_activation(args.activation, torch.zeros(1))  # unknown names fail here, not mid-run
        self.tie_embeddings = args.tie_embeddings
        self.logit_softcap = args.logit_softcap
        self.tok_emb = nn.Embedding(args.vocab_size, args.model_dim)
        self.num_encoder_layers = args.num_layers // 2
        self.num_decoder_layers = args.num_layers - self.num_encoder_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, args.model_dim, dtype=torch.float32))
        self.blocks = nn.ModuleList([Block(args, i) for i in range(args.num_layers)])
        self.final_norm = RMSNorm()
        self.lm_head = None if args.tie_embeddings else CastedLinear(args.model_dim, args.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        else:  # an untied embedding keeps nn.Embedding's N(0, 1) init
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=args.tied_embed_init_std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and getattr(m, "_zero_init", False):
                nn.init.zeros_(m.weight)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """Final-normed hidden states (B, T, model_dim)."""
        x = F.rms_norm(self.tok_emb(input_ids), (self.tok_emb.embedding_dim,))
        x0, skips = x, []
        # Encoder half stores its outputs; the decoder half adds them back in reverse order.
        for block in self.blocks[: self.num_encoder_layers]:
            x = block(x, x0)
            skips.append(x)
        for i, block in enumerate(self.blocks[self.num_encoder_layers:]):
            if skips:
                x = x + self.skip_weights[i].to(x.dtype) * skips.pop()
            x = block(x, x0)
        return self.final_norm(x)

    def logits_from_hidden(self, h: Tensor) -> Tensor:
        """Soft-capped logits in the compute dtype (bf16 under autocast)."""
        raw = F.linear(h, self.tok_emb.weight) if self.lm_head is None else self.lm_head(h)
        return self.logit_softcap * torch.tanh(raw / self.logit_softcap)

    def forward(self, input_ids: Tensor, target_ids: Tensor | None = None, reduction: str = "mean") -> Tensor:
        h = self.hidden(input_ids)
        logits = self.logits_from_hidden(h.reshape(-1, h.size(-1))).float()
        if target_ids is None:
            return logits.view(*input_ids.shape, -1)
        loss = F.cross_entropy(logits, target_ids.reshape(-1), reduction=reduction)
        return loss.view(target_ids.shape) if reduction == "none" else loss
