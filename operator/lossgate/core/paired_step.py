"""The shadow step's paired judgement (pure): which paired intervals to read, the paired fold
(core/paired.py) continued from status, and the evidence decide() takes.

The fold runs only while the rollout is in its shadow step, from the step's start, on the analysis
interval's grid; its state lives in status.pairedState (fixed size, exact floats) like judgeState, so a
tick reads only the intervals closed since the last one and an operator restart continues bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np

from lossgate.core.evidence import Problem
from lossgate.core.judge_types import JudgeConfig
from lossgate.core.paired import PairedFold, PairedStart, PairedStats, advance
from lossgate.core.verdicts import LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus
from lossgate.model.status import PairedState, Phase

_SUMS = ("n", "sum", "sumsq", "sum_baseline")
_GRIDS = ("reg_a", "reg_c", "nw_a", "nw_c")
_VERDICTS = tuple(LossVerdict)


@dataclass(frozen=True)
class PairedEvidence:
    """The paired judge's verdict in the shadow step, with the numbers status shows."""

    verdict: LossVerdict
    n: float = 0.0
    mean_baseline: float | None = None
    delta: float | None = None  # mean of d = canary loss - baseline loss on the same requests
    cs_low: float | None = None
    cs_high: float | None = None
    margin: float | None = None
    p_regression: float | None = None
    p_not_worse: float | None = None
    alpha: float | None = None  # the paired test's share of alphaRollback
    problem: str | None = None  # why no new pairs were read this tick (e.g. no paired series yet)

    def line(self) -> str:
        """'paired d +0.003 [-0.002, 0.009] on 1234 mirrored requests (margin 0.020)'."""
        if self.n < 1 or self.delta is None:
            return "no paired evidence yet (mirrored requests with a label)"
        bounds = (
            f" [{self.cs_low:.3f}, {self.cs_high:.3f}]"
            if self.cs_low is not None and self.cs_high is not None
            else ""
        )
        margin = f", margin {self.margin:.3f}" if self.margin is not None else ""
        n = round(self.n)
        return f"paired d {self.delta:+.3f}{bounds} on {n} mirrored requests ({self.verdict}{margin})"


@dataclass(frozen=True)
class PairedPlan:
    """Which paired intervals to read: from `start`, continuing `fold`."""

    origin: datetime
    start: datetime
    interval_s: float
    fold: PairedFold
    fingerprint: str


def plan_paired_read(
    spec: ModelRolloutSpec, status: ModelRolloutStatus, config: JudgeConfig, series: object
) -> PairedPlan | None:
    """None unless the rollout is running its shadow step (the only step judged on pairs)."""
    if spec.shadow is None or status.started_at is None or status.terminal or status.step_index != 0:
        return None
    if status.phase not in (Phase.PROGRESSING, Phase.PAUSED) or status.step_started_at is None:
        return None
    origin = status.step_started_at
    interval_ms = round(spec.analysis.interval.total_seconds() * 1000)
    origin_ms = round(origin.timestamp() * 1000)
    fp = hashlib.sha256(repr(("paired", config, series, interval_ms, origin_ms)).encode()).hexdigest()[:32]
    fresh = PairedPlan(origin, origin, interval_ms / 1000, PairedFold(), fp)
    st = status.paired_state
    if st is None or st.fingerprint != fp or st.origin_ms != origin_ms or st.interval_ms != interval_ms:
        return fresh
    fold = decode(st.numbers)
    if fold is None or fold.looks != st.looks or st.through_ms != origin_ms + st.looks * interval_ms:
        return fresh
    return PairedPlan(
        origin, datetime.fromtimestamp(st.through_ms / 1000, tz=UTC), interval_ms / 1000, fold, fp
    )


def judge_paired(
    plan: PairedPlan | None,
    got: Sequence[PairedStats] | Problem | None,
    config: JudgeConfig,
    alpha: float,
) -> tuple[PairedEvidence | None, PairedState | None, Problem | None]:
    """The evidence for decide(), the state for status, and the read's problem (if any)."""
    if plan is None:
        return None, None, None
    fold, problem = plan.fold, None
    if isinstance(got, Problem):
        problem = got
    elif got:
        fold = advance(fold, got, config, alpha)
    interval_ms = round(plan.interval_s * 1000)
    origin_ms = round(plan.origin.timestamp() * 1000)
    state = PairedState(
        origin_ms=origin_ms,
        through_ms=origin_ms + fold.looks * interval_ms,
        interval_ms=interval_ms,
        fingerprint=plan.fingerprint,
        looks=fold.looks,
        numbers=encode(fold),
    )
    ev = evidence(fold, config, alpha)
    return (ev if problem is None else replace(ev, problem=problem.message)), state, problem


def evidence(fold: PairedFold, config: JudgeConfig, alpha: float) -> PairedEvidence:
    n = fold.n
    if n < 1:
        return PairedEvidence(LossVerdict.INSUFFICIENT_DATA, alpha=alpha)
    mean_b = fold.start.sum_baseline / n
    low, high = fold.cs
    return PairedEvidence(
        verdict=fold.verdict,
        n=n,
        mean_baseline=_finite(mean_b),
        delta=_finite(fold.theta),
        cs_low=_finite(low),
        cs_high=_finite(high),
        margin=_finite(float(np.asarray(config.resolve_margin(np.float64(mean_b))))),
        p_regression=_finite(fold.p_regression),
        p_not_worse=_finite(fold.p_not_worse),
        alpha=alpha,
    )


def encode(fold: PairedFold) -> dict[str, list[float]]:
    s = fold.start
    verdict = float(_VERDICTS.index(fold.verdict))
    decided = [] if fold.decided_at is None else [float(fold.decided_at)]
    out: dict[str, list[float]] = {
        "counts": [float(fold.looks), verdict],
        "decidedAt": decided,
        "sums": [float(getattr(s, k)) for k in _SUMS],
        "logP": [s.log_p_regression, s.log_p_not_worse],
        "theta": [fold.theta],
        "cs": [fold.cs[0], fold.cs[1]],
    }
    for k in _GRIDS:
        out[k] = [float(x) for x in getattr(s, k)]
    return out


def decode(numbers: Mapping[str, Sequence[float]]) -> PairedFold | None:
    """The fold `encode` wrote; None when the numbers cannot be one (then it is rebuilt)."""
    try:
        looks, verdict = (int(x) for x in numbers["counts"])
        grids = {k: np.asarray([float(x) for x in numbers[k]], dtype=np.float64) for k in _GRIDS}
        if any(g.shape != PairedStart().reg_a.shape for g in grids.values()):
            return None
        n, total, sumsq, sum_b = (float(x) for x in numbers["sums"])
        log_p = [float(x) for x in numbers["logP"]]
        decided = [int(x) for x in numbers["decidedAt"]]
        low, high = (float(x) for x in numbers["cs"])
        start = PairedStart(
            n=n,
            sum=total,
            sumsq=sumsq,
            sum_baseline=sum_b,
            reg_a=grids["reg_a"],
            reg_c=grids["reg_c"],
            nw_a=grids["nw_a"],
            nw_c=grids["nw_c"],
            log_p_regression=log_p[0],
            log_p_not_worse=log_p[1],
        )
        return PairedFold(
            looks=looks,
            start=start,
            verdict=_VERDICTS[verdict],
            decided_at=decided[0] if decided else None,
            theta=float(numbers["theta"][0]),
            cs=(low, high),
        )
    except (KeyError, ValueError, IndexError, TypeError):
        return None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
