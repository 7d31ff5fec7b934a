"""Muon, Newton-Schulz, the optimizer split and the LR / momentum schedules of the baseline."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from packager.hparams import load_baseline_recipe, resolve
from packager.runtime import model as M
from packager.runtime import optim as O

from tests.model_helpers import model_optim_args, one_thread  # noqa: F401 (autouse fixture)





def make_test_args(**overrides) -> SimpleNamespace:
    """Defaults of the model and optimizer HPs, plus the train values the schedules read."""
    return model_optim_args(**overrides)


def tiny_args(**overrides) -> SimpleNamespace:
    base = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2)
    return make_test_args(**{**base, **overrides})


def test_hparams_declared_as_upstream_defaults():
    hps = {hp.name: hp for hp in O.HPARAMS if hp.feature is None}  # the weight decays: test_model_techniques
    expected = dict(embed_lr=0.6, head_lr=0.008, tied_embed_lr=0.05, matrix_lr=0.04, scalar_lr=0.04,
                    muon_momentum=0.95, muon_backend_steps=5, muon_momentum_warmup_start=0.85,
                    muon_momentum_warmup_steps=500, beta1=0.9, beta2=0.95, adam_eps=1e-8)
    assert {k: hps[k].default for k in expected} == expected and set(hps) == set(expected)
    for name, hp in hps.items():
        assert hp.env == name.upper() and hp.path == f"train.optimizer.{name}" and hp.feature is None
        assert type(hp.default) is hp.kind
    assert resolve(load_baseline_recipe(), hps.values()) == expected


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("shape", [(96, 48), (48, 96), (128, 32)])
def test_newton_schulz_singular_values_near_one(shape, dtype):
    # Rectangular: a random square matrix has near-zero singular values that 5 steps cannot lift.
    torch.manual_seed(0)
    G = torch.randn(*shape)
    X = O.zeropower_via_newtonschulz5(G, steps=5, dtype=dtype)
    assert X.shape == shape and X.dtype == (dtype or torch.float32)  # fp32 on CPU, bf16 on CUDA
    s = torch.linalg.svdvals(X.float())
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    polar = U @ Vh  # what the iteration approximates
    cos = (X.float() * polar).sum() / (X.float().norm() * polar.norm())
    assert cos > 0.97
    assert not torch.allclose(O.zeropower_via_newtonschulz5(G, steps=1).float(), X.float(), atol=1e-2)


def test_newton_schulz_leaves_a_bf16_input_untouched():
    G = torch.randn(32, 16, dtype=torch.bfloat16)
    before = G.clone()
    O.zeropower_via_newtonschulz5(G, steps=5, dtype=torch.bfloat16)
    assert torch.equal(G, before)


@pytest.mark.parametrize("shape, scale", [((64, 16), 2.0), ((16, 64), 1.0), ((32, 32), 1.0)])
def test_muon_update_is_scaled_orthogonalised_gradient(shape, scale):
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(*shape))
    start = p.detach().clone()
    opt = O.Muon([p], lr=0.1, momentum=0.0, backend_steps=5)
    p.grad = torch.randn(*shape)
    opt.step()
    expected = 0.1 * scale * O.zeropower_via_newtonschulz5(p.grad, steps=5)
    torch.testing.assert_close(start - p.detach(), expected)


def test_muon_nesterov_momentum():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(16, 24))
    opt = O.Muon([p], lr=1.0, momentum=0.5, backend_steps=5)
    g1, g2 = torch.randn(16, 24), torch.randn(16, 24)
    p.grad = g1
    opt.step()
    before = p.detach().clone()
    p.grad = g2
    opt.step()
    buf = 0.5 * g1 + g2
    expected = O.zeropower_via_newtonschulz5(g2 + 0.5 * buf, steps=5)
    torch.testing.assert_close(before - p.detach(), expected)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf)


@pytest.mark.parametrize("tie", [True, False])
def test_optimizer_split_membership(tie):
    args = tiny_args(tie_embeddings=tie)
    model = M.GPT(args)
    optimizers, muon = O.build_optimizers(args, model)
    assert isinstance(muon, O.Muon) and muon in optimizers
    owner = {}
    for i, opt in enumerate(optimizers):
        assert len(opt.param_groups) == 1
        for p in opt.param_groups[0]["params"]:
            assert id(p) not in owner
            owner[id(p)] = i
    names = {n: owner[id(p)] for n, p in model.named_parameters()}  # KeyError: a parameter left out
    expected_kinds = ["tok", "head", "muon", "scalar"] if not tie else ["tok", "muon", "scalar"]
    kind = {n: expected_kinds[i] for n, i in names.items()}
    for n, p in model.named_parameters():
        if n == "tok_emb.weight":
            assert kind[n] == "tok"
        elif n == "lm_head.weight":
            assert kind[n] == "head"
        elif n.startswith("blocks.") and p.ndim == 2 and "resid_mix" not in n:
            assert kind[n] == "muon", n
        else:
            assert kind[n] == "scalar", n
    assert kind["blocks.0.resid_mix"] == kind["skip_weights"] == kind["blocks.2.attn.q_gain"] == "scalar"
    lrs = {k: optimizers[i].param_groups[0] for i, k in enumerate(expected_kinds)}
    assert lrs["tok"]["lr"] == lrs["tok"]["base_lr"] == (0.05 if tie else 0.6)
    assert lrs["muon"]["lr"] == lrs["muon"]["base_lr"] == 0.04 and lrs["muon"]["momentum"] == 0.95
    assert lrs["scalar"]["base_lr"] == 0.04 and (tie or lrs["head"]["base_lr"] == 0.008)
    for k in expected_kinds:
        if k != "muon":
            group = lrs[k]
            assert group["betas"] == (0.9, 0.95) and group["eps"] == 1e-8 and group["fused"]  # as the records
    assert muon.zeropower is O.zeropower_via_newtonschulz5  # compiled only on CUDA


def test_optimizer_split_refuses_an_unassigned_parameter():
    args = tiny_args()
    model = M.GPT(args)
    model.extra = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="extra"):
        O.build_optimizers(args, model)


def test_lr_multiplier_iteration_schedule():
    args = make_test_args(iterations=100, warmdown_iters=20, max_wallclock_seconds=0.0)
    values = {s: O.lr_multiplier(args, s, elapsed_ms=1e9) for s in (0, 79, 80, 90, 99, 100)}
    assert values == pytest.approx({0: 1.0, 79: 1.0, 80: 1.0, 90: 0.5, 99: 0.05, 100: 1.0})
    assert O.lr_multiplier(make_test_args(iterations=10, warmdown_iters=30, max_wallclock_seconds=0.0), 0, 0.0) == \
        pytest.approx(10 / 30)  # warmdown longer than the run starts below 1
    assert O.lr_multiplier(make_test_args(warmdown_iters=0), 19999, 599_999.0) == 1.0


def test_lr_multiplier_wallclock_schedule():
    args = make_test_args(iterations=1000, warmdown_iters=20, max_wallclock_seconds=10.0)
    # 50 ms/step: the warmdown covers the last 20 * 50 = 1000 ms before the 10 s cap
    assert O.lr_multiplier(args, 100, 5000.0) == 1.0
    assert O.lr_multiplier(args, 180, 9000.0) == pytest.approx(1.0)
    assert O.lr_multiplier(args, 190, 9500.0) == pytest.approx(0.5)
    assert O.lr_multiplier(args, 199, 9950.0) == pytest.approx(0.05)
    assert O.lr_multiplier(args, 201, 10050.0) == 0.0
    assert O.lr_multiplier(args, 0, 0.0) == 1.0  # step 0: elapsed 0 means no measured step time yet
    # the step budget plays no part once a cap is set
    assert O.lr_multiplier(args, 990, 100.0) == 1.0


def test_muon_momentum_warmup():
    args = make_test_args()
    got = [O.muon_momentum_at(args, s) for s in (0, 250, 500, 5000)]
    assert got == pytest.approx([0.85, 0.90, 0.95, 0.95])
    assert O.muon_momentum_at(make_test_args(muon_momentum_warmup_steps=0), 0) == 0.95


def test_loss_decreases_with_the_real_optimizers():
    args = tiny_args(iterations=30, warmdown_iters=10, max_wallclock_seconds=0.0)
    torch.manual_seed(0)
    model = M.GPT(args)
    optimizers, muon = O.build_optimizers(args, model)
    x = torch.randint(0, 64, (4, 32))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for step in range(30):
        scale = O.lr_multiplier(args, step, 0.0)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale
        for group in muon.param_groups:
            group["momentum"] = O.muon_momentum_at(args, step)
        loss = model(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(4.16, abs=0.1)  # ~ln(64) from the zero-init residual branches
    assert losses[-1] < 0.2 * losses[0], losses


SHAPES = [(24, 8), (8, 24), (16, 16), (32, 8), (12, 12)]


def _muon_run() -> list[torch.Tensor]:
    """Two Muon steps on fixed parameters and gradients; same on every rank."""
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(*s)) for s in SHAPES]
    opt = O.Muon(params, lr=0.05, momentum=0.9, backend_steps=5)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return [p.detach().clone() for p in params]


def _muon_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(_muon_run(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_muon_two_ranks_match_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "params")
    mp.spawn(_muon_worker, args=(2, port, out), nprocs=2, join=True)
    single = _muon_run()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        for a, b in zip(got, single):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
