"""The serving helpers as Prometheus sees them: series, labels and buckets scraped from a LossRecorder,
and the example model server driven over HTTP and read back through the adapter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.instrument import LOSS_BUCKETS, LossRecorder
from lossgate.instrument.buckets import le_label
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "instrument" / "serve_model.py"


def _value(prometheus: Prometheus, query: str) -> float:
    (sample,) = prometheus.query(query)
    return float(sample["value"][1])


def test_recorder_series_labels_and_buckets_as_scraped(prometheus: Prometheus) -> None:
    # Given a recorder (capacity 3, TTL 10 s on a fake clock) served with its own /metrics server
    now = [0.0]
    recorder = LossRecorder(CollectorRegistry(), capacity=3, ttl_s=10, clock=lambda: now[0])
    port = recorder.serve(free_port(), addr="127.0.0.1")
    # When predictions are served and labelled: binary, multi-class with a class label, and a
    # confident mistake (p(true) = 0.005, loss 5.3 > 4.6)
    recorder.record_prediction("a", probabilities=0.9, model="m", version="v1")
    recorder.record_prediction("b", logits=[2.0, 0.0, -1.0], model="m", version="v1", klass="gold")
    recorder.record_prediction("c", probabilities=[0.995, 0.005], model="m", version="v1")
    la, lc, gold = recorder.record_label("a", 1), recorder.record_label("c", 1), recorder.record_label("b", 0)
    assert la is not None
    assert lc is not None
    assert gold is not None
    assert recorder.record_label("a", 1) is None  # already labelled: unknown now, counted
    # ... 4 more predictions overflow capacity 3 (one evicted), and the rest expire after 10 s
    for pid in "defg":
        recorder.record_prediction(pid, probabilities=0.5, model="m", version="v1")
    now[0] = 11.0
    assert recorder.pending() == 0
    prometheus.add_target(f"127.0.0.1:{port}")
    prometheus.wait_target_up(f"127.0.0.1:{port}")
    wait_until(lambda: bool(prometheus.query("model_prediction_pending_evicted_total")), 20, "scrape")

    # Then the histogram has the documented buckets, 4.6 among them, labelled model/version
    sel = '{model="m",version="v1",class=""}'
    buckets = prometheus.query(f"model_prediction_loss_bucket{sel}")
    assert {b["metric"]["le"] for b in buckets} == {le_label(b) for b in LOSS_BUCKETS} | {"+Inf"}
    assert "4.6" in {b["metric"]["le"] for b in buckets}
    assert _value(prometheus, 'model_prediction_loss_bucket{model="m",version="v1",class="",le="4.6"}') == 1
    # And count, sum and squared sum are exact; the class-labelled series is separate
    assert _value(prometheus, f"model_prediction_loss_count{sel}") == 2
    assert _value(prometheus, f"model_prediction_loss_sum{sel}") == la + lc
    assert _value(prometheus, f"model_prediction_loss_squared_sum{sel}") == la**2 + lc**2
    assert _value(prometheus, 'model_prediction_loss_sum{class="gold"}') == gold
    assert _value(prometheus, 'model_predictions_total{class=""}') == 6
    assert math.isclose(lc, -math.log(0.005))
    assert lc > 4.6
    # And evictions are counted by reason, unknown labels and pending predictions too
    assert _value(prometheus, 'model_prediction_pending_evicted_total{reason="capacity"}') == 1
    assert _value(prometheus, 'model_prediction_pending_evicted_total{reason="ttl"}') == 3
    assert _value(prometheus, "model_prediction_label_unknown_total") == 1
    assert _value(prometheus, "model_prediction_pending") == 0
    # And Prometheus knows the squared sum as a counter (it is differenced like one)
    meta = prometheus.api("metadata", metric="model_prediction_loss_squared_sum")
    assert meta["model_prediction_loss_squared_sum"][0]["type"] == "counter"
    recorder.close()


@pytest.fixture
def model_servers(prometheus: Prometheus, tmp_path: Path) -> Iterator[dict[str, int]]:
    ports, procs = {"v41": free_port(), "v42": free_port()}, []
    for version, port in ports.items():
        skew = "0" if version == "v41" else "1.5"
        log = open(tmp_path / f"{version}.log", "wb")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, str(EXAMPLE), "--version", version, "--port", str(port), "--skew", skew]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log))
        prometheus.add_target(f"127.0.0.1:{port}")
    for port in ports.values():
        prometheus.wait_target_up(f"127.0.0.1:{port}")
    yield ports
    for p in procs:
        p.terminate()
        p.wait(10)


def _post(port: int, path: str, doc: dict[str, Any]) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(doc).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_example_model_server_end_to_end(prometheus: Prometheus, model_servers: dict[str, int]) -> None:
    # Given the example model server running as baseline (v41) and a skewed canary (v42), scraped
    rng = np.random.default_rng(5)
    start = round(time.time(), 3)
    served: dict[str, list[tuple[str, int]]] = {"v41": [], "v42": []}
    # When the same 40 requests go to each (30% of them turn out to be fraud),
    for _ in range(40):
        x, y = rng.normal(size=8).tolist(), int(rng.random() < 0.3)
        for version, port in model_servers.items():
            served[version].append((_post(port, "/predict", {"features": x})["id"], y))
    # ... and the labels arrive afterwards (plus one for an id nobody served)
    sums: dict[str, float] = {}
    for version, port in model_servers.items():
        total = 0.0
        for pid, y in served[version]:
            total += _post(port, "/label", {"id": pid, "label": y})["loss"]  # the server's own order
        sums[version] = total
        assert _post(port, "/label", {"id": "nobody", "label": 1}) == {"loss": None}
    wait_until(
        lambda: all(_value(prometheus, f'model_prediction_loss_count{{version="{v}"}}') == 40 for v in sums),
        20, "labels scraped",
    )  # fmt: skip
    end = round(time.time(), 3)

    # Then the adapter reads 40 labelled predictions per arm in one interval, the sums exactly
    ref = LossSeriesRef("ml-prod", "fraud-scorer", "v41", "v42")
    result = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(
        ref, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC), end - start
    )
    assert isinstance(result, list), result
    (iv,) = result
    assert (iv.baseline.n, iv.canary.n) == (40.0, 40.0)
    assert (iv.baseline.sum, iv.canary.sum) == (sums["v41"], sums["v42"])
    assert _value(prometheus, 'model_predictions_total{version="v41"}') == 40
