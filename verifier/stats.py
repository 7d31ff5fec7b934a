"""Significance of a claimed improvement, without SciPy at run time (importing scipy.stats costs
seconds; the tests compare every function here with SciPy instead).

- `welch_one_sided(new, old, margin)`: H1 is mean(new) < mean(old) - margin (lower loss is better).
- `one_sample(new, reference, margin)`: the same against a single number (a published score).
- `plan_seeds(...)`: how many seeds the observed spread needs for p < alpha.
- Policies (alpha, margin, minimum seeds) are versioned JSON files in `verifier/policies/`.
- `nats_to_bpb` / `bpb_to_nats` convert with the bpb-per-nat ratio read from the same logs.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

__all__ = ["TestResult", "Policy", "welch_one_sided", "one_sample", "plan_seeds", "t_sf", "betainc",
           "nats_to_bpb", "bpb_to_nats", "load_policy", "available_policies", "DEFAULT_POLICY", "mean", "stdev"]

DEFAULT_POLICY = "readme-2026-03"


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def stdev(xs) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0.0 for fewer than two values."""
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (df may be fractional)."""
    if math.isnan(t) or math.isnan(df) or df <= 0:
        return float("nan")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@dataclass
class TestResult:
    method: str  # "welch" | "one-sample"
    n_new: int
    n_ref: int
    mean_new: float
    mean_ref: float
    margin: float
    improvement: float  # mean_ref - mean_new (positive: lower loss than the reference)
    se: float
    t: float
    df: float
    p: float

    def to_dict(self) -> dict:
        return asdict(self)


def welch_one_sided(new, ref, margin: float = 0.005) -> TestResult:
    """One-sided Welch test of H1: mean(new) < mean(ref) - margin. Needs two or more values on each side."""
    new, ref = [float(x) for x in new], [float(x) for x in ref]
    if len(new) < 2 or len(ref) < 2:
        raise ValueError("Welch's test needs at least two values on each side")
    m1, m2 = mean(new), mean(ref)
    v1, v2 = stdev(new) ** 2 / len(new), stdev(ref) ** 2 / len(ref)
    se = math.sqrt(v1 + v2)
    diff = m2 - margin - m1
    if se == 0.0:
        t = math.inf if diff > 0 else (-math.inf if diff < 0 else 0.0)
        df = float(len(new) + len(ref) - 2)
        p = 0.0 if diff > 0 else (1.0 if diff < 0 else 0.5)
    else:
        t = diff / se
        df = (v1 + v2) ** 2 / ((v1 * v1 / (len(new) - 1) if v1 else 0.0) + (v2 * v2 / (len(ref) - 1) if v2 else 0.0))
        p = t_sf(t, df)
    return TestResult("welch", len(new), len(ref), m1, m2, margin, m2 - m1, se, t, df, p)


def one_sample(new, reference: float, margin: float = 0.005) -> TestResult:
    """One-sided one-sample t-test of H1: mean(new) < reference - margin. Needs two or more values."""
    new = [float(x) for x in new]
    if len(new) < 2:
        raise ValueError("a one-sample test needs at least two values")
    m = mean(new)
    se = stdev(new) / math.sqrt(len(new))
    diff = float(reference) - margin - m
    df = float(len(new) - 1)
    if se == 0.0:
        t = math.inf if diff > 0 else (-math.inf if diff < 0 else 0.0)
        p = 0.0 if diff > 0 else (1.0 if diff < 0 else 0.5)
    else:
        t = diff / se
        p = t_sf(t, df)
    return TestResult("one-sample", len(new), 1, m, float(reference), margin, float(reference) - m, se, t, df, p)


def plan_seeds(new, ref=None, *, reference: float | None = None, margin: float = 0.005, alpha: float = 0.01,
               max_seeds: int = 64) -> int | None:
    """Smallest number of new seeds that reaches p < alpha if further seeds keep the observed mean
    and spread (the comparison side stays as it is). None when no number suffices (the observed
    improvement does not exceed the margin) or the spread is unknown."""
    new = [float(x) for x in new]
    if not new:
        return None
    m1 = mean(new)
    s1 = stdev(new)
    ref = [float(x) for x in ref] if ref is not None else None
    if ref is not None and len(ref) >= 1:
        m2 = mean(ref)
        s2 = stdev(ref)
        if len(new) < 2:
            s1 = s2  # one new seed: borrow the comparison's spread
    elif reference is not None:
        m2, s2 = float(reference), 0.0
    else:
        return None
    diff = m2 - margin - m1
    if diff <= 0 or (s1 == 0.0 and s2 == 0.0 and len(new) < 2):
        return None
    for n in range(2, max_seeds + 1):
        v1 = s1 * s1 / n
        if ref is not None and len(ref) >= 2:
            v2 = s2 * s2 / len(ref)
            denom = (v1 * v1 / (n - 1) if v1 else 0.0) + (v2 * v2 / (len(ref) - 1) if v2 else 0.0)
            df = (v1 + v2) ** 2 / denom if denom else float(n + len(ref) - 2)
        else:
            v2, df = 0.0, float(n - 1)
        se = math.sqrt(v1 + v2)
        p = 0.0 if se == 0 else t_sf(diff / se, df)
        if p < alpha:
            return n
    return None


def nats_to_bpb(nats: float, bpb_per_nat: float) -> float:
    return nats * bpb_per_nat


def bpb_to_nats(bpb: float, bpb_per_nat: float) -> float:
    return bpb / bpb_per_nat


@dataclass(frozen=True)
class Policy:
    id: str
    version: int
    title: str
    alpha: float
    margin_nats: float
    test: str
    min_seeds: int
    source: str
    code_counted: str = "shipped"  # "shipped": the code bytes the folder ships; "as-logged": what the logs counted

    def to_dict(self) -> dict:
        return asdict(self)


def available_policies() -> list[str]:
    folder = resources.files("verifier").joinpath("policies")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_policy(name_or_path: str | Path | None = None) -> Policy:
    """A shipped policy by id (`readme-2026-03`, `leaderboard-2026-04`) or a JSON file path."""
    name = str(name_or_path or DEFAULT_POLICY)
    if name.endswith(".json") or "/" in name or "\\" in name:
        data = json.loads(Path(name).read_text(encoding="utf-8"))
    else:
        res = resources.files("verifier").joinpath("policies", f"{name}.json")
        if not res.is_file():
            raise ValueError(f"unknown policy {name!r}; shipped: {', '.join(available_policies())}")
        data = json.loads(res.read_text(encoding="utf-8"))
    try:
        policy = Policy(id=str(data["id"]), version=int(data["version"]), title=str(data.get("title", "")),
                        alpha=float(data["alpha"]), margin_nats=float(data["margin_nats"]),
                        test=str(data.get("test", "welch-one-sided")), min_seeds=int(data.get("min_seeds", 3)),
                        source=str(data.get("source", "")), code_counted=str(data.get("code_counted", "shipped")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"policy {name!r} is malformed: {exc}") from None
    if not (0 < policy.alpha < 1) or policy.margin_nats < 0:
        raise ValueError(f"policy {name!r}: alpha must be in (0, 1) and margin_nats >= 0")
    if policy.code_counted not in ("shipped", "as-logged"):
        raise ValueError(f"policy {name!r}: code_counted must be 'shipped' or 'as-logged'")
    return policy
