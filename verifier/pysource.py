"""Parse a submission's Python source the same way on every host Python (3.10 to 3.13).

Python 3.12 (PEP 701) lets an f-string hold the quote that delimits it (`f"{", ".join(xs)}"`),
backslashes and comments; the lzma-wrapped April records use that, and `ast.parse` of 3.10/3.11
rejects it. So the verifier never hands the raw text to `ast.parse`: `canonical_source` first
rewrites every f-string into an ordinary expression that every supported host parses to the same
tree, and `parse` rejects syntax that only some hosts accept (PEP 695 type parameters, PEP 654
`except*`) with the same message everywhere. A verdict therefore cannot depend on the host.

An f-string becomes a parenthesised tuple of its literal text (one string constant per literal
run, escapes left as written) and its replacement-field expressions (format-spec fields
included), each placed on the line where it stood, so every line number of the script is kept:

    f"step:{i}/{n} loss:{loss:.4f}"   ->   ('step:', i, '/', n, ' loss:', loss,)

Adjacent string literals around an f-string are joined with `+` (implicit concatenation of a
tuple is not an expression). The static checks only read names, calls and constants, which the
rewrite preserves; nothing is ever executed.
"""

from __future__ import annotations

import ast
import bisect
import re
import warnings
from dataclasses import dataclass

__all__ = ["Parsed", "parse", "canonical_source", "FStringError", "GRAMMAR"]

GRAMMAR = "Python 3.10-3.13 with PEP 701 f-strings"

# The next comment or string literal (with its prefix) in code.
_QUOTE = "('''|\"\"\"|'|\")"
_TOKEN = re.compile(r"(?=[#'\"rRbBuUfF])(?:#[^\r\n]*|(?<![\w.])([rRbBuUfF]{1,2})" + _QUOTE + "|" + _QUOTE + ")")
_PLAIN_END = {
    "'": re.compile(r"(?:[^'\\\n]|\\.)*'", re.S),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*"', re.S),
    "'''": re.compile(r"(?:[^'\\]|\\.|'(?!''))*'''", re.S),
    '"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""', re.S),
}
_GAP = re.compile(r"(?:[ \t\f\r\n]|\\\r?\n|#[^\r\n]*)*\Z")
_LITERAL_RUN = re.compile(r"[^\\{}'\"\r\n]+")
_EXPR_RUN = re.compile(r"[^\\{}()\[\]'\"#:!=\r\nrRbBuUfF]+")
# Syntax that parses on some supported hosts only: refused on all of them.
_NEWER = re.compile(r"^[ \t]*(?:type[ \t]+\w+[ \t]*[\[=]|(?:async[ \t]+)?def[ \t]+\w+[ \t]*\[|class[ \t]+\w+[ \t]*\[)"
                    r"|\bexcept[ \t]*\*", re.M)


class FStringError(ValueError):
    """An f-string that no Python accepts (unterminated, a lone '}')."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass
class Parsed:
    tree: ast.Module | None
    problem: str | None = None
    line: int | None = None


def _prefix_quote(m: re.Match) -> tuple[str, str]:
    return (m.group(1) or "", m.group(2) or m.group(3))


def _string_at(text: str, i: int) -> re.Match | None:
    m = _TOKEN.match(text, i)
    return m if m is not None and not m.group(0).startswith("#") else None


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


class _Rewriter:
    """One left-to-right scan of the source; f-strings are rewritten, everything else copied."""

    def __init__(self, text: str):
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def code(self, start: int, end: int | None = None) -> tuple[str, int]:
        """Rewrite text[start:end] (plain code). Returns (output, position reached)."""
        text, out, pos = self.text, [], start
        stop = len(text) if end is None else end
        prev_str_end, prev_was_f = -1, False
        while True:
            m = _TOKEN.search(text, pos, stop)
            if m is None:
                out.append(text[pos:stop])
                return "".join(out), stop
            if m.group(0).startswith("#"):
                out.append(text[pos:m.end()])
                pos = m.end()
                continue
            prefix, quote = _prefix_quote(m)
            out.append(text[pos:m.start()])
            body = m.end()
            adjacent = prev_str_end >= 0 and _GAP.match(text, prev_str_end, m.start()) is not None
            if "f" in prefix.lower():
                rendered, end_pos = self.fstring(body, quote, "r" in prefix.lower())
                if adjacent:
                    out.append(" + ")
                out.append(rendered)
                prev_was_f = True
            else:
                em = _PLAIN_END[quote].match(text, body)
                if em is None:
                    raise FStringError("unterminated string literal", m.start())
                end_pos = em.end()
                if adjacent and prev_was_f:
                    out.append(" + ")
                out.append(text[m.start():end_pos])
                prev_was_f = False
            prev_str_end = pos = end_pos

    def fstring(self, i: int, quote: str, raw: bool) -> tuple[str, int]:
        """Rewrite the f-string whose body starts at i. Returns (tuple source, index after it)."""
        text, n = self.text, len(self.text)
        start_line = self.line(i)
        parts: list[tuple[int, str]] = []  # (line, source of one tuple element)
        lit: list[str] = []
        lit_line = start_line
        single = len(quote) == 1

        def flush():
            if lit:
                parts.append((lit_line, repr("".join(lit))))
                lit.clear()

        while True:
            if i >= n:
                raise FStringError("unterminated f-string", i)
            if text.startswith(quote, i):
                flush()
                end = i + len(quote)
                return self.render(parts, start_line, self.line(end)), end
            c = text[i]
            if c == "\\":
                if not raw and text.startswith("\\N{", i):
                    close = text.find("}", i)
                    if close < 0:
                        raise FStringError("malformed \\N escape in f-string", i)
                    lit.append(text[i:close + 1])
                    i = close + 1
                    continue
                lit.append(text[i:i + 2])
                i += 2
                continue
            if c == "{":
                if text.startswith("{{", i):
                    lit.append("{")
                    i += 2
                    continue
                flush()
                i = self.field(i + 1, parts)
                lit_line = self.line(i)
                continue
            if c == "}":
                if text.startswith("}}", i):
                    lit.append("}")
                    i += 2
                    continue
                raise FStringError("single '}' is not allowed in an f-string", i)
            if c in "\r\n" and single:
                raise FStringError("unterminated f-string", i)
            m = _LITERAL_RUN.match(text, i)
            if m:
                lit.append(m.group(0))
                i = m.end()
            else:
                lit.append(c)
                i += 1

    def field(self, i: int, parts: list) -> int:
        """A replacement field starting after '{'; appends its expression(s); returns index after '}'."""
        text, n = self.text, len(self.text)
        expr_start = i
        expr_line = self.line(i)
        out: list[str] = []
        depth = 0
        while True:
            if i >= n:
                raise FStringError("unterminated replacement field in f-string", expr_start)
            c = text[i]
            if c in "([{":
                depth += 1
                out.append(c)
                i += 1
            elif c in ")]":
                depth -= 1
                out.append(c)
                i += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
                out.append(c)
                i += 1
            elif c == "#":
                close = text.find("\n", i)
                i = n if close < 0 else close
            elif (c in "'\"rRbBuUfF") and (m := _string_at(text, i)):
                rendered, end = self.code(i, self.string_end(m))
                out.append(rendered)
                i = end
            elif depth == 0 and c == "!" and not text.startswith("!=", i):
                i += 2  # conversion !r / !s / !a
                while i < n and text[i] in " \t":
                    i += 1
                break
            elif depth == 0 and c == ":":
                break
            elif depth == 0 and c == "=" and text[i + 1:i + 2] != "=" and (not out or out[-1][-1:] not in "=<>!"):
                i += 1  # self-documenting `{x=}`: the expression is what precedes '='
                while i < n and text[i] in " \t\r\n":
                    i += 1
                if i < n and text[i] == "!":
                    i += 2
                break
            else:
                m = _EXPR_RUN.match(text, i)
                if m:
                    out.append(m.group(0))
                    i = m.end()
                else:
                    out.append(c)
                    i += 1
        expr = "".join(out).strip()
        if expr:
            parts.append((expr_line, "(" + expr + ")"))
        if i < n and text[i] == ":":
            i = self.format_spec(i + 1, parts)
        if i >= n or text[i] != "}":
            raise FStringError("expected '}' in f-string", i)
        return i + 1

    def format_spec(self, i: int, parts: list) -> int:
        text, n = self.text, len(self.text)
        while i < n:
            c = text[i]
            if c == "{":
                i = self.field(i + 1, parts)
            elif c == "}":
                return i
            else:
                i += 1
        raise FStringError("unterminated format spec in f-string", i)

    def string_end(self, m: re.Match) -> int:
        """End index of the string literal (f-string or not) that m starts."""
        prefix, quote = _prefix_quote(m)
        if "f" in prefix.lower():
            return self.fstring(m.end(), quote, "r" in prefix.lower())[1]
        em = _PLAIN_END[quote].match(self.text, m.end())
        if em is None:
            raise FStringError("unterminated string literal", m.start())
        return em.end()

    @staticmethod
    def render(parts: list[tuple[int, str]], start_line: int, end_line: int) -> str:
        out, line = ["("], start_line
        for part_line, src in parts:
            if part_line > line:
                out.append("\n" * (part_line - line))
                line = part_line
            out.append(src + ", ")
            line += src.count("\n")
        if end_line > line:
            out.append("\n" * (end_line - line))
        if not parts:
            out.append("''")
        out.append(")")
        return "".join(out)


def canonical_source(text: str) -> str:
    """The source with every f-string rewritten (see the module docstring); line numbers kept."""
    if "f'" not in text and 'f"' not in text and "F'" not in text and 'F"' not in text:
        return text
    return _Rewriter(text).code(0)[0]


def parse(text: str) -> Parsed:
    """Parse a script without executing it; the same tree (or the same problem) on every host."""
    if "\x00" in text:
        return Parsed(None, f"contains NUL bytes; not Python source ({GRAMMAR})")
    try:
        source = canonical_source(text)
    except FStringError as exc:
        line = _line_of(text, exc.offset)
        return Parsed(None, f"line {line}: {exc} ({GRAMMAR})", line)
    except RecursionError:
        return Parsed(None, f"nesting too deep to read ({GRAMMAR})")
    newer = _NEWER.search(source)
    if newer:
        line = _line_of(source, newer.start())
        return Parsed(None, f"line {line}: syntax newer than golf-verify reads (type parameters or except*; "
                            f"{GRAMMAR})", line)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except SyntaxError as exc:
        return Parsed(None, f"line {exc.lineno}: invalid syntax ({GRAMMAR})", exc.lineno)
    except (ValueError, RecursionError, MemoryError) as exc:
        return Parsed(None, f"cannot be read as Python: {type(exc).__name__} ({GRAMMAR})")
    return Parsed(tree)


def drop_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with the docstrings of its module, classes and functions removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree
