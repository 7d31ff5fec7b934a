"""Feature gates and hyperparameter declarations shared by the runtime modules.

`feature(name)` marks code that only some recipes need. Imported as a module
(unit tests), every feature is compiled in and the hyperparameters decide what
runs. When rendering, `if feature("x"):` blocks are replaced by their body (the
recipe uses x) or by their `else:` branch / nothing (it does not), so a rendered
script holds only the code its recipe uses. Neither `feature` nor `HP` ever
appears in a rendered script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def feature(name: str) -> bool:
    """True when `name` is compiled in; imported as a module, everything is.

    Only valid as the whole test of an `if` statement (optionally `not feature(..)`).
    Each runtime module lists the features it gates on in a module-level
    `FEATURES = {"name": ("meaning", "rule"), ...}`, the rule being an expression
    over hyperparameter names that says when a recipe uses the feature; the
    renderer refuses unlisted names.
    """
    return True


@dataclass(frozen=True)
class HP:
    """One hyperparameter: attribute `name` on args, env var `env`, recipe key `path`.

    `kind` is one of int, float, bool, str. `default` is the value used when a
    recipe omits the key (for a feature's hyperparameters: the value that turns it
    off). `feature` is the feature that needs it (None: every script has it).
    `doc` becomes the schema description and the comment in the rendered block.
    `choices` (allowed values) and `minimum` are checked by the recipe schema.
    `smoke` is the value of a CPU smoke run (`golf-pack smoke`: tiny data, a small model, a
    few steps), for a feature's hyperparameter that must shrink with the model or the data
    while keeping its code path busy (None: the recipe's value); the settings every
    Parameter Golf script shares (NUM_LAYERS, ITERATIONS, ...) are golf-verify's
    (verifier.rerun.SMOKE_OVERRIDES, the CPU harness's `tiny` profile).
    """

    name: str
    env: str
    path: str
    kind: type
    default: Any
    feature: str | None = None
    doc: str = ""
    choices: tuple | None = None
    minimum: float | None = None
    smoke: Any = None

    def parse(self, raw: str) -> Any:
        if self.kind is bool:
            return bool(int(raw))
        return self.kind(raw)
