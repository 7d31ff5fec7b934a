"""Read a training log as text and summarise what it reports.

`parse_log(text, name=...)` never raises on odd input: anything it cannot interpret ends up in
`LogSummary.problems`. It understands every log family of the public records (early
`step:`/`final_int8_zlib_roundtrip` logs, later `N/M train_loss:` logs with `quantized_*`
finals, ternary/binary/xnor/jepa variants, timestamp-prefixed logs, Hyperparameters blocks,
key=value config lines) and the logs golf-pack's rendered scripts write, including the
closing `golf_result_json:{...}` line.

Only lines that start (after an optional Unix timestamp) with a known prefix and carry literal
numbers count, and a block of echoed script source at the top of a log is skipped, so an
echoed f-string such as `log0(f"final_... val_loss:{x:.4f}")` is never read as a result.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Score", "LogSummary", "parse_log", "seed_from_name", "tokenizer_key"]

# Bounded numbers: a log line can hold anything, and int() of a 5000-digit string raises.
_NUM = r"[-+]?(?:\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})(?:[eE][-+]?\d{1,3})?|[-+]?(?:nan|inf)"
_INT = r"\d{1,15}"

_TS = re.compile(r"^(1\d{9}(?:\.\d{1,6})?) ")
_ECHO_RULE = re.compile(r"^={40,}\s*$")
_SOURCEISH = re.compile(r'^(?:"""|\'\'\'|#|import |from \w|def |class |@|if __name__)')

_LOSS = re.compile(r"\bval_loss[:=]\s?(" + _NUM + r")(?![\w.])", re.I)
_BPB = re.compile(r"\bval_bpb[:=]\s?(" + _NUM + r")(?![\w.])", re.I)
_EVAL_MS = re.compile(r"\b(?:eval_time|time):\s?(" + _INT + r"(?:\.\d{1,6})?)ms\b")
_STRIDE = re.compile(r"\bstride[:=](" + _INT + r")")

_STEP_OLD = re.compile(r"^step:(" + _INT + r")/(" + _INT + r")\b(.*)$")
_STEP_NEW = re.compile(r"^(" + _INT + r")/(" + _INT + r") (.*)$")
_TRAIN_MS = re.compile(r"\b(?:train_time|t):\s?(" + _INT + r")ms\b")
_TRAIN_MIN = re.compile(r"\btrain_time: (" + _INT + r"(?:\.\d{1,6})?)m\b")
_STEP_AVG = re.compile(r"\b(?:step_avg|avg):\s?(" + _INT + r"(?:\.\d{1,6})?)ms\b")

_STOP = re.compile(r"^stopping_early: wallclock_cap train_time:( ?)(" + _INT + r")ms(?: step:\s?(" + _INT + r")/(" + _INT + r"))?")

_SEED_PLAIN = re.compile(r"^seed[:=]\s?(" + _INT + r")\s*$")
_SEED_BLOCK = re.compile(r"^\s+seed:\s(" + _INT + r")\s*$")
_SEED_HPARAM = re.compile(r"^hparam seed=(" + _INT + r")\s*$")
_KV_FIRST = re.compile(r"^[A-Za-z_][\w.]*=")
_KV_TOKEN = re.compile(r"(?:^|\s)([A-Za-z_][\w.]*)=(\S*)")

_CODE = re.compile(r"^Code size(?: \((un)?compressed\))?: (" + _INT + r") bytes")
_OUR_CODE = re.compile(r"^code_sha256:([0-9a-f]{64}) code_bytes:(" + _INT + r")")
_ARTIFACT_CODE = re.compile(r"^artifact:.*\bcode:(" + _INT + r")\b")
_RAW_CODE = re.compile(r"^Raw model: " + _INT + r" bytes \| Code: (" + _INT + r") bytes")
_SCRIPT_SIZE = re.compile(r"^(?:\[\w+\] Script size: (" + _INT + r") bytes|Uploading \S+\.py \((" + _INT + r") bytes\))")
_MB_CODE = re.compile(r"^\s*(\S+): ([\d.]{1,12})MB model \+ ([\d.]{1,12})MB code = ([\d.]{1,12})/([\d.]{1,12})MB")

_TOTAL = re.compile(r"^Total submission size(?: ([^:]{1,80}))?: (" + _INT + r") bytes")
_SERIALIZED = re.compile(r"^Serialized model(?: ([^:]{1,80}))?: (" + _INT + r") bytes")
_BUDGET = re.compile(r"^budget:(" + _INT + r")/(" + _INT + r")\b")
_TOTAL_PIPE = re.compile(r"^(\S{1,40}) model: (" + _INT + r") bytes \| Total submission: (" + _INT + r") bytes")

_RESERVE = re.compile(r"^gptq:reserving (" + _INT + r"(?:\.\d{1,6})?)(ms|s)\b.*?effective=(" + _INT + r")ms")
_HESSIANS_IN = re.compile(r"^(?:GPTQ:collected \d{1,6} Hessians in|gptq:calibrated \d{1,6} layers in|"
                          r"gptq:collected hessians for \d{1,6} layers in|gptq:done in) ([\d.]{1,12})s")
_POST_GPTQ = re.compile(r"^wallclock:post_gptq total_elapsed:([\d.]{1,12})s train_budget:([\d.]{1,12})s")
_TOTAL_EVAL = re.compile(r"^total_eval_time:\s?([\d.]{1,12})s")
_WARMUP_DONE = re.compile(r"compile warmup done \(([\d.]{1,12})s\)")

_VAL_SHARDS = re.compile(r"^val_loader:shards pattern=(\S+) tokens:(" + _INT + r")")
_VAL_TOKENS = re.compile(r"^(?:\s*val_tokens:\s?|val tokens: )(" + _INT + r")\s*$")
_TOKENIZER = re.compile(r"(?:^|\s)tokenizer_path[:=]\s?(\S+)")
_DATASET = re.compile(r"(?:^train_loader:dataset:|\bdatasets?_(?:dir|path)[:=]\s?|(?:^|\s)data_path[:=]\s?)(\S+)")
_VOCAB = re.compile(r"(?:^|\s)vocab_size[:=]\s?(" + _INT + r")\b")

_WORLD = re.compile(r"^\s*world_size[:=]\s?(" + _INT + r")\b")
_GPU_ROW = re.compile(r"^\|\s{1,8}(\d{1,2})\s{1,8}((?:NVIDIA|Tesla) [^|]{0,60}?)\s{2,40}(?:On|Off)\s{1,8}\|")
_TORCH = re.compile(r"^Running PyTorch (\S+)|PyTorch (\S+) device:")
_OUR_DEVICE = re.compile(r"\bdevice:(.+)$")
_HPARAM = re.compile(r"^hparam ([A-Za-z_]\w{0,80})=(.*)$")
_BLOCK_ITEM = re.compile(r"^\s+([A-Za-z_]\w{0,80}): ?(.*)$")

_FILENAME_SEED = (
    re.compile(r"seed[_\-]?(\d{1,12})", re.I),
    re.compile(r"(?:^|[_\-])s(\d{1,12})(?=[_.\-]|$)"),
    re.compile(r"(?:^|_)log_(\d{1,12})\."),
)

# Score lines that are not the submission's final figure.
_DIAGNOSTIC_PREFIXES = ("diagnostic", "pre-quantization", "pre_quantization", "post_ema", "pre_quant")
_FINAL_PREFIXES = ("final", "quantized", "legal_ttt", "ttt_final")

MAX_HPARAMS = 400


@dataclass
class Score:
    """One evaluation line (`final_*`, `quantized_*`, `legal_ttt*`, diagnostics)."""

    family: str
    base: str
    kind: str  # "final" | "diagnostic"
    val_loss: float | None
    val_bpb: float | None
    loss_decimals: int
    bpb_decimals: int
    exact: bool
    eval_time_ms: float | None
    line: int
    ts: float | None = None
    stride: int | None = None


@dataclass
class LogSummary:
    """Everything `parse_log` could read from one log. Line numbers are 1-based."""

    name: str = ""
    lines: int = 0
    seed: int | None = None
    seed_line: int | None = None
    seed_source: str | None = None  # "printed" | "hparams" | "config" | "golf"
    seeds_printed: list[int] = field(default_factory=list)
    filename_seed: int | None = None
    scores: list[Score] = field(default_factory=list)
    final: Score | None = None
    code_bytes: int | None = None
    code_bytes_line: int | None = None
    code_bytes_approx: bool = False
    code_bytes_compressed: int | None = None
    code_sha256: str | None = None
    total_bytes: int | None = None
    total_label: str | None = None
    total_line: int | None = None
    total_tolerance: int = 0
    raw_total_bytes: int | None = None
    model_bytes: int | None = None
    model_label: str | None = None
    train_time_ms: float | None = None
    train_time_source: str | None = None  # "stop" | "step" | "golf"
    steps: int | None = None
    iterations: int | None = None
    step_avg_ms: float | None = None
    last_step_val: list | None = None  # [val_loss, val_bpb, step, line] of the last training-time validation
    stopped_early: bool = False
    stop_line: int | None = None
    stop_format: str | None = None  # "early" (train_time:Nms) | "later" (train_time: Nms)
    gptq_reserve_ms: float | None = None
    gptq_effective_ms: float | None = None
    post_stop_calibration_s: float = 0.0
    post_stop_calibration_source: str | None = None  # "training" | "self-generated" | "unknown"
    post_stop_elapsed_s: float | None = None
    total_eval_time_s: float | None = None
    eval_timed_s: float | None = None
    eval_end_to_end_s: float | None = None
    eval_end_to_end_method: str | None = None  # "timestamps" | "sum"
    compile_warmup_s: float | None = None
    timestamped: bool = False
    first_ts: float | None = None
    last_ts: float | None = None
    world_size: int | None = None
    gpus: list[str] = field(default_factory=list)
    device: str | None = None
    torch_version: str | None = None
    val_tokens: int | None = None
    val_tokens_line: int | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    hparams: dict[str, str] = field(default_factory=dict)
    golf_result: dict | None = None
    golf_result_line: int | None = None
    echo_lines_skipped: int = 0
    eval_only: bool = False
    ttt_warmup_unlabelled: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        """bpb per nat of the chosen final score (tokens per byte / ln 2)."""
        f = self.final
        if f and f.val_loss and f.val_bpb and f.val_loss > 0:
            return f.val_bpb / f.val_loss
        return None

    @property
    def recognised(self) -> bool:
        return bool(self.scores or self.steps is not None or self.total_bytes is not None
                    or self.code_bytes is not None or self.seed is not None or self.golf_result)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


def _decimals(text: str) -> int:
    text = text.strip().lower()
    if "e" in text:
        mant, _, exp = text.partition("e")
        frac = mant.partition(".")[2]
        try:
            return max(0, len(frac) - int(exp))
        except ValueError:
            return len(frac)
    return len(text.partition(".")[2])


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (ValueError, OverflowError):
        return None
    return value


def seed_from_name(name: str) -> int | None:
    """The seed a log's file name claims (`train_seed42.log`, `*_s42.txt`, `log_10mins_seed-7.txt`,
    `ternary_log_1337.txt`); None when the name makes no claim (`train.log`, `train_v0.txt`)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for pattern in _FILENAME_SEED:
        m = pattern.search(base)
        if m:
            return int(m.group(1))
    return None


def tokenizer_key(*, tokenizer_path: str | None = None, dataset: str | None = None,
                  vocab_size: int | None = None) -> str | None:
    """A short key for the tokenizer / validation set (`sp1024`, `sp8192_caseops`, `byte260`, ...)."""
    text = " ".join(x for x in (tokenizer_path, dataset) if x).lower()
    caseops = "caseops" in text or "lossless_caps" in text
    m = re.search(r"fineweb10b_(sp\d+|byte\d+|bytes)", text)
    if m:
        key = m.group(1)
        key = "byte256" if key == "bytes" else key
        return key + ("_caseops" if caseops and key.startswith("sp") else "")
    m = re.search(r"fineweb_(\d+)_bpe", text)
    if m:
        return f"sp{m.group(1)}" + ("_caseops" if caseops else "")
    if "byte" in text:
        return f"byte{vocab_size}" if vocab_size else "byte"
    if vocab_size and tokenizer_path:
        return f"sp{vocab_size}"
    return None


def _echo_ranges(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) index pairs (inclusive) of echoed script source: a rule of '=' signs followed by
    something that looks like Python, up to the next rule."""
    ranges = []
    i, n = 0, len(lines)
    while i < n:
        if _ECHO_RULE.match(lines[i]):
            j = i + 1
            while j < n and not lines[j].strip():
                j += 1
            if j < n and _SOURCEISH.match(lines[j]):
                k = j
                while k < n and not _ECHO_RULE.match(lines[k]):
                    k += 1
                if k < n:
                    ranges.append((i, k))
                    i = k + 1
                    continue
        i += 1
    return ranges


def _strip_ts(line: str) -> tuple[float | None, str]:
    if line and line[0] == "1":
        m = _TS.match(line)
        if m:
            return float(m.group(1)), line[m.end():]
    return None, line


def _classify_score(prefix: str) -> tuple[str, str, str] | None:
    """(kind, family, base) for the text before `val_loss`, or None for a line that is not a score."""
    words = prefix.split()
    if not words:
        return None
    head = words[0].rstrip(":")
    low = head.lower()
    if low.startswith(_DIAGNOSTIC_PREFIXES):
        family = "_".join(w.rstrip(":").lower() for w in words if ":" not in w.rstrip(":"))
        return "diagnostic", family, family
    if not low.startswith(_FINAL_PREFIXES):
        return None
    # qualifier words after the family token ("final_int8_zlib_roundtrip sliding val_loss:...")
    extra = [w for w in words[1:] if re.fullmatch(r"[a-z][a-z_]*", w)]
    family = "_".join([head] + extra)
    exact = family.endswith("_exact") or "_exact_" in family
    base = family.replace("_exact", "") if exact else family
    return "final", family, base


def parse_log(text: str, name: str = "") -> LogSummary:
    """Summarise one log. Never raises for any input string."""
    summary = LogSummary(name=name)
    try:
        _parse_into(summary, text if isinstance(text, str) else str(text))
    except Exception as exc:  # pragma: no cover - a bug, but a finding rather than a traceback
        summary.problems.append(f"internal parser error: {type(exc).__name__}: {exc}")
    return summary


def _parse_into(s: LogSummary, text: str) -> None:
    if "\x00" in text:
        s.problems.append("contains NUL bytes (binary data?)")
        text = text.replace("\x00", "")
    lines = text.splitlines()
    s.lines = len(lines)
    s.filename_seed = seed_from_name(s.name) if s.name else None
    skip = set()
    for a, b in _echo_ranges(lines):
        skip.update(range(a, b + 1))
    s.echo_lines_skipped = len(skip)

    seeds: dict[int, int] = {}  # seed -> first line
    seed_sources: dict[int, str] = {}
    calibration = "unknown"
    pending_serialized = False  # a labelled "Serialized model X:" seen since the last total
    in_block = False
    tokenizer_path = dataset = None
    artifact_ts = artifact_idx = None
    gpu_ids: dict[int, str] = {}
    last_step_ms = None
    stop_ms = None
    timestamps = []
    kv_config_seen = False

    for idx, raw in enumerate(lines):
        if idx in skip:
            continue
        ts, line = _strip_ts(raw.rstrip("\r"))
        if ts is not None:
            timestamps.append(ts)
        if not line.strip():
            continue
        lineno = idx + 1
        c0 = line[0]

        # --- indented Hyperparameters block items ---------------------------------------------
        if (c0 == " " or c0 == "\t") and "MB code = " not in line:
            if in_block or line.startswith("  "):
                m = _BLOCK_ITEM.match(line)
                if m:
                    key, value = m.group(1), m.group(2).strip()
                    if len(s.hparams) < MAX_HPARAMS and in_block:
                        s.hparams.setdefault(key, value[:200])
                    if key == "seed":
                        m2 = _SEED_BLOCK.match(line)
                        if m2:
                            seed = int(m2.group(1))
                            seeds.setdefault(seed, lineno)
                            seed_sources.setdefault(seed, "hparams")
                    elif key == "world_size" and s.world_size is None and value.isdecimal() and len(value) < 6:
                        s.world_size = int(value)
                    elif key in ("val_tokens",) and value.isdecimal() and len(value) < 16:
                        s.val_tokens, s.val_tokens_line = int(value), lineno
                    elif key == "tokenizer_path":
                        tokenizer_path = tokenizer_path or value
                    elif key in ("datasets_dir", "data_path") and not dataset:
                        dataset = value
                    elif key == "vocab_size" and value.isdecimal() and len(value) < 8:
                        s.vocab_size = s.vocab_size or int(value)
                    continue
            continue
        in_block = False

        # --- training progress (most frequent lines first) --------------------------------------
        if c0 == "s" and line.startswith("step:"):
            m = _STEP_OLD.match(line)
            if m:
                _step_line(s, int(m.group(1)), int(m.group(2)), m.group(3), lineno, ts)
                tm = _TRAIN_MS.search(m.group(3))
                if tm:
                    last_step_ms = float(tm.group(1))
                continue
        if c0.isdecimal():
            m = _STEP_NEW.match(line)
            if m:
                rest = m.group(3)
                _step_line(s, int(m.group(1)), int(m.group(2)), rest, lineno, ts)
                tm = _TRAIN_MIN.search(rest)
                if tm:
                    last_step_ms = float(tm.group(1)) * 60000.0
                continue
        if line.startswith(("tttg:", "ttp:", "ttpp:", "ttpr:", "  ttt_chunk", "ttt_progress", "warmup_step",
                            "loop_warmup", "ttt_rank_batches")):
            continue

        # --- evaluation results ---------------------------------------------------------------
        if ("val_loss" in line or "val_bpb" in line) and not line.startswith("golf_result_json:"):
            if _score_line(s, line, lineno, ts):
                continue

        if line.startswith("golf_result_json:"):
            _golf_line(s, line[len("golf_result_json:"):], lineno)
            continue

        if line.startswith("stopping_early:"):
            m = _STOP.match(line)
            if m:
                s.stopped_early = True
                stop_ms = float(m.group(2))
                s.stop_line = lineno
                s.stop_format = "later" if m.group(1) else "early"
                if m.group(3):
                    s.steps = int(m.group(3))
                    s.iterations = int(m.group(4))
            else:
                s.problems.append(f"line {lineno}: unrecognised stop line")
            continue

        # --- sizes -------------------------------------------------------------------------------
        if line.startswith("Total submission size"):
            m = _TOTAL.match(line)
            if m:
                label, value = m.group(1), int(m.group(2))
                if label or pending_serialized:
                    s.total_bytes, s.total_label, s.total_line, s.total_tolerance = value, (label or "").strip() or None, lineno, 0
                    artifact_idx, artifact_ts = idx, ts
                else:
                    s.raw_total_bytes = value
                pending_serialized = False
            continue
        if line.startswith("Serialized model"):
            m = _SERIALIZED.match(line)
            if m:
                if m.group(1):
                    s.model_bytes, s.model_label = int(m.group(2)), m.group(1).strip()
                    pending_serialized = True
                    artifact_idx, artifact_ts = idx, ts
            continue
        if line.startswith("Code size"):
            m = _CODE.match(line)
            if m:
                if m.group(1) is None and "(compressed)" in line:
                    s.code_bytes_compressed = int(m.group(2))
                else:
                    s.code_bytes, s.code_bytes_line, s.code_bytes_approx = int(m.group(2)), lineno, False
            continue
        if line.startswith("code_sha256:"):
            m = _OUR_CODE.match(line)
            if m:
                s.code_sha256 = m.group(1)
                s.code_bytes, s.code_bytes_line, s.code_bytes_approx = int(m.group(2)), lineno, False
            continue
        if line.startswith("artifact:"):
            m = _ARTIFACT_CODE.match(line)
            if m and s.code_bytes is None:
                s.code_bytes, s.code_bytes_line = int(m.group(1)), lineno
            continue
        if line.startswith("budget:"):
            m = _BUDGET.match(line)
            if m:
                s.total_bytes, s.total_label, s.total_line, s.total_tolerance = int(m.group(1)), "budget", lineno, 0
                artifact_idx, artifact_ts = idx, ts
            continue
        if " model: " in line and "| Total submission:" in line:
            m = _TOTAL_PIPE.match(line)
            if m:
                s.model_bytes, s.model_label = int(m.group(2)), m.group(1)
                s.total_bytes, s.total_label, s.total_line, s.total_tolerance = int(m.group(3)), m.group(1), lineno, 0
                artifact_idx, artifact_ts = idx, ts
            continue
        if line.startswith("Raw model:"):
            m = _RAW_CODE.match(line)
            if m and s.code_bytes is None:
                s.code_bytes, s.code_bytes_line = int(m.group(1)), lineno
            continue
        if "Script size:" in line or line.startswith("Uploading "):
            m = _SCRIPT_SIZE.match(line)
            if m and s.code_bytes is None:
                s.code_bytes, s.code_bytes_line = int(m.group(1) or m.group(2)), lineno
            continue
        if "MB code = " in line:
            m = _MB_CODE.match(line)
            if m:
                mb_code, mb_total = _float(m.group(3)), _float(m.group(4))
                if mb_total is not None and math.isfinite(mb_total):
                    s.total_bytes, s.total_label, s.total_line = round(mb_total * 1e6), m.group(1), lineno
                    s.total_tolerance = 5000  # printed with two decimals of MB
                    artifact_idx, artifact_ts = idx, ts
                if mb_code is not None and math.isfinite(mb_code) and s.code_bytes is None:
                    s.code_bytes, s.code_bytes_line, s.code_bytes_approx = round(mb_code * 1e6), lineno, True
            continue

        # --- GPTQ and timing ----------------------------------------------------------------------
        low = line.lower()
        if low.startswith("gptq"):
            m = _RESERVE.match(line)
            if m:
                amount = float(m.group(1)) * (1.0 if m.group(2) == "ms" else 1000.0)
                s.gptq_reserve_ms, s.gptq_effective_ms = amount, float(m.group(3))
                continue
            if "autoregressive" in low or "self-gen" in low or "ar_selfgen=1" in low or "self-generated" in low:
                calibration = "self-generated"
            elif "training data" in low or "calibration data" in low or "train" in low:
                calibration = "training" if calibration == "unknown" else calibration
            m = _HESSIANS_IN.match(line)
            if m and (s.stopped_early or s.steps is not None):
                secs = _float(m.group(1)) or 0.0
                if line.startswith("gptq:done in"):
                    s.post_stop_calibration_s = max(s.post_stop_calibration_s, secs)
                else:
                    s.post_stop_calibration_s += secs
                s.post_stop_calibration_source = calibration
            continue
        if line.startswith("wallclock:post_gptq"):
            m = _POST_GPTQ.match(line)
            if m:
                s.post_stop_elapsed_s = _float(m.group(1))
            continue
        if line.startswith("total_eval_time"):
            m = _TOTAL_EVAL.match(line)
            if m:
                s.total_eval_time_s = _float(m.group(1))
            continue
        if line.startswith(("ttt_lora:", "ttt:")):
            if "warming up compile" in line and "no val data" not in line and "random tokens" not in line:
                s.ttt_warmup_unlabelled.append(lineno)
            m = _WARMUP_DONE.search(line)
            if m:
                s.compile_warmup_s = (s.compile_warmup_s or 0.0) + (_float(m.group(1)) or 0.0)
            continue
        if "TTT_EVAL_ONLY" in line or "skipping training" in low:
            s.eval_only = True
            continue

        # --- seeds, data, hardware ------------------------------------------------------------------
        if line.startswith("seed"):
            m = _SEED_PLAIN.match(line)
            if m:
                seed = int(m.group(1))
                seeds.setdefault(seed, lineno)
                seed_sources.setdefault(seed, "printed")
                continue
        if line.startswith("hparam "):
            m = _HPARAM.match(line)
            if m:
                key, value = m.group(1), m.group(2).strip()
                if len(s.hparams) < MAX_HPARAMS:
                    s.hparams.setdefault(key, value[:200])
                if key == "seed" and value.isdecimal() and len(value) < 16:
                    seeds.setdefault(int(value), lineno)
                    seed_sources.setdefault(int(value), "hparams")
                elif key == "tokenizer_path":
                    tokenizer_path = tokenizer_path or value
                elif key == "data_path":
                    dataset = dataset or value
                elif key == "vocab_size" and value.isdecimal() and len(value) < 8:
                    s.vocab_size = s.vocab_size or int(value)
            continue
        if line.startswith(("Hyperparameters:", "--- Hyperparameters")):
            in_block = True
            continue
        if line.startswith("val_loader:"):
            m = _VAL_SHARDS.match(line)
            if m:
                dataset = dataset or m.group(1)
                s.val_tokens, s.val_tokens_line = int(m.group(2)), lineno
            continue
        if line.startswith(("val_tokens", "val tokens")):
            m = _VAL_TOKENS.match(line)
            if m:
                s.val_tokens, s.val_tokens_line = int(m.group(1)), lineno
            continue
        if line.startswith("world_size"):
            m = _WORLD.match(line)
            if m:
                s.world_size = int(m.group(1))
            continue
        if c0 == "|" and "NVIDIA" in line:
            m = _GPU_ROW.match(line)
            if m:
                gpu_ids.setdefault(int(m.group(1)), " ".join(m.group(2).split()))
            continue
        if line.startswith("Running ") or " device:" in line:
            m = _TORCH.search(line)
            if m:
                s.torch_version = s.torch_version or (m.group(1) or m.group(2))
            m = _OUR_DEVICE.search(line)
            if m:
                s.device = m.group(1).strip()[:120]
        if not kv_config_seen and line.count("=") >= 8 and _KV_FIRST.match(line):
            tokens = _KV_TOKEN.findall(line)
            if len(tokens) >= 8:
                kv_config_seen = True
                for key, value in tokens:
                    if len(s.hparams) < MAX_HPARAMS:
                        s.hparams.setdefault(key, value[:200])
                    if key == "seed" and value.isdecimal() and len(value) < 16:
                        seeds.setdefault(int(value), lineno)
                        seed_sources.setdefault(int(value), "config")
                    elif key == "tokenizer_path" and value:
                        tokenizer_path = tokenizer_path or value
                    elif key == "data_path" and value:
                        dataset = dataset or value
                    elif key == "vocab_size" and value.isdecimal() and len(value) < 8:
                        s.vocab_size = s.vocab_size or int(value)
                continue
        if "tokenizer_path" in line and not tokenizer_path:
            m = _TOKENIZER.search(line)
            if m:
                tokenizer_path = m.group(1)
        if not dataset and ("dataset" in line or "data_path" in line):
            m = _DATASET.search(line)
            if m:
                dataset = m.group(1)
        if s.vocab_size is None and "vocab_size" in line:
            m = _VOCAB.search(line)
            if m:
                s.vocab_size = int(m.group(1))

    # --- derived values -----------------------------------------------------------------------
    if timestamps:
        s.timestamped = True
        s.first_ts, s.last_ts = timestamps[0], timestamps[-1]
    s.gpus = [gpu_ids[k] for k in sorted(gpu_ids)]
    if seeds:
        ordered = sorted(seeds, key=lambda k: seeds[k])
        s.seeds_printed = ordered
        s.seed = ordered[0]
        s.seed_line = seeds[ordered[0]]
        s.seed_source = seed_sources.get(ordered[0])
        if len(ordered) > 1:
            s.problems.append("prints several seeds: " + ", ".join(str(x) for x in ordered[:10]))
    s.tokenizer = tokenizer_key(tokenizer_path=tokenizer_path, dataset=dataset, vocab_size=s.vocab_size)
    if stop_ms is not None:
        s.train_time_ms, s.train_time_source = stop_ms, "stop"
    elif last_step_ms is not None:
        s.train_time_ms, s.train_time_source = last_step_ms, "step"
    if s.golf_result:
        _apply_golf(s)
    s.final = _choose_final(s.scores)
    if s.golf_result and s.final is None:
        g = s.golf_result
        loss, bpb = _finite(g.get("val_loss")), _finite(g.get("val_bpb"))
        if _plausible(bpb) and (loss is None or _plausible(loss)):
            s.final = Score(str(g.get("eval_path") or "golf_result_json"), str(g.get("eval_path") or "golf_result_json"),
                            "final", loss, bpb, 8, 8, True, None, s.lines)
    _eval_times(s, lines, artifact_idx, artifact_ts)
    for sc in s.scores:
        for value in (sc.val_loss, sc.val_bpb):
            if value is not None and not _plausible(value):
                s.problems.append(f"line {sc.line}: non-finite, non-positive or absurd score in {sc.family}")
                break


def _plausible(value: float | None) -> bool:
    """A score that can be a loss or bpb at all: finite, positive, not astronomically large."""
    return value is not None and math.isfinite(value) and 0.0 < value < 1e6


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _step_line(s: LogSummary, step: int, total: int, rest: str, lineno: int, ts: float | None) -> None:
    if not s.stopped_early:
        s.steps = step
        s.iterations = total
    m = _STEP_AVG.search(rest)
    if m:
        s.step_avg_ms = _float(m.group(1))
    if "val_bpb" in rest:
        mb = _BPB.search(rest)
        ml = _LOSS.search(rest)
        bpb = _float(mb.group(1)) if mb else None
        if bpb is not None and math.isfinite(bpb):
            s.last_step_val = [_float(ml.group(1)) if ml else None, bpb, step, lineno]


def _score_line(s: LogSummary, line: str, lineno: int, ts: float | None) -> bool:
    ml, mb = _LOSS.search(line), _BPB.search(line)
    if not ml and not mb:
        return False
    first = min(m.start() for m in (ml, mb) if m)
    kind = _classify_score(line[:first])
    if kind is None:
        return False
    k, family, base = kind
    ev = _EVAL_MS.search(line)
    st = _STRIDE.search(line)
    s.scores.append(Score(
        family=family, base=base, kind=k,
        val_loss=_float(ml.group(1)) if ml else None,
        val_bpb=_float(mb.group(1)) if mb else None,
        loss_decimals=_decimals(ml.group(1)) if ml else 0,
        bpb_decimals=_decimals(mb.group(1)) if mb else 0,
        exact=family != base, eval_time_ms=_float(ev.group(1)) if ev else None,
        line=lineno, ts=ts, stride=int(st.group(1)) if st else None))
    return True


def _choose_final(scores: list[Score]) -> Score | None:
    """The submission's figure: the last final-family line printed, with the values of the most
    precise (`_exact`) line of the same family."""
    finals = [x for x in scores if x.kind == "final" and _plausible(x.val_bpb)
              and (x.val_loss is None or _plausible(x.val_loss))]
    if not finals:
        return None
    last = finals[-1]
    same = [x for x in finals if x.base == last.base]
    best = max(same, key=lambda x: (x.bpb_decimals, x.line))
    eval_ms = next((x.eval_time_ms for x in reversed(same) if x.eval_time_ms is not None), None)
    return Score(family=best.family, base=best.base, kind="final", val_loss=best.val_loss, val_bpb=best.val_bpb,
                 loss_decimals=best.loss_decimals, bpb_decimals=best.bpb_decimals, exact=best.exact,
                 eval_time_ms=eval_ms, line=best.line, ts=best.ts or last.ts, stride=best.stride or last.stride)


class _JFloat(float):
    """A float that remembers how it was printed (for 'last printed digit' tolerances)."""

    text: str

    def __new__(cls, text: str):
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def _reject_constant(name: str):
    raise ValueError(f"non-finite constant {name}")


def _golf_line(s: LogSummary, payload: str, lineno: int) -> None:
    try:
        data = json.loads(payload, parse_float=_JFloat, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        s.problems.append(f"line {lineno}: golf_result_json is not valid JSON ({str(exc)[:80]})")
        return
    if not isinstance(data, dict):
        s.problems.append(f"line {lineno}: golf_result_json is not an object")
        return
    s.golf_result = data
    s.golf_result_line = lineno


def _apply_golf(s: LogSummary) -> None:
    """Our own scripts state every figure in golf_result_json; it wins over the free-text lines."""
    g = s.golf_result or {}

    def _int(key):
        v = g.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**15 else None

    seed = _int("seed")
    if seed is not None:
        if s.seed is None:
            s.seed, s.seed_source, s.seed_line = seed, "golf", s.golf_result_line
            s.seeds_printed = [seed]
        elif seed != s.seed:
            s.problems.append(f"golf_result_json seed {seed} differs from the printed seed {s.seed}")
    for key, attr in (("bytes_total", "total_bytes"), ("bytes_code", "code_bytes"), ("val_tokens", "val_tokens"),
                      ("steps", "steps"), ("world_size", "world_size")):
        v = _int(key)
        if v is not None and getattr(s, attr) is None:
            setattr(s, attr, v)
    if s.total_bytes is not None and s.total_line is None:
        s.total_line, s.total_label = s.golf_result_line, "golf_result_json"
    v = _finite(g.get("train_time_ms"))
    if v is not None:
        s.train_time_ms, s.train_time_source = v, "golf"
    v = _finite(g.get("total_eval_time_s"))
    if v is not None and s.total_eval_time_s is None:
        s.total_eval_time_s = v
    sha = g.get("code_sha256")
    if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha):
        if s.code_sha256 and s.code_sha256 != sha:
            s.problems.append("golf_result_json code_sha256 differs from the code_sha256 line")
        s.code_sha256 = s.code_sha256 or sha
    if isinstance(g.get("device"), str):
        s.device = s.device or g["device"][:120]
    if isinstance(g.get("torch"), str):
        s.torch_version = s.torch_version or g["torch"][:40]
    if g.get("stopped_early") is True:
        s.stopped_early = True
    path = g.get("eval_path")
    if isinstance(path, str):
        loss, bpb = _finite(g.get("val_loss")), _finite(g.get("val_bpb"))
        for sc in s.scores:
            if sc.kind == "final" and sc.base == path and sc.val_bpb is not None and bpb is not None:
                tol = 0.5 * 10 ** -sc.bpb_decimals + 1e-12
                if abs(sc.val_bpb - bpb) > tol:
                    s.problems.append(f"golf_result_json val_bpb {bpb} differs from line {sc.line} ({sc.val_bpb})")
        if bpb is not None:
            # the JSON line is the authoritative final score of our own logs
            s.scores.append(Score(path, path, "final", loss, bpb, 17, 17, True, _finite(g.get("eval_time_ms")),
                                  s.golf_result_line or s.lines))


def _eval_times(s: LogSummary, lines: list[str], artifact_idx: int | None, artifact_ts: float | None) -> None:
    """eval_timed_s: what the script itself timed (total_eval_time, or the sum of its final evals).
    eval_end_to_end_s: artifact written -> final score, from timestamps when the log has them,
    else the sum of every eval after the artifact (diagnostics included) plus compile warm-up."""
    after = [x for x in s.scores if artifact_idx is None or x.line > artifact_idx + 1]
    finals_after = [x for x in after if x.kind == "final"]
    if s.total_eval_time_s is not None:
        s.eval_timed_s = s.total_eval_time_s
    else:
        timed = [x.eval_time_ms for x in finals_after if x.eval_time_ms is not None]
        if timed:
            s.eval_timed_s = sum(timed) / 1000.0
    if s.final is None or artifact_idx is None:
        return
    if artifact_ts is not None and s.final.ts is not None and s.final.ts >= artifact_ts:
        s.eval_end_to_end_s = round(s.final.ts - artifact_ts, 3)
        s.eval_end_to_end_method = "timestamps"
        return
    timed = [x.eval_time_ms for x in after if x.eval_time_ms is not None and x.line <= s.final.line]
    if s.total_eval_time_s is not None:
        # the script's own timer covers the TTT phase; add what it left out
        pre = [x.eval_time_ms for x in after if x.eval_time_ms is not None and x.kind == "diagnostic"]
        total = s.total_eval_time_s + sum(pre) / 1000.0 + (s.compile_warmup_s or 0.0)
    elif timed:
        total = sum(timed) / 1000.0 + (s.compile_warmup_s or 0.0)
    else:
        return
    s.eval_end_to_end_s = round(total, 3)
    s.eval_end_to_end_method = "sum"
