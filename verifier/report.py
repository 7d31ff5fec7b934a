"""Findings, the report, and its three renderings (terminal text, JSON, GitHub annotations).

The JSON layout is versioned (`report_version`) and described by `schemas/report.json`."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "Report", "SEVERITIES", "REPORT_VERSION", "render_text", "render_json", "render_github",
           "render_audit"]

SEVERITIES = ("error", "warning", "info")
REPORT_VERSION = 1
_ORDER = {s: i for i, s in enumerate(SEVERITIES)}


def _clean(value: Any) -> Any:
    """JSON-safe evidence: finite floats rounded to 10 significant digits, no NaN/inf."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return str(value)


@dataclass
class Finding:
    check: str
    severity: str
    title: str
    message: str
    file: str | None = None
    line: int | None = None
    evidence: dict = field(default_factory=dict)
    hint: str = ""
    rule: str = ""

    def sort_key(self):
        return (_ORDER.get(self.severity, 9), self.check, self.file or "", self.line or 0, self.message)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["evidence"] = _clean(self.evidence)
        return out


@dataclass
class Report:
    folder: str
    name: str
    profile: str
    profile_reason: str
    track: str
    track_source: str
    policy: dict
    findings: list[Finding] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    significance: dict | None = None
    version: str = ""

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    @property
    def verdict(self) -> str:
        counts = self.counts
        if counts["error"]:
            return "fail"
        if self.summary.get("pending"):
            return "pending"
        return "pass"

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["error"] else 0

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=Finding.sort_key)

    def by_check(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def to_dict(self) -> dict:
        return {
            "report_version": REPORT_VERSION,
            "verifier_version": self.version,
            "folder": self.folder,
            "name": self.name,
            "profile": self.profile,
            "profile_reason": self.profile_reason,
            "track": self.track,
            "track_source": self.track_source,
            "policy": self.policy,
            "verdict": self.verdict,
            "counts": self.counts,
            "findings": [f.to_dict() for f in self.sorted_findings()],
            "skipped": sorted(self.skipped, key=lambda s: (s["check"], s["reason"])),
            "summary": _clean(self.summary),
            "significance": _clean(self.significance) if self.significance is not None else None,
        }


def render_json(reports: list[Report]) -> str:
    payload: Any = reports[0].to_dict() if len(reports) == 1 else {"report_version": REPORT_VERSION,
                                                                       "reports": [r.to_dict() for r in reports]}
    return json.dumps(payload, indent=2, sort_keys=False, allow_nan=False)


def _num(x) -> str:
    return f"{x:.8f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def _fmt_evidence(evidence: dict) -> str:
    parts = []
    for key, value in evidence.items():
        value = _clean(value)
        if isinstance(value, (dict, list)):
            text = json.dumps(value, separators=(",", ":"))
            if len(text) > 160:
                text = text[:157] + "..."
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def render_text(reports: list[Report], *, color: bool = False) -> str:
    colors = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[36m", "pass": "\033[32m",
              "fail": "\033[31m", "pending": "\033[36m"}
    reset = "\033[0m" if color else ""

    def paint(key: str, text: str) -> str:
        return f"{colors[key]}{text}{reset}" if color else text

    out = []
    for rep in reports:
        out.append(f"golf-verify {rep.version}  {rep.folder}")
        out.append(f"  profile: {rep.profile} ({rep.profile_reason}); track: {rep.track} ({rep.track_source}); "
                   f"policy: {rep.policy.get('id')} (p < {rep.policy.get('alpha')}, margin {rep.policy.get('margin_nats')} nats)")
        runs = rep.summary.get("runs") or []
        for run in runs:
            bits = [f"seed {run.get('seed')}" if run.get("seed") is not None else "seed ?"]
            if run.get("val_bpb") is not None:
                bits.append(f"val_bpb {_num(run['val_bpb'])}")
            if run.get("val_loss") is not None:
                bits.append(f"val_loss {_num(run['val_loss'])}")
            if run.get("total_bytes") is not None:
                bits.append(f"{run['total_bytes']} bytes")
            out.append(f"  log {run['log']}: " + ", ".join(bits))
        if rep.summary.get("mean_val_bpb") is not None:
            out.append(f"  mean over {len(runs)} seed log(s): val_bpb {rep.summary['mean_val_bpb']:.8f}"
                       + (f", val_loss {rep.summary['mean_val_loss']:.8f}" if rep.summary.get("mean_val_loss") is not None else ""))
        out.append("")
        findings = rep.sorted_findings()
        if not findings:
            out.append("  no findings")
        for f in findings:
            where = f.file or "."
            if f.line:
                where += f":{f.line}"
            out.append(f"  {paint(f.severity, f.severity.upper()):<8} {f.check}  {where}")
            out.append(f"      {f.message}")
            if f.evidence:
                out.append(f"      evidence: {_fmt_evidence(f.evidence)}")
            if f.hint and f.severity != "info":
                out.append(f"      fix: {f.hint}")
            if f.rule and f.severity == "error":
                out.append(f"      rule: {f.rule}")
        if rep.skipped:
            out.append("")
            out.append("  not checked: " + "; ".join(f"{s['check']} ({s['reason']})" for s in
                                                     sorted(rep.skipped, key=lambda s: s["check"])))
        c = rep.counts
        out.append("")
        out.append(f"  verdict: {paint(rep.verdict, rep.verdict.upper())} "
                   f"({c['error']} error(s), {c['warning']} warning(s), {c['info']} info)")
        out.append("")
    return "\n".join(out)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(reports: list[Report]) -> str:
    """GitHub Actions workflow commands (::error / ::warning / ::notice)."""
    level = {"error": "error", "warning": "warning", "info": "notice"}
    out = []
    for rep in reports:
        for f in rep.sorted_findings():
            props = []
            if f.file:
                props.append(f"file={_escape_prop(rep.folder.rstrip('/') + '/' + f.file)}")
            else:
                props.append(f"file={_escape_prop(rep.folder)}")
            if f.line:
                props.append(f"line={f.line}")
            props.append(f"title={_escape_prop(f'{f.check}: {f.title}')}")
            message = f.message
            if f.evidence:
                message += f" [{_fmt_evidence(f.evidence)}]"
            if f.hint and f.severity != "info":
                message += f" Fix: {f.hint}"
            out.append(f"::{level[f.severity]} {','.join(props)}::{_escape_data(message)}")
        c = rep.counts
        out.append(f"::notice title={_escape_prop('golf-verify verdict')}::{_escape_data(rep.folder)}: "
                   f"{rep.verdict} ({c['error']} errors, {c['warning']} warnings, {c['info']} info)")
    return "\n".join(out)


def _audit_rows(reports: list[Report], broken: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for rep in reports:
        runs = rep.summary.get("runs") or []
        bpbs = [r["val_bpb"] for r in runs if r.get("val_bpb") is not None]
        mean = sum(bpbs) / len(bpbs) if bpbs else None
        std = (sum((x - mean) ** 2 for x in bpbs) / (len(bpbs) - 1)) ** 0.5 if len(bpbs) > 1 else None
        sizes = [r["total_bytes"] for r in runs if r.get("total_bytes") is not None]
        counted = [f.evidence.get("total_bytes") for f in rep.by_check("size.artifact-cap")
                   if isinstance(f.evidence.get("total_bytes"), int)]
        findings = [f for f in rep.sorted_findings() if f.severity in ("error", "warning")]
        rows.append({
            "record": rep.folder, "track": rep.track, "verdict": rep.verdict,
            "score": "" if mean is None else f"{mean:.5f}" + (f" ± {std:.5f}" if std is not None else ""),
            "seeds": ", ".join(str(r["seed"]) for r in runs if r.get("seed") is not None) or "-",
            "artifact": f"{max(sizes + counted):,}" if sizes or counted else "-",
            "findings": [(f.severity, f.check, (f.file or ".") + (f":{f.line}" if f.line else ""), f.message)
                         for f in findings],
            "counts": rep.counts,
        })
    for name, message in broken:
        rows.append({"record": name, "track": "", "verdict": "fail", "score": "", "seeds": "-", "artifact": "-",
                     "findings": [("error", "golf-verify", name, message)], "counts": {"error": 1}})
    return rows


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_audit(reports: list[Report], broken: list[tuple[str, str]] = (), *, html: bool = False) -> str:
    """One row per record: score (mean ± std over the seed logs), seeds, artifact bytes (the largest, as
    counted), verdict, and the error and warning findings with file:line. Markdown, or HTML."""
    rows = _audit_rows(reports, list(broken))
    verdicts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("pass", "pending", "fail")}
    title = (f"golf-verify audit: {len(rows)} record folder(s): {verdicts['pass']} pass, {verdicts['pending']} "
             f"pending, {verdicts['fail']} fail")
    head = ["record", "track", "val_bpb", "seeds", "artifact bytes", "verdict", "findings (error/warning)"]
    if html:
        from html import escape

        out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>golf-verify audit</title>",
               "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
               "padding:4px;vertical-align:top}.fail{color:#b00}.pass{color:#070}.pending{color:#066}"
               ".error{color:#b00}.warning{color:#a60}</style></head><body>",
               f"<h1>{escape(title)}</h1>", "<table>", "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"]
        for r in rows:
            items = "".join(f"<li class=\"{escape(sev)}\">{escape(sev)} <code>{escape(check)}</code> "
                            f"<code>{escape(where)}</code>: {escape(msg)}</li>" for sev, check, where, msg in r["findings"])
            cells = [escape(r["record"]), escape(r["track"]), escape(r["score"]), escape(r["seeds"]),
                     escape(r["artifact"]), f"<span class=\"{r['verdict']}\">{r['verdict'].upper()}</span>",
                     f"<ul>{items}</ul>" if items else ""]
            out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        out += ["</table>", "</body></html>", ""]
        return "\n".join(out)
    out = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        items = "<br>".join(f"{sev} `{check}` `{_md(where)}`: {_md(msg)}" for sev, check, where, msg in r["findings"])
        out.append("| " + " | ".join([_md(r["record"]), r["track"], r["score"], _md(r["seeds"]), r["artifact"],
                                      f"**{r['verdict'].upper()}**", items]) + " |")
    return "\n".join(out) + "\n"
