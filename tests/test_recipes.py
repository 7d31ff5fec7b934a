"""Every shipped recipe renders under the limits (its end-to-end run: tests/test_newcomer.py)."""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from packager.cli import pack
from packager.recipe import load_recipe
from packager.render import MAX_LINES, render_script, shipped_lines
from packager.wrap import wrap_lzma_b85

ROOT = Path(__file__).resolve().parents[1]
# The April frontier recipes' techniques and CPU runs: tests/test_frontier_recipes.py.
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
SEEDS = [p for p in RECIPES if p.stem != "naive_baseline"]

# Parameters of each recipe's full-size model, as rendered. Pinned: a change here is a
# change to what a recipe trains and must be deliberate.
PARAMS = {
    "naive_baseline": 17_059_912,
    "qat_bigramhash12k_stride32": 25_779_281,
    "two_phase_ttt": 26_993_756,
    "two_phase_ttt_as_submitted": 26_993_756,
    "legal_score_first_ttt": 26_993_756,
    "illegal_pre_eval_ttt": 26_993_756,
    "lora_ttt_swiglu_1xh100": 26_502_232,
    "lqer_sparsegate_bossmearfix_1855": 35_945_671,  # both records log model_params:35945671
    "smeargate_bosfix_3seed_1868": 35_945_671,
}

# The eval path whose score each recipe reports (its last final line).
FINAL_LINE = {
    "naive_baseline": "final_int8_zlib_roundtrip",
    "qat_bigramhash12k_stride32": "final_sliding_window",
    "two_phase_ttt": "final_ttt_two_phase",
    "two_phase_ttt_as_submitted": "final_ttt_two_phase_pre_eval",
    "legal_score_first_ttt": "legal_ttt",
    "lora_ttt_swiglu_1xh100": "final_ttt",
    "illegal_pre_eval_ttt": "final_ttt_pre_eval",
    "lqer_sparsegate_bossmearfix_1855": "quantized_ttt_phased",
    "smeargate_bosfix_3seed_1868": "quantized_ttt_phased",
}


def load_script(text: str, tmp_path: Path, name: str):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return {p.stem: render_script(load_recipe(p)) for p in RECIPES}


def test_every_recipe_is_listed():
    assert set(FINAL_LINE) == {p.stem for p in RECIPES}


@pytest.mark.parametrize("recipe", [p.stem for p in RECIPES])
def test_renders_short_clean_and_deterministic(recipe, scripts):
    from pyflakes.api import check
    from pyflakes.reporter import Reporter

    text = scripts[recipe]
    assert shipped_lines(text, load_recipe(ROOT / "recipes" / f"{recipe}.yaml")) <= MAX_LINES
    out = io.StringIO()
    assert check(text, "train_gpt.py", Reporter(out, out)) == 0, out.getvalue()
    assert render_script(load_recipe(ROOT / "recipes" / f"{recipe}.yaml")) == text


@pytest.mark.parametrize("recipe", [p.stem for p in SEEDS])
def test_wrapped_seed_script_is_at_most_30_percent(recipe, scripts):
    text = scripts[recipe]
    wrapped = wrap_lzma_b85(text, text.splitlines()[0])
    assert len(wrapped.encode()) <= 0.30 * len(text.encode()), (len(wrapped), len(text))


# The code bytes each wrapped recipe's record counted: the fewest its logs print (`Code size: N bytes`, or
# `Code size (compressed): N bytes` where the record counted its script compressed), or its script's
# bytes where that is fewer or no log counts them. Relative to ../shared; read back by the test below.
RECORD_FOLDERS = {
    "qat_bigramhash12k_stride32": "seeds/records/001_qat_bigramhash12k_stride32",
    "legal_score_first_ttt": "seeds/records/002_legal_score_first_ttt",
    "illegal_pre_eval_ttt": "seeds/records/002v1_pre_eval_ttt",
    "two_phase_ttt": "seeds/records/000_two_phase_ttt",
    "two_phase_ttt_as_submitted": "seeds/records/000_two_phase_ttt",
    "lora_ttt_swiglu_1xh100": "seeds/records/003_lora_ttt_swiglu_1xh100",
    "lqer_sparsegate_bossmearfix_1855":
        "upstream/records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611",
    "smeargate_bosfix_3seed_1868": "upstream/records/track_10min_16mb/2026-04-29_SmearGateBOSFix_3Seed_1.06141",
}
RECORD_CODE_BYTES = {
    "qat_bigramhash12k_stride32": 53_849,  # train_seed2024.log and the script
    "legal_score_first_ttt": 74_001,  # train.log and the script
    "illegal_pre_eval_ttt": 71_596,  # train.log and the script
    "two_phase_ttt": 68_424,  # the script (no log)
    "two_phase_ttt_as_submitted": 68_424,
    "lora_ttt_swiglu_1xh100": 57_899,  # train.log (the script that ran; the folder's is 65,338)
    "lqer_sparsegate_bossmearfix_1855": 31_999,  # "Code size (compressed)", all three seeds
    "smeargate_bosfix_3seed_1868": 31_250,  # "Code size (compressed)" of the original runs (the reruns: 31,385)
}
CODE_SIZE = re.compile(r"^Code size(?: \(compressed\))?: (\d+) bytes$", re.M)


def counted_code_bytes(folder: Path) -> int:
    logged = [int(n) for log in sorted(folder.glob("*.log")) for n in CODE_SIZE.findall(log.read_text(errors="replace"))]
    return min([(folder / "train_gpt.py").stat().st_size, *logged])


def test_every_wrapped_recipe_has_its_records_code_bytes():
    wrapped = {p.stem for p in RECIPES if load_recipe(p).data.get("code", {}).get("wrap") == "lzma_b85"}
    assert wrapped == set(RECORD_CODE_BYTES) == set(RECORD_FOLDERS)


@pytest.mark.parametrize("recipe", sorted(RECORD_CODE_BYTES))
def test_shipped_code_is_no_larger_than_the_record_counted(recipe, scripts):
    """Code bytes count toward the artifact: a recipe ships no more of them than its record counted."""
    text = scripts[recipe]
    assert len(wrap_lzma_b85(text, text.splitlines()[0]).encode()) <= RECORD_CODE_BYTES[recipe]


@pytest.mark.parametrize("recipe", sorted(RECORD_CODE_BYTES))
def test_record_code_bytes_are_what_the_shared_records_count(recipe):
    folder = ROOT.parent / "shared" / RECORD_FOLDERS[recipe]
    if not (folder / "train_gpt.py").is_file():
        pytest.skip(f"../shared/{RECORD_FOLDERS[recipe]} is not present beside the repository")
    assert counted_code_bytes(folder) == RECORD_CODE_BYTES[recipe]


@pytest.mark.parametrize("recipe", [p.stem for p in RECIPES])
def test_parameter_count_is_pinned(recipe, scripts, tmp_path):
    module = load_script(scripts[recipe], tmp_path, f"params_{recipe}")
    model = module.GPT(module.Hyperparameters())
    n = sum(p.numel() for p in model.parameters())
    assert recipe in PARAMS, f"pin the parameter count of {recipe}: {n}"
    assert n == PARAMS[recipe]


def test_pre_eval_readme_says_not_allowed(tmp_path):
    result = CliRunner().invoke(pack, [str(ROOT / "recipes" / "illegal_pre_eval_ttt.yaml"), "--records", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "track_non_record_16mb").iterdir()
    assert "not allowed for records" in (folder / "README.md").read_text().lower()


@pytest.mark.parametrize("recipe,mode", [("illegal_pre_eval_ttt", "pre_eval"),
                                         ("two_phase_ttt_as_submitted", "two_phase_pre_eval")])
def test_pre_eval_is_refused_on_the_record_track(recipe, mode, tmp_path):
    data = yaml.safe_load((ROOT / "recipes" / f"{recipe}.yaml").read_text())
    data["identity"]["track"] = "10min_16mb"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(pack, [str(bad), "--records", str(tmp_path / "records")])
    assert result.exit_code == 2 and f"ttt.mode: {mode} TTT trains on validation tokens" in result.output
    assert not (tmp_path / "records").exists()
