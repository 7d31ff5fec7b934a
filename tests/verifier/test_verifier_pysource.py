"""verifier.pysource: one grammar (Python 3.10-3.13 with PEP 701 f-strings) on every host.

The host independence is tested two ways: the 3.12-only sources parse on whatever Python runs the
tests, and the structural digests of their trees are pinned in golden/parse_digests.json, so a host
that read them differently would fail. Set GOLF_VERIFY_PYTHONS to other interpreters (paths or names,
space separated) to compare them directly."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.pysource import GRAMMAR, canonical_source, parse
from verifier.scripts import script_info
from verifier_builders import ROOT, corpus_folders

GOLDEN = Path(__file__).resolve().parent / "golden" / "parse_digests.json"
UPDATE = os.environ.get("GOLF_UPDATE_GOLDEN") == "1"

# Python 3.12 syntax (PEP 701) that 3.10 and 3.11 reject when handed to ast.parse directly.
PEP701 = '''import math
names = ["a", "b"]
print(f"{", ".join(names)}")
width = 8
label = f"{'q'!r:>{width}} {f"{math.pi:.{3}f}"} {{literal}} {width=}"
block = f"""first {names[0]}
second {len(names)
        + 1}
"""
after = 1
'''

# The structural dump compared across hosts: node types, fields and line numbers; fields that only
# newer Pythons have (type_params) are left out.
DUMP = r'''
import ast
def dump(n):
    if isinstance(n, ast.AST):
        parts = [type(n).__name__]
        for f in n._fields:
            if f != "type_params":
                parts.append(f + "=" + dump(getattr(n, f, None)))
        for a in ("lineno", "end_lineno"):
            if hasattr(n, a):
                parts.append(f"{a}={getattr(n, a)}")
        return "(" + ",".join(parts) + ")"
    if isinstance(n, list):
        return "[" + ",".join(dump(x) for x in n) + "]"
    return repr(n)
'''
namespace: dict = {}
exec(DUMP, namespace)  # noqa: S102 - a fixed helper defined above, shared with the subprocess check
dump = namespace["dump"]


def test_pep701_source_parses_on_this_host_with_every_expression():
    assert sys.version_info >= (3, 10)
    parsed = parse(PEP701)
    assert parsed.problem is None, parsed.problem
    names = {n.id for n in ast.walk(parsed.tree) if isinstance(n, ast.Name)}
    calls = {n.func.attr for n in ast.walk(parsed.tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
    assert {"names", "width", "math", "len"} <= names and "join" in calls
    consts = {n.value for n in ast.walk(parsed.tree) if isinstance(n, ast.Constant)}
    assert "q" in consts and "{literal}" in " ".join(str(c) for c in consts)


def test_line_numbers_survive_the_rewrite():
    canon = canonical_source(PEP701)
    assert canon.count("\n") == PEP701.count("\n")
    tree = parse(PEP701).tree
    after = next(n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "after")
    assert after.lineno == PEP701.splitlines().index("after = 1") + 1
    length = next(n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "len")
    assert length.lineno == PEP701.splitlines().index("second {len(names)") + 1


def test_adjacent_literals_and_minified_keywords():
    src = 'x = 1\ny = "a" f"{x}" "c"\nz = "k"if x else"v"\nw = [f"{x}"f"{x}"]\n'
    tree = parse(src).tree
    assert tree is not None and len(tree.body) == 4
    assert isinstance(tree.body[1].value, ast.BinOp)  # joined with +, not called


def test_newer_or_broken_syntax_is_refused_with_one_message_everywhere():
    for src, line in (("type Alias = int\n", 1), ("def f[T](x: T) -> T:\n    return x\n", 1),
                      ("try:\n    pass\nexcept* ValueError:\n    pass\n", 3)):
        parsed = parse(src)
        assert parsed.tree is None and "newer than golf-verify reads" in parsed.problem and parsed.line == line
    bad = parse("x = 1\ndef f(:\n    pass\n")
    assert bad.tree is None and bad.line == 2 and GRAMMAR in bad.problem
    assert parse('x = f"{1"\n').tree is None and parse('x = f"}"\n').problem.startswith("line 1")
    assert "NUL" in parse("x = 1\x00\n").problem


def _pep701_scripts() -> dict[str, str]:
    """The corpus scripts that only Python >= 3.12 accepts as written (lzma-wrapped April records)."""
    out = {}
    for folder in corpus_folders():
        path = folder / "train_gpt.py"
        if not path.is_file():
            continue
        info = script_info(path.name, path.read_bytes())
        if info.wrapped:
            try:
                ast.parse(info.text)
            except SyntaxError:
                out[f"{folder.parent.name}/{folder.name}"] = info.text
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(dump(parse(text).tree).encode()).hexdigest()


def _corpus_texts(keys) -> dict[str, str]:
    out = {}
    for key in keys:
        path = ROOT / ".." / "shared" / "upstream" / "records" / key / "train_gpt.py"
        if path.is_file():
            out[key] = script_info(path.name, path.read_bytes()).text
    return out


def test_corpus_scripts_read_the_same_on_every_host(corpus):
    if UPDATE and sys.version_info < (3, 12):
        digests = {key: _digest(text) for key, text in sorted(_pep701_scripts().items())}
        digests["<PEP701 sample>"] = _digest(PEP701)
        GOLDEN.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    pinned = json.loads(GOLDEN.read_text(encoding="utf-8"))
    texts = _corpus_texts(k for k in pinned if not k.startswith("<"))
    assert len(texts) >= 5
    if sys.version_info < (3, 12):  # these scripts really are 3.12-only: this host rejects them as written
        for key, text in texts.items():
            with pytest.raises(SyntaxError):
                ast.parse(text)
    digests = {key: _digest(text) for key, text in texts.items()}
    digests["<PEP701 sample>"] = _digest(PEP701)
    assert digests == pinned, "the canonical trees differ from the pinned ones: the verdict would depend on the host"


def _other_pythons() -> list[str]:
    found = []
    for name in os.environ.get("GOLF_VERIFY_PYTHONS", "").split():
        exe = shutil.which(name) or (name if Path(name).is_file() else None)
        if exe:
            found.append(exe)
    return found


@pytest.mark.skipif(not _other_pythons(), reason="set GOLF_VERIFY_PYTHONS to other Python interpreters to compare "
                                                 "their reading of the PEP 701 corpus scripts with this host's")
def test_other_interpreters_read_the_same_trees(tmp_path, corpus):
    scripts = _corpus_texts(k for k in json.loads(GOLDEN.read_text(encoding="utf-8")) if not k.startswith("<"))
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(scripts))
    probe = (DUMP + "\nimport hashlib, importlib.util, json, sys\n"
             f"spec = importlib.util.spec_from_file_location('pysource', {str(ROOT / 'verifier' / 'pysource.py')!r})\n"
             "mod = importlib.util.module_from_spec(spec); sys.modules['pysource'] = mod; spec.loader.exec_module(mod)\n"
             f"texts = json.load(open({str(texts)!r}))\n"
             "print(json.dumps({k: hashlib.sha256(dump(mod.parse(t).tree).encode()).hexdigest() "
             "for k, t in texts.items()}))\n")
    here = {k: _digest(t) for k, t in scripts.items()}
    for exe in _other_pythons():
        out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == here, exe
