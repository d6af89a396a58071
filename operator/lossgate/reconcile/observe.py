"""Observe one ModelRollout: read the router, Prometheus and the training run, and judge.

Everything blocking runs in threads (asyncio.to_thread) so one slow Prometheus never stalls the
event loop that serves the other rollouts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from lossgate.adapters.spec_refs import health_config, judge_config
from lossgate.core.evidence import Problem, Weights
from lossgate.core.health import assess
from lossgate.core.judge import evaluate
from lossgate.core.observation import HealthEvidence, LossEvidence, Observation, command_from_annotations
from lossgate.core.timeline import weight_timeline, with_weights
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.ports import LossSeriesRef, MetricsErrorKind, MetricsSource, TrafficRouter

TRAINING_POINTS = 2000  # Prometheus answers at most 11,000 points per series; stay well under


@dataclass(frozen=True)
class Observed:
    """The Observation for decide(), and what the reconciler reports besides it."""

    observation: Observation
    router_problem: Problem | None
    metrics_problem: Problem | None
    training_problem: Problem | None


async def observe(
    *,
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    generation: int,
    annotations: dict[str, str],
    router: TrafficRouter,
    metrics: MetricsSource | Problem,
    loss_ref: LossSeriesRef,
    now: datetime,
    training_lookback: timedelta,
    scrape_lag: timedelta = timedelta(0),
) -> Observed:
    weights_task = asyncio.to_thread(router.get_weights)
    loss_task = _loss(spec, status, metrics, loss_ref, now - scrape_lag)
    health_task = _health(spec, metrics, now, training_lookback)
    weights, (loss, in_step, metrics_problem), (health, training_problem) = await asyncio.gather(
        weights_task, loss_task, health_task
    )
    router_problem = weights if isinstance(weights, Problem) else None
    unavailable = metrics_problem is not None and metrics_problem.kind != MetricsErrorKind.PARTIAL.value
    obs = Observation(
        generation=generation,
        loss=loss,
        health=health,
        metrics_available=not unavailable,
        metrics_problem=metrics_problem.message if unavailable and metrics_problem else None,
        actual_weights=weights if isinstance(weights, Weights) else None,
        canary_samples_in_step=in_step,
        command=command_from_annotations(annotations),
    )
    return Observed(obs, router_problem, metrics_problem, training_problem)


async def _loss(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    metrics: MetricsSource | Problem,
    ref: LossSeriesRef,
    now: datetime,
) -> tuple[LossEvidence | None, float, Problem | None]:
    if isinstance(metrics, Problem):
        return None, 0.0, metrics
    started = status.step_starts[0].at if status.step_starts else None
    if started is None or status.terminal:
        # Before traffic moves there is nothing to judge; still check that Prometheus answers, so a
        # rollout never starts blind (a missing canary series is expected: it has no traffic yet).
        probe = await asyncio.to_thread(
            metrics.loss_intervals,
            ref,
            now - spec.analysis.interval * 2,
            now,
            spec.analysis.interval.total_seconds(),
        )
        problem = probe if isinstance(probe, Problem) else None
        if problem is not None and problem.kind == MetricsErrorKind.PARTIAL.value:
            problem = None
        return None, 0.0, problem
    if now <= started:  # reading lags the clock: right after the start no interval has closed yet
        return LossEvidence.from_judge(evaluate([], judge_config(spec))), 0.0, None
    got = await asyncio.to_thread(
        metrics.loss_intervals, ref, started, now, spec.analysis.interval.total_seconds()
    )
    if isinstance(got, Problem):
        if got.kind == MetricsErrorKind.PARTIAL.value:  # the canary has no labels yet: no evidence
            return LossEvidence.from_judge(evaluate([], judge_config(spec))), 0.0, got
        return None, 0.0, got
    intervals = with_weights(got, weight_timeline(status))
    result = await asyncio.to_thread(evaluate, intervals, judge_config(spec))
    step_start = status.step_starts[-1].at.timestamp()
    in_step = sum(iv.canary.n for iv in intervals if iv.start >= step_start)
    return LossEvidence.from_judge(result, cs_level=result.cs_level), float(in_step), None


async def _health(
    spec: ModelRolloutSpec, metrics: MetricsSource | Problem, now: datetime, lookback: timedelta
) -> tuple[HealthEvidence | None, Problem | None]:
    run = spec.canary.training_run
    if run is None or not spec.analysis.gradient_health.enabled:
        return None, None
    if isinstance(metrics, Problem):
        return None, metrics
    step_s = max(1.0, lookback.total_seconds() / TRAINING_POINTS)
    got = await asyncio.to_thread(metrics.training_run, run, None, now - lookback, now, step_s)
    if isinstance(got, Problem):
        return None, got
    return HealthEvidence.from_health(assess(got, health_config(spec))), None
