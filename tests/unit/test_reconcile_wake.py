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


class _Stopped:
    def __init__(self) -> None:
        self.flag = asyncio.Event()

    def __bool__(self) -> bool:
        return self.flag.is_set()

    async def wait(self) -> None:
        await self.flag.wait()


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
        stopped = _Stopped()
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
    a = loop.on_grid(30.0, 1.0, now=1000.2)
    b = loop.on_grid(30.0, 1.0, now=1000.7)
    # Then both wake at 1031 s, never before they are due, at most one quantum late
    assert (1000.2 + a, 1000.7 + b) == (1031.0, 1031.0)
    assert 30.0 <= a < 31.0
    assert 30.0 <= b < 31.0
    # And a quantum of 0 leaves the sleep as it is
    assert loop.on_grid(30.0, 0.0, now=5.5) == 30.0
