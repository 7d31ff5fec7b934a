"""Write a record folder safely.

- All files are first written to a temporary folder beside the target, so a failure
  leaves nothing half-written; a new folder appears with one rename.
- `.golf-pack.json` (the manifest) records the sha256 of every file golf-pack wrote.
  Re-rendering replaces only those files, each with an atomic rename, and only if
  they still have the recorded hash: a hand edit is refused (naming the file) unless
  `force`. Files golf-pack did not write (logs, artifacts, notes) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from packager.errors import UserError

MANIFEST = ".golf-pack.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no files map")
        return manifest
    except (ValueError, OSError) as exc:
        raise UserError(f"unreadable golf-pack manifest ({exc}); restore it or move the folder aside", str(path)) from None


def plan_changes(folder: Path, files: dict[str, bytes], force: bool) -> list[str]:
    """Names of files to (re)write; raises when writing would lose someone's edits."""
    manifest = read_manifest(folder) if folder.exists() else None
    if folder.exists() and manifest is None and any(folder.iterdir()):
        raise UserError("folder exists and was not written by golf-pack (no .golf-pack.json); "
                        "choose another slug/date or move it aside", str(folder))
    recorded = (manifest or {}).get("files", {})
    changes = []
    for name, data in files.items():
        target = folder / name
        if target.exists():
            current = sha256_bytes(target.read_bytes())
            if name not in recorded:
                if current != sha256_bytes(data) and not force:
                    raise UserError("file exists but was not written by golf-pack; move it aside or use --force",
                                    str(target))
            elif current != recorded[name] and not force:
                raise UserError("edited by hand since golf-pack wrote it; put the change in the recipe "
                                "(or use --force to overwrite it)", str(target))
            if current == sha256_bytes(data):
                continue
        changes.append(name)
    return changes


def write_folder(folder: Path, files: dict[str, bytes], *, force: bool = False, extra_manifest: dict | None = None) -> list[str]:
    """Write `files` into `folder` (created if needed). Returns the names written."""
    folder = Path(folder)
    changes = plan_changes(folder, files, force)
    manifest = {"generator": "golf-pack", **(extra_manifest or {}),
                "files": {name: sha256_bytes(data) for name, data in sorted(files.items())}}
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the new folder's mode
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / MANIFEST).write_bytes(manifest_bytes)
        if not folder.exists():
            os.rename(tmp, folder)
            return sorted(files)
        for name in changes:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, folder / name)
        # The manifest goes last: if anything above failed, the old manifest still
        # describes the files on disk.
        os.replace(tmp / MANIFEST, folder / MANIFEST)
        return sorted(changes)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
