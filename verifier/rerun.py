"""`golf-verify FOLDER --rerun`: run a record's training script again, seed by seed, and check what it prints.

Each seed runs as `python -m torch.distributed.run --standalone --nproc_per_node=N train_gpt.py` in a
temporary copy of the folder (the record folder itself is never written to, except for the new
`verify/<timestamp>/` subfolder at the end), with:

- a hard timeout per seed (`--timeout`); the whole process group is killed and the phase it reached
  (startup, warmup, training step k, export, eval path) is reported; the partial log is kept;
- no network: the offline variables of the Hugging Face libraries, proxies unset, and a network
  namespace of its own (`unshare -n`, loopback up) where the machine allows one;
- live progress parsed from the streamed stdout (step lines, stopping_early, Serialized model,
  final_* lines, golf_result_json) and external timers: start -> artifact written -> final score;
- the reproduction view: a second temporary copy of the folder whose own logs are replaced by the new
  ones, verified with every static check, plus the rerun findings (verifier/checks/rerun.py).

`--smoke` does the same on CPU under the harness (verifier/harness: CPU shims injected from outside, so
any record's script runs unmodified) with the tiny dataset in the script's own format (built in a
temporary folder unless `--data-path` is given) and the plan's small settings (the record's run
configuration shrunk by verifier/harness/profiles.json, or, in a folder rendered by golf-pack, by the
settings golf-pack stored for its script: `smoke_env` of .golf-pack.json); scores are then not
compared with the claims.

Public API: rerun_folder(...) -> RerunOutcome; find_records(root); SMOKE_OVERRIDES.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from verifier import VerifyError, __version__, verify_folder
from verifier.analysis import analyse, effective_seed
from verifier.checks import REGISTRY, run_checks
from verifier.folder import RERUN_DIR, SKIP_DIRS, TRACK_DIRS, load_folder
from verifier.logs import LogSummary, parse_log
from verifier.report import Report
from verifier.stats import DEFAULT_POLICY, load_policy
from verifier.harness.data import DataDir, load_tokenizer, text_splits, write_data
from verifier.harness.proc import (LAUNCHER_VARS, OFFLINE_ENV, PROXY_VARS, kill_tree,  # noqa: F401
                                   network_isolation)
from verifier.harness.run import harness_env
from verifier.harness.script import Plan, load_profiles, plan_folder

__all__ = ["SMOKE_OVERRIDES", "DEFAULT_TIMEOUT_S", "SMOKE_TIMEOUT_S", "DEFAULT_TOLERANCE_BPB", "RERUN_VERSION",
           "RerunError", "SeedRun", "RerunResult", "RerunOutcome", "rerun_folder", "find_records",
           "is_record_folder", "render_rerun_text", "tree_digest", "network_isolation"]

RERUN_VERSION = 1
DEFAULT_TIMEOUT_S = 1500.0  # 600 s training + 600 s evaluation + startup, compile and export
SMOKE_TIMEOUT_S = 300.0
DEFAULT_TOLERANCE_BPB = 0.002
TRAIN_CAP_S = 600.0
PROGRESS_EVERY_S = 10.0

# Small model, few steps: a smoke rerun takes seconds per seed on CPU. `--smoke` runs the script under the
# CPU harness (verifier/harness) with the plan's settings: the record's run configuration shrunk by the
# profiles of verifier/harness/profiles.json, whose first ("tiny") is this table; golf-pack starts from
# it for the `smoke_env` it stores (verifier.harness.script.plan_folder prefers that one).
SMOKE_OVERRIDES: dict[str, str] = dict(load_profiles()[0]["env"])  # the harness's "tiny" profile

# The reproduction view is the record folder with its own logs replaced by the rerun's logs and without
# its submission JSON: the claims are compared with the reproduced scores by rerun.reproduce, within a
# stated tolerance, and a plain `golf-verify FOLDER` checks the claims themselves. Every check whose
# subject is the logs or the code runs on the view; these, whose subject is the JSON, do not.
_CLAIMS = "the submission's claims: checked by golf-verify FOLDER; scores compared by rerun.reproduce"
SKIP_IN_VIEW = {
    "files.missing": "the record's files: checked by golf-verify FOLDER (the view holds no submission.json)",
    "schema.submission": _CLAIMS,
    "status.pending": _CLAIMS,
    "score.mean": _CLAIMS,
    "score.per-seed": _CLAIMS,
    "score.units": _CLAIMS,
    "size.code-bytes": _CLAIMS,
    "size.total-bytes": _CLAIMS,
    "seed.count": "a rerun may cover a subset of the seeds",
    "stats.significance": "significance is a property of the claimed runs",
}
SKIP_IN_SMOKE_VIEW = {"data.val-tokens": "smoke: the tiny dataset is not the canonical validation set",
                      "hardware.track": "smoke: a CPU run; rerun.hardware reports the device"}

_STEP = re.compile(r"^(?:step:)?(\d{1,12})/(\d{1,12})\s+(train_loss|val_loss)\b")
_WARMUP = re.compile(r"^warmup_step:\s?(\d{1,12})/(\d{1,12})")
_TRAIN_MS = re.compile(r"\btrain_time:\s?(\d{1,15})ms\b")
_STOP = re.compile(r"^stopping_early: wallclock_cap train_time:\s?(\d{1,15})ms(?: step:\s?(\d{1,12})/(\d{1,12}))?")
_SERIALIZED = re.compile(r"^Serialized model(?: ([^:]{1,80}))?: (\d{1,15}) bytes")
_FINAL = re.compile(r"^((?:final|quantized|legal_ttt)\w*) val_loss:\s?(\S+) val_bpb:\s?(\S+)")
_EVAL_MS = re.compile(r"\beval_time:\s?(\d{1,15})ms\b")
_RESULT = "golf_result_json:"
_HP_ENV = re.compile(r"""os\.environ\.get\(\s*["']([A-Z][A-Z0-9_]{0,63})["']""")
_DEFAULT = r"""os\.environ\.get\(\s*["']{name}["']\s*,\s*["']([^"']{{1,300}})["']"""


class RerunError(Exception):
    """The rerun cannot start (bad folder, missing data, bad options): exit code 2."""


def _now() -> float:
    return time.monotonic()


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class SeedRun:
    seed: int
    index: int
    total: int
    status: str = "not started"  # ok | failed | timeout | interrupted | not started
    returncode: int | None = None
    phase: str = "startup"  # startup | warmup | training | export | eval | done
    step: int | None = None
    iterations: int | None = None
    warmup: tuple[int, int] | None = None
    train_time_ms: float | None = None
    stopped_early: bool = False
    last_final: str | None = None
    artifact_by: str | None = None  # "log line" | "file"
    timers: dict = field(default_factory=dict)
    log_path: Path | None = None
    saved_log: str | None = None  # relative to the record folder: verify/<ts>/train_seed1.log
    saved_console: str | None = None
    summary: LogSummary | None = None
    claimed: dict | None = None
    reproduced: dict | None = None
    script: dict = field(default_factory=dict)
    device: str | None = None
    gpus: list = field(default_factory=list)
    world_size: int | None = None
    tail: list = field(default_factory=list)
    console: list = field(default_factory=list)

    def phase_text(self) -> str:
        if self.phase == "training":
            return f"training step {self.step if self.step is not None else 0}/{self.iterations or '?'}"
        if self.phase == "warmup" and self.warmup:
            return f"warmup step {self.warmup[0]}/{self.warmup[1]} (before training)"
        if self.phase == "export":
            return f"export (training ended at step {self.step}/{self.iterations or '?'}; no artifact yet)"
        if self.phase == "eval":
            return (f"eval (artifact written; last score line {self.last_final})" if self.last_final
                    else "eval (artifact written, no final score line yet)")
        if self.phase == "done":
            return "done (final score printed)"
        return "startup (no training step yet)"

    def to_dict(self) -> dict:
        delta = None
        if self.reproduced and self.claimed and self.reproduced.get("val_bpb") is not None \
                and self.claimed.get("val_bpb") is not None:
            delta = round(self.reproduced["val_bpb"] - float(self.claimed["val_bpb"]), 8)
        return {
            "seed": self.seed, "status": self.status, "returncode": self.returncode,
            "phase": self.phase, "phase_text": self.phase_text(), "step": self.step, "iterations": self.iterations,
            "stopped_early": self.stopped_early, "log": self.saved_log, "console": self.saved_console,
            "timers_s": dict(self.timers), "artifact_detected_by": self.artifact_by,
            "script": dict(self.script), "device": self.device, "world_size": self.world_size,
            "claimed": self.claimed, "reproduced": self.reproduced, "delta_bpb": delta,
        }


@dataclass
class RerunResult:
    folder: str
    track: str
    smoke: bool
    nproc: int
    timeout_s: float
    tolerance: float
    seeds: list[SeedRun]
    network: str = "none"
    network_note: str | None = None
    claimed_hardware: str | None = None
    data: dict = field(default_factory=dict)
    env_overrides: dict = field(default_factory=dict)
    env_removed: list = field(default_factory=list)
    verify_dir: str | None = None
    folder_changes: list = field(default_factory=list)
    created: str = ""


@dataclass
class RerunOutcome:
    result: RerunResult
    report: Report
    rerun_json: dict

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


# --------------------------------------------------------------------------------------------------
# folder helpers


def is_record_folder(path: Path) -> bool:
    return (path / "submission.json").is_file() or (path / "train_gpt.py").is_file()


def find_records(root: str | Path) -> list[Path]:
    """Every record folder under root (a folder with submission.json or train_gpt.py); a record's own
    subfolders are not searched, symbolic links are not followed."""
    root = Path(root)
    if is_record_folder(root):
        return [root]
    out = []
    for dirpath, dirnames, _files in os.walk(root):
        here = Path(dirpath)
        if here != root and is_record_folder(here):
            out.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
    return sorted(out)


def tree_digest(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every file under folder (links by their target text), skipping the given subfolders."""
    out: dict[str, str] = {}
    for dirpath, dirnames, files in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in files + [d for d in dirnames if (here / d).is_symlink()]:
            path = here / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
                continue
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            out[rel] = h.hexdigest()
    return out


def _copy_folder(src: Path, dst: Path, *, drop: set[str] = frozenset()) -> None:
    """Copy a record folder, without its verify/ reruns and without the relative paths in `drop`."""

    def ignore(dirpath, names):
        rel_dir = Path(dirpath).resolve().relative_to(src.resolve())
        skipped = set()
        for name in names:
            rel = (rel_dir / name).as_posix()
            if rel == RERUN_DIR or rel in drop or name == "__pycache__":
                skipped.add(name)
        return skipped

    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


def _script_default(text: str, name: str) -> str | None:
    m = re.search(_DEFAULT.format(name=re.escape(name)), text)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------------
# environment


def visible_gpus(timeout: float = 60.0) -> int:
    """GPUs torch can see in a child process (CUDA_VISIBLE_DEVICES respected); 0 when none or no torch."""
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def _child_env(base: dict, *, script_vars: set[str], smoke: bool, extra: dict, seed: int, log_dir: Path,
               data_path: str | None, tokenizer_path: str | None, isolated: bool, plan: Plan | None = None) \
        -> tuple[dict, list[str]]:
    removed = []
    env = {}
    for key, value in base.items():
        if key in PROXY_VARS or key in LAUNCHER_VARS or key.startswith("TORCHELASTIC_"):
            continue
        if key in script_vars and key not in ("DATA_PATH", "TOKENIZER_PATH"):
            removed.append(key)  # a stray ITERATIONS=30 in the shell must not change the reproduction
            continue
        env[key] = value
    env.update(OFFLINE_ENV)
    env["PYTHONUNBUFFERED"] = "1"
    if smoke:  # the CPU harness: its shims on PYTHONPATH, the plan's small settings, the data in its format
        data = DataDir(Path(data_path).parent.parent, Path(data_path), Path(tokenizer_path or ""), None) \
            if data_path else None
        env.update(harness_env(plan, data, capture=None, log_dir=log_dir, seed=str(seed)) if data else {})
    if isolated:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    env.update(extra)
    if data_path is not None:
        env["DATA_PATH"] = data_path
    if tokenizer_path is not None:
        env["TOKENIZER_PATH"] = tokenizer_path
    env["SEED"] = str(seed)
    env["LOG_DIR"] = str(log_dir)
    return env, sorted(removed)


# --------------------------------------------------------------------------------------------------
# one seed


class _Watcher:
    """Follows one seed's stdout lines: phase, step, timers, progress messages."""

    def __init__(self, run: SeedRun, t0: float, say: Callable[[str], None]):
        self.run, self.t0, self.say = run, t0, say
        self.last_progress = -1e9

    def _tag(self, now: float) -> str:
        return f"seed {self.run.index}/{self.run.total} +{now - self.t0:.1f}s"

    def mark(self, key: str, now: float) -> None:
        self.run.timers.setdefault(key, round(now - self.t0, 3))

    def artifact(self, now: float, how: str, what: str) -> None:
        r = self.run
        if "start_to_artifact_s" in r.timers:
            return
        self.mark("start_to_artifact_s", now)
        r.artifact_by = how
        if r.phase in ("startup", "warmup", "training", "export"):
            r.phase = "eval"
        self.say(f"{self._tag(now)} artifact written ({what}) -> eval")

    def line(self, text: str, now: float) -> None:
        r = self.run
        r.console.append(text)
        r.tail = (r.tail + [text])[-20:]
        line = text.rstrip("\r\n")
        m = _STEP.match(line)
        if m:
            step, iters = int(m.group(1)), int(m.group(2))
            ms = _TRAIN_MS.search(line)
            r.step, r.iterations = step, iters
            if ms:
                r.train_time_ms = float(ms.group(1))
            if r.phase in ("startup", "warmup"):
                r.phase = "training"
                self.mark("start_to_first_step_s", now)
            if m.group(3) == "val_loss" and step == iters and r.phase == "training":
                self._train_end(now, f"training done at step {step}/{iters}")
            elif r.phase == "training" and (now - self.last_progress >= PROGRESS_EVERY_S or step <= 1):
                self.last_progress = now
                self.say(f"{self._tag(now)} training step {step}/{iters}, {self._cap()}")
            return
        m = _WARMUP.match(line)
        if m:
            r.warmup = (int(m.group(1)), int(m.group(2)))
            if r.phase == "startup":
                r.phase = "warmup"
                self.say(f"{self._tag(now)} warmup (compile) {m.group(1)}/{m.group(2)}")
            return
        m = _STOP.match(line)
        if m:
            r.train_time_ms = float(m.group(1))
            r.stopped_early = True
            if m.group(2):
                r.step, r.iterations = int(m.group(2)), int(m.group(3))
            self._train_end(now, f"stopping_early: wallclock cap at step {r.step}/{r.iterations}")
            return
        m = _SERIALIZED.match(line)
        if m:
            if r.phase == "training":
                self._train_end(now, f"training done at step {r.step}/{r.iterations}")
            self.artifact(now, "log line", f"{m.group(1) or 'model'}: {m.group(2)} bytes")
            return
        m = _FINAL.match(line)
        if m and not m.group(1).endswith("_exact"):
            r.last_final = m.group(1)
            if r.phase != "done":
                r.phase = "eval"
            ms = _EVAL_MS.search(line)
            self.mark("start_to_first_final_s", now)
            self.say(f"{self._tag(now)} eval {m.group(1)} val_bpb {m.group(3)}"
                     + (f" (eval_time {int(ms.group(1)) / 1000:.1f}s)" if ms else ""))
            r.timers["start_to_last_final_s"] = round(now - self.t0, 3)
            return
        if line.startswith(_RESULT):
            self.mark("start_to_final_s", now)
            r.phase = "done"
            try:
                res = json.loads(line[len(_RESULT):])
            except ValueError:
                res = None
            if isinstance(res, dict) and isinstance(res.get("val_bpb"), (int, float)):
                self.say(f"{self._tag(now)} final score val_bpb {res['val_bpb']:.8f} ({res.get('eval_path')})")

    def _cap(self) -> str:
        ms = self.run.train_time_ms
        if ms is None:
            return f"train_time ? of {TRAIN_CAP_S:.0f}s cap"
        return f"train_time {ms / 1000:.1f}s of {TRAIN_CAP_S:.0f}s cap ({100 * ms / 1000 / TRAIN_CAP_S:.0f}%)"

    def _train_end(self, now: float, what: str) -> None:
        r = self.run
        if "start_to_train_end_s" in r.timers:
            return
        self.mark("start_to_train_end_s", now)
        if r.phase in ("startup", "warmup", "training"):
            r.phase = "export"
        self.say(f"{self._tag(now)} {what}, {self._cap()} -> export")


def _snapshot(dirs: list[Path]) -> dict[Path, tuple[int, int]]:
    out = {}
    for d in dirs:
        for dirpath, dirnames, files in os.walk(d):
            dirnames[:] = [x for x in dirnames if x != "__pycache__"]
            for name in files:
                p = Path(dirpath) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                out[p] = (st.st_mtime_ns, st.st_size)
    return out


def _new_artifact(dirs: list[Path], before: dict) -> Path | None:
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.endswith(".ptz") or e.name.startswith("final_model"):
                try:
                    st = e.stat()
                except OSError:
                    continue
                if st.st_size > 0 and before.get(Path(e.path)) != (st.st_mtime_ns, st.st_size):
                    return Path(e.path)
    return None


def _run_seed(run: SeedRun, cmd: list[str], cwd: Path, env: dict, log_dir: Path, timeout_s: float,
              say: Callable[[str], None]) -> None:
    watch_dirs = [log_dir, cwd]
    before = _snapshot(watch_dirs)
    t0 = _now()
    watcher = _Watcher(run, t0, say)
    lines: queue.Queue = queue.Queue()
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, encoding="utf-8",
                                errors="replace", bufsize=1)
    except OSError as exc:
        run.status, run.returncode = "failed", None
        run.tail = [f"cannot start torchrun: {exc}"]
        run.console = list(run.tail)
        return

    def reader():
        assert proc.stdout is not None
        for text in proc.stdout:
            lines.put((_now(), text))
        lines.put((_now(), None))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = t0 + timeout_s
    eof = False
    try:
        while not eof:
            now = _now()
            if now >= deadline:
                run.status = "timeout"
                say(f"seed {run.index}/{run.total} +{now - t0:.1f}s TIMEOUT ({timeout_s:g}s) in "
                    f"{run.phase_text()}: killing the process group")
                kill_tree(proc)
                break
            try:
                when, text = lines.get(timeout=min(0.5, max(0.01, deadline - now)))
            except queue.Empty:
                when, text = None, None
            if when is not None:
                if text is None:
                    eof = True
                else:
                    watcher.line(text, when)
            if "start_to_artifact_s" not in run.timers:
                found = _new_artifact(watch_dirs, before)
                if found is not None:
                    watcher.artifact(_now(), "file", f"{found.name} appeared")
    except KeyboardInterrupt:
        run.status = "interrupted"
        kill_tree(proc, grace=3.0)
    thread.join(timeout=15.0)
    while True:  # lines printed before the kill
        try:
            when, text = lines.get_nowait()
        except queue.Empty:
            break
        if text is not None:
            watcher.line(text, when)
    try:
        run.returncode = proc.wait(timeout=30.0)
    except subprocess.TimeoutExpired:
        kill_tree(proc, grace=1.0)
        run.returncode = proc.poll()
    end = _now()
    run.timers["wall_s"] = round(end - t0, 3)
    if "start_to_artifact_s" in run.timers and "start_to_final_s" in run.timers:
        run.timers["artifact_to_final_s"] = round(run.timers["start_to_final_s"] - run.timers["start_to_artifact_s"], 3)
    elif "start_to_artifact_s" in run.timers and "start_to_last_final_s" in run.timers:
        run.timers["artifact_to_final_s"] = round(run.timers["start_to_last_final_s"]
                                                  - run.timers["start_to_artifact_s"], 3)
    if run.status == "not started":
        run.status = "ok" if run.returncode == 0 else "failed"
    run.log_path = _find_log(run.seed, watch_dirs, before)
    if run.status == "timeout":
        say(f"seed {run.index}/{run.total} killed after {run.timers['wall_s']:.1f}s in {run.phase_text()}"
            + ("; partial log kept" if run.log_path else "; no log was written"))
    else:
        say(f"seed {run.index}/{run.total} {run.status}: exit code {run.returncode} after {run.timers['wall_s']:.1f}s")


def _find_log(seed: int, dirs: list[Path], before: dict) -> Path | None:
    """The log this seed wrote: train_seed<SEED>[_run<K>].log in LOG_DIR, else any new *.log / *.txt."""
    new = [p for p, sig in _snapshot(dirs).items() if before.get(p) != sig and p.suffix in (".log", ".txt")]
    if not new:
        return None
    named = [p for p in new if re.fullmatch(rf"train_seed{seed}(?:_run\d+)?\.log", p.name)]
    pool = named or new
    return max(pool, key=lambda p: (p.stat().st_size, p.name))


# --------------------------------------------------------------------------------------------------
# claims


def _claims(folder_path: Path) -> tuple[dict[int, dict], list[int], str | None, str | None, str]:
    """(per-seed claims, claimed seeds, claimed hardware, status, track) of the record folder."""
    folder = load_folder(folder_path)
    a = analyse(folder, str(folder_path), load_policy(DEFAULT_POLICY))
    per_seed: dict[int, dict] = {}
    c = a.claims
    if c is not None:
        for seed, sc in c.seed_results.items():
            if sc.val_bpb is not None or sc.val_loss is not None:
                per_seed[seed] = {"val_bpb": _plain(sc.val_bpb), "val_loss": _plain(sc.val_loss),
                                  "source": f"{c.file} seed_results"}
    # else the folder's own logs: the log chosen for the seed, then any other log with a final score
    logs = [(r.seed, r.log, r.final) for r in a.runs]
    logs += [(effective_seed(s), name, s.final) for name, s in sorted(folder.logs.items())]
    for seed, name, final in logs:
        if seed is not None and seed not in per_seed and final is not None and final.val_bpb is not None:
            per_seed[seed] = {"val_bpb": final.val_bpb, "val_loss": final.val_loss, "source": f"log {name}"}
    seeds = list(c.seeds) if c is not None and c.seeds else sorted(per_seed)
    hardware = None
    if c is not None and isinstance(c.data.get("hardware"), str):
        hardware = c.data["hardware"][:120]
    if hardware is None:
        devices = sorted({r.summary.device for r in a.runs if r.summary.device})
        hardware = devices[0] if len(devices) == 1 else None
    return per_seed, seeds, hardware, c.status if c else None, a.track


def _plain(x):
    return None if x is None else float(x)


# --------------------------------------------------------------------------------------------------
# the rerun


def _resolve_path(option: str | None, env_name: str, script_text: str) -> tuple[str | None, str]:
    if option:
        return str(Path(option).resolve()), "option"
    if os.environ.get(env_name):
        return str(Path(os.environ[env_name]).resolve()), "environment"
    default = _script_default(script_text, env_name)
    if default:
        return str(Path(default).resolve()), "script default"
    return None, "none"


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def rerun_folder(path: str | Path, *, seeds: list[int] | None = None, nproc: int | None = None,
                 data_path: str | None = None, tokenizer_path: str | None = None, timeout: float | None = None,
                 tolerance: float = DEFAULT_TOLERANCE_BPB, smoke: bool = False, extra_env: dict | None = None,
                 policy=None, profile: str | None = None, display: str | None = None,
                 progress: Callable[[str], None] | None = None, isolate: bool = True) -> RerunOutcome:
    """Rerun a record folder seed by seed and verify the new logs. Raises RerunError when it cannot start."""
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    src = Path(path)
    shown = display if display is not None else str(path)
    if not src.is_dir():
        raise RerunError(f"{path}: not a folder")
    plan = plan_folder(src)
    if plan.problem:
        raise RerunError(f"{path}: {plan.problem}")
    if tolerance < 0:
        raise RerunError("--tolerance must be >= 0")
    script_text = plan.source
    try:
        per_seed, claimed_seeds, claimed_hw, _status, track = _claims(src)
    except (OSError, ValueError) as exc:
        raise RerunError(f"cannot read record folder {path}: {exc}") from None
    run_seeds = list(dict.fromkeys(seeds)) if seeds else list(dict.fromkeys(claimed_seeds))
    if not run_seeds:
        raise RerunError(f"{path}: no seeds claimed (submission.json seeds / seed_results, or logs); give --seeds")
    if any(s < 0 for s in run_seeds):
        raise RerunError("--seeds must be non-negative integers")
    if nproc is None:
        nproc = 1 if smoke else max(1, visible_gpus())
    if nproc < 1 or 8 % nproc != 0:
        raise RerunError(f"--nproc {nproc}: must divide 8 (1, 2, 4 or 8) so grad_accum_steps stays integral")
    timeout_s = float(timeout) if timeout is not None else (SMOKE_TIMEOUT_S if smoke else DEFAULT_TIMEOUT_S)
    if timeout_s <= 0:
        raise RerunError("--timeout must be > 0 seconds")
    extra = {str(k): str(v) for k, v in (extra_env or {}).items()}
    for key in ("SEED", "LOG_DIR"):
        if key in extra:
            raise RerunError(f"--env {key}=...: golf-verify sets {key} itself")

    script_vars = set(plan.knobs)
    before = tree_digest(src)
    result = RerunResult(folder=shown, track=track, smoke=smoke, nproc=nproc, timeout_s=timeout_s,
                         tolerance=float(tolerance), seeds=[], claimed_hardware=claimed_hw,
                         env_overrides=dict(plan.env, **extra) if smoke else dict(extra),
                         created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with tempfile.TemporaryDirectory(prefix="golf-rerun-") as tmp_name:
        tmp = Path(tmp_name)
        if smoke and data_path is None:
            if tokenizer_path is not None:
                raise RerunError("--smoke with --tokenizer-path needs --data-path too")
            try:
                tok = load_tokenizer(src, plan.vocab, tmp / "tokenizer")
                train, val = text_splits(tok)
                built = write_data(tmp / "data", tok, train, val, plan.reads_byte_sidecar)
            except (OSError, ValueError, RuntimeError) as exc:
                raise RerunError(f"--smoke: cannot build data for a {plan.vocab}-token vocabulary: {exc}") from None
            data_path, tokenizer_path = str(built.dataset), str(built.tokenizer)
            what = f"tiny dataset (built; {'the folder' if tok.source == 'folder' else 'a trained'} tokenizer)"
            sources = (what, what)
        else:
            data_path, d_src = _resolve_path(data_path, "DATA_PATH", script_text)
            if smoke and tokenizer_path is None:  # the tiny layout: OUT/datasets/<name>, OUT/tokenizers/<model>
                guess = Path(data_path).parent.parent / "tokenizers" / "fineweb_1024_bpe.model"
                tokenizer_path = str(guess) if guess.is_file() else None
            tokenizer_path, t_src = _resolve_path(tokenizer_path, "TOKENIZER_PATH", script_text)
            sources = (d_src, t_src)
        if data_path is not None and not Path(data_path).is_dir():
            raise RerunError(f"data path {data_path} ({sources[0]}) is not a folder; give --data-path")
        if tokenizer_path is not None and not Path(tokenizer_path).is_file():
            raise RerunError(f"tokenizer {tokenizer_path} ({sources[1]}) is not a file; give --tokenizer-path")
        # Names only: rerun.json lands in a folder that may become a pull request.
        result.data = {"dataset": Path(data_path).name if data_path else None, "dataset_source": sources[0],
                       "tokenizer": Path(tokenizer_path).name if tokenizer_path else None,
                       "tokenizer_source": sources[1]}

        prefix, result.network, result.network_note = network_isolation() if isolate else \
            ([], "none", "isolation turned off by the caller")
        # the view sits in a track folder: without the JSON, the track is read from the path
        track_dir = {t: d for d, t in TRACK_DIRS.items()}.get(track, "records")
        run_dir = tmp / "run" / track_dir / src.resolve().name
        _copy_folder(src, run_dir)
        plan.prepare_copy(run_dir)
        cmd = [*prefix, sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", plan.entry]
        mode = "smoke (CPU harness, tiny dataset)" if smoke else "full"
        say(f"rerun {shown}: {len(run_seeds)} seed(s) {run_seeds}, {mode}, {nproc} process(es) per seed, "
            f"timeout {timeout_s:g}s, network: {result.network}"
            + (f" ({result.network_note})" if result.network_note else ""))
        for note in plan.notes:
            say(note)
        result.seeds = [SeedRun(seed=s, index=i + 1, total=len(run_seeds)) for i, s in enumerate(run_seeds)]
        for run in result.seeds:
            run.claimed = per_seed.get(run.seed)
            log_dir = tmp / "out" / f"seed{run.seed}"
            log_dir.mkdir(parents=True)
            env, removed = _child_env(os.environ, script_vars=script_vars, smoke=smoke, extra=extra, seed=run.seed,
                                      log_dir=log_dir, data_path=data_path, tokenizer_path=tokenizer_path,
                                      isolated=bool(prefix), plan=plan)
            result.env_removed = sorted(set(result.env_removed) | set(removed))
            say(f"seed {run.index}/{run.total} (SEED={run.seed}): starting torchrun --nproc_per_node={nproc}")
            _run_seed(run, cmd, run_dir, env, log_dir, timeout_s, say)
            _read_back(run)
            if run.status == "interrupted":
                break

        # ---- save under verify/<timestamp>/ (staged in a hidden folder, then renamed) ----
        verify_root = src / RERUN_DIR
        if verify_root.exists() and not verify_root.is_dir():
            raise RerunError(f"{verify_root} exists and is not a folder; cannot save the rerun")
        verify_root.mkdir(exist_ok=True)
        final_name = _reserve(verify_root, _utc_stamp())
        staging = verify_root / f".{final_name}.partial-{os.getpid()}"
        staging.mkdir()
        rel_dir = f"{RERUN_DIR}/{final_name}"
        result.verify_dir = rel_dir
        saved_logs: dict[str, str] = {}  # name in the view -> path relative to the record folder
        for run in result.seeds:
            if run.log_path is not None:
                name = run.log_path.name
                if not name.startswith(f"train_seed{run.seed}"):
                    name = f"train_seed{run.seed}_{name}"
                shutil.copyfile(run.log_path, staging / name)
                run.saved_log = f"{rel_dir}/{name}"
                saved_logs[name] = run.saved_log
            if run.console:
                console = f"console_seed{run.seed}.out"
                with open(staging / console, "x", encoding="utf-8") as fh:
                    fh.write("".join(run.console))
                run.saved_console = f"{rel_dir}/{console}"

        # ---- the reproduction view: the folder's own logs replaced by the new ones ----
        original = load_folder(src)
        view = tmp / "view" / track_dir / src.resolve().name
        _copy_folder(src, view, drop=set(original.logs) | {sub.name for sub in original.submissions})
        for name in saved_logs:
            shutil.copyfile(staging / name, view / name)
        skip = dict(SKIP_IN_VIEW, **(SKIP_IN_SMOKE_VIEW if smoke else {}))
        static_ids = [i for i in REGISTRY if i not in skip and not i.startswith("rerun.")]
        try:
            report = verify_folder(view, policy=policy or DEFAULT_POLICY, profile=profile, display=shown,
                                   checks=static_ids)
        except VerifyError as exc:
            raise RerunError(str(exc)) from None
        _relocate(report, saved_logs)
        report.skipped.extend({"check": k, "reason": f"rerun: {v}"} for k, v in sorted(skip.items()))

        after = tree_digest(src, skip=(verify_root / final_name, staging))
        result.folder_changes = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        probe = _Probe(result, report.profile)
        report.findings.extend(run_checks(probe, [i for i in REGISTRY if i.startswith("rerun.")]))
        data = rerun_json(result, report)
        report.summary["rerun"] = data
        with open(staging / "rerun.json", "x", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False)
            fh.write("\n")
        # The reserved folder is empty: rename() replaces it in one step, so a reader never sees a
        # half-written rerun (and fails, leaving the staging folder, if anything was put into it).
        os.rename(staging, verify_root / final_name)
        say(f"saved {len(saved_logs)} log(s) and rerun.json under {shown.rstrip('/')}/{rel_dir}/")
    return RerunOutcome(result, report, data)


class _Probe:
    """What the rerun checks read (verifier/checks/rerun.py): the profile and the rerun."""

    def __init__(self, rerun: RerunResult, profile: str):
        self.rerun, self.profile = rerun, profile


def _reserve(root: Path, stamp: str) -> str:
    """Create root/<stamp> (root/<stamp>-2, -3, ... when taken) and return its name: never reuses a folder."""
    name, k = stamp, 2
    while True:
        try:
            (root / name).mkdir()
            return name
        except FileExistsError:
            name, k = f"{stamp}-{k}", k + 1


def _read_back(run: SeedRun) -> None:
    """Figures of the new log (or the console when the script wrote none)."""
    text = run.log_path.read_text(encoding="utf-8", errors="replace") if run.log_path else "".join(run.console)
    s = parse_log(text, name=run.log_path.name if run.log_path else f"console_seed{run.seed}.out")
    run.summary = s
    run.device, run.gpus, run.world_size = s.device, list(s.gpus), s.world_size
    g = s.golf_result or {}
    run.script = {k: g.get(k) for k in ("train_time_ms", "eval_time_ms", "total_eval_time_s", "steps",
                                        "stopped_early", "bytes_total", "code_sha256") if k in g}
    if not run.script:
        run.script = {"train_time_ms": s.train_time_ms, "total_eval_time_s": s.total_eval_time_s,
                      "steps": s.steps, "bytes_total": s.total_bytes}
    if run.status == "ok":
        if isinstance(g.get("val_bpb"), (int, float)):
            run.reproduced = {"val_bpb": float(g["val_bpb"]), "val_loss": _plain(g.get("val_loss")),
                              "eval_path": g.get("eval_path"), "source": "golf_result_json"}
        elif s.final is not None and s.final.val_bpb is not None:
            run.reproduced = {"val_bpb": s.final.val_bpb, "val_loss": s.final.val_loss,
                              "eval_path": s.final.base, "source": "final line"}


def _relocate(report: Report, saved: dict[str, str]) -> None:
    """Findings and summary of the view name the logs where they were saved: verify/<ts>/..."""
    for f in report.findings:
        if f.file in saved:
            f.file = saved[f.file]
    summary = report.summary
    for run in summary.get("runs") or []:
        run["log"] = saved.get(run.get("log"), run.get("log"))
        run["companions"] = [saved.get(n, n) for n in run.get("companions") or []]
    for key in ("logs", "unselected_logs"):
        if isinstance(summary.get(key), list):
            summary[key] = [saved.get(n, n) for n in summary[key]]


def rerun_json(result: RerunResult, report: Report) -> dict:
    rerun_findings = [f for f in report.sorted_findings() if f.check.startswith("rerun.")]
    static = [f for f in report.findings if not f.check.startswith("rerun.")]
    counts = {s: sum(1 for f in static if f.severity == s) for s in ("error", "warning", "info")}

    return {
        "rerun_version": RERUN_VERSION,
        "verifier_version": __version__,
        "created": result.created,
        "folder": result.folder,
        "verify_dir": result.verify_dir,
        "mode": "smoke" if result.smoke else "full",
        "track": result.track,
        "command": ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={result.nproc}",
                    "train_gpt.py"],
        "nproc": result.nproc,
        "timeout_s": result.timeout_s,
        "tolerance_bpb": result.tolerance,
        "network": {"isolation": result.network, "note": result.network_note,
                    "offline_env": dict(OFFLINE_ENV), "proxies_unset": True},
        "data": result.data,
        "env_overrides": result.env_overrides,
        "env_removed": result.env_removed,
        "hardware": {"required": "8xH100 SXM" if result.track == "10min_16mb" else None,
                     "claimed": result.claimed_hardware,
                     "observed": sorted({s.device for s in result.seeds if s.device})},
        "seeds": [_seed_entry(s, result) for s in result.seeds],
        "static": {"verdict": "fail" if counts["error"] else "pass", "counts": counts,
                   "skipped_checks": sorted(k for k in SKIP_IN_VIEW) + (sorted(SKIP_IN_SMOKE_VIEW) if result.smoke else [])},
        "folder_unchanged": not result.folder_changes,
        "findings": [f.to_dict() for f in rerun_findings],
        "verdict": report.verdict,
    }


def _seed_entry(s: SeedRun, r: RerunResult) -> dict:
    d = s.to_dict()
    if r.smoke:
        d["comparison"] = "not compared (smoke)"
        d["reproduces"] = None
    elif s.reproduced is None:
        d["comparison"] = "no reproduced score"
        d["reproduces"] = None
    elif not s.claimed or s.claimed.get("val_bpb") is None:
        d["comparison"] = "no claimed score"
        d["reproduces"] = None
    else:
        ok = abs(d["delta_bpb"]) <= r.tolerance + 1e-12
        d["comparison"] = f"{'within' if ok else 'outside'} tolerance {r.tolerance:g} bpb"
        d["reproduces"] = ok
    return d


# --------------------------------------------------------------------------------------------------
# text


def _f(x, digits=8) -> str:
    return "-" if x is None else f"{float(x):.{digits}f}"


def render_rerun_text(outcome: RerunOutcome) -> str:
    d = outcome.rerun_json
    out = [f"golf-verify rerun  {d['folder']}",
           f"  mode: {d['mode']}; {d['nproc']} process(es) per seed; timeout {d['timeout_s']:g}s; "
           f"tolerance {d['tolerance_bpb']:g} bpb; network: {d['network']['isolation']}"
           + (f" ({d['network']['note']})" if d['network']['note'] else ""),
           f"  saved: {d['verify_dir']}/ (logs, console output, rerun.json)"]
    for s in d["seeds"]:
        t = s["timers_s"]
        claimed = (s["claimed"] or {}).get("val_bpb")
        got = (s["reproduced"] or {}).get("val_bpb")
        out.append(f"  seed {s['seed']}: {s['status']} ({s['phase_text']}); val_bpb {_f(got)} vs claimed "
                   f"{_f(claimed)}: {s['comparison']}")
        out.append(f"      timers: start->artifact {_f(t.get('start_to_artifact_s'), 1)}s, artifact->final "
                   f"{_f(t.get('artifact_to_final_s'), 1)}s, start->final {_f(t.get('start_to_final_s'), 1)}s, "
                   f"wall {_f(t.get('wall_s'), 1)}s; script: train_time {s['script'].get('train_time_ms')}ms, "
                   f"total_eval_time {s['script'].get('total_eval_time_s')}s; device {s['device'] or '-'}")
    hw = d["hardware"]
    out.append(f"  hardware: observed {', '.join(hw['observed']) or '-'}; track needs {hw['required'] or '-'}; "
               f"claimed {hw['claimed'] or '-'}" + (" (not compared: smoke)" if d["mode"] == "smoke" else ""))
    out.append(f"  record folder unchanged apart from {d['verify_dir']}/: {'yes' if d['folder_unchanged'] else 'NO'}")
    out.append("")
    return "\n".join(out)
