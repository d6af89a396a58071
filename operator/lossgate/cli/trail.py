"""The judge's decision trail: its verdict after every look, as `replay` prints and `plot` draws it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lossgate.core.evidence import IntervalStats
from lossgate.core.judge import JudgeConfig, evaluate
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
    samples_needed: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.end, tz=UTC)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"time": iso(self.time)}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trail(intervals: Sequence[IntervalStats], config: JudgeConfig) -> list[Look]:
    """judge.evaluate after every interval (each prefix of the history)."""
    out = []
    for k in range(1, len(intervals) + 1):
        r = evaluate(intervals[:k], config)
        iv = intervals[k - 1]
        out.append(
            Look(k, iv.start, iv.end, r.n_baseline, r.n_canary, r.theta_hat, r.cs_low, r.cs_high,
                 r.p_regression, r.p_not_worse, r.margin, r.verdict.value, r.samples_needed)
        )  # fmt: skip
    return out


def first_decision(looks: Sequence[Look]) -> Look | None:
    return next((lk for lk in looks if lk.verdict in DECISIVE), None)
