"""The per-rollout loop the kopf daemon runs: tick, then sleep until the requeue, a wake-up or stop.

A tick is bounded by LOSSGATE_TICK_TIMEOUT_S. A tick that raises or times out becomes
Reconciled=False and one Event per distinct error (trouble.py), never a silent restart, and is
retried with exponential back-off; a wake-up (spec edit, command annotation) retries at once.
Sleeps end on a wall-clock grid of LOSSGATE_TICK_QUANTUM_S, so rollouts tick in rounds whose
Prometheus reads are batched (batching.py); a requeue counts from the tick's start, so the period
stays the interval, and each rollout's first requeue is shortened by a stable per-rollout fraction,
so rollouts that start together spread over the interval instead of ticking in one burst.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from lossgate.core.actions import EmitEvent
from lossgate.model.status import TERMINAL_PHASES
from lossgate.reconcile.deps import Deps
from lossgate.reconcile.rollout import tick
from lossgate.reconcile.threads import URGENT
from lossgate.reconcile.trouble import failure_backoff, failure_message, report_trouble
from lossgate.reconcile.wake import sleep

MIN_SLEEP = timedelta(seconds=1)
MIN_GAP_S = 0.05  # between a tick that overran its requeue and the next
FINISHED = frozenset(p.value for p in TERMINAL_PHASES)


class Stopped(Protocol):
    """What the loop uses of kopf.DaemonStopped."""

    def __bool__(self) -> bool: ...

    def wait(self) -> Any: ...


async def run(
    deps: Deps,
    body: Mapping[str, Any],
    emit: Callable[[EmitEvent], None],
    stopped: Stopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
) -> None:
    uid = str(body["metadata"].get("uid") or "")
    wake = deps.wakeups.event(uid)
    failures, first, urgent = 0, True, False
    try:
        while not stopped:
            wake.clear()  # a wake-up during the tick makes the next sleep return at once
            started = time.time()
            delay, ok = await _one_tick(deps, body, emit, logger, failures, urgent)
            failures = 0 if ok else failures + 1
            # A requeue counts from the tick's start (its clock), so a slow tick does not stretch the
            # period past the interval; a failure's back-off counts from the failure. Then the grid.
            wait, q = max(MIN_SLEEP, delay).total_seconds(), deps.settings.tick_quantum_s
            if ok and first and q > 0:  # spread rollouts over the interval (a restart starts them all)
                wait *= phase(uid)
            if ok:
                wait = max(on_grid(wait, q, started) - (time.time() - started), MIN_GAP_S)
            else:
                wait = on_grid(wait, q)
            first = first and not ok
            await sleep(stopped, wake, wait)
            urgent = wake.is_set()  # woken by an edit or a command: this tick goes first (threads.py)
    finally:
        deps.wakeups.forget(uid)


def finished(body: Mapping[str, Any]) -> bool:
    """Whether the rollout's status says it is over (its ticks only watch the route for drift)."""
    status = body.get("status")
    return isinstance(status, Mapping) and status.get("phase") in FINISHED


def phase(uid: str) -> float:
    """A stable fraction in (0, 1] per rollout: its first requeue is shortened by it, so rollouts that
    start together (an operator restart, a bulk apply) tick spread over the interval from then on
    instead of all at once. Waking early is harmless: a tick with nothing new changes nothing."""
    return (zlib.crc32(uid.encode()) % 1000 + 1) / 1000


def on_grid(seconds: float, quantum_s: float, now: float | None = None) -> float:
    """The sleep that ends on the grid point (multiples of the quantum, wall clock) nearest to
    `seconds` from now: rollouts due at about the same time wake together, so their Prometheus reads
    are batched. Nearest, not next: a tick that woke on a grid point and asks for a whole number of
    quanta lands on a grid point again, so the period stays the interval. At most half a quantum
    early, which a deadline absorbs (the tick asks again for the rest)."""
    if quantum_s <= 0:
        return seconds
    t = time.time() if now is None else now
    return max(round((t + seconds) / quantum_s) * quantum_s - t, 0.0)


async def _one_tick(
    deps: Deps,
    body: Mapping[str, Any],
    emit: Callable[[EmitEvent], None],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    failures: int,
    urgent: bool = False,
) -> tuple[timedelta, bool]:
    """(the decision's requeue, True) when the tick completed, else (the back-off, False)."""
    # The wait for a slot is not part of the tick's timeout; a finished rollout waits behind live ones.
    async with deps.gate.slot(urgent, background=finished(body)):
        token = URGENT.set(urgent)  # the tick's task copies the context: its calls take this path
        try:
            return await _timed_tick(deps, body, emit, logger, failures)
        finally:
            URGENT.reset(token)


async def _timed_tick(
    deps: Deps,
    body: Mapping[str, Any],
    emit: Callable[[EmitEvent], None],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    failures: int,
) -> tuple[timedelta, bool]:
    timeout = deps.settings.tick_timeout
    try:
        return await asyncio.wait_for(tick(deps, body, emit), timeout.total_seconds()), True
    except Exception as err:  # a bug or a hang must not kill this rollout's loop, nor pass unseen
        backoff = failure_backoff(failures + 1)
        logger.exception("analysis tick failed; retrying in %ss", backoff.total_seconds())
        reason, message = failure_message(err, timeout)
        try:
            await report_trouble(deps, body, reason, message, emit)
        except Exception:
            logger.exception("could not record the failed tick on the object")
        return backoff, False
