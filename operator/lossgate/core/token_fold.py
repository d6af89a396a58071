"""The loss-per-token check of a language model as a running fold (docs/judge.md, "Language models").

Like a guardrail (core/guardrail.py), the operator keeps a fixed number of floats per rollout: the
test's state (core/token_loss.py), the running intersection of the confidence sequence and the
looks a verdict reports. Each tick continues it with the intervals closed since.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, field

import numpy as np

from lossgate.core.bounded import NOT_WORSE, REGRESSION
from lossgate.core.judge import used_intervals
from lossgate.core.sequential_fold import decisions, decode_common, encode_common
from lossgate.core.token_loss import ARM_FIELDS, TokenNull, TokenStart, confidence_bound, token_path
from lossgate.core.verdicts import LossVerdict

NAME = "tokenLoss"


@dataclass(frozen=True)
class TokenCounts:
    """One arm over one interval: labelled requests, and the sums of S (token NLL of the request's
    reference, nats), T (its tokens), S^2, T^2 and S T."""

    n: float
    nll: float
    tokens: float
    nll_sq: float
    tokens_sq: float
    nll_tokens: float


@dataclass(frozen=True)
class TokenInterval:
    start: float
    end: float
    baseline: TokenCounts
    canary: TokenCounts
    canary_weight: int | None = None


@dataclass(frozen=True)
class TokenConfig:
    """How the check decides; alpha_rollback is its share of the rollout's (core/family.py)."""

    null: TokenNull
    alpha_rollback: float = 0.01
    alpha_promote: float = 0.05
    min_requests_before_rollback: float = 0.0  # labelled canary requests before a rollback may act
    min_requests_before_promote: float = 0.0
    drop_first_after_weight_change: bool = True

    def __post_init__(self) -> None:
        for name in ("alpha_rollback", "alpha_promote"):
            a = getattr(self, name)
            if not 0 < a < 0.5:
                raise ValueError(f"{NAME}: {name} must be in (0, 0.5), got {a!r}")


@dataclass(frozen=True)
class Look:
    look: int
    n_b: float
    n_c: float
    tokens_b: float
    tokens_c: float
    nll_b: float
    nll_c: float
    estimate: float  # stratified r_c - r_b, nats per token
    cs_low: float
    cs_high: float


@dataclass(frozen=True)
class TokenFold:
    looks: int = 0
    dropped: int = 0
    last_weight: float | None = None
    state: TokenStart = field(default_factory=TokenStart)
    cs: tuple[float, float] | None = None
    regression_at: Look | None = None
    not_worse_at: Look | None = None
    latest: Look | None = None


@dataclass(frozen=True)
class TokenResult:
    verdict: LossVerdict
    n_baseline: float
    n_canary: float
    per_token_baseline: float | None  # sum S / sum T, nats per token (perplexity: exp of it)
    per_token_canary: float | None
    delta: float
    cs_low: float
    cs_high: float
    p_regression: float
    p_not_worse: float
    margin: float
    alpha_rollback: float
    looks: int
    reason: str


def _arm(c: TokenCounts) -> tuple[float, ...]:
    return astuple(c)


def advance(fold: TokenFold, intervals: Sequence[TokenInterval], config: TokenConfig) -> TokenFold:
    """The state after `intervals` more (closed, in order)."""
    if not intervals:
        return fold
    weights = [iv.canary_weight for iv in intervals]
    used = used_intervals(weights, config.drop_first_after_weight_change, fold.last_weight or 0.0)
    base = np.asarray([_arm(iv.baseline) for iv in intervals], dtype=np.float64).T
    canary = np.asarray([_arm(iv.canary) for iv in intervals], dtype=np.float64).T
    path = token_path(base, canary, used, config.null, fold.state)
    low = confidence_bound(path.reg, REGRESSION, config.alpha_rollback)
    high = confidence_bound(path.nw, NOT_WORSE, config.alpha_promote)
    if fold.cs is not None:
        low, high = np.maximum(low, fold.cs[0]), np.minimum(high, fold.cs[1])
    low, high = np.maximum.accumulate(low), np.minimum.accumulate(high)

    def look(k: int) -> Look:
        b, c = path.arm_b[:, k], path.arm_c[:, k]
        return Look(
            fold.looks + k, float(b[0]), float(c[0]), float(b[2]), float(c[2]), float(b[1]), float(c[1]),
            float(path.estimate[k]), float(low[k]), float(high[k]),
        )  # fmt: skip

    regression_at, not_worse_at = decisions(
        fold, config, look, path.log_p_regression, path.log_p_not_worse, path.arm_c[0]
    )
    known = [float(w) for w in weights if w is not None and math.isfinite(w)]
    return TokenFold(
        looks=fold.looks + len(intervals),
        dropped=fold.dropped + int(np.count_nonzero(~used)),
        last_weight=known[-1] if known else fold.last_weight,
        state=path.end,
        cs=(float(low[-1]), float(high[-1])),
        regression_at=regression_at,
        not_worse_at=not_worse_at,
        latest=look(len(intervals) - 1),
    )


def conclude(fold: TokenFold, config: TokenConfig) -> TokenResult:
    """The verdict after the intervals folded so far; once reached, a verdict stays."""
    margin = config.null.margin
    at = fold.regression_at or fold.not_worse_at or fold.latest
    p_reg = math.exp(float(fold.state.log_p_regression))
    p_nw = math.exp(float(fold.state.log_p_not_worse))
    if at is None:
        return TokenResult(
            LossVerdict.INSUFFICIENT_DATA, 0.0, 0.0, None, None, 0.0, -13.8155, 13.8155, 1.0, 1.0, margin,
            config.alpha_rollback, 0, f"{NAME}: no intervals yet",
        )  # fmt: skip
    warm = config.null.warmup
    if fold.regression_at is not None:
        verdict = LossVerdict.REGRESSION
        reason = (
            f"{NAME}: canary's NLL per token worse than the baseline's beyond the margin at look "
            f"{at.look + 1} (p = {p_reg:.2g} <= alpha {config.alpha_rollback:.3g})"
        )
    elif fold.not_worse_at is not None:
        verdict = LossVerdict.NOT_WORSE
        reason = (
            f"{NAME}: NLL per token not worse by the margin, shown at look {at.look + 1} (p = {p_nw:.2g})"
        )
    elif min(at.n_b, at.n_c) < warm or at.n_c < max(config.min_requests_before_rollback, 1.0):
        verdict = LossVerdict.INSUFFICIENT_DATA
        reason = f"{NAME}: {at.n_c:.0f} labelled canary requests; each arm needs {warm:.0f} (warm-up) first"
    else:
        verdict, reason = LossVerdict.UNDECIDED, f"{NAME}: undecided (p = {p_reg:.2g})"
    low, high = at.cs_low, at.cs_high
    if low > high:  # crossed bounds: show the end the verdict reads off (docs/judge.md)
        low = high = low if verdict is LossVerdict.REGRESSION else high
    return TokenResult(
        verdict=verdict,
        n_baseline=at.n_b,
        n_canary=at.n_c,
        per_token_baseline=at.nll_b / at.tokens_b if at.tokens_b > 0 else None,
        per_token_canary=at.nll_c / at.tokens_c if at.tokens_c > 0 else None,
        delta=at.estimate,
        cs_low=low,
        cs_high=high,
        p_regression=p_reg,
        p_not_worse=p_nw,
        margin=margin,
        alpha_rollback=config.alpha_rollback,
        looks=fold.looks,
        reason=reason,
    )


def evaluate(intervals: Sequence[TokenInterval], config: TokenConfig) -> TokenResult:
    """The whole history at once (the fold's oracle in tests)."""
    return conclude(advance(TokenFold(), intervals, config), config)


# --- status encoding: plain lists of floats (JSON keeps every float's bits) ---------------------------


class CorruptTokenState(ValueError):
    """Numbers that cannot be the token-loss fold."""


def encode(fold: TokenFold) -> dict[str, list[float]]:
    s = fold.state
    return encode_common(fold, s) | {
        "armB": [float(x) for x in np.asarray(s.arm_b)],
        "armC": [float(x) for x in np.asarray(s.arm_c)],
        "sums": [float(s.info), float(s.wsum), float(s.log_p_regression), float(s.log_p_not_worse)],
    }


def decode(numbers: Mapping[str, Sequence[float]]) -> TokenFold:
    try:
        common, g = decode_common(numbers, Look, TokenStart().reg_a.shape, CorruptTokenState)
        info, wsum, log_p_reg, log_p_nw = (float(x) for x in numbers["sums"])
        arm_b = np.asarray(numbers["armB"], dtype=np.float64)
        arm_c = np.asarray(numbers["armC"], dtype=np.float64)
        if not arm_b.shape == arm_c.shape == (len(ARM_FIELDS),):
            raise CorruptTokenState("wrong number of running sums")
        state = TokenStart(
            arm_b, arm_c, info, wsum, g["reg_a"], g["reg_c"], g["nw_a"], g["nw_c"], log_p_reg, log_p_nw
        )
        return TokenFold(state=state, **common)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise CorruptTokenState(str(err)) from err
