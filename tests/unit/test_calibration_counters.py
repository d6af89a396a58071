"""The reliability counters the recorder and the joiner export, against a ledger, and ECE/MCE against
torchmetrics' CalibrationError on the same predictions (docs/metrics.md, "Calibration")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from torchmetrics.classification import MulticlassCalibrationError

from lossgate.conventions import CALIBRATION_BINS, CALIBRATION_METRIC
from lossgate.core.calibration import Bins, CalibrationInterval, accumulate, ece, mce, report
from lossgate.instrument import LossRecorder
from lossgate.instrument.losses import log_probs
from lossgate.joiner.accounting import Series, score
from lossgate.joiner.exposition import families

KINDS = ("count", "confidence", "correct", "brier")


def _predictions(seed: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """n softmax predictions over k classes, labels drawn from a tempered (overconfident) version."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    truth = np.exp(logits / 2.0)
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in truth])
    return p, labels


def _ledger(p: np.ndarray, labels: np.ndarray) -> list[list[float]]:
    """Per kind and bin, the plain sums, in the order the predictions were labelled."""
    out = [[0.0] * CALIBRATION_BINS for _ in KINDS]
    for row, y in zip(p, labels, strict=True):
        top = int(np.argmax(row))
        conf = float(row[top])
        b = min(int(conf * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        brier = float(sum((q - (1.0 if j == y else 0.0)) ** 2 for j, q in enumerate(row)))
        for i, x in enumerate((1.0, conf, float(top == y), brier)):
            out[i][b] += x
    return out


def _exported(registry: CollectorRegistry, version: str) -> Bins:
    def get(kind: str, b: int) -> float:
        v = registry.get_sample_value(
            f"{CALIBRATION_METRIC}_{kind}_total", {"model": "m", "version": version, "bin": str(b)}
        )
        assert v is not None, (kind, b)
        return v

    return Bins(*(tuple(get(kind, b) for b in range(CALIBRATION_BINS)) for kind in KINDS))


def test_recorder_counters_equal_the_ledger_and_ece_mce_equal_torchmetrics() -> None:
    # Given 3,000 overconfident 5-class predictions, all labelled, and 50 more never labelled
    p, labels = _predictions(seed=7, n=3000, k=5)
    registry = CollectorRegistry()
    rec = LossRecorder(registry)
    for i, row in enumerate(p):
        rec.record_prediction(i, probabilities=row, model="m", version="v1")
    for i in range(50):
        rec.record_prediction(f"never-{i}", probabilities=p[i], model="m", version="v1")
    # When their labels arrive
    for i, y in enumerate(labels):
        rec.record_label(i, int(y))
    bins = _exported(registry, "v1")
    # Then every bin's count and correct equal the ledger's exactly, the sums to float rounding
    want = _ledger(p, labels)
    assert list(bins.count) == want[0]
    assert list(bins.correct) == want[2]
    for got, exp in ((bins.confidence, want[1]), (bins.brier, want[3])):
        for g, e in zip(got, exp, strict=True):
            assert math.isclose(g, e, rel_tol=1e-12, abs_tol=1e-12)
    assert bins.n == 3000
    # And ECE and MCE from the counters equal torchmetrics' on the same predictions, within float32
    # rounding: torchmetrics computes in float32 whatever the input (unit roundoff 6e-8; its bin sums add up
    # to 3,000 terms, so a relative error up to ~3,000 x 6e-8 = 2e-4 is possible, 1e-6 typical)
    preds, target = torch.tensor(p, dtype=torch.float64), torch.tensor(labels)
    for norm, ours in (("l1", ece(bins)), ("max", mce(bins))):
        theirs = MulticlassCalibrationError(num_classes=5, n_bins=CALIBRATION_BINS, norm=norm)(preds, target)
        assert ours is not None
        assert math.isclose(ours, float(theirs), rel_tol=2e-4, abs_tol=1e-7), norm
    # And the mean Brier score is the multi-class Brier score of the predictions
    onehot = np.eye(5)[labels]
    r = report(bins)
    assert r.brier is not None
    assert math.isclose(r.brier, float(((p - onehot) ** 2).sum(axis=1).mean()), rel_tol=1e-12)
    rec.close()


def test_joiner_exports_the_same_counters_under_the_same_names() -> None:
    # Given one joined series fed the same predictions as a recorder
    p, labels = _predictions(seed=11, n=400, k=3)
    registry = CollectorRegistry()
    rec = LossRecorder(registry)
    series = Series(created=1.0)
    for i, (row, y) in enumerate(zip(p, labels, strict=True)):
        rec.record_prediction(i, probabilities=row, model="m", version="v1")
        rec.record_label(i, int(y))
        series.observe(score(log_probs(probabilities=row).tobytes(), int(y), 0.0, 0.0))
    # When the joiner's /metrics families are rendered
    joined = CollectorRegistry(auto_describe=False)

    class _C:
        def collect(self):  # type: ignore[no-untyped-def]
            return families({("m", "v2", None): series}, {})

    joined.register(_C())
    # Then the joiner's bins equal the recorder's, name for name and bin for bin
    a, b = _exported(registry, "v1"), _exported(joined, "v2")
    assert a.count == b.count
    assert a.correct == b.correct
    for x, y in ((a.confidence, b.confidence), (a.brier, b.brier)):
        assert all(math.isclose(u, v, rel_tol=1e-12, abs_tol=1e-12) for u, v in zip(x, y, strict=True))
    created = joined.get_sample_value(
        f"{CALIBRATION_METRIC}_count_created", {"model": "m", "version": "v2", "bin": "0"}
    )
    assert created == 1.0
    rec.close()


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=4), st.integers(0, 3)),
        min_size=1,
        max_size=60,
    ),
    cut=st.integers(0, 60),
)
def test_ece_is_bounded_by_mce_and_intervals_add_up(rows: list[tuple[list[float], int]], cut: int) -> None:
    # Given any predictions, split at `cut` into two analysis intervals
    probs = [np.asarray(r) / sum(r) for r, _ in rows]
    labels = [y % len(r) for r, y in rows]

    def bins_of(ix: range) -> Bins:
        led = _ledger(np.array([probs[i] for i in ix], dtype=object), np.array([labels[i] for i in ix]))
        return Bins(*(tuple(x) for x in led)) if len(ix) else Bins()

    cut = min(cut, len(rows))
    first, second = bins_of(range(cut)), bins_of(range(cut, len(rows)))
    whole = bins_of(range(len(rows)))
    # When the operator accumulates the two intervals
    b, _ = accumulate(
        (Bins(), Bins()), [CalibrationInterval(0, 1, first, first), CalibrationInterval(1, 2, second, second)]
    )
    # Then the totals are the whole stream's, and 0 <= ECE <= MCE <= 1
    assert b.count == whole.count
    e, m = ece(b), mce(b)
    assert e is not None
    assert m is not None
    assert 0.0 <= e <= m + 1e-12 <= 1.0 + 1e-12
    assert e == pytest.approx(ece(whole), abs=1e-12)
