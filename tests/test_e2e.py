"""golf-pack renders the baseline into a folder; helpers for the tests that run rendered scripts with
torchrun on the tiny dataset (the runs themselves: test_newcomer.py, test_wrap.py, test_rerun.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from verifier.rerun import SMOKE_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"


def smoke_env(tiny: Path, **extra) -> dict:
    """The environment of a smoke run of the baseline on the tiny dataset (golf-verify's small settings)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SMOKE_OVERRIDES)
    env.update(
        DATA_PATH=str(tiny / "datasets" / "fineweb10B_sp1024"),
        TOKENIZER_PATH=str(tiny / "tokenizers" / "fineweb_1024_bpe.model"),
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_torchrun(folder: Path, nproc: int, env: dict, timeout: int = 120,
                 script: str = "train_gpt.py") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def baseline_folder(tmp_path_factory) -> Path:
    records = tmp_path_factory.mktemp("records")
    result = CliRunner().invoke(pack, [str(BASELINE), "--records", str(records)])
    assert result.exit_code == 0, result.output
    (folder,) = (records / "track_10min_16mb").iterdir()
    return folder


def test_folder_has_the_five_files(baseline_folder):
    names = {p.name for p in baseline_folder.iterdir()}
    assert {"train_gpt.py", "submission.json", "README.md", "requirements.txt", "recipe.yaml"} <= names
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_NaiveBaseline", baseline_folder.name)
    sub = json.loads((baseline_folder / "submission.json").read_text())
    assert sub["status"] == "pending" and sub["seeds"] == [1337] and sub["track"] == "10min_16mb"
    assert (baseline_folder / "recipe.yaml").read_text() == BASELINE.read_text()
    assert "torch" in (baseline_folder / "requirements.txt").read_text()


def test_rerender_is_byte_identical_and_keeps_logs(baseline_folder):
    before = {p.name: p.read_bytes() for p in baseline_folder.iterdir()}
    log = baseline_folder / "train_seed7.log"
    log.write_bytes(b"a participant's expensive log\n")
    result = CliRunner().invoke(pack, [str(BASELINE), "--records", str(baseline_folder.parent.parent)])
    assert result.exit_code == 0 and "up to date" in result.output
    assert {p.name: p.read_bytes() for p in baseline_folder.iterdir() if p != log} == before
    assert log.read_bytes() == b"a participant's expensive log\n"
    log.unlink()


def test_hand_edit_then_rerender_is_refused(tmp_path):
    records = tmp_path / "records"
    assert CliRunner().invoke(pack, [str(BASELINE), "--records", str(records)]).exit_code == 0
    (folder,) = (records / "track_10min_16mb").iterdir()
    script = folder / "train_gpt.py"
    script.write_text(script.read_text() + "# tweak\n")
    result = CliRunner().invoke(pack, [str(BASELINE), "--records", str(records)])
    assert result.exit_code == 2 and "train_gpt.py: edited by hand" in result.output
    assert script.read_text().endswith("# tweak\n")


def test_out_writes_the_folder_exactly_there(tmp_path):
    out = tmp_path / "anywhere" / "mine"
    result = CliRunner().invoke(pack, [str(BASELINE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {"train_gpt.py", "submission.json", "README.md", "requirements.txt", "recipe.yaml"} <= {
        p.name for p in out.iterdir()}
    date = json.loads((out / "submission.json").read_text())["date"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", date)  # not the folder name
    again = CliRunner().invoke(pack, [str(BASELINE), "--out", str(out)])
    assert again.exit_code == 0 and "up to date" in again.output
    assert not (tmp_path / "records").exists()
    refused = CliRunner().invoke(pack, [str(out), "--out", str(tmp_path / "other")])
    assert refused.exit_code == 2 and "--out applies to a recipe file" in refused.output
