"""Ticks at scale: a bounded number of routine ticks at once, and a tick someone asked for (an edit, a
command) first: admitted at once, its Kubernetes calls on threads of their own, its Prometheus read
outside the routine queue."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lossgate.core.evidence import IntervalStats
from lossgate.ports import LossSeriesRef
from lossgate.reconcile import loop
from lossgate.reconcile.admission import TickGate
from lossgate.reconcile.batching import LossBatcher
from lossgate.reconcile.limits import EndpointLimiter, LimitedMetrics
from lossgate.reconcile.threads import POOLS, URGENT, Pools, to_thread
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


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 6),
    ticks=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.booleans()), min_size=1, max_size=30),
)
def test_routine_ticks_never_exceed_the_limit_and_urgent_ones_never_wait(
    limit: int, ticks: list[tuple[bool, int, bool]]
) -> None:
    # Given a gate and ticks of random urgency that each take a few loop turns
    async def main() -> tuple[int, list[int], int]:
        gate = TickGate(limit)
        routine_inside, worst, urgent_waits = [0], [0], [0]

        async def one(urgent: bool, turns: int, background: bool) -> None:
            slot = gate.slot(urgent, background)
            if urgent:  # entering must complete without yielding to the loop even once
                try:
                    slot.__aenter__().send(None)
                    urgent_waits[0] += 1
                except StopIteration:
                    pass
            else:
                await slot.__aenter__()
                routine_inside[0] += 1
                worst[0] = max(worst[0], routine_inside[0])
            for _ in range(turns):
                await asyncio.sleep(0)
            if not urgent:
                routine_inside[0] -= 1
            await slot.__aexit__(None, None, None)

        # When they all arrive at once
        await asyncio.gather(*(one(u, t, b) for u, t, b in ticks))
        return worst[0], [gate.running, gate.waiting], urgent_waits[0]

    worst, left, urgent_waits = asyncio.run(main())
    # Then routine ticks inside never exceeded the limit, urgent ones never waited, nothing leaked
    assert worst <= limit
    assert urgent_waits == 0
    assert left == [0, 0]


def test_live_rollouts_go_before_finished_ones() -> None:
    async def main() -> list[str]:
        # Given a gate of one slot, held, and finished rollouts queued before a live one
        gate, order = TickGate(1), []
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.slot():
                await release.wait()

        async def tick(name: str, background: bool) -> None:
            async with gate.slot(background=background):
                order.append(name)

        holder = asyncio.create_task(hold())
        await until(lambda: gate.running == 1, 2)
        waiting = [asyncio.create_task(tick(f"finished-{i}", True)) for i in range(3)]
        await until(lambda: gate.waiting == 3, 2)
        waiting.append(asyncio.create_task(tick("live", False)))
        await until(lambda: gate.waiting == 4, 2)
        # When the slot frees
        release.set()
        await asyncio.gather(holder, *waiting)
        return order

    # Then the live rollout ticks first, and the finished ones in the order they came
    assert asyncio.run(main()) == ["live", "finished-0", "finished-1", "finished-2"]


def test_a_tick_cancelled_while_waiting_leaves_no_slot_taken() -> None:
    async def main() -> tuple[int, int]:
        # Given a gate of one slot, held
        gate = TickGate(1)
        release = asyncio.Event()

        async def hold() -> None:
            async with gate.slot():
                await release.wait()

        holder = asyncio.create_task(hold())
        await until(lambda: gate.running == 1, 2)
        # When a second tick waits and is cancelled (its rollout deleted), and the first ends
        waiter = asyncio.create_task(hold())
        await until(lambda: gate.waiting == 1, 2)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        release.set()
        await holder
        # Then a third tick gets the slot at once
        async with gate.slot():
            inside = gate.running
        return inside, gate.waiting

    # And the counts are back to nothing
    assert asyncio.run(main()) == (1, 0)


def test_an_urgent_call_runs_while_every_routine_thread_is_blocked() -> None:
    # Given a routine pool of 2 threads, both blocked on a slow Kubernetes call
    pools, gate = Pools(routine=2), threading.Event()
    POOLS.sizes, POOLS._pools = pools.sizes, pools._pools  # this test's own pools

    def slow() -> str:
        gate.wait(10)
        return threading.current_thread().name

    def quick() -> str:
        return threading.current_thread().name

    async def main() -> tuple[str, bool]:
        blocked = [asyncio.create_task(to_thread(slow)) for _ in range(2)]
        await asyncio.sleep(0.05)
        # When an urgent tick makes a call
        token = URGENT.set(True)
        try:
            name = await asyncio.wait_for(to_thread(quick), 2)
        finally:
            URGENT.reset(token)
        still_blocked = not any(t.done() for t in blocked)
        gate.set()
        await asyncio.gather(*blocked)
        return name, still_blocked

    try:
        name, still_blocked = asyncio.run(main())
    finally:
        POOLS.close()
        POOLS.sizes = Pools().sizes
    # Then it ran at once, on the urgent pool, while the routine calls were still blocked
    assert name.startswith("lossgate-urgent")
    assert still_blocked


class _Batch:
    """A batch source and a plain source: records which path each read took."""

    def __init__(self) -> None:
        self.batched: list[int] = []
        self.single = 0

    def loss_intervals_batch(self, requests: Any) -> list[list[IntervalStats]]:
        self.batched.append(len(requests))
        return [[] for _ in requests]

    def loss_intervals(self, *_: Any) -> list[IntervalStats]:
        self.single += 1
        return []

    def training_run(self, *_: Any) -> Any:
        raise AssertionError("not read here")


def test_an_urgent_loss_read_takes_its_own_slot_and_skips_the_batch_window() -> None:
    # Given an endpoint whose only slot is taken by a hung query, and a batcher in front of it
    limiter = EndpointLimiter("prom", 1, queue_timeout_s=5)
    source, hung = _Batch(), threading.Event()
    ref = LossSeriesRef("ml", "m", "v1", "v2")
    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 5, tzinfo=UTC)

    async def main() -> tuple[list[IntervalStats] | Any, int]:
        limited = LimitedMetrics(source, limiter, "prom")  # type: ignore[arg-type]
        limited.batcher = LossBatcher(source, limiter, limited.busy)
        blocker = asyncio.create_task(limiter.call_async(lambda: hung.wait(10), limited.busy))
        await until(lambda: limiter.in_flight == 1, 2)
        # When an urgent tick reads the loss
        token = URGENT.set(True)
        try:
            got = await asyncio.wait_for(limited.loss_intervals_async(ref, t0, t1, 30.0), 2)
        finally:
            URGENT.reset(token)
        hung.set()
        await blocker
        return got, len(source.batched)

    try:
        got, batches = asyncio.run(main())
    finally:
        limiter.close()
    # Then it was answered through the urgent slot, by a single read, not in a batch round
    assert got == []
    assert source.single == 1
    assert batches == 0


def test_a_woken_tick_is_urgent_and_a_timed_one_is_not(monkeypatch: Any) -> None:
    # Given a rollout's loop whose ticks record whether they ran as urgent
    objects = FakeObjects(body=rollout_body())
    deps = FakeDeps(objects, FakeRouter(), FakeMetrics(), FakeClock())
    seen: list[bool] = []

    async def record(*_: Any) -> timedelta:
        seen.append(URGENT.get())
        return timedelta(seconds=1) if len(seen) == 2 else timedelta(minutes=5)

    monkeypatch.setattr(loop, "tick", record)

    async def main() -> None:
        stopped = Stopped()
        deps.wakeups.saw("uid-1", objects.body)
        task = asyncio.create_task(loop.run(deps, objects.body, lambda e: None, stopped, logging.getLogger()))
        await until(lambda: len(seen) == 1, 5)
        # When an abort annotation wakes it, and then its next tick comes on time
        edited = {
            **objects.body,
            "metadata": {**objects.body["metadata"], "annotations": {"lossgate.io/abort": ""}},
        }
        deps.wakeups.saw("uid-1", edited)
        await until(lambda: len(seen) == 3, 10)
        stopped.flag.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    # Then the first tick was routine, the woken one urgent, the one after it routine again
    assert seen[:3] == [False, True, False]
    assert deps.gate.running == 0


def test_a_finished_rollouts_ticks_wait_behind_live_ones() -> None:
    # Given bodies as kopf hands them to the daemon, then only a finished phase makes a tick background
    assert loop.finished({"status": {"phase": "Promoted"}})
    assert loop.finished({"status": {"phase": "RolledBack"}})
    assert not loop.finished({"status": {"phase": "Progressing"}})
    assert not loop.finished({"status": "garbage"})
    assert not loop.finished({})
