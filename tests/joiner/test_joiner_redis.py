"""Two `lossgate joiner` replicas on one real Redis (Debian's redis-server), scraped by a real
Prometheus: labels raced to both replicas count once, exactly one replica exports the shared
counters, and a replica killed with SIGKILL loses nothing."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lossgate.joiner import JoinerClient
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.prom import Prometheus
from lossgate_dev.devenv.redis import RedisServer
from tests.joiner.helpers import Ledger, expected_loss, prediction, traffic, value

pytestmark = pytest.mark.prom


@pytest.fixture
def replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[JoinerProcess]]:
    lease = ("--export-lease", "3s")  # a short lease: the failover below happens within the test
    js = [JoinerProcess.start(tmp_path / f"r{i}", "--redis", redis_server.url, *lease) for i in range(2)]
    yield js
    for j in js:
        j.stop()


def _prom(prometheus: Prometheus, query: str) -> float:
    return math.fsum(float(s["value"][1]) for s in prometheus.query(query))


def test_two_replicas_on_one_redis_count_each_label_once(
    prometheus: Prometheus, replicas: list[JoinerProcess]
) -> None:
    # Given two joiner replicas sharing one Redis, both scraped by Prometheus
    a, b = replicas
    for j in replicas:
        prometheus.add_target(j.address)
        prometheus.wait_target_up(j.address)
    ca, cb = JoinerClient(a.url), JoinerClient(b.url)
    ledger, sent = Ledger(), traffic(400, seed=4)
    # When predictions are spread over both replicas (every batch also redelivered to the other one)
    for i in range(0, len(sent), 40):
        chunk = [prediction(t) for t in sent[i : i + 40]]
        first, second = (ca, cb) if i % 80 == 0 else (cb, ca)
        first.predictions(chunk)
        second.predictions(chunk)
        for t in sent[i : i + 40]:
            ledger.predicted(t["version"], t["id"])
    # ... and every label batch is sent to both replicas at the same moment, from two threads
    labelled = [t for t in sent if t["label"] is not None]
    results: list[dict[str, int]] = []
    for i in range(0, len(labelled), 40):
        batch = [{"id": t["id"], "label": t["label"]} for t in labelled[i : i + 40]]
        go = threading.Barrier(2)

        def send(
            client: JoinerClient, batch: list[dict[str, int]] = batch, go: threading.Barrier = go
        ) -> None:
            go.wait(10)
            results.append(client.labels(batch))

        threads = [threading.Thread(target=send, args=(c,)) for c in (ca, cb)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for t in labelled[i : i + 40]:
            ledger.labelled(t["version"], t["id"], expected_loss(t))

    # Then each label joined exactly once across the two replicas, the other delivery a duplicate
    assert sum(r["joined"] for r in results) == len(labelled)
    assert sum(r["duplicate"] for r in results) == len(labelled)
    # And exactly one replica exports the shared counters, so Prometheus' sum over targets is the ledger's
    wait_until(
        lambda: _prom(prometheus, 'model_prediction_loss_count{version="v42"}') == ledger.count("v42"),
        30, "labels scraped",
    )  # fmt: skip
    assert _prom(prometheus, "lossgate_joiner_exporter") == 1
    for v in ("v41", "v42"):
        sel = f'{{version="{v}"}}'
        assert _prom(prometheus, f"model_predictions_total{sel}") == len(ledger.predictions[v]) == 400
        assert _prom(prometheus, f"model_prediction_loss_count{sel}") == ledger.count(v)
        assert math.isclose(
            _prom(prometheus, f"model_prediction_loss_sum{sel}"), ledger.sum(v), rel_tol=1e-12
        )
        assert math.isclose(
            _prom(prometheus, f"model_prediction_loss_squared_sum{sel}"), ledger.sumsq(v), rel_tol=1e-12
        )
        le46 = f'model_prediction_loss_bucket{{version="{v}",le="4.6"}}'
        assert ledger.count(v) - _prom(prometheus, le46) == ledger.tail(v)

    # When the exporting replica is killed with SIGKILL, and more traffic arrives at the survivor
    exporter, survivor = (a, b) if value(a.metrics(), "lossgate_joiner_exporter") == 1 else (b, a)
    created = value(exporter.metrics(), "model_prediction_loss_created", version="v41")
    exporter.kill9()
    more = traffic(50, seed=5)
    client = JoinerClient(survivor.url)
    client.predictions([prediction(t) for t in more])
    client.labels([{"id": t["id"], "label": t["label"]} for t in more if t["label"] is not None])
    for t in more:
        ledger.predicted(t["version"], t["id"])
        if t["label"] is not None:
            ledger.labelled(t["version"], t["id"], expected_loss(t))
    # Then once the dead replica's lease lapses the survivor exports, with the same _created, and
    # Prometheus' sum equals the ledger again
    wait_until(lambda: value(survivor.metrics(), "lossgate_joiner_exporter") == 1, 20, "survivor exports")
    page = survivor.metrics()
    assert value(page, "model_prediction_loss_created", version="v41") == created
    assert value(page, "model_predictions_total", version="v41") == len(ledger.predictions["v41"]) == 450
    wait_until(
        lambda: _prom(prometheus, 'model_prediction_loss_count{version="v41"}') == ledger.count("v41"),
        30, "survivor scraped",
    )  # fmt: skip
    got = _prom(prometheus, 'model_prediction_loss_sum{version="v42"}')
    assert math.isclose(got, ledger.sum("v42"), rel_tol=1e-12)
