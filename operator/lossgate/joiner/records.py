"""What the joiner stores and counts: predictions, labels, series keys, and the refusals it gives."""

from __future__ import annotations

import json
from dataclasses import dataclass

# (model, version, class or None): one exported label set, as LossRecorder keys its series.
SeriesKey = tuple[str, str, str | None]


def series_name(key: SeriesKey) -> str:
    """A stable, newline-free text form of a series key (storage keys and tables use it)."""
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=True)


def series_key(name: str) -> SeriesKey:
    model, version, klass = json.loads(name)
    return (str(model), str(version), None if klass is None else str(klass))


# (model, version a, version b, class or None), a < b: the paired counters of requests both versions
# predicted, d = loss(b) - loss(a). Exported in both orientations (exposition).
PairKey = tuple[str, str, str, str | None]


def pair_name(key: PairKey) -> str:
    return json.dumps(list(key), separators=(",", ":"), ensure_ascii=True)


def pair_key(name: str) -> PairKey:
    model, a, b, klass = json.loads(name)
    return (str(model), str(a), str(b), None if klass is None else str(klass))


def arm(key: SeriesKey) -> str:
    """The arm of a prediction (model and version, not its class): one id may be predicted once per
    arm (mirrored traffic gives one request id two versions)."""
    return f"{key[0]}\x1f{key[1]}"


@dataclass(frozen=True, slots=True)
class Prediction:
    """A served prediction: `lp` holds its log-probabilities (float64 bytes, lossgate.instrument's
    log_probs), computed once on arrival so that a label only reads one number."""

    id: str
    key: SeriesKey
    served_at: float
    lp: bytes


@dataclass(frozen=True, slots=True)
class Label:
    id: str
    label: int
    field: str  # where it came from in the request ("labels[3]"), for an error naming it
    # A language model's label: (S, T), the reference continuation's summed token NLL and its tokens
    # (lossgate.instrument.lm computes them); `label` is then unused.
    token: tuple[float, int] | None = None


class FieldError(ValueError):
    """Malformed input: names the offending field; the request is refused whole (HTTP 400)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Full(Exception):
    """The pending store is at capacity: refused whole, retry later (HTTP 429 with Retry-After)."""

    def __init__(self, pending: int, capacity: int, incoming: int) -> None:
        super().__init__(
            f"{pending} predictions pending of a capacity of {capacity}; {incoming} more do not fit. "
            "Retry later, or raise --capacity / shorten --ttl."
        )
        self.pending = pending
        self.capacity = capacity


@dataclass(slots=True)
class PredictResult:
    accepted: int = 0
    duplicate: int = 0  # already stored, labelled or expired: a redelivery changes nothing
    stale: int = 0  # served longer than the TTL ago: would expire at once, not stored

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicate": self.duplicate, "stale": self.stale}


@dataclass(slots=True)
class LabelResult:
    joined: int = 0
    duplicate: int = 0  # its prediction was already labelled
    late: int = 0  # its prediction expired unlabelled before the label came
    unknown: int = 0  # no such prediction (never seen, or forgotten after the grace period)

    def as_dict(self) -> dict[str, int]:
        return {
            "joined": self.joined,
            "duplicate": self.duplicate,
            "late": self.late,
            "unknown": self.unknown,
        }
