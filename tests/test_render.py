"""The renderer: gates, reachability, Hyperparameters, determinism, limits."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import textwrap
from pathlib import Path

import pytest

from packager import render
from packager.errors import RenderError
from packager.recipe import load_recipe
from packager.render import GENERATED_MARK, render_script, resolve_gates

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"


@pytest.fixture(scope="module")
def baseline_script() -> str:
    return render_script(load_recipe(BASELINE))


def load_script(path: Path, name: str = "rendered_script"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------- gates

SRC = textwrap.dedent('''\
    def f(x):
        y = x
        # explains the gate
        if feature("a"):
            # inside a
            y = y + 1
        else:
            y = y - 1
        if not feature("a"):
            y = y * 2
        return y


    def g():
        if feature("b"):
            return 1
''')


def run(src: str):
    ns: dict = {}
    exec(src, ns)
    return ns


def test_gate_keeps_body_when_enabled():
    out = resolve_gates(SRC, {"a", "b"}, {"a", "b"}, "m.py")
    assert "feature(" not in out and "# inside a" in out and "y - 1" not in out and "y * 2" not in out
    assert run(out)["f"](1) == 2 and run(out)["g"]() == 1


def test_gate_keeps_else_and_drops_comments_when_disabled():
    out = resolve_gates(SRC, set(), {"a", "b"}, "m.py")
    assert "feature(" not in out and "# inside a" not in out and "y + 1" not in out
    assert run(out)["f"](1) == 0  # (1 - 1) * 2
    assert run(out)["g"]() is None  # body became `pass`


def test_gate_comment_above_dropped_gate_goes_with_it():
    src = "def f():\n    x = 1\n    # only for b\n    if feature('b'):\n        x = 2\n    return x\n"
    out = resolve_gates(src, set(), {"b"}, "m.py")
    assert "only for b" not in out and run(out)["f"]() == 1


def test_unknown_feature_and_elif_are_refused():
    with pytest.raises(RenderError, match="m.py:1: unknown feature 'zz'"):
        resolve_gates("if feature('zz'):\n    pass\n", set(), {"a"}, "m.py")
    with pytest.raises(RenderError, match="elif"):
        resolve_gates("if feature('a'):\n    x = 1\nelif y:\n    x = 2\n", set(), {"a"}, "m.py")


# ------------------------------------------------------------- the baseline script

def test_deterministic(baseline_script):
    assert render_script(load_recipe(BASELINE)) == baseline_script


def test_header_names_recipe_and_version(baseline_script):
    recipe = load_recipe(BASELINE)
    first = baseline_script.splitlines()[0]
    assert first.startswith(GENERATED_MARK) and recipe.sha256 in first
    assert f"RECIPE_SHA256 = {recipe.sha256!r}" in baseline_script


def test_pyflakes_clean_and_short(baseline_script):
    from pyflakes.api import check
    from pyflakes.reporter import Reporter

    out, err = io.StringIO(), io.StringIO()
    assert check(baseline_script, "train_gpt.py", Reporter(out, err)) == 0, out.getvalue() + err.getvalue()
    assert baseline_script.count("\n") <= 1500


def test_only_what_the_recipe_uses(baseline_script):
    assert "import packager" not in baseline_script and "from packager" not in baseline_script
    assert "feature(" not in baseline_script and "HPARAMS" not in baseline_script
    assert "import zstandard" not in baseline_script and "import lzma" not in baseline_script
    assert "def write_data_shard" not in baseline_script  # used by golf-data, not by training


def test_hyperparameters_are_recipe_values_with_env_overrides(baseline_script, tmp_path, monkeypatch):
    path = tmp_path / "train_gpt.py"
    path.write_text(baseline_script)
    module = load_script(path)
    args = module.Hyperparameters()
    assert (args.num_layers, args.model_dim, args.num_heads, args.num_kv_heads) == (9, 512, 8, 4)
    assert args.tie_embeddings is True and args.iterations == 20000 and args.seed == 1337
    monkeypatch.setenv("NUM_LAYERS", "3")
    monkeypatch.setenv("TIE_EMBEDDINGS", "0")
    module = load_script(path, "rendered_script_env")
    args = module.Hyperparameters()
    assert args.num_layers == 3 and args.tie_embeddings is False


def test_rendered_baseline_has_the_public_parameter_count(baseline_script, tmp_path):
    path = tmp_path / "train_gpt.py"
    path.write_text(baseline_script)
    module = load_script(path, "rendered_for_params")
    model = module.GPT(module.Hyperparameters())
    assert sum(p.numel() for p in model.parameters()) == 17_059_912


def test_too_long_is_refused_with_the_count_unless_it_ships_wrapped(monkeypatch, tmp_path):
    """The limit binds the train_gpt.py that ships: the readable script, or the wrapper with the readable twin beside it."""
    monkeypatch.setattr(render, "MAX_LINES", 100)
    with pytest.raises(RenderError, match=r"would have \d+ lines, over the 100-line limit; set code: \{wrap: lzma_b85\}"):
        render_script(load_recipe(BASELINE))
    wrapped = tmp_path / "wrapped.yaml"
    wrapped.write_text(BASELINE.read_text() + "code:\n  wrap: lzma_b85\n")
    recipe = load_recipe(wrapped)
    script = render_script(recipe)
    assert script.count("\n") > 100 >= render.shipped_lines(script, recipe)


def test_declarations_are_read_from_source_as_imported():
    """The packager reads HPARAMS and FEATURES without importing the modules (no torch): the same objects."""
    import importlib

    from packager.hparams import declarations, runtime_modules

    for name in runtime_modules():
        module = importlib.import_module(f"packager.runtime.{name}")
        read = declarations(name)
        assert tuple(read.get("HPARAMS", ())) == tuple(getattr(module, "HPARAMS", ())), name
        assert read.get("FEATURES", {}) == getattr(module, "FEATURES", {}), name


def test_a_declaration_that_is_not_data_is_refused_with_its_place():
    from packager.hparams import _read_declarations

    src = 'LAYERS = {"q": 1, "v": 2}\nHPARAMS = (HP("x", "X", "model.x", str, "q", choices=tuple(sorted(LAYERS))),)\n'
    (hp,) = _read_declarations(src, "m.py")["HPARAMS"]
    assert hp.choices == ("q", "v")
    with pytest.raises(ValueError, match=r"m\.py:1: HPARAMS must be built from HP\(...\), literals"):
        _read_declarations("HPARAMS = (HP('x', 'X', 'model.x', int, default_of()),)\n", "m.py")
