"""Shared fixtures: the repo on sys.path, the tiny dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny dataset (tokenizer + shards), built once per test session."""
    from verifier.tinydata import build_tiny_dataset

    out = tmp_path_factory.mktemp("tiny")
    build_tiny_dataset(out)
    return out
