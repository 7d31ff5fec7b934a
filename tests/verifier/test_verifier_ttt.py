"""ttt.static: red flags found in a script's syntax tree (never executed) and in logs."""

from __future__ import annotations

from verifier import verify_folder
from verifier.checks.ttt import analyse_source
from verifier_builders import later_log, submission, three_seed_record

LEGAL_SCORE_FIRST = '''
import torch

def eval_val_ttt(model, val_tokens, opt, chunk, n):
    total = 0.0
    for ci in range(n):
        x = val_tokens[ci * chunk:(ci + 1) * chunk]
        with torch.inference_mode():
            total += model(x).item()
        if ci == n - 1:
            break
        loss = model(x)
        loss.backward()
        opt.step()
    return total


def train(model, loader, val_tokens, opt):
    for step in range(100):
        loss = model(next(loader))
        loss.backward()
        opt.step()
        if step % 10 == 0:
            eval_val(model, val_tokens)
'''

PRE_EVAL_TTT = '''
def pre_eval_ttt(model, val_tokens, opt, epochs, n):
    for epoch in range(epochs):
        for ci in range(n):
            x = val_tokens[ci:ci + 2048]
            loss = model(x)
            loss.backward()
            opt.step()
    return eval_val(model, val_tokens)
'''

SINGLE_PASS_TRAIN_THEN_SCORE = '''
def adapt(model, val_tokens, opt, n):
    for ci in range(n):
        x = val_tokens[ci:ci + 2048]
        model(x).backward()
        opt.step()
'''

WARMUP_ON_VAL = '''
def warmup_compile(model, val_tokens):
    for _ in range(3):
        model(val_tokens[:128]).backward()
'''

NETWORK = '''
import os
import requests
from huggingface_hub import hf_hub_download

def fetch():
    os.system("wget https://example.invalid/data.bin")
    return hf_hub_download("repo", "file")
'''

TRAIN_DATA_IN_EVAL = '''
def eval_with_calibration(model, args):
    loader = DistributedTokenLoader(args.train_files, 0, 1, "cpu")
    return loader
'''


def kinds(text):
    flags, problem = analyse_source(text)
    assert problem is None
    return sorted(f["kind"] for f in flags)


def test_score_first_ttt_and_periodic_validation_are_clean():
    assert kinds(LEGAL_SCORE_FIRST) == []


def test_multi_epoch_training_on_validation_before_scoring():
    flags, _ = analyse_source(PRE_EVAL_TTT)
    assert [f["kind"] for f in flags] == ["multi-epoch-val-training"]
    assert flags[0]["function"] == "pre_eval_ttt" and flags[0]["line"] == 7


def test_training_on_validation_without_scoring():
    assert kinds(SINGLE_PASS_TRAIN_THEN_SCORE) == ["val-training-before-scoring"]


def test_compile_warmup_on_validation_tokens():
    assert kinds(WARMUP_ON_VAL) == ["warmup-on-val"]


def test_network_and_training_data():
    assert kinds(NETWORK).count("network") >= 3
    assert kinds(TRAIN_DATA_IN_EVAL) == ["train-data-in-eval"]


def test_comments_are_ignored_and_unparsable_source_falls_back():
    assert kinds("# import requests\nx = 1\n") == []
    # an install hint in an error message is not a download
    assert kinds('raise RuntimeError("zstandard missing: pip install zstandard")\n') == []
    flags, problem = analyse_source("import requests\ndef broken(:\n")
    assert problem and [f["kind"] for f in flags] == ["network"]


def test_severities_through_the_folder(record):
    files = three_seed_record()
    code = files["train_gpt.py"] + PRE_EVAL_TTT + NETWORK
    files = three_seed_record(code_len=len(code.encode()), extra_files={"train_gpt.py": code})
    report = verify_folder(record(files))
    found = {f.evidence["kind"]: f.severity for f in report.by_check("ttt.static")}
    assert found["multi-epoch-val-training"] == "error" and found["network"] == "warning"
    strict = verify_folder(record(files, name="2026-05-02_S"), profile="strict")
    assert {f.severity for f in strict.by_check("ttt.static")} == {"error"}


def test_log_warmup_without_a_statement(record):
    files = {"train_seed42.log": later_log(warmup_note=""), "submission.json": submission(val_bpb=1.07134229)}
    report = verify_folder(record(files))
    (f,) = [f for f in report.by_check("ttt.static") if f.evidence.get("kind") == "warmup-unlabelled"]
    assert f.file == "train_seed42.log" and f.severity == "warning"
    clean = verify_folder(record({"train_seed42.log": later_log(), "submission.json": submission(val_bpb=1.07134229)},
                                 name="2026-05-02_C"))
    assert clean.by_check("ttt.static") == []
