"""Quantization-aware training: straight-through fake quantization of the block matrices.

The forward pass sees each mlp/attn matrix as the export will store it (symmetric per-row
levels in [-(2^(b-1)-1), 2^(b-1)-1], scale = row max / qmax rounded to fp16, as quant.py's
int5/int6 path with the row-max clip); the backward pass treats the rounding as identity.
Records: int6 STE from the first step (2026-03-19 int6 STE QAT), int5 MLP / int6 attention from
the first step (seed 001), QAT once the elapsed fraction of the wallclock cap (of iterations if
uncapped) reaches QAT_START_FRAC (2026-03-18 LowerLR; 0.96 in a PR #410 revision), and late QAT
once the LR multiplier drops below LATE_QAT_THRESHOLD (0.15 in the 1.1233 record and seed 002,
0.1 in 1.1248 and seed 000). The records' own STE grids differ from their exports (an extra
-2^(b-1) level; a 1/31 scale floor in the late-QAT records); this one follows quant.py exactly.

Switching: CastedLinear.qat_bits is a plain int fixed by configure_qat before the first
(compiled) forward, so torch.compile specializes on it once. The on/off switch is a 0-dim
buffer read inside the graph, so turning QAT on mid-run neither recompiles nor can be
constant-folded away (the 1.1248 record's README reports that its class-attribute flag was
folded at first trace and late QAT never ran).

As the records: the fake quantization acts only in training mode (evaluation sees the fp32
weights), `qat_ste: records` is their STE (every CastedLinear, levels [-2^(b-1), 2^(b-1)-1],
fp32 scales at least QAT_SCALE_FLOOR, w + (w_q - w).detach()), `qat_train: false` reproduces the
late-QAT records whose flag torch.compile folded away (seeds 000, 002: no QAT in training), and
`ttt.qat` fake-quantizes the TTT steps, which in those records ran eagerly with the flag still set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from packager.runtime.features import HP, feature

FEATURES = {
    "qat": ("straight-through fake quantization of block weights during training",
            "qat_bits_mlp > 0 or qat_bits_attn > 0"),
}

HPARAMS = (
    HP("qat_bits_mlp", "QAT_BITS_MLP", "train.qat.qat_bits_mlp", int, 0, feature="qat", choices=(0, 5, 6),
       doc="fake-quantize blocks.*.mlp.* matrices to this width (0: off); must equal the export's"),
    HP("qat_bits_attn", "QAT_BITS_ATTN", "train.qat.qat_bits_attn", int, 0, feature="qat", choices=(0, 5, 6),
       doc="fake-quantize blocks.*.attn.* matrices to this width (0: off); must equal the export's"),
    HP("qat_start_frac", "QAT_START_FRAC", "train.qat.qat_start_frac", float, 0.0, feature="qat", minimum=0.0,
       doc="QAT starts after this fraction of the wallclock cap (of iterations when uncapped)"),
    HP("late_qat_threshold", "LATE_QAT_THRESHOLD", "train.qat.late_qat_threshold", float, 0.0, feature="qat",
       minimum=0.0, doc="if > 0, QAT also waits until the LR multiplier is below this (late QAT)"),
    HP("qat_ste", "QAT_STE", "train.qat.qat_ste", str, "export", feature="qat", choices=("export", "records"),
       doc="export: the export's grid on the matrices it quantizes; records: the records' STE on every CastedLinear"),
    HP("qat_scale_floor", "QAT_SCALE_FLOOR", "train.qat.qat_scale_floor", float, 0.0, feature="qat", minimum=0.0,
       doc="records STE: smallest row scale (1/31 in seeds 000 and 002)"),
    HP("qat_train", "QAT_TRAIN", "train.qat.qat_train", bool, True, feature="qat",
       doc="fake-quantize during training (false: only in TTT, as the records whose flag compile folded away)"),
    HP("ttt_qat", "TTT_QAT", "ttt.qat", bool, False, feature="qat",
       doc="fake-quantize the TTT training steps (seeds 000 and 002 ran TTT with their QAT flag set)"),
)

QAT_MIN_NUMEL = 65_536  # the export stores float tensors of at most this many elements as they are (quant.py)


def fake_quantize_ste(w: Tensor, bits: int, gate: Tensor | None = None, floor: float | None = None) -> Tensor:
    """The export's per-row dequantized w where the 0-dim gate is nonzero (always if None), with w's gradient (STE).

    With `floor` (the records' STE): levels down to -qmax-1, fp32 scales of at least `floor`, and w + (w_q - w)."""
    qmax, w0 = 2 ** (bits - 1) - 1, w.detach()
    if floor is None:
        raw = (w0.float().abs().amax(dim=1) / qmax).clamp_min(torch.finfo(torch.float16).tiny).view(torch.int32)
        # Round to fp16 (ties to even) like the stored scales, in bit arithmetic: inductor may drop a fused cast's rounding.
        scale = ((raw + 0x0FFF + ((raw >> 13) & 1)) & -0x2000).view(torch.float32)[:, None]
        q = (torch.clamp(torch.round(w0.float() / scale), -qmax, qmax) * scale).to(w.dtype)
    else:
        scale = (w0.float().abs().amax(dim=1, keepdim=True) / qmax).clamp_min(floor)
        q = (torch.clamp(torch.round(w0.float() / scale), -qmax - 1, qmax) * scale).to(w.dtype)
    q = q if gate is None else torch.where(gate > 0, q, w0)
    return q + (w - w0) if floor is None else w + (q - w0)  # q's value (the records: w + (w_q - w)), w's gradient


def configure_qat(args, model) -> int:
    """Before the first forward: a QAT width and an off switch for each layer the STE quantizes."""
    widths, stored = {"mlp": args.qat_bits_mlp, "attn": args.qat_bits_attn}, {"mlp": 8, "attn": 8}
    if feature("mixed_quant"):
        if args.quant_scheme == "mixed":
            stored = {"mlp": args.bits_mlp, "attn": args.bits_attn}
    records = args.qat_ste == "records"  # every CastedLinear: ".mlp." layers at the mlp width, the rest at attn's
    if not records and any(b and b != stored[c] for c, b in widths.items()):
        raise ValueError(f"QAT widths {widths} differ from the export's {stored}: QAT must train for the stored grid")
    for name, module in model.named_modules():
        cls = "mlp" if ".mlp." in f"{name}." else "attn" if records or ".attn." in f"{name}." else None
        if cls and widths[cls] and hasattr(module, "qat_bits") and (records or module.weight.numel() > QAT_MIN_NUMEL):
            module.qat_bits, module.qat_floor = widths[cls], max(args.qat_scale_floor, 1e-12) if records else None
            module.register_buffer("qat_gate", torch.zeros((), device=module.weight.device), persistent=False)
    return sum(1 for module in model.modules() if getattr(module, "qat_bits", 0))


def qat_active(args, step: int, elapsed_ms: float, lr_scale: float) -> bool:
    """From qat_start_frac of the wallclock cap (of iterations if uncapped) on, and below late_qat_threshold if > 0."""
    cap_ms = 1000.0 * args.max_wallclock_seconds
    done = elapsed_ms / cap_ms if cap_ms > 0 else step / max(args.iterations, 1)
    return done >= args.qat_start_frac and (args.late_qat_threshold <= 0 or lr_scale < args.late_qat_threshold)


def set_qat(model, on: bool) -> None:
    """Flip every configured layer's switch (an in-place write: no recompile)."""
    for module in model.modules():
        if getattr(module, "qat_bits", 0):
            module.qat_gate.fill_(1.0 if on else 0.0)
