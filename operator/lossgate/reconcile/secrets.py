"""Prometheus credentials from Secrets, cached: one GET per Secret per refresh period, not per tick.

The chart grants `get` on Secrets only (never list/watch, so the operator cannot read every Secret of
a namespace), so the cache cannot be fed by a watch. Instead an entry is read again when it is older
than LOSSGATE_SECRET_REFRESH_S (default 60 s), and at once when Prometheus refuses the credentials
or the CA it was built from (limits.REFUSED): a rotated token is used from the next tick on.

Problems are not cached: a missing Secret is read again every tick until it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lossgate.adapters.kube.objects import secret_key
from lossgate.core.evidence import Problem
from lossgate.ports import Clock, RouterErrorKind
from lossgate.reconcile.threads import to_thread

SecretReader = Callable[[str, str], dict[str, str] | Problem]


@dataclass(frozen=True)
class _Entry:
    data: dict[str, str]
    read_at: datetime


class SecretCache:
    def __init__(self, read: SecretReader, clock: Clock, refresh: timedelta) -> None:
        self._read, self._clock, self.refresh = read, clock, refresh
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def value(self, namespace: str, name: str, key: str) -> str | Problem:
        data = await self.data(namespace, name)
        return data if isinstance(data, Problem) else secret_key(data, namespace, name, key)

    async def data(self, namespace: str, name: str) -> dict[str, str] | Problem:
        now, cached = self._clock.now(), self._entries.get((namespace, name))
        if cached is not None and now - cached.read_at < self.refresh:
            return cached.data
        got = await to_thread(self._read, namespace, name)
        if isinstance(got, Problem):
            if cached is not None and got.kind == RouterErrorKind.UNAVAILABLE.value:
                return cached.data  # an API server hiccup: keep the last good value, read again next time
            self._entries.pop((namespace, name), None)
            return got
        self._entries[(namespace, name)] = _Entry(got, now)
        return got

    def invalidate(self, namespace: str, name: str) -> None:
        """Read this Secret again at its next use. Thread-safe (one dict operation)."""
        self._entries.pop((namespace, name), None)
