"""The GPT of the public baseline: U-Net skips, GQA attention with QK-norm and RoPE, relu^2 MLP.

Parameter names, shapes, registration order and init match the upstream root train_gpt.py, so
state_dicts (and therefore serialized artifacts) line up key for key. Attention tensors use the
(batch, seq, heads, head_dim) layout of FlashAttention throughout.

Architecture techniques of the later records sit behind feature gates, off by default: LeakyReLU^2
and SwiGLU MLPs, XSA, partial RoPE, LN scale, SmearGate, BigramHash, a shared value embedding,
no U-Net skips, orthogonal init. Their parameter names follow the records that introduced them
(smear.gate, bigram.embed/proj/scale, ve_shared.embed/proj/scale, ve_layer_scales.N, mlp.gate/up).
The April records' blocks (frontier.py, docattn.py, kernels.py) hook in here through small gates.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.docattn import document_attention
from packager.runtime.features import HP, feature
from packager.runtime.frontier import (
    final_lane, gate_heads, gate_skip, init_head_gate, init_parallel_lanes, init_smear_v2, loop_schedule,
    parallel_block, rope_frequencies, smear_previous,
)
from packager.runtime.kernels import FusedLeakyReLU2MLP, SoftcappedCrossEntropy
from packager.runtime.qat import fake_quantize_ste

try:
    from flash_attn_interface import flash_attn_func as flash_attn_3_func
except ImportError:
    flash_attn_3_func = None
try:
    from flash_attn import flash_attn_func as flash_attn_2_func
except ImportError:
    flash_attn_2_func = None

FEATURES: dict[str, tuple[str, str]] = {
    "leaky_relu2": ("MLP activation LeakyReLU(0.5)^2", "activation == 'leaky_relu2'"),
    "swiglu": ("gated MLP silu(gate) * up at 2/3 of the width", "activation == 'swiglu'"),
    "xsa": ("exclusive self-attention on the last xsa_last_n blocks", "xsa_last_n > 0"),
    "partial_rope": ("RoPE on the first rope_dims dims of each head only", "rope_dims > 0"),
    "ln_scale": ("normed block inputs scaled by 1/sqrt(layer+1)", "ln_scale"),
    "smear_gate": ("learned per-dim mix of each token's embedding with the previous one's", "smear_gate"),
    "bigram_hash": ("hashed (previous, current) token-pair embedding added to the input", "bigram_buckets > 0"),
    "value_embed": ("shared value embedding added to the values of ve_layers", "ve_layers != ''"),
    "no_unet": ("a plain stack without the U-Net skip connections", "not unet_skips"),
    "ortho_init": ("orthogonal init of the matrices", "ortho_init"),
    "flash_attn": ("FlashAttention 3 or 2 for bf16 attention on CUDA", "attention != 'sdpa'"),
}

HPARAMS = (
    HP("num_layers", "NUM_LAYERS", "model.num_layers", int, 9, doc="transformer blocks", minimum=1),
    HP("model_dim", "MODEL_DIM", "model.model_dim", int, 512, doc="residual width", minimum=2),
    HP("num_heads", "NUM_HEADS", "model.num_heads", int, 8, doc="query heads", minimum=1),
    HP("num_kv_heads", "NUM_KV_HEADS", "model.num_kv_heads", int, 4, doc="key/value heads (GQA)", minimum=1),
    HP("mlp_mult", "MLP_MULT", "model.mlp_mult", int, 2, doc="MLP hidden width = mlp_mult * model_dim", minimum=1),
    HP("activation", "ACTIVATION", "model.activation", str, "relu2", doc="MLP activation",
       choices=("relu2", "leaky_relu2", "swiglu")),
    HP("tie_embeddings", "TIE_EMBEDDINGS", "model.tie_embeddings", bool, True, doc="output head reuses tok_emb"),
    HP("tied_embed_init_std", "TIED_EMBED_INIT_STD", "model.tied_embed_init_std", float, 0.005,
       doc="std of the normal init of a tied embedding", minimum=0.0),
    HP("logit_softcap", "LOGIT_SOFTCAP", "model.logit_softcap", float, 30.0,
       doc="logits = cap * tanh(logits / cap)"),
    HP("rope_base", "ROPE_BASE", "model.rope_base", float, 10000.0, doc="RoPE frequency base"),
    HP("qk_gain_init", "QK_GAIN_INIT", "model.qk_gain_init", float, 1.5, doc="initial per-head query gain"),
    HP("attention", "ATTENTION", "model.attention", str, "auto", choices=("auto", "sdpa", "fa3", "fa2"),
       doc="attention kernel for bf16 on CUDA: a pinned fa3/fa2 that is missing is an error; auto: FA3 > FA2 > SDPA"),
    HP("xsa_last_n", "XSA_LAST_N", "model.xsa_last_n", int, 0, feature="xsa",
       doc="exclusive self-attention on the last N blocks (0: none)", minimum=0, smoke=1),
    HP("rope_dims", "ROPE_DIMS", "model.rope_dims", int, 0, feature="partial_rope",
       doc="head dims RoPE rotates (0: all); even, at most head_dim", minimum=0, smoke=8),
    HP("ln_scale", "LN_SCALE", "model.ln_scale", bool, False, feature="ln_scale",
       doc="scale the normed block inputs by 1/sqrt(layer+1)"),
    HP("smear_gate", "SMEAR_GATE", "model.smear_gate", bool, False, feature="smear_gate",
       doc="SmearGate: mix each token's embedding with the previous token's"),
    HP("bigram_buckets", "BIGRAM_VOCAB_SIZE", "model.bigram_buckets", int, 0, feature="bigram_hash",
       doc="BigramHash table rows, the last reserved for position 0 (0: off)", minimum=0, smoke=512),
    HP("bigram_dim", "BIGRAM_DIM", "model.bigram_dim", int, 128, feature="bigram_hash",
       doc="BigramHash embedding width, projected to model_dim", minimum=1, smoke=32),
    HP("ve_dim", "VE_DIM", "model.ve_dim", int, 128, feature="value_embed",
       doc="shared value-embedding width, projected to the KV width", minimum=1, smoke=32),
    HP("ve_layers", "VE_LAYERS", "model.ve_layers", str, "", feature="value_embed",
       doc='comma-separated blocks whose values get the shared value embedding, e.g. "9,10" ("": off)', smoke='1'),
    HP("unet_skips", "UNET_SKIPS", "model.unet_skips", bool, True, feature="no_unet",
       doc="U-Net skips from the first half of the blocks to the second"),
    HP("ortho_init", "ORTHO_INIT", "model.ortho_init", bool, False, feature="ortho_init",
       doc="orthogonal init of the matrices of at least 64x64"),
)

# Small gains and mixes: kept in fp32, trained by Adam, never int8-quantized.
CONTROL_TENSOR_NAME_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes",
    "q_gain", "skip_weight", "skip_weights", "smear", "ve_layer_scales", "ve_shared.scale",
    "skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "attn_gate",
)


def attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = True, kernel: str = "sdpa") -> Tensor:
    """Softmax attention on (B, T, H, D) tensors; k and v may have fewer heads (GQA).

    `kernel` (the recipe's `attention`) picks FlashAttention for CUDA half-precision inputs (bf16
    autocast); everything else (CPU, fp32) runs torch SDPA. Returns (B, T, H, D).
    """
    if feature("flash_attn"):
        fa = flash_kernel(kernel) if q.is_cuda and v.dtype in (torch.bfloat16, torch.float16) else None
        if fa is not None:
            out = fa(q.to(v.dtype), k.to(v.dtype), v, causal=causal)
            return out[0] if isinstance(out, tuple) else out  # older FA3 builds return (out, softmax_lse)
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        is_causal=causal, enable_gqa=k.size(2) != q.size(2),
    )
    return y.transpose(1, 2)


def flash_kernel(kernel: str):
    """The installed FlashAttention function of a pin (fa3, fa2; auto: FA3, else FA2), or None."""
    return (flash_attn_3_func if kernel in ("fa3", "auto") else None) or (
        flash_attn_2_func if kernel in ("fa2", "auto") else None)


def attention_kernel(args, device: torch.device) -> str:
    """The kernel `attention` runs for bf16 inputs on `device`: "fa3", "fa2" or "sdpa". CPU has no
    FlashAttention; on CUDA a pinned kernel that is not installed is an error, never a fallback."""
    if feature("flash_attn"):
        fa = flash_kernel(args.attention) if device.type == "cuda" else None
        if fa is None and device.type == "cuda" and args.attention in ("fa3", "fa2"):
            raise RuntimeError(f"ATTENTION={args.attention} is pinned by the recipe, but FlashAttention "
                               f"{args.attention[-1]} is not installed; install it, or run ATTENTION=sdpa knowing "
                               "the step time will differ")
        return "sdpa" if fa is None else "fa3" if fa is flash_attn_3_func else "fa2"
    else:
        if args.attention != "sdpa":
            raise ValueError(f"ATTENTION={args.attention}: this script has no FlashAttention (its recipe pins sdpa)")
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
    if feature("qat"):
        qat_bits, qat_floor = 0, None  # set by configure_qat: training forwards fake-quantize while qat_gate is on

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if feature("qat"):
            if self.qat_bits and self.training:  # quantized from the fp32 weight, as the export sees it, then cast
                w = fake_quantize_ste(w, self.qat_bits, self.qat_gate, self.qat_floor)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, w.to(x.dtype), bias)


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
        if feature("rope_train_len"):
            # Set by CausalSelfAttention from the recipe (ROPE_TRAIN_SEQ_LEN, ROPE_YARN, ROPE_FP32_POSITIONS).
            self.base, self.train_seq_len, self.yarn, self.fp32_positions = base, 0, False, True

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        # Recomputed per call (cheap, fused under compile): a cache would hold inference tensors
        # after an inference_mode eval and break a later training step (TTT). Positions take
        # inv_freq's dtype as upstream does, so after model.bfloat16() they are bf16-rounded.
        inv_freq = self.inv_freq.to(device)
        if feature("rope_train_len"):
            if self.train_seq_len:  # the records' tables: YaRN/NTK past train_seq_len, fp32 positions
                inv_freq = rope_frequencies(self, seq_len, inv_freq)
        pos = torch.arange(seq_len, device=device, dtype=inv_freq.dtype)
        freqs = torch.outer(pos, inv_freq)[None, :, None, :]
        return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of the last dimension (non-interleaved RoPE)."""
    if feature("partial_rope"):
        rd = 2 * cos.size(-1)
        if rd < x.size(-1):  # partial RoPE: dims past the table's width carry no position
            return torch.cat((apply_rotary_emb(x[..., :rd], cos, sin), x[..., rd:]), dim=-1)
    a, b = x.chunk(2, dim=-1)
    return torch.cat((a * cos + b * sin, b * cos - a * sin), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, args):
        super().__init__()
        dim, heads, kv_heads = args.model_dim, args.num_heads, args.num_kv_heads
        if dim % heads:
            raise ValueError(f"MODEL_DIM={dim} must be divisible by NUM_HEADS={heads}")
        if heads % kv_heads:
            raise ValueError(f"NUM_HEADS={heads} must be divisible by NUM_KV_HEADS={kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = heads, kv_heads, dim // heads
        if self.head_dim % 2:
            raise ValueError(f"MODEL_DIM / NUM_HEADS = {self.head_dim} (the head dimension) must be even for RoPE")
        kv_dim = kv_heads * self.head_dim
        self.c_q = CastedLinear(dim, dim, bias=False)
        self.c_k = CastedLinear(dim, kv_dim, bias=False)
        self.c_v = CastedLinear(dim, kv_dim, bias=False)
        self.proj = CastedLinear(dim, dim, bias=False)
        self.proj._zero_init = True
        self.q_gain = nn.Parameter(torch.full((heads,), args.qk_gain_init, dtype=torch.float32))
        self.rotary = Rotary(self.head_dim, base=args.rope_base)
        if feature("partial_rope"):
            if args.rope_dims:  # frequencies as for a head rope_dims wide; apply_rotary_emb rotates that many
                if args.rope_dims % 2 or args.rope_dims > self.head_dim:
                    raise ValueError(f"ROPE_DIMS={args.rope_dims} must be even and at most the head dimension "
                                     f"{self.head_dim}")
                self.rotary = Rotary(args.rope_dims, base=args.rope_base)
        if feature("rope_train_len"):
            self.rotary.train_seq_len, self.rotary.yarn = args.rope_train_seq_len, args.rope_yarn
            self.rotary.fp32_positions = args.rope_fp32_positions
        self.kernel = args.attention  # the recipe's pin (FlashAttention 3 or 2, SDPA, auto)
        if feature("xsa"):
            self.use_xsa = False  # Block turns it on for the last xsa_last_n layers
        if feature("head_gates"):
            init_head_gate(self, args)
        if feature("doc_attention"):
            self.max_doc_len = args.train_seq_len  # document_starts cuts documents into chunks this long

    def forward(self, x: Tensor, ve: Tensor | None = None, cu_seqlens: Tensor | None = None) -> Tensor:
        B, T, C = x.shape
        q_raw = self.c_q(x)
        q = F.rms_norm(q_raw.view(B, T, self.num_heads, self.head_dim), (self.head_dim,))
        k = F.rms_norm(self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim), (self.head_dim,))
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim)
        if feature("value_embed"):
            if ve is not None:
                v = v + ve.view_as(v)
        cos, sin = self.rotary(T, x.device, q.dtype)
        q = apply_rotary_emb(q, cos, sin) * self.q_gain.to(q.dtype)[None, None, :, None]
        k = apply_rotary_emb(k, cos, sin)
        if feature("doc_attention"):
            if cu_seqlens is not None:  # per-document attention: never across a BOS
                y = document_attention(q, k, v, cu_seqlens, self.max_doc_len, self.kernel)
            else:
                y = attention(q, k, v, kernel=self.kernel)
        else:
            y = attention(q, k, v, kernel=self.kernel)
        if feature("xsa"):
            if self.use_xsa:  # XSA: drop each head's component along its token's own unit value vector
                y = y.reshape(B, T, self.num_kv_heads, -1, self.head_dim)
                u = F.normalize(v, dim=-1).unsqueeze(3)  # GQA: a kv head's query heads share it
                y = (y - (y * u).sum(-1, keepdim=True) * u).reshape(B, T, self.num_heads, self.head_dim)
        if feature("head_gates"):
            y = gate_heads(self, x, q_raw, y)
        return self.proj(y.reshape(B, T, C))


def mlp_activation(name: str, h: Tensor) -> Tensor:
    """The MLP nonlinearity; add a branch here (and to the HP choices) for a new one."""
    if name == "relu2":
        return torch.relu(h).square()
    if feature("leaky_relu2"):
        if name == "leaky_relu2":  # negative inputs keep a (squared) signal and a gradient
            return F.leaky_relu(h, negative_slope=0.5).square()
    if feature("swiglu"):
        if name == "swiglu":  # the gate's nonlinearity; MLP multiplies it by the up projection
            return F.silu(h)
    raise ValueError(f"ACTIVATION={name!r} is not built into this script")


class MLP(nn.Module):
    def __init__(self, args):
        super().__init__()
        hidden = args.mlp_mult * args.model_dim
        self.activation = args.activation
        if feature("swiglu"):
            if args.activation == "swiglu":  # 3 matrices at 2/3 width (rounded up to 64): about the same size
                hidden = (2 * hidden // 3 + 63) // 64 * 64
                self.gate, self.up = (CastedLinear(args.model_dim, hidden, bias=False) for _ in range(2))
            else:
                self.fc = CastedLinear(args.model_dim, hidden, bias=False)
        else:
            self.fc = CastedLinear(args.model_dim, hidden, bias=False)
        self.proj = CastedLinear(hidden, args.model_dim, bias=False)
        self.proj._zero_init = True
        if feature("fused_mlp"):
            self.fused = args.fused_mlp and args.activation == "leaky_relu2"

    def forward(self, x: Tensor) -> Tensor:
        if feature("fused_mlp"):
            if self.fused and self.training:  # one kernel for matmul + activation; eval keeps the plain path
                return FusedLeakyReLU2MLP.apply(x, self.fc.weight.to(x.dtype), self.proj.weight.to(x.dtype))
        if feature("swiglu"):
            if self.activation == "swiglu":
                return self.proj(mlp_activation(self.activation, self.gate(x)) * self.up(x))
        return self.proj(mlp_activation(self.activation, self.fc(x)))


def bigram_hash(ids: Tensor, buckets: int) -> Tensor:
    """Bucket of each (previous, current) token pair; position 0 (no previous) gets the last one."""
    t = ids.to(torch.int32)
    pair = torch.bitwise_xor(36313 * t[..., 1:], 27191 * t[..., :-1]) % (buckets - 1)
    return torch.cat((torch.full_like(t[..., :1], buckets - 1), pair), dim=-1).long()


class ScaledEmbedding(nn.Module):
    """BigramHash / value embedding: N(0, std) table, zero-init projection to out_dim, learned scale."""

    def __init__(self, rows: int, dim: int, out_dim: int, std: float, scale: float):
        super().__init__()
        self.embed = nn.Embedding(rows, dim)
        if std > 0:  # zeros_ draws nothing: a zero table leaves the init RNG stream as the records do
            nn.init.normal_(self.embed.weight, std=std)
        else:
            nn.init.zeros_(self.embed.weight)
        self.proj = CastedLinear(dim, out_dim, bias=False) if dim != out_dim else None
        if self.proj is not None:  # zero, but not flagged _zero_init: OrthoInit redoes it, as the records
            nn.init.zeros_(self.proj.weight)
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float32))

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(ids) if self.proj is None else self.proj(self.embed(ids))
        return h * self.scale.to(h.dtype)


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
        if feature("ln_scale"):
            self.ln_scale = (layer + 1) ** -0.5 if args.ln_scale else 1.0  # damps deeper blocks' normed inputs
        if feature("xsa"):
            self.attn.use_xsa = layer >= args.num_layers - args.xsa_last_n

    def normed(self, norm: RMSNorm, x: Tensor) -> Tensor:
        """A branch's input: normed (and, with LN scale, damped by depth)."""
        if feature("ln_scale"):
            return norm(x) * self.ln_scale
        else:
            return norm(x)

    def forward(self, x: Tensor, x0: Tensor, ve: Tensor | None = None, cu_seqlens: Tensor | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(self.normed(self.attn_norm, x), ve, cu_seqlens)
        return x + self.mlp_scale.to(x.dtype) * self.mlp(self.normed(self.mlp_norm, x))


class GPT(nn.Module):
    """forward(input_ids, target_ids=None, reduction="mean"):
    targets + "mean": scalar fp32 mean cross-entropy; targets + "none": per-token NLL (B, T);
    no targets: fp32 soft-capped logits (B, T, vocab)."""

    def __init__(self, args):
        super().__init__()
        if args.logit_softcap <= 0.0:
            raise ValueError(f"LOGIT_SOFTCAP={args.logit_softcap} must be positive")
        mlp_activation(args.activation, torch.zeros(1))  # unknown names fail here, not mid-run
        self.tie_embeddings = args.tie_embeddings
        self.logit_softcap = args.logit_softcap
        self.tok_emb = nn.Embedding(args.vocab_size, args.model_dim)
        if feature("bigram_hash"):
            rows = args.bigram_buckets  # the last row is position 0's, which has no previous token
            self.bigram = ScaledEmbedding(rows, args.bigram_dim, args.model_dim, 0.0, 0.05) if rows > 0 else None
        if feature("smear_gate"):
            gate = nn.Parameter(torch.zeros(args.model_dim))  # SmearGate: sigmoid(0), an even mix at init
            self.smear = nn.ParameterDict({"gate": gate}) if args.smear_gate else None
        if feature("smear_gate_v2"):
            init_smear_v2(self, args)
        if feature("fused_ce"):
            self.fused_ce = args.fused_ce
        self.num_encoder_layers = args.num_layers // 2
        self.num_decoder_layers = args.num_layers - self.num_encoder_layers
        if feature("no_unet"):
            if not args.unet_skips:  # every block runs in the decoder loop, which then finds no skips
                self.num_encoder_layers, self.num_decoder_layers = 0, args.num_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        if feature("depth_recurrence"):
            self.looping_active = False  # switched on by training at ENABLE_LOOPING_AT
            self.loop_order = loop_schedule(args) if args.num_loops > 0 else None
            if self.loop_order:  # skips sized for the longer, looped schedule (as the records)
                num_skips = min(len(self.loop_order[0]), len(self.loop_order[1]))
        self.skip_weights = nn.Parameter(torch.ones(num_skips, args.model_dim, dtype=torch.float32))
        if feature("skip_gates"):
            self.skip_gates = nn.Parameter(torch.zeros(num_skips, args.model_dim)) if args.skip_gates else None
        if feature("parallel_residuals"):
            init_parallel_lanes(self, args)
        if feature("no_unet"):
            self.skip_weights.requires_grad_(num_skips > 0)  # empty without skips: nothing to train
        self.blocks = nn.ModuleList([Block(args, i) for i in range(args.num_layers)])
        if feature("value_embed"):
            self.ve_layers = [int(i) for i in args.ve_layers.split(",") if i.strip()]
            if len(set(self.ve_layers)) < len(self.ve_layers) or not set(self.ve_layers) <= set(range(args.num_layers)):
                raise ValueError(f"VE_LAYERS={args.ve_layers!r} must name distinct blocks of 0..{args.num_layers - 1} "
                                 f"(NUM_LAYERS={args.num_layers})")
            kv = args.num_kv_heads * args.model_dim // args.num_heads
            self.ve_shared = ScaledEmbedding(args.vocab_size, args.ve_dim, kv, 0.01, 0.1) if self.ve_layers else None
            self.ve_layer_scales = nn.ParameterList([nn.Parameter(torch.ones(1)) for _ in self.ve_layers])
        self.final_norm = RMSNorm()
        self.lm_head = None if args.tie_embeddings else CastedLinear(args.model_dim, args.vocab_size, bias=False)
        if self.lm_head is not None:
            self.lm_head._zero_init = True
        else:  # an untied embedding keeps nn.Embedding's N(0, 1) init
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=args.tied_embed_init_std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and getattr(m, "_zero_init", False):
                nn.init.zeros_(m.weight)
        if feature("ortho_init"):
            if args.ortho_init:  # as the records: matrices >= 64x64 not zero-init; *.proj (bigram, VE) / sqrt(2L)
                for name, m in self.named_modules():
                    if isinstance(m, nn.Linear) and not getattr(m, "_zero_init", False) and min(m.weight.shape) >= 64:
                        gain = (2 * args.num_layers) ** -0.5 if name.endswith(".proj") else 1.0
                        nn.init.orthogonal_(m.weight, gain=gain)

    def hidden(self, input_ids: Tensor, cu_seqlens: Tensor | None = None) -> Tensor:
        """Final-normed hidden states (B, T, model_dim); cu_seqlens: document starts (docattn)."""
        x = self.tok_emb(input_ids)
        if feature("bigram_hash"):
            if self.bigram is not None:  # the hashed token pair joins the embedding before the norm
                x = x + self.bigram(bigram_hash(input_ids, self.bigram.embed.num_embeddings))
        if feature("smear_gate_v2"):
            if self.smear_gate is not None:  # SmearGate v2 mixes raw embeddings, before the norm
                x = smear_previous(self, x, input_ids)
        x = F.rms_norm(x, (x.size(-1),))
        if feature("smear_gate"):
            if self.smear is not None:  # SmearGate: (1 - g) x_t + g x_{t-1}, g = sigmoid(gate) per channel
                g = torch.sigmoid(self.smear.gate.to(x.dtype))
                x = (1 - g) * x + g * F.pad(x[:, :-1], (0, 0, 1, 0))  # looks only back: position 0 mixes with 0
        x0, skips = x, []
        ves = [None] * len(self.blocks)  # per block: what to add to its attention values
        if feature("value_embed"):
            if self.ve_shared is not None:  # one lookup, scaled per listed layer
                ve = self.ve_shared(input_ids)
                for layer, scale in zip(self.ve_layers, self.ve_layer_scales):
                    ves[layer] = ve * scale.to(ve.dtype)
        # Encoder half stores its outputs; the decoder half adds them back in reverse order.
        encoder, decoder = range(self.num_encoder_layers), range(self.num_encoder_layers, len(self.blocks))
        if feature("depth_recurrence"):
            if self.looping_active:  # the looped span runs again: the same blocks, the same parameters
                encoder, decoder = self.loop_order
        for i in encoder:
            x = self.blocks[i](x, x0, ves[i], cu_seqlens)
            skips.append(x)
        if feature("parallel_residuals"):
            lane = None  # the MLP lane of the parallel decoder
        for j, i in enumerate(decoder):
            if feature("parallel_residuals"):
                if lane is None and 0 < self.parallel_start <= i:  # both lanes start as the stream
                    lane = x
            if skips:
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if feature("skip_gates"):
                    x = gate_skip(self, x, skip, j)
                else:
                    x = x + skip
            if feature("parallel_residuals"):
                if lane is not None:  # x is lane 0 from here on
                    x, lane = parallel_block(self, i, x, lane, x0, ves[i], cu_seqlens)
                    continue
            x = self.blocks[i](x, x0, ves[i], cu_seqlens)
        if feature("parallel_residuals"):
            if lane is not None:
                x = final_lane(self, x, lane)
        return self.final_norm(x)

    def raw_logits(self, h: Tensor) -> Tensor:
        return F.linear(h, self.tok_emb.weight) if self.lm_head is None else self.lm_head(h)

    def logits_from_hidden(self, h: Tensor) -> Tensor:
        """Soft-capped logits in the compute dtype (bf16 under autocast)."""
        return self.logit_softcap * torch.tanh(self.raw_logits(h) / self.logit_softcap)

    def forward(self, input_ids: Tensor, target_ids: Tensor | None = None, reduction: str = "mean",
                cu_seqlens: Tensor | None = None) -> Tensor:
        h = self.hidden(input_ids, cu_seqlens)
        if feature("fused_ce"):
            if self.fused_ce and self.training and target_ids is not None and reduction == "mean":
                # Training only: one pass over the raw logits, the softcap inside the kernel.
                raw = self.raw_logits(h.reshape(-1, h.size(-1)))
                return SoftcappedCrossEntropy.apply(raw, target_ids.reshape(-1), self.logit_softcap).mean()
        logits = self.logits_from_hidden(h.reshape(-1, h.size(-1))).float()
        if target_ids is None:
            return logits.view(*input_ids.shape, -1)
        loss = F.cross_entropy(logits, target_ids.reshape(-1), reduction=reduction)
        return loss.view(target_ids.shape) if reduction == "none" else loss
