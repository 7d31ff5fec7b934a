"""Gated architecture techniques of the later records: LeakyReLU^2, SwiGLU, XSA, partial RoPE,
LN scale, SmearGate, BigramHash, shared value embedding, no U-Net skips, OrthoInit, and the
Muon / Adam weight decays with the optimizer placement of the new tensors."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from packager.hparams import load_baseline_recipe, resolve
from packager.recipe.load import load_recipe
from packager.render import recipe_features, render_script
from packager.runtime import model as M
from packager.runtime import optim as O

from tests.model_helpers import model_optim_args, one_thread  # noqa: F401 (autouse fixture)

TECHNIQUE_FEATURES = {  # feature -> recipe values that turn it on
    "leaky_relu2": dict(activation="leaky_relu2"),
    "swiglu": dict(activation="swiglu"),
    "xsa": dict(xsa_last_n=2),
    "partial_rope": dict(rope_dims=8),
    "ln_scale": dict(ln_scale=True),
    "smear_gate": dict(smear_gate=True),
    "bigram_hash": dict(bigram_buckets=64, bigram_dim=16),
    "value_embed": dict(ve_dim=8, ve_layers="2,3"),
    "no_unet": dict(unet_skips=False),
    "ortho_init": dict(ortho_init=True),
    "muon_wd": dict(muon_weight_decay=0.04),
    "adam_wd": dict(adam_weight_decay=0.04),
    "embed_wd": dict(embed_weight_decay=0.085),
    "muon_eq_r": dict(muon_row_normalize=True),
    "polar_express": dict(muon_ns="polar_express"),
    "warmdown_frac": dict(warmdown_frac=0.85),
    "min_lr": dict(min_lr=0.1),
    "untrained": dict(untrained_params="smear.gate"),
}
IMPLIED = {"embed_wd": {"adam_wd"}}  # EMBED_WD alone still needs the AdamW path
ALL_ON = {k: v for on in TECHNIQUE_FEATURES.values() for k, v in on.items()} | dict(activation="swiglu",
                                                                                   untrained_params="")




def make_args(**overrides) -> SimpleNamespace:
    """Every model and optimizer HP at its default (techniques off), a tiny 4-layer shape, overrides."""
    shape = dict(vocab_size=96, num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2)
    return model_optim_args(**(shape | overrides))


def noisy_model(seed: int = 0, **overrides) -> M.GPT:
    """A model whose zero-init tensors are perturbed, so that every path carries signal."""
    torch.manual_seed(seed)
    model = M.GPT(make_args(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_params(a) -> int:
    """Parameter count by formula from the shape and technique hyperparameters."""
    dim, kv = a.model_dim, a.num_kv_heads * (a.model_dim // a.num_heads)
    if a.activation == "swiglu":
        hidden = math.ceil(int(2 * a.mlp_mult * dim / 3) / 64) * 64
        mlp = 3 * hidden * dim
    else:
        mlp = 2 * a.mlp_mult * dim * dim
    block = 2 * dim * dim + 2 * kv * dim + a.num_heads + mlp + 4 * dim  # q, proj, k, v, q_gain, MLP, gains, mix
    encoder = a.num_layers // 2 if a.unet_skips else 0
    total = a.vocab_size * dim * (1 if a.tie_embeddings else 2) + a.num_layers * block
    total += min(encoder, a.num_layers - encoder) * dim
    total += dim if a.smear_gate else 0
    if a.bigram_buckets:
        total += a.bigram_buckets * a.bigram_dim + (a.bigram_dim * dim if a.bigram_dim != dim else 0) + 1
    if a.ve_layers:
        total += a.vocab_size * a.ve_dim + (a.ve_dim * kv if a.ve_dim != kv else 0) + 1 + len(a.ve_layers.split(","))
    return total


def capture_inputs(module: nn.Module) -> list:
    """Positional inputs of every call of `module` (a forward pre-hook)."""
    seen: list = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args))
    return seen


# ---------------------------------------------------------------- declarations and gating

def test_hparams_declared_off_by_default():
    hps = {hp.name: hp for hp in M.HPARAMS + O.HPARAMS if hp.feature is not None}
    expected = {  # name: (env, recipe path, default, feature)
        "xsa_last_n": ("XSA_LAST_N", "model.xsa_last_n", 0, "xsa"),
        "rope_dims": ("ROPE_DIMS", "model.rope_dims", 0, "partial_rope"),
        "ln_scale": ("LN_SCALE", "model.ln_scale", False, "ln_scale"),
        "smear_gate": ("SMEAR_GATE", "model.smear_gate", False, "smear_gate"),
        "bigram_buckets": ("BIGRAM_VOCAB_SIZE", "model.bigram_buckets", 0, "bigram_hash"),
        "bigram_dim": ("BIGRAM_DIM", "model.bigram_dim", 128, "bigram_hash"),
        "ve_dim": ("VE_DIM", "model.ve_dim", 128, "value_embed"),
        "ve_layers": ("VE_LAYERS", "model.ve_layers", "", "value_embed"),
        "unet_skips": ("UNET_SKIPS", "model.unet_skips", True, "no_unet"),
        "ortho_init": ("ORTHO_INIT", "model.ortho_init", False, "ortho_init"),
        "muon_weight_decay": ("MUON_WD", "train.optimizer.muon_weight_decay", 0.0, "muon_wd"),
        "adam_weight_decay": ("ADAM_WD", "train.optimizer.adam_weight_decay", 0.0, "adam_wd"),
        "embed_weight_decay": ("EMBED_WD", "train.optimizer.embed_weight_decay", 0.0, "embed_wd"),
        "muon_row_normalize": ("MUON_ROW_NORMALIZE", "train.optimizer.muon_row_normalize", False, "muon_eq_r"),
        "muon_ns": ("MUON_NS", "train.optimizer.muon_ns", "quintic", "polar_express"),
        "warmdown_frac": ("WARMDOWN_FRAC", "train.warmdown_frac", 0.0, "warmdown_frac"),
        "min_lr": ("MIN_LR", "train.min_lr", 0.0, "min_lr"),
        "untrained_params": ("UNTRAINED_PARAMS", "train.optimizer.untrained", "", "untrained"),
    }
    assert {n: (hp.env, hp.path, hp.default, hp.feature) for n, hp in hps.items()} == expected
    for hp in hps.values():
        assert type(hp.default) is hp.kind
    # The FlashAttention kernels follow model.attention (see test_model.py).
    assert set(M.FEATURES) | set(O.FEATURES) == set(TECHNIQUE_FEATURES) | {"flash_attn"}


@pytest.mark.parametrize("name", sorted(TECHNIQUE_FEATURES))
def test_each_feature_rule_is_off_by_default_and_on_alone(name):
    values = resolve(load_baseline_recipe()) | dict(attention="sdpa")
    assert not recipe_features(values) & set(TECHNIQUE_FEATURES)
    assert recipe_features(values | TECHNIQUE_FEATURES[name]) & set(TECHNIQUE_FEATURES) == {name} | IMPLIED.get(name, set())


def test_defaults_keep_the_baseline_model_and_optimizers():
    args = make_args(vocab_size=1024, num_layers=9, model_dim=512, num_heads=8, num_kv_heads=4)
    model = M.GPT(args)
    assert n_params(model) == 17_059_912 == expected_params(args)
    assert not any(k.startswith(("bigram", "smear", "ve_")) for k in model.state_dict())
    assert model.bigram is None and model.smear is None and model.ve_shared is None
    assert not any(b.attn.use_xsa for b in model.blocks) and all(b.ln_scale == 1.0 for b in model.blocks)
    optimizers, muon = O.build_optimizers(args, model)
    assert [type(o) for o in optimizers] == [torch.optim.Adam, O.Muon, torch.optim.Adam]
    assert muon.param_groups[0]["weight_decay"] == 0.0


# ---------------------------------------------------------------- parameter counts and names

@pytest.mark.parametrize("name, delta", [
    # extra parameters over the tiny baseline, written out from the shapes (dim 64, vocab 96, kv 32)
    ("leaky_relu2", 0),
    ("swiglu", 3 * 128 * 64 * 4 - 2 * 128 * 64 * 4),  # mlp_mult 2: hidden 2/3 * 128 = 85 -> 128
    ("xsa", 0), ("partial_rope", 0), ("ln_scale", 0), ("ortho_init", 0), ("muon_wd", 0), ("adam_wd", 0),
    ("smear_gate", 64),
    ("bigram_hash", 64 * 16 + 16 * 64 + 1),
    ("value_embed", 96 * 8 + 8 * 32 + 1 + 2),
    ("no_unet", -2 * 64),
])
def test_parameter_count_per_technique(name, delta):
    base = n_params(M.GPT(make_args()))
    assert base == expected_params(make_args())
    args = make_args(**TECHNIQUE_FEATURES[name])
    assert n_params(M.GPT(args)) == base + delta == expected_params(args)


def test_parameter_count_all_on_and_swiglu_widths():
    args = make_args(**ALL_ON)
    assert n_params(M.GPT(args)) == expected_params(args)
    for mult, dim, hidden in [(3, 512, 1024), (2, 512, 704), (4, 64, 192)]:  # int(2 * mult * dim / 3), up to 64
        mlp = M.MLP(make_args(activation="swiglu", mlp_mult=mult, model_dim=dim))
        assert mlp.gate.weight.shape == mlp.up.weight.shape == (hidden, dim) and not hasattr(mlp, "fc")


@pytest.mark.parametrize("overrides, logged", [
    # model_params logged by public records (tied 1024 vocab, 512 wide, 8/4 heads, MLP 3x relu^2):
    # 2026-03-20_Int6_MLP3x_SmearGate_BigramHash_MuonWD_SWA: 9 layers, BigramHash 4096x128
    (dict(num_layers=9, bigram_buckets=4096), 22_368_841),
    # 2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233: 11 layers, BigramHash 2048, VE 128 on 9,10
    (dict(num_layers=11, bigram_buckets=2048, ve_dim=128, ve_layers="9,10"), 26_993_756),
    # 2026-03-23_LeakyReLU_LegalTTT_ParallelMuon: the same with BigramHash 1536 and LeakyReLU^2
    (dict(num_layers=11, bigram_buckets=1536, ve_dim=128, ve_layers="9,10", activation="leaky_relu2"), 26_928_220),
])
def test_parameter_count_matches_public_records(overrides, logged):
    args = make_args(vocab_size=1024, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=3, bigram_dim=128,
                     smear_gate=True, xsa_last_n=4, rope_dims=16, ln_scale=True, ortho_init=True, **overrides)
    assert n_params(M.GPT(args)) == logged == expected_params(args)


def test_state_dict_names_follow_the_records():
    # Order as the records register them: GPT's own skip_weights, tok_emb, bigram, smear, blocks, VE
    # (a module's own parameters before its children's, as torch writes state_dicts).
    model = M.GPT(make_args(**ALL_ON))
    keys = list(model.state_dict())
    block = ["attn_scale", "mlp_scale", "resid_mix", "attn.q_gain", "attn.c_q.weight", "attn.c_k.weight",
             "attn.c_v.weight", "attn.proj.weight", "mlp.gate.weight", "mlp.up.weight", "mlp.proj.weight"]
    expected = ["skip_weights", "tok_emb.weight", "bigram.scale", "bigram.embed.weight", "bigram.proj.weight",
                "smear.gate"] + [f"blocks.{i}.{k}" for i in range(4) for k in block]
    expected += ["ve_shared.scale", "ve_shared.embed.weight", "ve_shared.proj.weight", "ve_layer_scales.0",
                 "ve_layer_scales.1"]
    assert keys == expected
    sd = model.state_dict()
    assert sd["bigram.embed.weight"].shape == (64, 16) and sd["bigram.proj.weight"].shape == (64, 16)
    assert sd["ve_shared.embed.weight"].shape == (96, 8) and sd["ve_shared.proj.weight"].shape == (32, 8)
    assert sd["smear.gate"].shape == (64,) and sd["bigram.scale"].shape == () and sd["ve_layer_scales.0"].shape == (1,)
    same = M.GPT(make_args(bigram_buckets=64, bigram_dim=64, ve_dim=32, ve_layers="1"))  # widths equal: no proj
    assert "bigram.proj.weight" not in same.state_dict() and "ve_shared.proj.weight" not in same.state_dict()


def test_new_control_tensors_stay_fp32():
    model = M.GPT(make_args(**ALL_ON)).bfloat16()
    M.restore_low_dim_params_to_fp32(model)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    for name in ("smear.gate", "bigram.scale", "ve_shared.scale", "ve_layer_scales.1"):
        assert dtypes[name] == torch.float32, name
    assert dtypes["bigram.embed.weight"] == dtypes["ve_shared.proj.weight"] == torch.bfloat16


# ---------------------------------------------------------------- activations

def test_leaky_relu2_activation():
    h = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    out = M.mlp_activation("leaky_relu2", h)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0625, 0.0, 0.25, 9.0]))
    out.sum().backward()
    torch.testing.assert_close(h.grad, torch.tensor([-1.0, -0.25, 0.0, 1.0, 6.0]))  # 2 * 0.25 h below zero
    mlp = M.MLP(make_args(activation="leaky_relu2"))
    nn.init.normal_(mlp.proj.weight)
    x = torch.randn(2, 3, 64)
    torch.testing.assert_close(mlp(x), F.leaky_relu(x @ mlp.fc.weight.T, 0.5).square() @ mlp.proj.weight.T)


def test_swiglu_mlp_is_silu_gate_times_up():
    mlp = M.MLP(make_args(activation="swiglu"))
    nn.init.normal_(mlp.proj.weight)
    x = torch.randn(2, 3, 64)
    expected = (F.silu(x @ mlp.gate.weight.T) * (x @ mlp.up.weight.T)) @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), expected)
    assert not M.GPT(make_args(activation="swiglu")).blocks[0].mlp.proj.weight.any()


# ---------------------------------------------------------------- attention: XSA, partial RoPE, VE

def test_xsa_on_the_last_layers_only():
    model = M.GPT(make_args(xsa_last_n=3))
    assert [b.attn.use_xsa for b in model.blocks] == [False, True, True, True]
    assert all(b.attn.use_xsa for b in M.GPT(make_args(xsa_last_n=9)).blocks)


def test_xsa_output_is_orthogonal_to_the_own_value_vector():
    torch.manual_seed(0)
    attn = M.CausalSelfAttention(make_args(num_heads=8, num_kv_heads=2))  # 4 query heads per kv head
    x = torch.randn(2, 11, 64)
    v = attn.c_v(x).view(2, 11, 2, 8).repeat_interleave(4, dim=2)  # the kv head of each query head
    seen = capture_inputs(attn.proj)
    attn(x)
    plain = seen[-1][0].view(2, 11, 8, 8)
    attn.use_xsa = True
    attn(x)
    y = seen[-1][0].view(2, 11, 8, 8)
    unit = F.normalize(v, dim=-1)
    assert (plain * unit).sum(-1).abs().max() > 1e-2  # without XSA the own-value component is there
    assert (y * unit).sum(-1).abs().max() < 1e-5
    # and nothing else changes: XSA is exactly the projection removal
    torch.testing.assert_close(y, plain - (plain * unit).sum(-1, keepdim=True) * unit, rtol=1e-5, atol=1e-6)


def test_partial_rope_rotates_only_the_first_dims():
    attn = M.CausalSelfAttention(make_args(rope_dims=8))  # head_dim 16
    assert attn.rotary.inv_freq.shape == (4,)
    torch.testing.assert_close(attn.rotary.inv_freq, 10000.0 ** (-torch.arange(0, 8, 2) / 8))
    cos, sin = attn.rotary(10, torch.device("cpu"), torch.float32)
    x = torch.randn(2, 10, 4, 16)
    out = M.apply_rotary_emb(x, cos, sin)
    torch.testing.assert_close(out[..., 8:], x[..., 8:], rtol=0, atol=0)
    torch.testing.assert_close(out[..., :8], M.apply_rotary_emb(x[..., :8], cos, sin))
    assert not torch.allclose(out[:, 1:, :, :8], x[:, 1:, :, :8])
    full = M.Rotary(16)(10, torch.device("cpu"), torch.float32)
    assert not torch.allclose(M.apply_rotary_emb(x, *full)[..., 8:], x[..., 8:])  # full RoPE does rotate them
    for bad in (7, 18):
        with pytest.raises(ValueError, match="ROPE_DIMS"):
            M.CausalSelfAttention(make_args(rope_dims=bad))


def test_value_embedding_is_added_to_the_values():
    torch.manual_seed(0)
    attn = M.CausalSelfAttention(make_args())
    nn.init.normal_(attn.proj.weight)
    x, ve = torch.randn(2, 7, 64), torch.randn(2, 7, 32)
    with_ve = attn(x, ve)

    class AddVE(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, h):
            return self.inner(h) + ve

    attn.c_v = AddVE(attn.c_v)
    torch.testing.assert_close(attn(x), with_ve)


def test_value_embedding_reaches_only_the_listed_layers():
    model = noisy_model(ve_dim=8, ve_layers="1,3")
    assert model.ve_layers == [1, 3] and len(model.ve_layer_scales) == 2
    calls = [capture_inputs(b.attn) for b in model.blocks]
    ids = torch.randint(0, 96, (2, 9))
    model(ids)
    shared = model.ve_shared(ids)
    assert calls[0][0][1] is None and calls[2][0][1] is None
    for layer, scale in zip((1, 3), model.ve_layer_scales):
        torch.testing.assert_close(calls[layer][0][1], shared * scale)
    h = model.ve_shared.embed(ids) @ model.ve_shared.proj.weight.T
    torch.testing.assert_close(shared, h * model.ve_shared.scale)
    fresh = M.GPT(make_args(ve_dim=8, ve_layers="1,3"))
    assert fresh.ve_shared.scale.item() == pytest.approx(0.1) and not fresh.ve_shared.proj.weight.any()
    assert abs(fresh.ve_shared.embed.weight.std().item() - 0.01) < 0.002
    assert torch.all(fresh.ve_layer_scales[0] == 1)
    for bad in ("1,4", "-1", "2,2"):  # out of range, negative (would index from the end), repeated
        with pytest.raises(ValueError, match="VE_LAYERS"):
            M.GPT(make_args(ve_dim=8, ve_layers=bad))


# ---------------------------------------------------------------- block inputs: LN scale, U-Net

def test_ln_scale_damps_the_normed_inputs_of_deeper_blocks():
    model = noisy_model(ln_scale=True)
    assert [b.ln_scale for b in model.blocks] == pytest.approx([1.0, 2 ** -0.5, 3 ** -0.5, 0.5])
    block = model.blocks[3]
    attn_in, mlp_in, block_in = capture_inputs(block.attn), capture_inputs(block.mlp), capture_inputs(block)
    model(torch.randint(0, 96, (2, 6)))
    x, x0 = block_in[0][:2]
    mixed = block.resid_mix[0] * x + block.resid_mix[1] * x0
    torch.testing.assert_close(attn_in[0][0], F.rms_norm(mixed, (64,)) * 0.5)
    after_attn = mixed + block.attn_scale * block.attn(F.rms_norm(mixed, (64,)) * 0.5)
    torch.testing.assert_close(mlp_in[-1][0], F.rms_norm(after_attn, (64,)) * 0.5)


def test_without_unet_skips_the_blocks_run_in_sequence():
    model = noisy_model(unet_skips=False)
    assert model.skip_weights.shape == (0, 64) and not model.skip_weights.requires_grad
    ids = torch.randint(0, 96, (2, 8))
    x = x0 = F.rms_norm(model.tok_emb(ids), (64,))
    for block in model.blocks:
        x = block(x, x0)
    torch.testing.assert_close(model.hidden(ids), model.final_norm(x))
    O.build_optimizers(make_args(unet_skips=False), model)  # the empty skip_weights needs no optimizer


# ---------------------------------------------------------------- input side: SmearGate, BigramHash

def test_smear_gate_mixes_each_token_with_the_previous_one():
    assert torch.all(M.GPT(make_args(smear_gate=True)).smear.gate == 0)  # sigmoid(0) = 0.5 at init
    model = noisy_model(smear_gate=True)
    ids = torch.randint(0, 96, (2, 7))
    seen = capture_inputs(model.blocks[0])
    model(ids)
    e = F.rms_norm(model.tok_emb(ids), (64,))  # the gate acts after the embedding norm
    g = torch.sigmoid(model.smear.gate)
    expected = (1 - g) * e
    expected[:, 1:] += g * e[:, :-1]
    torch.testing.assert_close(seen[0][1], expected)  # x0 of the first block


def test_bigram_hash_indices_range_previous_token_and_position_zero():
    torch.manual_seed(0)
    ids = torch.randint(0, 1024, (4, 50))
    b = M.bigram_hash(ids, 2048)
    assert b.dtype == torch.int64 and b.shape == ids.shape
    assert torch.all(b[:, 0] == 2047)  # position 0 has no previous token: the reserved last bucket
    assert b[:, 1:].min() >= 0 and b[:, 1:].max() <= 2046  # pairs never land in the reserved bucket
    assert len(b[:, 1:].unique()) > 150  # spread over the table
    prev, cur = ids[0, 9].item(), ids[0, 10].item()
    assert b[0, 10].item() == ((36313 * cur) ^ (27191 * prev)) % 2047  # the records' hash
    changed = ids.clone()
    changed[0, 9] = (prev + 1) % 1024
    diff = (M.bigram_hash(changed, 2048) != b).nonzero().tolist()
    assert diff == [[0, 9], [0, 10]]  # the changed token's own pair and the next one, nothing earlier
    # the bucket depends on the order of the pair, not just the two tokens
    assert M.bigram_hash(torch.tensor([[3, 5]]), 2048)[0, 1] != M.bigram_hash(torch.tensor([[5, 3]]), 2048)[0, 1]
    assert M.bigram_hash(torch.tensor([[7]]), 64).tolist() == [[63]]  # a one-token window


def test_bigram_embedding_joins_the_token_embedding_before_the_norm():
    fresh = M.GPT(make_args(bigram_buckets=64, bigram_dim=16))
    assert not fresh.bigram.embed.weight.any() and not fresh.bigram.proj.weight.any()
    assert fresh.bigram.scale.item() == pytest.approx(0.05)
    model = noisy_model(bigram_buckets=64, bigram_dim=16)
    ids = torch.randint(0, 96, (2, 7))
    seen = capture_inputs(model.blocks[0])
    model(ids)
    pair = model.bigram.embed(M.bigram_hash(ids, 64)) @ model.bigram.proj.weight.T * model.bigram.scale
    torch.testing.assert_close(seen[0][1], F.rms_norm(model.tok_emb(ids) + pair, (64,)))


# ---------------------------------------------------------------- OrthoInit

def test_ortho_init_matrices_and_projection_gains():
    torch.manual_seed(0)
    args = make_args(model_dim=128, ortho_init=True, bigram_buckets=64, bigram_dim=64, ve_dim=96, ve_layers="3",
                     activation="swiglu", tie_embeddings=False)  # head_dim 32, kv 64, swiglu hidden 192
    model = M.GPT(args)

    def singular_values(w):
        return torch.linalg.svdvals(w.detach())

    for name in ("attn.c_q", "attn.c_k", "attn.c_v", "mlp.gate", "mlp.up"):
        s = singular_values(model.blocks[2].get_submodule(name).weight)
        torch.testing.assert_close(s, torch.ones_like(s), rtol=0, atol=1e-5)
    for proj in (model.bigram.proj, model.ve_shared.proj):  # the records scale these by 1/sqrt(2L)
        s = singular_values(proj.weight)
        torch.testing.assert_close(s, torch.full_like(s, 8 ** -0.5), rtol=0, atol=1e-5)
    for block in model.blocks:  # zero-init projections stay zero
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
    assert not model.lm_head.weight.any()
    small = M.GPT(make_args(ortho_init=True))  # kv width 32 < 64: left at the default init
    s = singular_values(small.blocks[0].attn.c_k.weight)
    assert (s - 1).abs().max() > 0.1
    plain = M.GPT(make_args(bigram_buckets=64, bigram_dim=16, ve_dim=8, ve_layers="3"))
    s = singular_values(plain.blocks[0].attn.c_q.weight)
    assert (s - 1).abs().max() > 0.1 and not plain.bigram.proj.weight.any() and not plain.ve_shared.proj.weight.any()


# ---------------------------------------------------------------- optimizers

def test_muon_weight_decay_is_decoupled_on_the_scheduled_lr():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(16, 32))
    start = p.detach().clone()
    opt = O.Muon([p], lr=0.1, momentum=0.0, backend_steps=5)
    opt.param_groups[0]["weight_decay"] = 0.5
    p.grad = torch.randn(16, 32)
    opt.step()
    expected = start * (1 - 0.1 * 0.5) - 0.1 * O.zeropower_via_newtonschulz5(p.grad, steps=5)
    torch.testing.assert_close(p.detach(), expected)
    args = make_args(muon_weight_decay=0.04)
    _, muon = O.build_optimizers(args, M.GPT(args))
    assert muon.param_groups[0]["weight_decay"] == 0.04


def test_adam_weight_decay_on_token_and_scalar_groups_not_the_head():
    args = make_args(adam_weight_decay=0.1, tie_embeddings=False, tied_embed_init_std=0.005)
    model = M.GPT(args)
    optimizers, _ = O.build_optimizers(args, model)
    tok, head, _, scalar = optimizers
    assert type(tok) is type(scalar) is torch.optim.AdamW and type(head) is torch.optim.Adam
    assert tok.param_groups[0]["weight_decay"] == scalar.param_groups[0]["weight_decay"] == 0.1
    assert head.param_groups[0]["weight_decay"] == 0 and tok.param_groups[0]["base_lr"] == 0.6
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # a zero gradient leaves only the decay
    tok.step(), head.step(), scalar.step()
    torch.testing.assert_close(model.tok_emb.weight, before["tok_emb.weight"] * (1 - 0.6 * 0.1))
    torch.testing.assert_close(model.blocks[0].attn_scale, before["blocks.0.attn_scale"] * (1 - 0.04 * 0.1))
    torch.testing.assert_close(model.lm_head.weight, before["lm_head.weight"], rtol=0, atol=0)


def test_new_parameters_land_where_the_records_put_them():
    args = make_args(**ALL_ON)
    model = M.GPT(args)
    optimizers, muon = O.build_optimizers(args, model)
    tok, _, scalar = optimizers
    owner = {}
    for kind, opt in (("tok", tok), ("muon", muon), ("scalar", scalar)):
        assert len(opt.param_groups) == 1
        for p in opt.param_groups[0]["params"]:
            assert id(p) not in owner
            owner[id(p)] = kind
    kinds = {n: owner[id(p)] for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, k in kinds.items() if k == "tok"} == {"tok_emb.weight", "bigram.embed.weight",
                                                          "ve_shared.embed.weight"}
    for name in ("bigram.proj.weight", "ve_shared.proj.weight", "blocks.1.mlp.gate.weight", "blocks.1.mlp.up.weight"):
        assert kinds[name] == "muon", name
    for name in ("smear.gate", "bigram.scale", "ve_shared.scale", "ve_layer_scales.0", "ve_layer_scales.1"):
        assert kinds[name] == "scalar", name
    model.extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="extra"):
        O.build_optimizers(args, model)


# ---------------------------------------------------------------- everything at once

def test_all_techniques_causal_per_token_nll():
    model = noisy_model(**ALL_ON)
    x, y = torch.randint(0, 96, (2, 20)), torch.randint(0, 96, (2, 20))
    base = model(x, y, reduction="none")
    for t in (0, 1, 12, 19):
        x2 = x.clone()
        x2[:, t] = (x[:, t] + 1) % 96
        changed = model(x2, y, reduction="none")
        torch.testing.assert_close(changed[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert (changed[:, t:] - base[:, t:]).abs().max() > 1e-4


def test_all_techniques_backward_reaches_every_parameter():
    model = noisy_model(**ALL_ON, tie_embeddings=False)
    model(torch.randint(0, 96, (2, 12)), torch.randint(0, 96, (2, 12))).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and not (p.grad is not None and p.grad.any())]
    assert missing == []


@pytest.mark.parametrize("activation", ["swiglu", "leaky_relu2"])
def test_all_techniques_loss_decreases_with_the_real_optimizers(activation):
    args = make_args(**(ALL_ON | dict(activation=activation)), iterations=25, warmdown_iters=10,
                     max_wallclock_seconds=0.0)
    torch.manual_seed(0)
    model = M.GPT(args)
    optimizers, muon = O.build_optimizers(args, model)
    x = torch.randint(0, 96, (4, 32))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for step in range(25):
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * O.lr_multiplier(args, step, 0.0)
        muon.param_groups[0]["momentum"] = O.muon_momentum_at(args, step)
        loss = model(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(96), abs=0.1)  # zero-init residual branches
    assert losses[-1] < 0.3 * losses[0], losses


# ---------------------------------------------------------------- rendering

def _render(tmp_path: Path, model: dict, optimizer: dict) -> str:
    recipe = load_baseline_recipe()
    recipe["model"].update(model)
    recipe["train"]["optimizer"].update(optimizer)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return render_script(load_recipe(path))


def test_rendered_scripts_hold_a_technique_only_when_used(tmp_path):
    import pyflakes.api
    import pyflakes.reporter

    model = dict(num_layers=11, mlp_mult=3, activation="swiglu", xsa_last_n=4, rope_dims=16, ln_scale=True,
                 smear_gate=True, bigram_buckets=2048, bigram_dim=128, ve_dim=128, ve_layers="9,10",
                 unet_skips=False, ortho_init=True)
    script = _render(tmp_path, model, dict(muon_weight_decay=0.04, adam_weight_decay=0.04))
    baseline = _render(tmp_path, {}, {})
    markers = ("XSA_LAST_N", "ROPE_DIMS", "LN_SCALE", "SMEAR_GATE", "BIGRAM_VOCAB_SIZE", "VE_LAYERS", "UNET_SKIPS",
               "ORTHO_INIT", "MUON_WD", "ADAM_WD", "def bigram_hash", "class ScaledEmbedding", "F.silu",
               "orthogonal_", "AdamW", "use_xsa", "self.ln_scale", "self.smear")
    for marker in markers:
        assert marker in script and marker not in baseline, marker
    assert script.count("\n") <= 1500
    for text in (script, baseline):
        warnings = []

        class Collect(pyflakes.reporter.Reporter):
            def __init__(self):
                super().__init__(None, None)

            def flake(self, message):
                warnings.append(str(message))

        pyflakes.api.check(text, "train_gpt.py", Collect())
        assert warnings == []


def test_untrained_params_stay_in_the_model_but_no_optimizer_steps_them():
    """Seed 003's SmearGate: a parameter of the model (and its state dict) that no optimizer owns."""
    args = make_args(smear_gate=True, untrained_params="smear.gate")
    model = M.GPT(args)
    optimizers, _ = O.build_optimizers(args, model)
    owned = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    assert id(model.smear.gate) not in owned and "smear.gate" in model.state_dict()
    assert owned == {id(p) for n, p in model.named_parameters() if n != "smear.gate"}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = model.smear.gate.detach().clone()
    for opt in optimizers:
        opt.step()
    assert torch.equal(model.smear.gate, before)
    with pytest.raises(ValueError, match="UNTRAINED_PARAMS names no parameter of the model: \\['smear.gat'\\]"):
        O.build_optimizers(make_args(smear_gate=True, untrained_params="smear.gat"), model)


def rope_for(train_len: int, yarn: bool, fp32_positions: bool) -> M.Rotary:
    rotary = M.Rotary(16, base=10000.0).bfloat16()  # bf16 buffer, as after model.bfloat16()
    rotary.train_seq_len, rotary.yarn, rotary.fp32_positions = train_len, yarn, fp32_positions
    return rotary


def test_rope_yarn_rescales_the_base_with_fp32_positions_past_its_length():
    """One formula for the seeds (000/002) and the April records: tables built for ROPE_TRAIN_SEQ_LEN; longer
    sequences get base * (T/len)^(d/(d-2)) recomputed in fp32. Up to the length the seeds keep the buffer's
    dtype (bf16 positions on CUDA), the April records use fp32 positions (ROPE_FP32_POSITIONS)."""
    cpu = torch.device("cpu")
    seeds, april, plain = rope_for(64, True, False), rope_for(64, True, True), M.Rotary(16, base=10000.0).bfloat16()
    for T in (32, 64):  # up to the length: the seeds' tables are the plain ones
        assert all(torch.equal(a, b) for a, b in zip(seeds(T, cpu, torch.float32), plain(T, cpu, torch.float32)))
        fp32 = torch.outer(torch.arange(T, dtype=torch.float32), april.inv_freq.float())
        assert torch.equal(april(T, cpu, torch.float32)[0][0, :, 0], fp32.cos())
    assert not torch.equal(april(64, cpu, torch.float32)[0], plain(64, cpu, torch.float32)[0])
    base = 10000.0 * (256 / 64) ** (16 / 14)
    inv = 1.0 / (base ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
    freqs = torch.outer(torch.arange(256, dtype=torch.float32), inv)
    for rotary in (seeds, april):
        cos, sin = rotary(256, cpu, torch.float32)
        assert torch.equal(cos[0, :, 0], freqs.cos()) and torch.equal(sin[0, :, 0], freqs.sin())
    assert not torch.equal(rope_for(64, False, False)(256, cpu, torch.float32)[0], seeds(256, cpu, torch.float32)[0])


def test_a_zero_table_draws_nothing_from_the_init_rng():
    """As the records: BigramHash's table is zeros_(), so the layers built after it get the same draws."""
    torch.manual_seed(3)
    M.ScaledEmbedding(64, 16, 32, 0.0, 0.05)
    after_zero = torch.randn(4)
    torch.manual_seed(3)
    torch.nn.Embedding(64, 16)  # the table's own construction draws, as in the records
    torch.nn.Linear(16, 32, bias=False)  # the projection's kaiming init
    assert torch.equal(after_zero, torch.randn(4))
