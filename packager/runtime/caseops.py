"""CaseOps scoring: val_bpb over the bytes of the original text, from the validation byte sidecar.

A CaseOps dataset's tokens spell a case-transformed text (packager/caseops.py); its
`fineweb_val_bytes_*.bin` shards hold, per validation token, the UTF-8 bytes of the original text
behind it. With CASEOPS_ENABLED the sidecar, cut like the validation tokens, becomes a fourth
table of `luts`, by position, and every eval path counts bytes from it (bpb.target_bytes).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from packager.runtime.data import glob_shard_files, load_data_shard
from packager.runtime.features import HP

FEATURES = {
    "caseops": ("val_bpb from the original-text byte sidecar of a CaseOps dataset", "caseops_enabled"),
}

HPARAMS = (
    HP("caseops_enabled", "CASEOPS_ENABLED", "data.caseops", bool, False, feature="caseops",
       doc="the dataset is CaseOps-transformed: count val bytes from fineweb_val_bytes_*.bin"),
)


def load_byte_sidecar(args, val_tokens: Tensor, device) -> Tensor:
    """Original bytes of each validation token (int16, on device), aligned with val_tokens."""
    files = glob_shard_files(os.path.join(args.data_path, "fineweb_val_bytes_*.bin"))
    sidecar = torch.cat([load_data_shard(f) for f in files])
    if sidecar.numel() < val_tokens.numel():
        raise ValueError(f"byte sidecar in {args.data_path} has {sidecar.numel()} entries for "
                         f"{val_tokens.numel()} validation tokens")
    return sidecar[: val_tokens.numel()].to(torch.int16).to(device)
