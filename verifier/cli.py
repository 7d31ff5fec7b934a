"""golf-verify command line (argument parsing only; the work is in verifier.verify_folder, verifier.rerun
and verifier.probes).

Exit codes: 0 pass, 1 findings at error level, 2 usage error or unreadable input."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from verifier import VerifyError, __version__, load_script_facts, verify_folder
from verifier.folder import holds_records, record_folders
from verifier.report import Report, _escape_data, _escape_prop, render_audit, render_github, render_json, render_text
from verifier.stats import DEFAULT_POLICY, available_policies

_SEEDS_VALUE = re.compile(r"\d{1,15}(?:,\d{1,15})*")


def _expand_seeds(args: list[str]) -> list[str]:
    """`--seeds 1 2 3` and `--seeds 1,2,3` -> `--seeds 1 --seeds 2 --seeds 3` (click options take one value)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "--":
            return out + args[i:]
        if tok.startswith("--seeds="):
            out += [x for v in tok.split("=", 1)[1].split(",") if v for x in ("--seeds", v)]
            i += 1
            continue
        if tok == "--seeds":
            j = i + 1
            values = []
            while j < len(args) and _SEEDS_VALUE.fullmatch(args[j]):
                values += args[j].split(",")
                j += 1
            if not values:  # let click report the missing value
                out.append(tok)
                i += 1
                continue
            for v in values:
                out += ["--seeds", v]
            i = j
            continue
        out.append(tok)
        i += 1
    return out


class _Command(click.Command):
    def parse_args(self, ctx, args):
        return super().parse_args(ctx, _expand_seeds(list(args)))


def _list_checks(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from verifier.docs import render_check_list

    click.echo(render_check_list())
    ctx.exit(0)


def _parse_env(values) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise click.UsageError(f"--env {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _emit(reports: list[Report], fmt: str, color) -> None:
    if fmt == "json":
        click.echo(render_json(reports))
    elif fmt == "github":
        click.echo(render_github(reports))
    else:
        use_color = sys.stdout.isatty() if color is None else color
        click.echo(render_text(reports, color=use_color))


@click.command(cls=_Command, context_settings={"help_option_names": ["-h", "--help"]})
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
                   "workflow annotations (the default with --ci).")
@click.option("--script-facts", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SCRIPTS.json-style facts (bytes, lines, sha256, unwrapped size) for folders that ship no .py files.")
@click.option("--color/--no-color", default=None, help="Colour the text report (default: when stdout is a terminal).")
@click.option("--list-checks", is_flag=True, expose_value=False, is_eager=True, callback=_list_checks,
              help="List the checks (id, severity, title) and exit.")
@click.option("--rerun", is_flag=True,
              help="Run train_gpt.py again per seed (torchrun, in a temporary copy, offline, with a timeout), save "
                   "the logs under FOLDER/verify/<timestamp>/ and check them; executes the submission's code.")
@click.option("--smoke", is_flag=True,
              help="Rerun on CPU under golf-verify's harness (any record's script, unmodified) with a tiny dataset in "
                   "the script's format and a small model (verifier/harness/profiles.json); implies --rerun; scores are "
                   "not compared with the claims.")
@click.option("--seeds", type=int, multiple=True,
              help="With --rerun: seeds to run (`--seeds 1 2` or `--seeds 1,2`); default: the seeds the folder claims.")
@click.option("--nproc", type=int, default=None,
              help="With --rerun/--probe: processes per seed (default: all visible GPUs; 1 when none).")
@click.option("--data-path", type=click.Path(), default=None,
              help="With --rerun/--probe: folder of fineweb_{train,val}_*.bin shards (DATA_PATH).")
@click.option("--tokenizer-path", type=click.Path(), default=None,
              help="With --rerun/--probe: SentencePiece model (TOKENIZER_PATH).")
@click.option("--timeout", type=float, default=None,
              help="With --rerun/--probe: hard limit in seconds per seed or probe run (default 1500; 300 with --smoke "
                   "or --probe).")
@click.option("--tolerance", type=float, default=None,
              help="With --rerun: largest |reproduced - claimed| val_bpb that counts as reproduced (default 0.002).")
@click.option("--env", "env_items", multiple=True, metavar="KEY=VALUE",
              help="With --rerun: extra environment for the run (recorded in rerun.json), e.g. --env TORCH_COMPILE=0.")
@click.option("--probe", is_flag=True,
              help="Run FOLDER's script three times on CPU under golf-verify's harness (copies, offline, time-limited) "
                   "and judge its evaluation from outside: causality, single pass, normalization, isolation (a minute "
                   "or two on two cores; executes the submission's code).")
@click.option("--ci", is_flag=True,
              help="Verify every record folder under the FOLDERS given (every direct child of records/track_*/, "
                   "whatever it holds); GitHub annotations; exit 1 on any error; pending folders are reported as "
                   "pending.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="With --ci: folders verified in parallel by this many processes (default: the CPUs available).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="With --ci: also write an audit table, one row per record (score, seeds, artifact, verdict, "
                   "findings with file:line), as Markdown (.md) or HTML (.html).")
@click.version_option(__version__, prog_name="golf-verify")
@click.pass_context
def main(ctx, folders, against, sota_loss, sota_bpb, policy, profile, fmt, script_facts, color, rerun, smoke,
         seeds, nproc, data_path, tokenizer_path, timeout, tolerance, env_items, probe, ci, jobs, report_path):
    """Verify Parameter Golf record FOLDERS without running their code (or, with --rerun, by running it)."""
    given = [x for x in (against, sota_loss, sota_bpb) if x is not None]
    if len(given) > 1:
        raise click.UsageError("give at most one of --against, --sota-loss, --sota-bpb")
    rerun = rerun or smoke  # --smoke alone is a smoke rerun
    modes = [name for name, on in (("--rerun", rerun), ("--probe", probe), ("--ci", ci)) if on]
    if len(modes) > 1:
        raise click.UsageError(f"give at most one of {', '.join(modes)}")
    rerun_only = [name for name, on in (("--seeds", seeds), ("--tolerance", tolerance is not None),
                                        ("--env", env_items)) if on]
    if rerun_only and not rerun:
        raise click.UsageError(f"{', '.join(rerun_only)} only with --rerun")
    run_opts = [name for name, on in (("--nproc", nproc is not None), ("--data-path", data_path),
                                      ("--tokenizer-path", tokenizer_path), ("--timeout", timeout is not None)) if on]
    if run_opts and not (rerun or probe):
        raise click.UsageError(f"{', '.join(run_opts)} only with --rerun or --probe")
    if (rerun or probe or ci) and given:
        raise click.UsageError(f"--against/--sota-loss/--sota-bpb cannot be combined with {modes[0]}")
    if (rerun or probe) and len(folders) != 1:
        raise click.UsageError(f"{modes[0]} takes exactly one record folder")
    if (report_path or jobs) and not ci:
        raise click.UsageError(f"{'--report' if report_path else '--jobs'} only with --ci")
    if report_path and not report_path.lower().endswith((".md", ".html", ".htm")):
        raise click.UsageError(f"--report {report_path}: expected a .md or .html file name")
    facts = None
    if script_facts:
        try:
            facts = load_script_facts(script_facts)
        except (OSError, ValueError) as exc:
            click.echo(f"golf-verify: cannot read --script-facts: {exc}", err=True)
            sys.exit(2)
    prof = None if profile == "auto" else profile
    if rerun:
        _rerun(folders[0], seeds=list(seeds), nproc=nproc, data_path=data_path, tokenizer_path=tokenizer_path,
               timeout=timeout, tolerance=tolerance, smoke=smoke, env=_parse_env(env_items), policy=policy,
               profile=prof, fmt=fmt, color=color)
    if probe:
        _probe(folders[0], nproc=nproc, data_path=data_path, tokenizer_path=tokenizer_path, timeout=timeout,
               fmt=fmt, color=color)
    if ci:
        if ctx.get_parameter_source("fmt") == ParameterSource.DEFAULT:
            fmt = "github"
        _ci(folders, policy=policy, profile=prof, facts=facts, fmt=fmt, color=color, report_path=report_path,
            jobs=jobs)
    for folder in folders:
        if not rerun and not probe and holds_records(folder):
            n = len(record_folders(folder))
            click.echo(f"golf-verify: {folder} holds {n} record folder(s), not one record; run "
                       f"`golf-verify --ci {folder}` to verify each of them", err=True)
            sys.exit(2)
    reports = []
    try:
        for folder in folders:
            reports.append(verify_folder(folder, against=against, sota_loss=sota_loss, sota_bpb=sota_bpb,
                                         policy=policy, profile=prof, script_facts=facts, display=folder))
    except VerifyError as exc:
        click.echo(f"golf-verify: {exc}", err=True)
        sys.exit(2)
    _emit(reports, fmt, color)
    sys.exit(max(r.exit_code for r in reports))


def _rerun(folder, *, seeds, nproc, data_path, tokenizer_path, timeout, tolerance, smoke, env, policy, profile, fmt,
           color) -> None:
    from verifier.rerun import DEFAULT_TOLERANCE_BPB, RerunError, render_rerun_text, rerun_folder

    try:
        outcome = rerun_folder(folder, seeds=seeds or None, nproc=nproc, data_path=data_path,
                               tokenizer_path=tokenizer_path, timeout=timeout,
                               tolerance=DEFAULT_TOLERANCE_BPB if tolerance is None else tolerance, smoke=smoke,
                               extra_env=env, policy=policy, profile=profile, display=folder,
                               progress=lambda msg: click.echo(f"[rerun] {msg}", err=True))
    except RerunError as exc:
        click.echo(f"golf-verify: {exc}", err=True)
        sys.exit(2)
    if fmt == "text":
        click.echo(render_rerun_text(outcome))
    _emit([outcome.report], fmt, color)
    sys.exit(outcome.exit_code)


def _probe(folder, *, nproc, data_path, tokenizer_path, timeout, fmt, color) -> None:
    if importlib.util.find_spec("verifier.probes") is None:
        raise click.UsageError("--probe: probes not available (this installation has no verifier/probes.py)")
    from verifier import probes

    run_probes = getattr(probes, "run_probes", None)
    if run_probes is None:
        raise click.UsageError("--probe: probes not available (verifier.probes has no run_probes)")
    try:
        base = verify_folder(folder, display=folder)  # profile and track of the folder
    except VerifyError as exc:
        click.echo(f"golf-verify: {exc}", err=True)
        sys.exit(2)
    given = {k: v for k, v in (("nproc", nproc), ("timeout", timeout)) if v is not None}
    try:
        result = run_probes(folder, data_path=data_path, tokenizer_path=tokenizer_path, **given)
    except (VerifyError, ValueError, OSError) as exc:
        click.echo(f"golf-verify: --probe: {exc}", err=True)
        sys.exit(2)
    findings = getattr(result, "findings", result)
    skipped: list = []
    if callable(findings):  # ProbeResult.findings(profile) -> (findings, skipped)
        findings, skipped = findings(base.profile)
    summary = {"probes": result.to_dict()} if callable(getattr(result, "to_dict", None)) else {}
    report = Report(folder=str(folder), name=base.name, profile=base.profile, profile_reason=base.profile_reason,
                    track=base.track, track_source=base.track_source, policy=base.policy,
                    findings=list(findings or []), skipped=list(skipped or []), summary=summary, version=__version__)
    _emit([report], fmt, color)
    sys.exit(report.exit_code)


def _verify_one(folder, policy, profile, facts):
    """One --ci folder: ("ok", Report) or ("broken", message); run in a worker process."""
    try:
        return "ok", verify_folder(folder, policy=policy, profile=profile, script_facts=facts, display=str(folder))
    except VerifyError as exc:
        return "broken", str(exc)


def _verify_many(folders, *, policy, profile, facts, jobs) -> list:
    """Results in folder order; several folders are verified in parallel worker processes."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(len(folders), jobs or cpus)
    args = [(f, policy, profile, facts) for f in folders]
    if workers < 2 or len(folders) < 4:
        return [_verify_one(*a) for a in args]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if sys.platform.startswith("linux") else "spawn"
    if method == "fork":  # what every worker needs is loaded once, before the fork
        from verifier.checks.schema import schema_validator

        try:
            schema_validator("legacy"), schema_validator("strict")
        except ImportError:
            pass
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(_verify_one, *zip(*args), chunksize=max(1, len(args) // (4 * workers))))


def _ci(roots, *, policy, profile, facts, fmt, color, report_path=None, jobs=None) -> None:
    folders = []
    for root in roots:
        if not Path(root).is_dir():
            click.echo(f"golf-verify: --ci: {root} is not a folder", err=True)
            sys.exit(2)
        folders += record_folders(root)
    if not folders:
        click.echo(f"golf-verify: --ci: no record folder under {', '.join(map(str, roots))} (expected "
                   f"records/track_*/<run>/ or folders holding submission.json, a script or a log)", err=True)
        sys.exit(2)
    reports, broken = [], []
    for folder, (kind, result) in zip(folders, _verify_many(folders, policy=policy, profile=profile, facts=facts,
                                                            jobs=jobs)):
        if kind == "ok":
            reports.append(result)
        else:
            broken.append((str(folder), result))
    if reports:
        _emit(reports, fmt, color)
    verdicts = {"pass": [], "pending": [], "fail": []}
    for rep in reports:
        verdicts[rep.verdict].append(rep.folder)
    verdicts["fail"] += [name for name, _ in broken]
    for name, message in broken:
        if fmt == "github":
            click.echo(f"::error file={_escape_prop(name)},title=golf-verify::{_escape_data(message)}")
        else:
            click.echo(f"golf-verify: {name}: {message}", err=True)
    line = (f"golf-verify --ci: {len(reports) + len(broken)} record folder(s): {len(verdicts['pass'])} pass, "
            f"{len(verdicts['pending'])} pending, {len(verdicts['fail'])} fail")
    if fmt == "github":
        click.echo(f"::notice title=golf-verify --ci::{_escape_data(line)}")
        for name in verdicts["pending"]:
            click.echo(f"::notice file={_escape_prop(name)},title=pending::"
                       f"{_escape_data(name)}: pending (results not in yet; not passing)")
    elif fmt == "text":
        click.echo(line)
        for name in verdicts["pending"]:
            click.echo(f"  pending (not passing): {name}")
        for name in verdicts["fail"]:
            click.echo(f"  fail: {name}")
    if report_path:
        text = render_audit(reports, broken, html=report_path.lower().endswith((".html", ".htm")))
        try:
            Path(report_path).write_text(text, encoding="utf-8")
        except OSError as exc:
            click.echo(f"golf-verify: --report {report_path}: cannot write ({exc.strerror or exc})", err=True)
            sys.exit(2)
        click.echo(f"golf-verify: audit report written to {report_path}", err=True)
    sys.exit(1 if verdicts["fail"] else 0)
