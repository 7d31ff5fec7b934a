"""Legality probes (verifier.probes, `golf-verify --probe`) on the outside score capture.

In-process first (cheap): tiny scoring loops run under `verifier.harness.capture.capturing`, which
captures exactly as the harness does inside a run, and the judges decide. Then end to end (slow):
the eval-style fixture script, each illegal style failing at its first offending position and each
legal twin passing, and a public record (the root baseline) passing all four probes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from verifier import verify_folder
from verifier.checks import REGISTRY, run_checks
from verifier.harness.capture import PositionIndex, capturing, load_capture, place
from verifier.probes import (
    NOT_CHECKED, PROBE_IDS, Problem, ProbeOutcome, ProbeResult, choose_position, judge_causality,
    judge_normalization, judge_single_pass, run_probes,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = ROOT / "tests" / "fixtures" / "eval_styles"
VOCAB, BOS, SEQ, STRIDE = 64, 1, 32, 16
N = 1025
P = 600


# ---------------------------------------------------------------- in-process scenarios

def random_tokens(n: int = N, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    """Random tokens in documents of 20-90 tokens, each starting with BOS."""
    g = np.random.default_rng(seed)
    t = g.integers(4, vocab, size=n)
    starts = np.cumsum(g.integers(20, 90, size=n // 20))
    t[starts[starts < n]] = BOS
    t[0] = BOS
    return torch.from_numpy(t)


def changed_from(tokens: torch.Tensor, p: int) -> torch.Tensor:
    out = tokens.clone()
    tail = out[p:]
    out[p:] = torch.where(tail == BOS, tail, (tail - 4 + 7) % (VOCAB - 4) + 4)
    return out


class Bigram(nn.Module):
    """Logits from the previous token only: causal by construction."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB, VOCAB)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(0)) * 0.1)

    def forward(self, x):
        return self.table(x)


def windows(total: int):
    ends = list(range(SEQ, total, STRIDE)) + [total]
    return [(0, 0, ends[0])] + [(e - SEQ, prev, e) for prev, e in zip(ends, ends[1:])]


def rows(tokens, part):
    return (torch.stack([tokens[s:e] for s, _, e in part]), torch.stack([tokens[s + 1 : e + 1] for s, _, e in part]))


def score(model, tokens, wins=None, bias=None):
    total, count = 0.0, 0
    wins = wins or windows(tokens.numel() - 1)
    for i in range(0, len(wins), 8):
        part = wins[i : i + 8]
        x, y = rows(tokens, part)
        with torch.no_grad():
            logits = model(x) + (bias if bias is not None else 0)
            nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
        for j, (s, a, _) in enumerate(part):
            total, count = total + float(nll[j, a - s :].double().sum()), count + y.size(1) - (a - s)
    return total / count


def sgd(model, tokens, lo, hi):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for s in range(lo, hi - SEQ, SEQ):
        x, y = rows(tokens, [(s, s, s + SEQ)])
        opt.zero_grad()
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()


def legal(model, t):
    return score(model, t)


def pre_eval(model, t):
    sgd(model, t, 0, t.numel())
    return score(model, t)


def rescore(model, t):
    score(model, t)
    sgd(model, t, 0, t.numel())
    return score(model, t)


def score_first(model, t, chunk=256):
    wins, total, count = windows(t.numel() - 1), 0.0, 0
    for c in range(0, t.numel() - 1, chunk):
        part = [w for w in wins if c <= w[1] < c + chunk]
        n = sum(e - a for _, a, e in part)
        total, count = total + score(model, t, part) * n, count + n
        sgd(model, t, c, min(c + chunk + 1, t.numel()))
    return total / count


def target_keyed(model, t):
    """Log-probs with the correct token's entry boosted (a cache blended into the target only)."""
    x, y = t[:-1][None], t[1:]
    with torch.no_grad():
        logp = F.log_softmax(model(x)[0], dim=-1)
        logp[torch.arange(y.numel()), y] = torch.logaddexp(logp[torch.arange(y.numel()), y], torch.tensor(-3.0))
        nll = F.nll_loss(logp, y, reduction="none")
    return float(nll.double().mean())


def run_scenario(tmp: Path, fn, tokens, name: str, printed=None) -> tuple:
    model = Bigram()
    with capturing(tmp) as cap:
        loss = fn(model, tokens)
        cap.line(f"{name} val_loss:{printed if printed is not None else loss:.8f}")
    captured, why = load_capture(tmp, 1)
    assert captured is not None, why
    return captured, loss


def both(tmp: Path, fn, name: str):
    a_tokens = random_tokens()
    b_tokens = changed_from(a_tokens, P)
    a, _ = run_scenario(tmp / "a", fn, a_tokens, name)
    b, _ = run_scenario(tmp / "b", fn, b_tokens, name)
    return a, b, a_tokens.numpy(), b_tokens.numpy()


@pytest.mark.parametrize("fn", [legal, score_first], ids=["sliding", "score_first"])
def test_legal_scoring_passes_every_judge(fn, tmp_path):
    a, b, ta, tb = both(tmp_path, fn, "final")
    for outcome in (judge_causality(a, b, ta, tb, P), judge_single_pass(a, ta), judge_normalization(a, ta, VOCAB)):
        assert outcome.status == "pass", outcome.message
    assert judge_causality(a, b, ta, tb, P).evidence["positions_compared"] == P


def test_pre_eval_training_fails_causality_and_single_pass_at_position_one(tmp_path):
    a, b, ta, tb = both(tmp_path, pre_eval, "final_ttt")
    causal = judge_causality(a, b, ta, tb, P)
    assert causal.status == "fail" and causal.first.position == 1 and causal.first.figure == "final_ttt"
    assert "test_probes.py" in causal.first.site and "score" in causal.first.site
    single = judge_single_pass(a, ta)
    assert single.status == "fail" and single.first.kind == "not-first-score" and single.first.position == 1
    assert "with gradient" in single.first.message and "sgd" in single.first.site


def test_rescoring_after_adaptation_is_named(tmp_path):
    a, _, ta, _ = both(tmp_path, rescore, "final")
    single = judge_single_pass(a, ta)
    assert single.status == "fail" and single.first.position == 1 and "scored after an update" in single.message


def test_target_keyed_cache_fails_normalization_and_causality_at_p(tmp_path):
    a, b, ta, tb = both(tmp_path, target_keyed, "ngram")
    norm = judge_normalization(a, ta, VOCAB)
    assert norm.status == "fail" and norm.first.position == 1 and norm.first.kind == "not-normalized"
    causal = judge_causality(a, b, ta, tb, P)
    assert causal.status == "fail" and causal.first.kind == "distribution-differs" and causal.first.position == P
    assert judge_single_pass(a, ta).status == "pass"  # the NLLs themselves are what it reports


def tail_twice(model, t):
    """Windows every STRIDE tokens, each counting its last STRIDE targets: the short last window counts again
    what the window before it counted (a pattern of several merged March records)."""
    total, count, n = 0.0, 0, t.numel() - 1
    for ws in range(0, n, STRIDE):
        end = min(ws + SEQ, n)
        x, y = t[ws:end][None], t[ws + 1 : end + 1]
        with torch.no_grad():
            nll = F.cross_entropy(model(x)[0], y, reduction="none")
        s = 0 if ws == 0 else max(end - ws - STRIDE, 0)
        total, count = total + float(nll[s:].double().sum()), count + end - ws - s
    return total / count


def test_a_token_counted_twice_is_named(tmp_path):
    t = random_tokens()
    a, _ = run_scenario(tmp_path, tail_twice, t, "final_sliding")
    single = judge_single_pass(a, t.numpy())
    assert single.status == "warning" and single.first.kind == "scored-twice"
    assert single.first.position == N - 1 - STRIDE + 1 and single.first.count == STRIDE
    # a tail of one stride moves the figure by a bounded amount: a warning, not an error
    assert single.first.severity == "warning" and "a tail of at most one stride" in single.message
    result = ProbeResult("f", 1, P, N, 0.0, probes={single.id: single})
    (finding,), _ = result.findings()
    assert finding.severity == "warning" and finding.check == "probe.single-pass"


def test_a_figure_not_made_of_the_captured_scores_fails(tmp_path):
    a, _ = run_scenario(tmp_path, legal, random_tokens(), "final", printed=1.25)
    single = judge_single_pass(a, random_tokens().numpy())
    assert single.status == "fail" and single.first.kind == "figure-not-from-scores"


def test_partial_vocabulary_and_nothing_captured(tmp_path):
    t = random_tokens(vocab=40)

    def narrow(model, tokens):  # a distribution over the first 40 of the 64 tokens
        x, y = tokens[:-1][None], tokens[1:]
        with torch.no_grad():
            return float(F.cross_entropy(model(x)[0, :, :40], y))
    a, _ = run_scenario(tmp_path / "n", narrow, t, "final")
    assert judge_normalization(a, t.numpy(), VOCAB).first.kind == "partial-vocabulary"
    empty, _ = run_scenario(tmp_path / "e", lambda m, tok: 2.0, t, "final")
    for outcome in (judge_single_pass(empty, t.numpy()), judge_normalization(empty, t.numpy(), VOCAB),
                    judge_causality(empty, empty, t.numpy(), t.numpy(), P)):
        assert outcome.status == NOT_CHECKED and not outcome.passed


# ---------------------------------------------------------------- placing rows

def test_rows_are_placed_by_their_window_and_stop_at_a_break():
    tokens = random_tokens(400, seed=3).numpy()
    index = PositionIndex(tokens)
    row = tokens[101:141]  # targets of the window starting at 100
    wrapped = np.concatenate([tokens[371:400], tokens[1:12]])  # a tail that wraps to the start
    padded = np.concatenate([np.zeros(5, dtype=np.int64), tokens[51:86]])  # pads first
    placed = place(index, np.concatenate([row, wrapped, padded]), (3, 40))
    pos = placed.position.reshape(3, 40)
    assert pos[0].tolist() == list(range(101, 141)) and set(placed.window.reshape(3, 40)[0]) == {100}
    assert pos[1, :29].tolist() == list(range(371, 400)) and (pos[1, 29:] == -1).all()  # not placed after the wrap
    assert (pos[2, :5] == -1).all() and pos[2, 5:].tolist() == list(range(51, 86))


def test_position_lies_inside_a_chunk():
    for n, chunk in ((8193, 4096), (8193, 1024), (8193, None), (1000, 256)):
        p = choose_position(n, chunk)
        assert 1 <= p < n - 1
        if chunk:
            assert chunk // 4 <= p % chunk <= chunk - chunk // 4


# ---------------------------------------------------------------- registry and reporting

def _result(statuses: dict) -> ProbeResult:
    probes = {}
    for pid, status in statuses.items():
        problems = [Problem("score-differs", "a score moved", position=1, site="train_gpt.py:9 f", figure="x")] \
            if status == "fail" else []
        probes[pid] = ProbeOutcome(pid, status, f"{pid} {status}", {"changed_from": 10}, problems)
    return ProbeResult("f", 1, 10, 20, 1.0, probes)


def test_four_registered_checks_report_only_with_a_probe_result():
    assert all(pid in REGISTRY and REGISTRY[pid].severity == "error" for pid in PROBE_IDS)
    text = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
    assert all(f"`{pid}`" in text for pid in PROBE_IDS)

    class Bare:
        profile = "strict"
    assert run_checks(Bare(), PROBE_IDS) == []


@pytest.mark.parametrize("profile", ["strict", "legacy"])
def test_not_checked_is_never_a_pass(profile):
    result = _result({"probe.causality": "fail", "probe.single-pass": "pass", "probe.normalization": NOT_CHECKED,
                      "probe.isolation": NOT_CHECKED})
    findings, skipped = result.findings(profile)
    by = {(f.check, f.severity) for f in findings}
    assert by == {("probe.causality", "error"), ("probe.single-pass", "info"), ("probe.normalization", "error"),
                  ("probe.isolation", "error")} and skipped == []
    (fail,) = [f for f in findings if f.check == "probe.causality"]
    assert fail.evidence["position"] == 1 and fail.evidence["site"] == "train_gpt.py:9 f"
    assert all(f.message.startswith("not checked: ") for f in findings if f.check == "probe.isolation")
    assert not result.passed and result.failed == ["probe.causality"]


def test_usage_errors_raise_and_a_folder_without_a_script_is_not_checked(tmp_path):
    with pytest.raises(ValueError):
        run_probes(tmp_path / "missing")
    result = run_probes(tmp_path)
    assert {p.status for p in result.probes.values()} == {NOT_CHECKED} and not result.runs
    assert "no train_gpt.py" in result.probes["probe.causality"].message


# ---------------------------------------------------------------- end to end (subprocesses)

ILLEGAL = {  # style -> {probe: first offending position ("P": the probe's position; None: no position)}
    "pre_eval_ttt": {"probe.causality": 1, "probe.single-pass": 1},
    "rescore": {"probe.causality": 1, "probe.single-pass": 1},
    "slot": {"probe.causality": "batch", "probe.single-pass": 1},
    "ngram_cache": {"probe.causality": "P", "probe.normalization": "first"},
    "compile_warmup": {"probe.single-pass": 1},
}
LEGAL = ["sliding", "score_first_ttt", "slot_on_context", "ngram_mixture", "warmup_on_train"]


def fixture_folder(tmp_path: Path, styles: list[str]) -> Path:
    folder = tmp_path / "records" / "track_10min_16mb" / "2026-05-01_EvalStyles"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURE / "train_gpt.py", folder / "train_gpt.py")
    (folder / "README.md").write_text("Probe fixture.\n\n```bash\nEVAL_STYLES=" + ",".join(styles) +
                                      " torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n")
    return folder


def digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_eval_styles_fail_at_their_first_offending_position(tmp_path):
    folder = fixture_folder(tmp_path, LEGAL + list(ILLEGAL))
    before = digest(folder)
    result = run_probes(folder, timeout=240)
    assert digest(folder) == before, "the probe wrote into the record folder"
    assert result.ran, {n: r.failure() for n, r in result.runs.items()}
    p = result.position
    flagged = {(pid, q.figure): q for pid, o in result.probes.items() for q in o.problems}
    assert not [k for k in flagged if k[1] in LEGAL], [flagged[k].message for k in flagged if k[1] in LEGAL]
    for style, expect in ILLEGAL.items():
        assert {pid for pid, fig in flagged if fig == style} == set(expect), style
        for pid, where in expect.items():
            q = flagged[(pid, style)]
            if where == "P":
                assert q.position == p and q.kind == "distribution-differs"
            elif where == "batch":  # the first scored position of the batch of windows that holds P
                assert p - 16 * 64 <= q.position < p
            elif where == "first":
                assert 1 <= q.position < 300
            else:
                assert q.position == where, (style, pid, q.message)
            assert q.site and q.site.startswith("train_gpt.py:"), q
    assert result.probes["probe.isolation"].passed
    # Through the report, as golf-verify --probe shows it.
    report = verify_folder(folder)
    result.add_to(report)
    assert report.exit_code == 1 and {f.check for f in report.findings if f.severity == "error"} >= {
        "probe.causality", "probe.single-pass", "probe.normalization"}


@pytest.mark.slow
def test_root_baseline_runs_under_the_harness_and_passes(tmp_path):
    script = SHARED / "upstream" / "train_gpt.py"
    if not script.is_file():
        pytest.skip("../shared/upstream/train_gpt.py is not present beside the repository")
    folder = tmp_path / "baseline"
    folder.mkdir()
    shutil.copy(script, folder / "train_gpt.py")
    result = run_probes(folder, timeout=240)
    assert result.passed, {pid: o.message for pid, o in result.probes.items()}
    assert result.probes["probe.single-pass"].evidence["figures"][-1].startswith("final_int8_zlib_roundtrip_exact")
    assert result.runs["A"].artifacts == result.runs["C"].artifacts and "final_model.int8.ptz" in result.runs["A"].artifacts


def test_other_ranks_feed_the_figure_printed_after_their_last_collective(tmp_path):
    """Rank 1 prints nothing: its calls feed the first figure rank 0 prints once the collective that summed
    them (the rank's count of completed collectives) is done."""
    tokens = random_tokens(200)
    target = tokens[1:33].numpy().astype(np.int32)

    def call(seq, epoch, offset):
        return {"seq": seq, "epoch": epoch, "kind": "cross_entropy", "reduction": "none", "grad": False,
                "site": "train_gpt.py:1 f", "rows": 32, "width": VOCAB, "shape": [1, 32], "offset": offset,
                "dtype": "float32", "lse": False}

    ranks = {0: [call(1, 0, 0), {"seq": 2, "epoch": 1, "kind": "line", "text": "first val_loss:1.0"},
                 call(3, 1, 32), {"seq": 4, "epoch": 2, "kind": "line", "text": "second val_loss:1.0"}],
             1: [call(1, 0, 0), call(2, 1, 32), call(3, 2, 64)]}
    for rank, records in ranks.items():
        n = 32 * sum(r["kind"] != "line" for r in records)
        np.savez(tmp_path / f"capture_rank{rank}.npz", target=np.tile(target, n // 32),
                 nll=np.ones(n, np.float32), fp=np.zeros((n, 2), np.float32), lse=np.zeros(0, np.float32))
        (tmp_path / f"capture_rank{rank}.json").write_text(json.dumps({"records": records}))
    cap, why = load_capture(tmp_path, 2)
    assert why is None and [f.name for f in cap.figures] == ["first", "second"]
    assert [(c.rank, c.seq, c.figure) for c in cap.calls] == [(0, 1, 0), (0, 3, 1), (1, 1, 0), (1, 2, 1),
                                                              (1, 3, None)]
    assert load_capture(tmp_path, 3) == (None, "rank 2 wrote no capture (capture_rank2.json/.npz)")
