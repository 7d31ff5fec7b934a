"""verifier.stats against SciPy on known numbers, the seed planner, policies and the check."""

from __future__ import annotations

import json
import math

import pytest

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")

from verifier import verify_folder  # noqa: E402
from verifier.stats import (available_policies, betainc, bpb_to_nats, load_policy, nats_to_bpb, one_sample,  # noqa: E402
                            plan_seeds, t_sf, welch_one_sided)
from verifier_builders import SP1024_RATIO, three_seed_record  # noqa: E402

# Per-seed val_loss of two public records (exact logs of 2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072 and
# 2026-03-23_LeakyReLU_LegalTTT_ParallelMuon); the former's submission quotes Welch df = 3.3063.
NEW = [1.88276292, 1.88156874, 1.88220393]
OLD = [1.88976776, 1.88919190, 1.89110239]


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (1.65, 0.5, 0.01), (30.0, 0.5, 0.999),
                                   (0.7, 3.2, 0.5), (100.0, 0.5, 0.98), (5.0, 5.0, 1e-6)])
def test_betainc_matches_scipy(a, b, x):
    assert betainc(a, b, x) == pytest.approx(float(scipy_special.betainc(a, b, x)), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("t", [-30.0, -4.2, -1.0, -0.1, 0.0, 0.3, 1.96, 4.288, 12.5, 80.0])
@pytest.mark.parametrize("df", [1.0, 2.0, 3.3063, 4.0, 9.5, 30.0, 250.0])
def test_t_sf_matches_scipy(t, df):
    assert t_sf(t, df) == pytest.approx(float(scipy_stats.t.sf(t, df)), rel=1e-8, abs=1e-15)


def test_welch_matches_scipy_on_published_records():
    r = welch_one_sided(NEW, OLD, margin=0.005)
    shifted = [x - 0.005 for x in OLD]
    ref = scipy_stats.ttest_ind(NEW, shifted, equal_var=False, alternative="less")
    assert r.p == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert -r.t == pytest.approx(float(ref.statistic), rel=1e-9)
    assert r.df == pytest.approx(3.3063, abs=1e-4)  # the figure the record's own submission.json quotes
    assert r.improvement == pytest.approx(0.00784215, abs=1e-8)
    assert r.p < 0.01
    no_margin = welch_one_sided(NEW, OLD, margin=0.0)
    assert no_margin.t == pytest.approx(11.8339, abs=1e-3)  # |t| quoted by the same submission


@pytest.mark.parametrize("new,ref,margin", [
    ([2.01, 2.03, 2.02, 2.04], [2.05, 2.06], 0.005),
    ([1.0, 1.1], [1.3, 1.2, 1.25, 1.4, 1.33], 0.05),
    ([3.0, 3.01, 2.99], [3.0, 3.02, 2.98], 0.0),
])
def test_welch_random_cases(new, ref, margin):
    r = welch_one_sided(new, ref, margin)
    expected = scipy_stats.ttest_ind(new, [x - margin for x in ref], equal_var=False, alternative="less")
    assert r.p == pytest.approx(float(expected.pvalue), rel=1e-8)


def test_one_sample_matches_scipy():
    r = one_sample(NEW, 1.89002068, margin=0.005)
    expected = scipy_stats.ttest_1samp(NEW, 1.89002068 - 0.005, alternative="less")
    assert r.p == pytest.approx(float(expected.pvalue), rel=1e-9) and r.df == 2
    with pytest.raises(ValueError):
        one_sample([1.0], 2.0)
    with pytest.raises(ValueError):
        welch_one_sided([1.0, 2.0], [1.0])


def test_zero_spread_is_decided_by_the_means():
    assert welch_one_sided([1.0, 1.0], [2.0, 2.0], 0.005).p == 0.0
    assert welch_one_sided([2.0, 2.0], [1.0, 1.0], 0.005).p == 1.0


def test_seed_planner_gives_the_smallest_sufficient_n():
    new, ref = [2.0000, 2.0030, 1.9970], [2.0100, 2.0120, 2.0080]
    n = plan_seeds(new, ref, margin=0.005, alpha=0.01)
    assert n is not None and n > 3

    def p_with(k):
        # k seeds with the same mean and sample sd as `new`
        m, s = sum(new) / 3, math.sqrt(sum((x - sum(new) / 3) ** 2 for x in new) / 2)
        v1, v2 = s * s / k, (0.002 ** 2) / 3
        df = (v1 + v2) ** 2 / (v1 * v1 / (k - 1) + v2 * v2 / 2)
        return float(scipy_stats.t.sf((sum(ref) / 3 - 0.005 - m) / math.sqrt(v1 + v2), df))
    assert p_with(n) < 0.01 <= p_with(n - 1)
    assert plan_seeds([2.0, 2.01], [2.0, 2.01], margin=0.005) is None  # no improvement: no n helps
    assert plan_seeds([2.0, 2.002], reference=2.02, margin=0.005, alpha=0.01) >= 2


def test_nats_bpb_roundtrip():
    assert nats_to_bpb(0.005, SP1024_RATIO) == pytest.approx(0.00296, abs=1e-5)
    assert bpb_to_nats(nats_to_bpb(2.07269931, SP1024_RATIO), SP1024_RATIO) == pytest.approx(2.07269931)


def test_policies_are_versioned_data(tmp_path):
    assert {"readme-2026-03", "leaderboard-2026-04"} <= set(available_policies())
    readme, board = load_policy("readme-2026-03"), load_policy("leaderboard-2026-04")
    assert (readme.alpha, readme.margin_nats, readme.min_seeds) == (0.01, 0.005, 3)
    assert board.alpha == 0.25 and board.margin_nats == 0.0 and "#1900" in board.source and "#2146" in board.source
    assert (readme.code_counted, board.code_counted) == ("shipped", "as-logged")
    custom = tmp_path / "p.json"
    custom.write_text(json.dumps({"id": "mine", "version": 2, "alpha": 0.05, "margin_nats": 0.001}))
    assert load_policy(str(custom)).alpha == 0.05
    custom.write_text(json.dumps({"id": "bad", "version": 1, "alpha": 2, "margin_nats": 0.001}))
    with pytest.raises(ValueError):
        load_policy(str(custom))
    with pytest.raises(ValueError):
        load_policy("no-such-policy")


def test_significance_check_against_a_number_and_a_folder(record):
    files = three_seed_record(bpbs=(1.20001234, 1.20021234, 1.20011234))
    new_folder = record(files)
    ok = verify_folder(new_folder, sota_loss=2.05)
    (f,) = ok.by_check("stats.significance")
    assert f.severity == "info" and f.evidence["p"] < 0.01 and ok.significance["method"] == "one-sample"
    close = verify_folder(new_folder, sota_loss=2.0310)
    (g,) = close.by_check("stats.significance")
    assert g.severity == "error" and "not < 0.01" in g.message
    lenient = verify_folder(new_folder, sota_loss=2.0310, policy="leaderboard-2026-04")
    assert lenient.policy["id"] == "leaderboard-2026-04"
    (k,) = lenient.by_check("stats.significance")
    assert k.severity == "info" and k.evidence["margin"] == 0.0  # practice: any improvement at p < 0.25
    old = record(three_seed_record(bpbs=(1.21001234, 1.21051234, 1.21101234)), name="2026-04-01_Old")
    welch = verify_folder(new_folder, against=old)
    (h,) = welch.by_check("stats.significance")
    assert welch.significance["method"] == "welch" and welch.significance["unit"] == "nats"
    assert h.severity == "info" and h.evidence["n_ref"] == 3
    bpb = verify_folder(new_folder, sota_bpb=1.2150)
    assert bpb.significance["comparison_source"] == "sota-bpb"
    skipped = verify_folder(new_folder)
    assert any(s["check"] == "stats.significance" for s in skipped.skipped)
