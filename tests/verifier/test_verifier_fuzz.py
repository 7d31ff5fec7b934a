"""Fuzzing: truncated, binary, empty, NaN-laden and huge inputs, and links out of the folder.
Findings only: never a traceback, never a read outside the folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier.folder as vfolder
from verifier import verify_folder
from verifier.logs import parse_log
from verifier.report import render_github, render_json, render_text

SECRET = "OUTSIDE-SECRET-7f3a"

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: f"{x:.8f}" if x == x and abs(x) != float("inf") else str(x)),
    st.integers(min_value=-10, max_value=10**20).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "9" * 400, "", "-0", "0.0000", "1.", ".5"]),
)
TEMPLATES = [
    "seed:{}", "  seed: {}", "hparam seed={}", "step:{}/20000 train_loss:2.0 train_time:{}ms step_avg:{}ms",
    "{}/20000 val_loss: {} val_bpb: {}", "stopping_early: wallclock_cap train_time:{}ms step:{}/20000",
    "stopping_early: wallclock_cap train_time: {}ms step: {}/20000", "Code size: {} bytes",
    "Code size (uncompressed): {} bytes", "Total submission size int8+zlib: {} bytes", "Total submission size: {} bytes",
    "Serialized model quantized+brotli: {} bytes", "final_int8_zlib_roundtrip val_loss:{} val_bpb:{} eval_time:{}ms",
    "final_int8_zlib_roundtrip_exact val_loss:{} val_bpb:{}", "quantized_ttt_phased val_loss:{} val_bpb:{} eval_time:{}ms",
    "legal_ttt_exact val_loss:{} val_bpb:{} eval_time:{}ms", "total_eval_time:{}s", "gptq:reserving {}s, effective={}ms",
    "GPTQ:collected 67 Hessians in {}s", "val_loader:shards pattern=./x/fineweb10B_sp1024/v tokens:{}", "val_tokens: {}",
    "budget:{}/16000000", "1776142348.{} final_sliding val_loss:{} val_bpb:{} (stride=16, T=0.90) eval_time:{}ms",
    "golf_result_json:{{\"seed\": {}, \"val_bpb\": {}, \"val_loss\": {}, \"bytes_total\": {}}}",
    "ttt_lora:warming up compile", "ttt_lora:compile warmup done ({}s)", "world_size:{} grad_accum_steps:1",
    "=" * 100, "import os", "Hyperparameters:", "|   0  NVIDIA H100 80GB HBM3          On  |",
]


@st.composite
def log_text(draw):
    lines = []
    for _ in range(draw(st.integers(0, 40))):
        tpl = draw(st.sampled_from(TEMPLATES))
        lines.append(tpl.format(*[draw(NUMBERS) for _ in range(tpl.count("{}"))]))
    text = "\n".join(lines)
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, max(0, len(text))))]  # truncated mid-line
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        pos = draw(st.integers(0, len(data)))
        data = data[:pos] + draw(st.binary(max_size=64)) + data[pos:]
    return data


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)),
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20)
KEYS = st.sampled_from(["val_bpb", "val_loss", "bytes_total", "bytes_code", "seeds", "seed_results", "track",
                        "status", "seed", "author", "date", "comparison", "seed_scores", "code_bytes", "artifact_bytes"])


@st.composite
def submission_bytes(draw):
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        return b"[" * draw(st.integers(1, 5000))
    if kind == 2:
        return b""
    obj = draw(st.dictionaries(KEYS, JSON_VALUES, max_size=8))
    if kind == 4 and draw(st.booleans()):
        obj["seed_results"] = {str(draw(st.integers(0, 99))): {"val_bpb": draw(JSON_VALUES)}}
    text = json.dumps(obj, allow_nan=True)
    return text.encode()[: draw(st.integers(0, len(text) + 1))] if draw(st.booleans()) else text.encode()


SCRIPTS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=60).map(lambda b: b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("' +
                               b.hex().encode() + b'")))\n'),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs=st.lists(log_text(), max_size=4), sub=st.one_of(st.none(), submission_bytes()),
       script=st.one_of(st.none(), SCRIPTS), profile=st.sampled_from([None, "strict", "legacy"]),
       sota=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10)))
def test_fuzzed_folders_give_findings_only(logs, sub, script, profile, sota):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outside = root / "outside"
        outside.mkdir()
        (outside / "secret.log").write_text(f"seed:4242\nfinal_int8_zlib_roundtrip val_loss:1.0 val_bpb:0.5\n{SECRET}\n")
        folder = root / "track_10min_16mb" / "rec"
        folder.mkdir(parents=True)
        for i, data in enumerate(logs):
            (folder / f"train_seed{i}.log").write_bytes(data)
        if sub is not None:
            (folder / "submission.json").write_bytes(sub)
        if script is not None:
            (folder / "train_gpt.py").write_bytes(script)
        os.symlink(outside / "secret.log", folder / "train_seed4242.log")
        os.symlink(outside, folder / "logs")
        os.symlink(root / "missing", folder / "dangling.txt")

        real_root = os.path.realpath(folder)
        seen = []
        original = vfolder.read_bytes

        def spy(path, cap=vfolder.READ_CAP):
            seen.append(os.path.realpath(path))
            return original(path, cap)
        vfolder.read_bytes = spy
        try:
            report = verify_folder(folder, profile=profile, sota_loss=sota)
        finally:
            vfolder.read_bytes = original

        assert all(os.path.commonpath([p, real_root]) == real_root for p in seen)
        assert not report.by_check("verifier.internal"), [f.message for f in report.by_check("verifier.internal")]
        out = render_json([report])
        json.loads(out)
        render_text([report])
        render_github([report])
        assert SECRET not in out
        assert "train_seed4242.log" not in report.summary["logs"]
        assert all(r["log"] != "train_seed4242.log" for r in report.summary["runs"])
        for f in report.findings:
            assert f.file is None or (not f.file.startswith("/") and ".." not in f.file.split("/"))
        assert any(f.file == "train_seed4242.log" and f.severity == "error" for f in report.by_check("files.unreadable"))


def test_huge_log_is_parsed_in_bounded_time(tmp_path):
    import time

    chunk = "\n".join([
        "tttg: c1/100 lr:0.001 t:1.0s", "step:10/20000 train_loss:2.0 train_time:100ms step_avg:10.0ms",
        "ttp: b1/10 bl:2.0 bb:1.0 rl:2.0 rb:1.0 dl:1-2 gd:0", "  ttt_chunk [1/1893] bpb=1.1 time=0.5s",
    ]) + "\n"
    text = chunk * 200_000  # ~26 MB
    start = time.perf_counter()
    s = parse_log(text + "final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n")
    assert s.final is not None and time.perf_counter() - start < 20
