"""Every folder under records/ is exactly what golf-pack renders from its own recipe.yaml (and, once
its seed logs are in, collects from them), and golf-verify finds nothing wrong with what golf-pack
wrote. Runs in-process; passes on an empty records/ too (the mechanics are also exercised on a
temporary tree)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from packager.cli import pack
from packager.collect import has_seed_logs
from packager.errors import UserError
from packager.folder import rerender, stale_files
from packager.recipe import load_recipe
from packager.writer import MANIFEST, sha256_bytes
from verifier import verify_folder

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "records"

# Checks about the files golf-pack writes. ttt.static (a static reading of the TTT code) is about the
# technique, not the packaging: the recipes that reproduce an illegal submission must fail it.
METADATA_CHECKS = {"schema.submission", "score.missing", "score.mean", "score.per-seed", "score.units",
                   "size.code-bytes", "size.total-bytes", "size.artifact-cap", "seed.mismatch", "code.provenance",
                   "code.lines", "files.missing", "files.unreadable", "status.pending"}


def record_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/*/recipe.yaml"))


def problems_of(folder: Path) -> list[str]:
    """One line per way the folder differs from a fresh render, or golf-verify objects to it."""
    name = f"{folder.parent.name}/{folder.name}"
    try:
        rendered = rerender(folder)
    except UserError as exc:
        return [f"{name}: cannot re-render: {exc}"] + [f"{name}: {p}" for p in getattr(exc, "problems", [])]
    out = [f"{name}: {file} differs from a fresh render (run golf-pack on the folder)"
           for file in stale_files(folder, rendered.files)]
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else {}
    expected = {n: sha256_bytes(d) for n, d in rendered.files.items()}
    if manifest.get("files") != expected:
        out.append(f"{name}: {MANIFEST} does not list the generated files with their hashes")
    report = verify_folder(folder)
    errors = [f for f in report.findings if f.severity == "error"]
    out += [f"{name}: golf-verify {f.check}: {f.message}" for f in errors if f.check in METADATA_CHECKS]
    pending = [f for f in report.findings if f.check == "status.pending"]
    sub = json.loads((folder / "submission.json").read_text())
    if has_seed_logs(folder):
        if sub.get("status") not in ("complete", "partial"):
            out.append(f"{name}: seed logs present but submission.json says {sub.get('status')!r}")
    elif sub.get("status") != "pending" or [f.severity for f in pending] != ["info"]:
        out.append(f"{name}: no seed logs, but golf-verify does not report the folder as pending")
    illegal = load_recipe(folder / "recipe.yaml").values.get("ttt_mode") in ("pre_eval", "two_phase_pre_eval")
    if illegal and not any(f.check == "ttt.static" for f in errors):
        out.append(f"{name}: pre-eval TTT recipe not rejected by golf-verify's ttt.static")
    legality = [f for f in errors if f.check.startswith(("ttt.", "legal."))]
    if not illegal and legality:  # the verifier must follow validation data, not mistake training data for it
        out.append(f"{name}: golf-verify {legality[0].check} on a legal recipe: {legality[0].message}")
    return out


def test_every_record_folder_rerenders_byte_identical_and_verifies():
    folders = record_folders(RECORDS)
    problems = [p for folder in folders for p in problems_of(folder)]
    assert not problems, "\n".join(problems)
    # every golf-pack folder has its recipe (else it cannot be re-rendered)
    for manifest in RECORDS.glob(f"*/*/{MANIFEST}"):
        assert (manifest.parent / "recipe.yaml").exists(), manifest.parent


def test_the_check_itself_on_a_temporary_records_tree(tmp_path):
    records = tmp_path / "records"
    assert record_folders(records) == []  # an empty tree passes
    for recipe in ("naive_baseline.yaml", "illegal_pre_eval_ttt.yaml"):
        result = CliRunner().invoke(pack, [str(ROOT / "recipes" / recipe), "--records", str(records)])
        assert result.exit_code == 0, result.output
    folders = record_folders(records)
    assert len(folders) == 2
    for folder in folders:
        assert problems_of(folder) == [], problems_of(folder)
    # a hand-edited README claim is caught by the re-render check
    baseline = next(f for f in folders if f.name.endswith("_NaiveBaseline"))
    readme = baseline / "README.md"
    readme.write_text(readme.read_text().replace("9 layers", "11 layers"))
    assert problems_of(baseline) == [f"track_10min_16mb/{baseline.name}: README.md differs from a fresh render "
                                     f"(run golf-pack on the folder)"]
