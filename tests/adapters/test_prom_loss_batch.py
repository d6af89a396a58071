"""Batched loss reads (many rollouts, one Prometheus) through a real Prometheus scraping real exporters:
one query per series kind for all of them, each result exactly what the rollout's own read returns."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from lossgate.adapters.prometheus import LossRequest, PrometheusConfig, PrometheusMetrics
from lossgate.adapters.prometheus.loss import KINDS
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.prom import Prometheus
from tests.adapters.test_prom_loss import Exporter, _scrape, _wait_scraped

pytestmark = pytest.mark.prom
INTERVAL = 1.0
MODELS = ("fraud.scorer", "ranker", "churn")  # a regex-special character in a model name, on purpose


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


def test_batched_reads_equal_single_reads_with_one_query_per_series_kind(prometheus: Prometheus) -> None:
    # Given three models, each with a baseline and a canary pod, labelled over five 1 s intervals
    rng = np.random.default_rng(5)
    pods = {(m, arm): Exporter(arm, f"{m}-{arm}") for m in MODELS for arm in ("baseline", "canary")}
    _scrape(prometheus, list(pods.values()))
    start = round(time.time(), 3)
    for batch in range(5):
        due = start + batch * INTERVAL + 0.1
        wait_until(lambda: time.time() > due, INTERVAL + 5, "the next interval", interval=0.05)  # noqa: B023
        for (model, arm), e in pods.items():
            version = "v41" if arm == "baseline" else "v42"
            for i in range(2 + (batch + i_of(model)) % 4):
                p = rng.dirichlet([2.0, 1.0, 0.5])
                label = int(rng.choice(3, p=p))
                e.recorder.record_prediction(batch * 100 + i, probabilities=p, model=model, version=version)
                e.label(batch * 100 + i, label, -math.log(max(p[label], 1e-6)))
        _wait_scraped(prometheus, list(pods.values()))
    end = start + 5 * INTERVAL
    wait_until(lambda: time.time() > end + 0.05, 10, "the last instant", interval=0.05)

    # When the rollouts are read one by one and then together, from different last instants
    metrics = PrometheusMetrics(PrometheusConfig(prometheus.url))
    requests = [
        LossRequest(LossSeriesRef("ml", m, "v41", "v42"), _utc(start + k * INTERVAL), _utc(end), INTERVAL)
        for k, m in enumerate(MODELS)
    ]
    summed = {kind: f'sum(model_prediction_loss_{kind}{{model="{{model}}",version="{{version}}"}})'
              for kind in ("count", "sum", "squared_sum")}  # fmt: skip
    templated_ref = LossSeriesRef(
        "ml", "ranker", "v41", "v42",
        count_template=summed["count"], sum_template=summed["sum"], sumsq_template=summed["squared_sum"],
    )  # fmt: skip
    templated = LossRequest(templated_ref, _utc(start), _utc(end), INTERVAL)
    singles = [metrics.loss_intervals(r.ref, r.start, r.end, r.interval_s) for r in [*requests, templated]]
    before = metrics.client.requests_sent
    batched = metrics.loss_intervals_batch([*requests, templated])
    sent = metrics.client.requests_sent - before

    # Then every result is exactly the single read's, with data in both arms
    assert batched == singles
    for result in batched:
        assert isinstance(result, list)
        assert result
        assert sum(iv.canary.n for iv in result) > 0
        assert sum(iv.baseline.n for iv in result) > 0
    # And the three default-series rollouts cost one query per series kind, not ten per rollout
    single_cost = 2 * len(KINDS)  # both arms, every kind
    templated_cost = sent - len(KINDS)
    assert templated_cost > 0  # the templated rollout was read on its own (range queries)
    assert sent - templated_cost == len(KINDS) < len(requests) * single_cost
    for e in pods.values():
        e.stop()


def i_of(model: str) -> int:
    return MODELS.index(model)
