"""Label values cannot inject PromQL: checked against the real Prometheus parser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, make_wsgi_app

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics, quote
from lossgate.adapters.prometheus.promql import render
from lossgate.core.evidence import Problem
from lossgate.instrument import LossRecorder
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.procs import free_port, wait_until
from lossgate_dev.devenv.prom import Prometheus

pytestmark = pytest.mark.prom
HOSTILE = [
    'v1"} or vector(1) or {x="',
    'v41"} or vector(1) or up{x="',
    'v41",version!="',
    "v41\\",
    'v41\\"} or vector(1) #',
    "v41\n} or vector(1)",
    ".*",
    "v4.",
]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(prometheus: Prometheus) -> Iterator[Prometheus]:
    """Both arms (v41, v42) served and scraped, with labelled predictions."""
    registry = CollectorRegistry()
    recorder = LossRecorder(registry)
    for i, version in enumerate(["v41", "v42"] * 5):
        recorder.record_prediction(i, probabilities=0.7, model="fraud-scorer", version=version)
        recorder.record_label(i, 1)
    port = free_port()
    httpd = make_server("127.0.0.1", port, make_wsgi_app(registry), handler_class=_Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    prometheus.add_target(f"127.0.0.1:{port}")
    prometheus.wait_target_up(f"127.0.0.1:{port}")
    wait_until(lambda: len(prometheus.query("model_prediction_loss_count")) == 2, 20, "both arms scraped")
    yield prometheus
    httpd.shutdown()


def _read(prometheus: Prometheus, baseline: str, canary: str, **templates: str) -> Any:
    end = datetime.now(UTC)
    ref = LossSeriesRef("ml-prod", "fraud-scorer", baseline, canary, **templates)
    return PrometheusMetrics(PrometheusConfig(prometheus.url)).loss_intervals(
        ref, end - timedelta(seconds=60), end, 60
    )


def test_hostile_payload_is_live_when_pasted_naively(served: Prometheus) -> None:
    # Given the payload pasted into a selector without escaping, Prometheus returns injected series
    naive = f'model_prediction_loss_count{{model="fraud-scorer",version="{HOSTILE[1]}"}}'
    result = served.query(naive)
    assert any(r["metric"].get("__name__") == "up" or r["metric"] == {} for r in result)


def test_hostile_versions_yield_no_data_not_injected_data(served: Prometheus) -> None:
    for hostile in HOSTILE:
        # Given real series for v41 and v42, When both arms' versions are a hostile string
        problem = _read(served, hostile, hostile)
        # Then the adapter matched no series (the value stayed one literal label value): NoData
        assert isinstance(problem, Problem), (hostile, problem)
        assert problem.kind == "NoData", (hostile, problem)
        # And with only the canary hostile, the canary is the missing arm (Partial), never data
        partial = _read(served, "v41", hostile)
        assert isinstance(partial, Problem), (hostile, partial)
        assert partial.kind == "Partial", (hostile, partial)
        assert partial.details["missing_arm"] == "canary"


def test_hostile_values_in_a_regex_matcher_template_match_literally(served: Prometheus) -> None:
    # Given user templates that use a regex matcher for the version
    t = 'model_prediction_loss_{}{{model="{{model}}",version=~"{{version}}"}}'
    templates = {"count_template": t.format("count"), "sum_template": t.format("sum"),
                 "sumsq_template": t.format("squared_sum")}  # fmt: skip
    # When the version is regex syntax, Then it matches nothing (the value is matched literally)
    for hostile in [".*", "v4.", "v4[0-9]", "v41|v42", *HOSTILE]:
        problem = _read(served, hostile, hostile, **templates)
        assert isinstance(problem, Problem), (hostile, problem)
        assert problem.kind == "NoData", (hostile, problem)
    # And the same templates with the real versions match the real series (a result, not NoData;
    # without _created their first scrape in the window is the base: docs/metrics.md)
    got = _read(served, "v41", "v42", **templates)
    assert isinstance(got, list), got
    assert len(got) == 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
def test_escaped_values_round_trip_through_the_prometheus_parser(prometheus: Prometheus, value: str) -> None:
    # Given any label value, When it is quoted into an equality matcher that absent() echoes back
    (series,) = prometheus.query(f"absent(lossgate_no_such_metric{{v={quote(value)}}})")
    # Then Prometheus parsed exactly that value: one literal, nothing else
    assert series["metric"] == {"v": value}
    rendered = render('absent(lossgate_no_such_metric{v="{version}"})', version=value)
    assert prometheus.query(rendered)[0]["metric"] == {"v": value}
