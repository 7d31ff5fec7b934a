"""CaseOps: the lossless case transform, the original-byte sidecar, and val_bpb counted from it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sentencepiece as spm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from packager.caseops import (
    ALLCAPS, CAPNEXT, ESC, TITLE, build_tiny_caseops, decode_caseops, encode_caseops, original_byte_counts,
)
from packager.runtime.bpb import build_sentencepiece_luts, eval_val, target_bytes
from packager.runtime.caseops import load_byte_sidecar
from packager.runtime.data import load_data_shard, load_validation_tokens
from tests.model_helpers import model_optim_args, one_thread  # noqa: F401


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory) -> dict:
    return build_tiny_caseops(tmp_path_factory.mktemp("caseops") / "out", vocab_size=2048, train_tokens=50_000)


def test_transform_examples():
    assert encode_caseops("The NASA iPhone ok") == f"{TITLE}the {ALLCAPS}nasa i{CAPNEXT}phone ok"
    assert encode_caseops(f"a{TITLE}b") == f"a{ESC}{TITLE}b"
    assert decode_caseops(f"{TITLE}the {ALLCAPS}nasa i{CAPNEXT}phone ok") == "The NASA iPhone ok"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZbYé ,.\n" + TITLE + ALLCAPS + CAPNEXT + ESC)), max_size=40))
def test_transform_is_lossless(text):
    assert decode_caseops(encode_caseops(text)) == text


def test_sidecar_counts_the_original_bytes_of_the_validation_text(caseops_data):
    """The proof the issue asks for: the sidecar's total over the validation tokens equals the UTF-8 bytes
    of the text they decode to (tokens -> transformed text -> original text), document by document."""
    data = Path(caseops_data["data_path"])
    sp = spm.SentencePieceProcessor(model_file=caseops_data["tokenizer_path"])
    tokens = np.concatenate([load_data_shard(f).numpy() for f in sorted(data.glob("fineweb_val_0*.bin"))])
    sidecar = np.concatenate([load_data_shard(f).numpy() for f in sorted(data.glob("fineweb_val_bytes_*.bin"))])
    assert tokens.shape == sidecar.shape and int(sidecar.sum()) == caseops_data["val_bytes"]
    starts = np.flatnonzero(tokens == sp.bos_id()).tolist() + [tokens.size]
    total = 0
    for lo, hi in zip(starts[:-1], starts[1:]):
        text = decode_caseops(sp.decode(tokens[lo + 1 : hi].tolist()))
        total += len(text.encode("utf-8"))
        assert int(sidecar[lo:hi].sum()) == len(text.encode("utf-8"))
    assert total == int(sidecar.sum())
    # The transformed text is longer in bytes (3 per operator): counting it would lower val_bpb.
    luts = build_sentencepiece_luts(sp, sp.vocab_size(), torch.device("cpu"))
    t = torch.from_numpy(tokens.astype(np.int64))
    transformed = int(target_bytes(t[:-1], t[1:], luts, 1).sum())
    assert transformed > int(sidecar[1:].sum())
    ops = [sp.piece_to_id(c) for c in (TITLE, ALLCAPS, CAPNEXT, ESC)]
    assert original_byte_counts(sp, ops) == [0, 0, 0, 0] and original_byte_counts(sp, [ops[3], ops[0]]) == [0, 3]


def test_eval_val_counts_sidecar_bytes(caseops_data):
    """eval_val with the sidecar as the fourth table divides by the original bytes of the scored tokens."""
    from packager.runtime.model import GPT

    args = model_optim_args(num_layers=1, model_dim=32, num_heads=2, num_kv_heads=1, vocab_size=2048,
                            train_seq_len=64, val_batch_size=64 * 8, data_path=caseops_data["data_path"])
    val = load_validation_tokens(str(Path(caseops_data["data_path"]) / "fineweb_val_*.bin"), 64)
    sidecar = load_byte_sidecar(args, val, torch.device("cpu"))
    assert val.numel() == sidecar.numel() < caseops_data["val_tokens"] + 1  # the sidecar is not read as tokens
    sp = spm.SentencePieceProcessor(model_file=caseops_data["tokenizer_path"])
    luts = build_sentencepiece_luts(sp, 2048, torch.device("cpu"))
    model = GPT(args)
    loss, bpb = eval_val(args, model, 0, 1, torch.device("cpu"), 8, val, (*luts, sidecar))
    tokens = val.numel() - 1
    assert bpb == pytest.approx(loss / np.log(2) * tokens / int(sidecar[1:].sum().item()), rel=1e-9)
    with pytest.raises(ValueError, match="byte sidecar"):
        load_byte_sidecar(args, torch.zeros(10 ** 7, dtype=torch.int16), torch.device("cpu"))
