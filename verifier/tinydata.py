"""`golf-data tiny OUT [--vocab N]`: a small, offline stand-in for the challenge's FineWeb data.

It trains a SentencePiece BPE tokenizer on the English help texts that ship with
Python (`pydoc_data.topics`) with the challenge's tokenizer settings, and writes
FineWeb-format shards in the challenge's layout:

    OUT/datasets/fineweb10B_sp1024/fineweb_val_000000.bin
    OUT/datasets/fineweb10B_sp1024/fineweb_train_000000.bin ...
    OUT/tokenizers/fineweb_1024_bpe.model

(sp4096 / sp8192 with `--vocab 4096` / `--vocab 8192`: the help texts support vocabularies up to
13,541 pieces.)

As in the challenge export, every document is its BOS token followed by its tokens
(no EOS), validation documents come first and are never in the train split, and a
shard holds a fixed number of tokens (documents run across shard boundaries). The
help texts hold about 150K tokens, so the train split repeats its documents in a
new shuffled order each pass until it reaches `train_tokens`; the validation
split is one pass over held-out documents.

The output is a pure function of the arguments and the Python version (the help
texts change between Python releases): one tokenizer thread and fixed seeds make
it byte-identical across runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from verifier.errors import UserError

MARKER_NAME = "golf_tiny_dataset.json"
MARKER_KIND = "golf-data tiny"
DEFAULT_SEED = 1337
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_TRAIN_TOKENS = 1_200_000
DEFAULT_SHARD_TOKENS = 1 << 18
MIN_DOC_CHARS = 2000
# The challenge's shard header; equal to packager.runtime.data's (a test checks).
SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256

# The settings of the challenge's data/download_hf_docs_and_tokenize.py, read back
# from its published tokenizer models (nmt_nfkc, no dummy prefix, split digits, byte
# fallback, ids pad 0 / bos 1 / eos 2 / unk 3).
SP_TRAINER_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "character_coverage": 0.999,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "unk_id": 3,
    "hard_vocab_limit": False,
}


class TinyDataError(UserError):
    """A tiny dataset cannot be built as asked (the CLI prints the one-line message)."""


def dataset_dir(out_dir: Path, vocab_size: int) -> Path:
    return out_dir / "datasets" / f"fineweb10B_sp{vocab_size}"


def tokenizer_file(out_dir: Path, vocab_size: int) -> Path:
    return out_dir / "tokenizers" / f"fineweb_{vocab_size}_bpe.model"


def source_documents(min_chars: int = MIN_DOC_CHARS) -> list[str]:
    """Help topics (sorted by key) cut at blank lines into documents of >= min_chars.

    A topic's last document may be shorter; documents never span two topics. Some
    topics repeat others' text, so repeated documents are dropped (first kept): a
    copy must not land in both splits.
    """
    from pydoc_data.topics import topics

    docs: list[str] = []
    for key in sorted(topics):
        current: list[str] = []
        size = 0
        for para in re.split(r"\n\s*\n", topics[key]):
            para = para.strip()
            if not para:
                continue
            current.append(para)
            size += len(para)
            if size >= min_chars:
                docs.append("\n\n".join(current))
                current, size = [], 0
        if current:
            docs.append("\n\n".join(current))
    return list(dict.fromkeys(docs))


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) by a seeded draw; both keep the source order."""
    if not 0.0 < val_fraction < 1.0:
        raise TinyDataError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    n_val = max(1, round(len(docs) * val_fraction))
    val_idx = set(random.Random(seed).sample(range(len(docs)), n_val))
    train = [d for i, d in enumerate(docs) if i not in val_idx]
    val = [d for i, d in enumerate(docs) if i in val_idx]
    return train, val


def train_tokenizer(train_docs: list[str], vocab_size: int, seed: int) -> bytes:
    """Serialized SentencePiece model trained on the train documents' paragraphs."""
    import sentencepiece as spm

    sentences = [p.strip() for doc in train_docs for p in doc.split("\n\n") if p.strip()]
    spm.set_random_generator_seed(seed)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buf,
        vocab_size=vocab_size,
        num_threads=1,
        minloglevel=2,
        **SP_TRAINER_SETTINGS,
    )
    return buf.getvalue()


def encode_documents(sp, docs: list[str], vocab_size: int) -> list[np.ndarray]:
    """Each document as uint16 [BOS, tokens...], the challenge's delimiting."""
    bos = int(sp.bos_id())
    out = []
    for ids in sp.encode(docs, out_type=int):
        arr = np.asarray([bos, *ids], dtype=np.int64)
        if arr.min() < 0 or arr.max() >= vocab_size:
            raise TinyDataError(f"token id outside vocab_size={vocab_size}")
        out.append(arr.astype(np.uint16))
    return out


def train_stream(encoded: list[np.ndarray], target_tokens: int, seed: int) -> tuple[np.ndarray, int]:
    """Passes over the train documents, each in a new seeded order, until >= target_tokens.

    Returns (tokens, passes). The last pass may stop part-way, at a document end.
    """
    rng = random.Random(seed + 1)
    pieces: list[np.ndarray] = []
    total = 0
    passes = 0
    while total < target_tokens:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        passes += 1
        for i in order:
            pieces.append(encoded[i])
            total += encoded[i].size
            if total >= target_tokens:
                break
    return np.concatenate(pieces), passes


def split_shards(tokens: np.ndarray, shard_tokens: int) -> list[np.ndarray]:
    return [tokens[i : i + shard_tokens] for i in range(0, tokens.size, shard_tokens)]


def read_marker(out_dir: Path) -> dict | None:
    path = out_dir / MARKER_NAME
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("kind") != MARKER_KIND:
        return None
    return marker


def owned_files(out_dir: Path, marker: dict | None) -> set[str]:
    """Relative paths (inside OUT only) of the files a previous tiny build wrote."""
    if marker is None:
        return set()
    root = out_dir.resolve()
    owned = set()
    for rel in marker.get("files", []):
        if isinstance(rel, str) and root in (out_dir / rel).resolve().parents:
            owned.add(Path(rel).as_posix())
    return owned


def check_target(out_dir: Path, planned: list[str], vocab_size: int) -> set[str]:
    """Refuse a non-empty OUT that is not a tiny dataset, or one where writing would
    overwrite or mix with files we did not write. Returns the previous build's files
    (relative paths)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TinyDataError(f"{out_dir} exists and is not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return set()
    marker = read_marker(out_dir)
    if marker is None:
        raise TinyDataError(
            f"{out_dir} is not empty and holds no tiny dataset ({MARKER_NAME} missing); "
            "choose an empty or new folder"
        )
    owned = owned_files(out_dir, marker)
    foreign = [rel for rel in planned if (out_dir / rel).exists() and rel not in owned]
    shard_dir = dataset_dir(out_dir, vocab_size)
    if shard_dir.is_dir():
        # Any other shard in the folder would be read by the fineweb_*_*.bin globs.
        for path in shard_dir.glob("fineweb_*.bin"):
            rel = path.relative_to(out_dir).as_posix()
            if rel not in owned:
                foreign.append(rel)
    if foreign:
        names = ", ".join(sorted(set(foreign))[:5])
        raise TinyDataError(
            f"{out_dir} holds files this command did not write ({names}); refusing to touch them"
        )
    return owned


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def shard_bytes(tokens: np.ndarray) -> bytes:
    """The bytes packager.runtime.data.write_data_shard writes, built in memory (and
    without importing torch, which would triple the build time)."""
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, tokens.size)
    return header.tobytes() + tokens.astype("<u2", copy=False).tobytes()


def build_tiny_dataset(
    out_dir: Path,
    *,
    vocab_size: int = 1024,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    train_tokens: int = DEFAULT_TRAIN_TOKENS,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> dict:
    """Build (or rebuild) the tiny dataset in `out_dir`; returns a summary dict.

    Refuses a non-empty `out_dir` unless it holds a previous tiny dataset, and then
    replaces only the files that build wrote.
    """
    import sentencepiece as spm

    started = time.perf_counter()
    out_dir = Path(out_dir)
    if vocab_size < 300 or vocab_size > 2**16:
        raise TinyDataError(f"vocab_size must lie in [300, 65536] (byte fallback needs 260 ids), got {vocab_size}")
    if train_tokens <= 0 or shard_tokens <= 0:
        raise TinyDataError("train_tokens and shard_tokens must be positive")

    train_docs, val_docs = split_documents(source_documents(), val_fraction, seed)
    model = train_tokenizer(train_docs, vocab_size, seed)
    sp = spm.SentencePieceProcessor(model_proto=model)
    if int(sp.vocab_size()) != vocab_size:
        raise TinyDataError(f"the help texts only support a vocabulary of {sp.vocab_size()}, not {vocab_size}")
    train_encoded = encode_documents(sp, train_docs, vocab_size)
    val_tokens = np.concatenate(encode_documents(sp, val_docs, vocab_size))
    train_all, passes = train_stream(train_encoded, train_tokens, seed)

    shard_dir = dataset_dir(out_dir, vocab_size)
    outputs: dict[Path, bytes] = {tokenizer_file(out_dir, vocab_size): model}
    val_paths = []
    for i, shard in enumerate(split_shards(val_tokens, shard_tokens)):
        val_paths.append(shard_dir / f"fineweb_val_{i:06d}.bin")
        outputs[val_paths[-1]] = shard_bytes(shard)
    train_paths = []
    for i, shard in enumerate(split_shards(train_all, shard_tokens)):
        train_paths.append(shard_dir / f"fineweb_train_{i:06d}.bin")
        outputs[train_paths[-1]] = shard_bytes(shard)

    def rel(path: Path) -> str:
        return path.relative_to(out_dir).as_posix()

    planned = {rel(p): data for p, data in outputs.items()}
    previous = check_target(out_dir, sorted(planned), vocab_size)
    summary: dict[str, Any] = {
        "kind": MARKER_KIND,
        "source": "pydoc_data.topics",
        "vocab_size": vocab_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "docs_train": len(train_docs),
        "docs_val": len(val_docs),
        "train_tokens": int(train_all.size),
        "train_unique_tokens": int(sum(a.size for a in train_encoded)),
        "train_passes": passes,
        "val_tokens": int(val_tokens.size),
        "data_path": rel(shard_dir),
        "tokenizer_path": rel(tokenizer_file(out_dir, vocab_size)),
        "train_files": [rel(p) for p in train_paths],
        "val_files": [rel(p) for p in val_paths],
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(planned.items())},
        "files": sorted(planned),
    }
    # While writing, the marker also lists the previous build's files, so an
    # interrupted rebuild can still be rebuilt in place.
    stale = sorted(p for p in previous if p not in planned and (out_dir / p).is_file())
    in_progress = dict(summary, complete=False, files=sorted(set(summary["files"]) | set(stale)))
    write_atomic(out_dir / MARKER_NAME, (json.dumps(in_progress, indent=2) + "\n").encode())
    for name in stale:
        (out_dir / name).unlink()
    for name, data in planned.items():
        write_atomic(out_dir / name, data)
    write_atomic(out_dir / MARKER_NAME, (json.dumps(dict(summary, complete=True), indent=2) + "\n").encode())

    result = dict(summary)
    result["out_dir"] = str(out_dir)
    result["data_path"] = str(shard_dir)
    result["tokenizer_path"] = str(tokenizer_file(out_dir, vocab_size))
    result["train_files"] = [str(p) for p in train_paths]
    result["val_files"] = [str(p) for p in val_paths]
    result["build_seconds"] = round(time.perf_counter() - started, 3)
    return result
