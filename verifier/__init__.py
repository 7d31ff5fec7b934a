"""golf-verify: static checks of a Parameter Golf record folder.

Public API:
    verify_folder(path, *, against=None, sota_loss=None, sota_bpb=None, policy=DEFAULT_POLICY,
                  profile=None, script_facts=None, display=None) -> Report
    parse_log(text, name="") -> LogSummary          (also used by golf-pack to fill submission.json)
    load_policy(name_or_path) -> Policy

Nothing in a record folder is executed or imported; torch is never imported.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager

from verifier.analysis import Analysis, Comparison, analyse
from verifier.checks import REGISTRY, run_checks
from verifier.folder import load_folder
from verifier.logs import LogSummary, Score, parse_log
from verifier.report import Finding, Report
from verifier.scripts import load_script_facts
from verifier.stats import DEFAULT_POLICY, Policy, load_policy

__all__ = ["verify_folder", "parse_log", "LogSummary", "Score", "Report", "Finding", "Policy", "load_policy",
           "load_script_facts", "load_comparison", "REGISTRY", "DEFAULT_POLICY", "__version__", "VerifyError"]

__version__ = "0.1.0"


class VerifyError(Exception):
    """The input itself is unusable (missing folder, unreadable comparison): exit code 2."""


def _as_policy(policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    try:
        return load_policy(policy)
    except (OSError, ValueError) as exc:
        raise VerifyError(str(exc)) from None


def load_comparison(path, *, policy: Policy | str = DEFAULT_POLICY, script_facts: dict | None = None) -> Comparison:
    """Per-seed figures of the record to beat, from its folder (seed logs, else its JSON)."""
    try:
        folder = load_folder(path, script_facts=script_facts)
    except OSError as exc:
        raise VerifyError(f"comparison record {path}: {exc}") from None
    a = analyse(folder, str(path), _as_policy(policy))
    pairs = [(r.final.val_loss, r.final.val_bpb) for r in a.runs
             if r.final is not None and r.final.val_loss is not None and r.final.val_bpb is not None]
    name = folder.name
    if pairs:
        ratios = [b / l for l, b in pairs if l > 0 and b > 0]
        return Comparison(name, [p[0] for p in pairs], [p[1] for p in pairs],
                          sum(ratios) / len(ratios) if ratios else None, "folder")
    c = a.claims
    if c is not None:
        seeds = [(s.val_loss, s.val_bpb) for _, s in sorted(c.seed_results.items())
                 if s.val_loss and s.val_bpb and s.val_loss > 0]
        if seeds:
            return Comparison(name, [float(x[0]) for x in seeds], [float(x[1]) for x in seeds],
                              sum(b / l for l, b in seeds) / len(seeds), "folder")
        if c.val_loss and c.val_bpb and c.val_loss > 0:
            return Comparison(name, [float(c.val_loss)], [float(c.val_bpb)], float(c.val_bpb) / float(c.val_loss),
                              "folder")
        if c.val_bpb:
            return Comparison(name, [], [float(c.val_bpb)], None, "folder")
    raise VerifyError(f"comparison record {path}: no per-seed or mean val_loss/val_bpb found")


def _comparison_from_claims(a: Analysis) -> Comparison | None:
    comp = a.claims.comparison if a.claims else None
    if not comp:
        return None
    losses = [float(x) for x in comp.get("seed_val_losses", []) if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if not losses and isinstance(comp.get("val_loss"), (int, float)):
        losses = [float(comp["val_loss"])]
    if not losses:
        return None
    ratio = a.ratio
    return Comparison(str(comp.get("record", "submission comparison")), losses,
                      [x * ratio for x in losses] if ratio else [], ratio, "submission")


def _summary(a: Analysis) -> dict:
    runs = []
    for r in a.runs:
        f = r.final
        total, _ = a.companion_value(r, "total_bytes")
        train_ms, _ = a.companion_value(r, "train_time_ms")
        runs.append({"seed": r.seed, "log": r.log, "selected_by": r.how,
                     "family": f.family if f else None,
                     "val_bpb": f.val_bpb if f else None, "val_loss": f.val_loss if f else None,
                     "total_bytes": total, "train_time_ms": train_ms,
                     "eval_time_s": r.summary.eval_timed_s, "eval_end_to_end_s": r.summary.eval_end_to_end_s,
                     "companions": r.companions})
    bpbs = [x["val_bpb"] for x in runs if x["val_bpb"] is not None]
    losses = [x["val_loss"] for x in runs if x["val_loss"] is not None]
    scripts = {n: {"bytes": i.bytes, "lines": i.lines, "wrapper": i.wrapper, "unwrapped_lines": i.unwrapped_lines,
                   "source": i.source} for n, i in sorted(a.folder.scripts.items())}
    return {
        "runs": runs,
        "mean_val_bpb": sum(bpbs) / len(bpbs) if bpbs and len(bpbs) == len(runs) else None,
        "mean_val_loss": sum(losses) / len(losses) if losses and len(losses) == len(runs) else None,
        "bpb_per_nat": a.ratio,
        "logs": sorted(a.folder.logs),
        "unselected_logs": a.unselected,
        "scripts": scripts,
        "main_script": a.folder.main_script,
        "code_script": a.folder.code_script,
        "submission": a.submission.name if a.submission else None,
        "facts_mode": a.folder.facts_mode,
        "pending": bool(a.pending and not a.folder.logs),
    }


@contextmanager
def _gc_paused():
    """Reading a folder builds large syntax trees and many small records that hold no garbage cycles
    worth collecting mid-way; the cyclic collector would rescan them thousands of times (it cost
    about three quarters of the run), so it is paused while one folder is verified."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def verify_folder(path, *, against=None, sota_loss: float | None = None, sota_bpb: float | None = None,
                  policy: Policy | str = DEFAULT_POLICY, profile: str | None = None,
                  script_facts: dict | None = None, display: str | None = None,
                  checks=None) -> Report:
    """Verify one record folder. Raises VerifyError only when the input itself is unusable."""
    with _gc_paused():
        return _verify_folder(path, against=against, sota_loss=sota_loss, sota_bpb=sota_bpb, policy=policy,
                              profile=profile, script_facts=script_facts, display=display, checks=checks)


def _release(folder) -> None:
    for info in folder.scripts.values():
        info.release()


def _verify_folder(path, *, against, sota_loss, sota_bpb, policy, profile, script_facts, display, checks) -> Report:
    pol = _as_policy(policy)
    if profile not in (None, "strict", "legacy"):
        raise VerifyError(f"unknown profile {profile!r} (strict or legacy)")
    try:
        folder = load_folder(path, script_facts=script_facts)
    except (OSError, ValueError) as exc:
        raise VerifyError(f"cannot read record folder {path}: {exc}") from None
    shown = display if display is not None else str(path)
    a = analyse(folder, shown, pol, profile)
    if against is not None:
        a.comparison = against if isinstance(against, Comparison) else load_comparison(
            against, policy=pol, script_facts=script_facts)
    elif sota_loss is not None or sota_bpb is not None:
        ratio = a.ratio
        if sota_loss is not None:
            a.comparison = Comparison(f"val_loss {sota_loss}", [float(sota_loss)],
                                      [float(sota_loss) * ratio] if ratio else [], ratio, "sota-loss")
        else:
            a.comparison = Comparison(f"val_bpb {sota_bpb}", [float(sota_bpb) / ratio] if ratio else [],
                                      [float(sota_bpb)], ratio, "sota-bpb")
    else:
        a.comparison = _comparison_from_claims(a)
    try:
        findings = run_checks(a, checks)
    finally:
        _release(folder)
    report = Report(folder=shown, name=folder.name, profile=a.profile, profile_reason=a.profile_reason,
                    track=a.track, track_source=a.track_source, policy=pol.to_dict(), findings=findings,
                    skipped=a.skipped, summary=_summary(a), significance=a.significance, version=__version__)
    return report
