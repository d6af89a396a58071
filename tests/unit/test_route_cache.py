"""The routers' read cache on its own (adapters/routers/cache.py), and routers reading from it with
an API client that would fail any call: a cache hit costs no request."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kopf._cogs.structs.references import Selector
from kubernetes import client

from lossgate.adapters.routers import (
    DEPLOYMENT,
    HTTPROUTE,
    GatewayRouteRef,
    ReplicaRef,
    RouteCache,
    make_router,
)
from lossgate.core.evidence import Problem, Weights
from lossgate.reconcile import route_cache


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def route(rv: str, baseline: int, canary: int, ns: str = "ml", name: str = "scorer") -> dict[str, Any]:
    backends = [{"name": "v1", "port": 80, "weight": baseline}, {"name": "v2", "port": 80, "weight": canary}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "managedFields": [{"x": 1}]},
        "spec": {"rules": [{"backendRefs": backends}]},
        "status": {"parents": [{"big": "x" * 1000}]},
    }


def deployment(name: str, rv: str, replicas: int) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ml", "resourceVersion": rv, "annotations": {"a": "b"}}
    return {"kind": "Deployment", "metadata": meta, "spec": {"replicas": replicas, "template": {}}}


def weights_of(obj: dict[str, Any] | None) -> list[int]:
    assert obj is not None
    return [b["weight"] for b in obj["spec"]["rules"][0]["backendRefs"]]


def unreachable() -> client.ApiClient:
    """Any request through this client fails (nothing listens on port 9)."""
    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"
    return client.ApiClient(cfg)


def test_watch_events_create_update_and_delete_entries() -> None:
    cache = RouteCache()
    # Given the initial listing (kopf's type None) and a later edit
    cache.observe(HTTPROUTE, None, route("10", 90, 10))
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [90, 10]
    cache.observe(HTTPROUTE, "MODIFIED", route("11", 70, 30))
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [70, 30]
    # Then only what the routers read is kept
    got = cache.lookup(HTTPROUTE, "ml", "scorer")
    assert got is not None
    assert set(got) == {"kind", "metadata", "spec"}
    assert got["metadata"] == {"name": "scorer", "namespace": "ml", "resourceVersion": "11"}
    # When it is deleted, Then it is gone; other namespaces and names never matched
    assert cache.lookup(HTTPROUTE, "other", "scorer") is None
    cache.observe(HTTPROUTE, "DELETED", route("12", 70, 30))
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is None
    assert len(cache) == 0


def test_lookups_are_copies() -> None:
    cache = RouteCache()
    cache.observe(HTTPROUTE, "ADDED", route("10", 90, 10))
    got = cache.lookup(HTTPROUTE, "ml", "scorer")
    assert got is not None
    got["spec"]["rules"][0]["backendRefs"][0]["weight"] = 0
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [90, 10]


def test_an_older_resource_version_never_replaces_a_newer_one() -> None:
    cache = RouteCache()
    cache.observe(HTTPROUTE, "ADDED", route("10", 90, 10))
    # Given a router that wrote 50/50 and read back resourceVersion 12
    cache.confirm(HTTPROUTE, route("12", 50, 50))
    # When the watch delivers the human edit at 11 late, Then the write at 12 stays
    cache.observe(HTTPROUTE, "MODIFIED", route("11", 70, 30))
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [50, 50]
    # And a GET that raced the watch (an older version) does not go back in time either
    cache.confirm(HTTPROUTE, route("9", 100, 0))
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [50, 50]
    # And opaque (non-integer) versions: the newest arrival wins
    cache.observe(HTTPROUTE, "MODIFIED", route("abc", 20, 80))
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [20, 80]


def test_only_the_watch_creates_entries() -> None:
    cache = RouteCache()
    # Given an object the watch never reported (not watched, or not listed yet)
    cache.confirm(HTTPROUTE, route("10", 90, 10))
    # Then a GET or a write does not put it in the cache: it is read from the API every time
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is None
    # And a read that raced a DELETED event does not bring it back
    cache.observe(HTTPROUTE, "ADDED", route("10", 90, 10))
    cache.observe(HTTPROUTE, "DELETED", route("11", 90, 10))
    cache.confirm(HTTPROUTE, route("10", 90, 10))
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is None


def test_entries_expire_after_max_age_unless_vouched_for_again() -> None:
    clock = Clock()
    cache = RouteCache(max_age_s=600, clock=clock)
    cache.observe(HTTPROUTE, "ADDED", route("10", 90, 10))
    # Given 599 s without an event, Then it is still served
    clock.t += 599
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is not None
    # When 601 s have passed, Then it is not (the router GETs)
    clock.t += 2
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is None
    # And that GET finding the same version vouches for it for another 600 s
    cache.confirm(HTTPROUTE, route("10", 90, 10))
    clock.t += 599
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [90, 10]
    # And a GET behind the watch still vouches (the watch is ahead, so the entry is current)
    clock.t += 599
    cache.confirm(HTTPROUTE, route("9", 100, 0))
    clock.t += 10
    assert weights_of(cache.lookup(HTTPROUTE, "ml", "scorer")) == [90, 10]
    # And a 404 drops it at once
    cache.drop(HTTPROUTE, "ml", "scorer")
    assert cache.lookup(HTTPROUTE, "ml", "scorer") is None


def test_deployments_are_kept_as_their_replica_count_like_their_scale() -> None:
    cache = RouteCache()
    cache.observe(DEPLOYMENT, "ADDED", deployment("web-v1", "5", 3))
    assert cache.lookup(DEPLOYMENT, "ml", "web-v1") == {
        "kind": "Deployment",
        "metadata": {"name": "web-v1", "namespace": "ml", "resourceVersion": "5"},
        "spec": {"replicas": 3},
    }
    # A /scale answer (what the replica router reads and writes) replaces it the same way
    scale = {"kind": "Scale", "metadata": {"name": "web-v1", "namespace": "ml", "resourceVersion": "6"},
             "spec": {"replicas": 2}, "status": {"replicas": 3}}  # fmt: skip
    cache.confirm(DEPLOYMENT, scale)
    got = cache.lookup(DEPLOYMENT, "ml", "web-v1")
    assert got is not None
    assert got["spec"] == {"replicas": 2}


def test_routers_read_a_cache_hit_without_a_request() -> None:
    # Given cached objects and an API client that fails every request
    cache = RouteCache()
    cache.observe(HTTPROUTE, "ADDED", route("10", 75, 25))
    cache.observe(DEPLOYMENT, "ADDED", deployment("web-v1", "5", 3))
    cache.observe(DEPLOYMENT, "ADDED", deployment("web-v2", "6", 1))
    api = unreachable()
    gateway = GatewayRouteRef("ml", "scorer", 0, "v1", "v2")
    replicas = ReplicaRef("ml", "web-v1", "web-v2")
    # Then the routers answer from the cache
    assert make_router(gateway, api, cache).get_weights() == Weights(75, 25)
    assert make_router(replicas, api, cache).get_weights() == Weights(75, 25)
    # And without the cache (or on a miss) they GET, which here fails as Unavailable
    for got in (
        make_router(gateway, api).get_weights(),
        make_router(GatewayRouteRef("ml", "other", 0, "v1", "v2"), api, cache).get_weights(),
    ):
        assert isinstance(got, Problem)
        assert got.kind == "Unavailable"
    # And a write never trusts the cache: it reads the API first
    got = make_router(gateway, api, cache).set_weights(Weights(50, 50))
    assert isinstance(got, Problem)
    assert got.kind == "Unavailable"
    api.close()


def test_only_kinds_that_may_be_listed_and_watched_everywhere_served_are_watched() -> None:
    asked: list[tuple[str, str, str | None]] = []

    def allowed(verb: str, w: route_cache.Watch, ns: str | None) -> bool:
        asked.append((verb, w.plural, ns))
        return not (w.plural == "httproutes" and ns == "b" and verb == "watch")

    # Given RBAC that refuses to watch HTTPRoutes in namespace b only
    got = route_cache.watchable_with(allowed, ["a", "b"])
    assert got == {route_cache.VIRTUALSERVICE, route_cache.DEPLOYMENT}
    assert ("list", "deployments", "a") in asked
    assert ("watch", "deployments", "b") in asked
    # And cluster-wide (no namespaces) or with a pattern, the question is asked cluster-wide
    for namespaces in ([], ["ml-*"]):
        asked.clear()
        assert route_cache.watchable_with(allowed, namespaces) == set(route_cache.WATCHES)
        assert {ns for _, _, ns in asked} == {None}


def test_watches_are_registered_once_and_only_for_allowed_kinds() -> None:
    registry = kopf.OperatorRegistry()
    # When the startup registers the watches twice (a restart in the same process)
    route_cache.start_watches({route_cache.HTTPROUTE, route_cache.DEPLOYMENT}, registry)
    route_cache.start_watches({route_cache.HTTPROUTE, route_cache.DEPLOYMENT}, registry)
    # Then there is one handler per allowed kind, none for VirtualServices
    got = sorted((h.id, str(h.selector)) for h in registry._watching.get_all_handlers())
    assert got == [
        ("cache_deployment", str(kopf_selector("apps", "v1", "deployments"))),
        ("cache_httproute", str(kopf_selector("gateway.networking.k8s.io", "v1", "httproutes"))),
    ]


def kopf_selector(group: str, version: str, plural: str) -> Selector:
    return Selector(group=group, version=version, plural=plural)


def test_an_unreachable_api_server_at_startup_means_no_watches_after_one_question() -> None:
    api = unreachable()
    calls: list[str] = []
    call = api.call_api

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(url)
        return call(method, url, *args, **kwargs)

    api.call_api = counted  # type: ignore[method-assign]
    # When the SelfSubjectAccessReviews cannot be sent, Then nothing is watched (reads stay GETs)
    assert route_cache.watchable(api, ["a", "b"]) == set()
    # And startup asked once, not 12 times (3 kinds x 2 verbs x 2 namespaces), each bounded by a timeout
    assert len(calls) == 1
    api.close()


def test_kopf_success_lines_of_the_cache_handlers_are_dropped_and_nothing_else() -> None:
    quiet = route_cache.QuietCacheHandlers()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, msg, None, None)

    assert not quiet.filter(record("Handler 'cache_deployment' succeeded."))
    assert quiet.filter(record("Handler 'wake_on_change' succeeded."))
    assert quiet.filter(record("Handler 'cache_deployment' failed with an exception and will stop now: x"))
