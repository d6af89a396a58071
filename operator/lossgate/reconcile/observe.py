"""Observe one ModelRollout: read the router, Prometheus, the training runs and the canary's version.

Only reads: judging is core.step's, deciding core.machine's. Every read runs in a thread
(reconcile/threads.py) and the reads run concurrently, so one slow backend never stalls the event loop
that serves the other rollouts. The loss read covers only the intervals closed since the judge's state
in status ends, so a tick costs the same on a rollout's first day as on its tenth.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from lossgate.core.calibration import CalibrationInterval
from lossgate.core.checks import ChecksPlan
from lossgate.core.evidence import IntervalStats, Problem, TrainingRun
from lossgate.core.guardrail import CountInterval
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.observation import command_from_annotations
from lossgate.core.paired import PairedStats
from lossgate.core.paired_step import PairedPlan
from lossgate.core.step import Gathered, LossPlan, reads_metrics, training_due
from lossgate.core.token_fold import TokenInterval
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.model.status import Phase
from lossgate.ports import (
    CalibrationSeriesRef,
    GuardrailSeriesRef,
    LossSeriesRef,
    MetricsSource,
    MirrorRouter,
    TokenSeriesRef,
    TrafficRouter,
    VersionSource,
)
from lossgate.reconcile.limits import (
    read_calibration,
    read_class_losses,
    read_guardrail,
    read_label_evidence,
    read_loss_intervals,
    read_paired,
    read_tokens,
    read_training_run,
)
from lossgate.reconcile.threads import to_thread

TRAINING_POINTS = 2000  # Prometheus answers at most 11,000 points per series; stay well under


async def gather(
    *,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    generation: int,
    annotations: dict[str, str],
    router: TrafficRouter,
    metrics: MetricsSource | Problem,
    loss_ref: LossSeriesRef,
    plan: LossPlan | None,
    now: datetime,
    training_lookback: timedelta,
    scrape_lag: timedelta = timedelta(0),
    versions: VersionSource | None = None,
    label_checks: bool = False,
    checks_plan: ChecksPlan | None = None,
    guardrails: tuple[GuardrailSeriesRef, ...] = (),
    per_class: bool = False,
    paired_plan: PairedPlan | None = None,
    calibration: CalibrationSeriesRef | None = None,
    token_ref: TokenSeriesRef | None = None,
) -> Gathered:
    command = command_from_annotations(annotations)
    weights_task = to_thread(router.get_weights)
    if reads_metrics(command):
        loss_task = _loss(
            spec, metrics, loss_ref, plan, now - scrape_lag, probe=plan is None and not status.terminal
        )
        training_task = _training(spec, status, metrics, now, training_lookback)
    else:  # an abort decides without evidence (core.step.reads_metrics): nothing new is read
        loss_task, training_task = _nothing_read(plan), _none()
    version_task = _version(versions)
    labels_task = _labels(
        status, metrics, loss_ref, now - scrape_lag, label_checks and reads_metrics(command)
    )
    checks_on = checks_plan is not None and reads_metrics(command)
    checks_task = _checks(
        metrics, checks_plan if checks_on else None, guardrails, loss_ref, per_class, now - scrape_lag
    )
    on = reads_metrics(command)
    paired_task = _paired(metrics, loss_ref, paired_plan if on else None, now - scrape_lag)
    mirror_task = _mirror(router, spec.shadow is not None or status.mirror_percent != 0)
    cal_task = _calibration(metrics, checks_plan if checks_on else None, calibration, now - scrape_lag)
    core = asyncio.gather(weights_task, loss_task, training_task, version_task, labels_task, checks_task)
    tokens_task = _tokens(metrics, checks_plan if checks_on else None, token_ref, now - scrape_lag)
    (
        (weights, (loss, probe), training, version, labels, (checks, classes, closed)),
        (paired, mirror, cal, tokens),
    ) = await asyncio.gather(core, asyncio.gather(paired_task, mirror_task, cal_task, tokens_task))
    return Gathered(
        generation=generation,
        command=command,
        weights=weights,
        loss=loss,
        loss_probe=probe,
        training=training,
        canary_version=version,
        labels=labels,
        checks=checks,
        classes=classes,
        checks_closed=closed,
        paired=paired,
        mirror=mirror,
        calibration=cal,
        tokens=tokens,
    )


async def _tokens(
    metrics: MetricsSource | Problem, plan: ChecksPlan | None, ref: TokenSeriesRef | None, end: datetime
) -> list[TokenInterval] | Problem | None:
    """The token counters over the checks' window (spec.analysis.tokenLoss), like a guardrail's."""
    if ref is None or plan is None or end <= plan.start:
        return None
    if isinstance(metrics, Problem):
        return metrics
    return await read_tokens(metrics, ref, plan.start, end, plan.interval_s)


async def _checks(
    metrics: MetricsSource | Problem,
    plan: ChecksPlan | None,
    guardrails: tuple[GuardrailSeriesRef, ...],
    loss_ref: LossSeriesRef,
    per_class: bool,
    end: datetime,
) -> tuple[dict[str, list[CountInterval] | Problem], dict[str, list[IntervalStats]] | Problem | None, int]:
    """Every guardrail's and the classes' intervals closed since the checks' state ends (concurrently),
    and how many intervals closed (the looks the checks advance by, even when a class has no data)."""
    if plan is None or end <= plan.start:
        return {}, None, 0
    interval_ms = round(plan.interval_s * 1000)
    closed = (round(end.timestamp() * 1000) - round(plan.start.timestamp() * 1000)) // interval_ms
    if isinstance(metrics, Problem):
        return {g.name: metrics for g in guardrails}, metrics if per_class else None, closed
    reads = [read_guardrail(metrics, g, plan.start, end, plan.interval_s) for g in guardrails]
    got, classes = await asyncio.gather(
        asyncio.gather(*reads), _classes(metrics, plan, loss_ref, per_class, end)
    )
    return {g.name: r for g, r in zip(guardrails, got, strict=True)}, classes, closed


async def _calibration(
    metrics: MetricsSource | Problem,
    plan: ChecksPlan | None,
    ref: CalibrationSeriesRef | None,
    end: datetime,
) -> list[CalibrationInterval] | Problem | None:
    """The reliability counters over the checks' read window (None: not configured or nothing due)."""
    if plan is None or ref is None or end <= plan.start:
        return None
    if isinstance(metrics, Problem):
        return metrics
    return await read_calibration(metrics, ref, plan.start, end, plan.interval_s)


async def _classes(
    metrics: MetricsSource, plan: ChecksPlan, loss_ref: LossSeriesRef, per_class: bool, end: datetime
) -> dict[str, list[IntervalStats]] | Problem | None:
    if not per_class:
        return None
    return await read_class_losses(metrics, loss_ref, plan.start, end, plan.interval_s)


async def _loss(
    spec: ModelRolloutSpec,
    metrics: MetricsSource | Problem,
    ref: LossSeriesRef,
    plan: LossPlan | None,
    end: datetime,
    probe: bool,
) -> tuple[list[IntervalStats] | Problem | None, Problem | None]:
    """(intervals closed since the plan's start, the probe's problem before the start)."""
    if isinstance(metrics, Problem):
        return (metrics, None) if plan is not None else (None, metrics if probe else None)
    if plan is None:
        if not probe:
            return None, None
        # Before traffic moves there is nothing to judge; still check that Prometheus answers, so a
        # rollout never starts blind (a missing canary series is expected: it has no traffic yet).
        interval = spec.analysis.interval
        got = await read_loss_intervals(metrics, ref, end - interval * 2, end, interval.total_seconds())
        return None, got if isinstance(got, Problem) else None
    if end <= plan.start:  # reading lags the clock: no further interval can have closed
        return [], None
    got = await read_loss_intervals(metrics, ref, plan.start, end, plan.interval_s)
    return got, None


async def _training(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    metrics: MetricsSource | Problem,
    now: datetime,
    lookback: timedelta,
) -> TrainingRun | Problem | None:
    run = spec.canary.training_run
    if run is None or not training_due(spec, status, now):
        return None
    if isinstance(metrics, Problem):
        return metrics
    step_s = max(1.0, lookback.total_seconds() / TRAINING_POINTS)
    baseline_run = spec.baseline.training_run
    return await read_training_run(metrics, run, baseline_run, now - lookback, now, step_s)


async def _nothing_read(plan: LossPlan | None) -> tuple[list[IntervalStats] | None, None]:
    return ([] if plan is not None else None), None


async def _none() -> None:
    return None


async def _labels(
    status: ModelRolloutStatus, metrics: MetricsSource | Problem, ref: LossSeriesRef, end: datetime, on: bool
) -> LabelEvidence | Problem | None:
    """The current step's label coverage and delay (LOSSGATE_LABEL_CHECKS), while progressing."""
    start = status.step_started_at
    if not on or isinstance(metrics, Problem) or status.phase is not Phase.PROGRESSING or start is None:
        return None
    if end <= start:
        return None
    return await read_label_evidence(metrics, ref, start, end)


async def _paired(
    metrics: MetricsSource | Problem, ref: LossSeriesRef, plan: PairedPlan | None, end: datetime
) -> list[PairedStats] | Problem | None:
    """The shadow step's paired intervals closed since the paired state ends (None: not in shadow)."""
    if plan is None:
        return None
    if isinstance(metrics, Problem):
        return metrics
    if end <= plan.start:
        return []
    return await read_paired(metrics, ref, plan.start, end, plan.interval_s)


async def _mirror(router: TrafficRouter, wanted: bool) -> int | Problem | None:
    """The router's mirror percent, for rollouts with a shadow step (or a mirror left to remove)."""
    if not wanted or not isinstance(router, MirrorRouter):
        return None
    return await to_thread(router.get_mirror)


async def _version(versions: VersionSource | None) -> str | Problem | None:
    if versions is None:
        return None
    return await to_thread(versions.canary_version)


__all__ = ["gather"]
