"""golf-pack import / diff on the public records (skipped without ../shared/upstream)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from packager.importer import check_import, diff_sources, import_record, unwrap
from tests.upstream_code import RECORD_1855, RECORD_1868, RECORDS, record_dir


def test_import_of_a_plain_record_matches_its_model_params(tmp_path):
    folder = record_dir("2026-03-19_SlidingWindowEval")
    report = check_import(folder, tmp_path / "r.yaml")
    assert report["match"] and report["params"] == report["logged_params"] == 17059912
    text = (tmp_path / "r.yaml").read_text()
    # Every setting without a recipe key is named in the report and in the recipe, never dropped.
    assert report["unmapped"] == ["lora_lr", "lora_rank", "qat"]  # its NUM_LOOPS=1 (one pass) is our default
    assert all(f"#   {name} = " in text for name in report["unmapped"])
    assert yaml.safe_load(text)["eval"]["sliding_stride"] == 64


def test_a_wrapped_script_is_read_statically():
    folder = record_dir("2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR")
    raw = (folder / "train_gpt.py").read_text()
    source = unwrap(raw)
    assert raw.count("\n") < 3 and "class Hyperparameters" in source and source.count("\n") > 300
    imp = import_record(folder)
    assert imp.values["vocab_size"] == 4096 and imp.model_params == 34401372


def test_frontier_import_names_what_it_cannot_map(tmp_path):
    imp = import_record(record_dir(RECORD_1868))
    assert imp.values["gptq"] and imp.values["embed_bits"] == 7 and imp.values["ttt_mode"] == "phased"
    assert imp.values["caseops_enabled"] and imp.values["data_path"].endswith("sp8192_caseops")
    assert imp.values["num_loops"] == 2 and imp.values["smear_gate_v2"] and imp.model_params == 35945671
    # What the runtime does not express is named, e.g. per-document attention inside the global TTT phases.
    assert {"global_ttt_respect_doc_boundaries", "ttt_optimizer", "val_doc_fraction"} <= set(imp.unmapped)


def test_diff_names_the_nine_hparam_stack():
    lines = dict(line.split(": ", 1) for line in diff_sources(record_dir(RECORD_1855), record_dir(RECORD_1868)))
    assert lines["ttt_lora_rank"] == "80 -> 96" and lines["beta2"] == "0.99 -> 0.95"
    assert lines["compressor"] == "pergroup -> brotli" and "code_bytes" in lines


def test_cli_import_refuses_to_overwrite(tmp_path):
    out = tmp_path / "r.yaml"
    out.write_text("mine\n")
    cmd = [sys.executable, "-c", "from packager.cli import pack_main; pack_main()", "import",
           str(record_dir("2026-03-17_NaiveBaseline")), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "exists" in result.stderr and out.read_text() == "mine\n"


@pytest.mark.benchmark
def test_import_fraction_over_the_public_records(tmp_path):
    """The measured fraction (README): imports whose model has the logged model_params."""
    if not RECORDS.is_dir():
        pytest.skip("../shared/upstream is not present")
    reports = []
    for i, folder in enumerate(sorted(p for p in RECORDS.iterdir() if p.is_dir())):
        try:
            reports.append(check_import(folder, tmp_path / f"{i}.yaml"))
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the measurement goes on
            reports.append({"record": folder.name, "match": False, "error": str(exc), "unmapped": []})
    print(json.dumps({"matched": sum(r["match"] for r in reports), "records": len(reports),
                      "failures": {r["record"]: r.get("error") or r["unmapped"] for r in reports if not r["match"]}},
                     indent=1))
    assert len(reports) == 46 and sum(r["match"] for r in reports) >= 30


@pytest.mark.parametrize("recipe", ["lqer_sparsegate_bossmearfix_1855", "smeargate_bosfix_3seed_1868"])
def test_frontier_recipes_build_the_records_model(recipe):
    """Both records log model_params:35945671; the recipes build exactly that model."""
    from packager.importer import rendered_model_params
    from packager.recipe import load_recipe

    values = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / f"{recipe}.yaml").values
    assert rendered_model_params(values) == 35945671
    assert values["ttt_mode"] == "phased" and values["gptq"] and values["caseops_enabled"]
