"""Coalesce the loss reads of rollouts that tick together and share a Prometheus into one batch.

Daemons wake on a shared grid (loop.py rounds every sleep up to LOSSGATE_TICK_QUANTUM_S), so the
rollouts due at one grid point ask within milliseconds of each other. The first read of a round
opens a short window; every read of the same endpoint arriving in it joins, and the round is read
with one query per series kind for all of them (adapters/prometheus/batch.py) in one slot of the
endpoint's limiter. Queries per interval then depend on the number of endpoints and grid points,
not on the number of rollouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Protocol

from lossgate.adapters.prometheus import LossRequest
from lossgate.core.evidence import IntervalStats, Problem
from lossgate.ports import LossSeriesRef

BATCH_WINDOW_S = 0.05  # how long a round stays open after its first read

LossResult = list[IntervalStats] | Problem


class BatchSource(Protocol):
    def loss_intervals_batch(self, requests: Sequence[LossRequest]) -> list[LossResult]: ...


class Limiter(Protocol):
    async def call_async(
        self, fn: Callable[[], list[LossResult]], busy: Callable[[float], list[LossResult]]
    ) -> list[LossResult]: ...


@dataclass
class _Round:
    requests: list[LossRequest] = field(default_factory=list)
    waiters: list[asyncio.Future[LossResult]] = field(default_factory=list)


class LossBatcher:
    """One endpoint's coalescer (create it on the event loop that uses it)."""

    def __init__(
        self,
        source: BatchSource,
        limiter: Limiter,
        busy: Callable[[float], Problem],
        window_s: float = BATCH_WINDOW_S,
    ) -> None:
        self.source, self.limiter, self.busy, self.window_s = source, limiter, busy, window_s
        self._round: _Round | None = None
        self.rounds = 0  # batches sent (telemetry, tests)

    async def read(self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float) -> LossResult:
        if self._round is None:
            self._round = _Round()
            asyncio.get_running_loop().call_later(self.window_s, self._flush)
        fut: asyncio.Future[LossResult] = asyncio.get_running_loop().create_future()
        self._round.requests.append(LossRequest(ref, start, end, interval_s))
        self._round.waiters.append(fut)
        return await fut

    def _flush(self) -> None:
        rnd, self._round = self._round, None
        if rnd is not None:
            self.rounds += 1
            asyncio.get_running_loop().create_task(self._run(rnd))

    async def _run(self, rnd: _Round) -> None:
        n = len(rnd.requests)
        try:
            results = await self.limiter.call_async(
                partial(self.source.loss_intervals_batch, rnd.requests), partial(self._all_busy, n)
            )
        except Exception as err:  # never leave a waiting tick hanging
            for fut in rnd.waiters:
                if not fut.done():
                    fut.set_exception(err)
            return
        for fut, result in zip(rnd.waiters, results, strict=True):
            if not fut.done():  # a cancelled tick's future is done already
                fut.set_result(result)

    def _all_busy(self, n: int, waited_s: float) -> list[LossResult]:
        return [self.busy(waited_s)] * n
