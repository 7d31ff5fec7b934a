"""What a submission JSON claims, read from golf-pack's strict layout or from the many legacy
spellings found in the public records (`mean_val_bpb`, `code_bytes`, `seeds` as an object,
`seed_scores` beside `seeds`, per-seed `bytes_total`, times in seconds or milliseconds)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from verifier.folder import JFloat, SubmissionFile

__all__ = ["SeedClaim", "Claims", "read_claims", "normalise_track", "number_decimals"]


@dataclass
class SeedClaim:
    seed: int
    val_bpb: float | None = None
    val_loss: float | None = None
    artifact_bytes: int | None = None
    artifact_key: str | None = None
    bytes_code: int | None = None
    train_time_ms: float | None = None
    eval_time_ms: float | None = None
    steps: int | None = None
    log: str | None = None


@dataclass
class Claims:
    file: str
    data: dict
    val_bpb: float | None = None
    val_bpb_key: str | None = None
    val_loss: float | None = None
    val_loss_key: str | None = None
    bytes_total: int | None = None
    bytes_total_key: str | None = None
    bytes_code: int | None = None
    bytes_code_key: str | None = None
    seeds: list[int] = field(default_factory=list)
    seed_results: dict[int, SeedClaim] = field(default_factory=dict)
    track: str | None = None
    status: str | None = None
    comparison: dict | None = None


def number_decimals(value: Any) -> int | None:
    """Digits after the decimal point as printed in the JSON (None for integers / non-numbers)."""
    if isinstance(value, JFloat):
        return value.decimals
    if isinstance(value, float):
        text = repr(value)
        return len(text.partition(".")[2]) if "e" not in text else 17
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        as_float = float(value)
    except OverflowError:
        return None
    if not math.isfinite(as_float):
        return None
    return value if isinstance(value, float) else as_float


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10**15:
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and 0 <= value < 1e15:
        return int(value)
    return None


def _seed_key(key: Any) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key if 0 <= key < 10**15 else None
    if isinstance(key, str) and key.strip().isdecimal() and len(key.strip()) < 16:
        return int(key.strip())
    return None


def normalise_track(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    low = value.lower().replace("-", "_")
    if "non_record" in low or "unlimited" in low or "nonrecord" in low:
        return "non_record_16mb"
    if "10min" in low or "10_min" in low:
        return "10min_16mb"
    return None


def _first(data: dict, keys: tuple[str, ...], conv) -> tuple[Any, str | None]:
    for key in keys:
        if key in data:
            value = conv(data[key])
            if value is not None:
                return value, key
    return None, None


def _seed_claim(seed: int, entry: dict) -> SeedClaim:
    claim = SeedClaim(seed=seed)
    claim.val_bpb, _ = _first(entry, ("val_bpb", "bpb", "final_val_bpb"), _num)
    claim.val_loss, _ = _first(entry, ("val_loss", "val_loss_nats", "loss"), _num)
    claim.artifact_bytes, claim.artifact_key = _first(entry, ("artifact_bytes", "bytes_total", "total_bytes"), _int)
    claim.bytes_code, _ = _first(entry, ("bytes_code", "code_bytes"), _int)
    ms, _ = _first(entry, ("train_time_ms",), _num)
    s, _ = _first(entry, ("train_time_s", "train_time_seconds", "wallclock_seconds"), _num)
    claim.train_time_ms = ms if ms is not None else (s * 1000.0 if s is not None else None)
    ms, _ = _first(entry, ("eval_time_ms", "ttt_eval_time_ms"), _num)
    s, _ = _first(entry, ("eval_time_s", "ttt_eval_time_s", "eval_time_seconds"), _num)
    claim.eval_time_ms = ms if ms is not None else (s * 1000.0 if s is not None else None)
    claim.steps, _ = _first(entry, ("steps", "train_steps"), _int)
    log = entry.get("log")
    claim.log = log if isinstance(log, str) else None
    return claim


def read_claims(sub: SubmissionFile) -> Claims | None:
    if sub.data is None:
        return None
    d = sub.data
    c = Claims(file=sub.name, data=d)
    c.val_bpb, c.val_bpb_key = _first(d, ("val_bpb", "mean_val_bpb", "mean_bpb"), _num)
    c.val_loss, c.val_loss_key = _first(d, ("val_loss", "mean_val_loss", "mean_val_loss_nats", "val_loss_nats"), _num)
    c.bytes_total, c.bytes_total_key = _first(d, ("bytes_total", "artifact_bytes", "artifact_size_bytes",
                                                  "artifact_bytes_max"), _int)
    c.bytes_code, c.bytes_code_key = _first(d, ("bytes_code", "code_bytes"), _int)
    c.track = normalise_track(d.get("track"))
    c.status = d.get("status") if isinstance(d.get("status"), str) else None
    c.comparison = d.get("comparison") if isinstance(d.get("comparison"), dict) else None

    per_seed = d.get("seed_results")
    seeds_field = d.get("seeds")
    if not isinstance(per_seed, dict) and isinstance(seeds_field, dict):
        per_seed = seeds_field  # some records key per-seed results under "seeds"
    if isinstance(per_seed, dict):
        for key, entry in list(per_seed.items())[:1000]:
            seed = _seed_key(key)
            if seed is not None and isinstance(entry, dict):
                c.seed_results[seed] = _seed_claim(seed, entry)
    if isinstance(seeds_field, list):
        c.seeds = [s for s in (_seed_key(x) for x in seeds_field[:1000]) if s is not None]
        scores = d.get("seed_scores")
        if isinstance(scores, list) and len(scores) == len(c.seeds) and not c.seed_results:
            for seed, score in zip(c.seeds, scores):
                value = _num(score)
                if value is not None:
                    c.seed_results[seed] = SeedClaim(seed=seed, val_bpb=value)
    elif c.seed_results:
        c.seeds = list(c.seed_results)
    if not c.seeds:
        single = _seed_key(d.get("seed"))
        if single is not None:
            c.seeds = [single]
    return c
