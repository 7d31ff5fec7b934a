"""Legality probes (verifier.probes, `golf-verify --probe`): pure checks on hand-made ledgers, and the
whole probe suite run on every shipped recipe, the illegal pre-eval TTT recipe and leaky fixtures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from packager.runtime.data import load_data_shard
from verifier import verify_folder
from verifier.checks import REGISTRY, run_checks
from verifier.probes import (
    PROBE_IDS, SMOKE_OVERRIDES, Problem, ProbeOutcome, ProbeResult, change_after, change_all, check_ledgers,
    check_normalization, choose_position, compare_nll, read_shard, run_probes, scored_nll, write_shard,
)

ROOT = Path(__file__).resolve().parents[1]
LEGAL = ["naive_baseline", "qat_bigramhash12k_stride32", "two_phase_ttt", "legal_score_first_ttt",
         "lora_ttt_swiglu_1xh100"]
SUITE_LIMIT_S = 120  # one recipe's probe suite on two CPU cores


# ---------------------------------------------------------------- hand-made ledgers

def score(first: int, nll: list[float]) -> dict:
    return {"score": [first, first + len(nll)], "nll": nll}


def step(k: int, *spans, scope=None) -> dict:
    return {"step": k, "tokens": [list(s) for s in spans], "scope": scope}


def ledger(*runs, rank: int = 0, samples=()) -> dict:
    return {"rank": rank, "samples": list(samples),
            "runs": [{"name": name, "events": events, "logprobs": lp} for name, events, lp in runs]}


def dist(p: list[float]) -> list[float]:
    return [math.log(x) if x > 0 else -math.inf for x in p]


def test_score_first_ledger_is_clean():
    # tokens 0..8: score 1..4, train on 0..4 (token 0 is context), score 5..8, never train on the last chunk
    events = [score(1, [1.0, 2.0, 3.0, 4.0]), step(1, (0, 5)), score(5, [1.0] * 4)]
    assert check_ledgers([ledger(("ttt", events, {}))], num_tokens=9) == []


def test_step_reading_unscored_tokens_is_reported_with_position_and_step():
    events = [score(1, [1.0] * 4), step(1, (0, 5)), step(2, (3, 8)), score(5, [1.0] * 4)]
    (problem,) = check_ledgers([ledger(("ttt", events, {}))], num_tokens=9)
    assert (problem.kind, problem.run, problem.step, problem.rank, problem.position, problem.count) == \
        ("unscored-read", "ttt", 2, 0, 5, 3)
    assert "step 2" in problem.message and "5-7" in problem.message


def test_pre_eval_pattern_fails_at_position_one():
    events = [step(1, (0, 9)), score(1, [1.0] * 8)]
    (problem,) = check_ledgers(ledger(("ttt_pre_eval", events, {})), num_tokens=9)
    assert problem.kind == "unscored-read" and problem.position == 1 and problem.step == 1


def test_token_scored_twice_and_token_never_scored():
    events = [score(1, [1.0] * 4), score(4, [1.0] * 3)]  # 4 twice, 7 and 8 never
    problems = {p.kind: p for p in check_ledgers([ledger(("sliding", events, {}))], num_tokens=9)}
    assert problems["scored-twice"].position == 4 and problems["scored-twice"].count == 1
    assert problems["not-scored"].position == 7 and problems["not-scored"].count == 2


def test_rescoring_after_adaptation_is_a_second_score():
    events = [score(1, [1.0] * 8), step(1, (0, 9)), score(1, [0.5] * 8)]
    (problem,) = check_ledgers([ledger(("ttt", events, {}))], num_tokens=9)
    assert problem.kind == "scored-twice" and problem.position == 1 and problem.count == 8


def test_each_eval_path_is_checked_on_its_own():
    # The sliding path scored everything, but the TTT path trains on tokens it has not scored yet.
    led = ledger(("sliding", [score(1, [1.0] * 8)], {}), ("ttt", [step(1, (0, 9)), score(1, [1.0] * 8)], {}))
    (problem,) = check_ledgers([led], num_tokens=9)
    assert problem.run == "ttt" and problem.kind == "unscored-read"


def test_steps_read_scores_of_other_ranks_before_the_same_step():
    # Rank 1 scores 5..8 before its step 1; rank 0's step 1 reads them: scored earlier, by another rank.
    r0 = ledger(("ttt", [score(1, [1.0] * 4), step(1, (0, 9))], {}), rank=0)
    r1 = ledger(("ttt", [score(5, [1.0] * 4), step(1, (0, 9))], {}), rank=1)
    assert check_ledgers([r0, r1], num_tokens=9) == []
    # Rank 1 scores them only after its step 1: rank 0's step 1 read unscored tokens.
    r1_late = ledger(("ttt", [step(1, (0, 9)), score(5, [1.0] * 4)], {}), rank=1)
    problems = check_ledgers([r0, r1_late], num_tokens=9)
    assert [(p.kind, p.rank, p.position) for p in problems] == [("unscored-read", 0, 5)]


def test_scope_limits_what_a_step_must_have_scored():
    # A per-document step reads a window reaching into an unscored document outside its scope.
    events = [score(1, [1.0] * 4), step(1, (0, 7), scope=[[1, 5]]), score(5, [1.0] * 4)]
    assert check_ledgers([ledger(("ttt_lora", events, {}))], num_tokens=9) == []
    events[1] = step(1, (0, 7), scope=[[1, 7]])
    (problem,) = check_ledgers([ledger(("ttt_lora", events, {}))], num_tokens=9)
    assert problem.position == 5 and problem.count == 2


def test_malformed_events_are_reported_not_raised():
    bad = ledger(("ttt", [{"score": [1, 3], "nll": [1.0]}, {"step": 1, "tokens": [[0, 2]], "scope": [[0, 1], [1, 2]]},
                          "junk"], {}))
    kinds = {p.kind for p in check_ledgers([bad, "not a ledger"], num_tokens=3)}
    assert "malformed" in kinds


def test_normalization_accepts_a_distribution_and_reports_one_summing_to_1_3():
    good = ledger(("sliding", [score(1, [1.0] * 8)], {"3": dist([0.25, 0.25, 0.5])}), samples=[3])
    assert check_normalization([good]) == []
    bad = ledger(("sliding", [score(1, [1.0] * 8)], {"3": dist([0.5, 0.5, 0.3])}), samples=[3])
    (problem,) = check_normalization([bad])
    assert problem.kind == "not-normalized" and problem.position == 3 and "1.3" in problem.message
    missing = ledger(("sliding", [score(1, [1.0] * 8)], {}), samples=[3])
    assert [p.kind for p in check_normalization([missing])] == ["missing-distribution"]
    nan = ledger(("sliding", [score(1, [1.0] * 8)], {"3": [float("nan"), 0.0]}), samples=[3])
    assert [p.kind for p in check_normalization([nan])] == ["not-normalized"]


def test_compare_nll_reports_the_first_position_that_differs():
    a = [ledger(("ttt", [score(1, [1.0, 2.0, 3.0, 4.0, 5.0])], {}))]
    same_prefix = [ledger(("ttt", [score(1, [1.0, 2.0, 3.0, 9.0, 9.0])], {}))]
    assert compare_nll(a, same_prefix, 3) == []  # positions 4 and 5 come after P
    moved = [ledger(("ttt", [score(1, [1.0, 2.0 + 1e-15, 3.5, 9.0, 9.0])], {}))]
    (problem,) = compare_nll(a, moved, 3)
    assert (problem.kind, problem.run, problem.position, problem.count) == ("nll-differs", "ttt", 2, 2)
    other = [ledger(("sliding", [score(1, [1.0] * 5)], {}))]
    assert {p.kind for p in compare_nll(a, other, 3)} == {"run-missing"}


def test_scored_nll_merges_ranks():
    r0 = ledger(("s", [score(1, [1.0, 2.0])], {}), rank=0)
    r1 = ledger(("s", [score(3, [3.0])], {}), rank=1)
    assert scored_nll([r0, r1]) == {"s": {1: 1.0, 2: 2.0, 3: 3.0}}


# ---------------------------------------------------------------- shards and variants

def test_shards_round_trip_with_the_runtime_reader(tmp_path):
    tokens = [1, 5, 1023, 0, 7] * 50
    write_shard(tmp_path / "fineweb_val_000000.bin", tokens)
    assert load_data_shard(tmp_path / "fineweb_val_000000.bin").tolist() == tokens
    assert read_shard(tmp_path / "fineweb_val_000000.bin") == tokens


def test_variants_keep_the_prefix_and_document_boundaries():
    tokens = [1, 10, 20, 30, 1, 40, 50, 3, 60, 1023]
    b = change_after(tokens, 4)
    assert b[:5] == tokens[:5] and len(b) == len(tokens)
    assert all(x != y for x, y in zip(b[5:], tokens[5:]) if y >= 4)
    assert [i for i, t in enumerate(b) if t < 4] == [i for i, t in enumerate(tokens) if t < 4]
    assert max(b) <= max(tokens)
    c = change_all(tokens, 6)
    assert len(c) == 6 and all(x != y for x, y in zip(c, tokens) if y >= 4)


def test_position_lies_inside_a_ttt_chunk():
    chunk = int(SMOKE_OVERRIDES["TTT_CHUNK_TOKENS"])
    for n in (31233, 20481, 8193, 40961, 1000):
        p = choose_position(n)
        assert 1 <= p < n - 1
        if n > 2 * chunk:
            assert 200 <= p % chunk <= chunk - 200 and p >= chunk


# ---------------------------------------------------------------- registry and reporting

def _result(statuses: dict) -> ProbeResult:
    probes = {}
    for pid, status in statuses.items():
        problems = [Problem("unscored-read", "step 1 reads unscored tokens", run="ttt", position=1, step=1)] \
            if status == "fail" else []
        probes[pid] = ProbeOutcome(pid, status, f"{pid} {status}", {"changed_after": 10}, problems)
    return ProbeResult("f", 1, 10, 20, 1.0, probes)


def test_four_registered_checks_report_only_with_a_probe_result(tmp_path):
    assert all(pid in REGISTRY and REGISTRY[pid].severity == "error" for pid in PROBE_IDS)
    text = (ROOT / "docs" / "checks.md").read_text(encoding="utf-8")
    assert all(f"`{pid}`" in text for pid in PROBE_IDS)

    class Bare:  # an analysis without a probe result: the probe checks say nothing
        profile = "strict"
    assert run_checks(Bare(), PROBE_IDS) == []


def test_probe_result_becomes_findings_and_skips():
    result = _result({"probe.causality": "fail", "probe.ledger": "pass", "probe.normalization": "skipped",
                      "probe.isolation": "error"})
    findings, skipped = result.findings("strict")
    by = {(f.check, f.severity) for f in findings}
    assert by == {("probe.causality", "error"), ("probe.ledger", "info"), ("probe.isolation", "error")}
    (fail,) = [f for f in findings if f.check == "probe.causality"]
    assert fail.evidence["position"] == 1 and fail.evidence["step"] == 1 and fail.evidence["run"] == "ttt"
    assert skipped == [{"check": "probe.normalization", "reason": "probe.normalization skipped"}]
    legacy, _ = result.findings("legacy")
    assert {f.severity for f in legacy if f.check == "probe.isolation"} == {"warning"}

    class Analysis:  # the registry path: a probe result attached to the analysis
        profile = "strict"
        probe = result

        def __init__(self):
            self.skipped = []

        def skip(self, check, reason):
            self.skipped.append({"check": check, "reason": reason})
    a = Analysis()
    assert {(f.check, f.severity) for f in run_checks(a, PROBE_IDS)} == by and a.skipped == skipped


# ---------------------------------------------------------------- the probe suite on rendered scripts

@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    records = tmp_path_factory.mktemp("probe_records")
    out = {}
    for p in sorted((ROOT / "recipes").glob("*.yaml")):
        result = CliRunner().invoke(pack, [str(p), "--records", str(records)])
        assert result.exit_code == 0, result.output
        out[p.stem] = Path(result.output.split(":")[0])
    return out


def probe(folder: Path, tiny: Path, **kwargs) -> ProbeResult:
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    kwargs.setdefault("timeout", 240)
    result = run_probes(folder, data_path=tiny / "datasets" / "fineweb10B_sp1024",
                        tokenizer_path=tiny / "tokenizers" / "fineweb_1024_bpe.model", **kwargs)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before, "the folder was modified"
    return result


def statuses(result: ProbeResult) -> dict[str, str]:
    return {pid: p.status for pid, p in result.probes.items()}


def explain(result: ProbeResult) -> str:
    return "\n".join(f"{pid}: {p.status}: {p.message}" for pid, p in result.probes.items())


def patched(rendered_folder: Path, tmp_path: Path, old: str, new: str) -> Path:
    import shutil

    folder = tmp_path / "track_10min_16mb" / f"{rendered_folder.name}_leaky"
    shutil.copytree(rendered_folder, folder)
    script, readable = folder / "train_gpt.py", folder / "train_gpt_readable.py"
    text = (readable if readable.exists() else script).read_text()  # a wrapped script: patch its readable twin
    assert text.count(old) == 1, old
    script.write_text(text.replace(old, new))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("recipe", LEGAL)
def test_legal_recipes_pass_all_four_probes(recipe, rendered, tiny_data):
    # Score-first TTT runs on two gloo ranks: its steps are collective, each rank's step reads the other
    # rank's windows of the chunk.
    nproc = 2 if recipe == "legal_score_first_ttt" else 1
    result = probe(rendered[recipe], tiny_data, nproc=nproc)
    assert result.passed, explain(result)
    assert set(result.probes) == set(PROBE_IDS) and result.seconds < SUITE_LIMIT_S
    assert set(result.runs) == {"A", "B", "C"} and result.runs["A"].artifacts == result.runs["C"].artifacts
    assert all(len(r.ledgers) == nproc for r in result.runs.values())
    paths = result.probes["probe.causality"].evidence["eval_paths"]
    # The final evaluations each record ran (eval.passes), in its order.
    expected = {"naive_baseline": ["roundtrip"], "qat_bigramhash12k_stride32": ["sliding"],
                "two_phase_ttt": ["ttt_two_phase"], "legal_score_first_ttt": ["roundtrip", "ttt_chunked"],
                "lora_ttt_swiglu_1xh100": ["roundtrip", "ttt_lora_chunks"]}[recipe]
    assert paths == expected
    assert result.probes["probe.normalization"].evidence["distributions"] >= len(paths)
    if "ttt" in recipe:
        assert result.probes["probe.ledger"].evidence["steps"] > 0


@pytest.mark.slow
def test_pre_eval_ttt_fails_causality_and_ledger_at_position_one(rendered, tiny_data):
    folder = rendered["illegal_pre_eval_ttt"]
    result = probe(folder, tiny_data)
    assert statuses(result) == {"probe.causality": "fail", "probe.ledger": "fail", "probe.normalization": "pass",
                                "probe.isolation": "pass"}, explain(result)
    causal = result.probes["probe.causality"].first
    assert (causal.run, causal.position) == ("ttt_pre_eval", 1) and causal.position <= result.position
    problems = {(p.kind, p.run, p.step, p.position) for p in result.probes["probe.ledger"].problems}
    assert ("unscored-read", "ttt_pre_eval", 1, 1) in problems
    # As submitted, its windows also score the last tokens of the split again (eval.windows: records_all).
    assert {kind for kind, *_ in problems} == {"unscored-read", "scored-twice"}
    # Through the report, as golf-verify --probe shows it.
    report = verify_folder(folder)
    result.add_to(report)
    errors = {f.check: f for f in report.findings if f.severity == "error" and f.check.startswith("probe.")}
    assert set(errors) == {"probe.causality", "probe.ledger"} and report.exit_code == 1
    assert errors["probe.causality"].evidence["position"] == 1


SCORE_FIRST = """        score_windows(model, wins, val_tokens, luts, device, sums, args.ttt_batch_seqs, eval_window(args)[0], ledger)
        if ci < len(groups) - 1:
            steps += train_chunk(ci, len(groups), ci * size, min((ci + 1) * size, total))
"""
TRAIN_FIRST = """        if ci < len(groups) - 1:
            steps += train_chunk(ci, len(groups), ci * size, min((ci + 1) * size, total))
        score_windows(model, wins, val_tokens, luts, device, sums, args.ttt_batch_seqs, eval_window(args)[0], ledger)
"""


@pytest.mark.slow
def test_chunked_ttt_that_trains_before_scoring_fails(rendered, tiny_data, tmp_path):
    folder = patched(rendered["legal_score_first_ttt"], tmp_path, SCORE_FIRST, TRAIN_FIRST)
    result = probe(folder, tiny_data)
    assert statuses(result) == {"probe.causality": "fail", "probe.ledger": "fail", "probe.normalization": "pass",
                                "probe.isolation": "pass"}, explain(result)
    chunk = int(SMOKE_OVERRIDES["TTT_CHUNK_TOKENS"])
    causal = result.probes["probe.causality"].first
    # Only P's own chunk was trained on tokens after P before being scored.
    assert causal.run == "ttt_chunked" and causal.position // chunk == result.position // chunk
    led = result.probes["probe.ledger"].first
    assert (led.run, led.step, led.position) == ("ttt_chunked", 1, 1)


@pytest.mark.slow
def test_training_on_validation_shards_fails_isolation(rendered, tiny_data, tmp_path):
    folder = patched(rendered["naive_baseline"], tmp_path, 'train_files = os.path.join(args.data_path, "fineweb_train_*.bin")',
                     'train_files = os.path.join(args.data_path, "fineweb_val_*.bin")')
    result = probe(folder, tiny_data)
    assert statuses(result) == {"probe.causality": "pass", "probe.ledger": "pass", "probe.normalization": "pass",
                                "probe.isolation": "fail"}, explain(result)
    iso = result.probes["probe.isolation"]
    assert iso.evidence["changed_by"] == ["C"] and "A2" in result.runs  # determinism confirmed by a repeat


@pytest.mark.slow
def test_a_script_that_fails_is_an_error_not_a_pass(rendered, tiny_data, tmp_path):
    folder = patched(rendered["naive_baseline"], tmp_path, "def main() -> None:\n",
                     "def main() -> None:\n    raise SystemExit(3)\n")
    result = probe(folder, tiny_data, timeout=120, workdir=tmp_path / "work")
    assert set(statuses(result).values()) == {"error"} and not result.passed
    assert "exited with code" in result.probes["probe.ledger"].message
    findings, _ = result.findings("strict")
    assert {f.severity for f in findings} == {"error"}
    (kept,) = (tmp_path / "work").iterdir()  # workdir keeps each run's copy and output
    assert (kept / "A" / "record" / "train_gpt.py").is_file() and (kept / "A" / "stderr.txt").is_file()


@pytest.mark.slow
def test_a_script_that_hangs_is_stopped_at_the_time_limit(rendered, tiny_data, tmp_path):
    folder = patched(rendered["naive_baseline"], tmp_path, "def main() -> None:\n",
                     "def main() -> None:\n    time.sleep(600)\n")
    work = tmp_path / "work"
    result = probe(folder, tiny_data, timeout=6, workdir=work)
    assert set(statuses(result).values()) == {"error"} and "timed out after 6s" in result.probes["probe.causality"].message
    assert all(r.timed_out for r in result.runs.values()) and result.seconds < 60
    # torchrun starts each rank in a session of its own: none may outlive the limit
    assert not [p for p in Path("/proc").glob("[0-9]*/cwd") if _cwd(p).startswith(str(work.resolve()))]


def _cwd(link: Path) -> str:
    try:
        return str(link.readlink())
    except OSError:
        return ""


def test_usage_errors_raise(tmp_path):
    with pytest.raises(ValueError):
        run_probes(tmp_path / "missing")
    with pytest.raises(ValueError):
        run_probes(tmp_path, data_path=tmp_path)
    result = run_probes(tmp_path)  # no train_gpt.py: every probe is an error, nothing ran
    assert set(statuses(result).values()) == {"error"} and not result.runs
