"""One CPU run of a record: the folder is copied (never written to), its entry script runs unmodified
under `python -m torch.distributed.run --standalone --nproc_per_node=N` with inject/ on PYTHONPATH
(sitecustomize: CPU shims and score capture), offline, with a hard time limit, and with the
environment of the plan (the record's run configuration, shrunk) plus the data paths.

`run_record(plan, data, work, ...)` -> RecordRun. Nothing here raises for a script that fails: the
run says how it ended (`failure`), `not runnable on CPU: <reason>` where the harness knows why."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from verifier.harness.data import DataDir, data_env, linked
from verifier.harness.proc import LAUNCHER_VARS, OFFLINE_ENV, PROXY_VARS, isolation_prefix, run_logged
from verifier.harness.script import NOT_RUNNABLE, Plan

__all__ = ["INJECT", "RecordRun", "run_record", "harness_env", "NOT_RUNNABLE", "RUN_SEED", "copy_record", "python"]

INJECT = Path(__file__).with_name("inject")
RUN_SEED = "1337"
DATA_LINK = "_golf_data"  # the run's data, linked into its copy: the same relative paths in every run
# What a copy leaves out: earlier outputs (logs, artifacts) and our own reruns.
_COPY_IGNORE = ("*.log", "final_model*", "*.ptz", "__pycache__", ".git", "verify", "logs")
_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TMP", "TEMP",
             "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "SYSTEMROOT", "TZ")
HARNESS_ENV = {"GOLF_HARNESS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
_NOT_ARTIFACT = (".log", ".txt", ".json", ".out", ".png", ".csv", ".md", ".py", ".model", ".vocab", ".sh")
_ERROR_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|AssertionError)\b.*)")
_LAUNCHER = ("ChildFailedError", "torch.distributed.elastic")
_MISSING = re.compile(r"^(?:ModuleNotFoundError: No module named '([\w.]+)'|FileNotFoundError: \[Errno 2\] No such file "
                      r"or directory: '([\w.-]+)')$")


@dataclass
class RecordRun:
    name: str
    returncode: int | None
    seconds: float
    timed_out: bool
    work: Path
    env: dict = field(default_factory=dict)  # what the harness set (besides the caller's basics)
    artifacts: dict[str, str] = field(default_factory=dict)  # new model files -> sha256
    network: str = "none"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def stdout(self) -> str:
        return _read(self.work / "stdout.txt")

    @property
    def stderr(self) -> str:
        return _read(self.work / "stderr.txt")

    @property
    def capture_dir(self) -> Path:
        return self.work / "capture"

    def failure(self, timeout: float | None = None) -> str | None:
        """None for a run that ended well; else one line: why it did not."""
        if self.ok:
            return None
        text = self.stderr + "\n" + self.stdout
        m = re.search(r"^(?:\[rank\d+\]:\s*)?\w*(?:Error|Exception): (" + re.escape(NOT_RUNNABLE) + r"[^\n]*)",
                      text, re.M)
        if m:
            return m.group(1)[:300]
        if self.timed_out:
            return f"timed out after {timeout or self.seconds:.0f}s"
        line = failure_line(self.stderr, self.stdout)
        missing = _MISSING.match(line)
        if missing:
            what = missing.group(1) or missing.group(2)
            listed = (self.work / "record" / "requirements.txt")
            note = " (listed in its requirements.txt)" if listed.is_file() and what.split(".")[0].replace(
                "_", "-").lower() in listed.read_text(errors="replace").replace("_", "-").lower() else ""
            return f"not runnable here: the script needs {what}, which is not installed{note}"
        return f"exited with code {self.returncode}: {line[:400]}"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def python() -> str:
    """The interpreter of harness runs: GOLF_HARNESS_PYTHON (a Python with torch, for scripts written for a
    newer Python than golf-verify's), else golf-verify's own."""
    return os.environ.get("GOLF_HARNESS_PYTHON") or sys.executable


def failure_line(stderr: str, stdout: str) -> str:
    """The script's own exception line (not torchrun's summary), else the last lines of output."""
    for line in stderr.splitlines():
        m = _ERROR_LINE.match(line.rstrip())
        if m and not any(k in line for k in _LAUNCHER):
            return m.group(1)
    return " | ".join((stderr.strip().splitlines() or stdout.strip().splitlines())[-3:])


def harness_env(plan: Plan, data: DataDir, *, capture: Path | None, log_dir: Path, seed: str = RUN_SEED,
                extra: dict | None = None) -> dict:
    """The environment of a harness run (inject/ on PYTHONPATH, the stand-in nvidia-smi on PATH)."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
    env.update(OFFLINE_ENV)
    env.update(HARNESS_ENV)
    # The stand-in nvidia-smi first; the tools installed beside this Python (a record's pyminify) next.
    env["PATH"] = os.pathsep.join([str(INJECT / "bin"), str(Path(python()).parent), env.get("PATH", os.defpath)])
    env["PYTHONPATH"] = str(INJECT)
    if re.search(r"^\s*(?:import|from)\s+triton\b", plan.source, re.M):
        env["PYTHONPATH"] = os.pathsep.join([str(INJECT), str(INJECT / "triton_standin")])
        env["GOLF_HARNESS_TRITON"] = "1"
    env.update(plan.env)
    env.update(data_env(plan.knobs, data))
    env.update({k: v for k, v in (("SEED", seed), ("RUN_ID", "golf_harness"), ("LOG_DIR", str(log_dir)))
                if k in plan.knobs})
    if capture is not None:
        env["GOLF_CAPTURE_DIR"] = str(capture)
    env.update(extra or {})
    for key in PROXY_VARS + LAUNCHER_VARS:
        env.pop(key, None)
    return env


def copy_record(folder: Path, dest: Path) -> None:
    shutil.copytree(folder, dest, symlinks=True, ignore=shutil.ignore_patterns(*_COPY_IGNORE))


def _artifacts(copy: Path, before: set[str], *dirs: Path) -> dict[str, str]:
    out = {}
    for root in (copy, *dirs):
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or path.suffix in _NOT_ARTIFACT or rel in before or "__pycache__" in rel \
                    or rel.startswith(("logs/", "capture/", DATA_LINK)):
                continue
            out.setdefault(rel, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _remove_strays(run_id: str) -> None:
    """Files a script left in the temporary folder under its (unique, harness-given) run id."""
    for folder in {Path("/tmp"), Path(tempfile.gettempdir())}:
        for path in folder.glob(f"*{run_id}*"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)


def run_record(plan: Plan, data: DataDir, work: Path, *, name: str = "run", nproc: int = 1, timeout: float = 300,
               capture: bool = True, extra_env: dict | None = None, isolate: bool = True) -> RecordRun:
    """Run plan's entry script once in work/record (a copy); outputs under work/."""
    work.mkdir(parents=True)
    copy = work / "record"
    copy_record(plan.folder, copy)
    plan.prepare_copy(copy)
    before = {p.relative_to(copy).as_posix() for p in copy.rglob("*")}
    (copy / DATA_LINK).symlink_to(data.root.resolve(), target_is_directory=True)
    log_dir = work / "logs"
    log_dir.mkdir()
    # A run id of its own: scripts name files outside their folder after it (/tmp/ttt_counter_<run id>), and
    # concurrent runs must not share them.
    run_id = {"RUN_ID": f"golf_{name}_{uuid.uuid4().hex[:12]}"}
    env = harness_env(plan, linked(data, f"./{DATA_LINK}"), capture=work / "capture" if capture else None,
                      log_dir=log_dir, extra={**run_id, **(extra_env or {})})
    prefix, network, _note = isolation_prefix() if isolate else ([], "none", None)
    if prefix:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [*prefix, python(), "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", plan.entry]
    rc, seconds, timed_out = run_logged(cmd, copy, env, timeout, work / "stdout.txt", work / "stderr.txt")
    _remove_strays(run_id["RUN_ID"])
    shown = {k: v for k, v in env.items() if k in plan.env or k in ("SEED", "RUN_ID")}
    run = RecordRun(name, rc, seconds, timed_out, work, shown, network=network)
    run.artifacts = _artifacts(copy, before, log_dir)
    return run
