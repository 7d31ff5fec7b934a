"""golf-verify --rerun (run a record again, seed by seed, and check the new logs), --ci and --probe."""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from packager.cli import pack
from verifier.checks import REGISTRY, run_checks
from verifier.cli import _expand_seeds, main
from verifier.report import _clean
from verifier.folder import golf_pack_smoke_env
from verifier.rerun import (SMOKE_OVERRIDES, RerunResult, SeedRun, _Probe, _reserve, _Watcher, find_records,
                            network_isolation)

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "recipes" / "naive_baseline.yaml"
sys.path.insert(0, str(ROOT / "tests" / "verifier"))
from verifier_builders import three_seed_record, write_record  # noqa: E402


def invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def digest(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def changes(before: dict, after: dict) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k) != after.get(k)}


def rerun_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "verify").iterdir() if not p.name.startswith(".")) \
        if (folder / "verify").is_dir() else []


def leftover_workers(under: Path) -> list[str]:
    """Processes still running in a rerun's temporary copy under `under` (a killed run must leave none)."""
    out = []
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(under.resolve())) and "golf-rerun-" in cwd and int(pid) != os.getpid():
            out.append(f"{pid}:{cwd}")
    return out


@pytest.fixture
def baseline(tmp_path) -> Path:
    """A freshly rendered naive baseline (status pending, no logs) in a tmp records tree."""
    result = CliRunner().invoke(pack, [str(BASELINE), "--records", str(tmp_path / "records")])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "records" / "track_10min_16mb").iterdir()
    return folder


# ------------------------------------------------------------------------------------------------ fast


def test_smoke_rerun_of_a_golf_pack_folder_adds_its_features_settings(tmp_path, monkeypatch):
    """golf-verify --rerun --smoke takes a golf-pack folder's own small settings from its manifest, in place
    of the harness's profiles (which would shrink the vocabulary the data was built at)."""
    import verifier.rerun as rerun

    folder = tmp_path / "lora"
    result = CliRunner().invoke(pack, [str(ROOT / "recipes" / "lora_ttt_swiglu_1xh100.yaml"), "--out", str(folder)])
    assert result.exit_code == 0, result.output
    seen = {}

    def fake_child_env(base, **kw):
        assert kw["plan"].profiles == ["golf-pack smoke_env"] and "VOCAB_SIZE" not in kw["plan"].env
        seen.update(kw["plan"].env, **kw["extra"])
        raise KeyboardInterrupt  # stop before anything runs

    monkeypatch.setattr(rerun, "_child_env", fake_child_env)
    with pytest.raises(KeyboardInterrupt):
        rerun.rerun_folder(folder, smoke=True, seeds=[1], isolate=False, data_path=str(tmp_path),
                           tokenizer_path=str(folder / "recipe.yaml"), extra_env={"TTT_BATCH_DOCS": "8"},
                           progress=lambda msg: None)
    assert seen["TTT_CHUNK_LEN"] == "128" and seen["XSA_LAST_N"] == "1" and seen["TTT_BATCH_DOCS"] == "8"
    assert not (folder / "verify").exists()


def test_seeds_take_several_values():
    assert _expand_seeds(["f", "--rerun", "--seeds", "1", "2", "--smoke"]) == \
        ["f", "--rerun", "--seeds", "1", "--seeds", "2", "--smoke"]
    assert _expand_seeds(["--seeds=3,4", "f"]) == ["--seeds", "3", "--seeds", "4", "f"]
    assert _expand_seeds(["--seeds", "5,6", "f"]) == ["--seeds", "5", "--seeds", "6", "f"]
    assert _expand_seeds(["--", "--seeds", "1"]) == ["--", "--seeds", "1"]


@pytest.mark.parametrize("args, message", [
    (["--smoke", "--probe"], "at most one of"),
    (["--seeds", "1"], "--seeds only with --rerun"),
    (["--timeout", "5"], "--timeout only with --rerun or --probe"),
    (["--rerun", "--ci"], "at most one of"),
    (["--rerun", "--sota-bpb", "1.1"], "cannot be combined"),
])
def test_option_errors_are_usage_errors(baseline, args, message):
    result = invoke([baseline, *args])
    assert result.exit_code == 2 and message in result.output


def test_rerun_refuses_bad_input(baseline, tmp_path):
    assert invoke([baseline, baseline, "--rerun"]).exit_code == 2
    result = invoke([baseline, "--rerun", "--nproc", "3", "--smoke"])
    assert result.exit_code == 2 and "must divide 8" in result.output
    result = invoke([baseline, "--rerun", "--data-path", tmp_path / "nowhere", "--nproc", "1"])
    assert result.exit_code == 2 and "is not a folder" in result.output
    result = invoke([baseline, "--rerun", "--smoke", "--env", "SEED=3"])
    assert result.exit_code == 2 and "sets SEED itself" in result.output
    assert not (baseline / "verify").exists()


def test_verify_folder_names_are_never_reused(tmp_path):
    assert _reserve(tmp_path, "20260101T000000Z") == "20260101T000000Z"
    assert _reserve(tmp_path, "20260101T000000Z") == "20260101T000000Z-2"
    assert _reserve(tmp_path, "20260101T000000Z") == "20260101T000000Z-3"


def test_network_isolation_falls_back_with_a_note(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    prefix, name, note = network_isolation()
    assert prefix == [] and name == "none" and "unshare(1) not found" in note


def _watch(lines: list[str]) -> SeedRun:
    run = SeedRun(seed=1, index=1, total=2)
    w = _Watcher(run, 0.0, lambda msg: None)
    for i, line in enumerate(lines):
        w.line(line + "\n", float(i + 1))
    return run


def test_phase_reached_is_read_from_the_stream():
    start = ["seed:1", "warmup_step:1/20"]
    train = start + ["step:1/20000 train_loss:6.9 train_time:150ms step_avg:150.00ms",
                     "step:200/20000 train_loss:3.1 train_time:30000ms step_avg:150.00ms"]
    assert _watch(["code_sha256:" + "0" * 64 + " code_bytes:1"]).phase_text().startswith("startup")
    assert _watch(start).phase_text() == "warmup step 1/20 (before training)"
    assert _watch(train).phase_text() == "training step 200/20000"
    stopped = _watch(train + ["stopping_early: wallclock_cap train_time:600038ms step:4000/20000"])
    assert stopped.phase == "export" and stopped.stopped_early and "step 4000/20000" in stopped.phase_text()
    evalp = _watch(train + ["step:20000/20000 val_loss:2.0 val_bpb:1.2 train_time:1ms step_avg:1ms",
                            "Serialized model int8+zlib: 15000000 bytes", "Code size: 50000 bytes",
                            "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms"])
    assert evalp.phase == "eval" and "final_int8_zlib_roundtrip" in evalp.phase_text()
    t = evalp.timers
    assert t["start_to_first_step_s"] == 3.0 and t["start_to_train_end_s"] == 5.0 and t["start_to_artifact_s"] == 6.0
    done = _watch(["Serialized model int8+zlib: 1 bytes", 'golf_result_json:{"val_bpb": 1.2}'])
    assert done.phase == "done" and done.timers["start_to_final_s"] == 2.0


def _rerun_findings(seeds: list[SeedRun], *, smoke=False, track="10min_16mb", claimed_hw=None, tolerance=0.002):
    result = RerunResult(folder="x", track=track, smoke=smoke, nproc=8, timeout_s=1500.0, tolerance=tolerance,
                         seeds=seeds, claimed_hardware=claimed_hw)
    return run_checks(_Probe(result, "strict"), [i for i in REGISTRY if i.startswith("rerun.")])


def _seed(seed=1, got=1.2001, want=1.2000, device="8xNVIDIA H100 80GB HBM3", world=8, **kw):
    s = SeedRun(seed=seed, index=1, total=1, status="ok", phase="done", device=device, world_size=world,
                reproduced={"val_bpb": got}, claimed={"val_bpb": want, "source": "submission.json seed_results"}, **kw)
    s.saved_log = f"verify/t/train_seed{seed}.log"
    return s


def test_reproduction_is_judged_with_the_stated_tolerance():
    ok = _rerun_findings([_seed(got=1.2015, want=1.2000)])
    assert [(f.check, f.severity) for f in ok] == [("rerun.reproduce", "info"), ("rerun.hardware", "info")]
    assert "reproduces" in ok[0].message and "<= 0.002" in ok[0].message
    bad = _rerun_findings([_seed(got=1.2050, want=1.2000)])
    (f,) = [f for f in bad if f.check == "rerun.reproduce"]
    assert f.severity == "error" and "does not reproduce" in f.message and f.evidence["delta_bpb"] == 0.005
    smoke = _rerun_findings([_seed(got=3.3, want=1.2, device="2xcpu", world=2)], smoke=True)
    assert [f.message for f in smoke if f.check == "rerun.reproduce"][0].startswith("seed 1: not compared (smoke)")
    assert [f.severity for f in smoke if f.check == "rerun.hardware"] == ["info"]
    none = _rerun_findings([_seed(want=None)])
    assert [f.severity for f in none if f.check == "rerun.reproduce"] == ["info"]


@pytest.mark.parametrize("device, world, severity", [
    ("8xNVIDIA H100 80GB HBM3", 8, "info"),
    ("8xNVIDIA H100 PCIe", 8, "warning"),
    ("1xNVIDIA H100 80GB HBM3", 1, "warning"),
    ("8xNVIDIA A100-SXM4-80GB", 8, "warning"),
])
def test_hardware_against_the_record_track(device, world, severity):
    found = [f for f in _rerun_findings([_seed(device=device, world=world)]) if f.check == "rerun.hardware"]
    assert [f.severity for f in found] == [severity]


def test_hardware_against_the_claim_off_the_record_track():
    found = _rerun_findings([_seed(device="1xNVIDIA H100 80GB HBM3", world=1)], track="non_record_16mb",
                            claimed_hw="1xH100")
    assert [f.severity for f in found if f.check == "rerun.hardware"] == ["info"]
    found = _rerun_findings([_seed(device="1xNVIDIA A100-SXM4-80GB", world=1)], track="non_record_16mb",
                            claimed_hw="1xH100")
    assert [f.severity for f in found if f.check == "rerun.hardware"] == ["warning"]


def test_timeouts_and_failures_are_errors_with_the_phase():
    t = _seed()
    t.status, t.phase, t.step, t.iterations, t.reproduced = "timeout", "training", 57, 20000, None
    f = _seed(seed=2)
    f.status, f.returncode, f.phase, f.reproduced, f.tail = "failed", 1, "startup", None, ["Traceback", "boom"]
    found = {x.check: x for x in _rerun_findings([t, f])}
    assert found["rerun.timeout"].severity == "error" and "training step 57/20000" in found["rerun.timeout"].message
    assert found["rerun.run"].severity == "error" and "exited with code 1" in found["rerun.run"].message


def test_rerun_checks_are_silent_in_a_static_verify(baseline):
    from verifier import verify_folder

    assert not [f for f in verify_folder(baseline).findings if f.check.startswith("rerun.")]


def test_find_records_stops_at_record_folders(tmp_path):
    good = write_record(tmp_path / "records", three_seed_record(), name="2026-05-01_Good")
    (good / "verify" / "20260101T000000Z").mkdir(parents=True)
    (good / "verify" / "20260101T000000Z" / "train_gpt.py").write_text("# not a record\n")
    (tmp_path / "records" / ".hidden" / "x").mkdir(parents=True)
    (tmp_path / "records" / ".hidden" / "x" / "train_gpt.py").write_text("")
    assert find_records(tmp_path / "records") == [good]
    assert find_records(good) == [good]


def test_ci_fails_on_a_broken_folder(tmp_path):
    root = tmp_path / "records"
    write_record(root, three_seed_record(), name="2026-05-01_Good")
    write_record(root, three_seed_record(json_bpb=1.20001234), name="2026-05-02_Broken")
    result = invoke(["--ci", root])
    assert result.exit_code == 1, result.output
    assert re.search(r"^::error file=.*2026-05-02_Broken", result.output, re.M)
    assert not re.search(r"^::error file=.*2026-05-01_Good", result.output, re.M)
    assert "2 record folder(s): 1 pass, 0 pending, 1 fail" in result.output
    text = invoke(["--ci", root, "--format", "text"])
    assert text.exit_code == 1 and "verdict: FAIL" in text.output and "fail: " in text.output


def test_ci_reports_pending_folders_as_pending(baseline):
    root = baseline.parent.parent
    result = invoke(["--ci", root])
    assert result.exit_code == 0, result.output
    assert "1 pass" not in result.output and "0 pass, 1 pending, 0 fail" in result.output
    assert "::error" not in result.output and "pending" in result.output
    assert invoke(["--ci", root.parent / "empty-nothing"]).exit_code == 2


def test_probe_without_probes_is_a_usage_error(baseline, monkeypatch):
    monkeypatch.setitem(sys.modules, "verifier.probes", None)
    result = invoke([baseline, "--probe"])
    assert result.exit_code == 2 and "probes not available" in result.output


def test_probe_prints_the_findings_of_run_probes(baseline, monkeypatch):
    from verifier.report import Finding
    import verifier

    calls = []
    found = [Finding(check="probe.demo", severity="error", title="Demo probe", message="the probe saw something")]

    def run_probes(folder, *, nproc=1, data_path=None, tokenizer_path=None, timeout=300):
        calls.append((folder, nproc, data_path, tokenizer_path, timeout))
        return types.SimpleNamespace(findings=lambda profile: (found, [{"check": "probe.other", "reason": "n/a"}]),
                                     to_dict=lambda: {"demo": True})

    fake = types.ModuleType("verifier.probes")
    fake.__spec__ = importlib.machinery.ModuleSpec("verifier.probes", None)
    fake.run_probes = run_probes
    monkeypatch.setitem(sys.modules, "verifier.probes", fake)
    monkeypatch.setattr(verifier, "probes", fake, raising=False)
    result = invoke([baseline, "--probe", "--nproc", "1", "--timeout", "30"])
    assert result.exit_code == 1 and "the probe saw something" in result.output and "probe.demo" in result.output
    assert calls == [(str(baseline), 1, None, None, 30.0)]
    result = invoke([baseline, "--probe", "--format", "json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["summary"] == {"probes": {"demo": True}}
    assert calls[-1] == (str(baseline), 1, None, None, 300)  # run_probes' own defaults
    assert report["skipped"] == [{"check": "probe.other", "reason": "n/a"}]


# ------------------------------------------------------------------------------------------------ slow


@pytest.mark.slow
def test_smoke_rerun_of_two_seeds_then_collected_and_reproduced(tmp_path, tiny_data):
    """One pair of CPU runs serves three checks: golf-verify --rerun --smoke on two seeds, golf-pack
    collecting those logs as the record's own, and a full rerun that reproduces one of them."""
    from tests.test_collect import check_collected_from_real_logs, render, write_recipe

    folder = render(tmp_path, write_recipe(tmp_path, seeds=(1, 2)))
    saved = _check_smoke_rerun(folder)
    for seed in (1, 2):
        shutil.copyfile(saved / f"train_seed{seed}.log", folder / f"train_seed{seed}.log")
    shutil.rmtree(folder / "verify")
    check_collected_from_real_logs(folder, seeds=(1, 2), world_size=2)
    _check_full_rerun_reproduces(folder, tiny_data)


def _check_smoke_rerun(folder: Path) -> Path:
    before = digest(folder)
    static_before = json.loads(invoke([folder, "--format", "json"]).stdout)
    result = invoke([folder, "--smoke", "--seeds", "1", "2", "--nproc", "2", "--format", "json"])  # --smoke: a rerun
    assert result.exit_code == 0, result.output[-4000:]
    progress = result.stderr
    assert "seed 1/2" in progress and "seed 2/2" in progress
    assert "artifact written" in progress and "final score val_bpb" in progress and "training step 1/6" in progress

    # the record folder: byte-identical apart from the one new verify/<timestamp>/ folder
    (saved,) = rerun_dirs(folder)
    assert re.fullmatch(r"\d{8}T\d{6}Z(-\d+)?", saved.name)
    rel = f"verify/{saved.name}"
    changed = changes(before, digest(folder))
    assert changed and all(c.startswith(rel + "/") for c in changed), changed
    assert {p.name for p in saved.iterdir()} == {"train_seed1.log", "train_seed2.log", "console_seed1.out",
                                                 "console_seed2.out", "rerun.json"}
    for seed in (1, 2):
        log = (saved / f"train_seed{seed}.log").read_text()
        assert f"seed:{seed}\n" in log and json.loads(log.splitlines()[-1].split(":", 1)[1])["seed"] == seed

    # the report: static checks ran on the new logs, the rerun findings beside them
    report = json.loads(result.stdout)
    runs = report["summary"]["runs"]
    assert [(r["seed"], r["log"]) for r in runs] == [(1, f"{rel}/train_seed1.log"), (2, f"{rel}/train_seed2.log")]
    assert all(r["val_bpb"] > 0 and r["total_bytes"] > 0 for r in runs)
    assert {"score.mean", "data.val-tokens"} <= {s["check"] for s in report["skipped"]}
    assert "code.provenance" not in {s["check"] for s in report["skipped"]}
    reproduce = [f for f in report["findings"] if f["check"] == "rerun.reproduce"]
    assert len(reproduce) == 2 and all("not compared (smoke)" in f["message"] for f in reproduce)
    assert report["verdict"] == "pass"

    data = json.loads((saved / "rerun.json").read_text())
    assert _clean(data) == report["summary"]["rerun"]  # the JSON report rounds floats to 10 digits
    assert data["mode"] == "smoke" and data["nproc"] == 2 and data["folder_unchanged"] is True
    assert data["verify_dir"] == rel and data["static"]["verdict"] == "pass"
    assert data["env_overrides"] == golf_pack_smoke_env(folder)  # a golf-pack folder: its manifest's settings
    for entry, seed in zip(data["seeds"], (1, 2)):
        assert entry["seed"] == seed and entry["status"] == "ok" and entry["phase"] == "done"
        assert entry["comparison"] == "not compared (smoke)" and entry["log"] == f"{rel}/train_seed{seed}.log"
        t = entry["timers_s"]
        assert 0 < t["start_to_artifact_s"] <= t["start_to_final_s"] <= t["wall_s"]
        assert t["artifact_to_final_s"] == pytest.approx(t["start_to_final_s"] - t["start_to_artifact_s"], abs=1e-3)
        assert entry["world_size"] == 2 and entry["device"] == "2xcpu" and entry["script"]["steps"] == 6
    assert str(folder.parent.parent) not in json.dumps(data["data"])  # no machine paths in the saved summary

    # a later static verify of the record is not confused by the saved reproductions
    static_after = json.loads(invoke([folder, "--format", "json"]).stdout)
    assert static_after["findings"] == static_before["findings"] and static_after["verdict"] == "pending"
    return saved


def _check_full_rerun_reproduces(folder: Path, tiny_data: Path) -> None:
    """A non-smoke rerun (the smoke settings given with --env) of seed 1, on one process (gradient accumulation
    covers the same global batch), reproduces the claim collected from two."""
    env = []
    for key, value in dict(SMOKE_OVERRIDES, **golf_pack_smoke_env(folder), OMP_NUM_THREADS="1").items():
        env += ["--env", f"{key}={value}"]
    data_args = ["--data-path", tiny_data / "datasets" / "fineweb10B_sp1024",
                 "--tokenizer-path", tiny_data / "tokenizers" / "fineweb_1024_bpe.model"]
    result = invoke([folder, "--rerun", "--seeds", "1", "--nproc", "1", *data_args, *env, "--format", "json",
                     "--tolerance", "0.002"])
    report = json.loads(result.stdout)
    found = [f for f in report["findings"] if f["check"] == "rerun.reproduce"]
    assert len(found) == 1, (report["findings"], result.output[-4000:])
    (found,) = found
    assert found["severity"] == "info" and "seed 1 reproduces" in found["message"], found
    assert "submission.json" in found["evidence"]["claim_source"]
    assert [f["severity"] for f in report["findings"] if f["check"] == "rerun.hardware"] == ["warning"]  # CPU
    entry = report["summary"]["rerun"]["seeds"][0]
    assert entry["reproduces"] is True and abs(entry["delta_bpb"]) <= 0.002 and entry["claimed"]["val_bpb"] > 0
    assert report["summary"]["rerun"]["mode"] == "full"


@pytest.mark.slow
def test_rerun_killed_at_its_timeout_keeps_the_partial_log(baseline, tiny_data, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"  # the rerun's temporary copy goes here: only its processes are looked for
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # The script hangs after its first logged training step (asleep: the wait costs no CPU).
    script = baseline / "train_gpt.py"
    step_line = 'f"train_time:{now_ms:.0f}ms step_avg:{now_ms / step:.2f}ms")\n'
    assert script.read_text().count(step_line) == 1
    script.write_text(script.read_text().replace(step_line, step_line + "            time.sleep(600)\n"))
    before = digest(baseline)
    result = invoke([baseline, "--rerun", "--smoke", "--seeds", "3", "--timeout", "20", "--env", "ITERATIONS=1000000",
                     "--data-path", tiny_data / "datasets" / "fineweb10B_sp1024",
                     "--tokenizer-path", tiny_data / "tokenizers" / "fineweb_1024_bpe.model"])
    assert result.exit_code == 1, result.output[-4000:]
    assert "seed 1/1" in result.stderr and "TIMEOUT (20s) in training step" in result.stderr
    assert re.search(r"rerun\.timeout .*\n\s+seed 3: killed at the 20 s timeout while in training step \d+/1000000",
                     result.stdout)
    (saved,) = rerun_dirs(baseline)
    assert changes(before, digest(baseline)) <= {f"verify/{saved.name}/{p.name}" for p in saved.iterdir()}
    log = (saved / "train_seed3.log").read_text()
    assert re.search(r"^step:\d+/1000000 train_loss:", log, re.M) and "golf_result_json" not in log
    data = json.loads((saved / "rerun.json").read_text())
    (entry,) = data["seeds"]
    assert entry["status"] == "timeout" and entry["phase"] == "training" and entry["step"] > 0
    assert entry["log"] == f"verify/{saved.name}/train_seed3.log" and data["env_overrides"]["ITERATIONS"] == "1000000"
    assert 20 <= entry["timers_s"]["wall_s"] < 60
    assert not leftover_workers(scratch)
