"""Artifact compressors of the April records: brotli, byte shuffle, and the per-group pipeline.

Byte shuffle (BYTE_SHUFFLE=k): the serialized bytes regrouped by position modulo k (all first
bytes of each k-byte word, then all second bytes, ...), so the high bytes of fp16 scales and the
int8 levels form long similar runs; stored as b"BSHF", k, then the bytes.

Per-group (COMPRESSOR=pergroup), for a GPTQ export: the int8 levels of the quantized matrices are
grouped by role (blocks.*.attn.c_q, blocks.*.mlp.fc, tok_emb, ...), block by block; the rows of the
"hot" roles are first reordered by a greedy L1 nearest-neighbour walk (the permutation is stored as
uint16), every matrix is written transposed, and each group is compressed with lrzip's ZPAQ back end
(`lrzip -z -L 9`, a system program: apt-get install lrzip). Everything else (scales, LQER factors,
small tensors, the layout) is torch-saved and brotli-compressed. The artifact is b"PGRP", the stream
count and lengths (uint32), then the streams.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import torch

from packager.runtime.features import HP, feature

FEATURES = {
    "brotli": ("brotli compression of the artifact (needs the brotli package)", "compressor in ('brotli', 'pergroup')"),
    "byte_shuffle": ("bytes regrouped by position modulo a stride before compressing", "byte_shuffle > 1"),
    "pergroup": ("per-role groups of int8 levels through lrzip (ZPAQ), the rest through brotli",
                 "compressor == 'pergroup'"),
}

HPARAMS = (
    HP("byte_shuffle", "BYTE_SHUFFLE", "export.byte_shuffle", int, 0, feature="byte_shuffle",
       doc="stride of the byte shuffle before compressing (0 or 1: off)", minimum=0),
)

SHUFFLE_MAGIC = b"BSHF"
PERGROUP_MAGIC = b"PGRP"
# Roles whose rows are reordered by similarity before compressing (the records' choice).
SIMSORT_ROLES = ("tok_emb.weight.q", "attn.c_q.weight.q", "mlp.fc.weight.q")


def need_brotli():
    try:
        import brotli
    except ImportError:
        raise SystemExit("error: COMPRESSOR=brotli/pergroup needs the Python package 'brotli': pip install brotli")
    return brotli


def need_lrzip() -> str:
    path = shutil.which("lrzip")
    if path is None:
        raise SystemExit("error: COMPRESSOR=pergroup needs the lrzip program: apt-get install lrzip")
    return path


def shuffle_bytes(data: bytes, stride: int) -> bytes:
    if stride <= 1 or len(data) < stride:
        return data
    src = np.frombuffer(data, dtype=np.uint8)
    return SHUFFLE_MAGIC + bytes([stride]) + np.concatenate([src[i::stride] for i in range(stride)]).tobytes()


def unshuffle_bytes(data: bytes) -> bytes:
    if data[:4] != SHUFFLE_MAGIC or len(data) < 5:
        return data
    stride, src = data[4], np.frombuffer(data, dtype=np.uint8, offset=5)
    out, pos = np.empty_like(src), 0
    for i in range(stride):
        n = len(out[i::stride])
        out[i::stride] = src[pos : pos + n]
        pos += n
    return out.tobytes()


def brotli_compress(raw: bytes, quality: int, lgwin: int = 22) -> bytes:
    return need_brotli().compress(raw, quality=quality, lgwin=lgwin)


def brotli_decompress(blob: bytes) -> bytes:
    return need_brotli().decompress(blob)


def similarity_order(rows: np.ndarray) -> np.ndarray:
    """Greedy walk from row 0, each step to the nearest unused row in L1 (ties: lowest index)."""
    n = rows.shape[0]
    data, used = rows.astype(np.float32), np.zeros(n, dtype=bool)
    order, cur = [0], 0
    used[0] = True
    for _ in range(n - 1):
        free = np.flatnonzero(~used)
        cur = int(free[np.argmin(np.abs(data[free] - data[cur]).sum(axis=1))])
        used[cur] = True
        order.append(cur)
    return np.asarray(order, dtype=np.uint16)


def lrzip_run(data: bytes, decompress: bool) -> bytes:
    with tempfile.TemporaryDirectory(prefix="pergroup_") as tmp:
        src, dst = os.path.join(tmp, "in"), os.path.join(tmp, "out")
        with open(src, "wb") as f:
            f.write(data)
        flags = ["-d", "-f"] if decompress else ["-z", "-L", "9"]
        subprocess.run([need_lrzip(), "-q", *flags, "-o", dst, src], check=True, capture_output=True)
        with open(dst, "rb") as f:
            return f.read()


def pack_streams(streams: list[bytes]) -> bytes:
    head = PERGROUP_MAGIC + struct.pack("<I", len(streams)) + b"".join(struct.pack("<I", len(s)) for s in streams)
    return head + b"".join(streams)


def unpack_streams(blob: bytes) -> list[bytes]:
    if blob[:4] != PERGROUP_MAGIC:
        raise ValueError("not a per-group artifact (no PGRP header)")
    n = struct.unpack("<I", blob[4:8])[0]
    lengths = struct.unpack(f"<{n}I", blob[8 : 8 + 4 * n])
    out, pos = [], 8 + 4 * n
    for length in lengths:
        out.append(blob[pos : pos + length])
        pos += length
    return out


def group_role(name: str) -> str:
    """'blocks.3.attn.c_q.weight.q' -> 'attn.c_q.weight.q'; top-level names stay."""
    parts = name.split(".")
    return ".".join(parts[2:]) if parts[0] == "blocks" and parts[1].isdigit() else name


def serialize_pergroup(args, obj: dict) -> bytes:
    """A GPTQ export object as per-role lrzip streams, the remainder through brotli, and the permutations."""
    if "kinds" not in obj:
        raise ValueError("COMPRESSOR=pergroup packs a GPTQ export: set GPTQ_ENABLED=1 (export.gptq: true)")
    groups: dict[str, list[str]] = {}
    rest = dict(obj["tensors"])
    for name, t in obj["tensors"].items():
        if name.endswith(".q") and t.dtype == torch.int8 and t.ndim == 2 and obj["kinds"][name[:-2]][:4] in ("gptq", "rtn"):
            groups.setdefault(group_role(name), []).append(name)
            del rest[name]
    layout, streams, perms = {}, [], []
    for role in sorted(groups):
        names = sorted(groups[role], key=lambda n: [int(p) if p.isdigit() else p for p in n.split(".")])
        layout[role] = [(n, tuple(obj["tensors"][n].shape)) for n in names]
        parts = []
        for n in names:
            arr = obj["tensors"][n].numpy()
            if role in SIMSORT_ROLES:
                order = similarity_order(arr)
                perms.append(order.tobytes())
                arr = arr[order]
            parts.append(np.ascontiguousarray(arr.T).tobytes())
        streams.append(lrzip_run(b"".join(parts), decompress=False))
    buf = io.BytesIO()
    torch.save({k: v for k, v in obj.items() if k != "tensors"} | {"tensors": rest, "layout": layout}, buf)
    streams.append(brotli_compress(buf.getvalue(), 11, lgwin=24))
    streams.append(brotli_compress(b"".join(perms), 11) if perms else b"")
    return pack_streams(streams)


def deserialize_pergroup(blob: bytes) -> dict:
    streams = unpack_streams(blob)
    obj = torch.load(io.BytesIO(brotli_decompress(streams[-2])), map_location="cpu")
    perms = np.frombuffer(brotli_decompress(streams[-1]), dtype=np.uint16) if streams[-1] else np.zeros(0, np.uint16)
    layout, tensors, perm_pos = obj.pop("layout"), obj["tensors"], 0
    for role, stream in zip(sorted(layout), streams[:-2]):
        data, pos = np.frombuffer(lrzip_run(stream, decompress=True), dtype=np.int8), 0
        for name, (rows, cols) in layout[role]:
            arr = data[pos : pos + rows * cols].reshape(cols, rows).T
            pos += rows * cols
            if role in SIMSORT_ROLES:
                order = perms[perm_pos : perm_pos + rows].astype(np.int64)
                perm_pos += rows
                arr = arr[np.argsort(order)]
            tensors[name] = torch.from_numpy(np.ascontiguousarray(arr))
    return obj


def check_compressor(args) -> None:
    """Fail at start, not after training, when the artifact's compressor is not installed."""
    if feature("brotli"):
        if args.compressor in ("brotli", "pergroup"):
            need_brotli()
    if feature("pergroup"):
        if args.compressor == "pergroup":
            need_lrzip()
