"""Istio router: the weights of two destinations in one VirtualService HTTP route.

Owns `spec.http[i].route[j].weight` of the baseline and canary destinations (matched by host, and by
subset when the reference gives one) and appends the canary destination, at weight 0, when the route
has none; in the shadow phase also the route's `mirror` and `mirrorPercentage` (mirror.py). Other
HTTP routes, other destinations, matches, retries and metadata are never written.
Speaks networking.istio.io/v1 and falls back to v1beta1 when the installed CRD does not serve v1.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate.adapters.routers.cache import VIRTUALSERVICE, RouteCache
from lossgate.adapters.routers.errors import Target, fail, is_object_not_found
from lossgate.adapters.routers.k8s import JsonObj, PatchOp, object_path, pointer
from lossgate.adapters.routers.mirror import MirroringRouter
from lossgate.adapters.routers.refs import IstioRouteRef
from lossgate.adapters.routers.weighted import Located, find_one, round_half_up
from lossgate.core.evidence import Weights
from lossgate.ports import RouterErrorKind

GROUP, PLURAL = "networking.istio.io", "virtualservices"
VERSIONS = ("v1", "v1beta1")  # preferred first


def canonical_host(host: str, namespace: str) -> str:
    """Istio reads a host without dots as a Service in the VirtualService's own namespace."""
    return host if "." in host else f"{host}.{namespace}.svc.cluster.local"


class IstioRouter(MirroringRouter):
    def __init__(
        self,
        ref: IstioRouteRef,
        api_client: client.ApiClient,
        after_read: Callable[[], None] | None = None,
        versions: tuple[str, ...] = VERSIONS,
        cache: RouteCache | None = None,
    ) -> None:
        super().__init__(api_client, after_read, cache)
        self.ref = ref
        self._versions = versions
        self.version: str | None = None  # the version that answered, once one did
        self._target = Target(
            VIRTUALSERVICE,
            ref.namespace,
            ref.name,
            f"{PLURAL}.{GROUP}/{'|'.join(versions)}",
            "Install Istio's networking CRDs (istioctl install, or the istio/base Helm chart)",
        )

    @property
    def target(self) -> Target:
        return self._target

    def _path(self, version: str) -> str:
        return object_path(GROUP, version, self.ref.namespace, PLURAL, self.ref.name)

    def _read(self) -> JsonObj:
        if self.version:
            try:
                return self.kube.get(self._path(self.version))
            except ApiException as exc:
                if exc.status == 404 and not is_object_not_found(exc, self.ref.name):
                    self.version = None  # the CRD went away or changed versions: discover again next time
                raise
        last: ApiException | None = None
        for version in self._versions:
            try:
                obj = self.kube.get(self._path(version))
            except ApiException as exc:
                if exc.status == 404 and not is_object_not_found(exc, self.ref.name):
                    last = exc  # this version is not served: try the next one
                    continue
                if exc.status == 404:
                    self.version = version
                raise
            self.version = version
            return obj
        raise last if last is not None else RuntimeError("no attempt was made")

    def _patch(self, ops: list[PatchOp]) -> JsonObj:
        if not self.version:
            raise RuntimeError("patch before a successful read")
        return self.kube.json_patch(self._path(self.version), ops)

    def _locate(self, obj: JsonObj) -> Located:
        ref, t = self.ref, self.target
        if (ref.baseline_host, ref.baseline_subset) == (ref.canary_host, ref.canary_subset):
            raise fail(
                RouterErrorKind.INVALID,
                t,
                f"{t}: baseline and canary are the same destination "
                f"{_dest(ref.baseline_host, ref.baseline_subset)}; give two hosts or two subsets.",
            )
        routes = (obj.get("spec") or {}).get("http") or []
        index = self._route_index(routes)
        route = routes[index]
        label = f"http[{index}]" + (f" ({route['name']})" if route.get("name") else "")
        if "route" not in route:
            raise fail(
                RouterErrorKind.BACKEND_NOT_FOUND,
                t,
                f"{t} {label} has no route destinations; add "
                f"one for {_dest(ref.baseline_host, ref.baseline_subset)}.",
            )
        entries: list[JsonObj] = list(route["route"])
        guards: list[PatchOp] = []
        if route.get("name"):
            guards.append(
                {"op": "test", "path": pointer("spec", "http", index, "name"), "value": route["name"]}
            )
        baseline = self._one(entries, ref.baseline_host, ref.baseline_subset, label)
        if baseline is None:
            have = ", ".join(_describe(e) for e in entries) or "none"
            raise fail(
                RouterErrorKind.BACKEND_NOT_FOUND,
                t,
                f"{t} {label} has no destination "
                f"{_dest(ref.baseline_host, ref.baseline_subset)} (destinations: {have}). Add it, or "
                "fix the baseline host/subset in spec.trafficRouting.istio.",
                host=ref.baseline_host,
            )
        canary = self._one(entries, ref.canary_host, ref.canary_subset, label)
        return Located(("spec", "http", index, "route"), entries, baseline, canary, guards)

    def _route_index(self, routes: list[JsonObj]) -> int:
        ref, t = self.ref, self.target
        if ref.route_name is not None:
            names = [r.get("name") for r in routes]
            if ref.route_name not in names:
                have = ", ".join(repr(n) for n in names if n) or "no named routes"
                raise fail(
                    RouterErrorKind.INVALID,
                    t,
                    f"{t} has no http route named {ref.route_name!r} "
                    f"({have}); name the route or fix spec.trafficRouting.istio.routeName.",
                )
            return names.index(ref.route_name)
        index = ref.route_index or 0
        if not 0 <= index < len(routes):
            raise fail(
                RouterErrorKind.INVALID,
                t,
                f"{t} has {len(routes)} http route(s), so index {index} is "
                "out of range; fix spec.trafficRouting.istio.",
            )
        return index

    def _one(self, entries: list[JsonObj], host: str, subset: str | None, label: str) -> int | None:
        want = canonical_host(host, self.ref.namespace)

        def match(e: JsonObj) -> bool:
            d = e.get("destination") or {}
            same_host = canonical_host(str(d.get("host", "")), self.ref.namespace) == want
            return same_host and (d.get("subset") or None) == subset

        hits = find_one(entries, match)
        if len(hits) > 1:
            raise fail(
                RouterErrorKind.INVALID,
                self.target,
                f"{self.target} {label} has {len(hits)} "
                f"destinations {_dest(host, subset)}; keep exactly one.",
            )
        return hits[0] if hits else None

    def _weight(self, entry: JsonObj, entries: list[JsonObj]) -> int:
        # Istio: a lone destination takes all traffic; otherwise an omitted weight is 0.
        return int(entry.get("weight", 100 if len(entries) == 1 else 0))

    def _new_canary(self, baseline: JsonObj) -> JsonObj:
        dest: JsonObj = {"host": self.ref.canary_host}
        if self.ref.canary_subset:
            dest["subset"] = self.ref.canary_subset
        port = (baseline.get("destination") or {}).get("port")
        if port is not None:
            dest["port"] = port
        return {"destination": dest, "weight": 0}

    def _targets(self, loc: Located, weights: Weights) -> tuple[int, int]:
        # Istio wants a route's weights to sum to 100: other destinations keep theirs and the two arms
        # split what is left in the requested ratio.
        arms = {loc.baseline, loc.canary}
        others = sum(self._weight(e, loc.entries) for i, e in enumerate(loc.entries) if i not in arms)
        pool = max(0, 100 - others)
        wanted = weights.baseline + weights.canary
        if pool == 100:
            return weights.baseline, weights.canary
        if wanted == 0:
            return 0, 0
        canary = round_half_up(pool * weights.canary, wanted)
        return pool - canary, canary

    # -- the shadow phase's mirror ----------------------------------------------------------------
    def _mirror_container(self, obj: JsonObj) -> tuple[tuple[str | int, ...], JsonObj]:
        routes = obj["spec"]["http"]
        index = self._route_index(routes)
        return ("spec", "http", index), routes[index]

    def _is_canary(self, dest: JsonObj) -> bool:
        want = canonical_host(self.ref.canary_host, self.ref.namespace)
        host = canonical_host(str(dest.get("host", "")), self.ref.namespace)
        return host == want and (dest.get("subset") or None) == self.ref.canary_subset

    def _mirror_percent(self, container: JsonObj) -> int:
        mirror = container.get("mirror")
        if not isinstance(mirror, dict) or not self._is_canary(mirror):
            return 0
        value = (container.get("mirrorPercentage") or {}).get("value", 100.0)  # Istio: absent = all
        return round(float(value))

    def _mirror_keys(self, container: JsonObj, percent: int) -> dict[str, object]:
        mirror = container.get("mirror")
        if isinstance(mirror, dict) and not self._is_canary(mirror):
            raise fail(
                RouterErrorKind.INVALID,
                self.target,
                f"{self.target} http route {container.get('name') or ''} already mirrors to "
                f"{_dest(str(mirror.get('host')), mirror.get('subset'))}; Istio allows one mirror per "
                "route, so remove it or mirror on another route before the shadow phase.",
            )
        if percent == 0:
            return {"mirror": None, "mirrorPercentage": None}
        dest: JsonObj = {"host": self.ref.canary_host}
        if self.ref.canary_subset:
            dest["subset"] = self.ref.canary_subset
        entries = container.get("route") or []
        port = next(((e.get("destination") or {}).get("port") for e in entries if e.get("destination")), None)
        if port is not None:
            dest["port"] = port
        return {
            "mirror": mirror if isinstance(mirror, dict) else dest,
            "mirrorPercentage": {"value": float(percent)},
        }


def _dest(host: str, subset: str | None) -> str:
    return host + (f" subset {subset}" if subset else "")


def _describe(entry: JsonObj) -> str:
    d = entry.get("destination") or {}
    return _dest(str(d.get("host")), d.get("subset"))
