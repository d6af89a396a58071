"""The joiner's HTTP API (aiohttp): JSON batches, KServe CloudEvents, /metrics, /healthz.

Store calls run in a thread pool (one thread for SQLite, whose writes are serial anyway; several for
Redis), so the event loop keeps accepting requests while a transaction commits.

    POST /v1/predictions  {"predictions": [{"id", "model", "version", "class"?, "served_at"?,
                                            "probabilities" | "logits"}]}
    POST /v1/labels       {"labels": [{"id", "label"}]}
    POST /v1/events, /    binary-mode CloudEvents (KServe inference logger; io.lossgate.label)
    GET  /metrics         Prometheus text exposition
    GET  /healthz         200 when the store answers
Errors: 400 {"error", "field"} naming the field (nothing stored), 429 + Retry-After when full, 503 +
Retry-After when the store is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from aiohttp import web

from lossgate.instrument.class_cap import DEFAULT_MAX_CLASSES, ClassCap
from lossgate.joiner import cloudevents, parse
from lossgate.joiner.exposition import render
from lossgate.joiner.records import FieldError, Full, Prediction
from lossgate.joiner.store import Store

log = logging.getLogger("lossgate.joiner")
T = TypeVar("T")
MAX_BODY = 16 * 1024 * 1024


class Clock:
    """Wall-clock seconds; tests may move it (POST /v1/clock, only with --allow-clock-override)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.OperationalError, OSError]
    with contextlib.suppress(ImportError):
        import redis

        errors.append(redis.RedisError)
    return tuple(errors)


class Joiner:
    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        threads: int = 1,
        expire_every_s: float = 1.0,
        retry_after_s: int = 5,
        allow_clock_override: bool = False,
        max_classes: int = DEFAULT_MAX_CLASSES,
    ) -> None:
        self.store = store
        self.classes = ClassCap(max_classes)  # bounded `class` label values per model version
        self.clock = clock or Clock()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="joiner-store")
        self.expire_every_s = expire_every_s
        self.retry_after_s = retry_after_s
        self.allow_clock_override = allow_clock_override
        self._store_errors = _store_errors()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def _guard(
        self, handler: Callable[[web.Request], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def wrapped(request: web.Request) -> web.Response:
            try:
                return web.json_response(await handler(request))
            except FieldError as e:
                return web.json_response({"error": str(e), "field": e.field}, status=400)
            except Full as e:
                return web.json_response(
                    {"error": str(e), "pending": e.pending, "capacity": e.capacity},
                    status=429, headers={"Retry-After": str(self.retry_after_s)},
                )  # fmt: skip
            except self._store_errors as e:
                log.warning("store unavailable: %s", e)
                return web.json_response(
                    {"error": f"store unavailable: {e}"},
                    status=503,
                    headers={"Retry-After": str(self.retry_after_s)},
                )

        return wrapped

    async def predictions(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        batch = self._capped(parse.predictions(parse.loads(await request.read()), now))
        return (await self._run(self.store.add_predictions, batch, now)).as_dict()

    def _capped(self, batch: list[Prediction]) -> list[Prediction]:
        """Each prediction's class as the cap admits it (beyond max_classes: "other", counted)."""
        out = []
        for p in batch:
            model, version, klass = p.key
            admitted = self.classes.admit(model, version, klass)
            out.append(p if admitted == klass else replace(p, key=(model, version, admitted)))
        return out

    async def labels(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        batch = parse.labels(parse.loads(await request.read()))
        return (await self._run(self.store.add_labels, batch, now)).as_dict()

    async def events(self, request: web.Request) -> dict[str, Any]:
        now = self.clock.now()
        ev = cloudevents.event(request.headers, request.query)
        body = await request.read()
        if ev.type == cloudevents.REQUEST:
            return {"ignored": "request event (the response event carries the scores)"}
        if ev.type == cloudevents.RESPONSE:
            batch = self._capped(cloudevents.predictions(ev, body, now))
            return (await self._run(self.store.add_predictions, batch, now)).as_dict()
        if ev.type == cloudevents.LABEL:
            return (await self._run(self.store.add_labels, [cloudevents.label(ev, body)], now)).as_dict()
        raise FieldError(
            "header ce-type",
            f"unknown event type {ev.type[:80]!r}: expected {cloudevents.RESPONSE}, {cloudevents.REQUEST} "
            f"or {cloudevents.LABEL}",
        )

    async def set_clock(self, request: web.Request) -> dict[str, Any]:
        doc = parse.loads(await request.read())
        now = doc.get("now") if isinstance(doc, dict) else None
        if isinstance(now, bool) or not isinstance(now, int | float):
            raise FieldError("now", "must be Unix seconds")
        self.clock.offset = float(now) - time.time()
        return {"now": self.clock.now()}

    async def metrics(self, request: web.Request) -> web.Response:
        body = await self._run(render, self.store, self.classes.folded())
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(self, request: web.Request) -> web.Response:
        try:
            pending = await self._run(self.store.pending)
        except self._store_errors as e:
            return web.json_response({"ok": False, "error": str(e)}, status=503)
        return web.json_response({"ok": True, "pending": pending, "capacity": self.store.capacity})

    async def _expiry(self) -> None:
        while True:
            try:
                n = await self._run(self.store.expire, self.clock.now())
                if n:
                    log.info("expired %d predictions unlabelled", n)
            except self._store_errors as e:
                log.warning("expiry failed (retried): %s", e)
            await asyncio.sleep(self.expire_every_s)

    async def _background(self, app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._expiry())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self.pool.shutdown(wait=True)
        self.store.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/v1/predictions", self._guard(self.predictions))
        app.router.add_post("/v1/labels", self._guard(self.labels))
        app.router.add_post("/v1/events", self._guard(self.events))
        app.router.add_post("/", self._guard(self.events))  # KServe's logger URL is often the bare service
        if self.allow_clock_override:
            app.router.add_post("/v1/clock", self._guard(self.set_clock))
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.cleanup_ctx.append(self._background)
        return app
