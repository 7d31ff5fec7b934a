"""Phased TTT: score-first per-document LoRA, with global SGD phases on documents already scored.

Documents (a BOS to the next BOS, which they also predict) are scored in batches of
TTT_BATCH_DOCS, one batch per rank per round. Each batch's documents get their own LoRA rows
(q, k, v, attention output and MLP of every block pass, and the head), scaled by alpha / rank: a
chunk of TTT_CHUNK_LEN targets is scored, then one AdamW step (weight decay, beta1 0 by default) on
it, except on a document's last chunk. Between batches B is zeroed and the optimizer starts over;
with TTT_WARM_START_A the A rows carry over to the next batch on that row. After the round in which
the first PHASED_TTT_PREFIX_DOCS documents (in processing order) reach a phase boundary (the prefix
split in PHASED_TTT_NUM_PHASES), every rank pauses and the whole model trains with SGD, one
cosine-decayed pass by chunks of GLOBAL_TTT_CHUNK_TOKENS over the documents scored so far (the last
chunk is not trained, as in the records); the adapters then start fresh. Every token is scored
once, before any update that saw it.

PHASED_TTT_ORDER: "stream" processes documents in validation order, so a score depends only on
earlier text; "length" groups documents of similar length (the records' order, faster on GPUs),
which scores a short early document after global phases that trained on later ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

from packager.runtime.bpb import finish_scores
from packager.runtime.features import HP, feature
from packager.runtime.system import all_reduce_, autocast_ctx

FEATURES = {
    "ttt_phased": ("phased TTT: per-document LoRA plus global SGD phases on scored documents",
                   "ttt_mode == 'phased'"),
}

HPARAMS = (
    HP("ttt_lora_alpha", "TTT_LORA_ALPHA", "ttt.lora_alpha", float, 144.0, feature="ttt_phased",
       doc="adapter output scale alpha / rank"),
    HP("ttt_warm_start_a", "TTT_WARM_START_A", "ttt.warm_start_a", bool, True, feature="ttt_phased",
       doc="keep each row's A across batches (B is always reset)"),
    HP("ttt_weight_decay", "TTT_WEIGHT_DECAY", "ttt.weight_decay", float, 1.0, feature="ttt_phased",
       doc="AdamW weight decay of the adapters", minimum=0.0),
    HP("ttt_beta1", "TTT_BETA1", "ttt.beta1", float, 0.0, feature="ttt_phased"),
    HP("ttt_beta2", "TTT_BETA2", "ttt.beta2", float, 0.999, feature="ttt_phased"),
    HP("ttt_k_lora", "TTT_K_LORA", "ttt.k_lora", bool, True, feature="ttt_phased", doc="adapt the keys too"),
    HP("ttt_mlp_lora", "TTT_MLP_LORA", "ttt.mlp_lora", bool, True, feature="ttt_phased", doc="adapt the MLP outputs"),
    HP("ttt_o_lora", "TTT_O_LORA", "ttt.o_lora", bool, True, feature="ttt_phased",
       doc="adapt the attention outputs"),
    HP("phased_ttt_prefix_docs", "PHASED_TTT_PREFIX_DOCS", "ttt.prefix_docs", int, 2000, feature="ttt_phased",
       doc="documents scored before the last global phase", minimum=0, smoke=20),
    HP("phased_ttt_num_phases", "PHASED_TTT_NUM_PHASES", "ttt.num_phases", int, 1, feature="ttt_phased",
       doc="global SGD phases over the prefix", minimum=1),
    HP("phased_ttt_order", "PHASED_TTT_ORDER", "ttt.order", str, "stream", feature="ttt_phased",
       choices=("stream", "length"), doc="document order: validation order, or by length (the records')"),
    HP("global_ttt_lr", "GLOBAL_TTT_LR", "ttt.global_lr", float, 0.001, feature="ttt_phased"),
    HP("global_ttt_momentum", "GLOBAL_TTT_MOMENTUM", "ttt.global_momentum", float, 0.9, feature="ttt_phased"),
    HP("global_ttt_epochs", "GLOBAL_TTT_EPOCHS", "ttt.global_epochs", int, 1, feature="ttt_phased", minimum=0),
    HP("global_ttt_chunk_tokens", "GLOBAL_TTT_CHUNK_TOKENS", "ttt.global_chunk_tokens", int, 32768,
       feature="ttt_phased", doc="tokens per cosine step of a global phase", minimum=1, smoke=2048),
    HP("global_ttt_batch_seqs", "GLOBAL_TTT_BATCH_SEQS", "ttt.global_batch_seqs", int, 32, feature="ttt_phased",
       doc="sequences per rank per SGD step", minimum=1, smoke=4),
    HP("global_ttt_grad_clip", "GLOBAL_TTT_GRAD_CLIP", "ttt.global_grad_clip", float, 1.0, feature="ttt_phased",
       minimum=0.0),
)

BOS_TOKEN = 1
LORA_SITES = ("attn.c_q", "attn.c_k", "attn.c_v", "attn", "mlp")  # q, k, v, attention out, MLP out


class ScaledLoRA(nn.Module):
    """Per-row adapters x A^T B^T * alpha / rank; reset() zeroes B (and redraws A unless warm)."""

    def __init__(self, rows: int, fan_in: int, fan_out: int, args, device, gen: torch.Generator):
        super().__init__()
        self.bound, self.scale, self.gen = fan_in ** -0.5, args.ttt_lora_alpha / args.ttt_lora_rank, gen
        self.a = nn.Parameter(torch.empty(rows, args.ttt_lora_rank, fan_in, device=device))
        self.b = nn.Parameter(torch.zeros(rows, fan_out, args.ttt_lora_rank, device=device))
        self.reset(warm=False)

    def reset(self, warm: bool) -> None:
        with torch.no_grad():
            if not warm:
                self.a.copy_(torch.empty(self.a.shape).uniform_(-self.bound, self.bound, generator=self.gen))
            self.b.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.a.transpose(1, 2).to(x.dtype)) @ self.b.transpose(1, 2).to(x.dtype) * self.scale


def lora_sites(args, block: nn.Module) -> list[tuple[str, nn.Module]]:
    on = {"attn.c_k": args.ttt_k_lora, "attn": args.ttt_o_lora, "mlp": args.ttt_mlp_lora}
    return [(s, block.get_submodule(s)) for s in LORA_SITES if on.get(s, True)]


class DocAdapters(nn.ModuleDict):
    """Adapters for every site of every block pass (a looped block gets one per pass) and the head
    ("head0", which lora_batch adds to the raw logits), attached by forward hooks; the pass counters
    restart at each forward, when the token embedding runs."""

    def __init__(self, args, model: nn.Module, rows: int, device, gen: torch.Generator):
        super().__init__()
        self.calls, self.hooks = {}, [model.tok_emb.register_forward_pre_hook(lambda m, i: self.calls.clear())]
        dim = model.tok_emb.embedding_dim
        sites = nn.ModuleDict()
        targets = {f"{i}_{site.replace('.', '_')}": module for i, block in enumerate(model.blocks)
                   for site, module in lora_sites(args, block)}
        passes = count_passes(model, targets, device)  # before any adapter is attached
        for key, module in targets.items():
            fans = (module.in_features, module.out_features) if isinstance(module, nn.Linear) else (dim, dim)
            sites[key] = nn.ModuleList([ScaledLoRA(rows, *fans, args, device, gen) for _ in range(passes[key])])
            self.hooks.append(module.register_forward_hook(self.hook(sites, key)))
        self["sites"], self["head0"] = sites, ScaledLoRA(rows, dim, model.tok_emb.num_embeddings, args, device, gen)

    def hook(self, sites: nn.ModuleDict, key: str):
        def add(module, inputs, out):
            k = self.calls[key] = self.calls.get(key, -1) + 1
            return out + sites[key][k](inputs[0])
        return add

    def reset(self, warm: bool) -> None:
        for m in self.modules():
            if isinstance(m, ScaledLoRA):
                m.reset(warm)

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def count_passes(model: nn.Module, modules: dict, device) -> dict[str, int]:
    """How often each module runs in one forward (a block that depth recurrence loops runs more than once)."""
    seen = {key: 0 for key in modules}
    hooks = [m.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, seen[key] + 1))
             for key, m in modules.items()]
    with torch.no_grad():
        model.hidden(torch.zeros(1, 1, dtype=torch.int64, device=device))
    for h in hooks:
        h.remove()
    return {key: max(n, 1) for key, n in seen.items()}


def document_spans(val_tokens: Tensor) -> list[tuple[int, int]]:
    """[(lo, hi)]: a document is val_tokens[lo:hi+1], its targets lo+1..hi; together they tile 1..N-1."""
    total = val_tokens.numel() - 1
    cuts = sorted({0, total} | set((val_tokens[:total] == BOS_TOKEN).nonzero().flatten().tolist()))
    return list(zip(cuts[:-1], cuts[1:]))


def phase_batches(args, docs: list) -> list[list]:
    """Batches in processing order: consecutive documents, or the records' length groups, longest first."""
    size = args.ttt_batch_docs
    if args.phased_ttt_order == "length":
        by_len = sorted(docs, key=lambda d: d[1] - d[0])
        batches = [by_len[i : i + size] for i in range(0, len(by_len), size)]
        return sorted(batches, key=lambda b: -max(hi - lo for lo, hi in b))
    return [docs[i : i + size] for i in range(0, len(docs), size)]


def global_sgd(args, model, docs: list, val_tokens, rank, world_size, device, log0) -> None:
    """One phase: SGD on the documents' tokens (concatenated), a cosine step per chunk, the last chunk skipped."""
    seq_len = args.train_seq_len
    if feature("eval_seq_len"):
        seq_len = args.eval_seq_len or seq_len
    tokens = torch.cat([val_tokens[lo : hi + 1] for lo, hi in docs])
    chunk, n = args.global_ttt_chunk_tokens, tokens.numel() - 1
    chunks = (n + chunk - 1) // chunk
    params = list(model.parameters())
    model.requires_grad_(True).train()
    opt = torch.optim.SGD(params, lr=args.global_ttt_lr, momentum=args.global_ttt_momentum)
    for ci in range(chunks - 1):
        opt.param_groups[0]["lr"] = args.global_ttt_lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(chunks - 1, 1)))
        seqs = (min((ci + 1) * chunk, n) - ci * chunk) // seq_len
        step_rows = args.global_ttt_batch_seqs * world_size
        for _ in range(args.global_ttt_epochs):
            for r0 in range(0, seqs, step_rows):
                r1 = min(r0 + step_rows, seqs)
                a, b = r0 + (r1 - r0) * rank // world_size, r0 + (r1 - r0) * (rank + 1) // world_size
                opt.zero_grad(set_to_none=False)
                base = ci * chunk
                if b > a:
                    rows = tokens[base + a * seq_len : base + b * seq_len + 1].to(device=device, dtype=torch.int64)
                    with autocast_ctx(device):
                        loss = model(rows[:-1].view(-1, seq_len), rows[1:].view(-1, seq_len))
                    (loss * ((b - a) / (r1 - r0))).backward()
                for p in params:  # every rank joins every all-reduce, with or without rows
                    p.grad = all_reduce_(p.grad if p.grad is not None else torch.zeros_like(p))
                if args.global_ttt_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, args.global_ttt_grad_clip)
                opt.step()
    model.requires_grad_(False).eval()


def eval_ttt_phased(args, model, rank, world_size, device, val_tokens, luts, log0, score_batch):
    """(val_loss, val_bpb) of phased TTT; `model` is the bare GPT (global phases change its weights).
    score_batch is ttt.lora_batch: score a batch of documents chunk by chunk, a step after each."""
    batches = phase_batches(args, document_spans(val_tokens))
    prefix = min(args.phased_ttt_prefix_docs, sum(len(b) for b in batches))
    bounds = [prefix * (k + 1) // args.phased_ttt_num_phases for k in range(args.phased_ttt_num_phases)]
    log0(f"ttt_phased: total_docs:{sum(len(b) for b in batches)} prefix_docs:{prefix} order:{args.phased_ttt_order} "
         f"num_phases:{args.phased_ttt_num_phases} boundaries:{bounds}")
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    gen = torch.Generator().manual_seed(args.seed)
    model.requires_grad_(False).eval()
    adapters, done, phase = None, 0, 0
    for r0 in range(0, len(batches), world_size):
        batch = batches[r0 + rank] if r0 + rank < len(batches) else []
        if batch:
            if adapters is None or adapters["head0"].b.shape[0] != len(batch):
                if adapters is not None:
                    adapters.remove()
                adapters = DocAdapters(args, model, len(batch), device, gen)
            else:
                adapters.reset(warm=args.ttt_warm_start_a)
            opt = torch.optim.AdamW(adapters.parameters(), lr=args.ttt_lora_lr, betas=(args.ttt_beta1, args.ttt_beta2),
                                    eps=1e-10, weight_decay=args.ttt_weight_decay)
            score_batch(args, model, adapters, opt, batch, val_tokens, luts, device, sums)
        done += sum(len(b) for b in batches[r0 : r0 + world_size])
        while phase < len(bounds) and done >= bounds[phase]:
            # Every rank reaches this after the same round: the documents trained on are all scored.
            scored = [d for b in batches for d in b][: bounds[phase]]
            log0(f"ttpp: phase:{phase + 1}/{len(bounds)} pd:{done} gd:{len(scored)}")
            if adapters is not None:
                adapters.remove()
            adapters = None
            global_sgd(args, model, scored, val_tokens, rank, world_size, device, log0)
            phase += 1
    if adapters is not None:
        adapters.remove()
    model.requires_grad_(True).train()
    return finish_scores(sums)
