"""The baseline GPT: upstream parameter layout, init, forward contract, attention, RoPE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from packager.hparams import load_baseline_recipe, resolve
from packager.runtime import docattn as D
from packager.runtime import frontier as FR
from packager.runtime import kernels as K
from packager.runtime import model as M

from tests.model_helpers import one_thread  # noqa: F401 (autouse fixture)

# The public baseline (root train_gpt.py of openai/parameter-golf) logs model_params:17059912.
BASELINE_PARAMS = 17_059_912
BLOCK_KEYS = (  # state_dict order inside one block: own parameters first, then children
    ("attn_scale", (512,)), ("mlp_scale", (512,)), ("resid_mix", (2, 512)), ("attn.q_gain", (8,)),
    ("attn.c_q.weight", (512, 512)), ("attn.c_k.weight", (256, 512)), ("attn.c_v.weight", (256, 512)),
    ("attn.proj.weight", (512, 512)), ("mlp.fc.weight", (1024, 512)), ("mlp.proj.weight", (512, 1024)),
)




def model_args(**overrides) -> SimpleNamespace:
    """args holding the model's declared HPs (defaults, the frontier modules' too) plus vocab_size, owned by data."""
    values = resolve(None, M.HPARAMS + FR.HPARAMS + D.HPARAMS + K.HPARAMS)
    values.update(vocab_size=1024, train_seq_len=1024)
    values.update(overrides)
    return SimpleNamespace(**values)


def tiny_args(**overrides) -> SimpleNamespace:
    base = dict(vocab_size=96, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2)
    return model_args(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> M.GPT:
    torch.manual_seed(seed)
    model = M.GPT(tiny_args(**overrides))
    with torch.no_grad():  # leave the zero init so that every path carries signal
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_hparams_declared_as_upstream_defaults():
    # The baseline's own HPs; those of gated techniques are checked in test_model_techniques.py.
    hps = {hp.name: hp for hp in M.HPARAMS if hp.feature is None}
    expected = dict(num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=2, activation="relu2",
                    tie_embeddings=True, tied_embed_init_std=0.005, logit_softcap=30.0, rope_base=10000.0,
                    qk_gain_init=1.5, attention="auto")
    assert {k: hps[k].default for k in expected} == expected
    assert set(hps) == set(expected)
    for name, hp in hps.items():
        assert hp.env == name.upper() and hp.path == f"model.{name}" and hp.feature is None
        assert type(hp.default) is hp.kind
    assert hps["activation"].choices == ("relu2", "leaky_relu2", "swiglu")
    assert resolve(load_baseline_recipe(), hps.values()) == expected | {"attention": "sdpa"}  # upstream runs SDPA


def test_baseline_parameter_count_and_state_dict_layout():
    torch.manual_seed(0)
    model = M.GPT(model_args())
    assert sum(p.numel() for p in model.parameters()) == BASELINE_PARAMS
    sd = model.state_dict()
    assert len(sd) == 2 + 9 * len(BLOCK_KEYS)
    expected = [("skip_weights", (4, 512)), ("tok_emb.weight", (1024, 512))]
    expected += [(f"blocks.{i}.{k}", shape) for i in range(9) for k, shape in BLOCK_KEYS]
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == expected
    assert all(v.dtype == torch.float32 for v in sd.values())
    untied = M.GPT(model_args(tie_embeddings=False)).state_dict()
    assert list(untied) == list(sd) + ["lm_head.weight"]
    assert untied["lm_head.weight"].shape == (1024, 512)


def test_init_zero_projections_gains_and_embedding_std():
    torch.manual_seed(0)
    model = M.GPT(model_args(num_layers=2))
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
        assert block.attn.c_q.weight.abs().sum() > 0 and block.mlp.fc.weight.abs().sum() > 0
        assert torch.all(block.attn.q_gain == 1.5)
        assert torch.all(block.attn_scale == 1) and torch.all(block.mlp_scale == 1)
        assert torch.equal(block.resid_mix, torch.stack((torch.ones(512), torch.zeros(512))))
    assert torch.all(model.skip_weights == 1)
    assert model.lm_head is None
    assert abs(model.tok_emb.weight.std().item() - 0.005) < 2e-4
    untied = M.GPT(model_args(num_layers=2, tie_embeddings=False))
    assert not untied.lm_head.weight.any()
    assert abs(untied.tok_emb.weight.std().item() - 1.0) < 0.02  # nn.Embedding's N(0, 1)


def test_tied_head_uses_token_embedding():
    model = tiny_model()
    ids = torch.randint(0, 96, (2, 10))
    h = model.hidden(ids)
    expected = 30.0 * torch.tanh(h @ model.tok_emb.weight.T / 30.0)
    torch.testing.assert_close(model(ids), expected)
    model(ids, torch.randint(0, 96, (2, 10))).backward()
    unseen = torch.ones(96, dtype=torch.bool)
    unseen[ids.unique()] = False
    assert model.tok_emb.weight.grad[unseen].abs().min() > 0  # only the head reaches these rows


def test_untied_head_is_separate():
    model = tiny_model(tie_embeddings=False)
    ids = torch.randint(0, 96, (2, 10))
    h = model.hidden(ids)
    torch.testing.assert_close(model(ids), 30.0 * torch.tanh(h @ model.lm_head.weight.T / 30.0))


def test_reduction_none_and_mean_agree():
    model = tiny_model()
    x, y = torch.randint(0, 96, (3, 16)), torch.randint(0, 96, (3, 16))
    per_token = model(x, y, reduction="none")
    mean = model(x, y)
    assert per_token.shape == (3, 16) and mean.shape == () and mean.dtype == torch.float32
    torch.testing.assert_close(per_token.mean(), mean)
    logits = model(x)
    torch.testing.assert_close(per_token, F.cross_entropy(logits.transpose(1, 2), y, reduction="none"))


def test_logits_shape_dtype_and_softcap_bound():
    model = tiny_model(logit_softcap=5.0)
    logits = model(torch.randint(0, 96, (2, 7)))
    assert logits.shape == (2, 7, 96) and logits.dtype == torch.float32
    assert logits.abs().max() < 5.0
    with torch.no_grad():
        model.tok_emb.weight.mul_(1000.0)  # drive tanh to saturation: still capped
    logits = model(torch.randint(0, 96, (2, 7)))
    assert logits.abs().max() <= 5.0 and logits.abs().max() > 4.9


def test_causal_future_tokens_do_not_change_past_losses():
    model = tiny_model()
    x, y = torch.randint(0, 96, (1, 24)), torch.randint(0, 96, (1, 24))
    base = model(x, y, reduction="none")
    x2 = x.clone()
    x2[0, 15] = (x[0, 15] + 1) % 96
    changed = model(x2, y, reduction="none")
    torch.testing.assert_close(changed[:, :15], base[:, :15], rtol=0, atol=1e-6)
    assert (changed[:, 15:] - base[:, 15:]).abs().max() > 1e-4


def reference_attention(q, k, v):
    """Plain causal softmax attention on (B, T, H, D), kv heads repeated for GQA."""
    rep = q.size(2) // k.size(2)
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.size(-1))
    T = q.size(1)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v)


def test_attention_layout_and_gqa_match_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 9, 8, 16), torch.randn(2, 9, 2, 16), torch.randn(2, 9, 2, 16)
    out = M.attention(q, k, v)
    assert out.shape == (2, 9, 8, 16)
    torch.testing.assert_close(out, reference_attention(q, k, v), rtol=1e-5, atol=1e-5)
    full = M.attention(q, k, v, causal=False)
    assert not torch.allclose(full[:, 0], out[:, 0])  # the first position sees only itself when causal
    torch.testing.assert_close(full[:, -1], out[:, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pin", ["sdpa", "fa3", "fa2", "auto"])
def test_attention_kernel_is_pinned_and_never_falls_back_on_cuda(pin, monkeypatch):
    args, cuda = tiny_args(attention=pin), torch.device("cuda")
    assert M.attention_kernel(args, torch.device("cpu")) == "sdpa"  # CPU has no FlashAttention
    fake = lambda *a, **k: None  # noqa: E731 (an installed kernel; attention_kernel never calls it)
    for fa3, fa2, expected in ((None, None, {"sdpa": "sdpa", "auto": "sdpa"}),
                               (None, fake, {"sdpa": "sdpa", "fa2": "fa2", "auto": "fa2"}),
                               (fake, None, {"sdpa": "sdpa", "fa3": "fa3", "auto": "fa3"}),
                               (fake, lambda *a, **k: None, {"sdpa": "sdpa", "fa3": "fa3", "fa2": "fa2", "auto": "fa3"})):
        monkeypatch.setattr(M, "flash_attn_3_func", fa3)
        monkeypatch.setattr(M, "flash_attn_2_func", fa2)
        if pin in expected:
            assert M.attention_kernel(args, cuda) == expected[pin]
        else:
            with pytest.raises(RuntimeError, match=f"ATTENTION={pin} is pinned by the recipe, but FlashAttention"):
                M.attention_kernel(args, cuda)


def test_gqa_projection_shapes():
    attn = M.CausalSelfAttention(tiny_args(model_dim=64, num_heads=8, num_kv_heads=2))
    assert attn.c_q.weight.shape == (64, 64) and attn.proj.weight.shape == (64, 64)
    assert attn.c_k.weight.shape == (16, 64) and attn.c_v.weight.shape == (16, 64)
    assert attn.q_gain.shape == (8,)
    assert attn(torch.randn(2, 5, 64)).shape == (2, 5, 64)


def test_rotary_is_relative():
    rot = M.Rotary(16, base=10000.0)
    cos, sin = rot(12, torch.device("cpu"), torch.float32)
    assert cos.shape == (1, 12, 1, 8)
    torch.manual_seed(0)
    q, k = torch.randn(16), torch.randn(16)
    x = torch.stack([q] * 12)[None, :, None, :]
    y = torch.stack([k] * 12)[None, :, None, :]
    rq, rk = M.apply_rotary_emb(x, cos, sin)[0, :, 0], M.apply_rotary_emb(y, cos, sin)[0, :, 0]
    torch.testing.assert_close(rq.norm(dim=-1), q.norm().expand(12))
    # the score depends only on the offset between positions
    torch.testing.assert_close(rq[3] @ rk[1], rq[10] @ rk[8], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(rq[3] @ rk[1], rq[3] @ rk[2])


def test_unet_skips_follow_layer_count():
    assert M.GPT(tiny_args(num_layers=5)).skip_weights.shape == (2, 32)
    model = tiny_model(num_layers=4)
    assert model.num_encoder_layers == 2 and model.num_decoder_layers == 2
    x = torch.randint(0, 96, (1, 8))
    before = model(x)
    with torch.no_grad():
        model.skip_weights.zero_()
    assert not torch.allclose(before, model(x))


def test_restore_low_dim_params_to_fp32():
    model = tiny_model().bfloat16()
    M.restore_low_dim_params_to_fp32(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert dtypes["skip_weights"] == dtypes["blocks.0.resid_mix"] == dtypes["blocks.1.attn.q_gain"] == torch.float32
    assert dtypes["blocks.0.attn.c_q.weight"] == dtypes["tok_emb.weight"] == torch.bfloat16


@pytest.mark.parametrize("overrides, message", [
    (dict(model_dim=30, num_heads=4), "MODEL_DIM=30 must be divisible by NUM_HEADS=4"),
    (dict(num_heads=4, num_kv_heads=3), "divisible by NUM_KV_HEADS=3"),
    (dict(model_dim=36, num_heads=12, num_kv_heads=4), "must be even"),
    (dict(logit_softcap=0.0), "LOGIT_SOFTCAP=0.0 must be positive"),
    (dict(activation="gelu"), "ACTIVATION='gelu' is not built into this script"),
])
def test_invalid_shapes_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        M.GPT(tiny_args(**overrides))


def test_backward_reaches_every_parameter():
    model = tiny_model(tie_embeddings=False)
    model(torch.randint(0, 96, (2, 12)), torch.randint(0, 96, (2, 12))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("tie, expected", [(True, 4.617020130157471), (False, 4.527075290679932)])
def test_loss_matches_upstream_reference_value(tie, expected):
    # Reference: the upstream GPT class loaded with this model's state_dict gave these losses
    # (fp32, CPU); it pins block wiring, skip order, RoPE, QK-norm, gains and the softcap.
    model = tiny_model(seed=3, num_layers=5, tie_embeddings=tie)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randint(0, 96, (2, 16), generator=g), torch.randint(0, 96, (2, 16), generator=g)
    assert model(x, y).item() == pytest.approx(expected, abs=2e-5)
