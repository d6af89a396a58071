"""Traffic routers: the `TrafficRouter` port over Gateway API, Istio and replica ratios.

`make_router` is the only place that switches on the kind of router; the reconciler maps
`spec.trafficRouting` to one of the reference types and never names a router class.
"""

from __future__ import annotations

from kubernetes import client

from lossgate.adapters.routers.gateway import GatewayAPIRouter
from lossgate.adapters.routers.istio import IstioRouter
from lossgate.adapters.routers.refs import GatewayRouteRef, IstioRouteRef, ReplicaRef, RouteRef
from lossgate.adapters.routers.replicas import TOTAL_ANNOTATION, ReplicaRatioRouter, canary_replicas
from lossgate.ports import TrafficRouter

__all__ = [
    "TOTAL_ANNOTATION",
    "GatewayAPIRouter",
    "GatewayRouteRef",
    "IstioRouteRef",
    "IstioRouter",
    "ReplicaRatioRouter",
    "ReplicaRef",
    "RouteRef",
    "canary_replicas",
    "make_router",
]


def make_router(ref: RouteRef, api_client: client.ApiClient) -> TrafficRouter:
    """The router for a reference (one per rollout; cheap to build, holds no connection of its own)."""
    match ref:
        case GatewayRouteRef():
            return GatewayAPIRouter(ref, api_client)
        case IstioRouteRef():
            return IstioRouter(ref, api_client)
        case ReplicaRef():
            return ReplicaRatioRouter(ref, api_client)
    raise TypeError(f"no traffic router for {type(ref).__name__}")  # unreachable for a RouteRef
