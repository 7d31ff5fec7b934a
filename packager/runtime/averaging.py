"""Weight averaging applied before export: EMA, SWA and tight SWA.

EMA (2026-03-20 1.1271, 1.1248 and 1.1233 records, seed 002): an fp32 shadow of every
parameter, shadow = d * shadow + (1 - d) * w after each step, d = 0.997. A PR #410 (seed 000)
revision updated when the completed step count was a multiple of 10, with d^10: same horizon.
SWA (10L_Int5MLP SWA50 record): a uniform mean of snapshots taken when the completed step count
is a multiple of SWA_EVERY (50) while the LR multiplier is below SWA_START_FRAC (0.4; despite
the name the records compare it with the LR multiplier). Tight SWA is the same rule late in the
warmdown: every 50 steps below 0.2 (1.1233 record). Fewer than 2 snapshots are not applied.
With EMA on, the records apply EMA alone: 1.1271/1.1248 skip SWA, 1.1233 collects tight-SWA
snapshots but never loads them. So "swa" is off whenever EMA is on.
"""

from __future__ import annotations

import torch

from packager.runtime.features import HP, feature

FEATURES = {
    "ema": ("exponential moving average of the weights, loaded before export", "ema_decay > 0"),
    "swa": ("uniform average of weight snapshots taken late in the warmdown, loaded before export",
            "swa_every > 0 and ema_decay <= 0"),
}

HPARAMS = (
    HP("ema_decay", "EMA_DECAY", "train.averaging.ema_decay", float, 0.0, feature="ema", minimum=0.0,
       doc="per-step EMA decay, e.g. 0.997 (0: no EMA)"),
    HP("ema_every", "EMA_EVERY", "train.averaging.ema_every", int, 1, feature="ema", minimum=1,
       doc="update the EMA every N steps with decay^N"),
    HP("swa_every", "SWA_EVERY", "train.averaging.swa_every", int, 0, feature="swa", minimum=0,
       doc="snapshot every N steps (0: no SWA; ignored when EMA is on)", smoke=2),
    HP("swa_start_frac", "SWA_START_FRAC", "train.averaging.swa_start_frac", float, 0.4, feature="swa",
       minimum=0.0, doc="snapshot only while the LR multiplier is below this (0.2: tight SWA)"),
    HP("swa_dtype", "SWA_DTYPE", "train.averaging.swa_dtype", str, "fp32", feature="swa", choices=("fp32", "param"),
       doc="sum of the snapshots in fp32, or in each parameter's dtype (bf16 embeddings on CUDA; seeds 000, 001)"),
)


class EmaAverager:
    """fp32 EMA of the parameters (buffers are left alone)."""

    def __init__(self, args, model):
        if not 0.0 < args.ema_decay < 1.0:
            raise ValueError(f"EMA_DECAY must be in (0, 1), got {args.ema_decay}")
        self.decay, self.every, self.updates = args.ema_decay, max(args.ema_every, 1), 0
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def after_step(self, model, step: int, lr_scale: float) -> None:
        if step % self.every == 0:  # step: optimizer steps done so far (1 after the first)
            keep = self.decay ** self.every
            for name, p in model.named_parameters():
                self.shadow[name].mul_(keep).add_(p.detach().float(), alpha=1.0 - keep)
            self.updates += 1

    @torch.no_grad()
    def apply_to(self, model) -> str:
        for name, p in model.named_parameters():
            p.copy_(self.shadow[name])
        return f"ema decay:{self.decay} every:{self.every} updates:{self.updates}"


class SwaAverager:
    """Uniform fp32 mean of snapshots taken every swa_every steps below an LR multiplier."""

    def __init__(self, args, model):
        self.every, self.below, self.count, self.first = args.swa_every, args.swa_start_frac, 0, None
        self.total = {name: torch.zeros_like(p, dtype=torch.float32 if args.swa_dtype == "fp32" else p.dtype)
                      for name, p in model.named_parameters()}

    @torch.no_grad()
    def after_step(self, model, step: int, lr_scale: float) -> None:
        if lr_scale >= self.below or step % self.every:
            return
        for name, p in model.named_parameters():
            self.total[name].add_(p.detach().to(self.total[name].dtype))
        self.count, self.first = self.count + 1, self.first or step

    @torch.no_grad()
    def apply_to(self, model) -> str:
        if self.count < 2:
            return f"swa snapshots:{self.count} (not applied)"
        for name, p in model.named_parameters():
            p.copy_(self.total[name] / self.count)
        return f"swa snapshots:{self.count} every:{self.every} first_step:{self.first} lr_below:{self.below}"


def build_averager(args, model):
    """The averager the recipe asks for (EMA wins over SWA, as in the records), or None."""
    if feature("ema"):
        if args.ema_decay > 0:
            return EmaAverager(args, model)
    if feature("swa"):
        return SwaAverager(args, model) if args.swa_every > 0 else None
    else:
        return None
