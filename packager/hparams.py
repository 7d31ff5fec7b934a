"""Hyperparameter declarations collected from the runtime modules.

Each runtime module owns its slice of the recipe through a module-level
`HPARAMS` tuple. This module gathers them (without importing torch-heavy code
paths more than once), resolves a recipe's values and builds `args` objects for
tests and for the renderer.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from packager.runtime.features import HP

RUNTIME_DIR = Path(__file__).parent / "runtime"

# Render order of the runtime modules: the script reads top-down in this order.
RUNTIME_MODULES = (
    "system",
    "data",
    "bpb",
    "model",
    "docattn",
    "kernels",
    "frontier",
    "optim",
    "quant",
    "train",
)


def runtime_modules() -> list[str]:
    """Runtime module names that exist, in render order, then any others sorted."""
    present = {p.stem for p in RUNTIME_DIR.glob("*.py") if p.stem not in ("__init__", "features")}
    ordered = [m for m in RUNTIME_MODULES if m in present]
    return ordered + sorted(present - set(ordered))


def all_hparams() -> list[HP]:
    """Every declared HP, in module order then declaration order; names are unique."""
    seen: dict[str, str] = {}
    out: list[HP] = []
    for mod in runtime_modules():
        module = importlib.import_module(f"packager.runtime.{mod}")
        for hp in getattr(module, "HPARAMS", ()):
            if hp.name in seen:
                raise ValueError(f"hyperparameter {hp.name!r} declared in both {seen[hp.name]} and {mod}")
            seen[hp.name] = mod
            out.append(hp)
    return out


def all_features() -> dict[str, str]:
    out: dict[str, str] = {}
    for mod in runtime_modules():
        module = importlib.import_module(f"packager.runtime.{mod}")
        out.update(getattr(module, "FEATURES", {}))
    return out


def get_path(tree: dict, path: str, default: Any = None) -> Any:
    """Value at dotted `path` of a nested dict; `seeds[0]` indexes a list."""
    node: Any = tree
    for part in path.split("."):
        index = None
        if part.endswith("]") and "[" in part:
            part, idx = part[:-1].split("[")
            index = int(idx)
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
        if index is not None:
            if not isinstance(node, list) or len(node) <= index:
                return default
            node = node[index]
    return node


def resolve(recipe: dict | None, hparams: Iterable[HP] | None = None) -> dict[str, Any]:
    """{hp.name: value} for a recipe (a nested dict), defaults for what it omits."""
    recipe = recipe or {}
    values = {}
    for hp in hparams if hparams is not None else all_hparams():
        value = get_path(recipe, hp.path, hp.default)
        values[hp.name] = hp.kind(value) if value is not None and hp.kind is not str else value
    return values


def make_args(recipe: dict | None = None, **overrides: Any) -> SimpleNamespace:
    """An `args` object as a rendered script would build it, for tests.

    `recipe` is a recipe dict (None: every default); `overrides` set attributes by
    hyperparameter name and must name declared hyperparameters.
    """
    values = resolve(recipe)
    for key, value in overrides.items():
        if key not in values:
            raise KeyError(f"unknown hyperparameter {key!r}")
        values[key] = value
    return SimpleNamespace(**values)


def load_baseline_recipe() -> dict:
    """The shipped naive baseline recipe as a plain dict (for tests)."""
    import yaml

    path = Path(__file__).resolve().parent.parent / "recipes" / "naive_baseline.yaml"
    return yaml.safe_load(path.read_text())


class Hyperparameters:
    """Module-mode stand-in for the rendered script's Hyperparameters class.

    Every declared hyperparameter, with the value of the recipe named by GOLF_RECIPE
    (a YAML file; unset: the declared defaults) and the usual env-var overrides.
    Lets `python -m packager.runtime.train` run without rendering.
    """

    def __init__(self) -> None:
        import os

        recipe = None
        if os.environ.get("GOLF_RECIPE"):
            import yaml

            recipe = yaml.safe_load(Path(os.environ["GOLF_RECIPE"]).read_text())
        hps = all_hparams()
        values = resolve(recipe, hps)
        for hp in hps:
            if hp.env in os.environ:
                values[hp.name] = hp.parse(os.environ[hp.env])
        for name, value in values.items():
            setattr(self, name, value)
