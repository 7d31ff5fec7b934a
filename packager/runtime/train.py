"""The training entry point: setup, the wallclock-capped loop, export and final scoring."""

from __future__ import annotations

import copy
import glob
import hashlib
import inspect
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from packager.runtime.bpb import build_sentencepiece_luts, eval_val
from packager.runtime.data import DistributedTokenLoader, load_validation_tokens
from packager.runtime.docattn import DocumentTokenLoader, check_document_attention
from packager.hparams import Hyperparameters
from packager.runtime.averaging import build_averager
from packager.runtime.evaluate import eval_sliding
from packager.runtime.features import HP, feature
from packager.runtime.caseops import load_byte_sidecar
from packager.runtime.evalonly import eval_only
from packager.runtime.gptq import kind_summary, timed_hessians
from packager.runtime.frontier import looping_due
from packager.runtime.kernels import fused_paths
from packager.runtime.model import GPT, CastedLinear, attention_kernel, restore_low_dim_params_to_fp32
from packager.runtime.optim import build_optimizers, lr_multiplier, muon_momentum_at, train_fraction
from packager.runtime.qat import configure_qat, qat_active, set_qat
from packager.runtime.quant import check_export_args, export_label, export_model, import_model
from packager.runtime.ttt import check_lora_args, eval_ttt
from packager.runtime.evaluate import eval_window
from packager.runtime.system import (
    Logger, all_reduce_, autocast_ctx, device_description, exit_with_error, free_log_path, maybe_compile,
    python_version, setup_distributed, sync,
)

FEATURES: dict[str, str] = {}

HPARAMS = (
    HP("seed", "SEED", "seeds[0]", int, 1337, doc="first seed of the recipe; SEED=N runs another"),
    HP("iterations", "ITERATIONS", "train.iterations", int, 20000, doc="step budget; the wallclock cap usually ends training first"),
    HP("warmup_steps", "WARMUP_STEPS", "train.warmup_steps", int, 20, doc="compile/priming steps, undone before timing starts"),
    HP("warmdown_iters", "WARMDOWN_ITERS", "train.warmdown_iters", int, 1200, doc="length of the linear LR decay to zero"),
    HP("train_batch_tokens", "TRAIN_BATCH_TOKENS", "train.train_batch_tokens", int, 524288),
    HP("train_seq_len", "TRAIN_SEQ_LEN", "train.train_seq_len", int, 1024),
    HP("max_wallclock_seconds", "MAX_WALLCLOCK_SECONDS", "train.max_wallclock_seconds", float, 600.0,
       doc="training stops at this much measured train time (0: no cap)"),
    HP("val_loss_every", "VAL_LOSS_EVERY", "train.val_loss_every", int, 1000, doc="0: validate only at the end"),
    HP("train_log_every", "TRAIN_LOG_EVERY", "train.train_log_every", int, 200),
    HP("grad_clip_norm", "GRAD_CLIP_NORM", "train.grad_clip_norm", float, 0.0, doc="0: no clipping"),
)

# Stamped by the renderer so that every log names the recipe and tool that made the script.
RECIPE_SHA256 = "unrendered"
PACKAGER_VERSION = "dev"


def hparams_dict(args) -> dict:
    return {k: getattr(args, k) for k in sorted(dir(args)) if not k.startswith("_")}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def open_data(args, train_files: str, val_files: str) -> spm.SentencePieceProcessor:
    """The tokenizer, with the shards and the batches cut from them checked; errors name the variable."""
    span = 8 * args.train_seq_len  # steps and validation passes cut 8 shares (world size x accumulation)
    if args.train_batch_tokens % span:
        raise ValueError(f"TRAIN_BATCH_TOKENS={args.train_batch_tokens} must be a multiple of 8 x TRAIN_SEQ_LEN = {span}")
    if args.val_batch_size < span:
        raise ValueError(f"VAL_BATCH_SIZE={args.val_batch_size} must be at least 8 x TRAIN_SEQ_LEN = {span}")
    for pattern in (train_files, val_files):
        if not glob.glob(pattern):
            raise FileNotFoundError(f"DATA_PATH={args.data_path} holds no {Path(pattern).name} shards")
    if not Path(args.tokenizer_path).is_file():
        raise FileNotFoundError(f"TOKENIZER_PATH={args.tokenizer_path}: no such file")
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer_path)
    if int(sp.vocab_size()) != args.vocab_size:
        raise ValueError(f"VOCAB_SIZE={args.vocab_size} does not match the tokenizer's {int(sp.vocab_size())} pieces")
    return sp


def build_model(args, device: torch.device) -> GPT:
    model = GPT(args).to(device)
    if device.type == "cuda":
        # bf16 activations everywhere, but matmul weights and small control tensors stay
        # fp32 so the optimizers update full-precision values.
        model = model.bfloat16()
        for module in model.modules():
            if isinstance(module, CastedLinear):
                module.float()
        restore_low_dim_params_to_fp32(model)
    return model


def make_loader(args, train_files: str, rank: int, world_size: int, device: torch.device):
    if feature("doc_attention"):  # the #1530 packing: a rank's span is one row, cut at document starts
        return DocumentTokenLoader(train_files, rank, world_size, device, args.train_seq_len if args.doc_attention else 0)
    else:
        return DistributedTokenLoader(train_files, rank, world_size, device)


def wrap_ddp(model, device: torch.device, local_rank: int) -> DDP:
    # The model's only buffers are RoPE tables every rank computes alike, so they are not
    # re-broadcast each forward (torch >= 2.10 renamed the switch).
    params = inspect.signature(DDP.__init__).parameters
    quiet = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DDP(model, device_ids=[local_rank] if device.type == "cuda" else None, **quiet)


def train_step(args, model, loader, optimizers, grad_accum_steps: int, device, distributed: bool):
    """Gradients of one step over grad_accum_steps micro-batches; returns the mean loss."""
    total = torch.zeros((), device=device)
    for micro in range(grad_accum_steps):
        if distributed:
            # Only the last micro-batch all-reduces gradients.
            model.require_backward_grad_sync = micro == grad_accum_steps - 1
        if feature("doc_attention"):  # one packed row and its document starts (None: DOC_ATTENTION=0)
            x, y, cu_seqlens = loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
            with autocast_ctx(device):
                loss = model(x, y, cu_seqlens=cu_seqlens)
        else:
            x, y = loader.next_batch(args.train_batch_tokens, args.train_seq_len, grad_accum_steps)
            with autocast_ctx(device):
                loss = model(x, y)
        total += loss.detach()
        (loss / grad_accum_steps).backward()
    return total / grad_accum_steps


def prime_compiled_paths(args, model, base_model, optimizers, loader, grad_accum_steps, device, distributed, log0):
    """Run warmup_steps real steps so compilation happens before the timer starts, then
    restore the initial weights and optimizer state: timed training starts from init."""
    init_model = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
    init_opts = [copy.deepcopy(opt.state_dict()) for opt in optimizers]
    phases = [("warmup_step", False)]
    if feature("depth_recurrence"):
        if args.num_loops > 0:  # the looped graph compiles now too, not when looping starts mid-run
            phases.append(("loop_warmup_step", True))
    for name, looping in phases:
        if feature("depth_recurrence"):
            base_model.looping_active = looping
        for i in range(args.warmup_steps):
            train_step(args, model, loader, optimizers, grad_accum_steps, device, distributed)
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            if args.warmup_steps <= 20 or (i + 1) % 10 == 0 or i + 1 == args.warmup_steps:
                log0(f"{name}:{i + 1}/{args.warmup_steps}")
    if feature("depth_recurrence"):
        base_model.looping_active = False
    base_model.load_state_dict(init_model, strict=True)
    for opt, state in zip(optimizers, init_opts):
        opt.load_state_dict(state)


def optimizer_step(args, base_model, optimizers, muon, step: int, scale: float) -> None:
    """Apply step `step`'s schedules (Muon momentum warmup, LR multiplier `scale`), clip, step, zero."""
    for group in muon.param_groups:
        group["momentum"] = muon_momentum_at(args, step)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * scale
    if args.grad_clip_norm > 0:
        torch.nn.utils.clip_grad_norm_(base_model.parameters(), args.grad_clip_norm)
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


def train(args, model, base_model, optimizers, muon, loader, eval_fn, grad_accum_steps, device, distributed, log0,
          averager=None):
    """The timed loop. Returns (steps, train_time_ms, stopped_early)."""
    max_ms = 1000.0 * args.max_wallclock_seconds if args.max_wallclock_seconds > 0 else None
    if feature("gptq"):
        if max_ms is not None and args.gptq:  # calibration reads training data: it counts as training time
            max_ms -= 1000.0 * args.gptq_reserve_seconds
            log0(f"gptq:reserving {args.gptq_reserve_seconds:.1f}s, effective={max_ms:.0f}ms")
    train_ms, stop_after, step = 0.0, None, 0
    if feature("qat"):
        qat_on = False
    sync(device)
    t0 = time.perf_counter()
    while True:
        last = step == args.iterations or (stop_after is not None and step >= stop_after)
        if last or (args.val_loss_every > 0 and step % args.val_loss_every == 0):
            # Validation time is not training time: stop the clock around it.
            sync(device)
            train_ms += 1000.0 * (time.perf_counter() - t0)
            val_loss, val_bpb = eval_fn(model)
            log0(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} "
                 f"train_time:{train_ms:.0f}ms step_avg:{train_ms / max(step, 1):.2f}ms")
            sync(device)
            t0 = time.perf_counter()
        if last:
            if stop_after is not None and step < args.iterations:
                log0(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{args.iterations}")
            return step, train_ms, stop_after is not None and step < args.iterations
        elapsed_ms = train_ms + 1000.0 * (time.perf_counter() - t0)
        scale = lr_multiplier(args, step, elapsed_ms)
        if feature("depth_recurrence"):
            if looping_due(args, base_model, train_fraction(args, step, elapsed_ms)):
                base_model.looping_active = True
                log0(f"layer_loop:enabled step:{step} frac:{train_fraction(args, step, elapsed_ms):.3f} "
                     f"encoder:{base_model.loop_order[0]} decoder:{base_model.loop_order[1]}")
        if feature("qat"):
            if args.qat_train and not qat_on and qat_active(args, step, elapsed_ms, scale):
                qat_on = True
                set_qat(base_model, True)
                log0(f"qat:enabled step:{step} lr_scale:{scale:.4f}")
        loss = train_step(args, model, loader, optimizers, grad_accum_steps, device, distributed)
        optimizer_step(args, base_model, optimizers, muon, step, scale)
        step += 1
        if averager is not None:
            averager.after_step(base_model, step, scale)
        now_ms = train_ms + 1000.0 * (time.perf_counter() - t0)
        if args.train_log_every > 0 and (step <= 10 or step % args.train_log_every == 0 or stop_after is not None):
            log0(f"step:{step}/{args.iterations} train_loss:{loss.item():.4f} "
                 f"train_time:{now_ms:.0f}ms step_avg:{now_ms / step:.2f}ms")
        # Every rank must agree on the stop step, so the cap decision is all-reduced.
        capped = torch.tensor(int(max_ms is not None and now_ms >= max_ms), device=device)
        if distributed and max_ms is not None:
            all_reduce_(capped, op=dist.ReduceOp.MAX)
        if stop_after is None and bool(capped.item()):
            stop_after = step


def export_and_reload(args, base_model, out_dir: Path, code_bytes: int, master: bool, distributed: bool, log0,
                      hessians=None):
    """Quantize + compress the trained weights, write the artifact, then load the model back
    from the bytes on disk so the final score is the score of what would be shipped."""
    size_label, _ = export_label(args)
    blob, stats = export_model(args, base_model.state_dict(), hessians)
    if feature("gptq"):
        if "kinds" in stats:
            log0("Quantized weights:\n" + "\n".join(kind_summary(stats["kinds"])))
    path = out_dir / f"final_model.{size_label.split('+')[0]}.ptz"
    if master:
        path.write_bytes(blob)
        log0(f"Serialized model {size_label}: {len(blob)} bytes "
             f"(payload:{stats.get('payload_bytes', 0)} raw_torch:{stats.get('raw_bytes', 0)})")
        log0(f"Code size: {code_bytes} bytes")
        log0(f"Total submission size {size_label}: {len(blob) + code_bytes} bytes")
    if distributed:
        dist.barrier()
    base_model.load_state_dict(import_model(args, path.read_bytes()), strict=True)
    return len(blob)


def eval_pass_names(args) -> list[str]:
    """The recipe's final evaluations (eval.passes; default: every one this script has), in the order round trip,
    sliding window, TTT: TTT changes the weights, so nothing is scored after it but its own score."""
    built = ["roundtrip"]
    if feature("sliding"):
        built += ["sliding"] if args.sliding_stride > 0 else []
    if feature("ttt"):
        built += ["ttt"] if args.ttt_mode != "none" else []
    chosen = [name.strip() for name in args.eval_passes.split(",") if name.strip()] or built
    if [name for name in built if name in chosen] != chosen:
        raise ValueError(f"EVAL_PASSES={args.eval_passes!r}: name each of {', '.join(built)} at most once, in this order")
    return chosen


def timed_eval(device, log0, fn, extra: str = "") -> tuple[str, float, float, float]:
    """Run one final evaluation and log it in the upstream two-line format."""
    sync(device)
    t0 = time.perf_counter()
    name, loss, bpb = fn()
    sync(device)
    ms = 1000.0 * (time.perf_counter() - t0)
    log0(f"{name} val_loss:{loss:.4f} val_bpb:{bpb:.4f}{extra} eval_time:{ms:.0f}ms")
    log0(f"{name}_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}")
    return name, loss, bpb, ms


def final_scores(args, model, base_model, rank, world_size, device, grad_accum_steps, val_tokens, luts, log0):
    """The recipe's eval passes (eval.passes) on the loaded weights, in order: [(name, loss, bpb, ms)]."""
    passes, paths = eval_pass_names(args), []
    if "roundtrip" in passes:
        paths.append(timed_eval(device, log0, lambda: (f"final_{export_label(args)[1]}_roundtrip", *eval_val(
            args, model, rank, world_size, device, grad_accum_steps, val_tokens, luts))))
    if feature("sliding"):
        if "sliding" in passes:
            paths.append(timed_eval(device, log0, lambda: ("final_sliding_window", *eval_sliding(
                args, model, rank, world_size, device, val_tokens, luts)), f" stride:{args.sliding_stride}"))
    if feature("ttt"):
        if "ttt" in passes:  # TTT adapts the bare module: LoRA hooks its layers and it toggles requires_grad.
            paths.append(timed_eval(device, log0, lambda: eval_ttt(
                args, base_model, rank, world_size, device, val_tokens, luts, log0)))
    return paths


def main() -> None:
    args = Hyperparameters()
    try:
        # Settings and input files are checked before anything is written or trained: a mistake ends
        # the run with one line naming the variable instead of a traceback from every rank.
        check_export_args(args)
        eval_pass_names(args)
        if feature("sliding"):
            eval_window(args)
        if feature("ttt_lora_targets"):
            check_lora_args(args)
        train_files = os.path.join(args.data_path, "fineweb_train_*.bin")
        val_files = os.path.join(args.data_path, "fineweb_val_*.bin")
        sp = open_data(args, train_files, val_files)
        val_tokens = load_validation_tokens(val_files, args.train_seq_len)
        distributed, rank, world_size, local_rank, device = setup_distributed()
        seed_everything(args.seed)
        base_model = build_model(args, device)
    except (ValueError, OSError) as exc:
        exit_with_error(exc)
    script = Path(__file__).resolve()
    code = script.read_bytes()
    master = rank == 0
    grad_accum_steps = 8 // world_size
    out_dir = Path(os.environ.get("LOG_DIR", str(script.parent)))
    log0 = Logger(free_log_path(out_dir, args.seed) if master else None, master)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    code_sha = hashlib.sha256(code).hexdigest()
    log0(f"code_sha256:{code_sha} code_bytes:{len(code)}")
    log0(f"recipe_sha256:{RECIPE_SHA256} packager:{PACKAGER_VERSION}")
    log0(f"Running Python {python_version()} PyTorch {torch.__version__} device:{device_description(device, world_size)}")
    for name, value in hparams_dict(args).items():
        log0(f"hparam {name}={value}")
    luts = build_sentencepiece_luts(sp, args.vocab_size, device)
    if feature("caseops"):
        if args.caseops_enabled:  # val_bpb counts the original text's bytes, from the sidecar
            luts = (*luts, load_byte_sidecar(args, val_tokens, device))
            log0(f"val_bpb:byte_sidecar original_bytes:{int(luts[3][1:].sum())}")
    log0(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={args.tokenizer_path}")
    log0(f"train_loader:dataset:{Path(args.data_path).name} train_shards:{len(glob.glob(train_files))}")
    log0(f"val_loader:shards pattern={val_files} tokens:{val_tokens.numel() - 1}")

    if feature("qat"):
        # Bit widths are fixed before compiling; only the on/off gate changes later.
        log0(f"qat:layers:{configure_qat(args, base_model)} mlp:{args.qat_bits_mlp} attn:{args.qat_bits_attn}")
    compiled = maybe_compile(base_model, device, dynamic=False, fullgraph=True)
    model = wrap_ddp(compiled, device, local_rank) if distributed else compiled
    optimizers, muon = build_optimizers(args, base_model)
    n_params = sum(p.numel() for p in base_model.parameters())
    log0(f"model_params:{n_params}")
    log0(f"world_size:{world_size} grad_accum_steps:{grad_accum_steps}")
    log0(f"attention:{attention_kernel(args, device)} pinned:{args.attention} num_heads:{args.num_heads} "
         f"num_kv_heads:{args.num_kv_heads}")
    if feature("doc_attention"):
        if args.doc_attention:
            log0(f"doc_attention:{check_document_attention(args, device)} max_len:{args.train_seq_len}")
    if feature("fused_kernels"):
        log0(f"fused_kernels:{fused_paths(args, device)}")
    log0(f"seed:{args.seed}")

    if feature("eval_only"):
        if args.eval_only_path:
            return eval_only(args, model, base_model, rank, world_size, device, grad_accum_steps, val_tokens, luts,
                             log0, final_scores)

    def eval_fn(m):
        return eval_val(args, m, rank, world_size, device, grad_accum_steps, val_tokens, luts)

    if args.warmup_steps > 0:
        loader = make_loader(args, train_files, rank, world_size, device)
        prime_compiled_paths(args, model, base_model, optimizers, loader, grad_accum_steps, device, distributed, log0)
    loader = make_loader(args, train_files, rank, world_size, device)
    averager = build_averager(args, base_model)
    steps, train_ms, stopped_early = train(args, model, base_model, optimizers, muon, loader, eval_fn,
                                           grad_accum_steps, device, distributed, log0, averager)
    if device.type == "cuda":
        log0(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 2**20} MiB "
             f"reserved: {torch.cuda.max_memory_reserved() // 2**20} MiB")

    if feature("qat"):
        set_qat(base_model, False)  # export, reload and every final score see plain weights
    if averager is not None:
        log0(f"averaging:{averager.apply_to(base_model)}")

    hessians = None
    if feature("gptq"):
        calibration_ms = 0.0
        if args.gptq:
            hessians, calibration_ms = timed_hessians(args, base_model, loader, grad_accum_steps, device, log0)
            log0(f"gptq:train_time_with_calibration:{train_ms + calibration_ms:.0f}ms")

    # Evaluation budget starts here: export, reload, and every scored eval path.
    t_export = time.perf_counter()
    model_bytes = export_and_reload(args, base_model, out_dir, len(code), master, distributed, log0, hessians)
    paths = final_scores(args, model, base_model, rank, world_size, device, grad_accum_steps, val_tokens, luts, log0)
    total_eval_s = time.perf_counter() - t_export
    log0(f"total_eval_time:{total_eval_s:.1f}s")
    eval_path, val_loss, val_bpb, _ = paths[-1]
    passes = eval_pass_names(args)
    roundtrip = paths[passes.index("roundtrip")] if "roundtrip" in passes else (None, None, None)
    result = {
        "seed": args.seed, "val_loss": val_loss, "val_bpb": val_bpb, "eval_path": eval_path,
        "roundtrip_val_loss": roundtrip[1], "roundtrip_val_bpb": roundtrip[2],
        "bytes_model": model_bytes, "bytes_code": len(code), "bytes_total": model_bytes + len(code),
        "code_sha256": code_sha, "train_time_ms": round(train_ms), "eval_time_ms": round(sum(p[3] for p in paths)),
        "total_eval_time_s": round(total_eval_s, 3), "steps": steps, "iterations": args.iterations,
        "step_avg_ms": round(train_ms / max(steps, 1), 2), "stopped_early": stopped_early,
        "world_size": world_size, "grad_accum_steps": grad_accum_steps, "model_params": n_params,
        "val_tokens": val_tokens.numel() - 1, "device": device_description(device, world_size),
        "torch": torch.__version__, "python": python_version(),
        "packager_version": PACKAGER_VERSION, "recipe_sha256": RECIPE_SHA256,
    }
    if feature("gptq"):
        result["calibration_ms"] = round(calibration_ms)
    log0("golf_result_json:" + json.dumps(result, sort_keys=True))
    log0.close()
    if distributed:
        # Tear down together: a rank leaving early can abort gloo in its peer.
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
