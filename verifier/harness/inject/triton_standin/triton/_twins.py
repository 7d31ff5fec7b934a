"""Exact PyTorch twins of Triton kernels that records launch on their training path with no PyTorch
fallback, keyed by the kernel's name and the sha256 of its source (ast.unparse of the decorated def):
a kernel whose source differs from the one a twin was written for is not run (not runnable on CPU).

A twin receives the launch's arguments (TensorDescriptor stand-ins carry their tensor as `.base`)
and writes the kernel's outputs."""

import torch


def linear_leaky_relu_square(a_desc, b_desc, c_desc, aux_desc, M, N, K, BLOCK_SIZE_M=None, BLOCK_SIZE_N=None,
                             BLOCK_SIZE_K=None, NUM_SMS=None, FORWARD=True, **launch):
    """Forward: c = a @ b.T (fp32 accumulation, stored as bf16), aux = leaky_relu(c, 0.5) ** 2.
    Backward (FORWARD false, aux holds the pre-activation): c = (a @ b.T) * leaky_relu'(pre) * 2 * pre."""
    a, b, c, aux = a_desc.base, b_desc.base, c_desc.base, aux_desc.base
    out = (a.float() @ b.float().t()).to(torch.bfloat16)
    if not FORWARD:
        pre = aux.to(torch.bfloat16)
        out = out * torch.where(pre > 0, 2.0 * pre, 0.5 * pre)
    c.copy_(out)
    if FORWARD:
        act = torch.where(out > 0, out, 0.5 * out)
        aux.copy_(act * act)


TWINS = {
    "linear_leaky_relu_square_kernel": ("ccdf88de66d4", linear_leaky_relu_square),
}
