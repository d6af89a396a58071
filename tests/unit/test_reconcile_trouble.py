"""An unreadable status and a crashing or hanging tick become Reconciled=False and one Event each,
never a silent restart: nothing is decided, the router is not touched, the rest of status is kept."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from lossgate.core.actions import EmitEvent
from lossgate.reconcile import loop
from lossgate.reconcile.deps import OperatorConfig
from lossgate.reconcile.rollout import tick
from lossgate.reconcile.trouble import UNREADABLE_RECHECK
from tests.unit.reconcile_fakes import FakeClock, FakeDeps, FakeMetrics, FakeObjects, FakeRouter, rollout_body

LIVE = {
    "phase": "Progressing",
    "canaryWeight": 25,
    "stepIndex": 1,
    "baselineVersion": "v1",
    "canaryVersion": "v2",
    "startedAt": "2025-01-06T11:00:00Z",
    "stepStartedAt": "2025-01-06T11:30:00Z",
    "stepStarts": [
        {"at": "2025-01-06T11:00:00Z", "weight": 10},
        {"at": "2025-01-06T11:30:00Z", "weight": 25},
    ],
    "conditions": [
        {
            "type": "Progressing",
            "status": "True",
            "reason": "StepInProgress",
            "message": "step 2/3",
            "lastTransitionTime": "2025-01-06T11:00:00Z",
        }
    ],
}
STEPS = [{"weight": 10}, {"weight": 25}, {"weight": 100}]


def _reconciled(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", []) if c["type"] == "Reconciled")


@pytest.mark.parametrize(
    ("broken", "field"),
    [
        ({"stepPaused": "99999999999h"}, "status.stepPaused"),  # the CRD's pattern accepts it; timedelta not
        ({"canaryWeight": 500}, "status.canaryWeight"),
    ],
)
def test_unreadable_status_is_a_condition_and_one_event_and_decides_nothing(
    broken: dict[str, Any], field: str
) -> None:
    # Given a live rollout at 25% whose status has one field the operator cannot read
    spec = {**rollout_body()["spec"], "steps": STEPS}
    objects = FakeObjects(body=rollout_body(spec, {**LIVE, **broken}))
    router, metrics = FakeRouter(canary=25), FakeMetrics()
    deps = FakeDeps(objects, router, metrics, FakeClock())
    events: list[EmitEvent] = []
    # When it ticks twice
    first = asyncio.run(tick(deps, objects.body, events.append))
    asyncio.run(tick(deps, objects.body, events.append))
    # Then one PATCH carried only the conditions: Reconciled=False naming the field and the way out
    assert [list(p) for p in objects.status_patches] == [["conditions"]]
    cond = _reconciled(objects.body["status"])
    assert (cond["status"], cond["reason"]) == ("False", "StatusUnreadable")
    assert field in cond["message"]
    assert "--subresource=status" in cond["message"]
    # And the rest of the status is as it was: no restart at weight 0, the bad field left for a human
    st = objects.body["status"]
    assert (st["phase"], st["stepIndex"]) == ("Progressing", 1)
    assert {k: st[k] for k in broken} == broken
    assert next(c for c in st["conditions"] if c["type"] == "Progressing")["reason"] == "StepInProgress"
    # And nothing was read or moved, and one Warning Event said it
    assert (router.gets, router.sets, metrics.reads) == (0, 0, 0)
    assert [(e.type.value, e.reason) for e in events] == [("Warning", "StatusUnreadable")]
    assert field in events[0].message
    assert first == UNREADABLE_RECHECK


def test_a_fixed_status_clears_the_condition() -> None:
    # Given a rollout that was reported unreadable
    spec = {**rollout_body()["spec"], "steps": STEPS}
    objects = FakeObjects(body=rollout_body(spec, {**LIVE, "canaryWeight": 500}))
    deps = FakeDeps(objects, FakeRouter(canary=25), FakeMetrics(), FakeClock())
    events: list[EmitEvent] = []
    asyncio.run(tick(deps, objects.body, events.append))
    # When someone fixes the field
    objects.body["status"]["canaryWeight"] = 25
    asyncio.run(tick(deps, objects.body, events.append))
    # Then the rollout goes on where it was, and Reconciled is True again
    cond = _reconciled(objects.body["status"])
    assert (cond["status"], cond["reason"]) == ("True", "TickOK")
    assert objects.body["status"]["canaryWeight"] == 25
    assert objects.body["status"]["phase"] == "Progressing"


class _Stopped:
    """kopf.DaemonStopped after `ticks` sleeps; records each sleep's length instead of sleeping."""

    def __init__(self, ticks: int) -> None:
        self.left, self.sleeps = ticks, []

    def __bool__(self) -> bool:
        return self.left <= 0

    async def wait(self) -> None:
        await asyncio.Event().wait()  # never set: the loop is stopped through __bool__


def _run_loop(
    deps: FakeDeps,
    objects: FakeObjects,
    stopped: _Stopped,
    events: list[EmitEvent],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def fake_sleep(_: Any, __: asyncio.Event, seconds: float) -> None:
        stopped.sleeps.append(seconds)
        stopped.left -= 1

    monkeypatch.setattr(loop, "sleep", fake_sleep)
    asyncio.run(loop.run(deps, objects.body, events.append, stopped, logging.getLogger("test")))


def test_a_crashing_tick_is_a_condition_and_one_event_per_distinct_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a rollout whose tick raises: twice the same error, then another one, then it works
    objects = FakeObjects(body=rollout_body(status=LIVE))
    deps = FakeDeps(objects, FakeRouter(canary=25), FakeMetrics(), FakeClock())
    errors = [ValueError("boom"), ValueError("boom"), KeyError("gone")]

    async def flaky(*_: Any) -> timedelta:
        if errors:
            raise errors.pop(0)
        return timedelta(seconds=30)

    monkeypatch.setattr(loop, "tick", flaky)
    events: list[EmitEvent] = []
    # When its loop runs four ticks
    stopped = _Stopped(ticks=4)
    _run_loop(deps, objects, stopped, events, monkeypatch)
    # Then each failure backed off longer, and the good tick went back to the requeue (which counts
    # from the tick's start: less the tick's own few microseconds)
    assert stopped.sleeps[:3] == [5, 10, 20]
    assert 29.9 < stopped.sleeps[3] <= 30
    # And there was one Event per distinct error, naming it, not one per retry
    assert [(e.reason, "boom" in e.message) for e in events] == [("TickFailed", True), ("TickFailed", False)]
    assert "KeyError" in events[1].message
    # And the object says so (the last failure), the rest of its status untouched
    cond = _reconciled(objects.body["status"])
    assert (cond["status"], cond["reason"]) == ("False", "TickFailed")
    assert "KeyError: 'gone'" in cond["message"]
    assert objects.body["status"]["canaryWeight"] == 25
    assert all(list(p) == ["conditions"] for p in objects.status_patches)
    assert len(objects.status_patches) == 2


def test_a_hanging_tick_times_out_into_a_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a tick that never returns, and a tick timeout of 0.2 s
    objects = FakeObjects(body=rollout_body(status=LIVE))
    settings = OperatorConfig(metrics_port=0, tick_timeout=timedelta(seconds=0.2), tick_quantum_s=0)
    deps = FakeDeps(objects, FakeRouter(canary=25), FakeMetrics(), FakeClock(), settings=settings)

    async def hang(*_: Any) -> timedelta:
        await asyncio.Event().wait()  # a tick that never returns: only the tick timeout ends it
        return timedelta(0)

    monkeypatch.setattr(loop, "tick", hang)
    events: list[EmitEvent] = []
    # When the loop runs one tick
    stopped = _Stopped(ticks=1)
    _run_loop(deps, objects, stopped, events, monkeypatch)
    # Then the tick was abandoned: Reconciled=False TickTimedOut, one Event, a back-off
    cond = _reconciled(objects.body["status"])
    assert (cond["status"], cond["reason"]) == ("False", "TickTimedOut")
    assert "0.2s" in cond["message"]
    assert [e.reason for e in events] == ["TickTimedOut"]
    assert stopped.sleeps == [5]
