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
@click.option("--force", is_flag=True, help="Overwrite generated files that were edited by hand.")
@click.option("--print-schema", is_flag=True, help="Print the recipe JSON Schema and exit.")
@click.version_option(__version__, prog_name="golf-pack")
def pack(source: Path | None, records_root: Path, force: bool, print_schema: bool) -> None:
    """Render a recipe (recipes/<name>.yaml) into records/<track>/<date>_<slug>/."""
    from packager.folder import build_files, folder_for
    from packager.recipe import load_recipe
    from packager.recipe.schema import schema_text
    from packager.writer import write_folder

    if print_schema:
        click.echo(schema_text(), nl=False)
        return
    if source is None:
        raise click.UsageError("give a recipe file (recipes/<name>.yaml)")
    try:
        if source.is_dir():
            if not (source / "recipe.yaml").exists():
                raise UserError("no recipe.yaml in this folder", str(source))
            recipe = load_recipe(source / "recipe.yaml")
            folder = source
        else:
            recipe = load_recipe(source)
            folder = folder_for(recipe, records_root)
        files = build_files(recipe, folder)
        written = write_folder(folder, files, force=force,
                               extra_manifest={"packager_version": __version__, "recipe_sha256": recipe.sha256})
    except UserError as exc:
        _fail(exc)
    lines = files["train_gpt.py"].count(b"\n")
    click.echo(f"{folder}: train_gpt.py {lines} lines, {len(files['train_gpt.py'])} bytes; "
               f"{'wrote ' + ', '.join(written) if written else 'up to date'}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets for tests and smoke runs."""


@data.command("tiny")
@click.argument("out", type=click.Path(path_type=Path))
def data_tiny(out: Path) -> None:
    """Build the tiny dataset (tokenizer + FineWeb-format shards) from Python's own docs."""
    from packager.tinydata import build_tiny_dataset

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
