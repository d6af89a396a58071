"""Per-request cross-entropy, binary and multi-class, from probabilities or logits (numerically stable).

A prediction is turned into a vector of log-probabilities once, when it is served; the loss is read off
that vector when the label arrives: loss = -max(log p[label], log PROB_FLOOR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import numpy.typing as npt

from lossgate.conventions import PROB_FLOOR

ArrayLike = Union[float, Sequence[float], npt.NDArray[np.floating]]  # noqa: UP007 - runtime alias

_LOG_FLOOR = math.log(PROB_FLOOR)
_PROB_SLACK = 1e-6  # rounding slack when checking that probabilities lie in [0, 1]


def log_probs(
    probabilities: ArrayLike | None = None, logits: ArrayLike | None = None
) -> npt.NDArray[np.float64]:
    """Log-probabilities per class, as a float64 vector of length >= 2.

    Binary models may give one number: the probability (or logit) of class 1. A vector of length 1 is
    read the same way. Longer vectors are a distribution over classes (probabilities) or raw scores
    (logits, normalised here with a stable log-softmax).
    """
    if (probabilities is None) == (logits is None):
        raise ValueError("give exactly one of probabilities= or logits=")
    if logits is not None:
        z = _vector(logits, "logits")
        if z.size == 1:  # binary log-odds of class 1: log sigmoid(+-z), stable for |z| large
            return np.array([-np.logaddexp(0.0, z[0]), -np.logaddexp(0.0, -z[0])], dtype=np.float64)
        shifted = z - z.max()
        return np.asarray(shifted - np.log(np.exp(shifted).sum()), dtype=np.float64)
    p = _vector(probabilities, "probabilities")
    if np.any(p < -_PROB_SLACK) or np.any(p > 1 + _PROB_SLACK):
        raise ValueError(f"probabilities must lie in [0, 1], got {p.tolist()[:8]}")
    p = np.clip(p, 0.0, 1.0)
    if p.size == 1:
        p = np.array([1.0 - p[0], p[0]])
    with np.errstate(divide="ignore"):  # log(0) = -inf is clipped at the floor when the label arrives
        return np.asarray(np.log(p), dtype=np.float64)


def loss_from_log_probs(lp: npt.NDArray[np.float64], label: int) -> float:
    """Cross-entropy of the true class, with p(true) clipped at PROB_FLOOR (so at most ~13.8 nats)."""
    if isinstance(label, bool):
        label = int(label)
    if not isinstance(label, int | np.integer) or not 0 <= int(label) < lp.size:
        raise ValueError(f"label must be a class index in [0, {lp.size}), got {label!r}")
    return -max(float(lp[int(label)]), _LOG_FLOOR)


def cross_entropy(
    label: int, probabilities: ArrayLike | None = None, logits: ArrayLike | None = None
) -> float:
    """Per-request cross-entropy in nats (what LossRecorder observes for one labelled prediction)."""
    return loss_from_log_probs(log_probs(probabilities, logits), label)


def _vector(values: ArrayLike | None, what: str) -> npt.NDArray[np.float64]:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim > 1 and a.size != max(a.shape):
        raise ValueError(f"{what} must be one prediction (a vector), got shape {a.shape}")
    v = a.reshape(-1)
    if v.size == 0:
        raise ValueError(f"{what} must not be empty")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be finite, got {v.tolist()[:8]}")
    return v


def log_probs_rows(values: npt.ArrayLike, *, logits: bool = False) -> npt.NDArray[np.float64]:
    """`log_probs` for many predictions of one width at once (row i = log_probs of values[i]).

    `values` is 1-D (one binary score per prediction) or 2-D (one row per prediction). The same
    arithmetic as log_probs, vectorised: a service that receives predictions in batches (the
    label joiner) spends microseconds per batch instead of per prediction. Raises ValueError for the
    batch; call log_probs on each row to find the offending one.
    """
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"expected one row per prediction, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("scores must be finite")
    if logits:
        if a.shape[1] == 1:
            z = a[:, 0]
            return np.stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)], axis=1)
        shifted = a - a.max(axis=1, keepdims=True)
        return np.asarray(shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), dtype=np.float64)
    if np.any(a < -_PROB_SLACK) or np.any(a > 1 + _PROB_SLACK):
        raise ValueError("probabilities must lie in [0, 1]")
    p = np.clip(a, 0.0, 1.0)
    if p.shape[1] == 1:
        p = np.concatenate([1.0 - p, p], axis=1)
    with np.errstate(divide="ignore"):
        return np.asarray(np.log(p), dtype=np.float64)
