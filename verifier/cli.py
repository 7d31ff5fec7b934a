"""golf-verify command line (argument parsing only; the work is in verifier.verify_folder).

Exit codes: 0 pass, 1 findings at error level, 2 usage error or unreadable input."""

from __future__ import annotations

import sys

import click

from verifier import VerifyError, __version__, load_script_facts, verify_folder
from verifier.report import render_github, render_json, render_text
from verifier.stats import DEFAULT_POLICY, available_policies


def _list_checks(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from verifier.docs import render_check_list

    click.echo(render_check_list())
    ctx.exit(0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--against", type=click.Path(), default=None,
              help="Record folder to beat; adds the significance test (per-seed val_loss, Welch).")
@click.option("--sota-loss", type=float, default=None, help="Score to beat as one val_loss (nats): one-sample test.")
@click.option("--sota-bpb", type=float, default=None, help="Score to beat as one val_bpb: one-sample test.")
@click.option("--policy", default=DEFAULT_POLICY, show_default=True,
              help=f"Significance policy: {', '.join(available_policies())}, or a policy JSON file.")
@click.option("--profile", type=click.Choice(["auto", "strict", "legacy"]), default="auto", show_default=True,
              help="strict: golf-pack output rules; legacy: lenient rules for older records; auto: detect.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True,
              help="text for people, json for tools (schema: verifier/schemas/report.json), github for "
                   "workflow annotations.")
@click.option("--script-facts", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SCRIPTS.json-style facts (bytes, lines, sha256, unwrapped size) for folders that ship no .py files.")
@click.option("--color/--no-color", default=None, help="Colour the text report (default: when stdout is a terminal).")
@click.option("--list-checks", is_flag=True, expose_value=False, is_eager=True, callback=_list_checks,
              help="List the checks (id, severity, title) and exit.")
@click.version_option(__version__, prog_name="golf-verify")
def main(folders, against, sota_loss, sota_bpb, policy, profile, fmt, script_facts, color):
    """Verify Parameter Golf record FOLDERS without running their code."""
    given = [x for x in (against, sota_loss, sota_bpb) if x is not None]
    if len(given) > 1:
        raise click.UsageError("give at most one of --against, --sota-loss, --sota-bpb")
    facts = None
    if script_facts:
        try:
            facts = load_script_facts(script_facts)
        except (OSError, ValueError) as exc:
            click.echo(f"golf-verify: cannot read --script-facts: {exc}", err=True)
            sys.exit(2)
    reports = []
    try:
        for folder in folders:
            reports.append(verify_folder(folder, against=against, sota_loss=sota_loss, sota_bpb=sota_bpb,
                                         policy=policy, profile=None if profile == "auto" else profile,
                                         script_facts=facts, display=folder))
    except VerifyError as exc:
        click.echo(f"golf-verify: {exc}", err=True)
        sys.exit(2)
    if fmt == "json":
        click.echo(render_json(reports))
    elif fmt == "github":
        click.echo(render_github(reports))
    else:
        use_color = sys.stdout.isatty() if color is None else color
        click.echo(render_text(reports, color=use_color))
    sys.exit(max(r.exit_code for r in reports))
