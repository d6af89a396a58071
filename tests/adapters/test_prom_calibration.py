"""Reliability counters read back through a real Prometheus scraping real LossRecorders.

Each arm is one "pod" (a LossRecorder on its own registry, served by prometheus_client's WSGI app).
The test keeps each arm's per-bin ledger as it records and requires the adapter's per-interval
counters, summed over the window, to equal it: counts exactly, sums to float rounding. The canary's
series first appears in the second interval and counts from 0 (its `_count_created`).
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
from lossgate.conventions import CALIBRATION_BINS, CALIBRATION_METRIC
from lossgate.core.calibration import Bins, ece
from lossgate.instrument import LossRecorder
from lossgate.ports import CalibrationSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
MODEL = "digits"
VERSIONS = {"baseline": "v1", "canary": "v2"}
INTERVAL = 1.5


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Pod:
    arm: str
    port: int = field(default_factory=free_port)
    ledger: list[list[float]] = field(default_factory=lambda: [[0.0] * CALIBRATION_BINS for _ in range(4)])
    labelled: int = 0

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.loss = LossRecorder(self.registry)
        self.httpd = make_server("127.0.0.1", self.port, make_wsgi_app(self.registry), handler_class=_Quiet)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def predict_and_label(self, pid: int, p: np.ndarray, y: int) -> None:
        self.loss.record_prediction(pid, probabilities=p, model=MODEL, version=VERSIONS[self.arm])
        self.loss.record_label(pid, y)
        top = int(np.argmax(p))
        b = min(int(p[top] * CALIBRATION_BINS), CALIBRATION_BINS - 1)
        brier = float(((p - np.eye(len(p))[y]) ** 2).sum())
        for i, x in enumerate((1.0, float(p[top]), float(top == y), brier)):
            self.ledger[i][b] += x
        self.labelled += 1

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


def _scraped(prometheus: Prometheus, pods: dict[str, Pod]) -> bool:
    for arm, pod in pods.items():
        if not pod.labelled:
            continue
        q = f'sum({CALIBRATION_METRIC}_count_total{{version="{VERSIONS[arm]}"}})'
        r = prometheus.query(q)
        if not r or float(r[0]["value"][1]) != pod.labelled:
            return False
    return True


def test_reliability_counters_equal_what_was_labelled(prometheus: Prometheus, pods: dict[str, Pod]) -> None:
    # Given a calibrated baseline from the first interval and an overconfident canary from the second
    rng = np.random.default_rng(23)
    start = round(time.time(), 3)
    for batch in range(4):
        due = start + batch * INTERVAL + 0.1
        wait_until(lambda: time.time() > due, INTERVAL + 5, f"interval {batch}", interval=0.05)  # noqa: B023
        for i in range(20):
            logits = rng.normal(0.0, 2.0, 4)
            p = np.exp(logits - logits.max())
            p /= p.sum()
            y = int(rng.choice(4, p=p))
            pods["baseline"].predict_and_label(batch * 100 + i, p, y)
            if batch >= 1 and i < 8:
                sharp = p**3 / (p**3).sum()  # overconfident: labels still follow p
                pods["canary"].predict_and_label(batch * 100 + i, sharp, y)
        wait_until(lambda: _scraped(prometheus, pods), 30, "Prometheus to scrape the batch")
    end_k = math.ceil((time.time() - start) / INTERVAL)
    end = start + end_k * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, INTERVAL + 5, "the last aligned instant", interval=0.05)
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))

    # When the adapter reads the reliability counters over the window
    ref = CalibrationSeriesRef("ml-prod", MODEL, VERSIONS["baseline"], VERSIONS["canary"])
    got = metrics.calibration_intervals(ref, _utc(start), _utc(end), INTERVAL)
    assert isinstance(got, list), got

    # Then the intervals are on the aligned grid and each arm's totals per bin are its ledger's
    assert len(got) == end_k
    assert [iv.start for iv in got] == [round(start + INTERVAL * k, 3) for k in range(end_k)]
    for arm, pod in pods.items():
        total = Bins()
        for iv in got:
            total = total + getattr(iv, arm)
        assert list(total.count) == pod.ledger[0]
        assert list(total.correct) == pod.ledger[2]
        for kind, i in (("confidence", 1), ("brier", 3)):
            for g, e in zip(getattr(total, kind), pod.ledger[i], strict=True):
                assert math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-9), (arm, kind)
    assert pods["canary"].labelled == 24  # the canary's series, new in interval 2, counted from 0
    # And the sharpened canary is the worse calibrated of the two
    b = Bins(*(tuple(x) for x in pods["baseline"].ledger))
    c = Bins(*(tuple(x) for x in pods["canary"].ledger))
    assert (ece(c) or 0.0) > (ece(b) or 0.0)

    # And a version without series is named in a Partial problem
    missing = CalibrationSeriesRef("ml-prod", MODEL, VERSIONS["baseline"], "v9")
    problem = metrics.calibration_intervals(missing, _utc(start), _utc(end), INTERVAL)
    assert not isinstance(problem, list)
    assert problem.kind == "Partial"
    assert "spec.analysis.calibration" in problem.message
    assert "v9" in problem.message
