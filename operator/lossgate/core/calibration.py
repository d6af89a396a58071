"""Calibration of each arm from its reliability counters (pure): ECE, MCE and the reliability
diagram, and the per-interval Brier counts the Brier gate judges (docs/judge.md, "Calibration").

Per arm and confidence bin b (CALIBRATION_BINS equal-width bins of the top-class probability) the
counters give n_b (labelled predictions), c_b (sum of their confidence), k_b (correct) and r_b (sum of
their Brier scores). With N = sum n_b:

    ECE = sum_b (n_b / N) |k_b / n_b - c_b / n_b|,     MCE = max over bins with n_b > 0 of the same gap

(torchmetrics' CalibrationError with norm "l1" and "max" on the same bins). Both are descriptive: a
binned ECE is biased upwards at small counts and depends on the binning, and is not a mean of a
per-request quantity, so no always-valid test of it is known; the gate judges the Brier score instead,
whose per-request values lie in [0, 2] (core/bounded_diff.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lossgate.conventions import CALIBRATION_BINS
from lossgate.core.guardrail import CountInterval, Counts
from lossgate.model.calibration import ArmCalibrationStatus, CalibrationStatus, ReliabilityBin


def _zeros() -> tuple[float, ...]:
    return (0.0,) * CALIBRATION_BINS


@dataclass(frozen=True)
class Bins:
    """One arm's reliability counters, per bin (over an interval, or summed over many)."""

    count: tuple[float, ...] = field(default_factory=_zeros)
    confidence: tuple[float, ...] = field(default_factory=_zeros)
    correct: tuple[float, ...] = field(default_factory=_zeros)
    brier: tuple[float, ...] = field(default_factory=_zeros)

    def __post_init__(self) -> None:
        for name in ("count", "confidence", "correct", "brier"):
            if len(getattr(self, name)) != CALIBRATION_BINS:
                raise ValueError(f"{name}: expected {CALIBRATION_BINS} bins")

    def __add__(self, other: Bins) -> Bins:
        return Bins(
            tuple(a + b for a, b in zip(self.count, other.count, strict=True)),
            tuple(a + b for a, b in zip(self.confidence, other.confidence, strict=True)),
            tuple(a + b for a, b in zip(self.correct, other.correct, strict=True)),
            tuple(a + b for a, b in zip(self.brier, other.brier, strict=True)),
        )

    @property
    def n(self) -> float:
        return sum(self.count)

    def valid(self) -> bool:
        """Counters that labelled predictions could have produced (a bad read is not summed)."""
        for n, c, k, r in zip(self.count, self.confidence, self.correct, self.brier, strict=True):
            ok = n >= 0 and -1e-9 <= c <= n * (1 + 1e-9) and -1e-9 <= k <= n * (1 + 1e-9)
            if not ok or not -1e-9 <= r <= 2 * n * (1 + 1e-9):
                return False
        return True

    def to_list(self) -> list[float]:
        return [*self.count, *self.confidence, *self.correct, *self.brier]

    @staticmethod
    def from_list(xs: Sequence[float]) -> Bins:
        b = CALIBRATION_BINS
        if len(xs) != 4 * b:
            raise ValueError(f"expected {4 * b} numbers, got {len(xs)}")
        v = [float(x) for x in xs]
        return Bins(tuple(v[:b]), tuple(v[b : 2 * b]), tuple(v[2 * b : 3 * b]), tuple(v[3 * b :]))


@dataclass(frozen=True)
class CalibrationInterval:
    """Both arms' reliability counters over one analysis interval."""

    start: float
    end: float
    baseline: Bins
    canary: Bins


@dataclass(frozen=True)
class BinReport:
    count: float
    confidence: float | None  # mean confidence of the bin (None when empty)
    accuracy: float | None  # fraction correct


@dataclass(frozen=True)
class ArmCalibration:
    n: float
    ece: float | None  # None with no labelled prediction
    mce: float | None
    brier: float | None  # mean Brier score
    accuracy: float | None
    confidence: float | None
    bins: tuple[BinReport, ...]


def ece(bins: Bins) -> float | None:
    total = bins.n
    if total <= 0:
        return None
    return (
        sum(abs(k - c) for n, c, k in zip(bins.count, bins.confidence, bins.correct, strict=True) if n > 0)
        / total
    )


def mce(bins: Bins) -> float | None:
    gaps = [
        abs(k - c) / n for n, c, k in zip(bins.count, bins.confidence, bins.correct, strict=True) if n > 0
    ]
    return max(gaps) if gaps else None


def report(bins: Bins) -> ArmCalibration:
    n = bins.n
    rows = tuple(
        BinReport(cnt, c / cnt if cnt > 0 else None, k / cnt if cnt > 0 else None)
        for cnt, c, k in zip(bins.count, bins.confidence, bins.correct, strict=True)
    )

    def per(x: float) -> float | None:
        return x / n if n > 0 else None

    return ArmCalibration(
        n, ece(bins), mce(bins), per(sum(bins.brier)), per(sum(bins.correct)), per(sum(bins.confidence)), rows
    )


def brier_intervals(intervals: Sequence[CalibrationInterval]) -> list[CountInterval]:
    """Per interval and arm (labelled predictions, sum of their Brier scores): the Brier gate's input."""
    return [
        CountInterval(
            iv.start,
            iv.end,
            Counts(iv.baseline.n, sum(iv.baseline.brier)),
            Counts(iv.canary.n, sum(iv.canary.brier)),
        )
        for iv in intervals
    ]


def accumulate(totals: tuple[Bins, Bins], intervals: Sequence[CalibrationInterval]) -> tuple[Bins, Bins]:
    """Running (baseline, canary) totals after more intervals; an interval whose counters are not
    possible (a bad read) is left out of both arms."""
    b, c = totals
    for iv in intervals:
        if iv.baseline.valid() and iv.canary.valid():
            b, c = b + iv.baseline, c + iv.canary
    return b, c


def status(totals: tuple[Bins, Bins], through: datetime) -> CalibrationStatus:
    """status.calibration: both arms' ECE, MCE, Brier score and reliability diagram so far."""

    def arm(bins: Bins) -> ArmCalibrationStatus:
        r = report(bins)
        rows = [ReliabilityBin(count=x.count, confidence=x.confidence, accuracy=x.accuracy) for x in r.bins]
        return ArmCalibrationStatus(
            n=r.n,
            ece=r.ece,
            mce=r.mce,
            brier=r.brier,
            accuracy=r.accuracy,
            confidence=r.confidence,
            bins=rows,
        )

    return CalibrationStatus(baseline=arm(totals[0]), canary=arm(totals[1]), updated_at=through)
