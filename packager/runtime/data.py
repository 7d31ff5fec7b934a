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
    HP("data_path", "DATA_PATH", "data.data_path", str, "./data/datasets/fineweb10B_sp1024",
       doc="folder holding the fineweb_train_*.bin and fineweb_val_*.bin shards"),
    HP("tokenizer_path", "TOKENIZER_PATH", "data.tokenizer_path", str, "./data/tokenizers/fineweb_1024_bpe.model",
       doc="SentencePiece model used to count the bytes behind each validation token"),
    HP("vocab_size", "VOCAB_SIZE", "data.vocab_size", int, 1024, minimum=1,
       doc="token vocabulary size of the shards and the model"),
)

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_INTS = 256
SHARD_HEADER_BYTES = SHARD_HEADER_INTS * 4
BOS_ID = 1  # the challenge tokenizers' <s>: every document in the shards starts with it


def load_data_shard(file) -> Tensor:
    """Tokens of one shard as a uint16 tensor; ValueError naming the file if malformed."""
    file = Path(file)
    header, nbytes = np.fromfile(file, dtype="<i4", count=SHARD_HEADER_INTS), file.stat().st_size
    if header.size != SHARD_HEADER_INTS:
        raise ValueError(f"Short read of shard {file}: no {SHARD_HEADER_BYTES}-byte header in its {nbytes} bytes")
    if header[0] != SHARD_MAGIC:
        raise ValueError(f"Bad shard magic in {file}: expected {SHARD_MAGIC}, found {header[0]}")
    if header[1] != SHARD_VERSION:
        raise ValueError(f"Bad shard version in {file}: expected {SHARD_VERSION}, found {header[1]}")
    num_tokens = int(header[2])
    if nbytes != SHARD_HEADER_BYTES + 2 * num_tokens:
        raise ValueError(f"Shard size mismatch for {file}: header says {num_tokens} tokens, "
                         f"so expected {SHARD_HEADER_BYTES + 2 * num_tokens} bytes, found {nbytes}")
    tokens = np.fromfile(file, dtype="<u2", count=num_tokens, offset=SHARD_HEADER_BYTES)
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
    header[:3] = (SHARD_MAGIC, SHARD_VERSION, toks.size)
    with open(file, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2", copy=False).tobytes())


def glob_shard_files(pattern: str) -> list[Path]:
    files = [Path(p) for p in sorted(glob.glob(pattern))]
    if not files:
        raise FileNotFoundError(f"No files found for pattern: {pattern}")
    return files


class TokenStream:
    """Shards in sorted order, read front to back and wrapping around forever: no sampling, no workers."""

    def __init__(self, pattern: str):
        self.files = glob_shard_files(pattern)
        self.file_idx, self.tokens, self.pos = 0, load_data_shard(self.files[0]), 0

    def take(self, n: int) -> Tensor:
        """The next `n` tokens, crossing shard boundaries (and wrapping) as needed."""
        chunks, skipped = [], 0
        while n > 0:
            if self.pos >= self.tokens.numel():
                # Empty shards are skipped, but a set of only empty shards would spin forever.
                skipped += 1
                if skipped > len(self.files):
                    raise ValueError(f"All {len(self.files)} shards of the token stream are empty")
                self.file_idx = (self.file_idx + 1) % len(self.files)
                self.tokens, self.pos = load_data_shard(self.files[self.file_idx]), 0
                continue
            k = min(n, self.tokens.numel() - self.pos)
            chunks.append(self.tokens[self.pos : self.pos + k])
            self.pos, n, skipped = self.pos + k, n - k, 0
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


class DistributedTokenLoader:
    """Each step reads world_size spans of local_tokens + 1 tokens (y is x shifted by one); rank r takes span r."""

    def __init__(self, pattern: str, rank: int, world_size: int, device: torch.device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.stream = TokenStream(pattern)

    def local_span(self, global_tokens: int, grad_accum_steps: int) -> Tensor:
        """This rank's tokens of the next step (CPU, int64): its share plus one target token."""
        span = global_tokens // (self.world_size * grad_accum_steps) + 1
        chunk = self.stream.take(span * self.world_size)
        return chunk[self.rank * span : (self.rank + 1) * span].to(torch.int64)

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum_steps: int) -> tuple[Tensor, Tensor]:
        local = self.local_span(global_tokens, grad_accum_steps)
        x, y = local[:-1].reshape(-1, seq_len), local[1:].reshape(-1, seq_len)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def load_validation_tokens(pattern: str, seq_len: int) -> Tensor:
    """All validation shards, concatenated and cut to whole sequences plus one target token."""
    # A CaseOps byte sidecar (fineweb_val_bytes_*) matches the pattern too: it is not tokens.
    files = [f for f in glob_shard_files(pattern) if "_bytes_" not in f.name]
    tokens = torch.cat([load_data_shard(f) for f in files]).contiguous()
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(f"Validation set too short for TRAIN_SEQ_LEN={seq_len}: {tokens.numel()} tokens in {pattern}")
    return tokens[: usable + 1]
