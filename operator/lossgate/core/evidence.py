"""Value objects the core decides on: what adapters read and the judge/health gate consume.

Plain frozen dataclasses (no I/O) so adapters can build them and the core stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ArmStats:
    """Labelled-prediction aggregates of one arm over one interval.

    n is a float because Prometheus counters differenced at aligned instants are exact
    integers, but rates/increase() would not be; the judge treats n < 1 as empty.
    """

    n: float
    sum: float  # sum of per-request cross-entropy (nats)
    sumsq: float  # sum of squared per-request cross-entropy
    tail: float = 0.0  # labelled predictions with loss above the catastrophic threshold

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else 0.0


@dataclass(frozen=True)
class IntervalStats:
    """Both arms over the same interval [start, end) (unix seconds), at one traffic split."""

    start: float
    end: float
    baseline: ArmStats
    canary: ArmStats
    canary_weight: int | None = None  # the split in force, when known (weight changes drop an interval)


@dataclass(frozen=True)
class RankSeries:
    """One rank's training metrics, aligned by step (missing values as NaN)."""

    rank: str
    steps: tuple[float, ...]
    loss: tuple[float, ...]
    grad_norm: tuple[float, ...]
    nonfinite_total: tuple[float, ...] = ()  # cumulative counter of non-finite steps
    loss_scale: tuple[float, ...] = ()  # empty when not mixed precision (or bf16)


def count_key(series: str, /, **labels: str) -> str:
    """The key of one counted series in RankCounts.totals: its name and its labels but run/rank."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{series}{{{inner}}}"


@dataclass(frozen=True)
class RankCounts:
    """One rank's counted training series (lossgate.instrument.step_stats), exact over the window.

    totals: count_key -> increase of the counter over the gate's window (restarts handled).
    latest: count_key -> latest value of a gauge (training_spikes_recovering, training_gate_setting).
    divergence: "loss" / "grad_norm" -> (mean, n): the mean of the post-warm-up log values over the
        rank's last windowSteps steps and how many were finite (the divergence rule's running means).
    """

    rank: str
    totals: Mapping[str, float]
    latest: Mapping[str, float] = field(default_factory=dict)
    divergence: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingRun:
    """The canary's training run as read back from Prometheus, per rank.

    counts: the counted form (every step), when the exporter has it; the gate then judges from it and
    the sampled `ranks` are for display. exporter_outdated: the run exports only the gauges.
    """

    run: str
    ranks: tuple[RankSeries, ...]
    validation_loss: float | None = None  # the canary run's latest validation loss
    baseline_validation_loss: float | None = None  # the baseline run's, on the same holdout
    fp16: bool = False
    counts: tuple[RankCounts, ...] = ()
    exporter_outdated: bool = False


@dataclass(frozen=True)
class Weights:
    """Traffic split actually in force (percent), as read back from the router."""

    baseline: int
    canary: int

    def __post_init__(self) -> None:
        if not (0 <= self.canary <= 100 and 0 <= self.baseline <= 100):
            raise ValueError(f"weights out of range: {self.baseline}/{self.canary}")


@dataclass(frozen=True)
class Problem:
    """A classified failure returned as data by an adapter (never raised across the port)."""

    kind: str  # see ports.MetricsErrorKind / ports.RouterErrorKind
    message: str  # says what failed, on which object, and what to do
    details: dict[str, str] = field(default_factory=dict)
