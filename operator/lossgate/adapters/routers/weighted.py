"""Shared read-compare-patch loop for routers that split traffic by weighted entries in a list
(HTTPRoute backendRefs, VirtualService route destinations).

Each write is a JSON patch whose first op `test`s the entry list exactly as read, so a concurrent
edit of that list makes the patch fail (422) and we re-read and recompute; edits elsewhere in the
object land untouched because the patch only names the paths lossgate owns.

With a `RouteCache`, `get_weights()` reads the watched copy when it has one (cache.py); `set_weights()`
always reads the API and hands what it read and wrote back to the cache.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lossgate.adapters.routers.cache import RouteCache
from lossgate.adapters.routers.errors import RouterProblem, Target, classify, fail
from lossgate.adapters.routers.k8s import JsonObj, KubeJson, PatchOp, pointer
from lossgate.core.evidence import Problem, Weights
from lossgate.ports import RouterErrorKind

MAX_ATTEMPTS = 3
_API_ERRORS = (ApiException, RouterProblem, urllib3.exceptions.HTTPError, OSError)


def round_half_up(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) with halves going up (Python's round() goes to even)."""
    return (2 * numerator + denominator) // (2 * denominator)


def percent(baseline: int, canary: int) -> Weights:
    """The baseline/canary split in percent from raw weights (0/0 when neither gets traffic)."""
    total = baseline + canary
    if total <= 0:
        return Weights(0, 0)
    c = round_half_up(100 * canary, total)
    return Weights(100 - c, c)


@dataclass(frozen=True)
class Located:
    """The weighted list in the object and where the two arms are in it."""

    path: tuple[str | int, ...]  # JSON pointer segments of the list, e.g. ("spec", "rules", 0, "backendRefs")
    entries: list[JsonObj]
    baseline: int
    canary: int | None
    guards: list[PatchOp] = field(default_factory=list)  # extra `test` ops (e.g. the rule's name)


class WeightedRouteRouter(ABC):
    """Template for the Gateway API and Istio routers; subclasses say where the arms are."""

    def __init__(
        self,
        api_client: client.ApiClient,
        after_read: Callable[[], None] | None = None,
        cache: RouteCache | None = None,
    ) -> None:
        self.kube = KubeJson(api_client)
        # Test seam: called after every read, before the write built from it (concurrency tests).
        self._after_read = after_read
        self._cache = cache

    # -- what subclasses provide ------------------------------------------------------------
    @property
    @abstractmethod
    def target(self) -> Target: ...

    @abstractmethod
    def _read(self) -> JsonObj: ...

    @abstractmethod
    def _patch(self, ops: list[PatchOp]) -> JsonObj: ...

    @abstractmethod
    def _locate(self, obj: JsonObj) -> Located: ...

    @abstractmethod
    def _weight(self, entry: JsonObj, entries: list[JsonObj]) -> int:
        """The weight an entry has in force (the API's default when the field is omitted)."""

    @abstractmethod
    def _new_canary(self, baseline: JsonObj) -> JsonObj:
        """The canary entry to append (weight 0) when the list has none."""

    def _targets(self, loc: Located, weights: Weights) -> tuple[int, int]:
        """The raw (baseline, canary) weights to write for the requested split."""
        return weights.baseline, weights.canary

    # -- the port -----------------------------------------------------------------------------
    def get_weights(self) -> Weights | Problem:
        try:
            return self._weights(self._locate(self._cached_read()))
        except _API_ERRORS as exc:
            self._forget_if_gone(exc)
            return classify(exc, self.target, "get")

    def set_weights(self, weights: Weights) -> Weights | Problem:
        verb = "get"
        try:
            # (resourceVersion read, error) of the last refused patch
            rejected: tuple[str, ApiException] | None = None
            attempts, added = 0, False
            while True:
                verb = "get"
                obj = self._fresh_read()
                if rejected and rejected[0] == _rv(obj) and rejected[1].status == 422:
                    # Nothing changed since the refused patch, so it was not a lost race: it is invalid.
                    verb = "patch"
                    raise rejected[1]
                if self._after_read:
                    self._after_read()
                loc = self._locate(obj)
                ops, adding = self._plan(loc, weights)
                if adding and added:  # guards against a loop if the entry we added is not recognised
                    raise fail(
                        RouterErrorKind.INVALID,
                        self.target,
                        f"{self.target}: lossgate added the canary backend but cannot find it again; "
                        "fix the backend by hand.",
                    )
                if not ops:
                    return self._weights(loc)
                if attempts >= MAX_ATTEMPTS:
                    raise fail(
                        RouterErrorKind.CONFLICT,
                        self.target,
                        f"{self.target} changed under lossgate {MAX_ATTEMPTS} times in a row while it "
                        f"set the weights to {weights.baseline}/{weights.canary}; another controller may be "
                        "writing the same backends. lossgate retries at the next reconcile.",
                    )
                attempts += 1
                verb = "patch"
                try:
                    written = self._patch(ops)
                except ApiException as exc:
                    if exc.status in (409, 422):
                        rejected = (_rv(obj), exc)
                        continue
                    raise
                self._remember(written)
                if adding:  # the canary entry now exists at weight 0; the next pass sets the split
                    attempts, added = 0, True
                    continue
                return self._weights(self._locate(written))
        except _API_ERRORS as exc:
            self._forget_if_gone(exc)
            return classify(exc, self.target, verb)

    # -- the cache ----------------------------------------------------------------------------
    def _cached_read(self) -> JsonObj:
        """The watched copy when the cache has a fresh one, else a GET (which refreshes it)."""
        t = self.target
        hit = self._cache.lookup(t.kind, t.namespace, t.name) if self._cache is not None else None
        return hit if hit is not None else self._fresh_read()

    def _fresh_read(self) -> JsonObj:
        obj = self._read()
        self._remember(obj)
        return obj

    def _remember(self, obj: JsonObj) -> None:
        if self._cache is not None:
            self._cache.confirm(self.target.kind, obj)

    def _forget_if_gone(self, exc: BaseException) -> None:
        """A 404 (the object, or its whole resource type, is gone) also clears the cached copy."""
        t = self.target
        if self._cache is not None and isinstance(exc, ApiException) and exc.status == 404:
            self._cache.drop(t.kind, t.namespace, t.name)

    # -- helpers ------------------------------------------------------------------------------
    def _weights(self, loc: Located) -> Weights:
        b = self._weight(loc.entries[loc.baseline], loc.entries)
        c = 0 if loc.canary is None else self._weight(loc.entries[loc.canary], loc.entries)
        return percent(b, c)

    def _plan(self, loc: Located, weights: Weights) -> tuple[list[PatchOp], bool]:
        """JSON patch ops for this pass, and whether the pass only adds the canary entry."""
        guard = [*loc.guards, {"op": "test", "path": pointer(*loc.path), "value": loc.entries}]
        base = loc.entries[loc.baseline]
        if loc.canary is None and weights.canary > 0:
            ops: list[PatchOp] = []
            if "weight" not in base:  # make the baseline's implied weight explicit before a 2nd entry
                ops.append(self._set_weight(loc, loc.baseline, self._weight(base, loc.entries)))
            ops.append({"op": "add", "path": pointer(*loc.path, "-"), "value": self._new_canary(base)})
            return guard + ops, True
        want_b, want_c = self._targets(loc, weights)
        ops = []
        if base.get("weight") != want_b:
            ops.append(self._set_weight(loc, loc.baseline, want_b))
        if loc.canary is not None and loc.entries[loc.canary].get("weight") != want_c:
            ops.append(self._set_weight(loc, loc.canary, want_c))
        return (guard + ops if ops else []), False

    @staticmethod
    def _set_weight(loc: Located, index: int, value: int) -> PatchOp:
        # `add` on an object member replaces it when present, so it covers an omitted weight too.
        return {"op": "add", "path": pointer(*loc.path, index, "weight"), "value": value}


def _rv(obj: JsonObj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def find_one(entries: list[JsonObj], match: Callable[[JsonObj], bool]) -> list[int]:
    return [i for i, e in enumerate(entries) if match(e)]
