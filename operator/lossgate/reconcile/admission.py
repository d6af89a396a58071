"""How many ticks run at once: LOSSGATE_MAX_CONCURRENT_TICKS, urgent ones always admitted.

A tick holds its rollout's parsed status, the judge's fold and the evidence it read until it ends.
Without a bound, an operator restart or a bulk apply starts every rollout's tick at once: hundreds
in flight, each waiting for a thread, the peak memory (which CPython and glibc keep afterwards) set
by the burst, and a command queued behind all of them. Routine ticks beyond the bound wait here, in
order, before they read anything; a tick someone asked for (loop.py marks it urgent) never waits.
Waiting here is not part of a tick's timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class TickGate:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._slots = asyncio.Semaphore(self.limit)
        self.running = 0  # ticks inside, urgent ones included (telemetry, tests)
        self.waiting = 0  # routine ticks queued for a slot
        self.peak = 0

    @asynccontextmanager
    async def slot(self, urgent: bool = False) -> AsyncIterator[None]:
        if urgent:
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                yield
            finally:
                self.running -= 1
            return
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
