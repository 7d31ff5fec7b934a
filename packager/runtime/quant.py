"""Export: quantize the trained weights, serialize, compress, and load them back.

The baseline format is upstream's `int8_clean_per_row_v1`: per-row int8 with fp16 row scales
for matrices (clip at the 99.99984th percentile of |w| per row), one fp32 scale for other
large tensors, float tensors of at most 65,536 elements kept (control tensors in fp32, the rest
in fp16 with the original dtype recorded), non-floats as they are; torch.save, then zlib 9.

The "mixed" scheme picks a width per tensor class: mlp (`.mlp.`), attn (`.attn.`, other
`.proj`), embed (`tok_emb`, `lm_head`), other (BigramHash, the rest). Widths 5 and 6 are
per-row levels in [-(2^(b-1)-1), 2^(b-1)-1] (one more negative level with an asymmetric grid)
stored in int8 with fp16 scales, the row max as the clip; 8 is the baseline int8 quantizer; 16
keeps the tensor in fp16. GPTQ-lite tries several clips and keeps the one with the lowest
reconstruction MSE, per row or (seed 002) per tensor. Pruning zeroes the |w| below the
prune_frac quantile of each large matrix before quantizing (seeds 000, 001).

The mixed artifact comes in three layouts, each with the float rules of the records that wrote it:
golf (`mixed_per_row_v1`: the baseline's object plus a `bits` map), wm (seeds 000-002:
{"w": tensors, "m": how each is stored}, small floats in fp16, quantized under name.q and
name.scale; wm_int5 is seed 001's writer of the same layout) and flat (seed 003 `mixed_v1`:
name.__q / .__scale / .__dtype in one dict, small and control floats in fp16, its 8-bit
embedding on the row-max grid).

Labels: "int8" for the baseline; for "mixed" the width of the block matrices: "int{b}" when
mlp and attn share b ("fp16" for 16), "int6" for an int5/int6 mix (what the int5-MLP records
print), "mixed" otherwise; then "+<compressor>" for size lines, "_<compressor>" for final lines.
"""

from __future__ import annotations

import io
import lzma
import zlib

import torch
from torch import Tensor

from packager.runtime.compress import (
    brotli_compress, brotli_decompress, check_compressor, deserialize_pergroup, serialize_pergroup, shuffle_bytes,
    unshuffle_bytes,
)
from packager.runtime.features import HP, feature
from packager.runtime.gptq import QUANT_FORMAT_GPTQ, dequantize_state_dict_gptq, quantize_state_dict_gptq
from packager.runtime.model import CONTROL_TENSOR_NAME_PATTERNS

FEATURES = {
    "mixed_quant": ("per-class bit widths (int5/int6/int8/fp16) for mlp, attn, embed and other weights",
                    "quant_scheme == 'mixed'"),
    "gptq_lite": ("per-row clip search: keep the clip ratio with the lowest reconstruction MSE", "gptq_lite"),
    "prune": ("zero the |w| below the prune_frac quantile of every large matrix before quantizing", "prune_frac > 0"),
    "quant_wm": ("the int6 records' artifact layout {w, m} (seeds 000-002)",
                 "quant_scheme == 'mixed' and quant_layout in ('wm', 'wm_int5')"),
    "quant_flat": ("seed 003's artifact layout mixed_v1 (name.__q, name.__scale, name.__dtype)",
                   "quant_scheme == 'mixed' and quant_layout == 'flat'"),
    "keep_fp16": ("named large tensors stored in fp16 (seed 001's FP16_KEEP_NAME_PATTERNS)", "keep_fp16 != ''"),
    "int8_roundtrip": ("round-trip the weights through the int8 export before the mixed one (seed 003)",
                       "int8_roundtrip"),
    "zstd": ("zstandard compression of the artifact (needs the zstandard package)", "compressor == 'zstd'"),
    "lzma": ("lzma (xz) compression of the artifact", "compressor == 'lzma'"),
}

HPARAMS = (
    HP("compressor", "COMPRESSOR", "export.compressor", str, "zlib", choices=("zlib", "zstd", "lzma", "brotli", "pergroup"),
       doc="artifact compressor; a missing module is an error, never a fallback"),
    HP("compress_level", "COMPRESS_LEVEL", "export.compress_level", int, 9,
       doc="zlib level 0-9, zstd level 1-22, lzma preset 0-9, brotli quality 0-11"),
    HP("quant_scheme", "QUANT_SCHEME", "export.quant", str, "int8", feature="mixed_quant",
       choices=("int8", "mixed"), doc="int8: upstream per-row int8; mixed: bits per tensor class"),
    HP("bits_mlp", "QUANT_BITS_MLP", "export.bits_mlp", int, 8, feature="mixed_quant",
       choices=(5, 6, 8, 16), doc="width of blocks.*.mlp.* matrices (16: fp16)"),
    HP("bits_attn", "QUANT_BITS_ATTN", "export.bits_attn", int, 8, feature="mixed_quant",
       choices=(5, 6, 8, 16), doc="width of blocks.*.attn.* matrices (16: fp16)"),
    HP("bits_embed", "QUANT_BITS_EMBED", "export.bits_embed", int, 8, feature="mixed_quant",
       choices=(5, 6, 8, 16), doc="width of tok_emb / lm_head (16: fp16)"),
    HP("bits_other", "QUANT_BITS_OTHER", "export.bits_other", int, 8, feature="mixed_quant",
       choices=(5, 6, 8, 16), doc="width of the other large tensors (16: fp16)"),
    HP("gptq_lite", "GPTQ_LITE", "export.gptq_lite", bool, False, feature="gptq_lite",
       doc="per-row clip search for the mixed scheme's quantized matrices"),
    HP("gptq_clips", "GPTQ_CLIPS", "export.gptq_clips", str, "1.0,0.99999,0.9999,0.9995,0.999",
       feature="gptq_lite", doc="comma-separated |w| quantiles tried per row; 1.0 (row max) is always tried"),
    HP("gptq_per_tensor", "GPTQ_PER_TENSOR", "export.gptq_per_tensor", bool, False, feature="gptq_lite",
       doc="one clip per matrix (lowest MSE over the matrix, seed 002) instead of one per row"),
    HP("prune_frac", "PRUNE_FRAC", "export.prune_frac", float, 0.0, feature="prune", minimum=0.0,
       doc="each 2-D float matrix of > 65,536 elements loses its |w| below this quantile"),
    HP("quant_layout", "QUANT_LAYOUT", "export.layout", str, "golf", feature="mixed_quant",
       choices=("golf", "wm", "wm_int5", "flat"),
       doc="artifact layout of the mixed scheme: golf, wm (seeds 000, 002), wm_int5 (001), flat (003)"),
    HP("keep_float_max", "QUANT_KEEP_FLOAT_MAX", "export.keep_float_max", int, 65536, feature="mixed_quant",
       minimum=0, doc="float tensors of at most this many elements are stored as floats, not quantized"),
    HP("keep_fp16", "FP16_KEEP_NAME_PATTERNS", "export.keep_fp16", str, "", feature="keep_fp16",
       doc='comma-separated name parts of tensors stored in fp16, e.g. "tok_emb,blocks.8.attn.c_k"'),
    HP("scale_floor", "QUANT_SCALE_FLOOR", "export.scale_floor", bool, False, feature="mixed_quant",
       doc="int5/int6 row scales at least 1/qmax (seeds 000, 002): |w| < 1/(2 qmax) rounds to 0"),
    HP("asym_grid", "QUANT_ASYM_GRID", "export.asym_grid", bool, False, feature="mixed_quant",
       doc="levels [-2^(b-1), 2^(b-1)-1] (seeds 000, 001, 003) instead of symmetric"),
    HP("int8_roundtrip", "QUANT_INT8_ROUNDTRIP", "export.int8_roundtrip", bool, False, feature="int8_roundtrip",
       doc="quantize the int8-round-tripped weights (seed 003 scored its int8 artifact first)"),
)

QUANT_FORMAT_INT8 = "int8_clean_per_row_v1"
QUANT_FORMAT_MIXED = "mixed_per_row_v1"
QUANT_KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_Q = 99.99984 / 100.0
WM_TYPES = {5: "int5", 6: "int6", 8: "int8"}
# The keys of the stats that quantize_state_dict_* return (upstream's); export_model adds its own.
QUANT_STAT_KEYS = ("param_count", "num_tensors", "num_float_tensors", "num_nonfloat_tensors",
                   "baseline_tensor_bytes", "int8_payload_bytes")


def is_control_tensor(name: str) -> bool:
    return any(pattern in name for pattern in CONTROL_TENSOR_NAME_PATTERNS)


def quantize_int8_tensor(t: Tensor) -> tuple[Tensor, Tensor]:
    """Upstream int8: per-row fp16 scales for matrices, else one fp32 scale; clip at the 99.99984th percentile."""
    t32 = t.float()
    if t32.ndim == 2:
        clip = torch.quantile(t32.abs(), INT8_CLIP_Q, dim=1) if t32.numel() else torch.empty(t32.shape[0])
        scale = (clip / 127.0).clamp_min(1.0 / 127.0)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127)
        return q.to(torch.int8).contiguous(), scale.to(torch.float16).contiguous()
    clip = float(torch.quantile(t32.abs().flatten(), INT8_CLIP_Q).item()) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127)
    return q.to(torch.int8).contiguous(), scale


def quantize_rows_clip_search(t32: Tensor, bits: int, clips: tuple[float, ...], asym: bool = False,
                              floor: bool = False, per_tensor: bool = False, tiny: bool = True) -> tuple[Tensor, Tensor]:
    """Per-row levels in [-qmax, qmax] (asym: down to -qmax-1) with fp16 scales, at least 1/qmax with `floor`
    and at least fp16's smallest normal with `tiny`. Each row keeps the clip (|w| quantile, 1.0 = row max)
    with the lowest MSE; with `per_tensor` one clip serves the whole matrix, tried in ascending order."""
    qmax, a = 2 ** (bits - 1) - 1, t32.abs()
    best_q = best_s = best_err = None
    for clip in sorted(clips) if per_tensor else clips:  # per row: the row max (1.0) first, as parse_clip_list
        s = (a.amax(dim=1) if clip == 1.0 else torch.quantile(a, clip, dim=1)) / qmax
        s = (s.clamp_min(1.0 / qmax) if floor else s).to(torch.float16)
        s = s.clamp_min(torch.finfo(torch.float16).tiny) if tiny else s
        q = torch.clamp(torch.round(t32 / s.float()[:, None]), -qmax - int(asym), qmax)
        err = (t32 - q * s.float()[:, None]).pow(2)  # with the fp16 scale that is stored
        if per_tensor:
            if best_err is None or err.mean().item() < best_err:
                best_q, best_s, best_err = q, s, err.mean().item()
            continue
        err = err.mean(dim=1)
        if best_err is not None:  # strictly lower: no row does worse than the row max, tried first
            better = err < best_err
            q, s = torch.where(better[:, None], q, best_q), torch.where(better, s, best_s)
            err = torch.where(better, err, best_err)
        best_q, best_s, best_err = q, s, err
    return best_q.to(torch.int8).contiguous(), best_s.contiguous()


def quant_stats(tensors: dict[str, Tensor], stored: list[Tensor], quantized: int) -> dict:
    """Upstream's export stats: parameters and tensors in, bytes of what is stored."""
    ts = tensors.values()
    return {"param_count": sum(t.numel() for t in ts), "num_tensors": len(ts), "num_float_tensors": quantized,
            "num_nonfloat_tensors": sum(not t.is_floating_point() for t in ts),
            "baseline_tensor_bytes": sum(t.nbytes for t in ts), "int8_payload_bytes": sum(t.nbytes for t in stored)}


def build_quant_obj(state_dict: dict[str, Tensor], fmt: str, choose,
                    keep_max: int = QUANT_KEEP_FLOAT_MAX_NUMEL) -> tuple[dict, dict]:
    """Export object and stats; floats of > keep_max elements go to choose(name, t): (q, scale, bits), or None to keep."""
    obj = {"__quant_format__": fmt, "quantized": {}, "scales": {}, "dtypes": {}, "passthrough": {}, "qmeta": {},
           "passthrough_orig_dtypes": {}, "bits": {}}
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    big = {name for name, t in tensors.items() if t.is_floating_point() and t.numel() > keep_max}
    for name, t in tensors.items():
        kept = choose(name, t) if name in big else None
        if kept is not None:
            q, s, bits = kept
            obj["quantized"][name], obj["scales"][name], obj["bits"][name] = q, s, bits
            obj["dtypes"][name] = str(t.dtype).removeprefix("torch.")
            if s.ndim > 0:
                obj["qmeta"][name] = {"scheme": "per_row", "axis": 0}
            continue
        # Kept: control tensors in fp32, other fp32/bf16 in fp16 with the dtype recorded, the rest as they are.
        if t.is_floating_point() and is_control_tensor(name):
            t = t.float()
        elif t.dtype in (torch.float32, torch.bfloat16):
            obj["passthrough_orig_dtypes"][name] = str(t.dtype).removeprefix("torch.")
            t = t.half()
        obj["passthrough"][name] = t
    stored = [*obj["quantized"].values(), *obj["scales"].values(), *obj["passthrough"].values()]
    stats = quant_stats(tensors, stored, len(big))
    if fmt == QUANT_FORMAT_INT8:
        del obj["bits"]
    # As upstream: qmeta and passthrough_orig_dtypes only when they are not empty.
    return {k: v for k, v in obj.items() if v or k not in ("qmeta", "passthrough_orig_dtypes")}, stats


def quantize_state_dict_int8(state_dict: dict[str, Tensor]) -> tuple[dict, dict]:
    """The upstream baseline export object and its stats."""
    return build_quant_obj(state_dict, QUANT_FORMAT_INT8, lambda name, t: (*quantize_int8_tensor(t), 8))


def dequantize_state_dict_int8(obj: dict) -> dict[str, Tensor]:
    """A state dict from an int8 or mixed export object, each tensor in its original dtype."""
    out: dict[str, Tensor] = {}
    for name, q in obj["quantized"].items():
        s = obj["scales"][name].to(torch.float32)
        s = s.view(q.shape[0], *([1] * (q.ndim - 1))) if s.ndim > 0 else s  # per-row scales
        out[name] = (q.float() * s).to(dtype=getattr(torch, obj["dtypes"][name])).contiguous()
    orig_dtypes = obj.get("passthrough_orig_dtypes", {})
    for name, t in obj["passthrough"].items():
        dtype = getattr(torch, orig_dtypes[name]) if name in orig_dtypes else t.dtype
        out[name] = t.detach().to("cpu", dtype).contiguous()
    return out


def quant_class(name: str) -> str:
    """embed, mlp, attn or other, as the records classify (a non-MLP projection is attention; BigramHash is other)."""
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    return "other" if "bigram" in name else "attn" if ".attn." in name or ".proj." in name else "other"


def parse_clip_list(text: str) -> tuple[float, ...]:
    """"0.9995,0.999" -> (1.0, 0.9995, 0.999): the row max first, duplicates dropped."""
    clips = [float(part) for part in str(text).split(",") if part.strip()]
    bad = [c for c in clips if not 0.0 < c <= 1.0]
    if bad:
        raise ValueError(f"GPTQ_CLIPS entries must be in (0, 1], got {bad[0]}")
    return tuple(dict.fromkeys([1.0, *clips]))


def quantize_state_dict_mixed(args, state_dict: dict[str, Tensor]) -> tuple[dict, dict]:
    """A width per tensor class, stored in the recipe's layout."""
    widths = {"mlp": args.bits_mlp, "attn": args.bits_attn, "embed": args.bits_embed, "other": args.bits_other}
    bad = {k: v for k, v in widths.items() if v not in (5, 6, 8, 16)}
    if bad:
        raise ValueError(f"quantization widths must be one of 5, 6, 8, 16, got {bad}")
    clips, per_tensor = (1.0,), False
    if feature("gptq_lite"):
        if args.gptq_lite:
            clips, per_tensor = parse_clip_list(args.gptq_clips), args.gptq_per_tensor
    upstream_int8 = clips == (1.0,)  # 8 bits: the baseline int8 quantizer, as the records (golf: unless GPTQ-lite)
    if feature("quant_wm"):
        upstream_int8 = upstream_int8 or args.quant_layout in ("wm", "wm_int5")
    if feature("quant_flat"):
        upstream_int8 = upstream_int8 and args.quant_layout != "flat"  # seed 003: its embedding on the row-max grid

    def quantize(name: str, t: Tensor):
        bits = widths[quant_class(name)]
        if bits == 8 and upstream_int8:
            return (*quantize_int8_tensor(t), 8)
        grid = dict(asym=args.asym_grid, floor=args.scale_floor and bits < 8, tiny=args.quant_layout != "flat")
        if t.ndim == 2:
            return (*quantize_rows_clip_search(t.float(), bits, clips, per_tensor=per_tensor, **grid), bits)
        # Other shapes: one scale for the whole tensor (a single "row").
        q, s = quantize_rows_clip_search(t.float().reshape(1, -1), bits, clips, **grid)
        return q.reshape(t.shape), s.reshape(()), bits

    def keep(name: str) -> bool:
        if feature("keep_fp16"):
            if any(p in name for p in args.keep_fp16.split(",") if p):
                return True
        return widths[quant_class(name)] == 16

    if feature("quant_wm"):
        if args.quant_layout in ("wm", "wm_int5"):
            return pack_wm(args, state_dict, quantize, keep)
    if feature("quant_flat"):
        if args.quant_layout == "flat":
            return pack_flat(args, state_dict, quantize, keep)
    if args.quant_layout != "golf":
        raise ValueError(f"QUANT_LAYOUT={args.quant_layout!r} is not built into this script")
    return build_quant_obj(state_dict, QUANT_FORMAT_MIXED, lambda name, t: None if keep(name) or is_control_tensor(
        name) else quantize(name, t), args.keep_float_max)


def pack_wm(args, state_dict: dict[str, Tensor], quantize, keep) -> tuple[dict, dict]:
    """Seeds 000-002: {"w": tensors, "m": name -> passthrough[_ctrl|_fp16] or {"type": "int<b>"}}, in state-dict order."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items()}
    w, m, quantized = {}, {}, 0
    for name, t in tensors.items():
        if not t.is_floating_point() or t.numel() <= args.keep_float_max:  # small floats in fp16, control too
            w[name], m[name] = (t.to(torch.float16) if t.is_floating_point() else t), "passthrough"
        elif is_control_tensor(name):
            w[name], m[name] = t.float(), "passthrough_ctrl"
        elif keep(name):
            w[name], m[name] = t.to(torch.float16).contiguous(), "passthrough_fp16"
        else:
            w[name + ".q"], w[name + ".scale"], bits = quantize(name, t)
            # Byte-exact pickles: the int5 writer (PR #180) builds each type string, the later one shares constants.
            kind = f"int{bits}" if args.quant_layout == "wm_int5" and bits < 8 else WM_TYPES[bits]
            m[name], quantized = {"type": kind}, quantized + 1
    return {"w": w, "m": m}, quant_stats(tensors, list(w.values()), quantized)


def pack_flat(args, state_dict: dict[str, Tensor], quantize, keep) -> tuple[dict, dict]:
    """Seed 003's mixed_v1: small and control floats in fp16, name.__q / .__scale / .__dtype, the format last."""
    tensors = {name: t.detach().cpu() for name, t in state_dict.items()}
    out, quantized = {}, 0
    for name, t in tensors.items():
        if t.numel() <= args.keep_float_max or not t.is_floating_point():
            out[name] = t.to(torch.float16) if t.is_floating_point() else t
        elif is_control_tensor(name) or keep(name):
            out[name] = t.to(torch.float16).contiguous()
        else:
            out[name + ".__q"], out[name + ".__scale"], _ = quantize(name, t)
            out[name + ".__dtype"], quantized = str(t.dtype), quantized + 1
    out["__quant_format__"] = "mixed_v1"
    return out, quant_stats(tensors, [v for v in out.values() if isinstance(v, Tensor)], quantized)


def dequantize_export(obj: dict) -> dict[str, Tensor]:
    """A state dict (float values; load_state_dict casts them) from any of the export layouts."""
    if feature("gptq"):
        if obj.get("__quant_format__") == QUANT_FORMAT_GPTQ:
            return dequantize_state_dict_gptq(obj)
    if feature("quant_wm"):
        if "m" in obj and "w" in obj:
            w = obj["w"]
            return {name: w[name] if isinstance(how, str) else dequantize_rows(w[name + ".q"], w[name + ".scale"])
                    for name, how in obj["m"].items()}
    if feature("quant_flat"):
        if obj.get("__quant_format__") == "mixed_v1":
            out = {}
            for key, v in obj.items():
                if key.endswith(".__q"):
                    out[key[:-4]] = dequantize_rows(v, obj[key[:-4] + ".__scale"])
                elif not key.endswith((".__scale", ".__dtype")) and key != "__quant_format__":
                    out[key] = v
            return out
    return dequantize_state_dict_int8(obj)


def dequantize_rows(q: Tensor, s: Tensor) -> Tensor:
    return q.float() * (s.float().view(q.shape[0], *([1] * (q.ndim - 1))) if s.ndim > 0 else s.float())


def quantize_for_export(args, state_dict: dict[str, Tensor], hessians: dict | None = None) -> tuple[dict, dict]:
    if feature("gptq"):
        if args.gptq:
            return quantize_state_dict_gptq(args, state_dict, hessians)
    if feature("mixed_quant"):
        if args.quant_scheme == "mixed":
            return quantize_state_dict_mixed(args, state_dict)
        if args.quant_scheme != "int8":
            raise ValueError(f"QUANT_SCHEME must be int8 or mixed, got {args.quant_scheme!r}")
    if feature("gptq_lite"):
        if args.gptq_lite:
            raise ValueError("GPTQ-lite needs export.quant: mixed (bits 8 everywhere for an int8 clip search)")
    return quantize_state_dict_int8(state_dict)


def prune_eligible(name: str, t: Tensor) -> bool:
    """The matrices that get quantized: 2-D floats of > 65,536 elements, control tensors excluded."""
    big = t.is_floating_point() and t.ndim == 2 and t.numel() > QUANT_KEEP_FLOAT_MAX_NUMEL
    return big and not is_control_tensor(name)


def prune_state_dict(state_dict: dict[str, Tensor], frac: float) -> tuple[dict[str, Tensor], int]:
    """Copy with each eligible matrix's |w| below its frac-quantile of |w| zeroed (seeds 000, 001); the count."""
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"PRUNE_FRAC must be in [0, 1), got {frac}")
    out, pruned = {}, 0
    for name, t in state_dict.items():
        if frac > 0 and prune_eligible(name, t):
            t = t.detach().to("cpu")
            small = t.abs() < torch.quantile(t.abs().float(), frac)
            t, pruned = t.masked_fill(small, 0.0), pruned + int(small.sum())
        out[name] = t
    return out, pruned


def import_zstandard():
    try:
        import zstandard
    except ImportError as exc:
        raise RuntimeError("COMPRESSOR=zstd needs the 'zstandard' module, which is not installed: "
                           "pip install zstandard (and list it in requirements.txt)") from exc
    return zstandard


def compress_bytes(args, raw: bytes) -> bytes:
    if args.compressor == "zlib":
        return zlib.compress(raw, level=args.compress_level)
    if feature("zstd"):
        if args.compressor == "zstd":
            return import_zstandard().ZstdCompressor(level=args.compress_level).compress(raw)
    if feature("lzma"):
        if args.compressor == "lzma":
            return lzma.compress(raw, preset=args.compress_level)
    if feature("brotli"):
        if args.compressor == "brotli":
            return brotli_compress(raw, args.compress_level)
    raise ValueError(f"COMPRESSOR={args.compressor!r} is not available in this script")


def decompress_bytes(args, blob: bytes) -> bytes:
    if args.compressor == "zlib":
        return zlib.decompress(blob)
    if feature("zstd"):
        if args.compressor == "zstd":
            return import_zstandard().ZstdDecompressor().decompress(blob)
    if feature("lzma"):
        if args.compressor == "lzma":
            return lzma.decompress(blob)
    if feature("brotli"):
        if args.compressor == "brotli":
            return brotli_decompress(blob)
    raise ValueError(f"COMPRESSOR={args.compressor!r} is not available in this script")


def export_label(args) -> tuple[str, str]:
    """(size-line label, final-line name), e.g. ("int8+zlib", "int8_zlib")."""
    quant = "int8"
    if feature("mixed_quant"):
        if args.quant_scheme == "mixed":  # the block matrices' width; int5 MLP + int6 attn prints int6, as the records
            bits = {args.bits_mlp, args.bits_attn}
            quant = "fp16" if bits == {16} else f"int{max(bits)}" if len(bits) == 1 or bits <= {5, 6} else "mixed"
    if feature("gptq"):
        if args.gptq:
            quant = f"int{args.matrix_bits}"
    return f"{quant}+{args.compressor}", f"{quant}_{args.compressor}"


def check_export_args(args) -> None:
    """Raise before training for an export that would fail after it: export and import an empty state dict."""
    if feature("brotli"):
        check_compressor(args)
    import_model(args, export_model(args, {})[0])


def export_object(args, state_dict: dict[str, Tensor], hessians: dict | None = None) -> tuple[dict, dict]:
    """(export object, stats) for a state dict: prune, round-trip through int8 (seed 003), quantize.
    `hessians` ({weight name: H}) feed GPTQ when the recipe uses it."""
    if feature("prune"):
        state_dict, pruned = prune_state_dict(state_dict, args.prune_frac)
    else:
        pruned = 0
    if feature("int8_roundtrip"):
        if args.int8_roundtrip:  # the weights that seed 003's mixed export quantized
            back = dequantize_state_dict_int8(quantize_state_dict_int8(state_dict)[0])
            state_dict = {name: back[name] for name in state_dict}  # the model's order, as load_state_dict keeps it
    obj, stats = quantize_for_export(args, state_dict, hessians)
    stats.update(payload_bytes=stats["int8_payload_bytes"], pruned_count=pruned,
                 quant_format=obj.get("__quant_format__", "w/m"))
    return obj, stats


def export_model(args, state_dict: dict[str, Tensor], hessians: dict | None = None) -> tuple[bytes, dict]:
    """(compressed artifact, stats) for a state dict: the export object, torch.save, compress."""
    obj, stats = export_object(args, state_dict, hessians)
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    if feature("byte_shuffle"):
        raw = shuffle_bytes(raw, args.byte_shuffle)
    if feature("pergroup"):
        blob = serialize_pergroup(args, obj) if args.compressor == "pergroup" else compress_bytes(args, raw)
    else:
        blob = compress_bytes(args, raw)
    stats.update(raw_bytes=len(raw), compressed_bytes=len(blob))
    return blob, stats


def import_model(args, blob: bytes) -> dict[str, Tensor]:
    """The state dict (CPU) behind an artifact made by export_model."""
    if feature("pergroup"):
        if args.compressor == "pergroup":
            return dequantize_state_dict_gptq(deserialize_pergroup(blob))
    raw = decompress_bytes(args, blob)
    if feature("byte_shuffle"):
        raw = unshuffle_bytes(raw)
    return dequantize_export(torch.load(io.BytesIO(raw), map_location="cpu"))
