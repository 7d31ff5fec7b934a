"""Test-time training (TTT) at final evaluation.

Legal variants score every token before any update that saw it (README; C1-C4 of thread
#1017): per-document LoRA (a chunk is scored, then one step on it; a document's last chunk is
never trained), score-first chunk TTT (all windows of a 32K chunk scored under inference mode,
then SGD epochs on it; the last chunk is never trained) and a score-first form of the two-phase
TTT of seed 000. `pre_eval` trains on the whole validation set before scoring it: illegal,
present only to reproduce such submissions for the verifier. Every variant returns
(val_loss, val_bpb) computed from the scores alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from packager.runtime.bpb import count_bytes, finish_scores
from packager.runtime.evaluate import eval_windows, rank_share, score_windows
from packager.runtime.features import HP, feature
from packager.runtime.model import CONTROL_TENSOR_NAME_PATTERNS
from packager.runtime.system import all_reduce_, autocast_ctx

FEATURES = {
    "ttt": ("test-time training during the final evaluation", "ttt_mode != 'none'"),
    "ttt_lora": ("per-document LoRA TTT, score a chunk then one step on it", "ttt_mode == 'lora'"),
    "ttt_chunked": ("score-first chunk TTT: score a chunk's windows, then SGD on it", "ttt_mode == 'chunked'"),
    "ttt_two_phase": ("score-first two-phase TTT: scalars (Adam), then last blocks + head (SGD)",
                      "ttt_mode == 'two_phase'"),
    "ttt_pre_eval": ("ILLEGAL pre-eval TTT: epochs on all validation tokens, then scoring", "ttt_mode == 'pre_eval'"),
    "ttt_full": ("full-weight TTT by batches of validation sequences",
                 "ttt_mode in ('chunked', 'two_phase', 'pre_eval')"),
    "ttt_score_first": ("validation split into TTT chunks", "ttt_mode in ('chunked', 'two_phase')"),
    "ttt_sgd": ("one SGD optimizer over the TTT weights", "ttt_mode in ('chunked', 'pre_eval')"),
}

HPARAMS = (
    HP("ttt_mode", "TTT_MODE", "ttt.mode", str, "none", feature="ttt", doc="test-time training variant",
       choices=("none", "lora", "chunked", "two_phase", "pre_eval")),
    HP("ttt_lora_rank", "TTT_LORA_RANK", "ttt.lora_rank", int, 8, feature="ttt_lora", doc="LoRA rank", minimum=1),
    HP("ttt_lora_targets", "TTT_LORA_TARGETS", "ttt.lora_targets", str, "q,v,head", feature="ttt_lora",
       doc="adapted layers: q, k, v, o (attention), fc, proj (MLP), head"),
    HP("ttt_lora_lr", "TTT_LORA_LR", "ttt.lora_lr", float, 0.01, feature="ttt_lora", doc="Adam LR of the adapters"),
    HP("ttt_chunk_len", "TTT_CHUNK_LEN", "ttt.chunk_len", int, 256, feature="ttt_lora",
       doc="tokens scored per LoRA step", minimum=1),
    HP("ttt_batch_docs", "TTT_BATCH_DOCS", "ttt.batch_docs", int, 64, feature="ttt_lora",
       doc="documents adapted side by side, each with its own adapters", minimum=1),
    HP("ttt_chunk_tokens", "TTT_CHUNK_TOKENS", "ttt.chunk_tokens", int, 32768, feature="ttt_score_first",
       doc="tokens scored before each round of TTT updates", minimum=1),
    HP("ttt_batch_seqs", "TTT_BATCH_SEQS", "ttt.batch_seqs", int, 32, feature="ttt_full",
       doc="sequences per rank per TTT step (and windows per scoring pass)", minimum=1),
    HP("ttt_grad_clip", "TTT_GRAD_CLIP", "ttt.grad_clip", float, 0.0, feature="ttt_full",
       doc="gradient-norm clip of TTT steps (0: none)", minimum=0.0),
    HP("ttt_epochs", "TTT_EPOCHS", "ttt.epochs", int, 0, feature="ttt_sgd",
       doc="SGD passes per chunk (pre_eval: over the whole split)", minimum=0),
    HP("ttt_lr", "TTT_LR", "ttt.lr", float, 0.002, feature="ttt_sgd", doc="SGD LR"),
    HP("ttt_momentum", "TTT_MOMENTUM", "ttt.momentum", float, 0.9, feature="ttt_sgd", doc="SGD momentum"),
    HP("ttt_cosine", "TTT_COSINE", "ttt.cosine", bool, False, feature="ttt_full",
       doc="cosine-decay the LR: chunked over chunks, two_phase over each phase's epochs, pre_eval over epochs"),
    HP("ttt_freeze_blocks", "TTT_FREEZE_BLOCKS", "ttt.freeze_blocks", int, 0, feature="ttt_sgd",
       doc="first blocks left untrained", minimum=0),
    HP("ttt_phase1_epochs", "TTT_PHASE1_EPOCHS", "ttt.phase1_epochs", int, 0, feature="ttt_two_phase",
       doc="phase 1 (gains/scales/mixes, Adam) passes per chunk", minimum=0),
    HP("ttt_phase1_lr", "TTT_PHASE1_LR", "ttt.phase1_lr", float, 0.01, feature="ttt_two_phase"),
    HP("ttt_phase2_epochs", "TTT_PHASE2_EPOCHS", "ttt.phase2_epochs", int, 0, feature="ttt_two_phase",
       doc="phase 2 (last blocks + scalars + head, SGD) passes per chunk", minimum=0),
    HP("ttt_phase2_lr", "TTT_PHASE2_LR", "ttt.phase2_lr", float, 0.003, feature="ttt_two_phase"),
    HP("ttt_phase2_momentum", "TTT_PHASE2_MOMENTUM", "ttt.phase2_momentum", float, 0.95, feature="ttt_two_phase"),
    HP("ttt_phase2_last_k", "TTT_PHASE2_LAST_K", "ttt.phase2_last_k", int, 2, feature="ttt_two_phase",
       doc="blocks (from the top) trained in phase 2", minimum=0),
    HP("ttt_allow_illegal", "TTT_ALLOW_ILLEGAL", "ttt.allow_illegal_ttt", bool, False, feature="ttt_pre_eval",
       doc="acknowledge that pre_eval TTT trains on unscored validation tokens (non-record only)"),
)

BOS_ID = 1
LORA_LAYERS = {"q": "attn.c_q", "k": "attn.c_k", "v": "attn.c_v", "o": "attn.proj", "fc": "mlp.fc", "proj": "mlp.proj"}


def eval_ttt(args, model, rank, world_size, device, val_tokens, luts, log0) -> tuple[str, float, float]:
    """(log label, val_loss, val_bpb) of the recipe's TTT mode, run on the bare (uncompiled) GPT."""
    run = (args, model, rank, world_size, device, val_tokens, luts, log0)
    if feature("ttt_lora"):
        if args.ttt_mode == "lora":
            return ("final_ttt_lora", *eval_ttt_lora(*run))
    if feature("ttt_chunked"):
        if args.ttt_mode == "chunked":
            return ("legal_ttt", *eval_ttt_chunked(*run))
    if feature("ttt_two_phase"):
        if args.ttt_mode == "two_phase":
            return ("final_ttt_two_phase", *eval_ttt_two_phase(*run))
    if feature("ttt_pre_eval"):
        if args.ttt_mode == "pre_eval":
            return ("final_ttt_pre_eval", *eval_ttt_pre_eval(*run))
    raise ValueError(f"TTT_MODE={args.ttt_mode!r} is not built into this script")


def ttt_epoch(args, model, params: list, opt, val_tokens, lo: int, hi: int, rank, world_size, device):
    """One pass over the train_seq_len rows of targets [lo, hi); a step's gradient is the mean over all ranks' rows."""
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


def score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, train_chunk):
    """Per chunk of targets: score the windows whose span starts in it, then train on it (but not on the last)."""
    total, size = val_tokens.numel() - 1, args.ttt_chunk_tokens
    groups = [[] for _ in range((total + size - 1) // size)]
    for w in eval_windows(args, total):
        groups[w[1] // size].append(w)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    for ci, wins in enumerate(rank_share(g, rank, world_size) for g in groups):
        score_windows(model, wins, val_tokens, luts, device, sums, args.ttt_batch_seqs)
        if ci < len(groups) - 1:
            train_chunk(ci, len(groups), ci * size, min((ci + 1) * size, total))
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
        for _ in range(args.ttt_epochs):
            ttt_epoch(args, model, params, opt, val_tokens, lo, hi, rank, world_size, device)
    return score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, train_chunk)


def two_phase_params(args, model: nn.Module) -> tuple[list, list, str]:
    """(phase 1, phase 2 params, head name): 1 = gains, scales, mixes; 2 = last blocks, those scalars, the head."""
    # Phase 1 is every vector and control tensor (the baseline's RMSNorm has no weights); head is tok_emb when tied.
    phase1 = [p for n, p in model.named_parameters() if p.ndim < 2 or any(k in n for k in CONTROL_TENSOR_NAME_PATTERNS)]
    head = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
    last = list(model.blocks)[max(len(model.blocks) - args.ttt_phase2_last_k, 0) :] if args.ttt_phase2_last_k else []
    phase2 = list({id(p): p for p in [q for b in last for q in b.parameters()] + phase1 + [head]}.values())
    for phase, params, epochs in ((1, phase1, args.ttt_phase1_epochs), (2, phase2, args.ttt_phase2_epochs)):
        if epochs > 0 and not params:
            raise ValueError(f"two-phase TTT phase {phase} selects no parameters in this model")
    return phase1, phase2, "tok_emb (tied embeddings)" if model.lm_head is None else "lm_head"


def eval_ttt_two_phase(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Score-first two-phase TTT: per chunk, score it, then phase 1 (Adam) and phase 2 (SGD) on it."""
    phase1, phase2, head = two_phase_params(args, model)
    log0(f"ttt_two_phase: phase1 tensors:{len(phase1)} params:{sum(p.numel() for p in phase1)} phase2 tensors:"
         f"{len(phase2)} params:{sum(p.numel() for p in phase2)} last_blocks:{args.ttt_phase2_last_k} head:{head}")

    def train_chunk(ci, chunks, lo, hi):
        # Each phase runs on the chunk as seed 000 ran it on the whole split: a fresh optimizer
        # and, with ttt_cosine, an LR cosine over the phase's epochs.
        adam = torch.optim.Adam(phase1, lr=args.ttt_phase1_lr)
        sgd = torch.optim.SGD(phase2, lr=args.ttt_phase2_lr, momentum=args.ttt_phase2_momentum)
        for params, opt, epochs in ((phase1, adam, args.ttt_phase1_epochs), (phase2, sgd, args.ttt_phase2_epochs)):
            for ep in range(epochs):
                opt.param_groups[0]["lr"] = cosine_lr(opt.defaults["lr"], ep, epochs, args.ttt_cosine)
                ttt_epoch(args, model, params, opt, val_tokens, lo, hi, rank, world_size, device)
    return score_first_ttt(args, model, rank, world_size, device, val_tokens, luts, train_chunk)


def eval_ttt_pre_eval(args, model, rank, world_size, device, val_tokens, luts, log0):
    """ILLEGAL: ttt_epochs SGD passes over every validation token, then scoring them all."""
    if not args.ttt_allow_illegal:
        raise ValueError("TTT_MODE=pre_eval trains on validation tokens before scoring them; "
                         "set ttt.allow_illegal_ttt (non-record track only) to run it")
    log0("ttt_pre_eval: WARNING training on validation tokens before scoring them is not allowed "
         "for records (README; pre-eval TTT, thread #677)")
    params, opt = sgd_setup(args, model)
    total = val_tokens.numel() - 1
    for ep in range(args.ttt_epochs):
        opt.param_groups[0]["lr"] = cosine_lr(args.ttt_lr, ep, args.ttt_epochs, args.ttt_cosine)
        ttt_epoch(args, model, params, opt, val_tokens, 0, total, rank, world_size, device)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    score_windows(model, rank_share(eval_windows(args, total), rank, world_size), val_tokens, luts, device,
                  sums, args.ttt_batch_seqs)
    model.requires_grad_(True).train()
    return finish_scores(sums)


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


def eval_ttt_lora(args, model, rank, world_size, device, val_tokens, luts, log0):
    """Per-document LoRA TTT on frozen weights; documents are split across ranks and batched, shortest first."""
    targets = args.ttt_lora_targets.replace(" ", "").split(",")
    if set(targets) - set(LORA_LAYERS) - {"head"}:
        raise ValueError(f"TTT_LORA_TARGETS={args.ttt_lora_targets!r}: choose from {sorted(LORA_LAYERS)} and head")
    # Documents start at a BOS and also predict the next one's BOS, so they tile all targets.
    total, size = val_tokens.numel() - 1, args.ttt_chunk_len
    cuts = sorted({0, total} | set((val_tokens[:total] == BOS_ID).nonzero().flatten().tolist()))
    docs = sorted(rank_share(list(zip(cuts[:-1], cuts[1:])), rank, world_size), key=lambda d: (d[1] - d[0] - 1) // size)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
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
        lora_batch(args, model, adapters, opt, batch, val_tokens, luts, device, sums)
        for h in hooks:
            h.remove()
    model.requires_grad_(True).train()
    return finish_scores(sums)


def lora_batch(args, model, adapters, opt, batch, val_tokens, luts, device, sums) -> None:
    """Per chunk: score it with the document's adapters, then one Adam step on it unless it is the document's last."""
    # Windows never reach back before their document's start.
    size, seq_len = args.ttt_chunk_len, args.train_seq_len
    if feature("eval_seq_len"):
        seq_len = args.eval_seq_len or seq_len
    if size > seq_len:
        # A chunk longer than the scoring window would leave its first tokens unscored.
        raise ValueError(f"TTT_CHUNK_LEN={size} must be at most the eval window {seq_len}")
    n_chunks = [(hi - lo + size - 1) // size for lo, hi in batch]
    head = adapters["head0"] if "head0" in adapters else None
    for ci in range(max(n_chunks)):
        x = torch.zeros(len(batch), min((ci + 1) * size, seq_len), dtype=torch.int64, device=device)
        y = torch.zeros_like(x)
        scored, trained = torch.zeros_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.bool)
        for b, (lo, hi) in enumerate(batch):
            if ci < n_chunks[b]:
                cs, ce = lo + ci * size, min(lo + (ci + 1) * size, hi)
                ws = max(lo, ce - seq_len)
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
            sums[2] += count_bytes(x, y, luts)[scored].double().sum()
        if trained.any():
            opt.zero_grad(set_to_none=True)
            ((nll * trained).sum() / size).backward()
            opt.step()
