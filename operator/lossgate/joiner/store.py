"""The storage port: one implementation per backend (SQLite, Redis), the same guarantees.

- add_predictions: a batch is stored whole or not at all (Full when it would exceed the capacity);
  an id already stored for the same arm (model and version), or already labelled or expired, is a
  duplicate and changes nothing. One id may be pending for several arms (mirrored traffic).
- add_labels: a label joins its pending predictions (every arm of the id) once, and counts the
  paired differences of the versions of one model that both predicted it (PairSums); the pending
  rows and the series and pair counters change in one transaction (SQLite) or one Lua script
  (Redis), so a crash never counts half a join and a redelivery never counts twice. A label
  outside the prediction's classes refuses the batch.
- expire: predictions pending past their deadline are counted as expired (reason "ttl") in the same
  transaction that removes them.
- snapshot: the series counters, read consistently, for /metrics; outcomes: durable counts of
  duplicates, stale predictions and late or unknown labels (OUTCOMES).
"""

from __future__ import annotations

from typing import Protocol

from lossgate.joiner.accounting import PairSums, Series
from lossgate.joiner.records import Label, LabelResult, PairKey, Prediction, PredictResult, SeriesKey, arm


class Store(Protocol):
    capacity: int
    ttl_s: float

    def add_predictions(self, batch: list[Prediction], now: float) -> PredictResult: ...

    def add_labels(self, batch: list[Label], now: float) -> LabelResult: ...

    def expire(self, now: float) -> int: ...

    def snapshot(self) -> dict[SeriesKey, Series]: ...

    def pairs(self) -> dict[PairKey, PairSums]: ...

    def pending(self) -> int: ...

    def exporter(self) -> bool: ...

    def outcomes(self) -> dict[str, int]: ...

    def close(self) -> None: ...


# Durable counters of what did not join (exported as lossgate_joiner_*_total{outcome}).
OUTCOMES = (
    "prediction_duplicate",
    "prediction_stale",
    "label_joined",
    "label_duplicate",
    "label_late",
    "label_unknown",
)


def outcome_deltas(p: PredictResult | None = None, lab: LabelResult | None = None) -> dict[str, int]:
    d: dict[str, int] = {}
    if p is not None:
        d |= {"prediction_duplicate": p.duplicate, "prediction_stale": p.stale}
    if lab is not None:
        d |= {
            "label_joined": lab.joined,
            "label_duplicate": lab.duplicate,
            "label_late": lab.late,
            "label_unknown": lab.unknown,
        }
    return {k: v for k, v in d.items() if v}


def first_seen(
    batch: list[Prediction], known: set[tuple[str, str]], done: set[str], now: float, ttl_s: float
) -> tuple[list[Prediction], PredictResult]:
    """The predictions of a batch to store: (id, arm) not known, id not labelled or expired, not
    repeated within the batch, not already expired."""
    result, fresh, seen = PredictResult(), [], set(known)
    for p in batch:
        a = (p.id, arm(p.key))
        if a in seen or p.id in done:
            result.duplicate += 1
        elif p.served_at + ttl_s <= now:
            result.stale += 1
        else:
            seen.add(a)
            fresh.append(p)
    result.accepted = len(fresh)
    return fresh, result
