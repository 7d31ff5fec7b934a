"""FineWeb shard files and the distributed token stream.

Behaviour matches the public baseline: a shard is a 256-int32 little-endian header
(magic, version, token count, then zeros) followed by that many uint16 tokens;
training reads the sorted train shards front to back, forever, and every step cuts
one contiguous chunk that the ranks split into disjoint spans.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from packager.runtime.features import HP

FEATURES: dict[str, str] = {}

HPARAMS = (
    HP(
        "data_path",
        "DATA_PATH",
        "data.data_path",
        str,
        "./data/datasets/fineweb10B_sp1024",
        doc="folder holding the fineweb_train_*.bin and fineweb_val_*.bin shards",
    ),
    HP(
        "tokenizer_path",
        "TOKENIZER_PATH",
        "data.tokenizer_path",
        str,
        "./data/tokenizers/fineweb_1024_bpe.model",
        doc="SentencePiece model used to count the bytes behind each validation token",
    ),
    HP(
        "vocab_size",
        "VOCAB_SIZE",
        "data.vocab_size",
        int,
        1024,
        doc="token vocabulary size of the shards and the model",
        minimum=1,
    ),
)

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4


def load_data_shard(file) -> Tensor:
    """Tokens of one shard as a uint16 tensor; ValueError naming the file if malformed."""
    file = Path(file)
    header = np.fromfile(file, dtype="<i4", count=SHARD_HEADER_INTS)
    if header.size != SHARD_HEADER_INTS:
        raise ValueError(
            f"Short read for shard {file}: expected a {SHARD_HEADER_BYTES}-byte header, "
            f"file has {file.stat().st_size} bytes"
        )
    if int(header[0]) != SHARD_MAGIC:
        raise ValueError(f"Bad shard magic in {file}: expected {SHARD_MAGIC}, found {int(header[0])}")
    if int(header[1]) != SHARD_VERSION:
        raise ValueError(f"Bad shard version in {file}: expected {SHARD_VERSION}, found {int(header[1])}")
    num_tokens = int(header[2])
    expected = SHARD_HEADER_BYTES + 2 * num_tokens
    actual = file.stat().st_size
    if num_tokens < 0 or actual != expected:
        raise ValueError(
            f"Shard size mismatch for {file}: header says {num_tokens} tokens, so expected "
            f"{expected} bytes, found {actual}"
        )
    tokens = np.fromfile(file, dtype="<u2", count=num_tokens, offset=SHARD_HEADER_BYTES)
    if tokens.size != num_tokens:
        raise ValueError(f"Short read for shard {file}: expected {num_tokens} tokens, read {tokens.size}")
    return torch.from_numpy(tokens.astype(np.uint16, copy=False))


def write_data_shard(file, tokens) -> None:
    """Write `tokens` (ids in [0, 65535]) as one shard with the challenge's header."""
    toks = np.asarray(tokens)
    if toks.ndim != 1:
        raise ValueError(f"shard tokens must be one-dimensional, got shape {toks.shape}")
    if toks.size >= 2**31:
        raise ValueError(f"too many tokens for one shard: {toks.size}")
    if toks.dtype != np.uint16 and toks.size and (toks.min() < 0 or toks.max() >= 2**16):
        raise ValueError("shard tokens must lie in [0, 65535] to be stored as uint16")
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[0] = SHARD_MAGIC
    header[1] = SHARD_VERSION
    header[2] = toks.size
    with open(file, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2", copy=False).tobytes())


def glob_shard_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        raise FileNotFoundError(f"No files found for pattern: {pattern}")
    return files


class TokenStream:
    """Shards in sorted order, read front to back and wrapping around forever.

    No sampling and no workers: the token order is a pure function of the files.
    """

    def __init__(self, pattern: str):
        self.files = glob_shard_files(pattern)
        self.file_idx = 0
        self.tokens = load_data_shard(self.files[0])
        self.pos = 0

    def _advance_file(self) -> None:
        self.file_idx = (self.file_idx + 1) % len(self.files)
        self.tokens = load_data_shard(self.files[self.file_idx])
        self.pos = 0

    def take(self, n: int) -> Tensor:
        """The next `n` tokens, crossing shard boundaries (and wrapping) as needed."""
        chunks: list[Tensor] = []
        remaining = n
        empty_advances = 0
        while remaining > 0:
            avail = self.tokens.numel() - self.pos
            if avail <= 0:
                # Empty shards are skipped, but a set of only empty shards would spin forever.
                empty_advances += 1
                if empty_advances > len(self.files):
                    raise ValueError(f"All {len(self.files)} shards of the token stream are empty")
                self._advance_file()
                continue
            empty_advances = 0
            k = min(remaining, avail)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos += k
            remaining -= k
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class DistributedTokenLoader:
    """Per step, one contiguous chunk of (local_tokens + 1) * world_size tokens; rank r
    gets span r. The extra token per span lets y be x shifted by one."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.stream = TokenStream(pattern)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        local_tokens = global_tokens // (self.world_size * grad_accum_steps)
        span = local_tokens + 1
        chunk = self.stream.take(span * self.world_size)
        start = self.rank * span
        local = chunk[start : start + span].to(dtype=torch.int64)
        x = local[:-1].reshape(-1, seq_len)
        y = local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def load_validation_tokens(pattern: str, seq_len: int) -> Tensor:
    """All validation shards, concatenated and cut to whole sequences plus one target token."""
    tokens = torch.cat([load_data_shard(f) for f in glob_shard_files(pattern)]).contiguous()
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(
            f"Validation split is too short for TRAIN_SEQ_LEN={seq_len}: "
            f"{tokens.numel()} tokens in {pattern}"
        )
    return tokens[: usable + 1]
