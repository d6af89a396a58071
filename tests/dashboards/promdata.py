"""A real Prometheus's worth of lossgate data for the dashboard tests, from the real exporters.

Three rollouts are decided tick by tick by the real decide() and recorded by the operator's real
metrics (OperatorMetrics: what `record_tick` and the rollout gauges export each tick): `fraud` is
promoted, `churn` rolled back on a regression, `ranker` is still in progress with its metrics
unavailable for the last ten minutes. The label joiner's real exposition gives the model servers'
loss, coverage and delay series, and the demo trainer a two-rank training run. Each registry is
sampled every 30 s of a 90-minute history and written as OpenMetrics for `promtool tsdb
create-blocks-from openmetrics` (every sample name its own `unknown` family: PromQL ignores types).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from lossgate.core.evidence import Problem
from lossgate.core.machine import decide
from lossgate.core.verdicts import LossVerdict
from lossgate.joiner.accounting import Series
from lossgate.joiner.exposition import families
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase
from lossgate.reconcile.telemetry import OperatorMetrics
from tests.unit.test_machine_rules import loss, make_spec, obs

NAMESPACE = "ml"
STEP_S = 30
TICKS = 180  # 90 minutes
RUN = "ranker-train"
Row = tuple[str, tuple[tuple[str, str], ...], float, float]  # sample name, labels, value, time


@dataclass
class Rollout:
    name: str
    spec: ModelRolloutSpec
    status: ModelRolloutStatus = field(default_factory=ModelRolloutStatus)


def _rows(metrics: Iterable[Metric], t: float) -> list[Row]:
    return [(s.name, tuple(sorted(s.labels.items())), float(s.value), t) for m in metrics for s in m.samples]


def _observation(name: str, k: int) -> tuple[dict[str, object], Problem | None]:
    """What the rollout's Prometheus shows at tick k (the arguments of tests' obs())."""
    if name == "churn" and k >= 100:  # a regression, with samples enough
        return {"loss": loss(LossVerdict.REGRESSION, delta=0.05, cs_low=0.03, cs_high=0.07)}, None
    if name == "ranker" and k >= TICKS - 20:  # Prometheus down for the last ten minutes
        return {"metrics_available": False, "metrics_problem": "down"}, Problem("Unavailable", "down")
    if name == "fraud" and k >= 10:  # quotas met, not worse: a step every minDuration, then promoted
        return {"loss": loss(LossVerdict.NOT_WORSE, cs_high=0.008), "canary_samples_in_step": 1e6}, None
    # Collecting evidence: the judge undecided, with p-values and the samples it still needs
    undecided = loss(p_regression=0.4, p_not_worse=0.3, samples_needed=20_000 - 50 * k)
    return {"loss": undecided, "canary_samples_in_step": 10}, None


def operator_rows(end: float) -> tuple[list[Row], dict[str, Phase]]:
    registry = CollectorRegistry()
    telemetry = OperatorMetrics(registry)
    telemetry.watch_ticks(lambda: 1.0, lambda: 0.0)
    rollouts = [
        Rollout("fraud", make_spec(model="fraud-scorer")),
        Rollout("churn", make_spec(model="churn")),
        Rollout("ranker", make_spec(model="ranker")),
    ]
    rows: list[Row] = []
    for k in range(TICKS):
        t = end - (TICKS - 1 - k) * STEP_S
        now = datetime.fromtimestamp(t, UTC)
        for r in rollouts:
            kw, problem = _observation(r.name, k)
            decision = decide(r.spec, r.status, obs(**kw), now)
            telemetry.record_tick(NAMESPACE, r.name, decision, problem, 0.02 + 0.001 * (k % 7), now)
            telemetry.rollout.record(NAMESPACE, r.name, r.spec, decision.status, now)
            telemetry.status_writes.labels("written").inc()
            r.status = decision.status
        rows += _rows(registry.collect(), t)
    return rows, {r.name: r.status.phase for r in rollouts}


def model_server_rows(end: float, model: str = "ranker") -> list[Row]:
    """The label joiner's exposition for the baseline (v41) and canary (v42) of `model`."""
    start = end - TICKS * STEP_S
    series = {(model, v, None): Series(created=start) for v in ("v41", "v42")}
    rows: list[Row] = []
    for k in range(TICKS):
        t = end - (TICKS - 1 - k) * STEP_S
        for (_, version, _), s in series.items():
            n, mean = 80, (0.40 if version == "v41" else 0.41)
            s.predictions += 100
            s.count += n
            s.sum += n * mean
            s.sumsq += n * (mean * mean + 0.01)
            s.buckets[9] += n - 1  # le=0.5
            s.buckets[16] += 1  # le=7.0: one catastrophic prediction per 30 s
            s.delay_buckets[4 + k % 3] += n  # 60 s to 300 s
            s.delay_sum += n * 120.0
        rows += _rows(families(series, {}), t)
    return rows


def openmetrics(rows: list[Row]) -> str:
    by_name: defaultdict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_name[row[0]].append(row)
    out: list[str] = []
    for name in sorted(by_name):
        out.append(f"# TYPE {name} unknown")
        for _, labels, value, t in sorted(by_name[name], key=lambda r: (r[1], r[3])):
            text = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {value!r} {t:.3f}")
    out.append("# EOF")
    return "\n".join(out) + "\n"


def history_end() -> float:
    """A whole minute a little in the past: the last samples are fresh at query time."""
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    return now.timestamp()
