"""Command-line entry points: golf-pack and golf-data."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from packager import __version__
from packager.errors import UserError


def _fail(exc: UserError) -> None:
    click.echo(f"error: {exc.format()}", err=True)
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
              help="Write results although seeds are missing or a log is truncated (status 'partial'; "
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
    Problems with the logs (wrong seed, truncated, missing seed) are listed one per line and
    nothing is written (exit 2)."""
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets for tests and smoke runs."""


@data.command("tiny")
@click.argument("out", type=click.Path(path_type=Path))
def data_tiny(out: Path) -> None:
    """Build the tiny dataset (tokenizer + FineWeb-format shards) from Python's own docs."""
    from verifier.tinydata import build_tiny_dataset

    try:
        summary = build_tiny_dataset(out)
    except UserError as exc:
        _fail(exc)
    except (ValueError, FileExistsError) as exc:
        click.echo(f"error: {out}: {exc}", err=True)
        sys.exit(2)
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


def pack_main() -> None:
    pack(prog_name="golf-pack")


def data_main() -> None:
    data(prog_name="golf-data")
