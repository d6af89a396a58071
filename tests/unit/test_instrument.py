"""Instrumentation helpers, pure parts: cross-entropy, the pending-prediction store, exposition.

(Scraped by a real Prometheus in tests/adapters/test_instrument_serving.py and test_prom_*.py.)
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from lossgate.instrument import (
    CATASTROPHIC_LOSS,
    LOSS_BUCKETS,
    MAX_LOSS,
    LossRecorder,
    TrainingExporter,
    cross_entropy,
    log_probs,
)
from lossgate.instrument.buckets import validate_buckets
from lossgate.instrument.step_stats import GateSettings
from lossgate.instrument.training import FOLD_STEPS


def _sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


# Cross-entropy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "label", "expected"),
    [
        ({"probabilities": 0.8}, 1, -math.log(0.8)),
        ({"probabilities": 0.8}, 0, -math.log(0.2)),
        ({"probabilities": [0.8]}, 1, -math.log(0.8)),
        ({"probabilities": [0.3, 0.7]}, 0, -math.log(0.3)),
        ({"probabilities": [0.2, 0.5, 0.3]}, 2, -math.log(0.3)),
        ({"logits": 0.0}, 1, math.log(2)),
        ({"logits": 2.0}, 0, math.log1p(math.exp(2.0))),
        ({"logits": [1.0, 2.0, 3.0]}, 0, -(1.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))),
        ({"probabilities": 0.0}, 1, MAX_LOSS),  # clipped at p = 1e-6
        ({"probabilities": [1.0, 0.0, 0.0]}, 2, MAX_LOSS),
        ({"logits": -1e6}, 1, MAX_LOSS),
        ({"logits": [1e6, -1e6]}, 1, MAX_LOSS),
        ({"logits": [1e6, -1e6]}, 0, 0.0),
        ({"probabilities": [0.2, 0.8]}, True, -math.log(0.8)),
    ],
)
def test_cross_entropy(kwargs: dict[str, object], label: int, expected: float) -> None:
    assert math.isclose(cross_entropy(label, **kwargs), expected, rel_tol=1e-12, abs_tol=1e-12)  # type: ignore[arg-type]


def test_clip_bound_is_minus_log_of_the_floor() -> None:
    assert -math.log(1e-6) == MAX_LOSS
    assert CATASTROPHIC_LOSS in LOSS_BUCKETS
    assert -math.log(0.01) > CATASTROPHIC_LOSS > -math.log(0.0101)  # loss > 4.6  <=>  p(true) < ~0.01


@settings(max_examples=200)
@given(
    logits=st.lists(st.floats(-50, 50), min_size=2, max_size=12),
    shift=st.floats(-1e3, 1e3),
    data=st.data(),
)
def test_logits_and_their_softmax_give_the_same_loss(
    logits: list[float], shift: float, data: st.DataObject
) -> None:
    z = np.array(logits)
    label = data.draw(st.integers(0, len(logits) - 1))
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    from_logits = cross_entropy(label, logits=z)
    assert math.isclose(from_logits, cross_entropy(label, logits=z + shift), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(from_logits, cross_entropy(label, probabilities=p), rel_tol=1e-9, abs_tol=1e-9)
    assert 0.0 <= from_logits <= MAX_LOSS


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"probabilities": 0.5, "logits": 0.0},
        {"probabilities": [0.5, float("nan")]},
        {"probabilities": [-0.1, 1.1]},
        {"probabilities": []},
        {"logits": [1.0, float("inf")]},
        {"probabilities": [[0.2, 0.8], [0.5, 0.5]]},  # a batch is not one prediction
    ],
)
def test_malformed_predictions_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|give exactly one"):
        log_probs(**kwargs)  # type: ignore[arg-type]


def test_out_of_range_label_raises() -> None:
    with pytest.raises(ValueError, match="class index"):
        cross_entropy(3, probabilities=[0.2, 0.3, 0.5])


def test_buckets_must_include_the_catastrophic_bound() -> None:
    assert validate_buckets([0.1, 4.6, 10]) == (0.1, 4.6, 10.0)
    for bad in ([0.1, 1.0], [4.6, 0.1], [0.0, 4.6], [4.6, float("inf")]):
        with pytest.raises(ValueError, match="loss buckets must"):
            validate_buckets(bad)


# LossRecorder --------------------------------------------------------------------------------------


def test_loss_exactly_at_a_bound_falls_in_that_bucket() -> None:
    reg = CollectorRegistry()
    rec = LossRecorder(reg, buckets=[1.0, 4.6])
    rec.record_prediction(1, probabilities=math.exp(-4.6), model="m", version="v")
    loss = rec.record_label(1, 1)
    assert loss is not None
    assert abs(loss - 4.6) < 1e-12
    le = "4.6" if loss <= 4.6 else "+Inf"
    assert _sample(reg, "model_prediction_loss_bucket", model="m", version="v", le=le) == 1


def test_ttl_and_capacity_evictions_are_counted_by_reason() -> None:
    now = [0.0]
    reg = CollectorRegistry()
    rec = LossRecorder(reg, capacity=2, ttl_s=5, clock=lambda: now[0])
    rec.record_prediction("a", probabilities=0.5, model="m", version="v")
    rec.record_prediction("b", probabilities=0.5, model="m", version="v")
    rec.record_prediction("c", probabilities=0.5, model="m", version="v")  # evicts "a", the oldest
    assert rec.record_label("a", 1) is None
    now[0] = 4.0
    rec.record_prediction("d", probabilities=0.5, model="m", version="v")  # evicts "b"
    now[0] = 5.5  # "c" (t=0) expired; "d" (t=4) still pending
    assert rec.record_label("c", 1) is None
    assert rec.record_label("d", 1) == pytest.approx(math.log(2))
    assert (
        _sample(reg, "model_prediction_pending_evicted_total", model="m", version="v", reason="capacity") == 2
    )
    assert _sample(reg, "model_prediction_pending_evicted_total", model="m", version="v", reason="ttl") == 1
    assert _sample(reg, "model_prediction_label_unknown_total") == 2
    assert _sample(reg, "model_predictions_total", model="m", version="v") == 4
    assert _sample(reg, "model_prediction_loss_count", model="m", version="v") == 1


def test_a_bad_label_raises_and_keeps_the_prediction_pending() -> None:
    rec = LossRecorder(CollectorRegistry())
    rec.record_prediction("x", probabilities=[0.1, 0.9], model="m", version="v")
    with pytest.raises(ValueError, match="label must be a class index"):
        rec.record_label("x", 7)
    assert rec.pending() == 1
    assert rec.record_label("x", 1) == pytest.approx(-math.log(0.9))


def test_concurrent_recording_keeps_count_sum_and_sumsq_consistent() -> None:
    reg = CollectorRegistry()
    rec = LossRecorder(reg)
    scrapes: list[tuple[float, float, float]] = []

    def worker(t: int) -> None:
        for i in range(400):
            rec.record_prediction((t, i), probabilities=0.5, model="m", version="v")
            rec.record_label((t, i), 1)

    def scraper() -> None:
        for _ in range(50):  # one collect() per scrape, as prometheus_client's exposition does
            values = {(x.name, x.labels.get("version")): x.value for m in reg.collect() for x in m.samples}
            names = (
                "model_prediction_loss_count",
                "model_prediction_loss_sum",
                "model_prediction_loss_squared_sum",
            )
            scrapes.append(tuple(values.get((name, "v"), 0.0) for name in names))  # type: ignore[arg-type]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(6)] + [
        threading.Thread(target=scraper)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    n = _sample(reg, "model_prediction_loss_count", model="m", version="v")
    assert n == 2400
    assert rec.pending() == 0
    assert _sample(reg, "model_prediction_loss_sum", model="m", version="v") == pytest.approx(
        2400 * math.log(2)
    )
    # every scrape saw one consistent state: sum and sum of squares match its count
    for count, total, sq in scrapes:
        assert total == pytest.approx(count * math.log(2))
        assert sq == pytest.approx(count * math.log(2) ** 2)


def test_exposition_names_in_both_text_formats() -> None:
    reg = CollectorRegistry()
    rec = LossRecorder(reg)
    rec.record_prediction(1, probabilities=0.9, model="m", version="v", klass="gold")
    rec.record_label(1, 1)
    for text in (generate_latest(reg).decode(), generate_openmetrics(reg).decode()):  # type: ignore[no-untyped-call]
        assert 'model_prediction_loss_squared_sum{class="gold",model="m",version="v"}' in text
        assert 'model_prediction_loss_bucket{class="gold",le="4.6",model="m",version="v"} 1.0' in text
        assert 'model_predictions_total{class="gold",model="m",version="v"} 1.0' in text
        assert "model_prediction_loss_created{" in text
    with pytest.raises(
        ValueError, match="Duplicated timeseries"
    ):  # one recorder per registry and metric name
        LossRecorder(reg)
    rec.close()
    LossRecorder(reg)  # closed: the names are free again


# TrainingExporter ----------------------------------------------------------------------------------


def test_training_exporter_detects_nonfinite_steps_itself() -> None:
    ex = TrainingExporter("run-1", 0)
    assert generate_latest(ex.registry).decode().count("{") == 0  # nothing before the first step
    assert ex.on_step(1, 0.7, 1.2) is False
    assert ex.on_step(2, float("nan"), 1.2) is True
    assert ex.on_step(3, 0.7, float("inf")) is True
    assert ex.on_step(4, 0.7, 1.0, nonfinite=True) is True  # e.g. an AMP scaler skipped the step
    assert ex.on_step(5, 0.6, 1.1) is False
    reg, lab = ex.registry, {"run": "run-1", "rank": "0"}
    assert reg.get_sample_value("training_nonfinite_steps_total", lab) == 3
    assert reg.get_sample_value("training_step", lab) == 5
    assert reg.get_sample_value("training_loss_scale", lab) is None  # not mixed precision
    ex.on_step(6, 0.5, 1.0, loss_scale=1024.0)
    ex.on_validation(0.55)
    assert reg.get_sample_value("training_loss_scale", lab) == 1024.0
    assert reg.get_sample_value("validation_loss", lab) == 0.55
    assert 'training_loss{rank="0",run="run-1"} NaN' not in generate_latest(reg).decode()


def test_a_scrape_sees_every_step_although_steps_are_folded_in_batches() -> None:
    # Given an exporter on a frozen clock (no time-based fold) and settings with a short warm-up
    ex = TrainingExporter("run-2", 1, clock=lambda: 100.0, settings=GateSettings(window=20, min_history=5,
                                                                                warmup_steps=3))  # fmt: skip
    lab = {"run": "run-2", "rank": "1"}
    # When fewer steps than one batch are recorded (so none was folded by count)
    steps = FOLD_STEPS // 2
    for k in range(1, steps + 1):
        ex.on_step(k, 1.0 + 0.01 * (k % 3), 2.0 + 0.01 * (k % 5))
    assert len(ex._pending) == steps  # nothing folded yet
    # Then a scrape folds them first: every post-warm-up step is in the counted series
    assert ex.registry.get_sample_value("training_steps_total", lab) == steps
    assert ex.registry.get_sample_value("training_assessed_steps_total", lab) == steps - 2 - 5
    assert not ex._pending
    # And a whole batch folds on its own, without a scrape
    for k in range(steps + 1, steps + 1 + FOLD_STEPS):
        ex.on_step(k, 1.0, 2.0)
    assert len(ex._pending) == 0
    assert ex.stats.counts.steps == steps + FOLD_STEPS
