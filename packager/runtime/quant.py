"""Export: quantize the trained weights, serialize, compress, and load them back.

The baseline format is upstream's `int8_clean_per_row_v1`: per-row int8 with fp16 row scales
for matrices (clip at the 99.99984th percentile of |w| per row), one fp32 scale for other
large tensors, float tensors of at most 65,536 elements kept (control tensors in fp32, the rest
in fp16 with the original dtype recorded), non-floats as they are; torch.save, then zlib 9.

The "mixed" scheme (`mixed_per_row_v1`, same layout plus a `bits` map) picks a width per
tensor class: mlp (`.mlp.`), attn (`.attn.`), embed (`tok_emb`, `lm_head`), other. Widths 5 and
6 are symmetric per-row levels in [-(2^(b-1)-1), 2^(b-1)-1] stored in int8 with fp16 scales,
the row max as the clip (the int5-MLP record); 8 is the baseline int8 quantizer; 16 keeps the
tensor in fp16. GPTQ-lite tries several clips per row and keeps the one with the lowest
reconstruction MSE. Pruning zeroes the smallest |w| of each large matrix before quantizing.

Labels: "int8" for the baseline; for "mixed" the width of the block matrices: "int{b}" when
mlp and attn share b ("fp16" for 16), "int6" for an int5/int6 mix (what the int5-MLP records
print), "mixed" otherwise; then "+<compressor>" for size lines, "_<compressor>" for final lines.
"""

from __future__ import annotations

import io
import zlib

import torch
from torch import Tensor

from packager.runtime.features import HP, feature
from packager.runtime.model import CONTROL_TENSOR_NAME_PATTERNS

FEATURES = {
    "mixed_quant": ("per-class bit widths (int5/int6/int8/fp16) for mlp, attn, embed and other weights",
                    "quant_scheme == 'mixed'"),
    "gptq_lite": ("per-row clip search: keep the clip ratio with the lowest reconstruction MSE", "gptq_lite"),
    "prune": ("zero the smallest-|w| fraction of every large matrix before quantizing", "prune_frac > 0"),
    "zstd": ("zstandard compression of the artifact (needs the zstandard package)", "compressor == 'zstd'"),
    "lzma": ("lzma (xz) compression of the artifact", "compressor == 'lzma'"),
}

HPARAMS = (
    HP("compressor", "COMPRESSOR", "export.compressor", str, "zlib", choices=("zlib", "zstd", "lzma"),
       doc="artifact compressor; a missing module is an error, never a fallback"),
    HP("compress_level", "COMPRESS_LEVEL", "export.compress_level", int, 9,
       doc="zlib level 0-9, zstd level 1-22, lzma preset 0-9"),
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
    HP("prune_frac", "PRUNE_FRAC", "export.prune_frac", float, 0.0, feature="prune", minimum=0.0,
       doc="fraction of each 2-D float matrix of > 65,536 elements zeroed by magnitude"),
)

QUANT_FORMAT_INT8 = "int8_clean_per_row_v1"
QUANT_FORMAT_MIXED = "mixed_per_row_v1"
QUANT_KEEP_FLOAT_MAX_NUMEL = 65_536
INT8_CLIP_Q = 99.99984 / 100.0
QUANT_BITS_CHOICES = (5, 6, 8, 16)
QUANT_STAT_KEYS = ("param_count", "num_tensors", "num_float_tensors", "num_nonfloat_tensors",
                   "baseline_tensor_bytes", "int8_payload_bytes")


def quant_tensor_bytes(t: Tensor) -> int:
    return int(t.numel()) * int(t.element_size())


def dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def is_control_tensor(name: str) -> bool:
    return any(pattern in name for pattern in CONTROL_TENSOR_NAME_PATTERNS)


def keep_as_float(name: str, t: Tensor, orig_dtypes: dict[str, str]) -> Tensor:
    """Control tensors stay fp32; other fp32/bf16 tensors are stored in fp16 and the original
    dtype is recorded so that loading restores it."""
    if is_control_tensor(name):
        return t.float().contiguous()
    if t.dtype in (torch.float32, torch.bfloat16):
        orig_dtypes[name] = dtype_name(t)
        return t.to(dtype=torch.float16).contiguous()
    return t


def quantize_int8_tensor(t: Tensor) -> tuple[Tensor, Tensor]:
    """Upstream int8: matrices per row (fp16 scales), anything else one fp32 scale; the clip
    is the 99.99984th percentile of |w|, so rare outliers do not widen the grid."""
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


def quantize_rows_clip_search(t32: Tensor, bits: int, clips: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    """Symmetric per-row quantization to [-qmax, qmax], qmax = 2^(bits-1)-1, fp16 row scales.

    Each clip is a quantile of the row's |w| (1.0: the row max). The error is measured with
    the fp16 scale that is stored, and a row keeps the first clip with the lowest MSE, so
    with (1.0,) first no row does worse than the plain max clip."""
    qmax = 2 ** (bits - 1) - 1
    a = t32.abs()
    candidates = [a.amax(dim=1)]
    lower = [c for c in clips if c < 1.0]
    if lower:
        candidates += list(torch.quantile(a, torch.tensor(lower, dtype=torch.float32), dim=1))
    best_q = best_s = best_err = None
    for clip in candidates:
        s = (clip / qmax).to(torch.float16).clamp_min(torch.finfo(torch.float16).tiny)
        q = torch.clamp(torch.round(t32 / s.float()[:, None]), -qmax, qmax)
        err = (t32 - q * s.float()[:, None]).pow(2).mean(dim=1)
        if best_err is None:
            best_q, best_s, best_err = q, s, err
            continue
        better = err < best_err
        best_q = torch.where(better[:, None], q, best_q)
        best_s = torch.where(better, s, best_s)
        best_err = torch.where(better, err, best_err)
    return best_q.to(torch.int8).contiguous(), best_s.contiguous()


def build_quant_obj(state_dict: dict[str, Tensor], fmt: str, choose) -> tuple[dict, dict]:
    """Walk a state dict in order. Non-floats and float tensors of at most 65,536 elements pass
    through; for larger floats `choose(name, t, orig_dtypes)` returns a Tensor to store as is,
    or (q, scale, bits)."""
    quantized, scales, dtypes, passthrough = {}, {}, {}, {}
    orig_dtypes, qmeta, bits_map = {}, {}, {}
    stats = dict.fromkeys(QUANT_STAT_KEYS, 0)
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        stats["param_count"] += int(t.numel())
        stats["num_tensors"] += 1
        stats["baseline_tensor_bytes"] += quant_tensor_bytes(t)
        if not t.is_floating_point():
            stats["num_nonfloat_tensors"] += 1
            kept = t
        elif t.numel() <= QUANT_KEEP_FLOAT_MAX_NUMEL:
            kept = keep_as_float(name, t, orig_dtypes)
        else:
            stats["num_float_tensors"] += 1
            kept = choose(name, t, orig_dtypes)
        if isinstance(kept, Tensor):
            passthrough[name] = kept
            stats["int8_payload_bytes"] += quant_tensor_bytes(kept)
            continue
        q, s, bits = kept
        if s.ndim > 0:
            qmeta[name] = {"scheme": "per_row", "axis": 0}
        quantized[name], scales[name], dtypes[name], bits_map[name] = q, s, dtype_name(t), bits
        stats["int8_payload_bytes"] += quant_tensor_bytes(q) + quant_tensor_bytes(s)
    obj = {"__quant_format__": fmt, "quantized": quantized, "scales": scales, "dtypes": dtypes,
           "passthrough": passthrough}
    if qmeta:
        obj["qmeta"] = qmeta
    if orig_dtypes:
        obj["passthrough_orig_dtypes"] = orig_dtypes
    if fmt != QUANT_FORMAT_INT8:
        obj["bits"] = bits_map
    return obj, stats


def quantize_state_dict_int8(state_dict: dict[str, Tensor]) -> tuple[dict, dict]:
    """The upstream baseline export object and its stats."""
    return build_quant_obj(state_dict, QUANT_FORMAT_INT8, lambda name, t, od: (*quantize_int8_tensor(t), 8))


def dequantize_state_dict_int8(obj: dict) -> dict[str, Tensor]:
    """A state dict from an int8 or mixed export object, each tensor in its original dtype."""
    if obj.get("__quant_format__") not in (QUANT_FORMAT_INT8, QUANT_FORMAT_MIXED):
        raise ValueError(f"unknown quantized format {obj.get('__quant_format__')!r}")
    out: dict[str, Tensor] = {}
    for name, q in obj["quantized"].items():
        s = obj["scales"][name].to(torch.float32)
        if s.ndim > 0:
            s = s.view(q.shape[0], *([1] * (q.ndim - 1)))
        out[name] = (q.float() * s).to(dtype=getattr(torch, obj["dtypes"][name])).contiguous()
    orig_dtypes = obj.get("passthrough_orig_dtypes", {})
    for name, t in obj["passthrough"].items():
        t = t.detach().to("cpu").contiguous()
        if name in orig_dtypes:
            t = t.to(dtype=getattr(torch, orig_dtypes[name])).contiguous()
        out[name] = t
    return out


def quant_class(name: str) -> str:
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name:
        return "attn"
    return "other"


def parse_clip_list(text: str) -> tuple[float, ...]:
    """"0.9995,0.999" -> (1.0, 0.9995, 0.999): the row max first, duplicates dropped."""
    clips = [1.0]
    for part in str(text).split(","):
        if part.strip():
            c = float(part)
            if not 0.0 < c <= 1.0:
                raise ValueError(f"GPTQ_CLIPS entries must be in (0, 1], got {c}")
            if c not in clips:
                clips.append(c)
    return tuple(clips)


def quantize_state_dict_mixed(args, state_dict: dict[str, Tensor]) -> tuple[dict, dict]:
    """The mixed export object: a width per tensor class. Width 8 without a clip search is the
    baseline int8 quantizer, as in the records that mix int8 embeddings with int5/int6 blocks."""
    widths = {"mlp": args.bits_mlp, "attn": args.bits_attn, "embed": args.bits_embed, "other": args.bits_other}
    bad = {k: v for k, v in widths.items() if v not in QUANT_BITS_CHOICES}
    if bad:
        raise ValueError(f"quantization widths must be one of {QUANT_BITS_CHOICES}, got {bad}")
    clips = (1.0,)
    if feature("gptq_lite"):
        if args.gptq_lite:
            clips = parse_clip_list(args.gptq_clips)

    def choose(name: str, t: Tensor, orig_dtypes: dict[str, str]):
        bits = widths[quant_class(name)]
        if bits == 16 or is_control_tensor(name):
            return keep_as_float(name, t, orig_dtypes)
        if bits == 8 and clips == (1.0,):
            return (*quantize_int8_tensor(t), 8)
        if t.ndim == 2:
            return (*quantize_rows_clip_search(t.float(), bits, clips), bits)
        # Other shapes: one scale for the whole tensor (a single "row").
        q, s = quantize_rows_clip_search(t.float().reshape(1, -1), bits, clips)
        return q.reshape(t.shape), s.reshape(()), bits

    return build_quant_obj(state_dict, QUANT_FORMAT_MIXED, choose)


def quantize_for_export(args, state_dict: dict[str, Tensor]) -> tuple[dict, dict]:
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
    return t.is_floating_point() and t.ndim == 2 and t.numel() > QUANT_KEEP_FLOAT_MAX_NUMEL and not is_control_tensor(name)


def prune_state_dict(state_dict: dict[str, Tensor], frac: float) -> tuple[dict[str, Tensor], int]:
    """Copy of the state dict with floor(frac * numel) smallest-|w| entries of every eligible
    matrix set to zero (ties by position, so the count is exact); the total zeroed."""
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"PRUNE_FRAC must be in [0, 1), got {frac}")
    out, pruned = {}, 0
    for name, t in state_dict.items():
        k = int(frac * t.numel()) if prune_eligible(name, t) else 0
        if k > 0:
            flat = t.detach().to("cpu").flatten().clone()
            flat[torch.argsort(flat.abs().float(), stable=True)[:k]] = 0
            t = flat.view(t.shape)
            pruned += k
        out[name] = t
    return out, pruned


def import_zstandard():
    try:
        import zstandard
    except ImportError as exc:
        raise RuntimeError("COMPRESSOR=zstd needs the 'zstandard' module, which is not installed: "
                           "pip install zstandard (and list it in requirements.txt)") from exc
    return zstandard


def import_lzma():
    try:
        import lzma
    except ImportError as exc:
        raise RuntimeError("COMPRESSOR=lzma needs the 'lzma' module, which this Python was built "
                           "without: install liblzma (xz) and rebuild Python, or use zlib/zstd") from exc
    return lzma


def compress_bytes(args, raw: bytes) -> bytes:
    if args.compressor == "zlib":
        return zlib.compress(raw, level=args.compress_level)
    if feature("zstd"):
        if args.compressor == "zstd":
            return import_zstandard().ZstdCompressor(level=args.compress_level).compress(raw)
    if feature("lzma"):
        if args.compressor == "lzma":
            return import_lzma().compress(raw, preset=args.compress_level)
    raise ValueError(f"COMPRESSOR={args.compressor!r} is not available in this script")


def decompress_bytes(args, blob: bytes) -> bytes:
    if args.compressor == "zlib":
        return zlib.decompress(blob)
    if feature("zstd"):
        if args.compressor == "zstd":
            return import_zstandard().ZstdDecompressor().decompress(blob)
    if feature("lzma"):
        if args.compressor == "lzma":
            return import_lzma().decompress(blob)
    raise ValueError(f"COMPRESSOR={args.compressor!r} is not available in this script")


def mixed_label(bits_mlp: int, bits_attn: int) -> str:
    if bits_mlp == bits_attn:
        return "fp16" if bits_mlp == 16 else f"int{bits_mlp}"
    return "int6" if {bits_mlp, bits_attn} <= {5, 6} else "mixed"


def export_label(args) -> tuple[str, str]:
    """(size-line label, final-line name), e.g. ("int8+zlib", "int8_zlib")."""
    quant = "int8"
    if feature("mixed_quant"):
        if args.quant_scheme == "mixed":
            quant = mixed_label(args.bits_mlp, args.bits_attn)
    return f"{quant}+{args.compressor}", f"{quant}_{args.compressor}"


def check_export_args(args) -> None:
    """Raise now, before training, for an export that would fail after it: a missing
    compressor module, a bad level, width or clip list."""
    if decompress_bytes(args, compress_bytes(args, b"check")) != b"check":
        raise RuntimeError(f"COMPRESSOR={args.compressor} does not round-trip")
    quantize_for_export(args, {})
    if feature("prune"):
        prune_state_dict({}, args.prune_frac)


def export_model(args, state_dict: dict[str, Tensor]) -> tuple[bytes, dict]:
    """(compressed artifact, stats) for a state dict: prune, quantize, torch.save, compress."""
    pruned = 0
    if feature("prune"):
        if args.prune_frac > 0:
            state_dict, pruned = prune_state_dict(state_dict, args.prune_frac)
    obj, stats = quantize_for_export(args, state_dict)
    buf = io.BytesIO()
    torch.save(obj, buf)
    raw = buf.getvalue()
    blob = compress_bytes(args, raw)
    stats.update(payload_bytes=stats["int8_payload_bytes"], raw_bytes=len(raw), compressed_bytes=len(blob),
                 pruned_count=pruned, quant_format=obj["__quant_format__"])
    return blob, stats


def import_model(args, blob: bytes) -> dict[str, Tensor]:
    """The state dict (original dtypes, CPU) behind an artifact made by export_model."""
    obj = torch.load(io.BytesIO(decompress_bytes(args, blob)), map_location="cpu")
    return dequantize_state_dict_int8(obj)
