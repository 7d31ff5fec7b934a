"""April export: full-Hessian GPTQ + SDClip, int7 embedding, int8 gates, LQER, brotli + byte shuffle,
per-group lrzip; parity with the records' own code on one fixed state dict."""

from __future__ import annotations

import io
import shutil
from types import SimpleNamespace

import pytest
import torch

from packager.hparams import resolve
from packager.runtime import compress as C
from packager.runtime import gptq as G
from packager.runtime import lqer as L
from packager.runtime import quant as Q
from tests.model_helpers import model_optim_args, one_thread  # noqa: F401  (one intra-op thread)
from tests.upstream_code import RECORD_1855, RECORD_1868, upstream_functions

DIM, HIDDEN, VOCAB = 256, 512, 512
UPSTREAM_QUANT = ["gptq_mixed_quantize", "dequantize_mixed", "gptq_quantize_weight", "_quantize_gate_int8_row",
                  "_lqer_pack", "_lqer_pack_asym"]


def export_args(**overrides) -> SimpleNamespace:
    """The #1868 export settings (int6 matrices, int7 embedding, LQER asym top-3, brotli, shuffle 2)."""
    values = resolve(None, G.HPARAMS + L.HPARAMS + C.HPARAMS + Q.HPARAMS)
    values.update(gptq=True, embed_bits=7, mlp_clip_sigmas=12.0, embed_clip_sigmas=15.0, lqer_enabled=True,
                  gated_attn_quant_gate=True, compressor="brotli", compress_level=11, byte_shuffle=2)
    values.update(overrides)
    return SimpleNamespace(**values)


def hessian(n: int, g: torch.Generator) -> torch.Tensor:
    x = torch.randn(1024, n, generator=g) @ (torch.eye(n) + 0.3 * torch.randn(n, n, generator=g) / n ** 0.5)
    return x.T @ x / 1024


@pytest.fixture(scope="module")
def fixed():
    """(state dict, Hessians): two blocks in the records' names, a tied embedding, sparse gates."""
    g = torch.Generator().manual_seed(0)
    sd = {"tok_emb.weight": torch.randn(VOCAB, DIM, generator=g) * 0.02}
    for i in range(2):
        p = f"blocks.{i}."
        for name, shape in (("attn.c_q.weight", (DIM, DIM)), ("attn.c_k.weight", (DIM // 2, DIM)),
                            ("attn.proj.weight", (DIM, DIM)), ("mlp.fc.weight", (HIDDEN, DIM)),
                            ("mlp.proj.weight", (DIM, HIDDEN))):
            sd[p + name] = torch.randn(*shape, generator=g) * 0.05
        sd[p + "attn.attn_gate_w"] = torch.randn(8, 12, generator=g) * 0.1
        sd[p + "attn_scale"] = torch.ones(DIM)
    hessians = {n: hessian(t.shape[1], g) for n, t in sd.items() if t.numel() > G.GPTQ_MIN_NUMEL}
    return sd, hessians


@pytest.fixture(scope="module")
def one_block(fixed):
    """The embedding and block 0 only: compressing at brotli quality 11 and ZPAQ costs a second per 0.5 MB."""
    sd, hessians = fixed
    keep = [n for n in sd if not n.startswith("blocks.1.")]
    return {n: sd[n] for n in keep}, {n: h for n, h in hessians.items() if n in keep}


def weighted_error(w, dq, h) -> float:
    e = (w - dq).double()
    return float(torch.einsum("ij,jk,ik->", e, h.double(), e))


def test_error_feedback_beats_rounding_on_the_hessian_weighted_error(fixed):
    sd, hessians = fixed
    w, h = sd["blocks.0.mlp.fc.weight"], hessians["blocks.0.mlp.fc.weight"]
    q, s = G.gptq_quantize(w, h, clip_sigmas=12.0, bits=6)
    rq, rs = G.gptq_quantize(w, None, clip_sigmas=12.0, bits=6)
    assert torch.equal(s, rs) and q.dtype == torch.int8 and int(q.abs().max()) <= 31
    gptq_err = weighted_error(w, q.float() * s.float()[:, None], h)
    rtn_err = weighted_error(w, rq.float() * rs.float()[:, None], h)
    assert gptq_err < 0.8 * rtn_err
    # SDClip: the scale is k standard deviations of the row over qmax, stored in fp16.
    assert torch.equal(s, (12.0 * w.std(dim=1) / 31).to(torch.float16))
    # Act-order changes the column order, not the format.
    q2, s2 = G.gptq_quantize(w, h, clip_sigmas=12.0, bits=6, act_order=False)
    assert torch.equal(s2, s) and not torch.equal(q2, q)


def test_export_paths_lqer_and_gates(fixed):
    sd, hessians = fixed
    obj, stats = G.quantize_state_dict_gptq(export_args(), sd, hessians)
    kinds = obj["kinds"]
    assert kinds["tok_emb.weight"].startswith("gptq7") and kinds["blocks.0.attn.c_q.weight"] == "passthrough"
    assert kinds["blocks.0.attn.attn_gate_w"] == "gate_int8_row" and kinds["blocks.0.attn_scale"] == "passthrough"
    assert sum(k.endswith("+lqer_asym") for k in kinds.values()) == 3
    assert obj["tensors"]["blocks.0.attn_scale"].dtype == torch.float16
    deq = G.dequantize_state_dict_gptq(obj)
    assert {n: t.dtype for n, t in deq.items()} == {n: t.dtype for n, t in sd.items()}
    # LQER lowers the error of exactly the matrices it corrects.
    plain = G.dequantize_state_dict_gptq(G.quantize_state_dict_gptq(export_args(lqer_enabled=False), sd, hessians)[0])
    for name, kind in kinds.items():
        before, after = (sd[name] - plain[name]).norm(), (sd[name] - deq[name]).norm()
        assert (after < before) if "lqer" in kind else torch.equal(deq[name], plain[name])
    sym = G.quantize_state_dict_gptq(export_args(lqer_asym_enabled=False), sd, hessians)[0]
    assert sum(k.endswith("+lqer") for k in sym["kinds"].values()) == 3
    corrected = next(n for n, k in sym["kinds"].items() if k.endswith("+lqer"))
    assert sym["tensors"][corrected + ".lqAs"].shape == (sd[corrected].shape[0],)  # symmetric: a scale per row
    no_gate = G.quantize_state_dict_gptq(export_args(gated_attn_quant_gate=False), sd, hessians)[0]
    assert no_gate["kinds"]["blocks.0.attn.attn_gate_w"] == "passthrough"


@pytest.mark.parametrize("record", [RECORD_1855, RECORD_1868])
def test_dequantized_weights_match_the_records_code(record, fixed):
    """Parity: the records' gptq_mixed_quantize on the same state dict and Hessians gives the same weights."""
    up = upstream_functions(record, UPSTREAM_QUANT)
    sd, hessians = fixed
    args = export_args()
    ours = G.dequantize_state_dict_gptq(G.quantize_state_dict_gptq(args, sd, hessians)[0])
    result, meta = up["gptq_mixed_quantize"](sd, hessians, args)
    theirs = up["dequantize_mixed"](result, meta, sd)
    assert set(ours) == set(theirs)
    for name in sd:
        err_ours, err_theirs = (sd[name] - ours[name]).norm(), (sd[name] - theirs[name]).norm()
        # Margin: 1e-6 relative on every tensor's reconstruction error (in practice: bit for bit).
        assert abs(float(err_ours - err_theirs)) <= 1e-6 * float(err_theirs) + 1e-12, name


def test_brotli_with_byte_shuffle_matches_the_records_bytes(one_block):
    """Compressed bytes within 0.5% of #1868's _compress (brotli 11 + stride-2 shuffle) on the same weights."""
    up = upstream_functions(RECORD_1868, UPSTREAM_QUANT + ["_compress", "_decompress", "_byte_shuffle",
                                                           "_byte_unshuffle"])
    sd, hessians = one_block
    args = export_args()
    blob, stats = Q.export_model(args, sd, hessians)
    result, meta = up["gptq_mixed_quantize"](sd, hessians, args)
    buf = io.BytesIO()
    torch.save({"w": result, "m": meta}, buf)
    theirs = up["_compress"](buf.getvalue(), "brotli")
    assert abs(len(blob) - len(theirs)) <= 0.005 * len(theirs)
    assert blob[:4] != C.SHUFFLE_MAGIC  # compressed, and the shuffle undone on load:
    back = Q.import_model(args, blob)
    assert all(torch.equal(back[n], t) for n, t in G.dequantize_state_dict_gptq(
        G.quantize_state_dict_gptq(args, sd, hessians)[0]).items())
    # Our shuffle is the records' format: either side reads the other's bytes.
    raw = bytes(range(256)) * 7 + b"x"
    assert C.shuffle_bytes(raw, 2) == up["_byte_shuffle"](raw, 2)
    assert up["_byte_unshuffle"](C.shuffle_bytes(raw, 3)) == raw == C.unshuffle_bytes(up["_byte_shuffle"](raw, 3))


def test_pergroup_round_trip_and_size_against_the_record(one_block, monkeypatch):
    if shutil.which("lrzip") is None:
        pytest.skip("lrzip is not installed (apt-get install lrzip)")
    up = upstream_functions(RECORD_1855, UPSTREAM_QUANT + ["_serialize_pergroup", "_similarity_sort_l1",
                                                           "_lrzip_compress", "_pack_streams"])
    sd, hessians = one_block
    args = export_args(compressor="pergroup", byte_shuffle=0)
    blob, _ = Q.export_model(args, sd, hessians)
    assert blob[:4] == C.PERGROUP_MAGIC
    back = Q.import_model(args, blob)
    expected = G.dequantize_state_dict_gptq(G.quantize_state_dict_gptq(args, sd, hessians)[0])
    assert all(torch.equal(back[n], t) for n, t in expected.items())
    result, meta = up["gptq_mixed_quantize"](sd, hessians, args)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        theirs = up["_serialize_pergroup"](result, meta, 1, tmp)
    assert abs(len(blob) - len(theirs)) <= 0.02 * len(theirs)
    # Without lrzip the script stops at start with one line naming the package.
    monkeypatch.setattr(C.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="apt-get install lrzip"):
        Q.check_export_args(args)


def test_similarity_order_is_a_greedy_l1_walk():
    import numpy as np

    rows = np.array([[0, 0], [9, 9], [1, 0], [8, 9], [1, 1]], dtype=np.int8)
    assert C.similarity_order(rows).tolist() == [0, 2, 4, 3, 1]


def test_pergroup_needs_a_gptq_export():
    with pytest.raises(ValueError, match="GPTQ_ENABLED=1"):
        Q.export_model(export_args(compressor="pergroup", gptq=False), {"w": torch.randn(300, 300)})


def test_missing_brotli_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name))
                        if name == "brotli" else real(name, *a, **k))
    with pytest.raises(SystemExit, match="pip install brotli"):
        Q.check_export_args(export_args())


def test_hessians_of_a_tiny_model_cover_every_quantized_matrix():
    from packager.runtime.model import GPT

    torch.manual_seed(0)
    model = GPT(model_optim_args(num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2, mlp_mult=2, vocab_size=512))
    x = torch.randint(0, 512, (2, 32))
    loader = SimpleNamespace(next_batch=lambda tokens, seq_len, accum: (x, x))
    args = SimpleNamespace(gptq_calibration_batches=3, train_batch_tokens=64, train_seq_len=32)
    hessians = G.collect_hessians(args, model, loader, 1, torch.device("cpu"))
    expected = {n for n, t in model.state_dict().items() if t.ndim == 2 and t.numel() > G.GPTQ_MIN_NUMEL}
    assert set(hessians) == expected and "tok_emb.weight" in hessians and "blocks.0.mlp.fc.weight" in hessians
    # The mean over batches of X^T X of the layer input: here the normed input of block 0's MLP.
    seen = []
    hook = model.blocks[0].mlp.fc.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].reshape(-1, 256)))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert torch.allclose(hessians["blocks.0.mlp.fc.weight"], seen[0].T @ seen[0], rtol=1e-4, atol=1e-4)
    assert all(torch.allclose(h, h.T) for h in hessians.values())
