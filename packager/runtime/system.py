"""Device, distributed and logging primitives shared by every rendered script."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

FEATURES: dict[str, str] = {}


def setup_distributed() -> tuple[bool, int, int, int, torch.device]:
    """(distributed, rank, world_size, local_rank, device) from torchrun's env vars; gloo on CPU, NCCL on CUDA."""
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 0 or 8 % world_size != 0:
        raise ValueError(f"WORLD_SIZE={world_size} must divide 8 so grad_accum_steps stays integral")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if distributed:
        if cuda:
            dist.init_process_group(backend="nccl", device_id=device)
        else:  # gloo: the same script runs under `torchrun --nproc_per_node=2` on a laptop
            dist.init_process_group(backend="gloo")
        dist.barrier()
    return distributed, rank, world_size, local_rank, device


def exit_with_error(exc: Exception) -> None:
    """A setting or input file that cannot work: one line from rank 0 (every rank finds it), exit code 2."""
    if os.environ.get("RANK", "0") == "0":
        print(f"error: {exc}", file=sys.stderr, flush=True)
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.exit(2)


def autocast_ctx(device: torch.device):
    """bf16 autocast on CUDA; plain float32 on CPU (exact, and fast enough for tests)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def maybe_compile(obj, device: torch.device, **kwargs):
    """torch.compile on CUDA (TORCH_COMPILE=0 turns it off); eager on CPU."""
    if device.type != "cuda" or os.environ.get("TORCH_COMPILE", "1") == "0":
        return obj
    return torch.compile(obj, **kwargs)


def all_reduce_(tensor: torch.Tensor, op=None) -> torch.Tensor:
    """In-place all-reduce (sum by default) when running distributed; no-op otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=op if op is not None else dist.ReduceOp.SUM)
    return tensor


def device_description(device: torch.device, world_size: int) -> str:
    return f"{world_size}x{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"


def python_version() -> str:
    return sys.version.split()[0]


def free_log_path(folder: Path, seed: int) -> Path:
    """train_seed<N>.log, or the first free train_seed<N>_run<K>.log: an earlier log is never overwritten."""
    path, k = folder / f"train_seed{seed}.log", 2
    while path.exists():
        path, k = folder / f"train_seed{seed}_run{k}.log", k + 1
    return path


class Logger:
    """Rank-0 logger: every line goes to stdout and, flushed, to the seed's log file."""

    def __init__(self, path: Path | None, master: bool):
        self.master, self.path = master, path
        self.file = open(path, "x", encoding="utf-8") if master and path is not None else None

    def __call__(self, msg: str, console: bool = True) -> None:
        if self.master and console:
            print(msg, flush=True)
        if self.file is not None:
            self.file.write(msg + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
