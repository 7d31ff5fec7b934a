"""`golf-pack smoke FOLDER|RECIPE`: run a record's train_gpt.py on CPU with the tiny dataset, a small
model and a few steps, through every eval path of its recipe (TTT included), before spending GPU time.

The small settings come from two places, each owning its part: golf-verify's SMOKE_OVERRIDES (the
CPU harness's `tiny` profile: the variables Parameter Golf scripts share, model size, steps, batch)
and the `smoke` values of the runtime modules' hyperparameters (each feature shrinks its own: TTT
chunks, evaluation windows, XSA, value-embedding layers...). The vocabulary is the recipe's: the
tiny dataset is built at it. golf-pack stores them in the folder's manifest (`smoke_env`), and the
harness runs a golf-pack folder with exactly those (in place of its profiles for anyone's folder),
so `golf-pack smoke` and `golf-verify FOLDER --smoke` run the same thing: golf-verify's smoke rerun,
under its CPU harness, in a temporary copy of the folder, offline, with a time limit; the logs are
saved under FOLDER/verify/<time>/, where golf-pack does not collect them as results.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from packager.errors import UserError

SMOKE_TIMEOUT_S = 300.0
# Lines of a smoke log worth showing: the scores of each eval path and what TTT did.
_SHOWN = re.compile(r"^(?:(?:final|quantized)_\w+(?<!_exact)|legal_ttt|ttt:\w+) ")


def smoke_env(recipe) -> dict[str, str]:
    """{env var: value} that shrinks the recipe's script for a CPU smoke run (only variables it reads)."""
    from packager.collect import env_text
    from packager.folder import script_hparams
    from verifier.rerun import SMOKE_OVERRIDES

    hps = script_hparams(recipe)
    envs = {hp.env for hp in hps} - {"VOCAB_SIZE"}  # the tiny dataset is built at the recipe's vocabulary
    out = {env: value for env, value in SMOKE_OVERRIDES.items() if env in envs}
    out.update({hp.env: env_text(hp.kind, str(hp.smoke)) for hp in hps if hp.smoke is not None})
    return out


@dataclass
class SmokeRun:
    folder: Path
    ok: bool
    lines: list[str]  # what to print after the progress lines


def _tiny_data(recipe, root: Path) -> tuple[str, str]:
    """The tiny dataset at the recipe's vocabulary; CaseOps-transformed, with its byte sidecar, if the recipe reads one."""
    from packager.caseops import build_tiny_caseops
    from verifier.tinydata import build_tiny_dataset

    if recipe.values.get("caseops_enabled"):
        built = build_tiny_caseops(root / "tiny", vocab_size=recipe.values["vocab_size"])
    else:
        built = build_tiny_dataset(root / "tiny", vocab_size=recipe.values["vocab_size"])
    return built["data_path"], built["tokenizer_path"]


def _folder(source: Path, say: Callable[[str], None]):
    """(folder, recipe): a record folder as it is, or a recipe rendered into a fresh folder."""
    from packager.folder import render_folder
    from packager.recipe import load_recipe
    from packager.writer import write_folder

    if source.is_dir():
        if not (source / "recipe.yaml").is_file():
            raise UserError("no recipe.yaml: not a golf-pack folder (for any record folder: golf-verify FOLDER "
                            "--rerun --smoke)", str(source))
        return source, load_recipe(source / "recipe.yaml")
    recipe = load_recipe(source)
    folder = Path(tempfile.mkdtemp(prefix=f"golf-smoke-{recipe.slug}-")) / recipe.slug
    rendered = render_folder(recipe, folder)
    write_folder(folder, rendered.files, extra_manifest=rendered.manifest)
    say(f"rendered {source} into {folder} (a scratch folder; `golf-pack {source}` writes the record folder)")
    return folder, recipe


def run_smoke(source: Path, *, seeds: list[int] | None = None, nproc: int = 2, data_path: str | None = None,
              tokenizer_path: str | None = None, timeout: float = SMOKE_TIMEOUT_S,
              say: Callable[[str], None] = print) -> SmokeRun:
    """Smoke-run a folder or a recipe (with the settings its manifest carries); UserError when it cannot start."""
    from verifier.folder import golf_pack_smoke_env
    from verifier.rerun import RerunError, rerun_folder

    if (data_path is None) != (tokenizer_path is None):
        raise UserError("give both --data-path and --tokenizer-path, or neither (the tiny dataset is built)")
    folder, recipe = _folder(Path(source), say)
    if not golf_pack_smoke_env(folder):
        raise UserError("its .golf-pack.json holds no smoke settings (rendered by an older golf-pack): render it "
                        "again with `golf-pack RECIPE --force`", str(folder))
    run_seeds = list(seeds) if seeds else recipe.seeds[:1]
    with tempfile.TemporaryDirectory(prefix="golf-smoke-data-") as tmp:
        if data_path is None:
            data_path, tokenizer_path = _tiny_data(recipe, Path(tmp))
        try:
            outcome = rerun_folder(folder, seeds=run_seeds, nproc=nproc, data_path=data_path,
                                   tokenizer_path=tokenizer_path, timeout=timeout, smoke=True,
                                   display=str(folder), progress=say)
        except RerunError as exc:
            raise UserError(str(exc), str(folder)) from None
    return SmokeRun(folder, all(s.status == "ok" for s in outcome.result.seeds), _report(folder, outcome, recipe))


def _report(folder: Path, outcome, recipe) -> list[str]:
    out = []
    for s in outcome.result.seeds:
        out.append(f"seed {s.seed}: {s.status} ({s.phase_text()}) in {s.timers.get('wall_s', 0):.1f} s"
                   + (f"; log {folder / s.saved_log}" if s.saved_log else ""))
        text = "".join(s.console)
        out += [f"  {line}" for line in text.splitlines() if _SHOWN.match(line)]
        if s.status != "ok":
            errors = [line for line in text.splitlines() if line.startswith("error: ")]
            out += [f"  {line.rstrip()}" for line in (errors[:1] or s.tail[-8:])]
    if all(s.status == "ok" for s in outcome.result.seeds):
        seed = recipe.seeds[0]
        out.append(f"next: on 8xH100, in {folder}: SEED={seed} torchrun --standalone --nproc_per_node=8 train_gpt.py "
                   f"(once per seed of the recipe), then `golf-pack {folder}` to collect the logs")
    return out
