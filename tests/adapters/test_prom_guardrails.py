"""Guardrail counters and per-class loss read back through a real Prometheus scraping real exporters.

Each arm is one "pod": lossgate.instrument.RequestMetrics (and a LossRecorder with a class label) on
its own registry, served by prometheus_client's WSGI app. The test keeps each arm's totals as it
records them and requires the adapter's per-interval counts, summed over the window, to equal them
exactly; a code="500" series that first appears mid-window counts from 0 (its _created).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.core.guardrail import CountInterval
from lossgate.instrument import LossRecorder, RequestMetrics
from lossgate.ports import GuardrailSeriesRef, LossSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
MODEL = "fraud-scorer"
VERSIONS = {"baseline": "v41", "canary": "v42"}
INTERVAL = 1.5
THRESHOLD = 0.5


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Pod:
    arm: str
    port: int = field(default_factory=free_port)
    requests: int = 0
    errors: int = 0
    slow: int = 0
    seconds: list[float] = field(default_factory=list)
    labelled: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = RequestMetrics(self.registry)
        self.loss = LossRecorder(self.registry)
        self.httpd = make_server("127.0.0.1", self.port, make_wsgi_app(self.registry), handler_class=_Quiet)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def version(self) -> str:
        return VERSIONS[self.arm]

    def serve(self, code: str, seconds: float) -> None:
        self.metrics.observe(model=MODEL, version=self.version, code=code, seconds=seconds)
        self.requests += 1
        self.errors += code.startswith("5")
        self.slow += seconds > THRESHOLD
        self.seconds.append(seconds)

    def predict_and_label(self, pid: int, klass: str, p_true: float) -> None:
        p = np.array([p_true, 1 - p_true])
        self.loss.record_prediction(pid, probabilities=p, model=MODEL, version=self.version, klass=klass)
        self.loss.record_label(pid, 0)
        self.labelled[klass] = self.labelled.get(klass, 0) + 1

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pods(prometheus: Prometheus) -> Iterator[dict[str, Pod]]:
    out = {arm: Pod(arm) for arm in VERSIONS}
    for arm, pod in out.items():
        prometheus.add_target(f"127.0.0.1:{pod.port}", {"pod": arm})
    for pod in out.values():
        prometheus.wait_target_up(f"127.0.0.1:{pod.port}")
    yield out
    for pod in out.values():
        pod.stop()


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def _ref(mode: str, **kw: Any) -> GuardrailSeriesRef:
    metric = "http_requests_total" if mode == "errors" else "http_request_duration_seconds"
    return GuardrailSeriesRef(
        name=mode, namespace="ml-prod", model=MODEL, baseline_version="v41", canary_version="v42",
        mode=mode, metric=kw.pop("metric", metric), **kw,
    )  # fmt: skip


def _sums(intervals: list[CountInterval], arm: str) -> tuple[float, float]:
    got = [getattr(iv, arm) for iv in intervals]
    return sum(c.n for c in got), math.fsum(c.total for c in got)


def _scraped(prometheus: Prometheus, pods: dict[str, Pod]) -> bool:
    for pod in pods.values():
        r = prometheus.query(f'sum(http_requests_total{{version="{pod.version}"}})')
        if not r or float(r[0]["value"][1]) != pod.requests:
            return False
    return True


def test_guardrail_counts_and_class_losses_equal_what_was_served(
    prometheus: Prometheus, pods: dict[str, Pod]
) -> None:
    # Given a baseline and a canary serving for 5 intervals: the canary fails more and is slower,
    # and its first server error comes in the third interval (a new code="500" series)
    rng = np.random.default_rng(17)
    start = round(time.time(), 3)
    for batch in range(5):
        due = start + batch * INTERVAL + 0.1
        wait_until(lambda: time.time() > due, INTERVAL + 5, f"interval {batch}", interval=0.05)  # noqa: B023
        for i in range(12):
            pods["baseline"].serve("500" if i == 0 and batch == 1 else "200", float(rng.uniform(0.01, 0.6)))
            pods["baseline"].predict_and_label(batch * 100 + i, "fraud" if i % 4 == 0 else "ok", 0.8)
        for i in range(6):
            code = "503" if batch >= 2 and i < 2 else "200"
            pods["canary"].serve(code, float(rng.uniform(0.2, 1.5)))
            pods["canary"].predict_and_label(batch * 100 + i, "fraud" if i % 3 == 0 else "ok", 0.6)
        wait_until(lambda: _scraped(prometheus, pods), 30, "Prometheus to scrape the batch")
    end_k = math.ceil((time.time() - start) / INTERVAL)
    end = start + end_k * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, INTERVAL + 5, "the last aligned instant", interval=0.05)
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))

    # When the adapter reads each guardrail's intervals over the window
    errors = metrics.guardrail_intervals(_ref("errors"), _utc(start), _utc(end), INTERVAL)
    slower = metrics.guardrail_intervals(
        _ref("slower", threshold=THRESHOLD), _utc(start), _utc(end), INTERVAL
    )
    mean = metrics.guardrail_intervals(_ref("mean"), _utc(start), _utc(end), INTERVAL)
    assert isinstance(errors, list), errors
    assert isinstance(slower, list), slower
    assert isinstance(mean, list), mean

    # Then every interval is on the aligned grid and the window's totals are exactly what was served
    assert len(errors) == end_k
    assert [iv.start for iv in errors] == [round(start + INTERVAL * k, 3) for k in range(end_k)]
    for arm, pod in pods.items():
        assert _sums(errors, arm) == (pod.requests, pod.errors)
        assert _sums(slower, arm) == (pod.requests, pod.slow)
        n, seconds = _sums(mean, arm)
        assert n == pod.requests
        assert math.isclose(seconds, math.fsum(pod.seconds), rel_tol=1e-9)
    assert pods["canary"].errors == 6  # the new series' first increments were counted from 0
    assert sum(1 for iv in errors if iv.baseline.n and iv.canary.n) >= 4

    # And user templates with escaped placeholders read the same counts once every series exists (an
    # aggregated expression has no _created, so increments before its first sample are not attributed)
    templated = _ref(
        "errors",
        bad_template='sum(http_requests_total{model="{model}",version="{version}",code=~"5.."})',
        total_template='sum(http_requests_total{model="{model}",version="{version}"})',
    )
    got = metrics.guardrail_intervals(templated, _utc(start), _utc(end), INTERVAL)
    assert isinstance(got, list), got
    assert got[3:] == errors[3:]
    assert sum(iv.canary.total for iv in got[3:]) >= 2

    # And the loss split by its class label counts each class's labelled predictions
    classes = metrics.class_loss_intervals(
        LossSeriesRef("ml-prod", MODEL, "v41", "v42"), _utc(start), _utc(end), INTERVAL
    )
    assert isinstance(classes, dict), classes
    assert sorted(classes) == ["fraud", "ok"]
    for klass, intervals in classes.items():
        for arm, pod in pods.items():
            assert sum(getattr(iv, arm).n for iv in intervals) == pod.labelled[klass]
    fraud_canary = math.fsum(iv.canary.sum for iv in classes["fraud"])
    assert math.isclose(fraud_canary, pods["canary"].labelled["fraud"] * -math.log(0.6), rel_tol=1e-9)


def test_a_missing_canary_series_is_partial_and_names_the_guardrail(
    prometheus: Prometheus, pods: dict[str, Pod]
) -> None:
    # Given only the baseline serving
    start = round(time.time(), 3)
    pods["baseline"].serve("200", 0.1)
    wait_until(lambda: bool(prometheus.query('http_requests_total{version="v41"}')), 30, "a scrape")
    end = start + 2 * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, 2 * INTERVAL + 5, "two intervals", interval=0.05)
    # When the error-rate guardrail is read
    got = PrometheusMetrics(PrometheusConfig(prometheus.url)).guardrail_intervals(
        _ref("errors"), _utc(start), _utc(end), INTERVAL
    )
    # Then the problem is Partial and names the check and the query
    assert not isinstance(got, list)
    assert got.kind == "Partial"
    assert "guardrail errors" in got.message
    assert 'version="v42"' in got.message
