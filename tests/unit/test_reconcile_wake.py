"""What wakes a rollout's daemon before its requeue: a spec edit or a command annotation appearing;
never the operator's own writes (status, removing a handled annotation, kopf's bookkeeping)."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from datetime import timedelta
from typing import Any

import pytest

from lossgate.reconcile import loop
from lossgate.reconcile.wake import Wakeups
from tests.unit.reconcile_fakes import (
    FakeClock,
    FakeDeps,
    FakeMetrics,
    FakeObjects,
    FakeRouter,
    Stopped,
    rollout_body,
    until,
)


def _edited(body: dict[str, Any], **meta: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["metadata"].update(meta)
    return out


@pytest.mark.parametrize(
    ("change", "wakes"),
    [
        ({"generation": 2}, True),  # spec edit
        ({"annotations": {"lossgate.io/pause": "true"}}, True),
        ({"annotations": {"lossgate.io/abort": ""}}, True),
        ({"annotations": {"lossgate.io/last-handled-configuration": "{}"}}, False),  # kopf's own
        ({"annotations": {"team": "ml"}}, False),
        ({"labels": {"a": "b"}}, False),
    ],
)
def test_what_wakes_the_daemon(change: dict[str, Any], wakes: bool) -> None:
    # Given the registry has seen the object once
    w, body = Wakeups(), rollout_body()
    assert w.saw("uid-1", body) is False  # first sight never wakes: the first tick is due anyway
    # When the next watch event carries the change
    got = w.saw("uid-1", _edited(body, **change))
    # Then the daemon is woken exactly for spec edits and command annotations
    assert got is wakes
    assert w.event("uid-1").is_set() is wakes


def test_own_writes_do_not_wake_but_a_status_edit_does_while_unreadable() -> None:
    w, body = Wakeups(), rollout_body()
    paused = _edited(body, annotations={"lossgate.io/pause": "true"})
    w.saw("uid-1", body)
    assert w.saw("uid-1", paused)
    w.event("uid-1").clear()
    # When the operator removes the handled annotation and writes status
    handled = copy.deepcopy(body)
    handled["status"] = {"phase": "Paused", "conditions": [{"type": "Reconciled"}]}
    # Then neither wakes the daemon
    assert w.saw("uid-1", handled) is False
    # But while the status is unreadable, a human's status edit does (our conditions patch does not)
    w.watch_status("uid-1", True)
    ours = copy.deepcopy(handled)
    ours["status"]["conditions"] = [{"type": "Reconciled", "status": "False"}]
    assert w.saw("uid-1", ours) is False
    assert w.saw("uid-1", {**ours, "status": {}}) is True


def test_a_woken_daemon_ticks_at_once_not_after_its_requeue(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a rollout whose ticks ask to be called again in 5 minutes
    objects = FakeObjects(body=rollout_body())
    deps = FakeDeps(objects, FakeRouter(), FakeMetrics(), FakeClock())
    ticks: list[float] = []

    async def five_minutes(*_: Any) -> timedelta:
        ticks.append(time.monotonic())
        return timedelta(minutes=5)

    monkeypatch.setattr(loop, "tick", five_minutes)

    async def main() -> tuple[float, float]:
        stopped = Stopped()
        deps.wakeups.saw("uid-1", objects.body)
        task = asyncio.create_task(loop.run(deps, objects.body, lambda e: None, stopped, logging.getLogger()))
        await until(lambda: len(ticks) == 1, 5)
        # When a pause annotation arrives through the watch
        deps.wakeups.saw("uid-1", _edited(objects.body, annotations={"lossgate.io/pause": "true"}))
        woke = await until(lambda: len(ticks) == 2, 5)
        # And when the daemon is stopped, it leaves its 5-minute sleep at once
        stopped.flag.set()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 5)
        return woke, time.monotonic() - t0

    woke, left = asyncio.run(main())
    # Then the second tick came within a second, not five minutes
    print(f"woken tick after {woke * 1000:.0f} ms; stop took {left * 1000:.0f} ms")
    assert woke < 1.0
    assert left < 1.0
    assert len(ticks) == 2


def test_sleeps_end_on_the_tick_grid_so_rollouts_due_together_wake_together() -> None:
    # Given two rollouts due 30 s from slightly different moments, on a 1 s grid
    a = loop.on_grid(30.0, 1.0, now=1000.6)
    b = loop.on_grid(30.0, 1.0, now=1001.4)
    # Then both wake at 1031 s, at most half a quantum from when they are due
    assert (1000.6 + a, 1001.4 + b) == (1031.0, 1031.0)
    assert abs(a - 30.0) <= 0.5
    assert abs(b - 30.0) <= 0.5
    # And one that woke on the grid and asks for 30 s lands on the grid 30 s later (no drift)
    assert loop.on_grid(30.0, 1.0, now=1031.003) + 1031.003 == 1061.0
    # And a quantum of 0 leaves the sleep as it is
    assert loop.on_grid(30.0, 0.0, now=5.5) == 30.0


def test_a_slow_tick_does_not_stretch_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given ticks that take 2 s of a 30 s requeue
    async def slow_tick(*_: Any) -> timedelta:
        await asyncio.sleep(0)
        clock[0] += 2.0
        return timedelta(seconds=30)

    clock = [1000.0]
    monkeypatch.setattr(loop.time, "time", lambda: clock[0])
    monkeypatch.setattr(loop, "tick", slow_tick)
    sleeps: list[float] = []

    async def fake_sleep(stopped: Stopped, wake: asyncio.Event, seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds
        if len(sleeps) == 3:
            stopped.flag.set()

    monkeypatch.setattr(loop, "sleep", fake_sleep)
    objects = FakeObjects(body=rollout_body())
    deps = FakeDeps(objects, FakeRouter(), FakeMetrics(), FakeClock())
    stopped = Stopped()
    # When the loop runs three ticks
    asyncio.run(loop.run(deps, objects.body, lambda e: None, stopped, logging.getLogger("test")))
    # Then each sleep is the requeue less the tick's 2 s: one tick every 30 s, not every 32 s
    assert sleeps == [28.0, 28.0, 28.0]


def test_rollouts_started_together_spread_over_the_interval() -> None:
    # Given 1,000 rollouts whose first ticks all happen at once (an operator restart)
    fractions = sorted(loop.phase(f"uid-{i}") for i in range(1000))
    # Then their first requeues are spread over the whole interval, about evenly, and stable
    assert fractions[0] > 0
    assert fractions[-1] <= 1
    deciles = [sum(1 for f in fractions if k / 10 < f <= (k + 1) / 10) for k in range(10)]
    assert all(60 <= d <= 140 for d in deciles), deciles  # 100 each +- 4 sd of a binomial(1000, 0.1)
    assert loop.phase("uid-7") == loop.phase("uid-7")
