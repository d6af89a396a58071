"""Prometheus credentials are read from their Secret once per refresh period, not once per tick, and
again at once when Prometheus refuses them; a missing Secret is still a Problem naming the field."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from lossgate.adapters.prometheus import PrometheusMetrics
from lossgate.core.evidence import Problem
from lossgate.model.analysis import PrometheusSource
from lossgate.ports import LossSeriesRef
from lossgate.reconcile.deps import Deps, OperatorConfig
from lossgate.reconcile.limits import LimitedMetrics
from tests.unit.reconcile_fakes import T0, FakeClock, FakeMetrics, FakeObjects, interval

REF = LossSeriesRef("ml", "m", "v1", "v2")
SOURCE = PrometheusSource.model_validate(
    {"address": "http://p:9090", "bearerTokenSecretRef": {"name": "prom", "key": "token"}}
)


def _deps(objects: FakeObjects, clock: FakeClock) -> Deps:
    deps = Deps(api_client=None, settings=OperatorConfig(secret_refresh=timedelta(seconds=60)), clock=clock)  # type: ignore[arg-type]
    deps.objects = objects  # type: ignore[assignment]
    return deps


def _token(deps: Deps, source: PrometheusSource = SOURCE) -> str | None:
    got = asyncio.run(deps.metrics("ml", source))
    assert isinstance(got, LimitedMetrics), got
    assert isinstance(got.inner, PrometheusMetrics)
    return got.inner.config.bearer_token


def test_one_get_per_refresh_period_and_a_rotated_token_is_used() -> None:
    # Given a token in a Secret
    objects, clock = FakeObjects(secrets={("ml", "prom"): {"token": "old"}}), FakeClock()
    deps = _deps(objects, clock)
    # When 10 ticks, 5 s apart, build their Prometheus client
    tokens = []
    for _ in range(10):
        tokens.append(_token(deps))
        clock.advance(5)
    # Then the Secret was read once
    assert tokens == ["old"] * 10
    assert objects.secret_reads == 1
    # When the token is rotated, the next refresh (60 s after the read) uses the new one
    objects.secrets[("ml", "prom")] = {"token": "new"}
    clock.advance(15)  # 65 s after the read
    assert _token(deps) == "new"
    assert objects.secret_reads == 2


def test_refused_credentials_are_read_again_at_the_next_tick() -> None:
    # Given a cached token that was rotated in the Secret since
    objects, clock = FakeObjects(secrets={("ml", "prom"): {"token": "old"}}), FakeClock()
    deps = _deps(objects, clock)
    metrics = asyncio.run(deps.metrics("ml", SOURCE))
    assert isinstance(metrics, LimitedMetrics)
    objects.secrets[("ml", "prom")] = {"token": "new"}
    # When Prometheus refuses the old token (its adapter says Unauthorized)
    metrics._seen(Problem("Unavailable", "HTTP 401", {"reason": "Unauthorized"}))
    # Then the next tick reads the Secret again, well before the refresh period, and uses the new token
    clock.advance(1)
    assert _token(deps) == "new"
    assert objects.secret_reads == 2


def test_missing_secret_and_key_name_the_field() -> None:
    objects, clock = FakeObjects(), FakeClock()
    deps = _deps(objects, clock)
    # Given no Secret: a Problem naming the field and the Secret, read again every tick (not cached)
    for _ in range(2):
        got = asyncio.run(deps.metrics("ml", SOURCE))
        assert isinstance(got, Problem)
        assert got.message.startswith("spec.analysis.prometheus.bearerTokenSecretRef: Secret ml/prom")
    assert objects.secret_reads == 2
    # Given the Secret without the key
    objects.secrets[("ml", "prom")] = {"other": "x"}
    got = asyncio.run(deps.metrics("ml", SOURCE))
    assert isinstance(got, Problem)
    assert "has no key 'token'" in got.message
    # Given basic auth with a missing password key
    basic = PrometheusSource.model_validate(
        {"address": "http://p:9090", "basicAuthSecretRef": {"name": "prom"}}
    )
    objects.secrets[("ml", "prom")] = {"username": "u"}
    got = asyncio.run(deps.metrics("ml", basic))
    assert isinstance(got, Problem)
    assert got.message.startswith("spec.analysis.prometheus.basicAuthSecretRef:")


def test_an_api_hiccup_keeps_the_last_good_value() -> None:
    objects, clock = FakeObjects(secrets={("ml", "prom"): {"token": "t"}}), FakeClock()
    deps = _deps(objects, clock)
    assert _token(deps) == "t"
    # When the API server is unavailable at the refresh
    objects.secret_error = Problem("Unavailable", "the API server could not be reached")
    clock.advance(120)
    # Then the cached token still serves
    assert _token(deps) == "t"
    assert objects.secret_reads == 2


def test_a_rotated_token_retires_the_old_client_and_its_slots() -> None:
    # Given a tick holding the client built from the old token
    objects, clock = FakeObjects(secrets={("ml", "prom"): {"token": "old"}}), FakeClock()
    deps = _deps(objects, clock)
    held = asyncio.run(deps.metrics("ml", SOURCE))
    assert isinstance(held, LimitedMetrics)
    # When the token rotates and the next tick builds its client
    objects.secrets[("ml", "prom")] = {"token": "new"}
    clock.advance(61)
    fresh = asyncio.run(deps.metrics("ml", SOURCE))
    assert isinstance(fresh, LimitedMetrics)
    # Then only the new client and its endpoint's slots are kept (no leak per rotation)
    assert list(deps._prom.values()) == [fresh.inner]
    assert list(deps._limiters.values()) == [fresh.limiter]
    # And the tick still holding the old one finishes its read
    held.inner = FakeMetrics([interval(T0)])
    got = asyncio.run(held.loss_intervals_async(REF, T0, T0 + timedelta(minutes=1), 30.0))
    assert got == [interval(T0)]
