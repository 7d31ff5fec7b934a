"""The April frontier (#1530 lineage, #1855 / #1868): parity with the records' own scripts, and one
behaviour test per technique that fails if the technique is wrong."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from packager.cli import data as data_cli
from packager.recipe import load_recipe
from packager.render import render_script
from packager.runtime import docattn as D
from packager.runtime import frontier as FR
from packager.runtime import kernels as K
from packager.runtime import model as M
from packager.runtime import optim as O
from packager.wrap import wrap_lzma_b85

from tests.model_helpers import model_optim_args, one_thread  # noqa: F401 (autouse fixture)
from tests.upstream_frontier import R1855, R1868, import_record, logged_model_params, record_folder, \
    to_upstream_state, upstream_args

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "tests" / "recipes" / "frontier_stack_test.yaml"
SHAPE = dict(vocab_size=512, num_layers=6, model_dim=64, num_heads=4, num_kv_heads=2, train_seq_len=64)
# The record's stack at a tiny shape: loop blocks 1..2 twice more, two lanes from block 4.
STACK = dict(mlp_mult=4, activation="leaky_relu2", xsa_last_n=6, rope_dims=8, ln_scale=True, qk_gain_init=5.0,
             num_loops=2, loop_start=1, loop_end=2, parallel_start_layer=4, skip_gates=True, sparse_attn_gate=True,
             sparse_attn_gate_scale=0.5, smear_gate_v2=True, rope_train_seq_len=64, doc_attention=True)
# #1855 at full size (its Hyperparameters defaults and the hparams its logs print).
FULL = dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4, mlp_mult=4,
            activation="leaky_relu2", xsa_last_n=11, rope_dims=16, ln_scale=True, qk_gain_init=5.0, num_loops=2,
            loop_start=3, loop_end=5, parallel_start_layer=8, skip_gates=True, sparse_attn_gate=True,
            smear_gate_v2=True, rope_train_seq_len=2048, doc_attention=True, fused_mlp=True, fused_ce=True,
            train_seq_len=2048)


def tiny(**overrides) -> M.GPT:
    torch.manual_seed(0)
    return M.GPT(model_optim_args(**(SHAPE | STACK | overrides)))


def randomize(model: M.GPT, seed: int = 1) -> dict:
    """Every tensor random (zero-init ones too), gains near 1, so that every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * (0.3 if v.ndim < 2 else 0.1) + (1.0 if v.ndim < 2 else 0.0)
          for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    return sd


def tokens(n: int = 160, bos=(0, 37, 90, 100), seed: int = 2) -> torch.Tensor:
    x = torch.randint(2, 512, (1, n), generator=torch.Generator().manual_seed(seed))
    x[0, list(bos)] = 1
    return x


# ------------------------------------------------------------------ parity with the records

@pytest.mark.parametrize("folder", [R1855, R1868], ids=["1855", "1868"])
def test_full_size_parameter_count_equals_the_records_logs(folder):
    logged = logged_model_params(record_folder(folder))
    assert logged == {35_945_671}, logged  # every seed log of the record prints the same count
    with torch.device("meta"):
        model = M.GPT(model_optim_args(**FULL))
    assert sum(p.numel() for p in model.parameters()) in logged


def test_the_rendered_test_recipe_has_the_records_parameter_count(tmp_path):
    script = render_script(load_recipe(RECIPE))
    path = tmp_path / "frontier_params.py"
    path.write_text(script)
    import importlib.util

    spec = importlib.util.spec_from_file_location("frontier_params", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.device("meta"):
        model = module.GPT(module.Hyperparameters())
    assert sum(p.numel() for p in model.parameters()) == 35_945_671


@pytest.mark.parametrize("folder", [R1855, R1868], ids=["1855", "1868"])
def test_logits_match_the_records_script_on_a_shared_state_dict(folder):
    """fp32 CPU, tiny shape, every model technique of the record on: dense attention bitwise, per-document
    (varlen) attention within 1e-5 (our masked SDPA vs the stub's segment-by-segment SDPA)."""
    up = import_record(record_folder(folder), f"record_{folder.name[:10]}")
    ref_args = upstream_args(up, **SHAPE, mlp_mult=4.0, xsa_last_n=6, rope_dims=8, loop_start=1, loop_end=2,
                             num_loops=2, parallel_start_layer=4, rope_train_seq_len=64, sparse_attn_gate_enabled=True,
                             sparse_attn_gate_scale=0.5, smear_gate_enabled=True, fused_ce_enabled=False)
    ref = up.GPT(ref_args).float().eval()
    ours = tiny().eval()
    sd = randomize(ours)
    ref.load_state_dict(to_upstream_state(sd, SHAPE["num_layers"]), strict=True)
    x = tokens()
    cu = D.document_starts(x, SHAPE["train_seq_len"])
    with torch.no_grad():
        for looping in (False, True):
            ours.looping_active = ref.looping_active = looping
            varlen = (ours(x, cu_seqlens=cu) - ref.forward_logits(x, cu_seqlens=cu, max_seqlen=64)).abs().max()
            assert varlen < 1e-5, (looping, varlen)
            dense = (ours(x[:, :64]) - ref.forward_logits(x[:, :64])).abs().max()
            assert dense == 0.0, (looping, dense)


def test_document_starts_are_the_records_cu_seqlens():
    """Segments start at the row start, every BOS and every max_len tokens into a document, padded
    to a multiple of 64 with the total, as the records' loader builds them."""
    x = tokens(300, bos=(5, 40, 41, 250))
    expect = [0, 5, 40, 41, 105, 169, 233, 250]  # 0..5 is a partial document; 41..250 is cut every 64
    cu = D.document_starts(x, 64)
    assert cu.dtype == torch.int32 and cu.numel() == 64
    assert cu[: len(expect)].tolist() == expect and set(cu[len(expect):].tolist()) == {300}
    rows = D.document_starts(x.view(2, 150), 200)  # a row start always starts a segment
    assert rows[:6].tolist() == [0, 5, 40, 41, 150, 250]


# ------------------------------------------------------------------ per-document attention and SmearGate v2

def test_no_token_reads_across_a_bos():
    """Changing every token before a BOS changes nothing at or after it: per-document attention plus the
    SmearGate BOS mask. Without the mask the BOS position takes the previous document's last token."""
    model = tiny().eval()
    randomize(model)
    x = tokens()
    y = x.clone()
    y[0, 1:90] = torch.randint(2, 512, (89,), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = model(x, cu_seqlens=D.document_starts(x, 64))
        b = model(y, cu_seqlens=D.document_starts(y, 64))
        assert (a[0, 90:] - b[0, 90:]).abs().max() == 0.0
        assert (a[0, 1:90] - b[0, 1:90]).abs().max() > 1e-3
        model.smear_bos_mask = False
        a = model(x, cu_seqlens=D.document_starts(x, 64))
        b = model(y, cu_seqlens=D.document_starts(y, 64))
        assert (a[0, 90] - b[0, 90]).abs().max() > 1e-4  # the leak #1851 fixed


def test_document_attention_twin_equals_attention_per_segment():
    g = torch.Generator().manual_seed(3)
    q, k, v = torch.randn(2, 50, 4, 8, generator=g), torch.randn(2, 50, 2, 8, generator=g), torch.randn(2, 50, 2, 8, generator=g)
    cu = torch.tensor([0, 7, 30, 50, 61, 100, 100], dtype=torch.int32)  # over the 100 flattened tokens
    out = D.document_attention(q, k, v, cu, 64).reshape(100, 4, 8)
    flat = [t.reshape(100, -1, 8) for t in (q, k, v)]
    for s, e in zip(cu.tolist(), cu.tolist()[1:]):
        if e > s:
            ref = F.scaled_dot_product_attention(*(t[s:e].transpose(0, 1) for t in flat), is_causal=True,
                                                 enable_gqa=True).transpose(0, 1)
            assert torch.allclose(out[s:e], ref, atol=1e-6)


def test_document_loader_packs_one_row_with_its_starts(tiny_data):
    pattern = str(tiny_data / "datasets" / "fineweb10B_sp1024" / "fineweb_train_*.bin")
    loader = D.DocumentTokenLoader(pattern, 0, 1, torch.device("cpu"), 64)
    x, y, cu = loader.next_batch(2048, 128, 8)
    assert x.shape == y.shape == (1, 256) and torch.equal(x[0, 1:], y[0, :-1])
    bos = set((x[0] == 1).nonzero().flatten().tolist())
    assert bos and bos <= set(cu.tolist())
    assert D.DocumentTokenLoader(pattern, 0, 1, torch.device("cpu"), 0).next_batch(2048, 128, 8)[2] is None


def test_doc_attention_kernel_follows_the_attention_pin(monkeypatch):
    """On CUDA: auto or a pinned FlashAttention without its varlen kernel is an error (no silent T x T fallback),
    an sdpa pin runs the masked twin, an installed pin is used; CPU always runs the twin."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    pin = lambda kernel: SimpleNamespace(attention=kernel)  # noqa: E731
    monkeypatch.setattr(D, "flash_attn_3_varlen_func", None)
    monkeypatch.setattr(D, "flash_attn_2_varlen_func", None)
    with pytest.raises(RuntimeError, match="ATTENTION=auto on CUDA needs flash-attn's varlen kernel"):
        D.check_document_attention(pin("auto"), cuda)
    assert D.check_document_attention(pin("sdpa"), cuda) == "sdpa_document_mask"
    assert D.check_document_attention(pin("auto"), cpu) == "sdpa_document_mask"
    monkeypatch.setattr(D, "flash_attn_2_varlen_func", lambda *a, **k: None)
    assert D.check_document_attention(pin("auto"), cuda) == "fa2_varlen"
    assert D.check_document_attention(pin("fa2"), cuda) == "fa2_varlen"
    assert D.check_document_attention(pin("sdpa"), cuda) == "sdpa_document_mask"
    with pytest.raises(RuntimeError, match="FlashAttention 3's varlen kernel"):
        D.check_document_attention(pin("fa3"), cuda)


# ------------------------------------------------------------------ depth recurrence, lanes, gates

def test_loop_schedule_is_the_records_and_the_loop_shares_parameters():
    args = model_optim_args(**FULL)
    # train_seed42.log of #1855: "layer_loop:enabled ... encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]"
    assert FR.loop_schedule(args) == ([0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])
    model = tiny()
    plain = tiny(num_loops=0)
    # The loop adds no block: only skip weights/gates grow to the looped schedule's 5 skips (from 3).
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * (5 - 3) * SHAPE["model_dim"]
    randomize(model)
    x = tokens(64, bos=(0,))
    calls = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(model.blocks)]
    with torch.no_grad():
        off = model(x)
        model.looping_active = True
        on = model(x)
    for h in hooks:
        h.remove()
    assert not torch.equal(off, on)
    # Looping runs blocks 1 and 2 three times each: the same modules (the parallel blocks 4, 5 run outside forward()).
    assert calls == [0, 1, 2, 3] + [0, 1, 2, 1, 2, 1, 2, 3]


def test_parallel_lanes_follow_the_lambdas():
    model = tiny(num_loops=0)
    randomize(model)
    x0 = torch.randn(1, 8, 64)
    lane0, lane1 = torch.randn(1, 8, 64), torch.randn(1, 8, 64)
    with torch.no_grad():
        model.parallel_post_lambdas[4] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # attn -> lane 0, mlp -> lane 1
        model.parallel_resid_lambdas[4] = torch.tensor([1.0, 1.0])
        a, b = FR.parallel_block(model, 4, lane0, lane1, x0)
        block = model.blocks[4]
        mix = block.resid_mix
        attn = block.attn_scale * block.attn(block.normed(block.attn_norm, mix[0] * lane0 + mix[1] * x0))
        mlp = block.mlp_scale * block.mlp(block.normed(block.mlp_norm, lane1))
    assert torch.allclose(a, lane0 + attn, atol=1e-6) and torch.allclose(b, lane1 + mlp, atol=1e-6)
    model.parallel_final_lane = "mlp"
    assert torch.equal(FR.final_lane(model, a, b), b)
    model.parallel_final_lane = "mean"
    assert torch.equal(FR.final_lane(model, a, b), 0.5 * (a + b))


def test_skip_gate_is_a_sigmoid_lerp():
    model = tiny()
    x, skip = torch.randn(1, 4, 64), torch.randn(1, 4, 64)
    assert torch.allclose(FR.gate_skip(model, x, skip, 0), 0.5 * (x + skip), atol=1e-6)  # zero init: an even mix
    with torch.no_grad():
        model.skip_gates[0].fill_(30.0)
    assert torch.allclose(FR.gate_skip(model, x, skip, 0), x, atol=1e-6)  # gate open: the stream only


@pytest.mark.parametrize("gate,params", [("attn_out_gate", 12 * 4), ("gated_attn", 64 * 4), ("sparse_attn_gate", 12 * 4)])
def test_head_gates(gate, params):
    base = dict(sparse_attn_gate=False, gated_attn=False, attn_out_gate=False)
    model = tiny(**(base | {gate: True}))
    plain = tiny(**base)
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters()) == 6 * params
    attn = model.blocks[0].attn
    x, y = torch.randn(2, 5, 64), torch.randn(2, 5, 4, 16)
    q = torch.randn(2, 5, 64)
    out = FR.gate_heads(attn, x, q, y)
    w = (attn.attn_gate_proj.weight if gate == "attn_out_gate" else attn.attn_gate_w).detach()
    src = x if gate == "gated_attn" else x[..., :12]
    pre = src @ w.T
    g = {"attn_out_gate": 2 * torch.sigmoid(pre), "gated_attn": torch.sigmoid(pre),
         "sparse_attn_gate": torch.sigmoid(0.5 * pre)}[gate]
    assert torch.allclose(out, y * g[..., None], atol=1e-6)
    with pytest.raises(ValueError, match="mutually exclusive"):
        tiny(**(base | {"gated_attn": True, "sparse_attn_gate": True}))


def test_rope_tables_fp32_positions_and_yarn():
    model = tiny(rope_yarn=True)
    rot = model.blocks[0].attn.rotary
    cos, sin = rot(64, torch.device("cpu"), torch.float32)
    inv = 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8)
    assert torch.allclose(cos[0, :, 0], torch.outer(torch.arange(64.0), inv).cos(), atol=1e-6)
    cos, _ = rot(256, torch.device("cpu"), torch.float32)  # past rope_train_seq_len=64: YaRN
    base = 10000.0 * 4.0 ** (8 / 6)  # the records' new_base = base * scale^(d / (d - 2))
    inv = 1.0 / base ** (torch.arange(0, 8, 2).float() / 8)
    assert torch.allclose(cos[0, :, 0], torch.outer(torch.arange(256.0), inv).cos(), atol=1e-4)


# ------------------------------------------------------------------ fused kernels: the PyTorch twins

def test_fused_mlp_twin_matches_autograd():
    """Forward and backward of the fused MLP's twin (the kernel's math) vs autograd: 1e-5 in fp32."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 7, 16, generator=g, requires_grad=True)
    w1 = torch.randn(64, 16, generator=g, requires_grad=True)
    w2 = torch.randn(16, 64, generator=g, requires_grad=True)
    out = K.FusedLeakyReLU2MLP.apply(x, w1, w2)
    grads = torch.autograd.grad(out.square().sum(), (x, w1, w2))
    ref = F.linear(F.leaky_relu(F.linear(x, w1), 0.5).square(), w2)
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, w1, w2))
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-4)


def test_fused_softcapped_ce_twin_matches_autograd():
    """Loss and logits gradient of the fused CE's twin vs softcap + F.cross_entropy: 1e-5 in fp32."""
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(40, 300, generator=g) * 20).requires_grad_()
    t = torch.randint(0, 300, (40,), generator=g)
    loss = K.SoftcappedCrossEntropy.apply(x, t, 30.0).mean()
    ref = F.cross_entropy(30.0 * torch.tanh(x / 30.0), t)
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(torch.autograd.grad(loss, x)[0], torch.autograd.grad(ref, x)[0], atol=1e-6)


def test_fused_paths_are_logged_and_never_fall_back(monkeypatch):
    args = model_optim_args(fused_mlp=True, fused_ce=True)
    assert K.fused_paths(args, torch.device("cpu")) == "fused_mlp:torch fused_ce:torch"
    monkeypatch.setattr(K, "triton", None)
    with pytest.raises(RuntimeError, match="need Triton on CUDA"):
        K.fused_paths(args, torch.device("cuda"))


def test_training_uses_the_fused_paths_and_eval_the_plain_ones():
    fused, plain = tiny(fused_mlp=True, fused_ce=True), tiny()
    sd = randomize(fused)
    plain.load_state_dict(sd)
    x, y = tokens(64, bos=(0,)), tokens(64, bos=(), seed=7)
    assert torch.allclose(fused(x, y), plain(x, y), atol=1e-5)
    calls = []
    K.FusedLeakyReLU2MLP.forward, orig = (lambda ctx, *a: calls.append(1) or orig(ctx, *a)), K.FusedLeakyReLU2MLP.forward
    try:
        fused(x, y)
        n_train = len(calls)
        fused.eval()
        fused(x, y)
    finally:
        K.FusedLeakyReLU2MLP.forward = orig
    assert n_train == 6 and len(calls) == n_train


# ------------------------------------------------------------------ optimizer and schedule

def test_muon_eq_r_normalizes_rows_before_newton_schulz():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.zeros(8, 16))
    p.grad = torch.randn(8, 16) * torch.logspace(-3, 3, 8)[:, None]  # rows of very different norms
    seen = []
    muon = O.Muon([p], lr=0.1, momentum=0.0, backend_steps=5, nesterov=False)
    muon.param_groups[0]["row_normalize"] = True
    muon.zeropower = lambda g, **kw: seen.append(g.clone()) or g
    muon.step()
    assert torch.allclose(seen[0].norm(dim=1), torch.ones(8), atol=1e-5)
    assert torch.allclose(seen[0], p.grad / p.grad.norm(dim=1, keepdim=True))


def test_polar_express_orthogonalizes_better_than_the_quintic():
    g = torch.randn(64, 128, generator=torch.Generator().manual_seed(6))
    pe = torch.linalg.svdvals(O.zeropower_via_newtonschulz5(g, steps=5, coeffs=O.POLAR_EXPRESS_COEFFS))
    quintic = torch.linalg.svdvals(O.zeropower_via_newtonschulz5(g, steps=5))
    assert (pe - 1).abs().max() < 0.15 and (pe - 1).abs().max() < (quintic - 1).abs().max()
    args = model_optim_args(**SHAPE, muon_ns="polar_express", muon_row_normalize=True)
    _, muon = O.build_optimizers(args, tiny())
    assert muon.ns_kwargs == {"coeffs": O.POLAR_EXPRESS_COEFFS} and muon.param_groups[0]["row_normalize"]


def test_warmdown_fraction_and_min_lr():
    args = model_optim_args(warmdown_frac=0.85, min_lr=0.1, max_wallclock_seconds=100.0)
    at = lambda ms: O.lr_multiplier(args, 0, ms)  # noqa: E731
    assert at(10_000) == 1.0 and at(15_000) == pytest.approx(1.0)
    assert at(57_500) == pytest.approx(0.5) and at(95_000) == pytest.approx(0.1) and at(120_000) == 0.1
    args.min_lr, args.max_wallclock_seconds, args.iterations = 0.0, 0.0, 1000
    assert O.lr_multiplier(args, 575, 0.0) == pytest.approx(0.5) and O.lr_multiplier(args, 1000, 0.0) == 0.0


def test_embed_wd_gives_the_token_group_its_own_decay():
    args = model_optim_args(**SHAPE, adam_weight_decay=0.02, embed_weight_decay=0.085)
    opts, _ = O.build_optimizers(args, tiny())
    assert [o.param_groups[0]["weight_decay"] for o in (opts[0], opts[-1])] == [0.085, 0.02]
    names = {id(p): n for n, p in tiny().named_parameters()}  # root control tensors go to the scalar Adam
    model = tiny()
    opts, _ = O.build_optimizers(args, model)
    names = {id(p): n for n, p in model.named_parameters()}
    scalar = {names[id(p)] for p in opts[-1].param_groups[0]["params"]}
    assert {"skip_gates", "parallel_post_lambdas", "parallel_resid_lambdas", "smear_gate.weight", "smear_lambda",
            "blocks.0.attn.attn_gate_w"} <= scalar


# ------------------------------------------------------------------ the test recipe: renders, ships wrapped, runs

@pytest.fixture(scope="module")
def frontier_script() -> str:
    return render_script(load_recipe(RECIPE))


def test_test_recipe_renders_clean_and_ships_wrapped_within_the_records_code_bytes(frontier_script):
    from pyflakes.api import check
    from pyflakes.reporter import Reporter

    out = io.StringIO()
    assert check(frontier_script, "train_gpt.py", Reporter(out, out)) == 0, out.getvalue()
    assert frontier_script.count("\n") > 1500  # readable: over the limit, hence wrapped
    wrapped = wrap_lzma_b85(frontier_script, frontier_script.splitlines()[0])
    assert wrapped.count("\n") < 10 and len(wrapped.encode()) <= 31_999  # #1855's logged compressed code bytes
    for name in ("flash_attn_3_varlen_func", "mm_leaky_relu2_kernel", "softcapped_ce_kernel", "POLAR_EXPRESS_COEFFS",
                 "smear_previous", "parallel_block", "loop_schedule", "document_starts", "rope_frequencies"):
        assert name in frontier_script, name


def test_dense_gate_variants_render_clean(tmp_path):
    from pyflakes.api import check
    from pyflakes.reporter import Reporter

    text = RECIPE.read_text().replace("  sparse_attn_gate: true\n  sparse_attn_gate_scale: 0.5\n", "")
    for gate in ("gated_attn: true\n", "attn_out_gate: true\n  attn_out_gate_src: q\n"):
        path = tmp_path / "variant.yaml"
        path.write_text(text.replace("  smear_gate_v2: true\n", f"  smear_gate_v2: true\n  {gate}"))
        script = render_script(load_recipe(path))
        out = io.StringIO()
        assert check(script, "train_gpt.py", Reporter(out, out)) == 0, out.getvalue()


def test_too_long_without_wrap_is_refused(tmp_path):
    path = tmp_path / "unwrapped.yaml"
    path.write_text(RECIPE.read_text().replace("  wrap: lzma_b85", "  wrap: none"))
    from packager.errors import RenderError

    with pytest.raises(RenderError, match="set code: {wrap: lzma_b85}"):
        render_script(load_recipe(path))


@pytest.fixture(scope="module")
def tiny8192(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny8192")
    result = CliRunner().invoke(data_cli, ["tiny", str(out), "--vocab", "8192"])
    assert result.exit_code == 0, result.output
    return out


def test_golf_data_tiny_vocab_8192(tiny8192):
    import sentencepiece as spm

    from packager.runtime.data import load_data_shard

    sp = spm.SentencePieceProcessor(model_file=str(tiny8192 / "tokenizers" / "fineweb_8192_bpe.model"))
    assert sp.vocab_size() == 8192 and sp.bos_id() == 1
    shards = sorted((tiny8192 / "datasets" / "fineweb10B_sp8192").glob("fineweb_*.bin"))
    toks = torch.cat([load_data_shard(f) for f in shards]).long()
    assert toks.max() < 8192 and toks.max() > 4096 and (toks == 1).sum() > 50  # BOS-delimited documents
    assert json.loads((tiny8192 / "golf_tiny_dataset.json").read_text())["vocab_size"] == 8192


SMOKE = {"ITERATIONS": "6", "WARMUP_STEPS": "1", "NUM_LAYERS": "6", "MODEL_DIM": "64", "NUM_HEADS": "4",
         "NUM_KV_HEADS": "2", "LOOP_START": "1", "LOOP_END": "2", "PARALLEL_START_LAYER": "4", "XSA_LAST_N": "6",
         "ROPE_DIMS": "8", "TRAIN_SEQ_LEN": "128", "ROPE_TRAIN_SEQ_LEN": "64", "TRAIN_BATCH_TOKENS": "2048",
         "VAL_BATCH_SIZE": "16384", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0"}


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_test_recipe_runs_on_cpu(nproc, frontier_script, tiny8192, tmp_path):
    from tests.test_e2e import run_torchrun, smoke_env

    (tmp_path / "train_gpt.py").write_text(frontier_script)
    env = smoke_env(tiny8192, SEED=str(nproc), VOCAB_SIZE="8192", **SMOKE)
    env.update(DATA_PATH=str(tiny8192 / "datasets" / "fineweb10B_sp8192"),
               TOKENIZER_PATH=str(tiny8192 / "tokenizers" / "fineweb_8192_bpe.model"))
    result = run_torchrun(tmp_path, nproc, env, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "doc_attention:sdpa_document_mask max_len:128" in out
    assert "fused_kernels:fused_mlp:torch fused_ce:torch" in out
    assert re.search(r"^loop_warmup_step:1/1$", out, re.M)
    assert re.search(r"^layer_loop:enabled step:3 frac:0\.500 encoder:\[0, 1, 2, 1, 2\] decoder:\[1, 2, 3, 4, 5\]$",
                     out, re.M)
    res = json.loads(re.search(r"^golf_result_json:(.*)$", out, re.M).group(1))
    assert res["world_size"] == nproc and res["steps"] == 6 and res["val_bpb"] > 0
