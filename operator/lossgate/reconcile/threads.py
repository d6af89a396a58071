"""Where the reconciler's blocking calls run, and which ticks go first.

Kubernetes calls (status and route writes, Secret reads) block, so they run on threads. Two pools:
routine ticks share LOSSGATE_KUBE_THREADS threads; a tick someone asked for (a spec edit, a command
annotation: loop.py marks it urgent) runs on a small pool of its own, so an abort never queues
behind a round of routine status writes. `URGENT` is a context variable: set it for a tick and every
call that tick makes, through `to_thread` here or the Prometheus limiter (limits.py), takes the
urgent path.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

URGENT: contextvars.ContextVar[bool] = contextvars.ContextVar("lossgate_urgent_tick", default=False)
URGENT_THREADS = 4  # commands are rare; a few threads keep several at once from queueing


class Pools:
    """The routine and the urgent thread pool (made lazily, so importing starts no thread)."""

    def __init__(self, routine: int = 16, urgent: int = URGENT_THREADS) -> None:
        self.sizes = {False: max(1, routine), True: max(1, urgent)}
        self._pools: dict[bool, ThreadPoolExecutor] = {}

    def configure(self, routine: int) -> None:
        """Set the routine pool's size (at start-up). A pool of another size already made is retired:
        calls queued on it finish there, new calls go to a pool of the new size."""
        self.sizes[False] = max(1, routine)
        old = self._pools.get(False)
        if old is not None and old._max_workers != self.sizes[False]:
            del self._pools[False]
            old.shutdown(wait=False)

    def pool(self, urgent: bool) -> ThreadPoolExecutor:
        if urgent not in self._pools:
            prefix = "lossgate-urgent" if urgent else "lossgate-kube"
            self._pools[urgent] = ThreadPoolExecutor(self.sizes[urgent], thread_name_prefix=prefix)
        return self._pools[urgent]

    def close(self) -> None:
        pools, self._pools = self._pools, {}
        for p in pools.values():
            p.shutdown(wait=False, cancel_futures=True)


POOLS = Pools()


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """asyncio.to_thread on the pool of the calling tick's urgency (context variables carried over)."""
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await loop.run_in_executor(POOLS.pool(URGENT.get()), call)
