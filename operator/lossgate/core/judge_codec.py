"""The judge's fold as plain lists of numbers, for status (exact: JSON keeps every float's bits)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import astuple, fields
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from lossgate.core.bounded import GRID_LOG_WEIGHTS, Component
from lossgate.core.catastrophic import RATIO_GRID
from lossgate.core.judge import PathStart
from lossgate.core.judge_fold import Crossing, JudgeFold
from lossgate.core.judge_report import LatestLook, ReportedLook
from lossgate.core.stratified import Totals

_TOTALS = tuple(f.name for f in fields(Totals))
_GRID = len(GRID_LOG_WEIGHTS)
_Row = TypeVar("_Row", Crossing, ReportedLook, LatestLook)
FloatArray = NDArray[np.float64]


class CorruptState(ValueError):
    """Numbers that cannot be a fold of this judge (another version's, or edited by hand)."""


def encode(fold: JudgeFold) -> dict[str, list[float]]:
    p = fold.path
    out: dict[str, list[float]] = {
        "counts": [float(fold.looks), float(fold.dropped)],
        "lastWeight": _opt(fold.last_weight),
        "lastShare": _opt(fold.last_share),
        "totals": [float(getattr(p.totals, name)) for name in _TOTALS],
        "regression": _components(p.regression),
        "notWorse": _components(p.not_worse),
        "tailLLR": [] if p.tail_llr is None else [float(x) for x in p.tail_llr],
        "logP": [float(p.log_p_regression), float(p.log_p_not_worse), float(p.log_p_catastrophic)],
        "cs": [float(fold.cs[0]), float(fold.cs[1])],
        "regressionCrossed": [] if fold.regression_crossed is None else _row(fold.regression_crossed),
        "notWorseCrossed": [] if fold.not_worse_crossed is None else _row(fold.not_worse_crossed),
        "regressionAt": [] if fold.regression_at is None else _row(fold.regression_at),
        "notWorseAt": [] if fold.not_worse_at is None else _row(fold.not_worse_at),
        "latestAt": [] if fold.latest_at is None else _row(fold.latest_at),
        "latest": [] if fold.latest is None else _row(fold.latest),
    }
    return out


def decode(numbers: Mapping[str, Sequence[float]]) -> JudgeFold:
    """The fold `encode` wrote; CorruptState when the numbers do not fit this judge."""
    try:
        looks, dropped = (int(x) for x in numbers["counts"])
        totals = numbers["totals"]
        tail = list(numbers["tailLLR"])
        if len(totals) != len(_TOTALS) or len(tail) not in (0, len(RATIO_GRID)):
            raise CorruptState("wrong number of running sums")
        log_p = numbers["logP"]
        path = PathStart(
            totals=Totals(*(float(x) for x in totals)),
            regression=_decode_components(numbers["regression"]),
            not_worse=_decode_components(numbers["notWorse"]),
            tail_llr=None if not tail else _array(tail),
            log_p_regression=float(log_p[0]),
            log_p_not_worse=float(log_p[1]),
            log_p_catastrophic=float(log_p[2]),
        )
        low, high = numbers["cs"]
        fold = JudgeFold(
            looks=looks,
            dropped=dropped,
            last_weight=_from_opt(numbers["lastWeight"]),
            last_share=_from_opt(numbers["lastShare"]),
            path=path,
            cs=(float(low), float(high)),
            regression_crossed=_decode_row(Crossing, numbers["regressionCrossed"]),
            not_worse_crossed=_decode_row(Crossing, numbers["notWorseCrossed"]),
            regression_at=_decode_row(ReportedLook, numbers["regressionAt"]),
            not_worse_at=_decode_row(ReportedLook, numbers["notWorseAt"]),
            latest_at=_decode_row(ReportedLook, numbers["latestAt"]),
            latest=_decode_row(LatestLook, numbers["latest"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptState(str(err)) from err
    if not all(math.isfinite(float(x)) for row in numbers.values() for x in row):
        raise CorruptState("non-finite number")
    return fold


def _opt(x: float | None) -> list[float]:
    return [] if x is None else [float(x)]


def _from_opt(row: Sequence[float]) -> float | None:
    return float(row[0]) if row else None


def _components(parts: tuple[Component, ...] | None) -> list[float]:
    if parts is None:
        return []
    return [float(p.a) for p in parts] + [float(p.c) for p in parts]


def _decode_components(row: Sequence[float]) -> tuple[Component, ...] | None:
    if not row:
        return None
    if len(row) != 2 * _GRID:
        raise CorruptState(f"{len(row)} component sums, expected {2 * _GRID}")
    return tuple(Component(w, _array(row[g]), _array(row[_GRID + g])) for g, w in enumerate(GRID_LOG_WEIGHTS))


def _row(obj: Crossing | ReportedLook | LatestLook) -> list[float]:
    return [float(x) for x in astuple(obj)]


def _decode_row(cls: type[_Row], row: Sequence[float]) -> _Row | None:
    if not row:
        return None
    kinds = [str(f.type) for f in fields(cls)]
    if len(row) != len(kinds):
        raise CorruptState(f"{cls.__name__}: {len(row)} numbers, expected {len(kinds)}")
    values: list[Any] = [_typed(k, x) for k, x in zip(kinds, row, strict=True)]
    return cls(*values)


def _typed(kind: str, x: float) -> float | int | bool:
    if kind == "int":
        return int(x)
    if kind == "bool":
        return bool(x)
    return float(x)


def _array(values: Sequence[float] | float) -> FloatArray:
    return np.asarray(values, dtype=np.float64)
