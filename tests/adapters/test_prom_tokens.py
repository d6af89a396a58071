"""Token-level loss counters read back through a real Prometheus scraping real exporters: each arm is
one "pod" with a TokenLossRecorder on its own registry; the adapter's per-interval counters, summed
over the window, equal what each arm recorded, exactly; a missing canary series is Partial."""

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
from lossgate.core.token_fold import TokenCounts
from lossgate.instrument import TokenLossRecorder
from lossgate.ports import MetricsErrorKind, TokenSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
VERSIONS = {"baseline": "v1", "canary": "v2"}
INTERVAL = 1.5
REF = TokenSeriesRef("ml-prod", "chat", "v1", "v2")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Pod:
    arm: str
    port: int = field(default_factory=free_port)
    ledger: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tokens = TokenLossRecorder(self.registry)
        self.httpd = make_server("127.0.0.1", self.port, make_wsgi_app(self.registry), handler_class=_Quiet)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def record(self, nll: float, tokens: int) -> None:
        self.tokens.record(nll, tokens, model="chat", version=VERSIONS[self.arm])
        self.ledger.append((nll, tokens))

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


def _scraped(prometheus: Prometheus, pods: dict[str, Pod], arms: tuple[str, ...]) -> bool:
    for arm in arms:
        r = prometheus.query(f'sum(model_token_nll_requests_total{{version="{VERSIONS[arm]}"}})')
        if not r or float(r[0]["value"][1]) != len(pods[arm].ledger):
            return False
    return True


def test_token_counters_equal_what_each_arm_recorded(prometheus: Prometheus, pods: dict[str, Pod]) -> None:
    # Given both arms scoring reference continuations over 4 intervals (the canary from the second on)
    rng = np.random.default_rng(4)
    start = round(time.time(), 3)
    for batch in range(4):
        due = start + batch * INTERVAL + 0.1
        wait_until(lambda: time.time() > due, INTERVAL + 5, f"interval {batch}", interval=0.05)  # noqa: B023
        arms = ("baseline", "canary") if batch else ("baseline",)
        for arm in arms:
            for _ in range(7):
                tokens = int(rng.integers(1, 300))
                pods[arm].record(float(rng.uniform(0.0, 4.0)) * tokens, tokens)
        wait_until(lambda: _scraped(prometheus, pods, arms), 30, "Prometheus to scrape the batch")  # noqa: B023
    end_k = math.ceil((time.time() - start) / INTERVAL)
    end = start + end_k * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, INTERVAL + 5, "the last aligned instant", interval=0.05)
    # When the adapter reads the token counters' intervals over the window
    got = PrometheusMetrics(PrometheusConfig(prometheus.url)).token_intervals(
        REF, _utc(start), _utc(end), INTERVAL
    )
    assert isinstance(got, list), got
    # Then the intervals are on the aligned grid and each arm's six sums are its ledger's
    assert [iv.start for iv in got] == [round(start + INTERVAL * k, 3) for k in range(end_k)]
    for arm, pod in pods.items():
        counts: list[TokenCounts] = [getattr(iv, arm) for iv in got]
        rows = pod.ledger
        assert sum(c.n for c in counts) == len(rows)
        assert sum(c.tokens for c in counts) == sum(t for _, t in rows)
        assert sum(c.tokens_sq for c in counts) == sum(t * t for _, t in rows)
        for name, want in (
            ("nll", math.fsum(s for s, _ in rows)),
            ("nll_sq", math.fsum(s * s for s, _ in rows)),
            ("nll_tokens", math.fsum(s * t for s, t in rows)),
        ):
            assert math.isclose(math.fsum(getattr(c, name) for c in counts), want, rel_tol=1e-12)
    # And the canary's series, born in the second interval, counted its first requests from 0
    assert sum(iv.canary.n for iv in got) == 21


def test_a_missing_canary_series_is_partial(prometheus: Prometheus, pods: dict[str, Pod]) -> None:
    # Given only the baseline recording
    start = round(time.time(), 3)
    pods["baseline"].record(3.0, 2)
    wait_until(lambda: _scraped(prometheus, pods, ("baseline",)), 30, "a scrape")
    end = start + 2 * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, 2 * INTERVAL + 5, "two intervals", interval=0.05)
    # When the token counters are read
    got = PrometheusMetrics(PrometheusConfig(prometheus.url)).token_intervals(
        REF, _utc(start), _utc(end), INTERVAL
    )
    # Then it is Partial, naming the spec field to check
    assert not isinstance(got, list)
    assert got.kind == MetricsErrorKind.PARTIAL.value
    assert "tokenLoss" in got.message
