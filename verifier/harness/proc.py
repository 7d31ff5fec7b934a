"""Running a record's script in a subprocess: offline (a network namespace of its own with only
loopback where the machine allows one, the hub libraries' offline variables, no proxies), with a
hard time limit after which the whole process tree is killed (torchrun starts its workers in
sessions of their own, so its process group alone is not enough). Shared by --probe, --smoke and
--rerun."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["OFFLINE_ENV", "PROXY_VARS", "LAUNCHER_VARS", "network_isolation", "kill_tree", "run_logged",
           "descendants"]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PROXY_VARS = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
              "FTP_PROXY", "ALL_PROXY", "NO_PROXY")
# torchrun sets these itself; inherited ones (a shell inside another job) would confuse it.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")

# Bring the loopback interface up inside a fresh network namespace, then exec the real command.
_LO_UP = (
    "import fcntl,os,socket,struct,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    "f=struct.unpack('16sH',fcntl.ioctl(s,0x8913,struct.pack('16sH22x',b'lo',0))[:18])[1]\n"
    "fcntl.ioctl(s,0x8914,struct.pack('16sH22x',b'lo',f|1))\n"
    "s.close()\n"
    "os.execvp(sys.argv[1],sys.argv[1:]) if len(sys.argv)>1 else print('lo-up')\n"
)


@functools.lru_cache(maxsize=1)
def _cached_isolation() -> tuple[tuple[str, ...], str, str | None]:
    prefix, name, note = network_isolation()
    return tuple(prefix), name, note


def isolation_prefix() -> tuple[list[str], str, str | None]:
    """network_isolation(), probed once per process."""
    prefix, name, note = _cached_isolation()
    return list(prefix), name, note


def network_isolation(timeout: float = 20.0) -> tuple[list[str], str, str | None]:
    """(command prefix, name, note): a prefix that runs a command in a network namespace of its own with
    loopback up, or ([], "none", why not) where this machine allows none."""
    if not sys.platform.startswith("linux"):
        return [], "none", f"no network namespaces on {sys.platform}"
    unshare = shutil.which("unshare")
    if unshare is None:
        return [], "none", "unshare(1) not found"
    last = "unshare -n failed"
    for flags, name in ((["-n"], "unshare -n"), (["-r", "-n"], "unshare -r -n")):
        prefix = [unshare, *flags, sys.executable, "-c", _LO_UP]
        try:
            probe = subprocess.run(prefix, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            last = f"{name}: {exc}"
            continue
        if probe.returncode == 0 and "lo-up" in probe.stdout:
            return prefix, name, None
        last = f"{name}: " + ((probe.stderr or probe.stdout).strip().splitlines() or ["exit code %d" % probe.returncode])[-1]
    return [], "none", f"{last[:200]} (offline environment variables only)"


def _proc_stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, int]]:
    """Every process below pid (Linux /proc). torchrun starts its workers in sessions of their own, so
    killing torchrun's process group alone can leave them running."""
    children: dict[int, list[tuple[int, int]]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        info = _proc_stat(name) if name.isdigit() else None
        if info is not None:
            children.setdefault(info[0], []).append((int(name), info[1]))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child[0])
    return out


def _signal_all(proc: subprocess.Popen, pids: list[tuple[int, int]], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid, started in pids:
        info = _proc_stat(pid)
        if info is None or info[1] != started:  # gone, or the pid now names another process
            continue
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_tree(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM (torchrun forwards it to its workers), then SIGKILL to whatever is left, workers included."""
    pids = descendants(proc.pid)
    _signal_all(proc, pids, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    pids = sorted(set(pids) | set(descendants(proc.pid)))
    _signal_all(proc, pids, signal.SIGKILL)
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        pass
    _wait_gone(pids, timeout=10.0)


def _alive(pid: int, started: int) -> bool:
    """The process still runs (not gone, not a zombie, not a new process under the same id)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
        return fields[0] != "Z" and int(fields[19]) == started
    except (OSError, ValueError, IndexError):
        return False


def _wait_gone(pids: list[tuple[int, int]], timeout: float) -> None:
    """Killed processes take a moment to go: return once none of them runs (or after timeout)."""
    deadline = time.monotonic() + timeout
    while any(_alive(pid, started) for pid, started in pids) and time.monotonic() < deadline:
        time.sleep(0.05)



def run_logged(cmd: list[str], cwd: Path, env: dict, timeout: float, stdout: Path, stderr: Path) \
        -> tuple[int | None, float, bool]:
    """(return code, seconds, timed out) of cmd, its output written to the two files."""
    t0 = time.perf_counter()
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as exc:
            err.write(f"cannot start {cmd[0]}: {exc}\n".encode())
            return None, time.perf_counter() - t0, False
        try:
            return proc.wait(timeout=timeout), time.perf_counter() - t0, False
        except subprocess.TimeoutExpired:
            kill_tree(proc, grace=2.0)
            return proc.poll(), time.perf_counter() - t0, True
