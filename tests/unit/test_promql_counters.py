"""Client-side counter differencing between aligned instants (pure; real-server tests in
tests/adapters/test_prom_loss.py)."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.adapters.prometheus.counters import (
    interval_parts,
    interval_totals,
    make_series,
    merge,
    reset_points,
)

POD = {"__name__": "m_count", "pod": "a"}


def _totals(
    samples: list[tuple[int, float]], instants: list[int], created: list[tuple[int, float]] | None = None
) -> list[float]:
    s = make_series(POD, samples)
    c = [make_series({"__name__": "m_created", "pod": "a"}, created)] if created else []
    return interval_totals([s], instants, reset_points([s], c))


def test_value_at_an_instant_is_the_last_sample_at_or_before_it() -> None:
    # samples every 10 ms; instants at 0, 25, 50
    samples = [(0, 1.0), (10, 2.0), (20, 4.0), (30, 7.0), (40, 7.0), (50, 9.0)]
    assert _totals(samples, [0, 25, 50]) == [3.0, 5.0]  # 4 - 1, 9 - 4


def test_series_born_inside_the_window_counts_from_zero() -> None:
    assert _totals([(12, 3.0), (22, 5.0)], [0, 10, 20, 30]) == [0.0, 3.0, 2.0]


def _read(
    samples: list[tuple[int, float]], created: list[tuple[int, float]], instants: list[int], lookback: int
) -> list[float]:
    """What the reader does: the samples of (first instant - lookback, last instant], then totals."""
    lo, hi = instants[0] - lookback, instants[-1]
    count = [make_series(POD, [(t, v) for t, v in samples if lo < t <= hi])]
    born = [make_series({"__name__": "m_created", "pod": "a"}, [(t, v) for t, v in created if lo < t <= hi])]
    count, born = [c for c in count if c.samples], [b for b in born if b.samples]
    return interval_totals(count, instants, reset_points(count, born), lookback, born)


def test_a_series_created_inside_the_interval_counts_from_zero_with_a_lookback() -> None:
    # Given a pod whose counter was created at 11 ms (its _created, in seconds) and first scraped at 12
    created = [(12, 0.011), (22, 0.011)]
    # Then with a 15 ms lookback its first value counts, as a new series
    assert _read([(12, 3.0), (22, 5.0)], created, [0, 10, 20, 30], 15) == [0.0, 3.0, 2.0]


def test_a_series_back_after_a_gap_longer_than_the_lookback_is_not_counted_again() -> None:
    # Given a pod at 40 scraped until 100 ms, unseen until 500 ms (a Prometheus outage), then at 45
    samples = [(90, 40.0), (100, 40.0), (500, 45.0), (510, 47.0)]
    created = [(t, 0.0) for t, _ in samples]  # created long before
    # Then with a 50 ms lookback the interval after the gap starts from its first sample: +2, not +47
    assert _read(samples, created, [400, 505, 600], 50) == [0.0, 2.0]
    # And without _created (user templates) the same: a series cannot be told new from back
    assert _read(samples, [], [400, 505, 600], 50) == [0.0, 2.0]


@settings(max_examples=500, deadline=None)
@given(
    increments=st.lists(st.integers(0, 20), min_size=1, max_size=60),
    restarts=st.sets(st.integers(1, 59), max_size=4),
    gaps=st.sets(st.integers(0, 59), max_size=4),
    gap=st.integers(1, 40),
    cuts=st.lists(st.integers(1, 40), max_size=5),
    hidden=st.booleans(),
)
def test_reading_in_chunks_equals_reading_the_whole_window(
    increments: list[int], restarts: set[int], gaps: set[int], gap: int, cuts: list[int], hidden: bool
) -> None:
    # Given a counter scraped every 15 ms with restarts and gaps (some longer than the 300 ms lookback),
    # with or without its _created series
    t, value, born, samples, created = 0, 0.0, 0.0, list[tuple[int, float]](), list[tuple[int, float]]()
    for i, inc in enumerate(increments):
        t += 15 + (15 * gap if i in gaps else 0)
        if i in restarts:
            value, born = 0.0, t / 1000
        value += inc
        samples.append((t, value))
        created.append((t, born))
    instants = list(range(0, t + 100, 100))
    kept = [] if hidden else created
    # When the intervals are read at once, and in chunks (each from the last instant of the one before)
    whole = _read(samples, kept, instants, 300)
    bounds = sorted({0, *(c for c in cuts if c < len(instants) - 1), len(instants) - 1})
    chunked = [
        x for a, b in itertools.pairwise(bounds) for x in _read(samples, kept, instants[a : b + 1], 300)
    ]
    # Then every interval's total is exactly the same
    assert chunked == whole
    assert all(x >= 0 for x in whole)


def test_a_drop_is_a_restart_whose_post_reset_value_is_added() -> None:
    # 5 -> 8 before the restart, then 2 -> 6 after it: 3 + 6 = 9 (not 6 - 5 = 1)
    samples = [(0, 5.0), (10, 8.0), (20, 2.0), (30, 6.0)]
    assert _totals(samples, [0, 30]) == [9.0]
    # the same split over two intervals
    assert _totals(samples, [0, 15, 30]) == [3.0, 6.0]


def test_a_changed_created_timestamp_reveals_a_restart_the_values_hide() -> None:
    # 40 before, the new process already at 45 when first scraped: no drop, but _created changed
    samples = [(0, 0.0), (10, 40.0), (20, 45.0)]
    created = [(0, 1000.0), (10, 1000.0), (20, 1019.5)]
    assert _totals(samples, [0, 20]) == [45.0]  # without _created: indistinguishable from +5
    assert _totals(samples, [0, 20], created) == [85.0]


def test_resets_are_shared_within_a_group_of_one_exporter_child() -> None:
    # count drops (restart) while the sum happens to grow: the sum is treated as restarted too
    count = make_series({"__name__": "m_count", "pod": "a"}, [(0, 10.0), (10, 3.0)])
    total = make_series({"__name__": "m_sum", "pod": "a"}, [(0, 1.0), (10, 1.5)])
    other = make_series({"__name__": "m_sum", "pod": "b"}, [(0, 1.0), (10, 1.5)])
    resets = reset_points([count, total, other])
    assert interval_totals([count], [0, 10], resets) == [3.0]
    assert interval_totals([total], [0, 10], resets) == [1.5]  # not 0.5
    assert interval_totals([other], [0, 10], resets) == [0.5]  # another pod: unaffected


def test_no_samples_in_an_interval_contribute_nothing() -> None:
    assert _totals([(0, 1.0), (100, 3.0)], [0, 10, 20, 100]) == [0.0, 0.0, 2.0]


def test_chunks_of_one_series_merge_and_nonfinite_samples_are_dropped() -> None:
    a = make_series(POD, [(0, 1.0), (10, 2.0)])
    b = make_series(POD, [(10, 2.0), (20, float("nan")), (30, 4.0)])
    (merged,) = merge([a, b])
    assert merged.samples == ((0, 1.0), (10, 2.0), (30, 4.0))


def test_without_resets_a_difference_is_exactly_end_minus_start() -> None:
    c0, c1 = 0.1 + 0.2, 0.1 + 0.2 + 0.3
    assert _totals([(0, c0), (10, c1)], [0, 10]) == [c1 - c0]
    assert interval_parts(make_series(POD, [(0, c0), (10, c1)]), [0, 10], set()) == [[c1 - c0]]


@settings(max_examples=300)
@given(
    increments=st.lists(st.integers(0, 50), min_size=1, max_size=60),
    restarts=st.sets(st.integers(1, 59), max_size=5),
    cuts=st.lists(st.integers(0, 600), min_size=1, max_size=8),
)
def test_total_over_intervals_equals_every_increment_however_split(
    increments: list[int], restarts: set[int], cuts: list[int]
) -> None:
    # A counter scraped every 10 ms, restarting (from 0) at some scrapes; integer increments only
    value, samples, restart_ts = 0.0, list[tuple[int, float]](), set[int]()
    for i, inc in enumerate(increments):
        if i in restarts:
            value = 0.0
            restart_ts.add(i * 10)
        value += inc
        samples.append((i * 10, value))
    expected = sum(increments)
    instants = sorted({-1, *cuts, len(increments) * 10})
    s = make_series(POD, samples)
    created = make_series(
        {"pod": "a", "__name__": "m_created"},
        [(t, float(sum(1 for r in restart_ts if r <= t))) for t, _ in samples],
    )
    totals = interval_totals([s], instants, reset_points([s], [created]))
    assert math.fsum(totals) == expected
    assert all(t >= 0 for t in totals)
