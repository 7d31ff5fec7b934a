"""Seed fidelity: every recipe that names a record reproduces it, compared with the record's own script.

The records' scripts are imported from ../shared at test time (packager/parity); the tests skip when
it is absent. One session fixture runs every comparison once; each (recipe, comparison) is a test.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from packager.parity import compare as C
from packager.parity.__main__ import main as parity_main
from packager.parity.seeds import SEEDS
from packager.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(name, check) for name in SEEDS for check in C.CHECKS if check != "qat" or SEEDS[name].qat]
needs_shared = pytest.mark.skipif(not (C.SHARED / "seeds" / "records").is_dir(),
                                  reason="../shared/seeds/records is not present beside the repository: the seed "
                                         "recipes are not compared with the records' own scripts")


@pytest.fixture(scope="session")
def rows() -> dict:
    return {(r.seed, r.check): r for r in C.run()}


@needs_shared
@pytest.mark.parametrize("name,check", PAIRS)
def test_recipe_reproduces_its_record(name, check, rows):
    row = rows[(name, check)]
    assert row.ok, f"{name} {check}: {row.detail}"
    if check == "score" and SEEDS[name].switches:  # the deliberate difference is measured, not assumed
        assert row.status == "switch" and "as shipped" in row.detail


# The April frontier recipes are compared with #1855 / #1868 by tests/test_frontier.py (parameters, logits)
# and tests/test_export_gptq.py (the export, bit for bit).
FRONTIER = {"lqer_sparsegate_bossmearfix_1855", "smeargate_bosfix_3seed_1868"}


def test_every_recipe_that_names_a_record_is_compared():
    """All shipped recipes are compared (seed recipes by their record's script, the baseline by upstream's)."""
    assert {p.stem for p in (ROOT / "recipes").glob("*.yaml")} == set(SEEDS) | FRONTIER
    for name, seed in SEEDS.items():
        assert seed.recipe == name and seed.score in C.EVALS and seed.export in C.EXPORTS
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        assert all(k in recipe.values for k in seed.switches), name  # switches are recipe values
        assert all(recipe.values[k] != v for k, v in seed.switches.items()), f"{name}: a switch the recipe already has"


@needs_shared
def test_readme_table_lists_every_comparison_with_its_result(rows):
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \| [^|]+ \| ([a-z]+) \| ([a-zA-Z]+) \|", readme, re.M))
    assert listed == {(r.seed, r.check, r.status) for r in rows.values()}, "run: python -m packager.parity"


@needs_shared
@pytest.mark.parametrize("name,check,change", [
    ("legal_score_first_ttt", "logits", dict(rope_yarn=False)),  # RoPE without NTK scaling at T=2048
    ("legal_score_first_ttt", "export", dict(scale_floor=False)),  # no 1/31 floor on the int6 scales
    ("qat_bigramhash12k_stride32", "export", dict(quant_layout="wm")),  # shared type strings: other pickle bytes
    ("lora_ttt_swiglu_1xh100", "optimizer", dict(untrained_params="")),  # the SmearGate trained
    ("qat_bigramhash12k_stride32", "qat", dict(qat_ste="export")),  # the export's grid, block matrices only
    ("illegal_pre_eval_ttt", "score", dict(ttt_lr_groups="")),  # one LR for every weight
])
def test_a_changed_recipe_value_is_caught(name, check, change, monkeypatch):
    """The comparisons can fail: one recipe value away from the record's behaviour makes its row DIFFERS."""
    real = C.our_args
    monkeypatch.setattr(C, "our_args", lambda *a, **k: SimpleNamespace(**{**vars(real(*a, **k)), **change}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = C.CHECKS[check](name, C.SHARED)
    finally:
        torch.set_num_threads(threads)
    assert row.status == "DIFFERS", row.detail


def test_cli_without_the_shared_folder_says_so(tmp_path, capsys):
    assert parity_main(["--shared", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the records' own scripts are not in" in err and "--shared" in err


@needs_shared
@pytest.mark.benchmark
@pytest.mark.parametrize("name", ["qat_bigramhash12k_stride32", "two_phase_ttt", "legal_score_first_ttt",
                                  "lora_ttt_swiglu_1xh100"])
def test_artifact_size_at_full_size(name):
    """The compressed artifact of a full-size N(0, 0.02^2) state dict in the records' CUDA dtypes (recipes/SOURCES.md).
    python -m pytest tests/test_parity.py -m benchmark -s"""
    from packager.runtime.quant import export_model

    sd = C.export_state(name, C.SHARED, 0.02, blocks=None)
    blob, stats = export_model(C.our_args(name, False), sd)
    print(f"{name}: {len(blob):,} bytes (raw {stats['raw_bytes']:,})")
    assert stats["compressed_bytes"] == len(blob) < stats["raw_bytes"]
