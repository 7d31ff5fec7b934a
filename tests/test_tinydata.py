"""The offline tiny dataset (`golf-data tiny`): determinism, format, folder safety."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from verifier import tinydata
from packager.runtime import data
from packager.runtime.bpb import build_sentencepiece_luts, count_bytes
from packager.runtime.data import DistributedTokenLoader, load_data_shard, load_validation_tokens
from verifier.tinydata import TinyDataError, build_tiny_dataset


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "out"
    return out, build_tiny_dataset(out)


def test_layout_and_summary(built):
    out, summary = built
    shard_dir = out / "datasets" / "fineweb10B_sp1024"
    assert Path(summary["data_path"]) == shard_dir
    assert Path(summary["tokenizer_path"]) == out / "tokenizers" / "fineweb_1024_bpe.model"
    assert [Path(p).name for p in summary["val_files"]] == ["fineweb_val_000000.bin"]
    train_names = [Path(p).name for p in summary["train_files"]]
    assert train_names == [f"fineweb_train_{i:06d}.bin" for i in range(len(train_names))]
    assert len(train_names) >= 2  # several shards, so streaming crosses shard boundaries
    assert sorted(p.name for p in shard_dir.iterdir()) == sorted(train_names + ["fineweb_val_000000.bin"])
    marker = json.loads((out / tinydata.MARKER_NAME).read_text())
    assert marker["complete"] is True and marker["sha256"] == summary["sha256"]
    assert all(not Path(f).is_absolute() for f in marker["files"])
    assert summary["build_seconds"] < 20


def test_deterministic_across_builds_and_folders(built, tmp_path):
    out, summary = built
    other = tmp_path / "again"
    second = build_tiny_dataset(other)
    assert second["sha256"] == summary["sha256"]
    assert tree_hashes(other) == tree_hashes(out)
    # The recorded hashes are those of the files on disk.
    on_disk = tree_hashes(out)
    assert all(on_disk[name] == digest for name, digest in summary["sha256"].items())


def test_tokenizer_matches_challenge_settings(built):
    _, summary = built
    sp = spm.SentencePieceProcessor(model_file=summary["tokenizer_path"])
    assert sp.vocab_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(1024)) == 256
    # No dummy prefix: the first word keeps no "▁"; digits are split one by one.
    assert sp.encode("the 2024", out_type=str)[0].startswith("t")
    assert [p for p in sp.encode("x 2024", out_type=str) if p.strip("\u2581")][-4:] == ["2", "0", "2", "4"]
    # Byte fallback instead of <unk> for unseen characters.
    assert sp.unk_id() not in sp.encode("\u6f22\u5b57 \U0001f600")


def test_shards_hold_documents_delimited_by_bos(built):
    _, summary = built
    vals = [load_data_shard(p).numpy() for p in summary["val_files"]]
    trains = [load_data_shard(p).numpy() for p in summary["train_files"]]
    val = np.concatenate(vals)
    train = np.concatenate(trains)
    assert val.size == summary["val_tokens"] > 20_000
    assert train.size == summary["train_tokens"] >= 1_000_000
    assert val.max() < 1024 and train.max() < 1024
    # Each document is BOS + its tokens (no EOS): shards start at a document.
    assert val[0] == 1 and train[0] == 1
    assert int((val == 1).sum()) == summary["docs_val"]
    assert not (val == 2).any() and not (train == 2).any()
    assert all(s.size == tinydata.DEFAULT_SHARD_TOKENS for s in trains[:-1])


def test_validation_documents_never_in_train(built):
    _, summary = built
    sp = spm.SentencePieceProcessor(model_file=summary["tokenizer_path"])

    def documents(paths):
        toks = np.concatenate([load_data_shard(p).numpy() for p in paths]).tolist()
        docs, cur = set(), None
        for t in toks:
            if t == 1:
                if cur:
                    docs.add(tuple(cur))
                cur = []
            else:
                cur.append(t)
        # The train split stops at a document end, so the last one is whole too.
        docs.add(tuple(cur))
        return docs

    val_docs, train_docs = documents(summary["val_files"]), documents(summary["train_files"])
    assert len(val_docs) == summary["docs_val"] and len(train_docs) == summary["docs_train"]
    assert not val_docs & train_docs
    assert sp.decode(list(next(iter(sorted(val_docs))))).strip()


def test_split_is_a_partition():
    docs = tinydata.source_documents()
    train, val = tinydata.split_documents(docs, 0.2, 7)
    assert sorted(train + val) == sorted(docs)
    assert len(val) == round(len(docs) * 0.2)
    assert tinydata.split_documents(docs, 0.2, 8) != (train, val)
    with pytest.raises(TinyDataError, match="val_fraction"):
        tinydata.split_documents(docs, 1.0, 7)


def test_runtime_can_train_and_score_on_it(built):
    _, summary = built
    pattern = str(Path(summary["data_path"]) / "fineweb_train_*.bin")
    loader = DistributedTokenLoader(pattern, 0, 1, torch.device("cpu"))
    for _ in range(48):  # a few dozen steps of 2 x 4096-token batches
        x, y = loader.next_batch(8192, 1024, 1)
    assert x.shape == (8, 1024) and int(x.max()) < 1024
    val = load_validation_tokens(str(Path(summary["data_path"]) / "fineweb_val_*.bin"), 1024)
    assert (val.numel() - 1) % 1024 == 0 and val.numel() > 20_000
    sp = spm.SentencePieceProcessor(model_file=summary["tokenizer_path"])
    ids = val.to(torch.int64)
    nbytes = int(count_bytes(ids[:-1], ids[1:], build_sentencepiece_luts(sp, 1024, torch.device("cpu"))).sum())
    # English help text: between 2 and 5 bytes per token at vocab 1024.
    assert 2.0 < nbytes / (ids.numel() - 1) < 5.0


def test_shard_header_constants_match_runtime():
    assert (tinydata.SHARD_MAGIC, tinydata.SHARD_VERSION, tinydata.SHARD_HEADER_INTS) == (
        data.SHARD_MAGIC,
        data.SHARD_VERSION,
        data.SHARD_HEADER_INTS,
    )


def test_refuses_non_empty_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TinyDataError, match="not empty"):
        build_tiny_dataset(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_refuses_not_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TinyDataError, match="not a folder"):
        build_tiny_dataset(tmp_path / "file")


def test_rebuild_in_place_keeps_user_files_and_drops_stale_shards(tmp_path):
    out = tmp_path / "out"
    first = build_tiny_dataset(out, train_tokens=600_000, shard_tokens=100_000)
    (out / "README.txt").write_text("user notes")
    (out / "tokenizers" / "other.model").write_bytes(b"user model")
    second = build_tiny_dataset(out, train_tokens=250_000, shard_tokens=100_000)
    assert len(first["train_files"]) > len(second["train_files"]) == 3
    shard_dir = out / "datasets" / "fineweb10B_sp1024"
    assert sorted(p.name for p in shard_dir.glob("fineweb_train_*.bin")) == [Path(p).name for p in second["train_files"]]
    assert (out / "README.txt").read_text() == "user notes"
    assert (out / "tokenizers" / "other.model").read_bytes() == b"user model"
    assert not list(out.rglob("*.tmp"))


def test_refuses_foreign_shard_in_previous_build(tmp_path):
    out = tmp_path / "out"
    build_tiny_dataset(out, train_tokens=50_000)
    stray = out / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000099.bin"
    stray.write_bytes(b"not ours")
    before = tree_hashes(out)
    with pytest.raises(TinyDataError, match="fineweb_train_000099.bin"):
        build_tiny_dataset(out, train_tokens=50_000)
    assert tree_hashes(out) == before


def test_source_documents_are_unique_and_sized():
    docs = tinydata.source_documents()
    assert len(docs) == len(set(docs)) > 100
    assert sum(len(d) >= tinydata.MIN_DOC_CHARS for d in docs) > len(docs) // 2
