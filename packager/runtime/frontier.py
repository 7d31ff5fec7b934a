"""The #1530 lineage's architecture: depth recurrence, parallel residual lanes, gates, RoPE tables.

The April records (#1530 -> #1855 / #1868) share these blocks, each behind the env var they use:
- depth recurrence (NUM_LOOPS, LOOP_START, LOOP_END, ENABLE_LOOPING_AT): once training passes a
  fraction of its budget, blocks loop_start..loop_end run 1 + num_loops times, the same modules
  (shared parameters); the U-Net halves are cut from the longer schedule;
- parallel residuals (PARALLEL_START_LAYER, PARALLEL_FINAL_LANE): from that block on the decoder
  keeps two lanes, attention reads lane 0 and the MLP lane 1 (in parallel), and learned
  per-block lambdas mix both outputs into both lanes; the final hidden is their mean;
- sigmoid skip gates (SKIP_GATES_ENABLED): a U-Net skip enters as lerp(skip, x, sigmoid(g));
- head gates on the attention output before its projection: AttnOutGate (2 sigmoid of the first
  GATE_WINDOW dims), dense GatedAttn (sigmoid of the whole input) and SparseAttnGate (sigmoid of a
  scaled projection of the first GATE_WINDOW dims), one per recipe;
- SmearGate v2 (SMEAR_GATE_ENABLED): x_t += lambda * sigmoid(W x_t[:GATE_WINDOW]) * x_{t-1} on the
  embeddings, with the BOS mask of #1851/#1855: a document's BOS never receives the previous
  document's last token;
- RoPE tables as these records build them (ROPE_TRAIN_SEQ_LEN, ROPE_YARN): fp32 positions (packed
  rows are long) and, with YaRN, the base stretched by (T / train_len)^(d / (d - 2)) past the
  training length (the March seeds' NTK scaling too: ROPE_TRAIN_SEQ_LEN=1024, ROPE_YARN=1, with
  ROPE_FP32_POSITIONS=0 for their bf16 positions below it).
Parameter names follow the records (skip_gates, parallel_post_lambdas, parallel_resid_lambdas,
smear_gate, smear_lambda, attn_gate_w, attn_gate_proj), so state dicts map one to one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.data import BOS_ID
from packager.runtime.features import HP, feature

FEATURES = {
    "depth_recurrence": ("blocks loop_start..loop_end run 1 + num_loops times (shared weights) once "
                         "training passes enable_looping_at", "num_loops > 0"),
    "parallel_residuals": ("two-lane decoder from parallel_start_layer on: attention and MLP in parallel, "
                           "learned lane mix", "parallel_start_layer > 0"),
    "skip_gates": ("sigmoid gates on the U-Net skips", "skip_gates"),
    "head_gates": ("a per-head sigmoid gate on the attention output", "attn_out_gate or gated_attn or sparse_attn_gate"),
    "attn_out_gate": ("AttnOutGate: 2 sigmoid(W x[:gate_window]) per head", "attn_out_gate"),
    "gated_attn": ("GatedAttn: sigmoid(W x) per head from the whole input", "gated_attn"),
    "sparse_attn_gate": ("SparseAttnGate: sigmoid(scale W x[:gate_window]) per head", "sparse_attn_gate"),
    "gate_window": ("the narrow gates read the first gate_window residual dims",
                    "attn_out_gate or sparse_attn_gate or smear_gate_v2"),
    "smear_gate_v2": ("SmearGate v2: input-dependent smear of the previous token, masked at BOS", "smear_gate_v2"),
    "rope_train_len": ("RoPE built for rope_train_seq_len: fp32 positions, YaRN/NTK base rescale past it",
                       "rope_train_seq_len > 0"),
}

HPARAMS = (
    HP("num_loops", "NUM_LOOPS", "model.num_loops", int, 0, feature="depth_recurrence", minimum=0,
       doc="extra passes over blocks loop_start..loop_end once looping is on (0: none)"),
    HP("loop_start", "LOOP_START", "model.loop_start", int, 3, feature="depth_recurrence", minimum=0,
       doc="first block of the looped span", smoke=0),
    HP("loop_end", "LOOP_END", "model.loop_end", int, 5, feature="depth_recurrence", minimum=0,
       doc="last block of the looped span (inclusive)", smoke=1),
    HP("enable_looping_at", "ENABLE_LOOPING_AT", "model.enable_looping_at", float, 0.35, feature="depth_recurrence",
       minimum=0.0, doc="looping starts at this fraction of the wallclock cap (of iterations if uncapped)"),
    HP("parallel_start_layer", "PARALLEL_START_LAYER", "model.parallel_start_layer", int, 0,
       feature="parallel_residuals", minimum=0, doc="first block of the two-lane decoder (0: none)", smoke=1),
    HP("parallel_final_lane", "PARALLEL_FINAL_LANE", "model.parallel_final_lane", str, "mean",
       feature="parallel_residuals", choices=("mean", "attn", "mlp"), doc="final hidden: mean of the lanes, or one"),
    HP("skip_gates", "SKIP_GATES_ENABLED", "model.skip_gates", bool, False, feature="skip_gates",
       doc="skips enter as lerp(skip, x, sigmoid(g)), g zero-init per channel"),
    HP("gate_window", "GATE_WINDOW", "model.gate_window", int, 12, feature="gate_window", minimum=1,
       doc="residual dims read by AttnOutGate, SparseAttnGate and SmearGate v2"),
    HP("attn_out_gate", "ATTN_OUT_GATE_ENABLED", "model.attn_out_gate", bool, False, feature="attn_out_gate",
       doc="AttnOutGate: y_h *= 2 sigmoid(W_h src[:gate_window]), W zero-init"),
    HP("attn_out_gate_src", "ATTN_OUT_GATE_SRC", "model.attn_out_gate_src", str, "proj", feature="attn_out_gate",
       choices=("proj", "q"), doc="AttnOutGate input: the block input (proj) or the raw query projection (q)"),
    HP("gated_attn", "GATED_ATTN_ENABLED", "model.gated_attn", bool, False, feature="gated_attn",
       doc="GatedAttn: y_h *= sigmoid(W_h x), W (heads, model_dim)"),
    HP("gated_attn_init_std", "GATED_ATTN_INIT_STD", "model.gated_attn_init_std", float, 0.01, feature="gated_attn",
       minimum=0.0, doc="std of GatedAttn's normal init"),
    HP("sparse_attn_gate", "SPARSE_ATTN_GATE_ENABLED", "model.sparse_attn_gate", bool, False,
       feature="sparse_attn_gate", doc="SparseAttnGate: y_h *= sigmoid(scale W_h x[:gate_window])"),
    HP("sparse_attn_gate_init_std", "SPARSE_ATTN_GATE_INIT_STD", "model.sparse_attn_gate_init_std", float, 0.0,
       feature="sparse_attn_gate", minimum=0.0, doc="std of the gate's normal init (0: zeros)"),
    HP("sparse_attn_gate_scale", "SPARSE_ATTN_GATE_SCALE", "model.sparse_attn_gate_scale", float, 1.0,
       feature="sparse_attn_gate", doc="scale inside the sigmoid"),
    HP("smear_gate_v2", "SMEAR_GATE_ENABLED", "model.smear_gate_v2", bool, False, feature="smear_gate_v2",
       doc="SmearGate v2 on the embeddings (lambda and W zero-init: off at init)"),
    HP("smear_bos_mask", "SMEAR_GATE_BOS_MASK", "model.smear_bos_mask", bool, True, feature="smear_gate_v2",
       doc="a BOS takes nothing from the previous document (the #1851 fix; the records hard-code it, 0 "
           "reproduces the leaky #1667-#1797 gate)"),
    HP("rope_train_seq_len", "ROPE_TRAIN_SEQ_LEN", "model.rope_train_seq_len", int, 0, feature="rope_train_len",
       minimum=0, doc="RoPE's training length: fp32 positions; YaRN rescales past it (0: the baseline tables)",
       smoke=64),
    HP("rope_yarn", "ROPE_YARN", "model.rope_yarn", bool, False, feature="rope_train_len",
       doc="YaRN/NTK: base * (T / rope_train_seq_len)^(d / (d - 2)) for sequences longer than that"),
    HP("rope_fp32_positions", "ROPE_FP32_POSITIONS", "model.rope_fp32_positions", bool, True,
       feature="rope_train_len", doc="positions in fp32 up to rope_train_seq_len (the April records); false: in "
       "the RoPE buffer's dtype, bf16 after model.bfloat16() (seeds 000, 002)"),
)


# ---------------------------------------------------------------- depth recurrence

def loop_schedule(args) -> tuple[list[int], list[int]]:
    """(encoder, decoder) block indices with the span looped: 0..end, the span num_loops more times, the rest."""
    if not 0 <= args.loop_start <= args.loop_end < args.num_layers:
        raise ValueError(f"LOOP_START={args.loop_start}, LOOP_END={args.loop_end} must satisfy "
                         f"0 <= start <= end < NUM_LAYERS={args.num_layers}")
    span = list(range(args.loop_start, args.loop_end + 1))
    order = list(range(args.loop_start)) + span * (args.num_loops + 1) + list(range(args.loop_end + 1, args.num_layers))
    return order[: len(order) // 2], order[len(order) // 2 :]


def looping_due(args, model, frac: float) -> bool:
    """True once, at the first step whose training fraction reaches enable_looping_at."""
    return args.num_loops > 0 and not model.looping_active and frac >= args.enable_looping_at


# ---------------------------------------------------------------- skips and parallel lanes

def gate_skip(model, x: Tensor, skip: Tensor, j: int) -> Tensor:
    """x + skip, or with a skip gate lerp(skip, x, sigmoid(g)): g = 0 at init weighs both halves."""
    if model.skip_gates is None:
        return x + skip
    return torch.lerp(skip, x, torch.sigmoid(model.skip_gates[j].to(x.dtype)))


def init_parallel_lanes(model, args) -> None:
    """Per-block lane lambdas (for every block, as the records, though only the parallel ones train)."""
    model.parallel_start = args.parallel_start_layer
    model.parallel_final_lane = args.parallel_final_lane
    if not 0 <= args.parallel_start_layer < args.num_layers:
        raise ValueError(f"PARALLEL_START_LAYER={args.parallel_start_layer} must be below NUM_LAYERS={args.num_layers}")
    on = args.parallel_start_layer > 0
    # post[i, branch, lane]: how much of block i's attention (0) / MLP (1) output each lane takes.
    model.parallel_post_lambdas = nn.Parameter(torch.ones(args.num_layers, 2, 2)) if on else None
    model.parallel_resid_lambdas = nn.Parameter(torch.full((args.num_layers, 2), 1.1)) if on else None


def parallel_block(model, i: int, lane0: Tensor, lane1: Tensor, x0: Tensor, ve=None, cu_seqlens=None):
    """Block i on two lanes: attention reads lane 0 (mixed with x0), the MLP reads lane 1; both write both."""
    block, dt = model.blocks[i], lane0.dtype
    mix = block.resid_mix.to(dt)
    attn = block.attn_scale.to(dt) * block.attn(block.normed(block.attn_norm, mix[0] * lane0 + mix[1] * x0), ve,
                                                 cu_seqlens)
    mlp = block.mlp_scale.to(dt) * block.mlp(block.normed(block.mlp_norm, lane1))
    resid, post = model.parallel_resid_lambdas[i].to(dt), model.parallel_post_lambdas[i].to(dt)
    return (resid[0] * lane0 + post[0, 0] * attn + post[1, 0] * mlp,
            resid[1] * lane1 + post[0, 1] * attn + post[1, 1] * mlp)


def final_lane(model, lane0: Tensor, lane1: Tensor) -> Tensor:
    return {"attn": lane0, "mlp": lane1}.get(model.parallel_final_lane, 0.5 * (lane0 + lane1))


# ---------------------------------------------------------------- head gates

def init_head_gate(attn, args) -> None:
    """The attention module's output gate: at most one kind per recipe."""
    kinds = []
    if feature("attn_out_gate"):
        kinds += ["attn_out"] if args.attn_out_gate else []
    if feature("gated_attn"):
        kinds += ["gated"] if args.gated_attn else []
    if feature("sparse_attn_gate"):
        kinds += ["sparse"] if args.sparse_attn_gate else []
    if len(kinds) > 1:
        raise ValueError(f"attention output gates {kinds} are mutually exclusive: enable at most one")
    attn.head_gate = kinds[0] if kinds else None
    heads = args.num_heads
    if feature("attn_out_gate"):
        if attn.head_gate == "attn_out":  # zero weight: 2 sigmoid(0) = 1, transparent at init
            attn.attn_gate_proj = nn.Linear(args.gate_window, heads, bias=False)
            nn.init.zeros_(attn.attn_gate_proj.weight)
            attn.attn_gate_src = args.attn_out_gate_src
    if feature("gated_attn"):
        if attn.head_gate == "gated":  # near-zero init: each head passes about half at step 0
            attn.attn_gate_w = nn.Parameter(nn.init.normal_(torch.empty(heads, args.model_dim), std=args.gated_attn_init_std))
    if feature("sparse_attn_gate"):
        if attn.head_gate == "sparse":
            attn.attn_gate_w = nn.Parameter(torch.zeros(heads, args.gate_window))
            if args.sparse_attn_gate_init_std > 0:
                nn.init.normal_(attn.attn_gate_w, std=args.sparse_attn_gate_init_std)
            attn.attn_gate_scale = args.sparse_attn_gate_scale
    if feature("gate_window"):
        attn.gate_window = args.gate_window


def gate_heads(attn, x: Tensor, q_raw: Tensor, y: Tensor) -> Tensor:
    """y (B, T, H, D) scaled per token and head by the module's gate, read from its input x."""
    if feature("attn_out_gate"):
        if attn.head_gate == "attn_out":
            src = (q_raw if attn.attn_gate_src == "q" else x)[..., : attn.gate_window].contiguous()
            return y * (2.0 * torch.sigmoid(F.linear(src, attn.attn_gate_proj.weight.to(x.dtype))))[..., None]
    if feature("gated_attn"):
        if attn.head_gate == "gated":
            return y * torch.sigmoid(F.linear(x.contiguous(), attn.attn_gate_w.to(x.dtype)))[..., None]
    if feature("sparse_attn_gate"):
        if attn.head_gate == "sparse":
            g = F.linear(x[..., : attn.gate_window].contiguous(), attn.attn_gate_w.to(x.dtype))
            return y * torch.sigmoid(attn.attn_gate_scale * g)[..., None]
    return y


# ---------------------------------------------------------------- SmearGate v2

def init_smear_v2(model, args) -> None:
    on = args.smear_gate_v2
    model.smear_window, model.smear_bos_mask = args.gate_window, args.smear_bos_mask
    # W (1, window) and lambda zero-init: the gate is off at step 0 and learns how much to smear.
    model.smear_gate = nn.Linear(args.gate_window, 1, bias=False) if on else None
    if on:
        nn.init.zeros_(model.smear_gate.weight)
    model.smear_lambda = nn.Parameter(torch.zeros(1)) if on else None


def smear_previous(model, x: Tensor, input_ids: Tensor) -> Tensor:
    """x_t + lambda sigmoid(W x_t[:window]) x_{t-1}; position 0 and (with the mask) every BOS unchanged."""
    gate_in = x[:, 1:, : model.smear_window].contiguous()
    g = model.smear_lambda.to(x.dtype) * torch.sigmoid(F.linear(gate_in, model.smear_gate.weight.to(x.dtype)))
    if model.smear_bos_mask:  # a new document's BOS must not carry the previous document's last token
        g = g * (input_ids[:, 1:, None] != BOS_ID).to(x.dtype)
    return torch.cat((x[:, :1], x[:, 1:] + g * x[:, :-1]), dim=1)


# ---------------------------------------------------------------- RoPE tables

def rope_frequencies(rotary, seq_len: int, inv_freq: Tensor) -> Tensor:
    """The frequencies of a Rotary built for rotary.train_seq_len (the seeds and the April records alike).
    Past that length with YaRN/NTK the base grows to base * s^(d/(d-2)), s = T / train_len, and the
    frequencies are recomputed in fp32 from it; below it they are the buffer's, in fp32 (the April
    records, fp32 positions) or, without fp32_positions, in its dtype (bf16 after model.bfloat16(): seeds 000, 002)."""
    if rotary.yarn and seq_len > rotary.train_seq_len:
        d = 2 * inv_freq.numel()
        base = rotary.base * (seq_len / rotary.train_seq_len) ** (d / (d - 2))
        return 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float32, device=inv_freq.device) / d))
    return inv_freq.float() if rotary.fp32_positions else inv_freq
