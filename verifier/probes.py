"""Legality probes (`golf-verify --probe`): run a record's script on CPU with a tiny dataset and
check test-time training against the README rule and thread #1017 (C1 causal, C2 normalized,
C3 score before update, C4 single pass), and that validation data never reaches training.

Public API:
    run_probes(folder, *, nproc=1, data_path=None, tokenizer_path=None, timeout=300, workdir=None,
               position=None) -> ProbeResult
    check_ledgers(ledgers, num_tokens=None) -> list[Problem]        (C3, C4 on probe ledgers)
    compare_nll(a, b, position) -> list[Problem]                     (C1, C3: NLL up to P bit-identical)
    check_normalization(ledgers, tolerance=1e-4) -> list[Problem]    (C2)
    SMOKE_OVERRIDES                                                  (environment of every probe run)

How a folder is probed. The folder is copied (never modified; only its copies run, each in a
subprocess with a time limit, no GPU, hub libraries offline and proxies unset), and the script is
run three times with identical training data, seed and overrides, differing only in validation
data:
    A  the validation split as given;
    B  identical to A up to position P, every non-special token after P changed (same length);
    C  short, and every non-special token different from A.
A rendered script writes, when GOLF_PROBE_DIR is set, a ledger per rank: each scoring (token
positions and NLLs), each TTT optimizer step (which tokens its loss read) and full log-prob
vectors at sampled positions (packager/runtime/evaluate.py `Ledger`). Then
    probe.causality      per-token NLL of positions 1..P of every ledgered eval path: A == B, bitwise;
    probe.ledger         (A) every token a step reads was scored earlier in the same eval path, by
                         any rank; every token is scored exactly once per eval path;
    probe.normalization  (A) every sampled distribution sums to 1 within 1e-4;
    probe.isolation      the exported artifact (final_model.*) is byte-identical in A, B and C.
Nothing here imports torch: ledgers are JSON, shards are read and written with the stdlib.
"""

from __future__ import annotations

import array
import glob
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

__all__ = [
    "SMOKE_OVERRIDES", "PROBE_IDS", "NORMALIZATION_TOLERANCE", "Problem", "ProbeOutcome", "VariantRun",
    "ProbeResult", "run_probes", "check_ledgers", "compare_nll", "check_normalization", "scored_nll",
    "choose_position", "change_after", "change_all", "read_shard", "write_shard", "load_ledgers",
]

PROBE_IDS = ("probe.causality", "probe.ledger", "probe.normalization", "probe.isolation")
NORMALIZATION_TOLERANCE = 1e-4
POSITION_FRACTION = 0.6
SHORT_VAL_TOKENS = 4096  # validation tokens of variant C (plus one), about one TTT chunk
SPECIAL_TOKENS = 4  # pad 0, bos 1, eos 2, unk 3 are never changed: documents keep their boundaries

# The environment of every probe run: the CPU smoke settings of tests/test_e2e.py (SMOKE_ENV) and
# tests/test_recipes.py (SMOKE), so a run takes seconds. Training is fixed-step (no wallclock cap)
# and validates only at the end, so two runs with the same training data train identically.
# TTT_CHUNK_LEN stays within the 128-token evaluation window (a longer LoRA chunk scores only its
# last window's tokens in this runtime).
SMOKE_OVERRIDES = {
    "ITERATIONS": "6", "WARMUP_STEPS": "1", "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "128", "TRAIN_BATCH_TOKENS": "2048", "VAL_BATCH_SIZE": "16384",
    "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "3", "WARMDOWN_ITERS": "10", "MAX_WALLCLOCK_SECONDS": "0",
    "MATRIX_LR": "0.02",
    "EVAL_SEQ_LEN": "128", "EVAL_STRIDE": "64", "TTT_CHUNK_TOKENS": "4096", "TTT_EPOCHS": "1",
    "TTT_PHASE1_EPOCHS": "1", "TTT_PHASE2_EPOCHS": "1", "TTT_BATCH_DOCS": "16", "TTT_PHASE2_LAST_K": "1",
    "TTT_CHUNK_LEN": "64", "XSA_LAST_N": "1", "VE_LAYERS": "1", "BIGRAM_VOCAB_SIZE": "512", "BIGRAM_DIM": "32",
    "VE_DIM": "32", "ROPE_DIMS": "8",
    "GOLF_PROBE_SAMPLES": "8",
}

# Only these variables of the caller's environment reach a probe run: a stray ITERATIONS or
# NUM_LAYERS in the caller's shell must not change what is probed, and proxies must not be set.
_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TMP", "TEMP", "PYTHONPATH",
             "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "SYSTEMROOT", "TZ")
_ENV_FORCE = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    "TORCH_COMPILE": "0",
}
_COPY_IGNORE = ("*.log", "final_model*", "__pycache__", ".git", "verify")

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256


# ---------------------------------------------------------------- results

@dataclass
class Problem:
    """One violation found in probe ledgers; `position` indexes val_tokens (the predicted token)."""

    kind: str
    message: str
    run: str | None = None
    position: int | None = None
    step: int | None = None
    rank: int | None = None
    count: int | None = None

    def evidence(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k != "message"}


@dataclass
class ProbeOutcome:
    """status: pass, fail (a violation), error (the probe could not decide) or skipped."""

    id: str
    status: str
    message: str
    evidence: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


@dataclass
class VariantRun:
    """One run of the script (variant A, B, C or a repeat of A)."""

    name: str
    returncode: int | None
    seconds: float
    timed_out: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    ledgers: list[dict] = field(default_factory=list)
    ledger_errors: list[str] = field(default_factory=list)
    result: dict | None = None  # the golf_result_json line
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


@dataclass
class ProbeResult:
    folder: str
    nproc: int
    position: int | None
    num_tokens: int | None
    seconds: float
    probes: dict[str, ProbeOutcome]
    runs: dict[str, VariantRun] = field(default_factory=dict)
    data: str = ""  # "tiny" (built for the probe) or "given"

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.probes.values())

    @property
    def failed(self) -> list[str]:
        return [i for i, p in self.probes.items() if p.status == "fail"]

    def to_dict(self) -> dict:
        return {
            "folder": self.folder, "nproc": self.nproc, "position": self.position, "num_tokens": self.num_tokens,
            "seconds": round(self.seconds, 3), "data": self.data,
            "probes": {i: {"status": p.status, "message": p.message, "evidence": p.evidence,
                           "problems": [dict(q.evidence(), message=q.message) for q in p.problems]}
                       for i, p in self.probes.items()},
            "runs": {n: {"returncode": r.returncode, "seconds": round(r.seconds, 3), "timed_out": r.timed_out,
                         "artifacts": r.artifacts, "ranks": len(r.ledgers)} for n, r in self.runs.items()},
        }

    def emit(self, probe_id: str, emit, analysis=None) -> None:
        """Report one probe through a registry `Emit` (verifier.checks): a failure is an error finding per
        problem (at most 10), a pass one info finding, a probe that could not run an error (strict
        profile) or warning (legacy), a skipped probe a `skipped` entry of the analysis."""
        outcome = self.probes.get(probe_id)
        if outcome is None:
            return
        if outcome.status == "skipped":
            if analysis is not None:
                analysis.skip(probe_id, outcome.message)
            return
        if outcome.status == "pass":
            emit(outcome.message, severity="info", **outcome.evidence)
        elif outcome.status == "error":
            emit(outcome.message, severity="error" if emit.profile == "strict" else "warning", **outcome.evidence)
        else:
            for problem in outcome.problems[:10]:
                emit(problem.message, **dict(outcome.evidence, **problem.evidence()))
            if len(outcome.problems) > 10:
                emit(f"{len(outcome.problems) - 10} more problem(s) of this probe not shown", **outcome.evidence)

    def findings(self, profile: str = "strict") -> tuple[list, list[dict]]:
        """(findings, skipped entries) of the four probes, as the registry's checks report them."""
        from verifier.checks import REGISTRY, Emit

        class _Skips:
            def __init__(self):
                self.skipped: list[dict] = []

            def skip(self, check: str, reason: str) -> None:
                self.skipped.append({"check": check, "reason": reason})

        skips, out = _Skips(), []
        for probe_id in PROBE_IDS:
            emit = Emit(REGISTRY[probe_id], profile)
            self.emit(probe_id, emit, skips)
            out.extend(emit.findings)
        return out, skips.skipped

    def add_to(self, report) -> None:
        """Append the probes' findings and skipped entries to a verifier Report (its verdict and exit
        code then include them)."""
        findings, skipped = self.findings(report.profile)
        report.findings.extend(findings)
        report.skipped.extend(skipped)


# ---------------------------------------------------------------- ledgers (pure functions)

def _as_list(ledgers) -> list[dict]:
    if isinstance(ledgers, dict):
        return [ledgers]
    return list(ledgers)


def _runs(ledgers: Iterable[dict]) -> dict[str, dict[int, dict]]:
    """{run name: {rank: run}}; a name evaluated twice by one rank becomes 'name#2'."""
    out: dict[str, dict[int, dict]] = {}
    for i, led in enumerate(_as_list(ledgers)):
        rank = led.get("rank", i) if isinstance(led, dict) else i
        seen: dict[str, int] = {}
        for run in (led.get("runs") or []) if isinstance(led, dict) else []:
            name = str(run.get("name"))
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}#{seen[name]}"
            out.setdefault(key, {})[rank] = run
    return out


def _span(value) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in value):
        return int(value[0]), int(value[1])
    return None


def scored_nll(ledgers) -> dict[str, dict[int, float]]:
    """{run name: {position: NLL}} over all ranks (the first score of a position wins)."""
    out: dict[str, dict[int, float]] = {}
    for name, by_rank in _runs(ledgers).items():
        nll = out.setdefault(name, {})
        for rank in sorted(by_rank):
            for event in by_rank[rank].get("events") or []:
                span = _span(event.get("score")) if isinstance(event, dict) else None
                if span is None:
                    continue
                for t, v in zip(range(*span), event.get("nll") or []):
                    nll.setdefault(t, float(v))
    return out


def _first_ranges(positions: list[int]) -> str:
    if not positions:
        return ""
    out, start, prev = [], positions[0], positions[0]
    for p in positions[1:] + [None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if len(out) == 3 or p is None:
            break
        start = prev = p
    return ", ".join(out)


def check_ledgers(ledgers, num_tokens: int | None = None) -> list[Problem]:
    """C3 + C4 on the ledgers of all ranks: per eval path (run name), every token a TTT step reads
    inside its scope was scored before the step (token 0, context only, is exempt), and every token
    1..num_tokens-1 is scored exactly once. "Before" across ranks: a rank's scores listed before its
    own step k happened before every rank's step k (steps all-reduce gradients, so they are numbered
    alike on all ranks); per-document steps (LoRA) name their scope and read their own rank's scores.
    num_tokens (len(val_tokens)) defaults to the largest scored end, so a missing tail goes unseen."""
    problems: list[Problem] = []
    runs = _runs(ledgers)
    for led in _as_list(ledgers):
        if not isinstance(led, dict) or not isinstance(led.get("runs", []), list):
            problems.append(Problem("malformed", "a ledger is not an object with a list of runs"))
    if num_tokens is None:
        ends = [s[1] for by_rank in runs.values() for run in by_rank.values() for e in run.get("events") or []
                if isinstance(e, dict) and (s := _span(e.get("score")))]
        num_tokens = max(ends, default=1)
    for name in sorted(runs):
        problems += _check_run(name, runs[name], num_tokens)
    return problems


def _check_run(name: str, by_rank: dict[int, dict], num_tokens: int) -> list[Problem]:
    problems: list[Problem] = []
    scorers: dict[int, list[tuple[int, int]]] = {}  # position -> [(rank, event index)]
    step_at: dict[int, dict[int, int]] = {}  # rank -> {step number: event index}
    outside: list[int] = []
    for rank, run in sorted(by_rank.items()):
        step_at[rank] = {}
        for e, event in enumerate(run.get("events") or []):
            if not isinstance(event, dict):
                problems.append(Problem("malformed", f"{name}: rank {rank} event {e} is not an object", run=name,
                                        rank=rank))
                continue
            if "score" in event:
                span = _span(event["score"])
                nll = event.get("nll")
                if span is None or not isinstance(nll, list) or len(nll) != span[1] - span[0]:
                    problems.append(Problem("malformed", f"{name}: rank {rank} score event {e} has no [first, end] "
                                            "span with one NLL per token", run=name, rank=rank))
                    continue
                for t in range(*span):
                    if 1 <= t < num_tokens:
                        scorers.setdefault(t, []).append((rank, e))
                    else:
                        outside.append(t)
            elif "step" in event:
                step_at[rank][event["step"]] = e
    if outside:
        problems.append(Problem("out-of-range", f"{name}: positions outside 1..{num_tokens - 1} were scored "
                                f"({_first_ranges(sorted(set(outside)))}); token 0 is context only",
                                run=name, position=min(outside), count=len(set(outside))))
    twice = sorted(t for t, s in scorers.items() if len(s) > 1)
    if twice:
        t = twice[0]
        problems.append(Problem("scored-twice", f"{name}: {len(twice)} token(s) scored more than once, first at "
                                f"position {t} ({len(scorers[t])} times, ranks "
                                f"{sorted({r for r, _ in scorers[t]})}); C4: each token is scored once",
                                run=name, position=t, count=len(twice)))
    missing = [t for t in range(1, num_tokens) if t not in scorers]
    if missing:
        problems.append(Problem("not-scored", f"{name}: {len(missing)} of {num_tokens - 1} token(s) never scored "
                                f"({_first_ranges(missing)}); every validation token must be scored once",
                                run=name, position=missing[0], count=len(missing)))
    bad_steps: list[Problem] = []
    for rank, run in sorted(by_rank.items()):
        for e, event in enumerate(run.get("events") or []):
            if not isinstance(event, dict) or "step" not in event:
                continue
            k = event["step"]
            spans = event.get("tokens") or []
            scopes = event.get("scope") or [None] * len(spans)
            if not isinstance(spans, list) or not isinstance(scopes, list) or len(scopes) != len(spans):
                problems.append(Problem("malformed", f"{name}: step {k} (rank {rank}) has tokens and scope of "
                                        "different lengths", run=name, step=k, rank=rank))
                continue
            unscored: list[int] = []
            for raw, scope in zip(spans, scopes):
                span = _span(raw)
                if span is None:
                    problems.append(Problem("malformed", f"{name}: step {k} (rank {rank}) reads a span that is "
                                            "not [lo, hi)", run=name, step=k, rank=rank))
                    continue
                lo, hi = span
                if scope is not None:
                    sc = _span(scope)
                    if sc is None:
                        problems.append(Problem("malformed", f"{name}: step {k} (rank {rank}) has a scope that "
                                                "is not [a, b)", run=name, step=k, rank=rank))
                        continue
                    lo, hi = max(lo, sc[0]), min(hi, sc[1])
                for t in range(max(lo, 1), hi):
                    if not any(_before(r2, e2, rank, e, k, step_at) for r2, e2 in scorers.get(t, ())):
                        unscored.append(t)
            if unscored:
                unscored = sorted(set(unscored))
                bad_steps.append(Problem(
                    "unscored-read", f"{name}: TTT step {k} (rank {rank}) trains on {len(unscored)} token(s) not "
                    f"scored before it ({_first_ranges(unscored)}); C3: score every token before any update "
                    "that sees it", run=name, position=unscored[0], step=k, rank=rank, count=len(unscored)))
    if bad_steps:
        first = bad_steps[0]
        if len(bad_steps) > 1:
            first.message += f"; {len(bad_steps)} step(s) read unscored tokens in all"
        problems.append(first)
    return problems


def _before(score_rank: int, score_event: int, rank: int, event: int, step: int, step_at: dict) -> bool:
    if score_rank == rank:
        return score_event < event
    other = step_at.get(score_rank, {}).get(step)
    return other is not None and score_event < other


def compare_nll(a, b, position: int) -> list[Problem]:
    """C1 + C3 across two evaluations whose validation tokens agree on 0..position and differ after:
    the NLL of every position 1..position of every eval path must be bit-identical. One problem per
    eval path, naming the first position that differs (or is scored in only one of them)."""
    na, nb = scored_nll(a), scored_nll(b)
    problems: list[Problem] = []
    for name in sorted(set(na) | set(nb)):
        if name not in na or name not in nb:
            problems.append(Problem("run-missing", f"eval path {name} ran in only one of the two evaluations",
                                    run=name))
            continue
        xa, xb = na[name], nb[name]
        differ, missing, worst = [], [], 0.0
        for t in range(1, position + 1):
            va, vb = xa.get(t), xb.get(t)
            if va is None or vb is None:
                missing.append(t)
            elif struct.pack("<d", va) != struct.pack("<d", vb):
                differ.append(t)
                if math.isfinite(va) and math.isfinite(vb):
                    worst = max(worst, abs(va - vb))
        if differ:
            t = differ[0]
            problems.append(Problem(
                "nll-differs", f"{name}: the NLL at position {t} changed ({xa[t]!r} -> {xb[t]!r}) when only tokens "
                f"after position {position} changed; {len(differ)} of {position} positions differ (max "
                f"|diff| {worst:.3g}); C1: a score may depend only on earlier tokens", run=name, position=t,
                count=len(differ)))
        if missing:
            problems.append(Problem("not-scored", f"{name}: {len(missing)} position(s) up to {position} are scored "
                                    f"in only one or neither evaluation ({_first_ranges(missing)})", run=name,
                                    position=missing[0], count=len(missing)))
    return problems


def check_normalization(ledgers, tolerance: float = NORMALIZATION_TOLERANCE) -> list[Problem]:
    """C2: every recorded log-prob vector is a distribution (sum of exp within `tolerance` of 1, all
    finite, one length), and every sampled position has one in every eval path that scored it."""
    problems: list[Problem] = []
    samples = sorted({int(t) for led in _as_list(ledgers) if isinstance(led, dict) for t in led.get("samples") or []})
    nll = scored_nll(ledgers)
    for name, by_rank in sorted(_runs(ledgers).items()):
        seen: dict[int, int] = {}
        for rank, run in sorted(by_rank.items()):
            for key, vec in sorted((run.get("logprobs") or {}).items(), key=lambda kv: int(kv[0])):
                t = int(key)
                seen[t] = len(vec) if isinstance(vec, list) else -1
                if not isinstance(vec, list) or not vec:
                    problems.append(Problem("malformed", f"{name}: the log-probs at position {t} are not a vector",
                                            run=name, position=t, rank=rank))
                    continue
                try:
                    total = math.fsum(math.exp(float(x)) for x in vec)
                except (OverflowError, TypeError, ValueError):
                    total = math.inf
                if not math.isfinite(total) or abs(total - 1.0) > tolerance:
                    problems.append(Problem("not-normalized", f"{name}: the distribution at position {t} sums to "
                                            f"{total:.6g}, not 1 (tolerance {tolerance:g}); C2: a full, normalized "
                                            "distribution over the vocabulary", run=name, position=t, rank=rank))
        lengths = {n for n in seen.values() if n > 0}
        if len(lengths) > 1:
            problems.append(Problem("malformed", f"{name}: distributions of different lengths {sorted(lengths)}",
                                    run=name))
        absent = [t for t in samples if t in nll.get(name, {}) and t not in seen]
        if absent:
            problems.append(Problem("missing-distribution", f"{name}: no distribution recorded at sampled position(s) "
                                    f"{absent[:5]}", run=name, position=absent[0], count=len(absent)))
    return problems


# ---------------------------------------------------------------- shards and validation variants

def read_shard(path) -> list[int]:
    """Tokens of one FineWeb shard (256 little-endian int32 header: magic, version, count; uint16 tokens)."""
    raw = Path(path).read_bytes()
    if len(raw) < 4 * SHARD_HEADER_INTS:
        raise ValueError(f"{path}: shorter than a shard header")
    magic, version, count = struct.unpack_from("<3i", raw)
    if magic != SHARD_MAGIC or version != SHARD_VERSION:
        raise ValueError(f"{path}: not a shard (magic {magic}, version {version})")
    body = raw[4 * SHARD_HEADER_INTS:]
    if len(body) != 2 * count:
        raise ValueError(f"{path}: header says {count} tokens, the file holds {len(body) // 2}")
    tokens = array.array("H")
    tokens.frombytes(body)
    if sys.byteorder != "little":
        tokens.byteswap()
    return tokens.tolist()


def write_shard(path, tokens: list[int]) -> None:
    header = [0] * SHARD_HEADER_INTS
    header[:3] = [SHARD_MAGIC, SHARD_VERSION, len(tokens)]
    body = array.array("H", tokens)
    if sys.byteorder != "little":
        body.byteswap()
    Path(path).write_bytes(struct.pack(f"<{SHARD_HEADER_INTS}i", *header) + body.tobytes())


def _rotate(t: int, vocab: int) -> int:
    span = vocab - SPECIAL_TOKENS
    shift = 17 % span or 1
    return t if t < SPECIAL_TOKENS else (t - SPECIAL_TOKENS + shift) % span + SPECIAL_TOKENS


def change_after(tokens: list[int], position: int) -> list[int]:
    """Tokens 0..position unchanged, every later token >= 4 replaced by another id below max+1
    (special ids, BOS among them, stay: documents keep their boundaries)."""
    vocab = max(tokens) + 1
    if vocab - SPECIAL_TOKENS < 2:
        raise ValueError("the validation tokens use too few ids to be changed")
    return tokens[: position + 1] + [_rotate(t, vocab) for t in tokens[position + 1 :]]


def change_all(tokens: list[int], length: int) -> list[int]:
    """The first `length` tokens with every token >= 4 replaced (variant C)."""
    vocab = max(tokens) + 1
    return [_rotate(t, vocab) for t in tokens[:length]]


def choose_position(num_tokens: int, chunk: int = int(SMOKE_OVERRIDES["TTT_CHUNK_TOKENS"]),
                    fraction: float = POSITION_FRACTION) -> int:
    """P at `fraction` of the targets, moved off TTT chunk boundaries: a step on a whole chunk before
    scoring it only moves scores before P when P falls inside that chunk."""
    p = int((num_tokens - 1) * fraction)
    margin = min(256, chunk // 4)
    if chunk > 2 * margin and (p % chunk < margin or p % chunk > chunk - margin):
        p += chunk // 2 if p % chunk < margin else -(chunk // 2)
    return max(1, min(p, num_tokens - 2))


def _val_files(data_dir: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(str(data_dir / "fineweb_val_*.bin")))


def _variant_data(src: Path, dst: Path, val_sizes: list[int], tokens: list[int]) -> Path:
    """dst: links to src's train shards and new validation shards holding `tokens`, split like src's
    (or in one shard when the length differs)."""
    dst.mkdir(parents=True)
    for train in sorted(src.glob("fineweb_train_*.bin")):
        try:
            (dst / train.name).symlink_to(train.resolve())
        except OSError:
            shutil.copy2(train, dst / train.name)
    if sum(val_sizes) != len(tokens):
        val_sizes = [len(tokens)]
    start = 0
    for i, size in enumerate(val_sizes):
        write_shard(dst / f"fineweb_val_{i:06d}.bin", tokens[start : start + size])
        start += size
    return dst


# ---------------------------------------------------------------- running the script

def load_ledgers(probe_dir: Path) -> tuple[list[dict], list[str]]:
    """(ledgers sorted by rank, read errors) from GOLF_PROBE_DIR/ledger_rank*.json."""
    ledgers, errors = [], []
    for path in sorted(Path(probe_dir).glob("ledger_rank*.json"),
                       key=lambda p: int(re.sub(r"\D", "", p.stem) or 0)):
        try:
            ledgers.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            errors.append(f"{path.name}: {exc}")
    return ledgers, errors


def _env(data: Path, tokenizer: Path, probe_dir: Path, log_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    env.update(_ENV_FORCE)
    env.update(SMOKE_OVERRIDES)
    env.update(DATA_PATH=str(data), TOKENIZER_PATH=str(tokenizer), GOLF_PROBE_DIR=str(probe_dir),
               LOG_DIR=str(log_dir))
    return env


def _artifacts(*dirs: Path) -> dict[str, str]:
    out = {}
    for d in dirs:
        for path in sorted(d.glob("final_model*")):
            if path.is_file() and path.name not in out:
                out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _run_variant(name: str, folder: Path, root: Path, script: str, nproc: int, data: Path, tokenizer: Path,
                 timeout: float) -> VariantRun:
    try:
        return _run_variant_in(name, folder, root, script, nproc, data, tokenizer, timeout)
    except OSError as exc:  # the copy or the launch failed: a probe error, not a crash of golf-verify
        return VariantRun(name, None, 0.0, tail=f"{type(exc).__name__}: {exc}")


def _run_variant_in(name: str, folder: Path, root: Path, script: str, nproc: int, data: Path, tokenizer: Path,
                    timeout: float) -> VariantRun:
    work = root / name
    copy = work / "record"
    shutil.copytree(folder, copy, symlinks=True, ignore=shutil.ignore_patterns(*_COPY_IGNORE))
    probe_dir, log_dir = work / "probe", work / "logs"
    log_dir.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script]
    t0 = time.perf_counter()
    timed_out = False
    with open(work / "stdout.txt", "wb") as out, open(work / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=copy, env=_env(data, tokenizer, probe_dir, log_dir), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            rc = proc.wait()
    seconds = time.perf_counter() - t0
    stdout = (work / "stdout.txt").read_text(encoding="utf-8", errors="replace")
    stderr = (work / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    result = None
    for m in re.finditer(r"^golf_result_json:(.*)$", stdout, re.M):
        try:
            result = json.loads(m.group(1))
        except ValueError:
            pass
    ledgers, errors = load_ledgers(probe_dir)
    return VariantRun(name, rc, seconds, timed_out, _artifacts(log_dir, copy), ledgers, errors, result,
                      _failure_line(stderr, stdout))


_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|AssertionError)\b.*")
_LAUNCHER = ("ChildFailedError", "torch.distributed.elastic")


def _failure_line(stderr: str, stdout: str) -> str:
    """The script's own exception line (not torchrun's summary), else the last lines of output."""
    lines = [ln.rstrip() for ln in stderr.splitlines()]
    errors = [ln for ln in lines if _ERROR_LINE.match(ln) and not any(k in ln for k in _LAUNCHER)]
    if errors:
        return errors[0]
    return "\n".join((stderr.strip().splitlines() or stdout.strip().splitlines())[-6:])


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (Linux /proc; empty elsewhere). torchrun starts each rank in a session
    of its own, so killing torchrun's process group alone would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(Path(stat).parent.name))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    """End the run: torchrun (asked first, so it stops its ranks), then by id every process it started."""
    tree = _descendants(proc.pid)
    try:
        proc.terminate()
        proc.wait(timeout=5)
    except (subprocess.TimeoutExpired, OSError):
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    if proc.poll() is None:
        proc.kill()


def _prepare_data(root: Path, data_path, tokenizer_path) -> tuple[Path, Path, str]:
    if data_path is not None:
        data = Path(data_path).resolve()
        return data, Path(tokenizer_path).resolve(), "given"
    from verifier.tinydata import build_tiny_dataset

    built = build_tiny_dataset(root / "tiny")
    tok = Path(tokenizer_path).resolve() if tokenizer_path is not None else Path(built["tokenizer_path"])
    return Path(built["data_path"]), tok, "tiny"


# ---------------------------------------------------------------- the probe suite

def _all_failed(result: ProbeResult, message: str, **evidence) -> ProbeResult:
    for pid in PROBE_IDS:
        result.probes[pid] = ProbeOutcome(pid, "error", message, dict(evidence))
    return result


def run_probes(folder, *, nproc: int = 1, data_path=None, tokenizer_path=None, timeout: float = 300,
               workdir=None, position: int | None = None) -> ProbeResult:
    """Run the four legality probes on a copy of `folder` (see the module docstring). `timeout` bounds
    each run of the script (seconds); `workdir` keeps the runs' files (default: a temporary folder,
    removed afterwards); `position` is P (default: 60% of the validation targets, off TTT chunk
    boundaries). Never raises for a failing or misbehaving script: every outcome is in the result."""
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    if data_path is not None and tokenizer_path is None:
        raise ValueError("a data path needs its tokenizer path")
    result = ProbeResult(str(folder), nproc, None, None, 0.0, {})
    script = "train_gpt.py"
    if not (folder / script).is_file():
        result.seconds = time.perf_counter() - started
        return _all_failed(result, f"no {script} in the folder: nothing to probe")
    tmp = tempfile.TemporaryDirectory(prefix="golf-probe-") if workdir is None else None
    if tmp is None:  # a fresh folder inside workdir, kept for inspection
        Path(workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tmp.name if tmp else tempfile.mkdtemp(prefix="golf-probe-", dir=workdir)).resolve()
    try:
        _probe(result, folder.resolve(), root, script, nproc, data_path, tokenizer_path, timeout, position)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result.probes = {pid: result.probes[pid] for pid in PROBE_IDS if pid in result.probes}
    result.seconds = time.perf_counter() - started
    return result


def _probe(result: ProbeResult, folder: Path, root: Path, script: str, nproc: int, data_path, tokenizer_path,
           timeout: float, position: int | None) -> None:
    try:
        data, tokenizer, result.data = _prepare_data(root, data_path, tokenizer_path)
        val_files = _val_files(data)
        if not val_files:
            raise ValueError(f"no fineweb_val_*.bin shards in {data}")
        if not any(data.glob("fineweb_train_*.bin")):
            raise ValueError(f"no fineweb_train_*.bin shards in {data}")
        shards = [read_shard(p) for p in val_files]
    except Exception as exc:  # noqa: BLE001 - a tiny-dataset build error (UserError), OSError, ValueError
        _all_failed(result, f"probe data unusable: {exc}")
        return
    tokens = [t for s in shards for t in s]
    seq_len = int(SMOKE_OVERRIDES["TRAIN_SEQ_LEN"])
    usable = (len(tokens) - 1) // seq_len * seq_len + 1  # what load_validation_tokens keeps
    if usable < 2 * seq_len + 1:
        _all_failed(result, f"the validation split ({len(tokens)} tokens) is too short to probe")
        return
    p = choose_position(usable) if position is None else int(position)
    if not 1 <= p < usable - 1:
        _all_failed(result, f"position {p} is not inside the validation targets 1..{usable - 2}")
        return
    result.position, result.num_tokens = p, usable
    short = min(SHORT_VAL_TOKENS, usable - 1) + 1
    try:
        data_b = _variant_data(data, root / "data_b", [len(s) for s in shards], change_after(tokens, p))
        data_c = _variant_data(data, root / "data_c", [short], change_all(tokens, short))
    except (OSError, ValueError) as exc:
        _all_failed(result, f"cannot write the changed validation split: {exc}")
        return
    variants = {"A": data, "B": data_b, "C": data_c}
    jobs = max(1, min(len(variants), (os.cpu_count() or 1) // nproc + 1))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {n: pool.submit(_run_variant, n, folder, root, script, nproc, d, tokenizer, timeout)
                   for n, d in variants.items()}
        runs = {n: f.result() for n, f in futures.items()}
    result.runs = runs
    broken = [r for r in runs.values() if not r.ok]
    if broken:
        r = broken[0]
        why = f"timed out after {timeout:g}s" if r.timed_out else \
            f"exited with code {r.returncode}" if r.returncode is not None else "could not start"
        _all_failed(result, f"the script failed under the probe (variant {r.name} {why}): {r.tail[-600:]}",
                    variant=r.name, returncode=r.returncode)
        return
    a, b = runs["A"], runs["B"]
    if a.result and isinstance(a.result.get("val_tokens"), int):
        result.num_tokens = a.result["val_tokens"] + 1
    result.probes["probe.isolation"] = _isolation(runs, root, folder, script, nproc, data, tokenizer, timeout)
    if not a.ledgers or not b.ledgers:
        why = "; ".join(a.ledger_errors + b.ledger_errors) or \
            "the script wrote no ledger_rank*.json under GOLF_PROBE_DIR (not golf-pack output?)"
        for pid in PROBE_IDS[:3]:
            result.probes[pid] = ProbeOutcome(pid, "skipped", f"no probe ledger: {why}")
        return
    if len(a.ledgers) != nproc or len(b.ledgers) != nproc:
        for pid in PROBE_IDS[:3]:
            result.probes[pid] = ProbeOutcome(pid, "error", f"expected {nproc} ledger(s) per run, found "
                                              f"{len(a.ledgers)} and {len(b.ledgers)}")
        return
    names = sorted(_runs(a.ledgers))
    common = {"num_tokens": result.num_tokens, "eval_paths": names, "nproc": nproc}
    problems = compare_nll(a.ledgers, b.ledgers, p)
    result.probes["probe.causality"] = _outcome(
        "probe.causality", problems, dict(common, changed_after=p),
        f"per-token NLL of positions 1..{p} bit-identical when the tokens after {p} change "
        f"(eval paths: {', '.join(names) or 'none ledgered'})")
    problems = check_ledgers(a.ledgers, result.num_tokens)
    steps = sum(1 for led in a.ledgers for run in led.get("runs") or [] for e in run.get("events") or []
                if isinstance(e, dict) and "step" in e)
    result.probes["probe.ledger"] = _outcome(
        "probe.ledger", problems, dict(common, steps=steps),
        f"{steps} TTT step record(s){' (all ranks)' if nproc > 1 else ''} read only scored tokens; every token "
        "scored once per eval path "
        f"({', '.join(names) or 'none ledgered'})")
    problems = check_normalization(a.ledgers)
    dists = sum(len(run.get("logprobs") or {}) for led in a.ledgers for run in led.get("runs") or [])
    result.probes["probe.normalization"] = _outcome(
        "probe.normalization", problems, dict(common, distributions=dists),
        f"{dists} sampled distribution(s) sum to 1 within {NORMALIZATION_TOLERANCE:g}")


def _outcome(pid: str, problems: list[Problem], evidence: dict, passed: str) -> ProbeOutcome:
    if not problems:
        if not evidence.get("eval_paths"):
            passed += "; no eval path writes a ledger (a plain roundtrip evaluation is not ledgered), so nothing " \
                      "was compared"
        return ProbeOutcome(pid, "pass", passed, evidence)
    first = problems[0]
    return ProbeOutcome(pid, "fail", first.message, dict(evidence, **first.evidence()), problems)


def _isolation(runs: dict[str, VariantRun], root: Path, folder: Path, script: str, nproc: int, data: Path,
               tokenizer: Path, timeout: float) -> ProbeOutcome:
    pid = "probe.isolation"
    a = runs["A"].artifacts
    if not a:
        return ProbeOutcome(pid, "error", "the script wrote no final_model* artifact (in LOG_DIR or beside it)")
    evidence = {"artifact": sorted(a), "sha256": a[sorted(a)[0]]}
    differ = [n for n in ("B", "C") if runs[n].artifacts != a]
    if not differ:
        return ProbeOutcome(pid, "pass", "the exported model is byte-identical when the validation data changes "
                            "(after P; everywhere and shorter)", evidence)
    # Tell a leak from a script whose training is not deterministic on CPU: train A again.
    again = _run_variant("A2", folder, root, script, nproc, data, tokenizer, timeout)
    runs["A2"] = again
    if not again.ok:
        return ProbeOutcome(pid, "error", f"the repeat of run A failed ({again.returncode}); isolation undecided",
                            evidence)
    if again.artifacts != a:
        return ProbeOutcome(pid, "error", "training is not deterministic on CPU (two runs with the same data "
                            "exported different models); isolation cannot be decided", evidence)
    what = {"B": "the validation tokens after P", "C": "every validation token (and the split's length)"}
    message = (f"the exported model changes when only validation data changes ({'; '.join(what[n] for n in differ)}"
               "): validation data reaches training (README: validation data may never be trained on)")
    problem = Problem("val-reaches-training", message)
    return ProbeOutcome(pid, "fail", message, dict(evidence, changed_by=differ,
                                                   sha256_changed={n: runs[n].artifacts for n in differ}), [problem])
