"""Condition types, reasons and the condition list helper: the one place these strings live.

Conditions follow the Kubernetes convention (type, status True|False|Unknown, reason in CamelCase,
human message, lastTransitionTime that changes only when the status flips).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

from lossgate.model.base import ApiModel
from lossgate.model.durations import Timestamp


class ConditionType(StrEnum):
    PROGRESSING = "Progressing"  # True while the rollout is pending or moving; False when paused or done
    METRICS_AVAILABLE = "MetricsAvailable"  # the loss metrics could be read for the current step
    TRAINING_HEALTHY = "TrainingHealthy"  # the canary's training run passes the gradient-health gate
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    # Written by the reconciler, never by decide(): decide() leaves conditions it does not own alone.
    SPEC_VALID = "SpecValid"  # the spec parsed and passed the operator's own checks
    ROUTER_READY = "RouterReady"  # the HTTPRoute / VirtualService / Deployments exist and can be written
    # False when the last tick could not run: status unreadable, the tick crashed or timed out.
    RECONCILED = "Reconciled"
    # Written only with LOSSGATE_LABEL_CHECKS on (the label joiner's series): False when the step's
    # minDuration is shorter than the observed p90 label delay (a warning, it blocks nothing).
    LABELS_TIMELY = "LabelsTimely"
    # spec.postPromotion: Unknown while watching, True once the window passed clean, False on a
    # regression found in the watch (rolled back, or only warned without a holdback).
    POST_PROMOTION_WATCH = "PostPromotionWatch"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Every reason lossgate puts on a condition, an Event or a history entry."""

    # Lifecycle
    WAITING_TO_START = "WaitingToStart"
    STARTED = "Started"
    STEP_IN_PROGRESS = "StepInProgress"
    STEP_ADVANCED = "StepAdvanced"
    INSUFFICIENT_DATA = "InsufficientData"
    REGRESSION_BELOW_MIN_SAMPLES = "RegressionBelowMinSamples"
    CANARY_NOT_READY = "CanaryNotReady"  # canary pods do not serve spec.canary.version yet
    PAUSED = "Paused"
    RESUMED = "Resumed"
    STEP_TIMED_OUT = "StepTimedOut"
    NON_INFERIORITY_NOT_SHOWN = "NonInferiorityNotShown"
    SHADOW_PASSED = "ShadowPassed"  # paired non-inferiority in the shadow step: first live step
    # Terminal outcomes
    PROMOTED_NO_REGRESSION = "PromotedNoRegression"
    PROMOTED_NON_INFERIOR = "PromotedNonInferior"
    PROMOTED_MANUALLY = "PromotedManually"
    PROMOTED_ON_TIMEOUT = "PromotedOnTimeout"
    LOSS_REGRESSION = "LossRegression"
    CATASTROPHIC_LOSS = "CatastrophicLoss"
    PAIRED_REGRESSION = "PairedRegression"  # the paired test in the shadow step (no user saw the canary)
    CHECK_REGRESSION = "CheckRegression"  # a guardrail or a class's loss (status.checks names it)
    TRAINING_UNHEALTHY = "TrainingUnhealthy"
    ABORTED = "Aborted"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    NOT_PROMOTED = "NotPromoted"
    NOT_ROLLED_BACK = "NotRolledBack"
    # Post-promotion watch (core/watch.py)
    WATCH_STARTED = "WatchStarted"  # promoted; the holdback (or warn-only watch) runs for the window
    WATCH_PASSED = "WatchPassed"  # the window ended without a regression: 100% canary
    WATCH_ENDED_MANUALLY = "WatchEndedManually"  # lossgate.io/promote during the watch
    WATCH_ENDED = "WatchEnded"  # spec.postPromotion removed during the watch
    POST_PROMOTION_REGRESSION = "PostPromotionRegression"  # rolled back to the baseline in the watch
    POST_PROMOTION_WARNING = "PostPromotionRegressionSuspected"  # no holdback: a warning only
    PROMOTION_REVERTED = "PromotionReverted"  # the Promoted condition after a rollback in the watch
    # Restarts and commands
    CANARY_VERSION_CHANGED = "CanaryVersionChanged"
    SPEC_CHANGED = "SpecChanged"
    RETRY = "Retry"
    COMMAND_IGNORED = "CommandIgnored"
    # Metrics / training health
    METRICS_OK = "MetricsOK"
    TRAINING_HEALTH_PASSED = "TrainingHealthPassed"
    TRAINING_HEALTH_WARNING = "TrainingHealthWarning"
    TRAINING_METRICS_UNKNOWN = "TrainingMetricsUnknown"
    HEALTH_GATE_DISABLED = "HealthGateDisabled"
    # Label checks (lossgate.core.label_checks)
    LABEL_DELAY_WITHIN_STEP = "LabelDelayWithinStep"
    LABEL_DELAY_EXCEEDS_STEP = "LabelDelayExceedsStep"
    LABEL_COVERAGE_IMBALANCED = "LabelCoverageImbalanced"  # hold: one arm's labels arrive faster
    EXPORTER_OUTDATED = "ExporterOutdated"  # gauge-only training exporter: the gate sees sampled steps
    # Router
    WEIGHT_DRIFT = "WeightDrift"
    MIRROR_DRIFT = "MirrorDrift"
    # Reconciler-owned (SpecValid / RouterReady); router problem kinds from lossgate.ports are reasons too.
    SPEC_OK = "SpecOK"
    INVALID_SPEC = "InvalidSpec"
    TAIL_BUCKET_UNKNOWN = "TailBucketUnknown"  # the catastrophic threshold is not a bucket we know of
    ROUTER_OK = "RouterOK"
    # Reconciler-owned (Reconciled)
    TICK_OK = "TickOK"
    STATUS_UNREADABLE = "StatusUnreadable"  # .status does not validate: nothing is decided until fixed
    TICK_FAILED = "TickFailed"  # the tick raised (a bug): retried with back-off
    TICK_TIMED_OUT = "TickTimedOut"  # the tick ran past LOSSGATE_TICK_TIMEOUT_S


class Condition(ApiModel):
    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: Timestamp
    observed_generation: int | None = None


def set_condition(
    conditions: Sequence[Condition],
    type_: ConditionType | str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """Return a new list with `type_` set; lastTransitionTime moves only when the status flips.

    Other conditions keep their order; a new type is appended.
    """
    existing = next((c for c in conditions if c.type == str(type_)), None)
    new = Condition(
        type=str(type_),
        status=status,
        reason=str(reason),
        message=message,
        last_transition_time=existing.last_transition_time if existing and existing.status == status else now,
        observed_generation=observed_generation,
    )
    if existing is None:
        return [*conditions, new]
    return [new if c.type == str(type_) else c for c in conditions]


def get_condition(conditions: Sequence[Condition], type_: ConditionType | str) -> Condition | None:
    for c in conditions:
        if c.type == str(type_):
            return c
    return None
