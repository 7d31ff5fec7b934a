"""LQER: a low-rank correction of the quantization error of the worst-quantized matrices.

After GPTQ, the LQER_TOP_K matrices with the largest error norm ||W - Q||_F get a rank-r
correction from the SVD of the error, E ~ A B with A = U_r S_r and B = V_r^T, stored with few
bits and added back on load. Asymmetric packing (LQER_ASYM_ENABLED): A as int2 levels in [-2, 1]
with one fp16 scale (max|A| / 1.5), B as int4 levels in [-8, 7] with an fp16 scale per group of
LQER_ASYM_GROUP values of the flattened B (max / 7.5); a B that does not split into whole groups
falls back to the symmetric packing, LQER_FACTOR_BITS levels per row for both factors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from packager.runtime.features import HP

FEATURES = {
    "lqer": ("rank-r low-bit correction of the quantization error of the top-k matrices", "lqer_enabled"),
}

HPARAMS = (
    HP("lqer_enabled", "LQER_ENABLED", "export.lqer_enabled", bool, False, feature="lqer",
       doc="add a low-rank correction to the matrices with the largest GPTQ error"),
    HP("lqer_rank", "LQER_RANK", "export.lqer_rank", int, 4, feature="lqer", doc="rank r of the correction", minimum=1),
    HP("lqer_top_k", "LQER_TOP_K", "export.lqer_top_k", int, 3, feature="lqer",
       doc="matrices corrected, by largest error norm", minimum=0),
    HP("lqer_factor_bits", "LQER_FACTOR_BITS", "export.lqer_factor_bits", int, 4, feature="lqer",
       choices=(2, 3, 4, 5, 6, 7, 8), doc="levels of the symmetric per-row packing"),
    HP("lqer_asym_enabled", "LQER_ASYM_ENABLED", "export.lqer_asym_enabled", bool, True, feature="lqer",
       doc="asymmetric packing: A int2 with one scale, B int4 per group"),
    HP("lqer_asym_group", "LQER_ASYM_GROUP", "export.lqer_asym_group", int, 64, feature="lqer",
       doc="values of B per int4 scale", minimum=1),
)


def pack_rows(m: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    qmax = 2 ** (bits - 1) - 1
    scale = (m.abs().amax(dim=1).clamp_min(1e-10) / qmax).to(torch.float16)
    return torch.clamp(torch.round(m / scale.float()[:, None]), -qmax, qmax).to(torch.int8), scale


def pack_asym(a: Tensor, b: Tensor, group: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    sa = (a.abs().amax().clamp_min(1e-10) / 1.5).to(torch.float16)
    qa = torch.clamp(torch.round(a / sa.float()), -2, 1).to(torch.int8)
    bg = b.reshape(-1, group)
    sb = (bg.abs().amax(dim=1).clamp_min(1e-10) / 7.5).to(torch.float16)
    qb = torch.clamp(torch.round(bg / sb.float()[:, None]), -8, 7).to(torch.int8).reshape(b.shape)
    return qa, sa, qb, sb


def lqer_correct(args, errors: dict[str, Tensor], tensors: dict[str, Tensor], kinds: dict[str, str]) -> None:
    """Add the packed factors of the top-k matrices to `tensors` and mark their kinds (+lqer / +lqer_asym)."""
    if args.lqer_enabled:
        top = sorted(errors, key=lambda n: -float(errors[n].norm()))[: args.lqer_top_k]
        for name in top:
            u, s, vh = torch.linalg.svd(errors[name], full_matrices=False)
            r = min(args.lqer_rank, s.numel())
            a, b = (u[:, :r] * s[:r]).contiguous(), vh[:r].contiguous()
            if args.lqer_asym_enabled and b.numel() % args.lqer_asym_group == 0:
                packed, kinds[name] = pack_asym(a, b, args.lqer_asym_group), kinds[name] + "+lqer_asym"
            else:
                packed, kinds[name] = (*pack_rows(a, args.lqer_factor_bits), *pack_rows(b, args.lqer_factor_bits)), \
                    kinds[name] + "+lqer"
            for suffix, t in zip((".lqA", ".lqAs", ".lqB", ".lqBs"), packed):
                tensors[name + suffix] = t


def lqer_dequantize(tensors: dict[str, Tensor], name: str, kind: str) -> Tensor | float:
    """A B of a corrected matrix (0.0 for the others)."""
    if kind.endswith("+lqer_asym"):
        qb, sb = tensors[name + ".lqB"], tensors[name + ".lqBs"]
        b = (qb.reshape(sb.numel(), -1).float() * sb.float()[:, None]).reshape(qb.shape)
        return (tensors[name + ".lqA"].float() * tensors[name + ".lqAs"].float()) @ b
    if kind.endswith("+lqer"):
        a = tensors[name + ".lqA"].float() * tensors[name + ".lqAs"].float()[:, None]
        return a @ (tensors[name + ".lqB"].float() * tensors[name + ".lqBs"].float()[:, None])
    return 0.0
