"""Sliding-window evaluation (packager.runtime.evaluate), its scores captured from outside as golf-verify's
probes capture them."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from packager.hparams import make_args
from packager.runtime.bpb import eval_val
from packager.runtime.evaluate import eval_sliding, eval_windows
from packager.runtime.model import GPT
from verifier.harness.capture import capturing, load_capture, scores
from verifier.probes import judge_normalization, judge_single_pass

CPU = torch.device("cpu")
SEQ_LEN = 32
VOCAB = 64
BOS = 1


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- shared with test_ttt

def tiny_args(**overrides):
    base = dict(num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, vocab_size=VOCAB, train_seq_len=SEQ_LEN,
                val_batch_size=8 * SEQ_LEN)
    base.update(overrides)
    return make_args(None, **base)


def fake_luts():
    """Byte tables for the synthetic vocab: ids < 4 are zero-byte boundary tokens."""
    ids = torch.arange(VOCAB)
    base = torch.where(ids < 4, 0, ids % 4 + 1).to(torch.int16)
    return base, (ids % 3 == 0) & (ids >= 4), ids < 4


def synthetic_tokens(n_tokens: int, seed: int, max_doc: int = 120) -> torch.Tensor:
    """BOS-delimited documents, each a short random motif repeated with noise, so that more
    context (and adaptation to the document) helps. Length n_tokens, starting with BOS."""
    g = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while len(out) < n_tokens:
        length = int(torch.randint(12, max_doc, (1,), generator=g))
        motif = torch.randint(4, VOCAB, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        doc = [BOS] + [motif[i % len(motif)] for i in range(length)]
        for i in range(1, len(doc)):
            if float(torch.rand((), generator=g)) < 0.1:
                doc[i] = int(torch.randint(4, VOCAB, (1,), generator=g))
        out += doc
    return torch.tensor(out[:n_tokens], dtype=torch.int64).to(torch.uint16)


def tiny_model(args, trained_steps: int = 0, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(args)
    if trained_steps:
        data = synthetic_tokens(40_000, seed=seed + 100).to(torch.int64)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(seed)
        for _ in range(trained_steps):
            starts = torch.randint(0, data.numel() - SEQ_LEN - 1, (16,), generator=g)
            rows = torch.stack([data[s : s + SEQ_LEN + 1] for s in starts.tolist()])
            loss = model(rows[:, :-1], rows[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


@functools.cache
def trained_state():
    """(args, state_dict) of a tiny GPT trained briefly on the synthetic distribution (once)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # session fixtures run before the per-test one_thread
    try:
        args = tiny_args()
        return args, tiny_model(args, trained_steps=120).state_dict()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_model():
    return trained_state()


def random_tokens(n_tokens: int, seed: int) -> torch.Tensor:
    """Uniformly random tokens in BOS-delimited documents: every 4-gram occurs about once, so the
    probes' capture places each scored row at its validation position."""
    g = np.random.default_rng(seed)
    t = g.integers(4, VOCAB, size=n_tokens)
    starts = np.cumsum(g.integers(12, 120, size=n_tokens // 12))
    t[starts[starts < n_tokens]] = BOS
    t[0] = BOS
    return torch.from_numpy(t).to(torch.uint16)


def captured(folder: Path, name: str, run, ranks: int = 1):
    """(capture, run()'s result): run's score computations as the probes capture them, with its
    val_loss printed as `<name> val_loss:`."""
    with capturing(folder) as cap:
        result = run()
        loss = result[1] if isinstance(result[0], str) else result[0]
        cap.line(f"{name} val_loss:{loss:.8f}")
    capture, why = load_capture(folder, ranks)
    assert capture is not None, why
    return capture, result


def first_scores(capture, tokens: torch.Tensor) -> np.ndarray:
    """NLL of each position's first captured computation (NaN where none)."""
    s = scores(capture, tokens.to(torch.int64).numpy())
    out = np.full(tokens.numel(), np.nan)
    for j in range(len(s.position) - 1, -1, -1):  # the first wins
        out[s.position[j]] = s.nll[j]
    return out


# ---------------------------------------------------------------- windows

@pytest.mark.parametrize("total,seq_len,stride", [(100, 32, 16), (96, 32, 32), (200, 32, 7), (20, 32, 8), (33, 32, 1)])
def test_windows_tile_targets_with_longest_context(total, seq_len, stride):
    args = tiny_args(train_seq_len=seq_len, sliding_stride=stride)
    wins = eval_windows(args, total)
    pos = 0
    for i, (start, first, end) in enumerate(wins):
        assert first == pos and end > first and end - start == min(seq_len, total)
        assert start >= 0 and (i == 0 or first - start >= seq_len - stride)
        pos = end
    assert pos == total


def test_window_length_follows_eval_seq_len_and_bad_stride_is_refused():
    wins = eval_windows(tiny_args(eval_seq_len=64, sliding_stride=16), 300)
    assert {e - s for s, _, e in wins} == {64}
    with pytest.raises(ValueError, match="EVAL_STRIDE=40"):
        eval_windows(tiny_args(sliding_stride=40), 300)


# ---------------------------------------------------------------- eval_sliding

def test_stride_equal_to_seq_len_matches_eval_val(trained_model):
    args, state = trained_model
    args = tiny_args(sliding_stride=SEQ_LEN, eval_batch_seqs=5)
    model = GPT(args)
    model.load_state_dict(state)
    tokens = synthetic_tokens(SEQ_LEN * 40 + 1, seed=7)
    ref = eval_val(args, model, 0, 1, CPU, 1, tokens, fake_luts())
    got = eval_sliding(args, model, 0, 1, CPU, tokens, fake_luts())
    assert got == pytest.approx(ref, rel=1e-6)


def test_smaller_stride_lowers_loss_on_trained_model(trained_model):
    args, state = trained_model
    tokens = synthetic_tokens(SEQ_LEN * 40 + 1, seed=8)
    losses = []
    for stride in (SEQ_LEN, 8):
        a = tiny_args(sliding_stride=stride)
        model = GPT(a)
        model.load_state_dict(state)
        losses.append(eval_sliding(a, model, 0, 1, CPU, tokens, fake_luts()))
    (plain_loss, plain_bpb), (slide_loss, slide_bpb) = losses
    assert slide_loss < plain_loss - 0.01 and slide_bpb < plain_bpb
    # bpb = loss / ln2 * tokens / bytes with the same tokens and bytes either way.
    assert slide_loss / slide_bpb == pytest.approx(plain_loss / plain_bpb, rel=1e-9)


def test_sliding_scores_every_token_once_as_captured(trained_model, tmp_path):
    args, state = trained_model
    args = tiny_args(sliding_stride=8, eval_batch_seqs=7)
    model = GPT(args)
    model.load_state_dict(state)
    tokens = random_tokens(SEQ_LEN * 20 + 1, seed=9)
    capture, (loss, _) = captured(tmp_path, "final_sliding_window", lambda: eval_sliding(
        args, model, 0, 1, CPU, tokens, fake_luts()))
    nll = first_scores(capture, tokens)[1:]
    assert not np.isnan(nll).any() and float(nll.mean()) == pytest.approx(loss, rel=1e-6)
    ids = tokens.to(torch.int64).numpy()
    assert judge_single_pass(capture, ids).passed and judge_normalization(capture, ids, VOCAB).passed
    # Positions are indices of the predicted token: recompute one window's span directly.
    start, first, end = eval_windows(args, tokens.numel() - 1)[5]
    ids = tokens.to(torch.int64)
    with torch.no_grad():
        direct = F.cross_entropy(model(ids[start:end][None])[0], ids[start + 1 : end + 1], reduction="none")
    assert np.allclose(nll[first:end], direct[first - start :].double().numpy(), atol=1e-5)


# ---------------------------------------------------------------- the records' window lists

@pytest.mark.parametrize("kind,least", [("records", 8), ("records_all", 1)])
def test_record_windows_score_the_tail_again(kind, least):
    """As seeds 001/002 ("records": while a stride remains) and 000/002 v1 ("records_all": while a token remains)
    wrote them: a window every stride from 0; cut windows score their last stride (all of it if shorter)."""
    args = tiny_args(train_seq_len=32, sliding_stride=8, eval_windows=kind)
    total = 100
    wins = eval_windows(args, total)
    expected = [(s, s if s == 0 else max(min(s + 32, total) - 8, s), min(s + 32, total))
                for s in range(0, total, 8) if min(s + 32, total) - s >= least or s == 0]
    assert wins == expected
    counts = torch.zeros(total, dtype=torch.int64)
    for _, a, e in wins:
        counts[a:e] += 1
    assert bool((counts[:92] == 1).all()) and int(counts[92:].min()) > 1  # the last stride: scored again and again
    tiled = eval_windows(tiny_args(train_seq_len=32, sliding_stride=8), total)
    assert sum(e - a for _, a, e in tiled) == total  # the recipe default scores every token once


def test_record_windows_reach_the_score_padded_to_the_window_length():
    args, state = trained_state()
    tokens = synthetic_tokens(SEQ_LEN * 6 + 5, seed=3)
    model = GPT(args)
    model.load_state_dict(state)
    rec = make_args(None, **{**vars(args), "sliding_stride": 8, "eval_windows": "records"})
    loss, _ = eval_sliding(rec, model, 0, 1, CPU, tokens, fake_luts())
    ids = tokens.to(torch.int64)
    total, nll, count = ids.numel() - 1, 0.0, 0
    with torch.no_grad():
        for s, a, e in eval_windows(rec, total):  # each window alone, unpadded: the same scores
            out = F.cross_entropy(model(ids[s:e][None])[0], ids[s + 1 : e + 1], reduction="none")
            nll, count = nll + float(out[a - s :].sum()), count + e - a
    assert count > total and loss == pytest.approx(nll / count, rel=1e-6)


def test_eval_passes_are_chosen_per_recipe():
    from packager.runtime.train import eval_pass_names

    assert eval_pass_names(tiny_args()) == ["roundtrip"]
    assert eval_pass_names(tiny_args(sliding_stride=8, ttt_mode="chunked")) == ["roundtrip", "sliding", "ttt"]
    assert eval_pass_names(tiny_args(sliding_stride=8, ttt_mode="chunked", eval_passes="roundtrip,ttt")) == [
        "roundtrip", "ttt"]
    assert eval_pass_names(tiny_args(sliding_stride=8, eval_passes="sliding")) == ["sliding"]
    for bad in ("ttt", "sliding", "roundtrip,roundtrip", "full"):
        with pytest.raises(ValueError, match="EVAL_PASSES="):
            eval_pass_names(tiny_args(eval_passes=bad))
    with pytest.raises(ValueError, match="at most once, in this order"):  # TTT changes the weights: it comes last
        eval_pass_names(tiny_args(sliding_stride=8, ttt_mode="chunked", eval_passes="ttt,roundtrip"))
