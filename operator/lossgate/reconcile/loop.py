"""The per-rollout loop the kopf daemon runs: tick, then sleep until the requeue, a wake-up or stop.

A tick is bounded by LOSSGATE_TICK_TIMEOUT_S. A tick that raises or times out becomes
Reconciled=False and one Event per distinct error (trouble.py), never a silent restart, and is
retried with exponential back-off; a wake-up (spec edit, command annotation) retries at once.
Sleeps end on a wall-clock grid of LOSSGATE_TICK_QUANTUM_S, so rollouts tick in rounds whose
Prometheus reads are batched (batching.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from lossgate.core.actions import EmitEvent
from lossgate.reconcile.deps import Deps
from lossgate.reconcile.rollout import tick
from lossgate.reconcile.trouble import failure_backoff, failure_message, report_trouble
from lossgate.reconcile.wake import sleep

MIN_SLEEP = timedelta(seconds=1)


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
    failures = 0
    try:
        while not stopped:
            wake.clear()  # a wake-up during the tick makes the next sleep return at once
            delay, ok = await _one_tick(deps, body, emit, logger, failures)
            failures = 0 if ok else failures + 1
            seconds = on_grid(max(MIN_SLEEP, delay).total_seconds(), deps.settings.tick_quantum_s)
            await sleep(stopped, wake, seconds)
    finally:
        deps.wakeups.forget(uid)


def on_grid(seconds: float, quantum_s: float, now: float | None = None) -> float:
    """The sleep that ends on the next multiple of the quantum (wall clock) at or after `seconds`:
    rollouts due at about the same time wake together, so their Prometheus reads are batched."""
    if quantum_s <= 0:
        return seconds
    t = time.time() if now is None else now
    return math.ceil((t + seconds) / quantum_s) * quantum_s - t


async def _one_tick(
    deps: Deps,
    body: Mapping[str, Any],
    emit: Callable[[EmitEvent], None],
    logger: logging.Logger | logging.LoggerAdapter[Any],
    failures: int,
) -> tuple[timedelta, bool]:
    """(the decision's requeue, True) when the tick completed, else (the back-off, False)."""
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
