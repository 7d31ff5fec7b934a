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

The reader is a table of line families (`FAMILIES`: name, line prefixes, pattern, handler), one
small handler each; a line is offered to the families whose prefix it starts with, in table
order, and the first handler that takes it consumes it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = ["Score", "LogSummary", "Family", "FAMILIES", "parse_log", "seed_from_name", "tokenizer_key"]

# Bounded numbers: a log line can hold anything, and int() of a 5000-digit string raises.
_NUM = r"[-+]?(?:\d{1,15}(?:\.\d{0,15})?|\.\d{1,15})(?:[eE][-+]?\d{1,3})?|[-+]?(?:nan|inf)"
_INT = r"\d{1,15}"

_TS = re.compile(r"^(1\d{9}(?:\.\d{1,6})?) ")
_ECHO_RULE = re.compile(r"^={40,}\s*$")
_ECHO_END = re.compile(r"^={80,}\s*$")  # the rule a log that starts with its source prints after it
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
_TORCH = re.compile(r"^(?:Running (?:Python \S+ )?)?PyTorch (\S+)(?: device:(.+))?$")
_PREFIX = re.compile(r"^([a-z][a-z0-9_]{1,40}):")
_TRAIN_SHARDS = re.compile(r"\btrain_shards[:=]\s?(" + _INT + r")\b")
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
    train_shards: int | None = None  # training shards the run saw (a data-preparation fingerprint, #2127)
    train_shards_line: int | None = None
    partial_eval_lines: list[int] = field(default_factory=list)  # `eval: N batches (limited)`
    line_prefixes: list[str] = field(default_factory=list)  # `ttt_sliding:`, `ttp:` ...: what printed the lines
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
    something that looks like Python, up to the next rule; or, when the log itself starts with
    Python source, everything up to the first rule."""
    ranges = []
    n = len(lines)
    first = next((k for k in range(n) if lines[k].strip()), n)
    i = 0
    if first < n and _SOURCEISH.match(lines[first]):
        k = first
        while k < n and not _ECHO_END.match(lines[k]):
            k += 1
        if k < n:
            ranges.append((first, k))
            i = k + 1
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
        _read(summary, text if isinstance(text, str) else str(text))
    except Exception as exc:  # pragma: no cover - a bug, but a finding rather than a traceback
        summary.problems.append(f"internal parser error: {type(exc).__name__}: {exc}")
    return summary


# --------------------------------------------------------------------------------------------
# The line families. Each is (name, prefixes, pattern, handler): a line is offered to the
# families whose prefix it starts with (or that have no prefix, tested by `when`), in table
# order; the first handler that returns True consumes it. Adding a family is one entry below
# and one small function.


@dataclass
class _Line:
    text: str
    low: str
    no: int  # 1-based line number
    idx: int
    ts: float | None


class _State:
    """What the reader carries between lines of one log."""

    def __init__(self, s: LogSummary):
        self.s = s
        self.seeds: dict[int, int] = {}
        self.seed_sources: dict[int, str] = {}
        self.calibration = "unknown"
        self.pending_serialized = False
        self.in_block = False
        self.tokenizer_path: str | None = None
        self.dataset: str | None = None
        self.artifact_ts: float | None = None
        self.artifact_idx: int | None = None
        self.gpu_ids: dict[int, str] = {}
        self.last_step_ms: float | None = None
        self.stop_ms: float | None = None
        self.kv_config_seen = False

    def seed(self, value: int, line: int, source: str) -> None:
        self.seeds.setdefault(value, line)
        self.seed_sources.setdefault(value, source)

    def artifact(self, ln: _Line) -> None:
        self.artifact_idx, self.artifact_ts = ln.idx, ln.ts

    def config(self, key: str, value: str, line: int, source: str, store: bool = True) -> None:
        """A key/value pair from a Hyperparameters block, an `hparam` line or a key=value line."""
        s = self.s
        if store and len(s.hparams) < MAX_HPARAMS:
            s.hparams.setdefault(key, value[:200])
        if key == "seed" and value.isdecimal() and len(value) < 16:
            self.seed(int(value), line, source)
        elif key == "tokenizer_path" and value:
            self.tokenizer_path = self.tokenizer_path or value
        elif key in ("data_path", "datasets_dir") and value:
            self.dataset = self.dataset or value
        elif key == "vocab_size" and value.isdecimal() and len(value) < 8:
            s.vocab_size = s.vocab_size or int(value)
        elif key == "world_size" and value.isdecimal() and len(value) < 6 and s.world_size is None:
            s.world_size = int(value)
        elif key == "val_tokens" and value.isdecimal() and len(value) < 16:
            s.val_tokens, s.val_tokens_line = int(value), line
        elif key == "train_shards" and value.isdecimal() and len(value) < 8:
            s.train_shards, s.train_shards_line = int(value), line


def _block_item(st: _State, m, ln: _Line) -> bool:
    if "MB code = " in ln.text:
        return False
    if st.in_block or ln.text.startswith("  "):
        m = _BLOCK_ITEM.match(ln.text)
        if m:
            key, value = m.group(1), m.group(2).strip()
            if key == "seed" and not _SEED_BLOCK.match(ln.text):
                return True
            st.config(key, value, ln.no, "hparams", store=st.in_block)
    return True


def _step_old(st: _State, m, ln: _Line) -> bool:
    _step_line(st.s, int(m.group(1)), int(m.group(2)), m.group(3), ln.no, ln.ts)
    tm = _TRAIN_MS.search(m.group(3))
    if tm:
        st.last_step_ms = float(tm.group(1))
    return True


def _step_new(st: _State, m, ln: _Line) -> bool:
    rest = m.group(3)
    _step_line(st.s, int(m.group(1)), int(m.group(2)), rest, ln.no, ln.ts)
    tm = _TRAIN_MIN.search(rest)
    if tm:
        st.last_step_ms = float(tm.group(1)) * 60000.0
    return True


def _ignore(st: _State, m, ln: _Line) -> bool:
    return True


def _score(st: _State, m, ln: _Line) -> bool:
    return _score_line(st.s, ln.text, ln.no, ln.ts)


def _golf(st: _State, m, ln: _Line) -> bool:
    _golf_line(st.s, ln.text[len("golf_result_json:"):], ln.no)
    return True


def _stop(st: _State, m, ln: _Line) -> bool:
    s = st.s
    if m is None:
        s.problems.append(f"line {ln.no}: unrecognised stop line")
        return True
    s.stopped_early = True
    st.stop_ms = float(m.group(2))
    s.stop_line = ln.no
    s.stop_format = "later" if m.group(1) else "early"
    if m.group(3):
        s.steps, s.iterations = int(m.group(3)), int(m.group(4))
    return True


def _total(st: _State, m, ln: _Line) -> bool:
    if m:
        s, label, value = st.s, m.group(1), int(m.group(2))
        if label or st.pending_serialized:
            s.total_bytes, s.total_label, s.total_line, s.total_tolerance = value, (label or "").strip() or None, ln.no, 0
            st.artifact(ln)
        else:
            s.raw_total_bytes = value
        st.pending_serialized = False
    return True


def _serialized(st: _State, m, ln: _Line) -> bool:
    if m and m.group(1):
        st.s.model_bytes, st.s.model_label = int(m.group(2)), m.group(1).strip()
        st.pending_serialized = True
        st.artifact(ln)
    return True


def _code_size(st: _State, m, ln: _Line) -> bool:
    s = st.s
    if m:
        if m.group(1) is None and "(compressed)" in ln.text:
            s.code_bytes_compressed = int(m.group(2))
        else:
            s.code_bytes, s.code_bytes_line, s.code_bytes_approx = int(m.group(2)), ln.no, False
    return True


def _code_sha(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.code_sha256 = m.group(1)
        st.s.code_bytes, st.s.code_bytes_line, st.s.code_bytes_approx = int(m.group(2)), ln.no, False
    return True


def _code_elsewhere(st: _State, m, ln: _Line) -> bool:
    """`artifact: ... code:N`, `Raw model: N bytes | Code: N bytes`, `[x] Script size: N bytes`."""
    if m and st.s.code_bytes is None:
        st.s.code_bytes, st.s.code_bytes_line = int(next(g for g in m.groups() if g)), ln.no
    return True


def _budget(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.total_bytes, st.s.total_label, st.s.total_line, st.s.total_tolerance = int(m.group(1)), "budget", ln.no, 0
        st.artifact(ln)
    return True


def _total_pipe(st: _State, m, ln: _Line) -> bool:
    if m:
        s = st.s
        s.model_bytes, s.model_label = int(m.group(2)), m.group(1)
        s.total_bytes, s.total_label, s.total_line, s.total_tolerance = int(m.group(3)), m.group(1), ln.no, 0
        st.artifact(ln)
    return True


def _mb_code(st: _State, m, ln: _Line) -> bool:
    if m:
        s = st.s
        mb_code, mb_total = _float(m.group(3)), _float(m.group(4))
        if mb_total is not None and math.isfinite(mb_total):
            s.total_bytes, s.total_label, s.total_line = round(mb_total * 1e6), m.group(1), ln.no
            s.total_tolerance = 5000  # printed with two decimals of MB
            st.artifact(ln)
        if mb_code is not None and math.isfinite(mb_code) and s.code_bytes is None:
            s.code_bytes, s.code_bytes_line, s.code_bytes_approx = round(mb_code * 1e6), ln.no, True
    return True


def _gptq(st: _State, m, ln: _Line) -> bool:
    s, low = st.s, ln.low
    m = _RESERVE.match(ln.text)
    if m:
        amount = float(m.group(1)) * (1.0 if m.group(2) == "ms" else 1000.0)
        s.gptq_reserve_ms, s.gptq_effective_ms = amount, float(m.group(3))
        return True
    if "autoregressive" in low or "self-gen" in low or "ar_selfgen=1" in low or "self-generated" in low:
        st.calibration = "self-generated"
    elif "training data" in low or "calibration data" in low or "train" in low:
        st.calibration = "training" if st.calibration == "unknown" else st.calibration
    m = _HESSIANS_IN.match(ln.text)
    if m and (s.stopped_early or s.steps is not None):
        secs = _float(m.group(1)) or 0.0
        if ln.text.startswith("gptq:done in"):
            s.post_stop_calibration_s = max(s.post_stop_calibration_s, secs)
        else:
            s.post_stop_calibration_s += secs
        s.post_stop_calibration_source = st.calibration
    return True


def _post_gptq(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.post_stop_elapsed_s = _float(m.group(1))
    return True


def _total_eval(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.total_eval_time_s = _float(m.group(1))
    return True


def _ttt_note(st: _State, m, ln: _Line) -> bool:
    s = st.s
    if "warming up compile" in ln.text and "no val data" not in ln.text and "random tokens" not in ln.text:
        s.ttt_warmup_unlabelled.append(ln.no)
    m = _WARMUP_DONE.search(ln.text)
    if m:
        s.compile_warmup_s = (s.compile_warmup_s or 0.0) + (_float(m.group(1)) or 0.0)
    return True


def _eval_only(st: _State, m, ln: _Line) -> bool:
    st.s.eval_only = True
    return True


def _seed(st: _State, m, ln: _Line) -> bool:
    st.seed(int(m.group(1)), ln.no, "printed")
    return True


def _hparam(st: _State, m, ln: _Line) -> bool:
    if m:
        st.config(m.group(1), m.group(2).strip(), ln.no, "hparams")
    return True


def _block_start(st: _State, m, ln: _Line) -> bool:
    st.in_block = True
    return True


def _val_loader(st: _State, m, ln: _Line) -> bool:
    if m:
        st.dataset = st.dataset or m.group(1)
        st.s.val_tokens, st.s.val_tokens_line = int(m.group(2)), ln.no
    m = _TRAIN_SHARDS.search(ln.text)
    if m:
        st.s.train_shards, st.s.train_shards_line = int(m.group(1)), ln.no
    return True


def _val_tokens(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.val_tokens, st.s.val_tokens_line = int(m.group(1)), ln.no
    return True


def _train_shards(st: _State, m, ln: _Line) -> bool:
    """`train_shards: 80`, `train_loader:dataset:fineweb10B_sp1024 train_shards:25`."""
    m = _TRAIN_SHARDS.search(ln.text)
    if m:
        st.s.train_shards, st.s.train_shards_line = int(m.group(1)), ln.no
    if ln.text.startswith("train_loader:dataset:"):
        return False  # the dataset name is read below
    return m is not None


def _eval_limited(st: _State, m, ln: _Line) -> bool:
    """`eval: 500 batches (limited)`: the evaluation covered part of the validation set."""
    st.s.partial_eval_lines.append(ln.no)
    return True


def _world(st: _State, m, ln: _Line) -> bool:
    if m:
        st.s.world_size = int(m.group(1))
    return True


def _gpu_row(st: _State, m, ln: _Line) -> bool:
    if m:
        st.gpu_ids.setdefault(int(m.group(1)), " ".join(m.group(2).split()))
    return True


def _torch(st: _State, m, ln: _Line) -> bool:
    """`Running PyTorch 2.9.1+cu128`; golf-pack: `Running Python 3.x PyTorch 2.x device:8xNVIDIA H100 ...`."""
    if m:
        st.s.torch_version = st.s.torch_version or m.group(1)
        if m.group(2):
            st.s.device = m.group(2).strip()[:120]
    return m is not None


def _kv_config(st: _State, m, ln: _Line) -> bool:
    tokens = _KV_TOKEN.findall(ln.text)
    if len(tokens) < 8:
        return False
    st.kv_config_seen = True
    for key, value in tokens:
        st.config(key, value, ln.no, "config")
    return True


def _mentions(st: _State, m, ln: _Line) -> bool:
    """A tokenizer path, dataset or vocabulary size mentioned anywhere on a line."""
    text, s = ln.text, st.s
    if "tokenizer_path" in text and not st.tokenizer_path:
        m = _TOKENIZER.search(text)
        if m:
            st.tokenizer_path = m.group(1)
    if not st.dataset and ("dataset" in text or "data_path" in text):
        m = _DATASET.search(text)
        if m:
            st.dataset = m.group(1)
    if s.vocab_size is None and "vocab_size" in text:
        m = _VOCAB.search(text)
        if m:
            s.vocab_size = int(m.group(1))
    return True


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple  # the line starts with one of these (empty: any line `when` accepts)
    pattern: re.Pattern | None
    handle: Callable
    when: Callable | None = None
    need_match: bool = False  # offer the line only when `pattern` matches


_DIGITS = tuple("0123456789")
FAMILIES: tuple[Family, ...] = (
    Family("eval-limited", (), None, _eval_limited, when=lambda t: "(limited)" in t and "eval" in t.lower()),
    Family("hparams-block-item", (" ", "\t"), None, _block_item),
    Family("step", ("step:",), _STEP_OLD, _step_old, need_match=True),
    Family("step-later", _DIGITS, _STEP_NEW, _step_new, need_match=True),
    Family("ttt-progress", ("tttg:", "ttp:", "ttpp:", "ttpr:", "ttt_progress", "warmup_step", "loop_warmup",
                            "ttt_rank_batches"), None, _ignore),
    Family("score", (), None, _score,
           when=lambda t: ("val_loss" in t or "val_bpb" in t) and not t.startswith("golf_result_json:")),
    Family("golf-result", ("golf_result_json:",), None, _golf),
    Family("stop", ("stopping_early:",), _STOP, _stop),
    Family("total-size", ("Total submission size",), _TOTAL, _total),
    Family("serialized", ("Serialized model",), _SERIALIZED, _serialized),
    Family("code-size", ("Code size",), _CODE, _code_size),
    Family("golf-code", ("code_sha256:",), _OUR_CODE, _code_sha),
    Family("artifact-code", ("artifact:",), _ARTIFACT_CODE, _code_elsewhere),
    Family("budget", ("budget:",), _BUDGET, _budget),
    Family("total-pipe", (), _TOTAL_PIPE, _total_pipe, when=lambda t: " model: " in t and "| Total submission:" in t),
    Family("raw-model-code", ("Raw model:",), _RAW_CODE, _code_elsewhere),
    Family("script-size", (), _SCRIPT_SIZE, _code_elsewhere,
           when=lambda t: "Script size:" in t or t.startswith("Uploading ")),
    Family("mb-code", (), _MB_CODE, _mb_code, when=lambda t: "MB code = " in t),
    Family("gptq", ("gptq", "GPTQ", "Gptq"), None, _gptq),
    Family("post-gptq", ("wallclock:post_gptq",), _POST_GPTQ, _post_gptq),
    Family("total-eval", ("total_eval_time",), _TOTAL_EVAL, _total_eval),
    Family("ttt-note", ("ttt_lora:", "ttt:"), None, _ttt_note),
    Family("eval-only", (), None, _eval_only,
           when=lambda t: "TTT_EVAL_ONLY" in t or "skipping training" in t.lower()),
    Family("seed", ("seed",), _SEED_PLAIN, _seed, need_match=True),
    Family("hparam", ("hparam ",), _HPARAM, _hparam),
    Family("hparams-block", ("Hyperparameters:", "--- Hyperparameters"), None, _block_start),
    Family("val-loader", ("val_loader:",), _VAL_SHARDS, _val_loader),
    Family("val-tokens", ("val_tokens", "val tokens"), _VAL_TOKENS, _val_tokens),
    Family("train-shards", ("train_shards", "train_loader:"), None, _train_shards),
    Family("world-size", ("world_size",), _WORLD, _world),
    Family("gpu-row", ("|",), _GPU_ROW, _gpu_row, when=lambda t: "NVIDIA" in t),
    Family("torch-version", ("Running ", "PyTorch "), _TORCH, _torch),
    Family("key-value-config", (), None, _kv_config, when=lambda t: t.count("=") >= 8 and _KV_FIRST.match(t)),
    Family("mentions", (), None, _mentions),
)

_BY_FIRST: dict[str, tuple[Family, ...]] = {}


def _families_for(c: str) -> tuple[Family, ...]:
    fams = _BY_FIRST.get(c)
    if fams is None:
        fams = _BY_FIRST[c] = tuple(f for f in FAMILIES if not f.prefixes or any(p[0] == c for p in f.prefixes))
    return fams


def _offer(st: _State, ln: _Line) -> None:
    text = ln.text
    for fam in _families_for(text[0]):
        if fam.prefixes and not text.startswith(fam.prefixes):
            continue
        if fam.when is not None and not fam.when(text):
            continue
        if fam.name == "key-value-config" and st.kv_config_seen:
            continue
        m = fam.pattern.match(text) if fam.pattern is not None else None
        if fam.need_match and m is None:
            continue
        if fam.handle(st, m, ln):
            return


def _read(s: LogSummary, text: str) -> None:
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
    st = _State(s)
    timestamps = []
    prefixes: set[str] = set()
    for idx, raw in enumerate(lines):
        if idx in skip:
            continue
        ts, line = _strip_ts(raw.rstrip("\r"))
        if ts is not None:
            timestamps.append(ts)
        if not line.strip():
            continue
        if line[0] not in " \t":
            st.in_block = False
            m = _PREFIX.match(line)
            if m and len(prefixes) < 500:
                prefixes.add(m.group(1))
        _offer(st, _Line(line, line.lower() if line[0] in "gG" else "", idx + 1, idx, ts))
    s.line_prefixes = sorted(prefixes)
    _finish(s, st, lines, timestamps)


def _finish(s: LogSummary, st: _State, lines: list[str], timestamps: list[float]) -> None:
    """Values derived from the whole log once every line is read."""
    if timestamps:
        s.timestamped = True
        s.first_ts, s.last_ts = timestamps[0], timestamps[-1]
    s.gpus = [st.gpu_ids[k] for k in sorted(st.gpu_ids)]
    if st.seeds:
        ordered = sorted(st.seeds, key=lambda k: st.seeds[k])
        s.seeds_printed = ordered
        s.seed = ordered[0]
        s.seed_line = st.seeds[ordered[0]]
        s.seed_source = st.seed_sources.get(ordered[0])
        if len(ordered) > 1:
            s.problems.append("prints several seeds: " + ", ".join(str(x) for x in ordered[:10]))
    s.tokenizer = tokenizer_key(tokenizer_path=st.tokenizer_path, dataset=st.dataset, vocab_size=s.vocab_size)
    if st.stop_ms is not None:
        s.train_time_ms, s.train_time_source = st.stop_ms, "stop"
    elif st.last_step_ms is not None:
        s.train_time_ms, s.train_time_source = st.last_step_ms, "step"
    if s.golf_result:
        _apply_golf(s)
    s.final = _choose_final(s.scores)
    if s.golf_result and s.final is None:
        g = s.golf_result
        loss, bpb = _finite(g.get("val_loss")), _finite(g.get("val_bpb"))
        if _plausible(bpb) and (loss is None or _plausible(loss)):
            s.final = Score(str(g.get("eval_path") or "golf_result_json"), str(g.get("eval_path") or "golf_result_json"),
                            "final", loss, bpb, 8, 8, True, None, s.lines)
    _eval_times(s, lines, st.artifact_idx, st.artifact_ts)
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
