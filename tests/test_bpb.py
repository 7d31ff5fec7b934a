"""Byte tables and validation scoring (packager.runtime.bpb)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from packager.hparams import make_args
from packager.runtime.bpb import HPARAMS, bits_per_byte, build_sentencepiece_luts, count_bytes, eval_val
from verifier.tinydata import source_documents, split_documents, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = REPO_ROOT.parent / "shared" / "upstream"
CPU = torch.device("cpu")
SEQ_LEN = 16

# Sentences whose text survives the challenge normalization (nmt_nfkc, single spaces,
# no leading space), so their UTF-8 length is the byte count the tables must give.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "In 2024, 1,234,567 tokens cost $3.50 (roughly).",
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade \u2014 \u00fcber-stra\u00dfe!",
    "Snowman \u2603, CJK \u6f22\u5b57\u306e\u30c6\u30b9\u30c8, emoji \U0001f600 and math \u2211 x_i.",
    'def f(x):return {"a": [1, 2]} # tabs and symbols <>|&^%',
]


def real_tokenizers():
    """The distinct tokenizer models the public records ship (plain sp8192 and the CaseOps one)."""
    if not UPSTREAM.is_dir():
        return []
    distinct = {}
    for path in sorted(UPSTREAM.rglob("*.model")):
        distinct.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return sorted(distinct.values())


@pytest.fixture(scope="module")
def tiny_sp():
    train, _ = split_documents(source_documents(), 0.2, 1337)
    return spm.SentencePieceProcessor(model_proto=train_tokenizer(train, 1024, 1337))


def bytes_of(sp, luts, ids):
    prev = torch.tensor([sp.bos_id(), *ids[:-1]])
    return int(count_bytes(prev, torch.tensor(ids), luts).sum())


def check_sentences(sp):
    luts = build_sentencepiece_luts(sp, int(sp.vocab_size()), CPU)
    for text in SENTENCES:
        ids = sp.encode(text)
        assert sp.decode(ids) == text, "test sentence must survive normalization"
        assert bytes_of(sp, luts, ids) == len(text.encode("utf-8")), text


@pytest.mark.skipif(len(real_tokenizers()) < 2, reason="../shared/upstream is not present beside the repository")
def test_byte_counts_match_utf8_length_with_the_records_tokenizers():
    for path in real_tokenizers():
        check_sentences(spm.SentencePieceProcessor(model_file=str(path)))


def test_byte_counts_match_utf8_length_with_tiny_tokenizer(tiny_sp):
    check_sentences(tiny_sp)


def test_byte_counts_over_whole_documents(tiny_sp):
    # Documents are BOS + tokens; the bytes behind the tokens are the decoded (normalized) text.
    luts = build_sentencepiece_luts(tiny_sp, 1024, CPU)
    for doc in source_documents()[:40]:
        ids = tiny_sp.encode(doc)
        assert bytes_of(tiny_sp, luts, ids) == len(tiny_sp.decode(ids).encode("utf-8"))


def test_lut_classification(tiny_sp):
    base, space, boundary = build_sentencepiece_luts(tiny_sp, 1100, CPU)
    assert base.dtype == torch.int16 and space.dtype == boundary.dtype == torch.bool
    assert base.shape == space.shape == boundary.shape == (1100,)
    # pad, bos, eos (control) and unk are boundaries worth no bytes.
    for tid in (0, 1, 2, 3):
        assert boundary[tid] and base[tid] == 0 and not space[tid]
    # ids beyond the tokenizer's vocabulary count as boundaries too.
    assert boundary[1024:].all() and not base[1024:].any()
    byte_ids = [t for t in range(1024) if tiny_sp.is_byte(t)]
    assert len(byte_ids) == 256 and all(base[t] == 1 and not space[t] for t in byte_ids)
    word = tiny_sp.piece_to_id("\u2581the")
    assert word != tiny_sp.unk_id()
    assert space[word] and base[word] == 3 and not boundary[word]


def test_count_bytes_leading_space_rule():
    # ids: 0 boundary, 1 "▁ab" (2 + space), 2 "c" (1), 3 byte token (1)
    luts = (
        torch.tensor([0, 2, 1, 1], dtype=torch.int16),
        torch.tensor([False, True, False, False]),
        torch.tensor([True, False, False, False]),
    )
    prev = torch.tensor([0, 2, 1, 0, 3])
    tgt = torch.tensor([1, 1, 1, 2, 3])
    got = count_bytes(prev, tgt, luts)
    assert got.dtype == torch.int16
    assert got.tolist() == [2, 3, 3, 1, 1]
    # Shapes are kept (eval_val passes flattened ids, callers may pass 2-D).
    assert count_bytes(prev.reshape(1, -1), tgt.reshape(1, -1), luts).shape == (1, 5)


def test_bits_per_byte():
    assert bits_per_byte(100.0, 50.0, 200.0) == pytest.approx(100 / 50 / math.log(2) * 50 / 200)
    assert bits_per_byte(math.log(2) * 10, 10, 10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive"):
        bits_per_byte(1.0, 1.0, 0.0)


def test_hparams():
    assert [(h.name, h.env, h.path, h.kind, h.default) for h in HPARAMS] == [
        ("val_batch_size", "VAL_BATCH_SIZE", "train.val_batch_size", int, 524288)
    ]


class UniformModel(nn.Module):
    """Zero logits: the loss is ln(V) whatever the tokens. Records its mode when called."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[bool, bool, tuple]] = []

    def forward(self, x, y):
        self.calls.append((self.training, torch.is_inference_mode_enabled(), tuple(x.shape)))
        logits = torch.zeros(*x.shape, self.vocab) + self.weight
        return F.cross_entropy(logits.reshape(-1, self.vocab), y.reshape(-1))


class BigramModel(nn.Module):
    """A fixed random bigram table: a loss that depends on the tokens."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.table = nn.Parameter(torch.randn(vocab, vocab, generator=gen))

    def forward(self, x, y):
        logits = self.table[x]
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def make_eval_args(val_batch_size):
    args = make_args(val_batch_size=val_batch_size)
    args.train_seq_len = SEQ_LEN  # declared by another module; set directly to stay independent
    return args


@pytest.fixture(scope="module")
def val_setup(tiny_sp):
    _, val_docs = split_documents(source_documents(), 0.2, 1337)
    ids = []
    for doc in val_docs[:6]:
        ids += [tiny_sp.bos_id(), *tiny_sp.encode(doc)]
    n = ((len(ids) - 1) // SEQ_LEN) * SEQ_LEN + 1
    tokens = torch.tensor(ids[:n], dtype=torch.int64).to(torch.uint16)
    luts = build_sentencepiece_luts(tiny_sp, 1024, CPU)
    return tokens, luts


def expected_bytes(tokens, luts):
    base, space, boundary = (t.tolist() for t in luts)
    ids = tokens.to(torch.int64).tolist()
    return sum(base[t] + (space[t] and not boundary[p]) for p, t in zip(ids[:-1], ids[1:]))


def test_eval_val_uniform_model(val_setup):
    tokens, luts = val_setup
    model = UniformModel(1024)
    model.train()
    args = make_eval_args(8 * SEQ_LEN)
    loss, bpb = eval_val(args, model, 0, 1, CPU, 1, tokens, luts)
    n_tokens = tokens.numel() - 1
    assert loss == pytest.approx(math.log(1024), rel=1e-6)
    assert bpb == pytest.approx(math.log(1024) / math.log(2) * n_tokens / expected_bytes(tokens, luts), rel=1e-6)
    # Every call ran in eval mode under inference mode, in batches of 8 sequences;
    # training mode is restored afterwards.
    n_seqs = n_tokens // SEQ_LEN
    assert [c[2][0] for c in model.calls] == [8] * (n_seqs // 8) + ([n_seqs % 8] if n_seqs % 8 else [])
    assert all(not training and inference for training, inference, _ in model.calls)
    assert model.training


def reference_eval(model, tokens, luts):
    ids = tokens.to(torch.int64)
    x, y = ids[:-1].reshape(-1, SEQ_LEN), ids[1:].reshape(-1, SEQ_LEN)
    with torch.no_grad():
        logits = model.table[x].double()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    return loss, loss / math.log(2) * y.numel() / expected_bytes(tokens, luts)


@pytest.mark.parametrize("val_batch_size,accum", [(SEQ_LEN, 1), (5 * SEQ_LEN, 1), (64 * SEQ_LEN, 2), (10**7, 8)])
def test_eval_val_independent_of_batching(val_setup, val_batch_size, accum):
    tokens, luts = val_setup
    model = BigramModel(1024)
    loss, bpb = eval_val(make_eval_args(val_batch_size), model, 0, 1, CPU, accum, tokens, luts)
    ref_loss, ref_bpb = reference_eval(model, tokens, luts)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert bpb == pytest.approx(ref_bpb, rel=1e-6)


def test_eval_val_rejects_batch_below_one_sequence_per_rank(val_setup):
    tokens, luts = val_setup
    args = make_eval_args(4 * SEQ_LEN - 1)
    with pytest.raises(ValueError, match=r"VAL_BATCH_SIZE must provide at least one sequence per rank.*WORLD_SIZE=2"):
        eval_val(args, BigramModel(1024), 0, 2, CPU, 2, tokens, luts)


def rank_worker(rank, world_size, store_path, out_dir, tokens, luts, val_batch_size):
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        result = eval_val(make_eval_args(val_batch_size), BigramModel(1024), rank, world_size, CPU, 1, tokens, luts)
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def test_eval_val_two_gloo_ranks_equal_one(val_setup, tmp_path):
    tokens, luts = val_setup
    # Three sequences per rank per batch: the ranks' slices end in partial batches.
    val_batch_size = 2 * 3 * SEQ_LEN
    single = eval_val(make_eval_args(val_batch_size), BigramModel(1024), 0, 1, CPU, 1, tokens, luts)
    mp.spawn(
        rank_worker,
        args=(2, str(tmp_path / "store"), str(tmp_path), tokens, luts, val_batch_size),
        nprocs=2,
        join=True,
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    assert results[0][0] == pytest.approx(single[0], rel=1e-6)
    assert results[0][1] == pytest.approx(single[1], rel=1e-6)
