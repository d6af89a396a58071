"""decide() with spec.postPromotion: properties over random specs and observation sequences (hypothesis).

- Watching always sits at 100 - holdbackWeight at the last step, with status.watch set;
- it is entered only by a promotion, and left only to Promoted at 100% (the window passed, a manual
  promote, postPromotion removed), to RolledBack at 0% (a regression with a holdback, or an abort),
  or to Pending at 0% (a new canary version);
- without a holdback nothing but an abort rolls back in the watch;
- the weight never decreases except to 0; decisions are deterministic, also through JSON.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.machine import decide
from lossgate.core.observation import ManualCommand, Observation
from lossgate.core.watch_ref import LateSums
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase, Reason
from tests.unit.test_machine_properties import T0, Tick, specs, ticks
from tests.unit.test_machine_rules import loss


@st.composite
def watched_specs(draw: st.DrawFn) -> dict[str, Any]:
    raw = draw(specs())
    h = draw(st.integers(0, 5))
    live = [s for s in raw["steps"][:-1] if s["weight"] <= 100 - h] or [{"weight": 1}]
    raw["steps"] = [*live, raw["steps"][-1]]
    raw["postPromotion"] = {"holdbackWeight": h, "window": draw(st.sampled_from(["1m", "10m", "1h"]))}
    return raw


@st.composite
def watch_ticks(draw: st.DrawFn) -> Tick:
    t = draw(ticks())
    if draw(st.booleans()):
        n = draw(st.sampled_from([0.0, 100.0, 5000.0]))
        mean = draw(st.sampled_from([0.1, 0.4, 2.0]))
        late = LateSums(
            n=n, sum=n * mean, sumsq=n * (mean * mean + 0.1), through_ms=draw(st.integers(0, 10**13))
        )
        t = replace(t, observation=replace(t.observation, late=late))
    return t


def run(raw: dict[str, Any], seq: list[Tick]) -> None:
    spec = ModelRolloutSpec.model_validate(raw)
    status, now, generation, version = ModelRolloutStatus(), T0, 1, 2
    for tick in seq:
        now += tick.dt
        if tick.new_canary_version or tick.toggle_paused:
            generation += 1
            version += 1 if tick.new_canary_version else 0
            canary = {**raw["canary"], "version": f"v{version}"}
            spec = ModelRolloutSpec.model_validate(
                {**raw, "canary": canary, "paused": spec.paused != tick.toggle_paused}
            )
        o = replace(tick.observation, generation=generation)
        d = decide(spec, status, o, now)
        check(spec, status, o, now, d)
        status = d.status


def check(
    spec: ModelRolloutSpec, prev: ModelRolloutStatus, o: Observation, now: datetime, d: Decision
) -> None:
    s = d.status
    event(f"{prev.phase.value} -> {s.phase.value}")
    assert 0 <= s.canary_weight <= 100
    if s.canary_weight < prev.canary_weight:
        assert s.canary_weight == 0, (prev.canary_weight, s.canary_weight, d.kind, d.reason)
    if s.phase is Phase.WATCHING:
        assert s.watch is not None
        assert s.canary_weight == 100 - s.watch.holdback_weight
        assert s.step_index == len(spec.steps) - 1
        if prev.phase is not Phase.WATCHING:
            assert d.kind is DecisionKind.PROMOTE
    if s.phase is Phase.PROMOTED:
        assert s.canary_weight == 100
    if prev.phase is Phase.WATCHING and s.phase is not Phase.WATCHING:
        assert prev.watch is not None
        if s.phase is Phase.PROMOTED:
            assert d.kind is DecisionKind.ADVANCE
            ended = now >= prev.watch.started_at + spec.post_promotion.window if spec.post_promotion else True
            assert ended or o.command is ManualCommand.PROMOTE
        elif s.phase is Phase.ROLLED_BACK:
            assert s.canary_weight == 0
            if prev.watch.holdback_weight == 0:
                assert d.reason == Reason.ABORTED
            else:
                assert d.reason in (Reason.ABORTED, Reason.POST_PROMOTION_REGRESSION)
        else:
            assert d.kind is DecisionKind.RESTART
            assert s.canary_weight == 0
    # Determinism, also from a status that went through the API server as JSON.
    assert decide(spec, prev, o, now) == d
    assert decide(spec, ModelRolloutStatus.model_validate(prev.to_wire()), o, now) == d
    assert ModelRolloutStatus.model_validate(s.to_wire()) == s


@settings(max_examples=300, deadline=None, derandomize=True)
@given(watched_specs(), st.lists(watch_ticks(), min_size=1, max_size=40))
def test_watch_properties_hold_over_random_runs(raw: dict[str, Any], seq: list[Tick]) -> None:
    run(raw, seq)


def test_the_window_bounds_the_watch() -> None:
    # Given a clean watch of 1m, When ticks pass the window with metrics available, Then it is Promoted
    raw = {
        "model": "m",
        "baseline": {"version": "v1", "service": "a"},
        "canary": {"version": "v2", "service": "b"},
        "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        "steps": [{"weight": 10}, {"weight": 100}],
        "stepDefaults": {"minSamples": 0, "minDuration": "0s"},
        "analysis": {
            "prometheus": {"address": "http://p:9090"},
            "loss": {"margin": 0.01, "minSamplesBeforePromotion": 0},
        },
        "postPromotion": {"holdbackWeight": 2, "window": "1m"},
    }
    spec = ModelRolloutSpec.model_validate(raw)
    status, now = ModelRolloutStatus(), T0
    phases = []
    for _ in range(6):
        d = decide(spec, status, Observation(generation=1, loss=loss(), canary_samples_in_step=100), now)
        status, now = d.status, now + timedelta(seconds=30)
        phases.append((status.phase.value, status.canary_weight))
    assert phases == [
        ("Progressing", 10),
        ("Watching", 98),
        ("Watching", 98),
        ("Promoted", 100),
        ("Promoted", 100),
        ("Promoted", 100),
    ]
