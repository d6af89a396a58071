"""The watches that feed the routers' read cache (adapters/routers/cache.py, `Deps.routes`).

At startup (handlers.configure) the operator asks the API server, with SelfSubjectAccessReviews, which
route kinds it may list and watch in the namespaces it serves, and registers a kopf event handler
(that is: a watch) for those kinds only. kopf stops the whole operator when a watch it runs is
refused, so a kind without list/watch is not watched at all: its reads stay GETs, as before the cache,
and a warning says what to grant. kopf itself watches only the kinds the cluster serves (no Gateway
API or Istio installed: no watch, a warning, the other kinds work; installing the CRD starts it) and
only the operator's namespaces.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import kopf
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate.adapters.routers import DEPLOYMENT, HTTPROUTE, VIRTUALSERVICE, RouteCache, gateway, istio
from lossgate.adapters.routers.k8s import REQUEST_TIMEOUT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watch:
    group: str
    version: str | None  # None: the version the cluster prefers
    plural: str
    handler_id: str


WATCHES = {
    HTTPROUTE: Watch(gateway.GROUP, gateway.VERSION, gateway.PLURAL, "cache_httproute"),
    # No version: v1, or v1beta1 on older Istio; the spec the router reads is the same.
    VIRTUALSERVICE: Watch(istio.GROUP, None, istio.PLURAL, "cache_virtualservice"),
    DEPLOYMENT: Watch("apps", "v1", "deployments", "cache_deployment"),
}
_registered: weakref.WeakKeyDictionary[kopf.OperatorRegistry, set[str]] = weakref.WeakKeyDictionary()

Allowed = Callable[[str, Watch, str | None], bool]  # (verb, watch, namespace or None: cluster-wide)


def watchable(api_client: client.ApiClient, namespaces: Iterable[str]) -> set[str]:
    """The route kinds the operator may list and watch wherever it serves (blocking: SSARs)."""
    unreachable = False

    def allowed(verb: str, w: Watch, ns: str | None) -> bool:
        nonlocal unreachable
        if unreachable:  # one timeout is enough: startup does not wait for every question
            return False
        try:
            return _ssar(api_client, verb, w, ns)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("could not ask whether the operator may %s %s.%s: %s", verb, w.plural, w.group, exc)
            unreachable = not isinstance(exc, ApiException)
            return False  # unknown: not watched, its reads stay GETs

    return watchable_with(allowed, namespaces)


def watchable_with(allowed: Allowed, namespaces: Iterable[str]) -> set[str]:
    # A pattern (kopf accepts globs) says nothing about which namespaces will match: ask cluster-wide.
    names = list(namespaces)
    scopes: list[str | None] = [None] if not names or any(_is_pattern(n) for n in names) else list(names)
    return {
        kind
        for kind, w in WATCHES.items()
        if all(allowed(verb, w, ns) for verb in ("list", "watch") for ns in scopes)
    }


def start_watches(kinds: set[str], registry: kopf.OperatorRegistry | None = None) -> None:
    """Register the cache's event handlers for `kinds` (once per registry); warn about the others."""
    registry = registry or kopf.get_default_registry()
    done = _registered.setdefault(registry, set())
    for kind, w in WATCHES.items():
        if kind not in kinds:
            log.warning(
                "no list/watch on %s.%s where the operator serves: their reads stay a GET per tick "
                "(grant list and watch, as the Helm chart does, and restart the operator)",
                w.plural,
                w.group,
            )
        elif kind not in done:
            kopf.on.event(
                group=w.group, version=w.version, plural=w.plural, id=w.handler_id, registry=registry
            )(_feeder(kind))
            done.add(kind)


def _feeder(kind: str) -> Callable[..., Coroutine[Any, Any, None]]:
    async def feed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        routes: RouteCache = memo["deps"].routes
        routes.observe(kind, event.get("type"), dict(event.get("object") or {}))

    return feed


def _ssar(api_client: client.ApiClient, verb: str, w: Watch, namespace: str | None) -> bool:
    attrs = client.V1ResourceAttributes(verb=verb, group=w.group, resource=w.plural, namespace=namespace)
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attrs)
    )
    api: Any = client.AuthorizationV1Api(api_client)
    got = api.create_self_subject_access_review(review, _request_timeout=REQUEST_TIMEOUT)
    return bool(got.status.allowed)


def _is_pattern(namespace: str) -> bool:
    return namespace.startswith("!") or any(c in namespace for c in "*?[")


class QuietCacheHandlers(logging.Filter):
    """kopf logs "Handler ... succeeded." at INFO per event; for every Deployment event of the
    served namespaces that is noise, so it is dropped for the cache's handlers (failures still log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Handler 'cache_") and msg.endswith(" succeeded."))
