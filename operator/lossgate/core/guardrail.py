"""One guardrail check (error rate, fraction of slow requests, mean latency) as a running fold.

Per check the operator keeps `CheckFold`: the test's state (core/bounded_diff.py: running counts,
each grid scale's cumulative log e-value in both directions, the running minima of the p-values),
the running intersection of the confidence sequence and the numbers of the look a verdict reports:
a fixed number of floats whatever the rollout's age. Each tick continues it with the intervals that
closed since (docs/judge.md, "Guardrails").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lossgate.core.bounded import NOT_WORSE, REGRESSION
from lossgate.core.bounded_diff import DiffNull, DiffStart, confidence_bound, diff_path
from lossgate.core.judge import used_intervals
from lossgate.core.sequential_fold import decisions, decode_common, encode_common
from lossgate.core.verdicts import LossVerdict


@dataclass(frozen=True)
class Counts:
    """One arm over one interval: requests, and the sum of their outcomes (errors, slow requests,
    or seconds of latency)."""

    n: float
    total: float


@dataclass(frozen=True)
class CountInterval:
    start: float
    end: float
    baseline: Counts
    canary: Counts
    canary_weight: int | None = None


@dataclass(frozen=True)
class CheckConfig:
    """How one check decides; alpha_rollback is its share of the rollout's (core/family.py)."""

    name: str
    null: DiffNull
    alpha_rollback: float = 0.01
    alpha_promote: float = 0.05
    min_requests_before_rollback: float = 0.0  # canary requests before a rollback may act
    min_requests_before_promote: float = 0.0
    drop_first_after_weight_change: bool = True

    def __post_init__(self) -> None:
        for name in ("alpha_rollback", "alpha_promote"):
            a = getattr(self, name)
            if not 0 < a < 0.5:
                raise ValueError(f"{self.name}: {name} must be in (0, 0.5), got {a!r}")


@dataclass(frozen=True)
class Look:
    """The numbers one look reports."""

    look: int
    n_b: float
    n_c: float
    s_b: float
    s_c: float
    estimate: float  # mu_c - lam mu_b, stratified
    cs_low: float
    cs_high: float


@dataclass(frozen=True)
class CheckFold:
    looks: int = 0
    dropped: int = 0
    last_weight: float | None = None
    diff: DiffStart = field(default_factory=DiffStart)
    cs: tuple[float, float] | None = None  # running intersection of the bounds (None: whole range)
    regression_at: Look | None = None
    not_worse_at: Look | None = None
    latest: Look | None = None


@dataclass(frozen=True)
class CheckResult:
    """A check's verdict at the latest look, with what status shows (all finite)."""

    name: str
    verdict: LossVerdict
    n_baseline: float
    n_canary: float
    mean_baseline: float | None  # outcome per request (rate, or seconds)
    mean_canary: float | None
    delta: float  # estimated canary - lam x baseline (lam = 1 for an absolute margin)
    cs_low: float
    cs_high: float
    p_regression: float
    p_not_worse: float
    margin: float  # the null value of delta: the absolute margin, 0 for a relative one
    alpha_rollback: float
    looks: int
    reason: str


def advance(fold: CheckFold, intervals: Sequence[CountInterval], config: CheckConfig) -> CheckFold:
    """The state after `intervals` more (closed, in order)."""
    if not intervals:
        return fold
    weights = [iv.canary_weight for iv in intervals]
    used = used_intervals(weights, config.drop_first_after_weight_change, fold.last_weight or 0.0)
    rows = [(iv.baseline.n, iv.baseline.total, iv.canary.n, iv.canary.total) for iv in intervals]
    arr = np.asarray(rows, dtype=np.float64).T
    null = config.null
    path = diff_path(arr[0], arr[1], arr[2], arr[3], used, null, fold.diff)
    low = confidence_bound(path.reg, REGRESSION, config.alpha_rollback, null)
    high = confidence_bound(path.nw, NOT_WORSE, config.alpha_promote, null)
    if fold.cs is not None:
        low, high = np.maximum(low, fold.cs[0]), np.minimum(high, fold.cs[1])
    low, high = np.maximum.accumulate(low), np.minimum.accumulate(high)

    def look(k: int) -> Look:
        return Look(
            fold.looks + k, float(path.n_b[k]), float(path.n_c[k]), float(path.s_b[k]), float(path.s_c[k]),
            float(path.estimate[k]), float(low[k]), float(high[k]),
        )  # fmt: skip

    regression_at, not_worse_at = decisions(
        fold, config, look, path.log_p_regression, path.log_p_not_worse, path.n_c
    )
    known = [float(w) for w in weights if w is not None and math.isfinite(w)]
    return CheckFold(
        looks=fold.looks + len(intervals),
        dropped=fold.dropped + int(np.count_nonzero(~used)),
        last_weight=known[-1] if known else fold.last_weight,
        diff=path.end,
        cs=(float(low[-1]), float(high[-1])),
        regression_at=regression_at,
        not_worse_at=not_worse_at,
        latest=look(len(intervals) - 1),
    )


def conclude(fold: CheckFold, config: CheckConfig) -> CheckResult:
    """The check's verdict after the intervals folded so far; once reached, a verdict stays."""
    null = config.null
    at = fold.regression_at or fold.not_worse_at or fold.latest
    p_reg = math.exp(float(fold.diff.log_p_regression))
    p_nw = math.exp(float(fold.diff.log_p_not_worse))
    if at is None:
        return CheckResult(
            config.name, LossVerdict.INSUFFICIENT_DATA, 0.0, 0.0, None, None, 0.0, -null.lam * null.bound,
            null.bound, 1.0, 1.0, null.delta, config.alpha_rollback, 0, "no intervals yet",
        )  # fmt: skip
    if fold.regression_at is not None:
        verdict = LossVerdict.REGRESSION
        reason = (
            f"{config.name}: canary worse than baseline beyond the margin at look {at.look + 1} "
            f"(p = {p_reg:.2g} <= alpha {config.alpha_rollback:.3g})"
        )
    elif fold.not_worse_at is not None:
        verdict = LossVerdict.NOT_WORSE
        reason = f"{config.name}: not worse by the margin, shown at look {at.look + 1} (p = {p_nw:.2g})"
    elif at.n_c < max(config.min_requests_before_rollback, 1.0):
        verdict, reason = LossVerdict.INSUFFICIENT_DATA, f"{config.name}: too few canary requests yet"
    else:
        verdict, reason = LossVerdict.UNDECIDED, f"{config.name}: undecided (p = {p_reg:.2g})"
    low, high = at.cs_low, at.cs_high
    if low > high:  # crossed bounds: show the end the verdict reads off (docs/judge.md)
        low = high = low if verdict is LossVerdict.REGRESSION else high
    return CheckResult(
        name=config.name,
        verdict=verdict,
        n_baseline=at.n_b,
        n_canary=at.n_c,
        mean_baseline=at.s_b / at.n_b if at.n_b > 0 else None,
        mean_canary=at.s_c / at.n_c if at.n_c > 0 else None,
        delta=at.estimate,
        cs_low=low,
        cs_high=high,
        p_regression=p_reg,
        p_not_worse=p_nw,
        margin=null.delta,
        alpha_rollback=config.alpha_rollback,
        looks=fold.looks,
        reason=reason,
    )


def evaluate(intervals: Sequence[CountInterval], config: CheckConfig) -> CheckResult:
    """The whole history at once (the oracle of the fold in tests)."""
    return conclude(advance(CheckFold(), intervals, config), config)


# --- status encoding: plain lists of floats (JSON keeps every float's bits) ---------------------------

_SCALARS = ("n_b", "s_b", "n_c", "s_c", "info", "wsum", "log_p_regression", "log_p_not_worse")


class CorruptCheckState(ValueError):
    """Numbers that cannot be this check's fold."""


def encode(fold: CheckFold) -> dict[str, list[float]]:
    return encode_common(fold, fold.diff) | {"sums": [float(getattr(fold.diff, name)) for name in _SCALARS]}


def decode(numbers: Mapping[str, Sequence[float]]) -> CheckFold:
    try:
        common, g = decode_common(numbers, Look, DiffStart().reg_a.shape, CorruptCheckState)
        sums = [float(x) for x in numbers["sums"]]
        if len(sums) != len(_SCALARS):
            raise CorruptCheckState("wrong number of running sums")
        n_b, s_b, n_c, s_c, info, wsum, log_p_reg, log_p_nw = sums
        diff = DiffStart(
            n_b, s_b, n_c, s_c, info, wsum, g["reg_a"], g["reg_c"], g["nw_a"], g["nw_c"], log_p_reg, log_p_nw
        )
        return CheckFold(diff=diff, **common)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise CorruptCheckState(str(err)) from err
