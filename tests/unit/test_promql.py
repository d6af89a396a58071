"""PromQL templates and escaping (pure units; the round trip through the real Prometheus parser is in
tests/adapters/test_prom_escaping.py)."""

from __future__ import annotations

import pytest

from lossgate.adapters.prometheus import PrometheusConfig
from lossgate.adapters.prometheus.loss import arm_queries
from lossgate.adapters.prometheus.promql import (
    TemplateError,
    escape_label_value,
    is_plain_selector,
    latest_validation_loss,
    loss_selectors,
    quote,
    raw_samples,
    render,
    selector,
    training_selector,
)
from lossgate.ports import LossSeriesRef


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("v42", "v42"),
        ('v1"} or vector(1) or {x="', 'v1\\"} or vector(1) or {x=\\"'),
        ("a\\b", "a\\\\b"),
        ("line\nbreak", "line\\nbreak"),
        ("tab\there\r", "tab\\there\\r"),
        ("\x00\x1f\x7f", "\\x00\\x1f\\x7f"),
        ("ünïcode ✓", "ünïcode ✓"),
    ],
)
def test_escape_label_value(value: str, escaped: str) -> None:
    assert escape_label_value(value) == escaped
    assert quote(value) == f'"{escaped}"'


def test_default_loss_selectors_follow_the_conventions() -> None:
    q = loss_selectors("model_prediction_loss", "fraud-scorer", "v42", "ml-prod", None, "4.6")
    assert q == {
        "count": 'model_prediction_loss_count{model="fraud-scorer",version="v42"}',
        "sum": 'model_prediction_loss_sum{model="fraud-scorer",version="v42"}',
        "sumsq": 'model_prediction_loss_squared_sum{model="fraud-scorer",version="v42"}',
        "bucket": 'model_prediction_loss_bucket{model="fraud-scorer",version="v42",le="4.6"}',
        "created": 'model_prediction_loss_created{model="fraud-scorer",version="v42"}',
    }
    with_ns = loss_selectors("m", "x", "v", "ml-prod", "namespace", "4.6")
    assert with_ns["count"] == 'm_count{model="x",version="v",namespace="ml-prod"}'
    assert raw_samples(q["count"], 305_000) == q["count"] + "[305000ms]"


def test_training_templates() -> None:
    assert training_selector("loss", 'r"1') == 'training_loss{run="r\\"1"}'
    assert training_selector("nonfinite", "r") == 'training_nonfinite_steps_total{run="r"}'
    assert latest_validation_loss("r", 60_000) == 'avg(last_over_time(validation_loss{run="r"}[60000ms]))'


def test_render_escapes_values_and_checks_metric_names() -> None:
    t = 'sum by (pod) ({metric}_count{model="{model}",version="{version}",namespace="{namespace}"})'
    out = render(t, metric="my_loss", model="m", version='v"} or vector(1)', namespace="ns")
    assert out == 'sum by (pod) (my_loss_count{model="m",version="v\\"} or vector(1)",namespace="ns"})'
    with pytest.raises(TemplateError, match="metric name"):
        render("{metric}_count", metric="bad name{}")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("x{version={version}}", "double-quoted"),
        ("x{version='{version}'}", "double-quoted"),
        ('x{version="v{version}"}', "double-quoted"),
        ('x{version="{version}-rc"}', "double-quoted"),
        ('x{a="}"} or y{b={version}}', "double-quoted"),
        ('x{version="{vresion}"}', "unknown placeholder"),
    ],
)
def test_render_refuses_unsafe_or_unknown_placeholders(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(template, model="m", version="v", namespace="n", metric="x", run="r")


def test_placeholder_in_a_regex_matcher_is_matched_literally() -> None:
    out = render('x{version=~"{version}"}', version="v4.|.*")
    assert out == 'x{version=~"v4\\\\.\\\\|\\\\.\\\\*"}'  # RE2-escaped, then string-escaped


@pytest.mark.parametrize(
    ("template", "plain"),
    [
        ('model_prediction_loss_count{model="{model}",version="{version}"}', True),
        ("model_prediction_loss_count", True),
        ('{__name__="x",version="{version}"}', True),
        ('x{version="a}b{c"}', True),
        ('sum(x{version="{version}"})', False),
        ('x{version="{version}"} * 2', False),
        ('x{version="{version}"}[5m]', False),
        ("", False),
    ],
)
def test_plain_selector_detection(template: str, plain: bool) -> None:
    assert is_plain_selector(template) is plain


def test_arm_queries_use_templates_and_drop_created() -> None:
    config = PrometheusConfig("http://prom:9090")
    ref = LossSeriesRef("ns", "m", "v41", "v42", count_template='c{model="{model}",version="{version}"}')
    aq = arm_queries(ref, "canary", "v42", config)
    assert aq.queries["count"] == 'c{model="m",version="v42"}'
    assert "created" not in aq.queries
    assert aq.queries["sum"] == 'model_prediction_loss_sum{model="m",version="v42"}'
    assert aq.raw
    expr = LossSeriesRef("ns", "m", "v41", "v42", count_template='sum(c{version="{version}"})')
    assert not arm_queries(expr, "canary", "v42", config).raw


def test_selector_rejects_bad_label_names() -> None:
    with pytest.raises(TemplateError):
        selector("x", {"bad-label": "v"})
