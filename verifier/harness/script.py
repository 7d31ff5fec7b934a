"""What the harness reads from a record folder before running it, without executing anything:
the entry script, the environment knobs its code reads (with their defaults), the configuration
the record ran with (its logs' printed hyperparameters, else the README's launch command), the
vocabulary, and the shrink profiles (verifier/harness/profiles.json) that apply to it.

`plan_folder(folder)` -> Plan; the plan's `env` is what a CPU run sets: the record's own run
configuration, then the small settings, restricted to knobs the script reads. The small settings of a
folder rendered by golf-pack are the ones golf-pack stored for its script (`smoke_env` of
.golf-pack.json: each feature's own, over the shared `tiny` profile); any other folder gets the
profiles."""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from verifier.folder import golf_pack_smoke_env
from verifier.pysource import FStringError, executable_source
from verifier.scripts import unwrap

__all__ = ["Plan", "Knob", "plan_folder", "entry_script", "read_knobs", "load_profiles", "PROFILES_PATH"]

PROFILES_PATH = Path(__file__).with_name("profiles.json")
NOT_RUNNABLE = "not runnable on CPU: "
GOLF_PACK_PROFILE = "golf-pack smoke_env"  # the plan's profile name for a golf-pack folder's own settings
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
_VOCAB_IN_PATH = re.compile(r"(?:sp|_)(\d{3,6})(?:_bpe|\b|_)")
_HELPERS = ("lossless_caps.py", "prepare_caseops_data.py", "download_hf_docs_and_tokenize.py",
            "cached_challenge_fineweb.py", "ngram_tilt.py")
# Knobs the harness sets itself (paths, identity, launcher): never taken from a record's logs.
_OWN = re.compile(r"(^|_)(PATH|DIR|FILES?|RANK|WORLD_SIZE|RUN_ID|LOGFILE|OUTPUT)(_|$)|^(SEED|MASTER_\w+)$")


@dataclass
class Knob:
    name: str
    default: str | None  # source text of the default (None: read without one)
    attrs: set[str] = field(default_factory=set)  # Hyperparameters attributes it sets


@dataclass
class Plan:
    folder: Path
    entry: str | None
    source: str = ""  # entry script (and the scripts it execs), unwrapped
    knobs: dict[str, Knob] = field(default_factory=dict)
    run_config: dict[str, str] = field(default_factory=dict)  # knob -> value the record ran with
    run_config_source: str = "script defaults"
    profiles: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # run config + shrink, knobs the script reads
    vocab: int = 1024
    reads_byte_sidecar: bool = False
    problem: str | None = None  # why the folder cannot be run at all
    entry_source: str | None = None  # what a copy runs as its entry script instead of the folder's (see _runnable)
    notes: list[str] = field(default_factory=list)

    def reads(self, name: str) -> bool:
        return name in self.knobs

    def prepare_copy(self, copy: Path) -> None:
        """Put the entry script this Python runs into a copy of the folder (the folder itself is never written)."""
        if self.entry_source is not None:
            path = copy / self.entry
            path.unlink(missing_ok=True)  # a link would write through to the record
            path.write_text(self.entry_source, encoding="utf-8")


def entry_script(folder: Path) -> str | None:
    """train_gpt.py, else the one other train_gpt*.py / train*.py the folder ships (helpers excluded)."""
    if (folder / "train_gpt.py").is_file():
        return "train_gpt.py"
    names = sorted(p.name for p in folder.glob("train*.py") if p.name not in _HELPERS
                   and not re.search(r"_(decode|human|readable)\.py$", p.name))
    return names[0] if len(names) == 1 else None


def _sources(folder: Path, entry: str) -> str:
    """The entry script unwrapped, plus any Python file of the folder it names (exec'd payloads)."""
    text = unwrap((folder / entry).read_text(encoding="utf-8", errors="replace"))[1]
    parts = [text]
    for other in sorted(folder.glob("*.py")):
        if other.name != entry and other.name not in _HELPERS and other.name in text:
            parts.append(unwrap(other.read_text(encoding="utf-8", errors="replace"))[1])
    return "\n".join(parts)


def _runnable(folder: Path, entry: str) -> tuple[str | None, str | None]:
    """(why the entry script cannot run on this Python, the source to run instead). A script that does not
    compile here only for its Python 3.12 f-strings (PEP 701) runs unwrapped with those rewritten
    (verifier.pysource.executable_source). Scripts run by another interpreter (GOLF_HARNESS_PYTHON) are not
    judged by this one."""
    if os.environ.get("GOLF_HARNESS_PYTHON"):
        return None, None
    text = unwrap((folder / entry).read_text(encoding="utf-8", errors="replace"))[1]
    try:
        compile(text, entry, "exec")
    except SyntaxError as exc:
        rewritten = _rewritten(text, entry)
        if rewritten is not None:
            return None, rewritten
        here = ".".join(map(str, sys.version_info[:2]))
        return (f"not runnable: the script does not compile on Python {here} ({exc.msg}, line {exc.lineno}): it "
                "was written for a newer Python; set GOLF_HARNESS_PYTHON to one with torch"), None
    except (ValueError, RecursionError, MemoryError) as exc:
        return f"{NOT_RUNNABLE}the script does not compile: {exc}", None
    return None, None


def _rewritten(text: str, entry: str) -> str | None:
    """The script with its PEP 701 f-strings rewritten, if that compiles here."""
    try:
        source = executable_source(text)
        compile(source, entry, "exec")
    except (FStringError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return source


def _string_constants(tree: ast.AST) -> dict[str, str]:
    """Module-level NAME = "TEXT" (minified scripts name their env keys this way)."""
    out = {}
    for node in getattr(tree, "body", []):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _env_key(node: ast.AST, consts: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        key = node.value
    elif isinstance(node, ast.Name):
        key = consts.get(node.id)
    else:
        return None
    return key if key and _ENV_NAME.match(key) else None


def _env_call(node: ast.AST, consts: dict[str, str], helpers: set[str]) -> tuple[str, str | None] | None:
    """(knob, default text) of os.environ.get / os.getenv / a helper that wraps them, or os.environ[...]."""
    if isinstance(node, ast.Subscript) and "environ" in ast.unparse(node.value):
        key = _env_key(node.slice, consts)
        return (key, None) if key else None
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("get", "getenv", "pop", "setdefault"):
        if name == "get" and "environ" not in ast.unparse(func):
            return None
    elif name not in helpers:
        return None
    key = _env_key(node.args[0], consts)
    if key is None:
        return None
    default = ast.unparse(node.args[1]) if len(node.args) > 1 else None
    return key, default


def read_knobs(source: str) -> dict[str, Knob]:
    """Every environment variable the source reads, with its default and the attributes it sets."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {m.group(1): Knob(m.group(1), None)
                for m in re.finditer(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]{1,63})["']""", source)}
    consts = _string_constants(tree)
    helpers = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and "environ" in ast.unparse(f)
               and len(f.body) <= 6}
    knobs: dict[str, Knob] = {}
    for node in ast.walk(tree):
        found = _env_call(node, consts, helpers)
        if found:
            knob = knobs.setdefault(found[0], Knob(found[0], found[1]))
            if knob.default is None:
                knob.default = found[1]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id if isinstance(t, ast.Name) else t.attr for t in targets if isinstance(t, (ast.Name, ast.Attribute))]
            keys = {f[0] for sub in ast.walk(node.value) if (f := _env_call(sub, consts, helpers))}
            if len(keys) == 1 and names:
                knobs[keys.pop()].attrs.update(names)
    return knobs


def _literal(text: str | None) -> str | None:
    """The value a default's source text stands for, as an environment string ('1e4' -> '1e4', "'1'" -> '1')."""
    if text is None:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value) if isinstance(value, (int, float, str)) else None


def _as_env(value: str) -> str:
    return {"True": "1", "False": "0", "None": ""}.get(value.strip(), value.strip())


def _logged_config(folder: Path, knobs: dict[str, Knob]) -> dict[str, str]:
    """Knob values printed by the record's logs (a `Hyperparameters:` block or `hparam k=v` lines)."""
    from verifier.logs import parse_log

    by_attr = {a: k for k in knobs.values() for a in k.attrs}
    by_attr.update({k.name.lower(): k for k in knobs.values()})
    for log in sorted(folder.glob("*.log")) + sorted(folder.glob("*.txt")) + sorted(folder.glob("logs/*")):
        try:
            hparams = parse_log(log.read_text(encoding="utf-8", errors="replace"), name=log.name).hparams
        except (OSError, ValueError):
            continue
        out = {}
        for attr, value in hparams.items():
            knob = by_attr.get(attr) or by_attr.get(attr.lower())
            if knob is not None and not _OWN.search(knob.name) and "/" not in value:
                out[knob.name] = _as_env(value)
        if out:
            return out
    return {}


def _readme_config(folder: Path, knobs: dict[str, Knob]) -> dict[str, str]:
    """KEY=VALUE assignments in front of the README's torchrun command (continuation lines joined)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    text = re.sub(r"\\\n", " ", readme.read_text(encoding="utf-8", errors="replace"))
    for line in text.splitlines():
        if "torchrun" not in line:
            continue
        head = line.split("torchrun", 1)[0]
        found = {k: v.strip("'\"") for k, v in re.findall(r"\b([A-Z][A-Z0-9_]{1,63})=(\S+)", head)
                 if k in knobs and not _OWN.search(k)}
        if found:
            return found
    return {}


def load_profiles(path: Path = PROFILES_PATH) -> list[dict]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["profiles"]


def _applies(profile: dict, knobs: dict[str, Knob], env: dict[str, str]) -> bool:
    when = profile.get("when", {})
    if not all(k in knobs for k in when.get("reads", [])):
        return False
    if when.get("reads_any") and not any(k in knobs for k in when["reads_any"]):
        return False
    if any(k in knobs for k in when.get("not_reads", [])):
        return False
    return all(env.get(k, _literal(knobs[k].default) if k in knobs else None) == v
               for k, v in when.get("values", {}).items())


def _vocab(env: dict[str, str], knobs: dict[str, Knob], source: str) -> int:
    value = env.get("VOCAB_SIZE") or (_literal(knobs["VOCAB_SIZE"].default) if "VOCAB_SIZE" in knobs else None)
    if value and value.isdigit():
        return int(value)
    m = re.search(r"fineweb10B_sp(\d{3,6})", source) or re.search(r"fineweb_(\d{3,6})_bpe", source)
    return int(m.group(1)) if m else 1024


def plan_folder(folder: str | Path, profiles: list[dict] | None = None) -> Plan:
    folder = Path(folder)
    entry = entry_script(folder)
    plan = Plan(folder=folder, entry=entry)
    if entry is None:
        found = sorted(p.name for p in folder.glob("*.py"))
        plan.problem = ("no train_gpt.py in the folder" + (f" (Python files: {', '.join(found)})" if found else
                                                            " and no other training script: nothing to run"))
        return plan
    plan.source = _sources(folder, entry)
    plan.problem, plan.entry_source = _runnable(folder, entry)
    if plan.entry_source is not None:
        here = ".".join(map(str, sys.version_info[:2]))
        plan.notes.append(f"{entry} runs unwrapped, its Python 3.12 f-strings rewritten for Python {here} "
                          "(same values and line numbers; the record's own file is untouched)")
    plan.knobs = read_knobs(plan.source)
    logged = _logged_config(folder, plan.knobs)
    readme = {} if logged else _readme_config(folder, plan.knobs)
    plan.run_config = logged or readme
    plan.run_config_source = "the logs' hyperparameters" if logged else "the README command" if readme else \
        "script defaults"
    env = dict(plan.run_config)
    own = golf_pack_smoke_env(folder)
    if own:  # golf-pack knows its script's small settings exactly: they replace the profiles' guesses
        plan.profiles.append(GOLF_PACK_PROFILE)
        env.update(own)
    for profile in () if own else profiles if profiles is not None else load_profiles():
        if _applies(profile, plan.knobs, env):
            plan.profiles.append(profile["name"])
            env.update({k: str(v) for k, v in profile.get("env", {}).items()})
    plan.env = {k: v for k, v in env.items() if k in plan.knobs}
    plan.vocab = _vocab(plan.env, plan.knobs, plan.source)
    plan.reads_byte_sidecar = "val_bytes" in plan.source
    return plan
