"""Record-folder writes: atomic, never touching files golf-pack did not write."""

from __future__ import annotations

import pytest

from packager.errors import UserError
from packager.writer import MANIFEST, write_folder


def test_new_folder_and_manifest(tmp_path):
    folder = tmp_path / "rec"
    written = write_folder(folder, {"a.txt": b"A", "b.txt": b"B"})
    assert written == ["a.txt", "b.txt"]
    assert (folder / "a.txt").read_bytes() == b"A" and (folder / MANIFEST).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["rec"]  # no temp folder left behind


def test_rewrite_only_changed_and_keep_other_files(tmp_path):
    folder = tmp_path / "rec"
    write_folder(folder, {"a.txt": b"A", "b.txt": b"B"})
    (folder / "train_seed1.log").write_bytes(b"precious")
    assert write_folder(folder, {"a.txt": b"A2", "b.txt": b"B"}) == ["a.txt"]
    assert (folder / "a.txt").read_bytes() == b"A2"
    assert (folder / "train_seed1.log").read_bytes() == b"precious"


def test_hand_edit_is_refused_naming_file_unless_forced(tmp_path):
    folder = tmp_path / "rec"
    write_folder(folder, {"a.txt": b"A"})
    (folder / "a.txt").write_bytes(b"edited")
    with pytest.raises(UserError, match=r"rec/a\.txt: edited by hand"):
        write_folder(folder, {"a.txt": b"A"})
    assert (folder / "a.txt").read_bytes() == b"edited"
    write_folder(folder, {"a.txt": b"A"}, force=True)
    assert (folder / "a.txt").read_bytes() == b"A"


def test_foreign_folder_is_refused(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "train.log").write_text("someone's log")
    with pytest.raises(UserError, match="not written by golf-pack"):
        write_folder(folder, {"a.txt": b"A"})
    assert sorted(p.name for p in folder.iterdir()) == ["train.log"]


def test_foreign_file_with_generated_name_is_refused(tmp_path):
    folder = tmp_path / "rec"
    write_folder(folder, {"a.txt": b"A"})
    (folder / "README.md").write_text("mine")
    with pytest.raises(UserError, match="not written by golf-pack"):
        write_folder(folder, {"a.txt": b"A", "README.md": b"generated"})
    assert (folder / "README.md").read_text() == "mine"
