"""Test-time training (TTT) at final evaluation.

Legal variants score every token before any update that saw it (README; C1-C4 of thread
#1017): per-document LoRA (a chunk is scored, then one step on it; a document's last chunk is
never trained), seed 003's LoRA as it ran it (each document alone, each chunk with only itself as
context), score-first chunk TTT (all windows of a 32K chunk scored under inference mode, then SGD
epochs on it; the last chunk is never trained) and a score-first form of the two-phase TTT of
seed 000. `pre_eval` (seed 002's first version) and `two_phase_pre_eval` (seed 000 as submitted)
train on the whole validation set before scoring it: illegal, present only to reproduce such
submissions for the verifier. Every variant returns (val_loss, val_bpb) computed from the scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.bpb import finish_scores, target_bytes
from packager.runtime.data import BOS_ID
from packager.runtime.evaluate import eval_window, eval_windows, rank_share, score_windows
from packager.runtime.features import HP, feature
from packager.runtime.phased import eval_ttt_phased
from packager.runtime.qat import set_qat
from packager.runtime.system import all_reduce_, autocast_ctx

FEATURES = {
    "ttt": ("test-time training during the final evaluation", "ttt_mode != 'none'"),
    "ttt_lora": ("per-document LoRA TTT, score a chunk then one step on it", "ttt_mode == 'lora'"),
    "ttt_doc_lora": ("per-document LoRA adapters scored chunk by chunk (lora and phased TTT)",
                     "ttt_mode in ('lora', 'phased')"),
    "ttt_lora_chunks": ("seed 003's LoRA TTT: each document alone, each chunk attending to itself only",
                        "ttt_mode == 'lora_chunks'"),
    "ttt_lora_any": ("LoRA adapters (rank, LR, chunk length)", "ttt_mode in ('lora', 'lora_chunks', 'phased')"),
    "ttt_lora_targets": ("LoRA on the layers ttt_lora_targets names", "ttt_mode in ('lora', 'lora_chunks')"),
    "ttt_chunked": ("score-first chunk TTT: score a chunk's windows, then SGD on it", "ttt_mode == 'chunked'"),
    "ttt_two_phase": ("two-phase TTT: norms and scales (Adam), then last blocks + head (SGD)",
                      "ttt_mode in ('two_phase', 'two_phase_pre_eval')"),
    "ttt_two_phase_score_first": ("the two phases run score-first, chunk by chunk", "ttt_mode == 'two_phase'"),
    "ttt_two_phase_pre_eval": ("ILLEGAL two-phase TTT on all validation tokens, then scoring (seed 000)",
                               "ttt_mode == 'two_phase_pre_eval'"),
    "ttt_pre_eval": ("ILLEGAL pre-eval TTT: AdamW epochs on all validation tokens, then scoring (seed 002 v1)",
                     "ttt_mode == 'pre_eval'"),
    "ttt_illegal": ("TTT that trains on unscored validation tokens", "ttt_mode in ('pre_eval', 'two_phase_pre_eval')"),
    "ttt_full": ("full-weight TTT by batches of validation sequences",
                 "ttt_mode in ('chunked', 'two_phase', 'pre_eval', 'two_phase_pre_eval')"),
    "ttt_score_first": ("validation split into TTT chunks", "ttt_mode in ('chunked', 'two_phase')"),
    "ttt_epochs": ("TTT epochs and LR of one optimizer", "ttt_mode in ('chunked', 'pre_eval')"),
    "ttt_sgd": ("one SGD optimizer over the TTT weights", "ttt_mode == 'chunked'"),
}

HPARAMS = (
    HP("ttt_mode", "TTT_MODE", "ttt.mode", str, "none", feature="ttt", doc="test-time training variant",
       choices=("none", "lora", "lora_chunks", "chunked", "two_phase", "pre_eval", "two_phase_pre_eval", "phased")),
    HP("ttt_lora_rank", "TTT_LORA_RANK", "ttt.lora_rank", int, 8, feature="ttt_lora_any", doc="LoRA rank", minimum=1),
    HP("ttt_lora_targets", "TTT_LORA_TARGETS", "ttt.lora_targets", str, "q,v,head", feature="ttt_lora_targets",
       doc="adapted layers: q, k, v, o (attention), fc, proj (MLP), head (lora only)"),
    HP("ttt_lora_lr", "TTT_LORA_LR", "ttt.lora_lr", float, 0.01, feature="ttt_lora_any", doc="Adam LR of the adapters"),
    HP("ttt_chunk_len", "TTT_CHUNK_LEN", "ttt.chunk_len", int, 256, feature="ttt_lora_any",
       doc="tokens scored per LoRA step", minimum=1, smoke=128),
    HP("ttt_batch_docs", "TTT_BATCH_DOCS", "ttt.batch_docs", int, 64, feature="ttt_doc_lora",
       doc="documents adapted side by side, each with its own adapters", minimum=1, smoke=16),
    HP("ttt_min_doc_len", "TTT_MIN_DOC_LEN", "ttt.min_doc_len", int, 32, feature="ttt_lora_chunks", minimum=1,
       doc="documents of fewer tokens are scored in one pass without adaptation"),
    HP("ttt_score_all", "TTT_SCORE_ALL", "ttt.score_all", bool, True, feature="ttt_lora_chunks",
       doc="score every target; false: as seed 003, not documents of < 5 tokens, 1-token chunks, next-BOS targets"),
    HP("ttt_chunk_tokens", "TTT_CHUNK_TOKENS", "ttt.chunk_tokens", int, 32768, feature="ttt_score_first",
       doc="tokens scored before each round of TTT updates", minimum=1, smoke=4096),
    HP("ttt_batch_seqs", "TTT_BATCH_SEQS", "ttt.batch_seqs", int, 32, feature="ttt_full",
       doc="sequences per rank per TTT step (and windows per scoring pass)", minimum=1),
    HP("ttt_grad_clip", "TTT_GRAD_CLIP", "ttt.grad_clip", float, 0.0, feature="ttt_full",
       doc="gradient-norm clip of TTT steps (0: none)", minimum=0.0),
    HP("ttt_epochs", "TTT_EPOCHS", "ttt.epochs", int, 0, feature="ttt_epochs",
       doc="passes per chunk (pre_eval: over the whole split)", minimum=0, smoke=1),
    HP("ttt_lr", "TTT_LR", "ttt.lr", float, 0.002, feature="ttt_epochs", doc="SGD LR (pre_eval: AdamW LR)"),
    HP("ttt_momentum", "TTT_MOMENTUM", "ttt.momentum", float, 0.9, feature="ttt_sgd", doc="SGD momentum"),
    HP("ttt_cosine", "TTT_COSINE", "ttt.cosine", bool, False, feature="ttt_full",
       doc="cosine-decay the LR: chunked over chunks, two_phase over each phase's epochs, pre_eval over steps"),
    HP("ttt_freeze_blocks", "TTT_FREEZE_BLOCKS", "ttt.freeze_blocks", int, 0, feature="ttt_sgd",
       doc="first blocks left untrained", minimum=0),
    HP("ttt_lr_groups", "TTT_LR_GROUPS", "ttt.lr_groups", str, "", feature="ttt_pre_eval",
       doc='LR multipliers by name part, first match wins, e.g. "mlp.proj:3,mlp.fc:0.5" (seed 002 v1)'),
    HP("ttt_phase1_epochs", "TTT_P1_EPOCHS", "ttt.phase1_epochs", int, 0, feature="ttt_two_phase",
       doc="phase 1 (norms, scales, mixes; Adam) epochs (per chunk when score-first)", minimum=0, smoke=1),
    HP("ttt_phase1_lr", "TTT_P1_LR", "ttt.phase1_lr", float, 0.01, feature="ttt_two_phase"),
    HP("ttt_phase2_epochs", "TTT_P2_EPOCHS", "ttt.phase2_epochs", int, 0, feature="ttt_two_phase",
       doc="phase 2 (last blocks + phase 1 + head; SGD) epochs (per chunk when score-first)", minimum=0, smoke=1),
    HP("ttt_phase2_lr", "TTT_P2_LR", "ttt.phase2_lr", float, 0.003, feature="ttt_two_phase"),
    HP("ttt_phase2_momentum", "TTT_P2_MOMENTUM", "ttt.phase2_momentum", float, 0.95, feature="ttt_two_phase"),
    HP("ttt_phase2_last_k", "TTT_P2_UNFREEZE_LAST", "ttt.phase2_last_k", int, 2, feature="ttt_two_phase",
       doc="blocks (from the top) trained in phase 2", minimum=0, smoke=1),
    HP("ttt_allow_illegal", "TTT_ALLOW_ILLEGAL", "ttt.allow_illegal_ttt", bool, False, feature="ttt_illegal",
       doc="acknowledge that pre-eval TTT trains on unscored validation tokens (non-record only)"),
)

LORA_LAYERS = {"q": "attn.c_q", "k": "attn.c_k", "v": "attn.c_v", "o": "attn.proj", "fc": "mlp.fc", "proj": "mlp.proj"}


def eval_ttt(args, model, rank, world_size, device, val_tokens, luts, log0) -> tuple[str, float, float]:
    """(log label, val_loss, val_bpb) of the recipe's TTT mode, run on the bare (uncompiled) GPT."""
    run = (args, model, rank, world_size, device, val_tokens, luts, log0)
    if feature("qat"):
        set_qat(model, args.ttt_qat)  # acts in training mode only: the TTT steps, never the scoring
    if feature("ttt_illegal"):
        if args.ttt_mode in ("pre_eval", "two_phase_pre_eval"):
            if not args.ttt_allow_illegal:
                raise ValueError(f"TTT_MODE={args.ttt_mode} trains on validation tokens before scoring them; "
                                 "set ttt.allow_illegal_ttt (non-record track only) to run it")
            log0(f"ttt_{args.ttt_mode}: WARNING training on validation tokens before scoring them is not allowed "
                 "for records (README; pre-eval TTT, thread #677)")
    if feature("ttt_lora"):
        if args.ttt_mode == "lora":
            return ("final_ttt_lora", *eval_ttt_lora(*run))
    if feature("ttt_lora_chunks"):
        if args.ttt_mode == "lora_chunks":
            return ("final_ttt", *eval_ttt_lora_chunks(*run))
    if feature("ttt_chunked"):
        if args.ttt_mode == "chunked":
            return ("legal_ttt", *eval_ttt_chunked(*run))
    if feature("ttt_two_phase_score_first"):
        if args.ttt_mode == "two_phase":
            return ("final_ttt_two_phase", *eval_ttt_two_phase(*run))
    if feature("ttt_two_phase_pre_eval"):
        if args.ttt_mode == "two_phase_pre_eval":
            return ("final_ttt_two_phase_pre_eval", *eval_ttt_two_phase_pre_eval(*run))
    if feature("ttt_pre_eval"):
        if args.ttt_mode == "pre_eval":
            return ("final_ttt_pre_eval", *eval_ttt_pre_eval(*run))
    if feature("ttt_phased"):
        if args.ttt_mode == "phased":
            return ("quantized_ttt_phased", *eval_ttt_phased(*run, lora_batch))
    raise ValueError(f"TTT_MODE={args.ttt_mode!r} is not built into this script")


def ttt_epoch(args, model, params: list, opt, val_tokens, lo: int, hi: int, rank, world_size, device) -> int:
    """Steps over the rows of targets [lo, hi), each on the mean gradient of all ranks' rows; returns the steps."""
    seq_len, step_rows = args.train_seq_len, args.ttt_batch_seqs * world_size
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in params))
    model.train()
    for r0 in range(0, (hi - lo) // seq_len, step_rows):
        r1 = min(r0 + step_rows, (hi - lo) // seq_len)
        a, b = r0 + (r1 - r0) * rank // world_size, r0 + (r1 - r0) * (rank + 1) // world_size
        opt.zero_grad(set_to_none=False)
        if b > a:
            rows = val_tokens[lo + a * seq_len : lo + b * seq_len + 1].to(device=device, dtype=torch.int64)
            with autocast_ctx(device):
                loss = model(rows[:-1].view(-1, seq_len), rows[1:].view(-1, seq_len))
            (loss * ((b - a) / (r1 - r0))).backward()
        for p in params:  # a rank without rows in this step still joins the all-reduce
            p.grad = all_reduce_(p.grad if p.grad is not None else torch.zeros_like(p))
        if args.ttt_grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.ttt_grad_clip)
        opt.step()
    return len(range(0, (hi - lo) // seq_len, step_rows))


def score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, log0, train_chunk):
    """Per chunk: score the windows starting in it, then train on it unless it is the last (train_chunk: steps)."""
    total, size = val_tokens.numel() - 1, args.ttt_chunk_tokens
    groups = [[] for _ in range((total + size - 1) // size)]
    for w in eval_windows(args, total):
        groups[w[1] // size].append(w)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    steps = 0
    for ci, wins in enumerate(rank_share(g, rank, world_size) for g in groups):
        score_windows(model, wins, val_tokens, luts, device, sums, args.ttt_batch_seqs, eval_window(args)[0])
        if ci < len(groups) - 1:
            steps += train_chunk(ci, len(groups), ci * size, min((ci + 1) * size, total))
    log0(f"ttt:{args.ttt_mode} chunks:{len(groups)} trained_chunks:{max(len(groups) - 1, 0)} steps:{steps}")
    model.requires_grad_(True).train()
    return finish_scores(sums)


def sgd_setup(args, model: nn.Module):
    frozen = {id(p) for b in model.blocks[: args.ttt_freeze_blocks] for p in b.parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen]
    return params, torch.optim.SGD(params, lr=args.ttt_lr, momentum=args.ttt_momentum)


def cosine_lr(base: float, i: int, n: int, on: bool) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * i / max(n, 1))) if on else base


def eval_ttt_chunked(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Score-first chunk TTT: score a chunk's windows, then ttt_epochs SGD passes on it."""
    params, opt = sgd_setup(args, model)

    def train_chunk(ci, chunks, lo, hi):
        opt.param_groups[0]["lr"] = cosine_lr(args.ttt_lr, ci, chunks - 1, args.ttt_cosine)
        return sum(ttt_epoch(args, model, params, opt, val_tokens, lo, hi, rank, world_size, device)
                   for _ in range(args.ttt_epochs))
    return score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, log0, train_chunk)


# Seed 000's selectors: phase 1 takes the parameters named like its norms and scales, phase 2 adds the last
# blocks and the head (tok_emb when tied).
PHASE1_NAMES = ("norm", "ln_scale", "attn_scale", "mlp_scale", "resid_mix")
HEAD_NAMES = ("final_norm", "tok_emb", "lm_head")


def two_phase_params(args, model: nn.Module) -> tuple[list, list, str]:
    """(phase 1, phase 2 params, head name), in parameter order, as seed 000 selects them by name."""
    n = len(model.blocks)
    last = tuple(f"blocks.{i}." for i in range(max(n - args.ttt_phase2_last_k, 0), n))
    named = list(model.named_parameters())
    phase1 = [p for name, p in named if any(k in name for k in PHASE1_NAMES)]
    phase2 = [p for name, p in named if name.startswith(last) or any(k in name for k in PHASE1_NAMES + HEAD_NAMES)]
    for phase, params, epochs in ((1, phase1, args.ttt_phase1_epochs), (2, phase2, args.ttt_phase2_epochs)):
        if epochs > 0 and not params:
            raise ValueError(f"two-phase TTT phase {phase} selects no parameters in this model")
    return phase1, phase2, "tok_emb (tied embeddings)" if model.lm_head is None else "lm_head"


def two_phase_optimizers(args, phase1: list, phase2: list):
    """((params, optimizer, epochs) of phase 1, of phase 2): Adam and SGD with torch's defaults, as seed 000."""
    return ((phase1, torch.optim.Adam(phase1, lr=args.ttt_phase1_lr), args.ttt_phase1_epochs),
            (phase2, torch.optim.SGD(phase2, lr=args.ttt_phase2_lr, momentum=args.ttt_phase2_momentum),
             args.ttt_phase2_epochs))


def log_two_phase(args, model, log0) -> tuple[list, list]:
    phase1, phase2, head = two_phase_params(args, model)
    log0(f"ttt_two_phase: phase1 tensors:{len(phase1)} params:{sum(p.numel() for p in phase1)} phase2 tensors:"
         f"{len(phase2)} params:{sum(p.numel() for p in phase2)} last_blocks:{args.ttt_phase2_last_k} head:{head}")
    return phase1, phase2


def eval_ttt_two_phase(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Score-first two-phase TTT: per chunk, score it, then phase 1 (Adam) and phase 2 (SGD) on it."""
    phase1, phase2 = log_two_phase(args, model, log0)

    def train_chunk(ci, chunks, lo, hi):
        # Each phase runs on the chunk as seed 000 ran it on the whole split: a fresh optimizer
        # and, with ttt_cosine, an LR cosine over the phase's epochs.
        steps = 0
        for params, opt, epochs in two_phase_optimizers(args, phase1, phase2):
            for ep in range(epochs):
                opt.param_groups[0]["lr"] = cosine_lr(opt.defaults["lr"], ep, epochs, args.ttt_cosine)
                steps += ttt_epoch(args, model, params, opt, val_tokens, lo, hi, rank, world_size, device)
        return steps
    return score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, log0, train_chunk)


def score_after_training(args, model, rank, world_size, device, val_tokens, luts):
    """The sliding-window scores of a model already trained on the split (the illegal variants)."""
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    if feature("sliding"):
        batch = args.eval_batch_seqs  # the records score with their sliding evaluation
    else:
        batch = args.ttt_batch_seqs
    score_windows(model, rank_share(eval_windows(args, val_tokens.numel() - 1), rank, world_size), val_tokens, luts,
                  device, sums, batch, eval_window(args)[0])
    model.requires_grad_(True).train()
    return finish_scores(sums)


def eval_ttt_two_phase_pre_eval(args, model, rank, world_size, device, val_tokens, luts, log0):
    """ILLEGAL, seed 000 as submitted: both phases over random batches of all validation sequences, then scoring."""
    seq_len, batch = eval_window(args)[0], args.ttt_batch_seqs
    n_seqs, step_rows = (val_tokens.numel() - 1) // seq_len, batch * world_size
    usable = n_seqs // step_rows * step_rows or n_seqs
    phase1, phase2 = log_two_phase(args, model, log0)
    steps = 0
    for params, opt, epochs in two_phase_optimizers(args, phase1, phase2):
        for p in model.parameters():
            p.requires_grad_(any(p is q for q in params))
        model.train()
        for ep in range(epochs):
            opt.param_groups[0]["lr"] = cosine_lr(opt.defaults["lr"], ep, epochs, args.ttt_cosine)
            perm = all_reduce_(torch.randperm(usable, device=device) * (rank == 0)).cpu()  # rank 0's order everywhere
            for b0 in range(0, usable, step_rows):
                rows = perm[b0 + rank * batch : b0 + (rank + 1) * batch].tolist()
                x = torch.stack([val_tokens[i * seq_len : (i + 1) * seq_len + 1] for i in rows]).to(device, torch.int64)
                opt.zero_grad(set_to_none=True)
                with autocast_ctx(device):
                    loss = model(x[:, :-1], x[:, 1:])
                loss.backward()
                for p in params:
                    if p.grad is not None:
                        p.grad = all_reduce_(p.grad) / world_size
                opt.step()
                steps += 1
    log0(f"ttt:two_phase_pre_eval epochs:{args.ttt_phase1_epochs}+{args.ttt_phase2_epochs} steps:{steps}")
    return score_after_training(args, model, rank, world_size, device, val_tokens, luts)


def eval_ttt_pre_eval(args, model, rank, world_size, device, val_tokens, luts, log0):
    """ILLEGAL, seed 002's first version: AdamW epochs over every rank's contiguous share of the split, then scoring."""
    mults = [(k, float(v)) for k, v in (g.split(":") for g in args.ttt_lr_groups.split(",") if g)]
    groups = {}  # LR multiplier -> parameters whose name matches first; AdamW without weight decay
    for name, p in model.named_parameters():
        groups.setdefault(next((m for k, m in mults if k in name), 1.0), []).append(p.requires_grad_(True))
    opt = torch.optim.AdamW([{"params": ps, "lr": args.ttt_lr * m, "base_lr": args.ttt_lr * m}
                             for m, ps in groups.items()], weight_decay=0.0)
    seq_len, share = eval_window(args)[0], val_tokens.numel() // world_size
    lo, hi, rows = rank * share, (rank + 1) * share, args.ttt_batch_seqs
    total_steps, step = args.ttt_epochs * max(1, (hi - lo - seq_len) // (rows * seq_len)), 0
    model.train()
    for _ in range(args.ttt_epochs):
        for start in range(lo, hi - seq_len, rows * seq_len):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(g["base_lr"], step, total_steps, args.ttt_cosine)
            n = min(rows, (hi - start) // seq_len)
            x = torch.stack([val_tokens[start + i * seq_len : start + (i + 1) * seq_len + 1] for i in range(n)])
            x = x.to(device=device, dtype=torch.int64)
            opt.zero_grad()
            with autocast_ctx(device):
                loss = model(x[:, :-1], x[:, 1:])
            loss.backward()
            for p in model.parameters():
                if p.grad is not None:
                    p.grad = all_reduce_(p.grad) / world_size
            if args.ttt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.ttt_grad_clip)
            opt.step()
            step += 1
    log0(f"ttt:pre_eval epochs:{args.ttt_epochs} steps:{step}")
    return score_after_training(args, model, rank, world_size, device, val_tokens, luts)


class BatchedLoRA(nn.Module):
    """x A^T B^T with its own A, B per batch row (document); B starts at zero."""

    def __init__(self, bsz: int, fan_in: int, fan_out: int, rank: int, device, gen: torch.Generator):
        super().__init__()
        # Every document starts from the same A, so its scores depend on its own tokens only.
        a = torch.empty(rank, fan_in).uniform_(-fan_in ** -0.5, fan_in ** -0.5, generator=gen)
        self.a = nn.Parameter(a.to(device).expand(bsz, -1, -1).clone())
        self.b = nn.Parameter(torch.zeros(bsz, fan_out, rank, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.a.transpose(1, 2).to(x.dtype)) @ self.b.transpose(1, 2).to(x.dtype)


def check_lora_args(args) -> None:
    """Raise before training for LoRA TTT settings that would fail at the final evaluation."""
    head = args.ttt_mode == "lora"  # lora_chunks adapts the blocks only, as seed 003
    if set(args.ttt_lora_targets.replace(" ", "").split(",")) - set(LORA_LAYERS) - ({"head"} if head else set()):
        raise ValueError(f"TTT_LORA_TARGETS={args.ttt_lora_targets!r}: choose from {sorted(LORA_LAYERS)}"
                         + (" and head" if head else ""))
    if args.ttt_chunk_len > eval_window(args)[0]:  # lora: its first tokens unscored; lora_chunks: past the window
        raise ValueError(f"TTT_CHUNK_LEN={args.ttt_chunk_len} must be at most the eval window {eval_window(args)[0]}")


def eval_ttt_lora(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Per-document LoRA TTT on frozen weights; documents are split across ranks and batched, shortest first."""
    check_lora_args(args)
    targets = args.ttt_lora_targets.replace(" ", "").split(",")
    # Documents start at a BOS and also predict the next one's BOS, so they tile all targets.
    total, size = val_tokens.numel() - 1, args.ttt_chunk_len
    cuts = sorted({0, total} | set((val_tokens[:total] == BOS_ID).nonzero().flatten().tolist()))
    docs = sorted(rank_share(list(zip(cuts[:-1], cuts[1:])), rank, world_size), key=lambda d: (d[1] - d[0] - 1) // size)
    sums, steps = torch.zeros(3, device=device, dtype=torch.float64), 0
    model.requires_grad_(False)
    model.eval()
    for d in range(0, len(docs), args.ttt_batch_docs):
        batch, hooks, adapters = docs[d : d + args.ttt_batch_docs], [], nn.ModuleDict()
        gen = torch.Generator().manual_seed(args.seed)
        for t in targets:
            layers = [None] if t == "head" else [b.get_submodule(LORA_LAYERS[t]) for b in model.blocks]
            for i, layer in enumerate(layers):
                fans = model.tok_emb.weight.shape[::-1] if layer is None else (layer.in_features, layer.out_features)
                ad = adapters[f"{t}{i}"] = BatchedLoRA(len(batch), *fans, args.ttt_lora_rank, device, gen)
                if layer is not None:
                    hooks.append(layer.register_forward_hook(lambda m, inp, out, ad=ad: out + ad(inp[0])))
        opt = torch.optim.Adam(adapters.parameters(), lr=args.ttt_lora_lr, betas=(args.beta1, args.beta2), eps=1e-10)
        steps += lora_batch(args, model, adapters, opt, batch, val_tokens, luts, device, sums)
        for h in hooks:
            h.remove()
    chunks = sum((hi - lo + size - 1) // size for lo, hi in docs)
    counts = all_reduce_(torch.tensor([len(docs), chunks, steps], device=device))
    log0(f"ttt:lora documents:{counts[0].item()} chunks:{counts[1].item()} steps:{counts[2].item()}")
    model.requires_grad_(True).train()
    return finish_scores(sums)


def lora_batch(args, model, adapters, opt, batch, val_tokens, luts, device, sums) -> int:
    """Per chunk: score it with the document's adapters, then one Adam step unless it is the document's last."""
    # Windows never reach back before their document's start.
    size, seq_len = args.ttt_chunk_len, eval_window(args)[0]
    n_chunks = [(hi - lo + size - 1) // size for lo, hi in batch]
    head = adapters["head0"] if "head0" in adapters else None
    steps = 0
    for ci in range(max(n_chunks)):
        x = torch.zeros(len(batch), min((ci + 1) * size, seq_len), dtype=torch.int64, device=device)
        y = torch.zeros_like(x)
        scored, trained = torch.zeros_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.bool)
        first = torch.zeros(len(batch), dtype=torch.int64)  # position of each row's first target
        for b, (lo, hi) in enumerate(batch):
            if ci < n_chunks[b]:
                cs, ce = lo + ci * size, min(lo + (ci + 1) * size, hi)
                ws = max(lo, ce - seq_len)
                first[b] = ws + 1
                rows = val_tokens[ws : ce + 1].to(device=device, dtype=torch.int64)
                x[b, : ce - ws], y[b, : ce - ws] = rows[:-1], rows[1:]
                scored[b, cs - ws : ce - ws] = True
                trained[b, cs - ws : ce - ws] = ci < n_chunks[b] - 1
        with torch.set_grad_enabled(bool(trained.any())), autocast_ctx(device):
            h = model.hidden(x)
            if head is None:
                logits = model.logits_from_hidden(h).float()
            else:  # the head adapter adds to the raw logits, before the soft cap
                weight = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
                raw = F.linear(h, weight.to(h.dtype)) + head(h)
                logits = (model.logit_softcap * torch.tanh(raw / model.logit_softcap)).float()
            nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        with torch.no_grad():
            sums[0] += nll[scored].double().sum()
            sums[1] += scored.sum()
            sums[2] += target_bytes(x, y, luts, first)[scored].double().sum()
        if trained.any():
            opt.zero_grad(set_to_none=True)
            ((nll * trained).sum() / size).backward()
            opt.step()
            steps += 1
    return steps


class ChunkLoRA(nn.Module):
    """Seed 003's adapter: x A^T B^T / rank with A ~ N(0, 0.01^2), B ~ N(0, 0.001^2) from the global RNG."""

    def __init__(self, fan_in: int, fan_out: int, rank: int, device):
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, fan_in, device=device) * 0.01)
        self.b = nn.Parameter(torch.randn(fan_out, rank, device=device) * 0.001)
        self.scale = 1.0 / rank

    def reset(self) -> None:
        nn.init.normal_(self.a, std=0.01)
        nn.init.normal_(self.b, std=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.a.to(x.dtype).T @ self.b.to(x.dtype).T) * self.scale


def lora_chunk_documents(args, val_tokens) -> list[tuple[int, int]]:
    """(first token, targets) per document; with ttt_score_all they tile every target."""
    bos = (val_tokens == BOS_ID).nonzero().flatten().tolist()
    if args.ttt_score_all:  # a document also predicts the next one's BOS; tokens before the first BOS form one
        total = val_tokens.numel() - 1
        cuts = sorted({0, total} | {b for b in bos if b < total})
        return [(lo, hi - lo) for lo, hi in zip(cuts, cuts[1:])]
    ends = bos[1:] + [val_tokens.numel()]  # seed 003: BOS to the next BOS, which is not predicted; < 5 tokens: none
    return [(lo, hi - lo - 1) for lo, hi in zip(bos, ends) if hi - lo >= 5]


def eval_ttt_lora_chunks(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Seed 003's LoRA TTT: adapters on every block's targets, reset per document; a document's chunks are each
    scored with only themselves as context, then (all but the last) train the adapters one Adam step. Documents
    shorter than ttt_min_doc_len are scored in one pass, before any adaptation."""
    check_lora_args(args)
    model.requires_grad_(False)
    adapters, hooks = [], []
    for block in model.blocks:
        for t in args.ttt_lora_targets.replace(" ", "").split(","):
            layer = block.get_submodule(LORA_LAYERS[t])
            adapters.append(ChunkLoRA(layer.in_features, layer.out_features, args.ttt_lora_rank, device))
            hooks.append(layer.register_forward_hook(lambda m, inp, out, ad=adapters[-1]: out + ad(inp[0])))
    params = [p for ad in adapters for p in (ad.a, ad.b)]
    docs = lora_chunk_documents(args, val_tokens)
    sums, counts = torch.zeros(3, device=device, dtype=torch.float64), torch.zeros(3, device=device, dtype=torch.int64)

    def score(first: int, n: int, train: bool) -> Tensor:
        ids = val_tokens[first : first + n + 1].to(device=device, dtype=torch.int64)[None]
        model.train(train)
        with torch.set_grad_enabled(train), autocast_ctx(device):
            loss = model(ids[:, :-1], ids[:, 1:])
        with torch.no_grad():
            sums.add_(torch.stack([loss.double() * n, torch.tensor(n, device=device, dtype=torch.float64),
                                   target_bytes(ids[:, :-1], ids[:, 1:], luts, [first + 1]).double().sum()]))
        return loss

    for first, n in rank_share([d for d in docs if d[1] + 1 < args.ttt_min_doc_len], rank, world_size):
        score(first, n, False)
    for first, n in rank_share([d for d in docs if d[1] + 1 >= args.ttt_min_doc_len], rank, world_size):
        for ad in adapters:
            ad.reset()
        opt = torch.optim.Adam(params, lr=args.ttt_lora_lr)
        counts[0] += 1
        for c0 in range(0, n, args.ttt_chunk_len):
            c1 = min(c0 + args.ttt_chunk_len, n)
            if c1 - c0 < 2 and not args.ttt_score_all:
                continue
            loss = score(first + c0, c1 - c0, c1 < n)
            counts[1] += 1
            if c1 < n:
                opt.zero_grad()
                loss.backward()
                opt.step()
                counts[2] += 1
    documents, chunks, steps = all_reduce_(counts).tolist()
    log0(f"ttt:lora_chunks documents:{documents} chunks:{chunks} steps:{steps}")
    for h in hooks:
        h.remove()
    model.requires_grad_(True).train()
    return finish_scores(sums)
