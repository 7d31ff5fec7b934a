"""Derived view of a record folder that the checks share: which log stands for which seed, the
claims of the submission JSON, the track, the profile and the comparison record."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources

from verifier.artifact import Loaded, loaded_files
from verifier.folder import MANIFEST, RecordFolder, SubmissionFile, read_bytes
from verifier.logs import LogSummary, Score
from verifier.stats import Policy
from verifier.submission import Claims, SeedClaim, number_decimals, read_claims

__all__ = ["Run", "Comparison", "Analysis", "analyse", "load_canonical", "tolerance", "close"]

_CANONICAL: dict | None = None


def load_canonical() -> dict:
    global _CANONICAL
    if _CANONICAL is None:
        _CANONICAL = json.loads(resources.files("verifier").joinpath("canonical.json").read_text(encoding="utf-8"))
    return _CANONICAL


def tolerance(claimed, log_decimals: int | None = None) -> float:
    """One unit in the last digit the JSON printed, plus the rounding of the log's figure."""
    dec = number_decimals(claimed)
    tol = 10.0 ** -dec if dec is not None else 0.5
    if log_decimals is not None:
        tol += 0.5 * 10.0 ** -log_decimals
    return tol + 1e-12


def close(claimed, value: float | None, log_decimals: int | None = None) -> bool:
    if claimed is None or value is None:
        return False
    return abs(float(claimed) - value) <= tolerance(claimed, log_decimals)


def effective_seed(summary: LogSummary) -> int | None:
    return summary.seed if summary.seed is not None else summary.filename_seed


@dataclass
class Run:
    """One seed's result as the folder shows it: the log chosen for the seed, plus other logs of
    the same seed (a TTT-only re-evaluation, a rerun) that can supply training facts."""

    seed: int | None
    log: str
    summary: LogSummary
    how: str  # "json-seed" | "json-value" | "declared-seed" | "log"
    companions: list[str] = field(default_factory=list)

    @property
    def final(self) -> Score | None:
        return self.summary.final


@dataclass
class Comparison:
    """The record to beat: per-seed figures (one value: a single published number)."""

    name: str
    losses: list[float]
    bpbs: list[float]
    ratio: float | None
    source: str  # "folder" | "sota-loss" | "sota-bpb" | "submission"


@dataclass
class Analysis:
    folder: RecordFolder
    display: str
    submission: SubmissionFile | None
    claims: Claims | None
    profile: str
    profile_reason: str
    track: str
    track_source: str
    policy: Policy
    runs: list[Run] = field(default_factory=list)
    unselected: list[str] = field(default_factory=list)
    claim_seed_mismatch: list[tuple[int, str, int | None]] = field(default_factory=list)
    seeds_without_log: list[int] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    duplicate_resolved_by_json: set[str] = field(default_factory=set)
    comparison: Comparison | None = None
    comparison_error: str | None = None
    significance: dict | None = None
    skipped: list[dict] = field(default_factory=list)
    _loaded: list | None = None
    _commands: str | None = None

    @property
    def strict(self) -> bool:
        return self.profile == "strict"

    @property
    def record_track(self) -> bool:
        return self.track == "10min_16mb"

    @property
    def pending(self) -> bool:
        return bool(self.claims and self.claims.status == "pending")

    @property
    def ratio(self) -> float | None:
        """Mean bpb-per-nat of the runs (the tokens-per-byte factor of this tokenizer)."""
        ratios = [r.summary.ratio for r in self.runs if r.summary.ratio]
        return sum(ratios) / len(ratios) if ratios else None

    def log(self, name: str) -> LogSummary:
        return self.folder.logs[name]

    def skip(self, check: str, reason: str) -> None:
        self.skipped.append({"check": check, "reason": reason})

    @property
    def loaded(self) -> list[Loaded]:
        """Shipped files the training script loads at run time (verifier.artifact), transitively."""
        if self._loaded is None:
            folder = self.folder
            root = folder.main_script or folder.code_script
            if root is None or folder.facts_mode:
                self._loaded = []
            else:
                sources = {n: i.text for n, i in folder.scripts.items() if i.text}
                not_candidates = set(folder.logs) | {sub.name for sub in folder.submissions} | {MANIFEST}
                files = {n: size for n, size in folder.files.items()
                         if n not in not_candidates and not n.lower().startswith(("readme", "requirements"))}
                self._loaded = loaded_files(root, sources, files)
        return self._loaded

    def programs(self) -> list[tuple[str, object]]:
        """(name, ScriptInfo) of the code script and of every .py helper it loads, with their sources."""
        names = [self.folder.code_script] if self.folder.code_script else []
        names += [x.name for x in self.loaded if x.name.endswith(".py") and x.name not in names]
        infos = [(n, self.folder.scripts.get(n)) for n in names]
        return [(n, i) for n, i in infos if i is not None and i.text is not None]

    def other_logs(self) -> list[tuple[str, LogSummary]]:
        """Logs not counted for any seed (not a run's log nor its companion): --ci checks them too."""
        used = {r.log for r in self.runs} | {c for r in self.runs for c in r.companions}
        return [(n, self.folder.logs[n]) for n in sorted(self.folder.logs) if n not in used]

    def logs_for_runs(self) -> list[LogSummary]:
        """The seed logs counted for the submission, else every log of the folder."""
        names = [r.log for r in self.runs] or sorted(self.folder.logs)
        return [self.folder.logs[n] for n in names]

    def run_commands(self) -> str:
        """README and shell scripts of the folder (the commands the record says it ran), as one text."""
        if self._commands is None:
            parts = []
            for name in sorted(self.folder.files):
                low = name.lower()
                if "/" not in name and (low.startswith("readme") or low.endswith(".sh")):
                    try:
                        data = read_bytes(self.folder.root / name, 1 << 20)
                    except OSError:
                        data = None
                    if data:
                        parts.append(data.decode("utf-8", errors="replace"))
            self._commands = "\n".join(parts)
        return self._commands

    def path_state(self, gates: list, prog=None, prints: set | None = None) -> tuple[str, str]:
        """Did a code path guarded by these flags run? ("off" | "on" | "default-off" | "unknown", why).
        Evidence: the flags the logs print, lines that the path prints (`prints`: their prefixes), then
        the environment the record's README / run scripts set."""
        logs = self.logs_for_runs()
        for key, _ in gates:
            values = [lg.hparams[key] for lg in logs if key in lg.hparams]
            if values and all(_falsy(v) for v in values):
                return "off", f"{key}: {values[0]} in {'every seed log' if len(values) > 1 else 'the log'}"
        for key, _ in gates:
            values = [lg.hparams[key] for lg in logs if key in lg.hparams]
            if values and any(str(v).strip().lower() in ("true", "1") for v in values):
                return "on", f"{key}: {values[0]} in the logs"
        seen = sorted({p for lg in logs for p in lg.line_prefixes} & (prints or set()))
        if seen:
            return "on", f"the logs hold the lines it prints ({seen[0]}:...)"
        for key, default in gates:
            if default is None or not _falsy(default) or any(key in lg.hparams for lg in logs):
                continue
            env = prog.config_of(key)[1] if prog is not None else None
            sets = [v for v in re.findall(r"\b" + re.escape(env) + r"=([\w.]+)", self.run_commands())] if env else []
            on = next((v for v in sets if not _falsy(v)), None)
            if on is not None:
                return "on", f"the record's README or run script sets {env}={on}"
            return "default-off", f"{key} is off by default ({default!r}) and no log sets it"
        return "unknown", ""

    def companion_value(self, run: Run, attr: str):
        for name in [run.log] + run.companions:
            value = getattr(self.folder.logs[name], attr)
            if value is not None:
                return value, name
        return None, None


def _matches(summary: LogSummary, claim: SeedClaim) -> bool:
    f = summary.final
    if f is None:
        return False
    ok = False
    if claim.val_bpb is not None:
        if not close(claim.val_bpb, f.val_bpb, f.bpb_decimals):
            return False
        ok = True
    if claim.val_loss is not None and f.val_loss is not None:
        if not close(claim.val_loss, f.val_loss, f.loss_decimals):
            return False
        ok = True
    return ok


def _select_runs(a: Analysis) -> None:
    logs = a.folder.logs
    scored = sorted(name for name, s in logs.items() if s.final is not None)
    by_seed: dict[int | None, list[str]] = {}
    for name in scored:
        by_seed.setdefault(effective_seed(logs[name]), []).append(name)
    chosen: list[Run] = []
    used: set[str] = set()
    claims = a.claims

    def companions(seed, name):
        return [n for n in sorted(logs) if n != name and seed is not None and effective_seed(logs[n]) == seed]

    per_seed = {s: c for s, c in (claims.seed_results.items() if claims else []) if c.val_bpb is not None or c.val_loss is not None}
    if per_seed:
        for seed in sorted(per_seed):
            claim = per_seed[seed]
            same = [n for n in by_seed.get(seed, []) if n not in used]
            if claim.log in logs and claim.log not in used and claim.log not in same:
                same = [claim.log] + same  # the JSON names the log for this seed
            match = sorted((n for n in same if _matches(logs[n], claim)),
                           key=lambda n: (n != claim.log, logs[n].filename_seed != seed, n))
            other = [n for n in scored if n not in used and n not in same and _matches(logs[n], claim)]
            if match:
                pick, how = match[0], "json-seed"
                if len(same) > 1:
                    a.duplicate_resolved_by_json.add(str(seed))
            elif other:
                # the claimed figures are in a log that prints another seed
                pick, how = other[0], "json-value"
                a.claim_seed_mismatch.append((seed, pick, effective_seed(logs[pick])))
            elif same:
                pick, how = same[0], "json-seed"
            else:
                a.seeds_without_log.append(seed)
                continue
            used.add(pick)
            run_seed = seed if how == "json-seed" else effective_seed(logs[pick])
            chosen.append(Run(run_seed, pick, logs[pick], how, companions(effective_seed(logs[pick]), pick)))
    elif claims and claims.seeds:
        for seed in claims.seeds:
            same = [n for n in by_seed.get(seed, []) if n not in used]
            if not same:
                a.seeds_without_log.append(seed)
                continue
            pick = _pick_duplicate(a, same)
            used.add(pick)
            chosen.append(Run(seed, pick, logs[pick], "declared-seed", companions(seed, pick)))
    else:
        for seed, names in sorted(by_seed.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            if seed is None:
                for name in names:
                    used.add(name)
                    chosen.append(Run(None, name, logs[name], "log"))
                continue
            pick = _pick_duplicate(a, names)
            used.add(pick)
            chosen.append(Run(seed, pick, logs[pick], "log", companions(seed, pick)))
    a.runs = chosen
    a.unselected = [n for n in scored if n not in used]
    for seed, names in by_seed.items():
        if seed is not None and len(names) > 1:
            a.duplicates[str(seed)] = names


def _pick_duplicate(a: Analysis, names: list[str]) -> str:
    """Several logs for one seed: the one whose score the JSON reports, else the first by name
    (a log named after the seed first)."""
    if len(names) == 1:
        return names[0]
    logs = a.folder.logs
    names = sorted(names, key=lambda n: (logs[n].filename_seed != effective_seed(logs[n]), n))
    claims = a.claims
    if claims and claims.val_bpb is not None:
        for name in names:
            f = a.folder.logs[name].final
            if f and close(claims.val_bpb, f.val_bpb, f.bpb_decimals):
                a.duplicate_resolved_by_json.add(str(effective_seed(a.folder.logs[name])))
                return name
    return names[0]


def analyse(folder: RecordFolder, display: str, policy: Policy, profile: str | None = None) -> Analysis:
    sub = folder.submission
    claims = read_claims(sub) if sub else None
    if profile in ("strict", "legacy"):
        prof, reason = profile, "chosen with --profile"
    elif folder.manifest is not None or folder.manifest_error is not None:
        prof, reason = "strict", "golf-pack manifest (.golf-pack.json) present"
    elif folder.golf_pack:
        prof, reason = "strict", "train_gpt.py says '# Generated by golf-pack'"
    else:
        prof, reason = "legacy", "not golf-pack output"
    if folder.track_from_path:
        track, source = folder.track_from_path, "folder path"
    elif claims and claims.track:
        track, source = claims.track, "submission track field"
    else:
        track, source = "10min_16mb", "assumed (strictest)"
    a = Analysis(folder=folder, display=display, submission=sub, claims=claims, profile=prof, profile_reason=reason,
                 track=track, track_source=source, policy=policy)
    _select_runs(a)
    return a


def _falsy(value) -> bool:
    return str(value).strip().lower() in ("false", "0", "0.0", "", "none", "off", "no")


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)
