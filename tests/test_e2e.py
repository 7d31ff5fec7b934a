"""End to end: golf-pack renders the baseline, torchrun trains it on the tiny dataset."""

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

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"

# A small model and batch so that 30 steps take seconds on two CPU cores.
SMOKE_ENV = {
    "ITERATIONS": "30", "WARMUP_STEPS": "2", "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "2048", "VAL_BATCH_SIZE": "16384",
    "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "10", "WARMDOWN_ITERS": "10", "MAX_WALLCLOCK_SECONDS": "0",
    "MATRIX_LR": "0.02",
}


def smoke_env(tiny: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(SMOKE_ENV)
    env.update(
        DATA_PATH=str(tiny / "datasets" / "fineweb10B_sp1024"),
        TOKENIZER_PATH=str(tiny / "tokenizers" / "fineweb_1024_bpe.model"),
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_torchrun(folder: Path, nproc: int, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train_gpt.py"]
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


def check_run(result: subprocess.CompletedProcess, folder: Path, seed: int, world: int) -> dict:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", out, re.M)
    assert re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", out, re.M)
    code_bytes = int(re.search(r"^Code size: (\d+) bytes$", out, re.M).group(1))
    assert code_bytes == (folder / "train_gpt.py").stat().st_size
    total = int(re.search(r"^Total submission size int8\+zlib: (\d+) bytes$", out, re.M).group(1))
    result_line = re.search(r"^golf_result_json:(.*)$", out, re.M).group(1)
    res = json.loads(result_line)
    assert res["bytes_total"] == total and res["seed"] == seed and res["world_size"] == world
    assert res["steps"] == 30 and res["val_bpb"] > 0
    log = (folder / f"train_seed{seed}.log").read_text()
    assert log.splitlines()[-1] == "golf_result_json:" + result_line
    # the loss moved: the last logged train loss is below the first
    losses = [float(x) for x in re.findall(r"train_loss:(\d+\.\d+)", out)]
    assert losses[-1] < losses[0] - 0.3, losses
    return res


@pytest.mark.slow
def test_torchrun_two_ranks_and_one_rank(baseline_folder, tiny_data):
    two = check_run(run_torchrun(baseline_folder, 2, smoke_env(tiny_data, SEED="11")), baseline_folder, 11, 2)
    one = check_run(run_torchrun(baseline_folder, 1, smoke_env(tiny_data, SEED="12")), baseline_folder, 12, 1)
    assert two["grad_accum_steps"] == 4 and one["grad_accum_steps"] == 8


@pytest.mark.slow
def test_second_run_of_a_seed_never_overwrites_its_log(baseline_folder, tiny_data):
    env = smoke_env(tiny_data, SEED="13", ITERATIONS="2", TRAIN_LOG_EVERY="1")
    assert run_torchrun(baseline_folder, 1, env).returncode == 0
    first = (baseline_folder / "train_seed13.log").read_bytes()
    assert run_torchrun(baseline_folder, 1, env).returncode == 0
    assert (baseline_folder / "train_seed13.log").read_bytes() == first
    assert (baseline_folder / "train_seed13_run2.log").exists()


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
