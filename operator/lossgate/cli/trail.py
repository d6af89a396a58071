"""The judge's decision trail: its verdict after every look, as `replay` prints and `plot` draws it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lossgate.core.bounded import information_to_cross
from lossgate.core.evidence import IntervalStats
from lossgate.core.judge import MAX_SAMPLES_NEEDED, JudgeConfig, JudgeResult, evaluate
from lossgate.core.judge_report import clip_int
from lossgate.core.verdicts import LossVerdict

DECISIVE = (LossVerdict.REGRESSION, LossVerdict.NOT_WORSE)


@dataclass(frozen=True)
class Look:
    """The judge's verdict after one more analysis interval (one look)."""

    look: int  # 1-based
    start: float  # the interval's [start, end) in unix seconds
    end: float
    n_baseline: float  # cumulative labelled samples the judge used
    n_canary: float
    delta: float
    cs_low: float
    cs_high: float
    p_regression: float
    p_not_worse: float
    margin: float
    verdict: str
    samples_needed: int  # the judge's projection at the current estimate (swings near the margin)
    catastrophic: bool = False  # the catastrophic-rate guard fired (the rollback's rule)
    p_catastrophic: float = 1.0
    samples_needed_if_equal: int = 0  # stable: further canary samples to show not-worse if delta is 0
    reachable: bool = True  # False: at the current estimate no sample size decides at this split

    @property
    def rule(self) -> str:
        """Which test decided: the catastrophic guard, the regression test or non-inferiority."""
        if self.verdict == LossVerdict.REGRESSION:
            return "catastrophic guard" if self.catastrophic else "regression test"
        if self.verdict == LossVerdict.NOT_WORSE:
            return "non-inferiority test"
        return ""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.end, tz=UTC)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"time": iso(self.time), "rule": self.rule or None}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trail(intervals: Sequence[IntervalStats], config: JudgeConfig) -> list[Look]:
    """judge.evaluate after every interval (each prefix of the history)."""
    out = []
    for k in range(1, len(intervals) + 1):
        r = evaluate(intervals[:k], config)
        iv = intervals[k - 1]
        equal = needed_if_equal(r, config)
        out.append(
            Look(k, iv.start, iv.end, r.n_baseline, r.n_canary, r.theta_hat, r.cs_low, r.cs_high,
                 r.p_regression, r.p_not_worse, r.margin, r.verdict.value, r.samples_needed,
                 r.catastrophic, r.p_catastrophic, equal,
                 r.verdict in DECISIVE or r.samples_needed < MAX_SAMPLES_NEEDED)
        )  # fmt: skip
    return out


def needed_if_equal(r: JudgeResult, config: JudgeConfig) -> int:
    """Further canary samples until non-inferiority would be shown if the true difference were 0, at
    the information per canary sample seen so far. Unlike the projection at the current estimate
    (which explodes as the estimate nears the margin), it only moves with the variances and the split,
    so it is stable from look to look. 0 once decided."""
    if r.verdict in DECISIVE:
        return 0
    quota = max(config.min_samples_before_promote - r.n_canary, 0.0)
    if r.information <= 0 or r.n_canary <= 0 or r.margin <= 0:
        return clip_int(max(quota, config.min_samples_before_rollback - r.n_canary))
    target = information_to_cross(r.margin, r.margin, r.information, config.alpha_promote)
    if not math.isfinite(target):
        return MAX_SAMPLES_NEEDED
    per_sample = r.information / r.n_canary
    return clip_int(max((target - r.information) / per_sample, quota))


def first_decision(looks: Sequence[Look]) -> Look | None:
    return next((lk for lk in looks if lk.verdict in DECISIVE), None)
