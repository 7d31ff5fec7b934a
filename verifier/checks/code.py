"""The shipped code: its length, whether it is the code the logs ran, and helper files."""

from __future__ import annotations

import ast

from verifier.checks import check
from verifier.pysource import drop_docstrings, parse

LINE_LIMIT = 1500


@check("code.lines", title="Script over 1500 lines", severity="warning", strict_severity="error",
       rule="README readability rule: the root train_gpt.py stays under 1500 lines; records are not bound "
            "by it; golf-pack ships every train_gpt.py under it (wrapped, with its readable twin beside it, "
            "when the readable form is longer)",
       hint="Move optional features out of the recipe or simplify the code, or ship the script wrapped "
            "(code: {wrap: lzma_b85}) with its readable twin beside it.",
       description="For golf-pack output (an error): the shipped training script must be at most 1500 lines. "
                   "A self-extracting lzma/base85 wrapper (decoded statically, never executed) is fine when its "
                   "readable twin ships beside it (a top-level script whose program, docstrings aside, is the "
                   "decoded payload); without one the payload must be at most 1500 lines, and a payload that "
                   "cannot be decoded is a warning. Other records are not bound by the rule and get no finding. "
                   "A tiny launcher that runs another file is measured by that file.")
def code_lines(a, emit):
    name = a.folder.code_script
    info = a.folder.scripts.get(name or "")
    if info is None or not a.strict:  # the rule binds golf-pack output only; other records are not bound by it
        return
    if info.lines > LINE_LIMIT:
        emit(f"{name} has {info.lines} lines as shipped", file=name, lines=info.lines, limit=LINE_LIMIT,
             wrapper=info.wrapper)
        return
    if info.wrapper == "none":
        return
    if info.unwrapped_lines is None:
        emit(f"{name} is a self-extracting script whose payload could not be decoded; its real length is "
             f"unknown", file=name, severity="warning", wrapper=info.wrapper, problems=info.problems[:3])
        return
    if info.unwrapped_lines > LINE_LIMIT and readable_twin(a, name, info) is None:
        emit(f"{name} has {info.unwrapped_lines} lines once unwrapped ({info.lines} as shipped, {info.wrapper}) "
             "and no readable twin beside it", file=name, lines=info.unwrapped_lines, limit=LINE_LIMIT,
             wrapper=info.wrapper)


def program_dump(text: str) -> str | None:
    """The syntax tree of a source without its docstrings (a fresh parse: the cached trees stay intact), its
    f-strings' text joined (see _JoinText)."""
    tree = parse(text).tree
    return None if tree is None else ast.dump(_JoinText().visit(drop_docstrings(tree)))


class _JoinText(ast.NodeTransformer):
    """verifier.pysource writes an f-string as a tuple of its text runs and fields, and joins adjacent literals
    with +; the wrapper's payload (ast.unparse) writes each concatenation as one f-string. One flat tuple with
    adjacent text merged makes both spellings of a string compare equal."""

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        parts = [node.left, node.right]
        if isinstance(node.op, ast.Add) and any(isinstance(p, ast.Tuple) for p in parts) and all(
                isinstance(p, ast.Tuple) or _text(p) for p in parts):
            return self.visit_Tuple(ast.Tuple(elts=[e for p in parts for e in (p.elts if isinstance(p, ast.Tuple)
                                                                              else [p])], ctx=ast.Load()))
        return node

    def visit_Tuple(self, node):
        node = self.generic_visit(node)
        elts = []
        for e in node.elts:
            if elts and _text(e) and _text(elts[-1]):
                elts[-1] = ast.Constant(value=elts[-1].value + e.value)
            elif not (_text(e) and e.value == ""):
                elts.append(e)
        node.elts = elts
        return node


def _text(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def readable_twin(a, name: str, info) -> str | None:
    """The top-level script beside a wrapped one whose program, docstrings aside, is its decoded payload."""
    payload = program_dump(info.text or "")
    for other, twin in sorted(a.folder.scripts.items()):
        if other != name and "/" not in other and twin.wrapper == "none" and twin.text and payload is not None \
                and program_dump(twin.text) == payload:
            return other
    return None


@check("code.provenance", title="Logs ran different code", severity="warning", strict_severity="error",
       rule="CHALLENGE 'known inconsistencies': bytes_code / the logged code size disagree with the shipped "
            "file (the script was edited after the run)",
       hint="Ship exactly the script that produced the logs, or re-run the seeds with the shipped script.",
       description="The code size each seed log printed (`Code size: N bytes`, `Code size (uncompressed)`, "
                   "`code:N`, golf-pack's `code_sha256:... code_bytes:N`) must equal the size of a shipped "
                   "script (or of all of them together); a logged sha256 must equal the shipped file's.")
def code_provenance(a, emit):
    scripts = {n: i for n, i in a.folder.scripts.items() if "/" not in n}
    if not scripts:
        a.skip("code.provenance", "no shipped script")
        return
    sizes = {i.bytes: n for n, i in scripts.items()}
    total = sum(i.bytes for i in scripts.values())
    shas = {i.sha256: n for n, i in scripts.items() if i.sha256}
    main = a.folder.code_script or a.folder.main_script
    by_size: dict[int, list[str]] = {}
    for run in a.runs:
        for name in [run.log] + run.companions:
            s = a.folder.logs[name]
            if s.code_bytes is None or s.code_bytes_approx:
                continue
            if s.code_bytes not in sizes and s.code_bytes != total:
                by_size.setdefault(s.code_bytes, [])
                if name not in by_size[s.code_bytes]:
                    by_size[s.code_bytes].append(name)
            if s.code_sha256 and shas and s.code_sha256 not in shas:
                emit(f"the log ran code with sha256 {s.code_sha256[:12]}..., which matches no shipped script",
                     file=name, line=s.code_bytes_line, severity="error", logged_sha256=s.code_sha256,
                     shipped_sha256={n: i.sha256 for n, i in scripts.items()})
    for size, names in sorted(by_size.items()):
        ref = scripts.get(main) if main else None
        emit(f"{len(names)} log(s) report {size:,} code bytes but {main} is {ref.bytes:,} bytes"
             if ref else f"{len(names)} log(s) report {size:,} code bytes; no shipped script has that size",
             file=names[0], line=a.folder.logs[names[0]].code_bytes_line, logged_code_bytes=size,
             script=main, script_bytes=ref.bytes if ref else None, logs=sorted(names))


@check("code.helpers", title="Helper file loaded but not counted", severity="warning",
       rule="README: 'All counted code should live in the train_gpt.py script'; helper files that the script "
            "loads at run time count toward the artifact (CHALLENGE: lossless_caps.py, a C++ kernel or a "
            "tokenizer shipped without being counted)",
       hint="Inline the helper into train_gpt.py, or count its bytes in the code size the script logs "
            "(size.artifact-cap counts it either way).",
       description="Every shipped file the training script loads at run time (verifier.artifact: an import, a "
                   "file it opens, execs or compiles, at any position on a line, transitively through loaded "
                   ".py helpers; .py/.c/.cpp/.so and data files read from beside the script) must be counted "
                   "in the code size the logs report: a helper the logs did not count is a warning here and "
                   "its bytes are added to the artifact by size.artifact-cap. With script facts only (no "
                   "sources), other .py files are listed as info for review. Fires on merged record "
                   "2026-04-09_A2_Muon097_3Seed (ngram_tilt.py and ngram/fused_expert_kernel.cpp, compiled "
                   "with g++ at evaluation).")
def code_helpers(a, emit):
    scripts = a.folder.scripts
    main = a.folder.main_script
    if main is None:
        return
    if a.folder.facts_mode:
        for name in sorted(n for n in scripts if n not in (main, a.folder.code_script)):
            emit(f"{name} ({scripts[name].bytes:,} bytes) ships beside {main}; without sources, whether the "
                 f"script loads it at run time is not known", file=name, severity="info", bytes=scripts[name].bytes)
        return
    helpers = [x for x in a.loaded if x.name != a.folder.code_script]
    if not helpers:
        return
    main_bytes = scripts[main].bytes + (scripts[a.folder.code_script].bytes
                                         if a.folder.code_script not in (None, main) else 0)
    counted = {a.folder.logs[r.log].code_bytes for r in a.runs if a.folder.logs[r.log].code_bytes is not None}
    full = main_bytes + sum(x.bytes for x in helpers)
    if counted and all(c >= full for c in counted):
        return
    for x in helpers:
        by = scripts.get(x.by)
        where = f" ({by.where(x.line)} of {x.by})" if x.line and by is not None else ""
        emit(f"{x.by} loads {x.name} ({x.bytes:,} bytes, {x.how}{where}); the logged code size "
             f"({', '.join(f'{c:,}' for c in sorted(counted)) or 'not printed'}) does not include it",
             file=x.name, bytes=x.bytes, loaded_by=x.by, how=x.how, at_line=x.line,
             logged_code_bytes=sorted(counted))


@check("code.syntax", title="Script cannot be read", severity="error",
       rule="golf-verify fails closed: a check that cannot read the code says 'not checked' and the verdict "
            "does not pass",
       hint="Ship a script that Python 3.10-3.13 can parse (f-strings as in PEP 701 are fine).",
       description="The training script (after unwrapping a self-extracting wrapper) or a helper it loads does "
                   "not parse with the grammar golf-verify reads on every host (Python 3.10-3.13 plus PEP 701 "
                   "f-strings; the same verdict whichever Python runs golf-verify). The legality checks that "
                   "need the code are then not checked, and this error keeps the record from passing.")
def code_syntax(a, emit):
    for name, info in [(n, a.folder.scripts.get(n)) for n in [a.folder.code_script] + [
            x.name for x in a.loaded if x.name.endswith(".py")] if n]:
        if info is None or info.text is None:
            continue
        prog = info.program
        if prog is not None and prog.problem:
            line = None if info.wrapped else prog.problem_line
            emit(f"{name} cannot be read: {prog.problem}" + (f" ({info.where(prog.problem_line)})"
                                                             if info.wrapped and prog.problem_line else "")
                 + "; the legality checks are not checked", file=name, line=line, problem=prog.problem)
