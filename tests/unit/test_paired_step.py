"""The shadow step's paired judgement (core/paired_step.py): the fold kept in status continues bit for
bit in any chunking of ticks, a state that is not ours is rebuilt, and only a running shadow step reads."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from lossgate.adapters.spec_refs import judge_config
from lossgate.core.evidence import Problem
from lossgate.core.paired import PairedStats
from lossgate.core.paired_step import decode, encode, judge_paired, plan_paired_read
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase
from lossgate.model.status import PairedState
from tests.unit.test_machine_rules import BASE, merge

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SPEC = ModelRolloutSpec.model_validate(
    merge(BASE, {"steps": [{"shadow": {"mirrorPercent": 25}}, {"weight": 5}, {"weight": 100}]})
)
CONFIG = judge_config(SPEC)
INTERVAL = SPEC.analysis.interval


def running(state: PairedState | None = None, **kw: object) -> ModelRolloutStatus:
    values: dict[str, object] = dict(
        phase=Phase.PROGRESSING, step_index=0, canary_weight=0, started_at=T0, step_started_at=T0,
        paired_state=state,
    )  # fmt: skip
    values.update(kw)
    return ModelRolloutStatus.model_validate(ModelRolloutStatus(**values).to_wire())  # type: ignore[arg-type]


INTERVALS = st.lists(
    st.builds(
        lambda n, d, spread: PairedStats(n=n, sum=n * d, sumsq=n * (d * d + spread), sum_baseline=n * 0.4),
        st.integers(0, 400).map(float),
        st.floats(-0.3, 0.3),
        st.floats(0.0, 0.2),
    ),
    min_size=1,
    max_size=30,
)


@seed(2020)
@settings(max_examples=60, deadline=None)
@given(intervals=INTERVALS, cuts=st.lists(st.integers(0, 30), max_size=6))
def test_the_fold_in_status_continues_bit_for_bit_in_any_chunking(
    intervals: list[PairedStats], cuts: list[int]
) -> None:
    # Given the same intervals judged in one tick, and over several ticks with the state through JSON
    alpha = CONFIG.alpha_rollback
    plan = plan_paired_read(SPEC, running(), CONFIG, "series")
    one, one_state, _ = judge_paired(plan, intervals, CONFIG, alpha)
    bounds = sorted({0, len(intervals), *(c for c in cuts if c <= len(intervals))})
    status, last = running(), None
    for a, b in itertools.pairwise(bounds):
        plan = plan_paired_read(SPEC, status, CONFIG, "series")
        assert plan is not None
        assert plan.start == T0 + INTERVAL * a  # each tick reads only what closed since the last
        last, state, _ = judge_paired(plan, intervals[a:b], CONFIG, alpha)
        status = running(PairedState.model_validate(json.loads(json.dumps(state.to_wire() if state else {}))))
    # Then the state and the evidence (verdict, numbers) are identical
    assert status.paired_state == one_state
    assert last == one


def test_encode_decode_is_exact() -> None:
    plan = plan_paired_read(SPEC, running(), CONFIG, "series")
    x = [PairedStats(n=300, sum=3.0, sumsq=4.0, sum_baseline=120.0)] * 5
    _, state, _ = judge_paired(plan, x, CONFIG, CONFIG.alpha_rollback)
    assert state is not None
    fold = decode(state.numbers)
    assert fold is not None
    assert encode(fold) == state.numbers
    assert np.array_equal(fold.start.nw_a, decode(encode(fold)).start.nw_a)  # type: ignore[union-attr]


def test_a_state_that_is_not_ours_is_rebuilt_from_the_step_start() -> None:
    plan = plan_paired_read(SPEC, running(), CONFIG, "series")
    _, state, _ = judge_paired(plan, [PairedStats(300, 3.0, 4.0, 120.0)] * 3, CONFIG, CONFIG.alpha_rollback)
    assert state is not None
    broken = state.model_copy(update={"numbers": {"counts": [3.0]}})
    other = state.model_copy(update={"fingerprint": "another"})
    for bad in (broken, other):
        again = plan_paired_read(SPEC, running(bad), CONFIG, "series")
        assert again is not None
        assert again.start == T0
        assert again.fold.looks == 0


def test_only_a_running_shadow_step_is_judged_on_pairs() -> None:
    live = running(step_index=1, canary_weight=5)
    done = running(phase=Phase.ROLLED_BACK)
    no_shadow = ModelRolloutSpec.model_validate(BASE)
    assert plan_paired_read(SPEC, live, CONFIG, "s") is None
    assert plan_paired_read(SPEC, done, CONFIG, "s") is None
    assert plan_paired_read(no_shadow, running(), CONFIG, "s") is None
    assert plan_paired_read(SPEC, running(started_at=None), CONFIG, "s") is None
    assert plan_paired_read(SPEC, running(), CONFIG, "s") is not None
    assert timedelta(0) < INTERVAL


def test_a_read_without_pairs_keeps_the_fold_and_carries_the_problem() -> None:
    plan = plan_paired_read(SPEC, running(), CONFIG, "series")
    ev, state, problem = judge_paired(plan, Problem("NoData", "no paired series"), CONFIG, 0.01)
    assert problem is not None
    assert ev is not None
    assert ev.problem == "no paired series"
    assert state is not None
    assert state.looks == 0
