"""decide() in the post-promotion watch (spec.postPromotion; docs/api.md, "Post-promotion watch")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from lossgate.core.actions import EventType, SetWeight
from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.evidence import Weights
from lossgate.core.machine import decide
from lossgate.core.notify import NoticeEvent, Severity
from lossgate.core.observation import ManualCommand
from lossgate.core.verdicts import LossVerdict
from lossgate.core.watch_ref import LateSums
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase, Reason
from lossgate.model.conditions import ConditionType, get_condition
from tests.unit.test_machine_rules import T0, at_step, loss, make_spec, obs

WINDOW = timedelta(hours=24)


def watched(holdback: int = 5, **over: Any) -> ModelRolloutSpec:
    return make_spec(postPromotion={"holdbackWeight": holdback, "window": "24h"}, **over)


def promoted(spec: ModelRolloutSpec, **kw: Any) -> Decision:
    """The tick that leaves the last step below 100: quotas met, no regression."""
    prev = at_step(spec, 2)
    return decide(spec, prev, obs(actual_weights=Weights(50, 50), **kw), T0)


def cond(status: ModelRolloutStatus, t: ConditionType) -> tuple[str, str] | None:
    c = get_condition(status.conditions, t)
    return None if c is None else (c.status.value, c.reason)


def test_without_post_promotion_the_promotion_ends_the_rollout_as_before() -> None:
    # Given no spec.postPromotion; When the last step is left
    d = promoted(make_spec())
    # Then: Promoted at 100%, no watch in status, no watch condition
    assert (d.status.phase, d.status.canary_weight, d.status.watch) == (Phase.PROMOTED, 100, None)
    assert cond(d.status, ConditionType.POST_PROMOTION_WATCH) is None


def test_the_promotion_starts_the_watch_with_the_holdback() -> None:
    # Given postPromotion {holdbackWeight: 5, window: 24h}; When the canary is promoted
    d = promoted(watched())
    s = d.status
    # Then the phase is Watching, the router gets 95/5, and the watch ends 24h later
    assert (s.phase, s.canary_weight, s.step_index) == (Phase.WATCHING, 95, 3)
    assert d.set_weight == SetWeight(95)
    assert s.watch is not None
    assert (s.watch.mode, s.watch.holdback_weight, s.watch.ends_at) == ("Holdback", 5, T0 + WINDOW)
    # And the split is a new stratum for the judge (its weight timeline)
    assert (s.step_starts[-1].at, s.step_starts[-1].weight) == (T0, 95)
    # And the Promoted condition is True now; the watch condition Unknown; a promote notification
    assert cond(s, ConditionType.PROMOTED) == ("True", Reason.PROMOTED_NO_REGRESSION)
    assert cond(s, ConditionType.POST_PROMOTION_WATCH) == ("Unknown", Reason.WATCH_STARTED)
    assert cond(s, ConditionType.PROGRESSING)[0] == "False"  # type: ignore[index]
    assert [n.event for n in d.notices] == [NoticeEvent.PROMOTE]
    assert "to 95%" in s.message
    assert "the baseline keeps 5%" in s.message
    # And it looks again at the analysis interval
    assert d.requeue_after == spec_interval(watched())


def spec_interval(spec: ModelRolloutSpec) -> timedelta:
    return spec.analysis.interval


def test_a_late_regression_rolls_back_to_the_baseline_with_event_condition_and_notice() -> None:
    # Given a rollout in the watch (95/5)
    spec = watched()
    s = promoted(spec).status
    # When labels arriving in the watch make the judge find a regression
    d = decide(
        spec, s, obs(loss=loss(LossVerdict.REGRESSION, delta=0.05, cs_low=0.02)), T0 + timedelta(hours=2)
    )
    st = d.status
    # Then it rolls back: weight 0 (the router sends everything to the baseline), RolledBack
    assert (st.phase, st.canary_weight, d.kind) == (Phase.ROLLED_BACK, 0, DecisionKind.ROLLBACK)
    assert d.set_weight == SetWeight(0)
    assert d.reason == Reason.POST_PROMOTION_REGRESSION
    # And a Warning Event, the conditions, a critical rollback notification
    ev = [e for e in d.events if e.reason == Reason.POST_PROMOTION_REGRESSION]
    assert len(ev) == 1
    assert ev[0].type is EventType.WARNING
    assert "post-promotion watch" in ev[0].message
    assert cond(st, ConditionType.ROLLED_BACK) == ("True", Reason.POST_PROMOTION_REGRESSION)
    assert cond(st, ConditionType.PROMOTED) == ("False", Reason.PROMOTION_REVERTED)
    assert cond(st, ConditionType.POST_PROMOTION_WATCH) == ("False", Reason.POST_PROMOTION_REGRESSION)
    assert [(n.event, n.severity) for n in d.notices] == [(NoticeEvent.ROLLBACK, Severity.CRITICAL)]
    assert st.watch is not None
    assert st.watch.finding == "Regression"


def test_a_check_regression_in_the_watch_rolls_back_too() -> None:
    from lossgate.model.status import CheckStatus

    spec = watched()
    s = promoted(spec).status
    bad = CheckStatus(name="class:7", kind="classLoss", verdict="Regression", reason="class 7: worse")
    d = decide(spec, s, obs(checks=(bad,)), T0 + timedelta(minutes=5))
    assert (d.status.phase, d.status.canary_weight) == (Phase.ROLLED_BACK, 0)
    assert "classLoss check class:7" in d.status.message


def test_the_window_passing_clean_removes_the_holdback() -> None:
    # Given a rollout in the watch
    spec = watched()
    s = promoted(spec).status
    # When ticks before the window's end see no regression, the watch holds 95/5
    d = decide(spec, s, obs(actual_weights=Weights(5, 95)), T0 + timedelta(hours=23))
    assert (d.status.phase, d.status.canary_weight, d.set_weight) == (Phase.WATCHING, 95, None)
    assert d.requeue_after <= spec.analysis.interval
    # And the requeue does not overshoot the end of the window
    d2 = decide(spec, d.status, obs(), T0 + WINDOW - timedelta(seconds=10))
    assert d2.requeue_after == timedelta(seconds=10)
    # When the window has passed
    d3 = decide(spec, d2.status, obs(), T0 + WINDOW)
    # Then 100% canary, phase Promoted, WatchPassed; an advance notice, not a second promote
    assert (d3.status.phase, d3.status.canary_weight) == (Phase.PROMOTED, 100)
    assert d3.set_weight == SetWeight(100)
    assert (d3.kind, d3.reason) == (DecisionKind.ADVANCE, Reason.WATCH_PASSED)
    assert cond(d3.status, ConditionType.POST_PROMOTION_WATCH) == ("True", Reason.WATCH_PASSED)
    assert cond(d3.status, ConditionType.PROMOTED) == ("True", Reason.PROMOTED_NO_REGRESSION)
    assert [n.event for n in d3.notices] == [NoticeEvent.ADVANCE]
    # And Promoted is absorbing again
    d4 = decide(spec, d3.status, obs(loss=loss(LossVerdict.REGRESSION)), T0 + WINDOW + timedelta(hours=1))
    assert (d4.status.phase, d4.status.canary_weight, d4.kind) == (Phase.PROMOTED, 100, DecisionKind.IDLE)


def test_the_watch_does_not_end_blind_or_while_paused() -> None:
    spec = watched()
    s = promoted(spec).status
    late = T0 + WINDOW + timedelta(minutes=1)
    # Given the window has passed, When metrics are unavailable, Then it keeps watching (no rollback)
    d = decide(spec, s, obs(metrics_available=False, metrics_problem="down"), late)
    assert (d.status.phase, d.status.canary_weight) == (Phase.WATCHING, 95)
    assert "metrics unavailable" in d.status.message
    # When paused by the annotation, Then it keeps watching; resumed, it ends
    d = decide(spec, d.status, obs(command=ManualCommand.PAUSE), late)
    assert (d.status.phase, d.status.manually_paused) == (Phase.WATCHING, True)
    d = decide(spec, d.status, obs(command=ManualCommand.RESUME), late)
    assert (d.status.phase, d.status.canary_weight) == (Phase.PROMOTED, 100)


def test_commands_and_edits_in_the_watch() -> None:
    spec = watched()
    s = promoted(spec).status
    t = T0 + timedelta(hours=1)
    # abort rolls back to the baseline
    d = decide(spec, s, obs(command=ManualCommand.ABORT), t)
    assert (d.status.phase, d.status.canary_weight, d.reason) == (Phase.ROLLED_BACK, 0, Reason.ABORTED)
    # promote ends the watch now
    d = decide(spec, s, obs(command=ManualCommand.PROMOTE), t)
    assert (d.status.phase, d.status.canary_weight, d.reason) == (
        Phase.PROMOTED,
        100,
        Reason.WATCH_ENDED_MANUALLY,
    )
    # removing spec.postPromotion ends the watch
    d = decide(make_spec(), s, obs(generation=2), t)
    assert (d.status.phase, d.status.canary_weight, d.reason) == (Phase.PROMOTED, 100, Reason.WATCH_ENDED)
    # a shorter window applies at once (from the promotion)
    d = decide(make_spec(postPromotion={"holdbackWeight": 5, "window": "30m"}), s, obs(generation=2), t)
    assert (d.status.phase, d.reason) == (Phase.PROMOTED, Reason.WATCH_PASSED)
    # a new canary version restarts from step 1 (weight 0), and the watch is cleared
    d = decide(watched(canary={"version": "v43"}), s, obs(generation=2), t)
    assert (d.status.phase, d.status.canary_weight, d.status.watch) == (Phase.PENDING, 0, None)


def test_without_a_holdback_a_late_regression_only_warns() -> None:
    # Given holdbackWeight 0: the canary has 100% in the watch, the baseline's last level the reference
    spec = watched(holdback=0)
    d = promoted(spec, loss=loss(mean_baseline=0.409, margin=0.01))
    s = d.status
    assert (s.phase, s.canary_weight) == (Phase.WATCHING, 100)
    assert s.watch is not None
    assert (s.watch.mode, s.watch.reference_mean, s.watch.margin) == ("WarnOnly", 0.409, 0.01)
    # When the watch's canary labels sit at the reference: no warning
    ok = LateSums(n=2000, sum=2000 * 0.41, sumsq=2000 * (0.41**2 + 0.3**2), through_ms=1)
    d = decide(spec, s, obs(late=ok), T0 + timedelta(minutes=10))
    assert d.status.watch is not None
    assert d.status.watch.finding == ""
    assert d.status.watch.n == 2000
    assert d.status.watch.p_regression == 1.0
    # When later labels show the promoted model well above it (0.6 nats over 3000 more labels)
    bad = LateSums(n=3000, sum=3000 * 0.6, sumsq=3000 * (0.6**2 + 0.3**2), through_ms=2)
    d = decide(spec, d.status, obs(late=bad, actual_weights=Weights(0, 100)), T0 + timedelta(minutes=20))
    st = d.status
    # Then it warns (Event once, condition False) and rolls nothing back
    assert (st.phase, st.canary_weight, d.set_weight) == (Phase.WATCHING, 100, None)
    assert st.watch is not None
    assert st.watch.finding == "Warned"
    assert st.watch.counted_through_ms == 2
    warn = [e for e in d.events if e.reason == Reason.POST_PROMOTION_WARNING]
    assert len(warn) == 1
    assert warn[0].type is EventType.WARNING
    assert cond(st, ConditionType.POST_PROMOTION_WATCH) == ("False", Reason.POST_PROMOTION_WARNING)
    assert st.watch.p_regression is not None
    assert st.watch.p_regression < 1e-6
    # And the warning is not repeated; even a two-sample regression does not roll back without a holdback
    d = decide(spec, st, obs(loss=loss(LossVerdict.REGRESSION)), T0 + timedelta(minutes=30))
    assert (d.status.phase, d.status.canary_weight) == (Phase.WATCHING, 100)
    assert not [e for e in d.events if e.reason == Reason.POST_PROMOTION_WARNING]
    # And at the window's end it is Promoted, the warning kept on the condition
    d = decide(spec, d.status, obs(), T0 + WINDOW)
    assert (d.status.phase, d.status.canary_weight) == (Phase.PROMOTED, 100)
    assert cond(d.status, ConditionType.POST_PROMOTION_WATCH) == ("False", Reason.POST_PROMOTION_WARNING)


def test_a_manual_promote_before_the_start_also_watches() -> None:
    spec = watched(holdback=3)
    d = decide(spec, ModelRolloutStatus(), obs(command=ManualCommand.PROMOTE), T0)
    assert (d.status.phase, d.status.canary_weight) == (Phase.WATCHING, 97)
    assert [(s.at, s.weight) for s in d.status.step_starts] == [(T0, 97)]
