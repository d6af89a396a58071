"""Every panel query of the shipped dashboards runs against a real Prometheus holding the real
exporters' series (tests/dashboards/promdata.py) and returns data; so does every variable."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lossgate.model import Phase
from lossgate_dev.dashboards.common import exprs
from lossgate_dev.demo.trainer import openmetrics as training_openmetrics
from lossgate_dev.demo.trainer import train
from lossgate_dev.devenv.prom import Prometheus
from tests.dashboards.promdata import (
    NAMESPACE,
    RUN,
    STEP_S,
    TICKS,
    history_end,
    model_server_rows,
    openmetrics,
    operator_rows,
)

ROOT = Path(__file__).resolve().parents[2]
BOARDS = sorted((ROOT / "dashboards").glob("*.json"))
# What Grafana would put in: the rollout in progress, its model, the training run; the default time
# range (6h) for $__range, and a step of a minute.
VALUES = {
    "$namespace": NAMESPACE,
    "$rollout": "ranker",
    "$model": "ranker",
    "$run": RUN,
    "$__rate_interval": "2m",
    "$__interval": "1m",
    "$__range": "6h",
}


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, float]]:
    """A real Prometheus with 90 minutes of history ending a minute ago."""
    end = history_end()
    rows, phases = operator_rows(end)
    assert phases == {"fraud": Phase.PROMOTED, "churn": Phase.ROLLED_BACK, "ranker": Phase.PROGRESSING}
    server = Prometheus.start(tmp_path_factory.mktemp("prom-dashboards"), scrape_interval="15s")
    try:
        server.backfill(openmetrics(rows + model_server_rows(end)))
        server.backfill(training_openmetrics(train(RUN, steps=200, seed=3), end, seconds_per_step=20))
        yield server, end
    finally:
        server.stop()


def substitute(expr: str) -> str:
    for var in sorted(VALUES, key=len, reverse=True):  # $__range before $__rate_interval's prefix
        expr = expr.replace(var, VALUES[var])
    return expr


def _has_number(result: list[dict[str, Any]]) -> bool:
    values = [r["value"][1] for r in result if "value" in r] + [
        v for r in result for _, v in r.get("values", [])
    ]
    return any(not math.isnan(float(v)) for v in values)


def _queries() -> list[tuple[str, str, str, bool]]:
    out = []
    for path in BOARDS:
        for title, expr, instant in exprs(json.loads(path.read_text())):
            out.append((path.stem, title, expr, instant))
    return out


def test_every_dashboard_is_there() -> None:
    assert [p.stem for p in BOARDS] == ["debug", "executive", "oncall"]
    assert len(_queries()) >= 30


@pytest.mark.parametrize(("board", "title", "expr", "instant"), _queries(), ids=lambda v: str(v)[:40])
def test_panel_query_returns_data(
    prom: tuple[Prometheus, float], board: str, title: str, expr: str, instant: bool
) -> None:
    server, end = prom
    query = substitute(expr)
    assert "$" not in query, f"{board}/{title}: a variable the test does not know: {query}"
    # When the panel's query runs as Grafana runs it (instant at the end, or over the history)
    if instant:
        result = server.query(query, time=end)
    else:
        start = end - (TICKS - 20) * STEP_S
        result = server.api("query_range", query=query, start=str(start), end=str(end), step="60")["result"]
    # Then it returns at least one number
    assert _has_number(result), f"{board}/{title}: no data for {query}"


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_every_variable_lists_values(prom: tuple[Prometheus, float], path: Path) -> None:
    server, end = prom
    for var in json.loads(path.read_text())["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert m is not None, var["query"]
        selector, label = substitute(m.group(1)), m.group(2)
        got = server.api(
            f"label/{label}/values", **{"match[]": selector, "start": str(end - 3600), "end": str(end)}
        )
        assert VALUES.get(f"${var['name']}") in got, f"{path.stem}: ${var['name']} lists {got}"
