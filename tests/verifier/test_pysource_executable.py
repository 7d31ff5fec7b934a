"""verifier.pysource.executable_source: f-strings that need Python 3.12 (PEP 701) rewritten into code that
Python 3.10/3.11 run with the same values and the same line numbers.

The cases are source text (this file must itself compile on 3.10/3.11). Their expected values are written
out; set GOLF_VERIFY_PYTHONS to a Python >= 3.12 to also compare them, and the corpus scripts' trees, with
that interpreter's reading of the original text."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.pysource import _Executable, canonical_source, executable_source
from verifier.scripts import script_info
from verifier_builders import corpus_folders

PRELUDE = 'x = 3.14159\nw = 8\np = 2\ns = "é"\nd = {"k": 1, "a b": "v"}\nxs = ["a", "b"]\n'

# (expression source, its value as Python 3.12 computes it)
CASES = [
    ('f"{", ".join(xs)}"', "a, b"),
    ('f"{d["k"]} {d[\'a b\']}"', "1 v"),
    ('f"{x:>{w}.{p}f}|"', "    3.14|"),
    ('f"{x:{"<"}{w}}|{d["k"]}"', "3.14159 |1"),
    ('f"{s!r} {s!s} {s!a} {d["k"]}"', "'é' é '\\xe9' 1"),
    ('f"{x=} {p = } {x=:.2f} {s=} {s=!s} {s=:} {s=!r:>5} {d["k"]=}"',
     "x=3.14159 p = 2 x=3.14 s='é' s=é s=é s=  'é' d[\"k\"]=1"),
    ('f"a\\tb\\n{"\\n".join(xs)}\\\\{{}}\\x41\\N{BULLET}\\"{w}"', "a\tb\na\nb\\{}A\u2022\"8"),
    ('rf"\\d{d["k"]}\\n{{"', "\\d1\\n{"),
    ('"pre" f"{d["k"]}" \'post\'.upper()', "PRE1POST"),
    ('"a" "b" f"{d["k"]}" f"{w}" "c"', "ab18c"),
    ('f"""one {d["k"]}\n"two" {w\n   + 1} \'\'\'\n"""', 'one 1\n"two" 9 \'\'\'\n'),
    ('f"""{x  # a comment\n:.1f}"""', "3.1"),
    ('f"{f"{x:.{p}f}"!r:>8}"', "  '3.14'"),
    ('f"{xs[0], xs[1]}{"}"}"', "('a', 'b')}"),
    ('F"{ {"k": w}["k"] }"', "8"),
]


def _value(source: str, rewrite=executable_source) -> str:
    code = rewrite(PRELUDE + "v = " + source + "\nafter = 1\n")
    ns: dict = {}
    exec(compile(code, "<case>", "exec"), ns)  # noqa: S102 - the test's own fixed cases
    return ns["v"]


@pytest.mark.parametrize("source,expected", CASES)
def test_rewritten_fstrings_have_the_values_python_312_gives(source, expected):
    assert _value(source) == expected


class _EveryFString(_Executable):
    def legacy(self, m, parts, end):
        return False


def _rewrite_every(text: str) -> str:
    return _EveryFString(text).code(0)[0]


LEGACY = ['f"{x:>{w}.{p}f}"', 'f"{s!r:^9}|{s!a}"', "f'{x=!s:>9}'", 'f"{d}{{}}\\t"', 'rf"{w}\\n"', "f''",
          '"a" f\'{w}\' "b" .upper()', 'f"""{d[\'k\']}\n{w\n + 1}"""', "(f'{x}' 'b')[1:]", "f'{x=:}{w = }{s=}'"]


@pytest.mark.parametrize("source", LEGACY)
def test_forced_rewrite_of_host_fstrings_matches_the_host(source):
    """f-strings this host reads are left alone; rewritten anyway, they give the host's own values."""
    assert executable_source(PRELUDE + source) == PRELUDE + source
    assert _value(source, _rewrite_every) == _value(source, lambda t: t)


def test_line_numbers_and_untouched_code_survive():
    text = 'a = f"{", ".join(["x",\n  "y"])}"\nb = f"""\n{a}\n"""\nc = f\'{a!r}\'  # kept\n\ndef g():\n    return 1\n'
    out = executable_source(text)
    assert out.count("\n") == text.count("\n") and "c = f'{a!r}'  # kept" in out
    assert [(type(n).__name__, n.lineno) for n in ast.parse(out).body] == \
        [(type(n).__name__, n.lineno) for n in ast.parse(canonical_source(text)).body]


# The structural dump compared with a Python >= 3.12 reading the original: an f-string (JoinedStr), or what it
# was rewritten to (`+` of string constants and '...'.format(...) calls), is one node kept with its line.
NORMALIZE = r'''
import ast
def _fmt(n):
    return isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "format" \
        and isinstance(n.func.value, ast.Constant) and isinstance(n.func.value.value, str)
def _leaves(n):
    if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
        return _leaves(n.left) + _leaves(n.right)
    return [n]
def _stringish(n):
    leaves = _leaves(n)
    return any(isinstance(v, ast.JoinedStr) or _fmt(v) for v in leaves) and all(
        isinstance(v, ast.JoinedStr) or _fmt(v) or isinstance(v, ast.Constant) and isinstance(v.value, str)
        for v in leaves)
def dump(n):
    if isinstance(n, ast.expr) and _stringish(n):
        return f"(STR lineno={n.lineno})"
    if isinstance(n, ast.AST):
        parts = [type(n).__name__] + [f + "=" + dump(getattr(n, f, None)) for f in n._fields if f != "type_params"]
        return "(" + ",".join(parts + ([f"lineno={n.lineno}"] if hasattr(n, "lineno") else [])) + ")"
    if isinstance(n, list):
        return "[" + ",".join(dump(x) for x in n) + "]"
    return repr(n)
'''
namespace: dict = {}
exec(NORMALIZE, namespace)  # noqa: S102 - a fixed helper defined above, shared with the subprocess check


def _newer_pythons() -> list[str]:
    """Interpreters named in GOLF_VERIFY_PYTHONS that are Python >= 3.12."""
    found = []
    for name in os.environ.get("GOLF_VERIFY_PYTHONS", "").split():
        exe = shutil.which(name) or (name if Path(name).is_file() else None)
        if exe and subprocess.run([exe, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"]).returncode == 0:
            found.append(exe)
    return found


def _pep701_corpus() -> dict[str, str]:
    """Unwrapped corpus entry scripts that this host cannot compile as written."""
    out = {}
    for folder in corpus_folders():
        path = folder / "train_gpt.py"
        if path.is_file():
            text = script_info(path.name, path.read_bytes()).text
            try:
                compile(text, path.name, "exec")
            except SyntaxError:
                out[folder.name] = text
    return out


def test_corpus_pep701_scripts_compile_here_after_the_rewrite(corpus):
    if sys.version_info >= (3, 12):
        pytest.skip("this host compiles PEP 701 f-strings as written")
    scripts = _pep701_corpus()
    assert len(scripts) >= 5, sorted(scripts)
    for name, text in scripts.items():
        out = executable_source(text)
        compile(out, name, "exec")
        stmts = [(type(n).__name__, n.lineno) for n in ast.walk(ast.parse(out)) if isinstance(n, ast.stmt)]
        assert stmts == [(type(n).__name__, n.lineno) for n in ast.walk(ast.parse(canonical_source(text)))
                         if isinstance(n, ast.stmt)], name


def _run_newer(exe: str, program: str, payload) -> object:
    out = subprocess.run([exe, "-c", program], input=json.dumps(payload), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.skipif(not _newer_pythons(), reason="set GOLF_VERIFY_PYTHONS to a Python >= 3.12 to compare with its "
                                                 "reading of the original f-strings")
def test_values_and_corpus_trees_match_python_312(corpus):
    program = ("import json, sys\n" + f"PRELUDE = {PRELUDE!r}\n" + NORMALIZE +
               "cases, scripts = json.load(sys.stdin)\nvalues = []\nfor c in cases:\n"
               "    ns = {}\n    exec(PRELUDE + 'v = ' + c, ns)\n    values.append(ns['v'])\n"
               "print(json.dumps([values, {k: dump(ast.parse(t)) for k, t in scripts.items()}]))\n")
    scripts = _pep701_corpus()
    for exe in _newer_pythons():
        values, trees = _run_newer(exe, program, [[c for c, _ in CASES], scripts])
        assert values == [_value(c) for c, _ in CASES] == [e for _, e in CASES], exe
        for name, text in scripts.items():
            assert namespace["dump"](ast.parse(executable_source(text))) == trees[name], (exe, name)
