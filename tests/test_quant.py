"""Export runtime: the upstream int8 format, mixed widths, GPTQ-lite, pruning, compressors."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from packager.hparams import resolve
from packager.runtime import compress as C
from packager.runtime import gptq as G
from packager.runtime import lqer as L
from packager.runtime import quant as Q


def make_args(**overrides):
    """args with the export modules' hyperparameters (defaults = the baseline export)."""
    values = resolve(None, Q.HPARAMS + G.HPARAMS + L.HPARAMS + C.HPARAMS)
    for key, value in overrides.items():
        assert key in values, key
        values[key] = value
    return type("Args", (), values)()


def model_state_dict(seed: int = 0, layers: int = 2, dim: int = 384, vocab: int = 256) -> dict:
    """Baseline key names and dtypes at small dims; every matrix has > 65,536 elements except c_k/c_v."""
    g = torch.Generator().manual_seed(seed)
    kv = dim // 4

    def rnd(*shape, std=0.05):
        return torch.randn(*shape, generator=g) * std

    sd = {"tok_emb.weight": rnd(vocab, dim, std=0.5).bfloat16(), "skip_weights": torch.ones(layers // 2, dim)}
    for i in range(layers):
        p = f"blocks.{i}."
        sd.update({
            p + "attn.c_q.weight": rnd(dim, dim), p + "attn.c_k.weight": rnd(kv, dim),
            p + "attn.c_v.weight": rnd(kv, dim), p + "attn.proj.weight": rnd(dim, dim),
            p + "attn.q_gain": torch.full((4,), 1.5), p + "mlp.fc.weight": rnd(2 * dim, dim),
            p + "mlp.proj.weight": rnd(dim, 2 * dim), p + "attn_scale": torch.ones(dim),
            p + "mlp_scale": torch.ones(dim), p + "resid_mix": torch.stack((torch.ones(dim), torch.zeros(dim))),
        })
    return sd


def test_int8_per_row_error_bound_and_clip():
    torch.manual_seed(1)
    w = torch.randn(300, 400)
    w[7, 3] = 40.0  # an outlier: above its row's 99.99984th percentile (interpolated to just below it)
    obj, _ = Q.quantize_state_dict_int8({"w": w})
    q, s16 = obj["quantized"]["w"], obj["scales"]["w"]
    dq = Q.dequantize_state_dict_int8(obj)["w"]
    clip = torch.quantile(w.abs(), Q.INT8_CLIP_Q, dim=1)
    s32 = (clip / 127.0).clamp_min(1.0 / 127.0)
    assert torch.allclose(s16.float(), s32, rtol=1e-3)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    # Inside the clip: rounding (half a step) plus the fp16 rounding of the stored scale.
    bound = s32[:, None] / 2 + q.float().abs() * (s16.float() - s32).abs()[:, None] + 1e-6
    inside = w.abs() <= clip[:, None]
    err = (w - dq).abs()
    assert bool((err[inside] <= bound[inside]).all())
    # Outside: the clip error on top.
    extra = (w.abs() - clip[:, None]).clamp_min(0)
    assert bool((err <= bound + extra).all())
    assert float(w[7, 3]) > float(clip[7]) and float(err[7, 3]) > 0


def test_int8_object_matches_upstream_format():
    sd = model_state_dict()
    sd["vec"] = torch.randn(70_000)
    sd["small_plain"] = torch.randn(64, 64)
    sd["step"] = torch.tensor([3], dtype=torch.int64)
    obj, stats = Q.quantize_state_dict_int8(sd)
    assert list(obj) == ["__quant_format__", "quantized", "scales", "dtypes", "passthrough", "qmeta",
                         "passthrough_orig_dtypes"]
    assert obj["__quant_format__"] == "int8_clean_per_row_v1"
    big = {k for k, v in sd.items() if v.is_floating_point() and v.numel() > 65_536}
    assert set(obj["quantized"]) == set(obj["scales"]) == set(obj["dtypes"]) == big
    assert set(obj["passthrough"]) == set(sd) - big
    for name in big:
        assert obj["quantized"][name].dtype == torch.int8
        assert obj["dtypes"][name] == str(sd[name].dtype).removeprefix("torch.")
    assert obj["scales"]["blocks.0.mlp.fc.weight"].dtype == torch.float16
    assert obj["scales"]["blocks.0.mlp.fc.weight"].shape == (768,)
    assert obj["qmeta"]["blocks.0.attn.c_q.weight"] == {"scheme": "per_row", "axis": 0}
    assert "vec" not in obj["qmeta"] and obj["scales"]["vec"].ndim == 0
    assert obj["scales"]["vec"].dtype == torch.float32
    assert obj["passthrough"]["step"].dtype == torch.int64
    assert set(stats) == set(Q.QUANT_STAT_KEYS)
    assert stats["param_count"] == sum(v.numel() for v in sd.values())
    assert stats["num_float_tensors"] == len(big) and stats["num_nonfloat_tensors"] == 1


def test_upstream_constants_and_scale_floor():
    # upstream divides the percentile by 100 (0.9999984000000001), which torch.quantile sees
    assert Q.INT8_CLIP_Q == 99.99984 / 100.0 and Q.QUANT_KEEP_FLOAT_MAX_NUMEL == 65_536
    assert set(Q.CONTROL_TENSOR_NAME_PATTERNS) >= {"attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight"}
    q, s = Q.quantize_int8_tensor(torch.full((2, 40_000), 1e-3))  # tiny rows: scale floored at 1/127
    assert torch.equal(s, torch.full((2,), 1.0 / 127.0).half()) and int(q.abs().max()) == 0
    q, s = Q.quantize_int8_tensor(torch.linspace(-2.0, 2.0, 70_001))  # vectors: one fp32 scale
    assert s.ndim == 0 and s.dtype == torch.float32 and int(q.abs().max()) == 127


def test_control_tensors_fp32_and_small_tensors_fp16_restored():
    sd = model_state_dict()
    sd["small_bf16"] = torch.randn(100).bfloat16()
    sd["small_fp32"] = torch.randn(64, 64)
    obj, _ = Q.quantize_state_dict_int8(sd)
    for name in ("skip_weights", "blocks.0.attn_scale", "blocks.1.resid_mix", "blocks.0.attn.q_gain"):
        assert obj["passthrough"][name].dtype == torch.float32
        assert name not in obj["passthrough_orig_dtypes"]
        assert torch.equal(obj["passthrough"][name], sd[name])
    assert obj["passthrough"]["small_bf16"].dtype == torch.float16
    small = {n for n in sd if "c_k" in n or "c_v" in n}  # 96 x 384 <= 65,536 elements
    assert obj["passthrough_orig_dtypes"] == {"small_bf16": "bfloat16", "small_fp32": "float32",
                                              **{n: "float32" for n in small}}
    back = Q.dequantize_state_dict_int8(obj)
    assert back["small_bf16"].dtype == torch.bfloat16 and back["small_fp32"].dtype == torch.float32
    assert torch.equal(back["small_fp32"], sd["small_fp32"].half().float())
    assert back["tok_emb.weight"].dtype == torch.bfloat16


@pytest.mark.parametrize("bits", [5, 6])
def test_intn_levels_and_half_step_roundtrip(bits):
    qmax = 2 ** (bits - 1) - 1
    sd = model_state_dict()
    args = make_args(quant_scheme="mixed", bits_mlp=bits, bits_attn=bits)
    obj, _ = Q.quantize_state_dict_mixed(args, sd)
    back = Q.dequantize_state_dict_int8(obj)
    for name in ("blocks.0.mlp.fc.weight", "blocks.1.attn.c_q.weight"):
        q, s = obj["quantized"][name], obj["scales"][name]
        assert obj["bits"][name] == bits and q.dtype == torch.int8 and s.dtype == torch.float16
        assert int(q.abs().max()) == qmax
        assert max(len(torch.unique(row)) for row in q) <= 2 ** bits - 1
        step = s.float()[:, None]
        assert bool(((sd[name] - back[name]).abs() <= step / 2 + 1e-6).all())
    assert obj["bits"]["tok_emb.weight"] == 8  # embed stays at its own width: the baseline int8 quantizer
    assert torch.equal(obj["scales"]["tok_emb.weight"], Q.quantize_int8_tensor(sd["tok_emb.weight"])[1])


def test_fp16_embedding_passthrough():
    sd = model_state_dict()
    args = make_args(quant_scheme="mixed", bits_embed=16, bits_mlp=5, bits_attn=6)
    obj, _ = Q.quantize_state_dict_mixed(args, sd)
    assert "tok_emb.weight" not in obj["quantized"]
    assert obj["passthrough"]["tok_emb.weight"].dtype == torch.float16
    assert obj["passthrough_orig_dtypes"]["tok_emb.weight"] == "bfloat16"
    back = Q.dequantize_state_dict_int8(obj)["tok_emb.weight"]
    assert back.dtype == torch.bfloat16
    assert torch.equal(back, sd["tok_emb.weight"].half().bfloat16())


def test_gptq_lite_never_worse_and_clips_outliers():
    torch.manual_seed(2)
    w = torch.randn(64, 2048) * 0.05
    w[5, 11] = 0.3  # a 6-sigma outlier stretches row 5's max-clip int5 grid
    plain_q, plain_s = Q.quantize_rows_clip_search(w, 5, (1.0,))
    q, s = Q.quantize_rows_clip_search(w, 5, Q.parse_clip_list("0.9995,0.999,0.998,0.99"))

    def row_mse(q, s):
        return (w - q.float() * s.float()[:, None]).pow(2).mean(dim=1)

    assert bool((row_mse(q, s) <= row_mse(plain_q, plain_s)).all())
    assert float(row_mse(q, s)[5]) < 0.7 * float(row_mse(plain_q, plain_s)[5])
    assert float(s[5]) < 0.7 * float(plain_s[5])  # a clip well below the row max was chosen
    assert Q.parse_clip_list("0.999, 1.0,0.999") == (1.0, 0.999)
    with pytest.raises(ValueError):
        Q.parse_clip_list("1.5")


def test_gptq_lite_only_with_mixed_scheme():
    with pytest.raises(ValueError, match="mixed"):
        Q.check_export_args(make_args(gptq_lite=True))
    with pytest.raises(ValueError, match="widths"):
        Q.check_export_args(make_args(quant_scheme="mixed", bits_mlp=4))
    Q.check_export_args(make_args(quant_scheme="mixed", gptq_lite=True, bits_mlp=5, bits_attn=6))


def test_pruning_fraction_and_eligibility():
    sd = model_state_dict()
    sd["big_vec"] = torch.randn(70_000)
    pruned_sd, count = Q.prune_state_dict(sd, 0.15)
    expected = 0
    for name, t in sd.items():
        zeros = int((pruned_sd[name] == 0).sum()) - int((t == 0).sum())
        if Q.prune_eligible(name, t):
            assert t.ndim == 2 and t.numel() > 65_536
            # The records' rule: |w| strictly below the 0.15 quantile (ties with it stay, as in bf16 weights).
            assert zeros == int((t.abs() < torch.quantile(t.abs().float(), 0.15)).sum()) <= 0.15 * t.numel() + 1
            assert zeros >= 0.14 * t.numel()
            kept = pruned_sd[name] != 0
            assert float(t[~kept].abs().max()) <= float(t[kept].abs().min())  # the smallest went
            expected += zeros
        else:
            assert torch.equal(pruned_sd[name], t)
    assert count == expected
    assert {n for n, t in sd.items() if Q.prune_eligible(n, t)} == {
        n for n in sd if n.endswith(("c_q.weight", "proj.weight", "fc.weight", "tok_emb.weight"))}
    assert torch.count_nonzero(sd["blocks.0.mlp.fc.weight"] == 0) == 0  # input untouched


@pytest.mark.parametrize("name,level", [("zlib", 9), ("zstd", 22), ("lzma", 6)])
def test_compressors_roundtrip(name, level):
    if name == "zstd":
        pytest.importorskip("zstandard")
    args = make_args(compressor=name, compress_level=level)
    raw = bytes(range(256)) * 300
    blob = Q.compress_bytes(args, raw)
    assert len(blob) < len(raw) and Q.decompress_bytes(args, blob) == raw


def test_missing_zstandard_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` raise ImportError
    args = make_args(compressor="zstd", compress_level=22)
    for call in (lambda: Q.compress_bytes(args, b"x"), lambda: Q.check_export_args(args),
                 lambda: Q.export_model(args, model_state_dict())):
        with pytest.raises(RuntimeError, match="zstandard.*pip install zstandard"):
            call()
    with pytest.raises(ValueError, match="not available"):
        Q.compress_bytes(make_args(compressor="bz2"), b"x")


@pytest.mark.parametrize("overrides", [
    {},
    {"quant_scheme": "mixed", "bits_mlp": 5, "bits_attn": 6, "bits_embed": 16, "compressor": "lzma"},
    {"quant_scheme": "mixed", "bits_mlp": 6, "bits_attn": 6, "gptq_lite": True, "prune_frac": 0.05,
     "compressor": "zstd", "compress_level": 22},
])
def test_export_import_roundtrip(overrides):
    if overrides.get("compressor") == "zstd":
        pytest.importorskip("zstandard")
    sd = model_state_dict()
    args = make_args(**overrides)
    blob, stats = Q.export_model(args, sd)
    back = Q.import_model(args, blob)
    assert list(back) and set(back) == set(sd)
    for name, t in sd.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape, name
        err = (back[name].float() - t.float()).pow(2).mean().sqrt()
        assert err <= 0.1 * t.float().pow(2).mean().sqrt(), name  # GPTQ-lite may clip single values
    assert stats["compressed_bytes"] == len(blob) and stats["raw_bytes"] > len(blob)
    assert stats["payload_bytes"] == stats["int8_payload_bytes"] > 0
    assert stats["param_count"] == sum(t.numel() for t in sd.values())
    assert (stats["pruned_count"] > 0) == ("prune_frac" in overrides)
    model = torch.nn.Module()
    for name, t in sd.items():  # strict load into a module with the same parameters
        model.register_buffer(name.replace(".", "_"), torch.empty_like(t))
    model.load_state_dict({k.replace(".", "_"): v for k, v in back.items()}, strict=True)


def test_baseline_blob_is_upstream_bytes():
    sd = model_state_dict()
    blob, stats = Q.export_model(make_args(), sd)
    obj, _ = Q.quantize_state_dict_int8(sd)
    buf = io.BytesIO()
    torch.save(obj, buf)
    import zlib
    assert blob == zlib.compress(buf.getvalue(), level=9)
    assert stats["quant_format"] == "int8_clean_per_row_v1" and stats["pruned_count"] == 0


def test_pruning_shrinks_artifact_and_export_is_deterministic():
    sd = model_state_dict()
    plain, _ = Q.export_model(make_args(), sd)
    args = make_args(prune_frac=0.3)
    pruned, _ = Q.export_model(args, sd)
    assert len(pruned) < len(plain)
    assert Q.export_model(args, model_state_dict())[0] == pruned
    mixed = make_args(quant_scheme="mixed", bits_mlp=5, bits_attn=6, gptq_lite=True)
    assert Q.export_model(mixed, sd)[0] == Q.export_model(mixed, model_state_dict())[0]


def test_labels():
    assert Q.export_label(make_args()) == ("int8+zlib", "int8_zlib")
    m = dict(quant_scheme="mixed", compressor="zstd")
    assert Q.export_label(make_args(**m, bits_mlp=6, bits_attn=6)) == ("int6+zstd", "int6_zstd")
    assert Q.export_label(make_args(**m, bits_mlp=5, bits_attn=6)) == ("int6+zstd", "int6_zstd")
    assert Q.export_label(make_args(**m, bits_mlp=6, bits_attn=8)) == ("mixed+zstd", "mixed_zstd")
    assert Q.export_label(make_args(quant_scheme="mixed", bits_mlp=8, bits_attn=8, compressor="lzma")) == (
        "int8+lzma", "int8_lzma")


def test_declarations():
    names = [hp.name for hp in Q.HPARAMS]
    assert len(names) == len(set(names))
    assert set(Q.FEATURES) == {"mixed_quant", "gptq_lite", "prune", "zstd", "lzma", "quant_wm", "quant_flat",
                               "keep_fp16", "int8_roundtrip"}
    for hp in Q.HPARAMS:
        assert hp.path.startswith("export.") and (hp.feature is None or hp.feature in Q.FEATURES)
    defaults = resolve(None, Q.HPARAMS)
    assert defaults["prune_frac"] == 0.0 and defaults["gptq_lite"] is False and defaults["quant_scheme"] == "int8"
    on = dict(defaults, quant_scheme="mixed", gptq_lite=True, prune_frac=0.1)

    def uses(name, values):
        return bool(eval(Q.FEATURES[name][1], {"__builtins__": {}}, dict(values)))

    for name in Q.FEATURES:
        assert not uses(name, defaults), name  # the baseline export carries none of them
    assert all(uses(n, on) for n in ("mixed_quant", "gptq_lite", "prune"))
    assert uses("quant_wm", dict(on, quant_layout="wm")) and uses("quant_flat", dict(on, quant_layout="flat"))
    assert uses("keep_fp16", dict(defaults, keep_fp16="tok_emb")) and uses("int8_roundtrip", dict(on, int8_roundtrip=True))
    assert uses("zstd", dict(defaults, compressor="zstd")) and uses("lzma", dict(defaults, compressor="lzma"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_export_from_cuda_state_dict():
    sd = {k: v.cuda() for k, v in model_state_dict().items()}
    args = make_args(quant_scheme="mixed", bits_mlp=5, bits_attn=6, gptq_lite=True, prune_frac=0.05)
    blob, _ = Q.export_model(args, sd)
    assert blob == Q.export_model(args, {k: v.cpu() for k, v in sd.items()})[0]  # same bytes as on CPU
    back = Q.import_model(args, blob)
    assert all(back[k].device.type == "cpu" and back[k].dtype == sd[k].dtype for k in sd)


# ---------------------------------------------------------------- the records' layouts and grids

RECORD = dict(quant_scheme="mixed", bits_mlp=6, bits_attn=6, bits_embed=8, bits_other=8)


def test_wm_layout_as_seeds_000_002_wrote_it():
    sd = model_state_dict()
    sd["big_control.skip_weights"] = torch.ones(300, 300)  # a control tensor above the threshold
    obj, stats = Q.quantize_state_dict_mixed(make_args(**RECORD, quant_layout="wm", scale_floor=True), sd)
    w, m = obj["w"], obj["m"]
    assert set(obj) == {"w", "m"} and list(m) == list(sd)  # state-dict order
    assert m["blocks.0.attn.q_gain"] == m["skip_weights"] == "passthrough" and w["skip_weights"].dtype == torch.float16
    assert m["big_control.skip_weights"] == "passthrough_ctrl" and w["big_control.skip_weights"].dtype == torch.float32
    assert m["blocks.0.mlp.fc.weight"] == {"type": "int6"} and m["tok_emb.weight"] == {"type": "int8"}
    assert {"blocks.0.mlp.fc.weight.q", "blocks.0.mlp.fc.weight.scale"} <= set(w)
    types = [m[k]["type"] for k in m if isinstance(m[k], dict) and m[k]["type"] == "int6"]
    assert all(t is types[0] for t in types)  # one shared string, as the record's literal: same pickle bytes
    int5 = Q.quantize_state_dict_mixed(make_args(**{**RECORD, "bits_mlp": 5, "quant_layout": "wm_int5"}), sd)[0]["m"]
    fresh = [int5[k]["type"] for k in int5 if isinstance(int5[k], dict) and int5[k]["type"] == "int6"]
    assert fresh[0] == fresh[1] and fresh[0] is not fresh[1]  # seed 001's writer builds each one
    back = Q.dequantize_export(obj)
    assert set(back) == set(sd) and torch.equal(back["big_control.skip_weights"], sd["big_control.skip_weights"])
    assert stats["param_count"] == sum(t.numel() for t in sd.values())


def test_flat_layout_as_seed_003_wrote_it():
    sd = model_state_dict()
    args = make_args(**{**RECORD, "bits_mlp": 5, "bits_other": 6, "quant_layout": "flat", "keep_float_max": 896,
                        "asym_grid": True})
    obj, _ = Q.quantize_state_dict_mixed(args, sd)
    assert list(obj)[-1] == "__quant_format__" and obj["__quant_format__"] == "mixed_v1"
    assert obj["tok_emb.weight.__dtype"] == "torch.bfloat16" and obj["blocks.0.attn_scale"].dtype == torch.float16
    assert obj["blocks.0.mlp.fc.weight.__q"].min() >= -16 and obj["blocks.0.mlp.fc.weight.__q"].max() <= 15
    emb = sd["tok_emb.weight"].float()
    scale = (emb.abs().amax(dim=1) / 127).to(torch.float16)  # 8 bits on the row max, no percentile clip
    assert torch.equal(obj["tok_emb.weight.__scale"], scale)
    assert torch.equal(obj["tok_emb.weight.__q"], torch.clamp(torch.round(emb / scale.float()[:, None]), -128, 127).to(torch.int8))
    back = Q.dequantize_export(obj)
    assert set(back) == set(sd) and "__quant_format__" not in back


def test_scale_floor_asymmetric_grid_and_one_clip_per_matrix():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(64, 512, generator=g) * 0.02  # trained-like: row max well below 1
    q, s = Q.quantize_rows_clip_search(w, 6, (1.0,), floor=True)
    assert torch.equal(s, torch.full((64,), 1 / 31).to(torch.float16))  # every row at the 1/31 floor
    assert bool((q[w.abs() < 0.49 / 31] == 0).all())  # |w| below about 1/62 rounds to zero
    big = w * 100
    q_asym, _ = Q.quantize_rows_clip_search(big, 6, (0.95,), asym=True)  # a clip below the max: values clamp
    q_sym, _ = Q.quantize_rows_clip_search(big, 6, (0.95,))
    assert (int(q_asym.min()), int(q_asym.max()), int(q_sym.min())) == (-32, 31, -31)
    clips = Q.parse_clip_list("0.999,0.9995,0.9999,0.99999")
    q_t, s_t = Q.quantize_rows_clip_search(big, 6, clips, per_tensor=True)
    row_q = [torch.quantile(big.abs(), c, dim=1) if c < 1 else big.abs().amax(dim=1) for c in clips]
    assert any(torch.equal(s_t, (r / 31).to(torch.float16)) for r in row_q)  # one clip for all rows
    q_r, s_r = Q.quantize_rows_clip_search(big, 6, clips)
    err_t = (big - q_t.float() * s_t.float()[:, None]).pow(2).mean()
    err_r = (big - q_r.float() * s_r.float()[:, None]).pow(2).mean()
    assert float(err_r) <= float(err_t)  # per row is at least as good as one clip per matrix


def test_keep_fp16_names_and_int8_round_trip_before_the_mixed_export():
    sd = model_state_dict()
    args = make_args(**RECORD, quant_layout="wm", keep_fp16="blocks.1.attn.c_q", keep_float_max=8192)
    m = Q.quantize_state_dict_mixed(args, sd)[0]["m"]
    assert m["blocks.1.attn.c_q.weight"] == "passthrough_fp16" and m["blocks.0.attn.c_q.weight"] == {"type": "int6"}
    assert m["blocks.0.attn.c_k.weight"] == {"type": "int6"}  # 96x384 = 36,864 > 8,192: quantized
    flat = dict(RECORD, quant_layout="flat", asym_grid=True)

    def serialized(args, state_dict) -> bytes:
        buf = io.BytesIO()
        torch.save(Q.export_object(args, state_dict)[0], buf)
        return buf.getvalue()

    raw = serialized(make_args(**flat, int8_roundtrip=True), sd)
    once = Q.dequantize_state_dict_int8(Q.quantize_state_dict_int8(sd)[0])
    assert raw == serialized(make_args(**flat), {k: once[k] for k in sd})
    assert raw != serialized(make_args(**flat), sd)
