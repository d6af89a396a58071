"""Tagging Prometheus intervals with the weight in force (the judge's strata)."""

from __future__ import annotations

from lossgate.core.evidence import ArmStats, IntervalStats
from lossgate.core.timeline import with_weights

EMPTY = ArmStats(0, 0, 0)


def iv(start: float, end: float) -> IntervalStats:
    return IntervalStats(start, end, EMPTY, EMPTY)


def test_each_interval_gets_the_weight_in_force_and_spanning_ones_get_none() -> None:
    # Given steps at 10% from t=100 and 25% from t=130
    timeline = [(100.0, 10), (130.0, 25)]
    # When intervals of 10 s are tagged, one of them straddling the change
    got = with_weights([iv(100, 110), iv(120, 130), iv(125, 135), iv(130, 140), iv(90, 100)], timeline)
    # Then intervals inside a step get its weight; the straddling one and one before the start get None
    assert [g.canary_weight for g in got] == [10, 10, None, 25, None]
