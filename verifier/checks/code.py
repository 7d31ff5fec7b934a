"""The shipped code: its length, whether it is the code the logs ran, and helper files."""

from __future__ import annotations

import re

from verifier.checks import check

LINE_LIMIT = 1500


@check("code.lines", title="Script over 1500 lines", severity="warning", strict_severity="error",
       rule="README readability rule: the root train_gpt.py stays under 1500 lines; records are not bound "
            "by it, golf-pack renders every script under it",
       hint="Move optional features out of the recipe or simplify the code; golf-pack output must stay under 1500 lines.",
       description="The training script's line count after unwrapping a self-extracting lzma/base85 wrapper "
                   "(decoded statically, never executed) must be at most 1500: a warning for legacy records, "
                   "an error for golf-pack output. A tiny launcher that runs another file is measured by "
                   "that file.")
def code_lines(a, emit):
    name = a.folder.code_script
    info = a.folder.scripts.get(name or "")
    if info is None:
        return
    if info.wrapper not in ("none",) and info.unwrapped_lines is None:
        emit(f"{name} is a self-extracting script whose payload could not be decoded; its real length is "
             f"unknown", file=name, severity="warning", wrapper=info.wrapper, problems=info.problems[:3])
        return
    lines = info.effective_lines
    if lines > LINE_LIMIT:
        what = f"{lines} lines" + (f" once unwrapped ({info.lines} as shipped, {info.wrapper})"
                                   if info.unwrapped_lines is not None else "")
        emit(f"{name} has {what}", file=name, lines=lines, limit=LINE_LIMIT, wrapper=info.wrapper)


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


_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w., ]+))", re.M)


@check("code.helpers", title="Helper file may be uncounted", severity="warning",
       rule="README: helper files that the script loads at run time count toward the artifact "
            "(CHALLENGE: lossless_caps.py, a C++ kernel or a tokenizer shipped without being counted)",
       hint="Inline the helper into train_gpt.py, or count its bytes in the code size the script logs.",
       description="A .py file beside the training script that the script imports or opens must be counted: "
                   "when the logged code size equals the script alone, that is a warning. With script facts "
                   "only (no sources), helper files are listed as info for review.")
def code_helpers(a, emit):
    scripts = a.folder.scripts
    main = a.folder.main_script
    code_script = a.folder.code_script
    helpers = sorted(n for n in scripts if n not in (main, code_script))
    if not helpers or main is None:
        return
    logged = {a.folder.logs[r.log].code_bytes for r in a.runs if a.folder.logs[r.log].code_bytes is not None}
    main_info = scripts.get(code_script or main)
    if a.folder.facts_mode or main_info is None or main_info.text is None:
        for name in helpers:
            emit(f"{name} ({scripts[name].bytes:,} bytes) ships beside {main}; without sources, whether the "
                 f"script loads it at run time is not known", file=name, severity="info",
                 bytes=scripts[name].bytes)
        return
    text = main_info.text
    modules = set()
    for m in _IMPORT.finditer(text):
        for part in (m.group(1) or m.group(2) or "").split(","):
            modules.add(part.strip().split(" ")[0].split(".")[0])
    for name in helpers:
        stem = name.rsplit("/", 1)[-1][:-3]
        loaded = stem in modules or name in text or f'"{stem}"' in text
        if not loaded:
            continue
        if not logged or logged <= {main_info.bytes}:
            emit(f"{main} loads {name} ({scripts[name].bytes:,} bytes) but the logged code size counts only "
                 f"{main_info.name}", file=name, bytes=scripts[name].bytes,
                 logged_code_bytes=sorted(logged) if logged else None)
