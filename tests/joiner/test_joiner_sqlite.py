"""`lossgate joiner` with its SQLite store, as a real process scraped by a real Prometheus: counts
equal the ledger exactly, redeliveries change nothing, kill -9 mid-stream loses nothing and counts
nothing twice, and the operator's own reader gets the ledger's numbers."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.joiner import JoinerClient
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.prom import Prometheus
from tests.joiner.helpers import Ledger, expected_loss, prediction, traffic, value

pytestmark = pytest.mark.prom
VERSIONS = ("v41", "v42")


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[JoinerProcess]:
    j = JoinerProcess.start(tmp_path / "joiner", "--sqlite", str(tmp_path / "joiner.db"))
    yield j
    j.stop()


def _prom(prometheus: Prometheus, query: str) -> float:
    return math.fsum(float(s["value"][1]) for s in prometheus.query(query))


def _send(client: JoinerClient, sent: list[dict[str, Any]], ledger: Ledger, batch: int = 50) -> None:
    for i in range(0, len(sent), batch):
        chunk = sent[i : i + batch]
        client.predictions([prediction(t) for t in chunk])
        for t in chunk:
            ledger.predicted(t["version"], t["id"])
    labelled = [t for t in sent if t["label"] is not None]
    order = np.random.default_rng(3).permutation(len(labelled))  # labels arrive in another order
    labelled = [labelled[i] for i in order]
    for i in range(0, len(labelled), batch):
        chunk = labelled[i : i + batch]
        client.labels([{"id": t["id"], "label": t["label"]} for t in chunk])
        for t in chunk:
            ledger.labelled(t["version"], t["id"], expected_loss(t))


def test_counts_equal_the_ledger_and_redeliveries_change_nothing(
    prometheus: Prometheus, joiner: JoinerProcess
) -> None:
    # Given a joiner scraped by Prometheus every second
    prometheus.add_target(joiner.address)
    prometheus.wait_target_up(joiner.address)
    start = round(time.time(), 3)
    client, ledger = JoinerClient(joiner.url), Ledger()
    # When 300 predictions per arm arrive in batches, then labels for ~80% of them in another order
    sent = traffic(300, seed=1)
    _send(client, sent, ledger)
    # ... and every prediction and label batch is delivered a second time (a retrying logger)
    again = Ledger()
    _send(client, sent, again)
    page = joiner.metrics()
    wait_until(
        lambda: _prom(prometheus, 'model_prediction_loss_count{version="v42"}') == ledger.count("v42"),
        30, "labels scraped",
    )  # fmt: skip
    end = round(time.time(), 3)

    # Then, per arm, Prometheus holds exactly the ledger's predictions, labelled count, loss sums and tail
    for v in VERSIONS:
        sel = f'{{model="fraud-scorer",version="{v}"}}'
        assert _prom(prometheus, f"model_predictions_total{sel}") == len(ledger.predictions[v]) == 300
        assert _prom(prometheus, f"model_prediction_loss_count{sel}") == ledger.count(v)
        assert math.isclose(
            _prom(prometheus, f"model_prediction_loss_sum{sel}"), ledger.sum(v), rel_tol=1e-12
        )
        assert math.isclose(
            _prom(prometheus, f"model_prediction_loss_squared_sum{sel}"), ledger.sumsq(v), rel_tol=1e-12
        )
        le46 = f'model_prediction_loss_bucket{{model="fraud-scorer",version="{v}",le="4.6"}}'
        assert ledger.count(v) - _prom(prometheus, le46) == ledger.tail(v)
        assert _prom(prometheus, f"model_prediction_pending{sel}") == 300 - ledger.count(v)
        assert _prom(prometheus, f"model_prediction_expired_total{sel}") == 0
    # And the second delivery was recognised, item by item, and changed no series
    n_labels = sum(ledger.count(v) for v in VERSIONS)
    assert value(page, "lossgate_joiner_labels_total", outcome="duplicate") == n_labels
    assert value(page, "lossgate_joiner_predictions_refused_total", reason="duplicate") == 600
    assert value(page, "lossgate_joiner_labels_total", outcome="joined") == n_labels
    # And the operator's reader, unchanged, gets the ledger's n and sums for the window
    ref = LossSeriesRef("ml-prod", "fraud-scorer", "v41", "v42")
    result = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(
        ref, datetime.fromtimestamp(start - 1, UTC), datetime.fromtimestamp(end, UTC), end - start + 1
    )
    assert isinstance(result, list), result
    (iv,) = result
    assert (iv.baseline.n, iv.canary.n) == (ledger.count("v41"), ledger.count("v42"))
    assert math.isclose(iv.canary.sum, ledger.sum("v42"), rel_tol=1e-12)
    assert (iv.baseline.tail, iv.canary.tail) == (ledger.tail("v41"), ledger.tail("v42"))


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
    prometheus: Prometheus, joiner: JoinerProcess
) -> None:
    # Given a joiner scraped by Prometheus and a sender that retries (idempotent batches)
    prometheus.add_target(joiner.address)
    prometheus.wait_target_up(joiner.address)
    client, ledger = JoinerClient(joiner.url, retries=60, max_wait_s=0.5), Ledger()
    sent, size = traffic(1000, seed=2), 10
    acked, tenth = [0], threading.Event()
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for i in range(0, len(sent), size):
                chunk = sent[i : i + size]
                client.predictions([prediction(t) for t in chunk])
                labelled = [t for t in chunk if t["label"] is not None]
                client.labels([{"id": t["id"], "label": t["label"]} for t in labelled])
                for t in chunk:
                    ledger.predicted(t["version"], t["id"])
                for t in labelled:
                    ledger.labelled(t["version"], t["id"], expected_loss(t))
                acked[0] += 1
                if acked[0] == 10:
                    tenth.set()
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)

    feeder = threading.Thread(target=feed)
    feeder.start()
    # When the joiner is killed with SIGKILL while batches are in flight, and started again
    assert tenth.wait(60)
    created_before = value(joiner.metrics(), "model_prediction_loss_created", version="v41")
    joiner.kill9()
    killed_at = acked[0]
    joiner.restart()
    feeder.join(120)
    assert not feeder.is_alive()
    assert not errors, errors
    assert killed_at < len(sent) // size  # the kill did land mid-stream

    # Then the counters equal the ledger exactly, on the joiner and in Prometheus
    page = joiner.metrics()
    for v in VERSIONS:
        assert value(page, "model_predictions_total", version=v) == len(ledger.predictions[v]) == 1000
        assert value(page, "model_prediction_loss_count", version=v) == ledger.count(v)
        assert math.isclose(value(page, "model_prediction_loss_sum", version=v), ledger.sum(v), rel_tol=1e-12)
    wait_until(
        lambda: _prom(prometheus, 'model_prediction_loss_count{version="v42"}') == ledger.count("v42"),
        30, "post-restart scrape",
    )  # fmt: skip
    # And the counters continued across the restart: same _created, no reset seen by Prometheus
    assert value(page, "model_prediction_loss_created", version="v41") == created_before
    assert _prom(prometheus, "resets(model_prediction_loss_count[5m])") == 0
    assert _prom(prometheus, "resets(model_predictions_total[5m])") == 0
