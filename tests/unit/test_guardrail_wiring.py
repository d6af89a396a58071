"""Whole ticks with guardrails and per-class checks, against recording fakes of Prometheus.

Each spec field of spec.analysis.guardrails[] and spec.analysis.loss.perClass is set to a value that
changes the outcome, and the test shows the change (the real-server reads are in
tests/adapters/test_prom_guardrails.py, the whole operator in tests/e2e/test_guardrails_e2e.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lossgate.adapters.spec_refs import class_checks, guardrail_checks, judge_config
from lossgate.core.evidence import ArmStats, IntervalStats, Problem
from lossgate.core.guardrail import CountInterval, Counts
from lossgate.model import ModelRolloutSpec
from lossgate.ports import GuardrailSeriesRef, LossSeriesRef
from tests.unit.test_tick_wiring import RecordingMetrics, merged, run_ticks, start


@dataclass
class GuardedMetrics(RecordingMetrics):
    """RecordingMetrics plus request counters (per guardrail name) and the loss per class."""

    counts: dict[str, tuple[Counts, Counts]] = field(default_factory=dict)
    classes: dict[str, tuple[ArmStats, ArmStats]] = field(default_factory=dict)
    guardrail_reads: list[GuardrailSeriesRef] = field(default_factory=list)

    def guardrail_intervals(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem:
        self.guardrail_reads.append(ref)
        b, c = self.counts[ref.name]
        return [CountInterval(s, s + interval_s, b, c) for s in _starts(start, end, interval_s)]

    def class_loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem:
        return {
            name: [IntervalStats(s, s + interval_s, b, c) for s in _starts(start, end, interval_s)]
            for name, (b, c) in self.classes.items()
        }


def _starts(start: datetime, end: datetime, interval_s: float) -> list[float]:
    s, e = start.timestamp(), end.timestamp()
    return [s + i * interval_s for i in range(math.floor((e - s) / interval_s + 1e-9))]


ERRORS_2PCT = (Counts(2000, 40.0), Counts(500, 10.0))
ERRORS_CANARY_6PCT = (Counts(2000, 40.0), Counts(500, 30.0))


def _run(over: dict[str, Any], metrics: GuardedMetrics, ticks: int = 30) -> Any:
    deps, objects = start(over, metrics)
    return run_ticks(deps, objects, ticks)


def _guard(**kw: Any) -> dict[str, Any]:
    return {"name": "errors", "errorRate": {}, **kw}


def test_error_rate_regression_rolls_back_naming_the_check() -> None:
    # Given a canary failing 6% of requests against the baseline's 2%, margin 1 point
    metrics = GuardedMetrics(counts={"errors": ERRORS_CANARY_6PCT})
    status = _run({"analysis.guardrails": [_guard(margin=0.01)]}, metrics)
    # Then the rollout is rolled back by the check, which the condition and message name
    assert status.phase.value == "RolledBack"
    assert "check errors" in status.message
    assert "CheckRegression" in {c.reason for c in status.conditions}
    assert any("check errors" in h.message for h in status.history)
    (check,) = status.checks
    assert check.verdict == "Regression"
    assert check.kind == "errorRate"
    assert check.cs_low is not None
    assert check.cs_low > 0.01
    assert check.p_regression is not None
    assert check.p_regression <= check.alpha  # type: ignore[operator]
    assert check.n_canary > 0
    assert math.isclose(check.mean_canary or 0, 0.06)


def test_margin_and_relative_margin_reach_the_test() -> None:
    # Given the same 2% -> 6% canary
    outcomes = {}
    for key, over in {
        "margin 0.1": _guard(margin=0.1),
        "margin 0.01": _guard(margin=0.01),
        "relative 5": _guard(relativeMargin=5.0),
        "relative 0.5": _guard(relativeMargin=0.5),
    }.items():
        metrics = GuardedMetrics(counts={"errors": ERRORS_CANARY_6PCT})
        outcomes[key] = _run({"analysis.guardrails": [over]}, metrics).phase.value
    # Then only the margins the canary exceeds roll back (6% > 2% + 1pt, 6% > 1.5 x 2%)
    assert outcomes == {
        "margin 0.1": "Progressing",
        "margin 0.01": "RolledBack",
        "relative 5": "Progressing",
        "relative 0.5": "RolledBack",
    }


def test_queries_metric_and_latency_modes_reach_the_reads() -> None:
    # Given three guardrails: templated errors, fraction slower than 0.25 s, mean under a 5 s timeout
    queries = {"bad": 'sum(e{version="{version}"})', "total": 'sum(t{version="{version}"})'}
    guards = [
        {"name": "errors", "errorRate": {"queries": queries}, "margin": 0.01},
        {"name": "slow", "latency": {"metric": "lat_seconds", "thresholdSeconds": 0.25}, "margin": 0.05},
        {"name": "mean", "latency": {"timeoutSeconds": 5}, "margin": 0.05},
    ]
    equal = (Counts(2000, 40.0), Counts(500, 10.0))
    mean = (Counts(2000, 400.0), Counts(500, 100.0))
    metrics = GuardedMetrics(counts={"errors": equal, "slow": equal, "mean": mean})
    status = _run({"analysis.guardrails": guards}, metrics, ticks=4)
    # Then each read carries what its spec said
    refs = {r.name: r for r in metrics.guardrail_reads}
    assert (refs["errors"].mode, refs["errors"].bad_template, refs["errors"].total_template) == (
        "errors", queries["bad"], queries["total"],
    )  # fmt: skip
    assert (refs["slow"].mode, refs["slow"].metric, refs["slow"].threshold) == ("slower", "lat_seconds", 0.25)
    assert (refs["mean"].mode, refs["mean"].metric) == ("mean", "http_request_duration_seconds")
    # And the mean's test is bounded by the timeout (its interval is within +-5 s, not +-1)
    by_name = {c.name: c for c in status.checks}
    assert by_name["mean"].mean_canary == 0.2
    spec = ModelRolloutSpec.model_validate(merged({"analysis.guardrails": guards}))
    bounds = {g.config.name: g.config.null.bound for g in guardrail_checks(spec)}
    assert bounds == {"errors": 1.0, "slow": 1.0, "mean": 5.0}


def test_alpha_rollback_is_split_over_every_check() -> None:
    # Given two guardrails and per-class loss with 5 slots
    over = {
        "analysis.guardrails": [_guard(margin=0.01), {"name": "slow", "latency": {"thresholdSeconds": 0.5},
                                                         "margin": 0.01}],
        "analysis.loss.perClass": {"enabled": True, "maxClasses": 5},
    }  # fmt: skip
    spec = ModelRolloutSpec.model_validate(merged(over))
    # Then the pooled judge, each guardrail and each class slot get alphaRollback / 8
    assert spec.analysis.family_checks == 8
    assert judge_config(spec).alpha_rollback == 0.01 / 8
    assert {g.config.alpha_rollback for g in guardrail_checks(spec)} == {0.01 / 8}
    classes = class_checks(spec)
    assert classes is not None
    assert classes.config.alpha_rollback == 0.01 / 8
    assert classes.max_classes == 5


def _loss(n: float, mean: float) -> ArmStats:
    return ArmStats(n, n * mean, n * (mean * mean + 0.04))


def test_a_class_regression_rolls_back_and_a_small_class_is_unjudged() -> None:
    # Given the pooled loss equal, class "minority" 30% worse on the canary, class "rare" tiny
    classes = {
        "majority": (_loss(1600, 0.40), _loss(400, 0.40)),
        "minority": (_loss(400, 0.40), _loss(100, 0.52)),
        "rare": (_loss(4, 0.40), _loss(1, 0.90)),
    }
    per_class = {"enabled": True, "minSamplesPerClass": 500, "relativeMargin": 0.05}
    metrics = GuardedMetrics(classes=classes)
    status = _run({"analysis.loss.perClass": per_class}, metrics, ticks=40)
    # Then the minority class rolls the rollout back, named, and the rare class is shown unjudged
    assert status.phase.value == "RolledBack"
    assert "minority" in status.message
    by_name = {c.name: c for c in status.checks}
    assert by_name["minority"].verdict == "Regression"
    assert by_name["rare"].judged is False
    assert "not judged" in by_name["rare"].reason


def test_min_samples_per_class_and_max_classes_reach_the_checks() -> None:
    classes = {
        "majority": (_loss(1600, 0.40), _loss(400, 0.40)),
        "minority": (_loss(400, 0.40), _loss(100, 0.52)),
    }
    # Given a quota no class reaches: nothing is judged, nothing blocks
    per_class = {"enabled": True, "minSamplesPerClass": 10_000_000}
    status = _run({"analysis.loss.perClass": per_class}, GuardedMetrics(classes=classes), ticks=20)
    assert status.phase.value == "Progressing"
    assert all(not c.judged for c in status.checks)
    # Given one slot: the largest class takes it, the other is counted, not judged
    per_class = {"enabled": True, "maxClasses": 1, "minSamplesPerClass": 100}
    status = _run({"analysis.loss.perClass": per_class}, GuardedMetrics(classes=classes), ticks=20)
    assert status.phase.value == "Progressing"
    by_name = {c.name: c for c in status.checks}
    assert by_name["majority"].judged
    assert not by_name["minority"].judged
    assert "no slot" in by_name["minority"].reason
    # And a margin wide enough for the minority class's 30% lets it pass
    per_class = {"enabled": True, "minSamplesPerClass": 100, "margin": 0.5}
    status = _run({"analysis.loss.perClass": per_class}, GuardedMetrics(classes=classes), ticks=40)
    assert status.phase.value == "Progressing"


def test_checks_state_is_fixed_size_and_resumes_from_status() -> None:
    # Given an equal guardrail running 10 and then 40 ticks
    sizes = []
    for ticks in (10, 40):
        metrics = GuardedMetrics(counts={"errors": ERRORS_2PCT})
        status = _run({"analysis.guardrails": [_guard(margin=0.01)]}, metrics, ticks=ticks)
        st = status.checks_state
        assert st is not None
        assert st.looks >= ticks - 3
        sizes.append(sum(len(v) for v in st.numbers["errors"].values()))
        # Then each read after the first covers only the intervals closed since
        assert all(r.name == "errors" for r in metrics.guardrail_reads)
    assert sizes[0] == sizes[1]


def test_per_class_without_class_series_still_reads_only_new_intervals() -> None:
    # Given per-class loss enabled but no series with a class label
    metrics = GuardedMetrics(classes={})
    status = _run({"analysis.loss.perClass": {"enabled": True}}, metrics, ticks=20)
    # Then the checks' state still moves on with every closed interval (each read stays short)
    st = status.checks_state
    assert st is not None
    assert st.looks >= 17
    assert status.checks == []
    assert status.phase.value == "Progressing"


def test_a_retry_after_a_check_rollback_judges_the_new_run_afresh() -> None:
    # Given a rollout rolled back by the error-rate check
    metrics = GuardedMetrics(counts={"errors": ERRORS_CANARY_6PCT})
    deps, objects = start({"analysis.guardrails": [_guard(margin=0.01)]}, metrics)
    assert run_ticks(deps, objects, 30).phase.value == "RolledBack"
    # When the canary is fixed and the rollout retried
    metrics.counts["errors"] = ERRORS_2PCT
    objects.body["metadata"]["annotations"] = {"lossgate.io/retry": "now"}
    status = run_ticks(deps, objects, 10)
    # Then the old regression does not roll the new run back: it progresses on fresh evidence
    assert status.phase.value == "Progressing"
    (check,) = status.checks
    assert check.verdict != "Regression"


def test_error_rate_metric_and_per_class_relative_margin_reach_their_code() -> None:
    # Given an error-rate guardrail on a counter of another name
    metrics = GuardedMetrics(counts={"errors": ERRORS_2PCT})
    _run(
        {"analysis.guardrails": [_guard(margin=0.01, errorRate={"metric": "my_requests_total"})]}, metrics, 3
    )
    # Then the read asks for it
    assert {r.metric for r in metrics.guardrail_reads} == {"my_requests_total"}
    # Given a class 30% worse: a relative margin of 50% lets it pass, one of 5% rolls it back
    classes = {
        "majority": (_loss(1600, 0.40), _loss(400, 0.40)),
        "minority": (_loss(400, 0.40), _loss(100, 0.52)),
    }
    phases = {}
    for relative in (0.5, 0.05):
        per_class = {"enabled": True, "minSamplesPerClass": 100, "relativeMargin": relative}
        status = _run({"analysis.loss.perClass": per_class}, GuardedMetrics(classes=classes), ticks=40)
        phases[relative] = status.phase.value
    assert phases == {0.5: "Progressing", 0.05: "RolledBack"}
