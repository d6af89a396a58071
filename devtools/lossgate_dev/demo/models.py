"""Real demo models: multinomial logistic regression on scikit-learn's bundled digits data set
(8x8 images, 10 classes; ships inside the package, so nothing is downloaded).

Variants are trained deliberately differently so their per-request cross-entropy differs for
real, not by a number we pick: `good` is regularised less (it fits the digits better);
`bad` learns from labels of which 30% were replaced at random (label noise); `slow` is `good`'s
model served behind a 60 ms delay (server.py), a better model that answers slower; `classbad` is
`good` trained with half of the digit-7 labels replaced at random: better on the pool, much worse on
one class. Measured on the held-out half: baseline 0.241 nats, good 0.154, bad 0.694, classbad 0.225
(digit 7: baseline 0.122, classbad 0.770).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

VARIANTS = ("baseline", "good", "bad", "slow", "classbad")
_LABEL_NOISE = {"baseline": 0.0, "good": 0.0, "bad": 0.3, "slow": 0.0, "classbad": 0.0}
_C = {"baseline": 0.05, "good": 0.2, "bad": 0.05, "slow": 0.2, "classbad": 0.2}
_SEED = {"baseline": 1, "good": 2, "bad": 3, "slow": 2, "classbad": 2}
_CLASS_NOISE = {"classbad": (7, 0.5)}  # (digit, share of its labels replaced at random)
# Added to every answer of a variant (seconds): what the latency guardrail must catch.
DELAY_S = {"slow": 0.06}


@dataclass(frozen=True)
class Traffic:
    """Held-out rows the driver sends as requests, with their true labels."""

    features: NDArray[np.float64]
    labels: NDArray[np.int64]


def _split(seed: int = 0) -> tuple[NDArray[np.float64], NDArray[np.int64], Traffic]:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order].astype(np.float64), y[order].astype(np.int64)
    cut = len(y) // 2
    return x[:cut], y[:cut], Traffic(x[cut:], y[cut:])


def traffic() -> Traffic:
    return _split()[2]


def train(variant: str) -> Pipeline:
    """Fit one variant on the training half (deterministic; well under a second)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo model variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    x, y, _ = _split()
    rng = np.random.default_rng(_SEED[variant])
    idx = rng.permutation(len(y))
    x, y = x[idx], y[idx].copy()
    noisy = rng.random(len(y)) < _LABEL_NOISE[variant]
    if variant in _CLASS_NOISE:
        digit, share = _CLASS_NOISE[variant]
        noisy = (y == digit) & (rng.random(len(y)) < share)
    y[noisy] = rng.integers(0, 10, int(noisy.sum()))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=_C[variant], max_iter=2000))
    model.fit(x, y)
    return model
