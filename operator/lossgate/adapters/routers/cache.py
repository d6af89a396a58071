"""A watch-fed cache of the objects the routers read, so that `get_weights()` costs no API call.

The reconciler's kopf handlers feed it from watches on HTTPRoutes, VirtualServices and Deployments in
the operator's namespaces (`observe`). The routers read from it in `get_weights()` and fall back to a
GET when it has no fresh entry; `set_weights()` still reads and writes the API and only hands what it
read and wrote back here (`confirm`), so writes are exactly as guarded as without a cache.

Invariants that keep it from lying:
- only the watch creates an entry. GETs and writes refresh or replace an existing entry, never add
  one, so an object is served from here only while a watch reports on it; a GET that raced a DELETED
  event cannot bring back an object the watch removed.
- an entry never goes back in time: when both resourceVersions are integers (etcd's revisions) an
  older one is ignored, so a late watch event cannot undo a newer write read back by a router.
- an entry is trusted for `max_age` after the watch or a GET last vouched for it; then the next read
  is a GET again (one per object per `max_age`). That bounds what a missed watch event (a deletion
  while the watch was re-listing) can cost.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lossgate.adapters.routers.k8s import JsonObj

HTTPROUTE, VIRTUALSERVICE, DEPLOYMENT = "HTTPRoute", "VirtualService", "Deployment"
MAX_AGE_S = 600.0
_KEEP_META = ("name", "namespace", "uid", "resourceVersion", "generation")

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass
class _Entry:
    obj: JsonObj
    vouched: float  # monotonic time the watch or a GET last said this is the object


class RouteCache:
    """Thread-safe: fed on kopf's event loop, read from the routers' worker threads."""

    def __init__(self, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Key, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    # -- fed by the watch ---------------------------------------------------------------------
    def observe(self, kind: str, event_type: str | None, obj: JsonObj) -> None:
        """A watch event (kopf's type None is an object of the initial listing or a re-listing)."""
        key = _key(kind, obj)
        if key is None:
            return
        with self._lock:
            if event_type == "DELETED":
                self._entries.pop(key, None)
                return
            old = self._entries.get(key)
            if old is not None and _older(obj, old.obj):
                return  # a router already read back a newer version of it
            self._entries[key] = _Entry(compact(kind, obj), self._clock())

    # -- used by the routers ------------------------------------------------------------------
    def lookup(self, kind: str, namespace: str, name: str) -> JsonObj | None:
        """The object as last seen (a copy), or None: not watched, not seen yet, or too old to trust."""
        with self._lock:
            entry = self._entries.get((kind, namespace, name))
            if entry is None or self._clock() - entry.vouched > self.max_age_s:
                return None
            return copy.deepcopy(entry.obj)

    def confirm(self, kind: str, obj: JsonObj) -> None:
        """An object a router just read or wrote through the API: refresh or replace the entry the
        watch made (the newer of the two wins), never create one."""
        key = _key(kind, obj)
        if key is None:
            return
        with self._lock:
            old = self._entries.get(key)
            if old is None:
                return
            if _older(obj, old.obj):
                old.vouched = self._clock()  # the watch is ahead of that read: still current
            else:
                self._entries[key] = _Entry(compact(kind, obj), self._clock())

    def drop(self, kind: str, namespace: str, name: str) -> None:
        """The API said 404 for it: whatever the cache holds is gone."""
        with self._lock:
            self._entries.pop((kind, namespace, name), None)


def compact(kind: str, obj: JsonObj) -> JsonObj:
    """What the routers read: identity, resourceVersion and spec (a Deployment's only as replicas;
    a Deployment and its /scale then look the same). managedFields, status and annotations are
    dropped, so a cluster's worth of Deployments costs about 1 KB each."""
    meta = obj.get("metadata") or {}
    spec: Any = obj.get("spec") or {}
    if kind == DEPLOYMENT:
        spec = {"replicas": spec.get("replicas", 0)}
    return {
        "kind": kind,
        "metadata": {k: meta[k] for k in _KEEP_META if k in meta},
        "spec": copy.deepcopy(spec),
    }


def _key(kind: str, obj: JsonObj) -> Key | None:
    meta = obj.get("metadata") or {}
    ns, name = meta.get("namespace"), meta.get("name")
    return (kind, str(ns), str(name)) if ns and name else None


def _older(new: JsonObj, old: JsonObj) -> bool:
    """True when both resourceVersions are integers and `new`'s is below `old`'s. Otherwise the
    versions are opaque and the newest arrival wins."""
    a = str((new.get("metadata") or {}).get("resourceVersion", ""))
    b = str((old.get("metadata") or {}).get("resourceVersion", ""))
    return a.isdigit() and b.isdigit() and int(a) < int(b)
