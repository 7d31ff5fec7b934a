"""What counts toward the 16,000,000-byte artifact, as review counts it.

The artifact is the shipped training script, every shipped file that script loads at run time,
and the compressed model. A file is loaded when the script (or a helper it loads, transitively)
imports it as a module, or names it anywhere in its source (any position on a line: minified
scripts do `if h.x:from ngram_tilt import S`): open()/exec()/compile(), g++ on a .cpp, ctypes on a
.so. Data a script reads from the challenge's data directory (a tokenizer under
`./data/tokenizers/`) is data, not code: a shipped tokenizer or other data file counts only when
the script builds its path from its own location (`__file__`).

Nothing is executed; the sources are read as text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Loaded", "loaded_files", "CODE_SUFFIXES"]

CODE_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".cxx", ".cu", ".cuh", ".h", ".hpp", ".so", ".pyx", ".pyd")
DATA_SUFFIXES = (".model", ".vocab", ".json", ".bin", ".npy", ".npz", ".pt", ".txt", ".tsv")
_IMPORT = re.compile(r"\bfrom\s+([A-Za-z_][\w.]*)\s+import\b|\bimport\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*)"
                     r"|\b(?:__import__|import_module)\(\s*['\"]([\w.]+)['\"]")


@dataclass
class Loaded:
    name: str  # path relative to the record folder
    bytes: int
    how: str  # "import" | "named" | "named beside __file__"
    by: str  # the script that loads it
    line: int | None


def _line_no(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _imports(text: str) -> dict[str, int]:
    """Module names imported anywhere in the text -> first line."""
    out: dict[str, int] = {}
    for m in _IMPORT.finditer(text):
        names = m.group(1) or m.group(3) or ""
        if m.group(2):
            names = ",".join(part.split(" as ")[0] for part in m.group(2).split(","))
        for name in names.split(","):
            name = name.strip()
            if name:
                out.setdefault(name, _line_no(text, m.start()))
    return out


def _module_file(module: str, files: dict[str, int]) -> str | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        base = "/".join(parts[:n])
        for cand in (f"{base}.py", f"{base}/__init__.py"):
            if cand in files:
                return cand
    return None


def _named(text: str, rel: str) -> int | None:
    """Position where the file's name appears in the text as a name (not inside a longer name)."""
    base = rel.rsplit("/", 1)[-1]
    for m in re.finditer(r"(?<![\w.-])" + re.escape(base) + r"(?![\w-])", text):
        return m.start()
    return None


def _beside_script(text: str, pos: int) -> bool:
    """The statement around `pos` builds the path from the script's own location."""
    start = text.rfind("\n", 0, max(0, pos - 400))
    window = text[start + 1:text.find("\n", pos) if text.find("\n", pos) >= 0 else len(text)]
    return "__file__" in window


def loaded_files(main: str, sources: dict[str, str], files: dict[str, int]) -> list[Loaded]:
    """Shipped files that `main` loads, transitively through loaded .py helpers.

    `sources`: relative name -> text of every readable script (unwrapped); `files`: relative name ->
    size of every file in the folder."""
    out: dict[str, Loaded] = {}
    todo = [main]
    seen = {main}
    while todo:
        current = todo.pop(0)
        text = sources.get(current)
        if not text:
            continue
        for module, line in _imports(text).items():
            rel = _module_file(module, files)
            if rel and rel not in seen and rel != main:
                out[rel] = Loaded(rel, files[rel], "import", current, line)
                seen.add(rel)
                todo.append(rel)
        for rel, size in sorted(files.items()):
            if rel in seen or rel == main:
                continue
            low = rel.lower()
            is_code = low.endswith(CODE_SUFFIXES)
            if not (is_code or low.endswith(DATA_SUFFIXES)):
                continue
            pos = _named(text, rel)
            if pos is None:
                continue
            if not is_code and not _beside_script(text, pos):
                continue
            out[rel] = Loaded(rel, size, "named" if is_code else "named beside __file__", current, _line_no(text, pos))
            seen.add(rel)
            if low.endswith(".py"):
                todo.append(rel)
    return sorted(out.values(), key=lambda x: x.name)
