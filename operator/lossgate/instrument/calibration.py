"""Per-request calibration numbers of one labelled prediction: its confidence bin, its confidence (the
top-class probability), whether the top class was right, and its Brier score (docs/metrics.md,
"Calibration").

The probabilities are exp of the stored log-probabilities, normalised to sum to 1 (a model that hands
in probabilities that do not quite sum to 1 is scored on the distribution they imply). The top class is
the first one with the largest probability.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from prometheus_client.metrics_core import Metric

from lossgate.conventions import BRIER_MAX, CALIBRATION_BINS, calibration_bin


@dataclass(frozen=True, slots=True)
class Calibrated:
    bin: int  # in [0, CALIBRATION_BINS)
    confidence: float  # top-class probability, in [0, 1]
    correct: int  # 1 when the top class is the label
    brier: float  # sum_k (p_k - 1[k = label])^2, in [0, BRIER_MAX]


def calibrate(lp: npt.NDArray[np.float64], label: int) -> Calibrated:
    """The calibration numbers of one prediction (log-probabilities `lp`) and its label (a valid class
    index: the loss has checked it)."""
    p = np.exp(lp)
    total = float(p.sum())
    if total > 0:
        p = p / total
    top = int(np.argmax(p))
    confidence = min(max(float(p[top]), 0.0), 1.0)
    brier = float(np.dot(p, p)) - 2.0 * float(p[int(label)]) + 1.0
    return Calibrated(
        calibration_bin(confidence), confidence, int(top == int(label)), min(max(brier, 0.0), BRIER_MAX)
    )


def empty_bins() -> list[float]:
    return [0.0] * CALIBRATION_BINS


BinValues = tuple[list[float], list[float], list[float], list[float]]  # count, confidence, correct, brier


CAL_KINDS = ("count", "confidence", "correct", "brier")
_CAL_HELP = {
    "count": "Labelled predictions whose top-class probability falls in the bin.",
    "confidence": "Sum of the top-class probability of the bin's labelled predictions.",
    "correct": "Labelled predictions of the bin whose top class was the label.",
    "brier": "Sum of the Brier score (sum over classes of (p - 1[label])^2) of the bin's predictions.",
}


def calibration_families(
    metric: str, series: Mapping[tuple[str, str, str | None], tuple[float, BinValues]]
) -> Iterator[Metric]:
    """The reliability counters, every bin of every series (zeros too: a bin's first prediction is then
    an increment the operator sees), and `_count_created` per bin (counter restarts)."""
    families = {k: Metric(f"{metric}_{k}", _CAL_HELP[k], "counter") for k in CAL_KINDS}
    for (model, version, klass), (created, values) in sorted(series.items(), key=lambda kv: str(kv[0])):
        labels = {"model": model, "version": version} | ({"class": klass} if klass is not None else {})
        for b in range(CALIBRATION_BINS):
            at = labels | {"bin": str(b)}
            for kind, vals in zip(CAL_KINDS, values, strict=True):
                families[kind].add_sample(f"{metric}_{kind}_total", at, float(vals[b]))
            families["count"].add_sample(f"{metric}_count_created", at, created)
    yield from families.values()


__all__ = ["CALIBRATION_BINS", "CAL_KINDS", "Calibrated", "calibrate", "calibration_families", "empty_bins"]
