"""The record folder as the verifier sees it: which files exist, read safely.

Reading rules (nothing in the folder is executed or imported):
- the walk never follows a symbolic link; a link whose target resolves outside the folder is
  reported and not read; a link to a file inside the folder is read as that file;
- at most READ_CAP bytes are read from any file; a larger file is reported and not parsed;
- text is decoded as UTF-8 with undecodable bytes replaced;
- special files (FIFOs, sockets, devices) are reported and never opened.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.logs import LogSummary, parse_log
from verifier.scripts import ScriptInfo, facts_for_folder, script_info

__all__ = ["RecordFolder", "ReadProblem", "SubmissionFile", "load_folder", "read_bytes", "READ_CAP",
           "TRACK_DIRS", "JFloat", "LOG_SUFFIXES", "NOT_LOGS", "MANIFEST", "record_folders", "holds_records",
           "looks_like_record", "golf_pack_smoke_env"]

READ_CAP = 64 * 1024 * 1024
MAX_ENTRIES = 5000
MAX_DEPTH = 6
TRACK_DIRS = {"track_10min_16mb": "10min_16mb", "track_non_record_16mb": "non_record_16mb"}
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", ".mypy_cache", ".pytest_cache"}
LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = ("requirements", "readme", "license", "cmakelists", "notes", "todo")
MANIFEST = ".golf-pack.json"
RERUN_DIR = "verify"  # golf-verify --rerun saves verify/<timestamp>/{rerun.json, logs}


class JFloat(float):
    """A float that remembers its JSON text, so tolerances can follow the printed digits."""

    text: str

    def __new__(cls, text: str):
        obj = super().__new__(cls, text)
        obj.text = text
        return obj

    @property
    def decimals(self) -> int:
        text = self.text.lower()
        mant, _, exp = text.partition("e")
        frac = len(mant.partition(".")[2])
        try:
            return max(0, frac - int(exp)) if exp else frac
        except ValueError:
            return frac


@dataclass
class ReadProblem:
    file: str
    reason: str
    severity: str = "warning"


@dataclass
class SubmissionFile:
    name: str
    data: dict | None
    error: str | None = None
    nonfinite: list[str] = field(default_factory=list)


@dataclass
class RecordFolder:
    root: Path
    name: str
    track_from_path: str | None = None
    files: dict[str, int] = field(default_factory=dict)  # relative name -> size in bytes
    scripts: dict[str, ScriptInfo] = field(default_factory=dict)
    main_script: str | None = None
    code_script: str | None = None
    submissions: list[SubmissionFile] = field(default_factory=list)
    logs: dict[str, LogSummary] = field(default_factory=dict)
    log_decode_replacements: dict[str, int] = field(default_factory=dict)
    readme: str | None = None
    manifest: dict | None = None
    manifest_error: str | None = None
    facts_mode: bool = False
    problems: list[ReadProblem] = field(default_factory=list)

    @property
    def golf_pack(self) -> bool:
        if self.manifest is not None or self.manifest_error is not None:
            return True
        main = self.scripts.get(self.main_script or "")
        return bool(main and main.golf_generated)

    @property
    def submission(self) -> SubmissionFile | None:
        for sub in self.submissions:
            if sub.name == "submission.json":
                return sub
        return self.submissions[0] if self.submissions else None


def _within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def read_bytes(path: Path, cap: int = READ_CAP) -> bytes | None:
    """Up to `cap` bytes of a regular file, or None when it is larger than `cap`. Never follows a
    symlink at the final component (O_NOFOLLOW where the platform has it)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        chunks, total = [], 0
        while total <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            return None
        return b"".join(chunks)
    finally:
        os.close(fd)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _nonfinite_paths(value: Any, path: str = "$", out: list[str] | None = None, depth: int = 0) -> list[str]:
    out = [] if out is None else out
    if depth > 50 or len(out) > 20:
        return out
    if isinstance(value, float) and not math.isfinite(value):
        out.append(path)
    elif isinstance(value, dict):
        for k, v in value.items():
            _nonfinite_paths(v, f"{path}.{k}", out, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value[:1000]):
            _nonfinite_paths(v, f"{path}[{i}]", out, depth + 1)
    return out


def parse_submission(name: str, data: bytes) -> SubmissionFile:
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    try:
        obj = json.loads(text, parse_float=JFloat, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return SubmissionFile(name, None, f"not valid JSON: {str(exc)[:120]}")
    if not isinstance(obj, dict):
        return SubmissionFile(name, None, f"top level is a JSON {type(obj).__name__}, not an object")
    return SubmissionFile(name, obj, None, _nonfinite_paths(obj))


def _classify(rel: str, depth: int) -> str:
    base = rel.rsplit("/", 1)[-1]
    low = base.lower()
    if depth == 0 and low.startswith("submission") and low.endswith(".json"):
        return "submission"
    if depth == 0 and base == MANIFEST:
        return "manifest"
    if depth == 0 and low in ("readme.md", "readme", "readme.txt", "readme.rst"):
        return "readme"
    if low.endswith(".py"):
        return "script"
    if low.endswith(LOG_SUFFIXES) and not low.startswith(NOT_LOGS):
        return "log"
    return "other"


def _walk(root: str, folder: RecordFolder) -> list[tuple[str, str, int, str]]:
    """(rel, real_path, depth, kind) for every readable regular file, recording problems."""
    out: list[tuple[str, str, int, str]] = []
    stack = [("", root, 0)]
    count = 0
    while stack:
        rel_dir, real_dir, depth = stack.pop()
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as exc:
            folder.problems.append(ReadProblem(rel_dir or ".", f"cannot list directory ({exc.strerror or exc})"))
            continue
        for entry in entries:
            count += 1
            if count > MAX_ENTRIES:
                folder.problems.append(ReadProblem(".", f"more than {MAX_ENTRIES} entries; the rest were not read"))
                return out
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                folder.problems.append(ReadProblem(rel, f"cannot stat ({exc.strerror or exc})"))
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(os.path.join(real_dir, entry.name))
                if not _within(target, root):
                    folder.problems.append(ReadProblem(rel, "symbolic link points outside the record folder; not followed",
                                                       "error"))
                    continue
                try:
                    tst = os.stat(target)
                except OSError:
                    folder.problems.append(ReadProblem(rel, "dangling symbolic link"))
                    continue
                if not stat.S_ISREG(tst.st_mode):
                    folder.problems.append(ReadProblem(rel, "symbolic link to a directory or special file; not followed"))
                    continue
                out.append((rel, target, depth, _classify(rel, depth)))
                folder.files[rel] = tst.st_size
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.name in SKIP_DIRS or (entry.name.startswith(".") and entry.name != "."):
                    continue
                if rel_dir == RERUN_DIR and os.path.isfile(os.path.join(real_dir, entry.name, "rerun.json")):
                    continue  # golf-verify --rerun output: reproductions, not the record's own logs
                if depth + 1 > MAX_DEPTH:
                    folder.problems.append(ReadProblem(rel, f"nested deeper than {MAX_DEPTH} levels; not read"))
                    continue
                stack.append((rel, os.path.join(real_dir, entry.name), depth + 1))
                continue
            if not stat.S_ISREG(st.st_mode):
                folder.problems.append(ReadProblem(rel, "not a regular file (FIFO, socket or device); not read"))
                continue
            folder.files[rel] = st.st_size
            out.append((rel, os.path.join(real_dir, entry.name), depth, _classify(rel, depth)))
    return out


def load_folder(path: str | Path, *, script_facts: dict[str, dict] | None = None) -> RecordFolder:
    """Read a record folder. Raises FileNotFoundError / NotADirectoryError only for the folder itself."""
    root_path = Path(path)
    if not root_path.exists():
        raise FileNotFoundError("no such folder")
    if not root_path.is_dir():
        raise NotADirectoryError("not a folder (a record folder holds train_gpt.py, submission.json and the logs)")
    root = os.path.realpath(root_path)
    folder = RecordFolder(root=Path(root), name=Path(root).name,
                          track_from_path=TRACK_DIRS.get(Path(root).parent.name))
    for rel, real, depth, kind in _walk(root, folder):
        if kind == "other":
            continue
        try:
            data = read_bytes(Path(real), READ_CAP)
        except OSError as exc:
            folder.problems.append(ReadProblem(rel, f"cannot read ({exc.strerror or exc})"))
            continue
        if data is None:
            folder.problems.append(ReadProblem(rel, f"larger than the read limit ({READ_CAP:,} bytes); not read"))
            continue
        if kind == "submission":
            folder.submissions.append(parse_submission(rel, data))
        elif kind == "manifest":
            sub = parse_submission(rel, data)
            folder.manifest, folder.manifest_error = sub.data, sub.error
        elif kind == "readme":
            folder.readme = rel
        elif kind == "script":
            folder.scripts[rel] = script_info(rel, data)
        elif kind == "log":
            text = data.decode("utf-8", errors="replace")
            bad = text.count("\ufffd") + text.count("\x00")
            if bad:
                folder.log_decode_replacements[rel] = bad
            folder.logs[rel] = parse_log(text, name=rel)
    if not folder.scripts and script_facts:
        for info in facts_for_folder(script_facts, Path(root)):
            folder.scripts[info.name] = info
        folder.facts_mode = bool(folder.scripts)
    folder.main_script = _main_script(folder.scripts)
    folder.code_script = _code_script(folder)
    return folder


def golf_pack_smoke_env(path: str | Path) -> dict[str, str]:
    """The smoke-run settings golf-pack stored for a folder's script (`smoke_env` of .golf-pack.json):
    each of its features' small values (`golf-pack smoke`, `golf-verify --rerun --smoke`); {} when none."""
    try:
        data = read_bytes(Path(path) / MANIFEST, 1 << 20)
        env = json.loads(data.decode("utf-8")).get("smoke_env") if data else None
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def _code_script(folder: RecordFolder) -> str | None:
    """The script that holds the training code: the main script, or the file a tiny launcher
    `exec`s (e.g. a 74-byte train_gpt.py that runs train_gpt_decode.py)."""
    main = folder.scripts.get(folder.main_script or "")
    if main is None or main.effective_lines > 5:
        return folder.main_script
    others = [n for n in folder.scripts if n != folder.main_script and "/" not in n]
    if main.text:
        named = [n for n in others if n in main.text]
        if len(named) == 1:
            return named[0]
    trainers = [n for n in others if n.lower().startswith("train")]
    if len(trainers) == 1:
        return trainers[0]
    return folder.main_script


def _main_script(scripts: dict[str, ScriptInfo]) -> str | None:
    top = [name for name in scripts if "/" not in name]
    if "train_gpt.py" in top:
        return "train_gpt.py"
    trainers = [name for name in top if name.lower().startswith("train")]
    pool = trainers or top
    if not pool:
        return None
    return max(pool, key=lambda n: (scripts[n].effective_lines, n))


def _listing(path: Path) -> list[os.DirEntry]:
    try:
        return sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []


def looks_like_record(path: Path) -> bool:
    """A folder that holds what a record holds at its top level: a submission JSON, a script or a log."""
    for entry in _listing(path):
        low = entry.name.lower()
        if entry.is_file(follow_symlinks=False) and (
                (low.startswith("submission") and low.endswith(".json")) or low.endswith(".py")
                or (low.endswith(LOG_SUFFIXES) and not low.startswith(NOT_LOGS))):
            return True
    return False


def _subdirs(path: Path) -> list[Path]:
    return [Path(e.path) for e in _listing(path)
            if e.is_dir(follow_symlinks=False) and not e.name.startswith(".") and e.name not in SKIP_DIRS]


def record_folders(root: str | Path) -> list[Path]:
    """The record folders under `root` that --ci checks. In the repository layout every direct child of
    `records/track_*/` is a record, whatever it holds (a folder without submission.json is checked and
    fails); `root` may be `records/`, a track folder or one record. Outside that layout, folders that
    hold a submission JSON, a script or a log are records. Symbolic links are not followed."""
    root = Path(root)
    if root.parent.name.startswith("track_") or (looks_like_record(root) and not root.name.startswith("track_")):
        return [root]
    if root.name.startswith("track_"):
        return _subdirs(root)
    tracks = [d for d in _subdirs(root) if d.name.startswith("track_")]
    if tracks:
        return [run for track in tracks for run in _subdirs(track)]
    out: list[Path] = []
    todo = _subdirs(root)
    while todo:
        here = todo.pop(0)
        if looks_like_record(here):
            out.append(here)
        elif len(here.relative_to(root).parts) < MAX_DEPTH:
            todo.extend(_subdirs(here))
    return sorted(out)


def holds_records(path: str | Path) -> bool:
    """A folder of record folders (`records/`, a track folder) rather than one record."""
    path = Path(path)
    if not path.is_dir() or path.parent.name.startswith("track_") or looks_like_record(path):
        return False
    return bool(record_folders(path))
