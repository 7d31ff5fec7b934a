"""docs/checks.md is generated from the registry and must stay in sync with it."""

from __future__ import annotations

from pathlib import Path

from verifier.checks import REGISTRY
from verifier.docs import main as docs_main
from verifier.docs import render_checks_md

DOC = Path(__file__).resolve().parents[2] / "docs" / "checks.md"

REQUIRED = ["files.missing", "schema.submission", "size.artifact-cap", "size.code-bytes", "size.total-bytes",
            "score.missing", "score.mean", "score.units", "seed.mismatch", "seed.count", "time.train", "time.eval",
            "code.lines", "code.provenance", "data.val-tokens", "ttt.static", "stats.significance"]


def test_docs_in_sync():
    assert DOC.read_text(encoding="utf-8") == render_checks_md(), \
        "docs/checks.md is stale: python -m verifier.docs > docs/checks.md"
    assert docs_main(["--check", str(DOC)]) == 0


def test_registry_covers_the_issue_and_documents_every_check():
    assert set(REQUIRED) <= set(REGISTRY)
    text = render_checks_md()
    for spec in REGISTRY.values():
        assert f"`{spec.id}`" in text and spec.rule and spec.hint and spec.title and spec.description
        assert spec.severity in ("error", "warning", "info")


def test_stale_docs_are_detected(tmp_path):
    stale = tmp_path / "checks.md"
    stale.write_text("old\n")
    assert docs_main(["--check", str(stale)]) == 1
