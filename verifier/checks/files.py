"""Presence and readability of the files a submission folder must hold."""

from __future__ import annotations

from verifier.checks import check


@check("files.missing", title="Required file missing", severity="error",
       rule="README 'Submission folder': README.md, submission.json, the train logs, train_gpt.py "
            "(and any file it loads); 'All counted code should live in the train_gpt.py script'",
       hint="Add the missing file to the record folder (golf-pack writes all of them).",
       description="submission.json, a training script and at least one training log must exist (an "
                   "empty script counts as missing); README.md should exist (warning). A main script that is "
                   "not called train_gpt.py is reported (info for legacy records, error for golf-pack "
                   "output). When script facts stand in for the scripts (a data-only copy such as "
                   "the shared corpus), README.md is not checked.")
def files_missing(a, emit):
    folder = a.folder
    if not folder.submissions:
        emit("no submission.json in the folder", file=None)
    elif len(folder.submissions) > 1:
        emit(f"{len(folder.submissions)} submission JSON files; {a.submission.name} is the one checked",
             severity="info", files=sorted(s.name for s in folder.submissions))
    if not folder.scripts:
        emit("no training script (train_gpt.py) in the folder")
    else:
        main = folder.scripts.get(folder.main_script or "")
        if main is not None and main.bytes == 0:
            emit(f"{main.name} is empty (0 bytes)", file=main.name, bytes=0)
        if folder.main_script != "train_gpt.py":
            emit(f"the main script is {folder.main_script or 'a file in a subfolder'}, not train_gpt.py",
                 file=folder.main_script, severity="error" if a.strict else "info",
                 scripts=sorted(folder.scripts))
    if folder.facts_mode:
        a.skip("files.missing", "README.md not checked: scripts come from a facts file (data-only copy)")
    elif folder.readme is None:
        emit("no README.md in the folder", severity="warning")
    if not folder.logs and not a.pending:
        emit("no training log (*.log / *.txt) in the folder")


@check("files.unreadable", title="File not read", severity="warning",
       rule="golf-verify reads only regular files inside the folder, at most 64 MiB each",
       hint="Replace links with the files themselves, keep logs under 64 MiB and save them as UTF-8 text.",
       description="Symbolic links that leave the folder (error: never followed), special files, "
                   "files over the 64 MiB read cap, unlistable directories, and logs with undecodable bytes "
                   "(replaced by U+FFFD) are reported instead of read.")
def files_unreadable(a, emit):
    for p in a.folder.problems:
        emit(f"{p.file}: {p.reason}", file=p.file, severity=p.severity)
    for name, count in sorted(a.folder.log_decode_replacements.items()):
        emit(f"{count} undecodable byte(s) or NUL character(s) in the log were replaced", file=name,
             severity="warning", replaced=count)
