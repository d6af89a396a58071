"""The Brier gate's test (core/bounded_diff.py on per-request Brier scores in [0, 2]) under continuous
monitoring: calibration at low and high counts, and detection of a worse-calibrated canary.

Simulated rollouts, vectorised, through `diff_path` (the code the gate's fold runs), 200 looks each,
fixed seeds. Per-request Brier scores come from a 10-class softmax classifier: the world's labels are
drawn from its calibrated probabilities, and a model tempered at T < 1 is overconfident (its Brier
score is higher). The scores are drawn from their distribution quantised on 24 cells of [0, 2] (each
cell at the mean of the scores in it). A canary exactly on the margin is a mixture of the baseline's
distribution and an overconfident one with the mean exactly baseline + margin.

Tolerance: with a false-rollback rate exactly alpha, the count in R rollouts is Binomial(R, alpha);
rate <= alpha + 2.33 sqrt(alpha (1 - alpha) / R) fails with probability about 1% for a test exactly at
alpha, and less for a conservative one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from lossgate.conventions import BRIER_MAX
from lossgate.core.bounded_diff import DiffNull, diff_path

ROLLOUTS = 2000
LOOKS = 200
ALPHA = 0.01
MARGIN = 0.01
Z99 = float(special.ndtri(0.99))
USED = np.ones(LOOKS, dtype=np.bool_)


def brier_pmf(
    temperature: float, seed: int = 3, n: int = 100_000, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(cell values, probabilities) of the per-request Brier score of a model tempered at T."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, k))
    world = np.exp(logits - logits.max(1, keepdims=True))
    world /= world.sum(1, keepdims=True)
    y = (world.cumsum(1) > rng.random((n, 1))).argmax(1)
    model = np.exp((logits - logits.max(1, keepdims=True)) / temperature)
    model /= model.sum(1, keepdims=True)
    brier = (model**2).sum(1) - 2 * model[np.arange(n), y] + 1
    cells = np.minimum((brier / BRIER_MAX * 24).astype(int), 23)
    counts = np.bincount(cells, minlength=24).astype(float)
    sums = np.bincount(cells, weights=brier, minlength=24)
    values = np.where(counts > 0, sums / np.maximum(counts, 1), (np.arange(24) + 0.5) / 12)
    return values, counts / counts.sum()


def on_margin(base: tuple[np.ndarray, np.ndarray], worse: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The mixture of the baseline's and the worse model's distributions (same cells) whose mean is
    exactly the baseline's + MARGIN."""
    values, pb = base
    _, pw = worse
    mb, mw = values @ pb, values @ pw
    w = MARGIN / (mw - mb)
    assert 0 < w < 1
    return (1 - w) * pb + w * pw


def draw(
    rng: np.random.Generator, values: np.ndarray, pb: np.ndarray, pc: np.ndarray, n_c: float, rollouts: int
) -> tuple[np.ndarray, ...]:
    """Per rollout and look: baseline requests (4x the canary's), their Brier sum; the canary's."""
    nb = rng.poisson(4 * n_c, (rollouts, LOOKS))
    nc = rng.poisson(n_c, (rollouts, LOOKS))
    sb, sc = np.empty((rollouts, LOOKS)), np.empty((rollouts, LOOKS))
    for k in range(LOOKS):
        sb[:, k] = rng.multinomial(nb[:, k], pb) @ values
        sc[:, k] = rng.multinomial(nc[:, k], pc) @ values
    return nb.astype(float), sb, nc.astype(float), sc


def rolled_back(
    n_c: float, pb: np.ndarray, pc: np.ndarray, values: np.ndarray, seed: int, rollouts: int
) -> float:
    rng = np.random.default_rng(seed)
    null = DiffNull.absolute(MARGIN, BRIER_MAX)
    hits = 0
    for _ in range(rollouts // 500):  # 500 rollouts at a time: bounded memory
        nb, sb, nc, sc = draw(rng, values, pb, pc, n_c, 500)
        path = diff_path(nb, sb, nc, sc, USED, null)
        hits += int((path.log_p_regression <= math.log(ALPHA)).any(axis=-1).sum())
    return hits / rollouts


CALIBRATED = brier_pmf(1.0)
OVERCONFIDENT = brier_pmf(0.5)


def test_the_population_is_what_the_scenarios_say() -> None:
    values, pb = CALIBRATED
    _, pw = OVERCONFIDENT
    # The calibrated model's mean Brier score, and the overconfident one's several margins above it
    assert 0.3 < values @ pb < 0.7
    assert values @ pw - values @ pb > 5 * MARGIN
    assert math.isclose(values @ on_margin(CALIBRATED, OVERCONFIDENT) - values @ pb, MARGIN, rel_tol=1e-9)
    assert np.all((values >= 0) & (values <= BRIER_MAX))


@pytest.mark.parametrize(
    ("n_c", "case"),
    [(5.0, "margin"), (2000.0, "margin"), (50.0, "equal")],
    ids=["5-a-look-on-the-margin", "2000-a-look-on-the-margin", "50-a-look-equal"],
)
def test_false_rollbacks_at_most_alpha_over_200_looks(n_c: float, case: str) -> None:
    # Given canaries exactly on the margin (or equal), looked at 200 times
    values, pb = CALIBRATED
    pc = on_margin(CALIBRATED, OVERCONFIDENT) if case == "margin" else pb
    # When the Brier gate's test runs at every look
    rate = rolled_back(n_c, pb, pc, values, seed=int(n_c) + 1, rollouts=ROLLOUTS)
    # Then at most alpha of them roll back, within the binomial tolerance
    assert rate <= ALPHA + Z99 * math.sqrt(ALPHA * (1 - ALPHA) / ROLLOUTS)


def test_an_overconfident_canary_is_rolled_back() -> None:
    # Given an overconfident canary (temperature 0.5) against a calibrated baseline, 200 canary
    # labels a look
    values, pb = CALIBRATED
    _, pc = OVERCONFIDENT
    # When the Brier gate's test runs for up to 200 looks
    rate = rolled_back(200.0, pb, pc, values, seed=99, rollouts=500)
    # Then (nearly) every rollout is rolled back
    assert rate >= 0.99
