"""status.stepStarts: the weight timeline the reconciler uses to judge evidence since the rollout began."""

from __future__ import annotations

from datetime import timedelta

from lossgate.core.machine import decide
from lossgate.core.observation import ManualCommand
from lossgate.model import Phase
from tests.unit.test_machine_rules import FRESH, T0, make_spec, obs


def test_each_step_start_is_recorded_with_its_weight_and_a_restart_clears_them() -> None:
    spec = make_spec(stepDefaults={"minSamples": 100, "minDuration": "1m"})
    # Given a fresh rollout that starts, then meets its quotas twice
    d1 = decide(spec, FRESH, obs(), T0)
    d2 = decide(spec, d1.status, obs(canary_samples_in_step=500), T0 + timedelta(minutes=2))
    d3 = decide(spec, d2.status, obs(canary_samples_in_step=500), T0 + timedelta(minutes=4))
    # Then every weight change is in the timeline, in order, with the weight it set
    assert [(s.at, s.weight) for s in d3.status.step_starts] == [
        (T0, 5),
        (T0 + timedelta(minutes=2), 25),
        (T0 + timedelta(minutes=4), 50),
    ]
    # And a tick that does not move the weight adds nothing
    d4 = decide(spec, d3.status, obs(canary_samples_in_step=10), T0 + timedelta(minutes=5))
    assert len(d4.status.step_starts) == 3
    # When the rollout is aborted and retried, the timeline starts again empty
    d5 = decide(spec, d4.status, obs(command=ManualCommand.ABORT), T0 + timedelta(minutes=6))
    assert d5.status.phase == Phase.ROLLED_BACK
    d6 = decide(spec, d5.status, obs(command=ManualCommand.RETRY), T0 + timedelta(minutes=7))
    assert d6.status.step_starts == []
    # And survives a JSON round trip through the status subresource
    again = type(d4.status).model_validate(d4.status.model_dump(mode="json", by_alias=True))
    assert again.step_starts == d4.status.step_starts
