"""Decision rules compared in the detection benchmark, vectorised over replications (axis 0) and
looks (axis 1). Every rule sees the same simulated per-interval aggregates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from _legacy_judge import LegacyConfig, legacy_judge_path
from _sim import DEFAULT_PLAN, RELATIVE_MARGIN, Plan, Streams
from lossgate.core.judge import JudgeConfig, JudgePath, judge_path, used_intervals
from lossgate.core.stratified import ArmArrays

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]

ALPHA = 0.01  # every rule's nominal false-rollback level
SPRT_BETA = 0.10
NO_LOOK = -1


@dataclass(frozen=True)
class Outcome:
    rollback_look: IntArray  # first look (0-based interval) that rolls back; NO_LOOK if never
    stop_look: IntArray  # when the rule stops looking (rollback, SPRT acceptance, or the ramp's end)
    promoted: BoolArray  # the rule would promote at the end of the ramp


def first_true(flags: BoolArray) -> IntArray:
    hit = flags.any(axis=-1)
    out: IntArray = np.where(hit, flags.argmax(axis=-1), NO_LOOK).astype(np.int64)
    return out


def _outcome(rollback: BoolArray, promoted: BoolArray | None = None) -> Outcome:
    look = first_true(rollback)
    stop = np.where(look >= 0, look, rollback.shape[-1] - 1).astype(np.int64)
    return Outcome(look, stop, (look < 0) if promoted is None else promoted)


def used(plan: Plan = DEFAULT_PLAN) -> BoolArray:
    return used_intervals(list(plan.weights), True)


def run_judge(s: Streams, config: JudgeConfig) -> tuple[Outcome, JudgePath]:
    """lossgate's judge, exactly as the operator runs it (same code path as judge.evaluate)."""
    path = judge_path(
        ArmArrays.of(s.nb, s.sb, s.qb), ArmArrays.of(s.nc, s.sc, s.qc), s.tb, s.tc, used(s.plan), config
    )
    rolled = path.regression
    # Promotion policy "require non-inferiority": shown at some look by the end, and never rolled back.
    promoted = path.not_worse.any(axis=-1) & ~rolled.any(axis=-1)
    return _outcome(rolled, promoted), path


def run_legacy(s: Streams, config: LegacyConfig) -> tuple[Outcome, BoolArray]:
    """The judge before the bounded test (normal mixture, default rho), on the same streams; also
    returns where its catastrophic guard fired."""
    path = legacy_judge_path(
        ArmArrays.of(s.nb, s.sb, s.qb),
        ArmArrays.of(s.nc, s.sc, s.qc),
        s.tb,
        s.tc,
        used(s.plan),
        config,
    )
    promoted = path.not_worse.any(axis=-1) & ~path.regression.any(axis=-1)
    return _outcome(path.regression, promoted), path.catastrophic


def stratified_z(path: JudgePath) -> FloatArray:
    """z of H0: theta <= margin from the judge's stratified estimate (0 where there is no information)."""
    est = path.estimator
    out: FloatArray = (est.theta_hat - path.margin) * np.sqrt(est.information)
    return out


def fixed_horizon(path: JudgePath) -> Outcome:
    """One z-test at alpha at the end of the ramp, on the stratified estimate."""
    z = stratified_z(path)
    rolled = np.zeros(z.shape, dtype=np.bool_)
    rolled[:, -1] = z[:, -1] > special.ndtri(1 - ALPHA)
    return _outcome(rolled)


def bonferroni(path: JudgePath) -> Outcome:
    """The stratified z at every look against z_{1 - alpha / K}."""
    return _outcome(stratified_z(path) > special.ndtri(1 - ALPHA / path.margin.shape[-1]))


def planned_information_fractions(plan: Plan = DEFAULT_PLAN) -> FloatArray:
    """Expected information after each look as a fraction of the end's, under the plan: increments
    n p (1 - p) at the looks the judge uses (not the dropped first interval of a step, nor the first
    used interval, which only seeds the variances)."""
    p = plan.weights / 100.0
    inc = plan.labelled_per_interval * p * (1 - p)
    u = used(plan)
    first_used = np.argmax(u)
    inc = np.where(u, inc, 0.0)
    inc[first_used] = 0.0
    cum = np.cumsum(inc)
    out: FloatArray = cum / cum[-1]
    return out


def pocock_constant(plan: Plan = DEFAULT_PLAN, seed: int = 12345, paths: int = 200_000) -> float:
    """Constant boundary c with P(max_k Z_k > c) = alpha for Z_k = B(t_k)/sqrt(t_k) at the planned
    information fractions t_k (Pocock's design for unequally spaced looks), by Monte Carlo."""
    t = planned_information_fractions(plan)
    keep = t > 0
    t = t[keep]
    rng = np.random.default_rng(seed)
    maxima = np.empty(paths)
    for start in range(0, paths, 50_000):
        r = min(50_000, paths - start)
        steps = rng.standard_normal((r, len(t))) * np.sqrt(np.diff(np.concatenate([[0.0], t])))
        z = np.cumsum(steps, axis=1) / np.sqrt(t)
        maxima[start : start + r] = z.max(axis=1)
    return float(np.quantile(maxima, 1 - ALPHA))


def pocock(path: JudgePath, constant: float) -> Outcome:
    return _outcome(stratified_z(path) > constant)


def sprt(path: JudgePath, effect_beyond_margin: float) -> Outcome:
    """Wald's SPRT of theta = margin against theta = margin + d on the stratified score, with
    boundaries log((1 - beta)/alpha) and log(beta/(1 - alpha)); it knows d (the limit, not a rule)."""
    est = path.estimator
    d = effect_beyond_margin
    score = est.information * (est.theta_hat - path.margin)
    llr = d * score - 0.5 * d * d * est.information
    upper, lower = math.log((1 - SPRT_BETA) / ALPHA), math.log(SPRT_BETA / (1 - ALPHA))
    up, down = first_true(llr >= upper), first_true(llr <= lower)
    looks = path.margin.shape[-1]
    big = looks + 1
    up_at, down_at = np.where(up >= 0, up, big), np.where(down >= 0, down, big)
    rolls = up_at < down_at
    look = np.where(rolls, up_at, NO_LOOK).astype(np.int64)
    stop = np.minimum(np.minimum(up_at, down_at), looks - 1).astype(np.int64)
    return Outcome(look, stop, ~rolls)


def _pooled(s: Streams) -> tuple[FloatArray, ...]:
    """Cumulative pooled means and variances per arm over all intervals (what naive rules use)."""
    out = []
    for n, total, sq in ((s.nb, s.sb, s.qb), (s.nc, s.sc, s.qc)):
        cn, cs, cq = np.cumsum(n, -1), np.cumsum(total, -1), np.cumsum(sq, -1)
        safe = np.maximum(cn, 2.0)
        mean = cs / safe
        var = np.maximum(cq - cs * cs / safe, 0.0) / (safe - 1.0)
        out += [cn, mean, var]
    return tuple(out)


def naive_welch(s: Streams) -> Outcome:
    """Welch z of the pooled cumulative means against the margin, at alpha, at every look."""
    nb, mb, vb, nc, mc, vc = _pooled(s)
    ok = (nb >= 2) & (nc >= 2)
    se = np.sqrt(vc / np.maximum(nc, 1) + vb / np.maximum(nb, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(ok & (se > 0), (mc - mb - RELATIVE_MARGIN * mb) / se, 0.0)
    return _outcome(z > special.ndtri(1 - ALPHA))


def interval_means(s: Streams) -> tuple[FloatArray, FloatArray, BoolArray]:
    ok = (s.nb >= 1) & (s.nc >= 1)
    mb = np.where(ok, s.sb / np.maximum(s.nb, 1), np.nan)
    mc = np.where(ok, s.sc / np.maximum(s.nc, 1), np.nan)
    return mb, mc, ok


def threshold_rule(s: Streams, relative_threshold: float, failures: int) -> Outcome:
    """Argo Rollouts / Flagger style: an interval fails when the canary's mean loss exceeds
    (1 + threshold) x the baseline's; roll back at the `failures`-th failed interval."""
    mb, mc, ok = interval_means(s)
    failed = ok & (mc > (1 + relative_threshold) * mb)
    return _outcome(np.cumsum(failed, axis=-1) >= failures)


def calibrate_threshold(s: Streams, failures: int, target: float) -> float:
    """Smallest relative threshold whose false-rollback rate on these (null) streams is <= target."""
    lo, hi = 0.0, 4.0
    for _ in range(40):
        mid = (lo + hi) / 2
        rate = (threshold_rule(s, mid, failures).rollback_look >= 0).mean()
        lo, hi = (mid, hi) if rate > target else (lo, mid)
    return hi


def kayenta(s: Streams, every: int, chunk: int = 1000) -> Outcome:
    """Kayenta-style: at each analysis (every `every` looks), a Mann-Whitney comparison of the
    per-interval mean losses so far, canary against baseline x (1 + margin), with the 98%
    Hodges-Lehmann interval; "High" (roll back) if its lower end > 0.25 |HL estimate|."""
    mb, mc, ok = interval_means(s)
    base = mb * (1 + RELATIVE_MARGIN)
    reps, looks = mb.shape
    rolled = np.zeros((reps, looks), dtype=np.bool_)
    z98 = special.ndtri(0.99)  # two-sided 98%
    for k in range(every - 1, looks, every):
        m = k + 1  # intervals so far (all have both arms at this traffic)
        pairs = m * m
        c = math.floor(pairs / 2 - z98 * math.sqrt(pairs * (2 * m + 1) / 12))
        if c < 0:
            continue
        for start in range(0, reps, chunk):
            x = mc[start : start + chunk, :m]
            y = base[start : start + chunk, :m]
            d = (x[:, :, None] - y[:, None, :]).reshape(len(x), pairs)
            mid = pairs // 2
            part = np.partition(d, [c, mid], axis=1)
            low, est = part[:, c], part[:, mid]
            valid = ok[start : start + chunk, :m].all(axis=1)
            rolled[start : start + chunk, k] = valid & (low > 0.25 * np.abs(est)) & (low > 0)
    return _outcome(rolled)
