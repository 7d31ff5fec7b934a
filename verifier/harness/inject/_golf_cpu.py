"""golf-verify's CPU harness inside a torchrun worker: an unmodified record script runs on CPU, and
every score it computes is captured from outside.

Loaded by sitecustomize.py (GOLF_HARNESS=1, LOCAL_RANK set). Nothing here is part of the project's
import graph; it needs only the standard library, numpy and torch.

CPU shims (a table of replacements, applied once):
- devices: `torch.device("cuda", i)` is the CPU device; a TorchFunctionMode rewrites `device=` of
  factories, `.to(...)`, `.cuda()`, `.pin_memory()` (in every thread);
- `torch.cuda.*` (set_device, synchronize, memory statistics, events, streams, properties) answer
  as a CPU would; `torch.autocast("cuda")` is CPU autocast with the same dtype;
- `torch.compile` is eager; `torch.inference_mode` is `no_grad` (tensors made under inference mode
  cannot be used by eager test-time training, and compile would have hidden that);
- `nccl` is `gloo`; collectives gloo lacks (AVG, reduce_scatter_tensor, bf16) are emulated; DDP drops
  `device_ids` and `static_graph`, and its reducers live until the process ends with os._exit (a
  gloo teardown deadlock); SDPA backend switches are left at their CPU defaults; `pin_memory` is off.

Capture (GOLF_CAPTURE_DIR set): every call of F.cross_entropy and F.nll_loss (and a gather of a
log_softmax output) records, per row, the target, the NLL (reduction "none", the script's dtype), a
fingerprint of the row (two fixed random projections: equal rows, equal fingerprints) and, for
log-prob inputs, the row's log-sum-exp; with the call site, whether the row can carry a gradient,
and the number of collectives the rank has completed (to order ranks). Printed lines that carry
val_loss or val_bpb are recorded in the same stream. Written at exit as capture_rank<R>.npz/.json.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import sys
import threading
import time

_FIGURE = re.compile(r"val_(?:loss|bpb)")
_STATE = {"epoch": 0, "installed": False}


# ------------------------------------------------------------------------------------------ devices

def _is_cuda(d) -> bool:
    if isinstance(d, str):
        return d.startswith("cuda")
    return getattr(d, "type", None) == "cuda"


def _install_devices(torch) -> None:
    real_device, real_generator = torch.device, torch.Generator

    def to_cpu(d):
        if isinstance(d, int) and not isinstance(d, bool):
            return real_device("cpu")  # torch.device(0) is cuda:0
        return real_device("cpu") if _is_cuda(d) else d

    class _DeviceMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_device)

        def __call__(cls, *args, **kwargs):
            if args and (_is_cuda(args[0]) or isinstance(args[0], int)):
                return real_device("cpu")
            if _is_cuda(kwargs.get("type")):
                return real_device("cpu")
            return real_device(*args, **kwargs)

    class device(metaclass=_DeviceMeta):  # noqa: N801 - stands in for torch.device
        pass

    class _GeneratorMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_generator)

        def __call__(cls, device="cpu"):
            return real_generator(device=to_cpu(device))

    class Generator(metaclass=_GeneratorMeta):
        pass

    torch.device = device
    torch.Generator = Generator
    set_default = torch.set_default_device
    torch.set_default_device = lambda d: set_default(to_cpu(d))
    _STATE["to_cpu"] = to_cpu


# ------------------------------------------------------------------------------------------ torch.cuda

class _Props:
    name = "cpu (golf-verify CPU harness)"
    total_memory = 80 * 1024**3
    multi_processor_count = 132
    major, minor = 9, 0


class _Event:
    def __init__(self, *args, **kwargs):
        self.t = None

    def record(self, *args, **kwargs):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def wait(self, *args, **kwargs):
        pass

    def query(self):
        return True

    def elapsed_time(self, end) -> float:
        return 1000.0 * ((end.t or 0.0) - (self.t or 0.0))


class _Stream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass

    def record_event(self, event=None):
        return event or _Event()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _nothing(*args, **kwargs):
    return None


def _zero(*args, **kwargs):
    return 0


def _null_context(*args, **kwargs):
    return contextlib.nullcontext()


def _install_cuda(torch) -> None:
    empty_state = torch.zeros(0, dtype=torch.uint8)
    table = {
        "is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
        "is_initialized": lambda: True, "init": _nothing, "set_device": _nothing, "synchronize": _nothing,
        "empty_cache": _nothing, "ipc_collect": _nothing, "reset_peak_memory_stats": _nothing,
        "reset_max_memory_allocated": _nothing, "reset_accumulated_memory_stats": _nothing,
        "max_memory_allocated": _zero, "max_memory_reserved": _zero, "memory_allocated": _zero,
        "memory_reserved": _zero, "set_per_process_memory_fraction": _nothing,
        "mem_get_info": lambda *a, **k: (80 * 1024**3, 80 * 1024**3),
        "memory_stats": lambda *a, **k: {}, "memory_summary": lambda *a, **k: "",
        "get_device_name": lambda *a, **k: _Props.name, "get_device_capability": lambda *a, **k: (9, 0),
        "get_device_properties": lambda *a, **k: _Props(), "is_bf16_supported": lambda *a, **k: True,
        "manual_seed": _nothing, "manual_seed_all": _nothing, "seed": _nothing, "seed_all": _nothing,
        "get_rng_state": lambda *a, **k: empty_state.clone(), "get_rng_state_all": lambda: [empty_state.clone()],
        "set_rng_state": _nothing, "set_rng_state_all": _nothing,
        "Event": _Event, "Stream": _Stream, "current_stream": lambda *a, **k: _Stream(),
        "default_stream": lambda *a, **k: _Stream(), "stream": _null_context, "device": _null_context,
    }
    for name, value in table.items():
        setattr(torch.cuda, name, value)
    for name in ("max_memory_allocated", "max_memory_reserved", "memory_allocated", "memory_reserved",
                 "reset_peak_memory_stats", "empty_cache", "mem_get_info", "memory_stats"):
        if hasattr(torch.cuda, "memory"):
            setattr(torch.cuda.memory, name, table[name])
    # SDPA backend switches: CPU has its own kernels; a script's "flash only" must not disable them.
    for name in ("enable_flash_sdp", "enable_math_sdp", "enable_mem_efficient_sdp", "enable_cudnn_sdp"):
        setattr(torch.backends.cuda, name, _nothing)
    torch.backends.cuda.sdp_kernel = _null_context
    try:
        import torch.nn.attention as attention

        def sdpa_kernel(*args, **kwargs):
            return contextlib.nullcontext()

        sdpa_kernel.__wrapped__ = getattr(attention.sdpa_kernel, "__wrapped__", attention.sdpa_kernel)  # dynamo reads it
        attention.sdpa_kernel = sdpa_kernel
    except ImportError:
        pass


# ------------------------------------------------------------------------------------------ compile, autocast, grad

def _eager(model=None, *args, **kwargs):
    if model is None:  # @torch.compile(...) used as a decorator factory
        return lambda fn: fn
    return model


def _install_modes(torch) -> None:
    torch.compile = _eager
    real_autocast = torch.amp.autocast_mode.autocast

    class autocast(real_autocast):  # noqa: N801 - stands in for torch.autocast
        def __init__(self, device_type="cuda", dtype=None, enabled=True, cache_enabled=None):
            super().__init__("cpu" if device_type == "cuda" else device_type, dtype=dtype, enabled=enabled,
                             cache_enabled=cache_enabled)

    def cuda_autocast(enabled=True, dtype=torch.float16, cache_enabled=True):
        return autocast("cpu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)

    _STATE["real_autocast"] = real_autocast
    torch.autocast = torch.amp.autocast = autocast
    torch.cuda.amp.autocast = cuda_autocast
    if hasattr(torch.cuda, "amp") and hasattr(torch.amp, "GradScaler"):
        real_scaler = torch.amp.GradScaler
        torch.cuda.amp.GradScaler = lambda *a, **k: real_scaler("cpu", *a, **k)

    class inference_mode(torch.no_grad):  # noqa: N801 - inference_mode as no_grad (see the docstring)
        def __init__(self, mode: bool = True):
            super().__init__()
            self.mode = mode

        def __enter__(self):
            if self.mode:
                return super().__enter__()

        def __exit__(self, *exc):
            if self.mode:
                return super().__exit__(*exc)

        def clone(self):
            return type(self)(self.mode)

    torch.inference_mode = inference_mode
    torch.autograd.grad_mode.inference_mode = inference_mode


# ------------------------------------------------------------------------------------------ distributed

class _Done:
    def wait(self, *args, **kwargs):
        return True

    def is_completed(self):
        return True

    def get_future(self):
        import torch

        fut = torch.futures.Future()
        fut.set_result(None)
        return fut


def _counted(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            _STATE["epoch"] += 1
    wrapper.__name__ = getattr(fn, "__name__", "collective")
    wrapper.__wrapped__ = fn
    return wrapper


def _install_dist(torch) -> None:
    import torch.distributed as dist

    if not dist.is_available():
        return
    real = {name: getattr(dist, name) for name in (
        "init_process_group", "all_reduce", "barrier", "broadcast", "all_gather", "reduce", "gather", "scatter",
        "all_gather_object", "broadcast_object_list", "all_to_all_single", "new_group") if hasattr(dist, name)}
    ReduceOp = dist.ReduceOp

    def init_process_group(backend=None, *args, **kwargs):
        kwargs.pop("device_id", None)
        return real["init_process_group"]("gloo", *args, **kwargs)

    def new_group(*args, **kwargs):
        kwargs["backend"] = "gloo" if kwargs.get("backend") else kwargs.get("backend")
        kwargs.pop("device_id", None)
        return real["new_group"](*args, **kwargs)

    def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
        # gloo has no AVG and no bf16/fp16 reductions: sum in float32, divide, copy back.
        avg = op == ReduceOp.AVG
        work = tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor
        real["all_reduce"](work, op=ReduceOp.SUM if avg else op, group=group)
        if avg:
            work /= dist.get_world_size(group)
        if work is not tensor:
            tensor.copy_(work)
        return _Done() if async_op else None

    def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
        full = input.clone()
        all_reduce(full, op=op, group=group)
        output.copy_(full.reshape(dist.get_world_size(group), -1)[dist.get_rank(group)].view_as(output))
        return _Done() if async_op else None

    def all_gather_into_tensor(output, input, group=None, async_op=False):
        parts = [torch.empty_like(input) for _ in range(dist.get_world_size(group))]
        real["all_gather"](parts, input.contiguous(), group=group)
        output.copy_(torch.cat([p.reshape(-1) for p in parts]).view_as(output))
        return _Done() if async_op else None

    def barrier(group=None, async_op=False, device_ids=None):
        real["barrier"](group=group)
        return _Done() if async_op else None

    def synchronous(name):
        fn = real[name]

        def call(*args, **kwargs):
            asked = kwargs.pop("async_op", False)
            fn(*args, **kwargs)
            return _Done() if asked else None
        return call

    dist.init_process_group = init_process_group
    if "new_group" in real:
        dist.new_group = new_group
    replaced = {"all_reduce": all_reduce, "reduce_scatter_tensor": reduce_scatter_tensor,
                "all_gather_into_tensor": all_gather_into_tensor, "barrier": barrier}
    for name in ("broadcast", "all_gather", "reduce", "gather", "scatter", "all_to_all_single"):
        if name in real:
            replaced[name] = synchronous(name)
    for name in ("all_gather_object", "broadcast_object_list"):
        if name in real:
            replaced[name] = real[name]
    for name, fn in replaced.items():
        setattr(dist, name, _counted(fn))

    from torch.nn import parallel

    real_ddp = parallel.DistributedDataParallel

    class DistributedDataParallel(real_ddp):
        # device_ids name GPUs; static_graph is a speed hint that, with one rank and gradient accumulation
        # (no_sync micro-steps in its first iteration), trips torch's reducer on CPU.
        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            kwargs.pop("static_graph", None)
            super().__init__(module, None, None, *args, **kwargs)
            _keep_until_exit(self)

    parallel.DistributedDataParallel = DistributedDataParallel
    parallel.distributed.DistributedDataParallel = DistributedDataParallel


def _keep_until_exit(ddp) -> None:
    """Freeing a DDP reducer joins gloo's worker threads while holding the GIL, and a worker may need
    the GIL to free a tensor of its last all-reduce: a deadlock at the end of a run (torch 2.x, gloo).
    Reducers are kept until the process ends with os._exit, after every other atexit handler."""
    _STATE.setdefault("kept", []).append(ddp)


def _install_exit() -> None:
    real_exit, real_hook = sys.exit, sys.excepthook

    def exit(code=0):  # noqa: A001 - records the code that os._exit will use
        _STATE["exit_code"] = code
        real_exit(code)

    def excepthook(*args):
        _STATE.setdefault("exit_code", 1)
        real_hook(*args)

    def finish():
        if not _STATE.get("kept"):
            return
        code = _STATE.get("exit_code", 0)
        code = code if isinstance(code, int) else (0 if code is None else 1)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    sys.exit, sys.excepthook = exit, excepthook
    atexit.register(finish)  # registered first, so it runs last


# ------------------------------------------------------------------------------------------ the mode

def make_mode(torch, capture=None, devices: bool = True):
    """A TorchFunctionMode class: device rewriting (devices) and score capture (capture, if given)."""
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    to_cpu = _STATE.get("to_cpu")
    Tensor = torch.Tensor
    same = {Tensor.cuda, Tensor.pin_memory} if devices else set()
    nothing = {Tensor.record_stream} if devices else set()
    captured = {F.cross_entropy: "cross_entropy", F.nll_loss: "nll_loss"}
    log_softmax = {F.log_softmax, torch.log_softmax, Tensor.log_softmax}
    gather = {torch.gather, Tensor.gather, torch.take_along_dim, Tensor.take_along_dim}
    embedding = {F.embedding}

    class CpuMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in same:
                return args[0]
            if func in nothing:
                return None
            if devices and "device" in kwargs:
                kwargs["device"] = to_cpu(kwargs["device"])
            if devices and kwargs.get("pin_memory"):
                kwargs["pin_memory"] = False  # no pinned-memory allocator without an accelerator
            if devices and func is Tensor.to:
                args = tuple(to_cpu(a) if (isinstance(a, (str, int)) and not isinstance(a, bool))
                             or _is_cuda(a) else a for a in args)
            out = func(*args, **kwargs)
            if capture is not None:
                if func in captured:
                    capture.loss(captured[func], args, kwargs)
                elif func in log_softmax:
                    capture.remember_log_probs(out)
                elif func in gather:
                    capture.gathered(args, kwargs)
                elif func in embedding:
                    capture.remember_index(args[0] if args else kwargs.get("input"))
            return out

    return CpuMode


def capture_mode(torch, capture):
    """A mode that only captures (no device rewriting): the in-process form used by tests."""
    return make_mode(torch, capture, devices=False)()


def _install_threads(mode_cls) -> None:
    boot = threading.Thread._bootstrap_inner

    def _bootstrap_inner(self):
        with mode_cls():
            boot(self)

    threading.Thread._bootstrap_inner = _bootstrap_inner


# ------------------------------------------------------------------------------------------ capture

class Capture:
    """Per-call records of this rank's score computations (see the module docstring)."""

    def __init__(self, torch, out_dir: str, rank: int):
        self.torch, self.out_dir, self.rank = torch, out_dir, rank
        self.records: list[dict] = []
        self.arrays: dict[str, list] = {"target": [], "nll": [], "fp": [], "lse": []}
        self.rows = 0
        self.index_shapes: list[tuple] = []  # recent 2-D integer inputs of embeddings: (B, T)
        self.log_probs: list = []  # recent log_softmax outputs (weakly identified by storage and shape)
        self.projection: dict[int, object] = {}
        self.skipped: dict[str, int] = {}
        self.seq = 0
        self.lines: list[str] = []

    # -- bookkeeping
    def _site(self) -> str:
        frame = sys._getframe(1)
        while frame is not None:
            name = frame.f_code.co_filename
            if "torch" + os.sep not in name and not name.endswith(("_golf_cpu.py", "contextlib.py")):
                return f"{os.path.basename(name)}:{frame.f_lineno} {frame.f_code.co_name}"
            frame = frame.f_back
        return "?"

    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def remember_index(self, ids) -> None:
        if ids is not None and getattr(ids, "dim", lambda: 0)() == 2 and not ids.is_floating_point():
            self.index_shapes = (self.index_shapes + [tuple(ids.shape)])[-16:]

    def remember_log_probs(self, out) -> None:
        if isinstance(out, self.torch.Tensor):
            self.log_probs = (self.log_probs + [(out.data_ptr(), tuple(out.shape))])[-8:]

    def line(self, text: str) -> None:
        if _FIGURE.search(text):
            self.seq += 1
            self.records.append({"seq": self.seq, "epoch": _STATE["epoch"], "kind": "line", "text": text[:500]})

    # -- score computations
    def loss(self, kind: str, args, kwargs) -> None:
        inp = args[0] if args else kwargs.get("input")
        target = args[1] if len(args) > 1 else kwargs.get("target")
        ignore = kwargs.get("ignore_index", args[4] if len(args) > 4 else -100)
        reduction = kwargs.get("reduction", args[6] if len(args) > 6 else "mean")
        self._record(kind, inp, target, ignore, reduction)

    def gathered(self, args, kwargs) -> None:
        inp = args[0] if args else kwargs.get("input")
        index = args[2] if len(args) > 2 else kwargs.get("index")
        if index is None or not isinstance(inp, self.torch.Tensor):
            return
        if (inp.data_ptr(), tuple(inp.shape)) not in self.log_probs or index.shape[-1:] != (1,):
            return
        self._record("log_softmax_gather", inp, index.squeeze(-1), -100, "none")

    def _rows(self, kind, inp, target):
        """(rows (N, V), shape of the targets (B, T)) of a loss call, or None with the reason recorded."""
        torch = self.torch
        if not isinstance(inp, torch.Tensor) or not isinstance(target, torch.Tensor):
            return self._skip(f"{kind}: not tensors")
        if target.is_floating_point():
            return self._skip(f"{kind}: soft targets")
        if inp.dim() != target.dim() + 1 or inp.dim() < 2:
            return self._skip(f"{kind}: input {tuple(inp.shape)} target {tuple(target.shape)}")
        if inp.dim() >= 3 and kind != "log_softmax_gather" and inp.shape[2:] == target.shape[1:]:
            rows = inp.movedim(1, -1).reshape(-1, inp.shape[1])  # (B, V, T...): classes along dim 1
        else:
            rows = inp.reshape(-1, inp.shape[-1])
        n = rows.shape[0]
        if target.dim() >= 2:
            shape = (n // target.shape[-1], target.shape[-1])
        else:  # flattened rows: the shape of the last embedding lookup of as many tokens
            shape = next((s for s in reversed(self.index_shapes) if s[0] * s[1] == n), (1, n))
        return rows.detach(), shape

    def _per_row(self, kind, rows, tgt):
        """(NLL, log-sum-exp or None, fingerprint) of each row; targets out of range score 0."""
        torch = self.torch
        safe = torch.where((tgt >= 0) & (tgt < rows.shape[1]), tgt, torch.zeros_like(tgt))
        if kind == "cross_entropy":  # in the script's dtype and autocast, as its own call computed it
            nll, lse = torch.nn.functional.cross_entropy(rows, safe, reduction="none"), None
        else:
            nll = -rows.gather(1, safe[:, None]).squeeze(1)
            lse = torch.cat([torch.logsumexp(c.double(), dim=1) for c in rows.split(4096)] or
                            [torch.zeros(0, dtype=torch.float64)])
        vocab = rows.shape[1]
        if vocab not in self.projection:
            gen = torch.Generator().manual_seed(vocab)
            self.projection[vocab] = torch.randn(vocab, 2, generator=gen, dtype=torch.float32)
        with _STATE.get("real_autocast", torch.autocast)("cpu", enabled=False):
            fp = rows.float() @ self.projection[vocab]
        return nll, lse, fp

    def _record(self, kind, inp, target, ignore, reduction) -> None:
        torch = self.torch
        found = self._rows(kind, inp, target)
        if found is None:
            return
        rows, shape = found
        tgt = target.reshape(-1)
        with torch.no_grad():
            nll, lse, fp = self._per_row(kind, rows, tgt)
            valid = (tgt != ignore) & (tgt >= 0) & (tgt < rows.shape[1])
            tgt_out = torch.where(valid, tgt, torch.full_like(tgt, -1)).to(torch.int32)
        self.seq += 1
        self.records.append({
            "seq": self.seq, "epoch": _STATE["epoch"], "kind": kind, "reduction": str(reduction),
            "grad": bool(torch.is_grad_enabled() and inp.requires_grad), "site": self._site(), "rows": rows.shape[0],
            "width": rows.shape[1], "shape": list(shape), "offset": self.rows,
            "dtype": str(inp.dtype).replace("torch.", ""), "lse": lse is not None})
        self.rows += rows.shape[0]
        self.arrays["target"].append(tgt_out.numpy())
        self.arrays["nll"].append(nll.float().numpy())
        self.arrays["fp"].append(fp.numpy())
        if lse is not None:
            self.arrays["lse"].append(lse.float().numpy())

    def write(self) -> None:
        import numpy as np

        os.makedirs(self.out_dir, exist_ok=True)
        base = os.path.join(self.out_dir, f"capture_rank{self.rank}")
        cat = {k: (np.concatenate(v) if v else np.zeros(0, np.float32)) for k, v in self.arrays.items()}
        with open(base + ".npz.tmp", "wb") as fh:
            np.savez(fh, **cat)
        os.replace(base + ".npz.tmp", base + ".npz")
        meta = {"rank": self.rank, "pid": os.getpid(), "records": self.records, "skipped": self.skipped,
                "epochs": _STATE["epoch"]}
        with open(base + ".json.tmp", "w", encoding="utf-8") as fh:
            json.dump(meta, fh)
        os.replace(base + ".json.tmp", base + ".json")


class _Tee:
    """sys.stdout / sys.stderr: everything passes through; lines with a figure are also recorded."""

    def __init__(self, stream, capture: Capture):
        self._stream, self._capture, self._buf = stream, capture, ""

    def write(self, text):
        if isinstance(text, str):
            self._buf += text
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self._capture.line(line)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


# ------------------------------------------------------------------------------------------ install

def install() -> None:
    if _STATE["installed"]:
        return
    _STATE["installed"] = True
    os.environ["_GOLF_HARNESS_OWNER"] = str(os.getpid())  # children of this worker skip the harness
    import torch
    import torch.utils._triton as torch_triton

    # torch must not take the Triton stand-in (triton_standin/, on the path only for scripts that
    # import triton) for a real Triton: what torch learns about Triton it learns now, with none there.
    sys.modules["triton"] = None
    try:
        torch_triton.has_triton_package()
        import torch._dynamo  # noqa: F401 - also builds its tables of torch functions before they are replaced
        if os.environ.get("GOLF_HARNESS_TRITON") == "1":
            import torch._inductor.cudagraph_trees  # noqa: F401 - imported by torch._dynamo.reset()
            import torch._inductor.runtime.triton_compat  # noqa: F401
    finally:
        del sys.modules["triton"]
    _install_exit()
    _install_devices(torch)
    _install_cuda(torch)
    _install_modes(torch)
    _install_dist(torch)
    capture = None
    out_dir = os.environ.get("GOLF_CAPTURE_DIR")
    if out_dir:
        capture = Capture(torch, out_dir, int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))))
        sys.stdout, sys.stderr = _Tee(sys.stdout, capture), _Tee(sys.stderr, capture)
        atexit.register(capture.write)
    mode_cls = make_mode(torch, capture)
    _install_threads(mode_cls)
    mode_cls().__enter__()  # for the life of the process
