"""Gateway API router: the weights of two backendRefs in one HTTPRoute rule.

Owns `spec.rules[ruleIndex].backendRefs[i].weight` of the baseline and canary Service backendRefs
(and appends the canary backendRef, at weight 0, when the rule has none), and in the shadow phase the
rule's `RequestMirror` filter to the canary Service (mirror.py). Everything else in the route (other
rules, other backends, other filters, matches, metadata) is never written.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client

from lossgate.adapters.routers.cache import HTTPROUTE, RouteCache
from lossgate.adapters.routers.errors import Target, fail
from lossgate.adapters.routers.k8s import JsonObj, PatchOp, object_path, pointer
from lossgate.adapters.routers.mirror import MirroringRouter, fraction_percent
from lossgate.adapters.routers.refs import GatewayRouteRef
from lossgate.adapters.routers.weighted import Located, find_one
from lossgate.ports import RouterErrorKind

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
DEFAULT_WEIGHT = 1  # Gateway API: an omitted backendRef weight means 1


class GatewayAPIRouter(MirroringRouter):
    def __init__(
        self,
        ref: GatewayRouteRef,
        api_client: client.ApiClient,
        after_read: Callable[[], None] | None = None,
        cache: RouteCache | None = None,
    ) -> None:
        super().__init__(api_client, after_read, cache)
        self.ref = ref
        self._path = object_path(GROUP, VERSION, ref.namespace, PLURAL, ref.name)
        self._target = Target(
            HTTPROUTE,
            ref.namespace,
            ref.name,
            f"{PLURAL}.{GROUP}/{VERSION}",
            "Install the Gateway API standard-channel CRDs (gateway-api v1.0 or later)",
        )

    @property
    def target(self) -> Target:
        return self._target

    def _read(self) -> JsonObj:
        return self.kube.get(self._path)

    def _patch(self, ops: list[PatchOp]) -> JsonObj:
        return self.kube.json_patch(self._path, ops)

    def _locate(self, obj: JsonObj) -> Located:
        ref, t = self.ref, self.target
        if ref.baseline_service == ref.canary_service:
            raise fail(
                RouterErrorKind.INVALID,
                t,
                f"{t}: baseline and canary name the same Service "
                f"{ref.baseline_service!r}; they must be two Services.",
            )
        rules = (obj.get("spec") or {}).get("rules") or []
        if not 0 <= ref.rule_index < len(rules):
            raise fail(
                RouterErrorKind.INVALID,
                t,
                f"{t} has {len(rules)} rule(s), so ruleIndex "
                f"{ref.rule_index} is out of range; set spec.trafficRouting.gatewayAPI.ruleIndex "
                f"to the rule that routes to Service {ref.baseline_service}.",
            )
        rule = rules[ref.rule_index]
        entries: list[JsonObj] = list(rule.get("backendRefs") or [])
        path = ("spec", "rules", ref.rule_index, "backendRefs")
        guards: list[PatchOp] = []
        if rule.get("name"):
            guards.append(
                {
                    "op": "test",
                    "path": pointer("spec", "rules", ref.rule_index, "name"),
                    "value": rule["name"],
                }
            )
        if "backendRefs" not in rule:  # so that the `test` on the list and `add .../-` have a list
            raise fail(
                RouterErrorKind.BACKEND_NOT_FOUND,
                t,
                f"{t} rule {ref.rule_index} has no backendRefs; "
                f"add a backendRef to Service {ref.baseline_service}{self._port()}.",
            )
        baseline = self._one(entries, ref.baseline_service, "baseline")
        if baseline is None:
            have = ", ".join(_describe(e) for e in entries) or "none"
            raise fail(
                RouterErrorKind.BACKEND_NOT_FOUND,
                t,
                f"{t} rule {ref.rule_index} has no backendRef to "
                f"the baseline Service {ref.baseline_service}{self._port()} (backendRefs: {have}). "
                "Add it to the rule or fix spec.baseline.service / the ruleIndex.",
                service=ref.baseline_service,
            )
        return Located(path, entries, baseline, self._one(entries, ref.canary_service, "canary"), guards)

    def _one(self, entries: list[JsonObj], service: str, arm: str) -> int | None:
        hits = find_one(entries, lambda e: self._is_service(e, service))
        if len(hits) > 1:
            raise fail(
                RouterErrorKind.INVALID,
                self.target,
                f"{self.target} rule {self.ref.rule_index} has "
                f"{len(hits)} backendRefs to the {arm} Service {service}; set the port in the "
                "rollout's trafficRouting so that exactly one matches.",
            )
        return hits[0] if hits else None

    def _is_service(self, entry: JsonObj, service: str) -> bool:
        return (
            entry.get("group", "") in ("", "core")
            and entry.get("kind", "Service") == "Service"
            and entry.get("name") == service
            and entry.get("namespace", self.ref.namespace) == self.ref.namespace
            and (self.ref.port is None or entry.get("port") == self.ref.port)
        )

    def _weight(self, entry: JsonObj, entries: list[JsonObj]) -> int:
        return int(entry.get("weight", DEFAULT_WEIGHT))

    def _new_canary(self, baseline: JsonObj) -> JsonObj:
        new: JsonObj = {"group": "", "kind": "Service", "name": self.ref.canary_service}
        port = self.ref.port if self.ref.port is not None else baseline.get("port")
        if port is not None:
            new["port"] = port
        new["weight"] = 0
        return new

    def _port(self) -> str:
        return f" port {self.ref.port}" if self.ref.port is not None else ""

    # -- the shadow phase's mirror ----------------------------------------------------------------
    def _mirror_container(self, obj: JsonObj) -> tuple[tuple[str | int, ...], JsonObj]:
        rule: JsonObj = obj["spec"]["rules"][self.ref.rule_index]
        return ("spec", "rules", self.ref.rule_index), rule

    def _is_canary_mirror(self, f: JsonObj) -> bool:
        m = f.get("requestMirror") or {}
        return f.get("type") == "RequestMirror" and self._is_service(
            m.get("backendRef") or {}, self.ref.canary_service
        )

    def _mirror_percent(self, container: JsonObj) -> int:
        mine = [f for f in container.get("filters") or [] if self._is_canary_mirror(f)]
        return fraction_percent(mine[0]["requestMirror"]) if mine else 0

    def _mirror_keys(self, container: JsonObj, percent: int) -> dict[str, object]:
        filters: list[JsonObj] = list(container.get("filters") or [])
        at = next((i for i, f in enumerate(filters) if self._is_canary_mirror(f)), None)
        if percent == 0:
            if at is None:
                return {}
            rest = filters[:at] + filters[at + 1 :]
            return {"filters": rest or None}
        backend: JsonObj = {"group": "", "kind": "Service", "name": self.ref.canary_service}  # as defaulted
        port = self.ref.port if self.ref.port is not None else self._baseline_port(container)
        if port is not None:
            backend["port"] = port
        want: JsonObj = {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": backend, "percent": percent},
        }
        if at is None:
            return {"filters": [*filters, want]}
        old = filters[at]["requestMirror"]
        if fraction_percent(old) == percent and "fraction" not in old:
            return {}
        filters[at] = {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": old["backendRef"], "percent": percent},
        }
        return {"filters": filters}

    def _baseline_port(self, rule: JsonObj) -> int | None:
        for e in rule.get("backendRefs") or []:
            if self._is_service(e, self.ref.baseline_service) and "port" in e:
                return int(e["port"])
        return None


def _describe(entry: JsonObj) -> str:
    port = f":{entry['port']}" if "port" in entry else ""
    kind = entry.get("kind", "Service")
    return f"{'' if kind == 'Service' else kind + '/'}{entry.get('name')}{port}"
