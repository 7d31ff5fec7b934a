"""The legality checks on small fixture scripts (tests/verifier/fixtures/legality): each illegal pattern
is found with its check id and severity, its legal twin is clean; the logs decide whether a flagged
path ran; the real records each detector fires on are in test_verifier_corpus.py."""

from __future__ import annotations

import base64
import lzma

import pytest

from verifier import verify_folder
from verifier_builders import (SP8192_TOKENS, early_log, fixture_script, later_log, submission, three_seed_record)

LEGALITY = ("ttt.", "legal.", "eval.", "code.syntax")


def legality(report) -> list[tuple[str, str]]:
    return sorted((f.check, f.severity) for f in report.findings if f.check.startswith(LEGALITY))


def folder_with(record, code: str, name: str, logs: dict | None = None, extra: dict | None = None):
    files = three_seed_record(code_len=len(code.encode()), extra_files={"train_gpt.py": code, **(extra or {})})
    files.update(logs or {})
    return record(files, name=name)


@pytest.mark.parametrize("illegal,legal,expected", [
    ("pre_eval_ttt", "score_first_ttt", [("ttt.static", "error")]),
    ("minified_pre_eval", "score_first_ttt", [("ttt.static", "error")]),
    ("next_chunk_ttt", "score_first_ttt", [("ttt.static", "error")]),
    ("dispatch_pre_eval", "dispatch_score_first", [("ttt.static", "error")]),
    ("split_dict_pre_eval", "split_dict_train", [("ttt.static", "error")]),
    ("tuple_split_pre_eval", "tuple_split_train", [("ttt.static", "error")]),
    ("slot", "sliding_eval", [("legal.slot", "error")]),
    ("slot_context", "sliding_eval", [("legal.slot", "warning")]),
    ("ngram_cache", "ngram_tilt", [("legal.mixture", "error"), ("legal.ngram-target", "error")]),
    ("mixture_ratio", "mixture_full", [("legal.mixture", "warning")]),
    ("rescore", "score_first_ttt", [("legal.rescore", "error")]),
    ("val_calibration", "train_calibration", [("legal.val-calibration", "error")]),
    ("warmup_val", "warmup_random", [("legal.warmup", "warning")]),
])
def test_each_pattern_and_its_legal_twin(record, illegal, legal, expected):
    bad = verify_folder(folder_with(record, fixture_script(illegal), f"2026-05-01_{illegal}"))
    assert legality(bad) == expected
    good = verify_folder(folder_with(record, fixture_script(legal), f"2026-05-01_{legal}_{illegal}"))
    assert legality(good) == []


def test_findings_name_the_function_the_path_and_what_the_logs_say(record):
    report = verify_folder(folder_with(record, fixture_script("pre_eval_ttt"), "2026-05-01_P"))
    (f,) = report.by_check("ttt.static")
    assert f.file == "train_gpt.py" and f.line is not None and f.evidence["function"] == "run_epoch"
    assert f.evidence["path"][:3] == ["run_epoch", "adapt", "main"] and "epochs" in f.message
    assert "the logs do not show it switched off" in f.message and "score-first" in f.hint


def test_a_path_switched_off_in_the_logs_is_only_a_warning(record):
    code = fixture_script("pre_eval_ttt")
    off = {f"train_seed{s}.log": "Hyperparameters:\n  ttt_enabled: False\n" + early_log(seed=s, val_bpb=b,
           val_loss=b / 0.592257, code=len(code.encode())) for s, b in ((42, 1.2010), (1337, 1.2030), (2024, 1.2020))}
    (f,) = verify_folder(folder_with(record, code, "2026-05-01_Off", logs=off)).by_check("ttt.static")
    assert f.severity == "warning" and "dormant: ttt_enabled: False in every seed log" in f.message
    on = {k: v.replace("ttt_enabled: False", "ttt_enabled: True") for k, v in off.items()}
    (g,) = verify_folder(folder_with(record, code, "2026-05-01_On", logs=on)).by_check("ttt.static")
    assert g.severity == "error" and "it ran: ttt_enabled: True" in g.message
    default_off = code.replace('"TTT_ENABLED", "1"', '"TTT_ENABLED", "0"')
    (h,) = verify_folder(folder_with(record, default_off, "2026-05-01_Default")).by_check("ttt.static")
    assert h.severity == "warning" and "off by default" in h.message
    readme = {"README.md": "Run:\n\n    TTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n"}
    (i,) = verify_folder(folder_with(record, default_off, "2026-05-01_Readme", extra=readme)).by_check("ttt.static")
    assert i.severity == "error" and "sets TTT_ENABLED=1" in i.message
    printing = default_off.replace("def run_epoch(model, opt, toks, seq_len):\n",
                                   "def run_epoch(model, opt, toks, seq_len):\n    print('ttt_epoch:start')\n")
    logs = {"train_seed42.log": "ttt_epoch:start\n" + early_log(seed=42, val_bpb=1.20101234,
                                                                 val_loss=1.20101234 / 0.592257,
                                                                 code=len(printing.encode()))}
    (j,) = verify_folder(folder_with(record, printing, "2026-05-01_Prints", logs=logs)).by_check("ttt.static")
    assert j.severity == "error" and "the logs hold the lines it prints (ttt_epoch:...)" in j.message


def test_a_self_extracting_script_is_read_and_located_in_its_payload(record):
    source = fixture_script("slot")
    blob = base64.b85encode(lzma.compress(source.encode(), format=lzma.FORMAT_RAW,
                                          filters=[{"id": lzma.FILTER_LZMA2}])).decode()
    wrapped = (f'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("{blob}"),format=L.FORMAT_RAW,'
               f'filters=[{{"id":L.FILTER_LZMA2}}]))\n')
    (f,) = verify_folder(folder_with(record, wrapped, "2026-05-01_Wrapped")).by_check("legal.slot")
    payload_line = next(i for i, ln in enumerate(source.splitlines(), 1) if "slot_loss.backward()" in ln)
    assert f.line is None and f.evidence["payload_line"] == payload_line
    assert f"line {payload_line} of the decoded lzma_b85 payload" in f.message


def test_an_unreadable_script_fails_closed(record):
    report = verify_folder(folder_with(record, "import torch\ndef broken(:\n    pass\n", "2026-05-01_Broken"))
    (f,) = report.by_check("code.syntax")
    assert f.severity == "error" and f.line == 2 and "not checked" in f.message
    skipped = {s["check"] for s in report.skipped}
    assert {"ttt.static", "legal.slot", "legal.rescore"} <= skipped and report.verdict == "fail"


def test_partial_validation_in_the_logs(record):
    code = fixture_script("sliding_eval")
    logs = {}
    for seed, bpb in ((42, 1.2010), (1337, 1.2030), (7, 1.2020)):
        log = early_log(seed=seed, val_bpb=bpb, val_loss=bpb / 0.592257, code=len(code.encode()))
        logs[f"train_seed{seed}.log"] = log.replace("final_int8", "  eval: 100 batches (limited)\nfinal_int8", 1)
    report = verify_folder(folder_with(record, code, "2026-05-01_Partial", logs=logs))
    assert [f.severity for f in report.by_check("legal.partial-val")] == ["error"] * 3
    nonrecord = verify_folder(record(dict(three_seed_record(code_len=len(code.encode()),
                                                            extra_files={"train_gpt.py": code}), **logs),
                                     name="2026-05-01_NR", track="track_non_record_16mb"))
    assert {f.severity for f in nonrecord.by_check("legal.partial-val")} == {"warning"}


CASEOPS_LOG = ("Hyperparameters:\n  datasets_dir: ./data/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved\n"
               "  tokenizer_path: ./data/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model\n"
               "train_shards: {shards}\nval_tokens: 47851520\n")

PREP = '''import argparse, json, pathlib
SHARD_TOKENS = 10_000_000

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", required=True)
    ap.add_argument("--val-docs", type=int, default={default})
    args = ap.parse_args()
    for i, line in enumerate(open(args.docs)):
        split = "val" if i < args.val_docs else "train"
        write_shard(pathlib.Path(f"fineweb_{{split}}_{{i:06d}}.bin"), json.loads(line))
'''


def test_train_val_overlap_from_the_logs_and_the_data_preparation_script(record):
    code = fixture_script("sliding_eval")

    def folder(shards, default, name):
        logs = {"train_seed42.log": CASEOPS_LOG.format(shards=shards) + later_log(seed=42, val_tokens=47851520)}
        return verify_folder(folder_with(record, code, name, logs=logs,
                                         extra={"prepare_data.py": PREP.format(default=default)}))

    leak = folder(1499, 10_000, "2026-05-01_Leak")
    found = {(f.file, f.severity) for f in leak.by_check("legal.train-val-overlap")}
    assert found == {("train_seed42.log", "error"), ("prepare_data.py", "warning")}
    canonical = folder(80, 10_000, "2026-05-01_Canon")
    (w,) = canonical.by_check("legal.train-val-overlap")
    assert w.severity == "warning" and w.evidence["logged_train_shards"][-1] == 80 and "10,000-49,999" in w.message
    assert folder(80, 50_000, "2026-05-01_Clean").by_check("legal.train-val-overlap") == []


def test_log_warmup_without_a_statement(record):
    files = {"train_seed42.log": later_log(warmup_note=""), "submission.json": submission(val_bpb=1.07134229)}
    report = verify_folder(record(files))
    (f,) = [f for f in report.by_check("legal.warmup") if f.evidence.get("kind") == "warmup-unlabelled"]
    assert f.file == "train_seed42.log" and f.severity == "warning"
    clean = verify_folder(record({"train_seed42.log": later_log(), "submission.json": submission(val_bpb=1.07134229)},
                                 name="2026-05-02_C"))
    assert clean.by_check("legal.warmup") == []
    assert later_log(val_tokens=SP8192_TOKENS)  # the builder's default validation count is the canonical one


NETWORK = '''
import os
import requests
from huggingface_hub import hf_hub_download

def fetch():
    os.system("wget https://example.invalid/data.bin")
    return hf_hub_download("repo", "file")

def eval_with_calibration(model, args):
    loader = DistributedTokenLoader(args.train_files, 0, 1, "cpu")
    return loader
'''


def test_network_and_training_data_in_evaluation(record):
    report = verify_folder(folder_with(record, fixture_script("sliding_eval") + NETWORK, "2026-05-01_Net"))
    kinds = sorted(f.evidence["kind"] for f in report.by_check("eval.network"))
    assert kinds == ["network", "network", "network", "shell"] and {f.severity for f in report.by_check("eval.network")} == {
        "warning"}
    (t,) = report.by_check("eval.train-data")
    assert t.evidence["function"] == "eval_with_calibration"
    quiet = "# import requests\nraise RuntimeError('zstandard missing: pip install zstandard')\n"
    assert verify_folder(folder_with(record, fixture_script("sliding_eval") + quiet, "2026-05-01_Q")).by_check(
        "eval.network") == []
