"""Data in a record script's own format for CPU runs: FineWeb-format shards and a tokenizer of the
script's vocabulary, laid out as the challenge lays them out (DATA_DIR/datasets/fineweb10B_sp<V>/,
DATA_DIR/tokenizers/fineweb_<V>_bpe.model), plus CaseOps-style byte sidecars
(fineweb_val_bytes_*.bin: the text bytes behind each validation token) where the script reads them.

The tokenizer is the folder's own `.model` of that vocabulary when it ships one, else one trained
on the tiny dataset's texts (verifier.tinydata) to that size. Tokens are either the tiny dataset's
texts encoded with it (smoke runs) or random tokens (probes: every short n-gram of a random
validation split occurs once, so a captured row of targets locates its window). Documents start
with BOS in both."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verifier import tinydata

__all__ = ["Tokenizer", "DataDir", "load_tokenizer", "random_split", "change_from", "text_splits", "write_data", "data_env",
           "read_tokens", "describe_tokenizer", "linked", "PROBE_VAL_TOKENS", "PROBE_TRAIN_TOKENS"]

PROBE_VAL_TOKENS = 8192  # validation targets of a probe run (plus the first token)
PROBE_TRAIN_TOKENS = 1 << 17
DOC_TOKENS = (24, 320)  # random document lengths (BOS included)
SEED = 1337


@dataclass
class Tokenizer:
    path: Path
    vocab: int
    bos: int
    ordinary: np.ndarray  # ids a random document may use (no control, unknown or unused piece)
    base_bytes: np.ndarray  # text bytes behind each id (byte pieces 1; leading '▁' one space)
    source: str  # "folder" (shipped) or "trained"


@dataclass
class DataDir:
    root: Path  # DATA_DIR
    dataset: Path  # DATA_PATH
    tokenizer: Path  # TOKENIZER_PATH
    val_tokens: np.ndarray


def _spm(path: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path))


def describe_tokenizer(path: Path, source: str) -> Tokenizer:
    sp = _spm(path)
    n = int(sp.vocab_size())
    ordinary, base = [], np.zeros(n, dtype=np.int64)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        ordinary.append(i)
        base[i] = 1 if sp.is_byte(i) else len(sp.id_to_piece(i).encode("utf-8"))
    bos = int(sp.bos_id()) if sp.bos_id() >= 0 else 1
    return Tokenizer(path, n, bos, np.asarray(ordinary, dtype=np.int64), base, source)


def load_tokenizer(folder: Path, vocab: int, cache: Path) -> Tokenizer:
    """The folder's own tokenizer of `vocab` pieces, else one trained on the tiny texts (cached)."""
    for model in sorted(folder.rglob("*.model")):
        try:
            tok = describe_tokenizer(model, "folder")
        except (OSError, RuntimeError):
            continue
        if tok.vocab == vocab:
            return tok
    cached = cache / f"trained_{vocab}.model"
    if not cached.is_file():
        train, _ = tinydata.split_documents(tinydata.source_documents(), tinydata.DEFAULT_VAL_FRACTION,
                                            tinydata.DEFAULT_SEED)
        cache.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(tinydata.train_tokenizer(train, vocab, tinydata.DEFAULT_SEED))
    tok = describe_tokenizer(cached, "trained")
    if tok.vocab != vocab:
        raise ValueError(f"cannot build a tokenizer of {vocab} pieces (got {tok.vocab})")
    return tok


def _documents(tok: Tokenizer, n: int, rng: np.random.Generator) -> np.ndarray:
    out, size = [], 0
    while size < n:
        length = int(rng.integers(*DOC_TOKENS))
        doc = rng.choice(tok.ordinary, size=length)
        doc[0] = tok.bos
        out.append(doc)
        size += length
    return np.concatenate(out)[:n]


def random_split(tok: Tokenizer, n: int, seed: int = SEED) -> np.ndarray:
    """n random tokens in documents that start with BOS."""
    return _documents(tok, n, np.random.default_rng(seed))


def change_from(tok: Tokenizer, tokens: np.ndarray, position: int, seed: int = SEED + 1) -> np.ndarray:
    """The tokens with every token from `position` on replaced by another ordinary id; BOS stays where
    it is, so documents keep their boundaries."""
    out = tokens.copy()
    tail = out[position:]
    idx = np.searchsorted(tok.ordinary, tail)
    ordinary = (idx < len(tok.ordinary)) & (tok.ordinary[np.minimum(idx, len(tok.ordinary) - 1)] == tail)
    shift = np.random.default_rng(seed).integers(1, len(tok.ordinary), size=len(tail))
    out[position:] = np.where(ordinary & (tail != tok.bos), tok.ordinary[(idx + shift) % len(tok.ordinary)], tail)
    return out


def text_splits(tok: Tokenizer, train_tokens: int = PROBE_TRAIN_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) of the tiny dataset's texts encoded with the tokenizer, each document BOS first."""
    sp = _spm(tok.path)
    train_docs, val_docs = tinydata.split_documents(tinydata.source_documents(), tinydata.DEFAULT_VAL_FRACTION,
                                                    tinydata.DEFAULT_SEED)
    enc = [np.asarray([tok.bos, *ids], dtype=np.int64) for ids in sp.encode(train_docs)]
    val = np.concatenate([np.asarray([tok.bos, *ids], dtype=np.int64) for ids in sp.encode(val_docs)])
    train, _ = tinydata.train_stream(enc, train_tokens, tinydata.DEFAULT_SEED)
    return train.astype(np.int64), val


def _write_shard(path: Path, tokens: np.ndarray) -> None:
    path.write_bytes(tinydata.shard_bytes(np.asarray(tokens, dtype=np.uint16)))


def read_tokens(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    count = int(np.frombuffer(raw[:12], dtype="<i4")[2])
    return np.frombuffer(raw[4 * tinydata.SHARD_HEADER_INTS:], dtype="<u2", count=count).astype(np.int64)


def write_data(root: Path, tok: Tokenizer, train: np.ndarray, val: np.ndarray, sidecar: bool,
               train_shards: int = 2) -> DataDir:
    """DATA_DIR with the shards, the tokenizer and (sidecar) the byte sidecar of the validation split."""
    dataset = root / "datasets" / f"fineweb10B_sp{tok.vocab}"
    tokenizer = root / "tokenizers" / f"fineweb_{tok.vocab}_bpe.model"
    dataset.mkdir(parents=True)
    tokenizer.parent.mkdir(parents=True)
    shutil.copyfile(tok.path, tokenizer)
    for i, part in enumerate(np.array_split(train, train_shards)):
        _write_shard(dataset / f"fineweb_train_{i:06d}.bin", part)
    _write_shard(dataset / "fineweb_val_000000.bin", val)
    if sidecar:
        _write_shard(dataset / "fineweb_val_bytes_000000.bin", np.maximum(tok.base_bytes[val], 0))
    return DataDir(root, dataset, tokenizer, val)


def linked(data: DataDir, root: str) -> DataDir:
    """`data` as seen through `root` (a link to data.root in the run's folder): every run of a probe sees
    the same path strings, which some scripts hash into their data order."""
    base = Path(root)
    return DataDir(base, base / data.dataset.relative_to(data.root), base / data.tokenizer.relative_to(data.root),
                   data.val_tokens)


def data_env(knobs, data: DataDir) -> dict[str, str]:
    """The path variables the script reads, pointing at `data`."""
    paths = {"DATA_DIR": str(data.root) + "/", "DATA_PATH": str(data.dataset), "TOKENIZER_PATH": str(data.tokenizer),
             "TRAIN_FILES": str(data.dataset / "fineweb_train_*.bin"),
             "VAL_FILES": str(data.dataset / "fineweb_val_0*.bin")}
    return {k: v for k, v in paths.items() if k in knobs}
