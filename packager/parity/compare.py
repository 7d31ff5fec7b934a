"""The comparisons between a recipe and the record it names, one function per row of the table.

Each returns a Row: `same` (bitwise or exactly equal), `close` (within the stated tolerance),
`switch` (equal with the recipe's listed switches; the recipe as shipped differs by the effect
shown, for the reason in seeds.py) or `DIFFERS` (a failure). Both programs get the same inputs:
the same seed, the same state dict, the same gradients, the same tokens and byte tables.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
import torch.nn.functional as F

from packager.hparams import all_hparams
from packager.parity.script import RecordScript, cpu_stubs
from packager.parity.seeds import SEEDS, TINY
from packager.recipe import load_recipe
from packager.render import recipe_features
from packager.runtime import bpb as ours_bpb
from packager.runtime import evaluate as ours_evaluate
from packager.runtime import model as ours_model
from packager.runtime import optim as ours_optim
from packager.runtime import qat as ours_qat
from packager.runtime import quant as ours_quant
from packager.runtime import train as ours_train
from packager.runtime import ttt as ours_ttt

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"  # the seeds' own files live beside the repository (see ../shared/README.md)
LOGIT_TOL = 1e-5
BPB_TOL = 1e-6


@dataclass
class Row:
    seed: str
    check: str
    status: str  # same | close | switch | DIFFERS
    detail: str

    @property
    def ok(self) -> bool:
        return self.status != "DIFFERS"


# ---------------------------------------------------------------- the two programs

@lru_cache(maxsize=None)
def record(name: str, shared: Path, tiny: bool) -> RecordScript:
    seed = SEEDS[name]
    return RecordScript(shared / seed.script, {**TINY, **seed.tiny} if tiny else {})


@lru_cache(maxsize=None)
def recipe(name: str):
    return load_recipe(ROOT / "recipes" / f"{SEEDS[name].recipe}.yaml")


def our_args(name: str, tiny: bool, **switches) -> SimpleNamespace:
    """The recipe's values (what its script's Hyperparameters holds), with the tiny environment."""
    seed, values = SEEDS[name], dict(recipe(name).values)
    env = {**TINY, **seed.tiny} if tiny else {}
    ours = {v: k for k, v in seed.aliases.items()}
    enabled = recipe_features(values)
    by_env = {hp.env: hp for hp in all_hparams() if hp.feature is None or hp.feature in enabled}
    for key, raw in env.items():
        hp = by_env.get(ours.get(key, key))
        if hp is not None:
            values[hp.name] = hp.parse(str(raw))
    return SimpleNamespace(**{**values, **switches})


def cuda_buffers(model: torch.nn.Module) -> torch.nn.Module:
    """Buffers as both scripts leave them on CUDA (model.bfloat16(); parameters back to fp32):
    bf16. Parameters stay fp32, so the comparison is in fp32 with the positions CUDA rounds."""
    for module in model.modules():
        for key, buf in module._buffers.items():
            if buf is not None and buf.is_floating_point():
                module._buffers[key] = buf.bfloat16()
    return model


def perturbed_state(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> dict:
    """The model's init plus noise, so that zero-initialised projections carry signal too."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous() if v.is_floating_point() else v
            for k, v in model.state_dict().items()}


def record_logits(script: RecordScript, model, ids: torch.Tensor) -> torch.Tensor:
    """fp32 logits of the record's model: forward_logits where it has one, else the logits its
    forward passes to F.cross_entropy."""
    with torch.no_grad(), cpu_stubs():
        if hasattr(model, "forward_logits"):
            return model.forward_logits(ids).float()
        seen = []
        real = F.cross_entropy
        script.module.F = SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
        script.module.F.cross_entropy = lambda logits, *a, **k: (seen.append(logits), real(logits, *a, **k))[1]
        try:
            model(ids, ids)
        finally:
            script.module.F = F
        return seen[0].float().view(*ids.shape, -1)


def max_diff(a: dict, b: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for k in a:
        d = (a[k].float() - b[k].float()).abs().max().item() if a[k].numel() else 0.0
        if d > worst or math.isnan(d):
            worst, where = d, k
    return worst, where


# ---------------------------------------------------------------- rows

def check_hparams(name: str, shared: Path) -> Row:
    """Every value the recipe's script declares that the record reads from the same variable."""
    seed, rec = SEEDS[name], record(name, shared, False)
    defaults, values = rec.env_defaults(), recipe(name).values
    enabled = recipe_features(values)
    compared, unexplained, overridden = 0, [], []
    for hp in all_hparams():
        env = seed.aliases.get(hp.env, hp.env)
        if (hp.feature and hp.feature not in enabled) or env not in defaults:
            continue
        compared += 1
        theirs, mine = defaults[env], values[hp.name]
        equal = (theirs == mine) if hp.kind is str else (float(theirs) == float(mine))
        if not equal:
            (overridden if env in seed.run else unexplained).append(f"{env}={theirs}->{mine}")
    detail = f"{compared} values read from the same environment variables equal"
    if overridden:
        detail += "; set by the run, not the script default: " + ", ".join(overridden)
    if unexplained:
        return Row(name, "hparams", "DIFFERS", detail + "; DIFFER: " + ", ".join(unexplained))
    return Row(name, "hparams", "same", detail)


def check_params(name: str, shared: Path) -> Row:
    """Parameter names, shapes and count of the full-size models (on the meta device)."""
    rec = record(name, shared, False)
    with torch.device("meta"), cpu_stubs():
        theirs = rec.build_model(rec.args())
        mine = ours_model.GPT(our_args(name, False))
    a = [(k, tuple(p.shape)) for k, p in theirs.named_parameters()]
    b = [(k, tuple(p.shape)) for k, p in mine.named_parameters()]
    count = sum(p.numel() for p in theirs.parameters())
    if a != b:
        diff = sorted(set(a) ^ set(b))[:4]
        return Row(name, "params", "DIFFERS", f"record {count:,}, recipe {sum(p.numel() for p in mine.parameters()):,}; {diff}")
    return Row(name, "params", "same", f"full size (meta device): {len(a)} tensors, {count:,} parameters, same names, "
                                       "shapes and order")


def tiny_models(name: str, shared: Path, seed: int = 1337):
    """(record model, our model, our args), each built right after torch.manual_seed(seed)."""
    rec = record(name, shared, True)
    args = our_args(name, True)
    with cpu_stubs():
        torch.manual_seed(seed)
        theirs = rec.build_model(rec.args())
    torch.manual_seed(seed)
    return theirs, ours_model.GPT(args), args


def tiny_pair(name: str, shared: Path, scale: float = 0.05):
    """(record script, its tiny model, ours, our args): both loaded with one perturbed state dict."""
    theirs, mine, args = tiny_models(name, shared)
    state = perturbed_state(theirs, scale=scale)
    theirs.load_state_dict(state)
    mine.load_state_dict(state)
    return record(name, shared, True), theirs, mine, args


def check_init(name: str, shared: Path) -> Row:
    theirs, mine, _ = tiny_models(name, shared)
    a, b = theirs.state_dict(), mine.state_dict()
    if list(a) != list(b):
        return Row(name, "init", "DIFFERS", f"state dict keys differ: {sorted(set(a) ^ set(b))[:4]}")
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    if unequal:
        d, k = max_diff({k: a[k] for k in unequal}, {k: b[k] for k in unequal})
        return Row(name, "init", "DIFFERS", f"{len(unequal)} tensors differ, max {d:.3g} at {k}")
    return Row(name, "init", "same", f"tiny model, same seed: all {len(a)} tensors bitwise equal")


def check_logits(name: str, shared: Path) -> Row:
    """fp32 logits at the record's training sequence length on one shared state dict."""
    rec, theirs, mine, _ = tiny_pair(name, shared)
    cuda_buffers(theirs), cuda_buffers(mine)
    theirs.eval(), mine.eval()
    seq_len = record(name, shared, False).args().train_seq_len
    ids = torch.randint(0, TINY["VOCAB_SIZE"], (1, seq_len), generator=torch.Generator().manual_seed(1))
    a = record_logits(rec, theirs, ids)
    with torch.no_grad():
        b = mine(ids)
    d = (a - b).abs().max().item()
    status = "same" if d == 0 else "close" if d <= LOGIT_TOL else "DIFFERS"
    return Row(name, "logits", status, f"T={seq_len}, fp32 with CUDA's bf16 RoPE buffers: max abs diff {d:.1e} "
                                       f"(tolerance {LOGIT_TOL:g})")


def record_optimizers(rec: RecordScript, model, args) -> dict:
    """The record's optimizers, made by the statements of its main() that make them."""
    names = dict(base_model=model, args=args, distributed=False, local_rank=0, device=torch.device("cpu"))
    return rec.run(rec.between("restore_low_dim_params_to_fp32(base_model)", "n_params ="), names)


def record_step(rec: RecordScript, made: dict, step: int) -> None:
    """One optimizer step of the record's training loop (schedules, clip, step, zero_grad)."""
    zero = lambda: [opt.zero_grad(set_to_none=True) for opt in made["optimizers"]]  # noqa: E731
    rec.run(rec.fragment("frac = min(step / args.muon_momentum_warmup_steps", "zero_grad_all()"),
            {**made, "step": step, "scale": 1.0, "zero_grad_all": zero})


def shared_grads(model, step: int) -> dict:
    gen = torch.Generator().manual_seed(100 + step)
    return {k: torch.randn(p.shape, generator=gen) * 0.01 for k, p in model.named_parameters()}


def check_optimizer(name: str, shared: Path) -> Row:
    """Two optimizer steps from one state on the same gradients (Muon in bf16, as on CUDA)."""
    rec, theirs, mine, args = tiny_pair(name, shared)
    made = record_optimizers(rec, theirs, rec.args())
    with mock.patch.object(ours_optim, "muon_dtype", lambda device: torch.bfloat16):
        optimizers, muon = ours_optim.build_optimizers(args, mine)
        for step in range(2):
            grads = shared_grads(theirs, step)
            for model in (theirs, mine):
                for k, p in model.named_parameters():
                    p.grad = grads[k].clone()
            record_step(rec, made, step)
            ours_train.optimizer_step(args, mine, optimizers, muon, step, 1.0)
    d, where = max_diff(dict(theirs.named_parameters()), dict(mine.named_parameters()))
    groups = " + ".join(type(o).__name__ for o in made["optimizers"])
    status = "same" if d == 0 else "close" if d <= 1e-7 else "DIFFERS"
    return Row(name, "optimizer", status, f"2 steps of {groups} on shared gradients: max abs diff {d:.1e}"
                                          + (f" ({where})" if d else ""))


def record_wm(rec: RecordScript, sd: dict) -> dict:
    result, meta = rec.call("mixed_quantize_int6", sd, rec.call_literal("mixed_quantize_int6", 1))
    return {"w": result, "m": meta}


def record_prune(rec: RecordScript, first: str, sd: dict) -> dict:
    """The record's own pruning statement, on the state dict (or on parameters that are its tensors)."""
    params = SimpleNamespace(named_parameters=lambda: list(sd.items()))
    rec.run(rec.fragment(first), dict(sd_cpu=sd, base_model=params, args=rec.args(), master_process=False))
    return sd


def record_int8_then_mixed(rec: RecordScript, sd: dict) -> dict:
    back = rec.call("dequantize_state_dict_int8", rec.call("quantize_state_dict_int8", sd)[0])
    return rec.call("quantize_state_dict_mixed", {k: back[k] for k in sd})  # the model's order, after loading


# export kind: (artifact object from a state dict, its dequantizer, main()'s variable of the compressed artifact)
EXPORTS = {
    "int8": (lambda rec, sd: rec.call("quantize_state_dict_int8", sd)[0],
             lambda rec, obj, sd: rec.call("dequantize_state_dict_int8", obj), "quant_blob"),
    "wm": (record_wm, lambda rec, obj, sd: rec.call("dequantize_mixed_int6", obj["w"], obj["m"], sd), "quant_blob"),
    "wm_prune_sd": (lambda rec, sd: record_wm(rec, record_prune(rec, "if args.prune_pct > 0:", sd)),
                    lambda rec, obj, sd: rec.call("dequantize_mixed_int6", obj["w"], obj["m"], sd), "quant_blob"),
    "wm_prune_params": (lambda rec, sd: record_wm(rec, record_prune(rec, "with torch.no_grad():", sd)),
                        lambda rec, obj, sd: rec.call("dequantize_mixed_int6", obj["w"], obj["m"], sd), "quant_blob"),
    "int8_then_mixed": (record_int8_then_mixed,
                        lambda rec, obj, sd: rec.call("dequantize_state_dict_mixed", dict(obj)), "mixed_blob"),
}
EXPORT_SCALES = (0.02, 1.0)  # std of the weights: trained-like (the 1/31 floor bites) and large


def export_state(name: str, shared: Path, scale: float, blocks=("0",)) -> dict:
    """Full-size tensors with the dtypes the record exports on CUDA (embeddings bf16), N(0, scale^2): every tensor
    outside the blocks, the `blocks` (None: all), and the tensors the recipe keeps in fp16 by name (seed 001:
    blocks.8.attn.c_k)."""
    keep = [p for p in getattr(our_args(name, False), "keep_fp16", "").split(",") if p]
    rec = record(name, shared, False)
    with torch.device("meta"), cpu_stubs():
        model = rec.build_model(rec.args()).bfloat16()
        for m in model.modules():
            if isinstance(m, rec.module.CastedLinear):
                m.float()
        rec.module.restore_low_dim_params_to_fp32(model)
    gen = torch.Generator().manual_seed(7)
    return {k: (scale * torch.randn(v.shape, generator=gen)).to(v.dtype) for k, v in model.state_dict().items()
            if not k.startswith("blocks.") or blocks is None or k.split(".")[1] in blocks or any(p in k for p in keep)}


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def check_export(name: str, shared: Path) -> Row:
    """Artifact bytes (before compression) and dequantized tensors on the same state dict, at two weight
    scales; the compressor on a sample of the artifact."""
    rec, args = record(name, shared, False), our_args(name, False)
    make, dequantize, blob_name = EXPORTS[SEEDS[name].export]
    notes = []
    for scale in EXPORT_SCALES:
        sd = export_state(name, shared, scale)
        theirs_obj = make(rec, {k: v.clone() for k, v in sd.items()})
        theirs, mine = saved(theirs_obj), saved(ours_quant.export_object(args, {k: v.clone() for k, v in sd.items()})[0])
        if theirs != mine:
            return Row(name, "export", "DIFFERS", f"std {scale}: {len(theirs):,} bytes (record) vs {len(mine):,} (recipe)")
        a = dequantize(rec, theirs_obj, sd)
        b = ours_quant.dequantize_export(torch.load(io.BytesIO(mine), map_location="cpu"))
        unequal = [k for k in a if not torch.equal(a[k], b[k].to(a[k].dtype))]
        if unequal or set(a) != set(b):
            return Row(name, "export", "DIFFERS", f"std {scale}: dequantized {unequal[:3]} differ")
        notes.append(f"{scale} ({len(theirs):,} B)")
    sample = theirs[: 1 << 16]
    raw_name = blob_name.replace("blob", "raw")
    import zstandard  # seed 003 imports it inside main()

    their_blob = rec.run(rec.fragment(f"{blob_name} = "), {raw_name: sample, "zstandard": zstandard})[blob_name]
    if their_blob != ours_quant.compress_bytes(args, sample):
        return Row(name, "export", "DIFFERS", "the compressor or its level differs")
    return Row(name, "export", "same", f"{len(sd)} full-size tensors (outside the blocks, block 0, the fp16 keep-list) at "
                                       f"weight std {' and '.join(notes)}: torch.save bytes identical, dequantized "
                                       "tensors equal; same compressor and level")


# ---------------------------------------------------------------- QAT and final scores on a tiny model

BOS = 1


def tiny_val(n: int = 4 * 512 + 1, seed: int = 5) -> torch.Tensor:
    """Validation tokens: BOS-led documents of 3 to 300 tokens (some shorter than 5, 32 and a chunk)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, TINY["VOCAB_SIZE"], (n,), generator=gen)
    pos = 0
    while pos < n:
        tokens[pos] = BOS
        pos += int(torch.randint(3, 300, (1,), generator=gen))
    return tokens.to(torch.uint16).to(torch.int64)


def tiny_luts() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(6)
    vocab = TINY["VOCAB_SIZE"]
    base = torch.randint(1, 4, (vocab,), generator=gen).to(torch.int16)
    space = torch.rand(vocab, generator=gen) < 0.3
    boundary = torch.zeros(vocab, dtype=torch.bool)
    boundary[:2] = True
    base[:2] = 0
    return base, space, boundary


def record_qat_on(name: str, rec: RecordScript, model) -> None:
    """The record's fake quantization switched on as it was when it ran: seed 001 from the start (its
    main() sets per-layer flags), seeds 000 and 002 by the class flag late QAT left set for TTT."""
    if SEEDS[name].qat == "train":
        rec.run(rec.fragment('qat_enabled = bool(int(os.environ.get("QAT_ENABLED", "1")))', "if qat_enabled:"),
                {"base_model": model})
    else:
        rec.module.CastedLinear._qat_enabled = True


def our_qat_on(args, model) -> None:
    ours_qat.configure_qat(args, model)
    ours_qat.set_qat(model, True)


def check_qat(name: str, shared: Path) -> Row:
    """Training-mode loss and gradients with the fake quantization on, on one shared state dict."""
    rec, theirs, mine, args = tiny_pair(name, shared)
    ids = torch.randint(0, TINY["VOCAB_SIZE"], (2, 129), generator=torch.Generator().manual_seed(2))
    try:
        record_qat_on(name, rec, theirs)
        our_qat_on(args, mine)
        out = []
        for model in (theirs, mine):
            model.train()
            with cpu_stubs():
                loss = model(ids[:, :-1], ids[:, 1:])
            loss.backward()
            out.append((loss.item(), {k: p.grad for k, p in model.named_parameters()}))
    finally:
        rec.module.CastedLinear._qat_enabled = False
    d_loss, (d_grad, _) = abs(out[0][0] - out[1][0]), max_diff(out[0][1], out[1][1])
    where_live = "in training from step 0" if SEEDS[name].qat == "train" else "in TTT (compile folded the training flag)"
    status = "same" if d_loss == 0 and d_grad == 0 else "close" if max(d_loss, d_grad) <= LOGIT_TOL else "DIFFERS"
    return Row(name, "qat", status, f"STE live {where_live}: loss abs diff {d_loss:.1e}, gradients max abs diff "
                                    f"{d_grad:.1e}")


EVALS = ("roundtrip", "sliding", "ttt_chunked", "pre_eval", "two_phase_pre_eval", "lora_chunks")


def record_score(name: str, rec: RecordScript, model, val, luts) -> tuple[float, float]:
    """(val_loss, val_bpb) of the record's own final scoring code on a tiny model."""
    args, cpu = rec.args(), torch.device("cpu")
    names = dict(args=args, eval_model=model, base_model=model, val_tokens=val, rank=0, world_size=1, device=cpu,
                 distributed=False, master_process=True, effective_eval_seq_len=args.train_seq_len, log0=lambda *a, **k: None,
                 base_bytes_lut=luts[0], has_leading_space_lut=luts[1], is_boundary_token_lut=luts[2])
    kind = SEEDS[name].score
    if kind == "roundtrip":
        return rec.call("eval_val", args, model, 0, 1, cpu, 8, val, *luts)
    if kind == "sliding":
        return rec.call("eval_val_sliding", args, model, 0, 1, cpu, val, *luts, stride=args.eval_stride,
                        batch_seqs=args.eval_batch_seqs)
    if kind == "ttt_chunked":
        return rec.call("eval_val_sliding_ttt", args, model, 0, 1, cpu, val, *luts, stride=args.eval_stride,
                        batch_seqs=args.ttt_batch_seqs, log0=names["log0"])
    first, out = {"pre_eval": ('ttt_epochs = int(os.environ.get("TTT_EPOCHS", 30))', "sw_val"),
                  "two_phase_pre_eval": ('ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "1")))', "sw_val"),
                  "lora_chunks": ('ttt_enabled = int(os.environ.get("TTT_ENABLED", "1"))', "ttt")}[kind]
    last = "if ttt_enabled:" if kind == "lora_chunks" else "if args.eval_stride > 0 and args.eval_stride < sw_seq_len:"
    done = rec.run(rec.fragment(first, last), names)
    return (done[f"{out}_loss"], done[f"{out}_bpb"]) if kind != "lora_chunks" else (done["ttt_loss"], done["ttt_bpb"])


def our_score(args, model, val, luts) -> tuple[float, float]:
    cpu = torch.device("cpu")
    last = ours_train.eval_pass_names(args)[-1]
    if last == "ttt":
        if args.ttt_qat:
            ours_qat.configure_qat(args, model)
        return ours_ttt.eval_ttt(args, model, 0, 1, cpu, val, luts, lambda *a: None)[1:]
    if last == "sliding":
        return ours_evaluate.eval_sliding(args, model, 0, 1, cpu, val, luts)
    return ours_bpb.eval_val(args, model, 0, 1, cpu, 8, val, luts)


def score_pair(name: str, shared: Path, **switches) -> tuple[tuple, tuple]:
    rec, theirs, mine, _ = tiny_pair(name, shared, scale=0.02)
    args, val, luts = our_args(name, True, **switches), tiny_val(), tiny_luts()
    try:
        if SEEDS[name].qat == "ttt":
            record_qat_on(name, rec, theirs)
        torch.manual_seed(99)  # the RNG draws of TTT (seed 000's batch order, seed 003's adapters) start alike
        a = record_score(name, rec, theirs, val, luts)
    finally:
        rec.module.CastedLinear._qat_enabled = False
    torch.manual_seed(99)
    return a, our_score(args, mine, val, luts)


def check_score(name: str, shared: Path) -> Row:
    """The final score (the record's last eval: TTT, sliding window or round trip) on a tiny model and split."""
    seed = SEEDS[name]
    (a_loss, a_bpb), (b_loss, b_bpb) = score_pair(name, shared, **seed.switches)
    d = abs(a_bpb - b_bpb)
    detail = f"{seed.score}, tiny model, {len(tiny_val()) - 1} tokens: val_bpb {a_bpb:.6f} (record), {b_bpb:.6f}: abs diff {d:.1e}"
    if not seed.switches:
        return Row(name, "score", "same" if d == 0 else "close" if d <= BPB_TOL else "DIFFERS", detail)
    _, (c_loss, c_bpb) = score_pair(name, shared)
    shown = ", ".join(f"{k}={v}" for k, v in seed.switches.items())
    detail = f"with {shown}: {detail}; as shipped: {c_bpb:.6f} ({c_bpb - a_bpb:+.1e}; {seed.why})"
    return Row(name, "score", "switch" if d <= BPB_TOL else "DIFFERS", detail)


CHECKS = {"hparams": check_hparams, "params": check_params, "init": check_init, "logits": check_logits,
          "optimizer": check_optimizer, "export": check_export, "qat": check_qat, "score": check_score}


def run(names=None, shared: Path | None = None, checks=None) -> list[Row]:
    """Every comparison (or those named) of every seed recipe (or those named), on one intra-op thread."""
    shared = shared or SHARED
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend
    try:
        return [fn(name, shared) for name in names or SEEDS for check, fn in CHECKS.items()
                if (checks is None or check in checks) and (check != "qat" or SEEDS[name].qat)]
    finally:
        torch.set_num_threads(threads)


def table(rows: list[Row]) -> str:
    """The Markdown table of the comparisons (README, python -m packager.parity)."""
    out = ["| recipe | record | check | result | detail |", "| --- | --- | --- | --- | --- |"]
    out += [f"| `{r.seed}` | {SEEDS[r.seed].label} | {r.check} | {r.status} | {r.detail} |" for r in rows]
    return "\n".join(out) + "\n"
