"""A record's own train_gpt.py, imported in this process on CPU.

Nothing of a record is copied: its file is imported from ../shared as it is, with environment
variables set while its module body runs (that is when its Hyperparameters class reads them).
Code that lives inside its main() (optimizer set-up, pruning, test-time training) is run from
that file too: the statements are cut out of main()'s syntax tree and executed with the names
they read. Only what a CPU lacks is stubbed, and only while a record's code runs: torch.compile
(identity), torch.cuda.synchronize (no-op) and CUDA autocast (off, as it is on a CPU).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import itertools
import os
import warnings
from functools import cached_property
from pathlib import Path
from types import ModuleType
from unittest import mock

import torch

_names = itertools.count()


@contextlib.contextmanager
def environ(env: dict):
    """os.environ with `env` (values as strings) added, restored afterwards."""
    saved = dict(os.environ)
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def cpu_stubs(env: dict | None = None):
    """What a record's code needs to run on a CPU-only build of torch, and nothing else."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(torch, "compile", lambda fn=None, *a, **k: fn))
        stack.enter_context(mock.patch.object(torch.cuda, "synchronize", lambda *a, **k: None))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # "CUDA is not available, disabling autocast" and the like
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # progress prints
        stack.enter_context(environ(env or {}))
        yield


class RecordScript:
    """One record's train_gpt.py: its module (imported with `env`), its source and its main()."""

    def __init__(self, path: Path, env: dict | None = None):
        self.path, self.env = Path(path), dict(env or {})
        self.source = self.path.read_text(encoding="utf-8")
        self.lines = self.source.splitlines()

    @cached_property
    def module(self) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"golf_parity_record_{next(_names)}", self.path)
        module = importlib.util.module_from_spec(spec)
        with cpu_stubs(self.env):
            spec.loader.exec_module(module)
        return module

    @cached_property
    def main(self) -> ast.FunctionDef:
        return next(n for n in ast.parse(self.source).body if isinstance(n, ast.FunctionDef) and n.name == "main")

    def args(self):
        """The record's Hyperparameters (its defaults, with this script's env)."""
        return self.module.Hyperparameters()

    def env_defaults(self) -> dict[str, str]:
        """{ENV: default as written} of every os.environ.get("ENV", literal) in the file."""
        out = {}
        for node in ast.walk(ast.parse(self.source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and ast.unparse(node.func.value) == "os.environ" and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[1], ast.Constant)):
                out.setdefault(node.args[0].value, str(node.args[1].value))
        return out

    def gpt_kwargs(self, args) -> dict:
        """The keyword arguments main() passes to its first GPT(...), evaluated on `args`."""
        call = next(n for n in ast.walk(self.main) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Name) and n.func.id == "GPT")
        return {kw.arg: eval(compile(ast.Expression(kw.value), str(self.path), "eval"), {"args": args})
                for kw in call.keywords}

    def build_model(self, args) -> torch.nn.Module:
        return self.module.GPT(**self.gpt_kwargs(args))

    def call_literal(self, function: str, position: int):
        """The literal argument at `position` of main()'s call to `function` (e.g. the int6 classes)."""
        call = next(n for n in ast.walk(self.main) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Name) and n.func.id == function)
        return ast.literal_eval(call.args[position])

    def start(self, node: ast.stmt) -> str:
        """The source of a statement's first line, from where the statement starts."""
        return self.lines[node.lineno - 1][node.col_offset:]

    def fragment(self, first: str, last: str | None = None) -> list[ast.stmt]:
        """The statements of main() (at any depth) from the one whose first line starts with `first`
        through the one that starts with `last` (default: just the first), in one statement list."""
        for block in _statement_lists(self.main):
            texts = [self.start(s) for s in block]
            starts = [i for i, t in enumerate(texts) if t.startswith(first)]
            ends = [i for i, t in enumerate(texts) if t.startswith(last or first)]
            if starts and ends and ends[-1] >= starts[0]:
                return block[starts[0]: ends[-1] + 1]
        raise LookupError(f"{self.path}: no statements from {first!r} to {last!r} in main()")

    def between(self, after: str, before: str) -> list[ast.stmt]:
        """The statements of main()'s body strictly between the one starting with `after` and
        the next one starting with `before`."""
        body = self.main.body
        texts = [self.start(s) for s in body]
        i = next(i for i, t in enumerate(texts) if t.startswith(after))
        j = next(j for j, t in enumerate(texts) if j > i and t.startswith(before))
        return body[i + 1: j]

    def run(self, statements: list[ast.stmt], names: dict, env: dict | None = None) -> dict:
        """Execute statements cut from main() with the record's globals plus `names`; returns the namespace."""
        namespace = {**vars(self.module), **names}
        code = compile(ast.Module(body=statements, type_ignores=[]), str(self.path), "exec")
        with cpu_stubs({**self.env, **(env or {})}):
            exec(code, namespace)  # the record's own statements, on CPU  # noqa: S102
        return namespace

    def call(self, function: str, *args, **kwargs):
        """A module-level function of the record, called under the CPU stubs."""
        with cpu_stubs(self.env):
            return getattr(self.module, function)(*args, **kwargs)


def _statement_lists(node: ast.AST):
    for child in ast.walk(node):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(child, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block
        for handler in getattr(child, "handlers", []):
            yield handler.body
