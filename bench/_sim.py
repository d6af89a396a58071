"""Rollout simulation for the detection benchmark (docs/judge.md, "The detection benchmark").

Per-request cross-entropy comes from a realistic heavy-tailed pmf on fixed bins; each interval's
labelled counts per arm are Poisson, split by the traffic weight, and the bin counts multinomial, so
the cost does not grow with traffic. Every rule then sees the same per-interval aggregates
(n, sum, sum of squares, count above 4.6 nats), exactly what the Prometheus adapter produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from lossgate.conventions import CATASTROPHIC_LOSS_NATS

FloatArray = NDArray[np.float64]

INTERVAL_S = 30.0
RELATIVE_MARGIN = 0.02  # delta: 2% of the baseline's mean loss
LABEL_DELAY_MEAN_INTERVALS = 4.0  # geometric: mean 2 minutes, p90 about 4.5 minutes (< one step)
BIN_EDGES = np.concatenate([[0.0], np.geomspace(1e-3, 14.0, 48)])
LOSS_CLIP = -math.log(1e-6)  # the exporter's clip: every per-request loss is at most this


@dataclass(frozen=True)
class Plan:
    """The rollout plan: labelled predictions per interval (both arms) and the steps' weights.

    The default is 30 s intervals, 1,000 labelled predictions a second, 10-minute steps at
    5/10/25/50% (the 100% step has no baseline traffic to compare with, so the ramp ends there).
    """

    labelled_per_interval: float = 30_000.0
    step_weights: tuple[float, ...] = (5, 10, 25, 50)
    looks_per_step: int = 20

    @property
    def weights(self) -> FloatArray:
        out: FloatArray = np.repeat(np.asarray(self.step_weights, dtype=np.float64), self.looks_per_step)
        return out

    @property
    def looks(self) -> int:
        return len(self.step_weights) * self.looks_per_step


DEFAULT_PLAN = Plan()


@dataclass(frozen=True)
class LossPmf:
    values: FloatArray  # loss of each bin (its conditional mean)
    probs: FloatArray

    @property
    def mean(self) -> float:
        return float(self.probs @ self.values)

    @property
    def var(self) -> float:
        return float(self.probs @ (self.values - self.mean) ** 2)

    def moment(self, k: int) -> float:
        return float(self.probs @ (self.values - self.mean) ** k) / self.var ** (k / 2)

    @property
    def tail_rate(self) -> float:
        return float(self.probs[self.values > CATASTROPHIC_LOSS_NATS].sum())

    def scaled(self, factor: float) -> LossPmf:
        """Every loss times `factor`, still clipped where the exporter clips."""
        return LossPmf(np.minimum(self.values * factor, LOSS_CLIP), self.probs)


def _binned(losses: FloatArray, mass: FloatArray) -> LossPmf:
    losses = np.minimum(losses, LOSS_CLIP)
    idx = np.clip(np.searchsorted(BIN_EDGES, losses, side="right") - 1, 0, len(BIN_EDGES) - 2)
    probs = np.bincount(idx, mass, len(BIN_EDGES) - 1)
    sums = np.bincount(idx, mass * losses, len(BIN_EDGES) - 1)
    keep = probs > 0
    return LossPmf(sums[keep] / probs[keep], probs[keep] / probs[keep].sum())


_GRID = (np.arange(20_000) + 0.5) / 20_000


def classifier_pmf(a: float, b: float, label_noise: float) -> LossPmf:
    """Cross-entropy of a calibrated binary classifier with label noise, binned.

    Confidence q = 1 - u/2 with u ~ Beta(a, b); the label agrees with the prediction with probability
    q (1 - noise) + (1 - q) noise; the loss is -log q or -log(1 - q) with p clipped at 1e-6.
    """
    q = 1.0 - 0.5 * stats.beta.ppf(_GRID, a, b)
    agree = q * (1 - label_noise) + (1 - q) * label_noise
    losses = np.concatenate([-np.log(np.maximum(q, 1e-6)), -np.log(np.maximum(1 - q, 1e-6))])
    return _binned(losses, np.concatenate([agree, 1 - agree]) / len(_GRID))


def beta_mixture_pmf() -> LossPmf:
    """-ln p with p ~ 0.99 Beta(8, 2) + 0.01 Beta(0.5, 5): mean about 0.27 nats, 1% in a heavy tail."""
    bulk = -np.log(np.maximum(stats.beta.ppf(_GRID, 8, 2), 1e-6))
    tail = -np.log(np.maximum(stats.beta.ppf(_GRID, 0.5, 5), 1e-6))
    mass = np.concatenate([np.full(len(_GRID), 0.99), np.full(len(_GRID), 0.01)]) / len(_GRID)
    return _binned(np.concatenate([bulk, tail]), mass)


def softmax_pmf(classes: int, noise: float) -> LossPmf:
    """A calibrated softmax: top probability q = 1/C + (1 - 1/C) Beta(4, 1.2), the rest spread evenly;
    the true class is the top one with probability q, and a fraction `noise` of labels is replaced by
    a uniformly random class (so a confident model pays -ln((1 - q)/(C - 1)) on those)."""
    q = 1 / classes + (1 - 1 / classes) * stats.beta.ppf(_GRID, 4, 1.2)
    top = (1 - noise) * q + noise / classes
    rest = np.maximum((1 - q) / (classes - 1), 1e-6)
    losses = np.concatenate([-np.log(np.maximum(q, 1e-6)), -np.log(rest)])
    return _binned(losses, np.concatenate([top, 1 - top]) / len(_GRID))


EASY = classifier_pmf(0.4, 1.5, 0.01)  # the default traffic: mean 0.295, skew 5.5, excess kurtosis 52
HARD = classifier_pmf(0.6, 1.0, 0.03)  # hard requests: mean about 0.46


def with_tail_regression(pmf: LossPmf, extra_tail: float, loss: float = -math.log(1e-3)) -> LossPmf:
    """Move `extra_tail` probability from the easiest bins (loss < 0.1) to confident mistakes at `loss`:
    the bulk of the distribution is unchanged, only the rate of very large losses grows."""
    easy = pmf.values < 0.1
    probs = pmf.probs.copy()
    probs[easy] *= 1 - extra_tail / probs[easy].sum()
    return LossPmf(np.append(pmf.values, loss), np.append(probs, extra_tail))


@dataclass(frozen=True)
class Scenario:
    name: str
    canary: LossPmf
    baseline: LossPmf = EASY
    hard_share: FloatArray | None = None  # per interval: share of hard requests (both arms)
    label_delay: bool = False
    replications: int = 10_000
    null: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "null", self.theta <= self.margin * (1 + 1e-9))

    @property
    def theta(self) -> float:
        """Canary minus baseline mean loss (over the ramp's average mix for the diurnal scenario)."""
        return self.canary.mean - self.baseline.mean

    @property
    def margin(self) -> float:
        return RELATIVE_MARGIN * self.baseline.mean


@dataclass(frozen=True)
class Streams:
    """Per-interval aggregates of both arms, shape (R, K)."""

    nb: FloatArray
    sb: FloatArray
    qb: FloatArray
    tb: FloatArray
    nc: FloatArray
    sc: FloatArray
    qc: FloatArray
    tc: FloatArray
    oracle_information: FloatArray  # cumulative sum of 1 / (sigma_c^2/n_c + sigma_b^2/n_b), true variances
    plan: Plan = DEFAULT_PLAN


def _expected_labels(share: FloatArray, delayed: bool, labelled: float) -> FloatArray:
    """Expected labelled predictions arriving per interval for an arm served at `share` per interval.

    With delays, predictions served at interval j are labelled at j + D, D geometric on {0, 1, ...}
    with the given mean; labels are attributed to the arm that served them, whenever they arrive.
    Before the rollout the arm had served at its first share (the baseline at 100%).
    """
    served = labelled * share
    if not delayed:
        return served
    g = LABEL_DELAY_MEAN_INTERVALS / (1 + LABEL_DELAY_MEAN_INTERVALS)
    out = np.empty_like(served)
    level = labelled * (1.0 if share[0] > 0.5 else 0.0)  # steady state before the rollout
    for k, s in enumerate(served):
        level = g * level + (1 - g) * s
        out[k] = level
    return out


def _draw_arm(
    rng: np.random.Generator, counts_mean: FloatArray, pmfs: list[tuple[LossPmf, FloatArray]]
) -> tuple[FloatArray, ...]:
    """n, sum, sum of squares and tail count per interval for one arm; `pmfs` are mixture components
    with per-interval shares (one component with share 1 when there is no mix)."""
    n = rng.poisson(counts_mean)
    total_n = np.zeros(n.shape)
    s = np.zeros(n.shape)
    q = np.zeros(n.shape)
    t = np.zeros(n.shape)
    remaining = n
    for i, (pmf, share) in enumerate(pmfs):
        if i == len(pmfs) - 1:
            m = remaining
        else:
            m = rng.binomial(remaining, np.broadcast_to(share, n.shape))
            remaining = remaining - m
        counts = rng.multinomial(m, pmf.probs)
        total_n += m
        s += counts @ pmf.values
        q += counts @ (pmf.values * pmf.values)
        t += counts @ (pmf.values > CATASTROPHIC_LOSS_NATS).astype(np.float64)
    return total_n, s, q, t


def _mix_variance(pmfs: list[tuple[LossPmf, FloatArray]]) -> FloatArray:
    """Per-interval variance of a mixture of pmfs with per-interval shares."""
    mean = sum(share * p.mean for p, share in pmfs)
    second = sum(share * (p.var + p.mean**2) for p, share in pmfs)
    out: FloatArray = np.asarray(second - mean**2, dtype=np.float64)
    return out


def simulate(
    scenario: Scenario, replications: int, seed: int, plan: Plan = DEFAULT_PLAN, chunk: int = 2000
) -> Streams:
    rng = np.random.default_rng(seed)
    share_c = plan.weights / 100.0
    looks = plan.looks
    mean_c = _expected_labels(share_c, scenario.label_delay, plan.labelled_per_interval)
    mean_b = _expected_labels(1.0 - share_c, scenario.label_delay, plan.labelled_per_interval)
    if scenario.hard_share is None:
        comp_b = [(scenario.baseline, np.ones(looks))]
        comp_c = [(scenario.canary, np.ones(looks))]
    else:
        h = scenario.hard_share
        # The canary of the diurnal scenario is equal: easy and hard requests score as the baseline's.
        comp_b = [(HARD, h), (scenario.baseline, 1 - h)]
        comp_c = [(HARD, h), (scenario.canary, 1 - h)]
    parts: list[tuple[FloatArray, ...]] = []
    for start in range(0, replications, chunk):
        r = min(chunk, replications - start)
        b = _draw_arm(rng, np.broadcast_to(mean_b, (r, looks)), comp_b)
        c = _draw_arm(rng, np.broadcast_to(mean_c, (r, looks)), comp_c)
        parts.append(b + c)
    cols = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    var_b, var_c = _mix_variance(comp_b), _mix_variance(comp_c)
    nb, nc = cols[0], cols[4]
    with np.errstate(divide="ignore"):
        w = np.where((nb > 0) & (nc > 0), 1.0 / (var_c / np.maximum(nc, 1) + var_b / np.maximum(nb, 1)), 0.0)
    return Streams(*cols, oracle_information=np.cumsum(w, axis=-1), plan=plan)


def diurnal_hard_share(looks: int) -> FloatArray:
    """Share of hard requests rising from 10% to 80% over the ramp (an evening peak), so the canary's
    bigger later splits see harder traffic than its early ones."""
    x = np.linspace(0.0, 1.0, looks)
    return 0.1 + 0.7 * (1 - np.cos(np.pi * x)) / 2


def scenarios(
    null_replications: int, other_replications: int, looks: int = DEFAULT_PLAN.looks
) -> list[Scenario]:
    m = RELATIVE_MARGIN
    nr, orr = null_replications, other_replications
    mix = diurnal_hard_share(looks)
    return [
        Scenario("equal canary", EASY, replications=nr),
        Scenario("-5%", EASY.scaled(0.95), replications=nr),
        Scenario(f"+delta (+{m:.0%}, boundary)", EASY.scaled(1 + m), replications=nr),
        Scenario(f"+2 delta (+{2 * m:.0%})", EASY.scaled(1 + 2 * m), replications=orr),
        Scenario("+5%", EASY.scaled(1.05), replications=orr),
        Scenario("+10%", EASY.scaled(1.10), replications=orr),
        Scenario("+25%", EASY.scaled(1.25), replications=orr),
        Scenario("+50%", EASY.scaled(1.50), replications=orr),
        Scenario(
            "tail-only (3x rate > 4.6 nats)", with_tail_regression(EASY, 2 * EASY.tail_rate), replications=orr
        ),
        Scenario("diurnal mix, equal canary", EASY, hard_share=mix, replications=nr),
        Scenario("label delays, equal canary", EASY, label_delay=True, replications=nr),
        Scenario(
            f"label delays, +2 delta (+{2 * m:.0%})",
            EASY.scaled(1 + 2 * m),
            label_delay=True,
            replications=orr,
        ),
    ]
