"""The decision to notify comes from decide(): a notice exactly when a decision is recorded in the
status history, with its event and severity; a hold once when it begins, not every tick."""

from __future__ import annotations

from datetime import timedelta

from lossgate.core.decision import DecisionKind
from lossgate.core.machine import decide
from lossgate.core.notify import NoticeEvent, Severity, envelope, subscriptions_of
from lossgate.core.verdicts import LossVerdict
from lossgate.model import Phase
from tests.unit.test_machine_rules import FRESH, T0, at_step, loss, make_spec, obs


def test_start_and_advance_are_info_notices_with_the_numbers() -> None:
    # Given a fresh rollout whose training health passed
    spec = make_spec()
    # When it starts
    d = decide(spec, FRESH, obs(), T0)
    # Then one info notice "start" goes with the recorded history entry
    assert d.kind is DecisionKind.START
    assert [(n.event, n.severity) for n in d.notices] == [(NoticeEvent.START, Severity.INFO)]
    assert d.notices[0].entry == d.status.history[-1]
    # When a step's quota is met with no regression
    d = decide(spec, at_step(spec, 0), obs(canary_samples_in_step=50_000), T0)
    # Then the advance is an info notice carrying the judge's numbers
    assert d.kind is DecisionKind.ADVANCE
    (n,) = d.notices
    assert (n.event, n.severity) == (NoticeEvent.ADVANCE, Severity.INFO)
    assert (n.entry.delta, n.entry.cs_low, n.entry.cs_high, n.entry.n_canary) == (0.003, -0.004, 0.010, 6000)


def test_a_regression_rollback_is_critical_and_a_wait_is_silent() -> None:
    spec = make_spec()
    # Given a rollout on step 1 collecting evidence
    # When the judge has no verdict yet
    d = decide(spec, at_step(spec, 0), obs(canary_samples_in_step=10), T0)
    # Then nothing is news
    assert d.kind is DecisionKind.WAIT
    assert d.notices == ()
    # When the judge sees a regression with enough samples
    bad = loss(LossVerdict.REGRESSION, delta=0.05, cs_low=0.03, cs_high=0.07)
    d = decide(spec, at_step(spec, 0), obs(loss=bad), T0)
    # Then one critical rollback notice
    assert d.kind is DecisionKind.ROLLBACK
    assert [(n.event, n.severity) for n in d.notices] == [(NoticeEvent.ROLLBACK, Severity.CRITICAL)]
    assert d.status.phase is Phase.ROLLED_BACK


def test_a_hold_is_notified_once_and_a_pause_is_info() -> None:
    spec = make_spec()
    # Given metrics that become unavailable on step 1
    held = decide(spec, at_step(spec, 0), obs(metrics_available=False, metrics_problem="down"), T0)
    # Then the hold is a warning, once
    assert held.kind is DecisionKind.HOLD
    assert [(n.event, n.severity) for n in held.notices] == [(NoticeEvent.HOLD, Severity.WARNING)]
    again = decide(
        spec, held.status, obs(metrics_available=False, metrics_problem="down"), T0 + timedelta(seconds=30)
    )
    assert again.kind is DecisionKind.HOLD
    assert again.notices == ()
    # When someone pauses the rollout
    paused = decide(make_spec(paused=True), at_step(spec, 0), obs(), T0)
    # Then the hold is info: nobody has to act
    assert [(n.event, n.severity) for n in paused.notices] == [(NoticeEvent.HOLD, Severity.INFO)]


def test_the_idempotency_key_names_the_rollout_the_decision_time_and_event() -> None:
    spec = make_spec()
    d = decide(spec, FRESH, obs(), T0)
    env = envelope(
        d.notices[0],
        namespace="ml",
        name="fraud",
        uid="u-1",
        model=spec.model,
        versions=("v41", "v42"),
        analysis=d.status.analysis,
        subscriptions=subscriptions_of(" slack, ,audit "),
    )
    assert env.key == f"u-1/{round(T0.timestamp() * 1000)}/start"
    assert env.subscriptions == frozenset({"slack", "audit"})
