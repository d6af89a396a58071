"""What the sequential folds (guardrail checks, token loss) share: the looks at which a decision was
first reached, and their status encoding as plain lists of floats, which JSON keeps bit for bit. The
fields every such fold has (looks, dropped, last weight, running bounds, the looks that decided) are
handled here once; each fold adds its own running sums."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Protocol, TypeVar

import numpy as np

L = TypeVar("L")

GRIDS = ("reg_a", "reg_c", "nw_a", "nw_c")


class SequentialFold(Protocol):
    @property
    def looks(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def last_weight(self) -> float | None: ...
    @property
    def cs(self) -> tuple[float, float] | None: ...
    @property
    def regression_at(self) -> Any: ...
    @property
    def not_worse_at(self) -> Any: ...
    @property
    def latest(self) -> Any: ...


class Thresholds(Protocol):
    @property
    def alpha_rollback(self) -> float: ...
    @property
    def alpha_promote(self) -> float: ...
    @property
    def min_requests_before_rollback(self) -> float: ...
    @property
    def min_requests_before_promote(self) -> float: ...


def decisions(
    fold: SequentialFold,
    config: Thresholds,
    look: Callable[[int], L],
    log_p_regression: np.ndarray,
    log_p_not_worse: np.ndarray,
    n_canary: np.ndarray,
) -> tuple[L | None, L | None]:
    """(regression_at, not_worse_at) after this batch of looks: a decision, once reached, stays, and a
    regression found first rules out not-worse."""
    regression = (log_p_regression <= math.log(config.alpha_rollback)) & (
        n_canary >= config.min_requests_before_rollback
    )
    not_worse = (log_p_not_worse <= math.log(config.alpha_promote)) & (
        n_canary >= config.min_requests_before_promote
    )
    regression_at = fold.regression_at
    if regression_at is None and bool(regression.any()):
        regression_at = look(int(np.argmax(regression)))
    not_worse_at = fold.not_worse_at
    if not_worse_at is None and regression_at is None and bool(not_worse.any()):
        not_worse_at = look(int(np.argmax(not_worse)))
    return regression_at, not_worse_at


def encode_common(fold: SequentialFold, state: object) -> dict[str, list[float]]:
    """The common fields, and the state's grids (the four mixture-boundary grids)."""
    out = {
        "counts": [float(fold.looks), float(fold.dropped)],
        "lastWeight": [] if fold.last_weight is None else [float(fold.last_weight)],
        "cs": [] if fold.cs is None else [fold.cs[0], fold.cs[1]],
        "regressionAt": _look(fold.regression_at),
        "notWorseAt": _look(fold.not_worse_at),
        "latest": _look(fold.latest),
    }
    for name in GRIDS:
        out[name] = [float(x) for x in np.asarray(getattr(state, name))]
    return out


def decode_common(
    numbers: Mapping[str, Sequence[float]], look: type[L], shape: tuple[int, ...], error: type[Exception]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(the common fields as keyword arguments of the fold, its grids); raises `error` on wrong sizes.
    KeyError, ValueError, TypeError and IndexError are the caller's to turn into `error`."""
    looks, dropped = (int(x) for x in numbers["counts"])
    grids = {name: np.asarray(numbers[name], dtype=np.float64) for name in GRIDS}
    if any(g.shape != shape for g in grids.values()):
        raise error("wrong number of running sums")
    cs = [float(x) for x in numbers["cs"]]
    weight = [float(x) for x in numbers["lastWeight"]]
    common = {
        "looks": looks,
        "dropped": dropped,
        "last_weight": weight[0] if weight else None,
        "cs": (cs[0], cs[1]) if cs else None,
        "regression_at": _unlook(numbers["regressionAt"], look, error),
        "not_worse_at": _unlook(numbers["notWorseAt"], look, error),
        "latest": _unlook(numbers["latest"], look, error),
    }
    return common, grids


def _look(at: Any) -> list[float]:
    return [] if at is None else [float(getattr(at, f.name)) for f in fields(at)]


def _unlook(xs: Sequence[float], look: type[L], error: type[Exception]) -> L | None:
    if not xs:
        return None
    if len(xs) != len(fields(look)):  # type: ignore[arg-type]
        raise error("wrong look length")
    return look(int(xs[0]), *(float(x) for x in xs[1:]))  # type: ignore[call-arg]
