"""The check registry. Every check has a stable id, a title, a default severity (legacy records)
and a severity for golf-pack output, the rule it enforces, and a fix hint. `docs/checks.md`
is generated from this registry (`python -m verifier.docs`) and a test keeps it in sync."""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable

from verifier.report import SEVERITIES, Finding

__all__ = ["CheckSpec", "REGISTRY", "check", "run_checks", "Emit"]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    severity: str
    strict_severity: str
    rule: str
    hint: str
    description: str
    func: Callable

    def severity_for(self, profile: str) -> str:
        return self.strict_severity if profile == "strict" else self.severity


REGISTRY: dict[str, CheckSpec] = {}


def check(id: str, *, title: str, severity: str, rule: str, hint: str, description: str,
          strict_severity: str | None = None):
    if severity not in SEVERITIES or (strict_severity and strict_severity not in SEVERITIES):
        raise ValueError(f"bad severity for {id}")

    def deco(func):
        if id in REGISTRY:
            raise ValueError(f"duplicate check id {id}")
        REGISTRY[id] = CheckSpec(id, title, severity, strict_severity or severity, rule, hint,
                                 " ".join(description.split()), func)
        return func
    return deco


class Emit:
    """Collects one check's findings; severity defaults to the check's severity for the profile."""

    def __init__(self, spec: CheckSpec, profile: str):
        self.spec = spec
        self.profile = profile
        self.findings: list[Finding] = []

    def __call__(self, message: str, *, file: str | None = None, line: int | None = None,
                 severity: str | None = None, hint: str | None = None, **evidence) -> Finding:
        sev = severity or self.spec.severity_for(self.profile)
        finding = Finding(check=self.spec.id, severity=sev, title=self.spec.title, message=message, file=file,
                          line=line, evidence=evidence, hint=self.spec.hint if hint is None else hint,
                          rule=self.spec.rule)
        self.findings.append(finding)
        return finding


def run_checks(analysis, only: Iterable[str] | None = None) -> list[Finding]:
    wanted = set(only) if only else None
    findings: list[Finding] = []
    for spec in REGISTRY.values():
        if wanted is not None and spec.id not in wanted:
            continue
        if spec.id == "verifier.internal":
            continue
        emit = Emit(spec, analysis.profile)
        try:
            spec.func(analysis, emit)
        except Exception as exc:  # a bug in a check must not hide the others
            internal = REGISTRY["verifier.internal"]
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            findings.append(Finding(check=internal.id, severity=internal.severity, title=internal.title,
                                    message=f"check {spec.id} failed: {type(exc).__name__}: {exc}",
                                    evidence={"where": f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"},
                                    hint=internal.hint, rule=internal.rule))
            continue
        findings.extend(emit.findings)
    folder = getattr(analysis, "folder", None)  # the rerun checks run on a stand-in without a folder
    if folder is not None and folder.golf_pack:
        _golf_pack_hints(analysis, findings)
    return findings


_GENERATED = ("submission.json", "README.md", "train_gpt.py", "requirements.txt", "recipe.yaml")


def _golf_pack_hints(analysis, findings: list[Finding]) -> None:
    """golf-pack output: a finding on a generated file is fixed by re-running golf-pack, never by hand."""
    manifest = analysis.folder.manifest or {}
    generated = set(manifest.get("files") or ()) if isinstance(manifest.get("files"), dict) else set(_GENERATED)
    for f in findings:
        if f.severity == "info" or f.file not in generated:
            continue
        if f.file == "train_gpt.py" or f.file == "recipe.yaml":
            f.hint = ("This folder is golf-pack output: change the recipe and re-render with `golf-pack "
                      "<recipe or folder>`; do not edit the generated train_gpt.py (golf-pack refuses to "
                      "overwrite a hand-edited file). " + f.hint)
        else:
            f.hint = (f"This folder is golf-pack output: re-run `golf-pack <folder>`, which rewrites {f.file} from "
                      f"the recipe and the seed logs; do not edit {f.file} by hand.")


# Registration order is the order of docs/checks.md.
for _module in ("files", "schema", "sizes", "scores", "seeds", "timing", "code", "data", "ttt", "legality", "environment",
                "significance", "rerun",
                "probes"):
    importlib.import_module(f"verifier.checks.{_module}")


@check("verifier.internal", title="Verifier failure", severity="error",
       rule="golf-verify reports every problem as a finding, never as a traceback",
       hint="Report the message to the golf-pack maintainers; the other checks still ran.",
       description="A check raised an unexpected exception. The remaining checks still run and the "
                   "verdict fails, so a verifier bug cannot pass a folder silently.")
def _internal(analysis, emit):  # pragma: no cover - placeholder so the id is documented
    return None
