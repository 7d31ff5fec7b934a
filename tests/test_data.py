"""Shard format, token streaming and validation-token loading (packager.runtime.data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from packager.hparams import make_args
from packager.runtime import data
from packager.runtime.data import (
    DistributedTokenLoader,
    TokenStream,
    load_data_shard,
    load_validation_tokens,
    write_data_shard,
)


def write_shards(folder, prefix, sizes, start=0):
    """Shards whose tokens are consecutive integers, so positions are easy to check."""
    value = start
    for i, n in enumerate(sizes):
        write_data_shard(folder / f"{prefix}_{i:06d}.bin", np.arange(value, value + n, dtype=np.uint16))
        value += n
    return str(folder / f"{prefix}_*.bin")


def header_of(path):
    return np.fromfile(path, dtype="<i4", count=256)


def test_round_trip_keeps_every_uint16_value(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 2**16, size=5000, dtype=np.uint16)
    tokens[:2] = (0, 65535)
    path = tmp_path / "s.bin"
    write_data_shard(path, tokens)
    header = header_of(path)
    assert list(header[:3]) == [20240520, 1, 5000] and not header[3:].any()
    assert path.stat().st_size == 256 * 4 + 2 * 5000
    loaded = load_data_shard(path)
    assert loaded.dtype == torch.uint16
    assert np.array_equal(loaded.numpy(), tokens)


def test_round_trip_from_int_list_and_empty(tmp_path):
    write_data_shard(tmp_path / "a.bin", [1, 2, 3])
    assert load_data_shard(tmp_path / "a.bin").tolist() == [1, 2, 3]
    write_data_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))
    assert load_data_shard(tmp_path / "e.bin").numel() == 0


@pytest.mark.parametrize("bad", [[-1, 2], [0, 65536]])
def test_write_rejects_values_outside_uint16(tmp_path, bad):
    with pytest.raises(ValueError, match="65535"):
        write_data_shard(tmp_path / "x.bin", np.asarray(bad, dtype=np.int64))
    assert not (tmp_path / "x.bin").exists()


def test_write_rejects_2d(tmp_path):
    with pytest.raises(ValueError, match="one-dimensional"):
        write_data_shard(tmp_path / "x.bin", np.zeros((2, 2), dtype=np.uint16))


def corrupt(path, index, value):
    raw = bytearray(path.read_bytes())
    raw[4 * index : 4 * index + 4] = np.array([value], dtype="<i4").tobytes()
    path.write_bytes(bytes(raw))


@pytest.fixture
def good_shard(tmp_path):
    path = tmp_path / "fineweb_val_000000.bin"
    write_data_shard(path, np.arange(100, dtype=np.uint16))
    return path


def test_bad_magic(good_shard):
    corrupt(good_shard, 0, 12345)
    with pytest.raises(ValueError, match=r"magic.*fineweb_val_000000\.bin.*20240520.*12345"):
        load_data_shard(good_shard)


def test_bad_version(good_shard):
    corrupt(good_shard, 1, 2)
    with pytest.raises(ValueError, match=r"version.*fineweb_val_000000\.bin.*expected 1, found 2"):
        load_data_shard(good_shard)


@pytest.mark.parametrize("delta", [-3, +2])
def test_size_mismatch(good_shard, delta):
    raw = good_shard.read_bytes()
    good_shard.write_bytes(raw[:delta] if delta < 0 else raw + b"\0" * delta)
    with pytest.raises(ValueError, match=r"size mismatch.*fineweb_val_000000\.bin.*100 tokens.*1224 bytes"):
        load_data_shard(good_shard)


def test_count_larger_than_file(good_shard):
    corrupt(good_shard, 2, 101)
    with pytest.raises(ValueError, match="size mismatch"):
        load_data_shard(good_shard)


def test_short_read_of_header(good_shard):
    good_shard.write_bytes(good_shard.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"Short read.*fineweb_val_000000\.bin.*1024-byte header.*100 bytes"):
        load_data_shard(good_shard)


def test_no_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No files found"):
        TokenStream(str(tmp_path / "fineweb_train_*.bin"))
    with pytest.raises(FileNotFoundError, match="No files found"):
        load_validation_tokens(str(tmp_path / "fineweb_val_*.bin"), 8)


def test_token_stream_crosses_shards_and_wraps(tmp_path):
    # Shards are created out of order on disk; the stream must read them sorted.
    write_data_shard(tmp_path / "t_000001.bin", np.arange(10, 15, dtype=np.uint16))
    write_data_shard(tmp_path / "t_000000.bin", np.arange(0, 10, dtype=np.uint16))
    stream = TokenStream(str(tmp_path / "t_*.bin"))
    got = [stream.take(n).tolist() for n in (7, 10, 15, 3)]
    expected = [i % 15 for i in range(35)]
    assert got == [expected[0:7], expected[7:17], expected[17:32], expected[32:35]]
    assert stream.take(1).dtype == torch.uint16


def test_token_stream_skips_empty_shards_and_refuses_all_empty(tmp_path):
    write_shards(tmp_path, "t", [3])
    write_data_shard(tmp_path / "t_000001.bin", np.zeros(0, dtype=np.uint16))
    stream = TokenStream(str(tmp_path / "t_*.bin"))
    assert stream.take(7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_data_shard(empty / "e_000000.bin", np.zeros(0, dtype=np.uint16))
    with pytest.raises(ValueError, match="empty"):
        TokenStream(str(empty / "e_*.bin")).take(1)


def reference_batches(total, global_tokens, seq_len, accum, world, rank, steps):
    """The upstream rule, written out: call k reads stream[k*C : (k+1)*C] with
    C = (local+1)*world, and rank r takes [r*(local+1), (r+1)*(local+1))."""
    local = global_tokens // (world * accum)
    chunk = (local + 1) * world
    out = []
    for k in range(steps):
        ids = [(k * chunk + rank * (local + 1) + i) % total for i in range(local + 1)]
        t = torch.tensor(ids, dtype=torch.int64)
        out.append((t[:-1].reshape(-1, seq_len), t[1:].reshape(-1, seq_len)))
    return out


@pytest.mark.parametrize("world,accum", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_distributed_loader_matches_upstream_rule(tmp_path, world, accum):
    sizes = [50, 37, 64]
    pattern = write_shards(tmp_path, "fineweb_train", sizes)
    global_tokens, seq_len, steps = 64, 8, 6
    loaders = [DistributedTokenLoader(pattern, r, world, torch.device("cpu")) for r in range(world)]
    seen = []
    for r, loader in enumerate(loaders):
        ref = reference_batches(sum(sizes), global_tokens, seq_len, accum, world, r, steps)
        for k in range(steps):
            x, y = loader.next_batch(global_tokens, seq_len, accum)
            assert x.dtype == y.dtype == torch.int64
            assert x.shape == (global_tokens // (world * accum) // seq_len, seq_len)
            assert torch.equal(x, ref[k][0]) and torch.equal(y, ref[k][1])
            # y is x shifted by one, across row boundaries too.
            assert torch.equal(y.reshape(-1)[:-1], x.reshape(-1)[1:])
            seen.append((k, r, x.reshape(-1)[0].item(), y.reshape(-1)[-1].item()))
    # Within a call, rank spans are disjoint and adjacent; across calls, the next
    # call starts right after the last rank's span (all modulo the wrap).
    span = global_tokens // (world * accum) + 1
    total = sum(sizes)
    for k, r, first, last in seen:
        assert first == (k * span * world + r * span) % total
        assert last == (first + span - 1) % total


def test_loader_ranks_cover_disjoint_spans_without_wrap(tmp_path):
    pattern = write_shards(tmp_path, "fineweb_train", [1000])
    world = 2
    loaders = [DistributedTokenLoader(pattern, r, world, torch.device("cpu")) for r in range(world)]
    used: list[int] = []
    for _ in range(3):
        for loader in loaders:
            x, y = loader.next_batch(32, 4, 1)
            used += torch.cat([x.reshape(-1)[:1], y.reshape(-1)]).tolist()
    # Every token of the first 3 * 2 * 17 positions is used exactly once.
    assert used == list(range(3 * 2 * 17))


def test_load_validation_tokens_truncates_to_whole_sequences(tmp_path):
    pattern = write_shards(tmp_path, "fineweb_val", [10, 8])  # 18 tokens
    tokens = load_validation_tokens(pattern, 4)
    # (18 - 1) // 4 * 4 + 1 = 17: four sequences plus the last target.
    assert tokens.tolist() == list(range(17))
    assert tokens.dtype == torch.uint16
    assert load_validation_tokens(pattern, 17).tolist() == list(range(18))
    assert load_validation_tokens(pattern, 5).numel() == 16


def test_load_validation_tokens_too_short(tmp_path):
    pattern = write_shards(tmp_path, "fineweb_val", [4])
    with pytest.raises(ValueError, match=r"too short for TRAIN_SEQ_LEN=4.*4 tokens"):
        load_validation_tokens(pattern, 4)


def test_hparams_declared_with_upstream_names_and_defaults():
    by_name = {hp.name: hp for hp in data.HPARAMS}
    assert {n: (h.env, h.path, h.kind, h.default) for n, h in by_name.items()} == {
        "data_path": ("DATA_PATH", "data.data_path", str, "./data/datasets/fineweb10B_sp1024"),
        "tokenizer_path": ("TOKENIZER_PATH", "data.tokenizer_path", str, "./data/tokenizers/fineweb_1024_bpe.model"),
        "vocab_size": ("VOCAB_SIZE", "data.vocab_size", int, 1024),
    }
    args = make_args({"data": {"data_path": "/d", "vocab_size": 2048}})
    assert (args.data_path, args.vocab_size) == ("/d", 2048)
    assert args.tokenizer_path == "./data/tokenizers/fineweb_1024_bpe.model"
