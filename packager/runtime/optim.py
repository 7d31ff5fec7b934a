"""Muon for the block matrices, Adam for everything else, and the baseline's LR schedules.

Follows the upstream root train_gpt.py: Newton-Schulz quintic orthogonalisation in bf16,
round-robin work split over ranks with one all-reduced flat bf16 update buffer (fp32 on CPU), the
embedding/head/matrix/scalar parameter split, and the wallclock-aware linear warmdown.
Gated, as the later records: decoupled weight decay for Muon (MUON_WD) and AdamW for the token and
scalar groups (ADAM_WD), and the placement of the BigramHash, value-embedding and SmearGate tensors.
The April records (#1530 lineage): MuonEq-R (each row of the momentum update scaled to unit norm
before orthogonalisation, MUON_ROW_NORMALIZE), the Polar Express Newton-Schulz schedule (one tuned
(a, b, c) per iteration instead of one tuple for all), a token-group weight decay of its own
(EMBED_WD), the warmdown as a fraction of the wallclock (WARMDOWN_FRAC) and an LR floor (MIN_LR).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from packager.runtime.features import HP, feature
from packager.runtime.model import CONTROL_TENSOR_NAME_PATTERNS
from packager.runtime.system import maybe_compile

FEATURES: dict[str, tuple[str, str]] = {
    "muon_wd": ("decoupled weight decay on the Muon matrices", "muon_weight_decay > 0"),
    "adam_wd": ("AdamW decoupled weight decay on the token and scalar Adam groups",
                "adam_weight_decay > 0 or embed_weight_decay > 0"),
    "embed_wd": ("the token Adam group decays at EMBED_WD instead of ADAM_WD", "embed_weight_decay > 0"),
    "muon_eq_r": ("MuonEq-R: rows of the momentum update normalized before Newton-Schulz", "muon_row_normalize"),
    "polar_express": ("Polar Express Newton-Schulz: per-iteration minimax coefficients", "muon_ns == 'polar_express'"),
    "warmdown_frac": ("LR warmdown over the last fraction of the wallclock (of iterations if uncapped)",
                      "warmdown_frac > 0"),
    "min_lr": ("the LR multiplier never drops below MIN_LR", "min_lr > 0"),
    "untrained": ("parameters no optimizer steps (they keep their init), as a record left them", "untrained_params != ''"),
}

HPARAMS = (
    HP("embed_lr", "EMBED_LR", "train.optimizer.embed_lr", float, 0.6, doc="Adam LR of an untied token embedding"),
    HP("head_lr", "HEAD_LR", "train.optimizer.head_lr", float, 0.008, doc="Adam LR of an untied lm_head"),
    HP("tied_embed_lr", "TIED_EMBED_LR", "train.optimizer.tied_embed_lr", float, 0.05, doc="Adam LR of a tied embedding"),
    HP("matrix_lr", "MATRIX_LR", "train.optimizer.matrix_lr", float, 0.04, doc="Muon LR of 2-D block matrices"),
    HP("scalar_lr", "SCALAR_LR", "train.optimizer.scalar_lr", float, 0.04, doc="Adam LR of vectors and control tensors"),
    HP("muon_momentum", "MUON_MOMENTUM", "train.optimizer.muon_momentum", float, 0.95, doc="Muon momentum after warmup"),
    HP("muon_backend_steps", "MUON_BACKEND_STEPS", "train.optimizer.muon_backend_steps", int, 5,
       doc="Newton-Schulz iterations", minimum=1),
    HP("muon_momentum_warmup_start", "MUON_MOMENTUM_WARMUP_START", "train.optimizer.muon_momentum_warmup_start", float,
       0.85, doc="Muon momentum at step 0"),
    HP("muon_momentum_warmup_steps", "MUON_MOMENTUM_WARMUP_STEPS", "train.optimizer.muon_momentum_warmup_steps", int,
       500, doc="steps of linear Muon momentum warmup (0: none)", minimum=0),
    HP("beta1", "BETA1", "train.optimizer.beta1", float, 0.9, doc="Adam beta1"),
    HP("beta2", "BETA2", "train.optimizer.beta2", float, 0.95, doc="Adam beta2"),
    HP("adam_eps", "ADAM_EPS", "train.optimizer.adam_eps", float, 1e-8, doc="Adam epsilon"),
    HP("muon_weight_decay", "MUON_WD", "train.optimizer.muon_weight_decay", float, 0.0, feature="muon_wd",
       doc="Muon decoupled weight decay: p *= 1 - lr * wd each step", minimum=0.0),
    HP("adam_weight_decay", "ADAM_WD", "train.optimizer.adam_weight_decay", float, 0.0, feature="adam_wd",
       doc="AdamW decoupled weight decay of the token and scalar groups (not an untied head)", minimum=0.0),
    HP("embed_weight_decay", "EMBED_WD", "train.optimizer.embed_weight_decay", float, 0.0, feature="embed_wd",
       doc="AdamW weight decay of the token group (0: it follows ADAM_WD)", minimum=0.0),
    HP("muon_row_normalize", "MUON_ROW_NORMALIZE", "train.optimizer.muon_row_normalize", bool, False,
       feature="muon_eq_r", doc="MuonEq-R: scale each row of the update to unit norm before Newton-Schulz"),
    HP("muon_ns", "MUON_NS", "train.optimizer.muon_ns", str, "quintic", feature="polar_express",
       choices=("quintic", "polar_express"), doc="Newton-Schulz coefficients: one quintic tuple, or Polar "
       "Express' per-iteration tuples (at most 5 iterations; the records hard-code it, no env var)"),
    HP("warmdown_frac", "WARMDOWN_FRAC", "train.warmdown_frac", float, 0.0, feature="warmdown_frac", minimum=0.0,
       doc="warmdown over the last fraction of the wallclock cap (of iterations if uncapped); 0: WARMDOWN_ITERS"),
    HP("min_lr", "MIN_LR", "train.min_lr", float, 0.0, feature="min_lr", minimum=0.0,
       doc="floor of the LR multiplier during the warmdown"),
    HP("untrained_params", "UNTRAINED_PARAMS", "train.optimizer.untrained", str, "", feature="untrained",
       doc='comma-separated parameter names no optimizer steps, e.g. "smear.gate" ("": train all)'),
)

# Polar Express (Amsel et al. 2025) coefficients as the April records use them, 5 iterations, each
# the minimax-optimal odd quintic for the singular-value interval left by the previous one.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def muon_dtype(device: torch.device) -> torch.dtype:
    """Precision of Muon's orthogonalisation and update buffer: bf16 on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 10, eps: float = 1e-7, dtype=None,
                                coeffs: tuple = ((3.4445, -4.7750, 2.0315),)) -> Tensor:
    """Approximately orthogonalise a 2-D matrix (U V^T of its SVD) with a quintic
    Newton-Schulz iteration. The tuned coefficients trade exactness for speed:
    singular values land in roughly [0.7, 1.2], not exactly at 1. Iteration i uses
    coeffs[min(i, len - 1)]. Runs in bf16 on CUDA (as upstream) and fp32 on CPU, where
    small bf16 matmuls are ~100x slower."""
    X = G.to(dtype or muon_dtype(G.device))
    X = X / (X.norm() + eps)
    tall = G.size(0) > G.size(1)
    if tall:  # iterate on the wide orientation so X @ X.T is the small Gram matrix
        X = X.T
    for i in range(steps):
        a, b, c = coeffs[min(i, len(coeffs) - 1)]
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


class Muon(torch.optim.Optimizer):
    """SGD-momentum (Nesterov by default) whose 2-D update is orthogonalised.

    Distributed: rank r orthogonalises parameters r, r+W, r+2W, ...; updates meet in one
    flat bf16 (CPU: fp32) buffer that is all-reduced, so every rank applies the same update.
    `self.zeropower` may be replaced by a compiled version of the same function.
    """

    def __init__(self, params, lr: float, momentum: float, backend_steps: int, nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))
        self.zeropower = zeropower_via_newtonschulz5
        self.ns_kwargs = {}  # e.g. the Polar Express coefficients

    def _update(self, p: Tensor, group: dict) -> Tensor:
        g, momentum = p.grad, group["momentum"]
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        buf.mul_(momentum).add_(g)
        if group["nesterov"]:
            g = g.add(buf, alpha=momentum)
        if feature("muon_eq_r"):
            if group.get("row_normalize"):  # MuonEq-R: equal-norm rows, so no row dominates the orthogonalisation
                g = g / g.float().norm(dim=-1, keepdim=True).clamp_min(1e-7).to(g.dtype)
        g = self.zeropower(g, steps=group["backend_steps"], **self.ns_kwargs)
        # Tall matrices get a larger step so the per-element RMS matches square ones.
        return g * max(1, g.size(0) / g.size(1)) ** 0.5

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device,
                               dtype=muon_dtype(params[0].device))
            offsets = [0]
            for i, p in enumerate(params):
                if i % world == rank and p.grad is not None:
                    flat[offsets[-1]: offsets[-1] + p.numel()] = self._update(p, group).reshape(-1)
                offsets.append(offsets[-1] + p.numel())
            if distributed:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for p, start in zip(params, offsets):
                if feature("muon_wd"):
                    if group.get("weight_decay"):  # decoupled, on the scheduled lr, before the update
                        p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(flat[start: start + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
        return loss


def adam_group(args, params: list, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """One Adam group carrying base_lr, with decoupled weight decay if given; fused on CPU too, as the records."""
    if feature("adam_wd"):
        if weight_decay > 0:  # AdamW: p *= 1 - lr * wd before the Adam step
            return torch.optim.AdamW([{"params": params, "lr": lr, "base_lr": lr}], betas=(args.beta1, args.beta2),
                                     eps=args.adam_eps, weight_decay=weight_decay, fused=True)
    return torch.optim.Adam(
        [{"params": params, "lr": lr, "base_lr": lr}],
        betas=(args.beta1, args.beta2), eps=args.adam_eps, fused=True,
    )


def build_optimizers(args, model: nn.Module) -> tuple[list[torch.optim.Optimizer], Muon]:
    """[token Adam, (untied head Adam), Muon, scalar Adam] and the Muon; groups carry base_lr.

    Muon takes the 2-D block matrices; Adam at scalar_lr takes vectors, scalars, control
    tensors and skip_weights. Every trainable parameter must land in exactly one optimizer.
    """
    matrix, scalar = [], []
    for name, p in model.blocks.named_parameters():
        control = any(s in name for s in CONTROL_TENSOR_NAME_PATTERNS)
        (matrix if p.ndim == 2 and not control else scalar).append(p)
    if model.skip_weights.numel() > 0:
        scalar.append(model.skip_weights)
    tokens = [model.tok_emb.weight]
    if feature("smear_gate"):
        if model.smear is not None:
            scalar.append(model.smear.gate)
    if feature("smear_gate_v2"):
        if model.smear_gate is not None:  # the gate's (1, window) matrix is a control tensor too
            scalar += [model.smear_gate.weight, model.smear_lambda]
    if feature("skip_gates"):
        if model.skip_gates is not None:
            scalar.append(model.skip_gates)
    if feature("parallel_residuals"):
        if model.parallel_post_lambdas is not None:
            scalar += [model.parallel_post_lambdas, model.parallel_resid_lambdas]
    if feature("bigram_hash"):
        if model.bigram is not None:  # as the records: table with tok_emb, projection on Muon
            tokens.append(model.bigram.embed.weight)
            matrix += [] if model.bigram.proj is None else [model.bigram.proj.weight]
            scalar.append(model.bigram.scale)
    if feature("value_embed"):
        if model.ve_shared is not None:
            tokens.append(model.ve_shared.embed.weight)
            matrix += [] if model.ve_shared.proj is None else [model.ve_shared.proj.weight]
            scalar += [model.ve_shared.scale, *model.ve_layer_scales]
    if feature("untrained"):  # in the model and the state dict, but never stepped (seed 003's SmearGate)
        named, untrained = dict(model.named_parameters()), {n for n in args.untrained_params.split(",") if n}
        if untrained - set(named):
            raise ValueError(f"UNTRAINED_PARAMS names no parameter of the model: {sorted(untrained - set(named))}")
        skip = {id(named[n]) for n in untrained}
        tokens, matrix, scalar = ([p for p in g if id(p) not in skip] for g in (tokens, matrix, scalar))
    token_lr = args.tied_embed_lr if args.tie_embeddings else args.embed_lr
    muon = Muon(matrix, lr=args.matrix_lr, momentum=args.muon_momentum, backend_steps=args.muon_backend_steps)
    muon.param_groups[0]["base_lr"] = args.matrix_lr
    if feature("muon_wd"):
        muon.param_groups[0]["weight_decay"] = args.muon_weight_decay
    if feature("muon_eq_r"):
        muon.param_groups[0]["row_normalize"] = args.muon_row_normalize
    if feature("polar_express"):
        if args.muon_ns == "polar_express":
            muon.ns_kwargs = {"coeffs": POLAR_EXPRESS_COEFFS}
    muon.zeropower = maybe_compile(zeropower_via_newtonschulz5, model.tok_emb.weight.device)
    token_wd = scalar_wd = 0.0
    if feature("adam_wd"):
        token_wd = scalar_wd = args.adam_weight_decay
    if feature("embed_wd"):
        token_wd = args.embed_weight_decay if args.embed_weight_decay > 0 else token_wd
    optimizers = [adam_group(args, tokens, token_lr, token_wd), muon,
                  adam_group(args, scalar, args.scalar_lr, scalar_wd)]
    if model.lm_head is not None:
        optimizers.insert(1, adam_group(args, [model.lm_head.weight], args.head_lr))
    owned = [id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in owned]
    if feature("untrained"):
        missing = [n for n in missing if n not in untrained]
    if missing or len(owned) != len(set(owned)):
        raise ValueError(f"optimizer split must cover each parameter once; unassigned: {missing}")
    return optimizers, muon


def lr_multiplier(args, step: int, elapsed_ms: float) -> float:
    """LR scale: 1, then linear to 0 over the last warmdown_iters steps. With a wallclock cap
    the warmdown is warmdown_iters * (mean step time so far) before the cap."""
    if feature("min_lr"):
        if args.min_lr > 0:  # a floor: the last steps still learn
            return max(lr_schedule(args, step, elapsed_ms), args.min_lr)
    return lr_schedule(args, step, elapsed_ms)


def train_fraction(args, step: int, elapsed_ms: float) -> float:
    """How far training is: elapsed share of the wallclock cap, or of the iterations when uncapped."""
    if args.max_wallclock_seconds > 0:
        return elapsed_ms / (1000.0 * args.max_wallclock_seconds)
    return step / max(args.iterations, 1)


def lr_schedule(args, step: int, elapsed_ms: float) -> float:
    if feature("warmdown_frac"):
        if args.warmdown_frac > 0:  # the records' WARMDOWN_FRAC: linear to 0 over the last fraction
            frac = train_fraction(args, step, elapsed_ms)
            return max(1.0 - frac, 0.0) / args.warmdown_frac if frac >= 1.0 - args.warmdown_frac else 1.0
    if args.warmdown_iters <= 0:
        return 1.0
    if args.max_wallclock_seconds <= 0:
        if max(args.iterations - args.warmdown_iters, 0) <= step < args.iterations:
            return max((args.iterations - step) / max(args.warmdown_iters, 1), 0.0)
        return 1.0
    warmdown_ms = args.warmdown_iters * (elapsed_ms / max(step, 1))
    remaining_ms = max(1000.0 * args.max_wallclock_seconds - elapsed_ms, 0.0)
    return remaining_ms / max(warmdown_ms, 1e-9) if remaining_ms <= warmdown_ms else 1.0


def muon_momentum_at(args, step: int) -> float:
    """Muon momentum, linear from muon_momentum_warmup_start to muon_momentum."""
    steps = args.muon_momentum_warmup_steps
    frac = min(step / steps, 1.0) if steps > 0 else 1.0
    return (1 - frac) * args.muon_momentum_warmup_start + frac * args.muon_momentum
