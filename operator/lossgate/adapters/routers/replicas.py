"""Replica-ratio router (no mesh): baseline and canary Deployments behind one Service, so each gets
traffic in proportion to its ready replicas.

lossgate owns `spec.replicas` of both Deployments, written through the scale subresource (never a
spec rewrite), and one annotation on the baseline Deployment, `lossgate.io/total-replicas`, which
records the total it keeps constant:

- the total is the sum of both Deployments' replicas when the canary has none (the first call of a
  rollout, or after a rollback), and the annotation is refreshed to it then;
- while the canary has replicas, the annotation is the total, so a half-finished step (one Deployment
  scaled, the other not) never changes it. Edit the annotation to resize a rollout in flight.

canary = round(total x weight / 100), halves rounding up, at least 1 while weight > 0 and at most
total - 1 while weight < 100 (when total >= 2), baseline = total - canary. The split actually in force
(what get/set return) is the replica ratio, so its granularity is 100 / total percent.

With a `RouteCache`, `get_weights()` takes both replica counts from the watched Deployments when it has
them (cache.py); `set_weights()` always reads and writes the API and hands the results to the cache.
"""

from __future__ import annotations

from collections.abc import Callable

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate.adapters.routers.cache import DEPLOYMENT, RouteCache
from lossgate.adapters.routers.errors import RouterProblem, Target, classify, fail
from lossgate.adapters.routers.k8s import JsonObj, KubeJson, object_path
from lossgate.adapters.routers.refs import ReplicaRef
from lossgate.adapters.routers.weighted import MAX_ATTEMPTS, percent, round_half_up
from lossgate.core.evidence import Problem, Weights
from lossgate.model import API_GROUP
from lossgate.ports import RouterErrorKind

TOTAL_ANNOTATION = f"{API_GROUP}/total-replicas"
_API_ERRORS = (ApiException, RouterProblem, urllib3.exceptions.HTTPError, OSError)


def canary_replicas(total: int, canary_weight: int) -> int:
    """Canary replicas for a weight, keeping the total constant."""
    if total <= 0 or canary_weight <= 0:
        return 0
    if canary_weight >= 100:
        return total
    n = max(1, round_half_up(total * canary_weight, 100))
    return min(n, total - 1) if total >= 2 else n


class ReplicaRatioRouter:
    def __init__(
        self,
        ref: ReplicaRef,
        api_client: client.ApiClient,
        after_read: Callable[[], None] | None = None,
        cache: RouteCache | None = None,
    ) -> None:
        self.ref = ref
        self.kube = KubeJson(api_client)
        self._after_read = after_read
        self._cache = cache
        self.baseline = _target(ref.namespace, ref.baseline_deployment)
        self.canary = _target(ref.namespace, ref.canary_deployment)
        self._at = self.baseline  # the object of the call in flight, for error messages

    def get_weights(self) -> Weights | Problem:
        try:
            return percent(self._cached_replicas(self.baseline), self._cached_replicas(self.canary))
        except _API_ERRORS as exc:
            self._forget_if_gone(exc)
            return classify(exc, self._at, "get")

    def set_weights(self, weights: Weights) -> Weights | Problem:
        verb = "get"
        try:
            if self.ref.baseline_deployment == self.ref.canary_deployment:
                raise fail(
                    RouterErrorKind.INVALID,
                    self.baseline,
                    f"baseline and canary name the same "
                    f"{self.baseline}; the replica router needs two Deployments.",
                )
            for _ in range(MAX_ATTEMPTS):
                verb = "get"
                deployment = self._get(self.baseline, "")
                b_scale, c_scale = self._scale(self.baseline), self._scale(self.canary)
                if self._after_read:
                    self._after_read()
                b, c = _replicas(b_scale), _replicas(c_scale)
                total, stored = self._total(deployment, b, c)
                want_c = canary_replicas(total, weights.canary)
                want_b = total - want_c
                if (b, c) == (want_b, want_c):
                    return percent(b, c)
                verb = "patch"
                if stored != total and not self._record_total(deployment, total):
                    continue
                # Scale up before scaling down, so serving capacity never dips below the total.
                steps = [(self.canary, c_scale, want_c), (self.baseline, b_scale, want_b)]
                if want_c < c:
                    steps.reverse()
                if all(self._scale_to(t, scale, n) for t, scale, n in steps):
                    return percent(want_b, want_c)
            raise fail(
                RouterErrorKind.CONFLICT,
                self.baseline,
                f"the replicas of {self.baseline} and "
                f"{self.canary} changed under lossgate {MAX_ATTEMPTS} times in a row (an autoscaler or "
                "another controller?). Take them out of its control during the rollout.",
            )
        except _API_ERRORS as exc:
            self._forget_if_gone(exc)
            return classify(exc, self._at, verb)

    def _total(self, deployment: JsonObj, b: int, c: int) -> tuple[int, int | None]:
        """(total to keep, total recorded in the annotation or None)."""
        raw = ((deployment.get("metadata") or {}).get("annotations") or {}).get(TOTAL_ANNOTATION)
        stored: int | None = None
        if raw is not None:
            try:
                stored = int(raw)
            except ValueError:
                stored = -1
            if stored < 1:
                raise fail(
                    RouterErrorKind.INVALID,
                    self.baseline,
                    f"{self.baseline} has annotation "
                    f"{TOTAL_ANNOTATION}={raw!r}; it must be a positive integer (or remove it).",
                )
        total = b + c if stored is None or c == 0 else stored
        if total < 1:
            raise fail(
                RouterErrorKind.INVALID,
                self.baseline,
                f"{self.baseline} and {self.canary} both have "
                "0 replicas, so there is no total to split; scale the baseline to the total you want.",
            )
        return total, stored

    def _record_total(self, deployment: JsonObj, total: int) -> bool:
        """Write the annotation, guarded by the resourceVersion we read; False on a conflict."""
        self._at = self.baseline
        meta = {
            "resourceVersion": deployment["metadata"]["resourceVersion"],
            "annotations": {TOTAL_ANNOTATION: str(total)},
        }
        try:
            self._remember(self.kube.merge_patch(self._path(self.baseline, ""), {"metadata": meta}))
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def _scale_to(self, target: Target, scale: JsonObj, replicas: int) -> bool:
        """Set spec.replicas through /scale if it differs; `test` on the spec as read. False on a conflict."""
        if _replicas(scale) == replicas:
            return True
        self._at = target
        ops = [
            {"op": "test", "path": "/spec", "value": scale.get("spec") or {}},
            {"op": "add", "path": "/spec/replicas", "value": replicas},
        ]
        try:
            self._remember(self.kube.json_patch(self._path(target, "/scale"), ops))
        except ApiException as exc:
            if exc.status in (409, 422):
                return False
            raise
        return True

    def _scale(self, target: Target) -> JsonObj:
        return self._get(target, "/scale")

    def _get(self, target: Target, sub: str) -> JsonObj:
        self._at = target
        obj = self.kube.get(self._path(target, sub))
        self._remember(obj)
        return obj

    # -- the cache ----------------------------------------------------------------------------
    def _cached_replicas(self, target: Target) -> int:
        """spec.replicas from the watched Deployment when the cache has it fresh, else from /scale."""
        self._at = target
        hit = None if self._cache is None else self._cache.lookup(DEPLOYMENT, target.namespace, target.name)
        return _replicas(hit if hit is not None else self._scale(target))

    def _remember(self, obj: JsonObj) -> None:
        # A Deployment and its /scale carry the same resourceVersion and spec.replicas (cache.compact).
        if self._cache is not None:
            self._cache.confirm(DEPLOYMENT, obj)

    def _forget_if_gone(self, exc: BaseException) -> None:
        t = self._at
        if self._cache is not None and isinstance(exc, ApiException) and exc.status == 404:
            self._cache.drop(DEPLOYMENT, t.namespace, t.name)

    def _path(self, target: Target, sub: str) -> str:
        return object_path("apps", "v1", target.namespace, "deployments", target.name) + sub


def _target(namespace: str, name: str) -> Target:
    return Target(DEPLOYMENT, namespace, name, "deployments.apps/v1 (and deployments/scale)")


def _replicas(scale: JsonObj) -> int:
    return int((scale.get("spec") or {}).get("replicas", 0))
