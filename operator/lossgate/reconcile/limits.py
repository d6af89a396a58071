"""Per-Prometheus concurrency: a slow or dead Prometheus only delays the rollouts that read it.

Each endpoint (address + credentials identity) gets its own small thread pool of
LOSSGATE_MAX_CONCURRENT_PER_PROMETHEUS workers, so at most that many queries are ever in flight to it,
even after a cancelled tick (the thread finishes its bounded HTTP call, the slot stays taken until
then), and blocked queries never occupy the event loop's default executor that the Kubernetes calls
of every other rollout use. A query that waits longer than the queue timeout for a slot is
Unavailable ("saturated"), like any other metrics outage: decide() holds, and rolls back only after
onMetricsUnavailable.after. An urgent tick (threads.URGENT: someone just edited or commanded the
rollout) reads through one extra slot of its own and skips the batch window, so a command never waits
for the routine reads queued before it.

`LimitedMetrics` implements the MetricsSource port (blocking methods, as the port says) and adds
`*_async` methods that wait for the slot on the event loop instead of in a thread: use those.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from functools import partial
from typing import TypeVar

from lossgate.core.calibration import CalibrationInterval
from lossgate.core.evidence import IntervalStats, Problem, TrainingRun
from lossgate.core.guardrail import CountInterval
from lossgate.core.label_checks import LabelEvidence
from lossgate.core.paired import PairedStats
from lossgate.core.token_fold import TokenInterval
from lossgate.ports import (
    CalibrationSeriesRef,
    CalibrationSource,
    GuardrailSeriesRef,
    GuardrailSource,
    LabelSource,
    LossSeriesRef,
    MetricsErrorKind,
    MetricsSource,
    PairedSource,
    TokenSeriesRef,
    TokenSource,
)
from lossgate.reconcile.batching import LossBatcher
from lossgate.reconcile.threads import URGENT, to_thread

T = TypeVar("T")
# Problem reasons (details["reason"], adapters/prometheus/client.py) that mean our credentials or CA
# are wrong: the Secrets behind them are read again at the next tick (a rotated token).
REFUSED = frozenset({"Unauthorized", "TLS"})


class EndpointLimiter:
    """At most `limit` calls in flight to one Prometheus, on threads of its own."""

    def __init__(self, name: str, limit: int, queue_timeout_s: float) -> None:
        self.name, self.limit, self.queue_timeout_s = name, max(1, limit), queue_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="lossgate-prom")
        self._urgent_pool: ThreadPoolExecutor | None = None  # the extra slot, made on first use
        self._lock = threading.Lock()
        self.in_flight = 0  # calls running now (telemetry, tests)

    def _track(self, on_start: Callable[[], None], fn: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            with self._lock:
                self.in_flight += 1
            on_start()
            try:
                return fn()
            finally:
                with self._lock:
                    self.in_flight -= 1

        return run

    def call(self, fn: Callable[[], T], busy: Callable[[float], T]) -> T:
        """Blocking: run fn in a slot; busy(waited_s) if no slot frees within the queue timeout."""
        started = threading.Event()
        try:
            fut = self._pool.submit(self._track(started.set, fn))
        except RuntimeError:  # retired while a tick still held it (a rotated token): run unlimited
            return fn()
        if not started.wait(self.queue_timeout_s) and fut.cancel():
            return busy(self.queue_timeout_s)
        return fut.result()

    async def call_async(self, fn: Callable[[], T], busy: Callable[[float], T]) -> T:
        """The same, waiting for the slot on the event loop (no thread is held while queued)."""
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def mark() -> None:
            loop.call_soon_threadsafe(started.set)

        try:
            fut: Future[T] = self._pool_now().submit(self._track(mark, fn))
        except RuntimeError:  # retired while a tick still held it (a rotated token): run unlimited
            return await to_thread(fn)
        try:
            await asyncio.wait_for(started.wait(), self.queue_timeout_s)
        except TimeoutError:
            if fut.cancel():
                return busy(self.queue_timeout_s)
        except asyncio.CancelledError:
            fut.cancel()  # still queued: never runs; running: finishes on its own thread
            raise
        return await asyncio.wrap_future(fut)

    def _pool_now(self) -> ThreadPoolExecutor:
        """The shared slots, or the urgent tick's own one."""
        if not URGENT.get():
            return self._pool
        if self._urgent_pool is None:
            self._urgent_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossgate-prom-urgent")
        return self._urgent_pool

    def _pools(self) -> list[ThreadPoolExecutor]:
        return [self._pool] if self._urgent_pool is None else [self._pool, self._urgent_pool]

    def retire(self) -> None:
        """No new calls will come: the threads end once the calls already queued are done."""
        for pool in self._pools():
            pool.shutdown(wait=False)

    def close(self) -> None:
        for pool in self._pools():
            pool.shutdown(wait=False, cancel_futures=True)


class LimitedMetrics:
    """A MetricsSource whose calls go through its endpoint's EndpointLimiter."""

    def __init__(
        self,
        inner: MetricsSource,
        limiter: EndpointLimiter,
        address: str,
        on_refused: Callable[[], None] | None = None,
        batcher: LossBatcher | None = None,
    ) -> None:
        self.inner, self.limiter, self.address = inner, limiter, address
        self._on_refused = on_refused
        self.batcher = batcher

    # -- the MetricsSource port (blocking: the caller's thread waits for the slot) --------------------
    def loss_intervals(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        got = self.limiter.call(partial(self.inner.loss_intervals, ref, start, end, interval_s), self.busy)
        return self._seen(got)

    def training_run(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        got = self.limiter.call(
            partial(self.inner.training_run, run, baseline_run, start, end, step_s), self.busy
        )
        return self._seen(got)

    def label_evidence(self, ref: LossSeriesRef, start: datetime, end: datetime) -> LabelEvidence | Problem:
        if not isinstance(self.inner, LabelSource):
            return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source has no label series")
        return self._seen(self.limiter.call(partial(self.inner.label_evidence, ref, start, end), self.busy))

    # -- the same on the event loop: what observe() should await -------------------------------------
    async def loss_intervals_async(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[IntervalStats] | Problem:
        batcher = None if URGENT.get() else self.batcher  # an urgent tick does not wait for the round
        if batcher is not None and id(batcher.source) == id(self.inner):  # joins the round
            return self._seen(await batcher.read(ref, start, end, interval_s))
        fn = partial(self.inner.loss_intervals, ref, start, end, interval_s)
        return self._seen(await self.limiter.call_async(fn, self.busy))

    async def training_run_async(
        self, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
    ) -> TrainingRun | Problem:
        fn = partial(self.inner.training_run, run, baseline_run, start, end, step_s)
        return self._seen(await self.limiter.call_async(fn, self.busy))

    async def label_evidence_async(
        self, ref: LossSeriesRef, start: datetime, end: datetime
    ) -> LabelEvidence | Problem | None:
        """None when this Prometheus client reads no label series."""
        if not isinstance(self.inner, LabelSource):
            return None
        fn = partial(self.inner.label_evidence, ref, start, end)
        return self._seen(await self.limiter.call_async(fn, self.busy))

    async def guardrail_intervals_async(
        self, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> list[CountInterval] | Problem:
        if not isinstance(self.inner, GuardrailSource):
            return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no guardrails")
        fn = partial(self.inner.guardrail_intervals, ref, start, end, interval_s)
        return self._seen(await self.limiter.call_async(fn, self.busy))

    async def class_loss_intervals_async(
        self, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
    ) -> dict[str, list[IntervalStats]] | Problem:
        if not isinstance(self.inner, GuardrailSource):
            return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no class losses")
        fn = partial(self.inner.class_loss_intervals, ref, start, end, interval_s)
        return self._seen(await self.limiter.call_async(fn, self.busy))

    def busy(self, waited_s: float) -> Problem:
        lim = self.limiter
        return Problem(
            MetricsErrorKind.UNAVAILABLE.value,
            f"Prometheus at {self.address} is saturated: {lim.in_flight} of its {lim.limit} query slots "
            f"are busy and this query waited {waited_s:g}s for one (slow or unreachable Prometheus? "
            "LOSSGATE_MAX_CONCURRENT_PER_PROMETHEUS sets the slots)",
            {"address": self.address, "reason": "Saturated"},
        )

    def _seen(self, got: T) -> T:
        if isinstance(got, Problem) and got.details.get("reason") in REFUSED and self._on_refused:
            self._on_refused()
        return got


async def read_loss_intervals(
    metrics: MetricsSource, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[IntervalStats] | Problem:
    """What observe awaits: the endpoint-limited read of a LimitedMetrics (queued on the event loop),
    any other MetricsSource (a test's fake) in a thread."""
    if isinstance(metrics, LimitedMetrics):
        return await metrics.loss_intervals_async(ref, start, end, interval_s)
    return await to_thread(metrics.loss_intervals, ref, start, end, interval_s)


async def read_guardrail(
    metrics: MetricsSource, ref: GuardrailSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[CountInterval] | Problem:
    """One guardrail's intervals, endpoint-limited; a Problem for a source that reads none."""
    if isinstance(metrics, LimitedMetrics):
        return await metrics.guardrail_intervals_async(ref, start, end, interval_s)
    if isinstance(metrics, GuardrailSource):
        return await to_thread(metrics.guardrail_intervals, ref, start, end, interval_s)
    return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no guardrails")


async def read_paired(
    metrics: MetricsSource, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[PairedStats] | Problem:
    """The paired intervals of a shadow step, endpoint-limited; a Problem for a source that reads none."""
    inner = metrics.inner if isinstance(metrics, LimitedMetrics) else metrics
    if not isinstance(inner, PairedSource):
        return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no paired counters")
    fn = partial(inner.paired_intervals, ref, start, end, interval_s)
    if isinstance(metrics, LimitedMetrics):
        got: list[PairedStats] | Problem = await metrics.limiter.call_async(fn, metrics.busy)
        return metrics._seen(got)
    return await to_thread(fn)


async def read_calibration(
    metrics: MetricsSource, ref: CalibrationSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[CalibrationInterval] | Problem:
    """The reliability counters' intervals, endpoint-limited; a Problem for a source that reads none."""
    inner = metrics.inner if isinstance(metrics, LimitedMetrics) else metrics
    if not isinstance(inner, CalibrationSource):
        return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no calibration counters")
    fn = partial(inner.calibration_intervals, ref, start, end, interval_s)
    if isinstance(metrics, LimitedMetrics):
        got: list[CalibrationInterval] | Problem = await metrics.limiter.call_async(fn, metrics.busy)
        return metrics._seen(got)
    return await to_thread(fn)


async def read_tokens(
    metrics: MetricsSource, ref: TokenSeriesRef, start: datetime, end: datetime, interval_s: float
) -> list[TokenInterval] | Problem:
    """The token counters' intervals (spec.analysis.tokenLoss), endpoint-limited."""
    inner = metrics.inner if isinstance(metrics, LimitedMetrics) else metrics
    if not isinstance(inner, TokenSource):
        return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no token counters")
    fn = partial(inner.token_intervals, ref, start, end, interval_s)
    if isinstance(metrics, LimitedMetrics):
        got: list[TokenInterval] | Problem = await metrics.limiter.call_async(fn, metrics.busy)
        return metrics._seen(got)
    return await to_thread(fn)


async def read_class_losses(
    metrics: MetricsSource, ref: LossSeriesRef, start: datetime, end: datetime, interval_s: float
) -> dict[str, list[IntervalStats]] | Problem:
    """The loss intervals per class, endpoint-limited."""
    if isinstance(metrics, LimitedMetrics):
        return await metrics.class_loss_intervals_async(ref, start, end, interval_s)
    if isinstance(metrics, GuardrailSource):
        return await to_thread(metrics.class_loss_intervals, ref, start, end, interval_s)
    return Problem(MetricsErrorKind.BAD_QUERY.value, "this metrics source reads no class losses")


async def read_training_run(
    metrics: MetricsSource, run: str, baseline_run: str | None, start: datetime, end: datetime, step_s: float
) -> TrainingRun | Problem:
    """The same for the training run."""
    if isinstance(metrics, LimitedMetrics):
        return await metrics.training_run_async(run, baseline_run, start, end, step_s)
    return await to_thread(metrics.training_run, run, baseline_run, start, end, step_s)


async def read_label_evidence(
    metrics: MetricsSource, ref: LossSeriesRef, start: datetime, end: datetime
) -> LabelEvidence | Problem | None:
    """The label joiner's evidence for [start, end], endpoint-limited like the other reads; None for a
    source without label series (a test's fake)."""
    if isinstance(metrics, LimitedMetrics):
        return await metrics.label_evidence_async(ref, start, end)
    if isinstance(metrics, LabelSource):
        return await to_thread(metrics.label_evidence, ref, start, end)
    return None
