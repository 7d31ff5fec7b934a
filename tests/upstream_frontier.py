"""Import an April record's train_gpt.py on CPU (stubs for flash_attn_interface and triton) and map its
state dict to ours. Facts only: the stubs are written here, the record's code runs as shipped."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RECORDS = SHARED / "upstream" / "records" / "track_10min_16mb"
R1855 = RECORDS / "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
R1868 = RECORDS / "2026-04-29_SmearGateBOSFix_3Seed_1.06141"


def record_folder(path: Path) -> Path:
    if not (path / "train_gpt.py").is_file():
        pytest.skip(f"{path.name} is not present under ../shared/upstream")
    return path


def logged_model_params(folder: Path) -> set[int]:
    """Every model_params value the folder's seed logs print (a line on its own)."""
    found = set()
    for log in folder.glob("*.log"):
        found.update(int(m) for m in re.findall(r"^model_params:(\d+)$", log.read_text(errors="replace"), re.M))
    return found


class _Anything(types.ModuleType):
    """Stands in for triton: attribute access and calls return something harmless."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name)

    def __call__(self, *args, **kwargs):
        return args[0] if args and callable(args[0]) else self


def _varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True, window_size=(-1, -1)):
    """FA3 varlen on CPU, segment by segment (independent of docattn's mask)."""
    out = torch.zeros_like(q)
    bounds = [int(b) for b in cu_seqlens_q]
    for s, e in zip(bounds, bounds[1:]):
        if e > s:
            seg = [t[s:e].transpose(0, 1)[None] for t in (q, k, v)]
            out[s:e] = F.scaled_dot_product_attention(*seg, is_causal=True, enable_gqa=True)[0].transpose(0, 1)
    return out


def _dense(q, k, v, causal=True):
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                       enable_gqa=True)
    return y.transpose(1, 2)


def import_record(folder: Path, name: str):
    """The record's script as a module; torch.compile is the identity while it loads."""
    fa = types.ModuleType("flash_attn_interface")
    fa.flash_attn_func, fa.flash_attn_varlen_func = _dense, _varlen
    triton = _Anything("triton")
    triton.jit = lambda fn: fn
    stubs = {"flash_attn_interface": fa, "triton": triton, "triton.language": _Anything("tl"),
             "triton.tools": _Anything("tools"), "triton.tools.tensor_descriptor": _Anything("td")}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    compile_ = torch.compile
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        spec = importlib.util.spec_from_file_location(name, folder / "train_gpt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        torch.compile = compile_
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    module.BOS_ID = 1  # set by its loader in a real run
    return module


def upstream_args(module, **overrides) -> types.SimpleNamespace:
    """The record's Hyperparameters defaults (as class attributes), with overrides."""
    values = {k: v for k, v in vars(module.Hyperparameters).items() if not k.startswith("_")}
    values.update(overrides)
    return types.SimpleNamespace(**values)


def to_upstream_state(ours: dict, num_layers: int) -> dict:
    """Our per-block state dict in the record's layout (qo/kv/mlp banks)."""
    n = num_layers
    banks = {
        "qo_bank": [f"blocks.{i}.attn.c_q.weight" for i in range(n)] + [f"blocks.{i}.attn.proj.weight" for i in range(n)],
        "kv_bank": [f"blocks.{i}.attn.c_k.weight" for i in range(n)] + [f"blocks.{i}.attn.c_v.weight" for i in range(n)],
        "mlp_up_bank": [f"blocks.{i}.mlp.fc.weight" for i in range(n)],
        "mlp_down_bank": [f"blocks.{i}.mlp.proj.weight" for i in range(n)],
    }
    out = {bank: torch.stack([ours[k] for k in keys]) for bank, keys in banks.items()}
    used = {k for keys in banks.values() for k in keys}
    out.update({k: v for k, v in ours.items() if k not in used})
    return out
