"""Wake a rollout's daemon early: on a spec edit or a manual-command annotation, not on our own writes.

kopf's watch delivers every change of a ModelRollout to `handlers.wake_on_change` (kopf.on.event: no
progress or diffbase annotations, so it writes nothing and causes no change itself). It compares
what matters with what it saw last, and sets the rollout's asyncio.Event, which the daemon waits on
next to `stopped`. The operator's own writes never wake it:

- status writes do not bump metadata.generation and carry no command annotation;
- removing a handled command annotation is a removal (only a command appearing wakes);
- kopf's bookkeeping annotations (lossgate.io/last-handled-configuration, progress) are not commands.

While a rollout's status is unreadable, a change of its status (other than the conditions lossgate
writes) wakes it too, so a fixed or cleared status is picked up at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lossgate.core.observation import ManualCommand
from lossgate.reconcile.status_io import raw_status

COMMAND_ANNOTATIONS = frozenset(c.annotation for c in ManualCommand)


@dataclass(frozen=True)
class Seen:
    """What of an object can wake its daemon."""

    generation: int
    commands: frozenset[str]
    status_digest: str  # the status without its conditions (see module doc)


def seen_of(body: Mapping[str, Any]) -> Seen:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = {k: v for k, v in raw_status(body).items() if k != "conditions"}
    digest = hashlib.sha256(json.dumps(status, sort_keys=True, default=str).encode()).hexdigest()
    return Seen(int(meta.get("generation") or 0), COMMAND_ANNOTATIONS & set(annotations), digest)


def should_wake(before: Seen | None, after: Seen, *, watch_status: bool = False) -> bool:
    if before is None:  # first sight (operator start, new object): the daemon's first tick handles it
        return False
    if after.generation != before.generation or after.commands - before.commands:
        return True
    return watch_status and after.status_digest != before.status_digest


class Wakeups:
    """Per-rollout wake-up events, keyed by metadata.uid. Used on kopf's event loop only."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._seen: dict[str, Seen] = {}
        self._watch_status: set[str] = set()

    def event(self, uid: str) -> asyncio.Event:
        return self._events.setdefault(uid, asyncio.Event())

    def saw(self, uid: str, body: Mapping[str, Any]) -> bool:
        """Record a watch event of the object; True (and the event set) when its daemon should wake."""
        after = seen_of(body)
        wake = should_wake(self._seen.get(uid), after, watch_status=uid in self._watch_status)
        self._seen[uid] = after
        if wake:
            self.event(uid).set()
        return wake

    def watch_status(self, uid: str, on: bool) -> None:
        """Also wake on status edits (set while the status is unreadable)."""
        if on:
            self._watch_status.add(uid)
        else:
            self._watch_status.discard(uid)

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)
        self._seen.pop(uid, None)
        self._watch_status.discard(uid)


async def sleep(stopped: Any, wake: asyncio.Event, seconds: float) -> None:
    """Sleep until `seconds` pass, kopf's `stopped` flag is set, or `wake` is set, whichever is first."""
    if wake.is_set():
        return
    waiters = {asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
