"""The conditions decide() owns (Progressing, MetricsAvailable, TrainingHealthy, Promoted, RolledBack).

Conditions of other types (SpecValid, RouterReady, written by the reconciler) are left untouched, and
lastTransitionTime moves only when a condition's status flips (lossgate.model.set_condition).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from lossgate.core.decision import DecisionKind
from lossgate.core.health import EXPORTER_OUTDATED
from lossgate.core.verdicts import HealthVerdict
from lossgate.model.conditions import Condition, ConditionStatus, ConditionType, Reason, set_condition
from lossgate.model.status import TERMINAL_PHASES, Phase

T, F, U = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


@dataclass(frozen=True)
class TickFacts:
    """What the conditions are derived from."""

    phase: Phase
    kind: DecisionKind
    reason: str
    message: str
    reset: bool  # first tick of this rollout (fresh object or restart)
    metrics_available: bool
    metrics_message: str
    health: HealthVerdict | None  # None: the training run does not gate this rollout
    health_message: str
    now: datetime
    generation: int
    # LabelsTimely (status, reason, message); None: not checked this tick, the condition is left alone
    labels_timely: tuple[bool, str, str] | None = None
    # PostPromotionWatch (status, reason, message); None: left alone (core/watch.py)
    watch: tuple[ConditionStatus, str, str] | None = None


def _training_healthy(f: TickFacts) -> tuple[ConditionStatus, str, str]:
    """The TrainingHealthy condition's status, reason and message for the gate's verdict."""
    if f.health is None:
        return (
            U,
            Reason.HEALTH_GATE_DISABLED,
            "no spec.canary.trainingRun, or analysis.gradientHealth.enabled is false",
        )
    if f.health is not HealthVerdict.FAIL and EXPORTER_OUTDATED in f.health_message:
        # the verdict stands, but the gate saw only sampled steps: say so and what to upgrade
        status = U if f.health is HealthVerdict.UNKNOWN else T
        return status, Reason.EXPORTER_OUTDATED, f.health_message
    if f.health is HealthVerdict.PASS:
        return T, Reason.TRAINING_HEALTH_PASSED, f.health_message
    if f.health is HealthVerdict.WARN:
        return T, Reason.TRAINING_HEALTH_WARNING, f"{f.health_message} (step quotas doubled while it warns)"
    if f.health is HealthVerdict.FAIL:
        return F, Reason.TRAINING_UNHEALTHY, f.health_message
    return U, Reason.TRAINING_METRICS_UNKNOWN, f.health_message


def conditions_after(prev: Sequence[Condition], f: TickFacts) -> list[Condition]:
    out = list(prev)

    def put(t: ConditionType, s: ConditionStatus, reason: str, message: str) -> None:
        nonlocal out
        out = set_condition(out, t, s, reason, message, f.now, f.generation)

    if f.reset:
        put(ConditionType.PROMOTED, F, Reason.NOT_PROMOTED, "")
        put(ConditionType.ROLLED_BACK, F, Reason.NOT_ROLLED_BACK, "")
    if f.kind is DecisionKind.IDLE:
        return out

    if f.phase in (Phase.PENDING, Phase.PROGRESSING):
        put(ConditionType.PROGRESSING, T, f.reason, f.message)
    elif f.phase is Phase.PAUSED:
        put(ConditionType.PROGRESSING, F, Reason.PAUSED, f.message)
    elif f.phase in TERMINAL_PHASES or f.phase is Phase.WATCHING:  # promoted: the ramp is over
        put(ConditionType.PROGRESSING, F, f.reason, f.message)

    if f.metrics_available:
        put(ConditionType.METRICS_AVAILABLE, T, Reason.METRICS_OK, "loss metrics readable")
    else:
        put(ConditionType.METRICS_AVAILABLE, F, Reason.METRICS_UNAVAILABLE, f.metrics_message)

    put(ConditionType.TRAINING_HEALTHY, *_training_healthy(f))
    if f.labels_timely is not None:
        timely, reason, message = f.labels_timely
        put(ConditionType.LABELS_TIMELY, T if timely else F, reason, message)

    if f.watch is not None:
        put(ConditionType.POST_PROMOTION_WATCH, *f.watch)
    if f.kind is DecisionKind.PROMOTE:
        put(ConditionType.PROMOTED, T, f.reason, f.message)
    elif f.kind is DecisionKind.ROLLBACK:
        put(ConditionType.ROLLED_BACK, T, f.reason, f.message)
        out = _revert_promotion(out, f)
    return out


def _revert_promotion(out: list[Condition], f: TickFacts) -> list[Condition]:
    """A rollback while Promoted is True (in the post-promotion watch) turns Promoted False."""
    promoted = next((c for c in out if c.type == ConditionType.PROMOTED), None)
    if promoted is None or promoted.status != T:
        return out
    return set_condition(
        out, ConditionType.PROMOTED, F, Reason.PROMOTION_REVERTED, f.message, f.now, f.generation
    )
