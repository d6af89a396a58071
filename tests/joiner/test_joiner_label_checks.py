"""The operator's label checks read from a real joiner through a real Prometheus: per-arm coverage,
the p90 label delay (equal to Prometheus' own histogram_quantile), and the hold it leads to."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lossgate.adapters.prometheus import PromClient, PrometheusConfig, PrometheusMetrics
from lossgate.adapters.prometheus.labels import read_label_evidence
from lossgate.adapters.spec_refs import health_config, judge_config
from lossgate.core.decision import DecisionKind
from lossgate.core.label_checks import LabelEvidence, coverage_imbalance, delay_warning
from lossgate.core.machine import decide
from lossgate.core.step import judge_tick
from lossgate.joiner import JoinerClient
from lossgate.model import Reason
from lossgate.ports import LossSeriesRef
from lossgate.reconcile.observe import gather
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.prom import Prometheus
from tests.unit.reconcile_fakes import FakeRouter
from tests.unit.test_machine_rules import PASS, at_step, make_spec

pytestmark = pytest.mark.prom


def _preds(version: str, n: int, served_at: float, start: int = 0) -> list[dict[str, object]]:
    return [
        {"id": f"{version}-{i}", "model": "fraud", "version": version, "probabilities": [0.3, 0.7],
         "served_at": served_at}
        for i in range(start, start + n)
    ]  # fmt: skip


def test_coverage_and_delay_read_from_the_joiner(prometheus: Prometheus, tmp_path: Path) -> None:
    # Given a joiner scraped by Prometheus, each arm's series already there (one prediction each)
    j = JoinerProcess.start(tmp_path / "j", "--sqlite", str(tmp_path / "j.db"))
    try:
        client = JoinerClient(j.url)
        now = time.time()
        for v in ("v41", "v42"):
            client.predictions(_preds(v, 1, now))
        prometheus.add_target(j.address)
        prometheus.wait_target_up(j.address)
        q = 'model_predictions_total{version="v42"}'
        wait_until(lambda: bool(prometheus.query(q)), 20, "series scraped")
        start = datetime.fromtimestamp(time.time(), UTC)
        # When 400 predictions per arm, served about 2 h ago, get labelled: 90% of the baseline's,
        # 50% of the canary's
        served = time.time() - 7000
        for v, share in (("v41", 0.9), ("v42", 0.5)):
            client.predictions(_preds(v, 400, served, start=1))
            client.labels([{"id": f"{v}-{i}", "label": 1} for i in range(1, 1 + round(400 * share))])
        labelled = 'model_prediction_loss_count{version="v42"}'
        wait_until(lambda: float(prometheus.query(labelled)[0]["value"][1]) == 200, 20, "labels scraped")
        end = datetime.fromtimestamp(time.time(), UTC)
        ref = LossSeriesRef("ml", "fraud", "v41", "v42")
        got = read_label_evidence(PromClient(PrometheusConfig(prometheus.url)), ref, start, end)
    finally:
        j.stop()

    # Then each arm's coverage over the window is exact: what the joiner counted since `start`
    assert isinstance(got, LabelEvidence), got
    assert (got.baseline.predictions, got.baseline.labelled) == (400, 360)
    assert (got.canary.predictions, got.canary.labelled) == (400, 200)
    # And the p90 delay is Prometheus' own histogram_quantile of the same bucket differences, in (1 h, 2 h]
    sel = 'model_prediction_label_delay_seconds_bucket{model="fraud",version=~"v41|v42"}'
    diff = f"sum by (le) ({sel} @ {end.timestamp():.3f}) - sum by (le) ({sel} @ {start.timestamp():.3f})"
    (row,) = prometheus.query(f"histogram_quantile(0.9, {diff})", end.timestamp())
    assert got.delay_p90_s is not None
    assert math.isclose(got.delay_p90_s, float(row["value"][1]), rel_tol=1e-9)
    assert 3600 < got.delay_p90_s <= 7200
    # And the checks: a 10-minute step warns, a 3-hour one does not; the coverage gap holds
    assert delay_warning(600, got.delay_p90_s, step=1) is not None
    assert delay_warning(3 * 3600, got.delay_p90_s, step=1) is None
    hold = coverage_imbalance(got.baseline, got.canary).hold
    assert hold is not None
    assert "50% of the canary's" in hold

    # And through the operator's own tick (LOSSGATE_LABEL_CHECKS on): observe reads the step's label
    # evidence from Prometheus, and decide() holds the weight on the coverage gap
    spec = make_spec(model="fraud", stepDefaults={"minSamples": 1, "minDuration": "1s"})
    status = at_step(spec, 0).model_copy(update={"step_started_at": start})
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))
    kwargs: dict[str, Any] = dict(
        spec=spec, status=status, generation=1, annotations={}, router=FakeRouter(5), metrics=metrics,
        loss_ref=LossSeriesRef("ml", "fraud", "v41", "v42"), plan=None, now=end,
        training_lookback=timedelta(hours=1),
    )  # fmt: skip
    off = asyncio.run(gather(**kwargs))
    on = asyncio.run(gather(**kwargs, label_checks=True))
    assert off.labels is None
    assert on.labels == got
    judged = judge_tick(spec, status, None, on, judge_config(spec), health_config(spec))
    decision = decide(spec, status, replace(judged.observation, health=PASS), end)
    assert decision.kind is DecisionKind.HOLD
    assert decision.reason == Reason.LABEL_COVERAGE_IMBALANCED
