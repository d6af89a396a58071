"""The judge as it was before the bounded test (normal mixture on a plug-in variance), frozen for
the detection benchmark's before/after comparison. Never used by the operator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from _legacy_mixture import log_lambda_mixture, rho_from_planned_information
from _legacy_stratified import ArmArrays, StratifiedPath, arm_valid, stratified_path
from lossgate.core.catastrophic import log_tail_mixture

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

RHO_SCALES = (1.0, 0.1, 0.01)
PLAN_POWER = 0.9


@dataclass(frozen=True)
class LegacyConfig:
    relative_margin: float
    alpha_rollback: float = 0.01
    alpha_promote: float = 0.05
    min_samples_before_rollback: float = 1000.0
    min_samples_before_promote: float = 5000.0
    catastrophic_alpha: float = 0.001
    catastrophic_ratio: float = 2.0

    def rho(self, margin: FloatArray) -> FloatArray:
        z = float(special.ndtri(1 - self.alpha_rollback) + special.ndtri(PLAN_POWER))
        scale = rho_from_planned_information(1.0, self.alpha_rollback)
        out: FloatArray = z * z / np.maximum(margin, 1e-12) ** 2 * scale
        return out


@dataclass(frozen=True)
class LegacyPath:
    estimator: StratifiedPath
    margin: FloatArray
    log_p_regression: FloatArray
    regression: BoolArray
    not_worse: BoolArray
    catastrophic: BoolArray


def legacy_judge_path(
    baseline: ArmArrays,
    canary: ArmArrays,
    tail_baseline: ArrayLike,
    tail_canary: ArrayLike,
    used: ArrayLike,
    config: LegacyConfig,
) -> LegacyPath:
    est = stratified_path(baseline, canary, used)
    mean_b = np.where(est.n_baseline > 0, est.sum_baseline / np.maximum(est.n_baseline, 1.0), 0.0)
    margin = config.relative_margin * np.abs(mean_b)
    rho = config.rho(margin)
    info = est.information
    lam_reg = log_lambda_mixture(info * (est.theta_hat - margin), info, rho, RHO_SCALES)
    lam_nw = log_lambda_mixture(info * (margin - est.theta_hat), info, rho, RHO_SCALES)
    log_p_reg = np.minimum.accumulate(np.minimum(-lam_reg, 0.0), axis=-1)
    log_p_nw = np.minimum.accumulate(np.minimum(-lam_nw, 0.0), axis=-1)
    valid = arm_valid(baseline, used) & arm_valid(canary, used)
    log_cat, _ = log_tail_mixture(
        tail_baseline, tail_canary, baseline.n, canary.n, valid, config.catastrophic_ratio
    )
    log_p_cat = np.minimum.accumulate(np.minimum(-log_cat, 0.0), axis=-1)
    catastrophic = log_p_cat <= math.log(config.catastrophic_alpha)
    regression = catastrophic | (
        (log_p_reg <= math.log(config.alpha_rollback)) & (est.n_canary >= config.min_samples_before_rollback)
    )
    not_worse = (
        ~regression
        & (log_p_nw <= math.log(config.alpha_promote))
        & (est.n_canary >= config.min_samples_before_promote)
    )
    return LegacyPath(est, margin, log_p_reg, regression, not_worse, catastrophic)
