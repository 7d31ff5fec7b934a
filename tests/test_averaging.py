"""Weight averaging: EMA closed forms, SWA snapshot steps and means, tight SWA, apply_to."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from packager.hparams import resolve
from packager.render import recipe_features
from packager.runtime import averaging as A

torch.set_num_threads(1)


def make_args(**overrides):
    values = resolve(None, A.HPARAMS)
    for key, value in overrides.items():
        assert key in values, key
        values[key] = value
    return SimpleNamespace(**values)


class Tiny(nn.Module):
    """Two parameters (one bf16) and a persistent buffer."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 4))
        self.b = nn.Parameter(torch.randn(4).bfloat16())
        self.register_buffer("stat", torch.arange(4.0))


def set_params(model, value_fn):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(value_fn(p))


def run_sequence(averager, model, values, scales=None):
    """Step t (1-based) sets every parameter to values[t-1] then calls after_step(t)."""
    for t, v in enumerate(values, start=1):
        with torch.no_grad():
            model.w.copy_(v)
        averager.after_step(model, t, 1.0 if scales is None else scales[t - 1])


@pytest.mark.parametrize("every", [1, 3])
def test_ema_matches_closed_form(every):
    torch.manual_seed(0)
    model = Tiny()
    p0 = model.w.detach().clone()
    decay, n = 0.9, 12
    values = [torch.randn(3, 4) for _ in range(n)]
    ema = A.build_averager(make_args(ema_decay=decay, ema_every=every), model)
    assert isinstance(ema, A.EmaAverager)
    run_sequence(ema, model, values)
    # Updates happen at steps every, 2*every, ... with decay**every per update.
    steps = [t for t in range(1, n + 1) if t % every == 0]
    d = decay ** every
    m = len(steps)
    expected = d ** m * p0 + sum((1 - d) * d ** (m - j) * values[t - 1] for j, t in enumerate(steps, start=1))
    assert ema.updates == m
    torch.testing.assert_close(ema.shadow["w"], expected, rtol=1e-5, atol=1e-6)


def test_ema_constant_sequence_and_every_k_horizon():
    """A constant parameter c from p0: shadow = d^n p0 + (1 - d^n) c, for every=1 and every=k alike
    when n is a multiple of k (decay^k per update keeps the horizon in steps)."""
    for every in (1, 5):
        model = Tiny()
        set_params(model, lambda p: torch.full_like(p, 2.0))
        ema = A.EmaAverager(make_args(ema_decay=0.99, ema_every=every), model)
        set_params(model, lambda p: torch.full_like(p, -1.0))
        for t in range(1, 21):
            ema.after_step(model, t, 1.0)
        expected = 0.99 ** 20 * 2.0 + (1 - 0.99 ** 20) * -1.0
        torch.testing.assert_close(ema.shadow["w"], torch.full((3, 4), expected), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ema.shadow["b"], torch.full((4,), expected), rtol=1e-5, atol=1e-6)
        assert ema.shadow["b"].dtype == torch.float32


def test_swa_snapshot_steps_and_mean():
    model = Tiny()
    n = 40
    scales = [1.0 if t <= 10 else (n - t) / 30 for t in range(1, n + 1)]  # warmdown over the last 30
    values = [torch.full((3, 4), float(t)) for t in range(1, n + 1)]
    swa = A.build_averager(make_args(swa_every=5, swa_start_frac=0.5), model)
    assert isinstance(swa, A.SwaAverager)
    run_sequence(swa, model, values, scales)
    taken = [t for t in range(1, n + 1) if t % 5 == 0 and scales[t - 1] < 0.5]
    assert taken == [30, 35, 40]
    assert swa.count == 3 and swa.first == 30
    desc = swa.apply_to(model)
    torch.testing.assert_close(model.w.detach(), torch.full((3, 4), sum(taken) / len(taken)))
    assert "snapshots:3" in desc


def test_tight_swa_only_below_threshold():
    model = Tiny()
    swa = A.SwaAverager(make_args(swa_every=1, swa_start_frac=0.2), model)
    for t, scale in enumerate([1.0, 0.5, 0.25, 0.2, 0.2], start=1):
        swa.after_step(model, t, scale)
    assert swa.count == 0  # strictly below the threshold, as in the records
    swa.after_step(model, 6, 0.19)
    assert swa.count == 1 and swa.first == 6


def test_swa_single_snapshot_is_not_applied():
    model = Tiny()
    before = model.w.detach().clone()
    swa = A.SwaAverager(make_args(swa_every=2, swa_start_frac=0.4), model)
    swa.after_step(model, 2, 0.1)
    with torch.no_grad():
        model.w.add_(1.0)
    assert "not applied" in swa.apply_to(model)
    torch.testing.assert_close(model.w.detach(), before + 1.0)


def test_apply_to_copies_params_and_leaves_buffers():
    torch.manual_seed(1)
    model = Tiny()
    ema = A.EmaAverager(make_args(ema_decay=0.5), model)
    shadow = {k: v.clone() for k, v in ema.shadow.items()}
    set_params(model, lambda p: torch.zeros_like(p))
    with torch.no_grad():
        model.stat.fill_(7.0)
    desc = ema.apply_to(model)
    assert model.w.detach().equal(shadow["w"])
    assert model.b.dtype == torch.bfloat16 and model.b.detach().equal(shadow["b"].bfloat16())
    assert model.stat.equal(torch.full((4,), 7.0))
    assert desc == "ema decay:0.5 every:1 updates:0"


def test_build_averager_off_precedence_and_errors():
    model = Tiny()
    assert A.build_averager(make_args(), model) is None
    both = A.build_averager(make_args(ema_decay=0.997, swa_every=50), model)
    assert isinstance(both, A.EmaAverager)
    with pytest.raises(ValueError, match="EMA_DECAY"):
        A.build_averager(make_args(ema_decay=1.0), model)


def test_feature_rules():
    from packager.hparams import all_hparams

    def features(**values):
        base = resolve(None, all_hparams())
        base.update(values)
        return recipe_features(base) & {"ema", "swa"}

    assert features() == set()
    assert features(ema_decay=0.997) == {"ema"}
    assert features(swa_every=50, swa_start_frac=0.2) == {"swa"}
    assert features(ema_decay=0.997, swa_every=50) == {"ema"}


def test_swa_sums_in_the_parameters_dtype_as_seeds_000_and_001():
    """Their SWA state is a clone of the state dict, so bf16 embeddings are summed in bf16."""
    model = nn.Linear(64, 64, bias=False).bfloat16()
    g = torch.Generator().manual_seed(1)
    snaps = [torch.randn(64, 64, generator=g).bfloat16() for _ in range(23)]
    averages = {}
    for dtype in ("fp32", "param"):
        swa = A.SwaAverager(make_args(swa_every=1, swa_start_frac=1.0, swa_dtype=dtype), model)
        for step, w in enumerate(snaps, 1):
            model.weight.data.copy_(w)
            swa.after_step(model, step, 0.5)
        swa.apply_to(model)
        averages[dtype] = model.weight.detach().clone()
    acc = snaps[0].clone()
    for w in snaps[1:]:
        acc += w
    assert torch.equal(averages["param"], (acc / 23).bfloat16())
    assert torch.equal(averages["fp32"], (sum(w.float() for w in snaps) / 23).bfloat16())
    assert not torch.equal(averages["param"], averages["fp32"])
