"""Command-line entry points: golf-pack and golf-data."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from packager import __version__
from packager.errors import UserError


def _fail(exc: UserError) -> None:
    for line in exc.lines():
        click.echo(f"error: {line}", err=True)
    sys.exit(2)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(path_type=Path), required=False)
@click.option("--records", "records_root", type=click.Path(path_type=Path), default=Path("records"), show_default=True,
              help="Root of the records tree the folder is written under.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Write the record folder exactly here instead of records/<track>/<date>_<slug>/.")
@click.option("--force", is_flag=True, help="Overwrite generated files that were edited by hand.")
@click.option("--against", default=None, metavar="PATH",
              help="Record folder to beat (overrides the recipe's identity.compare_to; remembered in the "
                   "manifest). 'recipe' goes back to the recipe's compare_to.")
@click.option("--allow-partial/--no-allow-partial", default=None,
              help="Write results although a seed has no complete log (status 'partial'; "
                   "remembered in the manifest). Default: refuse.")
@click.option("--policy", default=None, metavar="NAME",
              help="Significance policy (readme-2026-03, leaderboard-2026-04 or a policy JSON); default: the "
                   "one stored in the manifest, else readme-2026-03.")
@click.option("--check", is_flag=True, help="Render in memory and compare with the folder: list the generated "
                                             "files that differ and exit 1. Writes nothing.")
@click.option("--print-schema", is_flag=True, help="Print the recipe JSON Schema and exit.")
@click.version_option(__version__, prog_name="golf-pack")
def pack(source: Path | None, records_root: Path, out: Path | None, force: bool, against: str | None, allow_partial: bool | None,
         policy: str | None, check: bool, print_schema: bool) -> None:
    """Render a recipe (recipes/<name>.yaml) into records/<track>/<date>_<slug>/.

    Once the seed logs (train_seed<N>.log) are in the folder, running golf-pack again on the
    recipe or on the folder collects them into submission.json, README.md and loss_curves.png.
    Problems with the logs (wrong seed, incomplete run, missing seed) are listed one per line and
    nothing is written (exit 2).

    `golf-pack smoke FOLDER|RECIPE` runs a record on CPU with tiny data first (see its --help)."""
    from packager.collect import CollectError
    from packager.folder import folder_for, render_folder, stale_files
    from packager.recipe import load_recipe
    from packager.recipe.schema import schema_text
    from packager.writer import write_folder

    if print_schema:
        click.echo(schema_text(), nl=False)
        return
    if source is None:
        raise click.UsageError("give a recipe file (recipes/<name>.yaml)")
    try:
        if source.is_dir() and out is not None:
            raise UserError("--out applies to a recipe file; a folder is rendered in place", str(source))
        if source.is_dir():
            if not (source / "recipe.yaml").exists():
                raise UserError("no recipe.yaml in this folder", str(source))
            recipe = load_recipe(source / "recipe.yaml")
            folder = source
        else:
            recipe = load_recipe(source)
            folder = out if out is not None else folder_for(recipe, records_root)
        rendered = render_folder(recipe, folder, against=against, allow_partial=allow_partial, policy=policy)
        files = rendered.files
        if check:
            stale = stale_files(folder, files) if folder.exists() else sorted(files)
            for name in stale:
                click.echo(f"{folder / name}: differs from what golf-pack renders now", err=True)
            if stale:
                sys.exit(1)
            click.echo(f"{folder}: up to date")
            return
        written = write_folder(folder, files, force=force, extra_manifest=rendered.manifest)
    except CollectError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        click.echo(f"error: {exc.format()}", err=True)
        sys.exit(2)
    except UserError as exc:
        _fail(exc)
    for note in rendered.notes:
        click.echo(f"note: {note}", err=True)
    lines = files["train_gpt.py"].count(b"\n")
    col = rendered.collected
    status = (f"; results {col.status} over {len(col.runs)} seed(s)" if col is not None else "; results pending")
    click.echo(f"{folder}: train_gpt.py {lines} lines, {len(files['train_gpt.py'])} bytes{status}; "
               f"{'wrote ' + ', '.join(written) if written else 'up to date'}")
    target = shlex.quote(str(folder))
    click.echo(f"next: golf-pack smoke {target}   (a CPU run of every eval path on tiny data, under a minute)"
               if col is None else f"next: golf-verify {target}   (before opening the pull request)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--seeds", type=int, multiple=True, help="Seeds to run (repeat the option); default: the recipe's first.")
@click.option("--nproc", type=click.IntRange(1, 8), default=2, show_default=True, help="Processes (gloo ranks).")
@click.option("--data-path", default=None, help="Shards to use instead of the tiny dataset (with --tokenizer-path).")
@click.option("--tokenizer-path", default=None, help="SentencePiece model of --data-path.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds per seed before the run is killed.")
def smoke(source: Path, seeds: tuple[int, ...], nproc: int, data_path: str | None, tokenizer_path: str | None,
          timeout: float) -> None:
    """Run a record folder (or a recipe, rendered into a scratch folder) on CPU: the tiny dataset, a
    small model and a few steps, through every eval path of the recipe, TTT included (under a minute on
    two cores). One line per phase; the logs go to FOLDER/verify/<time>/, never counted as results.
    Exit 0 when every seed ran, 1 when one failed (its error line is shown), 2 for bad input."""
    from packager.smoke import run_smoke

    say = lambda msg: click.echo(f"[smoke] {msg}", err=True)  # noqa: E731
    try:
        result = run_smoke(source, seeds=list(seeds), nproc=nproc, data_path=data_path, tokenizer_path=tokenizer_path,
                           timeout=timeout, say=say)
    except UserError as exc:
        _fail(exc)
    for line in result.lines:
        click.echo(line)
    sys.exit(0 if result.ok else 1)


@click.command("import", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("record", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Recipe file to write (default: recipes/<record folder>.yaml); never overwrites.")
def import_cmd(record: Path, out: Path | None) -> None:
    """Write a recipe from a record folder (script defaults, README command, logged hyperparameters).
    Every setting without a recipe key is listed here and as a comment in the recipe; the model's
    parameter count is compared with the model_params its logs print."""
    from packager.importer import check_import

    out = out or Path("recipes") / f"{record.name}.yaml"
    try:
        if out.exists():
            raise UserError("exists; choose another --out", str(out))
        report = check_import(record, out)
    except UserError as exc:
        _fail(exc)
    click.echo(f"{out}: recipe from {record}")
    for name in report["unmapped"]:
        click.echo(f"unmapped: {name}")
    if "error" in report:
        click.echo(f"error: {report['error']}", err=True)
        sys.exit(1)
    verdict = "match" if report["match"] else "DIFFER"
    click.echo(f"model_params: recipe {report['params']} record {report['logged_params']} ({verdict})")
    sys.exit(0 if report["match"] else 1)


@click.command("diff", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
def diff_cmd(a: Path, b: Path) -> None:
    """What differs between two records or recipes: effective settings, techniques, code bytes."""
    from packager.importer import diff_sources

    try:
        lines = diff_sources(a, b)
    except UserError as exc:
        _fail(exc)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no differences")


SUBCOMMANDS = {"smoke": smoke, "import": import_cmd, "diff": diff_cmd}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets for tests and smoke runs."""


@data.command("caseops")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--vocab", "vocab_size", type=int, default=8192, show_default=True)
def data_caseops(out: Path, vocab_size: int) -> None:
    """Build a tiny CaseOps dataset (tokenizer, shards, validation byte sidecar) from Python's own docs."""
    from packager.caseops import build_tiny_caseops

    try:
        summary = build_tiny_caseops(out, vocab_size=vocab_size)
    except UserError as exc:
        _fail(exc)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


@data.command("tiny")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--vocab", "vocab_size", type=int, default=1024, show_default=True,
              help="Tokenizer vocabulary: 1024, 4096 and 8192 as the challenge's sp1024/sp4096/sp8192 data.")
def data_tiny(out: Path, vocab_size: int) -> None:
    """Build the tiny dataset (tokenizer + FineWeb-format shards) from Python's own docs."""
    from verifier.tinydata import build_tiny_dataset

    try:
        summary = build_tiny_dataset(out, vocab_size=vocab_size)
    except UserError as exc:
        _fail(exc)
    except (ValueError, FileExistsError) as exc:
        click.echo(f"error: {out}: {exc}", err=True)
        sys.exit(2)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


def pack_main() -> None:
    # `golf-pack RECIPE` renders; `golf-pack smoke|import|diff ...` are subcommands.
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        SUBCOMMANDS[sys.argv[1]](args=sys.argv[2:], prog_name=f"golf-pack {sys.argv[1]}")
    pack(prog_name="golf-pack")


def data_main() -> None:
    data(prog_name="golf-data")
