"""Fused training kernels of the April records: the LeakyReLU(0.5)^2 MLP and the softcapped cross-entropy.

Each is an autograd function whose two heavy steps run as a Triton kernel on CUDA and as its exact
PyTorch twin elsewhere (the CPU tests compare the twin, forward and backward, with plain autograd):
- fused MLP (#1530): the up-projection's epilogue writes both pre = x W1^T and post = leaky(pre)^2, so
  the activation never makes its own pass; the backward's matmul (g W2) multiplies in the
  activation's derivative, 2 pre where pre > 0 and pre / 2 elsewhere;
- fused softcapped CE (#1787): one pass over each row of raw logits computes the softcapped
  log-sum-exp and the loss without materializing the softcapped logits; softcap(x) = c tanh(x / c)
  is computed as 2c sigmoid(2x / c) - c, and the constant shift cancels inside the cross-entropy,
  so z = 2c sigmoid(2x / c) is used; dz/dx = 4 s (1 - s) with s = sigmoid(2x / c).
Both are training-only (eval uses the plain path). Which path runs is logged at start, and a recipe
that asks for a fused kernel on CUDA without Triton stops there instead of falling back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.features import HP, feature

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = tl = None

FEATURES = {
    "fused_mlp": ("LeakyReLU(0.5)^2 MLP as one Triton matmul with the activation in its epilogue (training)",
                  "fused_mlp"),
    "fused_ce": ("softcapped cross-entropy as one Triton pass over the raw logits (training)", "fused_ce"),
    "fused_kernels": ("the script logs which path each fused kernel runs", "fused_mlp or fused_ce"),
}

HPARAMS = (
    HP("fused_mlp", "FUSED_MLP_ENABLED", "model.fused_mlp", bool, False, feature="fused_mlp",
       doc="fused LeakyReLU^2 MLP kernel in training (needs activation leaky_relu2; the records hard-code it)"),
    HP("fused_ce", "FUSED_CE_ENABLED", "model.fused_ce", bool, False, feature="fused_ce",
       doc="fused softcapped cross-entropy kernel in training"),
)


def kernel_path(device: torch.device) -> str:
    """"triton" on CUDA, "torch" (the twin) on CPU; on CUDA without Triton an error, never a fallback."""
    if device.type != "cuda":
        return "torch"
    if triton is None:
        raise RuntimeError("FUSED_MLP_ENABLED / FUSED_CE_ENABLED need Triton on CUDA (pip install triton), "
                           "or set them to 0")
    return "triton"


def triton_jit(fn):
    """triton.jit where Triton is installed; elsewhere the kernel stays a plain function nobody calls."""
    return fn if triton is None else triton.jit(fn)


@triton_jit
def mm_leaky_relu2_kernel(a_ptr, b_ptr, c_ptr, aux_ptr, M, N, K, s_am, s_ak, s_bn, s_bk,
                          FORWARD: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # C = A B^T (A: M x K, B: N x K). Forward: C = pre, aux <- leaky(pre)^2.
    # Backward: aux holds pre and C = (A B^T) * (2 pre if pre > 0 else pre / 2).
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * s_am + (k0 + rk)[None, :] * s_ak,
                    mask=(rm[:, None] < M) & ((k0 + rk)[None, :] < K), other=0.0)
        b = tl.load(b_ptr + rn[None, :] * s_bn + (k0 + rk)[:, None] * s_bk,
                    mask=(rn[None, :] < N) & ((k0 + rk)[:, None] < K), other=0.0)
        acc = tl.dot(a, b, acc)
    offs, mask = rm[:, None] * N + rn[None, :], (rm[:, None] < M) & (rn[None, :] < N)
    out = acc.to(c_ptr.dtype.element_ty)
    if FORWARD:
        tl.store(c_ptr + offs, out, mask=mask)
        h = tl.where(out > 0, out, 0.5 * out).to(tl.float32)
        tl.store(aux_ptr + offs, (h * h).to(c_ptr.dtype.element_ty), mask=mask)
    else:
        pre = tl.load(aux_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        grad = out.to(tl.float32) * tl.where(pre > 0, 2.0 * pre, 0.5 * pre)
        tl.store(c_ptr + offs, grad.to(c_ptr.dtype.element_ty), mask=mask)


@triton_jit
def softcapped_ce_kernel(x_ptr, t_ptr, g_ptr, lse_ptr, out_ptr, V, s_row, cap,
                         FORWARD: tl.constexpr, BLOCK: tl.constexpr):
    # One program per row. Forward: lse and loss of z = 2 cap sigmoid(2 x / cap) in one pass
    # (online max / sum). Backward: d loss / dx = g (softmax(z) - onehot) 4 s (1 - s).
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * s_row
    target = tl.load(t_ptr + row).to(tl.int64)
    if FORWARD:
        m, total = -float("inf"), 0.0
        for v0 in range(0, V, BLOCK):
            cols = v0 + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < V, other=0.0).to(tl.float32)
            z = tl.where(cols < V, 2.0 * cap * tl.sigmoid(2.0 * x / cap), -float("inf"))
            m_new = tl.maximum(m, tl.max(z, axis=0))
            total = total * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)
            m = m_new
        lse = m + tl.log(total)
        zt = 2.0 * cap * tl.sigmoid(2.0 * tl.load(x_row + target).to(tl.float32) / cap)
        tl.store(lse_ptr + row, lse)
        tl.store(out_ptr + row, lse - zt)
    else:
        lse, g = tl.load(lse_ptr + row), tl.load(g_ptr + row).to(tl.float32)
        for v0 in range(0, V, BLOCK):
            cols = v0 + tl.arange(0, BLOCK)
            x = tl.load(x_row + cols, mask=cols < V, other=0.0).to(tl.float32)
            s = tl.sigmoid(2.0 * x / cap)
            p = tl.exp(2.0 * cap * s - lse) - tl.where(cols == target, 1.0, 0.0)
            tl.store(out_ptr + row * V + cols, (g * p * 4.0 * s * (1.0 - s)).to(out_ptr.dtype.element_ty),
                     mask=cols < V)


def matmul_leaky_relu2(a: Tensor, b: Tensor, pre: Tensor | None = None):
    """Forward (pre None): (pre, post) = (a b^T, leaky(a b^T, 0.5)^2). Backward: (a b^T) * leaky^2'(pre)."""
    if a.is_cuda:
        M, K = a.shape
        N = b.size(0)
        c = torch.empty(M, N, device=a.device, dtype=a.dtype)
        aux = torch.empty_like(c) if pre is None else pre.contiguous()
        mm_leaky_relu2_kernel[(triton.cdiv(M, 128), triton.cdiv(N, 128))](
            a, b, c, aux, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
            FORWARD=pre is None, BM=128, BN=128, BK=64, num_warps=8, num_stages=3)
        return (c, aux) if pre is None else c
    c = a @ b.T
    if pre is None:
        return c, F.leaky_relu(c, negative_slope=0.5).square()
    return c * torch.where(pre > 0, 2.0 * pre, 0.5 * pre)


class FusedLeakyReLU2MLP(torch.autograd.Function):
    """leaky_relu(x W1^T, 0.5)^2 W2^T keeping pre and post for the backward (no activation recompute)."""

    @staticmethod
    def forward(ctx, x: Tensor, w1: Tensor, w2: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.size(-1))
        pre, post = matmul_leaky_relu2(x2, w1)
        ctx.save_for_backward(x2, w1, w2, pre, post)
        return (post @ w2.T).view(*x.shape[:-1], w2.size(0))

    @staticmethod
    def backward(ctx, grad: Tensor):
        x2, w1, w2, pre, post = ctx.saved_tensors
        g = grad.reshape(-1, grad.size(-1))
        dpre = matmul_leaky_relu2(g, w2.T.contiguous(), pre)
        return (dpre @ w1).view(*grad.shape[:-1], w1.size(1)), dpre.T @ x2, g.T @ post


def softcapped_ce_rows(x: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    """(loss, lse) per row of raw logits x (N, V), both fp32."""
    if x.is_cuda:
        n, v = x.shape
        loss, lse = (torch.empty(n, device=x.device, dtype=torch.float32) for _ in range(2))
        softcapped_ce_kernel[(n,)](x, targets, loss, lse, loss, v, x.stride(0), cap, FORWARD=True, BLOCK=1024,
                                  num_warps=4)
        return loss, lse
    z = 2.0 * cap * torch.sigmoid(2.0 * x.float() / cap)
    lse = torch.logsumexp(z, dim=-1)
    return lse - z.gather(1, targets[:, None]).squeeze(1), lse


def softcapped_ce_grad(x: Tensor, targets: Tensor, lse: Tensor, g: Tensor, cap: float) -> Tensor:
    if x.is_cuda:
        out = torch.empty_like(x)
        softcapped_ce_kernel[(x.size(0),)](x, targets, g.float().contiguous(), lse, out, x.size(1), x.stride(0), cap,
                                          FORWARD=False, BLOCK=1024, num_warps=4)
        return out
    s = torch.sigmoid(2.0 * x.float() / cap)
    p = torch.exp(2.0 * cap * s - lse[:, None]) - F.one_hot(targets, x.size(1)).float()
    return (g.float()[:, None] * p * 4.0 * s * (1.0 - s)).to(x.dtype)


class SoftcappedCrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of cap tanh(x / cap) without storing the softcapped logits."""

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, cap: float) -> Tensor:
        x, targets = x.contiguous(), targets.contiguous()
        loss, lse = softcapped_ce_rows(x, targets, cap)
        ctx.save_for_backward(x, targets, lse)
        ctx.cap = cap
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, targets, lse = ctx.saved_tensors
        return softcapped_ce_grad(x, targets, lse, grad, ctx.cap), None, None


def fused_paths(args, device: torch.device) -> str:
    """The log line naming the kernel each fused feature runs (checked before training starts)."""
    parts = []
    if feature("fused_mlp"):
        if args.fused_mlp:
            parts.append(f"fused_mlp:{kernel_path(device)}")
    if feature("fused_ce"):
        if args.fused_ce:
            parts.append(f"fused_ce:{kernel_path(device)}")
    return " ".join(parts) or "none"
