"""`lossgate plot NAME` against the real API server and a backfilled Prometheus: the judge's trail is
recomputed over the rollout's weight timeline (status.stepStarts) as the operator computes it; without
Prometheus the picture comes from status.history."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.judge import evaluate
from lossgate.model import ModelRolloutSpec
from lossgate_dev.devenv.prom import Prometheus
from tests.cli.conftest import Create, manifest, progressing, rolled_back, run
from tests.cli.png import TAB_BLUE, TAB_RED, colour_share, dimensions
from tests.cli.test_replay import regressing_canary
from tests.infra.kube_fixtures import Kube

pytestmark = [pytest.mark.kube, pytest.mark.prom]


def test_plot_recomputes_the_trail_from_prometheus(
    kube: Kube, namespace: str, create: Create, prometheus: Prometheus, tmp_path: Path
) -> None:
    # Given the known counters in Prometheus and a rollout that started at their first instant at 5%
    # and was rolled back 15 minutes later (status written by decide())
    h = regressing_canary()
    prometheus.backfill(h.openmetrics())
    t0 = datetime.fromtimestamp(h.start, tz=UTC)
    create("fraud-scorer", lambda spec: rolled_back(spec, t0=t0), prometheus=prometheus.url)
    png = tmp_path / "rollout.png"
    # When it is plotted
    r = run("plot", "fraud-scorer", "-n", namespace, "--out", str(png), "--kubeconfig", str(kube.kubeconfig))
    # Then the trail is the judge over the intervals up to one interval after the rollback, tagged with the
    # weights in force (5% from the start, 0% after the rollback), and its first decision is named
    assert r.rc == 0, r.err
    spec = ModelRolloutSpec.model_validate(manifest("x", prometheus=prometheus.url)["spec"])
    looks = 31  # the rollback at +15 min, plus one interval
    intervals = [replace(iv, canary_weight=5 if k < 30 else 0) for k, iv in enumerate(h.expected()[:looks])]
    verdicts = [evaluate(intervals[:k], judge_config(spec)).verdict.value for k in range(1, looks + 1)]
    first = verdicts.index("Regression") + 1
    at = (t0 + timedelta(seconds=30 * first)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert r.out.strip() == (
        f"plot written to {png} (from Prometheus {prometheus.url}, {looks} looks, "
        f"first decision Regression at {at})"
    )
    # And the PNG is a real picture with the CS band and the margin/decision in red
    assert dimensions(png) == (1100, 650)
    assert png.stat().st_size > 30_000
    assert colour_share(png, TAB_BLUE) > 0.002
    assert colour_share(png, TAB_RED) > 0.001


def test_plot_falls_back_to_status_history(
    kube: Kube, namespace: str, create: Create, tmp_path: Path
) -> None:
    # Given a progressing rollout whose Prometheus does not answer
    create("fraud-scorer", progressing)
    png = tmp_path / "history.png"
    # When it is plotted
    r = run("plot", "fraud-scorer", "-n", namespace, "--out", str(png), "--prometheus", "http://127.0.0.1:9",
            "--kubeconfig", str(kube.kubeconfig))  # fmt: skip
    # Then the picture comes from the numbers recorded in status.history, and says so
    assert r.rc == 0, r.err
    assert r.out.startswith(f"plot written to {png} (from status.history (Prometheus at http://127.0.0.1:9: ")
    assert dimensions(png) == (1100, 650)
    assert png.stat().st_size > 10_000
