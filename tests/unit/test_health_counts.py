"""The gradient-health gate on counted series (core.health_counts): the exporter's real output
(generate_latest) parsed into RankCounts with the adapter's keys, judged with the CR's thresholds."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
from prometheus_client import generate_latest

from lossgate.adapters.prometheus.training_counts import counts_from_exposition
from lossgate.core.decision import DecisionKind
from lossgate.core.evidence import RankCounts, RankSeries, TrainingRun
from lossgate.core.health import EXPORTER_OUTDATED, HealthConfig, assess
from lossgate.core.status_conditions import TickFacts, _training_healthy
from lossgate.core.verdicts import HealthVerdict
from lossgate.instrument import TrainingExporter
from lossgate.instrument.step_stats import GateSettings
from lossgate.model.conditions import ConditionStatus, Reason
from lossgate.model.status import Phase

SET = GateSettings(window=60, min_history=30, warmup_steps=50.0)
CFG = HealthConfig(window=60, min_history=30, warmup_steps=50.0)


def _counts(exporter: TrainingExporter) -> RankCounts:
    """What the adapter builds from a first read (all series new in the window: start values 0)."""
    (counts,) = counts_from_exposition([generate_latest(exporter.registry).decode()])
    return counts


def _job(rank: int, steps: int = 400, seed: int = 0, **faults: float) -> TrainingExporter:
    exp = TrainingExporter("r", rank, settings=SET)
    rng = np.random.default_rng(seed + rank)
    level = faults.get("level", 1.0)
    for step in range(1, steps + 1):
        grad = float(np.exp(rng.normal(0, 0.1)))
        loss = float(np.exp(rng.normal(0, 0.05))) * level
        if step in faults.get("spikes", ()):  # type: ignore[operator]
            grad *= 50.0
        if step == faults.get("nan"):
            loss = math.nan
        exp.on_step(step, loss, grad, skipped=step in faults.get("skips", ()))  # type: ignore[operator]
    return exp


def _run(*exporters: TrainingExporter) -> TrainingRun:
    return TrainingRun("r", (), counts=tuple(_counts(e) for e in exporters))


def test_clean_ranks_pass_and_every_step_is_assessed() -> None:
    # Given two clean ranks of 400 steps; when judged on their counts; then the gate passes
    result = assess(_run(_job(0), _job(1)), CFG)
    assert result.verdict is HealthVerdict.PASS, result.reasons
    # 351 steps at or after step 50, of which the first 30 have too little history
    assert result.points_assessed == 351 - 30


def test_one_spike_fails_on_the_ratio_and_bursts_are_read_per_1000_steps() -> None:
    # Given rank 1 with a 50x gradient norm at step 200 only; then the hard bound (10x) fails it
    result = assess(_run(_job(0), _job(1, spikes=(200,))), CFG)
    assert result.verdict is HealthVerdict.FAIL
    assert result.reasons[0] == (
        "rank 1: gradient norm over 10x its trailing median on 1 of 400 steps (every step counted)"
    )
    assert result.max_grad_norm_ratio == 20.0  # 50x: the largest bound exceeded is 20
    assert result.grad_norm_spikes == 1
    # And a CR bound of 100x does not fail it, read from the exporter's 100 bucket
    loose = assess(
        _run(_job(0), _job(1, spikes=(200,))), HealthConfig(**{**vars(CFG), "max_grad_norm_spike": 100.0})
    )
    assert loose.verdict is HealthVerdict.PASS, loose.reasons
    # And 4 spikes within 1000 steps fail (more than 3), 3 warn
    four = assess(
        _run(_job(0, spikes=(150, 200, 250, 300)), _job(1)),
        HealthConfig(**{**vars(CFG), "max_grad_norm_spike": 100.0}),
    )
    assert (
        "rank 0: 4 or more gradient-norm spikes within 1000 steps (more than 3; every step counted)"
        in four.reasons
    )
    three = assess(
        _run(_job(0, spikes=(150, 200, 250)), _job(1)),
        HealthConfig(**{**vars(CFG), "max_grad_norm_spike": 100.0}),
    )
    assert three.verdict is HealthVerdict.WARN
    assert three.reasons[0] == "rank 0: 3 or more gradient-norm spikes within 1000 steps"


def test_a_threshold_the_exporter_does_not_count_is_unknown_with_the_fix() -> None:
    # Given a CR asking maxGradNormSpike 7 (not a bucket bound of an exporter with default settings)
    result = assess(_run(_job(0), _job(1)), HealthConfig(**{**vars(CFG), "max_grad_norm_spike": 7.0}))
    # Then the rule cannot be judged: UNKNOWN, naming what to add to the exporter
    assert result.verdict is HealthVerdict.UNKNOWN
    assert (
        "rank 0: the exporter does not count gradient-norm ratio bucket le=7.0; add maxGradNormSpike to "
        "GateSettings(max_grad_norm_spike=...)" in result.reasons
    )
    # And an exporter given that threshold has the bucket: the rule is judged exactly
    exp = TrainingExporter(
        "r",
        0,
        settings=GateSettings(window=60, min_history=30, warmup_steps=50.0, max_grad_norm_spike=(7.0,)),
    )
    for step in range(1, 200):
        exp.on_step(step, 1.0, 8.0 if step == 150 else 1.0)
    judged = assess(_run(exp), HealthConfig(**{**vars(CFG), "max_grad_norm_spike": 7.0}))
    assert judged.verdict is HealthVerdict.FAIL
    assert judged.reasons[0].startswith("rank 0: gradient norm over 7x its trailing median on 1 of")


def test_nonfinite_minus_skipped_and_window_mismatch() -> None:
    # Given a NaN loss at step 120 on rank 0 and 3 AMP-skipped steps on rank 1
    result = assess(_run(_job(0, nan=120), _job(1, skips=(100, 101, 102))), CFG)
    # Then only the applied non-finite step fails; skipped steps are counted, not failed
    assert result.verdict is HealthVerdict.FAIL
    assert result.nonfinite_steps == 1
    assert result.skipped_steps == 3
    assert [x for x in result.reasons if "non-finite" in x] == [
        "rank 0: 1 applied step(s) with non-finite loss or gradients (of 400 steps counted)"
    ]
    # And a rollout whose window differs from the exporter's gets a warning naming the fix
    other = assess(_run(_job(0), _job(1)), HealthConfig(**{**vars(CFG), "window": 100}))
    assert other.verdict is HealthVerdict.WARN
    assert other.reasons[0] == (
        "rank 0: the exporter counts with window 60, the rollout asks 100; pass "
        "GateSettings(window=100) to the TrainingExporter"
    )


def test_divergence_of_two_ranks_is_half_the_log_gap() -> None:
    # Given rank 1's loss 1.6x rank 0's (log gap 0.47: each rank exp(0.235) - 1 = 26% from the median)
    result = assess(_run(_job(0), _job(1, level=1.6)), CFG)
    fails = [x for x in result.reasons if "away from the other ranks" in x]
    assert len(fails) == 2
    assert fails[0].startswith("rank 0: loss 26% away from the other ranks (z 0.0, bound 20%")
    # And 1.3x (13% each) passes
    assert assess(_run(_job(0), _job(1, level=1.3)), CFG).verdict is HealthVerdict.PASS


def test_gauge_only_exporter_gets_the_exporter_outdated_condition() -> None:
    # Given a run read from an old exporter (gauges only) that would pass
    steps = tuple(float(s) for s in range(1, 200))
    ranks = (RankSeries("0", steps, (1.0,) * len(steps), (1.0,) * len(steps)),)
    result = assess(
        TrainingRun("r", ranks, exporter_outdated=True),
        HealthConfig(warmup_steps=0.0, window=60, min_history=30),
    )
    # Then the verdict stands, with a note naming what to upgrade
    assert result.verdict is HealthVerdict.PASS
    note = next(
        x for x in result.reasons if x.startswith(f"{EXPORTER_OUTDATED}: run exports only the training")
    )
    assert "training_steps_total" in note
    # And TrainingHealthy carries reason ExporterOutdated (True: the gate passed on what it saw)
    facts = TickFacts(
        phase=Phase.PROGRESSING,
        kind=DecisionKind.HOLD,
        reason="",
        message="",
        reset=False,
        metrics_available=True,
        metrics_message="",
        health=result.verdict,
        health_message="; ".join(result.reasons),
        now=datetime.now(UTC),
        generation=1,
    )
    status, reason, message = _training_healthy(facts)
    assert (status, reason) == (ConditionStatus.TRUE, Reason.EXPORTER_OUTDATED)
    assert "upgrade lossgate.instrument" in message
