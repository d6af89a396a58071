"""The Prometheus fixture is a real server: it scrapes a real exporter and serves backfilled blocks."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus


def test_scrapes_a_real_exporter_and_answers_instant_query(prometheus: Prometheus) -> None:
    # Given an exporter on loopback with a counter at 7
    reg = CollectorRegistry()
    c = Counter("lossgate_fixture_probe", "probe", ["arm"], registry=reg)
    c.labels(arm="canary").inc(7)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        # When Prometheus is told to scrape it
        prometheus.add_target(f"127.0.0.1:{port}", {"suite": "infra"})
        prometheus.wait_target_up(f"127.0.0.1:{port}")
        # Then an instant query returns the exporter's value with the target's labels
        wait_until(lambda: prometheus.query('lossgate_fixture_probe_total{arm="canary"}'), 15, "series")
        (sample,) = prometheus.query('lossgate_fixture_probe_total{arm="canary"}')
        assert float(sample["value"][1]) == 7.0
        assert sample["metric"]["suite"] == "infra"
        assert sample["metric"]["job"] == "targets"
    finally:
        server.shutdown()


def test_backfilled_openmetrics_is_returned_by_range_query(prometheus: Prometheus) -> None:
    # Given 30 one-minute samples of a counter, an hour ago, written as TSDB blocks by promtool
    t0 = int(time.time()) - 3600
    lines = ["# TYPE backfilled_requests counter"]
    lines += [f'backfilled_requests_total{{model="m"}} {3 * i} {t0 + 60 * i}' for i in range(30)]
    prometheus.backfill("\n".join(lines) + "\n")
    # When a range query asks for them at the same step
    data = prometheus.api(
        "query_range",
        query='backfilled_requests_total{model="m"}',
        start=str(t0),
        end=str(t0 + 29 * 60),
        step="60",
    )
    # Then every sample comes back exactly
    (series,) = data["result"]
    assert [(int(t), float(v)) for t, v in series["values"]] == [(t0 + 60 * i, 3.0 * i) for i in range(30)]


def test_stopped_server_refuses_connections(prometheus: Prometheus) -> None:
    # Given a running server that answers
    assert prometheus.query("vector(1)")[0]["value"][1] == "1"
    # When it is stopped
    prometheus.stop()
    # Then its port refuses queries (what the adapter must classify as Unavailable)
    with pytest.raises(RuntimeError, match="failed"):
        prometheus.query("vector(1)")
