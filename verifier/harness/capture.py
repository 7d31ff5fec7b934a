"""Reading what the harness captured inside a run (inject/_golf_cpu.py) and placing every captured
row at a validation position.

A row is a window: its targets are consecutive validation tokens. A row is located by its first
k-gram of targets (k = 4, 3 for vocabularies over 8192; a random validation split holds each k-gram
once), and its targets keep that position for as long as they continue the validation tokens; what
follows a break (a wrapped or padded tail that puts earlier tokens after new context) is not placed,
because its context is not the validation prefix. A row shorter than k (the last few targets of a
document or chunk scored on their own) is placed where it continues the row before it on the same
rank, if its targets are the validation tokens there. Each placed score has a position p (index of the
predicted token in the validation split) and a window start w (the first input token's position):
the key (p, w) names the same computation in two runs.

Calls are grouped by the printed figure they feed: a line with `val_loss:` (rank 0) closes the group
of the calls before it; other ranks' calls are ordered against it by the number of collectives each
rank had completed (a figure is printed after the collective that summed it)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Call", "Figure", "Capture", "Placed", "Scores", "load_capture", "place", "scores", "PositionIndex", "capturing"]

_FIGURE = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?(?P<name>\S{1,120}).*?\bval_loss[:=]\s*"
                     r"(?P<loss>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")


@dataclass
class Call:
    rank: int
    seq: int
    epoch: int
    kind: str
    reduction: str
    grad: bool
    site: str
    rows: int
    shape: tuple[int, int]
    offset: int
    dtype: str
    width: int = 0  # the row's length: the vocabulary the distribution spans
    figure: int | None = None  # index into Capture.figures of the figure it feeds

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.epoch, self.rank, self.seq)


@dataclass
class Figure:
    name: str
    val_loss: float
    decimals: int
    text: str
    seq: int
    epoch: int


@dataclass
class Capture:
    calls: list[Call]
    figures: list[Figure]
    arrays: dict[int, dict[str, np.ndarray]]  # rank -> target, nll, fp, lse
    lse_offset: dict[tuple[int, int], int]  # (rank, seq) -> offset into that rank's lse rows
    skipped: dict[str, int] = field(default_factory=dict)
    ranks: int = 0

    def target(self, c: Call) -> np.ndarray:
        return self.arrays[c.rank]["target"][c.offset : c.offset + c.rows]

    def nll(self, c: Call) -> np.ndarray:
        return self.arrays[c.rank]["nll"][c.offset : c.offset + c.rows]

    def fp(self, c: Call) -> np.ndarray:
        return self.arrays[c.rank]["fp"][c.offset : c.offset + c.rows]

    def lse(self, c: Call) -> np.ndarray | None:
        start = self.lse_offset.get((c.rank, c.seq))
        return None if start is None else self.arrays[c.rank]["lse"][start : start + c.rows]


def load_capture(folder: Path, nproc: int) -> tuple[Capture | None, str | None]:
    """(capture, None) or (None, why it cannot be read)."""
    calls, figures, arrays, lse_offset, skipped = [], [], {}, {}, {}
    for rank in range(nproc):
        meta_path, data_path = folder / f"capture_rank{rank}.json", folder / f"capture_rank{rank}.npz"
        if not meta_path.is_file() or not data_path.is_file():
            return None, f"rank {rank} wrote no capture (capture_rank{rank}.json/.npz)"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            with np.load(data_path) as z:
                arrays[rank] = {k: z[k] for k in ("target", "nll", "fp", "lse")}
        except (OSError, ValueError, KeyError) as exc:
            return None, f"rank {rank}'s capture is unreadable: {exc}"
        for k, v in meta.get("skipped", {}).items():
            skipped[k] = skipped.get(k, 0) + int(v)
        lse_at = 0
        for rec in meta.get("records", []):
            if rec.get("kind") == "line":
                m = _FIGURE.match(rec.get("text", "")) if rank == 0 else None
                if m:
                    loss = m.group("loss")
                    figures.append(Figure(m.group("name").rstrip(":"), float(loss),
                                          len(loss.split(".")[1]) if "." in loss else 0, rec["text"], rec["seq"],
                                          rec["epoch"]))
                continue
            call = Call(rank, rec["seq"], rec["epoch"], rec["kind"], rec.get("reduction", "mean"), bool(rec["grad"]),
                        rec.get("site", "?"), int(rec["rows"]), tuple(rec["shape"]), int(rec["offset"]),
                        rec.get("dtype", "?"), int(rec.get("width", 0)))
            if rec.get("lse"):
                lse_offset[(rank, call.seq)] = lse_at
                lse_at += call.rows
            calls.append(call)
    cap = Capture(calls, figures, arrays, lse_offset, skipped, nproc)
    _assign_figures(cap)
    return cap, None


def _assign_figures(cap: Capture) -> None:
    """Each call feeds the first figure printed after it (rank 0: by sequence; other ranks: by the
    collectives completed, a figure's sum being the last collective before its line)."""
    for call in cap.calls:
        for i, fig in enumerate(cap.figures):
            if (call.seq < fig.seq) if call.rank == 0 else (call.epoch < fig.epoch):
                call.figure = i
                break


class PositionIndex:
    """Where each k-gram of the validation tokens starts (k-grams that occur more than once are left out)."""

    def __init__(self, tokens: np.ndarray):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        vocab = int(self.tokens.max(initial=0)) + 1
        self.k = 4 if vocab <= 8192 else 3
        self.base = vocab
        keys = self._keys(self.tokens)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        unique = np.ones(len(sorted_keys), dtype=bool)
        if len(sorted_keys) > 1:
            dup = sorted_keys[1:] == sorted_keys[:-1]
            unique[1:] &= ~dup
            unique[:-1] &= ~dup
        self.keys, self.starts = sorted_keys[unique], order[unique]

    def _keys(self, t: np.ndarray) -> np.ndarray:
        n = len(t) - self.k + 1
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        key = np.zeros(n, dtype=np.int64)
        for j in range(self.k):
            key = key * self.base + t[j : j + n]
        return key

    def lookup(self, grams: np.ndarray) -> np.ndarray:
        """Start position of each key in the validation tokens, -1 where none (or ambiguous)."""
        i = np.searchsorted(self.keys, grams)
        i = np.minimum(i, max(len(self.keys) - 1, 0))
        hit = (len(self.keys) > 0) & (self.keys[i] == grams) if len(self.keys) else np.zeros(len(grams), bool)
        return np.where(hit, self.starts[i] if len(self.keys) else -1, -1)


@dataclass
class Placed:
    """Placed scores of one call: row-major positions p, window starts w (both -1 where not placed)."""

    position: np.ndarray
    window: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.position >= 0


def place(index: PositionIndex, targets: np.ndarray, shape: tuple[int, int], after: int | None = None) -> Placed:
    """Each row located by its first unique k-gram; a row shorter than k where it continues position
    `after` (the last position the row before it scored)."""
    n = len(targets)
    b, t = shape if shape[0] * shape[1] == n else (1, n)
    rows = np.asarray(targets, dtype=np.int64).reshape(b, t)
    pos = np.full((b, t), -1, dtype=np.int64)
    win = np.full((b, t), -1, dtype=np.int64)
    k = index.k
    if t >= k and len(index.tokens) >= k:
        valid = rows >= 0
        key = np.zeros((b, t - k + 1), dtype=np.int64)
        ok = np.ones((b, t - k + 1), dtype=bool)
        for j in range(k):
            key = key * index.base + np.where(valid[:, j : j + t - k + 1], rows[:, j : j + t - k + 1], 0)
            ok &= valid[:, j : j + t - k + 1]
        start = np.where(ok, index.lookup(key.reshape(-1)).reshape(key.shape), -1)
        found = start >= 0
        has = found.any(axis=1)
        first = np.argmax(found, axis=1)  # first located k-gram of each row
        offset = start[np.arange(b), first] - first  # validation position of the row's column 0
        cols = np.arange(t)[None, :]
        want = offset[:, None] + cols
        inside = (want >= 0) & (want < len(index.tokens))
        same = inside & (rows == index.tokens[np.clip(want, 0, len(index.tokens) - 1)])
        after = cols >= first[:, None]
        broken = np.logical_or.accumulate(after & ~same, axis=1)  # from the first break on, nothing is placed
        keep = has[:, None] & after & same & ~broken & (want >= 1)
        pos = np.where(keep, want, -1)
        win = np.where(keep, (offset - 1)[:, None] + 0 * cols, -1)
    _continue_short_rows(index, rows, pos, win, after)
    return Placed(pos.reshape(-1), win.reshape(-1))


def _continue_short_rows(index: PositionIndex, rows: np.ndarray, pos: np.ndarray, win: np.ndarray,
                         after: int | None) -> None:
    """Place in `pos`/`win` (in place) each unplaced row of fewer than k valid targets (a prefix of the row) that
    continues the row before it: its targets are the validation tokens right after that row's last position."""
    tokens = index.tokens
    for r in range(rows.shape[0]):
        valid = int(np.argmin(rows[r] >= 0)) if (rows[r] < 0).any() else rows.shape[1]
        start = None if after is None else after + 1
        if (pos[r] < 0).all() and 0 < valid < index.k and (rows[r, valid:] < 0).all() and start is not None \
                and start + valid <= len(tokens) and np.array_equal(rows[r, :valid], tokens[start : start + valid]):
            pos[r, :valid] = np.arange(start, start + valid)
            win[r, :valid] = start - 1
        placed = pos[r][pos[r] >= 0]
        after = int(placed[-1]) if len(placed) else None



@dataclass
class Scores:
    """Every placed score of one capture, in the order computed (calls by epoch, rank, sequence): arrays over
    entries."""

    position: np.ndarray
    window: np.ndarray
    nll: np.ndarray
    fp: np.ndarray  # (n, 2)
    call: np.ndarray  # index into capture.calls
    lse: np.ndarray  # NaN where the row was logits (cross_entropy)


def scores(cap: Capture, tokens: np.ndarray) -> Scores:
    index = PositionIndex(tokens)
    parts = {k: [] for k in ("position", "window", "nll", "fp", "call", "lse")}
    last: dict[int, int | None] = {}  # rank -> last position its previous row scored
    for i, call in sorted(enumerate(cap.calls), key=lambda ic: ic[1].order):
        placed = place(index, cap.target(call), call.shape, last.get(call.rank))
        keep = placed.mask
        last[call.rank] = int(placed.position[keep][-1]) if keep.any() else None
        if not keep.any():
            continue
        parts["position"].append(placed.position[keep])
        parts["window"].append(placed.window[keep])
        parts["nll"].append(cap.nll(call)[keep])
        parts["fp"].append(cap.fp(call)[keep])
        parts["call"].append(np.full(int(keep.sum()), i))
        lse = cap.lse(call)
        parts["lse"].append(lse[keep] if lse is not None else np.full(int(keep.sum()), np.nan, dtype=np.float32))
    if not parts["position"]:
        empty = np.zeros(0, dtype=np.int64)
        return Scores(empty, empty, np.zeros(0, np.float32), np.zeros((0, 2), np.float32), empty,
                       np.zeros(0, np.float32))
    return Scores(*(np.concatenate(parts[k]) for k in ("position", "window", "nll", "fp", "call", "lse")))

def _inject_module():
    """The harness's in-subprocess module (inject/_golf_cpu.py), loaded by path."""
    name = "_golf_cpu"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("inject") / "_golf_cpu.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def capturing(folder: Path, rank: int = 0):
    """Capture in this process the scores computed inside the block, as the harness captures them in a
    run (no device shims); `capture.line(text)` records a printed line. Written to `folder` on exit:
    `load_capture(folder, ranks)` reads it back."""
    import torch

    golf = _inject_module()
    capture = golf.Capture(torch, str(folder), rank)
    with golf.capture_mode(torch, capture):
        yield capture
    capture.write()
