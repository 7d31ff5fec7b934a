"""Self-extracting train_gpt.py: the program lzma-compressed and base85-encoded.

Code bytes are artifact bytes, so several public records ship their script in this
form. The payload is the readable program with its docstrings, comments and layout
removed (`payload_source`): the same syntax tree but for the docstrings, which the
tests check. The readable source is shipped beside it as train_gpt_readable.py.
"""

from __future__ import annotations

import ast
import base64
import lzma

from verifier.pysource import drop_docstrings

READABLE_NAME = "train_gpt_readable.py"


def payload_source(readable: str) -> str:
    """The program without docstrings, comments or layout (what the wrapper executes)."""
    return ast.unparse(drop_docstrings(ast.parse(readable))) + "\n"


def wrap_lzma_b85(readable: str, first_line: str) -> str:
    """The self-extracting script. `first_line` is the readable script's header line."""
    packed = lzma.compress(payload_source(readable).encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    text = base64.b85encode(packed).decode("ascii")
    return (
        f"{first_line}\n"
        f"# Self-extracting: {READABLE_NAME} without docstrings and comments, lzma-compressed, base85-encoded.\n"
        "import lzma as L,base64 as B\n"
        f'exec(compile(L.decompress(B.b85decode("{text}")),"{READABLE_NAME}","exec"))\n'
    )


def unwrap_lzma_b85(wrapped: str) -> str:
    """The payload of a wrapped script, decoded statically (nothing is executed)."""
    for node in ast.walk(ast.parse(wrapped)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and len(node.value) > 64:
            return lzma.decompress(base64.b85decode(node.value)).decode("utf-8")
    raise ValueError("no base85 payload found")
