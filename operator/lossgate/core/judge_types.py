"""The judge's configuration and result types (kept apart from the computation in judge.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lossgate.core.verdicts import LossVerdict

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# "Samples needed" when the current estimate would never cross a boundary at the current split.
MAX_SAMPLES_NEEDED = 1_000_000_000
MIN_MARGIN_NATS = 1e-12


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge decides. Give exactly one of `margin` (absolute nats) and `relative_margin`
    (fraction of the baseline's mean loss).

    The regression test runs at alpha_rollback and the non-inferiority test at alpha_promote; the
    interval the judge reports is [lower bound at alpha_rollback, upper bound at alpha_promote], so
    its coverage is 1 - alpha_rollback - alpha_promote and each decision reads off one of its ends.
    """

    margin: float | None = None
    relative_margin: float | None = None
    alpha_rollback: float = 0.01
    alpha_promote: float = 0.05
    min_samples_before_rollback: float = 1000.0  # labelled canary samples
    min_samples_before_promote: float = 5000.0
    catastrophic_alpha: float = 0.001
    catastrophic_ratio: float = 2.0  # H0 of the guard: canary tail rate <= this x baseline's
    drop_first_after_weight_change: bool = True

    def __post_init__(self) -> None:
        if (self.margin is None) == (self.relative_margin is None):
            raise ValueError("give exactly one of margin and relative_margin")
        value = self.margin if self.margin is not None else self.relative_margin
        if value is None or not (math.isfinite(value) and value > 0):
            raise ValueError(f"margin must be finite and > 0, got {value!r}")
        for name in ("alpha_rollback", "alpha_promote", "catastrophic_alpha"):
            a = getattr(self, name)
            if not 0 < a < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {a!r}")
        for name in ("min_samples_before_rollback", "min_samples_before_promote"):
            m = getattr(self, name)
            if not (math.isfinite(m) and m >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {m!r}")
        if not (math.isfinite(self.catastrophic_ratio) and self.catastrophic_ratio > 0):
            raise ValueError(f"catastrophic_ratio must be finite and > 0, got {self.catastrophic_ratio!r}")

    def resolve_margin(self, mean_baseline: ArrayLike) -> FloatArray:
        """Absolute margin (nats) given the baseline's mean loss (elementwise)."""
        mb = np.asarray(mean_baseline, dtype=np.float64)
        if self.margin is not None:
            out: FloatArray = np.full_like(mb, self.margin)
            return out
        relative = self.relative_margin if self.relative_margin is not None else 0.0  # set: __post_init__
        out = np.maximum(relative * np.abs(mb), MIN_MARGIN_NATS)
        return out

    @property
    def cs_level(self) -> float:
        """Coverage of the reported interval."""
        return 1.0 - self.alpha_rollback - self.alpha_promote


@dataclass(frozen=True)
class JudgeResult:
    """The judge's conclusion at the latest look, with the numbers behind it (all finite)."""

    verdict: LossVerdict
    theta_hat: float  # stratified estimate of canary minus baseline mean loss (nats)
    cs_low: float  # confidence sequence for theta: lower bound at alpha_rollback
    cs_high: float  # upper bound at alpha_promote
    p_regression: float  # always-valid p-value of H0: theta <= margin
    p_not_worse: float  # always-valid p-value of H0: theta >= margin
    information: float  # sum of inverse stratum variances (nats^-2)
    n_baseline: float  # labelled samples in the intervals used
    n_canary: float
    mean_baseline: float  # pooled means, for display (the decision uses theta_hat)
    mean_canary: float
    margin: float  # absolute, resolved (nats)
    samples_needed: int  # projected further labelled canary samples at the current split; 0 if decided
    catastrophic: bool  # the tail-rate guard fired
    reason: str
    p_catastrophic: float = 1.0
    cs_level: float = 0.94  # coverage of [cs_low, cs_high]: 1 - alpha_rollback - alpha_promote
    looks: int = 0  # intervals given
    decided_look: int = -1  # 0-based look reported: the first with the verdict, else the last
    dropped: int = 0  # intervals dropped after a weight change

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d
