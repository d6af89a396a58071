"""The judge's configuration and result types (kept apart from the computation in judge.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from lossgate.core.mixture import rho_from_planned_information
from lossgate.core.verdicts import LossVerdict

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Cross-entropy is clipped at p >= 1e-6 by the exporter, so |canary - baseline| <= -ln(1e-6).
# With no information the confidence sequence is this whole range (finite, and still true).
LOSS_BOUND_NATS = -math.log(1e-6)
# "Samples needed" when the current estimate would never cross a boundary at the current split.
MAX_SAMPLES_NEEDED = 1_000_000_000
# Default planned information: a fixed-horizon test at alpha_rollback detecting a regression of twice
# the margin with power 0.9 needs (z_{1-alpha} + z_{0.9})^2 / margin^2; the mixture is tuned there.
DEFAULT_PLAN_POWER = 0.9
# The mixture is averaged over rho, rho/10 and rho/100 (see JudgeConfig.rho_scales).
DEFAULT_RHO_SCALES = (1.0, 0.1, 0.01)
MIN_MARGIN_NATS = 1e-12


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge decides. Give exactly one of `margin` (absolute nats) and `relative_margin`
    (fraction of the baseline's mean loss), and at most one of `rho` and `planned_information`.

    rho (or the rho derived from planned_information, or by default from the margin) is the precision
    of the normal mixture; `rho_scales` averages the test over rho * scale for each scale with equal
    weights. The default (1, 0.1, 0.01) keeps the test tight at the planned information and also for
    regressions 3-10x larger, which are caught at a tenth or a hundredth of it; (1.0,) is the
    single-rho test of STATISTICS.md. The average of always-valid tests is always valid.
    """

    margin: float | None = None
    relative_margin: float | None = None
    alpha_rollback: float = 0.01
    alpha_promote: float = 0.05
    rho: float | None = None
    planned_information: float | None = None  # information expected near the end of the 25% step
    min_samples_before_rollback: float = 1000.0  # labelled canary samples
    min_samples_before_promote: float = 5000.0
    catastrophic_alpha: float = 0.001
    catastrophic_ratio: float = 2.0  # H0 of the guard: canary tail rate <= this x baseline's
    drop_first_after_weight_change: bool = True
    cs_alpha: float = 0.05  # two-sided level of the reported confidence sequence
    rho_scales: tuple[float, ...] = DEFAULT_RHO_SCALES

    def __post_init__(self) -> None:
        if not self.rho_scales or not all(math.isfinite(c) and c > 0 for c in self.rho_scales):
            raise ValueError(f"rho_scales must be finite and > 0, got {self.rho_scales!r}")
        if (self.margin is None) == (self.relative_margin is None):
            raise ValueError("give exactly one of margin and relative_margin")
        value = self.margin if self.margin is not None else self.relative_margin
        if value is None or not (math.isfinite(value) and value > 0):
            raise ValueError(f"margin must be finite and > 0, got {value!r}")
        for name in ("alpha_rollback", "alpha_promote", "catastrophic_alpha", "cs_alpha"):
            a = getattr(self, name)
            if not 0 < a < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {a!r}")
        if self.rho is not None and self.planned_information is not None:
            raise ValueError("give at most one of rho and planned_information")
        if self.rho is not None and not (math.isfinite(self.rho) and self.rho > 0):
            raise ValueError(f"rho must be finite and > 0, got {self.rho!r}")
        if self.planned_information is not None:
            rho_from_planned_information(self.planned_information, self.alpha_rollback)  # validates
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
        assert self.relative_margin is not None
        out = self.relative_margin * np.abs(mb)
        return out

    def resolve_rho(self, margin: ArrayLike) -> FloatArray:
        """Mixture precision: fixed if rho or planned_information is given, else from the margin."""
        d = np.asarray(margin, dtype=np.float64)
        if self.rho is not None:
            out: FloatArray = np.full_like(d, self.rho)
            return out
        if self.planned_information is not None:
            return np.full_like(
                d, rho_from_planned_information(self.planned_information, self.alpha_rollback)
            )
        z = float(special.ndtri(1 - self.alpha_rollback) + special.ndtri(DEFAULT_PLAN_POWER))
        scale = rho_from_planned_information(1.0, self.alpha_rollback)
        # Margins under a pico-nat are numerically zero; the floor keeps rho finite.
        out = z * z / np.maximum(d, MIN_MARGIN_NATS) ** 2 * scale
        return out


@dataclass(frozen=True)
class JudgeResult:
    """The judge's conclusion at the latest look, with the numbers behind it (all finite)."""

    verdict: LossVerdict
    theta_hat: float  # stratified estimate of canary minus baseline mean loss (nats)
    cs_low: float  # two-sided (1 - cs_alpha) confidence sequence for theta
    cs_high: float
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
    rho: float = 0.0  # base precision of the mixture (before rho_scales)
    looks: int = 0  # intervals given
    dropped: int = 0  # intervals dropped after a weight change

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d
