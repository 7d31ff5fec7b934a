"""Phased TTT: per-document LoRA scored chunk by chunk, global SGD phases on scored documents only;
judged in process on the scores the probes capture from outside (verifier.harness.capture, verifier.probes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch

from packager.hparams import make_args
from packager.runtime import phased as P
from packager.runtime.bpb import build_sentencepiece_luts
from packager.runtime.model import GPT
from packager.runtime.ttt import eval_ttt
from tests.model_helpers import one_thread  # noqa: F401
from verifier.harness.capture import capturing, load_capture, scores
from verifier.probes import judge_causality, judge_single_pass

VAL_TOKENS = 6000
VOCAB = 1024


def phased_args(**overrides):
    values = dict(ttt_mode="phased", num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2,
                  train_seq_len=128, eval_seq_len=128, ttt_lora_rank=4, ttt_lora_lr=0.01, ttt_chunk_len=64,
                  ttt_batch_docs=2, phased_ttt_prefix_docs=6, phased_ttt_num_phases=2, global_ttt_chunk_tokens=256,
                  global_ttt_batch_seqs=2, global_ttt_lr=0.01)
    values.update(overrides)
    return make_args(None, **values)


@pytest.fixture(scope="module")
def tiny_val(tiny_data):
    """Random tokens in BOS-led documents of 12-120 tokens (every 4-gram about once, so the capture places each
    scored row), ending with a BOS; the tiny tokenizer's byte tables."""
    g = np.random.default_rng(5)
    val = g.integers(4, VOCAB, size=VAL_TOKENS)
    starts = np.cumsum(g.integers(12, 120, size=VAL_TOKENS // 12))
    val[starts[starts < VAL_TOKENS]] = P.BOS_TOKEN
    val[0] = val[-1] = P.BOS_TOKEN
    sp = spm.SentencePieceProcessor(model_file=str(tiny_data / "tokenizers" / "fineweb_1024_bpe.model"))
    return torch.from_numpy(val).to(torch.uint16), build_sentencepiece_luts(sp, VOCAB, torch.device("cpu"))


def run_phased(args, val, luts, folder: Path):
    """(loss, bpb, capture of every score computed, printed as the script prints its figure)."""
    torch.manual_seed(0)
    model = GPT(args)
    with capturing(folder) as cap:
        name, loss, bpb = eval_ttt(args, model, 0, 1, torch.device("cpu"), val, luts, lambda *a, **k: None)
        cap.line(f"{name} val_loss:{loss:.8f}")
    assert name == "quantized_ttt_phased"
    capture, why = load_capture(folder, 1)
    assert capture is not None, why
    return loss, bpb, capture


def test_every_token_scored_once_and_global_phases_read_only_scored_documents(tiny_val, tmp_path):
    val, luts = tiny_val
    loss, bpb, cap = run_phased(phased_args(), val, luts, tmp_path)
    ids = val.to(torch.int64).numpy()
    single = judge_single_pass(cap, ids)
    assert single.passed, single.message
    assert set(scores(cap, ids).position.tolist()) == set(range(1, len(ids)))
    trained_at = {c.site.split()[-1] for c in cap.calls if c.grad}
    assert {"lora_batch", "forward"} <= trained_at  # LoRA steps (scored chunks) and global SGD (the model's loss)
    assert 0 < bpb < 20 and loss > 0


def test_global_sgd_on_an_unscored_document_is_caught(tiny_val, tmp_path, monkeypatch):
    """The broken fixture: each global phase also trains on the last document, not yet scored (first, so that it
    lies in a chunk the phase trains on: a phase skips its last chunk)."""
    val, luts = tiny_val
    docs = P.document_spans(val)
    real = P.global_sgd

    def leaky(args, model, scored, *rest, **kw):
        return real(args, model, [docs[-1]] + scored, *rest, **kw)

    monkeypatch.setattr(P, "global_sgd", leaky)
    _, _, cap = run_phased(phased_args(), val, luts, tmp_path)
    single = judge_single_pass(cap, val.to(torch.int64).numpy())
    lo, hi = docs[-1]
    assert single.status == "fail" and single.first.kind == "not-first-score", single.message
    assert lo < single.first.position <= hi and "with gradient" in single.first.message
    assert "lora_batch" in single.first.message  # where it was really scored, after the training step


def test_stream_order_is_causal(tiny_val, tmp_path):
    """Changing the tokens from P on leaves every score before P bit-identical (C1), global phases included;
    the records' length order scores short early documents after phases that trained on later text, which
    is legal once that text is scored."""
    val, luts = tiny_val
    docs = P.document_spans(val)
    position = docs[7][0] + 1  # after two global phases' documents
    changed = val.to(torch.int64)
    tail = changed[position:]
    changed[position:] = torch.where(tail > 3, (tail - 4 + 97) % (VOCAB - 4) + 4, tail)
    ta, tb = val.to(torch.int64).numpy(), changed.numpy()
    changed = changed.to(val.dtype)
    for order, moved in (("stream", False), ("length", True)):
        args = phased_args(phased_ttt_order=order)
        a = run_phased(args, val, luts, tmp_path / f"{order}_a")[2]
        b = run_phased(args, changed, luts, tmp_path / f"{order}_b")[2]
        causal = judge_causality(a, b, ta, tb, position)
        assert causal.passed, (order, causal.message)
        sa, sb = scores(a, ta), scores(b, tb)
        early = {p: v for p, v in zip(sa.position.tolist(), sa.nll.tolist()) if p < position}
        later = {p: v for p, v in zip(sb.position.tolist(), sb.nll.tolist()) if p < position}
        assert (early != later) == moved, order


def test_batches_and_adapter_reset():
    docs = [(0, 5), (5, 30), (30, 32), (32, 50), (50, 51)]
    stream = P.phase_batches(phased_args(ttt_batch_docs=2), docs)
    assert stream == [[(0, 5), (5, 30)], [(30, 32), (32, 50)], [(50, 51)]]
    by_length = P.phase_batches(phased_args(ttt_batch_docs=2, phased_ttt_order="length"), docs)
    assert by_length == [[(5, 30)], [(0, 5), (32, 50)], [(50, 51), (30, 32)]]
    args = phased_args(ttt_lora_alpha=8.0)
    lora = P.ScaledLoRA(3, 16, 8, args, torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        lora.b.fill_(1.0)
    x = torch.ones(3, 1, 16)
    assert torch.allclose(lora(x), (x @ lora.a.transpose(1, 2)).sum(-1, keepdim=True).expand(3, 1, 8) * 2.0)
    a = lora.a.detach().clone()
    lora.reset(warm=True)
    assert torch.equal(lora.a, a) and not lora.b.any()
    lora.reset(warm=False)
    assert not torch.equal(lora.a, a)


def test_adapters_cover_every_site_and_each_pass():
    args = phased_args(ttt_k_lora=False)
    model = GPT(args)
    adapters = P.DocAdapters(args, model, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert sorted(adapters["sites"]) == sorted(f"{i}_{s}" for i in range(2) for s in ("attn_c_q", "attn_c_v",
                                                                                       "attn", "mlp"))
    x = torch.randint(0, 1024, (2, 16))
    with torch.no_grad():
        base = model.hidden(x)
        for m in adapters.modules():
            if isinstance(m, P.ScaledLoRA):
                m.b.normal_()
        assert not torch.allclose(model.hidden(x), base)
        adapters.remove()
        assert torch.equal(model.hidden(x), base)


@pytest.mark.slow
def test_rendered_phased_script_on_two_ranks_and_eval_only_reproduces_it(tiny_data, tmp_path):
    """End to end: GPTQ + LQER + brotli + phased TTT rendered (wrapped), two gloo ranks on the tiny data;
    then EVAL_ONLY_PATH scores the saved artifact without training and gets the same TTT score."""
    import re
    import yaml
    from click.testing import CliRunner

    from packager.cli import pack
    from tests.test_e2e import BASELINE, run_torchrun, smoke_env

    recipe = yaml.safe_load(BASELINE.read_text())
    recipe["identity"].update(name="Phased e2e", slug="PhasedE2E")
    recipe["export"] = {"compressor": "brotli", "compress_level": 5, "gptq": True, "embed_bits": 7,
                        "lqer_enabled": True, "byte_shuffle": 2, "gptq_calibration_batches": 2}
    recipe["eval"] = {"seq_len": 128}
    recipe["ttt"] = {"mode": "phased", "lora_rank": 4, "chunk_len": 64, "batch_docs": 8, "prefix_docs": 20,
                     "num_phases": 2, "global_chunk_tokens": 2048, "global_batch_seqs": 4}
    recipe["code"] = {"wrap": "lzma_b85"}
    path = tmp_path / "phased.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    folder = tmp_path / "rec"
    assert CliRunner().invoke(pack, [str(path), "--out", str(folder)]).exit_code == 0
    assert (folder / "train_gpt.py").read_text().count("\n") < 1500
    env = smoke_env(tiny_data, ITERATIONS="4", MODEL_DIM="128", NUM_LAYERS="2", TRAIN_LOG_EVERY="0")
    first = run_torchrun(folder, 2, env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    score = re.search(r"^quantized_ttt_phased_exact (.*)$", first.stdout, re.M).group(1)
    assert "ttpp: phase:2/2" in first.stdout and "GPTQ:collected" in first.stdout
    again = run_torchrun(folder, 2, dict(env, EVAL_ONLY_PATH="final_model.int6.ptz"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "eval_only: final_model.int6.ptz" in again.stdout and "step:" not in again.stdout
    assert re.search(r"^quantized_ttt_phased_exact (.*)$", again.stdout, re.M).group(1) == score
