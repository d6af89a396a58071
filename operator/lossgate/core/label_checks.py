"""Checks on how labels arrive, from the label joiner's series (docs/joiner.md): pure arithmetic.

- delay: a step whose minDuration is shorter than the 90th percentile of the label delay is judged
  on the fastest-labelled tenth of its traffic at best; warn (a condition), do not block.
- coverage: when one arm's predictions get labelled at a significantly different rate, its labelled
  subset is a different population (labels that come fast are often the easy cases), so the
  comparison is biased; hold the weight until the rates even out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# A hold is a strong action taken on every tick's look: a small alpha keeps repeated looks at equal
# rates from holding by chance, and a minimum difference keeps huge arms from holding on a trivial one.
COVERAGE_ALPHA = 1e-3
COVERAGE_MIN_DIFFERENCE = 0.05
COVERAGE_MIN_PREDICTIONS = 100


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float | None:
    """PromQL's histogram_quantile over one histogram: `bounds` are the finite `le` values (sorted),
    `cumulative` the counts at each bound and then +Inf. None when the histogram is empty; the highest
    finite bound when the quantile falls in the +Inf bucket."""
    if len(cumulative) != len(bounds) + 1 or not 0 <= q <= 1:
        raise ValueError("cumulative needs one count per bound plus +Inf, and q in [0, 1]")
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, (bound, c) in enumerate(zip(bounds, cumulative, strict=False)):
        if c >= rank:
            lower, below = (0.0, 0.0) if i == 0 else (bounds[i - 1], cumulative[i - 1])
            inside = c - below
            return bound if inside <= 0 else lower + (bound - lower) * (rank - below) / inside
    return bounds[-1] if bounds else None


def delay_warning(min_duration_s: float, p90_delay_s: float | None, step: int) -> str | None:
    """The condition message when a step's minDuration is shorter than the p90 label delay."""
    if p90_delay_s is None or min_duration_s >= p90_delay_s:
        return None
    return (
        f"step {step}'s minDuration ({_dur(min_duration_s)}) is shorter than the 90th percentile of the "
        f"label delay ({_dur(p90_delay_s)}): most of the step's predictions are not labelled before it "
        "can end, and the judge sees the fastest-labelled ones; raise steps[].minDuration"
    )


@dataclass(frozen=True)
class Coverage:
    predictions: float
    labelled: float

    @property
    def ratio(self) -> float | None:
        return self.labelled / self.predictions if self.predictions > 0 else None


@dataclass(frozen=True)
class LabelEvidence:
    """What the label joiner's series say about one rollout's window (adapters.prometheus.labels)."""

    baseline: Coverage
    canary: Coverage
    delay_p90_s: float | None


@dataclass(frozen=True)
class CoverageCheck:
    z: float | None
    p_value: float | None
    hold: str | None  # the hold message, None when the arms' ratios do not differ significantly


def coverage_imbalance(
    baseline: Coverage,
    canary: Coverage,
    *,
    alpha: float = COVERAGE_ALPHA,
    min_difference: float = COVERAGE_MIN_DIFFERENCE,
    min_predictions: float = COVERAGE_MIN_PREDICTIONS,
) -> CoverageCheck:
    """Two-proportion z-test of labelled/predicted between the arms (pooled variance, two-sided)."""
    rb, rc = baseline.ratio, canary.ratio
    if rb is None or rc is None or min(baseline.predictions, canary.predictions) < min_predictions:
        return CoverageCheck(None, None, None)
    pooled = (baseline.labelled + canary.labelled) / (baseline.predictions + canary.predictions)
    se = math.sqrt(pooled * (1 - pooled) * (1 / baseline.predictions + 1 / canary.predictions))
    if se == 0:
        return CoverageCheck(None, None, None)
    z = (rc - rb) / se
    p = math.erfc(abs(z) / math.sqrt(2))
    if p >= alpha or abs(rc - rb) < min_difference:
        return CoverageCheck(z, p, None)
    message = (
        f"labels cover {rc:.0%} of the canary's {canary.predictions:.0f} predictions but {rb:.0%} of the "
        f"baseline's {baseline.predictions:.0f} (z = {z:.1f}, p = {p:.1e}): labels arriving faster for one "
        "arm bias the comparison; holding the weight until the coverage evens out"
    )
    return CoverageCheck(z, p, message)


def _dur(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    if s >= 60:
        return f"{s / 60:.1f}m"
    return f"{s:.0f}s"
