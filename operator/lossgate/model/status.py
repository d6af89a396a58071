"""ModelRollout status: written only by the operator, through the status subresource.

The status is the rollout's whole memory: decide() resumes from it alone after an operator restart
(phase, step, weight, when the step started, time spent paused, since when metrics are unavailable).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from lossgate.model.base import ApiModel
from lossgate.model.calibration import CalibrationStatus
from lossgate.model.conditions import Condition
from lossgate.model.durations import Duration, Timestamp

HISTORY_LIMIT = 20
STEP_STARTS_LIMIT = 64  # steps (at most 20) plus edits and drift repairs; older ones are dropped


class Phase(StrEnum):
    PENDING = "Pending"  # not started: waiting for training health, canary readiness or metrics
    PROGRESSING = "Progressing"  # traffic is on a step and evidence is being collected
    PAUSED = "Paused"  # spec.paused or the pause annotation: weight held, safety rollbacks still armed
    # Promoted, the baseline keeping spec.postPromotion.holdbackWeight while late labels are watched
    WATCHING = "Watching"
    PROMOTED = "Promoted"  # the canary serves 100%
    ROLLED_BACK = "RolledBack"  # the canary had traffic and was taken back to 0%
    FAILED = "Failed"  # blocked before any traffic moved (e.g. the training run is unhealthy)


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED})


class ArmStatus(ApiModel):
    n: float = Field(description="Labelled predictions the judge used.")
    mean: float | None = Field(default=None, description="Mean per-request cross-entropy (nats).")


class AnalysisStatus(ApiModel):
    """The judge's numbers at the last look (canary minus baseline; finite values only)."""

    verdict: str = Field(description="Regression | NotWorse | Undecided | InsufficientData")
    baseline: ArmStatus
    canary: ArmStatus
    delta: float | None = Field(default=None, description="Estimated mean-loss difference (nats).")
    cs_low: float | None = Field(default=None, description="Confidence-sequence lower bound.")
    cs_high: float | None = Field(default=None, description="Confidence-sequence upper bound.")
    cs_level: float | None = None
    margin: float | None = Field(default=None, description="Margin in nats the verdict was taken against.")
    p_regression: float | None = Field(default=None, description="Always-valid p-value of 'no regression'.")
    p_not_worse: float | None = Field(default=None, description="Always-valid p-value of 'worse by margin'.")
    samples_needed: int | None = Field(default=None, description="More canary samples the judge expects.")
    samples_in_step: float = 0.0
    catastrophic: bool = False
    promotion_policy: str | None = None
    reason: str = ""
    updated_at: Timestamp | None = None


class JudgeState(ApiModel):
    """The judge's running state, so each tick reads only the intervals closed since the last one.

    Fixed size whatever the rollout's age, and restart-safe: the operator continues from it after a
    restart with the very numbers it would have had. Not meant for people; when it does not match the
    rollout (another start, spec or interval) the operator rebuilds it from the rollout's start.
    """

    origin_ms: int = Field(description="Unix ms the analysis intervals are aligned to (the rollout's start).")
    through_ms: int = Field(description="Unix ms where the last interval judged ends.")
    interval_ms: int = Field(ge=1)
    fingerprint: str = Field(max_length=64, description="Of the judge's configuration and series.")
    looks: int = Field(ge=0, description="Intervals judged.")
    step_start_ms: int = Field(description="Start of the step canarySamplesInStep counts from.")
    canary_samples_in_step: float = 0.0
    numbers: dict[str, list[float]] = Field(default_factory=dict, description="The judge's running sums.")


class PairedStatus(ApiModel):
    """The paired judge's numbers in the shadow step: d = canary loss - baseline loss on the same
    mirrored requests (finite values only)."""

    verdict: str = Field(description="Regression | NotWorse | Undecided | InsufficientData")
    n: float = Field(default=0.0, description="Requests both versions predicted and that got a label.")
    mean_baseline: float | None = Field(default=None, description="Baseline's mean loss on them (nats).")
    delta: float | None = Field(default=None, description="Mean of d (nats).")
    cs_low: float | None = None
    cs_high: float | None = None
    margin: float | None = None
    p_regression: float | None = None
    p_not_worse: float | None = None
    alpha: float | None = Field(default=None, description="The paired test's share of alphaRollback.")
    mirror_percent: int | None = None
    updated_at: Timestamp | None = None


class PairedState(ApiModel):
    """The paired judge's running state (fixed size), continued each tick like judgeState."""

    origin_ms: int
    through_ms: int
    interval_ms: int = Field(ge=1)
    fingerprint: str = Field(max_length=64)
    looks: int = Field(ge=0)
    numbers: dict[str, list[float]] = Field(default_factory=dict)


class CheckStatus(ApiModel):
    """One check beside the pooled loss (a guardrail or a class's loss) at its last look."""

    name: str
    kind: str = Field(description="errorRate | latency | classLoss")
    verdict: str = Field(description="Regression | NotWorse | Undecided | InsufficientData")
    judged: bool = Field(
        default=True, description="false: too few samples (or no slot): shown, never blocks a promotion"
    )
    n_baseline: float = 0.0
    n_canary: float = 0.0
    mean_baseline: float | None = Field(default=None, description="Rate, seconds or nats per request.")
    mean_canary: float | None = None
    delta: float | None = Field(default=None, description="Canary minus (1 + relativeMargin) x baseline.")
    cs_low: float | None = None
    cs_high: float | None = None
    margin: float | None = None
    p_regression: float | None = None
    p_not_worse: float | None = None
    alpha: float | None = Field(default=None, description="This check's share of alphaRollback.")
    reason: str = ""


class ChecksState(ApiModel):
    """The running state of every check (fixed size per check), continued each tick like judgeState."""

    origin_ms: int
    through_ms: int
    interval_ms: int = Field(ge=1)
    fingerprint: str = Field(max_length=64)
    looks: int = Field(ge=0)
    numbers: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    unslotted: dict[str, float] = Field(
        default_factory=dict, description="Classes beyond maxClasses: canary samples seen (not judged)."
    )


class WatchStatus(ApiModel):
    """The post-promotion watch (spec.postPromotion): while phase is Watching, and kept afterwards."""

    mode: str = Field(description="Holdback (a late regression rolls back) | WarnOnly (no holdback: warns)")
    started_at: Timestamp = Field(description="The promotion: the watch reads labels arriving from then on.")
    ends_at: Timestamp = Field(description="startedAt + spec.postPromotion.window.")
    holdback_weight: int = Field(ge=0, le=100, description="Baseline percent during the watch.")
    finding: str = Field(default="", description="'' | Regression (rolled back) | Warned (WarnOnly)")
    reference_mean: float | None = Field(
        default=None, description="WarnOnly: the baseline's mean loss (nats) in the rollout's last look."
    )
    margin: float | None = Field(default=None, description="WarnOnly: the margin (nats) of that look.")
    n: float = Field(default=0.0, description="WarnOnly: canary labels read in the watch.")
    sum: float = 0.0
    sumsq: float = 0.0
    mean: float | None = Field(default=None, description="WarnOnly: their mean loss (nats).")
    counted_through_ms: int | None = Field(
        default=None, description="Unix ms where the last interval counted in n ends (none counted twice)."
    )
    p_regression: float | None = Field(
        default=None, description="WarnOnly: always-valid p-value of 'not above reference + margin'."
    )


class TrainingHealthStatus(ApiModel):
    verdict: str = Field(description="Pass | Warn | Fail | Unknown")
    reasons: list[str] = Field(default_factory=list)
    non_finite_steps: int = 0
    grad_norm_spikes: int = 0
    max_grad_norm_z: float | None = None
    rank_divergence: float | None = None
    loss_scale_collapse: bool = False
    validation_delta: float | None = None
    run: str | None = Field(default=None, description="The training run this verdict is about.")
    last_step: float | None = Field(default=None, description="The latest training step read.")
    finished: bool = Field(
        default=False, description="No step since the previous read: the run is over and not read again."
    )
    updated_at: Timestamp | None = None


class StepStart(ApiModel):
    """When the canary weight last changed to `weight` in this rollout (the judge's strata)."""

    at: Timestamp
    weight: int = Field(ge=0, le=100)


class HistoryEntry(ApiModel):
    """One decision, with the numbers it was taken on."""

    time: Timestamp
    decision: str
    reason: str
    phase: Phase
    step_index: int
    canary_weight: int
    verdict: str | None = None
    delta: float | None = None
    cs_low: float | None = None
    cs_high: float | None = None
    n_baseline: float | None = None
    n_canary: float | None = None
    health: str | None = None
    message: str = ""


class ModelRolloutStatus(ApiModel):
    phase: Phase = Phase.PENDING
    observed_generation: int | None = None
    step_index: int = Field(default=0, ge=0, description="0-based index into spec.steps.")
    current_step: str | None = Field(default=None, description='1-based "step/steps" for display, e.g. 2/4.')
    canary_weight: int = Field(default=0, ge=0, le=100, description="Canary weight lossgate wants in force.")
    baseline_version: str | None = Field(
        default=None, description="The baseline version this status is about."
    )
    canary_version: str | None = Field(default=None, description="The canary version this status is about.")
    message: str = ""
    started_at: Timestamp | None = None
    step_started_at: Timestamp | None = None
    paused_at: Timestamp | None = None
    step_paused: Duration = Field(
        default="0s", validate_default=True, description="Time paused in this step."
    )
    metrics_unavailable_since: Timestamp | None = None
    manually_paused: bool = False
    canary_scaled_down: bool = False
    mirror_percent: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Percent of the baseline's requests lossgate mirrors to the canary.",
    )
    analysis: AnalysisStatus | None = None
    paired: PairedStatus | None = Field(default=None, description="The shadow step's paired test.")
    paired_state: PairedState | None = None
    judge_state: JudgeState | None = None
    checks: list[CheckStatus] = Field(default_factory=list, description="Guardrails and per-class checks.")
    checks_state: ChecksState | None = None
    calibration: CalibrationStatus | None = Field(
        default=None, description="Both arms' ECE, MCE, Brier score and reliability diagram."
    )
    training_health: TrainingHealthStatus | None = None
    watch: WatchStatus | None = Field(default=None, description="The post-promotion watch.")
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    history: list[HistoryEntry] = Field(default_factory=list, description=f"Last {HISTORY_LIMIT} decisions.")
    step_starts: list[StepStart] = Field(
        default_factory=list,
        max_length=STEP_STARTS_LIMIT,
        description="Every weight change of this rollout, so evidence since its start is judged per split.",
    )

    @field_validator("step_starts", mode="before")
    @classmethod
    def _bounded_starts(cls, v: Any) -> Any:
        return v[-STEP_STARTS_LIMIT:] if isinstance(v, list) else v

    @field_validator("history", mode="before")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        return v[-HISTORY_LIMIT:] if isinstance(v, list) else v

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def active_in_step(self, now: datetime) -> timedelta:
        """Time spent in the current step, not counting time paused."""
        if self.step_started_at is None:
            return timedelta(0)
        paused = self.step_paused + (now - self.paused_at if self.paused_at is not None else timedelta(0))
        return max(timedelta(0), now - self.step_started_at - paused)

    def with_history(self, entry: HistoryEntry) -> list[HistoryEntry]:
        return [*self.history, entry][-HISTORY_LIMIT:]
