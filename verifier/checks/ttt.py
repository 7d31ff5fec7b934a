"""Static red flags for test-time training and evaluation: training on validation tokens before
scoring them, network or hub access, training-data reads during evaluation. The script is parsed,
never run; log lines that describe the evaluation are used too."""

from __future__ import annotations

import ast
import re

from verifier.checks import check

VAL_NAME = re.compile(r"^(?:val|valid|validation)(?:_|$)|_val_|_val$|^x_val|^y_val", re.I)
TRAIN_DATA = re.compile(r"\b(?:train_files|train_loader|train_pattern|fineweb_train|train_shards|TrainLoader|"
                        r"DistributedTokenLoader|args\.train_files)\b")
NETWORK = (
    (re.compile(r"^\s*(?:import|from)\s+(requests|urllib3|httpx|aiohttp|socket|ftplib|paramiko)\b", re.M), "network library"),
    (re.compile(r"^\s*(?:import|from)\s+(urllib\.request|http\.client|huggingface_hub|datasets)\b", re.M), "network / hub module"),
    (re.compile(r"\b(urlopen|hf_hub_download|snapshot_download|load_dataset|HfApi|requests\.(?:get|post))\s*\("), "network / hub call"),
)
_SHELL_CALLS = {"system", "popen", "Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
_SHELL_FETCH = re.compile(r"\b(?:curl|wget|git clone|pip install|aws s3|gsutil)\b")


def _name(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _calls(node, attr: str):
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and _name(n.func) == attr]


def _is_nograd(with_node: ast.With) -> bool:
    for item in with_node.items:
        expr = item.context_expr
        if isinstance(expr, ast.Call):
            expr = expr.func
        if _name(expr) in ("no_grad", "inference_mode"):
            return True
    return False


def _nograd_lines(loop) -> list[tuple[int, int]]:
    spans = []
    for n in ast.walk(loop):
        if isinstance(n, ast.With) and _is_nograd(n):
            spans.append((n.lineno, getattr(n, "end_lineno", n.lineno)))
    return spans


def _inside(line: int, spans) -> bool:
    return any(a <= line <= b for a, b in spans)


def _val_uses(loop, spans) -> list[int]:
    """Lines where validation data is read for computation outside no_grad/inference_mode:
    `val_tokens[...]` slices, or iterating over a validation loader."""
    lines = []
    for n in ast.walk(loop):
        if isinstance(n, ast.Subscript) and VAL_NAME.search(_name(n.value) or ""):
            if not _inside(n.lineno, spans):
                lines.append(n.lineno)
        if isinstance(n, (ast.For, ast.AsyncFor)):
            it = n.iter.func if isinstance(n.iter, ast.Call) else n.iter
            if VAL_NAME.search(_name(it) or "") and not _inside(n.lineno, spans):
                lines.append(n.lineno)
    return lines


def _scoring_lines(loop) -> list[int]:
    lines = []
    for n in ast.walk(loop):
        if isinstance(n, ast.With) and _is_nograd(n):
            lines.append(n.lineno)
        elif isinstance(n, ast.Call) and re.search(r"eval|score", _name(n.func), re.I):
            lines.append(n.lineno)
    return lines


def _loops(node):
    return [n for n in ast.walk(node) if isinstance(n, (ast.For, ast.While, ast.AsyncFor))]


def _epoch_loop(func, loop) -> bool:
    for outer in _loops(func):
        if outer is loop or not (outer.lineno <= loop.lineno <= getattr(outer, "end_lineno", outer.lineno)):
            continue
        target = ast.unparse(outer.target) if isinstance(outer, (ast.For, ast.AsyncFor)) else ""
        if re.search(r"ep(och)?\b|epoch", target, re.I):
            return True
    if isinstance(loop, (ast.For, ast.AsyncFor)):
        return bool(re.search(r"ep(och)?\b|epoch", ast.unparse(loop.target), re.I))
    return False


def analyse_source(text: str) -> tuple[list[dict], str | None]:
    """Red flags in a script's source: [{kind, line, function, detail}], and a parse problem if any."""
    flags: list[dict] = []
    code_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    code = "\n".join(code_lines)
    for pattern, detail in NETWORK:
        m = pattern.search(code)
        if m:
            line = code[:m.start()].count("\n") + 1
            flags.append({"kind": "network", "line": line, "function": None, "detail": f"{detail}: {m.group(0).strip()[:60]}"})

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return flags, f"the source does not parse with this Python ({type(exc).__name__}); only text patterns were checked"
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and _name(call.func) in _SHELL_CALLS:
            for arg in ast.walk(call):
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _SHELL_FETCH.search(arg.value):
                    flags.append({"kind": "network", "line": call.lineno, "function": None,
                                  "detail": f"shell download command: {arg.value.strip()[:60]}"})
                    break
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        fname = func.name
        loops = _loops(func)
        flagged_loop = None
        for loop in sorted(loops, key=lambda n: n.lineno):
            if flagged_loop is not None and flagged_loop.lineno <= loop.lineno <= flagged_loop.end_lineno:
                continue
            spans = _nograd_lines(loop)
            backward = [c.lineno for c in _calls(loop, "backward") if not _inside(c.lineno, spans)]
            if not backward:
                continue
            uses = _val_uses(loop, spans)
            if not uses:
                continue
            first_bw = min(backward)
            scored_before = [ln for ln in _scoring_lines(loop) if ln < first_bw]
            if "warm" in fname.lower():
                flags.append({"kind": "warmup-on-val", "line": first_bw, "function": fname,
                              "detail": "compile warm-up runs backward() on validation tokens"})
                flagged_loop = loop
            elif not scored_before:
                kind = "multi-epoch-val-training" if _epoch_loop(func, loop) else "val-training-before-scoring"
                flags.append({"kind": kind, "line": first_bw, "function": fname,
                              "detail": "backward() on validation tokens with no scoring (no_grad / eval) "
                                        "before it in the same loop" + (" across epochs" if kind.startswith("multi") else "")})
                flagged_loop = loop
        if re.search(r"eval|ttt|score", fname, re.I) and not re.search(r"train", fname, re.I):
            body = ast.unparse(func)
            m = TRAIN_DATA.search(body)
            if m:
                flags.append({"kind": "train-data-in-eval", "line": func.lineno, "function": fname,
                              "detail": f"evaluation code refers to training data ({m.group(0)})"})
    return [f for f in flags if not _scored_at_every_call(tree, f)], None


def _own_nodes(func):
    """Nodes of a function's own body, not of functions defined inside it."""
    todo = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _scored_at_every_call(tree, flag: dict) -> bool:
    """True when a function flagged for training before scoring is only ever reached from loops
    that score (inference-mode block or a score/eval call) earlier in the same iteration: the
    score-first pattern split across helpers (`score chunk; train_chunk(...)` -> `train_epoch(...)`)."""
    if flag["kind"] not in ("val-training-before-scoring", "multi-epoch-val-training") or not flag["function"]:
        return False
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def safe(name: str, seen: frozenset) -> bool:
        if name in seen or len(seen) > 4:
            return False
        sites = 0
        for func in funcs:
            for call in [c for c in _own_nodes(func) if isinstance(c, ast.Call) and _name(c.func) == name]:
                sites += 1
                loops = [lp for lp in _loops(func) if lp.lineno <= call.lineno <= lp.end_lineno]
                inner = max(loops, key=lambda lp: lp.lineno) if loops else None
                if inner is not None and any(ln < call.lineno for ln in _scoring_lines(inner)):
                    continue
                # Not scored here: safe only if the enclosing function is itself reached safely.
                if not safe(func.name, seen | {name}):
                    return False
        return sites > 0

    return safe(flag["function"], frozenset())


_SEVERITY = {"network": None, "warmup-on-val": "error", "multi-epoch-val-training": "error",
             "val-training-before-scoring": None, "train-data-in-eval": None}


@check("ttt.static", title="Evaluation red flag", severity="warning", strict_severity="error",
       rule="README: only test-time train on validation tokens already evaluated; no network, dataset download "
            "or training data during evaluation. Thread #1017 (C1-C4: causal, normalized, score before update, "
            "single pass), #677 (pre-eval TTT), #1530 (compile warm-up on validation tokens)",
       hint="Score each chunk under torch.inference_mode() before any optimizer step on it; warm up compiled "
            "paths on random or training tokens; remove network access from the script.",
       description="Reads the (unwrapped) training script's syntax tree without running it: a loop that calls "
                   "backward() on slices of validation tokens with no scoring (no_grad/inference_mode or an "
                   "eval call) before it (error when inside an epoch loop: pre-eval TTT), compile warm-up "
                   "that runs backward() on validation tokens (error), evaluation functions that touch "
                   "training data, and network/hub access (imports, download calls, URLs). From the logs: a "
                   "TTT compile warm-up that does not state it avoids validation data (warning, #1530).")
def ttt_static(a, emit):
    name = a.folder.code_script
    info = a.folder.scripts.get(name or "")
    if info is None or info.text is None:
        a.skip("ttt.static", "script source not available (script facts only)" if a.folder.scripts else "no script")
    else:
        flags, problem = analyse_source(info.text)
        if problem:
            a.skip("ttt.static", problem)
        for flag in flags:
            sev = _SEVERITY.get(flag["kind"])
            emit(f"{flag['detail']}" + (f" (in {flag['function']})" if flag["function"] else ""),
                 file=name, line=flag["line"], severity=sev, kind=flag["kind"], function=flag["function"])
    for run in a.runs:
        s = run.summary
        if s.ttt_warmup_unlabelled:
            emit("the log warms up the TTT compile path without saying it avoids validation tokens", file=run.log,
                 line=s.ttt_warmup_unlabelled[0], severity="warning", kind="warmup-unlabelled", seed=run.seed)
