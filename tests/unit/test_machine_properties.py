"""decide(): properties over random specs and random observation sequences (hypothesis).

- the canary weight stays in 0..100 and never decreases, except to 0;
- a rollback always yields weight 0 and phase RolledBack;
- Promoted only after the last step below 100 (or a manual promote), always at 100%;
- terminal phases are absorbing until the versions or (after a rollback) the spec change;
- the same inputs always give the same decision, also after the status went through JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from lossgate.core.actions import SetWeight
from lossgate.core.decision import DecisionKind
from lossgate.core.evidence import Weights
from lossgate.core.machine import decide
from lossgate.core.observation import HealthEvidence, LossEvidence, ManualCommand, Observation
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model import HISTORY_LIMIT, TERMINAL_PHASES, ModelRolloutSpec, ModelRolloutStatus, Phase

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    inner = draw(st.lists(st.integers(1, 99), min_size=1, max_size=5, unique=True))
    steps: list[dict[str, Any]] = [{"weight": w} for w in sorted(inner)] + [{"weight": 100}]
    for s in steps[:-1]:
        if draw(st.booleans()):
            s["minSamples"] = draw(st.sampled_from([0, 100, 2000]))
        if draw(st.booleans()):
            s["minDuration"] = draw(st.sampled_from(["0s", "1m", "5m"]))
    defaults: dict[str, Any] = {
        "minSamples": draw(st.sampled_from([0, 500, 1000])),
        "minDuration": draw(st.sampled_from(["0s", "30s", "2m"])),
        "onMaxDuration": draw(st.sampled_from(["Rollback", "Hold", "Advance"])),
    }
    if draw(st.booleans()):
        defaults["maxDuration"] = draw(st.sampled_from(["10m", "1h"]))
    canary: dict[str, Any] = {"version": "v2", "service": "svc-v2", "deployment": "dep-v2"}
    if draw(st.booleans()):
        canary["trainingRun"] = "run-v2"
    return {
        "model": "m",
        "baseline": {"version": "v1", "service": "svc-v1"},
        "canary": canary,
        "trafficRouting": {"gatewayAPI": {"httpRoute": "r"}},
        "steps": steps,
        "stepDefaults": defaults,
        "analysis": {
            "prometheus": {"address": "http://p:9090"},
            "loss": {
                "margin": 0.01,
                "minSamplesBeforeRollback": draw(st.sampled_from([0, 1000])),
                "minSamplesBeforePromotion": draw(st.sampled_from([0, 5000])),
                "promotionPolicy": draw(st.sampled_from(["NoRegression", "RequireNonInferiority"])),
            },
            "gradientHealth": {"requireMetrics": draw(st.booleans())},
            "onMetricsUnavailable": {
                "action": draw(st.sampled_from(["Hold", "Rollback"])),
                "after": draw(st.sampled_from(["0s", "1m", "10m"])),
            },
        },
        "rollback": {"scaleDownCanary": draw(st.booleans())},
    }


@dataclass(frozen=True)
class Tick:
    dt: timedelta
    observation: Observation
    new_canary_version: bool
    toggle_paused: bool


@st.composite
def ticks(draw: st.DrawFn) -> Tick:
    # Mostly a healthy run (so rollouts get far), with every other outcome drawn often enough.
    verdict = draw(st.sampled_from([LossVerdict.UNDECIDED, LossVerdict.NOT_WORSE] * 4 + list(LossVerdict)))
    n = draw(st.sampled_from([0.0, 300.0, 1000.0, 6000.0]))
    loss = LossEvidence(
        verdict,
        n_baseline=draw(st.sampled_from([0.0, 20_000.0])),
        n_canary=n,
        mean_baseline=0.4,
        mean_canary=draw(st.sampled_from([None, 0.39, 0.45])),
        delta=draw(st.floats(-0.1, 0.1)),
        cs_low=draw(st.sampled_from([None, -0.02, float("-inf")])),
        cs_high=0.03,
        samples_needed=draw(st.sampled_from([None, 0, 4000])),
        catastrophic=draw(st.booleans()) and verdict is LossVerdict.REGRESSION,
    )
    health = draw(
        st.sampled_from(
            [HealthEvidence(HealthVerdict.PASS)] * 12 + [None] + [HealthEvidence(v) for v in HealthVerdict]
        )
    )
    canary = draw(st.sampled_from([None, 0, 5, 25, 100]))
    weights = None if canary is None else Weights(100 - canary, canary)
    command = draw(st.sampled_from([None] * 20 + list(ManualCommand)))
    observation = Observation(
        generation=0,  # set by the driver
        loss=draw(st.sampled_from([None, loss, loss])),
        health=health,
        metrics_available=draw(st.sampled_from([True, True, True, False])),
        actual_weights=weights,
        canary_samples_in_step=draw(st.sampled_from([0.0, 600.0, 5000.0])),
        command=command,
        canary_version_seen=draw(st.sampled_from([None, None, "v0"])),
    )
    return Tick(
        dt=draw(
            st.sampled_from([timedelta(0), timedelta(seconds=30), timedelta(minutes=3), timedelta(hours=1)])
        ),
        observation=observation,
        new_canary_version=draw(st.integers(0, 30)) == 0,
        toggle_paused=draw(st.integers(0, 20)) == 0,
    )


def run(raw: dict[str, Any], seq: list[Tick]) -> None:
    spec = ModelRolloutSpec.model_validate(raw)
    status, now, generation, version = ModelRolloutStatus(), T0, 1, 2
    for tick in seq:
        now += tick.dt
        if tick.new_canary_version or tick.toggle_paused:
            generation += 1
            if tick.new_canary_version:
                version += 1
            paused = spec.paused != tick.toggle_paused
            canary = {**raw["canary"], "version": f"v{version}"}
            spec = ModelRolloutSpec.model_validate({**raw, "canary": canary, "paused": paused})
        o = tick.observation
        o = Observation(**{**o.__dict__, "generation": generation})
        d = decide(spec, status, o, now)
        check(spec, status, o, now, d)
        status = d.status


def check(spec: ModelRolloutSpec, prev: ModelRolloutStatus, o: Observation, now: datetime, d: Any) -> None:
    s = d.status
    event(f"{d.kind.value} -> {s.phase.value}")
    last = len(spec.steps) - 1
    # Bounds and consistency.
    assert 0 <= s.canary_weight <= 100
    assert 0 <= s.step_index <= last
    assert len(s.history) <= HISTORY_LIMIT
    assert d.requeue_after >= timedelta(seconds=1)
    for a in d.actions:
        if isinstance(a, SetWeight):
            assert a.canary == s.canary_weight
    # Weights never decrease, except to 0.
    if s.canary_weight < prev.canary_weight:
        assert s.canary_weight == 0, (prev.canary_weight, s.canary_weight, d.kind)
    # A rollback always yields weight 0 and RolledBack; RolledBack and Failed always sit at 0.
    if d.kind is DecisionKind.ROLLBACK:
        assert s.phase is Phase.ROLLED_BACK
        assert s.canary_weight == 0
    if s.phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.PENDING):
        assert s.canary_weight == 0
    # Promoted only after the last step (or on a manual promote), always at 100%.
    if s.phase is Phase.PROMOTED:
        assert s.canary_weight == 100
        assert s.step_index == last
        if prev.phase is not Phase.PROMOTED:
            assert d.kind is DecisionKind.PROMOTE
            at_last_step = prev.started_at is not None and prev.step_index == last - 1
            assert at_last_step or o.command is ManualCommand.PROMOTE
    # Terminal phases are absorbing until the versions, the spec (after RolledBack/Failed) or a retry.
    same_versions = (prev.baseline_version, prev.canary_version) == (
        spec.baseline.version,
        spec.canary.version,
    )
    if prev.phase in TERMINAL_PHASES and same_versions:
        reopen = prev.phase is not Phase.PROMOTED and (
            o.command is ManualCommand.RETRY or prev.observed_generation != o.generation
        )
        if not reopen:
            assert (s.phase, s.canary_weight, s.step_index) == (
                prev.phase,
                prev.canary_weight,
                prev.step_index,
            )
    # Determinism, also from a status that went through the API server as JSON.
    assert decide(spec, prev, o, now) == d
    wire = ModelRolloutStatus.model_validate(prev.to_wire())
    assert decide(spec, wire, o, now) == d
    assert ModelRolloutStatus.model_validate(s.to_wire()) == s


@settings(max_examples=300, deadline=None)
@given(specs(), st.lists(ticks(), min_size=1, max_size=40))
def test_properties_hold_over_random_runs(raw: dict[str, Any], seq: list[Tick]) -> None:
    run(raw, seq)


@settings(max_examples=100, deadline=None)
@given(specs(), st.data())
def test_a_healthy_canary_is_promoted_only_through_every_step(
    raw: dict[str, Any], data: st.DataObject
) -> None:
    """With good evidence and no commands, the rollout visits every step in order, then promotes."""
    spec = ModelRolloutSpec.model_validate(raw)
    health = HealthEvidence(HealthVerdict.PASS)
    good = LossEvidence(
        LossVerdict.NOT_WORSE, n_baseline=1e6, n_canary=1e6, mean_baseline=0.4, mean_canary=0.4
    )
    status, now = ModelRolloutStatus(), T0
    seen: list[int] = []
    for _ in range(200):
        dt = data.draw(st.sampled_from([timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=2)]))
        now += dt
        o = Observation(generation=1, loss=good, health=health, canary_samples_in_step=1e6)
        d = decide(spec, status, o, now)
        status = d.status
        if not seen or seen[-1] != status.canary_weight:
            seen.append(status.canary_weight)
        if status.phase is Phase.PROMOTED:
            break
    assert status.phase is Phase.PROMOTED
    assert seen == [s.weight for s in spec.steps]
