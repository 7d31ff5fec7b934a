"""Read the seed logs of a record folder into the figures golf-pack writes (submission.json,
README.md, the loss-curve plot).

Collecting policy (documented in README.md, "Results and CI"):

- The seed logs are the top-level files golf-verify reads as logs (`*.log`, `*.txt`, except
  requirements/README/notes...). Logs in subfolders are not collected (put reruns and side
  experiments there). A top-level file that is not a training log at all is ignored with a note.
- Always an error (nothing is written, exit 2), one line per problem naming the log:
  a log whose printed seed disagrees with its file name (or prints several seeds); a log with no
  seed at all; a seed that is not in the recipe's `seeds`; two complete logs for one seed; a log
  that ran different code than the train_gpt.py the recipe renders now (its `code_sha256`).
- An incomplete run (a log without a final score line or `golf_result_json` line: the run failed
  or was cut off) is reported once, as "incomplete run". Beside a complete log of the same seed
  (its rerun, `train_seed<N>_run2.log`) it is only left out and named in README. Otherwise its
  seed has no complete log: an error unless `--allow-partial`, which leaves it out as well and
  writes results over the seeds that have a complete log, with status "partial" and the missing
  seeds named in README; nothing missing is ever averaged in.
- Logs are only read: never modified, moved or deleted.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from packager.errors import UserError
from packager.hparams import all_hparams

# golf-verify's reading rules, so that golf-pack and golf-verify see the same logs.
from verifier.folder import LOG_SUFFIXES, NOT_LOGS
from verifier.logs import LogSummary, parse_log

RESULT_KEYS = ("seed", "val_loss", "val_bpb", "eval_path", "bytes_total", "bytes_code", "code_sha256",
               "train_time_ms", "eval_time_ms", "steps")
# Hyperparameters whose run-time value is expected to differ from the recipe's: the seed (one run
# per seed) and where the data lives on the machine that ran it.
MACHINE_LOCAL = {"seed", "data_path", "tokenizer_path"}
SAME_RATIO = 0.005  # bpb-per-nat ratios closer than 0.5 %: same tokenizer and validation set
ROUND = 8  # decimals of scores in submission.json and README (the logs' `_exact` precision)

_TRAIN_STEP = re.compile(r"^step:(\d{1,9})/\d{1,9} train_loss:([-+0-9.eE]+|nan|inf)\b")
_VAL_STEP = re.compile(r"^step:(\d{1,9})/\d{1,9} val_loss:([-+0-9.eE]+|nan|inf) val_bpb:([-+0-9.eE]+|nan|inf)\b")


class CollectError(UserError):
    """Collecting refused: one or more one-line problems, each naming its log."""

    def __init__(self, problems: list[str], folder: str):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) with the seed logs; nothing was written", folder)


@dataclass
class SeedRun:
    """One counted seed: its log and the figures of the log's golf_result_json line."""

    seed: int
    log: str
    summary: LogSummary
    result: dict
    overrides: dict[str, tuple[str, str]] = field(default_factory=dict)  # hp -> (recipe, logged)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def val_loss(self) -> float:
        return float(self.result["val_loss"])

    @property
    def val_bpb(self) -> float:
        return float(self.result["val_bpb"])


@dataclass
class Comparison:
    """The record to beat: per-seed figures (one value: a single published number)."""

    record: str
    source: str  # "--against" | "recipe"
    val_loss: list[float]
    val_bpb: list[float]

    def to_dict(self) -> dict:
        return {"record": self.record, "source": self.source, "val_loss": self.val_loss, "val_bpb": self.val_bpb}

    @classmethod
    def from_dict(cls, d: dict) -> "Comparison":
        return cls(str(d["record"]), str(d.get("source", "--against")), [float(x) for x in d.get("val_loss", [])],
                   [float(x) for x in d.get("val_bpb", [])])


@dataclass
class Collected:
    seeds: list[int]  # the recipe's seeds
    runs: list[SeedRun]  # counted seeds, in the recipe's order
    missing: list[int]  # recipe seeds without a complete log (only with allow_partial)
    excluded: list[tuple[str, str]]  # (log, why) incomplete runs left out
    notes: list[str]  # one-line notes for the terminal (ignored files, overrides)
    comparison: Comparison | None = None
    significance: dict | None = None

    @property
    def status(self) -> str:
        return "partial" if self.missing else "complete"


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def stdev(xs) -> float:
    """Sample standard deviation (n - 1), as golf-verify's strict check expects; 0.0 for one value."""
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def log_files(folder: Path) -> list[str]:
    """Top-level files golf-verify would read as logs, sorted by name."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        low = p.name.lower()
        if p.is_file() and not p.is_symlink() and low.endswith(LOG_SUFFIXES) and not low.startswith(NOT_LOGS) and not low.startswith("."):
            out.append(p.name)
    return out


def read_logs(folder: Path) -> dict[str, tuple[str, LogSummary]]:
    """{name: (text, summary)} for the top-level logs that look like training logs."""
    out = {}
    for name in log_files(folder):
        text = (folder / name).read_bytes().decode("utf-8", errors="replace")
        summary = parse_log(text, name=name)
        out[name] = (text, summary)
    return out


def has_seed_logs(folder: Path) -> bool:
    return any(s.recognised for _, s in read_logs(folder).values())


def _parse_value(kind, text: str):
    if kind is bool:
        if text not in ("True", "False"):
            raise ValueError(text)
        return text == "True"
    return kind(text)


def env_text(kind, text: str) -> str:
    """The environment-variable form of a logged value (`True` -> `1`)."""
    if kind is bool:
        return "1" if text == "True" else "0"
    return text


def overrides_of(summary: LogSummary, values: dict) -> dict[str, tuple[str, str]]:
    """Hyperparameters the run used with another value than the recipe's ({name: (recipe, logged)})."""
    out = {}
    for hp in all_hparams():
        if hp.name in MACHINE_LOCAL or hp.name not in summary.hparams:
            continue
        logged = summary.hparams[hp.name]
        try:
            same = _parse_value(hp.kind, logged) == hp.kind(values[hp.name])
        except (TypeError, ValueError):
            same = False
        if not same:
            out[hp.name] = (str(values[hp.name]), logged)
    return out


def curves(text: str) -> tuple[list[tuple[int, float]], list[tuple[int, float, float]]]:
    train, val = [], []
    for line in text.splitlines():
        m = _TRAIN_STEP.match(line)
        if m:
            train.append((int(m.group(1)), float(m.group(2))))
            continue
        m = _VAL_STEP.match(line)
        if m:
            val.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return train, val


def _complete(name: str, summary: LogSummary) -> str | None:
    """Why a log is not a complete run (None: complete)."""
    r = summary.golf_result
    if not isinstance(r, dict):
        return f"{name}: incomplete run: no golf_result_json line (the run failed or was cut off)"
    finals = [s for s in summary.scores if s.kind == "final" and s.line != summary.golf_result_line]
    if not finals:
        return f"{name}: incomplete run: no final score line (final_*_roundtrip ...) before golf_result_json"
    lacking = [k for k in RESULT_KEYS if k not in r]
    if lacking:
        return f"{name}: golf_result_json lacks {', '.join(lacking)} (not written by a golf-pack script?)"
    bad = [k for k in ("val_loss", "val_bpb") if not isinstance(r[k], (int, float)) or not math.isfinite(r[k])
           or r[k] <= 0]
    if bad:
        return f"{name}: golf_result_json has no finite positive {', '.join(bad)}"
    return None


def _why_changed(recipe, folder: Path, result: dict) -> str:
    """Why the script the recipe renders now differs from the one a log ran."""
    from packager import __version__

    if result.get("recipe_sha256") not in (None, recipe.sha256):
        return "the recipe changed since the run"
    if result.get("packager_version") not in (None, __version__):
        return f"the log ran golf-pack {result['packager_version']}'s script, this is golf-pack {__version__}"
    return "golf-pack's runtime modules changed since the run"


def collect(recipe, folder: Path, shipped_script: bytes, *, allow_partial: bool = False,
            comparison: Comparison | None = None, policy=None) -> Collected:
    """The counted seeds of `folder`, or CollectError listing every problem."""
    folder = Path(folder)
    seeds = recipe.seeds
    expected_sha = hashlib.sha256(shipped_script).hexdigest()
    errors: list[str] = []
    notes: list[str] = []
    excluded: list[tuple[str, str]] = []
    complete: dict[int, list[str]] = {}
    incomplete: dict[int, list[tuple[str, str]]] = {}
    parsed = read_logs(folder)
    for name, (text, s) in parsed.items():
        if not s.recognised:
            notes.append(f"{name}: not a training log; ignored")
            continue
        r = s.golf_result if isinstance(s.golf_result, dict) else {}
        claimed = {"its name": s.filename_seed, "the log": s.seed,
                   "golf_result_json": r.get("seed") if isinstance(r.get("seed"), int) else None}
        known = {k: v for k, v in claimed.items() if v is not None}
        if len(set(s.seeds_printed)) > 1:
            errors.append(f"{name}: the log prints several seeds ({', '.join(map(str, s.seeds_printed[:6]))})")
            continue
        if len(set(known.values())) > 1:
            fn, golf = s.filename_seed, claimed["golf_result_json"]
            printed = s.seed if s.seed is not None and s.seed != fn else golf
            what = (f"the log prints seed {printed} but its name says seed {fn}" if fn is not None and printed != fn
                    else f"the log prints seed {s.seed} but golf_result_json says seed {golf}")
            errors.append(f"{name}: wrong seed: {what}; rename the log after the seed it ran")
            continue
        if not known:
            errors.append(f"{name}: no seed in its name or its lines; cannot tell which seed it ran")
            continue
        seed = next(iter(known.values()))
        if seed not in seeds:
            errors.append(f"{name}: seed {seed} is not one of the recipe's seeds {seeds}; move the log into a "
                          f"subfolder (or list the seed in the recipe and re-run every seed)")
            continue
        why = _complete(name, s)
        if why is not None:
            incomplete.setdefault(seed, []).append((name, why))
            continue
        if r["code_sha256"] != expected_sha:
            errors.append(f"{name}: ran train_gpt.py with sha256 {r['code_sha256'][:12]}..., but the recipe now "
                          f"renders {expected_sha[:12]}... ({_why_changed(recipe, folder, r)}); restore what the "
                          f"runs used or re-run")
            continue
        complete.setdefault(seed, []).append(name)
    for seed, names in sorted(complete.items()):
        if len(names) > 1:
            errors.append(f"{names[0]}: seed {seed} has {len(names)} complete logs ({', '.join(names)}); keep the "
                          f"one to report at the top level and move the others into a subfolder")
    missing = [seed for seed in seeds if seed not in complete]
    for seed, logs in sorted(incomplete.items()):
        if seed in complete or allow_partial:
            excluded += [(name, why.split(": ", 1)[1]) for name, why in logs]
            notes += [f"{why}; not counted" for _, why in logs]
        else:
            errors += [f"{why}; run seed {seed} again (`SEED={seed} torchrun --standalone --nproc_per_node=8 "
                       f"train_gpt.py` writes a new log beside it) or pass --allow-partial" for _, why in logs]
    if missing and not allow_partial:
        for seed in missing:
            if seed in incomplete:
                continue  # reported once, as its incomplete run
            errors.append(f"train_seed{seed}.log: seed {seed} has no complete log; run "
                          f"`SEED={seed} torchrun --standalone --nproc_per_node=8 train_gpt.py`, or pass "
                          f"--allow-partial to write partial results")
    if not errors and len(missing) == len(seeds):
        errors.append(f"{folder.name}: no seed has a complete log; nothing to collect")
    if errors:
        raise CollectError(errors, str(folder))

    runs = []
    for seed in seeds:
        if seed not in complete:
            continue
        name = complete[seed][0]
        text, s = parsed[name]
        train, val = curves(text)
        run = SeedRun(seed, name, s, dict(s.golf_result), overrides_of(s, recipe.values), train, val)
        if run.overrides:
            shown = ", ".join(f"{k}={v[1]}" for k, v in sorted(run.overrides.items()))
            notes.append(f"{name}: ran with hyperparameters other than the recipe's: {shown}")
        runs.append(run)
    for seed in missing:
        notes.append(f"seed {seed}: no complete log; results are partial")
    out = Collected(seeds=seeds, runs=runs, missing=missing, excluded=excluded, notes=notes)
    if comparison is not None:
        from verifier.stats import load_policy

        out.comparison = comparison
        out.significance = significance(runs, comparison, policy if policy is not None else load_policy(None))
    return out


# ------------------------------------------------------------------------------ comparison

def repo_root(folder: Path) -> Path:
    """The folder that holds records/ (records/<track>/<date>_<slug> is three levels down)."""
    return Path(folder).parent.parent.parent


def comparison_from_folder(path: Path, shown: str, source: str, policy) -> Comparison:
    from verifier import VerifyError, load_comparison

    if not path.is_dir():
        raise UserError("comparison record: no such folder", shown)
    try:
        comp = load_comparison(path, policy=policy)
    except VerifyError as exc:
        raise UserError(str(exc), shown) from None
    return Comparison(shown, source, [float(x) for x in comp.losses], [float(x) for x in comp.bpbs])


def comparison_from_recipe(recipe, folder: Path, policy) -> Comparison | None:
    spec = recipe.identity.get("compare_to")
    if spec is None:
        return None
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_absolute():
            path = repo_root(folder) / path
        try:
            return comparison_from_folder(path, spec, "recipe", policy)
        except UserError as exc:
            raise UserError(f"identity.compare_to: {exc.message}", str(recipe.path),
                            recipe.line_of(("identity", "compare_to"))) from None
    return Comparison(str(spec.get("record", "identity.compare_to")), "recipe",
                      [float(x) for x in spec.get("val_loss", [])], [float(x) for x in spec.get("val_bpb", [])])


def shown_path(path: Path, folder: Path) -> str:
    """A comparison path as it is written into README: relative to the repository root when it is
    inside it, else the folder name (never a path of the machine that ran golf-pack)."""
    try:
        return path.resolve().relative_to(repo_root(folder).resolve()).as_posix()
    except ValueError:
        return path.resolve().name


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _plan(plan_seeds, *args, **kw) -> int | None:
    try:
        return plan_seeds(*args, **kw)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None


def significance(runs: list[SeedRun], comp: Comparison, policy) -> dict:
    """The policy's one-sided test of this record's seeds against the comparison (verifier.stats)."""
    from verifier.stats import nats_to_bpb, one_sample, plan_seeds, welch_one_sided

    losses, bpbs = [r.val_loss for r in runs], [r.val_bpb for r in runs]
    ratio = mean(b / l for l, b in zip(losses, bpbs))
    ratio_ref = (mean(b / l for l, b in zip(comp.val_loss, comp.val_bpb))
                 if comp.val_loss and len(comp.val_loss) == len(comp.val_bpb) else None)
    same = ratio_ref is None or abs(ratio / ratio_ref - 1.0) <= SAME_RATIO
    base = {"policy": policy.id, "alpha": policy.alpha, "margin_nats": policy.margin_nats}
    if same and comp.val_loss:
        unit, new, ref, margin = "nats", losses, comp.val_loss, policy.margin_nats
    elif comp.val_bpb:
        unit, new, ref, margin = "bpb", bpbs, comp.val_bpb, nats_to_bpb(policy.margin_nats, ratio)
    else:
        return {**base, "note": "the comparison has no figures in units comparable with these logs"}
    delta = mean(ref) - mean(new)
    delta_nats, delta_bpb = (delta, delta * ratio) if unit == "nats" else (delta / ratio, delta)
    out = {**base, "unit": unit, "n": len(new), "n_ref": len(ref),
           "delta_nats": round(delta_nats, ROUND), "delta_bpb": round(delta_bpb, ROUND)}
    if len(new) < 2:
        need = _plan(plan_seeds, new, ref if len(ref) > 1 else None, reference=ref[0] if len(ref) == 1 else None,
                          margin=margin, alpha=policy.alpha)
        return {**out, "method": "none", "significant": False, "seeds_needed": need,
                "note": "one seed cannot show significance"}
    if len(ref) >= 2:
        res = welch_one_sided(new, ref, margin)
        need = _plan(plan_seeds, new, ref, margin=margin, alpha=policy.alpha)
        method = "welch-one-sided"
    else:
        res = one_sample(new, ref[0], margin)
        need = _plan(plan_seeds, new, reference=ref[0], margin=margin, alpha=policy.alpha)
        method = "one-sample-one-sided"
    out.update(method=method, p_value=float(f"{res.p:.6g}"), significant=res.p < policy.alpha, seeds_needed=need)
    t, df = _finite(res.t), _finite(res.df)
    if t is not None:
        out["t"] = round(t, 4)
    if df is not None:
        out["df"] = round(df, 4)
    return out
