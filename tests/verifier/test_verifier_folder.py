"""Reading a folder safely: links, special files, size caps, bad JSON."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import verifier.folder as vfolder
from verifier import VerifyError, verify_folder
from verifier.folder import load_folder, parse_submission
from verifier_builders import early_log, script, submission


def _record_reads(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = vfolder.read_bytes

    def spy(path, cap=vfolder.READ_CAP):
        seen.append(os.path.realpath(path))
        return real(path, cap)
    monkeypatch.setattr(vfolder, "read_bytes", spy)
    return seen


def test_symlink_out_of_the_folder_is_reported_and_not_read(tmp_path, record, monkeypatch):
    secret = tmp_path / "secret.log"
    secret.write_text("seed:31337\nfinal_int8_zlib_roundtrip val_loss:0.1234 val_bpb:0.0999\nTOP-SECRET\n")
    folder = record({"train_gpt.py": script(), "submission.json": submission(val_bpb=1.2),
                     "train_seed1337.log": early_log(seed=1337)})
    os.symlink(secret, folder / "train_seed31337.log")
    os.symlink(tmp_path, folder / "up")  # a directory link out of the folder
    seen = _record_reads(monkeypatch)
    report = verify_folder(folder)
    root = os.path.realpath(folder)
    assert seen and all(os.path.commonpath([p, root]) == root for p in seen)
    found = report.by_check("files.unreadable")
    assert {f.file for f in found} >= {"train_seed31337.log", "up"}
    assert any(f.severity == "error" and "outside" in f.message for f in found)
    assert "TOP-SECRET" not in str(report.to_dict()) and "31337" not in str(report.summary["runs"])


def test_symlink_inside_the_folder_is_read(record):
    folder = record({"train_gpt.py": script(), "submission.json": submission(val_bpb=1.2),
                     "logs/real.log": early_log(seed=7)})
    os.symlink(folder / "logs" / "real.log", folder / "train_seed7.log")
    f = load_folder(folder)
    assert "train_seed7.log" in f.logs and f.logs["train_seed7.log"].seed == 7
    assert f.problems == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_never_opened(record):
    folder = record({"submission.json": submission(val_bpb=1.2)})
    os.mkfifo(folder / "train.log")  # opening it for reading would block forever
    f = load_folder(folder)
    assert "train.log" not in f.logs
    assert any("not a regular file" in p.reason for p in f.problems)


def test_oversized_file_is_a_finding(record, monkeypatch):
    monkeypatch.setattr(vfolder, "READ_CAP", 1000)
    folder = record({"train_gpt.py": script(), "submission.json": submission(val_bpb=1.2),
                     "train.log": "x" * 5000})
    report = verify_folder(folder)
    (f,) = [f for f in report.by_check("files.unreadable") if f.file == "train.log"]
    assert "larger than" in f.message


def test_binary_log_is_decoded_with_replacement(record):
    folder = record({"train_gpt.py": script(), "submission.json": submission(val_bpb=1.2),
                     "train.log": b"\xff\xfe\x00garbage\x00" + early_log().encode()})
    report = verify_folder(folder)
    assert any(f.file == "train.log" and "replaced" in f.message for f in report.by_check("files.unreadable"))
    assert report.summary["runs"][0]["val_bpb"] == pytest.approx(1.2243657)


def test_deep_nesting_is_cut(record, monkeypatch):
    monkeypatch.setattr(vfolder, "MAX_DEPTH", 2)
    folder = record({"a/b/c/d/train.log": early_log(), "submission.json": submission(val_bpb=1.2)})
    f = load_folder(folder)
    assert not f.logs and any("nested deeper" in p.reason for p in f.problems)


def test_missing_or_non_directory_folder_is_a_usage_error(tmp_path):
    with pytest.raises(VerifyError):
        verify_folder(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(VerifyError):
        verify_folder(tmp_path / "file")


@pytest.mark.parametrize("raw,error", [
    (b'{"val_bpb": NaN}', "not valid JSON"),
    (b'{"val_bpb": Infinity}', "not valid JSON"),
    (b"[1, 2]", "not an object"),
    (b"\xff\xfe{", "not valid JSON"),
    (b"[" * 100000, "not valid JSON"),
    (b'{"val_bpb": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_bad_submission_json(raw, error):
    sub = parse_submission("submission.json", raw)
    assert sub.data is None and error in sub.error


def test_overflowing_float_is_flagged_nonfinite():
    sub = parse_submission("submission.json", b'{"val_bpb": 1e999, "x": {"y": [1, -1e400]}}')
    assert sub.data is not None and sub.nonfinite == ["$.val_bpb", "$.x.y[1]"]


def test_json_floats_remember_their_printed_digits():
    sub = parse_submission("submission.json", b'{"a": 1.2200, "b": 1.5e-3, "c": 3}')
    assert sub.data["a"].decimals == 4 and sub.data["b"].decimals == 4 and isinstance(sub.data["c"], int)


def test_main_and_code_script_detection(record):
    folder = record({"train_gpt.py": 'exec(open(__file__.replace("train_gpt.py","train_gpt_decode.py")).read())\n',
                     "train_gpt_decode.py": script(lines=1600), "lossless_caps.py": script(lines=10),
                     "submission.json": submission(val_bpb=1.2)})
    f = load_folder(folder)
    assert f.main_script == "train_gpt.py" and f.code_script == "train_gpt_decode.py"
    other = record({"train_mdlm.py": script(lines=30), "util.py": script(lines=300)}, name="2026-05-02_B")
    g = load_folder(other)
    assert g.main_script == "train_mdlm.py" and g.code_script == "train_mdlm.py"
    assert Path(g.root).name == "2026-05-02_B"
