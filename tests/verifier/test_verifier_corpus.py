"""Every public record in ../shared/upstream-records: no exception, findings pinned in golden files.

Update the golden files only on purpose: GOLF_UPDATE_GOLDEN=1 python -m pytest tests/verifier -k corpus"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from verifier_builders import corpus_folders

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("GOLF_UPDATE_GOLDEN") == "1"


def golden_name(key: str) -> str:
    track, folder = key.split("/", 1)
    return re.sub(r"[^A-Za-z0-9._-]", "_", f"{track}__{folder}") + ".json"


def snapshot(report) -> dict:
    d = report.to_dict()
    return {
        "folder": d["folder"],
        "verdict": d["verdict"],
        "profile": d["profile"],
        "track": d["track"],
        "counts": d["counts"],
        "runs": [{"seed": r["seed"], "log": r["log"], "val_bpb": r["val_bpb"]} for r in d["summary"]["runs"]],
        "findings": [{"check": f["check"], "severity": f["severity"], "file": f["file"], "line": f["line"],
                      "evidence": f["evidence"]} for f in d["findings"]],
        "skipped": sorted({s["check"] for s in d["skipped"]}),
    }


def test_every_folder_verifies_and_matches_its_golden_file(corpus_reports):
    assert len(corpus_reports) >= 60
    mismatched, written = [], []
    for key, report in sorted(corpus_reports.items()):
        assert not report.by_check("verifier.internal"), (key, [f.message for f in report.by_check("verifier.internal")])
        snap = snapshot(report)
        text = json.dumps(snap, indent=1, sort_keys=True) + "\n"
        assert "/work/" not in text and not re.search(r'"/(?:tmp|home|root)/', text), "absolute path in a golden file"
        path = GOLDEN / golden_name(key)
        if UPDATE:
            GOLDEN.mkdir(exist_ok=True)
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
                written.append(path.name)
            continue
        if not path.exists():
            mismatched.append(f"{key}: no golden file (run with GOLF_UPDATE_GOLDEN=1)")
            continue
        expected = json.loads(path.read_text(encoding="utf-8"))
        if expected != json.loads(text):
            mismatched.append(key)
    if UPDATE and written:
        print(f"updated {len(written)} golden file(s)")
    assert not mismatched, "golden mismatch (update on purpose with GOLF_UPDATE_GOLDEN=1): " + ", ".join(mismatched)


def test_no_orphan_golden_files(corpus):
    expected = {golden_name(f"{p.parent.name}/{p.name}") for p in corpus_folders()}
    present = {p.name for p in GOLDEN.glob("*.json")}
    assert present <= expected, sorted(present - expected)


def _one(report, check, **evidence):
    found = [f for f in report.by_check(check) if all(f.evidence.get(k) == v for k, v in evidence.items())]
    assert found, (check, evidence, [(f.check, f.evidence) for f in report.findings])
    return found[0]


def test_reported_score_is_one_seed_not_the_mean(corpus_reports):
    rep = corpus_reports["track_10min_16mb/2026-03-18_LongContextSeq2048"]
    f = _one(rep, "score.mean", matches_log="train.log")
    assert f.severity == "error" and f.evidence["n_logs"] == 3
    assert f.evidence["val_bpb"] == pytest.approx(1.20576485)
    assert f.evidence["log_mean"] == pytest.approx((1.20576485 + 1.20617460 + 1.20715923) / 3, abs=1e-8)


def test_bytes_code_against_the_shipped_script(corpus_reports):
    rep = corpus_reports["track_10min_16mb/2026-03-18_LowerLR"]
    f = _one(rep, "size.code-bytes", bytes_code=50919)
    assert f.evidence["script_bytes"] == 47642 and f.file == "submission.json"
    g = _one(rep, "code.provenance", logged_code_bytes=50919)
    assert g.evidence["script_bytes"] == 47642 and g.file == "train.log"


def test_printed_seed_contradicts_the_file_name(corpus_reports):
    rep = corpus_reports["track_non_record_16mb/2026-04-30_Random_Linear_Adapter"]
    found = {f.file: f.evidence for f in rep.by_check("seed.mismatch")}
    assert found["train_seed_2026.txt"] == {"filename_seed": 2026, "printed_seed": 1337}
    assert found["train_seed_42.txt"] == {"filename_seed": 42, "printed_seed": 1337}
    rep = corpus_reports["track_10min_16mb/2026-04-18_PR1626_CaseOps_Taper"]
    assert _one(rep, "seed.mismatch", filename_seed=0, printed_seed=1337).file == "train_seed0.log"
    rep = corpus_reports["track_non_record_16mb/2026-04-04_GDN_Hybrid_LongContext"]
    assert _one(rep, "seed.mismatch", json_seed=1341, printed_seed=1342).severity == "error"


def test_other_known_problems_are_found(corpus_reports):
    cap = corpus_reports["track_10min_16mb/2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence"]
    assert {f.file for f in cap.by_check("size.artifact-cap")} >= {"train_seed42.log", "train_seed3141.log"}
    units = corpus_reports["track_10min_16mb/2026-03-20_10L_Int5MLP_MuonWD04_SWA50"]
    assert _one(units, "score.units").severity == "error"
    assert "rounded" in _one(units, "size.total-bytes").message
    e2e = corpus_reports["track_10min_16mb/2026-04-13_VarLenAttn_PhasingTTT2000"]
    f = _one(e2e, "time.eval", method="timestamps")
    assert f.evidence["end_to_end_s"] > 700 and f.evidence["script_eval_s"] < 520
    wrapped = corpus_reports["track_10min_16mb/2026-04-04_SP4096_DepthRecurrence_ParallelResid_MuonEqR"]
    assert _one(wrapped, "code.lines", wrapper="lzma_b85").evidence["lines"] == 1967
    dg = corpus_reports["track_non_record_16mb/2026-03-23_DGAttention_DavidGao"]
    assert "before quantization" in _one(dg, "score.missing").message
    gptq = corpus_reports["track_10min_16mb/2026-04-29_SmearGateBOSFix_3Seed_1.06141"]
    assert all(f.severity == "warning" for f in gptq.by_check("time.train")) and gptq.by_check("time.train")
    clean = corpus_reports["track_10min_16mb/2026-04-06_SP8192_QK5_LegalTTT_1.0828"]
    assert clean.verdict == "pass" and clean.counts["error"] == 0


def test_tokens_and_ratios_pinned_from_the_corpus(corpus_reports):
    from verifier.analysis import load_canonical

    canonical = load_canonical()["tokenizers"]
    runs = [r for rep in corpus_reports.values() for r in rep.summary["runs"]]
    assert len(runs) > 100
    for key in ("track_10min_16mb/2026-04-14_MultiPhaseGlobalSGD_PhasedTTT",
                "track_10min_16mb/2026-03-25_ValCalib_GPTQ_XSA_BigramHash3072",
                "track_10min_16mb/2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT"):
        rep = corpus_reports[key]
        ratio = rep.summary["bpb_per_nat"]
        assert any(abs(ratio / e["bpb_per_nat"] - 1) < 1e-4 for e in canonical.values()), (key, ratio)
        assert rep.by_check("data.val-tokens") == []
