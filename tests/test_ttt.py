"""Test-time training variants (packager.runtime.ttt): score-first legality judged on the scores the
probes capture from outside (verifier.probes)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

from packager.runtime.bpb import eval_val
from packager.runtime.evaluate import eval_sliding
from packager.runtime.model import GPT
from packager.runtime.ttt import cosine_lr, eval_ttt, sgd_setup, ttt_epoch, two_phase_params
from tests.test_evaluate import (
    BOS, CPU, SEQ_LEN, VOCAB, captured, fake_luts, first_scores, random_tokens, synthetic_tokens, tiny_args,
    trained_state,
)
from verifier.harness.capture import capturing, load_capture, scores
from verifier.probes import judge_causality, judge_single_pass

N_TOKENS = SEQ_LEN * 40 + 1  # 1281 tokens: 5 TTT chunks of 256 targets
COMMON = dict(sliding_stride=16, ttt_chunk_tokens=256, ttt_batch_seqs=4, ttt_grad_clip=1.0)
MODES = {
    "lora": dict(ttt_mode="lora", ttt_chunk_len=16, ttt_batch_docs=3, ttt_lora_rank=4, ttt_lora_lr=0.02,
                 ttt_lora_targets="q,k,v,o,fc,proj,head"),
    "chunked": dict(ttt_mode="chunked", ttt_epochs=2, ttt_lr=0.02, ttt_cosine=True, ttt_freeze_blocks=1),
    "two_phase": dict(ttt_mode="two_phase", ttt_phase1_epochs=2, ttt_phase1_lr=0.01, ttt_phase2_epochs=2, ttt_cosine=True,
                      ttt_phase2_lr=0.01, ttt_phase2_last_k=1),
    "pre_eval": dict(ttt_mode="pre_eval", ttt_epochs=2, ttt_lr=0.02, ttt_allow_illegal=True,
                     ttt_lr_groups="mlp.proj:3,mlp.fc:0.5", ttt_cosine=True),
    "two_phase_pre_eval": dict(ttt_mode="two_phase_pre_eval", ttt_phase1_epochs=2, ttt_phase1_lr=0.01,
                               ttt_phase2_epochs=2, ttt_phase2_lr=0.01, ttt_phase2_last_k=1, ttt_cosine=True,
                               ttt_allow_illegal=True),
    "lora_chunks": dict(ttt_mode="lora_chunks", ttt_chunk_len=16, ttt_lora_rank=4, ttt_lora_lr=0.02,
                        ttt_lora_targets="q,v", ttt_min_doc_len=20),
}
LABELS = {"lora": "final_ttt_lora", "chunked": "legal_ttt", "two_phase": "final_ttt_two_phase",
          "pre_eval": "final_ttt_pre_eval", "two_phase_pre_eval": "final_ttt_two_phase_pre_eval",
          "lora_chunks": "final_ttt"}
ILLEGAL = ("pre_eval", "two_phase_pre_eval")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_model():
    return trained_state()


def document_spans(tokens: torch.Tensor) -> list[tuple[int, int]]:
    """Target spans [lo, hi) of the BOS-delimited documents (each predicts the next BOS)."""
    cuts = [i for i, t in enumerate(tokens[:-1].tolist()) if t == BOS or i == 0] + [tokens.numel() - 1]
    return list(zip(cuts[:-1], cuts[1:]))


def ttt_args(mode: str, **overrides):
    return tiny_args(**{**COMMON, **MODES[mode], **overrides})


def run_ttt(args, state, tokens, probe_dir: Path, rank=0, world_size=1):
    """(label, loss, bpb, capture of its scores, log lines, model after)."""
    model = GPT(args)
    model.load_state_dict(state)
    logs: list[str] = []
    torch.manual_seed(0)  # seed 003's adapters and seed 000's batch order come from the global RNG
    capture, (label, loss, bpb) = captured(probe_dir, "ttt", lambda: eval_ttt(
        args, model, rank, world_size, CPU, tokens, fake_luts(), logs.append))
    return label, loss, bpb, capture, logs, model


def score_first(capture, tokens) -> None:
    """The probes' C3/C4 judgement: the reported loss is the mean of each token's first score, and every
    token was scored."""
    ids = tokens.to(torch.int64).numpy()
    outcome = judge_single_pass(capture, ids)
    assert outcome.passed, outcome.message
    assert not np.isnan(first_scores(capture, tokens)[1:]).any(), "every token must be scored"


# ---------------------------------------------------------------- every variant

@pytest.mark.parametrize("mode", sorted(MODES))
def test_causality_legal_variants_and_pre_eval_breaks_it(mode, trained_model, tmp_path):
    """C1 + C3: changing the tokens from P on leaves every score before P (and the distribution at P)
    bit-identical for the legal variants; pre-eval TTT reads them before scoring, and its earlier scores move."""
    _, state = trained_model
    args = ttt_args(mode)
    tokens = random_tokens(N_TOKENS, seed=11)
    p = 701
    changed = tokens.to(torch.int64).clone()
    tail = changed[p:]
    changed[p:] = torch.where(tail == BOS, tail, (tail - 4 + 17) % (VOCAB - 4) + 4)
    changed = changed.to(torch.uint16)
    assert document_spans(tokens) == document_spans(changed)  # same documents, so same LoRA batches
    label, loss, bpb, cap, _, _ = run_ttt(args, state, tokens, tmp_path / "a")
    cap_b = run_ttt(args, state, changed, tmp_path / "b")[3]
    assert label == LABELS[mode] and bpb > 0
    causal = judge_causality(cap, cap_b, tokens.to(torch.int64).numpy(), changed.to(torch.int64).numpy(), p)
    if mode in ILLEGAL:
        assert causal.status == "fail" and causal.first.position == 1, causal.message
        single = judge_single_pass(cap, tokens.to(torch.int64).numpy())
        assert single.status == "fail" and "with gradient" in single.message, "pre-eval TTT steps before scoring"
        return
    assert causal.passed, causal.message
    score_first(cap, tokens)


# ---------------------------------------------------------------- LoRA

def test_lora_keeps_base_weights_and_scores_before_each_step(trained_model, tmp_path):
    _, state = trained_model
    args = ttt_args("lora")
    tokens = random_tokens(N_TOKENS, seed=12)
    label, loss, _, cap, _, model = run_ttt(args, state, tokens, tmp_path)
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)
    assert all(not m._forward_hooks for m in model.modules()) and all(p.requires_grad for p in model.parameters())
    score_first(cap, tokens)
    assert any(c.grad for c in cap.calls), "LoRA TTT scores with the gradient it then steps on"
    still = run_ttt(ttt_args("lora", ttt_lora_lr=0.0), state, tokens, tmp_path / "z")[1]
    assert loss != still


def test_lora_without_learning_is_document_isolated_scoring(trained_model, tmp_path):
    """lr 0: every document (shorter than the window) scores as one forward over itself."""
    _, state = trained_model
    args = ttt_args("lora", ttt_lora_lr=0.0)
    tokens = synthetic_tokens(N_TOKENS, seed=13, max_doc=SEQ_LEN - 2)
    _, loss, _, _, _, model = run_ttt(args, state, tokens, tmp_path)
    ids = tokens.to(torch.int64)
    total, count = 0.0, 0
    with torch.no_grad():
        for lo, hi in document_spans(ids):
            assert hi - lo <= SEQ_LEN
            total += float(F.cross_entropy(model(ids[lo:hi][None])[0], ids[lo + 1 : hi + 1], reduction="sum"))
            count += hi - lo
    assert count == N_TOKENS - 1 and loss == pytest.approx(total / count, rel=1e-6)


def test_lora_rejects_unknown_targets(trained_model, tmp_path):
    _, state = trained_model
    with pytest.raises(ValueError, match="TTT_LORA_TARGETS='q,zz': choose from"):
        run_ttt(ttt_args("lora", ttt_lora_targets="q,zz"), state, synthetic_tokens(200, 1), tmp_path)


# ---------------------------------------------------------------- chunked

def test_chunked_scores_each_chunk_before_training_on_it(trained_model, tmp_path):
    _, state = trained_model
    args = ttt_args("chunked")
    tokens = random_tokens(N_TOKENS, seed=14)
    label, loss, bpb, cap, _, model = run_ttt(args, state, tokens, tmp_path)
    score_first(cap, tokens)
    after = model.state_dict()
    frozen = [k for k in state if k.startswith("blocks.0.")]
    assert frozen and all(torch.equal(after[k], state[k]) == (k in frozen) for k in state), "TTT_FREEZE_BLOCKS=1"
    assert all(p.requires_grad for p in model.parameters())
    steps = [i for i, c in enumerate(cap.calls) if c.grad]  # one training forward per optimizer step
    chunks = (N_TOKENS - 1 + 255) // 256
    rows = 256 // SEQ_LEN
    assert len(steps) == (chunks - 1) * args.ttt_epochs * (rows // args.ttt_batch_seqs)
    last_first = (chunks - 1) * 256  # first target of the last chunk: token last_first + 1
    s = scores(cap, tokens.to(torch.int64).numpy())
    assert int(s.position[np.isin(s.call, steps)].max()) == last_first  # the last chunk is never trained on
    # No training at all: exactly the sliding evaluation.
    plain = run_ttt(ttt_args("chunked", ttt_epochs=0), state, tokens, tmp_path / "p")
    model = GPT(args)
    model.load_state_dict(state)
    assert plain[1:3] == eval_sliding(args, model, 0, 1, CPU, tokens, fake_luts())
    assert not any(c.grad for c in plain[3].calls)
    assert (loss, bpb) != plain[1:3]
    # Without a sliding window, chunks are scored by plain train_seq_len windows, as eval_val does.
    flat = run_ttt(ttt_args("chunked", ttt_epochs=0, sliding_stride=0), state, tokens, tmp_path / "f")
    assert flat[1:3] == pytest.approx(eval_val(args, model, 0, 1, CPU, 1, tokens, fake_luts()), rel=1e-6)


def test_cosine_lr_and_frozen_blocks():
    assert [round(cosine_lr(0.4, i, 4, True), 6) for i in range(5)] == [0.4, 0.341421, 0.2, 0.058579, 0.0]
    assert cosine_lr(0.4, 3, 4, False) == 0.4
    args = ttt_args("chunked")
    params, _ = sgd_setup(args, GPT(args))
    assert len(params) == len(list(GPT(args).parameters())) - len(list(GPT(args).blocks[0].parameters()))


# ---------------------------------------------------------------- two-phase

def test_two_phase_counts_parameters_and_logs_them(trained_model, tmp_path):
    _, state = trained_model
    args = ttt_args("two_phase")
    model = GPT(args)
    phase1, phase2, head = two_phase_params(args, model)
    dim = 32
    per_block = dim + dim + 2 * dim  # seed 000's selectors: attn_scale, mlp_scale, resid_mix (not q_gain)
    assert sum(p.numel() for p in phase1) == 2 * per_block  # no skip_weights either
    last_block = sum(p.numel() for p in model.blocks[1].parameters())
    assert sum(p.numel() for p in phase2) == last_block + per_block + VOCAB * dim
    assert head == "tok_emb (tied embeddings)" and any(p is model.tok_emb.weight for p in phase2)
    everything = two_phase_params(ttt_args("two_phase", ttt_phase2_last_k=5), model)[1]
    assert {id(p) for p in everything} == {id(p) for n, p in model.named_parameters() if n != "skip_weights"}
    assert len(two_phase_params(ttt_args("two_phase", ttt_phase2_last_k=0), model)[1]) == len(phase1) + 1
    untied = tiny_args(**{**COMMON, **MODES["two_phase"], "tie_embeddings": False})
    assert two_phase_params(untied, GPT(untied))[2] == "lm_head"
    tokens = random_tokens(N_TOKENS, seed=15)
    _, _, _, cap, logs, _ = run_ttt(args, state, tokens, tmp_path)
    line = next(l for l in logs if l.startswith("ttt_two_phase:"))
    assert f"phase1 tensors:{len(phase1)} params:{2 * per_block} " in line and "head:tok_emb" in line
    score_first(cap, tokens)


def test_two_phase_phase1_trains_only_scalars(trained_model):
    _, state = trained_model
    args = ttt_args("two_phase")
    model = GPT(args)
    model.load_state_dict(state)
    phase1, _, _ = two_phase_params(args, model)
    ids = {id(p) for p in phase1}
    opt = torch.optim.Adam(phase1, lr=0.01)
    ttt_epoch(args, model, phase1, opt, synthetic_tokens(N_TOKENS, seed=16), 0, 256, 0, 1, CPU)
    for name, p in model.named_parameters():
        assert torch.equal(p, state[name]) != (id(p) in ids), name


def test_two_phase_refuses_a_phase_without_parameters():
    class NoScalars(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok_emb = nn.Embedding(VOCAB, 8)
            self.blocks = nn.ModuleList([nn.Linear(8, 8, bias=False)])
            self.lm_head = None

    args = ttt_args("two_phase")
    with pytest.raises(ValueError, match="phase 1 selects no parameters"):
        two_phase_params(args, NoScalars())
    assert two_phase_params(ttt_args("two_phase", ttt_phase1_epochs=0), NoScalars())[0] == []


# ---------------------------------------------------------------- pre-eval (illegal)

def test_pre_eval_needs_the_illegal_flag_and_warns(trained_model, tmp_path):
    _, state = trained_model
    tokens = random_tokens(N_TOKENS, seed=17)
    with pytest.raises(ValueError, match="allow_illegal_ttt"):
        run_ttt(ttt_args("pre_eval", ttt_allow_illegal=False), state, tokens, tmp_path)
    _, _, _, cap, logs, _ = run_ttt(ttt_args("pre_eval"), state, tokens, tmp_path / "ok")
    assert any("WARNING" in l and "not allowed" in l for l in logs)
    assert cap.calls[0].grad, "pre-eval TTT steps before its first score"
    single = judge_single_pass(cap, tokens.to(torch.int64).numpy())
    assert single.status == "fail" and single.first.position == 1


def test_pre_eval_lr_groups_and_seed_000_phases_as_submitted(trained_model, tmp_path):
    _, state = trained_model
    tokens = random_tokens(N_TOKENS, seed=19)
    frozen = run_ttt(ttt_args("pre_eval", ttt_lr_groups="mlp.proj:0"), state, tokens, tmp_path / "a")[-1]
    after = frozen.state_dict()
    for name in state:  # an LR multiplier of 0 leaves mlp.proj as it was; everything else moved
        assert torch.equal(after[name], state[name]) == ("mlp.proj" in name), name
    args = ttt_args("two_phase_pre_eval")  # its batch order (torch.randperm per epoch) comes from the global RNG
    first = run_ttt(args, state, tokens, tmp_path / "b")
    again = run_ttt(args, state, tokens, tmp_path / "c")
    ids = tokens.to(torch.int64).numpy()
    assert first[1:3] == again[1:3] and np.array_equal(scores(first[3], ids).nll, scores(again[3], ids).nll)
    steps = [i for i, c in enumerate(first[3].calls) if c.grad]  # one training forward per optimizer step
    usable = (N_TOKENS - 1) // SEQ_LEN // 4 * 4  # whole batches of TTT_BATCH_SEQS sequences
    assert len(steps) == (2 + 2) * usable // 4 and steps == list(range(len(steps)))  # all before the first score
    model = first[-1].state_dict()
    assert torch.equal(model["blocks.0.attn.c_q.weight"], state["blocks.0.attn.c_q.weight"])  # not in phase 2's
    assert not torch.equal(model["blocks.1.attn.c_q.weight"], state["blocks.1.attn.c_q.weight"])  # last block


@pytest.mark.parametrize("score_all", [True, False])
def test_lora_chunks_scores_every_target_or_the_records_subset(score_all, trained_model, tmp_path):
    _, state = trained_model
    tokens = random_tokens(N_TOKENS, seed=20)
    tokens[400:403] = BOS  # documents of 1 and 2 tokens
    args = ttt_args("lora_chunks", ttt_score_all=score_all)
    cap = run_ttt(args, state, tokens, tmp_path)[3]
    ids = tokens.to(torch.int64)
    scored = sorted(set(scores(cap, ids.numpy()).position.tolist()))  # each chunk's forward scores it
    counted = sum(c.rows for c in cap.calls)  # targets scored, placed or not
    if score_all:
        # The 1-target documents at 400 and 401 are scored alone, out of order: too short to place.
        assert counted == N_TOKENS - 1 and scored == [t for t in range(1, N_TOKENS) if t not in (401, 402)]
        return
    bos = (ids == BOS).nonzero().flatten().tolist()
    expected = []  # seed 003: BOS to the next BOS (not predicted), documents of >= 5 tokens, no 1-token last chunk;
    # each document but the last drops a target
    for lo, hi in zip(bos, bos[1:] + [N_TOKENS]):
        n = hi - lo - 1
        if hi - lo >= 5:
            keep = n if n + 1 < args.ttt_min_doc_len or n % args.ttt_chunk_len != 1 else n - 1
            expected += list(range(lo + 1, lo + 1 + keep))
    assert scored == expected and counted == len(expected) and len(scored) <= N_TOKENS - len(bos)


def test_ttt_qat_fake_quantizes_the_ttt_steps_only(trained_model, tmp_path):
    """Seeds 000/002: TTT trains through the records' STE; scoring still sees the plain weights."""
    from packager.runtime.qat import configure_qat

    _, state = trained_model
    tokens = synthetic_tokens(N_TOKENS, seed=21)
    results = {}
    for on in (False, True):
        args = ttt_args("chunked", ttt_qat=on, qat_bits_mlp=6, qat_bits_attn=6, qat_ste="records",
                        qat_scale_floor=1 / 31)
        model = GPT(args)
        model.load_state_dict(state)
        configure_qat(args, model)
        results[on] = eval_ttt(args, model, 0, 1, CPU, tokens, fake_luts(), print)
    assert results[False] != results[True]
    plain = run_ttt(ttt_args("chunked"), state, tokens, tmp_path / "plain")
    assert plain[:3] == results[False]  # configured but off: exactly no QAT


def test_unbuilt_mode_is_an_error(trained_model):
    _, state = trained_model
    args = ttt_args("chunked", ttt_mode="none")
    with pytest.raises(ValueError, match="TTT_MODE='none'"):
        eval_ttt(args, GPT(args), 0, 1, CPU, synthetic_tokens(200, 1), fake_luts(), print)


# ---------------------------------------------------------------- two ranks (gloo)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank, world, port, out, state, tokens):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for mode in ("chunked", "lora"):
            args = ttt_args(mode)
            model = GPT(args)
            model.load_state_dict(state)
            with capturing(Path(out) / mode, rank=rank):
                results[mode] = eval_ttt(args, model, rank, world, CPU, tokens, fake_luts(), lambda m: None)
        (Path(out) / f"result{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_and_match_one(trained_model, tmp_path):
    _, state = trained_model
    tokens = random_tokens(N_TOKENS, seed=18)
    mp.spawn(_rank_worker, args=(2, _free_port(), str(tmp_path), state, tokens), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1
    # One rank with the same global batch (2 x 4 rows per step) gives the same numbers.
    single = run_ttt(ttt_args("chunked", ttt_batch_seqs=8), state, tokens, tmp_path / "one")
    assert r0["chunked"][0] == "legal_ttt" and r0["chunked"][1:] == pytest.approx(single[1:3], rel=1e-5)
    lora = run_ttt(ttt_args("lora"), state, tokens, tmp_path / "one_lora")
    assert r0["lora"][1:] == pytest.approx(lora[1:3], rel=1e-5)
    # Together the two ranks score every token, without gradient, and the first scores give the loss.
    cap, why = load_capture(tmp_path / "chunked", 2)
    assert cap is not None, why
    s = scores(cap, tokens.to(torch.int64).numpy())
    scored = s.position[[not cap.calls[c].grad for c in s.call]]
    assert set(scored.tolist()) == set(range(1, N_TOKENS))
