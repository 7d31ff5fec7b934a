"""Fixtures for the verifier tests: the repo root on sys.path and the shared corpus."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from verifier_builders import CORPUS, corpus_folders, write_record  # noqa: E402


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "track_10min_16mb").is_dir():
        pytest.skip("the public records ../shared/upstream/records (beside the repository) are not present")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_reports(corpus):
    """Every corpus folder verified once per session (each script parsed once): {'track/folder': Report}."""
    from verifier import verify_folder

    out = {}
    for folder in corpus_folders():
        key = f"{folder.parent.name}/{folder.name}"
        out[key] = verify_folder(folder, display=key)
    return out


@pytest.fixture
def record(tmp_path):
    """Factory: record(files, name=..., track=...) writes a record folder and returns its path."""
    def make(files: dict, name: str = "2026-05-01_Test", track: str = "track_10min_16mb") -> Path:
        return write_record(tmp_path, files, name=name, track=track)
    return make


def pytest_report_header(config):
    return f"verifier corpus: {'present' if CORPUS.is_dir() else 'absent'} ({os.path.normpath(str(CORPUS))})"
