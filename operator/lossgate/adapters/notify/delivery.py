"""Deliver notices to the sinks: a bounded queue and one worker thread per sink, retries with backoff.

submit() never blocks and never raises: it filters and enqueues, and a full queue drops the notice
(counted) rather than hold up a decision. Each sink's worker sends in order, with a timeout per
request, and retries a failed delivery (connection error, timeout, 408, 429, 5xx) with doubling
backoff; every retry carries the same idempotency key, so a receiver can drop a duplicate. A hanging
or failing sink only delays its own queue: the others and the operator's ticks go on.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from lossgate.adapters.notify.config import NotificationSettings, RetryConfig, SinkConfig
from lossgate.adapters.notify.payloads import request_for
from lossgate.core.notify import Envelope

log = logging.getLogger(__name__)
# (sink, outcome): outcome is delivered, retried, failed (gave up or refused) or dropped (queue full).
Record = Callable[[str, str], None]
_RETRIED_STATUS = frozenset({408, 425, 429})
_STOP_POLL_S = 0.2


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    retry: bool
    detail: str


class _Sink:
    def __init__(self, cfg: SinkConfig, retry: RetryConfig, size: int, record: Record, stop: threading.Event):
        self.cfg, self.retry, self.record, self.stop = cfg, retry, record, stop
        self.url = cfg.resolve_url()
        self.queue: queue.Queue[Envelope] = queue.Queue(maxsize=size)
        self.thread = threading.Thread(target=self._run, name=f"lossgate-notify-{cfg.name}", daemon=True)

    def offer(self, env: Envelope) -> None:
        try:
            self.queue.put_nowait(env)
        except queue.Full:
            log.warning("notification sink %s: queue full, dropped %s", self.cfg.name, env.key)
            self.record(self.cfg.name, "dropped")

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                env = self.queue.get(timeout=_STOP_POLL_S)
            except queue.Empty:
                continue
            try:
                self._deliver(env)
            except Exception:  # a bug in one payload must not end the sink's worker
                log.exception("notification sink %s: could not deliver %s", self.cfg.name, env.key)
                self.record(self.cfg.name, "failed")

    def _deliver(self, env: Envelope) -> None:
        headers, body = request_for(self.cfg, env)
        for attempt in range(1, self.retry.attempts + 1):
            got = self._post(headers, body)
            if got.ok:
                self.record(self.cfg.name, "delivered")
                return
            if not got.retry or attempt == self.retry.attempts:
                log.warning("notification sink %s gave up on %s: %s", self.cfg.name, env.key, got.detail)
                self.record(self.cfg.name, "failed")
                return
            self.record(self.cfg.name, "retried")
            if self.stop.wait(self.retry.backoff(attempt)):
                return  # shutting down: the notice is lost with the process (docs/notifications.md)

    def _post(self, headers: dict[str, str], body: bytes) -> _Attempt:
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout_seconds) as resp:  # noqa: S310
                resp.read()
                return _Attempt(True, False, str(resp.status))
        except urllib.error.HTTPError as err:
            retry = err.code in _RETRIED_STATUS or err.code >= 500
            return _Attempt(False, retry, f"HTTP {err.code}")
        except (urllib.error.URLError, OSError) as err:  # refused, reset, DNS, timeout
            return _Attempt(False, True, str(err))


class Notifications:
    """The Notifier port: submit() from the tick, deliveries in the sinks' threads."""

    def __init__(self, settings: NotificationSettings | None = None, record: Record | None = None) -> None:
        self.settings = settings or NotificationSettings()
        self._stop = threading.Event()
        rec: Record = record or (lambda _sink, _outcome: None)
        self._sinks = [
            _Sink(cfg, self.settings.retry, self.settings.queue_size, rec, self._stop)
            for cfg in self.settings.sinks
        ]
        self._started = False

    def submit(self, env: Envelope) -> None:
        for sink in self._sinks:
            if sink.cfg.wants(env.notice.event, env.notice.severity, env.subscriptions):
                sink.offer(env)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for sink in self._sinks:
                sink.thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the workers; a request in flight ends at its own timeout (the threads are daemons)."""
        self._stop.set()
        if self._started:
            for sink in self._sinks:
                sink.thread.join(timeout_s)
