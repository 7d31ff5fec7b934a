"""Legality probes (`golf-verify --probe`): run any record's script on CPU under the harness
(verifier/harness) and judge its evaluation from outside, against the README rule and thread
#1017 (C1 causal, C2 normalized, C3 score before update, C4 single pass).

How a folder is probed. Its script runs unmodified, in copies of the folder, in subprocesses with
a time limit, offline, three times with the same training data, seed and small settings, on random
validation tokens of its own vocabulary (documents start with BOS):
    A  the validation split;
    B  identical to A before a position P (60% of the targets, inside a TTT chunk), every
       non-BOS token from P on replaced;
    C  half as long, every token different.
Every score the script computes through F.cross_entropy, F.nll_loss or a log_softmax gather is
captured with its target, NLL and a fingerprint of its distribution, and placed at a validation
position by its row's window (verifier.harness.capture). Then
    probe.causality      the score of every position before P (its first captured computation) is
                         bit-identical in A and B if it was computed before any token from P on was
                         scored, and so is the distribution predicting P itself (its target changed,
                         its context did not): the first position that differs and the call are named;
    probe.single-pass    every printed val_loss equals the mean over its tokens of each token's first
                         captured score (the score a token gets before any update that saw it, once);
    probe.normalization  every captured score comes from a distribution over the whole vocabulary
                         that sums to 1 (log-prob rows are checked, logits through cross_entropy are
                         normalized by it);
    probe.isolation      the exported model files are byte-identical in A, B and C.
Each probe ends in pass, fail (with evidence) or `not checked: <reason>`; a probe that did not run
is never a pass, and golf-verify reports it as an error.

Public API: run_probes(folder, ...) -> ProbeResult; PROBE_IDS; judge_causality, judge_single_pass,
judge_normalization (pure functions of captures, for tests).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verifier.harness import data as hdata
from verifier.harness.capture import Capture, Scores, load_capture, scores
from verifier.harness.run import RecordRun, run_record
from verifier.harness.script import Plan, plan_folder

__all__ = ["PROBE_IDS", "NORMALIZATION_TOLERANCE", "Problem", "ProbeOutcome", "ProbeResult", "run_probes",
           "judge_causality", "judge_single_pass", "judge_normalization", "choose_position", "NOT_CHECKED"]

PROBE_IDS = ("probe.causality", "probe.single-pass", "probe.normalization", "probe.isolation")
NOT_CHECKED = "not checked"
NORMALIZATION_TOLERANCE = 1e-4
POSITION_FRACTION = 0.6
FULL_COVERAGE = 0.99  # a figure whose scores are not all captured is not judged on its mean
_CHUNK_KNOBS = ("TTT_CHUNK_TOKENS", "GLOBAL_TTT_CHUNK_TOKENS", "TTT_CHUNK_SIZE", "TTT_CHUNK_LEN")


@dataclass
class Problem:
    """One violation; `position` indexes the validation tokens (the predicted token)."""

    kind: str
    message: str
    position: int | None = None
    site: str | None = None  # file:line function of the call that computed it
    figure: str | None = None  # the printed line the call fed
    count: int | None = None
    severity: str | None = None  # "warning": a flaw of bounded, negligible effect (else the check's severity)

    def evidence(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and k not in ("message", "severity")}


@dataclass
class ProbeOutcome:
    """status: "pass", "fail", "warning" (every problem a warning) or "not checked"."""

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
class ProbeResult:
    folder: str
    nproc: int
    position: int | None
    num_tokens: int | None
    seconds: float
    probes: dict[str, ProbeOutcome]
    runs: dict[str, RecordRun] = field(default_factory=dict)
    plan: Plan | None = None

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.probes.values())

    @property
    def failed(self) -> list[str]:
        return [i for i, p in self.probes.items() if p.status == "fail"]

    @property
    def ran(self) -> bool:
        """The script ran to the end in every variant (whatever the probes then found)."""
        return bool(self.runs) and all(r.ok for r in self.runs.values())

    @property
    def judged(self) -> bool:
        """Every probe reached a verdict (pass or fail)."""
        return all(p.status in ("pass", "fail", "warning") for p in self.probes.values())

    def to_dict(self) -> dict:
        plan = self.plan
        return {
            "folder": self.folder, "nproc": self.nproc, "position": self.position, "num_tokens": self.num_tokens,
            "seconds": round(self.seconds, 3),
            "script": None if plan is None else {"entry": plan.entry, "vocab": plan.vocab, "profiles": plan.profiles,
                                                 "run_config": plan.run_config_source, "env": dict(plan.env),
                                                 "notes": list(plan.notes)},
            "probes": {i: {"status": p.status, "message": p.message, "evidence": p.evidence,
                           "problems": [dict(q.evidence(), message=q.message) for q in p.problems]}
                       for i, p in self.probes.items()},
            "runs": {n: {"returncode": r.returncode, "seconds": round(r.seconds, 3), "timed_out": r.timed_out,
                         "artifacts": r.artifacts, "network": r.network, "failure": r.failure()}
                     for n, r in self.runs.items()},
        }

    def emit(self, probe_id: str, emit, analysis=None) -> None:
        """Report one probe through a registry `Emit` (verifier.checks): a failure is an error finding per
        problem (at most 10), a pass one info finding, a probe that was not checked one error finding
        that says so (never a pass, whatever the profile)."""
        outcome = self.probes.get(probe_id)
        if outcome is None:
            return
        if outcome.status == "pass":
            emit(outcome.message, severity="info", **outcome.evidence)
        elif outcome.status == NOT_CHECKED:
            emit(f"{NOT_CHECKED}: {outcome.message}", severity="error", status=NOT_CHECKED, **outcome.evidence)
        else:
            for problem in outcome.problems[:10]:
                emit(problem.message, severity=problem.severity, **dict(outcome.evidence, **problem.evidence()))
            if len(outcome.problems) > 10:
                emit(f"{len(outcome.problems) - 10} more problem(s) of this probe not shown", **outcome.evidence)

    def findings(self, profile: str = "strict") -> tuple[list, list[dict]]:
        """(findings, skipped entries) of the four probes, as the registry's checks report them."""
        from verifier.checks import REGISTRY, Emit

        out = []
        for probe_id in PROBE_IDS:
            emit = Emit(REGISTRY[probe_id], profile)
            self.emit(probe_id, emit)
            out.extend(emit.findings)
        return out, []

    def add_to(self, report) -> None:
        """Append the probes' findings to a verifier Report (its verdict and exit code then include them)."""
        findings, skipped = self.findings(report.profile)
        report.findings.extend(findings)
        report.skipped.extend(skipped)


def _not_checked(pid: str, why: str, **evidence) -> ProbeOutcome:
    return ProbeOutcome(pid, NOT_CHECKED, why, dict(evidence))


def _outcome(pid: str, problems: list[Problem], evidence: dict, passed: str) -> ProbeOutcome:
    if not problems:
        return ProbeOutcome(pid, "pass", passed, evidence)
    status = "warning" if all(p.severity == "warning" for p in problems) else "fail"
    problems = sorted(problems, key=lambda p: p.severity == "warning")  # an error first
    return ProbeOutcome(pid, status, problems[0].message, dict(evidence, **problems[0].evidence()), problems)


# ---------------------------------------------------------------------------------- placed scores

def _where(cap: Capture, call_index: int) -> dict:
    call = cap.calls[call_index]
    fig = cap.figures[call.figure].name if call.figure is not None else "after the last printed val_loss"
    return {"site": call.site, "figure": fig, "grad": call.grad, "kind": call.kind}


# ---------------------------------------------------------------------------------- causality

def judge_causality(a: Capture, b: Capture, tokens_a: np.ndarray, tokens_b: np.ndarray, p: int) -> ProbeOutcome:
    """The score of every position before p (its first captured computation per printed figure) is
    bit-identical in A and B if it was computed before any token from p on was scored, and so is the
    distribution predicting p. (A score computed after tokens from p on were scored may depend on them:
    test-time training on scored tokens, in any order, is legal; re-scoring is the single-pass probe's.)"""
    pid = "probe.causality"
    sa, sb = scores(a, tokens_a), scores(b, tokens_b)
    ta, tb = _first_scores(sa, a, p), _first_scores(sb, b, p)
    if not ta:
        return _not_checked(pid, "no captured score of a validation position before P: the script computes its "
                                 "scores outside F.cross_entropy, F.nll_loss and log_softmax", changed_from=p)
    found: dict[str, list[Problem]] = {}  # figure -> problems in position order (the first is reported)
    for key in sorted(set(ta) | set(tb), key=lambda k: (k[1], k[0])):
        problem = _compare_first(key[1], ta.get(key), tb.get(key), sa, sb, a, b, p)
        if problem is not None:
            found.setdefault(problem.figure, []).append(problem)
    problems = []
    for figure, items in found.items():
        first = items[0]
        first.count = len({q.position for q in items})
        first.message += f"; {first.count} position(s) up to {p} differ in {figure}"
        problems.append(first)
    problems.sort(key=lambda q: (q.position, q.figure))
    evidence = {"changed_from": p, "scores_compared": len(ta), "positions_compared": len({k[1] for k in ta})}
    return _outcome(pid, problems, evidence,
                    f"{evidence['scores_compared']} first score(s) of {evidence['positions_compared']} positions up to "
                    f"P={p}, computed before any token from P on was scored, are bit-identical when the tokens from "
                    "P on change (and so is the distribution predicting P)")


def _first_scores(s: Scores, cap: Capture, p: int) -> dict:
    """(figure, position) -> entry of the reported score of positions up to p that must not depend on the
    tokens from p on: those computed no later than the first reported score of a position >= p in the same
    figure. A token's reported score is its first captured computation, or else the one that makes the
    printed figure (see _reported)."""
    order = {c: k for k, c in enumerate(sorted(range(len(cap.calls)), key=lambda i: cap.calls[i].order))}
    out: dict = {}
    for f, calls in _figure_groups(cap):
        chosen = _reported(cap, s, np.nonzero(np.isin(s.call, calls))[0], cap.figures[f])
        if not len(chosen):
            continue
        when = np.array([order[int(c)] for c in s.call[chosen]])
        late = s.position[chosen] >= p
        taint = int(when[late].min()) if late.any() else 1 << 62
        for j, w in zip(chosen.tolist(), when.tolist()):
            if s.position[j] <= p and w <= taint:
                out[(f, int(s.position[j]))] = j
    return out


def _candidates(cap: Capture, s: Scores, sel: np.ndarray) -> dict[str, np.ndarray]:
    """Ways to pick one computation per token (entry indices, by position): the first; the first without
    gradient (a script that scores under no_grad after training forwards); the last computation of the
    first one's window (a re-score); the first at one call site that computes every token (a script that
    scores with gradient, as LoRA TTT does, after a training step elsewhere read its tokens)."""
    pos = s.position[sel]
    _, first = np.unique(pos, return_index=True)  # sel is in computed order
    grad = np.array([cap.calls[int(c)].grad for c in s.call[sel]], dtype=bool)
    plain = np.nonzero(~grad)[0]
    _, plain_first = np.unique(pos[plain], return_index=True)
    by_pos = dict(zip(pos[first].tolist(), first.tolist()))
    by_pos.update(dict(zip(pos[plain][plain_first].tolist(), plain[plain_first].tolist())))
    no_grad = np.array([by_pos[q] for q in pos[first].tolist()])
    key = pos * (int(pos.max()) + 2) + s.window[sel]
    _, last_rev = np.unique(key[::-1], return_index=True)
    last_of_key = dict(zip(key[::-1][last_rev].tolist(), (len(key) - 1 - last_rev).tolist()))
    last = np.array([last_of_key[k] for k in key[first].tolist()])
    out = {"first": sel[first], "first computation without gradient": sel[no_grad],
           "last computation in its first window": sel[last]}
    return {**out, **_site_candidates(cap, s, sel, len(first))}


def _site_candidates(cap: Capture, s: Scores, sel: np.ndarray, tokens: int) -> dict[str, np.ndarray]:
    """{"first computation at SITE": entries}: per call site that computes each of the tokens, the first."""
    site_ids: dict[str, int] = {}
    of_call = np.array([site_ids.setdefault(c.site, len(site_ids)) for c in cap.calls], dtype=np.int64)
    sites, pos, out = of_call[s.call[sel]], s.position[sel], {}
    for site, k in site_ids.items():
        at = np.nonzero(sites == k)[0]
        _, first = np.unique(pos[at], return_index=True)
        if len(first) == tokens and len(site_ids) > 1:
            out[f"first computation at {site}"] = sel[at[first]]
    return out


def _reported(cap: Capture, s: Scores, sel: np.ndarray, fig) -> np.ndarray:
    """The candidate whose mean is the printed figure (the first one when none is)."""
    if not len(sel):
        return sel
    options = _candidates(cap, s, sel)
    for chosen in options.values():
        if abs(float(s.nll[chosen].astype(np.float64).mean()) - fig.val_loss) <= _tolerance(fig):
            return chosen
    return options["first"]


def _compare_first(pos: int, ja: int | None, jb: int | None, sa: Scores, sb: Scores, a: Capture, b: Capture,
                   p: int) -> Problem | None:
    """The difference between the first computations of one position in A and in B, if any."""
    if ja is None or jb is None or sa.window[ja] != sb.window[jb]:
        w = _where(a, int(sa.call[ja])) if ja is not None else _where(b, int(sb.call[jb]))
        return Problem("computed-differently", f"{w['figure']}: position {pos} is first scored "
                       f"{'in A only' if jb is None else 'in B only' if ja is None else 'by different windows'}, "
                       f"though the tokens differ only from position {p} on (computed at {w['site']}): C1, a score "
                       "may depend only on earlier tokens", pos, w["site"], w["figure"])
    same_fp = sa.fp[ja].tobytes() == sb.fp[jb].tobytes()
    w = _where(a, int(sa.call[ja]))
    if pos < p and not (same_fp and sa.nll[ja].tobytes() == sb.nll[jb].tobytes()):
        return Problem("score-differs", f"{w['figure']}: the score of position {pos} changed ({float(sa.nll[ja]):.6f} "
                       f"-> {float(sb.nll[jb]):.6f}) when only tokens from position {p} on changed, none of them scored "
                       f"yet; computed at {w['site']} ({w['kind']}): C1, the distribution at a position may depend only "
                       "on earlier tokens (and on tokens already scored)", pos, w["site"], w["figure"])
    if pos == p and not same_fp:
        return Problem("distribution-differs", f"{w['figure']}: the distribution predicting position {p} changed when "
                       f"only the token at {p} (and later ones) changed, not its context: the score reads its own "
                       f"target (computed at {w['site']}); C1, a target-keyed cache or bias", pos, w["site"],
                       w["figure"])
    return None


# ---------------------------------------------------------------------------------- single pass

def _figure_groups(cap: Capture) -> list[tuple[int, list[int]]]:
    """(figure index, its calls) with restatements folded: a figure line without calls of its own (the
    `_exact` twin of the line before it) takes the previous group's calls; the most precise line wins."""
    calls_of: dict[int, list[int]] = {}
    for i, call in enumerate(cap.calls):
        if call.figure is not None:
            calls_of.setdefault(call.figure, []).append(i)
    groups: list[tuple[int, list[int]]] = []
    for f in range(len(cap.figures)):
        if f in calls_of:
            groups.append((f, calls_of[f]))
        elif groups and cap.figures[f].decimals > cap.figures[groups[-1][0]].decimals:
            groups[-1] = (f, groups[-1][1])
    return groups


def _tolerance(fig) -> float:
    """Half a unit of the printed figure's last digit, plus float32 summation error (a script may average
    its scores in float32 batches; we average the captured float32 scores in float64)."""
    return 0.5 * 10.0 ** -fig.decimals + 1e-6 * max(1.0, abs(fig.val_loss))


def judge_single_pass(cap: Capture, tokens: np.ndarray) -> ProbeOutcome:
    """Each printed val_loss is the mean of one score per token: the first one captured."""
    pid = "probe.single-pass"
    s = scores(cap, tokens)
    problems, seen, undecided = [], [], []
    for f, calls in _figure_groups(cap):
        sel = np.nonzero(np.isin(s.call, calls))[0]
        if not len(sel):
            continue
        verdict, count = _judge_figure(cap, s, sel, cap.figures[f], len(tokens) - 1)
        seen.append(f"{cap.figures[f].name} ({count} tokens)")
        if isinstance(verdict, Problem):
            problems.append(verdict)
        elif verdict:
            undecided.append(verdict)
    if not seen:
        return _not_checked(pid, "no printed val_loss is fed by captured scores of validation positions")
    evidence = {"figures": seen}
    if undecided and not problems:
        return _not_checked(pid, "a printed val_loss differs from the mean of the captured scores, which cover only "
                                 f"part of the validation tokens: {'; '.join(undecided)}", **evidence)
    return _outcome(pid, problems, evidence,
                    f"each printed val_loss is the mean of one score per token, the first captured: "
                    f"{', '.join(seen)}")


def _judge_figure(cap: Capture, s: Scores, sel: np.ndarray, fig, targets: int) -> tuple[Problem | str | None, int]:
    """(None if the figure is the mean of its tokens' first scores, else a Problem, or a reason it cannot be
    judged; the number of tokens)."""
    pos, nll = s.position[sel], s.nll[sel].astype(np.float64)
    _, first = np.unique(pos, return_index=True)  # sel is in computed order: the first occurrence
    mean_first, tol = float(nll[first].mean()), _tolerance(fig)
    if abs(mean_first - fig.val_loss) <= tol:
        return None, len(first)
    head = f"{fig.name} reports val_loss {fig.val_loss} but the first captured score of each of its {len(first)} " \
           f"tokens averages {mean_first:.8f}"
    # What the figure is, if not that: a later computation of each token (explains it), windows counting
    # tokens twice (explains it), else the first tokens first computed by a training step (evidence only).
    for diagnose, explains in ((_rescored, True), (_window_tails, True), (_rescored, False)):
        problem = diagnose(cap, s, sel, first, fig, tol, head, explains)
        if problem is not None:
            return problem, len(first)
    if len(first) < FULL_COVERAGE * targets:
        return (f"{fig.name} (val_loss {fig.val_loss}; captured scores of {len(first)} of {targets} tokens average "
                f"{mean_first:.8f})"), len(first)
    return Problem("figure-not-from-scores", f"{head}: the figure is not the mean of the distributions the script "
                   "computed (a term outside F.cross_entropy/F.nll_loss entered it, or tokens are counted differently)",
                   None, None, fig.name), len(first)


def _rescored(cap: Capture, s: Scores, sel, first, fig, tol, head, explains: bool) -> Problem | None:
    """explains: the figure is the mean of a later computation of each token (a score after an update: a
    re-score, or scoring after training forwards); name the first token whose counted score is not its
    first. Else: the first token first computed by a training step, if any (evidence, not an explanation)."""
    options = _candidates(cap, s, sel)
    firsts = options["first"]
    if explains:
        name, chosen = next(((n, c) for n, c in options.items() if n != "first" and
                             abs(float(s.nll[c].astype(np.float64).mean()) - fig.val_loss) <= tol), (None, None))
        if chosen is None:
            return None
        changed = np.nonzero(s.nll[firsts] != s.nll[chosen])[0]
        how = f"; it is the mean of each token's {name}: scored after an update"
    else:
        chosen = firsts
        changed = np.nonzero(np.array([cap.calls[int(c)].grad for c in s.call[firsts]], dtype=bool))[0]
        how = ""
    if not len(changed):
        return None
    j1, j2 = int(firsts[changed[0]]), int(chosen[changed[0]])
    q = int(s.position[j1])
    w1, w2 = _where(cap, int(s.call[j1])), _where(cap, int(s.call[j2]))
    later = f" and later {float(s.nll[j2]):.6f} at {w2['site']}" if explains else ""
    return Problem("not-first-score", f"{head}{how}; position {q} was first scored {float(s.nll[j1]):.6f} at "
                   f"{w1['site']}{' (with gradient: a training step)' if w1['grad'] else ''}{later}: C3/C4, a "
                   "token's score is fixed before any update that saw it, and counted once", q, w1["site"],
                   fig.name, len(changed))


def _window_tails(cap: Capture, s: Scores, sel, first, fig, tol, head, explains: bool = True) -> Problem | None:
    """Sliding windows that count each window's last `stride` targets (all of the first window's): a short
    last window counts again tokens that the window before it counted."""
    windows: dict[int, dict[int, float]] = {}
    for p, w, v in zip(s.position[sel].tolist(), s.window[sel].tolist(), s.nll[sel].tolist()):
        windows.setdefault(w, {}).setdefault(p, v)
    starts = sorted(windows)
    steps = np.diff(starts)
    if len(starts) < 3 or not len(steps):
        return None
    stride = int(np.bincount(steps).argmax())
    counted: dict[int, int] = {}
    total = 0.0
    for i, w in enumerate(starts):
        ps = sorted(windows[w])
        for p in ps if i == 0 else ps[-stride:]:
            counted[p] = counted.get(p, 0) + 1
            total += windows[w][p]
    twice = sorted(p for p, n in counted.items() if n > 1)
    if not twice or abs(total / sum(counted.values()) - fig.val_loss) > tol:
        return None
    # Only the last window re-counting at most one stride: the full split's figure moves by < stride/N tokens.
    tail = len(twice) <= stride and twice[0] >= min(windows[starts[-1]])
    shift = abs(fig.val_loss - float(s.nll[sel][first].astype(np.float64).mean()))
    return Problem("scored-twice", f"{head}; it is the mean when each window counts its last {stride} targets, so "
                   f"{len(twice)} token(s) (positions {twice[0]}..{twice[-1]}) are counted twice, by a short last "
                   "window and the window before it: C4, each token is scored once ("
                   + (f"a tail of at most one stride: {shift:.2e} nats on these {len(first)} tokens, far less on the "
                      "full validation split" if tail else "not only the last window")
                   + ")", twice[0], None, fig.name, len(twice), "warning" if tail else None)


# ---------------------------------------------------------------------------------- normalization

def judge_normalization(cap: Capture, tokens: np.ndarray, vocab: int,
                        tolerance: float = NORMALIZATION_TOLERANCE) -> ProbeOutcome:
    pid = "probe.normalization"
    s = scores(cap, tokens)
    fed = np.array([cap.calls[int(c)].figure is not None for c in s.call], dtype=bool) if len(s.call) else \
        np.zeros(0, dtype=bool)
    if not fed.any():
        return _not_checked(pid, "no captured score of a validation position feeds a printed val_loss")
    problems = []
    narrow = sorted({i for i in np.unique(s.call[fed]).tolist() if cap.calls[i].width < vocab})
    if narrow:
        c = cap.calls[narrow[0]]
        problems.append(Problem("partial-vocabulary", f"scores at {c.site} come from distributions over "
                                f"{c.width} of the {vocab} tokens: C2, a full distribution over the vocabulary",
                                None, c.site, _where(cap, narrow[0])["figure"]))
    rows = fed & ~np.isnan(s.lse)
    bad = np.nonzero(rows & (np.abs(s.lse) > tolerance))[0]
    by_figure: dict[str, list[int]] = {}
    for j in bad[np.argsort(s.position[bad], kind="stable")]:
        by_figure.setdefault(_where(cap, int(s.call[j]))["figure"], []).append(int(j))
    for figure, items in by_figure.items():
        j, w = items[0], _where(cap, int(s.call[items[0]]))
        n = len(np.unique(s.position[items]))
        problems.append(Problem("not-normalized", f"{figure}: the distribution scoring position "
                                f"{int(s.position[j])} sums to {math.exp(float(s.lse[j])):.6g}, not 1 (computed at "
                                f"{w['site']}; {n} position(s)): C2, a normalized distribution (a cache blended into "
                                "the correct token only does not sum to 1)", int(s.position[j]), w["site"], figure, n))
    logits, logprobs = int((fed & np.isnan(s.lse)).sum()), int(rows.sum())
    evidence = {"softmax_rows": logits, "logprob_rows": logprobs, "vocab": vocab}
    return _outcome(pid, problems, evidence,
                    f"{logits} score(s) through cross_entropy (softmax over all {vocab} tokens) and {logprobs} "
                    f"log-prob row(s) summing to 1 within {tolerance:g}")


# ---------------------------------------------------------------------------------- isolation

def _judge_isolation(runs: dict[str, RecordRun], repeat) -> ProbeOutcome:
    pid = "probe.isolation"
    a = runs["A"].artifacts
    if not a:
        return _not_checked(pid, "the script wrote no model file beside itself (nothing to compare)")
    evidence = {"artifacts": sorted(a)}
    differ = [n for n in ("B", "C") if runs[n].artifacts != a]
    if not differ:
        return ProbeOutcome(pid, "pass", f"the exported model ({', '.join(sorted(a))}) is byte-identical when the "
                            "validation data changes (from P on; everywhere and shorter)", evidence)
    again = repeat()
    runs["A2"] = again
    if not again.ok:
        return _not_checked(pid, f"the repeat of run A failed ({again.failure()}); isolation undecided", **evidence)
    if again.artifacts != a:
        return _not_checked(pid, "training is not deterministic on CPU (two runs with the same data exported "
                                 "different models); isolation cannot be decided", **evidence)
    what = {"B": "the validation tokens from P on", "C": "every validation token (and the split's length)"}
    files = sorted({f for n in differ for f in a if runs[n].artifacts.get(f) != a[f]})
    message = (f"the exported model ({', '.join(files)}) changes when only validation data changes "
               f"({'; '.join(what[n] for n in differ)}): validation data reaches training or calibration "
               "(README: validation data may never be trained on)")
    return ProbeOutcome(pid, "fail", message, dict(evidence, changed_by=differ),
                        [Problem("val-reaches-artifact", message)])


# ---------------------------------------------------------------------------------- running

def choose_position(n: int, chunk: int | None, fraction: float = POSITION_FRACTION) -> int:
    """P at `fraction` of the targets, moved off chunk boundaries (a step on a whole chunk before scoring
    it moves scores before P only when P falls inside that chunk)."""
    p = int((n - 1) * fraction)
    if chunk and chunk >= 8:
        margin = chunk // 4
        if p % chunk < margin or p % chunk > chunk - margin:
            p += chunk // 2 if p % chunk < margin else -(chunk // 2)
    return max(2, min(p, n - 2))


def _chunk(plan: Plan) -> int | None:
    for knob in _CHUNK_KNOBS:
        value = plan.env.get(knob)
        if value and value.isdigit():
            return int(value)
    return None


def run_probes(folder, *, nproc: int = 1, data_path=None, tokenizer_path=None, timeout: float = 300,
               workdir=None, position: int | None = None, jobs: int | None = None) -> ProbeResult:
    """Run the four probes on copies of `folder`. `timeout` bounds each run (seconds); `workdir` keeps the
    runs' files (default: a temporary folder, removed afterwards); `position` is P; `tokenizer_path` a
    SentencePiece model to use instead of the folder's or a trained one; `data_path` a folder whose
    fineweb_train_*.bin shards train the model (the validation splits are always the probe's own).
    Never raises for a failing or misbehaving script: every outcome is in the result."""
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if nproc < 1:
        raise ValueError("nproc must be at least 1")
    result = ProbeResult(str(folder), nproc, None, None, 0.0, {})
    tmp = tempfile.TemporaryDirectory(prefix="golf-probe-") if workdir is None else None
    if tmp is None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tmp.name if tmp else tempfile.mkdtemp(prefix="golf-probe-", dir=workdir)).resolve()
    try:
        _probe(result, folder.resolve(), root, nproc, data_path, tokenizer_path, timeout, position, jobs)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result.probes = {pid: result.probes.get(pid) or _not_checked(pid, "the probes stopped early")
                     for pid in PROBE_IDS}
    result.seconds = time.perf_counter() - started
    return result


def _all_not_checked(result: ProbeResult, why: str, **evidence) -> None:
    for pid in PROBE_IDS:
        result.probes[pid] = _not_checked(pid, why, **evidence)


def _probe(result: ProbeResult, folder: Path, root: Path, nproc: int, data_path, tokenizer_path, timeout: float,
           position: int | None, jobs: int | None) -> None:
    plan = result.plan = plan_folder(folder)
    if plan.problem:
        return _all_not_checked(result, plan.problem)
    try:
        if tokenizer_path is not None:
            tok = hdata.describe_tokenizer(Path(tokenizer_path).resolve(), "given")
        else:
            tok = hdata.load_tokenizer(folder, plan.vocab, root / "tokenizer")
        val = hdata.random_split(tok, hdata.PROBE_VAL_TOKENS + 1)
        p = choose_position(len(val), _chunk(plan)) if position is None else int(position)
        if not 1 <= p < len(val) - 1:
            raise ValueError(f"position {p} is not inside the validation targets 1..{len(val) - 2}")
        if val[p] == tok.bos:
            p += 1
        train = _train_tokens(tok, data_path)
        splits = {"A": val, "B": hdata.change_from(tok, val, p),
                  "C": hdata.random_split(tok, len(val) // 2 + 1, seed=hdata.SEED + 2)}
        dirs = {n: hdata.write_data(root / f"data_{n}", tok, train, v, plan.reads_byte_sidecar)
                for n, v in splits.items()}
    except (OSError, ValueError, RuntimeError) as exc:
        return _all_not_checked(result, f"probe data could not be made: {exc}")
    result.position, result.num_tokens = p, len(val)
    workers = jobs or max(1, min(3, (os.cpu_count() or 1) // nproc))

    def run(name: str, split: str) -> RecordRun:
        return run_record(plan, dirs[split], root / name, name=name, nproc=nproc, timeout=timeout)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {n: pool.submit(run, n, n) for n in splits}
        result.runs = {n: f.result() for n, f in futures.items()}
    broken = [r for r in result.runs.values() if not r.ok]
    if broken:
        r = broken[0]
        return _all_not_checked(result, f"the script did not run to the end under the CPU harness (run {r.name}): "
                                        f"{r.failure(timeout)}", run=r.name)
    caps = {}
    for n in ("A", "B"):
        caps[n], why = load_capture(root / n / "capture", nproc)
        if caps[n] is None:
            return _all_not_checked(result, f"run {n}: {why}")
    result.probes["probe.causality"] = judge_causality(caps["A"], caps["B"], splits["A"], splits["B"], p)
    result.probes["probe.single-pass"] = judge_single_pass(caps["A"], splits["A"])
    result.probes["probe.normalization"] = judge_normalization(caps["A"], splits["A"], tok.vocab)
    result.probes["probe.isolation"] = _judge_isolation(result.runs, lambda: run("A2", "A"))


def _train_tokens(tok: hdata.Tokenizer, data_path) -> np.ndarray:
    if data_path is None:
        return hdata.random_split(tok, hdata.PROBE_TRAIN_TOKENS, seed=hdata.SEED + 3)
    shards = sorted(Path(data_path).glob("fineweb_train_*.bin"))
    if not shards:
        raise ValueError(f"no fineweb_train_*.bin shards in {data_path}")
    return np.concatenate([hdata.read_tokens(s) for s in shards])
