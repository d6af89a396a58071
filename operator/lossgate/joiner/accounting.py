"""Pure join accounting: the loss of a labelled prediction and the counters of one series.

The loss is lossgate.instrument's (same clip, same buckets), so a series exported by the joiner and
one exported by an in-process LossRecorder are interchangeable for the operator.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

import numpy as np

from lossgate.conventions import MAX_LOSS_NATS
from lossgate.instrument.buckets import LOSS_BUCKETS
from lossgate.instrument.calibration import CALIBRATION_BINS, Calibrated, calibrate
from lossgate.instrument.losses import loss_from_log_probs
from lossgate.instrument.tokens import TokenSums
from lossgate.joiner.records import PairKey, SeriesKey

# Label delay (label time minus serving time), seconds: 1 s to 4 weeks, dense around hours and days.
DELAY_BUCKETS: tuple[float, ...] = (
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 43200.0, 86400.0, 172800.0, 259200.0, 432000.0, 604800.0, 1209600.0, 2419200.0,
)  # fmt: skip
EXPIRY_REASONS = ("ttl",)


@dataclass(frozen=True, slots=True)
class Scored:
    """One joined label, ready to be counted."""

    loss: float
    bucket: int  # index into LOSS_BUCKETS (+Inf last)
    delay: float
    delay_bucket: int  # index into DELAY_BUCKETS (+Inf last)
    # Confidence bin, confidence, correct, Brier score (docs/metrics.md, "Calibration"); None for a
    # language model's token label (no class distribution to be calibrated).
    cal: Calibrated | None = None
    token: tuple[float, int] | None = None  # a language model's (S, T)


def score(
    lp: bytes, label: int, served_at: float, now: float, token: tuple[float, int] | None = None
) -> Scored:
    """Loss of `label` under the stored log-probabilities; ValueError names the valid class range.
    A token label (S, T) of a language model's prediction (stored without scores) counts the token
    counters, and S / T (its NLL per token, within [0, MAX_LOSS]) as the request's loss."""
    if token is not None:
        if lp:
            raise ValueError("this prediction has class scores: send its class index as label, not token_nll")
        loss = min(token[0] / token[1], MAX_LOSS_NATS)
        delay = max(0.0, now - served_at)
        return Scored(
            loss,
            bisect.bisect_left(LOSS_BUCKETS, loss),
            delay,
            bisect.bisect_left(DELAY_BUCKETS, delay),
            token=token,
        )
    if not lp:
        raise ValueError("this prediction has no class scores (token_loss): send token_nll and tokens")
    vec = np.frombuffer(lp, dtype=np.float64)
    loss = loss_from_log_probs(vec, label)
    delay = max(0.0, now - served_at)  # a label stamped before serving (clock skew) counts as 0 s
    return Scored(
        loss,
        bisect.bisect_left(LOSS_BUCKETS, loss),
        delay,
        bisect.bisect_left(DELAY_BUCKETS, delay),
        calibrate(vec, label),
    )


def _ints() -> list[int]:
    return [0] * CALIBRATION_BINS


def _floats() -> list[float]:
    return [0.0] * CALIBRATION_BINS


def classes(lp: bytes) -> int:
    return len(lp) // 8


@dataclass(slots=True)
class Series:
    """The exported counters of one (model, version, class); monotone, persisted with the join."""

    created: float
    predictions: int = 0
    count: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LOSS_BUCKETS) + 1))
    delay_buckets: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))
    delay_sum: float = 0.0
    expired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXPIRY_REASONS, 0))
    # Reliability counters per confidence bin: count, sum of confidence, correct, sum of Brier.
    cal_count: list[int] = field(default_factory=_ints)
    cal_confidence: list[float] = field(default_factory=_floats)
    cal_correct: list[int] = field(default_factory=_ints)
    cal_brier: list[float] = field(default_factory=_floats)
    tokens: TokenSums | None = None  # a language model's token counters, from its first token label

    @property
    def pending(self) -> int:
        return self.predictions - self.count - sum(self.expired.values())

    def observe(self, s: Scored) -> None:
        self.count += 1
        self.sum += s.loss
        self.sumsq += s.loss * s.loss
        self.buckets[s.bucket] += 1
        self.delay_buckets[s.delay_bucket] += 1
        self.delay_sum += s.delay
        c = s.cal
        if c is not None:
            self.cal_count[c.bin] += 1
            self.cal_confidence[c.bin] += c.confidence
            self.cal_correct[c.bin] += c.correct
            self.cal_brier[c.bin] += c.brier
        if s.token is not None:
            self.tokens = (self.tokens or TokenSums(self.created)).add(*s.token)

    def copy(self) -> Series:
        return Series(
            self.created, self.predictions, self.count, self.sum, self.sumsq, list(self.buckets),
            list(self.delay_buckets), self.delay_sum, dict(self.expired), list(self.cal_count),
            list(self.cal_confidence), list(self.cal_correct), list(self.cal_brier), self.tokens,
        )  # fmt: skip


@dataclass(slots=True)
class PairSums:
    """The paired counters of one (model, version a, version b, class): labelled requests both
    versions predicted, the sum of each version's loss on them (so the sum of d = loss(b) - loss(a)
    is sum_b - sum_a while every exported counter stays monotone) and the sum of d^2."""

    created: float
    count: int = 0
    sum_a: float = 0.0
    sum_b: float = 0.0
    sumsq: float = 0.0

    def observe(self, la: float, lb: float) -> None:
        self.count += 1
        self.sum_a += la
        self.sum_b += lb
        self.sumsq += (lb - la) * (lb - la)

    def copy(self) -> PairSums:
        return PairSums(self.created, self.count, self.sum_a, self.sum_b, self.sumsq)


def pair_losses(arms: list[tuple[SeriesKey, float]]) -> list[tuple[PairKey, float, float]]:
    """The pairs of one labelled request: for each two versions a < b of one model that both
    predicted it, (pair key, loss(a), loss(b)). The class is kept when both arms agree on it."""
    out: list[tuple[PairKey, float, float]] = []
    for (ka, la), (kb, lb) in itertools.combinations(sorted(arms, key=lambda a: (a[0][0], a[0][1])), 2):
        if ka[0] == kb[0] and ka[1] != kb[1]:
            out.append(((ka[0], ka[1], kb[1], ka[2] if ka[2] == kb[2] else None), la, lb))
    return out
