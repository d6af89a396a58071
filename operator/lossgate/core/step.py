"""One tick's judgement: from what observe read to the Observation decide() takes (pure, no I/O).

Observe gathers evidence (the router's weights, the loss intervals closed since the last tick, the
training run, the canary's version); this module judges it (the loss judge's fold, the gradient-health
gate) and keeps the judge's running state for status; decide() then decides. The same step serves the
operator and the CLI, so what `lossgate` prints is what the operator would conclude.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from lossgate.core.calibration import CalibrationInterval
from lossgate.core.checks import ChecksPlan, ClassChecks, GuardrailCheck, judge_checks
from lossgate.core.evidence import IntervalStats, Problem, TrainingRun, Weights
from lossgate.core.guardrail import CountInterval
from lossgate.core.health import HealthConfig, assess
from lossgate.core.judge_codec import CorruptState, decode, encode
from lossgate.core.judge_fold import JudgeFold, advance, conclude
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.observation import HealthEvidence, LossEvidence, ManualCommand, Observation
from lossgate.core.paired import PairedStats
from lossgate.core.paired_step import PairedPlan, judge_paired
from lossgate.core.timeline import weight_timeline, with_weights
from lossgate.core.token_fold import TokenConfig, TokenInterval
from lossgate.core.verdicts import HealthVerdict
from lossgate.core.watch_ref import LateSums
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.model.calibration import CalibrationStatus
from lossgate.model.status import ChecksState, CheckStatus, JudgeState, PairedState, Phase

PARTIAL = "Partial"  # lossgate.ports.MetricsErrorKind.PARTIAL (one arm has no series): not an outage
NO_DATA = "NoData"  # lossgate.ports.MetricsErrorKind.NO_DATA: no pairs yet in a shadow step, not an outage
# Training health is re-read at most this often (a few intervals), and kept in status in between: the
# run that produced the canary has usually finished, so its verdict rarely changes.
TRAINING_REFRESH_INTERVALS = 5
TRAINING_REFRESH_MAX = timedelta(minutes=5)


@dataclass(frozen=True)
class LossPlan:
    """Which loss intervals to read this tick: from `start` (on the grid of `origin`), continuing `fold`."""

    origin: datetime
    start: datetime
    interval_s: float
    fold: JudgeFold
    fingerprint: str


def plan_loss_read(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, config: JudgeConfig, series: object
) -> LossPlan | None:
    """None while there is nothing to judge (not started, or finished). `series`: the adapter's
    reference to the loss series; with the judge's config it fingerprints the state in status, so a
    spec edit that changes either rebuilds the evidence from the rollout's start."""
    if not status.step_starts or status.terminal:
        return None
    origin = status.step_starts[0].at
    interval_ms = round(spec.analysis.interval.total_seconds() * 1000)
    origin_ms = round(origin.timestamp() * 1000)
    fp = hashlib.sha256(repr((config, series, interval_ms, origin_ms)).encode()).hexdigest()[:32]
    plan = LossPlan(origin, origin, interval_ms / 1000, JudgeFold(), fp)
    st = status.judge_state
    if st is None or st.fingerprint != fp or st.origin_ms != origin_ms or st.interval_ms != interval_ms:
        return plan
    try:
        fold = decode(st.numbers)
    except CorruptState:
        return plan  # not ours (another version, or edited): rebuild from the start
    if fold.looks != st.looks or st.through_ms != origin_ms + st.looks * interval_ms:
        return plan
    return LossPlan(origin, _at_ms(st.through_ms), interval_ms / 1000, fold, fp)


@dataclass(frozen=True)
class Gathered:
    """What observe read this tick, unjudged. A Problem where a read failed; None where not read."""

    generation: int
    command: ManualCommand | None
    weights: Weights | Problem
    loss: list[IntervalStats] | Problem | None  # the intervals closed since plan.start
    loss_probe: Problem | None = None  # before the start: does Prometheus answer?
    training: TrainingRun | Problem | None = None
    canary_version: str | Problem | None = None
    labels: LabelEvidence | Problem | None = None  # LOSSGATE_LABEL_CHECKS: the step's label evidence
    checks: Mapping[str, list[CountInterval] | Problem] = field(default_factory=dict)  # per guardrail
    classes: dict[str, list[IntervalStats]] | Problem | None = None  # the loss per class
    checks_closed: int = 0  # intervals closed in the checks' read window
    paired: list[PairedStats] | Problem | None = None  # shadow step: paired intervals since its plan
    mirror: int | Problem | None = None  # the router's mirror percent (read only with a shadow step)
    calibration: list[CalibrationInterval] | Problem | None = None  # reliability counters, checks' window
    tokens: list[TokenInterval] | Problem | None = None  # tokenLoss: read in the checks' window


@dataclass(frozen=True)
class Judged:
    """The Observation for decide(), the judge's state for status, and the problems to report."""

    observation: Observation
    judge_state: JudgeState | None
    router_problem: Problem | None
    metrics_problem: Problem | None
    training_problem: Problem | None
    version_problem: Problem | None
    checks_state: ChecksState | None = None
    paired_state: PairedState | None = None
    calibration: CalibrationStatus | None = None  # status.calibration (kept when nothing was read)


def reads_metrics(command: ManualCommand | None) -> bool:
    """Whether this tick reads Prometheus: not when it aborts. An abort rolls back whatever the
    evidence says, so it must take effect as fast with a slow or dead Prometheus as with a healthy one
    (a black-holed Prometheus costs a read its timeout, three times). Other commands still read: a
    promote yields to a regression found this tick, and a pause must not pass for a tick on which
    Prometheus answered (onMetricsUnavailable's clock)."""
    return command is not ManualCommand.ABORT


def training_due(spec: ModelRolloutSpec, status: ModelRolloutStatus, now: datetime) -> bool:
    """Whether to read the training run this tick: gated rollouts that are not finished, whose run
    is still training (or not read yet), once the verdict is a few intervals old."""
    if not spec.health_gated or status.terminal:
        return False
    last = status.training_health
    if last is None or last.updated_at is None or last.run != spec.canary.training_run:
        return True
    if last.finished and last.verdict in {v.value for v in HealthVerdict}:
        return False  # the run that produced the canary is over: its verdict no longer changes
    refresh = min(spec.analysis.interval * TRAINING_REFRESH_INTERVALS, TRAINING_REFRESH_MAX)
    return now - last.updated_at >= refresh


def judge_tick(
    spec: ModelRolloutSpec,
    status: ModelRolloutStatus,
    plan: LossPlan | None,
    got: Gathered,
    judge: JudgeConfig,
    health: HealthConfig,
    checks: ChecksPlan | None = None,
    guardrails: tuple[GuardrailCheck, ...] = (),
    classes: ClassChecks | None = None,
    paired_plan: PairedPlan | None = None,
    tokens: TokenConfig | None = None,
) -> Judged:
    """Judge the evidence read this tick. The paired test (shadow step) runs at the pooled judge's
    share of alphaRollback: spec.family_checks counts it as one more check."""
    loss, state, metrics_problem = _loss(status, plan, got, judge)
    paired, paired_state, paired_problem = judge_paired(paired_plan, got.paired, judge, judge.alpha_rollback)
    if (
        metrics_problem is None
        and paired_problem is not None
        and paired_problem.kind not in (PARTIAL, NO_DATA)
    ):
        metrics_problem = paired_problem
    # Kept while finished (the verdicts shown); cleared while not started (a retry's earlier run).
    shown: tuple[CheckStatus, ...] = tuple(status.checks) if status.step_starts else ()
    checks_state = status.checks_state
    calibration = status.calibration if status.step_starts else None
    if checks is not None:
        judged_checks = judge_checks(
            status,
            checks,
            guardrails,
            classes,
            got.checks,
            got.classes,
            got.checks_closed,
            got.calibration,
            tokens,
            got.tokens,
        )
        shown, checks_state = tuple(judged_checks.checks), judged_checks.state
        calibration = judged_checks.calibration or calibration
        if metrics_problem is None:  # a check's evidence missing holds like the loss's (onMetricsUnavailable)
            metrics_problem = judged_checks.problem
    unavailable = metrics_problem is not None and metrics_problem.kind != PARTIAL
    health_evidence, training_problem = _health(status, got.training, health)
    version = got.canary_version if isinstance(got.canary_version, str) else None
    obs = Observation(
        generation=got.generation,
        loss=loss,
        health=health_evidence,
        metrics_available=not unavailable,
        metrics_problem=metrics_problem.message if unavailable and metrics_problem else None,
        actual_weights=got.weights if isinstance(got.weights, Weights) else None,
        canary_samples_in_step=state.canary_samples_in_step if state is not None else 0.0,
        command=got.command,
        canary_version_seen=version,
        labels=got.labels if isinstance(got.labels, LabelEvidence) else None,
        checks=shown,
        paired=paired,
        actual_mirror=got.mirror if isinstance(got.mirror, int) else None,
        late=late_sums(status, got.loss),
    )
    router_problem = got.weights if isinstance(got.weights, Problem) else None
    version_problem = got.canary_version if isinstance(got.canary_version, Problem) else None
    if isinstance(got.mirror, Problem) and router_problem is None:
        router_problem = got.mirror
    return Judged(
        obs,
        state,
        router_problem,
        metrics_problem,
        training_problem,
        version_problem,
        checks_state,
        paired_state if paired_plan is not None else status.paired_state,
        calibration,
    )


def late_sums(status: ModelRolloutStatus, read: object) -> LateSums | None:
    """The canary's labels in the intervals read this tick that closed in the post-promotion watch and
    were not counted before (the warn-only watch's test sums them in status.watch)."""
    w = status.watch
    if status.phase is not Phase.WATCHING or w is None or w.holdback_weight or not isinstance(read, list):
        return None  # with a holdback the judge itself compares both arms: nothing to sum
    start_ms = max(round(w.started_at.timestamp() * 1000), w.counted_through_ms or 0)
    new = [
        iv
        for iv in read
        if round(iv.start * 1000) >= start_ms
        and all(math.isfinite(x) for x in (iv.canary.n, iv.canary.sum, iv.canary.sumsq))
    ]
    if not new:
        return None
    return LateSums(
        n=sum(iv.canary.n for iv in new),
        sum=sum(iv.canary.sum for iv in new),
        sumsq=sum(iv.canary.sumsq for iv in new),
        through_ms=round(max(iv.end for iv in new) * 1000),
    )


def _loss(
    status: ModelRolloutStatus, plan: LossPlan | None, got: Gathered, config: JudgeConfig
) -> tuple[LossEvidence | None, JudgeState | None, Problem | None]:
    if plan is None:
        probe = got.loss_probe
        return None, None, None if probe is None or probe.kind == PARTIAL else probe
    fold, problem = plan.fold, None
    if isinstance(got.loss, Problem):
        if got.loss.kind != PARTIAL:
            return None, status.judge_state, got.loss
        problem = got.loss  # one arm has no labels in the window: the evidence so far stands
    elif got.loss:
        fold = advance(fold, with_weights(got.loss, weight_timeline(status)), config)
    result = conclude(fold, config)
    read = got.loss if isinstance(got.loss, list) else []
    state = _state(status, plan, fold, read)
    return LossEvidence.from_judge(result, cs_level=result.cs_level), state, problem


def _state(
    status: ModelRolloutStatus, plan: LossPlan, fold: JudgeFold, new: list[IntervalStats]
) -> JudgeState:
    """The state for status: the fold, where it ends, and the canary samples in the current step."""
    step_ms = round(status.step_starts[-1].at.timestamp() * 1000)
    prev = status.judge_state
    in_step = 0.0
    if plan.fold.looks and prev is not None and prev.step_start_ms == step_ms:
        in_step = prev.canary_samples_in_step
    for iv in new:
        if iv.start >= step_ms / 1000:
            in_step += iv.canary.n
    interval_ms = round(plan.interval_s * 1000)
    origin_ms = round(plan.origin.timestamp() * 1000)
    return JudgeState(
        origin_ms=origin_ms,
        through_ms=origin_ms + fold.looks * interval_ms,
        interval_ms=interval_ms,
        fingerprint=plan.fingerprint,
        looks=fold.looks,
        step_start_ms=step_ms,
        canary_samples_in_step=in_step,
        numbers=encode(fold),
    )


def _health(
    status: ModelRolloutStatus, run: TrainingRun | Problem | None, config: HealthConfig
) -> tuple[HealthEvidence | None, Problem | None]:
    if run is None:
        return _kept_health(status), None
    if isinstance(run, Problem):
        return None, run
    evidence = HealthEvidence.from_health(assess(run, config))
    steps = [s for r in run.ranks for s in r.steps if math.isfinite(s)]
    last_step = max(steps) if steps else None
    prev = status.training_health
    finished = (
        prev is not None and prev.run == run.run and last_step is not None and prev.last_step == last_step
    )
    return replace(evidence, run=run.run, last_step=last_step, finished=finished), None


def _kept_health(status: ModelRolloutStatus) -> HealthEvidence | None:
    """The verdict status holds from the last read (between reads of the training run)."""
    h = status.training_health
    if h is None or h.verdict not in {v.value for v in HealthVerdict}:
        return None
    return HealthEvidence.from_status(h)


def _at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
