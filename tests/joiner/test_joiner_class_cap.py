"""The `class` label stays bounded: the joiner (a real process) and the LossRecorder keep the first
--max-classes / max_classes values of each model version, fold later ones into "other" and count
them, so a label with unbounded values cannot grow Prometheus without limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lossgate.instrument import LossRecorder
from lossgate.joiner import JoinerClient
from lossgate_dev.devenv.joiner import JoinerProcess
from tests.joiner.helpers import samples, value

CLASSES = ("a", "b", "c", "d", "a", "c", "other")


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[JoinerProcess]:
    j = JoinerProcess.start(
        tmp_path / "joiner", "--sqlite", str(tmp_path / "joiner.db"), "--max-classes", "2"
    )
    yield j
    j.stop()


def _classes(text: str, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in samples(text).items():
        if n == name:
            klass = dict(labels).get("class")
            if klass is not None:
                out[klass] = out.get(klass, 0.0) + v
    return out


def test_joiner_folds_classes_beyond_the_cap_into_other(joiner: JoinerProcess) -> None:
    # Given a joiner admitting 2 classes per model version
    client = JoinerClient(joiner.url)
    # When predictions of 4 classes arrive for one version (and 1 class for another), all labelled
    batch = [
        {"id": f"p{i}", "model": "m", "version": "v1", "class": k, "probabilities": [0.8, 0.2]}
        for i, k in enumerate(CLASSES)
    ] + [{"id": "q0", "model": "m", "version": "v2", "class": "z", "probabilities": [0.8, 0.2]}]
    client.predictions(batch)
    client.labels([{"id": p["id"], "label": 0} for p in batch])
    text = joiner.metrics()
    # Then the first two classes keep their series, c and d are counted as "other" (with the
    # predictions already labelled "other"), and another version has its own budget
    counts = _classes(text, "model_prediction_loss_count")
    assert counts == {"a": 2.0, "b": 1.0, "other": 4.0, "z": 1.0}
    # And the folded predictions are counted per version
    assert value(text, "lossgate_joiner_class_folded_total", model="m", version="v1") == 3.0
    assert value(text, "lossgate_joiner_class_folded_total", model="m", version="v2") == 0.0


def test_loss_recorder_folds_classes_beyond_the_cap() -> None:
    # Given a recorder admitting 2 classes per version
    registry = CollectorRegistry()
    rec = LossRecorder(registry, max_classes=2)
    # When predictions of 4 classes are labelled
    for i, k in enumerate(CLASSES):
        rec.record_prediction(i, probabilities=[0.8, 0.2], model="m", version="v1", klass=k)
        rec.record_label(i, 0)
    text = generate_latest(registry).decode()
    # Then the series are a, b and other, and the folds are counted
    assert _classes(text, "model_prediction_loss_count") == {"a": 2.0, "b": 1.0, "other": 4.0}
    assert value(text, "model_prediction_class_folded_total", model="m", version="v1") == 3.0
