"""decide() with a shadow first step (core/shadow.py): weight 0, the mirror on only in shadow, paired
regression rolls back before any user saw the canary, paired non-inferiority moves to the first live step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from lossgate.core.actions import SetMirror, SetWeight
from lossgate.core.decision import DecisionKind
from lossgate.core.evidence import Weights
from lossgate.core.machine import decide
from lossgate.core.observation import HealthEvidence, LossEvidence, ManualCommand, Observation
from lossgate.core.paired_step import PairedEvidence
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase, Reason
from tests.unit.test_machine_rules import BASE, merge

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SHADOW: dict[str, Any] = {
    "steps": [
        {"shadow": {"mirrorPercent": 40}, "minSamples": 500, "minDuration": "5m"},
        {"weight": 5},
        {"weight": 50},
        {"weight": 100},
    ]
}
SPEC = ModelRolloutSpec.model_validate(merge(BASE, SHADOW))
PASS = HealthEvidence(HealthVerdict.PASS)


def paired(verdict: LossVerdict, n: float = 800, delta: float = 0.001) -> PairedEvidence:
    return PairedEvidence(
        verdict, n=n, mean_baseline=0.4, delta=delta, cs_low=-0.01, cs_high=0.012, margin=0.01
    )


def obs(**kw: Any) -> Observation:
    values: dict[str, Any] = {
        "generation": 1,
        "health": PASS,
        "loss": LossEvidence(LossVerdict.INSUFFICIENT_DATA),
        "actual_weights": Weights(100, 0),
        "actual_mirror": 40,
    }
    values.update(kw)
    return Observation(**values)


def in_shadow(since: timedelta = timedelta(minutes=10), **kw: Any) -> ModelRolloutStatus:
    values: dict[str, Any] = dict(
        phase=Phase.PROGRESSING, observed_generation=1, step_index=0, canary_weight=0, mirror_percent=40,
        baseline_version="v41", canary_version="v42", started_at=T0 - since, step_started_at=T0 - since,
    )  # fmt: skip
    values.update(kw)
    return ModelRolloutStatus(**values)


def mirrors(actions: tuple[object, ...]) -> list[int]:
    return [a.percent for a in actions if isinstance(a, SetMirror)]


def test_the_start_of_a_shadow_step_mirrors_and_sends_no_user_to_the_canary() -> None:
    # Given a fresh rollout whose first step is a 40% shadow
    # When it starts
    d = decide(SPEC, ModelRolloutStatus(), obs(actual_mirror=0), T0)
    # Then the canary serves nobody and 40% of the baseline's requests are mirrored to it
    assert d.kind is DecisionKind.START
    assert d.status.canary_weight == 0
    assert d.status.step_index == 0
    assert d.status.mirror_percent == 40
    assert mirrors(d.actions) == [40]
    assert "40% of requests mirrored" in d.status.message


def test_a_paired_regression_rolls_back_in_shadow_and_removes_the_mirror() -> None:
    # Given the shadow step, and the paired test showing a regression
    d = decide(SPEC, in_shadow(), obs(paired=paired(LossVerdict.REGRESSION, delta=0.08)), T0)
    # Then it rolls back at once, names the paired test, and no user ever saw the canary
    assert d.kind is DecisionKind.ROLLBACK
    assert d.reason == Reason.PAIRED_REGRESSION
    assert d.status.phase is Phase.ROLLED_BACK
    assert d.status.canary_weight == 0
    assert d.status.mirror_percent == 0
    assert mirrors(d.actions) == [0]
    assert not any(isinstance(a, SetWeight) and a.canary > 0 for a in d.actions)
    assert "paired d +0.080" in d.status.message
    assert "served no user" in d.status.message
    assert any(e.reason == Reason.PAIRED_REGRESSION for e in d.events)
    assert d.status.paired is not None
    assert d.status.paired.verdict == "Regression"


def test_paired_non_inferiority_with_quotas_met_moves_to_the_first_live_step() -> None:
    # Given the shadow step 10 minutes in, 800 pairs (quota 500), paired non-inferiority
    d = decide(SPEC, in_shadow(), obs(paired=paired(LossVerdict.NOT_WORSE)), T0)
    # Then it advances to step 2 at 5% and removes the mirror
    assert d.kind is DecisionKind.ADVANCE
    assert d.reason == Reason.SHADOW_PASSED
    assert (d.status.step_index, d.status.canary_weight, d.status.mirror_percent) == (1, 5, 0)
    assert d.set_weight == SetWeight(5)
    assert mirrors(d.actions) == [0]
    assert d.status.step_started_at == T0
    assert d.status.paired is not None
    assert d.status.paired.n == 800


def test_the_shadow_quotas_hold_a_paired_verdict() -> None:
    # Given non-inferiority on too few pairs, then too little time
    few = decide(SPEC, in_shadow(), obs(paired=paired(LossVerdict.NOT_WORSE, n=300)), T0)
    early = decide(SPEC, in_shadow(since=timedelta(minutes=2)), obs(paired=paired(LossVerdict.NOT_WORSE)), T0)
    # Then it waits in shadow, saying what is missing
    for d, missing in ((few, "300/500 paired samples"), (early, "2m/5m in step")):
        assert d.kind is DecisionKind.WAIT
        assert d.status.step_index == 0
        assert d.status.canary_weight == 0
        assert missing in d.status.message
        assert mirrors(d.actions) == []  # the mirror is in place already


def test_an_undecided_paired_test_waits_even_with_the_quotas_met() -> None:
    d = decide(SPEC, in_shadow(), obs(paired=paired(LossVerdict.UNDECIDED)), T0)
    assert d.kind is DecisionKind.WAIT
    assert d.reason == Reason.NON_INFERIORITY_NOT_SHOWN
    assert d.status.step_index == 0


def test_max_duration_in_shadow_follows_on_max_duration() -> None:
    # Given the shadow step past its maxDuration with an undecided paired test
    spec = ModelRolloutSpec.model_validate(
        merge(merge(BASE, SHADOW), {"stepDefaults": {"maxDuration": "30m", "onMaxDuration": "Advance"}})
    )
    d = decide(spec, in_shadow(since=timedelta(minutes=31)), obs(paired=paired(LossVerdict.UNDECIDED)), T0)
    # Then Advance moves to the first live step (a timed-out advance, said so)
    assert d.kind is DecisionKind.ADVANCE
    assert d.reason == Reason.STEP_TIMED_OUT
    assert d.status.canary_weight == 5
    # And Rollback (the default) rolls back, still before any user saw the canary
    spec = ModelRolloutSpec.model_validate(
        merge(merge(BASE, SHADOW), {"stepDefaults": {"maxDuration": "30m"}})
    )
    d = decide(spec, in_shadow(since=timedelta(minutes=31)), obs(paired=paired(LossVerdict.UNDECIDED)), T0)
    assert d.kind is DecisionKind.ROLLBACK
    assert "served no user" in d.status.message


def test_a_drifted_mirror_is_written_back() -> None:
    d = decide(SPEC, in_shadow(), obs(actual_mirror=0, paired=paired(LossVerdict.UNDECIDED)), T0)
    assert mirrors(d.actions) == [40]
    assert any(e.reason == Reason.MIRROR_DRIFT for e in d.events)


def test_rollouts_without_a_shadow_step_never_touch_the_mirror() -> None:
    spec = ModelRolloutSpec.model_validate(BASE)
    d = decide(spec, ModelRolloutStatus(), obs(actual_mirror=None), T0)
    assert d.kind is DecisionKind.START
    assert mirrors(d.actions) == []


def test_metrics_unavailable_ignores_a_paired_verdict() -> None:
    bad = obs(paired=paired(LossVerdict.REGRESSION), metrics_available=False, metrics_problem="down")
    d = decide(SPEC, in_shadow(), bad, T0)
    assert d.kind is DecisionKind.HOLD
    assert d.status.phase is Phase.PROGRESSING


# ------------------------------------------------------------------ properties
VERDICTS = st.sampled_from(list(LossVerdict))
COMMANDS = st.sampled_from([None, None, None, ManualCommand.ABORT, ManualCommand.PAUSE, ManualCommand.RESUME])


@seed(20)
@settings(max_examples=200, deadline=None)
@given(
    ticks=st.lists(
        st.tuples(VERDICTS, st.floats(0, 5000), VERDICTS, st.integers(1, 600), COMMANDS),
        min_size=1,
        max_size=25,
    )
)
def test_shadow_invariants_over_random_runs(
    ticks: list[tuple[LossVerdict, float, LossVerdict, int, Any]],
) -> None:
    """Over any sequence of ticks: in the shadow step the canary weight is 0 and the mirror is on;
    outside it (live steps, terminal phases) the mirror is off; the shadow step is left only for a
    rollback, a manual promote/abort, or the first live step on paired non-inferiority with the quotas
    met (or onMaxDuration); a paired regression in shadow always rolls back with weight 0."""
    status, now = ModelRolloutStatus(), T0
    for verdict, pairs, live, seconds, command in ticks:
        before = status
        o = obs(
            paired=paired(verdict, n=pairs),
            loss=LossEvidence(live, n_canary=100),
            actual_weights=Weights(100 - before.canary_weight, before.canary_weight),
            actual_mirror=before.mirror_percent,
            command=command,
        )
        d = decide(SPEC, before, o, now)
        status = d.status
        shadow_now = status.started_at is not None and status.step_index == 0 and not status.terminal
        assert status.mirror_percent == (40 if shadow_now else 0)
        if shadow_now:
            assert status.canary_weight == 0
        was_shadow = before.started_at is not None and before.step_index == 0 and not before.terminal
        if was_shadow and before.phase is Phase.PROGRESSING and status.step_index == 1:
            # left shadow for the first live step: on paired evidence with the quotas met
            assert verdict is LossVerdict.NOT_WORSE
            assert pairs >= 500
            assert before.active_in_step(now) >= timedelta(minutes=5)  # the shadow step's minDuration
            assert status.canary_weight == 5
            assert d.reason == Reason.SHADOW_PASSED
        if was_shadow and verdict is LossVerdict.REGRESSION and command is None and not before.terminal:
            assert status.phase is Phase.ROLLED_BACK
            assert status.canary_weight == 0
        if before.mirror_percent != status.mirror_percent:
            assert mirrors(d.actions) == [status.mirror_percent]
        now += timedelta(seconds=seconds)


def test_a_shadow_step_without_pairs_says_why_while_it_waits() -> None:
    # Given the shadow step and Prometheus with no paired series (the mirror or the joiner not working)
    why = "no paired series at Prometheus: check that the router mirrors requests to the canary"
    p = PairedEvidence(LossVerdict.INSUFFICIENT_DATA, problem=why)
    d = decide(SPEC, in_shadow(), obs(paired=p), T0)
    # Then it waits at weight 0 (never judged on nothing) and the message names the problem
    assert d.kind is DecisionKind.WAIT
    assert d.status.canary_weight == 0
    assert why in d.status.message
