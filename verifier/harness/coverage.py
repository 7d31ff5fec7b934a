"""Coverage of the CPU harness over a records tree: which record folders run end to end under the
harness, which the probes can judge (every probe pass or fail, none `not checked`), and why not.

    python -m verifier.harness.coverage ../shared/upstream/records/track_10min_16mb [--json out.json]

prints a Markdown table (one row per record folder: ran, judged, the four verdicts, seconds, the
reason a record did not run or was not judged) and the totals. Each record is probed with
verifier.probes.run_probes (three runs of its script on CPU), so a full tree takes a while."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from verifier.probes import NOT_CHECKED, PROBE_IDS, run_probes

__all__ = ["record_folders", "probe_row", "render_table", "main"]

_SHORT = {"pass": "pass", "fail": "FAIL", "warning": "warn", NOT_CHECKED: "n/c"}


def record_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def probe_row(folder: Path, timeout: float = 300) -> dict:
    started = time.perf_counter()
    result = run_probes(folder, timeout=timeout)
    reasons = sorted({o.message for o in result.probes.values() if o.status == NOT_CHECKED})
    failed = [f"{pid.split('.', 1)[1]}: {o.first.message if o.first else o.message}"
              for pid, o in result.probes.items() if o.status == "fail"]
    brief = [f"{pid.split('.', 1)[1]}: {q.kind}" + (f" at {q.position}" if q.position is not None else "")
             + (f" ({q.figure})" if q.figure else "") for pid, o in result.probes.items() for q in o.problems[:1]]
    return {"record": folder.name, "ran": result.ran, "judged": result.judged,
            "verdicts": {pid: result.probes[pid].status for pid in PROBE_IDS},
            "seconds": round(time.perf_counter() - started, 1), "not_checked": reasons, "failed": failed,
            "brief": brief,
            "profiles": result.plan.profiles if result.plan else [], "notes": result.plan.notes if result.plan else []}


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_table(rows: list[dict]) -> str:
    head = ["record", "runs", "judged", *(p.split(".", 1)[1] for p in PROBE_IDS), "s", "why not / what failed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        why = "; ".join(r["not_checked"][:1] + r.get("brief", r["failed"])[:2])
        out.append("| " + " | ".join([r["record"], "yes" if r["ran"] else "no", "yes" if r["judged"] else "no",
                                      *(_SHORT[r["verdicts"][p]] for p in PROBE_IDS), f"{r['seconds']:.0f}",
                                      _cell(why)]) + " |")
    ran, judged = sum(r["ran"] for r in rows), sum(r["judged"] for r in rows)
    out.append("")
    out.append(f"{len(rows)} record folders: {ran} run end to end under the harness, {judged} judged by all four "
               "probes.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verifier.harness.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a folder of record folders (records/track_10min_16mb)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run of a script (default 300)")
    parser.add_argument("--only", nargs="*", default=None, help="record folder names to probe (default: all)")
    args = parser.parse_args(argv)
    folders = [f for f in record_folders(args.root) if not args.only or f.name in args.only]
    rows = []
    for folder in folders:
        rows.append(probe_row(folder, args.timeout))
        print(f"[coverage] {folder.name}: ran={rows[-1]['ran']} judged={rows[-1]['judged']} "
              f"{rows[-1]['seconds']:.0f}s", file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(render_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
