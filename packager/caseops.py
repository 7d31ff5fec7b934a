"""CaseOps: the lossless case transform of the April records' tokenizer, and its byte sidecar.

Transform (`lossless_caps_caseops_v1`), over maximal runs of ASCII letters: a lowercase word stays;
an all-caps word of two or more letters becomes ALLCAPS + the word in lowercase; a capitalized word
TITLE + lowercase; any other mix an optional TITLE, then CAPNEXT before each later capital. The four
operators are private-use characters U+E001..U+E004 (TITLE, ALLCAPS, CAPNEXT, ESC), each one token of
the tokenizer; one of them in the text itself is written ESC + the character. Decoding inverts it.

val_bpb must count the bytes of the original text, not of the transformed one: the sidecar
(`fineweb_val_bytes_NNNNNN.bin`, the shard format, one uint16 per validation token) holds each
token's original UTF-8 bytes: 0 for BOS and for an operator, 3 for an escaped operator character,
and the piece's own bytes otherwise (case changes keep ASCII letters one byte).

`golf-data caseops OUT` builds a tiny CaseOps dataset (tokenizer, shards, sidecar) from the same
Python help texts as `golf-data tiny`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from verifier.tinydata import (
    DEFAULT_SEED, SP_TRAINER_SETTINGS, TinyDataError, encode_documents, shard_bytes, source_documents,
    split_documents, split_shards, train_stream, write_atomic,
)

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)
OPERATOR_BYTES = len(TITLE.encode("utf-8"))


def _alpha(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def encode_caseops(text: str) -> str:
    out, i, n = [], 0, len(text)
    while i < n:
        if not _alpha(text[i]):
            out.append(ESC + text[i] if text[i] in OPERATORS else text[i])
            i += 1
            continue
        j = i
        while j < n and _alpha(text[j]):
            j += 1
        word, low = text[i:j], text[i:j].lower()
        if word == low:
            out.append(word)
        elif len(word) >= 2 and word.isupper():
            out.append(ALLCAPS + low)
        else:
            out.append((TITLE if word[0].isupper() else "") + low[0])
            out.extend(CAPNEXT + c if w.isupper() else c for w, c in zip(word[1:], low[1:]))
        i = j
    return "".join(out)


def decode_caseops(text: str) -> str:
    out, escaped, mode, capnext, in_word, allcaps = [], False, None, False, False, False
    for ch in text:
        if escaped:
            out.append(ch)
            escaped, in_word, allcaps = False, False, False
        elif ch == ESC:
            escaped = True
        elif ch in (TITLE, ALLCAPS):
            mode = ch
        elif ch == CAPNEXT:
            capnext = True
        elif _alpha(ch):
            if not in_word:
                allcaps = mode == ALLCAPS
            upper = (mode is not None and not in_word) or allcaps or capnext
            out.append(ch.upper() if upper else ch)
            mode, capnext, in_word = None, False, True
        else:
            out.append(ch)
            in_word = allcaps = False
    return "".join(out)


def original_byte_counts(sp, ids) -> list[int]:
    """Original-text UTF-8 bytes of each token of a CaseOps-tokenized document (BOS: 0)."""
    counts, escaped = [], False
    for tid in ids:
        tid = int(tid)
        if sp.is_control(tid):
            counts.append(0)
            continue
        piece = sp.id_to_piece(tid)
        if piece in OPERATORS:
            counts.append(OPERATOR_BYTES if escaped else 0)
            escaped = piece == ESC and not escaped
            continue
        escaped = False
        counts.append(1 if sp.is_byte(tid) else len(piece.replace("\u2581", " ").encode("utf-8")))
    return counts


def train_caseops_tokenizer(train_docs: list[str], vocab_size: int, seed: int) -> bytes:
    """BPE on the transformed documents; the operators are single tokens and the normalizer is the
    identity (no whitespace folding), so decoding gives back the text exactly."""
    import sentencepiece as spm

    settings = dict(SP_TRAINER_SETTINGS, normalization_rule_name="identity", remove_extra_whitespaces=False,
                    user_defined_symbols=list(OPERATORS))
    sentences = [p.strip() for doc in train_docs for p in encode_caseops(doc).split("\n\n") if p.strip()]
    spm.set_random_generator_seed(seed)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size,
                                   num_threads=1, minloglevel=2, **settings)
    return buf.getvalue()


def build_tiny_caseops(out_dir: Path, *, vocab_size: int = 8192, seed: int = DEFAULT_SEED,
                       train_tokens: int = 1_200_000, shard_tokens: int = 1 << 18) -> dict:
    """Tokenizer, train/val shards and the validation byte sidecar under out_dir (a new or empty folder)."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TinyDataError(f"{out_dir} is not empty; choose a new folder for the CaseOps dataset")
    train_docs, val_docs = split_documents(source_documents(), 0.2, seed)
    model = train_caseops_tokenizer(train_docs, vocab_size, seed)
    sp = spm.SentencePieceProcessor(model_proto=model)
    if int(sp.vocab_size()) != vocab_size:
        raise TinyDataError(f"the help texts only support a vocabulary of {sp.vocab_size()}, not {vocab_size}")
    val = encode_documents(sp, [encode_caseops(d) for d in val_docs], vocab_size)
    sidecar = np.concatenate([np.asarray(original_byte_counts(sp, doc), dtype=np.uint16) for doc in val])
    train_all, _ = train_stream(encode_documents(sp, [encode_caseops(d) for d in train_docs], vocab_size),
                                train_tokens, seed)
    data = out_dir / "datasets" / f"fineweb10B_sp{vocab_size}_caseops"
    files = {out_dir / "tokenizers" / f"fineweb_{vocab_size}_bpe_caseops.model": model}
    for kind, tokens in (("val", np.concatenate(val)), ("val_bytes", sidecar), ("train", train_all)):
        for i, shard in enumerate(split_shards(tokens, shard_tokens)):
            files[data / f"fineweb_{kind}_{i:06d}.bin"] = shard_bytes(shard)
    for path, blob in files.items():
        write_atomic(path, blob)
    return {"data_path": str(data), "tokenizer_path": str(out_dir / "tokenizers" / f"fineweb_{vocab_size}_bpe_caseops.model"),
            "vocab_size": vocab_size, "val_tokens": int(sidecar.size), "val_bytes": int(sidecar.sum()),
            "train_tokens": int(train_all.size), "docs_val": len(val_docs)}
