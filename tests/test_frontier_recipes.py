"""The #1855 and #1868 recipes: the records' techniques, and a CPU run on tiny CaseOps sp8192 data with
one and two ranks through GPTQ, LQER, the record's compressor and phased TTT (benchmark: about three
minutes per run on two busy cores).

Their readable scripts are longer than 1,500 lines (as the records' own); they ship wrapped
(code: {wrap: lzma_b85}), a train_gpt.py of a few lines with the readable twin beside it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from packager.recipe import load_recipe
from packager.render import recipe_features

ROOT = Path(__file__).resolve().parents[1]
FRONTIER = {"lqer_sparsegate_bossmearfix_1855": ("pergroup", "gate_quant"), "smeargate_bosfix_3seed_1868": ("brotli",
                                                                                                           "byte_shuffle")}
SMOKE = {"ITERATIONS": "6", "WARMUP_STEPS": "1", "NUM_LAYERS": "6", "MODEL_DIM": "64", "NUM_HEADS": "4",
         "NUM_KV_HEADS": "2", "LOOP_START": "1", "LOOP_END": "2", "PARALLEL_START_LAYER": "4", "XSA_LAST_N": "6",
         "ROPE_DIMS": "8", "TRAIN_SEQ_LEN": "128", "ROPE_TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "2048",
         "VAL_BATCH_SIZE": "16384", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "3", "MAX_WALLCLOCK_SECONDS": "0",
         "EVAL_SEQ_LEN": "128", "TTT_BATCH_DOCS": "8", "PHASED_TTT_PREFIX_DOCS": "20", "GLOBAL_TTT_CHUNK_TOKENS": "2048",
         "GLOBAL_TTT_BATCH_SEQS": "4", "GPTQ_CALIBRATION_BATCHES": "2"}


@pytest.mark.parametrize("recipe", sorted(FRONTIER))
def test_the_records_techniques_and_the_line_limit(recipe, tmp_path):
    path = ROOT / "recipes" / f"{recipe}.yaml"
    features = recipe_features(load_recipe(path).values)
    assert {"gptq", "lqer", "caseops", "ttt_phased", "depth_recurrence", *FRONTIER[recipe]} <= features
    result = CliRunner().invoke(pack, [str(path), "--out", str(tmp_path / "rec")])
    assert result.exit_code == 0, result.output
    shipped, readable = ((tmp_path / "rec" / name).read_text() for name in ("train_gpt.py", "train_gpt_readable.py"))
    assert shipped.count("\n") <= 1500 < readable.count("\n")


@pytest.mark.benchmark
@pytest.mark.parametrize("nproc", [1, 2])
@pytest.mark.parametrize("recipe", sorted(FRONTIER))
def test_runs_on_cpu_through_phased_ttt(recipe, nproc, tmp_path_factory):
    from packager.caseops import build_tiny_caseops
    from tests.test_e2e import run_torchrun, smoke_env

    if recipe.endswith("1855") and shutil.which("lrzip") is None:
        pytest.skip("lrzip is not installed (apt-get install lrzip)")
    data = build_tiny_caseops(tmp_path_factory.mktemp("caseops") / "d")
    folder = tmp_path_factory.mktemp("rec") / "r"
    assert CliRunner().invoke(pack, [str(ROOT / "recipes" / f"{recipe}.yaml"), "--out", str(folder)]).exit_code == 0
    env = smoke_env(Path("."), **SMOKE)
    env.update(DATA_PATH=data["data_path"], TOKENIZER_PATH=data["tokenizer_path"])
    result = run_torchrun(folder, nproc, env, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "GPTQ:collected" in out and "val_bpb:byte_sidecar" in out and "ttpp: phase:3/3" in out
    res = json.loads(re.search(r"^golf_result_json:(.*)$", out, re.M).group(1))
    assert res["eval_path"] == "quantized_ttt_phased" and res["world_size"] == nproc
