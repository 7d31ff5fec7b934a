"""Load top-level functions of a public record's script for parity tests, without running the script.

The April scripts import Triton and FlashAttention 3 at the top, which a CPU machine does not have;
only the functions a test compares are taken out of the source (by AST) and executed with the
stdlib, numpy and torch, so nothing of the record runs but the code under test.
"""

from __future__ import annotations

import ast
import collections
import io
import lzma
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RECORDS = SHARED / "upstream" / "records" / "track_10min_16mb"
RECORD_1855 = "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611"
RECORD_1868 = "2026-04-29_SmearGateBOSFix_3Seed_1.06141"


def record_dir(name: str) -> Path:
    path = RECORDS / name
    if not (path / "train_gpt.py").is_file():
        pytest.skip(f"../shared/upstream/records/track_10min_16mb/{name} is not present beside the repository")
    return path


def upstream_functions(record: str, names: list[str]) -> dict:
    """{name: function} of the record's train_gpt.py; module constants they read come along."""
    source = (record_dir(record) / "train_gpt.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in names:
            node.decorator_list = []
            keep.append(node)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id.isupper() or
                                                  isinstance(t, ast.Name) and t.id.startswith("_") and t.id[1:2].isupper()
                                                  for t in node.targets):
            keep.append(node)
    namespace = {"torch": torch, "np": np, "F": F, "collections": collections, "re": re, "io": io, "os": os,
                 "lzma": lzma, "math": math, "subprocess": subprocess, "log": lambda *a, **k: None}
    exec(compile(ast.Module(body=keep, type_ignores=[]), f"<{record}>", "exec"), namespace)
    missing = [n for n in names if n not in namespace]
    assert not missing, f"{record} has no {missing}"
    return {n: namespace[n] for n in names}
