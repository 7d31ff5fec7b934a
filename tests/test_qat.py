"""QAT: the fake quantizer matches the export, passes gradients straight through, is switched
by a tensor, lands on the right layers of a real GPT, and still lets a model learn."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from packager.hparams import make_args
from packager.runtime import quant as Q
from packager.runtime.qat import (
    QAT_MIN_NUMEL, configure_qat, fake_quantize_ste, qat_active, set_qat,
)

torch.set_num_threads(1)


def weight(rows=16, cols=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[0] = 0.0  # an all-zero row (zero-initialised projections)
    w[1, 3] = 0.9  # an outlier that sets its row's scale
    return w


@pytest.mark.parametrize("bits", [5, 6])
def test_levels_per_row(bits):
    w = weight()
    fq = fake_quantize_ste(w, bits)
    qmax = 2 ** (bits - 1) - 1
    for row, orig in zip(fq, w):
        assert row.unique().numel() <= 2 ** bits - 1
        scale = (orig.abs().max() / qmax).half().clamp_min(torch.finfo(torch.float16).tiny).float()
        steps = row / scale
        assert torch.equal(steps, steps.round()) and steps.abs().max() <= qmax
    assert torch.equal(fq[0], torch.zeros(96))


@pytest.mark.parametrize("bits", [5, 6])
def test_matches_export_rows(bits):
    w = weight(seed=bits)
    q, s = Q.quantize_rows_clip_search(w, bits, (1.0,))
    assert torch.equal(fake_quantize_ste(w, bits), q.float() * s.float()[:, None])


def test_matches_full_export_roundtrip():
    """int5 MLP / int6 attention through export_model/import_model (the seed 001 layout)."""
    torch.manual_seed(0)
    sd = {"blocks.0.mlp.fc.weight": torch.randn(512, 256) * 0.03,
          "blocks.0.attn.c_q.weight": torch.randn(384, 384) * 0.03}
    args = SimpleNamespace(**{**vars(make_args()), "quant_scheme": "mixed", "bits_mlp": 5, "bits_attn": 6})
    blob, _ = Q.export_model(args, sd)
    back = Q.import_model(args, blob)
    torch.testing.assert_close(fake_quantize_ste(sd["blocks.0.mlp.fc.weight"], 5), back["blocks.0.mlp.fc.weight"],
                               rtol=2 ** -11, atol=0)
    torch.testing.assert_close(fake_quantize_ste(sd["blocks.0.attn.c_q.weight"], 6), back["blocks.0.attn.c_q.weight"],
                               rtol=2 ** -11, atol=0)


def test_straight_through_gradient_and_gate():
    w = weight().requires_grad_(True)
    g = torch.randn_like(w)
    (fake_quantize_ste(w, 6) * g).sum().backward()
    assert torch.equal(w.grad, g)
    w.grad = None
    off, on = torch.zeros(()), torch.ones(())
    out_off = fake_quantize_ste(w, 6, off)
    assert torch.equal(out_off, w.detach())
    (out_off * g).sum().backward()
    assert torch.equal(w.grad, g)
    assert torch.equal(fake_quantize_ste(w, 6, on), fake_quantize_ste(w, 6))


def test_quantized_weights_are_fixed_points():
    """Export-dequantized weights pass through unchanged (an eval after reload is not altered)."""
    fq = fake_quantize_ste(weight(), 5)
    assert torch.equal(fake_quantize_ste(fq, 5), fq)


def qat_args(**overrides):
    base = dict(num_layers=2, model_dim=384, num_heads=4, num_kv_heads=2, vocab_size=128,
                quant_scheme="mixed", bits_mlp=5, bits_attn=6, qat_bits_mlp=5, qat_bits_attn=6)
    base.update(overrides)
    return make_args(None, **base)


def build_gpt(args, monkeypatch):
    from packager.runtime.model import GPT, CastedLinear

    # Until model.py declares it, the class attribute the model side adds is patched in.
    monkeypatch.setattr(CastedLinear, "qat_bits", getattr(CastedLinear, "qat_bits", 0), raising=False)
    torch.manual_seed(0)
    return GPT(args)


def test_configure_qat_on_real_gpt(monkeypatch):
    model = build_gpt(qat_args(), monkeypatch)
    assert configure_qat(qat_args(), model) == 2 * 6
    from packager.runtime.model import CastedLinear

    layers = {n: m for n, m in model.named_modules() if isinstance(m, CastedLinear)}
    assert sorted(layers) == sorted(f"blocks.{i}.{k}" for i in range(2) for k in (
        "attn.c_q", "attn.c_k", "attn.c_v", "attn.proj", "mlp.fc", "mlp.proj"))
    for name, module in layers.items():
        assert module.qat_bits == (5 if ".mlp." in name else 6), name
        assert module.qat_gate.item() == 0.0
    assert not any("qat_gate" in k for k in model.state_dict())  # never exported
    set_qat(model, True)
    assert all(m.qat_gate.item() == 1.0 for m in model.modules() if getattr(m, "qat_bits", 0))


def test_configure_qat_follows_export_classes(monkeypatch):
    # attn off, MLP on: only MLP layers; 64-wide matrices are kept float by the export: none.
    model = build_gpt(qat_args(qat_bits_attn=0), monkeypatch)
    assert configure_qat(qat_args(qat_bits_attn=0), model) == 2 * 2
    assert all(m.qat_bits == 0 for n, m in model.named_modules() if n.endswith(("attn.c_q", "attn.proj")))
    small = qat_args(model_dim=64)
    assert configure_qat(small, build_gpt(small, monkeypatch)) == 0
    assert QAT_MIN_NUMEL == Q.QUANT_KEEP_FLOAT_MAX_NUMEL
    for name in ("blocks.3.mlp.fc", "blocks.0.attn.c_k", "lm_head", "bigram.proj"):
        cls = Q.quant_class(name + ".weight")
        assert ((".mlp." in name + ".") == (cls == "mlp")) and ((".attn." in name + ".") == (cls == "attn"))


def test_configure_qat_refuses_a_width_the_export_does_not_store(monkeypatch):
    args = qat_args(bits_mlp=6)
    with pytest.raises(ValueError, match="differ from the export"):
        configure_qat(args, build_gpt(args, monkeypatch))
    args = qat_args(quant_scheme="int8")
    with pytest.raises(ValueError, match="differ from the export"):
        configure_qat(args, build_gpt(args, monkeypatch))


def test_qat_active_switch_points():
    capped = make_args(None, max_wallclock_seconds=600.0, iterations=20000, qat_start_frac=0.5,
                       late_qat_threshold=0.0)
    assert not qat_active(capped, 100, 299_999.0, 1.0)
    assert qat_active(capped, 100, 300_000.0, 1.0)
    late = make_args(None, max_wallclock_seconds=600.0, qat_start_frac=0.0, late_qat_threshold=0.15)
    assert not qat_active(late, 6000, 550_000.0, 0.15)  # strictly below, as in the records
    assert qat_active(late, 6001, 551_000.0, 0.1499)
    uncapped = make_args(None, max_wallclock_seconds=0.0, iterations=1000, qat_start_frac=0.8,
                         late_qat_threshold=0.0)
    assert not qat_active(uncapped, 799, 0.0, 1.0) and qat_active(uncapped, 800, 0.0, 1.0)
    assert qat_active(make_args(None, qat_start_frac=0.0, late_qat_threshold=0.0), 0, 0.0, 1.0)


class QatMLP(nn.Module):
    """A two-layer net whose matrices go through fake_quantize_ste behind a tensor switch."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(32, 64, bias=False), nn.Linear(64, 8, bias=False)
        self.register_buffer("gate", torch.ones(()))

    def forward(self, x):
        h = torch.relu(F.linear(x, fake_quantize_ste(self.fc.weight, 5, self.gate)))
        return F.linear(h, fake_quantize_ste(self.out.weight, 6, self.gate))


def test_tiny_model_learns_with_qat_on():
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    y = (x[:, :8] > 0).long().argmax(dim=1)
    model = QatMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    # The forward really used the quantized weights.
    with torch.no_grad():
        ref = F.linear(torch.relu(F.linear(x, fake_quantize_ste(model.fc.weight, 5))),
                       fake_quantize_ste(model.out.weight, 6))
        assert torch.equal(model(x), ref)
        model.gate.zero_()
        assert not torch.equal(model(x), ref)


def test_gpt_trains_with_qat_when_the_model_side_is_wired(monkeypatch):
    from packager.runtime.model import CastedLinear

    source = inspect.getsource(CastedLinear.forward)
    if "fake_quantize_ste" not in source:
        pytest.skip("CastedLinear.forward does not call fake_quantize_ste yet")
    assert "qat_gate" in source, "CastedLinear.forward must pass self.qat_gate, the switch set_qat flips"
    args = qat_args(num_layers=1)
    model = build_gpt(args, monkeypatch)
    assert configure_qat(args, model) == 6
    # The fake quantization sees the fp32 weight (the export's input), then the result is cast.
    layer = model.blocks[0].mlp.fc
    x = torch.randn(3, 384).bfloat16()
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
        set_qat(model, True)
        expected = F.linear(x, fake_quantize_ste(layer.weight.detach(), 5).bfloat16())
        assert torch.equal(layer(x), expected)
        set_qat(model, False)
        assert torch.equal(layer(x), F.linear(x, layer.weight.bfloat16()))
    torch.manual_seed(1)
    tokens = torch.randint(0, 128, (4, 32))
    with torch.no_grad():
        for m in model.modules():  # nonzero projections so QAT changes the output
            if isinstance(m, CastedLinear):
                m.weight.normal_(0, 0.05)
        off = model(tokens, tokens)
        set_qat(model, True)
        on = model(tokens, tokens)
    assert not torch.equal(off, on)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(tokens, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_records_ste_on_every_linear_in_training_mode_only(monkeypatch):
    """The records' STE (seeds 000-002 int6 with a 1/31 floor; 001 int5 MLP): every CastedLinear, levels
    [-2^(b-1), 2^(b-1)-1], fp32 scales; evaluation sees the plain weights."""
    args = qat_args(model_dim=64, qat_ste="records", qat_scale_floor=1 / 31, bigram_buckets=32, bigram_dim=16)
    model = build_gpt(args, monkeypatch)
    assert configure_qat(args, model) == 2 * 6 + 1  # the 16 -> 64 bigram projection too, whatever its size
    w = model.blocks[0].attn.c_q.weight
    out = fake_quantize_ste(w, 6, torch.ones(()), floor=1 / 31)
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / 31).clamp_min(1 / 31)
    steps = (out.detach() / scale).round()
    assert float(steps.min()) >= -32 and float(steps.max()) <= 31
    torch.testing.assert_close(out.detach(), steps * scale, rtol=0, atol=1e-7)
    x = torch.randn(2, 64)
    layer = model.blocks[0].attn.c_q
    set_qat(model, True)
    trained = layer(x)
    layer.eval()
    assert torch.equal(layer(x), F.linear(x, w)) and not torch.equal(trained, F.linear(x, w))
    with pytest.raises(ValueError, match="differ from the export"):  # the export's STE must match the export
        configure_qat(qat_args(bits_mlp=6), build_gpt(qat_args(bits_mlp=6), monkeypatch))
    configure_qat(qat_args(bits_mlp=6, qat_ste="records"), build_gpt(qat_args(bits_mlp=6), monkeypatch))
