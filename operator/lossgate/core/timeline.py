"""Which traffic weight was in force during each analysis interval, from status.stepStarts."""

from __future__ import annotations

import bisect
from dataclasses import replace
from typing import TypeVar

from lossgate.core.evidence import IntervalStats
from lossgate.core.guardrail import CountInterval
from lossgate.core.token_fold import TokenInterval
from lossgate.model import ModelRolloutStatus


def weight_timeline(status: ModelRolloutStatus) -> list[tuple[float, int]]:
    """(unix start, canary weight) of every step started so far in this rollout, in order."""
    return [(s.at.timestamp(), s.weight) for s in status.step_starts]


_Interval = TypeVar("_Interval", IntervalStats, CountInterval, TokenInterval)


def with_weights(intervals: list[_Interval], timeline: list[tuple[float, int]]) -> list[_Interval]:
    """Tag each interval with the weight in force at its start; one that spans a change gets None
    (the judge drops the first interval after every change anyway)."""
    starts = [t for t, _ in timeline]
    out = []
    for iv in intervals:
        i = bisect.bisect_right(starts, iv.start) - 1
        j = bisect.bisect_right(starts, iv.end - 1e-9) - 1
        weight = timeline[i][1] if i >= 0 and i == j else None
        out.append(replace(iv, canary_weight=weight))
    return out
