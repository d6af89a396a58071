"""Per-Prometheus limits: a dead Prometheus holds at most its own slots, delays only its own
rollouts, and a query that cannot get a slot in time is Unavailable ("saturated"), not a hang."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from lossgate.core.evidence import Problem
from lossgate.model.analysis import PrometheusSource
from lossgate.ports import LossSeriesRef
from lossgate.reconcile.deps import Deps, OperatorConfig
from lossgate.reconcile.limits import EndpointLimiter, LimitedMetrics
from tests.unit.reconcile_fakes import T0, FakeClock, FakeMetrics, FakeObjects, interval, until

REF = LossSeriesRef("ml", "m", "v1", "v2")
END = T0 + timedelta(seconds=60)


def _dead(limit: int, queue_timeout_s: float) -> tuple[LimitedMetrics, FakeMetrics]:
    """A Prometheus that does not answer until its gate opens."""
    inner = FakeMetrics([interval(T0)])
    inner.gate = threading.Event()
    return LimitedMetrics(inner, EndpointLimiter("dead", limit, queue_timeout_s), "http://dead:9090"), inner


def test_a_dead_prometheus_only_delays_its_own_queries() -> None:
    # Given a black-holed Prometheus with 2 slots, and a healthy one
    dead, dead_inner = _dead(limit=2, queue_timeout_s=0.3)
    healthy = LimitedMetrics(FakeMetrics([interval(T0)]), EndpointLimiter("ok", 2, 0.3), "http://ok:9090")

    async def main() -> tuple[list[object], object, float]:
        # When 3 rollouts query the dead one and then one queries the healthy one
        stuck = [asyncio.create_task(dead.loss_intervals_async(REF, T0, END, 30.0)) for _ in range(3)]
        await until(lambda: dead.limiter.in_flight == 2, 5)
        t1 = time.monotonic()
        ok = await healthy.loss_intervals_async(REF, T0, END, 30.0)
        healthy_s = time.monotonic() - t1
        third = await stuck[2]  # no slot within the queue timeout
        dead_inner.gate.set()  # the dead one answers at last
        return [await s for s in stuck[:2]] + [third], ok, healthy_s

    (first, second, third), ok, healthy_s = asyncio.run(main())
    # Then the healthy one answered at once, unaffected
    assert isinstance(ok, list)
    assert len(ok) == 1
    assert healthy_s < 0.2
    # And the dead one never had more than 2 queries in flight: the third was refused as saturated
    assert isinstance(third, Problem)
    assert (third.kind, third.details["reason"]) == ("Unavailable", "Saturated")
    assert "2 of its 2 query slots are busy" in third.message
    assert "waited 0.3s" in third.message
    assert dead_inner.reads == 2
    # And the two that had slots got their answer when it came
    assert isinstance(first, list)
    assert isinstance(second, list)


def test_a_cancelled_query_frees_no_slot_until_its_thread_ends() -> None:
    # Given a dead Prometheus with one slot, busy with a query whose tick was then cancelled
    dead, inner = _dead(limit=1, queue_timeout_s=0.2)

    async def main() -> object:
        first = asyncio.create_task(dead.loss_intervals_async(REF, T0, END, 30.0))
        await until(lambda: dead.limiter.in_flight == 1, 5)
        first.cancel()
        # When the next tick queries it
        return await dead.loss_intervals_async(REF, T0, END, 30.0)

    got = asyncio.run(main())
    inner.gate.set()
    # Then it is still saturated: the cancelled query's HTTP call still holds the slot
    assert isinstance(got, Problem)
    assert got.details["reason"] == "Saturated"
    assert inner.reads == 1


def test_the_blocking_port_is_limited_too() -> None:
    # Given the MetricsSource port called from threads (what asyncio.to_thread does)
    dead, inner = _dead(limit=1, queue_timeout_s=0.2)
    out: list[object] = []
    threads = [
        threading.Thread(target=lambda: out.append(dead.loss_intervals(REF, T0, END, 30.0))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while not out:
        assert time.monotonic() - t0 < 5
        time.sleep(0.01)
    inner.gate.set()
    for t in threads:
        t.join(5)
    # Then one got the slot and the other was refused as saturated
    assert sorted(type(x).__name__ for x in out) == ["Problem", "list"]


def test_refused_credentials_trigger_a_secret_refresh() -> None:
    class Refusing(FakeMetrics):
        def loss_intervals(self, *_: object) -> Problem:  # type: ignore[override]
            return Problem("Unavailable", "401", {"reason": "Unauthorized"})

    refused: list[bool] = []
    m = LimitedMetrics(Refusing(), EndpointLimiter("p", 1, 1), "http://p:9090", lambda: refused.append(True))
    asyncio.run(m.loss_intervals_async(REF, T0, END, 30.0))
    assert refused == [True]


def test_endpoints_are_keyed_by_address_and_credentials() -> None:
    # Given Deps with three tokens in Secrets
    objects = FakeObjects(secrets={("ml", s): {"token": s} for s in ("a", "b")})
    deps = Deps(api_client=None, settings=OperatorConfig(max_concurrent_per_prometheus=3), clock=FakeClock())  # type: ignore[arg-type]
    deps.objects = objects  # type: ignore[assignment]

    def src(address: str, secret: str | None) -> PrometheusSource:
        ref = {"bearerTokenSecretRef": {"name": secret, "key": "token"}} if secret else {}
        return PrometheusSource.model_validate({"address": address, **ref})

    async def limiter(address: str, secret: str | None) -> EndpointLimiter:
        got = await deps.metrics("ml", src(address, secret))
        assert isinstance(got, LimitedMetrics)
        return got.limiter

    async def main() -> list[EndpointLimiter]:
        return [
            await limiter("http://p:9090", "a"),
            await limiter("http://p:9090/", "a"),  # same server
            await limiter("http://p:9090", "b"),  # another tenant
            await limiter("http://q:9090", "a"),  # another server
            await limiter("http://p:9090", None),
        ]

    a1, a2, b, q, anon = asyncio.run(main())
    # Then one limiter per (address, identity), each with the configured slots
    assert a1 is a2
    assert len({id(x) for x in (a1, b, q, anon)}) == 4
    assert a1.limit == 3
