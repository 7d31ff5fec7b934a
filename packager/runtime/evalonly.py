"""Eval-only mode: score a saved artifact without training, to tune evaluation (TTT) settings.

EVAL_ONLY_PATH=final_model.int6.ptz loads that artifact (the recipe's own export format) into the
model and runs the recipe's final eval paths; no training data is read. The result line says
`eval_only` with the artifact, so the log is never taken for a training run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch.distributed as dist

from packager.runtime.features import HP, feature
from packager.runtime.quant import import_model

FEATURES = {
    "eval_only": ("EVAL_ONLY_PATH: score a saved artifact without training (to tune phased TTT)", "ttt_mode == 'phased'"),
}

HPARAMS = (
    HP("eval_only_path", "EVAL_ONLY_PATH", "eval.only_path", str, "", feature="eval_only",
       doc="artifact to score without training (empty: train as usual)"),
)


def eval_only(args, model, base_model, rank, world_size, device, grad_accum_steps, val_tokens, luts, log0, scores):
    """Load args.eval_only_path into the model, run `scores` (train.final_scores), log the result."""
    path = Path(args.eval_only_path)
    if not path.is_file():
        raise SystemExit(f"error: EVAL_ONLY_PATH={args.eval_only_path}: no such artifact")
    blob = path.read_bytes()
    base_model.load_state_dict(import_model(args, blob), strict=True)
    if feature("depth_recurrence"):
        base_model.looping_active = args.num_loops > 0  # the exported model ran with its loops on
    log0(f"eval_only: {path} ({len(blob)} bytes), no training")
    t0 = time.perf_counter()
    paths = scores(args, model, base_model, rank, world_size, device, grad_accum_steps, val_tokens, luts, log0)
    log0(f"total_eval_time:{time.perf_counter() - t0:.1f}s")
    name, loss, bpb, ms = paths[-1]
    log0("golf_result_json:" + json.dumps({"eval_only": str(path), "seed": args.seed, "eval_path": name,
                                           "val_loss": loss, "val_bpb": bpb, "eval_time_ms": round(ms),
                                           "bytes_model": len(blob), "world_size": world_size}, sort_keys=True))
    log0.close()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
