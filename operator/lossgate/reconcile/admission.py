"""How many ticks run at once: LOSSGATE_MAX_CONCURRENT_TICKS, urgent ones always admitted, rollouts in
progress before finished ones.

A tick holds its rollout's parsed status, the judge's fold and the evidence it read until it ends.
Without a bound, an operator restart or a bulk apply starts every rollout's tick at once: hundreds
in flight, each waiting for a thread, the peak memory (which CPython and glibc keep afterwards) set
by the burst, and a command queued behind all of them. Routine ticks beyond the bound wait here
before they read anything, in order, but a rollout in progress before a finished one: after a
restart with 10,000 finished rollouts and 100 live ones, the live ones do not wait for the others'
first ticks. A tick someone asked for (loop.py marks it urgent) never waits. Waiting here is not
part of a tick's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class TickGate:
    """Use on one event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._routine = 0  # routine ticks inside (at most `limit`)
        self._urgent = 0
        # Waiting routine ticks: rollouts in progress first, then finished ones (`background`).
        self._queues: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())
        self.peak = 0

    @property
    def running(self) -> int:
        return self._routine + self._urgent

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues)

    @asynccontextmanager
    async def slot(self, urgent: bool = False, background: bool = False) -> AsyncIterator[None]:
        if urgent:
            self._urgent += 1
            self.peak = max(self.peak, self.running)
            try:
                yield
            finally:
                self._urgent -= 1
            return
        await self._acquire(background)
        self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, background: bool) -> None:
        if self._routine < self.limit and not self.waiting:
            self._routine += 1
            return
        queue = self._queues[1 if background else 0]
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn  # _release hands its slot over: _routine already counts this tick
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed a slot just as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(turn)
            raise

    def _release(self) -> None:
        for queue in self._queues:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._routine -= 1
