"""Mirrored traffic through a real `lossgate joiner` process (SQLite) scraped by a real Prometheus:
both versions predict the same request ids, one label per id joins both, and /metrics carries the
paired series whose sums give the ledger's sum of d = loss(canary) - loss(baseline) and of d^2."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from lossgate.adapters.prometheus import PrometheusConfig, PrometheusMetrics
from lossgate.core.evidence import Problem
from lossgate.instrument import cross_entropy
from lossgate.joiner import JoinerClient
from lossgate.ports import LossSeriesRef
from lossgate_dev.devenv.joiner import JoinerProcess
from lossgate_dev.devenv.procs import wait_until
from lossgate_dev.devenv.prom import Prometheus
from tests.joiner.helpers import value

pytestmark = pytest.mark.prom
PAIRED = "model_prediction_loss_paired"


@pytest.fixture
def joiner(tmp_path: Path) -> Iterator[JoinerProcess]:
    j = JoinerProcess.start(tmp_path / "joiner", "--sqlite", str(tmp_path / "joiner.db"))
    yield j
    j.stop()


def test_mirrored_requests_export_paired_counters(prometheus: Prometheus, joiner: JoinerProcess) -> None:
    # Given a joiner scraped every second, and 400 requests each predicted by v41 and v42 (mirrored)
    prometheus.add_target(joiner.address)
    prometheus.wait_target_up(joiner.address)
    start = round(time.time(), 3)
    client, rng = JoinerClient(joiner.url), np.random.default_rng(5)
    base = rng.dirichlet([1.0, 1.0, 1.0], 400)
    canary = 0.7 * base + 0.3 * rng.dirichlet([1.0, 1.0, 1.0], 400)  # correlated with the baseline
    labels = rng.integers(0, 3, 400)
    for version, probs in (("v41", base), ("v42", canary)):
        for i in range(0, 400, 100):
            client.predictions(
                [
                    {
                        "id": f"r{j}",
                        "model": "fraud-scorer",
                        "version": version,
                        "probabilities": probs[j].tolist(),
                    }
                    for j in range(i, i + 100)
                ]
            )
    # ... plus 50 requests only the baseline served (not mirrored)
    client.predictions(
        [
            {"id": f"u{j}", "model": "fraud-scorer", "version": "v41", "probabilities": base[j].tolist()}
            for j in range(50)
        ]
    )
    # When a label arrives for the first 300 mirrored requests and all 50 unmirrored ones (twice: a retry)
    batch = [{"id": f"r{j}", "label": int(labels[j])} for j in range(300)]
    batch += [{"id": f"u{j}", "label": int(labels[j])} for j in range(50)]
    first = client.labels(batch)
    again = client.labels(batch)
    assert (first["joined"], again["duplicate"]) == (350, 350)
    d = [
        cross_entropy(int(labels[j]), probabilities=canary[j])
        - cross_entropy(int(labels[j]), probabilities=base[j])
        for j in range(300)
    ]
    page = joiner.metrics()
    # Then the paired series hold the 300 pairs only, in both orientations
    sel = {"model": "fraud-scorer", "version": "v42", "baseline_version": "v41"}
    flip = sel | {"version": "v41", "baseline_version": "v42"}
    assert value(page, f"{PAIRED}_count", **sel) == value(page, f"{PAIRED}_count", **flip) == 300
    sum_d = value(page, f"{PAIRED}_sum", **sel) - value(page, f"{PAIRED}_sum", **flip)
    assert math.isclose(sum_d, math.fsum(d), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(
        value(page, f"{PAIRED}_diff_squared_sum", **sel), math.fsum(x * x for x in d), rel_tol=1e-9
    )
    # ... the unpaired series are kept: v41 counts 350 labels, v42 300
    assert value(page, "model_prediction_loss_count", version="v41") == 350
    assert value(page, "model_prediction_loss_count", version="v42") == 300
    # ... and the operator's Prometheus reader gets the ledger's paired numbers in the interval they fell in
    q = f'{PAIRED}_count{{version="v42",baseline_version="v41"}}'
    wait_until(
        lambda: [float(s["value"][1]) for s in prometheus.query(q)] == [300.0], 30, "paired count scraped"
    )
    end = round(time.time(), 3)
    ref = LossSeriesRef("ns", "fraud-scorer", "v41", "v42")
    got = PrometheusMetrics(PrometheusConfig(prometheus.url)).paired_intervals(
        ref, datetime.fromtimestamp(start - 1, UTC), datetime.fromtimestamp(end, UTC), end - start + 1
    )
    assert isinstance(got, list), got
    (iv,) = got
    assert iv.n == 300
    assert math.isclose(iv.sum, math.fsum(d), rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(iv.sumsq, math.fsum(x * x for x in d), rel_tol=1e-9)
    base_losses = [cross_entropy(int(labels[j]), probabilities=base[j]) for j in range(300)]
    assert math.isclose(iv.sum_baseline, math.fsum(base_losses), rel_tol=1e-9)
    # ... and versions the joiner never paired are NoData, naming the query
    other = PrometheusMetrics(PrometheusConfig(prometheus.url)).paired_intervals(
        LossSeriesRef("ns", "fraud-scorer", "v41", "v43"), datetime.fromtimestamp(start - 1, UTC),
        datetime.fromtimestamp(end, UTC), end - start + 1,
    )  # fmt: skip
    assert isinstance(other, Problem)
    assert other.kind == "NoData"
    assert 'version="v43"' in other.message
