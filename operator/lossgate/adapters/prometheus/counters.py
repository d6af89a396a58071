"""Counter arithmetic between aligned instants, done client-side on raw samples (pure, no I/O).

Why not `increase()`: it extrapolates to the window edges and returns fractional counts, and a counter
reset between two steps of a range query hides every increment before the reset. Here, per series,
with L the lookback (PrometheusConfig.lookback_s, 5 minutes, Prometheus' own staleness):

- the value at instant t is the last sample in (t - L, t] (as PromQL's instant selector would give);
- a series with no value at t_k but samples in (t_k, t_k+1] either started in the interval (its
  `_created` is after t_k - L, or it has no `_created` and L is unbounded) and counts from 0, or was
  there before and went unseen for longer than L (a scrape gap, a Prometheus restart): then its first
  sample in the interval is the base, and what happened during the gap is not attributed to it;
- a drop between consecutive samples, or a changed `_created` timestamp of the same label set, is a
  restart: the increments before it are kept and the post-restart value counts from 0;
- all increments of an interval are summed with math.fsum, so the result does not depend on the
  order of series and, without resets, equals value(t_k+1) - value(t_k) exactly.

So each interval's totals depend only on the samples in (t_k - L, t_k+1]: a read of any window that
covers them (the whole rollout, or only the intervals closed since the last tick) gives the same
numbers, which is what lets the operator read incrementally.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Sample = tuple[int, float]  # (timestamp in ms, value)
_GROUP_EXCLUDE = ("__name__", "le")


@dataclass(frozen=True)
class Series:
    labels: tuple[tuple[str, str], ...]
    samples: tuple[Sample, ...]  # sorted by time, unique timestamps, finite values

    @property
    def group(self) -> tuple[tuple[str, str], ...]:
        """Series of one exporter child (count, sum, buckets, created) share this key."""
        return tuple((k, v) for k, v in self.labels if k not in _GROUP_EXCLUDE)


def make_series(labels: Mapping[str, str], samples: Iterable[Sample]) -> Series:
    by_ts: dict[int, float] = {}
    for ts, value in samples:
        if math.isfinite(value):
            by_ts[int(ts)] = float(value)  # chunk boundaries may repeat a sample: keep one
    return Series(tuple(sorted(labels.items())), tuple(sorted(by_ts.items())))


def merge(series: Iterable[Series]) -> list[Series]:
    """Merge the chunks of the same series (same labels) into one."""
    merged: dict[tuple[tuple[str, str], ...], list[Sample]] = {}
    for s in series:
        merged.setdefault(s.labels, []).extend(s.samples)
    return [make_series(dict(labels), samples) for labels, samples in merged.items()]


def reset_points(
    series: Iterable[Series], created: Iterable[Series] = ()
) -> dict[tuple[tuple[str, str], ...], set[int]]:
    """Timestamps (per group) of the first sample after a restart: any counter of the group dropped,
    or the group's `_created` value changed."""
    resets: dict[tuple[tuple[str, str], ...], set[int]] = {}
    for s in series:
        points = resets.setdefault(s.group, set())
        points.update(b[0] for a, b in zip(s.samples, s.samples[1:], strict=False) if b[1] < a[1])
    for s in created:
        points = resets.setdefault(s.group, set())
        points.update(b[0] for a, b in zip(s.samples, s.samples[1:], strict=False) if b[1] != a[1])
    return resets


def interval_parts(
    series: Series,
    instants: Sequence[int],
    resets: set[int],
    lookback_ms: int | None = None,
    created: Sequence[Sample] = (),
) -> list[list[float]]:
    """Per interval (t_k, t_k+1]: the increments of one series, one part per restart segment.
    `created`: the samples of the series' `_created` (unix seconds), when it has one."""
    ts = [t for t, _ in series.samples]
    values = [v for _, v in series.samples]
    created_ts = [t for t, _ in created]
    last = [bisect.bisect_right(ts, t) - 1 for t in instants]  # index of the last sample <= t_k, or -1
    out: list[list[float]] = [[] for _ in range(max(len(instants) - 1, 0))]
    for k, parts in enumerate(out):
        lo, hi = last[k], last[k + 1]
        if hi <= lo:
            continue
        since = None if lookback_ms is None else instants[k] - lookback_ms
        if lo >= 0 and (since is None or ts[lo] > since):
            base, first = values[lo], lo + 1
        else:  # no value at t_k: a new series counts from 0, one back after a gap from its first sample
            started = _started(ts[lo + 1], since, created, created_ts)
            base, first = (0.0 if started else values[lo + 1]), lo + 2  # nothing before it is compared
        for j in range(first, hi + 1):
            if ts[j] in resets or values[j] < values[j - 1]:
                if values[j - 1] != base:
                    parts.append(values[j - 1] - base)
                base = 0.0
        parts.append(values[hi] - base)
    return out


def _started(t: int, since: int | None, created: Sequence[Sample], created_ts: Sequence[int]) -> bool:
    """Whether a series first seen at t (no value in the lookback before the interval) began then."""
    i = bisect.bisect_right(created_ts, t) - 1
    if i < 0:
        return since is None  # no `_created`: new only when nothing before could have been missed
    return since is None or created[i][1] * 1000.0 > since


def interval_totals(
    series: Sequence[Series],
    instants: Sequence[int],
    resets: Mapping[tuple[tuple[str, str], ...], set[int]],
    lookback_ms: int | None = None,
    created: Sequence[Series] = (),
) -> list[float]:
    """Per interval: the sum over all series of their increments (math.fsum of every part)."""
    k = max(len(instants) - 1, 0)
    parts: list[list[float]] = [[] for _ in range(k)]
    born = {c.group: c.samples for c in created}
    for s in series:
        got = interval_parts(s, instants, resets.get(s.group, set()), lookback_ms, born.get(s.group, ()))
        for i, p in enumerate(got):
            parts[i].extend(p)
    return [math.fsum(p) for p in parts]
