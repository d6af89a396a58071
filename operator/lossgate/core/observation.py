"""What the reconciler saw at one tick: the inputs of decide().

Plain frozen values. The reconciler fills LossEvidence from the judge's JudgeResult and
HealthEvidence from the gradient-health gate's HealthResult (`from_judge` / `from_health` accept any
object with those attribute names, so this module does not import the judge or the health gate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from lossgate.core.evidence import Weights
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.paired_step import PairedEvidence
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.core.watch_ref import LateSums
from lossgate.model import API_GROUP
from lossgate.model.status import CheckStatus, TrainingHealthStatus

ANNOTATION_PREFIX = f"{API_GROUP}/"


class ManualCommand(StrEnum):
    """Manual control without editing Git: the annotation `lossgate.io/<value>` on the ModelRollout."""

    ABORT = "abort"  # roll back now
    PROMOTE = "promote"  # skip the remaining analysis: canary to 100%
    RETRY = "retry"  # restart a RolledBack / Failed rollout from step 1
    PAUSE = "pause"  # hold the weight (like spec.paused, without a Git change)
    RESUME = "resume"  # clear a pause set by the annotation (spec.paused still wins)

    @property
    def annotation(self) -> str:
        return ANNOTATION_PREFIX + self.value


# When several command annotations are present at once, the safest wins.
COMMAND_PRECEDENCE = (
    ManualCommand.ABORT,
    ManualCommand.PAUSE,
    ManualCommand.RESUME,
    ManualCommand.RETRY,
    ManualCommand.PROMOTE,
)


def command_from_annotations(annotations: Mapping[str, str] | None) -> ManualCommand | None:
    """The command to handle this tick (any value counts; the reconciler removes it once handled)."""
    if not annotations:
        return None
    for cmd in COMMAND_PRECEDENCE:
        if cmd.annotation in annotations:
            return cmd
    return None


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class JudgeResultLike(Protocol):
    """The attributes of lossgate.core.judge.JudgeResult that the state machine uses."""

    @property
    def verdict(self) -> LossVerdict: ...
    @property
    def theta_hat(self) -> float | None: ...
    @property
    def cs_low(self) -> float | None: ...
    @property
    def cs_high(self) -> float | None: ...
    @property
    def p_regression(self) -> float | None: ...
    @property
    def p_not_worse(self) -> float | None: ...
    @property
    def n_baseline(self) -> float: ...
    @property
    def n_canary(self) -> float: ...
    @property
    def mean_baseline(self) -> float | None: ...
    @property
    def mean_canary(self) -> float | None: ...
    @property
    def margin(self) -> float | None: ...
    @property
    def samples_needed(self) -> float | None: ...
    @property
    def catastrophic(self) -> bool: ...
    @property
    def reason(self) -> str: ...


class HealthResultLike(Protocol):
    """The attributes of lossgate.core.health.HealthResult that the state machine uses."""

    @property
    def verdict(self) -> HealthVerdict: ...
    @property
    def reasons(self) -> Sequence[str]: ...
    @property
    def nonfinite_steps(self) -> int: ...
    @property
    def grad_norm_spikes(self) -> int: ...
    @property
    def max_grad_norm_z(self) -> float | None: ...
    @property
    def rank_divergence(self) -> float | None: ...
    @property
    def loss_scale_collapse(self) -> bool: ...
    @property
    def validation_delta(self) -> float | None: ...


@dataclass(frozen=True)
class LossEvidence:
    """The sequential judge's verdict for the current step, with the numbers status shows.

    delta is canary minus baseline mean loss (nats); n_* are the labelled samples the judge used.
    Non-finite numbers are stored as None.
    """

    verdict: LossVerdict
    n_baseline: float = 0.0
    n_canary: float = 0.0
    mean_baseline: float | None = None
    mean_canary: float | None = None
    delta: float | None = None
    cs_low: float | None = None
    cs_high: float | None = None
    cs_level: float | None = None  # e.g. 0.95 for a 95% confidence sequence, when known
    p_regression: float | None = None
    p_not_worse: float | None = None
    margin: float | None = None
    samples_needed: int | None = None
    catastrophic: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        for name in ("mean_baseline", "mean_canary", "delta", "cs_low", "cs_high", "p_regression",
                     "p_not_worse", "margin", "cs_level"):  # fmt: skip
            object.__setattr__(self, name, _finite(getattr(self, name)))

    @classmethod
    def from_judge(cls, r: JudgeResultLike, cs_level: float | None = None) -> LossEvidence:
        needed = _finite(r.samples_needed)
        return cls(
            verdict=LossVerdict(r.verdict),
            n_baseline=float(r.n_baseline),
            n_canary=float(r.n_canary),
            mean_baseline=r.mean_baseline,
            mean_canary=r.mean_canary,
            delta=r.theta_hat,
            cs_low=r.cs_low,
            cs_high=r.cs_high,
            cs_level=cs_level,
            p_regression=r.p_regression,
            p_not_worse=r.p_not_worse,
            margin=r.margin,
            samples_needed=None if needed is None else max(0, math.ceil(needed)),
            catastrophic=bool(r.catastrophic),
            reason=str(r.reason),
        )


@dataclass(frozen=True)
class HealthEvidence:
    """The gradient-health gate's verdict on the canary's training run."""

    verdict: HealthVerdict
    reasons: tuple[str, ...] = ()
    nonfinite_steps: int = 0
    grad_norm_spikes: int = 0
    max_grad_norm_z: float | None = None
    rank_divergence: float | None = None
    loss_scale_collapse: bool = False
    validation_delta: float | None = None
    assessed_at: datetime | None = None  # when the run was read; None: this tick
    run: str | None = None  # the run read
    last_step: float | None = None  # its latest training step
    finished: bool = False  # no step since the previous read: not read again

    def __post_init__(self) -> None:
        for name in ("max_grad_norm_z", "rank_divergence", "validation_delta"):
            object.__setattr__(self, name, _finite(getattr(self, name)))

    @classmethod
    def from_health(cls, r: HealthResultLike) -> HealthEvidence:
        return cls(
            verdict=HealthVerdict(r.verdict),
            reasons=tuple(str(x) for x in r.reasons),
            nonfinite_steps=int(r.nonfinite_steps),
            grad_norm_spikes=int(r.grad_norm_spikes),
            max_grad_norm_z=r.max_grad_norm_z,
            rank_divergence=r.rank_divergence,
            loss_scale_collapse=bool(r.loss_scale_collapse),
            validation_delta=r.validation_delta,
        )

    @classmethod
    def from_status(cls, h: TrainingHealthStatus) -> HealthEvidence:
        """The verdict status kept from the last read of the run (read again every few intervals)."""
        return cls(
            verdict=HealthVerdict(h.verdict),
            reasons=tuple(h.reasons),
            nonfinite_steps=h.non_finite_steps,
            grad_norm_spikes=h.grad_norm_spikes,
            max_grad_norm_z=h.max_grad_norm_z,
            rank_divergence=h.rank_divergence,
            loss_scale_collapse=h.loss_scale_collapse,
            validation_delta=h.validation_delta,
            assessed_at=h.updated_at,
            run=h.run,
            last_step=h.last_step,
            finished=h.finished,
        )


@dataclass(frozen=True)
class Observation:
    """Everything decide() needs besides the spec, the previous status and the time.

    generation: metadata.generation of the object read (spec changes bump it).
    loss: the judge's verdict over the current step's evidence; None when there is none (not started,
        or the query failed). Ignored when metrics_available is False.
    health: the training-health gate's verdict; None when not evaluated (no trainingRun, gate off,
        or training metrics unreadable; a gated rollout treats None as Unknown).
    metrics_available: False when Prometheus could not be read (down, no data). Not a regression.
    metrics_problem: why, in one line (goes into the MetricsAvailable condition).
    actual_weights: the split the router reports now; None when it could not be read.
    canary_samples_in_step: labelled canary predictions since the step started (status.stepStartedAt).
    command: the manual command annotation present on the object, if any.
    canary_version_seen: the version the canary's pods/metrics report; None when not known.
    labels: label coverage and delay in the current step (the label joiner's series); None when not
        read (LOSSGATE_LABEL_CHECKS off, not progressing, or the read failed: advisory, never blocks).
    """

    generation: int
    loss: LossEvidence | None = None
    health: HealthEvidence | None = None
    metrics_available: bool = True
    metrics_problem: str | None = None
    actual_weights: Weights | None = None
    canary_samples_in_step: float = 0.0
    command: ManualCommand | None = None
    canary_version_seen: str | None = None
    labels: LabelEvidence | None = None
    checks: tuple[CheckStatus, ...] = ()  # guardrails and classes (core/checks.py): any regression rolls back
    paired: PairedEvidence | None = None  # the shadow step's paired test (core/paired_step.py)
    actual_mirror: int | None = None  # the mirror percent the router reports; None: not read
    late: LateSums | None = None  # the watch's canary labels read this tick (core/watch.py)
