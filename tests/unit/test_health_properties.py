"""Property-based tests of the gradient-health gate (hypothesis)."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lossgate.core.evidence import RankSeries, TrainingRun
from lossgate.core.health import HealthConfig, assess
from lossgate.core.verdicts import HealthVerdict

SMALL = HealthConfig(warmup_steps=5, window=20, min_history=5, recovery_steps=10)
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
series = st.lists(any_float, max_size=80).map(tuple)


@st.composite
def runs(draw: st.DrawFn) -> TrainingRun:
    ranks = tuple(
        RankSeries(
            rank=str(i),
            steps=draw(st.lists(st.floats(-10, 200), max_size=80).map(tuple)),
            loss=draw(series),
            grad_norm=draw(series),
            nonfinite_total=draw(series),
            loss_scale=draw(series),
        )
        for i in range(draw(st.integers(0, 4)))
    )
    return TrainingRun(
        "r",
        ranks,
        draw(st.one_of(st.none(), any_float)),
        draw(st.one_of(st.none(), any_float)),
        draw(st.booleans()),
    )


# A counter near the float maximum once made the non-finite step count overflow (found by hypothesis).
HUGE_COUNTER = TrainingRun(
    run="r",
    ranks=(RankSeries("0", steps=(1.0, 0.0), loss=(), grad_norm=(), nonfinite_total=(2.9e293, 1.797e308)),),
)
# A loss scale at the smallest normal double: its drop below the running median is ~708 in log,
# whose exp overflowed the message's ratio (hypothesis found it in a full run).
TINY_SCALE = TrainingRun(
    run="r",
    ranks=(
        RankSeries(
            "0",
            steps=(6.0, 5.0, 5.0, 5.0, 0.0, 5.0, 0.0, 5.0),
            loss=(),
            grad_norm=(),
            nonfinite_total=(),
            loss_scale=(1.1125369292536007e-308, 1.0, 1.0, 3.0, 0.0, 3.0, 0.0, 3.0),
        ),
    ),
    fp16=True,
)


@settings(max_examples=150, deadline=None)
@given(runs())
@example(HUGE_COUNTER)
@example(TINY_SCALE)
def test_any_input_gives_a_verdict_with_finite_numbers(run: TrainingRun) -> None:
    # Given any series the types allow (NaN, infinities, ragged lengths, unsorted steps)
    # When assessed
    result = assess(run, SMALL)
    # Then there is a verdict, every float is finite, and a verdict other than PASS says why
    assert result.verdict in set(HealthVerdict)
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        if isinstance(value, float):
            assert math.isfinite(value), (field.name, value)
    assert result.verdict is HealthVerdict.PASS or result.reasons


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.5, 2.0), min_size=60, max_size=60),
    st.integers(0, 59),
    st.floats(1.0, 1e6),
)
def test_a_bigger_spike_is_never_judged_more_leniently(values: list[float], at: int, factor: float) -> None:
    # Given a gradient-norm series and the same series with one value multiplied up
    steps = tuple(float(i) for i in range(60))
    loss = tuple(1.0 for _ in steps)

    def run(grad: list[float]) -> TrainingRun:
        return TrainingRun("r", (RankSeries("0", steps, loss, tuple(grad)),))

    bumped = list(values)
    bumped[at] *= factor
    order = {HealthVerdict.PASS: 0, HealthVerdict.WARN: 1, HealthVerdict.FAIL: 2, HealthVerdict.UNKNOWN: -1}
    a, b = assess(run(values), SMALL), assess(run(bumped), SMALL)
    # Then its verdict is no better (UNKNOWN stays UNKNOWN: the history length does not change)
    assert order[b.verdict] >= order[a.verdict]
