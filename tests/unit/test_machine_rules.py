"""decide(): one table-driven case per rule (docs/api.md, "State machine")."""

# ruff: noqa: E501  (the case table reads best one case per line)

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lossgate.core.actions import EmitEvent, EventType, ScaleCanary, SetWeight
from lossgate.core.decision import Decision, DecisionKind
from lossgate.core.evidence import Weights
from lossgate.core.machine import decide
from lossgate.core.observation import HealthEvidence, LossEvidence, ManualCommand, Observation
from lossgate.core.verdicts import HealthVerdict, LossVerdict
from lossgate.model import ModelRolloutSpec, ModelRolloutStatus, Phase, Reason

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BASE: dict[str, Any] = {
    "model": "fraud-scorer",
    "baseline": {"version": "v41", "service": "fraud-scorer-v41"},
    "canary": {
        "version": "v42",
        "service": "fraud-scorer-v42",
        "deployment": "fraud-v42",
        "trainingRun": "r42",
    },
    "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud-scorer"}},
    "steps": [{"weight": 5}, {"weight": 25}, {"weight": 50}, {"weight": 100}],
    "analysis": {"prometheus": {"address": "http://prometheus:9090"}, "loss": {"margin": 0.01}},
}
PASS = HealthEvidence(HealthVerdict.PASS)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_spec(**over: Any) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate(merge(BASE, over))


def loss(verdict: LossVerdict = LossVerdict.UNDECIDED, n: float = 6000, **kw: Any) -> LossEvidence:
    values: dict[str, Any] = dict(
        n_baseline=50_000, n_canary=n, mean_baseline=0.409, mean_canary=0.412, delta=0.003,
        cs_low=-0.004, cs_high=0.010, cs_level=0.95, margin=0.01,
    )  # fmt: skip
    values.update(kw)
    return LossEvidence(verdict, **values)


def obs(**kw: Any) -> Observation:
    values: dict[str, Any] = {"generation": 1, "health": PASS, "loss": loss(), "canary_samples_in_step": 5000}
    values.update(kw)
    return Observation(**values)


def at_step(spec: ModelRolloutSpec, index: int, since: timedelta = timedelta(minutes=10), **kw: Any):
    """A status in the middle of a rollout: step `index`, entered `since` before T0."""
    values: dict[str, Any] = dict(
        phase=Phase.PROGRESSING, observed_generation=1, step_index=index,
        canary_weight=spec.steps[index].weight, baseline_version=spec.baseline.version,
        canary_version=spec.canary.version, started_at=T0 - timedelta(hours=1), step_started_at=T0 - since,
    )  # fmt: skip
    values.update(kw)
    return ModelRolloutStatus(**values)


def terminal(spec: ModelRolloutSpec, phase: Phase, weight: int, **kw: Any) -> ModelRolloutStatus:
    return at_step(spec, 1, phase=phase, canary_weight=weight, **kw)


FRESH = ModelRolloutStatus()
ANY = "<any reason>"


@dataclass
class Case:
    name: str
    status: Any  # a ModelRolloutStatus, or a function of the spec returning one
    observation: Observation
    kind: DecisionKind
    reason: Reason | str
    phase: Phase
    weight: int
    spec: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    now: datetime = T0


# fmt: off
CASES = [
    # --- not started: the training-health gate and the other start conditions
    Case("start when training health passes", FRESH, obs(), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5, step=0),
    Case("start on a warning", FRESH, obs(health=HealthEvidence(HealthVerdict.WARN)), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5),
    Case("block when training health fails", FRESH, obs(health=HealthEvidence(HealthVerdict.FAIL, ("3 non-finite steps",))), DecisionKind.BLOCK, Reason.TRAINING_UNHEALTHY, Phase.FAILED, 0),
    Case("wait while training health is unknown", FRESH, obs(health=HealthEvidence(HealthVerdict.UNKNOWN)), DecisionKind.HOLD, Reason.TRAINING_METRICS_UNKNOWN, Phase.PENDING, 0),
    Case("no health evidence for a gated run counts as unknown", FRESH, obs(health=None), DecisionKind.HOLD, Reason.TRAINING_METRICS_UNKNOWN, Phase.PENDING, 0),
    Case("unknown health ignored when requireMetrics is false", FRESH, obs(health=None), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5, spec={"analysis": {"gradientHealth": {"requireMetrics": False}}}),
    Case("no trainingRun: no gate", FRESH, obs(health=HealthEvidence(HealthVerdict.FAIL)), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5, spec={"canary": {"trainingRun": None}}),
    Case("gate disabled", FRESH, obs(health=HealthEvidence(HealthVerdict.FAIL)), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5, spec={"analysis": {"gradientHealth": {"enabled": False}}}),
    Case("paused before start", FRESH, obs(), DecisionKind.HOLD, Reason.PAUSED, Phase.PAUSED, 0, spec={"paused": True}),
    Case("failing health blocks even when paused", FRESH, obs(health=HealthEvidence(HealthVerdict.FAIL)), DecisionKind.BLOCK, Reason.TRAINING_UNHEALTHY, Phase.FAILED, 0, spec={"paused": True}),
    Case("metrics unavailable before start: wait", FRESH, obs(metrics_available=False), DecisionKind.HOLD, Reason.METRICS_UNAVAILABLE, Phase.PENDING, 0),
    Case("canary pods not on the new version yet", FRESH, obs(canary_version_seen="v41"), DecisionKind.HOLD, Reason.CANARY_NOT_READY, Phase.PENDING, 0),
    Case("canary pods on the right version", FRESH, obs(canary_version_seen="v42"), DecisionKind.START, Reason.STARTED, Phase.PROGRESSING, 5),
    Case("abort before start", FRESH, obs(command=ManualCommand.ABORT), DecisionKind.ROLLBACK, Reason.ABORTED, Phase.ROLLED_BACK, 0),
    Case("promote before start", FRESH, obs(command=ManualCommand.PROMOTE), DecisionKind.PROMOTE, Reason.PROMOTED_MANUALLY, Phase.PROMOTED, 100, step=3),
    # --- a step: advance when quotas are met and there is no regression
    Case("advance: quotas met, undecided", lambda s: at_step(s, 0), obs(), DecisionKind.ADVANCE, Reason.STEP_ADVANCED, Phase.PROGRESSING, 25, step=1),
    Case("advance: quotas met, not worse", lambda s: at_step(s, 0), obs(loss=loss(LossVerdict.NOT_WORSE)), DecisionKind.ADVANCE, Reason.STEP_ADVANCED, Phase.PROGRESSING, 25, step=1),
    Case("wait: too few samples", lambda s: at_step(s, 0), obs(canary_samples_in_step=999), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5, step=0),
    Case("wait: too little time", lambda s: at_step(s, 0, since=timedelta(minutes=4)), obs(), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5),
    Case("step's own quotas win over stepDefaults", lambda s: at_step(s, 0), obs(canary_samples_in_step=2500), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5, spec={"steps": [{"weight": 5, "minSamples": 3000}, {"weight": 100}]}),
    Case("stepDefaults apply", lambda s: at_step(s, 0, since=timedelta(minutes=20)), obs(), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5, spec={"stepDefaults": {"minDuration": "30m"}}),
    Case("wait: insufficient data", lambda s: at_step(s, 0), obs(loss=loss(LossVerdict.INSUFFICIENT_DATA)), DecisionKind.WAIT, Reason.INSUFFICIENT_DATA, Phase.PROGRESSING, 5),
    Case("wait: no judge result", lambda s: at_step(s, 0), obs(loss=None), DecisionKind.WAIT, Reason.INSUFFICIENT_DATA, Phase.PROGRESSING, 5),
    Case("warning doubles the quotas", lambda s: at_step(s, 0, since=timedelta(minutes=8)), obs(health=HealthEvidence(HealthVerdict.WARN)), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5),
    Case("warning: doubled quotas met", lambda s: at_step(s, 0, since=timedelta(minutes=10)), obs(health=HealthEvidence(HealthVerdict.WARN), canary_samples_in_step=2000), DecisionKind.ADVANCE, Reason.STEP_ADVANCED, Phase.PROGRESSING, 25),
    # --- roll back at once
    Case("rollback on regression", lambda s: at_step(s, 1), obs(loss=loss(LossVerdict.REGRESSION, n=1000)), DecisionKind.ROLLBACK, Reason.LOSS_REGRESSION, Phase.ROLLED_BACK, 0, step=1),
    Case("regression below minSamplesBeforeRollback: wait", lambda s: at_step(s, 1), obs(loss=loss(LossVerdict.REGRESSION, n=999)), DecisionKind.WAIT, Reason.REGRESSION_BELOW_MIN_SAMPLES, Phase.PROGRESSING, 25),
    Case("catastrophic regression before the minimum", lambda s: at_step(s, 0), obs(loss=loss(LossVerdict.REGRESSION, n=40, catastrophic=True)), DecisionKind.ROLLBACK, Reason.CATASTROPHIC_LOSS, Phase.ROLLED_BACK, 0),
    Case("rollback on failing training health", lambda s: at_step(s, 2), obs(health=HealthEvidence(HealthVerdict.FAIL, ("rank 3 diverged",))), DecisionKind.ROLLBACK, Reason.TRAINING_UNHEALTHY, Phase.ROLLED_BACK, 0),
    Case("rollback on abort", lambda s: at_step(s, 2), obs(loss=loss(LossVerdict.NOT_WORSE), command=ManualCommand.ABORT), DecisionKind.ROLLBACK, Reason.ABORTED, Phase.ROLLED_BACK, 0),
    Case("regression rolls back while paused", lambda s: at_step(s, 1), obs(loss=loss(LossVerdict.REGRESSION)), DecisionKind.ROLLBACK, Reason.LOSS_REGRESSION, Phase.ROLLED_BACK, 0, spec={"paused": True}),
    Case("regression beats a promote command", lambda s: at_step(s, 1), obs(loss=loss(LossVerdict.REGRESSION), command=ManualCommand.PROMOTE), DecisionKind.ROLLBACK, Reason.LOSS_REGRESSION, Phase.ROLLED_BACK, 0),
    # --- hold
    Case("paused: hold the weight", lambda s: at_step(s, 1), obs(), DecisionKind.HOLD, Reason.PAUSED, Phase.PAUSED, 25, spec={"paused": True}),
    Case("pause annotation", lambda s: at_step(s, 1), obs(command=ManualCommand.PAUSE), DecisionKind.HOLD, Reason.PAUSED, Phase.PAUSED, 25),
    Case("metrics unavailable: hold", lambda s: at_step(s, 1), obs(metrics_available=False, metrics_problem="connection refused"), DecisionKind.HOLD, Reason.METRICS_UNAVAILABLE, Phase.PROGRESSING, 25),
    Case("regression evidence ignored while metrics are unavailable", lambda s: at_step(s, 1), obs(metrics_available=False, loss=loss(LossVerdict.REGRESSION)), DecisionKind.HOLD, Reason.METRICS_UNAVAILABLE, Phase.PROGRESSING, 25),
    Case("metrics unavailable past `after`: rollback", lambda s: at_step(s, 1, metrics_unavailable_since=T0 - timedelta(minutes=10)), obs(metrics_available=False), DecisionKind.ROLLBACK, Reason.METRICS_UNAVAILABLE, Phase.ROLLED_BACK, 0),
    Case("metrics unavailable just before `after`", lambda s: at_step(s, 1, metrics_unavailable_since=T0 - timedelta(minutes=9, seconds=59)), obs(metrics_available=False), DecisionKind.HOLD, Reason.METRICS_UNAVAILABLE, Phase.PROGRESSING, 25),
    Case("metrics unavailable, action Hold", lambda s: at_step(s, 1, metrics_unavailable_since=T0 - timedelta(hours=5)), obs(metrics_available=False), DecisionKind.HOLD, Reason.METRICS_UNAVAILABLE, Phase.PROGRESSING, 25, spec={"analysis": {"onMetricsUnavailable": {"action": "Hold"}}}),
    Case("training metrics unknown past `after`: rollback", lambda s: at_step(s, 1, metrics_unavailable_since=T0 - timedelta(minutes=11)), obs(health=None), DecisionKind.ROLLBACK, Reason.METRICS_UNAVAILABLE, Phase.ROLLED_BACK, 0),
    Case("canary not ready mid-rollout: hold", lambda s: at_step(s, 1), obs(canary_version_seen="v41"), DecisionKind.HOLD, Reason.CANARY_NOT_READY, Phase.PROGRESSING, 25),
    Case("promote annotation mid-rollout", lambda s: at_step(s, 1), obs(command=ManualCommand.PROMOTE), DecisionKind.PROMOTE, Reason.PROMOTED_MANUALLY, Phase.PROMOTED, 100, step=3),
    # --- promotion from the last step below 100
    Case("promote on no regression (NoRegression)", lambda s: at_step(s, 2), obs(), DecisionKind.PROMOTE, Reason.PROMOTED_NO_REGRESSION, Phase.PROMOTED, 100, step=3),
    Case("promote on non-inferiority (NoRegression)", lambda s: at_step(s, 2), obs(loss=loss(LossVerdict.NOT_WORSE)), DecisionKind.PROMOTE, Reason.PROMOTED_NON_INFERIOR, Phase.PROMOTED, 100),
    Case("minSamplesBeforePromotion", lambda s: at_step(s, 2), obs(loss=loss(n=4999)), DecisionKind.WAIT, Reason.INSUFFICIENT_DATA, Phase.PROGRESSING, 50, step=2),
    Case("RequireNonInferiority: undecided waits", lambda s: at_step(s, 2), obs(), DecisionKind.WAIT, Reason.NON_INFERIORITY_NOT_SHOWN, Phase.PROGRESSING, 50, spec={"analysis": {"loss": {"promotionPolicy": "RequireNonInferiority"}}}),
    Case("RequireNonInferiority: not worse promotes", lambda s: at_step(s, 2), obs(loss=loss(LossVerdict.NOT_WORSE)), DecisionKind.PROMOTE, Reason.PROMOTED_NON_INFERIOR, Phase.PROMOTED, 100, spec={"analysis": {"loss": {"promotionPolicy": "RequireNonInferiority"}}}),
    Case("RequireNonInferiority applies to the promotion only", lambda s: at_step(s, 0), obs(), DecisionKind.ADVANCE, Reason.STEP_ADVANCED, Phase.PROGRESSING, 25, spec={"analysis": {"loss": {"promotionPolicy": "RequireNonInferiority"}}}),
    # --- maxDuration
    Case("maxDuration -> Rollback", lambda s: at_step(s, 1, since=timedelta(hours=2)), obs(canary_samples_in_step=10), DecisionKind.ROLLBACK, Reason.STEP_TIMED_OUT, Phase.ROLLED_BACK, 0, spec={"stepDefaults": {"maxDuration": "1h"}}),
    Case("maxDuration -> Hold", lambda s: at_step(s, 1, since=timedelta(hours=2)), obs(canary_samples_in_step=10), DecisionKind.HOLD, Reason.STEP_TIMED_OUT, Phase.PROGRESSING, 25, spec={"stepDefaults": {"maxDuration": "1h", "onMaxDuration": "Hold"}}),
    Case("maxDuration -> Advance", lambda s: at_step(s, 1, since=timedelta(hours=2)), obs(canary_samples_in_step=10), DecisionKind.ADVANCE, Reason.STEP_TIMED_OUT, Phase.PROGRESSING, 50, spec={"stepDefaults": {"maxDuration": "1h", "onMaxDuration": "Advance"}}),
    Case("maxDuration -> Advance at the last step promotes", lambda s: at_step(s, 2, since=timedelta(hours=2)), obs(loss=loss(n=10), canary_samples_in_step=10), DecisionKind.PROMOTE, Reason.PROMOTED_ON_TIMEOUT, Phase.PROMOTED, 100, spec={"stepDefaults": {"maxDuration": "1h", "onMaxDuration": "Advance"}}),
    Case("maxDuration -> Advance never on a regression signal", lambda s: at_step(s, 1, since=timedelta(hours=2)), obs(loss=loss(LossVerdict.REGRESSION, n=10)), DecisionKind.HOLD, Reason.STEP_TIMED_OUT, Phase.PROGRESSING, 25, spec={"stepDefaults": {"maxDuration": "1h", "onMaxDuration": "Advance"}}),
    Case("a step's own maxDuration", lambda s: at_step(s, 0, since=timedelta(minutes=31)), obs(canary_samples_in_step=1), DecisionKind.ROLLBACK, Reason.STEP_TIMED_OUT, Phase.ROLLED_BACK, 0, spec={"steps": [{"weight": 5, "maxDuration": "30m"}, {"weight": 100}]}),
    Case("past maxDuration with quotas met: advance as usual", lambda s: at_step(s, 1, since=timedelta(hours=2)), obs(), DecisionKind.ADVANCE, Reason.STEP_ADVANCED, Phase.PROGRESSING, 50, spec={"stepDefaults": {"maxDuration": "1h"}}),
    # --- terminal phases are absorbing
    Case("promoted stays promoted", lambda s: terminal(s, Phase.PROMOTED, 100), obs(loss=loss(LossVerdict.REGRESSION)), DecisionKind.IDLE, ANY, Phase.PROMOTED, 100),
    Case("rolled back stays rolled back", lambda s: terminal(s, Phase.ROLLED_BACK, 0), obs(loss=loss(LossVerdict.NOT_WORSE)), DecisionKind.IDLE, ANY, Phase.ROLLED_BACK, 0),
    Case("failed stays failed", lambda s: terminal(s, Phase.FAILED, 0), obs(), DecisionKind.IDLE, ANY, Phase.FAILED, 0),
    Case("promote ignored after rollback", lambda s: terminal(s, Phase.ROLLED_BACK, 0), obs(command=ManualCommand.PROMOTE), DecisionKind.IDLE, ANY, Phase.ROLLED_BACK, 0),
    Case("abort ignored after promotion", lambda s: terminal(s, Phase.PROMOTED, 100), obs(command=ManualCommand.ABORT), DecisionKind.IDLE, ANY, Phase.PROMOTED, 100),
    Case("a spec edit does not reopen a promotion", lambda s: terminal(s, Phase.PROMOTED, 100), obs(generation=2), DecisionKind.IDLE, ANY, Phase.PROMOTED, 100),
    # --- restarts: new versions, spec change after a rollback, retry
    Case("new canary version restarts a promoted rollout", lambda s: terminal(s, Phase.PROMOTED, 100, canary_version="v40"), obs(generation=2), DecisionKind.RESTART, Reason.CANARY_VERSION_CHANGED, Phase.PENDING, 0, step=0),
    Case("new canary version mid-rollout: back to 0", lambda s: at_step(s, 2, canary_version="v40"), obs(generation=2), DecisionKind.RESTART, Reason.CANARY_VERSION_CHANGED, Phase.PENDING, 0, step=0),
    Case("new baseline version restarts", lambda s: at_step(s, 2, baseline_version="v39"), obs(generation=2), DecisionKind.RESTART, Reason.CANARY_VERSION_CHANGED, Phase.PENDING, 0),
    Case("spec edit after rollback restarts", lambda s: terminal(s, Phase.ROLLED_BACK, 0), obs(generation=2), DecisionKind.RESTART, Reason.SPEC_CHANGED, Phase.PENDING, 0),
    Case("retry after rollback", lambda s: terminal(s, Phase.ROLLED_BACK, 0), obs(command=ManualCommand.RETRY), DecisionKind.RESTART, Reason.RETRY, Phase.PENDING, 0),
    Case("retry after a block", lambda s: terminal(s, Phase.FAILED, 0), obs(command=ManualCommand.RETRY), DecisionKind.RESTART, Reason.RETRY, Phase.PENDING, 0),
    Case("retry ignored mid-rollout", lambda s: at_step(s, 0, since=timedelta(minutes=1)), obs(command=ManualCommand.RETRY), DecisionKind.WAIT, Reason.STEP_IN_PROGRESS, Phase.PROGRESSING, 5),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    spec = make_spec(**case.spec)
    status = case.status(spec) if callable(case.status) else case.status
    d = decide(spec, status, case.observation, case.now)
    assert (d.kind, d.status.phase, d.status.canary_weight) == (case.kind, case.phase, case.weight), (
        d.status.message
    )
    if case.reason != ANY:
        assert d.reason == case.reason, d.status.message
    if case.step is not None:
        assert d.status.step_index == case.step
    assert d.status.observed_generation == case.observation.generation
    # The weight in force is written whenever it changes (the router is not read back here).
    set_weights = [a for a in d.actions if isinstance(a, SetWeight)]
    assert set_weights == [SetWeight(case.weight)]
    if case.kind in (DecisionKind.ROLLBACK, DecisionKind.BLOCK):
        assert any(isinstance(a, EmitEvent) and a.type is EventType.WARNING for a in d.actions)
    assert d.status.message, "every decision leaves a human line in status.message"


def test_idle_keeps_the_reason_and_message() -> None:
    spec = make_spec()
    status = at_step(spec, 1)
    rolled = decide(spec, status, obs(loss=loss(LossVerdict.REGRESSION)), T0).status
    again = decide(spec, rolled, obs(), T0 + timedelta(minutes=1))
    assert again.reason == Reason.LOSS_REGRESSION
    assert again.status.message == rolled.message
    assert again.status.history == rolled.history
    assert again.requeue_after == timedelta(minutes=5)


def test_ignored_commands_say_so() -> None:
    spec = make_spec()
    d = decide(spec, terminal(spec, Phase.ROLLED_BACK, 0), obs(command=ManualCommand.PROMOTE), T0)
    (event,) = d.events
    assert event.reason == Reason.COMMAND_IGNORED
    assert "lossgate.io/promote ignored" in event.message
    assert "lossgate.io/retry" in event.message


def test_restart_then_start_on_the_next_tick() -> None:
    spec = make_spec()
    first = decide(spec, terminal(spec, Phase.ROLLED_BACK, 0), obs(command=ManualCommand.RETRY), T0)
    assert first.kind is DecisionKind.RESTART
    assert first.status.started_at is None
    assert first.status.analysis is None
    second = decide(spec, first.status, obs(), T0 + timedelta(seconds=30))
    assert second.kind is DecisionKind.START
    assert second.status.canary_weight == 5
    assert [h.decision for h in second.status.history][-2:] == ["Restart", "Start"]


def test_rollback_scales_the_canary_down_and_retry_restores_it() -> None:
    spec = make_spec(rollback={"scaleDownCanary": True})
    rolled = decide(spec, at_step(spec, 1), obs(loss=loss(LossVerdict.REGRESSION)), T0)
    assert rolled.scale == ScaleCanary("fraud-v42", 0)
    assert rolled.scale.to_zero
    assert rolled.status.canary_scaled_down
    # Order: traffic off first, then the pods.
    assert isinstance(rolled.actions[0], SetWeight)
    assert rolled.actions[0].canary == 0
    again = decide(spec, rolled.status, obs(loss=loss(LossVerdict.REGRESSION)), T0 + timedelta(minutes=1))
    assert again.scale is None
    retried = decide(spec, rolled.status, obs(command=ManualCommand.RETRY), T0 + timedelta(minutes=2))
    assert retried.scale == ScaleCanary("fraud-v42", None)
    assert not retried.status.canary_scaled_down


def test_no_scale_down_by_default() -> None:
    spec = make_spec()
    rolled = decide(spec, at_step(spec, 1), obs(loss=loss(LossVerdict.REGRESSION)), T0)
    assert rolled.scale is None


# --- weights: drift repair --------------------------------------------------------------------


def test_drift_is_repaired_with_an_event() -> None:
    spec = make_spec()
    d = decide(spec, at_step(spec, 1, since=timedelta(minutes=1)), obs(actual_weights=Weights(70, 30)), T0)
    assert d.set_weight == SetWeight(25)
    (drift,) = [e for e in d.events if e.reason == Reason.WEIGHT_DRIFT]
    assert drift.type is EventType.WARNING
    assert "30%" in drift.message
    assert "25%" in drift.message


def test_no_write_when_the_router_already_has_the_weight() -> None:
    spec = make_spec()
    d = decide(spec, at_step(spec, 1, since=timedelta(minutes=1)), obs(actual_weights=Weights(75, 25)), T0)
    assert d.set_weight is None
    assert not d.events


def test_drift_repaired_in_terminal_phases() -> None:
    spec = make_spec()
    d = decide(spec, terminal(spec, Phase.ROLLED_BACK, 0), obs(actual_weights=Weights(90, 10)), T0)
    assert d.set_weight == SetWeight(0)
    assert d.kind is DecisionKind.IDLE


def test_advance_writes_the_new_weight_even_when_the_old_one_is_in_place() -> None:
    spec = make_spec()
    d = decide(spec, at_step(spec, 0), obs(actual_weights=Weights(95, 5)), T0)
    assert d.set_weight == SetWeight(25)
    assert d.set_weight.weights == Weights(75, 25)


# --- pause: time paused does not count towards the step -----------------------------------------


def test_paused_time_is_not_step_time() -> None:
    spec = make_spec()
    s = at_step(spec, 0, since=timedelta(0))  # entered at T0, minDuration 5m
    s = decide(spec, s, obs(), T0 + timedelta(minutes=1)).status
    s = decide(spec, s, obs(command=ManualCommand.PAUSE), T0 + timedelta(minutes=1)).status
    assert s.phase is Phase.PAUSED
    assert s.manually_paused
    assert s.paused_at == T0 + timedelta(minutes=1)
    s = decide(spec, s, obs(), T0 + timedelta(minutes=30)).status
    assert s.phase is Phase.PAUSED
    resumed = decide(spec, s, obs(command=ManualCommand.RESUME), T0 + timedelta(minutes=31))
    assert resumed.kind is DecisionKind.WAIT
    assert resumed.status.phase is Phase.PROGRESSING
    assert resumed.status.step_paused == timedelta(minutes=30)
    assert resumed.status.paused_at is None
    # 35 min after the step began, 30 of them paused: 5 min active -> the step may advance.
    assert decide(spec, resumed.status, obs(), T0 + timedelta(minutes=34)).kind is DecisionKind.WAIT
    assert decide(spec, resumed.status, obs(), T0 + timedelta(minutes=35)).kind is DecisionKind.ADVANCE


def test_resume_annotation_does_not_override_spec_paused() -> None:
    spec = make_spec(paused=True)
    d = decide(spec, at_step(spec, 1, manually_paused=True), obs(command=ManualCommand.RESUME), T0)
    assert d.status.phase is Phase.PAUSED
    assert not d.status.manually_paused
    assert any("spec.paused is still true" in e.message for e in d.events)


def test_unpausing_spec_resumes() -> None:
    spec = make_spec(paused=True)
    s = decide(spec, at_step(spec, 0, since=timedelta(0)), obs(), T0).status
    d = decide(make_spec(), s, obs(generation=2), T0 + timedelta(minutes=10))
    assert d.status.phase is Phase.PROGRESSING
    assert d.kind is DecisionKind.WAIT
    assert d.status.step_paused == timedelta(minutes=10)


# --- resume from status alone --------------------------------------------------------------------


def test_decisions_resume_from_the_serialised_status() -> None:
    """An operator restart reads status back from the API server: same decisions follow."""
    spec = make_spec()
    s = decide(spec, FRESH, obs(), T0).status
    s = decide(spec, s, obs(command=ManualCommand.PAUSE), T0 + timedelta(minutes=2)).status
    s = decide(spec, s, obs(metrics_available=False), T0 + timedelta(minutes=3)).status
    wire = ModelRolloutStatus.model_validate(s.to_wire())
    assert wire == s
    later = T0 + timedelta(minutes=9)
    for o in (obs(), obs(metrics_available=False), obs(command=ManualCommand.RESUME)):
        assert decide(spec, wire, o, later) == decide(spec, s, o, later)


def test_metrics_unavailable_since_survives_in_status() -> None:
    spec = make_spec()
    s = at_step(spec, 1)
    s = decide(spec, s, obs(metrics_available=False), T0).status
    assert s.metrics_unavailable_since == T0
    s = ModelRolloutStatus.model_validate(s.to_wire())
    assert decide(spec, s, obs(metrics_available=False), T0 + timedelta(minutes=9)).kind is DecisionKind.HOLD
    assert (
        decide(spec, s, obs(metrics_available=False), T0 + timedelta(minutes=10)).kind
        is DecisionKind.ROLLBACK
    )
    back = decide(spec, s, obs(), T0 + timedelta(minutes=5))
    assert back.status.metrics_unavailable_since is None
    assert back.kind is not DecisionKind.HOLD


# --- spec edits mid-rollout ---------------------------------------------------------------------


def test_steps_edited_mid_rollout_keep_the_weight() -> None:
    spec = make_spec()
    s = at_step(spec, 2)  # 50%
    fewer = make_spec(steps=[{"weight": 10}, {"weight": 20}, {"weight": 100}])
    d = decide(fewer, s, obs(generation=2, canary_samples_in_step=0), T0)
    assert d.status.step_index == 1
    assert d.status.canary_weight == 50
    more = make_spec(steps=[{"weight": 5}, {"weight": 30}, {"weight": 60}, {"weight": 100}])
    d = decide(more, s, obs(generation=2, canary_samples_in_step=0), T0)
    assert d.status.step_index == 2
    assert d.status.canary_weight == 60
    assert d.status.step_started_at == T0


# --- conditions, history, messages, requeue --------------------------------------------------------


def test_conditions_transition_time_moves_only_on_flips() -> None:
    spec = make_spec()
    s = decide(spec, FRESH, obs(), T0).status
    first = {c.type: c for c in s.conditions}
    assert first["MetricsAvailable"].status == "True"
    assert first["Progressing"].status == "True"
    assert first["Promoted"].status == "False"
    assert first["RolledBack"].status == "False"
    assert first["TrainingHealthy"].status == "True"
    s = decide(spec, s, obs(), T0 + timedelta(minutes=1)).status
    s = decide(
        spec, s, obs(metrics_available=False, metrics_problem="timeout"), T0 + timedelta(minutes=2)
    ).status
    now = {c.type: c for c in s.conditions}
    assert now["Progressing"].last_transition_time == T0
    assert now["MetricsAvailable"].status == "False"
    assert now["MetricsAvailable"].last_transition_time == T0 + timedelta(minutes=2)
    assert "timeout" in now["MetricsAvailable"].message


def test_conditions_of_other_writers_are_kept() -> None:
    from lossgate.model import ConditionStatus, set_condition

    spec = make_spec()
    own = set_condition([], "RouterReady", ConditionStatus.FALSE, "RouteNotFound", "no HTTPRoute", T0)
    s = decide(spec, FRESH.model_copy(update={"conditions": own}), obs(), T0).status
    assert s.conditions[0] == own[0]


def test_rolled_back_condition_and_event_carry_the_numbers() -> None:
    spec = make_spec()
    bad = loss(
        LossVerdict.REGRESSION, mean_canary=0.452, delta=0.043, cs_low=0.021, cs_high=0.065, p_regression=4e-4
    )
    d = decide(spec, at_step(spec, 1), obs(loss=bad, canary_samples_in_step=6120), T0)
    rb = next(c for c in d.status.conditions if c.type == "RolledBack")
    assert rb.status == "True"
    assert rb.reason == Reason.LOSS_REGRESSION
    assert "canary loss 0.452 vs 0.409 (+0.043, 95% CS [0.021, 0.065])" in d.status.message
    assert "p=0.0004" in d.status.message
    assert d.events[-1].message == d.status.message
    h = d.status.history[-1]
    assert (h.decision, h.delta, h.cs_low, h.n_canary) == ("Rollback", 0.043, 0.021, 6000)


def test_message_format() -> None:
    spec = make_spec()
    d = decide(spec, at_step(spec, 1, since=timedelta(minutes=1)), obs(canary_samples_in_step=6120), T0)
    assert d.status.message.startswith(
        "step 2/4: canary loss 0.412 vs 0.409 (+0.003, 95% CS [-0.004, 0.010]), 6120/1000 samples"
    )
    assert d.status.current_step == "2/4"


def test_message_target_uses_samples_needed() -> None:
    spec = make_spec()
    o = obs(loss=loss(samples_needed=1880), canary_samples_in_step=6120)
    d = decide(spec, at_step(spec, 1, since=timedelta(minutes=1)), o, T0)
    assert "6120/8000 samples" in d.status.message


def test_history_is_bounded_and_records_changes_only() -> None:
    spec = make_spec()
    s = at_step(spec, 1, since=timedelta(minutes=1))
    t = T0
    for i in range(60):
        t += timedelta(seconds=30)
        s = decide(spec, s, obs(metrics_available=i % 2 == 0, canary_samples_in_step=0), t).status
    assert len(s.history) == 20
    steady = at_step(spec, 1, since=timedelta(minutes=1))
    for _ in range(10):
        t += timedelta(seconds=30)
        steady = decide(spec, steady, obs(canary_samples_in_step=0), t).status
    assert len(steady.history) <= 1


def test_requeue_after() -> None:
    spec = make_spec()
    d = decide(
        spec, at_step(spec, 0, since=timedelta(minutes=4, seconds=50)), obs(canary_samples_in_step=0), T0
    )
    assert d.requeue_after == timedelta(seconds=10)  # minDuration ends before the next interval
    d = decide(spec, at_step(spec, 0, since=timedelta(minutes=1)), obs(canary_samples_in_step=0), T0)
    assert d.requeue_after == timedelta(seconds=30)
    s = at_step(spec, 1, metrics_unavailable_since=T0 - timedelta(minutes=9, seconds=55))
    assert decide(spec, s, obs(metrics_available=False), T0).requeue_after == timedelta(seconds=5)


def test_status_is_valid_wire_data() -> None:
    spec = make_spec()
    s = decide(spec, FRESH, obs(), T0).status
    wire = s.to_wire()
    assert wire["phase"] == "Progressing"
    assert wire["currentStep"] == "1/4"
    assert wire["canaryWeight"] == 5
    assert wire["stepStartedAt"] == "2025-03-01T12:00:00Z"
    assert ModelRolloutStatus.model_validate(wire) == s


def test_non_finite_numbers_never_reach_status() -> None:
    spec = make_spec()
    weird = loss(cs_low=float("-inf"), cs_high=float("inf"), p_regression=float("nan"))
    s = decide(spec, at_step(spec, 1, since=timedelta(minutes=1)), obs(loss=weird), T0).status
    assert s.analysis is not None
    assert s.analysis.cs_low is None
    assert s.analysis.p_regression is None
    assert "CS [" not in s.message


def test_from_judge_and_from_health_adapters() -> None:
    @dataclass(frozen=True)
    class FakeJudge:
        verdict: LossVerdict = LossVerdict.NOT_WORSE
        theta_hat: float = -0.002
        cs_low: float = -0.01
        cs_high: float = 0.006
        p_regression: float = 0.9
        p_not_worse: float = 0.01
        n_baseline: float = 9000.0
        n_canary: float = 3000.0
        mean_baseline: float = 0.41
        mean_canary: float = 0.408
        margin: float = 0.01
        samples_needed: float = 1234.2
        catastrophic: bool = False
        reason: str = "non-inferior"

    @dataclass(frozen=True)
    class FakeHealth:
        verdict: HealthVerdict = HealthVerdict.WARN
        reasons: tuple[str, ...] = ("2 grad-norm spikes",)
        nonfinite_steps: int = 0
        grad_norm_spikes: int = 2
        max_grad_norm_z: float = 7.5
        rank_divergence: float | None = None
        loss_scale_collapse: bool = False
        validation_delta: float | None = 0.001

    le = LossEvidence.from_judge(FakeJudge(), cs_level=0.99)
    assert (le.delta, le.samples_needed, le.cs_level) == (-0.002, 1235, 0.99)
    he = HealthEvidence.from_health(FakeHealth())
    assert he.verdict is HealthVerdict.WARN
    assert he.reasons == ("2 grad-norm spikes",)


def test_command_from_annotations() -> None:
    from lossgate.core.observation import command_from_annotations

    assert command_from_annotations(None) is None
    assert command_from_annotations({"other": "x"}) is None
    assert command_from_annotations({"lossgate.io/promote": ""}) is ManualCommand.PROMOTE
    both = {"lossgate.io/promote": "", "lossgate.io/abort": "now"}
    assert command_from_annotations(both) is ManualCommand.ABORT


def test_decision_is_a_value() -> None:
    spec = make_spec()
    a = decide(spec, FRESH, obs(), T0)
    b = decide(spec, FRESH, replace(obs()), T0)
    assert a == b
    assert hash(a.actions) == hash(b.actions)
    assert isinstance(a, Decision)


def test_commands_arriving_with_a_restart() -> None:
    spec = make_spec()
    old = at_step(spec, 2, canary_version="v40")
    aborted = decide(spec, old, obs(generation=2, command=ManualCommand.ABORT), T0)
    assert aborted.kind is DecisionKind.ROLLBACK
    assert aborted.status.phase is Phase.ROLLED_BACK
    assert [h.decision for h in aborted.status.history] == ["Restart", "Rollback"]
    paused = decide(spec, old, obs(generation=2, command=ManualCommand.PAUSE), T0)
    assert paused.kind is DecisionKind.RESTART
    assert paused.status.manually_paused
    assert (
        decide(spec, paused.status, obs(generation=2), T0 + timedelta(minutes=1)).status.phase is Phase.PAUSED
    )
    promoted = decide(spec, old, obs(generation=2, command=ManualCommand.PROMOTE), T0)
    assert promoted.kind is DecisionKind.RESTART
    assert any(e.reason == Reason.COMMAND_IGNORED for e in promoted.events)


def test_naive_now_is_utc() -> None:
    spec = make_spec()
    s = decide(spec, FRESH, obs(), T0).status
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None)
    assert decide(spec, s, obs(), naive) == decide(spec, s, obs(), T0 + timedelta(minutes=1))
