"""Full-Hessian GPTQ export with SDClip scales, int7 embeddings and int8 per-row gates.

Hessians H = sum x x^T of each quantized matrix's inputs come from calibration batches of
training data after the train stop (time the records count as training: GPTQ_RESERVE_SECONDS
ends the loop early to leave room for it). Each matrix is then quantized column by column with
the GPTQ error feedback: columns in descending order of diag(H) (act-order), blocks of 128, the
rounding error of a column spread over the columns not yet quantized through the upper Cholesky
factor of H^-1 (damped by 1% of the mean diagonal). SDClip: a row's scale is k * std(row) / qmax,
k per tensor class (MLP_CLIP_SIGMAS, ATTN_CLIP_SIGMAS, EMBED_CLIP_SIGMAS, MATRIX_CLIP_SIGMAS),
so values beyond k standard deviations clip. Matrices get MATRIX_BITS (6), the embedding
EMBED_BITS (7). Attention gates (`*.attn_gate_w`, too small for GPTQ) are int8 per row when
GATED_ATTN_QUANT_GATE is set; other small tensors are kept in fp16. A matrix without a Hessian
(an untied embedding table) is rounded to the nearest level with the same scales.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor

from packager.runtime.features import HP, feature
from packager.runtime.lqer import lqer_correct, lqer_dequantize

FEATURES = {
    "gptq": ("full-Hessian GPTQ with SDClip scales from calibration batches of training data", "gptq"),
    "gate_quant": ("int8 per-row attention gate weights instead of fp16", "gated_attn_quant_gate"),
}

HPARAMS = (
    HP("gptq", "GPTQ_ENABLED", "export.gptq", bool, False, feature="gptq",
       doc="GPTQ export (int6 matrices, int7 embedding, SDClip) instead of the per-row int8 baseline"),
    HP("gptq_calibration_batches", "GPTQ_CALIBRATION_BATCHES", "export.gptq_calibration_batches", int, 16,
       feature="gptq", doc="training batches per rank that feed the Hessians", minimum=1, smoke=2),
    HP("gptq_reserve_seconds", "GPTQ_RESERVE_SECONDS", "export.gptq_reserve_seconds", float, 0.0, feature="gptq",
       doc="seconds of the training cap left for Hessian collection, which reads training data", minimum=0.0),
    HP("gptq_block_size", "GPTQ_BLOCK_SIZE", "export.gptq_block_size", int, 128, feature="gptq",
       doc="columns per GPTQ block (lazy batch update)", minimum=1),
    HP("gptq_act_order", "GPTQ_ACT_ORDER", "export.gptq_act_order", bool, True, feature="gptq",
       doc="quantize columns in descending order of the Hessian diagonal"),
    HP("matrix_bits", "MATRIX_BITS", "export.matrix_bits", int, 6, feature="gptq", choices=(4, 5, 6, 7, 8),
       doc="width of the GPTQ block matrices"),
    HP("embed_bits", "EMBED_BITS", "export.embed_bits", int, 8, feature="gptq", choices=(4, 5, 6, 7, 8),
       doc="width of the token embedding"),
    HP("matrix_clip_sigmas", "MATRIX_CLIP_SIGMAS", "export.matrix_clip_sigmas", float, 12.85, feature="gptq",
       doc="SDClip: row scale = k * std / qmax for matrices outside attention and MLP", minimum=0.0),
    HP("mlp_clip_sigmas", "MLP_CLIP_SIGMAS", "export.mlp_clip_sigmas", float, 10.0, feature="gptq",
       doc="SDClip k of the MLP matrices", minimum=0.0),
    HP("attn_clip_sigmas", "ATTN_CLIP_SIGMAS", "export.attn_clip_sigmas", float, 13.0, feature="gptq",
       doc="SDClip k of the attention matrices", minimum=0.0),
    HP("embed_clip_sigmas", "EMBED_CLIP_SIGMAS", "export.embed_clip_sigmas", float, 20.0, feature="gptq",
       doc="SDClip k of the token embedding", minimum=0.0),
    HP("gated_attn_quant_gate", "GATED_ATTN_QUANT_GATE", "export.gated_attn_quant_gate", bool, False,
       feature="gate_quant", doc="attention gate weights as int8 per row (else fp16)"),
)

QUANT_FORMAT_GPTQ = "gptq_sdclip_v1"
GPTQ_MIN_NUMEL = 65_536  # smaller float tensors stay fp16, as in the records
GATE_SUFFIX = ".attn_gate_w"
GATE_NUMEL = (32, 8192)  # dense (heads x dim) and sparse (heads x gate_window) gates both fit


def clip_sigmas_for(args, name: str) -> float:
    if "tok_emb" in name:
        return args.embed_clip_sigmas
    if ".mlp." in name:
        return args.mlp_clip_sigmas
    return args.attn_clip_sigmas if ".attn." in name else args.matrix_clip_sigmas


def sdclip_scales(w: Tensor, clip_sigmas: float, qmax: int) -> Tensor:
    """fp16 row scales: k standard deviations of the row map to the largest level."""
    return (clip_sigmas * w.float().std(dim=1) / qmax).clamp_min(1e-10).to(torch.float16)


def gptq_quantize(w: Tensor, hessian: Tensor | None, clip_sigmas: float, bits: int, block_size: int = 128,
                  act_order: bool = True) -> tuple[Tensor, Tensor]:
    """(int8 levels, fp16 row scales) of a matrix; hessian None rounds to nearest with the same scales."""
    qmax = 2 ** (bits - 1) - 1
    scale = sdclip_scales(w, clip_sigmas, qmax)
    sf = scale.float()[:, None]
    if hessian is None:
        return torch.clamp(torch.round(w.float() / sf), -qmax, qmax).to(torch.int8), scale
    W, H = w.float().clone(), hessian.float().clone()
    cols = W.shape[1]
    dead = H.diag() == 0  # inputs that never fired: any value there is free, so zero it
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(0.01 * H.diag().mean())
    perm = torch.argsort(H.diag(), descending=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    # Upper Cholesky factor of H^-1: row j holds how column j's error moves the later columns.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W, dtype=torch.int8)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        Wb, err = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1)
        for j in range(i2 - i1):
            q = torch.clamp(torch.round(Wb[:, j : j + 1] / sf), -qmax, qmax)
            Q[:, i1 + j] = q[:, 0].to(torch.int8)
            e = (Wb[:, j : j + 1] - q * sf) / U[i1 + j, i1 + j]
            Wb[:, j:] -= e * U[i1 + j, i1 + j : i2][None, :]
            err[:, j] = e[:, 0]
        W[:, i2:] -= err @ U[i1:i2, i2:]  # the block's errors reach the later blocks at once
    return Q[:, torch.argsort(perm)].contiguous(), scale


def quantize_gate_rows(w: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row in [-127, 127] with fp16 scales (the row max)."""
    scale = (w.float().abs().amax(dim=1).clamp_min(1e-10) / 127.0).to(torch.float16)
    return torch.clamp(torch.round(w.float() / scale.float()[:, None]), -127, 127).to(torch.int8), scale


def is_gate(args, name: str, t: Tensor) -> bool:
    if feature("gate_quant"):
        return (args.gated_attn_quant_gate and t.ndim == 2 and name.endswith(GATE_SUFFIX)
                and GATE_NUMEL[0] <= t.numel() <= GATE_NUMEL[1])
    return False


def quantize_state_dict_gptq(args, state_dict: dict[str, Tensor], hessians: dict | None) -> tuple[dict, dict]:
    """The export object {format, tensors, kinds, dtypes} and stats; kinds name each tensor's path."""
    hessians = hessians or {}
    tensors, kinds, dtypes, errors = {}, {}, {}, {}
    for name, t in state_dict.items():
        t = t.detach().to("cpu").contiguous()
        dtypes[name] = str(t.dtype).removeprefix("torch.")
        if t.is_floating_point() and is_gate(args, name, t):
            tensors[name + ".q"], tensors[name + ".scale"] = quantize_gate_rows(t)
            kinds[name] = "gate_int8_row"
        elif not t.is_floating_point() or t.numel() <= GPTQ_MIN_NUMEL or t.ndim != 2:
            tensors[name] = t.to(torch.float16) if t.is_floating_point() else t
            kinds[name] = "passthrough"
        else:
            bits = args.embed_bits if "tok_emb" in name else args.matrix_bits
            q, s = gptq_quantize(t, hessians.get(name), clip_sigmas_for(args, name), bits, args.gptq_block_size,
                                 args.gptq_act_order)
            tensors[name + ".q"], tensors[name + ".scale"] = q, s
            kinds[name] = f"gptq{bits}" if name in hessians else f"rtn{bits}"
            errors[name] = t.float() - q.float() * s.float()[:, None]
    if feature("lqer"):
        lqer_correct(args, errors, tensors, kinds)
    obj = {"__quant_format__": QUANT_FORMAT_GPTQ, "tensors": tensors, "kinds": kinds, "dtypes": dtypes}
    stats = {"kinds": kinds, "param_count": sum(t.numel() for t in state_dict.values()), "num_tensors": len(state_dict),
             "num_float_tensors": len(errors), "int8_payload_bytes": sum(t.nbytes for t in tensors.values())}
    return obj, stats


def dequantize_state_dict_gptq(obj: dict) -> dict[str, Tensor]:
    out = {}
    tensors = obj["tensors"]
    for name, kind in obj["kinds"].items():
        dtype = getattr(torch, obj["dtypes"][name])
        if kind == "passthrough":
            out[name] = tensors[name].to(dtype)
            continue
        w = tensors[name + ".q"].float() * tensors[name + ".scale"].float()[:, None]
        if feature("lqer"):
            w = w + lqer_dequantize(tensors, name, kind)
        out[name] = w.to(dtype).contiguous()
    return out


def kind_summary(kinds: dict[str, str]) -> list[str]:
    """One line per export path, block indices folded: 'gptq6: blocks.attn.c_q.weight, ...'."""
    groups: dict[str, set] = {}
    for name, kind in kinds.items():
        short = ".".join(p for p in name.split(".") if not p.isdigit())
        groups.setdefault(kind, set()).add(short)
    return [f"  {kind}: {', '.join(sorted(names))}" for kind, names in sorted(groups.items())]


def quantized_linears(model: nn.Module) -> dict[str, nn.Module]:
    """{weight name: module} of the linear layers GPTQ quantizes (2-D, > 65,536 weights)."""
    return {f"{n}.weight": m for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and m.weight.numel() > GPTQ_MIN_NUMEL}


def collect_hessians(args, model: nn.Module, loader, grad_accum_steps: int, device) -> dict[str, Tensor]:
    """{weight name: mean x x^T} over calibration batches of training data, summed over ranks.

    Inputs are hooked on every quantized linear layer (a layer run twice by depth recurrence adds
    both passes); a tied embedding's Hessian is the final norm's output, the head's input."""
    sums: dict[str, Tensor] = {}

    def add(name: str, x: Tensor) -> None:
        x = x.detach().float().reshape(-1, x.shape[-1])
        if name not in sums:
            sums[name] = torch.zeros(x.shape[1], x.shape[1], device=x.device)
        sums[name].addmm_(x.T, x)

    hooks = [m.register_forward_pre_hook(lambda m, inp, name=name: add(name, inp[0]))
             for name, m in quantized_linears(model).items()]
    if getattr(model, "lm_head", None) is None and model.tok_emb.weight.numel() > GPTQ_MIN_NUMEL:
        hooks.append(model.final_norm.register_forward_hook(lambda m, inp, out: add("tok_emb.weight", out)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(args.gptq_calibration_batches):
                x = loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)[0]
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    out = {}
    for name in sorted(sums):  # the same order on every rank for the all-reduce
        h = sums[name]
        if world > 1:
            dist.all_reduce(h)
        out[name] = (h / (args.gptq_calibration_batches * world)).cpu()
    return out


def timed_hessians(args, model, loader, grad_accum_steps, device, log0) -> tuple[dict, float]:
    """Hessians and the milliseconds they took (training time: they read training data)."""
    t0 = time.perf_counter()
    log0("GPTQ:collecting Hessians from calibration data...")
    hessians = collect_hessians(args, model, loader, grad_accum_steps, device)
    ms = 1000.0 * (time.perf_counter() - t0)
    log0(f"GPTQ:collected {len(hessians)} Hessians in {ms / 1000:.1f}s")
    return hessians, ms
