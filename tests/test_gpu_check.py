"""scripts/gpu_check.py: the device check's steps, run tiny on CPU (--cpu), so that the device run is not
their first run; what it reads from a run's output; and that a step it cannot run says so."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
PUBLIC = ROOT.parent / "shared" / "upstream" / "train_gpt.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def run(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def test_reads_the_kernel_paths_a_run_printed():
    g = load()
    out = ("attention:fa3 pinned:fa3 num_heads:8 num_kv_heads:4\n"
           "step:120/120 val_loss:4.2 val_bpb:2.5 train_time:41000ms step_avg:341.67ms\n"
           "fused_kernels:triton\n")
    assert g.kernel_paths(out) == ["attention:fa3 pinned:fa3 num_heads:8 num_kv_heads:4", "fused_kernels:triton"]
    assert g.kernel_paths("step:1/2 train_loss:5.0") == []


def test_every_step_folder_is_a_rendered_record():
    g = load()
    for step, folder in g.FOLDERS.items():
        assert (ROOT / folder / "train_gpt.py").is_file() and (ROOT / folder / "recipe.yaml").is_file(), step


def test_without_cuda_the_device_mode_refuses_in_one_line(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = run("--out", tmp_path / "r.json")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "no CUDA device" in result.stderr and not (tmp_path / "r.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not PUBLIC.is_file(), reason="../shared/upstream/train_gpt.py is not present")
def test_cpu_mode_runs_the_baseline_pair_the_ttt_recipe_and_the_rerun(tmp_path, tiny_data):
    """The rendered baseline and the public root script, the same steps on the same shards (the public one
    under the CPU harness), the TTT recipe through export and final evaluation, then golf-verify --rerun:
    every figure the device run reports, from real runs. (The frontier recipe's CPU run is
    `golf-pack smoke`'s, tests/test_newcomer.py.)"""
    public = tmp_path / "public_train_gpt.py"
    shutil.copyfile(PUBLIC, public)
    out = tmp_path / "cpu.json"
    result = run("--cpu", "--out", out, "--data", tiny_data, "--public-script", public, "--work", tmp_path / "w",
                 "--skip", "frontier")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert report["mode"] == "cpu" and [s["status"] for s in report["steps"]] == [
        "ok", "ok", "ok", "not checked", "ok"]
    base = steps["baseline"]["figures"]
    assert base["env"]["ITERATIONS"] and base["rendered_step_avg_ms"] > 0 and base["public_step_avg_ms"] > 0
    assert base["ratio"] == pytest.approx(base["rendered_step_avg_ms"] / base["public_step_avg_ms"], rel=1e-3)
    assert any(p.startswith("attention:sdpa") for p in base["rendered_paths"])
    ttt = steps["ttt"]["figures"]
    assert ttt["bytes_total"] == ttt["bytes_model"] + ttt["bytes_code"] and ttt["eval_time_ms"] > 0
    assert ttt["steps"] > 0 and ttt["step_avg_ms"] > 0 and 0 < ttt["val_bpb"] < 10 and ttt["device"] == "1xcpu"
    assert any(p.startswith("attention:sdpa pinned:sdpa") for p in ttt["paths"])
    rerun = steps["rerun"]["figures"]
    assert rerun["mode"] == "smoke" and rerun["device"] == "1xcpu" and rerun["steps"] > 0
    t = rerun["timers_s"]
    assert 0 < t["start_to_artifact_s"] <= t["start_to_final_s"] <= t["wall_s"]
    assert "| baseline | ok |" in result.stdout and "| frontier | not checked |" in result.stdout


def test_a_missing_public_script_is_not_checked_and_fails_the_run(tmp_path, tiny_data):
    out = tmp_path / "cpu.json"
    result = run("--cpu", "--out", out, "--data", tiny_data, "--public-script", tmp_path / "absent.py",
                 "--work", tmp_path / "w", "--skip", "ttt", "--skip", "frontier", "--skip", "rerun")
    assert result.returncode == 1
    (base,) = [s for s in json.loads(out.read_text())["steps"] if s["name"] == "baseline"]
    assert base["status"] == "not checked" and "--prepare" in base["why"]


def test_a_pinned_flashattention_that_is_absent_is_seen_before_the_device_run():
    """On the device the #1855 recipe (pinned fa3) runs with ATTENTION=sdpa only where FlashAttention 3 is not
    installed, and the result says so; sdpa recipes need nothing."""
    g = load()
    fa3 = importlib.util.find_spec("flash_attn_interface") is not None
    assert g._has_pinned_kernel(ROOT / g.FOLDERS["frontier"]) == fa3
    assert g._has_pinned_kernel(ROOT / g.FOLDERS["ttt"]) and g._has_pinned_kernel(ROOT / g.FOLDERS["baseline"])
