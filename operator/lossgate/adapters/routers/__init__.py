"""Traffic routers: the `TrafficRouter` port over Gateway API, Istio and replica ratios.

`make_router` is the only place that switches on the kind of router; the reconciler maps
`spec.trafficRouting` to one of the reference types and never names a router class.
"""

from __future__ import annotations

from kubernetes import client

from lossgate.adapters.routers.cache import DEPLOYMENT, HTTPROUTE, VIRTUALSERVICE, RouteCache
from lossgate.adapters.routers.gateway import GatewayAPIRouter
from lossgate.adapters.routers.istio import IstioRouter
from lossgate.adapters.routers.refs import GatewayRouteRef, IstioRouteRef, ReplicaRef, RouteRef
from lossgate.adapters.routers.replicas import TOTAL_ANNOTATION, ReplicaRatioRouter, canary_replicas
from lossgate.ports import TrafficRouter

__all__ = [
    "DEPLOYMENT",
    "HTTPROUTE",
    "TOTAL_ANNOTATION",
    "VIRTUALSERVICE",
    "GatewayAPIRouter",
    "GatewayRouteRef",
    "IstioRouteRef",
    "IstioRouter",
    "ReplicaRatioRouter",
    "ReplicaRef",
    "RouteCache",
    "RouteRef",
    "canary_replicas",
    "make_router",
]


def make_router(
    ref: RouteRef, api_client: client.ApiClient, cache: RouteCache | None = None
) -> TrafficRouter:
    """The router for a reference (one per rollout; cheap to build, holds no connection of its own).
    With a cache (the operator's, fed by its watches) `get_weights()` reads from it; without one
    (tests, the CLI) every read is a GET."""
    match ref:
        case GatewayRouteRef():
            return GatewayAPIRouter(ref, api_client, cache=cache)
        case IstioRouteRef():
            return IstioRouter(ref, api_client, cache=cache)
        case ReplicaRef():
            return ReplicaRatioRouter(ref, api_client, cache=cache)
    raise TypeError(f"no traffic router for {type(ref).__name__}")  # unreachable for a RouteRef
