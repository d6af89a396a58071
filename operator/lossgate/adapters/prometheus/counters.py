"""Counter arithmetic between aligned instants, done client-side on raw samples (pure, no I/O).

Why not `increase()`: it extrapolates to the window edges and returns fractional counts, and a counter
reset between two steps of a range query hides every increment before the reset. Here, per series:

- the value at instant t is the last sample at or before t (as PromQL's instant selector would give);
- a series with no sample at or before t_k was born inside the window and counts from 0;
- a drop between consecutive samples, or a changed `_created` timestamp of the same label set, is a
  restart: the increments before it are kept and the post-restart value counts from 0;
- all increments of an interval are summed with math.fsum, so the result does not depend on the
  order of series and, without resets, equals value(t_k+1) - value(t_k) exactly.
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


def interval_parts(series: Series, instants: Sequence[int], resets: set[int]) -> list[list[float]]:
    """Per interval (t_k, t_k+1]: the increments of one series, one part per restart segment."""
    ts = [t for t, _ in series.samples]
    values = [v for _, v in series.samples]
    last = [bisect.bisect_right(ts, t) - 1 for t in instants]  # index of the last sample <= t_k, or -1
    out: list[list[float]] = [[] for _ in range(max(len(instants) - 1, 0))]
    for k, parts in enumerate(out):
        lo, hi = last[k], last[k + 1]
        if hi <= lo:
            continue
        base = values[lo] if lo >= 0 else 0.0
        for j in range(lo + 1, hi + 1):
            if j > 0 and (ts[j] in resets or values[j] < values[j - 1]):
                if values[j - 1] != base:
                    parts.append(values[j - 1] - base)
                base = 0.0
        parts.append(values[hi] - base)
    return out


def interval_totals(
    series: Sequence[Series], instants: Sequence[int], resets: Mapping[tuple[tuple[str, str], ...], set[int]]
) -> list[float]:
    """Per interval: the sum over all series of their increments (math.fsum of every part)."""
    k = max(len(instants) - 1, 0)
    parts: list[list[float]] = [[] for _ in range(k)]
    for s in series:
        for i, p in enumerate(interval_parts(s, instants, resets.get(s.group, set()))):
            parts[i].extend(p)
    return [math.fsum(p) for p in parts]
