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

`executable_source` is the one rewrite meant to run: the CPU harness gives a 3.10/3.11 host the
record's script with only its PEP 701 f-strings turned into equivalent older code (same values,
same line numbers). Both rewrites read f-strings with the same scanner.
"""

from __future__ import annotations

import ast
import bisect
import re
import warnings
from dataclasses import dataclass

__all__ = ["Parsed", "parse", "canonical_source", "executable_source", "FStringError", "GRAMMAR"]

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
class _Field:
    """One replacement field: its (rewritten) expression, conversion, `=` text and format spec."""
    line: int
    expr: str
    conversion: str = ""  # "", "r", "s" or "a"
    debug: str | None = None  # the source text up to and including '=' of a self-documenting field
    spec: list | None = None  # raw literal strings and _Field, in order; None without ':'
    source: str = ""  # the field's text between its braces, as written


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


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def _canonical_parts(parts: list) -> list[tuple[int, str]]:
    """The tuple elements of the canonical form: each literal run as written, each field's expressions."""
    out = []
    for line, part in parts:
        if isinstance(part, str):
            out.append((line, repr(part)))
            continue
        if part.expr:
            out.append((line, "(" + part.expr + ")"))
        out.extend(_canonical_parts([(f.line, f) for f in part.spec or () if isinstance(f, _Field)]))
    return out


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


class _Rewriter:
    """One left-to-right scan of the source; f-strings are rewritten, everything else copied."""

    def __init__(self, text: str):
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    wrap_groups = False  # parenthesise a run of adjacent literals that was joined with '+'

    def code(self, start: int, end: int | None = None) -> tuple[str, int]:
        """Rewrite text[start:end] (plain code). Returns (output, position reached)."""
        text, out, pos = self.text, [], start
        stop = len(text) if end is None else end
        prev_end, prev_joined, group = -1, False, None  # group: [index of its first literal in out, end, joined]
        while True:
            m = _TOKEN.search(text, pos, stop)
            if m is not None and m.group(0).startswith("#"):
                out.append(text[pos:m.end()])
                pos = m.end()
                continue
            adjacent = m is not None and prev_end >= 0 and _GAP.match(text, prev_end, m.start()) is not None
            if not adjacent:
                self.close_group(out, group)
                group = None
            if m is None:
                out.append(text[pos:stop])
                return "".join(out), stop
            out.append(text[pos:m.start()])
            rendered, end_pos, joined = self.string_token(m)
            if adjacent and (joined or prev_joined):
                out.append(" + ")
                group[2] = True
            group = group or [len(out), 0, False]
            out.append(rendered)
            group[1] = len(out)
            prev_end, prev_joined, pos = end_pos, joined, end_pos

    def close_group(self, out: list, group: list | None) -> None:
        if group is not None and group[2] and self.wrap_groups:
            out.insert(group[1], ")")
            out.insert(group[0], "(")

    def string_token(self, m: re.Match) -> tuple[str, int, bool]:
        """(replacement, end, whether the replacement is an expression to join with '+') of the literal m starts."""
        prefix, quote = _prefix_quote(m)
        if "f" in prefix.lower():
            return self.fstring_token(m)
        em = _PLAIN_END[quote].match(self.text, m.end())
        if em is None:
            raise FStringError("unterminated string literal", m.start())
        return self.text[m.start():em.end()], em.end(), False

    def fstring_token(self, m: re.Match) -> tuple[str, int, bool]:
        prefix, quote = _prefix_quote(m)
        return (*self.fstring(m.end(), quote, "r" in prefix.lower()), True)

    def fstring(self, i: int, quote: str, raw: bool) -> tuple[str, int]:
        """Rewrite the f-string whose body starts at i. Returns (tuple source, index after it)."""
        parts, end = self.scan_fstring(i, quote, raw)
        return self.render(_canonical_parts(parts), self.line(i), self.line(end)), end

    def scan_fstring(self, i: int, quote: str, raw: bool) -> tuple[list, int]:
        """The parts of the f-string whose body starts at i: (line, raw literal text | _Field), and its end."""
        text, n = self.text, len(self.text)
        start_line = self.line(i)
        parts: list[tuple[int, str | _Field]] = []
        lit: list[str] = []
        lit_line = start_line
        single = len(quote) == 1

        def flush():
            if lit:
                parts.append((lit_line, "".join(lit)))
                lit.clear()

        while True:
            if i >= n:
                raise FStringError("unterminated f-string", i)
            if text.startswith(quote, i):
                flush()
                return parts, i + len(quote)
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
        """A replacement field starting after '{'; appends it to parts; returns the index after its '}'."""
        text, n = self.text, len(self.text)
        start, line = i, self.line(i)
        expr, i = self.field_expr(i)
        field = _Field(line, expr.strip())
        if text[i] == "=":  # self-documenting `{x=}`: the text up to '=' (and the spaces after it) is printed
            i = _skip(text, i + 1, " \t\r\n")
            field.debug = text[start:i]
        if i < n and text[i] == "!":
            field.conversion = text[i + 1:i + 2]
            i = _skip(text, i + 2, " \t")
        if i < n and text[i] == ":":
            field.spec = []
            i = self.format_spec(i + 1, field.spec)
        if i >= n or text[i] != "}":
            raise FStringError("expected '}' in f-string", i)
        field.source = text[start:i]
        parts.append((line, field))
        return i + 1

    def field_expr(self, i: int) -> tuple[str, int]:
        """The expression of a field starting at i (nested strings rewritten, comments dropped) and the index
        of the '}', '!', ':' or '=' that ends it."""
        text, n = self.text, len(self.text)
        expr_start, out, depth = i, [], 0
        while True:
            if i >= n:
                raise FStringError("unterminated replacement field in f-string", expr_start)
            c = text[i]
            if depth == 0 and (c in "}:" or (c == "!" and not text.startswith("!=", i))
                               or (c == "=" and text[i + 1:i + 2] != "=" and (not out or out[-1][-1:] not in "=<>!"))):
                return "".join(out), i
            if c in "([{":
                depth += 1
                out.append(c)
                i += 1
            elif c in ")]}":
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
            else:
                m = _EXPR_RUN.match(text, i)
                out.append(m.group(0) if m else c)
                i = m.end() if m else i + 1

    def format_spec(self, i: int, spec: list) -> int:
        """The format spec starting at i into spec (literal runs and nested fields); returns the index of '}'."""
        text, n = self.text, len(self.text)
        start = i
        while i < n:
            c = text[i]
            if c in "{}" and i > start:
                spec.append(text[start:i])
            if c == "{":
                fields: list = []
                i = start = self.field(i + 1, fields)
                spec.append(fields[0][1])
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
    def render(parts: list[tuple[int, str]], start_line: int, end_line: int, join: str = "") -> str:
        """Each part on its line: a tuple of them (each followed by ', '), or with join, the parts joined by it."""
        out, line = ["("], start_line
        for k, (part_line, src) in enumerate(parts):
            if join and k:
                out.append(join)
            if part_line > line:
                out.append("\n" * (part_line - line))
                line = part_line
            out.append(src if join else src + ", ")
            line += src.count("\n")
        if end_line > line:
            out.append("\n" * (end_line - line))
        if not parts:
            out.append("''")
        out.append(")")
        return "".join(out)


class _Executable(_Rewriter):
    """Rewrites only the f-strings that Python 3.10/3.11 reject (see executable_source); copies the rest."""

    wrap_groups = True

    def fstring_token(self, m: re.Match) -> tuple[str, int, bool]:
        prefix, quote = _prefix_quote(m)
        raw = "r" in prefix.lower()
        parts, end = self.scan_fstring(m.end(), quote, raw)
        if self.legacy(m, parts, end):
            return self.text[m.start():end], end, False
        rendered = self.render(_executable_parts(parts, raw), self.line(m.end()), self.line(end), " + ")
        return rendered, end, True

    def legacy(self, m: re.Match, parts: list, end: int) -> bool:
        """Whether Python < 3.12 reads this f-string as written: the plain-string end is its end, and no field
        holds a backslash or '#'."""
        plain = _PLAIN_END[_prefix_quote(m)[1]].match(self.text, m.end())
        return plain is not None and plain.end() == end and not any(
            "\\" in f.source or "#" in f.source for _, f in parts if isinstance(f, _Field))


_LITERAL_UNSAFE = re.compile(r"\\.|\r\n?|[\"\n]", re.S)


def _value(literal: str, raw: bool) -> str:
    """The value of an f-string's literal run written as `literal` (escapes processed unless raw)."""
    if raw:
        return literal
    body = _LITERAL_UNSAFE.sub(lambda m: m.group(0) if m.group(0)[0] == "\\" else
                               '\\"' if m.group(0) == '"' else "\\n", literal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes keep their backslash, as in the f-string
        return ast.literal_eval('"' + body + '"')


def _format_call(field: _Field, raw: bool) -> str:
    """`'{!r:spec}'.format(expr[, spec])`: str.format applies the conversion and format spec exactly as the
    f-string would, without looking up a name the script might have rebound (format, repr)."""
    conversion = field.conversion or ("r" if field.debug is not None and field.spec is None else "")
    template, args = "{" + ("!" + conversion if conversion else ""), ["(" + field.expr + ")"]
    spec = field.spec or []
    fixed = _value("".join(spec), raw) if all(isinstance(p, str) for p in spec) else None
    if fixed is not None and "{" not in fixed and "}" not in fixed:
        template += ":" + fixed if fixed else ""
    else:
        template += ":{}"
        args.append(" + ".join(_spec_terms(spec, raw)))
    call = repr(template + "}") + ".format(" + ", ".join(args) + ")"
    return call if field.debug is None else repr(field.debug) + " + " + call


def _spec_terms(spec: list, raw: bool) -> list[str]:
    return [repr(_value(p, raw)) if isinstance(p, str) else _format_call(p, raw) for p in spec]


def _executable_parts(parts: list, raw: bool) -> list[tuple[int, str]]:
    return [(line, repr(_value(p, raw)) if isinstance(p, str) else _format_call(p, raw)) for line, p in parts]


def executable_source(text: str) -> str:
    """The source with every f-string that needs Python 3.12 (PEP 701: the delimiting quote, a backslash or a
    comment inside a field) rewritten into an equivalent expression that Python 3.10 and 3.11 run: literal runs
    become string constants, each field `'{!conv:spec}'.format(expr)`, joined with '+' (a run of adjacent
    literals around one is parenthesised). Line numbers are kept; every other f-string is copied as written.
    The result does not depend on the host."""
    if "f'" not in text and 'f"' not in text and "F'" not in text and 'F"' not in text:
        return text
    return _Executable(text).code(0)[0]


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
