"""Self-extracting train_gpt.py: the program lzma-compressed and base85-encoded.

Code bytes are artifact bytes, so several public records ship their script in this
form. The payload is the readable program with its docstrings, comments and layout
removed (`payload_source`): the same syntax tree but for the docstrings, which
`payload_source` itself checks. The readable source is shipped beside it as
train_gpt_readable.py.

What makes it small (the #1855 recipe's wrapper; the measurements are in README):
- layout: one space per indentation level and a space between tokens only where two words
  would run together (`x=f(a,b)`): 3% fewer compressed bytes than ast.unparse's layout;
- the .lzma ("alone") container: a 13-byte header and an end marker instead of xz's framing
  (46 bytes fewer), and `lzma.decompress` recognises it by itself, so the decoder stub stays
  `L.decompress(B.b85decode("..."))`, which golf-verify decodes statically;
- pb=0 (no position bits: source text has no 2- or 4-byte structure), and a 4 MiB dictionary,
  larger than any payload (same bytes) but less to allocate when decoding than preset 9's 64 MiB.
"""

from __future__ import annotations

import ast
import base64
import io
import lzma
import tokenize

from verifier.pysource import drop_docstrings

READABLE_NAME = "train_gpt_readable.py"
LZMA_FILTERS = ({"id": lzma.FILTER_LZMA1, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0, "dict_size": 1 << 22},)

_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12 splits f-strings into tokens
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)
_SKIP = {tokenize.NL, tokenize.COMMENT, tokenize.ENDMARKER}


def payload_source(readable: str) -> str:
    """The program without docstrings, comments or layout (what the wrapper executes)."""
    tree = drop_docstrings(ast.parse(readable))
    payload = compact_layout(ast.unparse(tree) + "\n")
    if ast.dump(ast.parse(payload)) != ast.dump(tree):  # a layout change must never change the program
        raise ValueError("packager.wrap: the compacted payload is not the readable program (a golf-pack bug)")
    return payload


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_" or not ch.isascii()


def _needs_space(prev: tuple[int, str], text: str) -> bool:
    """Whether two tokens would run together: `return x`, `1 if`, `in b'..'`, `1 .real`. (Two operator
    tokens side by side never make a longer one in a valid program: `a--b`, `x=-1`, `2**-1` read back
    the same; payload_source checks the program anyway.)"""
    (pkind, ptext), first = prev, text[0]
    return (_word(ptext[-1]) and _word(first)) or (pkind == tokenize.NUMBER and first == ".")


def _tokens(source: str):
    """(kind, text) of each token; an f-string is one STRING token on every Python version."""
    offsets, total = [], 0
    for line in io.StringIO(source).readlines():  # the lines tokenize reads (split at \n only)
        offsets.append(total)
        total += len(line)
    depth = begin = 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == _FSTRING_START:
            depth += 1
            begin = begin if depth > 1 else offsets[tok.start[0] - 1] + tok.start[1]
        elif tok.type == _FSTRING_END:
            depth -= 1
            if not depth:
                yield tokenize.STRING, source[begin:offsets[tok.end[0] - 1] + tok.end[1]]
        elif not depth:
            yield tok.type, tok.string


def compact_layout(source: str) -> str:
    """`source` with one space per indentation level, no comments or blank lines, and a space
    between two tokens only where they would otherwise run together. Same tokens, same program."""
    out, indent, prev = [], 0, None
    for kind, text in _tokens(source):
        if kind in _SKIP:
            continue
        if kind in (tokenize.INDENT, tokenize.DEDENT):
            indent += 1 if kind == tokenize.INDENT else -1
        elif kind == tokenize.NEWLINE:
            out.append("\n")
            prev = None
        else:
            out.append(" " * indent if prev is None else " " if _needs_space(prev, text) else "")
            out.append(text)
            prev = kind, text
    return "".join(out)


def wrap_lzma_b85(readable: str, first_line: str) -> str:
    """The self-extracting script. `first_line` is the readable script's header line."""
    packed = lzma.compress(payload_source(readable).encode("utf-8"), format=lzma.FORMAT_ALONE,
                           filters=LZMA_FILTERS)
    text = base64.b85encode(packed).decode("ascii")
    return (
        f"{first_line}\n"
        f"# Self-extracting: {READABLE_NAME} without docstrings, comments and layout, lzma-compressed, base85-encoded.\n"
        "import lzma as L,base64 as B\n"
        f'exec(compile(L.decompress(B.b85decode("{text}")),"{READABLE_NAME}","exec"))\n'
    )


def unwrap_lzma_b85(wrapped: str) -> str:
    """The payload of a wrapped script, decoded statically (nothing is executed)."""
    for node in ast.walk(ast.parse(wrapped)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 64:
            return lzma.decompress(base64.b85decode(node.value)).decode("utf-8")
    raise ValueError("no base85 payload found")
