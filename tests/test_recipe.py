"""Recipe loading: schema, line numbers, suggestions, cross-field rules, CLI errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from packager.cli import pack
from packager.errors import UserError
from packager.recipe import load_recipe
from packager.recipe.schema import SCHEMA_PATH, build_schema, schema_text

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def edit(key_path: str, value, tmp_path: Path) -> Path:
    data = yaml.safe_load(BASELINE.read_text())
    node = data
    parts = key_path.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False))


def test_baseline_loads_with_its_values():
    recipe = load_recipe(BASELINE)
    assert recipe.values["num_layers"] == 9 and recipe.values["model_dim"] == 512
    assert recipe.values["tie_embeddings"] is True and recipe.values["seed"] == 1337
    assert recipe.track == "10min_16mb" and recipe.slug == "NaiveBaseline"
    assert len(recipe.sha256) == 64


def test_published_schema_matches_declarations():
    # docs for editors: the file must be regenerated when a module's HPARAMS change
    assert json.loads(SCHEMA_PATH.read_text()) == build_schema(), "run: golf-pack --print-schema > packager/recipe/schema.json"
    assert SCHEMA_PATH.read_text() == schema_text()


def test_unknown_key_names_line_and_suggests(tmp_path):
    text = BASELINE.read_text().replace("  num_layers: 9", "  num_layer: 9")
    line = text.splitlines().index("  num_layer: 9") + 1
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text))
    msg = str(err.value)
    assert f"r.yaml:{line}:" in msg and "model.num_layer" in msg and "did you mean 'num_layers'" in msg
    assert "\n" not in msg


def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(UserError, match="unknown key; did you mean 'model'"):
        load_recipe(write(tmp_path, BASELINE.read_text() + "modle: {}\n"))


def test_wrong_type_names_expected_type(tmp_path):
    with pytest.raises(UserError, match=r"model\.num_heads: expected an integer, got a string \('eight'\)"):
        load_recipe(edit("model.num_heads", "eight", tmp_path))


def test_bool_is_not_a_number(tmp_path):
    with pytest.raises(UserError, match=r"train\.max_wallclock_seconds: expected a number"):
        load_recipe(edit("train.max_wallclock_seconds", True, tmp_path))


def test_broken_yaml_gives_line(tmp_path):
    text = BASELINE.read_text().replace("  model_dim: 512", "  model_dim: [512")
    with pytest.raises(UserError, match=r"r\.yaml:\d+: invalid YAML"):
        load_recipe(write(tmp_path, text))


def test_duplicate_key(tmp_path):
    text = BASELINE.read_text().replace("  model_dim: 512", "  model_dim: 512\n  model_dim: 256")
    with pytest.raises(UserError, match="model.model_dim: duplicate key"):
        load_recipe(write(tmp_path, text))


@pytest.mark.parametrize("key,value,message", [
    ("model.num_heads", 7, "must be divisible by num_heads"),
    ("model.num_kv_heads", 3, "must be divisible by num_kv_heads"),
    ("model.model_dim", 520, "head_dim 65 must be even"),
    ("data.vocab_size", 2048, "does not match the dataset fineweb10B_sp1024"),
    ("train.train_batch_tokens", 1000, "must be a multiple of 8 x train_seq_len"),
    ("identity.track", "unlimited", "expected one of '10min_16mb', 'non_record_16mb'"),
    ("seeds", [1, 1], "seeds must be distinct"),
    ("model.rope_dims", 17, "rope_dims 17 must be even and at most head_dim 64"),
    ("model.rope_dims", 66, "rope_dims 66 must be even and at most head_dim 64"),
    ("model.ve_layers", "8,9", "ve_layers must be distinct layer indices in 0..8"),
    ("model.ve_layers", "1,1", "ve_layers must be distinct layer indices"),
    ("model.bigram_buckets", 1, "bigram_buckets must be 0 \\(off\\) or at least 2"),
    ("eval.sliding_stride", 2048, "sliding_stride 2048 must be at most the eval sequence length 1024"),
    ("eval.passes", "sliding", "eval.passes: eval.passes 'sliding' must name each of roundtrip at most once"),
    ("eval.passes", "roundtrip,roundtrip", "must name each of roundtrip at most once"),
])
def test_cross_field_and_enum_rules(tmp_path, key, value, message):
    with pytest.raises(UserError, match=message):
        load_recipe(edit(key, value, tmp_path))


def test_missing_required_identity_field(tmp_path):
    data = yaml.safe_load(BASELINE.read_text())
    del data["identity"]["author"]
    with pytest.raises(UserError, match="identity: missing required key 'author'"):
        load_recipe(write(tmp_path, yaml.safe_dump(data)))


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "identity: {name: x}\n"])
def test_bad_documents(tmp_path, text):
    with pytest.raises(UserError):
        load_recipe(write(tmp_path, text))


def test_cli_bad_recipe_is_one_line_exit_2_and_no_folder(tmp_path):
    bad = write(tmp_path, BASELINE.read_text().replace("  mlp_mult: 2", "  mlp_mul: 2"))
    records = tmp_path / "records"
    result = CliRunner().invoke(pack, [str(bad), "--records", str(records)])
    assert result.exit_code == 2
    out = result.output.strip()
    assert out.count("\n") == 0 and "r.yaml:" in out and "did you mean 'mlp_mult'" in out
    assert "Traceback" not in result.output
    assert not records.exists()


def test_cli_missing_file(tmp_path):
    result = CliRunner().invoke(pack, [str(tmp_path / "nope.yaml"), "--records", str(tmp_path)])
    assert result.exit_code == 2 and "no such recipe file" in result.output


def test_lora_chunk_longer_than_the_window_is_refused(tmp_path):
    data = yaml.safe_load(BASELINE.read_text())
    data["train"]["train_seq_len"] = 128
    data["ttt"] = {"mode": "lora", "chunk_len": 256}
    with pytest.raises(UserError, match="ttt.chunk_len: chunk_len 256 must be at most the eval sequence length 128"):
        load_recipe(write(tmp_path, yaml.safe_dump(data)))


def test_every_mistake_of_a_recipe_is_reported_at_once(tmp_path):
    text = BASELINE.read_text().replace("  num_layers: 9", "  num_layer: 9").replace("  mlp_mult: 2", "  mlp_mul: 2")
    records = tmp_path / "records"
    result = CliRunner().invoke(pack, [str(write(tmp_path, text)), "--records", str(records)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 2, result.output
    assert any("model.num_layer: unknown key; did you mean 'num_layers'?" in l for l in lines)
    assert any("model.mlp_mul: unknown key; did you mean 'mlp_mult'?" in l for l in lines)
    assert all(l.startswith("error: ") and "r.yaml:" in l for l in lines) and not records.exists()
    # rules between fields, once every value has the right type: all of them too
    data = yaml.safe_load(BASELINE.read_text())
    data["model"]["num_kv_heads"] = 3
    data["eval"] = {"sliding_stride": 4096}
    result = CliRunner().invoke(pack, [str(write(tmp_path, yaml.safe_dump(data))), "--records", str(records)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 2, result.output
    assert "num_kv_heads" in result.output and "sliding_stride 4096" in result.output and not records.exists()


@pytest.mark.parametrize("track, cap, message", [
    ("10min_16mb", 900, "max_wallclock_seconds must be > 0 and at most 600 on the 10min_16mb track, got 900"),
    ("10min_16mb", -5, "got -5: records train for at most 600 s on 8xH100 \\(README\\), and 0 or less would turn"),
    ("10min_16mb", 0, "must be > 0 and at most 600 on the 10min_16mb track, got 0"),
    ("non_record_16mb", -5, "max_wallclock_seconds must be 0 \\(no cap\\) or positive, got -5"),
])
def test_track_limits_are_checked_when_rendering(tmp_path, track, cap, message):
    data = yaml.safe_load(BASELINE.read_text())
    data["identity"]["track"], data["train"]["max_wallclock_seconds"] = track, cap
    path = write(tmp_path, yaml.safe_dump(data, sort_keys=False))
    line = path.read_text().splitlines().index(f"  max_wallclock_seconds: {cap}") + 1
    result = CliRunner().invoke(pack, [str(path), "--records", str(tmp_path / "records")])
    assert result.exit_code == 2 and not (tmp_path / "records").exists()
    (out,) = result.output.strip().splitlines()
    assert out.startswith(f"error: {path}:{line}: train.max_wallclock_seconds: ")
    assert re.search(message, out), out


def test_no_limit_off_the_record_track(tmp_path):
    data = yaml.safe_load(BASELINE.read_text())
    data["identity"]["track"], data["train"]["max_wallclock_seconds"] = "non_record_16mb", 4850
    assert load_recipe(write(tmp_path, yaml.safe_dump(data))).values["max_wallclock_seconds"] == 4850


def test_loading_and_rendering_a_recipe_never_imports_torch(tmp_path):
    """Recipe errors come back in well under a second: torch (seconds to import) is never loaded."""
    bad = write(tmp_path, BASELINE.read_text().replace("  num_layers: 9", "  num_layer: 9"))
    code = ("import sys, time\n"
            "from packager.cli import pack\n"
            "from packager.recipe import load_recipe\n"
            "from packager.render import render_script\n"
            f"render_script(load_recipe({str(BASELINE)!r}))\n"
            "t = time.perf_counter()\n"
            f"try:\n    load_recipe({str(bad)!r})\nexcept Exception as exc:\n    print(type(exc).__name__)\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["UserError", "False", "False"], out.stdout
