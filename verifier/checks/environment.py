"""What evaluation may not touch: the network (no downloads, no hub) and the training data."""

from __future__ import annotations

import ast
import re

from verifier.checks import check
from verifier.checks.ttt import not_checked, where

NETWORK = (
    (re.compile(r"^[ \t]*(?:import|from)[ \t]+(requests|urllib3|httpx|aiohttp|socket|ftplib|paramiko)\b", re.M),
     "network library"),
    (re.compile(r"^[ \t]*(?:import|from)[ \t]+(urllib\.request|http\.client|huggingface_hub|datasets)\b", re.M),
     "network / hub module"),
    (re.compile(r"\b(urlopen|hf_hub_download|snapshot_download|load_dataset|HfApi|requests\.(?:get|post))\s*\("),
     "network / hub call"),
)
_SHELL_CALLS = {"system", "popen", "Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
_SHELL_FETCH = re.compile(r"\b(?:curl|wget|git clone|pip install|aws s3|gsutil)\b")
TRAIN_DATA = re.compile(r"^(?:train_files|train_loader|train_pattern|fineweb_train|train_shards|TrainLoader|"
                        r"DistributedTokenLoader|ShuffledSequenceLoader)$")
_EVAL_FUNC = re.compile(r"eval|ttt|score", re.I)


def _code_lines(text: str) -> str:
    return "\n".join("" if ln.lstrip().startswith("#") else ln for ln in text.splitlines())


@check("eval.network", title="Network or hub access in the script", severity="warning", strict_severity="error",
       rule="README: no network and no dataset download during evaluation; the artifact must be self-contained",
       hint="Remove network access: ship what the script needs inside the artifact (and count it).",
       description="Imports of network libraries or hub clients (requests, huggingface_hub, datasets, ...), "
                   "download calls (urlopen, hf_hub_download, snapshot_download, load_dataset) and shell "
                   "commands that fetch (curl, wget, pip install, git clone) in the training script or a helper "
                   "it loads. Comments are ignored; an install hint inside an error message is not a download.")
def network(a, emit):
    if not_checked(a, "eval.network"):
        return
    for name, info in a.programs():
        code = _code_lines(info.text)
        for pattern, detail in NETWORK:
            m = pattern.search(code)
            if m:
                line, loc = where(info, code.count("\n", 0, m.start()) + 1)
                emit(f"{detail}: {m.group(0).strip()[:60]}{loc}", file=name, line=line, kind="network")
        prog = info.program
        if prog is None or prog.problem:
            continue
        for f in prog.funcs:
            for c in f.calls:
                if c.name not in _SHELL_CALLS:
                    continue
                text = next((n.value for n in _constants(c.node) if _SHELL_FETCH.search(n.value)), None)
                if text:
                    line, loc = where(info, c.line)
                    emit(f"shell download command: {text.strip()[:60]}{loc}", file=name, line=line, kind="shell")


def _constants(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@check("eval.train-data", title="Evaluation code refers to training data", severity="warning",
       rule="README / CHALLENGE: no training data during evaluation; threads #1950/#1956: work that uses "
            "training data counts as training",
       hint="Keep training-data access (calibration included) inside the timed training phase.",
       description="An evaluation or TTT function (named eval/ttt/score, not train) mentions a training-data "
                   "loader or file pattern (train_files, DistributedTokenLoader, ...). A warning for review: "
                   "the access may be to training data inside the training budget.")
def train_data(a, emit):
    if not_checked(a, "eval.train-data"):
        return
    for name, info in a.programs():
        prog = info.program
        if prog is None or prog.problem:
            continue
        for f in prog.funcs:
            if not _EVAL_FUNC.search(f.name) or "train" in f.name.lower():
                continue
            hits = sorted(x for x in f.idents if TRAIN_DATA.match(x))
            if hits:
                line, loc = where(info, f.line)
                emit(f"{f.name} refers to training data ({', '.join(hits[:3])}){loc}", file=name, line=line,
                     function=f.name, names=hits[:5])
