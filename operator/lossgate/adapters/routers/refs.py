"""Small references the router factory takes: which object, which rule, which backends.

The reconciler maps the ModelRollout's `spec.trafficRouting` onto exactly one of these; the routers
never see the custom resource itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayRouteRef:
    """A Gateway API HTTPRoute rule whose backendRefs split traffic between two Services.

    `port` (optional) narrows which backendRefs match when a Service appears with several ports;
    it is also the port given to the canary backendRef when lossgate adds it (else the baseline's).
    """

    namespace: str
    name: str
    rule_index: int
    baseline_service: str
    canary_service: str
    port: int | None = None


@dataclass(frozen=True)
class IstioRouteRef:
    """An Istio VirtualService HTTP route (by `route_name`, else `route_index`, else the first one)
    whose destinations split traffic between two hosts (and subsets, when given)."""

    namespace: str
    name: str
    baseline_host: str
    canary_host: str
    route_name: str | None = None
    route_index: int | None = None
    baseline_subset: str | None = None
    canary_subset: str | None = None


@dataclass(frozen=True)
class ReplicaRef:
    """Two Deployments behind one Service: the split is the ratio of their replica counts."""

    namespace: str
    baseline_deployment: str
    canary_deployment: str


RouteRef = GatewayRouteRef | IstioRouteRef | ReplicaRef
