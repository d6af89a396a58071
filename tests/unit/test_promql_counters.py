"""Client-side counter differencing between aligned instants (pure; real-server tests in
tests/adapters/test_prom_loss.py)."""

from __future__ import annotations

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
