"""Failures come back classified (Unavailable / NoData / BadQuery / Partial), from a real Prometheus."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app

from lossgate.adapters.prometheus import PromClient, PrometheusConfig, PrometheusMetrics
from lossgate.core.evidence import Problem
from lossgate.instrument import LossRecorder
from lossgate.ports import LossSeriesRef, MetricsErrorKind
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
REF = LossSeriesRef("ml-prod", "fraud-scorer", "v41", "v42")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _window(seconds: float = 20) -> tuple[datetime, datetime]:
    end = datetime.now(UTC)
    return end - timedelta(seconds=seconds), end


def _serve_arm(prometheus: Prometheus, version: str, n: int = 5) -> Any:
    """A model server that labelled n predictions of `version`, scraped until Prometheus has them."""
    registry = CollectorRegistry()
    recorder = LossRecorder(registry)
    for i in range(n):
        recorder.record_prediction(i, probabilities=0.8, model="fraud-scorer", version=version)
        recorder.record_label(i, 1)
    port = free_port()
    httpd = make_server("127.0.0.1", port, make_wsgi_app(registry), handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    prometheus.add_target(f"127.0.0.1:{port}")
    prometheus.wait_target_up(f"127.0.0.1:{port}")
    wait_until(
        lambda: bool(prometheus.query(f'model_prediction_loss_count{{version="{version}"}}')), 20, version
    )
    return httpd


def test_stopped_prometheus_is_unavailable_after_bounded_retries_with_backoff(prometheus: Prometheus) -> None:
    # Given an adapter with 2 retries that records its backoff sleeps, and a Prometheus that is stopped
    config = PrometheusConfig(prometheus.url, retries=2, backoff_s=0.5, backoff_max_s=0.8, timeout_s=2)
    delays: list[float] = []
    client = PromClient(config, sleep=delays.append)
    metrics = PrometheusMetrics(config, client)
    prometheus.stop()
    start, end = _window()

    # When the loss intervals and the training run are read
    loss = metrics.loss_intervals(REF, start, end, 5.0)
    training = metrics.training_run("train-v42", None, start, end, 1.0)

    # Then both are Unavailable (not a regression), naming the address, after 3 attempts each
    for problem in (loss, training):
        assert isinstance(problem, Problem)
        assert problem.kind == MetricsErrorKind.UNAVAILABLE
        assert problem.kind == "Unavailable"
        assert problem.details["reason"] == "ConnectionError"
        assert problem.details["attempts"] == "3"
        assert prometheus.url in problem.message
        assert "Connection refused" in problem.message
    assert client.requests_sent == 6
    # And the backoff doubled from 0.5 s (jittered down to half), capped at 0.8 s
    assert len(delays) == 4
    assert all(0.25 <= d <= 0.5 for d in delays[::2])
    assert all(0.4 <= d <= 0.8 for d in delays[1::2])


def test_no_series_is_no_data(prometheus: Prometheus) -> None:
    # Given a Prometheus that scrapes no model server
    start, end = _window()
    # When the adapter reads both arms
    problem = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(REF, start, end, 5.0)
    # Then it says NoData and names both selectors it ran
    assert isinstance(problem, Problem)
    assert problem.kind == "NoData"
    assert 'model_prediction_loss_count{model="fraud-scorer",version="v41"}' in problem.message
    assert 'model_prediction_loss_count{model="fraud-scorer",version="v42"}' in problem.message
    training = PrometheusMetrics(PrometheusConfig(prometheus.url)).training_run(
        "train-v42", None, start, end, 1
    )
    assert isinstance(training, Problem)
    assert training.kind == "NoData"
    assert 'run="train-v42"' in training.message


def test_one_arm_missing_is_partial(prometheus: Prometheus) -> None:
    # Given only the baseline is served and scraped
    httpd = _serve_arm(prometheus, "v41")
    try:
        start, end = _window()
        # When both arms are read
        problem = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(REF, start, end, 5.0)
        # Then it is Partial, and says the canary is the missing arm
        assert isinstance(problem, Problem)
        assert problem.kind == "Partial"
        assert problem.details["missing_arm"] == "canary"
        assert 'version="v42"' in problem.message
    finally:
        httpd.shutdown()


def test_broken_template_is_bad_query_with_the_servers_message(prometheus: Prometheus) -> None:
    # Given a user template with an unbalanced parenthesis
    template = 'sum by (pod) (my_loss_count{model="{model}",version="{version}"}'
    ref = LossSeriesRef("ml-prod", "fraud-scorer", "v41", "v42", count_template=template)
    start, end = _window()
    # When the adapter runs it
    problem = PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(ref, start, end, 5.0)
    # Then it is BadQuery carrying Prometheus' own parse error for the rendered query
    assert isinstance(problem, Problem)
    assert problem.kind == "BadQuery"
    rendered = problem.details["query"]
    assert rendered == 'sum by (pod) (my_loss_count{model="fraud-scorer",version="v41"}'
    params = {"query": rendered, "start": "1", "end": "2", "step": "1"}  # the endpoint the adapter used
    url = f"{prometheus.url}/api/v1/query_range?" + urllib.parse.urlencode(params)
    with pytest.raises(urllib.error.HTTPError) as raw:
        urllib.request.urlopen(url)
    assert raw.value.code == 400
    assert problem.details["status"] == "400"
    server_error = json.loads(raw.value.read())["error"]
    assert problem.details["error"] == server_error
    assert server_error in problem.message
    assert "parse error" in server_error


def test_unsafe_template_is_refused_before_any_request(prometheus: Prometheus) -> None:
    # Given a template whose placeholder is not inside a quoted label value
    ref = LossSeriesRef(
        "ml-prod", "fraud-scorer", "v41", "v42", count_template="my_loss_count{version={version}}"
    )
    client = PromClient(PrometheusConfig(prometheus.url))
    start, end = _window()
    # When it is read
    problem = PrometheusMetrics(client.config, client).loss_intervals(ref, start, end, 5.0)
    # Then it is BadQuery that says how to write it, and nothing was sent
    assert isinstance(problem, Problem)
    assert problem.kind == "BadQuery"
    assert 'version="{version}"' in problem.message
    assert client.requests_sent == 0


def test_empty_window_has_no_intervals_yet(prometheus: Prometheus) -> None:
    # Given a window shorter than one interval, Then no interval has closed: an empty list, no query
    client = PromClient(PrometheusConfig(prometheus.url))
    end = datetime.now(UTC)
    metrics = PrometheusMetrics(client.config, client)
    assert metrics.loss_intervals(REF, end - timedelta(seconds=3), end, 5) == []
    assert client.requests_sent == 0
    # And a reversed window is a BadQuery, not an exception
    problem = metrics.loss_intervals(REF, end, end - timedelta(seconds=3), 5)
    assert isinstance(problem, Problem)
    assert problem.kind == "BadQuery"


def test_restarted_prometheus_answers_again(prometheus: Prometheus) -> None:
    # Given a model server for each arm, scraped, and a Prometheus that goes down and comes back
    servers = [_serve_arm(prometheus, "v41", 4), _serve_arm(prometheus, "v42", 6)]
    try:
        metrics = PrometheusMetrics(PrometheusConfig(prometheus.url, retries=0))
        prometheus.stop()
        start = datetime.now(UTC) - timedelta(seconds=60)
        down = metrics.loss_intervals(REF, start, datetime.now(UTC), 60.0)
        assert isinstance(down, Problem)
        assert down.kind == "Unavailable"
        prometheus.restart()
        # When the same adapter reads again, Then it gets the counts recorded before the outage
        (iv,) = metrics.loss_intervals(REF, start, datetime.now(UTC), 60.0)  # type: ignore[misc]
        assert (iv.baseline.n, iv.canary.n) == (4.0, 6.0)
    finally:
        for httpd in servers:
            httpd.shutdown()
